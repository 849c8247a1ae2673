/* SPDX-License-Identifier: Apache-2.0 */
/* Key backup blobs (POST /keys/{name}/backup, POST /keys/restore) and full HSM backups to a
 * directory. Both carry private material only as stored: sealed under the domain's seal key
 * with AAD "name|version"; a key blob is additionally sealed as a whole under the backup subkey,
 * a full backup is protected by an HMAC under the full-backup subkey. So a blob or a backup
 * restores only into an HSM holding the same security domain, and only under the same name.
 *
 * Blob: "OCVMKB" 0x01 || cvm_seal(backup_key, aad "opencvm key backup v1", payload JSON)
 * Payload: {"format":"opencvm-key-backup","v":1,"key":<record>}
 * Record:  {"name" (canonical lowercase),"display_name","current_version","created","updated",
 *           "rotation_policy"?,
 *           "deleted"?,"deleted_date"?,"scheduled_purge"?, "versions":[<version>...]}
 * Version: {"version","kty","key_size","crv"?,"key_ops","public_jwk","enabled","nbf"?,"exp"?,
 *           "exportable","tags"?,"release_policy"?,"created","updated","sealed"(b64url)} */
#include "hsm-internal.h"

#include <stdio.h>
#include <string.h>
#include <sys/stat.h>

#include <openssl/crypto.h>

#define BLOB_MAGIC "OCVMKB\x01"
#define BLOB_MAGIC_LEN 7
#define BLOB_AAD "opencvm key backup v1"
#define FULL_LABEL "opencvm full backup v1"
#define MAX_VERSIONS 10000
#define SEALED_MAX 65536
#define TIME_MAX 253402300799LL
#define MANIFEST_MAX (1024 * 1024)
#define DATA_MAX (512u * 1024u * 1024u)
#define CORRUPT_MSG "value: backup blob is corrupt or from another security domain"

void cvm_hsm_backup_free(struct cvm_hsm_backup *b)
{
	if (!b)
		return;
	for (size_t i = 0; i < b->nversions; i++) {
		struct cvm_hsm_keyver *m = &b->versions[i].meta;
		json_decref(m->key_ops);
		json_decref(m->tags);
		json_decref(m->release_policy);
		json_decref(m->public_jwk);
		free(b->versions[i].sealed);
	}
	free(b->versions);
	json_decref(b->rotation_policy);
	free(b);
}

/* ---- serialize ----------------------------------------------------------------------------------- */

static json_t *version_json(const struct cvm_hsm_keyver *kv, const uint8_t *sealed, size_t len)
{
	json_t *v = json_pack("{s:s,s:s,s:i,s:O,s:O,s:b,s:b,s:I,s:I}", "version", kv->version,
			      "kty", kv->kty, "key_size", kv->key_size, "key_ops", kv->key_ops,
			      "public_jwk", kv->public_jwk, "enabled", kv->enabled, "exportable",
			      kv->exportable, "created", (json_int_t)kv->created, "updated",
			      (json_int_t)kv->updated);
	if (!v)
		return NULL;
	int r = 0;
	if (kv->crv[0])
		r |= json_object_set_new(v, "crv", json_string(kv->crv));
	if (kv->has_nbf)
		r |= json_object_set_new(v, "nbf", json_integer(kv->nbf));
	if (kv->has_exp)
		r |= json_object_set_new(v, "exp", json_integer(kv->exp));
	if (kv->tags)
		r |= json_object_set(v, "tags", kv->tags);
	if (kv->release_policy)
		r |= json_object_set(v, "release_policy", kv->release_policy);
	r |= cvm_json_set_b64url(v, "sealed", sealed, len);
	if (r) {
		json_decref(v);
		return NULL;
	}
	return v;
}

/* Key records from rows of "SELECT KV_COLS, k.rotation_policy, k.created, k.updated" ordered by
 * name then version; appends one record per key to arr. */
static int records_from_rows(const struct cvm_rows *rows, bool with_state, json_t *arr,
			     struct cvm_err *err)
{
	json_t *rec = NULL, *vers = NULL;
	for (size_t i = 0; i < cvm_rows_count(rows); i++) {
		_cleanup_keyver_ struct cvm_hsm_keyver *kv = NULL;
		int r = cvm_hsm_keyver_from_row(rows, i, &kv, err);
		if (r < 0)
			return r;
		const char *rec_name = rec ? json_string_value(json_object_get(rec, "name")) : NULL;
		if (!rec_name || strcmp(rec_name, kv->name)) {
			const char *cur = cvm_rows_text(rows, i, KV_COL_CURRENT);
			const char *pol = cvm_rows_text(rows, i, KV_COL_SEALED + 1);
			rec = json_pack("{s:s,s:s,s:s,s:I,s:I,s:[]}", "name", kv->name,
					"display_name", kv->display, "current_version",
					cur ? cur : "", "created",
					(json_int_t)cvm_rows_int(rows, i, KV_COL_SEALED + 2),
					"updated",
					(json_int_t)cvm_rows_int(rows, i, KV_COL_SEALED + 3),
					"versions");
			if (!rec || json_array_append_new(arr, rec))
				return cvm_err_nomem(err);
			vers = json_object_get(rec, "versions");
			if (pol && json_object_set_new(rec, "rotation_policy", json_loads(pol, 0, NULL)))
				return cvm_err_internal(err, "hsm_keys: malformed rotation_policy");
			if (with_state && kv->deleted &&
			    (json_object_set_new(rec, "deleted", json_true()) ||
			     json_object_set_new(rec, "deleted_date", json_integer(kv->deleted_date)) ||
			     json_object_set_new(rec, "scheduled_purge",
						 json_integer(kv->scheduled_purge))))
				return cvm_err_nomem(err);
		}
		size_t slen;
		const uint8_t *sealed = cvm_rows_blob(rows, i, KV_COL_SEALED, &slen);
		json_t *v = version_json(kv, sealed, slen);
		if (!v || json_array_append_new(vers, v))
			return cvm_err_nomem(err);
	}
	return 0;
}

#define RECORD_COLS KV_COLS ", k.rotation_policy, k.created, k.updated"

/* ---- parse --------------------------------------------------------------------------------------- */

static int bad(struct cvm_err *err, const char *path, const char *what)
{
	return cvm_err_badparam(err, "%s: %s", path, what);
}

static bool is_hex32(const char *s)
{
	if (!s || strlen(s) != 32)
		return false;
	for (; *s; s++)
		if (!((*s >= '0' && *s <= '9') || (*s >= 'a' && *s <= 'f')))
			return false;
	return true;
}

static int get_time(json_t *o, const char *f, const char *path, bool req, int64_t *out,
		    bool *present, struct cvm_err *err)
{
	return cvm_json_int(o, f, path, req, 0, TIME_MAX, out, present, err);
}

static int parse_version(json_t *v, const char *path, struct cvm_hsm_backup_version *bv,
			 struct cvm_err *err)
{
	static const char *const ktys[] = { "RSA", "RSA-HSM", "EC", "EC-HSM", "oct", "oct-HSM",
					    NULL };
	static const char *const crvs[] = { "P-256", "P-384", "P-521", NULL };
	static const char *const kops[] = { "encrypt", "decrypt", "sign", "verify", "wrapKey",
					    "unwrapKey", "import", "export", NULL };
	struct cvm_hsm_keyver *m = &bv->meta;
	const char *ver, *kty, *crv = NULL;
	int64_t size;
	json_t *ops, *jwk, *tags = NULL, *rp = NULL;
	int r;
	if (!json_is_object(v))
		return bad(err, path, "expected an object");
	if ((r = cvm_json_str(v, "version", "version", true, &ver, NULL, err)) < 0 ||
	    (r = cvm_json_enum(v, "kty", "kty", true, ktys, &kty, err)) < 0 ||
	    (r = cvm_json_int(v, "key_size", "key_size", true, 128, 4096, &size, NULL, err)) < 0 ||
	    (r = cvm_json_enum(v, "crv", "crv", false, crvs, &crv, err)) < 0 ||
	    (r = cvm_json_str_array(v, "key_ops", "key_ops", true, kops, &ops, err)) < 0 ||
	    (r = cvm_json_obj(v, "public_jwk", "public_jwk", true, &jwk, err)) < 0 ||
	    (r = cvm_json_bool(v, "enabled", "enabled", true, &m->enabled, NULL, err)) < 0 ||
	    (r = cvm_json_bool(v, "exportable", "exportable", true, &m->exportable, NULL, err)) < 0 ||
	    (r = get_time(v, "nbf", "nbf", false, &m->nbf, &m->has_nbf, err)) < 0 ||
	    (r = get_time(v, "exp", "exp", false, &m->exp, &m->has_exp, err)) < 0 ||
	    (r = get_time(v, "created", "created", true, &m->created, NULL, err)) < 0 ||
	    (r = get_time(v, "updated", "updated", true, &m->updated, NULL, err)) < 0 ||
	    (r = cvm_json_obj(v, "tags", "tags", false, &tags, err)) < 0 ||
	    (r = cvm_json_obj(v, "release_policy", "release_policy", false, &rp, err)) < 0 ||
	    (r = cvm_json_b64url(v, "sealed", "sealed", true, &bv->sealed, &bv->sealed_len, err)) < 0)
		return cvm_err_prefix(err, "%s", path);
	if (!is_hex32(ver))
		return bad(err, path, "version: expected 32 lowercase hex characters");
	if (bv->sealed_len < CVM_SEAL_OVERHEAD || bv->sealed_len > SEALED_MAX)
		return bad(err, path, "sealed: wrong length");
	if (cvm_hsm_kty_type(kty, &m->type) < 0)
		return bad(err, path, "kty: unsupported");
	if ((m->type == CVM_KTY_EC) != (crv != NULL))
		return bad(err, path, "crv: required for EC keys and only for them");
	if (rp && !json_is_string(json_object_get(rp, "data")))
		return bad(err, path, "release_policy.data: expected a string");
	const char *tk;
	json_t *tv;
	json_object_foreach(tags, tk, tv) {
		if (!json_is_string(tv))
			return bad(err, path, "tags: values must be strings");
	}
	snprintf(m->version, sizeof(m->version), "%s", ver);
	snprintf(m->kty, sizeof(m->kty), "%s", kty);
	snprintf(m->crv, sizeof(m->crv), "%s", crv ? crv : "");
	m->key_size = (int)size;
	m->key_ops = json_deep_copy(ops);
	m->public_jwk = json_deep_copy(jwk);
	m->tags = tags ? json_deep_copy(tags) : NULL;
	m->release_policy = rp ? json_deep_copy(rp) : NULL;
	if (!m->key_ops || !m->public_jwk || (tags && !m->tags) || (rp && !m->release_policy))
		return cvm_err_nomem(err);
	return 0;
}

static int parse_record(json_t *rec, const char *path, bool with_state,
			struct cvm_hsm_backup **out, struct cvm_err *err)
{
	_cleanup_(cvm_hsm_backup_freep) struct cvm_hsm_backup *b = calloc(1, sizeof(*b));
	if (!b)
		return cvm_err_nomem(err);
	if (!json_is_object(rec))
		return bad(err, path, "expected an object");
	const char *name, *cur, *display = NULL;
	json_t *pol = NULL, *vers;
	int r;
	if ((r = cvm_json_str(rec, "name", "name", true, &name, NULL, err)) < 0 ||
	    (r = cvm_json_str(rec, "display_name", "display_name", false, &display, NULL, err)) < 0 ||
	    (r = cvm_json_str(rec, "current_version", "current_version", true, &cur, NULL, err)) < 0 ||
	    (r = get_time(rec, "created", "created", true, &b->created, NULL, err)) < 0 ||
	    (r = get_time(rec, "updated", "updated", true, &b->updated, NULL, err)) < 0 ||
	    (r = cvm_json_obj(rec, "rotation_policy", "rotation_policy", false, &pol, err)) < 0 ||
	    (r = cvm_json_arr(rec, "versions", "versions", true, &vers, err)) < 0)
		return cvm_err_prefix(err, "%s", path);
	if (with_state &&
	    ((r = cvm_json_bool(rec, "deleted", "deleted", false, &b->deleted, NULL, err)) < 0 ||
	     (r = get_time(rec, "deleted_date", "deleted_date", b->deleted, &b->deleted_date, NULL,
			   err)) < 0 ||
	     (r = get_time(rec, "scheduled_purge", "scheduled_purge", b->deleted,
			   &b->scheduled_purge, NULL, err)) < 0))
		return cvm_err_prefix(err, "%s", path);
	char id[CVM_HSM_NAME_MAX + 1], did[CVM_HSM_NAME_MAX + 1];
	if ((r = cvm_hsm_name_id(name, id, err)) < 0)
		return cvm_err_prefix(err, "%s", path);
	if (strcmp(id, name))
		return bad(err, path, "name: expected the canonical lowercase id");
	if (!display)
		display = name;
	if ((r = cvm_hsm_name_id(display, did, err)) < 0)
		return cvm_err_prefix(err, "%s", path);
	if (strcmp(did, id))
		return bad(err, path, "display_name: does not match name");
	if (!is_hex32(cur))
		return bad(err, path, "current_version: expected 32 lowercase hex characters");
	size_t n = json_array_size(vers);
	if (n < 1 || n > MAX_VERSIONS)
		return bad(err, path, "versions: expected 1..10000 versions");
	snprintf(b->name, sizeof(b->name), "%s", name);
	snprintf(b->display, sizeof(b->display), "%s", display);
	snprintf(b->current_version, sizeof(b->current_version), "%s", cur);
	if (pol && !(b->rotation_policy = json_deep_copy(pol)))
		return cvm_err_nomem(err);
	b->versions = calloc(n, sizeof(*b->versions));
	if (!b->versions)
		return cvm_err_nomem(err);
	bool have_current = false;
	for (size_t i = 0; i < n; i++) {
		char vpath[160];
		snprintf(vpath, sizeof(vpath), "%s.versions[%zu]", path, i);
		b->nversions = i + 1; /* so free() sees a partly filled entry */
		if ((r = parse_version(json_array_get(vers, i), vpath, &b->versions[i], err)) < 0)
			return r;
		struct cvm_hsm_keyver *m = &b->versions[i].meta;
		snprintf(m->name, sizeof(m->name), "%s", name);
		snprintf(m->display, sizeof(m->display), "%s", display);
		for (size_t j = 0; j < i; j++)
			if (!strcmp(b->versions[j].meta.version, m->version))
				return bad(err, vpath, "version: duplicate");
		have_current |= !strcmp(m->version, cur);
	}
	if (!have_current)
		return bad(err, path, "current_version: not among the versions");
	*out = CVM_TAKE(b);
	return 0;
}

int cvm_hsm_backup_parse_payload(const uint8_t *buf, size_t len, struct cvm_hsm_backup **out,
				 struct cvm_err *err)
{
	_cleanup_json_ json_t *root = NULL;
	const char *fmt;
	int64_t v;
	json_t *rec;
	int r = cvm_json_parse(buf, len, false, &root, err);
	if (r < 0 ||
	    (r = cvm_json_enum(root, "format", "format", true,
			       (const char *const[]){ "opencvm-key-backup", NULL }, &fmt, err)) < 0 ||
	    (r = cvm_json_int(root, "v", "v", true, 1, 1, &v, NULL, err)) < 0 ||
	    (r = cvm_json_obj(root, "key", "key", true, &rec, err)) < 0)
		return r;
	return parse_record(rec, "key", false, out, err);
}

int cvm_hsm_backup_open(const struct cvm_secret *backup_key, const uint8_t *buf, size_t len,
			struct cvm_hsm_backup **out, struct cvm_err *err)
{
	if (len < BLOB_MAGIC_LEN + CVM_SEAL_OVERHEAD || len > CVM_HSM_BACKUP_MAX ||
	    memcmp(buf, BLOB_MAGIC, BLOB_MAGIC_LEN) != 0)
		return cvm_err_set(err, EBADMSG, "BadParameter", CORRUPT_MSG);
	_cleanup_secret_ struct cvm_secret *pt = NULL;
	struct cvm_err e2 = {0};
	if (cvm_unseal(backup_key, BLOB_AAD, strlen(BLOB_AAD), buf + BLOB_MAGIC_LEN,
		       len - BLOB_MAGIC_LEN, &pt, &e2) < 0)
		return cvm_err_set(err, EBADMSG, "BadParameter", CORRUPT_MSG);
	struct cvm_err perr = { 0 };
	if (cvm_hsm_backup_parse_payload(pt->data, pt->len, out, &perr) < 0)
		return cvm_err_set(err, EBADMSG, "BadParameter", CORRUPT_MSG " (%s)", perr.msg);
	return 0;
}

/* ---- key backup / restore ------------------------------------------------------------------------ */

int cvm_hsm_key_backup(struct cvm_hsm *h, const struct cvm_hsm_caller *c, const char *name,
		       json_t **out, struct cvm_err *err)
{
	int active = cvm_hsm_check_active(h, err);
	if (active < 0)
		return active;
	char id[CVM_HSM_NAME_MAX + 1];
	int r = cvm_hsm_name_id(name, id, err);
	if (r < 0)
		return r;
	_cleanup_tx_ struct cvm_tx *tx = NULL;
	_cleanup_rows_ struct cvm_rows *rows = NULL;
	struct cvm_val p[] = { CVM_VAL_S(id) };
	if ((r = cvm_tx_begin(h->store, CVM_TX_READ, &tx, err)) < 0 ||
	    (r = cvm_tx_query(tx, "SELECT " RECORD_COLS " FROM hsm_keys k JOIN hsm_key_versions v "
				  "ON v.name = k.name WHERE k.name = ? AND k.deleted = 0 "
				  "ORDER BY v.version",
			      p, 1, &rows, err)) < 0 ||
	    (r = cvm_tx_commit(CVM_TAKE(tx), err)) < 0)
		return r;
	if (cvm_rows_count(rows) == 0)
		return cvm_hsm_err_key_not_found(err, name);
	_cleanup_json_ json_t *arr = json_array();
	if (!arr)
		return cvm_err_nomem(err);
	if ((r = records_from_rows(rows, false, arr, err)) < 0)
		return r;
	_cleanup_json_ json_t *payload = json_pack("{s:s,s:i,s:O}", "format", "opencvm-key-backup",
						   "v", 1, "key", json_array_get(arr, 0));
	_cleanup_free_ char *text = payload ? cvm_json_dump(payload) : NULL;
	if (!text)
		return cvm_err_nomem(err);
	_cleanup_buf_ struct cvm_buf blob = {0};
	if (cvm_buf_append(&blob, BLOB_MAGIC, BLOB_MAGIC_LEN) < 0)
		return cvm_err_nomem(err);
	pthread_rwlock_rdlock(&h->domain_lock);
	r = cvm_hsm_require_active(h, err);
	if (r == 0)
		r = cvm_seal(h->backup_key, BLOB_AAD, strlen(BLOB_AAD), (const uint8_t *)text,
			     strlen(text), &blob, err);
	pthread_rwlock_unlock(&h->domain_lock);
	if (r < 0)
		return r;
	if (blob.len > CVM_HSM_BACKUP_MAX)
		return cvm_err_set(err, E2BIG, "BadParameter",
				   "key %s: too many versions for one backup blob", name);
	_cleanup_json_ json_t *res = json_object();
	if (!res || cvm_json_set_b64url(res, "value", blob.data, blob.len))
		return cvm_err_nomem(err);
	cvm_hsm_log("key_backup", c, name, NULL);
	*out = CVM_TAKE(res);
	return 0;
}

static int insert_record(struct cvm_tx *tx, const struct cvm_hsm_backup *b, int64_t updated,
			 struct cvm_err *err)
{
	_cleanup_free_ char *pol = b->rotation_policy ? cvm_json_dump(b->rotation_policy) : NULL;
	if (b->rotation_policy && !pol)
		return cvm_err_nomem(err);
	struct cvm_val k[] = {
		CVM_VAL_S(b->name),
		CVM_VAL_S(b->display),
		CVM_VAL_S(b->current_version),
		CVM_VAL_I(b->deleted),
		b->deleted ? CVM_VAL_I(b->deleted_date) : CVM_VAL_NIL,
		b->deleted ? CVM_VAL_I(b->scheduled_purge) : CVM_VAL_NIL,
		CVM_VAL_S(pol),
		CVM_VAL_I(b->created),
		CVM_VAL_I(updated),
	};
	int r = cvm_tx_exec(tx, "INSERT INTO hsm_keys (name, display_name, current_version, "
				"deleted, deleted_date, scheduled_purge, rotation_policy, created, "
				"updated) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
			    k, CVM_ARRAY_SIZE(k), NULL, err);
	if (r < 0)
		return r;
	for (size_t i = 0; i < b->nversions; i++) {
		const struct cvm_hsm_keyver *m = &b->versions[i].meta;
		_cleanup_free_ char *ops = cvm_json_dump(m->key_ops);
		_cleanup_free_ char *jwk = cvm_json_dump(m->public_jwk);
		_cleanup_free_ char *tags = m->tags ? cvm_json_dump(m->tags) : NULL;
		_cleanup_free_ char *rp = m->release_policy ? cvm_json_dump(m->release_policy) : NULL;
		if (!ops || !jwk || (m->tags && !tags) || (m->release_policy && !rp))
			return cvm_err_nomem(err);
		struct cvm_val v[] = {
			CVM_VAL_S(b->name),
			CVM_VAL_S(m->version),
			CVM_VAL_S(m->kty),
			CVM_VAL_I(m->key_size),
			m->crv[0] ? CVM_VAL_S(m->crv) : CVM_VAL_NIL,
			CVM_VAL_S(ops),
			CVM_VAL_S(jwk),
			CVM_VAL_I(m->enabled),
			m->has_nbf ? CVM_VAL_I(m->nbf) : CVM_VAL_NIL,
			m->has_exp ? CVM_VAL_I(m->exp) : CVM_VAL_NIL,
			CVM_VAL_I(m->exportable),
			CVM_VAL_S(tags),
			CVM_VAL_S(rp),
			CVM_VAL_B(b->versions[i].sealed, b->versions[i].sealed_len),
			CVM_VAL_I(m->created),
			CVM_VAL_I(m->updated),
		};
		r = cvm_tx_exec(tx,
				"INSERT INTO hsm_key_versions (name, version, kty, key_size, crv, "
				"key_ops, public_jwk, enabled, nbf, exp, exportable, tags, "
				"release_policy, sealed, created, updated) "
				"VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
				v, CVM_ARRAY_SIZE(v), NULL, err);
		if (r < 0)
			return r;
	}
	return 0;
}

struct restore_ctx {
	const struct cvm_hsm_backup *b;
	int64_t now;
};

static int restore_tx(struct cvm_tx *tx, void *vctx, struct cvm_err *err)
{
	struct restore_ctx *rc = vctx;
	struct cvm_val p[] = { CVM_VAL_S(rc->b->name) };
	_cleanup_rows_ struct cvm_rows *rows = NULL;
	int r = cvm_tx_query(tx, "SELECT deleted FROM hsm_keys WHERE name = ?", p, 1, &rows, err);
	if (r < 0)
		return r;
	if (cvm_rows_count(rows) == 1) {
		if (cvm_rows_int(rows, 0, 0))
			return cvm_hsm_err_deleted_conflict(err, rc->b->name);
		return cvm_err_set(err, EEXIST, "Conflict",
				   "Key %s already exists; delete and purge it before restoring a "
				   "backup under this name.",
				   rc->b->name);
	}
	return insert_record(tx, rc->b, rc->now, err);
}

/* Every version must open under this domain's seal key and match its stored public key. */
static int verify_versions(struct cvm_hsm *h, struct cvm_hsm_backup *b, struct cvm_err *err)
{
	for (size_t i = 0; i < b->nversions; i++) {
		struct cvm_hsm_backup_version *bv = &b->versions[i];
		_cleanup_key_ struct cvm_key *k = NULL;
		_cleanup_json_ json_t *jwk = NULL;
		if (cvm_hsm_unseal_private(h, b->name, bv->meta.version, bv->meta.type, bv->sealed,
					   bv->sealed_len, &k, err) < 0 ||
		    cvm_key_to_jwk(k, false, &jwk, err) < 0)
			return cvm_err_set(err, EBADMSG, "BadParameter", CORRUPT_MSG);
		json_object_del(jwk, "kid");
		json_object_del(jwk, "key_ops");
		json_decref(bv->meta.public_jwk);
		bv->meta.public_jwk = CVM_TAKE(jwk);
	}
	return 0;
}

int cvm_hsm_key_restore(struct cvm_hsm *h, const struct cvm_hsm_caller *c, json_t *body,
			json_t **out, struct cvm_err *err)
{
	int active = cvm_hsm_check_active(h, err);
	if (active < 0)
		return active;
	const char *value;
	int r;
	if (!body || !json_is_object(body))
		return cvm_err_badparam(err, "value: required field is missing");
	if ((r = cvm_json_str(body, "value", "value", true, &value, NULL, err)) < 0)
		return r;
	if (strlen(value) > (CVM_HSM_BACKUP_MAX / 3 + 1) * 4)
		return cvm_err_set(err, E2BIG, "BadParameter", "value: backup blob too large");
	_cleanup_free_ uint8_t *raw = NULL;
	size_t len;
	if ((r = cvm_b64url_decode(value, strlen(value), &raw, &len, "value", err)) < 0)
		return r;
	_cleanup_(cvm_hsm_backup_freep) struct cvm_hsm_backup *b = NULL;
	pthread_rwlock_rdlock(&h->domain_lock);
	r = cvm_hsm_require_active(h, err);
	if (r == 0)
		r = cvm_hsm_backup_open(h->backup_key, raw, len, &b, err);
	if (r == 0)
		r = verify_versions(h, b, err);
	pthread_rwlock_unlock(&h->domain_lock);
	if (r < 0)
		return r;
	struct restore_ctx rc = { .b = b, .now = cvm_now() };
	if ((r = cvm_store_transact(h->store, CVM_TX_WRITE, restore_tx, &rc, err)) < 0)
		return r;
	cvm_hsm_cache_drop(h, b->name);
	cvm_hsm_log("key_restore", c, b->name, b->current_version);
	return cvm_hsm_key_get(h, c, b->name, NULL, out, err);
}

/* ---- full backup / restore ------------------------------------------------------------------------ */

static int full_mac(struct cvm_hsm *h, const char *hsm_id, int64_t created, const char *sha_hex,
		    uint8_t mac[32], struct cvm_err *err)
{
	_cleanup_free_ char *msg = cvm_asprintf(FULL_LABEL "|%s|%lld|%s", hsm_id,
						(long long)created, sha_hex);
	if (!msg)
		return cvm_err_nomem(err);
	return cvm_hmac_sha256(h->full_key->data, h->full_key->len, msg, strlen(msg), mac, err);
}

static int sha256_hex(const void *data, size_t len, char out[65], struct cvm_err *err)
{
	uint8_t md[64];
	size_t mdlen;
	int r = cvm_digest("SHA256", data, len, md, &mdlen, err);
	if (r < 0)
		return r;
	_cleanup_free_ char *hex = cvm_hex_encode(md, mdlen);
	if (!hex)
		return cvm_err_nomem(err);
	snprintf(out, 65, "%s", hex);
	return 0;
}

static int read_hsm_id(struct cvm_tx *tx, char out[37], struct cvm_err *err)
{
	_cleanup_rows_ struct cvm_rows *rows = NULL;
	int r = cvm_tx_query(tx, "SELECT hsm_id FROM hsm_meta WHERE id = 1", NULL, 0, &rows, err);
	if (r < 0)
		return r;
	const char *id = cvm_rows_text(rows, 0, 0);
	snprintf(out, 37, "%s", id ? id : "");
	return 0;
}

int cvm_hsm_full_backup(struct cvm_hsm *h, const char *dir, struct cvm_err *err)
{
	int active = cvm_hsm_check_active(h, err);
	if (active < 0)
		return active;
	if (!dir || !dir[0])
		return cvm_err_badparam(err, "dir: a backup directory is required");
	_cleanup_tx_ struct cvm_tx *tx = NULL;
	_cleanup_rows_ struct cvm_rows *rows = NULL;
	char hsm_id[37];
	int r;
	if ((r = cvm_tx_begin(h->store, CVM_TX_READ, &tx, err)) < 0 ||
	    (r = read_hsm_id(tx, hsm_id, err)) < 0 ||
	    (r = cvm_tx_query(tx, "SELECT " RECORD_COLS " FROM hsm_keys k JOIN hsm_key_versions v "
				  "ON v.name = k.name ORDER BY k.name, v.version",
			      NULL, 0, &rows, err)) < 0 ||
	    (r = cvm_tx_commit(CVM_TAKE(tx), err)) < 0)
		return r;
	_cleanup_json_ json_t *keys = json_array();
	if (!keys)
		return cvm_err_nomem(err);
	if ((r = records_from_rows(rows, true, keys, err)) < 0)
		return r;
	_cleanup_json_ json_t *data = json_pack("{s:s,s:i,s:O}", "format", "opencvm-full-backup",
						"v", 1, "keys", keys);
	_cleanup_free_ char *text = data ? cvm_json_dump(data) : NULL;
	if (!text)
		return cvm_err_nomem(err);
	char sha[65];
	uint8_t mac[32];
	int64_t created = cvm_now();
	if ((r = sha256_hex(text, strlen(text), sha, err)) < 0)
		return r;
	pthread_rwlock_rdlock(&h->domain_lock);
	r = cvm_hsm_require_active(h, err);
	if (r == 0)
		r = full_mac(h, hsm_id, created, sha, mac, err);
	pthread_rwlock_unlock(&h->domain_lock);
	if (r < 0)
		return r;
	_cleanup_json_ json_t *man = json_pack("{s:s,s:i,s:s,s:I,s:I,s:s,s:s}", "format",
					       "opencvm-full-backup-manifest", "version", 1,
					       "hsm_id", hsm_id, "created", (json_int_t)created,
					       "keys", (json_int_t)json_array_size(keys), "data",
					       "keys.json", "data_sha256", sha);
	if (!man || cvm_json_set_b64url(man, "mac", mac, 32))
		return cvm_err_nomem(err);
	_cleanup_free_ char *mtext = json_dumps(man, JSON_INDENT(2));
	_cleanup_free_ char *dpath = cvm_path_join(dir, "keys.json");
	_cleanup_free_ char *mpath = cvm_path_join(dir, "manifest.json");
	if (!mtext || !dpath || !mpath)
		return cvm_err_nomem(err);
	/* Data first, manifest last: a manifest on disk implies complete data. */
	if ((r = cvm_mkdir_p(dir, 0700, err)) < 0 ||
	    (r = cvm_file_write_atomic(dpath, text, strlen(text), 0600, err)) < 0 ||
	    (r = cvm_file_write_atomic(mpath, mtext, strlen(mtext), 0600, err)) < 0)
		return r;
	cvm_log_info("hsm_full_backup", "dir=%s keys=%zu", dir, json_array_size(keys));
	return 0;
}

struct full_restore_ctx {
	struct cvm_hsm_backup **recs;
	size_t n;
};

static int full_restore_tx(struct cvm_tx *tx, void *vctx, struct cvm_err *err)
{
	struct full_restore_ctx *f = vctx;
	int r = cvm_tx_exec(tx, "DELETE FROM hsm_key_versions", NULL, 0, NULL, err);
	if (r < 0 || (r = cvm_tx_exec(tx, "DELETE FROM hsm_keys", NULL, 0, NULL, err)) < 0)
		return r;
	for (size_t i = 0; i < f->n; i++)
		if ((r = insert_record(tx, f->recs[i], f->recs[i]->updated, err)) < 0)
			return r;
	return 0;
}

static int verify_manifest(struct cvm_hsm *h, json_t *man, const uint8_t *data, size_t dlen,
			   struct cvm_err *err)
{
	const char *fmt, *hsm_id, *sha;
	int64_t version, created;
	_cleanup_free_ uint8_t *mac = NULL;
	size_t maclen;
	int r;
	if ((r = cvm_json_enum(man, "format", "manifest.format", true,
			       (const char *const[]){ "opencvm-full-backup-manifest", NULL }, &fmt,
			       err)) < 0 ||
	    (r = cvm_json_int(man, "version", "manifest.version", true, 1, 1, &version, NULL,
			      err)) < 0 ||
	    (r = cvm_json_str(man, "hsm_id", "manifest.hsm_id", true, &hsm_id, NULL, err)) < 0 ||
	    (r = cvm_json_int(man, "created", "manifest.created", true, 0, TIME_MAX, &created, NULL,
			      err)) < 0 ||
	    (r = cvm_json_str(man, "data_sha256", "manifest.data_sha256", true, &sha, NULL, err)) <
		    0 ||
	    (r = cvm_json_b64url(man, "mac", "manifest.mac", true, &mac, &maclen, err)) < 0)
		return r;
	char got_sha[65];
	uint8_t want[32];
	if ((r = sha256_hex(data, dlen, got_sha, err)) < 0)
		return r;
	if (strlen(sha) != 64 || CRYPTO_memcmp(got_sha, sha, 64) != 0)
		return cvm_err_set(err, EBADMSG, "BadParameter",
				   "backup: keys.json does not match the manifest (corrupt)");
	if ((r = full_mac(h, hsm_id, created, got_sha, want, err)) < 0)
		return r;
	if (maclen != 32 || CRYPTO_memcmp(want, mac, 32) != 0)
		return cvm_err_set(err, EBADMSG, "BadParameter",
				   "backup: integrity check failed (tampered, or made by an HSM "
				   "with another security domain)");
	return 0;
}

void cvm_hsm_full_data_free(struct cvm_hsm_full_data *fd)
{
	if (!fd)
		return;
	for (size_t i = 0; i < fd->n; i++)
		cvm_hsm_backup_free(fd->recs[i]);
	free(fd->recs);
	free(fd);
}

static int cmp_rec_name(const void *a, const void *b)
{
	const struct cvm_hsm_backup *const *x = a, *const *y = b;
	return strcmp((*x)->name, (*y)->name);
}

int cvm_hsm_full_data_parse(const uint8_t *buf, size_t len, struct cvm_hsm_full_data **out,
			    struct cvm_err *err)
{
	_cleanup_json_ json_t *root = NULL;
	const char *fmt;
	int64_t v;
	json_t *keys;
	int r;
	if ((r = cvm_json_parse(buf, len, false, &root, err)) < 0 ||
	    (r = cvm_json_enum(root, "format", "format", true,
			       (const char *const[]){ "opencvm-full-backup", NULL }, &fmt, err)) < 0 ||
	    (r = cvm_json_int(root, "v", "v", true, 1, 1, &v, NULL, err)) < 0 ||
	    (r = cvm_json_arr(root, "keys", "keys", true, &keys, err)) < 0)
		return r;
	_cleanup_(cvm_hsm_full_data_freep) struct cvm_hsm_full_data *fd = calloc(1, sizeof(*fd));
	size_t n = json_array_size(keys);
	if (!fd || !(fd->recs = calloc(n ? n : 1, sizeof(*fd->recs))))
		return cvm_err_nomem(err);
	for (size_t i = 0; i < n; i++) {
		char path[48];
		snprintf(path, sizeof(path), "keys[%zu]", i);
		if ((r = parse_record(json_array_get(keys, i), path, true, &fd->recs[i], err)) < 0)
			return r;
		fd->n = i + 1;
	}
	/* a name twice would make the restore fail half-way through its transaction */
	qsort(fd->recs, fd->n, sizeof(*fd->recs), cmp_rec_name);
	for (size_t i = 1; i < fd->n; i++)
		if (!strcmp(fd->recs[i - 1]->name, fd->recs[i]->name))
			return cvm_err_badparam(err, "keys: key %s appears twice", fd->recs[i]->name);
	*out = CVM_TAKE(fd);
	return 0;
}

int cvm_hsm_full_restore(struct cvm_hsm *h, const char *dir, struct cvm_err *err)
{
	int active = cvm_hsm_check_active(h, err);
	if (active < 0)
		return active;
	if (!dir || !dir[0])
		return cvm_err_badparam(err, "dir: a backup directory is required");
	_cleanup_free_ char *dpath = cvm_path_join(dir, "keys.json");
	_cleanup_free_ char *mpath = cvm_path_join(dir, "manifest.json");
	if (!dpath || !mpath)
		return cvm_err_nomem(err);
	_cleanup_free_ uint8_t *mbuf = NULL, *dbuf = NULL;
	size_t mlen, dlen;
	_cleanup_json_ json_t *man = NULL;
	int r;
	if ((r = cvm_file_read(mpath, MANIFEST_MAX, &mbuf, &mlen, err)) < 0 ||
	    (r = cvm_file_read(dpath, DATA_MAX, &dbuf, &dlen, err)) < 0)
		return r;
	if ((r = cvm_json_parse(mbuf, mlen, false, &man, err)) < 0)
		return cvm_err_prefix(err, "manifest.json");
	pthread_rwlock_rdlock(&h->domain_lock);
	r = cvm_hsm_require_active(h, err);
	if (r == 0)
		r = verify_manifest(h, man, dbuf, dlen, err);
	pthread_rwlock_unlock(&h->domain_lock);
	if (r < 0)
		return r;
	/* Authenticated, but still parsed strictly: a bug in an older writer must not corrupt. */
	_cleanup_(cvm_hsm_full_data_freep) struct cvm_hsm_full_data *fd = NULL;
	if ((r = cvm_hsm_full_data_parse(dbuf, dlen, &fd, err)) < 0)
		return cvm_err_prefix(err, "keys.json");
	struct full_restore_ctx f = { .recs = fd->recs, .n = fd->n };
	if ((r = cvm_store_transact(h->store, CVM_TX_WRITE, full_restore_tx, &f, err)) < 0)
		return r;
	cvm_hsm_cache_drop(h, NULL);
	cvm_log_info("hsm_full_restore", "dir=%s keys=%zu", dir, fd->n);
	return 0;
}
