/* SPDX-License-Identifier: Apache-2.0 */
/* SEV-SNP launch digest, computed the way the AMD-SP computes it while QEMU launches a guest:
 * every SNP_LAUNCH_UPDATE extends the digest with SHA-384 over a 0x70-byte PAGE_INFO
 * (SEV-SNP ABI spec #56860, "PAGE_INFO"), in the order QEMU issues the updates:
 *   1. the OVMF image as normal pages at 4 GiB - size,
 *   2. OVMF's SEV metadata sections (zero pages, secrets page, CPUID page, the SEV hashes
 *      table page for direct kernel boot),
 *   3. one VMSA page per vCPU (BSP then APs) at GPA 0xFFFFFFFFF000.
 * Layouts and order follow QEMU target/i386/sev.c and the reference calculators
 * virtee/sev-snp-measure (Python), sev-snp-measure-go and virtee/sev src/measurement. */
#include <opencvm/attest.h>

#include <openssl/evp.h>
#include <openssl/sha.h>
#include <stdio.h>
#include <string.h>
#include <strings.h>

#define PAGE_SIZE 4096u
#define FOUR_GIB 0x100000000ull
#define VMSA_GPA 0xFFFFFFFFF000ull
#define BSP_EIP 0xfffffff0u

/* GUIDs in their on-disk (little-endian, EFI) byte order. */
static const uint8_t guid_table_footer[16] = { /* 96b582de-1fb2-45f7-baea-a366c55a082d */
	0xde, 0x82, 0xb5, 0x96, 0xb2, 0x1f, 0xf7, 0x45,
	0xba, 0xea, 0xa3, 0x66, 0xc5, 0x5a, 0x08, 0x2d };
static const uint8_t guid_sev_es_reset[16] = { /* 00f771de-1a7e-4fcb-890e-68c77e2fb44e */
	0xde, 0x71, 0xf7, 0x00, 0x7e, 0x1a, 0xcb, 0x4f,
	0x89, 0x0e, 0x68, 0xc7, 0x7e, 0x2f, 0xb4, 0x4e };
static const uint8_t guid_hash_table_rv[16] = { /* 7255371f-3a3b-4b04-927b-1da6efa8d454 */
	0x1f, 0x37, 0x55, 0x72, 0x3b, 0x3a, 0x04, 0x4b,
	0x92, 0x7b, 0x1d, 0xa6, 0xef, 0xa8, 0xd4, 0x54 };
static const uint8_t guid_sev_metadata[16] = { /* dc886566-984a-4798-a75e-5585a7bf67cc */
	0x66, 0x65, 0x88, 0xdc, 0x4a, 0x98, 0x98, 0x47,
	0xa7, 0x5e, 0x55, 0x85, 0xa7, 0xbf, 0x67, 0xcc };
static const uint8_t guid_hashes_header[16] = { /* 9438d606-4f22-4cc9-b479-a793d411fd21 */
	0x06, 0xd6, 0x38, 0x94, 0x22, 0x4f, 0xc9, 0x4c,
	0xb4, 0x79, 0xa7, 0x93, 0xd4, 0x11, 0xfd, 0x21 };
static const uint8_t guid_hashes_cmdline[16] = { /* 97d02dd8-bd20-4c94-aa78-e7714d36ab2a */
	0xd8, 0x2d, 0xd0, 0x97, 0x20, 0xbd, 0x94, 0x4c,
	0xaa, 0x78, 0xe7, 0x71, 0x4d, 0x36, 0xab, 0x2a };
static const uint8_t guid_hashes_initrd[16] = { /* 44baf731-3a2f-4bd7-9af1-41e29169781d */
	0x31, 0xf7, 0xba, 0x44, 0x2f, 0x3a, 0xd7, 0x4b,
	0x9a, 0xf1, 0x41, 0xe2, 0x91, 0x69, 0x78, 0x1d };
static const uint8_t guid_hashes_kernel[16] = { /* 4de79437-abd2-427f-b835-d5b172d2045b */
	0x37, 0x94, 0xe7, 0x4d, 0xd2, 0xab, 0x7f, 0x42,
	0xb8, 0x35, 0xd5, 0xb1, 0x72, 0xd2, 0x04, 0x5b };

static uint16_t rd16(const uint8_t *p) { return (uint16_t)(p[0] | p[1] << 8); }
static uint32_t rd32(const uint8_t *p)
{
	return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}
static void wr16(uint8_t *p, uint16_t v)
{
	p[0] = (uint8_t)v;
	p[1] = (uint8_t)(v >> 8);
}
static void wr32(uint8_t *p, uint32_t v)
{
	for (int i = 0; i < 4; i++)
		p[i] = (uint8_t)(v >> (8 * i));
}
static void wr64(uint8_t *p, uint64_t v)
{
	for (int i = 0; i < 8; i++)
		p[i] = (uint8_t)(v >> (8 * i));
}

/* ---- launch digest chaining ---------------------------------------------------------- */

void cvm_snp_gctx_init(struct cvm_snp_gctx *g, const uint8_t seed[CVM_SNP_LD_SIZE])
{
	if (seed)
		memcpy(g->ld, seed, CVM_SNP_LD_SIZE);
	else
		memset(g->ld, 0, CVM_SNP_LD_SIZE);
}

void cvm_snp_page_info(const uint8_t digest_cur[CVM_SNP_LD_SIZE],
		       const uint8_t contents[CVM_SNP_LD_SIZE], enum cvm_snp_page_type type,
		       uint64_t gpa, uint8_t out[CVM_SNP_PAGE_INFO_SIZE])
{
	/* 0x00 DIGEST_CUR, 0x30 CONTENTS, 0x60 LENGTH, 0x62 PAGE_TYPE, 0x63 IMI_PAGE,
	 * 0x64 VMPL3/2/1 permissions, 0x67 reserved, 0x68 GPA. A launch never sets IMI or VMPL
	 * permissions, so they stay zero. */
	memset(out, 0, CVM_SNP_PAGE_INFO_SIZE);
	memcpy(out, digest_cur, CVM_SNP_LD_SIZE);
	memcpy(out + 0x30, contents, CVM_SNP_LD_SIZE);
	wr16(out + 0x60, CVM_SNP_PAGE_INFO_SIZE);
	out[0x62] = (uint8_t)type;
	wr64(out + 0x68, gpa);
}

int cvm_snp_gctx_update(struct cvm_snp_gctx *g, enum cvm_snp_page_type type, uint64_t gpa,
			const uint8_t contents[CVM_SNP_LD_SIZE], struct cvm_err *err)
{
	if (type < CVM_SNP_PAGE_NORMAL || type > CVM_SNP_PAGE_CPUID)
		return cvm_err_badparam(err, "snp.measure.page_type: %d is not 1..6", (int)type);
	if (gpa & (PAGE_SIZE - 1))
		return cvm_err_badparam(err, "snp.measure.gpa: 0x%llx is not page aligned",
					(unsigned long long)gpa);
	uint8_t info[CVM_SNP_PAGE_INFO_SIZE];
	cvm_snp_page_info(g->ld, contents, type, gpa, info);
	if (!EVP_Digest(info, sizeof(info), g->ld, NULL, EVP_sha384(), NULL))
		return cvm_err_openssl(err, EIO, "snp.measure: SHA-384");
	return 0;
}

/* Pages past the end of data are hashed as the short tail the reference tools hash; callers
 * that need whole pages check the length first. */
int cvm_snp_gctx_update_normal(struct cvm_snp_gctx *g, uint64_t gpa, const uint8_t *data,
			       size_t len, struct cvm_err *err)
{
	if (len > FOUR_GIB || gpa > UINT64_MAX - len)
		return cvm_err_badparam(err, "snp.measure: %zu bytes at 0x%llx overflow", len,
					(unsigned long long)gpa);
	for (size_t off = 0; off < len; off += PAGE_SIZE) {
		size_t n = len - off < PAGE_SIZE ? len - off : PAGE_SIZE;
		uint8_t h[CVM_SNP_LD_SIZE];
		if (!EVP_Digest(data + off, n, h, NULL, EVP_sha384(), NULL))
			return cvm_err_openssl(err, EIO, "snp.measure: SHA-384");
		int r = cvm_snp_gctx_update(g, CVM_SNP_PAGE_NORMAL, gpa + off, h, err);
		if (r < 0)
			return r;
	}
	return 0;
}

/* Zero, secrets and CPUID pages are measured with a zero CONTENTS field: the firmware
 * fills them, their contents are not the host's to choose. */
static int update_empty(struct cvm_snp_gctx *g, enum cvm_snp_page_type type, uint64_t gpa,
			uint64_t size, struct cvm_err *err)
{
	static const uint8_t zeros[CVM_SNP_LD_SIZE];
	for (uint64_t off = 0; off < size; off += PAGE_SIZE) {
		int r = cvm_snp_gctx_update(g, type, gpa + off, zeros, err);
		if (r < 0)
			return r;
	}
	return 0;
}

int cvm_snp_gctx_update_vmsa(struct cvm_snp_gctx *g, const uint8_t page[CVM_SNP_VMSA_SIZE],
			     struct cvm_err *err)
{
	uint8_t h[CVM_SNP_LD_SIZE];
	if (!EVP_Digest(page, CVM_SNP_VMSA_SIZE, h, NULL, EVP_sha384(), NULL))
		return cvm_err_openssl(err, EIO, "snp.measure: SHA-384");
	return cvm_snp_gctx_update(g, CVM_SNP_PAGE_VMSA, VMSA_GPA, h, err);
}

/* ---- OVMF metadata --------------------------------------------------------------------- */

/* The GUIDed table sits just before the last 32 bytes of the image: its footer entry is
 * [u16 total length][footer GUID] ending at size - 32; every entry is
 * [data][u16 length including the 18-byte header][GUID], walked from the end. */
static int parse_footer_table(const uint8_t *buf, size_t len, struct cvm_ovmf_info *out,
			      const uint8_t **meta, size_t *meta_len, struct cvm_err *err)
{
	const size_t hdr = 18;
	if (len < 32 + hdr)
		return 0;
	size_t foot = len - 32 - hdr;
	if (memcmp(buf + foot + 2, guid_table_footer, 16) != 0)
		return 0;
	size_t total = rd16(buf + foot);
	if (total < hdr || total - hdr > foot)
		return cvm_err_badparam(err, "ovmf.table: length %zu does not fit the image", total);
	const uint8_t *tab = buf + foot - (total - hdr);
	size_t tlen = total - hdr;
	bool seen_reset = false, seen_rv = false, seen_meta = false;
	while (tlen >= hdr) {
		const uint8_t *e = tab + tlen - hdr;
		size_t esz = rd16(e);
		if (esz < hdr || esz > tlen)
			return cvm_err_badparam(err, "ovmf.table: entry length %zu (need %zu..%zu)", esz,
						hdr, tlen);
		const uint8_t *data = tab + tlen - esz;
		size_t dlen = esz - hdr;
		const uint8_t *guid = e + 2;
		if (memcmp(guid, guid_sev_es_reset, 16) == 0) {
			if (seen_reset || dlen < 4)
				return cvm_err_badparam(err, "ovmf.table: SEV-ES reset block entry "
							     "repeated or shorter than 4 bytes");
			seen_reset = true;
			out->has_reset_eip = true;
			out->reset_eip = rd32(data);
		} else if (memcmp(guid, guid_hash_table_rv, 16) == 0) {
			if (seen_rv || dlen < 8)
				return cvm_err_badparam(err, "ovmf.table: SEV hash table entry repeated "
							     "or shorter than 8 bytes");
			seen_rv = true;
			out->has_hashes_table = true;
			out->hashes_table_gpa = rd32(data);
			out->hashes_table_size = rd32(data + 4);
		} else if (memcmp(guid, guid_sev_metadata, 16) == 0) {
			if (seen_meta || dlen < 4)
				return cvm_err_badparam(err, "ovmf.table: SEV metadata entry repeated or "
							     "shorter than 4 bytes");
			seen_meta = true;
			size_t off = rd32(data);
			if (off < 16 || off > len)
				return cvm_err_badparam(err, "ovmf.metadata: offset %zu from the end is "
							     "outside the %zu-byte image", off, len);
			*meta = buf + len - off;
			*meta_len = off;
		}
		tlen -= esz;
	}
	return 0;
}

static int parse_metadata(const uint8_t *m, size_t avail, struct cvm_ovmf_info *out,
			  struct cvm_err *err)
{
	if (avail < 16 || memcmp(m, "ASEV", 4) != 0)
		return cvm_err_badparam(err, "ovmf.metadata: signature is not \"ASEV\"");
	uint32_t mlen = rd32(m + 4), n = rd32(m + 12);
	if (n > CVM_OVMF_MAX_SECTIONS)
		return cvm_err_badparam(err, "ovmf.metadata: %u sections (at most %d)", n,
					CVM_OVMF_MAX_SECTIONS);
	if (mlen > avail || mlen < 16 + 12 * (size_t)n)
		return cvm_err_badparam(err, "ovmf.metadata: length %u does not hold %u sections "
					     "within the image", mlen, n);
	out->has_metadata = true;
	out->metadata_version = rd32(m + 8);
	for (uint32_t i = 0; i < n; i++) {
		const uint8_t *d = m + 16 + 12 * (size_t)i;
		struct cvm_ovmf_section *s = &out->sections[i];
		s->gpa = rd32(d);
		s->size = rd32(d + 4);
		s->type = rd32(d + 8);
		/* Sections below 4 GiB on page boundaries: SNP_LAUNCH_UPDATE takes whole pages. */
		if ((s->gpa & (PAGE_SIZE - 1)) || (uint64_t)s->gpa + s->size > FOUR_GIB)
			return cvm_err_badparam(err, "ovmf.metadata.section[%u]: gpa 0x%x size 0x%x "
						     "is not page aligned below 4 GiB", i, s->gpa,
						s->size);
		switch (s->type) {
		case CVM_OVMF_SECTION_SNP_SEC_MEM:
		case CVM_OVMF_SECTION_SNP_SECRETS:
		case CVM_OVMF_SECTION_CPUID:
		case CVM_OVMF_SECTION_SVSM_CAA:
		case CVM_OVMF_SECTION_SNP_KERNEL_HASHES:
			break;
		default:
			return cvm_err_badparam(err, "ovmf.metadata.section[%u]: unknown type %u", i,
						s->type);
		}
	}
	out->n_sections = n;
	return 0;
}

int cvm_ovmf_parse(const uint8_t *buf, size_t len, struct cvm_ovmf_info *out,
		   struct cvm_err *err)
{
	memset(out, 0, sizeof(*out));
	if (!buf || len == 0 || len > FOUR_GIB)
		return cvm_err_badparam(err, "ovmf: image of %zu bytes (need 1 byte .. 4 GiB)", len);
	out->size = len;
	out->gpa = FOUR_GIB - len;
	const uint8_t *meta = NULL;
	size_t meta_len = 0;
	int r = parse_footer_table(buf, len, out, &meta, &meta_len, err);
	if (r < 0)
		return r;
	if (meta)
		return parse_metadata(meta, meta_len, out, err);
	return 0;
}

bool cvm_ovmf_has_section(const struct cvm_ovmf_info *o, enum cvm_ovmf_section_type type)
{
	for (size_t i = 0; i < o->n_sections; i++)
		if (o->sections[i].type == (uint32_t)type)
			return true;
	return false;
}

/* ---- SEV hashes table (direct kernel boot) --------------------------------------------- */

static int sha256_file(const char *path, uint8_t out[32], struct cvm_err *err)
{
	FILE *f = fopen(path, "rb");
	if (!f)
		return cvm_err_set(err, errno == ENOENT ? ENOENT : EIO, "BadParameter",
				   "%s: cannot open: %s", path, strerror(errno));
	EVP_MD_CTX *ctx = EVP_MD_CTX_new();
	int r = 0;
	if (!ctx || !EVP_DigestInit_ex(ctx, EVP_sha256(), NULL)) {
		r = cvm_err_openssl(err, EIO, "SHA-256");
		goto out;
	}
	uint8_t chunk[65536];
	size_t n;
	while ((n = fread(chunk, 1, sizeof(chunk), f)) > 0) {
		if (!EVP_DigestUpdate(ctx, chunk, n)) {
			r = cvm_err_openssl(err, EIO, "SHA-256");
			goto out;
		}
	}
	if (ferror(f)) {
		r = cvm_err_internal(err, "%s: read error", path);
		goto out;
	}
	if (!EVP_DigestFinal_ex(ctx, out, NULL))
		r = cvm_err_openssl(err, EIO, "SHA-256");
out:
	EVP_MD_CTX_free(ctx);
	fclose(f);
	return r;
}

/* QEMU hashes the command line with its terminating NUL; no -append means "\0". */
static int hash_cmdline(const char *append, uint8_t out[32], struct cvm_err *err)
{
	const char *s = append ? append : "";
	if (!EVP_Digest(s, strlen(s) + 1, out, NULL, EVP_sha256(), NULL))
		return cvm_err_openssl(err, EIO, "SHA-256");
	return 0;
}

int cvm_sev_hashes_compute(const uint8_t *kernel, size_t kernel_len, const uint8_t *initrd,
			   size_t initrd_len, const char *append, struct cvm_sev_hashes *out,
			   struct cvm_err *err)
{
	static const uint8_t empty = 0;
	if ((!kernel && kernel_len) || (!initrd && initrd_len))
		return cvm_err_badparam(err, "sev.hashes: NULL buffer with a length");
	if (!EVP_Digest(kernel ? kernel : &empty, kernel_len, out->kernel, NULL, EVP_sha256(),
			NULL) ||
	    !EVP_Digest(initrd ? initrd : &empty, initrd_len, out->initrd, NULL, EVP_sha256(),
			NULL))
		return cvm_err_openssl(err, EIO, "SHA-256");
	return hash_cmdline(append, out->cmdline, err);
}

int cvm_sev_hashes_from_files(const char *kernel, const char *initrd, const char *append,
			      struct cvm_sev_hashes *out, struct cvm_err *err)
{
	if (!kernel)
		return cvm_err_badparam(err, "sev.hashes: a kernel is required");
	int r = sha256_file(kernel, out->kernel, err);
	if (r < 0)
		return r;
	if (initrd)
		r = sha256_file(initrd, out->initrd, err);
	else if (!EVP_Digest("", 0, out->initrd, NULL, EVP_sha256(), NULL))
		r = cvm_err_openssl(err, EIO, "SHA-256");
	if (r < 0)
		return r;
	return hash_cmdline(append, out->cmdline, err);
}

/* SEV_HASH_TABLE: header GUID, u16 length (168), then cmdline, initrd, kernel entries of
 * GUID, u16 length (50), SHA-256; padded with zeros to 16 bytes (176), like QEMU's
 * PaddedSevHashTable. */
void cvm_sev_hashes_table(const struct cvm_sev_hashes *h,
			  uint8_t out[CVM_SEV_HASHES_TABLE_PADDED])
{
	const uint8_t *guids[3] = { guid_hashes_cmdline, guid_hashes_initrd, guid_hashes_kernel };
	const uint8_t *hashes[3] = { h->cmdline, h->initrd, h->kernel };
	memset(out, 0, CVM_SEV_HASHES_TABLE_PADDED);
	memcpy(out, guid_hashes_header, 16);
	wr16(out + 16, CVM_SEV_HASHES_TABLE_SIZE);
	for (int i = 0; i < 3; i++) {
		uint8_t *e = out + 18 + 50 * i;
		memcpy(e, guids[i], 16);
		wr16(e + 16, 50);
		memcpy(e + 18, hashes[i], 32);
	}
}

/* ---- VMSA ------------------------------------------------------------------------------ */

static const struct {
	const char *name;
	unsigned family, model, stepping;
} vcpu_types[] = {
	/* QEMU's AMD models usable for SEV-SNP, as listed by virtee/sev-snp-measure
	 * vcpu_types.py and virtee/sev src/measurement/vcpu_types.rs. */
	{ "EPYC", 23, 1, 2 },        { "EPYC-v1", 23, 1, 2 },       { "EPYC-v2", 23, 1, 2 },
	{ "EPYC-IBPB", 23, 1, 2 },   { "EPYC-v3", 23, 1, 2 },       { "EPYC-v4", 23, 1, 2 },
	{ "EPYC-Rome", 23, 49, 0 },  { "EPYC-Rome-v1", 23, 49, 0 }, { "EPYC-Rome-v2", 23, 49, 0 },
	{ "EPYC-Rome-v3", 23, 49, 0 }, { "EPYC-Milan", 25, 1, 1 },  { "EPYC-Milan-v1", 25, 1, 1 },
	{ "EPYC-Milan-v2", 25, 1, 1 }, { "EPYC-Genoa", 25, 17, 0 }, { "EPYC-Genoa-v1", 25, 17, 0 },
};

uint32_t cvm_cpuid_sig(unsigned family, unsigned model, unsigned stepping)
{
	/* CPUID Fn0000_0001_EAX (AMD #25481): families above 0xF use the extended field. */
	unsigned fam_lo = family > 0xf ? 0xf : family;
	unsigned fam_hi = family > 0xf ? (family - 0xf) & 0xff : 0;
	return (uint32_t)(fam_hi << 20 | ((model >> 4) & 0xf) << 16 | fam_lo << 8 |
			  (model & 0xf) << 4 | (stepping & 0xf));
}

int cvm_snp_vcpu_sig(const char *type, uint32_t *sig, struct cvm_err *err)
{
	for (size_t i = 0; type && i < CVM_ARRAY_SIZE(vcpu_types); i++) {
		if (strcasecmp(type, vcpu_types[i].name) == 0) {
			*sig = cvm_cpuid_sig(vcpu_types[i].family, vcpu_types[i].model,
					     vcpu_types[i].stepping);
			return 0;
		}
	}
	return cvm_err_badparam(err, "--vcpu-type: '%s' is not a known QEMU AMD model (EPYC, "
				     "EPYC-v1..v4, EPYC-IBPB, EPYC-Rome[-v1..v3], "
				     "EPYC-Milan[-v1,v2], EPYC-Genoa[-v1])",
				type ? type : "");
}

size_t cvm_snp_vcpu_type_count(void) { return CVM_ARRAY_SIZE(vcpu_types); }
const char *cvm_snp_vcpu_type_name(size_t i)
{
	return i < CVM_ARRAY_SIZE(vcpu_types) ? vcpu_types[i].name : NULL;
}

static void put_seg(uint8_t *p, uint16_t sel, uint16_t attrib, uint32_t limit, uint64_t base)
{
	wr16(p, sel);
	wr16(p + 2, attrib);
	wr32(p + 4, limit);
	wr64(p + 8, base);
}

/* The reset state KVM writes into the VMSA at SNP_LAUNCH_UPDATE (struct sev_es_save_area,
 * AMD APM vol. 2 table B-4); field offsets in the comments. */
void cvm_snp_vmsa_page(uint32_t eip, uint64_t sev_features, uint32_t vcpu_sig,
		       enum cvm_snp_vmm vmm, uint8_t page[CVM_SNP_VMSA_SIZE])
{
	uint16_t cs_flags = 0x9b, ss_flags = 0x93, tr_flags = 0x8b, fcw = 0x37f;
	uint32_t mxcsr = 0x1f80;
	uint64_t rdx = vcpu_sig;
	if (vmm == CVM_SNP_VMM_EC2) {
		/* EC2's VMM resets with accessed bits clear, no CPUID signature in RDX and a
		 * zeroed FPU state. */
		cs_flags = eip == BSP_EIP ? 0x9a : 0x9b;
		ss_flags = 0x92;
		tr_flags = 0x83;
		rdx = 0;
		mxcsr = 0;
		fcw = 0;
	} else if (vmm == CVM_SNP_VMM_QEMU_LEGACY) {
		/* Before KVM_SEV_INIT2 KVM did not copy the FPU reset state into the VMSA. */
		mxcsr = 0;
		fcw = 0;
	}
	memset(page, 0, CVM_SNP_VMSA_SIZE);
	put_seg(page + 0x00, 0, 0x93, 0xffff, 0);                       /* es */
	put_seg(page + 0x10, 0xf000, cs_flags, 0xffff, eip & 0xffff0000u); /* cs */
	put_seg(page + 0x20, 0, ss_flags, 0xffff, 0);                   /* ss */
	put_seg(page + 0x30, 0, 0x93, 0xffff, 0);                       /* ds */
	put_seg(page + 0x40, 0, 0x93, 0xffff, 0);                       /* fs */
	put_seg(page + 0x50, 0, 0x93, 0xffff, 0);                       /* gs */
	put_seg(page + 0x60, 0, 0, 0xffff, 0);                          /* gdtr */
	put_seg(page + 0x70, 0, 0x82, 0xffff, 0);                       /* ldtr */
	put_seg(page + 0x80, 0, 0, 0xffff, 0);                          /* idtr */
	put_seg(page + 0x90, 0, tr_flags, 0xffff, 0);                   /* tr */
	wr64(page + 0xd0, 0x1000);            /* efer: KVM sets EFER.SVME */
	wr64(page + 0x148, 0x40);             /* cr4: KVM sets CR4.MCE */
	wr64(page + 0x158, 0x10);             /* cr0 */
	wr64(page + 0x160, 0x400);            /* dr7 */
	wr64(page + 0x168, 0xffff0ff0);       /* dr6 */
	wr64(page + 0x170, 0x2);              /* rflags */
	wr64(page + 0x178, eip & 0xffffu);    /* rip */
	wr64(page + 0x268, 0x7040600070406ull); /* g_pat: power-on PAT */
	wr64(page + 0x310, rdx);              /* rdx: CPUID signature at reset */
	wr64(page + 0x3b0, sev_features);     /* sev_features */
	wr64(page + 0x3e8, 0x1);              /* xcr0 */
	wr32(page + 0x408, mxcsr);            /* mxcsr */
	wr16(page + 0x410, fcw);              /* x87_fcw */
}

/* ---- the whole launch ------------------------------------------------------------------ */

static int measure_sections(struct cvm_snp_gctx *g, const struct cvm_snp_measure_in *in,
			    struct cvm_err *err)
{
	const struct cvm_ovmf_info *o = in->ovmf;
	for (size_t i = 0; i < o->n_sections; i++) {
		const struct cvm_ovmf_section *s = &o->sections[i];
		int r = 0;
		switch (s->type) {
		case CVM_OVMF_SECTION_SNP_SEC_MEM:
		case CVM_OVMF_SECTION_SVSM_CAA:
			r = update_empty(g, CVM_SNP_PAGE_ZERO, s->gpa, s->size, err);
			break;
		case CVM_OVMF_SECTION_SNP_SECRETS:
			r = update_empty(g, CVM_SNP_PAGE_SECRETS, s->gpa, PAGE_SIZE, err);
			break;
		case CVM_OVMF_SECTION_CPUID:
			/* EC2 adds the CPUID page after all other sections. */
			if (in->vmm != CVM_SNP_VMM_EC2)
				r = update_empty(g, CVM_SNP_PAGE_CPUID, s->gpa, PAGE_SIZE, err);
			break;
		case CVM_OVMF_SECTION_SNP_KERNEL_HASHES:
			if (in->hashes) {
				uint32_t off = o->hashes_table_gpa & (PAGE_SIZE - 1);
				if (s->size != PAGE_SIZE ||
				    off + CVM_SEV_HASHES_TABLE_PADDED > PAGE_SIZE)
					return cvm_err_badparam(
						err, "ovmf.metadata: kernel hashes section of 0x%x "
						     "bytes with the table at page offset 0x%x (need one "
						     "page holding the table)", s->size, off);
				uint8_t pg[PAGE_SIZE] = { 0 };
				cvm_sev_hashes_table(in->hashes, pg + off);
				r = cvm_snp_gctx_update_normal(g, s->gpa, pg, sizeof(pg), err);
			} else {
				r = update_empty(g, CVM_SNP_PAGE_ZERO, s->gpa, s->size, err);
			}
			break;
		default:
			return cvm_err_badparam(err, "ovmf.metadata.section[%zu]: unknown type %u", i,
						s->type);
		}
		if (r < 0)
			return r;
	}
	if (in->vmm == CVM_SNP_VMM_EC2) {
		for (size_t i = 0; i < o->n_sections; i++) {
			if (o->sections[i].type != CVM_OVMF_SECTION_CPUID)
				continue;
			int r = update_empty(g, CVM_SNP_PAGE_CPUID, o->sections[i].gpa, PAGE_SIZE,
					     err);
			if (r < 0)
				return r;
		}
	}
	return 0;
}

int cvm_snp_measure(const struct cvm_snp_measure_in *in, uint8_t ld[CVM_SNP_LD_SIZE],
		    struct cvm_err *err)
{
	const struct cvm_ovmf_info *o = in->ovmf;
	if (!o)
		return cvm_err_badparam(err, "snp.measure: parsed OVMF metadata is required");
	if (in->vcpus < 1 || in->vcpus > CVM_SNP_MAX_VCPUS)
		return cvm_err_badparam(err, "--vcpus: %u (need 1..%d)", in->vcpus,
					CVM_SNP_MAX_VCPUS);
	if (in->vmm != CVM_SNP_VMM_QEMU && in->vmm != CVM_SNP_VMM_EC2 &&
	    in->vmm != CVM_SNP_VMM_QEMU_LEGACY)
		return cvm_err_badparam(err, "snp.measure.vmm: unknown VMM type %d", (int)in->vmm);
	if (!(in->guest_features & 1))
		return cvm_err_badparam(err, "--guest-features: 0x%llx lacks bit 0 (SNPActive)",
					(unsigned long long)in->guest_features);
	if (!o->has_reset_eip)
		return cvm_err_badparam(err, "ovmf: no SEV-ES reset block (GUID "
					     "00f771de-1a7e-4fcb-890e-68c77e2fb44e); not an SEV build");
	if (in->hashes && !cvm_ovmf_has_section(o, CVM_OVMF_SECTION_SNP_KERNEL_HASHES))
		return cvm_err_badparam(err, "--kernel: OVMF metadata has no SNP_KERNEL_HASHES "
					     "section; use an AmdSev build (OVMF.amdsev.fd)");
	if (in->hashes && !o->has_hashes_table)
		return cvm_err_badparam(err, "--kernel: OVMF has no SEV hash table entry (GUID "
					     "7255371f-3a3b-4b04-927b-1da6efa8d454)");
	struct cvm_snp_gctx g;
	int r;
	if (in->ovmf_hash) {
		cvm_snp_gctx_init(&g, in->ovmf_hash);
	} else {
		if (!in->ovmf_data || in->ovmf_len != o->size || (in->ovmf_len & (PAGE_SIZE - 1)))
			return cvm_err_badparam(err, "ovmf: image of %zu bytes must be the parsed one "
						     "and a whole number of pages", in->ovmf_len);
		cvm_snp_gctx_init(&g, NULL);
		r = cvm_snp_gctx_update_normal(&g, o->gpa, in->ovmf_data, in->ovmf_len, err);
		if (r < 0)
			return r;
	}
	r = measure_sections(&g, in, err);
	if (r < 0)
		return r;
	uint8_t page[CVM_SNP_VMSA_SIZE];
	cvm_snp_vmsa_page(BSP_EIP, in->guest_features, in->vcpu_sig, in->vmm, page);
	r = cvm_snp_gctx_update_vmsa(&g, page, err);
	if (r < 0)
		return r;
	if (in->vcpus > 1) {
		/* Every AP starts at OVMF's SEV-ES reset vector, so their VMSAs are identical. */
		uint8_t ap_hash[CVM_SNP_LD_SIZE];
		cvm_snp_vmsa_page(o->reset_eip, in->guest_features, in->vcpu_sig, in->vmm, page);
		if (!EVP_Digest(page, sizeof(page), ap_hash, NULL, EVP_sha384(), NULL))
			return cvm_err_openssl(err, EIO, "snp.measure: SHA-384");
		for (uint32_t i = 1; i < in->vcpus; i++) {
			r = cvm_snp_gctx_update(&g, CVM_SNP_PAGE_VMSA, VMSA_GPA, ap_hash, err);
			if (r < 0)
				return r;
		}
	}
	memcpy(ld, g.ld, CVM_SNP_LD_SIZE);
	return 0;
}

int cvm_snp_measure_files(const struct cvm_snp_measure_files *f, uint8_t ld[CVM_SNP_LD_SIZE],
			  struct cvm_ovmf_info *info, struct cvm_err *err)
{
	if (!f->ovmf)
		return cvm_err_badparam(err, "--ovmf: a firmware image is required");
	if (!f->kernel && (f->initrd || f->append))
		return cvm_err_badparam(err, "--initrd/--append: need --kernel (direct kernel boot)");
	uint32_t sig = 0;
	int r = cvm_snp_vcpu_sig(f->vcpu_type, &sig, err);
	if (r < 0)
		return r;
	_cleanup_free_ uint8_t *img = NULL;
	size_t len = 0;
	r = cvm_file_read(f->ovmf, FOUR_GIB, &img, &len, err);
	if (r < 0)
		return cvm_err_prefix(err, "--ovmf");
	struct cvm_ovmf_info local;
	struct cvm_ovmf_info *o = info ? info : &local;
	r = cvm_ovmf_parse(img, len, o, err);
	if (r < 0)
		return cvm_err_prefix(err, "%s", f->ovmf);
	struct cvm_sev_hashes hashes;
	if (f->kernel) {
		r = cvm_sev_hashes_from_files(f->kernel, f->initrd, f->append, &hashes, err);
		if (r < 0)
			return r;
	}
	struct cvm_snp_measure_in in = {
		.ovmf = o,
		.ovmf_data = img,
		.ovmf_len = len,
		.ovmf_hash = f->ovmf_hash,
		.hashes = f->kernel ? &hashes : NULL,
		.vcpus = f->vcpus,
		.vcpu_sig = sig,
		.guest_features = f->guest_features,
		.vmm = f->vmm,
	};
	return cvm_snp_measure(&in, ld, err);
}
