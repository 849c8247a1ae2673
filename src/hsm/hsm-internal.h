/* SPDX-License-Identifier: Apache-2.0 */
/* hsm module-private interface: the service state, key-version records, key loading for the
 * auth/release half, KeyBundle building, and the pieces shared between keys.c, ops.c,
 * softdelete.c, rotation.c, backup.c and domain.c. Not installed; other modules use hsm.h. */
#pragma once

#include <pthread.h>

#include <jansson.h>

#include <opencvm/crypto.h>
#include <opencvm/hsm.h>
#include <opencvm/json.h>
#include <opencvm/store.h>
#include <opencvm/util.h>

struct cvm_hsm_auth;          /* defined by the auth half (identity/oauth/rbac/policy/release) */
struct cvm_hsm_cache_entry;   /* service.c */

/* Bounded LRU of unsealed private keys, keyed by "name|version". The private material of a
 * version never changes, so entries stay valid across attribute updates; they are dropped on
 * delete/purge/restore to keep secrets out of memory, and when the domain changes. */
struct cvm_hsm_cache {
	pthread_mutex_t lock;
	size_t cap;                          /* max entries */
	size_t count;
	size_t nbuckets;
	struct cvm_hsm_cache_entry **buckets;
	struct cvm_hsm_cache_entry *lru_head; /* most recently used */
	struct cvm_hsm_cache_entry *lru_tail;
};

struct cvm_hsm {
	struct cvm_store *store;       /* borrowed */
	char *name;                    /* for logs/messages */
	int retention_days;            /* persisted soft-delete retention, 7..90 */
	bool purge_protection;         /* persisted, never turned off */

	/* Security domain. Readers take the rwlock shared; activation takes it exclusive. */
	pthread_rwlock_t domain_lock;
	struct cvm_secret *domain_key; /* NULL until activated */
	struct cvm_secret *seal_key;   /* HKDF(domain, "opencvm key seal v1"): private keys at rest */
	struct cvm_secret *backup_key; /* HKDF(domain, "opencvm key backup v1"): key backup blobs */
	struct cvm_secret *full_key;   /* HKDF(domain, "opencvm full backup v1"): full backup HMAC */

	struct cvm_hsm_cache cache;

	/* ==== auth state (owned by the auth half: edit only between these markers) ==== */
	/* Created lazily by the auth half; cvm_hsm_free calls auth_free(auth) when both are set. */
	struct cvm_hsm_auth *auth;
	void (*auth_free)(struct cvm_hsm_auth *auth);
	/* ==== end auth state ==== */
};

/* ---- key version records -----------------------------------------------------------------
 * One version of one key with its attributes, as stored. Produced by cvm_hsm_keyver_get
 * (metadata only, key == NULL) or cvm_hsm_keyver_load (adds the private key). */
struct cvm_hsm_keyver {
	char name[CVM_HSM_NAME_MAX + 1];    /* canonical id: lowercase (Key Vault names are
	                                     * case-insensitive); storage, cache, seal AAD */
	char display[CVM_HSM_NAME_MAX + 1]; /* as first created: kid URLs and messages */
	char version[33];
	char kty[8];              /* as reported: "RSA", "RSA-HSM", "EC", "EC-HSM", "oct-HSM" */
	enum cvm_kty type;
	int key_size;             /* RSA modulus bits, oct bits; EC field bits */
	char crv[8];              /* "P-256"... for EC, "" otherwise */
	json_t *key_ops;          /* array of strings (owned) */
	bool enabled;
	bool exportable;
	bool has_nbf, has_exp;
	int64_t nbf, exp;
	int64_t created, updated;
	json_t *tags;             /* object (owned) or NULL */
	json_t *release_policy;   /* {"contentType","data","immutable"} (owned) or NULL */
	json_t *public_jwk;       /* public JWK members (kty as stored, n/e or crv/x/y); owned */
	bool deleted;             /* the key (all versions) is soft-deleted */
	int64_t deleted_date, scheduled_purge; /* when deleted */
	bool is_current;          /* this is the key's latest version */
	struct cvm_key *key;      /* private key (a reference), only from cvm_hsm_keyver_load */
};
void cvm_hsm_keyver_free(struct cvm_hsm_keyver *kv);
CVM_DEFINE_CLEANUP(struct cvm_hsm_keyver, cvm_hsm_keyver_free)
#define _cleanup_keyver_ _cleanup_(cvm_hsm_keyver_freep)

/* Metadata of a version (NULL/"" = latest) of a non-deleted key (include_deleted: of a
 * soft-deleted one too). -ENOENT "KeyNotFound" with Key Vault's message. No activation needed. */
int cvm_hsm_keyver_get(struct cvm_hsm *h, const char *name, const char *version,
		       bool include_deleted, struct cvm_hsm_keyver **out, struct cvm_err *err);
/* For the release half and ops: metadata + private key unsealed under the domain key (from the
 * LRU cache when present). The key must not be deleted. -EBUSY "HsmNotActivated" before
 * activation. Does NOT check enabled/nbf/exp/key_ops: use cvm_hsm_keyver_usable. */
int cvm_hsm_keyver_load(struct cvm_hsm *h, const char *name, const char *version,
			struct cvm_hsm_keyver **out, struct cvm_err *err);
/* enabled / nbf / exp check for operation `op` (e.g. "decrypt", "release") at time now:
 * -EPERM "Forbidden" "Operation <op> is not allowed on a disabled key." etc. */
int cvm_hsm_keyver_usable(const struct cvm_hsm_keyver *kv, const char *op, int64_t now,
			  struct cvm_err *err);
/* key_ops check: -EINVAL "BadParameter" "Operation <op> is not permitted on this key." op uses
 * Key Vault JWK spelling ("wrapKey", "unwrapKey", ...). */
int cvm_hsm_keyver_permits(const struct cvm_hsm_keyver *kv, const char *op,
			   struct cvm_err *err);

/* KeyBundle {"key":{kid,kty,key_ops,public members},"attributes":{...},"tags","release_policy"}.
 * The release half adds key.key_hsm itself. */
int cvm_hsm_key_bundle(struct cvm_hsm *h, const struct cvm_hsm_caller *c,
		       const struct cvm_hsm_keyver *kv, json_t **out, struct cvm_err *err);
/* The attributes object alone (enabled, nbf, exp, created, updated, recoveryLevel,
 * recoverableDays, exportable). */
json_t *cvm_hsm_attributes_json(struct cvm_hsm *h, const struct cvm_hsm_keyver *kv);
/* kid: base_url/keys/name[/version] (version NULL: without). malloc'd, NULL on ENOMEM. */
char *cvm_hsm_kid(const struct cvm_hsm_caller *c, const char *name, const char *version);
/* base_url of the caller, "https://localhost" when none. */
const char *cvm_hsm_base_url(const struct cvm_hsm_caller *c);

/* ---- shared helpers (module-private) -------------------------------------------------------- */
/* Key name check: ^[0-9a-zA-Z-]{1,127}$ -> -EINVAL "BadParameter" naming "name". */
int cvm_hsm_check_name(const char *name, struct cvm_err *err);
/* check_name + the canonical id (lowercase) every query, cache entry and seal AAD uses. */
int cvm_hsm_name_id(const char *name, char id[CVM_HSM_NAME_MAX + 1], struct cvm_err *err);
/* -EBUSY "HsmNotActivated" unless activated. Caller holds domain_lock (shared). */
int cvm_hsm_require_active(struct cvm_hsm *h, struct cvm_err *err);
/* Same, taking the lock itself: the entry check of every public key call (an HSM without its
 * security domain serves no key data at all, like a Managed HSM before activation). */
int cvm_hsm_check_active(struct cvm_hsm *h, struct cvm_err *err);
/* Seal/unseal private material under seal_key with AAD "name|version". Caller holds
 * domain_lock (shared) and checked activation. */
int cvm_hsm_seal_private(struct cvm_hsm *h, const char *name, const char *version,
			 const struct cvm_key *k, struct cvm_buf *out, struct cvm_err *err);
int cvm_hsm_unseal_private(struct cvm_hsm *h, const char *name, const char *version,
			   enum cvm_kty type, const uint8_t *blob, size_t len,
			   struct cvm_key **out, struct cvm_err *err);
/* Not-found errors with Key Vault's wording. */
int cvm_hsm_err_key_not_found(struct cvm_err *err, const char *name);
int cvm_hsm_err_deleted_not_found(struct cvm_err *err, const char *name);
int cvm_hsm_err_deleted_conflict(struct cvm_err *err, const char *name);

/* Cache (thread-safe). get returns a new reference or NULL. */
struct cvm_key *cvm_hsm_cache_get(struct cvm_hsm *h, const char *name, const char *version);
void cvm_hsm_cache_put(struct cvm_hsm *h, const char *name, const char *version,
		       struct cvm_key *k);
/* Drop every version of name (NULL: everything). */
void cvm_hsm_cache_drop(struct cvm_hsm *h, const char *name);

/* Derive a 32-byte subkey of the domain key with HKDF-SHA256 (empty salt, info = label). */
int cvm_hsm_derive(const struct cvm_secret *domain_key, const char *label,
		   struct cvm_secret **out, struct cvm_err *err);

/* ---- key backup blobs (backup.c) ----------------------------------------------------------- */
/* Parsed content of a key backup blob: the key row and every version with its sealed private
 * material exactly as stored (still sealed under the domain's seal key, AAD name|version). */
struct cvm_hsm_backup_version {
	struct cvm_hsm_keyver meta;   /* key == NULL */
	uint8_t *sealed;
	size_t sealed_len;
};
struct cvm_hsm_backup {
	char name[CVM_HSM_NAME_MAX + 1];      /* canonical id */
	char display[CVM_HSM_NAME_MAX + 1];
	char current_version[33];
	json_t *rotation_policy;      /* stored policy object or NULL */
	int64_t created, updated;
	/* full backups only (a key backup blob restores an active key) */
	bool deleted;
	int64_t deleted_date, scheduled_purge;
	size_t nversions;
	struct cvm_hsm_backup_version *versions;
};
void cvm_hsm_backup_free(struct cvm_hsm_backup *b);
CVM_DEFINE_CLEANUP(struct cvm_hsm_backup, cvm_hsm_backup_free)
/* Open a backup blob (decoded bytes): "OCVMKB\x01" magic, then cvm_seal under backup_key with
 * AAD "opencvm key backup v1", then the payload JSON. -EBADMSG "BadParameter"
 * "value: backup blob is corrupt or from another security domain" when it does not open. */
int cvm_hsm_backup_open(const struct cvm_secret *backup_key, const uint8_t *buf, size_t len,
			struct cvm_hsm_backup **out, struct cvm_err *err);
/* Parse the decrypted payload JSON strictly (every field, every length). Fuzzed. */
int cvm_hsm_backup_parse_payload(const uint8_t *buf, size_t len, struct cvm_hsm_backup **out,
				 struct cvm_err *err);

/* ---- rows ------------------------------------------------------------------------------------
 * Column list for key-version queries: "SELECT " KV_COLS " FROM hsm_keys k JOIN hsm_key_versions
 * v ON v.name = k.name ..."; cvm_hsm_keyver_from_row reads a row of it. */
#define KV_COLS                                                                               \
	"v.name, v.version, v.kty, v.key_size, v.crv, v.key_ops, v.public_jwk, v.enabled, v.nbf, " \
	"v.exp, v.exportable, v.tags, v.release_policy, v.created, v.updated, k.deleted, "         \
	"k.deleted_date, k.scheduled_purge, k.current_version, k.display_name, v.sealed"
enum {
	KV_COL_NAME, KV_COL_VERSION, KV_COL_KTY, KV_COL_KEY_SIZE, KV_COL_CRV, KV_COL_KEY_OPS,
	KV_COL_PUBLIC_JWK, KV_COL_ENABLED, KV_COL_NBF, KV_COL_EXP, KV_COL_EXPORTABLE, KV_COL_TAGS,
	KV_COL_RELEASE_POLICY, KV_COL_CREATED, KV_COL_UPDATED, KV_COL_DELETED, KV_COL_DELETED_DATE,
	KV_COL_SCHEDULED_PURGE, KV_COL_CURRENT, KV_COL_DISPLAY, KV_COL_SEALED,
};
int cvm_hsm_keyver_from_row(const struct cvm_rows *rows, size_t i, struct cvm_hsm_keyver **out,
			    struct cvm_err *err);
/* "RSA"/"RSA-HSM" -> CVM_KTY_RSA etc.; -EINVAL otherwise. */
int cvm_hsm_kty_type(const char *kty, enum cvm_kty *type);

/* One log line per state change: event, key name/version, who asked (never key material). */
void cvm_hsm_log(const char *event, const struct cvm_hsm_caller *c, const char *name,
		 const char *version);

/* ---- new versions (keys.c) -------------------------------------------------------------------
 * Everything needed to insert one version; used by create, import, rotate and the scheduler.
 * cvm_hsm_version_insert runs one write transaction: refuses a soft-deleted name (Conflict),
 * enforces "exportable <=> release policy" (inheriting the current version's policy when a new
 * exportable version gives none), applies the rotation policy's expiryTime when exp is absent,
 * inserts the version and makes it current. With expect_current set it is a compare-and-set:
 * -EALREADY when the key's current version is no longer expect_current. */
struct cvm_hsm_newver {
	const char *name;         /* canonical id (cvm_hsm_name_id) */
	const char *display;      /* as the caller spelled it; kept only by a key's first version */
	char version[33];
	char kty[8];
	enum cvm_kty type;
	int key_size;
	char crv[8];
	json_t *key_ops;          /* owned */
	json_t *public_jwk;       /* owned */
	bool enabled;
	bool has_nbf, has_exp;
	int64_t nbf, exp;
	bool exportable;
	json_t *tags;             /* owned, NULL = none */
	json_t *release_policy;   /* owned, NULL = none given */
	struct cvm_buf sealed;    /* sealed private material (AAD name|version) */
	int64_t now;              /* created = updated = now */
	const char *expect_current;
	/* set by the transaction (reset on every attempt) */
	bool eff_has_exp;
	int64_t eff_exp;
	json_t *eff_policy;       /* borrowed or owned copy: freed by cvm_hsm_newver_clear */
};
void cvm_hsm_newver_clear(struct cvm_hsm_newver *nv);
/* Fill type/size/crv/public_jwk/sealed/version from a private key (activation checked,
 * version generated). kty_reported is "RSA-HSM" etc. */
int cvm_hsm_newver_from_key(struct cvm_hsm *h, struct cvm_hsm_newver *nv,
			    const char *kty_reported, const struct cvm_key *k, struct cvm_err *err);
int cvm_hsm_version_insert(struct cvm_hsm *h, struct cvm_hsm_newver *nv, struct cvm_err *err);
/* Default key_ops for a key type (new array). */
json_t *cvm_hsm_default_key_ops(enum cvm_kty type);

/* ---- lists (keys.c) ---------------------------------------------------------------------------- */
/* Validate maxresults (0 -> 25) and decode skiptoken into after (NUL-terminated; "" when none). */
/* One page of current key versions, live (deleted = false) or soft-deleted, by name after the
 * skiptoken; fetches limit + 1 rows so the caller can tell whether a next page exists. */
int cvm_hsm_page_keys(struct cvm_hsm *h, bool deleted, int maxresults, const char *skiptoken,
		      int *limit, struct cvm_rows **rows, struct cvm_err *err);
int cvm_hsm_page_args(int maxresults, const char *skiptoken, bool hex_version, int *limit,
		      char after[CVM_HSM_NAME_MAX + 1], struct cvm_err *err);
/* {"value":items,"nextLink":...}: nextLink only when more; takes the items reference. */
int cvm_hsm_list_result(const struct cvm_hsm_caller *c, const char *path, const char *api_version,
			int limit, json_t *items, bool more, const char *last, json_t **out,
			struct cvm_err *err);

/* ---- rotation policy (rotation.c) ------------------------------------------------------------ */
/* expiryTime of a stored policy in seconds (0 when none). */
int64_t cvm_hsm_policy_expiry(json_t *policy);
/* A new version like the current one (same kty/size/crv/key_ops/tags/exportable/policy) made at
 * now; with cas the current version must still be expect (-EALREADY otherwise). */
int cvm_hsm_rotate_at(struct cvm_hsm *h, const struct cvm_hsm_caller *c, const char *name,
		      const char *expect, int64_t now, char version_out[33], struct cvm_err *err);

/* ---- soft delete (softdelete.c) -------------------------------------------------------------- */
/* Purge deleted keys whose scheduledPurgeDate <= now; returns the number purged. */
int cvm_hsm_purge_due(struct cvm_hsm *h, int64_t now, struct cvm_err *err);

/* keys.json of a full backup: {"format":"opencvm-full-backup","v":1,"keys":[<record>...]},
 * records with their deleted state, no name twice. Parsed strictly (fuzzed). */
struct cvm_hsm_full_data {
	size_t n;
	struct cvm_hsm_backup **recs;
};
void cvm_hsm_full_data_free(struct cvm_hsm_full_data *fd);
CVM_DEFINE_CLEANUP(struct cvm_hsm_full_data, cvm_hsm_full_data_free)
int cvm_hsm_full_data_parse(const uint8_t *buf, size_t len, struct cvm_hsm_full_data **out,
			    struct cvm_err *err);
