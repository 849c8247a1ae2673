/* SPDX-License-Identifier: Apache-2.0 */
/* Request accessors and response building for handlers. */
#include "server.h"

#include <opencvm/json.h>

#include <stdio.h>
#include <string.h>

const char *cvm_http_req_method(const struct cvm_http_req *r)
{
	return r->method;
}

const char *cvm_http_req_path(const struct cvm_http_req *r)
{
	return r->path;
}

const char *cvm_http_req_param(const struct cvm_http_req *r, const char *name)
{
	for (size_t i = 0; i < r->nparams; i++)
		if (strcmp(r->params[i].name, name) == 0)
			return r->params[i].value;
	return NULL;
}

const char *cvm_http_req_query(const struct cvm_http_req *r, const char *name)
{
	return MHD_lookup_connection_value(r->conn, MHD_GET_ARGUMENT_KIND, name);
}

const char *cvm_http_req_header(const struct cvm_http_req *r, const char *name)
{
	return MHD_lookup_connection_value(r->conn, MHD_HEADER_KIND, name);
}

const uint8_t *cvm_http_req_body(const struct cvm_http_req *r, size_t *len)
{
	*len = r->body.len;
	/* Never NULL, so callers can pass it straight to a parser with len 0. */
	return r->body.data ? r->body.data : (const uint8_t *)"";
}

const char *cvm_http_req_remote(const struct cvm_http_req *r)
{
	return r->remote;
}

const char *cvm_http_req_id(const struct cvm_http_req *r)
{
	return r->id;
}

void cvm_http_req_set_user(struct cvm_http_req *r, void *user)
{
	r->user = user;
}

void *cvm_http_req_user(const struct cvm_http_req *r)
{
	return r->user;
}

void cvm_http_resp_status(struct cvm_http_resp *r, int status)
{
	r->status = status;
}

/* RFC 9110 token characters for header names. */
static bool valid_header_name(const char *s)
{
	if (!*s)
		return false;
	for (; *s; s++) {
		unsigned char c = (unsigned char)*s;
		if (c <= 0x20 || c >= 0x7f || strchr("\"(),/:;<=>?@[\\]{}", c))
			return false;
	}
	return true;
}

/* Values must not smuggle extra header lines. */
static bool valid_header_value(const char *s)
{
	for (; *s; s++)
		if (*s == '\r' || *s == '\n')
			return false;
	return true;
}

int cvm_http_resp_header(struct cvm_http_resp *r, const char *name, const char *value)
{
	if (!valid_header_name(name) || !valid_header_value(value))
		return -EINVAL;
	if (strcasecmp(name, "Content-Type") == 0) {
		if (strlen(value) >= sizeof(r->content_type))
			return -EINVAL;
		snprintf(r->content_type, sizeof(r->content_type), "%s", value);
		return 0;
	}
	int ret = cvm_buf_append(&r->headers, name, strlen(name) + 1);
	if (ret == 0)
		ret = cvm_buf_append(&r->headers, value, strlen(value) + 1);
	return ret;
}

int cvm_http_resp_body(struct cvm_http_resp *r, const char *content_type, const void *data,
		       size_t len)
{
	if (content_type && (strlen(content_type) >= sizeof(r->content_type) ||
			     !valid_header_value(content_type)))
		return -EINVAL;
	r->body.len = 0;
	int ret = cvm_buf_append(&r->body, data, len);
	if (ret < 0)
		return ret;
	snprintf(r->content_type, sizeof(r->content_type), "%s", content_type ? content_type : "");
	if (r->status == 0)
		r->status = 200;
	return 0;
}

int cvm_http_resp_json(struct cvm_http_resp *r, int status, json_t *v)
{
	char *s = cvm_json_dump(v);
	json_decref(v);
	if (!s)
		return -ENOMEM;
	/* Hand the serialization to the response buffer instead of copying it. */
	cvm_buf_free(&r->body);
	r->body.data = (uint8_t *)s;
	r->body.len = strlen(s);
	r->body.cap = r->body.len + 1;
	snprintf(r->content_type, sizeof(r->content_type), "application/json; charset=utf-8");
	r->status = status;
	return 0;
}

static int error_body(struct cvm_http_resp *r, int status, const char *code, const char *msg)
{
	/* "o" steals the message reference, also when packing fails. */
	json_t *root = json_pack("{s:{s:s,s:o}}", "error", "code", code, "message",
				 cvm_json_string_lossy(msg));
	if (!root)
		return -ENOMEM;
	return cvm_http_resp_json(r, status, root);
}

int cvm_http_resp_error(struct cvm_http_resp *r, const struct cvm_err *err)
{
	const char *code = err && err->code[0] ? err->code : "InternalError";
	const char *msg = err && err->msg[0] ? err->msg : "internal error";
	return error_body(r, cvm_err_http_status(err), code, msg);
}

int cvm_http_resp_error_status(struct cvm_http_resp *r, int status, const char *code,
			       const char *fmt, ...)
{
	char msg[512];
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(msg, sizeof(msg), fmt, ap);
	va_end(ap);
	return error_body(r, status, code, msg);
}

void cvm_http_resp_reset(struct cvm_http_resp *r)
{
	cvm_buf_free(&r->body);
	cvm_buf_free(&r->headers);
	*r = (struct cvm_http_resp){0};
}
