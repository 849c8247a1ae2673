/* SPDX-License-Identifier: Apache-2.0 */
/* SEV-SNP verification against every real sample in the shared evidence directory, and the
 * failure twin of each: flipped bits, wrong-product chains, untrusted roots, TCB mismatches. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include <cmocka.h>

#include <opencvm/attest.h>

#include <openssl/pem.h>

static const char *evidence_dir(void)
{
	const char *d = getenv("CVM_EVIDENCE_DIR");
	struct stat st;
	if (!d || stat(d, &st) != 0 || !S_ISDIR(st.st_mode)) {
		fprintf(stderr, "FATAL: evidence directory missing (CVM_EVIDENCE_DIR=%s); the "
				"shared/ checkout must sit beside the repository\n",
			d ? d : "(unset)");
		fail();
	}
	return d;
}

static uint8_t *load(const char *rel, size_t *len)
{
	char path[1024];
	snprintf(path, sizeof(path), "%s/%s", evidence_dir(), rel);
	uint8_t *buf = NULL;
	struct cvm_err err = { 0 };
	if (cvm_file_read(path, 1 << 20, &buf, len, &err) < 0) {
		fprintf(stderr, "FATAL: %s\n", err.msg);
		fail();
	}
	return buf;
}

struct sample {
	const char *report;  /* relative to the evidence dir */
	size_t offset;       /* SNP report offset inside the file (HCL reports: 0x20) */
	const char *cert;    /* VCEK/VLEK (may contain ASK+ARK too) */
	enum cvm_snp_product product;
	uint32_t version;
	bool debug;
	bool vlek;
	int64_t now;         /* verification time; 0 = now (VLEKs live one year) */
};
/* 2025-06-01: inside the VLEK sample's validity (2024-12-10 .. 2025-12-10). */
#define VLEK_TIME 1748736000

static const struct sample samples[] = {
	{ "snp/virtee-milan/report.bin", 0, "snp/virtee-milan/vcek.der", CVM_SNP_PRODUCT_MILAN, 2, false, false, 0 },
	{ "snp/gosevguest-milan-debug/report.bin", 0, "snp/gosevguest-milan-debug/vcek.der",
	  CVM_SNP_PRODUCT_MILAN, 2, .debug = true, .now = 0 },
	{ "snp/trustee-milan/report.bin", 0, "snp/trustee-milan/vcek.der", CVM_SNP_PRODUCT_MILAN, 2, false, false, 0 },
	{ "snp/trustee-milan-vlek/report.bin", 0, "snp/trustee-milan-vlek/vlek.der",
	  CVM_SNP_PRODUCT_MILAN, 3, .vlek = true, .now = VLEK_TIME },
	{ "snp/azure-genoa/report.bin", 0, "snp/azure-genoa/vcek.pem", CVM_SNP_PRODUCT_GENOA, 3, false, false, 0 },
	{ "snp/oak-genoa-v5/report.bin", 0, "snp/oak-genoa-v5/vcek.der", CVM_SNP_PRODUCT_GENOA, 5, false, false, 0 },
	{ "snp/oak-turin-v5/report.bin", 0, "snp/oak-turin-v5/vcek.der", CVM_SNP_PRODUCT_TURIN, 5, false, false, 0 },
	{ "azure/snp-milan/hcl-report.bin", 0x20, "azure/snp-milan/vcek.pem", CVM_SNP_PRODUCT_MILAN,
	  2, false, false, 0 },
	{ "azure/snp-milan-v1/evidence-v1-hcl-report.bin", 0x20,
	  "azure/snp-milan-v1/evidence-v1-vcek.der", CVM_SNP_PRODUCT_MILAN, 3, false, false, 0 },
	{ "azure/snp-milan-v2/evidence-v2-hcl-report.bin", 0x20,
	  "azure/snp-milan-v2/evidence-v2-vcek.der", CVM_SNP_PRODUCT_MILAN, 3, false, false, 0 },
	{ "azure/snp-genoa/genoa-hcl-report.bin", 0x20, "azure/snp-genoa/vcek-genoa.pem",
	  CVM_SNP_PRODUCT_GENOA, 3, false, false, 0 },
};

struct fixture {
	struct cvm_attest_roots *roots;
};

static int setup(void **state)
{
	struct fixture *f = calloc(1, sizeof(*f));
	struct cvm_err err = { 0 };
	if (!f || cvm_attest_roots_new_builtin(&f->roots, &err) < 0) {
		fprintf(stderr, "roots: %s\n", err.msg);
		free(f);
		return -1;
	}
	*state = f;
	return 0;
}

static int teardown(void **state)
{
	struct fixture *f = *state;
	if (!f)
		return 0;
	cvm_attest_roots_free(f->roots);
	free(f);
	return 0;
}

/* The 1184 report bytes of a sample (copied out of HCL reports). */
static uint8_t *sample_report(const struct sample *s)
{
	size_t len = 0;
	_cleanup_free_ uint8_t *file = load(s->report, &len);
	assert_true(len >= s->offset + CVM_SNP_REPORT_SIZE);
	uint8_t *r = malloc(CVM_SNP_REPORT_SIZE);
	assert_non_null(r);
	memcpy(r, file + s->offset, CVM_SNP_REPORT_SIZE);
	return r;
}

static void sample_certs(const struct sample *s, struct cvm_snp_certs *c)
{
	size_t len = 0;
	_cleanup_free_ uint8_t *der = load(s->cert, &len);
	struct cvm_err err = { 0 };
	memset(c, 0, sizeof(*c));
	assert_int_equal(cvm_snp_certs_add(c, der, len, &err), 0);
	assert_non_null(c->vek);
}

static void test_real_samples_verify(void **state)
{
	struct fixture *f = *state;
	for (size_t i = 0; i < CVM_ARRAY_SIZE(samples); i++) {
		const struct sample *s = &samples[i];
		_cleanup_free_ uint8_t *rep = sample_report(s);
		struct cvm_snp_certs certs;
		sample_certs(s, &certs);
		struct cvm_snp_policy pol;
		cvm_snp_policy_default(&pol);
		pol.allow_debug = true;
		struct cvm_snp_verdict v;
		struct cvm_err err = { 0 };
		struct cvm_snp_verify_opts opts = { .now = s->now };
		int rc = cvm_snp_verify(rep, CVM_SNP_REPORT_SIZE, &certs, f->roots, &opts, &pol, &v,
					&err);
		if (rc != 0)
			fprintf(stderr, "%s: %s\n", s->report, err.msg);
		assert_int_equal(rc, 0);
		assert_int_equal(v.product, s->product);
		assert_int_equal(v.report.version, s->version);
		assert_int_equal(v.signer, s->vlek ? CVM_SNP_SIGNER_VLEK : CVM_SNP_SIGNER_VCEK);
		assert_false(v.emulated);
		/* Default policy: only the debug sample is refused, and for being debuggable. */
		rc = cvm_snp_verify(rep, CVM_SNP_REPORT_SIZE, &certs, f->roots, &opts, NULL, &v, &err);
		if (s->debug) {
			assert_int_equal(rc, -EPERM);
			assert_non_null(strstr(err.msg, "debug"));
		} else {
			assert_int_equal(rc, 0);
		}
		cvm_snp_certs_clear(&certs);
	}
}

static void test_known_fields(void **state)
{
	(void)state;
	size_t len = 0;
	_cleanup_free_ uint8_t *rep = load("snp/virtee-milan/report.bin", &len);
	struct cvm_snp_report r;
	struct cvm_err err = { 0 };
	assert_int_equal(cvm_snp_report_parse(rep, len, &r, &err), 0);
	assert_int_equal(r.policy, 0x30000);
	assert_int_equal(r.reported_tcb, 0x7308000000000003ULL);
	struct cvm_snp_tcb t;
	cvm_snp_tcb_decode(r.reported_tcb, CVM_SNP_PRODUCT_MILAN, &t);
	assert_int_equal(t.bl, 3);
	assert_int_equal(t.snp, 8);
	assert_int_equal(t.ucode, 0x73);
	assert_int_equal(cvm_snp_tcb_encode(&t, CVM_SNP_PRODUCT_MILAN), r.reported_tcb);
	assert_int_equal(r.current_major, 1);
	assert_int_equal(r.current_minor, 52);
	assert_int_equal(r.current_build, 4);
	_cleanup_free_ char *m = cvm_hex_encode(r.measurement, 48);
	assert_string_equal(m, "7a1e5c266c0108dbc9bb94fa926951320940915d0aafb42464bd88b579ea158d"
			       "3e1a0dc39b2c60bd95b9c480cd81841f");
	uint8_t again[CVM_SNP_REPORT_SIZE];
	cvm_snp_report_serialize(&r, again);
	assert_memory_equal(again, rep, CVM_SNP_REPORT_SIZE);
	json_t *j = NULL;
	assert_int_equal(cvm_snp_report_to_json(&r, CVM_SNP_PRODUCT_MILAN, &j, &err), 0);
	assert_int_equal(json_integer_value(json_object_get(json_object_get(j, "reported_tcb"),
							   "microcode")), 0x73);
	json_decref(j);

	/* Turin layout: [fmc, bl, tee, snp, 0, 0, 0, ucode]. */
	_cleanup_free_ uint8_t *tr = load("snp/oak-turin-v5/report.bin", &len);
	assert_int_equal(cvm_snp_report_parse(tr, len, &r, &err), 0);
	assert_int_equal(cvm_snp_report_product(&r), CVM_SNP_PRODUCT_TURIN);
	cvm_snp_tcb_decode(r.reported_tcb, CVM_SNP_PRODUCT_TURIN, &t);
	assert_int_equal(t.fmc, 0);
	assert_int_equal(t.bl, 1);
	assert_int_equal(t.snp, 2);
	assert_int_equal(t.ucode, 0x47);
	assert_true(r.platform_info & (1 << 6)); /* unknown bit accepted */
}

static void test_parse_rejects(void **state)
{
	(void)state;
	size_t len = 0;
	_cleanup_free_ uint8_t *rep = load("snp/virtee-milan/report.bin", &len);
	struct cvm_snp_report r;
	struct cvm_err err = { 0 };
	assert_int_equal(cvm_snp_report_parse(rep, len - 1, &r, &err), -EINVAL);
	assert_int_equal(cvm_snp_report_parse(NULL, 0, &r, &err), -EINVAL);
	uint8_t bad[CVM_SNP_REPORT_SIZE];
	struct { size_t off; uint8_t val; const char *what; } cases[] = {
		{ 0x000, 1, "version" },      { 0x000, 6, "version" },
		{ 0x034, 2, "signature_algo" }, { 0x030, 4, "vmpl" },
		{ 0x00D, 0x80, "policy" },    { 0x04B, 0x80, "flags" },
		{ 0x048, 0x08, "signing_key" }, { 0x04C, 1, "0x4c" },
		{ 0x188, 0x19, "CPUID" },     { 0x190, 1, "0x18b" },
		{ 0x1EB, 1, "reserved" },     { 0x1F8, 1, "mitigation" },
		{ 0x250, 1, "0x208" },        { 0x400, 1, "signature" },
	};
	for (size_t i = 0; i < CVM_ARRAY_SIZE(cases); i++) {
		memcpy(bad, rep, sizeof(bad));
		bad[cases[i].off] = cases[i].val;
		assert_int_equal(cvm_snp_report_parse(bad, sizeof(bad), &r, &err), -EINVAL);
		if (!strstr(err.msg, cases[i].what))
			fprintf(stderr, "case %zu: %s\n", i, err.msg);
		assert_non_null(strstr(err.msg, cases[i].what));
	}
}

/* Bit flips across the signed region of every sample: every 37th byte, and every bit of the
 * measurement, report data, policy and REPORTED_TCB. */
static void test_bit_flips_rejected(void **state)
{
	struct fixture *f = *state;
	for (size_t i = 0; i < CVM_ARRAY_SIZE(samples); i++) {
		const struct sample *s = &samples[i];
		_cleanup_free_ uint8_t *rep = sample_report(s);
		struct cvm_snp_certs certs;
		sample_certs(s, &certs);
		struct cvm_err err = { 0 };
		_cleanup_(cvm_snp_chain_freep) struct cvm_snp_chain *chain = NULL;
		struct cvm_snp_verify_opts opts = { .now = s->now };
		assert_int_equal(cvm_snp_chain_verify(&certs, f->roots, &opts, &chain, &err), 0);
		struct cvm_snp_policy pol;
		cvm_snp_policy_default(&pol);
		pol.allow_debug = true;
		struct cvm_snp_verdict v;
		assert_int_equal(cvm_snp_verify_with_chain(rep, CVM_SNP_REPORT_SIZE, chain, &pol, &v,
							   &err), 0);
		size_t tried = 0;
		for (size_t off = 0; off < CVM_SNP_SIGNED_SIZE; off += 37) {
			rep[off] ^= (uint8_t)(1u << (off % 8));
			assert_int_not_equal(cvm_snp_verify_with_chain(rep, CVM_SNP_REPORT_SIZE, chain,
								       &pol, &v, &err), 0);
			rep[off] ^= (uint8_t)(1u << (off % 8));
			tried++;
		}
		static const struct { size_t off, len; } fields[] = {
			{ 0x090, 48 }, { 0x050, 64 }, { 0x008, 8 }, { 0x180, 8 },
		};
		for (size_t k = 0; k < CVM_ARRAY_SIZE(fields); k++)
			for (size_t bit = 0; bit < fields[k].len * 8; bit++) {
				size_t off = fields[k].off + bit / 8;
				rep[off] ^= (uint8_t)(1u << (bit % 8));
				assert_int_not_equal(cvm_snp_verify_with_chain(rep, CVM_SNP_REPORT_SIZE,
									       chain, &pol, &v, &err),
						     0);
				rep[off] ^= (uint8_t)(1u << (bit % 8));
				tried++;
			}
		/* The signature itself: flip bits of r and s. */
		for (size_t off = 0x2A0; off < 0x2A0 + 48; off += 5) {
			rep[off] ^= 1;
			assert_int_equal(cvm_snp_verify_with_chain(rep, CVM_SNP_REPORT_SIZE, chain, &pol,
								   &v, &err), -EBADMSG);
			rep[off] ^= 1;
			rep[off + 0x48] ^= 0x10;
			assert_int_equal(cvm_snp_verify_with_chain(rep, CVM_SNP_REPORT_SIZE, chain, &pol,
								   &v, &err), -EBADMSG);
			rep[off + 0x48] ^= 0x10;
		}
		assert_true(tried > 1000);
		/* Restored: verifies again (the flips above were the only cause). */
		assert_int_equal(cvm_snp_verify_with_chain(rep, CVM_SNP_REPORT_SIZE, chain, &pol, &v,
							   &err), 0);
		cvm_snp_certs_clear(&certs);
	}
}

static void test_reported_tcb_not_current(void **state)
{
	struct fixture *f = *state;
	/* trustee-milan: CURRENT_TCB != REPORTED_TCB; the VCEK matches REPORTED_TCB. */
	const struct sample *s = &samples[2];
	_cleanup_free_ uint8_t *rep = sample_report(s);
	struct cvm_snp_report r;
	struct cvm_err err = { 0 };
	assert_int_equal(cvm_snp_report_parse(rep, CVM_SNP_REPORT_SIZE, &r, &err), 0);
	assert_int_not_equal(r.current_tcb, r.reported_tcb);
	struct cvm_snp_certs certs;
	sample_certs(s, &certs);
	struct cvm_snp_verdict v;
	assert_int_equal(cvm_snp_verify(rep, CVM_SNP_REPORT_SIZE, &certs, f->roots, NULL, NULL, &v,
					&err), 0);
	/* Put CURRENT_TCB into REPORTED_TCB: the VCEK TCB check names the mismatch. */
	memcpy(rep + 0x180, rep + 0x38, 8);
	assert_int_equal(cvm_snp_verify(rep, CVM_SNP_REPORT_SIZE, &certs, f->roots, NULL, NULL, &v,
					&err), -EBADMSG);
	assert_non_null(strstr(err.msg, "snp.vek.tcb"));
	/* Provisional firmware refused when the policy says so. */
	_cleanup_free_ uint8_t *orig = sample_report(s);
	struct cvm_snp_policy pol;
	cvm_snp_policy_default(&pol);
	pol.permit_provisional_firmware = false;
	assert_int_equal(cvm_snp_verify(orig, CVM_SNP_REPORT_SIZE, &certs, f->roots, NULL, &pol, &v,
					&err), -EPERM);
	assert_non_null(strstr(err.msg, "provisional"));
	cvm_snp_certs_clear(&certs);
}

static void test_wrong_chain_rejected(void **state)
{
	struct fixture *f = *state;
	const struct sample *milan = &samples[0];
	_cleanup_free_ uint8_t *rep = sample_report(milan);
	struct cvm_snp_certs certs;
	sample_certs(milan, &certs);
	struct cvm_err err = { 0 };
	struct cvm_snp_verdict v;

	/* Genoa ASK + ARK offered for a Milan VCEK. */
	size_t al = 0, kl = 0;
	_cleanup_free_ uint8_t *ark = load("amd/genoa/ark.pem", &al);
	_cleanup_free_ uint8_t *ask = load("amd/genoa/ask.pem", &kl);
	struct cvm_snp_certs wrong = { 0 };
	assert_int_equal(cvm_snp_certs_add(&wrong, ark, al, &err), 0);
	assert_int_equal(cvm_snp_certs_add(&wrong, ask, kl, &err), 0);
	wrong.vek = certs.vek;
	X509_up_ref(certs.vek);
	assert_int_equal(cvm_snp_verify(rep, CVM_SNP_REPORT_SIZE, &wrong, f->roots, NULL, NULL, &v,
					&err), -EBADMSG);
	assert_non_null(strstr(err.msg, "product"));
	/* Only the Genoa ASK (ARK from the roots): the ASK is not signed by ARK-Milan. */
	X509_free(wrong.ark);
	wrong.ark = NULL;
	assert_int_equal(cvm_snp_verify(rep, CVM_SNP_REPORT_SIZE, &wrong, f->roots, NULL, NULL, &v,
					&err), -EBADMSG);
	cvm_snp_certs_clear(&wrong);

	/* Expected product Genoa: refused. */
	struct cvm_snp_verify_opts opts = { .product = CVM_SNP_PRODUCT_GENOA };
	assert_int_equal(cvm_snp_verify(rep, CVM_SNP_REPORT_SIZE, &certs, f->roots, &opts, NULL, &v,
					&err), -EBADMSG);

	/* No trusted roots at all. */
	_cleanup_roots_ struct cvm_attest_roots *empty = NULL;
	assert_int_equal(cvm_attest_roots_new_empty(&empty, &err), 0);
	assert_int_equal(cvm_snp_verify(rep, CVM_SNP_REPORT_SIZE, &certs, empty, NULL, NULL, &v,
					&err), -EBADMSG);
	/* A root added with the wrong pinned fingerprint is refused; the right one works. */
	_cleanup_free_ uint8_t *mark = load("amd/milan/ark.pem", &al);
	_cleanup_free_ uint8_t *mask = load("amd/milan/ask.pem", &kl);
	assert_int_equal(cvm_attest_roots_add(empty, CVM_SNP_PRODUCT_MILAN, mark, al, mask, kl,
					      "4c6598d19c18719c5dfd4a7d335f674e5bfe1d8f800cea2cf270c10d103db2f1",
					      false, &err), -EBADMSG);
	assert_int_equal(cvm_snp_verify(rep, CVM_SNP_REPORT_SIZE, &certs, empty, NULL, NULL, &v,
					&err), -EBADMSG);
	assert_int_equal(cvm_attest_roots_add(empty, CVM_SNP_PRODUCT_MILAN, mark, al, mask, kl,
					      "69d063b45344d26a2e94e1f4210de49ef555308287d4c174445c95639a540bcd",
					      false, &err), 0);
	assert_int_equal(cvm_snp_verify(rep, CVM_SNP_REPORT_SIZE, &certs, empty, NULL, NULL, &v,
					&err), 0);

	/* A certificate that expired: verify at a time after the VCEK's notAfter. */
	opts = (struct cvm_snp_verify_opts){ .now = 2000000000 + 315360000LL };
	assert_int_equal(cvm_snp_verify(rep, CVM_SNP_REPORT_SIZE, &certs, f->roots, &opts, NULL, &v,
					&err), -EBADMSG);
	assert_non_null(strstr(err.msg, "expired"));
	opts.now = 1500000000; /* before ARK-Milan existed */
	assert_int_equal(cvm_snp_verify(rep, CVM_SNP_REPORT_SIZE, &certs, f->roots, &opts, NULL, &v,
					&err), -EBADMSG);
	assert_non_null(strstr(err.msg, "not yet valid"));

	/* A VEK from another chip: hwID differs from CHIP_ID (signature would fail as well). */
	struct cvm_snp_certs other;
	sample_certs(&samples[2], &other);
	assert_int_equal(cvm_snp_verify(rep, CVM_SNP_REPORT_SIZE, &other, f->roots, NULL, NULL, &v,
					&err), -EBADMSG);
	cvm_snp_certs_clear(&other);
	/* A flipped byte in the VCEK DER breaks the chain. */
	unsigned char *der = NULL;
	int dl = i2d_X509(certs.vek, &der);
	assert_true(dl > 200);
	der[dl - 20] ^= 1;
	struct cvm_snp_certs broken = { 0 };
	if (cvm_snp_certs_add(&broken, der, (size_t)dl, &err) == 0) {
		assert_int_equal(cvm_snp_verify(rep, CVM_SNP_REPORT_SIZE, &broken, f->roots, NULL,
						NULL, &v, &err), -EBADMSG);
	}
	cvm_snp_certs_clear(&broken);
	OPENSSL_free(der);
	cvm_snp_certs_clear(&certs);
}

static void test_signer_mismatch(void **state)
{
	struct fixture *f = *state;
	/* A VLEK report checked with a VCEK, and a VCEK report claiming a VLEK signer. */
	_cleanup_free_ uint8_t *vlek_rep = sample_report(&samples[3]);
	struct cvm_snp_certs vcek;
	sample_certs(&samples[0], &vcek);
	struct cvm_snp_verdict v;
	struct cvm_err err = { 0 };
	assert_int_equal(cvm_snp_verify(vlek_rep, CVM_SNP_REPORT_SIZE, &vcek, f->roots, NULL, NULL,
					&v, &err), -EBADMSG);
	assert_non_null(strstr(err.msg, "signing_key"));
	/* VLEK forbidden by policy. */
	struct cvm_snp_certs vlek;
	sample_certs(&samples[3], &vlek);
	struct cvm_snp_policy pol;
	cvm_snp_policy_default(&pol);
	pol.allow_vlek = false;
	struct cvm_snp_verify_opts opts = { .now = VLEK_TIME };
	assert_int_equal(cvm_snp_verify(vlek_rep, CVM_SNP_REPORT_SIZE, &vlek, f->roots, &opts, &pol,
					&v, &err), -EPERM);
	/* Today the VLEK (one-year validity) has expired. */
	assert_int_equal(cvm_snp_verify(vlek_rep, CVM_SNP_REPORT_SIZE, &vlek, f->roots, NULL, NULL,
					&v, &err), -EBADMSG);
	assert_non_null(strstr(err.msg, "expired"));
	cvm_snp_certs_clear(&vlek);
	cvm_snp_certs_clear(&vcek);
}

static void test_vek_extensions(void **state)
{
	(void)state;
	struct cvm_err err = { 0 };
	size_t len = 0;
	const char *names[] = { "snp/test-vcek-invalid-legacy.der", "snp/test-vcek-invalid-new.der" };
	for (size_t i = 0; i < 2; i++) {
		_cleanup_free_ uint8_t *der = load(names[i], &len);
		struct cvm_snp_vek_ext x;
		assert_int_equal(cvm_snp_vek_ext_parse(der, len, &x, &err), 0);
		assert_int_equal(x.hwid_len, 64);
		for (int k = 0; k < 64; k++)
			assert_int_equal(x.hwid[k], k);
		/* Truncated DER fails. */
		assert_int_equal(cvm_snp_vek_ext_parse(der, len - 1, &x, &err), -EINVAL);
	}
	_cleanup_free_ uint8_t *t = load("snp/oak-turin-v5/vcek.der", &len);
	struct cvm_snp_vek_ext x;
	assert_int_equal(cvm_snp_vek_ext_parse(t, len, &x, &err), 0);
	assert_string_equal(x.product_name, "Turin");
	assert_int_equal(x.struct_version, 1);
	assert_true(x.has_fmc);
	assert_int_equal(x.hwid_len, 8);
	assert_int_equal(x.tcb.ucode, 0x47);
	_cleanup_free_ uint8_t *vl = load("snp/trustee-milan-vlek/vlek.der", &len);
	assert_int_equal(cvm_snp_vek_ext_parse(vl, len, &x, &err), 0);
	assert_true(x.is_vlek);
	assert_int_equal(x.hwid_len, 0);
	assert_int_equal(x.tcb.ucode, 0xd9); /* encoded 02 02 00 d9 */
	_cleanup_free_ uint8_t *m = load("snp/virtee-milan/vcek.der", &len);
	assert_int_equal(cvm_snp_vek_ext_parse(m, len, &x, &err), 0);
	assert_string_equal(x.product_name, "Milan-B0");
	assert_int_equal(cvm_snp_product_from_name(x.product_name), CVM_SNP_PRODUCT_MILAN);
	assert_int_equal(cvm_snp_product_from_name("Milanese"), CVM_SNP_PRODUCT_UNKNOWN);
}

/* Build an extended-report certificate table holding VCEK, ASK and ARK DER. */
static size_t build_table(uint8_t *buf, size_t cap, X509 *const *certs, const char *const *guids,
			  size_t n)
{
	size_t off = (n + 1) * 24;
	memset(buf, 0, cap);
	for (size_t i = 0; i < n; i++) {
		unsigned char *der = NULL;
		int dl = i2d_X509(certs[i], &der);
		assert_true(dl > 0 && off + (size_t)dl <= cap);
		struct cvm_err err = { 0 };
		char hex[33];
		size_t h = 0;
		for (const char *p = guids[i]; *p; p++)
			if (*p != '-')
				hex[h++] = *p;
		hex[h] = '\0';
		assert_int_equal(cvm_hex_decode_fixed(hex, buf + i * 24, 16, "guid", &err), 0);
		for (int b = 0; b < 4; b++) {
			buf[i * 24 + 16 + b] = (uint8_t)(off >> (8 * b));
			buf[i * 24 + 20 + b] = (uint8_t)((size_t)dl >> (8 * b));
		}
		memcpy(buf + off, der, (size_t)dl);
		off += (size_t)dl;
		OPENSSL_free(der);
	}
	return off;
}

static void test_cert_table(void **state)
{
	struct fixture *f = *state;
	const struct sample *s = &samples[7]; /* Azure Milan: vcek.pem has VCEK + ASK + ARK */
	struct cvm_snp_certs all;
	sample_certs(s, &all);
	assert_non_null(all.ask);
	assert_non_null(all.ark);
	X509 *list[] = { all.vek, all.ask, all.ark };
	const char *guids[] = { "63da758d-e664-4564-adc5-f4b93be8accd",
				"4ab7b379-bbac-4fe4-a02f-05aef327c782",
				"c0b406a4-a803-4952-9743-3fb6014cd0ae" };
	static uint8_t table[16384];
	size_t len = build_table(table, sizeof(table), list, guids, 3);
	struct cvm_snp_certs got = { 0 };
	struct cvm_err err = { 0 };
	assert_int_equal(cvm_snp_certs_from_table(&got, table, len, &err), 0);
	assert_int_equal(X509_cmp(got.vek, all.vek), 0);
	assert_int_equal(X509_cmp(got.ask, all.ask), 0);
	assert_int_equal(X509_cmp(got.ark, all.ark), 0);
	_cleanup_free_ uint8_t *rep = sample_report(s);
	struct cvm_snp_verdict v;
	assert_int_equal(cvm_snp_verify(rep, CVM_SNP_REPORT_SIZE, &got, f->roots, NULL, NULL, &v,
					&err), 0);
	cvm_snp_certs_clear(&got);
	/* Failure twins: entry pointing outside, no terminator, overlapping data. */
	assert_int_equal(cvm_snp_certs_from_table(&got, table, 24 * 3, &err), -EINVAL);
	assert_int_equal(cvm_snp_certs_from_table(&got, table, len - 10, &err), -EINVAL);
	uint8_t saved = table[16];
	table[16] = 4;
	table[17] = table[18] = table[19] = 0;
	assert_int_equal(cvm_snp_certs_from_table(&got, table, len, &err), -EINVAL);
	table[16] = saved;
	cvm_snp_certs_clear(&got);
	cvm_snp_certs_clear(&all);
}

static void test_kds_dir(void **state)
{
	struct fixture *f = *state;
	const struct sample *s = &samples[6]; /* Turin: 8-byte hwid, fmcSPL in the path */
	_cleanup_free_ uint8_t *rep = sample_report(s);
	struct cvm_snp_report r;
	struct cvm_err err = { 0 };
	assert_int_equal(cvm_snp_report_parse(rep, CVM_SNP_REPORT_SIZE, &r, &err), 0);
	char tmpl[] = "/tmp/cvm-kds-XXXXXX";
	assert_non_null(mkdtemp(tmpl));
	_cleanup_free_ char *rel = cvm_snp_kds_vcek_path(&r, CVM_SNP_PRODUCT_TURIN);
	assert_string_equal(rel, "vcek/v1/Turin/3b42092f69c656d3?fmcSPL=0&blSPL=1&teeSPL=0&snpSPL=2&ucodeSPL=71");
	_cleanup_free_ char *path = cvm_path_join(tmpl, rel);
	_cleanup_free_ char *d = cvm_path_join(tmpl, "vcek/v1/Turin");
	assert_int_equal(cvm_mkdir_p(d, 0700, &err), 0);
	size_t len = 0;
	_cleanup_free_ uint8_t *vcek = load(s->cert, &len);
	struct cvm_snp_files files = { .report = NULL, .certs_dir = tmpl };
	char rpath[256];
	snprintf(rpath, sizeof(rpath), "%s/report.bin", tmpl);
	assert_int_equal(cvm_file_write_atomic(rpath, rep, CVM_SNP_REPORT_SIZE, 0600, &err), 0);
	files.report = rpath;
	struct cvm_snp_verdict v;
	/* Missing VCEK file: not found. */
	assert_int_equal(cvm_snp_verify_files(&files, f->roots, NULL, NULL, &v, &err), -ENOENT);
	assert_int_equal(cvm_file_write_atomic(path, vcek, len, 0600, &err), 0);
	assert_int_equal(cvm_snp_verify_files(&files, f->roots, NULL, NULL, &v, &err), 0);
	assert_int_equal(v.product, CVM_SNP_PRODUCT_TURIN);
	unlink(path);
	unlink(rpath);
	rmdir(d);
	char p2[300];
	snprintf(p2, sizeof(p2), "%s/vcek/v1", tmpl);
	rmdir(p2);
	snprintf(p2, sizeof(p2), "%s/vcek", tmpl);
	rmdir(p2);
	rmdir(tmpl);
}

static void test_policy_knobs(void **state)
{
	struct fixture *f = *state;
	const struct sample *s = &samples[0];
	_cleanup_free_ uint8_t *rep = sample_report(s);
	struct cvm_snp_certs certs;
	sample_certs(s, &certs);
	struct cvm_err err = { 0 };
	_cleanup_(cvm_snp_chain_freep) struct cvm_snp_chain *chain = NULL;
	assert_int_equal(cvm_snp_chain_verify(&certs, f->roots, NULL, &chain, &err), 0);
	struct cvm_snp_verdict v;
	assert_int_equal(cvm_snp_verify_with_chain(rep, CVM_SNP_REPORT_SIZE, chain, NULL, &v, &err), 0);
	struct cvm_snp_policy p;
#define EXPECT(setup, rc_expected, word) do { \
		cvm_snp_policy_default(&p); setup; \
		int _rc = cvm_snp_policy_check(&v, &p, &err); \
		assert_int_equal(_rc, rc_expected); \
		if (_rc) assert_non_null(strstr(err.msg, word)); \
	} while (0)
	EXPECT((void)0, 0, "");
	EXPECT(p.vmpl = 1, -EPERM, "vmpl");
	EXPECT(p.vmpl = 0, 0, "");
	EXPECT(p.allow_smt = false, -EPERM, "smt");
	EXPECT(p.require_single_socket = true, -EPERM, "single_socket");
	EXPECT(p.min_abi_major = 1, -EPERM, "abi");
	EXPECT(p.allow_platform_smt = false, -EPERM, "platform_info.smt");
	EXPECT(p.require_platform_ecc = true, -EPERM, "ecc");
	EXPECT(p.min_tcb.snp = 9, -EPERM, "snp.tcb");
	EXPECT(p.min_tcb.snp = 8, 0, "");
	EXPECT(p.min_launch_tcb.ucode = 0x74, -EPERM, "launch_tcb");
	EXPECT(p.min_build = 5, -EPERM, "build");
	EXPECT(p.min_version = 0x0135, -EPERM, "version");
	EXPECT(p.min_version = 0x0134, 0, "");
	EXPECT(p.min_guest_svn = 1, -EPERM, "guest_svn");
	EXPECT(p.product = CVM_SNP_PRODUCT_GENOA, -EPERM, "product");
	EXPECT(p.product = CVM_SNP_PRODUCT_MILAN, 0, "");
	EXPECT(p.require_id_block = true, -EPERM, "id_block");
	EXPECT(p.require_author_key = true, -EPERM, "author");
	EXPECT((p.check_report_data = true, memset(p.report_data, 0, 64)), -EPERM, "report_data");
	EXPECT((p.check_report_data = true, memcpy(p.report_data, v.report.report_data, 64)), 0, "");
	EXPECT(p.check_host_data = true, 0, "");
	EXPECT((p.check_host_data = true, p.host_data[0] = 1), -EPERM, "host_data");
	EXPECT((p.check_family_id = true, p.family_id[3] = 1), -EPERM, "family_id");
	EXPECT((p.check_image_id = true, p.image_id[3] = 1), -EPERM, "image_id");
	EXPECT((p.check_report_id = true, p.report_id[3] ^= 1), -EPERM, "report_id");
	EXPECT((p.check_report_id_ma = true, p.report_id_ma[3] ^= 1), -EPERM, "report_id_ma");
	EXPECT(p.min_current_mit_vector = 1, -EPERM, "mit");
	EXPECT(p.min_launch_mit_vector = 1, -EPERM, "mit");
	const uint8_t(*mlist)[48] = (const uint8_t(*)[48])v.report.measurement;
	EXPECT((p.measurements = mlist, p.n_measurements = 1), 0, "");
	const uint8_t(*ids)[48] = (const uint8_t(*)[48])v.report.id_key_digest;
	EXPECT((p.require_id_block = true, p.id_key_digests = ids, p.n_id_key_digests = 1), 0, "");
	uint8_t other[2][48] = { { 0 } };
	other[1][0] = 1;
	EXPECT((p.measurements = (const uint8_t(*)[48])other, p.n_measurements = 2), -EPERM,
	       "measurement");
	const uint8_t(*chips)[64] = (const uint8_t(*)[64])v.report.chip_id;
	EXPECT((p.chip_ids = chips, p.n_chip_ids = 1), 0, "");
	uint8_t nochip[1][64] = { { 1 } };
	EXPECT((p.chip_ids = (const uint8_t(*)[64])nochip, p.n_chip_ids = 1), -EPERM, "chip_id");
	v.emulated = true;
	EXPECT((void)0, -EPERM, "emulat");
	EXPECT(p.allow_emulated = true, 0, "");
#undef EXPECT
	cvm_snp_certs_clear(&certs);
}

static void test_policy_json(void **state)
{
	(void)state;
	struct cvm_err err = { 0 };
	json_error_t je;
	json_t *j = json_loads("{\"allow_debug\": true, \"vmpl\": 0, \"min_tcb\": {\"snp\": 8},"
			       "\"measurements\": [\"7a1e5c266c0108dbc9bb94fa926951320940915d0aafb42464bd88b579ea158d3e1a0dc39b2c60bd95b9c480cd81841f\"],"
			       "\"product\": \"Milan\", \"host_data\": \"" 
			       "0000000000000000000000000000000000000000000000000000000000000000\"}",
			       0, &je);
	assert_non_null(j);
	struct cvm_snp_policy p;
	struct cvm_snp_policy_store *st = NULL;
	assert_int_equal(cvm_snp_policy_from_json(j, &p, &st, &err), 0);
	assert_true(p.allow_debug);
	assert_int_equal(p.vmpl, 0);
	assert_int_equal(p.min_tcb.snp, 8);
	assert_int_equal(p.n_measurements, 1);
	assert_int_equal(p.measurements[0][0], 0x7a);
	assert_true(p.check_host_data);
	assert_int_equal(p.product, CVM_SNP_PRODUCT_MILAN);
	cvm_snp_policy_store_free(st);
	json_decref(j);
	const char *bad[] = { "{\"allow_debug\": 1}", "{\"vmpl\": 4}", "{\"nope\": true}",
			      "{\"min_tcb\": {\"xyz\": 1}}", "{\"measurements\": [\"00\"]}",
			      "{\"product\": \"Naples\"}", "[]" };
	for (size_t i = 0; i < CVM_ARRAY_SIZE(bad); i++) {
		j = json_loads(bad[i], 0, &je);
		assert_non_null(j);
		assert_int_equal(cvm_snp_policy_from_json(j, &p, &st, &err), -EINVAL);
		json_decref(j);
	}
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_real_samples_verify),
		cmocka_unit_test(test_known_fields),
		cmocka_unit_test(test_parse_rejects),
		cmocka_unit_test(test_bit_flips_rejected),
		cmocka_unit_test(test_reported_tcb_not_current),
		cmocka_unit_test(test_wrong_chain_rejected),
		cmocka_unit_test(test_signer_mismatch),
		cmocka_unit_test(test_vek_extensions),
		cmocka_unit_test(test_cert_table),
		cmocka_unit_test(test_kds_dir),
		cmocka_unit_test(test_policy_knobs),
		cmocka_unit_test(test_policy_json),
	};
	evidence_dir();
	return cmocka_run_group_tests(tests, setup, teardown);
}
