/* SPDX-License-Identifier: Apache-2.0 */
/* cvm-guest: runs in the initramfs of a confidential VM. It proves the VM's state to the
 * attestation service, has the orchestrator release the disk key to a key only this process
 * holds, unlocks the LUKS2 root and hands over to the init script's switch_root. Every failure
 * is printed as "cvm-guest: FAILED <check>: <reason>" on the console and, with --poweroff,
 * powers the VM off: there is no path that boots without the unlocked disk. */
#include <opencvm/disk.h>
#include <opencvm/guest.h>
#include <opencvm/http.h>
#include <opencvm/json.h>

#include <libcryptsetup.h>
#include <openssl/crypto.h>
#include <stdio.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/reboot.h>
#include <time.h>
#include <unistd.h>

#define CMDLINE_MAX 8192
#define HTTP_TIMEOUT_MS 60000

struct agent {
	const char *cmdline_file;
	const char *mapper_name;
	bool poweroff;
	struct cvm_guest_env env;
	struct cvm_guest_config cfg;
};

/* Seconds since the guest kernel started (CLOCK_BOOTTIME), stamped on the progress lines so
 * the host can split a boot into phases: "cvm-guest: attested (t=12.345s)". */
static double boot_seconds(void)
{
	struct timespec ts;
	if (clock_gettime(CLOCK_BOOTTIME, &ts) < 0)
		return -1;
	return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static void failed(const struct agent *a, const char *check, const struct cvm_err *err)
{
	printf("cvm-guest: FAILED %s: %s\n", check, err->msg[0] ? err->msg : "unknown error");
	fflush(stdout);
	if (a->poweroff) {
		sync();
		reboot(RB_POWER_OFF);
	}
}

static int post_json(const struct agent *a, const char *url, const char *body,
		     struct cvm_http_result *res, struct cvm_err *err)
{
	struct cvm_http_client_opts o = { .ca_file = a->cfg.ca_file, .timeout_ms = HTTP_TIMEOUT_MS };
	static const char *const hdrs[] = { "Content-Type: application/json", NULL };
	int r = cvm_http_request(&o, "POST", url, hdrs, body, strlen(body), res, err);
	if (r < 0)
		return cvm_err_prefix(err, "POST %s", url);
	if (res->status / 100 != 2) {
		/* Key Vault / MAA error body: {"error":{"code","message"}} */
		_cleanup_json_ json_t *j = NULL;
		struct cvm_err e2 = { 0 };
		const char *msg = NULL;
		if (cvm_json_parse(res->body.data, res->body.len, false, &j, &e2) == 0)
			msg = json_string_value(cvm_json_path(j, "error.message"));
		return cvm_err_set(err, EPERM, "Refused", "POST %s: HTTP %ld: %s", url, res->status,
				   msg ? msg : "no error message");
	}
	return 0;
}

/* One request to the attestation service (kind ATTEST) or the orchestrator (RELEASE):
 * over HTTPS when the command line names them, else through the host channel. The response
 * body lands in out. */
static int call(const struct agent *a, const char *kind, const char *body, struct cvm_buf *out,
		struct cvm_err *err)
{
	if (!a->cfg.attest_url) {
		uint8_t *d = NULL;
		size_t l = 0;
		int r = cvm_guest_host_call(&a->env, kind, body, &d, &l, err);
		if (r < 0)
			return r;
		*out = (struct cvm_buf){ .data = d, .len = l, .cap = l };
		return 0;
	}
	_cleanup_free_ char *url =
		strcmp(kind, "ATTEST") == 0
			? cvm_asprintf("%s/attest/SevSnpVm?api-version=2022-08-01", a->cfg.attest_url)
			: cvm_asprintf("%s/vms/%s/release", a->cfg.orchestrator_url, a->cfg.vm);
	if (!url)
		return cvm_err_nomem(err);
	struct cvm_http_result res = { 0 };
	int r = post_json(a, url, body, &res, err);
	if (r == 0) {
		*out = res.body;
		res.body = (struct cvm_buf){ 0 };
	}
	cvm_http_result_free(&res);
	return r;
}

/* Activate the LUKS2 volume with the secret (libcryptsetup: the secret never reaches argv or
 * a file). */
static int activate(const char *dev, const char *name, const struct cvm_secret *secret,
		    struct cvm_err *err)
{
	struct crypt_device *cd = NULL;
	int r = crypt_init(&cd, dev);
	if (r < 0)
		return cvm_err_set(err, EIO, "DiskError", "%s: %s", dev, strerror(-r));
	if ((r = crypt_load(cd, CRYPT_LUKS2, NULL)) < 0) {
		crypt_free(cd);
		return cvm_err_set(err, EIO, "DiskError", "%s: not a LUKS2 volume (%s)", dev,
				   strerror(-r));
	}
	r = crypt_activate_by_passphrase(cd, name, CRYPT_ANY_SLOT, (const char *)secret->data,
					 secret->len, 0);
	crypt_free(cd);
	if (r < 0)
		return cvm_err_set(err, r == -EPERM ? EPERM : EIO, "DiskError",
				   "%s: the released key does not open any keyslot (%s)", dev,
				   strerror(-r));
	return 0;
}

/* The temp disk, when the VM has one: dm-crypt plain (aes-xts-plain64) under a 512-bit key
 * from the kernel RNG that exists only in this process's locked memory and the kernel's dm
 * table, as /dev/mapper/temp; the root's init formats and mounts it. Nothing written there
 * outlives the boot, and the host sees only ciphertext. */
static int temp_disk(const struct agent *a, struct cvm_err *err)
{
	char name[32], dev[48];
	int r = cvm_guest_find_temp_disk("/sys/block", name, sizeof(name), err);
	if (r == -ENOENT && !err->msg[0])
		return 0; /* no temp disk in this VM */
	if (r < 0)
		return r;
	snprintf(dev, sizeof(dev), "/dev/%s", name);
	if ((r = cvm_guest_temp_disk_check(dev, a->cfg.disk, err)) < 0)
		return r;
	uint8_t key[64];
	if ((r = cvm_random(key, sizeof(key), err)) < 0)
		return r;
	struct crypt_device *cd = NULL;
	struct crypt_params_plain pp = { .sector_size = 4096 };
	r = crypt_init(&cd, dev);
	if (r == 0)
		r = crypt_format(cd, CRYPT_PLAIN, "aes", "xts-plain64", NULL, (const char *)key,
				 sizeof(key), &pp);
	if (r == 0)
		r = crypt_activate_by_volume_key(cd, "temp", (const char *)key, sizeof(key), 0);
	OPENSSL_cleanse(key, sizeof(key));
	crypt_free(cd);
	if (r < 0)
		return cvm_err_set(err, EIO, "TempDisk", "%s: dm-crypt: %s", dev, strerror(-r));
	printf("cvm-guest: temp disk %s encrypted with an ephemeral key as /dev/mapper/temp\n", dev);
	fflush(stdout);
	return 0;
}

/* Whether dev carries a LUKS2 header (anything else is not a confidential disk: left alone,
 * never mapped, so the root's init never mounts it). */
static bool is_luks2(const char *dev)
{
	struct crypt_device *cd = NULL;
	bool yes = crypt_init(&cd, dev) == 0 && crypt_load(cd, CRYPT_LUKS2, NULL) == 0;
	crypt_free(cd);
	return yes;
}

/* "<dev>: reason" -> "<dev> (serial S): reason", keeping the error's code. */
static int with_serial(struct cvm_err *err, const char *dev, const char *serial)
{
	char reason[sizeof(err->msg)];
	size_t n = strlen(dev);
	const char *m = strncmp(err->msg, dev, n) == 0 && strncmp(err->msg + n, ": ", 2) == 0
				? err->msg + n + 2
				: err->msg;
	snprintf(reason, sizeof(reason), "%s", m);
	int errnum = err->errnum;
	char code[sizeof(err->code)];
	snprintf(code, sizeof(code), "%s", err->code);
	return cvm_err_set(err, errnum, code, "%s (serial %s): %s", dev, serial, reason);
}

/* One data disk: its opencvm-hsm token must name the key the orchestrator released for the OS
 * disk (os_kid), and the secret it wraps, unwrapped with that key's material, must open it.
 * *skipped: the device is not a confidential disk (no LUKS2 header or no opencvm-hsm token). */
static int data_disk(const struct cvm_guest_data_disk *d, const struct cvm_secret *material,
		     const char *os_kid, bool *skipped, struct cvm_err *err)
{
	char dev[48];
	snprintf(dev, sizeof(dev), "/dev/%s", d->dev);
	*skipped = false;
	if (!is_luks2(dev)) {
		*skipped = true;
		return 0;
	}
	struct cvm_disk_info info = { 0 };
	_cleanup_secret_ struct cvm_secret *secret = NULL;
	int r = cvm_disk_info(dev, &info, err);
	if (r < 0)
		r = cvm_err_prefix(err, "%s (serial %s)", dev, d->serial);
	else if (!info.has_hsm_token)
		*skipped = true;
	else if (!info.complete)
		r = cvm_err_set(err, EBUSY, "DiskError", "%s (serial %s): incomplete (its encryption "
				"has not finished)", dev, d->serial);
	else if (strcmp(info.hsm.key_url, os_kid) != 0)
		r = cvm_err_set(err, EPERM, "DiskError", "%s (serial %s): its opencvm-hsm token names "
				"key %s, not the released key %s", dev, d->serial, info.hsm.key_url,
				os_kid);
	else if ((r = cvm_guest_unwrap_disk_secret(material, info.hsm.alg, info.hsm.wrapped,
						   &secret, err)) < 0)
		r = cvm_err_prefix(err, "%s (serial %s)", dev, d->serial);
	else if ((r = activate(dev, d->name, secret, err)) < 0)
		r = with_serial(err, dev, d->serial);
	else {
		printf("cvm-guest: unlocked %s as /dev/mapper/%s (t=%.3fs)\n", dev, d->name,
		       boot_seconds());
		fflush(stdout);
	}
	cvm_disk_info_clear(&info);
	return r;
}

/* The data disks (every virtio disk but the OS and temp disks that is a confidential disk),
 * each unlocked with the key material released for the OS disk: no second attestation or
 * release. Any of them that cannot be opened fails the boot. */
static int data_disks(const struct agent *a, const struct cvm_secret *material,
		      const char *os_kid, struct cvm_err *err)
{
	struct cvm_guest_data_disk list[32];
	size_t n = 0;
	int r = cvm_guest_find_data_disks("/sys/block", a->cfg.disk, list, CVM_ARRAY_SIZE(list),
					  &n, err);
	for (size_t i = 0; r == 0 && i < n; i++) {
		bool skipped = false;
		r = data_disk(&list[i], material, os_kid, &skipped, err);
		if (r == 0 && skipped) {
			printf("cvm-guest: /dev/%s (serial %s) is not a confidential disk; not mapped\n",
			       list[i].dev, list[i].serial);
			fflush(stdout);
		}
	}
	return r;
}

/* The key the release is wrapped to: created inside the vTPM when there is one (a TPM that is
 * present but fails is a failure, not a reason to hold the key in memory), else an RSA-2048
 * key in this process's locked memory. */
static int ephemeral_key(const struct agent *a, struct cvm_guest_tpm_key **tk,
			 struct cvm_key **mem, const struct cvm_key **pub, struct cvm_err *err)
{
	if (a->env.tpm_dev && access(a->env.tpm_dev, F_OK) == 0) {
		_cleanup_free_ char *conf = cvm_asprintf("device:%s", a->env.tpm_dev);
		int r = conf ? cvm_guest_tpm_key_create(conf, tk, err) : cvm_err_nomem(err);
		if (r < 0)
			return r;
		*pub = cvm_guest_tpm_key_public(*tk);
		printf("cvm-guest: ephemeral key in the vTPM (RSA-2048, decrypt-only, "
		       "non-exportable)\n");
		fflush(stdout);
		return 0;
	}
	int r = cvm_key_generate_rsa(2048, 65537, mem, err);
	*pub = *mem;
	return r;
}

static int unlock(struct agent *a)
{
	struct cvm_err err = { 0 };
	_cleanup_free_ uint8_t *cl = NULL;
	size_t cll = 0;
	if (cvm_file_read(a->cmdline_file, CMDLINE_MAX, &cl, &cll, &err) < 0 ||
	    cvm_guest_cmdline_parse((const char *)cl, cll, &a->cfg, &err) < 0) {
		failed(a, "config", &err);
		return 1;
	}
	enum cvm_guest_tee tee;
	if (cvm_guest_tee_detect(&a->env, a->cfg.tee, &tee, &err) < 0) {
		failed(a, "tee", &err);
		return 1;
	}
	printf("cvm-guest: tee=%s vm=%s disk=%s (t=%.3fs)\n", cvm_guest_tee_name(tee), a->cfg.vm,
	       a->cfg.disk, boot_seconds());
	fflush(stdout);

	/* Which key wraps the disk secret: from the disk's own opencvm-hsm token. */
	struct cvm_disk_info info = { 0 };
	if (cvm_disk_info(a->cfg.disk, &info, &err) < 0 || !info.has_hsm_token) {
		if (!err.msg[0])
			cvm_err_set(&err, ENOENT, "DiskError", "%s: no opencvm-hsm token", a->cfg.disk);
		cvm_disk_info_clear(&info);
		failed(a, "disk", &err);
		return 1;
	}

	/* Ephemeral key: in the vTPM when the VM has one (decrypt-only, never exportable), else
	 * only in this process's locked memory (mlockall in main). */
	struct cvm_guest_tpm_key *tk = NULL;
	struct cvm_key *eph = NULL;
	const struct cvm_key *eph_pub = NULL;
	char nonce[33];
	_cleanup_free_ char *rt = NULL, *body = NULL, *token = NULL, *rel_body = NULL,
			    *enc = NULL;
	uint8_t rd[64];
	struct cvm_guest_evidence ev = { 0 };
	struct cvm_buf resp = { 0 };
	_cleanup_free_ uint8_t *ct = NULL;
	size_t ctl = 0;
	_cleanup_secret_ struct cvm_secret *material = NULL, *secret = NULL;
	const char *check = "key";
	int r = ephemeral_key(a, &tk, &eph, &eph_pub, &err);
	if (r == 0 && (check = "nonce", r = cvm_random_hex32(nonce, &err)) == 0 &&
	    (check = "runtime-data", r = cvm_guest_runtime_data(eph_pub, nonce, a->cfg.vm, &rt, &err)) == 0 &&
	    (r = cvm_guest_report_data(rt, strlen(rt), rd, &err)) == 0 &&
	    (check = "evidence", r = cvm_guest_get_evidence(&a->env, tee, rd, &ev, &err)) == 0 &&
	    (check = "attest", r = cvm_guest_attest_body(&ev, rt, nonce, &body, &err)) == 0) {
		r = call(a, "ATTEST", body, &resp, &err);
		if (r == 0)
			r = cvm_guest_parse_token(resp.data, resp.len, &token, &err);
		cvm_buf_free(&resp);
	}
	if (r == 0) {
		printf("cvm-guest: attested (t=%.3fs)\n", boot_seconds());
		fflush(stdout);
		check = "release";
		json_t *rb = json_pack("{s:s,s:s,s:s}", "target", token, "kid", info.hsm.key_url,
				       "nonce", nonce);
		rel_body = rb ? cvm_json_dump(rb) : NULL;
		if (rb)
			json_decref(rb);
		r = rel_body ? call(a, "RELEASE", rel_body, &resp, &err) : cvm_err_nomem(&err);
		if (r == 0)
			r = cvm_guest_parse_release(resp.data, resp.len, &ct, &ctl, &enc, &err);
		cvm_buf_free(&resp);
	}
	if (r == 0 && (check = "unwrap",
		       r = tk ? cvm_guest_tpm_key_unwrap(tk, enc, ct, ctl, &material, &err)
			      : cvm_guest_unwrap_released(eph, enc, ct, ctl, &material, &err)) == 0)
		r = cvm_guest_unwrap_disk_secret(material, info.hsm.alg, info.hsm.wrapped, &secret,
						 &err);
	if (r == 0 && (check = "unlock", r = activate(a->cfg.disk, a->mapper_name, secret,
						       &err)) == 0) {
		printf("cvm-guest: unlocked %s as /dev/mapper/%s (t=%.3fs)\n", a->cfg.disk,
		       a->mapper_name, boot_seconds());
		fflush(stdout);
	}
	/* The released key material opens the data disks too, then goes (zeroized). */
	if (r == 0) {
		check = "data-disk";
		r = data_disks(a, material, info.hsm.key_url, &err);
	}
	cvm_secret_free(material);
	material = NULL;
	cvm_key_free(eph);
	cvm_guest_tpm_key_free(tk);
	cvm_guest_evidence_clear(&ev);
	cvm_disk_info_clear(&info);
	if (r == 0) {
		check = "temp";
		r = temp_disk(a, &err);
	}
	if (r < 0) {
		failed(a, check, &err);
		return 1;
	}
	return 0;
}

static int evidence_cmd(struct agent *a, const char *hex)
{
	struct cvm_err err = { 0 };
	uint8_t rd[64] = { 0 };
	enum cvm_guest_tee tee;
	struct cvm_guest_evidence ev = { 0 };
	if ((hex && cvm_hex_decode_fixed(hex, rd, 64, "--report-data", &err) < 0) ||
	    cvm_guest_tee_detect(&a->env, CVM_GUEST_TEE_AUTO, &tee, &err) < 0 ||
	    cvm_guest_get_evidence(&a->env, tee, rd, &ev, &err) < 0) {
		failed(a, "evidence", &err);
		return 1;
	}
	if (fwrite(ev.report, 1, ev.report_len, stdout) != ev.report_len) {
		cvm_guest_evidence_clear(&ev);
		return 1;
	}
	cvm_guest_evidence_clear(&ev);
	return 0;
}

static void usage(FILE *f)
{
	fprintf(f, "usage: cvm-guest unlock [--poweroff] [--cmdline FILE] [--name NAME]\n"
		   "       cvm-guest detect\n"
		   "       cvm-guest evidence [--report-data HEX128] > report.bin\n");
}

int main(int argc, char **argv)
{
	struct agent a = { .cmdline_file = "/proc/cmdline", .mapper_name = "root" };
	cvm_guest_env_default(&a.env);
	cvm_log_set_level(CVM_LOG_WARN);
	if (argc < 2) {
		usage(stderr);
		return 2;
	}
	const char *cmd = argv[1], *rdhex = NULL;
	for (int i = 2; i < argc; i++) {
		if (strcmp(argv[i], "--poweroff") == 0)
			a.poweroff = true;
		else if (strcmp(argv[i], "--cmdline") == 0 && i + 1 < argc)
			a.cmdline_file = argv[++i];
		else if (strcmp(argv[i], "--name") == 0 && i + 1 < argc)
			a.mapper_name = argv[++i];
		else if (strcmp(argv[i], "--report-data") == 0 && i + 1 < argc)
			rdhex = argv[++i];
		else {
			usage(stderr);
			return 2;
		}
	}
	/* The TPM stack's own log lines would interleave with ours on the console; its errors
	 * reach the console through our messages (decoded response codes). */
	setenv("TSS2_LOG", "all+none", 0);
	/* Keys and secrets of this process never reach swap. */
	if (mlockall(MCL_CURRENT | MCL_FUTURE) < 0 && strcmp(cmd, "unlock") == 0) {
		struct cvm_err err = { 0 };
		cvm_err_set(&err, errno, "InternalError", "mlockall: %s", strerror(errno));
		failed(&a, "memory", &err);
		return 1;
	}
	int rc;
	if (strcmp(cmd, "unlock") == 0) {
		rc = unlock(&a);
	} else if (strcmp(cmd, "detect") == 0) {
		struct cvm_err err = { 0 };
		enum cvm_guest_tee tee;
		rc = cvm_guest_tee_detect(&a.env, CVM_GUEST_TEE_AUTO, &tee, &err) < 0 ? 1 : 0;
		if (rc)
			failed(&a, "tee", &err);
		else
			printf("%s\n", cvm_guest_tee_name(tee));
	} else if (strcmp(cmd, "evidence") == 0) {
		rc = evidence_cmd(&a, rdhex);
	} else {
		usage(stderr);
		rc = 2;
	}
	cvm_guest_config_clear(&a.cfg);
	return rc;
}
