/* SPDX-License-Identifier: Apache-2.0 */
/* Fuzz the MAA policy text parser and evaluate what parses against a fixed claim set. */
#include <opencvm/attest.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct cvm_maa_policy *p = NULL;
	struct cvm_err err = { 0 };
	if (cvm_maa_policy_parse((const char *)data, size, &p, &err) < 0)
		return 0;
	json_t *claims = json_pack("{s:s, s:b, s:i, s:s}", "x-ms-attestation-type", "sevsnpvm",
				   "x-ms-sevsnpvm-is-debuggable", 0, "x-ms-sevsnpvm-vmpl", 0,
				   "x-ms-sevsnpvm-launchmeasurement", "00ff");
	json_t *issued = json_object();
	bool ok = false;
	if (claims && issued)
		(void)cvm_maa_policy_eval(p, claims, &ok, issued, &err);
	json_decref(claims);
	json_decref(issued);
	cvm_maa_policy_free(p);
	return 0;
}
