/* SPDX-License-Identifier: Apache-2.0 */
/* hsm soft delete, recover, purge, purge protection and scheduled purges, on SQLite and
 * (CVM_TEST_POSTGRES) PostgreSQL. */
#include "keystest.h"

static void delete_get_recover(void **state)
{
	struct kt t;
	kt_open(&t, state, "delrec", 7, false);
	json_t *b = kt_create(&t, "gone", "{\"kty\":\"EC\",\"tags\":{\"a\":\"b\"}}");
	json_t *d = NULL;
	int64_t before = cvm_now();
	ASSERT_OK(cvm_hsm_key_delete(t.h, &caller, "gone", &d, err));
	assert_string_equal(jstr(d, "recoveryId"), "https://hsm.test:8443/deletedkeys/gone");
	int64_t dd = json_integer_value(json_object_get(d, "deletedDate"));
	int64_t sp = json_integer_value(json_object_get(d, "scheduledPurgeDate"));
	assert_true(dd >= before && dd <= cvm_now());
	assert_int_equal(sp - dd, 7 * 86400);
	assert_string_equal(jstr(d, "key.kid"), jstr(b, "key.kid"));
	assert_string_equal(jstr(d, "tags.a"), "b");
	json_decref(d);

	json_t *out = NULL;
	ASSERT_ERR(cvm_hsm_key_get(t.h, &caller, "gone", NULL, &out, err), ENOENT, "KeyNotFound",
		   NULL);
	ASSERT_ERR(cvm_hsm_key_delete(t.h, &caller, "gone", &out, err), ENOENT, "KeyNotFound",
		   NULL);
	json_t *cb = J("{\"kty\":\"EC\"}");
	ASSERT_ERR(cvm_hsm_key_create(t.h, &caller, "gone", cb, &out, err), EEXIST, "Conflict",
		   "deleted but recoverable");
	json_decref(cb);
	ASSERT_OK(cvm_hsm_deleted_get(t.h, &caller, "gone", &out, err));
	assert_int_equal(json_integer_value(json_object_get(out, "scheduledPurgeDate")), sp);
	json_decref(out);

	/* deleted list holds it, the key list does not */
	json_decref(kt_create(&t, "stays", "{\"kty\":\"EC\"}"));
	json_t *l = NULL;
	ASSERT_OK(cvm_hsm_deleted_list(t.h, &caller, 0, NULL, "7.4", &l, err));
	assert_int_equal(json_array_size(json_object_get(l, "value")), 1);
	json_t *it = json_array_get(json_object_get(l, "value"), 0);
	assert_string_equal(jstr(it, "kid"), "https://hsm.test:8443/keys/gone");
	assert_string_equal(jstr(it, "recoveryId"), "https://hsm.test:8443/deletedkeys/gone");
	assert_non_null(json_object_get(it, "scheduledPurgeDate"));
	json_decref(l);
	ASSERT_OK(cvm_hsm_key_list(t.h, &caller, 0, NULL, "7.4", &l, err));
	assert_int_equal(json_array_size(json_object_get(l, "value")), 1);
	json_decref(l);

	/* recover */
	ASSERT_OK(cvm_hsm_deleted_recover(t.h, &caller, "gone", &out, err));
	assert_string_equal(jstr(out, "key.kid"), jstr(b, "key.kid"));
	json_decref(out);
	ASSERT_OK(cvm_hsm_key_get(t.h, &caller, "gone", NULL, &out, err));
	json_decref(out);
	out = NULL;
	ASSERT_ERR(cvm_hsm_deleted_get(t.h, &caller, "gone", &out, err), ENOENT, "KeyNotFound",
		   "Deleted Key not found: gone");
	ASSERT_ERR(cvm_hsm_deleted_recover(t.h, &caller, "gone", &out, err), ENOENT, "KeyNotFound",
		   NULL);
	assert_null(out);
	json_decref(b);
	kt_close(&t);
}

static void purge_without_protection(void **state)
{
	struct kt t;
	kt_open(&t, state, "purge", 7, false);
	assert_false(cvm_hsm_purge_protection(t.h));
	json_decref(kt_create(&t, "p", "{\"kty\":\"oct-HSM\"}"));
	json_t *out = NULL;
	ASSERT_ERR(cvm_hsm_deleted_purge(t.h, &caller, "p", err), ENOENT, "KeyNotFound", NULL);
	ASSERT_OK(cvm_hsm_key_delete(t.h, &caller, "p", &out, err));
	json_decref(out);
	ASSERT_OK(cvm_hsm_deleted_purge(t.h, &caller, "p", err));
	ASSERT_ERR(cvm_hsm_deleted_get(t.h, &caller, "p", &out, err), ENOENT, "KeyNotFound", NULL);
	ASSERT_ERR(cvm_hsm_deleted_purge(t.h, &caller, "p", err), ENOENT, "KeyNotFound", NULL);
	/* the name is free again */
	json_decref(kt_create(&t, "p", "{\"kty\":\"oct-HSM\"}"));
	kt_close(&t);
}

static void purge_protection(void **state)
{
	struct kt t;
	kt_open(&t, state, "pp", 30, true);
	assert_true(cvm_hsm_purge_protection(t.h));
	json_t *b = kt_create(&t, "prot", "{\"kty\":\"RSA\"}");
	assert_string_equal(jstr(b, "attributes.recoveryLevel"), "CustomizedRecoverable");
	assert_int_equal(json_integer_value(cvm_json_path(b, "attributes.recoverableDays")), 30);
	json_decref(b);
	json_t *out = NULL;
	ASSERT_OK(cvm_hsm_key_delete(t.h, &caller, "prot", &out, err));
	int64_t sp = json_integer_value(json_object_get(out, "scheduledPurgeDate"));
	json_decref(out);
	ASSERT_ERR(cvm_hsm_deleted_purge(t.h, &caller, "prot", err), EPERM, "Forbidden",
		   "purge protection");

	/* the protection is persisted and cannot be turned off by configuration */
	cvm_hsm_free(t.h);
	t.h = kt_hsm(t.store, 30, false);
	assert_true(cvm_hsm_purge_protection(t.h));
	struct cvm_secret *k = test_domain_key(0x11);
	ASSERT_OK(cvm_hsm_domain_unlock(t.h, k, err));
	cvm_secret_free(k);
	ASSERT_ERR(cvm_hsm_deleted_purge(t.h, &caller, "prot", err), EPERM, "Forbidden", NULL);
	/* nor can the retention be lowered */
	struct cvm_hsm_config cfg = { .store = t.store, .soft_delete_days_default = 7 };
	struct cvm_hsm *h2 = NULL;
	ASSERT_ERR(cvm_hsm_open(&cfg, &h2, err), EPERM, "Forbidden", "cannot be lowered");
	assert_null(h2);

	/* the scheduler purges only once the retention has passed */
	struct cvm_err e = { 0 };
	assert_int_equal(cvm_hsm_tick(t.h, sp - 1, &e), 0);
	ASSERT_OK(cvm_hsm_deleted_get(t.h, &caller, "prot", &out, err));
	json_decref(out);
	assert_int_equal(cvm_hsm_tick(t.h, sp, &e), 1);
	ASSERT_ERR(cvm_hsm_deleted_get(t.h, &caller, "prot", &out, err), ENOENT, "KeyNotFound",
		   NULL);
	assert_int_equal(cvm_hsm_tick(t.h, sp + 10, &e), 0);
	kt_close(&t);
}

static void recovery_levels(void **state)
{
	struct testdb *db = *state;
	const struct { int days; bool pp; const char *level; } cases[] = {
		{ 7, false, "CustomizedRecoverable+Purgeable" },
		{ 90, false, "Recoverable+Purgeable" },
		{ 89, true, "CustomizedRecoverable" },
		{ 90, true, "Recoverable" },
	};
	for (size_t i = 0; i < CVM_ARRAY_SIZE(cases); i++) {
		char name[16];
		snprintf(name, sizeof(name), "lvl%zu", i);
		struct cvm_store *s = testdb_open(db, name);
		struct cvm_hsm *h = kt_hsm(s, cases[i].days, cases[i].pp);
		assert_string_equal(cvm_hsm_recovery_level(h), cases[i].level);
		assert_int_equal(cvm_hsm_retention_days(h), cases[i].days);
		cvm_hsm_free(h);
		cvm_store_close(s);
	}
	struct cvm_store *s = testdb_open(db, "lvlbad");
	struct cvm_hsm_config cfg = { .store = s, .soft_delete_days_default = 6 };
	struct cvm_hsm *h = NULL;
	ASSERT_ERR(cvm_hsm_open(&cfg, &h, err), EINVAL, "BadParameter", "soft_delete_days");
	cfg.soft_delete_days_default = 91;
	ASSERT_ERR(cvm_hsm_open(&cfg, &h, err), EINVAL, "BadParameter", "soft_delete_days");
	cfg.soft_delete_days_default = 0; /* default 90 */
	ASSERT_OK(cvm_hsm_open(&cfg, &h, err));
	assert_int_equal(cvm_hsm_retention_days(h), 90);
	cvm_hsm_free(h);
	cvm_store_close(s);
}

static void tick_purges_after_retention(void **state)
{
	struct kt t;
	kt_open(&t, state, "tickpurge", 7, false);
	json_decref(kt_create(&t, "a", "{\"kty\":\"oct-HSM\"}"));
	json_decref(kt_create(&t, "b", "{\"kty\":\"oct-HSM\"}"));
	json_t *out = NULL;
	ASSERT_OK(cvm_hsm_key_delete(t.h, &caller, "a", &out, err));
	int64_t sp = json_integer_value(json_object_get(out, "scheduledPurgeDate"));
	json_decref(out);
	struct cvm_err e = { 0 };
	assert_int_equal(cvm_hsm_tick(t.h, sp - 60, &e), 0);
	ASSERT_OK(cvm_hsm_deleted_get(t.h, &caller, "a", &out, err));
	json_decref(out);
	/* a second HSM on the same database ticking at the same time: each purge happens once */
	struct cvm_hsm *h2 = kt_hsm(t.store, 7, false);
	assert_int_equal(cvm_hsm_tick(t.h, sp + 1, &e) + cvm_hsm_tick(h2, sp + 1, &e), 1);
	ASSERT_ERR(cvm_hsm_deleted_get(t.h, &caller, "a", &out, err), ENOENT, "KeyNotFound", NULL);
	ASSERT_OK(cvm_hsm_key_get(t.h, &caller, "b", NULL, &out, err));
	json_decref(out);
	cvm_hsm_free(h2);
	kt_close(&t);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(delete_get_recover),
		cmocka_unit_test(purge_without_protection),
		cmocka_unit_test(purge_protection),
		cmocka_unit_test(recovery_levels),
		cmocka_unit_test(tick_purges_after_retention),
	};
	return testdb_run("hsm-softdelete", tests, CVM_ARRAY_SIZE(tests));
}
