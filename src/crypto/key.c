/* SPDX-License-Identifier: Apache-2.0 */
/* Keys: generation, reference counting, accessors, PKCS#8 / SPKI DER import and export. */
#include "crypto-internal.h"

#include <openssl/core_names.h>
#include <openssl/encoder.h>
#include <openssl/err.h>
#include <openssl/x509.h>
#include <string.h>

static const struct cvm_curve curves[] = {
	{ "P-256", "prime256v1", 32, 256, "ES256", "SHA256" },
	{ "P-384", "secp384r1", 48, 384, "ES384", "SHA384" },
	{ "P-521", "secp521r1", 66, 521, "ES512", "SHA512" },
};

const struct cvm_curve *cvm_curve_by_jose(const char *jose)
{
	for (size_t i = 0; jose && i < CVM_ARRAY_SIZE(curves); i++)
		if (strcmp(curves[i].jose, jose) == 0)
			return &curves[i];
	return NULL;
}

const struct cvm_curve *cvm_curve_by_group(const char *group)
{
	/* OpenSSL reports NIST names for some groups depending on how the key was built. */
	static const char *const nist[] = { "P-256", "P-384", "P-521" };
	for (size_t i = 0; group && i < CVM_ARRAY_SIZE(curves); i++)
		if (strcmp(curves[i].group, group) == 0 || strcmp(nist[i], group) == 0 ||
		    (i == 0 && strcmp(group, "secp256r1") == 0))
			return &curves[i];
	return NULL;
}

static bool pkey_has_bn(const EVP_PKEY *pkey, const char *param)
{
	BIGNUM *bn = NULL;
	bool ok = EVP_PKEY_get_bn_param(pkey, param, &bn) == 1 && bn != NULL;
	BN_clear_free(bn);
	return ok;
}

int cvm_key_wrap_pkey(EVP_PKEY *pkey, struct cvm_key **out, struct cvm_err *err)
{
	struct cvm_key k = { .pkey = pkey };
	if (!pkey)
		return cvm_err_badparam(err, "key: missing");
	if (EVP_PKEY_is_a(pkey, "RSA")) {
		k.kty = CVM_KTY_RSA;
		k.has_private = pkey_has_bn(pkey, OSSL_PKEY_PARAM_RSA_D);
	} else if (EVP_PKEY_is_a(pkey, "EC")) {
		char group[64];
		if (EVP_PKEY_get_utf8_string_param(pkey, OSSL_PKEY_PARAM_GROUP_NAME, group,
						   sizeof(group), NULL) != 1 ||
		    !(k.curve = cvm_curve_by_group(group)))
			return cvm_err_set(err, ENOTSUP, "BadParameter",
					   "key.crv: only P-256, P-384 and P-521 are supported");
		k.kty = CVM_KTY_EC;
		k.has_private = pkey_has_bn(pkey, OSSL_PKEY_PARAM_PRIV_KEY);
	} else {
		return cvm_err_set(err, ENOTSUP, "BadParameter",
				   "key.kty: only RSA and EC keys are supported");
	}
	k.bits = EVP_PKEY_get_bits(pkey);
	if (k.bits <= 0)
		return cvm_err_badparam(err, "key: cannot determine key size");
	struct cvm_key *n = malloc(sizeof(*n));
	if (!n)
		return cvm_err_nomem(err);
	*n = k;
	atomic_init(&n->refs, 1);
	atomic_init(&n->pkcs8, NULL);
	*out = n;
	return 0;
}

int cvm_key_wrap_oct(struct cvm_secret *s, struct cvm_key **out, struct cvm_err *err)
{
	struct cvm_key *n = calloc(1, sizeof(*n));
	if (!n)
		return cvm_err_nomem(err);
	atomic_init(&n->refs, 1);
	atomic_init(&n->pkcs8, NULL);
	n->kty = CVM_KTY_OCT;
	n->has_private = true;
	n->bits = (int)(s->len * 8);
	n->oct = s;
	*out = n;
	return 0;
}

static int keygen(const char *type, const OSSL_PARAM *params, EVP_PKEY **out, struct cvm_err *err)
{
	EVP_PKEY_CTX *ctx = EVP_PKEY_CTX_new_from_name(NULL, type, NULL);
	int r = 0;
	if (!ctx || EVP_PKEY_keygen_init(ctx) != 1 || EVP_PKEY_CTX_set_params(ctx, params) != 1 ||
	    EVP_PKEY_generate(ctx, out) != 1)
		r = cvm_err_openssl(err, EIO, "key generation");
	EVP_PKEY_CTX_free(ctx);
	return r;
}

int cvm_key_generate_rsa(int bits, unsigned long e, struct cvm_key **out, struct cvm_err *err)
{
	if (bits != 2048 && bits != 3072 && bits != 4096)
		return cvm_err_badparam(err, "key_size: RSA keys must be 2048, 3072 or 4096 bits, got %d",
					bits);
	if (e == 0)
		e = 65537;
	if (e < 3 || !(e & 1) || e > 0xffffffffUL)
		return cvm_err_badparam(err, "public_exponent: must be an odd number >= 3 and < 2^32");
	size_t ubits = (size_t)bits;
	OSSL_PARAM params[] = {
		OSSL_PARAM_construct_size_t(OSSL_PKEY_PARAM_RSA_BITS, &ubits),
		OSSL_PARAM_construct_ulong(OSSL_PKEY_PARAM_RSA_E, &e),
		OSSL_PARAM_construct_end(),
	};
	EVP_PKEY *pkey = NULL;
	int r = keygen("RSA", params, &pkey, err);
	if (r < 0)
		return r;
	r = cvm_key_wrap_pkey(pkey, out, err);
	if (r < 0)
		EVP_PKEY_free(pkey);
	return r;
}

int cvm_key_generate_ec(const char *crv, struct cvm_key **out, struct cvm_err *err)
{
	const struct cvm_curve *c = cvm_curve_by_jose(crv);
	if (!c)
		return cvm_err_set(err, ENOTSUP, "BadParameter",
				   "crv: must be P-256, P-384 or P-521, got '%s'", crv ? crv : "");
	OSSL_PARAM params[] = {
		OSSL_PARAM_construct_utf8_string(OSSL_PKEY_PARAM_GROUP_NAME, (char *)c->group, 0),
		OSSL_PARAM_construct_end(),
	};
	EVP_PKEY *pkey = NULL;
	int r = keygen("EC", params, &pkey, err);
	if (r < 0)
		return r;
	r = cvm_key_wrap_pkey(pkey, out, err);
	if (r < 0)
		EVP_PKEY_free(pkey);
	return r;
}

int cvm_key_generate_oct(int bits, struct cvm_key **out, struct cvm_err *err)
{
	if (bits != 128 && bits != 192 && bits != 256)
		return cvm_err_badparam(err, "key_size: oct keys must be 128, 192 or 256 bits, got %d",
					bits);
	struct cvm_secret *s = cvm_secret_new((size_t)bits / 8);
	if (!s)
		return cvm_err_nomem(err);
	int r = cvm_random(s->data, s->len, err);
	if (r >= 0)
		r = cvm_key_wrap_oct(s, out, err);
	if (r < 0)
		cvm_secret_free(s);
	return r;
}

void cvm_key_free(struct cvm_key *k)
{
	if (!k || atomic_fetch_sub(&k->refs, 1) != 1)
		return;
	EVP_PKEY_free(k->pkey);
	cvm_secret_free(k->oct);
	cvm_secret_free(atomic_load(&k->pkcs8));
	free(k);
}

struct cvm_key *cvm_key_ref(struct cvm_key *k)
{
	if (k)
		atomic_fetch_add(&k->refs, 1);
	return k;
}

enum cvm_kty cvm_key_type(const struct cvm_key *k) { return k->kty; }
int cvm_key_bits(const struct cvm_key *k) { return k->bits; }
const char *cvm_key_curve(const struct cvm_key *k) { return k->curve ? k->curve->jose : NULL; }
bool cvm_key_has_private(const struct cvm_key *k) { return k->has_private; }
EVP_PKEY *cvm_key_pkey(const struct cvm_key *k) { return k->pkey; }

int cvm_key_from_pkey(EVP_PKEY *pkey, struct cvm_key **out, struct cvm_err *err)
{
	return cvm_key_wrap_pkey(pkey, out, err);
}

int cvm_key_export_public_der(const struct cvm_key *k, struct cvm_buf *out, struct cvm_err *err)
{
	if (!k->pkey)
		return cvm_err_badparam(err, "key: oct keys have no public part");
	unsigned char *der = NULL;
	int n = i2d_PUBKEY(k->pkey, &der);
	if (n <= 0)
		return cvm_err_openssl(err, EIO, "public key encoding");
	int r = cvm_buf_append(out, der, (size_t)n);
	OPENSSL_free(der);
	return r < 0 ? cvm_err_nomem(err) : 0;
}

int cvm_key_import_public_der(const uint8_t *buf, size_t len, struct cvm_key **out,
			      struct cvm_err *err)
{
	if (len == 0 || len > 16384)
		return cvm_err_badparam(err, "key: SubjectPublicKeyInfo must be 1..16384 bytes");
	const unsigned char *p = buf;
	EVP_PKEY *pkey = d2i_PUBKEY(NULL, &p, (long)len);
	if (!pkey)
	{
		ERR_clear_error();
		return cvm_err_badparam(err, "key: not a valid SubjectPublicKeyInfo");
	}
	if ((size_t)(p - buf) != len) {
		EVP_PKEY_free(pkey);
		return cvm_err_badparam(err, "key: trailing bytes after SubjectPublicKeyInfo");
	}
	int r = cvm_key_wrap_pkey(pkey, out, err);
	if (r < 0)
		EVP_PKEY_free(pkey);
	return r;
}

int cvm_key_public(const struct cvm_key *k, struct cvm_key **out, struct cvm_err *err)
{
	_cleanup_buf_ struct cvm_buf der = { 0 };
	int r = cvm_key_export_public_der(k, &der, err);
	if (r < 0)
		return r;
	return cvm_key_import_public_der(der.data, der.len, out, err);
}

/* Encode the private key as PKCS#8 PrivateKeyInfo DER into a new secret. */
static int encode_pkcs8(const struct cvm_key *k, struct cvm_secret **out, struct cvm_err *err)
{
	OSSL_ENCODER_CTX *ctx = OSSL_ENCODER_CTX_new_for_pkey(k->pkey, EVP_PKEY_KEYPAIR, "DER",
							      "PrivateKeyInfo", NULL);
	unsigned char *der = NULL;
	size_t der_len = 0;
	int r = 0;
	if (!ctx || OSSL_ENCODER_CTX_get_num_encoders(ctx) == 0 ||
	    OSSL_ENCODER_to_data(ctx, &der, &der_len) != 1)
		r = cvm_err_openssl(err, EIO, "PKCS#8 encoding");
	OSSL_ENCODER_CTX_free(ctx);
	if (r < 0)
		return r;
	*out = cvm_secret_from(der, der_len);
	OPENSSL_clear_free(der, der_len);
	return *out ? 0 : cvm_err_nomem(err);
}

int cvm_key_export_private(const struct cvm_key *k, struct cvm_secret **out, struct cvm_err *err)
{
	if (!k->has_private)
		return cvm_err_badparam(err, "key: has no private part to export");
	if (k->kty == CVM_KTY_OCT) {
		*out = cvm_secret_from(k->oct->data, k->oct->len);
		return *out ? 0 : cvm_err_nomem(err);
	}
	/* The cache is a write-once field of a shared key: it does not change what the key is, so
	 * filling it through a const pointer is sound; the CAS picks one winner among threads. */
	_Atomic(struct cvm_secret *) *slot = (_Atomic(struct cvm_secret *) *)&k->pkcs8;
	struct cvm_secret *der = atomic_load_explicit(slot, memory_order_acquire);
	if (!der) {
		int r = encode_pkcs8(k, &der, err);
		if (r < 0)
			return r;
		struct cvm_secret *expected = NULL;
		if (!atomic_compare_exchange_strong_explicit(slot, &expected, der,
							     memory_order_acq_rel,
							     memory_order_acquire)) {
			cvm_secret_free(der);
			der = expected;
		}
	}
	*out = cvm_secret_from(der->data, der->len);
	return *out ? 0 : cvm_err_nomem(err);
}

int cvm_key_import_private(enum cvm_kty kty, const uint8_t *buf, size_t len, struct cvm_key **out,
			   struct cvm_err *err)
{
	if (kty == CVM_KTY_OCT) {
		if (len != 16 && len != 24 && len != 32)
			return cvm_err_badparam(err, "key: oct material must be 16, 24 or 32 bytes, got %zu",
						len);
		struct cvm_secret *s = cvm_secret_from(buf, len);
		if (!s)
			return cvm_err_nomem(err);
		int r = cvm_key_wrap_oct(s, out, err);
		if (r < 0)
			cvm_secret_free(s);
		return r;
	}
	if (kty != CVM_KTY_RSA && kty != CVM_KTY_EC)
		return cvm_err_badparam(err, "kty: unknown key type %d", (int)kty);
	if (len == 0 || len > 16384)
		return cvm_err_badparam(err, "key: PKCS#8 must be 1..16384 bytes");
	const unsigned char *p = buf;
	PKCS8_PRIV_KEY_INFO *p8 = d2i_PKCS8_PRIV_KEY_INFO(NULL, &p, (long)len);
	if (!p8 || (size_t)(p - buf) != len) {
		PKCS8_PRIV_KEY_INFO_free(p8);
		ERR_clear_error();
		return cvm_err_badparam(err, "key: not a valid PKCS#8 PrivateKeyInfo");
	}
	EVP_PKEY *pkey = EVP_PKCS82PKEY(p8);
	PKCS8_PRIV_KEY_INFO_free(p8);
	if (!pkey) {
		ERR_clear_error();
		return cvm_err_badparam(err, "key: PKCS#8 key cannot be decoded");
	}
	struct cvm_key *k = NULL;
	int r = cvm_key_wrap_pkey(pkey, &k, err);
	if (r < 0) {
		EVP_PKEY_free(pkey);
		return r;
	}
	if (k->kty != kty || !k->has_private) {
		const char *got = k->kty == CVM_KTY_RSA ? "RSA" : "EC";
		cvm_key_free(k);
		return cvm_err_badparam(err, "key: PKCS#8 holds a %s key, expected a private %s key",
					got, kty == CVM_KTY_RSA ? "RSA" : "EC");
	}
	/* Keep the exact bytes: export returns them instead of re-encoding. */
	struct cvm_secret *der = cvm_secret_from(buf, len);
	if (!der) {
		cvm_key_free(k);
		return cvm_err_nomem(err);
	}
	atomic_store(&k->pkcs8, der);
	*out = k;
	return 0;
}
