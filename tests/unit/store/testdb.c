/* SPDX-License-Identifier: Apache-2.0 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include "testdb.h"

#include <stdio.h>
#include <string.h>
#include <unistd.h>

static void run_sql(const char *url, const char *sql)
{
	struct cvm_err err = { 0 };
	struct cvm_store *s = NULL;
	struct cvm_tx *tx = NULL;
	if (cvm_store_open(url, &s, &err) < 0 || cvm_tx_begin(s, CVM_TX_WRITE, &tx, &err) < 0 ||
	    cvm_tx_exec(tx, sql, NULL, 0, NULL, &err) < 0 || (cvm_tx_commit(CVM_TAKE(tx), &err)) < 0)
		fail_msg("%s: %s", sql, err.msg);
	cvm_tx_rollback(tx);
	cvm_store_close(s);
}

static int setup(void **state, bool pg)
{
	struct testdb *db = calloc(1, sizeof(*db));
	assert_non_null(db);
	db->pg = pg;
	uint32_t rnd;
	assert_int_equal(cvm_random(&rnd, sizeof(rnd), NULL), 0);
	snprintf(db->prefix, sizeof(db->prefix), "cvmt_%d_%08x", (int)getpid(), rnd);
	if (pg) {
		snprintf(db->base, sizeof(db->base), "%s", getenv("CVM_TEST_POSTGRES"));
	} else {
		char tmpl[] = "/tmp/cvm-store-test-XXXXXX";
		assert_non_null(mkdtemp(tmpl));
		snprintf(db->base, sizeof(db->base), "%s", tmpl);
	}
	*state = db;
	return 0;
}

int testdb_setup_sqlite(void **state)
{
	return setup(state, false);
}

int testdb_setup_postgres(void **state)
{
	return setup(state, true);
}

int testdb_teardown(void **state)
{
	struct testdb *db = *state;
	/* A failed test jumps out with its transactions open; end its sessions (tagged with
	 * this run's application_name) so dropping the schemas cannot wait on their locks. */
	if (db->pg && db->nnames) {
		char sql[256];
		snprintf(sql, sizeof(sql),
			 "SELECT COUNT(pg_terminate_backend(pid)) FROM pg_stat_activity WHERE "
			 "application_name = '%s'",
			 db->prefix);
		run_sql(db->base, sql);
	}
	for (size_t i = 0; i < db->nnames; i++) {
		if (db->pg) {
			char sql[160];
			snprintf(sql, sizeof(sql), "DROP SCHEMA IF EXISTS %s CASCADE", db->names[i]);
			run_sql(db->base, sql);
		} else {
			const char *sfx[] = { "", "-wal", "-shm" };
			for (size_t j = 0; j < 3; j++) {
				char p[700];
				snprintf(p, sizeof(p), "%s/%s.db%s", db->base, db->names[i], sfx[j]);
				unlink(p);
			}
		}
	}
	if (!db->pg)
		rmdir(db->base);
	free(db);
	return 0;
}

void testdb_url(struct testdb *db, const char *name, const char *extra, char *url, size_t len)
{
	assert_true(db->nnames < CVM_ARRAY_SIZE(db->names));
	char *n = db->names[db->nnames++];
	snprintf(n, sizeof(db->names[0]), "%s_%s", db->prefix, name);
	if (db->pg) {
		char sql[160];
		snprintf(sql, sizeof(sql), "CREATE SCHEMA %s", n);
		run_sql(db->base, sql);
		snprintf(url, len, "%s%soptions=-csearch_path%%3D%s&application_name=%s%s%s",
			 db->base, strchr(db->base, '?') ? "&" : "?", n, db->prefix,
			 extra ? "&" : "", extra ? extra : "");
	} else {
		snprintf(url, len, "sqlite:%s/%s.db%s%s", db->base, n, extra ? "?" : "",
			 extra ? extra : "");
	}
}

struct cvm_store *testdb_open(struct testdb *db, const char *name)
{
	char url[1024];
	struct cvm_err err = { 0 };
	struct cvm_store *s = NULL;
	testdb_url(db, name, NULL, url, sizeof(url));
	if (cvm_store_open(url, &s, &err) < 0)
		fail_msg("open %s: %s", url, err.msg);
	return s;
}

/* CVM_TEST_STORE=sqlite|postgres picks one engine (scripts/test runs the suite once per
 * engine); unset, SQLite runs and PostgreSQL too when CVM_TEST_POSTGRES is set. */
int testdb_run(const char *suite, const struct CMUnitTest *tests, size_t n)
{
	const char *only = getenv("CVM_TEST_STORE");
	const char *pg = getenv("CVM_TEST_POSTGRES");
	bool want_sqlite = !only || !*only || strcmp(only, "sqlite") == 0;
	bool want_pg = !only || !*only || strcmp(only, "postgres") == 0;
	char name[96];
	int r = 0;
	if (only && *only && !want_sqlite && !want_pg) {
		fprintf(stderr, "CVM_TEST_STORE must be sqlite or postgres\n");
		return 1;
	}
	if (want_sqlite) {
		snprintf(name, sizeof(name), "%s-sqlite", suite);
		r |= _cmocka_run_group_tests(name, tests, n, testdb_setup_sqlite, testdb_teardown);
	}
	if (want_pg && pg && *pg) {
		snprintf(name, sizeof(name), "%s-postgres", suite);
		r |= _cmocka_run_group_tests(name, tests, n, testdb_setup_postgres, testdb_teardown);
	} else if (want_pg) {
		printf("# CVM_TEST_POSTGRES not set: %s PostgreSQL group skipped\n", suite);
		/* Asked for PostgreSQL only but given no server: that is a setup error. */
		if (!want_sqlite)
			r = 1;
	}
	return r;
}
