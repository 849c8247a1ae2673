/* SPDX-License-Identifier: Apache-2.0 */
/* cvmd config file: every key, defaults, and errors naming the line. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <string.h>
#include <cmocka.h>

#include "daemon/daemon.h"

static int parse(struct cvmd_config *c, const char *text, struct cvm_err *err)
{
	return cvmd_config_parse(c, (const uint8_t *)text, strlen(text), err);
}

static void test_full(void **state)
{
	(void)state;
	struct cvmd_config c;
	struct cvm_err err = { 0 };
	cvmd_config_init(&c);
	static const char text[] =
		"# comment\n"
		"\n"
		"listen = [::1]:9443\n"
		"state_dir = /var/lib/cvmd\n"
		"store = postgres://u@h:5432/db\n"
		"tls_cert = /etc/c.pem\n"
		"tls_key = \"/etc/k.pem\"\n"
		"services = hsm\n"
		"base_url = https://hsm.example\n"
		"soft_delete_days = 30\n"
		"purge_protection = yes\n"
		"domain_key_file = /etc/cvmd/domain.key\n"
		"admin_credentials_file = /root/admin.json\n"
		"attest_emulator_root = /x\n"
		"attest_emulator_fingerprint = ab12\n"
		"threads = 8\n"
		"  log_level = debug   \n";
	if (parse(&c, text, &err) != 0)
		fail_msg("%s", err.msg);
	assert_int_equal(cvmd_config_finish(&c, &err), 0);
	assert_string_equal(c.listen, "[::1]:9443");
	assert_string_equal(c.store, "postgres://u@h:5432/db");
	assert_string_equal(c.tls_key, "/etc/k.pem");
	assert_true(c.svc_hsm);
	assert_false(c.svc_attest);
	assert_int_equal(c.soft_delete_days, 30);
	assert_true(c.purge_protection);
	assert_int_equal(c.threads, 8);
	assert_int_equal(c.log_level, CVM_LOG_DEBUG);
	assert_string_equal(c.domain_key_file, "/etc/cvmd/domain.key");
	assert_string_equal(c.attest_emulator_fingerprint, "ab12");
	cvmd_config_free(&c);
}

static void test_defaults(void **state)
{
	(void)state;
	struct cvmd_config c;
	struct cvm_err err = { 0 };
	cvmd_config_init(&c);
	assert_int_equal(parse(&c, "state_dir = /s\ntls_cert = auto\ntls_key = auto\n", &err), 0);
	assert_int_equal(cvmd_config_finish(&c, &err), 0);
	assert_string_equal(c.listen, "127.0.0.1:8443"); /* loopback by default */
	assert_string_equal(c.store, "sqlite:/s/cvmd.db");
	assert_null(c.tls_cert);
	assert_null(c.tls_key);
	assert_true(c.svc_hsm && c.svc_attest);
	assert_int_equal(c.soft_delete_days, 90);
	assert_false(c.purge_protection);
	cvmd_config_free(&c);
}

static void test_errors(void **state)
{
	(void)state;
	static const struct {
		const char *text, *expect;
	} bad[] = {
		{ "state_dir = /s\nsoft_delete_days = 6\n", "line 2: soft_delete_days" },
		{ "soft_delete_days = 91\n", "line 1: soft_delete_days" },
		{ "purge_protection = maybe\n", "line 1: purge_protection" },
		{ "services = hsm, vault\n", "line 1: services: unknown service \"vault\"" },
		{ "services = ,\n", "services: enable at least one" },
		{ "log_level = loud\n", "log_level" },
		{ "\n\nno equals sign\n", "line 3: expected key = value" },
		{ "= value\n", "line 1: empty key" },
		{ "tenant = x\n", "line 1: unknown key \"tenant\"" },
		{ "threads = -1\n", "line 1: threads" },
	};
	for (size_t i = 0; i < CVM_ARRAY_SIZE(bad); i++) {
		struct cvmd_config c;
		struct cvm_err err = { 0 };
		cvmd_config_init(&c);
		assert_int_equal(parse(&c, bad[i].text, &err), -EINVAL);
		if (!strstr(err.msg, bad[i].expect))
			fail_msg("case %zu: \"%s\" lacks \"%s\"", i, err.msg, bad[i].expect);
		cvmd_config_free(&c);
	}
	struct cvmd_config c;
	struct cvm_err err = { 0 };
	cvmd_config_init(&c);
	assert_int_equal(cvmd_config_finish(&c, &err), -EINVAL); /* state_dir required */
	assert_non_null(strstr(err.msg, "state_dir"));
	assert_int_equal(parse(&c, "state_dir = /s\ntls_cert = /c.pem\n", &err), 0);
	assert_int_equal(cvmd_config_finish(&c, &err), -EINVAL); /* cert without key */
	assert_non_null(strstr(err.msg, "tls_key"));
	cvmd_config_free(&c);
	/* Trusting the emulator needs its directory and the pinned fingerprint together (outside
	 * --dev, which trusts its own emulator). */
	static const char *const emu_half[] = { "state_dir = /s\nattest_emulator_root = /x\n",
						"state_dir = /s\nattest_emulator_fingerprint = ab\n" };
	for (size_t i = 0; i < CVM_ARRAY_SIZE(emu_half); i++) {
		cvmd_config_init(&c);
		assert_int_equal(parse(&c, emu_half[i], &err), 0);
		assert_int_equal(cvmd_config_finish(&c, &err), -EINVAL);
		assert_non_null(strstr(err.msg, "attest_emulator_fingerprint"));
		c.dev = true;
		assert_int_equal(cvmd_config_finish(&c, &err), 0);
		cvmd_config_free(&c);
	}
	/* NUL bytes are refused, not truncated */
	cvmd_config_init(&c);
	assert_int_equal(cvmd_config_parse(&c, (const uint8_t *)"listen = a\0b\n", 13, &err),
			 -EINVAL);
	cvmd_config_free(&c);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_full),
		cmocka_unit_test(test_defaults),
		cmocka_unit_test(test_errors),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
