/* SPDX-License-Identifier: Apache-2.0 */
/* hsm key operations: every algorithm round trip with its failure twin, key state and key_ops
 * checks, on SQLite and (CVM_TEST_POSTGRES) PostgreSQL. */
#include "keystest.h"

#include <pthread.h>
#include <stdlib.h>

static json_t *op(struct kt *t, const char *name, const char *version, const char *opname,
		  json_t *body)
{
	json_t *out = NULL;
	ASSERT_OK(cvm_hsm_key_op(t->h, &caller, name, version, opname, body, &out, err));
	json_decref(body);
	return out;
}

/* cvm_hsm_key_op that consumes body (for one-line failure checks) */
static int try_op(struct kt *t, const char *name, const char *version, const char *opname,
		  json_t *body, json_t **out, struct cvm_err *err)
{
	int r = cvm_hsm_key_op(t->h, &caller, name, version, opname, body, out, err);
	json_decref(body);
	return r;
}

static json_t *body_b64(const char *alg, const void *v, size_t len)
{
	json_t *b = json_pack("{s:s}", "alg", alg);
	assert_int_equal(cvm_json_set_b64url(b, "value", v, len), 0);
	return b;
}

/* encrypt->decrypt (or wrap->unwrap) and a tampered twin that must fail with EBADMSG */
static void roundtrip(struct kt *t, const char *name, const char *enc, const char *dec,
		      const char *alg, const void *pt, size_t len)
{
	json_t *r1 = op(t, name, NULL, enc, body_b64(alg, pt, len));
	assert_non_null(json_object_get(r1, "kid"));
	json_t *db = json_pack("{s:s,s:O}", "alg", alg, "value", json_object_get(r1, "value"));
	if (json_object_get(r1, "iv"))
		json_object_set(db, "iv", json_object_get(r1, "iv"));
	if (json_object_get(r1, "tag"))
		json_object_set(db, "tag", json_object_get(r1, "tag"));
	if (json_object_get(r1, "aad"))
		json_object_set(db, "aad", json_object_get(r1, "aad"));
	json_t *tampered = json_deep_copy(db);
	json_t *r2 = op(t, name, NULL, dec, db);
	const char *v = json_string_value(json_object_get(r2, "value"));
	uint8_t *raw = NULL;
	size_t rlen = 0;
	ASSERT_OK(cvm_b64url_decode(v, strlen(v), &raw, &rlen, "value", err));
	assert_int_equal(rlen, len);
	assert_memory_equal(raw, pt, len);
	free(raw);
	/* flip one bit of the ciphertext */
	const char *ct = json_string_value(json_object_get(tampered, "value"));
	uint8_t *c = NULL;
	size_t clen = 0;
	ASSERT_OK(cvm_b64url_decode(ct, strlen(ct), &c, &clen, "value", err));
	/* CBC with padding: flip the last byte of the next-to-last block, which flips the pad
	 * byte of the plaintext and so always breaks the padding (a random flip elsewhere would
	 * leave valid padding 1 time in ~256) */
	bool cbcpad = strstr(alg, "CBCPAD") != NULL;
	assert_true(!cbcpad || clen >= 32);
	c[cbcpad ? clen - 17 : clen / 2] ^= 0x01;
	cvm_json_set_b64url(tampered, "value", c, clen);
	free(c);
	json_t *out = NULL;
	struct cvm_err e = { 0 };
	int r = cvm_hsm_key_op(t->h, &caller, name, NULL, dec, tampered, &out, &e);
	if (strcmp(alg, "A128CBC") == 0 || strcmp(alg, "A192CBC") == 0 ||
	    strcmp(alg, "A256CBC") == 0) {
		/* unpadded CBC has no integrity: decrypts to different bytes */
		assert_int_equal(r, 0);
		assert_string_not_equal(json_string_value(json_object_get(out, "value")), v);
		json_decref(out);
	} else if (r != -EBADMSG) {
		fail_msg("%s %s tampered: %d %s %s", name, alg, r, e.code, e.msg);
	}
	json_decref(tampered);
	json_decref(r1);
	json_decref(r2);
}

static void rsa_encrypt_wrap(void **state)
{
	struct kt t;
	kt_open(&t, state, "rsaops", 7, false);
	json_decref(kt_create(&t, "rsa", "{\"kty\":\"RSA-HSM\"}"));
	const uint8_t pt[32] = "0123456789abcdef0123456789abcde";
	const char *algs[] = { "RSA-OAEP", "RSA-OAEP-256", "RSA1_5" };
	for (size_t i = 0; i < 3; i++) {
		roundtrip(&t, "rsa", "encrypt", "decrypt", algs[i], pt, sizeof(pt));
		roundtrip(&t, "rsa", "wrapkey", "unwrapkey", algs[i], pt, sizeof(pt));
	}
	/* unknown alg, missing fields */
	json_t *out = NULL;
	ASSERT_ERR(try_op(&t, "rsa", NULL, "encrypt", body_b64("A256GCM", pt, 16),
				  &out, err),
		   EINVAL, "BadParameter", "A256GCM");
	ASSERT_ERR(try_op(&t, "rsa", NULL, "encrypt", J("{\"value\":\"AA\"}"),
				  &out, err),
		   EINVAL, "BadParameter", "alg");
	ASSERT_ERR(try_op(&t, "rsa", NULL, "decrypt",
				  J("{\"alg\":\"RSA-OAEP\"}"), &out, err),
		   EINVAL, "BadParameter", "value");
	ASSERT_ERR(try_op(&t, "rsa", NULL, "fly", J("{}"), &out, err), EINVAL,
		   "BadParameter", "operation");
	ASSERT_ERR(try_op(&t, "nokey", NULL, "encrypt",
				  body_b64("RSA-OAEP", pt, 16), &out, err),
		   ENOENT, "KeyNotFound", NULL);
	assert_null(out);
	kt_close(&t);
}

static void sign_verify_case(struct kt *t, const char *name, const char *alg, size_t dlen)
{
	uint8_t digest[64];
	memset(digest, 0x5a, sizeof(digest));
	json_t *s = op(t, name, NULL, "sign", body_b64(alg, digest, dlen));
	json_t *vb = json_pack("{s:s,s:O}", "alg", alg, "value", json_object_get(s, "value"));
	cvm_json_set_b64url(vb, "digest", digest, dlen);
	json_t *v = op(t, name, NULL, "verify", vb);
	assert_true(json_is_true(json_object_get(v, "value")));
	json_decref(v);
	/* twin: another digest does not verify */
	digest[0] ^= 1;
	vb = json_pack("{s:s,s:O}", "alg", alg, "value", json_object_get(s, "value"));
	cvm_json_set_b64url(vb, "digest", digest, dlen);
	v = op(t, name, NULL, "verify", vb);
	assert_true(json_is_false(json_object_get(v, "value")));
	json_decref(v);
	/* twin: wrong digest length is a parameter error */
	json_t *out = NULL;
	ASSERT_ERR(try_op(t, name, NULL, "sign",
				  body_b64(alg, digest, dlen - 1), &out, err),
		   EINVAL, "BadParameter", NULL);
	json_decref(s);
}

static void sign_verify_all(void **state)
{
	struct kt t;
	kt_open(&t, state, "signops", 7, false);
	json_decref(kt_create(&t, "rsa", "{\"kty\":\"RSA\"}"));
	json_decref(kt_create(&t, "p256", "{\"kty\":\"EC-HSM\",\"crv\":\"P-256\"}"));
	json_decref(kt_create(&t, "p384", "{\"kty\":\"EC-HSM\",\"crv\":\"P-384\"}"));
	json_decref(kt_create(&t, "p521", "{\"kty\":\"EC-HSM\",\"crv\":\"P-521\"}"));
	const struct { const char *alg; size_t dlen; } rs[] = {
		{ "RS256", 32 }, { "RS384", 48 }, { "RS512", 64 },
		{ "PS256", 32 }, { "PS384", 48 }, { "PS512", 64 },
	};
	for (size_t i = 0; i < CVM_ARRAY_SIZE(rs); i++)
		sign_verify_case(&t, "rsa", rs[i].alg, rs[i].dlen);
	sign_verify_case(&t, "p256", "ES256", 32);
	sign_verify_case(&t, "p384", "ES384", 48);
	sign_verify_case(&t, "p521", "ES512", 64);
	/* twin: alg for another curve */
	uint8_t d[48] = { 0 };
	json_t *out = NULL;
	ASSERT_ERR(try_op(&t, "p256", NULL, "sign", body_b64("ES384", d, 48), &out,
				  err),
		   EINVAL, "BadParameter", NULL);
	/* EC keys carry no encrypt operation */
	ASSERT_ERR(try_op(&t, "p256", NULL, "encrypt",
				  body_b64("RSA-OAEP", d, 16), &out, err),
		   EINVAL, "BadParameter", "Operation encrypt is not permitted on this key.");
	assert_null(out);
	kt_close(&t);
}

static void oct_algorithms(void **state)
{
	struct kt t;
	kt_open(&t, state, "octops", 7, false);
	json_decref(kt_create(&t, "aes256", "{\"kty\":\"oct-HSM\",\"key_size\":256}"));
	json_decref(kt_create(&t, "aes128", "{\"kty\":\"oct-HSM\",\"key_size\":128}"));
	const uint8_t pt[32] = "secret key material 32 bytes...";
	roundtrip(&t, "aes256", "encrypt", "decrypt", "A256GCM", pt, 20);
	roundtrip(&t, "aes256", "encrypt", "decrypt", "A256CBCPAD", pt, 20);
	roundtrip(&t, "aes256", "encrypt", "decrypt", "A256CBC", pt, 32);
	roundtrip(&t, "aes256", "wrapkey", "unwrapkey", "A256KW", pt, 32);
	roundtrip(&t, "aes128", "encrypt", "decrypt", "A128GCM", pt, 7);
	roundtrip(&t, "aes128", "wrapkey", "unwrapkey", "A128KW", pt, 16);
	/* every AES algorithm at every key size */
	json_decref(kt_create(&t, "aes192", "{\"kty\":\"oct-HSM\",\"key_size\":192}"));
	static const char *const sizes[] = { "128", "192", "256" };
	for (size_t i = 0; i < 3; i++) {
		char name[16], alg[32];
		snprintf(name, sizeof(name), "aes%s", sizes[i]);
		snprintf(alg, sizeof(alg), "A%sGCM", sizes[i]);
		roundtrip(&t, name, "encrypt", "decrypt", alg, pt, 32);
		snprintf(alg, sizeof(alg), "A%sCBC", sizes[i]);
		roundtrip(&t, name, "encrypt", "decrypt", alg, pt, 32);
		snprintf(alg, sizeof(alg), "A%sCBCPAD", sizes[i]);
		roundtrip(&t, name, "encrypt", "decrypt", alg, pt, 31);
		snprintf(alg, sizeof(alg), "A%sKW", sizes[i]);
		roundtrip(&t, name, "wrapkey", "unwrapkey", alg, pt, 24);
		roundtrip(&t, name, "wrapkey", "unwrapkey", "CKM_AES_KEY_WRAP", pt, 32);
		roundtrip(&t, name, "wrapkey", "unwrapkey", "CKM_AES_KEY_WRAP_PAD", pt, 13);
	}
	/* GCM with aad: the aad is echoed, and decrypt with another aad fails */
	json_t *eb = body_b64("A256GCM", pt, 16);
	cvm_json_set_b64url(eb, "aad", "hdr", 3);
	json_t *r1 = op(&t, "aes256", NULL, "encrypt", eb);
	assert_non_null(json_object_get(r1, "aad"));
	assert_non_null(json_object_get(r1, "iv"));
	assert_non_null(json_object_get(r1, "tag"));
	json_t *db = json_pack("{s:s,s:O,s:O,s:O}", "alg", "A256GCM", "value",
			       json_object_get(r1, "value"), "iv", json_object_get(r1, "iv"), "tag",
			       json_object_get(r1, "tag"));
	cvm_json_set_b64url(db, "aad", "hdX", 3);
	json_t *out = NULL;
	struct cvm_err e = { 0 };
	assert_int_equal(cvm_hsm_key_op(t.h, &caller, "aes256", NULL, "decrypt", db, &out, &e),
			 -EBADMSG);
	json_decref(db);
	json_decref(r1);
	/* key size mismatch and oct keys do not sign */
	ASSERT_ERR(try_op(&t, "aes128", NULL, "encrypt",
				  body_b64("A256GCM", pt, 16), &out, err),
		   EINVAL, "BadParameter", "A256GCM");
	ASSERT_ERR(try_op(&t, "aes128", NULL, "sign", body_b64("RS256", pt, 32),
				  &out, err),
		   EINVAL, "BadParameter", "not permitted");
	assert_null(out);
	kt_close(&t);
}

static void key_state_refuses(void **state)
{
	struct kt t;
	kt_open(&t, state, "state", 7, false);
	const uint8_t pt[16] = "0123456789abcdef";
	int64_t now = cvm_now();
	char body[256];
	json_decref(kt_create(&t, "off", "{\"kty\":\"oct-HSM\",\"attributes\":{\"enabled\":false}}"));
	snprintf(body, sizeof(body), "{\"kty\":\"oct-HSM\",\"attributes\":{\"nbf\":%lld}}",
		 (long long)(now + 3600));
	json_decref(kt_create(&t, "later", body));
	snprintf(body, sizeof(body), "{\"kty\":\"oct-HSM\",\"attributes\":{\"exp\":%lld}}",
		 (long long)(now - 10));
	json_decref(kt_create(&t, "expired", body));
	json_decref(kt_create(&t, "enconly", "{\"kty\":\"oct-HSM\",\"key_ops\":[\"encrypt\"]}"));
	json_t *out = NULL;
	ASSERT_ERR(try_op(&t, "off", NULL, "decrypt", body_b64("A256GCM", pt, 16),
				  &out, err),
		   EPERM, "Forbidden", "Operation decrypt is not allowed on a disabled key.");
	ASSERT_ERR(try_op(&t, "later", NULL, "encrypt",
				  body_b64("A256GCM", pt, 16), &out, err),
		   EPERM, "Forbidden", "not yet valid");
	ASSERT_ERR(try_op(&t, "expired", NULL, "wrapkey",
				  body_b64("A256KW", pt, 16), &out, err),
		   EPERM, "Forbidden", "expired");
	ASSERT_ERR(try_op(&t, "enconly", NULL, "wrapkey",
				  body_b64("A256KW", pt, 16), &out, err),
		   EINVAL, "BadParameter", "Operation wrapKey is not permitted on this key.");
	assert_null(out);
	/* twins: enabling the key / allowing the op makes the same call succeed */
	json_t *ub = J("{\"attributes\":{\"enabled\":true}}");
	ASSERT_OK(cvm_hsm_key_update(t.h, &caller, "off", NULL, ub, &out, err));
	json_decref(out);
	json_decref(ub);
	json_decref(op(&t, "off", NULL, "encrypt", body_b64("A256GCM", pt, 16)));
	ub = J("{\"key_ops\":[\"encrypt\",\"wrapKey\"]}");
	ASSERT_OK(cvm_hsm_key_update(t.h, &caller, "enconly", NULL, ub, &out, err));
	json_decref(out);
	json_decref(ub);
	json_decref(op(&t, "enconly", NULL, "wrapkey", body_b64("A256KW", pt, 16)));
	kt_close(&t);
}

static void older_version_still_works(void **state)
{
	struct kt t;
	kt_open(&t, state, "oldver", 7, false);
	json_t *v1 = kt_create(&t, "rot", "{\"kty\":\"oct-HSM\"}");
	const uint8_t pt[16] = "0123456789abcdef";
	char ver1[33];
	snprintf(ver1, sizeof(ver1), "%s", kid_version(v1));
	json_t *w = op(&t, "rot", ver1, "wrapkey", body_b64("A256KW", pt, 16));
	assert_non_null(strstr(json_string_value(json_object_get(w, "kid")), ver1));
	json_decref(kt_create(&t, "rot", "{\"kty\":\"oct-HSM\"}"));
	/* the latest version cannot unwrap it, the first one can */
	json_t *ub = json_pack("{s:s,s:O}", "alg", "A256KW", "value", json_object_get(w, "value"));
	json_t *out = NULL;
	struct cvm_err e = { 0 };
	assert_int_equal(cvm_hsm_key_op(t.h, &caller, "rot", NULL, "unwrapkey", ub, &out, &e),
			 -EBADMSG);
	json_t *u = op(&t, "rot", ver1, "unwrapkey", ub);
	assert_non_null(json_object_get(u, "value"));
	json_decref(u);
	json_decref(w);
	json_decref(v1);
	kt_close(&t);
}

/* The unsealed-key cache: bounded, least recently used out first, drop by exact name. */
static void cache_lru(void **state)
{
	struct kt t;
	kt_open(&t, state, "cache", 7, false);
	struct cvm_key *k[3] = { 0 };
	for (int i = 0; i < 3; i++)
		ASSERT_OK(cvm_key_generate_oct(128, &k[i], err));
	t.h->cache.cap = 2;
	cvm_hsm_cache_put(t.h, "a", "v1", k[0]);
	cvm_hsm_cache_put(t.h, "ab", "v1", k[1]);
	struct cvm_key *got = cvm_hsm_cache_get(t.h, "a", "v1"); /* a is now most recent */
	assert_ptr_equal(got, k[0]);
	cvm_key_free(got);
	cvm_hsm_cache_put(t.h, "b", "v1", k[2]); /* evicts ab */
	assert_null(cvm_hsm_cache_get(t.h, "ab", "v1"));
	got = cvm_hsm_cache_get(t.h, "b", "v1");
	assert_ptr_equal(got, k[2]);
	cvm_key_free(got);
	cvm_hsm_cache_put(t.h, "ab", "v1", k[1]); /* evicts a */
	assert_null(cvm_hsm_cache_get(t.h, "a", "v1"));
	cvm_hsm_cache_drop(t.h, "a"); /* must not touch "ab" */
	got = cvm_hsm_cache_get(t.h, "ab", "v1");
	assert_ptr_equal(got, k[1]);
	cvm_key_free(got);
	cvm_hsm_cache_drop(t.h, NULL);
	assert_null(cvm_hsm_cache_get(t.h, "b", "v1"));
	assert_int_equal(t.h->cache.count, 0);
	for (int i = 0; i < 3; i++)
		cvm_key_free(k[i]);
	kt_close(&t);
}

struct worker {
	struct kt *t;
	json_t *wrapped[4];
	int bad;
};

static void *unwrap_worker(void *arg)
{
	struct worker *w = arg;
	for (int i = 0; i < 40; i++) {
		char name[8];
		snprintf(name, sizeof(name), "c%d", i % 4);
		json_t *b = json_pack("{s:s,s:O}", "alg", "A256KW", "value",
				      json_object_get(w->wrapped[i % 4], "value")),
		       *out = NULL;
		struct cvm_err e = { 0 };
		if (cvm_hsm_key_op(w->t->h, &caller, name, NULL, "unwrapkey", b, &out, &e) < 0 ||
		    strcmp(json_string_value(json_object_get(out, "value")),
			   "AAECAwQFBgcICQoLDA0ODw"))
			w->bad++;
		json_decref(out);
		json_decref(b);
		if (i % 10 == 9)
			cvm_hsm_cache_drop(w->t->h, name); /* churn the cache under load */
	}
	return NULL;
}

/* Operations from several threads on one HSM (as the HTTP thread pool calls it). */
static void concurrent_ops(void **state)
{
	struct kt t;
	kt_open(&t, state, "concops", 7, false);
	t.h->cache.cap = 3; /* fewer slots than keys: evictions while others read */
	struct worker w[4] = { 0 };
	for (int i = 0; i < 4; i++) {
		char name[8];
		snprintf(name, sizeof(name), "c%d", i);
		json_decref(kt_create(&t, name, "{\"kty\":\"oct-HSM\"}"));
		w[0].wrapped[i] = op(&t, name, NULL, "wrapkey",
				     J("{\"alg\":\"A256KW\",\"value\":\"AAECAwQFBgcICQoLDA0ODw\"}"));
	}
	pthread_t th[4];
	for (int i = 0; i < 4; i++) {
		w[i].t = &t;
		memcpy(w[i].wrapped, w[0].wrapped, sizeof(w[0].wrapped));
		assert_int_equal(pthread_create(&th[i], NULL, unwrap_worker, &w[i]), 0);
	}
	for (int i = 0; i < 4; i++) {
		pthread_join(th[i], NULL);
		assert_int_equal(w[i].bad, 0);
	}
	for (int i = 0; i < 4; i++)
		json_decref(w[0].wrapped[i]);
	kt_close(&t);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(rsa_encrypt_wrap),
		cmocka_unit_test(sign_verify_all),
		cmocka_unit_test(oct_algorithms),
		cmocka_unit_test(key_state_refuses),
		cmocka_unit_test(older_version_still_works),
		cmocka_unit_test(cache_lru),
		cmocka_unit_test(concurrent_ops),
	};
	return testdb_run("hsm-ops", tests, CVM_ARRAY_SIZE(tests));
}
