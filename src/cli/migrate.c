/* SPDX-License-Identifier: Apache-2.0 */
/* cvm migrate ...: offline readiness assessment of a disk image and MBR->GPT conversion.
 * Both work on files only; neither needs cvmd. */
#include "cli.h"

#include <opencvm/migrate.h>
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
		json_t *j = json_pack("{s:b,s:s,s:I,s:i,s:I,s:I,s:i,s:i,s:b}", "ok", r == 0, "plan",
				      res.plan, "out_bytes", (json_int_t)res.out_bytes, "esp_partition",
				      (int)res.esp_number, "esp_start_lba", (json_int_t)res.esp_start_lba,
				      "esp_sectors", (json_int_t)res.esp_nsectors, "fstab_rewritten",
				      (int)res.fstab_rewritten, "fstab_partition", res.fstab_part,
				      "checksums_equal", res.checksums_equal);
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

int cli_migrate(struct cli *cli, int argc, char **argv)
{
	static const struct cli_verb verbs[] = {
		{"assess", migrate_assess, "assess --image FILE [--max-os-disk-gib N] [--json]"},
		{"mbr2gpt", migrate_mbr2gpt,
		 "mbr2gpt --in IMG --out IMG [--grow] [--no-fstab] [--dry-run] [--json]"},
	};
	return cli_dispatch(cli, "migrate", verbs, CVM_ARRAY_SIZE(verbs), argc, argv);
}
