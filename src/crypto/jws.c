/* SPDX-License-Identifier: Apache-2.0 */
/* JWS compact serialization (RFC 7515) and JWT (RFC 7519) on top of the digest signatures. */
#include "crypto-internal.h"

#include <math.h>
#include <openssl/crypto.h>
#include <string.h>
#include <strings.h>

static int hs256(const struct cvm_key *k, const char *alg, const char *input, size_t len,
		 uint8_t mac[32], struct cvm_err *err)
{
	if (k->kty != CVM_KTY_OCT)
		return cvm_err_badparam(err, "alg: %s requires an oct key", alg);
	return cvm_hmac_sha256(k->oct->data, k->oct->len, input, len, mac, err);
}

/* Signature over the signing input, in JOSE form. */
static int jws_signature(const struct cvm_key *k, const char *alg, const char *input, size_t len,
			 struct cvm_buf *sig, struct cvm_err *err)
{
	uint8_t h[64];
	size_t hl = 0;
	if (alg && strcmp(alg, "HS256") == 0) {
		int r = hs256(k, alg, input, len, h, err);
		if (r >= 0 && cvm_buf_append(sig, h, 32) < 0)
			r = cvm_err_nomem(err);
		OPENSSL_cleanse(h, sizeof(h));
		return r;
	}
	const char *md = cvm_alg_digest(alg);
	if (!md)
		return cvm_err_set(err, ENOTSUP, "BadParameter", "alg: unsupported JWS algorithm "
				   "'%.64s'", alg ? alg : "");
	int r = cvm_digest(md, input, len, h, &hl, err);
	if (r < 0)
		return r;
	return cvm_key_sign_digest(k, alg, h, hl, sig, err);
}

int cvm_jws_sign(const struct cvm_key *k, const char *alg, json_t *header_extra,
		 const uint8_t *payload, size_t len, char **compact, struct cvm_err *err)
{
	if (header_extra && !json_is_object(header_extra))
		return cvm_err_badparam(err, "header: must be a JSON object");
	if (!alg || !cvm_alg_digest(alg))
		return cvm_err_set(err, ENOTSUP, "BadParameter", "alg: unsupported JWS algorithm "
				   "'%.64s'", alg ? alg : "");
	json_t *h = json_pack("{ss}", "alg", alg);
	if (!h)
		return cvm_err_nomem(err);
	const char *name;
	json_t *v;
	json_object_foreach(header_extra, name, v) {
		if (strcmp(name, "alg") != 0 && json_object_set(h, name, v) < 0) {
			json_decref(h);
			return cvm_err_nomem(err);
		}
	}
	char *hs = json_dumps(h, JSON_COMPACT | JSON_PRESERVE_ORDER);
	json_decref(h);
	_cleanup_free_ char *h64 = hs ? cvm_b64url_encode(hs, strlen(hs)) : NULL;
	free(hs);
	_cleanup_free_ char *p64 = cvm_b64url_encode(payload, len);
	if (!h64 || !p64)
		return cvm_err_nomem(err);
	_cleanup_buf_ struct cvm_buf out = { 0 };
	_cleanup_buf_ struct cvm_buf sig = { 0 };
	if (cvm_buf_printf(&out, "%s.%s", h64, p64) < 0)
		return cvm_err_nomem(err);
	int r = jws_signature(k, alg, (const char *)out.data, out.len, &sig, err);
	if (r < 0)
		return r;
	_cleanup_free_ char *s64 = cvm_b64url_encode(sig.data, sig.len);
	if (!s64 || cvm_buf_printf(&out, ".%s", s64) < 0)
		return cvm_err_nomem(err);
	*compact = (char *)CVM_TAKE(out.data);
	return 0;
}

void cvm_jws_free(struct cvm_jws *jws)
{
	if (!jws)
		return;
	json_decref(jws->header);
	free(jws->payload);
	free(jws->sig);
	free(jws->signing_input);
	free(jws);
}

static bool is_b64url_char(char c)
{
	return (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') ||
	       c == '-' || c == '_';
}

/* Decode one part into a NUL-terminated malloc'd buffer. */
static int decode_part(const char *s, size_t slen, const char *what, uint8_t **out, size_t *outlen,
		       struct cvm_err *err)
{
	uint8_t *b = NULL;
	size_t n = 0;
	int r = cvm_b64url_decode(s, slen, &b, &n, what, err);
	if (r < 0)
		return r;
	uint8_t *t = realloc(b, n + 1);
	if (!t) {
		free(b);
		return cvm_err_nomem(err);
	}
	t[n] = 0;
	*out = t;
	*outlen = n;
	return 0;
}

int cvm_jws_parse(const char *compact, size_t len, struct cvm_jws **out, struct cvm_err *err)
{
	if (!compact || len == 0)
		return cvm_err_badparam(err, "jws: empty");
	if (len > CVM_JWS_MAX_LEN)
		return cvm_err_set(err, E2BIG, "BadParameter", "jws: longer than %d bytes",
				   CVM_JWS_MAX_LEN);
	size_t dots[2], nd = 0;
	for (size_t i = 0; i < len; i++) {
		if (compact[i] == '.') {
			if (nd == 2)
				return cvm_err_badparam(err, "jws: must have exactly 3 parts "
							     "(JWE and JSON serialization are not "
							     "accepted)");
			dots[nd++] = i;
		} else if (!is_b64url_char(compact[i])) {
			return cvm_err_badparam(err, "jws: invalid character at offset %zu (expected "
						     "unpadded base64url)", i);
		}
	}
	if (nd != 2)
		return cvm_err_badparam(err, "jws: must have exactly 3 parts");
	if (dots[0] == 0)
		return cvm_err_badparam(err, "jws.header: empty");
	if (dots[0] > CVM_JWS_MAX_HEADER * 4 / 3 + 4)
		return cvm_err_set(err, E2BIG, "BadParameter", "jws.header: longer than %d bytes",
				   CVM_JWS_MAX_HEADER);
	if (dots[1] + 1 == len)
		return cvm_err_badparam(err, "jws.signature: empty");

	struct cvm_jws *j = calloc(1, sizeof(*j));
	if (!j)
		return cvm_err_nomem(err);
	uint8_t *hdr = NULL;
	size_t hdr_len = 0;
	int r = decode_part(compact, dots[0], "jws.header", &hdr, &hdr_len, err);
	if (r >= 0)
		r = decode_part(compact + dots[0] + 1, dots[1] - dots[0] - 1, "jws.payload",
				&j->payload, &j->payload_len, err);
	if (r >= 0)
		r = decode_part(compact + dots[1] + 1, len - dots[1] - 1, "jws.signature", &j->sig,
				&j->sig_len, err);
	if (r < 0)
		goto fail;
	json_error_t jerr;
	j->header = json_loadb((const char *)hdr, hdr_len, JSON_REJECT_DUPLICATES, &jerr);
	if (!json_is_object(j->header)) {
		r = cvm_err_badparam(err, "jws.header: must be a JSON object");
		goto fail;
	}
	json_t *alg = json_object_get(j->header, "alg");
	if (!json_is_string(alg) || json_string_length(alg) == 0) {
		r = cvm_err_badparam(err, "jws.header.alg: required non-empty string");
		goto fail;
	}
	j->alg = json_string_value(alg);
	if (strcasecmp(j->alg, "none") == 0) {
		r = cvm_err_badparam(err, "jws.header.alg: 'none' is not accepted");
		goto fail;
	}
	/* We understand no critical extensions, so RFC 7515 4.1.11 says reject. */
	if (json_object_get(j->header, "crit")) {
		r = cvm_err_badparam(err, "jws.header.crit: no critical extensions are supported");
		goto fail;
	}
	j->signing_input_len = dots[1];
	j->signing_input = malloc(dots[1] + 1);
	if (!j->signing_input) {
		r = cvm_err_nomem(err);
		goto fail;
	}
	memcpy(j->signing_input, compact, dots[1]);
	j->signing_input[dots[1]] = 0;
	free(hdr);
	*out = j;
	return 0;
fail:
	free(hdr);
	cvm_jws_free(j);
	return r;
}

int cvm_jws_verify(const struct cvm_jws *jws, const struct cvm_key *pub, struct cvm_err *err)
{
	if (strcmp(jws->alg, "HS256") == 0) {
		uint8_t mac[32];
		int r = hs256(pub, jws->alg, jws->signing_input, jws->signing_input_len, mac, err);
		if (r < 0)
			return r;
		bool ok = jws->sig_len == 32 && CRYPTO_memcmp(mac, jws->sig, 32) == 0;
		OPENSSL_cleanse(mac, sizeof(mac));
		return ok ? 0 : cvm_err_set(err, EBADMSG, "BadParameter",
					    "jws.signature: verification failed");
	}
	const char *md = cvm_alg_digest(jws->alg);
	if (!md)
		return cvm_err_set(err, ENOTSUP, "BadParameter",
				   "jws.header.alg: unsupported algorithm '%.64s'", jws->alg);
	uint8_t h[64];
	size_t hl = 0;
	bool valid = false;
	int r = cvm_digest(md, jws->signing_input, jws->signing_input_len, h, &hl, err);
	if (r >= 0)
		r = cvm_key_verify_digest(pub, jws->alg, h, hl, jws->sig, jws->sig_len, &valid, err);
	if (r < 0)
		return cvm_err_prefix(err, "jws.header.alg");
	if (!valid)
		return cvm_err_set(err, EBADMSG, "BadParameter", "jws.signature: verification failed");
	return 0;
}

int cvm_jwt_sign(const struct cvm_key *k, const char *alg, json_t *header_extra, json_t *claims,
		 char **out, struct cvm_err *err)
{
	if (!json_is_object(claims))
		return cvm_err_badparam(err, "claims: must be a JSON object");
	if (header_extra && !json_is_object(header_extra))
		return cvm_err_badparam(err, "header: must be a JSON object");
	json_t *h = header_extra ? json_copy(header_extra) : json_object();
	if (!h)
		return cvm_err_nomem(err);
	if (!json_object_get(h, "typ") && json_object_set_new(h, "typ", json_string("JWT")) < 0) {
		json_decref(h);
		return cvm_err_nomem(err);
	}
	char *payload = json_dumps(claims, JSON_COMPACT | JSON_PRESERVE_ORDER);
	if (!payload) {
		json_decref(h);
		return cvm_err_nomem(err);
	}
	int r = cvm_jws_sign(k, alg, h, (const uint8_t *)payload, strlen(payload), out, err);
	free(payload);
	json_decref(h);
	return r;
}

int cvm_jwt_verify(const char *compact, size_t len, const struct cvm_key *pub, json_t **claims,
		   json_t **header, struct cvm_err *err)
{
	_cleanup_(cvm_jws_freep) struct cvm_jws *j = NULL;
	int r = cvm_jws_parse(compact, len, &j, err);
	if (r < 0)
		return r;
	r = cvm_jws_verify(j, pub, err);
	if (r < 0)
		return r;
	json_error_t jerr;
	json_t *c = json_loadb((const char *)j->payload, j->payload_len, JSON_REJECT_DUPLICATES,
			       &jerr);
	if (!json_is_object(c)) {
		json_decref(c);
		return cvm_err_badparam(err, "jwt.payload: must be a JSON object");
	}
	*claims = c;
	if (header)
		*header = json_incref(j->header);
	return 0;
}

/* A NumericDate: JSON number of seconds; fractions are allowed and truncated toward -inf. */
static int numeric_date(json_t *claims, const char *name, bool *present, int64_t *out,
			struct cvm_err *err)
{
	json_t *v = json_object_get(claims, name);
	*present = v != NULL;
	if (!v)
		return 0;
	if (json_is_integer(v)) {
		*out = json_integer_value(v);
		return 0;
	}
	if (json_is_real(v)) {
		double d = json_real_value(v);
		if (isfinite(d) && d > -9.2e18 && d < 9.2e18) {
			*out = (int64_t)floor(d);
			return 0;
		}
	}
	return cvm_err_badparam(err, "%s: must be a NumericDate (seconds since the epoch)", name);
}

int cvm_jwt_check_times(json_t *claims, int64_t now, int64_t leeway, bool allow_no_exp,
			struct cvm_err *err)
{
	if (!json_is_object(claims))
		return cvm_err_badparam(err, "claims: must be a JSON object");
	if (leeway < 0 || leeway > 86400)
		return cvm_err_badparam(err, "leeway: must be 0..86400 seconds");
	bool has_exp, has_nbf;
	int64_t exp = 0, nbf = 0;
	int r = numeric_date(claims, "exp", &has_exp, &exp, err);
	if (r >= 0)
		r = numeric_date(claims, "nbf", &has_nbf, &nbf, err);
	if (r < 0)
		return r;
	if (!has_exp && !allow_no_exp)
		return cvm_err_badparam(err, "exp: required");
	/* Compare without overflow: exp + leeway < now  <=>  exp < now - leeway. */
	if (has_exp && exp < now - leeway)
		return cvm_err_badparam(err, "exp: token expired at %lld (now %lld)", (long long)exp,
					(long long)now);
	if (has_nbf && nbf > now + leeway)
		return cvm_err_badparam(err, "nbf: token not valid before %lld (now %lld)",
					(long long)nbf, (long long)now);
	return 0;
}
