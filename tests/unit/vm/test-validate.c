/* SPDX-License-Identifier: Apache-2.0 */
/* vm validate's checks: the OVMF variable-store reader on Debian's real VARS files and on
 * crafted stores, and the attestation/boot-integrity checks over a real (in-memory SQLite)
 * store whose audit log holds the VM's transitions and the orchestrator's release record. */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include <opencvm/audit.h>
#include <opencvm/store.h>
#include <opencvm/vm.h>

/* ---- OVMF variable store -------------------------------------------------------------------- */

static void test_debian_vars(void **state)
{
	(void)state;
	static const struct { const char *path; bool enabled; } files[] = {
		{ "/usr/share/OVMF/OVMF_VARS_4M.ms.fd", true },
		{ "/usr/share/OVMF/OVMF_VARS_4M.fd", false },
	};
	for (size_t i = 0; i < CVM_ARRAY_SIZE(files); i++) {
		if (access(files[i].path, R_OK) != 0) {
			print_message("skipped: %s absent (Debian package ovmf)\n", files[i].path);
			continue;
		}
		_cleanup_free_ uint8_t *d = NULL;
		size_t len = 0;
		struct cvm_err err = { 0 };
		struct cvm_ovmf_secure_boot sb;
		assert_int_equal(cvm_file_read(files[i].path, 64u << 20, &d, &len, &err), 0);
		assert_int_equal(cvm_ovmf_vars_secure_boot(d, len, &sb, &err), 0);
		assert_int_equal(sb.enabled, files[i].enabled);
		assert_int_equal(sb.pk, files[i].enabled);
		assert_int_equal(sb.kek, files[i].enabled);
		assert_int_equal(sb.db, files[i].enabled);
	}
}

/* A crafted store: FV header (0x48 bytes), authenticated store header, variables. */
struct store {
	uint8_t d[4096];
	size_t p;
};

static void put16(uint8_t *p, uint16_t v) { p[0] = (uint8_t)v; p[1] = (uint8_t)(v >> 8); }
static void put32(uint8_t *p, uint32_t v) { put16(p, (uint16_t)v); put16(p + 2, (uint16_t)(v >> 16)); }

static void store_init(struct store *s)
{
	static const uint8_t auth[16] = { 0x78, 0x2c, 0xf3, 0xaa, 0x7b, 0x94, 0x9a, 0x43,
					  0xa1, 0x80, 0x2e, 0x14, 0x4e, 0xc3, 0x77, 0x92 };
	memset(s, 0, sizeof(*s));
	memcpy(s->d + 40, "_FVH", 4);
	put16(s->d + 48, 0x48);
	memcpy(s->d + 0x48, auth, 16);
	put32(s->d + 0x48 + 16, sizeof(s->d) - 0x48);
	s->d[0x48 + 20] = 0x5a;
	s->d[0x48 + 21] = 0xfe;
	s->p = 0x48 + 28;
}

static void store_var(struct store *s, const uint8_t guid[16], const char *name, uint8_t state,
		      const uint8_t *data, uint32_t dlen)
{
	uint8_t *h = s->d + s->p;
	uint32_t nlen = (uint32_t)(2 * (strlen(name) + 1));
	put16(h, 0x55AA);
	h[2] = state;
	put32(h + 36, nlen);
	put32(h + 40, dlen);
	memcpy(h + 44, guid, 16);
	for (size_t i = 0; i <= strlen(name); i++)
		put16(h + 60 + 2 * i, (uint16_t)name[i]);
	memcpy(h + 60 + nlen, data, dlen);
	s->p = (s->p + 60 + nlen + dlen + 3) & ~(size_t)3;
}

static const uint8_t global[16] = { 0x61, 0xdf, 0xe4, 0x8b, 0xca, 0x93, 0xd2, 0x11,
				    0xaa, 0x0d, 0x00, 0xe0, 0x98, 0x03, 0x2b, 0x8c };
static const uint8_t sb_enable[16] = { 0xc7, 0x0b, 0xa3, 0xf0, 0x08, 0xaf, 0x56, 0x45,
				       0x99, 0xc4, 0x00, 0x10, 0x09, 0xc9, 0x3a, 0x44 };

static void test_crafted_vars(void **state)
{
	(void)state;
	struct store s;
	struct cvm_ovmf_secure_boot sb;
	struct cvm_err err = { 0 };
	const uint8_t cert[8] = "certpk!", one = 1, zero = 0;

	/* PK live, SecureBootEnable absent: edk2 turns Secure Boot on */
	store_init(&s);
	store_var(&s, global, "PK", 0x3f, cert, sizeof(cert));
	assert_int_equal(cvm_ovmf_vars_secure_boot(s.d, sizeof(s.d), &sb, &err), 0);
	assert_true(sb.enabled);
	assert_int_equal(sb.secure_boot_enable, -1);

	/* ... and off when SecureBootEnable is 0 */
	store_var(&s, sb_enable, "SecureBootEnable", 0x3f, &zero, 1);
	assert_int_equal(cvm_ovmf_vars_secure_boot(s.d, sizeof(s.d), &sb, &err), 0);
	assert_false(sb.enabled);
	store_var(&s, sb_enable, "SecureBootEnable", 0x3f, &one, 1);
	assert_int_equal(cvm_ovmf_vars_secure_boot(s.d, sizeof(s.d), &sb, &err), 0);
	assert_true(sb.enabled);

	/* a deleted PK (state 0x3c) is not enrolled */
	store_init(&s);
	store_var(&s, global, "PK", 0x3c, cert, sizeof(cert));
	assert_int_equal(cvm_ovmf_vars_secure_boot(s.d, sizeof(s.d), &sb, &err), 0);
	assert_false(sb.pk);
	assert_false(sb.enabled);
	assert_int_equal(sb.variables, 1);

	/* a variable claiming more data than the store holds */
	store_init(&s);
	store_var(&s, global, "PK", 0x3f, cert, sizeof(cert));
	put32(s.d + 0x48 + 28 + 40, 1u << 30);
	assert_int_equal(cvm_ovmf_vars_secure_boot(s.d, sizeof(s.d), &sb, &err), -EINVAL);
	assert_non_null(strstr(err.msg, "runs past the store"));

	/* not a firmware volume; not the authenticated format; store larger than the file */
	store_init(&s);
	s.d[40] = 'X';
	assert_int_equal(cvm_ovmf_vars_secure_boot(s.d, sizeof(s.d), &sb, &err), -EINVAL);
	assert_non_null(strstr(err.msg, "_FVH"));
	store_init(&s);
	s.d[0x48] ^= 1;
	assert_int_equal(cvm_ovmf_vars_secure_boot(s.d, sizeof(s.d), &sb, &err), -EINVAL);
	assert_non_null(strstr(err.msg, "authenticated"));
	store_init(&s);
	assert_int_equal(cvm_ovmf_vars_secure_boot(s.d, 200, &sb, &err), -EINVAL);
	assert_non_null(strstr(err.msg, "store size"));
}

/* ---- attestation and boot integrity --------------------------------------------------------- */

struct fx {
	struct cvm_store *store;
	struct cvm_audit *audit;
	struct cvm_vm_sizes sizes;
	uint8_t measurement[48];
};

static int setup(void **state)
{
	struct fx *fx = calloc(1, sizeof(*fx));
	struct cvm_err err = { 0 };
	_cleanup_free_ char *path = NULL;
	if (!fx || cvm_store_open("sqlite::memory:", &fx->store, &err) < 0 ||
	    cvm_audit_open(fx->store, &fx->audit, &err) < 0 ||
	    cvm_vm_sizes_locate(NULL, &path, &err) < 0 ||
	    cvm_vm_sizes_load(path, &fx->sizes, &err) < 0) {
		fprintf(stderr, "setup: %s\n", err.msg);
		return -1;
	}
	for (size_t i = 0; i < sizeof(fx->measurement); i++)
		fx->measurement[i] = (uint8_t)(0xa0 + i);
	*state = fx;
	return 0;
}

static int teardown(void **state)
{
	struct fx *fx = *state;
	cvm_vm_sizes_clear(&fx->sizes);
	cvm_audit_close(fx->audit);
	cvm_store_close(fx->store);
	free(fx);
	return 0;
}

static void move(struct fx *fx, const char *name, enum cvm_vm_state to)
{
	struct cvm_err err = { 0 };
	assert_int_equal(cvm_vm_transition(fx->store, name, NULL, to, NULL, "cvo", &err), 0);
}

/* The orchestrator's record of a release (orch.c), claims as the token carried them. */
static void release(struct fx *fx, const char *name, const char *result, int64_t iat_s,
		    int64_t exp_s, bool debuggable)
{
	char m[97], detail[512];
	for (size_t i = 0; i < 48; i++)
		snprintf(m + 2 * i, 3, "%02x", fx->measurement[i]);
	snprintf(detail, sizeof(detail),
		 "{\"x-ms-attestation-type\":\"sevsnpvm\",\"x-ms-sevsnpvm-launchmeasurement\":\"%s\","
		 "\"x-ms-sevsnpvm-is-debuggable\":%s,\"x-opencvm-emulated\":true,\"iat\":%lld,"
		 "\"exp\":%lld}", m, debuggable ? "true" : "false", (long long)iat_s,
		 (long long)exp_s);
	struct cvm_audit_event ev = { .principal = "cvo", .operation = "vms/release",
				      .key_name = name, .status = strcmp(result, "ok") ? 403 : 200,
				      .result = result, .detail = detail };
	struct cvm_err err = { 0 };
	assert_int_equal(cvm_audit_append(fx->audit, &ev, NULL, &err), 0);
}

static json_t *run(struct fx *fx, const char *name, const uint8_t *reference, int *failed)
{
	struct cvm_vm vm = { 0 };
	struct cvm_err err = { 0 };
	assert_int_equal(cvm_vm_get(fx->store, name, &vm, &err), 0);
	struct cvm_vm_validate_in in = { .store = fx->store, .vm = &vm,
					 .firmware = CVM_VM_OVMF_CODE,
					 .vars_file = "/usr/share/OVMF/OVMF_VARS_4M.ms.fd",
					 .reference = reference, .now_ms = cvm_now_ms() };
	json_t *checks = NULL;
	assert_int_equal(cvm_vm_validate(&in, &checks, failed, &err), 0);
	cvm_vm_clear(&vm);
	return checks;
}

static json_t *check(json_t *checks, const char *name)
{
	size_t i;
	json_t *c;
	json_array_foreach(checks, i, c)
		if (strcmp(json_string_value(json_object_get(c, "check")), name) == 0)
			return c;
	fail_msg("no check %s", name);
	return NULL;
}

static bool passed(json_t *checks, const char *name)
{
	return json_is_true(json_object_get(check(checks, name), "passed"));
}

static bool detail_has(json_t *checks, const char *name, const char *text)
{
	return strstr(json_string_value(json_object_get(check(checks, name), "detail")), text);
}

static void boot(struct fx *fx, const char *name)
{
	struct cvm_vm in = { .name = (char *)name, .size = "Standard_DC2as_v5",
			     .security = CVM_VM_SEC_CONFIDENTIAL, .tee = CVM_VM_TEE_EMULATED,
			     .os_disk = "osdisk1", .des = "des1" };
	struct cvm_err err = { 0 };
	assert_int_equal(cvm_vm_create(fx->store, &fx->sizes, &in, "alice", &err), 0);
	move(fx, name, CVM_VM_STOPPED);
	move(fx, name, CVM_VM_STARTING);
	move(fx, name, CVM_VM_ATTESTING);
}

static void test_attested_boot(void **state)
{
	struct fx *fx = *state;
	int64_t now = cvm_now();
	int failed = -1;
	boot(fx, "good");
	release(fx, "good", "ok", now, now + 3600, false);
	move(fx, "good", CVM_VM_RUNNING);
	json_t *c = run(fx, "good", fx->measurement, &failed);
	bool has_ovmf = access("/usr/share/OVMF/OVMF_VARS_4M.ms.fd", R_OK) == 0;
	assert_int_equal(failed, has_ovmf ? 1 : 2); /* vTPM: no swtpm, no VMGS here */
	assert_true(passed(c, "securityType"));
	assert_int_equal(passed(c, "secureBoot"), has_ovmf);
	assert_false(passed(c, "vTPM"));
	assert_true(passed(c, "attestation"));
	assert_true(detail_has(c, "attestation", "EMULATED"));
	assert_true(passed(c, "bootIntegrity"));
	json_decref(c);

	/* another reference: named mismatch; no reference: refused, not assumed */
	uint8_t other[48];
	memcpy(other, fx->measurement, sizeof(other));
	other[47] ^= 1;
	c = run(fx, "good", other, &failed);
	assert_false(passed(c, "bootIntegrity"));
	assert_true(detail_has(c, "bootIntegrity", "differs from the pinned"));
	json_decref(c);
	c = run(fx, "good", NULL, &failed);
	assert_false(passed(c, "bootIntegrity"));
	assert_true(detail_has(c, "bootIntegrity", "no pinned reference"));
	json_decref(c);

	/* the next boot has not been attested yet: the old release does not count */
	move(fx, "good", CVM_VM_STOPPING);
	move(fx, "good", CVM_VM_STOPPED);
	c = run(fx, "good", fx->measurement, &failed);
	assert_false(passed(c, "attestation"));
	assert_true(detail_has(c, "attestation", "not running"));
	json_decref(c);
}

static void test_refusals(void **state)
{
	struct fx *fx = *state;
	int64_t now = cvm_now();
	int failed = -1;
	json_t *c;

	boot(fx, "refused");
	release(fx, "refused", "Forbidden", now, now + 3600, false);
	move(fx, "refused", CVM_VM_RUNNING);
	c = run(fx, "refused", fx->measurement, &failed);
	assert_false(passed(c, "attestation"));
	assert_true(detail_has(c, "attestation", "refused (Forbidden)"));
	json_decref(c);

	boot(fx, "expired");
	release(fx, "expired", "ok", now - 60, now - 1, false);
	move(fx, "expired", CVM_VM_RUNNING);
	c = run(fx, "expired", fx->measurement, &failed);
	assert_false(passed(c, "attestation"));
	assert_true(detail_has(c, "attestation", "expired"));
	json_decref(c);

	boot(fx, "debug");
	release(fx, "debug", "ok", now, now + 3600, true);
	move(fx, "debug", CVM_VM_RUNNING);
	c = run(fx, "debug", fx->measurement, &failed);
	assert_false(passed(c, "attestation"));
	assert_true(detail_has(c, "attestation", "debuggable"));
	json_decref(c);

	/* a token from before this boot (replayed from an earlier one) */
	boot(fx, "stale");
	release(fx, "stale", "ok", now - 3600, now + 3600, false);
	move(fx, "stale", CVM_VM_RUNNING);
	c = run(fx, "stale", fx->measurement, &failed);
	assert_false(passed(c, "attestation"));
	assert_true(detail_has(c, "attestation", "before this boot started"));
	json_decref(c);

	/* no release at all */
	boot(fx, "never");
	move(fx, "never", CVM_VM_RUNNING);
	c = run(fx, "never", fx->measurement, &failed);
	assert_false(passed(c, "attestation"));
	assert_true(detail_has(c, "attestation", "no disk-key release"));
	json_decref(c);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_debian_vars),
		cmocka_unit_test(test_crafted_vars),
		cmocka_unit_test_setup_teardown(test_attested_boot, setup, teardown),
		cmocka_unit_test_setup_teardown(test_refusals, setup, teardown),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
