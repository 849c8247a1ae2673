/* SPDX-License-Identifier: Apache-2.0 */
/* Keys: generation, PKCS#8/SPKI, JWK import/export (RFC 7638 thumbprint), Key Vault
 * operations for every algorithm with their failure twins, digest signatures cross-checked
 * against plain OpenSSL EVP_DigestVerify. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <string.h>
#include <cmocka.h>

#include <opencvm/crypto.h>

#include <openssl/rsa.h>
#include <pthread.h>

/* Keys shared by the tests: RSA generation is slow under sanitizers. */
struct fixture {
	struct cvm_key *rsa, *rsa2, *p256, *p384, *p521, *oct128, *oct192, *oct256, *oct256b;
};

static int setup(void **state)
{
	struct fixture *f = calloc(1, sizeof(*f));
	struct cvm_err err = { 0 };
	if (!f || cvm_key_generate_rsa(2048, 0, &f->rsa, &err) < 0 ||
	    cvm_key_generate_rsa(2048, 0, &f->rsa2, &err) < 0 ||
	    cvm_key_generate_ec("P-256", &f->p256, &err) < 0 ||
	    cvm_key_generate_ec("P-384", &f->p384, &err) < 0 ||
	    cvm_key_generate_ec("P-521", &f->p521, &err) < 0 ||
	    cvm_key_generate_oct(128, &f->oct128, &err) < 0 ||
	    cvm_key_generate_oct(192, &f->oct192, &err) < 0 ||
	    cvm_key_generate_oct(256, &f->oct256, &err) < 0 ||
	    cvm_key_generate_oct(256, &f->oct256b, &err) < 0)
		return -1;
	*state = f;
	return 0;
}

static int teardown(void **state)
{
	struct fixture *f = *state;
	struct cvm_key *all[] = { f->rsa, f->rsa2, f->p256, f->p384, f->p521,
				  f->oct128, f->oct192, f->oct256, f->oct256b };
	for (size_t i = 0; i < CVM_ARRAY_SIZE(all); i++)
		cvm_key_free(all[i]);
	free(f);
	return 0;
}

static void test_generate(void **state)
{
	struct fixture *f = *state;
	struct cvm_err err = { 0 };
	assert_int_equal(cvm_key_type(f->rsa), CVM_KTY_RSA);
	assert_int_equal(cvm_key_bits(f->rsa), 2048);
	assert_true(cvm_key_has_private(f->rsa));
	assert_null(cvm_key_curve(f->rsa));
	assert_int_equal(cvm_key_type(f->p521), CVM_KTY_EC);
	assert_int_equal(cvm_key_bits(f->p521), 521);
	assert_string_equal(cvm_key_curve(f->p384), "P-384");
	assert_int_equal(cvm_key_type(f->oct192), CVM_KTY_OCT);
	assert_int_equal(cvm_key_bits(f->oct192), 192);
	assert_null(cvm_key_pkey(f->oct192));
	/* failure twins */
	struct cvm_key *k = NULL;
	assert_int_equal(cvm_key_generate_rsa(1024, 0, &k, &err), -EINVAL);
	assert_non_null(strstr(err.msg, "key_size"));
	assert_int_equal(cvm_key_generate_rsa(2048, 4, &k, &err), -EINVAL);
	assert_int_equal(cvm_key_generate_ec("P-256K", &k, &err), -ENOTSUP);
	assert_int_equal(cvm_key_generate_oct(100, &k, &err), -EINVAL);
	assert_null(k);
	/* reference counting */
	struct cvm_key *r = cvm_key_ref(f->p256);
	cvm_key_free(r);
	assert_string_equal(cvm_key_curve(f->p256), "P-256");
}

static void test_private_and_public_der(void **state)
{
	struct fixture *f = *state;
	struct cvm_err err = { 0 };
	struct cvm_key *keys[] = { f->rsa, f->p384, f->oct256 };
	enum cvm_kty types[] = { CVM_KTY_RSA, CVM_KTY_EC, CVM_KTY_OCT };
	for (size_t i = 0; i < 3; i++) {
		_cleanup_secret_ struct cvm_secret *p8 = NULL;
		assert_int_equal(cvm_key_export_private(keys[i], &p8, &err), 0);
		_cleanup_key_ struct cvm_key *back = NULL;
		assert_int_equal(cvm_key_import_private(types[i], p8->data, p8->len, &back, &err), 0);
		assert_int_equal(cvm_key_bits(back), cvm_key_bits(keys[i]));
		_cleanup_secret_ struct cvm_secret *again = NULL;
		assert_int_equal(cvm_key_export_private(back, &again, &err), 0);
		assert_true(cvm_secret_eq(again, p8->data, p8->len));
		if (types[i] == CVM_KTY_OCT)
			continue;
		/* twins: wrong kty, truncated, trailing garbage */
		struct cvm_key *bad = NULL;
		assert_int_equal(cvm_key_import_private(types[i] == CVM_KTY_RSA ? CVM_KTY_EC : CVM_KTY_RSA,
							p8->data, p8->len, &bad, &err), -EINVAL);
		assert_int_equal(cvm_key_import_private(types[i], p8->data, p8->len - 1, &bad, &err), -EINVAL);
		_cleanup_free_ uint8_t *longer = malloc(p8->len + 1);
		memcpy(longer, p8->data, p8->len);
		longer[p8->len] = 0;
		assert_int_equal(cvm_key_import_private(types[i], longer, p8->len + 1, &bad, &err), -EINVAL);
		assert_null(bad);

		_cleanup_buf_ struct cvm_buf spki = { 0 };
		assert_int_equal(cvm_key_export_public_der(keys[i], &spki, &err), 0);
		_cleanup_key_ struct cvm_key *pub = NULL;
		assert_int_equal(cvm_key_import_public_der(spki.data, spki.len, &pub, &err), 0);
		assert_false(cvm_key_has_private(pub));
		assert_int_equal(EVP_PKEY_eq(cvm_key_pkey(pub), cvm_key_pkey(keys[i])), 1);
		struct cvm_secret *none = NULL;
		assert_int_equal(cvm_key_export_private(pub, &none, &err), -EINVAL);
		assert_int_equal(cvm_key_import_public_der(spki.data, spki.len - 3, &bad, &err), -EINVAL);
		_cleanup_key_ struct cvm_key *pub2 = NULL;
		assert_int_equal(cvm_key_public(keys[i], &pub2, &err), 0);
		assert_false(cvm_key_has_private(pub2));
	}
	_cleanup_buf_ struct cvm_buf x = { 0 };
	assert_int_equal(cvm_key_export_public_der(f->oct128, &x, &err), -EINVAL);
	struct cvm_key *bad = NULL;
	assert_int_equal(cvm_key_import_private(CVM_KTY_OCT, (const uint8_t *)"short", 5, &bad, &err), -EINVAL);
}

static void test_jwk_roundtrip(void **state)
{
	struct fixture *f = *state;
	struct cvm_err err = { 0 };
	struct cvm_key *keys[] = { f->rsa, f->p256, f->p384, f->p521, f->oct128 };
	for (size_t i = 0; i < CVM_ARRAY_SIZE(keys); i++) {
		json_t *pub = NULL, *priv = NULL;
		assert_int_equal(cvm_key_to_jwk(keys[i], false, &pub, &err), 0);
		assert_int_equal(cvm_key_to_jwk(keys[i], true, &priv, &err), 0);
		assert_null(json_object_get(pub, "d"));
		assert_null(json_object_get(pub, "k"));
		if (cvm_key_type(keys[i]) == CVM_KTY_EC) {
			/* fixed-length coordinates: P-521 -> 66 bytes -> 88 base64url chars */
			size_t cl = cvm_key_bits(keys[i]) == 521 ? 88 : cvm_key_bits(keys[i]) == 384 ? 64 : 43;
			assert_int_equal(json_string_length(json_object_get(pub, "x")), cl);
			assert_int_equal(json_string_length(json_object_get(priv, "d")), cl);
		}
		_cleanup_key_ struct cvm_key *back = NULL;
		assert_int_equal(cvm_key_from_jwk(priv, true, &back, &err), 0);
		_cleanup_secret_ struct cvm_secret *a = NULL, *b = NULL;
		assert_int_equal(cvm_key_export_private(keys[i], &a, &err), 0);
		assert_int_equal(cvm_key_export_private(back, &b, &err), 0);
		assert_true(cvm_secret_eq(a, b->data, b->len));
		if (cvm_key_type(keys[i]) != CVM_KTY_OCT) {
			_cleanup_key_ struct cvm_key *pk = NULL;
			assert_int_equal(cvm_key_from_jwk(pub, false, &pk, &err), 0);
			assert_false(cvm_key_has_private(pk));
			/* require_private on a public JWK names the missing field */
			struct cvm_key *bad = NULL;
			assert_int_equal(cvm_key_from_jwk(pub, true, &bad, &err), -EINVAL);
			assert_non_null(strstr(err.msg, "key.d"));
			assert_null(bad);
		}
		json_decref(pub);
		json_decref(priv);
	}
}

/* Import jwk text and expect failure with the message naming field. */
static void expect_bad_jwk(const char *text, bool priv, int rc, const char *field)
{
	json_error_t je;
	json_t *j = json_loads(text, 0, &je);
	assert_non_null(j);
	struct cvm_err err = { 0 };
	struct cvm_key *k = NULL;
	assert_int_equal(cvm_key_from_jwk(j, priv, &k, &err), rc);
	assert_null(k);
	if (field && !strstr(err.msg, field))
		fail_msg("message '%s' does not name '%s'", err.msg, field);
	json_decref(j);
}

static void test_jwk_invalid(void **state)
{
	struct fixture *f = *state;
	struct cvm_err err = { 0 };
	expect_bad_jwk("{\"kty\":\"RSA\",\"e\":\"AQAB\"}", false, -EINVAL, "key.n");
	expect_bad_jwk("{\"kty\":\"RSA\",\"n\":5,\"e\":\"AQAB\"}", false, -EINVAL, "key.n");
	expect_bad_jwk("{\"kty\":\"RSA\",\"n\":\"AQAB\",\"e\":\"AQAB\"}", false, -EINVAL, "key.n");
	expect_bad_jwk("{\"kty\":\"RSA\",\"n\":\"a*b\",\"e\":\"AQAB\"}", false, -EINVAL, "key.n");
	expect_bad_jwk("{\"kty\":\"DSA\"}", false, -ENOTSUP, "key.kty");
	expect_bad_jwk("{\"n\":\"AQAB\"}", false, -EINVAL, "key.kty");
	expect_bad_jwk("[1]", false, -EINVAL, "key");
	expect_bad_jwk("{\"kty\":\"EC\",\"crv\":\"P-256K\",\"x\":\"AA\",\"y\":\"AA\"}", false, -ENOTSUP, "key.crv");
	expect_bad_jwk("{\"kty\":\"EC\",\"crv\":\"P-256\",\"x\":\"AAAA\",\"y\":\"AAAA\"}", false, -EINVAL, "key.x");
	expect_bad_jwk("{\"kty\":\"oct\",\"k\":\"AAAA\"}", true, -EINVAL, "key.k");
	expect_bad_jwk("{\"kty\":\"oct-HSM\"}", true, -EINVAL, "key.k");

	/* RSA: even exponent; EC: point off the curve; mismatched private part */
	json_t *j = NULL;
	assert_int_equal(cvm_key_to_jwk(f->rsa, true, &j, &err), 0);
	json_object_set_new(j, "kty", json_string("RSA-HSM"));
	_cleanup_key_ struct cvm_key *hsm = NULL;
	assert_int_equal(cvm_key_from_jwk(j, true, &hsm, &err), 0);
	json_object_set_new(j, "e", json_string("AQAC"));
	struct cvm_key *bad = NULL;
	assert_int_equal(cvm_key_from_jwk(j, false, &bad, &err), -EINVAL);
	assert_non_null(strstr(err.msg, "key.e"));
	json_t *j2 = NULL;
	assert_int_equal(cvm_key_to_jwk(f->rsa2, true, &j2, &err), 0);
	/* each private member taken from another key is refused, naming that member */
	const char *members[] = { "d", "p", "q", "dp", "dq", "qi" };
	for (size_t i = 0; i < CVM_ARRAY_SIZE(members); i++) {
		json_t *copy = json_deep_copy(j);
		json_object_set_new(copy, "e", json_string("AQAB"));
		json_object_set(copy, members[i], json_object_get(j2, members[i]));
		assert_int_equal(cvm_key_from_jwk(copy, true, &bad, &err), -EINVAL);
		char want[16];
		snprintf(want, sizeof(want), "key.%s:", members[i]);
		if (strcmp(members[i], "q") == 0)
			snprintf(want, sizeof(want), "key.p:"); /* p * q != n */
		if (!strstr(err.msg, want))
			fail_msg("member %s: message '%s'", members[i], err.msg);
		/* the public part alone still imports */
		_cleanup_key_ struct cvm_key *pubonly = NULL;
		assert_int_equal(cvm_key_from_jwk(copy, false, &pubonly, &err), 0);
		json_decref(copy);
	}
	json_object_set_new(j, "e", json_string("AQAB"));
	json_object_del(j, "qi");
	assert_int_equal(cvm_key_from_jwk(j, true, &bad, &err), -EINVAL);
	assert_non_null(strstr(err.msg, "key.qi"));
	json_decref(j);
	json_decref(j2);

	assert_int_equal(cvm_key_to_jwk(f->p256, true, &j, &err), 0);
	json_object_set_new(j, "kty", json_string("EC-HSM"));
	_cleanup_key_ struct cvm_key *echsm = NULL;
	assert_int_equal(cvm_key_from_jwk(j, true, &echsm, &err), 0);
	assert_int_equal(cvm_key_to_jwk(f->p384, true, &j2, &err), 0);
	/* P-256 private scalar with a different public point */
	json_t *j3 = NULL;
	_cleanup_key_ struct cvm_key *other = NULL;
	assert_int_equal(cvm_key_generate_ec("P-256", &other, &err), 0);
	assert_int_equal(cvm_key_to_jwk(other, true, &j3, &err), 0);
	json_object_set(j, "d", json_object_get(j3, "d"));
	assert_int_equal(cvm_key_from_jwk(j, true, &bad, &err), -EINVAL);
	/* off-curve point: flip a bit of y */
	json_object_set(j, "d", json_object_get(j3, "d"));
	json_object_set(j, "x", json_object_get(j3, "x"));
	char y[64];
	snprintf(y, sizeof(y), "%s", json_string_value(json_object_get(j3, "y")));
	y[5] = y[5] == 'A' ? 'B' : 'A';
	json_object_set_new(j, "y", json_string(y));
	assert_int_equal(cvm_key_from_jwk(j, false, &bad, &err), -EINVAL);
	/* P-384 coordinates declared as P-256 */
	json_object_set_new(j2, "crv", json_string("P-256"));
	assert_int_equal(cvm_key_from_jwk(j2, false, &bad, &err), -EINVAL);
	assert_non_null(strstr(err.msg, "key.x"));
	assert_null(bad);
	json_decref(j);
	json_decref(j2);
	json_decref(j3);
}

static void test_thumbprint_rfc7638(void **state)
{
	(void)state;
	struct cvm_err err = { 0 };
	/* RFC 7638 section 3.1 example */
	const char *text =
		"{\"kty\":\"RSA\",\"n\":\"0vx7agoebGcQSuuPiLJXZptN9nndrQmbXEps2aiAFbWhM78LhWx4cbbfAAtVT86z"
		"wu1RK7aPFFxuhDR1L6tSoc_BJECPebWKRXjBZCiFV4n3oknjhMstn64tZ_2W-5JsGY4Hc5n9yBXArwl93lqt"
		"7_RN5w6Cf0h4QyQ5v-65YGjQR0_FDW2QvzqY368QQMicAtaSqzs8KJZgnYb9c7d0zgdAZHzu6qMQvRL5hajr"
		"n1n91CbOpbISD08qNLyrdkt-bFTWhAI4vMQFh6WeZu0fM4lFd2NcRwr3XPksINHaQ-G_xBniIqbw0Ls1jF44"
		"-csFCur-kEgU8awapJzKnqDKgw\",\"e\":\"AQAB\",\"alg\":\"RS256\",\"kid\":\"2011-04-29\"}";
	json_error_t je;
	json_t *j = json_loads(text, 0, &je);
	assert_non_null(j);
	_cleanup_key_ struct cvm_key *k = NULL;
	assert_int_equal(cvm_key_from_jwk(j, false, &k, &err), 0);
	json_decref(j);
	_cleanup_free_ char *tp = NULL;
	assert_int_equal(cvm_key_thumbprint(k, &tp, &err), 0);
	assert_string_equal(tp, "NzbLsXh8uDCcd-6MNwXF4W_7noWXFZAfHkxZsRGC9Xs");
	/* a different key gives a different thumbprint */
	struct fixture *f = *state;
	_cleanup_free_ char *tp2 = NULL;
	assert_int_equal(cvm_key_thumbprint(f->rsa, &tp2, &err), 0);
	assert_string_not_equal(tp, tp2);
}

/* encrypt (or wrap) then decrypt (or unwrap) with alg, optionally with aad. */
static void roundtrip(const struct cvm_key *k, const struct cvm_key *wrong, const char *alg,
		      bool wrap, size_t len, bool aad)
{
	struct cvm_err err = { 0 };
	uint8_t data[64];
	for (size_t i = 0; i < sizeof(data); i++)
		data[i] = (uint8_t)(i * 13 + 1);
	struct cvm_crypt_in in = { .alg = alg, .data = data, .len = len };
	if (aad) {
		in.aad = (const uint8_t *)"header";
		in.aad_len = 6;
	}
	struct cvm_crypt_out c = { 0 }, p = { 0 };
	int (*enc)(const struct cvm_key *, const struct cvm_crypt_in *, struct cvm_crypt_out *,
		   struct cvm_err *) = wrap ? cvm_key_wrap : cvm_key_encrypt;
	int (*dec)(const struct cvm_key *, const struct cvm_crypt_in *, struct cvm_crypt_out *,
		   struct cvm_err *) = wrap ? cvm_key_unwrap : cvm_key_decrypt;
	if (enc(k, &in, &c, &err) != 0)
		fail_msg("%s encrypt: %s", alg, err.msg);
	struct cvm_crypt_in din = { .alg = alg, .data = c.data.data, .len = c.data.len,
				    .iv = c.iv_len ? c.iv : NULL, .iv_len = c.iv_len,
				    .aad = in.aad, .aad_len = in.aad_len,
				    .tag = c.tag_len ? c.tag : NULL, .tag_len = c.tag_len };
	if (dec(k, &din, &p, &err) != 0)
		fail_msg("%s decrypt: %s", alg, err.msg);
	assert_int_equal(p.data.len, len);
	assert_memory_equal(p.data.data, data, len);
	cvm_crypt_out_free(&p);
	/* Failure twins. Unauthenticated CBC may "succeed" with garbage (or, with padding, by
	 * chance), so for CBC the twin is: error, or output different from the plaintext. */
	bool cbc = strstr(alg, "CBC") != NULL;
	int rc = dec(wrong, &din, &p, &err);
	if (cbc ? rc == 0 && p.data.len == len && memcmp(p.data.data, data, len) == 0
		: rc != -EBADMSG)
		fail_msg("%s with the wrong key: expected -EBADMSG, got %d (%s)", alg, rc, err.msg);
	cvm_crypt_out_free(&p);
	/* a flipped bit in the tag (GCM) or the ciphertext */
	if (c.tag_len)
		c.tag[3] ^= 0x10;
	else
		c.data.data[c.data.len - 1] ^= 0x10;
	rc = dec(k, &din, &p, &err);
	if (cbc ? rc == 0 && p.data.len == len && memcmp(p.data.data, data, len) == 0
		: rc != -EBADMSG)
		fail_msg("%s with a flipped bit: expected -EBADMSG, got %d (%s)", alg, rc, err.msg);
	cvm_crypt_out_free(&p);
	/* truncated input */
	din.len = c.data.len - (c.tag_len ? 1 : 8);
	if (din.len && dec(k, &din, &p, &err) == 0)
		fail_msg("%s accepted a truncated input", alg);
	cvm_crypt_out_free(&p);
	cvm_crypt_out_free(&c);
}

static void test_operations_roundtrip(void **state)
{
	struct fixture *f = *state;
	const char *rsa_algs[] = { "RSA-OAEP", "RSA-OAEP-256", "RSA1_5" };
	for (size_t i = 0; i < 3; i++) {
		roundtrip(f->rsa, f->rsa2, rsa_algs[i], false, 32, false);
		roundtrip(f->rsa, f->rsa2, rsa_algs[i], true, 32, false);
	}
	struct cvm_key *octs[] = { f->oct128, f->oct192, f->oct256 };
	struct cvm_key *wrong[] = { f->oct128, f->oct192, f->oct256b };
	const char *sizes[] = { "128", "192", "256" };
	struct cvm_err err = { 0 };
	struct cvm_key *w128 = NULL, *w192 = NULL;
	assert_int_equal(cvm_key_generate_oct(128, &w128, &err), 0);
	assert_int_equal(cvm_key_generate_oct(192, &w192, &err), 0);
	wrong[0] = w128;
	wrong[1] = w192;
	for (size_t i = 0; i < 3; i++) {
		char alg[24];
		snprintf(alg, sizeof(alg), "A%sGCM", sizes[i]);
		roundtrip(octs[i], wrong[i], alg, false, 40, true);
		roundtrip(octs[i], wrong[i], alg, false, 1, false);
		snprintf(alg, sizeof(alg), "A%sKW", sizes[i]);
		roundtrip(octs[i], wrong[i], alg, true, 32, false);
		snprintf(alg, sizeof(alg), "A%sCBCPAD", sizes[i]);
		roundtrip(octs[i], wrong[i], alg, false, 33, false);
		snprintf(alg, sizeof(alg), "A%sCBC", sizes[i]);
		roundtrip(octs[i], wrong[i], alg, false, 48, false);
	}
	roundtrip(f->oct192, w192, "CKM_AES_KEY_WRAP", true, 24, false);
	roundtrip(f->oct256, f->oct256b, "CKM_AES_KEY_WRAP_PAD", true, 33, false);
	cvm_key_free(w128);
	cvm_key_free(w192);
}

static void test_operations_mismatch(void **state)
{
	struct fixture *f = *state;
	struct cvm_err err = { 0 };
	uint8_t data[32] = { 1 };
	struct cvm_crypt_out o = { 0 };
	struct cvm_crypt_in in = { .alg = "A256GCM", .data = data, .len = 32 };
	/* algorithm/key mismatches name the alg */
	assert_int_equal(cvm_key_encrypt(f->rsa, &in, &o, &err), -EINVAL);
	assert_non_null(strstr(err.msg, "A256GCM"));
	assert_string_equal(err.code, "BadParameter");
	assert_int_equal(cvm_key_encrypt(f->oct128, &in, &o, &err), -EINVAL);
	assert_non_null(strstr(err.msg, "A256GCM"));
	in.alg = "RSA-OAEP";
	assert_int_equal(cvm_key_encrypt(f->oct256, &in, &o, &err), -EINVAL);
	assert_int_equal(cvm_key_encrypt(f->p256, &in, &o, &err), -EINVAL);
	in.alg = "A256KW";
	assert_int_equal(cvm_key_encrypt(f->oct256, &in, &o, &err), -EINVAL);
	in.alg = "A256GCM";
	assert_int_equal(cvm_key_wrap(f->oct256, &in, &o, &err), -EINVAL);
	in.alg = "ROT13";
	assert_int_equal(cvm_key_encrypt(f->oct256, &in, &o, &err), -ENOTSUP);
	in.alg = NULL;
	assert_int_equal(cvm_key_encrypt(f->oct256, &in, &o, &err), -ENOTSUP);
	/* GCM parameter checks: iv 12 bytes, tag 16 bytes required on decrypt */
	in.alg = "A256GCM";
	in.iv = data;
	in.iv_len = 16;
	assert_int_equal(cvm_key_encrypt(f->oct256, &in, &o, &err), -EINVAL);
	assert_non_null(strstr(err.msg, "iv"));
	in.iv_len = 12;
	assert_int_equal(cvm_key_encrypt(f->oct256, &in, &o, &err), 0);
	assert_memory_equal(o.iv, data, 12);
	cvm_crypt_out_free(&o);
	assert_int_equal(cvm_key_decrypt(f->oct256, &in, &o, &err), -EINVAL);
	assert_non_null(strstr(err.msg, "tag"));
	/* AES-CBC without padding needs whole blocks; aad only for GCM */
	in.alg = "A256CBC";
	in.iv = NULL;
	in.iv_len = 0;
	in.len = 31;
	assert_int_equal(cvm_key_encrypt(f->oct256, &in, &o, &err), -EINVAL);
	in.len = 32;
	in.aad = data;
	in.aad_len = 2;
	assert_int_equal(cvm_key_encrypt(f->oct256, &in, &o, &err), -EINVAL);
	/* public-only RSA key cannot decrypt; can encrypt */
	_cleanup_key_ struct cvm_key *pub = NULL;
	assert_int_equal(cvm_key_public(f->rsa, &pub, &err), 0);
	struct cvm_crypt_in r = { .alg = "RSA-OAEP-256", .data = data, .len = 32 };
	assert_int_equal(cvm_key_encrypt(pub, &r, &o, &err), 0);
	struct cvm_crypt_in d = { .alg = "RSA-OAEP-256", .data = o.data.data, .len = o.data.len };
	struct cvm_crypt_out o2 = { 0 };
	assert_int_equal(cvm_key_decrypt(pub, &d, &o2, &err), -EINVAL);
	assert_int_equal(cvm_key_decrypt(f->rsa, &d, &o2, &err), 0);
	assert_memory_equal(o2.data.data, data, 32);
	cvm_crypt_out_free(&o);
	cvm_crypt_out_free(&o2);
	/* RSA-OAEP plaintext too long for the key */
	uint8_t big[250] = { 0 };
	r.data = big;
	r.len = sizeof(big);
	assert_int_equal(cvm_key_encrypt(f->rsa, &r, &o, &err), -EINVAL);
	/* KW input must be a multiple of 8 */
	struct cvm_crypt_in kw = { .alg = "A128KW", .data = data, .len = 20 };
	assert_int_equal(cvm_key_wrap(f->oct128, &kw, &o, &err), -EINVAL);
}

/* Verify sig over msg with plain OpenSSL, independent of our digest-sign path. */
static bool openssl_verify(EVP_PKEY *pk, const char *alg, const uint8_t *msg, size_t len,
			   const uint8_t *sig, size_t siglen)
{
	const EVP_MD *md = EVP_get_digestbyname(cvm_alg_digest(alg));
	EVP_MD_CTX *m = EVP_MD_CTX_new();
	EVP_PKEY_CTX *pctx = NULL;
	uint8_t *der = NULL;
	int derlen = 0;
	if (alg[0] == 'E') {
		size_t half = siglen / 2;
		ECDSA_SIG *s = ECDSA_SIG_new();
		ECDSA_SIG_set0(s, BN_bin2bn(sig, (int)half, NULL), BN_bin2bn(sig + half, (int)half, NULL));
		derlen = i2d_ECDSA_SIG(s, &der);
		ECDSA_SIG_free(s);
		sig = der;
		siglen = (size_t)derlen;
	}
	bool ok = EVP_DigestVerifyInit(m, &pctx, md, NULL, pk) == 1;
	if (ok && alg[0] == 'P')
		ok = EVP_PKEY_CTX_set_rsa_padding(pctx, RSA_PKCS1_PSS_PADDING) == 1 &&
		     EVP_PKEY_CTX_set_rsa_pss_saltlen(pctx, EVP_MD_get_size(md)) == 1;
	ok = ok && EVP_DigestVerify(m, sig, siglen, msg, len) == 1;
	EVP_MD_CTX_free(m);
	OPENSSL_free(der);
	return ok;
}

static void test_sign_verify(void **state)
{
	struct fixture *f = *state;
	struct cvm_err err = { 0 };
	const struct { const char *alg; struct cvm_key *k; size_t siglen; } cases[] = {
		{ "RS256", f->rsa, 256 }, { "RS384", f->rsa, 256 }, { "RS512", f->rsa, 256 },
		{ "PS256", f->rsa, 256 }, { "PS384", f->rsa, 256 }, { "PS512", f->rsa, 256 },
		{ "ES256", f->p256, 64 }, { "ES384", f->p384, 96 }, { "ES512", f->p521, 132 },
	};
	const uint8_t msg[] = "attestation token bytes";
	for (size_t i = 0; i < CVM_ARRAY_SIZE(cases); i++) {
		uint8_t h[64];
		size_t hl = 0;
		assert_int_equal(cvm_digest(cvm_alg_digest(cases[i].alg), msg, sizeof(msg), h, &hl, &err), 0);
		_cleanup_buf_ struct cvm_buf sig = { 0 };
		if (cvm_key_sign_digest(cases[i].k, cases[i].alg, h, hl, &sig, &err) != 0)
			fail_msg("%s: %s", cases[i].alg, err.msg);
		assert_int_equal(sig.len, cases[i].siglen);
		bool valid = false;
		assert_int_equal(cvm_key_verify_digest(cases[i].k, cases[i].alg, h, hl, sig.data, sig.len, &valid, &err), 0);
		assert_true(valid);
		assert_true(openssl_verify(cvm_key_pkey(cases[i].k), cases[i].alg, msg, sizeof(msg), sig.data, sig.len));
		/* twins: other digest, flipped signature bit, truncated signature, wrong dlen */
		h[0] ^= 1;
		assert_int_equal(cvm_key_verify_digest(cases[i].k, cases[i].alg, h, hl, sig.data, sig.len, &valid, &err), 0);
		assert_false(valid);
		h[0] ^= 1;
		sig.data[sig.len / 2] ^= 0x20;
		assert_int_equal(cvm_key_verify_digest(cases[i].k, cases[i].alg, h, hl, sig.data, sig.len, &valid, &err), 0);
		assert_false(valid);
		assert_false(openssl_verify(cvm_key_pkey(cases[i].k), cases[i].alg, msg, sizeof(msg), sig.data, sig.len));
		sig.data[sig.len / 2] ^= 0x20;
		assert_int_equal(cvm_key_verify_digest(cases[i].k, cases[i].alg, h, hl, sig.data, sig.len - 1, &valid, &err), 0);
		assert_false(valid);
		assert_int_equal(cvm_key_sign_digest(cases[i].k, cases[i].alg, h, hl - 1, &sig, &err), -EINVAL);
		assert_non_null(strstr(err.msg, "digest"));
	}
	/* algorithm / key-type mismatches */
	uint8_t h[32] = { 0 };
	_cleanup_buf_ struct cvm_buf sig = { 0 };
	bool valid = true;
	assert_int_equal(cvm_key_sign_digest(f->p384, "ES256", h, 32, &sig, &err), -EINVAL);
	assert_non_null(strstr(err.msg, "P-256"));
	assert_int_equal(cvm_key_sign_digest(f->p256, "RS256", h, 32, &sig, &err), -EINVAL);
	assert_int_equal(cvm_key_sign_digest(f->rsa, "ES256", h, 32, &sig, &err), -EINVAL);
	assert_int_equal(cvm_key_sign_digest(f->oct256, "RS256", h, 32, &sig, &err), -EINVAL);
	assert_int_equal(cvm_key_sign_digest(f->rsa, "ES256K", h, 32, &sig, &err), -ENOTSUP);
	assert_int_equal(cvm_key_verify_digest(f->rsa, "none", h, 32, h, 32, &valid, &err), -ENOTSUP);
	assert_false(valid);
	_cleanup_key_ struct cvm_key *pub = NULL;
	assert_int_equal(cvm_key_public(f->p256, &pub, &err), 0);
	assert_int_equal(cvm_key_sign_digest(pub, "ES256", h, 32, &sig, &err), -EINVAL);
	assert_int_equal(sig.len, 0);
	assert_null(cvm_alg_digest("XS256"));
	assert_string_equal(cvm_alg_digest("PS384"), "SHA384");
}

/* Keys are shared read-only between request threads (the key service caches them). */
static void *sign_worker(void *arg)
{
	struct cvm_key *k = cvm_key_ref(arg);
	struct cvm_err err = { 0 };
	uint8_t h[32] = { 7 };
	uintptr_t failures = 0;
	for (int i = 0; i < 40; i++) {
		struct cvm_buf sig = { 0 };
		bool valid = false;
		if (cvm_key_sign_digest(k, "ES256", h, 32, &sig, &err) != 0 ||
		    cvm_key_verify_digest(k, "ES256", h, 32, sig.data, sig.len, &valid, &err) != 0 ||
		    !valid)
			failures++;
		cvm_buf_free(&sig);
	}
	cvm_key_free(k);
	return (void *)failures;
}

static void test_shared_between_threads(void **state)
{
	struct fixture *f = *state;
	pthread_t t[4];
	for (int i = 0; i < 4; i++)
		assert_int_equal(pthread_create(&t[i], NULL, sign_worker, f->p256), 0);
	for (int i = 0; i < 4; i++) {
		void *rv = NULL;
		assert_int_equal(pthread_join(t[i], &rv), 0);
		assert_int_equal((uintptr_t)rv, 0);
	}
	/* the fixture still holds the only reference and the key still works */
	struct cvm_err err = { 0 };
	uint8_t h[32] = { 0 };
	_cleanup_buf_ struct cvm_buf sig = { 0 };
	assert_int_equal(cvm_key_sign_digest(f->p256, "ES256", h, 32, &sig, &err), 0);
	assert_int_equal(sig.len, 64);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_generate),
		cmocka_unit_test(test_private_and_public_der),
		cmocka_unit_test(test_jwk_roundtrip),
		cmocka_unit_test(test_jwk_invalid),
		cmocka_unit_test(test_thumbprint_rfc7638),
		cmocka_unit_test(test_operations_roundtrip),
		cmocka_unit_test(test_operations_mismatch),
		cmocka_unit_test(test_sign_verify),
		cmocka_unit_test(test_shared_between_threads),
	};
	return cmocka_run_group_tests(tests, setup, teardown);
}
