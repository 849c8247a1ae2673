/* SPDX-License-Identifier: Apache-2.0 */
/* REST pipeline of the key service: route registration, authentication challenge, api-version,
 * RBAC, body shape checks, audit-before-response. Handlers live in rest-keys.c/rest-admin.c. */
#include <ctype.h>
#include <string.h>

#include <opencvm/json.h>

#include "rest-internal.h"

/* ---- body shapes ---------------------------------------------------------------------------
 * A body schema lists the top-level members a route reads and their JSON types. Members the
 * hsm does not know are ignored (Key Vault ignores them too); the hsm checks values, this
 * layer makes sure a wrong type is reported with the field's name before anything runs. */
enum field_type { F_STR, F_INT, F_BOOL, F_OBJ, F_ARR, F_B64, F_STRARR };
struct field {
	const char *name;
	enum field_type type;
	bool required;
	const struct field *sub; /* F_OBJ: members of the object (NULL-name terminated) */
};

static const struct field attributes_f[] = {
	{ "enabled", F_BOOL, false, NULL }, { "nbf", F_INT, false, NULL },
	{ "exp", F_INT, false, NULL },      { "exportable", F_BOOL, false, NULL },
	{ NULL, 0, false, NULL },
};
static const struct field policy_f[] = {
	{ "contentType", F_STR, false, NULL }, { "data", F_B64, false, NULL },
	{ "immutable", F_BOOL, false, NULL },  { NULL, 0, false, NULL },
};
static const struct field create_f[] = {
	{ "kty", F_STR, true, NULL },           { "key_size", F_INT, false, NULL },
	{ "public_exponent", F_INT, false, NULL }, { "key_ops", F_STRARR, false, NULL },
	{ "attributes", F_OBJ, false, attributes_f }, { "tags", F_OBJ, false, NULL },
	{ "crv", F_STR, false, NULL },          { "release_policy", F_OBJ, false, policy_f },
	{ NULL, 0, false, NULL },
};
static const struct field import_f[] = {
	{ "Hsm", F_BOOL, false, NULL },         { "key", F_OBJ, true, NULL },
	{ "attributes", F_OBJ, false, attributes_f }, { "tags", F_OBJ, false, NULL },
	{ "release_policy", F_OBJ, false, policy_f }, { NULL, 0, false, NULL },
};
static const struct field update_f[] = {
	{ "key_ops", F_STRARR, false, NULL },   { "attributes", F_OBJ, false, attributes_f },
	{ "tags", F_OBJ, false, NULL },         { "release_policy", F_OBJ, false, policy_f },
	{ NULL, 0, false, NULL },
};
static const struct field crypt_f[] = {
	{ "alg", F_STR, true, NULL },  { "value", F_B64, true, NULL }, { "iv", F_B64, false, NULL },
	{ "aad", F_B64, false, NULL }, { "tag", F_B64, false, NULL },  { NULL, 0, false, NULL },
};
static const struct field sign_f[] = {
	{ "alg", F_STR, true, NULL }, { "value", F_B64, true, NULL }, { NULL, 0, false, NULL },
};
static const struct field verify_f[] = {
	{ "alg", F_STR, true, NULL }, { "digest", F_B64, true, NULL },
	{ "value", F_B64, true, NULL }, { NULL, 0, false, NULL },
};
static const struct field release_f[] = {
	{ "target", F_STR, true, NULL }, { "nonce", F_STR, false, NULL },
	{ "enc", F_STR, false, NULL },   { NULL, 0, false, NULL },
};
static const struct field restore_f[] = {
	{ "value", F_B64, true, NULL }, { NULL, 0, false, NULL },
};
static const struct field rotation_attr_f[] = {
	{ "expiryTime", F_STR, false, NULL }, { NULL, 0, false, NULL },
};
static const struct field rotation_f[] = {
	{ "lifetimeActions", F_ARR, false, NULL },
	{ "attributes", F_OBJ, false, rotation_attr_f }, { NULL, 0, false, NULL },
};
static const struct field rng_f[] = {
	{ "count", F_INT, true, NULL }, { NULL, 0, false, NULL },
};
static const struct field ra_props_f[] = {
	{ "roleDefinitionId", F_STR, true, NULL }, { "principalId", F_STR, true, NULL },
	{ NULL, 0, false, NULL },
};
static const struct field ra_f[] = {
	{ "properties", F_OBJ, true, ra_props_f }, { NULL, 0, false, NULL },
};
static const struct field rd_props_f[] = {
	{ "roleName", F_STR, false, NULL },     { "description", F_STR, false, NULL },
	{ "type", F_STR, false, NULL },         { "permissions", F_ARR, true, NULL },
	{ "assignableScopes", F_STRARR, false, NULL }, { NULL, 0, false, NULL },
};
static const struct field rd_f[] = {
	{ "properties", F_OBJ, true, rd_props_f }, { NULL, 0, false, NULL },
};
static const struct field backup_f[] = {
	{ "storageResourceUri", F_STR, true, NULL }, { "token", F_STR, false, NULL },
	{ NULL, 0, false, NULL },
};
static const struct field restore_full_f[] = {
	{ "folderToRestore", F_STR, true, NULL }, { "sasTokenParameters", F_OBJ, false, NULL },
	{ NULL, 0, false, NULL },
};
static const struct field principal_f[] = {
	{ "kind", F_STR, false, NULL }, { "certificate", F_STR, false, NULL },
	{ NULL, 0, false, NULL },
};

static const struct field *const body_schemas[CVM_HSM_BODY_COUNT_] = {
	[CVM_HSM_BODY_KEY_CREATE] = create_f,     [CVM_HSM_BODY_KEY_IMPORT] = import_f,
	[CVM_HSM_BODY_KEY_UPDATE] = update_f,     [CVM_HSM_BODY_KEY_CRYPT] = crypt_f,
	[CVM_HSM_BODY_KEY_SIGN] = sign_f,         [CVM_HSM_BODY_KEY_VERIFY] = verify_f,
	[CVM_HSM_BODY_KEY_RELEASE] = release_f,   [CVM_HSM_BODY_KEY_RESTORE] = restore_f,
	[CVM_HSM_BODY_ROTATION_POLICY] = rotation_f, [CVM_HSM_BODY_RNG] = rng_f,
	[CVM_HSM_BODY_ROLE_ASSIGNMENT] = ra_f,    [CVM_HSM_BODY_ROLE_DEFINITION] = rd_f,
	[CVM_HSM_BODY_FULL_BACKUP] = backup_f,    [CVM_HSM_BODY_FULL_RESTORE] = restore_full_f,
	[CVM_HSM_BODY_PRINCIPAL] = principal_f,
};

static int check_fields(json_t *obj, const struct field *fields, const char *prefix,
			struct cvm_err *err)
{
	for (const struct field *f = fields; f->name; f++) {
		char path[96];
		snprintf(path, sizeof(path), "%s%s%s", prefix, *prefix ? "." : "", f->name);
		int r = 0;
		switch (f->type) {
		case F_STR: {
			const char *sv;
			r = cvm_json_str(obj, f->name, path, f->required, &sv, NULL, err);
			break;
		}
		case F_INT: {
			int64_t v;
			r = cvm_json_int(obj, f->name, path, f->required, INT64_MIN, INT64_MAX, &v,
					 NULL, err);
			break;
		}
		case F_BOOL: {
			bool b;
			r = cvm_json_bool(obj, f->name, path, f->required, &b, NULL, err);
			break;
		}
		case F_ARR: {
			json_t *a;
			r = cvm_json_arr(obj, f->name, path, f->required, &a, err);
			break;
		}
		case F_STRARR: {
			json_t *a;
			r = cvm_json_str_array(obj, f->name, path, f->required, NULL, &a, err);
			break;
		}
		case F_B64: {
			_cleanup_free_ uint8_t *bytes = NULL;
			size_t n = 0;
			r = cvm_json_b64url(obj, f->name, path, f->required, &bytes, &n, err);
			if (bytes)
				cvm_free_secure(CVM_TAKE(bytes), n);
			break;
		}
		case F_OBJ: {
			json_t *o = NULL;
			r = cvm_json_obj(obj, f->name, path, f->required, &o, err);
			if (r == 0 && o && f->sub)
				r = check_fields(o, f->sub, path, err);
			break;
		}
		}
		if (r < 0)
			return r;
	}
	return 0;
}

int cvm_hsm_form_field(const uint8_t *buf, size_t len, const char *field, char **value,
		       struct cvm_err *err)
{
	*value = NULL;
	size_t flen = strlen(field);
	size_t i = 0;
	while (i < len) {
		size_t end = i;
		while (end < len && buf[end] != '&')
			end++;
		const uint8_t *eq = memchr(buf + i, '=', end - i);
		size_t klen = eq ? (size_t)(eq - (buf + i)) : end - i;
		if (klen == flen && !memcmp(buf + i, field, flen)) {
			if (*value) {
				free(*value);
				*value = NULL;
				return cvm_err_set(err, EINVAL, "invalid_request",
						   "%s: repeated parameter", field);
			}
			size_t vstart = eq ? (size_t)(eq + 1 - buf) : end;
			char *v = malloc(end - vstart + 1);
			if (!v)
				return cvm_err_nomem(err);
			size_t o = 0;
			for (size_t j = vstart; j < end; j++) {
				if (buf[j] == '+') {
					v[o++] = ' ';
				} else if (buf[j] == '%') {
					if (j + 2 >= end || !isxdigit(buf[j + 1]) ||
					    !isxdigit(buf[j + 2])) {
						cvm_free_secure(v, end - vstart + 1);
						return cvm_err_set(err, EINVAL, "invalid_request",
								   "%s: malformed %%-escape", field);
					}
					char hx[3] = { (char)buf[j + 1], (char)buf[j + 2], 0 };
					v[o++] = (char)strtoul(hx, NULL, 16);
					j += 2;
				} else {
					v[o++] = (char)buf[j];
				}
			}
			v[o] = '\0';
			if (strlen(v) != o) {
				cvm_free_secure(v, end - vstart + 1);
				return cvm_err_set(err, EINVAL, "invalid_request",
						   "%s: contains a NUL byte", field);
			}
			*value = v;
		}
		i = end + 1;
	}
	return 0;
}

int cvm_hsm_rest_parse_body(enum cvm_hsm_rest_body kind, const uint8_t *buf, size_t len,
			    json_t **out, struct cvm_err *err)
{
	if (out)
		*out = NULL;
	if ((unsigned)kind >= CVM_HSM_BODY_COUNT_)
		return cvm_err_badparam(err, "body kind: unknown");
	if (len > CVM_HSM_REST_MAX_BODY)
		return cvm_err_set(err, E2BIG, "BadParameter", "body: larger than %u bytes",
				   CVM_HSM_REST_MAX_BODY);
	if (kind == CVM_HSM_BODY_NONE)
		return 0;
	if (kind == CVM_HSM_BODY_TOKEN_FORM) {
		static const char *const fields[] = { "grant_type", "client_id", "client_secret",
						      "client_assertion", "scope" };
		for (size_t i = 0; i < CVM_ARRAY_SIZE(fields); i++) {
			char *v = NULL;
			int r = cvm_hsm_form_field(buf, len, fields[i], &v, err);
			if (v)
				cvm_free_secure(v, strlen(v));
			if (r < 0)
				return r;
			if (!v && i < 2)
				return cvm_err_set(err, EINVAL, "invalid_request",
						   "%s: required parameter is missing", fields[i]);
		}
		return 0;
	}
	_cleanup_json_ json_t *j = NULL;
	int r = cvm_json_parse(buf, len, false, &j, err);
	if (r < 0)
		return r;
	r = check_fields(j, body_schemas[kind], "", err);
	if (r < 0)
		return r;
	if (out)
		*out = CVM_TAKE(j);
	return 0;
}

/* ---- pipeline ------------------------------------------------------------------------------ */

static bool host_ok(const char *host)
{
	size_t n = strlen(host);
	if (n == 0 || n > 255)
		return false;
	for (const char *p = host; *p; p++)
		if (!isalnum((unsigned char)*p) && !strchr(".:-[]", *p))
			return false;
	return true;
}

static void call_base_url(struct rest_call *c)
{
	const char *host = cvm_http_req_header(c->req, "Host");
	if (host && host_ok(host))
		snprintf(c->base_url, sizeof(c->base_url), "https://%s", host);
	else
		snprintf(c->base_url, sizeof(c->base_url), "%s", c->rest->base_url);
}

int rest_query_maxresults(struct rest_call *c, int *out, struct cvm_err *err)
{
	const char *s = cvm_http_req_query(c->req, "maxresults");
	*out = 0;
	if (!s)
		return 0;
	int64_t v;
	int r = cvm_parse_i64(s, 1, CVM_HSM_LIST_MAX, &v, "maxresults", err);
	if (r < 0)
		return r;
	*out = (int)v;
	return 0;
}

void rest_note_kid(struct rest_call *c, json_t *bundle)
{
	json_t *key = json_object_get(bundle, "key");
	const char *kid = json_string_value(json_object_get(key ? key : bundle, "kid"));
	if (!kid)
		return;
	const char *slash = strrchr(kid, '/');
	if (!slash || strlen(slash + 1) != 32)
		return;
	snprintf(c->key_version, sizeof(c->key_version), "%s", slash + 1);
	if (c->key_name)
		return;
	const char *keys = strstr(kid, "/keys/");
	if (!keys)
		return;
	size_t n = (size_t)(slash - (keys + 6));
	if (n == 0 || n > CVM_HSM_NAME_MAX)
		return;
	memcpy(c->key_name_buf, keys + 6, n);
	c->key_name_buf[n] = '\0';
	c->key_name = c->key_name_buf;
}

static int check_api_version(struct rest_call *c, struct cvm_err *err)
{
	const char *v = cvm_http_req_query(c->req, "api-version");
	/* 7.6 / 2025-07-01 are what current SDKs send by default; the keys API shapes we serve
	 * are the same for them. */
	static const char *const supported[] = { "7.4", "7.5", "7.6", "2025-07-01" };
	if (!v)
		return cvm_err_badparam(err, "api-version: required query parameter is missing "
					     "(supported: 7.4, 7.5, 7.6, 2025-07-01)");
	bool ok = false;
	for (size_t i = 0; i < CVM_ARRAY_SIZE(supported) && !ok; i++)
		ok = strcmp(v, supported[i]) == 0;
	if (!ok)
		return cvm_err_badparam(err, "api-version: unsupported value '%.32s' (supported: "
					     "7.4, 7.5, 7.6, 2025-07-01)", v);
	c->api_version = v;
	return 0;
}

/* RBAC routes carry their scope in the path before "/providers/". */
static int call_scope(struct rest_call *c, struct cvm_err *err)
{
	const char *s1 = cvm_http_req_param(c->req, "s1");
	const char *s2 = cvm_http_req_param(c->req, "s2");
	if (!s1) {
		c->scope = "/";
	} else if (strcmp(s1, "keys")) {
		return cvm_err_badparam(err, "scope: expected /, /keys or /keys/{name}");
	} else if (!s2) {
		c->scope = "/keys";
	} else {
		if (strlen(s2) > CVM_HSM_NAME_MAX)
			return cvm_err_badparam(err, "scope: key name too long");
		snprintf(c->scope_buf, sizeof(c->scope_buf), "/keys/%s", s2);
		c->scope = c->scope_buf;
	}
	return 0;
}

static int set_challenge(struct rest_call *c)
{
	_cleanup_free_ char *v = cvm_asprintf("Bearer authorization=\"%s/%s\", resource=\"%s\"",
					      c->base_url, c->rest->tenant,
					      CVM_HSM_RESOURCE_MHSM);
	if (!v)
		return -ENOMEM;
	return cvm_http_resp_header(c->resp, "WWW-Authenticate", v);
}

/* Steps before the handler; fills err and returns negative to answer with an error. */
static int pre_handler(struct rest_call *c, struct cvm_err *err)
{
	const struct rest_route *rt = c->route;
	int r;
	if (rt->flags & REST_AUTH) {
		r = cvm_hsm_authenticate(c->rest->h, cvm_http_req_header(c->req, "Authorization"),
					 c->base_url, c->oid, err);
		if (r < 0)
			return r;
		c->caller.principal = c->oid;
	}
	if (rt->flags & REST_API_VERSION) {
		r = check_api_version(c, err);
		if (r < 0)
			return r;
	}
	if (rt->flags & REST_SCOPED) {
		r = call_scope(c, err);
		if (r < 0)
			return r;
	}
	if (rt->flags & REST_AUTH) {
		const char *action = cvm_hsm_data_action(cvm_http_req_method(c->req), rt->kind);
		if (!action)
			return cvm_err_internal(err, "no data action for route %s", rt->kind);
		if (rt->flags & REST_SCOPED)
			r = cvm_hsm_rbac_check_scope(c->rest->h, c->oid, action, c->scope, err);
		else
			r = cvm_hsm_rbac_check(c->rest->h, c->oid, action,
					       (rt->flags & REST_KEY_SCOPE) ? c->key_name : NULL,
					       err);
		if (r < 0)
			return r;
	}
	size_t len = 0;
	const uint8_t *body = cvm_http_req_body(c->req, &len);
	if (rt->body == CVM_HSM_BODY_TOKEN_FORM || rt->body == CVM_HSM_BODY_NONE)
		return cvm_hsm_rest_parse_body(rt->body, body, len, NULL, err);
	return cvm_hsm_rest_parse_body(rt->body, body, len, &c->body, err);
}

/* Only well-formed key names go into the audit record: a path segment is client input of any
 * length, and a record the audit log refuses would turn a 400 into a 500. */
static const char *audit_key_name(const char *name)
{
	if (!name)
		return NULL;
	size_t n = strlen(name);
	if (n == 0 || n > CVM_HSM_NAME_MAX)
		return NULL;
	for (size_t i = 0; i < n; i++)
		if (!isalnum((unsigned char)name[i]) && name[i] != '-')
			return NULL;
	return name;
}

static int audit_call(struct rest_call *c, int status, const struct cvm_err *res)
{
	struct cvm_audit_event ev = {
		.principal = c->oid[0] ? c->oid : NULL,
		.operation = c->route->audit_op ? c->route->audit_op : c->route->kind,
		.key_name = audit_key_name(c->key_name),
		.key_version = c->key_version[0] ? c->key_version : NULL,
		.status = status,
		.result = status < 400 ? "ok" : (res->code[0] ? res->code : "error"),
		.request_id = cvm_http_req_id(c->req),
		.source = cvm_http_req_remote(c->req),
	};
	struct cvm_err aerr = { 0 };
	int r = cvm_audit_append(c->rest->audit, &ev, NULL, &aerr);
	if (r < 0)
		cvm_log_error("audit_append_failed", "op=%s error=\"%s\"", c->route->kind, aerr.msg);
	return r;
}

/* Entra's error bodies carry when and which request: clients log them for support cases. */
static int oauth_error_ids(struct rest_call *c, json_t *oe)
{
	char ts[32];
	cvm_time_iso8601(cvm_now(), ts);
	const char *rid = cvm_http_req_id(c->req);
	const char *corr = cvm_http_req_header(c->req, "client-request-id");
	if (!corr || strlen(corr) > 64)
		corr = rid;
	json_t *t = json_string(ts), *tr = cvm_json_string_lossy(rid),
	       *co = cvm_json_string_lossy(corr);
	if (!t || !tr || !co) {
		json_decref(t);
		json_decref(tr);
		json_decref(co);
		return -ENOMEM;
	}
	if (json_object_set_new(oe, "timestamp", t) < 0 ||
	    json_object_set_new(oe, "trace_id", tr) < 0 ||
	    json_object_set_new(oe, "correlation_id", co) < 0)
		return -ENOMEM;
	return 0;
}

static int rest_dispatch(void *ctx, const struct cvm_http_req *req, struct cvm_http_resp *resp)
{
	struct rest_route_ctx *rc = ctx;
	struct rest_call c = {
		.rest = rc->rest,
		.route = rc->route,
		.req = req,
		.resp = resp,
	};
	struct cvm_err err = { 0 };
	json_t *out = NULL;

	call_base_url(&c);
	c.caller.request_id = cvm_http_req_id(req);
	c.caller.source = cvm_http_req_remote(req);
	c.caller.base_url = c.base_url;
	c.key_name = cvm_http_req_param(req, "name");
	const char *version = cvm_http_req_param(req, "version");
	if (version && strlen(version) == 32)
		snprintf(c.key_version, sizeof(c.key_version), "%s", version);

	int r = pre_handler(&c, &err);
	if (r >= 0)
		r = rc->route->fn(&c, &out, &err);
	json_decref(c.body);

	int status = r < 0 ? cvm_err_http_status(&err)
			   : (c.status ? c.status : (rc->route->status ? rc->route->status : 200));
	if (audit_call(&c, status, &err) < 0) {
		json_decref(out);
		cvm_err_internal(&err, "audit: the record could not be written; the result is "
				       "withheld");
		return cvm_http_resp_error(resp, &err);
	}
	if (r < 0) {
		if (err.errnum == EACCES && !strcmp(err.code, "Unauthorized") && set_challenge(&c) < 0)
			return -ENOMEM;
		if (rc->route->body == CVM_HSM_BODY_TOKEN_FORM && err.errnum != EBUSY &&
		    err.errnum != EIO && err.errnum != ENOMEM) {
			json_t *oe = cvm_hsm_oauth_error_json(&err);
			if (!oe || oauth_error_ids(&c, oe) < 0) {
				json_decref(oe);
				return -ENOMEM;
			}
			return cvm_http_resp_json(resp, status, oe);
		}
		return cvm_http_resp_error(resp, &err);
	}
	if (c.raw_response) {
		json_decref(out);
		return 0;
	}
	if (!out) {
		cvm_http_resp_status(resp, status);
		return 0;
	}
	return cvm_http_resp_json(resp, status, out);
}

int cvm_hsm_rest_authenticate(struct cvm_hsm_rest *rest, const struct cvm_http_req *req,
			      struct cvm_http_resp *resp, char base_url[CVM_HSM_REST_BASE_URL_MAX],
			      char oid[37], struct cvm_err *err)
{
	_Static_assert(sizeof(((struct rest_call *)0)->base_url) == CVM_HSM_REST_BASE_URL_MAX,
		       "base_url sizes agree");
	struct rest_call c = { .rest = rest, .req = req, .resp = resp };
	call_base_url(&c);
	memcpy(base_url, c.base_url, sizeof(c.base_url));
	int r = cvm_hsm_authenticate(rest->h, cvm_http_req_header(req, "Authorization"), c.base_url,
				     oid, err);
	if (r < 0 && err->errnum == EACCES && !strcmp(err->code, "Unauthorized") &&
	    set_challenge(&c) < 0)
		return cvm_err_nomem(err);
	return r;
}

/* ---- registration --------------------------------------------------------------------------- */

void cvm_hsm_rest_free(struct cvm_hsm_rest *r)
{
	if (!r)
		return;
	rest_domain_free(r->domain);
	free(r->ctx);
	free(r->base_url);
	free(r->backup_dir);
	free(r);
}

int cvm_hsm_register_routes(struct cvm_hsm *h, struct cvm_audit *audit,
			    struct cvm_http_server *srv, const struct cvm_hsm_rest_config *cfg,
			    struct cvm_hsm_rest **out, struct cvm_err *err)
{
	*out = NULL;
	if (!h || !audit || !srv || !cfg || !cfg->base_url)
		return cvm_err_badparam(err, "register_routes: hsm, audit, server and base_url "
					     "are required");
	struct cvm_hsm_rest *rest = calloc(1, sizeof(*rest));
	if (!rest)
		return cvm_err_nomem(err);
	rest->h = h;
	rest->audit = audit;
	rest->base_url = strdup(cfg->base_url);
	rest->backup_dir = cfg->backup_dir ? strdup(cfg->backup_dir) : NULL;
	rest->nctx = cvm_hsm_rest_key_routes_n + cvm_hsm_rest_admin_routes_n +
		     cvm_hsm_rest_domain_routes_n;
	rest->ctx = calloc(rest->nctx, sizeof(*rest->ctx));
	if (!rest->base_url || !rest->ctx || (cfg->backup_dir && !rest->backup_dir)) {
		cvm_hsm_rest_free(rest);
		return cvm_err_nomem(err);
	}
	size_t bl = strlen(rest->base_url);
	while (bl > 0 && rest->base_url[bl - 1] == '/')
		rest->base_url[--bl] = '\0';
	int r = cvm_hsm_tenant_id(h, rest->tenant, err);
	if (r == 0)
		r = rest_domain_new(h, cfg->activation_token_file, &rest->domain, err);
	if (r < 0) {
		cvm_hsm_rest_free(rest);
		return r;
	}
	for (size_t i = 0; i < rest->nctx; i++) {
		size_t ka = cvm_hsm_rest_key_routes_n + cvm_hsm_rest_admin_routes_n;
		const struct rest_route *rt = i < cvm_hsm_rest_key_routes_n
			? &cvm_hsm_rest_key_routes[i]
			: i < ka ? &cvm_hsm_rest_admin_routes[i - cvm_hsm_rest_key_routes_n]
				 : &cvm_hsm_rest_domain_routes[i - ka];
		rest->ctx[i] = (struct rest_route_ctx){ .rest = rest, .route = rt };
		r = cvm_http_route(srv, rt->method, rt->pattern, rest_dispatch, &rest->ctx[i], err);
		if (r < 0) {
			cvm_hsm_rest_free(rest);
			return cvm_err_prefix(err, "route %s %s", rt->method, rt->pattern);
		}
	}
	*out = rest;
	return 0;
}
