/* SPDX-License-Identifier: Apache-2.0 */
/* POST /attest/AzureGuest with requests built from the real Azure CVM samples (SNP Milan, SNP
 * Genoa, TDX): tokens carry the azurevm claims; every success has failure twins (flipped report
 * bit, wrong PCR, wrong quote signature, runtime data not in report_data, missing fields, policy
 * refusal, foreign TCG log). Also the sealed response format and the EncKeyPub certification. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include <cmocka.h>

#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>

#include <openssl/evp.h>
#include <openssl/rsa.h>

#include <opencvm/attest.h>
#include <opencvm/http.h>
#include <opencvm/json.h>

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

/* Evidence JSON holds bytes as arrays of integers or hex strings. */
static uint8_t *bytes_of(json_t *v, size_t *len)
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
	assert_int_equal(cvm_hex_decode(s, strlen(s), &out, len, "hex", &err), 0);
	return out;
}

/* Each sample's evidence JSON holds the HCL report, the TPM quote with its PCRs and, for SNP,
 * the VCEK (PEM or base64url DER); TDX samples add the TD quote. */
struct sample_def {
	const char *name, *evidence;
};
static const struct sample_def defs[] = {
	{ "snp-milan", "azure/snp-milan/evidence-v0.json" },
	{ "snp-genoa", "azure/snp-genoa/evidence-genoa.json" },
	{ "tdx", "azure/tdx/evidence-v1.json" },
};

struct sample {
	const struct sample_def *def;
	uint8_t *hcl, *msg, *sig, *chain, *tdq;
	size_t hcl_len, msg_len, sig_len, chain_len, tdq_len;
	uint8_t pcrs[24][32];
};

static uint8_t *b64url_of(json_t *v, size_t *len)
{
	struct cvm_err err = { 0 };
	uint8_t *out = NULL;
	if (json_is_array(v))
		return bytes_of(v, len);
	const char *s = json_string_value(v);
	assert_non_null(s);
	assert_int_equal(cvm_b64url_decode(s, strlen(s), &out, len, "b64", &err), 0);
	return out;
}

static void sample_load(const struct sample_def *d, struct sample *s)
{
	memset(s, 0, sizeof(*s));
	s->def = d;
	size_t len = 0;
	_cleanup_free_ uint8_t *text = load(d->evidence, &len);
	json_t *j = json_loadb((const char *)text, len, 0, NULL);
	assert_non_null(j);
	json_t *q = json_object_get(j, "quote") ? json_object_get(j, "quote")
						: json_object_get(j, "tpm_quote");
	s->msg = bytes_of(json_object_get(q, "message"), &s->msg_len);
	s->sig = bytes_of(json_object_get(q, "signature"), &s->sig_len);
	json_t *pcrs = json_object_get(q, "pcrs");
	assert_int_equal(json_array_size(pcrs), 24);
	for (size_t i = 0; i < 24; i++) {
		size_t pl = 0;
		_cleanup_free_ uint8_t *p = bytes_of(json_array_get(pcrs, i), &pl);
		assert_int_equal(pl, 32);
		memcpy(s->pcrs[i], p, 32);
	}
	json_t *hcl = json_object_get(j, "report") ? json_object_get(j, "report")
						   : json_object_get(j, "hcl_report");
	s->hcl = b64url_of(hcl, &s->hcl_len);
	json_t *vcek = json_object_get(j, "vcek");
	if (vcek && cvm_str_startswith(json_string_value(vcek), "-----")) {
		s->chain = (uint8_t *)cvm_strdup(json_string_value(vcek));
		s->chain_len = strlen((char *)s->chain);
	} else if (vcek) {
		s->chain = b64url_of(vcek, &s->chain_len);
	}
	if (json_object_get(j, "td_quote"))
		s->tdq = b64url_of(json_object_get(j, "td_quote"), &s->tdq_len);
	json_decref(j);
}

static void sample_free(struct sample *s)
{
	free(s->hcl);
	free(s->msg);
	free(s->sig);
	free(s->chain);
	free(s->tdq);
}

static json_t *b64(const void *d, size_t n)
{
	char *e = cvm_b64_encode(d, n);
	json_t *s = json_string(e);
	free(e);
	return s;
}

static json_t *b64s(const char *s)
{
	return b64(s, strlen(s));
}

/* AttestationInfo as the guest library builds it from this sample. */
static json_t *info_of(const struct sample *s)
{
	struct cvm_err err = { 0 };
	struct cvm_hcl_report h;
	assert_int_equal(cvm_hcl_report_parse(s->hcl, s->hcl_len, &h, &err), 0);
	json_t *proof;
	if (s->tdq) {
		proof = b64(s->tdq, s->tdq_len);
	} else {
		char *rep = cvm_b64url_encode(h.hw_report, CVM_SNP_REPORT_SIZE);
		json_t *p = json_pack("{s:s, s:o}", "SnpReport", rep, "VcekCertChain",
				      b64(s->chain, s->chain_len));
		free(rep);
		char *t = cvm_json_dump(p);
		proof = b64s(t);
		free(t);
		json_decref(p);
	}
	json_t *pcrs = json_array(), *set = json_array();
	for (int i = 0; i < 24; i++) {
		json_array_append_new(pcrs, json_pack("{s:i, s:o}", "Index", i, "Digest",
						      b64(s->pcrs[i], 32)));
		json_array_append_new(set, json_integer(i));
	}
	json_t *info = json_pack(
		"{s:s, s:o, s:o, s:i, s:i, s:{s:o}, s:{s:o, s:o, s:o, s:o},"
		" s:{s:s, s:{s:o, s:o}}}",
		"AttestationProtocolVersion", "2.0", "OSType", b64s("Linux"), "OSDistro",
		b64s("Ubuntu"), "OSVersionMajor", 22, "OSVersionMinor", 4, "ClientPayload", "nonce",
		b64s("abc123"), "TpmInfo", "PcrQuote", b64(s->msg, s->msg_len), "PcrSignature",
		b64(s->sig, s->sig_len), "PcrSet", set, "Pcrs", pcrs, "IsolationInfo", "Type",
		s->tdq ? "Tdx" : "SevSnp", "Evidence", "Proof", proof, "RunTimeData",
		b64(h.runtime, h.runtime_len));
	assert_non_null(info);
	return info;
}

static char *body_of(json_t *info)
{
	char *t = cvm_json_dump(info);
	char *e = cvm_b64url_encode(t, strlen(t));
	json_t *b = json_pack("{s:s}", "AttestationInfo", e);
	char *out = cvm_json_dump(b);
	free(t);
	free(e);
	json_decref(b);
	return out;
}

static char *body_of_sample(const struct sample *s)
{
	json_t *info = info_of(s);
	char *b = body_of(info);
	json_decref(info);
	return b;
}

struct fixture {
	char dir[64];
	struct cvm_attest_roots *roots;
	struct cvm_attest_service *svc;
};

static int setup(void **state)
{
	struct fixture *f = calloc(1, sizeof(*f));
	struct cvm_err err = { 0 };
	struct cvm_key *k = NULL;
	if (!f || cvm_attest_roots_new_builtin(&f->roots, &err) < 0 ||
	    cvm_key_generate_rsa(2048, 0, &k, &err) < 0)
		return -1;
	struct cvm_attest_service_config cfg = { .issuer = "https://azg.test", .signing_key = k,
						 .roots = f->roots };
	int rc = cvm_attest_service_new(&cfg, &f->svc, &err);
	cvm_key_free(k);
	if (rc < 0)
		return -1;
	*state = f;
	return 0;
}

static int teardown(void **state)
{
	struct fixture *f = *state;
	cvm_attest_service_free(f->svc);
	cvm_attest_roots_free(f->roots);
	free(f);
	return 0;
}

static int attest(struct fixture *f, const char *body, char **token, struct cvm_err *err)
{
	cvm_err_clear(err);
	return cvm_attest_service_attest_azureguest(f->svc, body, strlen(body), token, err);
}

static const char *str_at(json_t *c, const char *path)
{
	return json_string_value(cvm_json_path(c, path));
}

static void check_claims(struct fixture *f, const struct sample *s, const char *token)
{
	struct cvm_err err = { 0 };
	json_t *c = NULL;
	assert_int_equal(cvm_attest_service_verify_token(f->svc, token, &c, &err), 0);
	assert_string_equal(str_at(c, "x-ms-attestation-type"), "azurevm");
	assert_string_equal(str_at(c, "x-ms-ver"), "1.0");
	assert_string_equal(str_at(c, "x-ms-azurevm-attestation-protocol-ver"), "2.0");
	assert_string_equal(str_at(c, "x-ms-azurevm-ostype"), "Linux");
	assert_string_equal(str_at(c, "x-ms-azurevm-osdistro"), "Ubuntu");
	assert_int_equal(json_integer_value(cvm_json_path(c, "x-ms-azurevm-osversion-major")), 22);
	assert_true(json_is_false(cvm_json_path(c, "x-ms-azurevm-is-windows")));
	assert_true(json_is_false(cvm_json_path(c, "x-ms-azurevm-is-debuggable")));
	assert_int_equal(json_array_size(cvm_json_path(c, "x-ms-azurevm-attested-pcrs")), 24);
	assert_string_equal(str_at(c, "nonce"), "abc123");
	json_t *rt = json_object_get(c, "x-ms-runtime");
	assert_string_equal(str_at(rt, "client-payload.nonce"), "abc123");
	assert_true(json_is_false(cvm_json_path(c, "x-opencvm-emulated")));
	json_t *tee = json_object_get(c, "x-ms-isolation-tee");
	assert_non_null(tee);
	assert_string_equal(str_at(tee, "x-ms-compliance-status"), "azure-compliant-cvm");
	/* The TEE-bound runtime data is embedded, with the AK the quote was checked against. */
	json_t *keys = cvm_json_path(tee, "x-ms-runtime.keys");
	assert_true(json_array_size(keys) >= 1);
	assert_string_equal(json_string_value(json_object_get(json_array_get(keys, 0), "kid")),
			    "HCLAkPub");
	struct cvm_hcl_report h;
	assert_int_equal(cvm_hcl_report_parse(s->hcl, s->hcl_len, &h, &err), 0);
	uint8_t rd[64] = { 0 };
	size_t dl = 0;
	assert_int_equal(cvm_digest("SHA256", h.runtime, h.runtime_len, rd, &dl, &err), 0);
	char *hex = cvm_hex_encode(rd, 64);
	if (s->tdq) {
		assert_string_equal(str_at(tee, "x-ms-attestation-type"), "tdxvm");
		assert_string_equal(str_at(tee, "x-ms-tdx-reportdata"), hex);
	} else {
		assert_string_equal(str_at(tee, "x-ms-attestation-type"), "sevsnpvm");
		assert_string_equal(str_at(tee, "x-ms-sevsnpvm-reportdata"), hex);
		assert_non_null(str_at(tee, "x-ms-sevsnpvm-launchmeasurement"));
	}
	free(hex);
	/* vm-configuration facts surface as azurevm claims when the runtime data has them. */
	json_t *cfg = cvm_json_path(tee, "x-ms-runtime.vm-configuration");
	if (json_object_get(cfg, "vmUniqueId"))
		assert_non_null(str_at(c, "x-ms-azurevm-vmid"));
	if (json_object_get(cfg, "secure-boot"))
		assert_true(json_is_boolean(json_object_get(c, "secureboot")));
	json_decref(c);
}

static void test_samples_issue_token(void **state)
{
	struct fixture *f = *state;
	for (size_t i = 0; i < CVM_ARRAY_SIZE(defs); i++) {
		struct sample s;
		sample_load(&defs[i], &s);
		_cleanup_free_ char *body = body_of_sample(&s);
		struct cvm_err err = { 0 };
		char *token = NULL;
		int rc = attest(f, body, &token, &err);
		if (rc != 0)
			fprintf(stderr, "%s: %s\n", defs[i].name, err.msg);
		assert_int_equal(rc, 0);
		check_claims(f, &s, token);
		free(token);
		sample_free(&s);
	}
}

/* One byte flipped in s (at p) must be refused with -EBADMSG and a message naming what. */
static void expect_refused(struct fixture *f, struct sample *s, uint8_t *p, const char *what)
{
	*p ^= 0x01;
	_cleanup_free_ char *body = body_of_sample(s);
	*p ^= 0x01;
	struct cvm_err err = { 0 };
	char *token = NULL;
	assert_int_equal(attest(f, body, &token, &err), -EBADMSG);
	assert_null(token);
	if (!strstr(err.msg, what))
		fprintf(stderr, "%s: expected '%s' in: %s\n", s->def->name, what, err.msg);
	assert_non_null(strstr(err.msg, what));
}

static void test_tampered_twins(void **state)
{
	struct fixture *f = *state;
	for (size_t i = 0; i < CVM_ARRAY_SIZE(defs); i++) {
		struct sample s;
		sample_load(&defs[i], &s);
		/* TEE evidence: MEASUREMENT (SNP) or a byte of the TD report body (TDX). */
		uint8_t *hw = s.tdq ? s.tdq + 48 + 200 : s.hcl + 0x20 + 0x90;
		expect_refused(f, &s, hw, "IsolationInfo.Evidence.Proof");
		expect_refused(f, &s, &s.pcrs[0][5], "TpmInfo.PcrQuote");
		expect_refused(f, &s, &s.pcrs[23][31], "TpmInfo.PcrQuote");
		expect_refused(f, &s, &s.sig[17], "TpmInfo.PcrQuote");
		/* Runtime data changed after the TEE bound it. */
		struct cvm_hcl_report h;
		struct cvm_err err = { 0 };
		assert_int_equal(cvm_hcl_report_parse(s.hcl, s.hcl_len, &h, &err), 0);
		expect_refused(f, &s, (uint8_t *)h.runtime + h.runtime_len - 1,
			       "IsolationInfo.Evidence.RunTimeData");
		/* Unchanged again: accepted (the twins above failed for their reason only). */
		_cleanup_free_ char *body = body_of_sample(&s);
		char *token = NULL;
		assert_int_equal(attest(f, body, &token, &err), 0);
		free(token);
		sample_free(&s);
	}
}

/* Remove the member at a dotted path inside AttestationInfo; the error names that path. */
static void expect_missing(struct fixture *f, const struct sample *s, const char *parent,
			   const char *member, const char *msg_path)
{
	json_t *info = info_of(s);
	json_t *obj = parent ? cvm_json_path(info, parent) : info;
	assert_non_null(obj);
	assert_int_equal(json_object_del(obj, member), 0);
	_cleanup_free_ char *body = body_of(info);
	json_decref(info);
	struct cvm_err err = { 0 };
	char *token = NULL;
	assert_int_equal(attest(f, body, &token, &err), -EINVAL);
	if (!strstr(err.msg, msg_path))
		fprintf(stderr, "expected '%s' in: %s\n", msg_path, err.msg);
	assert_non_null(strstr(err.msg, msg_path));
	assert_non_null(strstr(err.msg, "missing"));
}

static void test_missing_fields(void **state)
{
	struct fixture *f = *state;
	struct sample s;
	sample_load(&defs[0], &s);
	static const struct {
		const char *parent, *member, *path;
	} cases[] = {
		{ NULL, "AttestationProtocolVersion", "AttestationInfo.AttestationProtocolVersion" },
		{ NULL, "OSType", "AttestationInfo.OSType" },
		{ NULL, "IsolationInfo", "AttestationInfo.IsolationInfo" },
		{ NULL, "TpmInfo", "AttestationInfo.TpmInfo" },
		{ "IsolationInfo", "Type", "AttestationInfo.IsolationInfo.Type" },
		{ "IsolationInfo", "Evidence", "AttestationInfo.IsolationInfo.Evidence" },
		{ "IsolationInfo.Evidence", "Proof", "AttestationInfo.IsolationInfo.Evidence.Proof" },
		{ "IsolationInfo.Evidence", "RunTimeData",
		  "AttestationInfo.IsolationInfo.Evidence.RunTimeData" },
		{ "TpmInfo", "PcrQuote", "AttestationInfo.TpmInfo.PcrQuote" },
		{ "TpmInfo", "PcrSignature", "AttestationInfo.TpmInfo.PcrSignature" },
		{ "TpmInfo", "Pcrs", "AttestationInfo.TpmInfo.Pcrs" },
	};
	for (size_t i = 0; i < CVM_ARRAY_SIZE(cases); i++)
		expect_missing(f, &s, cases[i].parent, cases[i].member, cases[i].path);
	/* Inside the SNP proof and the outer body. */
	struct cvm_err err = { 0 };
	char *token = NULL;
	assert_int_equal(attest(f, "{}", &token, &err), -EINVAL);
	assert_non_null(strstr(err.msg, "AttestationInfo: required field is missing"));
	json_t *info = info_of(&s);
	json_object_set_new(cvm_json_path(info, "IsolationInfo.Evidence"), "Proof",
			    b64s("{\"SnpReport\":\"AAAA\"}"));
	_cleanup_free_ char *b1 = body_of(info);
	assert_int_equal(attest(f, b1, &token, &err), -EINVAL);
	assert_non_null(strstr(err.msg, "Proof.VcekCertChain: required field is missing"));
	/* A PCR the quote covers but the request leaves out. */
	json_array_remove(cvm_json_path(info, "TpmInfo.Pcrs"), 7);
	json_object_set_new(cvm_json_path(info, "TpmInfo"), "PcrSet", json_array());
	json_decref(info);
	info = info_of(&s);
	json_array_remove(cvm_json_path(info, "TpmInfo.Pcrs"), 7);
	json_object_del(cvm_json_path(info, "TpmInfo"), "PcrSet");
	_cleanup_free_ char *b2 = body_of(info);
	assert_int_equal(attest(f, b2, &token, &err), -EINVAL);
	assert_non_null(strstr(err.msg, "TpmInfo.Pcrs: PCR 7 is quoted but has no value"));
	/* An encryption key without the AK's certification of it. */
	json_decref(info);
	info = info_of(&s);
	json_object_set_new(cvm_json_path(info, "TpmInfo"), "EncKeyPub", b64s("key"));
	_cleanup_free_ char *b3 = body_of(info);
	assert_int_equal(attest(f, b3, &token, &err), -EINVAL);
	assert_non_null(strstr(err.msg, "TpmInfo.EncKeyCertifyInfo: required field is missing"));
	/* ... and with a certification the AK did not sign. */
	json_object_set_new(cvm_json_path(info, "TpmInfo"), "EncKeyCertifyInfo", b64s("certify"));
	json_object_set_new(cvm_json_path(info, "TpmInfo"), "EncKeyCertifyInfoSignature",
			    b64(s.sig, s.sig_len));
	_cleanup_free_ char *b4 = body_of(info);
	assert_int_equal(attest(f, b4, &token, &err), -EBADMSG);
	assert_non_null(strstr(err.msg, "EncKeyCertifyInfoSignature: not signed by HCLAkPub"));
	/* TrustedLaunch has no TEE evidence. */
	json_object_set_new(cvm_json_path(info, "IsolationInfo"), "Type",
			    json_string("TrustedLaunch"));
	_cleanup_free_ char *b5 = body_of(info);
	assert_int_equal(attest(f, b5, &token, &err), -ENOTSUP);
	/* An OSType outside the recorded values. */
	json_decref(info);
	info = info_of(&s);
	json_object_set_new(info, "OSType", b64s("Plan9"));
	_cleanup_free_ char *b6 = body_of(info);
	assert_int_equal(attest(f, b6, &token, &err), -EINVAL);
	assert_non_null(strstr(err.msg, "AttestationInfo.OSType"));
	json_decref(info);
	assert_null(token);
	sample_free(&s);
}

static void put32(struct cvm_buf *b, uint32_t v)
{
	uint8_t x[4] = { (uint8_t)v, (uint8_t)(v >> 8), (uint8_t)(v >> 16), (uint8_t)(v >> 24) };
	assert_int_equal(cvm_buf_append(b, x, 4), 0);
}

/* Crypto-agile log: the SHA-1-format Spec ID event (SHA-256 only), then one EV_ACTION event
 * extending PCR 4 with a digest no real boot produced. */
static void tcg_log_one_event(uint8_t **out, size_t *len)
{
	struct cvm_buf b = { 0 };
	static const uint8_t zero[32];
	put32(&b, 0);
	put32(&b, 3); /* EV_NO_ACTION */
	assert_int_equal(cvm_buf_append(&b, zero, 20), 0);
	static const uint8_t spec[] = { 'S', 'p', 'e', 'c', ' ', 'I', 'D', ' ', 'E', 'v', 'e', 'n',
					't', '0', '3', 0, 0, 0, 0, 0, /* platformClass */
					0, 2, 0, 2, /* minor, major, errata, uintnSize */
					1, 0, 0, 0, 0x0b, 0, 32, 0, /* 1 alg: SHA-256, 32 */
					0 /* vendorInfoSize */ };
	put32(&b, sizeof(spec));
	assert_int_equal(cvm_buf_append(&b, spec, sizeof(spec)), 0);
	put32(&b, 4);
	put32(&b, 5); /* EV_ACTION */
	put32(&b, 1);
	static const uint8_t alg[] = { 0x0b, 0 };
	uint8_t d[32];
	memset(d, 0x5a, sizeof(d));
	assert_int_equal(cvm_buf_append(&b, alg, 2), 0);
	assert_int_equal(cvm_buf_append(&b, d, 32), 0);
	put32(&b, 4);
	assert_int_equal(cvm_buf_append(&b, "test", 4), 0);
	*out = b.data;
	*len = b.len;
}

/* A TCG log whose events do not replay to the quoted PCRs is refused. */
static void test_foreign_tcg_log(void **state)
{
	struct fixture *f = *state;
	struct sample s;
	sample_load(&defs[0], &s);
	uint8_t *log = NULL;
	size_t ll = 0;
	struct cvm_err err = { 0 };
	tcg_log_one_event(&log, &ll);
	struct cvm_tcg_log *replayed = calloc(1, sizeof(*replayed));
	assert_int_equal(cvm_tcg_log_replay(log, ll, replayed, &err), 0);
	assert_int_not_equal(replayed->extended_mask, 0);
	free(replayed);
	json_t *info = info_of(&s);
	json_object_set_new(info, "TcgLogs", b64(log, ll));
	_cleanup_free_ char *bad = body_of(info);
	json_decref(info);
	char *token = NULL;
	assert_int_equal(attest(f, bad, &token, &err), -EBADMSG);
	assert_non_null(strstr(err.msg, "AttestationInfo.TcgLogs"));
	/* Twin: the same request without the log passes. */
	_cleanup_free_ char *good = body_of_sample(&s);
	assert_int_equal(attest(f, good, &token, &err), 0);
	free(token);
	free(log);
	sample_free(&s);
}

/* Forms the reference leaves open: empty TcgLogs means no log; ClientPayload as base64 JSON
 * (besides the recorded object of base64 strings); anything else is refused by name. */
static void test_optional_forms(void **state)
{
	struct fixture *f = *state;
	struct sample s;
	sample_load(&defs[1], &s);
	struct cvm_err err = { 0 };
	char *token = NULL;
	json_t *info = info_of(&s);
	json_object_set_new(info, "TcgLogs", json_string(""));
	json_object_set_new(info, "ClientPayload", b64s("{\"nonce\":\"n-42\"}"));
	_cleanup_free_ char *b1 = body_of(info);
	assert_int_equal(attest(f, b1, &token, &err), 0);
	json_t *c = NULL;
	assert_int_equal(cvm_attest_service_verify_token(f->svc, token, &c, &err), 0);
	assert_string_equal(str_at(c, "x-ms-runtime.client-payload.nonce"), "n-42");
	assert_string_equal(str_at(c, "nonce"), "n-42");
	json_decref(c);
	free(token);
	token = NULL;
	json_object_set_new(info, "ClientPayload", json_integer(7));
	_cleanup_free_ char *b2 = body_of(info);
	assert_int_equal(attest(f, b2, &token, &err), -EINVAL);
	assert_non_null(strstr(err.msg, "AttestationInfo.ClientPayload: expected an object"));
	json_object_set_new(info, "ClientPayload", json_pack("{s:s}", "nonce", "%%%"));
	_cleanup_free_ char *b3 = body_of(info);
	assert_int_equal(attest(f, b3, &token, &err), -EINVAL);
	assert_non_null(strstr(err.msg, "AttestationInfo.ClientPayload.nonce"));
	assert_null(token);
	json_decref(info);
	sample_free(&s);
}

/* An AzureGuest policy decides; a SevSnpVm policy does not apply here. */
static void test_policy(void **state)
{
	struct fixture *f = *state;
	struct sample s;
	sample_load(&defs[0], &s);
	_cleanup_free_ char *body = body_of_sample(&s);
	struct cvm_err err = { 0 };
	char *token = NULL;
	const char *deny = "version=1.0; authorizationrules { [type==\"x-ms-azurevm-ostype\", "
			   "value==\"Windows\"] => permit(); };";
	const char *allow = "version=1.0; authorizationrules { [type==\"x-ms-azurevm-ostype\", "
			    "value==\"Linux\"] && [type==\"x-ms-sevsnpvm-is-debuggable\", "
			    "value==false] => permit(); };";
	assert_int_equal(cvm_attest_service_set_policy(f->svc, "AzureGuest", deny, strlen(deny),
						       &err), 0);
	assert_int_equal(attest(f, body, &token, &err), -EPERM);
	assert_int_equal(cvm_attest_service_set_policy(f->svc, "AzureGuest", allow, strlen(allow),
						       &err), 0);
	assert_int_equal(attest(f, body, &token, &err), 0);
	json_t *c = NULL;
	assert_int_equal(cvm_attest_service_verify_token(f->svc, token, &c, &err), 0);
	assert_non_null(json_object_get(c, "x-ms-policy-hash"));
	json_decref(c);
	free(token);
	sample_free(&s);
}

/* Sealed response: decrypt as the guest library does (RSAES-PKCS1-v1_5 inner key, AES-GCM with
 * AAD "Transport Key"); a flipped tag or another key must not open it. */
static void test_seal(void **state)
{
	(void)state;
	struct cvm_err err = { 0 };
	struct cvm_key *k = NULL, *other = NULL;
	assert_int_equal(cvm_key_generate_rsa(2048, 0, &k, &err), 0);
	assert_int_equal(cvm_key_generate_rsa(2048, 0, &other, &err), 0);
	const char *jwt = "eyJhbGciOiJSUzI1NiJ9.eyJ4IjoxfQ.c2ln";
	char *sealed = NULL;
	assert_int_equal(cvm_azureguest_seal(jwt, cvm_key_pkey(k), &sealed, &err), 0);
	uint8_t *txt = NULL;
	size_t tl = 0;
	assert_int_equal(cvm_b64url_decode(sealed, strlen(sealed), &txt, &tl, "t", &err), 0);
	json_t *o = json_loadb((const char *)txt, tl, 0, NULL);
	assert_non_null(o);
	assert_string_equal(str_at(o, "EncryptionParams.BlockMode"), "ChainingModeGCM");
	assert_string_equal(str_at(o, "EncryptionParams.Cipher"), "AES");
	assert_int_equal(json_integer_value(cvm_json_path(o, "EncryptionParams.KeySizeInBits")),
			 256);
	uint8_t *iv, *tag, *ct, *ek;
	size_t ivl, tagl, ctl, ekl;
	const char *v;
	v = str_at(o, "EncryptionParams.Iv");
	assert_int_equal(cvm_b64_decode(v, strlen(v), &iv, &ivl, "iv", &err), 0);
	v = str_at(o, "AuthenticationData");
	assert_int_equal(cvm_b64_decode(v, strlen(v), &tag, &tagl, "tag", &err), 0);
	v = str_at(o, "Jwt");
	assert_int_equal(cvm_b64_decode(v, strlen(v), &ct, &ctl, "ct", &err), 0);
	v = str_at(o, "EncryptedInnerKey");
	assert_int_equal(cvm_b64_decode(v, strlen(v), &ek, &ekl, "ek", &err), 0);
	assert_int_equal(ivl, 12);
	assert_int_equal(tagl, 16);
	assert_int_equal(ctl, strlen(jwt));
	uint8_t key[512];
	size_t kl = sizeof(key);
	EVP_PKEY_CTX *pc = EVP_PKEY_CTX_new(cvm_key_pkey(k), NULL);
	assert_int_equal(EVP_PKEY_decrypt_init(pc), 1);
	assert_int_equal(EVP_PKEY_CTX_set_rsa_padding(pc, RSA_PKCS1_PADDING), 1);
	assert_int_equal(EVP_PKEY_decrypt(pc, key, &kl, ek, ekl), 1);
	EVP_PKEY_CTX_free(pc);
	assert_int_equal(kl, 32);
	/* Twin: another RSA key does not recover the AES key. */
	uint8_t key2[512];
	size_t kl2 = sizeof(key2);
	pc = EVP_PKEY_CTX_new(cvm_key_pkey(other), NULL);
	assert_int_equal(EVP_PKEY_decrypt_init(pc), 1);
	assert_int_equal(EVP_PKEY_CTX_set_rsa_padding(pc, RSA_PKCS1_PADDING), 1);
	int r2 = EVP_PKEY_decrypt(pc, key2, &kl2, ek, ekl);
	EVP_PKEY_CTX_free(pc);
	assert_true(r2 != 1 || kl2 != 32 || memcmp(key, key2, 32) != 0);
	char pt[128] = { 0 };
	static const char aad[] = "Transport Key";
	assert_int_equal(cvm_aes_gcm_open(key, 32, iv, aad, strlen(aad), ct, ctl, tag,
					  (uint8_t *)pt, &err), 0);
	assert_string_equal(pt, jwt);
	/* Twins: flipped tag, wrong AAD. */
	tag[0] ^= 1;
	assert_int_equal(cvm_aes_gcm_open(key, 32, iv, aad, strlen(aad), ct, ctl, tag,
					  (uint8_t *)pt, &err), -EBADMSG);
	tag[0] ^= 1;
	assert_int_equal(cvm_aes_gcm_open(key, 32, iv, "Transport", 9, ct, ctl, tag, (uint8_t *)pt,
					  &err), -EBADMSG);
	assert_int_equal(cvm_azureguest_seal(jwt, NULL, &sealed, &err) < 0, 1);
	free(iv);
	free(tag);
	free(ct);
	free(ek);
	free(txt);
	free(sealed);
	json_decref(o);
	cvm_key_free(k);
	cvm_key_free(other);
}

/* ---- emulated TEE: our own AK, so the sealed path (EncKeyPub certified by the AK) runs ---- */

static void be16(struct cvm_buf *b, uint16_t v)
{
	uint8_t x[2] = { (uint8_t)(v >> 8), (uint8_t)v };
	assert_int_equal(cvm_buf_append(b, x, 2), 0);
}

static void be32(struct cvm_buf *b, uint32_t v)
{
	be16(b, (uint16_t)(v >> 16));
	be16(b, (uint16_t)v);
}

static void tpm2b(struct cvm_buf *b, const void *d, size_t n)
{
	be16(b, (uint16_t)n);
	assert_int_equal(cvm_buf_append(b, d, n), 0);
}

/* TPMS_ATTEST header: magic, type, empty qualifiedSigner, extraData, zero clock/firmware. */
static void attest_hdr(struct cvm_buf *b, uint16_t type)
{
	static const uint8_t zero[25];
	be32(b, 0xff544347u);
	be16(b, type);
	tpm2b(b, NULL, 0);
	tpm2b(b, "nonce", 5);
	assert_int_equal(cvm_buf_append(b, zero, 25), 0);
}

/* Raw RSASSA-PKCS1-v1_5 SHA-256 signature, optionally as a marshalled TPMT_SIGNATURE. */
static void ak_sign(struct cvm_key *ak, const struct cvm_buf *msg, bool tpmt, struct cvm_buf *sig)
{
	struct cvm_err err = { 0 };
	uint8_t d[64];
	size_t dl = 0;
	struct cvm_buf raw = { 0 };
	assert_int_equal(cvm_digest("SHA256", msg->data, msg->len, d, &dl, &err), 0);
	assert_int_equal(cvm_key_sign_digest(ak, "RS256", d, dl, &raw, &err), 0);
	if (tpmt) {
		be16(sig, 0x0014);
		be16(sig, 0x000b);
		tpm2b(sig, raw.data, raw.len);
	} else {
		assert_int_equal(cvm_buf_append(sig, raw.data, raw.len), 0);
	}
	cvm_buf_free(&raw);
}

struct emu_vm {
	char dir[64];
	struct cvm_attest_roots *roots;
	struct cvm_attest_service *svc;
	struct cvm_key *ak, *enc;
	char *runtime;
	uint8_t report[CVM_SNP_REPORT_SIZE];
	uint8_t *vcek;
	size_t vcek_len;
	uint8_t pcrs[24][32];
	struct cvm_buf quote, quote_sig, enc_pub, certify, certify_sig;
};

static void emu_vm_init(struct emu_vm *vm)
{
	memset(vm, 0, sizeof(*vm));
	struct cvm_err err = { 0 };
	snprintf(vm->dir, sizeof(vm->dir), "/tmp/cvm-azg-XXXXXX");
	assert_non_null(mkdtemp(vm->dir));
	char fp[65];
	struct cvm_tee_emu_params params = { .product = CVM_SNP_PRODUCT_GENOA,
					     .tcb = { .bl = 3, .snp = 8, .ucode = 115 } };
	assert_int_equal(cvm_tee_emu_init(vm->dir, &params, fp, &err), 0);
	assert_int_equal(cvm_attest_roots_new_builtin(&vm->roots, &err), 0);
	assert_int_equal(cvm_attest_roots_add_emulator(vm->roots, vm->dir, fp, &err), 0);
	struct cvm_snp_policy pol;
	cvm_snp_policy_default(&pol);
	pol.allow_emulated = true;
	struct cvm_key *sk = NULL;
	assert_int_equal(cvm_key_generate_rsa(2048, 0, &sk, &err), 0);
	struct cvm_attest_service_config cfg = { .issuer = "https://azg.test", .signing_key = sk,
						 .roots = vm->roots, .snp_policy = &pol };
	assert_int_equal(cvm_attest_service_new(&cfg, &vm->svc, &err), 0);
	cvm_key_free(sk);
	assert_int_equal(cvm_key_generate_rsa(2048, 0, &vm->ak, &err), 0);
	assert_int_equal(cvm_key_generate_rsa(2048, 0, &vm->enc, &err), 0);
	/* Runtime data with the AK, bound into the report like the HCL does. */
	json_t *jwk = NULL;
	assert_int_equal(cvm_key_to_jwk(vm->ak, false, &jwk, &err), 0);
	json_object_set_new(jwk, "kid", json_string("HCLAkPub"));
	json_t *rt = json_pack("{s:[o], s:{s:b, s:s}}", "keys", jwk, "vm-configuration",
			       "secure-boot", 1, "vmUniqueId", "2dedc52a-0000-4000-8000-00000000abcd");
	vm->runtime = cvm_json_dump(rt);
	json_decref(rt);
	struct cvm_tee_emu_report_in in = { 0 };
	size_t dl = 0;
	assert_int_equal(cvm_digest("SHA256", vm->runtime, strlen(vm->runtime), in.report_data,
				    &dl, &err), 0);
	assert_int_equal(cvm_tee_emu_snp_report(vm->dir, &in, vm->report, &err), 0);
	char vp[128];
	snprintf(vp, sizeof(vp), "%s/vcek.pem", vm->dir);
	assert_int_equal(cvm_file_read(vp, 65536, &vm->vcek, &vm->vcek_len, &err), 0);
	/* Quote over all 24 SHA-256 PCRs. */
	uint8_t cat[24 * 32], pd[64];
	for (int i = 0; i < 24; i++) {
		memset(vm->pcrs[i], i * 7 + 1, 32);
		memcpy(cat + 32 * i, vm->pcrs[i], 32);
	}
	assert_int_equal(cvm_digest("SHA256", cat, sizeof(cat), pd, &dl, &err), 0);
	attest_hdr(&vm->quote, 0x8018);
	static const uint8_t sel[] = { 0, 0, 0, 1, 0x00, 0x0b, 3, 0xff, 0xff, 0xff };
	assert_int_equal(cvm_buf_append(&vm->quote, sel, sizeof(sel)), 0);
	tpm2b(&vm->quote, pd, 32);
	ak_sign(vm->ak, &vm->quote, true, &vm->quote_sig);
	/* EncKeyPub as TPM2B_PUBLIC and the AK's TPM2_Certify of it. */
	json_t *ej = NULL;
	assert_int_equal(cvm_key_to_jwk(vm->enc, false, &ej, &err), 0);
	const char *n64 = json_string_value(json_object_get(ej, "n"));
	uint8_t *n = NULL;
	size_t nl = 0;
	assert_int_equal(cvm_b64url_decode(n64, strlen(n64), &n, &nl, "n", &err), 0);
	json_decref(ej);
	struct cvm_buf pub = { 0 };
	be16(&pub, 0x0001);
	be16(&pub, 0x000b);
	be32(&pub, 0x00060072);
	tpm2b(&pub, NULL, 0);
	be16(&pub, 0x0010);
	be16(&pub, 0x0010);
	be16(&pub, (uint16_t)(nl * 8));
	be32(&pub, 0);
	tpm2b(&pub, n, nl);
	free(n);
	tpm2b(&vm->enc_pub, pub.data, pub.len);
	uint8_t name[2 + 32] = { 0x00, 0x0b };
	assert_int_equal(cvm_digest("SHA256", pub.data, pub.len, name + 2, &dl, &err), 0);
	cvm_buf_free(&pub);
	attest_hdr(&vm->certify, 0x8017);
	tpm2b(&vm->certify, name, sizeof(name));
	tpm2b(&vm->certify, name, sizeof(name));
	ak_sign(vm->ak, &vm->certify, false, &vm->certify_sig);
}

static void emu_vm_free(struct emu_vm *vm)
{
	cvm_attest_service_free(vm->svc);
	cvm_attest_roots_free(vm->roots);
	cvm_key_free(vm->ak);
	cvm_key_free(vm->enc);
	free(vm->runtime);
	free(vm->vcek);
	cvm_buf_free(&vm->quote);
	cvm_buf_free(&vm->quote_sig);
	cvm_buf_free(&vm->enc_pub);
	cvm_buf_free(&vm->certify);
	cvm_buf_free(&vm->certify_sig);
	char cmd[128];
	snprintf(cmd, sizeof(cmd), "rm -rf '%s'", vm->dir);
	assert_int_equal(system(cmd), 0);
}

static char *emu_body(const struct emu_vm *vm, const struct cvm_buf *certify_sig)
{
	char *rep = cvm_b64url_encode(vm->report, sizeof(vm->report));
	json_t *p = json_pack("{s:s, s:o}", "SnpReport", rep, "VcekCertChain",
			      b64(vm->vcek, vm->vcek_len));
	free(rep);
	char *pt = cvm_json_dump(p);
	json_decref(p);
	json_t *pcrs = json_array();
	for (int i = 0; i < 24; i++)
		json_array_append_new(pcrs, json_pack("{s:i, s:o}", "Index", i, "Digest",
						      b64(vm->pcrs[i], 32)));
	json_t *info = json_pack(
		"{s:s, s:o, s:{s:o, s:o, s:o, s:o, s:o, s:o},"
		" s:{s:s, s:{s:o, s:o}}}",
		"AttestationProtocolVersion", "2.0", "OSType", b64s("Windows"), "TpmInfo",
		"PcrQuote", b64(vm->quote.data, vm->quote.len), "PcrSignature",
		b64(vm->quote_sig.data, vm->quote_sig.len), "Pcrs", pcrs, "EncKeyPub",
		b64(vm->enc_pub.data, vm->enc_pub.len), "EncKeyCertifyInfo",
		b64(vm->certify.data, vm->certify.len), "EncKeyCertifyInfoSignature",
		b64(certify_sig->data, certify_sig->len), "IsolationInfo", "Type", "SevSnp",
		"Evidence", "Proof", b64s(pt), "RunTimeData", b64s(vm->runtime));
	free(pt);
	assert_non_null(info);
	char *body = body_of(info);
	json_decref(info);
	return body;
}

/* Open the sealed token with the enc key as the guest's vTPM would. */
static char *unseal(struct cvm_key *enc, const char *sealed)
{
	struct cvm_err err = { 0 };
	uint8_t *txt = NULL;
	size_t tl = 0;
	assert_int_equal(cvm_b64url_decode(sealed, strlen(sealed), &txt, &tl, "t", &err), 0);
	json_t *o = json_loadb((const char *)txt, tl, 0, NULL);
	free(txt);
	assert_non_null(o);
	uint8_t *iv, *tag, *ct, *ek;
	size_t ivl, tagl, ctl, ekl;
	const char *v = str_at(o, "EncryptionParams.Iv");
	assert_int_equal(cvm_b64_decode(v, strlen(v), &iv, &ivl, "iv", &err), 0);
	v = str_at(o, "AuthenticationData");
	assert_int_equal(cvm_b64_decode(v, strlen(v), &tag, &tagl, "tag", &err), 0);
	v = str_at(o, "Jwt");
	assert_int_equal(cvm_b64_decode(v, strlen(v), &ct, &ctl, "ct", &err), 0);
	v = str_at(o, "EncryptedInnerKey");
	assert_int_equal(cvm_b64_decode(v, strlen(v), &ek, &ekl, "ek", &err), 0);
	json_decref(o);
	uint8_t key[512];
	size_t kl = sizeof(key);
	EVP_PKEY_CTX *pc = EVP_PKEY_CTX_new(cvm_key_pkey(enc), NULL);
	assert_int_equal(EVP_PKEY_decrypt_init(pc), 1);
	assert_int_equal(EVP_PKEY_CTX_set_rsa_padding(pc, RSA_PKCS1_PADDING), 1);
	assert_int_equal(EVP_PKEY_decrypt(pc, key, &kl, ek, ekl), 1);
	EVP_PKEY_CTX_free(pc);
	assert_int_equal(kl, 32);
	char *jwt = calloc(1, ctl + 1);
	assert_int_equal(cvm_aes_gcm_open(key, 32, iv, "Transport Key", 13, ct, ctl, tag,
					  (uint8_t *)jwt, &err), 0);
	free(iv);
	free(tag);
	free(ct);
	free(ek);
	return jwt;
}

static void test_sealed_end_to_end(void **state)
{
	(void)state;
	struct emu_vm vm;
	emu_vm_init(&vm);
	struct cvm_err err = { 0 };
	_cleanup_free_ char *body = emu_body(&vm, &vm.certify_sig);
	char *sealed = NULL;
	int rc = cvm_attest_service_attest_azureguest(vm.svc, body, strlen(body), &sealed, &err);
	if (rc)
		fprintf(stderr, "%s\n", err.msg);
	assert_int_equal(rc, 0);
	assert_false(cvm_str_startswith(sealed, "eyJhbGciOi")); /* not a bare JWT */
	_cleanup_free_ char *jwt = unseal(vm.enc, sealed);
	free(sealed);
	json_t *c = NULL;
	assert_int_equal(cvm_attest_service_verify_token(vm.svc, jwt, &c, &err), 0);
	assert_string_equal(str_at(c, "x-ms-attestation-type"), "azurevm");
	assert_true(json_is_true(cvm_json_path(c, "x-opencvm-emulated")));
	assert_true(json_is_true(cvm_json_path(c, "x-ms-azurevm-is-windows")));
	assert_true(json_is_true(cvm_json_path(c, "secureboot")));
	assert_string_equal(str_at(c, "x-ms-azurevm-vmid"), "2DEDC52A-0000-4000-8000-00000000ABCD");
	assert_string_equal(str_at(c, "x-ms-azurevm-osbuild"), "NotApplicable");
	json_t *key = json_array_get(cvm_json_path(c, "x-ms-runtime.keys"), 0);
	assert_string_equal(str_at(key, "kid"), "TpmEphemeralEncryptionKey");
	json_t *ej = NULL;
	assert_int_equal(cvm_key_to_jwk(vm.enc, false, &ej, &err), 0);
	assert_string_equal(str_at(key, "n"), str_at(ej, "n"));
	assert_string_equal(str_at(c, "x-ms-isolation-tee.x-ms-compliance-status"),
			    "opencvm-emulated");
	json_decref(ej);
	json_decref(c);
	/* Twin: the certification signed by the encryption key itself, not the AK. */
	struct cvm_buf bad = { 0 };
	ak_sign(vm.enc, &vm.certify, false, &bad);
	_cleanup_free_ char *b1 = emu_body(&vm, &bad);
	cvm_buf_free(&bad);
	sealed = NULL;
	assert_int_equal(cvm_attest_service_attest_azureguest(vm.svc, b1, strlen(b1), &sealed,
							      &err), -EBADMSG);
	assert_non_null(strstr(err.msg, "EncKeyCertifyInfoSignature"));
	/* Twin: a certification (properly signed) that names another key. */
	vm.certify.data[vm.certify.len - 1] ^= 1;
	struct cvm_buf resigned = { 0 };
	ak_sign(vm.ak, &vm.certify, false, &resigned);
	_cleanup_free_ char *b2 = emu_body(&vm, &resigned);
	cvm_buf_free(&resigned);
	vm.certify.data[vm.certify.len - 1] ^= 1;
	assert_int_equal(cvm_attest_service_attest_azureguest(vm.svc, b2, strlen(b2), &sealed,
							      &err), 0);
	free(sealed);
	/* (A changed qualifiedName passes: it depends on the parent chain the request does not
	 * carry.) The certified name itself: its last byte sits before the 36-byte qualifiedName. */
	vm.certify.data[vm.certify.len - 37] ^= 1;
	struct cvm_buf resigned2 = { 0 };
	ak_sign(vm.ak, &vm.certify, false, &resigned2);
	_cleanup_free_ char *b3 = emu_body(&vm, &resigned2);
	cvm_buf_free(&resigned2);
	sealed = NULL;
	assert_int_equal(cvm_attest_service_attest_azureguest(vm.svc, b3, strlen(b3), &sealed,
							      &err), -EBADMSG);
	assert_non_null(strstr(err.msg, "EncKeyCertifyInfo.name: does not name"));
	assert_null(sealed);
	emu_vm_free(&vm);
}

/* ---- REST: POST /attest/AzureGuest through the registered routes ----------------------- */

static int free_port(void)
{
	int fd = socket(AF_INET, SOCK_STREAM, 0);
	struct sockaddr_in a = { .sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK) };
	socklen_t al = sizeof(a);
	assert_true(fd >= 0);
	assert_int_equal(bind(fd, (struct sockaddr *)&a, sizeof(a)), 0);
	assert_int_equal(getsockname(fd, (struct sockaddr *)&a, &al), 0);
	close(fd);
	return ntohs(a.sin_port);
}

static json_t *post(const char *url, const char *body, long want)
{
	struct cvm_http_client_opts o = { .allow_plain_http_loopback = true };
	struct cvm_http_result res = { 0 };
	struct cvm_err err = { 0 };
	const char *hdrs[] = { "Content-Type: application/json", NULL };
	assert_int_equal(cvm_http_request(&o, "POST", url, hdrs, body, strlen(body), &res, &err), 0);
	if (res.status != want)
		fprintf(stderr, "POST %s -> %ld %.*s\n", url, res.status, (int)res.body.len,
			(const char *)res.body.data);
	assert_int_equal(res.status, want);
	json_t *j = json_loadb((const char *)res.body.data, res.body.len, 0, NULL);
	cvm_http_result_free(&res);
	assert_non_null(j);
	return j;
}

static void test_rest(void **state)
{
	(void)state;
	struct cvm_err err = { 0 };
	int port = free_port();
	char listen[64], base[64], url[256];
	snprintf(listen, sizeof(listen), "127.0.0.1:%d", port);
	snprintf(base, sizeof(base), "http://127.0.0.1:%d", port);
	struct cvm_attest_roots *roots = NULL;
	struct cvm_key *k = NULL;
	assert_int_equal(cvm_attest_roots_new_builtin(&roots, &err), 0);
	assert_int_equal(cvm_key_generate_rsa(2048, 0, &k, &err), 0);
	struct cvm_attest_service_config cfg = { .issuer = base, .signing_key = k, .roots = roots };
	struct cvm_attest_service *svc = NULL;
	assert_int_equal(cvm_attest_service_new(&cfg, &svc, &err), 0);
	cvm_key_free(k);
	struct cvm_http_config hc = { .listen = listen, .threads = 2 };
	struct cvm_http_server *srv = NULL;
	assert_int_equal(cvm_http_server_new(&hc, &srv, &err), 0);
	assert_int_equal(cvm_attest_register_routes(svc, srv, &err), 0);
	assert_int_equal(cvm_http_server_start(srv, &err), 0);

	struct sample s;
	sample_load(&defs[1], &s);
	_cleanup_free_ char *body = body_of_sample(&s);
	static const char *const versions[] = { "2020-10-01", "2022-08-01" };
	for (size_t i = 0; i < CVM_ARRAY_SIZE(versions); i++) {
		snprintf(url, sizeof(url), "%s/attest/AzureGuest?api-version=%s", base, versions[i]);
		json_t *r = post(url, body, 200);
		json_t *c = NULL;
		assert_int_equal(cvm_attest_service_verify_token(
					 svc, json_string_value(json_object_get(r, "token")), &c, &err),
				 0);
		assert_string_equal(str_at(c, "x-ms-attestation-type"), "azurevm");
		assert_string_equal(str_at(c, "iss"), base);
		json_decref(c);
		const char *node = getenv("CVM_NODE"), *script = getenv("CVM_JOSE_SCRIPT");
		if (node && script) {
			_cleanup_free_ char *cmd = cvm_asprintf(
				"'%s' '%s' '%s' '%s'", node, script, base,
				json_string_value(json_object_get(r, "token")));
			assert_int_equal(system(cmd), 0);
		}
		json_decref(r);
	}
	/* Twins: unknown api-version; a wrong PCR (400 naming the field). */
	snprintf(url, sizeof(url), "%s/attest/AzureGuest?api-version=1999-01-01", base);
	json_t *r = post(url, body, 400);
	assert_non_null(strstr(str_at(r, "error.message"), "api-version"));
	json_decref(r);
	s.pcrs[4][0] ^= 1;
	_cleanup_free_ char *bad = body_of_sample(&s);
	snprintf(url, sizeof(url), "%s/attest/AzureGuest?api-version=2020-10-01", base);
	r = post(url, bad, 400);
	assert_non_null(strstr(str_at(r, "error.message"), "AttestationInfo.TpmInfo.PcrQuote"));
	json_decref(r);
	r = post(url, "{\"AttestationInfo\": 5}", 400);
	assert_non_null(strstr(str_at(r, "error.message"), "AttestationInfo"));
	json_decref(r);
	sample_free(&s);
	cvm_http_server_free(srv);
	cvm_attest_service_free(svc);
	cvm_attest_roots_free(roots);
}

int main(void)
{
	cvm_log_set_level(CVM_LOG_ERROR);
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_samples_issue_token),
		cmocka_unit_test(test_tampered_twins),
		cmocka_unit_test(test_missing_fields),
		cmocka_unit_test(test_foreign_tcg_log),
		cmocka_unit_test(test_optional_forms),
		cmocka_unit_test(test_policy),
		cmocka_unit_test(test_seal),
		cmocka_unit_test(test_sealed_end_to_end),
		cmocka_unit_test(test_rest),
	};
	return cmocka_run_group_tests(tests, setup, teardown);
}
