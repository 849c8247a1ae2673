/* SPDX-License-Identifier: Apache-2.0 */
/* hsm auth half, module-private: the auth state hung off struct cvm_hsm (h->auth), its store
 * schema, the service keys (OAuth token key, release-signing key) and the pieces shared between
 * identity.c, oauth.c, rbac.c, policy.c, jwks.c and release.c. */
#pragma once

#include <pthread.h>

#include <openssl/evp.h>
#include <openssl/x509.h>

#include <opencvm/crypto.h>
#include <opencvm/hsm.h>
#include <opencvm/json.h>
#include <opencvm/store.h>
#include <opencvm/util.h>

#include "hsm-internal.h"

/* Verified bearer tokens: direct-mapped by token hash, so the cache is bounded and a lookup is
 * one mutex and one memcmp. A collision just evicts (the token is verified again). */
#define HSM_TOKEN_CACHE_SLOTS 4096
struct hsm_token_slot {
	uint8_t hash[32];
	int64_t exp;
	char oid[37];
	char aud[160];    /* tokens with a longer aud are not cached */
	char iss[224];
};

struct hsm_jwks_issuer;   /* jwks.c */

struct cvm_hsm_auth {
	pthread_mutex_t lock;          /* tenant, service keys, config */
	char tenant[37];
	char *dummy_hash;              /* Argon2id hash of random bytes: unknown clients cost the
					* same as known ones */
	struct cvm_key *token_key;     /* OAuth token signing key (RS256) */
	char *token_kid;
	struct cvm_key *rel_key;       /* release-signing key (RS256) */
	json_t *rel_header;            /* {"kid","x5c":[..],"x5t#S256"} */
	char *rel_cert_pem;

	char *ca_file;                 /* authority TLS trust (NULL = system store) */
	int jwks_ttl_s;
	long http_timeout_ms;

	pthread_mutex_t tok_lock;
	struct hsm_token_slot *tok;    /* HSM_TOKEN_CACHE_SLOTS */
	EVP_MD *sha256;                /* fetched once: the one-shot SHA256() looks the
					* implementation up again for every token */

	pthread_mutex_t rbac_lock;
	bool rbac_valid;
	int64_t rbac_gen;
	uint64_t rbac_checked_ns;
	json_t *rbac_assignments;      /* array of {"name","scope","role","principal"} */
	json_t *rbac_custom;           /* object guid -> RoleDefinition properties */

	pthread_mutex_t jwks_lock;
	struct hsm_jwks_issuer *jwks;  /* list */
	size_t jwks_count;
};

/* The auth state, created (schema ensured) on first use. */
int hsm_auth(struct cvm_hsm *h, struct cvm_hsm_auth **out, struct cvm_err *err);

/* Service keys (RSA-2048) sealed under the domain seal key with AAD "$<which>|1"; created on
 * first use (races between processes resolved by the store's primary key). which: "oauth-token"
 * or "release-signing"; the release key also has a self-signed certificate. Borrowed out of
 * the auth state (they live as long as h); -EBUSY "HsmNotActivated" before activation. */
int hsm_token_key(struct cvm_hsm *h, struct cvm_key **key, const char **kid,
		  struct cvm_err *err);
int hsm_release_signer(struct cvm_hsm *h, struct cvm_key **key, json_t **header,
		       struct cvm_err *err);

/* A principal row, by client_id (oauth) or any identifier. */
struct hsm_principal {
	char oid[37];
	char client_id[37];
	char *name;
	int kind;
	int64_t created;
	char *secret_hash;             /* Argon2id encoded, or NULL */
	char *cert_s256, *cert_s1;     /* base64url thumbprints of the certificate, or NULL */
	uint8_t *cert_der;
	size_t cert_len;
};
void hsm_principal_free(struct hsm_principal *p);
CVM_DEFINE_CLEANUP(struct hsm_principal, hsm_principal_free)
int hsm_principal_find(struct cvm_hsm *h, const char *ident, struct hsm_principal **out,
		       struct cvm_err *err);
/* Constant-time-ish: unknown clients still pay one Argon2id verification. -EACCES
 * "invalid_client" for an unknown client or a wrong secret. */
int hsm_principal_check_secret(struct cvm_hsm *h, const char *client_id, const char *secret,
			       size_t len, struct hsm_principal **out, struct cvm_err *err);
/* Inside a write transaction: insert a principal (used by create and bootstrap). */
int hsm_principal_insert(struct cvm_tx *tx, const struct hsm_principal *p, struct cvm_err *err);
/* Inside a write transaction: bump the RBAC generation counter. */
int hsm_rbac_bump(struct cvm_tx *tx, struct cvm_err *err);
/* Drop this process's RBAC cache (after a committed change). */
void hsm_rbac_invalidate(struct cvm_hsm *h);

/* Issuer signing key for kid (a new reference). Fetches/refreshes the issuer's JWKS as
 * documented at cvm_hsm_auth_configure. kid NULL: the issuer must publish exactly one key. */
int hsm_jwks_key(struct cvm_hsm *h, const char *issuer, const char *kid, struct cvm_key **out,
		 struct cvm_err *err);
void hsm_jwks_free_all(struct cvm_hsm_auth *a);

/* Release policy evaluation without re-validating (the policy came from
 * cvm_hsm_release_policy_parse). */
int hsm_policy_names_issuer(json_t *policy, const char *issuer, bool *named,
			    struct cvm_err *err);
int hsm_policy_eval(json_t *policy, const char *issuer, json_t *claims, bool *allowed,
		    struct cvm_err *err);

/* Principal with exactly this client_id; -ENOENT "PrincipalNotFound". */
int hsm_principal_by_client_id(struct cvm_hsm *h, const char *client_id,
			       struct hsm_principal **out, struct cvm_err *err);

/* True when two resource/audience URLs are equal ignoring one trailing '/' and ASCII case of
 * scheme and host. */
bool hsm_url_eq(const char *a, const char *b);
/* Strict check of a GUID string (36 chars, 8-4-4-4-12 hex). */
bool hsm_is_guid(const char *s);
