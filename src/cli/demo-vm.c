/* SPDX-License-Identifier: Apache-2.0 */
/* cvm demo, second half: a confidential VM whose OS disk key reaches only the attested guest.
 * Everything goes through the product surface: keys and roles over cvmd's REST API, the
 * Disk Encryption Set and the disk through `cvm des`/`cvm disk`, the VM through `cvm vm`
 * (create, start as the orchestrator's identity, validate, stop), the guest image through
 * scripts/build-guest-image, the evidence through the emulated SEV-SNP TEE. */
#include "demo.h"

#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <opencvm/audit.h>
#include <opencvm/http.h>
#include <opencvm/store.h>
#include <opencvm/vm.h>
#include <openssl/crypto.h>
#include <signal.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#define VM_NAME "demo-vm"
#define DES_KEY "demo-des-key"
#define VM_SIZE "Standard_DC2as_v5"
#define BOOT_TIMEOUT_S 600

#define ROLE_ENCRYPTION_USER "33413926-3206-4cdd-b39a-83574fe37a17"
#define ROLE_RELEASE_USER "21dbd100-6940-42c2-9190-5d6cb909625c"

/* What the VM half learns on the way. */
struct vmdemo {
	struct demo *d;
	char *image, *kernel, *initrd, *rootfs, *append;
	char *vm_state, *run_dir, *os_img, *cvo_secret_file, *cvo_client_id;
	char measurement[97];
	int port;
};

static void vmdemo_free(struct vmdemo *v)
{
	free(v->image);
	free(v->kernel);
	free(v->initrd);
	free(v->rootfs);
	free(v->append);
	free(v->vm_state);
	free(v->run_dir);
	free(v->os_img);
	free(v->cvo_secret_file);
	free(v->cvo_client_id);
}

static void sleep_ms(long ms)
{
	struct timespec ts = { ms / 1000, (ms % 1000) * 1000000L };
	nanosleep(&ts, NULL);
}

/* The last non-empty line of a log, for an error message. */
static void last_line(const char *path, char *out, size_t cap)
{
	_cleanup_free_ uint8_t *data = NULL;
	size_t len = 0;
	struct cvm_err e = { 0 };
	out[0] = 0;
	if (cvm_file_read(path, 16u << 20, &data, &len, &e) < 0)
		return;
	while (len && (data[len - 1] == '\n' || data[len - 1] == '\r'))
		len--;
	size_t start = len;
	while (start && data[start - 1] != '\n')
		start--;
	snprintf(out, cap, "%.*s", (int)(len - start), (const char *)data + start);
}

static int redirect_to(const char *log)
{
	int fd = open(log, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0600);
	if (fd < 0)
		return -1;
	dup2(fd, STDOUT_FILENO);
	dup2(fd, STDERR_FILENO);
	close(fd);
	return 0;
}

/* Run argv with stdout+stderr appended to log; wait for it. */
static int run_logged(char *const argv[], const char *log, struct cvm_err *err)
{
	pid_t pid = fork();
	if (pid < 0)
		return cvm_err_internal(err, "fork: %s", strerror(errno));
	if (pid == 0) {
		if (redirect_to(log) == 0)
			execv(argv[0], argv);
		_exit(127);
	}
	int st = 0;
	while (waitpid(pid, &st, 0) < 0 && errno == EINTR)
		;
	if (WIFEXITED(st) && WEXITSTATUS(st) == 0)
		return 0;
	char line[300];
	last_line(log, line, sizeof(line));
	return cvm_err_set(err, EIO, "StepFailed", "%s exited with %d: %s (log: %s)", argv[0],
			   WIFEXITED(st) ? WEXITSTATUS(st) : -1, line, log);
}

/* One `cvm GROUP VERB ...` in this process, its output kept in the demo's log. */
static int quiet_verb(struct demo *d, int (*group)(struct cli *, int, char **),
		      const char *name, int argc, char **argv, struct cvm_err *err)
{
	_cleanup_free_ char *log = cvm_asprintf("%s/%s-%s.log", d->dir, name, argv[0]);
	if (!log)
		return cvm_err_nomem(err);
	fflush(stdout);
	fflush(stderr);
	int so = dup(STDOUT_FILENO), se = dup(STDERR_FILENO);
	if (so < 0 || se < 0 || redirect_to(log) < 0) {
		if (so >= 0)
			close(so);
		if (se >= 0)
			close(se);
		return cvm_err_internal(err, "%s: %s", log, strerror(errno));
	}
	int rc = group(d->cli, argc, argv);
	fflush(stdout);
	fflush(stderr);
	dup2(so, STDOUT_FILENO);
	dup2(se, STDERR_FILENO);
	close(so);
	close(se);
	if (rc == CLI_OK)
		return 0;
	char line[300];
	last_line(log, line, sizeof(line));
	return cvm_err_set(err, EIO, "StepFailed", "cvm %s %s: %s (exit %d; log: %s)", name,
			   argv[0], line, rc, log);
}

static char *first_existing(const char *const *paths, size_t n)
{
	for (size_t i = 0; i < n; i++)
		if (paths[i] && access(paths[i], X_OK) == 0)
			return cvm_strdup(paths[i]);
	return NULL;
}

static char *image_cache_dir(void)
{
	const char *xdg = getenv("XDG_CACHE_HOME"), *home = getenv("HOME");
	if (xdg && *xdg == '/')
		return cvm_asprintf("%s/opencvm/guest-image", xdg);
	if (home && *home == '/')
		return cvm_asprintf("%s/.cache/opencvm/guest-image", home);
	return NULL;
}

static int tools_present(struct cvm_err *err)
{
	static const char *const tools[] = { "qemu-system-x86_64", "swtpm", "swtpm_setup" };
	for (size_t i = 0; i < CVM_ARRAY_SIZE(tools); i++) {
		_cleanup_free_ char *cmd = cvm_asprintf("command -v %s >/dev/null 2>&1", tools[i]);
		if (!cmd || system(cmd) != 0)
			return cvm_err_set(err, ENOENT, "NotFound",
					   "%s is not installed (scripts/setup installs it; "
					   "`cvm demo --no-vm` runs the key-service half alone)",
					   tools[i]);
	}
	if (access(CVM_VM_OVMF_CODE, R_OK) != 0 || access(CVM_VM_OVMF_VARS, R_OK) != 0)
		return cvm_err_set(err, ENOENT, "NotFound", "%s: OVMF (Debian package ovmf) missing",
				   CVM_VM_OVMF_CODE);
	return 0;
}

/* scripts/build-guest-image caches by a manifest of its inputs: same manifest = reused. */
static int guest_image(struct vmdemo *v, bool *reused, struct cvm_err *err)
{
	struct demo *d = v->d;
	_cleanup_free_ char *guest = demo_sibling_binary("cvm-guest");
	const char *const scripts[] = { CVM_SOURCE_DIR "/scripts/build-guest-image",
					CVM_PKGDATADIR "/build-guest-image" };
	_cleanup_free_ char *script = first_existing(scripts, CVM_ARRAY_SIZE(scripts));
	if (!guest || access(guest, X_OK) != 0)
		return cvm_err_set(err, ENOENT, "NotFound", "cvm-guest not found next to cvm");
	if (!script)
		return cvm_err_set(err, ENOENT, "NotFound", "build-guest-image not found in %s or %s",
				   scripts[0], scripts[1]);
	v->image = d->image_dir ? cvm_strdup(d->image_dir) : image_cache_dir();
	if (!v->image)
		v->image = cvm_asprintf("%s/guest-image", d->dir);
	_cleanup_free_ char *manifest = v->image ? cvm_path_join(v->image, "manifest") : NULL;
	_cleanup_free_ char *log = cvm_asprintf("%s/guest-image.log", d->dir);
	if (!manifest || !log)
		return cvm_err_nomem(err);
	_cleanup_free_ uint8_t *before = NULL, *after = NULL;
	size_t bl = 0, al = 0;
	struct cvm_err ignore = { 0 };
	if (cvm_file_read(manifest, 1 << 20, &before, &bl, &ignore) < 0)
		bl = 0;
	char *argv[] = { script, "--out", v->image, "--cvm-guest", guest, NULL };
	int r = run_logged(argv, log, err);
	if (r < 0)
		return r;
	if ((r = cvm_file_read(manifest, 1 << 20, &after, &al, err)) < 0)
		return r;
	*reused = bl == al && bl && memcmp(before, after, bl) == 0;
	v->kernel = cvm_path_join(v->image, "vmlinuz");
	v->initrd = cvm_path_join(v->image, "initrd.img");
	v->rootfs = cvm_path_join(v->image, "rootfs.img");
	_cleanup_free_ char *cmdline_file = cvm_path_join(v->image, "cmdline");
	_cleanup_free_ uint8_t *cmdline = NULL;
	size_t cl = 0;
	if (!v->kernel || !v->initrd || !v->rootfs || !cmdline_file)
		return cvm_err_nomem(err);
	if ((r = cvm_file_read(cmdline_file, 4096, &cmdline, &cl, err)) < 0)
		return r;
	while (cl && (cmdline[cl - 1] == '\n' || cmdline[cl - 1] == ' '))
		cl--;
	v->append = cvm_asprintf("%.*s cvm.tee=emulator cvm.vm=" VM_NAME " cvm.disk=/dev/vda",
				 (int)cl, (const char *)cmdline);
	return v->append ? 0 : cvm_err_nomem(err);
}

/* The DES key: released only to an emulated SEV-SNP guest of this attestation service, not
 * debuggable, launched with exactly this firmware, kernel, initrd and command line. */
static int create_des_key(struct vmdemo *v, struct cvm_err *err)
{
	struct demo *d = v->d;
	json_t *pol = json_pack(
		"{s:s,s:[{s:s,s:[{s:s,s:s},{s:s,s:b},{s:s,s:b},{s:s,s:s}]}]}", "version", "1.0.0",
		"anyOf", "authority", d->cli->conn.base_url, "allOf", "claim",
		"x-ms-attestation-type", "equals", "sevsnpvm", "claim", "x-ms-sevsnpvm-is-debuggable",
		"equals", 0, "claim", "x-opencvm-emulated", "equals", 1, "claim",
		"x-ms-sevsnpvm-launchmeasurement", "equals", v->measurement);
	_cleanup_free_ char *pj = pol ? cvm_json_dump(pol) : NULL;
	json_decref(pol);
	json_t *rp = pj ? json_pack("{s:s}", "contentType", "application/json; charset=utf-8")
			: NULL;
	if (!rp || cvm_json_set_b64url(rp, "data", pj, strlen(pj)) < 0) {
		json_decref(rp);
		return cvm_err_nomem(err);
	}
	json_t *body = json_pack("{s:s,s:i,s:{s:b},s:o}", "kty", "RSA-HSM", "key_size", 3072,
				 "attributes", "exportable", 1, "release_policy", rp);
	return demo_call(d, "POST", "/keys/" DES_KEY "/create", body, NULL, err);
}

/* A managed identity with roles on the DES key only. Returns its client id (and, when
 * secret_file is set, writes its secret there, 0600). */
static int make_identity(struct cli *admin, const char *name, const char *const *roles,
			 size_t n_roles, const char *secret_file, char **client_id,
			 struct cvm_err *err)
{
	json_t *res = NULL;
	_cleanup_free_ char *path = cvm_asprintf("/opencvm/principals/%s", name);
	json_t *req = json_pack("{s:s}", "kind", "ManagedIdentity");
	int r = path && req ? cli_call(admin, "PUT", path, req, &res, err) : cvm_err_nomem(err);
	json_decref(req);
	if (r < 0)
		return r;
	const char *oid = json_string_value(json_object_get(res, "object_id"));
	const char *cid = json_string_value(json_object_get(res, "client_id"));
	json_t *sv = json_object_get(res, "client_secret");
	if (!oid || !cid || !json_is_string(sv))
		r = cvm_err_internal(err, "identity %s: response lacks object_id/client_id/secret",
				     name);
	for (size_t i = 0; r == 0 && i < n_roles; i++) {
		char guid[37];
		json_t *body = NULL;
		_cleanup_free_ char *rid = cvm_asprintf(
			"/providers/Microsoft.Authorization/roleDefinitions/%s", roles[i]);
		_cleanup_free_ char *ap = NULL;
		if ((r = cvm_uuid4(guid, err)) < 0)
			break;
		ap = cvm_asprintf("/keys/" DES_KEY "/providers/Microsoft.Authorization/"
				  "roleAssignments/%s", guid);
		body = rid ? json_pack("{s:{s:s,s:s}}", "properties", "roleDefinitionId", rid,
				       "principalId", oid)
			   : NULL;
		json_t *assigned = NULL;
		r = ap && body ? cli_call(admin, "PUT", ap, body, &assigned, err) : cvm_err_nomem(err);
		json_decref(assigned);
		json_decref(body);
	}
	if (r == 0 && secret_file)
		r = cvm_file_write_atomic(secret_file, json_string_value(sv), json_string_length(sv),
					  0600, err);
	if (r == 0 && !(*client_id = cvm_strdup(cid)))
		r = cvm_err_nomem(err);
	if (json_is_string(sv))
		OPENSSL_cleanse((char *)json_string_value(sv), json_string_length(sv));
	json_decref(res);
	return r;
}

static int identities(struct vmdemo *v, struct cvm_err *err)
{
	struct demo *d = v->d;
	struct cli admin = { .dev_info = d->dev_info };
	static const char *const des_roles[] = { ROLE_ENCRYPTION_USER };
	/* The orchestrator releases the disk key for the guest and wraps the VMGS key. */
	static const char *const cvo_roles[] = { ROLE_RELEASE_USER, ROLE_ENCRYPTION_USER };
	_cleanup_free_ char *des_id = NULL;
	v->cvo_secret_file = cvm_asprintf("%s/cvo.secret", d->dir);
	int r = v->cvo_secret_file ? cli_connect(&admin, err) : cvm_err_nomem(err);
	if (r == 0)
		r = make_identity(&admin, "demo-des", des_roles, 1, NULL, &des_id, err);
	if (r == 0)
		r = make_identity(&admin, "demo-cvo", cvo_roles, 2, v->cvo_secret_file,
				  &v->cvo_client_id, err);
	cli_conn_free(&admin.conn);
	if (r < 0)
		return r;
	json_t *des = json_pack("{s:s,s:s,s:s}", "encryptionType", "customer", "identity",
				"demo-des", "keyUrl", "");
	_cleanup_free_ char *url = cvm_asprintf("%s/keys/" DES_KEY, d->cli->conn.base_url);
	if (!des || !url) {
		json_decref(des);
		return cvm_err_nomem(err);
	}
	json_object_set_new(des, "keyUrl", json_string(url));
	return demo_call(d, "PUT", "/opencvm/diskEncryptionSets/demo-des", des, NULL, err);
}

static int free_port(int *port, struct cvm_err *err)
{
	int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
	struct sockaddr_in a = { .sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK) };
	socklen_t al = sizeof(a);
	int r = fd >= 0 && bind(fd, (struct sockaddr *)&a, sizeof(a)) == 0 &&
			getsockname(fd, (struct sockaddr *)&a, &al) == 0
		? 0
		: cvm_err_internal(err, "loopback port: %s", strerror(errno));
	if (fd >= 0)
		close(fd);
	*port = ntohs(a.sin_port);
	return r;
}

/* `cvm vm start` as the orchestrator's identity, in the background: it supervises QEMU and
 * swtpm, answers the guest's TEE requests and relays its release, until the VM powers off. */
static int start_vm(struct vmdemo *v, struct cvm_err *err)
{
	struct demo *d = v->d;
	_cleanup_free_ char *cvm = demo_sibling_binary("cvm");
	_cleanup_free_ char *log = cvm_asprintf("%s/vm-start.log", d->dir);
	_cleanup_free_ char *emu = cvm_path_join(d->state_dir, "tee-emulator");
	char port[16];
	snprintf(port, sizeof(port), "%d", v->port);
	if (!cvm || !log || !emu)
		return cvm_err_nomem(err);
	char *argv[] = { cvm, "--url", d->cli->conn.base_url, "--tenant", d->cli->conn.tenant,
			 "--client-id", v->cvo_client_id, "--client-secret-file",
			 v->cvo_secret_file, "--ca-cert", d->cli->conn.ca_cert, "vm", "start",
			 VM_NAME, "--kernel", v->kernel, "--initrd", v->initrd, "--append",
			 v->append, "--emulator-dir", emu, "--memory-mib", "1024", "--timeout",
			 "900", "--hostfwd-port", port, "--store", d->store_url, "--state-dir",
			 v->vm_state, NULL };
	pid_t pid = fork();
	if (pid < 0)
		return cvm_err_internal(err, "fork: %s", strerror(errno));
	if (pid == 0) {
		if (redirect_to(log) == 0)
			execv(cvm, argv);
		_exit(127);
	}
	d->vm = pid;
	return 0;
}

/* Wait until the console shows want (0), the guest reports a failure or the supervisor
 * exits (error naming what the console said). */
static int wait_console(struct vmdemo *v, const char *want, char *line, size_t cap,
			struct cvm_err *err)
{
	struct demo *d = v->d;
	_cleanup_free_ char *console = cvm_asprintf("%s/vms/" VM_NAME "/console.log", v->vm_state);
	if (!console)
		return cvm_err_nomem(err);
	for (int i = 0; i < BOOT_TIMEOUT_S * 5; i++) {
		_cleanup_free_ uint8_t *data = NULL;
		size_t len = 0;
		struct cvm_err e = { 0 };
		if (cvm_file_read(console, 64u << 20, &data, &len, &e) == 0 && len) {
			data[len - 1] = 0; /* text search; the last byte is a newline or partial */
			const char *hit = strstr((char *)data, want);
			const char *bad = strstr((char *)data, "cvm-guest: FAILED");
			const char *at = bad ? bad : hit;
			if (at) {
				size_t n = strcspn(at, "\r\n");
				snprintf(line, cap, "%.*s", (int)n, at);
			}
			if (bad)
				return cvm_err_set(err, EPERM, "GuestFailed", "%s (console: %s)", line,
						   console);
			if (hit)
				return 0;
		}
		int st;
		if (d->vm > 0 && waitpid(d->vm, &st, WNOHANG) == d->vm) {
			d->vm = 0;
			_cleanup_free_ char *log = cvm_asprintf("%s/vm-start.log", d->dir);
			char last[300] = "";
			if (log)
				last_line(log, last, sizeof(last));
			return cvm_err_set(err, EIO, "VmStopped", "the VM stopped before '%s': %s",
					   want, last);
		}
		sleep_ms(200);
	}
	return cvm_err_set(err, ETIMEDOUT, "Timeout", "no '%s' on the console within %d s", want,
			   BOOT_TIMEOUT_S);
}

static int guest_http(struct vmdemo *v, struct cvm_err *err)
{
	_cleanup_free_ char *url = cvm_asprintf("http://127.0.0.1:%d/", v->port);
	struct cvm_http_client_opts o = { .allow_plain_http_loopback = true, .timeout_ms = 10000 };
	struct cvm_http_result res = { 0 };
	int r = url ? cvm_http_request(&o, "GET", url, NULL, NULL, 0, &res, err) : -ENOMEM;
	for (int i = 0; r == 0 && res.status != 200 && i < 20; i++) {
		cvm_http_result_free(&res);
		sleep_ms(500);
		r = cvm_http_request(&o, "GET", url, NULL, NULL, 0, &res, err);
	}
	if (r == 0 && (res.status != 200 || cvm_buf_append(&res.body, "", 1) < 0 ||
		       !strstr((char *)res.body.data, "unlocked through attestation")))
		r = cvm_err_set(err, EIO, "GuestService", "%s: HTTP %ld without the guest's page",
				url, res.status);
	cvm_http_result_free(&res);
	return r;
}

/* The orchestrator's release record (with the token's claims) and the key service's own
 * record of that release, read back from the audit log. */
static int release_audit(struct vmdemo *v, char *detail, size_t cap, struct cvm_err *err)
{
	struct cvm_store *s = NULL;
	char *text = NULL;
	size_t tl = 0;
	FILE *f = open_memstream(&text, &tl);
	int r = f ? cvm_store_open(v->d->store_url, &s, err) : cvm_err_nomem(err);
	if (r == 0)
		r = cvm_audit_export(s, 0, f, NULL, err);
	cvm_store_close(s);
	if (f)
		fclose(f);
	json_t *orch = NULL;
	int kv_releases = 0;
	for (char *line = text, *next; r == 0 && line && *line; line = next) {
		next = strchr(line, '\n');
		if (next)
			*next++ = 0;
		json_t *rec = json_loads(line, 0, NULL);
		const char *op = json_string_value(json_object_get(rec, "operation"));
		const char *res = json_string_value(json_object_get(rec, "result"));
		const char *name = json_string_value(json_object_get(rec, "key_name"));
		bool ok = res && strcmp(res, "ok") == 0;
		if (op && ok && strcmp(op, "keys/release") == 0 && name && strcmp(name, DES_KEY) == 0)
			kv_releases++;
		if (op && ok && strcmp(op, "vms/release") == 0 && name && strcmp(name, VM_NAME) == 0) {
			json_decref(orch);
			orch = json_incref(rec);
		}
		json_decref(rec);
	}
	free(text);
	if (r < 0)
		return r;
	const char *dj = json_string_value(json_object_get(orch, "detail"));
	json_t *claims = dj ? json_loads(dj, 0, NULL) : NULL;
	const char *m = json_string_value(json_object_get(claims, "x-ms-sevsnpvm-launchmeasurement"));
	if (!orch || !kv_releases || !m || strcasecmp(m, v->measurement) != 0)
		r = cvm_err_set(err, ENOENT, "AuditMissing",
				"audit log: %s (orchestrator vms/release %s, key service keys/release "
				"%d, token measurement %s)", "release not recorded as expected",
				orch ? "found" : "missing", kv_releases, m ? m : "absent");
	else
		snprintf(detail, cap, "type=%s measurement=%.12s… debuggable=%s, by %s",
			 json_string_value(json_object_get(claims, "x-ms-attestation-type")) ?: "?",
			 m, json_is_true(json_object_get(claims, "x-ms-sevsnpvm-is-debuggable"))
				    ? "true" : "false",
			 json_string_value(json_object_get(orch, "principal")) ?: "?");
	json_decref(claims);
	json_decref(orch);
	return r;
}

static int validate(struct vmdemo *v, char *detail, size_t cap, struct cvm_err *err)
{
	struct demo *d = v->d;
	char *argv[] = { "validate", VM_NAME, "--reference-measurement", v->measurement,
			 "--store", d->store_url, "--state-dir", v->vm_state, NULL };
	bool json = d->cli->json;
	d->cli->json = true;
	int r = quiet_verb(d, cli_vm, "vm", 8, argv, err);
	d->cli->json = json;
	_cleanup_free_ char *log = cvm_asprintf("%s/vm-validate.log", d->dir);
	json_t *checks = log ? json_load_file(log, 0, NULL) : NULL;
	size_t i, passed = 0;
	json_t *c;
	struct cvm_buf failed = { 0 };
	json_array_foreach(checks, i, c) {
		if (json_is_true(json_object_get(c, "passed")))
			passed++;
		else
			cvm_buf_printf(&failed, "%s%s (%s)", failed.len ? "; " : "",
				       json_string_value(json_object_get(c, "check")),
				       json_string_value(json_object_get(c, "detail")));
	}
	if (r < 0 && failed.len)
		r = cvm_err_set(err, EPERM, "ValidationFailed", "%.*s", (int)failed.len,
				(const char *)failed.data);
	snprintf(detail, cap, "%zu/%zu checks passed", passed, json_array_size(checks));
	cvm_buf_free(&failed);
	json_decref(checks);
	return r;
}

void demo_vm_stop(struct demo *d)
{
	if (d->vm <= 0)
		return;
	char *argv[] = { "stop", VM_NAME, "--grace", "60", NULL };
	struct cvm_err e = { 0 };
	(void)quiet_verb(d, cli_vm, "vm", 4, argv, &e);
	for (int i = 0; i < 900 && d->vm > 0; i++) {
		if (waitpid(d->vm, NULL, WNOHANG) == d->vm)
			d->vm = 0;
		else
			sleep_ms(100);
	}
	if (d->vm > 0) {
		kill(d->vm, SIGTERM);
		waitpid(d->vm, NULL, 0);
		d->vm = 0;
	}
}

static int stop_vm(struct vmdemo *v, struct cvm_err *err)
{
	struct demo *d = v->d;
	char *argv[] = { "stop", VM_NAME, "--grace", "120", NULL };
	int r = quiet_verb(d, cli_vm, "vm", 4, argv, err);
	int st = 0;
	for (int i = 0; r == 0 && d->vm > 0; i++) {
		if (waitpid(d->vm, &st, WNOHANG) == d->vm)
			d->vm = 0;
		else if (i > 1800)
			r = cvm_err_set(err, ETIMEDOUT, "Timeout", "the VM did not stop within 180 s");
		else
			sleep_ms(100);
	}
	if (r == 0 && !(WIFEXITED(st) && WEXITSTATUS(st) == 0))
		r = cvm_err_set(err, EIO, "VmStop", "`cvm vm start` ended with status %d (log: "
				"%s/vm-start.log)", WIFEXITED(st) ? WEXITSTATUS(st) : -1, d->dir);
	_cleanup_free_ char *vmgs = cvm_asprintf("%s/vms/" VM_NAME "/vmgs.bin", v->vm_state);
	if (r == 0 && (!vmgs || access(vmgs, R_OK) != 0))
		r = cvm_err_set(err, ENOENT, "VmgsMissing", "no sealed VMGS after the stop");
	return r;
}

static int measure(struct vmdemo *v, struct cvm_err *err)
{
	uint8_t m[48];
	int r = cvm_vm_emulated_measurement(CVM_VM_OVMF_CODE, v->kernel, v->initrd, v->append, m,
					    err);
	if (r < 0)
		return r;
	for (size_t i = 0; i < sizeof(m); i++)
		snprintf(v->measurement + 2 * i, 3, "%02x", m[i]);
	return 0;
}

int demo_vm(struct demo *d, struct cvm_err *err)
{
	struct vmdemo v = { .d = d };
	char detail[256];
	uint64_t boot_t0 = 0;
	int r = tools_present(err);
	v.vm_state = cvm_asprintf("%s/vmstate", d->dir);
	v.run_dir = cvm_asprintf("%s/run", d->dir);
	v.os_img = cvm_asprintf("%s/demo-os.img", d->dir);
	if (r == 0 && (!v.vm_state || !v.run_dir || !v.os_img))
		r = cvm_err_nomem(err);
	/* `cvm vm` keeps its QMP and swtpm sockets under $XDG_RUNTIME_DIR/opencvm: this run's. */
	if (r == 0 && (cvm_mkdir_p(v.run_dir, 0700, err) < 0 ||
		       setenv("XDG_RUNTIME_DIR", v.run_dir, 1) < 0))
		r = r ? r : cvm_err_internal(err, "setenv: %s", strerror(errno));
	if (r < 0)
		goto out;

	demo_step_begin(d, "guest image: build or reuse (Debian kernel, busybox)");
	bool reused = false;
	if ((r = guest_image(&v, &reused, err)) < 0)
		goto out;
	snprintf(detail, sizeof(detail), "%s %s", reused ? "reused" : "built", v.image);
	demo_step_end(d, detail);

	demo_step_begin(d, "launch measurement: OVMF + kernel + initrd + cmdline");
	if ((r = measure(&v, err)) < 0)
		goto out;
	snprintf(detail, sizeof(detail), "%.24s…", v.measurement);
	demo_step_end(d, detail);

	demo_step_begin(d, "DES key: RSA-HSM 3072, release policy pins the launch");
	if ((r = create_des_key(&v, err)) < 0)
		goto out;
	demo_step_end(d, "/keys/" DES_KEY);

	demo_step_begin(d, "identities demo-des + demo-cvo; DES with a customer key");
	if ((r = identities(&v, err)) < 0)
		goto out;
	demo_step_end(d, "roles scoped to /keys/" DES_KEY);

	demo_step_begin(d, "confidential OS disk: LUKS2, secret wrapped by the DES");
	{
		char *argv[] = { "encrypt", "--in", v.rootfs, "--out", v.os_img, "--des",
				 "demo-des", "--name", "demo-osdisk", "--kind", "os", NULL };
		if ((r = quiet_verb(d, cli_disk, "disk", 11, argv, err)) < 0)
			goto out;
	}
	demo_step_end(d, "demo-osdisk");

	demo_step_begin(d, "create ConfidentialVM " VM_NAME " (" VM_SIZE ")");
	{
		char *argv[] = { "create", VM_NAME, "--size", VM_SIZE, "--tee", "emulated",
				 "--os-disk", "demo-osdisk", "--des", "demo-des", "--store",
				 d->store_url, "--state-dir", v.vm_state, NULL };
		if ((r = quiet_verb(d, cli_vm, "vm", 14, argv, err)) < 0)
			goto out;
	}
	demo_step_end(d, "emulated SEV-SNP, Secure Boot, vTPM");

	char line[256];
	demo_step_begin(d, "start: OVMF Secure Boot, swtpm vTPM, kernel boot");
	boot_t0 = cvm_monotonic_ns();
	if ((r = free_port(&v.port, err)) < 0 || (r = start_vm(&v, err)) < 0 ||
	    (r = wait_console(&v, "cvm-guest: tee=", line, sizeof(line), err)) < 0)
		goto out;
	demo_step_end(d, cvm_vm_accel_detect(true) == CVM_VM_ACCEL_KVM ? "kvm" : "tcg");

	demo_step_begin(d, "guest attests; orchestrator releases; guest unlocks");
	if ((r = wait_console(&v, "cvm-guest: unlocked", line, sizeof(line), err)) < 0)
		goto out;
	demo_step_end(d, line + strlen("cvm-guest: "));

	demo_step_begin(d, "switch_root into the unlocked root: cvm-guest: ready");
	if ((r = wait_console(&v, "cvm-guest: ready", line, sizeof(line), err)) < 0)
		goto out;
	snprintf(detail, sizeof(detail), "%.1f s from start",
		 (double)(cvm_monotonic_ns() - boot_t0) / 1e9);
	demo_step_end(d, detail);

	demo_step_begin(d, "the guest's HTTP service answers (127.0.0.1 forward)");
	if ((r = guest_http(&v, err)) < 0)
		goto out;
	snprintf(detail, sizeof(detail), "port %d", v.port);
	demo_step_end(d, detail);

	demo_step_begin(d, "audit: the release and the attestation claims");
	if ((r = release_audit(&v, detail, sizeof(detail), err)) < 0)
		goto out;
	demo_step_end(d, detail);

	demo_step_begin(d, "cvm vm validate " VM_NAME);
	if ((r = validate(&v, detail, sizeof(detail), err)) < 0)
		goto out;
	demo_step_end(d, detail);

	demo_step_begin(d, "stop: ACPI power-down, vTPM + UEFI vars sealed (VMGS)");
	if ((r = stop_vm(&v, err)) < 0)
		goto out;
	demo_step_end(d, NULL);
out:
	vmdemo_free(&v);
	return r;
}
