/* SPDX-License-Identifier: Apache-2.0 */
/* cvm hsm ...: service status and full-HSM backup/restore (Managed HSM's shapes). */
#include "cli.h"

#include <string.h>

static int hsm_status(struct cli *cli, int argc, char **argv)
{
	const char *usage = "hsm status";
	int rc = cli_parse(argc, argv, NULL, 0, NULL, 0, 0, NULL, usage);
	if (rc)
		return rc;
	struct cvm_err err = {0};
	json_t *res = NULL;
	/* One cheap authenticated call tells reachable, authenticated and activated apart. */
	int r = cli_call(cli, "GET", "/keys?maxresults=1", NULL, &res, &err);
	json_decref(res);
	bool reachable = r == 0 || err.errnum != ECONNREFUSED;
	bool authenticated = r == 0 || (reachable && err.errnum != EACCES);
	bool activated = r == 0 || (authenticated && err.errnum != EBUSY);
	if (cli->json) {
		json_t *j = json_pack("{s:s,s:b,s:b,s:b}", "url", cli->conn.base_url ? cli->conn.base_url : "",
				      "reachable", reachable, "authenticated", authenticated,
				      "activated", activated);
		if (r < 0)
			json_object_set_new(j, "detail", json_string(err.msg));
		cli_print_json(j);
		json_decref(j);
	} else {
		printf("url            %s\nreachable      %s\nauthenticated  %s\nactivated      %s\n",
		       cli->conn.base_url ? cli->conn.base_url : "-", reachable ? "yes" : "no",
		       authenticated ? "yes" : "no", activated ? "yes" : "no");
		if (r < 0 && err.errnum != EPERM)
			printf("detail         %s\n", err.msg);
	}
	/* A 403 on keys/read only means this identity is an administrator, not a key user. */
	if (!reachable || !authenticated)
		return CLI_CONNECT;
	return r == 0 || err.errnum == EPERM ? CLI_OK : CLI_FAIL;
}

static int hsm_backup(struct cli *cli, int argc, char **argv)
{
	const char *usage = "hsm backup --dir DIR (the server's configured backup_dir)";
	const char *dir = NULL;
	const struct cli_opt opts[] = {{"--dir", true, &dir, NULL, NULL}};
	int rc = cli_parse(argc, argv, opts, 1, NULL, 0, 0, NULL, usage);
	if (rc)
		return rc;
	if (!dir || dir[0] != '/')
		return cli_usage_error(usage, "--dir: expected an absolute directory path");
	_cleanup_free_ char *uri = cvm_asprintf("file://%s", dir);
	json_t *body = json_pack("{s:s,s:s}", "storageResourceUri", uri, "token", "");
	json_t *res = NULL;
	struct cvm_err err = {0};
	int r = cli_call(cli, "POST", "/backup", body, &res, &err);
	json_decref(body);
	if (r < 0)
		return cli_fail(&err, "hsm backup");
	if (cli->json)
		cli_print_json(res);
	else
		printf("backup %s: %s\n", json_string_value(json_object_get(res, "jobId")),
		       json_string_value(json_object_get(res, "azureStorageBlobContainerUri")));
	json_decref(res);
	return CLI_OK;
}

static int hsm_restore(struct cli *cli, int argc, char **argv)
{
	const char *usage = "hsm restore --dir DIR --folder mhsm-backup-...";
	const char *dir = NULL, *folder = NULL;
	const struct cli_opt opts[] = {{"--dir", true, &dir, NULL, NULL},
				       {"--folder", true, &folder, NULL, NULL}};
	int rc = cli_parse(argc, argv, opts, 2, NULL, 0, 0, NULL, usage);
	if (rc)
		return rc;
	if (!dir || !folder)
		return cli_usage_error(usage, "--dir and --folder are required");
	_cleanup_free_ char *uri = cvm_asprintf("file://%s", dir);
	json_t *body = json_pack("{s:{s:s,s:s},s:s}", "sasTokenParameters", "storageResourceUri",
				 uri, "token", "", "folderToRestore", folder);
	json_t *res = NULL;
	struct cvm_err err = {0};
	int r = cli_call(cli, "PUT", "/restore", body, &res, &err);
	json_decref(body);
	if (r < 0)
		return cli_fail(&err, "hsm restore");
	if (cli->json)
		cli_print_json(res);
	else
		printf("restore from %s: %s\n", folder,
		       json_string_value(json_object_get(res, "status")));
	json_decref(res);
	return CLI_OK;
}

int cli_hsm(struct cli *cli, int argc, char **argv)
{
	static const struct cli_verb verbs[] = {
		{"status", hsm_status, "status"},
		{"backup", hsm_backup, "backup --dir DIR"},
		{"restore", hsm_restore, "restore --dir DIR --folder NAME"},
	};
	return cli_dispatch(cli, "hsm", verbs, CVM_ARRAY_SIZE(verbs), argc, argv);
}
