/* SPDX-License-Identifier: Apache-2.0 */
/* cvm key ...: the Key Vault keys API from the command line. */
#include "cli.h"

#include <opencvm/crypto.h>
#include <string.h>

#define CLI_MAX_INPUT (1u << 20)

/* Names and versions go into URL paths: allow only what Key Vault allows. */
static int check_segment(const char *what, const char *s, const char *usage)
{
	if (!s || !*s || strlen(s) > 127)
		return cli_usage_error(usage, "%s: expected 1..127 characters", what);
	for (const char *p = s; *p; p++)
		if (!((*p >= 'a' && *p <= 'z') || (*p >= 'A' && *p <= 'Z') ||
		      (*p >= '0' && *p <= '9') || *p == '-'))
			return cli_usage_error(usage, "%s '%s': only letters, digits and '-'", what, s);
	return 0;
}

static char *key_path(const char *name, const char *version, const char *suffix)
{
	return cvm_asprintf("/keys/%s%s%s%s", name, version ? "/" : "", version ? version : "",
			    suffix ? suffix : "");
}

/* Operations address a version; without --version use the latest (one GET). */
static char *op_path(struct cli *cli, const char *name, const char *version, const char *suffix,
		     struct cvm_err *err)
{
	_cleanup_free_ char *latest = NULL;
	if (!version) {
		_cleanup_free_ char *p = key_path(name, NULL, NULL);
		json_t *res = NULL;
		if (cli_call(cli, "GET", p, NULL, &res, err) < 0)
			return NULL;
		const char *kid = json_string_value(cvm_json_path(res, "key.kid"));
		const char *slash = kid ? strrchr(kid, '/') : NULL;
		latest = slash ? strdup(slash + 1) : NULL;
		json_decref(res);
		if (!latest) {
			cvm_err_internal(err, "key %s: response has no kid", name);
			return NULL;
		}
		version = latest;
	}
	return key_path(name, version, suffix);
}

static const char *const key_labels[] = {"kid", "kty", "key_ops", "curve", "enabled",
					 "exportable", "created", "updated", "expires",
					 "not before", "recovery", "tags"};
static const char *const key_paths[] = {"key.kid", "key.kty", "key.key_ops", "key.crv",
					"attributes.enabled", "attributes.exportable",
					"attributes.created", "attributes.updated", "attributes.exp",
					"attributes.nbf", "attributes.recoveryLevel", "tags"};

static int show_bundle(struct cli *cli, json_t *bundle)
{
	if (cli->json)
		cli_print_json(bundle);
	else
		cli_print_fields(bundle, key_labels, key_paths, CVM_ARRAY_SIZE(key_labels));
	return CLI_OK;
}

static int parse_time_opt(const char *v, const char *what, int64_t *out, const char *usage)
{
	struct cvm_err err = {0};
	if (cvm_parse_i64(v, 0, INT64_MAX, out, what, &err) < 0)
		return cli_usage_error(usage, "%s", err.msg);
	return 0;
}

/* Shared by create/update: attributes, tags, ops, release policy. */
struct key_props {
	const char *exp, *nbf, *ops, *policy_file;
	const char **tags;
	bool enable, disable, exportable, immutable;
};

static void key_props_free(struct key_props *p)
{
	free(p->tags);
}

static int build_props(const struct key_props *p, json_t *body, const char *usage)
{
	json_t *attrs = json_object();
	json_object_set_new(body, "attributes", attrs);
	if (p->enable && p->disable)
		return cli_usage_error(usage, "--enable and --disable exclude each other");
	if (p->enable || p->disable)
		json_object_set_new(attrs, "enabled", json_boolean(p->enable));
	if (p->exportable)
		json_object_set_new(attrs, "exportable", json_true());
	int64_t t;
	if (p->exp) {
		if (parse_time_opt(p->exp, "--exp", &t, usage))
			return CLI_USAGE;
		json_object_set_new(attrs, "exp", json_integer(t));
	}
	if (p->nbf) {
		if (parse_time_opt(p->nbf, "--nbf", &t, usage))
			return CLI_USAGE;
		json_object_set_new(attrs, "nbf", json_integer(t));
	}
	if (p->ops) {
		json_t *ops = json_array();
		_cleanup_free_ char *copy = strdup(p->ops);
		char *save = NULL;
		for (char *tok = strtok_r(copy, ",", &save); tok; tok = strtok_r(NULL, ",", &save))
			json_array_append_new(ops, json_string(tok));
		json_object_set_new(body, "key_ops", ops);
	}
	if (p->tags) {
		json_t *tags = json_object();
		for (size_t i = 0; p->tags[i]; i++) {
			const char *eq = strchr(p->tags[i], '=');
			if (!eq)
				return cli_usage_error(usage, "--tag '%s': expected NAME=VALUE",
						       p->tags[i]);
			_cleanup_free_ char *k = strndup(p->tags[i], (size_t)(eq - p->tags[i]));
			json_object_set_new(tags, k, json_string(eq + 1));
		}
		json_object_set_new(body, "tags", tags);
	}
	if (p->policy_file) {
		struct cvm_err err = {0};
		_cleanup_free_ uint8_t *raw = NULL;
		size_t len;
		json_t *pol = NULL;
		if (cli_read_input(p->policy_file, CLI_MAX_INPUT, &raw, &len, &err) < 0 ||
		    cvm_json_parse(raw, len, false, &pol, &err) < 0)
			return cli_fail(&err, "--release-policy");
		_cleanup_free_ char *compact = json_dumps(pol, JSON_COMPACT);
		json_decref(pol);
		json_t *rp = json_object();
		json_object_set_new(rp, "contentType",
				    json_string("application/json; charset=utf-8"));
		if (cvm_json_set_b64url(rp, "data", compact, strlen(compact)) < 0) {
			json_decref(rp);
			return CLI_FAIL;
		}
		if (p->immutable)
			json_object_set_new(rp, "immutable", json_true());
		json_object_set_new(body, "release_policy", rp);
	}
	return 0;
}

static int key_create(struct cli *cli, int argc, char **argv)
{
	const char *usage = "key create NAME [--kty RSA-HSM|EC-HSM|oct-HSM] [--size BITS] "
			    "[--curve P-256|P-384|P-521] [--ops a,b] [--exportable "
			    "--release-policy FILE [--immutable]] [--tag K=V]... [--exp T] [--nbf T] "
			    "[--disable]";
	const char *kty = "RSA-HSM", *size = NULL, *curve = NULL, *pos[1];
	_cleanup_(key_props_free) struct key_props p = {0};
	const struct cli_opt opts[] = {
		{"--kty", true, &kty, NULL, NULL},      {"--size", true, &size, NULL, NULL},
		{"--curve", true, &curve, NULL, NULL},  {"--ops", true, &p.ops, NULL, NULL},
		{"--exp", true, &p.exp, NULL, NULL},    {"--nbf", true, &p.nbf, NULL, NULL},
		{"--tag", true, NULL, NULL, &p.tags},   {"--release-policy", true, &p.policy_file, NULL, NULL},
		{"--exportable", false, NULL, &p.exportable, NULL},
		{"--immutable", false, NULL, &p.immutable, NULL},
		{"--disable", false, NULL, &p.disable, NULL},
	};
	int rc = cli_parse(argc, argv, opts, CVM_ARRAY_SIZE(opts), pos, 1, 1, NULL, usage);
	if (rc || (rc = check_segment("NAME", pos[0], usage)))
		return rc;
	json_t *body = json_pack("{s:s}", "kty", kty);
	if (size) {
		int64_t bits;
		if ((rc = parse_time_opt(size, "--size", &bits, usage))) {
			json_decref(body);
			return rc;
		}
		json_object_set_new(body, "key_size", json_integer(bits));
	}
	if (curve)
		json_object_set_new(body, "crv", json_string(curve));
	if ((rc = build_props(&p, body, usage))) {
		json_decref(body);
		return rc;
	}
	_cleanup_free_ char *path = key_path(pos[0], NULL, "/create");
	json_t *res = NULL;
	struct cvm_err err = {0};
	int r = cli_call(cli, "POST", path, body, &res, &err);
	json_decref(body);
	if (r < 0) {
		rc = cli_fail(&err, "key create");
		return rc;
	}
	rc = show_bundle(cli, res);
	json_decref(res);
	return rc;
}

static int key_import(struct cli *cli, int argc, char **argv)
{
	const char *usage = "key import NAME --jwk FILE [--exportable --release-policy FILE] [--tag K=V]...";
	const char *jwk_file = NULL, *pos[1];
	_cleanup_(key_props_free) struct key_props p = {0};
	const struct cli_opt opts[] = {
		{"--jwk", true, &jwk_file, NULL, NULL}, {"--tag", true, NULL, NULL, &p.tags},
		{"--release-policy", true, &p.policy_file, NULL, NULL},
		{"--exportable", false, NULL, &p.exportable, NULL},
		{"--immutable", false, NULL, &p.immutable, NULL},
	};
	int rc = cli_parse(argc, argv, opts, CVM_ARRAY_SIZE(opts), pos, 1, 1, NULL, usage);
	if (rc || (rc = check_segment("NAME", pos[0], usage)))
		return rc;
	if (!jwk_file) {
		rc = cli_usage_error(usage, "--jwk is required");
		return rc;
	}
	struct cvm_err err = {0};
	uint8_t *raw = NULL;
	size_t len;
	json_t *jwk = NULL;
	if (cli_read_input(jwk_file, CLI_MAX_INPUT, &raw, &len, &err) < 0 ||
	    cvm_json_parse(raw, len, false, &jwk, &err) < 0) {
		if (raw)
			cvm_free_secure(raw, len);
		rc = cli_fail(&err, "--jwk");
		return rc;
	}
	cvm_free_secure(raw, len);
	json_t *body = json_pack("{s:o,s:b}", "key", jwk, "Hsm", 1);
	if ((rc = build_props(&p, body, usage))) {
		json_decref(body);
		return rc;
	}
	_cleanup_free_ char *path = key_path(pos[0], NULL, NULL);
	json_t *res = NULL;
	int r = cli_call(cli, "PUT", path, body, &res, &err);
	json_decref(body); /* the JWK's private fields are freed by jansson; keep bodies small */
	if (r < 0) {
		rc = cli_fail(&err, "key import");
		return rc;
	}
	rc = show_bundle(cli, res);
	json_decref(res);
	return rc;
}

/* Follow nextLink until the list ends, collecting every item. */
static int list_all(struct cli *cli, const char *path, const char *what, json_t **items)
{
	struct cvm_err err = {0};
	json_t *page = NULL;
	*items = json_array();
	if (cli_call(cli, "GET", path, NULL, &page, &err) < 0)
		return cli_fail(&err, what);
	for (int guard = 0; guard < 100000; guard++) {
		json_array_extend(*items, json_object_get(page, "value"));
		const char *next = json_string_value(json_object_get(page, "nextLink"));
		if (!next || !*next)
			break;
		_cleanup_free_ char *n = strdup(next);
		json_decref(page);
		page = NULL;
		if (cli_call_url(cli, "GET", n, NULL, &page, &err) < 0)
			return cli_fail(&err, what);
	}
	json_decref(page);
	return CLI_OK;
}

static int key_list(struct cli *cli, int argc, char **argv)
{
	const char *usage = "key list [--deleted]";
	bool deleted = false;
	const struct cli_opt opts[] = {{"--deleted", false, NULL, &deleted, NULL}};
	int rc = cli_parse(argc, argv, opts, 1, NULL, 0, 0, NULL, usage);
	if (rc)
		return rc;
	json_t *items = NULL;
	rc = list_all(cli, deleted ? "/deletedkeys?maxresults=25" : "/keys?maxresults=25",
		      "key list", &items);
	if (rc == CLI_OK) {
		if (cli->json) {
			cli_print_json(items);
		} else if (deleted) {
			const char *h[] = {"KID", "DELETED", "PURGE AT", "RECOVERY"};
			const char *pth[] = {"kid", "deletedDate", "scheduledPurgeDate",
					     "attributes.recoveryLevel"};
			cli_print_table(items, h, pth, 4);
		} else {
			const char *h[] = {"KID", "ENABLED", "EXPORTABLE", "UPDATED"};
			const char *pth[] = {"kid", "attributes.enabled", "attributes.exportable",
					     "attributes.updated"};
			cli_print_table(items, h, pth, 4);
		}
	}
	json_decref(items);
	return rc;
}

static int key_versions(struct cli *cli, int argc, char **argv)
{
	const char *usage = "key versions NAME", *pos[1];
	int rc = cli_parse(argc, argv, NULL, 0, pos, 1, 1, NULL, usage);
	if (rc || (rc = check_segment("NAME", pos[0], usage)))
		return rc;
	_cleanup_free_ char *path = key_path(pos[0], NULL, "/versions?maxresults=25");
	json_t *items = NULL;
	rc = list_all(cli, path, "key versions", &items);
	if (rc == CLI_OK) {
		if (cli->json) {
			cli_print_json(items);
		} else {
			const char *h[] = {"KID", "ENABLED", "CREATED", "EXPIRES"};
			const char *pth[] = {"kid", "attributes.enabled", "attributes.created",
					     "attributes.exp"};
			cli_print_table(items, h, pth, 4);
		}
	}
	json_decref(items);
	return rc;
}

/* Verbs that take NAME [--version V] and one HTTP call without a body. */
static int simple_call(struct cli *cli, int argc, char **argv, const char *usage,
		       const char *method, const char *prefix, const char *suffix, bool versioned,
		       bool bundle_out)
{
	const char *version = NULL, *pos[1];
	const struct cli_opt opts[] = {{"--version", true, &version, NULL, NULL}};
	int rc = cli_parse(argc, argv, opts, versioned ? 1 : 0, pos, 1, 1, NULL, usage);
	if (rc || (rc = check_segment("NAME", pos[0], usage)) ||
	    (version && (rc = check_segment("--version", version, usage))))
		return rc;
	_cleanup_free_ char *path = cvm_asprintf("%s/%s%s%s%s", prefix, pos[0], version ? "/" : "",
						 version ? version : "", suffix);
	json_t *res = NULL;
	struct cvm_err err = {0};
	if (cli_call(cli, method, path, NULL, &res, &err) < 0)
		return cli_fail(&err, argv[0]);
	if (bundle_out && res)
		rc = show_bundle(cli, res);
	else if (res && cli->json)
		cli_print_json(res);
	else if (!cli->json)
		printf("%s: done\n", pos[0]);
	json_decref(res);
	return rc;
}

static int key_show(struct cli *cli, int argc, char **argv)
{
	return simple_call(cli, argc, argv, "key show NAME [--version V]", "GET", "/keys", "", true,
			   true);
}

static int key_delete(struct cli *cli, int argc, char **argv)
{
	return simple_call(cli, argc, argv, "key delete NAME", "DELETE", "/keys", "", false, true);
}

static int key_show_deleted(struct cli *cli, int argc, char **argv)
{
	return simple_call(cli, argc, argv, "key show-deleted NAME", "GET", "/deletedkeys", "",
			   false, true);
}

static int key_recover(struct cli *cli, int argc, char **argv)
{
	return simple_call(cli, argc, argv, "key recover NAME", "POST", "/deletedkeys", "/recover",
			   false, true);
}

static int key_purge(struct cli *cli, int argc, char **argv)
{
	return simple_call(cli, argc, argv, "key purge NAME", "DELETE", "/deletedkeys", "", false,
			   false);
}

static int key_rotate(struct cli *cli, int argc, char **argv)
{
	return simple_call(cli, argc, argv, "key rotate NAME", "POST", "/keys", "/rotate", false,
			   true);
}

static int key_update(struct cli *cli, int argc, char **argv)
{
	const char *usage = "key update NAME [--version V] [--enable|--disable] [--exp T] [--nbf T] "
			    "[--ops a,b] [--tag K=V]... [--release-policy FILE [--immutable]]";
	const char *version = NULL, *pos[1];
	_cleanup_(key_props_free) struct key_props p = {0};
	const struct cli_opt opts[] = {
		{"--version", true, &version, NULL, NULL}, {"--ops", true, &p.ops, NULL, NULL},
		{"--exp", true, &p.exp, NULL, NULL},       {"--nbf", true, &p.nbf, NULL, NULL},
		{"--tag", true, NULL, NULL, &p.tags},
		{"--release-policy", true, &p.policy_file, NULL, NULL},
		{"--enable", false, NULL, &p.enable, NULL},
		{"--disable", false, NULL, &p.disable, NULL},
		{"--immutable", false, NULL, &p.immutable, NULL},
	};
	int rc = cli_parse(argc, argv, opts, CVM_ARRAY_SIZE(opts), pos, 1, 1, NULL, usage);
	if (rc || (rc = check_segment("NAME", pos[0], usage)))
		return rc;
	json_t *body = json_object();
	if ((rc = build_props(&p, body, usage))) {
		json_decref(body);
		return rc;
	}
	_cleanup_free_ char *path = key_path(pos[0], version, NULL);
	json_t *res = NULL;
	struct cvm_err err = {0};
	int r = cli_call(cli, "PATCH", path, body, &res, &err);
	json_decref(body);
	if (r < 0) {
		rc = cli_fail(&err, "key update");
		return rc;
	}
	rc = show_bundle(cli, res);
	json_decref(res);
	return rc;
}

/* wrap/unwrap/encrypt/decrypt: raw bytes in, raw bytes out; GCM parameters travel in a small
 * JSON side file so decrypt can be given exactly what encrypt produced. */
static int key_crypt(struct cli *cli, int argc, char **argv, const char *op)
{
	_cleanup_free_ char *usage = cvm_asprintf(
		"key %s NAME --alg ALG --in FILE --out FILE [--version V] [--aad FILE] "
		"[--params FILE (GCM iv/tag: written by encrypt, read by decrypt)]", argv[0]);
	const char *alg = NULL, *in = NULL, *outp = NULL, *version = NULL, *aad = NULL,
		   *params = NULL, *pos[1];
	const struct cli_opt opts[] = {
		{"--alg", true, &alg, NULL, NULL},     {"--in", true, &in, NULL, NULL},
		{"--out", true, &outp, NULL, NULL},    {"--version", true, &version, NULL, NULL},
		{"--aad", true, &aad, NULL, NULL},     {"--params", true, &params, NULL, NULL},
	};
	int rc = cli_parse(argc, argv, opts, CVM_ARRAY_SIZE(opts), pos, 1, 1, NULL, usage);
	if (rc || (rc = check_segment("NAME", pos[0], usage)))
		return rc;
	if (!alg || !in || !outp)
		return cli_usage_error(usage, "--alg, --in and --out are required");
	struct cvm_err err = {0};
	uint8_t *data = NULL;
	size_t len = 0;
	if (cli_read_input(in, CLI_MAX_INPUT, &data, &len, &err) < 0)
		return cli_fail(&err, "--in");
	json_t *body = json_pack("{s:s}", "alg", alg);
	int r = cvm_json_set_b64url(body, "value", data, len);
	cvm_free_secure(data, len + 1);
	if (r < 0) {
		json_decref(body);
		return CLI_FAIL;
	}
	if (aad) {
		_cleanup_free_ uint8_t *a = NULL;
		size_t alen;
		if (cli_read_input(aad, CLI_MAX_INPUT, &a, &alen, &err) < 0) {
			json_decref(body);
			return cli_fail(&err, "--aad");
		}
		cvm_json_set_b64url(body, "aad", a, alen);
	}
	if (params && strcmp(op, "decrypt") == 0) {
		_cleanup_free_ uint8_t *raw = NULL;
		size_t plen;
		json_t *pj = NULL;
		if (cli_read_input(params, CLI_MAX_INPUT, &raw, &plen, &err) < 0 ||
		    cvm_json_parse(raw, plen, false, &pj, &err) < 0) {
			json_decref(body);
			return cli_fail(&err, "--params");
		}
		const char *keys[] = {"iv", "tag"};
		for (size_t i = 0; i < 2; i++) {
			json_t *v = json_object_get(pj, keys[i]);
			if (v)
				json_object_set(body, keys[i], v);
		}
		json_decref(pj);
	}
	_cleanup_free_ char *suffix = cvm_asprintf("/%s", op);
	_cleanup_free_ char *path = op_path(cli, pos[0], version, suffix, &err);
	json_t *res = NULL;
	r = path ? cli_call(cli, "POST", path, body, &res, &err) : -EIO;
	json_decref(body);
	if (r < 0)
		return cli_fail(&err, argv[0]);
	uint8_t *outd = NULL;
	size_t outlen = 0;
	if (cvm_json_b64url(res, "value", "value", true, &outd, &outlen, &err) < 0) {
		json_decref(res);
		return cli_fail(&err, "response");
	}
	r = cli_write_output(outp, outd, outlen, 0600, &err);
	cvm_free_secure(outd, outlen);
	if (r < 0) {
		json_decref(res);
		return cli_fail(&err, "--out");
	}
	if (params && strcmp(op, "encrypt") == 0 && json_object_get(res, "iv")) {
		json_t *pj = json_pack("{s:O*,s:O*}", "iv", json_object_get(res, "iv"), "tag",
				       json_object_get(res, "tag"));
		_cleanup_free_ char *s = json_dumps(pj, JSON_COMPACT);
		json_decref(pj);
		if (cli_write_output(params, s, strlen(s), 0644, &err) < 0) {
			json_decref(res);
			return cli_fail(&err, "--params");
		}
	}
	if (cli->json && strcmp(outp, "-") != 0) {
		json_object_del(res, "value");
		cli_print_json(res);
	}
	json_decref(res);
	return CLI_OK;
}

static int key_wrap(struct cli *cli, int argc, char **argv) { return key_crypt(cli, argc, argv, "wrapkey"); }
static int key_unwrap(struct cli *cli, int argc, char **argv) { return key_crypt(cli, argc, argv, "unwrapkey"); }
static int key_encrypt(struct cli *cli, int argc, char **argv) { return key_crypt(cli, argc, argv, "encrypt"); }
static int key_decrypt(struct cli *cli, int argc, char **argv) { return key_crypt(cli, argc, argv, "decrypt"); }

/* sign/verify hash the input locally (Key Vault signs digests), with the alg's hash. */
static int digest_input(const char *alg, const char *in, uint8_t *dg, size_t *dlen,
			struct cvm_err *err)
{
	const char *md = cvm_alg_digest(alg);
	if (!md)
		return cvm_err_badparam(err, "--alg: '%s' is not a signature algorithm (RS256..512, "
					     "PS256..512, ES256..512)", alg);
	_cleanup_free_ uint8_t *data = NULL;
	size_t len;
	int r = cli_read_input(in, 1u << 30, &data, &len, err);
	if (r < 0)
		return r;
	return cvm_digest(md, data, len, dg, dlen, err);
}

/* sign and verify share their arguments; verify reads --sig where sign writes --out. */
static int key_sign_or_verify(struct cli *cli, int argc, char **argv, bool verify)
{
	const char *usage = verify ? "key verify NAME --alg ALG --in FILE --sig SIGFILE [--version V]"
				   : "key sign NAME --alg ALG --in FILE --out SIGFILE [--version V]";
	const char *what = verify ? "key verify" : "key sign";
	const char *alg = NULL, *in = NULL, *sigf = NULL, *version = NULL, *pos[1];
	const struct cli_opt opts[] = {
		{"--alg", true, &alg, NULL, NULL}, {"--in", true, &in, NULL, NULL},
		{verify ? "--sig" : "--out", true, &sigf, NULL, NULL},
		{"--version", true, &version, NULL, NULL},
	};
	int rc = cli_parse(argc, argv, opts, CVM_ARRAY_SIZE(opts), pos, 1, 1, NULL, usage);
	if (rc || (rc = check_segment("NAME", pos[0], usage)))
		return rc;
	if (!alg || !in || !sigf)
		return cli_usage_error(usage, "--alg, --in and %s are required",
				       verify ? "--sig" : "--out");
	struct cvm_err err = {0};
	uint8_t dg[64];
	size_t dlen = sizeof(dg);
	_cleanup_free_ uint8_t *sig = NULL;
	size_t slen = 0;
	if (digest_input(alg, in, dg, &dlen, &err) < 0 ||
	    (verify && cli_read_input(sigf, 65536, &sig, &slen, &err) < 0))
		return cli_fail(&err, what);
	json_t *body = json_pack("{s:s}", "alg", alg);
	if (verify) {
		cvm_json_set_b64url(body, "digest", dg, dlen);
		cvm_json_set_b64url(body, "value", sig, slen);
	} else {
		cvm_json_set_b64url(body, "value", dg, dlen);
	}
	_cleanup_free_ char *path = op_path(cli, pos[0], version, verify ? "/verify" : "/sign", &err);
	json_t *res = NULL;
	int r = path ? cli_call(cli, "POST", path, body, &res, &err) : -EIO;
	json_decref(body);
	if (r < 0)
		return cli_fail(&err, what);
	if (verify) {
		bool valid = json_is_true(json_object_get(res, "value"));
		if (cli->json)
			cli_print_json(res);
		else
			printf("%s\n", valid ? "signature valid" : "signature INVALID");
		json_decref(res);
		return valid ? CLI_OK : CLI_FAIL;
	}
	_cleanup_free_ uint8_t *out = NULL;
	size_t olen;
	if (cvm_json_b64url(res, "value", "value", true, &out, &olen, &err) < 0 ||
	    cli_write_output(sigf, out, olen, 0644, &err) < 0) {
		json_decref(res);
		return cli_fail(&err, what);
	}
	if (cli->json) {
		json_object_del(res, "value");
		cli_print_json(res);
	}
	json_decref(res);
	return CLI_OK;
}

static int key_sign(struct cli *cli, int argc, char **argv)
{
	return key_sign_or_verify(cli, argc, argv, false);
}

static int key_verify(struct cli *cli, int argc, char **argv)
{
	return key_sign_or_verify(cli, argc, argv, true);
}

static int key_release(struct cli *cli, int argc, char **argv)
{
	const char *usage = "key release NAME --target TOKENFILE --out FILE [--version V] "
			    "[--nonce N] [--enc CKM_RSA_AES_KEY_WRAP|RSA_AES_KEY_WRAP_256|RSA_AES_KEY_WRAP_384]";
	const char *target = NULL, *outp = NULL, *version = NULL, *nonce = NULL, *enc = NULL,
		   *pos[1];
	const struct cli_opt opts[] = {
		{"--target", true, &target, NULL, NULL}, {"--out", true, &outp, NULL, NULL},
		{"--version", true, &version, NULL, NULL}, {"--nonce", true, &nonce, NULL, NULL},
		{"--enc", true, &enc, NULL, NULL},
	};
	int rc = cli_parse(argc, argv, opts, CVM_ARRAY_SIZE(opts), pos, 1, 1, NULL, usage);
	if (rc || (rc = check_segment("NAME", pos[0], usage)))
		return rc;
	if (!target || !outp)
		return cli_usage_error(usage, "--target and --out are required");
	struct cvm_err err = {0};
	_cleanup_free_ uint8_t *tok = NULL;
	size_t tlen;
	if (cli_read_input(target, CLI_MAX_INPUT, &tok, &tlen, &err) < 0)
		return cli_fail(&err, "--target");
	while (tlen && (tok[tlen - 1] == '\n' || tok[tlen - 1] == '\r'))
		tok[--tlen] = 0;
	json_t *body = json_pack("{s:s}", "target", (char *)tok);
	if (nonce)
		json_object_set_new(body, "nonce", json_string(nonce));
	if (enc)
		json_object_set_new(body, "enc", json_string(enc));
	_cleanup_free_ char *path = key_path(pos[0], version, "/release");
	json_t *res = NULL;
	int r = cli_call(cli, "POST", path, body, &res, &err);
	json_decref(body);
	if (r < 0)
		return cli_fail(&err, "key release");
	const char *jws = json_string_value(json_object_get(res, "value"));
	if (!jws || cli_write_output(outp, jws, strlen(jws), 0600, &err) < 0) {
		json_decref(res);
		return cli_fail(&err, "key release");
	}
	if (!cli->json)
		printf("%s: released (signed JWS written to %s)\n", pos[0], outp);
	json_decref(res);
	return CLI_OK;
}

static int key_rotation_policy(struct cli *cli, int argc, char **argv)
{
	const char *usage = "key rotation-policy NAME [--set FILE]";
	const char *set = NULL, *pos[1];
	const struct cli_opt opts[] = {{"--set", true, &set, NULL, NULL}};
	int rc = cli_parse(argc, argv, opts, 1, pos, 1, 1, NULL, usage);
	if (rc || (rc = check_segment("NAME", pos[0], usage)))
		return rc;
	struct cvm_err err = {0};
	json_t *body = NULL;
	if (set) {
		_cleanup_free_ uint8_t *raw = NULL;
		size_t len;
		if (cli_read_input(set, CLI_MAX_INPUT, &raw, &len, &err) < 0 ||
		    cvm_json_parse(raw, len, false, &body, &err) < 0)
			return cli_fail(&err, "--set");
	}
	_cleanup_free_ char *path = key_path(pos[0], NULL, "/rotationpolicy");
	json_t *res = NULL;
	int r = cli_call(cli, set ? "PUT" : "GET", path, body, &res, &err);
	json_decref(body);
	if (r < 0)
		return cli_fail(&err, "key rotation-policy");
	cli_print_json(res);
	json_decref(res);
	return CLI_OK;
}

static int key_backup(struct cli *cli, int argc, char **argv)
{
	const char *usage = "key backup NAME --out FILE", *outp = NULL, *pos[1];
	const struct cli_opt opts[] = {{"--out", true, &outp, NULL, NULL}};
	int rc = cli_parse(argc, argv, opts, 1, pos, 1, 1, NULL, usage);
	if (rc || (rc = check_segment("NAME", pos[0], usage)))
		return rc;
	if (!outp)
		return cli_usage_error(usage, "--out is required");
	struct cvm_err err = {0};
	_cleanup_free_ char *path = key_path(pos[0], NULL, "/backup");
	json_t *res = NULL;
	if (cli_call(cli, "POST", path, NULL, &res, &err) < 0)
		return cli_fail(&err, "key backup");
	const char *v = json_string_value(json_object_get(res, "value"));
	int r = v ? cli_write_output(outp, v, strlen(v), 0600, &err)
		  : cvm_err_internal(&err, "response has no value");
	json_decref(res);
	if (r < 0)
		return cli_fail(&err, "key backup");
	if (!cli->json)
		printf("%s: backup written to %s\n", pos[0], outp);
	return CLI_OK;
}

static int key_restore(struct cli *cli, int argc, char **argv)
{
	const char *usage = "key restore --in FILE", *in = NULL;
	const struct cli_opt opts[] = {{"--in", true, &in, NULL, NULL}};
	int rc = cli_parse(argc, argv, opts, 1, NULL, 0, 0, NULL, usage);
	if (rc)
		return rc;
	if (!in)
		return cli_usage_error(usage, "--in is required");
	struct cvm_err err = {0};
	_cleanup_free_ uint8_t *raw = NULL;
	size_t len;
	if (cli_read_input(in, 64u << 20, &raw, &len, &err) < 0)
		return cli_fail(&err, "--in");
	while (len && (raw[len - 1] == '\n' || raw[len - 1] == '\r'))
		raw[--len] = 0;
	json_t *body = json_pack("{s:s}", "value", (char *)raw);
	json_t *res = NULL;
	int r = cli_call(cli, "POST", "/keys/restore", body, &res, &err);
	json_decref(body);
	if (r < 0)
		return cli_fail(&err, "key restore");
	rc = show_bundle(cli, res);
	json_decref(res);
	return rc;
}

static int key_rng(struct cli *cli, int argc, char **argv)
{
	const char *usage = "key rng --count N [--out FILE]", *count = "32", *outp = "-";
	const struct cli_opt opts[] = {{"--count", true, &count, NULL, NULL},
				       {"--out", true, &outp, NULL, NULL}};
	int rc = cli_parse(argc, argv, opts, 2, NULL, 0, 0, NULL, usage);
	if (rc)
		return rc;
	int64_t n;
	struct cvm_err err = {0};
	if (cvm_parse_i64(count, 1, 128, &n, "--count", &err) < 0)
		return cli_usage_error(usage, "%s", err.msg);
	json_t *body = json_pack("{s:I}", "count", (json_int_t)n), *res = NULL;
	int r = cli_call(cli, "POST", "/rng", body, &res, &err);
	json_decref(body);
	if (r < 0)
		return cli_fail(&err, "key rng");
	_cleanup_free_ uint8_t *bytes = NULL;
	size_t blen;
	if (cvm_json_b64url(res, "value", "value", true, &bytes, &blen, &err) < 0) {
		json_decref(res);
		return cli_fail(&err, "key rng");
	}
	json_decref(res);
	if (strcmp(outp, "-") == 0 && !cli->json) {
		_cleanup_free_ char *hex = cvm_hex_encode(bytes, blen);
		printf("%s\n", hex);
		return CLI_OK;
	}
	if (cli_write_output(outp, bytes, blen, 0600, &err) < 0)
		return cli_fail(&err, "--out");
	return CLI_OK;
}

int cli_key(struct cli *cli, int argc, char **argv)
{
	static const struct cli_verb verbs[] = {
		{"create", key_create, "create NAME [--kty RSA-HSM|EC-HSM|oct-HSM] [--size N] [--curve C] ..."},
		{"import", key_import, "import NAME --jwk FILE [...]"},
		{"list", key_list, "list [--deleted]"},
		{"show", key_show, "show NAME [--version V]"},
		{"show-deleted", key_show_deleted, "show-deleted NAME"},
		{"versions", key_versions, "versions NAME"},
		{"update", key_update, "update NAME [--version V] [--enable|--disable] [--exp T] ..."},
		{"delete", key_delete, "delete NAME"},
		{"recover", key_recover, "recover NAME"},
		{"purge", key_purge, "purge NAME"},
		{"wrap", key_wrap, "wrap NAME --alg ALG --in FILE --out FILE"},
		{"unwrap", key_unwrap, "unwrap NAME --alg ALG --in FILE --out FILE"},
		{"encrypt", key_encrypt, "encrypt NAME --alg ALG --in FILE --out FILE [--params FILE]"},
		{"decrypt", key_decrypt, "decrypt NAME --alg ALG --in FILE --out FILE [--params FILE]"},
		{"sign", key_sign, "sign NAME --alg ALG --in FILE --out SIGFILE"},
		{"verify", key_verify, "verify NAME --alg ALG --in FILE --sig SIGFILE"},
		{"release", key_release, "release NAME --target TOKENFILE --out FILE [--nonce N] [--enc E]"},
		{"rotate", key_rotate, "rotate NAME"},
		{"rotation-policy", key_rotation_policy, "rotation-policy NAME [--set FILE]"},
		{"backup", key_backup, "backup NAME --out FILE"},
		{"restore", key_restore, "restore --in FILE"},
		{"rng", key_rng, "rng [--count N] [--out FILE]"},
	};
	return cli_dispatch(cli, "key", verbs, CVM_ARRAY_SIZE(verbs), argc, argv);
}
