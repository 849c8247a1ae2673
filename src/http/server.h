/* SPDX-License-Identifier: Apache-2.0 */
/* http module-private: the server, request and response structures shared by server.c
 * (daemon, dispatch) and request.c (accessors, response building). */
#pragma once

#include <microhttpd.h>
#include <pthread.h>
#include <sys/socket.h>

#include "router.h"

struct cvm_http_server {
	struct cvm_router router;
	struct MHD_Daemon *daemon;
	char *cert_pem, *key_pem; /* copies that outlive the daemon; key wiped on free */
	size_t key_len;
	struct sockaddr_storage addr;
	socklen_t addrlen;
	int port;
	unsigned threads;
	size_t max_body;
	unsigned conn_timeout_s;
	cvm_http_pre_hook pre;
	cvm_http_post_hook post;
	void *hook_ctx;
	/* Request ids: random bytes drawn from the DRBG a pool at a time (one RAND_bytes per
	 * 256 requests instead of one each), used once each and wiped as they are used. */
	pthread_mutex_t id_lock;
	uint8_t id_pool[4096];
	size_t id_used;             /* bytes of id_pool consumed; sizeof(id_pool) = refill */
};

/* One per request, allocated on the first access-handler call with the path copy and the
 * parameter value buffer in the same allocation. */
struct cvm_http_req {
	struct cvm_http_server *srv;
	struct MHD_Connection *conn;
	const char *method;         /* owned by MHD, valid for the connection's request */
	const char *path;           /* URL-decoded path without the query */
	char id[37];
	char remote[48];
	uint64_t start_ns;
	struct cvm_buf body;
	bool too_large;
	bool responded;
	void *user;
	struct cvm_http_param params[CVM_HTTP_MAX_PARAMS];
	size_t nparams;
	char storage[];             /* path NUL, then parameter values */
};

struct cvm_http_resp {
	int status;                 /* 0 until set */
	struct cvm_buf body;
	char content_type[128];
	struct cvm_buf headers;     /* "name\0value\0" pairs */
};

void cvm_http_resp_reset(struct cvm_http_resp *r);
/* Error body with an explicit status and code (used for 404/405/413/500 from the server). */
int cvm_http_resp_error_status(struct cvm_http_resp *r, int status, const char *code,
			       const char *fmt, ...) CVM_PRINTF(4, 5);
