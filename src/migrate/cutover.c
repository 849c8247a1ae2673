/* SPDX-License-Identifier: Apache-2.0 */
/* Cutover of a server replicated from a running QEMU VM: freeze, final delta, validation,
 * traffic switch, decommission — or rollback to the source when anything fails. */
#include "migrate-internal.h"

#include <spawn.h>
#include <sys/wait.h>
#include <unistd.h>

#include <opencvm/store.h>

static uint64_t now_ms(void) { return cvm_monotonic_ns() / 1000000; }

/* One QMP command on a short-lived connection: QEMU serves one QMP client at a time and the
 * replication pass needs its own. */
static int qmp_once(const char *sock, const char *command, struct cvm_err *err)
{
	FILE *q = NULL;
	int r = mig_qmp_open(sock, &q, err);
	if (r < 0)
		return r;
	r = mig_qmp_cmd(q, json_pack("{s:s}", "execute", command), NULL, err);
	fclose(q);
	return r < 0 ? cvm_err_prefix(err, "source VM: %s", command) : 0;
}

static int run_validator(const char *prog, const char *replica, struct cvm_err *err)
{
	char *argv[] = {(char *)prog, (char *)replica, NULL};
	pid_t pid;
	int r = posix_spawn(&pid, prog, NULL, NULL, argv, environ);
	if (r)
		return cvm_err_set(err, r, "InternalError", "validator %s: %s", prog, strerror(r));
	int st;
	while (waitpid(pid, &st, 0) < 0)
		if (errno != EINTR)
			return cvm_err_internal(err, "waitpid: %s", strerror(errno));
	if (!WIFEXITED(st) || WEXITSTATUS(st) != 0)
		return cvm_err_set(err, ECANCELED, "Conflict", "validator %s rejected the replica "
				   "(exit %d)", prog, WIFEXITED(st) ? WEXITSTATUS(st) : -1);
	return 0;
}

static int validate(const struct cvm_cutover_opts *o, struct cvm_err *err)
{
	struct cvm_assess_report rep;
	int r = cvm_migrate_assess_image(o->replica, &o->assess, &rep, err);
	if (r < 0)
		return cvm_err_prefix(err, "assessing the replica");
	bool bad = rep.verdict == CVM_VERDICT_NOT_READY || strcmp(rep.facts.firmware, "uefi") != 0;
	if (bad)
		r = cvm_err_set(err, ECANCELED, "Conflict", "replica verdict %s, firmware %s (needs "
				"a UEFI disk that is not not-ready)", cvm_verdict_name(rep.verdict),
				rep.facts.firmware);
	cvm_assess_report_clear(&rep);
	if (r == 0 && o->validator)
		r = run_validator(o->validator, o->replica, err);
	if (r == 0 && o->check_target)
		r = o->check_target(o->check_target_ctx, err);
	return r;
}

static int switch_endpoint(const struct cvm_cutover_opts *o, struct cvm_err *err)
{
	if (!o->endpoints)
		return 0;
	uint8_t *buf = NULL;
	size_t len = 0;
	json_t *j = NULL;
	int r = cvm_file_read(o->endpoints, 1u << 20, &buf, &len, err);
	if (r == 0 && !(j = json_loadb((const char *)buf, len, 0, NULL)))
		r = cvm_err_badparam(err, "endpoints %s: not JSON", o->endpoints);
	free(buf);
	if (r == 0 && (!json_is_object(j) || !json_object_get(j, o->name)))
		r = cvm_err_badparam(err, "endpoints %s: no entry '%s'", o->endpoints, o->name);
	char *out = NULL;
	if (r == 0 && (json_object_set_new(j, o->name, json_string(o->target_addr)) < 0 ||
		       !(out = json_dumps(j, JSON_INDENT(2) | JSON_SORT_KEYS))))
		r = cvm_err_nomem(err);
	if (r == 0)
		r = cvm_file_write_atomic(o->endpoints, out, strlen(out), 0644, err);
	free(out);
	json_decref(j);
	return r;
}

int cvm_migrate_cutover(struct cvm_store *s, const struct cvm_cutover_opts *o,
			struct cvm_cutover_result *res, struct cvm_err *err)
{
	if (!o || !res || !o->project || !o->server || !o->repl.qmp || !o->repl.node || !o->replica)
		return cvm_err_badparam(err, "cutover: project, server, the source VM (qmp, node) "
					"and the replica are required");
	if (o->endpoints && (!o->name || !o->target_addr))
		return cvm_err_badparam(err, "cutover: --endpoints needs --name and --target-addr");
	memset(res, 0, sizeof(*res));
	struct cvm_mig_server srv;
	int r = cvm_mig_server_get(s, o->project, o->server, &srv, err);
	if (r < 0)
		return r;
	enum cvm_mig_phase phase = srv.phase;
	cvm_mig_server_clear(&srv);
	if (phase != CVM_MIG_CUTOVER_READY)
		return cvm_err_set(err, EPERM, "Forbidden", "server %s is %s: cutover needs "
				   "cutover-ready (a test migration first)", o->server,
				   cvm_mig_phase_name(phase));

	uint64_t t0 = now_ms();
	if ((r = qmp_once(o->repl.qmp, "stop", err)) < 0)
		return r; /* nothing changed yet */
	res->freeze_ms = now_ms() - t0;
	cvm_log_info("migrate.cutover.freeze", "server=%s ms=%llu", o->server,
		     (unsigned long long)res->freeze_ms);

	struct cvm_err why = {0};
	uint64_t t1 = now_ms();
	int f = cvm_repl_send(&o->repl, &res->sync, &why);
	res->sync_ms = now_ms() - t1;
	if (f == 0) {
		uint64_t t2 = now_ms();
		f = validate(o, &why);
		res->validate_ms = now_ms() - t2;
	}
	if (f == 0) {
		uint64_t t3 = now_ms();
		f = switch_endpoint(o, &why);
		res->switch_ms = now_ms() - t3;
	}
	res->downtime_ms = now_ms() - t0;
	char reason[512];
	if (f < 0) {
		/* Roll back: the source takes the traffic it never lost. */
		snprintf(res->reason, sizeof(res->reason), "%s", why.msg);
		int rr = qmp_once(o->repl.qmp, "cont", err);
		res->downtime_ms = now_ms() - t0;
		snprintf(reason, sizeof(reason), "rollback after %llu ms of downtime: %s",
			 (unsigned long long)res->downtime_ms, why.msg);
		if (rr < 0)
			return cvm_err_prefix(err, "ROLLBACK FAILED (source still paused) after: %s",
					      why.msg);
		if ((rr = cvm_mig_server_transition(s, o->project, o->server, CVM_MIG_ROLLED_BACK,
						    reason, o->principal, err)) < 0)
			return rr;
		res->rolled_back = true;
		cvm_log_warn("migrate.cutover.rollback", "server=%s reason=\"%s\"", o->server, why.msg);
		return cvm_err_set(err, ECANCELED, "Conflict", "cutover rolled back: %s", why.msg);
	}
	snprintf(reason, sizeof(reason), "downtime %llu ms (freeze %llu, final sync %llu: %llu "
		 "blocks, validation %llu, switch %llu)", (unsigned long long)res->downtime_ms,
		 (unsigned long long)res->freeze_ms, (unsigned long long)res->sync_ms,
		 (unsigned long long)res->sync.blocks_sent, (unsigned long long)res->validate_ms,
		 (unsigned long long)res->switch_ms);
	if ((r = cvm_mig_server_transition(s, o->project, o->server, CVM_MIG_CUT_OVER, reason,
					   o->principal, err)) < 0)
		return r;
	res->cut_over = true;
	/* Decommission: the source stops for good; replication has nothing left to do. */
	struct cvm_err qe = {0};
	if (qmp_once(o->repl.qmp, "quit", &qe) < 0)
		cvm_log_warn("migrate.cutover.decommission", "server=%s reason=\"%s\"", o->server, qe.msg);
	return cvm_mig_server_transition(s, o->project, o->server, CVM_MIG_DECOMMISSIONED,
					 "source stopped after cutover", o->principal, err);
}
