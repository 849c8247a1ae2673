/* SPDX-License-Identifier: Apache-2.0 */
/* store: every test runs against SQLite and (CVM_TEST_POSTGRES) PostgreSQL. */
#include "testdb.h"

#include <pthread.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>

/* Runs expr with `err` bound to a fresh error and fails the test with its message. */
#define ASSERT_OK(expr)                                                                      \
	do {                                                                                 \
		_Pragma("GCC diagnostic push");                                              \
		_Pragma("GCC diagnostic ignored \"-Wshadow\"");                              \
		struct cvm_err e_ = { 0 };                                                   \
		struct cvm_err *err = &e_;                                                   \
		int r_ = (expr);                                                             \
		if (r_ != 0)                                                                 \
			fail_msg("%s = %d: %s", #expr, r_, e_.msg);                          \
		_Pragma("GCC diagnostic pop");                                               \
	} while (0)

static bool is_pg(struct cvm_store *s)
{
	return strcmp(cvm_store_backend(s), "postgres") == 0;
}

static void exec1(struct cvm_store *s, const char *sql)
{
	struct cvm_tx *tx = NULL;
	ASSERT_OK(cvm_tx_begin(s, CVM_TX_WRITE, &tx, err));
	ASSERT_OK(cvm_tx_exec(tx, sql, NULL, 0, NULL, err));
	ASSERT_OK(cvm_tx_commit(tx, err));
}

static int64_t count_rows(struct cvm_store *s, const char *table)
{
	char sql[128];
	struct cvm_tx *tx = NULL;
	struct cvm_rows *rows = NULL;
	snprintf(sql, sizeof(sql), "SELECT COUNT(*) FROM %s", table);
	ASSERT_OK(cvm_tx_begin(s, CVM_TX_READ, &tx, err));
	ASSERT_OK(cvm_tx_query(tx, sql, NULL, 0, &rows, err));
	int64_t n = cvm_rows_int(rows, 0, 0);
	cvm_rows_free(rows);
	cvm_tx_rollback(tx);
	return n;
}

/* ---- open ------------------------------------------------------------------------------- */

static void test_open_bad_urls(void **state)
{
	struct cvm_err err = { 0 };
	struct cvm_store *s = NULL;
	assert_int_equal(cvm_store_open("", &s, &err), -EINVAL);
	assert_int_equal(cvm_store_open(NULL, &s, &err), -EINVAL);
	assert_int_equal(cvm_store_open("sqlite:", &s, &err), -EINVAL);
	assert_int_equal(cvm_store_open("sqlite:/tmp/x.db?pool=0", &s, &err), -EINVAL);
	assert_int_equal(cvm_store_open("sqlite:/tmp/x.db?pool=abc", &s, &err), -EINVAL);
	assert_int_equal(cvm_store_open("sqlite:/tmp/x.db?pool=65", &s, &err), -EINVAL);
	assert_true(cvm_store_open("sqlite:/proc/no-such-dir/x.db", &s, &err) < 0);
	/* Nothing listens on port 1: the first connection is made at open. */
	assert_int_equal(cvm_store_open("postgres://postgres@127.0.0.1:1/none", &s, &err), -EIO);
	assert_non_null(strstr(err.msg, "cannot connect"));
	assert_null(s);
}

static void test_open_backend_and_pool(void **state)
{
	struct testdb *db = *state;
	char url[1024];
	struct cvm_store *s = NULL;
	testdb_url(db, "pool", "pool=2", url, sizeof(url));
	ASSERT_OK(cvm_store_open(url, &s, err));
	assert_string_equal(cvm_store_backend(s), db->pg ? "postgres" : "sqlite");
	exec1(s, "CREATE TABLE t (a INTEGER)");
	/* Two readers fill a pool of two; a released connection is handed out again. */
	struct cvm_tx *r1 = NULL, *r2 = NULL;
	ASSERT_OK(cvm_tx_begin(s, CVM_TX_READ, &r1, err));
	ASSERT_OK(cvm_tx_begin(s, CVM_TX_READ, &r2, err));
	assert_string_equal(cvm_tx_backend(r1), cvm_store_backend(s));
	assert_int_equal(cvm_tx_mode(r1), CVM_TX_READ);
	cvm_tx_rollback(r1);
	ASSERT_OK(cvm_tx_begin(s, CVM_TX_READ, &r1, err));
	cvm_tx_rollback(r1);
	cvm_tx_rollback(r2);
	cvm_tx_rollback(NULL);
	cvm_store_close(s);
	if (!db->pg) {
		struct stat st;
		assert_int_equal(stat(url + strlen("sqlite:"), &st), -1); /* query was stripped */
		*strchr(url, '?') = 0;
		assert_int_equal(stat(url + strlen("sqlite:"), &st), 0);
		assert_int_equal(st.st_mode & 077, 0);
	}
}

static void test_memory_database(void **state)
{
	struct cvm_store *s = NULL;
	ASSERT_OK(cvm_store_open("sqlite::memory:", &s, err));
	exec1(s, "CREATE TABLE t (a INTEGER)");
	exec1(s, "INSERT INTO t (a) VALUES (1)");
	assert_int_equal(count_rows(s, "t"), 1);
	cvm_store_close(s);
	/* A second in-memory store is a different, empty database. */
	ASSERT_OK(cvm_store_open("sqlite::memory:", &s, err));
	struct cvm_tx *tx = NULL;
	struct cvm_rows *rows = NULL;
	struct cvm_err err = { 0 };
	ASSERT_OK(cvm_tx_begin(s, CVM_TX_READ, &tx, err));
	assert_int_equal(cvm_tx_query(tx, "SELECT a FROM t", NULL, 0, &rows, &err), -EIO);
	cvm_tx_rollback(tx);
	cvm_store_close(s);
}

/* ---- schema ----------------------------------------------------------------------------- */

static void test_schema_idempotent(void **state)
{
	struct cvm_store *s = testdb_open(*state, "schema");
	/* Not idempotent on purpose: running it twice would fail. */
	const char *v1[] = { "CREATE TABLE widgets (id INTEGER PRIMARY KEY, name TEXT NOT NULL)" };
	ASSERT_OK(cvm_store_ensure_schema(s, "widgets", 1, v1, 1, err));
	ASSERT_OK(cvm_store_ensure_schema(s, "widgets", 1, v1, 1, err));
	exec1(s, "INSERT INTO widgets (id, name) VALUES (1, 'a')");
	/* Version 2 adds a table; the v1 statement is written to be re-runnable now. */
	const char *v2[] = { "CREATE TABLE IF NOT EXISTS widgets (id INTEGER PRIMARY KEY, "
			     "name TEXT NOT NULL)",
			     "CREATE TABLE gadgets (id INTEGER PRIMARY KEY)" };
	ASSERT_OK(cvm_store_ensure_schema(s, "widgets", 2, v2, 2, err));
	ASSERT_OK(cvm_store_ensure_schema(s, "widgets", 2, v2, 2, err));
	/* An older binary asking for v1 does not re-run anything. */
	ASSERT_OK(cvm_store_ensure_schema(s, "widgets", 1, v1, 1, err));
	assert_int_equal(count_rows(s, "gadgets"), 0);
	assert_int_equal(count_rows(s, "widgets"), 1);

	/* A failing statement rolls the whole version back: no table, no version recorded. */
	struct cvm_err err = { 0 };
	const char *bad[] = { "CREATE TABLE sprockets (id INTEGER)", "CREATE TABLE broken (" };
	assert_true(cvm_store_ensure_schema(s, "sprockets", 1, bad, 2, &err) < 0);
	assert_non_null(strstr(err.msg, "schema sprockets v1 statement 2"));
	const char *good[] = { "CREATE TABLE sprockets (id INTEGER)" };
	ASSERT_OK(cvm_store_ensure_schema(s, "sprockets", 1, good, 1, err));
	assert_int_equal(cvm_store_ensure_schema(s, "", 1, good, 1, &err), -EINVAL);
	assert_int_equal(cvm_store_ensure_schema(s, "x", 0, good, 1, &err), -EINVAL);
	cvm_store_close(s);
}

struct schema_race {
	const char *url;
	int rc;
	char msg[512];
};

static void *schema_racer(void *arg)
{
	struct schema_race *r = arg;
	struct cvm_err err = { 0 };
	struct cvm_store *s = NULL;
	const char *ddl[] = { "CREATE TABLE raced (id INTEGER PRIMARY KEY)",
			      "INSERT INTO raced (id) VALUES (1)" };
	r->rc = cvm_store_open(r->url, &s, &err);
	if (r->rc == 0)
		r->rc = cvm_store_ensure_schema(s, "raced", 1, ddl, 2, &err);
	snprintf(r->msg, sizeof(r->msg), "%s", err.msg);
	cvm_store_close(s);
	return NULL;
}

/* Separate store handles stand in for separate processes starting at once. */
static void test_schema_concurrent_open(void **state)
{
	char url[1024];
	testdb_url(*state, "schemarace", NULL, url, sizeof(url));
	pthread_t th[6];
	struct schema_race r[6];
	for (int i = 0; i < 6; i++) {
		r[i] = (struct schema_race){ .url = url };
		assert_int_equal(pthread_create(&th[i], NULL, schema_racer, &r[i]), 0);
	}
	for (int i = 0; i < 6; i++)
		pthread_join(th[i], NULL);
	for (int i = 0; i < 6; i++)
		if (r[i].rc != 0)
			fail_msg("racer %d: %d %s", i, r[i].rc, r[i].msg);
	struct cvm_store *s = NULL;
	ASSERT_OK(cvm_store_open(url, &s, err));
	assert_int_equal(count_rows(s, "raced"), 1);
	cvm_store_close(s);
}

/* ---- values ----------------------------------------------------------------------------- */

static void test_params_every_type(void **state)
{
	struct cvm_store *s = testdb_open(*state, "params");
	exec1(s, "CREATE TABLE v (id INTEGER PRIMARY KEY, i INTEGER, t TEXT, b BLOB)");
	uint8_t all[256];
	for (int i = 0; i < 256; i++)
		all[i] = (uint8_t)i;
	const uint8_t zeros[4] = { 0, 0, 0, 0 };
	const char *utf8 = "gr\xc3\xbc\xc3\x9f \xe2\x82\xac 'quoted' ? $1";
	struct cvm_val rows[][4] = {
		{ CVM_VAL_I(1), CVM_VAL_I(INT64_MAX), CVM_VAL_S(utf8), CVM_VAL_B(all, 256) },
		{ CVM_VAL_I(2), CVM_VAL_I(INT64_MIN), CVM_VAL_S(""), CVM_VAL_B(zeros, 4) },
		{ CVM_VAL_I(3), CVM_VAL_NIL, CVM_VAL_S(NULL), CVM_VAL_NIL },
		{ CVM_VAL_I(4), CVM_VAL_I(0), CVM_VAL_S("x"), CVM_VAL_B("", 0) },
	};
	struct cvm_tx *tx = NULL;
	ASSERT_OK(cvm_tx_begin(s, CVM_TX_WRITE, &tx, err));
	for (size_t i = 0; i < CVM_ARRAY_SIZE(rows); i++) {
		int64_t changes = -1;
		ASSERT_OK(cvm_tx_exec(tx, "INSERT INTO v (id, i, t, b) VALUES (?, ?, ?, ?)", rows[i],
				      4, &changes, err));
		assert_int_equal(changes, 1);
	}
	ASSERT_OK(cvm_tx_commit(tx, err));

	struct cvm_rows *r = NULL;
	ASSERT_OK(cvm_tx_begin(s, CVM_TX_READ, &tx, err));
	ASSERT_OK(cvm_tx_query(tx, "SELECT id, i, t, b FROM v ORDER BY id", NULL, 0, &r, err));
	assert_int_equal(cvm_rows_count(r), 4);
	assert_int_equal(cvm_rows_ncols(r), 4);
	size_t len;
	assert_int_equal(cvm_rows_int(r, 0, 1), INT64_MAX);
	assert_string_equal(cvm_rows_text(r, 0, 2), utf8);
	const uint8_t *b = cvm_rows_blob(r, 0, 3, &len);
	assert_int_equal(len, 256);
	assert_memory_equal(b, all, 256);
	assert_int_equal(cvm_rows_int(r, 1, 1), INT64_MIN);
	assert_string_equal(cvm_rows_text(r, 1, 1), "-9223372036854775808");
	assert_false(cvm_rows_null(r, 1, 2));
	assert_string_equal(cvm_rows_text(r, 1, 2), "");
	b = cvm_rows_blob(r, 1, 3, &len);
	assert_int_equal(len, 4);
	assert_memory_equal(b, zeros, 4);
	for (size_t c = 1; c < 4; c++) {
		assert_true(cvm_rows_null(r, 2, c));
		assert_null(cvm_rows_text(r, 2, c));
		assert_int_equal(cvm_rows_int(r, 2, c), 0);
		assert_null(cvm_rows_blob(r, 2, c, &len));
		assert_int_equal(len, 0);
	}
	/* An empty blob is not NULL. */
	assert_false(cvm_rows_null(r, 3, 3));
	assert_non_null(cvm_rows_blob(r, 3, 3, &len));
	assert_int_equal(len, 0);
	/* Out of range behaves like NULL. */
	assert_true(cvm_rows_null(r, 4, 0));
	assert_true(cvm_rows_null(r, 0, 4));
	assert_null(cvm_rows_text(r, 99, 0));
	cvm_rows_free(r);

	/* Parameters in WHERE, a '?' inside a literal is not a placeholder. */
	struct cvm_val p[] = { CVM_VAL_B(zeros, 4), CVM_VAL_I(2) };
	ASSERT_OK(cvm_tx_query(tx, "SELECT '?', id FROM v WHERE b = ? AND id = ?", p, 2, &r, err));
	assert_int_equal(cvm_rows_count(r), 1);
	assert_string_equal(cvm_rows_text(r, 0, 0), "?");
	assert_int_equal(cvm_rows_int(r, 0, 1), 2);
	cvm_rows_free(r);
	p[1] = CVM_VAL_I(1);
	ASSERT_OK(cvm_tx_query(tx, "SELECT '?', id FROM v WHERE b = ? AND id = ?", p, 2, &r, err));
	assert_int_equal(cvm_rows_count(r), 0);
	cvm_rows_free(r);
	/* Text cells read as integers when numeric (PostgreSQL SUM of BIGINT is NUMERIC). */
	ASSERT_OK(cvm_tx_query(tx, "SELECT SUM(id), '12x' FROM v", NULL, 0, &r, err));
	assert_int_equal(cvm_rows_int(r, 0, 0), 10);
	assert_int_equal(cvm_rows_int(r, 0, 1), 0);
	cvm_rows_free(r);
	cvm_tx_rollback(tx);
	cvm_store_close(s);
}

static void test_param_errors(void **state)
{
	struct cvm_store *s = testdb_open(*state, "paramerr");
	exec1(s, "CREATE TABLE v (id INTEGER PRIMARY KEY, t TEXT)");
	struct cvm_err err = { 0 };
	struct cvm_tx *tx = NULL;
	struct cvm_rows *r = NULL;
	struct cvm_val one = CVM_VAL_I(1);
	ASSERT_OK(cvm_tx_begin(s, CVM_TX_WRITE, &tx, err));
	assert_int_equal(cvm_tx_exec(tx, "INSERT INTO v (id, t) VALUES (?, ?)", &one, 1, NULL, &err),
			 -EINVAL);
	assert_non_null(strstr(err.msg, "INSERT INTO v"));
	assert_int_equal(cvm_tx_exec(tx, "INSERT INTO v (id) VALUES (?)", NULL, 1, NULL, &err),
			 -EINVAL);
	struct cvm_val badtext = { .type = CVM_VAL_TEXT, .s = NULL };
	assert_int_equal(cvm_tx_exec(tx, "INSERT INTO v (id) VALUES (?)", &badtext, 1, NULL, &err),
			 -EINVAL);
	assert_int_equal(cvm_tx_query(tx, "SELECT 1", NULL, 0, NULL, &err), -EINVAL);
	assert_true(cvm_tx_query(tx, "SELECT nothing FROM nowhere", NULL, 0, &r, &err) < 0);
	assert_null(r);
	assert_non_null(strstr(err.msg, "SELECT nothing FROM"));
	cvm_tx_rollback(tx);

	/* A value that fails conversion never appears in the message (PostgreSQL quotes it in
	 * its own message; SQLite converts silently). */
	if (is_pg(s)) {
		struct cvm_val secret = CVM_VAL_S("s3cr3t-value");
		ASSERT_OK(cvm_tx_begin(s, CVM_TX_WRITE, &tx, err));
		assert_int_equal(cvm_tx_exec(tx, "INSERT INTO v (id) VALUES (?)", &secret, 1, NULL,
					     &err),
				 -EIO);
		assert_null(strstr(err.msg, "s3cr3t"));
		assert_non_null(strstr(err.msg, "SQLSTATE 22"));
		/* The transaction is now aborted: commit reports it instead of pretending. */
		assert_int_equal(cvm_tx_commit(tx, &err), -EIO);
		assert_non_null(strstr(err.msg, "aborted"));
	}
	cvm_store_close(s);
}

static void test_unique_violation(void **state)
{
	struct cvm_store *s = testdb_open(*state, "unique");
	exec1(s, "CREATE TABLE k (name TEXT PRIMARY KEY, v INTEGER)");
	struct cvm_err err = { 0 };
	struct cvm_tx *tx = NULL;
	struct cvm_val p[] = { CVM_VAL_S("secret-name-42"), CVM_VAL_I(1) };
	ASSERT_OK(cvm_tx_begin(s, CVM_TX_WRITE, &tx, err));
	ASSERT_OK(cvm_tx_exec(tx, "INSERT INTO k (name, v) VALUES (?, ?)", p, 2, NULL, err));
	ASSERT_OK(cvm_tx_commit(tx, err));
	ASSERT_OK(cvm_tx_begin(s, CVM_TX_WRITE, &tx, err));
	assert_int_equal(cvm_tx_exec(tx, "INSERT INTO k (name, v) VALUES (?, ?)", p, 2, NULL, &err),
			 -EEXIST);
	assert_string_equal(err.code, "Conflict");
	assert_int_equal(cvm_err_http_status(&err), 409);
	assert_non_null(strstr(err.msg, "INSERT INTO k"));
	assert_null(strstr(err.msg, "secret-name-42"));
	/* PostgreSQL aborted the transaction: commit reports the statement's error. SQLite
	 * undid only the statement (callers must not rely on that; see store.h). */
	if (is_pg(s)) {
		assert_int_equal(cvm_tx_commit(tx, &err), -EEXIST);
		assert_string_equal(err.code, "Conflict");
	} else {
		ASSERT_OK(cvm_tx_commit(tx, err));
	}
	/* ON CONFLICT works the same on both engines. */
	int64_t changes = -1;
	ASSERT_OK(cvm_tx_begin(s, CVM_TX_WRITE, &tx, err));
	ASSERT_OK(cvm_tx_exec(tx, "INSERT INTO k (name, v) VALUES (?, ?) ON CONFLICT DO NOTHING", p,
			      2, &changes, err));
	assert_int_equal(changes, 0);
	p[1] = CVM_VAL_I(7);
	ASSERT_OK(cvm_tx_exec(tx, "INSERT INTO k (name, v) VALUES (?, ?) ON CONFLICT (name) DO "
				  "UPDATE SET v = excluded.v",
			      p, 2, &changes, err));
	assert_int_equal(changes, 1);
	ASSERT_OK(cvm_tx_commit(tx, err));
	assert_int_equal(count_rows(s, "k"), 1);
	cvm_store_close(s);
}

/* ---- transactions ----------------------------------------------------------------------- */

static void insert_n(struct cvm_tx *tx, int from, int n)
{
	for (int i = from; i < from + n; i++) {
		struct cvm_val v = CVM_VAL_I(i);
		ASSERT_OK(cvm_tx_exec(tx, "INSERT INTO t (a) VALUES (?)", &v, 1, NULL, err));
	}
}

static void test_rollback_leaves_nothing(void **state)
{
	struct cvm_store *s = testdb_open(*state, "rollback");
	exec1(s, "CREATE TABLE t (a INTEGER PRIMARY KEY)");
	struct cvm_tx *tx = NULL;
	ASSERT_OK(cvm_tx_begin(s, CVM_TX_WRITE, &tx, err));
	insert_n(tx, 1, 3);
	cvm_tx_rollback(tx);
	assert_int_equal(count_rows(s, "t"), 0);
	{
		/* Leaving scope without commit rolls back too. */
		_cleanup_tx_ struct cvm_tx *scoped = NULL;
		ASSERT_OK(cvm_tx_begin(s, CVM_TX_WRITE, &scoped, err));
		insert_n(scoped, 1, 3);
	}
	assert_int_equal(count_rows(s, "t"), 0);
	ASSERT_OK(cvm_tx_begin(s, CVM_TX_WRITE, &tx, err));
	insert_n(tx, 1, 3);
	ASSERT_OK(cvm_tx_commit(tx, err));
	assert_int_equal(count_rows(s, "t"), 3);
	cvm_store_close(s);
}

static void test_read_tx_is_read_only(void **state)
{
	struct cvm_store *s = testdb_open(*state, "readonly");
	exec1(s, "CREATE TABLE t (a INTEGER PRIMARY KEY)");
	struct cvm_err err = { 0 };
	struct cvm_tx *tx = NULL;
	struct cvm_val v = CVM_VAL_I(1);
	ASSERT_OK(cvm_tx_begin(s, CVM_TX_READ, &tx, err));
	assert_int_equal(cvm_tx_exec(tx, "INSERT INTO t (a) VALUES (?)", &v, 1, NULL, &err), -EIO);
	cvm_tx_rollback(tx);
	ASSERT_OK(cvm_tx_begin(s, CVM_TX_WRITE, &tx, err));
	ASSERT_OK(cvm_tx_exec(tx, "INSERT INTO t (a) VALUES (?)", &v, 1, NULL, err));
	ASSERT_OK(cvm_tx_commit(tx, err));
	assert_int_equal(count_rows(s, "t"), 1);
	cvm_store_close(s);
}

static void test_snapshot_isolation(void **state)
{
	struct cvm_store *s = testdb_open(*state, "snapshot");
	exec1(s, "CREATE TABLE t (a INTEGER PRIMARY KEY)");
	exec1(s, "INSERT INTO t (a) VALUES (1)");
	struct cvm_tx *rd = NULL, *wr = NULL;
	struct cvm_rows *r = NULL;
	ASSERT_OK(cvm_tx_begin(s, CVM_TX_READ, &rd, err));
	ASSERT_OK(cvm_tx_query(rd, "SELECT COUNT(*) FROM t", NULL, 0, &r, err));
	assert_int_equal(cvm_rows_int(r, 0, 0), 1);
	cvm_rows_free(r);
	ASSERT_OK(cvm_tx_begin(s, CVM_TX_WRITE, &wr, err));
	insert_n(wr, 2, 5);
	ASSERT_OK(cvm_tx_commit(wr, err));
	/* The reader keeps its snapshot. */
	ASSERT_OK(cvm_tx_query(rd, "SELECT COUNT(*) FROM t", NULL, 0, &r, err));
	assert_int_equal(cvm_rows_int(r, 0, 0), 1);
	cvm_rows_free(r);
	ASSERT_OK(cvm_tx_commit(rd, err));
	assert_int_equal(count_rows(s, "t"), 6);
	cvm_store_close(s);
}

static void test_persists_across_reopen(void **state)
{
	char url[1024];
	testdb_url(*state, "reopen", NULL, url, sizeof(url));
	struct cvm_store *s = NULL;
	ASSERT_OK(cvm_store_open(url, &s, err));
	exec1(s, "CREATE TABLE t (a INTEGER PRIMARY KEY)");
	struct cvm_tx *tx = NULL;
	ASSERT_OK(cvm_tx_begin(s, CVM_TX_WRITE, &tx, err));
	insert_n(tx, 1, 10);
	ASSERT_OK(cvm_tx_commit(tx, err));
	ASSERT_OK(cvm_tx_begin(s, CVM_TX_WRITE, &tx, err));
	int64_t changes = 0;
	struct cvm_val v = CVM_VAL_I(5);
	ASSERT_OK(cvm_tx_exec(tx, "DELETE FROM t WHERE a > ?", &v, 1, &changes, err));
	assert_int_equal(changes, 5);
	ASSERT_OK(cvm_tx_commit(tx, err));
	cvm_store_close(s);
	ASSERT_OK(cvm_store_open(url, &s, err));
	assert_int_equal(count_rows(s, "t"), 5);
	cvm_store_close(s);
}

/* The engine's flush setting as seen inside a write transaction of the given mode: SQLite
 * PRAGMA synchronous (2 FULL, 1 NORMAL), PostgreSQL synchronous_commit (1 on, 0 off). */
static int64_t flush_level(struct cvm_store *s, enum cvm_tx_mode mode)
{
	struct cvm_tx *tx = NULL;
	struct cvm_rows *rows = NULL;
	ASSERT_OK(cvm_tx_begin(s, mode, &tx, err));
	assert_int_equal(cvm_tx_mode(tx), CVM_TX_WRITE);
	ASSERT_OK(cvm_tx_query(tx,
			       is_pg(s) ? "SELECT CASE current_setting('synchronous_commit') "
					  "WHEN 'off' THEN 0 ELSE 1 END"
					: "PRAGMA synchronous",
			       NULL, 0, &rows, err));
	int64_t level = cvm_rows_int(rows, 0, 0);
	cvm_rows_free(rows);
	ASSERT_OK(cvm_tx_commit(tx, err));
	return level;
}

/* A lazy write commits like any other (visible, persistent, undone by rollback) and only its
 * own commit skips the flush: the next ordinary write transaction flushes again. */
static void test_lazy_write(void **state)
{
	char url[1024];
	testdb_url(*state, "lazy", NULL, url, sizeof(url));
	struct cvm_store *s = NULL;
	ASSERT_OK(cvm_store_open(url, &s, err));
	exec1(s, "CREATE TABLE t (a INTEGER PRIMARY KEY)");
	int64_t full = is_pg(s) ? 1 : 2, lazy = is_pg(s) ? 0 : 1;
	assert_int_equal(flush_level(s, CVM_TX_WRITE), full);
	assert_int_equal(flush_level(s, CVM_TX_WRITE_LAZY), lazy);
	assert_int_equal(flush_level(s, CVM_TX_WRITE), full);

	struct cvm_tx *tx = NULL;
	ASSERT_OK(cvm_tx_begin(s, CVM_TX_WRITE_LAZY, &tx, err));
	insert_n(tx, 1, 3);
	cvm_tx_rollback(tx);
	assert_int_equal(count_rows(s, "t"), 0);
	assert_int_equal(flush_level(s, CVM_TX_WRITE), full);

	ASSERT_OK(cvm_tx_begin(s, CVM_TX_WRITE_LAZY, &tx, err));
	insert_n(tx, 1, 3);
	ASSERT_OK(cvm_tx_commit(tx, err));
	assert_int_equal(count_rows(s, "t"), 3);
	exec1(s, "INSERT INTO t (a) VALUES (100)"); /* the durable commit that covers it */
	cvm_store_close(s);
	ASSERT_OK(cvm_store_open(url, &s, err));
	assert_int_equal(count_rows(s, "t"), 4);
	struct cvm_err e = { 0 };
	assert_int_equal(cvm_tx_begin(s, (enum cvm_tx_mode)7, &tx, &e), -EINVAL);
	cvm_store_close(s);
}

struct retry_ctx {
	int base; /* first value inserted; one per attempt */
	int attempts;
	int fail_first;
	int rc;
};

static int retry_fn(struct cvm_tx *tx, void *arg, struct cvm_err *err)
{
	struct retry_ctx *c = arg;
	struct cvm_val v = CVM_VAL_I(c->base + c->attempts);
	int r = cvm_tx_exec(tx, "INSERT INTO t (a) VALUES (?)", &v, 1, NULL, err);
	if (r < 0)
		return r;
	if (c->attempts++ < c->fail_first)
		return cvm_err_set(err, c->rc, "Conflict", "simulated failure");
	return 0;
}

static void test_transact_retry(void **state)
{
	struct cvm_store *s = testdb_open(*state, "retry");
	exec1(s, "CREATE TABLE t (a INTEGER PRIMARY KEY)");
	struct cvm_err err = { 0 };
	/* Two serialization failures, then success: three attempts, one row. */
	struct retry_ctx c = { .base = 100, .fail_first = 2, .rc = EAGAIN };
	ASSERT_OK(cvm_store_transact(s, CVM_TX_WRITE, retry_fn, &c, err));
	assert_int_equal(c.attempts, 3);
	assert_int_equal(count_rows(s, "t"), 1);
	/* Other errors are not retried and roll back. */
	c = (struct retry_ctx){ .base = 200, .fail_first = 5, .rc = EINVAL };
	assert_int_equal(cvm_store_transact(s, CVM_TX_WRITE, retry_fn, &c, &err), -EINVAL);
	assert_int_equal(c.attempts, 1);
	/* Retries are bounded. */
	c = (struct retry_ctx){ .base = 300, .fail_first = 1000, .rc = EAGAIN };
	assert_int_equal(cvm_store_transact(s, CVM_TX_WRITE, retry_fn, &c, &err), -EAGAIN);
	assert_int_equal(c.attempts, 16);
	assert_non_null(strstr(err.msg, "gave up"));
	assert_int_equal(count_rows(s, "t"), 1);
	cvm_store_close(s);
}

/* Read-modify-write of one counter from many threads: under SERIALIZABLE (PostgreSQL) the
 * losers get serialization failures and cvm_store_transact must retry them; no increment may
 * be lost. */
struct counter_ctx {
	struct cvm_store *s;
	int n;
	bool lock;
	int calls; /* transaction attempts */
	int failures;
	char msg[512];
};

static int incr_fn(struct cvm_tx *tx, void *arg, struct cvm_err *err)
{
	struct counter_ctx *c = arg;
	struct cvm_rows *r = NULL;
	c->calls++;
	if (c->lock) {
		int ret = cvm_tx_lock(tx, "counter", err);
		if (ret < 0)
			return ret;
	}
	int ret = cvm_tx_query(tx, "SELECT v FROM counter WHERE id = 1", NULL, 0, &r, err);
	if (ret < 0)
		return ret;
	struct cvm_val v = CVM_VAL_I(cvm_rows_int(r, 0, 0) + 1);
	cvm_rows_free(r);
	return cvm_tx_exec(tx, "UPDATE counter SET v = ? WHERE id = 1", &v, 1, NULL, err);
}

static void *incr_thread(void *arg)
{
	struct counter_ctx *c = arg;
	for (int i = 0; i < c->n; i++) {
		struct cvm_err err = { 0 };
		if (cvm_store_transact(c->s, CVM_TX_WRITE, incr_fn, c, &err) < 0) {
			c->failures++;
			snprintf(c->msg, sizeof(c->msg), "%s", err.msg);
		}
	}
	return NULL;
}

static void test_transact_contention(void **state)
{
	char url[1024];
	testdb_url(*state, "contention", "pool=4", url, sizeof(url));
	struct cvm_store *s = NULL;
	ASSERT_OK(cvm_store_open(url, &s, err));
	exec1(s, "CREATE TABLE counter (id INTEGER PRIMARY KEY, v INTEGER NOT NULL)");
	exec1(s, "INSERT INTO counter (id, v) VALUES (1, 0)");
	/* Without the lock, losers are retried; with it (taken first) nobody loses. */
	int64_t total = 0;
	for (int phase = 0; phase < 2; phase++) {
		pthread_t th[4];
		struct counter_ctx c[4];
		for (int i = 0; i < 4; i++) {
			c[i] = (struct counter_ctx){ .s = s, .n = 25, .lock = phase == 1 };
			assert_int_equal(pthread_create(&th[i], NULL, incr_thread, &c[i]), 0);
		}
		int failed = 0, calls = 0;
		for (int i = 0; i < 4; i++) {
			pthread_join(th[i], NULL);
			if (c[i].failures)
				print_message("thread %d: %d failed: %s\n", i, c[i].failures,
					      c[i].msg);
			failed += c[i].failures;
			calls += c[i].calls;
		}
		print_message("[%s] 100 contended increments %s lock: %d attempts\n",
			      cvm_store_backend(s), phase ? "with" : "without", calls);
		struct cvm_tx *tx = NULL;
		struct cvm_rows *r = NULL;
		ASSERT_OK(cvm_tx_begin(s, CVM_TX_READ, &tx, err));
		ASSERT_OK(cvm_tx_query(tx, "SELECT v FROM counter", NULL, 0, &r, err));
		int64_t v = cvm_rows_int(r, 0, 0);
		cvm_rows_free(r);
		cvm_tx_rollback(tx);
		/* No lost update ever. Without the lock a thread may give up after 16 attempts
		 * under heavy contention (that is the bound working); with it nobody retries. */
		assert_int_equal(v, total + 100 - failed);
		total = v;
		if (phase == 1) {
			assert_int_equal(failed, 0);
			assert_int_equal(calls, 100);
		}
	}
	cvm_store_close(s);
}

static void test_lock_arguments(void **state)
{
	struct cvm_store *s = testdb_open(*state, "lockargs");
	exec1(s, "CREATE TABLE t (a INTEGER)");
	struct cvm_err err = { 0 };
	struct cvm_tx *tx = NULL;
	ASSERT_OK(cvm_tx_begin(s, CVM_TX_WRITE, &tx, err));
	assert_int_equal(cvm_tx_lock(tx, "t; DROP TABLE t", &err), -EINVAL);
	assert_int_equal(cvm_tx_lock(tx, "", &err), -EINVAL);
	assert_int_equal(cvm_tx_lock(tx, "1t", &err), -EINVAL);
	ASSERT_OK(cvm_tx_lock(tx, "t", err));
	ASSERT_OK(cvm_tx_commit(tx, err));
	ASSERT_OK(cvm_tx_begin(s, CVM_TX_READ, &tx, err));
	assert_int_equal(cvm_tx_lock(tx, "t", &err), -EINVAL);
	cvm_tx_rollback(tx);
	cvm_store_close(s);
}

struct writer_ctx {
	struct cvm_store *s;
	int id;
	int errors;
	char msg[512];
};

static int insert_one(struct cvm_tx *tx, void *arg, struct cvm_err *err)
{
	struct cvm_val *v = arg;
	return cvm_tx_exec(tx, "INSERT INTO t (a, who, payload) VALUES (?, ?, ?)", v, 3, NULL, err);
}

static void *writer_thread(void *arg)
{
	struct writer_ctx *c = arg;
	uint8_t payload[64];
	memset(payload, c->id, sizeof(payload));
	for (int i = 0; i < 200; i++) {
		struct cvm_err err = { 0 };
		struct cvm_val v[] = { CVM_VAL_I(c->id * 1000 + i), CVM_VAL_I(c->id),
				       CVM_VAL_B(payload, sizeof(payload)) };
		if (cvm_store_transact(c->s, CVM_TX_WRITE, insert_one, v, &err) < 0) {
			c->errors++;
			snprintf(c->msg, sizeof(c->msg), "%s", err.msg);
		}
		/* Readers run alongside the writers. */
		if (i % 20 == 0) {
			struct cvm_tx *tx = NULL;
			struct cvm_rows *r = NULL;
			if (cvm_tx_begin(c->s, CVM_TX_READ, &tx, &err) < 0 ||
			    cvm_tx_query(tx, "SELECT COUNT(*) FROM t", NULL, 0, &r, &err) < 0)
				c->errors++;
			cvm_rows_free(r);
			cvm_tx_rollback(tx);
		}
	}
	return NULL;
}

static void test_concurrent_writers(void **state)
{
	struct cvm_store *s = testdb_open(*state, "writers");
	exec1(s, "CREATE TABLE t (a INTEGER PRIMARY KEY, who INTEGER NOT NULL, payload BLOB)");
	pthread_t th[8];
	struct writer_ctx c[8];
	uint64_t t0 = cvm_monotonic_ns();
	for (int i = 0; i < 8; i++) {
		c[i] = (struct writer_ctx){ .s = s, .id = i + 1 };
		assert_int_equal(pthread_create(&th[i], NULL, writer_thread, &c[i]), 0);
	}
	for (int i = 0; i < 8; i++)
		pthread_join(th[i], NULL);
	for (int i = 0; i < 8; i++)
		if (c[i].errors)
			fail_msg("writer %d: %d errors, last: %s", i, c[i].errors, c[i].msg);
	double secs = (double)(cvm_monotonic_ns() - t0) / 1e9;
	print_message("[%s] 8 threads x 200 single-row write transactions: %.0f tx/s\n",
		      cvm_store_backend(s), 1600 / secs);
	assert_int_equal(count_rows(s, "t"), 1600);
	struct cvm_tx *tx = NULL;
	struct cvm_rows *r = NULL;
	ASSERT_OK(cvm_tx_begin(s, CVM_TX_READ, &tx, err));
	ASSERT_OK(cvm_tx_query(tx, "SELECT who, COUNT(*), COUNT(DISTINCT a) FROM t GROUP BY who "
				   "ORDER BY who",
			       NULL, 0, &r, err));
	assert_int_equal(cvm_rows_count(r), 8);
	for (size_t i = 0; i < 8; i++) {
		assert_int_equal(cvm_rows_int(r, i, 0), (int64_t)i + 1);
		assert_int_equal(cvm_rows_int(r, i, 1), 200);
		assert_int_equal(cvm_rows_int(r, i, 2), 200);
	}
	cvm_rows_free(r);
	cvm_tx_rollback(tx);
	cvm_store_close(s);
}

/* The key service's hot path: short read transactions running the same point query. The
 * rate is printed, not asserted; every answer is checked. */
static void test_hot_path_reads(void **state)
{
	struct cvm_store *s = testdb_open(*state, "hotpath");
	exec1(s, "CREATE TABLE k (name TEXT PRIMARY KEY, sealed BLOB NOT NULL)");
	struct cvm_tx *tx = NULL;
	uint8_t sealed[96];
	memset(sealed, 0xa5, sizeof(sealed));
	ASSERT_OK(cvm_tx_begin(s, CVM_TX_WRITE, &tx, err));
	for (int i = 0; i < 100; i++) {
		char name[16];
		snprintf(name, sizeof(name), "key-%d", i);
		struct cvm_val v[] = { CVM_VAL_S(name), CVM_VAL_B(sealed, sizeof(sealed)) };
		ASSERT_OK(cvm_tx_exec(tx, "INSERT INTO k (name, sealed) VALUES (?, ?)", v, 2, NULL,
				      err));
	}
	ASSERT_OK(cvm_tx_commit(tx, err));
	uint64_t t0 = cvm_monotonic_ns();
	const int n = 3000;
	for (int i = 0; i < n; i++) {
		char name[16];
		snprintf(name, sizeof(name), "key-%d", i % 100);
		struct cvm_val v = CVM_VAL_S(name);
		struct cvm_rows *r = NULL;
		size_t len = 0;
		ASSERT_OK(cvm_tx_begin(s, CVM_TX_READ, &tx, err));
		ASSERT_OK(cvm_tx_query(tx, "SELECT sealed FROM k WHERE name = ?", &v, 1, &r, err));
		const uint8_t *b = cvm_rows_blob(r, 0, 0, &len);
		assert_int_equal(len, sizeof(sealed));
		assert_memory_equal(b, sealed, sizeof(sealed));
		cvm_rows_free(r);
		ASSERT_OK(cvm_tx_commit(tx, err));
	}
	double secs = (double)(cvm_monotonic_ns() - t0) / 1e9;
	print_message("[%s] point-read transactions, 1 thread: %.0f/s\n", cvm_store_backend(s),
		      n / secs);
	cvm_store_close(s);
}

static void test_multiple_statements_refused(void **state)
{
	struct cvm_store *s = testdb_open(*state, "multi");
	exec1(s, "CREATE TABLE t (a INTEGER PRIMARY KEY)");
	struct cvm_err err = { 0 };
	struct cvm_tx *tx = NULL;
	ASSERT_OK(cvm_tx_begin(s, CVM_TX_WRITE, &tx, err));
	assert_true(cvm_tx_exec(tx, "INSERT INTO t (a) VALUES (1); DELETE FROM t", NULL, 0, NULL,
				&err) < 0);
	cvm_tx_rollback(tx);
	assert_int_equal(count_rows(s, "t"), 0);
	cvm_store_close(s);
}

/* PostgreSQL: a connection killed by the server is replaced at the next transaction. */
static void test_reconnect(void **state)
{
	struct testdb *db = *state;
	if (!db->pg)
		skip();
	char url[1024];
	testdb_url(db, "reconnect", "pool=1", url, sizeof(url));
	struct cvm_store *s = NULL, *killer = NULL;
	ASSERT_OK(cvm_store_open(url, &s, err));
	ASSERT_OK(cvm_store_open(url, &killer, err));
	struct cvm_tx *tx = NULL;
	struct cvm_rows *r = NULL;
	ASSERT_OK(cvm_tx_begin(s, CVM_TX_READ, &tx, err));
	ASSERT_OK(cvm_tx_query(tx, "SELECT pg_backend_pid()", NULL, 0, &r, err));
	struct cvm_val pid = CVM_VAL_I(cvm_rows_int(r, 0, 0));
	cvm_rows_free(r);
	ASSERT_OK(cvm_tx_commit(tx, err));
	ASSERT_OK(cvm_tx_begin(killer, CVM_TX_WRITE, &tx, err));
	ASSERT_OK(cvm_tx_query(tx, "SELECT pg_terminate_backend(CAST(? AS INT))", &pid, 1, &r,
			       err));
	assert_int_equal(cvm_rows_int(r, 0, 0), 1);
	cvm_rows_free(r);
	ASSERT_OK(cvm_tx_commit(tx, err));
	ASSERT_OK(cvm_tx_begin(s, CVM_TX_READ, &tx, err));
	ASSERT_OK(cvm_tx_query(tx, "SELECT pg_backend_pid()", NULL, 0, &r, err));
	assert_int_not_equal(cvm_rows_int(r, 0, 0), pid.i);
	cvm_rows_free(r);
	ASSERT_OK(cvm_tx_commit(tx, err));
	cvm_store_close(killer);
	cvm_store_close(s);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_open_bad_urls),
		cmocka_unit_test(test_open_backend_and_pool),
		cmocka_unit_test(test_memory_database),
		cmocka_unit_test(test_schema_idempotent),
		cmocka_unit_test(test_schema_concurrent_open),
		cmocka_unit_test(test_params_every_type),
		cmocka_unit_test(test_param_errors),
		cmocka_unit_test(test_unique_violation),
		cmocka_unit_test(test_rollback_leaves_nothing),
		cmocka_unit_test(test_read_tx_is_read_only),
		cmocka_unit_test(test_snapshot_isolation),
		cmocka_unit_test(test_persists_across_reopen),
		cmocka_unit_test(test_lazy_write),
		cmocka_unit_test(test_transact_retry),
		cmocka_unit_test(test_transact_contention),
		cmocka_unit_test(test_lock_arguments),
		cmocka_unit_test(test_concurrent_writers),
		cmocka_unit_test(test_hot_path_reads),
		cmocka_unit_test(test_multiple_statements_refused),
		cmocka_unit_test(test_reconnect),
	};
	return testdb_run("store", tests, CVM_ARRAY_SIZE(tests));
}
