/* SPDX-License-Identifier: Apache-2.0 */
/* hsm keys: create/import/get/update/list/versions/rng, on SQLite and (CVM_TEST_POSTGRES)
 * PostgreSQL. */
#include "keystest.h"

#include <pthread.h>
#include <stdlib.h>

static size_t b64len(json_t *o, const char *field)
{
	const char *s = json_string_value(json_object_get(o, field));
	assert_non_null(s);
	uint8_t *raw = NULL;
	size_t len = 0;
	ASSERT_OK(cvm_b64url_decode(s, strlen(s), &raw, &len, field, err));
	free(raw);
	return len;
}

static void check_bundle(json_t *b, const char *name, const char *kty)
{
	json_t *key = json_object_get(b, "key");
	assert_string_equal(json_string_value(json_object_get(key, "kty")), kty);
	const char *kid = json_string_value(json_object_get(key, "kid"));
	char prefix[200];
	snprintf(prefix, sizeof(prefix), "https://hsm.test:8443/keys/%s/", name);
	assert_true(cvm_str_startswith(kid, prefix));
	assert_int_equal(strlen(kid), strlen(prefix) + 32);
	json_t *a = json_object_get(b, "attributes");
	assert_true(json_is_true(json_object_get(a, "enabled")));
	assert_string_equal(json_string_value(json_object_get(a, "recoveryLevel")),
			    "CustomizedRecoverable+Purgeable");
	assert_int_equal(json_integer_value(json_object_get(a, "recoverableDays")), 7);
	assert_true(json_integer_value(json_object_get(a, "created")) > 1600000000);
	assert_false(json_is_true(json_object_get(a, "exportable")));
	assert_null(json_object_get(key, "d"));
	assert_null(json_object_get(key, "k"));
}

static void create_each_type(void **state)
{
	struct kt t;
	kt_open(&t, state, "types", 7, false);
	static const struct {
		const char *body, *kty;
		size_t nlen;      /* RSA modulus bytes or EC coordinate bytes */
		const char *crv;
		size_t nops;
	} cases[] = {
		{ "{\"kty\":\"RSA\"}", "RSA", 256, NULL, 6 },
		{ "{\"kty\":\"RSA-HSM\",\"key_size\":3072}", "RSA-HSM", 384, NULL, 6 },
		{ "{\"kty\":\"RSA-HSM\",\"key_size\":4096,\"key_ops\":[\"unwrapKey\"]}", "RSA-HSM",
		  512, NULL, 1 },
		{ "{\"kty\":\"EC\"}", "EC", 32, "P-256", 2 },
		{ "{\"kty\":\"EC-HSM\",\"crv\":\"P-384\"}", "EC-HSM", 48, "P-384", 2 },
		{ "{\"kty\":\"EC-HSM\",\"crv\":\"P-521\"}", "EC-HSM", 66, "P-521", 2 },
		{ "{\"kty\":\"oct-HSM\",\"key_size\":128}", "oct-HSM", 0, NULL, 4 },
		{ "{\"kty\":\"oct-HSM\",\"key_size\":192}", "oct-HSM", 0, NULL, 4 },
		{ "{\"kty\":\"oct\"}", "oct-HSM", 0, NULL, 4 },
	};
	for (size_t i = 0; i < CVM_ARRAY_SIZE(cases); i++) {
		char name[32];
		snprintf(name, sizeof(name), "k%zu", i);
		json_t *b = kt_create(&t, name, cases[i].body);
		check_bundle(b, name, cases[i].kty);
		json_t *key = json_object_get(b, "key");
		assert_int_equal(json_array_size(json_object_get(key, "key_ops")), cases[i].nops);
		if (cases[i].crv) {
			assert_string_equal(jstr(key, "crv"), cases[i].crv);
			assert_int_equal(b64len(key, "x"), cases[i].nlen);
			assert_int_equal(b64len(key, "y"), cases[i].nlen);
		} else if (cases[i].nlen) {
			assert_int_equal(b64len(key, "n"), cases[i].nlen);
			assert_string_equal(jstr(key, "e"), "AQAB");
		} else {
			assert_null(json_object_get(key, "n"));
		}
		json_decref(b);
	}
	kt_close(&t);
}

static void create_rejects_bad_input(void **state)
{
	struct kt t;
	kt_open(&t, state, "badcreate", 7, false);
	static const struct {
		const char *name, *body, *substr;
		int errnum;
	} cases[] = {
		{ "a", "{}", "kty", EINVAL },
		{ "a", "{\"kty\":\"DSA\"}", "kty", EINVAL },
		{ "a", "{\"kty\":\"RSA\",\"key_size\":1024}", "key_size", EINVAL },
		{ "a", "{\"kty\":\"RSA\",\"crv\":\"P-256\"}", "crv", EINVAL },
		{ "a", "{\"kty\":\"EC\",\"crv\":\"P-256K\"}", "P-256K", ENOTSUP },
		{ "a", "{\"kty\":\"EC\",\"crv\":\"P-256\",\"key_size\":384}", "key_size", EINVAL },
		{ "a", "{\"kty\":\"oct-HSM\",\"key_size\":512}", "key_size", EINVAL },
		{ "a", "{\"kty\":\"EC\",\"key_ops\":[\"encrypt\"]}", "key_ops[0]", EINVAL },
		{ "a", "{\"kty\":\"RSA\",\"key_ops\":[\"fly\"]}", "key_ops[0]", EINVAL },
		{ "a", "{\"kty\":\"RSA\",\"attributes\":{\"enabled\":\"yes\"}}", "attributes.enabled",
		  EINVAL },
		{ "a", "{\"kty\":\"RSA\",\"attributes\":{\"nbf\":200,\"exp\":100}}", "attributes.exp",
		  EINVAL },
		{ "a", "{\"kty\":\"RSA\",\"tags\":{\"t\":1}}", "tags.t", EINVAL },
		{ "bad_name", "{\"kty\":\"RSA\"}", "name", EINVAL },
		{ "", "{\"kty\":\"RSA\"}", "name", EINVAL },
		/* exportable <=> release policy, both ways, messages mention "exportable" */
		{ "a", "{\"kty\":\"RSA\",\"attributes\":{\"exportable\":true}}", "exportable", EINVAL },
		{ "a",
		  "{\"kty\":\"RSA\",\"release_policy\":{\"data\":"
		  "\"eyJ2ZXJzaW9uIjoiMS4wLjAiLCJhbnlPZiI6W3siYXV0aG9yaXR5IjoiaHR0cHM6Ly9tYWEudGVzdCIsImFsbE9mIjpbeyJjbGFpbSI6ImEiLCJlcXVhbHMiOnRydWV9XX1dfQ\"}}",
		  "exportable", EINVAL },
		{ "a",
		  "{\"kty\":\"RSA\",\"attributes\":{\"exportable\":true},\"release_policy\":"
		  "{\"data\":\"!!!\"}}",
		  "release_policy.data", EINVAL },
	};
	for (size_t i = 0; i < CVM_ARRAY_SIZE(cases); i++) {
		json_t *b = J(cases[i].body), *out = NULL;
		struct cvm_err e = { 0 };
		int r = cvm_hsm_key_create(t.h, &caller, cases[i].name, b, &out, &e);
		if (r != -cases[i].errnum || strcmp(e.code, "BadParameter") ||
		    !strstr(e.msg, cases[i].substr))
			fail_msg("case %zu (%s): %d %s %s", i, cases[i].body, r, e.code, e.msg);
		assert_null(out);
		json_decref(b);
	}
	kt_close(&t);
}

static void exportable_with_policy(void **state)
{
	struct kt t;
	kt_open(&t, state, "exportable", 7, false);
	/* policy {"version":"1.0.0","anyOf":[{"authority":"https://maa.test","allOf":[{"claim":
	 * "x-ms-attestation-type","equals":"sevsnpvm"}]}]} */
	const char *policy = "{\"version\":\"1.0.0\",\"anyOf\":[{\"authority\":\"https://maa.test\","
			     "\"allOf\":[{\"claim\":\"x-ms-attestation-type\",\"equals\":"
			     "\"sevsnpvm\"}]}]}";
	char *data = cvm_b64url_encode(policy, strlen(policy));
	char body[1024];
	snprintf(body, sizeof(body),
		 "{\"kty\":\"RSA-HSM\",\"attributes\":{\"exportable\":true},\"release_policy\":"
		 "{\"data\":\"%s\",\"immutable\":true}}",
		 data);
	json_t *b = kt_create(&t, "exp1", body);
	assert_true(json_is_true(cvm_json_path(b, "attributes.exportable")));
	assert_string_equal(jstr(b, "release_policy.data"), data);
	assert_string_equal(jstr(b, "release_policy.contentType"), "application/json; charset=utf-8");
	assert_true(json_is_true(cvm_json_path(b, "release_policy.immutable")));
	/* a new version without a policy inherits the current one */
	json_t *b2 = kt_create(&t, "exp1", "{\"kty\":\"RSA-HSM\",\"attributes\":{\"exportable\":true}}");
	assert_string_equal(jstr(b2, "release_policy.data"), data);
	/* the immutable policy cannot be changed by update */
	char upd[1024];
	snprintf(upd, sizeof(upd), "{\"release_policy\":{\"data\":\"%s\"}}",
		 "eyJ2ZXJzaW9uIjoiMS4wLjAiLCJhbnlPZiI6W3siYXV0aG9yaXR5IjoiaHR0cHM6Ly9vdGhlci50ZXN0Iiw"
		 "iYWxsT2YiOlt7ImNsYWltIjoiYSIsImVxdWFscyI6dHJ1ZX1dfV19");
	json_t *ub = J(upd), *out = NULL;
	ASSERT_ERR(cvm_hsm_key_update(t.h, &caller, "exp1", NULL, ub, &out, err), EINVAL,
		   "BadParameter", "immutable");
	/* exportable cannot be flipped */
	json_t *ub2 = J("{\"attributes\":{\"exportable\":false}}");
	ASSERT_ERR(cvm_hsm_key_update(t.h, &caller, "exp1", NULL, ub2, &out, err), EINVAL,
		   "BadParameter", "attributes.exportable");
	json_decref(ub);
	json_decref(ub2);
	json_decref(b);
	json_decref(b2);
	free(data);
	kt_close(&t);
}

static void get_latest_and_version(void **state)
{
	struct kt t;
	kt_open(&t, state, "versions", 7, false);
	json_t *v1 = kt_create(&t, "multi", "{\"kty\":\"EC\"}");
	json_t *v2 = kt_create(&t, "multi", "{\"kty\":\"EC\",\"crv\":\"P-384\"}");
	char ver1[33], ver2[33];
	snprintf(ver1, sizeof(ver1), "%s", kid_version(v1));
	snprintf(ver2, sizeof(ver2), "%s", kid_version(v2));
	assert_string_not_equal(ver1, ver2);
	json_t *out = NULL;
	ASSERT_OK(cvm_hsm_key_get(t.h, &caller, "multi", NULL, &out, err));
	assert_string_equal(kid_version(out), ver2);
	json_decref(out);
	ASSERT_OK(cvm_hsm_key_get(t.h, &caller, "multi", "", &out, err));
	assert_string_equal(kid_version(out), ver2);
	json_decref(out);
	ASSERT_OK(cvm_hsm_key_get(t.h, &caller, "multi", ver1, &out, err));
	assert_string_equal(kid_version(out), ver1);
	assert_string_equal(jstr(out, "key.crv"), "P-256");
	json_decref(out);
	out = NULL;
	ASSERT_ERR(cvm_hsm_key_get(t.h, &caller, "multi", "0123456789abcdef0123456789abcdef", &out,
				   err),
		   ENOENT, "KeyNotFound", "multi/0123456789abcdef0123456789abcdef");
	ASSERT_ERR(cvm_hsm_key_get(t.h, &caller, "multi", "XYZ", &out, err), EINVAL, "BadParameter",
		   "version");
	ASSERT_ERR(cvm_hsm_key_get(t.h, &caller, "nokey", NULL, &out, err), ENOENT, "KeyNotFound",
		   "A key with (name/id) nokey was not found");
	assert_null(out);

	/* versions list, 2 per page */
	json_t *page = NULL;
	ASSERT_OK(cvm_hsm_key_versions(t.h, &caller, "multi", 1, NULL, "7.4", &page, err));
	assert_int_equal(json_array_size(json_object_get(page, "value")), 1);
	const char *next = json_string_value(json_object_get(page, "nextLink"));
	assert_non_null(next);
	assert_true(cvm_str_startswith(next, "https://hsm.test:8443/keys/multi/versions?api-version=7.4&$skiptoken="));
	const char *kid0 = jstr(json_array_get(json_object_get(page, "value"), 0), "kid");
	assert_int_equal(strlen(kid0), strlen("https://hsm.test:8443/keys/multi/") + 32);
	char tok[128];
	const char *ts = strstr(next, "$skiptoken=") + strlen("$skiptoken=");
	snprintf(tok, sizeof(tok), "%.*s", (int)strcspn(ts, "&"), ts);
	json_t *page2 = NULL;
	ASSERT_OK(cvm_hsm_key_versions(t.h, &caller, "multi", 1, tok, "7.4", &page2, err));
	assert_int_equal(json_array_size(json_object_get(page2, "value")), 1);
	json_t *page3 = NULL;
	ASSERT_OK(cvm_hsm_key_versions(t.h, &caller, "multi", 5, NULL, NULL, &page3, err));
	assert_int_equal(json_array_size(json_object_get(page3, "value")), 2);
	assert_true(json_is_null(json_object_get(page3, "nextLink")));
	ASSERT_ERR(cvm_hsm_key_versions(t.h, &caller, "nokey", 5, NULL, NULL, &out, err), ENOENT,
		   "KeyNotFound", NULL);
	json_decref(page);
	json_decref(page2);
	json_decref(page3);
	json_decref(v1);
	json_decref(v2);
	kt_close(&t);
}

static void list_paging(void **state)
{
	struct kt t;
	kt_open(&t, state, "paging", 7, false);
	for (int i = 0; i < 30; i++) {
		char name[16];
		snprintf(name, sizeof(name), "key-%02d", i);
		json_decref(kt_create(&t, name, "{\"kty\":\"oct-HSM\",\"tags\":{\"n\":\"x\"}}"));
	}
	json_t *page = NULL;
	ASSERT_OK(cvm_hsm_key_list(t.h, &caller, 0, NULL, "7.5", &page, err));
	json_t *items = json_object_get(page, "value");
	assert_int_equal(json_array_size(items), 25);
	assert_string_equal(jstr(json_array_get(items, 0), "kid"), "https://hsm.test:8443/keys/key-00");
	assert_string_equal(jstr(json_array_get(items, 24), "kid"), "https://hsm.test:8443/keys/key-24");
	assert_string_equal(jstr(json_array_get(items, 3), "tags.n"), "x");
	assert_non_null(cvm_json_path(json_array_get(items, 3), "attributes.created"));
	const char *next = json_string_value(json_object_get(page, "nextLink"));
	assert_non_null(next);
	assert_true(cvm_str_startswith(next, "https://hsm.test:8443/keys?api-version=7.5&$skiptoken="));
	assert_non_null(strstr(next, "&maxresults=25"));
	char tok[128];
	const char *ts = strstr(next, "$skiptoken=") + strlen("$skiptoken=");
	snprintf(tok, sizeof(tok), "%.*s", (int)strcspn(ts, "&"), ts);
	json_t *page2 = NULL;
	ASSERT_OK(cvm_hsm_key_list(t.h, &caller, 25, tok, "7.5", &page2, err));
	items = json_object_get(page2, "value");
	assert_int_equal(json_array_size(items), 5);
	assert_string_equal(jstr(json_array_get(items, 0), "kid"), "https://hsm.test:8443/keys/key-25");
	assert_true(json_is_null(json_object_get(page2, "nextLink")));
	/* deleted keys leave the list */
	json_t *del = NULL;
	ASSERT_OK(cvm_hsm_key_delete(t.h, &caller, "key-26", &del, err));
	json_decref(del);
	json_t *page3 = NULL;
	ASSERT_OK(cvm_hsm_key_list(t.h, &caller, 25, tok, "7.5", &page3, err));
	assert_int_equal(json_array_size(json_object_get(page3, "value")), 4);

	json_t *out = NULL;
	ASSERT_ERR(cvm_hsm_key_list(t.h, &caller, 26, NULL, NULL, &out, err), EINVAL, "BadParameter",
		   "maxresults");
	ASSERT_ERR(cvm_hsm_key_list(t.h, &caller, -1, NULL, NULL, &out, err), EINVAL, "BadParameter",
		   "maxresults");
	ASSERT_ERR(cvm_hsm_key_list(t.h, &caller, 5, "%%%", NULL, &out, err), EINVAL, "BadParameter",
		   "$skiptoken");
	ASSERT_ERR(cvm_hsm_key_list(t.h, &caller, 5, "Ow", NULL, &out, err), EINVAL, "BadParameter",
		   "$skiptoken"); /* ";" is no key name */
	assert_null(out);
	json_decref(page);
	json_decref(page2);
	json_decref(page3);
	kt_close(&t);
}

static void update_attributes(void **state)
{
	struct kt t;
	kt_open(&t, state, "update", 7, false);
	json_t *b = kt_create(&t, "upd", "{\"kty\":\"RSA\",\"tags\":{\"a\":\"1\"}}");
	int64_t created = json_integer_value(cvm_json_path(b, "attributes.created"));
	json_t *body = J("{\"key_ops\":[\"sign\",\"verify\",\"sign\"],\"attributes\":{\"enabled\":"
			 "false,\"nbf\":1700000000,\"exp\":2000000000},\"tags\":{\"b\":\"2\"}}");
	json_t *out = NULL;
	ASSERT_OK(cvm_hsm_key_update(t.h, &caller, "upd", kid_version(b), body, &out, err));
	assert_false(json_is_true(cvm_json_path(out, "attributes.enabled")));
	assert_int_equal(json_integer_value(cvm_json_path(out, "attributes.nbf")), 1700000000);
	assert_int_equal(json_integer_value(cvm_json_path(out, "attributes.exp")), 2000000000);
	assert_int_equal(json_integer_value(cvm_json_path(out, "attributes.created")), created);
	assert_int_equal(json_array_size(cvm_json_path(out, "key.key_ops")), 2);
	assert_null(cvm_json_path(out, "tags.a"));
	assert_string_equal(jstr(out, "tags.b"), "2");
	json_decref(out);
	/* partial update keeps the rest */
	json_t *body2 = J("{\"attributes\":{\"enabled\":true}}");
	ASSERT_OK(cvm_hsm_key_update(t.h, &caller, "upd", "", body2, &out, err));
	assert_true(json_is_true(cvm_json_path(out, "attributes.enabled")));
	assert_string_equal(jstr(out, "tags.b"), "2");
	assert_int_equal(json_integer_value(cvm_json_path(out, "attributes.exp")), 2000000000);
	json_decref(out);
	out = NULL;
	json_t *bad1 = J("{\"attributes\":{\"nbf\":2100000000}}");
	ASSERT_ERR(cvm_hsm_key_update(t.h, &caller, "upd", NULL, bad1, &out, err), EINVAL,
		   "BadParameter", "attributes.exp");
	json_t *bad2 = J("{\"key_ops\":[\"dance\"]}");
	ASSERT_ERR(cvm_hsm_key_update(t.h, &caller, "upd", NULL, bad2, &out, err), EINVAL,
		   "BadParameter", "key_ops[0]");
	ASSERT_ERR(cvm_hsm_key_update(t.h, &caller, "nope", NULL, body2, &out, err), ENOENT,
		   "KeyNotFound", NULL);
	assert_null(out);
	json_decref(bad1);
	json_decref(bad2);
	json_decref(body);
	json_decref(body2);
	json_decref(b);
	kt_close(&t);
}

static void import_keys(void **state)
{
	struct kt t;
	kt_open(&t, state, "import", 7, false);
	struct cvm_key *k = NULL;
	json_t *jwk = NULL;
	ASSERT_OK(cvm_key_generate_rsa(2048, 0, &k, err));
	ASSERT_OK(cvm_key_to_jwk(k, true, &jwk, err));
	json_t *body = json_pack("{s:b,s:O,s:{s:s}}", "Hsm", 1, "key", jwk, "tags", "src", "byok");
	json_t *out = NULL;
	ASSERT_OK(cvm_hsm_key_import(t.h, &caller, "imp", body, &out, err));
	assert_string_equal(jstr(out, "key.kty"), "RSA-HSM");
	assert_string_equal(jstr(out, "key.n"), jstr(jwk, "n"));
	assert_null(cvm_json_path(out, "key.d"));
	assert_int_equal(json_array_size(cvm_json_path(out, "key.key_ops")), 6);
	json_decref(out);
	/* a public-only JWK is refused, naming the missing member */
	json_t *pub = NULL;
	ASSERT_OK(cvm_key_to_jwk(k, false, &pub, err));
	json_t *body2 = json_pack("{s:O}", "key", pub);
	out = NULL;
	struct cvm_err e = { 0 };
	assert_int_equal(cvm_hsm_key_import(t.h, &caller, "imp2", body2, &out, &e), -EINVAL);
	assert_non_null(strstr(e.msg, "key."));
	json_t *body3 = J("{\"Hsm\":true}");
	ASSERT_ERR(cvm_hsm_key_import(t.h, &caller, "imp3", body3, &out, err), EINVAL,
		   "BadParameter", "key: required");
	assert_null(out);
	json_decref(body);
	json_decref(body2);
	json_decref(body3);
	json_decref(pub);
	json_decref(jwk);
	cvm_key_free(k);
	kt_close(&t);
}

static void rng_bytes(void **state)
{
	struct kt t;
	kt_open(&t, state, "rng", 7, false);
	json_t *b = J("{\"count\":10}"), *out = NULL;
	ASSERT_OK(cvm_hsm_rng(t.h, b, &out, err));
	assert_int_equal(b64len(out, "value"), 10);
	json_decref(out);
	json_decref(b);
	const char *bad[] = { "{\"count\":0}", "{\"count\":129}", "{\"count\":-1}", "{}" };
	for (size_t i = 0; i < CVM_ARRAY_SIZE(bad); i++) {
		json_t *bb = J(bad[i]);
		out = NULL;
		ASSERT_ERR(cvm_hsm_rng(t.h, bb, &out, err), EINVAL, "BadParameter", "count");
		assert_null(out);
		json_decref(bb);
	}
	kt_close(&t);
}

static void not_activated(void **state)
{
	struct testdb *db = *state;
	struct cvm_store *s = testdb_open(db, "inactive");
	struct cvm_hsm *h = kt_hsm(s, 7, false);
	assert_false(cvm_hsm_activated(h));
	json_t *b = J("{\"kty\":\"RSA\"}"), *out = NULL;
	ASSERT_ERR(cvm_hsm_key_create(h, &caller, "k", b, &out, err), EBUSY, "HsmNotActivated",
		   "securitydomain");
	struct cvm_secret *k = test_domain_key(0x11);
	ASSERT_OK(cvm_hsm_domain_create_with_key(h, k, err));
	assert_true(cvm_hsm_activated(h));
	ASSERT_OK(cvm_hsm_key_create(h, &caller, "k", b, &out, err));
	json_decref(out);
	/* a second process over the same store serves no key data until it is activated too */
	struct cvm_hsm *cold = kt_hsm(s, 7, false);
	out = NULL;
	ASSERT_ERR(cvm_hsm_key_get(cold, &caller, "k", NULL, &out, err), EBUSY, "HsmNotActivated",
		   NULL);
	ASSERT_ERR(cvm_hsm_key_list(cold, &caller, 0, NULL, NULL, &out, err), EBUSY,
		   "HsmNotActivated", NULL);
	ASSERT_ERR(cvm_hsm_key_delete(cold, &caller, "k", &out, err), EBUSY, "HsmNotActivated",
		   NULL);
	ASSERT_ERR(cvm_hsm_rotation_policy_get(cold, &caller, "k", &out, err), EBUSY,
		   "HsmNotActivated", NULL);
	ASSERT_ERR(cvm_hsm_key_backup(cold, &caller, "k", &out, err), EBUSY, "HsmNotActivated",
		   NULL);
	assert_null(out);
	json_t *rb = J("{\"count\":4}");
	ASSERT_OK(cvm_hsm_rng(cold, rb, &out, err)); /* randomness needs no domain */
	json_decref(out);
	json_decref(rb);
	cvm_hsm_free(cold);
	json_decref(b);
	cvm_secret_free(k);
	cvm_hsm_free(h);
	cvm_store_close(s);
}

static bool file_contains(const char *path, const uint8_t *needle, size_t n)
{
	uint8_t *buf = NULL;
	size_t len = 0;
	struct cvm_err e = { 0 };
	if (cvm_file_read(path, 256u << 20, &buf, &len, &e) < 0)
		return false;
	bool found = false;
	for (size_t i = 0; !found && i + n <= len; i++)
		found = memcmp(buf + i, needle, n) == 0;
	free(buf);
	return found;
}

static bool db_contains(struct kt *t, const uint8_t *needle, size_t n)
{
	const char *sfx[] = { "", "-wal" };
	for (size_t i = 0; i < 2; i++) {
		char p[800];
		snprintf(p, sizeof(p), "%s/%s.db%s", t->db->base, t->dbname, sfx[i]);
		if (file_contains(p, needle, n))
			return true;
	}
	return false;
}

static void store_has_no_plaintext(void **state)
{
	struct kt t;
	kt_open(&t, state, "plaintext", 7, false);
	if (t.db->pg) {
		kt_close(&t);
		skip(); /* file scan applies to the SQLite file */
	}
	struct cvm_key *rsa = NULL, *oct = NULL;
	json_t *jr = NULL, *jo = NULL;
	struct cvm_secret *der = NULL, *raw = NULL;
	ASSERT_OK(cvm_key_generate_rsa(2048, 0, &rsa, err));
	ASSERT_OK(cvm_key_generate_oct(256, &oct, err));
	ASSERT_OK(cvm_key_to_jwk(rsa, true, &jr, err));
	ASSERT_OK(cvm_key_to_jwk(oct, true, &jo, err));
	ASSERT_OK(cvm_key_export_private(rsa, &der, err));
	ASSERT_OK(cvm_key_export_private(oct, &raw, err));
	json_t *b1 = json_pack("{s:O}", "key", jr), *b2 = json_pack("{s:O}", "key", jo);
	json_t *out = NULL;
	ASSERT_OK(cvm_hsm_key_import(t.h, &caller, "rsa-secret", b1, &out, err));
	json_decref(out);
	ASSERT_OK(cvm_hsm_key_import(t.h, &caller, "oct-secret", b2, &out, err));
	json_decref(out);
	/* the scan works: public bytes (the modulus inside the stored JWK text) are found */
	const char *n = jstr(jr, "n");
	assert_true(db_contains(&t, (const uint8_t *)n, strlen(n)));
	/* private material is not: neither raw, nor its base64url, nor the PKCS#8 DER */
	assert_false(db_contains(&t, raw->data, raw->len));
	const char *k = jstr(jo, "k"), *d = jstr(jr, "d");
	assert_false(db_contains(&t, (const uint8_t *)k, strlen(k)));
	assert_false(db_contains(&t, (const uint8_t *)d, strlen(d)));
	assert_false(db_contains(&t, der->data + der->len - 64, 64));
	json_decref(b1);
	json_decref(b2);
	json_decref(jr);
	json_decref(jo);
	cvm_secret_free(der);
	cvm_secret_free(raw);
	cvm_key_free(rsa);
	cvm_key_free(oct);
	kt_close(&t);
}

/* Key Vault names are case-insensitive; the spelling of the first create is what kids show. */
static void names_case_insensitive(void **state)
{
	struct kt t;
	kt_open(&t, state, "casing", 7, false);
	json_t *v1 = kt_create(&t, "MixedCase", "{\"kty\":\"oct-HSM\"}");
	assert_true(cvm_str_startswith(jstr(v1, "key.kid"), "https://hsm.test:8443/keys/MixedCase/"));
	json_t *v2 = kt_create(&t, "MIXEDCASE", "{\"kty\":\"oct-HSM\"}");
	assert_true(cvm_str_startswith(jstr(v2, "key.kid"), "https://hsm.test:8443/keys/MixedCase/"));
	json_t *out = NULL;
	ASSERT_OK(cvm_hsm_key_get(t.h, &caller, "mixedcase", NULL, &out, err));
	assert_string_equal(kid_version(out), kid_version(v2));
	json_decref(out);
	json_t *vers = NULL;
	ASSERT_OK(cvm_hsm_key_versions(t.h, &caller, "mixedCASE", 0, NULL, NULL, &vers, err));
	assert_int_equal(json_array_size(json_object_get(vers, "value")), 2);
	json_decref(vers);
	json_t *l = NULL;
	ASSERT_OK(cvm_hsm_key_list(t.h, &caller, 0, NULL, NULL, &l, err));
	assert_int_equal(json_array_size(json_object_get(l, "value")), 1);
	assert_string_equal(jstr(json_array_get(json_object_get(l, "value"), 0), "kid"),
			    "https://hsm.test:8443/keys/MixedCase");
	json_decref(l);
	json_t *w = NULL, *wb = J("{\"alg\":\"A256KW\",\"value\":\"AAECAwQFBgcICQoLDA0ODw\"}");
	ASSERT_OK(cvm_hsm_key_op(t.h, &caller, "mixedcase", NULL, "wrapkey", wb, &w, err));
	json_decref(wb);
	assert_true(cvm_str_startswith(jstr(w, "kid"), "https://hsm.test:8443/keys/MixedCase/"));
	json_decref(w);
	ASSERT_OK(cvm_hsm_key_delete(t.h, &caller, "MIXEDcase", &out, err));
	assert_string_equal(jstr(out, "recoveryId"), "https://hsm.test:8443/deletedkeys/MixedCase");
	json_decref(out);
	json_t *cb = J("{\"kty\":\"oct-HSM\"}");
	out = NULL;
	ASSERT_ERR(cvm_hsm_key_create(t.h, &caller, "mixedcase", cb, &out, err), EEXIST, "Conflict",
		   NULL);
	json_decref(cb);
	ASSERT_OK(cvm_hsm_deleted_recover(t.h, &caller, "mixedcase", &out, err));
	json_decref(out);
	json_decref(v1);
	json_decref(v2);
	kt_close(&t);
}

struct racer {
	struct cvm_hsm *h;
	int failures;
	struct cvm_err err;
};

static void *race_create(void *arg)
{
	struct racer *r = arg;
	for (int i = 0; i < 3; i++) {
		json_t *b = json_pack("{s:s}", "kty", "oct-HSM"), *out = NULL;
		if (cvm_hsm_key_create(r->h, &caller, "race", b, &out, &r->err) < 0)
			r->failures++;
		json_decref(out);
		json_decref(b);
	}
	return NULL;
}

/* Concurrent creates of one new name (several HSM handles, as several cvmd processes would
 * have): every version lands, none is lost to a unique-key race. */
static void concurrent_creates(void **state)
{
	struct kt t;
	kt_open(&t, state, "race", 7, false);
	struct racer r[4] = { 0 };
	pthread_t th[4];
	for (int i = 0; i < 4; i++) {
		r[i].h = kt_hsm(t.store, 7, false);
		struct cvm_secret *k = test_domain_key(0x11);
		ASSERT_OK(cvm_hsm_domain_unlock(r[i].h, k, err));
		cvm_secret_free(k);
		assert_int_equal(pthread_create(&th[i], NULL, race_create, &r[i]), 0);
	}
	for (int i = 0; i < 4; i++) {
		pthread_join(th[i], NULL);
		if (r[i].failures)
			fail_msg("thread %d: %s: %s", i, r[i].err.code, r[i].err.msg);
		cvm_hsm_free(r[i].h);
	}
	json_t *vers = NULL;
	ASSERT_OK(cvm_hsm_key_versions(t.h, &caller, "race", 25, NULL, NULL, &vers, err));
	assert_int_equal(json_array_size(json_object_get(vers, "value")), 12);
	json_decref(vers);
	kt_close(&t);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(create_each_type),
		cmocka_unit_test(create_rejects_bad_input),
		cmocka_unit_test(exportable_with_policy),
		cmocka_unit_test(get_latest_and_version),
		cmocka_unit_test(list_paging),
		cmocka_unit_test(update_attributes),
		cmocka_unit_test(import_keys),
		cmocka_unit_test(rng_bytes),
		cmocka_unit_test(not_activated),
		cmocka_unit_test(store_has_no_plaintext),
		cmocka_unit_test(concurrent_creates),
		cmocka_unit_test(names_case_insensitive),
	};
	return testdb_run("hsm-keys", tests, CVM_ARRAY_SIZE(tests));
}
