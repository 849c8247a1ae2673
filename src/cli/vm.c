/* SPDX-License-Identifier: Apache-2.0 */
/* cvm vm ...: confidential VM lifecycle on this host. Operates on the store cvmd uses
 * (--store, default CVM_STORE or sqlite:/var/lib/opencvm/cvmd.db) and the host's VM state
 * directory (--state-dir, default /var/lib/opencvm), like `cvm demo` does. */
#include "cli.h"

#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/time.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <unistd.h>

#include <opencvm/audit.h>
#include <opencvm/disk.h>
#include <opencvm/store.h>
#include <opencvm/vm.h>

#define DEFAULT_STATE_DIR "/var/lib/opencvm"
#define OVMF_CODE "/usr/share/OVMF/OVMF_CODE_4M.secboot.fd"
#define OVMF_VARS "/usr/share/OVMF/OVMF_VARS_4M.ms.fd"
#define TEMP_DISK_BYTES (4ull << 30)

struct vmctx {
	const char *store_url, *state_dir, *sizes_file;
	struct cvm_store *store;
	struct cvm_audit *audit;
	struct cvm_vm_sizes sizes;
	char *store_default;
};

static void vmctx_close(struct vmctx *v)
{
	cvm_vm_sizes_clear(&v->sizes);
	cvm_audit_close(v->audit);
	cvm_store_close(v->store);
	free(v->store_default);
}

static int vmctx_open(struct vmctx *v, struct cvm_err *err)
{
	if (!v->state_dir)
		v->state_dir = getenv("CVM_STATE_DIR") ? getenv("CVM_STATE_DIR") : DEFAULT_STATE_DIR;
	if (!v->store_url)
		v->store_url = getenv("CVM_STORE");
	if (!v->store_url) {
		v->store_default = cvm_asprintf("sqlite:%s/cvmd.db", v->state_dir);
		if (!v->store_default)
			return cvm_err_nomem(err);
		v->store_url = v->store_default;
	}
	_cleanup_free_ char *sizes = NULL;
	int r;
	if ((r = cvm_store_open(v->store_url, &v->store, err)) < 0 ||
	    (r = cvm_audit_open(v->store, &v->audit, err)) < 0 ||
	    (r = cvm_vm_sizes_locate(v->sizes_file, &sizes, err)) < 0 ||
	    (r = cvm_vm_sizes_load(sizes, &v->sizes, err)) < 0)
		return r;
	return 0;
}

static char *principal(void)
{
	return cvm_asprintf("local:uid=%u", (unsigned)getuid());
}

static int print_vm(struct cli *cli, const struct cvm_vm *vm)
{
	struct cvm_err err = { 0 };
	json_t *j = NULL;
	if (cvm_vm_to_json(vm, &j, &err) < 0)
		return cli_fail(&err, "vm");
	if (cli->json) {
		cli_print_json(j);
	} else {
		static const char *const labels[] = { "name", "size", "security type", "tee",
						      "state", "state reason", "os disk",
						      "disk encryption set", "identity", "network",
						      "generation", "updated" };
		static const char *const paths[] = { "name", "size", "securityType", "tee",
						     "state", "stateReason", "osDisk",
						     "diskEncryptionSet", "identity", "network",
						     "generation", "updated" };
		cli_print_fields(j, labels, paths, CVM_ARRAY_SIZE(labels));
	}
	json_decref(j);
	return CLI_OK;
}

#define STORE_OPTS(v)                                             \
	{ "--store", true, &(v).store_url, NULL, NULL },          \
	{ "--state-dir", true, &(v).state_dir, NULL, NULL },      \
	{ "--sizes", true, &(v).sizes_file, NULL, NULL }

static int vm_create(struct cli *cli, int argc, char **argv)
{
	const char *usage = "vm create NAME --size SIZE [--security-type ConfidentialVM|TrustedLaunch"
			    "|Standard] [--tee sev-snp|tdx|emulated] [--os-disk DISK] [--des DES] "
			    "[--data-disk DISK]... [--temp-disk] [--identity OID] [--network SPEC] "
			    "[--store URL] [--state-dir DIR] [--sizes FILE]";
	struct vmctx v = { 0 };
	const char *size = NULL, *sec = "ConfidentialVM", *tee = NULL, *os = NULL, *des = NULL,
		   *identity = NULL, *network = NULL, **data = NULL, *pos[1];
	bool temp = false;
	const struct cli_opt opts[] = {
		{ "--size", true, &size, NULL, NULL },
		{ "--security-type", true, &sec, NULL, NULL },
		{ "--tee", true, &tee, NULL, NULL },
		{ "--os-disk", true, &os, NULL, NULL },
		{ "--des", true, &des, NULL, NULL },
		{ "--data-disk", true, NULL, NULL, &data },
		{ "--temp-disk", false, NULL, &temp, NULL },
		{ "--identity", true, &identity, NULL, NULL },
		{ "--network", true, &network, NULL, NULL },
		STORE_OPTS(v),
	};
	int rc = cli_parse(argc, argv, opts, CVM_ARRAY_SIZE(opts), pos, 1, 1, NULL, usage);
	if (rc)
		return rc;
	if (!size)
		return cli_usage_error(usage, "--size is required");
	struct cvm_err err = { 0 };
	struct cvm_vm in = { .name = (char *)pos[0], .size = (char *)size, .os_disk = (char *)os,
			     .des = (char *)des, .identity = (char *)identity,
			     .network = (char *)network, .temp_disk = temp };
	if (cvm_vm_security_parse(sec, &in.security, &err) < 0 ||
	    (tee && cvm_vm_tee_parse(tee, &in.tee, &err) < 0))
		return cli_usage_error(usage, "%s", err.msg);
	if (in.security == CVM_VM_SEC_CONFIDENTIAL && !tee)
		in.tee = CVM_VM_TEE_EMULATED;
	for (size_t i = 0; data && data[i]; i++) {
		if (i >= CVM_VM_MAX_DATA_DISKS)
			return cli_usage_error(usage, "at most %d data disks", CVM_VM_MAX_DATA_DISKS);
		in.data_disks[i] = (char *)data[i];
		in.n_data_disks = i + 1;
	}
	free(data);
	_cleanup_free_ char *who = principal();
	int r = vmctx_open(&v, &err);
	/* Nothing to provision before the first boot (the VMGS is made then): creating -> stopped
	 * right away, both steps audited. */
	if (r == 0)
		r = cvm_vm_create(v.store, &v.sizes, &in, who, &err);
	if (r == 0)
		r = cvm_vm_transition(v.store, in.name, NULL, CVM_VM_STOPPED, "created", who, &err);
	struct cvm_vm got = { 0 };
	if (r == 0)
		r = cvm_vm_get(v.store, in.name, &got, &err);
	vmctx_close(&v);
	if (r < 0)
		return cli_fail(&err, "vm create");
	rc = print_vm(cli, &got);
	cvm_vm_clear(&got);
	return rc;
}

static int vm_show(struct cli *cli, int argc, char **argv)
{
	const char *usage = "vm show NAME [--store URL] [--state-dir DIR]";
	struct vmctx v = { 0 };
	const char *pos[1];
	const struct cli_opt opts[] = { STORE_OPTS(v) };
	int rc = cli_parse(argc, argv, opts, CVM_ARRAY_SIZE(opts), pos, 1, 1, NULL, usage);
	if (rc)
		return rc;
	struct cvm_err err = { 0 };
	struct cvm_vm got = { 0 };
	int r = vmctx_open(&v, &err);
	if (r == 0)
		r = cvm_vm_get(v.store, pos[0], &got, &err);
	vmctx_close(&v);
	if (r < 0)
		return cli_fail(&err, "vm show");
	rc = print_vm(cli, &got);
	cvm_vm_clear(&got);
	return rc;
}

static int vm_list(struct cli *cli, int argc, char **argv)
{
	const char *usage = "vm list [--store URL] [--state-dir DIR]";
	struct vmctx v = { 0 };
	const struct cli_opt opts[] = { STORE_OPTS(v) };
	int rc = cli_parse(argc, argv, opts, CVM_ARRAY_SIZE(opts), NULL, 0, 0, NULL, usage);
	if (rc)
		return rc;
	struct cvm_err err = { 0 };
	struct cvm_vm *list = NULL;
	size_t n = 0;
	int r = vmctx_open(&v, &err);
	if (r == 0)
		r = cvm_vm_list(v.store, &list, &n, &err);
	vmctx_close(&v);
	if (r < 0)
		return cli_fail(&err, "vm list");
	json_t *rows = json_array();
	for (size_t i = 0; rows && i < n; i++) {
		json_t *j = NULL;
		if (cvm_vm_to_json(&list[i], &j, &err) == 0)
			json_array_append_new(rows, j);
	}
	cvm_vm_list_free(list, n);
	if (!rows)
		return CLI_FAIL;
	if (cli->json) {
		cli_print_json(rows);
	} else {
		static const char *const h[] = { "NAME", "SIZE", "SECURITY", "TEE", "STATE" };
		static const char *const p[] = { "name", "size", "securityType", "tee", "state" };
		cli_print_table(rows, h, p, CVM_ARRAY_SIZE(h));
	}
	json_decref(rows);
	return CLI_OK;
}

static int vm_delete(struct cli *cli, int argc, char **argv)
{
	const char *usage = "vm delete NAME [--store URL] [--state-dir DIR]";
	struct vmctx v = { 0 };
	const char *pos[1];
	const struct cli_opt opts[] = { STORE_OPTS(v) };
	int rc = cli_parse(argc, argv, opts, CVM_ARRAY_SIZE(opts), pos, 1, 1, NULL, usage);
	if (rc)
		return rc;
	struct cvm_err err = { 0 };
	_cleanup_free_ char *who = principal();
	int r = vmctx_open(&v, &err);
	if (r == 0)
		r = cvm_vm_delete(v.store, pos[0], who, &err);
	vmctx_close(&v);
	if (r < 0)
		return cli_fail(&err, "vm delete");
	if (!cli->json)
		printf("deleted %s\n", pos[0]);
	return CLI_OK;
}

static char *vm_dir(const struct vmctx *v, const char *name)
{
	return cvm_asprintf("%s/vms/%s", v->state_dir, name);
}

static char *run_dir(const char *name)
{
	const char *base = getenv("XDG_RUNTIME_DIR");
	return cvm_asprintf("%s/opencvm/vms/%s", base && *base ? base : "/run", name);
}

/* The OS disk image: the registered confidential disk (disk.h), or an explicit image. */
static int os_image(struct vmctx *v, const struct cvm_vm *vm, const char *explicit_path,
		    char **out, struct cvm_err *err)
{
	if (explicit_path) {
		*out = cvm_strdup(explicit_path);
		return *out ? 0 : cvm_err_nomem(err);
	}
	if (!vm->os_disk)
		return cvm_err_badparam(err, "osDisk: VM %s has no OS disk (use --os-image)",
					vm->name);
	struct cvm_disk_rec rec = { 0 };
	int r = cvm_disk_rec_get(v->store, vm->os_disk, &rec, err);
	if (r == 0 && !(*out = cvm_strdup(rec.path)))
		r = cvm_err_nomem(err);
	cvm_disk_rec_clear(&rec);
	return r;
}

/* The VM's data disks, resolved through the disk registry for one boot. */
struct data_disks {
	char *path[CVM_VM_MAX_DATA_DISKS];
	char *serial[CVM_VM_MAX_DATA_DISKS];
	size_t n;
};

static void data_disks_clear(struct data_disks *d)
{
	for (size_t i = 0; i < d->n; i++) {
		free(d->path[i]);
		free(d->serial[i]);
	}
	d->n = 0;
}

/* The virtio serial of data disk i: its registry name (the guest maps the disk as
 * /dev/mapper/<name>), or dataN when the name does not fit virtio-blk's 20-byte ID, is the OS
 * or temp disk's serial or a name the guest's device mapper already uses (root, temp,
 * control), or is taken. */
static char *data_serial(const struct data_disks *d, const char *name, size_t i)
{
	static const char *const reserved[] = { "os", "temp", "root", "control" };
	bool own = strlen(name) <= 20;
	for (size_t k = 0; k < CVM_ARRAY_SIZE(reserved); k++)
		own &= strcmp(name, reserved[k]) != 0;
	_cleanup_free_ char *s = own ? cvm_strdup(name) : cvm_asprintf("data%zu", i + 1);
	for (size_t n = i + 1; s && n < 1000; n++) {
		bool taken = false;
		for (size_t k = 0; k < d->n; k++)
			taken |= strcmp(d->serial[k], s) == 0;
		if (!taken) {
			char *o = s;
			s = NULL;
			return o;
		}
		free(s);
		s = cvm_asprintf("data%zu", n + 1);
	}
	return NULL;
}

/* One data disk: a registered data disk, a complete confidential disk (no opencvm-progress
 * token) whose opencvm-hsm token names os_kid. That is the one key the orchestrator releases
 * to the guest, which unwraps every disk's secret with it: a disk wrapped by any other key
 * could not be opened, and releasing a second key is not allowed. */
static int data_disk_check(struct vmctx *v, const char *name, const char *os_img,
			   const char *os_kid, char **path, struct cvm_err *err)
{
	struct cvm_disk_rec rec = { 0 };
	struct cvm_disk_info info = { 0 };
	_cleanup_free_ char *real = NULL, *os_real = realpath(os_img, NULL);
	int r = cvm_disk_rec_get(v->store, name, &rec, err);
	if (r < 0)
		r = cvm_err_prefix(err, "data disk %s", name);
	else if (rec.kind != CVM_DISK_KIND_DATA)
		r = cvm_err_badparam(err, "data disk %s: registered as a%s %s disk, not a data disk",
				     name, rec.kind == CVM_DISK_KIND_OS ? "n" : "",
				     cvm_disk_kind_name(rec.kind));
	else if ((real = realpath(rec.path, NULL)) && os_real && strcmp(real, os_real) == 0)
		r = cvm_err_badparam(err, "data disk %s: %s is the VM's OS disk image", name,
				     rec.path);
	else if ((r = cvm_disk_info(rec.path, &info, err)) < 0)
		r = cvm_err_prefix(err, "data disk %s", name);
	else if (!info.complete)
		r = cvm_err_set(err, EBUSY, "DiskError", "data disk %s: %s is incomplete (its "
				"encryption stopped at %llu bytes; rerun it first)", name, rec.path,
				(unsigned long long)info.progress_done);
	else if (!info.has_hsm_token)
		r = cvm_err_set(err, ENOENT, "DiskError", "data disk %s: %s has no opencvm-hsm "
				"token (not a confidential disk)", name, rec.path);
	else if (strcmp(info.hsm.key_url, os_kid) != 0)
		r = cvm_err_badparam(err, "data disk %s: its secret is wrapped by key %s, not by the "
				     "OS disk's key %s (the only key released to the guest)", name,
				     info.hsm.key_url, os_kid);
	else if (!(*path = cvm_strdup(rec.path)))
		r = cvm_err_nomem(err);
	cvm_disk_info_clear(&info);
	cvm_disk_rec_clear(&rec);
	return r;
}

/* Every data disk of the VM, checked (data_disk_check), in the VM's order. */
static int data_disks_resolve(struct vmctx *v, const struct cvm_vm *vm, const char *os_img,
			      const char *os_kid, struct data_disks *out, struct cvm_err *err)
{
	for (size_t i = 0; i < vm->n_data_disks; i++) {
		const char *name = vm->data_disks[i];
		if (vm->os_disk && strcmp(name, vm->os_disk) == 0)
			return cvm_err_badparam(err, "data disk %s: it is the VM's OS disk", name);
		for (size_t k = 0; k < i; k++)
			if (strcmp(name, vm->data_disks[k]) == 0)
				return cvm_err_badparam(err, "data disk %s: listed twice", name);
		char *path = NULL;
		int r = data_disk_check(v, name, os_img, os_kid, &path, err);
		if (r < 0)
			return r;
		char *serial = data_serial(out, name, i);
		if (!serial) {
			free(path);
			return cvm_err_nomem(err);
		}
		out->path[out->n] = path;
		out->serial[out->n++] = serial;
	}
	return 0;
}

static int read_key32(const char *path, struct cvm_secret **out, struct cvm_err *err)
{
	int r = cli_read_secret_file(path, out, err);
	if (r < 0)
		return r;
	if ((*out)->len != 32) {
		cvm_secret_free(*out);
		*out = NULL;
		return cvm_err_badparam(err, "--vmgs-key-file: expected exactly 32 bytes");
	}
	return 0;
}

/* The launch arguments of the last `vm start`, kept in the VM's state dir (launch.json, 0600)
 * so `vm restart` boots the VM the same way. Paths are stored absolute; no secret is stored
 * (only the path of --vmgs-key-file; connection credentials come from the restarting caller). */
struct launch_args {
	const char *kernel, *initrd, *append, *keyfile, *image, *emu, *mem, *timeout, *port, *snp;
};

static int abs_path(const char *opt, const char *in, char **out, struct cvm_err *err)
{
	*out = NULL;
	if (!in)
		return 0;
	if (!(*out = realpath(in, NULL)))
		return cvm_err_badparam(err, "%s: %s: %s", opt, in, strerror(errno));
	return 0;
}

static int launch_save(const char *vdir, const struct launch_args *a, struct cvm_err *err)
{
	_cleanup_free_ char *kernel = NULL, *initrd = NULL, *keyfile = NULL, *image = NULL,
			    *emu = NULL;
	int r;
	if ((r = abs_path("--kernel", a->kernel, &kernel, err)) < 0 ||
	    (r = abs_path("--initrd", a->initrd, &initrd, err)) < 0 ||
	    (r = abs_path("--vmgs-key-file", a->keyfile, &keyfile, err)) < 0 ||
	    (r = abs_path("--os-image", a->image, &image, err)) < 0 ||
	    (r = abs_path("--emulator-dir", a->emu, &emu, err)) < 0)
		return r;
	json_t *j = json_pack("{s:s,s:s,s:s,s:s?,s:s?,s:s?,s:s?,s:s?,s:s?,s:s?}", "kernel", kernel,
			      "initrd", initrd, "append", a->append, "vmgsKeyFile", keyfile,
			      "osImage", image, "emulatorDir", emu, "memoryMib", a->mem, "timeout",
			      a->timeout, "hostfwdPort", a->port, "snpPolicy", a->snp);
	_cleanup_free_ char *txt = j ? cvm_json_dump(j) : NULL;
	json_decref(j);
	_cleanup_free_ char *path = cvm_path_join(vdir, "launch.json");
	if (!txt || !path)
		return cvm_err_nomem(err);
	if ((r = cvm_mkdir_p(vdir, 0700, err)) < 0)
		return r;
	return cvm_file_write_atomic(path, txt, strlen(txt), 0600, err);
}

/* Reads launch.json back; the strings are borrowed from *doc (json_decref it). */
static int launch_load(const char *vdir, const char *name, struct launch_args *a, json_t **doc,
		       struct cvm_err *err)
{
	_cleanup_free_ char *path = cvm_path_join(vdir, "launch.json");
	_cleanup_free_ uint8_t *raw = NULL;
	size_t len = 0;
	*doc = NULL;
	if (!path)
		return cvm_err_nomem(err);
	if (access(path, F_OK) != 0)
		return cvm_err_set(err, ENOENT, "BadParameter",
				   "launch.json: VM %s has no recorded launch arguments in %s "
				   "(never started with `cvm vm start` on this host)", name, path);
	int r = cvm_file_read(path, 1 << 20, &raw, &len, err);
	if (r == 0)
		r = cvm_json_parse(raw, len, false, doc, err);
	const struct {
		const char *field;
		bool required;
		const char **out;
	} f[] = {
		{ "kernel", true, &a->kernel },		{ "initrd", true, &a->initrd },
		{ "append", true, &a->append },		{ "vmgsKeyFile", false, &a->keyfile },
		{ "osImage", false, &a->image },	{ "emulatorDir", false, &a->emu },
		{ "memoryMib", false, &a->mem },	{ "timeout", false, &a->timeout },
		{ "hostfwdPort", false, &a->port },	{ "snpPolicy", false, &a->snp },
	};
	for (size_t i = 0; r == 0 && i < CVM_ARRAY_SIZE(f); i++) {
		_cleanup_free_ char *where = cvm_asprintf("launch.json: %s", f[i].field);
		r = where ? cvm_json_str(*doc, f[i].field, where, f[i].required, f[i].out, NULL, err)
			  : cvm_err_nomem(err);
	}
	if (r < 0) {
		json_decref(*doc);
		*doc = NULL;
	}
	return r;
}

static int vm_start_as(struct cli *cli, int argc, char **argv, const char *reason);

/* --snp-policy: hex (0x optional); bit 17 set and bits 26..63 clear, as the AMD-SP requires. */
static int parse_snp_policy(const char *s, uint64_t *out, struct cvm_err *err)
{
	const char *h = cvm_str_startswith(s, "0x") || cvm_str_startswith(s, "0X") ? s + 2 : s;
	char *end = NULL;
	errno = 0;
	unsigned long long v = *h && strspn(h, "0123456789abcdefABCDEF") == strlen(h)
				       ? strtoull(h, &end, 16) : 0;
	if (!end || *end || errno)
		return cvm_err_badparam(err, "--snp-policy: expected a hexadecimal guest policy, "
					"e.g. 0x30000");
	if (!(v & (1ULL << 17)) || (v >> 26))
		return cvm_err_badparam(err, "--snp-policy: 0x%llx: bit 17 must be set and bits "
					"26..63 clear", v);
	*out = v;
	return 0;
}

static int vm_start(struct cli *cli, int argc, char **argv)
{
	return vm_start_as(cli, argc, argv, "start");
}

/* vm start; reason is the audited reason of the stopped -> starting transition. */
static int vm_start_as(struct cli *cli, int argc, char **argv, const char *reason)
{
	const char *usage = "vm start NAME --kernel FILE --initrd FILE [--append CMDLINE] "
			    "[--vmgs-key-file FILE] [--os-image FILE] [--emulator-dir DIR] "
			    "[--memory-mib N] [--timeout SECONDS] [--snp-policy HEX] "
			    "[--hostfwd-port PORT] [--store URL] [--state-dir DIR]";
	struct vmctx v = { 0 };
	const char *kernel = NULL, *initrd = NULL, *append = "console=ttyS0", *keyfile = NULL,
		   *image = NULL, *emu = NULL, *mem = NULL, *timeout = NULL, *port = NULL,
		   *snp_policy = NULL, *pos[1];
	const struct cli_opt opts[] = {
		{ "--kernel", true, &kernel, NULL, NULL },
		{ "--initrd", true, &initrd, NULL, NULL },
		{ "--append", true, &append, NULL, NULL },
		{ "--vmgs-key-file", true, &keyfile, NULL, NULL },
		{ "--os-image", true, &image, NULL, NULL },
		{ "--emulator-dir", true, &emu, NULL, NULL },
		{ "--memory-mib", true, &mem, NULL, NULL },
		{ "--timeout", true, &timeout, NULL, NULL },
		{ "--hostfwd-port", true, &port, NULL, NULL },
		{ "--snp-policy", true, &snp_policy, NULL, NULL },
		STORE_OPTS(v),
	};
	int rc = cli_parse(argc, argv, opts, CVM_ARRAY_SIZE(opts), pos, 1, 1, NULL, usage);
	if (rc)
		return rc;
	if (!kernel || !initrd)
		return cli_usage_error(usage, "--kernel and --initrd are required");
	struct cvm_err err = { 0 };
	int64_t mem_mib = 0, tmo = 0, fwd = 0;
	if ((mem && cvm_parse_i64(mem, 128, 16LL * 1024 * 1024, &mem_mib, "--memory-mib", &err) < 0) ||
	    (timeout && cvm_parse_i64(timeout, 1, 86400, &tmo, "--timeout", &err) < 0) ||
	    (port && cvm_parse_i64(port, 1024, 65535, &fwd, "--hostfwd-port", &err) < 0))
		return cli_usage_error(usage, "%s", err.msg);
	_cleanup_free_ char *who = principal();
	_cleanup_secret_ struct cvm_secret *key = NULL;
	struct cvm_vm vm = { 0 };
	_cleanup_free_ char *img = NULL, *vdir = NULL, *rdir = NULL, *netdev = NULL;
	struct cvm_vm_tee_emu tee = { .emu_dir = emu };
	/* The guest policy the emulated AMD-SP reports (the host template's, as on hardware). */
	if (snp_policy && parse_snp_policy(snp_policy, &tee.tmpl.policy, &err) < 0)
		return cli_usage_error(usage, "%s", err.msg);
	if (tee.tmpl.policy & CVM_SNP_POLICY_DEBUG)
		fprintf(stderr, "cvm: vm start: --snp-policy 0x%llx allows debugging: attestation "
			"and release policies refuse such a guest\n",
			(unsigned long long)tee.tmpl.policy);
	int r = keyfile ? read_key32(keyfile, &key, &err) : 0;
	if (r == 0)
		r = vmctx_open(&v, &err);
	if (r == 0)
		r = cvm_vm_get(v.store, pos[0], &vm, &err);
	if (r == 0 && vm.security != CVM_VM_SEC_CONFIDENTIAL)
		r = cvm_err_badparam(&err, "securityType: only ConfidentialVMs boot through this path");
	if (r == 0 && (vm.tee == CVM_VM_TEE_SEV_SNP || vm.tee == CVM_VM_TEE_TDX))
		r = cvm_err_set(&err, ENOTSUP, "BadParameter",
				"tee %s: needs a capable host; this command runs emulated VMs",
				cvm_vm_tee_name(vm.tee));
	if (r == 0 && !emu)
		r = cvm_err_badparam(&err, "--emulator-dir: the emulated TEE needs the emulator "
				     "directory (cvm tee-emu init)");
	/* The emulated AMD-SP reports what was actually launched. */
	if (r == 0)
		r = cvm_vm_emulated_measurement(OVMF_CODE, kernel, initrd, append,
						tee.tmpl.measurement, &err);
	const struct cvm_vm_size *z = r == 0 ? cvm_vm_sizes_find(&v.sizes, vm.size) : NULL;
	if (r == 0 && !z)
		r = cvm_err_badparam(&err, "size: %s is not in the catalogue", vm.size);
	if (r == 0)
		r = os_image(&v, &vm, image, &img, &err);
	/* The orchestrator relay acts with the identity the global options name (it must hold
	 * the Release User role on the disk key) and may release only the OS disk's key. */
	struct cvm_disk_info info = { 0 };
	if (r == 0 && (r = cvm_disk_info(img, &info, &err)) == 0 && !info.has_hsm_token)
		r = cvm_err_set(&err, ENOENT, "DiskError",
				"%s: no opencvm-hsm token (not a confidential disk)", img);
	/* Data disks: unwrapped in the guest with the same released key, so each must be
	 * wrapped by it; refused here, before anything runs. */
	struct data_disks dd = { 0 };
	if (r == 0)
		r = data_disks_resolve(&v, &vm, img, info.hsm.key_url, &dd, &err);
	if (r == 0)
		r = cli_connect(cli, &err);
	struct cvm_vm_orch orch = {
		.store = v.store,
		.vm = vm.name,
		.attest_url = cli->conn.base_url,
		.kv_url = cli->conn.base_url,
		.tenant = cli->conn.tenant,
		.client_id = cli->conn.client_id,
		.client_secret = cli->conn.client_secret,
		.ca_file = cli->conn.ca_cert,
		.expected_kid = info.has_hsm_token ? info.hsm.key_url : NULL,
	};
	tee.relay = cvm_vm_orch_relay;
	tee.relay_ctx = &orch;
	vdir = vm_dir(&v, pos[0]);
	/* Without an explicit key file (tests), the VMGS key goes through the key service. */
	_cleanup_free_ char *wrapped_key = vdir ? cvm_path_join(vdir, "vmgs.key.wrapped") : NULL;
	if (r == 0 && !key && !wrapped_key)
		r = cvm_err_nomem(&err);
	/* Pre-flight: a disabled or expired disk key is refused here, before QEMU runs. */
	bool checked = false;
	if (r == 0 && (r = cvm_vm_orch_preflight(&orch, &checked, &err)) == 0 && !checked &&
	    !cli->json)
		printf("pre-flight: the orchestrator identity may not read the disk key; the key "
		       "service checks it at release\n");
	if (r == 0 && !key && (r = cvm_mkdir_p(vdir, 0700, &err)) == 0)
		r = cvm_vm_orch_vmgs_key(&orch, wrapped_key, &key, &err);
	rdir = run_dir(pos[0]);
	netdev = fwd ? cvm_asprintf("user,id=net0,hostfwd=tcp:127.0.0.1:%d-:80", (int)fwd)
		     : cvm_strdup("user,id=net0");
	if (r == 0 && (!vdir || !rdir || !netdev))
		r = cvm_err_nomem(&err);
	const struct launch_args la = { .kernel = kernel, .initrd = initrd, .append = append,
					.keyfile = keyfile, .image = image, .emu = emu,
					.mem = mem, .timeout = timeout, .port = port,
					.snp = snp_policy };
	if (r == 0)
		r = launch_save(vdir, &la, &err);
	enum cvm_vm_state stopped = CVM_VM_STOPPED;
	if (r == 0)
		r = cvm_vm_transition(v.store, pos[0], &stopped, CVM_VM_STARTING, reason, who, &err);
	if (r < 0) {
		data_disks_clear(&dd);
		cvm_disk_info_clear(&info);
		cvm_vm_clear(&vm);
		vmctx_close(&v);
		return cli_fail(&err, "vm start");
	}
	struct cvm_vm_run_config rc_ = {
		.vm_dir = vdir,
		.run_dir = rdir,
		.launch = {
			.name = vm.name,
			.vcpus = z->vcpus,
			.memory_mib = mem_mib ? mem_mib : z->memory_mib,
			.accel = cvm_vm_accel_detect(true),
			.tee = vm.tee,
			.ovmf_code = OVMF_CODE,
			.secure_boot = true,
			.kernel = kernel,
			.initrd = initrd,
			.append = append,
			.os_disk = img,
			.data_disks = (const char *const *)dd.path,
			.data_disk_serials = (const char *const *)dd.serial,
			.n_data_disks = dd.n,
			.netdev = netdev,
		},
		.ovmf_vars_template = OVMF_VARS,
		.vmgs_key = key,
		.tee_emu = &tee,
		.timeout_s = (int)tmo,
		/* sparse: costs the host only what the guest writes (encrypted) this boot */
		.temp_disk_bytes = vm.temp_disk ? TEMP_DISK_BYTES : 0,
	};
	_cleanup_free_ char *vmgs = cvm_path_join(vdir, "vmgs.bin");
	if (!cli->json)
		printf("starting %s (%d vCPUs, %lld MiB, %s); console: %s/console.log\n"
		       "vTPM: %s\n", vm.name, rc_.launch.vcpus, (long long)rc_.launch.memory_mib,
		       rc_.launch.accel == CVM_VM_ACCEL_KVM ? "kvm" : "tcg", vdir,
		       vmgs && access(vmgs, F_OK) == 0 ? "restored from the sealed VMGS"
						       : "new (first boot; sealed into the VMGS at exit)");
	for (size_t i = 0; !cli->json && i < dd.n; i++)
		printf("data disk %s: %s (guest: /dev/mapper/%s)\n", vm.data_disks[i], dd.path[i],
		       dd.serial[i]);
	fflush(stdout);
	int status = -1;
	r = cvm_vm_run(&rc_, &status, &err);
	/* The boot is over either way: record how it ended. */
	struct cvm_err e2 = { 0 };
	int t;
	if (r < 0) {
		t = cvm_vm_transition(v.store, pos[0], NULL, CVM_VM_FAILED, err.msg, who, &e2);
	} else {
		char why[64];
		snprintf(why, sizeof(why), status < 0 ? "timeout" : "qemu exit status %d",
			 WIFEXITED(status) ? WEXITSTATUS(status) : -1);
		t = cvm_vm_transition(v.store, pos[0], NULL, CVM_VM_STOPPING, why, who, &e2);
		if (t == 0)
			t = cvm_vm_transition(v.store, pos[0], NULL, CVM_VM_STOPPED, why, who, &e2);
	}
	if (t < 0)
		fprintf(stderr, "cvm: vm start: recording the end state: %s\n", e2.msg);
	data_disks_clear(&dd);
	cvm_disk_info_clear(&info);
	cvm_vm_clear(&vm);
	vmctx_close(&v);
	if (r < 0)
		return cli_fail(&err, "vm start");
	if (!cli->json)
		printf("%s stopped (%s)\n", pos[0], status < 0 ? "timeout" : "QEMU exited");
	return status < 0 ? CLI_FAIL : CLI_OK;
}

/* One QMP command ("system_powerdown", "quit") to the VM's QEMU. */
static int qmp_cmd(const char *sock, const char *cmd, struct cvm_err *err)
{
	struct sockaddr_un a = { .sun_family = AF_UNIX };
	if (strlen(sock) >= sizeof(a.sun_path))
		return cvm_err_badparam(err, "QMP socket path too long");
	strcpy(a.sun_path, sock);
	int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (fd < 0 || connect(fd, (struct sockaddr *)&a, sizeof(a)) < 0) {
		int en = errno;
		if (fd >= 0)
			close(fd);
		return cvm_err_set(err, en == ENOENT ? ENOENT : EIO, "VmNotRunning",
				   "QMP %s: %s (is the VM running?)", sock, strerror(en));
	}
	/* QEMU answers at once; never wait on it for long (a wedged QEMU must not hang stop). */
	struct timeval tv = { .tv_sec = 3 };
	setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
	setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof(tv));
	_cleanup_free_ char *msg = cvm_asprintf("{\"execute\":\"qmp_capabilities\"}\n"
					       "{\"execute\":\"%s\"}\n", cmd);
	char buf[4096];
	ssize_t n = read(fd, buf, sizeof(buf)); /* greeting */
	int r = msg && n > 0 && write(fd, msg, strlen(msg)) == (ssize_t)strlen(msg)
			? 0
			: cvm_err_internal(err, "QMP %s: %s", sock, strerror(errno));
	/* wait for the replies so the command is processed before we hang up */
	for (int i = 0; r == 0 && i < 2 && read(fd, buf, sizeof(buf)) > 0; i++)
		;
	close(fd);
	return r;
}

/* ACPI power-down (the guest shuts down cleanly; `vm start` then seals the VMGS and records
 * the state); after grace_s seconds without QEMU exiting, QMP quit. */
static int qmp_powerdown(const char *sock, int grace_s, bool *forced, struct cvm_err *err)
{
	*forced = false;
	int r = qmp_cmd(sock, "system_powerdown", err);
	if (r < 0)
		return r;
	for (int i = 0; i < grace_s * 10; i++) {
		if (!cvm_vm_socket_alive(sock))
			return 0;
		usleep(100 * 1000);
	}
	*forced = true;
	return qmp_cmd(sock, "quit", err);
}

static int vm_stop(struct cli *cli, int argc, char **argv)
{
	const char *usage = "vm stop NAME [--grace SECONDS]";
	struct vmctx v = { 0 };
	const char *pos[1], *grace = "60";
	const struct cli_opt opts[] = { { "--grace", true, &grace, NULL, NULL }, STORE_OPTS(v) };
	int rc = cli_parse(argc, argv, opts, CVM_ARRAY_SIZE(opts), pos, 1, 1, NULL, usage);
	if (rc)
		return rc;
	struct cvm_err err = { 0 };
	_cleanup_free_ char *rdir = run_dir(pos[0]);
	_cleanup_free_ char *sock = rdir ? cvm_path_join(rdir, "qmp.sock") : NULL;
	if (!sock)
		return CLI_FAIL;
	if (!cvm_vm_name_valid(pos[0]))
		return cli_usage_error(usage, "NAME: not a valid VM name");
	int64_t g = 0;
	bool forced = false;
	if (cvm_parse_i64(grace, 0, 3600, &g, "--grace", &err) < 0)
		return cli_usage_error(usage, "%s", err.msg);
	if (qmp_powerdown(sock, (int)g, &forced, &err) < 0)
		return cli_fail(&err, "vm stop");
	if (!cli->json)
		printf("%s: %s\n", pos[0], forced ? "no clean shutdown within the grace period; "
						     "QEMU stopped" : "shut down");
	return CLI_OK;
}

/* After QEMU exited, the VM's supervisor (the `cvm vm start` process) seals the VMGS and
 * records stopping -> stopped: wait for that before booting again. */
static int wait_stopped(struct vmctx *v, const char *name, int secs, struct cvm_err *err)
{
	for (int i = 0; i <= secs * 5; i++) {
		struct cvm_vm vm = { 0 };
		int r = cvm_vm_get(v->store, name, &vm, err);
		enum cvm_vm_state st = vm.state;
		if (r == 0 && st == CVM_VM_FAILED)
			r = cvm_err_set(err, EIO, "VmFailed", "state: VM %s ended failed: %s", name,
					vm.state_reason ? vm.state_reason : "no reason recorded");
		cvm_vm_clear(&vm);
		if (r < 0 || st == CVM_VM_STOPPED)
			return r;
		usleep(200 * 1000);
	}
	return cvm_err_set(err, ETIMEDOUT, "Timeout",
			   "state: VM %s not recorded stopped %d s after QEMU exited (is its "
			   "supervisor, the `cvm vm start` process, alive?)", name, secs);
}

/* Stop (ACPI power-down, as vm stop), wait until the supervisor recorded stopped (VMGS
 * sealed), then boot again with the launch arguments the last `vm start` recorded. This
 * process becomes the VM's supervisor, like `vm start`. */
static int vm_restart(struct cli *cli, int argc, char **argv)
{
	const char *usage = "vm restart NAME [--grace SECONDS] [--store URL] [--state-dir DIR]";
	struct vmctx v = { 0 };
	const char *pos[1], *grace = "60";
	const struct cli_opt opts[] = { { "--grace", true, &grace, NULL, NULL }, STORE_OPTS(v) };
	int rc = cli_parse(argc, argv, opts, CVM_ARRAY_SIZE(opts), pos, 1, 1, NULL, usage);
	if (rc)
		return rc;
	if (!cvm_vm_name_valid(pos[0]))
		return cli_usage_error(usage, "NAME: not a valid VM name");
	struct cvm_err err = { 0 };
	int64_t g = 0;
	if (cvm_parse_i64(grace, 0, 3600, &g, "--grace", &err) < 0)
		return cli_usage_error(usage, "%s", err.msg);
	struct cvm_vm vm = { 0 };
	struct launch_args la = { 0 };
	json_t *doc = NULL;
	_cleanup_free_ char *vdir = NULL, *rdir = run_dir(pos[0]), *sock = NULL;
	bool forced = false;
	int r = vmctx_open(&v, &err);
	if (r == 0)
		r = cvm_vm_get(v.store, pos[0], &vm, &err);
	if (r == 0 && vm.state != CVM_VM_RUNNING)
		r = cvm_err_set(&err, EBUSY, "InvalidState",
				"state: VM %s is %s; restart needs a running VM (use vm start)",
				pos[0], cvm_vm_state_name(vm.state));
	if (r == 0 && (!(vdir = vm_dir(&v, pos[0])) || !rdir ||
		       !(sock = cvm_path_join(rdir, "qmp.sock"))))
		r = cvm_err_nomem(&err);
	/* Read the launch arguments before stopping anything: a VM that cannot be booted
	 * again is left running. */
	if (r == 0)
		r = launch_load(vdir, pos[0], &la, &doc, &err);
	if (r == 0)
		r = qmp_powerdown(sock, (int)g, &forced, &err);
	if (r == 0 && !cli->json)
		printf("%s: %s; starting again\n", pos[0],
		       forced ? "no clean shutdown within the grace period; QEMU stopped"
			      : "shut down");
	if (r == 0)
		r = wait_stopped(&v, pos[0], 60, &err);
	/* v.store_url may be v's own default string, which vmctx_close frees */
	_cleanup_free_ char *store = v.store_url ? cvm_strdup(v.store_url) : NULL;
	if (r == 0 && !store)
		r = cvm_err_nomem(&err);
	cvm_vm_clear(&vm);
	vmctx_close(&v);
	if (r < 0) {
		json_decref(doc);
		return cli_fail(&err, "vm restart");
	}
	const char *args[32];
	int n = 0;
	args[n++] = "start";
	args[n++] = pos[0];
#define ARG(opt, val)                    \
	do {                             \
		if (val) {               \
			args[n++] = opt; \
			args[n++] = val; \
		}                        \
	} while (0)
	ARG("--kernel", la.kernel);
	ARG("--initrd", la.initrd);
	ARG("--append", la.append);
	ARG("--vmgs-key-file", la.keyfile);
	ARG("--os-image", la.image);
	ARG("--emulator-dir", la.emu);
	ARG("--memory-mib", la.mem);
	ARG("--timeout", la.timeout);
	ARG("--hostfwd-port", la.port);
	ARG("--snp-policy", la.snp);
	ARG("--store", store);
	ARG("--state-dir", v.state_dir);
	ARG("--sizes", v.sizes_file);
#undef ARG
	args[n] = NULL;
	fflush(stdout);
	rc = vm_start_as(cli, n, (char **)args, "restart");
	json_decref(doc);
	return rc;
}

static int vm_console(struct cli *cli, int argc, char **argv)
{
	const char *usage = "vm console NAME [--state-dir DIR]";
	struct vmctx v = { 0 };
	const char *pos[1];
	const struct cli_opt opts[] = { { "--state-dir", true, &v.state_dir, NULL, NULL } };
	int rc = cli_parse(argc, argv, opts, CVM_ARRAY_SIZE(opts), pos, 1, 1, NULL, usage);
	if (rc)
		return rc;
	if (!cvm_vm_name_valid(pos[0]))
		return cli_usage_error(usage, "NAME: not a valid VM name");
	if (!v.state_dir)
		v.state_dir = getenv("CVM_STATE_DIR") ? getenv("CVM_STATE_DIR") : DEFAULT_STATE_DIR;
	_cleanup_free_ char *dir = vm_dir(&v, pos[0]);
	_cleanup_free_ char *p = dir ? cvm_path_join(dir, "console.log") : NULL;
	struct cvm_err err = { 0 };
	_cleanup_free_ uint8_t *d = NULL;
	size_t l = 0;
	if (!p || cvm_file_read(p, 64u * 1024 * 1024, &d, &l, &err) < 0)
		return cli_fail(&err, "vm console");
	(void)cli;
	return fwrite(d, 1, l, stdout) == l ? CLI_OK : CLI_FAIL;
}

/* The checks of a cutover for VM name (vm.h cvm_vm_validate) plus the OS disk's encryption:
 * *checks a JSON array of {check, passed, detail}, *failed how many did not pass. Shared by
 * `vm validate` and `migrate cutover --target-vm`. */
int cli_vm_checks(struct cvm_store *store, const char *state_dir, const char *name,
		  const uint8_t *reference, const char *image, json_t **checks, int *failed,
		  struct cvm_err *err)
{
	struct vmctx v = { .store = store, .state_dir = state_dir ? state_dir
					       : getenv("CVM_STATE_DIR") ? getenv("CVM_STATE_DIR")
									 : DEFAULT_STATE_DIR };
	struct cvm_vm vm = { 0 };
	*checks = NULL;
	*failed = 0;
	int r = cvm_vm_get(store, name, &vm, err);
	_cleanup_free_ char *vdir = r == 0 ? vm_dir(&v, vm.name) : NULL;
	_cleanup_free_ char *rdir = r == 0 ? run_dir(vm.name) : NULL;
	_cleanup_free_ char *vmgs = vdir ? cvm_path_join(vdir, "vmgs.bin") : NULL;
	_cleanup_free_ char *vars = rdir ? cvm_path_join(rdir, "OVMF_VARS.fd") : NULL;
	_cleanup_free_ char *swtpm = rdir ? cvm_path_join(rdir, "swtpm.sock") : NULL;
	if (r == 0 && (!vmgs || !vars || !swtpm))
		r = cvm_err_nomem(err);
	if (r == 0) {
		struct cvm_vm_validate_in in = {
			.store = store, .vm = &vm, .firmware = OVMF_CODE,
			.vars_file = vm.state == CVM_VM_RUNNING ? vars : NULL,
			.swtpm_sock = swtpm, .vmgs_file = vmgs,
			.reference = reference, .now_ms = cvm_now_ms(),
		};
		r = cvm_vm_validate(&in, checks, failed, err);
	}
	if (r == 0) {
		_cleanup_free_ char *img = NULL;
		struct cvm_err e2 = { 0 };
		struct cvm_disk_info info = { 0 };
		bool enc = os_image(&v, &vm, image, &img, &e2) == 0 &&
			   cvm_disk_info(img, &info, &e2) == 0 && info.complete && info.has_hsm_token;
		bool des_ok = enc && vm.des && strcmp(info.hsm.des, vm.des) == 0;
		char m[512];
		snprintf(m, sizeof(m), "%s", !enc ? (e2.msg[0] ? e2.msg : "no opencvm-hsm token")
					     : !des_ok ? "the disk's token names another DES"
						       : "LUKS2, its secret wrapped by the VM's DES");
		if (enc && des_ok)
			snprintf(m, sizeof(m), "LUKS2 (%s, %u-byte sectors), secret wrapped by DES %s "
					       "key %s", info.cipher, info.sector_size, vm.des,
				 info.hsm.key_url);
		json_array_append_new(*checks, json_pack("{s:s,s:b,s:s}", "check", "diskEncryption",
							 "passed", des_ok, "detail", m));
		*failed += !des_ok;
		/* data disks: what vm start would attach (registered, complete, same key) */
		if (vm.n_data_disks) {
			struct data_disks dd = { 0 };
			struct cvm_err e3 = { 0 };
			bool ok = des_ok && data_disks_resolve(&v, &vm, img, info.hsm.key_url, &dd,
							       &e3) == 0;
			snprintf(m, sizeof(m), "%s", ok ? "" : e3.msg[0] ? e3.msg
							 : "the OS disk's key is unknown");
			if (ok)
				snprintf(m, sizeof(m), "%zu confidential data disk%s, wrapped by the OS "
						       "disk's key", dd.n, dd.n == 1 ? "" : "s");
			json_array_append_new(*checks, json_pack("{s:s,s:b,s:s}", "check",
								 "dataDisks", "passed", ok,
								 "detail", m));
			*failed += !ok;
			data_disks_clear(&dd);
		}
		cvm_disk_info_clear(&info);
	}
	cvm_vm_clear(&vm);
	return r;
}

/* The pinned launch measurement: given as hex, or computed for the boot artifacts. */
static int reference_measurement(const char *hex, const char *kernel, const char *initrd,
				 const char *append, uint8_t out[48], struct cvm_err *err)
{
	if (hex)
		return cvm_hex_decode_fixed(hex, out, 48, "--reference-measurement", err);
	return cvm_vm_emulated_measurement(OVMF_CODE, kernel, initrd, append, out, err);
}

/* The checks of a cutover (vm.h cvm_vm_validate) plus the OS disk's encryption. Each prints
 * PASS/FAIL with its reason; exit 1 when any fails. */
static int vm_validate(struct cli *cli, int argc, char **argv)
{
	const char *usage = "vm validate NAME [--reference-measurement HEX | --kernel FILE --initrd "
			    "FILE [--append CMDLINE]] [--os-image FILE] [--store URL] "
			    "[--state-dir DIR]";
	struct vmctx v = { 0 };
	const char *image = NULL, *hex = NULL, *kernel = NULL, *initrd = NULL,
		   *append = "console=ttyS0", *pos[1];
	const struct cli_opt opts[] = {
		{ "--os-image", true, &image, NULL, NULL },
		{ "--reference-measurement", true, &hex, NULL, NULL },
		{ "--kernel", true, &kernel, NULL, NULL },
		{ "--initrd", true, &initrd, NULL, NULL },
		{ "--append", true, &append, NULL, NULL },
		STORE_OPTS(v),
	};
	int rc = cli_parse(argc, argv, opts, CVM_ARRAY_SIZE(opts), pos, 1, 1, NULL, usage);
	if (rc)
		return rc;
	if (hex && (kernel || initrd))
		return cli_usage_error(usage, "--reference-measurement and --kernel/--initrd are "
					      "alternatives");
	if (!hex && !kernel != !initrd)
		return cli_usage_error(usage, "--kernel and --initrd go together");
	struct cvm_err err = { 0 };
	uint8_t ref[48];
	bool have_ref = hex || kernel;
	if (have_ref && reference_measurement(hex, kernel, initrd, append, ref, &err) < 0)
		return cli_usage_error(usage, "%s", err.msg);
	json_t *checks = NULL;
	int failed = 0;
	int r = vmctx_open(&v, &err);
	if (r == 0)
		r = cli_vm_checks(v.store, v.state_dir, pos[0], have_ref ? ref : NULL, image, &checks,
				  &failed, &err);
	vmctx_close(&v);
	if (r < 0)
		return cli_fail(&err, "vm validate");
	if (cli->json) {
		cli_print_json(checks);
	} else {
		size_t i;
		json_t *c;
		json_array_foreach(checks, i, c)
			printf("%-15s %s  %s\n", json_string_value(json_object_get(c, "check")),
			       json_is_true(json_object_get(c, "passed")) ? "PASS" : "FAIL",
			       json_string_value(json_object_get(c, "detail")));
	}
	json_decref(checks);
	return failed ? CLI_FAIL : CLI_OK;
}

/* The launch measurement to pin in a release policy (x-ms-sevsnpvm-launchmeasurement). */
static int vm_measure(struct cli *cli, int argc, char **argv)
{
	const char *usage = "vm measure --kernel FILE --initrd FILE [--append CMDLINE] "
			    "[--firmware FILE]";
	const char *kernel = NULL, *initrd = NULL, *append = "console=ttyS0", *fw = OVMF_CODE;
	const struct cli_opt opts[] = {
		{ "--kernel", true, &kernel, NULL, NULL },
		{ "--initrd", true, &initrd, NULL, NULL },
		{ "--append", true, &append, NULL, NULL },
		{ "--firmware", true, &fw, NULL, NULL },
	};
	int rc = cli_parse(argc, argv, opts, CVM_ARRAY_SIZE(opts), NULL, 0, 0, NULL, usage);
	if (rc)
		return rc;
	if (!kernel || !initrd)
		return cli_usage_error(usage, "--kernel and --initrd are required");
	struct cvm_err err = { 0 };
	uint8_t m[48];
	if (cvm_vm_emulated_measurement(fw, kernel, initrd, append, m, &err) < 0)
		return cli_fail(&err, "vm measure");
	_cleanup_free_ char *hex = cvm_hex_encode(m, sizeof(m));
	if (!hex)
		return CLI_FAIL;
	if (cli->json) {
		json_t *j = json_pack("{s:s,s:s}", "launchMeasurement", hex, "kind", "emulated");
		cli_print_json(j);
		json_decref(j);
	} else {
		printf("%s\n", hex);
	}
	return CLI_OK;
}

int cli_vm(struct cli *cli, int argc, char **argv)
{
	static const struct cli_verb verbs[] = {
		{ "create", vm_create, "create NAME --size SIZE [--security-type T] [--tee T] "
				       "[--os-disk D] [--des D] [--data-disk D]... [--temp-disk]" },
		{ "start", vm_start, "start NAME --kernel F --initrd F [--append CMDLINE] "
				     "[--os-image F] [--emulator-dir D] [--memory-mib N] ..." },
		{ "stop", vm_stop, "stop NAME [--grace SECONDS]" },
		{ "restart", vm_restart, "restart NAME [--grace SECONDS]" },
		{ "delete", vm_delete, "delete NAME" },
		{ "show", vm_show, "show NAME" },
		{ "list", vm_list, "list" },
		{ "console", vm_console, "console NAME" },
		{ "validate", vm_validate, "validate NAME [--reference-measurement HEX | --kernel F "
					   "--initrd F [--append CMDLINE]] [--os-image FILE]" },
		{ "measure", vm_measure, "measure --kernel F --initrd F [--append CMDLINE]" },
	};
	return cli_dispatch(cli, "vm", verbs, CVM_ARRAY_SIZE(verbs), argc, argv);
}
