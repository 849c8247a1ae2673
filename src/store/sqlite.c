/* SPDX-License-Identifier: Apache-2.0 */
/* SQLite engine: WAL, synchronous=FULL (the WAL is fsync'd at every commit), foreign keys,
 * busy timeout. One writer connection behind a mutex (SQLite admits one writer at a time
 * anyway; waiting on a mutex is cheaper than spinning on SQLITE_BUSY) plus a pool of
 * query_only reader connections that read concurrently from WAL snapshots. Other processes
 * on the same file are kept out by BEGIN IMMEDIATE and the busy timeout. */
#include "store-int.h"

#include <ctype.h>
#include <fcntl.h>
#include <pthread.h>
#include <sqlite3.h>
#include <string.h>
#include <strings.h>
#include <unistd.h>

#define SQ_BUSY_TIMEOUT_MS 5000

struct sq_store;

struct sq_conn {
	sqlite3 *db;
	struct stmt_cache cache;
	bool writer;
	bool lazy; /* synchronous=NORMAL is set for a CVM_TX_WRITE_LAZY transaction */
};

struct sq_store {
	struct sq_conn writer;
	pthread_mutex_t wlock;
	struct sq_conn *readers;
	size_t nreaders;
	struct sq_conn **idle; /* stack of idle readers */
	size_t nidle;
	pthread_mutex_t rlock;
	pthread_cond_t rcond;
};

static int sq_error(sqlite3 *db, const char *sql, struct cvm_err *err)
{
	char words[64];
	int ext = sqlite3_extended_errcode(db);
	sql_first_words(sql, words, sizeof(words));
	if (ext == SQLITE_CONSTRAINT_UNIQUE || ext == SQLITE_CONSTRAINT_PRIMARYKEY)
		return cvm_err_set(err, EEXIST, "Conflict", "store: %s: %s", words,
				   sqlite3_errmsg(db));
	if ((ext & 0xff) == SQLITE_BUSY || (ext & 0xff) == SQLITE_LOCKED)
		return cvm_err_set(err, EAGAIN, "Conflict", "store: %s: database is busy", words);
	return cvm_err_set(err, EIO, "InternalError", "store: %s: %s", words, sqlite3_errmsg(db));
}

static void finalize_stmt(void *handle, void *ctx)
{
	sqlite3_finalize(handle);
}

static int sq_prepare(struct sq_conn *c, const char *sql, sqlite3_stmt **out,
		      struct cvm_err *err)
{
	sqlite3_stmt *st = stmt_cache_get(&c->cache, sql);
	if (st) {
		*out = st;
		return 0;
	}
	const char *tail = NULL;
	if (sqlite3_prepare_v3(c->db, sql, -1, SQLITE_PREPARE_PERSISTENT, &st, &tail) != SQLITE_OK)
		return sq_error(c->db, sql, err);
	if (!st)
		return cvm_err_badparam(err, "store: empty SQL statement");
	while (tail && isspace((unsigned char)*tail))
		tail++;
	if (tail && *tail) {
		char words[64];
		sqlite3_finalize(st);
		sql_first_words(sql, words, sizeof(words));
		return cvm_err_badparam(err, "store: %s: one statement per call expected", words);
	}
	if (stmt_cache_put(&c->cache, sql, st) < 0) {
		sqlite3_finalize(st);
		return cvm_err_nomem(err);
	}
	*out = st;
	return 0;
}

static int sq_bind(sqlite3_stmt *st, const struct cvm_val *params, size_t n)
{
	for (size_t i = 0; i < n; i++) {
		const struct cvm_val *v = &params[i];
		int idx = (int)i + 1, rc;
		switch (v->type) {
		case CVM_VAL_INT:
			rc = sqlite3_bind_int64(st, idx, v->i);
			break;
		case CVM_VAL_TEXT:
			rc = sqlite3_bind_text(st, idx, v->s, -1, SQLITE_STATIC);
			break;
		case CVM_VAL_BLOB:
			/* A zero-length blob bound by pointer would read back as NULL. */
			rc = v->len ? sqlite3_bind_blob64(st, idx, v->b, v->len, SQLITE_STATIC)
				    : sqlite3_bind_zeroblob(st, idx, 0);
			break;
		default:
			rc = sqlite3_bind_null(st, idx);
			break;
		}
		if (rc != SQLITE_OK)
			return rc;
	}
	return SQLITE_OK;
}

static int sq_add_row(sqlite3_stmt *st, struct cvm_rows *rows)
{
	int ncols = sqlite3_column_count(st), r = 0;
	for (int i = 0; i < ncols && r >= 0; i++) {
		switch (sqlite3_column_type(st, i)) {
		case SQLITE_INTEGER:
			r = rows_add_int(rows, sqlite3_column_int64(st, i));
			break;
		case SQLITE_BLOB: {
			const void *b = sqlite3_column_blob(st, i);
			r = rows_add_blob(rows, b, (size_t)sqlite3_column_bytes(st, i));
			break;
		}
		case SQLITE_NULL:
			r = rows_add_null(rows);
			break;
		default: { /* TEXT, FLOAT (as its text form) */
			const unsigned char *t = sqlite3_column_text(st, i);
			r = t ? rows_add_text(rows, (const char *)t,
					      (size_t)sqlite3_column_bytes(st, i))
			      : -ENOMEM;
			break;
		}
		}
	}
	return r;
}

static int sq_exec(void *conn, const char *sql, const struct cvm_val *params, size_t n,
		   int64_t *changes, struct cvm_rows *rows, struct cvm_err *err)
{
	struct sq_conn *c = conn;
	sqlite3_stmt *st = NULL;
	int r = sq_prepare(c, sql, &st, err);
	if (r < 0)
		return r;
	if ((size_t)sqlite3_bind_parameter_count(st) != n) {
		char words[64];
		sql_first_words(sql, words, sizeof(words));
		return cvm_err_badparam(err, "store: %s: expected %d parameters, got %zu", words,
					sqlite3_bind_parameter_count(st), n);
	}
	if (sq_bind(st, params, n) != SQLITE_OK) {
		r = sq_error(c->db, sql, err);
		goto out;
	}
	if (rows)
		rows_set_ncols(rows, (size_t)sqlite3_column_count(st));
	for (;;) {
		int rc = sqlite3_step(st);
		if (rc == SQLITE_DONE)
			break;
		if (rc != SQLITE_ROW) {
			r = sq_error(c->db, sql, err);
			goto out;
		}
		if (rows && sq_add_row(st, rows) < 0) {
			r = cvm_err_nomem(err);
			goto out;
		}
	}
	if (changes)
		*changes = sqlite3_changes64(c->db);
out:
	sqlite3_reset(st);
	sqlite3_clear_bindings(st);
	return r;
}

/* ---- connections ------------------------------------------------------------------------ */

static int sq_pragma(sqlite3 *db, const char *sql, const char *want, struct cvm_err *err)
{
	sqlite3_stmt *st = NULL;
	if (sqlite3_prepare_v2(db, sql, -1, &st, NULL) != SQLITE_OK)
		return sq_error(db, sql, err);
	int rc = sqlite3_step(st), r = 0;
	if (rc != SQLITE_ROW && rc != SQLITE_DONE)
		r = sq_error(db, sql, err);
	else if (want && (rc != SQLITE_ROW || !sqlite3_column_text(st, 0) ||
			  strcasecmp((const char *)sqlite3_column_text(st, 0), want) != 0))
		r = cvm_err_internal(err, "store: sqlite %s did not take effect", sql);
	sqlite3_finalize(st);
	return r;
}

static int sq_conn_open(struct sq_conn *c, const char *path, bool writer, bool memory,
			struct cvm_err *err)
{
	int flags = SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE | SQLITE_OPEN_NOMUTEX;
	c->writer = writer;
	if (sqlite3_open_v2(path, &c->db, flags, NULL) != SQLITE_OK) {
		int r = cvm_err_set(err, EIO, "InternalError", "store: cannot open sqlite database: %s",
				    c->db ? sqlite3_errmsg(c->db) : "out of memory");
		sqlite3_close_v2(c->db);
		c->db = NULL;
		return r;
	}
	sqlite3_extended_result_codes(c->db, 1);
	sqlite3_busy_timeout(c->db, SQ_BUSY_TIMEOUT_MS);
	int r = 0;
	if (writer && !memory)
		r = sq_pragma(c->db, "PRAGMA journal_mode=WAL", "wal", err);
	if (r == 0)
		r = sq_pragma(c->db, "PRAGMA synchronous=FULL", NULL, err);
	if (r == 0)
		r = sq_pragma(c->db, "PRAGMA foreign_keys=ON", NULL, err);
	/* Deleted rows may hold sealed key material: overwrite freed content with zeros. */
	if (r == 0 && writer)
		r = sq_pragma(c->db, "PRAGMA secure_delete=ON", NULL, err);
	if (r == 0 && !writer)
		r = sq_pragma(c->db, "PRAGMA query_only=ON", NULL, err);
	return r;
}

static void sq_conn_close(struct sq_conn *c)
{
	stmt_cache_clear(&c->cache, finalize_stmt, NULL);
	if (c->db)
		sqlite3_close_v2(c->db);
	c->db = NULL;
}

static void sq_close(void *impl)
{
	struct sq_store *s = impl;
	if (!s)
		return;
	for (size_t i = 0; i < s->nreaders; i++)
		sq_conn_close(&s->readers[i]);
	sq_conn_close(&s->writer);
	free(s->readers);
	free(s->idle);
	pthread_mutex_destroy(&s->wlock);
	pthread_mutex_destroy(&s->rlock);
	pthread_cond_destroy(&s->rcond);
	free(s);
}

/* Creates the directory (0700) and the file (0600) so the WAL and shm files, which SQLite
 * creates with the database's mode, are private too. */
static int sq_create_file(const char *path, struct cvm_err *err)
{
	_cleanup_free_ char *dir = strdup(path);
	if (!dir)
		return cvm_err_nomem(err);
	char *slash = strrchr(dir, '/');
	if (slash && slash != dir) {
		*slash = 0;
		int r = cvm_mkdir_p(dir, 0700, err);
		if (r < 0)
			return r;
	}
	int fd = open(path, O_RDWR | O_CREAT | O_CLOEXEC, 0600);
	if (fd < 0)
		return cvm_err_set(err, errno == EACCES ? EACCES : EIO, "InternalError",
				   "store: cannot create sqlite database file: %s", strerror(errno));
	close(fd);
	return 0;
}

int store_sqlite_open(const char *path, unsigned pool, void **impl, struct cvm_err *err)
{
	bool memory = strcmp(path, ":memory:") == 0;
	int r;
	if (!memory && (r = sq_create_file(path, err)) < 0)
		return r;
	struct sq_store *s = calloc(1, sizeof(*s));
	if (!s)
		return cvm_err_nomem(err);
	pthread_mutex_init(&s->wlock, NULL);
	pthread_mutex_init(&s->rlock, NULL);
	pthread_cond_init(&s->rcond, NULL);
	r = sq_conn_open(&s->writer, path, true, memory, err);
	/* An in-memory database exists only in its one connection: no readers. */
	size_t nreaders = memory ? 0 : pool;
	if (r == 0 && nreaders) {
		s->readers = calloc(nreaders, sizeof(*s->readers));
		s->idle = calloc(nreaders, sizeof(*s->idle));
		if (!s->readers || !s->idle)
			r = cvm_err_nomem(err);
	}
	for (size_t i = 0; r == 0 && i < nreaders; i++) {
		s->nreaders++;
		r = sq_conn_open(&s->readers[i], path, false, memory, err);
		s->idle[s->nidle++] = &s->readers[i];
	}
	if (r < 0) {
		sq_close(s);
		return r;
	}
	*impl = s;
	return 0;
}

/* ---- transactions ----------------------------------------------------------------------- */

/* The writer's synchronous level for the next transaction: NORMAL for a lazy one, FULL for
 * every other. A FULL that could not be restored after a lazy commit is retried here, and a
 * durable transaction never begins without it. */
static int sq_set_lazy(struct sq_conn *c, bool lazy, struct cvm_err *err)
{
	if (c->lazy == lazy)
		return 0;
	int r = sq_exec(c, lazy ? "PRAGMA synchronous=NORMAL" : "PRAGMA synchronous=FULL", NULL, 0,
			NULL, NULL, err);
	if (r == 0)
		c->lazy = lazy;
	return r;
}

static struct sq_conn *sq_acquire(struct sq_store *s, enum store_tx_kind kind)
{
	if (kind != STORE_TX_READ || !s->nreaders) {
		pthread_mutex_lock(&s->wlock);
		return &s->writer;
	}
	pthread_mutex_lock(&s->rlock);
	while (!s->nidle)
		pthread_cond_wait(&s->rcond, &s->rlock);
	struct sq_conn *c = s->idle[--s->nidle];
	pthread_mutex_unlock(&s->rlock);
	return c;
}

static void sq_release(struct sq_store *s, struct sq_conn *c)
{
	if (c->writer) {
		if (c->lazy)
			(void)sq_set_lazy(c, false, NULL); /* else retried by the next sq_begin */
		pthread_mutex_unlock(&s->wlock);
		return;
	}
	pthread_mutex_lock(&s->rlock);
	s->idle[s->nidle++] = c;
	pthread_cond_signal(&s->rcond);
	pthread_mutex_unlock(&s->rlock);
}

static int sq_begin(void *impl, enum store_tx_kind kind, void **conn, struct cvm_err *err)
{
	struct sq_store *s = impl;
	struct sq_conn *c = sq_acquire(s, kind);
	int r = c->writer ? sq_set_lazy(c, kind == STORE_TX_WRITE_LAZY, err) : 0;
	if (r == 0)
		r = sq_exec(c, kind == STORE_TX_READ ? "BEGIN" : "BEGIN IMMEDIATE", NULL, 0, NULL,
			    NULL, err);
	if (r < 0) {
		sq_release(s, c);
		return r;
	}
	*conn = c;
	return 0;
}

/* Rollback has no one to report to; if it fails, the next BEGIN on this connection fails
 * with "cannot start a transaction within a transaction" and the caller sees that. */
static void sq_abort(struct sq_conn *c)
{
	if (!sqlite3_get_autocommit(c->db))
		(void)sq_exec(c, "ROLLBACK", NULL, 0, NULL, NULL, NULL);
}

static int sq_commit(void *impl, void *conn, struct cvm_err *err)
{
	struct sq_conn *c = conn;
	int r = sq_exec(c, "COMMIT", NULL, 0, NULL, NULL, err);
	if (r < 0)
		sq_abort(c);
	sq_release(impl, c);
	return r;
}

static void sq_rollback(void *impl, void *conn)
{
	sq_abort(conn);
	sq_release(impl, conn);
}

const struct store_backend store_sqlite_backend = {
	.name = "sqlite",
	.close = sq_close,
	.begin = sq_begin,
	.commit = sq_commit,
	.rollback = sq_rollback,
	.exec = sq_exec,
};
