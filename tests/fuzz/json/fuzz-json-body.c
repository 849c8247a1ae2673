/* SPDX-License-Identifier: Apache-2.0 */
/* Arbitrary bytes through cvm_json_parse, then every typed getter over the fields Key Vault
 * request bodies use, including nested ones, so type confusion in any getter shows up. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <opencvm/json.h>

static void drive_getters(json_t *o, const char *prefix)
{
	static const char *const fields[] = {"kty", "key_size", "key_ops", "attributes", "tags",
					     "value", "alg", "enabled", "exp", "nbf", "curve",
					     "release_policy", "data", "target", "nonce", NULL};
	static const char *const algs[] = {"RSA-OAEP", "RSA-OAEP-256", "A256KW", NULL};
	struct cvm_err err;
	for (size_t i = 0; fields[i]; i++) {
		const char *f = fields[i];
		char path[96];
		snprintf(path, sizeof(path), "%s%s", prefix, f);
		const char *s;
		int64_t n;
		bool b, present;
		json_t *v;
		uint8_t *d;
		size_t dl;
		cvm_json_str(o, f, path, i % 2, &s, &present, &err);
		cvm_json_int(o, f, path, i % 2, -5, 1LL << 40, &n, &present, &err);
		cvm_json_bool(o, f, path, i % 2, &b, &present, &err);
		cvm_json_obj(o, f, path, i % 2, &v, &err);
		cvm_json_arr(o, f, path, i % 2, &v, &err);
		if (cvm_json_b64url(o, f, path, i % 2, &d, &dl, &err) == 0)
			free(d);
		cvm_json_enum(o, f, path, i % 2, algs, &s, &err);
		cvm_json_str_array(o, f, path, i % 2, algs, &v, &err);
		cvm_json_str_array(o, f, path, i % 2, NULL, &v, &err);
		/* Every error message must be representable in a JSON error body. */
		json_t *m = cvm_json_string_lossy(err.msg);
		if (!m)
			abort();
		json_decref(m);
	}
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	json_t *root = NULL;
	struct cvm_err err;
	if (cvm_json_parse(data, size, size % 2, &root, &err) < 0) {
		if (!strstr(err.msg, "body:"))
			abort();
		return 0;
	}
	drive_getters(root, "");
	json_t *attrs = NULL;
	if (cvm_json_obj(root, "attributes", "attributes", false, &attrs, &err) == 0 && attrs)
		drive_getters(attrs, "attributes.");
	cvm_json_path(root, "x-ms-isolation-tee.x-ms-attestation-type");
	cvm_json_path(root, "attributes.exp");
	char *dump = cvm_json_dump(root);
	char *ref = json_dumps(root, JSON_COMPACT | JSON_ENCODE_ANY);
	/* Our serializer claims jansson's exact bytes. */
	if ((dump == NULL) != (ref == NULL) || (dump && strcmp(dump, ref) != 0))
		abort();
	free(ref);
	if (dump) {
		/* Our own output must parse back. */
		json_t *again = NULL;
		if (cvm_json_parse((const uint8_t *)dump, strlen(dump), true, &again, &err) < 0 &&
		    err.errnum != E2BIG && !strstr(err.msg, "nesting"))
			abort();
		json_decref(again);
		free(dump);
	}
	json_decref(root);
	return 0;
}
