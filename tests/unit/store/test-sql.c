/* SPDX-License-Identifier: Apache-2.0 */
/* store internals: PostgreSQL dialect rewrite, statement summaries, statement cache. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include "store/store-int.h"

#include <stdio.h>
#include <string.h>

static void expect_pg(const char *in, const char *want, size_t want_n)
{
	size_t n = 99;
	char *out = sql_to_postgres(in, &n);
	assert_non_null(out);
	assert_string_equal(out, want);
	assert_int_equal(n, want_n);
	free(out);
}

static void test_placeholders(void **state)
{
	expect_pg("SELECT a FROM t WHERE b = ? AND c = ?", "SELECT a FROM t WHERE b = $1 AND c = $2",
		  2);
	expect_pg("SELECT 1", "SELECT 1", 0);
	expect_pg("", "", 0);
	/* '?' in literals, quoted identifiers and comments is text, not a parameter. */
	expect_pg("SELECT '?', \"a?\", ? -- what?\n, ? /* ? */", "SELECT '?', \"a?\", $1 -- what?\n, $2 /* ? */",
		  2);
	/* Doubled quotes stay inside the literal. */
	expect_pg("SELECT 'it''s ?', ?", "SELECT 'it''s ?', $1", 1);
	/* Unterminated literal/comment: copied as is, no parameter invented. */
	expect_pg("SELECT 'open ?", "SELECT 'open ?", 0);
	expect_pg("SELECT ? /* open ?", "SELECT $1 /* open ?", 1);
	char in[64 * 2 + 1] = "", want[256] = "";
	for (int i = 1; i <= 12; i++) {
		strcat(in, "?,");
		snprintf(want + strlen(want), sizeof(want) - strlen(want), "$%d,", i);
	}
	expect_pg(in, want, 12);
}

static void test_types(void **state)
{
	expect_pg("CREATE TABLE t (a INTEGER PRIMARY KEY, b blob, c Integer NOT NULL)",
		  "CREATE TABLE t (a BIGINT PRIMARY KEY, b BYTEA, c BIGINT NOT NULL)", 0);
	/* Only whole words outside quotes. */
	expect_pg("CREATE TABLE t (integer_col TEXT, blobs TEXT, x \"INTEGER\", y TEXT DEFAULT "
		  "'BLOB')",
		  "CREATE TABLE t (integer_col TEXT, blobs TEXT, x \"INTEGER\", y TEXT DEFAULT "
		  "'BLOB')",
		  0);
	expect_pg("SELECT CAST(? AS INTEGER)", "SELECT CAST($1 AS BIGINT)", 1);
}

static void test_first_words(void **state)
{
	char out[64];
	sql_first_words("  INSERT INTO keys (name, value) VALUES (?, ?)", out, sizeof(out));
	assert_string_equal(out, "INSERT INTO keys");
	sql_first_words("UPDATE t SET secret='abc'", out, sizeof(out));
	assert_string_equal(out, "UPDATE t SET");
	sql_first_words("DELETE FROM t WHERE a='x'", out, sizeof(out));
	assert_string_equal(out, "DELETE FROM t");
	/* Values never leak even when the SQL inlines them early. */
	sql_first_words("SELECT 'secret' FROM t", out, sizeof(out));
	assert_string_equal(out, "SELECT");
	sql_first_words("UPDATE t SET a=5", out, sizeof(out));
	assert_string_equal(out, "UPDATE t SET");
	sql_first_words("SELECT a, b FROM cvm_audit WHERE seq > ?", out, sizeof(out));
	assert_string_equal(out, "SELECT a ... FROM cvm_audit");
	sql_first_words("SELECT COUNT(*) FROM t", out, sizeof(out));
	assert_string_equal(out, "SELECT COUNT ... FROM t");
	sql_first_words("SELECT 'x FROM y' FROM t", out, sizeof(out));
	assert_string_equal(out, "SELECT");
	sql_first_words("", out, sizeof(out));
	assert_string_equal(out, "");
	char tiny[6];
	sql_first_words("SELECTALONGWORD", tiny, sizeof(tiny));
	assert_string_equal(tiny, "SELEC");
}

static void count_free(void *handle, void *ctx)
{
	(*(int *)ctx)++;
	free(handle);
}

static void test_stmt_cache(void **state)
{
	struct stmt_cache c = { 0 };
	char sql[32];
	assert_null(stmt_cache_get(&c, "SELECT 1"));
	for (int i = 0; i < 500; i++) { /* forces several rehashes */
		snprintf(sql, sizeof(sql), "SELECT %d", i);
		int *v = malloc(sizeof(int));
		assert_non_null(v);
		*v = i;
		assert_int_equal(stmt_cache_put(&c, sql, v), 0);
	}
	for (int i = 0; i < 500; i++) {
		snprintf(sql, sizeof(sql), "SELECT %d", i);
		int *v = stmt_cache_get(&c, sql);
		assert_non_null(v);
		assert_int_equal(*v, i);
	}
	assert_null(stmt_cache_get(&c, "SELECT 500"));
	int *v = stmt_cache_get(&c, "SELECT 7");
	stmt_cache_remove(&c, "SELECT 7");
	free(v);
	assert_null(stmt_cache_get(&c, "SELECT 7"));
	assert_non_null(stmt_cache_get(&c, "SELECT 8"));
	stmt_cache_remove(&c, "SELECT 7"); /* absent: no-op */
	int freed = 0;
	stmt_cache_clear(&c, count_free, &freed);
	assert_int_equal(freed, 499);
	assert_null(stmt_cache_get(&c, "SELECT 8"));
	/* Reusable after clear. */
	assert_int_equal(stmt_cache_put(&c, "SELECT 1", NULL), 0);
	stmt_cache_clear(&c, NULL, NULL);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_placeholders),
		cmocka_unit_test(test_types),
		cmocka_unit_test(test_first_words),
		cmocka_unit_test(test_stmt_cache),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
