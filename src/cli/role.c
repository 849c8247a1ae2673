/* SPDX-License-Identifier: Apache-2.0 */
/* cvm role ...: Managed HSM local RBAC (role definitions and assignments). */
#include "cli.h"

#include <string.h>

#define PROV "/providers/Microsoft.Authorization"

/* "/" -> "", "/keys/NAME" stays: the scope is the path prefix before /providers. */
static int scope_prefix(const char *scope, const char **out, const char *usage)
{
	if (!scope || strcmp(scope, "/") == 0) {
		*out = "";
		return 0;
	}
	if (strcmp(scope, "/keys") == 0 || cvm_str_startswith(scope, "/keys/")) {
		for (const char *p = scope + 1; *p; p++)
			if (!((*p >= 'a' && *p <= 'z') || (*p >= 'A' && *p <= 'Z') ||
			      (*p >= '0' && *p <= '9') || *p == '-' || *p == '/'))
				return cli_usage_error(usage, "--scope '%s': invalid character", scope);
		*out = scope;
		return 0;
	}
	return cli_usage_error(usage, "--scope: expected /, /keys or /keys/NAME, got '%s'", scope);
}

static int def_list(struct cli *cli, int argc, char **argv)
{
	const char *usage = "role def list [--scope S]", *scope = NULL, *pfx;
	const struct cli_opt opts[] = {{"--scope", true, &scope, NULL, NULL}};
	int rc = cli_parse(argc, argv, opts, 1, NULL, 0, 0, NULL, usage);
	if (rc || (rc = scope_prefix(scope, &pfx, usage)))
		return rc;
	_cleanup_free_ char *path = cvm_asprintf("%s" PROV "/roleDefinitions", pfx);
	json_t *res = NULL;
	struct cvm_err err = {0};
	if (cli_call(cli, "GET", path, NULL, &res, &err) < 0)
		return cli_fail(&err, "role def list");
	if (cli->json) {
		cli_print_json(res);
	} else {
		const char *h[] = {"ROLE", "ID", "TYPE"};
		const char *p[] = {"properties.roleName", "name", "properties.type"};
		cli_print_table(json_object_get(res, "value"), h, p, 3);
	}
	json_decref(res);
	return CLI_OK;
}

static json_t *split_list(const char *csv)
{
	json_t *a = json_array();
	if (!csv)
		return a;
	_cleanup_free_ char *copy = strdup(csv);
	char *save = NULL;
	for (char *t = strtok_r(copy, ",", &save); t; t = strtok_r(NULL, ",", &save))
		json_array_append_new(a, json_string(t));
	return a;
}

static int def_create(struct cli *cli, int argc, char **argv)
{
	const char *usage = "role def create --name ROLENAME --data-actions a,b "
			    "[--not-data-actions a,b] [--description TEXT] [--id GUID]";
	const char *name = NULL, *actions = NULL, *not_actions = NULL, *desc = "", *id = NULL;
	const struct cli_opt opts[] = {
		{"--name", true, &name, NULL, NULL},
		{"--data-actions", true, &actions, NULL, NULL},
		{"--not-data-actions", true, &not_actions, NULL, NULL},
		{"--description", true, &desc, NULL, NULL},
		{"--id", true, &id, NULL, NULL},
	};
	int rc = cli_parse(argc, argv, opts, CVM_ARRAY_SIZE(opts), NULL, 0, 0, NULL, usage);
	if (rc)
		return rc;
	if (!name || !actions)
		return cli_usage_error(usage, "--name and --data-actions are required");
	char guid[37];
	struct cvm_err err = {0};
	if (!id) {
		if (cvm_uuid4(guid, &err) < 0)
			return cli_fail(&err, "role def create");
		id = guid;
	}
	json_t *perm = json_pack("{s:[],s:[],s:o,s:o}", "actions", "notActions", "dataActions",
				 split_list(actions), "notDataActions", split_list(not_actions));
	json_t *body = json_pack("{s:{s:s,s:s,s:s,s:[o],s:[s]}}", "properties", "roleName", name,
				 "description", desc, "type", "CustomRole", "permissions", perm,
				 "assignableScopes", "/");
	_cleanup_free_ char *path = cvm_asprintf(PROV "/roleDefinitions/%s", id);
	json_t *res = NULL;
	int r = cli_call(cli, "PUT", path, body, &res, &err);
	json_decref(body);
	if (r < 0)
		return cli_fail(&err, "role def create");
	if (cli->json)
		cli_print_json(res);
	else
		printf("role '%s' created: %s\n", name, id);
	json_decref(res);
	return CLI_OK;
}

static int role_def(struct cli *cli, int argc, char **argv)
{
	static const struct cli_verb verbs[] = {
		{"list", def_list, "def list [--scope S]"},
		{"create", def_create, "def create --name ROLENAME --data-actions a,b [...]"},
	};
	return cli_dispatch(cli, "role", verbs, CVM_ARRAY_SIZE(verbs), argc - 1, argv + 1);
}

/* Accept a role by id/guid or by name ("Managed HSM Crypto User" or "Crypto User"). */
static int resolve_role(struct cli *cli, const char *role, char **id, struct cvm_err *err)
{
	json_t *res = NULL;
	int r = cli_call(cli, "GET", PROV "/roleDefinitions", NULL, &res, err);
	if (r < 0)
		return r;
	json_t *v;
	size_t i;
	json_array_foreach(json_object_get(res, "value"), i, v) {
		const char *name = json_string_value(json_object_get(v, "name"));
		const char *rid = json_string_value(json_object_get(v, "id"));
		const char *rn = json_string_value(cvm_json_path(v, "properties.roleName"));
		bool hit = (name && strcasecmp(name, role) == 0) || (rid && strcasecmp(rid, role) == 0);
		if (!hit && rn) {
			hit = strcasecmp(rn, role) == 0;
			/* "Crypto User" is accepted for "Managed HSM Crypto User". */
			const char *short_rn = cvm_str_startswith(rn, "Managed HSM ") ? rn + 12 : rn;
			hit = hit || strcasecmp(short_rn, role) == 0;
		}
		if (hit) {
			*id = strdup(rid ? rid : name);
			json_decref(res);
			return *id ? 0 : cvm_err_nomem(err);
		}
	}
	json_decref(res);
	return cvm_err_set(err, ENOENT, "RoleNotFound",
			   "--role: no role definition named '%s' (see `cvm role def list`)", role);
}

/* Accept a principal by object id, client id or name. */
static int resolve_principal(struct cli *cli, const char *who, char **oid, struct cvm_err *err)
{
	json_t *res = NULL;
	int r = cli_call(cli, "GET", "/opencvm/principals", NULL, &res, err);
	if (r < 0)
		return r;
	json_t *list = json_is_array(res) ? res : json_object_get(res, "value"), *v;
	size_t i;
	json_array_foreach(list, i, v) {
		/* the list names it "oid", the create response "object_id" */
		const char *o = json_string_value(json_object_get(v, "oid"));
		if (!o)
			o = json_string_value(json_object_get(v, "object_id"));
		if (!o)
			continue;
		const char *c = json_string_value(json_object_get(v, "client_id"));
		const char *n = json_string_value(json_object_get(v, "name"));
		if ((o && strcmp(o, who) == 0) || (c && strcmp(c, who) == 0) ||
		    (n && strcmp(n, who) == 0)) {
			*oid = strdup(o);
			json_decref(res);
			return *oid ? 0 : cvm_err_nomem(err);
		}
	}
	json_decref(res);
	return cvm_err_set(err, ENOENT, "PrincipalNotFound",
			   "--principal: no identity '%s' (see `cvm identity list`)", who);
}

static int role_assign(struct cli *cli, int argc, char **argv)
{
	const char *usage = "role assign --role ROLE --principal ID|NAME [--scope /|/keys|/keys/NAME] "
			    "[--name GUID]";
	const char *role = NULL, *who = NULL, *scope = NULL, *name = NULL, *pfx;
	const struct cli_opt opts[] = {
		{"--role", true, &role, NULL, NULL}, {"--principal", true, &who, NULL, NULL},
		{"--scope", true, &scope, NULL, NULL}, {"--name", true, &name, NULL, NULL},
	};
	int rc = cli_parse(argc, argv, opts, CVM_ARRAY_SIZE(opts), NULL, 0, 0, NULL, usage);
	if (rc || (rc = scope_prefix(scope, &pfx, usage)))
		return rc;
	if (!role || !who)
		return cli_usage_error(usage, "--role and --principal are required");
	struct cvm_err err = {0};
	_cleanup_free_ char *role_id = NULL, *oid = NULL;
	char guid[37];
	if (resolve_role(cli, role, &role_id, &err) < 0 ||
	    resolve_principal(cli, who, &oid, &err) < 0 || (!name && cvm_uuid4(guid, &err) < 0))
		return cli_fail(&err, "role assign");
	json_t *body = json_pack("{s:{s:s,s:s}}", "properties", "roleDefinitionId", role_id,
				 "principalId", oid);
	_cleanup_free_ char *path =
		cvm_asprintf("%s" PROV "/roleAssignments/%s", pfx, name ? name : guid);
	json_t *res = NULL;
	int r = cli_call(cli, "PUT", path, body, &res, &err);
	json_decref(body);
	if (r < 0)
		return cli_fail(&err, "role assign");
	if (cli->json)
		cli_print_json(res);
	else
		printf("assigned '%s' to %s at scope %s (assignment %s)\n", role, who,
		       scope ? scope : "/", name ? name : guid);
	json_decref(res);
	return CLI_OK;
}

static int role_unassign(struct cli *cli, int argc, char **argv)
{
	const char *usage = "role unassign ASSIGNMENT [--scope S]", *scope = NULL, *pfx, *pos[1];
	const struct cli_opt opts[] = {{"--scope", true, &scope, NULL, NULL}};
	int rc = cli_parse(argc, argv, opts, 1, pos, 1, 1, NULL, usage);
	if (rc || (rc = scope_prefix(scope, &pfx, usage)))
		return rc;
	if (strspn(pos[0], "0123456789abcdefABCDEF-") != strlen(pos[0]))
		return cli_usage_error(usage, "ASSIGNMENT: expected an assignment name (GUID)");
	_cleanup_free_ char *path = cvm_asprintf("%s" PROV "/roleAssignments/%s", pfx, pos[0]);
	json_t *res = NULL;
	struct cvm_err err = {0};
	if (cli_call(cli, "DELETE", path, NULL, &res, &err) < 0)
		return cli_fail(&err, "role unassign");
	if (!cli->json)
		printf("assignment %s removed\n", pos[0]);
	else if (res)
		cli_print_json(res);
	json_decref(res);
	return CLI_OK;
}

static int role_list(struct cli *cli, int argc, char **argv)
{
	const char *usage = "role list [--scope S]", *scope = NULL, *pfx;
	const struct cli_opt opts[] = {{"--scope", true, &scope, NULL, NULL}};
	int rc = cli_parse(argc, argv, opts, 1, NULL, 0, 0, NULL, usage);
	if (rc || (rc = scope_prefix(scope, &pfx, usage)))
		return rc;
	_cleanup_free_ char *path = cvm_asprintf("%s" PROV "/roleAssignments", pfx);
	json_t *res = NULL;
	struct cvm_err err = {0};
	if (cli_call(cli, "GET", path, NULL, &res, &err) < 0)
		return cli_fail(&err, "role list");
	if (cli->json) {
		cli_print_json(res);
	} else {
		const char *h[] = {"ASSIGNMENT", "PRINCIPAL", "ROLE", "SCOPE"};
		const char *p[] = {"name", "properties.principalId", "properties.roleDefinitionId",
				   "properties.scope"};
		cli_print_table(json_object_get(res, "value"), h, p, 4);
	}
	json_decref(res);
	return CLI_OK;
}

int cli_role(struct cli *cli, int argc, char **argv)
{
	static const struct cli_verb verbs[] = {
		{"def", role_def, "def list|create ..."},
		{"assign", role_assign, "assign --role ROLE --principal ID|NAME [--scope S]"},
		{"unassign", role_unassign, "unassign ASSIGNMENT [--scope S]"},
		{"list", role_list, "list [--scope S]"},
	};
	return cli_dispatch(cli, "role", verbs, CVM_ARRAY_SIZE(verbs), argc, argv);
}
