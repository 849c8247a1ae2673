/* SPDX-License-Identifier: Apache-2.0 */
/* json: a thin typed layer over jansson whose errors name the exact field and expectation.
 *
 * All getters take `obj` (the object holding the field), `field` (the key inside obj) and
 * `path` (the dotted name used in messages, e.g. "attributes.exp"; when NULL, `field` is used).
 * They return 0 or a negative errno (-EINVAL, code "BadParameter") and fill err. JSON null
 * counts as missing. Missing + required -> "<path>: required field is missing". Missing +
 * optional -> 0, outputs untouched except *present=false / *out=NULL where documented. */
#pragma once

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <jansson.h>

#include <opencvm/util.h>

/* Limits applied by cvm_json_parse. Request bodies in Key Vault are small and flat; anything
 * deeper than this is hostile or broken. */
#define CVM_JSON_MAX_DEPTH 32
#define CVM_JSON_MAX_SIZE (4u * 1024u * 1024u)

/* Parse a request body: must be a JSON object (or any value when any_type), depth and size
 * limited; error "body: invalid JSON at line L column C: <reason>" code BadParameter.
 * Empty body -> "body: required JSON body is missing". Duplicate keys are rejected.
 * *out is a new reference. */
CVM_EXPORT int cvm_json_parse(const uint8_t *buf, size_t len, bool any_type, json_t **out,
			      struct cvm_err *err);

/* Typed getters. `path` is the caller's dotted name for messages (e.g. "attributes.exp" when
 * obj is the attributes object and field "exp"); messages read "attributes.exp: expected an
 * integer, got string". Missing + required -> error "X: required field is missing". Missing +
 * optional -> returns 0 and *present=false (present may be NULL). JSON null counts as missing.
 * Returned strings/objects are borrowed from obj. */
CVM_EXPORT int cvm_json_str(json_t *obj, const char *field, const char *path, bool required,
			    const char **out, bool *present, struct cvm_err *err);
CVM_EXPORT int cvm_json_int(json_t *obj, const char *field, const char *path, bool required,
			    int64_t min, int64_t max, int64_t *out, bool *present,
			    struct cvm_err *err);
CVM_EXPORT int cvm_json_bool(json_t *obj, const char *field, const char *path, bool required,
			     bool *out, bool *present, struct cvm_err *err);
/* borrowed, NULL when absent */
CVM_EXPORT int cvm_json_obj(json_t *obj, const char *field, const char *path, bool required,
			    json_t **out, struct cvm_err *err);
CVM_EXPORT int cvm_json_arr(json_t *obj, const char *field, const char *path, bool required,
			    json_t **out, struct cvm_err *err);
/* base64url string (padding accepted) decoded into a malloc'd buffer; *out=NULL, *len=0 when
 * absent. */
CVM_EXPORT int cvm_json_b64url(json_t *obj, const char *field, const char *path, bool required,
			       uint8_t **out, size_t *len, struct cvm_err *err);
/* string must be one of allowed (NULL-terminated list); message lists the allowed values.
 * *out=NULL when absent. */
CVM_EXPORT int cvm_json_enum(json_t *obj, const char *field, const char *path, bool required,
			     const char *const *allowed, const char **out, struct cvm_err *err);
/* array of strings each in allowed (NULL allowed = any string); borrowed, NULL when absent. */
CVM_EXPORT int cvm_json_str_array(json_t *obj, const char *field, const char *path,
				  bool required, const char *const *allowed, json_t **out,
				  struct cvm_err *err);

/* Human name of a JSON value's type for messages: "string", "integer", "object", ... */
CVM_EXPORT const char *cvm_json_type_name(const json_t *v);

/* A JSON string from arbitrary bytes: invalid UTF-8 bytes become '?' (json_string would
 * refuse them). For messages that may quote client input. NULL on ENOMEM. */
CVM_EXPORT json_t *cvm_json_string_lossy(const char *s);

/* Compact serialization, byte for byte json_dumps(v, JSON_COMPACT | JSON_ENCODE_ANY);
 * malloc'd; NULL on ENOMEM (or nesting deeper than 2048). */
CVM_EXPORT char *cvm_json_dump(const json_t *v);
/* The same, appended to out (nothing appended on error): 0, -ENOMEM, -ELOOP too deep. */
CVM_EXPORT int cvm_json_dump_buf(const json_t *v, struct cvm_buf *out);
/* obj[field] = base64url(data) without padding. 0 / -ENOMEM */
CVM_EXPORT int cvm_json_set_b64url(json_t *obj, const char *field, const void *data, size_t len);

/* dotted-path lookup into nested objects ("x-ms-isolation-tee.x-ms-attestation-type"); first
 * tries the whole remaining string as a literal key at each level (claim names may contain
 * dots). Borrowed; NULL when not found. */
CVM_EXPORT json_t *cvm_json_path(json_t *root, const char *dotted);

static inline void cvm_json_decrefp(json_t **p) { if (*p) json_decref(*p); }
#define _cleanup_json_ _cleanup_(cvm_json_decrefp)
