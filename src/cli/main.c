/* SPDX-License-Identifier: Apache-2.0 */
/* cvm: the OpenCVM command line. `cvm <group> <verb> [args]`, one file per group. */
#include "cli.h"

#include <stdio.h>
#include <string.h>

static const struct {
	const char *name;
	int (*fn)(struct cli *cli, int argc, char **argv);
	const char *help;
} groups[] = {
	{"demo", cli_demo, "run the key-service flow end to end on a throw-away cvmd"},
	{"login", cli_login, "remember how to reach cvmd and who you are (writes a 0600 profile)"},
	{"hsm", cli_hsm, "HSM status, security domain, full backup/restore"},
	{"key", cli_key, "keys: create, list, show, operations, release, rotation, backup"},
	{"role", cli_role, "role definitions and assignments (Managed HSM local RBAC)"},
	{"identity", cli_identity, "principals and their credentials; fetch a token"},
	{"audit", cli_audit, "verify and export the hash-chained audit log"},
	{"disk", cli_disk, "confidential disks: create, encrypt, rotate, rekey, verify, show, list"},
	{"des", cli_des, "disk encryption sets: create, list, show, delete"},
	{"vm", cli_vm, "confidential VMs: create, start, stop, show, list, console, validate"},
	{"attest", cli_attest, "verify and decode TEE evidence; attestation policies"},
	{"tee-emu", cli_tee_emu, "TEE emulator: chains, reports, quotes, guest service (tests)"},
	{"measure", cli_measure, "launch measurements computed offline (SEV-SNP) to pin in policies"},
#ifdef CVM_HAVE_MIGRATE
	{"migrate", cli_migrate, "assess disk images offline; convert MBR/BIOS disks to GPT/UEFI"},
#endif
};

static void usage(FILE *f)
{
	fprintf(f, "usage: cvm [global options] <group> <verb> [args]\n\ngroups:\n");
	for (size_t i = 0; i < CVM_ARRAY_SIZE(groups); i++)
		fprintf(f, "  %-10s %s\n", groups[i].name, groups[i].help);
	fprintf(f, "\nglobal options (accepted anywhere on the line):\n"
		   "  --json                     machine-readable output\n"
		   "  --url URL                  key service base URL (or CVM_URL)\n"
		   "  --tenant ID                tenant (or CVM_TENANT)\n"
		   "  --client-id ID             client id (or CVM_CLIENT_ID)\n"
		   "  --client-secret-file FILE  client secret, read from a file (or CVM_CLIENT_SECRET_FILE)\n"
		   "  --ca-cert FILE             CA certificate to trust (or CVM_CA_CERT)\n"
		   "  --dev-info FILE            connection JSON written by `cvmd --dev`\n"
		   "  --profile FILE             profile path (default ~/.config/opencvm/profile.json)\n");
}

/* Global options may appear anywhere; pull them out so verbs never see them. */
static int take_globals(struct cli *cli, int *argc, char **argv)
{
	static const struct {
		const char *name;
		size_t off;
	} vals[] = {
		{"--url", offsetof(struct cli, url)},
		{"--tenant", offsetof(struct cli, tenant)},
		{"--client-id", offsetof(struct cli, client_id)},
		{"--client-secret-file", offsetof(struct cli, secret_file)},
		{"--ca-cert", offsetof(struct cli, ca_cert)},
		{"--dev-info", offsetof(struct cli, dev_info)},
		{"--profile", offsetof(struct cli, profile_path)},
	};
	int out = 0;
	for (int i = 0; i < *argc; i++) {
		const char *a = argv[i];
		if (strcmp(a, "--") == 0) {
			while (i < *argc)
				argv[out++] = argv[i++];
			break;
		}
		if (strcmp(a, "--json") == 0) {
			cli->json = true;
			continue;
		}
		if (strcmp(a, "--client-secret") == 0 || cvm_str_startswith(a, "--client-secret=")) {
			fprintf(stderr, "cvm: --client-secret: secrets are not accepted on the command "
					"line (other users can read argv); use --client-secret-file "
					"FILE or `cvm login`\n");
			return -1;
		}
		bool taken = false;
		for (size_t k = 0; k < CVM_ARRAY_SIZE(vals) && !taken; k++) {
			size_t nl = strlen(vals[k].name);
			const char **slot = (const char **)((char *)cli + vals[k].off);
			if (strcmp(a, vals[k].name) == 0) {
				if (i + 1 >= *argc) {
					fprintf(stderr, "cvm: %s needs a value\n", a);
					return -1;
				}
				*slot = argv[++i];
				taken = true;
			} else if (strncmp(a, vals[k].name, nl) == 0 && a[nl] == '=') {
				*slot = a + nl + 1;
				taken = true;
			}
		}
		if (!taken)
			argv[out++] = argv[i];
	}
	*argc = out;
	argv[out] = NULL;
	return 0;
}

int main(int argc, char **argv)
{
	struct cli cli = {0};
	argc--;
	argv++;
	if (take_globals(&cli, &argc, argv) < 0)
		return CLI_USAGE;
	if (argc < 1 || strcmp(argv[0], "help") == 0 || strcmp(argv[0], "--help") == 0 ||
	    strcmp(argv[0], "-h") == 0) {
		usage(argc < 1 ? stderr : stdout);
		return argc < 1 ? CLI_USAGE : CLI_OK;
	}
	if (strcmp(argv[0], "version") == 0 || strcmp(argv[0], "--version") == 0) {
		printf("cvm 0.1.0\n");
		return CLI_OK;
	}
	cvm_log_set_level(CVM_LOG_WARN);
	for (size_t i = 0; i < CVM_ARRAY_SIZE(groups); i++) {
		if (strcmp(argv[0], groups[i].name) == 0) {
			int rc = groups[i].fn(&cli, argc - 1, argv + 1);
			cli_conn_free(&cli.conn);
			return rc;
		}
	}
	fprintf(stderr, "cvm: unknown command '%s'\n\n", argv[0]);
	usage(stderr);
	return CLI_USAGE;
}
