/* SPDX-License-Identifier: Apache-2.0 */
/* hsm: the key service (keys, versions, operations, soft delete, rotation, backup, security
 * domain, identities, RBAC, Secure Key Release). rest.c maps the Key Vault REST API onto it. */
#pragma once

#include <opencvm/util.h>

/* ==== keys, versions, operations, soft delete, rotation, backup, security domain ==== */
/*
 * The key store of a Managed-HSM-compatible key service. All functions return 0 or a negative
 * errno and fill a struct cvm_err whose `code` is the Key Vault error code:
 *   -EINVAL "BadParameter"   a field is missing/wrong (message names the field: "key_size: ...")
 *   -ENOTSUP "BadParameter"  unknown/unsupported algorithm or curve
 *   -EBADMSG "BadParameter"  decrypt/unwrap integrity failure, corrupt backup blob
 *   -ENOENT "KeyNotFound"    no (non-deleted) key/version of that name
 *   -EEXIST "Conflict"       name is soft-deleted (create/import/restore), or exists (restore)
 *   -EPERM  "Forbidden"      disabled / not yet valid (nbf) / expired (exp) key, purge of a
 *                            purge-protected key before its retention ends
 *   -EBUSY  "HsmNotActivated" the security domain is not active yet (see cvm_hsm_domain_*)
 *
 * Chosen behaviours (documented here because Key Vault leaves them implicit):
 *  - kty is reported as created: "RSA-HSM"/"EC-HSM"/"oct-HSM" when asked for the -HSM type,
 *    the plain name otherwise (both are HSM-protected here). oct keys are always oct-HSM.
 *  - An op not permitted by key_ops -> -EINVAL "BadParameter" "Operation X is not permitted on
 *    this key." (Key Vault answers 400); a disabled key -> -EPERM "Forbidden" "Operation X is
 *    not allowed on a disabled key." (403), likewise "...on a key that is not yet valid" / "...on
 *    an expired key".
 *  - Changing an immutable release policy -> -EINVAL "BadParameter" (Key Vault answers 400).
 *    `exportable` is fixed at version creation; an update that changes it is refused.
 *  - Creating a new version of a key whose rotation policy has attributes.expiryTime sets the
 *    new version's exp to created + expiryTime unless the request gives attributes.exp.
 */
#include <jansson.h>

struct cvm_store;
struct cvm_secret;
struct cvm_hsm;

struct cvm_hsm_config {
	struct cvm_store *store;       /* borrowed; must outlive the hsm */
	int soft_delete_days_default;  /* 7..90, 0 means 90. Persisted on first open; with purge
	                                * protection on it can later only be raised. */
	bool purge_protection;         /* persisted; once on it stays on whatever the config says */
	const char *name;              /* HSM name for messages and logs (nullable) */
};

/* Who asks, for kid URLs and log detail. base_url is "https://host:port" as the client addressed
 * us, without a trailing slash (kid = base_url/keys/name/version). NULL fields are allowed
 * (base_url NULL -> "https://localhost"). */
struct cvm_hsm_caller {
	const char *principal;
	const char *request_id;
	const char *source;
	const char *base_url;
};

/* Limits */
#define CVM_HSM_NAME_MAX 127        /* key names: ^[0-9a-zA-Z-]{1,127}$ */
#define CVM_HSM_LIST_MAX 25         /* maxresults 1..25 */
#define CVM_HSM_BACKUP_MAX (4u * 1024u * 1024u) /* decoded key backup blob */

/* Opens (and creates the schema "hsm" in) the store. The hsm starts NOT activated unless the
 * caller activates it (domain_create / domain_create_dev / domain_upload / domain_unlock). */
CVM_EXPORT int cvm_hsm_open(const struct cvm_hsm_config *cfg, struct cvm_hsm **out,
			    struct cvm_err *err);
CVM_EXPORT void cvm_hsm_free(struct cvm_hsm *h); /* NULL-safe; wipes the domain key + cache */
CVM_DEFINE_CLEANUP(struct cvm_hsm, cvm_hsm_free)
#define _cleanup_hsm_ _cleanup_(cvm_hsm_freep)

/* Persisted settings (after open). */
CVM_EXPORT bool cvm_hsm_purge_protection(struct cvm_hsm *h);
CVM_EXPORT int cvm_hsm_retention_days(struct cvm_hsm *h);
/* "CustomizedRecoverable+Purgeable" etc., exactly as Key Vault names them. */
CVM_EXPORT const char *cvm_hsm_recovery_level(struct cvm_hsm *h);

/* ---- security domain -----------------------------------------------------------------------
 * The domain key (256-bit, random) seals every private key at rest (AES-256-GCM under an HKDF
 * subkey, AAD "name|version"), the key backup blobs and the full backups. The store holds only
 * a check value: HMAC-SHA256 under another HKDF subkey, so a recombined key can be verified.
 * Before activation every key operation fails with -EBUSY "HsmNotActivated". */
CVM_EXPORT bool cvm_hsm_activated(struct cvm_hsm *h);
/* True when the store already has a security domain (then use upload/unlock, not create). */
CVM_EXPORT bool cvm_hsm_domain_exists(struct cvm_hsm *h);
/* Create a fresh domain: random domain key, Shamir split quorum-of-n (2 <= quorum <= n,
 * 3 <= n <= 10 like Managed HSM), each share RSA-OAEP-256 encrypted to an officer's RSA public
 * key (PEM: SPKI, certificate or RSA public key; >= 2048 bits). Activates the HSM and returns
 * the security-domain download JSON:
 *   {"version":1,"hsm_id":"<uuid>","quorum":M,"check":"<b64url HMAC>","created":unix,
 *    "shares":[{"index":1,"officer_key_sha256":"<hex SHA-256 of SPKI DER>",
 *               "enc_share":"<b64url RSA-OAEP-256 ciphertext of the 33-byte share>"},...]}
 * -EEXIST "Conflict" when the store already has a domain. */
CVM_EXPORT int cvm_hsm_domain_create(struct cvm_hsm *h, const char *const *officer_pems, size_t n,
				     unsigned quorum, json_t **download, struct cvm_err *err);
/* Dev/test mode: create a domain with a random key held only in this process's memory (nothing
 * secret is written anywhere; a restart needs domain_unlock with a key the caller kept, so
 * prefer domain_create_with_key when the caller wants to keep it). */
CVM_EXPORT int cvm_hsm_domain_create_dev(struct cvm_hsm *h, struct cvm_err *err);
/* Create a domain from a caller-held 32-byte key (dev mode key file, tests). */
CVM_EXPORT int cvm_hsm_domain_create_with_key(struct cvm_hsm *h, const struct cvm_secret *key32,
					      struct cvm_err *err);
/* Activate an HSM whose store has a domain from the raw 32-byte domain key (restart in dev mode,
 * other cvmd nodes). Verified against the stored check value: -EPERM "Forbidden" otherwise. */
CVM_EXPORT int cvm_hsm_domain_unlock(struct cvm_hsm *h, const struct cvm_secret *key32,
				     struct cvm_err *err);
/* Activate from >= quorum decrypted shares; the recombined key must match the stored check
 * value, otherwise -EPERM "Forbidden" (too few shares, a wrong share, another domain). Fewer
 * than 2 shares, duplicates or malformed shares: -EINVAL "BadParameter". */
CVM_EXPORT int cvm_hsm_domain_upload(struct cvm_hsm *h, struct cvm_secret *const *shares,
				     size_t n, struct cvm_err *err);
/* Same for an HSM whose store has no domain yet (disaster recovery into an empty store before a
 * full restore): the check value and hsm_id come from the download JSON and are stored. When the
 * store already has a domain this is cvm_hsm_domain_upload (the download is not consulted). */
CVM_EXPORT int cvm_hsm_domain_restore(struct cvm_hsm *h, json_t *download,
				      struct cvm_secret *const *shares, size_t n,
				      struct cvm_err *err);
/* For officers/CLI: decrypt the share encrypted to this officer (matched by SPKI SHA-256);
 * -ENOENT "NotFound" when the download holds no share for this key. */
CVM_EXPORT int cvm_hsm_domain_decrypt_share(json_t *download, const char *officer_private_pem,
					    struct cvm_secret **share, struct cvm_err *err);

/* ---- Key Vault operations ------------------------------------------------------------------
 * Bodies are parsed JSON request bodies exactly as Key Vault receives them (NULL = {}); *out is a
 * new reference to the Key Vault response JSON (KeyBundle, DeletedKeyBundle, KeyOperationResult,
 * KeyVerifyResult, KeyListResult, DeletedKeyListResult, BackupKeyResult, KeyRotationPolicy). */
CVM_EXPORT int cvm_hsm_key_create(struct cvm_hsm *h, const struct cvm_hsm_caller *c,
				  const char *name, json_t *body, json_t **out,
				  struct cvm_err *err);
CVM_EXPORT int cvm_hsm_key_import(struct cvm_hsm *h, const struct cvm_hsm_caller *c,
				  const char *name, json_t *body, json_t **out,
				  struct cvm_err *err);
/* version NULL or "" = latest */
CVM_EXPORT int cvm_hsm_key_get(struct cvm_hsm *h, const struct cvm_hsm_caller *c,
			       const char *name, const char *version, json_t **out,
			       struct cvm_err *err);
CVM_EXPORT int cvm_hsm_key_update(struct cvm_hsm *h, const struct cvm_hsm_caller *c,
				  const char *name, const char *version, json_t *body, json_t **out,
				  struct cvm_err *err);
/* maxresults 1..25 (0 = 25); skiptoken NULL or from a previous nextLink; api_version echoed in
 * nextLink = base_url/keys?api-version=..&$skiptoken=..&maxresults=.. (absent on the last
 * page). Key items carry kid without version. */
CVM_EXPORT int cvm_hsm_key_list(struct cvm_hsm *h, const struct cvm_hsm_caller *c, int maxresults,
				const char *skiptoken, const char *api_version, json_t **out,
				struct cvm_err *err);
CVM_EXPORT int cvm_hsm_key_versions(struct cvm_hsm *h, const struct cvm_hsm_caller *c,
				    const char *name, int maxresults, const char *skiptoken,
				    const char *api_version, json_t **out, struct cvm_err *err);
CVM_EXPORT int cvm_hsm_key_delete(struct cvm_hsm *h, const struct cvm_hsm_caller *c,
				  const char *name, json_t **out, struct cvm_err *err);
CVM_EXPORT int cvm_hsm_deleted_get(struct cvm_hsm *h, const struct cvm_hsm_caller *c,
				   const char *name, json_t **out, struct cvm_err *err);
CVM_EXPORT int cvm_hsm_deleted_list(struct cvm_hsm *h, const struct cvm_hsm_caller *c,
				    int maxresults, const char *skiptoken, const char *api_version,
				    json_t **out, struct cvm_err *err);
CVM_EXPORT int cvm_hsm_deleted_recover(struct cvm_hsm *h, const struct cvm_hsm_caller *c,
				       const char *name, json_t **out, struct cvm_err *err);
/* purge-protected before retention end -> -EPERM "Forbidden" naming the scheduledPurgeDate */
CVM_EXPORT int cvm_hsm_deleted_purge(struct cvm_hsm *h, const struct cvm_hsm_caller *c,
				     const char *name, struct cvm_err *err);
/* op: "encrypt","decrypt","wrapkey","unwrapkey","sign","verify" (case-insensitive). */
CVM_EXPORT int cvm_hsm_key_op(struct cvm_hsm *h, const struct cvm_hsm_caller *c,
			      const char *name, const char *version, const char *op, json_t *body,
			      json_t **out, struct cvm_err *err);
CVM_EXPORT int cvm_hsm_key_backup(struct cvm_hsm *h, const struct cvm_hsm_caller *c,
				  const char *name, json_t **out, struct cvm_err *err);
CVM_EXPORT int cvm_hsm_key_restore(struct cvm_hsm *h, const struct cvm_hsm_caller *c,
				   json_t *body, json_t **out, struct cvm_err *err);
CVM_EXPORT int cvm_hsm_key_rotate(struct cvm_hsm *h, const struct cvm_hsm_caller *c,
				  const char *name, json_t **out, struct cvm_err *err);
CVM_EXPORT int cvm_hsm_rotation_policy_get(struct cvm_hsm *h, const struct cvm_hsm_caller *c,
					   const char *name, json_t **out, struct cvm_err *err);
CVM_EXPORT int cvm_hsm_rotation_policy_put(struct cvm_hsm *h, const struct cvm_hsm_caller *c,
					   const char *name, json_t *body, json_t **out,
					   struct cvm_err *err);
/* body {"count":1..128} -> {"value":"<b64url>"}; works before activation too. */
CVM_EXPORT int cvm_hsm_rng(struct cvm_hsm *h, json_t *body, json_t **out, struct cvm_err *err);

/* Scheduler tick (daemon: every few seconds; tests: explicit now). Carries out due rotations
 * (Rotate timeAfterCreate / timeBeforeExpiry; new version exp from expiryTime), Notify actions
 * (logged event "key_near_expiry", once per version) and purges of deleted keys whose
 * scheduledPurgeDate passed (never before retention ends). Each due action is done once even
 * with several cvmd processes on one PostgreSQL (compare-and-set updates). Returns the number
 * of actions carried out (>= 0) or a negative errno. While not activated, rotations wait (they
 * need the domain key) and purges still happen. */
CVM_EXPORT int cvm_hsm_tick(struct cvm_hsm *h, int64_t now, struct cvm_err *err);

/* Full HSM backup/restore to a directory: manifest.json + keys.json (every key with all versions,
 * sealed material as stored, deleted state, rotation policies), integrity-protected by an HMAC
 * under a domain-key subkey recorded in the manifest. Restore replaces every key in this HSM and
 * succeeds only in an HSM activated with the same security domain. */
CVM_EXPORT int cvm_hsm_full_backup(struct cvm_hsm *h, const char *dir, struct cvm_err *err);
CVM_EXPORT int cvm_hsm_full_restore(struct cvm_hsm *h, const char *dir, struct cvm_err *err);

/* ==== end keys section ==== */

/* ==== identities, OAuth tokens, RBAC, release policy, Secure Key Release ==== */
/*
 * The auth half of the key service: who may call (principals with a client secret or a client
 * certificate), how they prove it (an OAuth2 client-credentials token endpoint shaped like
 * Entra's, bearer tokens), what they may do (local RBAC shaped like Managed HSM's), and Secure
 * Key Release (the Azure SKR release-policy grammar, issuer JWKS fetching, key wrapping).
 *
 * Errors (besides the keys section's):
 *   -EACCES "Unauthorized"   missing/invalid bearer token (REST answers 401 + challenge)
 *   -EACCES "invalid_client" token endpoint: unknown client or wrong credential (OAuth errors
 *                            carry the OAuth error name as code: "invalid_request",
 *                            "unsupported_grant_type", "invalid_scope"; render them with
 *                            cvm_hsm_oauth_error_json)
 *   -EPERM  "Forbidden"      RBAC denies, or a release is refused (policy, authority, nonce,
 *                            replay, not exportable, no release policy)
 *   -ENOENT "RoleAssignmentNotFound" / "RoleDefinitionNotFound" / "PrincipalNotFound"
 *   -EBUSY  "HsmNotActivated" token endpoint, authentication and release need the security
 *                            domain (the service keys are sealed under it)
 */

struct cvm_hsm;
struct cvm_hsm_caller;

/* Audiences (token "aud") accepted besides the service's own base URL. */
#define CVM_HSM_RESOURCE_MHSM "https://managedhsm.azure.net"
#define CVM_HSM_RESOURCE_VAULT "https://vault.azure.net"
#define CVM_HSM_TOKEN_LIFETIME 3599   /* seconds, as Entra's expires_in */
#define CVM_HSM_RBAC_MAX_STALE_MS 1000 /* RBAC changes made by another process show within */

/* ---- identities ------------------------------------------------------------------------- */
enum cvm_principal_kind { CVM_PRINCIPAL_USER, CVM_PRINCIPAL_SERVICE, CVM_PRINCIPAL_MANAGED };
struct cvm_principal_info {
	char oid[37];           /* object id (uuid): the principalId of role assignments */
	char client_id[37];     /* application id (uuid): OAuth client_id, token "appid" */
	char *name;             /* malloc'd; free with cvm_principal_info_clear */
	enum cvm_principal_kind kind;
	int64_t created;
};
CVM_EXPORT void cvm_principal_info_clear(struct cvm_principal_info *p);
/* "User", "ServicePrincipal", "ManagedIdentity" */
CVM_EXPORT const char *cvm_principal_kind_name(enum cvm_principal_kind k);
/* name: 1..128 printable characters, unique. Without cert_pem: a fresh random client secret
 * (40 base64url characters) is returned once in *secret; only its Argon2id hash is stored
 * (libargon2 encoded form: per-secret random salt and the cost parameters recorded with the
 * hash). With cert_pem (a PEM certificate; RSA or EC): certificate credential, *secret is set
 * to NULL (secret may then be NULL); the client proves possession with an RFC 7523
 * client_assertion JWT signed by the certificate's key whose header names the certificate by
 * x5t#S256 (or x5t, SHA-1, as older Entra clients send). -EEXIST "Conflict" for a taken name. */
CVM_EXPORT int cvm_hsm_principal_create(struct cvm_hsm *h, const char *name,
					enum cvm_principal_kind kind, const char *cert_pem,
					struct cvm_principal_info *out, struct cvm_secret **secret,
					struct cvm_err *err);
/* {"value":[{"oid","client_id","name","kind","created","credential":"secret"|"certificate",
 *  "x5t#S256"?}]} ordered by name. */
CVM_EXPORT int cvm_hsm_principal_list(struct cvm_hsm *h, json_t **out, struct cvm_err *err);
/* Looks up by oid, client_id or name. -ENOENT "PrincipalNotFound". out may be NULL. */
CVM_EXPORT int cvm_hsm_principal_get(struct cvm_hsm *h, const char *oid_or_client_id_or_name,
				     struct cvm_principal_info *out, struct cvm_err *err);
/* Also deletes the principal's role assignments (tokens it holds then grant nothing). */
CVM_EXPORT int cvm_hsm_principal_delete(struct cvm_hsm *h, const char *oid_or_client_id_or_name,
					struct cvm_err *err);
/* The service's tenant id (uuid, created on first use and persisted): token "tid", the
 * {tenant} of the token endpoint, and the tenant in the WWW-Authenticate challenge. */
CVM_EXPORT int cvm_hsm_tenant_id(struct cvm_hsm *h, char out[37], struct cvm_err *err);

/* ---- OAuth2 token endpoint and bearer authentication -------------------------------------
 * POST {base}/{tenant}/oauth2/v2.0/token, form body (application/x-www-form-urlencoded):
 * grant_type=client_credentials, client_id, and client_secret or client_assertion +
 * client_assertion_type=urn:ietf:params:oauth:client-assertion-type:jwt-bearer, scope
 * "<resource>/.default" (resource: base_url, CVM_HSM_RESOURCE_MHSM or CVM_HSM_RESOURCE_VAULT).
 * tenant must be the service tenant id (or "organizations"/"common"). The client assertion's
 * aud must be the token endpoint URL ({base}/{tenant}/oauth2/v2.0/token) or the issuer, iss and
 * sub the client_id, exp required (lifetime at most 1 hour).
 * *out = {"token_type":"Bearer","expires_in":3599,"ext_expires_in":3599,"access_token":JWT};
 * the JWT is RS256 signed by the service token key (sealed in the store, header kid), claims
 * aud, iss={base}/{tenant-id}/v2.0, iat, nbf, exp, oid, sub (= oid), tid, appid, azp, idtyp
 * "app", ver "2.0", uti. Errors: code is the OAuth error name (see top). */
CVM_EXPORT int cvm_hsm_oauth_token(struct cvm_hsm *h, const char *base_url, const char *tenant,
				   const uint8_t *form, size_t form_len, json_t **out,
				   struct cvm_err *err);
/* Entra-shaped error body {"error":<code>,"error_description":<msg>} for a failed
 * cvm_hsm_oauth_token; HTTP status from cvm_err_http_status (invalid_client 401, others 400,
 * HsmNotActivated/internal errors keep their status). */
CVM_EXPORT json_t *cvm_hsm_oauth_error_json(const struct cvm_err *err);
/* The token-signing key set, for the jwks_uri of the OpenID metadata:
 * {"keys":[{"kty":"RSA","use":"sig","alg":"RS256","kid","n","e"}]}. Needs activation. */
CVM_EXPORT int cvm_hsm_oauth_jwks(struct cvm_hsm *h, json_t **out, struct cvm_err *err);
/* authorization: the Authorization header value ("Bearer <jwt>", scheme case-insensitive).
 * Checks the signature (service token key), exp/nbf (60 s leeway), iss = {base_url}/{tenant}/
 * v2.0 and aud in {base_url, MHSM, VAULT} (trailing slash ignored). Verified tokens are cached
 * by SHA-256 until exp (bounded). -EACCES "Unauthorized" ("Request is missing a Bearer or PoP
 * token." when absent, "Error validating token: <why>" otherwise). */
CVM_EXPORT int cvm_hsm_authenticate(struct cvm_hsm *h, const char *authorization,
				    const char *base_url, char oid[37], struct cvm_err *err);

/* ---- RBAC (Managed HSM local RBAC) ---------------------------------------------------------
 * Scopes: "/", "/keys", "/keys/{name}". An assignment applies to a target scope it covers:
 * "/" covers everything, "/keys" covers "/keys" and every "/keys/{name}", "/keys/{name}" only
 * itself. Role definitions: the Managed HSM built-ins (exact names and GUIDs) plus custom roles.
 * Data actions match case-insensitively; '*' in a role's dataActions/notDataActions matches any
 * run of characters (Azure wildcard). Allowed = some applicable assignment's role has a
 * dataAction matching and no notDataAction of that same role matching.
 * Caching: assignments and custom roles are cached per process; this process's own changes
 * apply immediately, changes by another process (shared PostgreSQL) within
 * CVM_HSM_RBAC_MAX_STALE_MS (a generation counter in the store is re-read at most once per
 * that interval). */
/* key_name NULL: target scope "/keys" for keys/... actions, "/" for the others.
 * -EPERM "Forbidden" naming principal, action and scope. */
CVM_EXPORT int cvm_hsm_rbac_check(struct cvm_hsm *h, const char *oid, const char *data_action,
				  const char *key_name, struct cvm_err *err);
/* Same with an explicit target scope ("/", "/keys", "/keys/{name}"): for role management at a
 * scope (roleAssignments/write at "/keys" ...). */
CVM_EXPORT int cvm_hsm_rbac_check_scope(struct cvm_hsm *h, const char *oid,
					const char *data_action, const char *scope,
					struct cvm_err *err);
/* Role definitions: scope "/" or "/keys"; name is the role GUID. Responses are Key Vault's
 * RoleDefinition {"id":"{scope-prefix}/providers/Microsoft.Authorization/roleDefinitions/
 * <guid>","name","type":"Microsoft.Authorization/roleDefinitions","properties":{"roleName",
 * "description","type":"AKVBuiltInRole"|"CustomRole","permissions":[{"actions":[],
 * "notActions":[],"dataActions":[],"notDataActions":[]}],"assignableScopes":["/"]}}. */
CVM_EXPORT int cvm_hsm_role_definitions_list(struct cvm_hsm *h, const char *scope, json_t **out,
					     struct cvm_err *err);
CVM_EXPORT int cvm_hsm_role_definition_get(struct cvm_hsm *h, const char *scope,
					   const char *name, json_t **out, struct cvm_err *err);
/* Custom roles only: built-ins -> -EPERM "Forbidden". Body {"properties":{"roleName",
 * "description"?,"type"?:"CustomRole","permissions":[{"dataActions":[...],
 * "notDataActions"?:[...]}],"assignableScopes"?}}; each data action must be one of Managed
 * HSM's (wildcards allowed when they match at least one). roleName unique -> -EEXIST. */
CVM_EXPORT int cvm_hsm_role_definition_put(struct cvm_hsm *h, const char *scope,
					   const char *name, json_t *body, json_t **out,
					   struct cvm_err *err);
/* -EBUSY "Conflict" while assignments use it. */
CVM_EXPORT int cvm_hsm_role_definition_delete(struct cvm_hsm *h, const char *scope,
					      const char *name, struct cvm_err *err);
/* Role assignments: name is a GUID. body {"properties":{"roleDefinitionId","principalId"}};
 * roleDefinitionId is "[/keys]/providers/Microsoft.Authorization/roleDefinitions/<guid>" or
 * the guid. Unknown principal/role -> -EINVAL "BadParameter" naming the field. Same name with
 * other content -> -EEXIST "Conflict" (RoleAssignmentExists); identical -> returns it.
 * Response {"id":"{scope-prefix}/providers/Microsoft.Authorization/roleAssignments/<name>",
 * "name","type":"Microsoft.Authorization/roleAssignments","properties":{"scope",
 * "roleDefinitionId","principalId"}}. */
CVM_EXPORT int cvm_hsm_role_assignment_put(struct cvm_hsm *h, const char *scope, const char *name,
					   json_t *body, json_t **out, struct cvm_err *err);
CVM_EXPORT int cvm_hsm_role_assignment_get(struct cvm_hsm *h, const char *scope, const char *name,
					   json_t **out, struct cvm_err *err);
/* returns the deleted assignment */
CVM_EXPORT int cvm_hsm_role_assignment_delete(struct cvm_hsm *h, const char *scope,
					      const char *name, json_t **out, struct cvm_err *err);
/* filter NULL: assignments at, above and below scope; "atScope()": at or above;
 * "principalId eq '<oid>'": that principal's (at, above or below). {"value":[...]} */
CVM_EXPORT int cvm_hsm_role_assignment_list(struct cvm_hsm *h, const char *scope,
					    const char *filter, json_t **out, struct cvm_err *err);
/* First administrator: when no principal exists yet, creates principal `name` (client secret)
 * and assigns it "Managed HSM Administrator" at "/" (role management, security domain, full
 * backup/restore — no key data actions: separation of duties), in one transaction.
 * -EEXIST "Conflict" when any principal exists. */
CVM_EXPORT int cvm_hsm_bootstrap_admin(struct cvm_hsm *h, const char *name,
				       struct cvm_principal_info *out, struct cvm_secret **secret,
				       struct cvm_err *err);
/* Data action REST must check for a route. route_kind (method ignored unless noted):
 *  keys/create keys/import keys/get keys/list keys/versions keys/update keys/delete
 *  keys/backup keys/restore keys/encrypt keys/decrypt keys/wrapkey keys/unwrapkey keys/sign
 *  keys/verify keys/release keys/export keys/rotate keys/rotationpolicy (GET read, PUT write)
 *  keys/attestation deletedkeys/get deletedkeys/list deletedkeys/recover deletedkeys/purge rng
 *  roleAssignments roleDefinitions (GET read, PUT write, DELETE delete)
 *  securitydomain/download securitydomain/download/status securitydomain/upload
 *  securitydomain/upload/status securitydomain/transferkey backup/start backup/status
 *  restore/start restore/status
 * Returns the full "Microsoft.KeyVault/managedHsm/..." string, NULL for an unknown kind. */
CVM_EXPORT const char *cvm_hsm_data_action(const char *method, const char *route_kind);

/* ---- release policy (Azure SKR grammar) ----------------------------------------------------
 * {"version":"1.0.0"|"1.0" (optional),"anyOf"|"allOf":[{"authority":"https://...",
 *   "anyOf"|"allOf":[condition,...]},...]}
 * condition: {"claim":"a.b.c",<op>:value} with op one of equals notEquals less lessOrEquals
 * greater greaterOrEquals exists; legacy {"claim","condition":<op>,"value"}; or nested
 * {"anyOf":[...]} / {"allOf":[...]}. Member names match case-insensitively ("anyof"); unknown
 * members and empty lists are refused. value: string, number or boolean; less/greater need a
 * number (or numeric string); exists takes true/false (or "true"/"false").
 * Evaluation (claim looked up by cvm_json_path, so dots descend into object claims):
 *  - equals coerces: "false"/"true" (any case) vs JSON booleans, numeric strings vs numbers;
 *    strings compare exactly, except two all-hex strings of equal length compare
 *    case-insensitively (measurements/host data); objects/arrays never equal.
 *  - a missing claim satisfies only exists:false; notEquals on a present claim = !equals.
 *  - authorities match the token issuer after normalization: scheme and host lowercased,
 *    default port dropped, trailing '/' ignored, path kept.
 *  - top-level anyOf: some clause naming the issuer is satisfied; allOf: every clause names the
 *    issuer and is satisfied. */
CVM_EXPORT int cvm_hsm_release_policy_validate(json_t *policy, struct cvm_err *err);
CVM_EXPORT int cvm_hsm_release_policy_eval(json_t *policy, const char *issuer, json_t *claims,
					   bool *allowed, struct cvm_err *err);
/* JSON parse (cvm_json_parse limits) + validate. */
CVM_EXPORT int cvm_hsm_release_policy_parse(const uint8_t *buf, size_t len, json_t **out,
					    struct cvm_err *err);
/* True when some authority of the (valid) policy normalizes to issuer's normalization. */
CVM_EXPORT int cvm_hsm_release_policy_names_issuer(json_t *policy, const char *issuer,
						   bool *named, struct cvm_err *err);
/* "HTTPS://Host:443/x/" -> "https://host/x". -EINVAL naming `what` unless http(s) with a host. */
CVM_EXPORT int cvm_hsm_authority_normalize(const char *url, const char *what, char **out,
					   struct cvm_err *err);

/* ---- Secure Key Release --------------------------------------------------------------------
 * Issuer keys: GET {iss}/.well-known/openid-configuration (its "issuer" must normalize to iss)
 * -> jwks_uri -> JWKS; keys from n/e or crv/x/y, else from x5c[0] (as MAA publishes). Cached per
 * issuer for jwks_ttl_s; an unknown kid refetches at most once per 10 s. https required; plain
 * http only for loopback issuers. */
struct cvm_hsm_auth_config {
	const char *authority_ca_file; /* PEM bundle for authority TLS; NULL = system store */
	int jwks_ttl_s;                /* 0 = 3600 */
	long http_timeout_ms;          /* 0 = 10000 */
};
CVM_EXPORT int cvm_hsm_auth_configure(struct cvm_hsm *h, const struct cvm_hsm_auth_config *cfg,
				      struct cvm_err *err);
/* POST /keys/{name}/{version}/release, body {"target":JWT,"nonce"?,"enc"?}. Checks in order,
 * each with its own error: key exists (-ENOENT) and is usable now (-EPERM, enabled/nbf/exp);
 * exportable (-EPERM "Forbidden"); has a release policy (-EPERM "Forbidden"); body fields
 * (-EINVAL naming target/nonce/enc; enc default CKM_RSA_AES_KEY_WRAP, also
 * RSA_AES_KEY_WRAP_256/384); target parses as a JWS (-EINVAL); its iss is an authority of the
 * policy (-EPERM "target: token issuer X is not an authority of this key's release policy");
 * issuer keys fetched (-EIO "InternalError" naming the URL); kid known and signature valid
 * (RS256/384/512, PS256/384/512, ES256/384/512; -EBADMSG "BadParameter"); exp/nbf (-EINVAL
 * "BadParameter", 60 s leeway); policy satisfied (-EPERM); nonce: when the body has one it must
 * equal the token's "nonce" claim, x-ms-runtime.client-payload.nonce or x-ms-runtime.nonce
 * (strings; numbers compare by decimal form) (-EPERM); replay: a token (identified by the
 * SHA-256 of its signed part, so re-encoded signatures count as the same token) releases once
 * within its lifetime across every process sharing the store (table hsm_release_replay, rows
 * dropped after exp) (-EPERM); wrapping key: the RSA JWK in x-ms-runtime.keys with
 * kid "TpmEphemeralEncryptionKey", else the first RSA key whose key_ops (string or array)
 * allow encrypt or are absent, >= 2048 bits (-EINVAL naming the field).
 * *out = {"value": JWS RS256 compact} signed by the release-signing key (sealed in the store;
 * header alg, kid, x5c [its self-signed certificate], x5t#S256), payload
 * {"request":{"api-version","enc","kid","nonce"?},"response":{"key":KeyBundle}} with
 * key.key_hsm = b64url({"schema_version":"1.0","header":{"kid":<wrapping kid>,"alg":"dir",
 * "enc":<enc>},"ciphertext":b64url(RSA-OAEP(transfer key) || AES-KWP(material))}), material
 * PKCS#8 DER (RSA/EC) or raw (oct). The caller's keys/release permission is REST's check. */
CVM_EXPORT int cvm_hsm_key_release(struct cvm_hsm *h, const struct cvm_hsm_caller *c,
				   const char *name, const char *version, const char *api_version,
				   json_t *body, json_t **out, struct cvm_err *err);
/* The release-signing certificate (PEM), for clients that pin it. */
CVM_EXPORT int cvm_hsm_release_cert_pem(struct cvm_hsm *h, char **pem, struct cvm_err *err);

/* ==== end auth section ==== */

/* ==== REST ==== */
/*
 * The Key Vault / Managed HSM REST surface on a struct cvm_http_server (include/opencvm/http.h):
 * keys, deletedkeys, rng, rotationpolicy, release, backup/restore, the OAuth token endpoint
 * (POST /{tenant}/oauth2/v2.0/token + GET /{tenant}/v2.0/.well-known/openid-configuration for
 * MSAL-based clients), Managed HSM RBAC (/{scope}/providers/Microsoft.Authorization/...) and
 * full backup/restore (POST /backup, PUT /restore, GET /{backup|restore}/{jobId}/pending; the
 * "container" is the server-side backup_dir: storageResourceUri must be "file://" + backup_dir,
 * the job runs synchronously and answers 202 with status "Succeeded").
 * Identities (OpenCVM's own, Entra has no equivalent on the HSM): PUT /opencvm/principals/{name}
 * {"kind"?:"ServicePrincipal"|"User"|"ManagedIdentity","certificate"?:PEM} -> 201 {"name",
 * "object_id","client_id","kind","client_secret"? (shown once)}, GET /opencvm/principals,
 * DELETE /opencvm/principals/{name} (204); RBAC: roleAssignments write/read/delete at "/".
 * Security domain (src/hsm/rest-domain.c; authentication itself needs an activated HSM, so these
 * routes are open and carry their own credential): POST /securitydomain/download {"certificates":
 * [PEM or JWK with x5c or n/e, 3..10] | {"keys":[...]},"required":M} with header
 * x-opencvm-activation-token (the token cvmd wrote to activation_token_file) -> 202 {"value":
 * <download blob JSON text>,"administrator"?:{"client_id","client_secret","object_id","tenant"}}
 * (creates the domain, activates, bootstraps the first administrator; 409 once activated, the
 * blob is not stored); GET /securitydomain/upload -> {"key_format":"jwk","transfer_key":JWK}
 * (RSA-3072 exchange key of this process, with x5c); POST /securitydomain/upload {"value":
 * JSON text {"shares":[b64url RSA-OAEP-256(exchange key, share)...],"security_domain"?:blob}}
 * -> 202 {"status":"Success",...} or 400 naming why (the shares are the credential; with the
 * activation token header a store without identities also gets its first administrator);
 * GET /securitydomain/{download,upload}/pending, GET /opencvm/status {"activated",
 * "security_domain"}. Failed attempts: at most 5 per minute per process (then 429).
 *
 * Per request: authenticate (401 + WWW-Authenticate: Bearer authorization="{base}/{tenant}",
 * resource="https://managedhsm.azure.net" before the body is looked at, so the SDKs' empty
 * first probe gets the challenge), api-version 7.4 or 7.5 (-> 400 BadParameter naming
 * api-version), RBAC data action (403), body parse + shape check (400 naming the field), the
 * hsm call, the audit record (written before the response; a failed audit append turns the
 * answer into 500 InternalError), the response. base_url for kids is "https://" + Host when
 * Host holds only [A-Za-z0-9.:-[]] (at most 255 chars), else the configured base_url.
 */
struct cvm_http_server;
struct cvm_audit;
struct cvm_hsm_rest;

#define CVM_HSM_REST_MAX_BODY (256u * 1024u) /* request bodies; larger -> 413 BadParameter */

struct cvm_hsm_rest_config {
	const char *base_url;   /* "https://host:port" used when the Host header is unusable */
	const char *backup_dir; /* full backup folders are created below it; NULL disables */
	const char *activation_token_file; /* written 0600 while un-activated; NULL disables
					    * activation over REST */
};

/* Registers every route on srv (before cvm_http_server_start). *out holds the route contexts
 * and must be freed with cvm_hsm_rest_free after cvm_http_server_free. h and audit are
 * borrowed and must outlive the server. */
CVM_EXPORT int cvm_hsm_register_routes(struct cvm_hsm *h, struct cvm_audit *audit,
				       struct cvm_http_server *srv,
				       const struct cvm_hsm_rest_config *cfg,
				       struct cvm_hsm_rest **out, struct cvm_err *err);
CVM_EXPORT void cvm_hsm_rest_free(struct cvm_hsm_rest *r); /* NULL-safe */

/* For other modules' routes on the same server (disk): authenticate a request exactly as the
 * key routes do. base_url (CVM_HSM_REST_BASE_URL_MAX bytes) receives "https://" + Host (or the
 * configured base_url), oid the caller's object id. On -EACCES "Unauthorized" the
 * WWW-Authenticate challenge is already set on resp; answer with cvm_http_resp_error. */
#define CVM_HSM_REST_BASE_URL_MAX 300
struct cvm_http_req;
struct cvm_http_resp;
CVM_EXPORT int cvm_hsm_rest_authenticate(struct cvm_hsm_rest *r, const struct cvm_http_req *req,
					 struct cvm_http_resp *resp,
					 char base_url[CVM_HSM_REST_BASE_URL_MAX], char oid[37],
					 struct cvm_err *err);

/* Body kinds of the routes, for the fuzz harness and tests. */
enum cvm_hsm_rest_body {
	CVM_HSM_BODY_NONE,         /* ignored */
	CVM_HSM_BODY_KEY_CREATE,
	CVM_HSM_BODY_KEY_IMPORT,
	CVM_HSM_BODY_KEY_UPDATE,
	CVM_HSM_BODY_KEY_CRYPT,    /* encrypt/decrypt/wrapkey/unwrapkey */
	CVM_HSM_BODY_KEY_SIGN,
	CVM_HSM_BODY_KEY_VERIFY,
	CVM_HSM_BODY_KEY_RELEASE,
	CVM_HSM_BODY_KEY_RESTORE,
	CVM_HSM_BODY_ROTATION_POLICY,
	CVM_HSM_BODY_RNG,
	CVM_HSM_BODY_ROLE_ASSIGNMENT,
	CVM_HSM_BODY_ROLE_DEFINITION,
	CVM_HSM_BODY_FULL_BACKUP,
	CVM_HSM_BODY_FULL_RESTORE,
	CVM_HSM_BODY_PRINCIPAL,
	CVM_HSM_BODY_TOKEN_FORM,   /* application/x-www-form-urlencoded */
	CVM_HSM_BODY_COUNT_
};
/* Parse and shape-check a request body of the given kind exactly as the route does, without
 * touching any state. JSON kinds: *out (nullable) receives the parsed object (NULL for NONE).
 * TOKEN_FORM: checks the form encoding and that grant_type/client_id are present once. */
CVM_EXPORT int cvm_hsm_rest_parse_body(enum cvm_hsm_rest_body kind, const uint8_t *buf,
				       size_t len, json_t **out, struct cvm_err *err);
/* Decode one field of an x-www-form-urlencoded body ('+' and %XX). *value NULL when absent;
 * -EINVAL for a malformed escape or a repeated field. */
CVM_EXPORT int cvm_hsm_form_field(const uint8_t *buf, size_t len, const char *field,
				  char **value, struct cvm_err *err);
/* ==== end REST section ==== */
