/* SPDX-License-Identifier: Apache-2.0 */
/* Token endpoint (client secret, RFC 7523 certificate assertion, OAuth errors) and bearer
 * authentication (valid, cached, expired, tampered, wrong audience/issuer, missing). */
#include "authtest.h"

#define BASE "https://hsm.test:8443"

struct fx {
	struct kt t;
	char tid[37];
	struct cvm_principal_info app;
	struct cvm_secret *secret;
};

static void fx_open(struct fx *f, void **state, const char *name)
{
	kt_open(&f->t, state, name, 7, false);
	ASSERT_OK(cvm_hsm_tenant_id(f->t.h, f->tid, err));
	ASSERT_OK(cvm_hsm_principal_create(f->t.h, "app", CVM_PRINCIPAL_SERVICE, NULL, &f->app,
					   &f->secret, err));
}

static void fx_close(struct fx *f)
{
	cvm_secret_free(f->secret);
	cvm_principal_info_clear(&f->app);
	kt_close(&f->t);
}

static int token_form(struct fx *f, const char *tenant, const char *form, json_t **out,
		      struct cvm_err *err)
{
	return cvm_hsm_oauth_token(f->t.h, BASE, tenant, (const uint8_t *)form, strlen(form), out,
				   err);
}

static char *secret_form(struct fx *f, const char *scope, const char *grant)
{
	return cvm_asprintf("grant_type=%s&client_id=%s&client_secret=%.*s&scope=%s", grant,
			    f->app.client_id, (int)f->secret->len, (const char *)f->secret->data,
			    scope);
}

static void test_token_secret(void **state)
{
	struct fx f;
	fx_open(&f, state, "oauth1");
	/* percent-encoded scope as SDKs send it */
	char *form = secret_form(&f, "https%3A%2F%2Fmanagedhsm.azure.net%2F.default",
				 "client_credentials");
	json_t *out = NULL;
	ASSERT_OK(token_form(&f, f.tid, form, &out, err));
	free(form);
	assert_string_equal(jstr(out, "token_type"), "Bearer");
	assert_int_equal(json_integer_value(json_object_get(out, "expires_in")), 3599);
	assert_int_equal(json_integer_value(json_object_get(out, "ext_expires_in")), 3599);
	const char *tok = jstr(out, "access_token");
	json_t *claims = jwt_payload(tok);
	char iss[128];
	snprintf(iss, sizeof(iss), BASE "/%s/v2.0", f.tid);
	assert_string_equal(jstr(claims, "iss"), iss);
	assert_string_equal(jstr(claims, "aud"), "https://managedhsm.azure.net");
	assert_string_equal(jstr(claims, "oid"), f.app.oid);
	assert_string_equal(jstr(claims, "sub"), f.app.oid);
	assert_string_equal(jstr(claims, "appid"), f.app.client_id);
	assert_string_equal(jstr(claims, "tid"), f.tid);
	int64_t iat = json_integer_value(json_object_get(claims, "iat"));
	assert_int_equal(json_integer_value(json_object_get(claims, "exp")), iat + 3599);
	/* header names the signing key */
	struct cvm_jws *jws = NULL;
	ASSERT_OK(cvm_jws_parse(tok, strlen(tok), &jws, err));
	assert_string_equal(jws->alg, "RS256");
	assert_non_null(json_string_value(json_object_get(jws->header, "kid")));
	cvm_jws_free(jws);

	/* the published key set verifies it */
	json_t *jwks = NULL;
	ASSERT_OK(cvm_hsm_oauth_jwks(f.t.h, &jwks, err));
	json_t *jwk = json_array_get(json_object_get(jwks, "keys"), 0);
	struct cvm_key *pub = NULL;
	ASSERT_OK(cvm_key_from_jwk(jwk, false, &pub, err));
	json_t *vc = NULL;
	ASSERT_OK(cvm_jwt_verify(tok, strlen(tok), pub, &vc, NULL, err));
	json_decref(vc);
	cvm_key_free(pub);
	json_decref(jwks);

	char oid[37];
	char *authz = cvm_asprintf("Bearer %s", tok);
	ASSERT_OK(cvm_hsm_authenticate(f.t.h, authz, BASE, oid, err));
	assert_string_equal(oid, f.app.oid);
	/* cached path gives the same answer; scheme is case-insensitive */
	authz[0] = 'b';
	ASSERT_OK(cvm_hsm_authenticate(f.t.h, authz, BASE "/", oid, err));
	assert_string_equal(oid, f.app.oid);
	/* another service instance on the same store verifies it too (shared token key) */
	struct cvm_hsm *h2 = kt_hsm(f.t.store, 7, false);
	struct cvm_secret *k = test_domain_key(0x11);
	ASSERT_OK(cvm_hsm_domain_unlock(h2, k, err));
	cvm_secret_free(k);
	ASSERT_OK(cvm_hsm_authenticate(h2, authz, BASE, oid, err));
	cvm_hsm_free(h2);
	free(authz);
	json_decref(claims);
	json_decref(out);

	/* resource = the service's own base URL, and "organizations" tenant */
	form = secret_form(&f, BASE "/.default", "client_credentials");
	ASSERT_OK(token_form(&f, "organizations", form, &out, err));
	free(form);
	claims = jwt_payload(jstr(out, "access_token"));
	assert_string_equal(jstr(claims, "aud"), BASE);
	json_decref(claims);
	json_decref(out);
	fx_close(&f);
}

static void test_token_errors(void **state)
{
	struct fx f;
	fx_open(&f, state, "oauth2");
	json_t *out = NULL;
	/* wrong secret */
	char *form = cvm_asprintf("grant_type=client_credentials&client_id=%s&client_secret=nope"
				  "&scope=https://vault.azure.net/.default", f.app.client_id);
	ASSERT_ERR(token_form(&f, f.tid, form, &out, err), EACCES, "invalid_client",
		   "AADSTS7000215: Invalid client secret");
	free(form);
	/* Entra error body shape */
	{
		struct cvm_err e = { 0 };
		cvm_err_set(&e, EACCES, "invalid_client", "AADSTS7000215: x");
		json_t *body = cvm_hsm_oauth_error_json(&e);
		assert_string_equal(jstr(body, "error"), "invalid_client");
		assert_string_equal(jstr(body, "error_description"), "AADSTS7000215: x");
		assert_int_equal(cvm_err_http_status(&e), 401);
		json_decref(body);
	}
	/* unknown client */
	form = cvm_asprintf("grant_type=client_credentials&client_id=%s&client_secret=%.*s"
			    "&scope=https://vault.azure.net/.default", f.app.oid,
			    (int)f.secret->len, (const char *)f.secret->data);
	ASSERT_ERR(token_form(&f, f.tid, form, &out, err), EACCES, "invalid_client",
		   "AADSTS700016");
	free(form);
	/* bad grant type */
	form = secret_form(&f, "https://vault.azure.net/.default", "password");
	ASSERT_ERR(token_form(&f, f.tid, form, &out, err), EINVAL, "unsupported_grant_type",
		   "'password'");
	free(form);
	/* scope problems */
	form = secret_form(&f, "https://vault.azure.net", "client_credentials");
	ASSERT_ERR(token_form(&f, f.tid, form, &out, err), EINVAL, "invalid_scope",
		   "AADSTS1002012");
	free(form);
	form = secret_form(&f, "https://graph.example/.default", "client_credentials");
	ASSERT_ERR(token_form(&f, f.tid, form, &out, err), EINVAL, "invalid_scope", "AADSTS500011");
	free(form);
	/* unknown tenant */
	form = secret_form(&f, "https://vault.azure.net/.default", "client_credentials");
	ASSERT_ERR(token_form(&f, "00000000-0000-0000-0000-000000000000", form, &out, err), EINVAL,
		   "invalid_request", "AADSTS90002");
	free(form);
	/* malformed form */
	ASSERT_ERR(token_form(&f, f.tid, "grant_type=client_credentials&client_id=%zz", &out, err),
		   EINVAL, "invalid_request", "percent-encoding");
	ASSERT_ERR(token_form(&f, f.tid, "grant_type=client_credentials&grant_type=x", &out, err),
		   EINVAL, "invalid_request", "more than once");
	ASSERT_ERR(token_form(&f, f.tid, "client_id=x", &out, err), EINVAL, "invalid_request",
		   "'grant_type'");
	/* no credential at all */
	form = cvm_asprintf("grant_type=client_credentials&client_id=%s&scope=%s/.default",
			    f.app.client_id, BASE);
	ASSERT_ERR(token_form(&f, f.tid, form, &out, err), EACCES, "invalid_client",
		   "AADSTS7000218");
	free(form);
	assert_null(out);
	fx_close(&f);
}

/* RFC 7523 client assertion signed by key k for the principal's certificate. */
static char *assertion(struct cvm_key *k, X509 *cert, const char *client_id, const char *aud,
		       int64_t exp)
{
	unsigned char *der = NULL;
	int dlen = i2d_X509(cert, &der);
	uint8_t h[32];
	SHA256(der, (size_t)dlen, h);
	OPENSSL_free(der);
	json_t *hdr = json_object();
	cvm_json_set_b64url(hdr, "x5t#S256", h, sizeof(h));
	json_t *claims = json_pack("{s:s,s:s,s:s,s:s,s:I,s:I}", "iss", client_id, "sub", client_id,
				   "aud", aud, "jti", "j1", "exp", (json_int_t)exp, "nbf",
				   (json_int_t)(cvm_now() - 10));
	char *jwt = NULL;
	ASSERT_OK(cvm_jwt_sign(k, "RS256", hdr, claims, &jwt, err));
	json_decref(hdr);
	json_decref(claims);
	return jwt;
}

static void test_token_certificate(void **state)
{
	struct fx f;
	fx_open(&f, state, "oauth3");
	struct cvm_key *k = NULL, *other = NULL;
	X509 *x = NULL;
	char *pem = NULL;
	ASSERT_OK(cvm_key_generate_rsa(2048, 0, &k, err));
	ASSERT_OK(cvm_key_generate_rsa(2048, 0, &other, err));
	ASSERT_OK(cvm_x509_self_signed(k, "cert-app", NULL, NULL, 30, &x, err));
	ASSERT_OK(cvm_x509_to_pem(x, &pem, err));
	struct cvm_principal_info app = { 0 };
	ASSERT_OK(cvm_hsm_principal_create(f.t.h, "cert-app", CVM_PRINCIPAL_SERVICE, pem, &app,
					   NULL, err));
	char token_url[160];
	snprintf(token_url, sizeof(token_url), BASE "/%s/oauth2/v2.0/token", f.tid);
	const char *type = "urn%3Aietf%3Aparams%3Aoauth%3Aclient-assertion-type%3Ajwt-bearer";

	char *jwt = assertion(k, x, app.client_id, token_url, cvm_now() + 600);
	char *form = cvm_asprintf("grant_type=client_credentials&client_id=%s&client_assertion=%s"
				  "&client_assertion_type=%s&scope=https://managedhsm.azure.net/.default",
				  app.client_id, jwt, type);
	json_t *out = NULL;
	ASSERT_OK(token_form(&f, f.tid, form, &out, err));
	json_t *claims = jwt_payload(jstr(out, "access_token"));
	assert_string_equal(jstr(claims, "oid"), app.oid);
	json_decref(claims);
	json_decref(out);
	out = NULL;
	free(form);
	free(jwt);

	/* twin: same certificate thumbprint, signed by another key */
	jwt = assertion(other, x, app.client_id, token_url, cvm_now() + 600);
	form = cvm_asprintf("grant_type=client_credentials&client_id=%s&client_assertion=%s"
			    "&client_assertion_type=%s&scope=https://managedhsm.azure.net/.default",
			    app.client_id, jwt, type);
	ASSERT_ERR(token_form(&f, f.tid, form, &out, err), EACCES, "invalid_client",
		   "signature validation failed");
	free(form);
	free(jwt);
	/* wrong audience */
	jwt = assertion(k, x, app.client_id, "https://elsewhere/token", cvm_now() + 600);
	form = cvm_asprintf("grant_type=client_credentials&client_id=%s&client_assertion=%s"
			    "&client_assertion_type=%s&scope=https://managedhsm.azure.net/.default",
			    app.client_id, jwt, type);
	ASSERT_ERR(token_form(&f, f.tid, form, &out, err), EACCES, "invalid_client",
		   "aud must be");
	free(form);
	free(jwt);
	/* expired */
	jwt = assertion(k, x, app.client_id, token_url, cvm_now() - 600);
	form = cvm_asprintf("grant_type=client_credentials&client_id=%s&client_assertion=%s"
			    "&client_assertion_type=%s&scope=https://managedhsm.azure.net/.default",
			    app.client_id, jwt, type);
	ASSERT_ERR(token_form(&f, f.tid, form, &out, err), EACCES, "invalid_client",
		   "AADSTS700024");
	free(form);
	/* wrong assertion type */
	form = cvm_asprintf("grant_type=client_credentials&client_id=%s&client_assertion=%s"
			    "&client_assertion_type=saml&scope=https://managedhsm.azure.net/.default",
			    app.client_id, jwt);
	ASSERT_ERR(token_form(&f, f.tid, form, &out, err), EINVAL, "invalid_request",
		   "client_assertion_type");
	free(form);
	free(jwt);
	/* a secret-only principal cannot use an assertion */
	jwt = assertion(k, x, f.app.client_id, token_url, cvm_now() + 600);
	form = cvm_asprintf("grant_type=client_credentials&client_id=%s&client_assertion=%s"
			    "&client_assertion_type=%s&scope=https://managedhsm.azure.net/.default",
			    f.app.client_id, jwt, type);
	ASSERT_ERR(token_form(&f, f.tid, form, &out, err), EACCES, "invalid_client",
		   "no certificate credential");
	free(form);
	free(jwt);
	assert_null(out);
	cvm_principal_info_clear(&app);
	free(pem);
	X509_free(x);
	cvm_key_free(k);
	cvm_key_free(other);
	fx_close(&f);
}

/* Token signed by the service token key with chosen claims (for expired/wrong aud twins). */
static char *service_token(struct fx *f, const char *aud, const char *iss, int64_t exp)
{
	struct cvm_key *key;
	const char *kid;
	ASSERT_OK(hsm_token_key(f->t.h, &key, &kid, err));
	json_t *claims = json_pack("{s:s,s:s,s:s,s:I,s:I}", "aud", aud, "iss", iss, "oid",
				   f->app.oid, "exp", (json_int_t)exp, "nbf",
				   (json_int_t)(cvm_now() - 7200));
	json_t *hdr = json_pack("{s:s}", "kid", kid);
	char *jwt = NULL;
	ASSERT_OK(cvm_jwt_sign(key, "RS256", hdr, claims, &jwt, err));
	json_decref(claims);
	json_decref(hdr);
	char *authz = cvm_asprintf("Bearer %s", jwt);
	free(jwt);
	return authz;
}

static void test_authenticate_failures(void **state)
{
	struct fx f;
	fx_open(&f, state, "oauth4");
	char oid[37];
	char iss[128];
	snprintf(iss, sizeof(iss), BASE "/%s/v2.0", f.tid);
	/* the crafted token is accepted when its claims are right (so the twins below fail for
	 * the reason they name) */
	char *ok = service_token(&f, "https://vault.azure.net", iss, cvm_now() + 600);
	ASSERT_OK(cvm_hsm_authenticate(f.t.h, ok, BASE, oid, err));
	free(ok);

	char *expired = service_token(&f, "https://vault.azure.net", iss, cvm_now() - 3600);
	ASSERT_ERR(cvm_hsm_authenticate(f.t.h, expired, BASE, oid, err), EACCES, "Unauthorized",
		   "Error validating token: exp");
	free(expired);
	char *aud = service_token(&f, "https://storage.example", iss, cvm_now() + 600);
	ASSERT_ERR(cvm_hsm_authenticate(f.t.h, aud, BASE, oid, err), EACCES, "Unauthorized",
		   "aud: audience is not accepted");
	free(aud);
	char *wrong_iss = service_token(&f, "https://vault.azure.net", "https://evil/x/v2.0",
					cvm_now() + 600);
	ASSERT_ERR(cvm_hsm_authenticate(f.t.h, wrong_iss, BASE, oid, err), EACCES, "Unauthorized",
		   "iss:");
	free(wrong_iss);

	/* a real token: tampered payload, another host, missing header */
	char *tok = get_token(&f.t, BASE, f.app.client_id, f.secret, "https://vault.azure.net/.default");
	char *authz = cvm_asprintf("Bearer %s", tok);
	ASSERT_OK(cvm_hsm_authenticate(f.t.h, authz, BASE, oid, err));
	ASSERT_ERR(cvm_hsm_authenticate(f.t.h, authz, "https://other.test", oid, err), EACCES,
		   "Unauthorized", "iss:");
	char *dot = strchr(authz + 7, '.');
	dot[3] = dot[3] == 'A' ? 'B' : 'A';
	ASSERT_ERR(cvm_hsm_authenticate(f.t.h, authz, BASE, oid, err), EACCES, "Unauthorized",
		   "Error validating token");
	ASSERT_ERR(cvm_hsm_authenticate(f.t.h, NULL, BASE, oid, err), EACCES, "Unauthorized",
		   "Request is missing a Bearer or PoP token.");
	ASSERT_ERR(cvm_hsm_authenticate(f.t.h, "Basic abc", BASE, oid, err), EACCES, "Unauthorized",
		   "missing a Bearer");
	ASSERT_ERR(cvm_hsm_authenticate(f.t.h, "Bearer ", BASE, oid, err), EACCES, "Unauthorized",
		   "missing a Bearer");
	ASSERT_ERR(cvm_hsm_authenticate(f.t.h, "Bearer a.b.c", BASE, oid, err), EACCES,
		   "Unauthorized", "Error validating token");
	free(authz);
	free(tok);
	fx_close(&f);
}

static void test_not_activated(void **state)
{
	struct kt t;
	memset(&t, 0, sizeof(t));
	t.db = *state;
	t.store = testdb_open(t.db, "oauth5");
	t.h = kt_hsm(t.store, 7, false);
	char oid[37];
	/* the token key is sealed under the security domain */
	ASSERT_ERR(cvm_hsm_authenticate(t.h, "Bearer a.b.c", BASE, oid, err), EBUSY,
		   "HsmNotActivated", NULL);
	kt_close(&t);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_token_secret),
		cmocka_unit_test(test_token_errors),
		cmocka_unit_test(test_token_certificate),
		cmocka_unit_test(test_authenticate_failures),
		cmocka_unit_test(test_not_activated),
	};
	return testdb_run("hsm-oauth", tests, CVM_ARRAY_SIZE(tests));
}
