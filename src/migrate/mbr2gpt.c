/* SPDX-License-Identifier: Apache-2.0 */
/* Offline MBR -> GPT conversion on a copy: identical partition extents (so filesystem UUIDs and
 * data are untouched), a new FAT32 ESP from free space (or from space appended when allowed),
 * protective MBR + primary + backup GPT, checked by our parser, libfdisk and SHA-256 of every
 * partition, then /etc/fstab rewritten to UUID= through libext2fs. */
#include "migrate-internal.h"

#include <libfdisk/libfdisk.h>
#include <openssl/evp.h>
#include <spawn.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#define SECTOR 512ull
#define GPT_ENTRIES 128u
#define GPT_ENTRY_SIZE 128u
#define GPT_ARRAY_SECTORS (GPT_ENTRIES * GPT_ENTRY_SIZE / SECTOR) /* 32 */
#define ALIGN (2048ull)                                              /* 1 MiB in sectors */
#define ESP_SECTORS (CVM_ESP_SIZE / SECTOR)
#define COPY_CHUNK (4u << 20)

struct type_map {
	uint8_t mbr;
	const char *guid;
};
/* MBR type -> GPT type GUID. Types not listed are refused rather than guessed. */
static const struct type_map types[] = {
	{0x83, "0FC63DAF-8483-4772-8E79-3D69D8477DE4"}, /* Linux filesystem */
	{0x82, "0657FD6D-A4AB-43C4-84E5-0933C84B4F4F"}, /* Linux swap */
	{0x8E, "E6D6D379-F507-44C2-A23C-238F2A3DF928"}, /* Linux LVM */
	{0xFD, "A19D880F-05FC-4D3B-A006-743F0F84911E"}, /* Linux RAID */
	{0xEF, "C12A7328-F81F-11D2-BA4B-00A0C93EC93B"}, /* EFI system */
	{0x07, "EBD0A0A2-B9E5-4433-87C0-68B6B72699C7"}, /* NTFS/exFAT: Microsoft basic data */
	{0x0B, "EBD0A0A2-B9E5-4433-87C0-68B6B72699C7"}, /* FAT32 */
	{0x0C, "EBD0A0A2-B9E5-4433-87C0-68B6B72699C7"}, /* FAT32 LBA */
	{0x0E, "EBD0A0A2-B9E5-4433-87C0-68B6B72699C7"}, /* FAT16 LBA */
	{0x27, "DE94BBA4-06D1-4D40-A16A-BFD50179D6AC"}, /* Windows recovery */
};

void cvm_mbr2gpt_opts_init(struct cvm_mbr2gpt_opts *o)
{
	memset(o, 0, sizeof(*o));
	o->rewrite_fstab = true;
}

static void plan(struct cvm_mbr2gpt_result *res, const char *fmt, ...) CVM_PRINTF(2, 3);
static void plan(struct cvm_mbr2gpt_result *res, const char *fmt, ...)
{
	size_t l = strlen(res->plan);
	if (l + 2 >= sizeof(res->plan))
		return;
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(res->plan + l, sizeof(res->plan) - l - 1, fmt, ap);
	va_end(ap);
	l = strlen(res->plan);
	res->plan[l] = '\n';
	res->plan[l + 1] = 0;
}

static uint64_t align_up(uint64_t v) { return (v + ALIGN - 1) / ALIGN * ALIGN; }

struct layout {
	uint64_t disk_sectors;     /* of the output */
	uint64_t esp_start;
	unsigned esp_number;
	bool grown;
};

/* Where the ESP goes: the first 1 MiB-aligned gap big enough, else (when allowed) appended
 * space; otherwise -ENOSPC with where the space must come from. */
static int plan_layout(const struct cvm_ptable *t, const struct cvm_mbr2gpt_opts *o,
		       struct layout *l, struct cvm_mbr2gpt_result *res, struct cvm_err *err)
{
	uint64_t sectors = t->disk_bytes / SECTOR;
	uint64_t last_end = 0; /* first sector after the last partition */
	/* Sorted starts: n is small (<= 128), so a selection over the list is fine. */
	uint64_t cursor = align_up(2 + GPT_ARRAY_SECTORS);
	uint64_t usable_end = sectors >= 2 + GPT_ARRAY_SECTORS ? sectors - 1 - GPT_ARRAY_SECTORS : 0;
	bool found = false;
	for (;;) {
		const struct cvm_part *next = NULL;
		for (size_t i = 0; i < t->nparts; i++) {
			const struct cvm_part *p = &t->parts[i];
			if (cvm_part_is_extended(t, p))
				continue;
			if (p->start_lba + p->nsectors > last_end)
				last_end = p->start_lba + p->nsectors;
			if (p->start_lba + p->nsectors > cursor && (!next || p->start_lba < next->start_lba))
				next = p;
		}
		uint64_t gap_end = next ? next->start_lba : usable_end;
		if (!found && gap_end > cursor && gap_end - cursor >= ESP_SECTORS) {
			l->esp_start = cursor;
			found = true;
		}
		if (!next)
			break;
		cursor = align_up(next->start_lba + next->nsectors);
	}
	l->disk_sectors = sectors;
	bool tail_short = last_end > usable_end; /* no room for the backup GPT */
	if (found && !tail_short)
		goto number;
	if (!o->grow && tail_short)
		return cvm_err_set(err, ENOSPC, "BadParameter",
				   "the last partition ends at sector %llu, inside the 33 sectors "
				   "the backup GPT needs at the end of the disk: rerun with --grow "
				   "(appends space to the copy) or shrink that partition by 1 MiB",
				   (unsigned long long)last_end);
	if (!o->grow)
		return cvm_err_set(err, ENOSPC, "BadParameter",
				   "no free gap of %llu MiB for the EFI system partition: rerun with "
				   "--grow (appends %llu MiB to the copy; the target disk gets that "
				   "much larger), or shrink the last partition by %llu MiB first "
				   "(resize2fs, then the partition)",
				   (unsigned long long)(CVM_ESP_SIZE >> 20),
				   (unsigned long long)(CVM_ESP_SIZE >> 20) + 1,
				   (unsigned long long)(CVM_ESP_SIZE >> 20) + 1);
	if (!found)
		l->esp_start = align_up(last_end);
	uint64_t end = found ? align_up(last_end) : l->esp_start + ESP_SECTORS;
	/* 1 MiB after the last partition holds the backup GPT and keeps the size MiB-aligned. */
	uint64_t need = align_up(end) + ALIGN;
	if (need > sectors) {
		l->disk_sectors = need;
		l->grown = true;
		plan(res, "grow the disk from %llu to %llu MiB (space for the %s)",
		     (unsigned long long)(sectors * SECTOR >> 20),
		     (unsigned long long)(need * SECTOR >> 20),
		     found ? "backup GPT" : "ESP and the backup GPT");
	}
number:;
	/* ESP number: the first GPT entry no converted partition keeps. */
	bool used[GPT_ENTRIES + 1] = {false};
	for (size_t i = 0; i < t->nparts; i++)
		if (!cvm_part_is_extended(t, &t->parts[i]) && t->parts[i].number <= GPT_ENTRIES)
			used[t->parts[i].number] = true;
	for (unsigned k = 1; k <= GPT_ENTRIES && !l->esp_number; k++)
		if (!used[k])
			l->esp_number = k;
	return 0;
}

static int refuse_unsafe(const struct cvm_ptable *t, struct cvm_err *err)
{
	if (t->kind == CVM_PT_GPT)
		return cvm_err_set(err, ENOTSUP, "BadParameter", "already GPT: nothing to convert");
	if (t->kind != CVM_PT_MBR)
		return cvm_err_set(err, ENOTSUP, "BadParameter", "no MBR partition table to convert");
	for (size_t i = 0; i < t->nparts; i++) {
		const struct cvm_part *p = &t->parts[i];
		if (cvm_part_is_ldm(t, p))
			return cvm_err_set(err, ENOTSUP, "BadParameter",
					   "partition %u is a Windows dynamic disk (LDM): its volumes "
					   "are described in the LDM database, not the partition "
					   "table; convert it to a basic disk on the source first",
					   p->number);
		if (cvm_part_is_extended(t, p))
			continue;
		if (p->number > GPT_ENTRIES)
			return cvm_err_set(err, ENOTSUP, "BadParameter", "partition %u cannot keep its "
					   "number in a %u-entry GPT", p->number, GPT_ENTRIES);
		if (p->start_lba < 2 + GPT_ARRAY_SECTORS)
			return cvm_err_set(err, ENOTSUP, "BadParameter",
					   "partition %u starts at sector %llu, inside the primary GPT "
					   "(sectors 1..33): moving it would change its data offsets",
					   p->number, (unsigned long long)p->start_lba);
		bool known = false;
		for (size_t k = 0; k < CVM_ARRAY_SIZE(types) && !known; k++)
			known = types[k].mbr == p->mbr_type;
		if (!known)
			return cvm_err_set(err, ENOTSUP, "BadParameter",
					   "partition %u has MBR type 0x%02x with no GPT equivalent we "
					   "can vouch for", p->number, p->mbr_type);
	}
	return 0;
}

/* ---- copying and hashing ------------------------------------------------------------------ */
static bool all_zero(const uint8_t *p, size_t n)
{
	for (size_t i = 0; i < n; i++)
		if (p[i])
			return false;
	return true;
}

/* Copy keeping holes: data extents only (SEEK_DATA), zero chunks skipped. */
static int sparse_copy(int in, int out, uint64_t size, struct cvm_err *err)
{
	_cleanup_free_ uint8_t *buf = malloc(COPY_CHUNK);
	if (!buf)
		return cvm_err_nomem(err);
	if (ftruncate(out, (off_t)size) < 0)
		return cvm_err_internal(err, "output: %s", strerror(errno));
	uint64_t off = 0;
	while (off < size) {
		off_t d = lseek(in, (off_t)off, SEEK_DATA);
		if (d < 0 && errno == ENXIO)
			break;
		if (d < 0)
			d = (off_t)off; /* no SEEK_DATA support: copy everything */
		off_t h = lseek(in, d, SEEK_HOLE);
		if (h < 0)
			h = (off_t)size;
		for (uint64_t p = (uint64_t)d; p < (uint64_t)h;) {
			size_t n = (uint64_t)h - p > COPY_CHUNK ? COPY_CHUNK : (size_t)((uint64_t)h - p);
			int r = mig_pread_full(in, buf, n, p, err);
			if (r < 0)
				return r;
			if (!all_zero(buf, n) && (r = mig_pwrite_full(out, buf, n, p, err)) < 0)
				return r;
			p += n;
		}
		off = (uint64_t)h;
	}
	return 0;
}

static int hash_range(int fd, uint64_t off, uint64_t len, uint8_t out[32], struct cvm_err *err)
{
	_cleanup_free_ uint8_t *buf = malloc(COPY_CHUNK);
	EVP_MD_CTX *md = EVP_MD_CTX_new();
	int r = 0;
	if (!buf || !md) {
		r = cvm_err_nomem(err);
		goto out;
	}
	if (!EVP_DigestInit_ex(md, EVP_sha256(), NULL)) {
		r = cvm_err_openssl(err, EIO, "sha256");
		goto out;
	}
	for (uint64_t p = 0; p < len;) {
		size_t n = len - p > COPY_CHUNK ? COPY_CHUNK : (size_t)(len - p);
		if ((r = mig_pread_full(fd, buf, n, off + p, err)) < 0)
			goto out;
		if (!EVP_DigestUpdate(md, buf, n)) {
			r = cvm_err_openssl(err, EIO, "sha256");
			goto out;
		}
		p += n;
	}
	unsigned int ol = 32;
	if (!EVP_DigestFinal_ex(md, out, &ol))
		r = cvm_err_openssl(err, EIO, "sha256");
out:
	EVP_MD_CTX_free(md);
	return r;
}

/* ---- GPT writing -------------------------------------------------------------------------- */
static int random_guid(uint8_t g[16], struct cvm_err *err)
{
	int r = cvm_random(g, 16, err);
	if (r < 0)
		return r;
	g[7] = (uint8_t)((g[7] & 0x0F) | 0x40); /* version 4 (time_hi_and_version is LE) */
	g[8] = (uint8_t)((g[8] & 0x3F) | 0x80);
	return 0;
}

static void put_name(uint8_t *e, const char *name)
{
	for (size_t i = 0; name[i] && i < 36; i++) {
		e[56 + 2 * i] = (uint8_t)name[i];
		e[56 + 2 * i + 1] = 0;
	}
}

static void build_header(uint8_t *h, uint64_t my, uint64_t alt, uint64_t first, uint64_t last,
			 const uint8_t guid[16], uint64_t entries_lba, uint32_t crc)
{
	memset(h, 0, SECTOR);
	memcpy(h, "EFI PART", 8);
	mig_put_le32(h + 8, 0x00010000u);
	mig_put_le32(h + 12, 92);
	mig_put_le64(h + 24, my);
	mig_put_le64(h + 32, alt);
	mig_put_le64(h + 40, first);
	mig_put_le64(h + 48, last);
	memcpy(h + 56, guid, 16);
	mig_put_le64(h + 72, entries_lba);
	mig_put_le32(h + 80, GPT_ENTRIES);
	mig_put_le32(h + 84, GPT_ENTRY_SIZE);
	mig_put_le32(h + 88, crc);
	mig_put_le32(h + 16, mig_crc32(0, h, 92));
}

static int write_gpt(int fd, const struct cvm_ptable *t, const struct layout *l,
		     struct cvm_err *err)
{
	uint8_t ents[GPT_ENTRIES * GPT_ENTRY_SIZE] = {0};
	int r;
	for (size_t i = 0; i < t->nparts; i++) {
		const struct cvm_part *p = &t->parts[i];
		if (cvm_part_is_extended(t, p))
			continue;
		uint8_t *e = ents + (p->number - 1) * GPT_ENTRY_SIZE;
		for (size_t k = 0; k < CVM_ARRAY_SIZE(types); k++)
			if (types[k].mbr == p->mbr_type && (r = cvm_guid_parse(types[k].guid, e, err)) < 0)
				return r;
		if ((r = random_guid(e + 16, err)) < 0)
			return r;
		mig_put_le64(e + 32, p->start_lba);
		mig_put_le64(e + 40, p->start_lba + p->nsectors - 1);
		/* Keep the active flag as "legacy BIOS bootable" (attribute bit 2). */
		mig_put_le64(e + 48, p->bootable ? 1ull << 2 : 0);
		char name[32];
		snprintf(name, sizeof(name), "part%u", p->number);
		put_name(e, name);
	}
	uint8_t *e = ents + (l->esp_number - 1) * GPT_ENTRY_SIZE;
	memcpy(e, mig_guid_esp(), 16);
	if ((r = random_guid(e + 16, err)) < 0)
		return r;
	mig_put_le64(e + 32, l->esp_start);
	mig_put_le64(e + 40, l->esp_start + ESP_SECTORS - 1);
	put_name(e, "EFI System Partition");

	uint64_t last = l->disk_sectors - 1;
	uint64_t first_usable = 2 + GPT_ARRAY_SECTORS, last_usable = last - 1 - GPT_ARRAY_SECTORS;
	uint8_t guid[16];
	if ((r = random_guid(guid, err)) < 0)
		return r;
	uint32_t ecrc = mig_crc32(0, ents, sizeof(ents));
	uint8_t hdr[SECTOR];

	/* Protective MBR: keep the boot code area (bytes 0..439), one 0xEE entry over the disk. */
	uint8_t mbr[SECTOR];
	if ((r = mig_pread_full(fd, mbr, SECTOR, 0, err)) < 0)
		return r;
	memset(mbr + 440, 0, 512 - 440);
	uint8_t *pe = mbr + 446;
	pe[1] = 0x00; pe[2] = 0x02; pe[3] = 0x00;      /* CHS of LBA 1 */
	pe[4] = 0xEE;
	pe[5] = 0xFF; pe[6] = 0xFF; pe[7] = 0xFF;
	mig_put_le32(pe + 8, 1);
	mig_put_le32(pe + 12, last > 0xFFFFFFFFull ? 0xFFFFFFFFu : (uint32_t)last);
	mbr[510] = 0x55;
	mbr[511] = 0xAA;

	/* Backup first, primary last: a crash in between leaves the disk still reading as MBR. */
	build_header(hdr, last, 1, first_usable, last_usable, guid, last - GPT_ARRAY_SECTORS, ecrc);
	if ((r = mig_pwrite_full(fd, ents, sizeof(ents), (last - GPT_ARRAY_SECTORS) * SECTOR, err)) < 0 ||
	    (r = mig_pwrite_full(fd, hdr, SECTOR, last * SECTOR, err)) < 0)
		return r;
	build_header(hdr, 1, last, first_usable, last_usable, guid, 2, ecrc);
	if ((r = mig_pwrite_full(fd, ents, sizeof(ents), 2 * SECTOR, err)) < 0 ||
	    (r = mig_pwrite_full(fd, hdr, SECTOR, SECTOR, err)) < 0 ||
	    (r = mig_pwrite_full(fd, mbr, SECTOR, 0, err)) < 0)
		return r;
	if (fsync(fd) < 0)
		return cvm_err_internal(err, "fsync: %s", strerror(errno));
	return 0;
}

static int run_argv_env(char *const argv[], char *const envp[], struct cvm_err *err)
{
	pid_t pid;
	posix_spawn_file_actions_t fa;
	posix_spawn_file_actions_init(&fa);
	/* The tools' chatter would mix with our output; their exit status is what counts. */
	posix_spawn_file_actions_addopen(&fa, STDOUT_FILENO, "/dev/null", O_WRONLY, 0);
	posix_spawn_file_actions_addopen(&fa, STDERR_FILENO, "/dev/null", O_WRONLY, 0);
	int r = posix_spawnp(&pid, argv[0], &fa, NULL, argv, envp);
	posix_spawn_file_actions_destroy(&fa);
	if (r)
		return cvm_err_set(err, r, "InternalError", "%s: %s", argv[0], strerror(r));
	int st;
	while (waitpid(pid, &st, 0) < 0)
		if (errno != EINTR)
			return cvm_err_internal(err, "waitpid: %s", strerror(errno));
	if (!WIFEXITED(st) || WEXITSTATUS(st) != 0)
		return cvm_err_internal(err, "%s exited with status %d", argv[0],
					WIFEXITED(st) ? WEXITSTATUS(st) : -1);
	return 0;
}

static int run_argv(char *const argv[], struct cvm_err *err)
{
	return run_argv_env(argv, environ, err);
}

static int format_esp(const char *out, const struct layout *l, struct cvm_err *err)
{
	char off[32], blocks[32];
	snprintf(off, sizeof(off), "--offset=%llu", (unsigned long long)l->esp_start);
	snprintf(blocks, sizeof(blocks), "%llu", (unsigned long long)(CVM_ESP_SIZE / 1024));
	/* One-sector clusters: 100 MiB holds 204800 of them, above FAT32's 65525 minimum (with
	 * mkfs.fat's default 4 KiB clusters it would be an invalid FAT32 that tools misread). */
	char *argv[] = {"mkfs.fat", "-F", "32", "-s", "1", "-n", "ESP", off, (char *)out, blocks, NULL};
	int r = run_argv(argv, err);
	return r < 0 ? cvm_err_prefix(err, "formatting the ESP") : 0;
}

/* libfdisk's independent reading of the result. */
static int verify_libfdisk(const char *out, size_t expect_parts, struct cvm_err *err)
{
	struct fdisk_context *cxt = fdisk_new_context();
	struct fdisk_table *tb = NULL;
	int r = 0;
	if (!cxt)
		return cvm_err_nomem(err);
	if (fdisk_assign_device(cxt, out, 1) < 0) {
		r = cvm_err_internal(err, "libfdisk: cannot open %s", out);
		goto done;
	}
	if (!fdisk_is_labeltype(cxt, FDISK_DISKLABEL_GPT)) {
		r = cvm_err_internal(err, "libfdisk: %s has no GPT label", out);
		goto done;
	}
	int v = fdisk_verify_disklabel(cxt);
	if (v != 0) {
		r = cvm_err_internal(err, "libfdisk: GPT verification reports %d problem(s)", v);
		goto done;
	}
	if (fdisk_get_partitions(cxt, &tb) < 0 || fdisk_table_get_nents(tb) != expect_parts)
		r = cvm_err_internal(err, "libfdisk: expected %zu partitions, found %zu",
				     expect_parts, tb ? fdisk_table_get_nents(tb) : 0);
done:
	fdisk_unref_table(tb);
	fdisk_deassign_device(cxt, 1);
	fdisk_unref_context(cxt);
	return r;
}

/* ---- fstab --------------------------------------------------------------------------------- */
/* Partition number an fstab spec refers to on this disk: /dev/sdXN style or the MBR
 * PARTUUID=<signature>-<NN> form (which the conversion invalidates). 0 = not ours. */
static unsigned spec_partnum(const char *spec, uint32_t mbr_sig)
{
	if (mig_fstab_is_devname(spec)) {
		size_t l = strlen(spec), d = l;
		while (d > 0 && spec[d - 1] >= '0' && spec[d - 1] <= '9')
			d--;
		return d < l ? (unsigned)strtoul(spec + d, NULL, 10) : 0;
	}
	char sig[16];
	snprintf(sig, sizeof(sig), "%08x-", mbr_sig);
	if (strncasecmp(spec, "PARTUUID=", 9) == 0 && strncasecmp(spec + 9, sig, 9) == 0 &&
	    strlen(spec) == 20)
		return (unsigned)strtoul(spec + 18, NULL, 16);
	return 0;
}

static int rewrite_fstab(const char *out, const struct cvm_ptable *t, const struct mig_fsinfo *fs,
			 struct cvm_mbr2gpt_result *res, struct cvm_err *err)
{
	for (size_t i = 0; i < t->nparts; i++) {
		const struct cvm_part *p = &t->parts[i];
		if (strcmp(fs[i].type, "ext2") && strcmp(fs[i].type, "ext3") && strcmp(fs[i].type, "ext4"))
			continue;
		struct mig_extfs *x = NULL;
		struct cvm_err e = {0};
		if (mig_extfs_open(out, p->start_lba * SECTOR, true, &x, &e) < 0)
			continue;
		_cleanup_free_ uint8_t *buf = NULL;
		size_t len = 0;
		if (mig_extfs_read(x, "/etc/fstab", 1u << 20, &buf, &len, &e) < 0) {
			mig_extfs_close(x);
			continue;
		}
		struct cvm_buf nb = {0};
		int r = cvm_buf_printf(&nb, "# device names rewritten to UUID= by cvm migrate mbr2gpt\n");
		unsigned changed = 0;
		const char *s = (const char *)buf, *end = s + len;
		while (r == 0 && s < end) {
			const char *eol = memchr(s, '\n', (size_t)(end - s));
			size_t ll = eol ? (size_t)(eol - s) : (size_t)(end - s);
			size_t ws = 0;
			while (ws < ll && (s[ws] == ' ' || s[ws] == '\t'))
				ws++;
			size_t te = ws;
			while (te < ll && s[te] != ' ' && s[te] != '\t')
				te++;
			char spec[256] = "";
			if (te - ws < sizeof(spec) && s[ws] != '#') {
				memcpy(spec, s + ws, te - ws);
				spec[te - ws] = 0;
			}
			unsigned num = spec[0] ? spec_partnum(spec, t->mbr_signature) : 0;
			const char *uuid = NULL;
			for (size_t k = 0; num && k < t->nparts; k++)
				if (t->parts[k].number == num && fs[k].uuid[0])
					uuid = fs[k].uuid;
			if (uuid) {
				r = cvm_buf_printf(&nb, "%.*sUUID=%s%.*s\n", (int)ws, s, uuid,
						   (int)(ll - te), s + te);
				changed++;
				plan(res, "fstab: %s -> UUID=%s", spec, uuid);
			} else {
				r = cvm_buf_printf(&nb, "%.*s\n", (int)ll, s);
			}
			s += ll + 1;
		}
		if (r == 0 && changed)
			r = mig_extfs_rewrite(x, "/etc/fstab", nb.data, nb.len, err);
		cvm_buf_free(&nb);
		mig_extfs_close(x);
		if (r < 0)
			return cvm_err_prefix(err, "partition %u: /etc/fstab", p->number);
		res->fstab_rewritten += changed;
		if (changed)
			res->fstab_part = (int)p->number;
	}
	return 0;
}

/* Kernel command lines name the root (and resume) device too: root=/dev/sda1 in grub.cfg or
 * /etc/default/grub would not boot on a target where the disk is nvme0n1 or vda. Rewrite
 * root= and resume= values that name a partition of this disk to UUID=. */
static int rewrite_cmdline(const uint8_t *in, size_t len, const struct cvm_ptable *t,
			   const struct mig_fsinfo *fs, struct cvm_buf *out, unsigned *changed,
			   struct cvm_mbr2gpt_result *res, const char *file)
{
	static const char *const keys[] = {"root=", "resume="};
	const char *s = (const char *)in;
	size_t i = 0;
	while (i < len) {
		size_t kl = 0;
		bool boundary = i == 0 || s[i - 1] == ' ' || s[i - 1] == '\t' || s[i - 1] == '"' ||
				s[i - 1] == '\'';
		for (size_t k = 0; boundary && k < CVM_ARRAY_SIZE(keys) && !kl; k++)
			if (len - i > strlen(keys[k]) && strncmp(s + i, keys[k], strlen(keys[k])) == 0)
				kl = strlen(keys[k]);
		if (!kl) {
			if (cvm_buf_append(out, s + i, 1) < 0)
				return -ENOMEM;
			i++;
			continue;
		}
		size_t v = i + kl, ve = v;
		while (ve < len && s[ve] != ' ' && s[ve] != '\t' && s[ve] != '\n' && s[ve] != '"' &&
		       s[ve] != '\'')
			ve++;
		char spec[256] = "";
		if (ve - v < sizeof(spec)) {
			memcpy(spec, s + v, ve - v);
			spec[ve - v] = 0;
		}
		unsigned num = spec[0] ? spec_partnum(spec, t->mbr_signature) : 0;
		const char *uuid = NULL;
		for (size_t k = 0; num && k < t->nparts; k++)
			if (t->parts[k].number == num && fs[k].uuid[0])
				uuid = fs[k].uuid;
		int r = uuid ? cvm_buf_printf(out, "%.*sUUID=%s", (int)kl, s + i, uuid) :
			       cvm_buf_append(out, s + i, ve - i);
		if (r < 0)
			return -ENOMEM;
		if (uuid) {
			(*changed)++;
			plan(res, "%s: %.*s%s -> UUID=%s", file, (int)kl, s + i, spec, uuid);
		}
		i = ve;
	}
	return 0;
}

static int rewrite_boot_config(const char *out, const struct cvm_ptable *t,
			       const struct mig_fsinfo *fs, struct cvm_mbr2gpt_result *res,
			       struct cvm_err *err)
{
	/* grub.cfg on the root fs (/boot/grub) or a separate /boot (/grub). */
	static const char *const files[] = {"/boot/grub/grub.cfg", "/grub/grub.cfg",
					    "/etc/default/grub"};
	for (size_t i = 0; i < t->nparts; i++) {
		const struct cvm_part *p = &t->parts[i];
		if (strncmp(fs[i].type, "ext", 3) != 0)
			continue;
		struct mig_extfs *x = NULL;
		struct cvm_err e = {0};
		if (mig_extfs_open(out, p->start_lba * SECTOR, true, &x, &e) < 0)
			continue;
		int r = 0;
		for (size_t f = 0; f < CVM_ARRAY_SIZE(files) && r == 0; f++) {
			_cleanup_free_ uint8_t *buf = NULL;
			size_t len = 0;
			if (mig_extfs_read(x, files[f], 4u << 20, &buf, &len, &e) < 0)
				continue;
			struct cvm_buf nb = {0};
			unsigned changed = 0;
			if (rewrite_cmdline(buf, len, t, fs, &nb, &changed, res, files[f]) < 0)
				r = cvm_err_nomem(err);
			else if (changed)
				r = mig_extfs_rewrite(x, files[f], nb.data, nb.len, err);
			cvm_buf_free(&nb);
			if (r < 0)
				r = cvm_err_prefix(err, "partition %u: %s", p->number, files[f]);
			res->cmdline_rewritten += changed;
		}
		mig_extfs_close(x);
		if (r < 0)
			return r;
	}
	return 0;
}

/* ---- UEFI boot chain from the image's own packages -------------------------------------- */
/* Signed binaries as Debian/Ubuntu's shim-signed and grub-efi-amd64-signed install them. */
static const char *const shim_paths[] = {"/usr/lib/shim/shimx64.efi.signed.latest",
					 "/usr/lib/shim/shimx64.efi.signed", NULL};
static const char *const grub_paths[] = {"/usr/lib/grub/x86_64-efi-signed/grubx64.efi.signed",
					 NULL};
static const char *const mm_paths[] = {"/usr/lib/shim/mmx64.efi.signed", "/usr/lib/shim/mmx64.efi",
				       NULL};
#define MAX_EFI_BINARY (16u << 20)

static int read_first(struct mig_extfs *x, const char *const *paths, uint8_t **buf, size_t *len,
		      const char **which)
{
	for (size_t i = 0; paths[i]; i++) {
		struct cvm_err e = {0};
		if (mig_extfs_read(x, paths[i], MAX_EFI_BINARY, buf, len, &e) == 0) {
			*which = paths[i];
			return 0;
		}
	}
	return -ENOENT;
}

struct esp_ctx {
	const char *image;
	char at[64];          /* "@@<byte offset>" suffix for mtools */
	char dir[64];         /* temporary directory for the files copied in */
	char **envp;
};

static int esp_run(struct esp_ctx *e, const char *tool, const char *a1, const char *a2,
		   struct cvm_err *err)
{
	_cleanup_free_ char *img = cvm_asprintf("%s%s", e->image, e->at);
	if (!img)
		return cvm_err_nomem(err);
	char *argv[] = {(char *)tool, "-i", img, (char *)a1, (char *)a2, NULL};
	int r = run_argv_env(argv, e->envp, err);
	return r < 0 ? cvm_err_prefix(err, "ESP: %s %s", tool, a2 ? a2 : a1) : 0;
}

/* Write buf to a temp file and mcopy it to ::dst on the ESP. */
static int esp_put(struct esp_ctx *e, const char *name, const void *buf, size_t len,
		   const char *dst, struct cvm_err *err)
{
	_cleanup_free_ char *tmp = cvm_path_join(e->dir, name);
	if (!tmp)
		return cvm_err_nomem(err);
	int r = cvm_file_write_atomic(tmp, buf, len, 0600, err);
	if (r == 0)
		r = esp_run(e, "mcopy", tmp, dst, err);
	unlink(tmp);
	return r;
}

/* Install shim (as the removable-media default loader EFI/BOOT/BOOTX64.EFI and as
 * EFI/<os>/shimx64.efi), the signed grub next to both, and the small grub.cfg Ubuntu's
 * grub-install writes: find the filesystem holding /boot/grub by UUID and load its grub.cfg.
 * The binaries come from the image itself, so their signatures are the distribution's own.
 * Returns -ENOENT (nothing written) when the image lacks the signed packages. */
static int install_boot(const char *out, const struct cvm_ptable *t, const struct mig_fsinfo *fs,
			const struct layout *l, struct cvm_mbr2gpt_result *res, struct cvm_err *err)
{
	struct mig_extfs *root = NULL, *boot = NULL;
	const char *root_uuid = NULL, *boot_uuid = NULL;
	const char *prefix = "/boot/grub";
	for (size_t i = 0; i < t->nparts; i++) {
		const struct cvm_part *p = &t->parts[i];
		struct mig_extfs *x = NULL;
		struct cvm_err e = {0};
		if (strncmp(fs[i].type, "ext", 3) != 0 ||
		    mig_extfs_open(out, p->start_lba * SECTOR, false, &x, &e) < 0)
			continue;
		if (!root && mig_extfs_exists(x, "/etc/os-release")) {
			root = x;
			root_uuid = fs[i].uuid;
		} else if (!boot && mig_extfs_exists(x, "/grub/grub.cfg")) {
			boot = x;
			boot_uuid = fs[i].uuid;
		} else {
			mig_extfs_close(x);
		}
	}
	int r = 0;
	uint8_t *shim = NULL, *grub = NULL, *mm = NULL, *osrel = NULL;
	size_t shim_len = 0, grub_len = 0, mm_len = 0, osrel_len = 0;
	const char *shim_from = NULL, *grub_from = NULL, *mm_from = NULL;
	char osid[32] = "";
	if (!root) {
		r = -ENOENT;
		goto out;
	}
	if (read_first(root, shim_paths, &shim, &shim_len, &shim_from) < 0 ||
	    read_first(root, grub_paths, &grub, &grub_len, &grub_from) < 0) {
		r = -ENOENT;
		goto out;
	}
	read_first(root, mm_paths, &mm, &mm_len, &mm_from);
	if (mig_extfs_read(root, "/etc/os-release", 1u << 20, &osrel, &osrel_len, err) == 0) {
		const char *idp = strstr((const char *)osrel, "\nID=");
		idp = idp ? idp + 4 : strncmp((const char *)osrel, "ID=", 3) == 0 ? (const char *)osrel + 3 : NULL;
		size_t n = 0;
		while (idp && idp[n] && idp[n] != '\n' && n + 1 < sizeof(osid))
			n++;
		if (idp)
			memcpy(osid, idp, n);
		osid[n] = 0;
	}
	/* The signed grub image has its prefix built in: /EFI/<vendor> as the distribution named
	 * it; Debian and Ubuntu both use their os-release ID. Anything else is not guessed. */
	if (strcmp(osid, "ubuntu") != 0 && strcmp(osid, "debian") != 0) {
		r = cvm_err_set(err, ENOTSUP, "BadParameter", "bootloader: signed shim/grub found, "
				"but the EFI directory for ID=%s is not known; install it in a chroot",
				osid[0] ? osid : "?");
		goto out;
	}
	const char *uuid = root_uuid;
	if (!mig_extfs_exists(root, "/boot/grub/grub.cfg") && boot) {
		uuid = boot_uuid;
		prefix = "/grub";
	}
	if (!uuid || !uuid[0]) {
		r = cvm_err_set(err, ENOTSUP, "BadParameter", "bootloader: the filesystem holding "
				"/boot/grub has no UUID");
		goto out;
	}
	struct esp_ctx e = {.image = out};
	snprintf(e.at, sizeof(e.at), "@@%llu", (unsigned long long)(l->esp_start * SECTOR));
	const char *tmpd = getenv("TMPDIR");
	snprintf(e.dir, sizeof(e.dir), "%s/cvm-esp-XXXXXX", tmpd && strlen(tmpd) < 40 ? tmpd : "/tmp");
	size_t nenv = 0;
	while (environ[nenv])
		nenv++;
	e.envp = calloc(nenv + 2, sizeof(char *));
	if (!e.envp || !mkdtemp(e.dir)) {
		free(e.envp);
		r = cvm_err_internal(err, "bootloader: temporary directory: %s", strerror(errno));
		goto out;
	}
	memcpy(e.envp, environ, nenv * sizeof(char *));
	e.envp[nenv] = "MTOOLS_SKIP_CHECK=1";
	char vendor[48], cfg[256];
	snprintf(vendor, sizeof(vendor), "::/EFI/%s", osid);
	int n = snprintf(cfg, sizeof(cfg), "search.fs_uuid %s root\nset prefix=($root)'%s'\n"
			 "configfile $prefix/grub.cfg\n", uuid, prefix);
	char dst[96];
	r = esp_run(&e, "mmd", "::/EFI", NULL, err);
	if (r == 0)
		r = esp_run(&e, "mmd", "::/EFI/BOOT", NULL, err);
	if (r == 0)
		r = esp_run(&e, "mmd", vendor, NULL, err);
	if (r == 0)
		r = esp_put(&e, "shim", shim, shim_len, "::/EFI/BOOT/BOOTX64.EFI", err);
	if (r == 0)
		r = esp_put(&e, "grub", grub, grub_len, "::/EFI/BOOT/grubx64.efi", err);
	snprintf(dst, sizeof(dst), "%s/shimx64.efi", vendor);
	if (r == 0)
		r = esp_put(&e, "shim", shim, shim_len, dst, err);
	snprintf(dst, sizeof(dst), "%s/grubx64.efi", vendor);
	if (r == 0)
		r = esp_put(&e, "grub", grub, grub_len, dst, err);
	snprintf(dst, sizeof(dst), "%s/mmx64.efi", vendor);
	if (r == 0 && mm)
		r = esp_put(&e, "mm", mm, mm_len, dst, err);
	snprintf(dst, sizeof(dst), "%s/grub.cfg", vendor);
	if (r == 0)
		r = esp_put(&e, "grub.cfg", cfg, (size_t)n, dst, err);
	if (r == 0)
		r = esp_put(&e, "grub.cfg", cfg, (size_t)n, "::/EFI/BOOT/grub.cfg", err);
	rmdir(e.dir);
	free(e.envp);
	if (r == 0) {
		res->bootloader_installed = true;
		plan(res, "ESP: EFI/BOOT/BOOTX64.EFI and EFI/%s/shimx64.efi from %s, grubx64.efi "
		     "from %s, grub.cfg -> UUID=%s %s", osid, shim_from, grub_from, uuid, prefix);
	}
out:
	free(shim);
	free(grub);
	free(mm);
	free(osrel);
	mig_extfs_close(root);
	mig_extfs_close(boot);
	return r;
}

/* ---- the conversion ------------------------------------------------------------------------ */
static int convert(int in, const char *out, const struct cvm_ptable *t, const struct layout *l,
		   const struct cvm_mbr2gpt_opts *o, const struct mig_fsinfo *fs,
		   struct cvm_mbr2gpt_result *res, struct cvm_err *err)
{
	int ofd = open(out, O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
	if (ofd < 0)
		return cvm_err_set(err, errno, errno == EEXIST ? "Conflict" : "InternalError",
				   "%s: %s", out, strerror(errno));
	int r = sparse_copy(in, ofd, t->disk_bytes, err);
	if (r == 0 && l->grown && ftruncate(ofd, (off_t)(l->disk_sectors * SECTOR)) < 0)
		r = cvm_err_internal(err, "growing %s: %s", out, strerror(errno));
	/* The ESP's range gets a clean start (a stale filesystem signature would confuse blkid). */
	if (r == 0 && fallocate(ofd, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE,
				(off_t)(l->esp_start * SECTOR), (off_t)CVM_ESP_SIZE) < 0) {
		_cleanup_free_ uint8_t *z = calloc(1, 1u << 20);
		for (uint64_t p = 0; r == 0 && p < CVM_ESP_SIZE; p += 1u << 20)
			r = z ? mig_pwrite_full(ofd, z, 1u << 20, l->esp_start * SECTOR + p, err) :
				cvm_err_nomem(err);
	}
	if (r == 0)
		r = write_gpt(ofd, t, l, err);
	if (r < 0) {
		close(ofd);
		return r;
	}
	plan(res, "write protective MBR, primary GPT (LBA 1-33) and backup GPT (last 33 sectors)");
	/* Every partition's bytes, compared before anything inside a filesystem changes. */
	res->checksums_equal = true;
	for (size_t i = 0; i < t->nparts && r == 0; i++) {
		const struct cvm_part *p = &t->parts[i];
		if (cvm_part_is_extended(t, p))
			continue;
		uint8_t a[32], b[32];
		if ((r = hash_range(in, p->start_lba * SECTOR, p->nsectors * SECTOR, a, err)) < 0 ||
		    (r = hash_range(ofd, p->start_lba * SECTOR, p->nsectors * SECTOR, b, err)) < 0)
			break;
		if (memcmp(a, b, 32) != 0) {
			res->checksums_equal = false;
			r = cvm_err_internal(err, "partition %u: data changed during conversion",
					     p->number);
		}
	}
	if (close(ofd) < 0 && r == 0)
		r = cvm_err_internal(err, "%s: %s", out, strerror(errno));
	if (r < 0)
		return r;
	plan(res, "verified: SHA-256 of all %zu partitions equal to the source", t->nparts);
	if ((r = format_esp(out, l, err)) < 0)
		return r;
	plan(res, "format the ESP as FAT32 (label ESP)");
	struct cvm_ptable check;
	if ((r = cvm_ptable_read(out, &check, err)) < 0)
		return cvm_err_prefix(err, "re-reading the converted table");
	size_t nconv = 0;
	for (size_t i = 0; i < t->nparts; i++)
		nconv += !cvm_part_is_extended(t, &t->parts[i]);
	if (check.kind != CVM_PT_GPT || !check.backup_gpt_ok || check.nparts != nconv + 1)
		return cvm_err_internal(err, "re-reading the converted table: expected GPT with "
					"backup and %zu partitions", nconv + 1);
	for (size_t i = 0; i < check.nparts; i++) {
		const struct cvm_part *q = &check.parts[i];
		bool match = q->number == l->esp_number && q->start_lba == l->esp_start;
		for (size_t k = 0; k < t->nparts && !match; k++)
			match = t->parts[k].number == q->number && t->parts[k].start_lba == q->start_lba &&
				t->parts[k].nsectors == q->nsectors;
		if (!match)
			return cvm_err_internal(err, "re-reading the converted table: partition %u "
						"moved", q->number);
	}
	if ((r = verify_libfdisk(out, nconv + 1, err)) < 0)
		return r;
	plan(res, "verified: our GPT parser and libfdisk read the same %zu partitions", nconv + 1);
	if (o->rewrite_fstab && ((r = rewrite_fstab(out, t, fs, res, err)) < 0 ||
				 (r = rewrite_boot_config(out, t, fs, res, err)) < 0))
		return r;
	r = install_boot(out, t, fs, l, res, err);
	if (r == -ENOENT) {
		plan(res, "remaining: the image has no signed shim/grub-efi packages; install "
		     "shim-signed and grub-efi-amd64-signed on the source (or in a chroot of the "
		     "copy) and rerun, or run grub-install --target=x86_64-efi --uefi-secure-boot "
		     "in a chroot");
		r = 0;
	}
	return r;
}

int cvm_mbr2gpt(const char *in, const char *out, const struct cvm_mbr2gpt_opts *opts,
		struct cvm_mbr2gpt_result *res, struct cvm_err *err)
{
	if (!in || !out || !res)
		return cvm_err_badparam(err, "mbr2gpt: --in and --out are required");
	struct cvm_mbr2gpt_opts defaults;
	if (!opts) {
		cvm_mbr2gpt_opts_init(&defaults);
		opts = &defaults;
	}
	memset(res, 0, sizeof(*res));
	struct cvm_ptable *t = calloc(1, sizeof(*t));
	struct mig_fsinfo *fs = calloc(CVM_PT_MAX_PARTS, sizeof(*fs));
	int r = 0, fd = -1;
	if (!t || !fs) {
		r = cvm_err_nomem(err);
		goto done;
	}
	fd = open(in, O_RDONLY | O_CLOEXEC);
	if (fd < 0) {
		r = cvm_err_set(err, errno, errno == ENOENT ? "NotFound" : "InternalError", "%s: %s",
				in, strerror(errno));
		goto done;
	}
	if ((r = cvm_ptable_read_fd(fd, t, err)) < 0 || (r = refuse_unsafe(t, err)) < 0)
		goto done;
	for (size_t i = 0; i < t->nparts; i++) {
		const struct cvm_part *p = &t->parts[i];
		if (cvm_part_is_extended(t, p))
			continue;
		struct cvm_err e = {0};
		mig_probe_fs(in, p->start_lba * SECTOR, p->nsectors * SECTOR, &fs[i], &e);
		plan(res, "partition %u: MBR type 0x%02x -> GPT entry %u, sectors %llu..%llu "
		     "unchanged (%s%s%s)", p->number, p->mbr_type, p->number,
		     (unsigned long long)p->start_lba,
		     (unsigned long long)(p->start_lba + p->nsectors - 1),
		     fs[i].type[0] ? fs[i].type : "no filesystem", fs[i].uuid[0] ? " UUID=" : "",
		     fs[i].uuid);
	}
	struct layout l = {0};
	if ((r = plan_layout(t, opts, &l, res, err)) < 0)
		goto done;
	res->esp_number = l.esp_number;
	res->esp_start_lba = l.esp_start;
	res->esp_nsectors = ESP_SECTORS;
	res->out_bytes = l.disk_sectors * SECTOR;
	plan(res, "ESP: GPT entry %u, sectors %llu..%llu (%llu MiB FAT32)", l.esp_number,
	     (unsigned long long)l.esp_start, (unsigned long long)(l.esp_start + ESP_SECTORS - 1),
	     (unsigned long long)(CVM_ESP_SIZE >> 20));
	if (opts->dry_run)
		goto done;
	r = convert(fd, out, t, &l, opts, fs, res, err);
	if (r < 0) {
		/* A half-converted copy must not be mistaken for a result. */
		struct stat st;
		if (r != -EEXIST && stat(out, &st) == 0)
			unlink(out);
		goto done;
	}
	if (res->bootloader_installed)
		plan(res, "remaining: NVRAM boot entries are not needed (the firmware finds "
		     "EFI/BOOT/BOOTX64.EFI); run update-grub once booted so grub.cfg drops BIOS-only "
		     "entries");
	cvm_log_info("migrate.mbr2gpt", "in=%s out=%s parts=%zu esp=%u fstab=%u", in, out,
		     t->nparts, l.esp_number, res->fstab_rewritten);
done:
	if (fd >= 0)
		close(fd);
	free(t);
	free(fs);
	return r;
}
