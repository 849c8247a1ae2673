/* SPDX-License-Identifier: Apache-2.0 */
/* hsm OAuth2: the client-credentials token endpoint in Entra's shape (client secret or RFC 7523
 * certificate assertion) and bearer-token authentication with a bounded cache. */
#include <ctype.h>
#include <string.h>

#include <openssl/evp.h>

#include "auth-internal.h"

#define FORM_MAX (64 * 1024)
#define ASSERTION_TYPE "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"
#define LEEWAY 60

static int oauth_err(struct cvm_err *err, int errnum, const char *code, const char *fmt, ...)
	CVM_PRINTF(4, 5);
static int oauth_err(struct cvm_err *err, int errnum, const char *code, const char *fmt, ...)
{
	char msg[sizeof(err->msg)];
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(msg, sizeof(msg), fmt, ap);
	va_end(ap);
	return cvm_err_set(err, errnum, code, "%s", msg);
}

json_t *cvm_hsm_oauth_error_json(const struct cvm_err *err)
{
	return json_pack("{s:s,s:s}", "error", err->code[0] ? err->code : "server_error",
			 "error_description", err->msg);
}

int cvm_hsm_oauth_jwks(struct cvm_hsm *h, json_t **out, struct cvm_err *err)
{
	struct cvm_key *key;
	const char *kid;
	int r = hsm_token_key(h, &key, &kid, err);
	if (r < 0)
		return r;
	json_t *jwk = NULL;
	if ((r = cvm_key_to_jwk(key, false, &jwk, err)) < 0)
		return r;
	if (json_object_set_new(jwk, "use", json_string("sig")) < 0 ||
	    json_object_set_new(jwk, "alg", json_string("RS256")) < 0 ||
	    json_object_set_new(jwk, "kid", json_string(kid)) < 0 ||
	    !(*out = json_pack("{s:[o]}", "keys", jwk)))
		return cvm_err_nomem(err);
	return 0;
}

/* ---- form parsing ----------------------------------------------------------------------- */

enum form_field { F_GRANT, F_CLIENT_ID, F_SECRET, F_ASSERTION, F_ASSERTION_TYPE, F_SCOPE, F_N };
static const char *const form_names[F_N] = {
	"grant_type", "client_id", "client_secret", "client_assertion", "client_assertion_type",
	"scope",
};

struct form {
	char *v[F_N];
	size_t len[F_N];
};

static void form_clear(struct form *f)
{
	for (int i = 0; i < F_N; i++)
		if (f->v[i])
			cvm_free_secure(f->v[i], f->len[i]);
}

static int hexval(uint8_t c)
{
	if (c >= '0' && c <= '9')
		return c - '0';
	c = (uint8_t)tolower(c);
	if (c >= 'a' && c <= 'f')
		return c - 'a' + 10;
	return -1;
}

/* Percent-decode (and '+' -> ' ') buf[0..len) into a malloc'd NUL-terminated string. */
static int form_decode(const uint8_t *buf, size_t len, char **out, size_t *outlen,
		       const char *what, struct cvm_err *err)
{
	char *s = malloc(len + 1);
	if (!s)
		return cvm_err_nomem(err);
	size_t o = 0;
	for (size_t i = 0; i < len; i++) {
		uint8_t c = buf[i];
		if (c == '+') {
			s[o++] = ' ';
		} else if (c == '%') {
			int hi = i + 2 < len ? hexval(buf[i + 1]) : -1;
			int lo = i + 2 < len ? hexval(buf[i + 2]) : -1;
			if (hi < 0 || lo < 0 || (hi == 0 && lo == 0)) {
				cvm_free_secure(s, len + 1);
				return oauth_err(err, EINVAL, "invalid_request",
						 "AADSTS900144: malformed percent-encoding in '%s'",
						 what);
			}
			s[o++] = (char)(hi << 4 | lo);
			i += 2;
		} else if (c == 0) {
			cvm_free_secure(s, len + 1);
			return oauth_err(err, EINVAL, "invalid_request", "NUL byte in '%s'", what);
		} else {
			s[o++] = (char)c;
		}
	}
	s[o] = 0;
	*out = s;
	*outlen = o;
	return 0;
}

static int form_parse(const uint8_t *buf, size_t len, struct form *f, struct cvm_err *err)
{
	if (len > FORM_MAX)
		return oauth_err(err, E2BIG, "invalid_request", "request body larger than %d bytes",
				 FORM_MAX);
	size_t i = 0;
	while (i < len) {
		size_t end = i;
		while (end < len && buf[end] != '&')
			end++;
		size_t eq = i;
		while (eq < end && buf[eq] != '=')
			eq++;
		if (end > i) {
			_cleanup_free_ char *key = NULL;
			size_t klen = 0;
			int r = form_decode(buf + i, eq - i, &key, &klen, "parameter name", err);
			if (r < 0)
				return r;
			for (int k = 0; k < F_N; k++) {
				if (strcmp(key, form_names[k]) != 0)
					continue;
				if (f->v[k])
					return oauth_err(err, EINVAL, "invalid_request",
							 "AADSTS90015: parameter '%s' is given "
							 "more than once", form_names[k]);
				size_t vs = eq < end ? eq + 1 : end;
				r = form_decode(buf + vs, end - vs, &f->v[k], &f->len[k],
						form_names[k], err);
				if (r < 0)
					return r;
			}
			/* Unknown parameters are ignored (RFC 6749 section 3.2). */
		}
		i = end + 1;
	}
	return 0;
}

/* ---- resources -------------------------------------------------------------------------- */

static bool resource_accepted(const char *res, const char *base_url)
{
	return (base_url && hsm_url_eq(res, base_url)) || hsm_url_eq(res, CVM_HSM_RESOURCE_MHSM) ||
	       hsm_url_eq(res, CVM_HSM_RESOURCE_VAULT);
}

/* "https://managedhsm.azure.net/.default" (also with "//.default") -> resource. */
static int scope_resource(const char *scope, const char *base_url, char **out,
			  struct cvm_err *err)
{
	if (!scope || !*scope)
		return oauth_err(err, EINVAL, "invalid_request",
				 "AADSTS900144: The request body must contain the following "
				 "parameter: 'scope'.");
	const char *suffix = "/.default";
	size_t n = strlen(scope), sl = strlen(suffix);
	if (strchr(scope, ' ') || n <= sl || strcmp(scope + n - sl, suffix) != 0)
		return oauth_err(err, EINVAL, "invalid_scope",
				 "AADSTS1002012: The provided value for scope %s is not valid. "
				 "Client credential flows must have a scope value with /.default "
				 "suffixed to the resource identifier (application ID URI).", scope);
	char *res = strndup(scope, n - sl);
	if (!res)
		return cvm_err_nomem(err);
	size_t rl = strlen(res);
	if (rl && res[rl - 1] == '/')
		res[rl - 1] = 0;
	if (!resource_accepted(res, base_url)) {
		oauth_err(err, EINVAL, "invalid_scope",
			  "AADSTS500011: The resource principal named %s was not found in the "
			  "tenant.", res);
		free(res);
		return -EINVAL;
	}
	*out = res;
	return 0;
}

static char *strip_slash(const char *u)
{
	char *s = strdup(u ? u : "https://localhost");
	if (s) {
		size_t n = strlen(s);
		while (n && s[n - 1] == '/')
			s[--n] = 0;
	}
	return s;
}

/* ---- client assertion (RFC 7523) -------------------------------------------------------- */

static int check_assertion(struct cvm_hsm *h, const char *client_id, const char *assertion,
			   size_t alen, const char *token_url, const char *issuer,
			   struct hsm_principal **out, struct cvm_err *err)
{
	_cleanup_(hsm_principal_freep) struct hsm_principal *p = NULL;
	int r = hsm_principal_by_client_id(h, client_id, &p, err);
	if (r == -ENOENT || (r == 0 && !p->cert_der))
		return oauth_err(err, EACCES, "invalid_client",
				 "AADSTS700016: Application with identifier '%s' was not found or "
				 "has no certificate credential.", client_id);
	if (r < 0)
		return r;
	_cleanup_jws_ struct cvm_jws *jws = NULL;
	r = cvm_jws_parse(assertion, alen, &jws, err);
	if (r < 0)
		return oauth_err(err, EACCES, "invalid_client",
				 "AADSTS50027: client_assertion is not a valid JWT: %s", err->msg);
	const char *x5t256 = json_string_value(json_object_get(jws->header, "x5t#S256"));
	const char *x5t = json_string_value(json_object_get(jws->header, "x5t"));
	bool match = (x5t256 && strcmp(x5t256, p->cert_s256) == 0) ||
		     (!x5t256 && x5t && strcmp(x5t, p->cert_s1) == 0);
	if (!match)
		return oauth_err(err, EACCES, "invalid_client",
				 "AADSTS700027: The certificate with identifier used to sign the "
				 "client assertion is not registered on application %s (header "
				 "x5t#S256/x5t).", client_id);
	_cleanup_key_ struct cvm_key *pub = NULL;
	const uint8_t *der = p->cert_der;
	X509 *x = d2i_X509(NULL, &der, (long)p->cert_len);
	if (!x)
		return cvm_err_openssl(err, EIO, "stored client certificate");
	EVP_PKEY *pk = X509_get_pubkey(x);
	X509_free(x);
	if (!pk)
		return cvm_err_openssl(err, EIO, "stored client certificate key");
	r = cvm_key_from_pkey(pk, &pub, err);
	if (r < 0) {
		EVP_PKEY_free(pk);
		return r;
	}
	r = cvm_jws_verify(jws, pub, err);
	if (r < 0)
		return oauth_err(err, EACCES, "invalid_client",
				 "AADSTS700027: client_assertion signature validation failed: %s",
				 err->msg);
	_cleanup_json_ json_t *claims = NULL;
	struct cvm_err jerr = { 0 };
	if (cvm_json_parse(jws->payload, jws->payload_len, false, &claims, &jerr) < 0)
		return oauth_err(err, EACCES, "invalid_client",
				 "AADSTS50027: client_assertion payload: %s", jerr.msg);
	int64_t now = cvm_now();
	if (cvm_jwt_check_times(claims, now, LEEWAY, false, &jerr) < 0)
		return oauth_err(err, EACCES, "invalid_client", "AADSTS700024: client_assertion: %s",
				 jerr.msg);
	json_t *exp = json_object_get(claims, "exp");
	if (json_is_integer(exp) && json_integer_value(exp) > now + 3600 + LEEWAY)
		return oauth_err(err, EACCES, "invalid_client",
				 "AADSTS700024: client_assertion: exp is more than one hour ahead");
	const char *iss = json_string_value(json_object_get(claims, "iss"));
	const char *sub = json_string_value(json_object_get(claims, "sub"));
	if (!iss || !sub || strcmp(iss, client_id) != 0 || strcmp(sub, client_id) != 0)
		return oauth_err(err, EACCES, "invalid_client",
				 "AADSTS700023: client_assertion: iss and sub must be the client_id");
	json_t *aud = json_object_get(claims, "aud");
	bool aud_ok = false;
	if (json_is_string(aud)) {
		const char *a = json_string_value(aud);
		aud_ok = hsm_url_eq(a, token_url) || hsm_url_eq(a, issuer);
	} else if (json_is_array(aud)) {
		size_t i;
		json_t *v;
		json_array_foreach(aud, i, v) {
			const char *a = json_string_value(v);
			if (a && (hsm_url_eq(a, token_url) || hsm_url_eq(a, issuer)))
				aud_ok = true;
		}
	}
	if (!aud_ok)
		return oauth_err(err, EACCES, "invalid_client",
				 "AADSTS700022: client_assertion: aud must be %s", token_url);
	*out = CVM_TAKE(p);
	return 0;
}

/* ---- token endpoint --------------------------------------------------------------------- */

static int issue_token(struct cvm_hsm *h, const char *issuer, const char *tenant,
		       const char *resource, const struct hsm_principal *p, json_t **out,
		       struct cvm_err *err)
{
	struct cvm_key *key;
	const char *kid;
	int r = hsm_token_key(h, &key, &kid, err);
	if (r < 0)
		return r;
	uint8_t uti_raw[16];
	if ((r = cvm_random(uti_raw, sizeof(uti_raw), err)) < 0)
		return r;
	_cleanup_free_ char *uti = cvm_b64url_encode(uti_raw, sizeof(uti_raw));
	int64_t now = cvm_now();
	_cleanup_json_ json_t *claims = json_pack(
		"{s:s,s:s,s:I,s:I,s:I,s:s,s:s,s:s,s:s,s:s,s:s,s:s,s:s}", "aud", resource, "iss",
		issuer, "iat", (json_int_t)now, "nbf", (json_int_t)now, "exp",
		(json_int_t)(now + CVM_HSM_TOKEN_LIFETIME), "appid", p->client_id, "azp",
		p->client_id, "idtyp", "app", "oid", p->oid, "sub", p->oid, "tid", tenant, "uti",
		uti ? uti : "", "ver", "2.0");
	_cleanup_json_ json_t *hdr = json_pack("{s:s}", "kid", kid);
	if (!claims || !hdr || !uti)
		return cvm_err_nomem(err);
	_cleanup_free_ char *jwt = NULL;
	r = cvm_jwt_sign(key, "RS256", hdr, claims, &jwt, err);
	if (r < 0)
		return r;
	*out = json_pack("{s:s,s:i,s:i,s:s}", "token_type", "Bearer", "expires_in",
			 CVM_HSM_TOKEN_LIFETIME, "ext_expires_in", CVM_HSM_TOKEN_LIFETIME,
			 "access_token", jwt);
	return *out ? 0 : cvm_err_nomem(err);
}

int cvm_hsm_oauth_token(struct cvm_hsm *h, const char *base_url, const char *tenant,
			const uint8_t *form, size_t form_len, json_t **out, struct cvm_err *err)
{
	char tid[37];
	int r = cvm_hsm_tenant_id(h, tid, err);
	if (r < 0)
		return r;
	if (!tenant || (strcasecmp(tenant, tid) != 0 && strcmp(tenant, "organizations") != 0 &&
			strcmp(tenant, "common") != 0))
		return oauth_err(err, EINVAL, "invalid_request",
				 "AADSTS90002: Tenant '%s' not found.", tenant ? tenant : "");
	_cleanup_(form_clear) struct form f = { 0 };
	r = form_parse(form, form_len, &f, err);
	if (r < 0)
		return r;
	if (!f.v[F_GRANT])
		return oauth_err(err, EINVAL, "invalid_request",
				 "AADSTS900144: The request body must contain the following "
				 "parameter: 'grant_type'.");
	if (strcmp(f.v[F_GRANT], "client_credentials") != 0)
		return oauth_err(err, EINVAL, "unsupported_grant_type",
				 "AADSTS70003: The app requested an unsupported grant type '%s'.",
				 f.v[F_GRANT]);
	if (!f.v[F_CLIENT_ID] || !*f.v[F_CLIENT_ID])
		return oauth_err(err, EINVAL, "invalid_request",
				 "AADSTS900144: The request body must contain the following "
				 "parameter: 'client_id'.");
	_cleanup_free_ char *base = strip_slash(base_url);
	if (!base)
		return cvm_err_nomem(err);
	_cleanup_free_ char *resource = NULL;
	r = scope_resource(f.v[F_SCOPE], base, &resource, err);
	if (r < 0)
		return r;
	_cleanup_free_ char *issuer = cvm_asprintf("%s/%s/v2.0", base, tid);
	_cleanup_free_ char *token_url = cvm_asprintf("%s/%s/oauth2/v2.0/token", base, tenant);
	if (!issuer || !token_url)
		return cvm_err_nomem(err);

	_cleanup_(hsm_principal_freep) struct hsm_principal *p = NULL;
	if (f.v[F_SECRET] && f.v[F_ASSERTION])
		return oauth_err(err, EINVAL, "invalid_request",
				 "AADSTS90014: give either client_secret or client_assertion, not "
				 "both");
	if (f.v[F_SECRET]) {
		r = hsm_principal_check_secret(h, f.v[F_CLIENT_ID], f.v[F_SECRET], f.len[F_SECRET],
					       &p, err);
	} else if (f.v[F_ASSERTION]) {
		if (!f.v[F_ASSERTION_TYPE] || strcmp(f.v[F_ASSERTION_TYPE], ASSERTION_TYPE) != 0)
			return oauth_err(err, EINVAL, "invalid_request",
					 "AADSTS50027: client_assertion_type must be %s",
					 ASSERTION_TYPE);
		r = check_assertion(h, f.v[F_CLIENT_ID], f.v[F_ASSERTION], f.len[F_ASSERTION],
				    token_url, issuer, &p, err);
	} else {
		return oauth_err(err, EACCES, "invalid_client",
				 "AADSTS7000218: The request body must contain the following "
				 "parameter: 'client_assertion' or 'client_secret'.");
	}
	if (r < 0) {
		cvm_log_warn("hsm_token_refused", "client_id=%s reason=%s", f.v[F_CLIENT_ID],
			     err->code);
		return r;
	}
	r = issue_token(h, issuer, tid, resource, p, out, err);
	if (r == 0)
		cvm_log_info("hsm_token_issued", "oid=%s client_id=%s aud=%s", p->oid,
			     p->client_id, resource);
	return r;
}

/* ---- bearer authentication -------------------------------------------------------------- */

static int unauthorized(struct cvm_err *err, const char *why)
{
	return cvm_err_set(err, EACCES, "Unauthorized", "Error validating token: %s", why);
}

/* Cache lookup: true and oid filled when the token was verified before, is unexpired and was
 * issued for an audience/issuer acceptable for base_url. */
static bool cache_lookup(struct cvm_hsm_auth *a, const uint8_t hash[32], const char *base,
			 const char *issuer, char oid[37])
{
	struct hsm_token_slot *s = &a->tok[(hash[0] | hash[1] << 8) % HSM_TOKEN_CACHE_SLOTS];
	bool hit = false;
	pthread_mutex_lock(&a->tok_lock);
	if (s->exp > cvm_now() && memcmp(s->hash, hash, 32) == 0 && strcmp(s->iss, issuer) == 0 &&
	    resource_accepted(s->aud, base)) {
		memcpy(oid, s->oid, 37);
		hit = true;
	}
	pthread_mutex_unlock(&a->tok_lock);
	return hit;
}

static void cache_store(struct cvm_hsm_auth *a, const uint8_t hash[32], const char *issuer,
			const char *aud, const char *oid, int64_t exp)
{
	if (strlen(aud) >= sizeof(a->tok[0].aud) || strlen(issuer) >= sizeof(a->tok[0].iss))
		return;
	struct hsm_token_slot *s = &a->tok[(hash[0] | hash[1] << 8) % HSM_TOKEN_CACHE_SLOTS];
	pthread_mutex_lock(&a->tok_lock);
	memcpy(s->hash, hash, 32);
	s->exp = exp;
	memcpy(s->oid, oid, 37);
	snprintf(s->aud, sizeof(s->aud), "%s", aud);
	snprintf(s->iss, sizeof(s->iss), "%s", issuer);
	pthread_mutex_unlock(&a->tok_lock);
}

int cvm_hsm_authenticate(struct cvm_hsm *h, const char *authorization, const char *base_url,
			 char oid[37], struct cvm_err *err)
{
	if (!authorization || strncasecmp(authorization, "Bearer ", 7) != 0)
		return cvm_err_set(err, EACCES, "Unauthorized",
				   "Request is missing a Bearer or PoP token.");
	const char *tok = authorization + 7;
	while (*tok == ' ')
		tok++;
	size_t len = strlen(tok);
	while (len && tok[len - 1] == ' ')
		len--;
	if (!len)
		return cvm_err_set(err, EACCES, "Unauthorized",
				   "Request is missing a Bearer or PoP token.");
	if (len > CVM_JWS_MAX_LEN)
		return unauthorized(err, "token too large");
	struct cvm_hsm_auth *a;
	char tid[37];
	int r = hsm_auth(h, &a, err);
	if (r < 0 || (r = cvm_hsm_tenant_id(h, tid, err)) < 0)
		return r;
	_cleanup_free_ char *base = strip_slash(base_url);
	_cleanup_free_ char *issuer = base ? cvm_asprintf("%s/%s/v2.0", base, tid) : NULL;
	if (!issuer)
		return cvm_err_nomem(err);
	uint8_t hash[32];
	if (!EVP_Digest(tok, len, hash, NULL, a->sha256, NULL))
		return cvm_err_openssl(err, EIO, "SHA-256");
	if (cache_lookup(a, hash, base, issuer, oid))
		return 0;

	struct cvm_key *key;
	const char *kid;
	r = hsm_token_key(h, &key, &kid, err);
	if (r < 0)
		return r;
	_cleanup_json_ json_t *claims = NULL;
	struct cvm_err verr = { 0 };
	if (cvm_jwt_verify(tok, len, key, &claims, NULL, &verr) < 0)
		return unauthorized(err, verr.msg);
	if (cvm_jwt_check_times(claims, cvm_now(), LEEWAY, false, &verr) < 0)
		return unauthorized(err, verr.msg);
	const char *iss = json_string_value(json_object_get(claims, "iss"));
	if (!iss || strcmp(iss, issuer) != 0)
		return unauthorized(err, "iss: token was not issued by this service for this host");
	const char *aud = json_string_value(json_object_get(claims, "aud"));
	if (!aud || !resource_accepted(aud, base))
		return unauthorized(err, "aud: audience is not accepted by this service");
	const char *o = json_string_value(json_object_get(claims, "oid"));
	if (!o || strlen(o) != 36)
		return unauthorized(err, "oid: missing or malformed");
	memcpy(oid, o, 37);
	cache_store(a, hash, issuer, aud, o, json_integer_value(json_object_get(claims, "exp")));
	return 0;
}
