/* SPDX-License-Identifier: Apache-2.0 */
/* HTTPS server on libmicrohttpd: epoll worker pool, bodies buffered up to a limit, requests
 * dispatched through the router, Key Vault error bodies for everything the server rejects. */
#include "server.h"

#include <opencvm/json.h>

#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <openssl/bio.h>
#include <openssl/err.h>
#include <openssl/pem.h>
#include <openssl/rand.h>
#include <openssl/x509.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#define DEFAULT_MAX_BODY (1024u * 1024u)
#define DEFAULT_CONN_TIMEOUT_S 60u
/* Floor of the connection (= worker thread) limit: libmicrohttpd's default (FD_SETSIZE - 4),
 * which the epoll pool had, so slow or idle clients need as many sockets as before to crowd
 * others out. See cvm_http_server_start. */
#define MIN_CONNECTIONS 1020u
#define LISTEN_BACKLOG 1024
/* TLS 1.2 and 1.3 only. */
#define TLS_PRIORITIES "NORMAL:-VERS-ALL:+VERS-TLS1.3:+VERS-TLS1.2"

/* MHD hands us its own format strings. */
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wformat-nonliteral"
static void mhd_log(void *cls, const char *fmt, va_list ap)
{
	(void)cls;
	char msg[256];
	vsnprintf(msg, sizeof(msg), fmt, ap);
	size_t n = strlen(msg);
	while (n > 0 && (msg[n - 1] == '\n' || msg[n - 1] == '\r'))
		msg[--n] = 0;
	for (char *q = msg; (q = strchr(q, '"'));)
		*q = '\'';
	/* MHD reports client-side failures (resets, bad handshakes) here; they are routine. */
	cvm_log_debug("http_server", "detail=\"%s\"", msg);
}
#pragma GCC diagnostic pop

/* "127.0.0.1:8443", "[::1]:0", "localhost:80", "*:443" (any IPv4), "[::]:443". */
static int parse_listen(const char *listen, struct sockaddr_storage *ss, socklen_t *len,
			struct cvm_err *err)
{
	if (!listen)
		return cvm_err_badparam(err, "listen: required");
	char host[64];
	const char *port;
	if (listen[0] == '[') {
		const char *end = strchr(listen, ']');
		if (!end || end[1] != ':' || (size_t)(end - listen - 1) >= sizeof(host))
			return cvm_err_badparam(err, "listen: expected \"[ipv6]:port\", got \"%.64s\"",
						listen);
		memcpy(host, listen + 1, (size_t)(end - listen - 1));
		host[end - listen - 1] = 0;
		port = end + 2;
	} else {
		const char *colon = strrchr(listen, ':');
		if (!colon || colon == listen || (size_t)(colon - listen) >= sizeof(host) ||
		    memchr(listen, ':', (size_t)(colon - listen)))
			return cvm_err_badparam(err, "listen: expected \"host:port\", got \"%.64s\"",
						listen);
		memcpy(host, listen, (size_t)(colon - listen));
		host[colon - listen] = 0;
		port = colon + 1;
	}
	int64_t p;
	int r = cvm_parse_i64(port, 0, 65535, &p, "listen port", err);
	if (r < 0)
		return r;
	memset(ss, 0, sizeof(*ss));
	struct sockaddr_in *in4 = (struct sockaddr_in *)ss;
	struct sockaddr_in6 *in6 = (struct sockaddr_in6 *)ss;
	if (strcmp(host, "localhost") == 0)
		snprintf(host, sizeof(host), "127.0.0.1");
	else if (strcmp(host, "*") == 0)
		snprintf(host, sizeof(host), "0.0.0.0");
	if (inet_pton(AF_INET, host, &in4->sin_addr) == 1) {
		in4->sin_family = AF_INET;
		in4->sin_port = htons((uint16_t)p);
		*len = sizeof(*in4);
	} else if (inet_pton(AF_INET6, host, &in6->sin6_addr) == 1) {
		in6->sin6_family = AF_INET6;
		in6->sin6_port = htons((uint16_t)p);
		*len = sizeof(*in6);
	} else {
		return cvm_err_badparam(err, "listen: \"%s\" is not a numeric IP address", host);
	}
	return 0;
}

/* Check the PEM text with OpenSSL first so a bad certificate or key is reported by name
 * instead of as an opaque daemon start failure. */
static int check_tls_material(const char *cert, const char *key, struct cvm_err *err)
{
	if (!cert != !key)
		return cvm_err_badparam(err, "tls: certificate and key must be given together");
	if (!cert)
		return 0;
	BIO *b = BIO_new_mem_buf(cert, -1);
	X509 *x = b ? PEM_read_bio_X509(b, NULL, NULL, NULL) : NULL;
	BIO_free(b);
	if (!x) {
		ERR_clear_error();
		return cvm_err_badparam(err, "tls_cert_pem: not a PEM certificate");
	}
	b = BIO_new_mem_buf(key, -1);
	EVP_PKEY *k = b ? PEM_read_bio_PrivateKey(b, NULL, NULL, NULL) : NULL;
	BIO_free(b);
	int r = 0;
	if (!k)
		r = cvm_err_badparam(err, "tls_key_pem: not a PEM private key");
	else if (X509_check_private_key(x, k) != 1)
		r = cvm_err_badparam(err, "tls_key_pem: does not match the certificate");
	ERR_clear_error();
	EVP_PKEY_free(k);
	X509_free(x);
	return r;
}

int cvm_http_server_new(const struct cvm_http_config *cfg, struct cvm_http_server **out,
			struct cvm_err *err)
{
	*out = NULL;
	struct cvm_http_server *s = calloc(1, sizeof(*s));
	if (!s)
		return cvm_err_nomem(err);
	pthread_mutex_init(&s->id_lock, NULL);
	s->id_used = sizeof(s->id_pool);
	int r = parse_listen(cfg->listen, &s->addr, &s->addrlen, err);
	if (r == 0)
		r = check_tls_material(cfg->tls_cert_pem, cfg->tls_key_pem, err);
	if (r < 0) {
		pthread_mutex_destroy(&s->id_lock);
		free(s);
		return r;
	}
	if (cfg->tls_cert_pem) {
		s->cert_pem = strdup(cfg->tls_cert_pem);
		s->key_len = strlen(cfg->tls_key_pem);
		s->key_pem = malloc(s->key_len + 1);
		if (!s->cert_pem || !s->key_pem) {
			cvm_http_server_free(s);
			return cvm_err_nomem(err);
		}
		memcpy(s->key_pem, cfg->tls_key_pem, s->key_len + 1);
	}
	long ncpu = sysconf(_SC_NPROCESSORS_ONLN);
	s->threads = cfg->threads ? cfg->threads : (unsigned)(ncpu > 0 ? ncpu : 1);
	s->max_body = cfg->max_body ? cfg->max_body : DEFAULT_MAX_BODY;
	s->conn_timeout_s = cfg->conn_timeout_s ? cfg->conn_timeout_s : DEFAULT_CONN_TIMEOUT_S;
	*out = s;
	return 0;
}

int cvm_http_route(struct cvm_http_server *s, const char *method, const char *pattern,
		   cvm_http_handler h, void *ctx, struct cvm_err *err)
{
	/* The table is read without locks by the workers, so it is frozen once they run. */
	if (s->daemon)
		return cvm_err_set(err, EBUSY, "InternalError",
				   "route %s: server already started", pattern);
	return cvm_router_add(&s->router, method, pattern, h, ctx, err);
}

void cvm_http_server_set_hooks(struct cvm_http_server *s, cvm_http_pre_hook pre,
			       cvm_http_post_hook post, void *ctx)
{
	s->pre = pre;
	s->post = post;
	s->hook_ctx = ctx;
}

/* A random (version 4) UUID for a request id, from the server's pool of DRBG output. */
static int request_id(struct cvm_http_server *s, char out[37])
{
	static const char hex[] = "0123456789abcdef";
	uint8_t b[16];
	pthread_mutex_lock(&s->id_lock);
	if (s->id_used + sizeof(b) > sizeof(s->id_pool)) {
		if (RAND_bytes(s->id_pool, sizeof(s->id_pool)) != 1) {
			pthread_mutex_unlock(&s->id_lock);
			ERR_clear_error();
			return -EIO;
		}
		s->id_used = 0;
	}
	memcpy(b, s->id_pool + s->id_used, sizeof(b));
	memset(s->id_pool + s->id_used, 0, sizeof(b));
	s->id_used += sizeof(b);
	pthread_mutex_unlock(&s->id_lock);
	b[6] = (uint8_t)((b[6] & 0x0f) | 0x40);
	b[8] = (uint8_t)((b[8] & 0x3f) | 0x80);
	size_t o = 0;
	for (size_t i = 0; i < sizeof(b); i++) {
		if (i == 4 || i == 6 || i == 8 || i == 10)
			out[o++] = '-';
		out[o++] = hex[b[i] >> 4];
		out[o++] = hex[b[i] & 15];
	}
	out[o] = '\0';
	return 0;
}

static struct cvm_http_req *req_new(struct cvm_http_server *s, struct MHD_Connection *c,
				    const char *url, const char *method)
{
	size_t plen = strlen(url);
	/* path copy + parameter values (disjoint substrings of the path, each NUL-terminated) */
	struct cvm_http_req *r = malloc(sizeof(*r) + 2 * (plen + 1) + CVM_HTTP_MAX_PARAMS);
	if (!r)
		return NULL;
	memset(r, 0, sizeof(*r));
	r->srv = s;
	r->conn = c;
	r->method = method;
	memcpy(r->storage, url, plen + 1);
	r->path = r->storage;
	r->start_ns = cvm_monotonic_ns();
	if (request_id(s, r->id) < 0) {
		free(r);
		return NULL;
	}
	const union MHD_ConnectionInfo *ci =
		MHD_get_connection_info(c, MHD_CONNECTION_INFO_CLIENT_ADDRESS);
	const struct sockaddr *sa = ci ? ci->client_addr : NULL;
	if (sa && sa->sa_family == AF_INET)
		inet_ntop(AF_INET, &((const struct sockaddr_in *)sa)->sin_addr, r->remote,
			  sizeof(r->remote));
	else if (sa && sa->sa_family == AF_INET6)
		inet_ntop(AF_INET6, &((const struct sockaddr_in6 *)sa)->sin6_addr, r->remote,
			  sizeof(r->remote));
	return r;
}

static void on_completed(void *cls, struct MHD_Connection *c, void **con_cls,
			 enum MHD_RequestTerminationCode toe)
{
	(void)cls;
	(void)c;
	(void)toe;
	struct cvm_http_req *r = *con_cls;
	if (!r)
		return;
	cvm_buf_free(&r->body);
	free(r);
	*con_cls = NULL;
}

static enum MHD_Result add_header(struct MHD_Response *mr, const char *name, const char *value)
{
	return MHD_add_response_header(mr, name, value);
}

/* Turn the handler's response into an MHD response and queue it. Headers every response
 * carries: the request id (Key Vault clients log it), no caching, no MIME sniffing. */
static enum MHD_Result send_response(struct cvm_http_req *r, struct cvm_http_resp *resp)
{
	if (resp->status < 100 || resp->status > 599) {
		cvm_log_error("http_bad_status", "request_id=%s status=%d", r->id, resp->status);
		cvm_http_resp_reset(resp);
		cvm_http_resp_error_status(resp, 500, "InternalError", "internal error");
	}
	/* MUST_FREE hands our malloc'd body to MHD instead of copying it once more. */
	struct MHD_Response *mr = MHD_create_response_from_buffer(
		resp->body.len, resp->body.len ? resp->body.data : (void *)"",
		resp->body.len ? MHD_RESPMEM_MUST_FREE : MHD_RESPMEM_PERSISTENT);
	if (!mr) {
		cvm_http_resp_reset(resp);
		return MHD_NO;
	}
	if (resp->body.len)
		resp->body = (struct cvm_buf){0};
	bool ok = add_header(mr, "x-ms-request-id", r->id) == MHD_YES &&
		  add_header(mr, "Cache-Control", "no-cache") == MHD_YES &&
		  add_header(mr, "X-Content-Type-Options", "nosniff") == MHD_YES;
	if (ok && r->srv->cert_pem)
		ok = add_header(mr, "Strict-Transport-Security", "max-age=31536000") == MHD_YES;
	if (ok && resp->content_type[0])
		ok = add_header(mr, "Content-Type", resp->content_type) == MHD_YES;
	const char *client_id = MHD_lookup_connection_value(r->conn, MHD_HEADER_KIND,
							    "x-ms-client-request-id");
	if (ok && client_id && strlen(client_id) <= 128)
		ok = add_header(mr, "x-ms-client-request-id", client_id) == MHD_YES;
	const char *h = (const char *)resp->headers.data;
	for (size_t off = 0; ok && h && off < resp->headers.len;) {
		const char *name = h + off;
		const char *value = name + strlen(name) + 1;
		ok = add_header(mr, name, value) == MHD_YES;
		off = (size_t)(value - h) + strlen(value) + 1;
	}
	int status = resp->status;
	cvm_http_resp_reset(resp);
	enum MHD_Result q = ok ? MHD_queue_response(r->conn, (unsigned)status, mr) : MHD_NO;
	MHD_destroy_response(mr);
	r->responded = true;
	if (r->srv->post)
		r->srv->post(r->srv->hook_ctx, r, status, cvm_monotonic_ns() - r->start_ns);
	return q;
}

static enum MHD_Result send_error(struct cvm_http_req *r, int status, const char *code,
				  const char *msg)
{
	struct cvm_http_resp resp = {0};
	if (cvm_http_resp_error_status(&resp, status, code, "%s", msg) < 0)
		return MHD_NO;
	return send_response(r, &resp);
}

static enum MHD_Result send_too_large(struct cvm_http_req *r)
{
	char msg[64];
	snprintf(msg, sizeof(msg), "body: larger than %zu bytes", r->srv->max_body);
	return send_error(r, 413, "BadParameter", msg);
}

static enum MHD_Result dispatch(struct cvm_http_req *r)
{
	struct cvm_http_server *s = r->srv;
	struct cvm_http_resp resp = {0};
	struct cvm_path_segs ps;
	char allow[128];
	bool path_known = false;
	const struct cvm_route *route = NULL;
	if (cvm_path_split(r->path, &ps) == 0)
		route = cvm_router_match(&s->router, r->method, &ps, r->storage + strlen(r->path) + 1,
					 r->params, &r->nparams, &path_known, allow, sizeof(allow));
	if (s->pre) {
		int hr = s->pre(s->hook_ctx, r, &resp);
		if (hr != 0) {
			if (resp.status == 0) {
				cvm_http_resp_reset(&resp);
				cvm_http_resp_error_status(&resp, 500, "InternalError",
							   "internal error");
			}
			return send_response(r, &resp);
		}
	}
	if (!route) {
		cvm_http_resp_reset(&resp);
		if (!path_known)
			return send_error(r, 404, "NotFound", "no such resource");
		if (cvm_http_resp_error_status(&resp, 405, "MethodNotAllowed",
					       "method %s is not allowed here", r->method) < 0 ||
		    cvm_http_resp_header(&resp, "Allow", allow) < 0) {
			cvm_http_resp_reset(&resp);
			return MHD_NO;
		}
		return send_response(r, &resp);
	}
	int hr = route->handler(route->ctx, r, &resp);
	if (hr < 0 && resp.status == 0) {
		/* The handler failed without saying how; do not leak its partial output. */
		cvm_log_warn("http_handler_failed", "request_id=%s method=%s path=\"%s\" rc=%d", r->id,
			     r->method, r->path, hr);
		cvm_http_resp_reset(&resp);
		return send_error(r, 500, "InternalError", "internal error");
	}
	if (resp.status == 0)
		resp.status = 204;
	return send_response(r, &resp);
}

static enum MHD_Result on_request(void *cls, struct MHD_Connection *c, const char *url,
				  const char *method, const char *version,
				  const char *upload_data, size_t *upload_data_size, void **con_cls)
{
	(void)version;
	struct cvm_http_server *s = cls;
	struct cvm_http_req *r = *con_cls;
	if (!r) {
		r = req_new(s, c, url, method);
		if (!r)
			return MHD_NO;
		*con_cls = r;
		/* Refuse an announced oversize body before reading any of it. */
		const char *cl = MHD_lookup_connection_value(c, MHD_HEADER_KIND, "Content-Length");
		if (cl) {
			char *end;
			errno = 0;
			unsigned long long n = strtoull(cl, &end, 10);
			if (errno == 0 && *end == 0 && n > s->max_body) {
				r->too_large = true;
				return send_too_large(r);
			}
		}
		return MHD_YES;
	}
	if (*upload_data_size) {
		/* Past the limit the rest is read and dropped; the 413 goes out at the end. */
		if (!r->too_large && !r->responded) {
			if (*upload_data_size > s->max_body - r->body.len) {
				r->too_large = true;
				cvm_buf_free(&r->body);
			} else if (cvm_buf_append(&r->body, upload_data, *upload_data_size) < 0) {
				return MHD_NO;
			}
		}
		*upload_data_size = 0;
		return MHD_YES;
	}
	if (r->responded)
		return MHD_YES;
	if (r->too_large)
		return send_too_large(r);
	return dispatch(r);
}

static int open_listener(struct cvm_http_server *s, struct cvm_err *err)
{
	int fd = socket(s->addr.ss_family, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
	if (fd < 0)
		return cvm_err_set(err, errno, "InternalError", "listen: socket: %s",
				   strerror(errno));
	int one = 1;
	if (setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one)) < 0 ||
	    (s->addr.ss_family == AF_INET6 &&
	     setsockopt(fd, IPPROTO_IPV6, IPV6_V6ONLY, &one, sizeof(one)) < 0)) {
		int e = errno;
		close(fd);
		return cvm_err_set(err, e, "InternalError", "listen: setsockopt: %s", strerror(e));
	}
	if (bind(fd, (struct sockaddr *)&s->addr, s->addrlen) < 0 || listen(fd, LISTEN_BACKLOG) < 0) {
		int e = errno;
		close(fd);
		return cvm_err_set(err, e, "InternalError", "listen: cannot bind: %s", strerror(e));
	}
	struct sockaddr_storage bound;
	socklen_t blen = sizeof(bound);
	if (getsockname(fd, (struct sockaddr *)&bound, &blen) < 0) {
		int e = errno;
		close(fd);
		return cvm_err_set(err, e, "InternalError", "listen: getsockname: %s", strerror(e));
	}
	s->port = ntohs(bound.ss_family == AF_INET6 ? ((struct sockaddr_in6 *)&bound)->sin6_port
						     : ((struct sockaddr_in *)&bound)->sin_port);
	return fd;
}

int cvm_http_server_start(struct cvm_http_server *s, struct cvm_err *err)
{
	if (s->daemon)
		return cvm_err_set(err, EBUSY, "InternalError", "http server already started");
	if (s->cert_pem && !MHD_is_feature_supported(MHD_FEATURE_TLS))
		return cvm_err_set(err, ENOTSUP, "InternalError",
				   "libmicrohttpd was built without TLS support");
	int fd = open_listener(s, err);
	if (fd < 0)
		return fd;
	/* Handlers block until their audit record is durable (one group-commit fsync). In a
	 * thread pool every connection is pinned to one worker, so keep-alive connections that
	 * landed on the same worker wait for each other's fsyncs and the group commit sees only a
	 * fraction of the requests in flight. A thread per connection lets every open request
	 * join the next batch: throughput then scales with concurrency. */
	unsigned flags = MHD_USE_INTERNAL_POLLING_THREAD | MHD_USE_THREAD_PER_CONNECTION |
			 MHD_USE_POLL | MHD_USE_TURBO | MHD_USE_ERROR_LOG;
	if (s->cert_pem)
		flags |= MHD_USE_TLS;
	if (s->addr.ss_family == AF_INET6)
		flags |= MHD_USE_IPv6;
	struct MHD_OptionItem opts[10];
	size_t n = 0;
	opts[n++] = (struct MHD_OptionItem){MHD_OPTION_LISTEN_SOCKET, fd, NULL};
	opts[n++] = (struct MHD_OptionItem){MHD_OPTION_NOTIFY_COMPLETED, (intptr_t)on_completed,
					    NULL};
	opts[n++] = (struct MHD_OptionItem){MHD_OPTION_EXTERNAL_LOGGER, (intptr_t)mhd_log, NULL};
	opts[n++] = (struct MHD_OptionItem){MHD_OPTION_CONNECTION_TIMEOUT, s->conn_timeout_s,
					    NULL};
	/* One worker per connection: `threads` bounds the workers, never below MIN_CONNECTIONS;
	 * idle connections end after conn_timeout_s. */
	unsigned max_conns = s->threads > MIN_CONNECTIONS ? s->threads : MIN_CONNECTIONS;
	opts[n++] = (struct MHD_OptionItem){MHD_OPTION_CONNECTION_LIMIT, max_conns, NULL};
	if (s->cert_pem) {
		opts[n++] = (struct MHD_OptionItem){MHD_OPTION_HTTPS_MEM_CERT, 0, s->cert_pem};
		opts[n++] = (struct MHD_OptionItem){MHD_OPTION_HTTPS_MEM_KEY, 0, s->key_pem};
		opts[n++] = (struct MHD_OptionItem){MHD_OPTION_HTTPS_PRIORITIES, 0,
						    (void *)TLS_PRIORITIES};
	}
	opts[n++] = (struct MHD_OptionItem){MHD_OPTION_END, 0, NULL};
	s->daemon = MHD_start_daemon(flags, 0, NULL, NULL, on_request, s, MHD_OPTION_ARRAY, opts,
				     MHD_OPTION_END);
	if (!s->daemon) {
		close(fd);
		return cvm_err_internal(err, "http server on port %d failed to start%s", s->port,
					s->cert_pem ? " (TLS setup rejected)" : "");
	}
	cvm_log_info("http_listen", "port=%d tls=%s max_connections=%u", s->port,
		     s->cert_pem ? "yes" : "no", max_conns);
	return 0;
}

int cvm_http_server_port(const struct cvm_http_server *s)
{
	return s->port;
}

void cvm_http_server_free(struct cvm_http_server *s)
{
	if (!s)
		return;
	if (s->daemon)
		MHD_stop_daemon(s->daemon);
	cvm_router_free(&s->router);
	free(s->cert_pem);
	if (s->key_pem)
		cvm_free_secure(s->key_pem, s->key_len + 1);
	pthread_mutex_destroy(&s->id_lock);
	free(s);
}
