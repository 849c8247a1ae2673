/* SPDX-License-Identifier: Apache-2.0 */
/* One boot of one VM: VMGS restore, swtpm, emulated-TEE service, QEMU, VMGS seal. Child
 * processes are started from argv arrays (posix_spawnp), never through a shell. */
#include <opencvm/vm.h>

#include <dirent.h>
#include <fcntl.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <spawn.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

extern char **environ;

/* quiet: stdout to /dev/null (swtpm_setup narrates its progress there). */
static int spawn_q(char **argv, pid_t *pid, bool quiet, struct cvm_err *err)
{
	posix_spawn_file_actions_t fa;
	posix_spawn_file_actions_init(&fa);
	if (quiet)
		posix_spawn_file_actions_addopen(&fa, STDOUT_FILENO, "/dev/null", O_WRONLY, 0);
	int r = posix_spawnp(pid, argv[0], &fa, NULL, argv, environ);
	posix_spawn_file_actions_destroy(&fa);
	if (r != 0)
		return cvm_err_internal(err, "%s: cannot start: %s", argv[0], strerror(r));
	return 0;
}

static int spawn(char **argv, pid_t *pid, struct cvm_err *err)
{
	return spawn_q(argv, pid, false, err);
}

/* Wait for pid up to timeout_ms (<0: forever); 0 and *status when it exited, -ETIMEDOUT. */
static int wait_pid(pid_t pid, int timeout_ms, int *status)
{
	uint64_t end = cvm_monotonic_ns() + (uint64_t)(timeout_ms < 0 ? 0 : timeout_ms) * 1000000;
	for (;;) {
		pid_t w = waitpid(pid, status, timeout_ms < 0 ? 0 : WNOHANG);
		if (w == pid)
			return 0;
		if (w < 0 && errno != EINTR)
			return -errno;
		if (timeout_ms >= 0 && cvm_monotonic_ns() >= end)
			return -ETIMEDOUT;
		if (timeout_ms >= 0) {
			struct timespec ts = { 0, 50 * 1000 * 1000 };
			nanosleep(&ts, NULL);
		}
	}
}

static void stop_pid(pid_t pid)
{
	int st;
	if (pid <= 0 || wait_pid(pid, 0, &st) == 0)
		return;
	kill(pid, SIGTERM);
	if (wait_pid(pid, 5000, &st) == 0)
		return;
	kill(pid, SIGKILL);
	wait_pid(pid, -1, &st);
}

static int wait_socket(const char *path, pid_t owner, int timeout_ms, struct cvm_err *err)
{
	for (int waited = 0; waited < timeout_ms; waited += 50) {
		struct stat st;
		if (stat(path, &st) == 0 && S_ISSOCK(st.st_mode))
			return 0;
		int status;
		if (waitpid(owner, &status, WNOHANG) == owner)
			return cvm_err_internal(err, "swtpm exited before creating %s", path);
		struct timespec ts = { 0, 50 * 1000 * 1000 };
		nanosleep(&ts, NULL);
	}
	return cvm_err_internal(err, "%s did not appear within %d ms", path, timeout_ms);
}

static int run_sync(char **argv, struct cvm_err *err)
{
	pid_t pid;
	int st, r = spawn_q(argv, &pid, true, err);
	if (r < 0)
		return r;
	if ((r = wait_pid(pid, 60000, &st)) < 0) {
		stop_pid(pid);
		return cvm_err_internal(err, "%s: did not finish within 60 s", argv[0]);
	}
	if (!WIFEXITED(st) || WEXITSTATUS(st) != 0)
		return cvm_err_internal(err, "%s: exit status %d", argv[0],
					WIFEXITED(st) ? WEXITSTATUS(st) : -1);
	return 0;
}

static int copy_file(const char *src, const char *dst, struct cvm_err *err)
{
	_cleanup_free_ uint8_t *d = NULL;
	size_t l = 0;
	int r = cvm_file_read(src, 64u * 1024 * 1024, &d, &l, err);
	return r < 0 ? r : cvm_file_write_atomic(dst, d, l, 0600, err);
}

/* Remove the plaintext vTPM state and VARS; the sealed VMGS is the only copy at rest. */
static void wipe_dir(const char *dir)
{
	DIR *d = opendir(dir);
	if (!d)
		return;
	struct dirent *e;
	while ((e = readdir(d))) {
		if (strcmp(e->d_name, ".") == 0 || strcmp(e->d_name, "..") == 0)
			continue; /* swtpm's .lock is state too */
		_cleanup_free_ char *p = cvm_path_join(dir, e->d_name);
		if (!p)
			continue;
		int fd = open(p, O_WRONLY | O_CLOEXEC | O_NOFOLLOW);
		struct stat st;
		if (fd >= 0 && fstat(fd, &st) == 0 && S_ISREG(st.st_mode)) {
			static const uint8_t zero[4096];
			for (off_t o = 0; o < st.st_size; o += (off_t)sizeof(zero))
				if (write(fd, zero, sizeof(zero)) < 0)
					break;
			fsync(fd);
		}
		if (fd >= 0)
			close(fd);
		unlink(p);
	}
	closedir(d);
	rmdir(dir);
}

/* ---- emulated TEE service thread --------------------------------------------------------- */

struct tee_srv {
	const struct cvm_vm_tee_emu *emu;
	int lfd;
	int stop_pipe[2];
	pthread_t thr;
	bool started;
};

static void *tee_thread(void *arg)
{
	struct tee_srv *s = arg;
	for (;;) {
		struct pollfd p[2] = { { .fd = s->lfd, .events = POLLIN },
				       { .fd = s->stop_pipe[0], .events = POLLIN } };
		if (poll(p, 2, -1) < 0) {
			if (errno == EINTR)
				continue;
			break;
		}
		if (p[1].revents)
			break;
		int fd = accept4(s->lfd, NULL, NULL, SOCK_CLOEXEC);
		if (fd < 0)
			continue;
		/* QEMU holds one connection for the VM's lifetime; serve it until it closes or
		 * the stop pipe fires (the serve loop ends when QEMU exits and the fd hits EOF). */
		struct cvm_err err = { 0 };
		if (cvm_vm_tee_emu_serve(s->emu, fd, &err) < 0)
			cvm_log_warn("tee_emu_serve", "reason=\"%s\"", err.msg);
		close(fd);
	}
	return NULL;
}

static int tee_start(struct tee_srv *s, const char *path, struct cvm_err *err)
{
	struct sockaddr_un a = { .sun_family = AF_UNIX };
	if (strlen(path) >= sizeof(a.sun_path))
		return cvm_err_badparam(err, "tee socket path too long: %s", path);
	strcpy(a.sun_path, path);
	unlink(path);
	s->lfd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (s->lfd < 0 || bind(s->lfd, (struct sockaddr *)&a, sizeof(a)) < 0 ||
	    listen(s->lfd, 1) < 0 || pipe2(s->stop_pipe, O_CLOEXEC) < 0)
		return cvm_err_internal(err, "tee socket %s: %s", path, strerror(errno));
	if (pthread_create(&s->thr, NULL, tee_thread, s) != 0)
		return cvm_err_internal(err, "tee thread: cannot start");
	s->started = true;
	return 0;
}

static void tee_stop(struct tee_srv *s)
{
	if (s->started) {
		if (write(s->stop_pipe[1], "x", 1) < 0)
			cvm_log_warn("tee_emu_stop", "reason=\"%s\"", strerror(errno));
		pthread_join(s->thr, NULL);
	}
	if (s->lfd > 0)
		close(s->lfd);
	if (s->stop_pipe[0] > 0) {
		close(s->stop_pipe[0]);
		close(s->stop_pipe[1]);
	}
}

/* ---- one boot ---------------------------------------------------------------------------- */

struct paths {
	char *tpm, *vars, *swtpm_sock, *tee_sock, *qmp, *console, *vmgs, *swtpm_log, *temp;
};

/* A new, empty (sparse) file each boot: nothing of an earlier boot's temp disk survives. */
static int fresh_temp_disk(const char *path, uint64_t bytes, struct cvm_err *err)
{
	unlink(path);
	int fd = open(path, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
	if (fd < 0)
		return cvm_err_internal(err, "temp disk %s: %s", path, strerror(errno));
	int r = ftruncate(fd, (off_t)bytes) < 0
			? cvm_err_internal(err, "temp disk %s: %s", path, strerror(errno))
			: 0;
	close(fd);
	return r;
}

static void paths_free(struct paths *p)
{
	free(p->tpm);
	free(p->vars);
	free(p->swtpm_sock);
	free(p->tee_sock);
	free(p->qmp);
	free(p->console);
	free(p->vmgs);
	free(p->swtpm_log);
	free(p->temp);
}

int cvm_vm_run(const struct cvm_vm_run_config *c, int *qemu_status, struct cvm_err *err)
{
	*qemu_status = -1;
	if (!c->vmgs_key || c->vmgs_key->len != 32)
		return cvm_err_badparam(err, "run: the VMGS key must be 32 bytes");
	if (c->launch.tee == CVM_VM_TEE_EMULATED && !c->tee_emu)
		return cvm_err_badparam(err, "run: the emulated TEE needs its emulator");
	struct paths p = {
		.tpm = cvm_path_join(c->run_dir, "tpm"),
		.vars = cvm_path_join(c->run_dir, "OVMF_VARS.fd"),
		.swtpm_sock = cvm_path_join(c->run_dir, "swtpm.sock"),
		.tee_sock = cvm_path_join(c->run_dir, "tee.sock"),
		.qmp = cvm_path_join(c->run_dir, "qmp.sock"),
		.console = cvm_path_join(c->vm_dir, "console.log"),
		.vmgs = cvm_path_join(c->vm_dir, "vmgs.bin"),
		.swtpm_log = cvm_path_join(c->run_dir, "swtpm.log"),
		.temp = c->temp_disk_bytes ? cvm_path_join(c->run_dir, "temp.img") : NULL,
	};
	int r = 0;
	if (!p.tpm || !p.vars || !p.swtpm_sock || !p.tee_sock || !p.qmp || !p.console ||
	    !p.vmgs || !p.swtpm_log || (c->temp_disk_bytes && !p.temp))
		r = cvm_err_nomem(err);
	if (r == 0 && ((r = cvm_mkdir_p(c->vm_dir, 0700, err)) < 0 ||
		       (r = cvm_mkdir_p(c->run_dir, 0700, err)) < 0))
		goto out;
	if (r < 0)
		goto out;
	bool first_boot = access(p.vmgs, F_OK) != 0;
	if (first_boot) {
		char **setup = NULL;
		if ((r = cvm_mkdir_p(p.tpm, 0700, err)) < 0 ||
		    (r = copy_file(c->ovmf_vars_template, p.vars, err)) < 0 ||
		    (r = cvm_vm_swtpm_setup_argv(c->swtpm_setup, p.tpm, &setup, err)) < 0)
			goto out;
		r = run_sync(setup, err);
		cvm_argv_free(setup);
		if (r < 0)
			goto out;
	} else if ((r = cvm_vmgs_unseal(p.vmgs, c->launch.name, c->vmgs_key, p.tpm, p.vars,
					err)) < 0) {
		goto out;
	}

	struct tee_srv tee = { .emu = c->tee_emu };
	pid_t swtpm_pid = -1, qemu_pid = -1;
	char **sw = NULL, **qa = NULL;
	struct cvm_vm_launch l = c->launch;
	if (p.temp && (r = fresh_temp_disk(p.temp, c->temp_disk_bytes, err)) < 0)
		goto stop;
	l.temp_disk = p.temp;
	l.ovmf_vars = l.tee == CVM_VM_TEE_SEV_SNP || l.tee == CVM_VM_TEE_TDX ? NULL : p.vars;
	l.swtpm_sock = p.swtpm_sock;
	l.tee_sock = l.tee == CVM_VM_TEE_EMULATED ? p.tee_sock : NULL;
	l.serial_log = p.console;
	l.qmp_sock = p.qmp;
	unlink(p.swtpm_sock);
	if ((r = cvm_vm_qemu_argv(&l, &qa, err)) < 0 ||
	    (r = cvm_vm_swtpm_argv(c->swtpm, p.tpm, p.swtpm_sock, p.swtpm_log, NULL, &sw, err)) < 0)
		goto stop;
	if (l.tee == CVM_VM_TEE_EMULATED && (r = tee_start(&tee, p.tee_sock, err)) < 0)
		goto stop;
	if ((r = spawn(sw, &swtpm_pid, err)) < 0 ||
	    (r = wait_socket(p.swtpm_sock, swtpm_pid, 5000, err)) < 0 ||
	    (r = spawn(qa, &qemu_pid, err)) < 0)
		goto stop;
	cvm_log_info("vm_boot", "vm=%s qemu_pid=%d swtpm_pid=%d first_boot=%d", l.name,
		     (int)qemu_pid, (int)swtpm_pid, first_boot);
	int st = 0;
	r = wait_pid(qemu_pid, c->timeout_s > 0 ? c->timeout_s * 1000 : -1, &st);
	if (r == -ETIMEDOUT) {
		stop_pid(qemu_pid);
		*qemu_status = -1;
		r = 0;
		cvm_log_warn("vm_timeout", "vm=%s seconds=%d", l.name, c->timeout_s);
	} else if (r == 0) {
		*qemu_status = st;
	} else {
		r = cvm_err_internal(err, "waiting for QEMU: %s", strerror(-r));
	}
	qemu_pid = -1;
stop:
	stop_pid(qemu_pid);
	/* swtpm --terminate exits when QEMU's connection closes */
	stop_pid(swtpm_pid);
	tee_stop(&tee);
	cvm_argv_free(sw);
	cvm_argv_free(qa);
	if (access(p.tpm, F_OK) == 0) {
		struct cvm_err e2 = { 0 };
		int s = cvm_vmgs_seal(p.tpm, p.vars, c->launch.name, c->vmgs_key, p.vmgs, &e2);
		if (s < 0 && r == 0) {
			*err = e2;
			r = s;
		}
	}
out:
	if (p.tpm)
		wipe_dir(p.tpm);
	if (p.vars)
		unlink(p.vars);
	if (p.tee_sock)
		unlink(p.tee_sock);
	if (p.swtpm_log)
		unlink(p.swtpm_log);
	if (p.temp)
		unlink(p.temp);
	rmdir(c->run_dir);
	paths_free(&p);
	return r;
}
