/* SPDX-License-Identifier: Apache-2.0 */
/* cvm migrate ...: offline readiness assessment of a disk image and MBR->GPT conversion.
 * Both work on files only; neither needs cvmd. */
#include "cli.h"

#include <opencvm/migrate.h>
#include <opencvm/store.h>
#include <string.h>
#include <unistd.h>

static void print_report(const struct cvm_assess_report *r, const char *image)
{
	const struct cvm_assess_facts *f = &r->facts;
	printf("image:     %s (%s, %llu MiB)\n", image, f->format,
	       (unsigned long long)(f->disk_bytes >> 20));
	printf("table:     %s, firmware %s\n", cvm_pt_kind_name(f->table), f->firmware);
	if (f->os_id[0])
		printf("os:        %s, kernel %s\n", f->os_pretty, f->kernel[0] ? f->kernel : "?");
	printf("verdict:   %s\n\n", cvm_verdict_name(r->verdict));
	printf("%-20s %-6s %s\n", "CHECK", "STATUS", "DETAIL");
	for (size_t i = 0; i < r->n; i++) {
		const struct cvm_finding *x = &r->findings[i];
		printf("%-20s %-6s %s\n", x->check, cvm_check_status_name(x->status), x->detail);
		if (x->remediation[0])
			printf("%-20s %-6s -> %s\n", "", "", x->remediation);
	}
}

static int migrate_assess(struct cli *cli, int argc, char **argv)
{
	const char *usage = "migrate assess --image FILE [--max-os-disk-gib N] [--json]";
	const char *image = NULL, *max = NULL;
	const struct cli_opt opts[] = {{"--image", true, &image, NULL, NULL},
				       {"--max-os-disk-gib", true, &max, NULL, NULL}};
	int rc = cli_parse(argc, argv, opts, CVM_ARRAY_SIZE(opts), NULL, 0, 0, NULL, usage);
	if (rc)
		return rc;
	if (!image)
		return cli_usage_error(usage, "--image is required");
	struct cvm_err err = {0};
	struct cvm_assess_opts ao = {0};
	if (max) {
		int64_t gib;
		if (cvm_parse_i64(max, 1, 1 << 20, &gib, "--max-os-disk-gib", &err) < 0)
			return cli_usage_error(usage, "%s", err.msg);
		ao.max_os_disk = (uint64_t)gib << 30;
	}
	struct cvm_assess_report rep;
	if (cvm_migrate_assess_image(image, &ao, &rep, &err) < 0)
		return cli_fail(&err, "migrate assess");
	if (cli->json) {
		_cleanup_free_ char *js = NULL;
		if (cvm_assess_report_json(&rep, image, &js, &err) < 0) {
			cvm_assess_report_clear(&rep);
			return cli_fail(&err, "migrate assess");
		}
		printf("%s\n", js);
	} else {
		print_report(&rep, image);
	}
	cvm_assess_report_clear(&rep);
	return CLI_OK;
}

static int migrate_mbr2gpt(struct cli *cli, int argc, char **argv)
{
	const char *usage = "migrate mbr2gpt --in IMG --out IMG [--grow] [--no-fstab] [--dry-run] [--json]";
	const char *in = NULL, *out = NULL;
	bool grow = false, no_fstab = false, dry = false;
	const struct cli_opt opts[] = {{"--in", true, &in, NULL, NULL},
				       {"--out", true, &out, NULL, NULL},
				       {"--grow", false, NULL, &grow, NULL},
				       {"--no-fstab", false, NULL, &no_fstab, NULL},
				       {"--dry-run", false, NULL, &dry, NULL}};
	int rc = cli_parse(argc, argv, opts, CVM_ARRAY_SIZE(opts), NULL, 0, 0, NULL, usage);
	if (rc)
		return rc;
	if (!in || !out)
		return cli_usage_error(usage, "--in and --out are required");
	struct cvm_mbr2gpt_opts o;
	cvm_mbr2gpt_opts_init(&o);
	o.grow = grow;
	o.rewrite_fstab = !no_fstab;
	o.dry_run = dry;
	struct cvm_mbr2gpt_result res;
	struct cvm_err err = {0};
	int r = cvm_mbr2gpt(in, out, &o, &res, &err);
	if (cli->json) {
		json_t *j = json_pack("{s:b,s:s,s:I,s:i,s:I,s:I,s:i,s:i,s:i,s:b,s:b}", "ok", r == 0, "plan",
				      res.plan, "out_bytes", (json_int_t)res.out_bytes, "esp_partition",
				      (int)res.esp_number, "esp_start_lba", (json_int_t)res.esp_start_lba,
				      "esp_sectors", (json_int_t)res.esp_nsectors, "fstab_rewritten",
				      (int)res.fstab_rewritten, "cmdline_rewritten",
				      (int)res.cmdline_rewritten, "fstab_partition", res.fstab_part,
				      "checksums_equal", res.checksums_equal, "bootloader_installed",
				      res.bootloader_installed);
		if (j && r < 0) {
			json_object_set_new(j, "code", json_string(err.code));
			json_object_set_new(j, "reason", json_string(err.msg));
		}
		if (j)
			cli_print_json(j);
		json_decref(j);
	} else if (res.plan[0]) {
		fputs(res.plan, stdout);
	}
	if (r < 0)
		return cli_fail(&err, "migrate mbr2gpt");
	if (!cli->json)
		printf("%s: %s\n", dry ? "plan only, nothing written" : "converted", out);
	return CLI_OK;
}

/* ---- replicate ---------------------------------------------------------------------------- */
static void repl_progress(void *ctx, uint64_t block, uint64_t nblocks, const struct cvm_repl_stats *st)
{
	(void)ctx;
	double pct = nblocks ? 100.0 * (double)block / (double)nblocks : 100.0;
	fprintf(stderr, "\r[%-40.*s] %5.1f%%  %llu MiB of changed blocks sent  %.1f s ",
		(int)(pct * 0.4), "########################################", pct,
		(unsigned long long)(st->bytes_changed >> 20), (double)st->elapsed_ms / 1000.0);
	fflush(stderr);
}

static json_t *stats_json(const struct cvm_repl_stats *st)
{
	return json_pack("{s:I,s:I,s:b,s:I,s:I,s:I,s:I,s:I,s:I,s:b,s:I,s:I}", "blocks_total",
			 (json_int_t)st->blocks_total, "blocks_read", (json_int_t)st->blocks_read,
			 "dirty_bitmap", st->dirty_bitmap, "blocks_sent", (json_int_t)st->blocks_sent,
			 "blocks_zero_skipped", (json_int_t)st->blocks_zero_skipped, "bytes_changed",
			 (json_int_t)st->bytes_changed, "bytes_payload", (json_int_t)st->bytes_payload,
			 "bytes_wire", (json_int_t)st->bytes_wire, "resumed_from",
			 (json_int_t)st->resumed_from, "manifest_fetched", st->manifest_fetched,
			 "pass", (json_int_t)st->pass, "elapsed_ms", (json_int_t)st->elapsed_ms);
}

static int repl_send(struct cli *cli, int argc, char **argv)
{
	const char *usage = "migrate replicate send (--image IMG | --qmp SOCKET --node NODE) "
			    "--state FILE --connect HOST:PORT "
			    "--cert PEM --key PEM --ca PEM [--peer-name NAME] [--block-size N] "
			    "[--no-compress] [--json]";
	const char *bs = NULL;
	bool nocomp = false;
	struct cvm_repl_send_opts o = {0};
	const struct cli_opt opts[] = {{"--image", true, &o.image, NULL, NULL},
				       {"--qmp", true, &o.qmp, NULL, NULL},
				       {"--node", true, &o.node, NULL, NULL},
				       {"--state", true, &o.state, NULL, NULL},
				       {"--connect", true, &o.connect, NULL, NULL},
				       {"--cert", true, &o.tls.cert, NULL, NULL},
				       {"--key", true, &o.tls.key, NULL, NULL},
				       {"--ca", true, &o.tls.ca, NULL, NULL},
				       {"--peer-name", true, &o.tls.peer_name, NULL, NULL},
				       {"--block-size", true, &bs, NULL, NULL},
				       {"--no-compress", false, NULL, &nocomp, NULL}};
	int rc = cli_parse(argc, argv, opts, CVM_ARRAY_SIZE(opts), NULL, 0, 0, NULL, usage);
	if (rc)
		return rc;
	if (!o.image == !o.qmp || (o.qmp && !o.node) || !o.state || !o.connect)
		return cli_usage_error(usage, "--image IMG or --qmp SOCKET --node NODE, and --state and "
				       "--connect are required");
	struct cvm_err err = {0};
	if (bs) {
		int64_t v;
		if (cvm_parse_i64(bs, CVM_REPL_MIN_BLOCK, CVM_REPL_MAX_BLOCK, &v, "--block-size", &err) < 0)
			return cli_usage_error(usage, "%s", err.msg);
		o.block_size = (uint32_t)v;
	}
	o.zstd_level = nocomp ? -1 : 0;
	if (!cli->json && isatty(STDERR_FILENO))
		o.progress = repl_progress;
	struct cvm_repl_stats st;
	int r = cvm_repl_send(&o, &st, &err);
	if (o.progress)
		fputc('\n', stderr);
	if (r < 0)
		return cli_fail(&err, "migrate replicate send");
	if (cli->json) {
		json_t *j = stats_json(&st);
		cli_print_json(j);
		json_decref(j);
	} else {
		printf("pass %llu complete: %llu of %llu blocks sent (%llu MiB changed, %llu bytes on "
		       "the wire) in %.1f s%s\n", (unsigned long long)st.pass,
		       (unsigned long long)st.blocks_sent, (unsigned long long)st.blocks_total,
		       (unsigned long long)(st.bytes_changed >> 20), (unsigned long long)st.bytes_wire,
		       (double)st.elapsed_ms / 1000.0,
		       st.resumed_from ? " (resumed)" : "");
	}
	return CLI_OK;
}

static int repl_serve(struct cli *cli, int argc, char **argv)
{
	const char *usage = "migrate replicate serve (--target IMG | --confidential-disk PATH) "
			    "--state FILE --listen HOST:PORT --cert PEM --key PEM --ca PEM "
			    "[--peer-name NAME] [--sessions N] [--ready-file FILE]";
	const char *sessions = NULL;
	struct cvm_repl_serve_opts o = {0};
	const struct cli_opt opts[] = {{"--target", true, &o.target, NULL, NULL},
				       {"--confidential-disk", true, &o.confidential_disk, NULL, NULL},
				       {"--state", true, &o.state, NULL, NULL},
				       {"--listen", true, &o.listen, NULL, NULL},
				       {"--cert", true, &o.tls.cert, NULL, NULL},
				       {"--key", true, &o.tls.key, NULL, NULL},
				       {"--ca", true, &o.tls.ca, NULL, NULL},
				       {"--peer-name", true, &o.tls.peer_name, NULL, NULL},
				       {"--sessions", true, &sessions, NULL, NULL},
				       {"--ready-file", true, &o.ready_file, NULL, NULL}};
	int rc = cli_parse(argc, argv, opts, CVM_ARRAY_SIZE(opts), NULL, 0, 0, NULL, usage);
	if (rc)
		return rc;
	if (!o.target == !o.confidential_disk || !o.state || !o.listen)
		return cli_usage_error(usage, "one of --target and --confidential-disk, --state and "
				       "--listen are required");
	struct cvm_err err = {0};
	if (sessions) {
		int64_t v;
		if (cvm_parse_i64(sessions, 0, 1000000, &v, "--sessions", &err) < 0)
			return cli_usage_error(usage, "%s", err.msg);
		o.sessions = (unsigned)v;
	}
	/* The disk's secret comes from the key service (the caller must be allowed to unwrap with
	 * its DES key); the target then only ever writes ciphertext. */
	_cleanup_secret_ struct cvm_secret *secret = NULL;
	if (o.confidential_disk) {
		if (cli_disk_unlock(cli, o.confidential_disk, &secret, &err) < 0)
			return cli_fail(&err, "migrate replicate serve");
		o.disk_secret = secret;
	}
	cvm_log_set_level(CVM_LOG_INFO);
	struct cvm_repl_stats st;
	if (cvm_repl_serve(&o, &st, &err) < 0)
		return cli_fail(&err, "migrate replicate serve");
	if (cli->json) {
		json_t *j = stats_json(&st);
		cli_print_json(j);
		json_decref(j);
	}
	return CLI_OK;
}

static int repl_status(struct cli *cli, int argc, char **argv)
{
	const char *usage = "migrate replicate status --state FILE [--json]";
	const char *state = NULL;
	const struct cli_opt opts[] = {{"--state", true, &state, NULL, NULL}};
	int rc = cli_parse(argc, argv, opts, CVM_ARRAY_SIZE(opts), NULL, 0, 0, NULL, usage);
	if (rc)
		return rc;
	if (!state)
		return cli_usage_error(usage, "--state is required");
	struct cvm_err err = {0};
	struct cvm_repl_state_info i;
	if (cvm_repl_state_read(state, &i, &err) < 0)
		return cli_fail(&err, "migrate replicate status");
	_cleanup_free_ char *gen = cvm_hex_encode(i.gen, 16);
	char when[32];
	cvm_time_iso8601(i.updated, when);
	int64_t rpo = cvm_now() - i.updated;
	if (cli->json) {
		json_t *j = json_pack("{s:s,s:b,s:I,s:I,s:I,s:s?,s:I,s:I,s:s,s:I}", "role",
				      i.role == 'S' ? "source" : "target", "stale", i.stale, "block_size",
				      (json_int_t)i.block_size, "disk_size", (json_int_t)i.disk_size,
				      "blocks", (json_int_t)i.nblocks, "generation", gen, "passes",
				      (json_int_t)i.pass, "cursor", (json_int_t)i.cursor,
				      "last_checkpoint", when, "seconds_since_checkpoint",
				      (json_int_t)rpo);
		cli_print_json(j);
		json_decref(j);
	} else {
		printf("role:             %s\n", i.role == 'S' ? "source" : "target");
		printf("disk:             %llu bytes in %llu blocks of %u\n",
		       (unsigned long long)i.disk_size, (unsigned long long)i.nblocks, i.block_size);
		printf("passes complete:  %llu\n", (unsigned long long)i.pass);
		printf("current pass:     %s (block %llu of %llu)\n",
		       i.cursor ? "interrupted, resumes" : "none in progress",
		       (unsigned long long)i.cursor, (unsigned long long)i.nblocks);
		printf("last checkpoint:  %s (%lld s ago)\n", when, (long long)rpo);
	}
	return CLI_OK;
}

static int migrate_replicate(struct cli *cli, int argc, char **argv)
{
	static const struct cli_verb verbs[] = {
		{"send", repl_send, "send (--image IMG | --qmp SOCK --node NODE) --state FILE "
				    "--connect HOST:PORT --cert PEM "
				    "--key PEM --ca PEM [--peer-name NAME] [--block-size N] [--no-compress]"},
		{"serve", repl_serve, "serve (--target IMG | --confidential-disk PATH) --state FILE "
				      "--listen HOST:PORT --cert PEM --key PEM --ca PEM [--peer-name NAME] "
				      "[--sessions N] [--ready-file F]"},
		{"status", repl_status, "status --state FILE"},
	};
	return cli_dispatch(cli, "migrate replicate", verbs, CVM_ARRAY_SIZE(verbs), argc - 1, argv + 1);
}

/* ---- projects and servers ------------------------------------------------------------------ */
#define STORE_USAGE "(--store URL | --state-dir DIR)"

static int open_store(const char *store, const char *state_dir, struct cvm_store **s,
		      struct cvm_err *err)
{
	_cleanup_free_ char *url = NULL;
	if (!store && state_dir)
		store = url = cvm_asprintf("sqlite:%s/cvmd.db", state_dir);
	if (!store)
		return cvm_err_badparam(err, "--store URL or --state-dir DIR is required");
	return cvm_store_open(store, s, err);
}

static const char *principal(void)
{
	const char *u = getenv("USER");
	return u && u[0] ? u : "cli";
}

static json_t *server_json(const struct cvm_mig_server *v)
{
	return json_pack("{s:s,s:s,s:s,s:s,s:s?,s:s?,s:s?,s:I,s:I}", "project", v->project, "name",
			 v->name, "source", v->source, "phase", cvm_mig_phase_name(v->phase),
			 "failed_from", (v->phase == CVM_MIG_FAILED || v->phase == CVM_MIG_ROLLED_BACK) ?
			 cvm_mig_phase_name(v->failed_from) : NULL, "verdict", v->verdict, "reason",
			 v->reason, "created", (json_int_t)v->created, "updated", (json_int_t)v->updated);
}

static int migrate_project(struct cli *cli, int argc, char **argv)
{
	const char *usage = "migrate project create NAME " STORE_USAGE;
	const char *store = NULL, *state_dir = NULL, *pos[2] = {0};
	size_t np = 0;
	const struct cli_opt opts[] = {{"--store", true, &store, NULL, NULL},
				       {"--state-dir", true, &state_dir, NULL, NULL}};
	int rc = cli_parse(argc, argv, opts, CVM_ARRAY_SIZE(opts), pos, 2, 2, &np, usage);
	if (rc)
		return rc;
	if (np != 2 || strcmp(pos[0], "create") != 0)
		return cli_usage_error(usage, "expected: create NAME");
	struct cvm_err err = {0};
	_cleanup_store_ struct cvm_store *s = NULL;
	if (open_store(store, state_dir, &s, &err) < 0 ||
	    cvm_mig_project_create(s, pos[1], principal(), &err) < 0)
		return cli_fail(&err, "migrate project create");
	if (!cli->json)
		printf("project %s created\n", pos[1]);
	return CLI_OK;
}

static int migrate_server(struct cli *cli, int argc, char **argv)
{
	const char *usage = "migrate server add PROJECT NAME --image FILE | assess PROJECT NAME | "
			    "set-phase PROJECT NAME PHASE [--reason TEXT] | show PROJECT NAME | "
			    "list PROJECT  " STORE_USAGE;
	const char *store = NULL, *state_dir = NULL, *image = NULL, *reason = NULL, *pos[4] = {0};
	size_t np = 0;
	const struct cli_opt opts[] = {{"--store", true, &store, NULL, NULL},
				       {"--state-dir", true, &state_dir, NULL, NULL},
				       {"--image", true, &image, NULL, NULL},
				       {"--reason", true, &reason, NULL, NULL}};
	int rc = cli_parse(argc, argv, opts, CVM_ARRAY_SIZE(opts), pos, 4, 2, &np, usage);
	if (rc)
		return rc;
	const char *verb = pos[0];
	bool list = strcmp(verb, "list") == 0, setp = strcmp(verb, "set-phase") == 0;
	if ((list && np != 2) || (setp && np != 4) || (!list && !setp && np != 3) ||
	    (!list && !setp && strcmp(verb, "add") && strcmp(verb, "assess") && strcmp(verb, "show")))
		return cli_usage_error(usage, "unexpected arguments for '%s'", verb);
	if (strcmp(verb, "add") == 0 && !image)
		return cli_usage_error(usage, "add needs --image FILE");
	struct cvm_err err = {0};
	_cleanup_store_ struct cvm_store *s = NULL;
	if (open_store(store, state_dir, &s, &err) < 0)
		return cli_fail(&err, "migrate server");
	const char *proj = pos[1], *name = pos[2];
	int r = 0;
	if (strcmp(verb, "add") == 0) {
		r = cvm_mig_server_add(s, proj, name, image, principal(), &err);
	} else if (strcmp(verb, "assess") == 0) {
		_cleanup_free_ char *report = NULL;
		r = cvm_mig_server_assess(s, proj, name, NULL, principal(), &report, &err);
		if (r == 0 && cli->json)
			printf("%s\n", report);
		else if (r == 0) {
			json_t *j = json_loads(report, 0, NULL);
			printf("server %s assessed: %s\n", name,
			       json_string_value(json_object_get(j, "verdict")));
			json_decref(j);
		}
		if (r == 0)
			return CLI_OK;
	} else if (setp) {
		enum cvm_mig_phase to;
		if (cvm_mig_phase_parse(pos[3], &to, &err) < 0)
			return cli_usage_error(usage, "%s", err.msg);
		r = cvm_mig_server_transition(s, proj, name, to, reason, principal(), &err);
	} else if (list) {
		struct cvm_mig_server *v = NULL;
		size_t n = 0;
		if ((r = cvm_mig_server_list(s, proj, &v, &n, &err)) < 0)
			return cli_fail(&err, "migrate server list");
		json_t *rows = json_array();
		for (size_t i = 0; i < n; i++)
			json_array_append_new(rows, server_json(&v[i]));
		cvm_mig_server_list_free(v, n);
		if (cli->json) {
			cli_print_json(rows);
		} else {
			static const char *const h[] = {"NAME", "PHASE", "VERDICT", "SOURCE"};
			static const char *const p[] = {"name", "phase", "verdict", "source"};
			cli_print_table(rows, h, p, 4);
		}
		json_decref(rows);
		return CLI_OK;
	}
	if (r < 0)
		return cli_fail(&err, "migrate server");
	struct cvm_mig_server v;
	if (cvm_mig_server_get(s, proj, name, &v, &err) < 0)
		return cli_fail(&err, "migrate server");
	json_t *j = server_json(&v);
	cvm_mig_server_clear(&v);
	if (cli->json) {
		cli_print_json(j);
	} else {
		static const char *const l[] = {"name", "phase", "verdict", "source", "reason"};
		static const char *const p[] = {"name", "phase", "verdict", "source", "reason"};
		cli_print_fields(j, l, p, 5);
	}
	json_decref(j);
	return CLI_OK;
}

/* ---- check-network ------------------------------------------------------------------------ */
static int migrate_check_network(struct cli *cli, int argc, char **argv)
{
	const char *usage = "migrate check-network --target HOST [--ports 443,9443,22,5985] "
			    "[--resolve NAME]... [--timeout-ms N] [--json]";
	const char *target = NULL, *ports_s = NULL, *timeout_s = NULL, **names = NULL;
	const struct cli_opt opts[] = {{"--target", true, &target, NULL, NULL},
				       {"--ports", true, &ports_s, NULL, NULL},
				       {"--timeout-ms", true, &timeout_s, NULL, NULL},
				       {"--resolve", true, NULL, NULL, &names}};
	int rc = cli_parse(argc, argv, opts, CVM_ARRAY_SIZE(opts), NULL, 0, 0, NULL, usage);
	if (rc) {
		free(names);
		return rc;
	}
	struct cvm_err err = {0};
	uint16_t ports[32] = {443, 9443, 22, 5985};
	size_t np = 4, nn = 0;
	int64_t timeout = 2000;
	while (names && names[nn])
		nn++;
	if (!target) {
		free(names);
		return cli_usage_error(usage, "--target is required");
	}
	if (ports_s) {
		np = 0;
		_cleanup_free_ char *copy = cvm_strdup(ports_s);
		char *save = NULL;
		for (char *t = copy ? strtok_r(copy, ",", &save) : NULL; t; t = strtok_r(NULL, ",", &save)) {
			int64_t p;
			if (np == CVM_ARRAY_SIZE(ports) || cvm_parse_i64(t, 1, 65535, &p, "--ports", &err) < 0) {
				free(names);
				return cli_usage_error(usage, "--ports: expected up to 32 ports from 1 to 65535");
			}
			ports[np++] = (uint16_t)p;
		}
	}
	if (timeout_s && cvm_parse_i64(timeout_s, 1, 60000, &timeout, "--timeout-ms", &err) < 0) {
		free(names);
		return cli_usage_error(usage, "%s", err.msg);
	}
	struct cvm_netcheck *v = NULL;
	size_t n = 0;
	int r = cvm_migrate_check_network(target, ports, np, names, nn, (unsigned)timeout, &v, &n, &err);
	free(names);
	if (r < 0)
		return cli_fail(&err, "migrate check-network");
	bool all = true;
	json_t *rows = json_array();
	for (size_t i = 0; i < n; i++) {
		all = all && v[i].ok;
		json_array_append_new(rows, json_pack("{s:s,s:s,s:s,s:I}", "check", v[i].check, "status",
						      v[i].ok ? "pass" : "fail", "detail", v[i].detail,
						      "ms", (json_int_t)v[i].ms));
	}
	free(v);
	if (cli->json) {
		cli_print_json(rows);
	} else {
		static const char *const h[] = {"CHECK", "STATUS", "DETAIL"};
		static const char *const p[] = {"check", "status", "detail"};
		cli_print_table(rows, h, p, 3);
	}
	json_decref(rows);
	return all ? CLI_OK : CLI_FAIL;
}

/* ---- cutover ----------------------------------------------------------------------------- */
/* --target-vm: the confidential VM the replica now boots must pass vm validate's checks. */
struct target_check {
	struct cvm_store *store;
	const char *state_dir, *vm;
	const uint8_t *reference;
};

static int check_target_vm(void *ctx, struct cvm_err *err)
{
	const struct target_check *t = ctx;
	json_t *checks = NULL;
	int failed = 0;
	int r = cli_vm_checks(t->store, t->state_dir, t->vm, t->reference, NULL, &checks, &failed,
			      err);
	if (r < 0)
		return cvm_err_prefix(err, "target VM %s", t->vm);
	struct cvm_buf why = {0};
	size_t i;
	json_t *c;
	json_array_foreach(checks, i, c)
		if (!json_is_true(json_object_get(c, "passed")))
			cvm_buf_printf(&why, "%s%s (%s)", why.len ? "; " : "",
				       json_string_value(json_object_get(c, "check")),
				       json_string_value(json_object_get(c, "detail")));
	json_decref(checks);
	if (failed)
		r = cvm_err_set(err, ECANCELED, "Conflict", "target VM %s failed validation: %.*s",
				t->vm, (int)why.len, why.data ? (const char *)why.data : "");
	cvm_buf_free(&why);
	return r;
}

static int migrate_cutover(struct cli *cli, int argc, char **argv)
{
	const char *usage = "migrate cutover PROJECT SERVER --qmp SOCK --node NODE --state FILE "
			    "--connect HOST:PORT --cert PEM --key PEM --ca PEM [--peer-name NAME] "
			    "--replica IMG [--validator PROGRAM] [--target-vm NAME "
			    "[--reference-measurement HEX]] [--endpoints FILE --name NAME "
			    "--target-addr ADDR] " STORE_USAGE;
	const char *store = NULL, *state_dir = NULL, *pos[2] = {0}, *target_vm = NULL,
		   *ref_hex = NULL;
	size_t np = 0;
	struct cvm_cutover_opts o = {0};
	const struct cli_opt opts[] = {{"--store", true, &store, NULL, NULL},
				       {"--state-dir", true, &state_dir, NULL, NULL},
				       {"--qmp", true, &o.repl.qmp, NULL, NULL},
				       {"--node", true, &o.repl.node, NULL, NULL},
				       {"--state", true, &o.repl.state, NULL, NULL},
				       {"--connect", true, &o.repl.connect, NULL, NULL},
				       {"--cert", true, &o.repl.tls.cert, NULL, NULL},
				       {"--key", true, &o.repl.tls.key, NULL, NULL},
				       {"--ca", true, &o.repl.tls.ca, NULL, NULL},
				       {"--peer-name", true, &o.repl.tls.peer_name, NULL, NULL},
				       {"--replica", true, &o.replica, NULL, NULL},
				       {"--validator", true, &o.validator, NULL, NULL},
				       {"--endpoints", true, &o.endpoints, NULL, NULL},
				       {"--name", true, &o.name, NULL, NULL},
				       {"--target-addr", true, &o.target_addr, NULL, NULL},
				       {"--target-vm", true, &target_vm, NULL, NULL},
				       {"--reference-measurement", true, &ref_hex, NULL, NULL}};
	int rc = cli_parse(argc, argv, opts, CVM_ARRAY_SIZE(opts), pos, 2, 2, &np, usage);
	if (rc)
		return rc;
	if (ref_hex && !target_vm)
		return cli_usage_error(usage, "--reference-measurement goes with --target-vm");
	if (!o.repl.qmp || !o.repl.node || !o.repl.state || !o.repl.connect || !o.replica)
		return cli_usage_error(usage, "--qmp, --node, --state, --connect and --replica are "
				       "required");
	o.project = pos[0];
	o.server = pos[1];
	o.principal = principal();
	struct cvm_err err = {0};
	_cleanup_store_ struct cvm_store *s = NULL;
	if (open_store(store, state_dir, &s, &err) < 0)
		return cli_fail(&err, "migrate cutover");
	uint8_t ref[48];
	if (ref_hex && cvm_hex_decode_fixed(ref_hex, ref, sizeof(ref), "--reference-measurement",
					    &err) < 0)
		return cli_usage_error(usage, "%s", err.msg);
	struct target_check tc = {.store = s, .state_dir = state_dir, .vm = target_vm,
				  .reference = ref_hex ? ref : NULL};
	if (target_vm) {
		o.check_target = check_target_vm;
		o.check_target_ctx = &tc;
	}
	struct cvm_cutover_result res;
	int r = cvm_migrate_cutover(s, &o, &res, &err);
	if (cli->json) {
		json_t *j = json_pack("{s:b,s:b,s:s,s:I,s:I,s:I,s:I,s:I,s:I}", "cut_over", res.cut_over,
				      "rolled_back", res.rolled_back, "reason", res.reason,
				      "downtime_ms", (json_int_t)res.downtime_ms, "freeze_ms",
				      (json_int_t)res.freeze_ms, "final_sync_ms", (json_int_t)res.sync_ms,
				      "final_sync_blocks", (json_int_t)res.sync.blocks_sent,
				      "validate_ms", (json_int_t)res.validate_ms, "switch_ms",
				      (json_int_t)res.switch_ms);
		cli_print_json(j);
		json_decref(j);
	} else if (r == 0 || res.rolled_back) {
		printf("freeze %llu ms, final sync %llu ms (%llu blocks), validation %llu ms, switch "
		       "%llu ms\n%s: downtime %llu ms\n", (unsigned long long)res.freeze_ms,
		       (unsigned long long)res.sync_ms, (unsigned long long)res.sync.blocks_sent,
		       (unsigned long long)res.validate_ms, (unsigned long long)res.switch_ms,
		       res.cut_over ? "cut over, source decommissioned" : "ROLLED BACK to the source",
		       (unsigned long long)res.downtime_ms);
	}
	return r < 0 ? cli_fail(&err, "migrate cutover") : CLI_OK;
}

/* ---- test migration ------------------------------------------------------------------------ */
static int migrate_test(struct cli *cli, int argc, char **argv)
{
	const char *usage = "migrate test PROJECT SERVER --replica IMG [--secure-boot] "
			    "[--ovmf-code F --ovmf-vars F] [--timeout S] [--expect REGEX] "
			    "[--service-port P] " STORE_USAGE;
	const char *store = NULL, *state_dir = NULL, *pos[2] = {0}, *timeout = NULL, *port = NULL;
	size_t np = 0;
	struct cvm_testmig_opts o = {0};
	const struct cli_opt opts[] = {{"--store", true, &store, NULL, NULL},
				       {"--state-dir", true, &state_dir, NULL, NULL},
				       {"--replica", true, &o.replica, NULL, NULL},
				       {"--secure-boot", false, NULL, &o.secure_boot, NULL},
				       {"--ovmf-code", true, &o.ovmf_code, NULL, NULL},
				       {"--ovmf-vars", true, &o.ovmf_vars, NULL, NULL},
				       {"--timeout", true, &timeout, NULL, NULL},
				       {"--expect", true, &o.expect, NULL, NULL},
				       {"--service-port", true, &port, NULL, NULL}};
	int rc = cli_parse(argc, argv, opts, CVM_ARRAY_SIZE(opts), pos, 2, 2, &np, usage);
	if (rc)
		return rc;
	if (!o.replica)
		return cli_usage_error(usage, "--replica is required");
	struct cvm_err err = {0};
	int64_t v;
	if (timeout) {
		if (cvm_parse_i64(timeout, 1, 3600, &v, "--timeout", &err) < 0)
			return cli_usage_error(usage, "%s", err.msg);
		o.timeout_s = (unsigned)v;
	}
	if (port) {
		if (cvm_parse_i64(port, 1, 65535, &v, "--service-port", &err) < 0)
			return cli_usage_error(usage, "%s", err.msg);
		o.service_port = (uint16_t)v;
	}
	if (!o.ovmf_code)
		o.ovmf_code = o.secure_boot ? "/usr/share/OVMF/OVMF_CODE_4M.secboot.fd" :
					      "/usr/share/OVMF/OVMF_CODE_4M.fd";
	if (!o.ovmf_vars)
		o.ovmf_vars = o.secure_boot ? "/usr/share/OVMF/OVMF_VARS_4M.ms.fd" :
					      "/usr/share/OVMF/OVMF_VARS_4M.fd";
	o.project = pos[0];
	o.server = pos[1];
	o.principal = principal();
	_cleanup_store_ struct cvm_store *s = NULL;
	if (open_store(store, state_dir, &s, &err) < 0)
		return cli_fail(&err, "migrate test");
	struct cvm_testmig_result res;
	if (cvm_migrate_test(s, &o, &res, &err) < 0)
		return cli_fail(&err, "migrate test");
	json_t *rows = json_array();
	for (size_t i = 0; i < res.n; i++)
		json_array_append_new(rows, json_pack("{s:s,s:s,s:s}", "check", res.checks[i].name,
						      "status", res.checks[i].ok ? "pass" : "fail",
						      "detail", res.checks[i].detail));
	if (cli->json) {
		json_t *j = json_pack("{s:b,s:I,s:o}", "passed", res.passed, "boot_ms",
				      (json_int_t)res.boot_ms, "checks", rows);
		cli_print_json(j);
		json_decref(j);
	} else {
		static const char *const h[] = {"CHECK", "STATUS", "DETAIL"};
		static const char *const p[] = {"check", "status", "detail"};
		cli_print_table(rows, h, p, 3);
		printf("test migration %s\n", res.passed ? "PASSED" : "FAILED");
		json_decref(rows);
	}
	return res.passed ? CLI_OK : CLI_FAIL;
}

int cli_migrate(struct cli *cli, int argc, char **argv)
{
	static const struct cli_verb verbs[] = {
		{"assess", migrate_assess, "assess --image FILE [--max-os-disk-gib N] [--json]"},
		{"mbr2gpt", migrate_mbr2gpt,
		 "mbr2gpt --in IMG --out IMG [--grow] [--no-fstab] [--dry-run] [--json]"},
		{"replicate", migrate_replicate, "replicate send|serve|status ..."},
		{"test", migrate_test,
		 "test PROJECT SERVER --replica IMG [--secure-boot] [--service-port P] [--timeout S]"},
		{"cutover", migrate_cutover,
		 "cutover PROJECT SERVER --qmp SOCK --node NODE --state F --connect H:P --cert --key "
		 "--ca --replica IMG [--validator PROG] [--target-vm NAME [--reference-measurement "
		 "HEX]] [--endpoints F --name N --target-addr A]"},
		{"check-network", migrate_check_network,
		 "check-network --target HOST [--ports LIST] [--resolve NAME]... [--timeout-ms N]"},
		{"project", migrate_project, "project create NAME (--store URL | --state-dir DIR)"},
		{"server", migrate_server, "server add|assess|set-phase|show|list PROJECT [NAME] "
					   "(--store URL | --state-dir DIR)"},
	};
	return cli_dispatch(cli, "migrate", verbs, CVM_ARRAY_SIZE(verbs), argc, argv);
}
