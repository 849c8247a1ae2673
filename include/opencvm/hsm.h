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
 * value, otherwise -EPERM "Forbidden" (too few shares, a wrong share, another domain). */
CVM_EXPORT int cvm_hsm_domain_upload(struct cvm_hsm *h, struct cvm_secret *const *shares,
				     size_t n, struct cvm_err *err);
/* Same for an HSM whose store has no domain yet (disaster recovery into an empty store before a
 * full restore): the check value and hsm_id come from the download JSON and are stored. */
CVM_EXPORT int cvm_hsm_domain_restore(struct cvm_hsm *h, json_t *download,
				      struct cvm_secret *const *shares, size_t n,
				      struct cvm_err *err);
/* For officers/CLI: decrypt the share encrypted to this officer (matched by SPKI SHA-256). */
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

/* ==== end auth section ==== */
