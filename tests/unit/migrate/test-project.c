/* SPDX-License-Identifier: Apache-2.0 */
/* The server phase table and the persisted state machine over a SQLite store. */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include <opencvm/audit.h>
#include <opencvm/migrate.h>
#include <opencvm/store.h>

static void test_phase_names(void **state)
{
	(void)state;
	struct cvm_err err = {0};
	for (int p = CVM_MIG_DISCOVERED; p <= CVM_MIG_ROLLED_BACK; p++) {
		enum cvm_mig_phase q;
		assert_int_equal(cvm_mig_phase_parse(cvm_mig_phase_name((enum cvm_mig_phase)p), &q, &err), 0);
		assert_int_equal(q, p);
	}
	enum cvm_mig_phase q;
	assert_int_equal(cvm_mig_phase_parse("cutover", &q, &err), -EINVAL);
	assert_int_equal(cvm_mig_phase_parse(NULL, &q, &err), -EINVAL);
}

static void test_phase_table(void **state)
{
	(void)state;
	/* the happy path */
	assert_true(cvm_mig_phase_allowed(CVM_MIG_DISCOVERED, CVM_MIG_ASSESSED));
	assert_true(cvm_mig_phase_allowed(CVM_MIG_ASSESSED, CVM_MIG_REPLICATING));
	assert_true(cvm_mig_phase_allowed(CVM_MIG_REPLICATING, CVM_MIG_TEST_MIGRATED));
	assert_true(cvm_mig_phase_allowed(CVM_MIG_TEST_MIGRATED, CVM_MIG_CUTOVER_READY));
	assert_true(cvm_mig_phase_allowed(CVM_MIG_CUTOVER_READY, CVM_MIG_CUT_OVER));
	assert_true(cvm_mig_phase_allowed(CVM_MIG_CUT_OVER, CVM_MIG_DECOMMISSIONED));
	assert_true(cvm_mig_phase_allowed(CVM_MIG_CUT_OVER, CVM_MIG_ROLLED_BACK));
	/* twins: skipping steps, leaving the final phase, remediated straight to replicating */
	assert_false(cvm_mig_phase_allowed(CVM_MIG_DISCOVERED, CVM_MIG_REPLICATING));
	assert_false(cvm_mig_phase_allowed(CVM_MIG_ASSESSED, CVM_MIG_CUT_OVER));
	assert_false(cvm_mig_phase_allowed(CVM_MIG_REMEDIATED, CVM_MIG_REPLICATING));
	assert_false(cvm_mig_phase_allowed(CVM_MIG_CUT_OVER, CVM_MIG_REPLICATING));
	for (int p = CVM_MIG_DISCOVERED; p <= CVM_MIG_ROLLED_BACK; p++)
		assert_false(cvm_mig_phase_allowed(CVM_MIG_DECOMMISSIONED, (enum cvm_mig_phase)p));
	assert_false(cvm_mig_phase_allowed((enum cvm_mig_phase)42, CVM_MIG_ASSESSED));
	assert_false(cvm_mig_phase_allowed(CVM_MIG_ASSESSED, (enum cvm_mig_phase)-1));
}

static void test_persisted(void **state)
{
	(void)state;
	char dir[] = "/tmp/test-project-XXXXXX";
	assert_non_null(mkdtemp(dir));
	char url[128];
	snprintf(url, sizeof(url), "sqlite:%s/db", dir);
	struct cvm_store *s = NULL;
	struct cvm_err err = {0};
	assert_int_equal(cvm_store_open(url, &s, &err), 0);
	assert_int_equal(cvm_mig_project_create(s, "p", "tester", &err), 0);
	assert_int_equal(cvm_mig_project_create(s, "p", "tester", &err), -EEXIST);
	assert_int_equal(cvm_mig_server_add(s, "p", "a", "/nonexistent.img", "tester", &err), 0);
	assert_int_equal(cvm_mig_server_add(s, "q", "a", "/x.img", "tester", &err), -ENOENT);
	assert_int_equal(cvm_mig_server_add(s, "p", "a/b", "/x.img", "tester", &err), -EINVAL);
	assert_int_equal(cvm_mig_server_transition(s, "p", "a", CVM_MIG_CUT_OVER, NULL, "tester", &err),
			 -EPERM);
	assert_non_null(strstr(err.msg, "allowed: assessed, failed"));
	assert_int_equal(cvm_mig_server_transition(s, "p", "a", CVM_MIG_FAILED, "no image", "tester",
						   &err), 0);
	/* assessing a missing image fails and leaves the phase alone */
	char *rep = NULL;
	assert_true(cvm_mig_server_assess(s, "p", "a", NULL, "tester", &rep, &err) < 0);
	assert_null(rep);
	struct cvm_mig_server v;
	assert_int_equal(cvm_mig_server_get(s, "p", "a", &v, &err), 0);
	assert_int_equal(v.phase, CVM_MIG_FAILED);
	assert_int_equal(v.failed_from, CVM_MIG_DISCOVERED);
	assert_string_equal(v.reason, "no image");
	cvm_mig_server_clear(&v);
	assert_int_equal(cvm_mig_server_get(s, "p", "zz", &v, &err), -ENOENT);
	int64_t records = 0, bad = 0;
	assert_int_equal(cvm_audit_verify(s, &records, &bad, &err), 0);
	assert_int_equal(records, 3); /* create, add, transition: refusals leave nothing */
	cvm_store_close(s);
	char cmd[160];
	snprintf(cmd, sizeof(cmd), "rm -rf '%s'", dir);
	assert_int_equal(system(cmd), 0);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_phase_names),
		cmocka_unit_test(test_phase_table),
		cmocka_unit_test(test_persisted),
	};
	cvm_log_set_level(CVM_LOG_ERROR);
	return cmocka_run_group_tests(tests, NULL, NULL);
}
