/* SPDX-License-Identifier: Apache-2.0 */
/* Server and client together over loopback TLS: routing, parameters, limits, error bodies,
 * keep-alive, concurrency, hooks, and the client's URL policy. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <string.h>
#include <cmocka.h>

#include <opencvm/http.h>
#include <opencvm/json.h>

#include <curl/curl.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <unistd.h>

#include "tls-cert.h"

#define MAX_BODY 1024

struct fx {
	char *cert, *key;
	char ca_path[64];
	struct cvm_http_server *tls, *plain;
	char base[64], plain_base[64];
	atomic_int posts;
	atomic_int last_post_status;
};

/* ---- handlers ---------------------------------------------------------------------------- */

static int h_get_key(void *ctx, const struct cvm_http_req *req, struct cvm_http_resp *resp)
{
	(void)ctx;
	const char *q = cvm_http_req_query(req, "api-version");
	const char *h = cvm_http_req_header(req, "X-Test");
	json_t *v = json_pack("{s:s,s:s,s:s?,s:s?,s:s,s:s,s:s}", "name",
			      cvm_http_req_param(req, "name"), "version",
			      cvm_http_req_param(req, "version"), "api", q, "hdr", h, "remote",
			      cvm_http_req_remote(req), "id", cvm_http_req_id(req), "path",
			      cvm_http_req_path(req));
	if (!v)
		return -ENOMEM;
	return cvm_http_resp_json(resp, 200, v);
}

static int h_wrap(void *ctx, const struct cvm_http_req *req, struct cvm_http_resp *resp)
{
	(void)ctx;
	size_t len;
	const uint8_t *b = cvm_http_req_body(req, &len);
	struct cvm_err err = {0};
	json_t *body = NULL;
	if (cvm_json_parse(b, len, false, &body, &err) < 0)
		return cvm_http_resp_error(resp, &err);
	const char *alg;
	if (cvm_json_str(body, "alg", NULL, true, &alg, NULL, &err) < 0) {
		json_decref(body);
		return cvm_http_resp_error(resp, &err);
	}
	json_t *out = json_pack("{s:s,s:s,s:I}", "kid", cvm_http_req_param(req, "name"), "alg",
				alg, "len", (json_int_t)len);
	json_decref(body);
	return out ? cvm_http_resp_json(resp, 200, out) : -ENOMEM;
}

static int h_raw(void *ctx, const struct cvm_http_req *req, struct cvm_http_resp *resp)
{
	(void)ctx;
	size_t len;
	const uint8_t *b = cvm_http_req_body(req, &len);
	char n[32];
	snprintf(n, sizeof(n), "%zu", len);
	if (cvm_http_resp_header(resp, "X-Body-Len", n) < 0)
		return -EINVAL;
	return cvm_http_resp_body(resp, "application/octet-stream", b, len);
}

static int h_rest(void *ctx, const struct cvm_http_req *req, struct cvm_http_resp *resp)
{
	(void)ctx;
	const char *rest = cvm_http_req_param(req, "rest");
	return cvm_http_resp_body(resp, "text/plain", rest, strlen(rest));
}

static int h_fail(void *ctx, const struct cvm_http_req *req, struct cvm_http_resp *resp)
{
	(void)ctx;
	(void)req;
	/* Partial output must not leak when the handler fails without a status. */
	cvm_http_resp_header(resp, "X-Partial", "yes");
	return -EIO;
}

static int h_not_found(void *ctx, const struct cvm_http_req *req, struct cvm_http_resp *resp)
{
	(void)ctx;
	struct cvm_err err = {0};
	cvm_err_set(&err, ENOENT, "KeyNotFound", "key %s was not found",
		    cvm_http_req_param(req, "name"));
	return cvm_http_resp_error(resp, &err);
}

static int h_delete(void *ctx, const struct cvm_http_req *req, struct cvm_http_resp *resp)
{
	(void)ctx;
	(void)req;
	(void)resp;
	return 0; /* no response set -> 204 */
}

/* Header values that would split the response are refused. */
static int h_bad_header(void *ctx, const struct cvm_http_req *req, struct cvm_http_resp *resp)
{
	(void)ctx;
	(void)req;
	int a = cvm_http_resp_header(resp, "X-Evil", "a\r\nSet-Cookie: x=1");
	int b = cvm_http_resp_header(resp, "Bad Name", "v");
	int c = cvm_http_resp_header(resp, "X-Good", "fine");
	json_t *v = json_pack("{s:i,s:i,s:i}", "evil", a, "badname", b, "good", c);
	return cvm_http_resp_json(resp, 200, v);
}

static int h_big(void *ctx, const struct cvm_http_req *req, struct cvm_http_resp *resp)
{
	(void)ctx;
	(void)req;
	static char big[64 * 1024];
	memset(big, 'x', sizeof(big));
	return cvm_http_resp_body(resp, "text/plain", big, sizeof(big));
}

static int pre_hook(void *ctx, struct cvm_http_req *req, struct cvm_http_resp *resp)
{
	(void)ctx;
	if (cvm_http_req_header(req, "x-deny")) {
		struct cvm_err err = {0};
		cvm_err_set(&err, EACCES, "Unauthorized", "no bearer token");
		cvm_http_resp_error(resp, &err);
		return 1;
	}
	if (cvm_http_req_header(req, "x-hook-fail"))
		return -EIO; /* no response -> 500 */
	return 0;
}

static void post_hook(void *ctx, const struct cvm_http_req *req, int status, uint64_t ns)
{
	struct fx *f = ctx;
	(void)ns;
	if (strcmp(cvm_http_req_method(req), "POST") == 0) {
		atomic_fetch_add(&f->posts, 1);
		atomic_store(&f->last_post_status, status);
	}
}

/* ---- fixture ----------------------------------------------------------------------------- */

static int add_routes(struct cvm_http_server *s)
{
	struct cvm_err err = {0};
	struct {
		const char *m, *p;
		cvm_http_handler h;
	} routes[] = {
		{"GET", "/keys/{name}/{version}", h_get_key},
		{"POST", "/keys/{name}/{version}/wrapkey", h_wrap},
		{"POST", "/raw", h_raw},
		{"GET", "/files/{rest*}", h_rest},
		{"GET", "/fail", h_fail},
		{"GET", "/deletedkeys/{name}", h_not_found},
		{"DELETE", "/keys/{name}", h_delete},
		{"GET", "/badheader", h_bad_header},
		{"GET", "/big", h_big},
	};
	for (size_t i = 0; i < CVM_ARRAY_SIZE(routes); i++)
		if (cvm_http_route(s, routes[i].m, routes[i].p, routes[i].h, NULL, &err) < 0)
			return -1;
	return 0;
}

static int setup(void **state)
{
	struct fx *f = calloc(1, sizeof(*f));
	if (!f || tls_make_cert("opencvm-test", &f->cert, &f->key) < 0)
		return -1;
	snprintf(f->ca_path, sizeof(f->ca_path), "/tmp/cvm-test-ca-XXXXXX");
	int fd = mkstemp(f->ca_path);
	if (fd < 0 || write(fd, f->cert, strlen(f->cert)) != (ssize_t)strlen(f->cert))
		return -1;
	close(fd);
	struct cvm_err err = {0};
	struct cvm_http_config tls = {.listen = "127.0.0.1:0", .tls_cert_pem = f->cert,
				      .tls_key_pem = f->key, .threads = 4, .max_body = MAX_BODY};
	struct cvm_http_config plain = {.listen = "127.0.0.1:0", .threads = 1,
					.max_body = MAX_BODY};
	if (cvm_http_server_new(&tls, &f->tls, &err) < 0 || add_routes(f->tls) < 0 ||
	    cvm_http_server_new(&plain, &f->plain, &err) < 0 || add_routes(f->plain) < 0) {
		fprintf(stderr, "setup: %s\n", err.msg);
		return -1;
	}
	cvm_http_server_set_hooks(f->tls, pre_hook, post_hook, f);
	if (cvm_http_server_start(f->tls, &err) < 0 || cvm_http_server_start(f->plain, &err) < 0) {
		fprintf(stderr, "start: %s\n", err.msg);
		return -1;
	}
	snprintf(f->base, sizeof(f->base), "https://127.0.0.1:%d", cvm_http_server_port(f->tls));
	snprintf(f->plain_base, sizeof(f->plain_base), "http://127.0.0.1:%d",
		 cvm_http_server_port(f->plain));
	*state = f;
	return 0;
}

static int teardown(void **state)
{
	struct fx *f = *state;
	cvm_http_server_free(f->tls);
	cvm_http_server_free(f->plain);
	unlink(f->ca_path);
	free(f->cert);
	free(f->key);
	free(f);
	return 0;
}

static int req(struct fx *f, const char *method, const char *path, const char *const *hdrs,
	       const void *body, size_t len, struct cvm_http_result *res, struct cvm_err *err)
{
	struct cvm_http_client_opts o = {.ca_file = f->ca_path, .timeout_ms = 10000};
	char url[256];
	snprintf(url, sizeof(url), "%s%s", f->base, path);
	return cvm_http_request(&o, method, url, hdrs, body, len, res, err);
}

static json_t *body_json(struct cvm_http_result *res)
{
	json_t *v = NULL;
	struct cvm_err err = {0};
	assert_int_equal(cvm_json_parse(res->body.data, res->body.len, false, &v, &err), 0);
	return v;
}

static void assert_error_body(struct cvm_http_result *res, const char *code, const char *msg)
{
	json_t *v = body_json(res);
	json_t *e = json_object_get(v, "error");
	assert_non_null(e);
	assert_string_equal(json_string_value(json_object_get(e, "code")), code);
	assert_non_null(strstr(json_string_value(json_object_get(e, "message")), msg));
	json_decref(v);
}

/* ---- tests ------------------------------------------------------------------------------- */

static void test_params_query_headers(void **state)
{
	struct fx *f = *state;
	struct cvm_http_result res;
	struct cvm_err err = {0};
	const char *hdrs[] = {"X-Test: hello", NULL};
	assert_int_equal(req(f, "GET", "/keys/my-key/abc123?api-version=7.4&x=%2Fy", hdrs, NULL, 0,
			     &res, &err), 0);
	assert_int_equal(res.status, 200);
	assert_string_equal(res.content_type, "application/json; charset=utf-8");
	json_t *v = body_json(&res);
	assert_string_equal(json_string_value(json_object_get(v, "name")), "my-key");
	assert_string_equal(json_string_value(json_object_get(v, "version")), "abc123");
	assert_string_equal(json_string_value(json_object_get(v, "api")), "7.4");
	assert_string_equal(json_string_value(json_object_get(v, "hdr")), "hello");
	assert_string_equal(json_string_value(json_object_get(v, "remote")), "127.0.0.1");
	assert_string_equal(json_string_value(json_object_get(v, "path")), "/keys/my-key/abc123");
	/* the id the handler saw is the one sent in x-ms-request-id */
	assert_non_null(res.request_id);
	assert_int_equal(strlen(res.request_id), 36);
	assert_string_equal(json_string_value(json_object_get(v, "id")), res.request_id);
	json_decref(v);
	char first_id[37];
	snprintf(first_id, sizeof(first_id), "%s", res.request_id);
	cvm_http_result_free(&res);

	/* absent query/header come back as NULL; ids differ per request; URL decoding and a
	 * trailing slash are handled */
	assert_int_equal(req(f, "GET", "/keys/a%20b/v1/", NULL, NULL, 0, &res, &err), 0);
	assert_int_equal(res.status, 200);
	v = body_json(&res);
	assert_string_equal(json_string_value(json_object_get(v, "name")), "a b");
	assert_true(json_is_null(json_object_get(v, "api")));
	assert_true(json_is_null(json_object_get(v, "hdr")));
	assert_string_not_equal(res.request_id, first_id);
	json_decref(v);
	cvm_http_result_free(&res);
}

static void test_not_found_and_method(void **state)
{
	struct fx *f = *state;
	struct cvm_http_result res;
	struct cvm_err err = {0};
	assert_int_equal(req(f, "GET", "/nothing/here", NULL, NULL, 0, &res, &err), 0);
	assert_int_equal(res.status, 404);
	assert_string_equal(res.content_type, "application/json; charset=utf-8");
	assert_error_body(&res, "NotFound", "no such resource");
	assert_non_null(res.request_id);
	cvm_http_result_free(&res);
	/* one segment too many or too few is not a match either */
	assert_int_equal(req(f, "GET", "/keys/a/b/c/d", NULL, NULL, 0, &res, &err), 0);
	assert_int_equal(res.status, 404);
	cvm_http_result_free(&res);
	assert_int_equal(req(f, "PUT", "/keys/a/b", NULL, "{}", 2, &res, &err), 0);
	assert_int_equal(res.status, 405);
	assert_error_body(&res, "MethodNotAllowed", "PUT");
	cvm_http_result_free(&res);
	/* literal segments match case-insensitively */
	assert_int_equal(req(f, "GET", "/KEYS/a/b", NULL, NULL, 0, &res, &err), 0);
	assert_int_equal(res.status, 200);
	cvm_http_result_free(&res);
}

static void test_rest_param(void **state)
{
	struct fx *f = *state;
	struct cvm_http_result res;
	struct cvm_err err = {0};
	assert_int_equal(req(f, "GET", "/files/a/b/c.txt", NULL, NULL, 0, &res, &err), 0);
	assert_int_equal(res.status, 200);
	assert_int_equal(res.body.len, strlen("a/b/c.txt"));
	assert_memory_equal(res.body.data, "a/b/c.txt", res.body.len);
	assert_string_equal(res.content_type, "text/plain");
	cvm_http_result_free(&res);
	assert_int_equal(req(f, "GET", "/files", NULL, NULL, 0, &res, &err), 0);
	assert_int_equal(res.status, 200);
	assert_int_equal(res.body.len, 0);
	cvm_http_result_free(&res);
}

static void test_post_body_and_errors(void **state)
{
	struct fx *f = *state;
	struct cvm_http_result res;
	struct cvm_err err = {0};
	const char *body = "{\"alg\":\"RSA-OAEP-256\",\"value\":\"AAAA\"}";
	const char *hdrs[] = {"Content-Type: application/json", NULL};
	int before = atomic_load(&f->posts);
	assert_int_equal(req(f, "POST", "/keys/k1/v1/wrapkey", hdrs, body, strlen(body), &res, &err),
			 0);
	assert_int_equal(res.status, 200);
	json_t *v = body_json(&res);
	assert_string_equal(json_string_value(json_object_get(v, "kid")), "k1");
	assert_string_equal(json_string_value(json_object_get(v, "alg")), "RSA-OAEP-256");
	assert_int_equal(json_integer_value(json_object_get(v, "len")), strlen(body));
	json_decref(v);
	cvm_http_result_free(&res);
	assert_int_equal(atomic_load(&f->posts), before + 1);
	assert_int_equal(atomic_load(&f->last_post_status), 200);

	/* the handler's field-precise error reaches the client as a Key Vault body */
	const char *bad = "{\"alg\":5}";
	assert_int_equal(req(f, "POST", "/keys/k1/v1/wrapkey", hdrs, bad, strlen(bad), &res, &err),
			 0);
	assert_int_equal(res.status, 400);
	assert_error_body(&res, "BadParameter", "alg: expected a string, got integer");
	cvm_http_result_free(&res);
	assert_int_equal(atomic_load(&f->last_post_status), 400);

	const char *broken = "{\"alg\":";
	assert_int_equal(req(f, "POST", "/keys/k1/v1/wrapkey", hdrs, broken, strlen(broken), &res,
			     &err), 0);
	assert_int_equal(res.status, 400);
	assert_error_body(&res, "BadParameter", "body: invalid JSON at line 1");
	cvm_http_result_free(&res);
}

static void test_body_limit(void **state)
{
	struct fx *f = *state;
	struct cvm_http_result res;
	struct cvm_err err = {0};
	uint8_t *buf = malloc(4 * MAX_BODY);
	assert_non_null(buf);
	for (size_t i = 0; i < 4 * MAX_BODY; i++)
		buf[i] = (uint8_t)i;
	/* exactly at the limit: accepted and echoed byte for byte */
	assert_int_equal(req(f, "POST", "/raw", NULL, buf, MAX_BODY, &res, &err), 0);
	assert_int_equal(res.status, 200);
	assert_int_equal(res.body.len, MAX_BODY);
	assert_memory_equal(res.body.data, buf, MAX_BODY);
	cvm_http_result_free(&res);
	/* one byte over, announced by Content-Length: 413 */
	assert_int_equal(req(f, "POST", "/raw", NULL, buf, MAX_BODY + 1, &res, &err), 0);
	assert_int_equal(res.status, 413);
	assert_error_body(&res, "BadParameter", "body: larger than 1024 bytes");
	cvm_http_result_free(&res);
	/* chunked upload without Content-Length that grows past the limit: 413 at the end */
	const char *chunked[] = {"Transfer-Encoding: chunked", NULL};
	assert_int_equal(req(f, "POST", "/raw", chunked, buf, 4 * MAX_BODY, &res, &err), 0);
	assert_int_equal(res.status, 413);
	assert_error_body(&res, "BadParameter", "body: larger than 1024 bytes");
	cvm_http_result_free(&res);
	/* the same chunked upload under the limit goes through */
	assert_int_equal(req(f, "POST", "/raw", chunked, buf, 100, &res, &err), 0);
	assert_int_equal(res.status, 200);
	assert_int_equal(res.body.len, 100);
	cvm_http_result_free(&res);
	free(buf);
}

static void test_handler_failures(void **state)
{
	struct fx *f = *state;
	struct cvm_http_result res;
	struct cvm_err err = {0};
	assert_int_equal(req(f, "GET", "/fail", NULL, NULL, 0, &res, &err), 0);
	assert_int_equal(res.status, 500);
	assert_error_body(&res, "InternalError", "internal error");
	cvm_http_result_free(&res);
	assert_int_equal(req(f, "GET", "/deletedkeys/gone", NULL, NULL, 0, &res, &err), 0);
	assert_int_equal(res.status, 404);
	assert_error_body(&res, "KeyNotFound", "key gone was not found");
	cvm_http_result_free(&res);
	assert_int_equal(req(f, "DELETE", "/keys/x", NULL, NULL, 0, &res, &err), 0);
	assert_int_equal(res.status, 204);
	assert_int_equal(res.body.len, 0);
	cvm_http_result_free(&res);
	assert_int_equal(req(f, "GET", "/badheader", NULL, NULL, 0, &res, &err), 0);
	assert_int_equal(res.status, 200);
	json_t *v = body_json(&res);
	assert_int_equal(json_integer_value(json_object_get(v, "evil")), -EINVAL);
	assert_int_equal(json_integer_value(json_object_get(v, "badname")), -EINVAL);
	assert_int_equal(json_integer_value(json_object_get(v, "good")), 0);
	json_decref(v);
	cvm_http_result_free(&res);
}

static void test_hooks(void **state)
{
	struct fx *f = *state;
	struct cvm_http_result res;
	struct cvm_err err = {0};
	const char *deny[] = {"x-deny: 1", NULL};
	assert_int_equal(req(f, "GET", "/keys/a/b", deny, NULL, 0, &res, &err), 0);
	assert_int_equal(res.status, 401);
	assert_error_body(&res, "Unauthorized", "no bearer token");
	cvm_http_result_free(&res);
	/* the pre hook runs for unknown paths too */
	assert_int_equal(req(f, "GET", "/unknown", deny, NULL, 0, &res, &err), 0);
	assert_int_equal(res.status, 401);
	cvm_http_result_free(&res);
	const char *fail[] = {"x-hook-fail: 1", NULL};
	assert_int_equal(req(f, "GET", "/keys/a/b", fail, NULL, 0, &res, &err), 0);
	assert_int_equal(res.status, 500);
	cvm_http_result_free(&res);
}

/* One connection, many requests: the server keeps the connection alive. */
static void test_keep_alive(void **state)
{
	struct fx *f = *state;
	CURL *c = curl_easy_init();
	assert_non_null(c);
	char url[128];
	snprintf(url, sizeof(url), "%s/keys/ka/v", f->base);
	FILE *null = fopen("/dev/null", "w");
	assert_non_null(null);
	curl_easy_setopt(c, CURLOPT_URL, url);
	curl_easy_setopt(c, CURLOPT_CAINFO, f->ca_path);
	curl_easy_setopt(c, CURLOPT_NOSIGNAL, 1L);
	curl_easy_setopt(c, CURLOPT_WRITEDATA, null);
	long connects = 0;
	for (int i = 0; i < 200; i++) {
		assert_int_equal(curl_easy_perform(c), CURLE_OK);
		long status = 0, n = 0;
		curl_easy_getinfo(c, CURLINFO_RESPONSE_CODE, &status);
		curl_easy_getinfo(c, CURLINFO_NUM_CONNECTS, &n);
		assert_int_equal(status, 200);
		connects += n;
	}
	assert_int_equal(connects, 1);
	/* a 413 announced up front closes the connection (the body was never read), so the next
	 * request needs a new one */
	char big[MAX_BODY + 10];
	memset(big, 'a', sizeof(big));
	snprintf(url, sizeof(url), "%s/raw", f->base);
	curl_easy_setopt(c, CURLOPT_URL, url);
	curl_easy_setopt(c, CURLOPT_POSTFIELDS, big);
	curl_easy_setopt(c, CURLOPT_POSTFIELDSIZE, (long)sizeof(big));
	assert_int_equal(curl_easy_perform(c), CURLE_OK);
	long status = 0;
	curl_easy_getinfo(c, CURLINFO_RESPONSE_CODE, &status);
	assert_int_equal(status, 413);
	/* the unread body must not be parsed as the next request on the same connection */
	snprintf(url, sizeof(url), "%s/keys/after/v", f->base);
	curl_easy_setopt(c, CURLOPT_URL, url);
	curl_easy_setopt(c, CURLOPT_HTTPGET, 1L);
	assert_int_equal(curl_easy_perform(c), CURLE_OK);
	long n = 0;
	curl_easy_getinfo(c, CURLINFO_RESPONSE_CODE, &status);
	curl_easy_getinfo(c, CURLINFO_NUM_CONNECTS, &n);
	assert_int_equal(status, 200);
	assert_int_equal(n, 1);
	fclose(null);
	curl_easy_cleanup(c);
}

struct worker {
	struct fx *f;
	int id;
	int ok;
};

static void *worker_main(void *arg)
{
	struct worker *w = arg;
	for (int i = 0; i < 40; i++) {
		char path[64], name[32];
		snprintf(name, sizeof(name), "t%d-%d", w->id, i);
		snprintf(path, sizeof(path), "/keys/%s/v", name);
		struct cvm_http_result res;
		struct cvm_err err = {0};
		if (req(w->f, "GET", path, NULL, NULL, 0, &res, &err) < 0)
			continue;
		json_t *v = NULL;
		if (res.status == 200 &&
		    cvm_json_parse(res.body.data, res.body.len, false, &v, &err) == 0 &&
		    strcmp(json_string_value(json_object_get(v, "name")), name) == 0)
			w->ok++;
		json_decref(v);
		cvm_http_result_free(&res);
	}
	return NULL;
}

static void test_concurrent_clients(void **state)
{
	struct fx *f = *state;
	pthread_t t[8];
	struct worker w[8];
	for (int i = 0; i < 8; i++) {
		w[i] = (struct worker){.f = f, .id = i};
		assert_int_equal(pthread_create(&t[i], NULL, worker_main, &w[i]), 0);
	}
	for (int i = 0; i < 8; i++) {
		assert_int_equal(pthread_join(t[i], NULL), 0);
		assert_int_equal(w[i].ok, 40);
	}
}

static void test_client_tls_verification(void **state)
{
	struct fx *f = *state;
	struct cvm_http_result res;
	struct cvm_err err = {0};
	/* without our CA the self-signed server is refused */
	struct cvm_http_client_opts sys = {.timeout_ms = 5000};
	char url[128];
	snprintf(url, sizeof(url), "%s/keys/a/b", f->base);
	assert_int_equal(cvm_http_request(&sys, "GET", url, NULL, NULL, 0, &res, &err),
			 -ECONNREFUSED);
	assert_non_null(strstr(err.msg, url));
	assert_int_equal(res.status, 0);
	/* with it, accepted */
	struct cvm_http_client_opts ok = {.ca_file = f->ca_path};
	assert_int_equal(cvm_http_request(&ok, "GET", url, NULL, NULL, 0, &res, &err), 0);
	assert_int_equal(res.status, 200);
	cvm_http_result_free(&res);
	/* https to a plain-HTTP server fails the handshake */
	snprintf(url, sizeof(url), "https://127.0.0.1:%d/keys/a/b", cvm_http_server_port(f->plain));
	assert_true(cvm_http_request(&ok, "GET", url, NULL, NULL, 0, &res, &err) < 0);
}

static void test_client_url_policy(void **state)
{
	struct fx *f = *state;
	struct cvm_http_result res;
	struct cvm_err err = {0};
	struct cvm_http_client_opts allow = {.allow_plain_http_loopback = true, .timeout_ms = 5000};
	struct cvm_http_client_opts deny = {.timeout_ms = 5000};
	char url[128];
	snprintf(url, sizeof(url), "%s/keys/p/v", f->plain_base);
	assert_int_equal(cvm_http_request(&allow, "GET", url, NULL, NULL, 0, &res, &err), 0);
	assert_int_equal(res.status, 200);
	cvm_http_result_free(&res);
	/* same URL without the opt-in */
	assert_int_equal(cvm_http_request(&deny, "GET", url, NULL, NULL, 0, &res, &err), -EPERM);
	assert_non_null(strstr(err.msg, url));
	assert_string_equal(err.code, "Forbidden");
	/* plain http to non-loopback hosts is refused before any connection is attempted */
	const char *refused[] = {"http://10.0.0.1/x", "http://example.com/", "http://128.0.0.1/",
				 "http://localhost.example.com/", "ftp://127.0.0.1/",
				 "file:///etc/passwd"};
	for (size_t i = 0; i < CVM_ARRAY_SIZE(refused); i++) {
		assert_int_equal(cvm_http_request(&allow, "GET", refused[i], NULL, NULL, 0, &res,
						  &err), -EPERM);
		assert_non_null(strstr(err.msg, refused[i]));
	}
	assert_int_equal(cvm_http_request(&allow, "GET", "not a url", NULL, NULL, 0, &res, &err),
			 -EINVAL);
	/* response size limit */
	struct cvm_http_client_opts small = {.allow_plain_http_loopback = true, .max_response = 1000};
	snprintf(url, sizeof(url), "%s/big", f->plain_base);
	assert_int_equal(cvm_http_request(&small, "GET", url, NULL, NULL, 0, &res, &err), -E2BIG);
	assert_int_equal(res.body.len, 0);
	small.max_response = 64 * 1024;
	assert_int_equal(cvm_http_request(&small, "GET", url, NULL, NULL, 0, &res, &err), 0);
	assert_int_equal(res.body.len, 64 * 1024);
	cvm_http_result_free(&res);
	/* nothing listens on the port after a server is gone: connection refused */
	struct cvm_http_server *s = NULL;
	struct cvm_http_config cfg = {.listen = "127.0.0.1:0", .threads = 1};
	assert_int_equal(cvm_http_server_new(&cfg, &s, &err), 0);
	assert_int_equal(cvm_http_server_start(s, &err), 0);
	snprintf(url, sizeof(url), "http://127.0.0.1:%d/", cvm_http_server_port(s));
	cvm_http_server_free(s);
	assert_int_equal(cvm_http_request(&allow, "GET", url, NULL, NULL, 0, &res, &err),
			 -ECONNREFUSED);
}

static void test_url_is_loopback(void **state)
{
	(void)state;
	const char *yes[] = {"http://127.0.0.1/", "https://127.1.2.3:8443/x", "http://[::1]:80/",
			     "http://localhost/", "http://LOCALHOST:1/", "http://[::ffff:127.0.0.1]/"};
	const char *no[] = {"http://128.0.0.1/", "http://10.0.0.1/", "http://[::2]/",
			    "http://localhost.evil.example/", "http://127.0.0.1.example/",
			    "nonsense", "http://[::ffff:10.0.0.1]/"};
	for (size_t i = 0; i < CVM_ARRAY_SIZE(yes); i++)
		assert_true(cvm_http_url_is_loopback(yes[i]));
	for (size_t i = 0; i < CVM_ARRAY_SIZE(no); i++)
		assert_false(cvm_http_url_is_loopback(no[i]));
	assert_false(cvm_http_url_is_loopback(NULL));
}

static void test_server_config_errors(void **state)
{
	struct fx *f = *state;
	struct cvm_err err = {0};
	struct cvm_http_server *s = NULL;
	const char *bad_listen[] = {"127.0.0.1", "127.0.0.1:99999", "::1:80", "[::1]80",
				    "host.example:80", "127.0.0.1:x", ":80"};
	for (size_t i = 0; i < CVM_ARRAY_SIZE(bad_listen); i++) {
		struct cvm_http_config c = {.listen = bad_listen[i]};
		assert_int_equal(cvm_http_server_new(&c, &s, &err), -EINVAL);
		assert_null(s);
	}
	/* cert without key, garbage cert, key that does not match */
	struct cvm_http_config c = {.listen = "127.0.0.1:0", .tls_cert_pem = f->cert};
	assert_int_equal(cvm_http_server_new(&c, &s, &err), -EINVAL);
	c.tls_key_pem = f->key;
	c.tls_cert_pem = "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n";
	assert_int_equal(cvm_http_server_new(&c, &s, &err), -EINVAL);
	assert_non_null(strstr(err.msg, "tls_cert_pem"));
	char *other_cert, *other_key;
	assert_int_equal(tls_make_cert("other", &other_cert, &other_key), 0);
	c.tls_cert_pem = other_cert;
	assert_int_equal(cvm_http_server_new(&c, &s, &err), -EINVAL);
	assert_non_null(strstr(err.msg, "does not match"));
	free(other_cert);
	free(other_key);
	/* the port is taken: start fails and says so */
	char busy[32];
	snprintf(busy, sizeof(busy), "127.0.0.1:%d", cvm_http_server_port(f->tls));
	struct cvm_http_config b = {.listen = busy, .threads = 1};
	assert_int_equal(cvm_http_server_new(&b, &s, &err), 0);
	assert_int_equal(cvm_http_server_start(s, &err), -EADDRINUSE);
	assert_non_null(strstr(err.msg, "cannot bind"));
	cvm_http_server_free(s);
	/* routes cannot be added to a running server; bad patterns are refused */
	assert_int_equal(cvm_http_route(f->tls, "GET", "/late", h_delete, NULL, &err), -EBUSY);
	struct cvm_http_config p = {.listen = "[::1]:0", .threads = 1};
	assert_int_equal(cvm_http_server_new(&p, &s, &err), 0);
	assert_int_equal(cvm_http_route(s, "GET", "keys", h_delete, NULL, &err), -EINVAL);
	assert_int_equal(cvm_http_route(s, "get", "/keys", h_delete, NULL, &err), -EINVAL);
	assert_int_equal(cvm_http_route(s, "GET", "/ok/{name}", h_delete, NULL, &err), 0);
	/* IPv6 loopback works as well */
	assert_int_equal(cvm_http_server_start(s, &err), 0);
	char url[64];
	snprintf(url, sizeof(url), "http://[::1]:%d/ok/z", cvm_http_server_port(s));
	struct cvm_http_client_opts allow = {.allow_plain_http_loopback = true};
	struct cvm_http_result res;
	assert_int_equal(cvm_http_request(&allow, "DELETE", url, NULL, NULL, 0, &res, &err), 0);
	assert_int_equal(res.status, 405);
	cvm_http_result_free(&res);
	assert_int_equal(cvm_http_request(&allow, "GET", url, NULL, NULL, 0, &res, &err), 0);
	assert_int_equal(res.status, 204);
	cvm_http_result_free(&res);
	cvm_http_server_free(s);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_params_query_headers),
		cmocka_unit_test(test_not_found_and_method),
		cmocka_unit_test(test_rest_param),
		cmocka_unit_test(test_post_body_and_errors),
		cmocka_unit_test(test_body_limit),
		cmocka_unit_test(test_handler_failures),
		cmocka_unit_test(test_hooks),
		cmocka_unit_test(test_keep_alive),
		cmocka_unit_test(test_concurrent_clients),
		cmocka_unit_test(test_client_tls_verification),
		cmocka_unit_test(test_client_url_policy),
		cmocka_unit_test(test_url_is_loopback),
		cmocka_unit_test(test_server_config_errors),
	};
	return cmocka_run_group_tests(tests, setup, teardown);
}
