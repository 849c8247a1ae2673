/* SPDX-License-Identifier: Apache-2.0 */
/* http module-private: route table built before the server starts, matched on pre-split
 * segments so a request costs one pass over the path and no allocation. */
#pragma once

#include <opencvm/http.h>

#define CVM_HTTP_MAX_SEGS 32
#define CVM_HTTP_MAX_PARAMS 8

struct cvm_route_seg {
	const char *text; /* literal text or parameter name, NUL-terminated */
	size_t len;
	bool param;
	bool rest;        /* "{name*}": the remainder of the path, slashes included */
};

struct cvm_route {
	char method[16];
	struct cvm_route_seg *segs;
	size_t nseg;
	cvm_http_handler handler;
	void *ctx;
	char *storage;    /* pattern copy the segments point into */
};

struct cvm_router {
	struct cvm_route *routes;
	size_t n, cap;
};

/* A request path split into segments: offsets into the path string. */
struct cvm_path_segs {
	const char *path;
	size_t off[CVM_HTTP_MAX_SEGS];
	size_t len[CVM_HTTP_MAX_SEGS];
	size_t n;
};

struct cvm_http_param {
	const char *name;
	const char *value;
};

int cvm_router_add(struct cvm_router *rt, const char *method, const char *pattern,
		   cvm_http_handler h, void *ctx, struct cvm_err *err);
void cvm_router_free(struct cvm_router *rt);

/* Split "/a/b/c/" into segments (a trailing slash is ignored). -E2BIG when there are more than
 * CVM_HTTP_MAX_SEGS segments. */
int cvm_path_split(const char *path, struct cvm_path_segs *ps);

/* Find the first route matching method and path. On success returns the route and writes the
 * parameter values into `valbuf` (at least strlen(path) + CVM_HTTP_MAX_PARAMS bytes), with
 * params[] pointing into it. Returns NULL when nothing matches; *path_known tells whether some
 * route matched the path with another method (405), and `allow` (may be NULL) lists those
 * methods comma-separated. */
const struct cvm_route *cvm_router_match(const struct cvm_router *rt, const char *method,
					 const struct cvm_path_segs *ps, char *valbuf,
					 struct cvm_http_param *params, size_t *nparams,
					 bool *path_known, char *allow, size_t allowsz);
