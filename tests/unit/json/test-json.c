/* SPDX-License-Identifier: Apache-2.0 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <string.h>
#include <cmocka.h>

#include <opencvm/json.h>

static json_t *parse(const char *s)
{
	json_t *v = NULL;
	struct cvm_err err = {0};
	assert_int_equal(cvm_json_parse((const uint8_t *)s, strlen(s), false, &v, &err), 0);
	return v;
}

#define assert_msg_contains(err, s) assert_non_null(strstr((err).msg, (s)))

static void test_parse_ok_and_errors(void **state)
{
	(void)state;
	struct cvm_err err = {0};
	json_t *v = NULL;
	const char *ok = "{\"kty\":\"RSA\",\"key_size\":2048}";
	assert_int_equal(cvm_json_parse((const uint8_t *)ok, strlen(ok), false, &v, &err), 0);
	assert_true(json_is_object(v));
	json_decref(v);

	const char *bad = "{\n  \"kty\": \"RSA\",\n  \"x\": ]\n}";
	assert_int_equal(cvm_json_parse((const uint8_t *)bad, strlen(bad), false, &v, &err), -EINVAL);
	assert_null(v);
	assert_string_equal(err.code, "BadParameter");
	assert_msg_contains(err, "body: invalid JSON at line 3 column");

	assert_int_equal(cvm_json_parse((const uint8_t *)"", 0, false, &v, &err), -EINVAL);
	assert_msg_contains(err, "body: required JSON body is missing");

	/* Not an object unless any_type. */
	assert_int_equal(cvm_json_parse((const uint8_t *)"[1]", 3, false, &v, &err), -EINVAL);
	assert_msg_contains(err, "expected a JSON object, got array");
	assert_int_equal(cvm_json_parse((const uint8_t *)"[1]", 3, true, &v, &err), 0);
	assert_true(json_is_array(v));
	json_decref(v);
	assert_int_equal(cvm_json_parse((const uint8_t *)"7", 1, true, &v, &err), 0);
	assert_true(json_is_integer(v));
	json_decref(v);

	/* Duplicate keys and trailing garbage are refused. */
	const char *dup = "{\"a\":1,\"a\":2}";
	assert_int_equal(cvm_json_parse((const uint8_t *)dup, strlen(dup), false, &v, &err), -EINVAL);
	assert_msg_contains(err, "duplicate");
	const char *trail = "{\"a\":1} x";
	assert_int_equal(cvm_json_parse((const uint8_t *)trail, strlen(trail), false, &v, &err),
			 -EINVAL);
	/* Length is honoured: the buffer is not NUL-terminated at len. */
	const char *longer = "{\"a\":1}GARBAGE";
	assert_int_equal(cvm_json_parse((const uint8_t *)longer, 7, false, &v, &err), 0);
	json_decref(v);
}

static void test_parse_depth_limit(void **state)
{
	(void)state;
	struct cvm_err err = {0};
	json_t *v = NULL;
	char deep[2 * (CVM_JSON_MAX_DEPTH + 1) + 1];
	size_t n = 0;
	/* Exactly at the limit: accepted. */
	for (int i = 0; i < CVM_JSON_MAX_DEPTH; i++)
		deep[n++] = '[';
	for (int i = 0; i < CVM_JSON_MAX_DEPTH; i++)
		deep[n++] = ']';
	assert_int_equal(cvm_json_parse((const uint8_t *)deep, n, true, &v, &err), 0);
	json_decref(v);
	/* One deeper: refused. */
	n = 0;
	for (int i = 0; i <= CVM_JSON_MAX_DEPTH; i++)
		deep[n++] = '[';
	for (int i = 0; i <= CVM_JSON_MAX_DEPTH; i++)
		deep[n++] = ']';
	assert_int_equal(cvm_json_parse((const uint8_t *)deep, n, true, &v, &err), -EINVAL);
	assert_msg_contains(err, "nesting deeper than");
	/* Brackets inside strings do not count. */
	char s[CVM_JSON_MAX_DEPTH * 2 + 16];
	n = 0;
	s[n++] = '"';
	for (int i = 0; i < CVM_JSON_MAX_DEPTH * 2; i++)
		s[n++] = '[';
	s[n++] = '\\';
	s[n++] = '"';
	s[n++] = '"';
	assert_int_equal(cvm_json_parse((const uint8_t *)s, n, true, &v, &err), 0);
	json_decref(v);
}

static void test_parse_size_limit(void **state)
{
	(void)state;
	struct cvm_err err = {0};
	json_t *v = NULL;
	size_t n = CVM_JSON_MAX_SIZE + 1;
	uint8_t *big = malloc(n);
	assert_non_null(big);
	memset(big, ' ', n);
	big[0] = '{';
	big[n - 1] = '}';
	assert_int_equal(cvm_json_parse(big, n, false, &v, &err), -E2BIG);
	assert_msg_contains(err, "body: larger than");
	/* Same shape under the limit parses. */
	assert_int_equal(cvm_json_parse(big + 1, 1, true, &v, &err), -EINVAL);
	big[n - 2] = '}';
	assert_int_equal(cvm_json_parse(big, n - 1, false, &v, &err), 0);
	json_decref(v);
	free(big);
}

static void test_str(void **state)
{
	(void)state;
	json_t *o = parse("{\"kid\":\"abc\",\"n\":5,\"z\":null}");
	struct cvm_err err = {0};
	const char *s = NULL;
	bool present = true;
	assert_int_equal(cvm_json_str(o, "kid", "key.kid", true, &s, &present, &err), 0);
	assert_string_equal(s, "abc");
	assert_true(present);
	/* wrong type */
	assert_int_equal(cvm_json_str(o, "n", "key.n", true, &s, &present, &err), -EINVAL);
	assert_string_equal(err.msg, "key.n: expected a string, got integer");
	assert_string_equal(err.code, "BadParameter");
	/* missing required, null counts as missing */
	assert_int_equal(cvm_json_str(o, "x", "key.x", true, &s, &present, &err), -EINVAL);
	assert_string_equal(err.msg, "key.x: required field is missing");
	assert_int_equal(cvm_json_str(o, "z", "key.z", true, &s, &present, &err), -EINVAL);
	assert_string_equal(err.msg, "key.z: required field is missing");
	/* missing optional */
	present = true;
	assert_int_equal(cvm_json_str(o, "z", "key.z", false, &s, &present, &err), 0);
	assert_false(present);
	assert_int_equal(cvm_json_str(o, "x", NULL, false, &s, NULL, &err), 0);
	/* path defaults to the field name */
	assert_int_equal(cvm_json_str(o, "n", NULL, true, &s, NULL, &err), -EINVAL);
	assert_string_equal(err.msg, "n: expected a string, got integer");
	/* enclosing object absent (NULL) behaves as missing; non-object is an error */
	assert_int_equal(cvm_json_str(NULL, "a", "attributes.a", false, &s, &present, &err), 0);
	assert_false(present);
	assert_int_equal(cvm_json_str(NULL, "a", "attributes.a", true, &s, &present, &err), -EINVAL);
	assert_msg_contains(err, "attributes.a: required");
	json_t *arr = json_array();
	assert_int_equal(cvm_json_str(arr, "a", "attributes.a", false, &s, &present, &err), -EINVAL);
	assert_msg_contains(err, "not an object");
	json_decref(arr);
	json_decref(o);
}

static void test_int(void **state)
{
	(void)state;
	json_t *o = parse("{\"exp\":1700000000,\"s\":\"x\",\"r\":1.5,\"neg\":-3,\"t\":true}");
	struct cvm_err err = {0};
	int64_t x = 0;
	bool present = false;
	assert_int_equal(cvm_json_int(o, "exp", "attributes.exp", true, 0, INT64_MAX, &x, &present,
				      &err), 0);
	assert_int_equal(x, 1700000000);
	assert_true(present);
	assert_int_equal(cvm_json_int(o, "s", "attributes.s", true, 0, 10, &x, NULL, &err), -EINVAL);
	assert_string_equal(err.msg, "attributes.s: expected an integer, got string");
	assert_int_equal(cvm_json_int(o, "r", "attributes.r", true, 0, 10, &x, NULL, &err), -EINVAL);
	assert_string_equal(err.msg, "attributes.r: expected an integer, got number");
	assert_int_equal(cvm_json_int(o, "t", "attributes.t", true, 0, 10, &x, NULL, &err), -EINVAL);
	assert_string_equal(err.msg, "attributes.t: expected an integer, got boolean");
	/* out of range both ways */
	assert_int_equal(cvm_json_int(o, "neg", "attributes.neg", true, 0, 10, &x, NULL, &err),
			 -EINVAL);
	assert_string_equal(err.msg, "attributes.neg: must be between 0 and 10, got -3");
	assert_int_equal(cvm_json_int(o, "exp", "attributes.exp", true, 0, 100, &x, NULL, &err),
			 -EINVAL);
	assert_msg_contains(err, "attributes.exp: must be between 0 and 100");
	/* boundaries are inclusive */
	assert_int_equal(cvm_json_int(o, "neg", NULL, true, -3, -3, &x, NULL, &err), 0);
	assert_int_equal(x, -3);
	assert_int_equal(cvm_json_int(o, "none", "attributes.none", true, 0, 1, &x, NULL, &err),
			 -EINVAL);
	assert_string_equal(err.msg, "attributes.none: required field is missing");
	x = 42;
	assert_int_equal(cvm_json_int(o, "none", "attributes.none", false, 0, 1, &x, &present, &err),
			 0);
	assert_false(present);
	assert_int_equal(x, 42);
	json_decref(o);
}

static void test_bool(void **state)
{
	(void)state;
	json_t *o = parse("{\"enabled\":false,\"s\":\"true\"}");
	struct cvm_err err = {0};
	bool b = true, present = false;
	assert_int_equal(cvm_json_bool(o, "enabled", "attributes.enabled", true, &b, &present, &err),
			 0);
	assert_false(b);
	assert_true(present);
	assert_int_equal(cvm_json_bool(o, "s", "attributes.s", true, &b, &present, &err), -EINVAL);
	assert_string_equal(err.msg, "attributes.s: expected a boolean, got string");
	assert_int_equal(cvm_json_bool(o, "m", "attributes.m", true, &b, &present, &err), -EINVAL);
	assert_string_equal(err.msg, "attributes.m: required field is missing");
	assert_int_equal(cvm_json_bool(o, "m", "attributes.m", false, &b, &present, &err), 0);
	assert_false(present);
	json_decref(o);
}

static void test_obj_arr(void **state)
{
	(void)state;
	json_t *o = parse("{\"attributes\":{\"exp\":1},\"tags\":[],\"s\":\"x\"}");
	struct cvm_err err = {0};
	json_t *v = (json_t *)1;
	assert_int_equal(cvm_json_obj(o, "attributes", NULL, true, &v, &err), 0);
	assert_true(json_is_object(v));
	assert_int_equal(cvm_json_obj(o, "tags", "tags", true, &v, &err), -EINVAL);
	assert_string_equal(err.msg, "tags: expected an object, got array");
	assert_int_equal(cvm_json_obj(o, "nope", "nope", true, &v, &err), -EINVAL);
	assert_msg_contains(err, "nope: required field is missing");
	assert_int_equal(cvm_json_obj(o, "nope", "nope", false, &v, &err), 0);
	assert_null(v);

	assert_int_equal(cvm_json_arr(o, "tags", NULL, true, &v, &err), 0);
	assert_true(json_is_array(v));
	assert_int_equal(cvm_json_arr(o, "s", "release.s", true, &v, &err), -EINVAL);
	assert_string_equal(err.msg, "release.s: expected an array, got string");
	assert_int_equal(cvm_json_arr(o, "nope", "nope", false, &v, &err), 0);
	assert_null(v);
	assert_int_equal(cvm_json_arr(o, "nope", "x.nope", true, &v, &err), -EINVAL);
	assert_msg_contains(err, "x.nope: required");
	json_decref(o);
}

static void test_b64url(void **state)
{
	(void)state;
	json_t *o = parse("{\"value\":\"Zm9vYg\",\"padded\":\"Zm9vYg==\",\"bad\":\"Zm+v\","
			  "\"trunc\":\"Z\",\"n\":1,\"empty\":\"\"}");
	struct cvm_err err = {0};
	uint8_t *d = NULL;
	size_t dl = 0;
	assert_int_equal(cvm_json_b64url(o, "value", NULL, true, &d, &dl, &err), 0);
	assert_int_equal(dl, 4);
	assert_memory_equal(d, "foob", 4);
	free(d);
	assert_int_equal(cvm_json_b64url(o, "padded", NULL, true, &d, &dl, &err), 0);
	assert_int_equal(dl, 4);
	free(d);
	assert_int_equal(cvm_json_b64url(o, "empty", NULL, true, &d, &dl, &err), 0);
	assert_int_equal(dl, 0);
	free(d);
	assert_int_equal(cvm_json_b64url(o, "bad", "op.bad", true, &d, &dl, &err), -EINVAL);
	assert_msg_contains(err, "op.bad: invalid base64url");
	assert_null(d);
	assert_int_equal(cvm_json_b64url(o, "trunc", "op.trunc", true, &d, &dl, &err), -EINVAL);
	assert_msg_contains(err, "op.trunc:");
	assert_int_equal(cvm_json_b64url(o, "n", "op.n", true, &d, &dl, &err), -EINVAL);
	assert_string_equal(err.msg, "op.n: expected a base64url string, got integer");
	assert_int_equal(cvm_json_b64url(o, "m", "op.m", true, &d, &dl, &err), -EINVAL);
	assert_string_equal(err.msg, "op.m: required field is missing");
	dl = 9;
	assert_int_equal(cvm_json_b64url(o, "m", "op.m", false, &d, &dl, &err), 0);
	assert_null(d);
	assert_int_equal(dl, 0);
	json_decref(o);
}

static void test_enum(void **state)
{
	(void)state;
	static const char *const alg[] = {"RSA-OAEP", "RSA-OAEP-256", "RSA1_5", NULL};
	json_t *o = parse("{\"alg\":\"RSA-OAEP-256\",\"bad\":\"rsa-oaep\",\"n\":3,"
			  "\"ctl\":\"a\\u0001\\\"b\"}");
	struct cvm_err err = {0};
	const char *s = NULL;
	assert_int_equal(cvm_json_enum(o, "alg", NULL, true, alg, &s, &err), 0);
	assert_string_equal(s, "RSA-OAEP-256");
	assert_int_equal(cvm_json_enum(o, "bad", "alg", true, alg, &s, &err), -EINVAL);
	assert_string_equal(err.msg,
		"alg: expected one of \"RSA-OAEP\", \"RSA-OAEP-256\", \"RSA1_5\", got \"rsa-oaep\"");
	assert_int_equal(cvm_json_enum(o, "n", "alg", true, alg, &s, &err), -EINVAL);
	assert_string_equal(err.msg, "alg: expected a string, got integer");
	assert_int_equal(cvm_json_enum(o, "m", "alg", true, alg, &s, &err), -EINVAL);
	assert_string_equal(err.msg, "alg: required field is missing");
	assert_int_equal(cvm_json_enum(o, "m", "alg", false, alg, &s, &err), 0);
	assert_null(s);
	/* control characters and quotes from the client are neutralised in the message */
	assert_int_equal(cvm_json_enum(o, "ctl", "alg", true, alg, &s, &err), -EINVAL);
	assert_msg_contains(err, "got \"a??b\"");
	json_decref(o);
}

static void test_str_array(void **state)
{
	(void)state;
	static const char *const ops[] = {"encrypt", "decrypt", "wrapKey", "unwrapKey", NULL};
	json_t *o = parse("{\"key_ops\":[\"encrypt\",\"wrapKey\"],\"bad\":[\"encrypt\",\"fly\"],"
			  "\"mixed\":[\"encrypt\",7],\"s\":\"encrypt\"}");
	struct cvm_err err = {0};
	json_t *v = NULL;
	assert_int_equal(cvm_json_str_array(o, "key_ops", NULL, true, ops, &v, &err), 0);
	assert_int_equal(json_array_size(v), 2);
	assert_int_equal(cvm_json_str_array(o, "bad", "key_ops", true, NULL, &v, &err), 0);
	assert_int_equal(cvm_json_str_array(o, "bad", "key_ops", true, ops, &v, &err), -EINVAL);
	assert_msg_contains(err, "key_ops[1]: expected one of \"encrypt\"");
	assert_msg_contains(err, "got \"fly\"");
	assert_int_equal(cvm_json_str_array(o, "mixed", "key_ops", true, NULL, &v, &err), -EINVAL);
	assert_string_equal(err.msg, "key_ops[1]: expected a string, got integer");
	assert_int_equal(cvm_json_str_array(o, "s", "key_ops", true, NULL, &v, &err), -EINVAL);
	assert_string_equal(err.msg, "key_ops: expected an array of strings, got string");
	assert_int_equal(cvm_json_str_array(o, "m", "key_ops", true, NULL, &v, &err), -EINVAL);
	assert_string_equal(err.msg, "key_ops: required field is missing");
	assert_int_equal(cvm_json_str_array(o, "m", "key_ops", false, NULL, &v, &err), 0);
	assert_null(v);
	json_decref(o);
}

static void test_dump_and_set_b64url(void **state)
{
	(void)state;
	json_t *o = json_object();
	assert_int_equal(cvm_json_set_b64url(o, "n", "\xfb\xff", 2), 0);
	assert_int_equal(json_object_set_new(o, "e", json_integer(1)), 0);
	char *s = cvm_json_dump(o);
	assert_string_equal(s, "{\"n\":\"-_8\",\"e\":1}");
	free(s);
	json_t *num = json_integer(5);
	s = cvm_json_dump(num);
	assert_string_equal(s, "5");
	free(s);
	/* set on a non-object refuses */
	assert_int_equal(cvm_json_set_b64url(num, "n", "a", 1), -EINVAL);
	json_decref(num);
	json_decref(o);
}

static void test_string_lossy(void **state)
{
	(void)state;
	json_t *v = cvm_json_string_lossy("ok \xc3\xa9 bad \xff\xc3 end");
	assert_non_null(v);
	assert_string_equal(json_string_value(v), "ok \xc3\xa9 bad ?? end");
	json_decref(v);
	/* Strict jansson refuses the same input, which is why the lossy variant exists. */
	assert_null(json_string("bad \xff"));
	/* overlong encoding and surrogates are invalid too */
	v = cvm_json_string_lossy("\xc0\xaf|\xed\xa0\x80");
	assert_string_equal(json_string_value(v), "??|???");
	json_decref(v);
}

static void test_path(void **state)
{
	(void)state;
	json_t *o = parse("{\"x-ms-isolation-tee\":{\"x-ms-attestation-type\":\"sevsnpvm\","
			  "\"x-ms-compliance-status\":\"azure-compliant-cvm\"},"
			  "\"a.b\":{\"c\":1},\"a\":{\"b\":{\"d\":2}},\"lit.eral\":3}");
	json_t *v = cvm_json_path(o, "x-ms-isolation-tee.x-ms-attestation-type");
	assert_non_null(v);
	assert_string_equal(json_string_value(v), "sevsnpvm");
	/* literal key with a dot */
	v = cvm_json_path(o, "lit.eral");
	assert_int_equal(json_integer_value(v), 3);
	/* "a.b" literal first, then backtrack to a -> b -> d */
	v = cvm_json_path(o, "a.b.c");
	assert_int_equal(json_integer_value(v), 1);
	v = cvm_json_path(o, "a.b.d");
	assert_int_equal(json_integer_value(v), 2);
	assert_null(cvm_json_path(o, "a.b.e"));
	assert_null(cvm_json_path(o, "x-ms-isolation-tee.nope"));
	assert_null(cvm_json_path(o, "x-ms-isolation-tee.x-ms-attestation-type.deeper"));
	assert_null(cvm_json_path(o, ""));
	assert_null(cvm_json_path(NULL, "a"));
	json_decref(o);
}


/* cvm_json_dump writes exactly what jansson's compact dump writes, for every value type,
 * every escape, UTF-8, embedded NUL, long strings and deep nesting. */
static void test_dump_matches_jansson(void **state)
{
	(void)state;
	static const char *const docs[] = {
		"{}", "[]", "\"\"", "0", "-9223372036854775808", "9223372036854775807", "1.5",
		"-0.0", "1e300", "3.141592653589793", "true", "false", "null",
		"{\"a\":1,\"b\":[1,2,{\"c\":null}],\"d\":\"x\"}",
		"{\"z\":1,\"a\":2,\"m\":3}",
		"[\"\\u0000\\u0001\\u001f\\b\\f\\n\\r\\t\\\"\\\\/\\u007f\"]",
		"{\"k\\ny\":\"\\u00e9\\u0000\\u4e2d\\ud83d\\ude00\"}",
		"[[[[[[[[[[[[[[[[[[[[]]]]]]]]]]]]]]]]]]]]",
	};
	for (size_t i = 0; i < CVM_ARRAY_SIZE(docs); i++) {
		json_error_t je;
		json_t *v = json_loads(docs[i], JSON_DECODE_ANY | JSON_ALLOW_NUL, &je);
		assert_non_null(v);
		char *ours = cvm_json_dump(v);
		char *ref = json_dumps(v, JSON_COMPACT | JSON_ENCODE_ANY);
		assert_non_null(ours);
		assert_string_equal(ours, ref);
		free(ours);
		free(ref);
		json_decref(v);
	}
	/* A long base64url string (a JWS) and a string of every byte value 1..255 in UTF-8. */
	char *big = malloc(20001);
	assert_non_null(big);
	for (size_t i = 0; i < 20000; i++)
		big[i] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_."[i % 65];
	big[20000] = 0;
	json_t *v = json_pack("{s:s,s:[s]}", "value", big, "x", "\x01\x7f\xc3\xa9\xe2\x82\xac");
	assert_non_null(v);
	char *ours = cvm_json_dump(v), *ref = json_dumps(v, JSON_COMPACT | JSON_ENCODE_ANY);
	assert_string_equal(ours, ref);
	free(ours);
	free(ref);
	/* Appending to a buffer that already holds text keeps it, and a too-deep value appends
	 * nothing. */
	struct cvm_buf b = { 0 };
	assert_int_equal(cvm_buf_append_str(&b, "prefix:"), 0);
	assert_int_equal(cvm_json_dump_buf(json_object_get(v, "x"), &b), 0);
	assert_string_equal((char *)b.data, "prefix:[\"\\u0001\x7f\xc3\xa9\xe2\x82\xac\"]");
	json_decref(v);
	json_t *deep = json_array(), *cur = deep;
	for (int i = 0; i < 2100; i++) {
		json_t *n = json_array();
		json_array_append_new(cur, n);
		cur = n;
	}
	size_t before = b.len;
	assert_int_equal(cvm_json_dump_buf(deep, &b), -ELOOP);
	assert_int_equal(b.len, before);
	assert_null(cvm_json_dump(deep));
	json_decref(deep);
	cvm_buf_free(&b);
	free(big);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_parse_ok_and_errors),
		cmocka_unit_test(test_parse_depth_limit),
		cmocka_unit_test(test_parse_size_limit),
		cmocka_unit_test(test_str),
		cmocka_unit_test(test_int),
		cmocka_unit_test(test_bool),
		cmocka_unit_test(test_obj_arr),
		cmocka_unit_test(test_b64url),
		cmocka_unit_test(test_enum),
		cmocka_unit_test(test_str_array),
		cmocka_unit_test(test_dump_and_set_b64url),
		cmocka_unit_test(test_string_lossy),
		cmocka_unit_test(test_path),
		cmocka_unit_test(test_dump_matches_jansson),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
