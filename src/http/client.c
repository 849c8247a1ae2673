/* SPDX-License-Identifier: Apache-2.0 */
/* HTTPS client on libcurl. Plain HTTP is allowed only to loopback and only when the caller
 * asks for it; redirects are never followed, so a server cannot move a request to a URL the
 * policy would have refused. */
#include <opencvm/http.h>

#include <arpa/inet.h>
#include <curl/curl.h>
#include <netinet/in.h>
#include <stdio.h>
#include <string.h>
#include <strings.h>

#define DEFAULT_TIMEOUT_MS 30000L
#define DEFAULT_MAX_RESPONSE (16u * 1024u * 1024u)

static bool host_is_loopback(const char *host)
{
	if (strcasecmp(host, "localhost") == 0)
		return true;
	char h[64];
	size_t n = strlen(host);
	if (n >= sizeof(h))
		return false;
	/* CURLU gives IPv6 hosts in brackets, possibly with a zone id. */
	if (host[0] == '[' && n > 2 && host[n - 1] == ']') {
		memcpy(h, host + 1, n - 2);
		h[n - 2] = 0;
		char *zone = strchr(h, '%');
		if (zone)
			*zone = 0;
	} else {
		memcpy(h, host, n + 1);
	}
	struct in_addr a4;
	if (inet_pton(AF_INET, h, &a4) == 1)
		return (ntohl(a4.s_addr) >> 24) == 127;
	struct in6_addr a6;
	if (inet_pton(AF_INET6, h, &a6) == 1)
		return IN6_IS_ADDR_LOOPBACK(&a6) || (IN6_IS_ADDR_V4MAPPED(&a6) && a6.s6_addr[12] == 127);
	return false;
}

/* Scheme and host of url (host NULL when the URL has none, e.g. file:///x); both released
 * with curl_free. */
static int split_url(const char *url, char **scheme, char **host)
{
	*scheme = *host = NULL;
	CURLU *u = curl_url();
	if (!u)
		return -ENOMEM;
	int r = 0;
	if (curl_url_set(u, CURLUPART_URL, url, 0) != CURLUE_OK ||
	    curl_url_get(u, CURLUPART_SCHEME, scheme, 0) != CURLUE_OK)
		r = -EINVAL;
	else if (curl_url_get(u, CURLUPART_HOST, host, 0) != CURLUE_OK)
		*host = NULL;
	curl_url_cleanup(u);
	return r;
}

bool cvm_http_url_is_loopback(const char *url)
{
	char *scheme, *host;
	if (!url || split_url(url, &scheme, &host) < 0)
		return false;
	bool lo = host && host_is_loopback(host);
	curl_free(scheme);
	curl_free(host);
	return lo;
}

/* Enforce the URL policy; *loopback tells the caller to bypass any proxy. */
static int check_url(const struct cvm_http_client_opts *o, const char *url, bool *loopback,
		     struct cvm_err *err)
{
	char *scheme, *host;
	if (split_url(url, &scheme, &host) < 0)
		return cvm_err_badparam(err, "url \"%.200s\": not a valid http(s) URL", url);
	*loopback = host && host_is_loopback(host);
	int r = 0;
	if (strcasecmp(scheme, "https") == 0)
		r = 0;
	else if (strcasecmp(scheme, "http") != 0)
		r = cvm_err_set(err, EPERM, "Forbidden", "url \"%.200s\": only https is allowed",
				url);
	else if (!o->allow_plain_http_loopback || !*loopback)
		r = cvm_err_set(err, EPERM, "Forbidden",
				"url \"%.200s\": plain http is refused (https required%s)", url,
				o->allow_plain_http_loopback ? " for non-loopback hosts" : "");
	curl_free(scheme);
	curl_free(host);
	return r;
}

struct sink {
	struct cvm_buf *buf;
	size_t max;
	bool overflow;
	bool nomem;
};

static size_t on_data(char *ptr, size_t size, size_t nmemb, void *userdata)
{
	struct sink *s = userdata;
	size_t n = size * nmemb;
	if (n > s->max - s->buf->len) {
		s->overflow = true;
		return 0; /* aborts the transfer */
	}
	if (cvm_buf_append(s->buf, ptr, n) < 0) {
		s->nomem = true;
		return 0;
	}
	return n;
}

/* Keep the peer's x-ms-request-id so callers can log it next to their own. */
static size_t on_header(char *ptr, size_t size, size_t nmemb, void *userdata)
{
	struct cvm_http_result *res = userdata;
	size_t n = size * nmemb;
	static const char name[] = "x-ms-request-id:";
	if (n > sizeof(name) - 1 && strncasecmp(ptr, name, sizeof(name) - 1) == 0) {
		const char *v = ptr + sizeof(name) - 1;
		const char *end = ptr + n;
		while (v < end && (*v == ' ' || *v == '\t'))
			v++;
		while (end > v && (end[-1] == '\r' || end[-1] == '\n' || end[-1] == ' '))
			end--;
		free(res->request_id);
		res->request_id = strndup(v, (size_t)(end - v));
		if (!res->request_id)
			return 0;
	}
	return n;
}

static int map_curl_error(CURLcode rc, const struct sink *s, const char *method,
			  const char *url, const char *detail, size_t max, struct cvm_err *err)
{
	if (s->overflow || rc == CURLE_FILESIZE_EXCEEDED)
		return cvm_err_set(err, E2BIG, "InternalError",
				   "%s %.200s: response larger than %zu bytes", method, url, max);
	if (s->nomem)
		return cvm_err_nomem(err);
	int e;
	switch (rc) {
	case CURLE_OPERATION_TIMEDOUT: e = ETIMEDOUT; break;
	case CURLE_COULDNT_RESOLVE_HOST: e = EHOSTUNREACH; break;
	case CURLE_OUT_OF_MEMORY: return cvm_err_nomem(err);
	default: e = ECONNREFUSED; break; /* connect, TLS, protocol: the peer failed us */
	}
	return cvm_err_set(err, e, "UpstreamError", "%s %.200s: %s (%s)", method, url,
			   curl_easy_strerror(rc), detail[0] ? detail : "no detail");
}

static int set_method(CURL *c, const char *method, const void *body, size_t body_len)
{
	CURLcode rc = CURLE_OK;
	bool has_body = body || strcmp(method, "POST") == 0 || strcmp(method, "PUT") == 0 ||
			strcmp(method, "PATCH") == 0;
	if (strcmp(method, "GET") == 0 && !body)
		rc = curl_easy_setopt(c, CURLOPT_HTTPGET, 1L);
	else if (strcmp(method, "HEAD") == 0)
		rc = curl_easy_setopt(c, CURLOPT_NOBODY, 1L);
	else if (strcmp(method, "POST") != 0)
		rc = curl_easy_setopt(c, CURLOPT_CUSTOMREQUEST, method);
	if (rc == CURLE_OK && has_body) {
		rc = curl_easy_setopt(c, CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t)body_len);
		if (rc == CURLE_OK)
			rc = curl_easy_setopt(c, CURLOPT_POSTFIELDS, body ? body : "");
	}
	return rc == CURLE_OK ? 0 : -EINVAL;
}

int cvm_http_request(const struct cvm_http_client_opts *o, const char *method, const char *url,
		     const char *const *headers, const void *body, size_t body_len,
		     struct cvm_http_result *res, struct cvm_err *err)
{
	static const struct cvm_http_client_opts defaults = {0};
	if (!o)
		o = &defaults;
	*res = (struct cvm_http_result){0};
	if (!method || !url)
		return cvm_err_badparam(err, "http request: method and url are required");
	bool loopback = false;
	int r = check_url(o, url, &loopback, err);
	if (r < 0)
		return r;
	size_t max = o->max_response ? o->max_response : DEFAULT_MAX_RESPONSE;
	long timeout = o->timeout_ms > 0 ? o->timeout_ms : DEFAULT_TIMEOUT_MS;

	CURL *c = curl_easy_init();
	if (!c)
		return cvm_err_nomem(err);
	struct curl_slist *hl = NULL;
	for (size_t i = 0; headers && headers[i]; i++) {
		struct curl_slist *n = curl_slist_append(hl, headers[i]);
		if (!n) {
			curl_slist_free_all(hl);
			curl_easy_cleanup(c);
			return cvm_err_nomem(err);
		}
		hl = n;
	}
	char detail[CURL_ERROR_SIZE] = "";
	struct sink sink = {.buf = &res->body, .max = max};
	bool ok = curl_easy_setopt(c, CURLOPT_URL, url) == CURLE_OK &&
		  curl_easy_setopt(c, CURLOPT_NOSIGNAL, 1L) == CURLE_OK &&
		  curl_easy_setopt(c, CURLOPT_PROTOCOLS_STR, "http,https") == CURLE_OK &&
		  curl_easy_setopt(c, CURLOPT_FOLLOWLOCATION, 0L) == CURLE_OK &&
		  curl_easy_setopt(c, CURLOPT_TIMEOUT_MS, timeout) == CURLE_OK &&
		  curl_easy_setopt(c, CURLOPT_SSLVERSION, (long)CURL_SSLVERSION_TLSv1_2) == CURLE_OK &&
		  curl_easy_setopt(c, CURLOPT_SSL_VERIFYPEER, 1L) == CURLE_OK &&
		  curl_easy_setopt(c, CURLOPT_SSL_VERIFYHOST, 2L) == CURLE_OK &&
		  curl_easy_setopt(c, CURLOPT_MAXFILESIZE_LARGE, (curl_off_t)max) == CURLE_OK &&
		  curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, on_data) == CURLE_OK &&
		  curl_easy_setopt(c, CURLOPT_WRITEDATA, &sink) == CURLE_OK &&
		  curl_easy_setopt(c, CURLOPT_HEADERFUNCTION, on_header) == CURLE_OK &&
		  curl_easy_setopt(c, CURLOPT_HEADERDATA, res) == CURLE_OK &&
		  curl_easy_setopt(c, CURLOPT_ERRORBUFFER, detail) == CURLE_OK &&
		  curl_easy_setopt(c, CURLOPT_USERAGENT, "opencvm") == CURLE_OK &&
		  (!hl || curl_easy_setopt(c, CURLOPT_HTTPHEADER, hl) == CURLE_OK) &&
		  (!o->ca_file || curl_easy_setopt(c, CURLOPT_CAINFO, o->ca_file) == CURLE_OK) &&
		  /* Loopback traffic must never be sent through a proxy from the environment. */
		  (!loopback || curl_easy_setopt(c, CURLOPT_PROXY, "") == CURLE_OK) &&
		  set_method(c, method, body, body_len) == 0;
	if (!ok) {
		curl_slist_free_all(hl);
		curl_easy_cleanup(c);
		return cvm_err_internal(err, "%s %.200s: cannot configure the HTTP client", method,
					url);
	}
	CURLcode rc = curl_easy_perform(c);
	if (rc != CURLE_OK) {
		r = map_curl_error(rc, &sink, method, url, detail, max, err);
	} else {
		char *ct = NULL;
		curl_easy_getinfo(c, CURLINFO_RESPONSE_CODE, &res->status);
		if (curl_easy_getinfo(c, CURLINFO_CONTENT_TYPE, &ct) == CURLE_OK && ct) {
			res->content_type = strdup(ct);
			if (!res->content_type)
				r = cvm_err_nomem(err);
		}
	}
	curl_slist_free_all(hl);
	curl_easy_cleanup(c);
	if (r < 0)
		cvm_http_result_free(res);
	return r;
}

void cvm_http_result_free(struct cvm_http_result *res)
{
	if (!res)
		return;
	cvm_buf_free(&res->body);
	free(res->content_type);
	free(res->request_id);
	res->content_type = NULL;
	res->request_id = NULL;
	res->status = 0;
}
