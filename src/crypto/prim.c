/* SPDX-License-Identifier: Apache-2.0 */
/* Primitives: digests, HMAC, HKDF, AES-GCM, sealed blobs, AES-KW(P), RSA-OAEP and the
 * CKM_RSA_AES_KEY_WRAP construction used by Secure Key Release. */
#include "crypto-internal.h"

#include <limits.h>
#include <openssl/core_names.h>
#include <openssl/err.h>
#include <openssl/kdf.h>
#include <openssl/rsa.h>
#include <string.h>

static const EVP_MD *md_by_name(const char *md)
{
	static const char *const ok[] = { "SHA1", "SHA256", "SHA384", "SHA512" };
	for (size_t i = 0; md && i < CVM_ARRAY_SIZE(ok); i++)
		if (strcmp(md, ok[i]) == 0)
			return EVP_get_digestbyname(md);
	return NULL;
}

int cvm_digest(const char *md, const void *data, size_t len, uint8_t *out, size_t *outlen,
	       struct cvm_err *err)
{
	const EVP_MD *m = md_by_name(md);
	if (!m)
		return cvm_err_set(err, ENOTSUP, "BadParameter",
				   "digest: must be SHA1, SHA256, SHA384 or SHA512");
	unsigned int n = 0;
	if (EVP_Digest(data, len, out, &n, m, NULL) != 1)
		return cvm_err_openssl(err, EIO, "digest");
	*outlen = n;
	return 0;
}

int cvm_hmac_sha256(const void *key, size_t klen, const void *data, size_t len, uint8_t out[32],
		    struct cvm_err *err)
{
	size_t n = 0;
	/* EVP_Q_mac rejects a NULL key even when klen is 0; HMAC allows empty keys. */
	static const uint8_t empty[1];
	if (!EVP_Q_mac(NULL, "HMAC", NULL, "SHA256", NULL, klen ? key : empty, klen, data, len, out,
		       32, &n) ||
	    n != 32)
		return cvm_err_openssl(err, EIO, "HMAC-SHA256");
	return 0;
}

int cvm_hkdf_sha256(const void *ikm, size_t ikm_len, const void *salt, size_t salt_len,
		    const void *info, size_t info_len, uint8_t *out, size_t out_len,
		    struct cvm_err *err)
{
	if (out_len == 0 || out_len > 255 * 32)
		return cvm_err_badparam(err, "hkdf: output length must be 1..8160 bytes");
	EVP_KDF *kdf = EVP_KDF_fetch(NULL, "HKDF", NULL);
	EVP_KDF_CTX *ctx = kdf ? EVP_KDF_CTX_new(kdf) : NULL;
	EVP_KDF_free(kdf);
	if (!ctx)
		return cvm_err_openssl(err, EIO, "HKDF setup");
	static uint8_t empty[1];
	OSSL_PARAM params[5], *p = params;
	*p++ = OSSL_PARAM_construct_utf8_string(OSSL_KDF_PARAM_DIGEST, (char *)"SHA256", 0);
	*p++ = OSSL_PARAM_construct_octet_string(OSSL_KDF_PARAM_KEY, ikm_len ? (void *)ikm : empty,
						 ikm_len);
	if (salt_len)
		*p++ = OSSL_PARAM_construct_octet_string(OSSL_KDF_PARAM_SALT, (void *)salt, salt_len);
	if (info_len)
		*p++ = OSSL_PARAM_construct_octet_string(OSSL_KDF_PARAM_INFO, (void *)info, info_len);
	*p = OSSL_PARAM_construct_end();
	int r = 0;
	if (EVP_KDF_derive(ctx, out, out_len, params) != 1)
		r = cvm_err_openssl(err, EIO, "HKDF");
	EVP_KDF_CTX_free(ctx);
	return r;
}

static const EVP_CIPHER *gcm_cipher(size_t klen)
{
	switch (klen) {
	case 16: return EVP_aes_128_gcm();
	case 24: return EVP_aes_192_gcm();
	case 32: return EVP_aes_256_gcm();
	default: return NULL;
	}
}

/* One GCM pass; enc selects direction. tag is written (enc) or checked (dec). */
static int gcm(bool enc, const uint8_t *key, size_t klen, const uint8_t iv[12], const void *aad,
	       size_t aad_len, const uint8_t *in, size_t len, uint8_t *out, uint8_t tag[16],
	       struct cvm_err *err)
{
	const EVP_CIPHER *c = gcm_cipher(klen);
	if (!c)
		return cvm_err_badparam(err, "key: AES-GCM key must be 16, 24 or 32 bytes, got %zu",
					klen);
	if (len > INT_MAX || aad_len > INT_MAX)
		return cvm_err_set(err, E2BIG, "BadParameter", "value: too large for AES-GCM");
	EVP_CIPHER_CTX *ctx = EVP_CIPHER_CTX_new();
	if (!ctx)
		return cvm_err_nomem(err);
	/* GCM is a stream mode: Final emits no bytes, so it gets a scratch buffer rather than
	 * a pointer past out (which may be NULL for an empty message). */
	uint8_t fin[16];
	int n = 0, r = 0;
	if (EVP_CipherInit_ex(ctx, c, NULL, key, iv, enc ? 1 : 0) != 1 ||
	    (aad_len && EVP_CipherUpdate(ctx, NULL, &n, aad, (int)aad_len) != 1) ||
	    (len && EVP_CipherUpdate(ctx, out, &n, in, (int)len) != 1)) {
		r = cvm_err_openssl(err, EIO, "AES-GCM");
		goto out;
	}
	if (enc) {
		if (EVP_CipherFinal_ex(ctx, fin, &n) != 1 ||
		    EVP_CIPHER_CTX_ctrl(ctx, EVP_CTRL_GCM_GET_TAG, 16, tag) != 1)
			r = cvm_err_openssl(err, EIO, "AES-GCM");
	} else {
		if (EVP_CIPHER_CTX_ctrl(ctx, EVP_CTRL_GCM_SET_TAG, 16, tag) != 1) {
			r = cvm_err_openssl(err, EIO, "AES-GCM");
		} else if (EVP_CipherFinal_ex(ctx, fin, &n) != 1) {
			ERR_clear_error();
			if (len)
				OPENSSL_cleanse(out, len);
			r = cvm_err_set(err, EBADMSG, "BadParameter",
					"tag: authentication failed (wrong key, iv, aad or tag)");
		}
	}
out:
	EVP_CIPHER_CTX_free(ctx);
	return r;
}

int cvm_aes_gcm_seal(const uint8_t *key, size_t klen, const uint8_t iv[12], const void *aad,
		     size_t aad_len, const uint8_t *pt, size_t len, uint8_t *ct, uint8_t tag[16],
		     struct cvm_err *err)
{
	return gcm(true, key, klen, iv, aad, aad_len, pt, len, ct, tag, err);
}

int cvm_aes_gcm_open(const uint8_t *key, size_t klen, const uint8_t iv[12], const void *aad,
		     size_t aad_len, const uint8_t *ct, size_t len, const uint8_t tag[16],
		     uint8_t *pt, struct cvm_err *err)
{
	return gcm(false, key, klen, iv, aad, aad_len, ct, len, pt, (uint8_t *)tag, err);
}

#define SEAL_VERSION 0x01

/* The version byte is authenticated too: aad' = version ‖ caller aad. */
static int seal_aad(const void *aad, size_t aad_len, uint8_t **out, struct cvm_err *err)
{
	if (aad_len > SIZE_MAX - 1)
		return cvm_err_badparam(err, "aad: too large");
	uint8_t *a = malloc(aad_len + 1);
	if (!a)
		return cvm_err_nomem(err);
	a[0] = SEAL_VERSION;
	if (aad_len)
		memcpy(a + 1, aad, aad_len);
	*out = a;
	return 0;
}

int cvm_seal(const struct cvm_secret *key32, const void *aad, size_t aad_len, const uint8_t *pt,
	     size_t len, struct cvm_buf *out, struct cvm_err *err)
{
	if (!key32 || key32->len != 32)
		return cvm_err_badparam(err, "seal: key must be 32 bytes");
	if (len > SIZE_MAX - CVM_SEAL_OVERHEAD - 1)
		return cvm_err_set(err, E2BIG, "BadParameter", "seal: value too large");
	_cleanup_free_ uint8_t *a = NULL;
	int r = seal_aad(aad, aad_len, &a, err);
	if (r < 0)
		return r;
	if (cvm_buf_reserve(out, len + CVM_SEAL_OVERHEAD) < 0)
		return cvm_err_nomem(err);
	uint8_t *p = out->data + out->len;
	p[0] = SEAL_VERSION;
	r = cvm_random(p + 1, 12, err);
	if (r < 0)
		return r;
	r = cvm_aes_gcm_seal(key32->data, 32, p + 1, a, aad_len + 1, pt, len, p + 13, p + 13 + len,
			     err);
	if (r < 0)
		return r;
	out->len += len + CVM_SEAL_OVERHEAD;
	out->data[out->len] = 0;
	return 0;
}

int cvm_unseal(const struct cvm_secret *key32, const void *aad, size_t aad_len,
	       const uint8_t *blob, size_t len, struct cvm_secret **pt, struct cvm_err *err)
{
	if (!key32 || key32->len != 32)
		return cvm_err_badparam(err, "seal: key must be 32 bytes");
	if (len < CVM_SEAL_OVERHEAD)
		return cvm_err_badparam(err, "sealed blob: truncated (%zu bytes, need at least %d)", len,
					CVM_SEAL_OVERHEAD);
	if (blob[0] != SEAL_VERSION)
		return cvm_err_badparam(err, "sealed blob: unknown version %u", blob[0]);
	_cleanup_free_ uint8_t *a = NULL;
	int r = seal_aad(aad, aad_len, &a, err);
	if (r < 0)
		return r;
	size_t ct_len = len - CVM_SEAL_OVERHEAD;
	_cleanup_secret_ struct cvm_secret *s = cvm_secret_new(ct_len);
	if (!s)
		return cvm_err_nomem(err);
	r = cvm_aes_gcm_open(key32->data, 32, blob + 1, a, aad_len + 1, blob + 13, ct_len,
			     blob + 13 + ct_len, s->data, err);
	if (r < 0)
		return r;
	*pt = CVM_TAKE(s);
	return 0;
}

/* AES-KW (RFC 3394) and AES-KWP (RFC 5649) over one AES-ECB context. OpenSSL's wrap ciphers
 * cost a provider round trip per call and run the block cipher through a generic callback; the
 * same 6·n block operations through ECB use AES-NI and keep the bytes identical (the RFC
 * known-answer tests and a cross-check against EVP_aes_*_wrap(_pad) guard that). */
static const uint8_t kw_iv[8] = { 0xa6, 0xa6, 0xa6, 0xa6, 0xa6, 0xa6, 0xa6, 0xa6 };
static const uint8_t kwp_aiv[4] = { 0xa6, 0x59, 0x59, 0xa6 };

static const EVP_CIPHER *kw_ecb(size_t klen)
{
	switch (klen) {
	case 16: return EVP_aes_128_ecb();
	case 24: return EVP_aes_192_ecb();
	case 32: return EVP_aes_256_ecb();
	default: return NULL;
	}
}

static EVP_CIPHER_CTX *kw_ctx(bool enc, const uint8_t *kek, size_t kek_len, struct cvm_err *err)
{
	const EVP_CIPHER *c = kw_ecb(kek_len);
	if (!c) {
		cvm_err_badparam(err, "key: AES key wrap key must be 16, 24 or 32 bytes, got %zu",
				 kek_len);
		return NULL;
	}
	EVP_CIPHER_CTX *ctx = EVP_CIPHER_CTX_new();
	if (!ctx) {
		cvm_err_nomem(err);
		return NULL;
	}
	if (EVP_CipherInit_ex(ctx, c, NULL, kek, NULL, enc ? 1 : 0) != 1 ||
	    EVP_CIPHER_CTX_set_padding(ctx, 0) != 1) {
		EVP_CIPHER_CTX_free(ctx);
		cvm_err_openssl(err, EIO, "AES key wrap setup");
		return NULL;
	}
	return ctx;
}

/* One AES block in place. */
static bool kw_block(EVP_CIPHER_CTX *ctx, uint8_t b[16])
{
	int n = 0;
	return EVP_CipherUpdate(ctx, b, &n, b, 16) == 1 && n == 16;
}

static void kw_xor_t(uint8_t a[8], uint64_t t)
{
	for (int i = 7; i >= 0 && t; i--, t >>= 8)
		a[i] ^= (uint8_t)t;
}

/* RFC 3394 2.2.1 W: a holds the initial value, r the n >= 2 64-bit blocks (wrapped in place). */
static bool kw_forward(EVP_CIPHER_CTX *ctx, uint8_t a[8], uint8_t *r, size_t n)
{
	uint8_t b[16];
	bool ok = true;
	memcpy(b, a, 8);
	for (uint64_t j = 0, t = 1; ok && j < 6; j++)
		for (size_t i = 0; i < n; i++, t++) {
			memcpy(b + 8, r + 8 * i, 8);
			if (!(ok = kw_block(ctx, b)))
				break;
			kw_xor_t(b, t);
			memcpy(r + 8 * i, b + 8, 8);
		}
	memcpy(a, b, 8);
	OPENSSL_cleanse(b, sizeof(b));
	return ok;
}

/* RFC 3394 2.2.2 W^-1: a holds C0, r the n >= 2 blocks (unwrapped in place). */
static bool kw_inverse(EVP_CIPHER_CTX *ctx, uint8_t a[8], uint8_t *r, size_t n)
{
	uint8_t b[16];
	bool ok = true;
	memcpy(b, a, 8);
	for (uint64_t t = 6 * (uint64_t)n; ok && t > 0;)
		for (size_t i = n; i-- > 0; t--) {
			kw_xor_t(b, t);
			memcpy(b + 8, r + 8 * i, 8);
			if (!(ok = kw_block(ctx, b)))
				break;
			memcpy(r + 8 * i, b + 8, 8);
		}
	memcpy(a, b, 8);
	OPENSSL_cleanse(b, sizeof(b));
	return ok;
}

/* Wrap len bytes into out (room for len + 15): *outlen gets the size. */
static int kw_seal(const uint8_t *kek, size_t kek_len, bool pad, const uint8_t *in, size_t len,
		   uint8_t *out, size_t *outlen, struct cvm_err *err)
{
	EVP_CIPHER_CTX *ctx = kw_ctx(true, kek, kek_len, err);
	if (!ctx)
		return -err->errnum;
	size_t plen = pad ? (len + 7) / 8 * 8 : len;
	uint8_t a[8];
	if (pad) {
		memcpy(a, kwp_aiv, 4);
		a[4] = (uint8_t)(len >> 24), a[5] = (uint8_t)(len >> 16);
		a[6] = (uint8_t)(len >> 8), a[7] = (uint8_t)len;
	} else {
		memcpy(a, kw_iv, 8);
	}
	memcpy(out + 8, in, len);
	memset(out + 8 + len, 0, plen - len);
	bool ok;
	if (plen == 8) { /* RFC 5649 4.1: a single block is one ECB encryption of AIV || P */
		memcpy(out, a, 8);
		ok = kw_block(ctx, out);
	} else {
		ok = kw_forward(ctx, a, out + 8, plen / 8);
		memcpy(out, a, 8);
	}
	EVP_CIPHER_CTX_free(ctx);
	if (!ok) {
		OPENSSL_cleanse(out, plen + 8);
		return cvm_err_openssl(err, EIO, "AES key wrap");
	}
	*outlen = plen + 8;
	return 0;
}

/* Unwrap len (multiple of 8, >= 16) bytes into out (room for len): *outlen gets the size. The
 * integrity checks do not branch on secret data before the final verdict. */
static int kw_open(const uint8_t *kek, size_t kek_len, bool pad, const uint8_t *in, size_t len,
		   uint8_t *out, size_t *outlen, struct cvm_err *err)
{
	EVP_CIPHER_CTX *ctx = kw_ctx(false, kek, kek_len, err);
	if (!ctx)
		return -err->errnum;
	size_t n = len / 8 - 1;
	uint8_t a[8];
	bool ok;
	if (n == 1) { /* RFC 5649 4.2: one ECB decryption */
		memcpy(out, in, 16);
		ok = kw_block(ctx, out);
		memcpy(a, out, 8);
		memmove(out, out + 8, 8);
	} else {
		memcpy(a, in, 8);
		memcpy(out, in + 8, len - 8);
		ok = kw_inverse(ctx, a, out, n);
	}
	EVP_CIPHER_CTX_free(ctx);
	if (!ok) {
		OPENSSL_cleanse(out, len);
		return cvm_err_openssl(err, EIO, "AES key unwrap");
	}
	size_t plen = n * 8, mli = plen;
	bool good;
	if (pad) {
		mli = (size_t)a[4] << 24 | (size_t)a[5] << 16 | (size_t)a[6] << 8 | a[7];
		good = CRYPTO_memcmp(a, kwp_aiv, 4) == 0 && mli + 8 > plen && mli <= plen;
		uint8_t z = 0;
		/* Padding must be zero; scan all 7 possible pad bytes so the time does not depend on mli. */
		for (size_t i = plen >= 8 ? plen - 7 : 0; i < plen; i++)
			z |= (uint8_t)(out[i] & (uint8_t)-(uint8_t)(i >= mli));
		good = good && z == 0;
	} else {
		good = n >= 2 && CRYPTO_memcmp(a, kw_iv, 8) == 0;
	}
	OPENSSL_cleanse(a, sizeof(a));
	if (!good) {
		OPENSSL_cleanse(out, len);
		return cvm_err_set(err, EBADMSG, "BadParameter",
				   "value: key unwrap integrity check failed (wrong key or "
				   "corrupted input)");
	}
	*outlen = mli;
	return 0;
}

int cvm_aes_kw_wrap(const uint8_t *kek, size_t kek_len, bool pad, const uint8_t *in, size_t len,
		    struct cvm_buf *out, struct cvm_err *err)
{
	if (pad ? len == 0 : (len < 16 || len % 8 != 0))
		return cvm_err_badparam(err, pad ? "value: key to wrap must not be empty"
						 : "value: key to wrap must be a multiple of 8 bytes, "
						   "at least 16");
	if (len > (1u << 30))
		return cvm_err_set(err, E2BIG, "BadParameter", "value: key to wrap too large");
	if (cvm_buf_reserve(out, len + 16) < 0)
		return cvm_err_nomem(err);
	size_t n = 0;
	int r = kw_seal(kek, kek_len, pad, in, len, out->data + out->len, &n, err);
	if (r < 0)
		return r;
	out->len += n;
	out->data[out->len] = 0;
	return 0;
}

int cvm_aes_kw_unwrap(const uint8_t *kek, size_t kek_len, bool pad, const uint8_t *in, size_t len,
		      struct cvm_secret **out, struct cvm_err *err)
{
	if (len < (pad ? 16u : 24u) || len % 8 != 0)
		return cvm_err_badparam(err, "value: wrapped key must be a multiple of 8 bytes, at "
					     "least %u", pad ? 16u : 24u);
	if (len > (1u << 30) + 16)
		return cvm_err_set(err, E2BIG, "BadParameter", "value: wrapped key too large");
	_cleanup_secret_ struct cvm_secret *s = cvm_secret_new(len);
	if (!s)
		return cvm_err_nomem(err);
	size_t n = 0;
	int r = kw_open(kek, kek_len, pad, in, len, s->data, &n, err);
	if (r < 0)
		return r;
	s->len = n;
	*out = CVM_TAKE(s);
	return 0;
}

static int oaep_ctx(EVP_PKEY *key, bool enc, const char *md, EVP_PKEY_CTX **out,
		    struct cvm_err *err)
{
	const EVP_MD *m = md_by_name(md);
	if (!m)
		return cvm_err_set(err, ENOTSUP, "BadParameter",
				   "RSA-OAEP: hash must be SHA1, SHA256, SHA384 or SHA512");
	if (!key || !EVP_PKEY_is_a(key, "RSA"))
		return cvm_err_badparam(err, "RSA-OAEP: key is not an RSA key");
	EVP_PKEY_CTX *ctx = EVP_PKEY_CTX_new_from_pkey(NULL, key, NULL);
	if (!ctx)
		return cvm_err_nomem(err);
	if ((enc ? EVP_PKEY_encrypt_init(ctx) : EVP_PKEY_decrypt_init(ctx)) != 1 ||
	    EVP_PKEY_CTX_set_rsa_padding(ctx, RSA_PKCS1_OAEP_PADDING) != 1 ||
	    EVP_PKEY_CTX_set_rsa_oaep_md(ctx, m) != 1 || EVP_PKEY_CTX_set_rsa_mgf1_md(ctx, m) != 1) {
		EVP_PKEY_CTX_free(ctx);
		return cvm_err_openssl(err, EINVAL, "RSA-OAEP setup");
	}
	*out = ctx;
	return 0;
}

int cvm_rsa_oaep_encrypt(EVP_PKEY *pub, const char *md, const uint8_t *in, size_t len,
			 struct cvm_buf *out, struct cvm_err *err)
{
	EVP_PKEY_CTX *ctx = NULL;
	int r = oaep_ctx(pub, true, md, &ctx, err);
	if (r < 0)
		return r;
	size_t n = 0, hlen = (size_t)EVP_MD_get_size(md_by_name(md));
	size_t k = (size_t)EVP_PKEY_get_size(pub);
	/* RFC 8017 7.1.1: mLen <= k - 2hLen - 2 */
	if (k < 2 * hlen + 2 || len > k - 2 * hlen - 2) {
		r = cvm_err_badparam(err, "value: too long for RSA-OAEP with this key (max %zu bytes)",
				     k >= 2 * hlen + 2 ? k - 2 * hlen - 2 : 0);
	} else if (EVP_PKEY_encrypt(ctx, NULL, &n, in, len) != 1 || cvm_buf_reserve(out, n) < 0) {
		r = cvm_err_openssl(err, EIO, "RSA-OAEP encrypt");
	} else if (EVP_PKEY_encrypt(ctx, out->data + out->len, &n, in, len) != 1) {
		r = cvm_err_openssl(err, EIO, "RSA-OAEP encrypt");
	} else {
		out->len += n;
		out->data[out->len] = 0;
	}
	EVP_PKEY_CTX_free(ctx);
	return r;
}

int cvm_rsa_oaep_decrypt(EVP_PKEY *priv, const char *md, const uint8_t *in, size_t len,
			 struct cvm_secret **out, struct cvm_err *err)
{
	EVP_PKEY_CTX *ctx = NULL;
	int r = oaep_ctx(priv, false, md, &ctx, err);
	if (r < 0)
		return r;
	size_t k = (size_t)EVP_PKEY_get_size(priv), n = k;
	struct cvm_secret *s = NULL;
	if (len != k) {
		r = cvm_err_badparam(err, "value: RSA ciphertext must be %zu bytes, got %zu", k, len);
	} else if (!(s = cvm_secret_new(k))) {
		r = cvm_err_nomem(err);
	} else if (EVP_PKEY_decrypt(ctx, s->data, &n, in, len) != 1) {
		ERR_clear_error();
		r = cvm_err_set(err, EBADMSG, "BadParameter",
				"value: RSA-OAEP decryption failed (wrong key or corrupted input)");
	} else {
		s->len = n;
		*out = s;
		s = NULL;
	}
	cvm_secret_free(s);
	EVP_PKEY_CTX_free(ctx);
	return r;
}

static const char *rsa_aes_md(const char *enc)
{
	if (!enc)
		return NULL;
	if (strcmp(enc, "CKM_RSA_AES_KEY_WRAP") == 0)
		return "SHA1";
	if (strcmp(enc, "RSA_AES_KEY_WRAP_256") == 0)
		return "SHA256";
	if (strcmp(enc, "RSA_AES_KEY_WRAP_384") == 0)
		return "SHA384";
	return NULL;
}

int cvm_rsa_aes_key_wrap(EVP_PKEY *pub, const char *enc, const uint8_t *material, size_t len,
			 struct cvm_buf *out, struct cvm_err *err)
{
	const char *md = rsa_aes_md(enc);
	if (!md)
		return cvm_err_set(err, ENOTSUP, "BadParameter",
				   "enc: must be CKM_RSA_AES_KEY_WRAP, RSA_AES_KEY_WRAP_256 or "
				   "RSA_AES_KEY_WRAP_384");
	_cleanup_secret_ struct cvm_secret *tk = cvm_secret_new(32);
	if (!tk)
		return cvm_err_nomem(err);
	int r = cvm_random(tk->data, tk->len, err);
	if (r < 0)
		return r;
	size_t start = out->len;
	r = cvm_rsa_oaep_encrypt(pub, md, tk->data, tk->len, out, err);
	if (r >= 0)
		r = cvm_aes_kw_wrap(tk->data, tk->len, true, material, len, out, err);
	if (r < 0)
		out->len = start;
	return r;
}

int cvm_rsa_aes_key_unwrap(EVP_PKEY *priv, const char *enc, const uint8_t *in, size_t len,
			   struct cvm_secret **out, struct cvm_err *err)
{
	const char *md = rsa_aes_md(enc);
	if (!md)
		return cvm_err_set(err, ENOTSUP, "BadParameter",
				   "enc: must be CKM_RSA_AES_KEY_WRAP, RSA_AES_KEY_WRAP_256 or "
				   "RSA_AES_KEY_WRAP_384");
	if (!priv || !EVP_PKEY_is_a(priv, "RSA"))
		return cvm_err_badparam(err, "key: not an RSA key");
	size_t k = (size_t)EVP_PKEY_get_size(priv);
	if (len < k + 16)
		return cvm_err_badparam(err, "ciphertext: truncated (%zu bytes, need more than %zu)",
					len, k + 16);
	_cleanup_secret_ struct cvm_secret *tk = NULL;
	int r = cvm_rsa_oaep_decrypt(priv, md, in, k, &tk, err);
	if (r < 0)
		return r;
	if (tk->len != 32)
		return cvm_err_set(err, EBADMSG, "BadParameter",
				   "ciphertext: transfer key is %zu bytes, expected 32", tk->len);
	return cvm_aes_kw_unwrap(tk->data, tk->len, true, in + k, len - k, out, err);
}
