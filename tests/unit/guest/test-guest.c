/* SPDX-License-Identifier: Apache-2.0 */
/* cvm-guest: configuration, backend selection, sev-guest response marshalling against real
 * SEV-SNP reports, the emulator protocol, and the flow's pure steps end to end against the real
 * attestation service code (emulated TEE) and a release response built like the key service's. */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <ftw.h>
#include <openssl/pem.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <opencvm/attest.h>
#include <opencvm/guest.h>
#include <opencvm/json.h>
#include <opencvm/vm.h>

struct fx {
	char dir[64];
	char emu[96];
	struct cvm_key *eph; /* 2048-bit, shared by the tests (generation is slow under ASan) */
};

static int rm_cb(const char *p, const struct stat *s, int f, struct FTW *w)
{
	(void)s, (void)f, (void)w;
	return remove(p);
}

static int setup(void **state)
{
	struct fx *fx = calloc(1, sizeof(*fx));
	struct cvm_err err = { 0 };
	snprintf(fx->dir, sizeof(fx->dir), "/tmp/cvm-guest-test-XXXXXX");
	if (!mkdtemp(fx->dir))
		return -1;
	snprintf(fx->emu, sizeof(fx->emu), "%s/emu", fx->dir);
	struct cvm_tee_emu_params p = { .product = CVM_SNP_PRODUCT_GENOA,
					.tcb = { .bl = 3, .snp = 8, .ucode = 115 } };
	char fp[65];
	if (cvm_tee_emu_init(fx->emu, &p, fp, &err) < 0 ||
	    cvm_key_generate_rsa(2048, 65537, &fx->eph, &err) < 0) {
		fprintf(stderr, "setup: %s\n", err.msg);
		return -1;
	}
	*state = fx;
	return 0;
}

static int teardown(void **state)
{
	struct fx *fx = *state;
	cvm_key_free(fx->eph);
	nftw(fx->dir, rm_cb, 16, FTW_DEPTH | FTW_PHYS);
	free(fx);
	return 0;
}

static uint8_t *slurp(const char *path, size_t *len)
{
	uint8_t *d = NULL;
	struct cvm_err err = { 0 };
	if (cvm_file_read(path, 1 << 20, &d, len, &err) < 0)
		fail_msg("%s: %s", path, err.msg);
	return d;
}

/* ---- configuration -------------------------------------------------------------------------- */

static void test_cmdline(void **state)
{
	(void)state;
	struct cvm_guest_config c;
	struct cvm_err err = { 0 };
	const char *ok = "BOOT_IMAGE=/vmlinuz console=ttyS0 cvm.tee=emulator "
			 "cvm.attest=https://10.0.2.2:8443 cvm.orchestrator=https://10.0.2.2:8443 "
			 "cvm.vm=demo cvm.disk=/dev/vda2 cvm.ca=/etc/opencvm/ca.pem quiet\n";
	assert_int_equal(cvm_guest_cmdline_parse(ok, strlen(ok), &c, &err), 0);
	assert_int_equal(c.tee, CVM_GUEST_TEE_EMULATOR);
	assert_string_equal(c.attest_url, "https://10.0.2.2:8443");
	assert_string_equal(c.vm, "demo");
	assert_string_equal(c.disk, "/dev/vda2");
	assert_string_equal(c.ca_file, "/etc/opencvm/ca.pem");
	cvm_guest_config_clear(&c);
	/* no service URLs: the host channel */
	const char *host = "cvm.vm=c cvm.disk=d";
	assert_int_equal(cvm_guest_cmdline_parse(host, strlen(host), &c, &err), 0);
	assert_null(c.attest_url);
	assert_null(c.orchestrator_url);
	cvm_guest_config_clear(&c);
	/* tee defaults to auto, ca optional */
	const char *min = "cvm.attest=a cvm.orchestrator=b cvm.vm=c cvm.disk=d";
	assert_int_equal(cvm_guest_cmdline_parse(min, strlen(min), &c, &err), 0);
	assert_int_equal(c.tee, CVM_GUEST_TEE_AUTO);
	assert_null(c.ca_file);
	cvm_guest_config_clear(&c);

	static const struct {
		const char *cl, *msg;
	} bad[] = {
		{ "cvm.orchestrator=b cvm.vm=c cvm.disk=d", "give both (HTTPS) or neither" },
		{ "cvm.attest=a cvm.orchestrator=b cvm.disk=d", "cvm.vm: required" },
		{ "cvm.attest=a cvm.orchestrator=b cvm.vm=c", "cvm.disk: required" },
		{ "cvm.attest=a cvm.orchestrator=b cvm.vm=c cvm.disk=d cvm.tee=sgx", "cvm.tee" },
		{ "cvm.attest=a cvm.orchestrator=b cvm.vm=c cvm.disk=d cvm.dsk=e", "unknown cvm.*" },
		{ "cvm.attest=a cvm.attest=x cvm.orchestrator=b cvm.vm=c cvm.disk=d", "twice" },
		{ "cvm.tee=tdx cvm.tee=emulator cvm.attest=a cvm.orchestrator=b cvm.vm=c cvm.disk=d",
		  "twice" },
		{ "cvm.attest= cvm.orchestrator=b cvm.vm=c cvm.disk=d", "cvm.attest: expected" },
		{ "cvm.attest=\"a b\" cvm.orchestrator=b cvm.vm=c cvm.disk=d", "quotes" },
	};
	for (size_t i = 0; i < CVM_ARRAY_SIZE(bad); i++) {
		assert_int_equal(cvm_guest_cmdline_parse(bad[i].cl, strlen(bad[i].cl), &c, &err),
				 -EINVAL);
		if (!strstr(err.msg, bad[i].msg))
			fail_msg("case %zu: '%s' lacks '%s'", i, err.msg, bad[i].msg);
		assert_null(c.attest_url);
	}
}

static void test_detect(void **state)
{
	struct fx *fx = *state;
	struct cvm_err err = { 0 };
	_cleanup_free_ char *sev = cvm_asprintf("%s/sev-guest", fx->dir),
			    *emu = cvm_asprintf("%s/tee.0", fx->dir),
			    *tpm = cvm_asprintf("%s/tpmrm0", fx->dir);
	struct cvm_guest_env e = { .sev_dev = sev, .tdx_dev = "/nonexistent/tdx",
				   .emu_port = emu, .tpm_dev = tpm };
	enum cvm_guest_tee t;
	assert_int_equal(cvm_guest_tee_detect(&e, CVM_GUEST_TEE_AUTO, &t, &err), -ENODEV);
	assert_non_null(strstr(err.msg, "no TEE"));
	assert_int_equal(cvm_file_write_atomic(tpm, "", 0, 0600, &err), 0);
	assert_int_equal(cvm_guest_tee_detect(&e, CVM_GUEST_TEE_AUTO, &t, &err), 0);
	assert_int_equal(t, CVM_GUEST_TEE_VTPM_HCL);
	assert_int_equal(cvm_file_write_atomic(emu, "", 0, 0600, &err), 0);
	assert_int_equal(cvm_guest_tee_detect(&e, CVM_GUEST_TEE_AUTO, &t, &err), 0);
	assert_int_equal(t, CVM_GUEST_TEE_EMULATOR);
	assert_int_equal(cvm_file_write_atomic(sev, "", 0, 0600, &err), 0);
	assert_int_equal(cvm_guest_tee_detect(&e, CVM_GUEST_TEE_AUTO, &t, &err), 0);
	assert_int_equal(t, CVM_GUEST_TEE_SEV_GUEST);
	/* forced by cvm.tee= */
	assert_int_equal(cvm_guest_tee_detect(&e, CVM_GUEST_TEE_EMULATOR, &t, &err), 0);
	assert_int_equal(t, CVM_GUEST_TEE_EMULATOR);
	assert_int_equal(cvm_guest_tee_detect(&e, CVM_GUEST_TEE_TDX, &t, &err), -ENODEV);
	assert_non_null(strstr(err.msg, "cvm.tee=tdx"));
	enum cvm_guest_tee p;
	assert_int_equal(cvm_guest_tee_parse("vtpm", &p, &err), 0);
	assert_int_equal(p, CVM_GUEST_TEE_VTPM_HCL);
	assert_int_equal(cvm_guest_tee_parse("SEV", &p, &err), -EINVAL);
}

/* ---- sev-guest marshalling against real reports ---------------------------------------------- */

static void test_snp_resp_real(void **state)
{
	(void)state;
	static const char *const names[] = { "virtee-milan", "trustee-milan", "azure-genoa",
					     "oak-genoa-v5", "oak-turin-v5" };
	for (size_t i = 0; i < CVM_ARRAY_SIZE(names); i++) {
		_cleanup_free_ char *p = cvm_asprintf(EVIDENCE_DIR "/snp/%s/report.bin", names[i]);
		size_t rl = 0;
		_cleanup_free_ uint8_t *rep = slurp(p, &rl);
		assert_true(rl >= CVM_SNP_REPORT_SIZE);
		/* What the driver copies back: struct snp_report_resp.data (4000 bytes) holding
		 * MSG_REPORT_RSP. */
		uint8_t resp[4000] = { 0 };
		uint32_t size = CVM_SNP_REPORT_SIZE;
		memcpy(resp + 4, &size, 4); /* little-endian host */
		memcpy(resp + CVM_GUEST_SNP_RESP_HDR, rep, CVM_SNP_REPORT_SIZE);
		const uint8_t *out = NULL;
		size_t ol = 0;
		struct cvm_err err = { 0 };
		assert_int_equal(cvm_guest_snp_parse_resp(resp, sizeof(resp), &out, &ol, &err), 0);
		assert_int_equal(ol, CVM_SNP_REPORT_SIZE);
		assert_ptr_equal(out, resp + CVM_GUEST_SNP_RESP_HDR);
		struct cvm_snp_report r;
		assert_int_equal(cvm_snp_report_parse(out, ol, &r, &err), 0);
		assert_memory_equal(r.report_data, rep + 0x50, 64);

		/* failure twins: firmware status, impossible size, truncated buffer */
		resp[0] = 0x16;
		assert_int_equal(cvm_guest_snp_parse_resp(resp, sizeof(resp), &out, &ol, &err),
				 -EIO);
		assert_non_null(strstr(err.msg, "status 0x16"));
		resp[0] = 0;
		size = 4000;
		memcpy(resp + 4, &size, 4);
		assert_int_equal(cvm_guest_snp_parse_resp(resp, sizeof(resp), &out, &ol, &err),
				 -EINVAL);
		size = 100;
		memcpy(resp + 4, &size, 4);
		assert_int_equal(cvm_guest_snp_parse_resp(resp, sizeof(resp), &out, &ol, &err),
				 -EINVAL);
		size = CVM_SNP_REPORT_SIZE;
		memcpy(resp + 4, &size, 4);
		assert_int_equal(cvm_guest_snp_parse_resp(resp, CVM_GUEST_SNP_RESP_HDR + 1000, &out,
							  &ol, &err), -EINVAL);
		assert_int_equal(cvm_guest_snp_parse_resp(resp, 31, &out, &ol, &err), -EINVAL);
	}
}

static void test_snp_ioctl_error(void **state)
{
	(void)state;
	char s[160];
	cvm_guest_snp_ioctl_error(((uint64_t)1 << 32) | 0, EINVAL, s, sizeof(s));
	assert_non_null(strstr(s, "certificate buffer too small"));
	cvm_guest_snp_ioctl_error(0x16, EIO, s, sizeof(s));
	assert_non_null(strstr(s, "firmware error 0x16"));
	assert_null(strstr(s, "too small"));
}

/* A GHCB certificate table (VCEK GUID in RFC 4122 byte order) holding a real VCEK. */
static void test_snp_cert_table(void **state)
{
	(void)state;
	size_t dl = 0;
	_cleanup_free_ uint8_t *der = slurp(EVIDENCE_DIR "/snp/virtee-milan/vcek.der", &dl);
	static const uint8_t vcek_guid[16] = { 0x63, 0xda, 0x75, 0x8d, 0xe6, 0x64, 0x45, 0x64,
					       0xad, 0xc5, 0xf4, 0xb9, 0x3b, 0xe8, 0xac, 0xcd };
	size_t cap = 16384;
	_cleanup_free_ uint8_t *t = calloc(1, cap);
	memcpy(t, vcek_guid, 16);
	uint32_t off = 48, l = (uint32_t)dl;
	memcpy(t + 16, &off, 4);
	memcpy(t + 20, &l, 4);
	memcpy(t + off, der, dl);
	struct cvm_err err = { 0 };
	_cleanup_free_ char *pem = NULL;
	assert_int_equal(cvm_guest_snp_certs_pem(t, cap, &pem, &err), 0);
	assert_true(cvm_str_startswith(pem, "-----BEGIN CERTIFICATE-----"));
	struct cvm_snp_certs c = { 0 };
	assert_int_equal(cvm_snp_certs_add(&c, (const uint8_t *)pem, strlen(pem), &err), 0);
	assert_non_null(c.vek);
	cvm_snp_certs_clear(&c);
	/* The host gave no certificates: a clear refusal. */
	memset(t, 0, cap);
	_cleanup_free_ char *none = NULL;
	assert_int_equal(cvm_guest_snp_certs_pem(t, cap, &none, &err), -ENOENT);
	assert_non_null(strstr(err.msg, "no VCEK"));
}

static void test_emu_reply(void **state)
{
	(void)state;
	uint8_t *o = NULL;
	size_t ol = 0;
	struct cvm_err err = { 0 };
	assert_int_equal(cvm_guest_emu_parse_reply("OK 00ff", 7, &o, &ol, &err), 0);
	assert_int_equal(ol, 2);
	assert_int_equal(o[1], 0xff);
	free(o);
	assert_int_equal(cvm_guest_emu_parse_reply("ERR report generation failed", 28, &o, &ol, &err),
			 -EIO);
	assert_non_null(strstr(err.msg, "report generation failed"));
	assert_int_equal(cvm_guest_emu_parse_reply("OK 0", 4, &o, &ol, &err), -EINVAL);
	assert_int_equal(cvm_guest_emu_parse_reply("HELLO", 5, &o, &ol, &err), -EINVAL);
	assert_int_equal(cvm_guest_emu_parse_reply("", 0, &o, &ol, &err), -EINVAL);
	assert_null(o);
}

/* ---- flow ------------------------------------------------------------------------------------ */

static void test_runtime_data(void **state)
{
	struct fx *fx = *state;
	struct cvm_err err = { 0 };
	_cleanup_free_ char *a = NULL, *b = NULL, *c = NULL;
	assert_int_equal(cvm_guest_runtime_data(fx->eph, "n1", "vm1", &a, &err), 0);
	assert_int_equal(cvm_guest_runtime_data(fx->eph, "n1", "vm1", &b, &err), 0);
	assert_string_equal(a, b); /* deterministic */
	assert_int_equal(cvm_guest_runtime_data(fx->eph, "n2", "vm1", &c, &err), 0);
	assert_string_not_equal(a, c);
	json_t *j = NULL;
	assert_int_equal(cvm_json_parse((const uint8_t *)a, strlen(a), false, &j, &err), 0);
	assert_string_equal(json_string_value(cvm_json_path(j, "client-payload.nonce")), "n1");
	assert_string_equal(json_string_value(json_object_get(j, "vm-id")), "vm1");
	json_t *k = json_array_get(json_object_get(j, "keys"), 0);
	assert_string_equal(json_string_value(json_object_get(k, "kid")), CVM_GUEST_KID);
	assert_string_equal(json_string_value(json_object_get(k, "kty")), "RSA");
	assert_null(json_object_get(k, "d")); /* never the private part */
	json_decref(j);

	uint8_t rd[64], rd2[64];
	assert_int_equal(cvm_guest_report_data(a, strlen(a), rd, &err), 0);
	assert_int_equal(cvm_guest_report_data(c, strlen(c), rd2, &err), 0);
	assert_memory_not_equal(rd, rd2, 32);
	static const uint8_t zero[32];
	assert_memory_equal(rd + 32, zero, 32);
	/* SHA-256("abc") */
	assert_int_equal(cvm_guest_report_data("abc", 3, rd, &err), 0);
	assert_int_equal(rd[0], 0xba);
	assert_int_equal(rd[31], 0xad);

	_cleanup_free_ char *x = NULL;
	assert_int_equal(cvm_guest_runtime_data(fx->eph, "", "vm1", &x, &err), -EINVAL);
	assert_int_equal(cvm_guest_runtime_data(fx->eph, "n", NULL, &x, &err), -EINVAL);
	struct cvm_key *ec = NULL;
	assert_int_equal(cvm_key_generate_ec("P-256", &ec, &err), 0);
	assert_int_equal(cvm_guest_runtime_data(ec, "n", "vm", &x, &err), -EINVAL);
	cvm_key_free(ec);
}

/* Evidence from the host emulator service, body accepted by the real attestation service. */
static void attest_via_service(struct fx *fx, const char *rt_sent, const char *rt_bound,
			       int want, char **token_out)
{
	struct cvm_err err = { 0 };
	uint8_t rd[64];
	assert_int_equal(cvm_guest_report_data(rt_bound, strlen(rt_bound), rd, &err), 0);
	struct cvm_vm_tee_emu host = { .emu_dir = fx->emu };
	_cleanup_free_ char *hex = cvm_hex_encode(rd, 64);
	_cleanup_free_ char *line = cvm_asprintf("SNP_REPORT %s", hex);
	_cleanup_free_ char *reply = NULL, *chain = NULL;
	assert_int_equal(cvm_vm_tee_emu_handle(&host, line, &reply, &err), 0);
	assert_int_equal(cvm_vm_tee_emu_handle(&host, "VCEK", &chain, &err), 0);
	struct cvm_guest_evidence ev = { .tee = CVM_GUEST_TEE_EMULATOR };
	uint8_t *pem = NULL;
	size_t pl = 0;
	assert_int_equal(cvm_guest_emu_parse_reply(reply, strlen(reply) - 1, &ev.report,
						   &ev.report_len, &err), 0);
	assert_int_equal(cvm_guest_emu_parse_reply(chain, strlen(chain) - 1, &pem, &pl, &err), 0);
	ev.cert_chain = strndup((char *)pem, pl);
	free(pem);
	_cleanup_free_ char *body = NULL;
	assert_int_equal(cvm_guest_attest_body(&ev, rt_sent, "nonce-1", &body, &err), 0);
	cvm_guest_evidence_clear(&ev);

	struct cvm_attest_roots *roots = NULL;
	char fp[65];
	assert_int_equal(cvm_attest_roots_new_empty(&roots, &err), 0);
	assert_int_equal(cvm_tee_emu_fingerprint(fx->emu, fp, &err), 0);
	assert_int_equal(cvm_attest_roots_add_emulator(roots, fx->emu, fp, &err), 0);
	struct cvm_snp_policy pol;
	cvm_snp_policy_default(&pol);
	pol.allow_emulated = true;
	struct cvm_key *sk = NULL;
	assert_int_equal(cvm_key_generate_rsa(2048, 65537, &sk, &err), 0);
	struct cvm_attest_service_config cfg = { .issuer = "https://attest.test",
						 .signing_key = sk, .roots = roots,
						 .snp_policy = &pol };
	struct cvm_attest_service *svc = NULL;
	assert_int_equal(cvm_attest_service_new(&cfg, &svc, &err), 0);
	char *token = NULL;
	int r = cvm_attest_service_attest_snp(svc, body, strlen(body), &token, &err);
	if (r != want)
		fail_msg("attest: %d (%s), want %d", r, err.msg, want);
	if (r == 0) {
		/* The token binds our key, as the release will require. */
		json_t *claims = NULL;
		assert_int_equal(cvm_attest_service_verify_token(svc, token, &claims, &err), 0);
		json_t *k = json_array_get(cvm_json_path(claims, "x-ms-runtime.keys"), 0);
		assert_string_equal(json_string_value(json_object_get(k, "kid")), CVM_GUEST_KID);
		assert_true(json_is_true(json_object_get(claims, "x-opencvm-emulated")));
		json_decref(claims);
		/* and the guest accepts the service's response shape */
		_cleanup_free_ char *resp = cvm_asprintf("{\"token\":\"%s\"}", token);
		assert_int_equal(cvm_guest_parse_token((uint8_t *)resp, strlen(resp), token_out,
						       &err), 0);
		assert_string_equal(*token_out, token);
	} else {
		assert_non_null(strstr(err.msg, "runtimeData"));
	}
	free(token);
	cvm_attest_service_free(svc);
	cvm_key_free(sk);
	cvm_attest_roots_free(roots);
}

static void test_attest_binding(void **state)
{
	struct fx *fx = *state;
	struct cvm_err err = { 0 };
	_cleanup_free_ char *rt = NULL, *other = NULL, *token = NULL;
	assert_int_equal(cvm_guest_runtime_data(fx->eph, "nonce-1", "vm1", &rt, &err), 0);
	assert_int_equal(cvm_guest_runtime_data(fx->eph, "nonce-2", "vm1", &other, &err), 0);
	attest_via_service(fx, rt, rt, 0, &token);
	assert_non_null(token);
	/* runtime data swapped after the report was made: the binding check refuses it */
	attest_via_service(fx, other, rt, -EBADMSG, NULL);
}

static void test_attest_body_refusals(void **state)
{
	(void)state;
	struct cvm_err err = { 0 };
	uint8_t rep[CVM_SNP_REPORT_SIZE] = { 0 };
	struct cvm_guest_evidence ev = { .tee = CVM_GUEST_TEE_TDX, .report = rep,
					 .report_len = 1024 };
	char *body = NULL;
	assert_int_equal(cvm_guest_attest_body(&ev, "{}", "n", &body, &err), -ENOTSUP);
	assert_non_null(strstr(err.msg, "TD quote"));
	ev.tee = CVM_GUEST_TEE_SEV_GUEST;
	assert_int_equal(cvm_guest_attest_body(&ev, "{}", "n", &body, &err), -EINVAL);
	ev.report_len = sizeof(rep);
	assert_int_equal(cvm_guest_attest_body(&ev, "{}", "n", &body, &err), -ENOENT);
	ev.cert_chain = "PEM";
	assert_int_equal(cvm_guest_attest_body(&ev, "", "n", &body, &err), -EINVAL);
	assert_int_equal(cvm_guest_attest_body(&ev, "{}", NULL, &body, &err), 0);
	assert_null(strstr(body, "nonce"));
	free(body);
}

static void test_parse_token(void **state)
{
	(void)state;
	struct cvm_err err = { 0 };
	char *t = NULL;
	const char *ok = "{\"token\":\"eyJh.eyJi.c2ln\"}";
	assert_int_equal(cvm_guest_parse_token((const uint8_t *)ok, strlen(ok), &t, &err), 0);
	assert_string_equal(t, "eyJh.eyJi.c2ln");
	free(t);
	static const char *const bad[] = { "{\"token\":\"a.b\"}", "{\"token\":\"a.b.c d\"}",
					   "{\"tok\":\"a.b.c\"}", "{\"token\":1}", "[]", "" };
	for (size_t i = 0; i < CVM_ARRAY_SIZE(bad); i++) {
		t = NULL;
		assert_int_equal(cvm_guest_parse_token((const uint8_t *)bad[i], strlen(bad[i]), &t,
						       &err), -EINVAL);
		assert_null(t);
	}
}

/* A release response shaped like the key service's (src/hsm/release.c). */
static char *release_response(const struct cvm_key *wrap_to, const struct cvm_secret *material,
			      const char *enc)
{
	struct cvm_err err = { 0 };
	struct cvm_buf ct = { 0 };
	assert_int_equal(cvm_rsa_aes_key_wrap(cvm_key_pkey(wrap_to), enc, material->data,
					      material->len, &ct, &err), 0);
	json_t *kh = json_pack("{s:s,s:{s:s,s:s,s:s}}", "schema_version", "1.0", "header", "kid",
			       CVM_GUEST_KID, "alg", "dir", "enc", enc);
	assert_int_equal(cvm_json_set_b64url(kh, "ciphertext", ct.data, ct.len), 0);
	cvm_buf_free(&ct);
	_cleanup_free_ char *khs = cvm_json_dump(kh);
	json_decref(kh);
	_cleanup_free_ char *khb = cvm_b64url_encode(khs, strlen(khs));
	json_t *payload = json_pack("{s:{s:s},s:{s:{s:{s:s,s:s}}}}", "request", "enc", enc,
				    "response", "key", "key", "kid", "https://kv/keys/k/1",
				    "key_hsm", khb);
	_cleanup_free_ char *ps = cvm_json_dump(payload);
	json_decref(payload);
	struct cvm_key *signer = NULL;
	assert_int_equal(cvm_key_generate_ec("P-256", &signer, &err), 0);
	char *jws = NULL;
	assert_int_equal(cvm_jws_sign(signer, "ES256", NULL, (const uint8_t *)ps, strlen(ps), &jws,
				      &err), 0);
	cvm_key_free(signer);
	char *out = cvm_asprintf("{\"value\":\"%s\"}", jws);
	free(jws);
	return out;
}

static void test_release_unwrap(void **state)
{
	struct fx *fx = *state;
	struct cvm_err err = { 0 };
	/* The DES key is an oct A256KW key: released material is its 32 raw bytes. */
	_cleanup_secret_ struct cvm_secret *des = cvm_secret_random(32);
	_cleanup_free_ char *resp = release_response(fx->eph, des, "RSA_AES_KEY_WRAP_256");
	uint8_t *ct = NULL;
	size_t ctl = 0;
	char *enc = NULL;
	assert_int_equal(cvm_guest_parse_release((uint8_t *)resp, strlen(resp), &ct, &ctl, &enc,
						 &err), 0);
	assert_string_equal(enc, "RSA_AES_KEY_WRAP_256");
	struct cvm_secret *mat = NULL;
	assert_int_equal(cvm_guest_unwrap_released(fx->eph, enc, ct, ctl, &mat, &err), 0);
	assert_true(cvm_secret_eq(mat, des->data, des->len));

	/* The disk secret wrapped A256KW by the DES key opens; a different key does not. */
	_cleanup_secret_ struct cvm_secret *disk = cvm_secret_random(32);
	struct cvm_buf w = { 0 };
	assert_int_equal(cvm_aes_kw_wrap(des->data, 32, false, disk->data, 32, &w, &err), 0);
	_cleanup_free_ char *wb = cvm_b64url_encode(w.data, w.len);
	cvm_buf_free(&w);
	struct cvm_secret *got = NULL;
	assert_int_equal(cvm_guest_unwrap_disk_secret(mat, "A256KW", wb, &got, &err), 0);
	assert_true(cvm_secret_eq(got, disk->data, 32));
	cvm_secret_free(got);
	_cleanup_secret_ struct cvm_secret *wrong = cvm_secret_random(32);
	assert_int_equal(cvm_guest_unwrap_disk_secret(wrong, "A256KW", wb, &got, &err), -EBADMSG);
	assert_int_equal(cvm_guest_unwrap_disk_secret(mat, "RSA1_5", wb, &got, &err), -ENOTSUP);
	cvm_secret_free(mat);

	/* Wrapped for someone else's key: the guest cannot unwrap it. */
	struct cvm_key *other = NULL;
	assert_int_equal(cvm_key_generate_rsa(2048, 65537, &other, &err), 0);
	mat = NULL;
	assert_int_equal(cvm_guest_unwrap_released(other, enc, ct, ctl, &mat, &err), -EBADMSG);
	assert_null(mat);
	cvm_key_free(other);
	free(ct);
	free(enc);

	static const char *const bad[] = { "{\"value\":\"x\"}", "{}", "{\"value\":\"a.b.c\"}" };
	for (size_t i = 0; i < CVM_ARRAY_SIZE(bad); i++) {
		ct = NULL;
		enc = NULL;
		assert_true(cvm_guest_parse_release((const uint8_t *)bad[i], strlen(bad[i]), &ct,
						    &ctl, &enc, &err) < 0);
		assert_null(ct);
		assert_null(enc);
	}
}

static void test_unwrap_rsa_disk_secret(void **state)
{
	struct fx *fx = *state;
	struct cvm_err err = { 0 };
	/* An RSA DES key: the released material is PKCS#8 DER. */
	_cleanup_secret_ struct cvm_secret *der = NULL;
	assert_int_equal(cvm_key_export_private(fx->eph, &der, &err), 0);
	_cleanup_secret_ struct cvm_secret *disk = cvm_secret_random(32);
	struct cvm_buf w = { 0 };
	assert_int_equal(cvm_rsa_oaep_encrypt(cvm_key_pkey(fx->eph), "SHA256", disk->data, 32, &w,
					      &err), 0);
	_cleanup_free_ char *wb = cvm_b64url_encode(w.data, w.len);
	cvm_buf_free(&w);
	struct cvm_secret *got = NULL;
	assert_int_equal(cvm_guest_unwrap_disk_secret(der, "RSA-OAEP-256", wb, &got, &err), 0);
	assert_true(cvm_secret_eq(got, disk->data, 32));
	cvm_secret_free(got);
	_cleanup_secret_ struct cvm_secret *junk = cvm_secret_random(64);
	assert_true(cvm_guest_unwrap_disk_secret(junk, "RSA-OAEP-256", wb, &got, &err) < 0);
	assert_int_equal(cvm_guest_unwrap_disk_secret(der, "RSA-OAEP-256", "!!", &got, &err),
			 -EINVAL);
}

static void test_key_url(void **state)
{
	(void)state;
	struct cvm_err err = { 0 };
	char *n = NULL, *v = NULL;
	assert_int_equal(cvm_guest_key_url_split("https://kv:8443/keys/des-key/0123abcd", &n, &v,
						 &err), 0);
	assert_string_equal(n, "des-key");
	assert_string_equal(v, "0123abcd");
	free(n);
	free(v);
	static const char *const bad[] = { "https://kv/keys/des-key", "https://kv/keys//1",
					   "https://kv/keys/a/b/c", "https://kv/secrets/a/1",
					   "https://kv/keys/a b/1", "https://kv/keys/a/xyz", NULL };
	for (size_t i = 0; bad[i]; i++)
		assert_int_equal(cvm_guest_key_url_split(bad[i], &n, &v, &err), -EINVAL);
	assert_null(n);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_cmdline),
		cmocka_unit_test(test_detect),
		cmocka_unit_test(test_snp_resp_real),
		cmocka_unit_test(test_snp_ioctl_error),
		cmocka_unit_test(test_snp_cert_table),
		cmocka_unit_test(test_emu_reply),
		cmocka_unit_test(test_runtime_data),
		cmocka_unit_test(test_attest_binding),
		cmocka_unit_test(test_attest_body_refusals),
		cmocka_unit_test(test_parse_token),
		cmocka_unit_test(test_release_unwrap),
		cmocka_unit_test(test_unwrap_rsa_disk_secret),
		cmocka_unit_test(test_key_url),
	};
	return cmocka_run_group_tests(tests, setup, teardown);
}
