/* SPDX-License-Identifier: Apache-2.0 */
/* Fuzz the extended-report certificate table parser. */
#include <opencvm/attest.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct cvm_snp_certs c = { 0 };
	struct cvm_err err = { 0 };
	(void)cvm_snp_certs_from_table(&c, data, size, &err);
	cvm_snp_certs_clear(&c);
	return 0;
}
