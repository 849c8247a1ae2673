/* SPDX-License-Identifier: Apache-2.0 */
/* store internals shared by the generic layer (store.c), the SQL helpers (sql.c), the result
 * set (rows.c) and the two engines (sqlite.c, postgres.c). */
#pragma once

#include <opencvm/store.h>

/* Transaction kinds the engines know; STORE_TX_SCHEMA is a write transaction that also takes
 * the cross-process schema lock (PostgreSQL advisory lock; SQLite BEGIN IMMEDIATE already
 * excludes other writers); STORE_TX_WRITE_LAZY is CVM_TX_WRITE_LAZY. */
enum store_tx_kind { STORE_TX_READ, STORE_TX_WRITE, STORE_TX_SCHEMA, STORE_TX_WRITE_LAZY };

struct store_backend {
	const char *name;
	void (*close)(void *impl);
	/* Take a connection and begin; fills *conn. */
	int (*begin)(void *impl, enum store_tx_kind kind, void **conn, struct cvm_err *err);
	/* Commit and release the connection, even on failure. */
	int (*commit)(void *impl, void *conn, struct cvm_err *err);
	/* Roll back and release the connection. */
	void (*rollback)(void *impl, void *conn);
	/* Run one statement; when rows is non-NULL, append every result row to it. */
	int (*exec)(void *conn, const char *sql, const struct cvm_val *params, size_t n,
		    int64_t *changes, struct cvm_rows *rows, struct cvm_err *err);
};

struct cvm_store {
	const struct store_backend *be;
	void *impl;
};

struct cvm_tx {
	struct cvm_store *store;
	void *conn;
	enum store_tx_kind kind;
};

extern const struct store_backend store_sqlite_backend;
extern const struct store_backend store_postgres_backend;

int store_sqlite_open(const char *path, unsigned pool, void **impl, struct cvm_err *err);
int store_postgres_open(const char *conninfo, unsigned pool, void **impl, struct cvm_err *err);

/* ---- prepared-statement cache: SQL text -> engine handle, one per connection ---------- */
struct stmt_entry {
	struct stmt_entry *next;
	uint64_t hash;
	char *sql;
	void *handle;
};
struct stmt_cache {
	struct stmt_entry **buckets;
	size_t nbuckets;
	size_t count;
};
void *stmt_cache_get(const struct stmt_cache *c, const char *sql);
int stmt_cache_put(struct stmt_cache *c, const char *sql, void *handle);
/* Forget one entry (the handle is the caller's to free). */
void stmt_cache_remove(struct stmt_cache *c, const char *sql);
/* Free every entry, calling free_handle on each handle; the cache is reusable. */
void stmt_cache_clear(struct stmt_cache *c, void (*free_handle)(void *handle, void *ctx),
		      void *ctx);

/* ---- SQL text helpers ------------------------------------------------------------------- */
/* The statement's first words for error messages ("INSERT INTO keys"), never values. */
void sql_first_words(const char *sql, char *out, size_t outlen);
/* PostgreSQL dialect: '?' -> $1..$n, INTEGER -> BIGINT, BLOB -> BYTEA (whole words outside
 * quotes and comments). Returns a malloc'd string and the number of placeholders. */
char *sql_to_postgres(const char *sql, size_t *nparams);

/* ---- result sets ------------------------------------------------------------------------ */
struct cvm_rows *rows_new(void);
int rows_set_ncols(struct cvm_rows *r, size_t ncols);
int rows_add_null(struct cvm_rows *r);
int rows_add_int(struct cvm_rows *r, int64_t v);
int rows_add_text(struct cvm_rows *r, const char *s, size_t len);
int rows_add_blob(struct cvm_rows *r, const void *b, size_t len);
