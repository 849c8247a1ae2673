/* SPDX-License-Identifier: Apache-2.0 */
/* Key Vault key operations: encrypt/decrypt/wrapKey/unwrapKey and sign/verify of digests. */
#include "crypto-internal.h"

#include <limits.h>
#include <openssl/core_names.h>
#include <openssl/err.h>
#include <openssl/rsa.h>
#include <string.h>

/* ---- encryption algorithms ----------------------------------------------------------------- */

enum enc_kind { K_OAEP, K_OAEP256, K_RSA15, K_GCM, K_CBC, K_CBCPAD, K_KW, K_KWP };
enum { OP_ENC = 1, OP_WRAP = 2 };

struct enc_alg {
	const char *name;
	enum enc_kind kind;
	size_t klen;      /* required oct key length, 0 = any AES size */
	unsigned ops;     /* which operations accept it */
};

static const struct enc_alg enc_algs[] = {
	{ "RSA-OAEP", K_OAEP, 0, OP_ENC | OP_WRAP },
	{ "RSA-OAEP-256", K_OAEP256, 0, OP_ENC | OP_WRAP },
	{ "RSA1_5", K_RSA15, 0, OP_ENC | OP_WRAP },
	{ "A128GCM", K_GCM, 16, OP_ENC },
	{ "A192GCM", K_GCM, 24, OP_ENC },
	{ "A256GCM", K_GCM, 32, OP_ENC },
	{ "A128CBC", K_CBC, 16, OP_ENC },
	{ "A192CBC", K_CBC, 24, OP_ENC },
	{ "A256CBC", K_CBC, 32, OP_ENC },
	{ "A128CBCPAD", K_CBCPAD, 16, OP_ENC },
	{ "A192CBCPAD", K_CBCPAD, 24, OP_ENC },
	{ "A256CBCPAD", K_CBCPAD, 32, OP_ENC },
	{ "A128KW", K_KW, 16, OP_WRAP },
	{ "A192KW", K_KW, 24, OP_WRAP },
	{ "A256KW", K_KW, 32, OP_WRAP },
	{ "CKM_AES_KEY_WRAP", K_KW, 0, OP_WRAP },
	{ "CKM_AES_KEY_WRAP_PAD", K_KWP, 0, OP_WRAP },
};

static bool kind_is_rsa(enum enc_kind k) { return k == K_OAEP || k == K_OAEP256 || k == K_RSA15; }

/* Resolve alg for an operation on key k and check that they fit together. */
static int enc_alg_for(const struct cvm_key *k, const char *alg, unsigned op, bool need_private,
		       const struct enc_alg **out, struct cvm_err *err)
{
	const char *opname = op == OP_ENC ? "encrypt/decrypt" : "wrapKey/unwrapKey";
	const struct enc_alg *a = NULL;
	for (size_t i = 0; alg && i < CVM_ARRAY_SIZE(enc_algs); i++)
		if (strcmp(enc_algs[i].name, alg) == 0)
			a = &enc_algs[i];
	if (!a)
		return cvm_err_set(err, ENOTSUP, "BadParameter", "alg: unsupported algorithm '%.64s'",
				   alg ? alg : "");
	if (!(a->ops & op))
		return cvm_err_badparam(err, "alg: %s is not valid for %s", a->name, opname);
	if (kind_is_rsa(a->kind)) {
		if (k->kty != CVM_KTY_RSA)
			return cvm_err_badparam(err, "alg: %s requires an RSA key", a->name);
		if (need_private && !k->has_private)
			return cvm_err_badparam(err, "alg: %s needs the private key, this key is "
						     "public only", a->name);
	} else {
		if (k->kty != CVM_KTY_OCT)
			return cvm_err_badparam(err, "alg: %s requires an oct (AES) key", a->name);
		if (a->klen && k->oct->len != a->klen)
			return cvm_err_badparam(err, "alg: %s requires a %zu-bit key, this key has %zu "
						     "bits", a->name, a->klen * 8, k->oct->len * 8);
	}
	*out = a;
	return 0;
}

static int rsa15(const struct cvm_key *k, bool enc, const uint8_t *in, size_t len,
		 struct cvm_buf *out, struct cvm_err *err)
{
	size_t ksz = (size_t)EVP_PKEY_get_size(k->pkey), n = ksz;
	if (enc ? len > ksz - 11 : len != ksz)
		return cvm_err_badparam(err, enc ? "value: too long for RSA1_5 with this key"
						 : "value: RSA ciphertext has the wrong length");
	EVP_PKEY_CTX *ctx = EVP_PKEY_CTX_new_from_pkey(NULL, k->pkey, NULL);
	if (!ctx)
		return cvm_err_nomem(err);
	int r = 0;
	if ((enc ? EVP_PKEY_encrypt_init(ctx) : EVP_PKEY_decrypt_init(ctx)) != 1 ||
	    EVP_PKEY_CTX_set_rsa_padding(ctx, RSA_PKCS1_PADDING) != 1 ||
	    cvm_buf_reserve(out, ksz) < 0) {
		r = cvm_err_openssl(err, EIO, "RSA1_5 setup");
	} else if ((enc ? EVP_PKEY_encrypt(ctx, out->data + out->len, &n, in, len)
			: EVP_PKEY_decrypt(ctx, out->data + out->len, &n, in, len)) != 1) {
		ERR_clear_error();
		OPENSSL_cleanse(out->data + out->len, ksz);
		r = enc ? cvm_err_internal(err, "RSA1_5 encryption failed")
			: cvm_err_set(err, EBADMSG, "BadParameter",
				      "value: RSA1_5 decryption failed (wrong key or corrupted input)");
	} else {
		out->len += n;
	}
	EVP_PKEY_CTX_free(ctx);
	return r;
}

static int rsa_op(const struct cvm_key *k, const struct enc_alg *a, bool enc,
		  const struct cvm_crypt_in *in, struct cvm_crypt_out *out, struct cvm_err *err)
{
	if (a->kind == K_RSA15)
		return rsa15(k, enc, in->data, in->len, &out->data, err);
	const char *md = a->kind == K_OAEP ? "SHA1" : "SHA256";
	if (enc)
		return cvm_rsa_oaep_encrypt(k->pkey, md, in->data, in->len, &out->data, err);
	_cleanup_secret_ struct cvm_secret *pt = NULL;
	int r = cvm_rsa_oaep_decrypt(k->pkey, md, in->data, in->len, &pt, err);
	if (r < 0)
		return r;
	return cvm_buf_append(&out->data, pt->data, pt->len) < 0 ? cvm_err_nomem(err) : 0;
}

static int gcm_op(const struct cvm_key *k, bool enc, const struct cvm_crypt_in *in,
		  struct cvm_crypt_out *out, struct cvm_err *err)
{
	if (enc) {
		if (in->iv && in->iv_len != 12)
			return cvm_err_badparam(err, "iv: must be 12 bytes for AES-GCM, got %zu",
						in->iv_len);
		if (in->iv)
			memcpy(out->iv, in->iv, 12);
		else if (cvm_random(out->iv, 12, err) < 0)
			return -EIO;
		out->iv_len = 12;
	} else {
		if (!in->iv || in->iv_len != 12)
			return cvm_err_badparam(err, "iv: must be 12 bytes for AES-GCM");
		if (!in->tag || in->tag_len != 16)
			return cvm_err_badparam(err, "tag: must be 16 bytes for AES-GCM");
	}
	if (cvm_buf_reserve(&out->data, in->len) < 0)
		return cvm_err_nomem(err);
	uint8_t *dst = out->data.data + out->data.len;
	int r = enc ? cvm_aes_gcm_seal(k->oct->data, k->oct->len, out->iv, in->aad, in->aad_len,
				       in->data, in->len, dst, out->tag, err)
		    : cvm_aes_gcm_open(k->oct->data, k->oct->len, in->iv, in->aad, in->aad_len,
				       in->data, in->len, in->tag, dst, err);
	if (r < 0)
		return r;
	if (enc)
		out->tag_len = 16;
	out->data.len += in->len;
	return 0;
}

static const EVP_CIPHER *cbc_cipher(size_t klen)
{
	return klen == 16 ? EVP_aes_128_cbc() : klen == 24 ? EVP_aes_192_cbc() : EVP_aes_256_cbc();
}

static int cbc_op(const struct cvm_key *k, bool pad, bool enc, const struct cvm_crypt_in *in,
		  struct cvm_crypt_out *out, struct cvm_err *err)
{
	const uint8_t *iv = in->iv;
	if (in->iv && in->iv_len != 16)
		return cvm_err_badparam(err, "iv: must be 16 bytes for AES-CBC, got %zu", in->iv_len);
	if (!enc && !iv)
		return cvm_err_badparam(err, "iv: required for AES-CBC decryption");
	if (enc && !iv) {
		if (cvm_random(out->iv, 16, err) < 0)
			return -EIO;
		iv = out->iv;
	}
	if (enc) {
		memcpy(out->iv, iv, 16);
		out->iv_len = 16;
	}
	if ((!pad || !enc) && in->len % 16 != 0)
		return cvm_err_badparam(err, "value: must be a multiple of 16 bytes for %s",
					pad ? "AES-CBC-PAD decryption" : "AES-CBC");
	if (in->len > INT_MAX - 32)
		return cvm_err_set(err, E2BIG, "BadParameter", "value: too large");
	if (cvm_buf_reserve(&out->data, in->len + 16) < 0)
		return cvm_err_nomem(err);
	EVP_CIPHER_CTX *ctx = EVP_CIPHER_CTX_new();
	if (!ctx)
		return cvm_err_nomem(err);
	uint8_t *dst = out->data.data + out->data.len;
	int n = 0, m = 0, r = 0;
	if (EVP_CipherInit_ex(ctx, cbc_cipher(k->oct->len), NULL, k->oct->data, iv, enc) != 1 ||
	    EVP_CIPHER_CTX_set_padding(ctx, pad) != 1 ||
	    EVP_CipherUpdate(ctx, dst, &n, in->data, (int)in->len) != 1) {
		r = cvm_err_openssl(err, EIO, "AES-CBC");
	} else if (EVP_CipherFinal_ex(ctx, dst + n, &m) != 1) {
		ERR_clear_error();
		OPENSSL_cleanse(dst, in->len + 16);
		r = cvm_err_set(err, EBADMSG, "BadParameter",
				"value: AES-CBC-PAD decryption failed (wrong key or bad padding)");
	} else {
		out->data.len += (size_t)n + (size_t)m;
	}
	EVP_CIPHER_CTX_free(ctx);
	return r;
}

static int kw_op(const struct cvm_key *k, bool pad, bool enc, const struct cvm_crypt_in *in,
		 struct cvm_crypt_out *out, struct cvm_err *err)
{
	if (enc)
		return cvm_aes_kw_wrap(k->oct->data, k->oct->len, pad, in->data, in->len, &out->data,
				       err);
	_cleanup_secret_ struct cvm_secret *s = NULL;
	int r = cvm_aes_kw_unwrap(k->oct->data, k->oct->len, pad, in->data, in->len, &s, err);
	if (r < 0)
		return r;
	return cvm_buf_append(&out->data, s->data, s->len) < 0 ? cvm_err_nomem(err) : 0;
}

static int key_crypt(const struct cvm_key *k, unsigned op, bool enc, const struct cvm_crypt_in *in,
		     struct cvm_crypt_out *out, struct cvm_err *err)
{
	const struct enc_alg *a = NULL;
	int r = enc_alg_for(k, in->alg, op, !enc, &a, err);
	if (r < 0)
		return r;
	if (!in->data && in->len)
		return cvm_err_badparam(err, "value: missing");
	if (in->len > (64u << 20))
		return cvm_err_set(err, E2BIG, "BadParameter", "value: larger than 64 MiB");
	if (in->aad_len && a->kind != K_GCM)
		return cvm_err_badparam(err, "aad: only valid with AES-GCM algorithms");
	switch (a->kind) {
	case K_OAEP: case K_OAEP256: case K_RSA15:
		r = rsa_op(k, a, enc, in, out, err);
		break;
	case K_GCM:
		r = gcm_op(k, enc, in, out, err);
		break;
	case K_CBC: case K_CBCPAD:
		r = cbc_op(k, a->kind == K_CBCPAD, enc, in, out, err);
		break;
	case K_KW: case K_KWP:
		r = kw_op(k, a->kind == K_KWP, enc, in, out, err);
		break;
	}
	if (r < 0)
		cvm_crypt_out_free(out);
	return r;
}

int cvm_key_encrypt(const struct cvm_key *k, const struct cvm_crypt_in *in,
		    struct cvm_crypt_out *out, struct cvm_err *err)
{
	return key_crypt(k, OP_ENC, true, in, out, err);
}

int cvm_key_decrypt(const struct cvm_key *k, const struct cvm_crypt_in *in,
		    struct cvm_crypt_out *out, struct cvm_err *err)
{
	return key_crypt(k, OP_ENC, false, in, out, err);
}

int cvm_key_wrap(const struct cvm_key *k, const struct cvm_crypt_in *in, struct cvm_crypt_out *out,
		 struct cvm_err *err)
{
	return key_crypt(k, OP_WRAP, true, in, out, err);
}

int cvm_key_unwrap(const struct cvm_key *k, const struct cvm_crypt_in *in,
		   struct cvm_crypt_out *out, struct cvm_err *err)
{
	return key_crypt(k, OP_WRAP, false, in, out, err);
}

void cvm_crypt_out_free(struct cvm_crypt_out *o)
{
	if (!o)
		return;
	cvm_buf_wipe(&o->data);
	OPENSSL_cleanse(o->iv, sizeof(o->iv));
	OPENSSL_cleanse(o->tag, sizeof(o->tag));
	o->iv_len = o->tag_len = 0;
}

/* ---- signatures ---------------------------------------------------------------------------- */

enum sig_kind { S_RS, S_PS, S_ES };
struct sig_alg {
	const char *name;
	enum sig_kind kind;
	const char *md;
	size_t dlen;
	const char *curve;  /* ES only */
};
static const struct sig_alg sig_algs[] = {
	{ "RS256", S_RS, "SHA256", 32, NULL }, { "RS384", S_RS, "SHA384", 48, NULL },
	{ "RS512", S_RS, "SHA512", 64, NULL }, { "PS256", S_PS, "SHA256", 32, NULL },
	{ "PS384", S_PS, "SHA384", 48, NULL }, { "PS512", S_PS, "SHA512", 64, NULL },
	{ "ES256", S_ES, "SHA256", 32, "P-256" }, { "ES384", S_ES, "SHA384", 48, "P-384" },
	{ "ES512", S_ES, "SHA512", 64, "P-521" },
};

const char *cvm_alg_digest(const char *alg)
{
	for (size_t i = 0; alg && i < CVM_ARRAY_SIZE(sig_algs); i++)
		if (strcmp(sig_algs[i].name, alg) == 0)
			return sig_algs[i].md;
	if (alg && strcmp(alg, "HS256") == 0)
		return "SHA256";
	return NULL;
}

static int sig_alg_for(const struct cvm_key *k, const char *alg, size_t dlen, bool need_private,
		       const struct sig_alg **out, struct cvm_err *err)
{
	const struct sig_alg *a = NULL;
	for (size_t i = 0; alg && i < CVM_ARRAY_SIZE(sig_algs); i++)
		if (strcmp(sig_algs[i].name, alg) == 0)
			a = &sig_algs[i];
	if (!a)
		return cvm_err_set(err, ENOTSUP, "BadParameter",
				   "alg: unsupported signature algorithm '%.64s'", alg ? alg : "");
	if (a->kind == S_ES ? k->kty != CVM_KTY_EC : k->kty != CVM_KTY_RSA)
		return cvm_err_badparam(err, "alg: %s requires an %s key", a->name,
					a->kind == S_ES ? "EC" : "RSA");
	if (a->kind == S_ES && strcmp(k->curve->jose, a->curve) != 0)
		return cvm_err_badparam(err, "alg: %s requires curve %s, this key is %s", a->name,
					a->curve, k->curve->jose);
	if (need_private && !k->has_private)
		return cvm_err_badparam(err, "alg: %s needs the private key, this key is public only",
					a->name);
	if (dlen != a->dlen)
		return cvm_err_badparam(err, "value: %s needs a %zu-byte %s digest, got %zu bytes",
					a->name, a->dlen, a->md, dlen);
	*out = a;
	return 0;
}

static int sig_ctx(const struct cvm_key *k, const struct sig_alg *a, bool sign,
		   EVP_PKEY_CTX **out, struct cvm_err *err)
{
	EVP_PKEY_CTX *ctx = EVP_PKEY_CTX_new_from_pkey(NULL, k->pkey, NULL);
	if (!ctx)
		return cvm_err_nomem(err);
	const EVP_MD *md = EVP_get_digestbyname(a->md);
	bool ok = md && (sign ? EVP_PKEY_sign_init(ctx) : EVP_PKEY_verify_init(ctx)) == 1 &&
		  EVP_PKEY_CTX_set_signature_md(ctx, md) == 1;
	if (ok && a->kind == S_RS)
		ok = EVP_PKEY_CTX_set_rsa_padding(ctx, RSA_PKCS1_PADDING) == 1;
	if (ok && a->kind == S_PS)
		ok = EVP_PKEY_CTX_set_rsa_padding(ctx, RSA_PKCS1_PSS_PADDING) == 1 &&
		     EVP_PKEY_CTX_set_rsa_mgf1_md(ctx, md) == 1 &&
		     EVP_PKEY_CTX_set_rsa_pss_saltlen(ctx, RSA_PSS_SALTLEN_DIGEST) == 1;
	if (!ok) {
		EVP_PKEY_CTX_free(ctx);
		return cvm_err_openssl(err, EIO, "signature setup");
	}
	*out = ctx;
	return 0;
}

int cvm_ecdsa_der_to_raw(const uint8_t *der, size_t der_len, size_t coord_len,
			 struct cvm_buf *out, struct cvm_err *err)
{
	const unsigned char *p = der;
	ECDSA_SIG *s = d2i_ECDSA_SIG(NULL, &p, (long)der_len);
	if (!s)
		return cvm_err_openssl(err, EIO, "ECDSA signature decoding");
	const BIGNUM *r = NULL, *sv = NULL;
	ECDSA_SIG_get0(s, &r, &sv);
	int rc = 0;
	if (cvm_buf_reserve(out, 2 * coord_len) < 0)
		rc = cvm_err_nomem(err);
	else if (BN_bn2binpad(r, out->data + out->len, (int)coord_len) != (int)coord_len ||
		 BN_bn2binpad(sv, out->data + out->len + coord_len, (int)coord_len) != (int)coord_len)
		rc = cvm_err_internal(err, "ECDSA signature does not fit the curve size");
	else
		out->len += 2 * coord_len;
	ECDSA_SIG_free(s);
	return rc;
}

int cvm_ecdsa_raw_to_der(const uint8_t *raw, size_t raw_len, size_t coord_len, uint8_t **der,
			 size_t *der_len, struct cvm_err *err)
{
	if (raw_len != 2 * coord_len)
		return 0;
	ECDSA_SIG *s = ECDSA_SIG_new();
	BIGNUM *r = BN_bin2bn(raw, (int)coord_len, NULL);
	BIGNUM *sv = BN_bin2bn(raw + coord_len, (int)coord_len, NULL);
	if (!s || !r || !sv || ECDSA_SIG_set0(s, r, sv) != 1) {
		ECDSA_SIG_free(s);
		BN_free(r);
		BN_free(sv);
		return cvm_err_nomem(err);
	}
	unsigned char *d = NULL;
	int n = i2d_ECDSA_SIG(s, &d);
	ECDSA_SIG_free(s);
	if (n <= 0)
		return cvm_err_openssl(err, EIO, "ECDSA signature encoding");
	*der = d;
	*der_len = (size_t)n;
	return 1;
}

int cvm_key_sign_digest(const struct cvm_key *k, const char *alg, const uint8_t *digest,
			size_t dlen, struct cvm_buf *sig, struct cvm_err *err)
{
	const struct sig_alg *a = NULL;
	int r = sig_alg_for(k, alg, dlen, true, &a, err);
	if (r < 0)
		return r;
	EVP_PKEY_CTX *ctx = NULL;
	r = sig_ctx(k, a, true, &ctx, err);
	if (r < 0)
		return r;
	size_t n = (size_t)EVP_PKEY_get_size(k->pkey);
	uint8_t *tmp = malloc(n);
	if (!tmp)
		r = cvm_err_nomem(err);
	else if (EVP_PKEY_sign(ctx, tmp, &n, digest, dlen) != 1)
		r = cvm_err_openssl(err, EIO, "signing");
	else if (a->kind == S_ES)
		r = cvm_ecdsa_der_to_raw(tmp, n, k->curve->coord_len, sig, err);
	else if (cvm_buf_append(sig, tmp, n) < 0)
		r = cvm_err_nomem(err);
	free(tmp);
	EVP_PKEY_CTX_free(ctx);
	return r;
}

int cvm_key_verify_digest(const struct cvm_key *k, const char *alg, const uint8_t *digest,
			  size_t dlen, const uint8_t *sig, size_t siglen, bool *valid,
			  struct cvm_err *err)
{
	const struct sig_alg *a = NULL;
	*valid = false;
	int r = sig_alg_for(k, alg, dlen, false, &a, err);
	if (r < 0)
		return r;
	uint8_t *der = NULL;
	size_t der_len = 0;
	if (a->kind == S_ES) {
		r = cvm_ecdsa_raw_to_der(sig, siglen, k->curve->coord_len, &der, &der_len, err);
		if (r <= 0)
			return r; /* 0: wrong length, a well-formed "invalid" */
		sig = der;
		siglen = der_len;
	} else if (siglen != (size_t)EVP_PKEY_get_size(k->pkey)) {
		return 0;
	}
	EVP_PKEY_CTX *ctx = NULL;
	r = sig_ctx(k, a, false, &ctx, err);
	if (r >= 0) {
		*valid = EVP_PKEY_verify(ctx, sig, siglen, digest, dlen) == 1;
		ERR_clear_error();
		EVP_PKEY_CTX_free(ctx);
	}
	OPENSSL_free(der);
	return r;
}
