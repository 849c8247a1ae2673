/* SPDX-License-Identifier: Apache-2.0 */
#include "router.h"

#include <stdio.h>
#include <string.h>
#include <strings.h>

static bool valid_param_name(const char *s, size_t len)
{
	if (len == 0)
		return false;
	for (size_t i = 0; i < len; i++) {
		char c = s[i];
		if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
		      c == '_' || c == '-'))
			return false;
	}
	return true;
}

static bool valid_method(const char *m)
{
	size_t n = strlen(m);
	if (n == 0 || n >= sizeof(((struct cvm_route *)0)->method))
		return false;
	for (size_t i = 0; i < n; i++)
		if (m[i] < 'A' || m[i] > 'Z')
			return false;
	return true;
}

/* Turn the pattern copy into segments in place: '/' becomes NUL, "{x}" becomes "x". */
static int parse_pattern(char *p, struct cvm_route_seg *segs, size_t *nseg, const char *pattern,
			 struct cvm_err *err)
{
	size_t n = 0, nparams = 0;
	char *s = p + 1;
	size_t total = strlen(s);
	if (total > 0 && s[total - 1] == '/')
		s[--total] = 0;
	while (*s) {
		char *slash = strchr(s, '/');
		if (slash)
			*slash = 0;
		if (n == CVM_HTTP_MAX_SEGS)
			return cvm_err_badparam(err, "route %s: more than %d segments", pattern,
						CVM_HTTP_MAX_SEGS);
		struct cvm_route_seg *g = &segs[n];
		size_t len = strlen(s);
		if (len == 0)
			return cvm_err_badparam(err, "route %s: empty segment", pattern);
		if (s[0] == '{') {
			if (s[len - 1] != '}')
				return cvm_err_badparam(err, "route %s: unterminated '{'", pattern);
			s[len - 1] = 0;
			s++;
			len -= 2;
			if (len > 0 && s[len - 1] == '*') {
				s[--len] = 0;
				g->rest = true;
				if (slash)
					return cvm_err_badparam(err,
						"route %s: {%s*} must be the last segment", pattern, s);
			}
			if (!valid_param_name(s, len))
				return cvm_err_badparam(err, "route %s: bad parameter name", pattern);
			for (size_t i = 0; i < n; i++)
				if (segs[i].param && strcmp(segs[i].text, s) == 0)
					return cvm_err_badparam(err, "route %s: parameter {%s} repeated",
								pattern, s);
			if (++nparams > CVM_HTTP_MAX_PARAMS)
				return cvm_err_badparam(err, "route %s: more than %d parameters",
							pattern, CVM_HTTP_MAX_PARAMS);
			g->param = true;
		} else if (strpbrk(s, "{}")) {
			return cvm_err_badparam(err, "route %s: '{' or '}' inside a literal segment",
						pattern);
		}
		g->text = s;
		g->len = len;
		n++;
		if (!slash)
			break;
		s = slash + 1;
	}
	*nseg = n;
	return 0;
}

int cvm_router_add(struct cvm_router *rt, const char *method, const char *pattern,
		   cvm_http_handler h, void *ctx, struct cvm_err *err)
{
	if (!method || !valid_method(method))
		return cvm_err_badparam(err, "route: method must be an upper-case HTTP method");
	if (!pattern || pattern[0] != '/')
		return cvm_err_badparam(err, "route: pattern must start with '/'");
	if (!h)
		return cvm_err_badparam(err, "route %s: handler is NULL", pattern);
	if (rt->n == rt->cap) {
		size_t cap = rt->cap ? rt->cap * 2 : 16;
		struct cvm_route *r = realloc(rt->routes, cap * sizeof(*r));
		if (!r)
			return cvm_err_nomem(err);
		rt->routes = r;
		rt->cap = cap;
	}
	struct cvm_route r = {.handler = h, .ctx = ctx};
	snprintf(r.method, sizeof(r.method), "%s", method);
	r.storage = strdup(pattern);
	r.segs = calloc(CVM_HTTP_MAX_SEGS, sizeof(*r.segs));
	if (!r.storage || !r.segs) {
		free(r.storage);
		free(r.segs);
		return cvm_err_nomem(err);
	}
	int ret = parse_pattern(r.storage, r.segs, &r.nseg, pattern, err);
	if (ret < 0) {
		free(r.storage);
		free(r.segs);
		return ret;
	}
	rt->routes[rt->n++] = r;
	return 0;
}

void cvm_router_free(struct cvm_router *rt)
{
	for (size_t i = 0; i < rt->n; i++) {
		free(rt->routes[i].storage);
		free(rt->routes[i].segs);
	}
	free(rt->routes);
	*rt = (struct cvm_router){0};
}

int cvm_path_split(const char *path, struct cvm_path_segs *ps)
{
	ps->path = path;
	ps->n = 0;
	size_t total = strlen(path);
	size_t i = path[0] == '/' ? 1 : 0;
	if (total > i && path[total - 1] == '/')
		total--;
	while (i < total) {
		if (ps->n == CVM_HTTP_MAX_SEGS)
			return -E2BIG;
		const char *slash = memchr(path + i, '/', total - i);
		size_t end = slash ? (size_t)(slash - path) : total;
		ps->off[ps->n] = i;
		ps->len[ps->n] = end - i;
		ps->n++;
		i = end + 1;
	}
	return 0;
}

/* Does route r match the split path? Literal segments compare case-insensitively, like the
 * Azure front ends do. */
static bool route_matches(const struct cvm_route *r, const struct cvm_path_segs *ps)
{
	bool rest = r->nseg > 0 && r->segs[r->nseg - 1].rest;
	size_t fixed = rest ? r->nseg - 1 : r->nseg;
	if (rest ? ps->n < fixed : ps->n != fixed)
		return false;
	for (size_t i = 0; i < fixed; i++) {
		const struct cvm_route_seg *g = &r->segs[i];
		size_t len = ps->len[i];
		if (g->param) {
			if (len == 0)
				return false;
		} else if (len != g->len || strncasecmp(ps->path + ps->off[i], g->text, len) != 0) {
			return false;
		}
	}
	return true;
}

static void add_allow(char *allow, size_t allowsz, const char *method)
{
	if (!allow || allowsz == 0)
		return;
	size_t n = strlen(allow), m = strlen(method);
	/* Skip methods already listed (several routes may share a path and method). */
	for (const char *p = allow; (p = strstr(p, method)); p += m)
		if ((p == allow || p[-1] == ' ') && (p[m] == ',' || p[m] == 0))
			return;
	snprintf(allow + n, allowsz - n, "%s%s", n ? ", " : "", method);
}

const struct cvm_route *cvm_router_match(const struct cvm_router *rt, const char *method,
					 const struct cvm_path_segs *ps, char *valbuf,
					 struct cvm_http_param *params, size_t *nparams,
					 bool *path_known, char *allow, size_t allowsz)
{
	*path_known = false;
	*nparams = 0;
	if (allow && allowsz)
		allow[0] = 0;
	for (size_t i = 0; i < rt->n; i++) {
		const struct cvm_route *r = &rt->routes[i];
		if (!route_matches(r, ps))
			continue;
		if (strcmp(r->method, method) != 0) {
			*path_known = true;
			add_allow(allow, allowsz, r->method);
			continue;
		}
		char *w = valbuf;
		size_t np = 0;
		for (size_t k = 0; k < r->nseg; k++) {
			const struct cvm_route_seg *g = &r->segs[k];
			if (!g->param)
				continue;
			size_t off, len;
			if (g->rest) {
				off = k < ps->n ? ps->off[k] : 0;
				len = k < ps->n ? ps->off[ps->n - 1] + ps->len[ps->n - 1] - off : 0;
			} else {
				off = ps->off[k];
				len = ps->len[k];
			}
			memcpy(w, ps->path + off, len);
			w[len] = 0;
			params[np].name = g->text;
			params[np].value = w;
			np++;
			w += len + 1;
		}
		*nparams = np;
		*path_known = true;
		return r;
	}
	return NULL;
}
