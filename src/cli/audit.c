/* SPDX-License-Identifier: Apache-2.0 */
/* cvm audit ...: verify and export the hash-chained audit log straight from the store, so it
 * works while cvmd is down (after a crash) and needs no key-service role. */
#include "cli.h"

#include <opencvm/audit.h>
#include <opencvm/store.h>
#include <string.h>
#include <time.h>

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

static int audit_verify(struct cli *cli, int argc, char **argv)
{
	const char *usage = "audit verify --store URL | --state-dir DIR";
	const char *store = NULL, *state_dir = NULL;
	const struct cli_opt opts[] = {{"--store", true, &store, NULL, NULL},
				       {"--state-dir", true, &state_dir, NULL, NULL}};
	int rc = cli_parse(argc, argv, opts, 2, NULL, 0, 0, NULL, usage);
	if (rc)
		return rc;
	struct cvm_err err = {0};
	struct cvm_store *s = NULL;
	if (open_store(store, state_dir, &s, &err) < 0)
		return cli_fail(&err, "audit verify");
	int64_t records = 0, bad = 0;
	int r = cvm_audit_verify(s, &records, &bad, &err);
	cvm_store_close(s);
	if (cli->json) {
		json_t *j = json_pack("{s:b,s:I}", "valid", r == 0, "records", (json_int_t)records);
		if (r < 0) {
			json_object_set_new(j, "first_bad_seq", json_integer(bad));
			json_object_set_new(j, "reason", json_string(err.msg));
		}
		cli_print_json(j);
		json_decref(j);
	}
	if (r < 0) {
		if (!cli->json)
			fprintf(stderr, "cvm: audit verify: chain BROKEN at record %lld: %s\n",
				(long long)bad, err.msg);
		return CLI_FAIL;
	}
	if (!cli->json)
		printf("audit chain intact: %lld records\n", (long long)records);
	return CLI_OK;
}

/* --since accepts unix seconds or an ISO 8601 UTC time (2026-11-23T12:00:00Z). */
static int parse_since(const char *v, int64_t *ms)
{
	struct tm tm = {0};
	const char *end = strptime(v, "%Y-%m-%dT%H:%M:%S", &tm);
	if (end && (*end == 0 || strcmp(end, "Z") == 0)) {
		*ms = (int64_t)timegm(&tm) * 1000;
		return 0;
	}
	int64_t s;
	if (cvm_parse_i64(v, 0, INT64_MAX / 1000, &s, "--since", NULL) < 0)
		return -EINVAL;
	*ms = s * 1000;
	return 0;
}

static int audit_export(struct cli *cli, int argc, char **argv)
{
	const char *usage = "audit export (--store URL | --state-dir DIR) [--since T] [--out FILE]";
	const char *store = NULL, *state_dir = NULL, *since = NULL, *outp = NULL;
	const struct cli_opt opts[] = {{"--store", true, &store, NULL, NULL},
				       {"--state-dir", true, &state_dir, NULL, NULL},
				       {"--since", true, &since, NULL, NULL},
				       {"--out", true, &outp, NULL, NULL}};
	int rc = cli_parse(argc, argv, opts, 4, NULL, 0, 0, NULL, usage);
	if (rc)
		return rc;
	int64_t since_ms = 0;
	if (since && parse_since(since, &since_ms) < 0)
		return cli_usage_error(usage, "--since: expected unix seconds or YYYY-MM-DDTHH:MM:SSZ");
	struct cvm_err err = {0};
	struct cvm_store *s = NULL;
	if (open_store(store, state_dir, &s, &err) < 0)
		return cli_fail(&err, "audit export");
	FILE *f = outp && strcmp(outp, "-") != 0 ? fopen(outp, "we") : stdout;
	if (!f) {
		cvm_store_close(s);
		cvm_err_internal(&err, "cannot open %s", outp);
		return cli_fail(&err, "audit export");
	}
	int64_t n = 0;
	int r = cvm_audit_export(s, since_ms, f, &n, &err);
	cvm_store_close(s);
	if (f != stdout && fclose(f) != 0 && r == 0)
		r = cvm_err_internal(&err, "cannot write %s", outp);
	if (r < 0)
		return cli_fail(&err, "audit export");
	if (f != stdout)
		fprintf(stderr, "exported %lld records to %s\n", (long long)n, outp);
	return CLI_OK;
}

int cli_audit(struct cli *cli, int argc, char **argv)
{
	static const struct cli_verb verbs[] = {
		{"verify", audit_verify, "verify --store URL | --state-dir DIR"},
		{"export", audit_export, "export (--store URL | --state-dir DIR) [--since T] [--out FILE]"},
	};
	return cli_dispatch(cli, "audit", verbs, CVM_ARRAY_SIZE(verbs), argc, argv);
}
