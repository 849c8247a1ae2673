/* SPDX-License-Identifier: Apache-2.0 */
/* cvm identity ...: principals (users, service principals, managed identities). */
#include "cli.h"

#include <string.h>

static int check_name(const char *name, const char *usage)
{
	size_t n = strlen(name);
	if (n < 1 || n > 64)
		return cli_usage_error(usage, "NAME: expected 1..64 characters");
	for (const char *p = name; *p; p++)
		if (!((*p >= 'a' && *p <= 'z') || (*p >= 'A' && *p <= 'Z') ||
		      (*p >= '0' && *p <= '9') || *p == '-' || *p == '_' || *p == '.'))
			return cli_usage_error(usage, "NAME '%s': letters, digits, '-', '_', '.' only",
					       name);
	return 0;
}

static int id_create(struct cli *cli, int argc, char **argv)
{
	const char *usage = "identity create NAME [--kind user|service|managed] [--cert PEMFILE] "
			    "[--secret-out FILE]";
	const char *kind = "service", *cert = NULL, *secret_out = NULL, *pos[1];
	const struct cli_opt opts[] = {
		{"--kind", true, &kind, NULL, NULL},
		{"--cert", true, &cert, NULL, NULL},
		{"--secret-out", true, &secret_out, NULL, NULL},
	};
	int rc = cli_parse(argc, argv, opts, CVM_ARRAY_SIZE(opts), pos, 1, 1, NULL, usage);
	if (rc || (rc = check_name(pos[0], usage)))
		return rc;
	const char *wire = strcmp(kind, "user") == 0		? "User"
			   : strcmp(kind, "service") == 0	? "ServicePrincipal"
			   : strcmp(kind, "managed") == 0	? "ManagedIdentity"
								: NULL;
	if (!wire)
		return cli_usage_error(usage, "--kind: expected user, service or managed");
	struct cvm_err err = {0};
	json_t *body = json_pack("{s:s}", "kind", wire);
	if (cert) {
		_cleanup_free_ uint8_t *pem = NULL;
		size_t len;
		if (cli_read_input(cert, 65536, &pem, &len, &err) < 0) {
			json_decref(body);
			return cli_fail(&err, "--cert");
		}
		json_object_set_new(body, "certificate", json_stringn((char *)pem, len));
	}
	_cleanup_free_ char *path = cvm_asprintf("/opencvm/principals/%s", pos[0]);
	json_t *res = NULL;
	int r = cli_call(cli, "PUT", path, body, &res, &err);
	json_decref(body);
	if (r < 0)
		return cli_fail(&err, "identity create");
	json_t *sec = json_object_get(res, "client_secret");
	if (secret_out && sec) {
		if (cli_write_output(secret_out, json_string_value(sec), json_string_length(sec), 0600,
				     &err) < 0) {
			json_decref(res);
			return cli_fail(&err, "--secret-out");
		}
	}
	if (cli->json) {
		if (secret_out && json_is_string(sec)) {
			OPENSSL_cleanse((char *)json_string_value(sec), json_string_length(sec));
			json_object_del(res, "client_secret");
			sec = NULL;
		}
		cli_print_json(res);
	} else {
		const char *l[] = {"name", "kind", "object id", "client id"};
		const char *p[] = {"name", "kind", "object_id", "client_id"};
		cli_print_fields(res, l, p, 4);
		if (sec && !secret_out)
			printf("client secret  %s\n(shown once; store it in a 0600 file)\n",
			       json_string_value(sec));
		else if (sec)
			printf("client secret  written to %s\n", secret_out);
	}
	if (json_is_string(sec))
		OPENSSL_cleanse((char *)json_string_value(sec), json_string_length(sec));
	json_decref(res);
	return CLI_OK;
}

static int id_list(struct cli *cli, int argc, char **argv)
{
	const char *usage = "identity list";
	int rc = cli_parse(argc, argv, NULL, 0, NULL, 0, 0, NULL, usage);
	if (rc)
		return rc;
	json_t *res = NULL;
	struct cvm_err err = {0};
	if (cli_call(cli, "GET", "/opencvm/principals", NULL, &res, &err) < 0)
		return cli_fail(&err, "identity list");
	if (cli->json) {
		cli_print_json(res);
	} else {
		const char *h[] = {"NAME", "KIND", "OBJECT ID", "CLIENT ID"};
		const char *p[] = {"name", "kind", "oid", "client_id"};
		cli_print_table(json_is_array(res) ? res : json_object_get(res, "value"), h, p, 4);
	}
	json_decref(res);
	return CLI_OK;
}

static int id_delete(struct cli *cli, int argc, char **argv)
{
	const char *usage = "identity delete NAME|OBJECT-ID", *pos[1];
	int rc = cli_parse(argc, argv, NULL, 0, pos, 1, 1, NULL, usage);
	if (rc || (rc = check_name(pos[0], usage)))
		return rc;
	_cleanup_free_ char *path = cvm_asprintf("/opencvm/principals/%s", pos[0]);
	json_t *res = NULL;
	struct cvm_err err = {0};
	if (cli_call(cli, "DELETE", path, NULL, &res, &err) < 0)
		return cli_fail(&err, "identity delete");
	json_decref(res);
	if (!cli->json)
		printf("%s: deleted\n", pos[0]);
	return CLI_OK;
}

/* Print an access token for the current credentials (for curl and scripts). */
static int id_token(struct cli *cli, int argc, char **argv)
{
	const char *usage = "identity token";
	int rc = cli_parse(argc, argv, NULL, 0, NULL, 0, 0, NULL, usage);
	if (rc)
		return rc;
	struct cvm_err err = {0};
	if (cli_connect(cli, &err) < 0)
		return cli_fail(&err, "identity token");
	if (cli->json) {
		json_t *j = json_pack("{s:s,s:s}", "token_type", "Bearer", "access_token",
				      cli->conn.token);
		cli_print_json(j);
		json_decref(j);
	} else {
		printf("%s\n", cli->conn.token);
	}
	return CLI_OK;
}

int cli_identity(struct cli *cli, int argc, char **argv)
{
	static const struct cli_verb verbs[] = {
		{"create", id_create, "create NAME [--kind user|service|managed] [--cert PEM] [--secret-out FILE]"},
		{"list", id_list, "list"},
		{"delete", id_delete, "delete NAME|OBJECT-ID"},
		{"token", id_token, "token"},
	};
	return cli_dispatch(cli, "identity", verbs, CVM_ARRAY_SIZE(verbs), argc, argv);
}
