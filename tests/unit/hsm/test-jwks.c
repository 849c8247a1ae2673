/* SPDX-License-Identifier: Apache-2.0 */
/* Issuer keys: OIDC discovery + JWKS from a loopback authority, caching, refetch on an unknown
 * kid (rate limited), x5c-only JWKS, issuer mismatch, URL policy. */
#include "authtest.h"

static void test_fetch_and_cache(void **state)
{
	struct kt t;
	kt_open(&t, state, "jwks1", 7, false);
	struct authority a;
	authority_start(&a);
	struct cvm_key *k = NULL;
	ASSERT_OK(hsm_jwks_key(t.h, a.url, "authority-key-1", &k, err));
	/* it is the authority's key: verifies what the authority signs */
	json_t *claims = json_pack("{s:s,s:I}", "iss", a.url, "exp", (json_int_t)cvm_now() + 60);
	char *jwt = authority_token(&a, claims);
	json_t *c = NULL;
	ASSERT_OK(cvm_jwt_verify(jwt, strlen(jwt), k, &c, NULL, err));
	json_decref(c);
	cvm_key_free(k);
	assert_int_equal(a.discovery_hits, 1);
	assert_int_equal(a.jwks_hits, 1);
	/* cached: trailing slash / case variants of the issuer are the same issuer */
	char iss2[80];
	snprintf(iss2, sizeof(iss2), "HTTP://127.0.0.1:%d/", cvm_http_server_port(a.srv));
	ASSERT_OK(hsm_jwks_key(t.h, iss2, "authority-key-1", &k, err));
	cvm_key_free(k);
	assert_int_equal(a.jwks_hits, 1);

	/* rotation: unknown kid refetches once */
	struct cvm_key *old = cvm_key_ref(a.keys[0]);
	authority_rotate(&a, "authority-key-2");
	ASSERT_OK(hsm_jwks_key(t.h, a.url, "authority-key-2", &k, err));
	cvm_key_free(k);
	assert_int_equal(a.jwks_hits, 2);
	/* the old key is gone from the cache with the new set */
	ASSERT_ERR(hsm_jwks_key(t.h, a.url, "authority-key-1", &k, err), EBADMSG, "BadParameter",
		   "publishes no signing key with kid \"authority-key-1\"");
	/* and that miss did not hammer the authority (refetch at most every 10 s) */
	assert_int_equal(a.jwks_hits, 2);
	ASSERT_ERR(hsm_jwks_key(t.h, a.url, "nope", &k, err), EBADMSG, "BadParameter", NULL);
	assert_int_equal(a.jwks_hits, 2);
	cvm_key_free(old);
	free(jwt);
	authority_stop(&a);
	kt_close(&t);
}

static void test_x5c_and_mismatch(void **state)
{
	struct kt t;
	kt_open(&t, state, "jwks2", 7, false);
	struct authority a;
	authority_start(&a);
	a.x5c_only = true;
	struct cvm_key *k = NULL;
	ASSERT_OK(hsm_jwks_key(t.h, a.url, "authority-key-1", &k, err));
	assert_int_equal(cvm_key_type(k), CVM_KTY_RSA);
	/* the x5c key is the signing key */
	json_t *claims = json_pack("{s:s}", "iss", a.url);
	char *jwt = authority_token(&a, claims);
	json_t *c = NULL;
	ASSERT_OK(cvm_jwt_verify(jwt, strlen(jwt), k, &c, NULL, err));
	json_decref(c);
	free(jwt);
	cvm_key_free(k);
	authority_stop(&a);

	/* discovery names another issuer */
	struct authority b;
	authority_start(&b);
	snprintf(b.issuer_override, sizeof(b.issuer_override), "https://someone-else.example");
	ASSERT_ERR(hsm_jwks_key(t.h, b.url, "authority-key-1", &k, err), EIO, "InternalError",
		   "names issuer \"https://someone-else.example\"");
	authority_stop(&b);
	/* nobody listening */
	ASSERT_ERR(hsm_jwks_key(t.h, "http://127.0.0.1:1", "k", &k, err), EIO, "InternalError",
		   "GET http://127.0.0.1:1/.well-known/openid-configuration failed");
	/* plain http to a non-loopback host is refused by the URL policy, before any I/O */
	ASSERT_ERR(hsm_jwks_key(t.h, "http://attest.example", "k", &k, err), EPERM, "Forbidden",
		   "GET http://attest.example/.well-known/openid-configuration failed");
	kt_close(&t);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_fetch_and_cache),
		cmocka_unit_test(test_x5c_and_mismatch),
	};
	return testdb_run("hsm-jwks", tests, CVM_ARRAY_SIZE(tests));
}
