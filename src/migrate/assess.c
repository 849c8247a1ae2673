/* SPDX-License-Identifier: Apache-2.0 */
/* Readiness assessment of a disk image for a confidential VM, from the disk alone: partition
 * table, LDM, size, firmware, filesystems, and the root filesystem's fstab, os-release,
 * kernel config, initramfs, shim/grub-efi and TPM tooling (read through libext2fs). */
#include "migrate-internal.h"

#include <blkid/blkid.h>
#include <jansson.h>
#include <spawn.h>
#include <sys/wait.h>
#include <unistd.h>

#define MAX_FSTAB 128
#define MAX_SMALL_FILE (1u << 20)       /* fstab, os-release, kernel config */
#define MAX_INITRAMFS (512u << 20)

struct ctx {
	const char *image;
	const struct cvm_assess_opts *opts;
	struct cvm_assess_report *rep;
	struct cvm_ptable pt;
	bool pt_ok;
	char pt_error[256];
	struct mig_fsinfo fs[CVM_PT_MAX_PARTS];
	struct mig_fsinfo whole;          /* filesystem on the whole disk (no table) */
	struct mig_extfs *root, *boot;    /* boot == root when /boot is on the root fs */
	const char *boot_prefix;          /* "/boot" on the root fs, "" on a separate /boot */
	int boot_part;
	/* facts gathered from the root filesystem */
	uint8_t *osrel;
	size_t osrel_len;
	uint8_t *kconfig;
	size_t kconfig_len;
	char initramfs[128];
	bool fstab_read;
	char fstab_error[256];
	struct mig_fstab_entry fstab[MAX_FSTAB];
	size_t nfstab;
	char cmdline_dev[256];            /* "grub.cfg root=/dev/sda1" when a kernel command line
					   * names a device */
};

const char *cvm_check_status_name(enum cvm_check_status s)
{
	switch (s) {
	case CVM_CHECK_PASS: return "pass";
	case CVM_CHECK_WARN: return "warn";
	default: return "fail";
	}
}

const char *cvm_verdict_name(enum cvm_verdict v)
{
	switch (v) {
	case CVM_VERDICT_READY: return "ready";
	case CVM_VERDICT_READY_WITH_REMEDIATION: return "ready-with-remediation";
	default: return "not-ready";
	}
}

void cvm_assess_report_clear(struct cvm_assess_report *r)
{
	if (!r)
		return;
	for (size_t i = 0; i < r->n; i++) {
		free(r->findings[i].detail);
		free(r->findings[i].remediation);
	}
	free(r->findings);
	memset(r, 0, sizeof(*r));
}

static int add(struct ctx *c, const char *check, enum cvm_check_status st, const char *remediation,
	       const char *fmt, ...) CVM_PRINTF(5, 6);
static int add(struct ctx *c, const char *check, enum cvm_check_status st, const char *remediation,
	       const char *fmt, ...)
{
	struct cvm_assess_report *r = c->rep;
	struct cvm_finding *f = realloc(r->findings, (r->n + 1) * sizeof(*f));
	if (!f)
		return -ENOMEM;
	r->findings = f;
	f = &r->findings[r->n];
	memset(f, 0, sizeof(*f));
	snprintf(f->check, sizeof(f->check), "%s", check);
	f->status = st;
	va_list ap;
	va_start(ap, fmt);
	if (vasprintf(&f->detail, fmt, ap) < 0)
		f->detail = NULL;
	va_end(ap);
	f->remediation = cvm_strdup(st == CVM_CHECK_PASS ? "" : remediation ? remediation : "");
	if (!f->detail || !f->remediation) {
		free(f->detail);
		free(f->remediation);
		return -ENOMEM;
	}
	r->n++;
	return 0;
}

static uint64_t part_off(const struct ctx *c, const struct cvm_part *p)
{
	return p->start_lba * c->pt.sector_size;
}

static uint64_t part_len(const struct ctx *c, const struct cvm_part *p)
{
	return p->nsectors * c->pt.sector_size;
}

/* ---- image format ------------------------------------------------------------------------ */
static const char *detect_format(const uint8_t *h, size_t n)
{
	if (n >= 4 && memcmp(h, "QFI\xfb", 4) == 0)
		return "qcow2";
	if (n >= 8 && memcmp(h, "vhdxfile", 8) == 0)
		return "vhdx";
	if (n >= 4 && memcmp(h, "KDMV", 4) == 0)
		return "vmdk";
	if (n >= 68 && mig_le32(h + 64) == 0xbeda107f)
		return "vdi";
	return "raw";
}

static int run_argv(char *const argv[], struct cvm_err *err)
{
	pid_t pid;
	int r = posix_spawnp(&pid, argv[0], NULL, NULL, argv, environ);
	if (r)
		return cvm_err_set(err, r, "InternalError", "%s: %s", argv[0], strerror(r));
	int st;
	while (waitpid(pid, &st, 0) < 0)
		if (errno != EINTR)
			return cvm_err_set(err, errno, "InternalError", "waitpid: %s", strerror(errno));
	if (!WIFEXITED(st) || WEXITSTATUS(st) != 0)
		return cvm_err_internal(err, "%s failed (status %d)", argv[0], st);
	return 0;
}

/* Non-raw images become a sparse raw temporary the parsers can read at byte offsets. */
static int to_raw(const char *path, const struct cvm_assess_opts *o, char fmt[16], char **raw,
		  struct cvm_err *err)
{
	uint8_t h[512] = {0};
	int fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		return cvm_err_set(err, errno, errno == ENOENT ? "NotFound" : "InternalError",
				   "image %s: %s", path, strerror(errno));
	ssize_t n = pread(fd, h, sizeof(h), 0);
	close(fd);
	if (n < 0)
		return cvm_err_internal(err, "image %s: %s", path, strerror(errno));
	snprintf(fmt, 16, "%s", detect_format(h, (size_t)n));
	*raw = NULL;
	if (strcmp(fmt, "raw") == 0)
		return 0;
	const char *dir = o && o->tmpdir ? o->tmpdir : getenv("TMPDIR") ? getenv("TMPDIR") : "/tmp";
	_cleanup_free_ char *tmpl = cvm_asprintf("%s/cvm-assess-XXXXXX", dir);
	if (!tmpl)
		return cvm_err_nomem(err);
	int tfd = mkstemp(tmpl);
	if (tfd < 0)
		return cvm_err_internal(err, "temporary in %s: %s", dir, strerror(errno));
	close(tfd);
	char *argv[] = {"qemu-img", "convert", "-q", "-f", fmt, "-O", "raw", (char *)path, tmpl, NULL};
	int r = run_argv(argv, err);
	if (r < 0) {
		unlink(tmpl);
		return cvm_err_prefix(err, "converting %s image %s to raw", fmt, path);
	}
	*raw = CVM_TAKE(tmpl);
	return 0;
}

/* ---- gathering ---------------------------------------------------------------------------- */
static bool is_ext(const char *t)
{
	return strcmp(t, "ext2") == 0 || strcmp(t, "ext3") == 0 || strcmp(t, "ext4") == 0;
}

static int cmp_version_desc(const void *a, const void *b)
{
	return -strverscmp(*(char *const *)a, *(char *const *)b);
}

/* The newest kernel with a config file under the boot directory. */
static void find_kernel(struct ctx *c, struct mig_extfs *fs, const char *dir)
{
	char **names = NULL;
	struct cvm_err e = {0};
	if (mig_extfs_list(fs, dir[0] ? dir : "/", &names, &e) < 0)
		return;
	size_t n = 0, k = 0;
	while (names[n])
		n++;
	for (size_t i = 0; i < n; i++)
		if (cvm_str_startswith(names[i], "config-"))
			names[k++] = names[i];
		else
			free(names[i]);
	names[k] = NULL;
	if (k > 0) {
		qsort(names, k, sizeof(*names), cmp_version_desc);
		snprintf(c->rep->facts.kernel, sizeof(c->rep->facts.kernel), "%s", names[0] + 7);
		_cleanup_free_ char *p = cvm_asprintf("%s/%s", dir, names[0]);
		if (p && mig_extfs_read(fs, p, MAX_SMALL_FILE, &c->kconfig, &c->kconfig_len, &e) == 0) {
			c->boot = fs;
			c->boot_prefix = dir;
		}
	}
	mig_strv_free(names);
}

static void read_os_release(struct ctx *c)
{
	struct cvm_err e = {0};
	if (mig_extfs_read(c->root, "/etc/os-release", MAX_SMALL_FILE, &c->osrel, &c->osrel_len,
			   &e) < 0)
		mig_extfs_read(c->root, "/usr/lib/os-release", MAX_SMALL_FILE, &c->osrel,
			       &c->osrel_len, &e);
}

/* Value of KEY= in os-release text (quotes removed) into out. */
static bool osrel_get(const struct ctx *c, const char *key, char *out, size_t outlen)
{
	if (!c->osrel)
		return false;
	size_t kl = strlen(key);
	const char *s = (const char *)c->osrel, *end = s + c->osrel_len;
	while (s < end) {
		const char *eol = memchr(s, '\n', (size_t)(end - s));
		if (!eol)
			eol = end;
		if ((size_t)(eol - s) > kl && strncmp(s, key, kl) == 0 && s[kl] == '=') {
			const char *v = s + kl + 1;
			size_t vl = (size_t)(eol - v);
			if (vl >= 2 && (v[0] == '"' || v[0] == '\'') && v[vl - 1] == v[0]) {
				v++;
				vl -= 2;
			}
			if (vl >= outlen)
				vl = outlen - 1;
			memcpy(out, v, vl);
			out[vl] = 0;
			return true;
		}
		s = eol + 1;
	}
	return false;
}

/* "y", "m" or "" for CONFIG_<name> in the kernel config. */
static const char *kconf(const struct ctx *c, const char *name)
{
	if (!c->kconfig)
		return "";
	char key[96];
	snprintf(key, sizeof(key), "CONFIG_%s=", name);
	size_t kl = strlen(key);
	const char *s = (const char *)c->kconfig, *end = s + c->kconfig_len;
	while (s < end) {
		const char *eol = memchr(s, '\n', (size_t)(end - s));
		if (!eol)
			eol = end;
		if ((size_t)(eol - s) > kl && strncmp(s, key, kl) == 0)
			return s[kl] == 'y' ? "y" : s[kl] == 'm' ? "m" : "";
		s = eol + 1;
	}
	return "";
}

/* root=/resume= by kernel device name in grub's config breaks booting on another bus. */
static void find_cmdline_devnames(struct ctx *c)
{
	static const char *const files[] = {"/boot/grub/grub.cfg", "/etc/default/grub"};
	for (size_t f = 0; f < CVM_ARRAY_SIZE(files) && !c->cmdline_dev[0]; f++) {
		_cleanup_free_ uint8_t *buf = NULL;
		size_t len = 0;
		struct cvm_err e = {0};
		if (mig_extfs_read(c->root, files[f], 4u << 20, &buf, &len, &e) < 0)
			continue;
		const char *s = (const char *)buf;
		for (const char *p = s; (p = strstr(p, "root=/dev/")) != NULL; p += 5) {
			if (p > s && p[-1] != ' ' && p[-1] != '\t' && p[-1] != '"' && p[-1] != '\'')
				continue;
			size_t n = strcspn(p + 5, " \t\n\"'");
			char dev[128];
			snprintf(dev, sizeof(dev), "%.*s", (int)(n < 127 ? n : 127), p + 5);
			if (mig_fstab_is_devname(dev)) {
				snprintf(c->cmdline_dev, sizeof(c->cmdline_dev), "%s root=%s", files[f], dev);
				break;
			}
		}
	}
}

static void open_root(struct ctx *c)
{
	/* Root = the first ext filesystem with /etc/fstab or /etc/os-release; /boot may be a
	 * separate ext filesystem holding config-* at its top level. */
	for (size_t i = 0; i < c->pt.nparts && !c->root; i++) {
		const struct cvm_part *p = &c->pt.parts[i];
		struct mig_extfs *fs = NULL;
		struct cvm_err e = {0};
		if (!is_ext(c->fs[i].type) ||
		    mig_extfs_open(c->image, part_off(c, p), false, &fs, &e) < 0)
			continue;
		if (mig_extfs_exists(fs, "/etc/fstab") || mig_extfs_exists(fs, "/etc/os-release")) {
			c->root = fs;
			c->rep->facts.root_part = (int)p->number;
		} else {
			mig_extfs_close(fs);
		}
	}
	if (!c->root && c->pt.kind == CVM_PT_NONE && is_ext(c->whole.type)) {
		struct cvm_err e = {0};
		if (mig_extfs_open(c->image, 0, false, &c->root, &e) < 0)
			c->root = NULL;
	}
	if (!c->root)
		return;
	read_os_release(c);
	find_kernel(c, c->root, "/boot");
	for (size_t i = 0; i < c->pt.nparts && !c->kconfig; i++) {
		const struct cvm_part *p = &c->pt.parts[i];
		struct mig_extfs *fs = NULL;
		struct cvm_err e = {0};
		if ((int)p->number == c->rep->facts.root_part || !is_ext(c->fs[i].type) ||
		    mig_extfs_open(c->image, part_off(c, p), false, &fs, &e) < 0)
			continue;
		find_kernel(c, fs, "");
		if (c->boot == fs)
			c->boot_part = (int)p->number;
		else
			mig_extfs_close(fs);
	}
	uint8_t *buf = NULL;
	size_t len = 0;
	struct cvm_err e = {0};
	if (mig_extfs_read(c->root, "/etc/fstab", MAX_SMALL_FILE, &buf, &len, &e) == 0 &&
	    mig_fstab_parse(buf, len, c->fstab, MAX_FSTAB, &c->nfstab, &e) == 0)
		c->fstab_read = true;
	else
		snprintf(c->fstab_error, sizeof(c->fstab_error), "%s", e.msg);
	free(buf);
	find_cmdline_devnames(c);
	if (c->boot) {
		static const char *const pre[] = {"initrd.img-", "initramfs-"};
		static const char *const suf[] = {"", ".img"};
		for (size_t i = 0; i < CVM_ARRAY_SIZE(pre) && !c->initramfs[0]; i++) {
			char p[128];
			snprintf(p, sizeof(p), "%s/%s%s%s", c->boot_prefix, pre[i],
				 c->rep->facts.kernel, suf[i]);
			if (mig_extfs_exists(c->boot, p))
				snprintf(c->initramfs, sizeof(c->initramfs), "%s", p);
		}
	}
}

static int gather(struct ctx *c)
{
	struct cvm_err e = {0};
	if (cvm_ptable_read(c->image, &c->pt, &e) < 0) {
		snprintf(c->pt_error, sizeof(c->pt_error), "%s", e.msg);
		int fd = open(c->image, O_RDONLY | O_CLOEXEC);
		if (fd >= 0) {
			mig_fd_size(fd, &c->pt.disk_bytes, &e);
			close(fd);
		}
		c->pt.nparts = 0;
	} else {
		c->pt_ok = true;
	}
	c->rep->facts.disk_bytes = c->pt.disk_bytes;
	c->rep->facts.table = c->pt_ok ? c->pt.kind : CVM_PT_NONE;
	for (size_t i = 0; i < c->pt.nparts; i++) {
		const struct cvm_part *p = &c->pt.parts[i];
		if (cvm_part_is_extended(&c->pt, p) || cvm_part_is_ldm(&c->pt, p))
			continue;
		struct cvm_err pe = {0};
		mig_probe_fs(c->image, part_off(c, p), part_len(c, p), &c->fs[i], &pe);
	}
	if (c->pt_ok && c->pt.kind == CVM_PT_NONE)
		mig_probe_fs(c->image, 0, c->pt.disk_bytes, &c->whole, &e);
	open_root(c);
	return 0;
}

/* ---- checks ------------------------------------------------------------------------------- */
/* libblkid's view of the table ("dos", "gpt" or "" when it sees none). */
static void blkid_pttype(const char *image, char out[16])
{
	out[0] = 0;
	blkid_probe pr = blkid_new_probe_from_filename(image);
	if (!pr)
		return;
	blkid_probe_enable_superblocks(pr, 0);
	blkid_probe_enable_partitions(pr, 1);
	const char *v;
	size_t vl;
	if (blkid_do_safeprobe(pr) == 0 && blkid_probe_lookup_value(pr, "PTTYPE", &v, &vl) == 0)
		snprintf(out, 16, "%s", v);
	blkid_free_probe(pr);
}

static int check_table(struct ctx *c)
{
	char bt[16];
	blkid_pttype(c->image, bt);
	const char *ours = c->pt_ok ? cvm_pt_kind_name(c->pt.kind) : "invalid";
	const char *expect = c->pt.kind == CVM_PT_GPT ? "gpt" : c->pt.kind == CVM_PT_MBR ? "dos" : "";
	if (!c->pt_ok)
		return add(c, "partition-table", CVM_CHECK_FAIL,
			   "repair the table on the source (sgdisk -v / fdisk -l show the damage; "
			   "`sgdisk -e` restores a GPT from its backup) and assess again",
			   "partition table unreadable: %s", c->pt_error);
	if (strcmp(bt, expect) != 0)
		return add(c, "partition-table", CVM_CHECK_WARN,
			   "inspect the table with `fdisk -l` and `sgdisk -v`; rewrite it cleanly "
			   "before migration",
			   "our parser reads '%s' but libblkid reads '%s'", ours, bt[0] ? bt : "none");
	if (c->pt.kind == CVM_PT_NONE)
		return add(c, "partition-table", CVM_CHECK_FAIL,
			   "a confidential VM boots only from a GPT disk with an ESP: put the "
			   "filesystem in a GPT partition (copy it into a new GPT disk with an ESP)",
			   "no partition table (whole-disk %s)",
			   c->whole.type[0] ? c->whole.type : "data");
	if (c->pt.kind == CVM_PT_MBR) {
		char rem[256];
		snprintf(rem, sizeof(rem), "cvm migrate mbr2gpt --in %s --out <copy>.img", c->image);
		return add(c, "partition-table", CVM_CHECK_WARN, rem,
			   "MBR (DOS) partition table with %zu partitions; confidential VMs boot "
			   "UEFI from GPT", c->pt.nparts);
	}
	if (!c->pt.backup_gpt_ok)
		return add(c, "partition-table", CVM_CHECK_WARN,
			   "restore the backup GPT: `sgdisk -e <disk>` (or `sgdisk -v` to see why)",
			   "GPT with %zu partitions, but the backup GPT is missing or does not "
			   "match the primary", c->pt.nparts);
	if (c->pt.hybrid_mbr)
		return add(c, "partition-table", CVM_CHECK_WARN,
			   "replace the hybrid MBR with a protective MBR: `sgdisk -z` is too much; "
			   "use gdisk's expert menu (x, n: new protective MBR, w)",
			   "GPT with a hybrid MBR");
	return add(c, "partition-table", CVM_CHECK_PASS, NULL,
		   "GPT with %zu partitions, backup GPT valid (libblkid agrees)", c->pt.nparts);
}

static int check_ldm(struct ctx *c)
{
	for (size_t i = 0; i < c->pt.nparts; i++)
		if (cvm_part_is_ldm(&c->pt, &c->pt.parts[i]))
			return add(c, "dynamic-disk", CVM_CHECK_FAIL,
				   "convert the dynamic disk to a basic disk on the source (Windows "
				   "Disk Management: back up the volumes, delete them, \"Convert to "
				   "Basic Disk\", restore) and assess again; dynamic (LDM) disks "
				   "cannot be converted offline",
				   "partition %u is a Windows dynamic disk (LDM) %s",
				   c->pt.parts[i].number,
				   c->pt.kind == CVM_PT_GPT ? "partition" : "(MBR type 0x42)");
	return add(c, "dynamic-disk", CVM_CHECK_PASS, NULL, "no Windows dynamic disk (LDM)");
}

static int check_size(struct ctx *c)
{
	uint64_t max = c->opts && c->opts->max_os_disk ? c->opts->max_os_disk : CVM_MIGRATE_MAX_OS_DISK;
	uint64_t sz = c->pt.disk_bytes;
	if (sz > max) {
		char rem[320];
		snprintf(rem, sizeof(rem), "shrink the OS disk to at most %llu GiB: move data "
			 "partitions to a separate data disk (migrated on its own), then shrink the "
			 "remaining filesystems and partitions (resize2fs, then sgdisk/sfdisk)",
			 (unsigned long long)(max >> 30));
		return add(c, "os-disk-size", CVM_CHECK_FAIL, rem,
			   "disk is %llu GiB, above the %llu GiB OS-disk limit",
			   (unsigned long long)(sz >> 30), (unsigned long long)(max >> 30));
	}
	return add(c, "os-disk-size", CVM_CHECK_PASS, NULL, "disk is %llu MiB (limit %llu GiB)",
		   (unsigned long long)(sz >> 20), (unsigned long long)(max >> 30));
}

static int check_firmware(struct ctx *c)
{
	struct cvm_assess_facts *f = &c->rep->facts;
	bool bios_boot = false;
	for (size_t i = 0; i < c->pt.nparts; i++) {
		const struct cvm_part *p = &c->pt.parts[i];
		if (cvm_part_is_esp(&c->pt, p) && !f->esp_part)
			f->esp_part = (int)p->number;
		if (cvm_part_is_bios_boot(&c->pt, p) || p->bootable)
			bios_boot = true;
	}
	if (f->esp_part) {
		const char *t = c->fs[0].type;
		for (size_t i = 0; i < c->pt.nparts; i++)
			if ((int)c->pt.parts[i].number == f->esp_part)
				t = c->fs[i].type;
		if (strcmp(t, "vfat") != 0) {
			snprintf(f->firmware, sizeof(f->firmware), "unknown");
			return add(c, "firmware", CVM_CHECK_FAIL,
				   "format the ESP as FAT32 (mkfs.vfat -F 32) and reinstall the "
				   "bootloader into it",
				   "ESP (partition %d) holds '%s', not a FAT filesystem", f->esp_part,
				   t[0] ? t : "nothing recognizable");
		}
		snprintf(f->firmware, sizeof(f->firmware), "uefi");
		return add(c, "firmware", CVM_CHECK_PASS, NULL, "UEFI: EFI system partition %d (vfat)",
			   f->esp_part);
	}
	snprintf(f->firmware, sizeof(f->firmware), c->pt_ok && c->pt.kind != CVM_PT_NONE ? "bios" : "unknown");
	const char *rem = c->pt.kind == CVM_PT_MBR ?
		"convert with `cvm migrate mbr2gpt` (adds a FAT32 ESP), then install shim and "
		"grub-efi (see secure-boot-loader)" :
		"create a 100 MiB FAT32 ESP (`sgdisk -n 0:0:+100M -t 0:EF00`, mkfs.vfat -F 32) and "
		"install shim and grub-efi into it (see secure-boot-loader)";
	return add(c, "firmware", CVM_CHECK_WARN, rem, "BIOS boot (%s); confidential VMs boot UEFI only",
		   bios_boot ? "active/BIOS-boot partition" : "no EFI system partition");
}

static int check_filesystems(struct ctx *c)
{
	static const char *const known[] = {"ext2", "ext3", "ext4", "xfs", "btrfs", "vfat",
					    "ntfs", "swap", NULL};
	_cleanup_buf_ struct cvm_buf list = {0};
	int unknown = 0;
	for (size_t i = 0; i < c->pt.nparts; i++) {
		const struct cvm_part *p = &c->pt.parts[i];
		if (cvm_part_is_extended(&c->pt, p))
			continue;
		const char *t = cvm_part_is_ldm(&c->pt, p) ? "ldm" : c->fs[i].type[0] ? c->fs[i].type : "unknown";
		bool ok = cvm_part_is_bios_boot(&c->pt, p);
		for (size_t k = 0; known[k] && !ok; k++)
			ok = strcmp(known[k], t) == 0;
		if (!ok)
			unknown++;
		if (cvm_buf_printf(&list, "%s%u:%s", list.len ? " " : "", p->number,
				   cvm_part_is_bios_boot(&c->pt, p) ? "bios-boot" : t) < 0)
			return -ENOMEM;
	}
	if (c->pt.kind == CVM_PT_NONE && c->whole.type[0] &&
	    cvm_buf_printf(&list, "disk:%s", c->whole.type) < 0)
		return -ENOMEM;
	const char *s = list.len ? cvm_buf_cstr(&list) : "none";
	if (!s)
		return -ENOMEM;
	if (!c->root)
		return add(c, "filesystems", CVM_CHECK_FAIL,
			   "the root filesystem must be ext2/3/4 for offline assessment and "
			   "conversion; assess the server from a running copy otherwise",
			   "%s; no readable Linux root filesystem (ext2/3/4 with /etc/fstab)", s);
	if (unknown)
		return add(c, "filesystems", CVM_CHECK_WARN,
			   "identify the unrecognized partitions (blkid, file -s) and make sure "
			   "the target OS can mount them",
			   "%s; %d partition(s) hold no recognized filesystem", s, unknown);
	return add(c, "filesystems", CVM_CHECK_PASS, NULL, "%s; root is partition %d", s,
		   c->rep->facts.root_part);
}

static const char *uuid_for_dev(const struct ctx *c, const char *dev)
{
	/* /dev/sda3, /dev/vda3, /dev/xvda3, /dev/hda3 -> partition 3 of this disk */
	size_t l = strlen(dev);
	size_t d = l;
	while (d > 0 && dev[d - 1] >= '0' && dev[d - 1] <= '9')
		d--;
	if (d == l || (dev[d - 1] == 'p' && strstr(dev, "nvme") == NULL))
		return NULL;
	unsigned num = (unsigned)strtoul(dev + d, NULL, 10);
	for (size_t i = 0; i < c->pt.nparts; i++)
		if (c->pt.parts[i].number == num && c->fs[i].uuid[0])
			return c->fs[i].uuid;
	return NULL;
}

static int check_fstab(struct ctx *c)
{
	if (!c->root || !c->fstab_read)
		return add(c, "fstab-device-names", CVM_CHECK_FAIL,
			   "the root filesystem needs an /etc/fstab that names filesystems by "
			   "UUID= or LABEL=",
			   "cannot read /etc/fstab%s%s", c->fstab_error[0] ? ": " : "",
			   c->fstab_error);
	struct cvm_buf bad = {0}, rem = {0};
	int r = 0;
	size_t nbad = 0;
	for (size_t i = 0; i < c->nfstab && r == 0; i++) {
		const struct mig_fstab_entry *e = &c->fstab[i];
		if (!mig_fstab_is_devname(e->spec))
			continue;
		nbad++;
		const char *u = uuid_for_dev(c, e->spec);
		r = cvm_buf_printf(&bad, "%s%s on %s", bad.len ? ", " : "", e->spec, e->file);
		if (r == 0)
			r = u ? cvm_buf_printf(&rem, "%sreplace %s with UUID=%s", rem.len ? "; " : "",
					       e->spec, u) :
				cvm_buf_printf(&rem, "%sreplace %s with its UUID= (blkid)",
					       rem.len ? "; " : "", e->spec);
	}
	if (r == 0 && nbad)
		r = cvm_buf_printf(&rem, " in /etc/fstab (`cvm migrate mbr2gpt` does this for MBR "
				   "disks); device names change on the target (sda -> nvme/vda)");
	if (r == 0 && c->cmdline_dev[0])
		r = cvm_buf_printf(&rem, "%sset root=UUID= in /etc/default/grub and run update-grub "
				   "(`cvm migrate mbr2gpt` rewrites it for MBR disks)",
				   rem.len ? "; " : "");
	if (r == 0) {
		if (nbad || c->cmdline_dev[0])
			r = add(c, "fstab-device-names", CVM_CHECK_WARN, cvm_buf_cstr(&rem),
				"%zu of %zu fstab entries use kernel device names%s%s%s%s", nbad,
				c->nfstab, nbad ? ": " : "", nbad ? cvm_buf_cstr(&bad) : "",
				c->cmdline_dev[0] ? "; kernel command line: " : "", c->cmdline_dev);
		else
			r = add(c, "fstab-device-names", CVM_CHECK_PASS, NULL,
				"all %zu fstab entries use UUID=, LABEL= or other stable names",
				c->nfstab);
	}
	cvm_buf_free(&bad);
	cvm_buf_free(&rem);
	return r;
}

struct os_min {
	const char *id;
	const char *min;        /* lowest supported VERSION_ID (strverscmp order) */
	const char *upgrade;    /* remediation when older */
};

static const struct os_min os_table[] = {
	{"ubuntu", "20.04", "upgrade to Ubuntu 22.04 LTS or later (`do-release-upgrade`)"},
	{"debian", "12", "upgrade to Debian 12 or later (apt full-upgrade after switching the "
			 "sources to bookworm)"},
	{"rhel", "9", "upgrade to RHEL 9.2 or later (leapp upgrade)"},
	{"rocky", "9", "upgrade to Rocky Linux 9 or later (leapp/ELevate)"},
	{"almalinux", "9", "upgrade to AlmaLinux 9 or later (ELevate)"},
	{"centos", "9", "move to CentOS Stream 9 or RHEL 9"},
	{"sles", "15.5", "upgrade to SLES 15 SP5 or later (SUSEConnect + zypper migration)"},
	{"opensuse-leap", "15.5", "upgrade to openSUSE Leap 15.5 or later"},
	{"fedora", "38", "upgrade to a current Fedora release (dnf system-upgrade)"},
	{"azurelinux", "3.0", "upgrade to Azure Linux 3.0"},
};

static int check_os(struct ctx *c)
{
	struct cvm_assess_facts *f = &c->rep->facts;
	if (!c->root || !c->osrel)
		return add(c, "os-supported", CVM_CHECK_FAIL,
			   "install a supported Linux distribution (Ubuntu 20.04+, Debian 12+, "
			   "RHEL 9+, SLES 15 SP5+) or assess Windows servers from a running copy",
			   "no /etc/os-release on a readable root filesystem");
	osrel_get(c, "ID", f->os_id, sizeof(f->os_id));
	osrel_get(c, "VERSION_ID", f->os_version, sizeof(f->os_version));
	osrel_get(c, "PRETTY_NAME", f->os_pretty, sizeof(f->os_pretty));
	for (size_t i = 0; i < CVM_ARRAY_SIZE(os_table); i++) {
		if (strcmp(os_table[i].id, f->os_id) != 0)
			continue;
		if (!f->os_version[0] || strverscmp(f->os_version, os_table[i].min) < 0)
			return add(c, "os-supported", CVM_CHECK_FAIL, os_table[i].upgrade,
				   "%s (%s %s) is older than the oldest supported %s %s",
				   f->os_pretty, f->os_id, f->os_version[0] ? f->os_version : "?",
				   f->os_id, os_table[i].min);
		return add(c, "os-supported", CVM_CHECK_PASS, NULL, "%s (%s %s)", f->os_pretty,
			   f->os_id, f->os_version);
	}
	return add(c, "os-supported", CVM_CHECK_FAIL,
		   "move the workload to a supported distribution (Ubuntu 20.04+, Debian 12+, "
		   "RHEL 9+, SLES 15 SP5+)",
		   "%s (ID=%s) is not a distribution with confidential-VM guest support",
		   f->os_pretty[0] ? f->os_pretty : "unknown OS", f->os_id[0] ? f->os_id : "?");
}

static const char *kernel_pkg_rem(const struct ctx *c, const char *what)
{
	const char *id = c->rep->facts.os_id;
	if (strcmp(id, "ubuntu") == 0)
		return strcmp(what, "snp") == 0 ?
			"install a kernel with SEV-SNP guest support: `apt-get install "
			"linux-image-azure-fde` (or the HWE kernel: linux-generic-hwe-*), then "
			"update-initramfs -u" :
			"install a kernel with TDX guest support: `apt-get install "
			"linux-image-azure-fde` (6.2 or later)";
	if (strcmp(id, "debian") == 0)
		return strcmp(what, "snp") == 0 ?
			"install a kernel with SEV-SNP guest support (CONFIG_SEV_GUEST): "
			"`apt-get install linux-image-cloud-amd64` from bookworm-backports" :
			"install a kernel with TDX guest support (CONFIG_TDX_GUEST_DRIVER, 6.2+): "
			"`apt-get install -t bookworm-backports linux-image-cloud-amd64`";
	return strcmp(what, "snp") == 0 ?
		"install a kernel built with CONFIG_AMD_MEM_ENCRYPT=y and CONFIG_SEV_GUEST "
		"(5.19 or later)" :
		"install a kernel built with CONFIG_INTEL_TDX_GUEST=y and CONFIG_TDX_GUEST_DRIVER "
		"(6.2 or later)";
}

static int check_kernel(struct ctx *c)
{
	const char *k = c->rep->facts.kernel;
	if (!c->kconfig) {
		int r = add(c, "kernel-sev-snp", CVM_CHECK_FAIL, kernel_pkg_rem(c, "snp"),
			    "no /boot/config-* found: cannot show the kernel supports SEV-SNP");
		return r < 0 ? r : add(c, "kernel-tdx", CVM_CHECK_FAIL, kernel_pkg_rem(c, "tdx"),
				       "no /boot/config-* found: cannot show the kernel supports TDX");
	}
	const char *mem = kconf(c, "AMD_MEM_ENCRYPT"), *sev = kconf(c, "SEV_GUEST");
	const char *tdx = kconf(c, "INTEL_TDX_GUEST"), *tdd = kconf(c, "TDX_GUEST_DRIVER");
	bool snp_ok = strcmp(mem, "y") == 0 && sev[0];
	bool tdx_ok = strcmp(tdx, "y") == 0 && tdd[0];
	/* One TEE is enough to migrate; the other only narrows the choice of VM sizes. */
	enum cvm_check_status miss_snp = tdx_ok ? CVM_CHECK_WARN : CVM_CHECK_FAIL;
	enum cvm_check_status miss_tdx = snp_ok ? CVM_CHECK_WARN : CVM_CHECK_FAIL;
	int r = snp_ok ? add(c, "kernel-sev-snp", CVM_CHECK_PASS, NULL,
			     "kernel %s: CONFIG_AMD_MEM_ENCRYPT=y, CONFIG_SEV_GUEST=%s", k, sev) :
			 add(c, "kernel-sev-snp", miss_snp, kernel_pkg_rem(c, "snp"),
			     "kernel %s: CONFIG_AMD_MEM_ENCRYPT=%s, CONFIG_SEV_GUEST=%s%s", k,
			     mem[0] ? mem : "unset", sev[0] ? sev : "unset",
			     tdx_ok ? " (TDX sizes only)" : "");
	if (r < 0)
		return r;
	return tdx_ok ? add(c, "kernel-tdx", CVM_CHECK_PASS, NULL,
			    "kernel %s: CONFIG_INTEL_TDX_GUEST=y, CONFIG_TDX_GUEST_DRIVER=%s", k, tdd) :
			add(c, "kernel-tdx", miss_tdx, kernel_pkg_rem(c, "tdx"),
			    "kernel %s: CONFIG_INTEL_TDX_GUEST=%s, CONFIG_TDX_GUEST_DRIVER=%s%s", k,
			    tdx[0] ? tdx : "unset", tdd[0] ? tdd : "unset",
			    snp_ok ? " (SEV-SNP sizes only)" : "");
}

/* Whether an (uncompressed) initramfs names the module; compressed archives return false. */
static bool initramfs_has(const uint8_t *buf, size_t len, const char *mod)
{
	size_t ml = strlen(mod);
	for (size_t i = 0; i + ml <= len; i++)
		if (buf[i] == (uint8_t)mod[0] && memcmp(buf + i, mod, ml) == 0)
			return true;
	return false;
}

static int check_initramfs_and_virtio(struct ctx *c)
{
	static const char *const drivers[] = {"VIRTIO_PCI", "VIRTIO_BLK", "SCSI_VIRTIO", "VIRTIO_NET"};
	static const char *const mods[] = {"virtio_pci.ko", "virtio_blk.ko", "virtio_scsi.ko",
					   "virtio_net.ko"};
	int r;
	if (!c->kconfig) {
		r = add(c, "virtio-drivers", CVM_CHECK_FAIL,
			"install a kernel with virtio drivers (see kernel-sev-snp)",
			"no kernel config to check virtio drivers against");
	} else {
		_cleanup_free_ uint8_t *ird = NULL;
		size_t irl = 0;
		struct cvm_err e = {0};
		if (c->initramfs[0])
			mig_extfs_read(c->boot, c->initramfs, MAX_INITRAMFS, &ird, &irl, &e);
		_cleanup_buf_ struct cvm_buf missing = {0};
		bool compressed_unknown = false;
		for (size_t i = 0; i < CVM_ARRAY_SIZE(drivers); i++) {
			const char *v = kconf(c, drivers[i]);
			if (strcmp(v, "y") == 0)
				continue;
			if (strcmp(v, "m") == 0 && ird && initramfs_has(ird, irl, mods[i]))
				continue;
			if (strcmp(v, "m") == 0 && ird && !(irl >= 6 && memcmp(ird, "070701", 6) == 0)) {
				compressed_unknown = true;
				continue;
			}
			if (cvm_buf_printf(&missing, "%sCONFIG_%s=%s", missing.len ? ", " : "",
					   drivers[i], v[0] ? v : "unset") < 0)
				return -ENOMEM;
		}
		if (missing.len)
			r = add(c, "virtio-drivers", CVM_CHECK_FAIL,
				"build the virtio drivers into the initramfs: add virtio_pci "
				"virtio_blk virtio_scsi virtio_net to /etc/initramfs-tools/modules "
				"(dracut: add_drivers+=\" virtio_pci virtio_blk virtio_scsi "
				"virtio_net \") and run update-initramfs -u (dracut -f)",
				"missing from kernel %s and its initramfs: %s", c->rep->facts.kernel,
				cvm_buf_cstr(&missing));
		else if (compressed_unknown)
			r = add(c, "virtio-drivers", CVM_CHECK_WARN,
				"confirm with `lsinitramfs <initramfs> | grep virtio` (or lsinitrd) "
				"on the source",
				"virtio drivers are modules; the compressed initramfs %s was not "
				"inspected", c->initramfs);
		else
			r = add(c, "virtio-drivers", CVM_CHECK_PASS, NULL,
				"virtio pci/blk/scsi/net built in or in the initramfs");
	}
	if (r < 0)
		return r;
	if (c->initramfs[0])
		return add(c, "initramfs", CVM_CHECK_PASS, NULL, "%s%s", c->boot_part ? "(boot partition) " : "",
			   c->initramfs);
	return add(c, "initramfs", CVM_CHECK_FAIL,
		   "generate an initramfs for the kernel (update-initramfs -c -k <version>, or "
		   "dracut -f --kver <version>)",
		   "no initrd.img-%s or initramfs-%s.img next to the kernel config",
		   c->rep->facts.kernel[0] ? c->rep->facts.kernel : "?",
		   c->rep->facts.kernel[0] ? c->rep->facts.kernel : "?");
}

static bool any_exists(struct mig_extfs *fs, const char *const *paths, const char **which)
{
	for (size_t i = 0; fs && paths[i]; i++)
		if (mig_extfs_exists(fs, paths[i])) {
			*which = paths[i];
			return true;
		}
	return false;
}

static int check_secure_boot(struct ctx *c)
{
	static const char *const shim[] = {
		"/usr/lib/shim/shimx64.efi.signed", "/usr/lib/shim/shimx64.efi.signed.latest",
		"/boot/efi/EFI/ubuntu/shimx64.efi", "/boot/efi/EFI/debian/shimx64.efi",
		"/boot/efi/EFI/redhat/shimx64.efi", "/boot/efi/EFI/BOOT/BOOTX64.EFI", NULL};
	static const char *const grub[] = {
		"/usr/lib/grub/x86_64-efi-signed/grubx64.efi.signed", "/usr/lib/grub/x86_64-efi",
		"/boot/efi/EFI/redhat/grubx64.efi", "/boot/efi/EFI/ubuntu/grubx64.efi", NULL};
	const char *s = NULL, *g = NULL;
	bool has_shim = any_exists(c->root, shim, &s), has_grub = any_exists(c->root, grub, &g);
	bool rpm = strcmp(c->rep->facts.os_id, "rhel") == 0 || strcmp(c->rep->facts.os_id, "rocky") == 0 ||
		   strcmp(c->rep->facts.os_id, "almalinux") == 0 ||
		   strcmp(c->rep->facts.os_id, "centos") == 0 || strcmp(c->rep->facts.os_id, "fedora") == 0;
	const char *rem = rpm ? "install the signed UEFI boot chain: `dnf install shim-x64 grub2-efi-x64`, "
				"then grub2-mkconfig -o /boot/efi/EFI/<os>/grub.cfg" :
				"install the signed UEFI boot chain: `apt-get install shim-signed "
				"grub-efi-amd64-signed`, then `grub-install --target=x86_64-efi "
				"--uefi-secure-boot` and update-grub";
	if (!c->root)
		return add(c, "secure-boot-loader", CVM_CHECK_FAIL, rem, "no readable root filesystem");
	if (has_shim && has_grub)
		return add(c, "secure-boot-loader", CVM_CHECK_PASS, NULL, "shim (%s) and grub-efi (%s)",
			   s, g);
	return add(c, "secure-boot-loader", CVM_CHECK_WARN, rem, "%s",
		   has_grub ? "grub-efi present but no signed shim: Secure Boot would refuse it" :
			      "no shim or grub-efi: the image boots only through BIOS grub");
}

static int check_tpm(struct ctx *c)
{
	static const char *const tools[] = {"/usr/bin/tpm2_pcrread", "/usr/bin/tpm2", NULL};
	const char *w = NULL;
	if (any_exists(c->root, tools, &w))
		return add(c, "tpm-tools", CVM_CHECK_PASS, NULL, "TPM2 tooling present (%s)", w);
	return add(c, "tpm-tools", CVM_CHECK_WARN,
		   "install tpm2-tools (apt-get/dnf install tpm2-tools) for vTPM-based guest "
		   "attestation and measured-boot checks",
		   "no tpm2-tools in the image");
}

static int run_checks(struct ctx *c)
{
	int (*const checks[])(struct ctx *) = {check_table, check_ldm, check_size, check_firmware,
					       check_filesystems, check_fstab, check_os, check_kernel,
					       check_initramfs_and_virtio, check_secure_boot, check_tpm};
	for (size_t i = 0; i < CVM_ARRAY_SIZE(checks); i++) {
		int r = checks[i](c);
		if (r < 0)
			return r;
	}
	enum cvm_verdict v = CVM_VERDICT_READY;
	for (size_t i = 0; i < c->rep->n; i++) {
		if (c->rep->findings[i].status == CVM_CHECK_FAIL)
			v = CVM_VERDICT_NOT_READY;
		else if (c->rep->findings[i].status == CVM_CHECK_WARN && v == CVM_VERDICT_READY)
			v = CVM_VERDICT_READY_WITH_REMEDIATION;
	}
	c->rep->verdict = v;
	return 0;
}

int cvm_migrate_assess_image(const char *path, const struct cvm_assess_opts *opts,
			     struct cvm_assess_report *out, struct cvm_err *err)
{
	if (!path || !out)
		return cvm_err_badparam(err, "image: path is required");
	memset(out, 0, sizeof(*out));
	_cleanup_free_ char *raw = NULL;
	int r = to_raw(path, opts, out->facts.format, &raw, err);
	if (r < 0)
		return r;
	struct ctx c = {.image = raw ? raw : path, .opts = opts, .rep = out};
	gather(&c);
	r = run_checks(&c);
	if (c.boot && c.boot != c.root)
		mig_extfs_close(c.boot);
	mig_extfs_close(c.root);
	free(c.osrel);
	free(c.kconfig);
	if (raw)
		unlink(raw);
	if (r < 0) {
		cvm_assess_report_clear(out);
		return cvm_err_nomem(err);
	}
	cvm_log_info("migrate.assess", "image=%s verdict=%s findings=%zu", path,
		     cvm_verdict_name(out->verdict), out->n);
	return 0;
}

int cvm_assess_report_json(const struct cvm_assess_report *r, const char *image, char **json,
			   struct cvm_err *err)
{
	const struct cvm_assess_facts *f = &r->facts;
	json_t *facts = json_pack("{s:s,s:I,s:s,s:s,s:i,s:i,s:s,s:s,s:s,s:s}", "format", f->format,
				  "disk_bytes", (json_int_t)f->disk_bytes, "partition_table",
				  cvm_pt_kind_name(f->table), "firmware", f->firmware, "esp_partition",
				  f->esp_part, "root_partition", f->root_part, "os_id", f->os_id,
				  "os_version", f->os_version, "os_pretty_name", f->os_pretty,
				  "kernel", f->kernel);
	json_t *fa = json_array();
	json_t *root = json_pack("{s:s?,s:s,s:o,s:o}", "image", image, "verdict",
				 cvm_verdict_name(r->verdict), "facts", facts, "findings", fa);
	if (!root)
		return cvm_err_nomem(err);
	for (size_t i = 0; i < r->n; i++) {
		const struct cvm_finding *x = &r->findings[i];
		if (json_array_append_new(fa, json_pack("{s:s,s:s,s:s,s:s}", "check", x->check,
							"status", cvm_check_status_name(x->status),
							"detail", x->detail, "remediation",
							x->remediation)) < 0) {
			json_decref(root);
			return cvm_err_nomem(err);
		}
	}
	*json = json_dumps(root, JSON_INDENT(2) | JSON_PRESERVE_ORDER);
	json_decref(root);
	return *json ? 0 : cvm_err_nomem(err);
}
