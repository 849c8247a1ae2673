/* SPDX-License-Identifier: Apache-2.0 */
/* Soft delete: delete marks the key (all versions) deleted with a scheduled purge date of
 * deletion + retention; deleted keys can be read, listed, recovered or purged. Purge protection
 * (irreversible) refuses purges before the scheduled date; the scheduler purges when it passes. */
#include "hsm-internal.h"

#include <stdio.h>
#include <string.h>

/* DeletedKeyBundle / DeletedKeyItem extras. */
static int add_deleted_fields(const struct cvm_hsm_caller *c, const struct cvm_hsm_keyver *kv,
			      json_t *obj, struct cvm_err *err)
{
	_cleanup_free_ char *rid = cvm_asprintf("%s/deletedkeys/%s", cvm_hsm_base_url(c),
						kv->display);
	if (!rid || json_object_set_new(obj, "recoveryId", json_string(rid)) ||
	    json_object_set_new(obj, "deletedDate", json_integer(kv->deleted_date)) ||
	    json_object_set_new(obj, "scheduledPurgeDate", json_integer(kv->scheduled_purge)))
		return cvm_err_nomem(err);
	return 0;
}

static int deleted_bundle(struct cvm_hsm *h, const struct cvm_hsm_caller *c, const char *name,
			  json_t **out, struct cvm_err *err)
{
	_cleanup_keyver_ struct cvm_hsm_keyver *kv = NULL;
	int r = cvm_hsm_keyver_get(h, name, NULL, true, &kv, err);
	if (r == -ENOENT || (r == 0 && !kv->deleted))
		return cvm_hsm_err_deleted_not_found(err, name);
	if (r < 0)
		return r;
	_cleanup_json_ json_t *b = NULL;
	if ((r = cvm_hsm_key_bundle(h, c, kv, &b, err)) < 0 ||
	    (r = add_deleted_fields(c, kv, b, err)) < 0)
		return r;
	*out = CVM_TAKE(b);
	return 0;
}

struct del_ctx {
	const char *name;
	int64_t now;
	int64_t purge_at;
};

static int delete_tx(struct cvm_tx *tx, void *vctx, struct cvm_err *err)
{
	struct del_ctx *d = vctx;
	int64_t changes = 0;
	struct cvm_val p[] = { CVM_VAL_I(d->now), CVM_VAL_I(d->purge_at), CVM_VAL_S(d->name) };
	int r = cvm_tx_exec(tx, "UPDATE hsm_keys SET deleted = 1, deleted_date = ?, "
				"scheduled_purge = ? WHERE name = ? AND deleted = 0",
			    p, 3, &changes, err);
	if (r < 0)
		return r;
	return changes == 1 ? 0 : cvm_hsm_err_key_not_found(err, d->name);
}

int cvm_hsm_key_delete(struct cvm_hsm *h, const struct cvm_hsm_caller *c, const char *name,
		       json_t **out, struct cvm_err *err)
{
	int active = cvm_hsm_check_active(h, err);
	if (active < 0)
		return active;
	char id[CVM_HSM_NAME_MAX + 1];
	int r = cvm_hsm_name_id(name, id, err);
	if (r < 0)
		return r;
	struct del_ctx d = { .name = id, .now = cvm_now() };
	d.purge_at = d.now + (int64_t)h->retention_days * 86400;
	if ((r = cvm_store_transact(h->store, CVM_TX_WRITE, delete_tx, &d, err)) < 0)
		return r;
	cvm_hsm_cache_drop(h, id);
	cvm_hsm_log("key_delete", c, name, NULL);
	return deleted_bundle(h, c, name, out, err);
}

int cvm_hsm_deleted_get(struct cvm_hsm *h, const struct cvm_hsm_caller *c, const char *name,
			json_t **out, struct cvm_err *err)
{
	int active = cvm_hsm_check_active(h, err);
	if (active < 0)
		return active;
	return deleted_bundle(h, c, name, out, err);
}

int cvm_hsm_deleted_list(struct cvm_hsm *h, const struct cvm_hsm_caller *c, int maxresults,
			 const char *skiptoken, const char *api_version, json_t **out,
			 struct cvm_err *err)
{
	int active = cvm_hsm_check_active(h, err);
	if (active < 0)
		return active;
	int limit;
	_cleanup_rows_ struct cvm_rows *rows = NULL;
	int r = cvm_hsm_page_keys(h, true, maxresults, skiptoken, &limit, &rows, err);
	if (r < 0)
		return r;
	_cleanup_json_ json_t *items = json_array();
	if (!items)
		return cvm_err_nomem(err);
	size_t n = cvm_rows_count(rows);
	char last[CVM_HSM_NAME_MAX + 1] = "";
	for (size_t i = 0; i < n && i < (size_t)limit; i++) {
		_cleanup_keyver_ struct cvm_hsm_keyver *kv = NULL;
		if ((r = cvm_hsm_keyver_from_row(rows, i, &kv, err)) < 0)
			return r;
		_cleanup_free_ char *kid = cvm_hsm_kid(c, kv->display, NULL);
		json_t *it = json_object();
		if (!kid || !it || json_array_append_new(items, it) ||
		    json_object_set_new(it, "kid", json_string(kid)) ||
		    json_object_set_new(it, "attributes", cvm_hsm_attributes_json(h, kv)) ||
		    (kv->tags && json_object_set(it, "tags", kv->tags)))
			return cvm_err_nomem(err);
		if ((r = add_deleted_fields(c, kv, it, err)) < 0)
			return r;
		snprintf(last, sizeof(last), "%s", kv->name);
	}
	return cvm_hsm_list_result(c, "/deletedkeys", api_version, limit, CVM_TAKE(items),
				   n > (size_t)limit, last, out, err);
}

static int recover_tx(struct cvm_tx *tx, void *vctx, struct cvm_err *err)
{
	const char *name = vctx;
	int64_t changes = 0;
	struct cvm_val p[] = { CVM_VAL_S(name) };
	int r = cvm_tx_exec(tx, "UPDATE hsm_keys SET deleted = 0, deleted_date = NULL, "
				"scheduled_purge = NULL WHERE name = ? AND deleted = 1",
			    p, 1, &changes, err);
	if (r < 0)
		return r;
	return changes == 1 ? 0 : cvm_hsm_err_deleted_not_found(err, name);
}

int cvm_hsm_deleted_recover(struct cvm_hsm *h, const struct cvm_hsm_caller *c, const char *name,
			    json_t **out, struct cvm_err *err)
{
	int active = cvm_hsm_check_active(h, err);
	if (active < 0)
		return active;
	char id[CVM_HSM_NAME_MAX + 1];
	int r = cvm_hsm_name_id(name, id, err);
	if (r < 0 || (r = cvm_store_transact(h->store, CVM_TX_WRITE, recover_tx, id, err)) < 0)
		return r;
	cvm_hsm_log("key_recover", c, name, NULL);
	return cvm_hsm_key_get(h, c, name, NULL, out, err);
}

/* Delete a deleted key's rows when its purge is allowed. Shared by purge and the scheduler. */
static int purge_rows(struct cvm_tx *tx, const char *name, int64_t due_by, int64_t *changes,
		      struct cvm_err *err)
{
	struct cvm_val p[] = { CVM_VAL_S(name), CVM_VAL_I(due_by) };
	int r = cvm_tx_exec(tx, "DELETE FROM hsm_keys WHERE name = ? AND deleted = 1 AND "
				"scheduled_purge <= ?",
			    p, 2, changes, err);
	if (r < 0 || *changes != 1)
		return r;
	return cvm_tx_exec(tx, "DELETE FROM hsm_key_versions WHERE name = ?", p, 1, NULL, err);
}

struct purge_ctx {
	struct cvm_hsm *h;
	const char *name;
	int64_t now;
};

static int purge_tx(struct cvm_tx *tx, void *vctx, struct cvm_err *err)
{
	struct purge_ctx *p = vctx;
	struct cvm_val pn[] = { CVM_VAL_S(p->name) };
	_cleanup_rows_ struct cvm_rows *rows = NULL;
	int r = cvm_tx_query(tx, "SELECT deleted, scheduled_purge FROM hsm_keys WHERE name = ?", pn,
			     1, &rows, err);
	if (r < 0)
		return r;
	if (cvm_rows_count(rows) != 1 || !cvm_rows_int(rows, 0, 0))
		return cvm_hsm_err_deleted_not_found(err, p->name);
	int64_t sched = cvm_rows_int(rows, 0, 1);
	if (p->h->purge_protection && p->now < sched) {
		char t[32];
		cvm_time_iso8601(sched, t);
		return cvm_err_set(err, EPERM, "Forbidden",
				   "Key %s is protected by purge protection and cannot be purged "
				   "before its scheduledPurgeDate %s (%lld).",
				   p->name, t, (long long)sched);
	}
	int64_t changes = 0;
	/* Without purge protection a purge may come any time: allow every scheduled date. */
	r = purge_rows(tx, p->name, p->h->purge_protection ? p->now : INT64_MAX, &changes, err);
	if (r < 0)
		return r;
	return changes == 1 ? 0 : cvm_hsm_err_deleted_not_found(err, p->name);
}

int cvm_hsm_deleted_purge(struct cvm_hsm *h, const struct cvm_hsm_caller *c, const char *name,
			  struct cvm_err *err)
{
	int active = cvm_hsm_check_active(h, err);
	if (active < 0)
		return active;
	char id[CVM_HSM_NAME_MAX + 1];
	int r = cvm_hsm_name_id(name, id, err);
	if (r < 0)
		return r;
	struct purge_ctx p = { .h = h, .name = id, .now = cvm_now() };
	if ((r = cvm_store_transact(h->store, CVM_TX_WRITE, purge_tx, &p, err)) < 0)
		return r;
	cvm_hsm_cache_drop(h, id);
	cvm_hsm_log("key_purge", c, name, NULL);
	return 0;
}

struct due_ctx {
	const char *name;
	int64_t now;
	int64_t changes;
};

static int purge_due_tx(struct cvm_tx *tx, void *vctx, struct cvm_err *err)
{
	struct due_ctx *d = vctx;
	d->changes = 0;
	return purge_rows(tx, d->name, d->now, &d->changes, err);
}

int cvm_hsm_purge_due(struct cvm_hsm *h, int64_t now, struct cvm_err *err)
{
	_cleanup_rows_ struct cvm_rows *rows = NULL;
	_cleanup_tx_ struct cvm_tx *tx = NULL;
	struct cvm_val p[] = { CVM_VAL_I(now) };
	int r;
	if ((r = cvm_tx_begin(h->store, CVM_TX_READ, &tx, err)) < 0 ||
	    (r = cvm_tx_query(tx, "SELECT name FROM hsm_keys WHERE deleted = 1 AND "
				  "scheduled_purge <= ? ORDER BY name LIMIT 1000",
			      p, 1, &rows, err)) < 0 ||
	    (r = cvm_tx_commit(CVM_TAKE(tx), err)) < 0)
		return r;
	int purged = 0;
	for (size_t i = 0; i < cvm_rows_count(rows); i++) {
		struct due_ctx d = { .name = cvm_rows_text(rows, i, 0), .now = now };
		if (!d.name)
			continue;
		if ((r = cvm_store_transact(h->store, CVM_TX_WRITE, purge_due_tx, &d, err)) < 0)
			return r;
		/* Another cvmd on the same database may have purged it first: count ours only. */
		if (d.changes == 1) {
			cvm_hsm_cache_drop(h, d.name);
			cvm_hsm_log("key_purge_scheduled", NULL, d.name, NULL);
			purged++;
		}
	}
	return purged;
}
