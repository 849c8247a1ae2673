/* SPDX-License-Identifier: Apache-2.0 */
/* store: engine-independent layer — URL parsing, transactions, retries, schema versions. */
#include "store-int.h"

#include <ctype.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

#define TRANSACT_MAX_ATTEMPTS 16
#define BACKOFF_BASE_US 1000
#define BACKOFF_MAX_US 250000

/* Removes "pool=N" from the query string of url (in place) and returns N, 0 when absent. */
static int take_pool_param(char *url, unsigned *pool, struct cvm_err *err)
{
	*pool = 0;
	char *q = strchr(url, '?');
	if (!q)
		return 0;
	char *out = q + 1, *p = q + 1;
	while (*p) {
		char *amp = strchr(p, '&');
		size_t len = amp ? (size_t)(amp - p) : strlen(p);
		if (len >= 5 && strncmp(p, "pool=", 5) == 0) {
			char num[16];
			int64_t v;
			if (len - 5 >= sizeof(num))
				return cvm_err_badparam(err, "store url: pool must be 1..64");
			memcpy(num, p + 5, len - 5);
			num[len - 5] = 0;
			int r = cvm_parse_i64(num, 1, 64, &v, "store url pool", err);
			if (r < 0)
				return r;
			*pool = (unsigned)v;
		} else {
			if (out != q + 1)
				*out++ = '&';
			memmove(out, p, len);
			out += len;
		}
		p += len + (amp ? 1 : 0);
	}
	*out = 0;
	if (out == q + 1)
		*q = 0; /* no parameters left */
	return 0;
}

int cvm_store_open(const char *url, struct cvm_store **out, struct cvm_err *err)
{
	if (!url || !*url || !out)
		return cvm_err_badparam(err, "store url: expected sqlite:PATH, a path or postgres://...");
	_cleanup_free_ char *u = strdup(url);
	_cleanup_free_ struct cvm_store *s = calloc(1, sizeof(*s));
	if (!u || !s)
		return cvm_err_nomem(err);
	unsigned pool;
	int r = take_pool_param(u, &pool, err);
	if (r < 0)
		return r;
	if (cvm_str_startswith(u, "postgres://") || cvm_str_startswith(u, "postgresql://")) {
		s->be = &store_postgres_backend;
		r = store_postgres_open(u, pool ? pool : 8, &s->impl, err);
	} else {
		const char *path = cvm_str_startswith(u, "sqlite:") ? u + strlen("sqlite:") : u;
		if (!*path)
			return cvm_err_badparam(err, "store url: sqlite path is empty");
		s->be = &store_sqlite_backend;
		r = store_sqlite_open(path, pool ? pool : 4, &s->impl, err);
	}
	if (r < 0)
		return r;
	*out = CVM_TAKE(s);
	return 0;
}

void cvm_store_close(struct cvm_store *s)
{
	if (!s)
		return;
	s->be->close(s->impl);
	free(s);
}

const char *cvm_store_backend(const struct cvm_store *s)
{
	return s->be->name;
}

static int tx_begin_kind(struct cvm_store *s, enum store_tx_kind kind, struct cvm_tx **out,
			 struct cvm_err *err)
{
	struct cvm_tx *tx = calloc(1, sizeof(*tx));
	if (!tx)
		return cvm_err_nomem(err);
	tx->store = s;
	tx->kind = kind;
	int r = s->be->begin(s->impl, kind, &tx->conn, err);
	if (r < 0) {
		free(tx);
		return r;
	}
	*out = tx;
	return 0;
}

static bool valid_mode(enum cvm_tx_mode mode)
{
	return mode == CVM_TX_READ || mode == CVM_TX_WRITE || mode == CVM_TX_WRITE_LAZY;
}

static enum store_tx_kind tx_kind(enum cvm_tx_mode mode)
{
	return mode == CVM_TX_READ ? STORE_TX_READ
	       : mode == CVM_TX_WRITE_LAZY ? STORE_TX_WRITE_LAZY
					   : STORE_TX_WRITE;
}

int cvm_tx_begin(struct cvm_store *s, enum cvm_tx_mode mode, struct cvm_tx **out,
		 struct cvm_err *err)
{
	if (!s || !out || !valid_mode(mode))
		return cvm_err_badparam(err, "tx: expected a store and mode READ, WRITE or WRITE_LAZY");
	return tx_begin_kind(s, tx_kind(mode), out, err);
}

int cvm_tx_commit(struct cvm_tx *tx, struct cvm_err *err)
{
	if (!tx)
		return cvm_err_badparam(err, "tx: commit of no transaction");
	int r = tx->store->be->commit(tx->store->impl, tx->conn, err);
	free(tx);
	return r;
}

void cvm_tx_rollback(struct cvm_tx *tx)
{
	if (!tx)
		return;
	tx->store->be->rollback(tx->store->impl, tx->conn);
	free(tx);
}

const char *cvm_tx_backend(const struct cvm_tx *tx)
{
	return tx->store->be->name;
}

enum cvm_tx_mode cvm_tx_mode(const struct cvm_tx *tx)
{
	return tx->kind == STORE_TX_READ ? CVM_TX_READ : CVM_TX_WRITE;
}

int cvm_tx_lock(struct cvm_tx *tx, const char *table, struct cvm_err *err)
{
	if (!tx || !table)
		return cvm_err_badparam(err, "tx lock: expected a transaction and a table");
	if (tx->kind == STORE_TX_READ)
		return cvm_err_badparam(err, "tx lock: transaction is read-only");
	size_t len = strlen(table);
	bool ok = len > 0 && len < 64 && !isdigit((unsigned char)table[0]);
	for (size_t i = 0; ok && i < len; i++)
		ok = isalnum((unsigned char)table[i]) || table[i] == '_';
	if (!ok)
		return cvm_err_badparam(err, "tx lock: table must be a plain identifier");
	if (tx->store->be != &store_postgres_backend)
		return 0;
	char sql[128];
	snprintf(sql, sizeof(sql), "LOCK TABLE %s IN SHARE ROW EXCLUSIVE MODE", table);
	return tx->store->be->exec(tx->conn, sql, NULL, 0, NULL, NULL, err);
}

static int check_params(const struct cvm_val *params, size_t n, struct cvm_err *err)
{
	if (n && !params)
		return cvm_err_badparam(err, "sql params: NULL array for %zu parameters", n);
	for (size_t i = 0; i < n; i++) {
		const struct cvm_val *v = &params[i];
		if (v->type == CVM_VAL_TEXT && !v->s)
			return cvm_err_badparam(err, "sql param %zu: text value is NULL", i + 1);
		if (v->type == CVM_VAL_BLOB && !v->b && v->len)
			return cvm_err_badparam(err, "sql param %zu: blob pointer is NULL", i + 1);
		if (v->type > CVM_VAL_BLOB)
			return cvm_err_badparam(err, "sql param %zu: unknown type", i + 1);
	}
	return 0;
}

int cvm_tx_exec(struct cvm_tx *tx, const char *sql, const struct cvm_val *params, size_t n,
		int64_t *changes, struct cvm_err *err)
{
	if (!tx || !sql)
		return cvm_err_badparam(err, "sql exec: expected a transaction and SQL text");
	int r = check_params(params, n, err);
	if (r < 0)
		return r;
	if (changes)
		*changes = 0;
	return tx->store->be->exec(tx->conn, sql, params, n, changes, NULL, err);
}

int cvm_tx_query(struct cvm_tx *tx, const char *sql, const struct cvm_val *params, size_t n,
		 struct cvm_rows **out, struct cvm_err *err)
{
	if (!tx || !sql || !out)
		return cvm_err_badparam(err, "sql query: expected a transaction, SQL text and output");
	int r = check_params(params, n, err);
	if (r < 0)
		return r;
	_cleanup_rows_ struct cvm_rows *rows = rows_new();
	if (!rows)
		return cvm_err_nomem(err);
	r = tx->store->be->exec(tx->conn, sql, params, n, NULL, rows, err);
	if (r < 0)
		return r;
	*out = CVM_TAKE(rows);
	return 0;
}

/* Sleeps a random time in [d/2, d) with d = base * 2^attempt capped, so that contending
 * transactions spread out instead of colliding again in lockstep. */
static void backoff(unsigned attempt)
{
	uint64_t d = BACKOFF_BASE_US;
	for (unsigned i = 0; i < attempt && d < BACKOFF_MAX_US; i++)
		d *= 2;
	if (d > BACKOFF_MAX_US)
		d = BACKOFF_MAX_US;
	uint32_t rnd;
	if (cvm_random(&rnd, sizeof(rnd), NULL) < 0)
		rnd = (uint32_t)cvm_monotonic_ns();
	uint64_t us = d / 2 + rnd % (d / 2);
	struct timespec ts = { .tv_sec = (time_t)(us / 1000000), .tv_nsec = (long)(us % 1000000) * 1000 };
	while (nanosleep(&ts, &ts) < 0 && errno == EINTR)
		;
}

static int transact_kind(struct cvm_store *s, enum store_tx_kind kind, cvm_tx_fn fn, void *ctx,
			 struct cvm_err *err)
{
	int r = 0;
	for (unsigned attempt = 0; attempt < TRANSACT_MAX_ATTEMPTS; attempt++) {
		if (attempt)
			backoff(attempt - 1);
		struct cvm_tx *tx = NULL;
		r = tx_begin_kind(s, kind, &tx, err);
		if (r == 0) {
			r = fn(tx, ctx, err);
			if (r == 0)
				r = cvm_tx_commit(tx, err);
			else
				cvm_tx_rollback(tx);
		}
		if (r != -EAGAIN)
			return r;
	}
	return cvm_err_prefix(err, "gave up after %d attempts", TRANSACT_MAX_ATTEMPTS);
}

int cvm_store_transact(struct cvm_store *s, enum cvm_tx_mode mode, cvm_tx_fn fn, void *ctx,
		       struct cvm_err *err)
{
	if (!s || !fn || !valid_mode(mode))
		return cvm_err_badparam(err, "transact: expected a store, mode and function");
	return transact_kind(s, tx_kind(mode), fn, ctx, err);
}

/* ---- schema versions -------------------------------------------------------------------- */

struct schema_ctx {
	const char *module;
	int version;
	const char *const *ddl;
	size_t n;
	bool applied;
};

static int schema_apply(struct cvm_tx *tx, void *arg, struct cvm_err *err)
{
	struct schema_ctx *c = arg;
	c->applied = false;
	int r = cvm_tx_exec(tx,
			    "CREATE TABLE IF NOT EXISTS cvm_schema (module TEXT PRIMARY KEY, "
			    "version INTEGER NOT NULL, applied_ms INTEGER NOT NULL)",
			    NULL, 0, NULL, err);
	if (r < 0)
		return r;
	_cleanup_rows_ struct cvm_rows *rows = NULL;
	struct cvm_val key = CVM_VAL_S(c->module);
	r = cvm_tx_query(tx, "SELECT version FROM cvm_schema WHERE module = ?", &key, 1, &rows,
			 err);
	if (r < 0)
		return r;
	if (cvm_rows_count(rows) && cvm_rows_int(rows, 0, 0) >= c->version)
		return 0;
	for (size_t i = 0; i < c->n; i++) {
		r = cvm_tx_exec(tx, c->ddl[i], NULL, 0, NULL, err);
		if (r < 0)
			return cvm_err_prefix(err, "schema %s v%d statement %zu", c->module,
					      c->version, i + 1);
	}
	struct cvm_val v[] = { CVM_VAL_S(c->module), CVM_VAL_I(c->version),
			       CVM_VAL_I(cvm_now_ms()) };
	r = cvm_tx_exec(tx,
			"INSERT INTO cvm_schema (module, version, applied_ms) VALUES (?, ?, ?) "
			"ON CONFLICT (module) DO UPDATE SET version = excluded.version, "
			"applied_ms = excluded.applied_ms",
			v, CVM_ARRAY_SIZE(v), NULL, err);
	if (r < 0)
		return r;
	c->applied = true;
	return 0;
}

int cvm_store_ensure_schema(struct cvm_store *s, const char *module, int version,
			    const char *const *ddl, size_t n, struct cvm_err *err)
{
	if (!s || !module || !*module || version < 1 || (n && !ddl))
		return cvm_err_badparam(err, "schema: expected a module name, version >= 1 and "
					     "statements");
	struct schema_ctx c = { .module = module, .version = version, .ddl = ddl, .n = n };
	int r = transact_kind(s, STORE_TX_SCHEMA, schema_apply, &c, err);
	if (r < 0)
		return r;
	if (c.applied)
		cvm_log_info("store_schema", "module=%s version=%d backend=%s", module, version,
			     s->be->name);
	return 0;
}
