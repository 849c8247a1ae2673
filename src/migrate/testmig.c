/* SPDX-License-Identifier: Apache-2.0 */
/* Test migration: boot the replica in a network namespace made for the test, check it, record
 * the outcome, clean up. */
#include "migrate-internal.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <poll.h>
#include <regex.h>
#include <sched.h>
#include <signal.h>
#include <sys/socket.h>
#include <spawn.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <opencvm/store.h>

static void check(struct cvm_testmig_result *r, const char *name, bool ok, const char *fmt, ...)
	CVM_PRINTF(4, 5);
static void check(struct cvm_testmig_result *r, const char *name, bool ok, const char *fmt, ...)
{
	if (r->n >= CVM_ARRAY_SIZE(r->checks))
		return;
	struct cvm_testmig_check *c = &r->checks[r->n++];
	snprintf(c->name, sizeof(c->name), "%s", name);
	c->ok = ok;
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(c->detail, sizeof(c->detail), fmt, ap);
	va_end(ap);
}

/* Run argv with output to /dev/null (or to out_path); wait when wait_pid is NULL. */
static int spawn(char *const argv[], const char *out_path, pid_t *bg, struct cvm_err *err)
{
	posix_spawn_file_actions_t fa;
	posix_spawn_file_actions_init(&fa);
	posix_spawn_file_actions_addopen(&fa, STDOUT_FILENO, out_path ? out_path : "/dev/null",
					 O_WRONLY | O_CREAT | O_TRUNC, 0600);
	posix_spawn_file_actions_addopen(&fa, STDERR_FILENO, "/dev/null", O_WRONLY, 0);
	pid_t pid;
	int r = posix_spawnp(&pid, argv[0], &fa, NULL, argv, environ);
	posix_spawn_file_actions_destroy(&fa);
	if (r)
		return cvm_err_set(err, r, "InternalError", "%s: %s", argv[0], strerror(r));
	if (bg) {
		*bg = pid;
		return 0;
	}
	int st;
	while (waitpid(pid, &st, 0) < 0)
		if (errno != EINTR)
			return cvm_err_internal(err, "waitpid: %s", strerror(errno));
	if (!WIFEXITED(st) || WEXITSTATUS(st) != 0)
		return cvm_err_internal(err, "%s %s exited with status %d", argv[0], argv[1] ? argv[1] : "",
					WIFEXITED(st) ? WEXITSTATUS(st) : -1);
	return 0;
}

static bool file_matches(const char *path, const regex_t *re)
{
	uint8_t *buf = NULL;
	size_t len = 0;
	struct cvm_err e = {0};
	if (cvm_file_read(path, 16u << 20, &buf, &len, &e) < 0)
		return false;
	/* Console output may hold NULs and escape codes; match line by line on the text. */
	for (size_t i = 0; i < len; i++)
		if (buf[i] == 0)
			buf[i] = ' ';
	bool m = regexec(re, (const char *)buf, 0, NULL, 0) == 0;
	free(buf);
	return m;
}

/* Connect to the forwarded port from inside the namespace and require a reply: user-mode
 * networking accepts the connection on its side before the guest does, so only bytes coming
 * back prove a service in the guest answers. Runs in a child that joins the namespace. */
static bool probe_service(const char *ns, uint16_t port)
{
	pid_t pid = fork();
	if (pid < 0)
		return false;
	if (pid == 0) {
		char path[96];
		snprintf(path, sizeof(path), "/run/netns/%s", ns);
		int nfd = open(path, O_RDONLY | O_CLOEXEC);
		if (nfd < 0 || setns(nfd, CLONE_NEWNET) < 0)
			_exit(2);
		int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
		struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons(port),
					.sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
		if (fd < 0 || connect(fd, (struct sockaddr *)&a, sizeof(a)) < 0)
			_exit(1);
		static const char req[] = "GET / HTTP/1.0\r\n\r\n";
		if (write(fd, req, sizeof(req) - 1) < 0)
			_exit(1);
		struct pollfd p = {.fd = fd, .events = POLLIN};
		char b[64];
		_exit(poll(&p, 1, 3000) == 1 && read(fd, b, sizeof(b)) > 0 ? 0 : 1);
	}
	int st;
	while (waitpid(pid, &st, 0) < 0)
		if (errno != EINTR)
			return false;
	return WIFEXITED(st) && WEXITSTATUS(st) == 0;
}

static void sleep_ms(unsigned ms)
{
	struct timespec ts = {ms / 1000, (long)(ms % 1000) * 1000000L};
	nanosleep(&ts, NULL);
}

struct run {
	char ns[48], dir[64], vars[96], serial[96];
	pid_t qemu;
	bool ns_made;
};

static void cleanup(struct run *u)
{
	if (u->qemu > 0) {
		kill(u->qemu, SIGTERM);
		for (int i = 0; i < 50 && waitpid(u->qemu, NULL, WNOHANG) == 0; i++)
			sleep_ms(100);
		kill(u->qemu, SIGKILL);
		waitpid(u->qemu, NULL, 0);
	}
	if (u->ns_made) {
		struct cvm_err e = {0};
		char *argv[] = {"ip", "netns", "del", u->ns, NULL};
		spawn(argv, NULL, NULL, &e);
	}
	if (u->vars[0])
		unlink(u->vars);
	if (u->serial[0])
		unlink(u->serial);
	if (u->dir[0])
		rmdir(u->dir);
}

static int boot_and_check(const struct cvm_testmig_opts *o, struct run *u,
			  struct cvm_testmig_result *res, struct cvm_err *err)
{
	const char *tmpd = getenv("TMPDIR");
	snprintf(u->dir, sizeof(u->dir), "%s/cvm-test-XXXXXX", tmpd && strlen(tmpd) < 40 ? tmpd : "/tmp");
	if (!mkdtemp(u->dir)) {
		u->dir[0] = 0;
		return cvm_err_internal(err, "test: temporary directory: %s", strerror(errno));
	}
	snprintf(u->vars, sizeof(u->vars), "%s/vars.fd", u->dir);
	snprintf(u->serial, sizeof(u->serial), "%s/serial.log", u->dir);
	uint8_t *vars = NULL;
	size_t vl = 0;
	int r = cvm_file_read(o->ovmf_vars, 64u << 20, &vars, &vl, err);
	if (r == 0)
		r = cvm_file_write_atomic(u->vars, vars, vl, 0600, err);
	free(vars);
	if (r < 0)
		return r;
	snprintf(u->ns, sizeof(u->ns), "cvm-test-%d", (int)getpid());
	char *add[] = {"ip", "netns", "add", u->ns, NULL};
	if ((r = spawn(add, NULL, NULL, err)) < 0)
		return cvm_err_prefix(err, "test: network namespace");
	u->ns_made = true;
	char *lo[] = {"ip", "-n", u->ns, "link", "set", "lo", "up", NULL};
	if ((r = spawn(lo, NULL, NULL, err)) < 0)
		return r;
	char routes[96];
	snprintf(routes, sizeof(routes), "%s/routes", u->dir);
	char *rt[] = {"ip", "-n", u->ns, "route", "show", "default", NULL};
	uint8_t *rb = NULL;
	size_t rl = 0;
	struct cvm_err e = {0};
	bool isolated = spawn(rt, routes, NULL, &e) == 0 && cvm_file_read(routes, 4096, &rb, &rl, &e) == 0 && rl == 0;
	free(rb);
	unlink(routes);
	check(res, "isolated", isolated, "%s", isolated ? "namespace with loopback only, no route out" :
						      "the namespace has a default route");

	char pflash0[256], pflash1[160], drive[320], net[96], serial[112];
	snprintf(pflash0, sizeof(pflash0), "if=pflash,format=raw,unit=0,readonly=on,file=%s", o->ovmf_code);
	snprintf(pflash1, sizeof(pflash1), "if=pflash,format=raw,unit=1,file=%s", u->vars);
	snprintf(drive, sizeof(drive), "file=%s,format=raw,if=virtio,snapshot=on", o->replica);
	uint16_t hp = (uint16_t)(20000 + getpid() % 20000);
	if (o->service_port)
		snprintf(net, sizeof(net), "user,id=n0,restrict=on,hostfwd=tcp:127.0.0.1:%u-:%u", hp,
			 o->service_port);
	else
		snprintf(net, sizeof(net), "user,id=n0,restrict=on");
	snprintf(serial, sizeof(serial), "file:%s", u->serial);
	char *qa[40];
	size_t k = 0;
	char *base[] = {"ip", "netns", "exec", u->ns, "qemu-system-x86_64", "-accel", "tcg", "-cpu",
			"max", "-m", "1024", "-smp", "1", "-machine",
			o->secure_boot ? "q35,smm=on" : "q35", "-display", "none", "-no-reboot",
			"-drive", pflash0, "-drive", pflash1, "-drive", drive, "-netdev", net,
			"-device", "virtio-net-pci,netdev=n0", "-serial", serial};
	for (size_t i = 0; i < CVM_ARRAY_SIZE(base); i++)
		qa[k++] = base[i];
	if (o->secure_boot) {
		qa[k++] = "-global";
		qa[k++] = "driver=cfi.pflash01,property=secure,value=on";
	}
	qa[k] = NULL;
	uint64_t t0 = cvm_monotonic_ns();
	if ((r = spawn(qa, NULL, &u->qemu, err)) < 0)
		return r;

	regex_t re, sb;
	if (regcomp(&re, o->expect ? o->expect : "login:|Reached target", REG_EXTENDED | REG_NOSUB))
		return cvm_err_badparam(err, "expect: not a valid extended regular expression");
	regcomp(&sb, "Secure boot enabled", REG_NOSUB);
	unsigned timeout = o->timeout_s ? o->timeout_s : 600;
	bool booted = false, exited = false;
	while (!booted && !exited && (cvm_monotonic_ns() - t0) / 1000000000ull < timeout) {
		sleep_ms(500);
		booted = file_matches(u->serial, &re);
		exited = waitpid(u->qemu, NULL, WNOHANG) == u->qemu;
	}
	if (exited)
		u->qemu = 0;
	booted = booted || file_matches(u->serial, &re);
	res->boot_ms = (cvm_monotonic_ns() - t0) / 1000000;
	check(res, "boots", booted, booted ? "console matched after %llu ms" :
		  "console did not match within %llu ms", (unsigned long long)res->boot_ms);
	if (o->secure_boot) {
		bool on = file_matches(u->serial, &sb);
		check(res, "secure-boot", on, "%s", on ? "kernel reports Secure Boot enabled" :
							  "no 'Secure boot enabled' from the kernel");
	}
	regfree(&re);
	regfree(&sb);
	if (o->service_port) {
		bool up = false;
		for (int i = 0; i < 30 && !up && booted; i++) {
			up = probe_service(u->ns, hp);
			if (!up)
				sleep_ms(1000);
		}
		check(res, "service", up, up ? "guest port %u answered a request from inside the "
			  "namespace" : "guest port %u did not answer", o->service_port);
	}
	return 0;
}

int cvm_migrate_test(struct cvm_store *s, const struct cvm_testmig_opts *o,
		     struct cvm_testmig_result *res, struct cvm_err *err)
{
	if (!o || !res || !o->project || !o->server || !o->replica || !o->ovmf_code || !o->ovmf_vars)
		return cvm_err_badparam(err, "test: project, server, replica and firmware are required");
	memset(res, 0, sizeof(*res));
	struct cvm_mig_server srv;
	int r = cvm_mig_server_get(s, o->project, o->server, &srv, err);
	if (r < 0)
		return r;
	enum cvm_mig_phase phase = srv.phase;
	cvm_mig_server_clear(&srv);
	if (phase != CVM_MIG_REPLICATING)
		return cvm_err_set(err, EPERM, "Forbidden", "server %s is %s: a test migration needs "
				   "a replicating server", o->server, cvm_mig_phase_name(phase));
	struct cvm_assess_report rep;
	if ((r = cvm_migrate_assess_image(o->replica, NULL, &rep, err)) < 0)
		return cvm_err_prefix(err, "test: assessing the replica");
	for (size_t i = 0; i < rep.n; i++) {
		const struct cvm_finding *f = &rep.findings[i];
		if (strcmp(f->check, "fstab-device-names") == 0)
			check(res, "fstab-by-uuid", f->status == CVM_CHECK_PASS, "%s", f->detail);
		else if (strcmp(f->check, "firmware") == 0)
			check(res, "firmware", f->status == CVM_CHECK_PASS, "%s", f->detail);
	}
	cvm_assess_report_clear(&rep);
	struct run u = {0};
	r = boot_and_check(o, &u, res, err);
	cleanup(&u);
	if (r < 0)
		return r;
	res->passed = true;
	char failed[256] = "";
	size_t fl = 0;
	for (size_t i = 0; i < res->n; i++)
		if (!res->checks[i].ok) {
			res->passed = false;
			fl += (size_t)snprintf(failed + fl, fl < sizeof(failed) ? sizeof(failed) - fl : 0,
					       "%s%s", fl ? ", " : "", res->checks[i].name);
		}
	char reason[384];
	if (res->passed)
		snprintf(reason, sizeof(reason), "test migration passed: %zu checks, booted in %llu ms",
			 res->n, (unsigned long long)res->boot_ms);
	else
		snprintf(reason, sizeof(reason), "test migration failed: %s", failed);
	return cvm_mig_server_transition(s, o->project, o->server,
					 res->passed ? CVM_MIG_TEST_MIGRATED : CVM_MIG_FAILED, reason,
					 o->principal, err);
}
