/* SPDX-License-Identifier: Apache-2.0 */
/* AES-KW / AES-KWP: randomized cross-check of cvm_aes_kw_wrap/unwrap against OpenSSL's
 * EVP_aes_*_wrap(_pad) ciphers for every KEK size and many lengths (both directions), and the
 * RFC 5649 integrity checks (AIV, MLI range, zero padding) each with its accepted twin. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <string.h>
#include <cmocka.h>

#include <opencvm/crypto.h>

#include <openssl/evp.h>
#include <openssl/rand.h>

static const EVP_CIPHER *ossl_wrap(size_t klen, bool pad)
{
	switch (klen) {
	case 16: return pad ? EVP_aes_128_wrap_pad() : EVP_aes_128_wrap();
	case 24: return pad ? EVP_aes_192_wrap_pad() : EVP_aes_192_wrap();
	default: return pad ? EVP_aes_256_wrap_pad() : EVP_aes_256_wrap();
	}
}

/* OpenSSL's key wrap of in under kek (optionally with an explicit 8-byte IV); returns the size. */
static size_t ossl_kw(bool enc, const uint8_t *kek, size_t klen, bool pad, const uint8_t *iv,
		      const uint8_t *in, size_t len, uint8_t *out)
{
	EVP_CIPHER_CTX *ctx = EVP_CIPHER_CTX_new();
	assert_non_null(ctx);
	EVP_CIPHER_CTX_set_flags(ctx, EVP_CIPHER_CTX_FLAG_WRAP_ALLOW);
	int n = 0, m = 0;
	assert_int_equal(EVP_CipherInit_ex(ctx, ossl_wrap(klen, pad), NULL, kek, iv, enc), 1);
	assert_int_equal(EVP_CipherUpdate(ctx, out, &n, in, (int)len), 1);
	assert_int_equal(EVP_CipherFinal_ex(ctx, out + n, &m), 1);
	EVP_CIPHER_CTX_free(ctx);
	return (size_t)n + (size_t)m;
}

static void check_len(const uint8_t *kek, size_t klen, bool pad, size_t len)
{
	struct cvm_err err = { 0 };
	uint8_t in[2100], ref[2200];
	assert_int_equal(RAND_bytes(in, (int)len), 1);
	size_t rl = ossl_kw(1, kek, klen, pad, NULL, in, len, ref);

	struct cvm_buf out = { 0 };
	assert_int_equal(cvm_aes_kw_wrap(kek, klen, pad, in, len, &out, &err), 0);
	assert_int_equal(out.len, rl);
	assert_memory_equal(out.data, ref, rl);

	struct cvm_secret *back = NULL;
	assert_int_equal(cvm_aes_kw_unwrap(kek, klen, pad, ref, rl, &back, &err), 0);
	assert_int_equal(back->len, len);
	assert_memory_equal(back->data, in, len);
	cvm_secret_free(back);

	/* Failure twin: one flipped bit anywhere is refused. */
	size_t bit = (size_t)in[0] * 8 % (rl * 8);
	out.data[bit / 8] ^= (uint8_t)(1u << (bit % 8));
	back = NULL;
	assert_int_equal(cvm_aes_kw_unwrap(kek, klen, pad, out.data, out.len, &back, &err), -EBADMSG);
	assert_null(back);
	cvm_buf_free(&out);
}

static void test_kw_cross_openssl(void **state)
{
	(void)state;
	static const size_t klens[] = { 16, 24, 32 };
	uint8_t kek[32];
	for (size_t k = 0; k < 3; k++) {
		assert_int_equal(RAND_bytes(kek, sizeof(kek)), 1);
		for (size_t len = 1; len <= 300; len++) {
			check_len(kek, klens[k], true, len);
			if (len >= 16 && len % 8 == 0)
				check_len(kek, klens[k], false, len);
		}
		for (int i = 0; i < 60; i++) {
			uint8_t r[2];
			assert_int_equal(RAND_bytes(r, 2), 1);
			size_t len = 301 + ((size_t)r[0] << 8 | r[1]) % 1750;
			check_len(kek, klens[k], true, len);
			check_len(kek, klens[k], false, len / 8 * 8);
		}
	}
}

/* Build a KWP-shaped ciphertext with a chosen AIV and padded plaintext (plen multiple of 8). */
static size_t kwp_forge(const uint8_t kek[16], uint32_t mli, const uint8_t *p, size_t plen,
			uint8_t *out)
{
	uint8_t iv[8] = { 0xa6, 0x59, 0x59, 0xa6, (uint8_t)(mli >> 24), (uint8_t)(mli >> 16),
			  (uint8_t)(mli >> 8), (uint8_t)mli };
	if (plen > 8)
		return ossl_kw(1, kek, 16, false, iv, p, plen, out);
	EVP_CIPHER_CTX *ctx = EVP_CIPHER_CTX_new();
	uint8_t blk[16];
	int n = 0;
	memcpy(blk, iv, 8);
	memcpy(blk + 8, p, 8);
	assert_int_equal(EVP_EncryptInit_ex(ctx, EVP_aes_128_ecb(), NULL, kek, NULL), 1);
	EVP_CIPHER_CTX_set_padding(ctx, 0);
	assert_int_equal(EVP_EncryptUpdate(ctx, out, &n, blk, 16), 1);
	EVP_CIPHER_CTX_free(ctx);
	return 16;
}

static int kwp_open(const uint8_t kek[16], const uint8_t *c, size_t clen, size_t *outlen)
{
	struct cvm_err err = { 0 };
	struct cvm_secret *s = NULL;
	int r = cvm_aes_kw_unwrap(kek, 16, true, c, clen, &s, &err);
	if (s)
		*outlen = s->len;
	cvm_secret_free(s);
	return r;
}

static void test_kwp_checks(void **state)
{
	(void)state;
	uint8_t kek[16], c[64], p[24] = { 0 };
	size_t n = 0;
	assert_int_equal(RAND_bytes(kek, sizeof(kek)), 1);
	memset(p, 0x5a, 20);
	for (size_t plen = 8; plen <= 24; plen += 16) {
		size_t dlen = plen - 4; /* 4 data bytes in the last block, 4 zero pad bytes */
		/* Accepted: MLI within the last block and zero padding. */
		memset(p + dlen, 0, 4);
		size_t cl = kwp_forge(kek, (uint32_t)dlen, p, plen, c);
		assert_int_equal(kwp_open(kek, c, cl, &n), 0);
		assert_int_equal(n, dlen);
		/* Refused: MLI too large, MLI a whole block short, non-zero padding, bad AIV. */
		cl = kwp_forge(kek, (uint32_t)plen + 1, p, plen, c);
		assert_int_equal(kwp_open(kek, c, cl, &n), -EBADMSG);
		cl = kwp_forge(kek, (uint32_t)plen - 8, p, plen, c);
		assert_int_equal(kwp_open(kek, c, cl, &n), -EBADMSG);
		p[plen - 1] = 1;
		cl = kwp_forge(kek, (uint32_t)dlen, p, plen, c);
		assert_int_equal(kwp_open(kek, c, cl, &n), -EBADMSG);
		p[plen - 1] = 0;
		/* An RFC 3394 ciphertext (IV A6A6...) is not a valid RFC 5649 one. */
		if (plen >= 16) {
			cl = ossl_kw(1, kek, 16, false, NULL, p, plen, c);
			assert_int_equal(kwp_open(kek, c, cl, &n), -EBADMSG);
		}
	}
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_kw_cross_openssl),
		cmocka_unit_test(test_kwp_checks),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
