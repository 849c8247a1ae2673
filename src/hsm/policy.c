/* SPDX-License-Identifier: Apache-2.0 */
/* hsm release policy: the Azure Secure Key Release policy grammar (1.0.0 and the legacy
 * condition/value leaf) — parse, validate with field-precise errors, evaluate against verified
 * token claims, authority normalization. */
#include <ctype.h>
#include <math.h>
#include <string.h>
#include <strings.h>

#include "auth-internal.h"

#define ROOT "release_policy"

static const char *const operators[] = {
	"equals", "notEquals", "less", "lessOrEquals", "greater", "greaterOrEquals", "exists",
};
enum op { OP_EQ, OP_NE, OP_LT, OP_LE, OP_GT, OP_GE, OP_EXISTS, OP_N };

/* Member of obj whose name equals key case-insensitively (the published grammar spells the
 * keys in lowercase, real policies in camelCase). */
static json_t *get_ci(json_t *obj, const char *key, const char **actual)
{
	const char *k;
	json_t *v;
	json_object_foreach(obj, k, v) {
		if (strcasecmp(k, key) == 0) {
			if (actual)
				*actual = k;
			return v;
		}
	}
	return NULL;
}

static int op_index(const char *name)
{
	for (int i = 0; i < OP_N; i++)
		if (strcasecmp(operators[i], name) == 0)
			return i;
	return -1;
}

/* ---- numbers ---------------------------------------------------------------------------- */

/* Strict decimal number from a string ("12", "-3", "1.5"); false for anything else. */
static bool str_number(const char *s, double *out)
{
	if (!s || !*s || isspace((unsigned char)*s))
		return false;
	for (const char *p = s; *p; p++)
		if (!isdigit((unsigned char)*p) && *p != '-' && *p != '+' && *p != '.' &&
		    *p != 'e' && *p != 'E')
			return false;
	char *end;
	double d = strtod(s, &end);
	if (*end || !isfinite(d))
		return false;
	*out = d;
	return true;
}

static bool json_number(json_t *v, double *out)
{
	if (json_is_integer(v)) {
		*out = (double)json_integer_value(v);
		return true;
	}
	if (json_is_real(v)) {
		*out = json_real_value(v);
		return true;
	}
	if (json_is_string(v))
		return str_number(json_string_value(v), out);
	return false;
}

static bool str_bool(const char *s, bool *out)
{
	if (strcasecmp(s, "true") == 0)
		*out = true;
	else if (strcasecmp(s, "false") == 0)
		*out = false;
	else
		return false;
	return true;
}

/* ---- validation ------------------------------------------------------------------------- */

static int check_value(json_t *v, int op, const char *path, struct cvm_err *err)
{
	if (op == OP_EXISTS) {
		bool b;
		if (json_is_boolean(v) || (json_is_string(v) && str_bool(json_string_value(v), &b)))
			return 0;
		return cvm_err_badparam(err, "%s: expected true or false for exists, got %s", path,
					cvm_json_type_name(v));
	}
	if (op == OP_LT || op == OP_LE || op == OP_GT || op == OP_GE) {
		double d;
		if ((json_is_number(v) || json_is_string(v)) && json_number(v, &d))
			return 0;
		return cvm_err_badparam(err, "%s: expected a number for %s, got %s", path,
					operators[op], cvm_json_type_name(v));
	}
	if (json_is_string(v) || json_is_number(v) || json_is_boolean(v))
		return 0;
	return cvm_err_badparam(err, "%s: expected a string, number or boolean, got %s", path,
				cvm_json_type_name(v));
}

static int check_condition(json_t *c, const char *path, int depth, struct cvm_err *err);

/* A list of conditions under anyOf/allOf. */
static int check_list(json_t *list, const char *path, int depth, struct cvm_err *err)
{
	if (!json_is_array(list))
		return cvm_err_badparam(err, "%s: expected an array, got %s", path,
					cvm_json_type_name(list));
	if (json_array_size(list) == 0)
		return cvm_err_badparam(err, "%s: expected at least one condition", path);
	size_t i;
	json_t *c;
	json_array_foreach(list, i, c) {
		char sub[384];
		snprintf(sub, sizeof(sub), "%s[%zu]", path, i);
		int r = check_condition(c, sub, depth + 1, err);
		if (r < 0)
			return r;
	}
	return 0;
}

/* Exactly one of anyOf/allOf in obj; returns the list and its key. */
static int one_list(json_t *obj, const char *path, json_t **list, const char **key,
		    struct cvm_err *err)
{
	const char *ka = NULL, *kl = NULL;
	json_t *any = get_ci(obj, "anyOf", &ka), *all = get_ci(obj, "allOf", &kl);
	if (any && all)
		return cvm_err_badparam(err, "%s: expected either anyOf or allOf, not both", path);
	if (!any && !all)
		return cvm_err_badparam(err, "%s: expected anyOf or allOf", path);
	*list = any ? any : all;
	*key = any ? "anyOf" : "allOf";
	return 0;
}

static int unknown_member(json_t *obj, const char *path, const char *const *allowed,
			  struct cvm_err *err)
{
	const char *k;
	json_t *v;
	json_object_foreach(obj, k, v) {
		bool ok = false;
		for (const char *const *a = allowed; *a && !ok; a++)
			ok = strcasecmp(*a, k) == 0;
		if (!ok)
			return cvm_err_badparam(err, "%s.%s: unknown member", path, k);
	}
	return 0;
}

static int check_leaf(json_t *c, const char *path, struct cvm_err *err)
{
	char sub[384];
	json_t *claim = get_ci(c, "claim", NULL);
	snprintf(sub, sizeof(sub), "%s.claim", path);
	if (!json_is_string(claim))
		return cvm_err_badparam(err, "%s: expected a string, got %s", sub,
					claim ? cvm_json_type_name(claim) : "nothing");
	if (!*json_string_value(claim))
		return cvm_err_badparam(err, "%s: must not be empty", sub);
	json_t *cond = get_ci(c, "condition", NULL);
	if (cond) {
		/* legacy {"claim","condition":"equals","value"} */
		static const char *const legacy[] = { "claim", "condition", "value", NULL };
		int r = unknown_member(c, path, legacy, err);
		if (r < 0)
			return r;
		snprintf(sub, sizeof(sub), "%s.condition", path);
		int op = json_is_string(cond) ? op_index(json_string_value(cond)) : -1;
		if (op < 0)
			return cvm_err_badparam(err, "%s: expected one of equals, notEquals, less, "
						"lessOrEquals, greater, greaterOrEquals, exists", sub);
		json_t *v = get_ci(c, "value", NULL);
		snprintf(sub, sizeof(sub), "%s.value", path);
		if (!v)
			return cvm_err_badparam(err, "%s: required field is missing", sub);
		return check_value(v, op, sub, err);
	}
	int found = -1;
	const char *k;
	json_t *v;
	json_object_foreach(c, k, v) {
		if (strcasecmp(k, "claim") == 0)
			continue;
		int op = op_index(k);
		if (op < 0)
			return cvm_err_badparam(err, "%s.%s: unknown member (operators: equals, "
						"notEquals, less, lessOrEquals, greater, "
						"greaterOrEquals, exists)", path, k);
		if (found >= 0)
			return cvm_err_badparam(err, "%s: expected exactly one operator, got %s and "
						"%s", path, operators[found], operators[op]);
		found = op;
		snprintf(sub, sizeof(sub), "%s.%s", path, k);
		int r = check_value(v, op, sub, err);
		if (r < 0)
			return r;
	}
	if (found < 0)
		return cvm_err_badparam(err, "%s: expected an operator (equals, notEquals, less, "
					"lessOrEquals, greater, greaterOrEquals, exists)", path);
	return 0;
}

static int check_condition(json_t *c, const char *path, int depth, struct cvm_err *err)
{
	if (depth > CVM_JSON_MAX_DEPTH)
		return cvm_err_badparam(err, "%s: conditions nested too deeply", path);
	if (!json_is_object(c))
		return cvm_err_badparam(err, "%s: expected an object, got %s", path,
					cvm_json_type_name(c));
	if (get_ci(c, "claim", NULL))
		return check_leaf(c, path, err);
	if (get_ci(c, "authority", NULL))
		return cvm_err_badparam(err, "%s.authority: authorities belong at the top level "
					"only", path);
	static const char *const lists[] = { "anyOf", "allOf", NULL };
	int r = unknown_member(c, path, lists, err);
	if (r < 0)
		return r;
	json_t *list;
	const char *key;
	if (!get_ci(c, "anyOf", NULL) && !get_ci(c, "allOf", NULL))
		return cvm_err_badparam(err, "%s: expected a claim condition (claim and an "
					"operator) or anyOf/allOf", path);
	if ((r = one_list(c, path, &list, &key, err)) < 0)
		return r;
	char sub[384];
	snprintf(sub, sizeof(sub), "%s.%s", path, key);
	return check_list(list, sub, depth, err);
}

int cvm_hsm_authority_normalize(const char *url, const char *what, char **out,
				struct cvm_err *err)
{
	if (!url)
		return cvm_err_badparam(err, "%s: expected a URL", what);
	size_t slen;
	if (strncasecmp(url, "https://", 8) == 0)
		slen = 8;
	else if (strncasecmp(url, "http://", 7) == 0)
		slen = 7;
	else
		return cvm_err_badparam(err, "%s: expected an https:// URL, got \"%s\"", what, url);
	const char *host = url + slen;
	size_t hlen = strcspn(host, "/?#");
	if (hlen == 0 || memchr(host, '@', hlen))
		return cvm_err_badparam(err, "%s: expected a URL with a host (no user info), got "
					"\"%s\"", what, url);
	if (strpbrk(host, "?#"))
		return cvm_err_badparam(err, "%s: query and fragment are not allowed", what);
	for (const char *p = url; *p; p++)
		if ((unsigned char)*p <= 0x20 || *p == 0x7f)
			return cvm_err_badparam(err, "%s: whitespace/control characters are not "
						"allowed", what);
	struct cvm_buf b = { 0 };
	bool https = slen == 8;
	if (cvm_buf_append_str(&b, https ? "https://" : "http://") < 0)
		goto nomem;
	/* Drop a default port ("host:443" for https, "host:80" for http). */
	size_t hl = hlen;
	const char *dp = https ? ":443" : ":80";
	size_t dl = strlen(dp);
	if (hl > dl && memcmp(host + hl - dl, dp, dl) == 0)
		hl -= dl;
	for (size_t i = 0; i < hl; i++) {
		char ch = (char)tolower((unsigned char)host[i]);
		if (cvm_buf_append(&b, &ch, 1) < 0)
			goto nomem;
	}
	const char *path = host + hlen;
	size_t pl = strlen(path);
	while (pl && path[pl - 1] == '/')
		pl--;
	if (cvm_buf_append(&b, path, pl) < 0 || !cvm_buf_cstr(&b))
		goto nomem;
	*out = (char *)b.data;
	return 0;
nomem:
	cvm_buf_free(&b);
	return cvm_err_nomem(err);
}

int cvm_hsm_release_policy_validate(json_t *policy, struct cvm_err *err)
{
	if (!json_is_object(policy))
		return cvm_err_badparam(err, ROOT ": expected an object, got %s",
					policy ? cvm_json_type_name(policy) : "nothing");
	static const char *const top[] = { "version", "anyOf", "allOf", NULL };
	int r = unknown_member(policy, ROOT, top, err);
	if (r < 0)
		return r;
	json_t *ver = get_ci(policy, "version", NULL);
	if (ver && !json_is_null(ver)) {
		const char *v = json_string_value(ver);
		if (!v || (strcmp(v, "1.0.0") != 0 && strcmp(v, "1.0") != 0))
			return cvm_err_badparam(err, ROOT ".version: expected \"1.0.0\"");
	}
	json_t *list;
	const char *key;
	if ((r = one_list(policy, ROOT, &list, &key, err)) < 0)
		return r;
	char path[384];
	snprintf(path, sizeof(path), ROOT ".%s", key);
	if (!json_is_array(list))
		return cvm_err_badparam(err, "%s: expected an array, got %s", path,
					cvm_json_type_name(list));
	if (json_array_size(list) == 0)
		return cvm_err_badparam(err, "%s: expected at least one authority", path);
	size_t i;
	json_t *a;
	json_array_foreach(list, i, a) {
		char ap[400];
		snprintf(ap, sizeof(ap), "%s[%zu]", path, i);
		if (!json_is_object(a))
			return cvm_err_badparam(err, "%s: expected an object, got %s", ap,
						cvm_json_type_name(a));
		static const char *const amembers[] = { "authority", "anyOf", "allOf", NULL };
		if ((r = unknown_member(a, ap, amembers, err)) < 0)
			return r;
		json_t *auth = get_ci(a, "authority", NULL);
		char sub[420];
		snprintf(sub, sizeof(sub), "%s.authority", ap);
		if (!json_is_string(auth))
			return cvm_err_badparam(err, "%s: expected a string, got %s", sub,
						auth ? cvm_json_type_name(auth) : "nothing");
		_cleanup_free_ char *norm = NULL;
		if ((r = cvm_hsm_authority_normalize(json_string_value(auth), sub, &norm, err)) < 0)
			return r;
		json_t *cl;
		const char *ck;
		if ((r = one_list(a, ap, &cl, &ck, err)) < 0)
			return r;
		snprintf(sub, sizeof(sub), "%s.%s", ap, ck);
		if ((r = check_list(cl, sub, 2, err)) < 0)
			return r;
	}
	return 0;
}

int cvm_hsm_release_policy_parse(const uint8_t *buf, size_t len, json_t **out,
				 struct cvm_err *err)
{
	_cleanup_json_ json_t *p = NULL;
	int r = cvm_json_parse(buf, len, true, &p, err);
	if (r < 0)
		return cvm_err_prefix(err, ROOT);
	if ((r = cvm_hsm_release_policy_validate(p, err)) < 0)
		return r;
	*out = CVM_TAKE(p);
	return 0;
}

/* ---- evaluation ------------------------------------------------------------------------- */

static bool all_hex(const char *s, size_t n)
{
	for (size_t i = 0; i < n; i++)
		if (!isxdigit((unsigned char)s[i]))
			return false;
	return n > 0;
}

static bool values_equal(json_t *claim, json_t *want)
{
	if (json_is_object(claim) || json_is_array(claim) || json_is_null(claim))
		return false;
	bool b1, b2;
	if (json_is_boolean(claim) || json_is_boolean(want)) {
		if (json_is_boolean(claim))
			b1 = json_is_true(claim);
		else if (!json_is_string(claim) || !str_bool(json_string_value(claim), &b1))
			return false;
		if (json_is_boolean(want))
			b2 = json_is_true(want);
		else if (!json_is_string(want) || !str_bool(json_string_value(want), &b2))
			return false;
		return b1 == b2;
	}
	if (json_is_number(claim) || json_is_number(want)) {
		double d1, d2;
		return json_number(claim, &d1) && json_number(want, &d2) && d1 == d2;
	}
	const char *s1 = json_string_value(claim), *s2 = json_string_value(want);
	if (!s1 || !s2)
		return false;
	size_t n1 = strlen(s1), n2 = strlen(s2);
	if (n1 != n2)
		return false;
	if (all_hex(s1, n1) && all_hex(s2, n2))
		return strncasecmp(s1, s2, n1) == 0;
	return strcmp(s1, s2) == 0;
}

static bool eval_leaf(json_t *c, json_t *claims)
{
	const char *claim = json_string_value(get_ci(c, "claim", NULL));
	json_t *cond = get_ci(c, "condition", NULL);
	int op;
	json_t *want;
	if (cond) {
		op = op_index(json_string_value(cond));
		want = get_ci(c, "value", NULL);
	} else {
		op = -1;
		want = NULL;
		const char *k;
		json_t *v;
		json_object_foreach(c, k, v) {
			if (strcasecmp(k, "claim") != 0) {
				op = op_index(k);
				want = v;
			}
		}
	}
	json_t *got = cvm_json_path(claims, claim);
	if (op == OP_EXISTS) {
		bool b = true;
		if (json_is_boolean(want))
			b = json_is_true(want);
		else
			str_bool(json_string_value(want), &b);
		return (got != NULL && !json_is_null(got)) == b;
	}
	if (!got || json_is_null(got))
		return false;
	switch (op) {
	case OP_EQ: return values_equal(got, want);
	case OP_NE: return !values_equal(got, want);
	case OP_LT: case OP_LE: case OP_GT: case OP_GE: {
		double a, b;
		if (!json_number(got, &a) || !json_number(want, &b))
			return false;
		return op == OP_LT ? a < b : op == OP_LE ? a <= b : op == OP_GT ? a > b : a >= b;
	}
	default: return false;
	}
}

static bool eval_condition(json_t *c, json_t *claims);

static bool eval_list(json_t *obj, json_t *claims)
{
	json_t *any = get_ci(obj, "anyOf", NULL), *all = get_ci(obj, "allOf", NULL);
	json_t *list = any ? any : all;
	size_t i;
	json_t *c;
	json_array_foreach(list, i, c) {
		bool ok = eval_condition(c, claims);
		if (any && ok)
			return true;
		if (!any && !ok)
			return false;
	}
	return !any;
}

static bool eval_condition(json_t *c, json_t *claims)
{
	if (get_ci(c, "claim", NULL))
		return eval_leaf(c, claims);
	return eval_list(c, claims);
}

/* For each authority clause: does it name the issuer, and is it satisfied? The policy must be
 * valid (validated by the caller). */
static int walk_authorities(json_t *policy, const char *issuer, json_t *claims, bool *named,
			    bool *allowed, struct cvm_err *err)
{
	int r;
	_cleanup_free_ char *iss = NULL;
	if ((r = cvm_hsm_authority_normalize(issuer, "target.iss", &iss, err)) < 0)
		return r;
	json_t *any = get_ci(policy, "anyOf", NULL), *all = get_ci(policy, "allOf", NULL);
	json_t *list = any ? any : all;
	bool any_named = false, any_ok = false, all_ok = true;
	size_t i;
	json_t *a;
	json_array_foreach(list, i, a) {
		_cleanup_free_ char *norm = NULL;
		if ((r = cvm_hsm_authority_normalize(json_string_value(get_ci(a, "authority", NULL)),
						     "authority", &norm, err)) < 0)
			return r;
		bool match = strcmp(norm, iss) == 0;
		bool ok = match && claims && eval_list(a, claims);
		any_named |= match;
		any_ok |= ok;
		all_ok &= ok;
	}
	*named = any_named;
	if (allowed)
		*allowed = any ? any_ok : all_ok;
	return 0;
}

int hsm_policy_names_issuer(json_t *policy, const char *issuer, bool *named,
			    struct cvm_err *err)
{
	return walk_authorities(policy, issuer, NULL, named, NULL, err);
}

int hsm_policy_eval(json_t *policy, const char *issuer, json_t *claims, bool *allowed,
		    struct cvm_err *err)
{
	if (!json_is_object(claims))
		return cvm_err_badparam(err, "claims: expected an object");
	bool named;
	return walk_authorities(policy, issuer, claims, &named, allowed, err);
}

int cvm_hsm_release_policy_names_issuer(json_t *policy, const char *issuer, bool *named,
					struct cvm_err *err)
{
	int r = cvm_hsm_release_policy_validate(policy, err);
	return r < 0 ? r : hsm_policy_names_issuer(policy, issuer, named, err);
}

int cvm_hsm_release_policy_eval(json_t *policy, const char *issuer, json_t *claims,
				bool *allowed, struct cvm_err *err)
{
	int r = cvm_hsm_release_policy_validate(policy, err);
	return r < 0 ? r : hsm_policy_eval(policy, issuer, claims, allowed, err);
}
