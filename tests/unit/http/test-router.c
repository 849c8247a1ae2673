/* SPDX-License-Identifier: Apache-2.0 */
/* Route table: pattern validation, matching, parameters, 404 vs 405. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <string.h>
#include <cmocka.h>

#include "http/router.h"

static int h1(void *c, const struct cvm_http_req *r, struct cvm_http_resp *p)
{
	(void)c, (void)r, (void)p;
	return 1;
}

static int h2(void *c, const struct cvm_http_req *r, struct cvm_http_resp *p)
{
	(void)c, (void)r, (void)p;
	return 2;
}

struct m {
	const struct cvm_route *route;
	struct cvm_http_param params[CVM_HTTP_MAX_PARAMS];
	size_t n;
	bool known;
	char allow[64];
	char vals[256];
};

static const struct cvm_route *match(const struct cvm_router *rt, const char *method,
				     const char *path, struct m *m)
{
	struct cvm_path_segs ps;
	assert_int_equal(cvm_path_split(path, &ps), 0);
	m->route = cvm_router_match(rt, method, &ps, m->vals, m->params, &m->n, &m->known,
				    m->allow, sizeof(m->allow));
	return m->route;
}

static const char *param(const struct m *m, const char *name)
{
	for (size_t i = 0; i < m->n; i++)
		if (strcmp(m->params[i].name, name) == 0)
			return m->params[i].value;
	return NULL;
}

static void test_bad_patterns(void **state)
{
	(void)state;
	struct cvm_router rt = {0};
	struct cvm_err err = {0};
	const char *bad[] = {"keys", "", "/a//b", "/a/{", "/a/{}", "/a/{x", "/a/x}",
			     "/a/b{x}", "/a/{x y}", "/a/{rest*}/b", "/{x}/{x}",
			     "/{a}/{b}/{c}/{d}/{e}/{f}/{g}/{h}/{i}"};
	for (size_t i = 0; i < CVM_ARRAY_SIZE(bad); i++) {
		assert_int_equal(cvm_router_add(&rt, "GET", bad[i], h1, NULL, &err), -EINVAL);
		assert_string_equal(err.code, "BadParameter");
	}
	assert_int_equal(cvm_router_add(&rt, "get", "/a", h1, NULL, &err), -EINVAL);
	assert_int_equal(cvm_router_add(&rt, "GET", "/a", NULL, NULL, &err), -EINVAL);
	assert_int_equal(rt.n, 0);
	/* the good forms */
	assert_int_equal(cvm_router_add(&rt, "GET", "/", h1, NULL, &err), 0);
	assert_int_equal(cvm_router_add(&rt, "GET", "/a/{x}/", h1, NULL, &err), 0);
	assert_int_equal(cvm_router_add(&rt, "GET", "/r/{rest*}", h1, NULL, &err), 0);
	assert_int_equal(rt.n, 3);
	cvm_router_free(&rt);
}

static void test_match(void **state)
{
	(void)state;
	struct cvm_router rt = {0};
	struct cvm_err err = {0};
	assert_int_equal(cvm_router_add(&rt, "GET", "/", h1, NULL, &err), 0);
	assert_int_equal(cvm_router_add(&rt, "GET", "/keys/{name}/{version}", h1, NULL, &err), 0);
	assert_int_equal(cvm_router_add(&rt, "POST", "/keys/{name}/{version}/wrapkey", h2, NULL,
					&err), 0);
	assert_int_equal(cvm_router_add(&rt, "PATCH", "/keys/{name}/{version}", h2, NULL, &err), 0);
	/* first match wins: the literal route below is shadowed by the parameter route above */
	assert_int_equal(cvm_router_add(&rt, "GET", "/keys/fixed/one", h2, NULL, &err), 0);
	assert_int_equal(cvm_router_add(&rt, "GET", "/static/{p*}", h2, NULL, &err), 0);
	struct m m;

	assert_non_null(match(&rt, "GET", "/", &m));
	assert_int_equal(m.n, 0);
	assert_non_null(match(&rt, "GET", "/keys/k/v1", &m));
	assert_ptr_equal(m.route->handler, h1);
	assert_string_equal(param(&m, "name"), "k");
	assert_string_equal(param(&m, "version"), "v1");
	assert_null(param(&m, "other"));
	assert_non_null(match(&rt, "GET", "/keys/fixed/one", &m));
	assert_ptr_equal(m.route->handler, h1);
	assert_non_null(match(&rt, "POST", "/Keys/k/v1/WRAPKEY/", &m));
	assert_ptr_equal(m.route->handler, h2);
	/* parameter values keep their case */
	assert_non_null(match(&rt, "GET", "/keys/MyKey/AbC", &m));
	assert_string_equal(param(&m, "name"), "MyKey");

	/* rest parameter: the remainder with slashes, or empty */
	assert_non_null(match(&rt, "GET", "/static/a/b/c", &m));
	assert_string_equal(param(&m, "p"), "a/b/c");
	assert_non_null(match(&rt, "GET", "/static", &m));
	assert_string_equal(param(&m, "p"), "");

	/* 405: path known under other methods, Allow lists them once each */
	assert_null(match(&rt, "DELETE", "/keys/k/v1", &m));
	assert_true(m.known);
	assert_string_equal(m.allow, "GET, PATCH");
	/* 404: nothing has this shape; empty segments never bind a parameter */
	assert_null(match(&rt, "GET", "/keys/k", &m));
	assert_false(m.known);
	assert_null(match(&rt, "GET", "/keys//v1", &m));
	assert_false(m.known);
	assert_null(match(&rt, "GET", "/keysx/k/v1", &m));
	assert_false(m.known);
	cvm_router_free(&rt);
}

static void test_path_split(void **state)
{
	(void)state;
	struct cvm_path_segs ps;
	assert_int_equal(cvm_path_split("/", &ps), 0);
	assert_int_equal(ps.n, 0);
	assert_int_equal(cvm_path_split("/a/bc/", &ps), 0);
	assert_int_equal(ps.n, 2);
	assert_int_equal(ps.len[1], 2);
	assert_memory_equal(ps.path + ps.off[1], "bc", 2);
	char deep[2 * (CVM_HTTP_MAX_SEGS + 1) + 1];
	size_t n = 0;
	for (int i = 0; i < CVM_HTTP_MAX_SEGS; i++) {
		deep[n++] = '/';
		deep[n++] = 'x';
	}
	deep[n] = 0;
	assert_int_equal(cvm_path_split(deep, &ps), 0);
	assert_int_equal(ps.n, CVM_HTTP_MAX_SEGS);
	deep[n++] = '/';
	deep[n++] = 'y';
	deep[n] = 0;
	assert_int_equal(cvm_path_split(deep, &ps), -E2BIG);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_bad_patterns),
		cmocka_unit_test(test_match),
		cmocka_unit_test(test_path_split),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
