/* SPDX-License-Identifier: Apache-2.0 */
/* Keys and versions: create, import, get, update, list, list versions, random bytes. Request
 * bodies are validated field by field with Key Vault's field names in every message. */
#include "hsm-internal.h"

#include <stdio.h>
#include <string.h>

#include <opencvm/json.h>

#define TAGS_MAX 15
#define TAG_NAME_MAX 512
#define TAG_VALUE_MAX 256
#define TIME_MAX 253402300799LL /* 9999-12-31T23:59:59Z */
#define DEFAULT_CONTENT_TYPE "application/json; charset=utf-8"
#define DEFAULT_API_VERSION "7.5"

static const char *const all_key_ops[] = { "encrypt", "decrypt", "sign", "verify", "wrapKey",
					   "unwrapKey", "import", "export", NULL };

json_t *cvm_hsm_default_key_ops(enum cvm_kty type)
{
	switch (type) {
	case CVM_KTY_RSA:
		return json_pack("[ssssss]", "encrypt", "decrypt", "sign", "verify", "wrapKey",
				 "unwrapKey");
	case CVM_KTY_EC:
		return json_pack("[ss]", "sign", "verify");
	case CVM_KTY_OCT:
		return json_pack("[ssss]", "encrypt", "decrypt", "wrapKey", "unwrapKey");
	}
	return NULL;
}

static bool op_fits_type(const char *op, enum cvm_kty type)
{
	if (!strcmp(op, "import") || !strcmp(op, "export"))
		return true;
	bool crypt = !strcmp(op, "encrypt") || !strcmp(op, "decrypt") || !strcmp(op, "wrapKey") ||
		     !strcmp(op, "unwrapKey");
	bool sig = !strcmp(op, "sign") || !strcmp(op, "verify");
	switch (type) {
	case CVM_KTY_RSA: return crypt || sig;
	case CVM_KTY_EC: return sig;
	case CVM_KTY_OCT: return crypt;
	}
	return false;
}

/* key_ops: allowed names, fitting the key type, duplicates removed (order kept). */
static int parse_key_ops(json_t *obj, const char *field, const char *path, enum cvm_kty type,
			 json_t **out, struct cvm_err *err)
{
	json_t *arr;
	*out = NULL;
	int r = cvm_json_str_array(obj, field, path, false, all_key_ops, &arr, err);
	if (r < 0 || !arr)
		return r;
	_cleanup_json_ json_t *ops = json_array();
	if (!ops)
		return cvm_err_nomem(err);
	size_t i, j;
	json_t *e, *seen;
	json_array_foreach(arr, i, e) {
		const char *op = json_string_value(e);
		if (!op_fits_type(op, type))
			return cvm_err_badparam(err, "%s[%zu]: operation %s does not apply to %s keys",
						path, i, op,
						type == CVM_KTY_RSA ? "RSA" :
						type == CVM_KTY_EC ? "EC" : "oct");
		bool dup = false;
		json_array_foreach(ops, j, seen) dup |= !strcmp(json_string_value(seen), op);
		if (!dup && json_array_append_new(ops, json_string(op)))
			return cvm_err_nomem(err);
	}
	*out = CVM_TAKE(ops);
	return 0;
}

static int parse_tags(json_t *body, json_t **out, struct cvm_err *err)
{
	json_t *t;
	*out = NULL;
	int r = cvm_json_obj(body, "tags", "tags", false, &t, err);
	if (r < 0 || !t)
		return r;
	if (json_object_size(t) > TAGS_MAX)
		return cvm_err_badparam(err, "tags: at most %d tags allowed, got %zu", TAGS_MAX,
					json_object_size(t));
	const char *k;
	json_t *v;
	json_object_foreach(t, k, v) {
		if (!k[0] || strlen(k) > TAG_NAME_MAX)
			return cvm_err_badparam(err, "tags: tag names must have 1..%d characters",
						TAG_NAME_MAX);
		if (!json_is_string(v))
			return cvm_err_badparam(err, "tags.%s: expected a string, got %s", k,
						cvm_json_type_name(v));
		if (json_string_length(v) > TAG_VALUE_MAX)
			return cvm_err_badparam(err, "tags.%s: at most %d characters allowed", k,
						TAG_VALUE_MAX);
	}
	*out = json_deep_copy(t);
	return *out ? 0 : cvm_err_nomem(err);
}

/* release_policy {contentType, data (base64url policy JSON, kept verbatim), immutable}. */
static int parse_release_policy(json_t *body, json_t **out, struct cvm_err *err)
{
	json_t *rp;
	*out = NULL;
	int r = cvm_json_obj(body, "release_policy", "release_policy", false, &rp, err);
	if (r < 0 || !rp)
		return r;
	const char *ct = NULL, *data = NULL;
	bool immutable = false;
	if ((r = cvm_json_str(rp, "contentType", "release_policy.contentType", false, &ct, NULL,
			      err)) < 0 ||
	    (r = cvm_json_str(rp, "data", "release_policy.data", true, &data, NULL, err)) < 0 ||
	    (r = cvm_json_bool(rp, "immutable", "release_policy.immutable", false, &immutable, NULL,
			       err)) < 0)
		return r;
	if (ct && !cvm_str_startswith(ct, "application/json"))
		return cvm_err_badparam(err, "release_policy.contentType: expected "
					     "'application/json; charset=utf-8'");
	_cleanup_free_ uint8_t *raw = NULL;
	size_t rawlen;
	r = cvm_b64url_decode(data, strlen(data), &raw, &rawlen, "release_policy.data", err);
	if (r < 0)
		return r;
	_cleanup_json_ json_t *pol = NULL;
	r = cvm_hsm_release_policy_parse(raw, rawlen, &pol, err);
	if (r < 0)
		return cvm_err_prefix(err, "release_policy.data");
	*out = json_pack("{s:s,s:s,s:b}", "contentType", ct ? ct : DEFAULT_CONTENT_TYPE, "data",
			 data, "immutable", immutable);
	return *out ? 0 : cvm_err_nomem(err);
}

/* attributes {enabled, nbf, exp, exportable}; read-only members are ignored like Key Vault. */
struct attrs {
	bool enabled, has_enabled;
	bool has_nbf, has_exp;
	int64_t nbf, exp;
	bool exportable, has_exportable;
};

static int parse_attrs(json_t *body, struct attrs *a, struct cvm_err *err)
{
	json_t *o;
	int r = cvm_json_obj(body, "attributes", "attributes", false, &o, err);
	if (r < 0 || !o)
		return r;
	if ((r = cvm_json_bool(o, "enabled", "attributes.enabled", false, &a->enabled,
			       &a->has_enabled, err)) < 0 ||
	    (r = cvm_json_int(o, "nbf", "attributes.nbf", false, 0, TIME_MAX, &a->nbf, &a->has_nbf,
			      err)) < 0 ||
	    (r = cvm_json_int(o, "exp", "attributes.exp", false, 0, TIME_MAX, &a->exp, &a->has_exp,
			      err)) < 0 ||
	    (r = cvm_json_bool(o, "exportable", "attributes.exportable", false, &a->exportable,
			       &a->has_exportable, err)) < 0)
		return r;
	if (a->has_nbf && a->has_exp && a->exp <= a->nbf)
		return cvm_err_badparam(err, "attributes.exp: must be later than attributes.nbf");
	return 0;
}

/* Common fields of create and import into nv (key_ops default by type when absent). */
static int parse_version_fields(json_t *body, json_t *ops_obj, const char *ops_path,
				struct cvm_hsm_newver *nv, struct cvm_err *err)
{
	struct attrs a = { .enabled = true };
	int r = parse_attrs(body, &a, err);
	if (r < 0)
		return r;
	nv->enabled = a.has_enabled ? a.enabled : true;
	nv->has_nbf = a.has_nbf;
	nv->nbf = a.nbf;
	nv->has_exp = a.has_exp;
	nv->exp = a.exp;
	nv->exportable = a.has_exportable && a.exportable;
	if ((r = parse_key_ops(ops_obj, "key_ops", ops_path, nv->type, &nv->key_ops, err)) < 0 ||
	    (r = parse_tags(body, &nv->tags, err)) < 0 ||
	    (r = parse_release_policy(body, &nv->release_policy, err)) < 0)
		return r;
	if (!nv->key_ops && !(nv->key_ops = cvm_hsm_default_key_ops(nv->type)))
		return cvm_err_nomem(err);
	if (nv->release_policy && !nv->exportable)
		return cvm_err_badparam(err, "attributes.exportable: a release policy can only be "
					     "set on an exportable key (set attributes.exportable "
					     "to true)");
	return 0;
}

void cvm_hsm_newver_clear(struct cvm_hsm_newver *nv)
{
	json_decref(nv->key_ops);
	json_decref(nv->public_jwk);
	json_decref(nv->tags);
	json_decref(nv->release_policy);
	json_decref(nv->eff_policy);
	cvm_buf_free(&nv->sealed);
	memset(nv, 0, sizeof(*nv));
}

int cvm_hsm_newver_from_key(struct cvm_hsm *h, struct cvm_hsm_newver *nv,
			    const char *kty_reported, const struct cvm_key *k, struct cvm_err *err)
{
	int r = cvm_random_hex32(nv->version, err);
	if (r < 0)
		return r;
	snprintf(nv->kty, sizeof(nv->kty), "%s", kty_reported);
	nv->type = cvm_key_type(k);
	nv->key_size = cvm_key_bits(k);
	const char *crv = cvm_key_curve(k);
	snprintf(nv->crv, sizeof(nv->crv), "%s", crv ? crv : "");
	json_decref(nv->public_jwk);
	nv->public_jwk = NULL;
	if ((r = cvm_key_to_jwk(k, false, &nv->public_jwk, err)) < 0)
		return r;
	json_object_del(nv->public_jwk, "kid");
	json_object_del(nv->public_jwk, "key_ops");
	cvm_buf_free(&nv->sealed);
	pthread_rwlock_rdlock(&h->domain_lock);
	r = cvm_hsm_require_active(h, err);
	if (r == 0)
		r = cvm_hsm_seal_private(h, nv->name, nv->version, k, &nv->sealed, err);
	pthread_rwlock_unlock(&h->domain_lock);
	return r;
}

static char *dump_or_null(json_t *v)
{
	return v ? cvm_json_dump(v) : NULL;
}

static int version_insert_tx(struct cvm_tx *tx, void *vctx, struct cvm_err *err)
{
	struct cvm_hsm_newver *nv = vctx;
	json_decref(nv->eff_policy);
	nv->eff_policy = nv->release_policy ? json_incref(nv->release_policy) : NULL;
	nv->eff_has_exp = nv->has_exp;
	nv->eff_exp = nv->exp;

	struct cvm_val pn[] = { CVM_VAL_S(nv->name) };
	_cleanup_rows_ struct cvm_rows *rows = NULL;
	int r = cvm_tx_query(tx, "SELECT deleted, current_version, rotation_policy FROM hsm_keys "
				 "WHERE name = ?",
			     pn, 1, &rows, err);
	if (r < 0)
		return r;
	bool exists = cvm_rows_count(rows) == 1;
	if (exists && cvm_rows_int(rows, 0, 0))
		return cvm_hsm_err_deleted_conflict(err, nv->display ? nv->display : nv->name);
	const char *cur = exists ? cvm_rows_text(rows, 0, 1) : NULL;
	if (nv->expect_current && (!cur || strcmp(cur, nv->expect_current)))
		return cvm_err_set(err, EALREADY, "Conflict",
				   "key %s: current version changed meanwhile", nv->name);
	if (nv->exportable && !nv->eff_policy && cur) {
		struct cvm_val pv[] = { CVM_VAL_S(nv->name), CVM_VAL_S(cur) };
		_cleanup_rows_ struct cvm_rows *prow = NULL;
		r = cvm_tx_query(tx, "SELECT release_policy FROM hsm_key_versions "
				     "WHERE name = ? AND version = ?",
				 pv, 2, &prow, err);
		if (r < 0)
			return r;
		const char *pt = cvm_rows_text(prow, 0, 0);
		if (pt && !(nv->eff_policy = json_loads(pt, 0, NULL)))
			return cvm_err_internal(err, "hsm_key_versions: malformed release_policy");
	}
	if (nv->exportable && !nv->eff_policy)
		return cvm_err_badparam(err, "release_policy: exportable keys must have a release "
					     "policy (attributes.exportable is true)");
	if (!nv->eff_has_exp && exists && cvm_rows_text(rows, 0, 2)) {
		_cleanup_json_ json_t *pol = json_loads(cvm_rows_text(rows, 0, 2), 0, NULL);
		int64_t expiry = pol ? cvm_hsm_policy_expiry(pol) : 0;
		if (expiry > 0) {
			nv->eff_has_exp = true;
			nv->eff_exp = nv->now + expiry;
		}
	}

	_cleanup_free_ char *ops = cvm_json_dump(nv->key_ops);
	_cleanup_free_ char *jwk = cvm_json_dump(nv->public_jwk);
	_cleanup_free_ char *tags = dump_or_null(nv->tags);
	_cleanup_free_ char *pol = dump_or_null(nv->eff_policy);
	if (!ops || !jwk || (nv->tags && !tags) || (nv->eff_policy && !pol))
		return cvm_err_nomem(err);
	struct cvm_val vals[] = {
		CVM_VAL_S(nv->name),
		CVM_VAL_S(nv->version),
		CVM_VAL_S(nv->kty),
		CVM_VAL_I(nv->key_size),
		nv->crv[0] ? CVM_VAL_S(nv->crv) : CVM_VAL_NIL,
		CVM_VAL_S(ops),
		CVM_VAL_S(jwk),
		CVM_VAL_I(nv->enabled),
		nv->has_nbf ? CVM_VAL_I(nv->nbf) : CVM_VAL_NIL,
		nv->eff_has_exp ? CVM_VAL_I(nv->eff_exp) : CVM_VAL_NIL,
		CVM_VAL_I(nv->exportable),
		CVM_VAL_S(tags),
		CVM_VAL_S(pol),
		CVM_VAL_B(nv->sealed.data, nv->sealed.len),
		CVM_VAL_I(nv->now),
		CVM_VAL_I(nv->now),
	};
	r = cvm_tx_exec(tx,
			"INSERT INTO hsm_key_versions (name, version, kty, key_size, crv, key_ops, "
			"public_jwk, enabled, nbf, exp, exportable, tags, release_policy, sealed, "
			"created, updated) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
			vals, CVM_ARRAY_SIZE(vals), NULL, err);
	if (r < 0)
		return r;
	if (exists) {
		struct cvm_val up[] = { CVM_VAL_S(nv->version), CVM_VAL_I(nv->now),
					CVM_VAL_S(nv->name) };
		return cvm_tx_exec(tx, "UPDATE hsm_keys SET current_version = ?, updated = ?, "
				       "notified_version = NULL WHERE name = ?",
				   up, 3, NULL, err);
	}
	struct cvm_val ins[] = { CVM_VAL_S(nv->name), CVM_VAL_S(nv->display ? nv->display : nv->name),
				 CVM_VAL_S(nv->version), CVM_VAL_I(nv->now), CVM_VAL_I(nv->now) };
	r = cvm_tx_exec(tx, "INSERT INTO hsm_keys (name, display_name, current_version, deleted, "
			    "created, updated) VALUES (?, ?, ?, 0, ?, ?)",
			ins, 5, NULL, err);
	/* Another process created the first version of this name meanwhile (PostgreSQL): retry,
	 * the next attempt sees its row and adds this version on top. */
	if (r == -EEXIST)
		return cvm_err_set(err, EAGAIN, "Conflict", "key %s: created concurrently",
				   nv->name);
	return r;
}

int cvm_hsm_version_insert(struct cvm_hsm *h, struct cvm_hsm_newver *nv, struct cvm_err *err)
{
	return cvm_store_transact(h->store, CVM_TX_WRITE, version_insert_tx, nv, err);
}

/* After a successful insert: the KeyBundle of the new version. */
static int bundle_of(struct cvm_hsm *h, const struct cvm_hsm_caller *c, const char *name,
		     const char *version, json_t **out, struct cvm_err *err)
{
	_cleanup_keyver_ struct cvm_hsm_keyver *kv = NULL;
	int r = cvm_hsm_keyver_get(h, name, version, false, &kv, err);
	if (r < 0)
		return r;
	return cvm_hsm_key_bundle(h, c, kv, out, err);
}

static int gen_key(json_t *body, enum cvm_kty type, const char *kty, struct cvm_key **k,
		   struct cvm_err *err)
{
	int64_t size = 0, pe = 0;
	bool has_size, has_pe;
	const char *crv = NULL;
	bool has_crv;
	int r;
	if ((r = cvm_json_int(body, "key_size", "key_size", false, 0, 16384, &size, &has_size,
			      err)) < 0 ||
	    (r = cvm_json_int(body, "public_exponent", "public_exponent", false, 3, 0xffffffffLL,
			      &pe, &has_pe, err)) < 0 ||
	    (r = cvm_json_str(body, "crv", "crv", false, &crv, &has_crv, err)) < 0)
		return r;
	switch (type) {
	case CVM_KTY_RSA:
		if (has_crv)
			return cvm_err_badparam(err, "crv: not valid for %s keys", kty);
		if (!has_size)
			size = 2048;
		if (size != 2048 && size != 3072 && size != 4096)
			return cvm_err_badparam(err, "key_size: expected 2048, 3072 or 4096 for %s "
						     "keys, got %lld",
						kty, (long long)size);
		if (has_pe && !(pe & 1))
			return cvm_err_badparam(err, "public_exponent: must be odd");
		return cvm_key_generate_rsa((int)size, has_pe ? (unsigned long)pe : 0, k, err);
	case CVM_KTY_EC: {
		if (has_pe)
			return cvm_err_badparam(err, "public_exponent: not valid for %s keys", kty);
		if (!has_crv)
			crv = "P-256";
		int bits = !strcmp(crv, "P-256") ? 256 : !strcmp(crv, "P-384") ? 384 :
			   !strcmp(crv, "P-521") ? 521 : 0;
		if (!strcmp(crv, "P-256K"))
			return cvm_err_set(err, ENOTSUP, "BadParameter",
					   "crv: P-256K is not supported by this HSM (use P-256, "
					   "P-384 or P-521)");
		if (!bits)
			return cvm_err_badparam(err, "crv: expected P-256, P-384 or P-521");
		if (has_size && size != bits)
			return cvm_err_badparam(err, "key_size: %lld does not match crv %s",
						(long long)size, crv);
		return cvm_key_generate_ec(crv, k, err);
	}
	case CVM_KTY_OCT:
		if (has_crv || has_pe)
			return cvm_err_badparam(err, "%s: not valid for %s keys",
						has_crv ? "crv" : "public_exponent", kty);
		if (!has_size)
			size = 256;
		if (size != 128 && size != 192 && size != 256)
			return cvm_err_badparam(err, "key_size: expected 128, 192 or 256 for %s "
						     "keys, got %lld",
						kty, (long long)size);
		return cvm_key_generate_oct((int)size, k, err);
	}
	return cvm_err_badparam(err, "kty: unsupported");
}

static const char *reported_kty(enum cvm_kty type, bool hsm)
{
	switch (type) {
	case CVM_KTY_RSA: return hsm ? "RSA-HSM" : "RSA";
	case CVM_KTY_EC: return hsm ? "EC-HSM" : "EC";
	case CVM_KTY_OCT: return "oct-HSM";
	}
	return "";
}

static int empty_body(json_t **body, json_t **owned, struct cvm_err *err)
{
	if (*body) {
		if (!json_is_object(*body))
			return cvm_err_badparam(err, "body: expected a JSON object");
		return 0;
	}
	*owned = *body = json_object();
	return *body ? 0 : cvm_err_nomem(err);
}

/* Early, cheap refusal of a soft-deleted name before generating key material (an RSA-4096
 * generation takes a while); the insert transaction checks again. */
static int refuse_deleted_name(struct cvm_hsm *h, const char *id, const char *name,
			       struct cvm_err *err)
{
	_cleanup_tx_ struct cvm_tx *tx = NULL;
	_cleanup_rows_ struct cvm_rows *rows = NULL;
	struct cvm_val p[] = { CVM_VAL_S(id) };
	int r;
	if ((r = cvm_tx_begin(h->store, CVM_TX_READ, &tx, err)) < 0 ||
	    (r = cvm_tx_query(tx, "SELECT deleted FROM hsm_keys WHERE name = ?", p, 1, &rows,
			      err)) < 0 ||
	    (r = cvm_tx_commit(CVM_TAKE(tx), err)) < 0)
		return r;
	if (cvm_rows_count(rows) == 1 && cvm_rows_int(rows, 0, 0))
		return cvm_hsm_err_deleted_conflict(err, name);
	return 0;
}

int cvm_hsm_key_create(struct cvm_hsm *h, const struct cvm_hsm_caller *c, const char *name,
		       json_t *body, json_t **out, struct cvm_err *err)
{
	int active = cvm_hsm_check_active(h, err);
	if (active < 0)
		return active;
	static const char *const ktys[] = { "EC", "EC-HSM", "RSA", "RSA-HSM", "oct", "oct-HSM",
					    NULL };
	_cleanup_json_ json_t *owned = NULL;
	char id[CVM_HSM_NAME_MAX + 1];
	int r = cvm_hsm_name_id(name, id, err);
	if (r < 0 || (r = empty_body(&body, &owned, err)) < 0)
		return r;
	const char *kty;
	if ((r = cvm_json_enum(body, "kty", "kty", true, ktys, &kty, err)) < 0)
		return r;
	struct cvm_hsm_newver nv = { .name = id, .display = name, .now = cvm_now() };
	cvm_hsm_kty_type(kty, &nv.type);
	_cleanup_key_ struct cvm_key *k = NULL;
	if ((r = parse_version_fields(body, body, "key_ops", &nv, err)) < 0 ||
	    (r = refuse_deleted_name(h, id, name, err)) < 0 ||
	    (r = gen_key(body, nv.type, kty, &k, err)) < 0 ||
	    (r = cvm_hsm_newver_from_key(h, &nv, reported_kty(nv.type, strstr(kty, "-HSM")), k,
					 err)) < 0 ||
	    (r = cvm_hsm_version_insert(h, &nv, err)) < 0 ||
	    (r = bundle_of(h, c, name, nv.version, out, err)) < 0) {
		cvm_hsm_newver_clear(&nv);
		return r;
	}
	cvm_hsm_log("key_create", c, name, nv.version);
	cvm_hsm_newver_clear(&nv);
	return 0;
}

int cvm_hsm_key_import(struct cvm_hsm *h, const struct cvm_hsm_caller *c, const char *name,
		       json_t *body, json_t **out, struct cvm_err *err)
{
	int active = cvm_hsm_check_active(h, err);
	if (active < 0)
		return active;
	_cleanup_json_ json_t *owned = NULL;
	char id[CVM_HSM_NAME_MAX + 1];
	int r = cvm_hsm_name_id(name, id, err);
	if (r < 0 || (r = empty_body(&body, &owned, err)) < 0)
		return r;
	json_t *jwk;
	bool hsm = false;
	const char *kty;
	if ((r = cvm_json_bool(body, "Hsm", "Hsm", false, &hsm, NULL, err)) < 0 ||
	    (r = cvm_json_obj(body, "key", "key", true, &jwk, err)) < 0 ||
	    (r = cvm_json_str(jwk, "kty", "key.kty", true, &kty, NULL, err)) < 0)
		return r;
	_cleanup_key_ struct cvm_key *k = NULL;
	if ((r = cvm_key_from_jwk(jwk, true, &k, err)) < 0)
		return r;
	struct cvm_hsm_newver nv = { .name = id, .display = name, .now = cvm_now(),
				     .type = cvm_key_type(k) };
	int bits = cvm_key_bits(k);
	if (nv.type == CVM_KTY_RSA && bits != 2048 && bits != 3072 && bits != 4096)
		return cvm_err_badparam(err, "key.n: RSA keys of 2048, 3072 or 4096 bits are "
					     "supported, got %d",
					bits);
	if ((r = parse_version_fields(body, jwk, "key.key_ops", &nv, err)) < 0 ||
	    (r = cvm_hsm_newver_from_key(h, &nv,
					 reported_kty(nv.type, hsm || strstr(kty, "-HSM")), k,
					 err)) < 0 ||
	    (r = cvm_hsm_version_insert(h, &nv, err)) < 0 ||
	    (r = bundle_of(h, c, name, nv.version, out, err)) < 0) {
		cvm_hsm_newver_clear(&nv);
		return r;
	}
	cvm_hsm_log("key_import", c, name, nv.version);
	cvm_hsm_newver_clear(&nv);
	return 0;
}

int cvm_hsm_key_get(struct cvm_hsm *h, const struct cvm_hsm_caller *c, const char *name,
		    const char *version, json_t **out, struct cvm_err *err)
{
	int active = cvm_hsm_check_active(h, err);
	if (active < 0)
		return active;
	return bundle_of(h, c, name, version, out, err);
}

/* ---- update -------------------------------------------------------------------------------------- */

struct update_ctx {
	const char *name;
	const char *version; /* resolved */
	json_t *key_ops;     /* NULL: unchanged */
	struct attrs a;
	json_t *tags;        /* NULL: unchanged */
	bool has_tags;
	json_t *release_policy;
	int64_t now;
};

static int update_tx(struct cvm_tx *tx, void *vctx, struct cvm_err *err)
{
	struct update_ctx *u = vctx;
	struct cvm_val p[] = { CVM_VAL_S(u->name), CVM_VAL_S(u->version) };
	_cleanup_rows_ struct cvm_rows *rows = NULL;
	int r = cvm_tx_query(tx, "SELECT " KV_COLS " FROM hsm_keys k JOIN hsm_key_versions v ON "
				 "v.name = k.name WHERE k.name = ? AND v.version = ?",
			     p, 2, &rows, err);
	if (r < 0)
		return r;
	_cleanup_keyver_ struct cvm_hsm_keyver *kv = NULL;
	if (cvm_rows_count(rows) != 1)
		return cvm_hsm_err_key_not_found(err, u->name);
	if ((r = cvm_hsm_keyver_from_row(rows, 0, &kv, err)) < 0)
		return r;
	if (kv->deleted)
		return cvm_hsm_err_key_not_found(err, u->name);
	if (u->a.has_exportable && u->a.exportable != kv->exportable)
		return cvm_err_badparam(err, "attributes.exportable: cannot be changed after the "
					     "version was created");
	if (u->key_ops) {
		size_t i;
		json_t *e;
		json_array_foreach(u->key_ops, i, e) {
			if (!op_fits_type(json_string_value(e), kv->type))
				return cvm_err_badparam(err, "key_ops[%zu]: operation %s does not "
							     "apply to this key type",
							i, json_string_value(e));
		}
	}
	if (u->release_policy) {
		if (!kv->exportable)
			return cvm_err_badparam(err, "attributes.exportable: a release policy can "
						     "only be set on an exportable key");
		json_t *imm = kv->release_policy ?
				      json_object_get(kv->release_policy, "immutable") : NULL;
		if (json_is_true(imm) && !json_equal(kv->release_policy, u->release_policy))
			return cvm_err_badparam(err, "release_policy: the key's release policy is "
						     "immutable and cannot be changed");
	}
	bool has_nbf = u->a.has_nbf ? true : kv->has_nbf;
	int64_t nbf = u->a.has_nbf ? u->a.nbf : kv->nbf;
	bool has_exp = u->a.has_exp ? true : kv->has_exp;
	int64_t exp = u->a.has_exp ? u->a.exp : kv->exp;
	if (has_nbf && has_exp && exp <= nbf)
		return cvm_err_badparam(err, "attributes.exp: must be later than attributes.nbf");
	_cleanup_free_ char *ops = cvm_json_dump(u->key_ops ? u->key_ops : kv->key_ops);
	json_t *tags = u->has_tags ? u->tags : kv->tags;
	json_t *pol = u->release_policy ? u->release_policy : kv->release_policy;
	_cleanup_free_ char *tags_s = dump_or_null(tags);
	_cleanup_free_ char *pol_s = dump_or_null(pol);
	if (!ops || (tags && !tags_s) || (pol && !pol_s))
		return cvm_err_nomem(err);
	struct cvm_val v[] = {
		CVM_VAL_S(ops),
		CVM_VAL_I(u->a.has_enabled ? u->a.enabled : kv->enabled),
		has_nbf ? CVM_VAL_I(nbf) : CVM_VAL_NIL,
		has_exp ? CVM_VAL_I(exp) : CVM_VAL_NIL,
		CVM_VAL_S(tags_s),
		CVM_VAL_S(pol_s),
		CVM_VAL_I(u->now),
		CVM_VAL_S(u->name),
		CVM_VAL_S(u->version),
	};
	return cvm_tx_exec(tx, "UPDATE hsm_key_versions SET key_ops = ?, enabled = ?, nbf = ?, "
			       "exp = ?, tags = ?, release_policy = ?, updated = ? "
			       "WHERE name = ? AND version = ?",
			   v, CVM_ARRAY_SIZE(v), NULL, err);
}

int cvm_hsm_key_update(struct cvm_hsm *h, const struct cvm_hsm_caller *c, const char *name,
		       const char *version, json_t *body, json_t **out, struct cvm_err *err)
{
	int active = cvm_hsm_check_active(h, err);
	if (active < 0)
		return active;
	_cleanup_json_ json_t *owned = NULL;
	_cleanup_keyver_ struct cvm_hsm_keyver *kv = NULL;
	int r = empty_body(&body, &owned, err);
	if (r < 0 || (r = cvm_hsm_keyver_get(h, name, version, false, &kv, err)) < 0)
		return r;
	struct update_ctx u = { .name = kv->name, .version = kv->version, .now = cvm_now() };
	_cleanup_json_ json_t *ops = NULL, *tags = NULL, *pol = NULL;
	if ((r = parse_attrs(body, &u.a, err)) < 0 ||
	    (r = parse_key_ops(body, "key_ops", "key_ops", kv->type, &ops, err)) < 0 ||
	    (r = parse_tags(body, &tags, err)) < 0 ||
	    (r = parse_release_policy(body, &pol, err)) < 0)
		return r;
	u.key_ops = ops;
	u.tags = tags;
	u.has_tags = json_object_get(body, "tags") != NULL;
	u.release_policy = pol;
	if ((r = cvm_store_transact(h->store, CVM_TX_WRITE, update_tx, &u, err)) < 0)
		return r;
	cvm_hsm_log("key_update", c, kv->name, kv->version);
	return bundle_of(h, c, kv->name, kv->version, out, err);
}

/* ---- lists ---------------------------------------------------------------------------------------- */

int cvm_hsm_page_args(int maxresults, const char *skiptoken, bool hex_version, int *limit,
		      char after[CVM_HSM_NAME_MAX + 1], struct cvm_err *err)
{
	if (maxresults == 0)
		maxresults = CVM_HSM_LIST_MAX;
	if (maxresults < 1 || maxresults > CVM_HSM_LIST_MAX)
		return cvm_err_badparam(err, "maxresults: expected 1..%d, got %d", CVM_HSM_LIST_MAX,
					maxresults);
	*limit = maxresults;
	after[0] = '\0';
	if (!skiptoken || !skiptoken[0])
		return 0;
	_cleanup_free_ uint8_t *raw = NULL;
	size_t len;
	struct cvm_err e2 = {0};
	if (cvm_b64url_decode(skiptoken, strlen(skiptoken), &raw, &len, "$skiptoken", &e2) < 0 ||
	    len == 0 || len > CVM_HSM_NAME_MAX)
		return cvm_err_badparam(err, "$skiptoken: not a token from a previous nextLink");
	for (size_t i = 0; i < len; i++) {
		char ch = (char)raw[i];
		bool ok = hex_version ? ((ch >= '0' && ch <= '9') || (ch >= 'a' && ch <= 'f')) :
					((ch >= '0' && ch <= '9') || (ch >= 'a' && ch <= 'z') ||
					 (ch >= 'A' && ch <= 'Z') || ch == '-');
		if (!ok)
			return cvm_err_badparam(err,
						"$skiptoken: not a token from a previous nextLink");
	}
	memcpy(after, raw, len);
	after[len] = '\0';
	return 0;
}

int cvm_hsm_list_result(const struct cvm_hsm_caller *c, const char *path, const char *api_version,
			int limit, json_t *items, bool more, const char *last, json_t **out,
			struct cvm_err *err)
{
	_cleanup_json_ json_t *res = json_object();
	if (!res || json_object_set_new(res, "value", items))
		return cvm_err_nomem(err);
	json_t *next = json_null();
	if (more) {
		_cleanup_free_ char *tok = cvm_b64url_encode(last, strlen(last));
		if (!tok)
			return cvm_err_nomem(err);
		_cleanup_free_ char *url = cvm_asprintf(
			"%s%s?api-version=%s&$skiptoken=%s&maxresults=%d", cvm_hsm_base_url(c), path,
			api_version && api_version[0] ? api_version : DEFAULT_API_VERSION, tok, limit);
		if (!url)
			return cvm_err_nomem(err);
		next = json_string(url);
	}
	if (json_object_set_new(res, "nextLink", next))
		return cvm_err_nomem(err);
	*out = CVM_TAKE(res);
	return 0;
}

/* KeyItem {kid, attributes, tags}; kid with version only for version lists. */
static int key_item(struct cvm_hsm *h, const struct cvm_hsm_caller *c,
		    const struct cvm_hsm_keyver *kv, bool with_version, json_t **out,
		    struct cvm_err *err)
{
	_cleanup_free_ char *kid = cvm_hsm_kid(c, kv->display, with_version ? kv->version : NULL);
	_cleanup_json_ json_t *it = json_object();
	if (!kid || !it)
		return cvm_err_nomem(err);
	int r = json_object_set_new(it, "kid", json_string(kid));
	r |= json_object_set_new(it, "attributes", cvm_hsm_attributes_json(h, kv));
	if (kv->tags)
		r |= json_object_set(it, "tags", kv->tags);
	if (r)
		return cvm_err_nomem(err);
	*out = CVM_TAKE(it);
	return 0;
}

int cvm_hsm_page_keys(struct cvm_hsm *h, bool deleted, int maxresults, const char *skiptoken,
		      int *limit, struct cvm_rows **rows, struct cvm_err *err)
{
	char after[CVM_HSM_NAME_MAX + 1];
	int r = cvm_hsm_page_args(maxresults, skiptoken, false, limit, after, err);
	if (r < 0)
		return r;
	/* Constant SQL per case: the store caches statements by their text. */
	static const char *const sql[2] = {
		"SELECT " KV_COLS " FROM hsm_keys k JOIN hsm_key_versions v ON "
		"v.name = k.name AND v.version = k.current_version "
		"WHERE k.deleted = 0 AND k.name > ? ORDER BY k.name LIMIT ?",
		"SELECT " KV_COLS " FROM hsm_keys k JOIN hsm_key_versions v ON "
		"v.name = k.name AND v.version = k.current_version "
		"WHERE k.deleted = 1 AND k.name > ? ORDER BY k.name LIMIT ?",
	};
	_cleanup_tx_ struct cvm_tx *tx = NULL;
	struct cvm_val p[] = { CVM_VAL_S(after), CVM_VAL_I(*limit + 1) };
	if ((r = cvm_tx_begin(h->store, CVM_TX_READ, &tx, err)) < 0 ||
	    (r = cvm_tx_query(tx, sql[deleted], p, 2, rows, err)) < 0)
		return r;
	return cvm_tx_commit(CVM_TAKE(tx), err);
}

int cvm_hsm_key_list(struct cvm_hsm *h, const struct cvm_hsm_caller *c, int maxresults,
		     const char *skiptoken, const char *api_version, json_t **out,
		     struct cvm_err *err)
{
	int active = cvm_hsm_check_active(h, err);
	if (active < 0)
		return active;
	int limit;
	_cleanup_rows_ struct cvm_rows *rows = NULL;
	int r = cvm_hsm_page_keys(h, false, maxresults, skiptoken, &limit, &rows, err);
	if (r < 0)
		return r;
	_cleanup_json_ json_t *items = json_array();
	if (!items)
		return cvm_err_nomem(err);
	size_t n = cvm_rows_count(rows);
	bool more = n > (size_t)limit;
	char last[CVM_HSM_NAME_MAX + 1] = "";
	for (size_t i = 0; i < n && i < (size_t)limit; i++) {
		_cleanup_keyver_ struct cvm_hsm_keyver *kv = NULL;
		json_t *it;
		if ((r = cvm_hsm_keyver_from_row(rows, i, &kv, err)) < 0 ||
		    (r = key_item(h, c, kv, false, &it, err)) < 0)
			return r;
		if (json_array_append_new(items, it))
			return cvm_err_nomem(err);
		snprintf(last, sizeof(last), "%s", kv->name);
	}
	return cvm_hsm_list_result(c, "/keys", api_version, limit, CVM_TAKE(items), more, last, out,
				   err);
}

int cvm_hsm_key_versions(struct cvm_hsm *h, const struct cvm_hsm_caller *c, const char *name,
			 int maxresults, const char *skiptoken, const char *api_version,
			 json_t **out, struct cvm_err *err)
{
	int active = cvm_hsm_check_active(h, err);
	if (active < 0)
		return active;
	int limit = 0;
	char after[CVM_HSM_NAME_MAX + 1];
	_cleanup_keyver_ struct cvm_hsm_keyver *cur = NULL;
	int r = cvm_hsm_page_args(maxresults, skiptoken, true, &limit, after, err);
	if (r < 0 || (r = cvm_hsm_keyver_get(h, name, NULL, false, &cur, err)) < 0)
		return r;
	_cleanup_rows_ struct cvm_rows *rows = NULL;
	_cleanup_tx_ struct cvm_tx *tx = NULL;
	struct cvm_val p[] = { CVM_VAL_S(cur->name), CVM_VAL_S(after), CVM_VAL_I(limit + 1) };
	if ((r = cvm_tx_begin(h->store, CVM_TX_READ, &tx, err)) < 0 ||
	    (r = cvm_tx_query(tx, "SELECT " KV_COLS " FROM hsm_keys k JOIN hsm_key_versions v ON "
				  "v.name = k.name WHERE k.name = ? AND k.deleted = 0 AND "
				  "v.version > ? ORDER BY v.version LIMIT ?",
			      p, 3, &rows, err)) < 0 ||
	    (r = cvm_tx_commit(CVM_TAKE(tx), err)) < 0)
		return r;
	_cleanup_json_ json_t *items = json_array();
	if (!items)
		return cvm_err_nomem(err);
	size_t n = cvm_rows_count(rows);
	bool more = n > (size_t)limit;
	char last[33] = "";
	for (size_t i = 0; i < n && i < (size_t)limit; i++) {
		_cleanup_keyver_ struct cvm_hsm_keyver *kv = NULL;
		json_t *it;
		if ((r = cvm_hsm_keyver_from_row(rows, i, &kv, err)) < 0 ||
		    (r = key_item(h, c, kv, true, &it, err)) < 0)
			return r;
		if (json_array_append_new(items, it))
			return cvm_err_nomem(err);
		snprintf(last, sizeof(last), "%s", kv->version);
	}
	_cleanup_free_ char *path = cvm_asprintf("/keys/%s/versions", name);
	if (!path)
		return cvm_err_nomem(err);
	return cvm_hsm_list_result(c, path, api_version, limit, CVM_TAKE(items), more, last, out,
				   err);
}

int cvm_hsm_rng(struct cvm_hsm *h, json_t *body, json_t **out, struct cvm_err *err)
{
	(void)h;
	_cleanup_json_ json_t *owned = NULL;
	int64_t count;
	int r = empty_body(&body, &owned, err);
	if (r < 0 || (r = cvm_json_int(body, "count", "count", true, 1, 128, &count, NULL, err)) < 0)
		return r;
	uint8_t buf[128];
	if ((r = cvm_random(buf, (size_t)count, err)) < 0)
		return r;
	_cleanup_json_ json_t *res = json_object();
	if (!res || cvm_json_set_b64url(res, "value", buf, (size_t)count))
		return cvm_err_nomem(err);
	*out = CVM_TAKE(res);
	return 0;
}
