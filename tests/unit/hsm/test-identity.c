/* SPDX-License-Identifier: Apache-2.0 */
/* Principals: create (secret / certificate), list, get, delete, bootstrap administrator,
 * secrets stored only as Argon2id hashes. */
#include "authtest.h"

static void test_create_list_delete(void **state)
{
	struct kt t;
	kt_open(&t, state, "ident1", 7, false);
	struct cvm_principal_info info = { 0 };
	struct cvm_secret *secret = NULL;
	ASSERT_OK(cvm_hsm_principal_create(t.h, "app-one", CVM_PRINCIPAL_SERVICE, NULL, &info,
					   &secret, err));
	assert_non_null(secret);
	assert_int_equal(secret->len, 40);
	assert_int_equal(strlen(info.oid), 36);
	assert_int_equal(strlen(info.client_id), 36);
	assert_string_not_equal(info.oid, info.client_id);
	assert_string_equal(info.name, "app-one");
	assert_int_equal(info.kind, CVM_PRINCIPAL_SERVICE);

	/* the secret itself is nowhere in the store, only an Argon2id hash with its params */
	struct cvm_tx *tx = NULL;
	ASSERT_OK(cvm_tx_begin(t.store, CVM_TX_READ, &tx, err));
	struct cvm_rows *rows = NULL;
	struct cvm_val p[] = { CVM_VAL_S(info.oid) };
	ASSERT_OK(cvm_tx_query(tx, "SELECT secret_hash FROM hsm_principals WHERE oid = ?", p, 1,
			       &rows, err));
	const char *hash = cvm_rows_text(rows, 0, 0);
	assert_non_null(hash);
	assert_true(cvm_str_startswith(hash, "$argon2id$v=19$m=19456,t=2,p=1$"));
	assert_null(strstr(hash, (const char *)secret->data));
	cvm_rows_free(rows);
	cvm_tx_rollback(tx);

	cvm_secret_free(secret);
	struct cvm_principal_info info2 = { 0 };
	ASSERT_OK(cvm_hsm_principal_create(t.h, "alice", CVM_PRINCIPAL_USER, NULL, &info2, &secret,
					   err));
	/* name taken */
	struct cvm_secret *s3 = NULL;
	ASSERT_ERR(cvm_hsm_principal_create(t.h, "alice", CVM_PRINCIPAL_USER, NULL, NULL, &s3, err),
		   EEXIST, "Conflict", "name: a principal named 'alice' already exists");
	ASSERT_ERR(cvm_hsm_principal_create(t.h, "", CVM_PRINCIPAL_USER, NULL, NULL, &s3, err),
		   EINVAL, "BadParameter", "name: expected 1 to 128 characters");
	ASSERT_ERR(cvm_hsm_principal_create(t.h, info.oid, CVM_PRINCIPAL_USER, NULL, NULL, &s3, err),
		   EINVAL, "BadParameter", "name: must not look like a GUID");
	ASSERT_ERR(cvm_hsm_principal_create(t.h, "x", (enum cvm_principal_kind)9, NULL, NULL, &s3,
					    err), EINVAL, "BadParameter", "kind:");
	assert_null(s3);
	cvm_secret_free(secret);

	json_t *list = NULL;
	ASSERT_OK(cvm_hsm_principal_list(t.h, &list, err));
	json_t *v = json_object_get(list, "value");
	assert_int_equal(json_array_size(v), 2);
	assert_string_equal(jstr(json_array_get(v, 0), "name"), "alice"); /* ordered by name */
	assert_string_equal(jstr(json_array_get(v, 0), "kind"), "User");
	assert_string_equal(jstr(json_array_get(v, 1), "kind"), "ServicePrincipal");
	assert_string_equal(jstr(json_array_get(v, 1), "credential"), "secret");
	assert_null(json_object_get(json_array_get(v, 1), "secret_hash"));
	json_decref(list);

	/* lookups by oid, client_id and name */
	struct cvm_principal_info g = { 0 };
	ASSERT_OK(cvm_hsm_principal_get(t.h, info.client_id, &g, err));
	assert_string_equal(g.oid, info.oid);
	cvm_principal_info_clear(&g);
	ASSERT_OK(cvm_hsm_principal_get(t.h, "app-one", &g, err));
	assert_string_equal(g.client_id, info.client_id);
	cvm_principal_info_clear(&g);

	ASSERT_OK(cvm_hsm_principal_delete(t.h, info.oid, err));
	ASSERT_ERR(cvm_hsm_principal_get(t.h, info.oid, &g, err), ENOENT, "PrincipalNotFound",
		   "was not found");
	ASSERT_ERR(cvm_hsm_principal_delete(t.h, info.oid, err), ENOENT, "PrincipalNotFound", NULL);
	ASSERT_OK(cvm_hsm_principal_delete(t.h, "alice", err));
	ASSERT_OK(cvm_hsm_principal_list(t.h, &list, err));
	assert_int_equal(json_array_size(json_object_get(list, "value")), 0);
	json_decref(list);
	cvm_principal_info_clear(&info);
	cvm_principal_info_clear(&info2);
	kt_close(&t);
}

static void test_certificate_principal(void **state)
{
	struct kt t;
	kt_open(&t, state, "ident2", 7, false);
	struct cvm_key *k = NULL;
	X509 *x = NULL;
	char *pem = NULL;
	ASSERT_OK(cvm_key_generate_ec("P-256", &k, err));
	ASSERT_OK(cvm_x509_self_signed(k, "client", NULL, NULL, 30, &x, err));
	ASSERT_OK(cvm_x509_to_pem(x, &pem, err));
	struct cvm_principal_info info = { 0 };
	struct cvm_secret *secret = (struct cvm_secret *)1;
	ASSERT_OK(cvm_hsm_principal_create(t.h, "cert-app", CVM_PRINCIPAL_MANAGED, pem, &info,
					   &secret, err));
	assert_null(secret);
	json_t *list = NULL;
	ASSERT_OK(cvm_hsm_principal_list(t.h, &list, err));
	json_t *p0 = json_array_get(json_object_get(list, "value"), 0);
	assert_string_equal(jstr(p0, "credential"), "certificate");
	assert_string_equal(jstr(p0, "kind"), "ManagedIdentity");
	/* x5t#S256 = base64url(SHA-256(DER)) */
	unsigned char *der = NULL;
	int dlen = i2d_X509(x, &der);
	uint8_t h[32];
	SHA256(der, (size_t)dlen, h);
	char *want = cvm_b64url_encode(h, sizeof(h));
	assert_string_equal(jstr(p0, "x5t#S256"), want);
	free(want);
	OPENSSL_free(der);
	json_decref(list);
	/* failure twin: not a certificate */
	ASSERT_ERR(cvm_hsm_principal_create(t.h, "bad-cert", CVM_PRINCIPAL_SERVICE,
					    "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n",
					    NULL, NULL, err), EINVAL, "BadParameter", "cert_pem");
	/* a secret principal needs somewhere to put the secret */
	ASSERT_ERR(cvm_hsm_principal_create(t.h, "nosecret", CVM_PRINCIPAL_SERVICE, NULL, NULL, NULL,
					    err), EINVAL, "BadParameter", "secret:");
	cvm_principal_info_clear(&info);
	free(pem);
	X509_free(x);
	cvm_key_free(k);
	kt_close(&t);
}

static void test_bootstrap(void **state)
{
	struct kt t;
	kt_open(&t, state, "ident3", 7, false);
	struct cvm_principal_info admin = { 0 };
	struct cvm_secret *secret = NULL;
	ASSERT_OK(cvm_hsm_bootstrap_admin(t.h, "admin", &admin, &secret, err));
	assert_non_null(secret);
	/* Administrator at "/": role management yes */
	ASSERT_OK(cvm_hsm_rbac_check(t.h, admin.oid, DA_ "roleAssignments/write/action", NULL, err));
	json_t *list = NULL;
	char filter[80];
	snprintf(filter, sizeof(filter), "principalId eq '%s'", admin.oid);
	ASSERT_OK(cvm_hsm_role_assignment_list(t.h, "/", filter, &list, err));
	json_t *a0 = json_array_get(json_object_get(list, "value"), 0);
	assert_string_equal(jstr(a0, "properties.scope"), "/");
	assert_string_equal(jstr(a0, "properties.roleDefinitionId"),
			    "/providers/Microsoft.Authorization/roleDefinitions/" ROLE_ADMIN);
	json_decref(list);
	/* twin: only once, and not when any principal exists */
	struct cvm_secret *s2 = NULL;
	ASSERT_ERR(cvm_hsm_bootstrap_admin(t.h, "admin2", NULL, &s2, err), EEXIST, "Conflict",
		   "bootstrap: principals already exist");
	assert_null(s2);
	ASSERT_ERR(cvm_hsm_principal_get(t.h, "admin2", NULL, err), ENOENT, "PrincipalNotFound",
		   NULL);
	/* deleting the principal drops its assignments too */
	ASSERT_OK(cvm_hsm_principal_delete(t.h, admin.oid, err));
	ASSERT_OK(cvm_hsm_role_assignment_list(t.h, "/", NULL, &list, err));
	assert_int_equal(json_array_size(json_object_get(list, "value")), 0);
	json_decref(list);
	ASSERT_ERR(cvm_hsm_rbac_check(t.h, admin.oid, DA_ "roleAssignments/write/action", NULL, err),
		   EPERM, "Forbidden", NULL);
	cvm_secret_free(secret);
	cvm_principal_info_clear(&admin);
	kt_close(&t);
}

static void test_tenant_persisted(void **state)
{
	struct kt t;
	kt_open(&t, state, "ident4", 7, false);
	char t1[37], t2[37];
	ASSERT_OK(cvm_hsm_tenant_id(t.h, t1, err));
	/* a second service instance on the same store (another cvmd) sees the same tenant */
	struct cvm_hsm *h2 = kt_hsm(t.store, 7, false);
	ASSERT_OK(cvm_hsm_tenant_id(h2, t2, err));
	assert_string_equal(t1, t2);
	cvm_hsm_free(h2);
	kt_close(&t);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_create_list_delete),
		cmocka_unit_test(test_certificate_principal),
		cmocka_unit_test(test_bootstrap),
		cmocka_unit_test(test_tenant_persisted),
	};
	return testdb_run("hsm-identity", tests, CVM_ARRAY_SIZE(tests));
}
