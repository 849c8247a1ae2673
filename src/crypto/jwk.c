/* SPDX-License-Identifier: Apache-2.0 */
/* JWK (RFC 7517/7518) import and export with Key Vault field names; RFC 7638 thumbprints. */
#include "crypto-internal.h"

#include <openssl/core_names.h>
#include <openssl/err.h>
#include <openssl/param_build.h>
#include <string.h>

#define RSA_MIN_BITS 2048
#define RSA_MAX_BITS 8192

/* ---- export -------------------------------------------------------------------------------- */

/* Set member name to base64url(bytes). */
static int set_b64(json_t *o, const char *name, const uint8_t *b, size_t len, struct cvm_err *err)
{
	char *s = cvm_b64url_encode(b, len);
	if (!s)
		return cvm_err_nomem(err);
	json_t *v = json_string(s);
	OPENSSL_cleanse(s, strlen(s));
	free(s);
	if (!v || json_object_set_new(o, name, v) < 0)
		return cvm_err_nomem(err);
	return 0;
}

/* Set member name from a BIGNUM parameter of pkey; pad > 0 gives fixed-length big-endian. */
static int set_bn(json_t *o, const char *name, const EVP_PKEY *pkey, const char *param, int pad,
		  struct cvm_err *err)
{
	BIGNUM *bn = NULL;
	if (EVP_PKEY_get_bn_param(pkey, param, &bn) != 1 || !bn)
		return cvm_err_openssl(err, EIO, name);
	int n = pad > 0 ? pad : BN_num_bytes(bn);
	if (n == 0)
		n = 1;
	uint8_t *b = malloc((size_t)n);
	int r = 0;
	if (!b)
		r = cvm_err_nomem(err);
	else if (BN_bn2binpad(bn, b, n) != n)
		r = cvm_err_internal(err, "%s: value does not fit %d bytes", name, n);
	else
		r = set_b64(o, name, b, (size_t)n, err);
	if (b)
		cvm_free_secure(b, (size_t)n);
	BN_clear_free(bn);
	return r;
}

int cvm_key_to_jwk(const struct cvm_key *k, bool include_private, json_t **out,
		   struct cvm_err *err)
{
	json_t *o = json_object();
	if (!o)
		return cvm_err_nomem(err);
	int r = 0;
	switch (k->kty) {
	case CVM_KTY_RSA:
		r = json_object_set_new(o, "kty", json_string("RSA")) < 0 ? cvm_err_nomem(err) : 0;
		if (r >= 0) r = set_bn(o, "n", k->pkey, OSSL_PKEY_PARAM_RSA_N, 0, err);
		if (r >= 0) r = set_bn(o, "e", k->pkey, OSSL_PKEY_PARAM_RSA_E, 0, err);
		if (include_private && k->has_private) {
			static const char *const names[][2] = {
				{ "d", OSSL_PKEY_PARAM_RSA_D },
				{ "p", OSSL_PKEY_PARAM_RSA_FACTOR1 },
				{ "q", OSSL_PKEY_PARAM_RSA_FACTOR2 },
				{ "dp", OSSL_PKEY_PARAM_RSA_EXPONENT1 },
				{ "dq", OSSL_PKEY_PARAM_RSA_EXPONENT2 },
				{ "qi", OSSL_PKEY_PARAM_RSA_COEFFICIENT1 },
			};
			/* Keys imported without CRT values only have d. */
			for (size_t i = 0; r >= 0 && i < CVM_ARRAY_SIZE(names); i++) {
				r = set_bn(o, names[i][0], k->pkey, names[i][1], 0, err);
				if (r < 0 && i > 0) {
					cvm_err_clear(err);
					r = 0;
					break;
				}
			}
		}
		break;
	case CVM_KTY_EC: {
		int cl = (int)k->curve->coord_len;
		r = json_object_set_new(o, "kty", json_string("EC")) < 0 ||
				    json_object_set_new(o, "crv", json_string(k->curve->jose)) < 0
			    ? cvm_err_nomem(err)
			    : 0;
		if (r >= 0) r = set_bn(o, "x", k->pkey, OSSL_PKEY_PARAM_EC_PUB_X, cl, err);
		if (r >= 0) r = set_bn(o, "y", k->pkey, OSSL_PKEY_PARAM_EC_PUB_Y, cl, err);
		if (r >= 0 && include_private && k->has_private)
			r = set_bn(o, "d", k->pkey, OSSL_PKEY_PARAM_PRIV_KEY, cl, err);
		break;
	}
	case CVM_KTY_OCT:
		r = json_object_set_new(o, "kty", json_string("oct")) < 0 ? cvm_err_nomem(err) : 0;
		if (r >= 0 && include_private)
			r = set_b64(o, "k", k->oct->data, k->oct->len, err);
		break;
	}
	if (r < 0) {
		json_decref(o);
		return r;
	}
	*out = o;
	return 0;
}

/* ---- import -------------------------------------------------------------------------------- */

/* A decoded base64url member; secret members are wiped on release. */
struct member {
	uint8_t *b;
	size_t len;
};

static void member_free(struct member *m)
{
	if (m->b)
		cvm_free_secure(m->b, m->len);
	m->b = NULL;
	m->len = 0;
}

/* Decode member name; absent -> 0 with m->b NULL (or error when required). */
static int get_member(json_t *jwk, const char *name, bool required, struct member *m,
		      struct cvm_err *err)
{
	json_t *v = json_object_get(jwk, name);
	char what[32];
	snprintf(what, sizeof(what), "key.%s", name);
	if (!v) {
		if (required)
			return cvm_err_badparam(err, "%s: required", what);
		return 0;
	}
	if (!json_is_string(v))
		return cvm_err_badparam(err, "%s: must be a base64url string", what);
	size_t slen = json_string_length(v);
	if (slen == 0 || slen > 4096)
		return cvm_err_badparam(err, "%s: must be 1..4096 base64url characters", what);
	return cvm_b64url_decode(json_string_value(v), slen, &m->b, &m->len, what, err);
}

/* Strip leading zero bytes (base64urlUInt may be sent with them by lenient encoders). */
static void strip_zeros(struct member *m)
{
	size_t z = 0;
	while (z + 1 < m->len && m->b[z] == 0)
		z++;
	if (z) {
		memmove(m->b, m->b + z, m->len - z);
		m->len -= z;
	}
}

static int push_bn(OSSL_PARAM_BLD *bld, const char *param, const struct member *m, BIGNUM **keep,
		   bool secret, struct cvm_err *err)
{
	BIGNUM *bn = secret ? BN_secure_new() : BN_new();
	if (!bn || !BN_bin2bn(m->b, (int)m->len, bn) || OSSL_PARAM_BLD_push_BN(bld, param, bn) != 1) {
		BN_clear_free(bn);
		return cvm_err_nomem(err);
	}
	*keep = bn;
	return 0;
}

static int fromdata(const char *type, OSSL_PARAM_BLD *bld, bool priv, EVP_PKEY **out,
		    struct cvm_err *err)
{
	OSSL_PARAM *params = OSSL_PARAM_BLD_to_param(bld);
	EVP_PKEY_CTX *ctx = EVP_PKEY_CTX_new_from_name(NULL, type, NULL);
	int r = 0;
	if (!params || !ctx || EVP_PKEY_fromdata_init(ctx) != 1)
		r = cvm_err_openssl(err, EIO, "key construction");
	else if (EVP_PKEY_fromdata(ctx, out, priv ? EVP_PKEY_KEYPAIR : EVP_PKEY_PUBLIC_KEY,
				   params) != 1) {
		ERR_clear_error();
		r = cvm_err_badparam(err, "key: the %s key parameters are invalid", type);
	}
	OSSL_PARAM_free(params); /* private BNs were built in secure memory, freed cleared */
	EVP_PKEY_CTX_free(ctx);
	return r;
}

/* Consistency checks run once at import: public values valid, private matching public. */
static int check_pkey(EVP_PKEY *pkey, bool priv, struct cvm_err *err)
{
	EVP_PKEY_CTX *ctx = EVP_PKEY_CTX_new_from_pkey(NULL, pkey, NULL);
	if (!ctx)
		return cvm_err_nomem(err);
	int ok = priv ? EVP_PKEY_pairwise_check(ctx) : EVP_PKEY_public_check(ctx);
	EVP_PKEY_CTX_free(ctx);
	ERR_clear_error();
	if (ok != 1)
		return cvm_err_badparam(err, priv ? "key: private and public parts do not match"
						  : "key: public key is invalid");
	return 0;
}

/* The arithmetic relations between n, e, d, p, q, dp, dq, qi (RFC 8017 3.2). OpenSSL's
 * pairwise check also runs primality tests, which cost 80 ms (2048) to 500 ms (4096) per
 * import; these identities catch every mismatched or corrupted member in microseconds.
 * bn: n, e, d, p, q, dp, dq, qi. */
static int rsa_consistent(BIGNUM *const *bn, struct cvm_err *err)
{
	const BIGNUM *n = bn[0], *e = bn[1], *d = bn[2], *p = bn[3], *q = bn[4], *dp = bn[5],
		     *dq = bn[6], *qi = bn[7];
	BN_CTX *ctx = BN_CTX_secure_new();
	if (!ctx)
		return cvm_err_nomem(err);
	BN_CTX_start(ctx);
	BIGNUM *t = BN_CTX_get(ctx), *pm1 = BN_CTX_get(ctx), *qm1 = BN_CTX_get(ctx),
	       *ed = BN_CTX_get(ctx);
	const char *bad = NULL;
	if (!ed || !BN_sub(pm1, p, BN_value_one()) || !BN_sub(qm1, q, BN_value_one()) ||
	    !BN_mul(ed, e, d, ctx)) {
		bad = "";
	} else if (BN_cmp(p, BN_value_one()) <= 0 || BN_cmp(q, BN_value_one()) <= 0 ||
		   !BN_mul(t, p, q, ctx) || BN_cmp(t, n) != 0) {
		bad = "key.p: p * q does not equal n";
	} else if (!BN_mod(t, ed, pm1, ctx) || !BN_is_one(t) || !BN_mod(t, ed, qm1, ctx) ||
		   !BN_is_one(t) || BN_cmp(d, n) >= 0) {
		bad = "key.d: not the private exponent for n and e";
	} else if (!BN_mod(t, d, pm1, ctx) || BN_cmp(t, dp) != 0) {
		bad = "key.dp: does not equal d mod (p-1)";
	} else if (!BN_mod(t, d, qm1, ctx) || BN_cmp(t, dq) != 0) {
		bad = "key.dq: does not equal d mod (q-1)";
	} else if (BN_cmp(qi, p) >= 0 || !BN_mod_mul(t, qi, q, p, ctx) || !BN_is_one(t)) {
		bad = "key.qi: is not the inverse of q mod p";
	}
	BN_CTX_end(ctx);
	BN_CTX_free(ctx);
	if (bad && !*bad)
		return cvm_err_openssl(err, EIO, "RSA key check");
	return bad ? cvm_err_badparam(err, "%s", bad) : 0;
}

static int rsa_from_jwk(json_t *jwk, bool priv, EVP_PKEY **out, struct cvm_err *err)
{
	static const char *const crt_names[] = { "p", "q", "dp", "dq", "qi" };
	static const char *const crt_params[] = {
		OSSL_PKEY_PARAM_RSA_FACTOR1, OSSL_PKEY_PARAM_RSA_FACTOR2,
		OSSL_PKEY_PARAM_RSA_EXPONENT1, OSSL_PKEY_PARAM_RSA_EXPONENT2,
		OSSL_PKEY_PARAM_RSA_COEFFICIENT1,
	};
	struct member n = { 0 }, e = { 0 }, d = { 0 }, crt[5] = { 0 };
	BIGNUM *bns[8] = { 0 };
	OSSL_PARAM_BLD *bld = NULL;
	size_t ncrt = 0;
	int r = get_member(jwk, "n", true, &n, err);
	if (r >= 0) r = get_member(jwk, "e", true, &e, err);
	if (r >= 0 && priv) r = get_member(jwk, "d", true, &d, err);
	for (size_t i = 0; r >= 0 && priv && i < 5; i++) {
		/* All CRT members are required: they make private operations four times
		 * faster and let the import check that the primes match the modulus. */
		r = get_member(jwk, crt_names[i], true, &crt[i], err);
		ncrt += crt[i].b != NULL;
	}
	if (r < 0)
		goto out;
	strip_zeros(&n);
	strip_zeros(&e);
	size_t nbits = n.len * 8;
	for (uint8_t top = n.b[0]; nbits && !(top & 0x80); top <<= 1)
		nbits--;
	if (nbits < RSA_MIN_BITS || nbits > RSA_MAX_BITS) {
		r = cvm_err_badparam(err, "key.n: RSA modulus must be %d..%d bits, got %zu",
				     RSA_MIN_BITS, RSA_MAX_BITS, nbits);
		goto out;
	}
	if (!(n.b[n.len - 1] & 1)) {
		r = cvm_err_badparam(err, "key.n: RSA modulus must be odd");
		goto out;
	}
	if (e.len > 8 || !(e.b[e.len - 1] & 1) || (e.len == 1 && e.b[0] < 3)) {
		r = cvm_err_badparam(err, "key.e: must be an odd exponent >= 3 of at most 8 bytes");
		goto out;
	}
	if (priv && d.len > n.len) {
		r = cvm_err_badparam(err, "key.d: longer than the modulus");
		goto out;
	}
	if (!(bld = OSSL_PARAM_BLD_new())) {
		r = cvm_err_nomem(err);
		goto out;
	}
	r = push_bn(bld, OSSL_PKEY_PARAM_RSA_N, &n, &bns[0], false, err);
	if (r >= 0) r = push_bn(bld, OSSL_PKEY_PARAM_RSA_E, &e, &bns[1], false, err);
	if (r >= 0 && priv) r = push_bn(bld, OSSL_PKEY_PARAM_RSA_D, &d, &bns[2], true, err);
	for (size_t i = 0; r >= 0 && priv && ncrt == 5 && i < 5; i++)
		r = push_bn(bld, crt_params[i], &crt[i], &bns[3 + i], true, err);
	/* A wrong d or CRT value is refused at import, not at first use. */
	if (r >= 0 && priv)
		r = rsa_consistent(bns, err);
	if (r >= 0)
		r = fromdata("RSA", bld, priv, out, err);
out:
	OSSL_PARAM_BLD_free(bld);
	for (size_t i = 0; i < CVM_ARRAY_SIZE(bns); i++)
		BN_clear_free(bns[i]);
	member_free(&n);
	member_free(&e);
	member_free(&d);
	for (size_t i = 0; i < 5; i++)
		member_free(&crt[i]);
	return r;
}

static int ec_from_jwk(json_t *jwk, bool priv, EVP_PKEY **out, struct cvm_err *err)
{
	json_t *crv = json_object_get(jwk, "crv");
	if (!json_is_string(crv))
		return cvm_err_badparam(err, "key.crv: required string (P-256, P-384 or P-521)");
	const struct cvm_curve *c = cvm_curve_by_jose(json_string_value(crv));
	if (!c)
		return cvm_err_set(err, ENOTSUP, "BadParameter",
				   "key.crv: must be P-256, P-384 or P-521, got '%.32s'",
				   json_string_value(crv));
	struct member x = { 0 }, y = { 0 }, d = { 0 };
	BIGNUM *dbn = NULL;
	OSSL_PARAM_BLD *bld = NULL;
	uint8_t pub[1 + 2 * 66];
	int r = get_member(jwk, "x", true, &x, err);
	if (r >= 0) r = get_member(jwk, "y", true, &y, err);
	if (r >= 0 && priv) r = get_member(jwk, "d", true, &d, err);
	if (r < 0)
		goto out;
	if (x.len != c->coord_len || y.len != c->coord_len || (priv && d.len != c->coord_len)) {
		const char *f = x.len != c->coord_len ? "x" : y.len != c->coord_len ? "y" : "d";
		r = cvm_err_badparam(err, "key.%s: must be %zu bytes for %s", f, c->coord_len, c->jose);
		goto out;
	}
	pub[0] = 0x04;
	memcpy(pub + 1, x.b, c->coord_len);
	memcpy(pub + 1 + c->coord_len, y.b, c->coord_len);
	if (!(bld = OSSL_PARAM_BLD_new()) ||
	    OSSL_PARAM_BLD_push_utf8_string(bld, OSSL_PKEY_PARAM_GROUP_NAME, c->group, 0) != 1 ||
	    OSSL_PARAM_BLD_push_octet_string(bld, OSSL_PKEY_PARAM_PUB_KEY, pub,
					     1 + 2 * c->coord_len) != 1) {
		r = cvm_err_nomem(err);
		goto out;
	}
	if (priv)
		r = push_bn(bld, OSSL_PKEY_PARAM_PRIV_KEY, &d, &dbn, true, err);
	if (r >= 0)
		r = fromdata("EC", bld, priv, out, err);
	if (r >= 0) {
		r = check_pkey(*out, priv, err);
		if (r < 0) {
			EVP_PKEY_free(*out);
			*out = NULL;
		}
	}
out:
	OSSL_PARAM_BLD_free(bld);
	BN_clear_free(dbn);
	member_free(&x);
	member_free(&y);
	member_free(&d);
	return r;
}

static int oct_from_jwk(json_t *jwk, struct cvm_key **out, struct cvm_err *err)
{
	struct member k = { 0 };
	int r = get_member(jwk, "k", true, &k, err);
	if (r < 0)
		return r;
	if (k.len != 16 && k.len != 24 && k.len != 32) {
		member_free(&k);
		return cvm_err_badparam(err, "key.k: oct keys must be 128, 192 or 256 bits");
	}
	struct cvm_secret *s = cvm_secret_from(k.b, k.len);
	member_free(&k);
	if (!s)
		return cvm_err_nomem(err);
	r = cvm_key_wrap_oct(s, out, err);
	if (r < 0)
		cvm_secret_free(s);
	return r;
}

int cvm_key_from_jwk(json_t *jwk, bool require_private, struct cvm_key **out, struct cvm_err *err)
{
	if (!json_is_object(jwk))
		return cvm_err_badparam(err, "key: must be a JSON object (JWK)");
	json_t *kty = json_object_get(jwk, "kty");
	if (!json_is_string(kty))
		return cvm_err_badparam(err, "key.kty: required string");
	const char *t = json_string_value(kty);
	EVP_PKEY *pkey = NULL;
	int r;
	if (strcmp(t, "RSA") == 0 || strcmp(t, "RSA-HSM") == 0)
		r = rsa_from_jwk(jwk, require_private, &pkey, err);
	else if (strcmp(t, "EC") == 0 || strcmp(t, "EC-HSM") == 0)
		r = ec_from_jwk(jwk, require_private, &pkey, err);
	else if (strcmp(t, "oct") == 0 || strcmp(t, "oct-HSM") == 0)
		return oct_from_jwk(jwk, out, err);
	else
		return cvm_err_set(err, ENOTSUP, "BadParameter",
				   "key.kty: must be RSA, RSA-HSM, EC, EC-HSM, oct or oct-HSM");
	if (r < 0)
		return r;
	r = cvm_key_wrap_pkey(pkey, out, err);
	if (r < 0)
		EVP_PKEY_free(pkey);
	return r;
}

/* ---- thumbprint ---------------------------------------------------------------------------- */

int cvm_key_thumbprint(const struct cvm_key *k, char **out, struct cvm_err *err)
{
	json_t *j = NULL;
	int r = cvm_key_to_jwk(k, k->kty == CVM_KTY_OCT, &j, err);
	if (r < 0)
		return r;
	/* RFC 7638 section 3: required members only, lexicographic order, no whitespace.
	 * All values are base64url or fixed names, so no JSON escaping is needed. */
	struct cvm_buf b = { 0 };
#define M(name) json_string_value(json_object_get(j, name))
	switch (k->kty) {
	case CVM_KTY_RSA:
		r = cvm_buf_printf(&b, "{\"e\":\"%s\",\"kty\":\"RSA\",\"n\":\"%s\"}", M("e"), M("n"));
		break;
	case CVM_KTY_EC:
		r = cvm_buf_printf(&b, "{\"crv\":\"%s\",\"kty\":\"EC\",\"x\":\"%s\",\"y\":\"%s\"}",
				   M("crv"), M("x"), M("y"));
		break;
	case CVM_KTY_OCT:
		r = cvm_buf_printf(&b, "{\"k\":\"%s\",\"kty\":\"oct\"}", M("k"));
		break;
	}
#undef M
	json_decref(j);
	uint8_t h[64];
	size_t hl = 0;
	if (r < 0)
		r = cvm_err_nomem(err);
	else
		r = cvm_digest("SHA256", b.data, b.len, h, &hl, err);
	cvm_buf_wipe(&b);
	if (r < 0)
		return r;
	*out = cvm_b64url_encode(h, hl);
	return *out ? 0 : cvm_err_nomem(err);
}
