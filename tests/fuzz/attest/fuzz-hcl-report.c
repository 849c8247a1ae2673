/* SPDX-License-Identifier: Apache-2.0 */
/* Fuzz the Azure HCL report parser, the binding check and the runtime-data key lookup. */
#include <opencvm/attest.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct cvm_hcl_report h;
	struct cvm_err err = { 0 };
	if (cvm_hcl_report_parse(data, size, &h, &err) < 0)
		return 0;
	(void)cvm_hcl_check_binding(&h, &err);
	EVP_PKEY *ak = NULL;
	if (cvm_hcl_runtime_key(&h, "HCLAkPub", &ak, &err) == 0)
		EVP_PKEY_free(ak);
	return 0;
}
