/* SPDX-License-Identifier: Apache-2.0 */
/* Attestation + key release round trip of a booting confidential VM, minus QEMU, N times:
 *   evidence  fresh ephemeral RSA-2048 key, runtime data binding its public JWK, report_data =
 *             SHA-256(runtime data), SNP_REPORT + VCEK over the host channel (the emulated
 *             AMD-SP of src/vm/teeemu.c signing with the emulator's VCEK)
 *   attest    POST /attest/SevSnpVm body, ATTEST over the host channel, relayed by the
 *             orchestrator (src/vm/orch.c) to cvmd's attestation service, token parsed
 *   release   RELEASE over the host channel: the orchestrator takes its own client-credentials
 *             token (its identity holds only Crypto Service Release User on the DES key), calls
 *             the key service's release with the guest's token as target, audits it and moves
 *             the VM starting -> attesting -> running; the guest parses the response
 *   unwrap    the released key unwrapped with the ephemeral key (CKM_RSA_AES_KEY_WRAP)
 * Every step is the guest's own code (src/guest: flow.c, tee.c) and the host's own code
 * (src/vm: teeemu.c, orch.c). The virtio-serial port is a pseudo-terminal in raw mode: the
 * guest side opens its slave exactly as it opens /dev/virtio-ports/org.opencvm.tee.0, the host
 * side serves the master with cvm_vm_tee_emu_serve as cvm_vm_run serves QEMU's socket.
 * Each round trip is checked: the released key must unwrap the disk secret whose SHA-256 is
 * given (untimed). Between round trips (untimed) the VM goes running -> stopping -> stopped
 * -> starting, as a restart does.
 * Anchor, interleaved with the round trips so both see the same machine load: one HTTPS POST
 * of the same size as the attest body, on a fresh TLS connection through the same client
 * (cvm_http_request), to nginx returning a static 200. Prints percentiles, the per-phase split
 * and ratio= p50(round trip) / p50(anchor POST). Never part of pass/fail. */
#include <opencvm/guest.h>
#include <opencvm/http.h>
#include <opencvm/json.h>
#include <opencvm/store.h>
#include <opencvm/vm.h>

#include <fcntl.h>
#include <getopt.h>
#include <math.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <termios.h>
#include <unistd.h>

enum phase { PH_EVIDENCE, PH_ATTEST, PH_RELEASE, PH_UNWRAP, PH_TOTAL, PH_ANCHOR, PH_KEYGEN, PH_N };
static const char *const phase_names[PH_N] = { "evidence", "attest", "release", "unwrap",
					       "total", "anchor", "keygen" };

struct opts {
	const char *emu_dir, *url, *tenant, *client_id, *secret_file, *ca, *kid, *store_url, *vm;
	const char *measurement_hex, *wrapped_file, *secret_sha256, *anchor_url, *anchor_ca;
	long n, warmup;
};

struct host {
	int master, slave_keep;
	char port[128];
	struct cvm_vm_tee_emu emu;
	pthread_t thr;
};

static void *serve_thread(void *arg)
{
	struct host *h = arg;
	struct cvm_err e = { 0 };
	/* Ends with EIO on the master once every slave descriptor is closed. */
	cvm_vm_tee_emu_serve(&h->emu, h->master, &e);
	return NULL;
}

/* A raw pseudo-terminal stands in for the virtio-serial port. */
static int host_channel_open(struct host *h, struct cvm_err *err)
{
	h->master = posix_openpt(O_RDWR | O_NOCTTY | O_CLOEXEC);
	if (h->master < 0 || grantpt(h->master) < 0 || unlockpt(h->master) < 0 ||
	    ptsname_r(h->master, h->port, sizeof(h->port)) != 0)
		return cvm_err_internal(err, "host channel: pseudo-terminal: %s", strerror(errno));
	/* Held open for the whole run: raw mode stays set between the guest's opens. */
	h->slave_keep = open(h->port, O_RDWR | O_NOCTTY | O_CLOEXEC);
	struct termios t;
	if (h->slave_keep < 0 || tcgetattr(h->slave_keep, &t) < 0)
		return cvm_err_internal(err, "host channel: %s: %s", h->port, strerror(errno));
	cfmakeraw(&t);
	if (tcsetattr(h->slave_keep, TCSANOW, &t) < 0 || tcgetattr(h->master, &t) < 0)
		return cvm_err_internal(err, "host channel: raw mode: %s", strerror(errno));
	cfmakeraw(&t);
	if (tcsetattr(h->master, TCSANOW, &t) < 0)
		return cvm_err_internal(err, "host channel: raw mode: %s", strerror(errno));
	if (pthread_create(&h->thr, NULL, serve_thread, h) != 0)
		return cvm_err_internal(err, "host channel: thread: %s", strerror(errno));
	return 0;
}

static double now_s(void)
{
	return (double)cvm_monotonic_ns() / 1e9;
}

/* The VM back in "starting", as `cvm vm start` leaves it before the guest's first request. */
static int vm_restart(struct cvm_store *s, const char *vm, struct cvm_err *err)
{
	struct cvm_vm v = { 0 };
	int r = cvm_vm_get(s, vm, &v, err);
	if (r < 0)
		return r;
	enum cvm_vm_state st = v.state;
	cvm_vm_clear(&v);
	if (st == CVM_VM_RUNNING || st == CVM_VM_ATTESTING || st == CVM_VM_FAILED)
		if ((r = cvm_vm_transition(s, vm, NULL, CVM_VM_STOPPING, "bench restart", "bench",
					   err)) < 0)
			return r;
	if (st != CVM_VM_STOPPED && st != CVM_VM_STARTING &&
	    (r = cvm_vm_transition(s, vm, NULL, CVM_VM_STOPPED, "bench restart", "bench", err)) < 0)
		return r;
	if (st != CVM_VM_STARTING)
		r = cvm_vm_transition(s, vm, NULL, CVM_VM_STARTING, "bench start", "bench", err);
	return r;
}

struct guest_in {
	const struct cvm_guest_env *env;
	const char *vm, *kid, *wrapped;
	uint8_t secret_sha256[32];
};

/* One guest round trip; t[] gets the phase durations. Returns the attest body's size. */
static int round_trip(const struct guest_in *g, double t[PH_N], size_t *attest_len,
		      struct cvm_err *err)
{
	_cleanup_key_ struct cvm_key *eph = NULL;
	_cleanup_free_ char *rt = NULL, *body = NULL, *token = NULL, *rel = NULL, *enc = NULL;
	_cleanup_free_ uint8_t *resp = NULL, *ct = NULL;
	_cleanup_secret_ struct cvm_secret *material = NULL, *secret = NULL;
	struct cvm_guest_evidence ev = { 0 };
	char nonce[33];
	uint8_t rd[64];
	size_t rl = 0, ctl = 0;
	double t0 = now_s(), t1, t2, t3, t4, t5;
	int r = cvm_key_generate_rsa(2048, 65537, &eph, err);
	t1 = now_s();
	if (r == 0)
		r = cvm_random_hex32(nonce, err);
	if (r == 0)
		r = cvm_guest_runtime_data(eph, nonce, g->vm, &rt, err);
	if (r == 0)
		r = cvm_guest_report_data(rt, strlen(rt), rd, err);
	if (r == 0)
		r = cvm_guest_get_evidence(g->env, CVM_GUEST_TEE_EMULATOR, rd, &ev, err);
	t2 = now_s();
	if (r == 0)
		r = cvm_guest_attest_body(&ev, rt, nonce, &body, err);
	cvm_guest_evidence_clear(&ev);
	if (r == 0) {
		*attest_len = strlen(body);
		r = cvm_guest_host_call(g->env, "ATTEST", body, &resp, &rl, err);
	}
	if (r == 0)
		r = cvm_guest_parse_token(resp, rl, &token, err);
	free(CVM_TAKE(resp));
	t3 = now_s();
	if (r < 0)
		return cvm_err_prefix(err, "attest");
	json_t *rb = json_pack("{s:s,s:s,s:s}", "target", token, "kid", g->kid, "nonce", nonce);
	rel = rb ? cvm_json_dump(rb) : NULL;
	if (rb)
		json_decref(rb);
	r = rel ? cvm_guest_host_call(g->env, "RELEASE", rel, &resp, &rl, err) : cvm_err_nomem(err);
	if (r == 0)
		r = cvm_guest_parse_release(resp, rl, &ct, &ctl, &enc, err);
	if (resp)
		cvm_free_secure(CVM_TAKE(resp), rl);
	t4 = now_s();
	if (r < 0)
		return cvm_err_prefix(err, "release");
	r = cvm_guest_unwrap_released(eph, enc, ct, ctl, &material, err);
	t5 = now_s();
	if (r < 0)
		return r;
	/* Untimed check: the released key opens the disk secret. */
	uint8_t h[64];
	size_t hl = 0;
	if ((r = cvm_guest_unwrap_disk_secret(material, "RSA-OAEP-256", g->wrapped, &secret,
					      err)) < 0 ||
	    (r = cvm_digest("SHA256", secret->data, secret->len, h, &hl, err)) < 0)
		return cvm_err_prefix(err, "check");
	if (!cvm_memeq_ct(h, g->secret_sha256, 32))
		return cvm_err_internal(err, "check: the released key unwraps a different disk secret");
	t[PH_KEYGEN] = t1 - t0;
	t[PH_EVIDENCE] = t2 - t0;
	t[PH_ATTEST] = t3 - t2;
	t[PH_RELEASE] = t4 - t3;
	t[PH_UNWRAP] = t5 - t4;
	t[PH_TOTAL] = t5 - t0;
	return 0;
}

/* Anchor: one HTTPS POST of len bytes on a fresh connection, same client code. */
static int anchor_post(const struct opts *o, const char *body, size_t len, double *secs,
		       struct cvm_err *err)
{
	struct cvm_http_client_opts ho = { .ca_file = o->anchor_ca, .timeout_ms = 60000 };
	static const char *const hdrs[] = { "Content-Type: application/json",
					    "Accept: application/json", NULL };
	struct cvm_http_result res = { 0 };
	double t0 = now_s();
	int r = cvm_http_request(&ho, "POST", o->anchor_url, hdrs, body, len, &res, err);
	*secs = now_s() - t0;
	if (r == 0 && res.status != 200)
		r = cvm_err_internal(err, "anchor: HTTP %ld", res.status);
	cvm_http_result_free(&res);
	return r;
}

static int cmp_double(const void *a, const void *b)
{
	double x = *(const double *)a, y = *(const double *)b;
	return x < y ? -1 : x > y;
}

/* Nearest-rank percentile of a sorted array. */
static double pct(const double *v, size_t n, double p)
{
	size_t k = (size_t)ceil(p / 100.0 * (double)n);
	return v[k ? k - 1 : 0];
}

struct stats {
	double p50, p90, p99, max, mean;
};

static struct stats summarize(double *v, size_t n)
{
	qsort(v, n, sizeof(*v), cmp_double);
	double sum = 0;
	for (size_t i = 0; i < n; i++)
		sum += v[i];
	return (struct stats){ pct(v, n, 50), pct(v, n, 90), pct(v, n, 99), v[n - 1], sum / (double)n };
}

static void usage(void)
{
	fprintf(stderr,
		"usage: bench-vm-release --emulator-dir DIR --url BASE --tenant T --client-id ID\n"
		"  --client-secret-file F --ca-cert PEM --kid KID --store URL --vm NAME\n"
		"  --measurement HEX96 --wrapped-file F --secret-sha256 HEX64\n"
		"  --anchor-url URL --anchor-ca PEM [--n 1000] [--warmup 10]\n");
}

static int parse(int argc, char **argv, struct opts *o)
{
	static const struct option lo[] = {
		{ "emulator-dir", 1, 0, 'e' }, { "url", 1, 0, 'u' }, { "tenant", 1, 0, 't' },
		{ "client-id", 1, 0, 'c' }, { "client-secret-file", 1, 0, 's' },
		{ "ca-cert", 1, 0, 'a' }, { "kid", 1, 0, 'k' }, { "store", 1, 0, 'S' },
		{ "vm", 1, 0, 'v' }, { "measurement", 1, 0, 'm' }, { "wrapped-file", 1, 0, 'w' },
		{ "secret-sha256", 1, 0, 'h' }, { "anchor-url", 1, 0, 'A' },
		{ "anchor-ca", 1, 0, 'C' }, { "n", 1, 0, 'n' }, { "warmup", 1, 0, 'W' },
		{ 0, 0, 0, 0 },
	};
	o->n = 1000;
	o->warmup = 10;
	int c;
	while ((c = getopt_long(argc, argv, "", lo, NULL)) != -1) {
		switch (c) {
		case 'e': o->emu_dir = optarg; break;
		case 'u': o->url = optarg; break;
		case 't': o->tenant = optarg; break;
		case 'c': o->client_id = optarg; break;
		case 's': o->secret_file = optarg; break;
		case 'a': o->ca = optarg; break;
		case 'k': o->kid = optarg; break;
		case 'S': o->store_url = optarg; break;
		case 'v': o->vm = optarg; break;
		case 'm': o->measurement_hex = optarg; break;
		case 'w': o->wrapped_file = optarg; break;
		case 'h': o->secret_sha256 = optarg; break;
		case 'A': o->anchor_url = optarg; break;
		case 'C': o->anchor_ca = optarg; break;
		case 'n': o->n = atol(optarg); break;
		case 'W': o->warmup = atol(optarg); break;
		default: usage(); return 2;
		}
	}
	const char *missing = !o->emu_dir ? "--emulator-dir" : !o->url ? "--url"
		: !o->tenant ? "--tenant" : !o->client_id ? "--client-id"
		: !o->secret_file ? "--client-secret-file" : !o->ca ? "--ca-cert"
		: !o->kid ? "--kid" : !o->store_url ? "--store" : !o->vm ? "--vm"
		: !o->measurement_hex ? "--measurement" : !o->wrapped_file ? "--wrapped-file"
		: !o->secret_sha256 ? "--secret-sha256" : !o->anchor_url ? "--anchor-url"
		: !o->anchor_ca ? "--anchor-ca" : NULL;
	if (missing || o->n < 1 || o->n > 1000000 || o->warmup < 0) {
		fprintf(stderr, "bench-vm-release: %s\n",
			missing ? missing : "--n: expected 1..1000000, --warmup >= 0");
		usage();
		return 2;
	}
	return 0;
}

static void print_row(const char *name, struct stats s)
{
	printf("%-9s p50=%8.2f p90=%8.2f p99=%8.2f max=%8.2f mean=%8.2f ms\n", name, s.p50 * 1e3,
	       s.p90 * 1e3, s.p99 * 1e3, s.max * 1e3, s.mean * 1e3);
}

int main(int argc, char **argv)
{
	struct opts o = { 0 };
	int rc = parse(argc, argv, &o);
	if (rc)
		return rc;
	cvm_log_set_level(CVM_LOG_WARN);
	struct cvm_err err = { 0 };
	_cleanup_store_ struct cvm_store *store = NULL;
	_cleanup_secret_ struct cvm_secret *client_secret = NULL;
	_cleanup_free_ uint8_t *cs = NULL, *wrapped = NULL;
	size_t csl = 0, wl = 0;
	struct guest_in g = { .vm = o.vm, .kid = o.kid };
	struct host h = { .master = -1, .slave_keep = -1, .emu = { .emu_dir = o.emu_dir } };
	int r = cvm_file_read(o.secret_file, 4096, &cs, &csl, &err);
	while (r == 0 && csl && (cs[csl - 1] == '\n' || cs[csl - 1] == '\r'))
		csl--;
	if (r == 0 && !(client_secret = cvm_secret_from(cs, csl)))
		r = cvm_err_nomem(&err);
	if (cs)
		cvm_free_secure(CVM_TAKE(cs), csl);
	if (r == 0)
		r = cvm_file_read(o.wrapped_file, 64 * 1024, &wrapped, &wl, &err);
	while (r == 0 && wl && (wrapped[wl - 1] == '\n' || wrapped[wl - 1] == '\r'))
		wl--;
	if (r == 0)
		wrapped[wl] = 0; /* cvm_file_read leaves room for the terminator */
	g.wrapped = (const char *)wrapped;
	if (r == 0)
		r = cvm_hex_decode_fixed(o.secret_sha256, g.secret_sha256, 32, "--secret-sha256", &err);
	if (r == 0)
		r = cvm_hex_decode_fixed(o.measurement_hex, h.emu.tmpl.measurement, 48,
					 "--measurement", &err);
	if (r == 0)
		r = cvm_store_open(o.store_url, &store, &err);
	struct cvm_vm_orch orch = {
		.store = store, .vm = o.vm, .attest_url = o.url, .kv_url = o.url,
		.tenant = o.tenant, .client_id = o.client_id, .client_secret = client_secret,
		.ca_file = o.ca, .expected_kid = o.kid,
	};
	h.emu.relay = cvm_vm_orch_relay;
	h.emu.relay_ctx = &orch;
	if (r == 0)
		r = host_channel_open(&h, &err);
	if (r < 0) {
		fprintf(stderr, "bench-vm-release: %s\n", err.msg);
		return 1;
	}
	struct cvm_guest_env env;
	cvm_guest_env_default(&env);
	env.emu_port = h.port;
	g.env = &env;

	size_t n = (size_t)o.n, total_runs = n + (size_t)o.warmup;
	double *v[PH_N];
	for (int p = 0; p < PH_N; p++)
		if (!(v[p] = calloc(n, sizeof(double)))) {
			fprintf(stderr, "bench-vm-release: out of memory\n");
			return 1;
		}
	_cleanup_free_ char *anchor_body = NULL;
	double wall0 = now_s();
	for (size_t i = 0; i < total_runs && r == 0; i++) {
		double t[PH_N] = { 0 };
		size_t alen = 0;
		if ((r = vm_restart(store, o.vm, &err)) < 0 ||
		    (r = round_trip(&g, t, &alen, &err)) < 0)
			break;
		if (!anchor_body) {
			/* JSON of the attest body's size; the server does not parse it. */
			if (!(anchor_body = malloc(alen + 1))) {
				r = cvm_err_nomem(&err);
				break;
			}
			memset(anchor_body, 'a', alen);
			memcpy(anchor_body, "{\"a\":\"", 6);
			memcpy(anchor_body + alen - 2, "\"}", 2);
			anchor_body[alen] = 0;
			printf("attest_body_bytes=%zu anchor_post_bytes=%zu\n", alen, alen);
		}
		if ((r = anchor_post(&o, anchor_body, alen, &t[PH_ANCHOR], &err)) < 0)
			break;
		if (i < (size_t)o.warmup)
			continue;
		for (int p = 0; p < PH_N; p++)
			v[p][i - (size_t)o.warmup] = t[p];
	}
	double wall = now_s() - wall0;
	/* Ends the serving thread (EIO on the master) and the VM's run. */
	close(h.slave_keep);
	pthread_join(h.thr, NULL);
	close(h.master);
	if (r < 0) {
		fprintf(stderr, "bench-vm-release: %s\n", err.msg);
		return 1;
	}
	struct stats s[PH_N];
	for (int p = 0; p < PH_N; p++)
		s[p] = summarize(v[p], n);
	printf("round_trips=%zu warmup=%ld wall=%.1fs (incl. untimed state resets and checks)\n", n,
	       o.warmup, wall);
	for (int p = 0; p < PH_N; p++)
		if (p != PH_TOTAL && p != PH_ANCHOR)
			print_row(phase_names[p], s[p]);
	print_row("total", s[PH_TOTAL]);
	print_row("anchor", s[PH_ANCHOR]);
	printf("split_of_mean evidence=%.1f%% attest=%.1f%% release=%.1f%% unwrap=%.1f%% "
	       "(keygen=%.1f%% of the total, inside evidence)\n",
	       100 * s[PH_EVIDENCE].mean / s[PH_TOTAL].mean, 100 * s[PH_ATTEST].mean / s[PH_TOTAL].mean,
	       100 * s[PH_RELEASE].mean / s[PH_TOTAL].mean, 100 * s[PH_UNWRAP].mean / s[PH_TOTAL].mean,
	       100 * s[PH_KEYGEN].mean / s[PH_TOTAL].mean);
	printf("ratio=%.2f round_trip_p50/https_post_p50 (nginx static 200, same body size, "
	       "fresh TLS connection, same client)\n", s[PH_TOTAL].p50 / s[PH_ANCHOR].p50);
	printf("ratio=%.2f round_trip_p99/https_post_p99\n", s[PH_TOTAL].p99 / s[PH_ANCHOR].p99);
	for (int p = 0; p < PH_N; p++)
		free(v[p]);
	return 0;
}
