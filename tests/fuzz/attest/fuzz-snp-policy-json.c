/* SPDX-License-Identifier: Apache-2.0 */
/* Fuzz the JSON appraisal-policy readers (SEV-SNP and TDX). */
#include <opencvm/attest.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	json_error_t je;
	json_t *j = json_loadb((const char *)data, size, 0, &je);
	if (!j)
		return 0;
	struct cvm_snp_policy p;
	struct cvm_snp_policy_store *st = NULL;
	struct cvm_err err = { 0 };
	if (cvm_snp_policy_from_json(j, &p, &st, &err) == 0)
		cvm_snp_policy_store_free(st);
	struct cvm_tdx_policy tp;
	struct cvm_tdx_policy_store *ts = NULL;
	if (cvm_tdx_policy_from_json(j, &tp, &ts, &err) == 0)
		cvm_tdx_policy_store_free(ts);
	json_decref(j);
	return 0;
}
