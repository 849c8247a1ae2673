/* SPDX-License-Identifier: Apache-2.0 */
/* hsm service core: open/free, schema and persisted settings, the unsealed-key cache, key
 * version records (load, usability checks) and the KeyBundle shape every answer shares. */
#include "hsm-internal.h"

#include <inttypes.h>
#include <stdio.h>
#include <string.h>

#include <opencvm/json.h>

#define CACHE_CAP 1024
#define CACHE_BUCKETS 2048

/* Schema v1. Table names carry the hsm_ prefix: the auth half keeps its own tables. Listing is
 * one indexed range scan: (deleted, name) for keys, the primary key (name, version) for
 * versions; the skiptoken is the last name/version seen. `name` is the canonical lowercase id
 * (Key Vault names are case-insensitive), display_name the spelling of the first create. */
static const char *const schema_v1[] = {
	"CREATE TABLE IF NOT EXISTS hsm_meta ("
	" id INTEGER PRIMARY KEY,"
	" purge_protection INTEGER NOT NULL,"
	" retention_days INTEGER NOT NULL,"
	" hsm_id TEXT,"
	" domain_check BLOB,"
	" domain_quorum INTEGER,"
	" domain_created INTEGER)",
	"CREATE TABLE IF NOT EXISTS hsm_keys ("
	" name TEXT PRIMARY KEY,"
	" display_name TEXT NOT NULL,"
	" current_version TEXT NOT NULL,"
	" deleted INTEGER NOT NULL,"
	" deleted_date INTEGER,"
	" scheduled_purge INTEGER,"
	" rotation_policy TEXT,"
	" notified_version TEXT,"
	" created INTEGER NOT NULL,"
	" updated INTEGER NOT NULL)",
	"CREATE INDEX IF NOT EXISTS hsm_keys_by_state ON hsm_keys (deleted, name)",
	"CREATE INDEX IF NOT EXISTS hsm_keys_by_purge ON hsm_keys (deleted, scheduled_purge)",
	"CREATE TABLE IF NOT EXISTS hsm_key_versions ("
	" name TEXT NOT NULL,"
	" version TEXT NOT NULL,"
	" kty TEXT NOT NULL,"
	" key_size INTEGER NOT NULL,"
	" crv TEXT,"
	" key_ops TEXT NOT NULL,"
	" public_jwk TEXT NOT NULL,"
	" enabled INTEGER NOT NULL,"
	" nbf INTEGER,"
	" exp INTEGER,"
	" exportable INTEGER NOT NULL,"
	" tags TEXT,"
	" release_policy TEXT,"
	" sealed BLOB NOT NULL,"
	" created INTEGER NOT NULL,"
	" updated INTEGER NOT NULL,"
	" PRIMARY KEY (name, version))",
};

/* ---- errors ---------------------------------------------------------------------------------- */

int cvm_hsm_err_key_not_found(struct cvm_err *err, const char *name)
{
	return cvm_err_set(err, ENOENT, "KeyNotFound",
			   "A key with (name/id) %s was not found in this key vault. If you recently "
			   "deleted this key you may be able to recover it using the correct recovery "
			   "command.",
			   name);
}

int cvm_hsm_err_deleted_not_found(struct cvm_err *err, const char *name)
{
	return cvm_err_set(err, ENOENT, "KeyNotFound", "Deleted Key not found: %s", name);
}

int cvm_hsm_err_deleted_conflict(struct cvm_err *err, const char *name)
{
	return cvm_err_set(err, EEXIST, "Conflict",
			   "Key %s is currently in a deleted but recoverable state, and its name "
			   "cannot be reused; in this state, the key can only be recovered or purged.",
			   name);
}

int cvm_hsm_check_name(const char *name, struct cvm_err *err)
{
	if (!name || !name[0])
		return cvm_err_badparam(err, "name: a key name is required");
	size_t n = strlen(name);
	if (n > CVM_HSM_NAME_MAX)
		return cvm_err_badparam(err, "name: at most %d characters allowed, got %zu",
					CVM_HSM_NAME_MAX, n);
	for (size_t i = 0; i < n; i++) {
		char ch = name[i];
		if (!((ch >= '0' && ch <= '9') || (ch >= 'a' && ch <= 'z') ||
		      (ch >= 'A' && ch <= 'Z') || ch == '-'))
			return cvm_err_badparam(err,
						"name: only 0-9, a-z, A-Z and '-' are allowed "
						"(pattern ^[0-9a-zA-Z-]+$)");
	}
	return 0;
}

int cvm_hsm_name_id(const char *name, char id[CVM_HSM_NAME_MAX + 1], struct cvm_err *err)
{
	int r = cvm_hsm_check_name(name, err);
	if (r < 0)
		return r;
	size_t i;
	for (i = 0; name[i]; i++)
		id[i] = (name[i] >= 'A' && name[i] <= 'Z') ? (char)(name[i] - 'A' + 'a') : name[i];
	id[i] = '\0';
	return 0;
}

static int check_version(const char *version, struct cvm_err *err)
{
	if (strlen(version) != 32)
		return cvm_err_badparam(err, "version: expected 32 lowercase hex characters");
	for (const char *p = version; *p; p++)
		if (!((*p >= '0' && *p <= '9') || (*p >= 'a' && *p <= 'f')))
			return cvm_err_badparam(err, "version: expected 32 lowercase hex characters");
	return 0;
}

/* ---- domain subkeys, sealing ------------------------------------------------------------------ */

int cvm_hsm_derive(const struct cvm_secret *domain_key, const char *label,
		   struct cvm_secret **out, struct cvm_err *err)
{
	_cleanup_secret_ struct cvm_secret *k = cvm_secret_new(32);
	if (!k)
		return cvm_err_nomem(err);
	int r = cvm_hkdf_sha256(domain_key->data, domain_key->len, NULL, 0, label, strlen(label),
				k->data, 32, err);
	if (r < 0)
		return r;
	*out = CVM_TAKE(k);
	return 0;
}

int cvm_hsm_require_active(struct cvm_hsm *h, struct cvm_err *err)
{
	if (!h->domain_key)
		return cvm_err_set(err, EBUSY, "HsmNotActivated",
				   "the HSM is not activated: download a security domain "
				   "(POST /securitydomain/download) or upload one "
				   "(POST /securitydomain/upload) first");
	return 0;
}

int cvm_hsm_check_active(struct cvm_hsm *h, struct cvm_err *err)
{
	pthread_rwlock_rdlock(&h->domain_lock);
	int r = cvm_hsm_require_active(h, err);
	pthread_rwlock_unlock(&h->domain_lock);
	return r;
}

static char *seal_aad(const char *name, const char *version)
{
	return cvm_asprintf("%s|%s", name, version);
}

int cvm_hsm_seal_private(struct cvm_hsm *h, const char *name, const char *version,
			 const struct cvm_key *k, struct cvm_buf *out, struct cvm_err *err)
{
	_cleanup_secret_ struct cvm_secret *pt = NULL;
	int r = cvm_key_export_private(k, &pt, err);
	if (r < 0)
		return r;
	_cleanup_free_ char *aad = seal_aad(name, version);
	if (!aad)
		return cvm_err_nomem(err);
	return cvm_seal(h->seal_key, aad, strlen(aad), pt->data, pt->len, out, err);
}

int cvm_hsm_unseal_private(struct cvm_hsm *h, const char *name, const char *version,
			   enum cvm_kty type, const uint8_t *blob, size_t len,
			   struct cvm_key **out, struct cvm_err *err)
{
	_cleanup_free_ char *aad = seal_aad(name, version);
	if (!aad)
		return cvm_err_nomem(err);
	_cleanup_secret_ struct cvm_secret *pt = NULL;
	int r = cvm_unseal(h->seal_key, aad, strlen(aad), blob, len, &pt, err);
	if (r < 0)
		return cvm_err_set(err, EIO, "InternalError",
				   "key %s/%s: sealed material does not open under this security "
				   "domain",
				   name, version);
	return cvm_key_import_private(type, pt->data, pt->len, out, err);
}

/* ---- cache ------------------------------------------------------------------------------------ */

struct cvm_hsm_cache_entry {
	char *id; /* "name|version" */
	size_t name_len;
	struct cvm_key *key;
	struct cvm_hsm_cache_entry *hnext;
	struct cvm_hsm_cache_entry *prev, *next;
};

static uint64_t fnv1a(const char *s)
{
	uint64_t x = 1469598103934665603ull;
	for (; *s; s++) {
		x ^= (unsigned char)*s;
		x *= 1099511628211ull;
	}
	return x;
}

static void lru_unlink(struct cvm_hsm_cache *c, struct cvm_hsm_cache_entry *e)
{
	if (e->prev)
		e->prev->next = e->next;
	else
		c->lru_head = e->next;
	if (e->next)
		e->next->prev = e->prev;
	else
		c->lru_tail = e->prev;
	e->prev = e->next = NULL;
}

static void lru_push_front(struct cvm_hsm_cache *c, struct cvm_hsm_cache_entry *e)
{
	e->prev = NULL;
	e->next = c->lru_head;
	if (c->lru_head)
		c->lru_head->prev = e;
	c->lru_head = e;
	if (!c->lru_tail)
		c->lru_tail = e;
}

/* Unlink e from its bucket and the LRU list, free it. Caller holds the lock. */
static void cache_remove(struct cvm_hsm_cache *c, struct cvm_hsm_cache_entry *e)
{
	struct cvm_hsm_cache_entry **pp = &c->buckets[fnv1a(e->id) % c->nbuckets];
	while (*pp && *pp != e)
		pp = &(*pp)->hnext;
	if (*pp)
		*pp = e->hnext;
	lru_unlink(c, e);
	cvm_key_free(e->key);
	free(e->id);
	free(e);
	c->count--;
}

static char *cache_id(const char *name, const char *version)
{
	return cvm_asprintf("%s|%s", name, version);
}

struct cvm_key *cvm_hsm_cache_get(struct cvm_hsm *h, const char *name, const char *version)
{
	struct cvm_hsm_cache *c = &h->cache;
	_cleanup_free_ char *id = cache_id(name, version);
	if (!id)
		return NULL;
	struct cvm_key *k = NULL;
	pthread_mutex_lock(&c->lock);
	for (struct cvm_hsm_cache_entry *e = c->buckets[fnv1a(id) % c->nbuckets]; e; e = e->hnext) {
		if (strcmp(e->id, id) == 0) {
			lru_unlink(c, e);
			lru_push_front(c, e);
			k = cvm_key_ref(e->key);
			break;
		}
	}
	pthread_mutex_unlock(&c->lock);
	return k;
}

void cvm_hsm_cache_put(struct cvm_hsm *h, const char *name, const char *version,
		       struct cvm_key *k)
{
	struct cvm_hsm_cache *c = &h->cache;
	struct cvm_hsm_cache_entry *n = calloc(1, sizeof(*n));
	if (!n)
		return; /* the cache is an optimisation: no entry is fine */
	n->id = cache_id(name, version);
	if (!n->id) {
		free(n);
		return;
	}
	n->name_len = strlen(name);
	pthread_mutex_lock(&c->lock);
	size_t b = fnv1a(n->id) % c->nbuckets;
	for (struct cvm_hsm_cache_entry *e = c->buckets[b]; e; e = e->hnext) {
		if (strcmp(e->id, n->id) == 0) {
			pthread_mutex_unlock(&c->lock);
			free(n->id);
			free(n);
			return;
		}
	}
	n->key = cvm_key_ref(k);
	n->hnext = c->buckets[b];
	c->buckets[b] = n;
	lru_push_front(c, n);
	c->count++;
	while (c->count > c->cap && c->lru_tail)
		cache_remove(c, c->lru_tail);
	pthread_mutex_unlock(&c->lock);
}

void cvm_hsm_cache_drop(struct cvm_hsm *h, const char *name)
{
	struct cvm_hsm_cache *c = &h->cache;
	size_t nlen = name ? strlen(name) : 0;
	pthread_mutex_lock(&c->lock);
	struct cvm_hsm_cache_entry *e = c->lru_head;
	while (e) {
		struct cvm_hsm_cache_entry *next = e->next;
		if (!name || (e->name_len == nlen && memcmp(e->id, name, nlen) == 0))
			cache_remove(c, e);
		e = next;
	}
	pthread_mutex_unlock(&c->lock);
}

/* ---- open / free ------------------------------------------------------------------------------ */

struct meta_ctx {
	int want_days;
	bool want_pp;
	int days;
	bool pp;
};

static int meta_tx(struct cvm_tx *tx, void *vctx, struct cvm_err *err)
{
	struct meta_ctx *m = vctx;
	struct cvm_val ins[] = { CVM_VAL_I(m->want_pp), CVM_VAL_I(m->want_days) };
	int r = cvm_tx_exec(tx,
			    "INSERT INTO hsm_meta (id, purge_protection, retention_days) "
			    "VALUES (1, ?, ?) ON CONFLICT (id) DO NOTHING",
			    ins, 2, NULL, err);
	if (r < 0)
		return r;
	_cleanup_rows_ struct cvm_rows *rows = NULL;
	r = cvm_tx_query(tx, "SELECT purge_protection, retention_days FROM hsm_meta WHERE id = 1",
			 NULL, 0, &rows, err);
	if (r < 0)
		return r;
	if (cvm_rows_count(rows) != 1)
		return cvm_err_internal(err, "hsm_meta: settings row missing");
	bool pp = cvm_rows_int(rows, 0, 0) != 0;
	int days = (int)cvm_rows_int(rows, 0, 1);
	/* Purge protection is irreversible: once stored it stays whatever the config says. With
	 * it on, retention may only grow, or deleted keys could be destroyed earlier than promised. */
	if (pp && m->want_days < days)
		return cvm_err_set(err, EPERM, "Forbidden",
				   "soft_delete_days: purge protection is on, the retention of %d days "
				   "cannot be lowered to %d",
				   days, m->want_days);
	m->pp = pp || m->want_pp;
	m->days = m->want_days;
	struct cvm_val upd[] = { CVM_VAL_I(m->pp), CVM_VAL_I(m->days) };
	return cvm_tx_exec(tx, "UPDATE hsm_meta SET purge_protection = ?, retention_days = ? "
			       "WHERE id = 1",
			   upd, 2, NULL, err);
}

int cvm_hsm_open(const struct cvm_hsm_config *cfg, struct cvm_hsm **out, struct cvm_err *err)
{
	if (!cfg || !cfg->store)
		return cvm_err_badparam(err, "store: a store is required");
	int days = cfg->soft_delete_days_default ? cfg->soft_delete_days_default : 90;
	if (days < 7 || days > 90)
		return cvm_err_badparam(err, "soft_delete_days: expected 7..90, got %d", days);
	int r = cvm_store_ensure_schema(cfg->store, "hsm", 1, schema_v1,
					CVM_ARRAY_SIZE(schema_v1), err);
	if (r < 0)
		return r;
	struct meta_ctx m = { .want_days = days, .want_pp = cfg->purge_protection };
	r = cvm_store_transact(cfg->store, CVM_TX_WRITE, meta_tx, &m, err);
	if (r < 0)
		return r;
	if (m.pp && !cfg->purge_protection)
		cvm_log_warn("hsm_purge_protection", "msg=\"purge protection is on in the store and "
			     "cannot be turned off; ignoring the configuration\"");

	struct cvm_hsm *h = calloc(1, sizeof(*h));
	if (!h)
		return cvm_err_nomem(err);
	h->store = cfg->store;
	h->name = cvm_strdup(cfg->name ? cfg->name : "hsm");
	h->retention_days = m.days;
	h->purge_protection = m.pp;
	h->cache.cap = CACHE_CAP;
	h->cache.nbuckets = CACHE_BUCKETS;
	h->cache.buckets = calloc(CACHE_BUCKETS, sizeof(*h->cache.buckets));
	if (!h->name || !h->cache.buckets) {
		free(h->cache.buckets);
		free(h->name);
		free(h);
		return cvm_err_nomem(err);
	}
	pthread_mutex_init(&h->cache.lock, NULL);
	pthread_rwlock_init(&h->domain_lock, NULL);
	*out = h;
	return 0;
}

void cvm_hsm_free(struct cvm_hsm *h)
{
	if (!h)
		return;
	if (h->auth && h->auth_free)
		h->auth_free(h->auth);
	cvm_hsm_cache_drop(h, NULL);
	free(h->cache.buckets);
	pthread_mutex_destroy(&h->cache.lock);
	pthread_rwlock_destroy(&h->domain_lock);
	cvm_secret_free(h->domain_key);
	cvm_secret_free(h->seal_key);
	cvm_secret_free(h->backup_key);
	cvm_secret_free(h->full_key);
	free(h->name);
	free(h);
}

bool cvm_hsm_purge_protection(struct cvm_hsm *h)
{
	return h->purge_protection;
}

int cvm_hsm_retention_days(struct cvm_hsm *h)
{
	return h->retention_days;
}

const char *cvm_hsm_recovery_level(struct cvm_hsm *h)
{
	bool custom = h->retention_days < 90;
	if (h->purge_protection)
		return custom ? "CustomizedRecoverable" : "Recoverable";
	return custom ? "CustomizedRecoverable+Purgeable" : "Recoverable+Purgeable";
}

/* ---- key version records ---------------------------------------------------------------------- */

void cvm_hsm_keyver_free(struct cvm_hsm_keyver *kv)
{
	if (!kv)
		return;
	json_decref(kv->key_ops);
	json_decref(kv->tags);
	json_decref(kv->release_policy);
	json_decref(kv->public_jwk);
	cvm_key_free(kv->key);
	free(kv);
}

int cvm_hsm_kty_type(const char *kty, enum cvm_kty *type)
{
	if (!strcmp(kty, "RSA") || !strcmp(kty, "RSA-HSM"))
		*type = CVM_KTY_RSA;
	else if (!strcmp(kty, "EC") || !strcmp(kty, "EC-HSM"))
		*type = CVM_KTY_EC;
	else if (!strcmp(kty, "oct") || !strcmp(kty, "oct-HSM"))
		*type = CVM_KTY_OCT;
	else
		return -EINVAL;
	return 0;
}

static json_t *load_json_text(const char *s, json_type want)
{
	if (!s)
		return NULL;
	json_t *v = json_loads(s, JSON_REJECT_DUPLICATES, NULL);
	if (v && json_typeof(v) != want) {
		json_decref(v);
		return NULL;
	}
	return v;
}

int cvm_hsm_keyver_from_row(const struct cvm_rows *rows, size_t i, struct cvm_hsm_keyver **out,
			    struct cvm_err *err)
{
	_cleanup_keyver_ struct cvm_hsm_keyver *kv = calloc(1, sizeof(*kv));
	if (!kv)
		return cvm_err_nomem(err);
	const char *name = cvm_rows_text(rows, i, KV_COL_NAME);
	const char *version = cvm_rows_text(rows, i, KV_COL_VERSION);
	const char *kty = cvm_rows_text(rows, i, KV_COL_KTY);
	const char *crv = cvm_rows_text(rows, i, KV_COL_CRV);
	const char *display = cvm_rows_text(rows, i, KV_COL_DISPLAY);
	if (!name || !version || !kty || strlen(name) > CVM_HSM_NAME_MAX || strlen(version) != 32 ||
	    !display || strlen(display) > CVM_HSM_NAME_MAX ||
	    strlen(kty) >= sizeof(kv->kty) || (crv && strlen(crv) >= sizeof(kv->crv)) ||
	    cvm_hsm_kty_type(kty, &kv->type) < 0)
		return cvm_err_internal(err, "hsm_key_versions: malformed row");
	strcpy(kv->name, name);
	strcpy(kv->display, display);
	strcpy(kv->version, version);
	strcpy(kv->kty, kty);
	if (crv)
		strcpy(kv->crv, crv);
	kv->key_size = (int)cvm_rows_int(rows, i, KV_COL_KEY_SIZE);
	kv->key_ops = load_json_text(cvm_rows_text(rows, i, KV_COL_KEY_OPS), JSON_ARRAY);
	kv->public_jwk = load_json_text(cvm_rows_text(rows, i, KV_COL_PUBLIC_JWK), JSON_OBJECT);
	if (!kv->key_ops || !kv->public_jwk)
		return cvm_err_internal(err, "hsm_key_versions: malformed JSON in row %s/%s", name,
					version);
	kv->enabled = cvm_rows_int(rows, i, KV_COL_ENABLED) != 0;
	kv->has_nbf = !cvm_rows_null(rows, i, KV_COL_NBF);
	kv->nbf = cvm_rows_int(rows, i, KV_COL_NBF);
	kv->has_exp = !cvm_rows_null(rows, i, KV_COL_EXP);
	kv->exp = cvm_rows_int(rows, i, KV_COL_EXP);
	kv->exportable = cvm_rows_int(rows, i, KV_COL_EXPORTABLE) != 0;
	kv->tags = load_json_text(cvm_rows_text(rows, i, KV_COL_TAGS), JSON_OBJECT);
	kv->release_policy = load_json_text(cvm_rows_text(rows, i, KV_COL_RELEASE_POLICY),
					    JSON_OBJECT);
	kv->created = cvm_rows_int(rows, i, KV_COL_CREATED);
	kv->updated = cvm_rows_int(rows, i, KV_COL_UPDATED);
	kv->deleted = cvm_rows_int(rows, i, KV_COL_DELETED) != 0;
	kv->deleted_date = cvm_rows_int(rows, i, KV_COL_DELETED_DATE);
	kv->scheduled_purge = cvm_rows_int(rows, i, KV_COL_SCHEDULED_PURGE);
	const char *cur = cvm_rows_text(rows, i, KV_COL_CURRENT);
	kv->is_current = cur && strcmp(cur, version) == 0;
	*out = CVM_TAKE(kv);
	return 0;
}

/* Reads one version row (with the sealed blob) in its own read transaction. */
static int keyver_query(struct cvm_hsm *h, const char *name, const char *version,
			struct cvm_rows **rows, struct cvm_err *err)
{
	_cleanup_tx_ struct cvm_tx *tx = NULL;
	int r = cvm_tx_begin(h->store, CVM_TX_READ, &tx, err);
	if (r < 0)
		return r;
	if (version && version[0]) {
		struct cvm_val p[] = { CVM_VAL_S(name), CVM_VAL_S(version) };
		r = cvm_tx_query(tx, "SELECT " KV_COLS " FROM hsm_keys k JOIN hsm_key_versions v "
				     "ON v.name = k.name WHERE k.name = ? AND v.version = ?",
				 p, 2, rows, err);
	} else {
		struct cvm_val p[] = { CVM_VAL_S(name) };
		r = cvm_tx_query(tx, "SELECT " KV_COLS " FROM hsm_keys k JOIN hsm_key_versions v "
				     "ON v.name = k.name AND v.version = k.current_version "
				     "WHERE k.name = ?",
				 p, 1, rows, err);
	}
	if (r < 0)
		return r;
	return cvm_tx_commit(CVM_TAKE(tx), err);
}

static int keyver_fetch(struct cvm_hsm *h, const char *name, const char *version,
			bool include_deleted, struct cvm_hsm_keyver **out, struct cvm_rows **rows_out,
			struct cvm_err *err)
{
	char id[CVM_HSM_NAME_MAX + 1];
	int r = cvm_hsm_name_id(name, id, err);
	if (r < 0)
		return r;
	if (version && version[0] && (r = check_version(version, err)) < 0)
		return r;
	_cleanup_rows_ struct cvm_rows *rows = NULL;
	r = keyver_query(h, id, version, &rows, err);
	if (r < 0)
		return r;
	char what[CVM_HSM_NAME_MAX + 40];
	snprintf(what, sizeof(what), "%s%s%s", name, version && version[0] ? "/" : "",
		 version ? version : "");
	if (cvm_rows_count(rows) != 1)
		return cvm_hsm_err_key_not_found(err, what);
	_cleanup_keyver_ struct cvm_hsm_keyver *kv = NULL;
	r = cvm_hsm_keyver_from_row(rows, 0, &kv, err);
	if (r < 0)
		return r;
	if (kv->deleted && !include_deleted)
		return cvm_hsm_err_key_not_found(err, what);
	*out = CVM_TAKE(kv);
	if (rows_out)
		*rows_out = CVM_TAKE(rows);
	return 0;
}

int cvm_hsm_keyver_get(struct cvm_hsm *h, const char *name, const char *version,
		       bool include_deleted, struct cvm_hsm_keyver **out, struct cvm_err *err)
{
	return keyver_fetch(h, name, version, include_deleted, out, NULL, err);
}

int cvm_hsm_keyver_load(struct cvm_hsm *h, const char *name, const char *version,
			struct cvm_hsm_keyver **out, struct cvm_err *err)
{
	_cleanup_keyver_ struct cvm_hsm_keyver *kv = NULL;
	_cleanup_rows_ struct cvm_rows *rows = NULL;
	int r = keyver_fetch(h, name, version, false, &kv, &rows, err);
	if (r < 0)
		return r;
	kv->key = cvm_hsm_cache_get(h, kv->name, kv->version);
	if (!kv->key) {
		size_t blen;
		const uint8_t *blob = cvm_rows_blob(rows, 0, KV_COL_SEALED, &blen);
		pthread_rwlock_rdlock(&h->domain_lock);
		r = cvm_hsm_require_active(h, err);
		if (r == 0)
			r = cvm_hsm_unseal_private(h, kv->name, kv->version, kv->type, blob, blen,
						   &kv->key, err);
		pthread_rwlock_unlock(&h->domain_lock);
		if (r < 0)
			return r;
		cvm_hsm_cache_put(h, kv->name, kv->version, kv->key);
	} else {
		/* Cached keys were unsealed under the active domain; refuse once it is gone. */
		pthread_rwlock_rdlock(&h->domain_lock);
		r = cvm_hsm_require_active(h, err);
		pthread_rwlock_unlock(&h->domain_lock);
		if (r < 0)
			return r;
	}
	*out = CVM_TAKE(kv);
	return 0;
}

int cvm_hsm_keyver_usable(const struct cvm_hsm_keyver *kv, const char *op, int64_t now,
			  struct cvm_err *err)
{
	if (!kv->enabled)
		return cvm_err_set(err, EPERM, "Forbidden",
				   "Operation %s is not allowed on a disabled key.", op);
	if (kv->has_nbf && now < kv->nbf) {
		char t[32];
		cvm_time_iso8601(kv->nbf, t);
		return cvm_err_set(err, EPERM, "Forbidden",
				   "Operation %s is not allowed on a key that is not yet valid "
				   "(nbf %s).",
				   op, t);
	}
	if (kv->has_exp && now >= kv->exp) {
		char t[32];
		cvm_time_iso8601(kv->exp, t);
		return cvm_err_set(err, EPERM, "Forbidden",
				   "Operation %s is not allowed on an expired key (exp %s).", op, t);
	}
	return 0;
}

int cvm_hsm_keyver_permits(const struct cvm_hsm_keyver *kv, const char *op, struct cvm_err *err)
{
	size_t i;
	json_t *e;
	json_array_foreach(kv->key_ops, i, e) {
		if (json_is_string(e) && strcmp(json_string_value(e), op) == 0)
			return 0;
	}
	return cvm_err_badparam(err, "Operation %s is not permitted on this key.", op);
}

/* ---- KeyBundle ---------------------------------------------------------------------------------- */

const char *cvm_hsm_base_url(const struct cvm_hsm_caller *c)
{
	return c && c->base_url && c->base_url[0] ? c->base_url : "https://localhost";
}

char *cvm_hsm_kid(const struct cvm_hsm_caller *c, const char *name, const char *version)
{
	if (version)
		return cvm_asprintf("%s/keys/%s/%s", cvm_hsm_base_url(c), name, version);
	return cvm_asprintf("%s/keys/%s", cvm_hsm_base_url(c), name);
}

json_t *cvm_hsm_attributes_json(struct cvm_hsm *h, const struct cvm_hsm_keyver *kv)
{
	json_t *a = json_object();
	if (!a)
		return NULL;
	int r = json_object_set_new(a, "enabled", json_boolean(kv->enabled));
	if (kv->has_nbf)
		r |= json_object_set_new(a, "nbf", json_integer(kv->nbf));
	if (kv->has_exp)
		r |= json_object_set_new(a, "exp", json_integer(kv->exp));
	r |= json_object_set_new(a, "created", json_integer(kv->created));
	r |= json_object_set_new(a, "updated", json_integer(kv->updated));
	r |= json_object_set_new(a, "recoveryLevel", json_string(cvm_hsm_recovery_level(h)));
	r |= json_object_set_new(a, "recoverableDays", json_integer(h->retention_days));
	r |= json_object_set_new(a, "exportable", json_boolean(kv->exportable));
	if (r) {
		json_decref(a);
		return NULL;
	}
	return a;
}

int cvm_hsm_key_bundle(struct cvm_hsm *h, const struct cvm_hsm_caller *c,
		       const struct cvm_hsm_keyver *kv, json_t **out, struct cvm_err *err)
{
	_cleanup_free_ char *kid = cvm_hsm_kid(c, kv->display, kv->version);
	_cleanup_json_ json_t *key = json_object();
	_cleanup_json_ json_t *b = json_object();
	if (!kid || !key || !b)
		return cvm_err_nomem(err);
	int r = json_object_set_new(key, "kid", json_string(kid));
	r |= json_object_set_new(key, "kty", json_string(kv->kty));
	r |= json_object_set_new(key, "key_ops", json_deep_copy(kv->key_ops));
	const char *f;
	json_t *v;
	json_object_foreach(kv->public_jwk, f, v) {
		if (strcmp(f, "kty") && strcmp(f, "kid") && strcmp(f, "key_ops"))
			r |= json_object_set(key, f, v);
	}
	r |= json_object_set(b, "key", key);
	r |= json_object_set_new(b, "attributes", cvm_hsm_attributes_json(h, kv));
	if (kv->tags)
		r |= json_object_set(b, "tags", kv->tags);
	if (kv->release_policy)
		r |= json_object_set(b, "release_policy", kv->release_policy);
	if (r)
		return cvm_err_nomem(err);
	*out = CVM_TAKE(b);
	return 0;
}

void cvm_hsm_log(const char *event, const struct cvm_hsm_caller *c, const char *name,
		 const char *version)
{
	cvm_log_info(event, "name=%s version=%s principal=%s request_id=%s",
		     name ? name : "-", version ? version : "-",
		     c && c->principal ? c->principal : "-",
		     c && c->request_id ? c->request_id : "-");
}
