/* SPDX-License-Identifier: Apache-2.0 */
/* Shared fixture of the auth-half tests (identity, oauth, rbac, jwks, release): the key-store
 * fixture plus a tiny attestation authority (plain HTTP on 127.0.0.1, port 0) serving
 * /.well-known/openid-configuration and a JWKS, and a signer for its tokens. Include once per
 * test program. */
#pragma once

/* Fixture helpers are static; each test program uses a subset. */
#pragma GCC diagnostic ignored "-Wunused-function"

#include "keystest.h"

#include <pthread.h>

#include <openssl/sha.h>

#include <opencvm/http.h>

#include "hsm/auth-internal.h"

/* ---- tiny authority --------------------------------------------------------------------- */

struct authority {
	struct cvm_http_server *srv;
	char url[64];                /* http://127.0.0.1:PORT */
	pthread_mutex_t lock;
	struct cvm_key *keys[4];     /* signing keys published in the JWKS */
	char kids[4][32];
	size_t nkeys;
	bool x5c_only;               /* publish x5c instead of n/e (like MAA's /certs) */
	char issuer_override[96];    /* metadata "issuer" when set */
	int discovery_hits, jwks_hits;
};

static int auth_discovery(void *ctx, const struct cvm_http_req *req, struct cvm_http_resp *resp)
{
	(void)req;
	struct authority *a = ctx;
	pthread_mutex_lock(&a->lock);
	a->discovery_hits++;
	json_t *o = json_pack("{s:s,s:s+}", "issuer",
			      a->issuer_override[0] ? a->issuer_override : a->url, "jwks_uri",
			      a->url, "/certs");
	pthread_mutex_unlock(&a->lock);
	return cvm_http_resp_json(resp, 200, o);
}

static json_t *jwk_x5c(struct cvm_key *k, const char *kid)
{
	X509 *x = NULL;
	ASSERT_OK(cvm_x509_self_signed(k, "test authority", NULL, NULL, 1, &x, err));
	unsigned char *der = NULL;
	int dlen = i2d_X509(x, &der);
	X509_free(x);
	char *b64 = cvm_b64_encode(der, (size_t)dlen);
	OPENSSL_free(der);
	json_t *o = json_pack("{s:s,s:s,s:[s]}", "kty", "RSA", "kid", kid, "x5c", b64);
	free(b64);
	return o;
}

static int auth_jwks(void *ctx, const struct cvm_http_req *req, struct cvm_http_resp *resp)
{
	(void)req;
	struct authority *a = ctx;
	json_t *keys = json_array();
	pthread_mutex_lock(&a->lock);
	a->jwks_hits++;
	for (size_t i = 0; i < a->nkeys; i++) {
		json_t *j = NULL;
		if (a->x5c_only) {
			j = jwk_x5c(a->keys[i], a->kids[i]);
		} else {
			ASSERT_OK(cvm_key_to_jwk(a->keys[i], false, &j, err));
			json_object_set_new(j, "kid", json_string(a->kids[i]));
			json_object_set_new(j, "use", json_string("sig"));
		}
		json_array_append_new(keys, j);
	}
	pthread_mutex_unlock(&a->lock);
	return cvm_http_resp_json(resp, 200, json_pack("{s:o}", "keys", keys));
}

static void authority_start(struct authority *a)
{
	memset(a, 0, sizeof(*a));
	pthread_mutex_init(&a->lock, NULL);
	struct cvm_http_config cfg = { .listen = "127.0.0.1:0", .threads = 2 };
	ASSERT_OK(cvm_http_server_new(&cfg, &a->srv, err));
	ASSERT_OK(cvm_http_route(a->srv, "GET", "/.well-known/openid-configuration",
				 auth_discovery, a, err));
	ASSERT_OK(cvm_http_route(a->srv, "GET", "/certs", auth_jwks, a, err));
	ASSERT_OK(cvm_http_server_start(a->srv, err));
	snprintf(a->url, sizeof(a->url), "http://127.0.0.1:%d", cvm_http_server_port(a->srv));
	ASSERT_OK(cvm_key_generate_rsa(2048, 0, &a->keys[0], err));
	snprintf(a->kids[0], sizeof(a->kids[0]), "authority-key-1");
	a->nkeys = 1;
}

static void authority_stop(struct authority *a)
{
	cvm_http_server_free(a->srv);
	for (size_t i = 0; i < a->nkeys; i++)
		cvm_key_free(a->keys[i]);
	pthread_mutex_destroy(&a->lock);
}

/* Replace the published key set by one fresh key with kid `kid` (rotation). */
static void authority_rotate(struct authority *a, const char *kid)
{
	struct cvm_key *k = NULL;
	ASSERT_OK(cvm_key_generate_rsa(2048, 0, &k, err));
	pthread_mutex_lock(&a->lock);
	for (size_t i = 0; i < a->nkeys; i++)
		cvm_key_free(a->keys[i]);
	a->keys[0] = k;
	snprintf(a->kids[0], sizeof(a->kids[0]), "%s", kid);
	a->nkeys = 1;
	pthread_mutex_unlock(&a->lock);
}

/* Sign claims (stolen) with the authority's first key, header kid = its kid. */
static char *authority_token(struct authority *a, json_t *claims)
{
	json_t *hdr = json_pack("{s:s}", "kid", a->kids[0]);
	char *jwt = NULL;
	ASSERT_OK(cvm_jwt_sign(a->keys[0], "RS256", hdr, claims, &jwt, err));
	json_decref(hdr);
	json_decref(claims);
	return jwt;
}

/* ---- tokens and principals -------------------------------------------------------------- */

/* Decoded payload of a compact JWS/JWT (new reference). */
static json_t *jwt_payload(const char *jwt)
{
	struct cvm_jws *jws = NULL;
	ASSERT_OK(cvm_jws_parse(jwt, strlen(jwt), &jws, err));
	json_t *p = json_loadb((const char *)jws->payload, jws->payload_len, 0, NULL);
	cvm_jws_free(jws);
	assert_non_null(p);
	return p;
}

/* client_credentials token for a principal with a secret; returns the access token. */
static char *get_token(struct kt *t, const char *base, const char *client_id,
		       const struct cvm_secret *secret, const char *scope)
{
	char tid[37];
	ASSERT_OK(cvm_hsm_tenant_id(t->h, tid, err));
	char *form = cvm_asprintf("grant_type=client_credentials&client_id=%s&client_secret=%.*s"
				  "&scope=%s", client_id, (int)secret->len,
				  (const char *)secret->data, scope);
	json_t *out = NULL;
	ASSERT_OK(cvm_hsm_oauth_token(t->h, base, tid, (const uint8_t *)form, strlen(form), &out,
				      err));
	free(form);
	char *tok = strdup(json_string_value(json_object_get(out, "access_token")));
	json_decref(out);
	return tok;
}

/* Assign a built-in or custom role (by guid) at scope; returns nothing, fails the test. */
static void assign(struct kt *t, const char *scope, const char *role_guid, const char *oid)
{
	char name[37];
	ASSERT_OK(cvm_uuid4(name, err));
	char *body = cvm_asprintf("{\"properties\":{\"roleDefinitionId\":\"/providers/"
				  "Microsoft.Authorization/roleDefinitions/%s\",\"principalId\":\"%s\"}}",
				  role_guid, oid);
	json_t *b = J(body), *out = NULL;
	free(body);
	ASSERT_OK(cvm_hsm_role_assignment_put(t->h, scope, name, b, &out, err));
	json_decref(b);
	json_decref(out);
}

#define ROLE_ADMIN "a290e904-7015-4bba-90c8-60543313cdb4"
#define ROLE_OFFICER "515eb02d-2335-4d2d-92f2-b1cbdf9c3778"
#define ROLE_USER "21dbd100-6940-42c2-9190-5d6cb909625b"
#define ROLE_POLICY_ADMIN "4bd23610-cdcf-4971-bdee-bdc562cc28e4"
#define ROLE_AUDITOR "2c18b078-7c48-4d3a-af88-5a3a1b3f82b3"
#define ROLE_ENCRYPTION "33413926-3206-4cdd-b39a-83574fe37a17"
#define ROLE_RELEASE "21dbd100-6940-42c2-9190-5d6cb909625c"
#define ROLE_BACKUP "7b127d3c-77bd-4e3e-bbe0-dbb8971fa7f8"
#define ROLE_RESTORE "6efe6056-5259-49d2-8b3d-d3d73544b20b"
#define DA_ "Microsoft.KeyVault/managedHsm/"
