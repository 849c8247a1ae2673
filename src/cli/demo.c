/* SPDX-License-Identifier: Apache-2.0 */
/* cvm demo: start a throw-away cvmd on loopback and run the key-service flow end to end,
 * printing each step with its timing. Everything lives in a temp dir removed at the end. */
#include "demo.h"

#include <fcntl.h>
#include <ftw.h>
#include <limits.h>
#include <opencvm/attest.h>
#include <opencvm/audit.h>
#include <opencvm/crypto.h>
#include <opencvm/store.h>
#include <signal.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>


void demo_step_begin(struct demo *d, const char *what)
{
	d->step++;
	d->step_t0 = cvm_monotonic_ns();
	printf("[%2d] %-56s", d->step, what);
	fflush(stdout);
}

void demo_step_end(struct demo *d, const char *detail)
{
	double ms = (double)(cvm_monotonic_ns() - d->step_t0) / 1e6;
	printf(" ok  %7.1f ms%s%s\n", ms, detail && *detail ? "  " : "", detail ? detail : "");
}

static int step_fail(struct demo *d, const struct cvm_err *err)
{
	printf(" FAILED\n");
	fprintf(stderr, "cvm demo: step %d: %s: %s\n", d->step, err->code, err->msg);
	if (d->dir[0])
		fprintf(stderr, "cvm demo: cvmd log: %s/cvmd.log (kept)\n", d->dir);
	return CLI_FAIL;
}

/* cvmd sits beside cvm in the build dir and in the install prefix. */
char *demo_sibling_binary(const char *name)
{
	char self[PATH_MAX];
	ssize_t n = readlink("/proc/self/exe", self, sizeof(self) - 1);
	if (n <= 0)
		return NULL;
	self[n] = 0;
	char *slash = strrchr(self, '/');
	if (!slash)
		return NULL;
	*slash = 0;
	return cvm_asprintf("%s/%s", self, name);
}

static int start_cvmd(struct demo *d, struct cvm_err *err)
{
	_cleanup_free_ char *cvmd = demo_sibling_binary("cvmd");
	_cleanup_free_ char *log = cvm_asprintf("%s/cvmd.log", d->dir);
	if (!cvmd || !log)
		return cvm_err_nomem(err);
	if (access(cvmd, X_OK) != 0)
		return cvm_err_set(err, ENOENT, "NotFound", "cvmd not found next to cvm (%s)", cvmd);
	pid_t pid = fork();
	if (pid < 0)
		return cvm_err_internal(err, "fork: %s", strerror(errno));
	if (pid == 0) {
		int fd = open(log, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
		if (fd >= 0) {
			dup2(fd, STDOUT_FILENO);
			dup2(fd, STDERR_FILENO);
		}
		execl(cvmd, "cvmd", "--dev", "--listen", "127.0.0.1:0", "--dev-info", d->dev_info,
		      "--store", d->store_url, "--state-dir", d->state_dir, (char *)NULL);
		_exit(127);
	}
	d->cvmd = pid;
	/* The dev-info file appears (atomically) once cvmd serves requests. */
	for (int i = 0; i < 600; i++) {
		if (access(d->dev_info, R_OK) == 0)
			return 0;
		int status;
		if (waitpid(pid, &status, WNOHANG) == pid) {
			d->cvmd = 0;
			return cvm_err_internal(err, "cvmd exited during start-up (see %s)", log);
		}
		struct timespec ts = {0, 50 * 1000 * 1000};
		nanosleep(&ts, NULL);
	}
	return cvm_err_set(err, ETIMEDOUT, "Timeout", "cvmd did not start within 30 s (see %s)",
			   log);
}

static void stop_cvmd(struct demo *d)
{
	if (d->cvmd <= 0)
		return;
	kill(d->cvmd, SIGTERM);
	for (int i = 0; i < 100; i++) {
		if (waitpid(d->cvmd, NULL, WNOHANG) == d->cvmd) {
			d->cvmd = 0;
			return;
		}
		struct timespec ts = {0, 50 * 1000 * 1000};
		nanosleep(&ts, NULL);
	}
	kill(d->cvmd, SIGKILL);
	waitpid(d->cvmd, NULL, 0);
	d->cvmd = 0;
}

/* "/keys/NAME/VERSION" + "/" + op, in a per-thread buffer (the demo is single-threaded). */
static const char *op_path(const char *key_path, const char *op)
{
	static _Thread_local char buf[200];
	snprintf(buf, sizeof(buf), "%s/%s", key_path, op);
	return buf;
}

/* Remember "/keys/NAME/VERSION" from a KeyBundle's kid. */
static int key_version_path(json_t *bundle, char *out, size_t outlen, struct cvm_err *err)
{
	const char *kid = json_string_value(cvm_json_path(bundle, "key.kid"));
	const char *k = kid ? strstr(kid, "/keys/") : NULL;
	if (!k || strlen(k) >= outlen)
		return cvm_err_internal(err, "key bundle has no usable kid");
	snprintf(out, outlen, "%s", k);
	return 0;
}

int demo_call(struct demo *d, const char *method, const char *path, json_t *body,
		json_t **out, struct cvm_err *err)
{
	json_t *res = NULL;
	int r = cli_call(d->cli, method, path, body, &res, err);
	json_decref(body);
	if (r == 0 && out)
		*out = res;
	else
		json_decref(res);
	return r;
}

/* A key user distinct from the administrator: separation of duties is on by default. */
static int make_key_user(struct demo *d, struct cvm_err *err)
{
	json_t *res = NULL;
	int r = demo_call(d, "PUT", "/opencvm/principals/demo-app", json_pack("{s:s}", "kind",
			"ServicePrincipal"), &res, err);
	if (r < 0)
		return r;
	const char *oid = json_string_value(json_object_get(res, "object_id"));
	const char *cid = json_string_value(json_object_get(res, "client_id"));
	json_t *sv = json_object_get(res, "client_secret");
	if (!oid || !cid || !json_is_string(sv)) {
		json_decref(res);
		return cvm_err_internal(err, "identity response lacks object_id/client_id/secret");
	}
	static const char *const roles[] = {
		"21dbd100-6940-42c2-9190-5d6cb909625b", /* Managed HSM Crypto User */
		"515eb02d-2335-4d2d-92f2-b1cbdf9c3778", /* Managed HSM Crypto Officer */
	};
	for (size_t i = 0; i < CVM_ARRAY_SIZE(roles) && r == 0; i++) {
		char guid[37];
		r = cvm_uuid4(guid, err);
		_cleanup_free_ char *path =
			cvm_asprintf("/providers/Microsoft.Authorization/roleAssignments/%s", guid);
		_cleanup_free_ char *rid =
			cvm_asprintf("/providers/Microsoft.Authorization/roleDefinitions/%s", roles[i]);
		if (r == 0)
			r = demo_call(d, "PUT", path, json_pack("{s:{s:s,s:s}}", "properties",
					"roleDefinitionId", rid, "principalId", oid), NULL, err);
	}
	if (r == 0) {
		struct cvm_secret *secret = cvm_secret_from(json_string_value(sv), json_string_length(sv));
		r = secret ? cli_switch_identity(d->cli, cid, secret, err) : cvm_err_nomem(err);
		cvm_secret_free(secret);
	}
	OPENSSL_cleanse((char *)json_string_value(sv), json_string_length(sv));
	json_decref(res);
	return r;
}

static int wrap_roundtrip(struct demo *d, struct cvm_err *err)
{
	uint8_t secret[32];
	int r = cvm_random(secret, sizeof(secret), err);
	json_t *body = json_pack("{s:s}", "alg", "RSA-OAEP-256"), *res = NULL;
	if (r == 0)
		r = cvm_json_set_b64url(body, "value", secret, sizeof(secret));
	if (r == 0)
		r = demo_call(d, "POST", op_path(d->disk_path, "wrapkey"), json_incref(body), &res, err);
	json_decref(body);
	if (r < 0) {
		OPENSSL_cleanse(secret, sizeof(secret));
		return r;
	}
	json_t *ub = json_pack("{s:s,s:O}", "alg", "RSA-OAEP-256", "value",
			       json_object_get(res, "value"));
	json_decref(res);
	res = NULL;
	r = demo_call(d, "POST", op_path(d->disk_path, "unwrapkey"), ub, &res, err);
	uint8_t *back = NULL;
	size_t blen = 0;
	if (r == 0)
		r = cvm_json_b64url(res, "value", "value", true, &back, &blen, err);
	if (r == 0 && (blen != sizeof(secret) || !cvm_memeq_ct(back, secret, blen)))
		r = cvm_err_internal(err, "unwrapped secret differs from the original");
	if (back)
		cvm_free_secure(back, blen);
	OPENSSL_cleanse(secret, sizeof(secret));
	json_decref(res);
	return r;
}

static int sign_verify(struct demo *d, struct cvm_err *err)
{
	uint8_t dg[48];
	int r = cvm_random(dg, sizeof(dg), err);
	json_t *sb = json_pack("{s:s}", "alg", "ES384"), *res = NULL;
	if (r == 0)
		r = cvm_json_set_b64url(sb, "value", dg, sizeof(dg));
	if (r == 0)
		r = demo_call(d, "POST", op_path(d->sign_path, "sign"), json_incref(sb), &res, err);
	json_decref(sb);
	if (r < 0)
		return r;
	json_t *vb = json_pack("{s:s,s:O}", "alg", "ES384", "value", json_object_get(res, "value"));
	json_decref(res);
	res = NULL;
	cvm_json_set_b64url(vb, "digest", dg, sizeof(dg));
	r = demo_call(d, "POST", op_path(d->sign_path, "verify"), vb, &res, err);
	if (r == 0 && !json_is_true(json_object_get(res, "value")))
		r = cvm_err_internal(err, "service says its own signature is invalid");
	json_decref(res);
	return r;
}


/* ---- the guest's side of Secure Key Release, played by the demo ---------------------------
 * A TEE-held RSA key goes into the runtime data; the (emulated) SEV-SNP report binds
 * SHA-256(runtime data); the attestation service turns the evidence into a token; the key
 * service releases the key wrapped to the TEE key; only the TEE key can unwrap it. */

static int runtime_data(const struct cvm_key *tee, char **out, struct cvm_err *err)
{
	json_t *jwk = NULL;
	int r = cvm_key_to_jwk(tee, false, &jwk, err);
	if (r < 0)
		return r;
	json_object_set_new(jwk, "kid", json_string("TpmEphemeralEncryptionKey"));
	json_object_set_new(jwk, "key_ops", json_pack("[s]", "encrypt"));
	json_t *rt = json_pack("{s:[o],s:{s:b,s:b,s:b,s:s}}", "keys", jwk, "vm-configuration",
			       "secure-boot", 1, "tpm-enabled", 1, "console-enabled", 0, "vmUniqueId",
			       "opencvm-demo");
	*out = rt ? json_dumps(rt, JSON_COMPACT | JSON_SORT_KEYS) : NULL;
	json_decref(rt);
	return *out ? 0 : cvm_err_nomem(err);
}

static int read_text(const char *dir, const char *name, struct cvm_buf *into, struct cvm_err *err)
{
	_cleanup_free_ char *p = cvm_path_join(dir, name);
	_cleanup_free_ uint8_t *data = NULL;
	size_t len;
	int r = p ? cvm_file_read(p, 1 << 20, &data, &len, err) : cvm_err_nomem(err);
	if (r == 0 && cvm_buf_append(into, data, len) < 0)
		r = cvm_err_nomem(err);
	return r;
}

static int attest(struct demo *d, const struct cvm_key *tee, char **token, struct cvm_err *err)
{
	_cleanup_free_ char *rt = NULL, *emu = cvm_path_join(d->state_dir, "tee-emulator");
	int r = emu ? runtime_data(tee, &rt, err) : cvm_err_nomem(err);
	if (r < 0)
		return r;
	struct cvm_tee_emu_report_in in = {.policy = 0x30000};
	size_t dl = 32;
	if ((r = cvm_digest("SHA256", rt, strlen(rt), in.report_data, &dl, err)) < 0)
		return r;
	memset(in.measurement, 0x5a, sizeof(in.measurement));
	uint8_t report[CVM_SNP_REPORT_SIZE];
	if ((r = cvm_tee_emu_snp_report(emu, &in, report, err)) < 0)
		return cvm_err_prefix(err, "emulated SEV-SNP report");
	struct cvm_buf chain = {0};
	if ((r = read_text(emu, "vcek.pem", &chain, err)) < 0 ||
	    (r = read_text(emu, "ask.pem", &chain, err)) < 0 ||
	    (r = read_text(emu, "ark.pem", &chain, err)) < 0) {
		cvm_buf_free(&chain);
		return r;
	}
	json_t *evidence = json_object();
	cvm_json_set_b64url(evidence, "SnpReport", report, sizeof(report));
	cvm_json_set_b64url(evidence, "VcekCertChain", chain.data, chain.len);
	cvm_buf_free(&chain);
	_cleanup_free_ char *ev = json_dumps(evidence, JSON_COMPACT);
	json_decref(evidence);
	json_t *body = json_pack("{s:{s:s}}", "runtimeData", "dataType", "JSON");
	cvm_json_set_b64url(body, "report", ev, strlen(ev));
	cvm_json_set_b64url(json_object_get(body, "runtimeData"), "data", rt, strlen(rt));
	json_t *res = NULL;
	r = demo_call(d, "POST", "/attest/SevSnpVm?api-version=2022-08-01", body, &res, err);
	if (r < 0)
		return r;
	const char *t = json_string_value(json_object_get(res, "token"));
	*token = t ? strdup(t) : NULL;
	json_decref(res);
	if (!*token)
		return cvm_err_internal(err, "attestation response has no token");
	/* The payload is only displayed here; the key service verifies the signature. */
	struct cvm_jws *jws = NULL;
	if ((r = cvm_jws_parse(*token, strlen(*token), &jws, err)) < 0)
		return r;
	d->claims = json_loadb((const char *)jws->payload, jws->payload_len, 0, NULL);
	cvm_jws_free(jws);
	return d->claims ? 0 : cvm_err_internal(err, "token payload is not JSON");
}

static int create_exportable_key(struct demo *d, struct cvm_err *err)
{
	/* Release only to an SEV-SNP VM attested by this service, emulated evidence allowed
	 * explicitly (a production policy would require x-opencvm-emulated == false). */
	json_t *pol = json_pack("{s:s,s:[{s:s,s:[{s:s,s:s},{s:s,s:b},{s:s,s:b}]}]}", "version",
				"1.0.0", "anyOf", "authority", d->cli->conn.base_url, "allOf", "claim",
				"x-ms-attestation-type", "equals", "sevsnpvm", "claim",
				"x-ms-sevsnpvm-is-debuggable", "equals", 0, "claim",
				"x-opencvm-emulated", "equals", 1);
	_cleanup_free_ char *pj = json_dumps(pol, JSON_COMPACT);
	json_decref(pol);
	json_t *rp = json_pack("{s:s}", "contentType", "application/json; charset=utf-8");
	cvm_json_set_b64url(rp, "data", pj, strlen(pj));
	json_t *body = json_pack("{s:s,s:i,s:{s:b},s:o}", "kty", "RSA-HSM", "key_size", 2048,
				 "attributes", "exportable", 1, "release_policy", rp);
	json_t *res = NULL;
	int r = demo_call(d, "POST", "/keys/demo-release-key/create", body, &res, err);
	if (r == 0)
		r = key_version_path(res, d->release_path, sizeof(d->release_path), err);
	json_decref(res);
	return r;
}

/* Release, then prove the TEE key (and only it) recovers the very key the HSM holds: the
 * unwrapped private key's public half equals the HSM's public key. */
static int release(struct demo *d, const struct cvm_key *tee, const char *token,
		   struct cvm_err *err)
{
	json_t *res = NULL;
	int r = demo_call(d, "POST", op_path(d->release_path, "release"),
		     json_pack("{s:s,s:s}", "target", token, "enc", "RSA_AES_KEY_WRAP_256"), &res,
		     err);
	if (r < 0)
		return r;
	const char *v = json_string_value(json_object_get(res, "value"));
	struct cvm_jws *jws = NULL;
	r = v ? cvm_jws_parse(v, strlen(v), &jws, err) : cvm_err_internal(err, "no value");
	json_decref(res);
	if (r < 0)
		return r;
	json_t *payload = json_loadb((const char *)jws->payload, jws->payload_len, 0, NULL);
	cvm_jws_free(jws);
	json_t *key = cvm_json_path(payload, "response.key.key");
	uint8_t *blob = NULL, *ct = NULL;
	size_t blen = 0, clen = 0;
	json_t *kh = NULL;
	struct cvm_secret *material = NULL;
	struct cvm_key *released = NULL, *hsm_pub = NULL;
	r = cvm_json_b64url(key, "key_hsm", "key_hsm", true, &blob, &blen, err);
	if (r == 0)
		r = cvm_json_parse(blob, blen, false, &kh, err);
	if (r == 0)
		r = cvm_json_b64url(kh, "ciphertext", "key_hsm.ciphertext", true, &ct, &clen, err);
	if (r == 0)
		r = cvm_rsa_aes_key_unwrap(cvm_key_pkey(tee), "RSA_AES_KEY_WRAP_256", ct, clen,
					   &material, err);
	if (r == 0)
		r = cvm_key_import_private(CVM_KTY_RSA, material->data, material->len, &released, err);
	if (r == 0)
		r = cvm_key_from_jwk(key, false, &hsm_pub, err);
	if (r == 0) {
		struct cvm_buf a = {0}, b = {0};
		if (cvm_key_export_public_der(released, &a, err) < 0 ||
		    cvm_key_export_public_der(hsm_pub, &b, err) < 0)
			r = -EIO;
		else if (a.len != b.len || memcmp(a.data, b.data, a.len) != 0)
			r = cvm_err_internal(err, "released key differs from the HSM's key");
		cvm_buf_free(&a);
		cvm_buf_free(&b);
	}
	cvm_key_free(released);
	cvm_key_free(hsm_pub);
	cvm_secret_free(material);
	json_decref(kh);
	json_decref(payload);
	free(blob);
	free(ct);
	return r;
}

static int verify_audit(struct demo *d, int64_t *records, struct cvm_err *err)
{
	struct cvm_store *s = NULL;
	int r = cvm_store_open(d->store_url, &s, err);
	int64_t bad = 0;
	if (r == 0)
		r = cvm_audit_verify(s, records, &bad, err);
	cvm_store_close(s);
	return r;
}

static int remove_entry(const char *path, const struct stat *st, int flag, struct FTW *ftw)
{
	return remove(path);
}

/* The demo's temp dir holds only what the demo and its cvmd created. */
static void remove_tree(const char *dir)
{
	nftw(dir, remove_entry, 16, FTW_DEPTH | FTW_PHYS);
}

int cli_demo(struct cli *cli, int argc, char **argv)
{
	const char *usage = "demo [--keep] [--no-vm] [--guest-image DIR]";
	bool keep = false, no_vm = false;
	const char *image_dir = NULL;
	const struct cli_opt opts[] = {{"--keep", false, NULL, &keep, NULL},
				       {"--no-vm", false, NULL, &no_vm, NULL},
				       {"--guest-image", true, &image_dir, NULL, NULL}};
	int rc = cli_parse(argc + 1, argv - 1, opts, CVM_ARRAY_SIZE(opts), NULL, 0, 0, NULL, usage);
	if (rc)
		return rc;
	struct demo d = {.cli = cli, .t0 = cvm_monotonic_ns(), .image_dir = image_dir};
	struct cvm_err err = {0};
	snprintf(d.dir, sizeof(d.dir), "/tmp/cvm-demo.XXXXXX");
	if (!mkdtemp(d.dir)) {
		cvm_err_internal(&err, "mkdtemp: %s", strerror(errno));
		return cli_fail(&err, "demo");
	}
	d.dev_info = cvm_asprintf("%s/dev.json", d.dir);
	d.store_url = cvm_asprintf("sqlite:%s/demo.db", d.dir);
	d.state_dir = cvm_asprintf("%s/state", d.dir);
	cli->dev_info = d.dev_info;
	printf("OpenCVM demo: key service on loopback, state in %s\n", d.dir);
	int64_t records = 0;
	char detail[128];
	json_t *res = NULL;
	struct cvm_key *tee = NULL;
	char *token = NULL;

	demo_step_begin(&d, "start cvmd --dev (SQLite, self-signed TLS, HSM activated)");
	if (start_cvmd(&d, &err) < 0)
		goto fail;
	demo_step_end(&d, NULL);

	demo_step_begin(&d, "administrator signs in (OAuth2 client credentials)");
	if (cli_connect(cli, &err) < 0)
		goto fail;
	demo_step_end(&d, cli->conn.base_url);

	demo_step_begin(&d, "administrator cannot use keys (separation of duties)");
	{
		struct cvm_err e2 = {0};
		int r = demo_call(&d, "POST", "/keys/admin-key/create",
			     json_pack("{s:s}", "kty", "EC-HSM"), NULL, &e2);
		if (r != -EPERM) {
			cvm_err_internal(&err, "expected 403 Forbidden, got %s",
					 r ? e2.code : "success");
			goto fail;
		}
	}
	demo_step_end(&d, "403 Forbidden as expected");

	demo_step_begin(&d, "create identity demo-app, assign Crypto User + Officer");
	if (make_key_user(&d, &err) < 0)
		goto fail;
	demo_step_end(&d, NULL);

	demo_step_begin(&d, "create RSA-HSM 3072 key demo-disk-key");
	if (demo_call(&d, "POST", "/keys/demo-disk-key/create",
		 json_pack("{s:s,s:i}", "kty", "RSA-HSM", "key_size", 3072), &res, &err) < 0)
		goto fail;
	snprintf(detail, sizeof(detail), "%s",
		 json_string_value(cvm_json_path(res, "key.kid")) ?: "");
	if (key_version_path(res, d.disk_path, sizeof(d.disk_path), &err) < 0)
		goto fail;
	json_decref(res);
	res = NULL;
	demo_step_end(&d, detail);

	demo_step_begin(&d, "wrap + unwrap a 256-bit disk secret (RSA-OAEP-256)");
	if (wrap_roundtrip(&d, &err) < 0)
		goto fail;
	demo_step_end(&d, "round trip equal");

	demo_step_begin(&d, "create EC-HSM P-384 key, sign + verify (ES384)");
	if (demo_call(&d, "POST", "/keys/demo-sign-key/create",
		 json_pack("{s:s,s:s}", "kty", "EC-HSM", "crv", "P-384"), &res, &err) < 0 ||
	    key_version_path(res, d.sign_path, sizeof(d.sign_path), &err) < 0 ||
	    sign_verify(&d, &err) < 0)
		goto fail;
	json_decref(res);
	res = NULL;
	demo_step_end(&d, NULL);

	demo_step_begin(&d, "rotate demo-disk-key (new version)");
	if (demo_call(&d, "POST", "/keys/demo-disk-key/rotate", NULL, NULL, &err) < 0)
		goto fail;
	demo_step_end(&d, NULL);

	demo_step_begin(&d, "soft-delete demo-sign-key, then recover it");
	if (demo_call(&d, "DELETE", "/keys/demo-sign-key", NULL, NULL, &err) < 0 ||
	    demo_call(&d, "GET", "/deletedkeys/demo-sign-key", NULL, NULL, &err) < 0 ||
	    demo_call(&d, "POST", "/deletedkeys/demo-sign-key/recover", NULL, NULL, &err) < 0)
		goto fail;
	demo_step_end(&d, NULL);

	demo_step_begin(&d, "guest: emulated SEV-SNP report binding a TEE key -> token");
	if (cvm_key_generate_rsa(2048, 0, &tee, &err) < 0 || attest(&d, tee, &token, &err) < 0)
		goto fail;
	snprintf(detail, sizeof(detail), "type=%s emulated=%s debuggable=%s",
		 json_string_value(json_object_get(d.claims, "x-ms-attestation-type")) ?: "?",
		 json_is_true(json_object_get(d.claims, "x-opencvm-emulated")) ? "true" : "false",
		 json_is_true(json_object_get(d.claims, "x-ms-sevsnpvm-is-debuggable")) ? "true" : "false");
	demo_step_end(&d, detail);

	demo_step_begin(&d, "create exportable key with a release policy (SKR 1.0.0)");
	if (create_exportable_key(&d, &err) < 0)
		goto fail;
	demo_step_end(&d, NULL);

	demo_step_begin(&d, "Secure Key Release to the TEE key; unwrap; compare");
	if (release(&d, tee, token, &err) < 0)
		goto fail;
	demo_step_end(&d, "released key == HSM key");

	demo_step_begin(&d, "the same token again is refused (replay)");
	{
		struct cvm_err e2 = {0};
		int rel = release(&d, tee, token, &e2);
		if (rel != -EPERM) {
			cvm_err_internal(&err, "expected 403, got %s", rel ? e2.code : "success");
			goto fail;
		}
	}
	demo_step_end(&d, "403 Forbidden as expected");

	if (!no_vm && demo_vm(&d, &err) < 0)
		goto fail;

	demo_step_begin(&d, "verify the hash-chained audit log");
	if (verify_audit(&d, &records, &err) < 0)
		goto fail;
	snprintf(detail, sizeof(detail), "%lld records, chain intact", (long long)records);
	demo_step_end(&d, detail);

	stop_cvmd(&d);
	printf("demo finished in %.1f s\n", (double)(cvm_monotonic_ns() - d.t0) / 1e9);
	if (keep)
		printf("state kept in %s\n", d.dir);
	else
		remove_tree(d.dir);
	free(d.dev_info);
	free(d.store_url);
	free(d.state_dir);
	json_decref(d.claims);
	cvm_key_free(tee);
	free(token);
	return CLI_OK;
fail:
	rc = step_fail(&d, &err);
	demo_vm_stop(&d);
	stop_cvmd(&d);
	free(d.dev_info);
	free(d.store_url);
	free(d.state_dir);
	json_decref(d.claims);
	cvm_key_free(tee);
	free(token);
	return rc;
}
