/* SPDX-License-Identifier: Apache-2.0 */
/* Finding cvmd, authenticating (OAuth2 client credentials), and making Key Vault calls. */
#include "cli.h"

#include <string.h>

static const char *const token_scope = "https://managedhsm.azure.net/.default";

static int set_str(char **slot, const char *v)
{
	if (!v)
		return 0;
	char *c = strdup(v);
	if (!c)
		return -ENOMEM;
	free(*slot);
	*slot = c;
	return 0;
}

char *cli_profile_default_path(void);
char *cli_profile_default_path(void)
{
	const char *xdg = getenv("XDG_CONFIG_HOME");
	if (xdg && *xdg)
		return cvm_asprintf("%s/opencvm/profile.json", xdg);
	const char *home = getenv("HOME");
	return cvm_asprintf("%s/.config/opencvm/profile.json", home && *home ? home : "/root");
}

/* Profiles and dev-info files share one shape:
 * {"base_url","tenant","client_id","client_secret","ca_cert"}. */
static int load_connection_file(struct cli_conn *c, const char *path, bool must_exist,
				struct cvm_err *err)
{
	uint8_t *raw = NULL;
	size_t len = 0;
	int r = cvm_file_read(path, 65536, &raw, &len, err);
	if (r == -ENOENT && !must_exist) {
		cvm_err_clear(err);
		return 0;
	}
	if (r < 0)
		return r;
	json_t *j = NULL;
	r = cvm_json_parse(raw, len, false, &j, err);
	cvm_free_secure(raw, len + 1);
	if (r < 0)
		return cvm_err_prefix(err, "%s", path);
	const char *url = NULL, *tenant = NULL, *cid = NULL, *secret = NULL, *ca = NULL;
	if ((r = cvm_json_str(j, "base_url", "base_url", false, &url, NULL, err)) < 0 ||
	    (r = cvm_json_str(j, "tenant", "tenant", false, &tenant, NULL, err)) < 0 ||
	    (r = cvm_json_str(j, "client_id", "client_id", false, &cid, NULL, err)) < 0 ||
	    (r = cvm_json_str(j, "client_secret", "client_secret", false, &secret, NULL, err)) < 0 ||
	    (r = cvm_json_str(j, "ca_cert", "ca_cert", false, &ca, NULL, err)) < 0) {
		json_decref(j);
		return cvm_err_prefix(err, "%s", path);
	}
	if (set_str(&c->base_url, url) < 0 || set_str(&c->tenant, tenant) < 0 ||
	    set_str(&c->client_id, cid) < 0 || set_str(&c->ca_cert, ca) < 0) {
		json_decref(j);
		return cvm_err_nomem(err);
	}
	if (secret) {
		cvm_secret_free(c->client_secret);
		c->client_secret = cvm_secret_from(secret, strlen(secret));
	}
	/* jansson keeps its own copy of the secret string: wipe it before freeing. */
	json_t *sv = json_object_get(j, "client_secret");
	if (json_is_string(sv))
		OPENSSL_cleanse((char *)json_string_value(sv), json_string_length(sv));
	json_decref(j);
	return 0;
}

int cli_resolve(struct cli *cli, struct cvm_err *err);
int cli_resolve(struct cli *cli, struct cvm_err *err)
{
	struct cli_conn *c = &cli->conn;
	int r;
	if (cli->dev_info) {
		if ((r = load_connection_file(c, cli->dev_info, true, err)) < 0)
			return r;
	} else {
		_cleanup_free_ char *def = cli_profile_default_path();
		const char *p = cli->profile_path ? cli->profile_path : def;
		if ((r = load_connection_file(c, p, cli->profile_path != NULL, err)) < 0)
			return r;
	}
	if (getenv("CVM_CLIENT_SECRET"))
		return cvm_err_badparam(err, "CVM_CLIENT_SECRET: secrets are not read from the "
					     "environment; put it in a file and set "
					     "CVM_CLIENT_SECRET_FILE, or use `cvm login`");
	const char *env_secret_file = getenv("CVM_CLIENT_SECRET_FILE");
	if (set_str(&c->base_url, getenv("CVM_URL")) < 0 ||
	    set_str(&c->tenant, getenv("CVM_TENANT")) < 0 ||
	    set_str(&c->client_id, getenv("CVM_CLIENT_ID")) < 0 ||
	    set_str(&c->ca_cert, getenv("CVM_CA_CERT")) < 0 ||
	    set_str(&c->base_url, cli->url) < 0 || set_str(&c->tenant, cli->tenant) < 0 ||
	    set_str(&c->client_id, cli->client_id) < 0 || set_str(&c->ca_cert, cli->ca_cert) < 0)
		return cvm_err_nomem(err);
	const char *sf = cli->secret_file ? cli->secret_file : env_secret_file;
	if (sf) {
		cvm_secret_free(c->client_secret);
		c->client_secret = NULL;
		if ((r = cli_read_secret_file(sf, &c->client_secret, err)) < 0)
			return r;
	}
	if (!c->base_url)
		return cvm_err_set(err, EINVAL, "NotConfigured",
				   "no service URL: pass --url or --dev-info, set CVM_URL, or run "
				   "`cvm login`");
	size_t ul = strlen(c->base_url);
	while (ul > 0 && c->base_url[ul - 1] == '/')
		c->base_url[--ul] = 0;
	if (!c->tenant && set_str(&c->tenant, "opencvm") < 0)
		return cvm_err_nomem(err);
	c->http.ca_file = c->ca_cert;
	c->http.allow_plain_http_loopback = false;
	c->http.timeout_ms = 60000;
	return 0;
}

char *cli_form_escape(const char *s, size_t len)
{
	static const char hex[] = "0123456789ABCDEF";
	char *o = malloc(len * 3 + 1), *p = o;
	if (!o)
		return NULL;
	for (size_t i = 0; i < len; i++) {
		unsigned char ch = (unsigned char)s[i];
		if ((ch >= 'A' && ch <= 'Z') || (ch >= 'a' && ch <= 'z') || (ch >= '0' && ch <= '9') ||
		    ch == '-' || ch == '_' || ch == '.' || ch == '~') {
			*p++ = (char)ch;
		} else {
			*p++ = '%';
			*p++ = hex[ch >> 4];
			*p++ = hex[ch & 15];
		}
	}
	*p = 0;
	return o;
}

/* Turn a non-2xx response into an error carrying the service's code and message. */
static int response_error(const struct cvm_http_result *res, struct cvm_err *err)
{
	int errnum;
	switch (res->status) {
	case 400: errnum = EINVAL; break;
	case 401: errnum = EACCES; break;
	case 403: errnum = EPERM; break;
	case 404: errnum = ENOENT; break;
	case 409: errnum = EEXIST; break;
	case 413: errnum = E2BIG; break;
	case 429: errnum = EAGAIN; break;
	default: errnum = EIO;
	}
	json_t *j = json_loadb((const char *)res->body.data, res->body.len, 0, NULL);
	json_t *e = json_object_get(j, "error");
	const char *code = NULL, *msg = NULL;
	if (json_is_object(e)) {
		code = json_string_value(json_object_get(e, "code"));
		msg = json_string_value(json_object_get(e, "message"));
	} else if (json_is_string(e)) { /* OAuth error shape */
		code = json_string_value(e);
		msg = json_string_value(json_object_get(j, "error_description"));
	}
	int r = cvm_err_set(err, errnum, code ? code : "HttpError", "HTTP %ld: %s", res->status,
			    msg ? msg : "no error message");
	json_decref(j);
	return r;
}

static int fetch_token(struct cli *cli, struct cvm_err *err)
{
	struct cli_conn *c = &cli->conn;
	if (!c->client_id || !c->client_secret)
		return cvm_err_set(err, EACCES, "NotConfigured",
				   "no credentials: pass --client-id and --client-secret-file, use "
				   "--dev-info, or run `cvm login`");
	_cleanup_free_ char *id = cli_form_escape(c->client_id, strlen(c->client_id));
	_cleanup_free_ char *scope = cli_form_escape(token_scope, strlen(token_scope));
	char *sec = cli_form_escape((const char *)c->client_secret->data, c->client_secret->len);
	_cleanup_free_ char *url = cvm_asprintf("%s/%s/oauth2/v2.0/token", c->base_url, c->tenant);
	if (!id || !scope || !sec || !url) {
		if (sec)
			cvm_free_secure(sec, strlen(sec));
		return cvm_err_nomem(err);
	}
	struct cvm_buf form = {0};
	int r = cvm_buf_printf(&form, "grant_type=client_credentials&client_id=%s&client_secret=%s&scope=%s",
			       id, sec, scope);
	cvm_free_secure(sec, strlen(sec));
	if (r < 0) {
		cvm_buf_wipe(&form);
		return cvm_err_nomem(err);
	}
	const char *hdrs[] = {"Content-Type: application/x-www-form-urlencoded",
			      "Accept: application/json", NULL};
	struct cvm_http_result res = {0};
	r = cvm_http_request(&c->http, "POST", url, hdrs, form.data, form.len, &res, err);
	cvm_buf_wipe(&form);
	if (r < 0) {
		cvm_err_prefix(err, "token request to %s", url);
		err->errnum = ECONNREFUSED;
		return -ECONNREFUSED;
	}
	if (res.status != 200) {
		r = response_error(&res, err);
		err->errnum = EACCES;
		cvm_http_result_free(&res);
		return -EACCES;
	}
	json_t *j = json_loadb((const char *)res.body.data, res.body.len, 0, NULL);
	cvm_http_result_free(&res);
	const char *tok = json_string_value(json_object_get(j, "access_token"));
	if (!tok) {
		json_decref(j);
		return cvm_err_set(err, EACCES, "Unauthorized", "token response has no access_token");
	}
	c->token = strdup(tok);
	json_decref(j);
	return c->token ? 0 : cvm_err_nomem(err);
}

int cli_connect(struct cli *cli, struct cvm_err *err)
{
	if (cli->conn_ready)
		return 0;
	int r = cli_resolve(cli, err);
	if (r < 0)
		return r;
	if ((r = fetch_token(cli, err)) < 0)
		return r;
	cli->conn_ready = true;
	return 0;
}

int cli_call_url(struct cli *cli, const char *method, const char *url, json_t *body,
		 json_t **out, struct cvm_err *err)
{
	int r = cli_connect(cli, err);
	if (r < 0)
		return r;
	_cleanup_free_ char *auth = cvm_asprintf("Authorization: Bearer %s", cli->conn.token);
	_cleanup_free_ char *payload = body ? json_dumps(body, JSON_COMPACT | JSON_ENCODE_ANY) : NULL;
	if (!auth || (body && !payload))
		return cvm_err_nomem(err);
	const char *hdrs[] = {auth, "Content-Type: application/json", "Accept: application/json",
			      NULL};
	struct cvm_http_result res = {0};
	r = cvm_http_request(&cli->conn.http, method, url, hdrs, payload,
			     payload ? strlen(payload) : 0, &res, err);
	if (payload)
		OPENSSL_cleanse(payload, strlen(payload)); /* bodies may carry key material */
	if (r < 0) {
		cvm_err_prefix(err, "%s %s", method, url);
		err->errnum = ECONNREFUSED;
		return -ECONNREFUSED;
	}
	if (res.status < 200 || res.status > 299) {
		r = response_error(&res, err);
		cvm_http_result_free(&res);
		return r;
	}
	*out = NULL;
	if (res.body.len) {
		json_error_t je;
		*out = json_loadb((const char *)res.body.data, res.body.len, 0, &je);
		if (!*out) {
			cvm_http_result_free(&res);
			return cvm_err_internal(err, "%s %s: response is not JSON: %s", method, url,
						je.text);
		}
	}
	cvm_buf_wipe(&res.body);
	cvm_http_result_free(&res);
	return 0;
}

int cli_call(struct cli *cli, const char *method, const char *path, json_t *body, json_t **out,
	     struct cvm_err *err)
{
	int r = cli_connect(cli, err);
	if (r < 0)
		return r;
	bool has_version = strstr(path, "api-version=") != NULL;
	_cleanup_free_ char *url = cvm_asprintf("%s%s%s", cli->conn.base_url, path,
						has_version ? "" : (strchr(path, '?') ? "&api-version=7.5" : "?api-version=7.5"));
	if (!url)
		return cvm_err_nomem(err);
	return cli_call_url(cli, method, url, body, out, err);
}

void cli_conn_free(struct cli_conn *c)
{
	free(c->base_url);
	free(c->tenant);
	free(c->client_id);
	free(c->ca_cert);
	if (c->token)
		cvm_free_secure(c->token, strlen(c->token));
	cvm_secret_free(c->client_secret);
	memset(c, 0, sizeof(*c));
}

int cli_switch_identity(struct cli *cli, const char *client_id, const struct cvm_secret *secret,
			struct cvm_err *err)
{
	int r = cli_connect(cli, err);
	if (r < 0)
		return r;
	struct cli_conn *c = &cli->conn;
	if (set_str(&c->client_id, client_id) < 0)
		return cvm_err_nomem(err);
	cvm_secret_free(c->client_secret);
	c->client_secret = cvm_secret_from(secret->data, secret->len);
	if (c->token)
		cvm_free_secure(c->token, strlen(c->token));
	c->token = NULL;
	if (!c->client_secret)
		return cvm_err_nomem(err);
	return fetch_token(cli, err);
}
