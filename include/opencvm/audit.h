/* SPDX-License-Identifier: Apache-2.0 */
/* audit: append-only, hash-chained audit log kept in the store (tables cvm_audit and
 * cvm_audit_head), with group commit, verification and JSON-lines export.
 *
 * Chain: hash_n = SHA-256(hash_{n-1} || canonical(record n)), hash_0 = 32 zero bytes.
 * canonical() is "opencvm-audit-v1\0", seq, time_ms, status as 8-byte big-endian integers,
 * then principal, operation, key_name, key_version, result, request_id, source, detail, each
 * as 0x00 (NULL) or 0x01 + 4-byte big-endian length + bytes. Sequence numbers start at 1 and
 * are contiguous. The single row of cvm_audit_head holds the latest seq and hash; every append
 * updates it first in its transaction, which serializes appenders across processes sharing one
 * PostgreSQL (and lets verify detect a truncated tail).
 *
 * Durability guarantee: cvm_audit_append returns only after the transaction holding its record
 * committed durably (SQLite WAL synchronous=FULL fsync; PostgreSQL synchronous commit). A
 * single writer thread commits batches: each batch holds every append that arrived while the
 * previous batch's commit was in flight (at most 1024), so concurrent appenders share one
 * transaction and one fsync. If the batch fails, every append in it returns the error and none
 * of its records exist. cvm_audit_append_tx records commit (or vanish) with the caller's
 * transaction.
 *
 * What the chain proves: any edit, deletion, insertion or reordering of records, or removal of
 * the tail, made without also recomputing every later hash and the head row, is detected by
 * cvm_audit_verify. Someone with write access to the database who recomputes the chain is not
 * detected; anchor exported hashes elsewhere for that.
 *
 * Records never contain key material: detail is caller-supplied JSON text describing the
 * operation (names, versions, algorithms), never keys, tokens or plaintexts. */
#pragma once

#include <opencvm/store.h>
#include <opencvm/util.h>

#include <jansson.h>
#include <stdio.h>

struct cvm_audit;

struct cvm_audit_event {
	int64_t time_ms;         /* 0: now */
	const char *principal;   /* nullable */
	const char *operation;   /* required, e.g. "keys/release" */
	const char *key_name;    /* nullable */
	const char *key_version; /* nullable */
	int status;              /* HTTP status */
	const char *result;      /* required: "ok" or the error code */
	const char *request_id;  /* nullable */
	const char *source;      /* client address, nullable */
	const char *detail;      /* nullable; valid JSON text (else -EINVAL), never key material */
};

/* Field limits (bytes); longer fields are refused with -EINVAL. */
#define CVM_AUDIT_FIELD_MAX 1024
#define CVM_AUDIT_DETAIL_MAX 65536

/* Ensures the schema and starts the group-commit writer thread. */
CVM_EXPORT int cvm_audit_open(struct cvm_store *s, struct cvm_audit **out, struct cvm_err *err);
/* Flushes pending appends, stops the writer. NULL-safe. No append may be in progress; close
 * the audit log before its store. */
CVM_EXPORT void cvm_audit_close(struct cvm_audit *a);
CVM_DEFINE_CLEANUP(struct cvm_audit, cvm_audit_close)

/* Counters of the group-commit writer since cvm_audit_open (for metrics): records and
 * batches committed, batches that failed. records / batches is the mean group size. */
struct cvm_audit_stats {
	int64_t records;
	int64_t batches;
	int64_t failed_batches;
};
CVM_EXPORT void cvm_audit_stats(struct cvm_audit *a, struct cvm_audit_stats *out);

/* Append and wait until durable (see the guarantee above). Returns the record's seq. Do not
 * call while this thread holds a write transaction on the same store (use _append_tx). */
CVM_EXPORT int cvm_audit_append(struct cvm_audit *a, const struct cvm_audit_event *ev,
				int64_t *seq, struct cvm_err *err);
/* Append inside the caller's own write transaction (for state changes that must commit
 * atomically with their audit record). The schema must exist (cvm_audit_open ran once).
 * Make it the transaction's FIRST statement (the outcome is known anyway: if the change fails
 * the transaction, and the record with it, rolls back). It locks the chain head until commit
 * (cvm_tx_lock); on PostgreSQL, called after other statements it fails with -EAGAIN whenever
 * another append committed since the transaction's first statement (cvm_store_transact
 * retries, but under steady audit traffic it may keep losing). */
CVM_EXPORT int cvm_audit_append_tx(struct cvm_tx *tx, const struct cvm_audit_event *ev,
				   int64_t *seq, struct cvm_err *err);

/* Verify the whole chain. Returns 0 with *records = number of records and *bad_seq = 0 when
 * intact; otherwise -EBADMSG (code "AuditChainBroken") with *bad_seq = the first seq that is
 * edited, missing, inserted or out of order (for a truncated tail: the first missing seq) and
 * *records = number of records verified good before it. */
CVM_EXPORT int cvm_audit_verify(struct cvm_store *s, int64_t *records, int64_t *bad_seq,
				struct cvm_err *err);
/* Write records with time_ms >= since_ms, in seq order, as JSON lines to out:
 * {"seq":1,"time_ms":...,"time":"2026-...Z","principal":...,"operation":...,"key_name":...,
 *  "key_version":...,"status":200,"result":"ok","request_id":...,"source":...,"detail":"...",
 *  "prev_hash":"hex","hash":"hex"} (absent fields are null; detail is the stored JSON text as
 * a string so the line reproduces the hashed bytes). *count (nullable) receives the number of
 * lines written. */
CVM_EXPORT int cvm_audit_export(struct cvm_store *s, int64_t since_ms, FILE *out, int64_t *count,
				struct cvm_err *err);
/* The newest max (1..10000) records whose key_name and operation match exactly, newest first,
 * as a JSON array of export-format objects (*records owned by the caller). */
CVM_EXPORT int cvm_audit_recent(struct cvm_store *s, const char *key_name, const char *operation,
				size_t max, json_t **records, struct cvm_err *err);
