/* SPDX-License-Identifier: Apache-2.0 */
/* REST body parsing: every route kind accepts its well-formed body and refuses wrong types with
 * a message naming the field; size limit; form decoding for the token endpoint. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <string.h>
#include <cmocka.h>

#include <opencvm/hsm.h>

static int parse(enum cvm_hsm_rest_body kind, const char *body, json_t **out, struct cvm_err *err)
{
	return cvm_hsm_rest_parse_body(kind, (const uint8_t *)body, strlen(body), out, err);
}

struct good_bad {
	enum cvm_hsm_rest_body kind;
	const char *good;
	const char *bad;
	const char *field; /* named in the error for bad */
};

static const struct good_bad cases[] = {
	{ CVM_HSM_BODY_KEY_CREATE, "{\"kty\":\"EC\",\"crv\":\"P-256\",\"attributes\":{\"exp\":5}}",
	  "{\"kty\":\"EC\",\"attributes\":{\"exp\":\"soon\"}}", "attributes.exp" },
	{ CVM_HSM_BODY_KEY_CREATE, "{\"kty\":\"RSA\",\"key_ops\":[\"sign\"]}",
	  "{\"kty\":\"RSA\",\"key_ops\":[1]}", "key_ops" },
	{ CVM_HSM_BODY_KEY_CREATE, "{\"kty\":\"RSA\",\"release_policy\":{\"data\":\"eyJ9\"}}",
	  "{\"kty\":\"RSA\",\"release_policy\":{\"data\":\"***\"}}", "release_policy.data" },
	{ CVM_HSM_BODY_KEY_CREATE, "{\"kty\":\"oct-HSM\",\"key_size\":256}", "{\"key_size\":256}",
	  "kty" },
	{ CVM_HSM_BODY_KEY_IMPORT, "{\"key\":{\"kty\":\"oct\"}}", "{\"key\":\"oct\"}", "key" },
	{ CVM_HSM_BODY_KEY_UPDATE, "{\"tags\":{\"a\":\"b\"}}", "{\"attributes\":{\"enabled\":1}}",
	  "attributes.enabled" },
	{ CVM_HSM_BODY_KEY_CRYPT, "{\"alg\":\"A256GCM\",\"value\":\"AAEC\",\"iv\":\"AAEC\"}",
	  "{\"alg\":\"A256GCM\",\"value\":\"AAEC\",\"iv\":7}", "iv" },
	{ CVM_HSM_BODY_KEY_SIGN, "{\"alg\":\"ES256\",\"value\":\"AAEC\"}", "{\"alg\":\"ES256\"}",
	  "value" },
	{ CVM_HSM_BODY_KEY_VERIFY, "{\"alg\":\"ES256\",\"digest\":\"AA\",\"value\":\"AA\"}",
	  "{\"alg\":\"ES256\",\"digest\":[],\"value\":\"AA\"}", "digest" },
	{ CVM_HSM_BODY_KEY_RELEASE, "{\"target\":\"a.b.c\"}", "{\"target\":1}", "target" },
	{ CVM_HSM_BODY_KEY_RESTORE, "{\"value\":\"AAEC\"}", "{}", "value" },
	{ CVM_HSM_BODY_ROTATION_POLICY, "{\"lifetimeActions\":[]}",
	  "{\"attributes\":{\"expiryTime\":90}}", "attributes.expiryTime" },
	{ CVM_HSM_BODY_RNG, "{\"count\":16}", "{\"count\":\"16\"}", "count" },
	{ CVM_HSM_BODY_ROLE_ASSIGNMENT, "{\"properties\":{\"roleDefinitionId\":\"r\","
	  "\"principalId\":\"p\"}}", "{\"properties\":{\"roleDefinitionId\":\"r\"}}",
	  "properties.principalId" },
	{ CVM_HSM_BODY_ROLE_DEFINITION, "{\"properties\":{\"permissions\":[]}}",
	  "{\"properties\":{\"permissions\":{}}}", "properties.permissions" },
	{ CVM_HSM_BODY_FULL_BACKUP, "{\"storageResourceUri\":\"file:///x\"}", "{\"token\":\"t\"}",
	  "storageResourceUri" },
	{ CVM_HSM_BODY_FULL_RESTORE, "{\"folderToRestore\":\"mhsm-x\"}",
	  "{\"folderToRestore\":false}", "folderToRestore" },
	{ CVM_HSM_BODY_PRINCIPAL, "{\"kind\":\"User\"}", "{\"certificate\":5}", "certificate" },
};

static void test_kinds(void **state)
{
	(void)state;
	for (size_t i = 0; i < CVM_ARRAY_SIZE(cases); i++) {
		struct cvm_err err = { 0 };
		json_t *out = NULL;
		if (parse(cases[i].kind, cases[i].good, &out, &err) != 0)
			fail_msg("case %zu good: %s", i, err.msg);
		assert_true(json_is_object(out));
		json_decref(out);
		out = NULL;
		assert_int_equal(parse(cases[i].kind, cases[i].bad, &out, &err), -EINVAL);
		assert_null(out);
		assert_string_equal(err.code, "BadParameter");
		if (!strstr(err.msg, cases[i].field))
			fail_msg("case %zu: message \"%s\" does not name %s", i, err.msg,
				 cases[i].field);
	}
}

static void test_body_errors(void **state)
{
	(void)state;
	struct cvm_err err = { 0 };
	json_t *out = NULL;
	assert_int_equal(parse(CVM_HSM_BODY_KEY_CREATE, "{\"kty\":", &out, &err), -EINVAL);
	assert_non_null(strstr(err.msg, "body"));
	assert_int_equal(parse(CVM_HSM_BODY_KEY_CREATE, "", &out, &err), -EINVAL);
	assert_non_null(strstr(err.msg, "body"));
	assert_int_equal(parse(CVM_HSM_BODY_KEY_CREATE, "[1]", &out, &err), -EINVAL);
	/* NONE ignores whatever comes */
	assert_int_equal(parse(CVM_HSM_BODY_NONE, "garbage", &out, &err), 0);
	assert_null(out);
	/* size limit */
	size_t n = CVM_HSM_REST_MAX_BODY + 1;
	uint8_t *big = malloc(n);
	assert_non_null(big);
	memset(big, ' ', n);
	assert_int_equal(cvm_hsm_rest_parse_body(CVM_HSM_BODY_KEY_CREATE, big, n, &out, &err),
			 -E2BIG);
	assert_non_null(strstr(err.msg, "body"));
	assert_int_equal(cvm_hsm_rest_parse_body(CVM_HSM_BODY_KEY_CREATE, big, n - 1, &out, &err),
			 -EINVAL); /* within the limit: parsed (and empty of JSON) */
	free(big);
	assert_int_equal(cvm_hsm_rest_parse_body(CVM_HSM_BODY_COUNT_, (const uint8_t *)"{}", 2,
						 &out, &err), -EINVAL);
}

static void test_form(void **state)
{
	(void)state;
	static const char form[] = "grant_type=client_credentials&client_id=a%2Fb&client_secret="
				   "x+y%3D%3D&scope=https%3A%2F%2Fmanagedhsm.azure.net%2F.default";
	struct cvm_err err = { 0 };
	char *v = NULL;
	assert_int_equal(cvm_hsm_form_field((const uint8_t *)form, strlen(form), "client_id", &v,
					    &err), 0);
	assert_string_equal(v, "a/b");
	free(v);
	assert_int_equal(cvm_hsm_form_field((const uint8_t *)form, strlen(form), "client_secret",
					    &v, &err), 0);
	assert_string_equal(v, "x y==");
	free(v);
	assert_int_equal(cvm_hsm_form_field((const uint8_t *)form, strlen(form), "missing", &v,
					    &err), 0);
	assert_null(v);
	assert_int_equal(cvm_hsm_rest_parse_body(CVM_HSM_BODY_TOKEN_FORM, (const uint8_t *)form,
						 strlen(form), NULL, &err), 0);

	static const char bad_escape[] = "grant_type=x&client_id=%4";
	assert_int_equal(cvm_hsm_form_field((const uint8_t *)bad_escape, strlen(bad_escape),
					    "client_id", &v, &err), -EINVAL);
	assert_null(v);
	static const char nul[] = "client_id=a%00b";
	assert_int_equal(cvm_hsm_form_field((const uint8_t *)nul, strlen(nul), "client_id", &v,
					    &err), -EINVAL);
	static const char twice[] = "grant_type=x&client_id=a&client_id=b";
	assert_int_equal(cvm_hsm_form_field((const uint8_t *)twice, strlen(twice), "client_id", &v,
					    &err), -EINVAL);
	assert_null(v);
	assert_string_equal(err.code, "invalid_request");
	static const char no_client[] = "grant_type=client_credentials&scope=x";
	assert_int_equal(cvm_hsm_rest_parse_body(CVM_HSM_BODY_TOKEN_FORM,
						 (const uint8_t *)no_client, strlen(no_client),
						 NULL, &err), -EINVAL);
	assert_non_null(strstr(err.msg, "client_id"));
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_kinds),
		cmocka_unit_test(test_body_errors),
		cmocka_unit_test(test_form),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
