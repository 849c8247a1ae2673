/* SPDX-License-Identifier: Apache-2.0 */
/* cvmd service wiring: state dir, TLS material, store, hsm activation, bootstrap admin, HTTP
 * server with the key service and attestation routes, scheduler thread, signal handling. */
#include <arpa/inet.h>
#include <ftw.h>
#include <netinet/in.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include <openssl/pem.h>

#include <opencvm/audit.h>
#include <opencvm/crypto.h>
#include <opencvm/hsm.h>
#include <opencvm/http.h>
#include <opencvm/json.h>
#include <opencvm/store.h>
#ifdef CVM_HAVE_ATTEST
#include <opencvm/attest.h>
#endif
#ifdef CVM_HAVE_DISK_REST
#include <opencvm/disk.h>
#endif

#include "daemon.h"

#define CVMD_TICK_SECONDS 5
#define CVMD_FILE_MAX (1024u * 1024u)

/* ---- TLS material ---------------------------------------------------------------------- */

static int tls_generate(const char *cert_path, const char *key_path, struct cvm_err *err)
{
	struct cvm_key *k = NULL;
	X509 *x = NULL;
	_cleanup_free_ char *cert_pem = NULL, *key_pem = NULL;
	static const char *const dns[] = { "localhost", NULL };
	static const char *const ips[] = { "127.0.0.1", "::1", NULL };
	int r = cvm_key_generate_ec("P-256", &k, err);
	if (r == 0)
		r = cvm_x509_self_signed(k, "cvmd", dns, ips, 825, &x, err);
	if (r == 0)
		r = cvm_x509_to_pem(x, &cert_pem, err);
	if (r == 0)
		r = cvm_key_to_pem(k, true, &key_pem, err);
	if (r == 0)
		r = cvm_file_write_atomic(key_path, key_pem, strlen(key_pem), 0600, err);
	if (r == 0)
		r = cvm_file_write_atomic(cert_path, cert_pem, strlen(cert_pem), 0644, err);
	if (key_pem) {
		size_t kl = strlen(key_pem);
		cvm_free_secure(CVM_TAKE(key_pem), kl);
	}
	X509_free(x);
	cvm_key_free(k);
	return r;
}

/* Loads (or on first start generates) the TLS certificate and key; logs the fingerprint. */
static int tls_load(struct cvmd_config *c, char **cert_path, char **cert_pem, char **key_pem,
		    struct cvm_err *err)
{
	_cleanup_free_ char *gen_cert = NULL, *gen_key = NULL;
	const char *cp = c->tls_cert, *kp = c->tls_key;
	int r;
	if (!cp) {
		gen_cert = cvm_path_join(c->state_dir, "tls-cert.pem");
		gen_key = cvm_path_join(c->state_dir, "tls-key.pem");
		if (!gen_cert || !gen_key)
			return cvm_err_nomem(err);
		if (access(gen_cert, R_OK) != 0 || access(gen_key, R_OK) != 0) {
			r = tls_generate(gen_cert, gen_key, err);
			if (r < 0)
				return cvm_err_prefix(err, "self-signed TLS certificate");
		}
		cp = gen_cert;
		kp = gen_key;
	}
	size_t n;
	uint8_t *cb = NULL, *kb = NULL;
	r = cvm_file_read(cp, CVMD_FILE_MAX, &cb, &n, err);
	if (r < 0)
		return cvm_err_prefix(err, "tls_cert %s", cp);
	r = cvm_file_read(kp, CVMD_FILE_MAX, &kb, &n, err);
	if (r < 0) {
		free(cb);
		return cvm_err_prefix(err, "tls_key %s", kp);
	}
	/* Fingerprint for the operator to pin (and for the log). */
	BIO *bio = BIO_new_mem_buf(cb, -1);
	X509 *x = bio ? PEM_read_bio_X509(bio, NULL, NULL, NULL) : NULL;
	BIO_free(bio);
	char fp[65];
	if (!x || cvm_x509_sha256_fingerprint(x, fp, err) < 0) {
		X509_free(x);
		free(cb);
		cvm_free_secure(kb, n);
		return cvm_err_badparam(err, "tls_cert %s: not a PEM certificate", cp);
	}
	X509_free(x);
	cvm_log_info("tls_certificate", "path=%s sha256=%s", cp, fp);
	*cert_path = strdup(cp);
	*cert_pem = (char *)cb;
	*key_pem = (char *)kb;
	return *cert_path ? 0 : cvm_err_nomem(err);
}

/* ---- activation and bootstrap --------------------------------------------------------------- */

/* The domain key file: reuse it when present, create it (and the domain) when the store has
 * none. An existing domain without its key file stays locked. */
static int activate(struct cvm_hsm *h, const char *key_file, struct cvm_err *err)
{
	_cleanup_free_ uint8_t *buf = NULL;
	size_t len = 0;
	int r;
	if (cvm_hsm_domain_exists(h)) {
		r = cvm_file_read(key_file, 64, &buf, &len, err);
		if (r < 0)
			return cvm_err_prefix(err, "domain_key_file %s", key_file);
		if (len != 32) {
			cvm_free_secure(CVM_TAKE(buf), len);
			return cvm_err_badparam(err, "domain_key_file %s: expected 32 bytes",
						key_file);
		}
		_cleanup_secret_ struct cvm_secret *k = cvm_secret_from(buf, len);
		cvm_free_secure(CVM_TAKE(buf), len);
		if (!k)
			return cvm_err_nomem(err);
		return cvm_hsm_domain_unlock(h, k, err);
	}
	_cleanup_secret_ struct cvm_secret *k = cvm_secret_random(32);
	if (!k)
		return cvm_err_nomem(err);
	/* Key file first: a crash between the two leaves a key without a domain, which the next
	 * start overwrites; the reverse order could leave a domain nobody can unlock. */
	r = cvm_file_write_atomic(key_file, k->data, k->len, 0600, err);
	if (r < 0)
		return r;
	return cvm_hsm_domain_create_with_key(h, k, err);
}

/* Writes {"client_id","client_secret","object_id"} of a new bootstrap administrator to path
 * (0600). When an administrator exists already, nothing is written and *created is false. */
static int bootstrap_admin(struct cvm_hsm *h, const char *path, bool *created,
			   struct cvm_err *err)
{
	struct cvm_principal_info info = { 0 };
	_cleanup_secret_ struct cvm_secret *secret = NULL;
	*created = false;
	int r = cvm_hsm_bootstrap_admin(h, "administrator", &info, &secret, err);
	if (r == -EEXIST) {
		cvm_err_clear(err);
		return 0;
	}
	if (r < 0)
		return r;
	_cleanup_free_ char *sec = strndup((const char *)secret->data, secret->len);
	json_t *j = sec ? json_pack("{s:s,s:s,s:s}", "client_id", info.client_id, "client_secret",
				    sec, "object_id", info.oid)
			: NULL;
	char *text = j ? cvm_json_dump(j) : NULL;
	json_decref(j);
	cvm_principal_info_clear(&info);
	if (sec)
		cvm_free_secure(CVM_TAKE(sec), secret->len);
	if (!text)
		return cvm_err_nomem(err);
	r = cvm_file_write_atomic(path, text, strlen(text), 0600, err);
	cvm_free_secure(text, strlen(text));
	*created = r == 0;
	return r;
}

/* ---- listen address -------------------------------------------------------------------------
 * The attestation issuer URL must be known before the routes are registered, so port 0 is
 * resolved here by asking the kernel for a free port (the port stays free until the server
 * binds it a moment later; a collision fails the start loudly, never silently). */
static int resolve_port0(struct cvmd_config *c, struct cvm_err *err)
{
	const char *colon = strrchr(c->listen, ':');
	if (!colon || strcmp(colon + 1, "0"))
		return 0;
	_cleanup_free_ char *host = strndup(c->listen, (size_t)(colon - c->listen));
	if (!host)
		return cvm_err_nomem(err);
	bool v6 = host[0] == '[';
	if (v6) {
		memmove(host, host + 1, strlen(host));
		host[strcspn(host, "]")] = '\0';
	}
	int fd = socket(v6 ? AF_INET6 : AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (fd < 0)
		return cvm_err_set(err, errno, "InternalError", "socket: %s", strerror(errno));
	struct sockaddr_storage ss = { 0 };
	socklen_t sl;
	int ok;
	if (v6) {
		struct sockaddr_in6 *s6 = (struct sockaddr_in6 *)&ss;
		s6->sin6_family = AF_INET6;
		ok = inet_pton(AF_INET6, host, &s6->sin6_addr);
		sl = sizeof(*s6);
	} else {
		struct sockaddr_in *s4 = (struct sockaddr_in *)&ss;
		s4->sin_family = AF_INET;
		ok = inet_pton(AF_INET, host, &s4->sin_addr);
		sl = sizeof(*s4);
	}
	if (ok != 1) {
		close(fd);
		return cvm_err_badparam(err, "listen: expected a numeric address, got \"%s\"", host);
	}
	if (bind(fd, (struct sockaddr *)&ss, sl) < 0 || getsockname(fd, (struct sockaddr *)&ss,
								   &sl) < 0) {
		int e = errno;
		close(fd);
		return cvm_err_set(err, e, "InternalError", "listen %s: %s", c->listen, strerror(e));
	}
	close(fd);
	unsigned port = ntohs(v6 ? ((struct sockaddr_in6 *)&ss)->sin6_port
				 : ((struct sockaddr_in *)&ss)->sin_port);
	char *l = cvm_asprintf("%s%s%s:%u", v6 ? "[" : "", host, v6 ? "]" : "", port);
	if (!l)
		return cvm_err_nomem(err);
	free(c->listen);
	c->listen = l;
	return 0;
}

/* "https://127.0.0.1:8443" for the listen address (wildcards become loopback). */
static char *listen_base_url(const char *listen)
{
	if (cvm_str_startswith(listen, "0.0.0.0:"))
		return cvm_asprintf("https://127.0.0.1%s", strrchr(listen, ':'));
	if (cvm_str_startswith(listen, "[::]:"))
		return cvm_asprintf("https://[::1]%s", strrchr(listen, ':'));
	return cvm_asprintf("https://%s", listen);
}

/* Handlers block while their audit record commits (group commit: one fsync serves every
 * record that arrived meanwhile), so throughput needs many requests in flight, i.e. more
 * workers than cores. */
static unsigned worker_threads(unsigned configured)
{
	if (configured)
		return configured;
	long n = sysconf(_SC_NPROCESSORS_ONLN);
	unsigned t = n > 0 ? (unsigned)n * 32 : 64;
	return t < 64 ? 64 : (t > 512 ? 512 : t);
}

/* ---- scheduler --------------------------------------------------------------------------------- */

struct scheduler {
	struct cvm_hsm *h;
#ifdef CVM_HAVE_DISK_REST
	struct cvm_disk_autorotate_config disks; /* re-wrap DES disks after key rotations */
#endif
	pthread_mutex_t lock;
	pthread_cond_t cond;
	bool stop;
};

static void *scheduler_main(void *arg)
{
	struct scheduler *s = arg;
	pthread_mutex_lock(&s->lock);
	while (!s->stop) {
		struct timespec ts;
		clock_gettime(CLOCK_REALTIME, &ts);
		ts.tv_sec += CVMD_TICK_SECONDS;
		pthread_cond_timedwait(&s->cond, &s->lock, &ts);
		if (s->stop)
			break;
		pthread_mutex_unlock(&s->lock);
		struct cvm_err err = { 0 };
		int n = cvm_hsm_tick(s->h, cvm_now(), &err);
		if (n < 0)
			cvm_log_warn("scheduler_tick_failed", "code=%s error=\"%s\"", err.code,
				     err.msg);
		else if (n > 0)
			cvm_log_info("scheduler_tick", "actions=%d", n);
#ifdef CVM_HAVE_DISK_REST
		/* After the key tick, so a rotation it made is followed in the same pass. */
		cvm_err_clear(&err);
		n = cvm_disk_autorotate_tick(&s->disks, cvm_now(), &err);
		if (n < 0)
			cvm_log_warn("disk_autorotate_tick_failed", "code=%s error=\"%s\"", err.code,
				     err.msg);
		else if (n > 0)
			cvm_log_info("disk_autorotate_tick", "disks=%d", n);
#endif
		pthread_mutex_lock(&s->lock);
	}
	pthread_mutex_unlock(&s->lock);
	return NULL;
}

/* ---- dev info --------------------------------------------------------------------------------- */

static int write_dev_info(struct cvmd_config *c, const char *base_url, const char *tenant,
			  const char *ca_cert, const char *admin_file, struct cvm_err *err)
{
	_cleanup_free_ uint8_t *buf = NULL;
	size_t len = 0;
	int r = cvm_file_read(admin_file, 4096, &buf, &len, err);
	if (r < 0)
		return r;
	_cleanup_json_ json_t *admin = NULL;
	r = cvm_json_parse(buf, len, false, &admin, err);
	cvm_free_secure(CVM_TAKE(buf), len);
	if (r < 0)
		return cvm_err_prefix(err, "%s", admin_file);
	_cleanup_json_ json_t *j = json_pack("{s:s,s:s,s:s,s:O,s:O}", "base_url", base_url,
					     "tenant", tenant, "ca_cert", ca_cert, "client_id",
					     json_object_get(admin, "client_id"), "client_secret",
					     json_object_get(admin, "client_secret"));
	char *text = j ? cvm_json_dump(j) : NULL;
	if (!text)
		return cvm_err_nomem(err);
	if (c->dev_info) {
		r = cvm_file_write_atomic(c->dev_info, text, strlen(text), 0600, err);
	} else {
		printf("%s\n", text);
		fflush(stdout);
	}
	cvm_free_secure(text, strlen(text));
	return r;
}

static int rm_entry(const char *path, const struct stat *st, int flag, struct FTW *ftw)
{
	return remove(path);
}

/* ---- run ----------------------------------------------------------------------------------- */

struct service {
	struct cvm_store *store;
	struct cvm_hsm *hsm;
	struct cvm_audit *audit;
	struct cvm_http_server *srv;
	struct cvm_hsm_rest *rest;
#ifdef CVM_HAVE_DISK_REST
	struct cvm_disk_rest *disk_rest;
#endif
#ifdef CVM_HAVE_ATTEST
	struct cvm_attest_roots *roots;
	struct cvm_attest_service *attest;
	struct cvm_attest_rest *attest_rest;
#endif
	char *cert_path, *cert_pem, *key_pem;
	char *base_url;
};

static void service_free(struct service *s)
{
	cvm_http_server_free(s->srv); /* stops and joins the workers before what they use goes */
	cvm_hsm_rest_free(s->rest);
#ifdef CVM_HAVE_DISK_REST
	cvm_disk_rest_free(s->disk_rest);
#endif
#ifdef CVM_HAVE_ATTEST
	cvm_attest_rest_free(s->attest_rest);
	cvm_attest_service_free(s->attest);
	cvm_attest_roots_free(s->roots);
#endif
	cvm_audit_close(s->audit);
	cvm_hsm_free(s->hsm);
	cvm_store_close(s->store);
	if (s->key_pem)
		cvm_free_secure(s->key_pem, strlen(s->key_pem));
	free(s->cert_pem);
	free(s->cert_path);
	free(s->base_url);
}

#ifdef CVM_HAVE_ATTEST
/* PUT /policies/{type} changes what the attestation service certifies, so (as in MAA) only an
 * authenticated principal holding a policy-administration role may do it; GET stays public.
 * Role assignment writes are what Managed HSM's Administrator, Crypto Officer and Policy
 * Administrator roles share, so that data action stands for "administers policy". The attest
 * REST glue calls this for every PUT and audits the outcome (principal = the caller's oid). */
#define CVMD_POLICY_ADMIN_ACTION "Microsoft.KeyVault/managedHsm/roleAssignments/write/action"
static int policy_authorize(void *ctx, const struct cvm_http_req *req,
			    char principal[CVM_ATTEST_PRINCIPAL_MAX], struct cvm_err *err)
{
	const struct service *s = ctx;
	char oid[37];
	if (!s->hsm)
		return cvm_err_set(err, EPERM, "Forbidden",
				   "policies: changing attestation policies needs the key "
				   "service (services = hsm, attest) to authorize the caller");
	int r = cvm_hsm_authenticate(s->hsm, cvm_http_req_header(req, "Authorization"),
				     s->base_url, oid, err);
	if (r < 0)
		return r;
	snprintf(principal, CVM_ATTEST_PRINCIPAL_MAX, "%s", oid);
	return cvm_hsm_rbac_check(s->hsm, oid, CVMD_POLICY_ADMIN_ACTION, NULL, err);
}

static int attest_setup(struct cvmd_config *c, struct service *s, struct cvm_err *err)
{
	_cleanup_free_ char *key_dir = cvm_path_join(c->state_dir, "attest");
	if (!key_dir)
		return cvm_err_nomem(err);
	int r = cvm_attest_roots_new_builtin(&s->roots, err);
	if (r < 0)
		return r;
	/* The TEE emulator root is trusted only when asked for: always in --dev, otherwise only
	 * with attest_emulator_root naming the emulator directory. */
	_cleanup_free_ char *emu_dir = NULL;
	if (c->dev) {
		emu_dir = cvm_path_join(c->state_dir, "tee-emulator");
		if (!emu_dir)
			return cvm_err_nomem(err);
		char fp[65];
		if (access(emu_dir, F_OK) != 0) {
			struct cvm_tee_emu_params p = { 0 };
			r = cvm_tee_emu_init(emu_dir, &p, fp, err);
		} else {
			r = cvm_tee_emu_fingerprint(emu_dir, fp, err);
		}
		if (r == 0)
			r = cvm_attest_roots_add_emulator(s->roots, emu_dir, fp, err);
		if (r < 0)
			return cvm_err_prefix(err, "TEE emulator");
		cvm_log_info("attest_emulator_trusted", "dir=%s ark_sha256=%s", emu_dir, fp);
	} else if (c->attest_emulator_root) {
		/* Only the operator's pinned fingerprint decides (cvmd_config_finish requires it);
		 * the directory's own ARK is read just to name both values when they differ. */
		char fp[65];
		r = cvm_tee_emu_fingerprint(c->attest_emulator_root, fp, err);
		if (r < 0)
			return cvm_err_prefix(err, "attest_emulator_root");
		if (strcasecmp(fp, c->attest_emulator_fingerprint) != 0)
			return cvm_err_set(err, EPERM, "Forbidden",
					   "attest_emulator_fingerprint: %s does not match the ARK "
					   "in %s (SHA-256 %s); refusing to trust this emulator",
					   c->attest_emulator_fingerprint, c->attest_emulator_root,
					   fp);
		r = cvm_attest_roots_add_emulator(s->roots, c->attest_emulator_root,
						  c->attest_emulator_fingerprint, err);
		if (r < 0)
			return cvm_err_prefix(err, "attest_emulator_root");
		cvm_log_warn("attest_emulator_trusted", "dir=%s ark_sha256=%s",
			     c->attest_emulator_root, c->attest_emulator_fingerprint);
	}
	/* Trusting the emulator root is the operator's explicit opt-in (always in --dev); only
	 * then does the SEV-SNP policy accept emulated evidence. Its tokens still say
	 * x-opencvm-emulated: true, and the key service releases to them only when a key's
	 * release policy names that claim. */
	struct cvm_snp_policy snp_policy;
	cvm_snp_policy_default(&snp_policy);
	snp_policy.allow_emulated = emu_dir != NULL || c->attest_emulator_root != NULL;
	struct cvm_attest_service_config ac = {
		.issuer = s->base_url,
		.key_dir = key_dir,
		.roots = s->roots,
		.snp_policy = &snp_policy,
	};
	r = cvm_attest_service_new(&ac, &s->attest, err);
	if (r < 0)
		return r;
	struct cvm_attest_rest_config rc = { .authorize_policy = policy_authorize,
					     .authorize_ctx = s, .audit = s->audit };
	return cvm_attest_register_routes_guarded(s->attest, s->srv, &rc, &s->attest_rest, err);
}
#endif

/* Attestation authorities are reached over TLS: trust the system's CAs plus our own
 * certificate, so the local attestation service (same cvmd, self-signed by default) is an
 * authority like any other. Written to the state dir as one PEM bundle (curl takes one). */
static int authority_trust_bundle(struct cvmd_config *c, struct service *s, char **out,
				  struct cvm_err *err)
{
	static const char *const system_bundle = "/etc/ssl/certs/ca-certificates.crt";
	struct cvm_buf b = { 0 };
	uint8_t *data = NULL;
	size_t len = 0;
	if (cvm_file_read(system_bundle, 16u << 20, &data, &len, NULL) == 0) {
		int a = cvm_buf_append(&b, data, len);
		free(data);
		if (a < 0)
			return cvm_err_nomem(err);
	}
	if (cvm_buf_append_str(&b, "\n") < 0 || cvm_buf_append_str(&b, s->cert_pem) < 0) {
		cvm_buf_free(&b);
		return cvm_err_nomem(err);
	}
	*out = cvm_path_join(c->state_dir, "authority-ca.pem");
	int r = *out ? cvm_file_write_atomic(*out, b.data, b.len, 0644, err) : cvm_err_nomem(err);
	cvm_buf_free(&b);
	return r;
}

static int hsm_setup(struct cvmd_config *c, struct service *s, bool *admin_created,
		     char **admin_file, struct cvm_err *err)
{
	struct cvm_hsm_config hc = {
		.store = s->store,
		.soft_delete_days_default = c->soft_delete_days,
		.purge_protection = c->purge_protection,
		.name = "cvmd",
	};
	int r = cvm_hsm_open(&hc, &s->hsm, err);
	if (r < 0)
		return r;
	_cleanup_free_ char *authority_ca = NULL;
	if ((r = authority_trust_bundle(c, s, &authority_ca, err)) < 0)
		return r;
	struct cvm_hsm_auth_config auc = { .authority_ca_file = authority_ca };
	r = cvm_hsm_auth_configure(s->hsm, &auc, err);
	if (r < 0)
		return r;
	_cleanup_free_ char *dev_key = c->dev ? cvm_path_join(c->state_dir, "dev-domain.key")
					      : NULL;
	const char *key_file = c->dev ? dev_key : c->domain_key_file;
	if (c->dev && !dev_key)
		return cvm_err_nomem(err);
	if (key_file) {
		r = activate(s->hsm, key_file, err);
		if (r < 0)
			return cvm_err_prefix(err, "security domain");
	}
	if (!cvm_hsm_activated(s->hsm)) {
		cvm_log_warn("hsm_not_activated",
			     "hint=\"set domain_key_file, or cvm hsm init / cvm hsm activate\"");
		return 0;
	}
	*admin_file = c->dev ? cvm_path_join(c->state_dir, "dev-admin.json")
			     : (c->admin_file ? strdup(c->admin_file)
					      : cvm_path_join(c->state_dir, "admin-credentials.json"));
	if (!*admin_file)
		return cvm_err_nomem(err);
	r = bootstrap_admin(s->hsm, *admin_file, admin_created, err);
	if (r < 0)
		return cvm_err_prefix(err, "bootstrap administrator");
	if (*admin_created)
		cvm_log_info("bootstrap_admin_created", "credentials=%s", *admin_file);
	return 0;
}

static int wait_for_signal(void)
{
	sigset_t set;
	sigemptyset(&set);
	sigaddset(&set, SIGTERM);
	sigaddset(&set, SIGINT);
	int sig = 0;
	sigwait(&set, &sig);
	return sig;
}

int cvmd_run(struct cvmd_config *c, struct cvm_err *err)
{
	struct service s = { 0 };
	struct scheduler sched = { .lock = PTHREAD_MUTEX_INITIALIZER,
				   .cond = PTHREAD_COND_INITIALIZER };
	pthread_t sched_thread;
	bool sched_started = false, admin_created = false;
	_cleanup_free_ char *admin_file = NULL;
	int r;

	/* Block the stop signals in every thread; main collects them with sigwait. */
	sigset_t set;
	sigemptyset(&set);
	sigaddset(&set, SIGTERM);
	sigaddset(&set, SIGINT);
	pthread_sigmask(SIG_BLOCK, &set, NULL);
	signal(SIGPIPE, SIG_IGN);

	r = cvm_mkdir_p(c->state_dir, 0700, err);
	if (r == 0)
		r = resolve_port0(c, err);
	if (r == 0) {
		s.base_url = c->base_url ? strdup(c->base_url) : listen_base_url(c->listen);
		if (!s.base_url)
			r = cvm_err_nomem(err);
	}
	if (r == 0)
		r = tls_load(c, &s.cert_path, &s.cert_pem, &s.key_pem, err);
	if (r == 0)
		r = cvm_store_open(c->store, &s.store, err);
	if (r == 0)
		r = cvm_audit_open(s.store, &s.audit, err);
	if (r == 0 && c->svc_hsm)
		r = hsm_setup(c, &s, &admin_created, &admin_file, err);
	if (r == 0) {
		struct cvm_http_config hc = {
			.listen = c->listen,
			.tls_cert_pem = s.cert_pem,
			.tls_key_pem = s.key_pem,
			.threads = worker_threads(c->threads),
			.max_body = CVM_HSM_REST_MAX_BODY,
		};
		r = cvm_http_server_new(&hc, &s.srv, err);
	}
	_cleanup_free_ char *backup_dir = cvm_path_join(c->state_dir, "backups");
	if (r == 0 && !backup_dir)
		r = cvm_err_nomem(err);
	if (r == 0 && c->svc_hsm) {
		/* While un-activated, the token authorizes the one-time init over REST
		 * (POST /securitydomain/download); removed once activated. */
		_cleanup_free_ char *token_file = cvm_path_join(c->state_dir, "activation-token");
		struct cvm_hsm_rest_config rc = { .base_url = s.base_url, .backup_dir = backup_dir,
						  .activation_token_file = token_file };
		r = token_file ? cvm_mkdir_p(backup_dir, 0700, err) : cvm_err_nomem(err);
		if (r == 0)
			r = cvm_hsm_register_routes(s.hsm, s.audit, s.srv, &rc, &s.rest, err);
	}
#ifdef CVM_HAVE_DISK_REST
	if (r == 0 && c->svc_hsm) {
		struct cvm_disk_rest_config dc = { .store = s.store, .hsm = s.hsm,
						   .hsm_rest = s.rest, .audit = s.audit };
		r = cvm_disk_register_routes(&dc, s.srv, &s.disk_rest, err);
	}
#endif
#ifdef CVM_HAVE_ATTEST
	if (r == 0 && c->svc_attest)
		r = attest_setup(c, &s, err);
#endif
	if (r == 0)
		r = cvm_http_server_start(s.srv, err);
	if (r == 0) {
		cvm_log_info("cvmd_started", "listen=%s base_url=%s store=%s dev=%s", c->listen,
			     s.base_url, cvm_store_backend(s.store), c->dev ? "yes" : "no");
		if (c->dev && admin_file) {
			char tenant[37];
			r = cvm_hsm_tenant_id(s.hsm, tenant, err);
			if (r == 0)
				r = write_dev_info(c, s.base_url, tenant, s.cert_path, admin_file,
						   err);
		}
	}
	if (r == 0 && c->svc_hsm) {
		sched.h = s.hsm;
#ifdef CVM_HAVE_DISK_REST
		sched.disks = (struct cvm_disk_autorotate_config){ .store = s.store, .hsm = s.hsm,
								   .audit = s.audit };
#endif
		int e = pthread_create(&sched_thread, NULL, scheduler_main, &sched);
		if (e)
			r = cvm_err_set(err, e, "InternalError", "scheduler thread: %s", strerror(e));
		sched_started = e == 0;
	}
	if (r == 0) {
		int sig = wait_for_signal();
		cvm_log_info("cvmd_stopping", "signal=%d", sig);
	}
	if (sched_started) {
		pthread_mutex_lock(&sched.lock);
		sched.stop = true;
		pthread_cond_signal(&sched.cond);
		pthread_mutex_unlock(&sched.lock);
		pthread_join(sched_thread, NULL);
	}
	service_free(&s);
	if (c->dev_temp_state)
		nftw(c->state_dir, rm_entry, 16, FTW_DEPTH | FTW_PHYS);
	if (r == 0)
		cvm_log_info("cvmd_stopped", "status=ok");
	return r;
}

int cvmd_verify_audit(struct cvmd_config *c, struct cvm_err *err)
{
	_cleanup_store_ struct cvm_store *st = NULL;
	int r = cvm_store_open(c->store, &st, err);
	if (r < 0)
		return r;
	int64_t records = 0, bad = 0;
	r = cvm_audit_verify(st, &records, &bad, err);
	if (r < 0) {
		printf("audit: chain broken at seq %lld after %lld good records\n", (long long)bad,
		       (long long)records);
		return r;
	}
	printf("audit: %lld records verified\n", (long long)records);
	return 0;
}
