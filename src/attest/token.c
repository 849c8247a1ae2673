/* SPDX-License-Identifier: Apache-2.0 */
/* Attestation service: MAA-shaped requests in, RS256 JWTs with MAA claim names out; the signing
 * key lives in a directory (current + previous, so tokens issued before a rotation still
 * verify), published as a JWKS with x5c and through OIDC discovery. */
#include <errno.h>
#include <openssl/pem.h>
#include <pthread.h>
#include <stdio.h>
#include <string.h>

#include <opencvm/json.h>

#include "attest-internal.h"

#define TOKEN_DEFAULT_LIFETIME (8 * 3600)
#define KEY_FILE_MAX (64 * 1024)
#define SIGNING_KEY_BITS 2048
#define RUNTIME_MAX (64 * 1024)

struct signing_key {
	struct cvm_key *key;
	X509 *cert;
	char *kid;
};

struct cvm_attest_service {
	char *issuer;
	int64_t lifetime;
	const struct cvm_attest_roots *roots;
	struct cvm_snp_policy snp_policy;
	struct cvm_snp_verify_opts verify_opts;
	struct cvm_tdx_policy tdx_policy;
	struct cvm_tdx_verify_opts tdx_opts;
	struct signing_key current;
	struct signing_key previous; /* key == NULL when none */
	pthread_mutex_t lock;        /* guards the MAA policy texts (policy.c) */
	struct cvm_attest_policy_slot *policies;
};

static void signing_key_clear(struct signing_key *k)
{
	cvm_key_free(k->key);
	X509_free(k->cert);
	free(k->kid);
	memset(k, 0, sizeof(*k));
}

/* kid = RFC 7638 thumbprint; the certificate names the issuer like MAA's x5c certificates. */
static int signing_key_finish(struct signing_key *k, const char *issuer, struct cvm_err *err)
{
	int rc = cvm_key_thumbprint(k->key, &k->kid, err);
	if (rc == 0 && !k->cert)
		rc = cvm_x509_self_signed(k->key, issuer, NULL, NULL, 3650, &k->cert, err);
	return rc;
}

static int load_pem_file(const char *dir, const char *name, uint8_t **buf, size_t *len,
			 struct cvm_err *err)
{
	_cleanup_free_ char *path = cvm_path_join(dir, name);
	if (!path)
		return cvm_err_nomem(err);
	return cvm_file_read(path, KEY_FILE_MAX, buf, len, err);
}

static int load_key(const char *dir, const char *key_name, const char *cert_name,
		    const char *issuer, struct signing_key *k, struct cvm_err *err)
{
	uint8_t *pem = NULL;
	size_t len = 0;
	int rc = load_pem_file(dir, key_name, &pem, &len, err);
	if (rc < 0)
		return rc;
	rc = cvm_key_from_pem((const char *)pem, len, &k->key, err);
	cvm_free_secure(pem, len);
	if (rc < 0)
		return cvm_err_prefix(err, "%s/%s", dir, key_name);
	if (cvm_key_type(k->key) != CVM_KTY_RSA || !cvm_key_has_private(k->key))
		return cvm_err_badparam(err, "%s/%s: expected an RSA private key", dir, key_name);
	_cleanup_free_ uint8_t *cpem = NULL;
	size_t clen = 0;
	struct cvm_err e2 = { 0 };
	if (load_pem_file(dir, cert_name, &cpem, &clen, &e2) == 0) {
		BIO *b = BIO_new_mem_buf(cpem, (int)clen);
		k->cert = b ? PEM_read_bio_X509(b, NULL, NULL, NULL) : NULL;
		BIO_free(b);
		if (!k->cert || X509_check_private_key(k->cert, cvm_key_pkey(k->key)) != 1)
			return cvm_err_badparam(err, "%s/%s: not the certificate of %s", dir,
						cert_name, key_name);
	}
	return signing_key_finish(k, issuer, err);
}

static int save_key(const char *dir, const char *key_name, const char *cert_name,
		    const struct signing_key *k, struct cvm_err *err)
{
	char *pem = NULL;
	int rc = cvm_key_to_pem(k->key, true, &pem, err);
	if (rc < 0)
		return rc;
	_cleanup_free_ char *path = cvm_path_join(dir, key_name);
	size_t plen = strlen(pem);
	rc = path ? cvm_file_write_atomic(path, pem, plen, 0600, err) : cvm_err_nomem(err);
	cvm_free_secure(pem, plen);
	if (rc < 0)
		return rc;
	_cleanup_free_ char *cpem = NULL;
	rc = cvm_x509_to_pem(k->cert, &cpem, err);
	if (rc < 0)
		return rc;
	_cleanup_free_ char *cpath = cvm_path_join(dir, cert_name);
	return cpath ? cvm_file_write_atomic(cpath, cpem, strlen(cpem), 0644, err)
		     : cvm_err_nomem(err);
}

static int setup_keys(struct cvm_attest_service *s, const struct cvm_attest_service_config *cfg,
		      struct cvm_err *err)
{
	if (cfg->signing_key) {
		if (cvm_key_type(cfg->signing_key) != CVM_KTY_RSA ||
		    !cvm_key_has_private(cfg->signing_key))
			return cvm_err_badparam(err, "attest.signing_key: expected an RSA private key");
		s->current.key = cvm_key_ref(cfg->signing_key);
		return signing_key_finish(&s->current, s->issuer, err);
	}
	if (!cfg->key_dir)
		return cvm_err_badparam(err, "attest: key_dir or signing_key is required");
	int rc = cvm_mkdir_p(cfg->key_dir, 0700, err);
	if (rc < 0)
		return rc;
	rc = load_key(cfg->key_dir, "signing.pem", "signing-cert.pem", s->issuer, &s->current, err);
	if (rc == -ENOENT) {
		cvm_err_clear(err);
		signing_key_clear(&s->current);
		rc = cvm_key_generate_rsa(SIGNING_KEY_BITS, 0, &s->current.key, err);
		if (rc == 0)
			rc = signing_key_finish(&s->current, s->issuer, err);
		if (rc == 0)
			rc = save_key(cfg->key_dir, "signing.pem", "signing-cert.pem", &s->current,
				      err);
		if (rc == 0)
			cvm_log_info("attest_signing_key_created", "kid=%s", s->current.kid);
	}
	if (rc < 0)
		return rc;
	rc = load_key(cfg->key_dir, "previous.pem", "previous-cert.pem", s->issuer, &s->previous,
		      err);
	if (rc == -ENOENT) {
		cvm_err_clear(err);
		signing_key_clear(&s->previous);
		rc = 0;
	}
	return rc;
}

int cvm_attest_keys_rotate(const char *key_dir, struct cvm_err *err)
{
	if (!key_dir)
		return cvm_err_badparam(err, "attest.key_dir: required");
	static const char *const names[][2] = { { "signing.pem", "previous.pem" },
						{ "signing-cert.pem", "previous-cert.pem" } };
	for (size_t i = 0; i < CVM_ARRAY_SIZE(names); i++) {
		_cleanup_free_ char *from = cvm_path_join(key_dir, names[i][0]);
		_cleanup_free_ char *to = cvm_path_join(key_dir, names[i][1]);
		if (!from || !to)
			return cvm_err_nomem(err);
		/* rename() replaces the older previous key atomically. */
		if (rename(from, to) < 0)
			return cvm_err_set(err, errno == ENOENT ? ENOENT : EIO, "NotFound",
					   "%s: cannot rotate: %s", from, strerror(errno));
	}
	/* The next service start creates and publishes a fresh current key beside the old one. */
	struct signing_key k = { 0 };
	int rc = cvm_key_generate_rsa(SIGNING_KEY_BITS, 0, &k.key, err);
	if (rc == 0)
		rc = signing_key_finish(&k, "attestation-signing", err);
	if (rc == 0)
		rc = save_key(key_dir, "signing.pem", "signing-cert.pem", &k, err);
	if (rc == 0)
		cvm_log_info("attest_signing_key_rotated", "kid=%s", k.kid);
	signing_key_clear(&k);
	return rc;
}

int cvm_attest_service_new(const struct cvm_attest_service_config *cfg,
			   struct cvm_attest_service **out, struct cvm_err *err)
{
	if (!cfg || !cfg->issuer || !cfg->roots)
		return cvm_err_badparam(err, "attest: issuer and roots are required");
	if (!cvm_str_startswith(cfg->issuer, "https://") &&
	    !cvm_str_startswith(cfg->issuer, "http://"))
		return cvm_err_badparam(err, "attest.issuer: expected an http(s) URL");
	if (cfg->token_lifetime < 0 || cfg->token_lifetime > 7 * 86400)
		return cvm_err_badparam(err, "attest.token_lifetime: expected 0..604800 seconds");
	struct cvm_attest_service *s = calloc(1, sizeof(*s));
	if (!s)
		return cvm_err_nomem(err);
	pthread_mutex_init(&s->lock, NULL);
	s->issuer = cvm_strdup(cfg->issuer);
	/* The issuer is compared byte for byte by relying parties: no trailing slash. */
	size_t il = s->issuer ? strlen(s->issuer) : 0;
	while (il > 0 && s->issuer[il - 1] == '/')
		s->issuer[--il] = '\0';
	s->lifetime = cfg->token_lifetime ? cfg->token_lifetime : TOKEN_DEFAULT_LIFETIME;
	s->roots = cfg->roots;
	if (cfg->snp_policy)
		s->snp_policy = *cfg->snp_policy;
	else
		cvm_snp_policy_default(&s->snp_policy);
	if (cfg->verify_opts)
		s->verify_opts = *cfg->verify_opts;
	if (cfg->tdx_policy)
		s->tdx_policy = *cfg->tdx_policy;
	else
		cvm_tdx_policy_default(&s->tdx_policy);
	if (cfg->tdx_opts)
		s->tdx_opts = *cfg->tdx_opts;
	int rc = s->issuer ? setup_keys(s, cfg, err) : cvm_err_nomem(err);
	if (rc < 0) {
		cvm_attest_service_free(s);
		return rc;
	}
	*out = s;
	return 0;
}

void cvm_attest_service_free(struct cvm_attest_service *s)
{
	if (!s)
		return;
	signing_key_clear(&s->current);
	signing_key_clear(&s->previous);
	cvm_attest_policy_slots_free(s->policies);
	pthread_mutex_destroy(&s->lock);
	free(s->issuer);
	free(s);
}

const char *cvm_attest_service_issuer(const struct cvm_attest_service *s)
{
	return s->issuer;
}

void cvm_attest_service_verifiers(const struct cvm_attest_service *s,
				  struct cvm_attest_verifiers *out)
{
	*out = (struct cvm_attest_verifiers){ s->roots, &s->verify_opts, &s->snp_policy,
					      &s->tdx_opts, &s->tdx_policy };
}

pthread_mutex_t *cvm_attest_service_lock(struct cvm_attest_service *s)
{
	return &s->lock;
}

struct cvm_attest_policy_slot **cvm_attest_service_policies(struct cvm_attest_service *s)
{
	return &s->policies;
}

/* ---- JWKS / OIDC -------------------------------------------------------------------------- */

static int jwk_entry(const struct signing_key *k, json_t *keys, struct cvm_err *err)
{
	json_t *jwk = NULL;
	int rc = cvm_key_to_jwk(k->key, false, &jwk, err);
	if (rc < 0)
		return rc;
	unsigned char *der = NULL;
	int dl = i2d_X509(k->cert, &der);
	_cleanup_free_ char *b64 = dl > 0 ? cvm_b64_encode(der, (size_t)dl) : NULL;
	OPENSSL_free(der);
	if (!b64 || json_object_set_new(jwk, "kid", json_string(k->kid)) ||
	    json_object_set_new(jwk, "alg", json_string("RS256")) ||
	    json_object_set_new(jwk, "use", json_string("sig")) ||
	    json_object_set_new(jwk, "x5c", json_pack("[s]", b64))) {
		json_decref(jwk);
		return cvm_err_nomem(err);
	}
	/* append_new consumes jwk even when it fails. */
	return json_array_append_new(keys, jwk) ? cvm_err_nomem(err) : 0;
}

int cvm_attest_service_jwks(struct cvm_attest_service *s, json_t **out, struct cvm_err *err)
{
	json_t *keys = json_array();
	if (!keys)
		return cvm_err_nomem(err);
	int rc = jwk_entry(&s->current, keys, err);
	if (rc == 0 && s->previous.key)
		rc = jwk_entry(&s->previous, keys, err);
	json_t *o = rc == 0 ? json_pack("{s:o}", "keys", keys) : NULL;
	if (!o) {
		if (rc == 0)
			json_decref(keys);
		return rc < 0 ? rc : cvm_err_nomem(err);
	}
	*out = o;
	return 0;
}

int cvm_attest_service_openid(struct cvm_attest_service *s, json_t **out, struct cvm_err *err)
{
	_cleanup_free_ char *jwks = cvm_asprintf("%s/certs", s->issuer);
	json_t *o = jwks ? json_pack("{s:s, s:s, s:[s], s:[s, s], s:[s, s, s, s, s, s, s, s]}",
				     "issuer", s->issuer, "jwks_uri", jwks,
				     "id_token_signing_alg_values_supported", "RS256",
				     "response_types_supported", "token", "none", "claims_supported",
				     "iss", "iat", "nbf", "exp", "nonce", "x-ms-attestation-type",
				     "x-ms-compliance-status", "x-ms-runtime")
			 : NULL;
	if (!o)
		return cvm_err_nomem(err);
	*out = o;
	return 0;
}

/* ---- tokens ------------------------------------------------------------------------------ */

/* runtimeData must be what the TEE bound: SHA-256(bytes) || 32 zero bytes == REPORT_DATA. */
static int check_binding(const uint8_t report_data[64], const struct cvm_attest_runtime *rt,
			 struct cvm_err *err)
{
	uint8_t want[64] = { 0 };
	size_t dl = 0;
	int rc = cvm_digest("SHA256", rt->data, rt->len, want, &dl, err);
	if (rc < 0)
		return rc;
	memset(want + 32, 0, 32);
	if (!cvm_memeq_ct(want, report_data, 64))
		return cvm_err_set(err, EBADMSG, "BadParameter",
				   "runtimeData: SHA-256 of the data does not match the report's "
				   "report_data (expected SHA-256 || 32 zero bytes)");
	return 0;
}

static int runtime_claims(const struct cvm_attest_runtime *rt, json_t **out, struct cvm_err *err)
{
	*out = NULL;
	if (!rt->is_json)
		return 0;
	json_t *j = NULL;
	int rc = cvm_json_parse(rt->data, rt->len, false, &j, err);
	if (rc < 0)
		return cvm_err_prefix(err, "runtimeData.data");
	/* Keys a release will wrap to must be usable public keys. */
	json_t *keys = json_object_get(j, "keys");
	if (keys && !json_is_array(keys))
		rc = cvm_err_badparam(err, "runtimeData.data.keys: expected an array of JWKs");
	size_t i;
	json_t *k;
	json_array_foreach(keys, i, k) {
		if (rc < 0)
			break;
		struct cvm_key *key = NULL;
		rc = cvm_key_from_jwk(k, false, &key, err);
		cvm_key_free(key);
		if (rc < 0)
			rc = cvm_err_prefix(err, "runtimeData.data.keys[%zu]", i);
	}
	if (rc < 0) {
		json_decref(j);
		return rc;
	}
	*out = j;
	return 0;
}

/* What a verified TEE contributes to a token. */
struct tee_facts {
	const char *type;        /* x-ms-attestation-type: "sevsnpvm", "tdxvm" */
	const char *policy_type; /* "SevSnpVm", "TdxVm" */
	const uint8_t *report_data;
	bool emulated;
	int (*claims)(const void *verdict, json_t *obj, struct cvm_err *err);
	const void *verdict;
};

static int snp_claims(const void *v, json_t *o, struct cvm_err *err)
{
	return cvm_snp_verdict_claims(v, o, err);
}

static int tdx_claims(const void *v, json_t *o, struct cvm_err *err)
{
	return cvm_tdx_verdict_claims(v, o, err);
}

static int issue_token(struct cvm_attest_service *s, const struct tee_facts *f,
		       const struct cvm_attest_runtime *rt, char **token, struct cvm_err *err)
{
	static const struct cvm_attest_runtime none = { 0 };
	if (!rt)
		rt = &none;
	int rc;
	if (rt->data && (rc = check_binding(f->report_data, rt, err)) < 0)
		return rc;
	_cleanup_json_ json_t *runtime = NULL;
	if (rt->data && (rc = runtime_claims(rt, &runtime, err)) < 0)
		return rc;
	_cleanup_json_ json_t *c = json_object();
	_cleanup_json_ json_t *tee = json_object();
	if (!c || !tee)
		return cvm_err_nomem(err);
	int64_t now = cvm_now();
	uint8_t jti[32];
	if ((rc = cvm_random(jti, sizeof(jti), err)) < 0)
		return rc;
	const char *compliance = f->emulated ? "opencvm-emulated" : "azure-compliant-cvm";
	_cleanup_free_ char *jku = cvm_asprintf("%s/certs", s->issuer);
	int bad = !jku;
	bad |= json_object_set_new(c, "iss", json_string(s->issuer));
	bad |= json_object_set_new(c, "iat", json_integer(now));
	bad |= json_object_set_new(c, "nbf", json_integer(now));
	bad |= json_object_set_new(c, "exp", json_integer(now + s->lifetime));
	bad |= cvm_attest_json_hex(c, "jti", jti, sizeof(jti));
	if (rt->nonce)
		bad |= json_object_set_new(c, "nonce", json_string(rt->nonce));
	bad |= json_object_set_new(c, "x-ms-ver", json_string("1.0"));
	bad |= json_object_set_new(c, "x-ms-attestation-type", json_string(f->type));
	bad |= json_object_set_new(c, "x-ms-compliance-status", json_string(compliance));
	bad |= json_object_set_new(tee, "x-ms-attestation-type", json_string(f->type));
	bad |= json_object_set_new(tee, "x-ms-compliance-status", json_string(compliance));
	if (bad)
		return cvm_err_nomem(err);
	if ((rc = f->claims(f->verdict, c, err)) < 0 || (rc = f->claims(f->verdict, tee, err)) < 0)
		return rc;
	if (runtime && (json_object_set(c, "x-ms-runtime", runtime) ||
			json_object_set(tee, "x-ms-runtime", runtime)))
		return cvm_err_nomem(err);
	if (json_object_set_new(c, "x-opencvm-emulated", json_boolean(f->emulated)))
		return cvm_err_nomem(err);
	/* The policy sees the flat claims; what it issues joins the token's top level. */
	_cleanup_json_ json_t *issued = json_object();
	char hash[48];
	if (!issued)
		return cvm_err_nomem(err);
	if ((rc = cvm_attest_policy_apply(s, f->policy_type, c, issued, hash, err)) < 0) {
		cvm_log_info("attest_refused", "type=%s reason=policy", f->type);
		return rc;
	}
	if (json_object_update(c, issued) || json_object_set(c, "x-ms-isolation-tee", tee) ||
	    (hash[0] && json_object_set_new(c, "x-ms-policy-hash", json_string(hash))))
		return cvm_err_nomem(err);
	_cleanup_json_ json_t *hdr = json_pack("{s:s, s:s}", "jku", jku, "kid", s->current.kid);
	if (!hdr)
		return cvm_err_nomem(err);
	rc = cvm_jwt_sign(s->current.key, "RS256", hdr, c, token, err);
	if (rc == 0)
		cvm_log_info("attest_token_issued", "type=%s emulated=%s", f->type,
			     f->emulated ? "true" : "false");
	return rc;
}

int cvm_attest_issue_snp_token(struct cvm_attest_service *s, const struct cvm_snp_verdict *v,
			       const struct cvm_attest_runtime *rt, char **token,
			       struct cvm_err *err)
{
	const struct tee_facts f = { "sevsnpvm", "SevSnpVm", v->report.report_data, v->emulated,
				     snp_claims, v };
	return issue_token(s, &f, rt, token, err);
}

int cvm_attest_issue_tdx_token(struct cvm_attest_service *s, const struct cvm_tdx_verdict *v,
			       const struct cvm_attest_runtime *rt, char **token,
			       struct cvm_err *err)
{
	const struct tee_facts f = { "tdxvm", "TdxVm", v->quote.body.report_data, v->emulated,
				     tdx_claims, v };
	return issue_token(s, &f, rt, token, err);
}

int cvm_attest_service_sign_claims(struct cvm_attest_service *s, json_t *claims, char **jwt,
				   struct cvm_err *err)
{
	_cleanup_free_ char *jku = cvm_asprintf("%s/certs", s->issuer);
	_cleanup_json_ json_t *hdr = jku ? json_pack("{s:s, s:s}", "jku", jku, "kid", s->current.kid)
					 : NULL;
	int64_t now = cvm_now();
	if (!hdr || json_object_set_new(claims, "iss", json_string(s->issuer)) ||
	    json_object_set_new(claims, "iat", json_integer(now)) ||
	    json_object_set_new(claims, "nbf", json_integer(now)) ||
	    json_object_set_new(claims, "exp", json_integer(now + s->lifetime)))
		return cvm_err_nomem(err);
	return cvm_jwt_sign(s->current.key, "RS256", hdr, claims, jwt, err);
}

int cvm_attest_service_verify_token(struct cvm_attest_service *s, const char *token,
				    json_t **claims, struct cvm_err *err)
{
	if (!token)
		return cvm_err_badparam(err, "token: missing");
	_cleanup_json_ json_t *hdr = NULL;
	_cleanup_json_ json_t *c = NULL;
	int rc = cvm_jwt_verify(token, strlen(token), s->current.key, &c, &hdr, err);
	if (rc == -EBADMSG && s->previous.key) {
		cvm_err_clear(err);
		rc = cvm_jwt_verify(token, strlen(token), s->previous.key, &c, &hdr, err);
	}
	if (rc < 0)
		return rc;
	const char *iss = json_string_value(json_object_get(c, "iss"));
	if (!iss || strcmp(iss, s->issuer) != 0)
		return cvm_err_set(err, EBADMSG, "BadParameter", "token.iss: not this service");
	if ((rc = cvm_jwt_check_times(c, cvm_now(), 60, false, err)) < 0)
		return rc;
	*claims = CVM_TAKE(c);
	return 0;
}

/* ---- POST /attest/SevSnpVm --------------------------------------------------------------- */

/* Base64url, or standard base64 as MAA's own clients send for VcekCertChain. */
static int decode_any_b64(const char *s, uint8_t **out, size_t *len, const char *what,
			  struct cvm_err *err)
{
	if (cvm_b64url_decode(s, strlen(s), out, len, what, err) == 0)
		return 0;
	cvm_err_clear(err);
	return cvm_b64_decode(s, strlen(s), out, len, what, err);
}

/* runtimeData {data, dataType} and nonce, shared by every /attest route. */
struct attest_req {
	json_t *body;
	uint8_t *rt_data;
	size_t rt_len;
	const char *dtype;
	const char *nonce;
};

static void attest_req_clear(struct attest_req *r)
{
	json_decref(r->body);
	free(r->rt_data);
	memset(r, 0, sizeof(*r));
}

static int attest_req_parse(const char *body, size_t len, struct attest_req *r,
			    struct cvm_err *err)
{
	memset(r, 0, sizeof(*r));
	int rc = cvm_json_parse((const uint8_t *)body, len, false, &r->body, err);
	if (rc < 0)
		return rc;
	json_t *rt = NULL;
	if ((rc = cvm_json_obj(r->body, "runtimeData", NULL, false, &rt, err)) < 0)
		return rc;
	/* MAA binds the report to runtime data; without it report_data proves nothing. */
	if (!rt)
		return cvm_err_badparam(err, "runtimeData: required field is missing");
	static const char *const dtypes[] = { "JSON", "Binary", NULL };
	if ((rc = cvm_json_b64url(rt, "data", "runtimeData.data", true, &r->rt_data, &r->rt_len,
				  err)) < 0 ||
	    (rc = cvm_json_enum(rt, "dataType", "runtimeData.dataType", false, dtypes, &r->dtype,
				err)) < 0)
		return rc;
	if (r->rt_len > RUNTIME_MAX)
		return cvm_err_set(err, E2BIG, "BadParameter", "runtimeData.data: larger than %d bytes",
				   RUNTIME_MAX);
	return cvm_json_str(r->body, "nonce", NULL, false, &r->nonce, NULL, err);
}

static struct cvm_attest_runtime attest_req_runtime(const struct attest_req *r)
{
	return (struct cvm_attest_runtime){ .data = r->rt_data, .len = r->rt_len,
					    .is_json = !r->dtype || strcmp(r->dtype, "JSON") == 0,
					    .nonce = r->nonce };
}

int cvm_attest_service_attest_snp(struct cvm_attest_service *s, const char *body, size_t len,
				  char **token, struct cvm_err *err)
{
	_cleanup_(attest_req_clear) struct attest_req req = { 0 };
	int rc = attest_req_parse(body, len, &req, err);
	if (rc < 0)
		return rc;
	_cleanup_free_ uint8_t *inner = NULL;
	size_t inner_len = 0;
	if ((rc = cvm_json_b64url(req.body, "report", NULL, true, &inner, &inner_len, err)) < 0)
		return rc;
	_cleanup_json_ json_t *rep = NULL;
	if ((rc = cvm_json_parse(inner, inner_len, false, &rep, err)) < 0)
		return cvm_err_prefix(err, "report");
	_cleanup_free_ uint8_t *snp = NULL;
	size_t snp_len = 0;
	if ((rc = cvm_json_b64url(rep, "SnpReport", "report.SnpReport", true, &snp, &snp_len,
				  err)) < 0)
		return rc;
	const char *chain_b64 = NULL;
	if ((rc = cvm_json_str(rep, "VcekCertChain", "report.VcekCertChain", true, &chain_b64,
			       NULL, err)) < 0)
		return rc;
	_cleanup_free_ uint8_t *chain = NULL;
	size_t chain_len = 0;
	if ((rc = decode_any_b64(chain_b64, &chain, &chain_len, "report.VcekCertChain", err)) < 0)
		return rc;
	struct cvm_snp_certs certs = { 0 };
	rc = cvm_snp_certs_add(&certs, chain, chain_len, err);
	if (rc < 0) {
		cvm_snp_certs_clear(&certs);
		return cvm_err_prefix(err, "report.VcekCertChain");
	}
	struct cvm_snp_verdict v;
	rc = cvm_snp_verify(snp, snp_len, &certs, s->roots, &s->verify_opts, &s->snp_policy, &v, err);
	cvm_snp_certs_clear(&certs);
	if (rc < 0) {
		cvm_log_info("attest_refused", "type=sevsnpvm reason=\"%s\"", err->msg);
		return rc;
	}
	struct cvm_attest_runtime r = attest_req_runtime(&req);
	return cvm_attest_issue_snp_token(s, &v, &r, token, err);
}

int cvm_attest_service_attest_tdx(struct cvm_attest_service *s, const char *body, size_t len,
				  char **token, struct cvm_err *err)
{
	_cleanup_(attest_req_clear) struct attest_req req = { 0 };
	int rc = attest_req_parse(body, len, &req, err);
	if (rc < 0)
		return rc;
	_cleanup_free_ uint8_t *quote = NULL;
	size_t qlen = 0;
	if ((rc = cvm_json_b64url(req.body, "quote", NULL, true, &quote, &qlen, err)) < 0)
		return rc;
	struct cvm_tdx_verdict *v = calloc(1, sizeof(*v));
	if (!v)
		return cvm_err_nomem(err);
	rc = cvm_tdx_verify(quote, qlen, &s->tdx_opts, &s->tdx_policy, v, err);
	if (rc < 0) {
		cvm_log_info("attest_refused", "type=tdxvm reason=\"%s\"", err->msg);
	} else {
		struct cvm_attest_runtime r = attest_req_runtime(&req);
		rc = cvm_attest_issue_tdx_token(s, v, &r, token, err);
	}
	free(v);
	return rc;
}
