/* SPDX-License-Identifier: Apache-2.0 */
/* REST glue in MAA's shape:
 *   POST /attest/SevSnpVm?api-version=2022-08-01   -> {"token": JWT}
 *   POST /attest/TdxVm?api-version=2022-08-01      {"quote": b64url, "runtimeData"} -> {"token"}
 *   POST /attest/AzureGuest?api-version=2020-10-01 {"AttestationInfo"} -> {"token"} (azureguest.c)
 *   GET  /.well-known/openid-configuration, GET /certs (JWKS)
 *   GET  /policies/{attestationType}               -> {"token": JWT{x-ms-policy}, "policy": text}
 *   PUT  /policies/{attestationType}               body: policy text (text/plain) or MAA's JWS
 *                                                  whose payload is {"AttestationPolicy": b64url}
 * Who may PUT a policy is decided by the daemon's authentication hook (policy admin role). */
#include <string.h>

#include <opencvm/http.h>
#include <opencvm/json.h>

#include "attest-internal.h"

#define POLICY_BODY_MAX (96 * 1024)

static int check_api_version(const struct cvm_http_req *req, struct cvm_http_resp *resp)
{
	static const char *const versions[] = { "2022-08-01", "2020-10-01", "2025-06-01" };
	const char *v = cvm_http_req_query(req, "api-version");
	for (size_t i = 0; v && i < CVM_ARRAY_SIZE(versions); i++)
		if (strcmp(v, versions[i]) == 0)
			return 0;
	struct cvm_err err = { 0 };
	cvm_err_badparam(&err, "api-version: expected 2022-08-01, 2020-10-01 or 2025-06-01");
	cvm_http_resp_error(resp, &err);
	return -EINVAL;
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

static int h_policy_put(void *ctx, const struct cvm_http_req *req, struct cvm_http_resp *resp)
{
	struct cvm_attest_service *s = ctx;
	if (check_api_version(req, resp) < 0)
		return 0;
	const char *type = cvm_http_req_param(req, "type");
	size_t len = 0;
	const uint8_t *body = cvm_http_req_body(req, &len);
	struct cvm_err err = { 0 };
	_cleanup_free_ char *text = NULL;
	size_t tl = 0;
	if (policy_text_from_body(body, len, &text, &tl, &err) < 0 ||
	    cvm_attest_service_set_policy(s, type, text, tl, &err) < 0)
		return reply_error(resp, &err);
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

int cvm_attest_register_routes(struct cvm_attest_service *svc, struct cvm_http_server *srv,
			       struct cvm_err *err)
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
		{ "PUT", "/policies/{type}", h_policy_put },
	};
	for (size_t i = 0; i < CVM_ARRAY_SIZE(routes); i++) {
		int rc = cvm_http_route(srv, routes[i].method, routes[i].pattern, routes[i].h, svc,
					err);
		if (rc < 0)
			return rc;
	}
	return 0;
}
