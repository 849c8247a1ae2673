/* SPDX-License-Identifier: Apache-2.0 */
/* PostgreSQL engine (libpq). A pool of connections guarded by a mutex/condvar; connections are
 * opened on demand and reopened when found broken. Write transactions run SERIALIZABLE because
 * several cvmd processes share one database and must stay consistent; read transactions are
 * REPEATABLE READ READ ONLY snapshots. Statements are prepared once per connection (named
 * cvm_<n>, keyed by the portable SQL text). Results come back in text format; BYTEA values are
 * wiped from libpq's buffers before they are freed, since they may hold sealed key material. */
#include "store-int.h"

#include <inttypes.h>
#include <libpq-fe.h>
#include <openssl/crypto.h>
#include <pthread.h>
#include <stdio.h>
#include <string.h>

/* Built-in type OIDs (stable since PostgreSQL 7; the client headers do not carry them). */
#define PG_BOOLOID 16
#define PG_BYTEAOID 17
#define PG_INT8OID 20
#define PG_INT2OID 21
#define PG_INT4OID 23
#define PG_OIDOID 26

/* Key of the transaction-scoped advisory lock that serializes schema changes ("opencvm"). */
#define PG_SCHEMA_LOCK_KEY "28548172002583917"

struct pg_stmt {
	char name[24];
	size_t nparams;
};

struct pg_conn {
	PGconn *c;
	struct stmt_cache cache;
	unsigned next_id;
	int failed; /* errno of a failed statement in the current transaction, 0 if none */
	bool busy;
};

struct pg_store {
	char *conninfo;
	struct pg_conn *conns;
	size_t n;
	pthread_mutex_t lock;
	pthread_cond_t cond;
};

static void free_stmt(void *handle, void *ctx)
{
	free(handle);
}

/* libpq prints notices (e.g. "relation already exists, skipping") to stderr by default. */
static void quiet_notice(void *arg, const char *msg)
{
}

static void pg_disconnect(struct pg_conn *pc)
{
	if (pc->c)
		PQfinish(pc->c);
	pc->c = NULL;
	/* Prepared statements die with the session. */
	stmt_cache_clear(&pc->cache, free_stmt, NULL);
}

static int pg_connect(struct pg_store *s, struct pg_conn *pc, struct cvm_err *err)
{
	pg_disconnect(pc);
	pc->c = PQconnectdb(s->conninfo);
	if (!pc->c)
		return cvm_err_nomem(err);
	if (PQstatus(pc->c) != CONNECTION_OK) {
		char msg[256];
		snprintf(msg, sizeof(msg), "%s", PQerrorMessage(pc->c));
		msg[strcspn(msg, "\n")] = 0;
		pg_disconnect(pc);
		return cvm_err_set(err, EIO, "InternalError", "store: cannot connect to PostgreSQL: %s",
				   msg);
	}
	PQsetNoticeProcessor(pc->c, quiet_notice, NULL);
	return 0;
}

/* Maps a failed result to an errno and a message that names the statement's first words and
 * never carries values (data-exception messages, class 22, can quote them, so only their
 * SQLSTATE is kept). */
static int pg_error(struct pg_conn *pc, const PGresult *res, const char *sql, struct cvm_err *err)
{
	char words[64];
	sql_first_words(sql, words, sizeof(words));
	const char *state = res ? PQresultErrorField(res, PG_DIAG_SQLSTATE) : NULL;
	const char *primary = res ? PQresultErrorField(res, PG_DIAG_MESSAGE_PRIMARY) : NULL;
	int r;
	if (PQstatus(pc->c) != CONNECTION_OK || !state || strncmp(state, "08", 2) == 0) {
		char msg[256];
		snprintf(msg, sizeof(msg), "%s", PQerrorMessage(pc->c));
		msg[strcspn(msg, "\n")] = 0;
		r = cvm_err_set(err, EIO, "InternalError", "store: %s: connection to PostgreSQL lost: %s",
				words, msg);
	} else if (strcmp(state, "23505") == 0) {
		const char *cons = PQresultErrorField(res, PG_DIAG_CONSTRAINT_NAME);
		r = cvm_err_set(err, EEXIST, "Conflict", "store: %s: unique constraint %s violated",
				words, cons ? cons : "?");
	} else if (strcmp(state, "40001") == 0 || strcmp(state, "40P01") == 0 ||
		   strcmp(state, "55P03") == 0) {
		r = cvm_err_set(err, EAGAIN, "Conflict",
				"store: %s: concurrent update (SQLSTATE %s), retry", words, state);
	} else if (strncmp(state, "22", 2) == 0 || !primary) {
		r = cvm_err_set(err, EIO, "InternalError", "store: %s: SQLSTATE %s", words, state);
	} else {
		r = cvm_err_set(err, EIO, "InternalError", "store: %s: %s (SQLSTATE %s)", words,
				primary, state);
	}
	pc->failed = -r;
	return r;
}

/* Wipes BYTEA values inside a tuples result, then frees it. */
static void pg_clear(PGresult *res)
{
	if (!res)
		return;
	if (PQresultStatus(res) == PGRES_TUPLES_OK) {
		int nrows = PQntuples(res), ncols = PQnfields(res);
		for (int j = 0; j < ncols; j++) {
			if (PQftype(res, j) != PG_BYTEAOID)
				continue;
			for (int i = 0; i < nrows; i++)
				OPENSSL_cleanse(PQgetvalue(res, i, j), (size_t)PQgetlength(res, i, j));
		}
	}
	PQclear(res);
}

static int pg_add_cell(struct cvm_rows *rows, const PGresult *res, int i, int j)
{
	if (PQgetisnull(res, i, j))
		return rows_add_null(rows);
	const char *v = PQgetvalue(res, i, j);
	size_t len = (size_t)PQgetlength(res, i, j);
	switch (PQftype(res, j)) {
	case PG_INT8OID:
	case PG_INT4OID:
	case PG_INT2OID:
	case PG_OIDOID:
		return rows_add_int(rows, strtoll(v, NULL, 10));
	case PG_BOOLOID:
		return rows_add_int(rows, v[0] == 't');
	case PG_BYTEAOID: {
		size_t blen = 0;
		unsigned char *b = PQunescapeBytea((const unsigned char *)v, &blen);
		if (!b)
			return -ENOMEM;
		int r = rows_add_blob(rows, b, blen);
		OPENSSL_cleanse(b, blen);
		PQfreemem(b);
		return r;
	}
	default:
		return rows_add_text(rows, v, len);
	}
}

static int pg_prepare(struct pg_conn *pc, const char *sql, struct pg_stmt **out,
		      struct cvm_err *err)
{
	struct pg_stmt *ps = stmt_cache_get(&pc->cache, sql);
	if (ps) {
		*out = ps;
		return 0;
	}
	ps = calloc(1, sizeof(*ps));
	_cleanup_free_ char *pgsql = sql_to_postgres(sql, ps ? &ps->nparams : &(size_t){ 0 });
	if (!ps || !pgsql) {
		free(ps);
		return cvm_err_nomem(err);
	}
	snprintf(ps->name, sizeof(ps->name), "cvm_%u", pc->next_id++);
	PGresult *res = PQprepare(pc->c, ps->name, pgsql, 0, NULL);
	if (PQresultStatus(res) != PGRES_COMMAND_OK) {
		int r = pg_error(pc, res, sql, err);
		PQclear(res);
		free(ps);
		return r;
	}
	PQclear(res);
	if (stmt_cache_put(&pc->cache, sql, ps) < 0) {
		free(ps);
		return cvm_err_nomem(err);
	}
	*out = ps;
	return 0;
}

/* Parameters travel in text format except blobs, which go binary (no escaping, zero bytes
 * intact); the server infers each parameter's type from the statement. */
static int pg_exec(void *conn, const char *sql, const struct cvm_val *params, size_t n,
		   int64_t *changes, struct cvm_rows *rows, struct cvm_err *err)
{
	struct pg_conn *pc = conn;
	struct pg_stmt *ps = NULL;
	int r = pg_prepare(pc, sql, &ps, err);
	if (r < 0)
		return r;
	if (ps->nparams != n) {
		char words[64];
		sql_first_words(sql, words, sizeof(words));
		return cvm_err_badparam(err, "store: %s: expected %zu parameters, got %zu", words,
					ps->nparams, n);
	}
	_cleanup_free_ const char **values = calloc(n ? n : 1, sizeof(*values));
	_cleanup_free_ int *lengths = calloc(n ? n : 1, sizeof(*lengths));
	_cleanup_free_ int *formats = calloc(n ? n : 1, sizeof(*formats));
	_cleanup_free_ char(*nums)[24] = calloc(n ? n : 1, sizeof(*nums));
	if (!values || !lengths || !formats || !nums)
		return cvm_err_nomem(err);
	for (size_t i = 0; i < n; i++) {
		const struct cvm_val *v = &params[i];
		switch (v->type) {
		case CVM_VAL_INT:
			snprintf(nums[i], sizeof(nums[i]), "%" PRId64, v->i);
			values[i] = nums[i];
			break;
		case CVM_VAL_TEXT:
			values[i] = v->s;
			break;
		case CVM_VAL_BLOB:
			if (v->len > INT32_MAX)
				return cvm_err_set(err, E2BIG, "BadParameter",
						   "store: blob parameter %zu is too large", i + 1);
			values[i] = v->len ? v->b : "";
			lengths[i] = (int)v->len;
			formats[i] = 1;
			break;
		default:
			values[i] = NULL;
			break;
		}
	}
	PGresult *res = PQexecPrepared(pc->c, ps->name, (int)n, values, lengths, formats, 0);
	ExecStatusType st = PQresultStatus(res);
	if (st != PGRES_COMMAND_OK && st != PGRES_TUPLES_OK) {
		const char *state = res ? PQresultErrorField(res, PG_DIAG_SQLSTATE) : NULL;
		r = pg_error(pc, res, sql, err);
		/* A table changed shape under a cached plan: forget the statement (the server-side
		 * one stays until the session ends) and let the transaction be retried. */
		if (state && strcmp(state, "0A000") == 0) {
			stmt_cache_remove(&pc->cache, sql);
			free(ps);
			r = cvm_err_set(err, EAGAIN, "Conflict", "store: table definition changed, retry");
			pc->failed = EAGAIN;
		}
		pg_clear(res);
		return r;
	}
	if (changes) {
		const char *t = PQcmdTuples(res);
		*changes = *t ? strtoll(t, NULL, 10) : 0;
	}
	if (rows && st == PGRES_TUPLES_OK) {
		int nrows = PQntuples(res), ncols = PQnfields(res);
		rows_set_ncols(rows, (size_t)ncols);
		for (int i = 0; i < nrows && r >= 0; i++)
			for (int j = 0; j < ncols && r >= 0; j++)
				r = pg_add_cell(rows, res, i, j);
		if (r < 0)
			r = cvm_err_nomem(err);
	}
	pg_clear(res);
	return r;
}

/* ---- pool ------------------------------------------------------------------------------- */

static struct pg_conn *pg_acquire(struct pg_store *s)
{
	pthread_mutex_lock(&s->lock);
	for (;;) {
		struct pg_conn *pick = NULL;
		for (size_t i = 0; i < s->n; i++) {
			if (s->conns[i].busy)
				continue;
			/* Prefer an open connection; open a new one only when none is idle. */
			if (!pick || (!pick->c && s->conns[i].c))
				pick = &s->conns[i];
		}
		if (pick) {
			pick->busy = true;
			pthread_mutex_unlock(&s->lock);
			return pick;
		}
		pthread_cond_wait(&s->cond, &s->lock);
	}
}

static void pg_release(struct pg_store *s, struct pg_conn *pc)
{
	if (pc->c && PQstatus(pc->c) == CONNECTION_OK &&
	    PQtransactionStatus(pc->c) != PQTRANS_IDLE)
		PQclear(PQexec(pc->c, "ROLLBACK"));
	if (pc->c && (PQstatus(pc->c) != CONNECTION_OK ||
		      PQtransactionStatus(pc->c) != PQTRANS_IDLE))
		pg_disconnect(pc); /* reopened on next use */
	pthread_mutex_lock(&s->lock);
	pc->busy = false;
	pthread_cond_signal(&s->cond);
	pthread_mutex_unlock(&s->lock);
}

static int pg_run(struct pg_conn *pc, const char *sql, struct cvm_err *err)
{
	PGresult *res = PQexec(pc->c, sql);
	ExecStatusType st = PQresultStatus(res);
	int r = (st == PGRES_COMMAND_OK || st == PGRES_TUPLES_OK) ? 0 : pg_error(pc, res, sql, err);
	PQclear(res);
	return r;
}

static int pg_begin(void *impl, enum store_tx_kind kind, void **conn, struct cvm_err *err)
{
	struct pg_store *s = impl;
	struct pg_conn *pc = pg_acquire(s);
	const char *sql = kind == STORE_TX_READ ? "BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY"
			  : kind == STORE_TX_SCHEMA ? "BEGIN"
						    : "BEGIN ISOLATION LEVEL SERIALIZABLE";
	int r = 0;
	/* A connection that broke while idle (server restart, failover) is reopened once. */
	for (int attempt = 0; attempt < 2; attempt++) {
		if (!pc->c || PQstatus(pc->c) != CONNECTION_OK) {
			r = pg_connect(s, pc, err);
			if (r < 0)
				break;
		}
		r = pg_run(pc, sql, err);
		if (r == 0 || PQstatus(pc->c) == CONNECTION_OK)
			break;
	}
	if (r == 0 && kind == STORE_TX_SCHEMA)
		r = pg_run(pc, "SELECT pg_advisory_xact_lock(" PG_SCHEMA_LOCK_KEY ")", err);
	if (r == 0 && kind == STORE_TX_WRITE_LAZY)
		r = pg_run(pc, "SET LOCAL synchronous_commit = off", err);
	if (r < 0) {
		pg_release(s, pc);
		return r;
	}
	pc->failed = 0;
	*conn = pc;
	return 0;
}

static int pg_commit(void *impl, void *conn, struct cvm_err *err)
{
	struct pg_conn *pc = conn;
	PGresult *res = PQexec(pc->c, "COMMIT");
	int r = 0;
	if (PQresultStatus(res) != PGRES_COMMAND_OK)
		r = pg_error(pc, res, "COMMIT", err);
	else if (strcmp(PQcmdStatus(res), "COMMIT") != 0)
		/* The server answers ROLLBACK when an earlier statement failed. */
		r = cvm_err_set(err, pc->failed ? pc->failed : EIO,
				pc->failed == EAGAIN || pc->failed == EEXIST ? "Conflict"
									      : "InternalError",
				"store: COMMIT: transaction was aborted by an earlier error");
	PQclear(res);
	pg_release(impl, pc);
	return r;
}

static void pg_rollback(void *impl, void *conn)
{
	pg_release(impl, conn);
}

static void pg_close(void *impl)
{
	struct pg_store *s = impl;
	if (!s)
		return;
	for (size_t i = 0; i < s->n; i++)
		pg_disconnect(&s->conns[i]);
	free(s->conns);
	if (s->conninfo) {
		OPENSSL_cleanse(s->conninfo, strlen(s->conninfo)); /* may hold a password */
		free(s->conninfo);
	}
	pthread_mutex_destroy(&s->lock);
	pthread_cond_destroy(&s->cond);
	free(s);
}

int store_postgres_open(const char *conninfo, unsigned pool, void **impl, struct cvm_err *err)
{
	struct pg_store *s = calloc(1, sizeof(*s));
	if (!s)
		return cvm_err_nomem(err);
	pthread_mutex_init(&s->lock, NULL);
	pthread_cond_init(&s->cond, NULL);
	/* libpq waits forever for an unreachable server unless told otherwise; a cvmd stuck in
	 * connect holds its pool slot and its caller, so bound it unless the URL chose a value. */
	if (strstr(conninfo, "connect_timeout="))
		s->conninfo = strdup(conninfo);
	else
		s->conninfo = cvm_asprintf("%s%sconnect_timeout=10", conninfo,
					   strchr(conninfo, '?') ? "&" : "?");
	s->conns = calloc(pool, sizeof(*s->conns));
	s->n = pool;
	if (!s->conninfo || !s->conns) {
		pg_close(s);
		return cvm_err_nomem(err);
	}
	/* Open one connection now so a wrong URL or unreachable server fails at startup. */
	int r = pg_connect(s, &s->conns[0], err);
	if (r < 0) {
		pg_close(s);
		return r;
	}
	*impl = s;
	return 0;
}

const struct store_backend store_postgres_backend = {
	.name = "postgres",
	.close = pg_close,
	.begin = pg_begin,
	.commit = pg_commit,
	.rollback = pg_rollback,
	.exec = pg_exec,
};
