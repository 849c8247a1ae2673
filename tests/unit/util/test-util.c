/* SPDX-License-Identifier: Apache-2.0 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <string.h>
#include <cmocka.h>

#include <opencvm/util.h>

static void test_b64url_roundtrip(void **state)
{
	(void)state;
	const char *vectors[][2] = {{"", ""}, {"f", "Zg"}, {"fo", "Zm8"}, {"foo", "Zm9v"},
				    {"foob", "Zm9vYg"}, {"\xfb\xff", "-_8"}};
	for (size_t i = 0; i < CVM_ARRAY_SIZE(vectors); i++) {
		_cleanup_free_ char *e = cvm_b64url_encode(vectors[i][0], strlen(vectors[i][0]));
		assert_string_equal(e, vectors[i][1]);
		_cleanup_free_ uint8_t *d = NULL;
		size_t dl;
		struct cvm_err err = {0};
		assert_int_equal(cvm_b64url_decode(e, strlen(e), &d, &dl, "v", &err), 0);
		assert_int_equal(dl, strlen(vectors[i][0]));
		assert_memory_equal(d, vectors[i][0], dl);
	}
}

static void test_b64_padding_and_errors(void **state)
{
	(void)state;
	struct cvm_err err = {0};
	_cleanup_free_ uint8_t *d = NULL;
	size_t dl;
	assert_int_equal(cvm_b64url_decode("Zm8=", 4, &d, &dl, "x", &err), 0);
	assert_int_equal(dl, 2);
	assert_int_equal(cvm_b64url_decode("Z", 1, &d, &dl, "field", &err), -EINVAL);
	assert_non_null(strstr(err.msg, "field"));
	assert_int_equal(cvm_b64url_decode("Zm+v", 4, &d, &dl, "x", &err), -EINVAL);
	assert_int_equal(cvm_b64url_decode("Zm8===", 6, &d, &dl, "x", &err), -EINVAL);
	free(d);
	d = NULL;
	assert_int_equal(cvm_b64_decode("Zm9v\nYg==", 9, &d, &dl, "x", &err), 0);
	assert_int_equal(dl, 4);
	assert_string_equal(err.code, "BadParameter");
}

static void test_hex(void **state)
{
	(void)state;
	struct cvm_err err = {0};
	uint8_t out[2];
	assert_int_equal(cvm_hex_decode_fixed("aBff", out, 2, "h", &err), 0);
	assert_int_equal(out[0], 0xab);
	assert_int_equal(cvm_hex_decode_fixed("abf", out, 2, "h", &err), -EINVAL);
	assert_int_equal(cvm_hex_decode_fixed("abfg", out, 2, "h", &err), -EINVAL);
	_cleanup_free_ char *h = cvm_hex_encode(out, 1);
	assert_string_equal(h, "ab");
}

static void test_secret(void **state)
{
	(void)state;
	_cleanup_secret_ struct cvm_secret *s = cvm_secret_from("abc", 3);
	assert_non_null(s);
	assert_true(cvm_secret_eq(s, "abc", 3));
	assert_false(cvm_secret_eq(s, "abd", 3));
	assert_false(cvm_secret_eq(s, "ab", 2));
	_cleanup_secret_ struct cvm_secret *r = cvm_secret_random(32);
	assert_non_null(r);
	assert_int_equal(r->len, 32);
}

static void test_duration(void **state)
{
	(void)state;
	struct cvm_err err = {0};
	int64_t s;
	assert_int_equal(cvm_duration_parse("P90D", &s, "d", &err), 0);
	assert_int_equal(s, 90 * 86400);
	assert_int_equal(cvm_duration_parse("P1Y2M", &s, "d", &err), 0);
	assert_int_equal(s, 365 * 86400 + 60 * 86400);
	assert_int_equal(cvm_duration_parse("PT1H30M", &s, "d", &err), 0);
	assert_int_equal(s, 5400);
	assert_int_equal(cvm_duration_parse("P", &s, "d", &err), -EINVAL);
	assert_int_equal(cvm_duration_parse("90D", &s, "d", &err), -EINVAL);
	assert_int_equal(cvm_duration_parse("P1H", &s, "d", &err), -EINVAL);
}

static void test_ids(void **state)
{
	(void)state;
	char v[33], u[37];
	assert_int_equal(cvm_random_hex32(v, NULL), 0);
	assert_int_equal(strlen(v), 32);
	assert_int_equal(cvm_uuid4(u, NULL), 0);
	assert_int_equal(u[14], '4');
	assert_int_equal(strlen(u), 36);
}

static void test_buf_and_err(void **state)
{
	(void)state;
	_cleanup_buf_ struct cvm_buf b = {0};
	assert_int_equal(cvm_buf_printf(&b, "%s=%d", "a", 5), 0);
	assert_int_equal(cvm_buf_append_str(&b, "!"), 0);
	assert_string_equal(cvm_buf_cstr(&b), "a=5!");
	struct cvm_err err = {0};
	assert_int_equal(cvm_err_set(&err, ENOENT, "KeyNotFound", "key %s", "k"), -ENOENT);
	assert_int_equal(cvm_err_http_status(&err), 404);
	cvm_err_prefix(&err, "get");
	assert_string_equal(err.msg, "get: key k");
	int64_t v;
	assert_int_equal(cvm_parse_i64("12", 1, 25, &v, "maxresults", &err), 0);
	assert_int_equal(cvm_parse_i64("26", 1, 25, &v, "maxresults", &err), -EINVAL);
	assert_non_null(strstr(err.msg, "maxresults"));
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_b64url_roundtrip), cmocka_unit_test(test_b64_padding_and_errors),
		cmocka_unit_test(test_hex),		 cmocka_unit_test(test_secret),
		cmocka_unit_test(test_duration),	 cmocka_unit_test(test_ids),
		cmocka_unit_test(test_buf_and_err),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
