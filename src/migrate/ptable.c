/* SPDX-License-Identifier: Apache-2.0 */
/* MBR and GPT parsing: length-checked parsers over byte buffers, and the reader that feeds
 * them from an image (EBR chain, backup GPT). libblkid/libfdisk cross-check in the tests. */
#include "migrate-internal.h"

#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

static const uint8_t GUID_ESP[16] = {0x28, 0x73, 0x2a, 0xc1, 0x1f, 0xf8, 0xd2, 0x11,
				     0xba, 0x4b, 0x00, 0xa0, 0xc9, 0x3e, 0xc9, 0x3b};
static const uint8_t GUID_BIOS_BOOT[16] = {0x48, 0x61, 0x68, 0x21, 0x49, 0x64, 0x6f, 0x6e,
					   0x74, 0x4e, 0x65, 0x65, 0x64, 0x45, 0x46, 0x49};
/* Windows LDM metadata 5808C8AA-7E8F-42E0-85D2-E1E90434CFB3, data AF9B60A0-1431-4F62-BC68-3311714A69AD */
static const uint8_t GUID_LDM_META[16] = {0xaa, 0xc8, 0x08, 0x58, 0x8f, 0x7e, 0xe0, 0x42,
					  0x85, 0xd2, 0xe1, 0xe9, 0x04, 0x34, 0xcf, 0xb3};
static const uint8_t GUID_LDM_DATA[16] = {0xa0, 0x60, 0x9b, 0xaf, 0x31, 0x14, 0x62, 0x4f,
					  0xbc, 0x68, 0x33, 0x11, 0x71, 0x4a, 0x69, 0xad};
static const uint8_t GUID_ZERO[16];

const char *cvm_pt_kind_name(enum cvm_pt_kind k)
{
	switch (k) {
	case CVM_PT_MBR: return "mbr";
	case CVM_PT_GPT: return "gpt";
	default: return "none";
	}
}

uint32_t mig_crc32(uint32_t crc, const uint8_t *p, size_t n)
{
	crc = ~crc;
	for (size_t i = 0; i < n; i++) {
		crc ^= p[i];
		for (int k = 0; k < 8; k++)
			crc = (crc >> 1) ^ (0xEDB88320u & (0u - (crc & 1u)));
	}
	return ~crc;
}

void cvm_guid_format(const uint8_t g[16], char out[37])
{
	snprintf(out, 37, "%02X%02X%02X%02X-%02X%02X-%02X%02X-%02X%02X-%02X%02X%02X%02X%02X%02X",
		 g[3], g[2], g[1], g[0], g[5], g[4], g[7], g[6], g[8], g[9], g[10], g[11], g[12],
		 g[13], g[14], g[15]);
}

int cvm_guid_parse(const char *s, uint8_t out[16], struct cvm_err *err)
{
	/* Byte positions of each hex pair in the text form, in on-disk order. */
	static const uint8_t pos[16] = {6, 4, 2, 0, 11, 9, 16, 14, 19, 21, 24, 26, 28, 30, 32, 34};
	if (!s || strlen(s) != 36 || s[8] != '-' || s[13] != '-' || s[18] != '-' || s[23] != '-')
		return cvm_err_badparam(err, "guid: expected 8-4-4-4-12 hex digits");
	for (size_t i = 0; i < 16; i++) {
		char hx[3] = {s[pos[i]], s[pos[i] + 1], 0};
		uint8_t b;
		if (cvm_hex_decode_fixed(hx, &b, 1, "guid", err) < 0)
			return -EINVAL;
		out[i] = b;
	}
	return 0;
}

int cvm_mbr_parse(const uint8_t *buf, size_t len, struct cvm_mbr *out, struct cvm_err *err)
{
	if (!buf || !out)
		return cvm_err_badparam(err, "mbr: buffer and output are required");
	if (len < CVM_MBR_SECTOR)
		return cvm_err_badparam(err, "mbr: need 512 bytes, got %zu", len);
	if (buf[510] != 0x55 || buf[511] != 0xAA)
		return cvm_err_set(err, EBADMSG, "BadParameter", "mbr: no 0x55AA boot signature");
	memset(out, 0, sizeof(*out));
	out->disk_signature = mig_le32(buf + 440);
	for (int i = 0; i < 4; i++) {
		const uint8_t *e = buf + 446 + 16 * i;
		struct cvm_mbr_entry *me = &out->e[i];
		me->status = e[0];
		me->type = e[4];
		me->start_lba = mig_le32(e + 8);
		me->nsectors = mig_le32(e + 12);
		if (me->status != 0 && me->status != 0x80)
			return cvm_err_badparam(err, "mbr: entry %d: status byte 0x%02x is neither "
						"0x00 nor 0x80", i + 1, me->status);
		if (me->type == 0)
			continue;
		if (me->nsectors == 0 || me->start_lba == 0)
			return cvm_err_badparam(err, "mbr: entry %d: type 0x%02x with start %u and "
						"length %u (both must be non-zero)", i + 1, me->type,
						me->start_lba, me->nsectors);
	}
	return 0;
}

int cvm_gpt_header_parse(const uint8_t *buf, size_t len, uint32_t sector_size,
			 struct cvm_gpt_header *out, struct cvm_err *err)
{
	if (!buf || !out)
		return cvm_err_badparam(err, "gpt header: buffer and output are required");
	if (sector_size != 512 && sector_size != 4096)
		return cvm_err_badparam(err, "gpt header: sector size %u (expected 512 or 4096)",
					sector_size);
	if (len < sector_size)
		return cvm_err_badparam(err, "gpt header: need %u bytes, got %zu", sector_size, len);
	if (memcmp(buf, "EFI PART", 8) != 0)
		return cvm_err_set(err, EBADMSG, "BadParameter", "gpt header: no 'EFI PART' signature");
	if (mig_le32(buf + 8) != 0x00010000u)
		return cvm_err_badparam(err, "gpt header: revision 0x%08x (expected 0x00010000)",
					mig_le32(buf + 8));
	uint32_t hsize = mig_le32(buf + 12);
	if (hsize < CVM_GPT_HEADER_MIN || hsize > sector_size)
		return cvm_err_badparam(err, "gpt header: header size %u (expected 92..%u)", hsize,
					sector_size);
	uint8_t tmp[4096];
	memcpy(tmp, buf, hsize);
	memset(tmp + 16, 0, 4);
	uint32_t crc = mig_le32(buf + 16);
	if (mig_crc32(0, tmp, hsize) != crc)
		return cvm_err_set(err, EBADMSG, "BadParameter", "gpt header: CRC32 mismatch");
	memset(out, 0, sizeof(*out));
	out->header_size = hsize;
	out->my_lba = mig_le64(buf + 24);
	out->alternate_lba = mig_le64(buf + 32);
	out->first_usable = mig_le64(buf + 40);
	out->last_usable = mig_le64(buf + 48);
	memcpy(out->disk_guid, buf + 56, 16);
	out->entries_lba = mig_le64(buf + 72);
	out->num_entries = mig_le32(buf + 80);
	out->entry_size = mig_le32(buf + 84);
	out->entries_crc = mig_le32(buf + 88);
	if (out->entry_size < 128 || out->entry_size > 4096 || out->entry_size % 128)
		return cvm_err_badparam(err, "gpt header: entry size %u (expected a multiple of "
					"128 up to 4096)", out->entry_size);
	if (out->num_entries == 0 || out->num_entries > CVM_GPT_MAX_ENTRIES)
		return cvm_err_badparam(err, "gpt header: %u entries (expected 1..%u)",
					out->num_entries, CVM_GPT_MAX_ENTRIES);
	if (out->first_usable > out->last_usable)
		return cvm_err_badparam(err, "gpt header: first usable LBA %llu after last usable "
					"%llu", (unsigned long long)out->first_usable,
					(unsigned long long)out->last_usable);
	if (out->my_lba == 0 || out->entries_lba == 0)
		return cvm_err_badparam(err, "gpt header: header or entries at LBA 0");
	return 0;
}

/* UTF-16LE (BMP + surrogate pairs) to UTF-8, stopping at NUL; invalid units become '?'. */
static void utf16le_name(const uint8_t *p, size_t units, char *out, size_t outlen)
{
	size_t o = 0;
	for (size_t i = 0; i < units; i++) {
		uint32_t c = (uint32_t)p[2 * i] | (uint32_t)p[2 * i + 1] << 8;
		if (c == 0)
			break;
		if (c >= 0xD800 && c <= 0xDBFF && i + 1 < units) {
			uint32_t lo = (uint32_t)p[2 * i + 2] | (uint32_t)p[2 * i + 3] << 8;
			if (lo >= 0xDC00 && lo <= 0xDFFF) {
				c = 0x10000 + ((c - 0xD800) << 10) + (lo - 0xDC00);
				i++;
			} else {
				c = '?';
			}
		} else if (c >= 0xD800 && c <= 0xDFFF) {
			c = '?';
		}
		uint8_t u[4];
		size_t n;
		if (c < 0x80) {
			u[0] = (uint8_t)c;
			n = 1;
		} else if (c < 0x800) {
			u[0] = (uint8_t)(0xC0 | c >> 6);
			u[1] = (uint8_t)(0x80 | (c & 0x3F));
			n = 2;
		} else if (c < 0x10000) {
			u[0] = (uint8_t)(0xE0 | c >> 12);
			u[1] = (uint8_t)(0x80 | ((c >> 6) & 0x3F));
			u[2] = (uint8_t)(0x80 | (c & 0x3F));
			n = 3;
		} else {
			u[0] = (uint8_t)(0xF0 | c >> 18);
			u[1] = (uint8_t)(0x80 | ((c >> 12) & 0x3F));
			u[2] = (uint8_t)(0x80 | ((c >> 6) & 0x3F));
			u[3] = (uint8_t)(0x80 | (c & 0x3F));
			n = 4;
		}
		if (o + n + 1 > outlen)
			break;
		memcpy(out + o, u, n);
		o += n;
	}
	out[o] = 0;
}

int cvm_gpt_entries_parse(const struct cvm_gpt_header *h, const uint8_t *buf, size_t len,
			  struct cvm_part *parts, size_t max, size_t *n, struct cvm_err *err)
{
	if (!h || !buf || !n || (!parts && max))
		return cvm_err_badparam(err, "gpt entries: header, buffer and output are required");
	if (h->num_entries == 0 || h->num_entries > CVM_GPT_MAX_ENTRIES || h->entry_size < 128 ||
	    h->entry_size > 4096 || h->entry_size % 128)
		return cvm_err_badparam(err, "gpt entries: header not validated");
	size_t need = (size_t)h->num_entries * h->entry_size;
	if (len < need)
		return cvm_err_badparam(err, "gpt entries: need %zu bytes, got %zu", need, len);
	if (mig_crc32(0, buf, need) != h->entries_crc)
		return cvm_err_set(err, EBADMSG, "BadParameter", "gpt entries: CRC32 mismatch");
	size_t count = 0;
	for (uint32_t i = 0; i < h->num_entries; i++) {
		const uint8_t *e = buf + (size_t)i * h->entry_size;
		if (memcmp(e, GUID_ZERO, 16) == 0)
			continue;
		uint64_t first = mig_le64(e + 32), last = mig_le64(e + 40);
		if (first > last || first < h->first_usable || last > h->last_usable)
			return cvm_err_badparam(err, "gpt entries: entry %u spans LBA %llu..%llu "
						"outside usable %llu..%llu", i + 1,
						(unsigned long long)first, (unsigned long long)last,
						(unsigned long long)h->first_usable,
						(unsigned long long)h->last_usable);
		if (count >= max)
			return cvm_err_set(err, E2BIG, "BadParameter",
					   "gpt entries: more than %zu partitions in use", max);
		for (size_t k = 0; k < count; k++) {
			uint64_t ks = parts[k].start_lba, ke = ks + parts[k].nsectors - 1;
			if (first <= ke && ks <= last)
				return cvm_err_badparam(err, "gpt entries: entries %u and %u overlap",
							parts[k].number, i + 1);
		}
		struct cvm_part *p = &parts[count++];
		memset(p, 0, sizeof(*p));
		p->number = i + 1;
		p->start_lba = first;
		p->nsectors = last - first + 1;
		memcpy(p->type_guid, e, 16);
		memcpy(p->part_guid, e + 16, 16);
		p->attrs = mig_le64(e + 48);
		utf16le_name(e + 56, 36, p->name, sizeof(p->name));
	}
	*n = count;
	return 0;
}

bool cvm_part_is_esp(const struct cvm_ptable *t, const struct cvm_part *p)
{
	return t->kind == CVM_PT_GPT ? memcmp(p->type_guid, GUID_ESP, 16) == 0 : p->mbr_type == 0xEF;
}

bool cvm_part_is_bios_boot(const struct cvm_ptable *t, const struct cvm_part *p)
{
	return t->kind == CVM_PT_GPT && memcmp(p->type_guid, GUID_BIOS_BOOT, 16) == 0;
}

bool cvm_part_is_ldm(const struct cvm_ptable *t, const struct cvm_part *p)
{
	if (t->kind == CVM_PT_GPT)
		return memcmp(p->type_guid, GUID_LDM_META, 16) == 0 ||
		       memcmp(p->type_guid, GUID_LDM_DATA, 16) == 0;
	return p->mbr_type == 0x42;
}

bool cvm_part_is_extended(const struct cvm_ptable *t, const struct cvm_part *p)
{
	return t->kind == CVM_PT_MBR &&
	       (p->mbr_type == 0x05 || p->mbr_type == 0x0F || p->mbr_type == 0x85);
}

const uint8_t *mig_guid_esp(void) { return GUID_ESP; }

int mig_pread_full(int fd, void *buf, size_t len, uint64_t off, struct cvm_err *err)
{
	size_t done = 0;
	while (done < len) {
		ssize_t r = pread(fd, (uint8_t *)buf + done, len - done, (off_t)(off + done));
		if (r < 0 && errno == EINTR)
			continue;
		if (r < 0)
			return cvm_err_set(err, errno, "InternalError", "read at %llu: %s",
					   (unsigned long long)(off + done), strerror(errno));
		if (r == 0)
			return cvm_err_set(err, EIO, "InternalError", "read at %llu: unexpected end "
					   "of image", (unsigned long long)(off + done));
		done += (size_t)r;
	}
	return 0;
}

int mig_pwrite_full(int fd, const void *buf, size_t len, uint64_t off, struct cvm_err *err)
{
	size_t done = 0;
	while (done < len) {
		ssize_t r = pwrite(fd, (const uint8_t *)buf + done, len - done, (off_t)(off + done));
		if (r < 0 && errno == EINTR)
			continue;
		if (r < 0)
			return cvm_err_set(err, errno, "InternalError", "write at %llu: %s",
					   (unsigned long long)(off + done), strerror(errno));
		done += (size_t)r;
	}
	return 0;
}

int mig_fd_size(int fd, uint64_t *size, struct cvm_err *err)
{
	struct stat st;
	if (fstat(fd, &st) < 0)
		return cvm_err_set(err, errno, "InternalError", "stat: %s", strerror(errno));
	if (S_ISREG(st.st_mode)) {
		*size = (uint64_t)st.st_size;
		return 0;
	}
	off_t end = lseek(fd, 0, SEEK_END);
	if (end < 0)
		return cvm_err_set(err, errno, "InternalError", "seek: %s", strerror(errno));
	*size = (uint64_t)end;
	return 0;
}

static int add_part(struct cvm_ptable *t, const struct cvm_part *p, struct cvm_err *err)
{
	if (t->nparts >= CVM_PT_MAX_PARTS)
		return cvm_err_set(err, E2BIG, "BadParameter", "mbr: more than %u partitions",
				   CVM_PT_MAX_PARTS);
	uint64_t disk_sectors = t->disk_bytes / t->sector_size;
	if (p->start_lba + p->nsectors > disk_sectors)
		return cvm_err_badparam(err, "partition %u: sectors %llu..%llu beyond the end of "
					"the disk (%llu sectors)", p->number,
					(unsigned long long)p->start_lba,
					(unsigned long long)(p->start_lba + p->nsectors - 1),
					(unsigned long long)disk_sectors);
	t->parts[t->nparts++] = *p;
	return 0;
}

/* Logical partitions: each EBR's first entry is the partition (relative to that EBR), its
 * second entry links to the next EBR (relative to the extended partition's start). */
static int read_ebr_chain(int fd, struct cvm_ptable *t, uint64_t ext_start, uint64_t ext_len,
			  struct cvm_err *err)
{
	uint64_t ebr = ext_start;
	unsigned number = 5;
	for (unsigned i = 0; i < CVM_MBR_MAX_LOGICAL; i++) {
		uint8_t sec[CVM_MBR_SECTOR];
		struct cvm_mbr m;
		if (mig_pread_full(fd, sec, sizeof(sec), ebr * CVM_MBR_SECTOR, err) < 0 ||
		    cvm_mbr_parse(sec, sizeof(sec), &m, err) < 0)
			return cvm_err_prefix(err, "extended partition: EBR at LBA %llu",
					      (unsigned long long)ebr);
		if (m.e[0].type != 0) {
			struct cvm_part p = {.number = number++, .logical = true,
					     .mbr_type = m.e[0].type,
					     .bootable = m.e[0].status == 0x80,
					     .start_lba = ebr + m.e[0].start_lba,
					     .nsectors = m.e[0].nsectors};
			if (p.start_lba + p.nsectors > ext_start + ext_len)
				return cvm_err_badparam(err, "logical partition %u extends past its "
							"extended partition", p.number);
			int r = add_part(t, &p, err);
			if (r < 0)
				return r;
		}
		if (m.e[1].type == 0)
			return 0;
		uint64_t next = ext_start + m.e[1].start_lba;
		if (next <= ebr || next >= ext_start + ext_len)
			return cvm_err_badparam(err, "extended partition: EBR link at LBA %llu does "
						"not move forward inside the extended partition",
						(unsigned long long)ebr);
		ebr = next;
	}
	return cvm_err_badparam(err, "extended partition: more than %u logical partitions",
				CVM_MBR_MAX_LOGICAL);
}

static int read_gpt_at(int fd, struct cvm_ptable *t, uint32_t ss, uint64_t lba,
		       struct cvm_gpt_header *h, bool fill, struct cvm_err *err)
{
	uint8_t hdr[4096];
	if (lba * ss + ss > t->disk_bytes)
		return cvm_err_badparam(err, "gpt header at LBA %llu is beyond the disk",
					(unsigned long long)lba);
	if (mig_pread_full(fd, hdr, ss, lba * ss, err) < 0 ||
	    cvm_gpt_header_parse(hdr, ss, ss, h, err) < 0)
		return -EBADMSG;
	uint64_t disk_sectors = t->disk_bytes / ss;
	if (h->my_lba != lba)
		return cvm_err_badparam(err, "gpt header at LBA %llu says it is at LBA %llu",
					(unsigned long long)lba, (unsigned long long)h->my_lba);
	if (h->last_usable >= disk_sectors || h->alternate_lba >= disk_sectors)
		return cvm_err_badparam(err, "gpt header: last usable LBA %llu or alternate LBA "
					"%llu beyond the disk (%llu sectors)",
					(unsigned long long)h->last_usable,
					(unsigned long long)h->alternate_lba,
					(unsigned long long)disk_sectors);
	size_t elen = (size_t)h->num_entries * h->entry_size;
	if (h->entries_lba >= disk_sectors || h->entries_lba * ss + elen > t->disk_bytes)
		return cvm_err_badparam(err, "gpt header: entry array beyond the disk");
	_cleanup_free_ uint8_t *ents = malloc(elen);
	if (!ents)
		return cvm_err_nomem(err);
	if (mig_pread_full(fd, ents, elen, h->entries_lba * ss, err) < 0)
		return -EIO;
	size_t n = 0;
	struct cvm_part *parts = fill ? t->parts : NULL;
	_cleanup_free_ struct cvm_part *scratch = NULL;
	if (!fill) {
		scratch = calloc(CVM_PT_MAX_PARTS, sizeof(*scratch));
		if (!scratch)
			return cvm_err_nomem(err);
		parts = scratch;
	}
	int r = cvm_gpt_entries_parse(h, ents, elen, parts, CVM_PT_MAX_PARTS, &n, err);
	if (r < 0)
		return r;
	if (fill)
		t->nparts = n;
	return 0;
}

static int read_gpt(int fd, struct cvm_ptable *t, const struct cvm_mbr *m, struct cvm_err *err)
{
	/* The sector size is not recorded anywhere: try 512, then 4096. */
	static const uint32_t sizes[] = {512, 4096};
	struct cvm_gpt_header h = {0};
	struct cvm_err first = {0};
	int r = -EBADMSG;
	for (size_t i = 0; i < CVM_ARRAY_SIZE(sizes); i++) {
		struct cvm_err e = {0};
		if (t->disk_bytes < 2ull * sizes[i])
			continue;
		t->sector_size = sizes[i];
		r = read_gpt_at(fd, t, sizes[i], 1, &h, true, &e);
		if (r == 0)
			break;
		if (i == 0)
			first = e;
	}
	if (r < 0) {
		*err = first;
		/* Say whether the backup would have saved us: the operator repairs with sgdisk. */
		struct cvm_gpt_header bh;
		struct cvm_err be = {0};
		t->sector_size = 512;
		uint64_t last = t->disk_bytes / 512 - 1;
		if (read_gpt_at(fd, t, 512, last, &bh, false, &be) == 0)
			return cvm_err_prefix(err, "primary GPT invalid (backup GPT at LBA %llu is "
					      "valid: repair with `sgdisk -e` or gdisk's recovery)",
					      (unsigned long long)last);
		return cvm_err_prefix(err, "primary GPT");
	}
	t->kind = CVM_PT_GPT;
	memcpy(t->disk_guid, h.disk_guid, 16);
	t->first_usable = h.first_usable;
	t->last_usable = h.last_usable;
	for (size_t i = 0; i < t->nparts; i++)
		if (t->parts[i].start_lba + t->parts[i].nsectors > t->disk_bytes / t->sector_size)
			return cvm_err_badparam(err, "partition %u beyond the disk",
						t->parts[i].number);
	int others = 0;
	for (int i = 0; i < 4; i++)
		if (m->e[i].type != 0 && m->e[i].type != 0xEE)
			others++;
	t->hybrid_mbr = others > 0;
	struct cvm_gpt_header bh;
	struct cvm_err be = {0};
	t->backup_gpt_ok = read_gpt_at(fd, t, t->sector_size, h.alternate_lba, &bh, false, &be) == 0 &&
			   bh.alternate_lba == h.my_lba && bh.entries_crc == h.entries_crc &&
			   memcmp(bh.disk_guid, h.disk_guid, 16) == 0;
	return 0;
}

int cvm_ptable_read_fd(int fd, struct cvm_ptable *t, struct cvm_err *err)
{
	memset(t, 0, sizeof(*t));
	t->sector_size = 512;
	int r = mig_fd_size(fd, &t->disk_bytes, err);
	if (r < 0)
		return r;
	if (t->disk_bytes < CVM_MBR_SECTOR)
		return 0; /* too small for any table: kind none */
	uint8_t sec[CVM_MBR_SECTOR];
	if ((r = mig_pread_full(fd, sec, sizeof(sec), 0, err)) < 0)
		return r;
	if (sec[510] != 0x55 || sec[511] != 0xAA)
		return 0; /* no table */
	struct cvm_mbr m;
	if ((r = cvm_mbr_parse(sec, sizeof(sec), &m, err)) < 0)
		return r;
	t->mbr_signature = m.disk_signature;
	for (int i = 0; i < 4; i++)
		if (m.e[i].type == 0xEE)
			return read_gpt(fd, t, &m, err);
	t->kind = CVM_PT_MBR;
	bool any = false;
	for (int i = 0; i < 4; i++) {
		const struct cvm_mbr_entry *e = &m.e[i];
		if (e->type == 0)
			continue;
		any = true;
		struct cvm_part p = {.number = (unsigned)i + 1, .mbr_type = e->type,
				     .bootable = e->status == 0x80, .start_lba = e->start_lba,
				     .nsectors = e->nsectors};
		for (size_t k = 0; k < t->nparts; k++) {
			const struct cvm_part *q = &t->parts[k];
			if (p.start_lba < q->start_lba + q->nsectors &&
			    q->start_lba < p.start_lba + p.nsectors)
				return cvm_err_badparam(err, "mbr: entries %u and %u overlap",
							q->number, p.number);
		}
		if ((r = add_part(t, &p, err)) < 0)
			return r;
	}
	/* A 0x55AA sector with no entries is a boot sector or a FAT volume, not a table. */
	if (!any) {
		t->kind = CVM_PT_NONE;
		return 0;
	}
	size_t nprim = t->nparts;
	for (size_t i = 0; i < nprim; i++) {
		const struct cvm_part *p = &t->parts[i];
		if (cvm_part_is_extended(t, p) &&
		    (r = read_ebr_chain(fd, t, p->start_lba, p->nsectors, err)) < 0)
			return r;
	}
	t->first_usable = 1;
	t->last_usable = t->disk_bytes / 512 - 1;
	return 0;
}

int cvm_ptable_read(const char *path, struct cvm_ptable *out, struct cvm_err *err)
{
	if (!path || !out)
		return cvm_err_badparam(err, "image: path is required");
	int fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		return cvm_err_set(err, errno, errno == ENOENT ? "NotFound" : "InternalError",
				   "image %s: %s", path, strerror(errno));
	int r = cvm_ptable_read_fd(fd, out, err);
	close(fd);
	if (r < 0)
		return cvm_err_prefix(err, "%s", path);
	return 0;
}
