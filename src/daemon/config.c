/* SPDX-License-Identifier: Apache-2.0 */
/* cvmd configuration file: "key = value" lines (documented in docs/cvmd.8 and
 * contrib/cvmd.conf.example). Small on purpose: every key maps to one field. */
#include <ctype.h>
#include <stdio.h>
#include <string.h>

#include "daemon.h"

#define CVMD_CONFIG_MAX (64u * 1024u)

void cvmd_config_init(struct cvmd_config *c)
{
	*c = (struct cvmd_config){
		.svc_hsm = true,
		.svc_attest = true,
		.soft_delete_days = 90,
		.log_level = CVM_LOG_INFO,
	};
}

void cvmd_config_free(struct cvmd_config *c)
{
	char **strs[] = { &c->listen, &c->state_dir, &c->store, &c->tls_cert, &c->tls_key,
			  &c->base_url, &c->domain_key_file,
			  &c->admin_file, &c->attest_emulator_root, &c->dev_info,
			  &c->attest_emulator_fingerprint };
	for (size_t i = 0; i < CVM_ARRAY_SIZE(strs); i++) {
		free(*strs[i]);
		*strs[i] = NULL;
	}
}

static int set_str(char **dst, const char *v, struct cvm_err *err)
{
	char *d = strdup(v);
	if (!d)
		return cvm_err_nomem(err);
	free(*dst);
	*dst = d;
	return 0;
}

static int parse_bool(const char *v, bool *out, const char *key, unsigned line,
		      struct cvm_err *err)
{
	if (!strcmp(v, "true") || !strcmp(v, "yes") || !strcmp(v, "on") || !strcmp(v, "1")) {
		*out = true;
		return 0;
	}
	if (!strcmp(v, "false") || !strcmp(v, "no") || !strcmp(v, "off") || !strcmp(v, "0")) {
		*out = false;
		return 0;
	}
	return cvm_err_badparam(err, "line %u: %s: expected true or false, got \"%s\"", line, key, v);
}

static int parse_services(struct cvmd_config *c, const char *v, unsigned line,
			  struct cvm_err *err)
{
	c->svc_hsm = c->svc_attest = false;
	const char *p = v;
	while (*p) {
		size_t n = strcspn(p, ", ");
		if (n == 3 && !strncmp(p, "hsm", 3))
			c->svc_hsm = true;
		else if (n == 6 && !strncmp(p, "attest", 6))
			c->svc_attest = true;
		else if (n > 0)
			return cvm_err_badparam(err, "line %u: services: unknown service \"%.*s\" "
						"(expected hsm, attest)", line, (int)n, p);
		p += n;
		p += strspn(p, ", ");
	}
	if (!c->svc_hsm && !c->svc_attest)
		return cvm_err_badparam(err, "line %u: services: enable at least one of hsm, attest",
					line);
	return 0;
}

static int parse_level(const char *v, enum cvm_log_level *out, unsigned line,
		       struct cvm_err *err)
{
	static const char *const names[] = { "debug", "info", "warn", "error" };
	for (size_t i = 0; i < CVM_ARRAY_SIZE(names); i++)
		if (!strcmp(v, names[i])) {
			*out = (enum cvm_log_level)i;
			return 0;
		}
	return cvm_err_badparam(err, "line %u: log_level: expected debug, info, warn or error", line);
}

static int apply(struct cvmd_config *c, const char *key, const char *v, unsigned line,
		 struct cvm_err *err)
{
	struct {
		const char *key;
		char **dst;
	} strs[] = {
		{ "listen", &c->listen },       { "state_dir", &c->state_dir },
		{ "store", &c->store },         { "tls_cert", &c->tls_cert },
		{ "tls_key", &c->tls_key },     { "base_url", &c->base_url },
		{ "domain_key_file", &c->domain_key_file },
		{ "admin_credentials_file", &c->admin_file },
		{ "attest_emulator_root", &c->attest_emulator_root },
		{ "attest_emulator_fingerprint", &c->attest_emulator_fingerprint },
	};
	for (size_t i = 0; i < CVM_ARRAY_SIZE(strs); i++)
		if (!strcmp(key, strs[i].key))
			return set_str(strs[i].dst, v, err);
	if (!strcmp(key, "services"))
		return parse_services(c, v, line, err);
	if (!strcmp(key, "purge_protection"))
		return parse_bool(v, &c->purge_protection, key, line, err);
	if (!strcmp(key, "log_level"))
		return parse_level(v, &c->log_level, line, err);
	if (!strcmp(key, "soft_delete_days") || !strcmp(key, "threads")) {
		int64_t n;
		bool days = key[0] == 's';
		char what[64];
		snprintf(what, sizeof(what), "line %u: %s", line, key);
		int r = cvm_parse_i64(v, days ? 7 : 0, days ? 90 : 256, &n, what, err);
		if (r < 0)
			return r;
		if (days)
			c->soft_delete_days = (int)n;
		else
			c->threads = (unsigned)n;
		return 0;
	}
	return cvm_err_badparam(err, "line %u: unknown key \"%s\"", line, key);
}

static char *trim(char *s)
{
	while (isspace((unsigned char)*s))
		s++;
	size_t n = strlen(s);
	while (n > 0 && isspace((unsigned char)s[n - 1]))
		s[--n] = '\0';
	return s;
}

int cvmd_config_parse(struct cvmd_config *c, const uint8_t *buf, size_t len, struct cvm_err *err)
{
	if (len > CVMD_CONFIG_MAX)
		return cvm_err_badparam(err, "config: larger than %u bytes", CVMD_CONFIG_MAX);
	if (memchr(buf, '\0', len))
		return cvm_err_badparam(err, "config: contains a NUL byte");
	_cleanup_free_ char *text = strndup((const char *)buf, len);
	if (!text)
		return cvm_err_nomem(err);
	unsigned line = 0;
	char *save = NULL;
	/* strtok_r skips empty lines, so count lines by hand. */
	for (char *p = text; p; p = save) {
		char *nl = strchr(p, '\n');
		save = nl ? nl + 1 : NULL;
		if (nl)
			*nl = '\0';
		line++;
		char *s = trim(p);
		if (*s == '\0' || *s == '#' || *s == ';')
			continue;
		char *eq = strchr(s, '=');
		if (!eq)
			return cvm_err_badparam(err, "line %u: expected key = value", line);
		*eq = '\0';
		char *key = trim(s), *val = trim(eq + 1);
		size_t vl = strlen(val);
		if (vl >= 2 && val[0] == '"' && val[vl - 1] == '"') {
			val[vl - 1] = '\0';
			val++;
		}
		if (*key == '\0')
			return cvm_err_badparam(err, "line %u: empty key", line);
		int r = apply(c, key, val, line, err);
		if (r < 0)
			return r;
	}
	return 0;
}

int cvmd_config_load(struct cvmd_config *c, const char *path, struct cvm_err *err)
{
	_cleanup_free_ uint8_t *buf = NULL;
	size_t len = 0;
	int r = cvm_file_read(path, CVMD_CONFIG_MAX, &buf, &len, err);
	if (r < 0)
		return cvm_err_prefix(err, "config %s", path);
	r = cvmd_config_parse(c, buf, len, err);
	if (r < 0)
		return cvm_err_prefix(err, "config %s", path);
	return 0;
}

int cvmd_config_finish(struct cvmd_config *c, struct cvm_err *err)
{
	if (!c->listen && set_str(&c->listen, "127.0.0.1:8443", err) < 0)
		return -ENOMEM;
	if (!c->state_dir)
		return cvm_err_badparam(err, "state_dir: required");
	if (!c->store) {
		c->store = cvm_asprintf("sqlite:%s/cvmd.db", c->state_dir);
		if (!c->store)
			return cvm_err_nomem(err);
	}
	if ((c->tls_cert && !strcmp(c->tls_cert, "auto")) ||
	    (c->tls_key && !strcmp(c->tls_key, "auto"))) {
		free(c->tls_cert);
		free(c->tls_key);
		c->tls_cert = c->tls_key = NULL;
	}
	if (!c->tls_cert != !c->tls_key)
		return cvm_err_badparam(err, "tls_cert, tls_key: give both paths or neither (auto)");
	/* Trusting an emulator is an explicit pin: the directory alone could be replaced by
	 * anyone who can write it, so its ARK fingerprint must be configured too. */
	if (!c->dev && !c->attest_emulator_root != !c->attest_emulator_fingerprint)
		return cvm_err_badparam(err, "attest_emulator_root, attest_emulator_fingerprint: "
					"give both (the ARK SHA-256 printed by `cvm tee-emu init`) "
					"or neither");
	return 0;
}
