/* SPDX-License-Identifier: Apache-2.0 */
/* VMGS sealing of vTPM + UEFI variable state, and the host side of the emulated TEE. */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <ftw.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include <opencvm/crypto.h>
#include <opencvm/vm.h>

struct fx {
	char dir[64];
	char emu[96];
};

static int rm_cb(const char *p, const struct stat *s, int f, struct FTW *w)
{
	(void)s, (void)f, (void)w;
	return remove(p);
}

static int setup(void **state)
{
	struct fx *fx = calloc(1, sizeof(*fx));
	snprintf(fx->dir, sizeof(fx->dir), "/tmp/cvm-vmgs-test-XXXXXX");
	if (!mkdtemp(fx->dir))
		return -1;
	snprintf(fx->emu, sizeof(fx->emu), "%s/emu", fx->dir);
	struct cvm_err err = { 0 };
	struct cvm_tee_emu_params p = { .product = CVM_SNP_PRODUCT_GENOA,
					.tcb = { .bl = 3, .snp = 8, .ucode = 115 } };
	char fp[65];
	if (cvm_tee_emu_init(fx->emu, &p, fp, &err) < 0) {
		fprintf(stderr, "emu init: %s\n", err.msg);
		return -1;
	}
	*state = fx;
	return 0;
}

static int teardown(void **state)
{
	struct fx *fx = *state;
	nftw(fx->dir, rm_cb, 16, FTW_DEPTH | FTW_PHYS);
	free(fx);
	return 0;
}

static char *mkpath(struct fx *fx, const char *name)
{
	return cvm_asprintf("%s/%s", fx->dir, name);
}

static void put(const char *path, const char *content)
{
	struct cvm_err err = { 0 };
	assert_int_equal(cvm_file_write_atomic(path, content, strlen(content), 0600, &err), 0);
}

static void expect_file(const char *path, const char *content)
{
	_cleanup_free_ uint8_t *d = NULL;
	size_t l = 0;
	struct cvm_err err = { 0 };
	assert_int_equal(cvm_file_read(path, 1 << 20, &d, &l, &err), 0);
	assert_int_equal(l, strlen(content));
	assert_memory_equal(d, content, l);
}

static bool contains(const uint8_t *h, size_t hl, const char *needle)
{
	size_t nl = strlen(needle);
	for (size_t i = 0; i + nl <= hl; i++)
		if (memcmp(h + i, needle, nl) == 0)
			return true;
	return false;
}

static void test_seal_roundtrip(void **state)
{
	struct fx *fx = *state;
	struct cvm_err err = { 0 };
	_cleanup_free_ char *tpm = mkpath(fx, "tpm"), *vars = mkpath(fx, "vars.fd"),
			    *blob = mkpath(fx, "vmgs.bin"), *tpm2 = mkpath(fx, "tpm2"),
			    *vars2 = mkpath(fx, "vars2.fd");
	assert_int_equal(cvm_mkdir_p(tpm, 0700, &err), 0);
	_cleanup_free_ char *f1 = cvm_path_join(tpm, "tpm2-00.permall");
	put(f1, "PLAINTEXT-VTPM-STATE-MARKER sealed value 42");
	put(vars, "UEFI-VARS-PLAINTEXT-MARKER db=ours");
	_cleanup_secret_ struct cvm_secret *key = cvm_secret_random(32);
	assert_int_equal(cvm_vmgs_seal(tpm, vars, "vm1", key, blob, &err), 0);

	/* Nothing readable at rest. */
	_cleanup_free_ uint8_t *b = NULL;
	size_t bl = 0;
	assert_int_equal(cvm_file_read(blob, 1 << 20, &b, &bl, &err), 0);
	assert_false(contains(b, bl, "PLAINTEXT-VTPM-STATE-MARKER"));
	assert_false(contains(b, bl, "UEFI-VARS-PLAINTEXT-MARKER"));
	assert_false(contains(b, bl, "tpm2-00.permall"));

	assert_int_equal(cvm_vmgs_unseal(blob, "vm1", key, tpm2, vars2, &err), 0);
	_cleanup_free_ char *g1 = cvm_path_join(tpm2, "tpm2-00.permall");
	expect_file(g1, "PLAINTEXT-VTPM-STATE-MARKER sealed value 42");
	expect_file(vars2, "UEFI-VARS-PLAINTEXT-MARKER db=ours");
}

static void test_unseal_refusals(void **state)
{
	struct fx *fx = *state;
	struct cvm_err err = { 0 };
	_cleanup_free_ char *tpm = mkpath(fx, "tpmr"), *vars = mkpath(fx, "varsr.fd"),
			    *blob = mkpath(fx, "vmgs-r.bin"), *out = mkpath(fx, "tpmr-out"),
			    *vout = mkpath(fx, "varsr-out.fd");
	assert_int_equal(cvm_mkdir_p(tpm, 0700, &err), 0);
	_cleanup_free_ char *f1 = cvm_path_join(tpm, "state");
	put(f1, "s");
	put(vars, "v");
	_cleanup_secret_ struct cvm_secret *key = cvm_secret_random(32);
	_cleanup_secret_ struct cvm_secret *other = cvm_secret_random(32);
	assert_int_equal(cvm_vmgs_seal(tpm, vars, "vm1", key, blob, &err), 0);
	/* wrong key, other VM's name: refused, nothing written */
	assert_int_equal(cvm_vmgs_unseal(blob, "vm1", other, out, vout, &err), -EBADMSG);
	assert_int_equal(cvm_vmgs_unseal(blob, "vm2", key, out, vout, &err), -EBADMSG);
	assert_int_equal(access(out, F_OK), -1);
	assert_int_equal(access(vout, F_OK), -1);
	/* a flipped bit */
	_cleanup_free_ uint8_t *b = NULL;
	size_t bl = 0;
	assert_int_equal(cvm_file_read(blob, 1 << 20, &b, &bl, &err), 0);
	b[bl / 2] ^= 1;
	assert_int_equal(cvm_file_write_atomic(blob, b, bl, 0600, &err), 0);
	assert_int_equal(cvm_vmgs_unseal(blob, "vm1", key, out, vout, &err), -EBADMSG);
	/* bad key length, missing dir */
	_cleanup_secret_ struct cvm_secret *short_key = cvm_secret_random(16);
	assert_int_equal(cvm_vmgs_seal(tpm, vars, "vm1", short_key, blob, &err), -EINVAL);
	assert_int_equal(cvm_vmgs_seal("/nonexistent-dir", vars, "vm1", key, blob, &err), -ENOENT);
	/* a state dir holding a file named like the VARS entry is refused */
	_cleanup_free_ char *clash = cvm_path_join(tpm, CVM_VMGS_VARS_NAME);
	put(clash, "x");
	assert_int_equal(cvm_vmgs_seal(tpm, vars, "vm1", key, blob, &err), -EINVAL);
	assert_non_null(strstr(err.msg, "unexpected file"));
}

static int count_fn(void *ctx, const char *name, const uint8_t *data, size_t len,
		    struct cvm_err *err)
{
	(void)name, (void)data, (void)len, (void)err;
	(*(int *)ctx)++;
	return 0;
}

static void test_parse(void **state)
{
	(void)state;
	struct cvm_err err = { 0 };
	/* "OCVMGS01", 2 files: "a" = "xy", "b.c" = "" */
	static const uint8_t ok[] = { 'O', 'C', 'V', 'M', 'G', 'S', '0', '1', 0, 0, 0, 2,
				      0, 1, 'a', 0, 0, 0, 2, 'x', 'y',
				      0, 3, 'b', '.', 'c', 0, 0, 0, 0 };
	int n = 0;
	assert_int_equal(cvm_vmgs_parse(ok, sizeof(ok), count_fn, &n, &err), 0);
	assert_int_equal(n, 2);
	/* every truncation fails */
	for (size_t l = 0; l < sizeof(ok); l++)
		assert_int_equal(cvm_vmgs_parse(ok, l, NULL, NULL, &err), -EINVAL);
	uint8_t bad[sizeof(ok) + 1];
	memcpy(bad, ok, sizeof(ok));
	bad[sizeof(ok)] = 0;
	assert_int_equal(cvm_vmgs_parse(bad, sizeof(bad), NULL, NULL, &err), -EINVAL);
	assert_non_null(strstr(err.msg, "trailing"));
	memcpy(bad, ok, sizeof(ok));
	bad[14] = '/'; /* name "/" */
	assert_int_equal(cvm_vmgs_parse(bad, sizeof(ok), NULL, NULL, &err), -EINVAL);
	assert_non_null(strstr(err.msg, "invalid name"));
	static const uint8_t dotdot[] = { 'O', 'C', 'V', 'M', 'G', 'S', '0', '1', 0, 0, 0, 1,
					  0, 2, '.', '.', 0, 0, 0, 0 };
	assert_int_equal(cvm_vmgs_parse(dotdot, sizeof(dotdot), NULL, NULL, &err), -EINVAL);
	static const uint8_t dup[] = { 'O', 'C', 'V', 'M', 'G', 'S', '0', '1', 0, 0, 0, 2,
				       0, 1, 'a', 0, 0, 0, 0, 0, 1, 'a', 0, 0, 0, 0 };
	assert_int_equal(cvm_vmgs_parse(dup, sizeof(dup), NULL, NULL, &err), -EINVAL);
	assert_non_null(strstr(err.msg, "duplicate"));
	static const uint8_t big[] = { 'O', 'C', 'V', 'M', 'G', 'S', '0', '1', 0xff, 0, 0, 0 };
	assert_int_equal(cvm_vmgs_parse(big, sizeof(big), NULL, NULL, &err), -EINVAL);
	static const uint8_t magic[] = { 'O', 'C', 'V', 'M', 'G', 'S', '0', '2', 0, 0, 0, 0 };
	assert_int_equal(cvm_vmgs_parse(magic, sizeof(magic), NULL, NULL, &err), -EINVAL);
	assert_int_equal(cvm_vmgs_parse(magic, 12, NULL, NULL, &err), -EINVAL);
}

/* ---- emulated TEE host service ----------------------------------------------------------- */

static void test_tee_emu(void **state)
{
	struct fx *fx = *state;
	struct cvm_vm_tee_emu e = { .emu_dir = fx->emu };
	memset(e.tmpl.measurement, 0xab, sizeof(e.tmpl.measurement));
	memset(e.tmpl.report_data, 0xee, sizeof(e.tmpl.report_data)); /* must be overwritten */
	char line[140] = "SNP_REPORT ";
	for (int i = 0; i < 64; i++)
		snprintf(line + 11 + 2 * i, 3, "%02x", i);
	struct cvm_err err = { 0 };
	_cleanup_free_ char *reply = NULL;
	assert_int_equal(cvm_vm_tee_emu_handle(&e, line, &reply, &err), 0);
	assert_true(cvm_str_startswith(reply, "OK "));
	assert_int_equal(strlen(reply), 3 + 2 * CVM_SNP_REPORT_SIZE + 1);
	uint8_t rep[CVM_SNP_REPORT_SIZE];
	assert_int_equal(cvm_hex_decode_fixed(reply + 3, rep, sizeof(rep), "r", &err), -EINVAL);
	reply[3 + 2 * CVM_SNP_REPORT_SIZE] = 0;
	assert_int_equal(cvm_hex_decode_fixed(reply + 3, rep, sizeof(rep), "r", &err), 0);
	struct cvm_snp_report r;
	assert_int_equal(cvm_snp_report_parse(rep, sizeof(rep), &r, &err), 0);
	for (int i = 0; i < 64; i++)
		assert_int_equal(r.report_data[i], i);
	assert_int_equal(r.measurement[0], 0xab);
	/* Verifies under the emulator root only. */
	struct cvm_attest_roots *roots = NULL;
	char fp[65];
	assert_int_equal(cvm_attest_roots_new_empty(&roots, &err), 0);
	assert_int_equal(cvm_tee_emu_fingerprint(fx->emu, fp, &err), 0);
	assert_int_equal(cvm_attest_roots_add_emulator(roots, fx->emu, fp, &err), 0);

	_cleanup_free_ char *chain = NULL;
	assert_int_equal(cvm_vm_tee_emu_handle(&e, "VCEK", &chain, &err), 0);
	assert_true(cvm_str_startswith(chain, "OK "));
	chain[strlen(chain) - 1] = 0;
	_cleanup_free_ uint8_t *pem = NULL;
	size_t pl = 0;
	assert_int_equal(cvm_hex_decode(chain + 3, strlen(chain + 3), &pem, &pl, "pem", &err), 0);
	struct cvm_snp_certs certs = { 0 };
	assert_int_equal(cvm_snp_certs_add(&certs, pem, pl, &err), 0);
	struct cvm_snp_policy pol;
	cvm_snp_policy_default(&pol);
	pol.allow_emulated = true;
	struct cvm_snp_verdict v;
	assert_int_equal(cvm_snp_verify(rep, sizeof(rep), &certs, roots, NULL, &pol, &v, &err), 0);
	assert_true(v.emulated);
	cvm_snp_certs_clear(&certs);
	cvm_attest_roots_free(roots);

	/* Refusals: bad hex, short data, unknown verb */
	static const char *const bad[] = { "SNP_REPORT zz", "SNP_REPORT 00", "MEASURE", "",
					   "SNP_REPORT" };
	for (size_t i = 0; i < CVM_ARRAY_SIZE(bad); i++) {
		_cleanup_free_ char *rp = NULL;
		assert_int_equal(cvm_vm_tee_emu_handle(&e, bad[i], &rp, &err), 0);
		assert_true(cvm_str_startswith(rp, "ERR "));
	}
	/* A broken emulator dir yields ERR, not a crash. */
	struct cvm_vm_tee_emu broken = { .emu_dir = "/nonexistent" };
	_cleanup_free_ char *rp = NULL;
	assert_int_equal(cvm_vm_tee_emu_handle(&broken, line, &rp, &err), 0);
	assert_true(cvm_str_startswith(rp, "ERR "));
}

static void test_tee_emu_serve(void **state)
{
	struct fx *fx = *state;
	struct cvm_vm_tee_emu e = { .emu_dir = fx->emu };
	int sv[2];
	assert_int_equal(socketpair(AF_UNIX, SOCK_STREAM, 0, sv), 0);
	char req[200] = "SNP_REPORT ";
	memset(req + 11, 'a', 128);
	strcpy(req + 139, "\nBOGUS\n");
	assert_int_equal(write(sv[1], req, strlen(req)), (ssize_t)strlen(req));
	shutdown(sv[1], SHUT_WR);
	struct cvm_err err = { 0 };
	assert_int_equal(cvm_vm_tee_emu_serve(&e, sv[0], &err), 0);
	char buf[4096];
	ssize_t n = read(sv[1], buf, sizeof(buf) - 1);
	assert_true(n > 0);
	buf[n] = 0;
	assert_true(cvm_str_startswith(buf, "OK "));
	char *second = strchr(buf, '\n');
	assert_non_null(second);
	assert_string_equal(second + 1, "ERR unknown request\n");
	close(sv[0]);
	close(sv[1]);
}

static int fake_relay(void *ctx, const char *kind, const uint8_t *body, size_t len,
		      struct cvm_buf *reply, struct cvm_err *err)
{
	(void)ctx;
	if (strcmp(kind, "RELEASE") == 0)
		return cvm_err_set(err, EPERM, "Forbidden", "target: claims do not satisfy\nthe policy");
	assert_string_equal(kind, "ATTEST");
	assert_int_equal(len, 2);
	assert_memory_equal(body, "{}", 2);
	return cvm_buf_append_str(reply, "{\"token\":\"t\"}");
}

static void test_relay(void **state)
{
	(void)state;
	struct cvm_err err = { 0 };
	struct cvm_vm_tee_emu e = { .emu_dir = NULL, .relay = fake_relay };
	_cleanup_free_ char *a = NULL, *b = NULL, *c = NULL, *d = NULL, *f = NULL;
	assert_int_equal(cvm_vm_tee_emu_handle(&e, "ATTEST 7b7d", &a, &err), 0);
	_cleanup_free_ char *want = cvm_hex_encode("{\"token\":\"t\"}", 13);
	_cleanup_free_ char *wl = cvm_asprintf("OK %s\n", want);
	assert_string_equal(a, wl);
	/* the refusal reaches the guest on one line, naming the check */
	assert_int_equal(cvm_vm_tee_emu_handle(&e, "RELEASE 7b7d", &b, &err), 0);
	assert_string_equal(b, "ERR RELEASE: target: claims do not satisfy the policy\n");
	assert_int_equal(cvm_vm_tee_emu_handle(&e, "ATTEST zz", &c, &err), 0);
	assert_true(cvm_str_startswith(c, "ERR "));
	/* no emulator: no reports; no relay: ATTEST refused */
	assert_int_equal(cvm_vm_tee_emu_handle(&e, "VCEK", &d, &err), 0);
	assert_true(cvm_str_startswith(d, "ERR no TEE emulator"));
	struct cvm_vm_tee_emu none = { 0 };
	assert_int_equal(cvm_vm_tee_emu_handle(&none, "ATTEST 7b7d", &f, &err), 0);
	assert_true(cvm_str_startswith(f, "ERR no orchestrator relay"));
}

static void test_emulated_measurement(void **state)
{
	struct fx *fx = *state;
	struct cvm_err err = { 0 };
	_cleanup_free_ char *fw = mkpath(fx, "fw"), *k = mkpath(fx, "k"), *i = mkpath(fx, "i");
	put(fw, "firmware");
	put(k, "kernel");
	put(i, "initrd");
	uint8_t m1[48], m2[48], m3[48];
	assert_int_equal(cvm_vm_emulated_measurement(fw, k, i, "console=ttyS0", m1, &err), 0);
	assert_int_equal(cvm_vm_emulated_measurement(fw, k, i, "console=ttyS0", m2, &err), 0);
	assert_memory_equal(m1, m2, 48);
	/* a tampered command line, kernel or initrd changes it */
	assert_int_equal(cvm_vm_emulated_measurement(fw, k, i, "console=ttyS0 init=/bin/sh", m3,
						     &err), 0);
	assert_memory_not_equal(m1, m3, 48);
	put(k, "kernel2");
	assert_int_equal(cvm_vm_emulated_measurement(fw, k, i, "console=ttyS0", m3, &err), 0);
	assert_memory_not_equal(m1, m3, 48);
	assert_int_equal(cvm_vm_emulated_measurement(fw, "/nonexistent", i, "", m3, &err), -ENOENT);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_seal_roundtrip), cmocka_unit_test(test_unseal_refusals),
		cmocka_unit_test(test_parse),          cmocka_unit_test(test_tee_emu),
		cmocka_unit_test(test_tee_emu_serve),  cmocka_unit_test(test_relay),
		cmocka_unit_test(test_emulated_measurement),
	};
	return cmocka_run_group_tests(tests, setup, teardown);
}
