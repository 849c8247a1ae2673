/* SPDX-License-Identifier: Apache-2.0 */
/* util: errors, cleanup helpers, secrets, byte buffers, encodings, time, files, logging. */
#pragma once

#include <errno.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>

#define CVM_EXPORT __attribute__((visibility("default")))
#define CVM_PRINTF(a, b) __attribute__((format(printf, a, b)))
#define CVM_NODISCARD __attribute__((warn_unused_result))
#define CVM_ARRAY_SIZE(a) (sizeof(a) / sizeof((a)[0]))

/* ---- errors ------------------------------------------------------------------------------
 * Functions return 0 on success or a negative errno-style value, and fill a struct cvm_err.
 * `code` is the Key Vault error code the REST layer returns ("BadParameter", "KeyNotFound",
 * "Forbidden", ...); `msg` names the field and what was expected. The errno value picks the
 * HTTP status (see cvm_err_http_status):
 *   -EINVAL 400, -EACCES 401 (not authenticated), -EPERM 403 (not allowed), -ENOENT 404,
 *   -EEXIST/-EBUSY 409, -E2BIG 413, -ENOTSUP 400 (unsupported algorithm/parameter),
 *   -EBADMSG 400 (signature/auth tag/format check failed), others 500.
 */
struct cvm_err {
	int errnum;       /* positive errno value, 0 when no error */
	char code[48];    /* Key Vault style code */
	char msg[512];    /* human-readable, never contains key material */
};

/* Set the error and return -errnum, so callers can write `return cvm_err_set(...)`. */
CVM_EXPORT int cvm_err_set(struct cvm_err *err, int errnum, const char *code, const char *fmt, ...)
	CVM_PRINTF(4, 5);
/* Prefix an existing message with context: "context: previous message". Returns -errnum. */
CVM_EXPORT int cvm_err_prefix(struct cvm_err *err, const char *fmt, ...) CVM_PRINTF(2, 3);
/* Record the OpenSSL error queue (and clear it) into err with EBADMSG/EIO. Returns -errnum. */
CVM_EXPORT int cvm_err_openssl(struct cvm_err *err, int errnum, const char *what);
/* Change errnum and code, keeping the message (e.g. after cvm_err_prefix). Returns -errnum. */
CVM_EXPORT int cvm_err_set_code(struct cvm_err *err, int errnum, const char *code);
CVM_EXPORT void cvm_err_clear(struct cvm_err *err);
CVM_EXPORT int cvm_err_http_status(const struct cvm_err *err);

/* Shorthands for the common cases. */
#define cvm_err_badparam(err, ...) cvm_err_set((err), EINVAL, "BadParameter", __VA_ARGS__)
#define cvm_err_nomem(err) cvm_err_set((err), ENOMEM, "InternalError", "out of memory")
#define cvm_err_internal(err, ...) cvm_err_set((err), EIO, "InternalError", __VA_ARGS__)

/* ---- cleanup helpers (systemd style) ---------------------------------------------------- */
#define _cleanup_(f) __attribute__((cleanup(f)))
static inline void cvm_freep(void *p) { free(*(void **)p); }
#define _cleanup_free_ _cleanup_(cvm_freep)
/* Give away ownership of a cleanup variable: `return CVM_TAKE(p);`. */
#define CVM_TAKE(p) ({ __typeof__(p) _t = (p); (p) = NULL; _t; })
#define CVM_DEFINE_CLEANUP(type, fn) \
	static inline void fn##p(type **p) { if (*p) fn(*p); }

/* ---- secrets ----------------------------------------------------------------------------
 * Secret bytes live in mlock'd memory, are zeroed on free, compared in constant time.
 * Never log them, never put them in argv or the environment. */
struct cvm_secret {
	uint8_t *data;
	size_t len;
	size_t cap; /* mapped size, page multiple */
};
CVM_EXPORT struct cvm_secret *cvm_secret_new(size_t len);
CVM_EXPORT struct cvm_secret *cvm_secret_from(const void *data, size_t len);
CVM_EXPORT struct cvm_secret *cvm_secret_random(size_t len);
CVM_EXPORT void cvm_secret_free(struct cvm_secret *s);
CVM_EXPORT bool cvm_secret_eq(const struct cvm_secret *a, const void *b, size_t blen);
CVM_DEFINE_CLEANUP(struct cvm_secret, cvm_secret_free)
#define _cleanup_secret_ _cleanup_(cvm_secret_freep)
/* Zero then free a heap buffer of known length (for transient copies of secrets). */
CVM_EXPORT void cvm_free_secure(void *p, size_t len);
/* Constant-time comparison of equal-length buffers. */
CVM_EXPORT bool cvm_memeq_ct(const void *a, const void *b, size_t len);

/* ---- byte buffers ----------------------------------------------------------------------- */
struct cvm_buf {
	uint8_t *data;
	size_t len;
	size_t cap;
};
CVM_EXPORT int cvm_buf_reserve(struct cvm_buf *b, size_t extra);
CVM_EXPORT int cvm_buf_append(struct cvm_buf *b, const void *data, size_t len);
CVM_EXPORT int cvm_buf_append_str(struct cvm_buf *b, const char *s);
CVM_EXPORT int cvm_buf_printf(struct cvm_buf *b, const char *fmt, ...) CVM_PRINTF(2, 3);
/* NUL-terminate without counting the NUL in len; returns data as char*. NULL on ENOMEM. */
CVM_EXPORT char *cvm_buf_cstr(struct cvm_buf *b);
/* Zero (if it held secrets: use cvm_buf_wipe) and free the contents; the struct is reusable. */
CVM_EXPORT void cvm_buf_free(struct cvm_buf *b);
CVM_EXPORT void cvm_buf_wipe(struct cvm_buf *b);
static inline void cvm_buf_freep(struct cvm_buf *b) { cvm_buf_free(b); }
#define _cleanup_buf_ _cleanup_(cvm_buf_freep)

/* ---- encodings --------------------------------------------------------------------------
 * Encoders return a malloc'd NUL-terminated string (NULL on ENOMEM).
 * Decoders return 0 and a malloc'd buffer, or -EINVAL with err naming `what`. */
CVM_EXPORT char *cvm_b64url_encode(const void *data, size_t len);
CVM_EXPORT char *cvm_b64_encode(const void *data, size_t len);
/* Accepts base64url with or without padding (Azure sends both). */
CVM_EXPORT int cvm_b64url_decode(const char *s, size_t slen, uint8_t **out, size_t *outlen,
				 const char *what, struct cvm_err *err);
/* Standard base64 (with or without padding, whitespace ignored). */
CVM_EXPORT int cvm_b64_decode(const char *s, size_t slen, uint8_t **out, size_t *outlen,
			      const char *what, struct cvm_err *err);
CVM_EXPORT char *cvm_hex_encode(const void *data, size_t len);
CVM_EXPORT int cvm_hex_decode(const char *s, size_t slen, uint8_t **out, size_t *outlen,
			      const char *what, struct cvm_err *err);
/* Decode hex into a fixed-size buffer; the string must have exactly 2*len digits. */
CVM_EXPORT int cvm_hex_decode_fixed(const char *s, uint8_t *out, size_t len, const char *what,
				    struct cvm_err *err);

/* ---- randomness and ids ----------------------------------------------------------------- */
CVM_EXPORT int cvm_random(void *buf, size_t len, struct cvm_err *err);
/* 32 lowercase hex chars (Key Vault key version), out must hold 33 bytes. */
CVM_EXPORT int cvm_random_hex32(char out[33], struct cvm_err *err);
/* RFC 4122 version-4 UUID, lowercase, out must hold 37 bytes. */
CVM_EXPORT int cvm_uuid4(char out[37], struct cvm_err *err);

/* ---- time ------------------------------------------------------------------------------- */
CVM_EXPORT int64_t cvm_now(void);            /* Unix seconds, wall clock */
CVM_EXPORT int64_t cvm_now_ms(void);         /* Unix milliseconds, wall clock */
CVM_EXPORT uint64_t cvm_monotonic_ns(void);  /* monotonic clock */
/* ISO 8601 UTC "2026-11-23T12:00:00Z" into out (>= 21 bytes). */
CVM_EXPORT void cvm_time_iso8601(int64_t t, char out[32]);
/* Parse ISO 8601 durations like "P90D", "P1Y2M", "PT12H" into seconds (months = 30 days,
 * years = 365 days, the convention Key Vault rotation policies use). */
CVM_EXPORT int cvm_duration_parse(const char *s, int64_t *seconds, const char *what,
				  struct cvm_err *err);

/* ---- files ------------------------------------------------------------------------------ */
/* Read a whole file, refusing files larger than max bytes. Adds a NUL after the data. */
CVM_EXPORT int cvm_file_read(const char *path, size_t max, uint8_t **out, size_t *outlen,
			     struct cvm_err *err);
/* Write atomically: temp file in the same directory, fsync, rename, fsync directory. */
CVM_EXPORT int cvm_file_write_atomic(const char *path, const void *data, size_t len, int mode,
				     struct cvm_err *err);
CVM_EXPORT int cvm_mkdir_p(const char *path, int mode, struct cvm_err *err);
/* Join path parts into a malloc'd string. */
CVM_EXPORT char *cvm_path_join(const char *a, const char *b);

/* ---- logging ----------------------------------------------------------------------------
 * One line per event: "ts=... level=info event=name k=v k=v". Values are quoted when needed.
 * Never pass key material. The sink is stderr; the level threshold is process-wide config
 * passed at startup (cvm_log_set_level from main only). */
enum cvm_log_level { CVM_LOG_DEBUG, CVM_LOG_INFO, CVM_LOG_WARN, CVM_LOG_ERROR };
CVM_EXPORT void cvm_log_set_level(enum cvm_log_level lvl);
CVM_EXPORT void cvm_log(enum cvm_log_level lvl, const char *event, const char *fmt, ...)
	CVM_PRINTF(3, 4);
#define cvm_log_info(ev, ...) cvm_log(CVM_LOG_INFO, ev, __VA_ARGS__)
#define cvm_log_warn(ev, ...) cvm_log(CVM_LOG_WARN, ev, __VA_ARGS__)
#define cvm_log_error(ev, ...) cvm_log(CVM_LOG_ERROR, ev, __VA_ARGS__)
#define cvm_log_debug(ev, ...) cvm_log(CVM_LOG_DEBUG, ev, __VA_ARGS__)

/* ---- strings ---------------------------------------------------------------------------- */
CVM_EXPORT char *cvm_strdup(const char *s);           /* NULL-safe strdup */
CVM_EXPORT char *cvm_asprintf(const char *fmt, ...) CVM_PRINTF(1, 2);
CVM_EXPORT bool cvm_str_startswith(const char *s, const char *prefix);
/* Parse a decimal int64 with full-string and range checking. */
CVM_EXPORT int cvm_parse_i64(const char *s, int64_t min, int64_t max, int64_t *out,
			     const char *what, struct cvm_err *err);
