/* SPDX-License-Identifier: Apache-2.0 */
/* Secure Key Release end to end against a loopback attestation authority: the released blob
 * unwraps with the TEE's private key to the very key the HSM holds; every refusal has its own
 * errno/code. */
#include "authtest.h"

struct fx {
	struct kt t;
	struct authority a;
	struct cvm_key *tee;      /* the TEE's wrapping key pair (private part stays here) */
	json_t *tee_jwk;          /* its public JWK as the token carries it */
};

/* authority + TEE key around an open f->t */
static void fx_init(struct fx *f)
{
	authority_start(&f->a);
	ASSERT_OK(cvm_key_generate_rsa(2048, 0, &f->tee, err));
	ASSERT_OK(cvm_key_to_jwk(f->tee, false, &f->tee_jwk, err));
	json_object_set_new(f->tee_jwk, "kid", json_string("TpmEphemeralEncryptionKey"));
	json_object_set_new(f->tee_jwk, "key_ops", json_pack("[s]", "encrypt"));
}

static void fx_open(struct fx *f, void **state, const char *name)
{
	kt_open(&f->t, state, name, 7, false);
	fx_init(f);
}

static void fx_close(struct fx *f)
{
	json_decref(f->tee_jwk);
	cvm_key_free(f->tee);
	authority_stop(&f->a);
	kt_close(&f->t);
}

/* The CVM policy shape (nested anyOf in allOf) naming `authority`. */
static char *policy_b64(const char *authority)
{
	char *p = cvm_asprintf(
		"{\"version\":\"1.0.0\",\"anyOf\":[{\"authority\":\"%s/\",\"allOf\":[{\"anyOf\":["
		"{\"claim\":\"x-ms-isolation-tee.x-ms-attestation-type\",\"equals\":\"sevsnpvm\"},"
		"{\"claim\":\"x-ms-isolation-tee.x-ms-attestation-type\",\"equals\":\"tdxvm\"}]},"
		"{\"claim\":\"x-ms-isolation-tee.x-ms-compliance-status\",\"equals\":"
		"\"azure-compliant-cvm\"},{\"claim\":\"x-ms-sevsnpvm-is-debuggable\",\"equals\":"
		"\"false\"}]}]}", authority);
	char *b = cvm_b64url_encode(p, strlen(p));
	free(p);
	return b;
}

static json_t *create_key(struct fx *f, const char *name, const char *kty_part,
			  const char *authority, bool exportable)
{
	char *pol = authority ? policy_b64(authority) : NULL;
	char *body = cvm_asprintf("{%s,\"attributes\":{\"exportable\":%s}%s%s%s}", kty_part,
				  exportable ? "true" : "false",
				  pol ? ",\"release_policy\":{\"data\":\"" : "", pol ? pol : "",
				  pol ? "\"}" : "");
	json_t *out = kt_create(&f->t, name, body);
	free(body);
	free(pol);
	return out;
}

/* Attestation-token claims as MAA issues them for a CVM, binding the TEE key. */
static json_t *cvm_claims(struct fx *f, const char *iss, int64_t exp, const char *nonce)
{
	json_t *c = json_pack("{s:s,s:I,s:I,s:I,s:{s:s,s:s},s:b,s:{s:[O]}}", "iss", iss, "iat",
			      (json_int_t)cvm_now(), "nbf", (json_int_t)cvm_now() - 5, "exp",
			      (json_int_t)exp, "x-ms-isolation-tee", "x-ms-attestation-type",
			      "sevsnpvm", "x-ms-compliance-status", "azure-compliant-cvm",
			      "x-ms-sevsnpvm-is-debuggable", 0, "x-ms-runtime", "keys", f->tee_jwk);
	if (nonce)
		json_object_set_new(json_object_get(c, "x-ms-runtime"), "client-payload",
				    json_pack("{s:s}", "nonce", nonce));
	return c;
}

static int release(struct fx *f, const char *name, const char *version, const char *target,
		   const char *nonce, const char *enc, json_t **out, struct cvm_err *err)
{
	json_t *body = json_pack("{s:s}", "target", target);
	if (nonce)
		json_object_set_new(body, "nonce", json_string(nonce));
	if (enc)
		json_object_set_new(body, "enc", json_string(enc));
	int r = cvm_hsm_key_release(f->t.h, &caller, name, version, "7.4", body, out, err);
	json_decref(body);
	return r;
}

/* Checks the release JWS (signature by x5c[0], header members, request echo) and returns the
 * unwrapped key material. */
static struct cvm_secret *open_release(struct fx *f, json_t *resp, const char *enc,
				       const char *nonce, json_t **bundle_out)
{
	const char *jws_text = jstr(resp, "value");
	assert_non_null(jws_text);
	struct cvm_jws *jws = NULL;
	ASSERT_OK(cvm_jws_parse(jws_text, strlen(jws_text), &jws, err));
	assert_string_equal(jws->alg, "RS256");
	assert_non_null(json_string_value(json_object_get(jws->header, "kid")));
	assert_non_null(json_string_value(json_object_get(jws->header, "x5t#S256")));
	const char *x5c0 = json_string_value(json_array_get(json_object_get(jws->header, "x5c"), 0));
	assert_non_null(x5c0);
	uint8_t *der = NULL;
	size_t dlen = 0;
	ASSERT_OK(cvm_b64_decode(x5c0, strlen(x5c0), &der, &dlen, "x5c", err));
	const uint8_t *p = der;
	X509 *x = d2i_X509(NULL, &p, (long)dlen);
	assert_non_null(x);
	uint8_t h[32];
	SHA256(der, dlen, h);
	char *x5t = cvm_b64url_encode(h, sizeof(h));
	assert_string_equal(json_string_value(json_object_get(jws->header, "x5t#S256")), x5t);
	free(x5t);
	free(der);
	/* the certificate is the one the service publishes */
	char *pem = NULL, *pem2 = NULL;
	ASSERT_OK(cvm_hsm_release_cert_pem(f->t.h, &pem, err));
	ASSERT_OK(cvm_x509_to_pem(x, &pem2, err));
	assert_string_equal(pem, pem2);
	free(pem);
	free(pem2);
	EVP_PKEY *pk = X509_get_pubkey(x);
	X509_free(x);
	struct cvm_key *signer = NULL;
	ASSERT_OK(cvm_key_from_pkey(pk, &signer, err));
	ASSERT_OK(cvm_jws_verify(jws, signer, err));
	cvm_key_free(signer);

	json_t *payload = json_loadb((const char *)jws->payload, jws->payload_len, 0, NULL);
	cvm_jws_free(jws);
	assert_non_null(payload);
	assert_string_equal(jstr(payload, "request.api-version"), "7.4");
	assert_string_equal(jstr(payload, "request.enc"), enc);
	if (nonce)
		assert_string_equal(jstr(payload, "request.nonce"), nonce);
	else
		assert_null(cvm_json_path(payload, "request.nonce"));
	json_t *bundle = cvm_json_path(payload, "response.key");
	assert_string_equal(jstr(payload, "request.kid"), jstr(bundle, "key.kid"));
	assert_non_null(cvm_json_path(bundle, "release_policy.data"));
	assert_true(json_is_true(cvm_json_path(bundle, "attributes.exportable")));
	const char *kh = jstr(bundle, "key.key_hsm");
	assert_non_null(kh);
	uint8_t *khraw = NULL;
	size_t khlen = 0;
	ASSERT_OK(cvm_b64url_decode(kh, strlen(kh), &khraw, &khlen, "key_hsm", err));
	json_t *kj = json_loadb((const char *)khraw, khlen, 0, NULL);
	free(khraw);
	assert_non_null(kj);
	assert_string_equal(jstr(kj, "schema_version"), "1.0");
	assert_string_equal(jstr(kj, "header.kid"), "TpmEphemeralEncryptionKey");
	assert_string_equal(jstr(kj, "header.alg"), "dir");
	assert_string_equal(jstr(kj, "header.enc"), enc);
	const char *ct = jstr(kj, "ciphertext");
	uint8_t *ctraw = NULL;
	size_t ctlen = 0;
	ASSERT_OK(cvm_b64url_decode(ct, strlen(ct), &ctraw, &ctlen, "ciphertext", err));
	assert_true(ctlen > 256);
	struct cvm_secret *material = NULL;
	ASSERT_OK(cvm_rsa_aes_key_unwrap(cvm_key_pkey(f->tee), enc, ctraw, ctlen, &material, err));
	free(ctraw);
	json_decref(kj);
	*bundle_out = json_deep_copy(bundle);
	json_decref(payload);
	return material;
}

static void test_release_rsa_end_to_end(void **state)
{
	struct fx f;
	fx_open(&f, state, "rel1");
	json_t *kb = create_key(&f, "cmk", "\"kty\":\"RSA-HSM\",\"key_size\":2048", f.a.url, true);
	const char *ver = kid_version(kb);
	char *tok = authority_token(&f.a, cvm_claims(&f, f.a.url, cvm_now() + 300, "n-123"));
	json_t *resp = NULL;
	ASSERT_OK(release(&f, "cmk", ver, tok, "n-123", "RSA_AES_KEY_WRAP_256", &resp, err));
	json_t *bundle = NULL;
	struct cvm_secret *material = open_release(&f, resp, "RSA_AES_KEY_WRAP_256", "n-123",
						   &bundle);
	assert_string_equal(jstr(bundle, "key.kid"), jstr(kb, "key.kid"));
	/* the material is PKCS#8 DER of the HSM's key: sign with it, verify with the HSM */
	struct cvm_key *released = NULL;
	ASSERT_OK(cvm_key_import_private(CVM_KTY_RSA, material->data, material->len, &released,
					 err));
	uint8_t digest[32];
	size_t dl = 0;
	ASSERT_OK(cvm_digest("SHA256", "proof", 5, digest, &dl, err));
	struct cvm_buf sig = { 0 };
	ASSERT_OK(cvm_key_sign_digest(released, "RS256", digest, 32, &sig, err));
	json_t *vb = json_object(), *vout = NULL;
	cvm_json_set_b64url(vb, "digest", digest, 32);
	cvm_json_set_b64url(vb, "value", sig.data, sig.len);
	json_object_set_new(vb, "alg", json_string("RS256"));
	ASSERT_OK(cvm_hsm_key_op(f.t.h, &caller, "cmk", ver, "verify", vb, &vout, err));
	assert_true(json_is_true(json_object_get(vout, "value")));
	json_decref(vout);
	/* twin: a signature by another key does not verify (so the check above means something) */
	struct cvm_buf sig2 = { 0 };
	ASSERT_OK(cvm_key_sign_digest(f.tee, "RS256", digest, 32, &sig2, err));
	cvm_json_set_b64url(vb, "value", sig2.data, sig2.len);
	ASSERT_OK(cvm_hsm_key_op(f.t.h, &caller, "cmk", ver, "verify", vb, &vout, err));
	assert_true(json_is_false(json_object_get(vout, "value")));
	json_decref(vout);
	json_decref(vb);
	cvm_buf_free(&sig);
	cvm_buf_free(&sig2);
	cvm_key_free(released);
	cvm_secret_free(material);
	json_decref(bundle);
	json_decref(resp);

	/* replay: the same token releases only once */
	ASSERT_ERR(release(&f, "cmk", ver, tok, "n-123", NULL, &resp, err), EPERM, "Forbidden",
		   "already used");
	free(tok);
	/* latest version (NULL), default enc CKM_RSA_AES_KEY_WRAP, no nonce */
	tok = authority_token(&f.a, cvm_claims(&f, f.a.url, cvm_now() + 300, NULL));
	ASSERT_OK(release(&f, "cmk", NULL, tok, NULL, NULL, &resp, err));
	material = open_release(&f, resp, "CKM_RSA_AES_KEY_WRAP", NULL, &bundle);
	cvm_secret_free(material);
	json_decref(bundle);
	json_decref(resp);
	free(tok);
	json_decref(kb);
	fx_close(&f);
}

static void test_release_oct_x5c_authority(void **state)
{
	struct fx f;
	fx_open(&f, state, "rel2");
	f.a.x5c_only = true; /* MAA publishes x5c-only JWKs */
	json_t *kb = create_key(&f, "aes", "\"kty\":\"oct-HSM\",\"key_size\":256", f.a.url, true);
	const char *ver = kid_version(kb);
	char *tok = authority_token(&f.a, cvm_claims(&f, f.a.url, cvm_now() + 300, NULL));
	json_t *resp = NULL;
	ASSERT_OK(release(&f, "aes", ver, tok, NULL, "RSA_AES_KEY_WRAP_384", &resp, err));
	json_t *bundle = NULL;
	struct cvm_secret *material = open_release(&f, resp, "RSA_AES_KEY_WRAP_384", NULL, &bundle);
	assert_int_equal(material->len, 32); /* raw AES-256 key */
	/* HSM encrypts, the released key decrypts */
	json_t *eb = json_pack("{s:s,s:s}", "alg", "A256GCM", "value", "aGVsbG8gd29ybGQ"), *eo = NULL;
	ASSERT_OK(cvm_hsm_key_op(f.t.h, &caller, "aes", ver, "encrypt", eb, &eo, err));
	uint8_t *ct = NULL, *iv = NULL, *tag = NULL;
	size_t ctl, ivl, tagl;
	ASSERT_OK(cvm_json_b64url(eo, "value", "value", true, &ct, &ctl, err));
	ASSERT_OK(cvm_json_b64url(eo, "iv", "iv", true, &iv, &ivl, err));
	ASSERT_OK(cvm_json_b64url(eo, "tag", "tag", true, &tag, &tagl, err));
	assert_int_equal(ivl, 12);
	uint8_t pt[64];
	ASSERT_OK(cvm_aes_gcm_open(material->data, 32, iv, NULL, 0, ct, ctl, tag, pt, err));
	assert_memory_equal(pt, "hello world", 11);
	free(ct);
	free(iv);
	free(tag);
	json_decref(eb);
	json_decref(eo);
	cvm_secret_free(material);
	json_decref(bundle);
	json_decref(resp);
	free(tok);
	json_decref(kb);
	fx_close(&f);
}

static void test_release_refusals(void **state)
{
	struct fx f;
	fx_open(&f, state, "rel3");
	json_t *kb = create_key(&f, "cmk", "\"kty\":\"RSA\",\"key_size\":2048", f.a.url, true);
	json_t *resp = NULL;
	char *tok;

	/* unknown authority: the token's issuer is not in the policy (no fetch happens) */
	tok = authority_token(&f.a, cvm_claims(&f, "https://maa.example", cvm_now() + 300, NULL));
	ASSERT_ERR(release(&f, "cmk", NULL, tok, NULL, NULL, &resp, err), EPERM, "Forbidden",
		   "target: token issuer https://maa.example is not an authority of this key's "
		   "release policy");
	free(tok);
	json_t *other = create_key(&f, "other", "\"kty\":\"RSA\",\"key_size\":2048",
				   "https://maa.example", true);
	tok = authority_token(&f.a, cvm_claims(&f, f.a.url, cvm_now() + 300, NULL));
	ASSERT_ERR(release(&f, "other", NULL, tok, NULL, NULL, &resp, err), EPERM, "Forbidden",
		   "is not an authority");
	free(tok);
	json_decref(other);

	/* expired token */
	tok = authority_token(&f.a, cvm_claims(&f, f.a.url, cvm_now() - 600, NULL));
	ASSERT_ERR(release(&f, "cmk", NULL, tok, NULL, NULL, &resp, err), EINVAL, "BadParameter",
		   "target: exp");
	free(tok);

	/* bad signature: signed by a key the authority does not publish, under its kid */
	{
		struct cvm_key *rogue = NULL;
		ASSERT_OK(cvm_key_generate_rsa(2048, 0, &rogue, err));
		json_t *hdr = json_pack("{s:s}", "kid", f.a.kids[0]);
		json_t *c = cvm_claims(&f, f.a.url, cvm_now() + 300, NULL);
		ASSERT_OK(cvm_jwt_sign(rogue, "RS256", hdr, c, &tok, err));
		json_decref(hdr);
		json_decref(c);
		cvm_key_free(rogue);
		ASSERT_ERR(release(&f, "cmk", NULL, tok, NULL, NULL, &resp, err), EBADMSG,
			   "BadParameter", "target: signature verification");
		free(tok);
	}

	/* policy not satisfied */
	{
		json_t *c = cvm_claims(&f, f.a.url, cvm_now() + 300, NULL);
		json_object_set_new(json_object_get(c, "x-ms-isolation-tee"),
				    "x-ms-compliance-status", json_string("not-compliant"));
		tok = authority_token(&f.a, c);
		ASSERT_ERR(release(&f, "cmk", NULL, tok, NULL, NULL, &resp, err), EPERM, "Forbidden",
			   "do not satisfy the release policy of key cmk");
		free(tok);
		c = cvm_claims(&f, f.a.url, cvm_now() + 300, NULL);
		json_object_set_new(c, "x-ms-sevsnpvm-is-debuggable", json_true());
		tok = authority_token(&f.a, c);
		ASSERT_ERR(release(&f, "cmk", NULL, tok, NULL, NULL, &resp, err), EPERM, "Forbidden",
			   "do not satisfy");
		free(tok);
	}

	/* wrong nonce (and a missing one) */
	tok = authority_token(&f.a, cvm_claims(&f, f.a.url, cvm_now() + 300, "right"));
	ASSERT_ERR(release(&f, "cmk", NULL, tok, "wrong", NULL, &resp, err), EPERM, "Forbidden",
		   "nonce: the attestation token does not carry this nonce");
	/* the refused request did not burn the token */
	ASSERT_OK(release(&f, "cmk", NULL, tok, "right", NULL, &resp, err));
	json_decref(resp);
	resp = NULL;
	free(tok);
	tok = authority_token(&f.a, cvm_claims(&f, f.a.url, cvm_now() + 300, NULL));
	ASSERT_ERR(release(&f, "cmk", NULL, tok, "n", NULL, &resp, err), EPERM, "Forbidden",
		   "nonce:");

	/* request body */
	ASSERT_ERR(release(&f, "cmk", NULL, tok, NULL, "RSA-OAEP", &resp, err), EINVAL,
		   "BadParameter", "enc");
	ASSERT_ERR(release(&f, "cmk", NULL, "not-a-jwt", NULL, NULL, &resp, err), EINVAL,
		   "BadParameter", "target");
	{
		json_t *b = json_object();
		ASSERT_ERR(cvm_hsm_key_release(f.t.h, &caller, "cmk", NULL, "7.4", b, &resp, err),
			   EINVAL, "BadParameter", "target: required field is missing");
		json_decref(b);
	}
	free(tok);

	/* wrapping key: missing, too small */
	{
		json_t *c = cvm_claims(&f, f.a.url, cvm_now() + 300, NULL);
		json_object_del(c, "x-ms-runtime");
		tok = authority_token(&f.a, c);
		ASSERT_ERR(release(&f, "cmk", NULL, tok, NULL, NULL, &resp, err), EINVAL,
			   "BadParameter", "target: x-ms-runtime.keys");
		free(tok);
		struct cvm_key *small = NULL;
		EVP_PKEY *pk = EVP_RSA_gen(1024);
		assert_non_null(pk);
		ASSERT_OK(cvm_key_from_pkey(pk, &small, err));
		json_t *jwk = NULL;
		ASSERT_OK(cvm_key_to_jwk(small, false, &jwk, err));
		json_object_set_new(jwk, "kid", json_string("TpmEphemeralEncryptionKey"));
		c = cvm_claims(&f, f.a.url, cvm_now() + 300, NULL);
		json_object_set_new(json_object_get(c, "x-ms-runtime"), "keys",
				    json_pack("[o]", jwk));
		tok = authority_token(&f.a, c);
		ASSERT_ERR(release(&f, "cmk", NULL, tok, NULL, NULL, &resp, err), EINVAL,
			   "BadParameter", "target: x-ms-runtime.keys[0]: key.n: RSA modulus must be 2048");
		free(tok);
		cvm_key_free(small);
	}

	/* non-exportable key */
	json_t *ne = create_key(&f, "plain", "\"kty\":\"RSA\",\"key_size\":2048", NULL, false);
	tok = authority_token(&f.a, cvm_claims(&f, f.a.url, cvm_now() + 300, NULL));
	ASSERT_ERR(release(&f, "plain", NULL, tok, NULL, NULL, &resp, err), EPERM, "Forbidden",
		   "Key plain is not exportable");
	json_decref(ne);

	/* missing release policy (defence in depth: key creation already requires one) */
	{
		struct cvm_tx *tx = NULL;
		ASSERT_OK(cvm_tx_begin(f.t.store, CVM_TX_WRITE, &tx, err));
		ASSERT_OK(cvm_tx_exec(tx, "UPDATE hsm_key_versions SET release_policy = NULL WHERE "
				      "name = 'cmk'", NULL, 0, NULL, err));
		ASSERT_OK(cvm_tx_commit(tx, err));
		ASSERT_ERR(release(&f, "cmk", NULL, tok, NULL, NULL, &resp, err), EPERM,
			   "Forbidden", "Key cmk has no release policy");
	}
	/* unknown key */
	ASSERT_ERR(release(&f, "nokey", NULL, tok, NULL, NULL, &resp, err), ENOENT, "KeyNotFound",
		   NULL);
	free(tok);
	assert_null(resp);
	json_decref(kb);
	fx_close(&f);
}

/* Tokens from emulated evidence: refused by a policy that does not name x-opencvm-emulated,
 * honoured by one that opts in, refused again when the opt-in says false. */
static void test_release_emulated_token(void **state)
{
	struct fx f;
	fx_open(&f, state, "rel5");
	json_t *resp = NULL;
	json_t *kb = create_key(&f, "plain", "\"kty\":\"oct-HSM\",\"key_size\":256", f.a.url,
				true);
	json_t *c = cvm_claims(&f, f.a.url, cvm_now() + 300, NULL);
	json_object_set_new(c, "x-opencvm-emulated", json_true());
	char *tok = authority_token(&f.a, c);
	ASSERT_ERR(release(&f, "plain", NULL, tok, NULL, NULL, &resp, err), EPERM, "Forbidden",
		   "does not accept emulated evidence");
	free(tok);
	json_decref(kb);

	for (int accept = 1; accept >= 0; accept--) {
		char *p = cvm_asprintf("{\"version\":\"1.0.0\",\"anyOf\":[{\"authority\":\"%s\","
				       "\"allOf\":[{\"claim\":\"x-opencvm-emulated\",\"equals\":%s}]}]}",
				       f.a.url, accept ? "true" : "false");
		char *pb = cvm_b64url_encode(p, strlen(p));
		char *body = cvm_asprintf("{\"kty\":\"oct-HSM\",\"key_size\":256,\"attributes\":"
					  "{\"exportable\":true},\"release_policy\":{\"data\":\"%s\"}}",
					  pb);
		const char *name = accept ? "emu-ok" : "emu-no";
		json_t *k = kt_create(&f.t, name, body);
		c = cvm_claims(&f, f.a.url, cvm_now() + 300, NULL);
		json_object_set_new(c, "x-opencvm-emulated", json_true());
		tok = authority_token(&f.a, c);
		if (accept) {
			ASSERT_OK(release(&f, name, NULL, tok, NULL, NULL, &resp, err));
			json_decref(resp);
			resp = NULL;
		} else {
			ASSERT_ERR(release(&f, name, NULL, tok, NULL, NULL, &resp, err), EPERM,
				   "Forbidden", "do not satisfy");
		}
		free(tok);
		json_decref(k);
		free(body);
		free(pb);
		free(p);
	}
	fx_close(&f);
}

static void test_release_disabled_key(void **state)
{
	struct fx f;
	fx_open(&f, state, "rel4");
	json_t *kb = create_key(&f, "cmk", "\"kty\":\"EC\",\"crv\":\"P-256\"", f.a.url, true);
	const char *ver = kid_version(kb);
	json_t *upd = J("{\"attributes\":{\"enabled\":false}}"), *uo = NULL;
	ASSERT_OK(cvm_hsm_key_update(f.t.h, &caller, "cmk", ver, upd, &uo, err));
	json_decref(upd);
	json_decref(uo);
	char *tok = authority_token(&f.a, cvm_claims(&f, f.a.url, cvm_now() + 300, NULL));
	json_t *resp = NULL;
	ASSERT_ERR(release(&f, "cmk", ver, tok, NULL, NULL, &resp, err), EPERM, "Forbidden",
		   "disabled");
	/* enabled again, the EC key releases as PKCS#8 */
	upd = J("{\"attributes\":{\"enabled\":true}}");
	ASSERT_OK(cvm_hsm_key_update(f.t.h, &caller, "cmk", ver, upd, &uo, err));
	json_decref(upd);
	json_decref(uo);
	ASSERT_OK(release(&f, "cmk", ver, tok, NULL, NULL, &resp, err));
	json_t *bundle = NULL;
	struct cvm_secret *material = open_release(&f, resp, "CKM_RSA_AES_KEY_WRAP", NULL, &bundle);
	struct cvm_key *ec = NULL;
	ASSERT_OK(cvm_key_import_private(CVM_KTY_EC, material->data, material->len, &ec, err));
	assert_string_equal(cvm_key_curve(ec), "P-256");
	cvm_key_free(ec);
	cvm_secret_free(material);
	json_decref(bundle);
	json_decref(resp);
	free(tok);
	json_decref(kb);
	fx_close(&f);
}

/* One store, two cvmd-like handles (HA nodes, or before and after a restart): a token released
 * by one is refused by the other; the replay table keeps only live tokens. */
static int replay_rows(struct cvm_store *s, const char *where)
{
	struct cvm_tx *tx = NULL;
	struct cvm_rows *rows = NULL;
	char sql[160];
	snprintf(sql, sizeof(sql), "SELECT COUNT(*) FROM hsm_release_replay%s%s",
		 where ? " WHERE " : "", where ? where : "");
	ASSERT_OK(cvm_tx_begin(s, CVM_TX_READ, &tx, err));
	ASSERT_OK(cvm_tx_query(tx, sql, NULL, 0, &rows, err));
	int n = (int)cvm_rows_int(rows, 0, 0);
	cvm_rows_free(rows);
	cvm_tx_rollback(tx);
	return n;
}

static struct cvm_hsm *node_open(struct cvm_store *s)
{
	struct cvm_hsm *h = kt_hsm(s, 7, false);
	struct cvm_secret *k = test_domain_key(0x11);
	if (cvm_hsm_domain_exists(h))
		ASSERT_OK(cvm_hsm_domain_unlock(h, k, err));
	else
		ASSERT_OK(cvm_hsm_domain_create_with_key(h, k, err));
	cvm_secret_free(k);
	return h;
}

static int release_on(struct cvm_hsm *h, const char *tok, json_t **out, struct cvm_err *err)
{
	json_t *body = json_pack("{s:s}", "target", tok);
	int r = cvm_hsm_key_release(h, &caller, "cmk", NULL, "7.4", body, out, err);
	json_decref(body);
	return r;
}

static void test_release_replay_across_nodes(void **state)
{
	struct testdb *db = *state;
	char url[1024];
	testdb_url(db, "relha", NULL, url, sizeof(url));
	struct fx f;
	memset(&f, 0, sizeof(f));
	f.t.db = db;
	ASSERT_OK(cvm_store_open(url, &f.t.store, err));
	f.t.h = node_open(f.t.store);
	fx_init(&f);
	struct cvm_store *s2 = NULL;
	ASSERT_OK(cvm_store_open(url, &s2, err));
	struct cvm_hsm *h2 = node_open(s2);

	json_t *kb = create_key(&f, "cmk", "\"kty\":\"RSA-HSM\",\"key_size\":2048", f.a.url, true);
	char *t1 = authority_token(&f.a, cvm_claims(&f, f.a.url, cvm_now() + 300, "t1"));
	char *t2 = authority_token(&f.a, cvm_claims(&f, f.a.url, cvm_now() + 300, "t2"));
	json_t *resp = NULL;
	/* node 1 releases with t1; node 2 refuses t1, releases with t2, which node 1 refuses */
	ASSERT_OK(release_on(f.t.h, t1, &resp, err));
	json_decref(resp);
	ASSERT_ERR(release_on(h2, t1, &resp, err), EPERM, "Forbidden", "already used");
	ASSERT_OK(release_on(h2, t2, &resp, err));
	json_decref(resp);
	ASSERT_ERR(release_on(f.t.h, t2, &resp, err), EPERM, "Forbidden", "already used");
	assert_int_equal(replay_rows(s2, NULL), 2);

	/* a restart of node 1 (new handle on the same store) still refuses both */
	cvm_hsm_free(f.t.h);
	cvm_store_close(f.t.store);
	ASSERT_OK(cvm_store_open(url, &f.t.store, err));
	f.t.h = node_open(f.t.store);
	ASSERT_ERR(release_on(f.t.h, t1, &resp, err), EPERM, "Forbidden", "already used");
	ASSERT_ERR(release_on(f.t.h, t2, &resp, err), EPERM, "Forbidden", "already used");

	/* bounded: rows of expired tokens go with the next release; live ones stay */
	struct cvm_tx *tx = NULL;
	struct cvm_val v[] = { CVM_VAL_S("00"), CVM_VAL_I(cvm_now() - 3600) };
	ASSERT_OK(cvm_tx_begin(s2, CVM_TX_WRITE, &tx, err));
	ASSERT_OK(cvm_tx_exec(tx, "INSERT INTO hsm_release_replay (hash, exp) VALUES (?, ?)", v, 2,
			      NULL, err));
	ASSERT_OK(cvm_tx_commit(tx, err));
	assert_int_equal(replay_rows(s2, NULL), 3);
	char *t3 = authority_token(&f.a, cvm_claims(&f, f.a.url, cvm_now() + 300, "t3"));
	ASSERT_OK(release_on(h2, t3, &resp, err));
	json_decref(resp);
	assert_int_equal(replay_rows(s2, "hash = '00'"), 0);
	assert_int_equal(replay_rows(s2, NULL), 3);

	free(t1);
	free(t2);
	free(t3);
	json_decref(kb);
	cvm_hsm_free(h2);
	cvm_store_close(s2);
	fx_close(&f);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_release_rsa_end_to_end),
		cmocka_unit_test(test_release_oct_x5c_authority),
		cmocka_unit_test(test_release_refusals),
		cmocka_unit_test(test_release_disabled_key),
		cmocka_unit_test(test_release_emulated_token),
		cmocka_unit_test(test_release_replay_across_nodes),
	};
	return testdb_run("hsm-release", tests, CVM_ARRAY_SIZE(tests));
}
