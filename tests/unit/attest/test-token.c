/* SPDX-License-Identifier: Apache-2.0 */
/* Attestation service: MAA-shaped requests built from real Azure evidence and from the
 * emulator, tokens checked with OpenSSL directly against the published JWKS x5c certificate,
 * and the refusals (runtime data binding, tampering, emulated evidence, policy); policy PUTs
 * authorized and audited (every outcome one record, chain verifies). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include <cmocka.h>

#include <opencvm/attest.h>
#include <opencvm/audit.h>
#include <opencvm/http.h>
#include <opencvm/json.h>

#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>

#include <openssl/evp.h>
#include <openssl/x509.h>

#define ISSUER "http://127.0.0.1:8443"

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

struct fixture {
	char dir[64];
	struct cvm_attest_roots *roots;
	struct cvm_attest_service *svc;
};

static int setup(void **state)
{
	struct fixture *f = calloc(1, sizeof(*f));
	struct cvm_err err = { 0 };
	snprintf(f->dir, sizeof(f->dir), "/tmp/cvm-token-XXXXXX");
	if (!mkdtemp(f->dir) || cvm_attest_roots_new_builtin(&f->roots, &err) < 0)
		return -1;
	char kd[128];
	snprintf(kd, sizeof(kd), "%s/keys", f->dir);
	struct cvm_attest_service_config cfg = { .issuer = ISSUER "/", .key_dir = kd,
						 .roots = f->roots };
	if (cvm_attest_service_new(&cfg, &f->svc, &err) < 0) {
		fprintf(stderr, "service: %s\n", err.msg);
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
	cvm_attest_service_free(f->svc);
	cvm_attest_roots_free(f->roots);
	char cmd[160];
	snprintf(cmd, sizeof(cmd), "rm -rf '%s'", f->dir);
	if (system(cmd) != 0)
		fprintf(stderr, "cleanup failed\n");
	free(f);
	return 0;
}

/* POST /attest/SevSnpVm body from an Azure HCL report: the SNP report at 0x20, the runtime
 * data JSON at 0x4D4 (length at 0x4D0). */
static char *azure_body(const char *hcl, const char *vcek, bool flip_runtime, bool flip_report,
			const char *nonce)
{
	size_t hl = 0, vl = 0;
	_cleanup_free_ uint8_t *h = load(hcl, &hl);
	_cleanup_free_ uint8_t *v = load(vcek, &vl);
	assert_true(hl >= 0x4D4);
	uint32_t n = (uint32_t)h[0x4D0] | (uint32_t)h[0x4D1] << 8 | (uint32_t)h[0x4D2] << 16 |
		     (uint32_t)h[0x4D3] << 24;
	assert_true(0x4D4 + (size_t)n <= hl);
	if (flip_runtime)
		h[0x4D4 + 10] ^= 1;
	if (flip_report)
		h[0x20 + 0x90] ^= 1;
	_cleanup_free_ char *snp = cvm_b64url_encode(h + 0x20, CVM_SNP_REPORT_SIZE);
	_cleanup_free_ char *chain = cvm_b64_encode(v, vl);
	json_t *inner = json_pack("{s:s, s:s}", "SnpReport", snp, "VcekCertChain", chain);
	_cleanup_free_ char *inner_s = cvm_json_dump(inner);
	json_decref(inner);
	_cleanup_free_ char *report = cvm_b64url_encode(inner_s, strlen(inner_s));
	_cleanup_free_ char *rt = cvm_b64url_encode(h + 0x4D4, n);
	json_t *body = json_pack("{s:s, s:{s:s, s:s}}", "report", report, "runtimeData", "data", rt,
				 "dataType", "JSON");
	if (nonce)
		json_object_set_new(body, "nonce", json_string(nonce));
	char *out = cvm_json_dump(body);
	json_decref(body);
	return out;
}

/* RS256 check with OpenSSL only, using the x5c certificate from the service's JWKS. */
static json_t *independent_verify(struct cvm_attest_service *svc, const char *token)
{
	struct cvm_err err = { 0 };
	json_t *jwks = NULL;
	assert_int_equal(cvm_attest_service_jwks(svc, &jwks, &err), 0);
	const char *dot1 = strchr(token, '.');
	const char *dot2 = dot1 ? strchr(dot1 + 1, '.') : NULL;
	assert_non_null(dot2);
	uint8_t *hdr = NULL, *payload = NULL, *sig = NULL;
	size_t hlen = 0, plen = 0, slen = 0;
	assert_int_equal(cvm_b64url_decode(token, (size_t)(dot1 - token), &hdr, &hlen, "h", &err), 0);
	assert_int_equal(cvm_b64url_decode(dot1 + 1, (size_t)(dot2 - dot1 - 1), &payload, &plen, "p",
					   &err), 0);
	assert_int_equal(cvm_b64url_decode(dot2 + 1, strlen(dot2 + 1), &sig, &slen, "s", &err), 0);
	json_t *h = json_loadb((const char *)hdr, hlen, 0, NULL);
	assert_string_equal(json_string_value(json_object_get(h, "alg")), "RS256");
	assert_string_equal(json_string_value(json_object_get(h, "jku")), ISSUER "/certs");
	const char *kid = json_string_value(json_object_get(h, "kid"));
	json_t *key = NULL, *k;
	size_t i;
	json_array_foreach(json_object_get(jwks, "keys"), i, k)
		if (strcmp(json_string_value(json_object_get(k, "kid")), kid) == 0)
			key = k;
	assert_non_null(key);
	const char *x5c = json_string_value(json_array_get(json_object_get(key, "x5c"), 0));
	uint8_t *der = NULL;
	size_t dl = 0;
	assert_int_equal(cvm_b64_decode(x5c, strlen(x5c), &der, &dl, "x5c", &err), 0);
	const unsigned char *p = der;
	X509 *cert = d2i_X509(NULL, &p, (long)dl);
	assert_non_null(cert);
	EVP_MD_CTX *md = EVP_MD_CTX_new();
	assert_int_equal(EVP_DigestVerifyInit(md, NULL, EVP_sha256(), NULL, X509_get0_pubkey(cert)), 1);
	assert_int_equal(EVP_DigestVerify(md, sig, slen, (const uint8_t *)token,
					  (size_t)(dot2 - token)), 1);
	EVP_MD_CTX_free(md);
	X509_free(cert);
	json_t *claims = json_loadb((const char *)payload, plen, 0, NULL);
	assert_non_null(claims);
	free(hdr);
	free(payload);
	free(sig);
	free(der);
	json_decref(h);
	json_decref(jwks);
	return claims;
}

static void test_azure_evidence_token(void **state)
{
	struct fixture *f = *state;
	struct cvm_err err = { 0 };
	_cleanup_free_ char *body = azure_body("azure/snp-milan/hcl-report.bin",
					       "azure/snp-milan/vcek.pem", false, false, "n-123");
	char *token = NULL;
	int rc = cvm_attest_service_attest_snp(f->svc, body, strlen(body), &token, &err);
	if (rc)
		fprintf(stderr, "%s\n", err.msg);
	assert_int_equal(rc, 0);
	json_t *c = independent_verify(f->svc, token);
	assert_string_equal(json_string_value(json_object_get(c, "iss")), ISSUER);
	assert_string_equal(json_string_value(json_object_get(c, "nonce")), "n-123");
	assert_string_equal(json_string_value(json_object_get(c, "x-ms-attestation-type")), "sevsnpvm");
	assert_string_equal(json_string_value(json_object_get(c, "x-ms-compliance-status")),
			    "azure-compliant-cvm");
	assert_string_equal(json_string_value(json_object_get(c, "x-ms-ver")), "1.0");
	assert_true(json_is_false(json_object_get(c, "x-opencvm-emulated")));
	assert_true(json_is_false(json_object_get(c, "x-ms-sevsnpvm-is-debuggable")));
	assert_int_equal(json_integer_value(json_object_get(c, "x-ms-sevsnpvm-vmpl")), 0);
	json_t *tee = json_object_get(c, "x-ms-isolation-tee");
	assert_string_equal(json_string_value(json_object_get(tee, "x-ms-attestation-type")),
			    "sevsnpvm");
	assert_non_null(json_object_get(tee, "x-ms-sevsnpvm-launchmeasurement"));
	json_t *keys = cvm_json_path(c, "x-ms-runtime.keys");
	assert_string_equal(json_string_value(json_object_get(json_array_get(keys, 0), "kid")),
			    "HCLAkPub");
	assert_true(json_integer_value(json_object_get(c, "exp")) >
		    json_integer_value(json_object_get(c, "iat")));
	const char *rd = json_string_value(json_object_get(c, "x-ms-sevsnpvm-reportdata"));
	assert_int_equal(strlen(rd), 128);
	assert_string_equal(rd + 64, "0000000000000000000000000000000000000000000000000000000000000000");
	json_decref(c);
	/* Our own verifier agrees; a flipped signature character does not verify. */
	json_t *claims = NULL;
	assert_int_equal(cvm_attest_service_verify_token(f->svc, token, &claims, &err), 0);
	json_decref(claims);
	size_t tl = strlen(token);
	token[tl - 5] = token[tl - 5] == 'A' ? 'B' : 'A';
	assert_int_equal(cvm_attest_service_verify_token(f->svc, token, &claims, &err), -EBADMSG);
	free(token);

	/* Genoa (Azure) and the v1 evidence as well. */
	const char *more[][2] = {
		{ "azure/snp-genoa/genoa-hcl-report.bin", "azure/snp-genoa/vcek-genoa.pem" },
		{ "azure/snp-milan-v1/evidence-v1-hcl-report.bin",
		  "azure/snp-milan-v1/evidence-v1-vcek.der" },
	};
	for (size_t i = 0; i < CVM_ARRAY_SIZE(more); i++) {
		_cleanup_free_ char *b = azure_body(more[i][0], more[i][1], false, false, NULL);
		token = NULL;
		rc = cvm_attest_service_attest_snp(f->svc, b, strlen(b), &token, &err);
		if (rc)
			fprintf(stderr, "%s: %s\n", more[i][0], err.msg);
		assert_int_equal(rc, 0);
		free(token);
	}
}

static void test_refusals(void **state)
{
	struct fixture *f = *state;
	struct cvm_err err = { 0 };
	char *token = NULL;
	/* Runtime data that does not hash into report_data. */
	_cleanup_free_ char *b1 = azure_body("azure/snp-milan/hcl-report.bin",
					     "azure/snp-milan/vcek.pem", true, false, NULL);
	assert_int_equal(cvm_attest_service_attest_snp(f->svc, b1, strlen(b1), &token, &err),
			 -EBADMSG);
	assert_non_null(strstr(err.msg, "runtimeData"));
	/* A tampered report. */
	_cleanup_free_ char *b2 = azure_body("azure/snp-milan/hcl-report.bin",
					     "azure/snp-milan/vcek.pem", false, true, NULL);
	assert_int_equal(cvm_attest_service_attest_snp(f->svc, b2, strlen(b2), &token, &err),
			 -EBADMSG);
	assert_non_null(strstr(err.msg, "signature"));
	/* Malformed bodies name the field. */
#define RT "\"runtimeData\": {\"data\": \"e30\"}"
	const char *bad[] = { "{" RT "}", "{" RT ", \"report\": \"!!\"}",
			      "{" RT ", \"report\": \"e30\"}", "[1]", "", "{}",
			      "{\"runtimeData\": {\"data\": \"e30\", \"dataType\": \"XML\"}}" };
	const char *field[] = { "report", "report", "SnpReport", "body", "body", "runtimeData",
				"dataType" };
#undef RT
	for (size_t i = 0; i < CVM_ARRAY_SIZE(bad); i++) {
		assert_int_equal(cvm_attest_service_attest_snp(f->svc, bad[i], strlen(bad[i]), &token,
							       &err), -EINVAL);
		if (!strstr(err.msg, field[i]))
			fprintf(stderr, "%zu: %s\n", i, err.msg);
		assert_non_null(strstr(err.msg, field[i]));
	}
	/* No runtimeData: refused (nothing would bind a key to the VM). */
	json_t *j = json_loads(b1, 0, NULL);
	json_object_del(j, "runtimeData");
	_cleanup_free_ char *b3 = cvm_json_dump(j);
	json_decref(j);
	assert_int_equal(cvm_attest_service_attest_snp(f->svc, b3, strlen(b3), &token, &err), -EINVAL);
	assert_non_null(strstr(err.msg, "runtimeData"));
	assert_null(token);
}

static void test_emulated_evidence(void **state)
{
	struct fixture *f = *state;
	struct cvm_err err = { 0 };
	char emu[128], fp[65];
	snprintf(emu, sizeof(emu), "%s/emu", f->dir);
	struct cvm_tee_emu_params params = { .product = CVM_SNP_PRODUCT_MILAN,
					     .tcb = { .bl = 3, .snp = 8, .ucode = 115 } };
	memset(params.chip_id, 0x5a, 64);
	assert_int_equal(cvm_tee_emu_init(emu, &params, fp, &err), 0);
	/* Runtime data with a wrapping key, bound into report_data. */
	_cleanup_(cvm_key_freep) struct cvm_key *k = NULL;
	assert_int_equal(cvm_key_generate_rsa(2048, 0, &k, &err), 0);
	json_t *jwk = NULL;
	assert_int_equal(cvm_key_to_jwk(k, false, &jwk, &err), 0);
	json_object_set_new(jwk, "kid", json_string("TpmEphemeralEncryptionKey"));
	json_t *rt = json_pack("{s:[o]}", "keys", jwk);
	_cleanup_free_ char *rts = cvm_json_dump(rt);
	json_decref(rt);
	struct cvm_tee_emu_report_in in = { 0 };
	size_t dl = 0;
	assert_int_equal(cvm_digest("SHA256", rts, strlen(rts), in.report_data, &dl, &err), 0);
	uint8_t rep[CVM_SNP_REPORT_SIZE];
	assert_int_equal(cvm_tee_emu_snp_report(emu, &in, rep, &err), 0);
	char vp[160];
	snprintf(vp, sizeof(vp), "%s/vcek.pem", emu);
	size_t vl = 0;
	_cleanup_free_ uint8_t *vpem = NULL;
	assert_int_equal(cvm_file_read(vp, 65536, &vpem, &vl, &err), 0);
	_cleanup_free_ char *snp = cvm_b64url_encode(rep, sizeof(rep));
	_cleanup_free_ char *chain = cvm_b64url_encode(vpem, vl);
	json_t *inner = json_pack("{s:s, s:s}", "SnpReport", snp, "VcekCertChain", chain);
	_cleanup_free_ char *inner_s = cvm_json_dump(inner);
	json_decref(inner);
	_cleanup_free_ char *report = cvm_b64url_encode(inner_s, strlen(inner_s));
	_cleanup_free_ char *rtb = cvm_b64url_encode(rts, strlen(rts));
	json_t *body = json_pack("{s:s, s:{s:s, s:s}}", "report", report, "runtimeData", "data", rtb,
				 "dataType", "JSON");
	_cleanup_free_ char *bs = cvm_json_dump(body);
	json_decref(body);

	char *token = NULL;
	/* The fixture's service trusts only AMD: refused. */
	assert_int_equal(cvm_attest_service_attest_snp(f->svc, bs, strlen(bs), &token, &err), -EBADMSG);
	/* A service trusting the emulator root but with the default policy: refused. */
	_cleanup_roots_ struct cvm_attest_roots *roots = NULL;
	assert_int_equal(cvm_attest_roots_new_builtin(&roots, &err), 0);
	assert_int_equal(cvm_attest_roots_add_emulator(roots, emu, fp, &err), 0);
	struct cvm_attest_service_config cfg = { .issuer = ISSUER, .signing_key = k,
						 .roots = roots };
	_cleanup_(cvm_attest_service_freep) struct cvm_attest_service *s2 = NULL;
	assert_int_equal(cvm_attest_service_new(&cfg, &s2, &err), 0);
	assert_int_equal(cvm_attest_service_attest_snp(s2, bs, strlen(bs), &token, &err), -EPERM);
	/* Allowed explicitly: the token says emulated. */
	struct cvm_snp_policy pol;
	cvm_snp_policy_default(&pol);
	pol.allow_emulated = true;
	cfg.snp_policy = &pol;
	_cleanup_(cvm_attest_service_freep) struct cvm_attest_service *s3 = NULL;
	assert_int_equal(cvm_attest_service_new(&cfg, &s3, &err), 0);
	assert_int_equal(cvm_attest_service_attest_snp(s3, bs, strlen(bs), &token, &err), 0);
	json_t *c = independent_verify(s3, token);
	assert_true(json_is_true(json_object_get(c, "x-opencvm-emulated")));
	assert_string_equal(json_string_value(json_object_get(c, "x-ms-compliance-status")),
			    "opencvm-emulated");
	assert_string_equal(json_string_value(json_object_get(json_array_get(
				    cvm_json_path(c, "x-ms-runtime.keys"), 0), "kid")),
			    "TpmEphemeralEncryptionKey");
	json_decref(c);
	free(token);

	/* An attestation policy on top: issues a claim, adds the policy hash, or denies. */
	const char *pol_text =
		"version=1.0;\n"
		"authorizationrules {\n"
		"  [type==\"x-ms-sevsnpvm-vmpl\", value==0] => permit();\n"
		"};\n"
		"issuancerules {\n"
		"  c:[type==\"x-ms-sevsnpvm-launchmeasurement\"] => issue(type=\"measurement\", value=c.value);\n"
		"  => issue(type=\"tier\", value=\"gold\");\n"
		"};\n";
	assert_int_equal(cvm_attest_service_set_policy(s3, "SevSnpVm", pol_text, strlen(pol_text),
						       &err), 0);
	token = NULL;
	assert_int_equal(cvm_attest_service_attest_snp(s3, bs, strlen(bs), &token, &err), 0);
	c = independent_verify(s3, token);
	assert_string_equal(json_string_value(json_object_get(c, "tier")), "gold");
	assert_string_equal(json_string_value(json_object_get(c, "measurement")),
			    json_string_value(json_object_get(c, "x-ms-sevsnpvm-launchmeasurement")));
	assert_non_null(json_object_get(c, "x-ms-policy-hash"));
	json_decref(c);
	free(token);
	char *got = NULL;
	assert_int_equal(cvm_attest_service_get_policy(s3, "SevSnpVm", &got, &err), 0);
	assert_string_equal(got, pol_text);
	free(got);
	const char *deny = "version=1.0; authorizationrules { [type==\"x-ms-sevsnpvm-vmpl\", value==0] => deny(); => permit(); };";
	assert_int_equal(cvm_attest_service_set_policy(s3, "SevSnpVm", deny, strlen(deny), &err), 0);
	token = NULL;
	assert_int_equal(cvm_attest_service_attest_snp(s3, bs, strlen(bs), &token, &err), -EPERM);
	assert_null(token);
	assert_int_equal(cvm_attest_service_set_policy(s3, "Sgx", deny, strlen(deny), &err), -EINVAL);
}

static void test_discovery_and_persistence(void **state)
{
	struct fixture *f = *state;
	struct cvm_err err = { 0 };
	json_t *o = NULL;
	assert_int_equal(cvm_attest_service_openid(f->svc, &o, &err), 0);
	assert_string_equal(json_string_value(json_object_get(o, "issuer")), ISSUER);
	assert_string_equal(json_string_value(json_object_get(o, "jwks_uri")), ISSUER "/certs");
	json_decref(o);
	json_t *jwks = NULL;
	assert_int_equal(cvm_attest_service_jwks(f->svc, &jwks, &err), 0);
	json_t *keys = json_object_get(jwks, "keys");
	assert_int_equal(json_array_size(keys), 1);
	const char *kid = json_string_value(json_object_get(json_array_get(keys, 0), "kid"));
	assert_non_null(kid);
	assert_null(json_object_get(json_array_get(keys, 0), "d"));
	/* A second service on the same key dir reuses the key. */
	char kd[128];
	snprintf(kd, sizeof(kd), "%s/keys", f->dir);
	struct cvm_attest_service_config cfg = { .issuer = ISSUER, .key_dir = kd, .roots = f->roots };
	_cleanup_(cvm_attest_service_freep) struct cvm_attest_service *s2 = NULL;
	assert_int_equal(cvm_attest_service_new(&cfg, &s2, &err), 0);
	json_t *jwks2 = NULL;
	assert_int_equal(cvm_attest_service_jwks(s2, &jwks2, &err), 0);
	assert_string_equal(json_string_value(json_object_get(
				    json_array_get(json_object_get(jwks2, "keys"), 0), "kid")),
			    kid);
	json_decref(jwks2);
	/* Rotation: the old key becomes previous.pem; both are published, and a token signed
	 * before the rotation still verifies with the new service. */
	_cleanup_free_ char *body = azure_body("azure/snp-milan/hcl-report.bin",
					       "azure/snp-milan/vcek.pem", false, false, NULL);
	char *old_token = NULL;
	json_t *claims = NULL;
	assert_int_equal(cvm_attest_service_attest_snp(s2, body, strlen(body), &old_token, &err), 0);
	assert_int_equal(cvm_attest_keys_rotate(kd, &err), 0);
	_cleanup_(cvm_attest_service_freep) struct cvm_attest_service *s3 = NULL;
	assert_int_equal(cvm_attest_service_new(&cfg, &s3, &err), 0);
	assert_int_equal(cvm_attest_service_jwks(s3, &jwks2, &err), 0);
	assert_int_equal(json_array_size(json_object_get(jwks2, "keys")), 2);
	assert_string_not_equal(json_string_value(json_object_get(
					json_array_get(json_object_get(jwks2, "keys"), 0), "kid")), kid);
	assert_string_equal(json_string_value(json_object_get(
				    json_array_get(json_object_get(jwks2, "keys"), 1), "kid")), kid);
	json_decref(jwks2);
	assert_int_equal(cvm_attest_service_verify_token(s3, old_token, &claims, &err), 0);
	json_decref(claims);
	free(old_token);
	assert_int_equal(cvm_attest_keys_rotate("/nonexistent/keys", &err), -ENOENT);
	json_decref(jwks);
	/* Bad configuration. */
	struct cvm_attest_service *bad = NULL;
	cfg.issuer = "ftp://x";
	assert_int_equal(cvm_attest_service_new(&cfg, &bad, &err), -EINVAL);
	cfg.issuer = ISSUER;
	cfg.key_dir = NULL;
	assert_int_equal(cvm_attest_service_new(&cfg, &bad, &err), -EINVAL);
}

static void test_tdx_token(void **state)
{
	struct fixture *f = *state;
	struct cvm_err err = { 0 };
	size_t hl = 0, ql = 0;
	_cleanup_free_ uint8_t *h = load("azure/tdx/hcl-report.bin", &hl);
	_cleanup_free_ uint8_t *q = load("azure/tdx/td-quote.bin", &ql);
	uint32_t n = (uint32_t)h[0x4D0] | (uint32_t)h[0x4D1] << 8 | (uint32_t)h[0x4D2] << 16 |
		     (uint32_t)h[0x4D3] << 24;
	_cleanup_free_ char *quote = cvm_b64url_encode(q, ql);
	_cleanup_free_ char *rt = cvm_b64url_encode(h + 0x4D4, n);
	json_t *body = json_pack("{s:s, s:{s:s, s:s}, s:s}", "quote", quote, "runtimeData", "data",
				 rt, "dataType", "JSON", "nonce", "tdx-1");
	_cleanup_free_ char *bs = cvm_json_dump(body);
	json_decref(body);
	char *token = NULL;
	int rc = cvm_attest_service_attest_tdx(f->svc, bs, strlen(bs), &token, &err);
	if (rc)
		fprintf(stderr, "%s\n", err.msg);
	assert_int_equal(rc, 0);
	json_t *c = independent_verify(f->svc, token);
	assert_string_equal(json_string_value(json_object_get(c, "x-ms-attestation-type")), "tdxvm");
	assert_string_equal(json_string_value(json_object_get(c, "nonce")), "tdx-1");
	assert_int_equal(strlen(json_string_value(json_object_get(c, "x-ms-tdx-mrtd"))), 96);
	assert_true(json_is_false(json_object_get(c, "x-ms-tdx-is-debuggable")));
	assert_string_equal(json_string_value(json_object_get(json_array_get(
				    cvm_json_path(c, "x-ms-runtime.keys"), 0), "kid")), "HCLAkPub");
	json_decref(c);
	free(token);
	/* Another quote for the same runtime data: not bound. */
	size_t ol = 0;
	_cleanup_free_ uint8_t *other = load("tdx/trustee-6/quote.bin", &ol);
	_cleanup_free_ char *oq = cvm_b64url_encode(other, ol);
	body = json_pack("{s:s, s:{s:s}}", "quote", oq, "runtimeData", "data", rt);
	_cleanup_free_ char *bs2 = cvm_json_dump(body);
	json_decref(body);
	token = NULL;
	assert_int_equal(cvm_attest_service_attest_tdx(f->svc, bs2, strlen(bs2), &token, &err), -EBADMSG);
	assert_non_null(strstr(err.msg, "runtimeData"));
	/* A flipped quote byte. */
	q[200] ^= 1;
	_cleanup_free_ char *bq = cvm_b64url_encode(q, ql);
	body = json_pack("{s:s, s:{s:s}}", "quote", bq, "runtimeData", "data", rt);
	_cleanup_free_ char *bs3 = cvm_json_dump(body);
	json_decref(body);
	assert_int_equal(cvm_attest_service_attest_tdx(f->svc, bs3, strlen(bs3), &token, &err), -EBADMSG);
	assert_null(token);

	/* Emulated TDX: refused by default, marked emulated when allowed. */
	char emu[128], fp[65];
	snprintf(emu, sizeof(emu), "%s/tdx-emu", f->dir);
	struct cvm_tee_emu_tdx_params tp = { .pcesvn = 11 };
	assert_int_equal(cvm_tee_emu_tdx_init(emu, &tp, fp, &err), 0);
	struct cvm_tee_emu_tdx_in in = { 0 };
	size_t dl = 0;
	assert_int_equal(cvm_digest("SHA256", h + 0x4D4, n, in.report_data, &dl, &err), 0);
	struct cvm_buf eq = { 0 };
	assert_int_equal(cvm_tee_emu_tdx_quote(emu, &in, &eq, &err), 0);
	_cleanup_free_ char *eqs = cvm_b64url_encode(eq.data, eq.len);
	cvm_buf_free(&eq);
	body = json_pack("{s:s, s:{s:s}}", "quote", eqs, "runtimeData", "data", rt);
	_cleanup_free_ char *bs4 = cvm_json_dump(body);
	json_decref(body);
	assert_int_equal(cvm_attest_service_attest_tdx(f->svc, bs4, strlen(bs4), &token, &err), -EBADMSG);
	X509 *root = NULL;
	assert_int_equal(cvm_tee_emu_tdx_root(emu, fp, &root, &err), 0);
	struct cvm_tdx_verify_opts to = { .emulator_root = root };
	struct cvm_tdx_policy tpol;
	cvm_tdx_policy_default(&tpol);
	_cleanup_(cvm_key_freep) struct cvm_key *k = NULL;
	assert_int_equal(cvm_key_generate_rsa(2048, 0, &k, &err), 0);
	struct cvm_attest_service_config cfg = { .issuer = ISSUER, .signing_key = k,
						 .roots = f->roots, .tdx_opts = &to,
						 .tdx_policy = &tpol };
	_cleanup_(cvm_attest_service_freep) struct cvm_attest_service *s2 = NULL;
	assert_int_equal(cvm_attest_service_new(&cfg, &s2, &err), 0);
	assert_int_equal(cvm_attest_service_attest_tdx(s2, bs4, strlen(bs4), &token, &err), -EPERM);
	tpol.allow_emulated = true;
	_cleanup_(cvm_attest_service_freep) struct cvm_attest_service *s3 = NULL;
	assert_int_equal(cvm_attest_service_new(&cfg, &s3, &err), 0);
	assert_int_equal(cvm_attest_service_attest_tdx(s3, bs4, strlen(bs4), &token, &err), 0);
	c = independent_verify(s3, token);
	assert_true(json_is_true(json_object_get(c, "x-opencvm-emulated")));
	assert_string_equal(json_string_value(json_object_get(c, "x-ms-compliance-status")),
			    "opencvm-emulated");
	json_decref(c);
	free(token);
	X509_free(root);
}

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

static json_t *call_as(const char *method, const char *url, const char *body, const char *auth,
		       long want)
{
	struct cvm_http_client_opts o = { .allow_plain_http_loopback = true };
	struct cvm_http_result res = { 0 };
	struct cvm_err err = { 0 };
	char ah[128];
	snprintf(ah, sizeof(ah), "Authorization: Bearer %s", auth ? auth : "");
	const char *hdrs[] = { "Content-Type: application/json", auth ? ah : NULL, NULL };
	assert_int_equal(cvm_http_request(&o, method, url, hdrs, body, body ? strlen(body) : 0, &res,
					  &err), 0);
	if (res.status != want)
		fprintf(stderr, "%s %s -> %ld %.*s\n", method, url, res.status, (int)res.body.len,
			(const char *)res.body.data);
	assert_int_equal(res.status, want);
	json_t *j = json_loadb((const char *)res.body.data, res.body.len, 0, NULL);
	cvm_http_result_free(&res);
	assert_non_null(j);
	return j;
}

static json_t *call(const char *method, const char *url, const char *body, long want)
{
	return call_as(method, url, body, NULL, want);
}

static void test_rest(void **state)
{
	struct fixture *f = *state;
	struct cvm_err err = { 0 };
	int port = free_port();
	char listen[64], base[64], url[256];
	snprintf(listen, sizeof(listen), "127.0.0.1:%d", port);
	snprintf(base, sizeof(base), "http://127.0.0.1:%d", port);
	struct cvm_attest_service_config cfg = { .issuer = base, .key_dir = NULL, .roots = f->roots };
	_cleanup_(cvm_key_freep) struct cvm_key *k = NULL;
	assert_int_equal(cvm_key_generate_rsa(2048, 0, &k, &err), 0);
	cfg.signing_key = k;
	_cleanup_(cvm_attest_service_freep) struct cvm_attest_service *svc = NULL;
	assert_int_equal(cvm_attest_service_new(&cfg, &svc, &err), 0);
	struct cvm_http_config hc = { .listen = listen, .threads = 2 };
	struct cvm_http_server *srv = NULL;
	assert_int_equal(cvm_http_server_new(&hc, &srv, &err), 0);
	assert_int_equal(cvm_attest_register_routes(svc, srv, &err), 0);
	assert_int_equal(cvm_http_server_start(srv, &err), 0);

	/* Discovery: the issuer is the URL clients use, and the JWKS is where it says. */
	snprintf(url, sizeof(url), "%s/.well-known/openid-configuration", base);
	json_t *oidc = call("GET", url, NULL, 200);
	assert_string_equal(json_string_value(json_object_get(oidc, "issuer")), base);
	json_t *jwks = call("GET", json_string_value(json_object_get(oidc, "jwks_uri")), NULL, 200);
	assert_int_equal(json_array_size(json_object_get(jwks, "keys")), 1);
	json_decref(jwks);
	json_decref(oidc);

	_cleanup_free_ char *body = azure_body("azure/snp-genoa/genoa-hcl-report.bin",
					       "azure/snp-genoa/vcek-genoa.pem", false, false, "abc");
	snprintf(url, sizeof(url), "%s/attest/SevSnpVm?api-version=2022-08-01", base);
	json_t *r = call("POST", url, body, 200);
	const char *token = json_string_value(json_object_get(r, "token"));
	assert_non_null(token);
	json_t *claims = NULL;
	assert_int_equal(cvm_attest_service_verify_token(svc, token, &claims, &err), 0);
	assert_string_equal(json_string_value(json_object_get(claims, "iss")), base);
	assert_string_equal(json_string_value(json_object_get(claims, "nonce")), "abc");
	json_decref(claims);
	/* An independent JOSE implementation accepts it through OIDC discovery, and refuses a
	 * token with a flipped signature character. */
	const char *node = getenv("CVM_NODE"), *script = getenv("CVM_JOSE_SCRIPT");
	if (node && script) {
		_cleanup_free_ char *cmd = cvm_asprintf("'%s' '%s' '%s' '%s'", node, script, base, token);
		assert_int_equal(system(cmd), 0);
		_cleanup_free_ char *bad_tok = cvm_strdup(token);
		size_t tl = strlen(bad_tok);
		bad_tok[tl - 3] = bad_tok[tl - 3] == 'A' ? 'B' : 'A';
		_cleanup_free_ char *cmd2 = cvm_asprintf("'%s' '%s' '%s' '%s'", node, script, base, bad_tok);
		assert_int_not_equal(system(cmd2), 0);
	} else {
		fprintf(stderr, "note: node/jose not found at configure time; JOSE cross-check skipped\n");
	}
	json_decref(r);
	/* Failure twins: api-version, runtime data binding. */
	snprintf(url, sizeof(url), "%s/attest/SevSnpVm?api-version=1999-01-01", base);
	r = call("POST", url, body, 400);
	assert_non_null(strstr(json_string_value(cvm_json_path(r, "error.message")), "api-version"));
	json_decref(r);
	_cleanup_free_ char *bad = azure_body("azure/snp-genoa/genoa-hcl-report.bin",
					      "azure/snp-genoa/vcek-genoa.pem", true, false, NULL);
	snprintf(url, sizeof(url), "%s/attest/SevSnpVm?api-version=2022-08-01", base);
	r = call("POST", url, bad, 400);
	assert_string_equal(json_string_value(cvm_json_path(r, "error.code")), "BadParameter");
	json_decref(r);

	/* Policies: none yet (404); without an authorizer and an audit log they are read-only
	 * (test_policy_audit covers PUT). */
	snprintf(url, sizeof(url), "%s/policies/SevSnpVm?api-version=2022-08-01", base);
	r = call("GET", url, NULL, 404);
	json_decref(r);
	r = call("PUT", url, "version=1.0; authorizationrules { => permit(); };", 403);
	json_decref(r);
	snprintf(url, sizeof(url), "%s/policies/Nope?api-version=2022-08-01", base);
	r = call("GET", url, NULL, 400);
	json_decref(r);
	cvm_http_server_free(srv);
}

/* ---- PUT /policies: authorized by the caller's authorizer, every outcome audited --------- */

/* The embedding daemon's authorizer stands behind this interface (cvmd: bearer token + RBAC,
 * exercised in tests/integration/attest-cli.sh); here a fixed table of bearer values. */
static int test_authorize(void *ctx, const struct cvm_http_req *req,
			  char principal[CVM_ATTEST_PRINCIPAL_MAX], struct cvm_err *err)
{
	int *calls = ctx;
	(*calls)++;
	const char *a = cvm_http_req_header(req, "Authorization");
	if (!a)
		return cvm_err_set(err, EACCES, "Unauthorized", "Authorization: bearer token required");
	if (strcmp(a, "Bearer admin") == 0) {
		snprintf(principal, CVM_ATTEST_PRINCIPAL_MAX, "oid-admin");
		return 0;
	}
	if (strcmp(a, "Bearer reader") == 0) {
		snprintf(principal, CVM_ATTEST_PRINCIPAL_MAX, "oid-reader");
		return cvm_err_set(err, EPERM, "Forbidden", "oid-reader may not change policies");
	}
	return cvm_err_set(err, EACCES, "Unauthorized", "Authorization: unknown token");
}

/* Every audit record as exported JSON lines (array of objects). */
static json_t *audit_records(struct cvm_store *st)
{
	struct cvm_err err = { 0 };
	char *buf = NULL;
	size_t len = 0;
	FILE *f = open_memstream(&buf, &len);
	assert_non_null(f);
	int64_t n = 0;
	assert_int_equal(cvm_audit_export(st, 0, f, &n, &err), 0);
	fclose(f);
	json_t *arr = json_array();
	for (char *line = strtok(buf, "\n"); line; line = strtok(NULL, "\n")) {
		json_t *j = json_loads(line, 0, NULL);
		assert_non_null(j);
		json_array_append_new(arr, j);
	}
	free(buf);
	assert_int_equal((int64_t)json_array_size(arr), n);
	return arr;
}

static const char *jget(json_t *o, const char *k)
{
	return json_string_value(json_object_get(o, k));
}

/* Record i: principal (NULL = none), status, result, key_name (NULL = none), and its detail
 * holds sha_field = sha_hex (sha_hex NULL: only that the field exists) and never `secret`. */
static void expect_record(json_t *recs, size_t i, const char *principal, int status,
			  const char *result, const char *key_name, const char *sha_field,
			  const char *sha_hex, const char *secret)
{
	json_t *r = json_array_get(recs, i);
	assert_non_null(r);
	assert_string_equal(jget(r, "operation"), "policies/set");
	if (principal)
		assert_string_equal(jget(r, "principal"), principal);
	else
		assert_null(jget(r, "principal"));
	assert_int_equal(json_integer_value(json_object_get(r, "status")), status);
	assert_string_equal(jget(r, "result"), result);
	if (key_name)
		assert_string_equal(jget(r, "key_name"), key_name);
	else
		assert_null(jget(r, "key_name"));
	assert_non_null(jget(r, "request_id"));
	assert_string_equal(jget(r, "source"), "127.0.0.1");
	json_t *d = json_loads(jget(r, "detail"), 0, NULL);
	assert_non_null(d);
	const char *sha = jget(d, sha_field);
	assert_non_null(sha);
	assert_int_equal(strlen(sha), 64);
	if (sha_hex)
		assert_string_equal(sha, sha_hex);
	assert_null(strstr(jget(r, "detail"), secret));
	json_decref(d);
}

static void sha256_hex(const char *text, char out[65])
{
	uint8_t h[32];
	unsigned int hl = 0;
	assert_int_equal(EVP_Digest(text, strlen(text), h, &hl, EVP_sha256(), NULL), 1);
	for (unsigned int i = 0; i < hl; i++)
		snprintf(out + 2 * i, 3, "%02x", h[i]);
}

static void test_policy_audit(void **state)
{
	struct fixture *f = *state;
	struct cvm_err err = { 0 };
	char dir[] = "/tmp/cvm-attest-audit-XXXXXX", surl[128], base[64], url[256];
	assert_non_null(mkdtemp(dir));
	snprintf(surl, sizeof(surl), "sqlite:%s/audit.db", dir);
	struct cvm_store *st = NULL;
	struct cvm_audit *audit = NULL;
	assert_int_equal(cvm_store_open(surl, &st, &err), 0);
	assert_int_equal(cvm_audit_open(st, &audit, &err), 0);

	int port = free_port();
	char listen[64];
	snprintf(listen, sizeof(listen), "127.0.0.1:%d", port);
	snprintf(base, sizeof(base), "http://127.0.0.1:%d", port);
	struct cvm_attest_service_config cfg = { .issuer = base, .roots = f->roots };
	_cleanup_(cvm_key_freep) struct cvm_key *k = NULL;
	assert_int_equal(cvm_key_generate_rsa(2048, 0, &k, &err), 0);
	cfg.signing_key = k;
	_cleanup_(cvm_attest_service_freep) struct cvm_attest_service *svc = NULL;
	assert_int_equal(cvm_attest_service_new(&cfg, &svc, &err), 0);
	struct cvm_http_config hc = { .listen = listen, .threads = 2 };
	struct cvm_http_server *srv = NULL;
	assert_int_equal(cvm_http_server_new(&hc, &srv, &err), 0);
	int calls = 0;
	struct cvm_attest_rest *rest = NULL;
	struct cvm_attest_rest_config bad = { .authorize_policy = test_authorize };
	assert_int_equal(cvm_attest_register_routes_guarded(svc, srv, &bad, &rest, &err), -EINVAL);
	struct cvm_attest_rest_config rc = { .authorize_policy = test_authorize,
					     .authorize_ctx = &calls, .audit = audit };
	assert_int_equal(cvm_attest_register_routes_guarded(svc, srv, &rc, &rest, &err), 0);
	assert_int_equal(cvm_http_server_start(srv, &err), 0);

	const char *text = "version=1.0; authorizationrules { => permit(); };";
	const char *text2 = "version=1.0; authorizationrules { => deny(); };";
	char h1[65], h2[65], hbad[65];
	sha256_hex(text, h1);
	sha256_hex(text2, h2);
	_cleanup_free_ char *tb = cvm_b64url_encode(text, strlen(text));
	_cleanup_free_ char *payload = cvm_asprintf("{\"AttestationPolicy\":\"%s\"}", tb);
	_cleanup_free_ char *pb = cvm_b64url_encode(payload, strlen(payload));
	_cleanup_free_ char *jws = cvm_asprintf("\"eyJhbGciOiJub25lIn0.%s.\"", pb);
	const char *badtext = "version=1.0; issuancerules { => permit(); };";
	sha256_hex(badtext, hbad);
	snprintf(url, sizeof(url), "%s/policies/SevSnpVm?api-version=2022-08-01", base);

	/* 0: no token (401), 1: identified but not allowed (403): nothing changes */
	json_decref(call_as("PUT", url, text, NULL, 401));
	json_decref(call_as("PUT", url, text, "reader", 403));
	json_decref(call("GET", url, NULL, 404));
	/* 2: the administrator sets it as MAA's unsigned JWS; the record has the text's hash */
	json_t *r = call_as("PUT", url, jws, "admin", 200);
	json_t *claims = NULL;
	assert_int_equal(cvm_attest_service_verify_token(
				 svc, json_string_value(json_object_get(r, "token")), &claims, &err),
			 0);
	assert_string_equal(json_string_value(json_object_get(claims, "x-ms-policy-result")),
			    "Updated");
	json_decref(claims);
	json_decref(r);
	r = call("GET", url, NULL, 200);
	assert_string_equal(json_string_value(json_object_get(r, "policy")), text);
	json_decref(r);
	/* 3: a policy that does not parse (400, named line:column); 4: an unknown type;
	 * 5: a bad api-version. The policy stays. */
	r = call_as("PUT", url, badtext, "admin", 400);
	assert_non_null(strstr(json_string_value(cvm_json_path(r, "error.message")), "policy:1:"));
	json_decref(r);
	char nope[256];
	snprintf(nope, sizeof(nope), "%s/policies/Nope?api-version=2022-08-01", base);
	json_decref(call_as("PUT", nope, text2, "admin", 400));
	char oldv[256];
	snprintf(oldv, sizeof(oldv), "%s/policies/TdxVm?api-version=1999-01-01", base);
	json_decref(call_as("PUT", oldv, text2, "admin", 400));
	/* 6: the other types take policies too, spelled as the router allows */
	char tdx[256];
	snprintf(tdx, sizeof(tdx), "%s/POLICIES/TdxVm/?api-version=2022-08-01", base);
	json_decref(call_as("PUT", tdx, text2, "admin", 200));
	r = call("GET", url, NULL, 200);
	assert_string_equal(json_string_value(json_object_get(r, "policy")), text);
	json_decref(r);
	assert_int_equal(calls, 7);

	json_t *recs = audit_records(st);
	assert_int_equal(json_array_size(recs), 7);
	expect_record(recs, 0, NULL, 401, "Unauthorized", "SevSnpVm", "body_sha256", h1, "authoriz");
	expect_record(recs, 1, "oid-reader", 403, "Forbidden", "SevSnpVm", "body_sha256", h1,
		      "authoriz");
	expect_record(recs, 2, "oid-admin", 200, "ok", "SevSnpVm", "policy_sha256", h1,
		      "authoriz");
	expect_record(recs, 3, "oid-admin", 400, "BadParameter", "SevSnpVm", "policy_sha256",
		      hbad, "issuance");
	expect_record(recs, 4, "oid-admin", 400, "BadParameter", NULL, "body_sha256", h2,
		      "authoriz");
	expect_record(recs, 5, "oid-admin", 400, "BadParameter", "TdxVm", "body_sha256", h2,
		      "authoriz");
	expect_record(recs, 6, "oid-admin", 200, "ok", "TdxVm", "policy_sha256", h2, "authoriz");
	/* the records of refusals name the type the caller asked for */
	json_t *d = json_loads(jget(json_array_get(recs, 4), "detail"), 0, NULL);
	assert_string_equal(jget(d, "attestation_type"), "Nope");
	json_decref(d);
	json_decref(recs);
	int64_t n = 0, bad_seq = -1;
	assert_int_equal(cvm_audit_verify(st, &n, &bad_seq, &err), 0);
	assert_int_equal(n, 7);
	assert_int_equal(bad_seq, 0);

	/* When the record cannot be written, the change does not happen (500). */
	struct cvm_store *other = NULL;
	struct cvm_tx *tx = NULL;
	assert_int_equal(cvm_store_open(surl, &other, &err), 0);
	assert_int_equal(cvm_tx_begin(other, CVM_TX_WRITE, &tx, &err), 0);
	assert_int_equal(cvm_tx_exec(tx, "DROP TABLE cvm_audit", NULL, 0, NULL, &err), 0);
	assert_int_equal(cvm_tx_commit(tx, &err), 0);
	cvm_store_close(other);
	r = call_as("PUT", url, text2, "admin", 500);
	assert_string_equal(json_string_value(cvm_json_path(r, "error.code")), "InternalError");
	json_decref(r);
	r = call("GET", url, NULL, 200);
	assert_string_equal(json_string_value(json_object_get(r, "policy")), text);
	json_decref(r);

	cvm_http_server_free(srv);
	cvm_attest_rest_free(rest);
	cvm_audit_close(audit);
	cvm_store_close(st);
	_cleanup_free_ char *rm = cvm_asprintf("rm -rf '%s'", dir);
	assert_int_equal(system(rm), 0);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_azure_evidence_token),
		cmocka_unit_test(test_refusals),
		cmocka_unit_test(test_emulated_evidence),
		cmocka_unit_test(test_discovery_and_persistence),
		cmocka_unit_test(test_tdx_token),
		cmocka_unit_test(test_rest),
		cmocka_unit_test(test_policy_audit),
	};
	evidence_dir();
	return cmocka_run_group_tests(tests, setup, teardown);
}
