/* SPDX-License-Identifier: Apache-2.0 */
/* cvm hsm ...: service status, security domain (init = download, activate = upload) and
 * full-HSM backup/restore (Managed HSM's shapes). */
#include "cli.h"

#include <string.h>

#include <opencvm/crypto.h>
#include <opencvm/hsm.h>

#define SD_TOKEN_HEADER "x-opencvm-activation-token"
#define SD_FILE_MAX (1024u * 1024u)

int cli_resolve(struct cli *cli, struct cvm_err *err); /* conn.c */

/* ---- unauthenticated calls ----------------------------------------------------------------
 * Before activation no identity exists, so the security domain routes and /opencvm/status are
 * called without a bearer token; the activation token (a file cvmd wrote) travels in its own
 * header when given. */
static int anon_call(struct cli *cli, const char *method, const char *path,
		     const struct cvm_secret *token, json_t *body, json_t **out,
		     struct cvm_err *err)
{
	*out = NULL;
	int r = cli_resolve(cli, err);
	if (r < 0)
		return r;
	_cleanup_free_ char *url = cvm_asprintf("%s%s%sapi-version=7.5", cli->conn.base_url, path,
						strchr(path, '?') ? "&" : "?");
	_cleanup_free_ char *payload = body ? json_dumps(body, JSON_COMPACT) : NULL;
	char *th = token ? cvm_asprintf(SD_TOKEN_HEADER ": %.*s", (int)token->len,
					(const char *)token->data)
			 : NULL;
	if (!url || (body && !payload) || (token && !th)) {
		free(th);
		return cvm_err_nomem(err);
	}
	const char *hdrs[] = {"Content-Type: application/json", "Accept: application/json", th,
			      NULL};
	struct cvm_http_result res = {0};
	r = cvm_http_request(&cli->conn.http, method, url, hdrs, payload,
			     payload ? strlen(payload) : 0, &res, err);
	if (th)
		cvm_free_secure(th, strlen(th));
	if (payload)
		OPENSSL_cleanse(payload, strlen(payload)); /* shares, even though encrypted */
	if (r < 0) {
		cvm_err_prefix(err, "%s %s", method, url);
		err->errnum = ECONNREFUSED;
		return -ECONNREFUSED;
	}
	json_t *j = res.body.len ? json_loadb((const char *)res.body.data, res.body.len, 0, NULL)
				 : NULL;
	cvm_buf_wipe(&res.body); /* may carry administrator credentials */
	long status = res.status;
	cvm_http_result_free(&res);
	if (status >= 200 && status <= 299) {
		*out = j;
		return 0;
	}
	json_t *e = json_object_get(j, "error");
	const char *code = json_string_value(json_object_get(e, "code"));
	const char *msg = json_string_value(json_object_get(e, "message"));
	int errnum = status == 400 ? EINVAL : status == 401 ? EACCES : status == 403 ? EPERM
		   : status == 404 ? ENOENT : status == 409 ? EEXIST : status == 429 ? EAGAIN : EIO;
	r = cvm_err_set(err, errnum, code ? code : "HttpError", "HTTP %ld: %s", status,
			msg ? msg : "no error message");
	json_decref(j);
	return r;
}

/* The connection file shape (as `cvmd --dev` writes and --dev-info reads) for the new
 * administrator, written 0600. */
static int write_admin(struct cli *cli, json_t *admin, const char *path, struct cvm_err *err)
{
	json_t *a = json_pack("{s:s,s:O,s:O,s:O,s:O}", "base_url", cli->conn.base_url, "tenant",
			      json_object_get(admin, "tenant"), "client_id",
			      json_object_get(admin, "client_id"), "client_secret",
			      json_object_get(admin, "client_secret"), "object_id",
			      json_object_get(admin, "object_id"));
	if (a && cli->conn.ca_cert)
		json_object_set_new(a, "ca_cert", json_string(cli->conn.ca_cert));
	char *text = a ? json_dumps(a, JSON_INDENT(2)) : NULL;
	json_decref(a);
	if (!text)
		return cvm_err_nomem(err);
	size_t n = strlen(text);
	int r = cli_write_output(path, text, n, 0600, err);
	if (r == 0 && strcmp(path, "-") == 0)
		putchar('\n');
	cvm_free_secure(text, n);
	return r;
}

/* jansson keeps its own copy of the client secret: wipe it before the JSON is freed. */
static void wipe_admin(json_t *admin)
{
	json_t *sv = json_object_get(admin, "client_secret");
	if (json_is_string(sv))
		OPENSSL_cleanse((char *)json_string_value(sv), json_string_length(sv));
}

static int read_token(const char *path, struct cvm_secret **out, struct cvm_err *err)
{
	*out = NULL;
	if (!path)
		return 0;
	int r = cli_read_secret_file(path, out, err);
	return r < 0 ? cvm_err_prefix(err, "--activation-token-file %s", path) : 0;
}

static size_t count(const char **v)
{
	size_t n = 0;
	while (v && v[n])
		n++;
	return n;
}

/* cvm hsm init: POST /securitydomain/download with the officers' public keys. */
static int hsm_init(struct cli *cli, int argc, char **argv)
{
	const char *usage = "hsm init --officer-key A.pem --officer-key B.pem --officer-key C.pem "
			    "[...] --quorum M --out SD.json --activation-token-file FILE "
			    "[--admin-out ADMIN.json]";
	_cleanup_free_ const char **officers = NULL;
	const char *quorum = NULL, *outp = NULL, *token_file = NULL, *admin_out = NULL;
	const struct cli_opt opts[] = {{"--officer-key", true, NULL, NULL, &officers},
				       {"--quorum", true, &quorum, NULL, NULL},
				       {"--out", true, &outp, NULL, NULL},
				       {"--activation-token-file", true, &token_file, NULL, NULL},
				       {"--admin-out", true, &admin_out, NULL, NULL}};
	int rc = cli_parse(argc, argv, opts, CVM_ARRAY_SIZE(opts), NULL, 0, 0, NULL, usage);
	if (rc)
		return rc;
	struct cvm_err err = {0};
	int64_t m = 0;
	size_t n = count(officers);
	if (n < 3 || n > 10)
		return cli_usage_error(usage, "--officer-key: 3..10 officer keys are required, got %zu",
				       n);
	if (!quorum || cvm_parse_i64(quorum, 2, (int64_t)n, &m, "--quorum", &err) < 0)
		return cli_usage_error(usage, "--quorum: expected 2..%zu", n);
	if (!outp || !token_file)
		return cli_usage_error(usage, "--out and --activation-token-file are required");
	json_t *certs = json_array();
	for (size_t i = 0; certs && i < n; i++) {
		_cleanup_free_ uint8_t *pem = NULL;
		size_t len = 0;
		if (cvm_file_read(officers[i], 65536, &pem, &len, &err) < 0) {
			json_decref(certs);
			return cli_fail(&err, "hsm init: --officer-key");
		}
		if (json_array_append_new(certs, json_stringn((const char *)pem, len)) < 0) {
			json_decref(certs);
			cvm_err_badparam(&err, "%s: expected a PEM public key or certificate",
					 officers[i]);
			return cli_fail(&err, "hsm init: --officer-key");
		}
	}
	json_t *body = certs ? json_pack("{s:o,s:I}", "certificates", certs, "required",
					 (json_int_t)m)
			     : NULL;
	_cleanup_secret_ struct cvm_secret *token = NULL;
	json_t *res = NULL;
	int r = body ? read_token(token_file, &token, &err) : cvm_err_nomem(&err);
	if (r == 0)
		r = anon_call(cli, "POST", "/securitydomain/download", token, body, &res, &err);
	json_decref(body);
	if (r < 0)
		return r == -ECONNREFUSED ? (cli_fail(&err, "hsm init"), CLI_CONNECT)
					  : cli_fail(&err, "hsm init");
	const char *blob = json_string_value(json_object_get(res, "value"));
	json_t *admin = json_object_get(res, "administrator");
	if (!blob) {
		json_decref(res);
		cvm_err_internal(&err, "the answer has no security domain (\"value\")");
		return cli_fail(&err, "hsm init");
	}
	/* The blob exists nowhere else: if the file cannot be written, print it. */
	r = cli_write_output(outp, blob, strlen(blob), 0600, &err);
	if (r < 0) {
		cli_fail(&err, "hsm init: --out (the security domain follows on stdout)");
		printf("%s\n", blob);
	}
	if (admin) {
		int ra = write_admin(cli, admin, admin_out ? admin_out : "-", &err);
		if (ra < 0 && admin_out) {
			cli_fail(&err, "hsm init: --admin-out (credentials follow on stdout)");
			ra = write_admin(cli, admin, "-", &err);
		}
		r = r < 0 ? r : ra;
	}
	if (r == 0 && cli->json) {
		json_t *j = json_pack("{s:s,s:I,s:I,s:s?}", "security_domain", outp, "quorum",
				      (json_int_t)m, "officers", (json_int_t)n, "administrator",
				      admin ? admin_out : NULL);
		cli_print_json(j);
		json_decref(j);
	} else if (r == 0) {
		printf("security domain written to %s (quorum %lld of %zu)%s%s\n", outp,
		       (long long)m, n, admin && admin_out ? "; administrator credentials: " : "",
		       admin && admin_out ? admin_out : "");
	}
	wipe_admin(admin);
	json_decref(res);
	return r == 0 ? CLI_OK : CLI_FAIL;
}

/* Decrypt this officer's share locally and re-encrypt it to the exchange key of the cvmd. */
static int officer_share(json_t *sd, const char *key_path, EVP_PKEY *xkey, json_t *shares,
			 struct cvm_err *err)
{
	uint8_t *pem = NULL;
	size_t len = 0;
	int r = cvm_file_read(key_path, 65536, &pem, &len, err);
	if (r < 0)
		return cvm_err_prefix(err, "--officer-private-key");
	_cleanup_secret_ struct cvm_secret *share = NULL;
	r = cvm_hsm_domain_decrypt_share(sd, (const char *)pem, &share, err);
	cvm_free_secure(pem, len + 1);
	if (r < 0)
		return cvm_err_prefix(err, "%s", key_path);
	_cleanup_buf_ struct cvm_buf ct = {0};
	if ((r = cvm_rsa_oaep_encrypt(xkey, "SHA256", share->data, share->len, &ct, err)) < 0)
		return r;
	char *b = cvm_b64url_encode(ct.data, ct.len);
	if (!b || json_array_append_new(shares, json_string(b)) < 0) {
		free(b);
		return cvm_err_nomem(err);
	}
	free(b);
	return 0;
}

/* cvm hsm activate: GET /securitydomain/upload (exchange key), POST /securitydomain/upload. */
static int hsm_activate(struct cli *cli, int argc, char **argv)
{
	const char *usage = "hsm activate --security-domain SD.json --officer-private-key A-key.pem "
			    "--officer-private-key B-key.pem [...] [--activation-token-file FILE "
			    "--admin-out ADMIN.json]";
	_cleanup_free_ const char **keys = NULL;
	const char *sd_path = NULL, *token_file = NULL, *admin_out = NULL;
	const struct cli_opt opts[] = {{"--security-domain", true, &sd_path, NULL, NULL},
				       {"--officer-private-key", true, NULL, NULL, &keys},
				       {"--activation-token-file", true, &token_file, NULL, NULL},
				       {"--admin-out", true, &admin_out, NULL, NULL}};
	int rc = cli_parse(argc, argv, opts, CVM_ARRAY_SIZE(opts), NULL, 0, 0, NULL, usage);
	if (rc)
		return rc;
	size_t n = count(keys);
	if (!sd_path || n == 0)
		return cli_usage_error(usage, "--security-domain and at least one "
					      "--officer-private-key are required");
	struct cvm_err err = {0};
	_cleanup_free_ uint8_t *raw = NULL;
	size_t len = 0;
	_cleanup_json_ json_t *sd = NULL, *tk = NULL, *shares = json_array(), *res = NULL,
			      *status = NULL;
	_cleanup_key_ struct cvm_key *xkey = NULL;
	_cleanup_secret_ struct cvm_secret *token = NULL;
	int r = cvm_file_read(sd_path, SD_FILE_MAX, &raw, &len, &err);
	if (r == 0 && (r = cvm_json_parse(raw, len, false, &sd, &err)) < 0)
		cvm_err_prefix(&err, "--security-domain %s", sd_path);
	if (r == 0)
		r = read_token(token_file, &token, &err);
	if (r < 0)
		return cli_fail(&err, "hsm activate");
	r = anon_call(cli, "GET", "/securitydomain/upload", NULL, NULL, &tk, &err);
	if (r == 0 && (r = cvm_key_from_jwk(json_object_get(tk, "transfer_key"), false, &xkey,
					    &err)) == 0 &&
	    (cvm_key_type(xkey) != CVM_KTY_RSA || cvm_key_bits(xkey) < 2048))
		r = cvm_err_badparam(&err, "transfer_key: expected an RSA key of >= 2048 bits");
	if (r < 0)
		return r == -ECONNREFUSED ? (cli_fail(&err, "hsm activate"), CLI_CONNECT)
					  : cli_fail(&err, "hsm activate: exchange key");
	for (size_t i = 0; i < n && r == 0; i++)
		r = officer_share(sd, keys[i], cvm_key_pkey(xkey), shares, &err);
	if (r < 0)
		return cli_fail(&err, "hsm activate");
	json_t *value = json_pack("{s:O,s:O}", "shares", shares, "security_domain", sd);
	char *vtext = value ? json_dumps(value, JSON_COMPACT) : NULL;
	json_decref(value);
	json_t *body = vtext ? json_pack("{s:s}", "value", vtext) : NULL;
	free(vtext);
	if (!body) {
		cvm_err_nomem(&err);
		return cli_fail(&err, "hsm activate");
	}
	r = anon_call(cli, "POST", "/securitydomain/upload", token, body, &res, &err);
	json_decref(body);
	if (r == 0)
		r = anon_call(cli, "GET", "/securitydomain/upload/pending", NULL, NULL, &status,
			      &err);
	if (r < 0)
		return cli_fail(&err, "hsm activate");
	const char *st = json_string_value(json_object_get(status, "status"));
	json_t *admin = json_object_get(res, "administrator");
	if (admin && (r = write_admin(cli, admin, admin_out ? admin_out : "-", &err)) < 0) {
		cli_fail(&err, "hsm activate: --admin-out (credentials follow on stdout)");
		write_admin(cli, admin, "-", &err);
	}
	wipe_admin(admin);
	if (cli->json) {
		cli_print_json(status);
	} else {
		const char *det = json_string_value(json_object_get(status, "status_details"));
		printf("activation: %s (%s)\n", st ? st : "-", det ? det : "-");
	}
	return st && !strcmp(st, "Success") && r == 0 ? CLI_OK : CLI_FAIL;
}

static int hsm_status(struct cli *cli, int argc, char **argv)
{
	const char *usage = "hsm status";
	int rc = cli_parse(argc, argv, NULL, 0, NULL, 0, 0, NULL, usage);
	if (rc)
		return rc;
	struct cvm_err err = {0};
	json_t *st = NULL, *res = NULL;
	/* Activation state first, without a token (before activation no identity exists). */
	int r = anon_call(cli, "GET", "/opencvm/status", NULL, NULL, &st, &err);
	bool reachable = r == 0 || err.errnum != ECONNREFUSED;
	bool activated = r == 0 && json_is_true(json_object_get(st, "activated"));
	bool domain = r == 0 && json_is_true(json_object_get(st, "security_domain"));
	bool authenticated = false;
	json_decref(st);
	/* One cheap authenticated call tells authenticated (and key access) apart. */
	if (r == 0 && activated) {
		r = cli_call(cli, "GET", "/keys?maxresults=1", NULL, &res, &err);
		json_decref(res);
		authenticated = r == 0 || (err.errnum != EACCES && err.errnum != ECONNREFUSED);
	}
	if (cli->json) {
		json_t *j = json_pack("{s:s,s:b,s:b,s:b,s:b}", "url",
				      cli->conn.base_url ? cli->conn.base_url : "", "reachable",
				      reachable, "authenticated", authenticated, "activated",
				      activated, "security_domain", domain);
		if (r < 0)
			json_object_set_new(j, "detail", json_string(err.msg));
		cli_print_json(j);
		json_decref(j);
	} else {
		printf("url              %s\nreachable        %s\nsecurity domain  %s\n"
		       "activated        %s\nauthenticated    %s\n",
		       cli->conn.base_url ? cli->conn.base_url : "-", reachable ? "yes" : "no",
		       domain ? "yes" : "no", activated ? "yes" : "no",
		       authenticated ? "yes" : "no");
		if (r < 0 && err.errnum != EPERM)
			printf("detail           %s\n", err.msg);
		else if (reachable && !activated)
			printf("detail           not activated: %s\n",
			       domain ? "cvm hsm activate (upload the security domain)"
				      : "cvm hsm init (create the security domain)");
	}
	/* A 403 on keys/read only means this identity is an administrator, not a key user. */
	if (!reachable || (activated && !authenticated))
		return CLI_CONNECT;
	return activated && (r == 0 || err.errnum == EPERM) ? CLI_OK : CLI_FAIL;
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

/* The names for the same two flows: download = init, upload = activate. */
static int hsm_security_domain(struct cli *cli, int argc, char **argv)
{
	static const struct cli_verb verbs[] = {
		{"download", hsm_init, "download (as hsm init)"},
		{"upload", hsm_activate, "upload (as hsm activate)"},
	};
	return cli_dispatch(cli, "hsm security-domain", verbs, CVM_ARRAY_SIZE(verbs), argc - 1,
			    argv + 1);
}

int cli_hsm(struct cli *cli, int argc, char **argv)
{
	static const struct cli_verb verbs[] = {
		{"status", hsm_status, "status"},
		{"init", hsm_init, "init --officer-key PEM... --quorum M --out SD.json "
				   "--activation-token-file F [--admin-out ADMIN.json]"},
		{"activate", hsm_activate, "activate --security-domain SD.json "
					   "--officer-private-key PEM... [--activation-token-file F "
					   "--admin-out ADMIN.json]"},
		{"security-domain", hsm_security_domain, "security-domain download|upload ..."},
		{"backup", hsm_backup, "backup --dir DIR"},
		{"restore", hsm_restore, "restore --dir DIR --folder NAME"},
	};
	return cli_dispatch(cli, "hsm", verbs, CVM_ARRAY_SIZE(verbs), argc, argv);
}
