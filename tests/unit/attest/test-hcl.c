/* SPDX-License-Identifier: Apache-2.0 */
/* Azure CVM evidence end to end (HCL report, SNP or TDX hardware report, runtime-data binding,
 * vTPM quote signed by HCLAkPub over the PCRs) with the real samples, and the failure twins. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <cmocka.h>

#include <opencvm/attest.h>
#include <opencvm/json.h>

#include <openssl/sha.h>

static const char *evidence_dir(void)
{
	const char *d = getenv("CVM_EVIDENCE_DIR");
	struct stat st;
	if (!d || stat(d, &st) != 0 || !S_ISDIR(st.st_mode)) {
		fprintf(stderr, "FATAL: evidence directory missing (CVM_EVIDENCE_DIR=%s)\n",
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

/* Evidence JSON holds bytes either as arrays of integers or as hex / base64url strings. */
static uint8_t *bytes_of(json_t *v, size_t *len, bool b64)
{
	struct cvm_err err = { 0 };
	uint8_t *out = NULL;
	if (json_is_array(v)) {
		*len = json_array_size(v);
		out = malloc(*len ? *len : 1);
		for (size_t i = 0; i < *len; i++)
			out[i] = (uint8_t)json_integer_value(json_array_get(v, i));
		return out;
	}
	const char *s = json_string_value(v);
	assert_non_null(s);
	if (b64)
		assert_int_equal(cvm_b64url_decode(s, strlen(s), &out, len, "b64", &err), 0);
	else
		assert_int_equal(cvm_hex_decode(s, strlen(s), &out, len, "hex", &err), 0);
	return out;
}

struct azure_sample {
	uint8_t *hcl, *msg, *sig, *tdq;
	size_t hcl_len, msg_len, sig_len, tdq_len;
	uint8_t pcrs[24][32];
	struct cvm_snp_certs certs;
};

static void sample_load(const char *rel, struct azure_sample *s)
{
	memset(s, 0, sizeof(*s));
	size_t len = 0;
	_cleanup_free_ uint8_t *text = load(rel, &len);
	json_t *j = json_loadb((const char *)text, len, 0, NULL);
	assert_non_null(j);
	json_t *q = json_object_get(j, "quote") ? json_object_get(j, "quote")
						: json_object_get(j, "tpm_quote");
	s->msg = bytes_of(json_object_get(q, "message"), &s->msg_len, false);
	s->sig = bytes_of(json_object_get(q, "signature"), &s->sig_len, false);
	json_t *pcrs = json_object_get(q, "pcrs");
	assert_int_equal(json_array_size(pcrs), 24);
	for (size_t i = 0; i < 24; i++) {
		size_t pl = 0;
		_cleanup_free_ uint8_t *p = bytes_of(json_array_get(pcrs, i), &pl, false);
		assert_int_equal(pl, 32);
		memcpy(s->pcrs[i], p, 32);
	}
	json_t *hcl = json_object_get(j, "report") ? json_object_get(j, "report")
						   : json_object_get(j, "hcl_report");
	s->hcl = bytes_of(hcl, &s->hcl_len, true);
	if (json_object_get(j, "td_quote"))
		s->tdq = bytes_of(json_object_get(j, "td_quote"), &s->tdq_len, true);
	json_t *vcek = json_object_get(j, "vcek");
	struct cvm_err err = { 0 };
	if (vcek) {
		const char *vs = json_string_value(vcek);
		if (cvm_str_startswith(vs, "-----")) {
			assert_int_equal(cvm_snp_certs_add(&s->certs, (const uint8_t *)vs, strlen(vs), &err), 0);
		} else {
			size_t dl = 0;
			_cleanup_free_ uint8_t *der = bytes_of(vcek, &dl, true);
			assert_int_equal(cvm_snp_certs_add(&s->certs, der, dl, &err), 0);
		}
	}
	json_decref(j);
}

static void sample_free(struct azure_sample *s)
{
	free(s->hcl);
	free(s->msg);
	free(s->sig);
	free(s->tdq);
	cvm_snp_certs_clear(&s->certs);
}

static const char *const samples[] = {
	"azure/snp-milan/evidence-v0.json",
	"azure/snp-milan-v1/evidence-v1.json",
	"azure/snp-milan-v2/evidence-v2.json",
	"azure/snp-genoa/evidence-genoa.json",
	"azure/tdx/evidence-v1.json",
};

static struct cvm_azure_evidence ev_of(struct azure_sample *s)
{
	return (struct cvm_azure_evidence){
		.hcl = s->hcl, .hcl_len = s->hcl_len, .tpm_quote = s->msg, .tpm_quote_len = s->msg_len,
		.tpm_sig = s->sig, .tpm_sig_len = s->sig_len, .pcrs = (const uint8_t(*)[32])s->pcrs,
		.n_pcrs = 24, .td_quote = s->tdq, .td_quote_len = s->tdq_len,
	};
}

static void test_azure_end_to_end(void **state)
{
	(void)state;
	struct cvm_err err = { 0 };
	_cleanup_roots_ struct cvm_attest_roots *roots = NULL;
	assert_int_equal(cvm_attest_roots_new_builtin(&roots, &err), 0);
	struct cvm_tdx_policy tpol;
	cvm_tdx_policy_default(&tpol);
	for (size_t i = 0; i < CVM_ARRAY_SIZE(samples); i++) {
		struct azure_sample s;
		sample_load(samples[i], &s);
		struct cvm_azure_evidence ev = ev_of(&s);
		struct cvm_azure_verdict v;
		int rc = cvm_azure_verify(&ev, &s.certs, roots, NULL, NULL, NULL, &tpol, &v, &err);
		if (rc)
			fprintf(stderr, "%s: %s\n", samples[i], err.msg);
		assert_int_equal(rc, 0);
		assert_int_equal(v.report_type, s.tdq ? 4 : 2);
		/* The nonce the samples were taken with is the quote's extraData. */
		struct cvm_tpm_quote q;
		assert_int_equal(cvm_tpm_quote_parse(s.msg, s.msg_len, &q, &err), 0);
		ev.nonce = q.extra_data;
		ev.nonce_len = q.extra_data_len;
		assert_int_equal(cvm_azure_verify(&ev, &s.certs, roots, NULL, NULL, NULL, &tpol, &v, &err), 0);
		/* Failure twins: wrong nonce, a changed PCR, a flipped quote signature, changed
		 * runtime data. */
		const uint8_t wrong[] = "not-the-nonce";
		ev.nonce = wrong;
		ev.nonce_len = sizeof(wrong) - 1;
		assert_int_equal(cvm_azure_verify(&ev, &s.certs, roots, NULL, NULL, NULL, &tpol, &v, &err), -EBADMSG);
		assert_non_null(strstr(err.msg, "extraData"));
		ev.nonce = NULL;
		s.pcrs[7][3] ^= 1;
		assert_int_equal(cvm_azure_verify(&ev, &s.certs, roots, NULL, NULL, NULL, &tpol, &v, &err), -EBADMSG);
		assert_non_null(strstr(err.msg, "pcrDigest"));
		s.pcrs[7][3] ^= 1;
		s.sig[10] ^= 1;
		assert_int_equal(cvm_azure_verify(&ev, &s.certs, roots, NULL, NULL, NULL, &tpol, &v, &err), -EBADMSG);
		assert_non_null(strstr(err.msg, "tpm.quote.signature"));
		s.sig[10] ^= 1;
		s.hcl[0x4D4 + 30] ^= 1;
		assert_int_equal(cvm_azure_verify(&ev, &s.certs, roots, NULL, NULL, NULL, &tpol, &v, &err), -EBADMSG);
		assert_non_null(strstr(err.msg, "runtime_data"));
		s.hcl[0x4D4 + 30] ^= 1;
		assert_int_equal(cvm_azure_verify(&ev, &s.certs, roots, NULL, NULL, NULL, &tpol, &v, &err), 0);
		sample_free(&s);
	}
}

static void test_tdx_quote_must_match(void **state)
{
	(void)state;
	struct cvm_err err = { 0 };
	struct azure_sample s;
	sample_load("azure/tdx/evidence-v1.json", &s);
	size_t ql = 0;
	_cleanup_free_ uint8_t *other = load("tdx/trustee-6/quote.bin", &ql);
	struct cvm_azure_evidence ev = ev_of(&s);
	ev.td_quote = other;
	ev.td_quote_len = ql;
	struct cvm_tdx_policy tpol;
	cvm_tdx_policy_default(&tpol);
	tpol.allow_debug = true;
	struct cvm_azure_verdict v;
	assert_int_equal(cvm_azure_verify(&ev, NULL, NULL, NULL, NULL, NULL, &tpol, &v, &err), -EBADMSG);
	assert_non_null(strstr(err.msg, "TDREPORT"));
	ev.td_quote = NULL;
	assert_int_equal(cvm_azure_verify(&ev, NULL, NULL, NULL, NULL, NULL, &tpol, &v, &err), -EINVAL);
	/* The standalone Azure TD quote file is the one for this HCL report. */
	size_t hl = 0;
	_cleanup_free_ uint8_t *hcl = load("azure/tdx/hcl-report.bin", &hl);
	_cleanup_free_ uint8_t *tdq = load("azure/tdx/td-quote.bin", &ql);
	struct cvm_hcl_report h;
	assert_int_equal(cvm_hcl_report_parse(hcl, hl, &h, &err), 0);
	assert_int_equal(h.report_type, 4);
	assert_int_equal(cvm_hcl_check_binding(&h, &err), 0);
	struct cvm_tdx_verdict tv;
	assert_int_equal(cvm_tdx_verify(tdq, ql, NULL, &tpol, &tv, &err), 0);
	assert_memory_equal(tv.quote.body.report_data, h.hw_report + 0x80, 64);
	sample_free(&s);
}

static void test_hcl_parse(void **state)
{
	(void)state;
	struct cvm_err err = { 0 };
	const char *files[] = { "azure/snp-milan/hcl-report.bin",
				"azure/snp-milan-v1/evidence-v1-hcl-report.bin",
				"azure/snp-milan-v2/evidence-v2-hcl-report.bin",
				"azure/snp-genoa/genoa-hcl-report.bin", "azure/tdx/hcl-report.bin" };
	for (size_t i = 0; i < CVM_ARRAY_SIZE(files); i++) {
		size_t len = 0;
		_cleanup_free_ uint8_t *b = load(files[i], &len);
		struct cvm_hcl_report h;
		assert_int_equal(cvm_hcl_report_parse(b, len, &h, &err), 0);
		assert_int_equal(cvm_hcl_check_binding(&h, &err), 0);
		EVP_PKEY *ak = NULL;
		assert_int_equal(cvm_hcl_runtime_key(&h, "HCLAkPub", &ak, &err), 0);
		EVP_PKEY_free(ak);
		assert_int_equal(cvm_hcl_runtime_key(&h, "NoSuchKey", &ak, &err), -ENOENT);
		/* Header and length checks. */
		assert_int_equal(cvm_hcl_report_parse(b, 0x4D3, &h, &err), -EINVAL);
		assert_int_equal(cvm_hcl_report_parse(b, 0x4D4 + h.runtime_len - 1, &h, &err), -EINVAL);
		b[0] ^= 1;
		assert_int_equal(cvm_hcl_report_parse(b, len, &h, &err), -EINVAL);
		b[0] ^= 1;
		b[0x4C8] = 3;
		assert_int_equal(cvm_hcl_report_parse(b, len, &h, &err), -EINVAL);
	}
	/* TPMS_ATTEST parser: truncations and a wrong magic. */
	size_t ml = 0;
	_cleanup_free_ uint8_t *m = load("azure/snp-milan/tpm-quote.msg", &ml);
	struct cvm_tpm_quote q;
	assert_int_equal(cvm_tpm_quote_parse(m, ml, &q, &err), 0);
	assert_int_equal(q.n_banks, 1);
	assert_int_equal(q.bank_alg[0], 0x000b);
	for (size_t cut = 0; cut < ml; cut += 7)
		assert_int_equal(cvm_tpm_quote_parse(m, cut, &q, &err), -EINVAL);
	m[0] = 0;
	assert_int_equal(cvm_tpm_quote_parse(m, ml, &q, &err), -EINVAL);
}

/* ---- TCG event log (synthetic: no raw log is among the shared samples) ---------------- */

static void put32(uint8_t *p, uint32_t v)
{
	for (int i = 0; i < 4; i++)
		p[i] = (uint8_t)(v >> (8 * i));
}

/* Spec ID header (SHA-1 and SHA-256 declared), StartupLocality 3, then events. */
static size_t build_log(uint8_t *b, const uint32_t *pcr, const uint8_t (*digests)[32], size_t n)
{
	size_t o = 0;
	put32(b + o, 0);
	put32(b + o + 4, 3); /* EV_NO_ACTION */
	memset(b + o + 8, 0, 20);
	o += 28;
	uint8_t spec[37] = "Spec ID Event03";
	put32(spec + 24, 2);
	spec[28] = 0x04; spec[29] = 0; spec[30] = 20; spec[31] = 0;   /* SHA-1, 20 */
	spec[32] = 0x0b; spec[33] = 0; spec[34] = 32; spec[35] = 0;   /* SHA-256, 32 */
	spec[36] = 0;
	put32(b + o, sizeof(spec));
	memcpy(b + o + 4, spec, sizeof(spec));
	o += 4 + sizeof(spec);
	/* StartupLocality event in the crypto-agile format with zero digests. */
	put32(b + o, 0);
	put32(b + o + 4, 3);
	put32(b + o + 8, 2);
	o += 12;
	b[o++] = 0x04; b[o++] = 0; memset(b + o, 0, 20); o += 20;
	b[o++] = 0x0b; b[o++] = 0; memset(b + o, 0, 32); o += 32;
	put32(b + o, 17);
	memcpy(b + o + 4, "StartupLocality", 16);
	b[o + 20] = 3;
	o += 21;
	for (size_t i = 0; i < n; i++) {
		put32(b + o, pcr[i]);
		put32(b + o + 4, 0x80000008); /* EV_EFI_PLATFORM_FIRMWARE_BLOB */
		put32(b + o + 8, 2);
		o += 12;
		b[o++] = 0x04; b[o++] = 0; memset(b + o, 0xaa, 20); o += 20;
		b[o++] = 0x0b; b[o++] = 0; memcpy(b + o, digests[i], 32); o += 32;
		put32(b + o, 4);
		memcpy(b + o + 4, "blob", 4);
		o += 8;
	}
	return o;
}

static void test_tcg_log(void **state)
{
	(void)state;
	static uint8_t log[4096];
	const uint32_t pcr[] = { 0, 0, 4, 7 };
	uint8_t dig[4][32];
	for (int i = 0; i < 4; i++)
		memset(dig[i], 0x10 + i, 32);
	size_t len = build_log(log, pcr, (const uint8_t(*)[32])dig, 4);
	/* Expected values computed here with OpenSSL directly. */
	uint8_t want[24][32] = { { 0 } };
	want[0][31] = 3; /* locality 3 */
	for (int i = 0; i < 4; i++) {
		uint8_t in[64];
		memcpy(in, want[pcr[i]], 32);
		memcpy(in + 32, dig[i], 32);
		SHA256(in, 64, want[pcr[i]]);
	}
	struct cvm_tcg_log l;
	struct cvm_err err = { 0 };
	assert_int_equal(cvm_tcg_log_replay(log, len, &l, &err), 0);
	assert_int_equal(l.n_events, 5); /* the Spec ID header is not counted */
	assert_int_equal(l.extended_mask, (1u << 0) | (1u << 4) | (1u << 7));
	assert_memory_equal(l.pcrs[0], want[0], 32);
	assert_memory_equal(l.pcrs[7], want[7], 32);
	assert_int_equal(cvm_tcg_log_check(&l, (const uint8_t(*)[32])want, 24, &err), 0);
	want[4][0] ^= 1;
	assert_int_equal(cvm_tcg_log_check(&l, (const uint8_t(*)[32])want, 24, &err), -EBADMSG);
	assert_non_null(strstr(err.msg, "PCR 4"));
	want[4][0] ^= 1;
	assert_int_equal(cvm_tcg_log_check(&l, (const uint8_t(*)[32])want, 5, &err), -EINVAL);
	/* Truncations and an undeclared digest algorithm. */
	/* A cut inside an event fails; a cut on a boundary is a shorter, valid log. */
	for (size_t cut = 1; cut < len; cut += 13) {
		int rc = cvm_tcg_log_replay(log, len - cut, &l, &err);
		assert_true(rc == -EINVAL || (rc == 0 && l.n_events < 5));
	}
	assert_int_equal(cvm_tcg_log_replay(log, 40, &l, &err), -EINVAL);
	size_t first_ev = 28 + 4 + 37 + 12;
	log[first_ev] = 0x0c; /* SHA-384 was not declared */
	assert_int_equal(cvm_tcg_log_replay(log, len, &l, &err), -EINVAL);
	log[first_ev] = 0x04;
	json_t *j = NULL;
	assert_int_equal(cvm_tcg_log_to_json(log, len, &j, &err), 0);
	assert_int_equal(json_array_size(j), 5);
	json_decref(j);
	/* Shown as a TCG log by the evidence decoder. */
	assert_int_equal(cvm_evidence_detect(log, len), CVM_EVIDENCE_TCG_LOG);

	/* Found by fuzz-event-log: a Spec ID event declaring SHA-256 (0x000b) with 25-byte
	 * digests; SHA-256 digests are read as 32 bytes, so such a log is refused up front. */
	static const uint8_t bad_size[] = {
		0, 0, 0, 0, 3, 0, 0, 0, [28] = 0x25, 0, 0, 0, 'S', 'p', 'e', 'c', ' ', 'I', 'D',
		' ', 'E', 'v', 'e', 'n', 't', '0', '3', 0, 0, 0, 0, 0, 0, 2, 2, 0, 2, 0, 0, 0,
		4, 0, 20, 0, 0x0b, 0, 25, 0, 0, 0, 0, 0, 0, 3, 0, 0, 0, 2, 0, 0, 0, 4, 0,
	};
	j = NULL;
	assert_int_equal(cvm_tcg_log_to_json(bad_size, sizeof(bad_size), &j, &err), -EINVAL);
	assert_null(j);
	assert_non_null(strstr(err.msg, "algorithm 0x000b with digest size 25, expected 32"));
	assert_int_equal(cvm_tcg_log_replay(bad_size, sizeof(bad_size), &l, &err), -EINVAL);
}

static void test_evidence_show(void **state)
{
	(void)state;
	static const struct { const char *path; enum cvm_evidence_kind kind; const char *name; } f[] = {
		{ "snp/virtee-milan/report.bin", CVM_EVIDENCE_SNP_REPORT, "snp-report" },
		{ "tdx/gotdx-v5/quote.bin", CVM_EVIDENCE_TDX_QUOTE, "tdx-quote" },
		{ "azure/snp-genoa/genoa-hcl-report.bin", CVM_EVIDENCE_HCL_REPORT, "hcl-report" },
		{ "azure/tdx/hcl-report.bin", CVM_EVIDENCE_HCL_REPORT, "hcl-report" },
		{ "azure/snp-milan/tpm-quote.msg", CVM_EVIDENCE_TPM_QUOTE, "tpm-quote" },
		{ "azure/snp-milan/vcek.pem", CVM_EVIDENCE_UNKNOWN, NULL },
	};
	struct cvm_err err = { 0 };
	for (size_t i = 0; i < CVM_ARRAY_SIZE(f); i++) {
		size_t len = 0;
		_cleanup_free_ uint8_t *b = load(f[i].path, &len);
		assert_int_equal(cvm_evidence_detect(b, len), f[i].kind);
		json_t *j = NULL;
		int rc = cvm_evidence_to_json(b, len, &j, &err);
		if (!f[i].name) {
			assert_int_equal(rc, -EINVAL);
			continue;
		}
		assert_int_equal(rc, 0);
		assert_string_equal(json_string_value(json_object_get(j, "kind")), f[i].name);
		if (f[i].kind == CVM_EVIDENCE_HCL_REPORT)
			assert_true(json_is_true(cvm_json_path(j, "evidence.runtime_data_bound")));
		json_decref(j);
	}
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_azure_end_to_end),
		cmocka_unit_test(test_tdx_quote_must_match),
		cmocka_unit_test(test_hcl_parse),
		cmocka_unit_test(test_tcg_log),
		cmocka_unit_test(test_evidence_show),
	};
	evidence_dir();
	return cmocka_run_group_tests(tests, NULL, NULL);
}
