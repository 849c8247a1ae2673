/* SPDX-License-Identifier: Apache-2.0 */
/* SEV-SNP launch digest: published known-answer vectors, the layouts under them, Debian's
 * OVMF, and a measurement pinned in a policy against emulator reports. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>
#include <cmocka.h>

#include <opencvm/attest.h>

#include <openssl/evp.h>

/* Debian 12 package `ovmf` ships no OVMF.amdsev.fd; OVMF_CODE.fd (OvmfPkgX64) carries the SEV
 * metadata and SEV-ES reset block, so it is the image QEMU measures for an SNP guest booting
 * from disk. */
#define DEBIAN_OVMF "/usr/share/OVMF/OVMF_CODE.fd"
#define DEBIAN_OVMF_AMDSEV "/usr/share/OVMF/OVMF.amdsev.fd"

static void unhex(const char *s, uint8_t *out, size_t len)
{
	struct cvm_err err = { 0 };
	assert_int_equal(cvm_hex_decode_fixed(s, out, len, "test", &err), 0);
}

static void assert_hex(const uint8_t *got, size_t len, const char *want)
{
	char *h = cvm_hex_encode(got, len);
	assert_non_null(h);
	assert_string_equal(h, want);
	free(h);
}

/* Metadata of OvmfPkgX64 as published in virtee/sev-snp-measure-go guest/testdata/
 * ovmf_img_1.json (identical to what Debian's OVMF_CODE.fd carries, see test_debian_parse). */
static void ovmfx64_metadata(struct cvm_ovmf_info *o)
{
	static const struct cvm_ovmf_section s[] = {
		{ 0x800000, 0x9000, CVM_OVMF_SECTION_SNP_SEC_MEM },
		{ 0x80a000, 0x3000, CVM_OVMF_SECTION_SNP_SEC_MEM },
		{ 0x80d000, 0x1000, CVM_OVMF_SECTION_SNP_SECRETS },
		{ 0x80e000, 0x1000, CVM_OVMF_SECTION_CPUID },
		{ 0x80f000, 0x11000, CVM_OVMF_SECTION_SNP_SEC_MEM },
	};
	memset(o, 0, sizeof(*o));
	o->has_reset_eip = true;
	o->reset_eip = 0x80b004;
	o->has_metadata = true;
	o->n_sections = CVM_ARRAY_SIZE(s);
	memcpy(o->sections, s, sizeof(s));
}

/* virtee/sev-snp-measure tests/test_vcpu_types.py; signatures from vcpu_types.py. */
static void test_cpuid_sig(void **state)
{
	(void)state;
	assert_int_equal(cvm_cpuid_sig(14, 1, 2), 0x0e12);
	assert_int_equal(cvm_cpuid_sig(23, 1, 2), 0x800f12);
	struct cvm_err err = { 0 };
	uint32_t sig = 0;
	assert_int_equal(cvm_snp_vcpu_sig("EPYC-v4", &sig, &err), 0);
	assert_int_equal(sig, 0x800f12);
	assert_int_equal(cvm_snp_vcpu_sig("epyc-milan", &sig, &err), 0);
	assert_int_equal(sig, 0xa00f11);
	assert_int_equal(cvm_snp_vcpu_sig("EPYC-Genoa", &sig, &err), 0);
	assert_int_equal(sig, 0xa10f10);
	assert_int_equal(cvm_snp_vcpu_sig("EPYC-Rome", &sig, &err), 0);
	assert_int_equal(sig, 0x830f10);
	assert_int_equal(cvm_snp_vcpu_sig("EPYC-Foo", &sig, &err), -EINVAL);
	assert_non_null(strstr(err.msg, "--vcpu-type"));
	assert_int_equal(cvm_snp_vcpu_sig(NULL, &sig, &err), -EINVAL);
	assert_int_equal(cvm_snp_vcpu_type_count(), 15);
	assert_string_equal(cvm_snp_vcpu_type_name(0), "EPYC");
	assert_null(cvm_snp_vcpu_type_name(15));
}

/* PAGE_INFO (SEV-SNP ABI #56860 table "PAGE_INFO"; virtee/sev-snp-measure gctx.py packs it
 * as ld || contents || <HBBBBBBQ 0x70, type, imi, vmpl3, vmpl2, vmpl1, 0, gpa>). */
static void test_page_info(void **state)
{
	(void)state;
	uint8_t cur[48], contents[48], info[CVM_SNP_PAGE_INFO_SIZE];
	for (int i = 0; i < 48; i++) {
		cur[i] = (uint8_t)i;
		contents[i] = (uint8_t)(0x80 + i);
	}
	cvm_snp_page_info(cur, contents, CVM_SNP_PAGE_CPUID, 0x80e000, info);
	uint8_t want[CVM_SNP_PAGE_INFO_SIZE] = { 0 };
	memcpy(want, cur, 48);
	memcpy(want + 48, contents, 48);
	const uint8_t tail[16] = { 0x70, 0x00, 0x06, 0, 0, 0, 0, 0,
				   0x00, 0xe0, 0x80, 0x00, 0, 0, 0, 0 };
	memcpy(want + 96, tail, 16);
	assert_memory_equal(info, want, sizeof(want));

	struct cvm_snp_gctx g;
	cvm_snp_gctx_init(&g, cur);
	struct cvm_err err = { 0 };
	assert_int_equal(cvm_snp_gctx_update(&g, CVM_SNP_PAGE_CPUID, 0x80e000, contents, &err), 0);
	uint8_t h[48];
	assert_true(EVP_Digest(want, sizeof(want), h, NULL, EVP_sha384(), NULL));
	assert_memory_equal(g.ld, h, 48);
	/* A different GPA is a different digest. */
	cvm_snp_gctx_init(&g, cur);
	assert_int_equal(cvm_snp_gctx_update(&g, CVM_SNP_PAGE_CPUID, 0x80f000, contents, &err), 0);
	assert_memory_not_equal(g.ld, h, 48);
	/* Failure twins: unaligned GPA, page type outside 1..6. */
	assert_int_equal(cvm_snp_gctx_update(&g, CVM_SNP_PAGE_NORMAL, 0x80e001, contents, &err),
			 -EINVAL);
	assert_int_equal(cvm_snp_gctx_update(&g, (enum cvm_snp_page_type)7, 0, contents, &err),
			 -EINVAL);
	/* A fresh context starts from 48 zero bytes. */
	cvm_snp_gctx_init(&g, NULL);
	uint8_t zeros[48] = { 0 };
	assert_memory_equal(g.ld, zeros, 48);
}

/* Full chain from published vectors: virtee/sev-snp-measure-go guest/guest_test.go
 * TestLaunchDigestFromMetadataWrapper / TestLaunchDigestFromOVMF (EC2 VMM, guest features
 * 0x1, 2 vCPUs, OVMF pages given as their precomputed digest). */
static void test_published_ec2_vectors(void **state)
{
	(void)state;
	struct cvm_ovmf_info o;
	ovmfx64_metadata(&o);
	uint8_t seed1[48], seed2[48], ld[48];
	unhex("a58211791a556a630a4319dc9e2ea96cc0e9784dd9f20a4fadf81b26c98d163fcdcb6703884bbbb80d7b1de45b3d84d0",
	      seed1, 48);
	unhex("2027a27bb9f7acfd280e4c7bd68a73973b94bf0756e5b282e004b9395f597b8d0eb4defa7d8f6549375aa4d2b146f0f3",
	      seed2, 48);
	struct cvm_err err = { 0 };
	struct cvm_snp_measure_in in = { .ovmf = &o, .ovmf_hash = seed1, .vcpus = 2,
					 .vcpu_sig = 0, .guest_features = 0x1,
					 .vmm = CVM_SNP_VMM_EC2 };
	assert_int_equal(cvm_snp_measure(&in, ld, &err), 0);
	assert_hex(ld, 48, "4c6e33087d08fa770259484dddbef367086a15c3e2cf10038dc97229d39c942671c2e22b300178f8de594a3f2fa59303");
	in.ovmf_hash = seed2;
	assert_int_equal(cvm_snp_measure(&in, ld, &err), 0);
	assert_hex(ld, 48, "c2c84b9364fc9f0f54b04534768c860c6e0e386ad98b96e8b98eca46ac8971d05c531ba48373f054c880cfd1f4a0a84e");

	/* Failure twins: each input changes the digest. */
	uint8_t ref[48];
	memcpy(ref, ld, 48);
	in.vcpus = 1;
	assert_int_equal(cvm_snp_measure(&in, ld, &err), 0);
	assert_memory_not_equal(ld, ref, 48);
	in.vcpus = 2;
	in.vmm = CVM_SNP_VMM_QEMU;
	assert_int_equal(cvm_snp_measure(&in, ld, &err), 0);
	assert_memory_not_equal(ld, ref, 48);
	in.vmm = CVM_SNP_VMM_EC2;
	in.guest_features = 0x21;
	assert_int_equal(cvm_snp_measure(&in, ld, &err), 0);
	assert_memory_not_equal(ld, ref, 48);
	in.guest_features = 0x1;
	o.reset_eip = 0x80b000;
	assert_int_equal(cvm_snp_measure(&in, ld, &err), 0);
	assert_memory_not_equal(ld, ref, 48);
	o.reset_eip = 0x80b004;
	o.sections[3].gpa = 0x80f000; /* CPUID page elsewhere */
	assert_int_equal(cvm_snp_measure(&in, ld, &err), 0);
	assert_memory_not_equal(ld, ref, 48);
	o.sections[3].gpa = 0x80e000;
	assert_int_equal(cvm_snp_measure(&in, ld, &err), 0);
	assert_memory_equal(ld, ref, 48);

	/* Refused inputs. */
	in.vcpus = 0;
	assert_int_equal(cvm_snp_measure(&in, ld, &err), -EINVAL);
	in.vcpus = CVM_SNP_MAX_VCPUS + 1;
	assert_int_equal(cvm_snp_measure(&in, ld, &err), -EINVAL);
	in.vcpus = 2;
	in.guest_features = 0x20; /* SNPActive missing */
	assert_int_equal(cvm_snp_measure(&in, ld, &err), -EINVAL);
	in.guest_features = 0x1;
	o.has_reset_eip = false;
	assert_int_equal(cvm_snp_measure(&in, ld, &err), -EINVAL);
	assert_non_null(strstr(err.msg, "reset block"));
	o.has_reset_eip = true;
	struct cvm_sev_hashes hs = { 0 };
	in.hashes = &hs; /* OvmfX64 has no SNP_KERNEL_HASHES section (sev-snp-measure
			  * test_snp_with_ovmfx64_and_kernel_should_fail) */
	assert_int_equal(cvm_snp_measure(&in, ld, &err), -EINVAL);
	assert_non_null(strstr(err.msg, "SNP_KERNEL_HASHES"));
}

/* QEMU-mode vectors with direct kernel boot: virtee/sev-snp-measure tests/test_guest.py
 * test_snp_ovmf_hash_gen (OVMF digest cab7e085..., kernel and initrd /dev/null, no append ->
 * db06fb26...) and test_snp_ovmf_hash_full (OVMF digest edcf6d1c..., append "console=ttyS0
 * loglevel=7" -> f0786430...), 1 x EPYC-v4, guest features 0x1, from the release whose VMSA
 * left the FPU fields zero (our QEMU_LEGACY). The fixture ovmf_AmdSev_suffix.bin is binary and
 * not available here; its metadata is edk2 AmdSevX64's layout (PcdQemuHashTableBase 0x80fc00
 * inside the SNP_KERNEL_HASHES page 0x80f000), which reproduces both published digests. With
 * one vCPU the AP reset address is not measured. */
static void amdsev_metadata(struct cvm_ovmf_info *o)
{
	static const struct cvm_ovmf_section s[] = {
		{ 0x800000, 0x9000, CVM_OVMF_SECTION_SNP_SEC_MEM },
		{ 0x80a000, 0x3000, CVM_OVMF_SECTION_SNP_SEC_MEM },
		{ 0x80d000, 0x1000, CVM_OVMF_SECTION_SNP_SECRETS },
		{ 0x80e000, 0x1000, CVM_OVMF_SECTION_CPUID },
		{ 0x80f000, 0x1000, CVM_OVMF_SECTION_SNP_KERNEL_HASHES },
		{ 0x810000, 0x10000, CVM_OVMF_SECTION_SNP_SEC_MEM },
	};
	memset(o, 0, sizeof(*o));
	o->has_reset_eip = true;
	o->reset_eip = 0x80b004;
	o->has_hashes_table = true;
	o->hashes_table_gpa = 0x80fc00;
	o->hashes_table_size = 0x400;
	o->has_metadata = true;
	o->n_sections = CVM_ARRAY_SIZE(s);
	memcpy(o->sections, s, sizeof(s));
}

static void test_published_qemu_kernel_vectors(void **state)
{
	(void)state;
	struct cvm_ovmf_info o;
	amdsev_metadata(&o);
	uint8_t seed1[48], seed2[48], ld[48];
	unhex("cab7e085874b3acfdbe2d96dcaa3125111f00c35c6fc9708464c2ae74bfdb048a198cb9a9ccae0b3e5e1a33f5f249819",
	      seed1, 48);
	unhex("edcf6d1c57ce868a167c990f58c8667c698269ef9e0803246419eea914186343054d557e1f17acd93b032c106bc70d25",
	      seed2, 48);
	struct cvm_err err = { 0 };
	struct cvm_sev_hashes h;
	assert_int_equal(cvm_sev_hashes_from_files("/dev/null", "/dev/null", "", &h, &err), 0);
	struct cvm_snp_measure_in in = { .ovmf = &o, .ovmf_hash = seed1, .hashes = &h,
					 .vcpus = 1, .vcpu_sig = 0x800f12, .guest_features = 0x1,
					 .vmm = CVM_SNP_VMM_QEMU_LEGACY };
	assert_int_equal(cvm_snp_measure(&in, ld, &err), 0);
	assert_hex(ld, 48, "db06fb267824b1ccb56edbe2a9c2ce88841bca5090dc6dac91d9cd30f3c2c0bf42daccb30d55d6625bfbf0dae5c50c6d");
	assert_int_equal(cvm_sev_hashes_from_files("/dev/null", "/dev/null",
						   "console=ttyS0 loglevel=7", &h, &err), 0);
	in.ovmf_hash = seed2;
	assert_int_equal(cvm_snp_measure(&in, ld, &err), 0);
	assert_hex(ld, 48, "f07864303ad8243132029e8110b92805c78d1135a15da75f67abb9a711d78740347f24ee76f603e650ec4adf3611cc1e");

	/* Failure twins: current KVM's FPU reset state, another vCPU type, the table at another
	 * offset in its page, no kernel (the hashes page is then measured as a zero page). */
	uint8_t ref[48];
	memcpy(ref, ld, 48);
	in.vmm = CVM_SNP_VMM_QEMU;
	assert_int_equal(cvm_snp_measure(&in, ld, &err), 0);
	assert_memory_not_equal(ld, ref, 48);
	in.vmm = CVM_SNP_VMM_QEMU_LEGACY;
	in.vcpu_sig = 0xa00f11;
	assert_int_equal(cvm_snp_measure(&in, ld, &err), 0);
	assert_memory_not_equal(ld, ref, 48);
	in.vcpu_sig = 0x800f12;
	o.hashes_table_gpa = 0x80f000;
	assert_int_equal(cvm_snp_measure(&in, ld, &err), 0);
	assert_memory_not_equal(ld, ref, 48);
	o.hashes_table_gpa = 0x80fc00;
	in.hashes = NULL;
	assert_int_equal(cvm_snp_measure(&in, ld, &err), 0);
	assert_memory_not_equal(ld, ref, 48);
	in.hashes = &h;
	assert_int_equal(cvm_snp_measure(&in, ld, &err), 0);
	assert_memory_equal(ld, ref, 48);
	in.vmm = (enum cvm_snp_vmm)3;
	assert_int_equal(cvm_snp_measure(&in, ld, &err), -EINVAL);
}

static uint64_t rd64(const uint8_t *p)
{
	uint64_t v = 0;
	for (int i = 7; i >= 0; i--)
		v = v << 8 | p[i];
	return v;
}

/* VMSA fields at the offsets of struct sev_es_save_area (virtee/sev-snp-measure vmsa.py,
 * virtee/sev src/measurement/vmsa.rs: QEMU resets MXCSR 0x1f80 and FCW 0x37f). */
static void test_vmsa(void **state)
{
	(void)state;
	uint8_t bsp[CVM_SNP_VMSA_SIZE], ap[CVM_SNP_VMSA_SIZE], ec2[CVM_SNP_VMSA_SIZE];
	cvm_snp_vmsa_page(0xfffffff0, 0x21, 0xa00f11, CVM_SNP_VMM_QEMU, bsp);
	cvm_snp_vmsa_page(0x80b004, 0x21, 0xa00f11, CVM_SNP_VMM_QEMU, ap);
	cvm_snp_vmsa_page(0xfffffff0, 0x21, 0xa00f11, CVM_SNP_VMM_EC2, ec2);
	/* cs: selector 0xf000, attrib 0x9b, limit 0xffff, base eip & 0xffff0000 */
	const uint8_t cs_bsp[16] = { 0x00, 0xf0, 0x9b, 0x00, 0xff, 0xff, 0, 0,
				     0x00, 0x00, 0xff, 0xff, 0, 0, 0, 0 };
	assert_memory_equal(bsp + 0x10, cs_bsp, 16);
	assert_int_equal(rd64(ap + 0x18), 0x800000);
	assert_int_equal(rd64(bsp + 0x178), 0xfff0);  /* rip */
	assert_int_equal(rd64(ap + 0x178), 0xb004);
	assert_int_equal(rd64(bsp + 0x310), 0xa00f11); /* rdx */
	assert_int_equal(rd64(bsp + 0x3b0), 0x21);     /* sev_features */
	assert_int_equal(rd64(bsp + 0xd0), 0x1000);    /* efer */
	assert_int_equal(rd64(bsp + 0x148), 0x40);     /* cr4 */
	assert_int_equal(rd64(bsp + 0x158), 0x10);     /* cr0 */
	assert_int_equal(rd64(bsp + 0x168), 0xffff0ff0); /* dr6 */
	assert_int_equal(rd64(bsp + 0x268), 0x7040600070406ull); /* g_pat */
	assert_int_equal(rd64(bsp + 0x3e8), 1);        /* xcr0 */
	assert_int_equal(bsp[0x408] | bsp[0x409] << 8, 0x1f80); /* mxcsr */
	assert_int_equal(bsp[0x410] | bsp[0x411] << 8, 0x37f);  /* x87_fcw */
	assert_int_equal(bsp[0x72], 0x82);             /* ldtr attrib */
	assert_int_equal(bsp[0x92], 0x8b);             /* tr attrib */
	/* Nothing beyond the FPU control words. */
	for (size_t i = 0x412; i < CVM_SNP_VMSA_SIZE; i++)
		assert_int_equal(bsp[i], 0);
	/* EC2: cs 0x9a on the BSP, ss 0x92, tr 0x83, no signature, no FPU init. */
	assert_int_equal(ec2[0x12], 0x9a);
	assert_int_equal(ec2[0x22], 0x92);
	assert_int_equal(ec2[0x92], 0x83);
	assert_int_equal(rd64(ec2 + 0x310), 0);
	assert_int_equal(ec2[0x408], 0);
	assert_memory_not_equal(bsp, ec2, CVM_SNP_VMSA_SIZE);
	/* QEMU_LEGACY: the same page with the FPU control fields zero. */
	uint8_t legacy[CVM_SNP_VMSA_SIZE];
	cvm_snp_vmsa_page(0xfffffff0, 0x21, 0xa00f11, CVM_SNP_VMM_QEMU_LEGACY, legacy);
	assert_int_equal(legacy[0x408] | legacy[0x409] << 8 | legacy[0x410] | legacy[0x411], 0);
	memset(bsp + 0x408, 0, 4);
	memset(bsp + 0x410, 0, 2);
	assert_memory_equal(bsp, legacy, CVM_SNP_VMSA_SIZE);
}

/* SEV hashes table (QEMU target/i386/sev.c SevHashTable; sev-snp-measure sev_hashes.py):
 * kernel and initrd = /dev/null, no append (cmdline "\0"). Hash constants are SHA-256("")
 * and SHA-256("\0"); GUIDs in EFI byte order. */
static void test_hashes_table(void **state)
{
	(void)state;
	static const char *want =
		"06d63894224fc94cb479a793d411fd21" "a800"
		"d82dd09720bd944caa78e7714d36ab2a" "3200"
		"6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d"
		"31f7ba442f3ad74b9af141e29169781d" "3200"
		"e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
		"3794e74dd2ab7f42b835d5b172d2045b" "3200"
		"e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
		"0000000000000000";
	struct cvm_err err = { 0 };
	struct cvm_sev_hashes h, f;
	assert_int_equal(cvm_sev_hashes_compute(NULL, 0, NULL, 0, NULL, &h, &err), 0);
	assert_int_equal(cvm_sev_hashes_from_files("/dev/null", "/dev/null", NULL, &f, &err), 0);
	assert_memory_equal(&h, &f, sizeof(h));
	assert_int_equal(cvm_sev_hashes_from_files("/dev/null", NULL, "", &f, &err), 0);
	assert_memory_equal(&h, &f, sizeof(h));
	uint8_t t[CVM_SEV_HASHES_TABLE_PADDED];
	cvm_sev_hashes_table(&h, t);
	assert_hex(t, sizeof(t), want);

	/* The command line is hashed with its NUL. */
	const char *append = "console=ttyS0 loglevel=7";
	uint8_t c[32];
	assert_true(EVP_Digest(append, strlen(append) + 1, c, NULL, EVP_sha256(), NULL));
	assert_int_equal(cvm_sev_hashes_from_files("/dev/null", NULL, append, &f, &err), 0);
	assert_memory_equal(f.cmdline, c, 32);
	assert_memory_not_equal(f.cmdline, h.cmdline, 32);
	const uint8_t k[3] = { 1, 2, 3 };
	assert_int_equal(cvm_sev_hashes_compute(k, 3, NULL, 0, append, &f, &err), 0);
	assert_memory_not_equal(f.kernel, h.kernel, 32);
	/* Failure twins: a missing kernel file, a missing kernel, NULL with a length. */
	assert_int_equal(cvm_sev_hashes_from_files("/nonexistent/vmlinuz", NULL, NULL, &f, &err),
			 -ENOENT);
	assert_int_equal(cvm_sev_hashes_from_files(NULL, NULL, NULL, &f, &err), -EINVAL);
	assert_int_equal(cvm_sev_hashes_compute(NULL, 5, NULL, 0, NULL, &f, &err), -EINVAL);
}

/* ---- a synthetic AmdSev-shaped image ------------------------------------------------- */

static void put16(uint8_t *p, uint16_t v) { p[0] = (uint8_t)v; p[1] = (uint8_t)(v >> 8); }
static void put32(uint8_t *p, uint32_t v)
{
	for (int i = 0; i < 4; i++)
		p[i] = (uint8_t)(v >> (8 * i));
}

static const uint8_t g_footer[16] = { 0xde, 0x82, 0xb5, 0x96, 0xb2, 0x1f, 0xf7, 0x45,
				      0xba, 0xea, 0xa3, 0x66, 0xc5, 0x5a, 0x08, 0x2d };
static const uint8_t g_reset[16] = { 0xde, 0x71, 0xf7, 0x00, 0x7e, 0x1a, 0xcb, 0x4f,
				     0x89, 0x0e, 0x68, 0xc7, 0x7e, 0x2f, 0xb4, 0x4e };
static const uint8_t g_rv[16] = { 0x1f, 0x37, 0x55, 0x72, 0x3b, 0x3a, 0x04, 0x4b,
				  0x92, 0x7b, 0x1d, 0xa6, 0xef, 0xa8, 0xd4, 0x54 };
static const uint8_t g_meta[16] = { 0x66, 0x65, 0x88, 0xdc, 0x4a, 0x98, 0x98, 0x47,
				    0xa7, 0x5e, 0x55, 0x85, 0xa7, 0xbf, 0x67, 0xcc };

#define IMG_SIZE (16 * 4096)
/* Layout like the AmdSev build: ASEV block at 0x1000 from the end, footer table ending 32
 * bytes before the end with [metadata offset][reset block][hash table] entries. */
static void build_image(uint8_t *img, uint32_t hashes_gpa)
{
	memset(img, 0, IMG_SIZE);
	for (size_t i = 0; i < IMG_SIZE - 0x1000; i++)
		img[i] = (uint8_t)(i * 7);
	uint8_t *m = img + IMG_SIZE - 0x1000;
	memcpy(m, "ASEV", 4);
	put32(m + 4, 16 + 12 * 4);
	put32(m + 8, 1);
	put32(m + 12, 4);
	const uint32_t secs[4][3] = { { 0x800000, 0x2000, 1 }, { 0x80d000, 0x1000, 2 },
				      { 0x80e000, 0x1000, 3 }, { 0x80f000, 0x1000, 0x10 } };
	for (int i = 0; i < 4; i++)
		for (int k = 0; k < 3; k++)
			put32(m + 16 + 12 * i + 4 * k, secs[i][k]);
	uint8_t *end = img + IMG_SIZE - 32;
	/* footer: [u16 total][guid] */
	uint8_t *p = end - 18;
	memcpy(p + 2, g_footer, 16);
	size_t total = 18;
	uint8_t *e = p;
	/* metadata entry: u32 offset */
	e -= 18 + 4;
	put32(e, 0x1000);
	put16(e + 4, 22);
	memcpy(e + 6, g_meta, 16);
	total += 22;
	/* reset block: u32 eip */
	e -= 18 + 4;
	put32(e, 0x80b004);
	put16(e + 4, 22);
	memcpy(e + 6, g_reset, 16);
	total += 22;
	/* hash table: u32 gpa, u32 size */
	e -= 18 + 8;
	put32(e, hashes_gpa);
	put32(e + 4, 0x400);
	put16(e + 8, 26);
	memcpy(e + 10, g_rv, 16);
	total += 26;
	put16(p, (uint16_t)total);
}

static void test_synthetic_amdsev(void **state)
{
	(void)state;
	_cleanup_free_ uint8_t *img = malloc(IMG_SIZE);
	assert_non_null(img);
	build_image(img, 0x80fc00);
	struct cvm_err err = { 0 };
	struct cvm_ovmf_info o;
	assert_int_equal(cvm_ovmf_parse(img, IMG_SIZE, &o, &err), 0);
	assert_int_equal(o.gpa, 0x100000000ull - IMG_SIZE);
	assert_true(o.has_reset_eip);
	assert_int_equal(o.reset_eip, 0x80b004);
	assert_true(o.has_hashes_table);
	assert_int_equal(o.hashes_table_gpa, 0x80fc00);
	assert_int_equal(o.hashes_table_size, 0x400);
	assert_int_equal(o.n_sections, 4);
	assert_true(cvm_ovmf_has_section(&o, CVM_OVMF_SECTION_SNP_KERNEL_HASHES));

	struct cvm_sev_hashes h;
	assert_int_equal(cvm_sev_hashes_compute((const uint8_t *)"kernel", 6,
						(const uint8_t *)"initrd", 6, "ro quiet", &h, &err),
			 0);
	struct cvm_snp_measure_in in = { .ovmf = &o, .ovmf_data = img, .ovmf_len = IMG_SIZE,
					 .hashes = &h, .vcpus = 3, .vcpu_sig = 0x800f12,
					 .guest_features = 1, .vmm = CVM_SNP_VMM_QEMU };
	uint8_t ld[48];
	assert_int_equal(cvm_snp_measure(&in, ld, &err), 0);

	/* The same launch replayed update by update in QEMU's order. */
	struct cvm_snp_gctx g;
	cvm_snp_gctx_init(&g, NULL);
	assert_int_equal(cvm_snp_gctx_update_normal(&g, o.gpa, img, IMG_SIZE, &err), 0);
	uint8_t z[48] = { 0 };
	assert_int_equal(cvm_snp_gctx_update(&g, CVM_SNP_PAGE_ZERO, 0x800000, z, &err), 0);
	assert_int_equal(cvm_snp_gctx_update(&g, CVM_SNP_PAGE_ZERO, 0x801000, z, &err), 0);
	assert_int_equal(cvm_snp_gctx_update(&g, CVM_SNP_PAGE_SECRETS, 0x80d000, z, &err), 0);
	assert_int_equal(cvm_snp_gctx_update(&g, CVM_SNP_PAGE_CPUID, 0x80e000, z, &err), 0);
	uint8_t page[4096] = { 0 };
	cvm_sev_hashes_table(&h, page + 0xc00);
	assert_int_equal(cvm_snp_gctx_update_normal(&g, 0x80f000, page, sizeof(page), &err), 0);
	uint8_t v[CVM_SNP_VMSA_SIZE];
	cvm_snp_vmsa_page(0xfffffff0, 1, 0x800f12, CVM_SNP_VMM_QEMU, v);
	assert_int_equal(cvm_snp_gctx_update_vmsa(&g, v, &err), 0);
	cvm_snp_vmsa_page(0x80b004, 1, 0x800f12, CVM_SNP_VMM_QEMU, v);
	assert_int_equal(cvm_snp_gctx_update_vmsa(&g, v, &err), 0);
	assert_int_equal(cvm_snp_gctx_update_vmsa(&g, v, &err), 0);
	assert_memory_equal(g.ld, ld, 48);

	/* Failure twins: another command line, no kernel (hashes page measured as zero),
	 * a hash table not fitting its page, one byte of firmware changed. */
	uint8_t ref[48];
	memcpy(ref, ld, 48);
	assert_int_equal(cvm_sev_hashes_compute((const uint8_t *)"kernel", 6,
						(const uint8_t *)"initrd", 6, "ro", &h, &err), 0);
	assert_int_equal(cvm_snp_measure(&in, ld, &err), 0);
	assert_memory_not_equal(ld, ref, 48);
	in.hashes = NULL;
	assert_int_equal(cvm_snp_measure(&in, ld, &err), 0);
	assert_memory_not_equal(ld, ref, 48);
	in.hashes = &h;
	o.hashes_table_gpa = 0x80ff80;
	assert_int_equal(cvm_snp_measure(&in, ld, &err), -EINVAL);
	o.hashes_table_gpa = 0x80fc00;
	img[5] ^= 1;
	assert_int_equal(cvm_sev_hashes_compute((const uint8_t *)"kernel", 6,
						(const uint8_t *)"initrd", 6, "ro quiet", &h, &err),
			 0);
	assert_int_equal(cvm_snp_measure(&in, ld, &err), 0);
	assert_memory_not_equal(ld, ref, 48);
	img[5] ^= 1;
	assert_int_equal(cvm_snp_measure(&in, ld, &err), 0);
	assert_memory_equal(ld, ref, 48);
	/* The image measured must be the parsed one, in whole pages. */
	in.ovmf_len = IMG_SIZE - 1;
	assert_int_equal(cvm_snp_measure(&in, ld, &err), -EINVAL);
}

static void test_parse_malformed(void **state)
{
	(void)state;
	_cleanup_free_ uint8_t *img = malloc(IMG_SIZE);
	assert_non_null(img);
	struct cvm_err err = { 0 };
	struct cvm_ovmf_info o;
	uint8_t *foot_len = img + IMG_SIZE - 32 - 18;

	/* No footer: parses, with nothing found. */
	memset(img, 0xff, IMG_SIZE);
	assert_int_equal(cvm_ovmf_parse(img, IMG_SIZE, &o, &err), 0);
	assert_false(o.has_reset_eip || o.has_metadata || o.has_hashes_table);
	assert_int_equal(cvm_ovmf_parse(img, 10, &o, &err), 0);
	assert_int_equal(cvm_ovmf_parse(img, 0, &o, &err), -EINVAL);
	assert_int_equal(cvm_ovmf_parse(NULL, 10, &o, &err), -EINVAL);

	/* Table length beyond the image, and shorter than its own header. */
	build_image(img, 0x80fc00);
	put16(foot_len, 0xffff);
	assert_int_equal(cvm_ovmf_parse(img, IMG_SIZE, &o, &err), -EINVAL);
	build_image(img, 0x80fc00);
	assert_int_equal(cvm_ovmf_parse(img + IMG_SIZE - 100, 100, &o, &err), -EINVAL);
	put16(foot_len, 10);
	assert_int_equal(cvm_ovmf_parse(img, IMG_SIZE, &o, &err), -EINVAL);
	/* An entry claiming more than the table. */
	build_image(img, 0x80fc00);
	put16(img + IMG_SIZE - 32 - 18 - 16 - 2, 0x300);
	assert_int_equal(cvm_ovmf_parse(img, IMG_SIZE, &o, &err), -EINVAL);
	/* Wrong ASEV signature. */
	build_image(img, 0x80fc00);
	img[IMG_SIZE - 0x1000] = 'B';
	assert_int_equal(cvm_ovmf_parse(img, IMG_SIZE, &o, &err), -EINVAL);
	assert_non_null(strstr(err.msg, "ASEV"));
	/* Metadata offset outside the image. */
	build_image(img, 0x80fc00);
	assert_int_equal(cvm_ovmf_parse(img + IMG_SIZE - 0x800, 0x800, &o, &err), -EINVAL);
	/* Too many sections for the length, too many sections at all. */
	build_image(img, 0x80fc00);
	put32(img + IMG_SIZE - 0x1000 + 12, 5);
	assert_int_equal(cvm_ovmf_parse(img, IMG_SIZE, &o, &err), -EINVAL);
	put32(img + IMG_SIZE - 0x1000 + 12, 1000);
	assert_int_equal(cvm_ovmf_parse(img, IMG_SIZE, &o, &err), -EINVAL);
	/* Unknown section type, unaligned GPA, section past 4 GiB. */
	build_image(img, 0x80fc00);
	put32(img + IMG_SIZE - 0x1000 + 16 + 8, 9);
	assert_int_equal(cvm_ovmf_parse(img, IMG_SIZE, &o, &err), -EINVAL);
	build_image(img, 0x80fc00);
	put32(img + IMG_SIZE - 0x1000 + 16, 0x800010);
	assert_int_equal(cvm_ovmf_parse(img, IMG_SIZE, &o, &err), -EINVAL);
	build_image(img, 0x80fc00);
	put32(img + IMG_SIZE - 0x1000 + 16, 0xfffff000);
	put32(img + IMG_SIZE - 0x1000 + 20, 0x2000);
	assert_int_equal(cvm_ovmf_parse(img, IMG_SIZE, &o, &err), -EINVAL);
	/* The untouched image parses (the twin of all of the above). */
	build_image(img, 0x80fc00);
	assert_int_equal(cvm_ovmf_parse(img, IMG_SIZE, &o, &err), 0);
	assert_int_equal(o.n_sections, 4);
}

/* ---- Debian's OVMF ------------------------------------------------------------------- */

static void test_debian_parse(void **state)
{
	(void)state;
	if (access(DEBIAN_OVMF, R_OK) != 0)
		skip();
	_cleanup_free_ uint8_t *img = NULL;
	size_t len = 0;
	struct cvm_err err = { 0 };
	assert_int_equal(cvm_file_read(DEBIAN_OVMF, 64 << 20, &img, &len, &err), 0);
	struct cvm_ovmf_info o, want;
	assert_int_equal(cvm_ovmf_parse(img, len, &o, &err), 0);
	ovmfx64_metadata(&want);
	assert_true(o.has_metadata);
	assert_int_equal(o.metadata_version, 1);
	assert_int_equal(o.n_sections, want.n_sections);
	assert_memory_equal(o.sections, want.sections, sizeof(want.sections[0]) * want.n_sections);
	assert_int_equal(o.reset_eip, 0x80b004);
	assert_true(o.has_hashes_table);
	assert_int_equal(o.hashes_table_gpa, 0); /* OvmfX64 reserves no hash table */
	assert_false(cvm_ovmf_has_section(&o, CVM_OVMF_SECTION_SNP_KERNEL_HASHES));
}

/* Digests for Debian 12's ovmf 2022.11-6+deb12u2 OVMF_CODE.fd, cross-checked when written
 * with an independent transliteration of sev-snp-measure's algorithm (which reproduces the
 * sev-snp-measure-go vectors above). They change only when the package's firmware does. */
#define DEBIAN_LD_1_EPYC_V4 "a479327cbb0b50e876024c2dac7412d4e5e95c7315c1f8b0446f6d3be69fefba50766285475926737e4a70b155252f88"
#define DEBIAN_LD_4_MILAN "cc2b38913550ecd41aadbcf2a5d309ae9d3cb0455c9e1f72892f6b18cfaea3f2e4f46a28b61ca0353724ee707c73177c"
#define DEBIAN_OVMF_HASH "a5429c12f18e96502e1dd4917e8b0c35e4f4ebceac5fe8820b41d91d1c509abeb28146fcc453e8be4d3ede27c3fbaad3"

/* SHA-256 of that OVMF_CODE.fd: the digests are pinned for this file, so another build (a
 * different package version) skips rather than fails. */
#define DEBIAN_OVMF_SHA256 "d9b568def24088c92f34b5479e0ed7e44d0a4d4cea8a0f5716719180bba48106"

static bool debian_ovmf_known(void)
{
	if (access(DEBIAN_OVMF, R_OK) != 0)
		return false;
	_cleanup_free_ uint8_t *img = NULL;
	size_t len = 0;
	struct cvm_err err = { 0 };
	if (cvm_file_read(DEBIAN_OVMF, 64 << 20, &img, &len, &err) < 0)
		return false;
	uint8_t d[32];
	assert_true(EVP_Digest(img, len, d, NULL, EVP_sha256(), NULL));
	char *h = cvm_hex_encode(d, 32);
	bool same = h && strcmp(h, DEBIAN_OVMF_SHA256) == 0;
	if (!same)
		fprintf(stderr, "note: %s (sha256 %s) is not the build the digests were pinned for\n",
			DEBIAN_OVMF, h ? h : "?");
	free(h);
	return same;
}

static void test_debian_digest(void **state)
{
	(void)state;
	if (!debian_ovmf_known())
		skip();
	struct cvm_err err = { 0 };
	uint8_t ld[48];
	struct cvm_snp_measure_files f = { .ovmf = DEBIAN_OVMF, .vcpu_type = "EPYC-v4",
					   .vcpus = 1, .guest_features = 1 };
	struct cvm_ovmf_info o;
	assert_int_equal(cvm_snp_measure_files(&f, ld, &o, &err), 0);
	assert_hex(ld, 48, DEBIAN_LD_1_EPYC_V4);
	assert_int_equal(o.n_sections, 5);
	f.vcpus = 4;
	f.vcpu_type = "EPYC-Milan";
	assert_int_equal(cvm_snp_measure_files(&f, ld, NULL, &err), 0);
	assert_hex(ld, 48, DEBIAN_LD_4_MILAN);
	/* The OVMF pages alone, then the precomputed OVMF digest gives the same launch digest. */
	_cleanup_free_ uint8_t *img = NULL;
	size_t len = 0;
	assert_int_equal(cvm_file_read(DEBIAN_OVMF, 64 << 20, &img, &len, &err), 0);
	struct cvm_snp_gctx g;
	cvm_snp_gctx_init(&g, NULL);
	assert_int_equal(cvm_snp_gctx_update_normal(&g, 0x100000000ull - len, img, len, &err), 0);
	assert_hex(g.ld, 48, DEBIAN_OVMF_HASH);
	uint8_t seed[48];
	unhex(DEBIAN_OVMF_HASH, seed, 48);
	f.ovmf_hash = seed;
	assert_int_equal(cvm_snp_measure_files(&f, ld, NULL, &err), 0);
	assert_hex(ld, 48, DEBIAN_LD_4_MILAN);
	f.ovmf_hash = NULL;
	/* Failure twins. */
	f.vcpu_type = "EPYC-Genoa";
	assert_int_equal(cvm_snp_measure_files(&f, ld, NULL, &err), 0);
	char *h = cvm_hex_encode(ld, 48);
	assert_string_not_equal(h, DEBIAN_LD_4_MILAN);
	free(h);
	f.vcpu_type = "EPYC-Milan";
	f.kernel = "/dev/null"; /* OvmfX64 cannot measure a direct kernel boot */
	assert_int_equal(cvm_snp_measure_files(&f, ld, NULL, &err), -EINVAL);
	assert_non_null(strstr(err.msg, "SNP_KERNEL_HASHES"));
	f.kernel = NULL;
	f.append = "console=ttyS0";
	assert_int_equal(cvm_snp_measure_files(&f, ld, NULL, &err), -EINVAL);
	f.append = NULL;
	f.ovmf = "/nonexistent/OVMF.fd";
	assert_int_not_equal(cvm_snp_measure_files(&f, ld, NULL, &err), 0);
	if (access(DEBIAN_OVMF_AMDSEV, R_OK) == 0) {
		/* The AmdSev build measures direct kernel boot. */
		f.ovmf = DEBIAN_OVMF_AMDSEV;
		f.kernel = "/dev/null";
		assert_int_equal(cvm_snp_measure_files(&f, ld, NULL, &err), 0);
	}
}

/* A measurement pinned in a policy accepts emulator evidence carrying it and refuses
 * evidence carrying another (the same policy file `cvm attest verify --policy` loads). */
static void test_pinned_with_emulator(void **state)
{
	(void)state;
	if (!debian_ovmf_known())
		skip();
	struct cvm_err err = { 0 };
	uint8_t ld[48];
	struct cvm_snp_measure_files mf = { .ovmf = DEBIAN_OVMF, .vcpu_type = "EPYC-Milan",
					    .vcpus = 4, .guest_features = 1 };
	assert_int_equal(cvm_snp_measure_files(&mf, ld, NULL, &err), 0);

	char dir[] = "/tmp/cvm-measure-XXXXXX";
	assert_non_null(mkdtemp(dir));
	char emu[64], rpath[96];
	snprintf(emu, sizeof(emu), "%s/emu", dir);
	snprintf(rpath, sizeof(rpath), "%s/report.bin", dir);
	struct cvm_tee_emu_params p = { .product = CVM_SNP_PRODUCT_MILAN,
					.tcb = { .bl = 3, .tee = 0, .snp = 8, .ucode = 115 } };
	memset(p.chip_id, 0x5a, sizeof(p.chip_id));
	char fp[65];
	assert_int_equal(cvm_tee_emu_init(emu, &p, fp, &err), 0);
	_cleanup_roots_ struct cvm_attest_roots *roots = NULL;
	assert_int_equal(cvm_attest_roots_new_builtin(&roots, &err), 0);
	assert_int_equal(cvm_attest_roots_add_emulator(roots, emu, fp, &err), 0);

	char *hex = cvm_hex_encode(ld, 48);
	char *pol_text = cvm_asprintf("{\"allow_emulated\": true, \"measurements\": [\"%s\"]}", hex);
	json_error_t jerr;
	json_t *pj = json_loads(pol_text, 0, &jerr);
	assert_non_null(pj);
	struct cvm_snp_policy pol;
	struct cvm_snp_policy_store *store = NULL;
	assert_int_equal(cvm_snp_policy_from_json(pj, &pol, &store, &err), 0);
	assert_int_equal(pol.n_measurements, 1);

	struct cvm_tee_emu_report_in in = { 0 };
	memcpy(in.measurement, ld, 48);
	uint8_t rep[CVM_SNP_REPORT_SIZE];
	assert_int_equal(cvm_tee_emu_snp_report(emu, &in, rep, &err), 0);
	assert_int_equal(cvm_file_write_atomic(rpath, rep, sizeof(rep), 0600, &err), 0);
	struct cvm_snp_files files = { .report = rpath, .certs_dir = emu };
	struct cvm_snp_verdict v;
	assert_int_equal(cvm_snp_verify_files(&files, roots, NULL, &pol, &v, &err), 0);
	assert_memory_equal(v.report.measurement, ld, 48);

	/* The same launch with one vCPU more measures differently and is refused. */
	mf.vcpus = 5;
	assert_int_equal(cvm_snp_measure_files(&mf, in.measurement, NULL, &err), 0);
	assert_memory_not_equal(in.measurement, ld, 48);
	assert_int_equal(cvm_tee_emu_snp_report(emu, &in, rep, &err), 0);
	assert_int_equal(cvm_file_write_atomic(rpath, rep, sizeof(rep), 0600, &err), 0);
	assert_int_equal(cvm_snp_verify_files(&files, roots, NULL, &pol, &v, &err), -EPERM);
	assert_non_null(strstr(err.msg, "measurement"));

	cvm_snp_policy_store_free(store);
	json_decref(pj);
	free(pol_text);
	free(hex);
	char cmd[128];
	snprintf(cmd, sizeof(cmd), "rm -rf '%s'", dir);
	assert_int_equal(system(cmd), 0);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_cpuid_sig),
		cmocka_unit_test(test_page_info),
		cmocka_unit_test(test_published_ec2_vectors),
		cmocka_unit_test(test_published_qemu_kernel_vectors),
		cmocka_unit_test(test_vmsa),
		cmocka_unit_test(test_hashes_table),
		cmocka_unit_test(test_synthetic_amdsev),
		cmocka_unit_test(test_parse_malformed),
		cmocka_unit_test(test_debian_parse),
		cmocka_unit_test(test_debian_digest),
		cmocka_unit_test(test_pinned_with_emulator),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
