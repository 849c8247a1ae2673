/* SPDX-License-Identifier: Apache-2.0 */
/* Test databases: every store/audit test runs against SQLite in a temporary directory and,
 * when CVM_TEST_POSTGRES names a server, against PostgreSQL in a schema unique to this run. */
#pragma once

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <opencvm/store.h>

struct testdb {
	bool pg;
	char base[512];   /* CVM_TEST_POSTGRES or the temporary directory */
	char prefix[64];  /* unique per run */
	char names[64][80]; /* databases/schemas handed out, dropped at teardown */
	size_t nnames;
};

/* cmocka group setup/teardown; the group state is a struct testdb. */
int testdb_setup_sqlite(void **state);
int testdb_setup_postgres(void **state);
int testdb_teardown(void **state);

/* A fresh, empty database for one test, as a store URL (extra: "pool=N" or NULL). */
void testdb_url(struct testdb *db, const char *name, const char *extra, char *url, size_t len);
/* Opens a fresh database; fails the test on error. */
struct cvm_store *testdb_open(struct testdb *db, const char *name);
/* Runs every test group against SQLite and, if configured, PostgreSQL. */
int testdb_run(const char *suite, const struct CMUnitTest *tests, size_t n);
