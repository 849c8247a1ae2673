/* SPDX-License-Identifier: Apache-2.0 */
/* store: transactional SQL storage over SQLite (default, embedded) or PostgreSQL 15 (libpq,
 * shared by several cvmd processes for HA). One portable dialect, one schema, one test suite.
 *
 * Thread safety: a struct cvm_store is used from many threads at once; each struct cvm_tx
 * belongs to the thread that began it until commit/rollback.
 *
 * Portable SQL dialect:
 *  - Plain '?' placeholders, no ?NNN or :name (translated to $1..$n for PostgreSQL; '?' inside
 *    quotes/comments is left alone).
 *  - Column types TEXT, INTEGER (always 64-bit: rewritten to BIGINT on PostgreSQL), BLOB
 *    (rewritten to BYTEA on PostgreSQL). The rewrite applies to every statement, whole words
 *    outside quotes only.
 *  - Write SQL that both engines accept: INSERT ... ON CONFLICT DO NOTHING / DO UPDATE,
 *    UPDATE ... RETURNING, LIMIT ?, COALESCE, no engine-specific functions.
 *
 * Errors (negative errno, struct cvm_err filled):
 *  -EEXIST "Conflict"       unique / primary-key violation
 *  -EAGAIN "Conflict"       serialization failure, deadlock, SQLITE_BUSY (cvm_store_transact
 *                           retries these)
 *  -EIO    "InternalError"  connection lost, I/O error, any other SQL error
 *  -EINVAL "BadParameter"   bad url / arguments
 * Messages name the statement's first words ("INSERT INTO keys"), never parameter values. */
#pragma once

#include <opencvm/util.h>

struct cvm_store;
struct cvm_tx;
struct cvm_rows;

/* url: "sqlite:/path/to/db" (or a plain path; "sqlite::memory:" is a private in-memory
 *      database served by a single connection), or "postgres://user@host:port/db" /
 *      "postgresql://..." (any libpq URI; libpq parameters such as options= pass through;
 *      connect_timeout defaults to 10 s).
 * Optional query parameter "pool=N" (1..64, stripped before libpq sees it): number of
 *      connections (PostgreSQL, default 8) or of reader connections (SQLite, default 4; SQLite
 *      always has one extra writer connection).
 * The SQLite database file and its directory are created when missing (mode 0600). */
CVM_EXPORT int cvm_store_open(const char *url, struct cvm_store **out, struct cvm_err *err);
CVM_EXPORT void cvm_store_close(struct cvm_store *s); /* NULL-safe; no tx may be open */
CVM_DEFINE_CLEANUP(struct cvm_store, cvm_store_close)
CVM_EXPORT const char *cvm_store_backend(const struct cvm_store *s); /* "sqlite" | "postgres" */

/* Schema: a module registers its DDL under (module, version). When the recorded version is
 * missing or lower than `version`, all n statements run in one transaction and the version is
 * recorded in table cvm_schema; otherwise nothing runs. The statements must therefore bring any
 * earlier version up to `version` (CREATE TABLE IF NOT EXISTS, ...). Safe when several
 * processes start at once (PostgreSQL: transaction-scoped advisory lock; SQLite: BEGIN
 * IMMEDIATE). */
CVM_EXPORT int cvm_store_ensure_schema(struct cvm_store *s, const char *module, int version,
				       const char *const *ddl, size_t n, struct cvm_err *err);

enum cvm_val_type { CVM_VAL_NULL, CVM_VAL_INT, CVM_VAL_TEXT, CVM_VAL_BLOB };
struct cvm_val {
	enum cvm_val_type type;
	int64_t i;
	const char *s;
	const void *b;
	size_t len;
};
#define CVM_VAL_I(x) ((struct cvm_val){ .type = CVM_VAL_INT, .i = (x) })
/* A function, not a bare conditional: with an array argument gcc warns that its address is
 * always true (-Waddress). NULL binds SQL NULL. */
static inline struct cvm_val cvm_val_text(const char *s)
{
	return (struct cvm_val){ .type = s ? CVM_VAL_TEXT : CVM_VAL_NULL, .s = s };
}
#define CVM_VAL_S(x) cvm_val_text(x)
#define CVM_VAL_B(p, n) ((struct cvm_val){ .type = CVM_VAL_BLOB, .b = (p), .len = (n) })
#define CVM_VAL_NIL ((struct cvm_val){ .type = CVM_VAL_NULL })

/* CVM_TX_WRITE: SQLite BEGIN IMMEDIATE on the writer connection (one writer per process,
 * others wait); PostgreSQL SERIALIZABLE. CVM_TX_READ: a consistent snapshot, read only
 * (SQLite reader connection with query_only; PostgreSQL REPEATABLE READ READ ONLY).
 * CVM_TX_WRITE_LAZY: a write transaction that commits without waiting for its flush (SQLite
 * synchronous=NORMAL for that commit, PostgreSQL synchronous_commit=off): atomic and isolated
 * like CVM_TX_WRITE, but durable only once a later durable commit on the same store returns
 * (both engines write one sequential log, and flushing it up to a commit flushes every commit
 * before it). Use it only where such a commit follows before the outcome leaves the process,
 * e.g. a request's audit record, which is durable before the response is sent; it saves a
 * flush per request. cvm_tx_mode reports it as CVM_TX_WRITE.
 * Do not begin a write transaction (or call cvm_audit_append) while the same thread holds one:
 * on SQLite that waits for itself. */
enum cvm_tx_mode { CVM_TX_READ, CVM_TX_WRITE, CVM_TX_WRITE_LAZY };
CVM_EXPORT int cvm_tx_begin(struct cvm_store *s, enum cvm_tx_mode mode, struct cvm_tx **out,
			    struct cvm_err *err);
/* Always releases tx; when it returns 0 the transaction is durable (SQLite WAL with
 * synchronous=FULL fsyncs on commit; PostgreSQL synchronous_commit), or for CVM_TX_WRITE_LAZY
 * committed and durable with the next durable commit. -EAGAIN: nothing was
 * committed (retry). -EIO on PostgreSQL can mean the connection died during COMMIT: the
 * outcome is then unknown. */
CVM_EXPORT int cvm_tx_commit(struct cvm_tx *tx, struct cvm_err *err);
CVM_EXPORT void cvm_tx_rollback(struct cvm_tx *tx); /* releases tx; NULL-safe */
CVM_DEFINE_CLEANUP(struct cvm_tx, cvm_tx_rollback)
CVM_EXPORT const char *cvm_tx_backend(const struct cvm_tx *tx); /* "sqlite" | "postgres" */
CVM_EXPORT enum cvm_tx_mode cvm_tx_mode(const struct cvm_tx *tx);

/* Serialize with every other writer of `table` (a plain identifier) until this write
 * transaction ends, across processes: PostgreSQL LOCK TABLE ... IN SHARE ROW EXCLUSIVE MODE
 * (plain reads go on); SQLite: nothing to do, write transactions are exclusive already. Call it
 * before any other statement of the transaction: a SERIALIZABLE snapshot is taken at the first
 * statement, and only a lock taken before it guarantees the snapshot includes the previous
 * holder's commit (so hot rows updated under the lock do not fail with -EAGAIN). */
CVM_EXPORT int cvm_tx_lock(struct cvm_tx *tx, const char *table, struct cvm_err *err);

/* Statements are prepared once per connection and cached by SQL text: pass constant SQL and
 * put every variable part in params. changes (nullable) receives the number of rows
 * inserted/updated/deleted. After a statement fails, only rollback is portable: PostgreSQL
 * aborts the whole transaction (commit then fails with the statement's errno), SQLite undoes
 * just the statement. Use ON CONFLICT instead of catching -EEXIST to carry on. */
CVM_EXPORT int cvm_tx_exec(struct cvm_tx *tx, const char *sql, const struct cvm_val *params,
			   size_t n, int64_t *changes, struct cvm_err *err);
/* Runs a statement that returns rows (SELECT, ... RETURNING) and materializes all of them. */
CVM_EXPORT int cvm_tx_query(struct cvm_tx *tx, const char *sql, const struct cvm_val *params,
			    size_t n, struct cvm_rows **out, struct cvm_err *err);

/* Result access. Out-of-range row/col behave like NULL. Integers read from text cells are
 * parsed (0 when not a number); text read from integer cells is their decimal form; every
 * non-null cell is NUL-terminated, so text of a blob is its bytes. */
CVM_EXPORT size_t cvm_rows_count(const struct cvm_rows *r);
CVM_EXPORT size_t cvm_rows_ncols(const struct cvm_rows *r);
CVM_EXPORT bool cvm_rows_null(const struct cvm_rows *r, size_t row, size_t col);
CVM_EXPORT int64_t cvm_rows_int(const struct cvm_rows *r, size_t row, size_t col);
CVM_EXPORT const char *cvm_rows_text(const struct cvm_rows *r, size_t row, size_t col); /* NULL if null */
/* len receives the byte length (0 for NULL; then NULL is returned). */
CVM_EXPORT const uint8_t *cvm_rows_blob(const struct cvm_rows *r, size_t row, size_t col,
					size_t *len);
CVM_EXPORT void cvm_rows_free(struct cvm_rows *r); /* wipes cell memory; NULL-safe */
CVM_DEFINE_CLEANUP(struct cvm_rows, cvm_rows_free)
#define _cleanup_rows_ _cleanup_(cvm_rows_freep)
#define _cleanup_tx_ _cleanup_(cvm_tx_rollbackp)
#define _cleanup_store_ _cleanup_(cvm_store_closep)

/* Run fn in a transaction of the given mode, retrying the whole transaction on -EAGAIN
 * (serialization failure, deadlock, SQLITE_BUSY) from fn or from commit, up to 16 attempts
 * with jittered exponential backoff. Commits when fn returns 0, rolls back otherwise and
 * returns fn's result. fn may run more than once: it must not keep side effects outside the
 * transaction from a failed attempt. */
typedef int (*cvm_tx_fn)(struct cvm_tx *tx, void *ctx, struct cvm_err *err);
CVM_EXPORT int cvm_store_transact(struct cvm_store *s, enum cvm_tx_mode mode, cvm_tx_fn fn,
				  void *ctx, struct cvm_err *err);
