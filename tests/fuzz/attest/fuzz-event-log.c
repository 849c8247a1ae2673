/* SPDX-License-Identifier: Apache-2.0 */
/* Fuzz the TCG crypto-agile event log replay and its JSON view, and evidence detection. */
#include <opencvm/attest.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct cvm_tcg_log log;
	struct cvm_err err = { 0 };
	(void)cvm_tcg_log_replay(data, size, &log, &err);
	json_t *j = NULL;
	if (cvm_tcg_log_to_json(data, size, &j, &err) == 0)
		json_decref(j);
	if (cvm_evidence_to_json(data, size, &j, &err) == 0)
		json_decref(j);
	return 0;
}
