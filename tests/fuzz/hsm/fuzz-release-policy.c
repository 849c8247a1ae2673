/* SPDX-License-Identifier: Apache-2.0 */
/* Arbitrary bytes through the release policy parser; accepted policies are then evaluated
 * against a fixed claim set for two issuers, so the evaluator sees every shape the validator
 * lets through. */
#include <stdint.h>
#include <stdlib.h>

#include <opencvm/hsm.h>
#include <opencvm/json.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	static const char claims_text[] =
		"{\"iss\":\"https://a.example\",\"x-ms-isolation-tee\":{\"x-ms-attestation-type\":"
		"\"sevsnpvm\",\"x-ms-compliance-status\":\"azure-compliant-cvm\"},\"svn\":7,"
		"\"debug\":false,\"hex\":\"ABCDEF\",\"arr\":[1,2],\"nested\":{\"a\":{\"b\":null}}}";
	struct cvm_err err;
	json_t *policy = NULL;
	if (cvm_hsm_release_policy_parse(data, size, &policy, &err) != 0)
		return 0;
	json_t *claims = json_loads(claims_text, 0, NULL);
	if (claims) {
		bool allowed, named;
		cvm_hsm_release_policy_eval(policy, "https://a.example/", claims, &allowed, &err);
		cvm_hsm_release_policy_eval(policy, "http://127.0.0.1:8080", claims, &allowed, &err);
		cvm_hsm_release_policy_names_issuer(policy, "https://A.example:443", &named, &err);
		json_decref(claims);
	}
	json_decref(policy);
	return 0;
}
