/* SPDX-License-Identifier: Apache-2.0 */
/* cvm login: resolve a connection, prove it works (fetch a token), save it as a profile. */
#include "cli.h"

#include <string.h>

char *cli_profile_default_path(void);
int cli_resolve(struct cli *cli, struct cvm_err *err);

int cli_login(struct cli *cli, int argc, char **argv)
{
	const char *usage = "login [--url URL] [--tenant T] [--client-id ID] "
			    "[--client-secret-file FILE] [--ca-cert FILE] [--dev-info FILE] "
			    "[--profile FILE]";
	int rc = cli_parse(argc + 1, argv - 1, NULL, 0, NULL, 0, 0, NULL, usage);
	if (rc)
		return rc;
	struct cvm_err err = {0};
	if (cli_connect(cli, &err) < 0)
		return cli_fail(&err, "login");
	struct cli_conn *c = &cli->conn;
	json_t *j = json_pack("{s:s,s:s,s:s,s:s%}", "base_url", c->base_url, "tenant", c->tenant,
			      "client_id", c->client_id, "client_secret",
			      (const char *)c->client_secret->data, c->client_secret->len);
	if (c->ca_cert) {
		/* Store an absolute path: the profile is used from other directories. */
		char *abs = realpath(c->ca_cert, NULL);
		json_object_set_new(j, "ca_cert", json_string(abs ? abs : c->ca_cert));
		free(abs);
	}
	char *text = json_dumps(j, JSON_INDENT(2));
	json_t *sv = json_object_get(j, "client_secret");
	OPENSSL_cleanse((char *)json_string_value(sv), json_string_length(sv));
	json_decref(j);
	_cleanup_free_ char *def = cli_profile_default_path();
	const char *path = cli->profile_path ? cli->profile_path : def;
	_cleanup_free_ char *dir = strdup(path);
	char *slash = dir ? strrchr(dir, '/') : NULL;
	int r = text ? 0 : cvm_err_nomem(&err);
	if (r == 0 && slash && slash != dir) {
		*slash = 0;
		r = cvm_mkdir_p(dir, 0700, &err);
	}
	if (r == 0)
		r = cvm_file_write_atomic(path, text, strlen(text), 0600, &err);
	if (text)
		cvm_free_secure(text, strlen(text));
	if (r < 0)
		return cli_fail(&err, "login");
	if (!cli->json)
		printf("logged in to %s as %s; profile %s\n", c->base_url, c->client_id, path);
	return CLI_OK;
}
