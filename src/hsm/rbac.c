/* SPDX-License-Identifier: Apache-2.0 */
/* hsm RBAC: Managed HSM local RBAC — built-in roles (exact names, GUIDs, data actions), custom
 * role definitions, role assignments at "/", "/keys" and "/keys/{name}", the access check with a
 * per-process cache kept fresh by a generation counter in the store, and the route -> data
 * action table REST uses. */
#include <ctype.h>
#include <string.h>
#include <strings.h>

#include "auth-internal.h"

#define DA "Microsoft.KeyVault/managedHsm/"
#define PROVIDER "/providers/Microsoft.Authorization/"

/* Every data action Managed HSM defines (rbac.json DataAction enum). */
static const char *const all_actions[] = {
	DA "keys/read/action", DA "keys/write/action", DA "keys/deletedKeys/read/action",
	DA "keys/deletedKeys/recover/action", DA "keys/backup/action", DA "keys/restore/action",
	DA "roleAssignments/delete/action", DA "roleAssignments/read/action",
	DA "roleAssignments/write/action", DA "roleDefinitions/read/action",
	DA "roleDefinitions/write/action", DA "roleDefinitions/delete/action",
	DA "keys/encrypt/action", DA "keys/decrypt/action", DA "keys/wrap/action",
	DA "keys/unwrap/action", DA "keys/sign/action", DA "keys/verify/action", DA "keys/create",
	DA "keys/delete", DA "keys/export/action", DA "keys/release/action",
	DA "keys/import/action", DA "keys/deletedKeys/delete", DA "securitydomain/download/action",
	DA "securitydomain/download/read", DA "securitydomain/upload/action",
	DA "securitydomain/upload/read", DA "securitydomain/transferkey/read",
	DA "backup/start/action", DA "restore/start/action", DA "backup/status/action",
	DA "restore/status/action", DA "rng/action",
};

struct builtin_role {
	const char *id;
	const char *name;
	const char *description;
	const char *const *actions; /* NULL-terminated */
};

#define ROLE_ACTIONS(...) ((const char *const[]){ __VA_ARGS__, NULL })
#define RA_ALL DA "roleAssignments/read/action", DA "roleAssignments/write/action", \
	DA "roleAssignments/delete/action"

/* Built-ins (learn.microsoft.com managed-hsm/built-in-roles). Separation of duties: the
 * Administrator manages the HSM (security domain, full backup/restore, roles) but holds no key
 * data action; crypto users use keys but cannot export or purge them. */
static const struct builtin_role builtins[] = {
	{ "a290e904-7015-4bba-90c8-60543313cdb4", "Managed HSM Administrator",
	  "Grants permissions to manage the security domain, full backup and restore, and role "
	  "management; does not grant access to keys.",
	  ROLE_ACTIONS(DA "securitydomain/download/action", DA "securitydomain/download/read",
		       DA "securitydomain/upload/action", DA "securitydomain/upload/read",
		       DA "securitydomain/transferkey/read", DA "backup/start/action",
		       DA "backup/status/action", DA "restore/start/action",
		       DA "restore/status/action", RA_ALL, DA "roleDefinitions/read/action",
		       DA "roleDefinitions/write/action", DA "roleDefinitions/delete/action") },
	{ "515eb02d-2335-4d2d-92f2-b1cbdf9c3778", "Managed HSM Crypto Officer",
	  "Grants permissions to manage role assignments, purge or recover deleted keys, and "
	  "export keys.",
	  ROLE_ACTIONS(RA_ALL, DA "roleDefinitions/read/action", DA "roleDefinitions/write/action",
		       DA "roleDefinitions/delete/action", DA "keys/deletedKeys/read/action",
		       DA "keys/deletedKeys/recover/action", DA "keys/deletedKeys/delete",
		       DA "keys/export/action") },
	{ "21dbd100-6940-42c2-9190-5d6cb909625b", "Managed HSM Crypto User",
	  "Grants permissions to perform all key management operations except purge or recover "
	  "deleted keys, and export keys.",
	  ROLE_ACTIONS(DA "keys/read/action", DA "keys/write/action", DA "keys/create",
		       DA "keys/delete", DA "keys/import/action", DA "keys/backup/action",
		       DA "keys/restore/action", DA "keys/deletedKeys/read/action",
		       DA "keys/encrypt/action", DA "keys/decrypt/action", DA "keys/wrap/action",
		       DA "keys/unwrap/action", DA "keys/sign/action", DA "keys/verify/action",
		       DA "keys/release/action", DA "rng/action") },
	{ "4bd23610-cdcf-4971-bdee-bdc562cc28e4", "Managed HSM Policy Administrator",
	  "Grants permission to create and delete role assignments.",
	  ROLE_ACTIONS(RA_ALL, DA "roleDefinitions/read/action") },
	{ "2c18b078-7c48-4d3a-af88-5a3a1b3f82b3", "Managed HSM Crypto Auditor",
	  "Grants read permissions to read (but not use) key attributes.",
	  ROLE_ACTIONS(DA "keys/read/action", DA "keys/deletedKeys/read/action",
		       DA "roleAssignments/read/action", DA "roleDefinitions/read/action",
		       DA "securitydomain/download/read", DA "securitydomain/upload/read",
		       DA "securitydomain/transferkey/read", DA "backup/status/action",
		       DA "restore/status/action") },
	{ "33413926-3206-4cdd-b39a-83574fe37a17", "Managed HSM Crypto Service Encryption User",
	  "Grants permissions to use a key for service encryption.",
	  ROLE_ACTIONS(DA "keys/read/action", DA "keys/wrap/action", DA "keys/unwrap/action") },
	{ "21dbd100-6940-42c2-9190-5d6cb909625c", "Managed HSM Crypto Service Release User",
	  "Grants permissions to release a key to a trusted execution environment.",
	  ROLE_ACTIONS(DA "keys/release/action") },
	{ "7b127d3c-77bd-4e3e-bbe0-dbb8971fa7f8", "Managed HSM Backup",
	  "Grants permissions to perform single key or whole HSM backup.",
	  ROLE_ACTIONS(DA "backup/start/action", DA "backup/status/action",
		       DA "keys/backup/action") },
	{ "6efe6056-5259-49d2-8b3d-d3d73544b20b", "Managed HSM Restore",
	  "Grants permissions to perform single key or whole HSM restore.",
	  ROLE_ACTIONS(DA "restore/start/action", DA "restore/status/action",
		       DA "keys/restore/action") },
};

static const struct builtin_role *builtin_find(const char *id)
{
	for (size_t i = 0; i < CVM_ARRAY_SIZE(builtins); i++)
		if (strcasecmp(builtins[i].id, id) == 0)
			return &builtins[i];
	return NULL;
}

/* ---- matching --------------------------------------------------------------------------- */

/* Azure action wildcard: '*' matches any run of characters; case-insensitive. */
static bool wild_match(const char *pat, const char *s)
{
	const char *star = NULL, *ss = NULL;
	while (*s) {
		if (*pat == '*') {
			star = pat++;
			ss = s;
		} else if (tolower((unsigned char)*pat) == tolower((unsigned char)*s)) {
			pat++;
			s++;
		} else if (star) {
			pat = star + 1;
			s = ++ss;
		} else {
			return false;
		}
	}
	while (*pat == '*')
		pat++;
	return *pat == 0;
}

static bool json_list_matches(json_t *arr, const char *action)
{
	size_t i;
	json_t *v;
	json_array_foreach(arr, i, v) {
		const char *p = json_string_value(v);
		if (p && wild_match(p, action))
			return true;
	}
	return false;
}

/* Custom role properties: allowed when some permission block allows and does not exclude. */
static bool custom_allows(json_t *props, const char *action)
{
	json_t *perms = json_object_get(props, "permissions");
	size_t i;
	json_t *blk;
	json_array_foreach(perms, i, blk) {
		if (json_list_matches(json_object_get(blk, "dataActions"), action) &&
		    !json_list_matches(json_object_get(blk, "notDataActions"), action))
			return true;
	}
	return false;
}

static bool builtin_allows(const struct builtin_role *b, const char *action)
{
	for (const char *const *a = b->actions; *a; a++)
		if (strcasecmp(*a, action) == 0)
			return true;
	return false;
}

/* Does an assignment at `as` apply to target scope `ts`? */
static bool scope_covers(const char *as, const char *ts)
{
	if (strcmp(as, "/") == 0)
		return true;
	if (strcmp(as, "/keys") == 0)
		return strcmp(ts, "/keys") == 0 || cvm_str_startswith(ts, "/keys/");
	return strcmp(as, ts) == 0;
}

/* ---- scopes and ids --------------------------------------------------------------------- */

/* Accepts "/", "/keys", "/keys/{name}" (also without the leading '/', as REST may pass the
 * path part); writes the canonical form. */
static int scope_norm(const char *scope, char out[CVM_HSM_NAME_MAX + 8], bool allow_key,
		      struct cvm_err *err)
{
	if (!scope || !*scope || strcmp(scope, "/") == 0) {
		strcpy(out, "/");
		return 0;
	}
	const char *s = scope[0] == '/' ? scope + 1 : scope;
	size_t n = strlen(s);
	if (n && s[n - 1] == '/')
		n--;
	if (n == 4 && strncasecmp(s, "keys", 4) == 0) {
		strcpy(out, "/keys");
		return 0;
	}
	if (allow_key && n > 5 && strncasecmp(s, "keys/", 5) == 0 &&
	    n - 5 <= CVM_HSM_NAME_MAX) {
		char name[CVM_HSM_NAME_MAX + 1];
		memcpy(name, s + 5, n - 5);
		name[n - 5] = 0;
		struct cvm_err e2 = { 0 };
		if (cvm_hsm_check_name(name, &e2) == 0) {
			snprintf(out, CVM_HSM_NAME_MAX + 8, "/keys/%s", name);
			return 0;
		}
	}
	return cvm_err_badparam(err, "scope: expected \"/\", \"/keys\"%s, got \"%s\"",
				allow_key ? " or \"/keys/{name}\"" : "", scope);
}

static const char *scope_prefix(const char *scope)
{
	return strcmp(scope, "/") == 0 ? "" : scope;
}

/* "<anything>/providers/Microsoft.Authorization/roleDefinitions/<guid>" or "<guid>". */
static int role_id_parse(const char *s, char out[37], struct cvm_err *err)
{
	const char *g = s;
	const char *p = s ? strrchr(s, '/') : NULL;
	if (p) {
		const char *m = strstr(s, PROVIDER "roleDefinitions/");
		if (!m || m + strlen(PROVIDER "roleDefinitions/") != p + 1)
			return cvm_err_badparam(err, "properties.roleDefinitionId: expected "
						"\"/providers/Microsoft.Authorization/"
						"roleDefinitions/<guid>\" or a GUID");
		g = p + 1;
	}
	if (!hsm_is_guid(g))
		return cvm_err_badparam(err, "properties.roleDefinitionId: expected a role "
					"definition GUID");
	for (int i = 0; i < 37; i++)
		out[i] = (char)tolower((unsigned char)g[i]);
	return 0;
}

/* ---- cache ------------------------------------------------------------------------------ */

int hsm_rbac_bump(struct cvm_tx *tx, struct cvm_err *err)
{
	return cvm_tx_exec(tx, "UPDATE hsm_auth_meta SET i = i + 1 WHERE k = 'rbac_gen'", NULL, 0,
			   NULL, err);
}

void hsm_rbac_invalidate(struct cvm_hsm *h)
{
	struct cvm_hsm_auth *a = __atomic_load_n(&h->auth, __ATOMIC_ACQUIRE);
	if (!a)
		return;
	pthread_mutex_lock(&a->rbac_lock);
	a->rbac_valid = false;
	pthread_mutex_unlock(&a->rbac_lock);
}

static int rbac_gen(struct cvm_tx *tx, int64_t *gen, struct cvm_err *err)
{
	_cleanup_rows_ struct cvm_rows *rows = NULL;
	int r = cvm_tx_query(tx, "SELECT i FROM hsm_auth_meta WHERE k = 'rbac_gen'", NULL, 0,
			     &rows, err);
	if (r < 0)
		return r;
	*gen = cvm_rows_int(rows, 0, 0);
	return 0;
}

static int rbac_load(struct cvm_tx *tx, json_t **assignments, json_t **custom,
		     struct cvm_err *err)
{
	_cleanup_rows_ struct cvm_rows *ra = NULL, *rd = NULL;
	int r = cvm_tx_query(tx, "SELECT name, scope, role_id, principal_id FROM "
			     "hsm_role_assignments ORDER BY created, name", NULL, 0, &ra, err);
	if (r < 0)
		return r;
	r = cvm_tx_query(tx, "SELECT name, body FROM hsm_role_definitions", NULL, 0, &rd, err);
	if (r < 0)
		return r;
	_cleanup_json_ json_t *as = json_array(), *cu = json_object();
	if (!as || !cu)
		return cvm_err_nomem(err);
	for (size_t i = 0; i < cvm_rows_count(ra); i++) {
		json_t *o = json_pack("{s:s?,s:s?,s:s?,s:s?}", "name", cvm_rows_text(ra, i, 0),
				      "scope", cvm_rows_text(ra, i, 1), "role",
				      cvm_rows_text(ra, i, 2), "principal", cvm_rows_text(ra, i, 3));
		if (!o || json_array_append_new(as, o) < 0)
			return cvm_err_nomem(err);
	}
	for (size_t i = 0; i < cvm_rows_count(rd); i++) {
		const char *body = cvm_rows_text(rd, i, 1);
		json_t *props = body ? json_loads(body, 0, NULL) : NULL;
		if (!props)
			return cvm_err_internal(err, "hsm_role_definitions: malformed row");
		if (json_object_set_new(cu, cvm_rows_text(rd, i, 0), props) < 0)
			return cvm_err_nomem(err);
	}
	*assignments = CVM_TAKE(as);
	*custom = CVM_TAKE(cu);
	return 0;
}

/* Refresh the cache when invalid or when another process may have changed RBAC: at most one
 * generation read per CVM_HSM_RBAC_MAX_STALE_MS. Caller holds rbac_lock. */
static int rbac_refresh(struct cvm_hsm *h, struct cvm_hsm_auth *a, struct cvm_err *err)
{
	uint64_t now = cvm_monotonic_ns();
	if (a->rbac_valid && now - a->rbac_checked_ns < (uint64_t)CVM_HSM_RBAC_MAX_STALE_MS * 1000000u)
		return 0;
	_cleanup_tx_ struct cvm_tx *tx = NULL;
	int r = cvm_tx_begin(h->store, CVM_TX_READ, &tx, err);
	if (r < 0)
		return r;
	int64_t gen;
	if ((r = rbac_gen(tx, &gen, err)) < 0)
		return r;
	if (!a->rbac_valid || gen != a->rbac_gen) {
		json_t *as = NULL, *cu = NULL;
		if ((r = rbac_load(tx, &as, &cu, err)) < 0)
			return r;
		if (a->rbac_assignments)
			json_decref(a->rbac_assignments);
		if (a->rbac_custom)
			json_decref(a->rbac_custom);
		a->rbac_assignments = as;
		a->rbac_custom = cu;
		a->rbac_gen = gen;
		a->rbac_valid = true;
	}
	a->rbac_checked_ns = now;
	return 0;
}

/* ---- access check ----------------------------------------------------------------------- */

int cvm_hsm_rbac_check_scope(struct cvm_hsm *h, const char *oid, const char *data_action,
			     const char *scope, struct cvm_err *err)
{
	if (!oid || !data_action)
		return cvm_err_badparam(err, "rbac: principal and data action are required");
	char ts[CVM_HSM_NAME_MAX + 8];
	int r = scope_norm(scope, ts, true, err);
	if (r < 0)
		return r;
	struct cvm_hsm_auth *a;
	if ((r = hsm_auth(h, &a, err)) < 0)
		return r;
	bool allowed = false;
	pthread_mutex_lock(&a->rbac_lock);
	r = rbac_refresh(h, a, err);
	if (r == 0) {
		size_t i;
		json_t *as;
		json_array_foreach(a->rbac_assignments, i, as) {
			const char *p = json_string_value(json_object_get(as, "principal"));
			const char *s = json_string_value(json_object_get(as, "scope"));
			const char *role = json_string_value(json_object_get(as, "role"));
			if (!p || !s || !role || strcasecmp(p, oid) != 0 || !scope_covers(s, ts))
				continue;
			const struct builtin_role *b = builtin_find(role);
			json_t *props = b ? NULL : json_object_get(a->rbac_custom, role);
			if ((b && builtin_allows(b, data_action)) ||
			    (props && custom_allows(props, data_action))) {
				allowed = true;
				break;
			}
		}
	}
	pthread_mutex_unlock(&a->rbac_lock);
	if (r < 0)
		return r;
	if (!allowed)
		return cvm_err_set(err, EPERM, "Forbidden",
				   "Operation not allowed: principal '%s' does not have data action "
				   "'%s' at scope '%s' (no role assignment grants it).", oid,
				   data_action, ts);
	return 0;
}

int cvm_hsm_rbac_check(struct cvm_hsm *h, const char *oid, const char *data_action,
		       const char *key_name, struct cvm_err *err)
{
	if (!data_action)
		return cvm_err_badparam(err, "rbac: data action is required");
	char scope[CVM_HSM_NAME_MAX + 8];
	if (key_name && *key_name) {
		int r = cvm_hsm_check_name(key_name, err);
		if (r < 0)
			return r;
		snprintf(scope, sizeof(scope), "/keys/%s", key_name);
	} else {
		strcpy(scope, strncasecmp(data_action, DA "keys/", strlen(DA "keys/")) == 0 ?
			      "/keys" : "/");
	}
	return cvm_hsm_rbac_check_scope(h, oid, data_action, scope, err);
}

/* ---- role definitions ------------------------------------------------------------------- */

static json_t *strings_json(const char *const *list)
{
	json_t *a = json_array();
	for (; a && list && *list; list++)
		if (json_array_append_new(a, json_string(*list)) < 0) {
			json_decref(a);
			return NULL;
		}
	return a;
}

static json_t *role_def_json(const char *scope, const char *id, json_t *props)
{
	char *rid = cvm_asprintf("%s" PROVIDER "roleDefinitions/%s", scope_prefix(scope), id);
	json_t *o = rid ? json_pack("{s:s,s:s,s:s,s:O}", "id", rid, "name", id, "type",
				    "Microsoft.Authorization/roleDefinitions", "properties", props)
			: NULL;
	free(rid);
	return o;
}

static json_t *builtin_props(const struct builtin_role *b)
{
	return json_pack("{s:s,s:s,s:s,s:[{s:[],s:[],s:o,s:[]}],s:[s]}", "roleName", b->name,
			 "description", b->description, "type", "AKVBuiltInRole", "permissions",
			 "actions", "notActions", "dataActions", strings_json(b->actions),
			 "notDataActions", "assignableScopes", "/");
}

static int role_scope(const char *scope, char out[CVM_HSM_NAME_MAX + 8], struct cvm_err *err)
{
	return scope_norm(scope, out, false, err);
}

static int rbac_snapshot(struct cvm_hsm *h, json_t **assignments, json_t **custom,
			 struct cvm_err *err)
{
	struct cvm_hsm_auth *a;
	int r = hsm_auth(h, &a, err);
	if (r < 0)
		return r;
	pthread_mutex_lock(&a->rbac_lock);
	/* Management reads see the store as it is now, not the check cache's view. */
	a->rbac_valid = false;
	r = rbac_refresh(h, a, err);
	if (r == 0) {
		if (assignments)
			*assignments = json_deep_copy(a->rbac_assignments);
		if (custom)
			*custom = json_deep_copy(a->rbac_custom);
	}
	pthread_mutex_unlock(&a->rbac_lock);
	if (r == 0 && ((assignments && !*assignments) || (custom && !*custom)))
		return cvm_err_nomem(err);
	return r;
}

int cvm_hsm_role_definitions_list(struct cvm_hsm *h, const char *scope, json_t **out,
				  struct cvm_err *err)
{
	char sc[CVM_HSM_NAME_MAX + 8];
	int r = role_scope(scope, sc, err);
	if (r < 0)
		return r;
	_cleanup_json_ json_t *custom = NULL;
	if ((r = rbac_snapshot(h, NULL, &custom, err)) < 0)
		return r;
	_cleanup_json_ json_t *arr = json_array();
	if (!arr)
		return cvm_err_nomem(err);
	for (size_t i = 0; i < CVM_ARRAY_SIZE(builtins); i++) {
		_cleanup_json_ json_t *props = builtin_props(&builtins[i]);
		if (!props || json_array_append_new(arr, role_def_json(sc, builtins[i].id, props)) < 0)
			return cvm_err_nomem(err);
	}
	const char *id;
	json_t *props;
	json_object_foreach(custom, id, props) {
		if (json_array_append_new(arr, role_def_json(sc, id, props)) < 0)
			return cvm_err_nomem(err);
	}
	*out = json_pack("{s:O}", "value", arr);
	return *out ? 0 : cvm_err_nomem(err);
}

static int role_not_found(struct cvm_err *err, const char *name)
{
	return cvm_err_set(err, ENOENT, "RoleDefinitionNotFound",
			   "Role definition '%s' was not found.", name);
}

int cvm_hsm_role_definition_get(struct cvm_hsm *h, const char *scope, const char *name,
				json_t **out, struct cvm_err *err)
{
	char sc[CVM_HSM_NAME_MAX + 8];
	int r = role_scope(scope, sc, err);
	if (r < 0)
		return r;
	if (!hsm_is_guid(name))
		return cvm_err_badparam(err, "roleDefinitionName: expected a GUID");
	const struct builtin_role *b = builtin_find(name);
	if (b) {
		_cleanup_json_ json_t *props = builtin_props(b);
		*out = props ? role_def_json(sc, b->id, props) : NULL;
		return *out ? 0 : cvm_err_nomem(err);
	}
	_cleanup_json_ json_t *custom = NULL;
	if ((r = rbac_snapshot(h, NULL, &custom, err)) < 0)
		return r;
	char lower[37];
	for (int i = 0; i < 37; i++)
		lower[i] = (char)tolower((unsigned char)name[i]);
	json_t *props = json_object_get(custom, lower);
	if (!props)
		return role_not_found(err, name);
	*out = role_def_json(sc, lower, props);
	return *out ? 0 : cvm_err_nomem(err);
}

/* A data action pattern is valid when it matches at least one Managed HSM data action. */
static int check_action_list(json_t *blk, const char *field, size_t bi, bool required,
			     json_t **out, struct cvm_err *err)
{
	char path[96];
	snprintf(path, sizeof(path), "properties.permissions[%zu].%s", bi, field);
	json_t *arr;
	int r = cvm_json_str_array(blk, field, path, required, NULL, &arr, err);
	if (r < 0)
		return r;
	*out = arr ? json_deep_copy(arr) : json_array();
	if (!*out)
		return cvm_err_nomem(err);
	size_t i;
	json_t *v;
	json_array_foreach(arr, i, v) {
		const char *pat = json_string_value(v);
		bool known = false;
		for (size_t k = 0; k < CVM_ARRAY_SIZE(all_actions) && !known; k++)
			known = wild_match(pat, all_actions[k]);
		if (!known) {
			json_decref(*out);
			*out = NULL;
			return cvm_err_badparam(err, "%s[%zu]: '%s' is not a Managed HSM data "
						"action", path, i, pat);
		}
	}
	return 0;
}

static int role_props_from_body(json_t *body, json_t **out, const char **role_name,
				struct cvm_err *err)
{
	json_t *props, *perms;
	int r = cvm_json_obj(body, "properties", "properties", true, &props, err);
	if (r < 0)
		return r;
	const char *name, *desc = NULL, *type = NULL;
	if ((r = cvm_json_str(props, "roleName", "properties.roleName", true, &name, NULL, err)) < 0 ||
	    (r = cvm_json_str(props, "description", "properties.description", false, &desc, NULL,
			      err)) < 0 ||
	    (r = cvm_json_str(props, "type", "properties.type", false, &type, NULL, err)) < 0 ||
	    (r = cvm_json_arr(props, "permissions", "properties.permissions", true, &perms,
			      err)) < 0)
		return r;
	if (!*name || strlen(name) > 256)
		return cvm_err_badparam(err, "properties.roleName: expected 1 to 256 characters");
	if (type && strcmp(type, "CustomRole") != 0)
		return cvm_err_badparam(err, "properties.type: expected \"CustomRole\"");
	if (json_array_size(perms) == 0)
		return cvm_err_badparam(err, "properties.permissions: expected at least one "
					"permission");
	_cleanup_json_ json_t *pout = json_array();
	if (!pout)
		return cvm_err_nomem(err);
	size_t i;
	json_t *blk;
	json_array_foreach(perms, i, blk) {
		if (!json_is_object(blk))
			return cvm_err_badparam(err, "properties.permissions[%zu]: expected an "
						"object", i);
		_cleanup_json_ json_t *da = NULL, *nda = NULL;
		if ((r = check_action_list(blk, "dataActions", i, false, &da, err)) < 0 ||
		    (r = check_action_list(blk, "notDataActions", i, false, &nda, err)) < 0)
			return r;
		json_t *a = json_object_get(blk, "actions"), *na = json_object_get(blk, "notActions");
		if ((a && json_array_size(a)) || (na && json_array_size(na)))
			return cvm_err_badparam(err, "properties.permissions[%zu]: Managed HSM "
						"roles use dataActions only; actions/notActions must "
						"be empty", i);
		if (json_array_append_new(pout, json_pack("{s:[],s:[],s:O,s:O}", "actions",
							  "notActions", "dataActions", da,
							  "notDataActions", nda)) < 0)
			return cvm_err_nomem(err);
	}
	*out = json_pack("{s:s,s:s,s:s,s:O,s:[s]}", "roleName", name, "description",
			 desc ? desc : "", "type", "CustomRole", "permissions", pout,
			 "assignableScopes", "/");
	*role_name = name;
	return *out ? 0 : cvm_err_nomem(err);
}

struct role_put_ctx {
	const char *id;
	const char *role_name;
	const char *body;
};

static int role_put_tx(struct cvm_tx *tx, void *ctx, struct cvm_err *err)
{
	struct role_put_ctx *c = ctx;
	struct cvm_val p[] = { CVM_VAL_S(c->role_name), CVM_VAL_S(c->id) };
	_cleanup_rows_ struct cvm_rows *rows = NULL;
	int r = cvm_tx_query(tx, "SELECT name FROM hsm_role_definitions WHERE role_name = ? AND "
			     "name <> ?", p, 2, &rows, err);
	if (r < 0)
		return r;
	if (cvm_rows_count(rows))
		return cvm_err_set(err, EEXIST, "Conflict",
				   "properties.roleName: a role named '%s' already exists",
				   c->role_name);
	struct cvm_val v[] = { CVM_VAL_S(c->id), CVM_VAL_S(c->role_name), CVM_VAL_S(c->body),
			       CVM_VAL_I(cvm_now()) };
	r = cvm_tx_exec(tx, "INSERT INTO hsm_role_definitions (name, role_name, body, created) "
			"VALUES (?, ?, ?, ?) ON CONFLICT (name) DO UPDATE SET role_name = "
			"excluded.role_name, body = excluded.body", v, 4, NULL, err);
	if (r < 0)
		return r;
	return hsm_rbac_bump(tx, err);
}

int cvm_hsm_role_definition_put(struct cvm_hsm *h, const char *scope, const char *name,
				json_t *body, json_t **out, struct cvm_err *err)
{
	char sc[CVM_HSM_NAME_MAX + 8];
	int r = role_scope(scope, sc, err);
	if (r < 0)
		return r;
	if (!hsm_is_guid(name))
		return cvm_err_badparam(err, "roleDefinitionName: expected a GUID");
	if (builtin_find(name))
		return cvm_err_set(err, EPERM, "Forbidden",
				   "roleDefinitionName: built-in role %s cannot be modified", name);
	struct cvm_hsm_auth *a;
	if ((r = hsm_auth(h, &a, err)) < 0)
		return r;
	_cleanup_json_ json_t *props = NULL;
	const char *role_name = NULL;
	if ((r = role_props_from_body(body, &props, &role_name, err)) < 0)
		return r;
	for (size_t i = 0; i < CVM_ARRAY_SIZE(builtins); i++)
		if (strcasecmp(builtins[i].name, role_name) == 0)
			return cvm_err_set(err, EEXIST, "Conflict",
					   "properties.roleName: '%s' is a built-in role name",
					   role_name);
	char lower[37];
	for (int i = 0; i < 37; i++)
		lower[i] = (char)tolower((unsigned char)name[i]);
	_cleanup_free_ char *text = cvm_json_dump(props);
	if (!text)
		return cvm_err_nomem(err);
	struct role_put_ctx c = { .id = lower, .role_name = role_name, .body = text };
	r = cvm_store_transact(h->store, CVM_TX_WRITE, role_put_tx, &c, err);
	hsm_rbac_invalidate(h);
	if (r < 0)
		return r;
	cvm_log_info("hsm_role_definition_put", "id=%s", lower);
	*out = role_def_json(sc, lower, props);
	return *out ? 0 : cvm_err_nomem(err);
}

static int role_delete_tx(struct cvm_tx *tx, void *ctx, struct cvm_err *err)
{
	const char *id = ctx;
	struct cvm_val p[] = { CVM_VAL_S(id) };
	_cleanup_rows_ struct cvm_rows *rows = NULL;
	int r = cvm_tx_query(tx, "SELECT COUNT(*) FROM hsm_role_assignments WHERE role_id = ?", p,
			     1, &rows, err);
	if (r < 0)
		return r;
	int64_t n = cvm_rows_int(rows, 0, 0);
	if (n > 0)
		return cvm_err_set(err, EBUSY, "Conflict",
				   "Role definition %s is used by %lld role assignment(s); delete "
				   "them first.", id, (long long)n);
	int64_t changes = 0;
	r = cvm_tx_exec(tx, "DELETE FROM hsm_role_definitions WHERE name = ?", p, 1, &changes, err);
	if (r < 0)
		return r;
	if (changes == 0)
		return role_not_found(err, id);
	return hsm_rbac_bump(tx, err);
}

int cvm_hsm_role_definition_delete(struct cvm_hsm *h, const char *scope, const char *name,
				   struct cvm_err *err)
{
	char sc[CVM_HSM_NAME_MAX + 8];
	int r = role_scope(scope, sc, err);
	if (r < 0)
		return r;
	if (!hsm_is_guid(name))
		return cvm_err_badparam(err, "roleDefinitionName: expected a GUID");
	if (builtin_find(name))
		return cvm_err_set(err, EPERM, "Forbidden",
				   "roleDefinitionName: built-in role %s cannot be deleted", name);
	struct cvm_hsm_auth *a;
	if ((r = hsm_auth(h, &a, err)) < 0)
		return r;
	char lower[37];
	for (int i = 0; i < 37; i++)
		lower[i] = (char)tolower((unsigned char)name[i]);
	r = cvm_store_transact(h->store, CVM_TX_WRITE, role_delete_tx, lower, err);
	hsm_rbac_invalidate(h);
	if (r == 0)
		cvm_log_info("hsm_role_definition_deleted", "id=%s", lower);
	return r;
}

/* ---- role assignments ------------------------------------------------------------------- */

static json_t *assignment_json(const char *name, const char *scope, const char *role,
			       const char *principal)
{
	char *id = cvm_asprintf("%s" PROVIDER "roleAssignments/%s", scope_prefix(scope), name);
	char *rid = cvm_asprintf("%s" PROVIDER "roleDefinitions/%s", scope_prefix(scope), role);
	json_t *o = id && rid ? json_pack("{s:s,s:s,s:s,s:{s:s,s:s,s:s}}", "id", id, "name", name,
					  "type", "Microsoft.Authorization/roleAssignments",
					  "properties", "scope", scope, "roleDefinitionId", rid,
					  "principalId", principal)
			      : NULL;
	free(id);
	free(rid);
	return o;
}

static int assignment_not_found(struct cvm_err *err, const char *name)
{
	return cvm_err_set(err, ENOENT, "RoleAssignmentNotFound",
			   "Role assignment '%s' was not found.", name);
}

struct ra_put_ctx {
	const char *name, *scope, *role, *principal;
};

static int ra_put_tx(struct cvm_tx *tx, void *ctx, struct cvm_err *err)
{
	struct ra_put_ctx *c = ctx;
	struct cvm_val pp[] = { CVM_VAL_S(c->principal) };
	_cleanup_rows_ struct cvm_rows *rows = NULL;
	int r = cvm_tx_query(tx, "SELECT oid FROM hsm_principals WHERE oid = ?", pp, 1, &rows,
			     err);
	if (r < 0)
		return r;
	if (cvm_rows_count(rows) == 0)
		return cvm_err_badparam(err, "properties.principalId: no principal with object id "
					"'%s'", c->principal);
	if (!builtin_find(c->role)) {
		struct cvm_val rp[] = { CVM_VAL_S(c->role) };
		_cleanup_rows_ struct cvm_rows *rr = NULL;
		if ((r = cvm_tx_query(tx, "SELECT name FROM hsm_role_definitions WHERE name = ?", rp,
				      1, &rr, err)) < 0)
			return r;
		if (cvm_rows_count(rr) == 0)
			return cvm_err_badparam(err, "properties.roleDefinitionId: no role "
						"definition '%s'", c->role);
	}
	struct cvm_val np[] = { CVM_VAL_S(c->name) };
	_cleanup_rows_ struct cvm_rows *ex = NULL;
	if ((r = cvm_tx_query(tx, "SELECT scope, role_id, principal_id FROM hsm_role_assignments "
			      "WHERE name = ?", np, 1, &ex, err)) < 0)
		return r;
	if (cvm_rows_count(ex)) {
		if (strcmp(cvm_rows_text(ex, 0, 0), c->scope) == 0 &&
		    strcmp(cvm_rows_text(ex, 0, 1), c->role) == 0 &&
		    strcmp(cvm_rows_text(ex, 0, 2), c->principal) == 0)
			return 0;
		return cvm_err_set(err, EEXIST, "Conflict",
				   "RoleAssignmentExists: role assignment '%s' already exists with "
				   "different properties", c->name);
	}
	struct cvm_val v[] = { CVM_VAL_S(c->name), CVM_VAL_S(c->scope), CVM_VAL_S(c->role),
			       CVM_VAL_S(c->principal), CVM_VAL_I(cvm_now()) };
	r = cvm_tx_exec(tx, "INSERT INTO hsm_role_assignments (name, scope, role_id, principal_id, "
			"created) VALUES (?, ?, ?, ?, ?)", v, 5, NULL, err);
	if (r < 0)
		return r;
	return hsm_rbac_bump(tx, err);
}

int cvm_hsm_role_assignment_put(struct cvm_hsm *h, const char *scope, const char *name,
				json_t *body, json_t **out, struct cvm_err *err)
{
	char sc[CVM_HSM_NAME_MAX + 8];
	int r = scope_norm(scope, sc, true, err);
	if (r < 0)
		return r;
	if (!hsm_is_guid(name))
		return cvm_err_badparam(err, "roleAssignmentName: expected a GUID");
	struct cvm_hsm_auth *a;
	if ((r = hsm_auth(h, &a, err)) < 0)
		return r;
	json_t *props;
	const char *rid, *pid;
	if ((r = cvm_json_obj(body, "properties", "properties", true, &props, err)) < 0 ||
	    (r = cvm_json_str(props, "roleDefinitionId", "properties.roleDefinitionId", true, &rid,
			      NULL, err)) < 0 ||
	    (r = cvm_json_str(props, "principalId", "properties.principalId", true, &pid, NULL,
			      err)) < 0)
		return r;
	char role[37], principal[37], lname[37];
	if ((r = role_id_parse(rid, role, err)) < 0)
		return r;
	if (!hsm_is_guid(pid))
		return cvm_err_badparam(err, "properties.principalId: expected an object id GUID");
	for (int i = 0; i < 37; i++) {
		principal[i] = (char)tolower((unsigned char)pid[i]);
		lname[i] = (char)tolower((unsigned char)name[i]);
	}
	struct ra_put_ctx c = { .name = lname, .scope = sc, .role = role, .principal = principal };
	r = cvm_store_transact(h->store, CVM_TX_WRITE, ra_put_tx, &c, err);
	hsm_rbac_invalidate(h);
	if (r < 0)
		return r;
	cvm_log_info("hsm_role_assignment_put", "name=%s scope=%s role=%s principal=%s", lname, sc,
		     role, principal);
	*out = assignment_json(lname, sc, role, principal);
	return *out ? 0 : cvm_err_nomem(err);
}

static json_t *assignment_from_cache(json_t *as)
{
	return assignment_json(json_string_value(json_object_get(as, "name")),
			       json_string_value(json_object_get(as, "scope")),
			       json_string_value(json_object_get(as, "role")),
			       json_string_value(json_object_get(as, "principal")));
}

static int find_assignment(struct cvm_hsm *h, const char *scope, const char *name,
			   json_t **out, struct cvm_err *err)
{
	char sc[CVM_HSM_NAME_MAX + 8];
	int r = scope_norm(scope, sc, true, err);
	if (r < 0)
		return r;
	if (!hsm_is_guid(name))
		return cvm_err_badparam(err, "roleAssignmentName: expected a GUID");
	_cleanup_json_ json_t *all = NULL;
	if ((r = rbac_snapshot(h, &all, NULL, err)) < 0)
		return r;
	size_t i;
	json_t *as;
	json_array_foreach(all, i, as) {
		if (strcasecmp(json_string_value(json_object_get(as, "name")), name) == 0 &&
		    strcmp(json_string_value(json_object_get(as, "scope")), sc) == 0) {
			*out = assignment_from_cache(as);
			return *out ? 0 : cvm_err_nomem(err);
		}
	}
	return assignment_not_found(err, name);
}

int cvm_hsm_role_assignment_get(struct cvm_hsm *h, const char *scope, const char *name,
				json_t **out, struct cvm_err *err)
{
	return find_assignment(h, scope, name, out, err);
}

static int ra_delete_tx(struct cvm_tx *tx, void *ctx, struct cvm_err *err)
{
	const char **nv = ctx;
	struct cvm_val p[] = { CVM_VAL_S(nv[0]), CVM_VAL_S(nv[1]) };
	int64_t changes = 0;
	int r = cvm_tx_exec(tx, "DELETE FROM hsm_role_assignments WHERE name = ? AND scope = ?", p,
			    2, &changes, err);
	if (r < 0)
		return r;
	if (changes == 0)
		return assignment_not_found(err, nv[0]);
	return hsm_rbac_bump(tx, err);
}

int cvm_hsm_role_assignment_delete(struct cvm_hsm *h, const char *scope, const char *name,
				   json_t **out, struct cvm_err *err)
{
	_cleanup_json_ json_t *cur = NULL;
	int r = find_assignment(h, scope, name, &cur, err);
	if (r < 0)
		return r;
	const char *nv[2] = { json_string_value(json_object_get(cur, "name")),
			      json_string_value(json_object_get(json_object_get(cur, "properties"), "scope")) };
	r = cvm_store_transact(h->store, CVM_TX_WRITE, ra_delete_tx, nv, err);
	hsm_rbac_invalidate(h);
	if (r < 0)
		return r;
	cvm_log_info("hsm_role_assignment_deleted", "name=%s", nv[0]);
	*out = CVM_TAKE(cur);
	return 0;
}

/* Parse "principalId eq '<guid>'" / "atScope()". */
static int parse_filter(const char *filter, bool *at_scope, char principal[37],
			struct cvm_err *err)
{
	*at_scope = false;
	principal[0] = 0;
	if (!filter || !*filter)
		return 0;
	while (*filter == ' ')
		filter++;
	if (strcasecmp(filter, "atScope()") == 0) {
		*at_scope = true;
		return 0;
	}
	const char *kw = "principalId eq '";
	size_t kl = strlen(kw), n = strlen(filter);
	if (n == kl + 37 && strncasecmp(filter, kw, kl) == 0 && filter[n - 1] == '\'') {
		char g[37];
		memcpy(g, filter + kl, 36);
		g[36] = 0;
		if (hsm_is_guid(g)) {
			for (int i = 0; i < 37; i++)
				principal[i] = (char)tolower((unsigned char)g[i]);
			return 0;
		}
	}
	return cvm_err_badparam(err, "$filter: expected \"atScope()\" or \"principalId eq "
				"'<guid>'\"");
}

int cvm_hsm_role_assignment_list(struct cvm_hsm *h, const char *scope, const char *filter,
				 json_t **out, struct cvm_err *err)
{
	char sc[CVM_HSM_NAME_MAX + 8], principal[37];
	bool at_scope;
	int r = scope_norm(scope, sc, true, err);
	if (r < 0 || (r = parse_filter(filter, &at_scope, principal, err)) < 0)
		return r;
	_cleanup_json_ json_t *all = NULL;
	if ((r = rbac_snapshot(h, &all, NULL, err)) < 0)
		return r;
	_cleanup_json_ json_t *arr = json_array();
	if (!arr)
		return cvm_err_nomem(err);
	size_t i;
	json_t *as;
	json_array_foreach(all, i, as) {
		const char *s = json_string_value(json_object_get(as, "scope"));
		bool above = scope_covers(s, sc), below = scope_covers(sc, s);
		if (at_scope ? !above : !(above || below))
			continue;
		if (principal[0] &&
		    strcmp(json_string_value(json_object_get(as, "principal")), principal) != 0)
			continue;
		if (json_array_append_new(arr, assignment_from_cache(as)) < 0)
			return cvm_err_nomem(err);
	}
	*out = json_pack("{s:O}", "value", arr);
	return *out ? 0 : cvm_err_nomem(err);
}

/* ---- route -> data action --------------------------------------------------------------- */

struct route_action {
	const char *kind;
	const char *method; /* NULL = any */
	const char *action;
};

static const struct route_action routes[] = {
	{ "keys/create", NULL, DA "keys/create" },
	{ "keys/import", NULL, DA "keys/import/action" },
	{ "keys/get", NULL, DA "keys/read/action" },
	{ "keys/list", NULL, DA "keys/read/action" },
	{ "keys/versions", NULL, DA "keys/read/action" },
	{ "keys/attestation", NULL, DA "keys/read/action" },
	{ "keys/update", NULL, DA "keys/write/action" },
	{ "keys/delete", NULL, DA "keys/delete" },
	{ "keys/backup", NULL, DA "keys/backup/action" },
	{ "keys/restore", NULL, DA "keys/restore/action" },
	{ "keys/encrypt", NULL, DA "keys/encrypt/action" },
	{ "keys/decrypt", NULL, DA "keys/decrypt/action" },
	{ "keys/wrapkey", NULL, DA "keys/wrap/action" },
	{ "keys/unwrapkey", NULL, DA "keys/unwrap/action" },
	{ "keys/sign", NULL, DA "keys/sign/action" },
	{ "keys/verify", NULL, DA "keys/verify/action" },
	{ "keys/release", NULL, DA "keys/release/action" },
	{ "keys/export", NULL, DA "keys/export/action" },
	/* Rotation creates a new version; Managed HSM's action list has no separate rotate. */
	{ "keys/rotate", NULL, DA "keys/create" },
	{ "keys/rotationpolicy", "GET", DA "keys/read/action" },
	{ "keys/rotationpolicy", NULL, DA "keys/write/action" },
	{ "deletedkeys/get", NULL, DA "keys/deletedKeys/read/action" },
	{ "deletedkeys/list", NULL, DA "keys/deletedKeys/read/action" },
	{ "deletedkeys/recover", NULL, DA "keys/deletedKeys/recover/action" },
	{ "deletedkeys/purge", NULL, DA "keys/deletedKeys/delete" },
	{ "rng", NULL, DA "rng/action" },
	{ "roleAssignments", "GET", DA "roleAssignments/read/action" },
	{ "roleAssignments", "PUT", DA "roleAssignments/write/action" },
	{ "roleAssignments", "DELETE", DA "roleAssignments/delete/action" },
	{ "roleDefinitions", "GET", DA "roleDefinitions/read/action" },
	{ "roleDefinitions", "PUT", DA "roleDefinitions/write/action" },
	{ "roleDefinitions", "DELETE", DA "roleDefinitions/delete/action" },
	{ "securitydomain/download", NULL, DA "securitydomain/download/action" },
	{ "securitydomain/download/status", NULL, DA "securitydomain/download/read" },
	{ "securitydomain/upload", NULL, DA "securitydomain/upload/action" },
	{ "securitydomain/upload/status", NULL, DA "securitydomain/upload/read" },
	{ "securitydomain/transferkey", NULL, DA "securitydomain/transferkey/read" },
	{ "backup/start", NULL, DA "backup/start/action" },
	{ "backup/status", NULL, DA "backup/status/action" },
	{ "restore/start", NULL, DA "restore/start/action" },
	{ "restore/status", NULL, DA "restore/status/action" },
};

const char *cvm_hsm_data_action(const char *method, const char *route_kind)
{
	if (!route_kind)
		return NULL;
	for (size_t i = 0; i < CVM_ARRAY_SIZE(routes); i++) {
		if (strcasecmp(routes[i].kind, route_kind) != 0)
			continue;
		if (routes[i].method && (!method || strcasecmp(routes[i].method, method) != 0))
			continue;
		return routes[i].action;
	}
	return NULL;
}
