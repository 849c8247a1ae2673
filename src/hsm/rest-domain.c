/* SPDX-License-Identifier: Apache-2.0 */
/* Security domain REST routes (Managed HSM's shapes): activation of a fresh cvmd over the wire.
 *
 *  POST /securitydomain/download   create the domain for the officers' keys, activate, bootstrap
 *                                  the first administrator (credentials returned once). No
 *                                  identity exists yet, so the call carries the activation
 *                                  token cvmd wrote to its state dir (x-opencvm-activation-token).
 *  GET  /securitydomain/upload     the exchange key: RSA-3072, generated per process while
 *                                  un-activated, so shares travel encrypted to this process only.
 *  POST /securitydomain/upload     M shares re-encrypted to the exchange key; the shares are the
 *                                  credential (verified against the stored check value).
 *  GET  /securitydomain/{download,upload}/pending, GET /opencvm/status (no token needed).
 *
 * Chosen behaviour: the download blob is not stored anywhere (like Managed HSM, it is handed out
 * once, at activation); a POST /securitydomain/download on an activated HSM answers 409 Conflict,
 * after authenticating and authorizing the caller when it sends a bearer token.
 * Failed activation attempts (wrong token, wrong shares) are limited to SD_FAIL_MAX per
 * SD_FAIL_WINDOW_MS per process (429 TooManyRequests) to bound guessing. */
#include <pthread.h>
#include <string.h>
#include <unistd.h>

#include <openssl/x509.h>

#include <opencvm/crypto.h>
#include <opencvm/json.h>

#include "rest-internal.h"

#define SD_TOKEN_HEADER "x-opencvm-activation-token"
#define SD_TOKEN_BYTES 32
#define SD_FAIL_MAX 5
#define SD_FAIL_WINDOW_MS 60000
#define SD_SHARES_MAX REST_SD_OFFICERS_MAX
#define SD_EXCHANGE_BITS 3072
_Static_assert(REST_SD_SHARE_BYTES == SD_EXCHANGE_BITS / 8, "share size = exchange key size");

struct rest_domain {
	pthread_mutex_t lock;             /* activation calls are rare: one at a time */
	char *token_file;                 /* NULL: activation over REST disabled */
	struct cvm_secret *token;         /* the activation token while un-activated */
	struct cvm_key *xkey;             /* exchange key (private), created on first GET upload */
	json_t *xjwk;                     /* its public JWK with x5c */
	int64_t fail_ms[SD_FAIL_MAX];     /* times of the last failures (ring) */
	size_t fail_next;
	const char *dl_status, *ul_status; /* last outcome: "Success"/"Failed", NULL = none */
	char dl_details[256], ul_details[256];
};

#define P(c, n) cvm_http_req_param((c)->req, (n))

/* ---- activation token -------------------------------------------------------------------- */

/* Forget the token and remove its file: it authorizes nothing once the HSM is activated. */
static void token_drop(struct rest_domain *d)
{
	cvm_secret_free(d->token);
	d->token = NULL;
	if (d->token_file && unlink(d->token_file) < 0 && errno != ENOENT)
		cvm_log_warn("activation_token_remove_failed", "path=%s errno=%d", d->token_file,
			     errno);
}

static int token_create(struct rest_domain *d, struct cvm_err *err)
{
	uint8_t raw[SD_TOKEN_BYTES];
	int r = cvm_random(raw, sizeof(raw), err);
	if (r < 0)
		return r;
	char *t = cvm_b64url_encode(raw, sizeof(raw));
	OPENSSL_cleanse(raw, sizeof(raw));
	if (!t)
		return cvm_err_nomem(err);
	size_t tl = strlen(t);
	d->token = cvm_secret_from(t, tl);
	r = d->token ? cvm_file_write_atomic(d->token_file, t, tl, 0600, err) : cvm_err_nomem(err);
	cvm_free_secure(t, tl);
	if (r < 0)
		return cvm_err_prefix(err, "activation token %s", d->token_file);
	cvm_log_info("activation_token_written", "path=%s", d->token_file);
	return 0;
}

/* -EACCES when absent, -EPERM when wrong (constant-time compare; the length is not secret). */
static int token_check(struct rest_call *c, struct rest_domain *d, struct cvm_err *err)
{
	if (!d->token)
		return cvm_err_set(err, EPERM, "Forbidden",
				   "activation: activation over REST is disabled on this cvmd "
				   "(no activation token file configured)");
	const char *v = cvm_http_req_header(c->req, SD_TOKEN_HEADER);
	if (!v || !*v)
		return cvm_err_set(err, EACCES, "Unauthorized",
				   SD_TOKEN_HEADER ": required; cvmd wrote the activation token to "
				   "%s", d->token_file);
	if (strlen(v) != d->token->len || !cvm_memeq_ct(v, d->token->data, d->token->len))
		return cvm_err_set(err, EPERM, "Forbidden",
				   SD_TOKEN_HEADER ": wrong activation token (see %s)",
				   d->token_file);
	return 0;
}

/* ---- failure rate limit -------------------------------------------------------------------- */

static int rate_check(struct rest_domain *d, struct cvm_err *err)
{
	int64_t now = cvm_now_ms(), oldest = INT64_MAX;
	size_t recent = 0;
	for (size_t i = 0; i < SD_FAIL_MAX; i++) {
		if (d->fail_ms[i] && now - d->fail_ms[i] < SD_FAIL_WINDOW_MS) {
			recent++;
			if (d->fail_ms[i] < oldest)
				oldest = d->fail_ms[i];
		}
	}
	if (recent < SD_FAIL_MAX)
		return 0;
	return cvm_err_set(err, EAGAIN, "TooManyRequests",
			   "activation: %d failed attempts within %d s; retry in %lld s", SD_FAIL_MAX,
			   SD_FAIL_WINDOW_MS / 1000,
			   (long long)((oldest + SD_FAIL_WINDOW_MS - now) / 1000 + 1));
}

/* Counted and logged for the operator (the audit record has the request id and source). */
static void rate_fail(struct rest_domain *d, const char *op, const struct cvm_err *err)
{
	cvm_log_warn("securitydomain_attempt_failed", "op=%s code=%s error=\"%s\"", op, err->code,
		     err->msg);
	d->fail_ms[d->fail_next] = cvm_now_ms();
	d->fail_next = (d->fail_next + 1) % SD_FAIL_MAX;
}

/* ---- helpers ------------------------------------------------------------------------------ */

static int conflict_activated(struct cvm_err *err)
{
	return cvm_err_set(err, EEXIST, "Conflict",
			   "security domain: this HSM is already activated");
}

static int async_header(struct rest_call *c, const char *what)
{
	_cleanup_free_ char *v = cvm_asprintf("%s/securitydomain/%s/pending", c->base_url, what);
	return v ? cvm_http_resp_header(c->resp, "Azure-AsyncOperation", v) : -ENOMEM;
}

static void note(const char **status, char *details, size_t dlen, bool ok, const char *msg)
{
	*status = ok ? "Success" : "Failed";
	snprintf(details, dlen, "%s", msg);
}

/* Administrator credentials for the first identity, added to out as "administrator". The
 * download blob is already in out: a failure here is reported inside the answer, never by
 * dropping the blob (it exists nowhere else). */
static void add_bootstrap_admin(struct rest_call *c, json_t *out)
{
	struct cvm_principal_info info = { 0 };
	_cleanup_secret_ struct cvm_secret *secret = NULL;
	struct cvm_err e = { 0 };
	int r = cvm_hsm_bootstrap_admin(c->rest->h, "administrator", &info, &secret, &e);
	if (r == -EEXIST)
		return; /* identities exist (restored store): they keep administering it */
	json_t *a = r == 0 ? json_pack("{s:s,s:s,s:s,s:s%}", "client_id", info.client_id,
				       "object_id", info.oid, "tenant", c->rest->tenant,
				       "client_secret", (const char *)secret->data, secret->len)
			   : NULL;
	cvm_principal_info_clear(&info);
	if (!a || json_object_set_new(out, "administrator", a) < 0) {
		if (r == 0)
			cvm_err_nomem(&e);
		cvm_log_error("bootstrap_admin_failed", "code=%s error=\"%s\"", e.code, e.msg);
		json_object_set_new(out, "status_details",
				    json_string("activated, but the administrator could not be "
						"created; restart cvmd with admin_credentials_file"));
		return;
	}
	cvm_log_info("bootstrap_admin_created", "via=securitydomain");
}

/* ---- POST /securitydomain/download ---------------------------------------------------------- */

/* The officer key as the JSON carried it: a PEM string, or a JWK with x5c (base64 DER
 * certificate, wrapped into PEM here) or with n/e. Every failure is 400 naming the entry. */
static int officer_key(json_t *e, size_t i, struct cvm_key **out, struct cvm_err *err)
{
	int r;
	if (json_is_string(e)) {
		const char *pem = json_string_value(e);
		if (!cvm_str_startswith(pem, "-----BEGIN "))
			return cvm_err_badparam(err, "certificates[%zu]: expected PEM or a JWK", i);
		if ((r = cvm_key_from_pem(pem, strlen(pem), out, err)) < 0) {
			cvm_err_set_code(err, EINVAL, "BadParameter");
			return cvm_err_prefix(err, "certificates[%zu]", i);
		}
		return 0;
	}
	if (!json_is_object(e))
		return cvm_err_badparam(err, "certificates[%zu]: expected a JWK object or PEM, got %s",
					i, cvm_json_type_name(e));
	json_t *x5c = json_object_get(e, "x5c");
	if (!x5c) {
		if ((r = cvm_key_from_jwk(e, false, out, err)) < 0) {
			cvm_err_set_code(err, EINVAL, "BadParameter");
			return cvm_err_prefix(err, "certificates[%zu]", i);
		}
		return 0;
	}
	if (!json_is_array(x5c) || json_array_size(x5c) == 0)
		return cvm_err_badparam(err, "certificates[%zu].x5c: expected a non-empty array of "
					     "base64 certificates",
					i);
	const char *b64 = json_string_value(json_array_get(x5c, 0));
	if (!b64)
		return cvm_err_badparam(err, "certificates[%zu].x5c[0]: expected a string", i);
	struct cvm_buf b = { 0 };
	r = cvm_buf_append_str(&b, "-----BEGIN CERTIFICATE-----\n");
	for (size_t o = 0, n = strlen(b64); r == 0 && o < n; o += 64)
		r = cvm_buf_printf(&b, "%.64s\n", b64 + o);
	if (r == 0)
		r = cvm_buf_append_str(&b, "-----END CERTIFICATE-----\n");
	_cleanup_free_ char *pem = r == 0 ? cvm_buf_cstr(&b) : NULL;
	if (!pem) {
		cvm_buf_free(&b);
		return cvm_err_nomem(err);
	}
	if ((r = cvm_key_from_pem(pem, strlen(pem), out, err)) < 0) {
		cvm_err_set_code(err, EINVAL, "BadParameter");
		return cvm_err_prefix(err, "certificates[%zu].x5c[0]", i);
	}
	return 0;
}

/* One officer key as SPKI PEM: RSA of at least 2048 bits (what its share is encrypted to). */
static int officer_pem(json_t *e, size_t i, char **pem, struct cvm_err *err)
{
	_cleanup_key_ struct cvm_key *k = NULL;
	int r = officer_key(e, i, &k, err);
	if (r < 0)
		return r;
	if (cvm_key_type(k) != CVM_KTY_RSA || cvm_key_bits(k) < 2048)
		return cvm_err_badparam(err, "certificates[%zu]: an RSA key of at least 2048 bits is "
					     "required",
					i);
	return cvm_key_to_pem(k, false, pem, err);
}

void rest_sd_download_clear(struct rest_sd_download *d)
{
	for (size_t i = 0; i < REST_SD_OFFICERS_MAX; i++)
		free(d->pems[i]);
	memset(d, 0, sizeof(*d));
}

int rest_sd_parse_download(const uint8_t *buf, size_t len, struct rest_sd_download *out,
			   struct cvm_err *err)
{
	_cleanup_json_ json_t *body = NULL;
	json_t *certs = NULL;
	int64_t quorum = 2;
	memset(out, 0, sizeof(*out));
	int r = cvm_json_parse(buf, len, false, &body, err);
	if (r < 0)
		return r;
	certs = json_object_get(body, "certificates");
	if (json_is_object(certs)) /* {"certificates":{"keys":[...]}} */
		r = cvm_json_arr(certs, "keys", "certificates.keys", true, &certs, err);
	else
		r = cvm_json_arr(body, "certificates", "certificates", true, &certs, err);
	if (r == 0)
		r = cvm_json_int(body, "required", "required", false, 2, REST_SD_OFFICERS_MAX,
				 &quorum, NULL, err);
	if (r < 0)
		return r;
	size_t n = json_array_size(certs);
	if (n < REST_SD_OFFICERS_MIN || n > REST_SD_OFFICERS_MAX)
		return cvm_err_badparam(err, "certificates: expected %d..%d officer keys, got %zu",
					REST_SD_OFFICERS_MIN, REST_SD_OFFICERS_MAX, n);
	if ((size_t)quorum > n)
		return cvm_err_badparam(err, "required: the quorum must be 2..%zu (the number of "
					     "certificates), got %lld",
					n, (long long)quorum);
	for (size_t i = 0; i < n && r == 0; i++) {
		r = officer_pem(json_array_get(certs, i), i, &out->pems[i], err);
		for (size_t j = 0; r == 0 && j < i; j++)
			if (!strcmp(out->pems[i], out->pems[j]))
				r = cvm_err_badparam(err, "certificates[%zu]: the same key as "
							  "certificates[%zu]",
						     i, j);
	}
	if (r < 0) {
		rest_sd_download_clear(out);
		return r;
	}
	out->n = n;
	out->quorum = (unsigned)quorum;
	return 0;
}

static int download_create(struct rest_call *c, json_t **out, struct cvm_err *err)
{
	size_t len = 0;
	const uint8_t *b = cvm_http_req_body(c->req, &len);
	struct rest_sd_download p;
	int r = rest_sd_parse_download(b, len, &p, err);
	if (r < 0)
		return r;
	_cleanup_json_ json_t *dl = NULL;
	r = cvm_hsm_domain_create(c->rest->h, (const char *const *)p.pems, p.n, p.quorum, &dl,
				  err);
	rest_sd_download_clear(&p);
	if (r < 0)
		return r;
	_cleanup_free_ char *blob = cvm_json_dump(dl);
	*out = blob ? json_pack("{s:s}", "value", blob) : NULL;
	if (!*out)
		return cvm_err_nomem(err); /* unreachable in practice; the domain is active */
	add_bootstrap_admin(c, *out);
	return 0;
}

static int h_download(struct rest_call *c, json_t **out, struct cvm_err *err)
{
	struct rest_domain *d = c->rest->domain;
	struct cvm_hsm *h = c->rest->h;
	int r;
	if (cvm_hsm_activated(h)) {
		/* An identity may ask; it learns that the blob is not kept (after RBAC). */
		if (cvm_http_req_header(c->req, "Authorization")) {
			r = cvm_hsm_authenticate(h, cvm_http_req_header(c->req, "Authorization"),
						 c->base_url, c->oid, err);
			if (r == 0)
				r = cvm_hsm_rbac_check(h, c->oid,
						       cvm_hsm_data_action("POST", c->route->kind),
						       NULL, err);
			if (r < 0)
				return r;
		}
		return cvm_err_set(err, EEXIST, "Conflict",
				   "security domain: this HSM is activated; its security domain was "
				   "downloaded once, at activation, and is not stored (keep that "
				   "file and the officers' keys)");
	}
	pthread_mutex_lock(&d->lock);
	if ((r = rate_check(d, err)) < 0)
		goto out;
	if (cvm_hsm_activated(h)) { /* activated by a concurrent call */
		r = conflict_activated(err);
		goto out;
	}
	if (cvm_hsm_domain_exists(h)) {
		r = cvm_err_set(err, EEXIST, "Conflict",
				"security domain: this HSM's store already has one; activate it "
				"with POST /securitydomain/upload (cvm hsm activate)");
		goto out;
	}
	if ((r = token_check(c, d, err)) < 0) {
		rate_fail(d, "download", err);
		goto out;
	}
	r = download_create(c, out, err);
	note(&d->dl_status, d->dl_details, sizeof(d->dl_details), r == 0,
	     r == 0 ? "the security domain was created and the HSM activated" : err->msg);
	if (r == 0) {
		token_drop(d);
		r = async_header(c, "download") < 0 ? cvm_err_nomem(err) : 0;
	}
out:
	pthread_mutex_unlock(&d->lock);
	return r;
}

/* ---- GET /securitydomain/upload (exchange key) ------------------------------------------------ */

static int exchange_key_create(struct rest_domain *d, struct cvm_err *err)
{
	_cleanup_key_ struct cvm_key *k = NULL;
	_cleanup_json_ json_t *jwk = NULL;
	_cleanup_free_ char *thumb = NULL;
	_cleanup_free_ uint8_t *der = NULL;
	X509 *x = NULL;
	int r = cvm_key_generate_rsa(SD_EXCHANGE_BITS, 0, &k, err);
	if (r == 0)
		r = cvm_x509_self_signed(k, "cvmd security domain exchange", NULL, NULL, 1, &x, err);
	if (r == 0)
		r = cvm_key_to_jwk(k, false, &jwk, err);
	if (r == 0)
		r = cvm_key_thumbprint(k, &thumb, err);
	if (r < 0) {
		X509_free(x);
		return r;
	}
	int dlen = i2d_X509(x, NULL);
	uint8_t *p = dlen > 0 ? malloc((size_t)dlen) : NULL;
	der = p;
	if (!der || i2d_X509(x, &p) != dlen) {
		X509_free(x);
		return cvm_err_openssl(err, EIO, "exchange key certificate");
	}
	X509_free(x);
	uint8_t md[64];
	size_t mdlen = 0;
	_cleanup_free_ char *x5c = cvm_b64_encode(der, (size_t)dlen);
	if ((r = cvm_digest("SHA256", der, (size_t)dlen, md, &mdlen, err)) < 0)
		return r;
	if (!x5c || json_object_set_new(jwk, "kid", json_string(thumb)) < 0 ||
	    json_object_set_new(jwk, "alg", json_string("RSA-OAEP-256")) < 0 ||
	    json_object_set_new(jwk, "use", json_string("enc")) < 0 ||
	    json_object_set_new(jwk, "key_ops", json_pack("[s,s]", "wrapKey", "encrypt")) < 0 ||
	    json_object_set_new(jwk, "x5c", json_pack("[s]", x5c)) < 0 ||
	    cvm_json_set_b64url(jwk, "x5t#S256", md, mdlen) < 0)
		return cvm_err_nomem(err);
	d->xkey = CVM_TAKE(k);
	d->xjwk = CVM_TAKE(jwk);
	cvm_log_info("securitydomain_exchange_key", "kid=%s", thumb);
	return 0;
}

static int h_transfer_key(struct rest_call *c, json_t **out, struct cvm_err *err)
{
	struct rest_domain *d = c->rest->domain;
	if (cvm_hsm_activated(c->rest->h))
		return conflict_activated(err);
	pthread_mutex_lock(&d->lock);
	int r = d->xkey ? 0 : exchange_key_create(d, err);
	if (r == 0) {
		*out = json_pack("{s:s,s:O}", "key_format", "jwk", "transfer_key", d->xjwk);
		r = *out ? 0 : cvm_err_nomem(err);
	}
	pthread_mutex_unlock(&d->lock);
	return r;
}

/* ---- POST /securitydomain/upload -------------------------------------------------------------- */

void rest_sd_upload_clear(struct rest_sd_upload *u)
{
	for (size_t i = 0; i < REST_SD_OFFICERS_MAX; i++)
		free(u->shares[i]);
	json_decref(u->security_domain);
	memset(u, 0, sizeof(*u));
}

/* body {"value": JSON text {"shares":[b64url(RSA-OAEP-256(exchange key, share))...],
 * "security_domain"?: download blob (needed only when this store has no domain yet)}} */
int rest_sd_parse_upload(const uint8_t *buf, size_t len, struct rest_sd_upload *out,
			 struct cvm_err *err)
{
	_cleanup_json_ json_t *body = NULL, *value = NULL;
	const char *vs;
	json_t *shares, *sd = NULL;
	memset(out, 0, sizeof(*out));
	int r = cvm_json_parse(buf, len, false, &body, err);
	if (r == 0)
		r = cvm_json_str(body, "value", "value", true, &vs, NULL, err);
	if (r == 0 && (r = cvm_json_parse((const uint8_t *)vs, strlen(vs), false, &value, err)) < 0)
		cvm_err_prefix(err, "value");
	if (r == 0)
		r = cvm_json_arr(value, "shares", "value.shares", true, &shares, err);
	if (r == 0)
		r = cvm_json_obj(value, "security_domain", "value.security_domain", false, &sd, err);
	if (r < 0)
		return r;
	size_t n = json_array_size(shares);
	if (n < 2 || n > REST_SD_OFFICERS_MAX)
		return cvm_err_badparam(err, "value.shares: the quorum of shares is required (2..%d), "
					     "got %zu",
					REST_SD_OFFICERS_MAX, n);
	for (size_t i = 0; i < n && r == 0; i++) {
		const char *s = json_string_value(json_array_get(shares, i));
		char what[32];
		size_t ctlen = 0;
		snprintf(what, sizeof(what), "value.shares[%zu]", i);
		if (!s)
			r = cvm_err_badparam(err, "%s: expected a base64url string", what);
		else if ((r = cvm_b64url_decode(s, strlen(s), &out->shares[i], &ctlen, what, err)) ==
			 0 && ctlen != REST_SD_SHARE_BYTES)
			r = cvm_err_badparam(err, "%s: expected %d bytes (RSA-OAEP-256 under the "
						  "RSA-3072 exchange key), got %zu",
					     what, REST_SD_SHARE_BYTES, ctlen);
	}
	if (r < 0) {
		rest_sd_upload_clear(out);
		return r;
	}
	out->n = n;
	out->security_domain = json_incref(sd);
	return 0;
}

static int upload_shares(struct rest_call *c, struct rest_domain *d, struct cvm_err *err)
{
	size_t len = 0;
	const uint8_t *b = cvm_http_req_body(c->req, &len);
	struct rest_sd_upload p;
	int r = rest_sd_parse_upload(b, len, &p, err);
	if (r < 0)
		return r;
	struct cvm_secret *sec[SD_SHARES_MAX] = { 0 };
	for (size_t i = 0; i < p.n && r == 0; i++)
		if (cvm_rsa_oaep_decrypt(cvm_key_pkey(d->xkey), "SHA256", p.shares[i],
					 REST_SD_SHARE_BYTES, &sec[i], err) < 0)
			r = cvm_err_set(err, EBADMSG, "BadParameter",
					"value.shares[%zu]: not encrypted to this cvmd's exchange key "
					"(RSA-OAEP-256; fetch GET /securitydomain/upload again: the "
					"key changes when cvmd restarts)",
					i);
	if (r == 0) {
		bool have = cvm_hsm_domain_exists(c->rest->h);
		if (!have && !p.security_domain)
			r = cvm_err_badparam(err, "value.security_domain: required, this HSM's store "
						  "has no security domain yet");
		else if (have)
			r = cvm_hsm_domain_upload(c->rest->h, sec, p.n, err);
		else
			r = cvm_hsm_domain_restore(c->rest->h, p.security_domain, sec, p.n, err);
	}
	for (size_t i = 0; i < SD_SHARES_MAX; i++)
		cvm_secret_free(sec[i]);
	rest_sd_upload_clear(&p);
	/* Wrong shares are a bad request (400), not an authorization decision about a caller. */
	if (r == -EPERM)
		r = cvm_err_set_code(err, EINVAL, "BadParameter");
	return r;
}

static int h_upload(struct rest_call *c, json_t **out, struct cvm_err *err)
{
	struct rest_domain *d = c->rest->domain;
	if (cvm_hsm_activated(c->rest->h))
		return conflict_activated(err);
	pthread_mutex_lock(&d->lock);
	int r = rate_check(d, err);
	if (r == 0 && cvm_hsm_activated(c->rest->h))
		r = conflict_activated(err);
	if (r == 0 && !d->xkey)
		r = cvm_err_badparam(err, "exchange key: none yet; GET /securitydomain/upload first");
	if (r == 0) {
		/* The admin bootstrap (store without identities) needs the activation token too:
		 * identities are created only by the local operator. Checked before anything
		 * changes so a wrong token leaves the HSM as it was. */
		bool want_admin = cvm_http_req_header(c->req, SD_TOKEN_HEADER) != NULL;
		if (want_admin && (r = token_check(c, d, err)) < 0) {
			rate_fail(d, "upload", err);
			goto out;
		}
		r = upload_shares(c, d, err);
		note(&d->ul_status, d->ul_details, sizeof(d->ul_details), r == 0,
		     r == 0 ? "the security domain was uploaded and the HSM activated" : err->msg);
		if (r < 0) {
			rate_fail(d, "upload", err);
			goto out;
		}
		*out = json_pack("{s:s,s:s}", "status", "Success", "status_details", d->ul_details);
		if (!*out) {
			r = cvm_err_nomem(err);
			goto out;
		}
		if (want_admin)
			add_bootstrap_admin(c, *out);
		token_drop(d);
		r = async_header(c, "upload") < 0 ? cvm_err_nomem(err) : 0;
	}
out:
	pthread_mutex_unlock(&d->lock);
	return r;
}

/* ---- status -------------------------------------------------------------------------------- */

static int pending(struct rest_call *c, const char *status, const char *details, json_t **out,
		   struct cvm_err *err)
{
	if (cvm_hsm_activated(c->rest->h))
		*out = json_pack("{s:s,s:s}", "status", "Success", "status_details",
				 "the HSM is activated");
	else if (status)
		*out = json_pack("{s:s,s:s}", "status", status, "status_details", details);
	else
		*out = json_pack("{s:s,s:s}", "status", "Failed", "status_details",
				 "not activated: no security domain has been created or uploaded "
				 "on this cvmd yet");
	return *out ? 0 : cvm_err_nomem(err);
}

static int h_download_pending(struct rest_call *c, json_t **out, struct cvm_err *err)
{
	struct rest_domain *d = c->rest->domain;
	pthread_mutex_lock(&d->lock);
	int r = pending(c, d->dl_status, d->dl_details, out, err);
	pthread_mutex_unlock(&d->lock);
	return r;
}

static int h_upload_pending(struct rest_call *c, json_t **out, struct cvm_err *err)
{
	struct rest_domain *d = c->rest->domain;
	pthread_mutex_lock(&d->lock);
	int r = pending(c, d->ul_status, d->ul_details, out, err);
	pthread_mutex_unlock(&d->lock);
	return r;
}

/* What an operator needs before any identity exists: is this cvmd activated, does its store
 * hold a domain (then activate = upload, else init = download). */
static int h_status(struct rest_call *c, json_t **out, struct cvm_err *err)
{
	*out = json_pack("{s:b,s:b}", "activated", cvm_hsm_activated(c->rest->h),
			 "security_domain", cvm_hsm_domain_exists(c->rest->h));
	return *out ? 0 : cvm_err_nomem(err);
}

/* ---- table and lifecycle ------------------------------------------------------------------- */

#define SD (REST_API_VERSION)
const struct rest_route cvm_hsm_rest_domain_routes[] = {
	ROUTE("POST", "/securitydomain/download", "securitydomain/download", CVM_HSM_BODY_NONE, SD,
	      202, h_download),
	ROUTE("GET", "/securitydomain/download/pending", "securitydomain/download/status",
	      CVM_HSM_BODY_NONE, SD, 0, h_download_pending),
	ROUTE("GET", "/securitydomain/upload", "securitydomain/transferkey", CVM_HSM_BODY_NONE, SD,
	      0, h_transfer_key),
	ROUTE("POST", "/securitydomain/upload", "securitydomain/upload", CVM_HSM_BODY_NONE, SD, 202,
	      h_upload),
	ROUTE("GET", "/securitydomain/upload/pending", "securitydomain/upload/status",
	      CVM_HSM_BODY_NONE, SD, 0, h_upload_pending),
	ROUTE("GET", "/opencvm/status", "opencvm/status", CVM_HSM_BODY_NONE, 0, 0, h_status),
};
const size_t cvm_hsm_rest_domain_routes_n = CVM_ARRAY_SIZE(cvm_hsm_rest_domain_routes);

void rest_domain_free(struct rest_domain *d)
{
	if (!d)
		return;
	pthread_mutex_destroy(&d->lock);
	cvm_secret_free(d->token);
	cvm_key_free(d->xkey);
	json_decref(d->xjwk);
	free(d->token_file);
	free(d);
}

int rest_domain_new(struct cvm_hsm *h, const char *token_file, struct rest_domain **out,
		    struct cvm_err *err)
{
	struct rest_domain *d = calloc(1, sizeof(*d));
	if (!d)
		return cvm_err_nomem(err);
	pthread_mutex_init(&d->lock, NULL);
	int r = 0;
	if (token_file && !(d->token_file = strdup(token_file)))
		r = cvm_err_nomem(err);
	if (r == 0 && d->token_file) {
		if (cvm_hsm_activated(h))
			token_drop(d); /* a stale file from an earlier, un-activated run */
		else
			r = token_create(d, err);
	}
	if (r < 0) {
		rest_domain_free(d);
		return r;
	}
	*out = d;
	return 0;
}
