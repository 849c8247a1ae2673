/* SPDX-License-Identifier: Apache-2.0 */
/* JWS/JWT: RFC 7515 A.3 verification, sign/parse/verify round trips for every alg, an RS256
 * JWS checked with plain OpenSSL, strict parsing failures, JWT time checks. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <string.h>
#include <cmocka.h>

#include <opencvm/crypto.h>

static struct cvm_key *jwk_key(const char *text, bool priv)
{
	json_error_t je;
	json_t *j = json_loads(text, 0, &je);
	assert_non_null(j);
	struct cvm_err err = { 0 };
	struct cvm_key *k = NULL;
	if (cvm_key_from_jwk(j, priv, &k, &err) != 0)
		fail_msg("jwk: %s", err.msg);
	json_decref(j);
	return k;
}

/* RFC 7515 appendix A.3 (ES256) */
static const char *a3_key = "{\"kty\":\"EC\",\"crv\":\"P-256\","
			    "\"x\":\"f83OJ3D2xF1Bg8vub9tLe1gHMzV76e8Tus9uPHvRVEU\","
			    "\"y\":\"x_FEzRu9m36HLN_tue659LNpXW6pCyStikYjKIWI5a0\","
			    "\"d\":\"jpsQnnGQmL-YBIffH1136cspYG6-0iY7X1fCE9-E9LI\"}";
static const char *a3_jws =
	"eyJhbGciOiJFUzI1NiJ9"
	"."
	"eyJpc3MiOiJqb2UiLA0KICJleHAiOjEzMDA4MTkzODAsDQogImh0dHA6Ly9leGFtcGxlLmNvbS9pc19yb290Ijp0cnVlfQ"
	"."
	"DtEhU3ljbEg8L38VWAfUAqOyKAM6-Xx-F4GawxaepmXFCgfTjDxw5djxLa8ISlSApmWQxfKTUJqPP3-Kg6NU1Q";

static void test_rfc7515_a3(void **state)
{
	(void)state;
	struct cvm_err err = { 0 };
	_cleanup_key_ struct cvm_key *k = jwk_key(a3_key, true);
	_cleanup_key_ struct cvm_key *pub = NULL;
	assert_int_equal(cvm_key_public(k, &pub, &err), 0);
	_cleanup_jws_ struct cvm_jws *j = NULL;
	assert_int_equal(cvm_jws_parse(a3_jws, strlen(a3_jws), &j, &err), 0);
	assert_string_equal(j->alg, "ES256");
	assert_int_equal(j->sig_len, 64);
	assert_non_null(strstr((const char *)j->payload, "\"iss\":\"joe\""));
	assert_int_equal(cvm_jws_verify(j, pub, &err), 0);
	/* twin: one payload character changed */
	_cleanup_free_ char *t = strdup(a3_jws);
	t[30] = t[30] == 'A' ? 'B' : 'A';
	_cleanup_jws_ struct cvm_jws *j2 = NULL;
	assert_int_equal(cvm_jws_parse(t, strlen(t), &j2, &err), 0);
	assert_int_equal(cvm_jws_verify(j2, pub, &err), -EBADMSG);
	/* twin: other P-256 key */
	_cleanup_key_ struct cvm_key *other = NULL;
	assert_int_equal(cvm_key_generate_ec("P-256", &other, &err), 0);
	assert_int_equal(cvm_jws_verify(j, other, &err), -EBADMSG);
	/* twin: wrong key type for the alg */
	_cleanup_key_ struct cvm_key *p384 = NULL;
	assert_int_equal(cvm_key_generate_ec("P-384", &p384, &err), 0);
	assert_int_equal(cvm_jws_verify(j, p384, &err), -EINVAL);
}

/* RFC 7515 appendix A.4 (ES512, P-521): a public-only key verifies it. */
static void test_rfc7515_a4(void **state)
{
	(void)state;
	struct cvm_err err = { 0 };
	_cleanup_key_ struct cvm_key *k = jwk_key(
		"{\"kty\":\"EC\",\"crv\":\"P-521\","
		"\"x\":\"AekpBQ8ST8a8VcfVOTNl353vSrDCLLJXmPk06wTjxrrjcBpXp5EOnYG_NjFZ6OvLFV1jSfS9tsz4qUxcWceqwQGk\","
		"\"y\":\"ADSmRA43Z1DSNx_RvcLI87cdL07l6jQyyBXMoxVg_l2Th-x3S1WDhjDly79ajL4Kkd0AZMaZmh9ubmf63e3kyMj2\"}",
		false);
	const char *jws = "eyJhbGciOiJFUzUxMiJ9.UGF5bG9hZA."
			  "AdwMgeerwtHoh-l192l60hp9wAHZFVJbLfD_UxMi70cwnZOYaRI1bKPWROc-mZZq"
			  "wqT2SI-KGDKB34XO0aw_7XdtAG8GaSwFKdCAPZgoXD2YBJZCPEX3xKpRwcdOO8Kp"
			  "EHwJjyqOgzDO7iKvU8vcnwNrmxYbSW9ERBXukOXolLzeO_Jn";
	_cleanup_jws_ struct cvm_jws *j = NULL;
	assert_int_equal(cvm_jws_parse(jws, strlen(jws), &j, &err), 0);
	assert_int_equal(j->sig_len, 132);
	assert_string_equal((const char *)j->payload, "Payload");
	assert_int_equal(cvm_jws_verify(j, k, &err), 0);
	/* twin: same signature over a different payload */
	_cleanup_free_ char *t = strdup(jws);
	memcpy(t + 21, "UGF5bG9hZB", 10);
	_cleanup_jws_ struct cvm_jws *j2 = NULL;
	assert_int_equal(cvm_jws_parse(t, strlen(t), &j2, &err), 0);
	assert_int_equal(cvm_jws_verify(j2, k, &err), -EBADMSG);
}

static void test_roundtrip_all_algs(void **state)
{
	(void)state;
	struct cvm_err err = { 0 };
	_cleanup_key_ struct cvm_key *rsa = NULL, *p256 = NULL, *p384 = NULL, *p521 = NULL,
				     *oct = NULL, *oct2 = NULL, *rsa_pub = NULL;
	assert_int_equal(cvm_key_generate_rsa(2048, 0, &rsa, &err), 0);
	assert_int_equal(cvm_key_public(rsa, &rsa_pub, &err), 0);
	assert_int_equal(cvm_key_generate_ec("P-256", &p256, &err), 0);
	assert_int_equal(cvm_key_generate_ec("P-384", &p384, &err), 0);
	assert_int_equal(cvm_key_generate_ec("P-521", &p521, &err), 0);
	assert_int_equal(cvm_key_generate_oct(256, &oct, &err), 0);
	assert_int_equal(cvm_key_generate_oct(256, &oct2, &err), 0);
	const struct { const char *alg; struct cvm_key *sign, *verify, *wrong; } cases[] = {
		{ "RS256", rsa, rsa_pub, p256 }, { "RS384", rsa, rsa, oct }, { "RS512", rsa, rsa, p521 },
		{ "PS256", rsa, rsa_pub, p256 }, { "PS384", rsa, rsa, p384 }, { "PS512", rsa, rsa, oct },
		{ "ES256", p256, p256, rsa }, { "ES384", p384, p384, p256 }, { "ES512", p521, p521, p384 },
		{ "HS256", oct, oct, rsa },
	};
	json_t *extra = json_pack("{ss ss s[s]}", "kid", "key-1", "alg", "ignored", "x5c", "MIIB");
	assert_non_null(extra);
	const uint8_t payload[] = "{\"a\":1}";
	for (size_t i = 0; i < CVM_ARRAY_SIZE(cases); i++) {
		_cleanup_free_ char *c = NULL;
		if (cvm_jws_sign(cases[i].sign, cases[i].alg, extra, payload, sizeof(payload) - 1, &c, &err))
			fail_msg("%s: %s", cases[i].alg, err.msg);
		_cleanup_jws_ struct cvm_jws *j = NULL;
		assert_int_equal(cvm_jws_parse(c, strlen(c), &j, &err), 0);
		assert_string_equal(j->alg, cases[i].alg);
		assert_string_equal(json_string_value(json_object_get(j->header, "kid")), "key-1");
		assert_int_equal(j->payload_len, sizeof(payload) - 1);
		assert_memory_equal(j->payload, payload, j->payload_len);
		if (cvm_jws_verify(j, cases[i].verify, &err) != 0)
			fail_msg("%s verify: %s", cases[i].alg, err.msg);
		assert_int_equal(cvm_jws_verify(j, cases[i].wrong, &err), -EINVAL);
		/* twin: last signature character changed */
		size_t n = strlen(c);
		c[n - 2] = c[n - 2] == 'A' ? 'B' : 'A';
		_cleanup_jws_ struct cvm_jws *j2 = NULL;
		assert_int_equal(cvm_jws_parse(c, n, &j2, &err), 0);
		assert_int_equal(cvm_jws_verify(j2, cases[i].verify, &err), -EBADMSG);
	}
	json_decref(extra);
	/* HS256 with the wrong oct key */
	_cleanup_free_ char *hs = NULL;
	assert_int_equal(cvm_jws_sign(oct, "HS256", NULL, payload, 3, &hs, &err), 0);
	_cleanup_jws_ struct cvm_jws *jh = NULL;
	assert_int_equal(cvm_jws_parse(hs, strlen(hs), &jh, &err), 0);
	assert_int_equal(cvm_jws_verify(jh, oct2, &err), -EBADMSG);
	/* signing failures */
	_cleanup_free_ char *bad = NULL;
	assert_int_equal(cvm_jws_sign(rsa, "none", NULL, payload, 3, &bad, &err), -ENOTSUP);
	assert_int_equal(cvm_jws_sign(rsa_pub, "RS256", NULL, payload, 3, &bad, &err), -EINVAL);
	assert_int_equal(cvm_jws_sign(p256, "ES384", NULL, payload, 3, &bad, &err), -EINVAL);
	assert_null(bad);
}

/* An RS256 JWS made by us, verified by plain OpenSSL over the signing input. */
static void test_rs256_checked_by_openssl(void **state)
{
	(void)state;
	struct cvm_err err = { 0 };
	_cleanup_key_ struct cvm_key *rsa = NULL;
	assert_int_equal(cvm_key_generate_rsa(2048, 0, &rsa, &err), 0);
	_cleanup_free_ char *c = NULL;
	const char *claims = "{\"iss\":\"https://opencvm.local\"}";
	assert_int_equal(cvm_jws_sign(rsa, "RS256", NULL, (const uint8_t *)claims, strlen(claims), &c, &err), 0);
	/* header is exactly {"alg":"RS256"} */
	assert_true(cvm_str_startswith(c, "eyJhbGciOiJSUzI1NiJ9."));
	const char *dot = strrchr(c, '.');
	uint8_t *sig = NULL;
	size_t siglen = 0;
	assert_int_equal(cvm_b64url_decode(dot + 1, strlen(dot + 1), &sig, &siglen, "sig", &err), 0);
	EVP_MD_CTX *m = EVP_MD_CTX_new();
	assert_int_equal(EVP_DigestVerifyInit(m, NULL, EVP_sha256(), NULL, cvm_key_pkey(rsa)), 1);
	assert_int_equal(EVP_DigestVerify(m, sig, siglen, (const uint8_t *)c, (size_t)(dot - c)), 1);
	/* twin: the same signature does not cover a different signing input */
	EVP_MD_CTX_reset(m);
	assert_int_equal(EVP_DigestVerifyInit(m, NULL, EVP_sha256(), NULL, cvm_key_pkey(rsa)), 1);
	assert_int_not_equal(EVP_DigestVerify(m, sig, siglen, (const uint8_t *)c, (size_t)(dot - c) - 1), 1);
	EVP_MD_CTX_free(m);
	free(sig);
}

static void expect_parse_fail(const char *s, int rc, const char *needle)
{
	struct cvm_err err = { 0 };
	struct cvm_jws *j = NULL;
	int r = cvm_jws_parse(s, strlen(s), &j, &err);
	if (r != rc)
		fail_msg("'%.60s': expected %d, got %d (%s)", s, rc, r, err.msg);
	assert_null(j);
	if (needle && !strstr(err.msg, needle))
		fail_msg("'%.60s': message '%s' lacks '%s'", s, err.msg, needle);
}

static char *b64(const char *s)
{
	char *e = cvm_b64url_encode(s, strlen(s));
	assert_non_null(e);
	return e;
}

static void test_parse_strict(void **state)
{
	(void)state;
	char buf[512];
	expect_parse_fail("", -EINVAL, "empty");
	expect_parse_fail("abc.def", -EINVAL, "3 parts");
	expect_parse_fail("a.b.c.d", -EINVAL, "3 parts");
	expect_parse_fail("a.b.c.d.e", -EINVAL, "3 parts"); /* JWE */
	expect_parse_fail(".e30.AAAA", -EINVAL, "header");
	expect_parse_fail("eyJhbGciOiJFUzI1NiJ9.e30.", -EINVAL, "signature");
	expect_parse_fail("eyJhbGciOiJFUzI1NiJ9=.e30.AAAA", -EINVAL, "base64url");
	expect_parse_fail("eyJhbGciOiJFUzI1NiJ9.e3 0.AAAA", -EINVAL, "offset");
	_cleanup_free_ char *none = b64("{\"alg\":\"none\"}");
	snprintf(buf, sizeof(buf), "%s.e30.AAAA", none);
	expect_parse_fail(buf, -EINVAL, "none");
	_cleanup_free_ char *none2 = b64("{\"alg\":\"NoNe\"}");
	snprintf(buf, sizeof(buf), "%s.e30.AAAA", none2);
	expect_parse_fail(buf, -EINVAL, "none");
	_cleanup_free_ char *arr = b64("[\"alg\"]");
	snprintf(buf, sizeof(buf), "%s.e30.AAAA", arr);
	expect_parse_fail(buf, -EINVAL, "object");
	_cleanup_free_ char *noalg = b64("{\"typ\":\"JWT\"}");
	snprintf(buf, sizeof(buf), "%s.e30.AAAA", noalg);
	expect_parse_fail(buf, -EINVAL, "alg");
	_cleanup_free_ char *numalg = b64("{\"alg\":256}");
	snprintf(buf, sizeof(buf), "%s.e30.AAAA", numalg);
	expect_parse_fail(buf, -EINVAL, "alg");
	_cleanup_free_ char *dup = b64("{\"alg\":\"RS256\",\"alg\":\"none\"}");
	snprintf(buf, sizeof(buf), "%s.e30.AAAA", dup);
	expect_parse_fail(buf, -EINVAL, "object");
	_cleanup_free_ char *crit = b64("{\"alg\":\"RS256\",\"crit\":[\"exp\"]}");
	snprintf(buf, sizeof(buf), "%s.e30.AAAA", crit);
	expect_parse_fail(buf, -EINVAL, "crit");
	_cleanup_free_ char *ok = b64("{\"alg\":\"RS256\"}");
	snprintf(buf, sizeof(buf), "%s.e30.AAAA", ok);
	struct cvm_err err = { 0 };
	_cleanup_jws_ struct cvm_jws *j = NULL;
	assert_int_equal(cvm_jws_parse(buf, strlen(buf), &j, &err), 0); /* the good twin */
	assert_int_equal(j->signing_input_len, strlen(ok) + 4);
	/* signature bytes that do not fit the key: parse succeeds, verify refuses */
	_cleanup_key_ struct cvm_key *rsa = NULL;
	assert_int_equal(cvm_key_generate_rsa(2048, 0, &rsa, &err), 0);
	assert_int_equal(cvm_jws_verify(j, rsa, &err), -EBADMSG);
	/* size limit */
	size_t big = CVM_JWS_MAX_LEN + 1;
	char *huge = malloc(big + 1);
	memset(huge, 'A', big);
	huge[big] = 0;
	expect_parse_fail(huge, -E2BIG, NULL);
	free(huge);
}

static void test_jwt(void **state)
{
	(void)state;
	struct cvm_err err = { 0 };
	_cleanup_key_ struct cvm_key *k = NULL, *other = NULL;
	assert_int_equal(cvm_key_generate_ec("P-256", &k, &err), 0);
	assert_int_equal(cvm_key_generate_ec("P-256", &other, &err), 0);
	json_t *claims = json_pack("{ss sI sI}", "iss", "opencvm", "exp", (json_int_t)2000, "nbf", (json_int_t)1000);
	_cleanup_free_ char *t = NULL;
	assert_int_equal(cvm_jwt_sign(k, "ES256", NULL, claims, &t, &err), 0);
	json_t *c = NULL, *h = NULL;
	assert_int_equal(cvm_jwt_verify(t, strlen(t), k, &c, &h, &err), 0);
	assert_string_equal(json_string_value(json_object_get(h, "typ")), "JWT");
	assert_true(json_equal(c, claims));
	assert_int_equal(cvm_jwt_check_times(c, 1500, 0, false, &err), 0);
	assert_int_equal(cvm_jwt_check_times(c, 2001, 0, false, &err), -EINVAL);
	assert_non_null(strstr(err.msg, "exp"));
	assert_int_equal(cvm_jwt_check_times(c, 2001, 60, false, &err), 0);
	assert_int_equal(cvm_jwt_check_times(c, 999, 0, false, &err), -EINVAL);
	assert_non_null(strstr(err.msg, "nbf"));
	assert_int_equal(cvm_jwt_check_times(c, 999, 5, false, &err), 0);
	json_decref(c);
	json_decref(h);
	/* twins: other key, payload not an object */
	c = NULL;
	assert_int_equal(cvm_jwt_verify(t, strlen(t), other, &c, NULL, &err), -EBADMSG);
	assert_null(c);
	_cleanup_free_ char *arr = NULL;
	assert_int_equal(cvm_jws_sign(k, "ES256", NULL, (const uint8_t *)"[1]", 3, &arr, &err), 0);
	assert_int_equal(cvm_jwt_verify(arr, strlen(arr), k, &c, NULL, &err), -EINVAL);
	/* exp handling */
	json_object_del(claims, "exp");
	assert_int_equal(cvm_jwt_check_times(claims, 1500, 0, false, &err), -EINVAL);
	assert_non_null(strstr(err.msg, "exp"));
	assert_int_equal(cvm_jwt_check_times(claims, 1500, 0, true, &err), 0);
	json_object_set_new(claims, "exp", json_string("2000"));
	assert_int_equal(cvm_jwt_check_times(claims, 1500, 0, true, &err), -EINVAL);
	json_object_set_new(claims, "exp", json_real(1999.9));
	assert_int_equal(cvm_jwt_check_times(claims, 1999, 0, false, &err), 0);
	assert_int_equal(cvm_jwt_check_times(claims, 2000, 0, false, &err), -EINVAL);
	json_decref(claims);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_rfc7515_a3),
		cmocka_unit_test(test_rfc7515_a4),
		cmocka_unit_test(test_roundtrip_all_algs),
		cmocka_unit_test(test_rs256_checked_by_openssl),
		cmocka_unit_test(test_parse_strict),
		cmocka_unit_test(test_jwt),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
