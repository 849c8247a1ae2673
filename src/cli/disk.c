/* SPDX-License-Identifier: Apache-2.0 */
/* cvm disk ...: confidential disks. Images are made and changed here, on this host; the key
 * work (wrap/unwrap of the keyslot secret) goes through the key service with the caller's own
 * token, and cvmd keeps the Disk Encryption Sets and the disk registry. The unwrapped secret
 * lives only in mlock'd memory (struct cvm_secret) unless the user asks for a 0600 file. */
#include "cli.h"

#include <fcntl.h>
#include <libgen.h>
#include <limits.h>
#include <spawn.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <opencvm/disk.h>

extern char **environ;

/* ---- names, sizes, paths ------------------------------------------------------------------ */

static int check_name(const char *what, const char *s, const char *usage)
{
	size_t n = s ? strlen(s) : 0;
	if (n == 0 || n > 80)
		return cli_usage_error(usage, "%s: expected 1..80 characters", what);
	for (const char *p = s; *p; p++)
		if (!((*p >= 'a' && *p <= 'z') || (*p >= 'A' && *p <= 'Z') ||
		      (*p >= '0' && *p <= '9') || *p == '-' || *p == '_'))
			return cli_usage_error(usage, "%s '%s': only letters, digits, '-' and '_'",
					       what, s);
	return 0;
}

/* "200G", "512M", "1T", "1048576": binary units, optional "B"/"iB" suffix. */
static int parse_size(const char *s, uint64_t *out)
{
	char *end = NULL;
	errno = 0;
	unsigned long long v = strtoull(s, &end, 10);
	if (errno || end == s || s[0] == '-')
		return -EINVAL;
	unsigned shift = 0;
	switch (*end) {
	case 'K': case 'k': shift = 10; end++; break;
	case 'M': case 'm': shift = 20; end++; break;
	case 'G': case 'g': shift = 30; end++; break;
	case 'T': case 't': shift = 40; end++; break;
	case 'P': case 'p': shift = 50; end++; break;
	default: break;
	}
	if (shift && (strcmp(end, "iB") == 0 || strcmp(end, "B") == 0))
		end += strlen(end);
	if (*end || (shift && v > (UINT64_MAX >> shift)))
		return -EINVAL;
	*out = (uint64_t)v << shift;
	return 0;
}

static void human_bytes(uint64_t n, char *buf, size_t len)
{
	static const char *const units[] = {"B", "KiB", "MiB", "GiB", "TiB", "PiB"};
	double v = (double)n;
	size_t u = 0;
	while (v >= 1024.0 && u + 1 < CVM_ARRAY_SIZE(units)) {
		v /= 1024.0;
		u++;
	}
	snprintf(buf, len, u ? "%.1f %s" : "%.0f %s", v, units[u]);
}

/* The registry stores absolute paths: the directory resolved, the file name kept. */
static char *absolute_path(const char *p)
{
	_cleanup_free_ char *d1 = strdup(p), *d2 = strdup(p);
	if (!d1 || !d2)
		return NULL;
	char dir[PATH_MAX];
	if (!realpath(dirname(d1), dir))
		return NULL;
	return cvm_asprintf("%s/%s", strcmp(dir, "/") ? dir : "", basename(d2));
}

/* ---- key service wrap/unwrap (struct cvm_disk_keywrap) ------------------------------------ */

/* "/keys/<name>[/<version>]" of a key URL: calls go to the service this CLI is configured for,
 * with its token (cvmd only accepts DES keys it holds itself). */
static const char *key_part(const char *url)
{
	const char *keys = NULL;
	for (const char *p = url; (p = strstr(p, "/keys/")); p++)
		keys = p;
	return keys;
}

/* Wipe a string member of a JSON object before the object is freed (it held secret bytes). */
static void wipe_json_str(json_t *obj, const char *field)
{
	json_t *v = json_object_get(obj, field);
	if (json_is_string(v))
		OPENSSL_cleanse((char *)json_string_value(v), json_string_length(v));
}

static int kw_wrap(void *ctx, const char *key_url, const char *alg, const struct cvm_secret *in,
		   char **wrapped, char **kid_used, struct cvm_err *err)
{
	struct cli *cli = ctx;
	const char *kp = key_part(key_url);
	if (!kp)
		return cvm_err_badparam(err, "key URL %s: no /keys/ part", key_url);
	_cleanup_free_ char *versioned = NULL;
	if (!cvm_disk_key_url_valid(key_url, true)) {
		/* Versionless: the latest version now (the key service tells us which). */
		json_t *res = NULL;
		int r = cli_call(cli, "GET", kp, NULL, &res, err);
		if (r < 0)
			return r;
		const char *kid = json_string_value(cvm_json_path(res, "key.kid"));
		const char *v = kid ? strrchr(kid, '/') : NULL;
		versioned = v ? cvm_asprintf("%s%s", kp, v) : NULL;
		json_decref(res);
		if (!versioned)
			return cvm_err_internal(err, "key %s: response has no kid", kp);
		kp = versioned;
	}
	json_t *body = json_pack("{s:s}", "alg", alg);
	if (!body || cvm_json_set_b64url(body, "value", in->data, in->len) < 0) {
		json_decref(body);
		return cvm_err_nomem(err);
	}
	_cleanup_free_ char *path = cvm_asprintf("%s/wrapkey", kp);
	json_t *res = NULL;
	int r = path ? cli_call(cli, "POST", path, body, &res, err) : cvm_err_nomem(err);
	wipe_json_str(body, "value");
	json_decref(body);
	if (r < 0)
		return r;
	const char *kid = json_string_value(json_object_get(res, "kid"));
	const char *val = json_string_value(json_object_get(res, "value"));
	if (!kid || !val || !cvm_disk_key_url_valid(kid, true)) {
		json_decref(res);
		return cvm_err_internal(err, "wrapkey %s: response lacks a versioned kid or value", kp);
	}
	*wrapped = strdup(val);
	*kid_used = strdup(kid);
	json_decref(res);
	if (!*wrapped || !*kid_used) {
		free(CVM_TAKE(*wrapped));
		free(CVM_TAKE(*kid_used));
		return cvm_err_nomem(err);
	}
	return 0;
}

static int kw_unwrap(void *ctx, const char *kid, const char *alg, const char *wrapped,
		     struct cvm_secret **out, struct cvm_err *err)
{
	struct cli *cli = ctx;
	const char *kp = key_part(kid);
	if (!kp || !cvm_disk_key_url_valid(kid, true))
		return cvm_err_badparam(err, "kid %s: expected a versioned key URL", kid);
	_cleanup_free_ char *path = cvm_asprintf("%s/unwrapkey", kp);
	json_t *body = json_pack("{s:s,s:s}", "alg", alg, "value", wrapped);
	json_t *res = NULL;
	int r = path && body ? cli_call(cli, "POST", path, body, &res, err) : cvm_err_nomem(err);
	json_decref(body);
	if (r < 0)
		return r;
	uint8_t *raw = NULL;
	size_t len = 0;
	r = cvm_json_b64url(res, "value", "value", true, &raw, &len, err);
	wipe_json_str(res, "value");
	json_decref(res);
	if (r < 0)
		return r;
	*out = cvm_secret_from(raw, len);
	cvm_free_secure(raw, len);
	return *out ? 0 : cvm_err_nomem(err);
}

/* ---- progress (TTY only) ------------------------------------------------------------------ */

struct progress {
	const char *what;
	uint64_t start_ns;
	bool drawn;
};

static void progress_cb(void *ctx, uint64_t done, uint64_t total)
{
	struct progress *p = ctx;
	double secs = (double)(cvm_monotonic_ns() - p->start_ns) / 1e9;
	double rate = secs > 0 ? (double)done / secs : 0;
	double pct = total ? 100.0 * (double)done / (double)total : 100.0;
	char d[32], t[32], rt[32], eta[32] = "--:--";
	human_bytes(done, d, sizeof(d));
	human_bytes(total, t, sizeof(t));
	human_bytes((uint64_t)rate, rt, sizeof(rt));
	if (rate > 0 && total >= done) {
		uint64_t left = (uint64_t)((double)(total - done) / rate);
		snprintf(eta, sizeof(eta), "%02u:%02u:%02u", (unsigned)(left / 3600),
			 (unsigned)(left / 60 % 60), (unsigned)(left % 60));
	}
	char bar[31];
	size_t fill = (size_t)(pct * 30 / 100);
	for (size_t i = 0; i < 30; i++)
		bar[i] = i < fill ? '#' : '.';
	bar[30] = '\0';
	fprintf(stderr, "\r%s [%s] %5.1f%%  %s / %s  %s/s  ETA %s ", p->what, bar, pct, d, t, rt,
		eta);
	fflush(stderr);
	p->drawn = true;
}

/* Progress goes to stderr, and only when it is a terminal (logs and pipes stay clean). */
static void progress_setup(struct progress *p, const char *what, struct cvm_disk_opts *o)
{
	*p = (struct progress){.what = what, .start_ns = cvm_monotonic_ns()};
	if (isatty(STDERR_FILENO)) {
		o->progress = progress_cb;
		o->progress_ctx = p;
	}
}

static void progress_end(struct progress *p)
{
	if (p->drawn)
		fputc('\n', stderr);
}

/* ---- cvmd records ------------------------------------------------------------------------- */

static int des_get(struct cli *cli, const char *name, json_t **des, struct cvm_err *err)
{
	_cleanup_free_ char *path = cvm_asprintf("/opencvm/diskEncryptionSets/%s", name);
	return path ? cli_call(cli, "GET", path, NULL, des, err) : cvm_err_nomem(err);
}

static int disk_get(struct cli *cli, const char *name, json_t **rec, struct cvm_err *err)
{
	_cleanup_free_ char *path = cvm_asprintf("/opencvm/disks/%s", name);
	return path ? cli_call(cli, "GET", path, NULL, rec, err) : cvm_err_nomem(err);
}

/* Refuse a taken name before any work (and before any image exists). */
static int disk_name_free(struct cli *cli, const char *name, struct cvm_err *err)
{
	json_t *rec = NULL;
	int r = disk_get(cli, name, &rec, err);
	json_decref(rec);
	if (r == 0)
		return cvm_err_set(err, EEXIST, "Conflict", "disk %s already exists", name);
	if (r != -ENOENT)
		return r;
	cvm_err_clear(err);
	return 0;
}

static int disk_patch(struct cli *cli, const char *name, json_t *body, struct cvm_err *err)
{
	_cleanup_free_ char *path = cvm_asprintf("/opencvm/disks/%s", name);
	json_t *res = NULL;
	int r = path ? cli_call(cli, "PATCH", path, body, &res, err) : cvm_err_nomem(err);
	json_decref(res);
	return r;
}

/* Register a new image; an image nobody can find by name is only a liability, so it is
 * removed again when registering fails. */
static int disk_register(struct cli *cli, const char *name, const char *path, const char *des,
			 enum cvm_disk_kind kind, json_t **rec, struct cvm_err *err)
{
	_cleanup_(cvm_disk_info_clear) struct cvm_disk_info info = {0};
	struct stat st;
	int r = cvm_disk_info(path, &info, err);
	if (r == 0 && stat(path, &st) < 0)
		r = cvm_err_set(err, errno, "InternalError", "stat %s: %s", path, strerror(errno));
	json_t *body = NULL;
	if (r == 0) {
		body = json_pack("{s:s,s:s*,s:s,s:I,s:s*}", "path", path, "des", des, "kind",
				 cvm_disk_kind_name(kind), "size", (json_int_t)st.st_size, "kid",
				 info.has_hsm_token ? info.hsm.key_url : NULL);
		_cleanup_free_ char *url = cvm_asprintf("/opencvm/disks/%s", name);
		r = body && url ? cli_call(cli, "PUT", url, body, rec, err) : cvm_err_nomem(err);
	}
	json_decref(body);
	if (r < 0) {
		(void)unlink(path);
		return cvm_err_prefix(err, "register disk %s (image removed)", name);
	}
	return 0;
}

/* Wrap parameters from a DES record (strings borrowed from des). */
static int wrap_params(json_t *des, const struct cvm_disk_keywrap *kw,
		       struct cvm_disk_wrap_params *wp, struct cvm_err *err)
{
	*wp = (struct cvm_disk_wrap_params){
		.kw = kw,
		.key_url = json_string_value(json_object_get(des, "keyUrl")),
		.alg = json_string_value(json_object_get(des, "alg")),
		.des = json_string_value(json_object_get(des, "name")),
	};
	if (!wp->key_url || !wp->alg || !wp->des)
		return cvm_err_internal(err, "disk encryption set: response lacks keyUrl/alg/name");
	return 0;
}

static int print_rec(struct cli *cli, json_t *rec, const char *done)
{
	if (cli->json) {
		cli_print_json(rec);
		return CLI_OK;
	}
	const char *labels[] = {"name", "path", "kind", "size (bytes)", "des", "kid", "created",
				"updated"};
	const char *paths[] = {"name", "path", "kind", "size", "des", "kid", "created", "updated"};
	if (done)
		printf("%s\n", done);
	cli_print_fields(rec, labels, paths, CVM_ARRAY_SIZE(labels));
	return CLI_OK;
}

/* --name N or a positional NAME, with its registry record. */
static int lookup(struct cli *cli, const char *name, const char *usage, json_t **rec,
		  const char **path, const char *context)
{
	int rc = check_name("--name", name, usage);
	if (rc)
		return rc;
	struct cvm_err err = {0};
	if (disk_get(cli, name, rec, &err) < 0)
		return cli_fail(&err, context);
	*path = json_string_value(json_object_get(*rec, "path"));
	if (!*path) {
		json_decref(CVM_TAKE(*rec));
		cvm_err_internal(&err, "disk %s: record has no path", name);
		return cli_fail(&err, context);
	}
	return 0;
}

/* ---- verbs -------------------------------------------------------------------------------- */

static int disk_create(struct cli *cli, int argc, char **argv)
{
	const char *usage = "disk create --name N --size S --des D [--kind os|data|temp|vmgs] "
			    "[--path P]";
	const char *name = NULL, *size_s = NULL, *des_name = NULL, *kind_s = "os", *path = NULL;
	const struct cli_opt opts[] = {
		{"--name", true, &name, NULL, NULL}, {"--size", true, &size_s, NULL, NULL},
		{"--des", true, &des_name, NULL, NULL}, {"--kind", true, &kind_s, NULL, NULL},
		{"--path", true, &path, NULL, NULL},
	};
	int rc = cli_parse(argc, argv, opts, CVM_ARRAY_SIZE(opts), NULL, 0, 0, NULL, usage);
	if (rc || (rc = check_name("--name", name, usage)))
		return rc;
	struct cvm_err err = {0};
	struct cvm_disk_opts o = {0};
	uint64_t size = 0;
	if (!size_s || parse_size(size_s, &size) < 0)
		return cli_usage_error(usage, "--size: expected a size like 200G, 512M or bytes");
	if (cvm_disk_kind_parse(kind_s, &o.kind, &err) < 0)
		return cli_usage_error(usage, "--kind: %s", err.msg);
	bool temp = o.kind == CVM_DISK_KIND_TEMP;
	if (temp == (des_name != NULL))
		return cli_usage_error(usage, temp ? "--des: a temp disk has no DES (its key is "
						     "random and never stored)"
						   : "--des is required");
	if (des_name && (rc = check_name("--des", des_name, usage)))
		return rc;
	_cleanup_free_ char *dflt = path ? NULL : cvm_asprintf("%s.img", name);
	_cleanup_free_ char *abs = absolute_path(path ? path : dflt);
	if (!abs) {
		cvm_err_set(&err, errno ? errno : ENOMEM, "BadParameter", "--path %s: directory "
			    "not found", path ? path : dflt);
		return cli_fail(&err, "disk create");
	}
	o.label = name;
	json_t *des = NULL, *rec = NULL;
	struct cvm_disk_keywrap kw = {.wrap = kw_wrap, .unwrap = kw_unwrap, .ctx = cli};
	struct cvm_disk_wrap_params wp;
	int r = disk_name_free(cli, name, &err);
	if (r == 0 && des_name && (r = des_get(cli, des_name, &des, &err)) == 0)
		r = wrap_params(des, &kw, &wp, &err);
	if (r == 0 && temp) {
		_cleanup_secret_ struct cvm_secret *secret = NULL;
		r = cvm_disk_create_temp(abs, size, &o, &secret, &err);
	} else if (r == 0) {
		r = cvm_disk_create(abs, size, &wp, &o, &err);
	}
	if (r == 0)
		r = disk_register(cli, name, abs, des_name, o.kind, &rec, &err);
	json_decref(des);
	if (r < 0)
		return cli_fail(&err, "disk create");
	rc = print_rec(cli, rec, NULL);
	json_decref(rec);
	return rc;
}

/* qemu-img, run without a shell; stdout into out (when given). Returns the exit status, or
 * -errno when it cannot be started. */
static int run_qemu_img(char *const argv[], struct cvm_buf *out)
{
	int pfd[2] = {-1, -1};
	posix_spawn_file_actions_t fa;
	posix_spawn_file_actions_init(&fa);
	if (out) {
		if (pipe2(pfd, O_CLOEXEC) < 0)
			return -errno;
		posix_spawn_file_actions_adddup2(&fa, pfd[1], STDOUT_FILENO);
	}
	pid_t pid;
	int e = posix_spawnp(&pid, "qemu-img", &fa, NULL, argv, environ);
	posix_spawn_file_actions_destroy(&fa);
	if (out)
		close(pfd[1]);
	if (e) {
		if (out)
			close(pfd[0]);
		return -e;
	}
	if (out) {
		char buf[4096];
		ssize_t n;
		while ((n = read(pfd[0], buf, sizeof(buf))) != 0) {
			if (n < 0 && errno == EINTR)
				continue;
			if (n < 0 || out->len > (1u << 20) || cvm_buf_append(out, buf, (size_t)n) < 0)
				break;
		}
		close(pfd[0]);
	}
	int st;
	while (waitpid(pid, &st, 0) < 0)
		if (errno != EINTR)
			return -errno;
	return WIFEXITED(st) ? WEXITSTATUS(st) : 128;
}

/* The source's format as qemu-img sees it; "raw" when qemu-img is not installed (the disk
 * module then refuses container formats itself). */
static int source_format(const char *src, char fmt[16], struct cvm_err *err)
{
	struct cvm_buf out = {0};
	char *argv[] = {"qemu-img", "info", "--output=json", (char *)src, NULL};
	int st = run_qemu_img(argv, &out);
	if (st == -ENOENT) {
		cvm_buf_free(&out);
		snprintf(fmt, 16, "raw");
		return 0;
	}
	json_t *j = st == 0 && cvm_buf_cstr(&out) ? json_loadb((char *)out.data, out.len, 0, NULL)
						   : NULL;
	cvm_buf_free(&out);
	const char *f = json_string_value(json_object_get(j, "format"));
	if (!f) {
		json_decref(j);
		return cvm_err_badparam(err, "--in %s: qemu-img cannot read it (exit %d)", src, st);
	}
	snprintf(fmt, 16, "%s", f);
	json_decref(j);
	return 0;
}

/* qcow2/vmdk/vhd/vhdx become raw first, into a 0600 temp file next to the destination. */
static int convert_to_raw(const char *src, const char *fmt, const char *tmp, struct cvm_err *err)
{
	(void)unlink(tmp); /* a leftover from an interrupted run */
	int fd = open(tmp, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
	if (fd < 0)
		return cvm_err_set(err, errno, "InternalError", "%s: %s", tmp, strerror(errno));
	close(fd);
	char *argv[] = {"qemu-img", "convert", "-q", "-f", (char *)fmt, "-O", "raw", (char *)src,
			(char *)tmp, NULL};
	int st = run_qemu_img(argv, NULL);
	if (st != 0) {
		(void)unlink(tmp);
		return cvm_err_set(err, st < 0 ? -st : EIO, "BadParameter",
				   "--in %s: qemu-img convert from %s failed (%d)", src, fmt, st);
	}
	return 0;
}

static int disk_encrypt(struct cli *cli, int argc, char **argv)
{
	const char *usage = "disk encrypt --in SRC --out DST --des D [--name N] "
			    "[--kind os|data|vmgs] [--used-only]";
	const char *in = NULL, *outp = NULL, *des_name = NULL, *name = NULL, *kind_s = "os";
	bool used_only = false;
	const struct cli_opt opts[] = {
		{"--in", true, &in, NULL, NULL},        {"--out", true, &outp, NULL, NULL},
		{"--des", true, &des_name, NULL, NULL}, {"--name", true, &name, NULL, NULL},
		{"--kind", true, &kind_s, NULL, NULL},  {"--used-only", false, NULL, &used_only, NULL},
	};
	int rc = cli_parse(argc, argv, opts, CVM_ARRAY_SIZE(opts), NULL, 0, 0, NULL, usage);
	if (rc)
		return rc;
	if (!in || !outp || !des_name)
		return cli_usage_error(usage, "--in, --out and --des are required");
	if ((rc = check_name("--des", des_name, usage)) ||
	    (name && (rc = check_name("--name", name, usage))))
		return rc;
	struct cvm_err err = {0};
	struct cvm_disk_opts o = {.used_only = used_only, .label = name};
	if (cvm_disk_kind_parse(kind_s, &o.kind, &err) < 0 || o.kind == CVM_DISK_KIND_TEMP)
		return cli_usage_error(usage, "--kind: one of os, data, vmgs");
	_cleanup_free_ char *dst = absolute_path(outp);
	if (!dst) {
		cvm_err_set(&err, ENOENT, "BadParameter", "--out %s: directory not found", outp);
		return cli_fail(&err, "disk encrypt");
	}
	json_t *des = NULL, *rec = NULL;
	struct cvm_disk_keywrap kw = {.wrap = kw_wrap, .unwrap = kw_unwrap, .ctx = cli};
	struct cvm_disk_wrap_params wp;
	char fmt[16] = "";
	_cleanup_free_ char *tmp = NULL;
	int r = name ? disk_name_free(cli, name, &err) : 0;
	if (r == 0 && (r = des_get(cli, des_name, &des, &err)) == 0)
		r = wrap_params(des, &kw, &wp, &err);
	if (r == 0)
		r = source_format(in, fmt, &err);
	const char *src = in;
	if (r == 0 && strcmp(fmt, "raw") != 0) {
		tmp = cvm_asprintf("%s.convert-raw", dst);
		r = tmp ? convert_to_raw(in, fmt, tmp, &err) : cvm_err_nomem(&err);
		src = tmp;
	}
	if (r == 0) {
		struct progress pr;
		progress_setup(&pr, "encrypt", &o);
		r = cvm_disk_encrypt_image(src, dst, &wp, &o, &err);
		progress_end(&pr);
	}
	if (tmp)
		(void)unlink(tmp);
	if (r == 0 && name)
		r = disk_register(cli, name, dst, des_name, o.kind, &rec, &err);
	json_decref(des);
	if (r < 0)
		return cli_fail(&err, "disk encrypt");
	if (rec) {
		rc = print_rec(cli, rec, NULL);
		json_decref(rec);
		return rc;
	}
	if (cli->json)
		printf("{\"path\": \"%s\", \"registered\": false}\n", dst);
	else
		printf("%s: encrypted (not registered: pass --name to register it)\n", dst);
	return CLI_OK;
}

static int disk_rotate(struct cli *cli, int argc, char **argv)
{
	const char *usage = "disk rotate --name N", *name = NULL, *path = NULL;
	const struct cli_opt opts[] = {{"--name", true, &name, NULL, NULL}};
	int rc = cli_parse(argc, argv, opts, 1, NULL, 0, 0, NULL, usage);
	json_t *rec = NULL, *des = NULL;
	if (rc || (rc = lookup(cli, name, usage, &rec, &path, "disk rotate")))
		return rc;
	struct cvm_err err = {0};
	const char *des_name = json_string_value(json_object_get(rec, "des"));
	const char *old_kid = json_string_value(json_object_get(rec, "kid"));
	struct cvm_disk_keywrap kw = {.wrap = kw_wrap, .unwrap = kw_unwrap, .ctx = cli};
	struct cvm_disk_wrap_params wp;
	_cleanup_(cvm_disk_info_clear) struct cvm_disk_info info = {0};
	bool changed = false;
	int r = des_name ? des_get(cli, des_name, &des, &err)
			 : cvm_err_badparam(&err, "disk %s: a temp disk has no wrapped secret", name);
	if (r == 0)
		r = wrap_params(des, &kw, &wp, &err);
	/* A pinned version already in use: nothing to do. Following latest: always re-wrap (the
	 * key service says which version is latest; the same one gives the same kid). */
	bool pinned = r == 0 && cvm_disk_key_url_valid(wp.key_url, true);
	if (r == 0 && !(pinned && old_kid && strcmp(key_part(old_kid), key_part(wp.key_url)) == 0))
		r = cvm_disk_rotate(path, &kw, wp.key_url, wp.alg, &err);
	if (r == 0)
		r = cvm_disk_info(path, &info, &err);
	if (r == 0 && !info.has_hsm_token)
		r = cvm_err_internal(&err, "disk %s: no opencvm-hsm token after rotation", name);
	if (r == 0) {
		changed = !old_kid || strcmp(old_kid, info.hsm.key_url) != 0;
		json_t *body = json_pack("{s:s}", "kid", info.hsm.key_url);
		r = body ? disk_patch(cli, name, body, &err) : cvm_err_nomem(&err);
		json_decref(body);
	}
	json_decref(des);
	if (r < 0) {
		json_decref(rec);
		return cli_fail(&err, "disk rotate");
	}
	if (cli->json) {
		json_t *j = json_pack("{s:s,s:s?,s:s,s:b}", "name", name, "old_kid", old_kid,
				      "kid", info.hsm.key_url, "rotated", changed);
		cli_print_json(j);
		json_decref(j);
	} else if (changed) {
		printf("%s: re-wrapped for %s (was %s)\n", name, info.hsm.key_url,
		       old_kid ? old_kid : "-");
	} else {
		printf("%s: already wrapped for %s\n", name, info.hsm.key_url);
	}
	json_decref(rec);
	return CLI_OK;
}

/* The keyslot secret of a registered (or given) image, unwrapped through the key service:
 * this is where the caller's right to unwrap with the DES key is checked. */
static int unlock(struct cli *cli, const char *path, struct cvm_secret **secret,
		  struct cvm_err *err)
{
	struct cvm_disk_keywrap kw = {.wrap = kw_wrap, .unwrap = kw_unwrap, .ctx = cli};
	int r = cvm_disk_unlock_secret(path, &kw, secret, err);
	if (r == -EPERM && !strcmp(err->code, "Forbidden"))
		return cvm_err_prefix(err, "refused: the caller may not unwrap with this disk's "
					   "DES key");
	return r;
}

int cli_disk_unlock(struct cli *cli, const char *path, struct cvm_secret **secret,
		    struct cvm_err *err)
{
	return unlock(cli, path, secret, err);
}

static int disk_rekey(struct cli *cli, int argc, char **argv)
{
	const char *usage = "disk rekey --name N   (offline: the VM must be stopped)";
	const char *name = NULL, *path = NULL;
	const struct cli_opt opts[] = {{"--name", true, &name, NULL, NULL}};
	int rc = cli_parse(argc, argv, opts, 1, NULL, 0, 0, NULL, usage);
	json_t *rec = NULL, *des = NULL;
	if (rc || (rc = lookup(cli, name, usage, &rec, &path, "disk rekey")))
		return rc;
	struct cvm_err err = {0};
	const char *des_name = json_string_value(json_object_get(rec, "des"));
	struct cvm_disk_keywrap kw = {.wrap = kw_wrap, .unwrap = kw_unwrap, .ctx = cli};
	struct cvm_disk_wrap_params wp;
	struct cvm_disk_opts o = {.label = name};
	_cleanup_secret_ struct cvm_secret *secret = NULL, *fresh = NULL;
	_cleanup_(cvm_disk_info_clear) struct cvm_disk_info info = {0};
	_cleanup_free_ char *tmp = cvm_asprintf("%s.rekey", path);
	int r = des_name ? des_get(cli, des_name, &des, &err)
			 : cvm_err_badparam(&err, "disk %s: temp disks are recreated, not rekeyed",
					    name);
	if (r == 0)
		r = wrap_params(des, &kw, &wp, &err);
	if (r == 0)
		r = cvm_disk_info(path, &info, &err);
	if (r == 0) {
		o.kind = info.has_kind ? info.kind : CVM_DISK_KIND_OS;
		r = unlock(cli, path, &secret, &err);
	}
	if (r == 0 && !tmp)
		r = cvm_err_nomem(&err);
	if (r == 0) {
		struct progress pr;
		progress_setup(&pr, "rekey", &o);
		r = cvm_disk_rekey(path, tmp, secret, &wp, &o, &err);
		progress_end(&pr);
	}
	/* The old image goes only once the new one unlocks through the key service. */
	if (r == 0)
		r = unlock(cli, tmp, &fresh, &err);
	if (r == 0 && rename(tmp, path) < 0)
		r = cvm_err_set(&err, errno, "InternalError", "rename %s: %s", tmp, strerror(errno));
	cvm_disk_info_clear(&info);
	if (r == 0)
		r = cvm_disk_info(path, &info, &err);
	if (r == 0) {
		json_t *body = json_pack("{s:s}", "kid", info.hsm.key_url);
		r = body ? disk_patch(cli, name, body, &err) : cvm_err_nomem(&err);
		json_decref(body);
	}
	json_decref(des);
	json_decref(rec);
	if (r < 0)
		return cli_fail(&err, "disk rekey");
	if (cli->json)
		printf("{\"name\": \"%s\", \"rekeyed\": true, \"uuid\": \"%s\"}\n", name, info.uuid);
	else
		printf("%s: new volume key and secret (LUKS2 uuid %s), wrapped for %s\n", name,
		       info.uuid, info.hsm.key_url);
	return CLI_OK;
}

/* LUKS2 sizes its data segment by the device ("dynamic"), so a truncated image still opens:
 * the registry's size is what tells. */
static int image_size_matches(json_t *rec, const char *path, struct cvm_err *err)
{
	struct stat st;
	json_int_t want = json_integer_value(json_object_get(rec, "size"));
	if (stat(path, &st) < 0)
		return cvm_err_set(err, errno, "NotFound", "image %s: %s", path, strerror(errno));
	if ((json_int_t)st.st_size != want)
		return cvm_err_set(err, EBADMSG, "BadParameter",
				   "image %s is %lld bytes, the registry recorded %lld (truncated "
				   "or replaced?)", path, (long long)st.st_size, (long long)want);
	return 0;
}

static int disk_verify(struct cli *cli, int argc, char **argv)
{
	const char *usage = "disk verify --name N [--source RAW] [--samples K]";
	const char *name = NULL, *source = NULL, *samples_s = NULL, *path = NULL;
	const struct cli_opt opts[] = {{"--name", true, &name, NULL, NULL},
				       {"--source", true, &source, NULL, NULL},
				       {"--samples", true, &samples_s, NULL, NULL}};
	int rc = cli_parse(argc, argv, opts, CVM_ARRAY_SIZE(opts), NULL, 0, 0, NULL, usage);
	json_t *rec = NULL;
	int64_t samples = 0;
	struct cvm_err err = {0};
	if (!rc && samples_s && cvm_parse_i64(samples_s, 1, 1 << 20, &samples, "--samples", &err))
		return cli_usage_error(usage, "%s", err.msg);
	if (rc || (rc = lookup(cli, name, usage, &rec, &path, "disk verify")))
		return rc;
	_cleanup_secret_ struct cvm_secret *secret = NULL;
	int r = image_size_matches(rec, path, &err);
	if (r == 0)
		r = unlock(cli, path, &secret, &err);
	if (r == 0)
		r = cvm_disk_verify(path, secret, source, (unsigned)samples, &err);
	if (r < 0) {
		json_decref(rec);
		return cli_fail(&err, "disk verify");
	}
	if (cli->json)
		printf("{\"name\": \"%s\", \"verified\": true}\n", name);
	else
		printf("%s: ok (header valid, secret unwrapped through the key service opens the "
		       "keyslot%s)\n", name, source ? ", sampled sectors match the source" : "");
	json_decref(rec);
	return CLI_OK;
}

static int disk_decrypt(struct cli *cli, int argc, char **argv)
{
	const char *usage = "disk decrypt --name N --out FILE";
	const char *name = NULL, *outp = NULL, *path = NULL;
	const struct cli_opt opts[] = {{"--name", true, &name, NULL, NULL},
				       {"--out", true, &outp, NULL, NULL}};
	int rc = cli_parse(argc, argv, opts, CVM_ARRAY_SIZE(opts), NULL, 0, 0, NULL, usage);
	if (!rc && !outp)
		return cli_usage_error(usage, "--out is required");
	json_t *rec = NULL;
	if (rc || (rc = lookup(cli, name, usage, &rec, &path, "disk decrypt")))
		return rc;
	struct cvm_err err = {0};
	_cleanup_secret_ struct cvm_secret *secret = NULL;
	struct cvm_disk_opts o = {0};
	int r = unlock(cli, path, &secret, &err);
	if (r == 0) {
		struct progress pr;
		progress_setup(&pr, "decrypt", &o);
		r = cvm_disk_decrypt_image(path, outp, secret, &o, &err);
		progress_end(&pr);
	}
	json_decref(rec);
	if (r < 0)
		return cli_fail(&err, "disk decrypt");
	if (cli->json)
		printf("{\"name\": \"%s\", \"out\": \"%s\"}\n", name, outp);
	else
		printf("%s: plaintext written to %s (mode 0600)\n", name, outp);
	return CLI_OK;
}

static int disk_show(struct cli *cli, int argc, char **argv)
{
	const char *usage = "disk show NAME", *pos[1] = {NULL}, *path = NULL;
	const char *name = NULL;
	const struct cli_opt opts[] = {{"--name", true, &name, NULL, NULL}};
	size_t np = 0;
	int rc = cli_parse(argc, argv, opts, 1, pos, 1, 0, &np, usage);
	json_t *rec = NULL;
	if (rc || (rc = lookup(cli, np ? pos[0] : name, usage, &rec, &path, "disk show")))
		return rc;
	struct cvm_err err = {0};
	_cleanup_(cvm_disk_info_clear) struct cvm_disk_info info = {0};
	json_t *hdr = NULL;
	if (cvm_disk_info(path, &info, &err) == 0) {
		const char *ver = info.has_hsm_token ? strrchr(info.hsm.key_url, '/') + 1 : NULL;
		hdr = json_pack("{s:s,s:s,s:i,s:I,s:I,s:s,s:b,s:s?,s:s?,s:s?}", "uuid", info.uuid,
				"cipher", info.cipher, "sector_size", (int)info.sector_size,
				"data_offset", (json_int_t)info.data_offset, "data_size",
				(json_int_t)info.data_size, "state",
				info.complete ? "complete" : "incomplete", "hsm_token",
				info.has_hsm_token, "token_kid",
				info.has_hsm_token ? info.hsm.key_url : NULL, "key_version", ver,
				"token_alg", info.has_hsm_token ? info.hsm.alg : NULL);
	} else {
		hdr = json_pack("{s:s,s:s}", "state", "unreadable", "error", err.msg);
	}
	json_object_set_new(rec, "header", hdr);
	if (cli->json) {
		cli_print_json(rec);
	} else {
		print_rec(cli, rec, NULL);
		const char *labels[] = {"state", "luks uuid", "cipher", "sector size",
					"data size (bytes)", "token kid", "key version", "wrap alg",
					"error"};
		const char *paths[] = {"header.state", "header.uuid", "header.cipher",
				       "header.sector_size", "header.data_size", "header.token_kid",
				       "header.key_version", "header.token_alg", "header.error"};
		cli_print_fields(rec, labels, paths, CVM_ARRAY_SIZE(labels));
	}
	json_decref(rec);
	return CLI_OK;
}

static int disk_list(struct cli *cli, int argc, char **argv)
{
	const char *usage = "disk list [--des D]", *des = NULL;
	const struct cli_opt opts[] = {{"--des", true, &des, NULL, NULL}};
	int rc = cli_parse(argc, argv, opts, 1, NULL, 0, 0, NULL, usage);
	if (rc || (des && (rc = check_name("--des", des, usage))))
		return rc;
	_cleanup_free_ char *url = cvm_asprintf("/opencvm/disks%s%s", des ? "?des=" : "",
						des ? des : "");
	json_t *res = NULL;
	struct cvm_err err = {0};
	if (cli_call(cli, "GET", url, NULL, &res, &err) < 0)
		return cli_fail(&err, "disk list");
	json_t *items = json_object_get(res, "value");
	if (cli->json) {
		cli_print_json(items);
	} else {
		const char *h[] = {"NAME", "KIND", "SIZE", "DES", "KID", "PATH"};
		const char *p[] = {"name", "kind", "size", "des", "kid", "path"};
		cli_print_table(items, h, p, CVM_ARRAY_SIZE(h));
	}
	json_decref(res);
	return CLI_OK;
}

static int disk_delete(struct cli *cli, int argc, char **argv)
{
	const char *usage = "disk delete --name N [--remove-image]", *name = NULL, *path = NULL;
	bool remove_image = false;
	const struct cli_opt opts[] = {{"--name", true, &name, NULL, NULL},
				       {"--remove-image", false, NULL, &remove_image, NULL}};
	int rc = cli_parse(argc, argv, opts, 2, NULL, 0, 0, NULL, usage);
	json_t *rec = NULL, *res = NULL;
	if (rc || (rc = lookup(cli, name, usage, &rec, &path, "disk delete")))
		return rc;
	struct cvm_err err = {0};
	_cleanup_free_ char *url = cvm_asprintf("/opencvm/disks/%s", name);
	int r = url ? cli_call(cli, "DELETE", url, NULL, &res, &err) : cvm_err_nomem(&err);
	json_decref(res);
	if (r == 0 && remove_image && unlink(path) < 0 && errno != ENOENT)
		r = cvm_err_set(&err, errno, "InternalError", "unlink %s: %s", path,
				strerror(errno));
	json_decref(rec);
	if (r < 0)
		return cli_fail(&err, "disk delete");
	if (cli->json)
		printf("{\"name\": \"%s\", \"deleted\": true, \"image_removed\": %s}\n", name,
		       remove_image ? "true" : "false");
	else
		printf("%s: deleted%s\n", name, remove_image ? " (image removed)" : "");
	return CLI_OK;
}

int cli_disk(struct cli *cli, int argc, char **argv)
{
	static const struct cli_verb verbs[] = {
		{"create", disk_create, "create --name N --size S --des D [--kind os|data|temp|vmgs] [--path P]"},
		{"encrypt", disk_encrypt, "encrypt --in SRC --out DST --des D [--name N] [--used-only]"},
		{"rotate", disk_rotate, "rotate --name N"},
		{"rekey", disk_rekey, "rekey --name N"},
		{"verify", disk_verify, "verify --name N [--source RAW] [--samples K]"},
		{"decrypt", disk_decrypt, "decrypt --name N --out FILE"},
		{"show", disk_show, "show NAME"},
		{"list", disk_list, "list [--des D]"},
		{"delete", disk_delete, "delete --name N [--remove-image]"},
	};
	return cli_dispatch(cli, "disk", verbs, CVM_ARRAY_SIZE(verbs), argc, argv);
}
