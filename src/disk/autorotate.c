/* SPDX-License-Identifier: Apache-2.0 */
/* Automatic rotation: when the key of a Disk Encryption Set that follows the latest version
 * gets a new version (`cvm key rotate`, or the key service's rotation-policy scheduler, on any
 * cvmd sharing the store), cvmd re-wraps the secret of every disk registered to the set for
 * that version, acting as the set's identity through the key service's RBAC. One pass per
 * scheduler tick; the registry's kid says which disks are behind, so an interrupted pass (cvmd
 * killed) is simply finished by the next one. */
#include <ctype.h>
#include <string.h>

#include <opencvm/audit.h>
#include <opencvm/disk.h>
#include <opencvm/hsm.h>
#include <opencvm/json.h>
#include <opencvm/store.h>

/* A claimed disk is left to its claimant this long (a killed claimant's claim runs out). */
#define LEASE_SECONDS 60
/* After a failure for a version, the next try waits RETRY_FIRST * 2^(attempts-1), at most
 * RETRY_MAX: a missing image or a revoked role is audited a bounded number of times. A new
 * key version starts over at once. */
#define RETRY_FIRST 30
#define RETRY_MAX 3600
#define AUTO_PRINCIPAL "cvmd-autorotate"

static const char *const schema_v1[] = {
	/* one row per disk: the version it is being moved to and how the last try went */
	"CREATE TABLE IF NOT EXISTS disk_autorotate ("
	" disk TEXT PRIMARY KEY, target TEXT NOT NULL, result TEXT, message TEXT,"
	" attempts INTEGER NOT NULL, next_try INTEGER NOT NULL, lease_until INTEGER NOT NULL,"
	" updated INTEGER NOT NULL)",
	/* one row per DES: the last pass that did anything for it */
	"CREATE TABLE IF NOT EXISTS des_autorotate ("
	" des TEXT PRIMARY KEY, at INTEGER NOT NULL, key_version TEXT NOT NULL,"
	" rotated INTEGER NOT NULL, failed INTEGER NOT NULL, message TEXT)",
};

static int ensure_schema(struct cvm_store *s, struct cvm_err *err)
{
	return cvm_store_ensure_schema(s, "disk-autorotate", 1, schema_v1,
				       CVM_ARRAY_SIZE(schema_v1), err);
}

/* ---- key URLs ---------------------------------------------------------------------------- */

struct key_ref {
	char origin[CVM_HSM_REST_BASE_URL_MAX]; /* "https://host:port" */
	char name[CVM_HSM_NAME_MAX + 1];
	char version[33];                       /* "" when versionless */
};

static int key_ref_parse(const char *url, struct key_ref *k, struct cvm_err *err)
{
	if (!cvm_disk_key_url_valid(url, false))
		return cvm_err_badparam(err, "key URL %s: expected https://host/keys/<name>[/<v>]",
					url ? url : "(null)");
	const char *keys = NULL;
	for (const char *p = url; (p = strstr(p, "/keys/")); p++)
		keys = p;
	const char *n = keys + 6, *slash = strchr(n, '/');
	size_t ol = (size_t)(keys - url), nl = slash ? (size_t)(slash - n) : strlen(n);
	const char *v = slash ? slash + 1 : "";
	if (ol >= sizeof(k->origin) || nl > CVM_HSM_NAME_MAX || strlen(v) > 32)
		return cvm_err_badparam(err, "key URL %s: too long", url);
	memcpy(k->origin, url, ol);
	k->origin[ol] = '\0';
	memcpy(k->name, n, nl);
	k->name[nl] = '\0';
	snprintf(k->version, sizeof(k->version), "%s", v);
	return 0;
}

static const char *version_of(const char *kid)
{
	const char *slash = kid ? strrchr(kid, '/') : NULL;
	return slash && strlen(slash + 1) == 32 ? slash + 1 : NULL;
}

/* Same key and version whatever host the URL was written with. */
static bool same_version(const char *a, const char *b)
{
	const char *ka = a ? strstr(a, "/keys/") : NULL, *kb = b ? strstr(b, "/keys/") : NULL;
	return ka && kb && strcmp(ka, kb) == 0;
}

/* ---- acting as the DES identity ----------------------------------------------------------- */

/* The wrap/unwrap of the re-wrap, done by cvmd in-process on behalf of the DES identity. Each
 * call first asks RBAC whether that identity holds the data actions the REST route would
 * demand (the Crypto Service Encryption User role grants them), so a revoked role stops the
 * rotation exactly as it would stop the identity's own HTTP call. */
struct identity {
	struct cvm_hsm *hsm;
	const char *oid;
	const char *base_url;
	const char *request_id;
};

static int identity_may(const struct identity *id, const char *key, const char *method,
			const char *kind, struct cvm_err *err)
{
	const char *action = cvm_hsm_data_action(method, kind);
	if (!action)
		return cvm_err_internal(err, "no data action for %s", kind);
	char scope[CVM_HSM_NAME_MAX + 8];
	snprintf(scope, sizeof(scope), "/keys/%s", key);
	return cvm_hsm_rbac_check_scope(id->hsm, id->oid, action, scope, err);
}

static void wipe_json_str(json_t *obj, const char *field)
{
	json_t *v = json_object_get(obj, field);
	if (json_is_string(v))
		explicit_bzero((char *)json_string_value(v), json_string_length(v));
}

static int id_wrap(void *ctx, const char *key_url, const char *alg, const struct cvm_secret *in,
		   char **wrapped, char **kid_used, struct cvm_err *err)
{
	const struct identity *id = ctx;
	struct key_ref k;
	int r = key_ref_parse(key_url, &k, err);
	if (r < 0 || (r = identity_may(id, k.name, "GET", "keys/get", err)) < 0 ||
	    (r = identity_may(id, k.name, "POST", "keys/wrapkey", err)) < 0)
		return r;
	_cleanup_json_ json_t *body = json_pack("{s:s}", "alg", alg), *out = NULL;
	if (!body || cvm_json_set_b64url(body, "value", in->data, in->len) < 0)
		return cvm_err_nomem(err);
	const struct cvm_hsm_caller c = { .principal = id->oid, .request_id = id->request_id,
					  .source = AUTO_PRINCIPAL, .base_url = id->base_url };
	r = cvm_hsm_key_op(id->hsm, &c, k.name, k.version[0] ? k.version : NULL, "wrapkey", body,
			   &out, err);
	wipe_json_str(body, "value");
	if (r < 0)
		return r;
	const char *kid = json_string_value(json_object_get(out, "kid"));
	const char *val = json_string_value(json_object_get(out, "value"));
	if (!kid || !val || !cvm_disk_key_url_valid(kid, true))
		return cvm_err_internal(err, "wrapkey %s: result lacks a versioned kid or value",
					k.name);
	*wrapped = strdup(val);
	*kid_used = strdup(kid);
	if (!*wrapped || !*kid_used) {
		free(CVM_TAKE(*wrapped));
		free(CVM_TAKE(*kid_used));
		return cvm_err_nomem(err);
	}
	return 0;
}

static int id_unwrap(void *ctx, const char *kid, const char *alg, const char *wrapped,
		     struct cvm_secret **out, struct cvm_err *err)
{
	const struct identity *id = ctx;
	struct key_ref k;
	int r = key_ref_parse(kid, &k, err);
	if (r < 0 || (r = identity_may(id, k.name, "POST", "keys/unwrapkey", err)) < 0)
		return r;
	if (!k.version[0])
		return cvm_err_badparam(err, "kid %s: expected a versioned key URL", kid);
	_cleanup_json_ json_t *body = json_pack("{s:s,s:s}", "alg", alg, "value", wrapped);
	_cleanup_json_ json_t *res = NULL;
	if (!body)
		return cvm_err_nomem(err);
	const struct cvm_hsm_caller c = { .principal = id->oid, .request_id = id->request_id,
					  .source = AUTO_PRINCIPAL, .base_url = id->base_url };
	if ((r = cvm_hsm_key_op(id->hsm, &c, k.name, k.version, "unwrapkey", body, &res, err)) < 0)
		return r;
	uint8_t *raw = NULL;
	size_t len = 0;
	r = cvm_json_b64url(res, "value", "value", true, &raw, &len, err);
	wipe_json_str(res, "value");
	if (r < 0)
		return r;
	*out = cvm_secret_from(raw, len);
	explicit_bzero(raw, len);
	free(raw);
	return *out ? 0 : cvm_err_nomem(err);
}

/* ---- claims -------------------------------------------------------------------------------- */

struct claim_ctx {
	const char *disk, *target;
	int64_t now;
	int64_t changes;
};

/* Claim a disk for moving it to `target`: free (no live lease) and either a new target or its
 * retry time has come. Several cvmd processes on one store: exactly one wins. */
static int claim_tx(struct cvm_tx *tx, void *vctx, struct cvm_err *err)
{
	struct claim_ctx *c = vctx;
	struct cvm_val ins[] = { CVM_VAL_S(c->disk), CVM_VAL_S(c->target), CVM_VAL_I(c->now) };
	struct cvm_val upd[] = { CVM_VAL_I(c->now + LEASE_SECONDS), CVM_VAL_S(c->target),
				 CVM_VAL_S(c->target), CVM_VAL_S(c->target), CVM_VAL_S(c->disk),
				 CVM_VAL_I(c->now), CVM_VAL_S(c->target), CVM_VAL_I(c->now) };
	int r = cvm_tx_exec(tx, "INSERT INTO disk_autorotate (disk, target, attempts, next_try, "
			    "lease_until, updated) VALUES (?, ?, 0, 0, 0, ?) "
			    "ON CONFLICT (disk) DO NOTHING",
			    ins, CVM_ARRAY_SIZE(ins), NULL, err);
	if (r < 0)
		return r;
	return cvm_tx_exec(tx, "UPDATE disk_autorotate SET lease_until = ?, "
			   "attempts = CASE WHEN target = ? THEN attempts ELSE 0 END, "
			   "next_try = CASE WHEN target = ? THEN next_try ELSE 0 END, target = ? "
			   "WHERE disk = ? AND lease_until <= ? AND (target <> ? OR next_try <= ?)",
			   upd, CVM_ARRAY_SIZE(upd), &c->changes, err);
}

struct done_ctx {
	const char *disk, *result, *message;
	bool ok;
	int64_t now;
};

static int done_tx(struct cvm_tx *tx, void *vctx, struct cvm_err *err)
{
	struct done_ctx *d = vctx;
	_cleanup_rows_ struct cvm_rows *rows = NULL;
	struct cvm_val q[] = { CVM_VAL_S(d->disk) };
	int r = cvm_tx_query(tx, "SELECT attempts FROM disk_autorotate WHERE disk = ?", q, 1, &rows,
			     err);
	if (r < 0)
		return r;
	int64_t attempts = d->ok ? 0 : cvm_rows_int(rows, 0, 0) + 1, wait = RETRY_FIRST;
	for (int64_t i = 1; i < attempts && wait < RETRY_MAX; i++)
		wait *= 2;
	struct cvm_val p[] = { CVM_VAL_S(d->result), CVM_VAL_S(d->message), CVM_VAL_I(attempts),
			       CVM_VAL_I(d->ok ? 0 : d->now + (wait < RETRY_MAX ? wait : RETRY_MAX)),
			       CVM_VAL_I(d->now), CVM_VAL_S(d->disk) };
	return cvm_tx_exec(tx, "UPDATE disk_autorotate SET result = ?, message = ?, attempts = ?, "
			   "next_try = ?, lease_until = 0, updated = ? WHERE disk = ?",
			   p, CVM_ARRAY_SIZE(p), NULL, err);
}

struct kid_ctx {
	const char *disk, *old_kid, *new_kid;
	int64_t now;
};

/* The registry follows the image, unless someone changed the record meanwhile. */
static int kid_tx(struct cvm_tx *tx, void *vctx, struct cvm_err *err)
{
	struct kid_ctx *k = vctx;
	struct cvm_val p[] = { CVM_VAL_S(k->new_kid), CVM_VAL_I(k->now), CVM_VAL_S(k->disk),
			       CVM_VAL_S(k->old_kid) };
	return cvm_tx_exec(tx, "UPDATE disks SET kid = ?, updated = ? WHERE name = ? AND kid = ?",
			   p, CVM_ARRAY_SIZE(p), NULL, err);
}

struct des_sum {
	const char *des, *version;
	unsigned rotated, failed;
	char message[512];
	int64_t now;
};

static int des_tx(struct cvm_tx *tx, void *vctx, struct cvm_err *err)
{
	struct des_sum *s = vctx;
	struct cvm_val p[] = { CVM_VAL_S(s->des), CVM_VAL_I(s->now), CVM_VAL_S(s->version),
			       CVM_VAL_I(s->rotated), CVM_VAL_I(s->failed),
			       CVM_VAL_S(s->message[0] ? s->message : NULL) };
	return cvm_tx_exec(tx, "INSERT INTO des_autorotate (des, at, key_version, rotated, failed, "
			   "message) VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT (des) DO UPDATE SET "
			   "at = excluded.at, key_version = excluded.key_version, "
			   "rotated = excluded.rotated, failed = excluded.failed, "
			   "message = excluded.message",
			   p, CVM_ARRAY_SIZE(p), NULL, err);
}

/* ---- one disk ------------------------------------------------------------------------------ */

struct pass {
	const struct cvm_disk_autorotate_config *cfg;
	const struct cvm_des *des;
	struct key_ref key;   /* the DES key */
	const char *latest;   /* versioned kid of the latest version */
	int64_t now;
	struct des_sum sum;
};

static void audit_disk(struct pass *p, const struct cvm_disk_rec *rec, const char *request_id,
		       int r, const struct cvm_err *e)
{
	const char *old_v = version_of(rec->kid), *new_v = version_of(p->latest);
	_cleanup_json_ json_t *d = json_pack("{s:s,s:s,s:s,s:s?,s:s?}", "des", p->des->name,
					     "disk", rec->name, "trigger", "auto", "oldVersion",
					     old_v, "newVersion", new_v);
	if (d && r < 0)
		json_object_set_new(d, "message", cvm_json_string_lossy(e->msg));
	_cleanup_free_ char *detail = d ? cvm_json_dump(d) : NULL;
	int status = r < 0 ? cvm_err_http_status(e) : 200;
	struct cvm_audit_event ev = {
		.principal = p->des->identity,
		.operation = "disks/rotate",
		.key_name = p->key.name,
		.key_version = new_v,
		.status = status,
		.result = r < 0 ? (e->code[0] ? e->code : "error") : "ok",
		.request_id = request_id,
		.source = AUTO_PRINCIPAL,
		.detail = detail,
	};
	struct cvm_err aerr = { 0 };
	if (cvm_audit_append(p->cfg->audit, &ev, NULL, &aerr) < 0)
		cvm_log_error("audit_append_failed", "op=disks/rotate disk=%s error=\"%s\"",
			      rec->name, aerr.msg);
}

/* Re-wrap one image for p->latest as the DES identity, then let the registry follow. */
static int rotate_one(struct pass *p, const struct cvm_disk_rec *rec, const char *request_id,
		      struct cvm_err *err)
{
	const struct identity id = { .hsm = p->cfg->hsm, .oid = p->des->identity,
				     .base_url = p->key.origin, .request_id = request_id };
	const struct cvm_disk_keywrap kw = { .wrap = id_wrap, .unwrap = id_unwrap,
					     .ctx = (void *)&id };
	/* The role first: a refused identity is refused whatever state the image is in. */
	int r = identity_may(&id, p->key.name, "POST", "keys/unwrapkey", err);
	if (r == 0)
		r = identity_may(&id, p->key.name, "POST", "keys/wrapkey", err);
	if (r < 0)
		return cvm_err_prefix(err, "identity %s of disk encryption set %s (needs the Crypto "
					   "Service Encryption User role on the key)",
				      p->des->identity, p->des->name);
	bool changed = false;
	if ((r = cvm_disk_rotate_to(rec->path, &kw, p->latest, p->des->alg, &changed, err)) < 0)
		return r;
	_cleanup_(cvm_disk_info_clear) struct cvm_disk_info info = { 0 };
	if ((r = cvm_disk_info(rec->path, &info, err)) < 0)
		return r;
	if (!info.has_hsm_token || !same_version(info.hsm.key_url, p->latest))
		return cvm_err_internal(err, "%s: the token does not name %s after the re-wrap",
					rec->path, p->latest);
	struct kid_ctx k = { .disk = rec->name, .old_kid = rec->kid, .new_kid = info.hsm.key_url,
			     .now = p->now };
	if ((r = cvm_store_transact(p->cfg->store, CVM_TX_WRITE, kid_tx, &k, err)) < 0)
		return r;
	cvm_log_info("disk_autorotated", "disk=%s des=%s kid=%s rewrapped=%s", rec->name,
		     p->des->name, info.hsm.key_url, changed ? "yes" : "no (already current)");
	return 0;
}

static int do_disk(struct pass *p, const struct cvm_disk_rec *rec, struct cvm_err *err)
{
	struct claim_ctx c = { .disk = rec->name, .target = p->latest, .now = p->now };
	int r = cvm_store_transact(p->cfg->store, CVM_TX_WRITE, claim_tx, &c, err);
	if (r < 0 || c.changes != 1)
		return r < 0 ? r : 0; /* another process has it, or its retry time has not come */
	char request_id[37] = "";
	(void)cvm_uuid4(request_id, NULL);
	struct cvm_err e = { 0 };
	r = rotate_one(p, rec, request_id, &e);
	if (r < 0)
		cvm_log_warn("disk_autorotate_failed", "disk=%s des=%s code=%s error=\"%s\"",
			     rec->name, p->des->name, e.code, e.msg);
	audit_disk(p, rec, request_id, r, &e);
	if (r < 0) {
		if (!p->sum.failed++)
			snprintf(p->sum.message, sizeof(p->sum.message), "%s: %s", rec->name, e.msg);
	} else {
		p->sum.rotated++;
	}
	struct done_ctx d = { .disk = rec->name, .ok = r == 0, .now = p->now,
			      .result = r < 0 ? (e.code[0] ? e.code : "error") : "ok",
			      .message = r < 0 ? e.msg : NULL };
	int w = cvm_store_transact(p->cfg->store, CVM_TX_WRITE, done_tx, &d, err);
	return w < 0 ? w : 1;
}

/* ---- one DES ------------------------------------------------------------------------------- */

/* The latest version of the DES key, read by cvmd itself to decide whether there is work
 * (metadata only; every use of the key below goes through the identity's RBAC check). */
static int latest_kid(struct pass *p, char **kid, struct cvm_err *err)
{
	const struct cvm_hsm_caller c = { .principal = AUTO_PRINCIPAL, .source = AUTO_PRINCIPAL,
					  .base_url = p->key.origin };
	_cleanup_json_ json_t *bundle = NULL;
	int r = cvm_hsm_key_get(p->cfg->hsm, &c, p->key.name, NULL, &bundle, err);
	if (r < 0)
		return r;
	const char *k = json_string_value(cvm_json_path(bundle, "key.kid"));
	if (!k || !cvm_disk_key_url_valid(k, true))
		return cvm_err_internal(err, "key %s: no versioned kid", p->key.name);
	*kid = strdup(k);
	return *kid ? 0 : cvm_err_nomem(err);
}

static int do_des(const struct cvm_disk_autorotate_config *cfg, const struct cvm_des *des,
		  int64_t now, struct cvm_err *err)
{
	struct pass p = { .cfg = cfg, .des = des, .now = now };
	_cleanup_free_ char *latest = NULL;
	int r = key_ref_parse(des->key_url, &p.key, err);
	if (r == 0 && (r = latest_kid(&p, &latest, err)) == -ENOENT) {
		/* The key is deleted (soft-deleted keys included): no version to follow. Said once
		 * per tick at debug level; unlocking the set's disks fails loudly elsewhere. */
		cvm_log_debug("des_autorotate_no_key", "des=%s key=%s", des->name, p.key.name);
		return 0;
	}
	if (r < 0)
		return r;
	p.latest = latest;
	struct cvm_disk_rec *list = NULL;
	size_t n = 0;
	if ((r = cvm_disk_rec_list(cfg->store, des->name, &list, &n, err)) < 0)
		return r;
	int done = 0;
	for (size_t i = 0; i < n && r >= 0; i++) {
		if (!list[i].kid || same_version(list[i].kid, latest))
			continue;
		int d = do_disk(&p, &list[i], err);
		if (d < 0)
			r = d;
		else
			done += d;
	}
	cvm_disk_rec_list_free(list, n);
	if (r < 0)
		return r;
	if (done) {
		p.sum.des = des->name;
		p.sum.version = version_of(latest);
		p.sum.now = now;
		if ((r = cvm_store_transact(cfg->store, CVM_TX_WRITE, des_tx, &p.sum, err)) < 0)
			return r;
	}
	return done;
}

int cvm_disk_autorotate_tick(const struct cvm_disk_autorotate_config *cfg, int64_t now,
			     struct cvm_err *err)
{
	if (!cfg || !cfg->store || !cfg->hsm || !cfg->audit)
		return cvm_err_badparam(err, "autorotate: store, hsm and audit are required");
	if (!cvm_hsm_activated(cfg->hsm))
		return 0;
	int r = ensure_schema(cfg->store, err);
	if (r < 0)
		return r;
	struct cvm_des *sets = NULL;
	size_t n = 0;
	if ((r = cvm_des_list(cfg->store, &sets, &n, err)) < 0)
		return r;
	int done = 0, failed = 0;
	struct cvm_err first = { 0 };
	for (size_t i = 0; i < n; i++) {
		if (!cvm_des_follows_latest(&sets[i]))
			continue; /* a pinned version is the operator's choice: never moved */
		struct cvm_err e = { 0 };
		int d = do_des(cfg, &sets[i], now, &e);
		if (d < 0) {
			/* One set (a deleted key, a store hiccup) must not stop the others. */
			cvm_log_warn("des_autorotate_failed", "des=%s code=%s error=\"%s\"",
				     sets[i].name, e.code, e.msg);
			if (!failed++)
				first = e;
			continue;
		}
		done += d;
	}
	cvm_des_list_free(sets, n);
	if (failed && !done) {
		*err = first;
		return -first.errnum;
	}
	return done;
}

int cvm_des_autorotation_get(struct cvm_store *s, const char *des,
			     struct cvm_des_autorotation *out, struct cvm_err *err)
{
	memset(out, 0, sizeof(*out));
	int r = ensure_schema(s, err);
	if (r < 0)
		return r;
	_cleanup_tx_ struct cvm_tx *tx = NULL;
	_cleanup_rows_ struct cvm_rows *rows = NULL;
	struct cvm_val p[] = { CVM_VAL_S(des) };
	if ((r = cvm_tx_begin(s, CVM_TX_READ, &tx, err)) < 0 ||
	    (r = cvm_tx_query(tx, "SELECT at, key_version, rotated, failed, message FROM "
			      "des_autorotate WHERE des = ?",
			      p, 1, &rows, err)) < 0)
		return r;
	if (cvm_rows_count(rows) == 0)
		return 0;
	out->present = true;
	out->at = cvm_rows_int(rows, 0, 0);
	snprintf(out->key_version, sizeof(out->key_version), "%s", cvm_rows_text(rows, 0, 1) ?: "");
	out->rotated = (unsigned)cvm_rows_int(rows, 0, 2);
	out->failed = (unsigned)cvm_rows_int(rows, 0, 3);
	snprintf(out->message, sizeof(out->message), "%s", cvm_rows_text(rows, 0, 4) ?: "");
	return 0;
}
