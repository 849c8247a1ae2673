/* SPDX-License-Identifier: Apache-2.0 */
/* cvmd REST routes for Disk Encryption Sets and the disk registry. The key service
 * authenticates the caller; RBAC uses its data actions on the scope of the DES key, so whoever
 * may use a key decides which disks hang off it. Every call leaves an audit record before the
 * answer goes out. */
#include <ctype.h>
#include <string.h>

#include <opencvm/audit.h>
#include <opencvm/disk.h>
#include <opencvm/hsm.h>
#include <opencvm/http.h>
#include <opencvm/json.h>
#include <opencvm/store.h>

#define P(c, n) cvm_http_req_param((c)->req, (n))
#define DES_TYPE_CUSTOMER "ConfidentialVmEncryptedWithCustomerKey"
#define PLATFORM_KEY_PREFIX "des-"
#define PLATFORM_KEY_BITS 3072

struct cvm_disk_rest {
	struct cvm_disk_rest_config cfg;
	size_t nctx;
	struct route_ctx *ctx;
};

struct call;
typedef int (*handler_fn)(struct call *c, json_t **out, struct cvm_err *err);

struct route {
	const char *method;
	const char *pattern;
	const char *op; /* audit operation */
	bool body;      /* JSON body required */
	int status;     /* success status, 200 when 0 */
	handler_fn fn;
};

struct route_ctx {
	struct cvm_disk_rest *rest;
	const struct route *route;
};

struct call {
	struct cvm_disk_rest *rest;
	const struct cvm_http_req *req;
	struct cvm_hsm_caller caller;
	char oid[37];
	char base_url[CVM_HSM_REST_BASE_URL_MAX];
	json_t *body;
	/* audit detail learnt by the handler */
	char key_name[CVM_HSM_NAME_MAX + 1];
	char key_version[33];
	char des[81];
	char disk[81];
};

static bool name_ok(const char *s, size_t max, const char *extra);

/* ---- key URLs ------------------------------------------------------------------------------- */

/* Split a key URL (validated by cvm_disk_key_url_valid) into its key name and version (""
 * when versionless), and check that it addresses this service: RBAC and the role check only
 * mean something for keys this key service holds. */
static int key_of_url(struct call *c, const char *url, char name[CVM_HSM_NAME_MAX + 1],
		      char version[33], struct cvm_err *err)
{
	if (!cvm_disk_key_url_valid(url, false))
		return cvm_err_badparam(err, "keyUrl: expected https://host/keys/<name>[/<version>]");
	const char *keys = NULL;
	for (const char *p = url; (p = strstr(p, "/keys/")); p++)
		keys = p;
	size_t origin = (size_t)(keys - url);
	if (strlen(c->base_url) != origin || strncasecmp(url, c->base_url, origin) != 0)
		return cvm_err_badparam(err, "keyUrl: the key must be held by this key service (%s), "
					     "got %.200s", c->base_url, url);
	const char *n = keys + 6, *slash = strchr(n, '/');
	size_t nl = slash ? (size_t)(slash - n) : strlen(n);
	const char *v = slash ? slash + 1 : "";
	if (nl > CVM_HSM_NAME_MAX || strlen(v) > 32)
		return cvm_err_badparam(err, "keyUrl: key name or version too long");
	memcpy(name, n, nl);
	name[nl] = '\0';
	snprintf(version, 33, "%s", v);
	return 0;
}

/* The caller's RBAC check for one route kind (cvm_hsm_data_action) on /keys/{key} or /keys. */
static int allow(struct call *c, const char *method, const char *kind, const char *key,
		 struct cvm_err *err)
{
	const char *action = cvm_hsm_data_action(method, kind);
	if (!action)
		return cvm_err_internal(err, "no data action for %s", kind);
	char scope[CVM_HSM_NAME_MAX + 8];
	snprintf(scope, sizeof(scope), "%s%s", key ? "/keys/" : "/keys", key ? key : "");
	return cvm_hsm_rbac_check_scope(c->rest->cfg.hsm, c->oid, action, scope, err);
}

/* ---- the DES identity's role check (cvm_des_authz) -------------------------------------------- */

struct authz_ctx {
	struct call *c;
};

/* Crypto Service Encryption User: keys/read, keys/wrap, keys/unwrap on the key. */
static int authz_check(void *ctx, const char *identity, const char *key_url, struct cvm_err *err)
{
	struct authz_ctx *a = ctx;
	char name[CVM_HSM_NAME_MAX + 1], version[33];
	int r = key_of_url(a->c, key_url, name, version, err);
	if (r < 0)
		return r;
	static const struct {
		const char *method, *kind;
	} need[] = { { "GET", "keys/get" }, { "POST", "keys/wrapkey" }, { "POST", "keys/unwrapkey" } };
	char scope[CVM_HSM_NAME_MAX + 8];
	snprintf(scope, sizeof(scope), "/keys/%s", name);
	for (size_t i = 0; i < CVM_ARRAY_SIZE(need); i++) {
		const char *action = cvm_hsm_data_action(need[i].method, need[i].kind);
		if (!action)
			return cvm_err_internal(err, "no data action for %s", need[i].kind);
		r = cvm_hsm_rbac_check_scope(a->c->rest->cfg.hsm, identity, action, scope, err);
		if (r < 0)
			return r;
	}
	return 0;
}

/* ---- JSON ----------------------------------------------------------------------------------- */

/* {"at","keyVersion","result":"ok"|"failed","rotated","failed","message"?} of the last
 * automatic rotation pass (autorotate.c), or NULL when there was none. */
static json_t *autorotation_json(const struct cvm_des_autorotation *a)
{
	if (!a->present)
		return NULL;
	return json_pack("{s:I,s:s,s:s,s:i,s:i,s:s?}", "at", (json_int_t)a->at, "keyVersion",
			 a->key_version, "result", a->failed ? "failed" : "ok", "rotated",
			 (int)a->rotated, "failed", (int)a->failed, "message",
			 a->message[0] ? a->message : NULL);
}

static json_t *des_json(const struct cvm_des *d, const struct cvm_des_autorotation *a)
{
	_cleanup_free_ char *id = cvm_asprintf("/opencvm/diskEncryptionSets/%s", d->name);
	if (!id)
		return NULL;
	return json_pack("{s:s,s:s,s:s,s:s,s:s,s:s,s:b,s:I,s:I,s:o*}", "name", d->name, "id", id,
			 "keyUrl", d->key_url, "alg", d->alg, "encryptionType",
			 cvm_des_type_name(d->type), "identity", d->identity, "followsLatest",
			 cvm_des_follows_latest(d), "created", (json_int_t)d->created, "updated",
			 (json_int_t)d->updated, "lastAutoRotation",
			 a ? autorotation_json(a) : NULL);
}

static json_t *disk_json(const struct cvm_disk_rec *d)
{
	_cleanup_free_ char *id = cvm_asprintf("/opencvm/disks/%s", d->name);
	if (!id)
		return NULL;
	return json_pack("{s:s,s:s,s:s,s:s?,s:s,s:I,s:s?,s:I,s:I}", "name", d->name, "id", id,
			 "path", d->path, "des", d->des, "kind", cvm_disk_kind_name(d->kind), "size",
			 (json_int_t)d->size, "kid", d->kid, "created", (json_int_t)d->created,
			 "updated", (json_int_t)d->updated);
}

/* ---- DES handlers -------------------------------------------------------------------------- */

/* The platform key of a DES: RSA-3072 wrap/unwrap key "des-<name>" ('_' is not allowed in key
 * names and becomes '-'), created on first use. */
static int platform_key(struct call *c, const char *des_name, char **key_url, struct cvm_err *err)
{
	char name[CVM_HSM_NAME_MAX + 1];
	snprintf(name, sizeof(name), PLATFORM_KEY_PREFIX "%s", des_name);
	for (char *p = name; *p; p++)
		if (*p == '_')
			*p = '-';
	*key_url = cvm_asprintf("%s/keys/%s", c->base_url, name);
	return *key_url ? 0 : cvm_err_nomem(err);
}

static int ensure_platform_key(struct call *c, const char *name, struct cvm_err *err)
{
	_cleanup_json_ json_t *got = NULL;
	int r = cvm_hsm_key_get(c->rest->cfg.hsm, &c->caller, name, NULL, &got, err);
	if (r != -ENOENT)
		return r;
	cvm_err_clear(err);
	if ((r = allow(c, "POST", "keys/create", name, err)) < 0)
		return r;
	_cleanup_json_ json_t *body = json_pack("{s:s,s:i,s:[s,s]}", "kty", "RSA-HSM", "key_size",
						PLATFORM_KEY_BITS, "key_ops", "wrapKey",
						"unwrapKey");
	_cleanup_json_ json_t *out = NULL;
	if (!body)
		return cvm_err_nomem(err);
	r = cvm_hsm_key_create(c->rest->cfg.hsm, &c->caller, name, body, &out, err);
	if (r == 0)
		cvm_log_info("des_platform_key_created", "key=%s", name);
	return r;
}

/* The wrap algorithm follows the key type; the key must allow wrapKey and unwrapKey. */
static int key_alg(struct call *c, const char *name, const char *version, const char **alg,
		   struct cvm_err *err)
{
	_cleanup_json_ json_t *bundle = NULL;
	int r = cvm_hsm_key_get(c->rest->cfg.hsm, &c->caller, name, version[0] ? version : NULL,
				&bundle, err);
	if (r < 0)
		return cvm_err_prefix(err, "keyUrl");
	const char *kty = json_string_value(cvm_json_path(bundle, "key.kty"));
	if (kty && cvm_str_startswith(kty, "RSA"))
		*alg = "RSA-OAEP-256";
	else if (kty && cvm_str_startswith(kty, "oct"))
		*alg = "A256KW";
	else
		return cvm_err_badparam(err, "keyUrl: key %s is %s; a disk encryption set needs an "
					     "RSA or oct key", name, kty ? kty : "of unknown type");
	json_t *ops = cvm_json_path(bundle, "key.key_ops");
	bool wrap = !ops, unwrap = !ops;
	size_t i;
	json_t *v;
	json_array_foreach(ops, i, v) {
		const char *s = json_string_value(v);
		wrap |= s && !strcmp(s, "wrapKey");
		unwrap |= s && !strcmp(s, "unwrapKey");
	}
	if (!wrap || !unwrap)
		return cvm_err_badparam(err, "keyUrl: key %s does not permit wrapKey and unwrapKey",
					name);
	return 0;
}

static int h_des_put(struct call *c, json_t **out, struct cvm_err *err)
{
	const char *type_s = NULL, *key_url = NULL, *identity = NULL;
	int r;
	if ((r = cvm_json_str(c->body, "encryptionType", "encryptionType", true, &type_s, NULL,
			      err)) < 0 ||
	    (r = cvm_json_str(c->body, "keyUrl", "keyUrl", false, &key_url, NULL, err)) < 0 ||
	    (r = cvm_json_str(c->body, "identity", "identity", true, &identity, NULL, err)) < 0)
		return r;
	struct cvm_des d = { .name = (char *)P(c, "name") };
	/* Checked here too (cvm_des_create does it again): the name becomes a key name below. */
	if (!name_ok(d.name, 80, "-_"))
		return cvm_err_badparam(err, "name: expected 1..80 characters of A-Z a-z 0-9 - _");
	if ((r = cvm_des_type_parse(type_s, &d.type, err)) < 0)
		return cvm_err_prefix(err, "encryptionType");
	_cleanup_free_ char *pk_url = NULL;
	if (d.type == CVM_DES_PLATFORM_KEY) {
		if (key_url)
			return cvm_err_badparam(err, "keyUrl: a platform-key set uses this service's "
						     "own key; leave keyUrl out");
		if (strlen(d.name) > CVM_HSM_NAME_MAX - strlen(PLATFORM_KEY_PREFIX))
			return cvm_err_badparam(err, "name: too long for a platform-key set");
		if ((r = platform_key(c, d.name, &pk_url, err)) < 0)
			return r;
		key_url = pk_url;
	} else if (!key_url) {
		return cvm_err_badparam(err, "keyUrl: required for a customer-key set");
	}
	d.key_url = (char *)key_url;
	if ((r = key_of_url(c, key_url, c->key_name, c->key_version, err)) < 0 ||
	    (r = allow(c, "PATCH", "keys/update", c->key_name, err)) < 0)
		return r;
	struct cvm_principal_info who = { 0 };
	if ((r = cvm_hsm_principal_get(c->rest->cfg.hsm, identity, &who, err)) < 0)
		return cvm_err_prefix(err, "identity");
	char oid[37];
	memcpy(oid, who.oid, sizeof(oid));
	cvm_principal_info_clear(&who);
	d.identity = oid;
	/* A customer key must exist and suit a DES before the identity is looked at; a platform
	 * key is made only after the role check, so a refusal leaves nothing behind. */
	const char *alg = NULL;
	if (d.type == CVM_DES_CUSTOMER_KEY &&
	    (r = key_alg(c, c->key_name, c->key_version, &alg, err)) < 0)
		return r;
	struct authz_ctx actx = { .c = c };
	const struct cvm_des_authz authz = { .check = authz_check, .ctx = &actx };
	if ((r = authz_check(&actx, oid, key_url, err)) < 0)
		return cvm_err_prefix(err, "identity %s cannot use %s (needs the Managed HSM Crypto "
					   "Service Encryption User role on the key)", identity,
				      key_url);
	if (d.type == CVM_DES_PLATFORM_KEY &&
	    ((r = ensure_platform_key(c, c->key_name, err)) < 0 ||
	     (r = key_alg(c, c->key_name, c->key_version, &alg, err)) < 0))
		return r;
	d.alg = (char *)alg;
	if ((r = cvm_des_create(c->rest->cfg.store, &d, &authz, err)) < 0)
		return r;
	_cleanup_(cvm_des_clear) struct cvm_des got = { 0 };
	if ((r = cvm_des_get(c->rest->cfg.store, d.name, &got, err)) < 0)
		return r;
	*out = des_json(&got, NULL);
	return *out ? 0 : cvm_err_nomem(err);
}

/* Load a DES and check the caller may read its key. */
static int des_load(struct call *c, const char *name, struct cvm_des *d, const char *method,
		    const char *kind, struct cvm_err *err)
{
	int r = cvm_des_get(c->rest->cfg.store, name, d, err);
	if (r < 0)
		return r;
	snprintf(c->des, sizeof(c->des), "%s", d->name);
	/* A stored DES always names a key of this service, but the Host the caller used may differ
	 * from the one at creation: take the name from the last "/keys/" segment. */
	const char *keys = NULL;
	for (const char *p = d->key_url; (p = strstr(p, "/keys/")); p++)
		keys = p;
	const char *n = keys ? keys + 6 : "";
	size_t nl = strcspn(n, "/");
	if (nl == 0 || nl > CVM_HSM_NAME_MAX)
		return cvm_err_internal(err, "disk encryption set %s: stored key URL unusable", name);
	memcpy(c->key_name, n, nl);
	c->key_name[nl] = '\0';
	snprintf(c->key_version, sizeof(c->key_version), "%s", n[nl] ? n + nl + 1 : "");
	return allow(c, method, kind, c->key_name, err);
}

static int h_des_get(struct call *c, json_t **out, struct cvm_err *err)
{
	_cleanup_(cvm_des_clear) struct cvm_des d = { 0 };
	int r = des_load(c, P(c, "name"), &d, "GET", "keys/get", err);
	struct cvm_des_autorotation a;
	if (r < 0 || (r = cvm_des_autorotation_get(c->rest->cfg.store, d.name, &a, err)) < 0)
		return r;
	*out = des_json(&d, &a);
	return *out ? 0 : cvm_err_nomem(err);
}

static int h_des_list(struct call *c, json_t **out, struct cvm_err *err)
{
	int r = allow(c, "GET", "keys/get", NULL, err);
	if (r < 0)
		return r;
	struct cvm_des *list = NULL;
	size_t n = 0;
	if ((r = cvm_des_list(c->rest->cfg.store, &list, &n, err)) < 0)
		return r;
	json_t *arr = json_array();
	for (size_t i = 0; arr && i < n; i++)
		if (json_array_append_new(arr, des_json(&list[i], NULL)) < 0)
			json_decref(CVM_TAKE(arr));
	cvm_des_list_free(list, n);
	*out = arr ? json_pack("{s:o}", "value", arr) : NULL;
	return *out ? 0 : cvm_err_nomem(err);
}

static int h_des_delete(struct call *c, json_t **out, struct cvm_err *err)
{
	_cleanup_(cvm_des_clear) struct cvm_des d = { 0 };
	int r = des_load(c, P(c, "name"), &d, "PATCH", "keys/update", err);
	if (r < 0)
		return r;
	*out = NULL;
	return cvm_des_delete(c->rest->cfg.store, d.name, err);
}

/* ---- disk handlers ------------------------------------------------------------------------- */

/* RBAC for a disk record: on its DES key, or at /keys for temp disks (no DES). */
static int disk_allow(struct call *c, const char *des, const char *method, const char *kind,
		      struct cvm_err *err)
{
	if (!des)
		return allow(c, method, kind, NULL, err);
	_cleanup_(cvm_des_clear) struct cvm_des d = { 0 };
	return des_load(c, des, &d, method, kind, err);
}

static int disk_load(struct call *c, struct cvm_disk_rec *rec, const char *method,
		     const char *kind, struct cvm_err *err)
{
	int r = cvm_disk_rec_get(c->rest->cfg.store, P(c, "name"), rec, err);
	if (r < 0)
		return r;
	snprintf(c->disk, sizeof(c->disk), "%s", rec->name);
	return disk_allow(c, rec->des, method, kind, err);
}

static void note_kid(struct call *c, const char *kid)
{
	const char *slash = kid ? strrchr(kid, '/') : NULL;
	if (slash && strlen(slash + 1) == 32)
		snprintf(c->key_version, sizeof(c->key_version), "%s", slash + 1);
}

static int h_disk_put(struct call *c, json_t **out, struct cvm_err *err)
{
	const char *path = NULL, *des = NULL, *kind_s = NULL, *kid = NULL;
	int64_t size = 0;
	int r;
	if ((r = cvm_json_str(c->body, "path", "path", true, &path, NULL, err)) < 0 ||
	    (r = cvm_json_str(c->body, "des", "des", false, &des, NULL, err)) < 0 ||
	    (r = cvm_json_str(c->body, "kind", "kind", true, &kind_s, NULL, err)) < 0 ||
	    (r = cvm_json_int(c->body, "size", "size", true, 1, INT64_MAX, &size, NULL, err)) < 0 ||
	    (r = cvm_json_str(c->body, "kid", "kid", false, &kid, NULL, err)) < 0)
		return r;
	struct cvm_disk_rec rec = { .name = (char *)P(c, "name"), .path = (char *)path,
				    .des = (char *)des, .size = (uint64_t)size, .kid = (char *)kid };
	if ((r = cvm_disk_kind_parse(kind_s, &rec.kind, err)) < 0)
		return r;
	if (path[0] != '/')
		return cvm_err_badparam(err, "path: expected an absolute path");
	snprintf(c->disk, sizeof(c->disk), "%s", rec.name);
	if ((r = disk_allow(c, des, "POST", "keys/wrapkey", err)) < 0)
		return r;
	note_kid(c, kid);
	if ((r = cvm_disk_rec_add(c->rest->cfg.store, &rec, err)) < 0)
		return r;
	_cleanup_(cvm_disk_rec_clear) struct cvm_disk_rec got = { 0 };
	if ((r = cvm_disk_rec_get(c->rest->cfg.store, rec.name, &got, err)) < 0)
		return r;
	*out = disk_json(&got);
	return *out ? 0 : cvm_err_nomem(err);
}

/* After rotate (new kid) or rekey (new image, maybe new path/size) the record follows the
 * image. The registry's table belongs to this module (des.c); one UPDATE keeps it atomic. */
static int h_disk_patch(struct call *c, json_t **out, struct cvm_err *err)
{
	_cleanup_(cvm_disk_rec_clear) struct cvm_disk_rec rec = { 0 };
	int r = disk_load(c, &rec, "POST", "keys/wrapkey", err);
	if (r < 0)
		return r;
	const char *kid = NULL, *path = NULL;
	int64_t size = 0;
	bool has_size = false;
	if ((r = cvm_json_str(c->body, "kid", "kid", false, &kid, NULL, err)) < 0 ||
	    (r = cvm_json_str(c->body, "path", "path", false, &path, NULL, err)) < 0 ||
	    (r = cvm_json_int(c->body, "size", "size", false, 1, INT64_MAX, &size, &has_size,
			      err)) < 0)
		return r;
	if (path && path[0] != '/')
		return cvm_err_badparam(err, "path: expected an absolute path");
	if (kid && !rec.des)
		return cvm_err_badparam(err, "kid: a temp disk has no wrapped secret");
	if (kid && !cvm_disk_key_url_valid(kid, true))
		return cvm_err_badparam(err, "kid: expected the versioned key URL of the wrap");
	note_kid(c, kid ? kid : rec.kid);
	struct cvm_val p[] = { CVM_VAL_S(kid ? kid : rec.kid), CVM_VAL_S(path ? path : rec.path),
			       CVM_VAL_I(has_size ? size : (int64_t)rec.size), CVM_VAL_I(cvm_now()),
			       CVM_VAL_S(rec.name) };
	_cleanup_tx_ struct cvm_tx *tx = NULL;
	if ((r = cvm_tx_begin(c->rest->cfg.store, CVM_TX_WRITE, &tx, err)) < 0 ||
	    (r = cvm_tx_exec(tx, "UPDATE disks SET kid = ?, path = ?, size = ?, updated = ? "
			     "WHERE name = ?", p, CVM_ARRAY_SIZE(p), NULL, err)) < 0 ||
	    (r = cvm_tx_commit(CVM_TAKE(tx), err)) < 0)
		return r;
	_cleanup_(cvm_disk_rec_clear) struct cvm_disk_rec got = { 0 };
	if ((r = cvm_disk_rec_get(c->rest->cfg.store, rec.name, &got, err)) < 0)
		return r;
	*out = disk_json(&got);
	return *out ? 0 : cvm_err_nomem(err);
}

static int h_disk_get(struct call *c, json_t **out, struct cvm_err *err)
{
	_cleanup_(cvm_disk_rec_clear) struct cvm_disk_rec rec = { 0 };
	int r = disk_load(c, &rec, "GET", "keys/get", err);
	if (r < 0)
		return r;
	note_kid(c, rec.kid);
	*out = disk_json(&rec);
	return *out ? 0 : cvm_err_nomem(err);
}

static int h_disk_delete(struct call *c, json_t **out, struct cvm_err *err)
{
	_cleanup_(cvm_disk_rec_clear) struct cvm_disk_rec rec = { 0 };
	int r = disk_load(c, &rec, "POST", "keys/wrapkey", err);
	if (r < 0)
		return r;
	*out = NULL;
	return cvm_disk_rec_delete(c->rest->cfg.store, rec.name, err);
}

static int h_disk_list(struct call *c, json_t **out, struct cvm_err *err)
{
	int r = allow(c, "GET", "keys/get", NULL, err);
	if (r < 0)
		return r;
	struct cvm_disk_rec *list = NULL;
	size_t n = 0;
	const char *des = cvm_http_req_query(c->req, "des");
	if ((r = cvm_disk_rec_list(c->rest->cfg.store, des, &list, &n, err)) < 0)
		return r;
	json_t *arr = json_array();
	for (size_t i = 0; arr && i < n; i++)
		if (json_array_append_new(arr, disk_json(&list[i])) < 0)
			json_decref(CVM_TAKE(arr));
	cvm_disk_rec_list_free(list, n);
	*out = arr ? json_pack("{s:o}", "value", arr) : NULL;
	return *out ? 0 : cvm_err_nomem(err);
}

/* ---- pipeline ------------------------------------------------------------------------------ */

/* Names from the path go into the audit record only when well formed (client input of any
 * length would make the audit log refuse the record and turn a 400 into a 500). */
static bool name_ok(const char *s, size_t max, const char *extra)
{
	size_t n = s ? strlen(s) : 0;
	if (n == 0 || n > max)
		return false;
	for (size_t i = 0; i < n; i++)
		if (!isalnum((unsigned char)s[i]) && !strchr(extra, s[i]))
			return false;
	return true;
}

static int audit_call(struct call *c, const struct route *rt, int status,
		      const struct cvm_err *res)
{
	_cleanup_json_ json_t *d = json_object();
	if (!d)
		return -ENOMEM;
	if (name_ok(c->des, 80, "-_"))
		json_object_set_new(d, "des", json_string(c->des));
	if (name_ok(c->disk, 80, "-_"))
		json_object_set_new(d, "disk", json_string(c->disk));
	_cleanup_free_ char *detail = cvm_json_dump(d);
	struct cvm_audit_event ev = {
		.principal = c->oid[0] ? c->oid : NULL,
		.operation = rt->op,
		.key_name = name_ok(c->key_name, CVM_HSM_NAME_MAX, "-") ? c->key_name : NULL,
		.key_version = name_ok(c->key_version, 32, "") ? c->key_version : NULL,
		.status = status,
		.result = status < 400 ? "ok" : (res->code[0] ? res->code : "error"),
		.request_id = cvm_http_req_id(c->req),
		.source = cvm_http_req_remote(c->req),
		.detail = detail,
	};
	struct cvm_err aerr = { 0 };
	int r = cvm_audit_append(c->rest->cfg.audit, &ev, NULL, &aerr);
	if (r < 0)
		cvm_log_error("audit_append_failed", "op=%s error=\"%s\"", rt->op, aerr.msg);
	return r;
}

static int dispatch(void *ctx, const struct cvm_http_req *req, struct cvm_http_resp *resp)
{
	struct route_ctx *rc = ctx;
	struct call c = { .rest = rc->rest, .req = req };
	struct cvm_err err = { 0 };
	json_t *out = NULL;
	/* Take the names for the audit record from the path now: handlers that fail early still
	 * leave a record saying what was asked for. */
	const char *name = P(&c, "name");
	bool des_route = strstr(rc->route->pattern, "diskEncryptionSets") != NULL;
	if (name)
		snprintf(des_route ? c.des : c.disk, sizeof(c.des), "%s", name);
	int r = cvm_hsm_rest_authenticate(rc->rest->cfg.hsm_rest, req, resp, c.base_url, c.oid,
					  &err);
	if (r == 0) {
		c.caller = (struct cvm_hsm_caller){ .principal = c.oid,
						    .request_id = cvm_http_req_id(req),
						    .source = cvm_http_req_remote(req),
						    .base_url = c.base_url };
		size_t len = 0;
		const uint8_t *body = cvm_http_req_body(req, &len);
		if (rc->route->body)
			r = cvm_json_parse(body, len, false, &c.body, &err);
	}
	if (r == 0)
		r = rc->route->fn(&c, &out, &err);
	json_decref(c.body);
	int status = r < 0 ? cvm_err_http_status(&err)
			   : (rc->route->status ? rc->route->status : (out ? 200 : 204));
	if (audit_call(&c, rc->route, status, &err) < 0) {
		json_decref(out);
		cvm_err_internal(&err, "audit: the record could not be written; the result is "
				       "withheld");
		return cvm_http_resp_error(resp, &err);
	}
	if (r < 0)
		return cvm_http_resp_error(resp, &err);
	if (!out) {
		cvm_http_resp_status(resp, status);
		return 0;
	}
	return cvm_http_resp_json(resp, status, out);
}

static const struct route routes[] = {
	{ "GET", "/opencvm/diskEncryptionSets", "diskEncryptionSets/list", false, 0, h_des_list },
	{ "PUT", "/opencvm/diskEncryptionSets/{name}", "diskEncryptionSets/write", true, 201,
	  h_des_put },
	{ "GET", "/opencvm/diskEncryptionSets/{name}", "diskEncryptionSets/read", false, 0,
	  h_des_get },
	{ "DELETE", "/opencvm/diskEncryptionSets/{name}", "diskEncryptionSets/delete", false, 204,
	  h_des_delete },
	{ "GET", "/opencvm/disks", "disks/list", false, 0, h_disk_list },
	{ "PUT", "/opencvm/disks/{name}", "disks/write", true, 201, h_disk_put },
	{ "PATCH", "/opencvm/disks/{name}", "disks/update", true, 0, h_disk_patch },
	{ "GET", "/opencvm/disks/{name}", "disks/read", false, 0, h_disk_get },
	{ "DELETE", "/opencvm/disks/{name}", "disks/delete", false, 204, h_disk_delete },
};

void cvm_disk_rest_free(struct cvm_disk_rest *r)
{
	if (!r)
		return;
	free(r->ctx);
	free(r);
}

int cvm_disk_register_routes(const struct cvm_disk_rest_config *cfg, struct cvm_http_server *srv,
			     struct cvm_disk_rest **out, struct cvm_err *err)
{
	*out = NULL;
	if (!cfg || !cfg->store || !cfg->hsm || !cfg->hsm_rest || !cfg->audit || !srv)
		return cvm_err_badparam(err, "disk routes: store, hsm, hsm_rest, audit and server "
					     "are required");
	struct cvm_disk_rest *rest = calloc(1, sizeof(*rest));
	if (!rest)
		return cvm_err_nomem(err);
	rest->cfg = *cfg;
	rest->nctx = CVM_ARRAY_SIZE(routes);
	rest->ctx = calloc(rest->nctx, sizeof(*rest->ctx));
	if (!rest->ctx) {
		cvm_disk_rest_free(rest);
		return cvm_err_nomem(err);
	}
	for (size_t i = 0; i < rest->nctx; i++) {
		rest->ctx[i] = (struct route_ctx){ .rest = rest, .route = &routes[i] };
		int r = cvm_http_route(srv, routes[i].method, routes[i].pattern, dispatch,
				       &rest->ctx[i], err);
		if (r < 0) {
			cvm_disk_rest_free(rest);
			return cvm_err_prefix(err, "route %s %s", routes[i].method,
					      routes[i].pattern);
		}
	}
	*out = rest;
	return 0;
}
