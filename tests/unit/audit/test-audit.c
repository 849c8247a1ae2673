/* SPDX-License-Identifier: Apache-2.0 */
/* audit: every test runs against SQLite and (CVM_TEST_POSTGRES) PostgreSQL. */
#include "testdb.h"

#include <opencvm/audit.h>

#include <inttypes.h>
#include <jansson.h>
#include <pthread.h>
#include <stdio.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

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

static struct cvm_audit_event event(int i)
{
	static const char *const ops[] = { "keys/create", "keys/release", "keys/wrap" };
	return (struct cvm_audit_event){
		.time_ms = 1000 * (int64_t)i,
		.principal = i % 3 ? "app-1" : NULL,
		.operation = ops[i % 3],
		.key_name = "disk-key",
		.key_version = i % 2 ? "0123456789abcdef0123456789abcdef" : NULL,
		.status = i % 4 ? 200 : 403,
		.result = i % 4 ? "ok" : "Forbidden",
		.request_id = "7f1e2d3c-0000-4000-8000-000000000000",
		.source = "10.0.0.7",
		.detail = i % 2 ? "{\"alg\":\"RSA-OAEP-256\"}" : NULL,
	};
}

static void sql(struct cvm_store *s, const char *q)
{
	struct cvm_tx *tx = NULL;
	ASSERT_OK(cvm_tx_begin(s, CVM_TX_WRITE, &tx, err));
	ASSERT_OK(cvm_tx_exec(tx, q, NULL, 0, NULL, err));
	ASSERT_OK(cvm_tx_commit(tx, err));
}

static void expect_intact(struct cvm_store *s, int64_t n)
{
	int64_t records = -1, bad = -1;
	ASSERT_OK(cvm_audit_verify(s, &records, &bad, err));
	assert_int_equal(records, n);
	assert_int_equal(bad, 0);
}

/* A store holding a log of n records (seq i has time 1000*i). */
static struct cvm_store *make_log(struct testdb *db, const char *name, int n)
{
	struct cvm_store *s = testdb_open(db, name);
	struct cvm_audit *a = NULL;
	ASSERT_OK(cvm_audit_open(s, &a, err));
	for (int i = 1; i <= n; i++) {
		struct cvm_audit_event ev = event(i);
		int64_t seq = 0;
		ASSERT_OK(cvm_audit_append(a, &ev, &seq, err));
		assert_int_equal(seq, i);
	}
	cvm_audit_close(a);
	return s;
}

static void test_append_and_verify(void **state)
{
	struct cvm_store *s = make_log(*state, "basic", 10);
	expect_intact(s, 10);
	/* Reopening continues the chain. */
	struct cvm_audit *a = NULL;
	ASSERT_OK(cvm_audit_open(s, &a, err));
	struct cvm_audit_event ev = { .operation = "keys/get", .result = "ok", .status = 200 };
	int64_t seq = 0;
	ASSERT_OK(cvm_audit_append(a, &ev, &seq, err));
	assert_int_equal(seq, 11);
	cvm_audit_close(a);
	expect_intact(s, 11);
	cvm_store_close(s);

	/* An empty log verifies with zero records. */
	s = make_log(*state, "empty", 0);
	expect_intact(s, 0);
	cvm_store_close(s);
}

static void test_bad_events_refused(void **state)
{
	struct cvm_store *s = testdb_open(*state, "badevents");
	struct cvm_audit *a = NULL;
	ASSERT_OK(cvm_audit_open(s, &a, err));
	struct cvm_err err = { 0 };
	int64_t seq = 0;
	char *long_detail = malloc(CVM_AUDIT_DETAIL_MAX + 2);
	char *long_field = malloc(CVM_AUDIT_FIELD_MAX + 2);
	assert_non_null(long_detail);
	assert_non_null(long_field);
	memset(long_detail, 'a', CVM_AUDIT_DETAIL_MAX + 1);
	long_detail[CVM_AUDIT_DETAIL_MAX + 1] = 0;
	memset(long_field, 'a', CVM_AUDIT_FIELD_MAX + 1);
	long_field[CVM_AUDIT_FIELD_MAX + 1] = 0;
	struct cvm_audit_event ok = event(1);
	struct cvm_audit_event bad[8];
	for (size_t i = 0; i < CVM_ARRAY_SIZE(bad); i++)
		bad[i] = ok;
	bad[0].operation = NULL;
	bad[1].result = NULL;
	bad[2].detail = long_detail;
	bad[3].principal = long_field;
	bad[4].time_ms = -1;
	bad[5].source = long_field;
	bad[6].detail = "not json";
	bad[7].detail = "{\"a\":1,\"a\":2}";
	assert_int_equal(cvm_audit_append(a, NULL, &seq, &err), -EINVAL);
	static const char *const field[] = { "operation", "result", "detail", "principal",
					     "time_ms", "source", "detail", "detail" };
	for (size_t i = 0; i < CVM_ARRAY_SIZE(bad); i++) {
		assert_int_equal(cvm_audit_append(a, &bad[i], &seq, &err), -EINVAL);
		assert_string_equal(err.code, "BadParameter");
		assert_non_null(strstr(err.msg, field[i]));
	}
	assert_non_null(strstr(err.msg, "detail must be JSON"));
	/* At the limits exactly, events are accepted. */
	long_field[CVM_AUDIT_FIELD_MAX] = 0;
	memset(long_detail, ' ', CVM_AUDIT_DETAIL_MAX);
	memcpy(long_detail + CVM_AUDIT_DETAIL_MAX / 2, "[1]", 3);
	long_detail[CVM_AUDIT_DETAIL_MAX] = 0;
	ok.principal = long_field;
	ok.detail = long_detail;
	ASSERT_OK(cvm_audit_append(a, &ok, &seq, err));
	assert_int_equal(seq, 1);
	free(long_field);
	free(long_detail);
	cvm_audit_close(a);
	expect_intact(s, 1);
	cvm_store_close(s);
}

struct state_change {
	int64_t seq;
	int fail_after_audit;
};

static int change_with_audit(struct cvm_tx *tx, void *arg, struct cvm_err *err)
{
	struct state_change *c = arg;
	struct cvm_audit_event ev = event(2);
	int r = cvm_audit_append_tx(tx, &ev, &c->seq, err); /* first, as audit.h asks */
	if (r < 0)
		return r;
	r = cvm_tx_exec(tx, "INSERT INTO things (name) VALUES ('k1')", NULL, 0, NULL, err);
	if (r < 0)
		return r;
	return c->fail_after_audit ? cvm_err_badparam(err, "simulated failure") : 0;
}

static void test_append_in_caller_tx(void **state)
{
	struct cvm_store *s = testdb_open(*state, "appendtx");
	struct cvm_audit *a = NULL;
	ASSERT_OK(cvm_audit_open(s, &a, err));
	const char *ddl[] = { "CREATE TABLE IF NOT EXISTS things (name TEXT PRIMARY KEY)" };
	ASSERT_OK(cvm_store_ensure_schema(s, "things", 1, ddl, 1, err));
	struct cvm_err err = { 0 };
	/* The state change fails after its audit record: both vanish. */
	struct state_change c = { .fail_after_audit = 1 };
	assert_int_equal(cvm_store_transact(s, CVM_TX_WRITE, change_with_audit, &c, &err), -EINVAL);
	expect_intact(s, 0);
	/* Both commit together. */
	c = (struct state_change){ 0 };
	ASSERT_OK(cvm_store_transact(s, CVM_TX_WRITE, change_with_audit, &c, err));
	assert_int_equal(c.seq, 1);
	/* The group-commit writer continues the same chain. */
	struct cvm_audit_event ev = event(3);
	int64_t seq = 0;
	ASSERT_OK(cvm_audit_append(a, &ev, &seq, err));
	assert_int_equal(seq, 2);
	expect_intact(s, 2);
	/* A read transaction cannot hold an audit record. */
	struct cvm_tx *tx = NULL;
	ASSERT_OK(cvm_tx_begin(s, CVM_TX_READ, &tx, err));
	assert_int_equal(cvm_audit_append_tx(tx, &ev, &seq, &err), -EINVAL);
	cvm_tx_rollback(tx);
	assert_int_equal(cvm_audit_append_tx(NULL, &ev, &seq, &err), -EINVAL);
	cvm_audit_close(a);
	cvm_store_close(s);
}

struct appender {
	struct cvm_audit *a;
	int n;
	int64_t *seqs;
	int errors;
	char msg[512];
};

static void *append_thread(void *arg)
{
	struct appender *p = arg;
	for (int i = 0; i < p->n; i++) {
		struct cvm_err err = { 0 };
		struct cvm_audit_event ev = event(i);
		ev.time_ms = 0; /* now */
		if (cvm_audit_append(p->a, &ev, &p->seqs[i], &err) < 0) {
			p->errors++;
			snprintf(p->msg, sizeof(p->msg), "%s", err.msg);
		}
	}
	return NULL;
}

static int cmp_i64(const void *a, const void *b)
{
	int64_t x = *(const int64_t *)a, y = *(const int64_t *)b;
	return (x > y) - (x < y);
}

/* Runs nthreads x per appenders over the given audit handles (round robin); returns the
 * rate and checks that all seqs are unique and exactly 1..total. */
static double run_appenders(struct cvm_audit **audits, size_t naudits, int nthreads, int per,
			    int64_t first_seq)
{
	pthread_t th[16];
	struct appender p[16];
	int64_t *all = calloc((size_t)(nthreads * per), sizeof(int64_t));
	assert_non_null(all);
	uint64_t t0 = cvm_monotonic_ns();
	for (int i = 0; i < nthreads; i++) {
		p[i] = (struct appender){ .a = audits[(size_t)i % naudits], .n = per,
					  .seqs = all + i * per };
		assert_int_equal(pthread_create(&th[i], NULL, append_thread, &p[i]), 0);
	}
	for (int i = 0; i < nthreads; i++)
		pthread_join(th[i], NULL);
	for (int i = 0; i < nthreads; i++)
		if (p[i].errors)
			fail_msg("appender %d: %d errors, last: %s", i, p[i].errors, p[i].msg);
	double rate = nthreads * per / ((double)(cvm_monotonic_ns() - t0) / 1e9);
	qsort(all, (size_t)(nthreads * per), sizeof(int64_t), cmp_i64);
	for (int i = 0; i < nthreads * per; i++)
		assert_int_equal(all[i], first_seq + i);
	free(all);
	return rate;
}

static void test_group_commit_concurrency(void **state)
{
	struct cvm_store *s = testdb_open(*state, "group");
	struct cvm_audit *a = NULL;
	ASSERT_OK(cvm_audit_open(s, &a, err));
	struct cvm_audit_stats st1, st2;
	double single = run_appenders(&a, 1, 1, 300, 1);
	cvm_audit_stats(a, &st1);
	/* One appender never has company: every batch holds exactly its record. */
	assert_int_equal(st1.records, 300);
	assert_int_equal(st1.batches, 300);
	double eight = run_appenders(&a, 1, 8, 500, 301);
	cvm_audit_stats(a, &st2);
	assert_int_equal(st2.records, 4300);
	assert_int_equal(st2.failed_batches, 0);
	print_message("[%s] audit appends/s: 1 thread %.0f, 8 threads %.0f (x%.1f); mean batch "
		      "with 8 threads %.1f records\n",
		      cvm_store_backend(s), single, eight, eight / single,
		      4000.0 / (double)(st2.batches - st1.batches));
	cvm_audit_close(a);
	expect_intact(s, 4300);
	cvm_store_close(s);
}

/* Appends pile up while a transaction holds the chain head, so the next batch is larger than
 * one multi-row INSERT (32 rows) and must be split correctly. */
static void test_large_batches(void **state)
{
	struct cvm_store *s = testdb_open(*state, "bigbatch");
	struct cvm_audit *a = NULL;
	ASSERT_OK(cvm_audit_open(s, &a, err));
	struct cvm_tx *blocker = NULL;
	ASSERT_OK(cvm_tx_begin(s, CVM_TX_WRITE, &blocker, err));
	ASSERT_OK(cvm_tx_lock(blocker, "cvm_audit_head", err));
	enum { NT = 70 };
	pthread_t th[NT];
	struct appender p[NT];
	int64_t seqs[NT];
	for (int i = 0; i < NT; i++) {
		p[i] = (struct appender){ .a = a, .n = 1, .seqs = &seqs[i] };
		assert_int_equal(pthread_create(&th[i], NULL, append_thread, &p[i]), 0);
	}
	struct timespec ts = { .tv_nsec = 300 * 1000 * 1000 };
	nanosleep(&ts, NULL);
	ASSERT_OK(cvm_tx_commit(blocker, err));
	for (int i = 0; i < NT; i++)
		pthread_join(th[i], NULL);
	for (int i = 0; i < NT; i++)
		if (p[i].errors)
			fail_msg("appender %d: %s", i, p[i].msg);
	qsort(seqs, NT, sizeof(int64_t), cmp_i64);
	for (int i = 0; i < NT; i++)
		assert_int_equal(seqs[i], i + 1);
	cvm_audit_close(a);
	expect_intact(s, NT);
	int64_t count = 0;
	FILE *devnull = fopen("/dev/null", "w");
	assert_non_null(devnull);
	ASSERT_OK(cvm_audit_export(s, 0, devnull, &count, err));
	fclose(devnull);
	assert_int_equal(count, NT);
	cvm_store_close(s);
}

/* Two store handles with their own writers stand in for two cvmd processes on one database:
 * the head row must serialize them into one chain. */
static void test_two_processes_one_chain(void **state)
{
	char url[1024];
	testdb_url(*state, "twoproc", NULL, url, sizeof(url));
	struct cvm_store *s1 = NULL, *s2 = NULL;
	struct cvm_audit *a[2] = { NULL, NULL };
	ASSERT_OK(cvm_store_open(url, &s1, err));
	ASSERT_OK(cvm_store_open(url, &s2, err));
	ASSERT_OK(cvm_audit_open(s1, &a[0], err));
	ASSERT_OK(cvm_audit_open(s2, &a[1], err));
	run_appenders(a, 2, 6, 100, 1);
	cvm_audit_close(a[0]);
	cvm_audit_close(a[1]);
	expect_intact(s1, 600);
	cvm_store_close(s2);
	cvm_store_close(s1);
}

/* The same with real processes (fork): SQLite file locks / PostgreSQL table lock. */
static void test_forked_processes_one_chain(void **state)
{
	char url[1024];
	testdb_url(*state, "forked", NULL, url, sizeof(url));
	struct cvm_store *s = NULL;
	struct cvm_audit *a = NULL;
	ASSERT_OK(cvm_store_open(url, &s, err));
	ASSERT_OK(cvm_audit_open(s, &a, err)); /* schema first, like a deployed database */
	cvm_audit_close(a);
	pid_t kids[3];
	for (int k = 0; k < 3; k++) {
		kids[k] = fork();
		assert_true(kids[k] >= 0);
		if (kids[k] == 0) {
			struct cvm_store *cs = NULL;
			struct cvm_audit *ca = NULL;
			struct cvm_err err = { 0 };
			if (cvm_store_open(url, &cs, &err) < 0 || cvm_audit_open(cs, &ca, &err) < 0)
				_exit(2);
			/* Several threads per process, so batches from different processes
			 * interleave. */
			pthread_t th[3];
			int64_t seqs[3][40];
			struct appender p[3];
			for (int i = 0; i < 3; i++) {
				p[i] = (struct appender){ .a = ca, .n = 40, .seqs = seqs[i] };
				if (pthread_create(&th[i], NULL, append_thread, &p[i]) != 0)
					_exit(3);
			}
			int errors = 0;
			for (int i = 0; i < 3; i++) {
				pthread_join(th[i], NULL);
				errors += p[i].errors;
			}
			if (errors)
				fprintf(stderr, "child: %d errors, last: %s\n", errors, p[0].msg);
			cvm_audit_close(ca);
			cvm_store_close(cs);
			_exit(errors ? 1 : 0);
		}
	}
	for (int k = 0; k < 3; k++) {
		int status = 0;
		assert_int_equal(waitpid(kids[k], &status, 0), kids[k]);
		assert_true(WIFEXITED(status));
		assert_int_equal(WEXITSTATUS(status), 0);
	}
	expect_intact(s, 360);
	cvm_store_close(s);
}

#define COPY_COLS                                                                             \
	"time_ms, principal, operation, key_name, key_version, status, result, request_id, "   \
	"source, detail"

struct tamper {
	const char *what;
	const char *sql[4];
	int64_t bad;
	int64_t records;
};

static const struct tamper tampers[] = {
	{ "edited field", { "UPDATE cvm_audit SET principal = 'mallory' WHERE seq = 5" }, 5, 4 },
	{ "edited NULL field", { "UPDATE cvm_audit SET detail = '{}' WHERE seq = 4" }, 4, 3 },
	{ "edited time", { "UPDATE cvm_audit SET time_ms = time_ms + 1 WHERE seq = 7" }, 7, 6 },
	{ "edited status", { "UPDATE cvm_audit SET status = 200 WHERE seq = 8" }, 8, 7 },
	{ "replaced hash", { "UPDATE cvm_audit SET hash = prev_hash WHERE seq = 5" }, 5, 4 },
	{ "deleted record", { "DELETE FROM cvm_audit WHERE seq = 5" }, 5, 4 },
	{ "deleted first record", { "DELETE FROM cvm_audit WHERE seq = 1" }, 1, 0 },
	{ "inserted record",
	  { "UPDATE cvm_audit SET seq = seq + 1000 WHERE seq >= 5",
	    "UPDATE cvm_audit SET seq = seq - 999 WHERE seq >= 1000",
	    "INSERT INTO cvm_audit (seq, " COPY_COLS ", prev_hash, hash) SELECT 5, " COPY_COLS
	    ", hash, hash FROM cvm_audit WHERE seq = 4",
	    "UPDATE cvm_audit_head SET seq = seq + 1" },
	  5, 4 },
	{ "record appended behind the head",
	  { "INSERT INTO cvm_audit (seq, " COPY_COLS ", prev_hash, hash) SELECT 11, " COPY_COLS
	    ", hash, hash FROM cvm_audit WHERE seq = 10" },
	  11, 10 },
	{ "swapped records",
	  { "UPDATE cvm_audit SET seq = 0 - 5 WHERE seq = 5",
	    "UPDATE cvm_audit SET seq = 5 WHERE seq = 6",
	    "UPDATE cvm_audit SET seq = 6 WHERE seq = 0 - 5" },
	  5, 4 },
	{ "truncated tail", { "DELETE FROM cvm_audit WHERE seq > 7" }, 8, 7 },
	{ "truncated tail, head seq rewound",
	  { "DELETE FROM cvm_audit WHERE seq > 7", "UPDATE cvm_audit_head SET seq = 7" },
	  7, 7 },
	{ "edited head hash",
	  { "UPDATE cvm_audit_head SET hash = (SELECT prev_hash FROM cvm_audit WHERE seq = 10)" },
	  10, 10 },
	{ "log emptied", { "DELETE FROM cvm_audit" }, 1, 0 },
};

static void test_verify_detects_tampering(void **state)
{
	for (size_t i = 0; i < CVM_ARRAY_SIZE(tampers); i++) {
		const struct tamper *t = &tampers[i];
		char name[32];
		snprintf(name, sizeof(name), "tamper%zu", i);
		struct cvm_store *s = make_log(*state, name, 10);
		expect_intact(s, 10);
		for (size_t j = 0; j < CVM_ARRAY_SIZE(t->sql) && t->sql[j]; j++)
			sql(s, t->sql[j]);
		struct cvm_err err = { 0 };
		int64_t records = -1, bad = -1;
		int r = cvm_audit_verify(s, &records, &bad, &err);
		if (r != -EBADMSG || bad != t->bad || records != t->records)
			fail_msg("%s: r=%d bad=%" PRId64 " (want %" PRId64 ") records=%" PRId64
				 " (want %" PRId64 ")",
				 t->what, r, bad, t->bad, records, t->records);
		assert_string_equal(err.code, "AuditChainBroken");
		cvm_store_close(s);
	}
}

static json_t *export_lines(struct cvm_store *s, int64_t since, int64_t *count)
{
	char *text = NULL;
	size_t len = 0;
	FILE *f = open_memstream(&text, &len);
	assert_non_null(f);
	ASSERT_OK(cvm_audit_export(s, since, f, count, err));
	fclose(f);
	json_t *arr = json_array();
	char *save = NULL;
	for (char *line = strtok_r(text, "\n", &save); line; line = strtok_r(NULL, "\n", &save)) {
		json_error_t je;
		json_t *o = json_loads(line, 0, &je);
		if (!o)
			fail_msg("export line is not JSON: %s", je.text);
		json_array_append_new(arr, o);
	}
	free(text);
	return arr;
}

static void test_export(void **state)
{
	struct cvm_store *s = make_log(*state, "export", 10);
	int64_t count = -1;
	json_t *all = export_lines(s, 0, &count);
	assert_int_equal(count, 10);
	assert_int_equal(json_array_size(all), 10);
	const char *prev = "0000000000000000000000000000000000000000000000000000000000000000";
	for (size_t i = 0; i < 10; i++) {
		json_t *o = json_array_get(all, i);
		struct cvm_audit_event ev = event((int)i + 1);
		assert_int_equal(json_integer_value(json_object_get(o, "seq")), (json_int_t)i + 1);
		assert_int_equal(json_integer_value(json_object_get(o, "time_ms")), ev.time_ms);
		assert_string_equal(json_string_value(json_object_get(o, "operation")), ev.operation);
		assert_int_equal(json_integer_value(json_object_get(o, "status")), ev.status);
		if (ev.principal)
			assert_string_equal(json_string_value(json_object_get(o, "principal")),
					    ev.principal);
		else
			assert_true(json_is_null(json_object_get(o, "principal")));
		if (ev.detail)
			assert_string_equal(json_string_value(json_object_get(o, "detail")), ev.detail);
		else
			assert_true(json_is_null(json_object_get(o, "detail")));
		assert_string_equal(json_string_value(json_object_get(o, "prev_hash")), prev);
		prev = json_string_value(json_object_get(o, "hash"));
		assert_int_equal(strlen(prev), 64);
	}
	assert_string_equal(json_string_value(json_object_get(json_array_get(all, 0), "time")),
			    "1970-01-01T00:00:01Z");
	json_decref(all);

	json_t *some = export_lines(s, 5000, &count);
	assert_int_equal(count, 6);
	assert_int_equal(json_integer_value(json_object_get(json_array_get(some, 0), "seq")), 5);
	json_decref(some);
	json_t *none = export_lines(s, 11000, &count);
	assert_int_equal(count, 0);
	json_decref(none);

	/* A full disk is an error, not a short export. */
	FILE *full = fopen("/dev/full", "w");
	assert_non_null(full);
	struct cvm_err err = { 0 };
	assert_int_equal(cvm_audit_export(s, 0, full, &count, &err), -EIO);
	fclose(full);
	cvm_store_close(s);
}

/* Newest first, only the named key and operation, at most max. */
static void test_recent(void **state)
{
	struct cvm_store *s = make_log(*state, "recent", 10);
	struct cvm_err err = { 0 };
	json_t *rec = NULL;
	/* keys/release is operation i % 3 == 1: records 1, 4, 7, 10 */
	assert_int_equal(cvm_audit_recent(s, "disk-key", "keys/release", 3, &rec, &err), 0);
	assert_int_equal(json_array_size(rec), 3);
	static const int want[] = { 10, 7, 4 };
	for (size_t i = 0; i < 3; i++) {
		json_t *o = json_array_get(rec, i);
		assert_int_equal(json_integer_value(json_object_get(o, "seq")), want[i]);
		assert_string_equal(json_string_value(json_object_get(o, "operation")),
				    "keys/release");
	}
	json_decref(rec);
	assert_int_equal(cvm_audit_recent(s, "other-key", "keys/release", 3, &rec, &err), 0);
	assert_int_equal(json_array_size(rec), 0);
	json_decref(rec);
	assert_int_equal(cvm_audit_recent(s, "disk-key", "keys/release", 0, &rec, &err), -EINVAL);
	assert_null(rec);
	cvm_store_close(s);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_append_and_verify),
		cmocka_unit_test(test_bad_events_refused),
		cmocka_unit_test(test_append_in_caller_tx),
		cmocka_unit_test(test_group_commit_concurrency),
		cmocka_unit_test(test_large_batches),
		cmocka_unit_test(test_two_processes_one_chain),
		cmocka_unit_test(test_forked_processes_one_chain),
		cmocka_unit_test(test_verify_detects_tampering),
		cmocka_unit_test(test_export),
		cmocka_unit_test(test_recent),
	};
	return testdb_run("audit", tests, CVM_ARRAY_SIZE(tests));
}
