/* SPDX-License-Identifier: Apache-2.0 */
/* MBR/GPT parsers and the table reader (EBR chains, backup GPT), fstab parsing; every
 * accepted input has a rejected twin. */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdio.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include "migrate/migrate-internal.h"

/* ---- builders (independent of the code under test except the CRC) ---- */
static void mbr_entry(uint8_t *sec, int i, uint8_t status, uint8_t type, uint32_t start,
		      uint32_t n)
{
	uint8_t *e = sec + 446 + 16 * i;
	e[0] = status;
	e[4] = type;
	mig_put_le32(e + 8, start);
	mig_put_le32(e + 12, n);
	sec[510] = 0x55;
	sec[511] = 0xAA;
}

/* A GPT at LBA 1 with entries at LBA 2 (128 x 128 bytes) for a disk of `sectors`. */
struct gpt_img {
	uint8_t hdr[512];
	uint8_t ents[128 * 128];
};

static void gpt_entry(struct gpt_img *g, int i, uint64_t first, uint64_t last)
{
	uint8_t *e = g->ents + 128 * i;
	memcpy(e, "\x28\x73\x2a\xc1\x1f\xf8\xd2\x11\xba\x4b\x00\xa0\xc9\x3e\xc9\x3b", 16);
	e[16] = (uint8_t)(i + 1);
	mig_put_le64(e + 32, first);
	mig_put_le64(e + 40, last);
	e[56] = 'E';
	e[58] = 'S';
	e[60] = 'P';
}

static void gpt_header(struct gpt_img *g, uint64_t my, uint64_t alt, uint64_t entries_lba,
		       uint64_t sectors)
{
	uint8_t *h = g->hdr;
	memset(h, 0, 512);
	memcpy(h, "EFI PART", 8);
	mig_put_le32(h + 8, 0x00010000u);
	mig_put_le32(h + 12, 92);
	mig_put_le64(h + 24, my);
	mig_put_le64(h + 32, alt);
	mig_put_le64(h + 40, 34);
	mig_put_le64(h + 48, sectors - 34);
	h[56] = 0x42;
	mig_put_le64(h + 72, entries_lba);
	mig_put_le32(h + 80, 128);
	mig_put_le32(h + 84, 128);
	mig_put_le32(h + 88, mig_crc32(0, g->ents, sizeof(g->ents)));
	mig_put_le32(h + 16, mig_crc32(0, h, 92));
}

static void gpt_recrc(struct gpt_img *g)
{
	mig_put_le32(g->hdr + 16, 0);
	mig_put_le32(g->hdr + 16, mig_crc32(0, g->hdr, 92));
}

/* ---- MBR ---- */
static void test_mbr_ok(void **state)
{
	(void)state;
	uint8_t sec[512] = {0};
	mig_put_le32(sec + 440, 0xcafe0001);
	mbr_entry(sec, 0, 0x80, 0x83, 2048, 100);
	mbr_entry(sec, 1, 0x00, 0x82, 4096, 50);
	struct cvm_mbr m;
	struct cvm_err err = {0};
	assert_int_equal(cvm_mbr_parse(sec, sizeof(sec), &m, &err), 0);
	assert_int_equal(m.disk_signature, 0xcafe0001);
	assert_int_equal(m.e[0].type, 0x83);
	assert_int_equal(m.e[0].status, 0x80);
	assert_int_equal(m.e[1].start_lba, 4096);
	assert_int_equal(m.e[2].type, 0);
}

static void test_mbr_bad(void **state)
{
	(void)state;
	uint8_t sec[512] = {0};
	struct cvm_mbr m;
	struct cvm_err err = {0};
	mbr_entry(sec, 0, 0x80, 0x83, 2048, 100);
	assert_int_equal(cvm_mbr_parse(sec, 511, &m, &err), -EINVAL);
	assert_non_null(strstr(err.msg, "need 512 bytes"));
	sec[511] = 0;
	assert_int_equal(cvm_mbr_parse(sec, sizeof(sec), &m, &err), -EBADMSG);
	mbr_entry(sec, 0, 0x81, 0x83, 2048, 100);
	assert_int_equal(cvm_mbr_parse(sec, sizeof(sec), &m, &err), -EINVAL);
	assert_non_null(strstr(err.msg, "status byte"));
	mbr_entry(sec, 0, 0x80, 0x83, 2048, 0);
	assert_int_equal(cvm_mbr_parse(sec, sizeof(sec), &m, &err), -EINVAL);
	assert_non_null(strstr(err.msg, "entry 1"));
	assert_int_equal(cvm_mbr_parse(NULL, 512, &m, &err), -EINVAL);
}

/* ---- GPT header ---- */
static void test_gpt_header_ok(void **state)
{
	(void)state;
	static struct gpt_img g;
	memset(&g, 0, sizeof(g));
	gpt_entry(&g, 0, 2048, 4095);
	gpt_header(&g, 1, 9999, 2, 10000);
	struct cvm_gpt_header h;
	struct cvm_err err = {0};
	assert_int_equal(cvm_gpt_header_parse(g.hdr, 512, 512, &h, &err), 0);
	assert_int_equal(h.my_lba, 1);
	assert_int_equal(h.alternate_lba, 9999);
	assert_int_equal(h.num_entries, 128);
	assert_int_equal(h.entry_size, 128);
	assert_int_equal(h.last_usable, 10000 - 34);
}

static void test_gpt_header_bad(void **state)
{
	(void)state;
	static struct gpt_img g;
	struct cvm_gpt_header h;
	struct cvm_err err = {0};
	memset(&g, 0, sizeof(g));
	gpt_header(&g, 1, 9999, 2, 10000);
	assert_int_equal(cvm_gpt_header_parse(g.hdr, 511, 512, &h, &err), -EINVAL);
	assert_int_equal(cvm_gpt_header_parse(g.hdr, 512, 1024, &h, &err), -EINVAL);
	g.hdr[30] ^= 1; /* payload changed, CRC not */
	assert_int_equal(cvm_gpt_header_parse(g.hdr, 512, 512, &h, &err), -EBADMSG);
	assert_non_null(strstr(err.msg, "CRC32"));
	gpt_header(&g, 1, 9999, 2, 10000);
	g.hdr[0] = 'X';
	assert_int_equal(cvm_gpt_header_parse(g.hdr, 512, 512, &h, &err), -EBADMSG);
	gpt_header(&g, 1, 9999, 2, 10000);
	mig_put_le32(g.hdr + 12, 91);
	gpt_recrc(&g);
	assert_int_equal(cvm_gpt_header_parse(g.hdr, 512, 512, &h, &err), -EINVAL);
	assert_non_null(strstr(err.msg, "header size"));
	gpt_header(&g, 1, 9999, 2, 10000);
	mig_put_le32(g.hdr + 12, 513);
	assert_int_equal(cvm_gpt_header_parse(g.hdr, 512, 512, &h, &err), -EINVAL);
	gpt_header(&g, 1, 9999, 2, 10000);
	mig_put_le32(g.hdr + 84, 200);
	gpt_recrc(&g);
	assert_int_equal(cvm_gpt_header_parse(g.hdr, 512, 512, &h, &err), -EINVAL);
	assert_non_null(strstr(err.msg, "entry size"));
	gpt_header(&g, 1, 9999, 2, 10000);
	mig_put_le32(g.hdr + 80, CVM_GPT_MAX_ENTRIES + 1);
	gpt_recrc(&g);
	assert_int_equal(cvm_gpt_header_parse(g.hdr, 512, 512, &h, &err), -EINVAL);
	gpt_header(&g, 1, 9999, 2, 10000);
	mig_put_le64(g.hdr + 40, 20000);
	gpt_recrc(&g);
	assert_int_equal(cvm_gpt_header_parse(g.hdr, 512, 512, &h, &err), -EINVAL);
	assert_non_null(strstr(err.msg, "first usable"));
	gpt_header(&g, 1, 9999, 2, 10000);
	mig_put_le32(g.hdr + 8, 0x00020000u);
	gpt_recrc(&g);
	assert_int_equal(cvm_gpt_header_parse(g.hdr, 512, 512, &h, &err), -EINVAL);
	assert_non_null(strstr(err.msg, "revision"));
}

/* ---- GPT entries ---- */
static void test_gpt_entries(void **state)
{
	(void)state;
	static struct gpt_img g;
	struct cvm_gpt_header h;
	struct cvm_part parts[4];
	size_t n = 0;
	struct cvm_err err = {0};
	memset(&g, 0, sizeof(g));
	gpt_entry(&g, 0, 2048, 4095);
	gpt_entry(&g, 4, 4096, 8191);
	gpt_header(&g, 1, 9999, 2, 10000);
	assert_int_equal(cvm_gpt_header_parse(g.hdr, 512, 512, &h, &err), 0);
	assert_int_equal(cvm_gpt_entries_parse(&h, g.ents, sizeof(g.ents), parts, 4, &n, &err), 0);
	assert_int_equal(n, 2);
	assert_int_equal(parts[0].number, 1);
	assert_int_equal(parts[0].nsectors, 2048);
	assert_string_equal(parts[0].name, "ESP");
	assert_int_equal(parts[1].number, 5);
	/* twins: short buffer, CRC, too many for max */
	assert_int_equal(cvm_gpt_entries_parse(&h, g.ents, sizeof(g.ents) - 1, parts, 4, &n, &err),
			 -EINVAL);
	assert_int_equal(cvm_gpt_entries_parse(&h, g.ents, sizeof(g.ents), parts, 1, &n, &err), -E2BIG);
	g.ents[40] ^= 1;
	assert_int_equal(cvm_gpt_entries_parse(&h, g.ents, sizeof(g.ents), parts, 4, &n, &err),
			 -EBADMSG);
}

static void test_gpt_entries_bad_ranges(void **state)
{
	(void)state;
	static struct gpt_img g;
	struct cvm_gpt_header h;
	struct cvm_part parts[4];
	size_t n = 0;
	struct cvm_err err = {0};
	memset(&g, 0, sizeof(g));
	gpt_entry(&g, 0, 2048, 4095);
	gpt_entry(&g, 1, 4000, 5000); /* overlaps entry 1 */
	gpt_header(&g, 1, 9999, 2, 10000);
	assert_int_equal(cvm_gpt_header_parse(g.hdr, 512, 512, &h, &err), 0);
	assert_int_equal(cvm_gpt_entries_parse(&h, g.ents, sizeof(g.ents), parts, 4, &n, &err), -EINVAL);
	assert_non_null(strstr(err.msg, "overlap"));
	memset(&g, 0, sizeof(g));
	gpt_entry(&g, 0, 2048, 9990); /* past last usable */
	gpt_header(&g, 1, 9999, 2, 10000);
	assert_int_equal(cvm_gpt_header_parse(g.hdr, 512, 512, &h, &err), 0);
	assert_int_equal(cvm_gpt_entries_parse(&h, g.ents, sizeof(g.ents), parts, 4, &n, &err), -EINVAL);
	assert_non_null(strstr(err.msg, "outside usable"));
	memset(&g, 0, sizeof(g));
	gpt_entry(&g, 0, 4096, 2048); /* reversed */
	gpt_header(&g, 1, 9999, 2, 10000);
	assert_int_equal(cvm_gpt_header_parse(g.hdr, 512, 512, &h, &err), 0);
	assert_int_equal(cvm_gpt_entries_parse(&h, g.ents, sizeof(g.ents), parts, 4, &n, &err), -EINVAL);
}

/* ---- the reader over a file ---- */
static int memfile(const void *data, size_t len, uint64_t size)
{
	int fd = memfd_create("ptable", MFD_CLOEXEC);
	assert_true(fd >= 0);
	assert_int_equal(ftruncate(fd, (off_t)size), 0);
	assert_int_equal(pwrite(fd, data, len, 0), (ssize_t)len);
	return fd;
}

static void put(int fd, const void *data, size_t len, uint64_t off)
{
	assert_int_equal(pwrite(fd, data, len, (off_t)off), (ssize_t)len);
}

static void test_read_mbr_logical(void **state)
{
	(void)state;
	uint8_t sec[512] = {0}, ebr1[512] = {0}, ebr2[512] = {0};
	mbr_entry(sec, 0, 0x80, 0x83, 2048, 2048);
	mbr_entry(sec, 1, 0x00, 0x05, 8192, 8192); /* extended 8192..16383 */
	mbr_entry(ebr1, 0, 0, 0x83, 2048, 1024);   /* logical 5 at 10240 */
	mbr_entry(ebr1, 1, 0, 0x05, 4096, 4096);   /* next EBR at 12288 */
	mbr_entry(ebr2, 0, 0, 0x82, 2048, 1024);   /* logical 6 at 14336 */
	int fd = memfile(sec, sizeof(sec), 16384ull * 512);
	put(fd, ebr1, 512, 8192ull * 512);
	put(fd, ebr2, 512, 12288ull * 512);
	static struct cvm_ptable t;
	struct cvm_err err = {0};
	assert_int_equal(cvm_ptable_read_fd(fd, &t, &err), 0);
	assert_int_equal(t.kind, CVM_PT_MBR);
	assert_int_equal(t.nparts, 4);
	assert_int_equal(t.parts[2].number, 5);
	assert_int_equal(t.parts[2].start_lba, 10240);
	assert_true(t.parts[2].logical);
	assert_int_equal(t.parts[3].number, 6);
	assert_int_equal(t.parts[3].start_lba, 14336);
	assert_int_equal(t.parts[3].mbr_type, 0x82);
	assert_true(cvm_part_is_extended(&t, &t.parts[1]));
	/* twin: the second EBR links to itself -> refused, not looped */
	mbr_entry(ebr2, 1, 0, 0x05, 4096, 4096);
	put(fd, ebr2, 512, 12288ull * 512);
	assert_int_equal(cvm_ptable_read_fd(fd, &t, &err), -EINVAL);
	assert_non_null(strstr(err.msg, "does not move forward"));
	close(fd);
}

static void test_read_mbr_bad(void **state)
{
	(void)state;
	uint8_t sec[512] = {0};
	static struct cvm_ptable t;
	struct cvm_err err = {0};
	mbr_entry(sec, 0, 0x80, 0x83, 2048, 20000); /* beyond a 16384-sector disk */
	int fd = memfile(sec, sizeof(sec), 16384ull * 512);
	assert_int_equal(cvm_ptable_read_fd(fd, &t, &err), -EINVAL);
	assert_non_null(strstr(err.msg, "beyond the end"));
	close(fd);
	memset(sec, 0, sizeof(sec));
	mbr_entry(sec, 0, 0x80, 0x83, 2048, 4096);
	mbr_entry(sec, 1, 0x00, 0x83, 4000, 100); /* overlaps */
	fd = memfile(sec, sizeof(sec), 16384ull * 512);
	assert_int_equal(cvm_ptable_read_fd(fd, &t, &err), -EINVAL);
	assert_non_null(strstr(err.msg, "overlap"));
	close(fd);
	/* no signature: no table, not an error */
	memset(sec, 0, sizeof(sec));
	fd = memfile(sec, sizeof(sec), 16384ull * 512);
	assert_int_equal(cvm_ptable_read_fd(fd, &t, &err), 0);
	assert_int_equal(t.kind, CVM_PT_NONE);
	close(fd);
}

static int gpt_disk(uint64_t sectors, struct gpt_img *g, bool with_backup)
{
	uint8_t pmbr[512] = {0};
	mbr_entry(pmbr, 0, 0, 0xEE, 1, (uint32_t)(sectors - 1));
	int fd = memfile(pmbr, sizeof(pmbr), sectors * 512);
	gpt_header(g, 1, sectors - 1, 2, sectors);
	put(fd, g->hdr, 512, 512);
	put(fd, g->ents, sizeof(g->ents), 1024);
	if (with_backup) {
		struct gpt_img b = *g;
		gpt_header(&b, sectors - 1, 1, sectors - 33, sectors);
		put(fd, b.ents, sizeof(b.ents), (sectors - 33) * 512);
		put(fd, b.hdr, 512, (sectors - 1) * 512);
	}
	return fd;
}

static void test_read_gpt(void **state)
{
	(void)state;
	static struct gpt_img g;
	static struct cvm_ptable t;
	struct cvm_err err = {0};
	memset(&g, 0, sizeof(g));
	gpt_entry(&g, 0, 2048, 4095);
	gpt_entry(&g, 1, 4096, 8191);
	int fd = gpt_disk(10000, &g, true);
	assert_int_equal(cvm_ptable_read_fd(fd, &t, &err), 0);
	assert_int_equal(t.kind, CVM_PT_GPT);
	assert_int_equal(t.nparts, 2);
	assert_true(t.backup_gpt_ok);
	assert_false(t.hybrid_mbr);
	assert_true(cvm_part_is_esp(&t, &t.parts[0]));
	assert_false(cvm_part_is_ldm(&t, &t.parts[0]));
	/* twin: damage the primary; the error says the backup is valid */
	uint8_t b = 0xff;
	put(fd, &b, 1, 512 + 40);
	assert_int_equal(cvm_ptable_read_fd(fd, &t, &err), -EBADMSG);
	assert_non_null(strstr(err.msg, "backup GPT at LBA 9999 is valid"));
	close(fd);
	/* twin: no backup -> read, but flagged */
	fd = gpt_disk(10000, &g, false);
	assert_int_equal(cvm_ptable_read_fd(fd, &t, &err), 0);
	assert_false(t.backup_gpt_ok);
	close(fd);
}

/* ---- GUIDs ---- */
static void test_guid(void **state)
{
	(void)state;
	uint8_t g[16];
	char s[37];
	struct cvm_err err = {0};
	assert_int_equal(cvm_guid_parse("C12A7328-F81F-11D2-BA4B-00A0C93EC93B", g, &err), 0);
	assert_memory_equal(g, mig_guid_esp(), 16);
	cvm_guid_format(g, s);
	assert_string_equal(s, "C12A7328-F81F-11D2-BA4B-00A0C93EC93B");
	assert_int_equal(cvm_guid_parse("C12A7328F81F-11D2-BA4B-00A0C93EC93B0", g, &err), -EINVAL);
	assert_int_equal(cvm_guid_parse("X12A7328-F81F-11D2-BA4B-00A0C93EC93B", g, &err), -EINVAL);
}

/* ---- fstab ---- */
static void test_fstab(void **state)
{
	(void)state;
	const char *txt = "# comment\n\n  /dev/sda1 / ext4 defaults 0 1\nUUID=abc /home ext4 "
			  "defaults 0 2\n\t/dev/nvme0n1p2\tnone swap sw 0 0";
	struct mig_fstab_entry e[4];
	size_t n = 0;
	struct cvm_err err = {0};
	assert_int_equal(mig_fstab_parse((const uint8_t *)txt, strlen(txt), e, 4, &n, &err), 0);
	assert_int_equal(n, 3);
	assert_string_equal(e[0].spec, "/dev/sda1");
	assert_string_equal(e[1].file, "/home");
	assert_string_equal(e[2].type, "swap");
	assert_true(mig_fstab_is_devname(e[0].spec));
	assert_false(mig_fstab_is_devname(e[1].spec));
	assert_true(mig_fstab_is_devname(e[2].spec));
	assert_int_equal(mig_fstab_parse((const uint8_t *)txt, strlen(txt), e, 2, &n, &err), -E2BIG);
	const char *bad = "/dev/sda1 /\n";
	assert_int_equal(mig_fstab_parse((const uint8_t *)bad, strlen(bad), e, 4, &n, &err), -EINVAL);
	assert_non_null(strstr(err.msg, "fewer than 3"));
}

static void test_names(void **state)
{
	(void)state;
	assert_string_equal(cvm_verdict_name(CVM_VERDICT_READY_WITH_REMEDIATION), "ready-with-remediation");
	assert_string_equal(cvm_verdict_name(CVM_VERDICT_NOT_READY), "not-ready");
	assert_string_equal(cvm_check_status_name(CVM_CHECK_WARN), "warn");
	assert_string_equal(cvm_pt_kind_name(CVM_PT_GPT), "gpt");
	/* CRC32 check value of "123456789" */
	assert_int_equal(mig_crc32(0, (const uint8_t *)"123456789", 9), 0xCBF43926u);
	assert_int_not_equal(mig_crc32(0, (const uint8_t *)"123456780", 9), 0xCBF43926u);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_mbr_ok),
		cmocka_unit_test(test_mbr_bad),
		cmocka_unit_test(test_gpt_header_ok),
		cmocka_unit_test(test_gpt_header_bad),
		cmocka_unit_test(test_gpt_entries),
		cmocka_unit_test(test_gpt_entries_bad_ranges),
		cmocka_unit_test(test_read_mbr_logical),
		cmocka_unit_test(test_read_mbr_bad),
		cmocka_unit_test(test_read_gpt),
		cmocka_unit_test(test_guid),
		cmocka_unit_test(test_fstab),
		cmocka_unit_test(test_names),
	};
	cvm_log_set_level(CVM_LOG_ERROR);
	return cmocka_run_group_tests(tests, NULL, NULL);
}
