/* SPDX-License-Identifier: Apache-2.0 */
/* Rotation: the per-key rotation policy (Key Vault KeyRotationPolicy), manual rotate, and the
 * scheduler tick that carries out due rotations, expiry notifications and scheduled purges.
 *
 * Policy rules (as Key Vault documents them): attributes.expiryTime >= P28D; at most one Rotate
 * and one Notify action; each trigger has exactly one of timeAfterCreate / timeBeforeExpiry,
 * each >= P7D; Notify only with timeBeforeExpiry; with an expiryTime E, a rotation must come at
 * least 7 days before expiry (timeAfterCreate <= E - P7D, timeBeforeExpiry <= E - P7D). */
#include "hsm-internal.h"

#include <stdio.h>
#include <string.h>
#include <strings.h>

#define DAY 86400
#define MIN_TRIGGER (7 * DAY)
#define MIN_EXPIRY (28 * DAY)

int64_t cvm_hsm_policy_expiry(json_t *policy)
{
	json_t *a = json_object_get(policy, "attributes");
	const char *e = json_string_value(json_object_get(a, "expiryTime"));
	int64_t s = 0;
	struct cvm_err err = {0};
	if (!e || cvm_duration_parse(e, &s, "expiryTime", &err) < 0)
		return 0;
	return s;
}

/* One validated action. */
struct action {
	bool rotate;          /* else notify */
	bool after_create;    /* else before expiry */
	int64_t secs;
	const char *dur;      /* as given */
};

static int parse_action(json_t *la, size_t i, struct action *a, struct cvm_err *err)
{
	char path[96];
	snprintf(path, sizeof(path), "lifetimeActions[%zu]", i);
	if (!json_is_object(la))
		return cvm_err_badparam(err, "%s: expected an object", path);
	json_t *trig, *act;
	const char *type, *tac = NULL, *tbe = NULL;
	char p2[128], p3[128];
	snprintf(p2, sizeof(p2), "%s.trigger", path);
	snprintf(p3, sizeof(p3), "%s.action", path);
	int r;
	if ((r = cvm_json_obj(la, "trigger", p2, true, &trig, err)) < 0 ||
	    (r = cvm_json_obj(la, "action", p3, true, &act, err)) < 0)
		return r;
	snprintf(p3, sizeof(p3), "%s.action.type", path);
	if ((r = cvm_json_str(act, "type", p3, true, &type, NULL, err)) < 0)
		return r;
	if (!strcasecmp(type, "rotate"))
		a->rotate = true;
	else if (!strcasecmp(type, "notify"))
		a->rotate = false;
	else
		return cvm_err_badparam(err, "%s: expected Rotate or Notify, got '%.32s'", p3, type);
	char pa[128], pb[128];
	snprintf(pa, sizeof(pa), "%s.trigger.timeAfterCreate", path);
	snprintf(pb, sizeof(pb), "%s.trigger.timeBeforeExpiry", path);
	if ((r = cvm_json_str(trig, "timeAfterCreate", pa, false, &tac, NULL, err)) < 0 ||
	    (r = cvm_json_str(trig, "timeBeforeExpiry", pb, false, &tbe, NULL, err)) < 0)
		return r;
	if (!!tac == !!tbe)
		return cvm_err_badparam(err, "%s: exactly one of timeAfterCreate and "
					     "timeBeforeExpiry is required",
					p2);
	a->after_create = tac != NULL;
	a->dur = tac ? tac : tbe;
	const char *dpath = tac ? pa : pb;
	if ((r = cvm_duration_parse(a->dur, &a->secs, dpath, err)) < 0)
		return r;
	if (a->secs < MIN_TRIGGER)
		return cvm_err_badparam(err, "%s: must be at least P7D, got %s", dpath, a->dur);
	if (!a->rotate && a->after_create)
		return cvm_err_badparam(err, "%s: Notify actions only support timeBeforeExpiry", pa);
	return 0;
}

/* Validate a PUT body into the stored form (created kept from prev). */
static int parse_policy(json_t *body, json_t *prev, int64_t now, json_t **out,
			struct cvm_err *err)
{
	if (!body || !json_is_object(body))
		return cvm_err_badparam(err, "body: expected a JSON object");
	json_t *las, *attrs;
	const char *expiry = NULL;
	int64_t esecs = 0;
	int r;
	if ((r = cvm_json_arr(body, "lifetimeActions", "lifetimeActions", false, &las, err)) < 0 ||
	    (r = cvm_json_obj(body, "attributes", "attributes", false, &attrs, err)) < 0 ||
	    (attrs && (r = cvm_json_str(attrs, "expiryTime", "attributes.expiryTime", false, &expiry,
					NULL, err)) < 0))
		return r;
	if (expiry) {
		if ((r = cvm_duration_parse(expiry, &esecs, "attributes.expiryTime", err)) < 0)
			return r;
		if (esecs < MIN_EXPIRY)
			return cvm_err_badparam(err, "attributes.expiryTime: must be at least P28D, "
						     "got %s",
						expiry);
	}
	size_t n = las ? json_array_size(las) : 0;
	if (n > 2)
		return cvm_err_badparam(err, "lifetimeActions: at most one Rotate and one Notify "
					     "action allowed");
	_cleanup_json_ json_t *arr = json_array();
	if (!arr)
		return cvm_err_nomem(err);
	bool seen_rotate = false, seen_notify = false;
	for (size_t i = 0; i < n; i++) {
		struct action a = {0};
		if ((r = parse_action(json_array_get(las, i), i, &a, err)) < 0)
			return r;
		if ((a.rotate && seen_rotate) || (!a.rotate && seen_notify))
			return cvm_err_badparam(err, "lifetimeActions[%zu]: only one %s action is "
						     "allowed",
						i, a.rotate ? "Rotate" : "Notify");
		seen_rotate |= a.rotate;
		seen_notify |= !a.rotate;
		if (esecs && a.secs > esecs - MIN_TRIGGER)
			return cvm_err_badparam(err, "lifetimeActions[%zu].trigger.%s: must be at most "
						     "attributes.expiryTime minus P7D",
						i, a.after_create ? "timeAfterCreate" :
								    "timeBeforeExpiry");
		json_t *e = json_pack("{s:{s:s},s:{s:s}}", "trigger",
				      a.after_create ? "timeAfterCreate" : "timeBeforeExpiry", a.dur,
				      "action", "type", a.rotate ? "Rotate" : "Notify");
		if (!e || json_array_append_new(arr, e))
			return cvm_err_nomem(err);
	}
	json_t *pa = prev ? json_object_get(prev, "attributes") : NULL;
	json_t *pc = pa ? json_object_get(pa, "created") : NULL;
	int64_t created = json_is_integer(pc) ? json_integer_value(pc) : now;
	_cleanup_json_ json_t *a = json_pack("{s:I,s:I}", "created", (json_int_t)created, "updated",
					     (json_int_t)now);
	if (!a || (expiry && json_object_set_new(a, "expiryTime", json_string(expiry))))
		return cvm_err_nomem(err);
	*out = json_pack("{s:O,s:O}", "lifetimeActions", arr, "attributes", a);
	return *out ? 0 : cvm_err_nomem(err);
}

static int policy_response(const struct cvm_hsm_caller *c, const char *name, json_t *stored,
			   json_t **out, struct cvm_err *err)
{
	_cleanup_free_ char *id = cvm_asprintf("%s/keys/%s/rotationpolicy", cvm_hsm_base_url(c),
					       name);
	if (!id)
		return cvm_err_nomem(err);
	json_t *res;
	if (stored)
		res = json_pack("{s:s,s:O,s:O}", "id", id, "lifetimeActions",
				json_object_get(stored, "lifetimeActions"), "attributes",
				json_object_get(stored, "attributes"));
	else /* Key Vault's default when no policy was set: notify 30 days before expiry */
		res = json_pack("{s:s,s:[{s:{s:s},s:{s:s}}],s:{}}", "id", id, "lifetimeActions",
				"trigger", "timeBeforeExpiry", "P30D", "action", "type", "Notify",
				"attributes");
	if (!res)
		return cvm_err_nomem(err);
	*out = res;
	return 0;
}

/* Stored policy of a non-deleted key (NULL when none). */
static int load_policy(struct cvm_hsm *h, const char *name, json_t **policy, struct cvm_err *err)
{
	char id[CVM_HSM_NAME_MAX + 1];
	int r = cvm_hsm_name_id(name, id, err);
	if (r < 0)
		return r;
	_cleanup_tx_ struct cvm_tx *tx = NULL;
	_cleanup_rows_ struct cvm_rows *rows = NULL;
	struct cvm_val p[] = { CVM_VAL_S(id) };
	if ((r = cvm_tx_begin(h->store, CVM_TX_READ, &tx, err)) < 0 ||
	    (r = cvm_tx_query(tx, "SELECT rotation_policy FROM hsm_keys WHERE name = ? AND "
				  "deleted = 0",
			      p, 1, &rows, err)) < 0 ||
	    (r = cvm_tx_commit(CVM_TAKE(tx), err)) < 0)
		return r;
	if (cvm_rows_count(rows) != 1)
		return cvm_hsm_err_key_not_found(err, name);
	const char *s = cvm_rows_text(rows, 0, 0);
	*policy = s ? json_loads(s, 0, NULL) : NULL;
	if (s && !*policy)
		return cvm_err_internal(err, "hsm_keys: malformed rotation_policy for %s", name);
	return 0;
}

int cvm_hsm_rotation_policy_get(struct cvm_hsm *h, const struct cvm_hsm_caller *c,
				const char *name, json_t **out, struct cvm_err *err)
{
	int active = cvm_hsm_check_active(h, err);
	if (active < 0)
		return active;
	_cleanup_json_ json_t *pol = NULL;
	int r = load_policy(h, name, &pol, err);
	if (r < 0)
		return r;
	return policy_response(c, name, pol, out, err);
}

struct put_ctx {
	const char *name;
	const char *text;
};

static int put_tx(struct cvm_tx *tx, void *vctx, struct cvm_err *err)
{
	struct put_ctx *p = vctx;
	int64_t changes = 0;
	struct cvm_val v[] = { CVM_VAL_S(p->text), CVM_VAL_S(p->name) };
	int r = cvm_tx_exec(tx, "UPDATE hsm_keys SET rotation_policy = ? WHERE name = ? AND "
				"deleted = 0",
			    v, 2, &changes, err);
	if (r < 0)
		return r;
	return changes == 1 ? 0 : cvm_hsm_err_key_not_found(err, p->name);
}

int cvm_hsm_rotation_policy_put(struct cvm_hsm *h, const struct cvm_hsm_caller *c,
				const char *name, json_t *body, json_t **out, struct cvm_err *err)
{
	int active = cvm_hsm_check_active(h, err);
	if (active < 0)
		return active;
	_cleanup_json_ json_t *prev = NULL, *pol = NULL;
	int r = load_policy(h, name, &prev, err);
	if (r < 0 || (r = parse_policy(body, prev, cvm_now(), &pol, err)) < 0)
		return r;
	_cleanup_free_ char *text = cvm_json_dump(pol);
	if (!text)
		return cvm_err_nomem(err);
	char id[CVM_HSM_NAME_MAX + 1];
	if ((r = cvm_hsm_name_id(name, id, err)) < 0)
		return r;
	struct put_ctx p = { .name = id, .text = text };
	if ((r = cvm_store_transact(h->store, CVM_TX_WRITE, put_tx, &p, err)) < 0)
		return r;
	cvm_hsm_log("key_rotation_policy", c, name, NULL);
	return policy_response(c, name, pol, out, err);
}

/* ---- rotate ------------------------------------------------------------------------------------ */

static int generate_like(const struct cvm_hsm_keyver *kv, struct cvm_key **k, struct cvm_err *err)
{
	switch (kv->type) {
	case CVM_KTY_RSA: {
		json_t *e = json_object_get(kv->public_jwk, "e");
		unsigned long pe = 0;
		_cleanup_free_ uint8_t *eb = NULL;
		size_t elen = 0;
		if (json_is_string(e) &&
		    cvm_b64url_decode(json_string_value(e), json_string_length(e), &eb, &elen, "e",
				      err) == 0 &&
		    elen <= sizeof(unsigned long) - 1)
			for (size_t i = 0; i < elen; i++)
				pe = pe << 8 | eb[i];
		return cvm_key_generate_rsa(kv->key_size, pe, k, err);
	}
	case CVM_KTY_EC: return cvm_key_generate_ec(kv->crv, k, err);
	case CVM_KTY_OCT: return cvm_key_generate_oct(kv->key_size, k, err);
	}
	return cvm_err_internal(err, "unknown key type");
}

int cvm_hsm_rotate_at(struct cvm_hsm *h, const struct cvm_hsm_caller *c, const char *name,
		      const char *expect, int64_t now, char version_out[33], struct cvm_err *err)
{
	_cleanup_keyver_ struct cvm_hsm_keyver *cur = NULL;
	_cleanup_key_ struct cvm_key *k = NULL;
	int r = cvm_hsm_keyver_get(h, name, NULL, false, &cur, err);
	if (r < 0)
		return r;
	if (expect && strcmp(expect, cur->version))
		return cvm_err_set(err, EALREADY, "Conflict", "key %s was rotated meanwhile", name);
	if ((r = generate_like(cur, &k, err)) < 0)
		return r;
	struct cvm_hsm_newver nv = {
		.name = cur->name,
		.enabled = true,
		.exportable = cur->exportable,
		.now = now,
		.expect_current = cur->version,
		.key_ops = json_deep_copy(cur->key_ops),
		.tags = cur->tags ? json_deep_copy(cur->tags) : NULL,
	};
	if (!nv.key_ops || (cur->tags && !nv.tags)) {
		cvm_hsm_newver_clear(&nv);
		return cvm_err_nomem(err);
	}
	/* release_policy stays NULL: the insert inherits the current version's policy. */
	r = cvm_hsm_newver_from_key(h, &nv, cur->kty, k, err);
	if (r == 0)
		r = cvm_hsm_version_insert(h, &nv, err);
	if (r == 0) {
		snprintf(version_out, 33, "%s", nv.version);
		cvm_hsm_log("key_rotate", c, name, nv.version);
	}
	cvm_hsm_newver_clear(&nv);
	return r;
}

int cvm_hsm_key_rotate(struct cvm_hsm *h, const struct cvm_hsm_caller *c, const char *name,
		       json_t **out, struct cvm_err *err)
{
	int active = cvm_hsm_check_active(h, err);
	if (active < 0)
		return active;
	char version[33];
	int r = cvm_hsm_check_name(name, err);
	if (r < 0 || (r = cvm_hsm_rotate_at(h, c, name, NULL, cvm_now(), version, err)) < 0)
		return r;
	return cvm_hsm_key_get(h, c, name, version, out, err);
}

/* ---- scheduler -------------------------------------------------------------------------------- */

static bool trigger_due(json_t *la, int64_t created, bool has_exp, int64_t exp, int64_t now,
			bool *rotate)
{
	json_t *trig = json_object_get(la, "trigger");
	const char *type = json_string_value(json_object_get(json_object_get(la, "action"), "type"));
	const char *tac = json_string_value(json_object_get(trig, "timeAfterCreate"));
	const char *tbe = json_string_value(json_object_get(trig, "timeBeforeExpiry"));
	struct cvm_err e = {0};
	int64_t s;
	if (!type)
		return false;
	*rotate = strcmp(type, "Rotate") == 0;
	if (tac && cvm_duration_parse(tac, &s, "timeAfterCreate", &e) == 0)
		return now >= created + s;
	if (tbe && has_exp && cvm_duration_parse(tbe, &s, "timeBeforeExpiry", &e) == 0)
		return now >= exp - s;
	return false;
}

struct notify_ctx {
	const char *name;
	const char *version;
	int64_t changes;
};

static int notify_tx(struct cvm_tx *tx, void *vctx, struct cvm_err *err)
{
	struct notify_ctx *n = vctx;
	n->changes = 0;
	struct cvm_val p[] = { CVM_VAL_S(n->version), CVM_VAL_S(n->name), CVM_VAL_S(n->version),
			       CVM_VAL_S(n->version) };
	return cvm_tx_exec(tx, "UPDATE hsm_keys SET notified_version = ? WHERE name = ? AND "
			       "deleted = 0 AND current_version = ? AND "
			       "(notified_version IS NULL OR notified_version <> ?)",
			   p, 4, &n->changes, err);
}

/* Due actions of one key; returns the number done. */
static int tick_key(struct cvm_hsm *h, const struct cvm_rows *rows, size_t i, int64_t now,
		    struct cvm_err *err)
{
	const char *name = cvm_rows_text(rows, i, 0);
	const char *cur = cvm_rows_text(rows, i, 1);
	_cleanup_json_ json_t *pol = json_loads(cvm_rows_text(rows, i, 2), 0, NULL);
	int64_t created = cvm_rows_int(rows, i, 3);
	bool has_exp = !cvm_rows_null(rows, i, 4);
	int64_t exp = cvm_rows_int(rows, i, 4);
	if (!name || !cur || !pol)
		return 0;
	json_t *las = json_object_get(pol, "lifetimeActions");
	size_t k;
	json_t *la;
	bool rotate_due = false, notify_due = false;
	json_array_foreach(las, k, la) {
		bool is_rotate;
		if (trigger_due(la, created, has_exp, exp, now, &is_rotate)) {
			rotate_due |= is_rotate;
			notify_due |= !is_rotate;
		}
	}
	if (rotate_due) {
		char version[33];
		struct cvm_hsm_caller sched = { .principal = "scheduler" };
		int r = cvm_hsm_rotate_at(h, &sched, name, cur, now, version, err);
		if (r == -EALREADY || r == -ENOENT || r == -EEXIST)
			return 0; /* another node rotated, or the key went away meanwhile */
		if (r < 0)
			return r;
		return 1;
	}
	if (notify_due) {
		struct notify_ctx n = { .name = name, .version = cur };
		int r = cvm_store_transact(h->store, CVM_TX_WRITE, notify_tx, &n, err);
		if (r < 0)
			return r;
		if (n.changes == 1) {
			char t[32];
			cvm_time_iso8601(exp, t);
			cvm_log_warn("key_near_expiry", "name=%s version=%s exp=%s", name, cur, t);
			return 1;
		}
	}
	return 0;
}

int cvm_hsm_tick(struct cvm_hsm *h, int64_t now, struct cvm_err *err)
{
	int done = cvm_hsm_purge_due(h, now, err);
	if (done < 0)
		return done;
	if (!cvm_hsm_activated(h))
		return done;
	_cleanup_tx_ struct cvm_tx *tx = NULL;
	_cleanup_rows_ struct cvm_rows *rows = NULL;
	int r;
	if ((r = cvm_tx_begin(h->store, CVM_TX_READ, &tx, err)) < 0 ||
	    (r = cvm_tx_query(tx, "SELECT k.name, k.current_version, k.rotation_policy, v.created, "
				  "v.exp FROM hsm_keys k JOIN hsm_key_versions v ON v.name = k.name "
				  "AND v.version = k.current_version WHERE k.deleted = 0 AND "
				  "k.rotation_policy IS NOT NULL ORDER BY k.name",
			      NULL, 0, &rows, err)) < 0 ||
	    (r = cvm_tx_commit(CVM_TAKE(tx), err)) < 0)
		return r;
	int failed = 0;
	struct cvm_err first = {0};
	for (size_t i = 0; i < cvm_rows_count(rows); i++) {
		struct cvm_err e = {0};
		r = tick_key(h, rows, i, now, &e);
		if (r < 0) {
			/* One broken key must not stop the others: log, go on, report at the end. */
			cvm_log_error("key_rotation_failed", "name=%s code=%s msg=\"%s\"",
				      cvm_rows_text(rows, i, 0), e.code, e.msg);
			if (!failed++)
				first = e;
			continue;
		}
		done += r;
	}
	if (failed) {
		*err = first;
		return -first.errnum;
	}
	return done;
}
