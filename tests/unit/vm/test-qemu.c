/* SPDX-License-Identifier: Apache-2.0 */
/* QEMU and swtpm command lines against golden files (one argument per line), and refusals. */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include <opencvm/vm.h>

/* Compare argv with GOLDEN_DIR/name; with CVM_GOLDEN_WRITE=1 in the environment write it
 * instead (then review the diff by hand before committing). */
static void golden(char **argv, const char *name)
{
	_cleanup_free_ char *got = cvm_argv_join(argv, "\n");
	assert_non_null(got);
	_cleanup_free_ char *path = cvm_asprintf("%s/%s", GOLDEN_DIR, name);
	struct cvm_err err = { 0 };
	const char *w = getenv("CVM_GOLDEN_WRITE");
	if (w && strcmp(w, "1") == 0) {
		_cleanup_free_ char *with_nl = cvm_asprintf("%s\n", got);
		assert_int_equal(cvm_file_write_atomic(path, with_nl, strlen(with_nl), 0644, &err), 0);
		return;
	}
	_cleanup_free_ uint8_t *want = NULL;
	size_t wl = 0;
	if (cvm_file_read(path, 1 << 20, &want, &wl, &err) < 0)
		fail_msg("%s: %s", name, err.msg);
	assert_true(wl > 0 && want[wl - 1] == '\n');
	want[wl - 1] = 0;
	if (strcmp((char *)want, got) != 0)
		fail_msg("%s differs:\n--- want\n%s\n--- got\n%s", name, (char *)want, got);
}

static struct cvm_vm_launch base(void)
{
	return (struct cvm_vm_launch){
		.name = "demo-vm",
		.vcpus = 2,
		.memory_mib = 2048,
		.accel = CVM_VM_ACCEL_TCG,
		.tee = CVM_VM_TEE_EMULATED,
		.ovmf_code = "/usr/share/OVMF/OVMF_CODE_4M.secboot.fd",
		.ovmf_vars = "/run/opencvm/vms/demo-vm/OVMF_VARS.fd",
		.secure_boot = true,
		.swtpm_sock = "/run/opencvm/vms/demo-vm/swtpm.sock",
		.os_disk = "/var/lib/opencvm/disks/os,1.img",
		.tee_sock = "/run/opencvm/vms/demo-vm/tee.sock",
		.serial_log = "/var/lib/opencvm/vms/demo-vm/console.log",
		.qmp_sock = "/run/opencvm/vms/demo-vm/qmp.sock",
	};
}

static void test_tcg_emulated(void **state)
{
	(void)state;
	struct cvm_vm_launch l = base();
	const char *data[] = { "/d/data0.img", "/d/data1.img" };
	const char *serials[] = { "data1", "logs_2026-x" };
	l.data_disks = data;
	l.data_disk_serials = serials;
	l.n_data_disks = 2;
	l.temp_disk = "/run/opencvm/vms/demo-vm/temp.img";
	l.netdev = "user,id=net0,hostfwd=tcp:127.0.0.1:18080-:80";
	char **argv = NULL;
	struct cvm_err err = { 0 };
	assert_int_equal(cvm_vm_qemu_argv(&l, &argv, &err), 0);
	golden(argv, "tcg-emulated.argv");
	cvm_argv_free(argv);
}

static void test_kvm_plain(void **state)
{
	(void)state;
	struct cvm_vm_launch l = base();
	l.accel = CVM_VM_ACCEL_KVM;
	l.tee = CVM_VM_TEE_NONE;
	l.tee_sock = NULL;
	l.secure_boot = false;
	l.swtpm_sock = NULL;
	l.qmp_sock = NULL;
	char **argv = NULL;
	struct cvm_err err = { 0 };
	assert_int_equal(cvm_vm_qemu_argv(&l, &argv, &err), 0);
	golden(argv, "kvm-plain.argv");
	cvm_argv_free(argv);
}

static struct cvm_vm_launch hw(enum cvm_vm_tee tee)
{
	struct cvm_vm_launch l = base();
	l.accel = CVM_VM_ACCEL_KVM;
	l.tee = tee;
	l.tee_sock = NULL;
	l.ovmf_vars = NULL;
	l.ovmf_code = "/usr/share/ovmf/AMDSEV.fd";
	l.kernel = "/var/lib/opencvm/images/vmlinuz";
	l.initrd = "/var/lib/opencvm/images/initrd.img";
	l.append = "console=ttyS0 root=/dev/mapper/root";
	return l;
}

static void test_sev_snp(void **state)
{
	(void)state;
	struct cvm_vm_launch l = hw(CVM_VM_TEE_SEV_SNP);
	l.snp_policy = 0x30000;
	char **argv = NULL;
	struct cvm_err err = { 0 };
	assert_int_equal(cvm_vm_qemu_argv(&l, &argv, &err), 0);
	golden(argv, "sev-snp.argv");
	cvm_argv_free(argv);

	l.snp_policy = 0;
	l.snp_id_block = "AAAA";
	l.snp_id_auth = "BBBB";
	l.snp_host_data = "CCCC";
	assert_int_equal(cvm_vm_qemu_argv(&l, &argv, &err), 0);
	golden(argv, "sev-snp-idblock.argv");
	cvm_argv_free(argv);
}

static void test_tdx(void **state)
{
	(void)state;
	struct cvm_vm_launch l = hw(CVM_VM_TEE_TDX);
	l.ovmf_code = "/usr/share/ovmf/OVMF.inteltdx.fd";
	l.tdx_attributes = 0x10000000;
	char **argv = NULL;
	struct cvm_err err = { 0 };
	assert_int_equal(cvm_vm_qemu_argv(&l, &argv, &err), 0);
	golden(argv, "tdx.argv");
	cvm_argv_free(argv);
}

static void test_swtpm(void **state)
{
	(void)state;
	char **argv = NULL;
	struct cvm_err err = { 0 };
	assert_int_equal(cvm_vm_swtpm_argv(NULL, "/run/opencvm/vms/demo-vm/tpm",
					   "/run/opencvm/vms/demo-vm/swtpm.sock",
					   "/var/log/swtpm,x.log", "/run/opencvm/vms/demo-vm/swtpm.pid",
					   &argv, &err), 0);
	golden(argv, "swtpm.argv");
	cvm_argv_free(argv);
	assert_int_equal(cvm_vm_swtpm_setup_argv(NULL, "/run/opencvm/vms/demo-vm/tpm", &argv, &err),
			 0);
	golden(argv, "swtpm-setup.argv");
	cvm_argv_free(argv);
	assert_int_equal(cvm_vm_swtpm_argv(NULL, NULL, "/s", NULL, NULL, &argv, &err), -EINVAL);
	assert_int_equal(cvm_vm_swtpm_setup_argv(NULL, NULL, &argv, &err), -EINVAL);
}

static void hw_snp(struct cvm_vm_launch *l)
{
	l->tee = CVM_VM_TEE_SEV_SNP;
	l->tee_sock = NULL;
	l->ovmf_vars = NULL;
	l->accel = CVM_VM_ACCEL_KVM;
}

static const char *const data2[] = { "/d/a.img", "/d/b.img" };
static const char *const dup_serials[] = { "a", "a" };
/* temp, a comma (QEMU option syntax), 21 characters (cut by virtio-blk), empty, os */
static const char *const bad_serials[] = { "temp", "a,b", "abcdefghijklmnopqrstu", "", "os" };

/* Apply refusal case i to l; returns the text the error must contain, NULL past the end. */
static const char *mutate(size_t i, struct cvm_vm_launch *l)
{
	switch (i) {
	case 0: l->name = "bad name"; return "launch.name";
	case 1: l->vcpus = 0; return "launch.vcpus";
	case 2: l->memory_mib = 64; return "launch.memory_mib";
	case 3: l->ovmf_code = NULL; return "launch.ovmf_code";
	case 4: l->os_disk = NULL; return "launch.os_disk";
	case 5: l->serial_log = NULL; return "launch.serial_log";
	case 6: l->initrd = "/i"; return "launch.kernel";
	case 7: l->ovmf_vars = NULL; return "launch.ovmf_vars";
	case 8: l->tee_sock = NULL; return "launch.tee_sock";
	case 9: l->tee = CVM_VM_TEE_NONE; return "launch.tee_sock";
	case 10: hw_snp(l); l->accel = CVM_VM_ACCEL_TCG; return "launch.accel";
	case 11: hw_snp(l); l->tee = CVM_VM_TEE_TDX; l->ovmf_vars = "/v"; return "launch.ovmf_vars";
	case 12: l->snp_policy = 0x30000; return "launch.snp_";
	case 13: hw_snp(l); l->snp_id_block = "AA"; return "launch.snp_id_block";
	case 14: hw_snp(l); l->snp_policy = 0xb0000; return "DEBUG bit (19)";
	case 15: hw_snp(l); l->snp_policy = 0x10000; return "bit 17";
	case 16: hw_snp(l); l->tee = CVM_VM_TEE_TDX; l->tdx_attributes = 1; return "DEBUG bit (0)";
	case 17: l->tdx_attributes = 0x10000000; return "launch.tdx_attributes";
	case 18: l->netdev = "user,hostfwd=tcp::1-:2"; return "launch.netdev";
	case 19: l->netdev = "user,id=a b"; return "launch.netdev";
	case 20: l->n_data_disks = 1; return "launch.data_disks";
	case 21: hw_snp(l); l->snp_host_data = "x"; l->tee = CVM_VM_TEE_TDX; return "launch.snp_";
	case 22: l->data_disks = data2; l->n_data_disks = 2; l->data_disk_serials = dup_serials;
		return "launch.data_disk_serials[1]: a is already";
	case 23: l->data_disks = data2; l->n_data_disks = 1; l->data_disk_serials = bad_serials;
		return "launch.data_disk_serials[0]";
	case 24: l->data_disks = data2; l->n_data_disks = 2; l->data_disk_serials = bad_serials + 1;
		return "launch.data_disk_serials[0]";
	case 25: l->data_disks = data2; l->n_data_disks = 1; l->data_disk_serials = bad_serials + 2;
		return "launch.data_disk_serials[0]";
	case 26: l->data_disks = data2; l->n_data_disks = 1; l->data_disk_serials = bad_serials + 3;
		return "launch.data_disk_serials[0]";
	default: return NULL;
	}
}

static void test_refusals(void **state)
{
	(void)state;
	size_t n = 0;
	for (size_t i = 0;; i++) {
		struct cvm_vm_launch l = base();
		const char *want = mutate(i, &l);
		if (!want)
			break;
		char **argv = NULL;
		struct cvm_err err = { 0 };
		assert_int_equal(cvm_vm_qemu_argv(&l, &argv, &err), -EINVAL);
		assert_null(argv);
		if (!strstr(err.msg, want))
			fail_msg("case %zu: '%s' lacks '%s'", i, err.msg, want);
		n++;
	}
	assert_int_equal(n, 27);
}

static void test_accel_detect(void **state)
{
	(void)state;
	/* Without /dev/kvm both answers are TCG; with it, SMM can only narrow the choice. */
	enum cvm_vm_accel any = cvm_vm_accel_detect(false), smm = cvm_vm_accel_detect(true);
	if (access("/dev/kvm", R_OK | W_OK) != 0)
		assert_int_equal(any, CVM_VM_ACCEL_TCG);
	else
		assert_int_equal(any, CVM_VM_ACCEL_KVM);
	assert_true(smm == CVM_VM_ACCEL_TCG || any == CVM_VM_ACCEL_KVM);
}

static void test_join(void **state)
{
	(void)state;
	char *v[] = { "a", "b c", NULL };
	_cleanup_free_ char *s = cvm_argv_join(v, "|");
	assert_string_equal(s, "a|b c");
	char *e[] = { NULL };
	_cleanup_free_ char *s2 = cvm_argv_join(e, "|");
	assert_string_equal(s2, "");
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_tcg_emulated), cmocka_unit_test(test_kvm_plain),
		cmocka_unit_test(test_sev_snp),      cmocka_unit_test(test_tdx),
		cmocka_unit_test(test_swtpm),        cmocka_unit_test(test_refusals),
		cmocka_unit_test(test_join),          cmocka_unit_test(test_accel_detect),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
