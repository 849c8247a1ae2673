/* SPDX-License-Identifier: Apache-2.0 */
/* Fuzz the TPMS_ATTEST (quote) parser. */
#include <opencvm/attest.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct cvm_tpm_quote q;
	struct cvm_err err = { 0 };
	(void)cvm_tpm_quote_parse(data, size, &q, &err);
	return 0;
}
