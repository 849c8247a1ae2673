/* SPDX-License-Identifier: Apache-2.0 */
/* RBAC: built-in roles, separation of duties, scopes, custom roles with wildcards and
 * notDataActions, assignment management errors, revocation (same and other process), the
 * route -> data action table. */
#include <unistd.h>

#include "authtest.h"

static char *new_principal(struct kt *t, const char *name, char oid[37])
{
	struct cvm_principal_info info = { 0 };
	struct cvm_secret *s = NULL;
	ASSERT_OK(cvm_hsm_principal_create(t->h, name, CVM_PRINCIPAL_SERVICE, NULL, &info, &s, err));
	memcpy(oid, info.oid, 37);
	cvm_principal_info_clear(&info);
	cvm_secret_free(s);
	return oid;
}

static void test_builtins(void **state)
{
	struct kt t;
	kt_open(&t, state, "rbac1", 7, false);
	static const char *const want[][2] = {
		{ ROLE_ADMIN, "Managed HSM Administrator" },
		{ ROLE_OFFICER, "Managed HSM Crypto Officer" },
		{ ROLE_USER, "Managed HSM Crypto User" },
		{ ROLE_POLICY_ADMIN, "Managed HSM Policy Administrator" },
		{ ROLE_AUDITOR, "Managed HSM Crypto Auditor" },
		{ ROLE_ENCRYPTION, "Managed HSM Crypto Service Encryption User" },
		{ ROLE_RELEASE, "Managed HSM Crypto Service Release User" },
		{ ROLE_BACKUP, "Managed HSM Backup" },
		{ ROLE_RESTORE, "Managed HSM Restore" },
	};
	json_t *list = NULL;
	ASSERT_OK(cvm_hsm_role_definitions_list(t.h, "/", &list, err));
	json_t *v = json_object_get(list, "value");
	assert_int_equal(json_array_size(v), CVM_ARRAY_SIZE(want));
	for (size_t i = 0; i < CVM_ARRAY_SIZE(want); i++) {
		json_t *d = json_array_get(v, i);
		assert_string_equal(jstr(d, "name"), want[i][0]);
		assert_string_equal(jstr(d, "properties.roleName"), want[i][1]);
		assert_string_equal(jstr(d, "properties.type"), "AKVBuiltInRole");
		assert_string_equal(jstr(d, "type"), "Microsoft.Authorization/roleDefinitions");
		char id[128];
		snprintf(id, sizeof(id), "/providers/Microsoft.Authorization/roleDefinitions/%s",
			 want[i][0]);
		assert_string_equal(jstr(d, "id"), id);
	}
	json_decref(list);
	json_t *d = NULL;
	ASSERT_OK(cvm_hsm_role_definition_get(t.h, "/keys", ROLE_BACKUP, &d, err));
	assert_string_equal(jstr(d, "id"), "/keys/providers/Microsoft.Authorization/roleDefinitions/"
			    ROLE_BACKUP);
	json_t *da = cvm_json_path(d, "properties");
	da = json_object_get(json_array_get(json_object_get(da, "permissions"), 0), "dataActions");
	assert_int_equal(json_array_size(da), 3);
	assert_string_equal(json_string_value(json_array_get(da, 2)), DA_ "keys/backup/action");
	json_decref(d);
	ASSERT_ERR(cvm_hsm_role_definition_get(t.h, "/", "11111111-2222-3333-4444-555555555555", &d,
					       err), ENOENT, "RoleDefinitionNotFound", NULL);
	ASSERT_ERR(cvm_hsm_role_definition_get(t.h, "/", "not-a-guid", &d, err), EINVAL,
		   "BadParameter", "roleDefinitionName: expected a GUID");
	ASSERT_ERR(cvm_hsm_role_definition_get(t.h, "/secrets", ROLE_USER, &d, err), EINVAL,
		   "BadParameter", "scope:");
	/* built-ins are immutable */
	json_t *b = J("{\"properties\":{\"roleName\":\"x\",\"permissions\":[{\"dataActions\":[]}]}}");
	ASSERT_ERR(cvm_hsm_role_definition_put(t.h, "/", ROLE_USER, b, &d, err), EPERM, "Forbidden",
		   "cannot be modified");
	ASSERT_ERR(cvm_hsm_role_definition_delete(t.h, "/", ROLE_ADMIN, err), EPERM, "Forbidden",
		   "cannot be deleted");
	json_decref(b);
	kt_close(&t);
}

static void test_separation_of_duties(void **state)
{
	struct kt t;
	kt_open(&t, state, "rbac2", 7, false);
	struct cvm_principal_info admin = { 0 };
	struct cvm_secret *s = NULL;
	ASSERT_OK(cvm_hsm_bootstrap_admin(t.h, "admin", &admin, &s, err));
	cvm_secret_free(s);
	ASSERT_OK(cvm_hsm_rbac_check(t.h, admin.oid, DA_ "securitydomain/download/action", NULL, err));
	ASSERT_OK(cvm_hsm_rbac_check(t.h, admin.oid, DA_ "backup/start/action", NULL, err));
	ASSERT_OK(cvm_hsm_rbac_check(t.h, admin.oid, DA_ "roleDefinitions/write/action", NULL, err));
	char msg[400];
	snprintf(msg, sizeof(msg), "principal '%s' does not have data action '" DA_
		 "keys/sign/action' at scope '/keys/k1'", admin.oid);
	ASSERT_ERR(cvm_hsm_rbac_check(t.h, admin.oid, DA_ "keys/sign/action", "k1", err), EPERM,
		   "Forbidden", msg);
	ASSERT_ERR(cvm_hsm_rbac_check(t.h, admin.oid, DA_ "keys/release/action", "k1", err), EPERM,
		   "Forbidden", NULL);
	ASSERT_ERR(cvm_hsm_rbac_check(t.h, admin.oid, DA_ "keys/create", NULL, err), EPERM,
		   "Forbidden", "scope '/keys'");

	char user[37], rel[37];
	new_principal(&t, "user", user);
	new_principal(&t, "releaser", rel);
	assign(&t, "/", ROLE_USER, user);
	assign(&t, "/keys", ROLE_RELEASE, rel);
	ASSERT_OK(cvm_hsm_rbac_check(t.h, user, DA_ "keys/sign/action", "k1", err));
	ASSERT_OK(cvm_hsm_rbac_check(t.h, user, DA_ "keys/read/action", NULL, err));
	/* crypto user: no export, no purge, no role management (case-insensitive actions) */
	ASSERT_ERR(cvm_hsm_rbac_check(t.h, user, DA_ "keys/export/action", "k1", err), EPERM,
		   "Forbidden", NULL);
	ASSERT_ERR(cvm_hsm_rbac_check(t.h, user, DA_ "keys/deletedKeys/delete", "k1", err), EPERM,
		   "Forbidden", NULL);
	ASSERT_ERR(cvm_hsm_rbac_check(t.h, user, DA_ "roleAssignments/write/action", NULL, err),
		   EPERM, "Forbidden", NULL);
	ASSERT_OK(cvm_hsm_rbac_check(t.h, user, "microsoft.keyvault/managedhsm/keys/SIGN/action",
				     "k1", err));
	/* release user at /keys: release on any key, nothing else; not HSM-wide actions */
	ASSERT_OK(cvm_hsm_rbac_check(t.h, rel, DA_ "keys/release/action", "any-key", err));
	ASSERT_ERR(cvm_hsm_rbac_check(t.h, rel, DA_ "keys/read/action", "any-key", err), EPERM,
		   "Forbidden", NULL);
	ASSERT_ERR(cvm_hsm_rbac_check_scope(t.h, rel, DA_ "keys/release/action", "/", err), EPERM,
		   "Forbidden", NULL);
	cvm_principal_info_clear(&admin);
	kt_close(&t);
}

static void test_key_scope_and_revoke(void **state)
{
	struct kt t;
	kt_open(&t, state, "rbac3", 7, false);
	char p[37];
	new_principal(&t, "scoped", p);
	char name[37];
	ASSERT_OK(cvm_uuid4(name, err));
	char *body = cvm_asprintf("{\"properties\":{\"roleDefinitionId\":\"" ROLE_USER "\","
				  "\"principalId\":\"%s\"}}", p);
	json_t *b = J(body), *out = NULL;
	free(body);
	ASSERT_OK(cvm_hsm_role_assignment_put(t.h, "/keys/k1", name, b, &out, err));
	assert_int_equal(json_is_object(out), 1);
	assert_string_equal(jstr(out, "properties.scope"), "/keys/k1");
	char id[160];
	snprintf(id, sizeof(id), "/keys/k1/providers/Microsoft.Authorization/roleAssignments/%s",
		 name);
	assert_string_equal(jstr(out, "id"), id);
	assert_string_equal(jstr(out, "type"), "Microsoft.Authorization/roleAssignments");
	json_decref(out);
	/* idempotent PUT of the same content */
	ASSERT_OK(cvm_hsm_role_assignment_put(t.h, "/keys/k1", name, b, &out, err));
	json_decref(out);
	json_decref(b);

	ASSERT_OK(cvm_hsm_rbac_check(t.h, p, DA_ "keys/sign/action", "k1", err));
	ASSERT_ERR(cvm_hsm_rbac_check(t.h, p, DA_ "keys/sign/action", "k2", err), EPERM, "Forbidden",
		   "scope '/keys/k2'");
	ASSERT_ERR(cvm_hsm_rbac_check(t.h, p, DA_ "keys/read/action", NULL, err), EPERM, "Forbidden",
		   "scope '/keys'");

	/* a second service instance (another cvmd on the same store) sees the grant */
	struct cvm_hsm *h2 = kt_hsm(t.store, 7, false);
	ASSERT_OK(cvm_hsm_rbac_check(h2, p, DA_ "keys/sign/action", "k1", err));

	/* list / get / filters */
	json_t *list = NULL;
	ASSERT_OK(cvm_hsm_role_assignment_list(t.h, "/keys", NULL, &list, err));
	assert_int_equal(json_array_size(json_object_get(list, "value")), 1);
	json_decref(list);
	ASSERT_OK(cvm_hsm_role_assignment_list(t.h, "/keys", "atScope()", &list, err));
	assert_int_equal(json_array_size(json_object_get(list, "value")), 0);
	json_decref(list);
	ASSERT_OK(cvm_hsm_role_assignment_list(t.h, "/keys/k1", "atScope()", &list, err));
	assert_int_equal(json_array_size(json_object_get(list, "value")), 1);
	json_decref(list);
	ASSERT_ERR(cvm_hsm_role_assignment_list(t.h, "/", "roleId eq 'x'", &list, err), EINVAL,
		   "BadParameter", "$filter");
	ASSERT_OK(cvm_hsm_role_assignment_get(t.h, "/keys/k1", name, &out, err));
	json_decref(out);
	ASSERT_ERR(cvm_hsm_role_assignment_get(t.h, "/keys", name, &out, err), ENOENT,
		   "RoleAssignmentNotFound", NULL);

	/* revoke: immediate in this process */
	ASSERT_OK(cvm_hsm_role_assignment_delete(t.h, "/keys/k1", name, &out, err));
	assert_string_equal(jstr(out, "name"), name);
	json_decref(out);
	ASSERT_ERR(cvm_hsm_rbac_check(t.h, p, DA_ "keys/sign/action", "k1", err), EPERM, "Forbidden",
		   NULL);
	ASSERT_ERR(cvm_hsm_role_assignment_delete(t.h, "/keys/k1", name, &out, err), ENOENT,
		   "RoleAssignmentNotFound", NULL);
	/* and in the other instance within CVM_HSM_RBAC_MAX_STALE_MS */
	usleep((CVM_HSM_RBAC_MAX_STALE_MS + 100) * 1000);
	ASSERT_ERR(cvm_hsm_rbac_check(h2, p, DA_ "keys/sign/action", "k1", err), EPERM, "Forbidden",
		   NULL);
	cvm_hsm_free(h2);
	kt_close(&t);
}

static void test_assignment_errors(void **state)
{
	struct kt t;
	kt_open(&t, state, "rbac4", 7, false);
	char p[37], name[37];
	new_principal(&t, "someone", p);
	ASSERT_OK(cvm_uuid4(name, err));
	json_t *out = NULL;
	char *body = cvm_asprintf("{\"properties\":{\"roleDefinitionId\":\"/providers/Microsoft."
				  "Authorization/roleDefinitions/" ROLE_USER "\",\"principalId\":"
				  "\"00000000-0000-0000-0000-000000000001\"}}");
	json_t *b = J(body);
	free(body);
	ASSERT_ERR(cvm_hsm_role_assignment_put(t.h, "/", name, b, &out, err), EINVAL, "BadParameter",
		   "properties.principalId: no principal");
	json_decref(b);
	body = cvm_asprintf("{\"properties\":{\"roleDefinitionId\":\"/providers/Microsoft."
			    "Authorization/roleDefinitions/00000000-0000-0000-0000-000000000002\","
			    "\"principalId\":\"%s\"}}", p);
	b = J(body);
	free(body);
	ASSERT_ERR(cvm_hsm_role_assignment_put(t.h, "/", name, b, &out, err), EINVAL, "BadParameter",
		   "properties.roleDefinitionId: no role definition");
	json_decref(b);
	b = J("{\"properties\":{\"roleDefinitionId\":\"/providers/Other/" ROLE_USER "\","
	      "\"principalId\":\"00000000-0000-0000-0000-000000000001\"}}");
	ASSERT_ERR(cvm_hsm_role_assignment_put(t.h, "/", name, b, &out, err), EINVAL, "BadParameter",
		   "properties.roleDefinitionId: expected");
	json_decref(b);
	b = J("{\"properties\":{\"roleDefinitionId\":\"" ROLE_USER "\"}}");
	ASSERT_ERR(cvm_hsm_role_assignment_put(t.h, "/", name, b, &out, err), EINVAL, "BadParameter",
		   "properties.principalId: required field is missing");
	ASSERT_ERR(cvm_hsm_role_assignment_put(t.h, "/", "abc", b, &out, err), EINVAL, "BadParameter",
		   "roleAssignmentName: expected a GUID");
	ASSERT_ERR(cvm_hsm_role_assignment_put(t.h, "/certificates", name, b, &out, err), EINVAL,
		   "BadParameter", "scope:");
	json_decref(b);
	/* same name, other content -> conflict */
	assign(&t, "/", ROLE_AUDITOR, p);
	json_t *list = NULL;
	ASSERT_OK(cvm_hsm_role_assignment_list(t.h, "/", NULL, &list, err));
	const char *existing = jstr(json_array_get(json_object_get(list, "value"), 0), "name");
	body = cvm_asprintf("{\"properties\":{\"roleDefinitionId\":\"" ROLE_USER "\","
			    "\"principalId\":\"%s\"}}", p);
	b = J(body);
	free(body);
	ASSERT_ERR(cvm_hsm_role_assignment_put(t.h, "/", existing, b, &out, err), EEXIST, "Conflict",
		   "RoleAssignmentExists");
	json_decref(b);
	json_decref(list);
	assert_null(out);
	kt_close(&t);
}

static void test_custom_role(void **state)
{
	struct kt t;
	kt_open(&t, state, "rbac5", 7, false);
	const char *rid = "0d4ef0e2-1d37-4a6f-9b1a-d1b8a7f1c0de";
	json_t *b = J("{\"properties\":{\"roleName\":\"Key user without signing\",\"type\":"
		      "\"CustomRole\",\"description\":\"d\",\"permissions\":[{\"dataActions\":"
		      "[\"Microsoft.KeyVault/managedHsm/keys/*\"],\"notDataActions\":["
		      "\"Microsoft.KeyVault/managedHsm/keys/sign/action\","
		      "\"Microsoft.KeyVault/managedHsm/keys/export/*\"]}]}}");
	json_t *out = NULL;
	ASSERT_OK(cvm_hsm_role_definition_put(t.h, "/", rid, b, &out, err));
	assert_string_equal(jstr(out, "properties.type"), "CustomRole");
	assert_string_equal(jstr(out, "name"), rid);
	json_decref(out);
	json_decref(b);
	char p[37];
	new_principal(&t, "custom", p);
	assign(&t, "/keys", rid, p);
	ASSERT_OK(cvm_hsm_rbac_check(t.h, p, DA_ "keys/encrypt/action", "k", err));
	ASSERT_OK(cvm_hsm_rbac_check(t.h, p, DA_ "keys/deletedKeys/recover/action", "k", err));
	ASSERT_ERR(cvm_hsm_rbac_check(t.h, p, DA_ "keys/sign/action", "k", err), EPERM, "Forbidden",
		   NULL);
	ASSERT_ERR(cvm_hsm_rbac_check(t.h, p, DA_ "keys/export/action", "k", err), EPERM, "Forbidden",
		   NULL);
	ASSERT_ERR(cvm_hsm_rbac_check(t.h, p, DA_ "rng/action", NULL, err), EPERM, "Forbidden", NULL);
	/* listed with the built-ins */
	json_t *list = NULL;
	ASSERT_OK(cvm_hsm_role_definitions_list(t.h, "/", &list, err));
	assert_int_equal(json_array_size(json_object_get(list, "value")), 10);
	json_decref(list);
	/* in use: cannot delete */
	ASSERT_ERR(cvm_hsm_role_definition_delete(t.h, "/", rid, err), EBUSY, "Conflict",
		   "used by 1 role assignment");
	/* validation twins */
	b = J("{\"properties\":{\"roleName\":\"bad\",\"permissions\":[{\"dataActions\":["
	      "\"Microsoft.KeyVault/managedHsm/keys/read/action\",\"Microsoft.Storage/*\"]}]}}");
	ASSERT_ERR(cvm_hsm_role_definition_put(t.h, "/", "1d4ef0e2-1d37-4a6f-9b1a-d1b8a7f1c0de", b,
					       &out, err), EINVAL, "BadParameter",
		   "properties.permissions[0].dataActions[1]: 'Microsoft.Storage/*' is not a Managed "
		   "HSM data action");
	json_decref(b);
	b = J("{\"properties\":{\"roleName\":\"Managed HSM Crypto User\",\"permissions\":[{}]}}");
	ASSERT_ERR(cvm_hsm_role_definition_put(t.h, "/", "1d4ef0e2-1d37-4a6f-9b1a-d1b8a7f1c0de", b,
					       &out, err), EEXIST, "Conflict", "built-in role name");
	json_decref(b);
	b = J("{\"properties\":{\"roleName\":\"Key user without signing\",\"permissions\":[{}]}}");
	ASSERT_ERR(cvm_hsm_role_definition_put(t.h, "/", "1d4ef0e2-1d37-4a6f-9b1a-d1b8a7f1c0de", b,
					       &out, err), EEXIST, "Conflict", "already exists");
	json_decref(b);
	b = J("{\"properties\":{\"roleName\":\"r\",\"permissions\":[]}}");
	ASSERT_ERR(cvm_hsm_role_definition_put(t.h, "/", "1d4ef0e2-1d37-4a6f-9b1a-d1b8a7f1c0de", b,
					       &out, err), EINVAL, "BadParameter",
		   "properties.permissions: expected at least one");
	json_decref(b);
	/* narrowing the role applies at once */
	b = J("{\"properties\":{\"roleName\":\"Key user without signing\",\"permissions\":["
	      "{\"dataActions\":[\"Microsoft.KeyVault/managedHsm/keys/read/action\"]}]}}");
	ASSERT_OK(cvm_hsm_role_definition_put(t.h, "/", rid, b, &out, err));
	json_decref(out);
	json_decref(b);
	ASSERT_ERR(cvm_hsm_rbac_check(t.h, p, DA_ "keys/encrypt/action", "k", err), EPERM,
		   "Forbidden", NULL);
	ASSERT_OK(cvm_hsm_rbac_check(t.h, p, DA_ "keys/read/action", "k", err));
	/* delete after the assignment is gone */
	ASSERT_OK(cvm_hsm_principal_delete(t.h, p, err));
	ASSERT_OK(cvm_hsm_role_definition_delete(t.h, "/", rid, err));
	ASSERT_ERR(cvm_hsm_role_definition_delete(t.h, "/", rid, err), ENOENT,
		   "RoleDefinitionNotFound", NULL);
	kt_close(&t);
}

static void test_data_actions(void **state)
{
	(void)state;
	assert_string_equal(cvm_hsm_data_action("POST", "keys/release"), DA_ "keys/release/action");
	assert_string_equal(cvm_hsm_data_action("POST", "keys/wrapkey"), DA_ "keys/wrap/action");
	assert_string_equal(cvm_hsm_data_action("DELETE", "deletedkeys/purge"),
			    DA_ "keys/deletedKeys/delete");
	assert_string_equal(cvm_hsm_data_action("GET", "keys/rotationpolicy"),
			    DA_ "keys/read/action");
	assert_string_equal(cvm_hsm_data_action("PUT", "keys/rotationpolicy"),
			    DA_ "keys/write/action");
	assert_string_equal(cvm_hsm_data_action("PUT", "roleAssignments"),
			    DA_ "roleAssignments/write/action");
	assert_string_equal(cvm_hsm_data_action("DELETE", "roleDefinitions"),
			    DA_ "roleDefinitions/delete/action");
	assert_string_equal(cvm_hsm_data_action(NULL, "rng"), DA_ "rng/action");
	assert_null(cvm_hsm_data_action("PATCH", "roleAssignments"));
	assert_null(cvm_hsm_data_action("GET", "secrets/get"));
	assert_null(cvm_hsm_data_action("GET", NULL));
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_builtins),
		cmocka_unit_test(test_separation_of_duties),
		cmocka_unit_test(test_key_scope_and_revoke),
		cmocka_unit_test(test_assignment_errors),
		cmocka_unit_test(test_custom_role),
		cmocka_unit_test(test_data_actions),
	};
	return testdb_run("hsm-rbac", tests, CVM_ARRAY_SIZE(tests));
}
