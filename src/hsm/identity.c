/* SPDX-License-Identifier: Apache-2.0 */
/* hsm identities: principals with a client secret (Argon2id hash only) or a client
 * certificate, the service tenant id, the auth state and its schema, and the service keys
 * (OAuth token key, release-signing key) sealed under the security domain. */
#include <argon2.h>
#include <ctype.h>
#include <string.h>

#include <openssl/err.h>
#include <openssl/pem.h>
#include <openssl/sha.h>

#include "auth-internal.h"

/* Argon2id cost (OWASP minimum for Argon2id: m=19 MiB, t=2, p=1). Recorded in every hash
 * (libargon2 encoded form), so raising it later keeps old secrets verifiable. */
#define SECRET_T_COST 2u
#define SECRET_M_COST 19456u
#define SECRET_PARALLEL 1u
#define SECRET_SALT_LEN 16
#define SECRET_HASH_LEN 32
#define SECRET_RAW_LEN 30 /* 40 base64url characters */

static const char *const auth_ddl[] = {
	"CREATE TABLE IF NOT EXISTS hsm_principals (oid TEXT PRIMARY KEY, client_id TEXT NOT NULL "
	"UNIQUE, name TEXT NOT NULL UNIQUE, kind INTEGER NOT NULL, created INTEGER NOT NULL, "
	"secret_hash TEXT, cert_der BLOB, cert_s256 TEXT, cert_s1 TEXT)",
	"CREATE TABLE IF NOT EXISTS hsm_role_definitions (name TEXT PRIMARY KEY, role_name TEXT "
	"NOT NULL, body TEXT NOT NULL, created INTEGER NOT NULL)",
	"CREATE TABLE IF NOT EXISTS hsm_role_assignments (name TEXT PRIMARY KEY, scope TEXT NOT "
	"NULL, role_id TEXT NOT NULL, principal_id TEXT NOT NULL, created INTEGER NOT NULL)",
	"CREATE TABLE IF NOT EXISTS hsm_auth_meta (k TEXT PRIMARY KEY, s TEXT, i INTEGER)",
	"CREATE TABLE IF NOT EXISTS hsm_service_keys (name TEXT PRIMARY KEY, sealed BLOB NOT NULL, "
	"cert BLOB, created INTEGER NOT NULL)",
	"INSERT INTO hsm_auth_meta (k, s, i) VALUES ('rbac_gen', NULL, 0) ON CONFLICT DO NOTHING",
	/* v2: tokens used for a release (hex SHA-256 of the signed part) until their exp; shared
	 * by every cvmd on the store (release.c) */
	"CREATE TABLE IF NOT EXISTS hsm_release_replay (hash TEXT PRIMARY KEY, exp INTEGER NOT "
	"NULL)",
	"CREATE INDEX IF NOT EXISTS hsm_release_replay_by_exp ON hsm_release_replay (exp)",
};

/* ---- auth state ------------------------------------------------------------------------- */

static void auth_free(struct cvm_hsm_auth *a)
{
	if (!a)
		return;
	free(a->dummy_hash);
	cvm_key_free(a->token_key);
	free(a->token_kid);
	cvm_key_free(a->rel_key);
	if (a->rel_header)
		json_decref(a->rel_header);
	free(a->rel_cert_pem);
	free(a->ca_file);
	free(a->tok);
	EVP_MD_free(a->sha256);
	if (a->rbac_assignments)
		json_decref(a->rbac_assignments);
	if (a->rbac_custom)
		json_decref(a->rbac_custom);
	hsm_jwks_free_all(a);
	pthread_mutex_destroy(&a->lock);
	pthread_mutex_destroy(&a->tok_lock);
	pthread_mutex_destroy(&a->rbac_lock);
	pthread_mutex_destroy(&a->jwks_lock);
	free(a);
}

int hsm_auth(struct cvm_hsm *h, struct cvm_hsm_auth **out, struct cvm_err *err)
{
	*out = NULL;
	struct cvm_hsm_auth *a = __atomic_load_n(&h->auth, __ATOMIC_ACQUIRE);
	if (a) {
		*out = a;
		return 0;
	}
	int r = cvm_store_ensure_schema(h->store, "hsm_auth", 2, auth_ddl,
					CVM_ARRAY_SIZE(auth_ddl), err);
	if (r < 0)
		return r;
	a = calloc(1, sizeof(*a));
	if (!a)
		return cvm_err_nomem(err);
	a->tok = calloc(HSM_TOKEN_CACHE_SLOTS, sizeof(*a->tok));
	a->sha256 = EVP_MD_fetch(NULL, "SHA256", NULL);
	if (!a->tok || !a->sha256) {
		bool nomem = !a->tok;
		EVP_MD_free(a->sha256);
		free(a->tok);
		free(a);
		return nomem ? cvm_err_nomem(err) : cvm_err_openssl(err, EIO, "SHA-256");
	}
	pthread_mutex_init(&a->lock, NULL);
	pthread_mutex_init(&a->tok_lock, NULL);
	pthread_mutex_init(&a->rbac_lock, NULL);
	pthread_mutex_init(&a->jwks_lock, NULL);
	a->jwks_ttl_s = 3600;
	a->http_timeout_ms = 10000;

	/* Two threads may race here; one state wins, the other is discarded. The free hook is
	 * set before publishing so cvm_hsm_free never sees a state without it. */
	struct cvm_hsm_auth *expected = NULL;
	__atomic_store_n(&h->auth_free, auth_free, __ATOMIC_RELEASE);
	if (!__atomic_compare_exchange_n(&h->auth, &expected, a, false, __ATOMIC_ACQ_REL,
					 __ATOMIC_ACQUIRE)) {
		auth_free(a);
		a = expected;
	}
	*out = a;
	return 0;
}

int cvm_hsm_auth_configure(struct cvm_hsm *h, const struct cvm_hsm_auth_config *cfg,
			   struct cvm_err *err)
{
	struct cvm_hsm_auth *a;
	int r = hsm_auth(h, &a, err);
	if (r < 0)
		return r;
	if (cfg->jwks_ttl_s < 0 || cfg->http_timeout_ms < 0)
		return cvm_err_badparam(err, "auth config: jwks_ttl_s and http_timeout_ms must not "
					"be negative");
	char *ca = NULL;
	if (cfg->authority_ca_file && !(ca = strdup(cfg->authority_ca_file)))
		return cvm_err_nomem(err);
	pthread_mutex_lock(&a->lock);
	free(a->ca_file);
	a->ca_file = ca;
	a->jwks_ttl_s = cfg->jwks_ttl_s ? cfg->jwks_ttl_s : 3600;
	a->http_timeout_ms = cfg->http_timeout_ms ? cfg->http_timeout_ms : 10000;
	pthread_mutex_unlock(&a->lock);
	return 0;
}

/* ---- small shared helpers --------------------------------------------------------------- */

bool hsm_is_guid(const char *s)
{
	if (!s || strlen(s) != 36)
		return false;
	for (size_t i = 0; i < 36; i++) {
		if (i == 8 || i == 13 || i == 18 || i == 23) {
			if (s[i] != '-')
				return false;
		} else if (!isxdigit((unsigned char)s[i])) {
			return false;
		}
	}
	return true;
}

/* Length of the "scheme://host" prefix (lowercase-insensitive part), 0 when not a URL. */
static size_t url_origin_len(const char *u)
{
	const char *p = strstr(u, "://");
	if (!p)
		return 0;
	p += 3;
	while (*p && *p != '/')
		p++;
	return (size_t)(p - u);
}

bool hsm_url_eq(const char *a, const char *b)
{
	size_t la = strlen(a), lb = strlen(b);
	if (la && a[la - 1] == '/')
		la--;
	if (lb && b[lb - 1] == '/')
		lb--;
	if (la != lb)
		return false;
	size_t o = url_origin_len(a);
	if (o > la)
		o = la;
	return strncasecmp(a, b, o) == 0 && memcmp(a + o, b + o, la - o) == 0;
}

/* ---- tenant ----------------------------------------------------------------------------- */

static int tenant_tx(struct cvm_tx *tx, void *ctx, struct cvm_err *err)
{
	char *tenant = ctx;
	char fresh[37];
	int r = cvm_uuid4(fresh, err);
	if (r < 0)
		return r;
	struct cvm_val ins[] = { CVM_VAL_S(fresh) };
	r = cvm_tx_exec(tx, "INSERT INTO hsm_auth_meta (k, s, i) VALUES ('tenant', ?, 0) "
			"ON CONFLICT DO NOTHING", ins, 1, NULL, err);
	if (r < 0)
		return r;
	_cleanup_rows_ struct cvm_rows *rows = NULL;
	r = cvm_tx_query(tx, "SELECT s FROM hsm_auth_meta WHERE k = 'tenant'", NULL, 0, &rows, err);
	if (r < 0)
		return r;
	const char *t = cvm_rows_text(rows, 0, 0);
	if (!t || !hsm_is_guid(t))
		return cvm_err_internal(err, "hsm_auth_meta: stored tenant id is not a GUID");
	memcpy(tenant, t, 37);
	return 0;
}

int cvm_hsm_tenant_id(struct cvm_hsm *h, char out[37], struct cvm_err *err)
{
	struct cvm_hsm_auth *a;
	int r = hsm_auth(h, &a, err);
	if (r < 0)
		return r;
	pthread_mutex_lock(&a->lock);
	if (!a->tenant[0]) {
		char t[37];
		r = cvm_store_transact(h->store, CVM_TX_WRITE, tenant_tx, t, err);
		if (r == 0)
			memcpy(a->tenant, t, sizeof(t));
	}
	if (r == 0)
		memcpy(out, a->tenant, 37);
	pthread_mutex_unlock(&a->lock);
	return r;
}

/* ---- service keys ----------------------------------------------------------------------- */

struct svc_key_ctx {
	struct cvm_hsm *h;
	const char *which;     /* "$oauth-token" / "$release-signing" */
	bool want_cert;
	struct cvm_key *key;   /* out */
	X509 *cert;            /* out */
};

static int svc_key_load_row(struct svc_key_ctx *c, struct cvm_rows *rows, struct cvm_err *err)
{
	size_t len = 0, clen = 0;
	const uint8_t *blob = cvm_rows_blob(rows, 0, 0, &len);
	int r = cvm_hsm_unseal_private(c->h, c->which, "1", CVM_KTY_RSA, blob, len, &c->key, err);
	if (r < 0)
		return cvm_err_prefix(err, "service key %s", c->which + 1);
	const uint8_t *cder = cvm_rows_blob(rows, 0, 1, &clen);
	if (c->want_cert) {
		if (!cder)
			return cvm_err_internal(err, "service key %s: certificate missing",
						c->which + 1);
		const uint8_t *p = cder;
		c->cert = d2i_X509(NULL, &p, (long)clen);
		if (!c->cert || p != cder + clen)
			return cvm_err_openssl(err, EIO, "service key certificate");
	}
	return 0;
}

static int svc_key_tx(struct cvm_tx *tx, void *ctx, struct cvm_err *err)
{
	struct svc_key_ctx *c = ctx;
	cvm_key_free(c->key);
	c->key = NULL;
	X509_free(c->cert);
	c->cert = NULL;

	struct cvm_val p[] = { CVM_VAL_S(c->which) };
	_cleanup_rows_ struct cvm_rows *rows = NULL;
	int r = cvm_tx_query(tx, "SELECT sealed, cert FROM hsm_service_keys WHERE name = ?", p, 1,
			     &rows, err);
	if (r < 0)
		return r;
	if (cvm_rows_count(rows) > 0)
		return svc_key_load_row(c, rows, err);

	r = cvm_key_generate_rsa(2048, 0, &c->key, err);
	if (r < 0)
		return r;
	_cleanup_buf_ struct cvm_buf sealed = { 0 };
	r = cvm_hsm_seal_private(c->h, c->which, "1", c->key, &sealed, err);
	if (r < 0)
		return r;
	unsigned char *der = NULL;
	int dlen = 0;
	if (c->want_cert) {
		const char *cn = "OpenCVM key release signing";
		r = cvm_x509_self_signed(c->key, cn, NULL, NULL, 3650, &c->cert, err);
		if (r < 0)
			return r;
		dlen = i2d_X509(c->cert, &der);
		if (dlen <= 0)
			return cvm_err_openssl(err, EIO, "i2d_X509");
	}
	struct cvm_val ins[] = { CVM_VAL_S(c->which), CVM_VAL_B(sealed.data, sealed.len),
				 der ? CVM_VAL_B(der, (size_t)dlen) : CVM_VAL_NIL,
				 CVM_VAL_I(cvm_now()) };
	r = cvm_tx_exec(tx, "INSERT INTO hsm_service_keys (name, sealed, cert, created) "
			"VALUES (?, ?, ?, ?)", ins, 4, NULL, err);
	OPENSSL_free(der);
	return r;
}

/* Loads or creates a service key. Caller holds a->lock. */
static int svc_key(struct cvm_hsm *h, const char *which, bool want_cert, struct cvm_key **key,
		   X509 **cert, struct cvm_err *err)
{
	struct svc_key_ctx c = { .h = h, .which = which, .want_cert = want_cert };
	pthread_rwlock_rdlock(&h->domain_lock);
	int r = cvm_hsm_require_active(h, err);
	if (r == 0)
		r = cvm_store_transact(h->store, CVM_TX_WRITE, svc_key_tx, &c, err);
	pthread_rwlock_unlock(&h->domain_lock);
	if (r < 0) {
		cvm_key_free(c.key);
		X509_free(c.cert);
		return r;
	}
	*key = c.key;
	if (cert)
		*cert = c.cert;
	else
		X509_free(c.cert);
	return 0;
}

int hsm_token_key(struct cvm_hsm *h, struct cvm_key **key, const char **kid, struct cvm_err *err)
{
	struct cvm_hsm_auth *a;
	int r = hsm_auth(h, &a, err);
	if (r < 0)
		return r;
	pthread_mutex_lock(&a->lock);
	if (!a->token_key) {
		struct cvm_key *k = NULL;
		char *thumb = NULL;
		r = svc_key(h, "$oauth-token", false, &k, NULL, err);
		if (r == 0)
			r = cvm_key_thumbprint(k, &thumb, err);
		if (r == 0) {
			a->token_key = k;
			a->token_kid = thumb;
		} else {
			cvm_key_free(k);
		}
	}
	if (r == 0) {
		*key = a->token_key;
		*kid = a->token_kid;
	}
	pthread_mutex_unlock(&a->lock);
	return r;
}

static int release_header(X509 *cert, const struct cvm_key *k, json_t **hdr, char **pem,
			  struct cvm_err *err)
{
	unsigned char *der = NULL;
	int dlen = i2d_X509(cert, &der);
	if (dlen <= 0)
		return cvm_err_openssl(err, EIO, "i2d_X509");
	uint8_t s256[32];
	SHA256(der, (size_t)dlen, s256);
	_cleanup_free_ char *b64 = cvm_b64_encode(der, (size_t)dlen);
	OPENSSL_free(der);
	_cleanup_free_ char *kid = NULL;
	int r = cvm_key_thumbprint(k, &kid, err);
	if (r < 0)
		return r;
	json_t *h = json_object();
	if (!b64 || !h || json_object_set_new(h, "kid", json_string(kid)) < 0 ||
	    json_object_set_new(h, "x5c", json_pack("[s]", b64)) < 0 ||
	    cvm_json_set_b64url(h, "x5t#S256", s256, sizeof(s256)) < 0) {
		if (h)
			json_decref(h);
		return cvm_err_nomem(err);
	}
	r = cvm_x509_to_pem(cert, pem, err);
	if (r < 0) {
		json_decref(h);
		return r;
	}
	*hdr = h;
	return 0;
}

int hsm_release_signer(struct cvm_hsm *h, struct cvm_key **key, json_t **header,
		       struct cvm_err *err)
{
	struct cvm_hsm_auth *a;
	int r = hsm_auth(h, &a, err);
	if (r < 0)
		return r;
	pthread_mutex_lock(&a->lock);
	if (!a->rel_key) {
		struct cvm_key *k = NULL;
		X509 *cert = NULL;
		json_t *hdr = NULL;
		char *pem = NULL;
		r = svc_key(h, "$release-signing", true, &k, &cert, err);
		if (r == 0)
			r = release_header(cert, k, &hdr, &pem, err);
		X509_free(cert);
		if (r == 0) {
			a->rel_key = k;
			a->rel_header = hdr;
			a->rel_cert_pem = pem;
		} else {
			cvm_key_free(k);
		}
	}
	if (r == 0) {
		*key = a->rel_key;
		*header = a->rel_header;
	}
	pthread_mutex_unlock(&a->lock);
	return r;
}

int cvm_hsm_release_cert_pem(struct cvm_hsm *h, char **pem, struct cvm_err *err)
{
	struct cvm_key *k;
	json_t *hdr;
	int r = hsm_release_signer(h, &k, &hdr, err);
	if (r < 0)
		return r;
	pthread_mutex_lock(&h->auth->lock);
	*pem = strdup(h->auth->rel_cert_pem);
	pthread_mutex_unlock(&h->auth->lock);
	return *pem ? 0 : cvm_err_nomem(err);
}

/* ---- principals ------------------------------------------------------------------------- */

const char *cvm_principal_kind_name(enum cvm_principal_kind k)
{
	switch (k) {
	case CVM_PRINCIPAL_USER: return "User";
	case CVM_PRINCIPAL_SERVICE: return "ServicePrincipal";
	case CVM_PRINCIPAL_MANAGED: return "ManagedIdentity";
	}
	return "Unknown";
}

void cvm_principal_info_clear(struct cvm_principal_info *p)
{
	if (!p)
		return;
	free(p->name);
	memset(p, 0, sizeof(*p));
}

void hsm_principal_free(struct hsm_principal *p)
{
	if (!p)
		return;
	free(p->name);
	free(p->secret_hash);
	free(p->cert_s256);
	free(p->cert_s1);
	free(p->cert_der);
	free(p);
}

static int check_principal_name(const char *name, struct cvm_err *err)
{
	size_t n = name ? strlen(name) : 0;
	if (n == 0 || n > 128)
		return cvm_err_badparam(err, "name: expected 1 to 128 characters");
	for (size_t i = 0; i < n; i++) {
		unsigned char ch = (unsigned char)name[i];
		if (ch < 0x20 || ch == 0x7f)
			return cvm_err_badparam(err, "name: control characters are not allowed");
	}
	/* Names double as identifiers in lookups: a GUID-shaped name could shadow an oid. */
	if (hsm_is_guid(name))
		return cvm_err_badparam(err, "name: must not look like a GUID (GUIDs identify "
					"principals by oid/client_id)");
	return 0;
}

int hsm_principal_insert(struct cvm_tx *tx, const struct hsm_principal *p, struct cvm_err *err)
{
	struct cvm_val v[] = {
		CVM_VAL_S(p->oid), CVM_VAL_S(p->client_id), CVM_VAL_S(p->name),
		CVM_VAL_I(p->kind), CVM_VAL_I(p->created), CVM_VAL_S(p->secret_hash),
		p->cert_der ? CVM_VAL_B(p->cert_der, p->cert_len) : CVM_VAL_NIL,
		CVM_VAL_S(p->cert_s256), CVM_VAL_S(p->cert_s1),
	};
	int r = cvm_tx_exec(tx, "INSERT INTO hsm_principals (oid, client_id, name, kind, created, "
			    "secret_hash, cert_der, cert_s256, cert_s1) VALUES (?, ?, ?, ?, ?, ?, ?, "
			    "?, ?)", v, CVM_ARRAY_SIZE(v), NULL, err);
	if (r == -EEXIST)
		return cvm_err_set(err, EEXIST, "Conflict",
				   "name: a principal named '%s' already exists", p->name);
	return r;
}

static int hash_secret(const char *secret, size_t len, char **out, struct cvm_err *err)
{
	uint8_t salt[SECRET_SALT_LEN];
	int r = cvm_random(salt, sizeof(salt), err);
	if (r < 0)
		return r;
	size_t elen = argon2_encodedlen(SECRET_T_COST, SECRET_M_COST, SECRET_PARALLEL,
					SECRET_SALT_LEN, SECRET_HASH_LEN, Argon2_id);
	char *enc = malloc(elen);
	if (!enc)
		return cvm_err_nomem(err);
	int ar = argon2id_hash_encoded(SECRET_T_COST, SECRET_M_COST, SECRET_PARALLEL, secret, len,
				       salt, sizeof(salt), SECRET_HASH_LEN, enc, elen);
	if (ar != ARGON2_OK) {
		free(enc);
		return cvm_err_internal(err, "argon2id: %s", argon2_error_message(ar));
	}
	*out = enc;
	return 0;
}

/* Fill credential fields from a PEM certificate: DER and its SHA-256 / SHA-1 thumbprints. */
static int principal_cert(struct hsm_principal *p, const char *pem, struct cvm_err *err)
{
	BIO *bio = BIO_new_mem_buf(pem, -1);
	if (!bio)
		return cvm_err_nomem(err);
	X509 *x = PEM_read_bio_X509(bio, NULL, NULL, NULL);
	BIO_free(bio);
	if (!x) {
		ERR_clear_error();
		return cvm_err_badparam(err, "cert_pem: expected a PEM certificate (-----BEGIN "
					"CERTIFICATE-----)");
	}
	struct cvm_key *k = NULL;
	int r = cvm_key_from_pem(pem, strlen(pem), &k, err);
	cvm_key_free(k);
	if (r < 0) {
		X509_free(x);
		return cvm_err_prefix(err, "cert_pem");
	}
	unsigned char *der = NULL;
	int dlen = i2d_X509(x, &der);
	X509_free(x);
	if (dlen <= 0)
		return cvm_err_openssl(err, EIO, "cert_pem: DER encoding");
	uint8_t s256[32], s1[20];
	SHA256(der, (size_t)dlen, s256);
	SHA1(der, (size_t)dlen, s1);
	p->cert_der = malloc((size_t)dlen);
	if (p->cert_der) {
		memcpy(p->cert_der, der, (size_t)dlen);
		p->cert_len = (size_t)dlen;
	}
	OPENSSL_free(der);
	p->cert_s256 = cvm_b64url_encode(s256, sizeof(s256));
	p->cert_s1 = cvm_b64url_encode(s1, sizeof(s1));
	if (!p->cert_der || !p->cert_s256 || !p->cert_s1)
		return cvm_err_nomem(err);
	return 0;
}

/* Builds a new principal record (and its secret when no certificate is given). */
static int principal_new(const char *name, enum cvm_principal_kind kind, const char *cert_pem,
			 struct hsm_principal **out, struct cvm_secret **secret,
			 struct cvm_err *err)
{
	int r = check_principal_name(name, err);
	if (r < 0)
		return r;
	if (kind != CVM_PRINCIPAL_USER && kind != CVM_PRINCIPAL_SERVICE &&
	    kind != CVM_PRINCIPAL_MANAGED)
		return cvm_err_badparam(err, "kind: expected User, ServicePrincipal or "
					"ManagedIdentity");
	if (!cert_pem && !secret)
		return cvm_err_badparam(err, "secret: an output is required when no certificate "
					"is given");
	_cleanup_(hsm_principal_freep) struct hsm_principal *p = calloc(1, sizeof(*p));
	if (!p || !(p->name = strdup(name)))
		return cvm_err_nomem(err);
	p->kind = (int)kind;
	p->created = cvm_now();
	if ((r = cvm_uuid4(p->oid, err)) < 0 || (r = cvm_uuid4(p->client_id, err)) < 0)
		return r;
	if (cert_pem) {
		r = principal_cert(p, cert_pem, err);
		if (r < 0)
			return r;
		if (secret)
			*secret = NULL;
		*out = CVM_TAKE(p);
		return 0;
	}
	uint8_t raw[SECRET_RAW_LEN];
	r = cvm_random(raw, sizeof(raw), err);
	if (r < 0)
		return r;
	char *text = cvm_b64url_encode(raw, sizeof(raw));
	OPENSSL_cleanse(raw, sizeof(raw));
	if (!text)
		return cvm_err_nomem(err);
	size_t tlen = strlen(text);
	r = hash_secret(text, tlen, &p->secret_hash, err);
	struct cvm_secret *s = r == 0 ? cvm_secret_from(text, tlen) : NULL;
	cvm_free_secure(text, tlen);
	if (r < 0)
		return r;
	if (!s)
		return cvm_err_nomem(err);
	*secret = s;
	*out = CVM_TAKE(p);
	return 0;
}

static void principal_info(const struct hsm_principal *p, struct cvm_principal_info *out)
{
	memset(out, 0, sizeof(*out));
	memcpy(out->oid, p->oid, sizeof(out->oid));
	memcpy(out->client_id, p->client_id, sizeof(out->client_id));
	out->name = strdup(p->name);
	out->kind = (enum cvm_principal_kind)p->kind;
	out->created = p->created;
}

static int principal_insert_tx(struct cvm_tx *tx, void *ctx, struct cvm_err *err)
{
	return hsm_principal_insert(tx, ctx, err);
}

int cvm_hsm_principal_create(struct cvm_hsm *h, const char *name, enum cvm_principal_kind kind,
			     const char *cert_pem, struct cvm_principal_info *out,
			     struct cvm_secret **secret, struct cvm_err *err)
{
	struct cvm_hsm_auth *a;
	int r = hsm_auth(h, &a, err);
	if (r < 0)
		return r;
	if (!cert_pem && !secret)
		return cvm_err_badparam(err, "secret: an output is required when no certificate "
					"is given");
	_cleanup_(hsm_principal_freep) struct hsm_principal *p = NULL;
	_cleanup_secret_ struct cvm_secret *s = NULL;
	r = principal_new(name, kind, cert_pem, &p, &s, err);
	if (r < 0)
		return r;
	r = cvm_store_transact(h->store, CVM_TX_WRITE, principal_insert_tx, p, err);
	if (r < 0)
		return r;
	cvm_log_info("hsm_principal_created", "oid=%s client_id=%s kind=%s credential=%s", p->oid,
		     p->client_id, cvm_principal_kind_name(kind), cert_pem ? "certificate" : "secret");
	if (out)
		principal_info(p, out);
	if (secret)
		*secret = CVM_TAKE(s);
	return 0;
}

#define PRINCIPAL_COLS "oid, client_id, name, kind, created, secret_hash, cert_der, cert_s256, " \
		       "cert_s1"

static int principal_from_row(struct cvm_rows *rows, size_t i, struct hsm_principal **out,
			      struct cvm_err *err)
{
	_cleanup_(hsm_principal_freep) struct hsm_principal *p = calloc(1, sizeof(*p));
	if (!p)
		return cvm_err_nomem(err);
	const char *oid = cvm_rows_text(rows, i, 0), *cid = cvm_rows_text(rows, i, 1);
	if (!oid || !cid || strlen(oid) != 36 || strlen(cid) != 36)
		return cvm_err_internal(err, "hsm_principals: malformed row");
	memcpy(p->oid, oid, 37);
	memcpy(p->client_id, cid, 37);
	p->name = cvm_strdup(cvm_rows_text(rows, i, 2));
	p->kind = (int)cvm_rows_int(rows, i, 3);
	p->created = cvm_rows_int(rows, i, 4);
	p->secret_hash = cvm_strdup(cvm_rows_text(rows, i, 5));
	size_t clen = 0;
	const uint8_t *cder = cvm_rows_blob(rows, i, 6, &clen);
	if (cder && clen) {
		if (!(p->cert_der = malloc(clen)))
			return cvm_err_nomem(err);
		memcpy(p->cert_der, cder, clen);
		p->cert_len = clen;
	}
	p->cert_s256 = cvm_strdup(cvm_rows_text(rows, i, 7));
	p->cert_s1 = cvm_strdup(cvm_rows_text(rows, i, 8));
	if (!p->name)
		return cvm_err_nomem(err);
	*out = CVM_TAKE(p);
	return 0;
}

/* sql has nargs (1 or 3) placeholders, all bound to arg. */
static int principal_query(struct cvm_hsm *h, const char *sql, const char *arg, size_t nargs,
			   struct hsm_principal **out, struct cvm_err *err)
{
	_cleanup_tx_ struct cvm_tx *tx = NULL;
	int r = cvm_tx_begin(h->store, CVM_TX_READ, &tx, err);
	if (r < 0)
		return r;
	struct cvm_val p[] = { CVM_VAL_S(arg), CVM_VAL_S(arg), CVM_VAL_S(arg) };
	_cleanup_rows_ struct cvm_rows *rows = NULL;
	r = cvm_tx_query(tx, sql, p, nargs, &rows, err);
	if (r < 0)
		return r;
	if (cvm_rows_count(rows) == 0)
		return cvm_err_set(err, ENOENT, "PrincipalNotFound", "principal '%s' was not found",
				   arg);
	return principal_from_row(rows, 0, out, err);
}

int hsm_principal_find(struct cvm_hsm *h, const char *ident, struct hsm_principal **out,
		       struct cvm_err *err)
{
	struct cvm_hsm_auth *a;
	int r = hsm_auth(h, &a, err);
	if (r < 0)
		return r;
	if (!ident || !*ident)
		return cvm_err_badparam(err, "principal: expected an oid, client_id or name");
	return principal_query(h, "SELECT " PRINCIPAL_COLS " FROM hsm_principals WHERE oid = ? OR "
			       "client_id = ? OR name = ?", ident, 3, out, err);
}

int hsm_principal_by_client_id(struct cvm_hsm *h, const char *client_id,
			       struct hsm_principal **out, struct cvm_err *err)
{
	struct cvm_hsm_auth *a;
	int r = hsm_auth(h, &a, err);
	if (r < 0)
		return r;
	return principal_query(h, "SELECT " PRINCIPAL_COLS " FROM hsm_principals WHERE "
			       "client_id = ?", client_id, 1, out, err);
}

int cvm_hsm_principal_get(struct cvm_hsm *h, const char *ident, struct cvm_principal_info *out,
			  struct cvm_err *err)
{
	_cleanup_(hsm_principal_freep) struct hsm_principal *p = NULL;
	int r = hsm_principal_find(h, ident, &p, err);
	if (r < 0)
		return r;
	if (out)
		principal_info(p, out);
	return 0;
}

static int dummy_hash(struct cvm_hsm_auth *a, char **out, struct cvm_err *err)
{
	pthread_mutex_lock(&a->lock);
	int r = 0;
	if (!a->dummy_hash) {
		uint8_t raw[SECRET_RAW_LEN];
		r = cvm_random(raw, sizeof(raw), err);
		if (r == 0)
			r = hash_secret((const char *)raw, sizeof(raw), &a->dummy_hash, err);
	}
	*out = a->dummy_hash;
	pthread_mutex_unlock(&a->lock);
	return r;
}

int hsm_principal_check_secret(struct cvm_hsm *h, const char *client_id, const char *secret,
			       size_t len, struct hsm_principal **out, struct cvm_err *err)
{
	struct cvm_hsm_auth *a;
	int r = hsm_auth(h, &a, err);
	if (r < 0)
		return r;
	_cleanup_(hsm_principal_freep) struct hsm_principal *p = NULL;
	r = principal_query(h, "SELECT " PRINCIPAL_COLS " FROM hsm_principals WHERE client_id = ?",
			    client_id, 1, &p, err);
	if (r < 0 && r != -ENOENT)
		return r;
	const char *hash = p ? p->secret_hash : NULL;
	char *dummy = NULL;
	if (!hash) {
		/* Same work for unknown clients and certificate-only principals. */
		r = dummy_hash(a, &dummy, err);
		if (r < 0)
			return r;
		hash = dummy;
	}
	bool ok = argon2id_verify(hash, secret, len) == ARGON2_OK;
	if (!p || !p->secret_hash)
		return cvm_err_set(err, EACCES, "invalid_client",
				   "AADSTS700016: Application with identifier '%s' was not found "
				   "or has no client secret.", client_id);
	if (!ok)
		return cvm_err_set(err, EACCES, "invalid_client",
				   "AADSTS7000215: Invalid client secret provided. Ensure the secret "
				   "being sent in the request is the client secret value.");
	*out = CVM_TAKE(p);
	return 0;
}

int cvm_hsm_principal_list(struct cvm_hsm *h, json_t **out, struct cvm_err *err)
{
	struct cvm_hsm_auth *a;
	int r = hsm_auth(h, &a, err);
	if (r < 0)
		return r;
	_cleanup_tx_ struct cvm_tx *tx = NULL;
	r = cvm_tx_begin(h->store, CVM_TX_READ, &tx, err);
	if (r < 0)
		return r;
	_cleanup_rows_ struct cvm_rows *rows = NULL;
	r = cvm_tx_query(tx, "SELECT " PRINCIPAL_COLS " FROM hsm_principals ORDER BY name", NULL,
			 0, &rows, err);
	if (r < 0)
		return r;
	_cleanup_json_ json_t *arr = json_array();
	if (!arr)
		return cvm_err_nomem(err);
	for (size_t i = 0; i < cvm_rows_count(rows); i++) {
		_cleanup_(hsm_principal_freep) struct hsm_principal *p = NULL;
		r = principal_from_row(rows, i, &p, err);
		if (r < 0)
			return r;
		json_t *o = json_pack("{s:s,s:s,s:s,s:s,s:I,s:s}", "oid", p->oid, "client_id",
				      p->client_id, "name", p->name, "kind",
				      cvm_principal_kind_name((enum cvm_principal_kind)p->kind),
				      "created", (json_int_t)p->created, "credential",
				      p->cert_der ? "certificate" : "secret");
		if (!o || (p->cert_s256 &&
			   json_object_set_new(o, "x5t#S256", json_string(p->cert_s256)) < 0) ||
		    json_array_append_new(arr, o) < 0)
			return cvm_err_nomem(err);
	}
	*out = json_pack("{s:O}", "value", arr);
	return *out ? 0 : cvm_err_nomem(err);
}

struct delete_ctx {
	const char *ident;
	char oid[37];
};

static int principal_delete_tx(struct cvm_tx *tx, void *ctx, struct cvm_err *err)
{
	struct delete_ctx *d = ctx;
	struct cvm_val p[] = { CVM_VAL_S(d->ident), CVM_VAL_S(d->ident), CVM_VAL_S(d->ident) };
	_cleanup_rows_ struct cvm_rows *rows = NULL;
	int r = cvm_tx_query(tx, "SELECT oid FROM hsm_principals WHERE oid = ? OR client_id = ? OR "
			     "name = ?", p, 3, &rows, err);
	if (r < 0)
		return r;
	if (cvm_rows_count(rows) != 1)
		return cvm_err_set(err, ENOENT, "PrincipalNotFound", "principal '%s' was not found",
				   d->ident);
	const char *oid = cvm_rows_text(rows, 0, 0);
	if (!oid || strlen(oid) != 36)
		return cvm_err_internal(err, "hsm_principals: malformed row");
	memcpy(d->oid, oid, 37);
	struct cvm_val o[] = { CVM_VAL_S(d->oid) };
	r = cvm_tx_exec(tx, "DELETE FROM hsm_role_assignments WHERE principal_id = ?", o, 1, NULL,
			err);
	if (r < 0)
		return r;
	r = cvm_tx_exec(tx, "DELETE FROM hsm_principals WHERE oid = ?", o, 1, NULL, err);
	if (r < 0)
		return r;
	return hsm_rbac_bump(tx, err);
}

int cvm_hsm_principal_delete(struct cvm_hsm *h, const char *ident, struct cvm_err *err)
{
	struct cvm_hsm_auth *a;
	int r = hsm_auth(h, &a, err);
	if (r < 0)
		return r;
	if (!ident || !*ident)
		return cvm_err_badparam(err, "principal: expected an oid, client_id or name");
	struct delete_ctx d = { .ident = ident };
	r = cvm_store_transact(h->store, CVM_TX_WRITE, principal_delete_tx, &d, err);
	hsm_rbac_invalidate(h);
	if (r == 0)
		cvm_log_info("hsm_principal_deleted", "oid=%s", d.oid);
	return r;
}

/* ---- bootstrap -------------------------------------------------------------------------- */

struct bootstrap_ctx {
	struct hsm_principal *p;
	char assignment[37];
};

#define ROLE_ADMINISTRATOR "a290e904-7015-4bba-90c8-60543313cdb4"

static int bootstrap_tx(struct cvm_tx *tx, void *ctx, struct cvm_err *err)
{
	struct bootstrap_ctx *b = ctx;
	_cleanup_rows_ struct cvm_rows *rows = NULL;
	int r = cvm_tx_query(tx, "SELECT COUNT(*) FROM hsm_principals", NULL, 0, &rows, err);
	if (r < 0)
		return r;
	if (cvm_rows_int(rows, 0, 0) != 0)
		return cvm_err_set(err, EEXIST, "Conflict",
				   "bootstrap: principals already exist; the first administrator "
				   "is created only in an empty HSM");
	r = hsm_principal_insert(tx, b->p, err);
	if (r < 0)
		return r;
	struct cvm_val v[] = { CVM_VAL_S(b->assignment), CVM_VAL_S("/"),
			       CVM_VAL_S(ROLE_ADMINISTRATOR), CVM_VAL_S(b->p->oid),
			       CVM_VAL_I(cvm_now()) };
	r = cvm_tx_exec(tx, "INSERT INTO hsm_role_assignments (name, scope, role_id, principal_id, "
			"created) VALUES (?, ?, ?, ?, ?)", v, 5, NULL, err);
	if (r < 0)
		return r;
	return hsm_rbac_bump(tx, err);
}

int cvm_hsm_bootstrap_admin(struct cvm_hsm *h, const char *name, struct cvm_principal_info *out,
			    struct cvm_secret **secret, struct cvm_err *err)
{
	struct cvm_hsm_auth *a;
	int r = hsm_auth(h, &a, err);
	if (r < 0)
		return r;
	_cleanup_(hsm_principal_freep) struct hsm_principal *p = NULL;
	_cleanup_secret_ struct cvm_secret *s = NULL;
	r = principal_new(name, CVM_PRINCIPAL_USER, NULL, &p, &s, err);
	if (r < 0)
		return r;
	struct bootstrap_ctx b = { .p = p };
	if ((r = cvm_uuid4(b.assignment, err)) < 0)
		return r;
	r = cvm_store_transact(h->store, CVM_TX_WRITE, bootstrap_tx, &b, err);
	hsm_rbac_invalidate(h);
	if (r < 0)
		return r;
	cvm_log_info("hsm_bootstrap_admin", "oid=%s client_id=%s", p->oid, p->client_id);
	if (out)
		principal_info(p, out);
	if (secret)
		*secret = CVM_TAKE(s);
	return 0;
}
