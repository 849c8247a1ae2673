/* SPDX-License-Identifier: Apache-2.0 */
/* TEE emulator: reports in the hardware layout that verify only when the emulator root is
 * configured by fingerprint, are refused by the default policy, and carry emulated=true. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>
#include <cmocka.h>

#include <opencvm/attest.h>

#include <openssl/ec.h>
#include <openssl/pem.h>

struct fixture {
	char genoa[64];
	char turin[64];
	char fp_genoa[65];
	char fp_turin[65];
};

static int setup(void **state)
{
	struct fixture *f = calloc(1, sizeof(*f));
	struct cvm_err err = { 0 };
	if (!f)
		return -1;
	char base[] = "/tmp/cvm-emu-XXXXXX";
	if (!mkdtemp(base))
		return -1;
	snprintf(f->genoa, sizeof(f->genoa), "%s/genoa", base);
	snprintf(f->turin, sizeof(f->turin), "%s/turin", base);
	struct cvm_tee_emu_params p = { .product = CVM_SNP_PRODUCT_GENOA,
					.tcb = { .bl = 10, .tee = 0, .snp = 25, .ucode = 0xd5 } };
	for (int i = 0; i < 64; i++)
		p.chip_id[i] = (uint8_t)(0xa0 + i);
	if (cvm_tee_emu_init(f->genoa, &p, f->fp_genoa, &err) < 0) {
		fprintf(stderr, "init: %s\n", err.msg);
		return -1;
	}
	p.product = CVM_SNP_PRODUCT_TURIN;
	p.tcb = (struct cvm_snp_tcb){ .fmc = 1, .bl = 1, .tee = 1, .snp = 4, .ucode = 82 };
	memset(p.chip_id + 8, 0, 56);
	if (cvm_tee_emu_init(f->turin, &p, f->fp_turin, &err) < 0) {
		fprintf(stderr, "init: %s\n", err.msg);
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
	char cmd[256];
	char *slash = strrchr(f->genoa, '/');
	*slash = '\0';
	snprintf(cmd, sizeof(cmd), "rm -rf '%s'", f->genoa);
	if (system(cmd) != 0)
		fprintf(stderr, "cleanup of %s failed\n", f->genoa);
	free(f);
	return 0;
}

static void make_report(const char *dir, uint8_t rep[CVM_SNP_REPORT_SIZE])
{
	struct cvm_tee_emu_report_in in = { .vmpl = 0 };
	memset(in.report_data, 0x11, 64);
	memset(in.measurement, 0x22, 48);
	memset(in.host_data, 0x33, 32);
	struct cvm_err err = { 0 };
	assert_int_equal(cvm_tee_emu_snp_report(dir, &in, rep, &err), 0);
}

static void emu_certs(const char *dir, struct cvm_snp_certs *c)
{
	char path[256];
	struct cvm_err err = { 0 };
	memset(c, 0, sizeof(*c));
	snprintf(path, sizeof(path), "%s/vcek.pem", dir);
	assert_int_equal(cvm_snp_certs_add_file(c, path, &err), 0);
}

static void test_trust_only_with_fingerprint(void **state)
{
	struct fixture *f = *state;
	uint8_t rep[CVM_SNP_REPORT_SIZE];
	make_report(f->genoa, rep);
	struct cvm_snp_certs certs;
	emu_certs(f->genoa, &certs);
	struct cvm_err err = { 0 };
	struct cvm_snp_verdict v;

	/* Built-in AMD roots only: the emulator chain is not trusted. */
	_cleanup_roots_ struct cvm_attest_roots *roots = NULL;
	assert_int_equal(cvm_attest_roots_new_builtin(&roots, &err), 0);
	assert_int_equal(cvm_snp_verify(rep, sizeof(rep), &certs, roots, NULL, NULL, &v, &err),
			 -EBADMSG);
	/* Wrong fingerprint (the Turin emulator's): refused when adding. */
	assert_int_equal(cvm_attest_roots_add_emulator(roots, f->genoa, f->fp_turin, &err), -EBADMSG);
	assert_int_equal(cvm_snp_verify(rep, sizeof(rep), &certs, roots, NULL, NULL, &v, &err),
			 -EBADMSG);
	/* Right fingerprint: the chain verifies, the default policy refuses emulated evidence. */
	char fp[65];
	assert_int_equal(cvm_tee_emu_fingerprint(f->genoa, fp, &err), 0);
	assert_string_equal(fp, f->fp_genoa);
	assert_int_equal(cvm_attest_roots_add_emulator(roots, f->genoa, f->fp_genoa, &err), 0);
	assert_int_equal(cvm_snp_verify(rep, sizeof(rep), &certs, roots, NULL, NULL, &v, &err),
			 -EPERM);
	assert_non_null(strstr(err.msg, "emulat"));
	struct cvm_snp_policy pol;
	cvm_snp_policy_default(&pol);
	pol.allow_emulated = true;
	assert_int_equal(cvm_snp_verify(rep, sizeof(rep), &certs, roots, NULL, &pol, &v, &err), 0);
	assert_true(v.emulated);
	assert_int_equal(v.product, CVM_SNP_PRODUCT_GENOA);
	assert_int_equal(v.report.version, 3);
	assert_int_equal(v.reported_tcb.snp, 25);
	assert_int_equal(v.reported_tcb.ucode, 0xd5);
	assert_int_equal(v.vek.tcb.ucode, 0xd5); /* DER INTEGER with a leading zero */
	assert_int_equal(v.report.report_data[0], 0x11);
	assert_int_equal(v.report.chip_id[63], 0xa0 + 63);
	/* Real AMD evidence still verifies with the same roots and is not marked emulated. */
	cvm_snp_certs_clear(&certs);

	/* Byte-identical layout: parse + serialize reproduces the signed bytes. */
	struct cvm_snp_report r;
	assert_int_equal(cvm_snp_report_parse(rep, sizeof(rep), &r, &err), 0);
	uint8_t again[CVM_SNP_REPORT_SIZE];
	cvm_snp_report_serialize(&r, again);
	assert_memory_equal(again, rep, sizeof(rep));
	assert_int_equal(cvm_snp_report_product(&r), CVM_SNP_PRODUCT_GENOA);
}

static void test_turin_and_kds_layout(void **state)
{
	struct fixture *f = *state;
	uint8_t rep[CVM_SNP_REPORT_SIZE];
	make_report(f->turin, rep);
	struct cvm_err err = { 0 };
	_cleanup_roots_ struct cvm_attest_roots *roots = NULL;
	assert_int_equal(cvm_attest_roots_new_empty(&roots, &err), 0);
	assert_int_equal(cvm_attest_roots_add_emulator(roots, f->turin, f->fp_turin, &err), 0);
	char rpath[128];
	snprintf(rpath, sizeof(rpath), "%s/report.bin", f->turin);
	assert_int_equal(cvm_file_write_atomic(rpath, rep, sizeof(rep), 0600, &err), 0);
	struct cvm_snp_files files = { .report = rpath, .certs_dir = f->turin };
	struct cvm_snp_policy pol;
	cvm_snp_policy_default(&pol);
	pol.allow_emulated = true;
	struct cvm_snp_verdict v;
	assert_int_equal(cvm_snp_verify_files(&files, roots, NULL, &pol, &v, &err), 0);
	assert_int_equal(v.product, CVM_SNP_PRODUCT_TURIN);
	assert_int_equal(v.report.version, 5);
	assert_int_equal(v.reported_tcb.fmc, 1);
	assert_int_equal(v.vek.hwid_len, 8);
	assert_true(v.emulated);
	/* The Genoa emulator's VCEK does not verify a Turin report. */
	struct cvm_snp_certs certs;
	emu_certs(f->genoa, &certs);
	assert_int_not_equal(cvm_snp_verify(rep, sizeof(rep), &certs, roots, NULL, &pol, &v, &err), 0);
	cvm_snp_certs_clear(&certs);
	unlink(rpath);
}

/* A correctly signed report whose REPORTED_TCB differs from the VCEK's TCB is refused. */
static void test_vcek_tcb_mismatch(void **state)
{
	struct fixture *f = *state;
	uint8_t rep[CVM_SNP_REPORT_SIZE];
	make_report(f->genoa, rep);
	rep[0x186] += 1; /* SNP SPL byte of REPORTED_TCB (Genoa layout) */
	char path[128];
	snprintf(path, sizeof(path), "%s/vcek-key.pem", f->genoa);
	FILE *fp = fopen(path, "r");
	assert_non_null(fp);
	EVP_PKEY *key = PEM_read_PrivateKey(fp, NULL, NULL, NULL);
	fclose(fp);
	assert_non_null(key);
	EVP_MD_CTX *md = EVP_MD_CTX_new();
	uint8_t der[160];
	size_t dl = sizeof(der);
	assert_int_equal(EVP_DigestSignInit(md, NULL, EVP_sha384(), NULL, key), 1);
	assert_int_equal(EVP_DigestSign(md, der, &dl, rep, CVM_SNP_SIGNED_SIZE), 1);
	const unsigned char *p = der;
	ECDSA_SIG *sig = d2i_ECDSA_SIG(NULL, &p, (long)dl);
	const BIGNUM *r, *s;
	ECDSA_SIG_get0(sig, &r, &s);
	assert_int_equal(BN_bn2lebinpad(r, rep + 0x2A0, 72), 72);
	assert_int_equal(BN_bn2lebinpad(s, rep + 0x2E8, 72), 72);
	ECDSA_SIG_free(sig);
	EVP_MD_CTX_free(md);
	EVP_PKEY_free(key);

	struct cvm_err err = { 0 };
	_cleanup_roots_ struct cvm_attest_roots *roots = NULL;
	assert_int_equal(cvm_attest_roots_new_empty(&roots, &err), 0);
	assert_int_equal(cvm_attest_roots_add_emulator(roots, f->genoa, f->fp_genoa, &err), 0);
	struct cvm_snp_certs certs;
	emu_certs(f->genoa, &certs);
	struct cvm_snp_policy pol;
	cvm_snp_policy_default(&pol);
	pol.allow_emulated = true;
	struct cvm_snp_verdict v;
	assert_int_equal(cvm_snp_verify(rep, sizeof(rep), &certs, roots, NULL, &pol, &v, &err),
			 -EBADMSG);
	assert_non_null(strstr(err.msg, "snp.vek.tcb"));
	cvm_snp_certs_clear(&certs);
}

/* CRLs: signed by the ARK, honored when they revoke the VCEK, refused from another ARK. */
static void test_crl(void **state)
{
	struct fixture *f = *state;
	struct cvm_err err = { 0 };
	uint8_t rep[CVM_SNP_REPORT_SIZE];
	make_report(f->genoa, rep);
	char rpath[128], crl[128];
	snprintf(rpath, sizeof(rpath), "%s/report.bin", f->genoa);
	snprintf(crl, sizeof(crl), "%s/crl.pem", f->genoa);
	assert_int_equal(cvm_file_write_atomic(rpath, rep, sizeof(rep), 0600, &err), 0);
	_cleanup_roots_ struct cvm_attest_roots *roots = NULL;
	assert_int_equal(cvm_attest_roots_new_empty(&roots, &err), 0);
	assert_int_equal(cvm_attest_roots_add_emulator(roots, f->genoa, f->fp_genoa, &err), 0);
	struct cvm_snp_policy pol;
	cvm_snp_policy_default(&pol);
	pol.allow_emulated = true;
	struct cvm_snp_files files = { .report = rpath, .certs_dir = f->genoa, .crl = crl };
	struct cvm_snp_verdict v;
	assert_int_equal(cvm_tee_emu_crl(f->genoa, false, &err), 0);
	assert_int_equal(cvm_snp_verify_files(&files, roots, NULL, &pol, &v, &err), 0);
	assert_int_equal(cvm_tee_emu_crl(f->genoa, true, &err), 0);
	assert_int_equal(cvm_snp_verify_files(&files, roots, NULL, &pol, &v, &err), -EBADMSG);
	assert_non_null(strstr(err.msg, "revoked"));
	/* The Turin emulator's CRL is not signed by the Genoa ARK. */
	assert_int_equal(cvm_tee_emu_crl(f->turin, true, &err), 0);
	snprintf(crl, sizeof(crl), "%s/crl.pem", f->turin);
	assert_int_equal(cvm_snp_verify_files(&files, roots, NULL, &pol, &v, &err), -EBADMSG);
	assert_non_null(strstr(err.msg, "crl"));
	/* Not a CRL at all. */
	files.crl = rpath;
	assert_int_equal(cvm_snp_verify_files(&files, roots, NULL, &pol, &v, &err), -EINVAL);
	unlink(rpath);
}

/* TDX: quotes verify only with the emulator root configured by fingerprint. */
static void test_tdx_emulator(void **state)
{
	struct fixture *f = *state;
	struct cvm_err err = { 0 };
	char dir[96];
	snprintf(dir, sizeof(dir), "%s-tdx", f->genoa);
	struct cvm_tee_emu_tdx_params p = { .fmspc = { 0x50, 0x80, 0x6f, 0, 0, 0 }, .pcesvn = 13 };
	memset(p.cpusvn, 3, 16);
	memset(p.tee_tcb_svn, 2, 16);
	memset(p.mrseam, 0x5e, 48);
	char fp[65];
	assert_int_equal(cvm_tee_emu_tdx_init(dir, &p, fp, &err), 0);
	struct cvm_tee_emu_tdx_in in = { .xfam = 0x61ae7, .td_attributes = 0x10000000 };
	memset(in.report_data, 0x42, 64);
	memset(in.mrtd, 0x7d, 48);
	memset(in.rtmr[3], 0x33, 48);
	struct cvm_buf q = { 0 };
	assert_int_equal(cvm_tee_emu_tdx_quote(dir, &in, &q, &err), 0);

	struct cvm_tdx_verdict v;
	/* Intel's root only: refused. */
	assert_int_equal(cvm_tdx_verify(q.data, q.len, NULL, NULL, &v, &err), -EBADMSG);
	/* Wrong fingerprint: the root is not loaded. */
	X509 *root = NULL;
	assert_int_equal(cvm_tee_emu_tdx_root(dir, f->fp_genoa, &root, &err), -EBADMSG);
	assert_int_equal(cvm_tee_emu_tdx_root(dir, fp, &root, &err), 0);
	struct cvm_tdx_verify_opts o = { .emulator_root = root };
	/* Default policy refuses emulated quotes; allowed explicitly they verify. */
	assert_int_equal(cvm_tdx_verify(q.data, q.len, &o, NULL, &v, &err), -EPERM);
	assert_non_null(strstr(err.msg, "emulat"));
	struct cvm_tdx_policy pol;
	cvm_tdx_policy_default(&pol);
	pol.allow_emulated = true;
	int rc = cvm_tdx_verify(q.data, q.len, &o, &pol, &v, &err);
	if (rc)
		fprintf(stderr, "%s\n", err.msg);
	assert_int_equal(rc, 0);
	assert_true(v.emulated);
	assert_int_equal(v.quote.version, 4);
	assert_int_equal(v.quote.body.xfam, 0x61ae7);
	assert_int_equal(v.quote.body.rtmr[3][0], 0x33);
	assert_int_equal(v.quote.body.report_data[63], 0x42);
	assert_int_equal(v.pck_pcesvn, 13);
	assert_int_equal(v.pck_cpusvn[5], 3);
	assert_int_equal(v.fmspc[0], 0x50);
	assert_int_equal(v.quote.quote_len, q.len);
	/* Tampering is caught like on real quotes: everything before the PEM chain. (The chain's
	 * copy of the root is not used: the configured root is, so bytes there may change.) */
	size_t chain_off = v.quote.pck_chain_off;
	for (size_t off = 0; off < chain_off; off += 97) {
		q.data[off] ^= 0x01;
		assert_int_not_equal(cvm_tdx_verify(q.data, q.len, &o, &pol, &v, &err), 0);
		q.data[off] ^= 0x01;
	}
	/* The same through service mode: the host's MRTD, the guest's report data. */
	struct cvm_tee_emu_vm vm = { .tdx = in };
	const char *req = "{\"tee\": \"tdx\", \"report_data\": \""
			  "0909090909090909090909090909090909090909090909090909090909090909"
			  "0909090909090909090909090909090909090909090909090909090909090909\"}";
	char *resp = NULL;
	assert_int_equal(cvm_tee_emu_serve(dir, &vm, req, strlen(req), &resp, &err), 0);
	json_t *j = json_loads(resp, 0, NULL);
	free(resp);
	const char *qs = json_string_value(json_object_get(j, "quote"));
	uint8_t *qb = NULL;
	size_t ql = 0;
	assert_int_equal(cvm_b64url_decode(qs, strlen(qs), &qb, &ql, "quote", &err), 0);
	assert_int_equal(cvm_tdx_verify(qb, ql, &o, &pol, &v, &err), 0);
	assert_int_equal(v.quote.body.report_data[0], 9);
	assert_int_equal(v.quote.body.mrtd[0], 0x7d);
	free(qb);
	json_decref(j);
	X509_free(root);
	cvm_buf_free(&q);
}

/* Service mode: the guest chooses only report data (and VMPL); the host fixes the rest. */
static void test_serve(void **state)
{
	struct fixture *f = *state;
	struct cvm_err err = { 0 };
	struct cvm_tee_emu_vm vm = { 0 };
	memset(vm.snp.measurement, 0xab, 48);
	memset(vm.snp.report_data, 0xee, 64); /* ignored: the request's value wins */
	const char *req = "{\"tee\": \"sev-snp\", \"vmpl\": 2, \"report_data\": \""
			  "0101010101010101010101010101010101010101010101010101010101010101"
			  "0101010101010101010101010101010101010101010101010101010101010101\"}";
	char *resp = NULL;
	assert_int_equal(cvm_tee_emu_serve(f->genoa, &vm, req, strlen(req), &resp, &err), 0);
	json_t *j = json_loads(resp, 0, NULL);
	free(resp);
	const char *rep = json_string_value(json_object_get(j, "report"));
	const char *chain = json_string_value(json_object_get(j, "cert_chain"));
	assert_non_null(rep);
	assert_non_null(chain);
	uint8_t *r = NULL;
	size_t rl = 0;
	assert_int_equal(cvm_b64url_decode(rep, strlen(rep), &r, &rl, "report", &err), 0);
	struct cvm_snp_certs certs = { 0 };
	assert_int_equal(cvm_snp_certs_add(&certs, (const uint8_t *)chain, strlen(chain), &err), 0);
	assert_non_null(certs.ark);
	_cleanup_roots_ struct cvm_attest_roots *roots = NULL;
	assert_int_equal(cvm_attest_roots_new_empty(&roots, &err), 0);
	assert_int_equal(cvm_attest_roots_add_emulator(roots, f->genoa, f->fp_genoa, &err), 0);
	struct cvm_snp_policy pol;
	cvm_snp_policy_default(&pol);
	pol.allow_emulated = true;
	struct cvm_snp_verdict v;
	assert_int_equal(cvm_snp_verify(r, rl, &certs, roots, NULL, &pol, &v, &err), 0);
	assert_int_equal(v.report.vmpl, 2);
	assert_int_equal(v.report.report_data[0], 1);
	assert_int_equal(v.report.measurement[0], 0xab);
	free(r);
	cvm_snp_certs_clear(&certs);
	json_decref(j);
	/* Bad requests answer with an error object. */
	const char *bad[] = { "{\"tee\": \"sgx\", \"report_data\": \"00\"}",
			      "{\"tee\": \"sev-snp\", \"report_data\": \"00\"}",
			      "{\"tee\": \"sev-snp\"}", "not json",
			      "{\"tee\": \"sev-snp\", \"vmpl\": 4, \"report_data\": \"" 
			      "0000000000000000000000000000000000000000000000000000000000000000"
			      "0000000000000000000000000000000000000000000000000000000000000000\"}" };
	for (size_t i = 0; i < CVM_ARRAY_SIZE(bad); i++) {
		resp = NULL;
		assert_int_equal(cvm_tee_emu_serve(f->genoa, &vm, bad[i], strlen(bad[i]), &resp, &err),
				 -EINVAL);
		assert_non_null(strstr(resp, "\"error\""));
		free(resp);
	}
	/* TDX request against a directory without a TDX emulator: an error, not a crash. */
	req = "{\"tee\": \"tdx\", \"report_data\": \""
	      "0000000000000000000000000000000000000000000000000000000000000000"
	      "0000000000000000000000000000000000000000000000000000000000000000\"}";
	resp = NULL;
	assert_int_equal(cvm_tee_emu_serve(f->turin, &vm, req, strlen(req), &resp, &err), -ENOENT);
	free(resp);
}

static void test_bad_inputs(void **state)
{
	struct fixture *f = *state;
	struct cvm_err err = { 0 };
	uint8_t rep[CVM_SNP_REPORT_SIZE];
	struct cvm_tee_emu_report_in in = { .vmpl = 4 };
	assert_int_equal(cvm_tee_emu_snp_report(f->genoa, &in, rep, &err), -EINVAL);
	in.vmpl = 0;
	in.policy = 0x10000; /* reserved bit 17 clear */
	assert_int_equal(cvm_tee_emu_snp_report(f->genoa, &in, rep, &err), -EINVAL);
	in.policy = 0;
	assert_int_equal(cvm_tee_emu_snp_report("/nonexistent/emu", &in, rep, &err), -ENOENT);
	char fp[65];
	assert_int_equal(cvm_tee_emu_fingerprint("/nonexistent/emu", fp, &err), -ENOENT);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_trust_only_with_fingerprint),
		cmocka_unit_test(test_turin_and_kds_layout),
		cmocka_unit_test(test_vcek_tcb_mismatch),
		cmocka_unit_test(test_crl),
		cmocka_unit_test(test_tdx_emulator),
		cmocka_unit_test(test_serve),
		cmocka_unit_test(test_bad_inputs),
	};
	return cmocka_run_group_tests(tests, setup, teardown);
}
