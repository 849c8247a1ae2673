/* SPDX-License-Identifier: Apache-2.0 */
/* cvm demo: start a throw-away cvmd on loopback and run the key-service flow end to end,
 * printing each step with its timing. Everything lives in a temp dir removed at the end. */
#include "cli.h"

#include <fcntl.h>
#include <limits.h>
#include <opencvm/audit.h>
#include <opencvm/store.h>
#include <signal.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

struct demo {
	struct cli *cli;
	char dir[64];
	char *dev_info, *store_url;
	pid_t cvmd;
	uint64_t t0, step_t0;
	int step;
	char disk_path[160], sign_path[160]; /* /keys/NAME/VERSION */
};

static void step_begin(struct demo *d, const char *what)
{
	d->step++;
	d->step_t0 = cvm_monotonic_ns();
	printf("[%d] %-58s", d->step, what);
	fflush(stdout);
}

static void step_end(struct demo *d, const char *detail)
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
static char *sibling_binary(const char *name)
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
	_cleanup_free_ char *cvmd = sibling_binary("cvmd");
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
		      "--store", d->store_url, (char *)NULL);
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

static int call(struct demo *d, const char *method, const char *path, json_t *body,
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
	int r = call(d, "PUT", "/opencvm/principals/demo-app", json_pack("{s:s}", "kind",
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
			r = call(d, "PUT", path, json_pack("{s:{s:s,s:s}}", "properties",
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
		r = call(d, "POST", op_path(d->disk_path, "wrapkey"), json_incref(body), &res, err);
	json_decref(body);
	if (r < 0) {
		OPENSSL_cleanse(secret, sizeof(secret));
		return r;
	}
	json_t *ub = json_pack("{s:s,s:O}", "alg", "RSA-OAEP-256", "value",
			       json_object_get(res, "value"));
	json_decref(res);
	res = NULL;
	r = call(d, "POST", op_path(d->disk_path, "unwrapkey"), ub, &res, err);
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
		r = call(d, "POST", op_path(d->sign_path, "sign"), json_incref(sb), &res, err);
	json_decref(sb);
	if (r < 0)
		return r;
	json_t *vb = json_pack("{s:s,s:O}", "alg", "ES384", "value", json_object_get(res, "value"));
	json_decref(res);
	res = NULL;
	cvm_json_set_b64url(vb, "digest", dg, sizeof(dg));
	r = call(d, "POST", op_path(d->sign_path, "verify"), vb, &res, err);
	if (r == 0 && !json_is_true(json_object_get(res, "value")))
		r = cvm_err_internal(err, "service says its own signature is invalid");
	json_decref(res);
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

static void remove_tree(const char *dir)
{
	static const char *const files[] = {"dev.json", "cvmd.log", "demo.db", "demo.db-wal",
					    "demo.db-shm"};
	for (size_t i = 0; i < CVM_ARRAY_SIZE(files); i++) {
		_cleanup_free_ char *p = cvm_asprintf("%s/%s", dir, files[i]);
		if (p)
			unlink(p);
	}
	rmdir(dir);
}

int cli_demo(struct cli *cli, int argc, char **argv)
{
	const char *usage = "demo [--keep]";
	bool keep = false;
	const struct cli_opt opts[] = {{"--keep", false, NULL, &keep, NULL}};
	int rc = cli_parse(argc + 1, argv - 1, opts, 1, NULL, 0, 0, NULL, usage);
	if (rc)
		return rc;
	struct demo d = {.cli = cli, .t0 = cvm_monotonic_ns()};
	struct cvm_err err = {0};
	snprintf(d.dir, sizeof(d.dir), "/tmp/cvm-demo.XXXXXX");
	if (!mkdtemp(d.dir)) {
		cvm_err_internal(&err, "mkdtemp: %s", strerror(errno));
		return cli_fail(&err, "demo");
	}
	d.dev_info = cvm_asprintf("%s/dev.json", d.dir);
	d.store_url = cvm_asprintf("sqlite:%s/demo.db", d.dir);
	cli->dev_info = d.dev_info;
	printf("OpenCVM demo: key service on loopback, state in %s\n", d.dir);
	int64_t records = 0;
	char detail[128];
	json_t *res = NULL;

	step_begin(&d, "start cvmd --dev (SQLite, self-signed TLS, HSM activated)");
	if (start_cvmd(&d, &err) < 0)
		goto fail;
	step_end(&d, NULL);

	step_begin(&d, "administrator signs in (OAuth2 client credentials)");
	if (cli_connect(cli, &err) < 0)
		goto fail;
	step_end(&d, cli->conn.base_url);

	step_begin(&d, "administrator cannot use keys (separation of duties)");
	{
		struct cvm_err e2 = {0};
		int r = call(&d, "POST", "/keys/admin-key/create",
			     json_pack("{s:s}", "kty", "EC-HSM"), NULL, &e2);
		if (r != -EPERM) {
			cvm_err_internal(&err, "expected 403 Forbidden, got %s",
					 r ? e2.code : "success");
			goto fail;
		}
	}
	step_end(&d, "403 Forbidden as expected");

	step_begin(&d, "create identity demo-app, assign Crypto User + Officer");
	if (make_key_user(&d, &err) < 0)
		goto fail;
	step_end(&d, NULL);

	step_begin(&d, "create RSA-HSM 3072 key demo-disk-key");
	if (call(&d, "POST", "/keys/demo-disk-key/create",
		 json_pack("{s:s,s:i}", "kty", "RSA-HSM", "key_size", 3072), &res, &err) < 0)
		goto fail;
	snprintf(detail, sizeof(detail), "%s",
		 json_string_value(cvm_json_path(res, "key.kid")) ?: "");
	if (key_version_path(res, d.disk_path, sizeof(d.disk_path), &err) < 0)
		goto fail;
	json_decref(res);
	res = NULL;
	step_end(&d, detail);

	step_begin(&d, "wrap + unwrap a 256-bit disk secret (RSA-OAEP-256)");
	if (wrap_roundtrip(&d, &err) < 0)
		goto fail;
	step_end(&d, "round trip equal");

	step_begin(&d, "create EC-HSM P-384 key, sign + verify (ES384)");
	if (call(&d, "POST", "/keys/demo-sign-key/create",
		 json_pack("{s:s,s:s}", "kty", "EC-HSM", "crv", "P-384"), &res, &err) < 0 ||
	    key_version_path(res, d.sign_path, sizeof(d.sign_path), &err) < 0 ||
	    sign_verify(&d, &err) < 0)
		goto fail;
	json_decref(res);
	res = NULL;
	step_end(&d, NULL);

	step_begin(&d, "rotate demo-disk-key (new version)");
	if (call(&d, "POST", "/keys/demo-disk-key/rotate", NULL, NULL, &err) < 0)
		goto fail;
	step_end(&d, NULL);

	step_begin(&d, "soft-delete demo-sign-key, then recover it");
	if (call(&d, "DELETE", "/keys/demo-sign-key", NULL, NULL, &err) < 0 ||
	    call(&d, "GET", "/deletedkeys/demo-sign-key", NULL, NULL, &err) < 0 ||
	    call(&d, "POST", "/deletedkeys/demo-sign-key/recover", NULL, NULL, &err) < 0)
		goto fail;
	step_end(&d, NULL);

	step_begin(&d, "verify the hash-chained audit log");
	if (verify_audit(&d, &records, &err) < 0)
		goto fail;
	snprintf(detail, sizeof(detail), "%lld records, chain intact", (long long)records);
	step_end(&d, detail);

	stop_cvmd(&d);
	printf("demo finished in %.1f s\n", (double)(cvm_monotonic_ns() - d.t0) / 1e9);
	if (keep)
		printf("state kept in %s\n", d.dir);
	else
		remove_tree(d.dir);
	free(d.dev_info);
	free(d.store_url);
	return CLI_OK;
fail:
	rc = step_fail(&d, &err);
	stop_cvmd(&d);
	free(d.dev_info);
	free(d.store_url);
	return rc;
}
