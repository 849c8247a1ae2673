/* SPDX-License-Identifier: Apache-2.0 */
/* REST mapping of the key service, private to rest.c, rest-keys.c, rest-admin.c, rest-domain.c.
 *
 * Every route is one row of a table: method, pattern, the route kind that names its RBAC data
 * action (cvm_hsm_data_action), how its body is parsed, and a handler that only calls the hsm
 * API. rest.c runs the common pipeline around the handler: authenticate, api-version, RBAC,
 * body, handler, audit record, response. */
#pragma once

#include <jansson.h>

#include <opencvm/audit.h>
#include <opencvm/hsm.h>
#include <opencvm/http.h>
#include <opencvm/util.h>

struct rest_call;
typedef int (*rest_fn)(struct rest_call *c, json_t **out, struct cvm_err *err);

enum rest_flags {
	REST_AUTH = 1 << 0,        /* bearer token + RBAC */
	REST_API_VERSION = 1 << 1, /* api-version query parameter required */
	REST_SCOPED = 1 << 2,      /* RBAC route: check the data action at the {scope} */
	REST_KEY_SCOPE = 1 << 3,   /* RBAC target scope is /keys/{name} */
};

struct rest_route {
	const char *method;
	const char *pattern;
	const char *kind;                 /* route kind for cvm_hsm_data_action and audit */
	enum cvm_hsm_rest_body body;
	unsigned flags;
	int status;                       /* success status (200 when 0) */
	rest_fn fn;
	const char *audit_op;             /* audit operation name when it differs from kind */
};

/* Table rows: designated initializers so audit_op may be left out. */
#define ROUTE(m, p, k, b, fl, st, f, ...)                                                    \
	{ .method = (m), .pattern = (p), .kind = (k), .body = (b), .flags = (fl),          \
	  .status = (st), .fn = (f), .audit_op = ROUTE_OP_(0, ##__VA_ARGS__, NULL) }
/* Picks the optional audit-op argument or NULL; a constant expression, as static tables need. */
#define ROUTE_OP_(dummy, op, ...) op

struct cvm_hsm_rest {
	struct cvm_hsm *h;
	struct cvm_audit *audit;
	char *base_url;         /* configured fallback, no trailing slash */
	char *backup_dir;       /* full backups live in folders below it; NULL = refused */
	char tenant[37];
	struct rest_domain *domain; /* security domain activation state (rest-domain.c) */
	size_t nctx;
	struct rest_route_ctx *ctx;
};

struct rest_route_ctx {
	struct cvm_hsm_rest *rest;
	const struct rest_route *route;
};

/* One request as the handlers see it. */
struct rest_call {
	struct cvm_hsm_rest *rest;
	const struct rest_route *route;
	const struct cvm_http_req *req;
	struct cvm_http_resp *resp;
	struct cvm_hsm_caller caller;
	char oid[37];
	char base_url[300];
	const char *api_version;
	const char *scope;       /* RBAC routes: "/", "/keys", "/keys/{name}" */
	char scope_buf[CVM_HSM_NAME_MAX + 16];
	json_t *body;            /* parsed body or NULL */
	int status;              /* handler may override the success status */
	bool raw_response;       /* handler already filled resp completely */
	/* audit detail the handler learns */
	const char *key_name;
	char key_name_buf[CVM_HSM_NAME_MAX + 1];
	char key_version[33];
};

/* Route tables (rest-keys.c, rest-admin.c). */
extern const struct rest_route cvm_hsm_rest_key_routes[];
extern const size_t cvm_hsm_rest_key_routes_n;
extern const struct rest_route cvm_hsm_rest_admin_routes[];
extern const size_t cvm_hsm_rest_admin_routes_n;
/* Security domain routes and their per-process state (rest-domain.c). token_file NULL disables
 * activation over REST; otherwise cvmd writes the activation token there while un-activated. */
extern const struct rest_route cvm_hsm_rest_domain_routes[];
extern const size_t cvm_hsm_rest_domain_routes_n;
struct rest_domain;
int rest_domain_new(struct cvm_hsm *h, const char *token_file, struct rest_domain **out,
		    struct cvm_err *err);
void rest_domain_free(struct rest_domain *d);

/* Security domain request bodies, parsed and shape-checked without touching any state (for the
 * handlers, tests/unit/hsm/test-rest-domain.c and tests/fuzz/hsm/fuzz-rest-domain.c). Errors
 * are 400 BadParameter naming the field. */
#define REST_SD_OFFICERS_MIN 3
#define REST_SD_OFFICERS_MAX 10
#define REST_SD_SHARE_BYTES 384 /* RSA-OAEP-256 ciphertext under the RSA-3072 exchange key */
/* POST /securitydomain/download {"certificates":[...] | {"keys":[...]}, "required"?:M}:
 * officer keys as SPKI PEM (RSA >= 2048, distinct), 3..10 of them, 2 <= quorum <= n. */
struct rest_sd_download {
	char *pems[REST_SD_OFFICERS_MAX];
	size_t n;
	unsigned quorum;
};
int rest_sd_parse_download(const uint8_t *body, size_t len, struct rest_sd_download *out,
			   struct cvm_err *err);
void rest_sd_download_clear(struct rest_sd_download *d);
/* POST /securitydomain/upload {"value": JSON text {"shares":[b64url ciphertext, 2..10],
 * "security_domain"?:{...}}}: the ciphertexts decoded, security_domain a new reference. */
struct rest_sd_upload {
	uint8_t *shares[REST_SD_OFFICERS_MAX];
	size_t n;
	json_t *security_domain;
};
int rest_sd_parse_upload(const uint8_t *body, size_t len, struct rest_sd_upload *out,
			 struct cvm_err *err);
void rest_sd_upload_clear(struct rest_sd_upload *u);

/* Helpers for handlers (rest.c). */
int rest_query_maxresults(struct rest_call *c, int *out, struct cvm_err *err);
/* Remember the version (and, when the route has no {name}, the name) of the kid
 * ("…/keys/name/version") in a result, for the audit record. */
void rest_note_kid(struct rest_call *c, json_t *bundle);
