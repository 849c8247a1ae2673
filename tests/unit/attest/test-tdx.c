/* SPDX-License-Identifier: Apache-2.0 */
/* Intel TDX quotes: every real sample verifies to the Intel SGX Root CA; flipped bits, broken
 * bindings and truncations are refused; collateral gives a TCB status; policy knobs. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <cmocka.h>

#include <opencvm/attest.h>

#include <openssl/ec.h>
#include <openssl/pem.h>
#include <openssl/x509v3.h>

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

static const struct {
	const char *path;
	uint16_t version;
	bool td15;
	size_t quote_len; /* bytes used; files may carry more */
} quotes[] = {
	{ "tdx/gotdx-spr-e4/quote.bin", 4, false, 4935 },
	{ "tdx/gotdx-cos113/quote.bin", 4, false, 4935 },
	{ "tdx/gotdx-v5/quote.bin", 5, true, 5006 },
	{ "tdx/trustee-4/quote.bin", 4, false, 4936 },
	{ "tdx/trustee-5/quote.bin", 5, true, 5006 },
	{ "tdx/trustee-6/quote.bin", 4, false, 4936 },
	{ "tdx/oak/quote.bin", 4, false, 4935 },
	{ "azure/tdx/td-quote.bin", 4, false, 4936 },
};

static void test_real_quotes_verify(void **state)
{
	(void)state;
	for (size_t i = 0; i < CVM_ARRAY_SIZE(quotes); i++) {
		size_t len = 0;
		_cleanup_free_ uint8_t *q = load(quotes[i].path, &len);
		struct cvm_tdx_policy pol;
		cvm_tdx_policy_default(&pol);
		pol.allow_debug = true;
		struct cvm_tdx_verdict v;
		struct cvm_err err = { 0 };
		int rc = cvm_tdx_verify(q, len, NULL, &pol, &v, &err);
		if (rc)
			fprintf(stderr, "%s: %s\n", quotes[i].path, err.msg);
		assert_int_equal(rc, 0);
		assert_int_equal(v.quote.version, quotes[i].version);
		assert_int_equal(v.quote.body.td15, quotes[i].td15);
		if (v.quote.quote_len != quotes[i].quote_len)
			fprintf(stderr, "%s: quote_len %zu\n", quotes[i].path, v.quote.quote_len);
		assert_int_equal(v.quote.quote_len, quotes[i].quote_len);
		/* Default policy: debuggable TDs are refused, others pass. */
		rc = cvm_tdx_verify(q, len, NULL, NULL, &v, &err);
		if (v.quote.body.td_attributes & 1)
			assert_int_equal(rc, -EPERM);
		else
			assert_int_equal(rc, 0);
	}
	/* trustee's expected claims for quote 4: a debug TD with this report data. */
	size_t len = 0;
	_cleanup_free_ uint8_t *q = load("tdx/trustee-4/quote.bin", &len);
	struct cvm_tdx_quote pq;
	struct cvm_err err = { 0 };
	assert_int_equal(cvm_tdx_quote_parse(q, len, &pq, &err), 0);
	assert_true(pq.body.td_attributes & 1);
	_cleanup_free_ char *rd = cvm_hex_encode(pq.body.report_data, 64);
	assert_true(cvm_str_startswith(rd, "7c71fe2c86eff65a7cf8dbc22b3275689fd0464a267baced1bf94fc13246"));
	json_t *j = NULL;
	assert_int_equal(cvm_tdx_quote_to_json(&pq, &j, &err), 0);
	assert_non_null(json_object_get(j, "rtmr3"));
	json_decref(j);
}

static void test_tampering_rejected(void **state)
{
	(void)state;
	struct cvm_tdx_policy pol;
	cvm_tdx_policy_default(&pol);
	pol.allow_debug = true;
	for (size_t i = 0; i < CVM_ARRAY_SIZE(quotes); i++) {
		size_t len = 0;
		_cleanup_free_ uint8_t *q = load(quotes[i].path, &len);
		struct cvm_tdx_quote pq;
		struct cvm_err err = { 0 };
		assert_int_equal(cvm_tdx_quote_parse(q, len, &pq, &err), 0);
		struct cvm_tdx_verdict v;
		size_t sig_off = pq.signed_len + 4;
		/* Signed region (header + body), every 37th byte. */
		for (size_t off = 0; off < pq.signed_len; off += 37) {
			q[off] ^= (uint8_t)(1u << (off % 8));
			assert_int_not_equal(cvm_tdx_verify(q, len, NULL, &pol, &v, &err), 0);
			q[off] ^= (uint8_t)(1u << (off % 8));
		}
		/* Quote signature, attestation key, QE report, QE signature, QE auth data. */
		size_t spots[] = { sig_off + 3, sig_off + 40, sig_off + 64 + 5, sig_off + 134 + 70,
				   sig_off + 134 + 330, sig_off + 134 + 384 + 9,
				   pq.qe_auth_off };
		for (size_t k = 0; k < CVM_ARRAY_SIZE(spots); k++) {
			if (k == 6 && pq.qe_auth_len == 0)
				continue;
			q[spots[k]] ^= 0x04;
			assert_int_not_equal(cvm_tdx_verify(q, len, NULL, &pol, &v, &err), 0);
			q[spots[k]] ^= 0x04;
		}
		/* Trailing bytes are outside the quote: changing them changes nothing. */
		if (len > pq.quote_len) {
			q[len - 1] ^= 0xff;
			assert_int_equal(cvm_tdx_verify(q, len, NULL, &pol, &v, &err), 0);
		}
		/* Truncations fail to parse. */
		size_t cuts[] = { 10, 48, 100, pq.signed_len + 2, pq.signed_len + 500, pq.quote_len - 1 };
		for (size_t k = 0; k < CVM_ARRAY_SIZE(cuts); k++)
			assert_int_equal(cvm_tdx_quote_parse(q, cuts[k], &pq, &err), -EINVAL);
	}
}

static void test_header_checks(void **state)
{
	(void)state;
	size_t len = 0;
	_cleanup_free_ uint8_t *q = load("tdx/trustee-6/quote.bin", &len);
	struct cvm_tdx_quote pq;
	struct cvm_err err = { 0 };
	struct { size_t off; uint8_t val; const char *what; } cases[] = {
		{ 0, 3, "version" }, { 2, 3, "attestation_key_type" }, { 4, 0, "tee_type" },
	};
	for (size_t i = 0; i < CVM_ARRAY_SIZE(cases); i++) {
		uint8_t saved = q[cases[i].off];
		q[cases[i].off] = cases[i].val;
		assert_int_equal(cvm_tdx_quote_parse(q, len, &pq, &err), -EINVAL);
		assert_non_null(strstr(err.msg, cases[i].what));
		q[cases[i].off] = saved;
	}
	/* A root that is not Intel's: the PCK chain fails. */
	EVP_PKEY *k = EVP_EC_gen("P-256");
	X509 *fake = X509_new();
	X509_set_version(fake, 2);
	X509_NAME_add_entry_by_txt(X509_get_subject_name(fake), "CN", MBSTRING_ASC,
				   (const unsigned char *)"Intel SGX Root CA", -1, -1, 0);
	X509_set_issuer_name(fake, X509_get_subject_name(fake));
	X509_gmtime_adj(X509_getm_notBefore(fake), -3600);
	X509_gmtime_adj(X509_getm_notAfter(fake), 3600);
	X509_set_pubkey(fake, k);
	X509_sign(fake, k, EVP_sha256());
	struct cvm_tdx_verify_opts o = { .root = fake };
	struct cvm_tdx_verdict v;
	assert_int_equal(cvm_tdx_verify(q, len, &o, NULL, &v, &err), -EBADMSG);
	assert_non_null(strstr(err.msg, "pck_chain"));
	/* Before the PCK certificate was issued. */
	o = (struct cvm_tdx_verify_opts){ .now = 1600000000 };
	assert_int_equal(cvm_tdx_verify(q, len, &o, NULL, &v, &err), -EBADMSG);
	X509_free(fake);
	EVP_PKEY_free(k);
}

/* Sign {"tcbInfo":...} / {"enclaveIdentity":...} with a test TCB signing chain. */
static char *sign_collateral(const char *member, const char *inner, EVP_PKEY *key)
{
	EVP_MD_CTX *md = EVP_MD_CTX_new();
	uint8_t der[80];
	size_t dl = sizeof(der);
	assert_int_equal(EVP_DigestSignInit(md, NULL, EVP_sha256(), NULL, key), 1);
	assert_int_equal(EVP_DigestSign(md, der, &dl, (const uint8_t *)inner, strlen(inner)), 1);
	EVP_MD_CTX_free(md);
	const unsigned char *p = der;
	ECDSA_SIG *s = d2i_ECDSA_SIG(NULL, &p, (long)dl);
	const BIGNUM *r, *ss;
	ECDSA_SIG_get0(s, &r, &ss);
	uint8_t raw[64];
	BN_bn2binpad(r, raw, 32);
	BN_bn2binpad(ss, raw + 32, 32);
	ECDSA_SIG_free(s);
	_cleanup_free_ char *hex = cvm_hex_encode(raw, 64);
	return cvm_asprintf("{\"%s\":%s,\"signature\":\"%s\"}", member, inner, hex);
}

static X509 *mk_cert(const char *cn, EVP_PKEY *key, X509 *issuer, EVP_PKEY *ikey)
{
	X509 *x = X509_new();
	X509_set_version(x, 2);
	ASN1_INTEGER_set(X509_get_serialNumber(x), 7);
	X509_NAME_add_entry_by_txt(X509_get_subject_name(x), "CN", MBSTRING_ASC,
				   (const unsigned char *)cn, -1, -1, 0);
	X509_set_issuer_name(x, issuer ? X509_get_subject_name(issuer) : X509_get_subject_name(x));
	X509_gmtime_adj(X509_getm_notBefore(x), -3600);
	X509_gmtime_adj(X509_getm_notAfter(x), 86400);
	X509_set_pubkey(x, key);
	if (!issuer) {
		X509V3_CTX ctx;
		X509V3_set_ctx(&ctx, x, x, NULL, NULL, 0);
		X509_EXTENSION *e = X509V3_EXT_conf_nid(NULL, &ctx, NID_basic_constraints,
							"critical,CA:TRUE");
		X509_add_ext(x, e, -1);
		X509_EXTENSION_free(e);
	}
	X509_sign(x, ikey ? ikey : key, EVP_sha256());
	return x;
}

static void test_collateral(void **state)
{
	(void)state;
	size_t len = 0, tl = 0, ql = 0;
	_cleanup_free_ uint8_t *q = load("tdx/gotdx-spr-e4/quote.bin", &len);
	_cleanup_free_ uint8_t *tcb = load("intel/sample_tcbInfo_response", &tl);
	_cleanup_free_ uint8_t *qe = load("intel/sample_qeIdentity_response", &ql);
	struct cvm_err err = { 0 };
	struct cvm_tdx_policy pol;
	cvm_tdx_policy_default(&pol);
	pol.allow_debug = true;
	struct cvm_tdx_verdict v;
	/* Unsigned by a known chain and not vouched for: refused. */
	struct cvm_tdx_verify_opts o = { .tcb_info = (const char *)tcb, .tcb_info_len = tl };
	assert_int_equal(cvm_tdx_verify(q, len, &o, &pol, &v, &err), -EBADMSG);
	assert_non_null(strstr(err.msg, "collateral"));
	/* Operator-trusted files: a status for this platform (FMSPC 50806f000000). */
	o.collateral_trusted = true;
	o.qe_identity = (const char *)qe;
	o.qe_identity_len = ql;
	/* The sample TCB info needs component SVNs of 5; this PCK has 3: no level matches, which
	 * the default policy refuses and an explicit list may accept. */
	assert_int_equal(cvm_tdx_verify(q, len, &o, &pol, &v, &err), -EPERM);
	assert_non_null(strstr(err.msg, "NotSupported"));
	const char *lenient[] = { "NotSupported", "UpToDate", NULL };
	pol.allowed_tcb_status = lenient;
	assert_int_equal(cvm_tdx_verify(q, len, &o, &pol, &v, &err), 0);
	assert_string_equal(v.tcb_status, "NotSupported");
	assert_string_equal(v.qe_tcb_status, "UpToDate");
	_cleanup_free_ char *fm = cvm_hex_encode(v.fmspc, 6);
	assert_string_equal(fm, "50806f000000");
	/* Only UpToDate accepted: depends on the computed status. */
	const char *only[] = { "Revoked", NULL };
	pol.allowed_tcb_status = only;
	assert_int_equal(cvm_tdx_verify(q, len, &o, &pol, &v, &err), -EPERM);
	pol.allowed_tcb_status = lenient;
	/* Stale collateral when dates are checked (the sample expired in 2023). */
	o.check_collateral_dates = true;
	assert_int_equal(cvm_tdx_verify(q, len, &o, &pol, &v, &err), -EBADMSG);
	assert_non_null(strstr(err.msg, "nextUpdate"));
	o.check_collateral_dates = false;
	/* Collateral for another platform (different FMSPC) is refused. */
	char *other = strdup((const char *)tcb);
	char *f = strstr(other, "50806f000000");
	assert_non_null(f);
	f[0] = '9';
	o.tcb_info = other;
	assert_int_equal(cvm_tdx_verify(q, len, &o, &pol, &v, &err), -EBADMSG);
	assert_non_null(strstr(err.msg, "FMSPC"));
	free(other);

	/* Signed collateral: a test TCB signing chain; a flipped byte breaks it. */
	EVP_PKEY *rk = EVP_EC_gen("P-256"), *sk = EVP_EC_gen("P-256");
	X509 *root = mk_cert("Test Root", rk, NULL, NULL);
	X509 *signer = mk_cert("Test TCB Signing", sk, root, rk);
	char *spem = NULL, *rpem = NULL;
	BIO *b = BIO_new(BIO_s_mem());
	PEM_write_bio_X509(b, signer);
	PEM_write_bio_X509(b, root);
	char *data = NULL;
	long n = BIO_get_mem_data(b, &data);
	spem = strndup(data, (size_t)n);
	BIO_free(b);
	(void)rpem;
	const char *start = strchr((const char *)tcb, ':') + 1;
	const char *end = strstr((const char *)tcb, ",\"signature\"");
	char *inner = strndup(start, (size_t)(end - start));
	char *signed_body = sign_collateral("tcbInfo", inner, sk);
	o = (struct cvm_tdx_verify_opts){ .tcb_info = signed_body, .tcb_info_len = strlen(signed_body),
					  .collateral_chain = spem,
					  .collateral_chain_len = strlen(spem),
					  .collateral_root = root };
	assert_int_equal(cvm_tdx_verify(q, len, &o, &pol, &v, &err), 0);
	assert_true(v.tcb_status[0] != '\0');
	char *p = strstr(signed_body, "UpToDate");
	p[0] = 'u';
	assert_int_equal(cvm_tdx_verify(q, len, &o, &pol, &v, &err), -EBADMSG);
	free(inner);
	free(signed_body);
	free(spem);
	X509_free(root);
	X509_free(signer);
	EVP_PKEY_free(rk);
	EVP_PKEY_free(sk);
}

static void test_policy_knobs(void **state)
{
	(void)state;
	size_t len = 0;
	_cleanup_free_ uint8_t *q = load("tdx/trustee-6/quote.bin", &len);
	struct cvm_err err = { 0 };
	struct cvm_tdx_policy p;
	cvm_tdx_policy_default(&p);
	p.allow_debug = true;
	struct cvm_tdx_verdict v;
	assert_int_equal(cvm_tdx_verify(q, len, NULL, &p, &v, &err), 0);
#define EXPECT(setup, want) do { cvm_tdx_policy_default(&p); p.allow_debug = true; setup; \
		assert_int_equal(cvm_tdx_policy_check(&v, &p, &err), want); } while (0)
	EXPECT((void)0, 0);
	EXPECT((p.check_mrseam = true, memcpy(p.mrseam, v.quote.body.mrseam, 48)), 0);
	EXPECT((p.check_mrseam = true), -EPERM);
	EXPECT((p.check_rtmr[2] = true, memcpy(p.rtmr[2], v.quote.body.rtmr[2], 48)), 0);
	EXPECT((p.check_rtmr[0] = true, p.rtmr[0][5] = 1), -EPERM);
	EXPECT((p.check_report_data = true, memcpy(p.report_data, v.quote.body.report_data, 64)), 0);
	EXPECT((p.check_report_data = true, p.report_data[63] ^= 1), -EPERM);
	EXPECT((p.mrtds = (const uint8_t(*)[48])v.quote.body.mrtd, p.n_mrtds = 1), 0);
	uint8_t other[1][48] = { { 1 } };
	EXPECT((p.mrtds = (const uint8_t(*)[48])other, p.n_mrtds = 1), -EPERM);
	EXPECT((p.check_xfam = true, p.xfam = v.quote.body.xfam ^ 1), -EPERM);
	EXPECT((p.check_td_attributes = true, p.td_attributes = v.quote.body.td_attributes), 0);
	EXPECT((p.min_tee_tcb_svn[0] = 255), -EPERM);
	EXPECT((p.min_qe_svn = 65535), -EPERM);
	EXPECT((p.check_mrowner = true, p.mrowner[0] = 1), -EPERM);
	EXPECT((p.check_qe_vendor_id = true), -EPERM);
#undef EXPECT
	json_t *c = json_object();
	assert_int_equal(cvm_tdx_verdict_claims(&v, c, &err), 0);
	assert_int_equal(strlen(json_string_value(json_object_get(c, "x-ms-tdx-mrtd"))), 96);
	json_decref(c);
}

static void test_policy_json(void **state)
{
	(void)state;
	size_t len = 0;
	_cleanup_free_ uint8_t *q = load("tdx/trustee-6/quote.bin", &len);
	struct cvm_err err = { 0 };
	struct cvm_tdx_quote pq;
	assert_int_equal(cvm_tdx_quote_parse(q, len, &pq, &err), 0);
	_cleanup_free_ char *mrtd = cvm_hex_encode(pq.body.mrtd, 48);
	_cleanup_free_ char *rtmr1 = cvm_hex_encode(pq.body.rtmr[1], 48);
	uint8_t le[8];
	for (int i = 0; i < 8; i++)
		le[i] = (uint8_t)(pq.body.xfam >> (8 * i));
	_cleanup_free_ char *xfam = cvm_hex_encode(le, 8);
	_cleanup_free_ char *text = cvm_asprintf(
		"{\"allow_debug\": true, \"mrtds\": [\"%s\"], \"rtmr1\": \"%s\", \"xfam\": \"%s\","
		" \"allowed_tcb_status\": [\"UpToDate\"], \"min_qe_svn\": 0}", mrtd, rtmr1, xfam);
	json_t *j = json_loads(text, 0, NULL);
	struct cvm_tdx_policy p;
	struct cvm_tdx_policy_store *st = NULL;
	assert_int_equal(cvm_tdx_policy_from_json(j, &p, &st, &err), 0);
	json_decref(j);
	struct cvm_tdx_verdict v;
	assert_int_equal(cvm_tdx_verify(q, len, NULL, &p, &v, &err), 0);
	p.rtmr[1][0] ^= 1;
	assert_int_equal(cvm_tdx_verify(q, len, NULL, &p, &v, &err), -EPERM);
	cvm_tdx_policy_store_free(st);
	const char *bad[] = { "{\"rtmr4\": \"00\"}", "{\"mrseam\": \"zz\"}", "{\"allow_debug\": 1}",
			      "{\"min_qe_svn\": -1}", "{\"mrtds\": [1]}", "{\"what\": 1}", "[]",
			      "{\"allowed_tcb_status\": [1]}", "{\"xfam\": \"00\"}" };
	for (size_t i = 0; i < CVM_ARRAY_SIZE(bad); i++) {
		j = json_loads(bad[i], 0, NULL);
		assert_non_null(j);
		assert_int_equal(cvm_tdx_policy_from_json(j, &p, &st, &err), -EINVAL);
		json_decref(j);
	}
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_real_quotes_verify),
		cmocka_unit_test(test_tampering_rejected),
		cmocka_unit_test(test_header_checks),
		cmocka_unit_test(test_collateral),
		cmocka_unit_test(test_policy_knobs),
		cmocka_unit_test(test_policy_json),
	};
	evidence_dir();
	return cmocka_run_group_tests(tests, NULL, NULL);
}
