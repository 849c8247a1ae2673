/* SPDX-License-Identifier: Apache-2.0 */
/* http: HTTPS server (libmicrohttpd, TLS, router) and HTTPS client (libcurl).
 *
 * Server: routes are registered before start; each request is dispatched on a worker thread to
 * the first route whose method and pattern match. Handlers fill a response; every response
 * carries an `x-ms-request-id` header. Errors use the Key Vault body
 * {"error":{"code":"...","message":"..."}}. */
#pragma once

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <jansson.h>

#include <opencvm/util.h>

struct cvm_http_server;
struct cvm_http_req;
struct cvm_http_resp;

struct cvm_http_config {
	const char *listen;     /* "127.0.0.1:8443", "[::1]:0"; port 0 picks a free port */
	const char *tls_cert_pem, *tls_key_pem; /* PEM text (not paths); NULL = plain HTTP
						 * (tests/internal only) */
	unsigned threads;       /* worker threads; 0 = number of CPUs */
	size_t max_body;        /* larger body -> 413 {"error":{"code":"BadParameter","message":
				 * "body: larger than N bytes"}}; 0 = 1 MiB */
	unsigned conn_timeout_s; /* idle connection timeout; 0 = 60 s */
};

/* A handler fills resp and returns 0 (nothing filled -> 204 No Content; a body without a
 * status -> 200). Returning a negative value after setting a response sends that response;
 * returning a negative value without one sends 500 {"error":{"code":"InternalError",
 * "message":"internal error"}} and logs the return code with the request id. Handlers run on
 * the server's worker threads, concurrently. */
typedef int (*cvm_http_handler)(void *ctx, const struct cvm_http_req *req,
				struct cvm_http_resp *resp);

/* Routes: method + pattern with {name} segments ("/keys/{name}/{version}/wrapkey"); a trailing
 * "{rest*}" matches the remainder incl. slashes. First match wins; no match -> 404 or 405 with
 * Key Vault error JSON. A trailing slash in the request path is ignored. */
CVM_EXPORT int cvm_http_server_new(const struct cvm_http_config *cfg,
				   struct cvm_http_server **out, struct cvm_err *err);
CVM_EXPORT int cvm_http_route(struct cvm_http_server *s, const char *method, const char *pattern,
			      cvm_http_handler h, void *ctx, struct cvm_err *err);

/* Optional hook run before every handler (e.g. to assign a request id / log / authenticate);
 * may be NULL. Returning 0 continues to the handler; returning non-zero skips the handler and
 * sends whatever response the hook set (500 when it set none). The hook also runs for requests
 * that match no route (before the 404/405 is produced). */
typedef int (*cvm_http_pre_hook)(void *ctx, struct cvm_http_req *req, struct cvm_http_resp *resp);
/* Optional hook run after the response is queued (access log, freeing the request's user
 * pointer). status is the HTTP status sent; duration from the first byte of the request. */
typedef void (*cvm_http_post_hook)(void *ctx, const struct cvm_http_req *req, int status,
				   uint64_t duration_ns);
CVM_EXPORT void cvm_http_server_set_hooks(struct cvm_http_server *s, cvm_http_pre_hook pre,
					  cvm_http_post_hook post, void *ctx);

CVM_EXPORT int cvm_http_server_start(struct cvm_http_server *s, struct cvm_err *err);
CVM_EXPORT int cvm_http_server_port(const struct cvm_http_server *s); /* actual bound port */
CVM_EXPORT void cvm_http_server_free(struct cvm_http_server *s);      /* stops and joins */

/* request accessors (all strings NUL-terminated, URL-decoded; valid during the handler) */
CVM_EXPORT const char *cvm_http_req_method(const struct cvm_http_req *r);
CVM_EXPORT const char *cvm_http_req_path(const struct cvm_http_req *r);
/* {name} from the route */
CVM_EXPORT const char *cvm_http_req_param(const struct cvm_http_req *r, const char *name);
CVM_EXPORT const char *cvm_http_req_query(const struct cvm_http_req *r, const char *name);
/* case-insensitive */
CVM_EXPORT const char *cvm_http_req_header(const struct cvm_http_req *r, const char *name);
CVM_EXPORT const uint8_t *cvm_http_req_body(const struct cvm_http_req *r, size_t *len);
CVM_EXPORT const char *cvm_http_req_remote(const struct cvm_http_req *r); /* "127.0.0.1" */
/* per-request uuid, also sent as x-ms-request-id */
CVM_EXPORT const char *cvm_http_req_id(const struct cvm_http_req *r);
/* Opaque per-request pointer for the hooks/handlers (e.g. the authenticated principal).
 * The server never frees it; free it in the post hook. */
CVM_EXPORT void cvm_http_req_set_user(struct cvm_http_req *r, void *user);
CVM_EXPORT void *cvm_http_req_user(const struct cvm_http_req *r);

/* response */
CVM_EXPORT void cvm_http_resp_status(struct cvm_http_resp *r, int status);
CVM_EXPORT int cvm_http_resp_header(struct cvm_http_resp *r, const char *name,
				    const char *value);
/* copies */
CVM_EXPORT int cvm_http_resp_body(struct cvm_http_resp *r, const char *content_type,
				  const void *data, size_t len);
/* steals v (json_decref) */
CVM_EXPORT int cvm_http_resp_json(struct cvm_http_resp *r, int status, json_t *v);
/* Key Vault error body {"error":{"code","message"}}, status from cvm_err_http_status(err) */
CVM_EXPORT int cvm_http_resp_error(struct cvm_http_resp *r, const struct cvm_err *err);

/* client */
struct cvm_http_client_opts {
	const char *ca_file;            /* PEM bundle to trust; NULL = system store */
	bool allow_plain_http_loopback; /* permit http:// to loopback hosts only */
	long timeout_ms;                /* whole-transfer timeout; 0 = 30 s */
	size_t max_response;            /* larger body -> -E2BIG; 0 = 16 MiB */
};
struct cvm_http_result {
	long status;
	struct cvm_buf body;
	char *content_type;
	char *request_id; /* the peer's x-ms-request-id response header, NULL when absent */
};
/* headers: NULL-terminated "Name: value" list (may be NULL). body may be NULL for no body.
 * Returns 0 for any HTTP status (check res->status); negative on transport/TLS/policy error. */
CVM_EXPORT int cvm_http_request(const struct cvm_http_client_opts *o, const char *method,
				const char *url, const char *const *headers, const void *body,
				size_t body_len, struct cvm_http_result *res,
				struct cvm_err *err);
/* URL policy: https required; plain http only when allow_plain_http_loopback and the host is
 * 127.0.0.0/8, ::1 or "localhost"; otherwise -EPERM naming the URL. Helper exposed for
 * others: */
CVM_EXPORT bool cvm_http_url_is_loopback(const char *url);
CVM_EXPORT void cvm_http_result_free(struct cvm_http_result *res);
