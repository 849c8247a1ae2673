/* SPDX-License-Identifier: Apache-2.0 */
/* Disk Encryption Sets and the registry of confidential disks, persisted through store.h. */
#include "disk-internal.h"

#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <opencvm/store.h>

static const char *const schema_v1[] = {
	"CREATE TABLE IF NOT EXISTS disk_encryption_sets ("
	" name TEXT PRIMARY KEY, key_url TEXT NOT NULL, alg TEXT NOT NULL, type TEXT NOT NULL,"
	" identity TEXT NOT NULL, created INTEGER NOT NULL, updated INTEGER NOT NULL)",
	"CREATE TABLE IF NOT EXISTS disks ("
	" name TEXT PRIMARY KEY, path TEXT NOT NULL, des TEXT, kind TEXT NOT NULL,"
	" size INTEGER NOT NULL, kid TEXT, created INTEGER NOT NULL, updated INTEGER NOT NULL)",
	"CREATE INDEX IF NOT EXISTS disks_des ON disks (des)",
};

static int ensure_schema(struct cvm_store *s, struct cvm_err *err)
{
	if (!s)
		return cvm_err_badparam(err, "store: required");
	return cvm_store_ensure_schema(s, "disk", 1, schema_v1, CVM_ARRAY_SIZE(schema_v1), err);
}

static const char *const type_names[] = { "ConfidentialVmEncryptedWithPlatformKey",
					   "ConfidentialVmEncryptedWithCustomerKey" };

const char *cvm_des_type_name(enum cvm_des_type t)
{
	return (unsigned)t < CVM_ARRAY_SIZE(type_names) ? type_names[t] : "unknown";
}

int cvm_des_type_parse(const char *s, enum cvm_des_type *out, struct cvm_err *err)
{
	if (s && (strcmp(s, "platform") == 0 || strcmp(s, type_names[0]) == 0)) {
		*out = CVM_DES_PLATFORM_KEY;
		return 0;
	}
	if (s && (strcmp(s, "customer") == 0 || strcmp(s, type_names[1]) == 0)) {
		*out = CVM_DES_CUSTOMER_KEY;
		return 0;
	}
	return cvm_err_badparam(err, "type: must be platform, customer, %s or %s", type_names[0],
				type_names[1]);
}

void cvm_des_clear(struct cvm_des *d)
{
	if (!d)
		return;
	free(d->name);
	free(d->key_url);
	free(d->alg);
	free(d->identity);
	memset(d, 0, sizeof(*d));
}

bool cvm_des_follows_latest(const struct cvm_des *d)
{
	return d && d->key_url && !cvm_disk_key_url_valid(d->key_url, true);
}

static bool valid_name(const char *s)
{
	size_t n = s ? strlen(s) : 0;
	if (n == 0 || n > 80)
		return false;
	for (size_t i = 0; i < n; i++) {
		char c = s[i];
		if (!((c >= '0' && c <= '9') || (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') ||
		      c == '-' || c == '_'))
			return false;
	}
	return true;
}

static int check_des(const struct cvm_des *d, struct cvm_err *err)
{
	if (!valid_name(d->name))
		return cvm_err_badparam(err, "name: expected 1..80 characters of A-Z a-z 0-9 - _");
	if (!cvm_disk_key_url_valid(d->key_url, false))
		return cvm_err_badparam(err, "key: expected http(s)://host/keys/<name>[/<version>]");
	if (!d->alg || (strcmp(d->alg, "RSA-OAEP-256") != 0 && strcmp(d->alg, "A256KW") != 0))
		return cvm_err_badparam(err, "alg: must be one of RSA-OAEP-256, A256KW");
	if ((unsigned)d->type > CVM_DES_CUSTOMER_KEY)
		return cvm_err_badparam(err, "type: must be platform or customer");
	if (!d->identity || !d->identity[0] || strlen(d->identity) > 256)
		return cvm_err_badparam(err, "identity: required (1..256 characters)");
	return 0;
}

int cvm_des_create(struct cvm_store *s, const struct cvm_des *in,
		   const struct cvm_des_authz *authz, struct cvm_err *err)
{
	int r = check_des(in, err);
	if (r < 0)
		return r;
	if (!authz || !authz->check)
		return cvm_err_badparam(err, "authz: a role check is required");
	r = authz->check(authz->ctx, in->identity, in->key_url, err);
	if (r < 0)
		return cvm_err_prefix(err, "identity %s cannot use %s (needs the Crypto Service "
					   "Encryption User role on the key)",
				      in->identity, in->key_url);
	if ((r = ensure_schema(s, err)) < 0)
		return r;
	int64_t now = cvm_now();
	_cleanup_tx_ struct cvm_tx *tx = NULL;
	struct cvm_val p[] = { CVM_VAL_S(in->name), CVM_VAL_S(in->key_url), CVM_VAL_S(in->alg),
			       CVM_VAL_S(cvm_des_type_name(in->type)), CVM_VAL_S(in->identity),
			       CVM_VAL_I(now), CVM_VAL_I(now) };
	if ((r = cvm_tx_begin(s, CVM_TX_WRITE, &tx, err)) < 0)
		return r;
	r = cvm_tx_exec(tx, "INSERT INTO disk_encryption_sets (name, key_url, alg, type, identity,"
			" created, updated) VALUES (?, ?, ?, ?, ?, ?, ?)",
			p, CVM_ARRAY_SIZE(p), NULL, err);
	if (r == -EEXIST)
		return cvm_err_set(err, EEXIST, "Conflict", "disk encryption set %s already exists",
				   in->name);
	if (r < 0)
		return r;
	r = cvm_tx_commit(CVM_TAKE(tx), err);
	if (r == 0)
		cvm_log_info("des_created", "name=%s key=%s type=%s", in->name, in->key_url,
			     cvm_des_type_name(in->type));
	return r;
}

static int des_from_row(const struct cvm_rows *rows, size_t i, struct cvm_des *d,
			struct cvm_err *err)
{
	struct cvm_err ignored = { 0 };
	d->name = cvm_strdup(cvm_rows_text(rows, i, 0));
	d->key_url = cvm_strdup(cvm_rows_text(rows, i, 1));
	d->alg = cvm_strdup(cvm_rows_text(rows, i, 2));
	d->identity = cvm_strdup(cvm_rows_text(rows, i, 4));
	d->created = cvm_rows_int(rows, i, 5);
	d->updated = cvm_rows_int(rows, i, 6);
	if (cvm_des_type_parse(cvm_rows_text(rows, i, 3), &d->type, &ignored) < 0)
		return cvm_err_internal(err, "disk encryption set %s: unknown stored type",
					d->name ? d->name : "?");
	if (!d->name || !d->key_url || !d->alg || !d->identity)
		return cvm_err_nomem(err);
	return 0;
}

#define DES_COLS "name, key_url, alg, type, identity, created, updated"

int cvm_des_get(struct cvm_store *s, const char *name, struct cvm_des *out, struct cvm_err *err)
{
	memset(out, 0, sizeof(*out));
	int r = ensure_schema(s, err);
	if (r < 0)
		return r;
	_cleanup_tx_ struct cvm_tx *tx = NULL;
	_cleanup_rows_ struct cvm_rows *rows = NULL;
	struct cvm_val p[] = { CVM_VAL_S(name) };
	if ((r = cvm_tx_begin(s, CVM_TX_READ, &tx, err)) < 0 ||
	    (r = cvm_tx_query(tx, "SELECT " DES_COLS " FROM disk_encryption_sets WHERE name = ?", p,
			      1, &rows, err)) < 0)
		return r;
	if (cvm_rows_count(rows) == 0)
		return cvm_err_set(err, ENOENT, "NotFound", "disk encryption set %s not found",
				   name ? name : "(null)");
	r = des_from_row(rows, 0, out, err);
	if (r < 0)
		cvm_des_clear(out);
	return r;
}

void cvm_des_list_free(struct cvm_des *list, size_t n)
{
	for (size_t i = 0; list && i < n; i++)
		cvm_des_clear(&list[i]);
	free(list);
}

int cvm_des_list(struct cvm_store *s, struct cvm_des **out, size_t *n, struct cvm_err *err)
{
	*out = NULL;
	*n = 0;
	int r = ensure_schema(s, err);
	if (r < 0)
		return r;
	_cleanup_tx_ struct cvm_tx *tx = NULL;
	_cleanup_rows_ struct cvm_rows *rows = NULL;
	if ((r = cvm_tx_begin(s, CVM_TX_READ, &tx, err)) < 0 ||
	    (r = cvm_tx_query(tx, "SELECT " DES_COLS " FROM disk_encryption_sets ORDER BY name",
			      NULL, 0, &rows, err)) < 0)
		return r;
	size_t cnt = cvm_rows_count(rows);
	struct cvm_des *list = calloc(cnt ? cnt : 1, sizeof(*list));
	if (!list)
		return cvm_err_nomem(err);
	for (size_t i = 0; i < cnt; i++) {
		if ((r = des_from_row(rows, i, &list[i], err)) < 0) {
			cvm_des_list_free(list, cnt);
			return r;
		}
	}
	*out = list;
	*n = cnt;
	return 0;
}

int cvm_des_delete(struct cvm_store *s, const char *name, struct cvm_err *err)
{
	int r = ensure_schema(s, err);
	if (r < 0)
		return r;
	_cleanup_tx_ struct cvm_tx *tx = NULL;
	_cleanup_rows_ struct cvm_rows *rows = NULL;
	struct cvm_val p[] = { CVM_VAL_S(name) };
	int64_t changes = 0;
	if ((r = cvm_tx_begin(s, CVM_TX_WRITE, &tx, err)) < 0 ||
	    (r = cvm_tx_query(tx, "SELECT name FROM disks WHERE des = ? LIMIT 1", p, 1, &rows,
			      err)) < 0)
		return r;
	if (cvm_rows_count(rows) > 0)
		return cvm_err_set(err, EBUSY, "Conflict",
				   "disk encryption set %s is used by disk %s", name,
				   cvm_rows_text(rows, 0, 0));
	if ((r = cvm_tx_exec(tx, "DELETE FROM disk_encryption_sets WHERE name = ?", p, 1, &changes,
			     err)) < 0)
		return r;
	if (changes == 0)
		return cvm_err_set(err, ENOENT, "NotFound", "disk encryption set %s not found",
				   name ? name : "(null)");
	return cvm_tx_commit(CVM_TAKE(tx), err);
}

/* ---- disk registry -------------------------------------------------------------------------- */

void cvm_disk_rec_clear(struct cvm_disk_rec *d)
{
	if (!d)
		return;
	free(d->name);
	free(d->path);
	free(d->des);
	free(d->kid);
	memset(d, 0, sizeof(*d));
}

int cvm_disk_rec_add(struct cvm_store *s, const struct cvm_disk_rec *rec, struct cvm_err *err)
{
	if (!valid_name(rec->name))
		return cvm_err_badparam(err, "name: expected 1..80 characters of A-Z a-z 0-9 - _");
	if (!rec->path || !rec->path[0])
		return cvm_err_badparam(err, "path: required");
	if ((unsigned)rec->kind > CVM_DISK_KIND_VMGS)
		return cvm_err_badparam(err, "kind: must be one of os, data, temp, vmgs");
	if ((rec->kind == CVM_DISK_KIND_TEMP) != (rec->des == NULL))
		return cvm_err_badparam(err, "des: required for os, data and vmgs disks, "
					     "not allowed for temp disks");
	if (rec->des && !cvm_disk_key_url_valid(rec->kid, true))
		return cvm_err_badparam(err, "kid: expected the versioned key URL of the wrap");
	if (rec->size > (uint64_t)INT64_MAX)
		return cvm_err_badparam(err, "size: too large");
	int r = ensure_schema(s, err);
	if (r < 0)
		return r;
	_cleanup_tx_ struct cvm_tx *tx = NULL;
	_cleanup_rows_ struct cvm_rows *rows = NULL;
	if ((r = cvm_tx_begin(s, CVM_TX_WRITE, &tx, err)) < 0)
		return r;
	if (rec->des) {
		struct cvm_val q[] = { CVM_VAL_S(rec->des) };
		if ((r = cvm_tx_query(tx, "SELECT name FROM disk_encryption_sets WHERE name = ?", q,
				      1, &rows, err)) < 0)
			return r;
		if (cvm_rows_count(rows) == 0)
			return cvm_err_set(err, ENOENT, "NotFound",
					   "disk encryption set %s not found", rec->des);
	}
	int64_t now = cvm_now();
	struct cvm_val p[] = { CVM_VAL_S(rec->name), CVM_VAL_S(rec->path), CVM_VAL_S(rec->des),
			       CVM_VAL_S(cvm_disk_kind_name(rec->kind)),
			       CVM_VAL_I((int64_t)rec->size), CVM_VAL_S(rec->kid), CVM_VAL_I(now),
			       CVM_VAL_I(now) };
	r = cvm_tx_exec(tx, "INSERT INTO disks (name, path, des, kind, size, kid, created, updated)"
			" VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
			p, CVM_ARRAY_SIZE(p), NULL, err);
	if (r == -EEXIST)
		return cvm_err_set(err, EEXIST, "Conflict", "disk %s already exists", rec->name);
	if (r < 0)
		return r;
	return cvm_tx_commit(CVM_TAKE(tx), err);
}

#define DISK_COLS "name, path, des, kind, size, kid, created, updated"

static int rec_from_row(const struct cvm_rows *rows, size_t i, struct cvm_disk_rec *d,
			struct cvm_err *err)
{
	struct cvm_err ignored = { 0 };
	d->name = cvm_strdup(cvm_rows_text(rows, i, 0));
	d->path = cvm_strdup(cvm_rows_text(rows, i, 1));
	d->des = cvm_strdup(cvm_rows_text(rows, i, 2));
	d->size = (uint64_t)cvm_rows_int(rows, i, 4);
	d->kid = cvm_strdup(cvm_rows_text(rows, i, 5));
	d->created = cvm_rows_int(rows, i, 6);
	d->updated = cvm_rows_int(rows, i, 7);
	if (!d->name || !d->path)
		return cvm_err_nomem(err);
	if (cvm_disk_kind_parse(cvm_rows_text(rows, i, 3), &d->kind, &ignored) < 0)
		return cvm_err_internal(err, "disk %s: unknown stored kind", d->name);
	return 0;
}

int cvm_disk_rec_get(struct cvm_store *s, const char *name, struct cvm_disk_rec *out,
		     struct cvm_err *err)
{
	memset(out, 0, sizeof(*out));
	int r = ensure_schema(s, err);
	if (r < 0)
		return r;
	_cleanup_tx_ struct cvm_tx *tx = NULL;
	_cleanup_rows_ struct cvm_rows *rows = NULL;
	struct cvm_val p[] = { CVM_VAL_S(name) };
	if ((r = cvm_tx_begin(s, CVM_TX_READ, &tx, err)) < 0 ||
	    (r = cvm_tx_query(tx, "SELECT " DISK_COLS " FROM disks WHERE name = ?", p, 1, &rows,
			      err)) < 0)
		return r;
	if (cvm_rows_count(rows) == 0)
		return cvm_err_set(err, ENOENT, "NotFound", "disk %s not found",
				   name ? name : "(null)");
	r = rec_from_row(rows, 0, out, err);
	if (r < 0)
		cvm_disk_rec_clear(out);
	return r;
}

void cvm_disk_rec_list_free(struct cvm_disk_rec *list, size_t n)
{
	for (size_t i = 0; list && i < n; i++)
		cvm_disk_rec_clear(&list[i]);
	free(list);
}

int cvm_disk_rec_list(struct cvm_store *s, const char *des, struct cvm_disk_rec **out, size_t *n,
		      struct cvm_err *err)
{
	*out = NULL;
	*n = 0;
	int r = ensure_schema(s, err);
	if (r < 0)
		return r;
	_cleanup_tx_ struct cvm_tx *tx = NULL;
	_cleanup_rows_ struct cvm_rows *rows = NULL;
	struct cvm_val p[] = { CVM_VAL_S(des) };
	if ((r = cvm_tx_begin(s, CVM_TX_READ, &tx, err)) < 0)
		return r;
	if (des)
		r = cvm_tx_query(tx, "SELECT " DISK_COLS " FROM disks WHERE des = ? ORDER BY name", p,
				 1, &rows, err);
	else
		r = cvm_tx_query(tx, "SELECT " DISK_COLS " FROM disks ORDER BY name", NULL, 0, &rows,
				 err);
	if (r < 0)
		return r;
	size_t cnt = cvm_rows_count(rows);
	struct cvm_disk_rec *list = calloc(cnt ? cnt : 1, sizeof(*list));
	if (!list)
		return cvm_err_nomem(err);
	for (size_t i = 0; i < cnt; i++) {
		if ((r = rec_from_row(rows, i, &list[i], err)) < 0) {
			cvm_disk_rec_list_free(list, cnt);
			return r;
		}
	}
	*out = list;
	*n = cnt;
	return 0;
}

int cvm_disk_rec_delete(struct cvm_store *s, const char *name, struct cvm_err *err)
{
	int r = ensure_schema(s, err);
	if (r < 0)
		return r;
	_cleanup_tx_ struct cvm_tx *tx = NULL;
	struct cvm_val p[] = { CVM_VAL_S(name) };
	int64_t changes = 0;
	if ((r = cvm_tx_begin(s, CVM_TX_WRITE, &tx, err)) < 0 ||
	    (r = cvm_tx_exec(tx, "DELETE FROM disks WHERE name = ?", p, 1, &changes, err)) < 0)
		return r;
	if (changes == 0)
		return cvm_err_set(err, ENOENT, "NotFound", "disk %s not found",
				   name ? name : "(null)");
	return cvm_tx_commit(CVM_TAKE(tx), err);
}

static int set_kid(struct cvm_store *s, const char *name, const char *kid, struct cvm_err *err)
{
	_cleanup_tx_ struct cvm_tx *tx = NULL;
	struct cvm_val p[] = { CVM_VAL_S(kid), CVM_VAL_I(cvm_now()), CVM_VAL_S(name) };
	int r;
	if ((r = cvm_tx_begin(s, CVM_TX_WRITE, &tx, err)) < 0 ||
	    (r = cvm_tx_exec(tx, "UPDATE disks SET kid = ?, updated = ? WHERE name = ?", p, 3, NULL,
			     err)) < 0)
		return r;
	return cvm_tx_commit(CVM_TAKE(tx), err);
}

int cvm_disk_rotate_registered(struct cvm_store *s, const char *name,
			       const struct cvm_disk_keywrap *kw, bool *rotated, struct cvm_err *err)
{
	*rotated = false;
	_cleanup_(cvm_disk_rec_clear) struct cvm_disk_rec rec = { 0 };
	_cleanup_(cvm_des_clear) struct cvm_des des = { 0 };
	int r = cvm_disk_rec_get(s, name, &rec, err);
	if (r < 0)
		return r;
	if (!rec.des)
		return cvm_err_badparam(err, "disk %s: a temp disk has no wrapped secret to rotate",
					name);
	if ((r = cvm_des_get(s, rec.des, &des, err)) < 0)
		return r;
	/* A pinned version already in use: nothing to do. Following latest: always re-wrap; the
	 * key service tells which version that is. */
	if (!cvm_des_follows_latest(&des) && rec.kid && strcmp(rec.kid, des.key_url) == 0)
		return 0;
	if ((r = cvm_disk_rotate(rec.path, kw, des.key_url, des.alg, err)) < 0)
		return r;
	_cleanup_(cvm_disk_info_clear) struct cvm_disk_info info = { 0 };
	if ((r = cvm_disk_info(rec.path, &info, err)) < 0)
		return r;
	if (!info.has_hsm_token)
		return cvm_err_internal(err, "disk %s: no opencvm-hsm token after rotation", name);
	*rotated = !rec.kid || strcmp(rec.kid, info.hsm.key_url) != 0;
	if ((r = set_kid(s, name, info.hsm.key_url, err)) < 0)
		return r;
	cvm_log_info("disk_rotated_registered", "name=%s des=%s kid=%s", name, rec.des,
		     info.hsm.key_url);
	return 0;
}

/* ---- create + register ------------------------------------------------------------------- */

static int name_free(struct cvm_store *s, const char *name, struct cvm_err *err)
{
	struct cvm_disk_rec rec;
	int r = cvm_disk_rec_get(s, name, &rec, err);
	if (r == 0) {
		cvm_disk_rec_clear(&rec);
		return cvm_err_set(err, EEXIST, "Conflict", "disk %s already exists", name);
	}
	if (r != -ENOENT)
		return r;
	cvm_err_clear(err);
	return 0;
}

static int register_new(struct cvm_store *s, const char *name, const char *path,
			const char *des, const struct cvm_disk_opts *opts, struct cvm_err *err)
{
	_cleanup_(cvm_disk_info_clear) struct cvm_disk_info info = { 0 };
	struct stat st;
	int r = cvm_disk_info(path, &info, err);
	if (r >= 0 && stat(path, &st) < 0)
		r = cvm_err_set(err, errno, "InternalError", "stat %s: %s", path, strerror(errno));
	if (r >= 0) {
		struct cvm_disk_rec rec = {
			.name = (char *)name, .path = (char *)path, .des = (char *)des,
			.kind = opts ? opts->kind : CVM_DISK_KIND_OS, .size = (uint64_t)st.st_size,
			.kid = info.hsm.key_url,
		};
		r = cvm_disk_rec_add(s, &rec, err);
	}
	if (r < 0) {
		(void)unlink(path); /* an image nobody can find by name is only a liability */
		return cvm_err_prefix(err, "register disk %s", name);
	}
	return 0;
}

/* Look up the DES and its wrap parameters; the caller's kw does the wrapping. */
static int des_params(struct cvm_store *s, const char *des_name,
		      const struct cvm_disk_keywrap *kw, struct cvm_des *des,
		      struct cvm_disk_wrap_params *wp, struct cvm_err *err)
{
	int r = cvm_des_get(s, des_name, des, err);
	if (r < 0)
		return r;
	*wp = (struct cvm_disk_wrap_params){ .kw = kw, .key_url = des->key_url, .alg = des->alg,
					     .des = des->name };
	return 0;
}

int cvm_disk_create_registered(struct cvm_store *s, const char *name, const char *path,
			       uint64_t size, const char *des_name,
			       const struct cvm_disk_keywrap *kw, const struct cvm_disk_opts *opts,
			       struct cvm_err *err)
{
	_cleanup_(cvm_des_clear) struct cvm_des des = { 0 };
	struct cvm_disk_wrap_params wp;
	int r;
	if (!valid_name(name))
		return cvm_err_badparam(err, "name: expected 1..80 characters of A-Z a-z 0-9 - _");
	if ((r = name_free(s, name, err)) < 0 ||
	    (r = des_params(s, des_name, kw, &des, &wp, err)) < 0 ||
	    (r = cvm_disk_create(path, size, &wp, opts, err)) < 0)
		return r;
	return register_new(s, name, path, des.name, opts, err);
}

int cvm_disk_encrypt_registered(struct cvm_store *s, const char *name, const char *src,
				const char *path, const char *des_name,
				const struct cvm_disk_keywrap *kw, const struct cvm_disk_opts *opts,
				struct cvm_err *err)
{
	_cleanup_(cvm_des_clear) struct cvm_des des = { 0 };
	struct cvm_disk_wrap_params wp;
	int r;
	if (!valid_name(name))
		return cvm_err_badparam(err, "name: expected 1..80 characters of A-Z a-z 0-9 - _");
	if ((r = name_free(s, name, err)) < 0 ||
	    (r = des_params(s, des_name, kw, &des, &wp, err)) < 0 ||
	    (r = cvm_disk_encrypt_image(src, path, &wp, opts, err)) < 0)
		return r;
	return register_new(s, name, path, des.name, opts, err);
}
