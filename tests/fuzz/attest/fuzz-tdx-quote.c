/* SPDX-License-Identifier: Apache-2.0 */
/* Fuzz the TDX quote parser, its JSON view, and full verification (chain parsing included). */
#include <opencvm/attest.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct cvm_tdx_quote q;
	struct cvm_err err = { 0 };
	if (cvm_tdx_quote_parse(data, size, &q, &err) < 0)
		return 0;
	json_t *j = NULL;
	if (cvm_tdx_quote_to_json(&q, &j, &err) == 0)
		json_decref(j);
	struct cvm_tdx_verdict v;
	struct cvm_tdx_verify_opts o = { .now = 1800000000 };
	(void)cvm_tdx_verify(data, size, &o, NULL, &v, &err);
	return 0;
}
