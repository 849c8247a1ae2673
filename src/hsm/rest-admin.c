/* SPDX-License-Identifier: Apache-2.0 */
/* Administrative REST routes: OAuth token endpoint (+ the OIDC metadata MSAL reads first),
 * Managed HSM RBAC role definitions/assignments, full backup/restore. */
#include <string.h>
#include <sys/stat.h>
#include <time.h>

#include <opencvm/json.h>

#include "rest-internal.h"

#define P(c, n) cvm_http_req_param((c)->req, (n))

/* ---- OAuth ------------------------------------------------------------------------------------ */

static int h_token(struct rest_call *c, json_t **out, struct cvm_err *err)
{
	size_t len = 0;
	const uint8_t *form = cvm_http_req_body(c->req, &len);
	return cvm_hsm_oauth_token(c->rest->h, c->base_url, P(c, "tenant"), form, len, out, err);
}

/* What MSAL (ClientSecretCredential) fetches before asking for a token: the tenant's OpenID
 * metadata. Only the token endpoint is real; the others are named because MSAL requires them. */
static int h_openid(struct rest_call *c, json_t **out, struct cvm_err *err)
{
	const char *t = P(c, "tenant");
	if (strcmp(t, c->rest->tenant) && strcmp(t, "organizations") && strcmp(t, "common"))
		return cvm_err_set(err, ENOENT, "invalid_tenant", "tenant: unknown tenant");
	const char *b = c->base_url, *id = c->rest->tenant;
	_cleanup_free_ char *tok = cvm_asprintf("%s/%s/oauth2/v2.0/token", b, id);
	_cleanup_free_ char *authz = cvm_asprintf("%s/%s/oauth2/v2.0/authorize", b, id);
	_cleanup_free_ char *iss = cvm_asprintf("%s/%s/v2.0", b, id);
	_cleanup_free_ char *jwks = cvm_asprintf("%s/%s/discovery/v2.0/keys", b, id);
	_cleanup_free_ char *logout = cvm_asprintf("%s/%s/oauth2/v2.0/logout", b, id);
	if (!tok || !authz || !iss || !jwks || !logout)
		return cvm_err_nomem(err);
	*out = json_pack("{s:s,s:s,s:s,s:s,s:s,s:[s],s:[s],s:[s],s:[s,s]}", "token_endpoint", tok,
			 "authorization_endpoint", authz, "issuer", iss, "jwks_uri", jwks,
			 "end_session_endpoint", logout, "response_types_supported", "token",
			 "subject_types_supported", "pairwise",
			 "id_token_signing_alg_values_supported", "RS256",
			 "token_endpoint_auth_methods_supported", "client_secret_post",
			 "private_key_jwt");
	return *out ? 0 : cvm_err_nomem(err);
}

/* ---- RBAC ------------------------------------------------------------------------------------- */

static int h_roledef_list(struct rest_call *c, json_t **out, struct cvm_err *err)
{
	return cvm_hsm_role_definitions_list(c->rest->h, c->scope, out, err);
}

static int h_roledef_get(struct rest_call *c, json_t **out, struct cvm_err *err)
{
	return cvm_hsm_role_definition_get(c->rest->h, c->scope, P(c, "rname"), out, err);
}

static int h_roledef_put(struct rest_call *c, json_t **out, struct cvm_err *err)
{
	return cvm_hsm_role_definition_put(c->rest->h, c->scope, P(c, "rname"), c->body, out, err);
}

static int h_roledef_delete(struct rest_call *c, json_t **out, struct cvm_err *err)
{
	/* Key Vault answers the DELETE with the deleted definition. */
	int r = cvm_hsm_role_definition_get(c->rest->h, c->scope, P(c, "rname"), out, err);
	if (r < 0)
		return r;
	r = cvm_hsm_role_definition_delete(c->rest->h, c->scope, P(c, "rname"), err);
	if (r < 0) {
		json_decref(*out);
		*out = NULL;
	}
	return r;
}

static int h_ra_list(struct rest_call *c, json_t **out, struct cvm_err *err)
{
	return cvm_hsm_role_assignment_list(c->rest->h, c->scope,
					    cvm_http_req_query(c->req, "$filter"), out, err);
}

static int h_ra_get(struct rest_call *c, json_t **out, struct cvm_err *err)
{
	return cvm_hsm_role_assignment_get(c->rest->h, c->scope, P(c, "rname"), out, err);
}

static int h_ra_put(struct rest_call *c, json_t **out, struct cvm_err *err)
{
	return cvm_hsm_role_assignment_put(c->rest->h, c->scope, P(c, "rname"), c->body, out, err);
}

static int h_ra_delete(struct rest_call *c, json_t **out, struct cvm_err *err)
{
	return cvm_hsm_role_assignment_delete(c->rest->h, c->scope, P(c, "rname"), out, err);
}

/* ---- identities ---------------------------------------------------------------------------- */

static int h_principal_put(struct rest_call *c, json_t **out, struct cvm_err *err)
{
	static const char *const kinds[] = { "User", "ServicePrincipal", "ManagedIdentity", NULL };
	const char *kind = NULL, *cert = NULL;
	int r = cvm_json_enum(c->body, "kind", "kind", false, kinds, &kind, err);
	if (r == 0)
		r = cvm_json_str(c->body, "certificate", "certificate", false, &cert, NULL, err);
	if (r < 0)
		return r;
	enum cvm_principal_kind k = CVM_PRINCIPAL_SERVICE;
	if (kind && !strcmp(kind, "User"))
		k = CVM_PRINCIPAL_USER;
	else if (kind && !strcmp(kind, "ManagedIdentity"))
		k = CVM_PRINCIPAL_MANAGED;
	struct cvm_principal_info info = { 0 };
	_cleanup_secret_ struct cvm_secret *secret = NULL;
	r = cvm_hsm_principal_create(c->rest->h, P(c, "pname"), k, cert, &info, &secret, err);
	if (r < 0)
		return r;
	*out = json_pack("{s:s,s:s,s:s,s:s}", "name", info.name ? info.name : P(c, "pname"),
			 "object_id", info.oid, "client_id", info.client_id, "kind",
			 cvm_principal_kind_name(info.kind));
	cvm_principal_info_clear(&info);
	if (!*out)
		return cvm_err_nomem(err);
	if (secret) {
		json_t *s = json_stringn((const char *)secret->data, secret->len);
		if (!s || json_object_set_new(*out, "client_secret", s) < 0)
			return cvm_err_nomem(err);
	}
	return 0;
}

static int h_principal_list(struct rest_call *c, json_t **out, struct cvm_err *err)
{
	return cvm_hsm_principal_list(c->rest->h, out, err);
}

static int h_principal_delete(struct rest_call *c, json_t **out, struct cvm_err *err)
{
	*out = NULL;
	return cvm_hsm_principal_delete(c->rest->h, P(c, "pname"), err);
}

/* ---- full backup / restore -------------------------------------------------------------------- */

static int backup_container_check(struct rest_call *c, const char *uri, const char *what,
				  struct cvm_err *err)
{
	if (!c->rest->backup_dir)
		return cvm_err_set(err, EPERM, "Forbidden",
				   "%s: full backup is not configured on this server (backup_dir)",
				   what);
	if (!cvm_str_startswith(uri, "file://") || strcmp(uri + 7, c->rest->backup_dir))
		return cvm_err_badparam(err, "%s: expected \"file://%s\"", what, c->rest->backup_dir);
	return 0;
}

/* Folder names this server creates: "mhsm-backup-YYYYMMDDhhmmss-<8 hex>". */
static int folder_check(const char *f, const char *what, struct cvm_err *err)
{
	size_t n = strlen(f);
	if (n == 0 || n > 64 || strchr(f, '/') || f[0] == '.' || !cvm_str_startswith(f, "mhsm-"))
		return cvm_err_badparam(err, "%s: expected a folder name created by /backup", what);
	return 0;
}

static json_t *job_status(const char *job, const char *details, const char *folder_uri,
			  int64_t start)
{
	return json_pack("{s:s,s:s,s:s,s:I,s:I,s:s?}", "status", "Succeeded", "statusDetails",
			 details, "jobId", job, "startTime", (json_int_t)start, "endTime",
			 (json_int_t)cvm_now(), "azureStorageBlobContainerUri", folder_uri);
}

static int h_backup_full(struct rest_call *c, json_t **out, struct cvm_err *err)
{
	const char *uri = json_string_value(json_object_get(c->body, "storageResourceUri"));
	int r = backup_container_check(c, uri, "storageResourceUri", err);
	if (r < 0)
		return r;
	int64_t start = cvm_now();
	char stamp[32], rnd[33];
	struct tm tm;
	time_t t = (time_t)start;
	gmtime_r(&t, &tm);
	strftime(stamp, sizeof(stamp), "%Y%m%d%H%M%S", &tm);
	r = cvm_random_hex32(rnd, err);
	if (r < 0)
		return r;
	_cleanup_free_ char *folder = cvm_asprintf("mhsm-backup-%s-%.8s", stamp, rnd);
	_cleanup_free_ char *dir = folder ? cvm_path_join(c->rest->backup_dir, folder) : NULL;
	_cleanup_free_ char *furi = dir ? cvm_asprintf("file://%s", dir) : NULL;
	if (!furi)
		return cvm_err_nomem(err);
	r = cvm_mkdir_p(dir, 0700, err);
	if (r < 0)
		return r;
	r = cvm_hsm_full_backup(c->rest->h, dir, err);
	if (r < 0)
		return r;
	*out = job_status(folder, "Full backup completed", furi, start);
	if (!*out)
		return cvm_err_nomem(err);
	_cleanup_free_ char *async = cvm_asprintf("%s/backup/%s/pending", c->base_url, folder);
	if (!async || cvm_http_resp_header(c->resp, "Azure-AsyncOperation", async) < 0)
		return cvm_err_nomem(err);
	return 0;
}

static int h_restore_full(struct rest_call *c, json_t **out, struct cvm_err *err)
{
	json_t *sas = json_object_get(c->body, "sasTokenParameters");
	const char *uri = json_string_value(json_object_get(sas, "storageResourceUri"));
	int r;
	if (uri && (r = backup_container_check(c, uri, "sasTokenParameters.storageResourceUri",
					       err)) < 0)
		return r;
	if (!c->rest->backup_dir)
		return backup_container_check(c, "", "folderToRestore", err);
	const char *folder = json_string_value(json_object_get(c->body, "folderToRestore"));
	r = folder_check(folder, "folderToRestore", err);
	if (r < 0)
		return r;
	int64_t start = cvm_now();
	_cleanup_free_ char *dir = cvm_path_join(c->rest->backup_dir, folder);
	if (!dir)
		return cvm_err_nomem(err);
	r = cvm_hsm_full_restore(c->rest->h, dir, err);
	if (r < 0)
		return r;
	_cleanup_free_ char *job = cvm_asprintf("restore-%s", folder);
	if (!job)
		return cvm_err_nomem(err);
	*out = job_status(job, "Full restore completed", NULL, start);
	return *out ? 0 : cvm_err_nomem(err);
}

/* Jobs run synchronously: a job id exists only for a job that succeeded, so the status of a
 * known id is "Succeeded"; backup ids are checked against the folders on disk. */
static int h_job_status(struct rest_call *c, json_t **out, struct cvm_err *err)
{
	const char *job = P(c, "job");
	bool restore = cvm_str_startswith(cvm_http_req_path(c->req), "/restore/");
	const char *folder = restore && cvm_str_startswith(job, "restore-") ? job + 8 : job;
	int r = folder_check(folder, "jobId", err);
	if (r < 0)
		return r;
	if (!c->rest->backup_dir)
		return cvm_err_set(err, ENOENT, "NotFound", "jobId: no such job");
	_cleanup_free_ char *dir = cvm_path_join(c->rest->backup_dir, folder);
	_cleanup_free_ char *manifest = dir ? cvm_path_join(dir, "manifest.json") : NULL;
	_cleanup_free_ char *furi = dir ? cvm_asprintf("file://%s", dir) : NULL;
	if (!furi || !manifest)
		return cvm_err_nomem(err);
	struct stat st;
	if (stat(manifest, &st) < 0)
		return cvm_err_set(err, ENOENT, "NotFound", "jobId: no such job");
	*out = job_status(job, restore ? "Full restore completed" : "Full backup completed",
			  restore ? NULL : furi, (int64_t)st.st_mtime);
	return *out ? 0 : cvm_err_nomem(err);
}

#define ADM (REST_AUTH | REST_API_VERSION)
#define RBAC (REST_AUTH | REST_API_VERSION | REST_SCOPED)
#define PROV "/providers/Microsoft.Authorization/"
/* Three scope shapes per RBAC route: "/" (empty prefix), "/keys", "/keys/{name}". */
#define SCOPED(method, suffix, kind, body, status, fn)                                      \
	ROUTE(method, PROV suffix, kind, body, RBAC, status, fn),                              \
	ROUTE(method, "/{s1}" PROV suffix, kind, body, RBAC, status, fn),                      \
	ROUTE(method, "/{s1}/{s2}" PROV suffix, kind, body, RBAC, status, fn)

const struct rest_route cvm_hsm_rest_admin_routes[] = {
	ROUTE("POST", "/{tenant}/oauth2/v2.0/token", "oauth2/token", CVM_HSM_BODY_TOKEN_FORM, 0, 0,
	      h_token),
	ROUTE("GET", "/{tenant}/v2.0/.well-known/openid-configuration", "oauth2/openid",
	  CVM_HSM_BODY_NONE, 0, 0, h_openid),
	SCOPED("GET", "roleDefinitions", "roleDefinitions", CVM_HSM_BODY_NONE, 0, h_roledef_list),
	SCOPED("GET", "roleDefinitions/{rname}", "roleDefinitions", CVM_HSM_BODY_NONE, 0,
	       h_roledef_get),
	SCOPED("PUT", "roleDefinitions/{rname}", "roleDefinitions", CVM_HSM_BODY_ROLE_DEFINITION,
	       201, h_roledef_put),
	SCOPED("DELETE", "roleDefinitions/{rname}", "roleDefinitions", CVM_HSM_BODY_NONE, 0,
	       h_roledef_delete),
	SCOPED("GET", "roleAssignments", "roleAssignments", CVM_HSM_BODY_NONE, 0, h_ra_list),
	SCOPED("GET", "roleAssignments/{rname}", "roleAssignments", CVM_HSM_BODY_NONE, 0,
	       h_ra_get),
	SCOPED("PUT", "roleAssignments/{rname}", "roleAssignments", CVM_HSM_BODY_ROLE_ASSIGNMENT,
	       201, h_ra_put),
	SCOPED("DELETE", "roleAssignments/{rname}", "roleAssignments", CVM_HSM_BODY_NONE, 0,
	       h_ra_delete),
	ROUTE("PUT", "/opencvm/principals/{pname}", "roleAssignments", CVM_HSM_BODY_PRINCIPAL, ADM,
	  201, h_principal_put, "principals/create"),
	ROUTE("GET", "/opencvm/principals", "roleAssignments", CVM_HSM_BODY_NONE, ADM, 0,
	      h_principal_list, "principals/list"),
	ROUTE("DELETE", "/opencvm/principals/{pname}", "roleAssignments", CVM_HSM_BODY_NONE, ADM, 204,
	      h_principal_delete, "principals/delete"),
	ROUTE("POST", "/backup", "backup/start", CVM_HSM_BODY_FULL_BACKUP, ADM, 202, h_backup_full),
	ROUTE("GET", "/backup/{job}/pending", "backup/status", CVM_HSM_BODY_NONE, ADM, 0,
	      h_job_status),
	ROUTE("PUT", "/restore", "restore/start", CVM_HSM_BODY_FULL_RESTORE, ADM, 202, h_restore_full),
	ROUTE("GET", "/restore/{job}/pending", "restore/status", CVM_HSM_BODY_NONE, ADM, 0,
	      h_job_status),
};
const size_t cvm_hsm_rest_admin_routes_n = CVM_ARRAY_SIZE(cvm_hsm_rest_admin_routes);
