/* SPDX-License-Identifier: Apache-2.0 */
/* Release policy grammar: validation messages, evaluation semantics, authority normalization. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <string.h>
#include <cmocka.h>

#include <opencvm/hsm.h>
#include <opencvm/json.h>

static json_t *J(const char *s)
{
	json_error_t je;
	json_t *v = json_loads(s, 0, &je);
	if (!v)
		fail_msg("bad test JSON: %s (%s)", s, je.text);
	return v;
}

static void test_validate_ok(void **state)
{
	(void)state;
	static const char *const ok[] = {
		/* real CVM policy shape: nested anyOf inside allOf, trailing slash authority */
		"{\"version\":\"1.0.0\",\"anyOf\":[{\"authority\":\"https://sharedeus.eus.attest.azure.net/\","
		"\"allOf\":[{\"anyOf\":[{\"claim\":\"x-ms-isolation-tee.x-ms-attestation-type\",\"equals\":\"sevsnpvm\"},"
		"{\"claim\":\"x-ms-isolation-tee.x-ms-attestation-type\",\"equals\":\"tdxvm\"}]},"
		"{\"claim\":\"x-ms-isolation-tee.x-ms-compliance-status\",\"equals\":\"azure-compliant-cvm\"}]}]}",
		/* JS SDK legacy leaf, version 1.0, lowercase keys */
		"{\"anyOf\":[{\"anyOf\":[{\"claim\":\"sdk-test\",\"condition\":\"equals\",\"value\":\"true\"}],"
		"\"authority\":\"https://x.example/\"}],\"version\":\"1.0\"}",
		"{\"anyof\":[{\"authority\":\"https://a\",\"allof\":[{\"claim\":\"c\",\"exists\":true}]}]}",
		"{\"allOf\":[{\"authority\":\"http://127.0.0.1:8080\",\"anyOf\":[{\"claim\":\"n\",\"greaterOrEquals\":\"3\"},"
		"{\"claim\":\"n\",\"less\":2.5},{\"claim\":\"n\",\"lessOrEquals\":1},{\"claim\":\"n\",\"greater\":0},"
		"{\"claim\":\"n\",\"notEquals\":false}]}]}",
	};
	for (size_t i = 0; i < CVM_ARRAY_SIZE(ok); i++) {
		struct cvm_err err = { 0 };
		json_t *p = NULL;
		int r = cvm_hsm_release_policy_parse((const uint8_t *)ok[i], strlen(ok[i]), &p, &err);
		if (r != 0)
			fail_msg("policy %zu: %s", i, err.msg);
		json_decref(p);
	}
}

static void test_validate_errors(void **state)
{
	(void)state;
	static const char *const bad[][2] = {
		{ "[]", "release_policy: expected an object, got array" },
		{ "{\"version\":\"2.0\",\"anyOf\":[]}", "release_policy.version: expected \"1.0.0\"" },
		{ "{\"version\":\"1.0.0\"}", "release_policy: expected anyOf or allOf" },
		{ "{\"anyOf\":[]}", "release_policy.anyOf: expected at least one authority" },
		{ "{\"anyOf\":[{\"authority\":\"https://a\",\"allOf\":[{\"claim\":\"c\",\"equals\":1},"
		  "{\"claim\":5,\"equals\":1}]}]}",
		  "release_policy.anyOf[0].allOf[1].claim: expected a string, got integer" },
		{ "{\"anyOf\":[{\"authority\":\"ftp://a\",\"allOf\":[{\"claim\":\"c\",\"equals\":1}]}]}",
		  "release_policy.anyOf[0].authority: expected an https:// URL, got \"ftp://a\"" },
		{ "{\"anyOf\":[{\"allOf\":[{\"claim\":\"c\",\"equals\":1}]}]}",
		  "release_policy.anyOf[0].authority: expected a string, got nothing" },
		{ "{\"anyOf\":[{\"authority\":\"https://a\",\"allOf\":[{\"claim\":\"c\",\"equal\":1}]}]}",
		  "release_policy.anyOf[0].allOf[0].equal: unknown member" },
		{ "{\"anyOf\":[{\"authority\":\"https://a\",\"allOf\":[{\"claim\":\"c\",\"equals\":1,\"less\":2}]}]}",
		  "release_policy.anyOf[0].allOf[0]: expected exactly one operator, got equals and less" },
		{ "{\"anyOf\":[{\"authority\":\"https://a\",\"allOf\":[{\"claim\":\"c\"}]}]}",
		  "release_policy.anyOf[0].allOf[0]: expected an operator" },
		{ "{\"anyOf\":[{\"authority\":\"https://a\",\"allOf\":[{\"claim\":\"c\",\"less\":\"abc\"}]}]}",
		  "release_policy.anyOf[0].allOf[0].less: expected a number for less, got string" },
		{ "{\"anyOf\":[{\"authority\":\"https://a\",\"allOf\":[{\"claim\":\"c\",\"equals\":{}}]}]}",
		  "release_policy.anyOf[0].allOf[0].equals: expected a string, number or boolean, got object" },
		{ "{\"anyOf\":[{\"authority\":\"https://a\",\"anyOf\":[{\"anyOf\":[]}]}]}",
		  "release_policy.anyOf[0].anyOf[0].anyOf: expected at least one condition" },
		{ "{\"anyOf\":[{\"authority\":\"https://a\",\"anyOf\":[{\"claim\":\"c\",\"condition\":\"like\",\"value\":1}]}]}",
		  "release_policy.anyOf[0].anyOf[0].condition: expected one of equals" },
		{ "{\"anyOf\":[{\"authority\":\"https://a\",\"anyOf\":[{\"claim\":\"c\",\"condition\":\"equals\"}]}]}",
		  "release_policy.anyOf[0].anyOf[0].value: required field is missing" },
		{ "{\"anyOf\":[{\"authority\":\"https://a\",\"anyOf\":[{\"claim\":\"c\",\"exists\":3}]}]}",
		  "release_policy.anyOf[0].anyOf[0].exists: expected true or false" },
		{ "{\"anyOf\":[{\"authority\":\"https://a\",\"anyOf\":[{\"x\":1}]}]}",
		  "release_policy.anyOf[0].anyOf[0].x: unknown member" },
		{ "{\"anyOf\":[{\"authority\":\"https://a\",\"anyOf\":[{\"claim\":\"c\",\"equals\":1}],"
		  "\"allOf\":[{\"claim\":\"c\",\"equals\":1}]}]}",
		  "release_policy.anyOf[0]: expected either anyOf or allOf, not both" },
		{ "{\"anyOf\":[{\"authority\":\"https://a\",\"anyOf\":[{\"authority\":\"https://b\","
		  "\"anyOf\":[{\"claim\":\"c\",\"equals\":1}]}]}]}",
		  "release_policy.anyOf[0].anyOf[0].authority: authorities belong at the top level only" },
		{ "{\"anyOf\":[", "release_policy: body: invalid JSON" },
	};
	for (size_t i = 0; i < CVM_ARRAY_SIZE(bad); i++) {
		struct cvm_err err = { 0 };
		json_t *p = NULL;
		int r = cvm_hsm_release_policy_parse((const uint8_t *)bad[i][0], strlen(bad[i][0]), &p,
						     &err);
		if (r != -EINVAL)
			fail_msg("case %zu: expected -EINVAL, got %d", i, r);
		assert_null(p);
		assert_string_equal(err.code, "BadParameter");
		if (strncmp(err.msg, bad[i][1], strlen(bad[i][1])) != 0)
			fail_msg("case %zu: message \"%s\" does not start with \"%s\"", i, err.msg,
				 bad[i][1]);
	}
}

static void test_authority_normalize(void **state)
{
	(void)state;
	static const char *const v[][2] = {
		{ "https://SharedEUS.eus.attest.azure.net/", "https://sharedeus.eus.attest.azure.net" },
		{ "HTTPS://host:443", "https://host" },
		{ "https://host:8443//", "https://host:8443" },
		{ "http://127.0.0.1:80/", "http://127.0.0.1" },
		{ "https://login.example/Tenant/v2.0/", "https://login.example/Tenant/v2.0" },
		{ "https://[::1]:443/", "https://[::1]" },
		{ "http://[::1]:8080", "http://[::1]:8080" },
		{ "https://host:4430", "https://host:4430" },
	};
	for (size_t i = 0; i < CVM_ARRAY_SIZE(v); i++) {
		struct cvm_err err = { 0 };
		char *n = NULL;
		assert_int_equal(cvm_hsm_authority_normalize(v[i][0], "a", &n, &err), 0);
		assert_string_equal(n, v[i][1]);
		free(n);
	}
	struct cvm_err err = { 0 };
	char *n = NULL;
	assert_int_equal(cvm_hsm_authority_normalize("https://user@host", "a", &n, &err), -EINVAL);
	assert_int_equal(cvm_hsm_authority_normalize("https:///x", "a", &n, &err), -EINVAL);
	assert_int_equal(cvm_hsm_authority_normalize("https://h/x?y", "a", &n, &err), -EINVAL);
	assert_null(n);
}

struct eval_case {
	const char *cond;   /* one condition JSON */
	const char *claims;
	bool want;
};

static void test_eval_table(void **state)
{
	(void)state;
	static const char *const claims_cvm =
		"{\"iss\":\"https://a\",\"x-ms-isolation-tee\":{\"x-ms-attestation-type\":\"sevsnpvm\","
		"\"x-ms-compliance-status\":\"azure-compliant-cvm\"},\"x-ms-sevsnpvm-is-debuggable\":false,"
		"\"x-ms-sevsnpvm-vmpl\":0,\"svn\":7,\"hostdata\":\"ABCDEF0123\",\"sdk-test\":true,"
		"\"name\":\"Alpha\",\"dotted.claim\":\"yes\",\"arr\":[1]}";
	static const struct eval_case cases[] = {
		{ "{\"claim\":\"x-ms-isolation-tee.x-ms-attestation-type\",\"equals\":\"sevsnpvm\"}", NULL, true },
		{ "{\"claim\":\"x-ms-isolation-tee.x-ms-attestation-type\",\"equals\":\"tdxvm\"}", NULL, false },
		/* string "false" vs JSON false, "0" vs 0 (confidential sidecar policies) */
		{ "{\"claim\":\"x-ms-sevsnpvm-is-debuggable\",\"equals\":\"false\"}", NULL, true },
		{ "{\"claim\":\"x-ms-sevsnpvm-is-debuggable\",\"equals\":\"true\"}", NULL, false },
		{ "{\"claim\":\"x-ms-sevsnpvm-is-debuggable\",\"equals\":false}", NULL, true },
		{ "{\"claim\":\"x-ms-sevsnpvm-vmpl\",\"equals\":\"0\"}", NULL, true },
		{ "{\"claim\":\"x-ms-sevsnpvm-vmpl\",\"equals\":\"1\"}", NULL, false },
		{ "{\"claim\":\"sdk-test\",\"condition\":\"equals\",\"value\":\"true\"}", NULL, true },
		{ "{\"claim\":\"sdk-test\",\"condition\":\"equals\",\"value\":\"false\"}", NULL, false },
		/* hex compares case-insensitively, other strings exactly */
		{ "{\"claim\":\"hostdata\",\"equals\":\"abcdef0123\"}", NULL, true },
		{ "{\"claim\":\"name\",\"equals\":\"alpha\"}", NULL, false },
		{ "{\"claim\":\"name\",\"equals\":\"Alpha\"}", NULL, true },
		{ "{\"claim\":\"name\",\"notEquals\":\"Beta\"}", NULL, true },
		{ "{\"claim\":\"name\",\"notEquals\":\"Alpha\"}", NULL, false },
		{ "{\"claim\":\"missing\",\"notEquals\":\"Alpha\"}", NULL, false },
		{ "{\"claim\":\"svn\",\"greaterOrEquals\":7}", NULL, true },
		{ "{\"claim\":\"svn\",\"greaterOrEquals\":\"8\"}", NULL, false },
		{ "{\"claim\":\"svn\",\"greater\":6}", NULL, true },
		{ "{\"claim\":\"svn\",\"greater\":7}", NULL, false },
		{ "{\"claim\":\"svn\",\"less\":7.5}", NULL, true },
		{ "{\"claim\":\"svn\",\"less\":7}", NULL, false },
		{ "{\"claim\":\"svn\",\"lessOrEquals\":7}", NULL, true },
		{ "{\"claim\":\"svn\",\"lessOrEquals\":6}", NULL, false },
		{ "{\"claim\":\"name\",\"greater\":1}", NULL, false },
		{ "{\"claim\":\"svn\",\"exists\":true}", NULL, true },
		{ "{\"claim\":\"nope\",\"exists\":true}", NULL, false },
		{ "{\"claim\":\"nope\",\"exists\":\"false\"}", NULL, true },
		{ "{\"claim\":\"dotted.claim\",\"equals\":\"yes\"}", NULL, true },
		{ "{\"claim\":\"arr\",\"equals\":1}", NULL, false },
		{ "{\"anyOf\":[{\"claim\":\"svn\",\"equals\":1},{\"allOf\":[{\"claim\":\"svn\",\"equals\":7},"
		  "{\"claim\":\"name\",\"equals\":\"Alpha\"}]}]}", NULL, true },
		{ "{\"allOf\":[{\"claim\":\"svn\",\"equals\":7},{\"anyOf\":[{\"claim\":\"name\",\"equals\":\"x\"},"
		  "{\"claim\":\"name\",\"equals\":\"y\"}]}]}", NULL, false },
	};
	_cleanup_json_ json_t *claims = J(claims_cvm);
	for (size_t i = 0; i < CVM_ARRAY_SIZE(cases); i++) {
		char *ptxt = cvm_asprintf("{\"version\":\"1.0.0\",\"anyOf\":[{\"authority\":\"https://a/\","
					  "\"allOf\":[%s]}]}", cases[i].cond);
		_cleanup_json_ json_t *p = J(ptxt);
		free(ptxt);
		struct cvm_err err = { 0 };
		bool allowed = !cases[i].want;
		int r = cvm_hsm_release_policy_eval(p, "https://A", claims, &allowed, &err);
		if (r != 0)
			fail_msg("case %zu: %s", i, err.msg);
		if (allowed != cases[i].want)
			fail_msg("case %zu (%s): expected %d", i, cases[i].cond, cases[i].want);
	}
}

static void test_eval_authorities(void **state)
{
	(void)state;
	_cleanup_json_ json_t *p = J(
		"{\"version\":\"1.0.0\",\"anyOf\":[{\"authority\":\"https://one.example\",\"allOf\":"
		"[{\"claim\":\"k\",\"equals\":\"1\"}]},{\"authority\":\"https://two.example:443/\",\"allOf\":"
		"[{\"claim\":\"k\",\"equals\":\"2\"}]}]}");
	_cleanup_json_ json_t *c2 = J("{\"k\":\"2\"}");
	struct cvm_err err = { 0 };
	bool allowed = false, named = false;
	/* the clause of the issuer decides, not another authority's clause */
	assert_int_equal(cvm_hsm_release_policy_eval(p, "https://two.example", c2, &allowed, &err), 0);
	assert_true(allowed);
	assert_int_equal(cvm_hsm_release_policy_eval(p, "https://one.example/", c2, &allowed, &err), 0);
	assert_false(allowed);
	assert_int_equal(cvm_hsm_release_policy_eval(p, "https://three.example", c2, &allowed, &err), 0);
	assert_false(allowed);
	assert_int_equal(cvm_hsm_release_policy_names_issuer(p, "HTTPS://ONE.example:443", &named, &err), 0);
	assert_true(named);
	assert_int_equal(cvm_hsm_release_policy_names_issuer(p, "https://one.example.evil", &named, &err), 0);
	assert_false(named);
	assert_int_equal(cvm_hsm_release_policy_names_issuer(p, "https://one.example:8443", &named, &err), 0);
	assert_false(named);

	/* top-level allOf: every clause must name the issuer and hold */
	_cleanup_json_ json_t *pa = J(
		"{\"allOf\":[{\"authority\":\"https://one.example\",\"allOf\":[{\"claim\":\"k\",\"equals\":\"2\"}]},"
		"{\"authority\":\"https://one.example/\",\"anyOf\":[{\"claim\":\"k\",\"exists\":true}]}]}");
	assert_int_equal(cvm_hsm_release_policy_eval(pa, "https://one.example", c2, &allowed, &err), 0);
	assert_true(allowed);
	_cleanup_json_ json_t *c1 = J("{\"k\":\"1\"}");
	assert_int_equal(cvm_hsm_release_policy_eval(pa, "https://one.example", c1, &allowed, &err), 0);
	assert_false(allowed);

	/* an invalid policy or issuer is an error, not a silent deny */
	_cleanup_json_ json_t *bad = J("{\"anyOf\":[]}");
	assert_int_equal(cvm_hsm_release_policy_eval(bad, "https://one.example", c2, &allowed, &err),
			 -EINVAL);
	assert_int_equal(cvm_hsm_release_policy_eval(p, "not a url", c2, &allowed, &err), -EINVAL);
	assert_int_equal(cvm_hsm_release_policy_eval(p, "https://one.example", NULL, &allowed, &err),
			 -EINVAL);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_validate_ok),
		cmocka_unit_test(test_validate_errors),
		cmocka_unit_test(test_authority_normalize),
		cmocka_unit_test(test_eval_table),
		cmocka_unit_test(test_eval_authorities),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
