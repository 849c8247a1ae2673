/* SPDX-License-Identifier: Apache-2.0 */
/* MAA policy language: parsing (with line:column errors), authorization and issuance. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <string.h>
#include <cmocka.h>

#include <opencvm/attest.h>

static json_t *claims(void)
{
	json_t *c = json_pack("{s:s, s:b, s:i, s:i, s:s, s:o}", "x-ms-attestation-type", "sevsnpvm",
			      "x-ms-sevsnpvm-is-debuggable", 0, "x-ms-sevsnpvm-vmpl", 0,
			      "x-ms-sevsnpvm-guestsvn", 3, "x-ms-sevsnpvm-launchmeasurement",
			      "ABCDEF00", "x-ms-runtime", json_object());
	assert_non_null(c);
	return c;
}

static struct cvm_maa_policy *parse_ok(const char *text)
{
	struct cvm_maa_policy *p = NULL;
	struct cvm_err err = { 0 };
	int rc = cvm_maa_policy_parse(text, strlen(text), &p, &err);
	if (rc)
		fprintf(stderr, "%s\n", err.msg);
	assert_int_equal(rc, 0);
	return p;
}

static bool permits(const char *text, json_t *issued)
{
	_cleanup_(cvm_maa_policy_freep) struct cvm_maa_policy *p = parse_ok(text);
	json_t *c = claims();
	bool ok = false;
	struct cvm_err err = { 0 };
	assert_int_equal(cvm_maa_policy_eval(p, c, &ok, issued, &err), 0);
	json_decref(c);
	return ok;
}

static void test_authorization(void **state)
{
	(void)state;
	/* The MAA documentation's SEV-SNP sample shape. */
	assert_true(permits("version= 1.0;\n"
			    "authorizationrules\n{\n"
			    "    [type==\"x-ms-sevsnpvm-is-debuggable\", value==false] &&\n"
			    "    [type==\"x-ms-sevsnpvm-vmpl\", value<=0] => permit();\n"
			    "};\n", NULL));
	assert_false(permits("version=1.0; authorizationrules { [type==\"x-ms-sevsnpvm-is-debuggable\", value==true] => permit(); };", NULL));
	/* deny wins over permit */
	assert_false(permits("version=1.0; authorizationrules { => permit(); [type==\"x-ms-sevsnpvm-guestsvn\", value < 5] => deny(); };", NULL));
	assert_true(permits("version=1.0; authorizationrules { => permit(); [type==\"x-ms-sevsnpvm-guestsvn\", value > 5] => deny(); };", NULL));
	/* || */
	assert_true(permits("version=1.0; authorizationrules { [type==\"nope\"] || [type==\"x-ms-sevsnpvm-guestsvn\", value >= 3] => permit(); };", NULL));
	assert_false(permits("version=1.0; authorizationrules { [type==\"nope\"] || [type==\"x-ms-sevsnpvm-guestsvn\", value >= 4] => permit(); };", NULL));
	/* no authorization section: permitted; empty section: not */
	assert_true(permits("version=1.0; issuancerules { };", NULL));
	assert_false(permits("version=1.0; authorizationrules { };", NULL));
	/* string comparison, issuer predicate, != */
	assert_true(permits("version=1.0; authorizationrules { [type==\"x-ms-attestation-type\", value==\"sevsnpvm\", issuer==\"AttestationService\"] => permit(); };", NULL));
	assert_false(permits("version=1.0; authorizationrules { [type==\"x-ms-attestation-type\", value!=\"sevsnpvm\"] => permit(); };", NULL));
	/* comments */
	assert_true(permits("// policy\nversion=1.0; /* block */ authorizationrules { => permit(); // end\n};", NULL));
}

static void test_issuance(void **state)
{
	(void)state;
	json_t *issued = json_object();
	assert_true(permits("version=1.0;\n"
			    "authorizationrules { => permit(); };\n"
			    "issuancerules {\n"
			    "  c:[type==\"x-ms-sevsnpvm-launchmeasurement\"] => issue(type=\"m\", value=c.value);\n"
			    "  c:[type==\"x-ms-sevsnpvm-vmpl\"] => issue(claim=c);\n"
			    "  [type==\"x-ms-sevsnpvm-guestsvn\", value>=3] => issue(type=\"svn-ok\", value=true);\n"
			    "  [type==\"x-ms-sevsnpvm-guestsvn\", value>=9] => issue(type=\"never\", value=1);\n"
			    "  => issue(type=\"n\", value=42);\n"
			    "};\n", issued));
	assert_string_equal(json_string_value(json_object_get(issued, "m")), "ABCDEF00");
	assert_int_equal(json_integer_value(json_object_get(issued, "x-ms-sevsnpvm-vmpl")), 0);
	assert_true(json_is_true(json_object_get(issued, "svn-ok")));
	assert_null(json_object_get(issued, "never"));
	assert_int_equal(json_integer_value(json_object_get(issued, "n")), 42);
	json_decref(issued);
	/* Reserved claims cannot be issued. */
	_cleanup_(cvm_maa_policy_freep) struct cvm_maa_policy *p =
		parse_ok("version=1.0; issuancerules { => issue(type=\"exp\", value=1); };");
	json_t *c = claims();
	issued = json_object();
	bool ok = false;
	struct cvm_err err = { 0 };
	assert_int_equal(cvm_maa_policy_eval(p, c, &ok, issued, &err), -EINVAL);
	json_decref(issued);
	json_decref(c);
	assert_int_equal(strlen(cvm_maa_policy_hash(p)), 43);
}

static void test_parse_errors(void **state)
{
	(void)state;
	static const struct { const char *text; const char *where; } cases[] = {
		{ "", "policy: empty" },
		{ "version=2.0;", "policy:1:9:" },
		{ "version=1.0", "policy:1:12: expected ';'" },
		{ "version=1.0;\nfoo { };", "policy:2:1:" },
		{ "version=1.0;\nauthorizationrules {\n  [type==\"a\"] => permit()\n};", "policy:4:1: expected ';'" },
		{ "version=1.0;\nauthorizationrules {\n  [type=\"a\" => permit();\n};", "policy:3:13: expected ']'" },
		{ "version=1.0; authorizationrules { => issue(type=\"a\", value=1); };", "not allowed in authorizationrules" },
		{ "version=1.0; issuancerules { => permit(); };", "only in authorizationrules" },
		{ "version=1.0; issuancerules { => issue(claim=c); };", "variable" },
		{ "version=1.0; authorizationrules { [type==\"a\", value==\"x] => permit(); };", "unterminated string" },
		{ "version=1.0; authorizationrules { [type<\"a\"] => permit(); };", "type and issuer" },
		{ "version=1.0; authorizationrules { [value==99999999999999999999] => permit(); };", "out of range" },
		{ "version=1.0; authorizationrules { => permit(); }; authorizationrules { };", "twice" },
		{ "version=1.0; /* open", "unterminated comment" },
		{ "version=1.0; authorizationrules { [type==\"a\"] => permit(); ", "expected '}'" },
		{ "version=1.0; authorizationrules { [type==\"a\"] @ => permit(); };", "unexpected character" },
	};
	for (size_t i = 0; i < CVM_ARRAY_SIZE(cases); i++) {
		struct cvm_maa_policy *p = NULL;
		struct cvm_err err = { 0 };
		assert_int_equal(cvm_maa_policy_parse(cases[i].text, strlen(cases[i].text), &p, &err),
				 -EINVAL);
		if (!strstr(err.msg, cases[i].where))
			fprintf(stderr, "case %zu: got \"%s\", want \"%s\"\n", i, err.msg,
				cases[i].where);
		assert_non_null(strstr(err.msg, cases[i].where));
		assert_null(p);
	}
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_authorization),
		cmocka_unit_test(test_issuance),
		cmocka_unit_test(test_parse_errors),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
