/* SPDX-License-Identifier: Apache-2.0 */
/* MAA attestation policy language, version 1.0 (text format), so users can bring their MAA
 * policies:
 *
 *   policy    := "version" "=" "1.0" ";" section*
 *   section   := ("authorizationrules" | "issuancerules" | "configurationrules")
 *                "{" rule* "}" ";"
 *   rule      := [ expr ] "=>" action ";"
 *   expr      := conj ( "||" conj )*            (&& binds tighter than ||)
 *   conj      := cond ( "&&" cond )*
 *   cond      := [ IDENT ":" ] "[" pred ( "," pred )* "]"
 *   pred      := ("type" | "value" | "issuer") OP literal     OP: == != < <= > >=
 *                (a single "=" is accepted as "==", as MAA's own examples do)
 *   action    := "permit" "(" ")" | "deny" "(" ")"
 *              | "issue" "(" "claim" "=" IDENT ")"
 *              | "issue" "(" "type" "=" STRING "," "value" "=" ( literal | IDENT "." field ) ")"
 *              | "issueproperty" "(" ... ")"           (configurationrules; recorded, unused)
 *   literal   := STRING | INTEGER | "true" | "false"
 *   comments  := "//" to end of line, "/" "*" ... "*" "/"
 *
 * Semantics: the incoming claims are the verdict's claims (each with issuer
 * "AttestationService"). A condition holds when one incoming claim satisfies all of its
 * predicates; a bound variable names the first such claim. Authorization: every rule whose
 * expression holds fires; deny() wins, otherwise at least one permit() is needed (a policy
 * without authorization rules permits). Issuance: every rule whose expression holds adds its
 * claim to the token. Errors carry line:column. */
#include <ctype.h>
#include <pthread.h>
#include <string.h>

#include <opencvm/json.h>

#include "attest-internal.h"

#define POLICY_MAX_TEXT (64 * 1024)
#define POLICY_MAX_RULES 256
#define POLICY_MAX_CONDS 16
#define POLICY_MAX_PREDS 8

enum tok_kind { T_EOF, T_IDENT, T_STRING, T_INT, T_PUNCT };
struct tok {
	enum tok_kind kind;
	const char *p;
	size_t len;
	int line, col;
	int64_t ival;
};
struct lexer {
	const char *s, *end;
	int line, col;
	struct tok cur;
	struct cvm_err *err;
};

enum op { OP_EQ, OP_NE, OP_LT, OP_LE, OP_GT, OP_GE };
enum lit_kind { L_STRING, L_INT, L_BOOL };
struct literal {
	enum lit_kind kind;
	char *s;
	int64_t i;
	bool b;
};
enum field { F_TYPE, F_VALUE, F_ISSUER };
struct pred {
	enum field field;
	enum op op;
	struct literal lit;
};
struct cond {
	char var[32];
	struct pred preds[POLICY_MAX_PREDS];
	size_t n;
	bool or_before; /* joined to the previous condition with || */
};
enum action_kind { A_PERMIT, A_DENY, A_ISSUE_CLAIM, A_ISSUE, A_ISSUEPROPERTY };
struct rule {
	struct cond conds[POLICY_MAX_CONDS];
	size_t n;
	enum action_kind action;
	char var[32];          /* issue(claim=c) or value=c.value */
	enum field var_field;
	char *type;            /* issue(type=...) */
	struct literal value;  /* when var is empty */
};
enum section { S_AUTH, S_ISSUE, S_CONFIG };
struct cvm_maa_policy {
	struct rule *rules[3];
	size_t n[3];
	bool has_auth;
	char *text;
	char hash[48]; /* base64url SHA-256 of the text */
};

static void lit_free(struct literal *l)
{
	free(l->s);
	l->s = NULL;
}

void cvm_maa_policy_free(struct cvm_maa_policy *p)
{
	if (!p)
		return;
	for (int s = 0; s < 3; s++) {
		for (size_t i = 0; i < p->n[s]; i++) {
			struct rule *r = &p->rules[s][i];
			for (size_t c = 0; c < r->n; c++)
				for (size_t k = 0; k < r->conds[c].n; k++)
					lit_free(&r->conds[c].preds[k].lit);
			free(r->type);
			lit_free(&r->value);
		}
		free(p->rules[s]);
	}
	free(p->text);
	free(p);
}

/* ---- lexer ------------------------------------------------------------------------------- */

static int lex_error(struct lexer *lx, int line, int col, const char *what)
{
	return cvm_err_badparam(lx->err, "policy:%d:%d: %s", line, col, what);
}

static void adv(struct lexer *lx)
{
	if (*lx->s == '\n') {
		lx->line++;
		lx->col = 1;
	} else {
		lx->col++;
	}
	lx->s++;
}

static int lex_next(struct lexer *lx)
{
	for (;;) {
		while (lx->s < lx->end && isspace((unsigned char)*lx->s))
			adv(lx);
		if (lx->end - lx->s >= 2 && lx->s[0] == '/' && lx->s[1] == '/') {
			while (lx->s < lx->end && *lx->s != '\n')
				adv(lx);
			continue;
		}
		if (lx->end - lx->s >= 2 && lx->s[0] == '/' && lx->s[1] == '*') {
			int l = lx->line, c = lx->col;
			adv(lx);
			adv(lx);
			while (lx->end - lx->s >= 2 && !(lx->s[0] == '*' && lx->s[1] == '/'))
				adv(lx);
			if (lx->end - lx->s < 2)
				return lex_error(lx, l, c, "unterminated comment");
			adv(lx);
			adv(lx);
			continue;
		}
		break;
	}
	struct tok *t = &lx->cur;
	t->p = lx->s;
	t->line = lx->line;
	t->col = lx->col;
	t->len = 0;
	if (lx->s >= lx->end) {
		t->kind = T_EOF;
		return 0;
	}
	unsigned char ch = (unsigned char)*lx->s;
	if (isalpha(ch) || ch == '_') {
		t->kind = T_IDENT;
		while (lx->s < lx->end &&
		       (isalnum((unsigned char)*lx->s) || *lx->s == '_' || *lx->s == '-'))
			adv(lx);
	} else if (isdigit(ch) || (ch == '-' && lx->end - lx->s > 1 && isdigit((unsigned char)lx->s[1]))) {
		t->kind = T_INT;
		adv(lx);
		while (lx->s < lx->end && (isdigit((unsigned char)*lx->s) || *lx->s == '.'))
			adv(lx);
	} else if (ch == '"') {
		t->kind = T_STRING;
		adv(lx);
		while (lx->s < lx->end && *lx->s != '"' && *lx->s != '\n') {
			if (*lx->s == '\\' && lx->end - lx->s > 1)
				adv(lx);
			adv(lx);
		}
		if (lx->s >= lx->end || *lx->s != '"')
			return lex_error(lx, t->line, t->col, "unterminated string");
		adv(lx);
	} else {
		t->kind = T_PUNCT;
		static const char *const two[] = { "==", "!=", "<=", ">=", "=>", "&&", "||" };
		for (size_t i = 0; i < CVM_ARRAY_SIZE(two); i++)
			if (lx->end - lx->s >= 2 && memcmp(lx->s, two[i], 2) == 0) {
				adv(lx);
				adv(lx);
				t->len = 2;
				return 0;
			}
		if (!strchr("=;{}[](),:.<>", ch))
			return lex_error(lx, t->line, t->col, "unexpected character");
		adv(lx);
	}
	t->len = (size_t)(lx->s - t->p);
	return 0;
}

static bool is_punct(const struct tok *t, const char *p)
{
	return t->kind == T_PUNCT && t->len == strlen(p) && memcmp(t->p, p, t->len) == 0;
}

static bool is_ident(const struct tok *t, const char *w)
{
	return t->kind == T_IDENT && t->len == strlen(w) && strncasecmp(t->p, w, t->len) == 0;
}

static int expect_punct(struct lexer *lx, const char *p)
{
	if (!is_punct(&lx->cur, p)) {
		char msg[64];
		snprintf(msg, sizeof(msg), "expected '%s'", p);
		return lex_error(lx, lx->cur.line, lx->cur.col, msg);
	}
	return lex_next(lx);
}

static int expect_ident(struct lexer *lx, const char *w)
{
	if (!is_ident(&lx->cur, w)) {
		char msg[64];
		snprintf(msg, sizeof(msg), "expected '%s'", w);
		return lex_error(lx, lx->cur.line, lx->cur.col, msg);
	}
	return lex_next(lx);
}

/* ---- parser ------------------------------------------------------------------------------ */

static int parse_string(struct lexer *lx, char **out)
{
	const struct tok *t = &lx->cur;
	char *s = malloc(t->len);
	if (!s)
		return cvm_err_nomem(lx->err);
	size_t o = 0;
	for (size_t i = 1; i + 1 < t->len; i++) {
		if (t->p[i] == '\\' && i + 2 < t->len)
			i++;
		s[o++] = t->p[i];
	}
	s[o] = '\0';
	*out = s;
	return lex_next(lx);
}

static int parse_literal(struct lexer *lx, struct literal *l)
{
	const struct tok *t = &lx->cur;
	memset(l, 0, sizeof(*l));
	if (t->kind == T_STRING) {
		l->kind = L_STRING;
		return parse_string(lx, &l->s);
	}
	if (t->kind == T_INT) {
		char buf[32];
		if (t->len >= sizeof(buf) || memchr(t->p, '.', t->len))
			return lex_error(lx, t->line, t->col, "expected an integer");
		memcpy(buf, t->p, t->len);
		buf[t->len] = '\0';
		struct cvm_err e2 = { 0 };
		if (cvm_parse_i64(buf, INT64_MIN, INT64_MAX, &l->i, "integer", &e2) < 0)
			return lex_error(lx, t->line, t->col, "integer out of range");
		l->kind = L_INT;
		return lex_next(lx);
	}
	if (is_ident(t, "true") || is_ident(t, "false")) {
		l->kind = L_BOOL;
		l->b = is_ident(t, "true");
		return lex_next(lx);
	}
	return lex_error(lx, t->line, t->col, "expected a string, integer, true or false");
}

static int parse_op(struct lexer *lx, enum op *op)
{
	static const struct { const char *p; enum op op; } ops[] = {
		{ "==", OP_EQ }, { "=", OP_EQ }, { "!=", OP_NE }, { "<=", OP_LE },
		{ ">=", OP_GE }, { "<", OP_LT }, { ">", OP_GT },
	};
	for (size_t i = 0; i < CVM_ARRAY_SIZE(ops); i++)
		if (is_punct(&lx->cur, ops[i].p)) {
			*op = ops[i].op;
			return lex_next(lx);
		}
	return lex_error(lx, lx->cur.line, lx->cur.col, "expected a comparison operator");
}

static int parse_field(struct lexer *lx, enum field *f)
{
	if (is_ident(&lx->cur, "type"))
		*f = F_TYPE;
	else if (is_ident(&lx->cur, "value"))
		*f = F_VALUE;
	else if (is_ident(&lx->cur, "issuer"))
		*f = F_ISSUER;
	else
		return lex_error(lx, lx->cur.line, lx->cur.col, "expected type, value or issuer");
	return lex_next(lx);
}

static int copy_ident(struct lexer *lx, char *out, size_t cap)
{
	if (lx->cur.kind != T_IDENT || lx->cur.len >= cap)
		return lex_error(lx, lx->cur.line, lx->cur.col, "expected a variable name");
	memcpy(out, lx->cur.p, lx->cur.len);
	out[lx->cur.len] = '\0';
	return lex_next(lx);
}

static int parse_cond(struct lexer *lx, struct cond *c)
{
	int rc;
	if (lx->cur.kind == T_IDENT) {
		if ((rc = copy_ident(lx, c->var, sizeof(c->var))) < 0 ||
		    (rc = expect_punct(lx, ":")) < 0)
			return rc;
	}
	if ((rc = expect_punct(lx, "[")) < 0)
		return rc;
	for (;;) {
		if (c->n >= POLICY_MAX_PREDS)
			return lex_error(lx, lx->cur.line, lx->cur.col, "too many predicates");
		/* Counted first so a literal allocated before a later error is freed. */
		struct pred *p = &c->preds[c->n++];
		if ((rc = parse_field(lx, &p->field)) < 0 || (rc = parse_op(lx, &p->op)) < 0 ||
		    (rc = parse_literal(lx, &p->lit)) < 0)
			return rc;
		if ((p->field != F_VALUE && p->lit.kind != L_STRING) ||
		    (p->field != F_VALUE && p->op != OP_EQ && p->op != OP_NE))
			return lex_error(lx, lx->cur.line, lx->cur.col,
					 "type and issuer compare with == or != against a string");
		if (is_punct(&lx->cur, ","))
			rc = lex_next(lx);
		else
			break;
		if (rc < 0)
			return rc;
	}
	return expect_punct(lx, "]");
}

static int parse_action(struct lexer *lx, struct rule *r, enum section sec)
{
	const struct tok t = lx->cur;
	int rc;
	if (is_ident(&t, "permit") || is_ident(&t, "deny")) {
		if (sec != S_AUTH)
			return lex_error(lx, t.line, t.col, "permit()/deny() only in authorizationrules");
		r->action = is_ident(&t, "permit") ? A_PERMIT : A_DENY;
		if ((rc = lex_next(lx)) < 0 || (rc = expect_punct(lx, "(")) < 0)
			return rc;
		return expect_punct(lx, ")");
	}
	bool prop = is_ident(&t, "issueproperty");
	if (!is_ident(&t, "issue") && !prop)
		return lex_error(lx, t.line, t.col, "expected permit, deny, issue or issueproperty");
	if (sec == S_AUTH)
		return lex_error(lx, t.line, t.col, "issue() is not allowed in authorizationrules");
	if ((rc = lex_next(lx)) < 0 || (rc = expect_punct(lx, "(")) < 0)
		return rc;
	if (is_ident(&lx->cur, "claim")) {
		if (prop)
			return lex_error(lx, lx->cur.line, lx->cur.col, "issueproperty needs type and value");
		r->action = A_ISSUE_CLAIM;
		if ((rc = lex_next(lx)) < 0 || (rc = expect_punct(lx, "=")) < 0 ||
		    (rc = copy_ident(lx, r->var, sizeof(r->var))) < 0)
			return rc;
		return expect_punct(lx, ")");
	}
	r->action = prop ? A_ISSUEPROPERTY : A_ISSUE;
	if ((rc = expect_ident(lx, "type")) < 0 || (rc = expect_punct(lx, "=")) < 0)
		return rc;
	if (lx->cur.kind != T_STRING)
		return lex_error(lx, lx->cur.line, lx->cur.col, "expected the claim type string");
	if ((rc = parse_string(lx, &r->type)) < 0 || (rc = expect_punct(lx, ",")) < 0 ||
	    (rc = expect_ident(lx, "value")) < 0 || (rc = expect_punct(lx, "=")) < 0)
		return rc;
	if (lx->cur.kind == T_IDENT && !is_ident(&lx->cur, "true") && !is_ident(&lx->cur, "false")) {
		if ((rc = copy_ident(lx, r->var, sizeof(r->var))) < 0 ||
		    (rc = expect_punct(lx, ".")) < 0 || (rc = parse_field(lx, &r->var_field)) < 0)
			return rc;
	} else if ((rc = parse_literal(lx, &r->value)) < 0) {
		return rc;
	}
	return expect_punct(lx, ")");
}

static bool var_bound(const struct rule *r, const char *var)
{
	for (size_t i = 0; i < r->n; i++)
		if (strcmp(r->conds[i].var, var) == 0)
			return true;
	return false;
}

static int parse_rule(struct lexer *lx, struct rule *r, enum section sec)
{
	int rc;
	int line = lx->cur.line, col = lx->cur.col;
	if (!is_punct(&lx->cur, "=>")) {
		for (;;) {
			if (r->n >= POLICY_MAX_CONDS)
				return lex_error(lx, lx->cur.line, lx->cur.col, "too many conditions");
			if ((rc = parse_cond(lx, &r->conds[r->n++])) < 0)
				return rc;
			if (is_punct(&lx->cur, "&&") || is_punct(&lx->cur, "||")) {
				bool orr = is_punct(&lx->cur, "||");
				if ((rc = lex_next(lx)) < 0)
					return rc;
				if (r->n < POLICY_MAX_CONDS)
					r->conds[r->n].or_before = orr;
				continue;
			}
			break;
		}
	}
	if ((rc = expect_punct(lx, "=>")) < 0 || (rc = parse_action(lx, r, sec)) < 0)
		return rc;
	if (r->var[0] && !var_bound(r, r->var))
		return lex_error(lx, line, col, "action uses a variable no condition binds");
	return expect_punct(lx, ";");
}

static int parse_policy(struct lexer *lx, struct cvm_maa_policy *p)
{
	int rc;
	if ((rc = lex_next(lx)) < 0 || (rc = expect_ident(lx, "version")) < 0 ||
	    (rc = expect_punct(lx, "=")) < 0)
		return rc;
	if (lx->cur.kind != T_INT || lx->cur.len != 3 || memcmp(lx->cur.p, "1.0", 3) != 0)
		return lex_error(lx, lx->cur.line, lx->cur.col, "only version=1.0 is supported");
	if ((rc = lex_next(lx)) < 0 || (rc = expect_punct(lx, ";")) < 0)
		return rc;
	bool seen[3] = { false };
	while (lx->cur.kind != T_EOF) {
		enum section sec;
		if (is_ident(&lx->cur, "authorizationrules"))
			sec = S_AUTH;
		else if (is_ident(&lx->cur, "issuancerules"))
			sec = S_ISSUE;
		else if (is_ident(&lx->cur, "configurationrules"))
			sec = S_CONFIG;
		else
			return lex_error(lx, lx->cur.line, lx->cur.col,
					 "expected authorizationrules, issuancerules or configurationrules");
		if (seen[sec])
			return lex_error(lx, lx->cur.line, lx->cur.col, "section appears twice");
		seen[sec] = true;
		if (sec == S_AUTH)
			p->has_auth = true;
		if ((rc = lex_next(lx)) < 0 || (rc = expect_punct(lx, "{")) < 0)
			return rc;
		while (!is_punct(&lx->cur, "}")) {
			if (lx->cur.kind == T_EOF)
				return lex_error(lx, lx->cur.line, lx->cur.col, "expected '}'");
			if (p->n[sec] >= POLICY_MAX_RULES)
				return lex_error(lx, lx->cur.line, lx->cur.col, "too many rules");
			struct rule *nr = realloc(p->rules[sec], (p->n[sec] + 1) * sizeof(*nr));
			if (!nr)
				return cvm_err_nomem(lx->err);
			p->rules[sec] = nr;
			memset(&nr[p->n[sec]], 0, sizeof(*nr));
			p->n[sec]++;
			if ((rc = parse_rule(lx, &nr[p->n[sec] - 1], sec)) < 0)
				return rc;
		}
		if ((rc = lex_next(lx)) < 0 || (rc = expect_punct(lx, ";")) < 0)
			return rc;
	}
	return 0;
}

int cvm_maa_policy_parse(const char *text, size_t len, struct cvm_maa_policy **out,
			 struct cvm_err *err)
{
	if (!text || len == 0)
		return cvm_err_badparam(err, "policy: empty");
	if (len > POLICY_MAX_TEXT)
		return cvm_err_set(err, E2BIG, "BadParameter", "policy: larger than %d bytes",
				   POLICY_MAX_TEXT);
	if (memchr(text, '\0', len))
		return cvm_err_badparam(err, "policy: contains a NUL byte");
	struct cvm_maa_policy *p = calloc(1, sizeof(*p));
	if (!p)
		return cvm_err_nomem(err);
	struct lexer lx = { .s = text, .end = text + len, .line = 1, .col = 1, .err = err };
	int rc = parse_policy(&lx, p);
	uint8_t h[64];
	size_t hl = 0;
	if (rc == 0 && (p->text = malloc(len + 1))) {
		memcpy(p->text, text, len);
		p->text[len] = '\0';
	} else if (rc == 0) {
		rc = cvm_err_nomem(err);
	}
	if (rc == 0)
		rc = cvm_digest("SHA256", text, len, h, &hl, err);
	if (rc == 0) {
		_cleanup_free_ char *b = cvm_b64url_encode(h, hl);
		if (b)
			snprintf(p->hash, sizeof(p->hash), "%s", b);
		else
			rc = cvm_err_nomem(err);
	}
	if (rc < 0) {
		cvm_maa_policy_free(p);
		return rc;
	}
	*out = p;
	return 0;
}

const char *cvm_maa_policy_text(const struct cvm_maa_policy *p)
{
	return p->text;
}

const char *cvm_maa_policy_hash(const struct cvm_maa_policy *p)
{
	return p->hash;
}

/* ---- evaluation -------------------------------------------------------------------------- */

#define CLAIM_ISSUER "AttestationService"

static int cmp_result(int c, enum op op)
{
	switch (op) {
	case OP_EQ: return c == 0;
	case OP_NE: return c != 0;
	case OP_LT: return c < 0;
	case OP_LE: return c <= 0;
	case OP_GT: return c > 0;
	case OP_GE: return c >= 0;
	}
	return 0;
}

static bool pred_value(const struct pred *p, json_t *v)
{
	switch (p->lit.kind) {
	case L_INT:
		if (!json_is_integer(v))
			return p->op == OP_NE;
		{
			json_int_t x = json_integer_value(v);
			return cmp_result(x < p->lit.i ? -1 : x > p->lit.i, p->op);
		}
	case L_BOOL:
		if (!json_is_boolean(v) || (p->op != OP_EQ && p->op != OP_NE))
			return p->op == OP_NE && !json_is_boolean(v);
		return cmp_result(json_is_true(v) == p->lit.b ? 0 : 1, p->op);
	case L_STRING:
		if (!json_is_string(v))
			return p->op == OP_NE;
		/* MAA compares hex digests case-insensitively in practice; keep exact for others. */
		return cmp_result(strcasecmp(json_string_value(v), p->lit.s), p->op);
	}
	return false;
}

static bool pred_match(const struct pred *p, const char *type, json_t *v)
{
	switch (p->field) {
	case F_TYPE:
		return cmp_result(strcmp(type, p->lit.s) == 0 ? 0 : 1, p->op);
	case F_ISSUER:
		return cmp_result(strcmp(CLAIM_ISSUER, p->lit.s) == 0 ? 0 : 1, p->op);
	case F_VALUE:
		return pred_value(p, v);
	}
	return false;
}

/* The first incoming claim satisfying every predicate of c (scalar claims only). */
static const char *cond_match(const struct cond *c, json_t *claims, json_t **val)
{
	const char *k;
	json_t *v;
	json_object_foreach(claims, k, v) {
		if (json_is_object(v) || json_is_array(v))
			continue;
		bool all = true;
		for (size_t i = 0; i < c->n && all; i++)
			all = pred_match(&c->preds[i], k, v);
		if (all) {
			*val = v;
			return k;
		}
	}
	return NULL;
}

struct binding {
	const char *var;
	const char *type;
	json_t *value;
};

/* && binds tighter than ||: the expression holds when some ||-separated group of conditions
 * all hold; bindings come from the group that held. */
static bool rule_holds(const struct rule *r, json_t *claims, struct binding *b, size_t *nb)
{
	if (r->n == 0) {
		*nb = 0;
		return true;
	}
	size_t start = 0;
	while (start < r->n) {
		size_t end = start + 1;
		while (end < r->n && !r->conds[end].or_before)
			end++;
		bool all = true;
		*nb = 0;
		for (size_t i = start; i < end && all; i++) {
			json_t *v = NULL;
			const char *t = cond_match(&r->conds[i], claims, &v);
			all = t != NULL;
			if (all && r->conds[i].var[0])
				b[(*nb)++] = (struct binding){ r->conds[i].var, t, v };
		}
		if (all)
			return true;
		start = end;
	}
	return false;
}

static const struct binding *find_binding(const struct binding *b, size_t n, const char *var)
{
	for (size_t i = 0; i < n; i++)
		if (strcmp(b[i].var, var) == 0)
			return &b[i];
	return NULL;
}

static json_t *literal_json(const struct literal *l)
{
	switch (l->kind) {
	case L_STRING: return json_string(l->s);
	case L_INT: return json_integer(l->i);
	case L_BOOL: return json_boolean(l->b);
	}
	return NULL;
}

static bool reserved_claim(const char *type)
{
	static const char *const names[] = { "iss", "iat", "nbf", "exp", "jti", "nonce", "aud",
					     "sub", "x-opencvm-emulated" };
	for (size_t i = 0; i < CVM_ARRAY_SIZE(names); i++)
		if (strcmp(type, names[i]) == 0)
			return true;
	return false;
}

int cvm_maa_policy_eval(const struct cvm_maa_policy *p, json_t *claims, bool *permitted,
			json_t *issued, struct cvm_err *err)
{
	struct binding b[POLICY_MAX_CONDS];
	size_t nb = 0;
	bool permit = !p->has_auth, deny = false;
	for (size_t i = 0; i < p->n[S_AUTH]; i++) {
		const struct rule *r = &p->rules[S_AUTH][i];
		if (!rule_holds(r, claims, b, &nb))
			continue;
		if (r->action == A_DENY)
			deny = true;
		else
			permit = true;
	}
	*permitted = permit && !deny;
	if (!*permitted || !issued)
		return 0;
	for (size_t i = 0; i < p->n[S_ISSUE]; i++) {
		const struct rule *r = &p->rules[S_ISSUE][i];
		if (!rule_holds(r, claims, b, &nb))
			continue;
		const char *type = r->type;
		json_t *val = NULL;
		if (r->var[0]) {
			const struct binding *bd = find_binding(b, nb, r->var);
			if (!bd)
				continue; /* bound in the ||-branch that did not hold */
			if (r->action == A_ISSUE_CLAIM) {
				type = bd->type;
				val = json_incref(bd->value);
			} else {
				val = r->var_field == F_TYPE ? json_string(bd->type)
				      : r->var_field == F_ISSUER ? json_string(CLAIM_ISSUER)
				      : json_incref(bd->value);
			}
		} else {
			val = literal_json(&r->value);
		}
		if (!val)
			return cvm_err_nomem(err);
		if (reserved_claim(type)) {
			json_decref(val);
			return cvm_err_badparam(err, "policy: issuance rule %zu may not issue \"%s\"",
						i + 1, type);
		}
		if (json_object_set_new(issued, type, val))
			return cvm_err_nomem(err);
	}
	return 0;
}

/* ---- per-attestation-type policies in the service ---------------------------------------- */

struct cvm_attest_policy_slot {
	char type[32];
	struct cvm_maa_policy *policy;
	struct cvm_attest_policy_slot *next;
};

void cvm_attest_policy_slots_free(struct cvm_attest_policy_slot *p)
{
	while (p) {
		struct cvm_attest_policy_slot *n = p->next;
		cvm_maa_policy_free(p->policy);
		free(p);
		p = n;
	}
}

static const char *const attestation_types[] = { "SevSnpVm", "TdxVm", "AzureGuest", NULL };

static int check_type(const char *type, struct cvm_err *err)
{
	for (size_t i = 0; attestation_types[i]; i++)
		if (type && strcmp(type, attestation_types[i]) == 0)
			return 0;
	return cvm_err_badparam(err, "attestationType: expected SevSnpVm, TdxVm or AzureGuest");
}

int cvm_attest_service_set_policy(struct cvm_attest_service *s, const char *type,
				  const char *text, size_t len, struct cvm_err *err)
{
	int rc = check_type(type, err);
	if (rc < 0)
		return rc;
	struct cvm_maa_policy *p = NULL;
	if ((rc = cvm_maa_policy_parse(text, len, &p, err)) < 0)
		return rc;
	pthread_mutex_t *lock = cvm_attest_service_lock(s);
	pthread_mutex_lock(lock);
	struct cvm_attest_policy_slot **head = cvm_attest_service_policies(s), *slot;
	for (slot = *head; slot; slot = slot->next)
		if (strcmp(slot->type, type) == 0)
			break;
	if (!slot && (slot = calloc(1, sizeof(*slot)))) {
		snprintf(slot->type, sizeof(slot->type), "%s", type);
		slot->next = *head;
		*head = slot;
	}
	if (slot) {
		cvm_maa_policy_free(slot->policy);
		slot->policy = p;
	}
	pthread_mutex_unlock(lock);
	if (!slot) {
		cvm_maa_policy_free(p);
		return cvm_err_nomem(err);
	}
	cvm_log_info("attest_policy_set", "type=%s", type);
	return 0;
}

int cvm_attest_service_get_policy(struct cvm_attest_service *s, const char *type, char **text,
				  struct cvm_err *err)
{
	int rc = check_type(type, err);
	if (rc < 0)
		return rc;
	*text = NULL;
	pthread_mutex_t *lock = cvm_attest_service_lock(s);
	pthread_mutex_lock(lock);
	for (struct cvm_attest_policy_slot *slot = *cvm_attest_service_policies(s); slot;
	     slot = slot->next)
		if (strcmp(slot->type, type) == 0)
			*text = cvm_strdup(slot->policy->text);
	pthread_mutex_unlock(lock);
	return 0;
}

/* Evaluate the type's policy (if one is set) under the lock: fills issued claims and the
 * policy hash, or refuses. */
int cvm_attest_policy_apply(struct cvm_attest_service *s, const char *type, json_t *claims,
			    json_t *issued, char hash[48], struct cvm_err *err)
{
	hash[0] = '\0';
	int rc = 0;
	bool permitted = true;
	pthread_mutex_t *lock = cvm_attest_service_lock(s);
	pthread_mutex_lock(lock);
	for (struct cvm_attest_policy_slot *slot = *cvm_attest_service_policies(s); slot;
	     slot = slot->next)
		if (strcmp(slot->type, type) == 0) {
			rc = cvm_maa_policy_eval(slot->policy, claims, &permitted, issued, err);
			memcpy(hash, slot->policy->hash, 48);
		}
	pthread_mutex_unlock(lock);
	if (rc == 0 && !permitted)
		rc = cvm_err_set(err, EPERM, "Forbidden",
				 "policy: the %s authorization rules did not permit this evidence",
				 type);
	return rc;
}
