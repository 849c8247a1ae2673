/* SPDX-License-Identifier: Apache-2.0 */
/* cvm des ...: Disk Encryption Sets, kept by cvmd (/opencvm/diskEncryptionSets). */
#include "cli.h"

#include <string.h>

/* DES names go into URL paths: the rules cvmd applies (1..80 of A-Z a-z 0-9 - _). */
static int check_des_name(const char *s, const char *usage)
{
	size_t n = s ? strlen(s) : 0;
	if (n == 0 || n > 80)
		return cli_usage_error(usage, "NAME: expected 1..80 characters");
	for (const char *p = s; *p; p++)
		if (!((*p >= 'a' && *p <= 'z') || (*p >= 'A' && *p <= 'Z') ||
		      (*p >= '0' && *p <= '9') || *p == '-' || *p == '_'))
			return cli_usage_error(usage, "NAME '%s': only letters, digits, '-' and '_'",
					       s);
	return 0;
}

/* lastAutoRotation: cvmd's last automatic re-wrap of the set's disks after a key rotation. */
static const char *const des_labels[] = {"name", "type", "key", "wrap alg", "identity",
					 "follows latest key version", "created", "updated",
					 "last auto-rotation", "... to key version", "... at",
					 "... disks rotated", "... disks failed", "... first failure"};
static const char *const des_paths[] = {"name", "encryptionType", "keyUrl", "alg", "identity",
					"followsLatest", "created", "updated",
					"lastAutoRotation.result", "lastAutoRotation.keyVersion",
					"lastAutoRotation.at", "lastAutoRotation.rotated",
					"lastAutoRotation.failed", "lastAutoRotation.message"};

static int show_des(struct cli *cli, json_t *des)
{
	if (cli->json)
		cli_print_json(des);
	else
		cli_print_fields(des, des_labels, des_paths, CVM_ARRAY_SIZE(des_labels));
	return CLI_OK;
}

static int des_create(struct cli *cli, int argc, char **argv)
{
	const char *usage = "des create NAME --type platform|customer [--key URL] --identity ID";
	const char *type = NULL, *key = NULL, *identity = NULL, *pos[1];
	const struct cli_opt opts[] = {
		{"--type", true, &type, NULL, NULL},
		{"--key", true, &key, NULL, NULL},
		{"--identity", true, &identity, NULL, NULL},
	};
	int rc = cli_parse(argc, argv, opts, CVM_ARRAY_SIZE(opts), pos, 1, 1, NULL, usage);
	if (rc || (rc = check_des_name(pos[0], usage)))
		return rc;
	if (!type || !identity)
		return cli_usage_error(usage, "--type and --identity are required");
	if (strcmp(type, "customer") == 0 && !key)
		return cli_usage_error(usage, "--key URL is required for --type customer");
	if (strcmp(type, "platform") == 0 && key)
		return cli_usage_error(usage, "--key is not used with --type platform (cvmd creates "
					      "the set's key in its own HSM)");
	json_t *body = json_pack("{s:s,s:s,s:s*}", "encryptionType", type, "identity", identity,
				 "keyUrl", key);
	_cleanup_free_ char *path = cvm_asprintf("/opencvm/diskEncryptionSets/%s", pos[0]);
	json_t *res = NULL;
	struct cvm_err err = {0};
	int r = body && path ? cli_call(cli, "PUT", path, body, &res, &err) : cvm_err_nomem(&err);
	json_decref(body);
	if (r < 0)
		return cli_fail(&err, "des create");
	rc = show_des(cli, res);
	json_decref(res);
	return rc;
}

static int des_show(struct cli *cli, int argc, char **argv)
{
	const char *usage = "des show NAME", *pos[1];
	int rc = cli_parse(argc, argv, NULL, 0, pos, 1, 1, NULL, usage);
	if (rc || (rc = check_des_name(pos[0], usage)))
		return rc;
	_cleanup_free_ char *path = cvm_asprintf("/opencvm/diskEncryptionSets/%s", pos[0]);
	json_t *res = NULL;
	struct cvm_err err = {0};
	if (cli_call(cli, "GET", path, NULL, &res, &err) < 0)
		return cli_fail(&err, "des show");
	rc = show_des(cli, res);
	json_decref(res);
	return rc;
}

static int des_list(struct cli *cli, int argc, char **argv)
{
	const char *usage = "des list";
	int rc = cli_parse(argc, argv, NULL, 0, NULL, 0, 0, NULL, usage);
	if (rc)
		return rc;
	json_t *res = NULL;
	struct cvm_err err = {0};
	if (cli_call(cli, "GET", "/opencvm/diskEncryptionSets", NULL, &res, &err) < 0)
		return cli_fail(&err, "des list");
	json_t *items = json_object_get(res, "value");
	if (cli->json) {
		cli_print_json(items);
	} else {
		const char *h[] = {"NAME", "TYPE", "KEY", "IDENTITY", "FOLLOWS LATEST"};
		const char *p[] = {"name", "encryptionType", "keyUrl", "identity", "followsLatest"};
		cli_print_table(items, h, p, CVM_ARRAY_SIZE(h));
	}
	json_decref(res);
	return CLI_OK;
}

static int des_delete(struct cli *cli, int argc, char **argv)
{
	const char *usage = "des delete NAME", *pos[1];
	int rc = cli_parse(argc, argv, NULL, 0, pos, 1, 1, NULL, usage);
	if (rc || (rc = check_des_name(pos[0], usage)))
		return rc;
	_cleanup_free_ char *path = cvm_asprintf("/opencvm/diskEncryptionSets/%s", pos[0]);
	json_t *res = NULL;
	struct cvm_err err = {0};
	if (cli_call(cli, "DELETE", path, NULL, &res, &err) < 0)
		return cli_fail(&err, "des delete");
	json_decref(res);
	if (cli->json)
		printf("{\"name\": \"%s\", \"deleted\": true}\n", pos[0]);
	else
		printf("%s: deleted\n", pos[0]);
	return CLI_OK;
}

int cli_des(struct cli *cli, int argc, char **argv)
{
	static const struct cli_verb verbs[] = {
		{"create", des_create, "create NAME --type platform|customer [--key URL] --identity ID"},
		{"list", des_list, "list"},
		{"show", des_show, "show NAME"},
		{"delete", des_delete, "delete NAME"},
	};
	return cli_dispatch(cli, "des", verbs, CVM_ARRAY_SIZE(verbs), argc, argv);
}
