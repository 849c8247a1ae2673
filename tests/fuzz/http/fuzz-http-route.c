/* SPDX-License-Identifier: Apache-2.0 */
/* Arbitrary request paths (and a method picked by the first byte) through path splitting and
 * route matching over the Key Vault route shapes; parameter values must be substrings that
 * fit the value buffer the server sizes from the path length. */
#include <stdlib.h>
#include <string.h>

#include "http/router.h"

static int h(void *c, const struct cvm_http_req *r, struct cvm_http_resp *p)
{
	(void)c, (void)r, (void)p;
	return 0;
}

static struct cvm_router *table(void)
{
	static struct cvm_router rt;
	static bool built;
	if (built)
		return &rt;
	static const char *const routes[][2] = {
		{"GET", "/keys"}, {"POST", "/keys/{name}/create"}, {"GET", "/keys/{name}/versions"},
		{"GET", "/keys/{name}/{version}"}, {"POST", "/keys/{name}/{version}/wrapkey"},
		{"PATCH", "/keys/{name}"}, {"GET", "/deletedkeys/{name}"},
		{"GET", "/{s1}/{s2}/providers/Microsoft.Authorization/roleAssignments/{id}"},
		{"GET", "/static/{rest*}"}, {"GET", "/"}};
	struct cvm_err err;
	for (size_t i = 0; i < sizeof(routes) / sizeof(routes[0]); i++)
		if (cvm_router_add(&rt, routes[i][0], routes[i][1], h, NULL, &err) < 0)
			abort();
	built = true;
	return &rt;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	static const char *const methods[] = {"GET", "POST", "PATCH", "DELETE"};
	if (size == 0)
		return 0;
	const char *method = methods[data[0] % 4];
	char *path = malloc(size);
	if (!path)
		return 0;
	memcpy(path, data + 1, size - 1);
	path[size - 1] = 0;
	size_t plen = strlen(path);
	char *vals = malloc(plen + 1 + CVM_HTTP_MAX_PARAMS);
	struct cvm_path_segs ps;
	if (vals && cvm_path_split(path, &ps) == 0) {
		struct cvm_http_param params[CVM_HTTP_MAX_PARAMS];
		size_t n;
		bool known;
		char allow[128];
		const struct cvm_route *r = cvm_router_match(table(), method, &ps, vals, params, &n,
							     &known, allow, sizeof(allow));
		for (size_t i = 0; r && i < n; i++)
			if (!strstr(path, params[i].value))
				abort();
	}
	free(vals);
	free(path);
	return 0;
}
