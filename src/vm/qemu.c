/* SPDX-License-Identifier: Apache-2.0 */
/* QEMU and swtpm command lines. Pure functions producing argv arrays: nothing here runs a
 * shell, so no path or name can inject arguments. QEMU's own option syntax treats ',' as a
 * separator; every value we put inside an option is escaped (",," is a literal comma). */
#include <opencvm/vm.h>

#include <fcntl.h>
#include <linux/kvm.h>
#include <sys/ioctl.h>
#include <inttypes.h>
#include <string.h>
#include <unistd.h>

#define ARGV_MAX 160

struct argv_b {
	char *v[ARGV_MAX + 1];
	size_t n;
	bool oom;
};

static void add(struct argv_b *a, char *s)
{
	if (!s || a->n >= ARGV_MAX) {
		a->oom = true;
		free(s);
		return;
	}
	a->v[a->n++] = s;
}

static void add_s(struct argv_b *a, const char *s)
{
	add(a, cvm_strdup(s));
}

CVM_PRINTF(2, 3) static void add_f(struct argv_b *a, const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	char *s = NULL;
	if (vasprintf(&s, fmt, ap) < 0)
		s = NULL;
	va_end(ap);
	add(a, s);
}

/* Escape a value for QEMU's key=value,... syntax: commas doubled. Returns a malloc'd string. */
static char *qesc(const char *s)
{
	size_t n = 0;
	for (const char *p = s; *p; p++)
		n += *p == ',' ? 2 : 1;
	char *o = malloc(n + 1);
	if (!o)
		return NULL;
	char *q = o;
	for (const char *p = s; *p; p++) {
		*q++ = *p;
		if (*p == ',')
			*q++ = ',';
	}
	*q = 0;
	return o;
}

/* Option values built from paths: the escaped path is freed after formatting. */
#define ADD_ESC(a, fmt, path)                          \
	do {                                           \
		char *_e = qesc(path);                 \
		if (!_e) {                             \
			(a)->oom = true;               \
			break;                         \
		}                                      \
		add_f((a), fmt, _e);                   \
		free(_e);                              \
	} while (0)

void cvm_argv_free(char **argv)
{
	for (size_t i = 0; argv && argv[i]; i++)
		free(argv[i]);
	free(argv);
}

char *cvm_argv_join(char *const *argv, const char *sep)
{
	struct cvm_buf b = { 0 };
	for (size_t i = 0; argv && argv[i]; i++) {
		if ((i && cvm_buf_append_str(&b, sep) < 0) || cvm_buf_append_str(&b, argv[i]) < 0) {
			cvm_buf_free(&b);
			return NULL;
		}
	}
	char *s = cvm_buf_cstr(&b);
	if (!s)
		cvm_buf_free(&b);
	return s;
}

static int finish(struct argv_b *a, char ***out, struct cvm_err *err)
{
	if (a->oom) {
		for (size_t i = 0; i < a->n; i++)
			free(a->v[i]);
		return cvm_err_nomem(err);
	}
	char **v = calloc(a->n + 1, sizeof(*v));
	if (!v) {
		for (size_t i = 0; i < a->n; i++)
			free(a->v[i]);
		return cvm_err_nomem(err);
	}
	memcpy(v, a->v, a->n * sizeof(*v));
	*out = v;
	return 0;
}

enum cvm_vm_accel cvm_vm_accel_detect(bool need_smm)
{
	int fd = open("/dev/kvm", O_RDWR | O_CLOEXEC);
	if (fd < 0)
		return CVM_VM_ACCEL_TCG;
	bool ok = !need_smm || ioctl(fd, KVM_CHECK_EXTENSION, KVM_CAP_X86_SMM) > 0;
	close(fd);
	return ok ? CVM_VM_ACCEL_KVM : CVM_VM_ACCEL_TCG;
}

static bool hw_tee(enum cvm_vm_tee t)
{
	return t == CVM_VM_TEE_SEV_SNP || t == CVM_VM_TEE_TDX;
}

/* The netdev's id= value (validated: 1..31 of [A-Za-z0-9_-]); "" when absent or invalid. */
static void netdev_id(const char *netdev, char out[32])
{
	out[0] = 0;
	const char *p = netdev;
	while (p && *p) {
		if (strncmp(p, "id=", 3) == 0) {
			size_t k = strcspn(p + 3, ",");
			if (k == 0 || k >= 32)
				return;
			for (size_t i = 0; i < k; i++) {
				char c = p[3 + i];
				if (!((c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') ||
				      (c >= '0' && c <= '9') || c == '_' || c == '-'))
					return;
			}
			memcpy(out, p + 3, k);
			out[k] = 0;
			return;
		}
		p = strchr(p, ',');
		if (p)
			p++;
	}
}

/* virtio-blk's device ID (the serial the guest reads in /sys/block/vdX/serial) holds 20 bytes;
 * QEMU cuts longer serials silently. */
#define VIRTIO_BLK_ID_LEN 20

/* A data disk serial: 1..20 of [A-Za-z0-9_-], not the OS or temp disk's serial. */
static bool serial_valid(const char *s)
{
	size_t n = s ? strlen(s) : 0;
	if (n < 1 || n > VIRTIO_BLK_ID_LEN || strcmp(s, "os") == 0 || strcmp(s, "temp") == 0)
		return false;
	return strspn(s, "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_-") == n;
}

static int validate(const struct cvm_vm_launch *l, struct cvm_err *err)
{
	if (!l->name || !cvm_vm_name_valid(l->name))
		return cvm_err_badparam(err, "launch.name: expected a VM name");
	if (l->vcpus < 1 || l->vcpus > 1024)
		return cvm_err_badparam(err, "launch.vcpus: expected 1..1024");
	if (l->memory_mib < 128 || l->memory_mib > 16LL * 1024 * 1024)
		return cvm_err_badparam(err, "launch.memory_mib: expected 128..16777216");
	if (!l->ovmf_code)
		return cvm_err_badparam(err, "launch.ovmf_code: firmware is required (UEFI only)");
	if (!l->os_disk)
		return cvm_err_badparam(err, "launch.os_disk: required");
	if (!l->serial_log)
		return cvm_err_badparam(err, "launch.serial_log: required (the console is how "
					"failures are reported)");
	if (l->n_data_disks > CVM_VM_MAX_DATA_DISKS || (l->n_data_disks && !l->data_disks))
		return cvm_err_badparam(err, "launch.data_disks: at most %d", CVM_VM_MAX_DATA_DISKS);
	for (size_t i = 0; l->data_disk_serials && i < l->n_data_disks; i++) {
		const char *s = l->data_disk_serials[i];
		if (!serial_valid(s))
			return cvm_err_badparam(err, "launch.data_disk_serials[%zu]: expected 1..%d of "
						"[A-Za-z0-9_-], not os or temp", i, VIRTIO_BLK_ID_LEN);
		for (size_t k = 0; k < i; k++)
			if (strcmp(s, l->data_disk_serials[k]) == 0)
				return cvm_err_badparam(err, "launch.data_disk_serials[%zu]: %s is "
							"already the serial of data disk %zu", i, s, k);
	}
	if ((l->initrd || l->append) && !l->kernel)
		return cvm_err_badparam(err, "launch.kernel: initrd/append need a kernel");
	if (hw_tee(l->tee)) {
		if (l->accel != CVM_VM_ACCEL_KVM)
			return cvm_err_badparam(err, "launch.accel: %s needs KVM on a capable host",
						cvm_vm_tee_name(l->tee));
		if (l->ovmf_vars)
			return cvm_err_badparam(err, "launch.ovmf_vars: %s firmware is stateless "
						"(-bios); UEFI variables live in the VMGS",
						cvm_vm_tee_name(l->tee));
	} else {
		if (!l->ovmf_vars)
			return cvm_err_badparam(err, "launch.ovmf_vars: the VM's own VARS copy is "
						"required with pflash firmware");
	}
	if (l->tee == CVM_VM_TEE_EMULATED && !l->tee_sock)
		return cvm_err_badparam(err, "launch.tee_sock: the emulated TEE needs the host "
					"service socket");
	if (l->tee != CVM_VM_TEE_EMULATED && l->tee_sock)
		return cvm_err_badparam(err, "launch.tee_sock: only for the emulated TEE");
	if (l->tee != CVM_VM_TEE_SEV_SNP &&
	    (l->snp_policy || l->snp_id_block || l->snp_id_auth || l->snp_host_data))
		return cvm_err_badparam(err, "launch.snp_*: only for sev-snp");
	if (!l->snp_id_block != !l->snp_id_auth)
		return cvm_err_badparam(err, "launch.snp_id_block: id-block and id-auth go together");
	if (l->snp_policy & CVM_SNP_POLICY_DEBUG)
		return cvm_err_badparam(err, "launch.snp_policy: the DEBUG bit (19) is refused");
	if (l->snp_policy && !(l->snp_policy & (1ULL << 17)))
		return cvm_err_badparam(err, "launch.snp_policy: bit 17 (reserved, must be one) is "
					"clear");
	if (l->tee != CVM_VM_TEE_TDX && l->tdx_attributes)
		return cvm_err_badparam(err, "launch.tdx_attributes: only for tdx");
	if (l->netdev) {
		char nid[32];
		netdev_id(l->netdev, nid);
		if (!nid[0])
			return cvm_err_badparam(err, "launch.netdev: needs an id=NAME member");
	}
	if (l->tdx_attributes & 1)
		return cvm_err_badparam(err, "launch.tdx_attributes: the DEBUG bit (0) is refused");
	return 0;
}

int cvm_vm_qemu_argv(const struct cvm_vm_launch *l, char ***argv, struct cvm_err *err)
{
	int r = validate(l, err);
	if (r < 0)
		return r;
	struct argv_b a = { 0 };
	bool kvm = l->accel == CVM_VM_ACCEL_KVM;
	add_s(&a, l->qemu ? l->qemu : "qemu-system-x86_64");
	add_s(&a, "-name");
	add_f(&a, "guest=%s,debug-threads=on", l->name);
	add_s(&a, "-nodefaults");
	add_s(&a, "-no-user-config");
	add_s(&a, "-display");
	add_s(&a, "none");

	/* Machine: SMM protects the Secure Boot variable store with pflash firmware; SEV-SNP and
	 * TDX firmware is stateless and runs without SMM. */
	add_s(&a, "-machine");
	switch (l->tee) {
	case CVM_VM_TEE_SEV_SNP:
		add_s(&a, "q35,accel=kvm,smm=off,confidential-guest-support=sev0,memory-backend=ram0");
		break;
	case CVM_VM_TEE_TDX:
		/* TDX private memory comes from guest_memfd; no shared memory backend. */
		add_s(&a, "q35,accel=kvm,smm=off,kernel-irqchip=split,confidential-guest-support=tdx0");
		break;
	default:
		add_f(&a, "q35,accel=%s,smm=%s", kvm ? "kvm" : "tcg", l->secure_boot ? "on" : "off");
		break;
	}
	add_s(&a, "-cpu");
	add_s(&a, l->tee == CVM_VM_TEE_SEV_SNP ? "EPYC-v4" : kvm ? "host" : "max");
	add_s(&a, "-smp");
	add_f(&a, "%d", l->vcpus);
	add_s(&a, "-m");
	add_f(&a, "%" PRId64 "M", l->memory_mib);

	if (l->tee == CVM_VM_TEE_SEV_SNP) {
		add_s(&a, "-object");
		add_f(&a, "memory-backend-memfd,id=ram0,size=%" PRId64 "M,share=true,prealloc=false",
		      l->memory_mib);
		add_s(&a, "-object");
		/* cbitpos 51 / reduced-phys-bits 1 are the Milan/Genoa/Turin values; kernel-hashes
		 * puts the direct-boot kernel, initrd and cmdline into the launch measurement. */
		struct cvm_buf o = { 0 };
		int ok = cvm_buf_printf(&o, "sev-snp-guest,id=sev0,policy=0x%" PRIx64
					",cbitpos=51,reduced-phys-bits=1,kernel-hashes=%s",
					l->snp_policy ? l->snp_policy : (uint64_t)0x30000,
					l->kernel ? "on" : "off");
		if (ok == 0 && l->snp_id_block)
			ok = cvm_buf_printf(&o, ",id-block=%s,id-auth=%s", l->snp_id_block,
					    l->snp_id_auth);
		if (ok == 0 && l->snp_host_data)
			ok = cvm_buf_printf(&o, ",host-data=%s", l->snp_host_data);
		char *s = ok == 0 ? cvm_buf_cstr(&o) : NULL;
		if (!s)
			cvm_buf_free(&o);
		add(&a, s);
	} else if (l->tee == CVM_VM_TEE_TDX) {
		add_s(&a, "-object");
		if (l->tdx_attributes)
			add_f(&a, "tdx-guest,id=tdx0,attributes=0x%" PRIx64, l->tdx_attributes);
		else
			add_s(&a, "tdx-guest,id=tdx0");
	}

	/* Firmware */
	if (hw_tee(l->tee)) {
		add_s(&a, "-bios");
		add_s(&a, l->ovmf_code);
	} else {
		if (l->secure_boot) {
			add_s(&a, "-global");
			add_s(&a, "driver=cfi.pflash01,property=secure,value=on");
		}
		add_s(&a, "-global");
		add_s(&a, "ICH9-LPC.disable_s3=1");
		add_s(&a, "-drive");
		ADD_ESC(&a, "if=pflash,format=raw,unit=0,readonly=on,file=%s", l->ovmf_code);
		add_s(&a, "-drive");
		ADD_ESC(&a, "if=pflash,format=raw,unit=1,file=%s", l->ovmf_vars);
	}
	if (l->kernel) {
		add_s(&a, "-kernel");
		add_s(&a, l->kernel);
		if (l->initrd) {
			add_s(&a, "-initrd");
			add_s(&a, l->initrd);
		}
		if (l->append) {
			add_s(&a, "-append");
			add_s(&a, l->append);
		}
	}

	/* vTPM 2.0 (CRB interface, as Windows 11 and Linux expect on q35) */
	if (l->swtpm_sock) {
		add_s(&a, "-chardev");
		ADD_ESC(&a, "socket,id=chrtpm,path=%s", l->swtpm_sock);
		add_s(&a, "-tpmdev");
		add_s(&a, "emulator,id=tpm0,chardev=chrtpm");
		add_s(&a, "-device");
		add_s(&a, "tpm-crb,tpmdev=tpm0");
	}

	/* Disks: OS first (boot index 0), data, temp */
	const char *paths[CVM_VM_MAX_DATA_DISKS + 2];
	size_t nd = 0;
	paths[nd++] = l->os_disk;
	for (size_t i = 0; i < l->n_data_disks; i++)
		paths[nd++] = l->data_disks[i];
	if (l->temp_disk)
		paths[nd++] = l->temp_disk;
	for (size_t i = 0; i < nd; i++) {
		add_s(&a, "-blockdev");
		char *e = qesc(paths[i]);
		if (!e)
			a.oom = true;
		else
			add_f(&a, "driver=file,node-name=disk%zu,filename=%s,discard=unmap", i, e);
		free(e);
		add_s(&a, "-device");
		if (i == 0 && l->kernel) /* direct boot takes boot index 0 for the kernel */
			add_f(&a, "virtio-blk-pci,drive=disk%zu,serial=os", i);
		else if (i == 0)
			add_f(&a, "virtio-blk-pci,drive=disk%zu,serial=os,bootindex=0", i);
		else if (l->temp_disk && i == nd - 1)
			add_f(&a, "virtio-blk-pci,drive=disk%zu,serial=temp", i);
		else if (l->data_disk_serials)
			add_f(&a, "virtio-blk-pci,drive=disk%zu,serial=%s", i,
			      l->data_disk_serials[i - 1]);
		else
			add_f(&a, "virtio-blk-pci,drive=disk%zu,serial=data%zu", i, i - 1);
	}

	/* Emulated TEE: a virtio-serial port the guest opens as
	 * /dev/virtio-ports/org.opencvm.tee.0; QEMU connects to the host service's socket. */
	if (l->tee == CVM_VM_TEE_EMULATED) {
		add_s(&a, "-device");
		add_s(&a, "virtio-serial-pci,id=vser0");
		add_s(&a, "-chardev");
		ADD_ESC(&a, "socket,id=tee0,path=%s,reconnect=1", l->tee_sock);
		add_s(&a, "-device");
		add_s(&a, "virtserialport,bus=vser0.0,chardev=tee0,name=org.opencvm.tee.0");
	}

	if (l->netdev) {
		add_s(&a, "-netdev");
		add_s(&a, l->netdev);
		char nid[32];
		netdev_id(l->netdev, nid);
		add_s(&a, "-device");
		add_f(&a, "virtio-net-pci,netdev=%s", nid);
	}

	/* Console to a file: the only channel the guest agent reports failures on. */
	add_s(&a, "-chardev");
	ADD_ESC(&a, "file,id=serial0,path=%s", l->serial_log);
	add_s(&a, "-serial");
	add_s(&a, "chardev:serial0");
	if (l->qmp_sock) {
		add_s(&a, "-qmp");
		ADD_ESC(&a, "unix:%s,server=on,wait=off", l->qmp_sock);
	}
	return finish(&a, argv, err);
}

int cvm_vm_swtpm_argv(const char *swtpm, const char *state_dir, const char *ctrl_sock,
		      const char *log_file, const char *pid_file, char ***argv,
		      struct cvm_err *err)
{
	if (!state_dir || !ctrl_sock)
		return cvm_err_badparam(err, "swtpm: state_dir and ctrl_sock are required");
	struct argv_b a = { 0 };
	add_s(&a, swtpm ? swtpm : "swtpm");
	add_s(&a, "socket");
	add_s(&a, "--tpm2");
	add_s(&a, "--tpmstate");
	ADD_ESC(&a, "dir=%s,mode=0600", state_dir);
	add_s(&a, "--ctrl");
	ADD_ESC(&a, "type=unixio,path=%s,mode=0600", ctrl_sock);
	if (log_file) {
		add_s(&a, "--log");
		ADD_ESC(&a, "file=%s,level=2", log_file);
	}
	if (pid_file) {
		add_s(&a, "--pid");
		ADD_ESC(&a, "file=%s", pid_file);
	}
	/* Exit with QEMU: nothing keeps the vTPM state open after the VM is gone. */
	add_s(&a, "--terminate");
	return finish(&a, argv, err);
}

int cvm_vm_swtpm_setup_argv(const char *swtpm_setup, const char *state_dir, char ***argv,
			    struct cvm_err *err)
{
	if (!state_dir)
		return cvm_err_badparam(err, "swtpm_setup: state_dir is required");
	struct argv_b a = { 0 };
	add_s(&a, swtpm_setup ? swtpm_setup : "swtpm_setup");
	add_s(&a, "--tpm2");
	add_s(&a, "--tpmstate");
	add_s(&a, state_dir);
	add_s(&a, "--createek");
	add_s(&a, "--decryption");
	add_s(&a, "--not-overwrite");
	return finish(&a, argv, err);
}
