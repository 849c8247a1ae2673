/* SPDX-License-Identifier: Apache-2.0 */
/* REST glue in MAA's shape:
 *   POST /attest/SevSnpVm?api-version=2022-08-01   -> {"token": JWT}
 *   POST /attest/TdxVm?api-version=2022-08-01      {"quote": b64url, "runtimeData"} -> {"token"}
 *   POST /attest/AzureGuest?api-version=2020-10-01 {"AttestationInfo"} -> {"token"} (azureguest.c)
 *   GET  /.well-known/openid-configuration, GET /certs (JWKS)
 *   GET  /policies/{attestationType}               -> {"token": JWT{x-ms-policy}, "policy": text}
 *   PUT  /policies/{attestationType}               body: policy text (text/plain) or MAA's JWS
 *                                                  whose payload is {"AttestationPolicy": b64url}
 * Who may PUT a policy is decided by the caller's authorizer (cvmd: policy admin role), and
 * every PUT, allowed or refused, leaves an audit record (cvm_attest_register_routes_guarded). */
#include <string.h>

#include <opencvm/audit.h>
#include <opencvm/http.h>
#include <opencvm/json.h>

#include "attest-internal.h"

#define POLICY_BODY_MAX (96 * 1024)

static int api_version_ok(const struct cvm_http_req *req, struct cvm_err *err)
{
	static const char *const versions[] = { "2022-08-01", "2020-10-01", "2025-06-01" };
	const char *v = cvm_http_req_query(req, "api-version");
	for (size_t i = 0; v && i < CVM_ARRAY_SIZE(versions); i++)
		if (strcmp(v, versions[i]) == 0)
			return 0;
	return cvm_err_badparam(err, "api-version: expected 2022-08-01, 2020-10-01 or 2025-06-01");
}

static int check_api_version(const struct cvm_http_req *req, struct cvm_http_resp *resp)
{
	struct cvm_err err = { 0 };
	int rc = api_version_ok(req, &err);
	if (rc < 0)
		cvm_http_resp_error(resp, &err);
	return rc;
}

static int reply_error(struct cvm_http_resp *resp, const struct cvm_err *err)
{
	cvm_http_resp_error(resp, err);
	return 0;
}

/* The three attestation routes differ only in the verifier that turns the body into a token. */
typedef int (*attest_fn)(struct cvm_attest_service *s, const char *body, size_t len,
			 char **token, struct cvm_err *err);

static int attest_reply(void *ctx, const struct cvm_http_req *req, struct cvm_http_resp *resp,
			attest_fn attest)
{
	if (check_api_version(req, resp) < 0)
		return 0;
	size_t len = 0;
	const uint8_t *body = cvm_http_req_body(req, &len);
	struct cvm_err err = { 0 };
	char *token = NULL;
	if (attest(ctx, (const char *)body, len, &token, &err) < 0)
		return reply_error(resp, &err);
	json_t *o = json_pack("{s:s}", "token", token);
	free(token);
	return o ? cvm_http_resp_json(resp, 200, o) : -ENOMEM;
}

static int h_attest_snp(void *ctx, const struct cvm_http_req *req, struct cvm_http_resp *resp)
{
	return attest_reply(ctx, req, resp, cvm_attest_service_attest_snp);
}

static int h_attest_tdx(void *ctx, const struct cvm_http_req *req, struct cvm_http_resp *resp)
{
	return attest_reply(ctx, req, resp, cvm_attest_service_attest_tdx);
}

/* POST /attest/AzureGuest: the token is the JWT or its sealed form (see attest.h). */
static int h_attest_azureguest(void *ctx, const struct cvm_http_req *req,
			       struct cvm_http_resp *resp)
{
	return attest_reply(ctx, req, resp, cvm_attest_service_attest_azureguest);
}

static int h_openid(void *ctx, const struct cvm_http_req *req, struct cvm_http_resp *resp)
{
	struct cvm_err err = { 0 };
	json_t *o = NULL;
	if (cvm_attest_service_openid(ctx, &o, &err) < 0)
		return reply_error(resp, &err);
	return cvm_http_resp_json(resp, 200, o);
}

static int h_certs(void *ctx, const struct cvm_http_req *req, struct cvm_http_resp *resp)
{
	struct cvm_err err = { 0 };
	json_t *o = NULL;
	if (cvm_attest_service_jwks(ctx, &o, &err) < 0)
		return reply_error(resp, &err);
	return cvm_http_resp_json(resp, 200, o);
}

static int h_policy_get(void *ctx, const struct cvm_http_req *req, struct cvm_http_resp *resp)
{
	struct cvm_attest_service *s = ctx;
	if (check_api_version(req, resp) < 0)
		return 0;
	const char *type = cvm_http_req_param(req, "type");
	struct cvm_err err = { 0 };
	_cleanup_free_ char *text = NULL;
	if (cvm_attest_service_get_policy(s, type, &text, &err) < 0)
		return reply_error(resp, &err);
	if (!text) {
		cvm_err_set(&err, ENOENT, "PolicyNotFound", "policies/%s: no policy is set", type);
		return reply_error(resp, &err);
	}
	_cleanup_json_ json_t *claims = json_pack("{s:s, s:s}", "x-ms-attestation-type", type,
						  "x-ms-policy", text);
	char *jwt = NULL;
	if (!claims || cvm_attest_service_sign_claims(s, claims, &jwt, &err) < 0)
		return claims ? reply_error(resp, &err) : -ENOMEM;
	json_t *o = json_pack("{s:s, s:s}", "token", jwt, "policy", text);
	free(jwt);
	return o ? cvm_http_resp_json(resp, 200, o) : -ENOMEM;
}

/* 200 {"token": JWT{x-ms-policy-result: "Updated", x-ms-policy-token-hash}} */
static int policy_updated(struct cvm_attest_service *s, const char *text, size_t tl,
			  struct cvm_http_resp *resp)
{
	struct cvm_err err = { 0 };
	uint8_t h[64];
	size_t hl = 0;
	if (cvm_digest("SHA256", text, tl, h, &hl, &err) < 0)
		return reply_error(resp, &err);
	_cleanup_free_ char *hash = cvm_b64url_encode(h, hl);
	_cleanup_json_ json_t *claims = hash ? json_pack("{s:s, s:s}", "x-ms-policy-result",
							 "Updated", "x-ms-policy-token-hash", hash)
					     : NULL;
	char *jwt = NULL;
	if (!claims || cvm_attest_service_sign_claims(s, claims, &jwt, &err) < 0)
		return claims ? reply_error(resp, &err) : -ENOMEM;
	json_t *o = json_pack("{s:s}", "token", jwt);
	free(jwt);
	return o ? cvm_http_resp_json(resp, 200, o) : -ENOMEM;
}

/* MAA clients send the policy as a JWS (often unsigned, alg "none") whose payload is
 * {"AttestationPolicy": base64url(text)}; the caller was authorized by the daemon, so the
 * JWS signature adds nothing here and is not required. Plain text is accepted too. */
static int policy_text_from_body(const uint8_t *body, size_t len, char **out, size_t *out_len,
				 struct cvm_err *err)
{
	if (len == 0)
		return cvm_err_badparam(err, "body: the policy is missing");
	if (len > POLICY_BODY_MAX)
		return cvm_err_set(err, E2BIG, "BadParameter", "body: larger than %d bytes",
				   POLICY_BODY_MAX);
	_cleanup_free_ char *b = malloc(len + 1);
	if (!b)
		return cvm_err_nomem(err);
	memcpy(b, body, len);
	b[len] = '\0';
	/* A JSON string body ("eyJ...") is unwrapped first. */
	char *s = b;
	size_t sl = len;
	if (sl >= 2 && s[0] == '"' && s[sl - 1] == '"') {
		s++;
		sl -= 2;
		s[sl] = '\0';
	}
	if (!cvm_str_startswith(s, "eyJ")) {
		*out = CVM_TAKE(b);
		*out_len = len;
		return 0;
	}
	char *dot1 = strchr(s, '.');
	char *dot2 = dot1 ? strchr(dot1 + 1, '.') : NULL;
	if (!dot2)
		return cvm_err_badparam(err, "body: expected policy text or a JWS");
	_cleanup_free_ uint8_t *payload = NULL;
	size_t pl = 0;
	int rc = cvm_b64url_decode(dot1 + 1, (size_t)(dot2 - dot1 - 1), &payload, &pl, "body.payload",
				   err);
	if (rc < 0)
		return rc;
	_cleanup_json_ json_t *j = NULL;
	if ((rc = cvm_json_parse(payload, pl, false, &j, err)) < 0)
		return cvm_err_prefix(err, "body.payload");
	uint8_t *text = NULL;
	size_t tl = 0;
	if ((rc = cvm_json_b64url(j, "AttestationPolicy", "body.payload.AttestationPolicy", true,
				  &text, &tl, err)) < 0)
		return rc;
	*out = (char *)text;
	*out_len = tl;
	return 0;
}

/* ---- PUT /policies/{type}: authorized, validated, audited ---------------------------------- */

struct cvm_attest_rest {
	struct cvm_attest_service *svc;
	struct cvm_attest_rest_config cfg;
};

/* One policy call as its audit record sees it. */
struct policy_call {
	const struct cvm_http_req *req;
	const char *type;
	char principal[CVM_ATTEST_PRINCIPAL_MAX];
	char sha_name[16];   /* "policy_sha256" or "body_sha256" */
	char sha_hex[65];
	bool known_type;
};

static void policy_note_sha(struct policy_call *pc, const char *name, const void *data, size_t len)
{
	uint8_t h[64];
	size_t hl = 0;
	struct cvm_err e = { 0 };
	_cleanup_free_ char *hex = cvm_digest("SHA256", data, len, h, &hl, &e) == 0
					   ? cvm_hex_encode(h, hl)
					   : NULL;
	if (!hex)
		return;
	snprintf(pc->sha_name, sizeof(pc->sha_name), "%s", name);
	snprintf(pc->sha_hex, sizeof(pc->sha_hex), "%s", hex);
}

/* The record of one PUT; 0 or the append's error (then the answer is 500, nothing changed). */
static int policy_audit(struct cvm_attest_rest *r, const struct policy_call *pc, int status,
			const char *result)
{
	_cleanup_json_ json_t *d = json_object();
	char type[65];
	snprintf(type, sizeof(type), "%s", pc->type ? pc->type : "");
	json_t *t = cvm_json_string_lossy(type);
	if (!d || !t || json_object_set_new(d, "attestation_type", t) < 0 ||
	    (pc->sha_hex[0] && json_object_set_new(d, pc->sha_name, json_string(pc->sha_hex)) < 0))
		return -ENOMEM;
	_cleanup_free_ char *detail = json_dumps(d, JSON_COMPACT | JSON_SORT_KEYS);
	if (!detail)
		return -ENOMEM;
	struct cvm_audit_event ev = {
		.principal = pc->principal[0] ? pc->principal : NULL,
		.operation = "policies/set",
		.key_name = pc->known_type ? pc->type : NULL,
		.status = status,
		.result = result,
		.request_id = cvm_http_req_id(pc->req),
		.source = cvm_http_req_remote(pc->req),
		.detail = detail,
	};
	struct cvm_err aerr = { 0 };
	int rc = cvm_audit_append(r->cfg.audit, &ev, NULL, &aerr);
	if (rc < 0)
		cvm_log_error("audit_append_failed", "op=policies/set error=\"%s\"", aerr.msg);
	return rc;
}

/* Authorize, read the body, check the type and the policy: everything that may refuse, before
 * anything changes. *text receives the policy text. */
static int policy_check(struct cvm_attest_rest *r, struct policy_call *pc, char **text,
			size_t *tl, struct cvm_err *err)
{
	size_t len = 0;
	const uint8_t *body = cvm_http_req_body(pc->req, &len);
	_cleanup_free_ char *prev = NULL;
	struct cvm_err terr = { 0 };
	/* The record names the type whenever it is one of the three, refused or not. */
	pc->known_type = cvm_attest_service_get_policy(r->svc, pc->type, &prev, &terr) == 0;
	int rc = r->cfg.authorize_policy(r->cfg.authorize_ctx, pc->req, pc->principal, err);
	pc->principal[CVM_ATTEST_PRINCIPAL_MAX - 1] = '\0';
	if (rc < 0) {
		if (len)
			policy_note_sha(pc, "body_sha256", body, len);
		return rc;
	}
	_cleanup_(cvm_maa_policy_freep) struct cvm_maa_policy *p = NULL;
	if ((rc = api_version_ok(pc->req, err)) == 0 && !pc->known_type)
		rc = cvm_err_badparam(err, "%s", terr.msg); /* names attestationType */
	if (rc == 0)
		rc = policy_text_from_body(body, len, text, tl, err);
	if (rc == 0)
		policy_note_sha(pc, "policy_sha256", *text, *tl);
	else if (len)
		policy_note_sha(pc, "body_sha256", body, len);
	if (rc == 0)
		rc = cvm_maa_policy_parse(*text, *tl, &p, err);
	return rc;
}

static int h_policy_put(void *ctx, const struct cvm_http_req *req, struct cvm_http_resp *resp)
{
	struct cvm_attest_rest *r = ctx;
	struct policy_call pc = { .req = req, .type = cvm_http_req_param(req, "type") };
	struct cvm_err err = { 0 };
	_cleanup_free_ char *text = NULL;
	size_t tl = 0;
	int rc = policy_check(r, &pc, &text, &tl, &err);
	if (rc < 0) {
		cvm_log_warn("attest_policy_refused", "request_id=%s code=%s reason=\"%s\"",
			     cvm_http_req_id(req), err.code, err.msg);
		if (policy_audit(r, &pc, cvm_err_http_status(&err), err.code[0] ? err.code : "error"))
			goto audit_failed;
		return reply_error(resp, &err);
	}
	/* Recorded first: a change never takes effect without its record. */
	if (policy_audit(r, &pc, 200, "ok") < 0)
		goto audit_failed;
	if (cvm_attest_service_set_policy(r->svc, pc.type, text, tl, &err) < 0) {
		/* Validated above, so only memory can fail here; the record says so. */
		policy_audit(r, &pc, cvm_err_http_status(&err), err.code);
		return reply_error(resp, &err);
	}
	return policy_updated(r->svc, text, tl, resp);
audit_failed:
	cvm_err_internal(&err, "audit: the record could not be written; the policy is unchanged");
	return reply_error(resp, &err);
}

/* Without an authorizer and an audit log, policies are read-only over REST. */
static int h_policy_put_disabled(void *ctx, const struct cvm_http_req *req,
				 struct cvm_http_resp *resp)
{
	(void)ctx;
	(void)req;
	struct cvm_err err = { 0 };
	cvm_err_set(&err, EPERM, "Forbidden",
		    "policies: changing attestation policies is not enabled on this server");
	return reply_error(resp, &err);
}

static int register_routes(struct cvm_attest_service *svc, struct cvm_http_server *srv,
			   struct cvm_attest_rest *guard, struct cvm_err *err)
{
	static const struct {
		const char *method, *pattern;
		cvm_http_handler h;
	} routes[] = {
		{ "POST", "/attest/SevSnpVm", h_attest_snp },
		{ "POST", "/attest/TdxVm", h_attest_tdx },
		{ "POST", "/attest/AzureGuest", h_attest_azureguest },
		{ "GET", "/.well-known/openid-configuration", h_openid },
		{ "GET", "/certs", h_certs },
		{ "GET", "/policies/{type}", h_policy_get },
	};
	for (size_t i = 0; i < CVM_ARRAY_SIZE(routes); i++) {
		int rc = cvm_http_route(srv, routes[i].method, routes[i].pattern, routes[i].h, svc,
					err);
		if (rc < 0)
			return rc;
	}
	return guard ? cvm_http_route(srv, "PUT", "/policies/{type}", h_policy_put, guard, err)
		     : cvm_http_route(srv, "PUT", "/policies/{type}", h_policy_put_disabled, svc,
				      err);
}

int cvm_attest_register_routes(struct cvm_attest_service *svc, struct cvm_http_server *srv,
			       struct cvm_err *err)
{
	return register_routes(svc, srv, NULL, err);
}

int cvm_attest_register_routes_guarded(struct cvm_attest_service *svc,
				       struct cvm_http_server *srv,
				       const struct cvm_attest_rest_config *cfg,
				       struct cvm_attest_rest **out, struct cvm_err *err)
{
	*out = NULL;
	if (!cfg || !cfg->authorize_policy || !cfg->audit)
		return cvm_err_badparam(err, "attest routes: authorize_policy and audit are "
					     "required");
	struct cvm_attest_rest *r = calloc(1, sizeof(*r));
	if (!r)
		return cvm_err_nomem(err);
	r->svc = svc;
	r->cfg = *cfg;
	int rc = register_routes(svc, srv, r, err);
	if (rc < 0) {
		free(r);
		return rc;
	}
	*out = r;
	return 0;
}

void cvm_attest_rest_free(struct cvm_attest_rest *r)
{
	free(r);
}
