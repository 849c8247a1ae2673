/* SPDX-License-Identifier: Apache-2.0 */
/* Primitives: known-answer tests (RFC 3394, RFC 5649, RFC 5869, RFC 4231, GCM spec) and the
 * failure twin of each (wrong key, flipped bit, truncation), sealed blobs, Shamir. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <string.h>
#include <cmocka.h>

#include <opencvm/crypto.h>

#include <openssl/rsa.h>
#include <openssl/x509v3.h>

/* Decode a hex literal for a test vector; the test fails on a malformed literal. */
static uint8_t *hx(const char *s, size_t *len)
{
	uint8_t *out = NULL;
	size_t n = 0;
	struct cvm_err err = { 0 };
	assert_int_equal(cvm_hex_decode(s, strlen(s), &out, &n, "vector", &err), 0);
	if (len)
		*len = n;
	return out;
}

static void test_digest_hmac_hkdf(void **state)
{
	(void)state;
	struct cvm_err err = { 0 };
	uint8_t out[64];
	size_t n = 0;
	_cleanup_free_ uint8_t *abc = hx("ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad", NULL);
	assert_int_equal(cvm_digest("SHA256", "abc", 3, out, &n, &err), 0);
	assert_int_equal(n, 32);
	assert_memory_equal(out, abc, 32);
	assert_int_equal(cvm_digest("SHA384", "abc", 3, out, &n, &err), 0);
	assert_int_equal(n, 48);
	assert_int_equal(cvm_digest("MD5", "abc", 3, out, &n, &err), -ENOTSUP);
	assert_string_equal(err.code, "BadParameter");

	/* RFC 4231 test case 2 */
	_cleanup_free_ uint8_t *mac = hx("5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843", NULL);
	const char *data = "what do ya want for nothing?";
	assert_int_equal(cvm_hmac_sha256("Jefe", 4, data, strlen(data), out, &err), 0);
	assert_memory_equal(out, mac, 32);
	assert_int_equal(cvm_hmac_sha256("Jeff", 4, data, strlen(data), out, &err), 0);
	assert_memory_not_equal(out, mac, 32);

	/* RFC 5869 test case 1 */
	size_t il, sl, fl, ol;
	_cleanup_free_ uint8_t *ikm = hx("0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b", &il);
	_cleanup_free_ uint8_t *salt = hx("000102030405060708090a0b0c", &sl);
	_cleanup_free_ uint8_t *info = hx("f0f1f2f3f4f5f6f7f8f9", &fl);
	_cleanup_free_ uint8_t *okm = hx("3cb25f25faacd57a90434f64d0362f2a2d2d0a90cf1a5a4c5db02d56ecc4c5bf"
					 "34007208d5b887185865", &ol);
	uint8_t o[42];
	assert_int_equal(cvm_hkdf_sha256(ikm, il, salt, sl, info, fl, o, ol, &err), 0);
	assert_memory_equal(o, okm, 42);
	assert_int_equal(cvm_hkdf_sha256(ikm, il, salt, sl, info, fl - 1, o, ol, &err), 0);
	assert_memory_not_equal(o, okm, 42);
	assert_int_equal(cvm_hkdf_sha256(ikm, il, NULL, 0, NULL, 0, o, 0, &err), -EINVAL);
}

static void test_gcm(void **state)
{
	(void)state;
	struct cvm_err err = { 0 };
	/* GCM spec test case 2: zero key, zero IV, one zero block. */
	uint8_t key[16] = { 0 }, iv[12] = { 0 }, pt[16] = { 0 }, ct[16], tag[16], back[16];
	_cleanup_free_ uint8_t *ect = hx("0388dace60b6a392f328c2b971b2fe78", NULL);
	_cleanup_free_ uint8_t *etag = hx("ab6e47d42cec13bdf53a67b21257bddf", NULL);
	assert_int_equal(cvm_aes_gcm_seal(key, 16, iv, NULL, 0, pt, 16, ct, tag, &err), 0);
	assert_memory_equal(ct, ect, 16);
	assert_memory_equal(tag, etag, 16);
	assert_int_equal(cvm_aes_gcm_open(key, 16, iv, NULL, 0, ct, 16, tag, back, &err), 0);
	assert_memory_equal(back, pt, 16);
	/* failure twins: flipped tag bit, flipped ciphertext bit, different aad, bad key size */
	tag[0] ^= 1;
	assert_int_equal(cvm_aes_gcm_open(key, 16, iv, NULL, 0, ct, 16, tag, back, &err), -EBADMSG);
	tag[0] ^= 1;
	ct[5] ^= 0x80;
	assert_int_equal(cvm_aes_gcm_open(key, 16, iv, NULL, 0, ct, 16, tag, back, &err), -EBADMSG);
	ct[5] ^= 0x80;
	assert_int_equal(cvm_aes_gcm_open(key, 16, iv, "x", 1, ct, 16, tag, back, &err), -EBADMSG);
	assert_int_equal(cvm_aes_gcm_seal(key, 15, iv, NULL, 0, pt, 16, ct, tag, &err), -EINVAL);
	/* empty plaintext with aad only */
	uint8_t k32[32] = { 1 };
	assert_int_equal(cvm_aes_gcm_seal(k32, 32, iv, "aad", 3, NULL, 0, NULL, tag, &err), 0);
	assert_int_equal(cvm_aes_gcm_open(k32, 32, iv, "aad", 3, NULL, 0, tag, NULL, &err), 0);
	assert_int_equal(cvm_aes_gcm_open(k32, 32, iv, "aaD", 3, NULL, 0, tag, NULL, &err), -EBADMSG);
}

static void test_seal(void **state)
{
	(void)state;
	struct cvm_err err = { 0 };
	_cleanup_secret_ struct cvm_secret *k = cvm_secret_random(32);
	_cleanup_secret_ struct cvm_secret *k2 = cvm_secret_random(32);
	_cleanup_buf_ struct cvm_buf blob = { 0 };
	const char *msg = "disk master key";
	assert_int_equal(cvm_seal(k, "kid-1", 5, (const uint8_t *)msg, strlen(msg), &blob, &err), 0);
	assert_int_equal(blob.len, strlen(msg) + CVM_SEAL_OVERHEAD);
	assert_int_equal(blob.data[0], 1);
	_cleanup_secret_ struct cvm_secret *pt = NULL;
	assert_int_equal(cvm_unseal(k, "kid-1", 5, blob.data, blob.len, &pt, &err), 0);
	assert_true(cvm_secret_eq(pt, msg, strlen(msg)));
	/* two seals of the same data differ (fresh IV) */
	_cleanup_buf_ struct cvm_buf blob2 = { 0 };
	assert_int_equal(cvm_seal(k, "kid-1", 5, (const uint8_t *)msg, strlen(msg), &blob2, &err), 0);
	assert_memory_not_equal(blob.data + 1, blob2.data + 1, 12);
	/* failure twins */
	struct cvm_secret *bad = NULL;
	assert_int_equal(cvm_unseal(k2, "kid-1", 5, blob.data, blob.len, &bad, &err), -EBADMSG);
	assert_int_equal(cvm_unseal(k, "kid-2", 5, blob.data, blob.len, &bad, &err), -EBADMSG);
	assert_int_equal(cvm_unseal(k, "kid-1", 5, blob.data, CVM_SEAL_OVERHEAD - 1, &bad, &err),
			 -EINVAL);
	blob.data[blob.len - 1] ^= 1;
	assert_int_equal(cvm_unseal(k, "kid-1", 5, blob.data, blob.len, &bad, &err), -EBADMSG);
	blob.data[blob.len - 1] ^= 1;
	blob.data[0] = 2;
	assert_int_equal(cvm_unseal(k, "kid-1", 5, blob.data, blob.len, &bad, &err), -EINVAL);
	assert_non_null(strstr(err.msg, "version"));
	assert_null(bad);
	_cleanup_secret_ struct cvm_secret *short_key = cvm_secret_random(16);
	assert_int_equal(cvm_seal(short_key, NULL, 0, (const uint8_t *)msg, 3, &blob2, &err), -EINVAL);
}

static void test_kw_rfc3394(void **state)
{
	(void)state;
	struct cvm_err err = { 0 };
	size_t kl, dl, cl;
	/* RFC 3394 4.1: 128-bit KEK, 128-bit key data */
	_cleanup_free_ uint8_t *kek = hx("000102030405060708090A0B0C0D0E0F", &kl);
	_cleanup_free_ uint8_t *data = hx("00112233445566778899AABBCCDDEEFF", &dl);
	_cleanup_free_ uint8_t *ct = hx("1FA68B0A8112B447AEF34BD8FB5A7B829D3E862371D2CFE5", &cl);
	_cleanup_buf_ struct cvm_buf out = { 0 };
	assert_int_equal(cvm_aes_kw_wrap(kek, kl, false, data, dl, &out, &err), 0);
	assert_int_equal(out.len, cl);
	assert_memory_equal(out.data, ct, cl);
	_cleanup_secret_ struct cvm_secret *back = NULL;
	assert_int_equal(cvm_aes_kw_unwrap(kek, kl, false, ct, cl, &back, &err), 0);
	assert_true(cvm_secret_eq(back, data, dl));

	/* RFC 3394 4.6: 256-bit KEK, 256-bit key data */
	size_t k2l, d2l, c2l;
	_cleanup_free_ uint8_t *kek2 = hx("000102030405060708090A0B0C0D0E0F101112131415161718191A1B1C1D1E1F", &k2l);
	_cleanup_free_ uint8_t *data2 = hx("00112233445566778899AABBCCDDEEFF000102030405060708090A0B0C0D0E0F", &d2l);
	_cleanup_free_ uint8_t *ct2 = hx("28C9F404C4B810F4CBCCB35CFB87F8263F5786E2D80ED326CBC7F0E71A99F43BFB988B9B7A02DD21", &c2l);
	_cleanup_buf_ struct cvm_buf out2 = { 0 };
	assert_int_equal(cvm_aes_kw_wrap(kek2, k2l, false, data2, d2l, &out2, &err), 0);
	assert_int_equal(out2.len, c2l);
	assert_memory_equal(out2.data, ct2, c2l);

	/* failure twins: flipped bit, wrong KEK, truncated, bad lengths */
	struct cvm_secret *bad = NULL;
	ct[3] ^= 4;
	assert_int_equal(cvm_aes_kw_unwrap(kek, kl, false, ct, cl, &bad, &err), -EBADMSG);
	ct[3] ^= 4;
	assert_int_equal(cvm_aes_kw_unwrap(kek2 + 16, 16, false, ct, cl, &bad, &err), -EBADMSG);
	assert_int_equal(cvm_aes_kw_unwrap(kek, kl, false, ct, cl - 8, &bad, &err), -EINVAL);
	assert_int_equal(cvm_aes_kw_unwrap(kek, kl, false, ct, cl - 1, &bad, &err), -EINVAL);
	assert_int_equal(cvm_aes_kw_wrap(kek, kl, false, data, 12, &out, &err), -EINVAL);
	assert_int_equal(cvm_aes_kw_wrap(kek, 17, false, data, dl, &out, &err), -EINVAL);
	assert_null(bad);
}

static void test_kwp_rfc5649(void **state)
{
	(void)state;
	struct cvm_err err = { 0 };
	size_t kl, d1l, c1l, d2l, c2l;
	_cleanup_free_ uint8_t *kek = hx("5840df6e29b02af1ab493b705bf16ea1ae8338f4dcc176a8", &kl);
	_cleanup_free_ uint8_t *d1 = hx("c37b7e6492584340bed12207808941155068f738", &d1l);
	_cleanup_free_ uint8_t *c1 = hx("138bdeaa9b8fa7fc61f97742e72248ee5ae6ae5360d1ae6a5f54f373fa543b6a", &c1l);
	_cleanup_free_ uint8_t *d2 = hx("466f7250617369", &d2l);
	_cleanup_free_ uint8_t *c2 = hx("afbeb0f07dfbf5419200f2ccb50bb24f", &c2l);
	_cleanup_buf_ struct cvm_buf o1 = { 0 }, o2 = { 0 };
	assert_int_equal(cvm_aes_kw_wrap(kek, kl, true, d1, d1l, &o1, &err), 0);
	assert_int_equal(o1.len, c1l);
	assert_memory_equal(o1.data, c1, c1l);
	assert_int_equal(cvm_aes_kw_wrap(kek, kl, true, d2, d2l, &o2, &err), 0);
	assert_int_equal(o2.len, c2l);
	assert_memory_equal(o2.data, c2, c2l);
	_cleanup_secret_ struct cvm_secret *b1 = NULL, *b2 = NULL;
	assert_int_equal(cvm_aes_kw_unwrap(kek, kl, true, c1, c1l, &b1, &err), 0);
	assert_true(cvm_secret_eq(b1, d1, d1l));
	assert_int_equal(cvm_aes_kw_unwrap(kek, kl, true, c2, c2l, &b2, &err), 0);
	assert_true(cvm_secret_eq(b2, d2, d2l));
	/* failure twins */
	struct cvm_secret *bad = NULL;
	c2[15] ^= 1;
	assert_int_equal(cvm_aes_kw_unwrap(kek, kl, true, c2, c2l, &bad, &err), -EBADMSG);
	c1[0] ^= 1;
	assert_int_equal(cvm_aes_kw_unwrap(kek, kl, true, c1, c1l, &bad, &err), -EBADMSG);
	assert_int_equal(cvm_aes_kw_unwrap(kek, kl, true, c1, 8, &bad, &err), -EINVAL);
	assert_int_equal(cvm_aes_kw_wrap(kek, kl, true, d1, 0, &o1, &err), -EINVAL);
	assert_null(bad);
}

static void test_oaep_and_rsa_aes_key_wrap(void **state)
{
	(void)state;
	struct cvm_err err = { 0 };
	_cleanup_key_ struct cvm_key *k = NULL, *other = NULL;
	assert_int_equal(cvm_key_generate_rsa(2048, 0, &k, &err), 0);
	assert_int_equal(cvm_key_generate_rsa(2048, 0, &other, &err), 0);
	EVP_PKEY *pk = cvm_key_pkey(k);
	const char *mds[] = { "SHA1", "SHA256", "SHA384" };
	for (size_t i = 0; i < CVM_ARRAY_SIZE(mds); i++) {
		_cleanup_buf_ struct cvm_buf ct = { 0 };
		assert_int_equal(cvm_rsa_oaep_encrypt(pk, mds[i], (const uint8_t *)"hello", 5, &ct, &err), 0);
		assert_int_equal(ct.len, 256);
		_cleanup_secret_ struct cvm_secret *pt = NULL;
		assert_int_equal(cvm_rsa_oaep_decrypt(pk, mds[i], ct.data, ct.len, &pt, &err), 0);
		assert_true(cvm_secret_eq(pt, "hello", 5));
		struct cvm_secret *bad = NULL;
		assert_int_equal(cvm_rsa_oaep_decrypt(cvm_key_pkey(other), mds[i], ct.data, ct.len, &bad, &err), -EBADMSG);
		assert_int_equal(cvm_rsa_oaep_decrypt(pk, mds[i], ct.data, ct.len - 1, &bad, &err), -EINVAL);
		assert_null(bad);
	}
	/* Too long for OAEP-SHA256 on 2048 bits: 256 - 64 - 2 = 190 max. */
	uint8_t big[191] = { 0 };
	_cleanup_buf_ struct cvm_buf ct = { 0 };
	assert_int_equal(cvm_rsa_oaep_encrypt(pk, "SHA256", big, 190, &ct, &err), 0);
	assert_int_equal(cvm_rsa_oaep_encrypt(pk, "SHA256", big, 191, &ct, &err), -EINVAL);
	assert_int_equal(cvm_rsa_oaep_encrypt(pk, "MD5", big, 1, &ct, &err), -ENOTSUP);

	/* CKM_RSA_AES_KEY_WRAP: check the layout by unwrapping with raw OpenSSL calls. */
	uint8_t material[1216];
	for (size_t i = 0; i < sizeof(material); i++)
		material[i] = (uint8_t)(i * 7);
	_cleanup_buf_ struct cvm_buf w = { 0 };
	assert_int_equal(cvm_rsa_aes_key_wrap(pk, "CKM_RSA_AES_KEY_WRAP", material, sizeof(material), &w, &err), 0);
	assert_int_equal(w.len, 256 + 1224); /* the size Azure SKR produces for a 2048-bit PKCS#8 */
	EVP_PKEY_CTX *ctx = EVP_PKEY_CTX_new_from_pkey(NULL, pk, NULL);
	assert_non_null(ctx);
	assert_int_equal(EVP_PKEY_decrypt_init(ctx), 1);
	assert_int_equal(EVP_PKEY_CTX_set_rsa_padding(ctx, RSA_PKCS1_OAEP_PADDING), 1);
	assert_int_equal(EVP_PKEY_CTX_set_rsa_oaep_md(ctx, EVP_sha1()), 1);
	assert_int_equal(EVP_PKEY_CTX_set_rsa_mgf1_md(ctx, EVP_sha1()), 1);
	uint8_t tk[256];
	size_t tkl = sizeof(tk);
	assert_int_equal(EVP_PKEY_decrypt(ctx, tk, &tkl, w.data, 256), 1);
	EVP_PKEY_CTX_free(ctx);
	assert_int_equal(tkl, 32);
	EVP_CIPHER_CTX *c = EVP_CIPHER_CTX_new();
	EVP_CIPHER_CTX_set_flags(c, EVP_CIPHER_CTX_FLAG_WRAP_ALLOW);
	assert_int_equal(EVP_DecryptInit_ex(c, EVP_aes_256_wrap_pad(), NULL, tk, NULL), 1);
	uint8_t plain[1300];
	int n1 = 0, n2 = 0;
	assert_int_equal(EVP_DecryptUpdate(c, plain, &n1, w.data + 256, (int)(w.len - 256)), 1);
	assert_int_equal(EVP_DecryptFinal_ex(c, plain + n1, &n2), 1);
	EVP_CIPHER_CTX_free(c);
	assert_int_equal(n1 + n2, (int)sizeof(material));
	assert_memory_equal(plain, material, sizeof(material));
	/* and our own unwrap, plus twins: wrong enc (hash), wrong key, truncated, unknown enc */
	_cleanup_secret_ struct cvm_secret *m = NULL;
	assert_int_equal(cvm_rsa_aes_key_unwrap(pk, "CKM_RSA_AES_KEY_WRAP", w.data, w.len, &m, &err), 0);
	assert_true(cvm_secret_eq(m, material, sizeof(material)));
	struct cvm_secret *bad = NULL;
	assert_int_equal(cvm_rsa_aes_key_unwrap(pk, "RSA_AES_KEY_WRAP_256", w.data, w.len, &bad, &err), -EBADMSG);
	assert_int_equal(cvm_rsa_aes_key_unwrap(cvm_key_pkey(other), "CKM_RSA_AES_KEY_WRAP", w.data, w.len, &bad, &err), -EBADMSG);
	assert_int_equal(cvm_rsa_aes_key_unwrap(pk, "CKM_RSA_AES_KEY_WRAP", w.data, 260, &bad, &err), -EINVAL);
	assert_int_equal(cvm_rsa_aes_key_unwrap(pk, "CKM_RSA_AES_KEY_WRAP", w.data, w.len - 8, &bad, &err), -EBADMSG);
	assert_int_equal(cvm_rsa_aes_key_wrap(pk, "RSA_AES_KEY_WRAP_512", material, 32, &w, &err), -ENOTSUP);
	assert_null(bad);
	for (int i = 0; i < 2; i++) {
		const char *enc = i ? "RSA_AES_KEY_WRAP_384" : "RSA_AES_KEY_WRAP_256";
		_cleanup_buf_ struct cvm_buf w2 = { 0 };
		_cleanup_secret_ struct cvm_secret *m2 = NULL;
		assert_int_equal(cvm_rsa_aes_key_wrap(pk, enc, material, 32, &w2, &err), 0);
		assert_int_equal(cvm_rsa_aes_key_unwrap(pk, enc, w2.data, w2.len, &m2, &err), 0);
		assert_true(cvm_secret_eq(m2, material, 32));
		assert_int_equal(cvm_rsa_aes_key_unwrap(pk, "CKM_RSA_AES_KEY_WRAP", w2.data, w2.len, &bad, &err), -EBADMSG);
	}
}

static void free_shares(struct cvm_secret **s, unsigned n)
{
	for (unsigned i = 0; i < n; i++)
		cvm_secret_free(s[i]);
}

static void test_shamir(void **state)
{
	(void)state;
	struct cvm_err err = { 0 };
	_cleanup_secret_ struct cvm_secret *sec = cvm_secret_random(32);
	struct cvm_secret *sh[5] = { 0 };
	assert_int_equal(cvm_shamir_split(sec, 3, 5, sh, &err), 0);
	for (unsigned i = 0; i < 5; i++) {
		assert_int_equal(sh[i]->len, 33);
		assert_int_equal(sh[i]->data[0], i + 1);
	}
	/* every 3-subset recovers the secret */
	for (unsigned a = 0; a < 5; a++)
		for (unsigned b = a + 1; b < 5; b++)
			for (unsigned c = b + 1; c < 5; c++) {
				struct cvm_secret *sub[3] = { sh[c], sh[a], sh[b] };
				_cleanup_secret_ struct cvm_secret *out = NULL;
				assert_int_equal(cvm_shamir_combine(sub, 3, &out, &err), 0);
				assert_true(cvm_secret_eq(out, sec->data, sec->len));
			}
	/* all 5 also work */
	_cleanup_secret_ struct cvm_secret *all = NULL;
	assert_int_equal(cvm_shamir_combine(sh, 5, &all, &err), 0);
	assert_true(cvm_secret_eq(all, sec->data, sec->len));
	/* fewer than m shares: documented to give a wrong secret, not an error */
	_cleanup_secret_ struct cvm_secret *two = NULL;
	assert_int_equal(cvm_shamir_combine(sh, 2, &two, &err), 0);
	assert_false(cvm_secret_eq(two, sec->data, sec->len));
	/* duplicate share, mismatched length, x = 0, too few */
	struct cvm_secret *dup[3] = { sh[0], sh[1], sh[0] };
	struct cvm_secret *bad = NULL;
	assert_int_equal(cvm_shamir_combine(dup, 3, &bad, &err), -EINVAL);
	assert_non_null(strstr(err.msg, "duplicate"));
	_cleanup_secret_ struct cvm_secret *shortsh = cvm_secret_from(sh[2]->data, 20);
	struct cvm_secret *mis[3] = { sh[0], sh[1], shortsh };
	assert_int_equal(cvm_shamir_combine(mis, 3, &bad, &err), -EINVAL);
	_cleanup_secret_ struct cvm_secret *zero = cvm_secret_from(sh[2]->data, 33);
	zero->data[0] = 0;
	struct cvm_secret *z[3] = { sh[0], sh[1], zero };
	assert_int_equal(cvm_shamir_combine(z, 3, &bad, &err), -EINVAL);
	assert_int_equal(cvm_shamir_combine(sh, 1, &bad, &err), -EINVAL);
	assert_null(bad);
	free_shares(sh, 5);
	/* parameter checks */
	struct cvm_secret *sh2[3] = { 0 };
	assert_int_equal(cvm_shamir_split(sec, 1, 3, sh2, &err), -EINVAL);
	assert_int_equal(cvm_shamir_split(sec, 4, 3, sh2, &err), -EINVAL);
	assert_null(sh2[0]);
	/* Independent check of the field arithmetic: with m = 2, f(x) = s ^ c*x, so y1 = s ^ c
	 * and y2 = s ^ xtime(c); recover c by brute force from y1 ^ y2 and compare s. */
	assert_int_equal(cvm_shamir_split(sec, 2, 2, sh2, &err), 0);
	for (size_t j = 0; j < 32; j++) {
		uint8_t y1 = sh2[0]->data[1 + j], y2 = sh2[1]->data[1 + j];
		/* f(x) = s + c x: y1 = s ^ c, y2 = s ^ 2c (xtime). Recover c from y1 ^ y2 = c ^ 2c = 3c. */
		uint8_t c3 = y1 ^ y2, c = 0;
		for (unsigned t = 0; t < 256; t++) {
			uint8_t tt = (uint8_t)t, two_t = (uint8_t)((tt << 1) ^ ((tt & 0x80) ? 0x1b : 0));
			if ((uint8_t)(tt ^ two_t) == c3)
				c = tt;
		}
		assert_int_equal((uint8_t)(y1 ^ c), sec->data[j]);
	}
	free_shares(sh2, 2);
}

static void test_x509_and_pem(void **state)
{
	(void)state;
	struct cvm_err err = { 0 };
	_cleanup_key_ struct cvm_key *k = NULL;
	assert_int_equal(cvm_key_generate_ec("P-256", &k, &err), 0);
	const char *dns[] = { "hsm.local", "localhost", NULL };
	const char *ips[] = { "127.0.0.1", "::1", NULL };
	X509 *x = NULL;
	assert_int_equal(cvm_x509_self_signed(k, "hsm.local", dns, ips, 30, &x, &err), 0);
	assert_int_equal(X509_verify(x, cvm_key_pkey(k)), 1);
	assert_int_equal(X509_check_host(x, "localhost", 0, 0, NULL), 1);
	assert_int_equal(X509_check_host(x, "evil.example", 0, 0, NULL), 0);
	assert_int_equal(X509_check_ip_asc(x, "::1", 0), 1);
	char fp[65];
	assert_int_equal(cvm_x509_sha256_fingerprint(x, fp, &err), 0);
	assert_int_equal(strlen(fp), 64);
	_cleanup_free_ char *pem = NULL;
	assert_int_equal(cvm_x509_to_pem(x, &pem, &err), 0);
	assert_true(cvm_str_startswith(pem, "-----BEGIN CERTIFICATE-----"));
	/* key from certificate PEM equals the key */
	_cleanup_key_ struct cvm_key *fromcert = NULL;
	assert_int_equal(cvm_key_from_pem(pem, strlen(pem), &fromcert, &err), 0);
	assert_false(cvm_key_has_private(fromcert));
	assert_int_equal(EVP_PKEY_eq(cvm_key_pkey(fromcert), cvm_key_pkey(k)), 1);
	X509_free(x);
	/* failure twins */
	assert_int_equal(cvm_x509_self_signed(k, "hsm.local", NULL, (const char *[]){ "300.1.1.1", NULL }, 30, &x, &err), -EINVAL);
	assert_int_equal(cvm_x509_self_signed(k, "", NULL, NULL, 30, &x, &err), -EINVAL);
	assert_int_equal(cvm_x509_self_signed(fromcert, "a", NULL, NULL, 30, &x, &err), -EINVAL);

	_cleanup_free_ char *priv = NULL, *pub = NULL;
	assert_int_equal(cvm_key_to_pem(k, true, &priv, &err), 0);
	assert_true(cvm_str_startswith(priv, "-----BEGIN PRIVATE KEY-----"));
	assert_int_equal(cvm_key_to_pem(k, false, &pub, &err), 0);
	assert_true(cvm_str_startswith(pub, "-----BEGIN PUBLIC KEY-----"));
	_cleanup_key_ struct cvm_key *k2 = NULL, *k3 = NULL;
	assert_int_equal(cvm_key_from_pem(priv, strlen(priv), &k2, &err), 0);
	assert_true(cvm_key_has_private(k2));
	assert_string_equal(cvm_key_curve(k2), "P-256");
	assert_int_equal(cvm_key_from_pem(pub, strlen(pub), &k3, &err), 0);
	assert_false(cvm_key_has_private(k3));
	struct cvm_key *bad = NULL;
	assert_int_equal(cvm_key_from_pem(pub, 40, &bad, &err), -EINVAL);
	const char *junk = "-----BEGIN PUBLIC KEY-----\nAAAA\n-----END PUBLIC KEY-----\n";
	assert_int_equal(cvm_key_from_pem(junk, strlen(junk), &bad, &err), -EINVAL);
	const char *enc = "-----BEGIN ENCRYPTED PRIVATE KEY-----\nAAAA\n-----END ENCRYPTED PRIVATE KEY-----\n";
	assert_int_equal(cvm_key_from_pem(enc, strlen(enc), &bad, &err), -EINVAL);
	assert_null(bad);
	/* `openssl ecparam -genkey` output: an EC PARAMETERS block, then a SEC1 private key */
	const char *sec1 = "-----BEGIN EC PARAMETERS-----\nBggqhkjOPQMBBw==\n-----END EC PARAMETERS-----\n"
			   "-----BEGIN EC PRIVATE KEY-----\n"
			   "MHcCAQEEIDW0cM5QkgcO5RGCXB8RI5bCsRLtiRUHI5X26Prt+HtOoAoGCCqGSM49\n"
			   "AwEHoUQDQgAEG/pm34Be5dQ585QaVjne17qlRT6OXPJDvYDyQiHjGJ9Y0sJZalu1\n"
			   "zppvCwDjG9LWGwHSp8EicnSl/ozaAWi+iA==\n"
			   "-----END EC PRIVATE KEY-----\n";
	_cleanup_key_ struct cvm_key *k4 = NULL;
	assert_int_equal(cvm_key_from_pem(sec1, strlen(sec1), &k4, &err), 0);
	assert_true(cvm_key_has_private(k4));
	assert_string_equal(cvm_key_curve(k4), "P-256");
	/* twin: only the parameters block, no key */
	assert_int_equal(cvm_key_from_pem(sec1, 60, &bad, &err), -EINVAL);
	assert_null(bad);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_digest_hmac_hkdf),
		cmocka_unit_test(test_gcm),
		cmocka_unit_test(test_seal),
		cmocka_unit_test(test_kw_rfc3394),
		cmocka_unit_test(test_kwp_rfc5649),
		cmocka_unit_test(test_oaep_and_rsa_aes_key_wrap),
		cmocka_unit_test(test_shamir),
		cmocka_unit_test(test_x509_and_pem),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
