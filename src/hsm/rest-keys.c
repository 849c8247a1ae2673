/* SPDX-License-Identifier: Apache-2.0 */
/* Key Vault keys REST routes: each handler maps one route onto one hsm call. */
#include <string.h>

#include "rest-internal.h"

#define P(c, n) cvm_http_req_param((c)->req, (n))

static int h_create(struct rest_call *c, json_t **out, struct cvm_err *err)
{
	int r = cvm_hsm_key_create(c->rest->h, &c->caller, P(c, "name"), c->body, out, err);
	if (r == 0)
		rest_note_kid(c, *out);
	return r;
}

static int h_import(struct rest_call *c, json_t **out, struct cvm_err *err)
{
	int r = cvm_hsm_key_import(c->rest->h, &c->caller, P(c, "name"), c->body, out, err);
	if (r == 0)
		rest_note_kid(c, *out);
	return r;
}

static int h_get(struct rest_call *c, json_t **out, struct cvm_err *err)
{
	int r = cvm_hsm_key_get(c->rest->h, &c->caller, P(c, "name"), P(c, "version"), out, err);
	if (r == 0)
		rest_note_kid(c, *out);
	return r;
}

static int h_update(struct rest_call *c, json_t **out, struct cvm_err *err)
{
	int r = cvm_hsm_key_update(c->rest->h, &c->caller, P(c, "name"), P(c, "version"), c->body,
				   out, err);
	if (r == 0)
		rest_note_kid(c, *out);
	return r;
}

static int h_list(struct rest_call *c, json_t **out, struct cvm_err *err)
{
	int max;
	int r = rest_query_maxresults(c, &max, err);
	if (r < 0)
		return r;
	return cvm_hsm_key_list(c->rest->h, &c->caller, max,
				cvm_http_req_query(c->req, "$skiptoken"), c->api_version, out, err);
}

static int h_versions(struct rest_call *c, json_t **out, struct cvm_err *err)
{
	int max;
	int r = rest_query_maxresults(c, &max, err);
	if (r < 0)
		return r;
	return cvm_hsm_key_versions(c->rest->h, &c->caller, P(c, "name"), max,
				    cvm_http_req_query(c->req, "$skiptoken"), c->api_version, out,
				    err);
}

static int h_delete(struct rest_call *c, json_t **out, struct cvm_err *err)
{
	return cvm_hsm_key_delete(c->rest->h, &c->caller, P(c, "name"), out, err);
}

static int h_deleted_get(struct rest_call *c, json_t **out, struct cvm_err *err)
{
	return cvm_hsm_deleted_get(c->rest->h, &c->caller, P(c, "name"), out, err);
}

static int h_deleted_list(struct rest_call *c, json_t **out, struct cvm_err *err)
{
	int max;
	int r = rest_query_maxresults(c, &max, err);
	if (r < 0)
		return r;
	return cvm_hsm_deleted_list(c->rest->h, &c->caller, max,
				    cvm_http_req_query(c->req, "$skiptoken"), c->api_version, out,
				    err);
}

static int h_recover(struct rest_call *c, json_t **out, struct cvm_err *err)
{
	int r = cvm_hsm_deleted_recover(c->rest->h, &c->caller, P(c, "name"), out, err);
	if (r == 0)
		rest_note_kid(c, *out);
	return r;
}

static int h_purge(struct rest_call *c, json_t **out, struct cvm_err *err)
{
	*out = NULL;
	return cvm_hsm_deleted_purge(c->rest->h, &c->caller, P(c, "name"), err);
}

/* The op is the last path segment; the route kind already names it ("keys/wrapkey"). */
static int h_op(struct rest_call *c, json_t **out, struct cvm_err *err)
{
	const char *op = strchr(c->route->kind, '/') + 1;
	return cvm_hsm_key_op(c->rest->h, &c->caller, P(c, "name"), P(c, "version"), op, c->body,
			      out, err);
}

static int h_release(struct rest_call *c, json_t **out, struct cvm_err *err)
{
	return cvm_hsm_key_release(c->rest->h, &c->caller, P(c, "name"), P(c, "version"),
				   c->api_version, c->body, out, err);
}

static int h_backup(struct rest_call *c, json_t **out, struct cvm_err *err)
{
	return cvm_hsm_key_backup(c->rest->h, &c->caller, P(c, "name"), out, err);
}

static int h_restore(struct rest_call *c, json_t **out, struct cvm_err *err)
{
	int r = cvm_hsm_key_restore(c->rest->h, &c->caller, c->body, out, err);
	if (r == 0)
		rest_note_kid(c, *out); /* the restored name is known only from the result */
	return r;
}

static int h_rotate(struct rest_call *c, json_t **out, struct cvm_err *err)
{
	int r = cvm_hsm_key_rotate(c->rest->h, &c->caller, P(c, "name"), out, err);
	if (r == 0)
		rest_note_kid(c, *out);
	return r;
}

static int h_rotation_get(struct rest_call *c, json_t **out, struct cvm_err *err)
{
	return cvm_hsm_rotation_policy_get(c->rest->h, &c->caller, P(c, "name"), out, err);
}

static int h_rotation_put(struct rest_call *c, json_t **out, struct cvm_err *err)
{
	return cvm_hsm_rotation_policy_put(c->rest->h, &c->caller, P(c, "name"), c->body, out,
					   err);
}

static int h_rng(struct rest_call *c, json_t **out, struct cvm_err *err)
{
	return cvm_hsm_rng(c->rest->h, c->body, out, err);
}

#define KEYS (REST_AUTH | REST_API_VERSION | REST_KEY_SCOPE)
#define OP(verb, body)                                                                   \
	ROUTE("POST", "/keys/{name}/{version}/" verb, "keys/" verb, body, KEYS, 0, h_op)

/* Order matters: the first matching pattern wins, so literal segments come before {version}. */
const struct rest_route cvm_hsm_rest_key_routes[] = {
	ROUTE("GET", "/keys", "keys/list", CVM_HSM_BODY_NONE, REST_AUTH | REST_API_VERSION, 0, h_list),
	ROUTE("POST", "/keys/restore", "keys/restore", CVM_HSM_BODY_KEY_RESTORE,
	  REST_AUTH | REST_API_VERSION, 0, h_restore),
	ROUTE("POST", "/keys/{name}/create", "keys/create", CVM_HSM_BODY_KEY_CREATE, KEYS, 0,
	  h_create),
	ROUTE("PUT", "/keys/{name}", "keys/import", CVM_HSM_BODY_KEY_IMPORT, KEYS, 0, h_import),
	ROUTE("DELETE", "/keys/{name}", "keys/delete", CVM_HSM_BODY_NONE, KEYS, 0, h_delete),
	ROUTE("GET", "/keys/{name}", "keys/get", CVM_HSM_BODY_NONE, KEYS, 0, h_get),
	ROUTE("PATCH", "/keys/{name}", "keys/update", CVM_HSM_BODY_KEY_UPDATE, KEYS, 0, h_update),
	ROUTE("GET", "/keys/{name}/versions", "keys/versions", CVM_HSM_BODY_NONE, KEYS, 0,
	  h_versions),
	ROUTE("GET", "/keys/{name}/rotationpolicy", "keys/rotationpolicy", CVM_HSM_BODY_NONE, KEYS, 0,
	  h_rotation_get),
	ROUTE("PUT", "/keys/{name}/rotationpolicy", "keys/rotationpolicy",
	  CVM_HSM_BODY_ROTATION_POLICY, KEYS, 0, h_rotation_put),
	ROUTE("POST", "/keys/{name}/rotate", "keys/rotate", CVM_HSM_BODY_NONE, KEYS, 0, h_rotate),
	ROUTE("POST", "/keys/{name}/backup", "keys/backup", CVM_HSM_BODY_NONE, KEYS, 0, h_backup),
	ROUTE("POST", "/keys/{name}/release", "keys/release", CVM_HSM_BODY_KEY_RELEASE, KEYS, 0,
	  h_release),
	ROUTE("GET", "/keys/{name}/{version}", "keys/get", CVM_HSM_BODY_NONE, KEYS, 0, h_get),
	ROUTE("PATCH", "/keys/{name}/{version}", "keys/update", CVM_HSM_BODY_KEY_UPDATE, KEYS, 0,
	  h_update),
	OP("encrypt", CVM_HSM_BODY_KEY_CRYPT),
	OP("decrypt", CVM_HSM_BODY_KEY_CRYPT),
	OP("wrapkey", CVM_HSM_BODY_KEY_CRYPT),
	OP("unwrapkey", CVM_HSM_BODY_KEY_CRYPT),
	OP("sign", CVM_HSM_BODY_KEY_SIGN),
	OP("verify", CVM_HSM_BODY_KEY_VERIFY),
	ROUTE("POST", "/keys/{name}/{version}/release", "keys/release", CVM_HSM_BODY_KEY_RELEASE, KEYS,
	  0, h_release),
	ROUTE("GET", "/deletedkeys", "deletedkeys/list", CVM_HSM_BODY_NONE,
	  REST_AUTH | REST_API_VERSION, 0, h_deleted_list),
	ROUTE("GET", "/deletedkeys/{name}", "deletedkeys/get", CVM_HSM_BODY_NONE, KEYS, 0,
	  h_deleted_get),
	ROUTE("DELETE", "/deletedkeys/{name}", "deletedkeys/purge", CVM_HSM_BODY_NONE, KEYS, 204,
	  h_purge),
	ROUTE("POST", "/deletedkeys/{name}/recover", "deletedkeys/recover", CVM_HSM_BODY_NONE, KEYS, 0,
	  h_recover),
	ROUTE("POST", "/rng", "rng", CVM_HSM_BODY_RNG, REST_AUTH | REST_API_VERSION, 0, h_rng),
};
const size_t cvm_hsm_rest_key_routes_n = CVM_ARRAY_SIZE(cvm_hsm_rest_key_routes);
