/* SPDX-License-Identifier: Apache-2.0 */
/* hsm issuer keys: OIDC discovery ({iss}/.well-known/openid-configuration -> jwks_uri) and a
 * per-issuer JWKS cache with a TTL and a rate-limited refetch on an unknown kid. Only issuers a
 * release policy names ever reach this file, so the cache is bounded by the policies. */
#include <string.h>

#include <openssl/x509.h>

#include <opencvm/http.h>

#include "auth-internal.h"

#define JWKS_MAX_KEYS 64
#define JWKS_MAX_ISSUERS 256
#define REFETCH_MIN_S 10
#define DOC_MAX (1024 * 1024)

struct jwks_key {
	char *kid;
	struct cvm_key *key;
};

struct hsm_jwks_issuer {
	struct hsm_jwks_issuer *next;
	char *issuer;              /* normalized */
	int64_t fetched;           /* 0 = never succeeded */
	int64_t last_refetch;      /* last refetch caused by an unknown kid */
	size_t n;
	struct jwks_key keys[JWKS_MAX_KEYS];
};

static void issuer_clear_keys(struct hsm_jwks_issuer *is)
{
	for (size_t i = 0; i < is->n; i++) {
		free(is->keys[i].kid);
		cvm_key_free(is->keys[i].key);
	}
	is->n = 0;
}

void hsm_jwks_free_all(struct cvm_hsm_auth *a)
{
	struct hsm_jwks_issuer *is = a->jwks;
	while (is) {
		struct hsm_jwks_issuer *next = is->next;
		issuer_clear_keys(is);
		free(is->issuer);
		free(is);
		is = next;
	}
	a->jwks = NULL;
	a->jwks_count = 0;
}

/* ---- fetching --------------------------------------------------------------------------- */

static int get_json(struct cvm_hsm_auth *a, const char *url, json_t **out, struct cvm_err *err)
{
	pthread_mutex_lock(&a->lock);
	_cleanup_free_ char *ca = cvm_strdup(a->ca_file);
	long timeout = a->http_timeout_ms;
	pthread_mutex_unlock(&a->lock);
	struct cvm_http_client_opts o = {
		.ca_file = ca,
		.allow_plain_http_loopback = true, /* the http module allows it for loopback only */
		.timeout_ms = timeout,
		.max_response = DOC_MAX,
	};
	static const char *const hdrs[] = { "Accept: application/json", NULL };
	struct cvm_http_result res = { 0 };
	int r = cvm_http_request(&o, "GET", url, hdrs, NULL, 0, &res, err);
	if (r < 0) {
		cvm_http_result_free(&res);
		return cvm_err_set(err, -r == EPERM ? EPERM : EIO,
				   -r == EPERM ? "Forbidden" : "InternalError",
				   "issuer keys: GET %s failed: %s", url, err->msg);
	}
	if (res.status != 200) {
		long st = res.status;
		cvm_http_result_free(&res);
		return cvm_err_internal(err, "issuer keys: GET %s answered HTTP %ld", url, st);
	}
	r = cvm_json_parse(res.body.data, res.body.len, false, out, err);
	cvm_http_result_free(&res);
	if (r < 0) {
		cvm_err_prefix(err, "issuer keys: %s", url);
		return cvm_err_set_code(err, EIO, "InternalError");
	}
	return 0;
}

/* One JWK: n/e or crv/x/y when present, else the first x5c certificate's key (MAA's /certs
 * publishes only x5c). */
static int jwk_key(json_t *jwk, struct cvm_key **out, struct cvm_err *err)
{
	if (json_object_get(jwk, "n") || json_object_get(jwk, "x"))
		return cvm_key_from_jwk(jwk, false, out, err);
	json_t *x5c = json_object_get(jwk, "x5c");
	const char *c0 = json_string_value(json_array_get(x5c, 0));
	if (!c0)
		return cvm_err_badparam(err, "jwk: neither n/e, x/y nor x5c");
	_cleanup_free_ uint8_t *der = NULL;
	size_t dlen = 0;
	int r = cvm_b64_decode(c0, strlen(c0), &der, &dlen, "x5c[0]", err);
	if (r < 0)
		return r;
	const uint8_t *p = der;
	X509 *x = d2i_X509(NULL, &p, (long)dlen);
	if (!x)
		return cvm_err_openssl(err, EINVAL, "x5c[0]: not a DER certificate");
	EVP_PKEY *pk = X509_get_pubkey(x);
	X509_free(x);
	if (!pk)
		return cvm_err_openssl(err, EINVAL, "x5c[0]: certificate key");
	r = cvm_key_from_pkey(pk, out, err);
	if (r < 0)
		EVP_PKEY_free(pk);
	return r;
}

struct fetched {
	size_t n;
	struct jwks_key keys[JWKS_MAX_KEYS];
};

static void fetched_clear(struct fetched *f)
{
	for (size_t i = 0; i < f->n; i++) {
		free(f->keys[i].kid);
		cvm_key_free(f->keys[i].key);
	}
	f->n = 0;
}

static int fetch_issuer(struct cvm_hsm_auth *a, const char *iss_raw, const char *iss_norm,
			struct fetched *f, struct cvm_err *err)
{
	size_t l = strlen(iss_raw);
	while (l && iss_raw[l - 1] == '/')
		l--;
	_cleanup_free_ char *disc = cvm_asprintf("%.*s/.well-known/openid-configuration", (int)l,
						 iss_raw);
	if (!disc)
		return cvm_err_nomem(err);
	_cleanup_json_ json_t *meta = NULL;
	int r = get_json(a, disc, &meta, err);
	if (r < 0)
		return r;
	const char *mi = json_string_value(json_object_get(meta, "issuer"));
	if (mi) {
		_cleanup_free_ char *mn = NULL;
		struct cvm_err e2 = { 0 };
		if (cvm_hsm_authority_normalize(mi, "issuer", &mn, &e2) < 0 ||
		    strcmp(mn, iss_norm) != 0)
			return cvm_err_internal(err, "issuer keys: %s names issuer \"%s\", not the "
						"token's", disc, mi);
	}
	const char *ju = json_string_value(json_object_get(meta, "jwks_uri"));
	if (!ju)
		return cvm_err_internal(err, "issuer keys: %s has no jwks_uri", disc);
	_cleanup_json_ json_t *jwks = NULL;
	if ((r = get_json(a, ju, &jwks, err)) < 0)
		return r;
	json_t *keys = json_object_get(jwks, "keys");
	if (!json_is_array(keys))
		return cvm_err_internal(err, "issuer keys: %s: expected {\"keys\":[...]}", ju);
	size_t i;
	json_t *jwk;
	json_array_foreach(keys, i, jwk) {
		if (f->n == JWKS_MAX_KEYS)
			break;
		struct cvm_key *k = NULL;
		struct cvm_err kerr = { 0 };
		/* Keys we cannot use (other kty, encryption keys) are skipped, not fatal. */
		const char *use = json_string_value(json_object_get(jwk, "use"));
		if ((use && strcmp(use, "sig") != 0) || jwk_key(jwk, &k, &kerr) < 0) {
			cvm_log_debug("hsm_jwks_key_skipped", "issuer=%s index=%zu", iss_norm, i);
			continue;
		}
		f->keys[f->n].kid = cvm_strdup(json_string_value(json_object_get(jwk, "kid")));
		f->keys[f->n].key = k;
		f->n++;
	}
	if (f->n == 0)
		return cvm_err_internal(err, "issuer keys: %s has no usable signing key", ju);
	cvm_log_info("hsm_jwks_fetched", "issuer=%s keys=%zu", iss_norm, f->n);
	return 0;
}

/* ---- cache ------------------------------------------------------------------------------ */

static struct hsm_jwks_issuer *issuer_get(struct cvm_hsm_auth *a, const char *norm, bool create)
{
	for (struct hsm_jwks_issuer *is = a->jwks; is; is = is->next)
		if (strcmp(is->issuer, norm) == 0)
			return is;
	if (!create || a->jwks_count >= JWKS_MAX_ISSUERS)
		return NULL;
	struct hsm_jwks_issuer *is = calloc(1, sizeof(*is));
	if (!is || !(is->issuer = strdup(norm))) {
		free(is);
		return NULL;
	}
	is->next = a->jwks;
	a->jwks = is;
	a->jwks_count++;
	return is;
}

/* Caller holds jwks_lock. A new reference or NULL. kid NULL: the only key. */
static struct cvm_key *issuer_lookup(struct hsm_jwks_issuer *is, const char *kid)
{
	if (!kid)
		return is->n == 1 ? cvm_key_ref(is->keys[0].key) : NULL;
	for (size_t i = 0; i < is->n; i++)
		if (is->keys[i].kid && strcmp(is->keys[i].kid, kid) == 0)
			return cvm_key_ref(is->keys[i].key);
	return NULL;
}

int hsm_jwks_key(struct cvm_hsm *h, const char *issuer, const char *kid, struct cvm_key **out,
		 struct cvm_err *err)
{
	struct cvm_hsm_auth *a;
	int r = hsm_auth(h, &a, err);
	if (r < 0)
		return r;
	_cleanup_free_ char *norm = NULL;
	if ((r = cvm_hsm_authority_normalize(issuer, "target.iss", &norm, err)) < 0)
		return r;
	int64_t now = cvm_now();
	pthread_mutex_lock(&a->lock);
	int ttl = a->jwks_ttl_s;
	pthread_mutex_unlock(&a->lock);

	pthread_mutex_lock(&a->jwks_lock);
	struct hsm_jwks_issuer *is = issuer_get(a, norm, true);
	if (!is) {
		pthread_mutex_unlock(&a->jwks_lock);
		return cvm_err_internal(err, "issuer keys: too many issuers cached");
	}
	bool fresh = is->fetched && now - is->fetched < ttl;
	struct cvm_key *k = fresh ? issuer_lookup(is, kid) : NULL;
	/* Fetch when stale; on an unknown kid (key rotation) refetch at most every
	 * REFETCH_MIN_S, so tokens with made-up kids cannot make us hammer the authority. */
	bool fetch = !k && (!fresh || now - is->last_refetch >= REFETCH_MIN_S);
	if (fetch && fresh)
		is->last_refetch = now;
	pthread_mutex_unlock(&a->jwks_lock);
	if (k) {
		*out = k;
		return 0;
	}
	if (fetch) {
		struct fetched f = { 0 };
		r = fetch_issuer(a, issuer, norm, &f, err);
		if (r < 0) {
			fetched_clear(&f);
			return r;
		}
		pthread_mutex_lock(&a->jwks_lock);
		issuer_clear_keys(is);
		memcpy(is->keys, f.keys, sizeof(f.keys[0]) * f.n);
		is->n = f.n;
		is->fetched = now;
		k = issuer_lookup(is, kid);
		pthread_mutex_unlock(&a->jwks_lock);
	}
	if (!k)
		return cvm_err_set(err, EBADMSG, "BadParameter",
				   "target: issuer %s publishes no signing key with kid \"%s\"", norm,
				   kid ? kid : "(none)");
	*out = k;
	return 0;
}
