/* SPDX-License-Identifier: Apache-2.0 */
/* hsm Secure Key Release: verify an attestation token from an authority the key's release
 * policy names, evaluate the policy, and return the key wrapped (CKM_RSA_AES_KEY_WRAP family)
 * for the RSA key bound inside the token, in a JWS signed by the release-signing key. */
#include <string.h>

#include <openssl/sha.h>

#include "auth-internal.h"

#define LEEWAY 60
#define WRAP_KID_DEFAULT "TpmEphemeralEncryptionKey"

static const char *const encs[] = { "CKM_RSA_AES_KEY_WRAP", "RSA_AES_KEY_WRAP_256",
				    "RSA_AES_KEY_WRAP_384", NULL };

/* ---- replay ----------------------------------------------------------------------------- */

/* A token releases once across every cvmd sharing the store (HA nodes, restarts): its hash is
 * inserted into hsm_release_replay in a write transaction of its own before the key is
 * wrapped, and a row already there refuses it. Rows live until exp + LEEWAY (the token is
 * accepted that long) and each release deletes the expired ones, so the table holds only live
 * tokens. The insert commits lazily (no flush of its own): the request's audit record commits
 * durably after it and before any response leaves, and that flush covers the row too, so a
 * release that was answered can never be replayed after a crash. */
struct replay_row {
	char hex[65];
	int64_t exp, now;
};

static int replay_tx(struct cvm_tx *tx, void *ctx, struct cvm_err *err)
{
	const struct replay_row *row = ctx;
	struct cvm_val del[] = { CVM_VAL_I(row->now - LEEWAY) };
	struct cvm_val ins[] = { CVM_VAL_S(row->hex), CVM_VAL_I(row->exp) };
	int64_t added = 0;
	int r = cvm_tx_exec(tx, "DELETE FROM hsm_release_replay WHERE exp < ?", del, 1, NULL, err);
	if (r == 0)
		r = cvm_tx_exec(tx, "INSERT INTO hsm_release_replay (hash, exp) VALUES (?, ?) "
				    "ON CONFLICT (hash) DO NOTHING",
				ins, 2, &added, err);
	if (r == 0 && added != 1)
		r = cvm_err_set(err, EPERM, "Forbidden",
				"target: this attestation token was already used for a release; "
				"request a fresh token");
	return r;
}

/* Records the token; -EPERM when it was already used and is still alive. */
static int replay_check(struct cvm_hsm *h, const uint8_t hash[32], int64_t exp, int64_t now,
			struct cvm_err *err)
{
	struct replay_row row = { .exp = exp, .now = now };
	for (size_t i = 0; i < 32; i++)
		snprintf(row.hex + 2 * i, 3, "%02x", hash[i]);
	return cvm_store_transact(h->store, CVM_TX_WRITE_LAZY, replay_tx, &row, err);
}

/* ---- pieces ----------------------------------------------------------------------------- */

static int decode_policy(const struct cvm_hsm_keyver *kv, json_t **out, struct cvm_err *err)
{
	const char *data = json_string_value(json_object_get(kv->release_policy, "data"));
	if (!data)
		return cvm_err_set(err, EPERM, "Forbidden",
				   "Key %s has no release policy; only keys with a release policy "
				   "can be released.", kv->display);
	_cleanup_free_ uint8_t *raw = NULL;
	size_t len = 0;
	struct cvm_err e2 = { 0 };
	/* Key Vault clients send base64url, some send standard base64. */
	if (cvm_b64url_decode(data, strlen(data), &raw, &len, "release_policy.data", &e2) < 0) {
		int r = cvm_b64_decode(data, strlen(data), &raw, &len, "release_policy.data", err);
		if (r < 0)
			return r;
	}
	return cvm_hsm_release_policy_parse(raw, len, out, err);
}

/* Claim value as a string for nonce comparison (strings as is, integers in decimal). */
static bool claim_str(json_t *v, char *buf, size_t n)
{
	if (json_is_string(v)) {
		snprintf(buf, n, "%s", json_string_value(v));
		return strlen(json_string_value(v)) < n;
	}
	if (json_is_integer(v)) {
		snprintf(buf, n, "%lld", (long long)json_integer_value(v));
		return true;
	}
	return false;
}

static int check_nonce(json_t *claims, const char *nonce, struct cvm_err *err)
{
	static const char *const paths[] = { "nonce", "x-ms-runtime.client-payload.nonce",
					     "x-ms-runtime.nonce" };
	for (size_t i = 0; i < CVM_ARRAY_SIZE(paths); i++) {
		char buf[512];
		json_t *v = cvm_json_path(claims, paths[i]);
		if (v && claim_str(v, buf, sizeof(buf)) && strlen(buf) == strlen(nonce) &&
		    CRYPTO_memcmp(buf, nonce, strlen(nonce)) == 0)
			return 0;
	}
	return cvm_err_set(err, EPERM, "Forbidden",
			   "nonce: the attestation token does not carry this nonce (checked claims "
			   "nonce, x-ms-runtime.client-payload.nonce, x-ms-runtime.nonce)");
}

static bool ops_allow_encrypt(json_t *ops)
{
	if (!ops)
		return true;
	if (json_is_string(ops))
		return strcmp(json_string_value(ops), "encrypt") == 0 ||
		       strcmp(json_string_value(ops), "wrapKey") == 0;
	size_t i;
	json_t *v;
	json_array_foreach(ops, i, v) {
		const char *s = json_string_value(v);
		if (s && (strcmp(s, "encrypt") == 0 || strcmp(s, "wrapKey") == 0))
			return true;
	}
	return false;
}

/* The RSA key the token binds for key transfer (x-ms-runtime.keys). */
static int wrapping_key(json_t *claims, struct cvm_key **out, const char **kid,
			struct cvm_err *err)
{
	json_t *keys = cvm_json_path(claims, "x-ms-runtime.keys");
	if (!json_is_array(keys) || json_array_size(keys) == 0)
		return cvm_err_badparam(err, "target: x-ms-runtime.keys: the token binds no key to "
					"wrap the released key for");
	json_t *pick = NULL;
	size_t pi = 0, i;
	json_t *k;
	json_array_foreach(keys, i, k) {
		const char *kk = json_string_value(json_object_get(k, "kid"));
		if (kk && strcmp(kk, WRAP_KID_DEFAULT) == 0) {
			pick = k;
			pi = i;
			break;
		}
	}
	json_array_foreach(keys, i, k) {
		if (pick)
			break;
		const char *kty = json_string_value(json_object_get(k, "kty"));
		if (kty && strncmp(kty, "RSA", 3) == 0 &&
		    ops_allow_encrypt(json_object_get(k, "key_ops"))) {
			pick = k;
			pi = i;
		}
	}
	if (!pick)
		return cvm_err_badparam(err, "target: x-ms-runtime.keys: no RSA key with kid "
					"\"" WRAP_KID_DEFAULT "\" or key_ops allowing encrypt");
	/* The JWK may carry key_ops as a string (confidential sidecar): give from_jwk a copy
	 * without it. */
	_cleanup_json_ json_t *jwk = json_deep_copy(pick);
	if (!jwk)
		return cvm_err_nomem(err);
	json_object_del(jwk, "key_ops");
	int r = cvm_key_from_jwk(jwk, false, out, err);
	if (r < 0)
		return cvm_err_prefix(err, "target: x-ms-runtime.keys[%zu]", pi);
	if (cvm_key_type(*out) != CVM_KTY_RSA || cvm_key_bits(*out) < 2048) {
		int bits = cvm_key_bits(*out);
		cvm_key_free(*out);
		*out = NULL;
		return cvm_err_badparam(err, "target: x-ms-runtime.keys[%zu]: expected an RSA key "
					"of at least 2048 bits, got %d bits", pi, bits);
	}
	*kid = json_string_value(json_object_get(pick, "kid"));
	return 0;
}

static int key_hsm(const struct cvm_key *key, struct cvm_key *wrap, const char *wrap_kid,
		   const char *enc, char **out, struct cvm_err *err)
{
	_cleanup_secret_ struct cvm_secret *material = NULL;
	int r = cvm_key_export_private(key, &material, err);
	if (r < 0)
		return r;
	_cleanup_buf_ struct cvm_buf ct = { 0 };
	if ((r = cvm_rsa_aes_key_wrap(cvm_key_pkey(wrap), enc, material->data, material->len, &ct,
				      err)) < 0)
		return r;
	_cleanup_json_ json_t *o = json_pack("{s:s,s:{s:s?,s:s,s:s}}", "schema_version", "1.0",
					     "header", "kid", wrap_kid, "alg", "dir", "enc", enc);
	if (!o || cvm_json_set_b64url(o, "ciphertext", ct.data, ct.len) < 0)
		return cvm_err_nomem(err);
	_cleanup_free_ char *text = cvm_json_dump(o);
	if (!text)
		return cvm_err_nomem(err);
	*out = cvm_b64url_encode(text, strlen(text));
	return *out ? 0 : cvm_err_nomem(err);
}

/* ---- the operation ---------------------------------------------------------------------- */

struct target {
	struct cvm_jws *jws;
	json_t *claims;
	const char *iss;
};

static void target_clear(struct target *t)
{
	cvm_jws_free(t->jws);
	if (t->claims)
		json_decref(t->claims);
}

static int parse_target(const char *target, struct target *t, struct cvm_err *err)
{
	int r = cvm_jws_parse(target, strlen(target), &t->jws, err);
	if (r < 0)
		return cvm_err_prefix(err, "target");
	if ((r = cvm_json_parse(t->jws->payload, t->jws->payload_len, false, &t->claims, err)) < 0)
		return cvm_err_prefix(err, "target: claims");
	t->iss = json_string_value(json_object_get(t->claims, "iss"));
	if (!t->iss)
		return cvm_err_badparam(err, "target: the token has no iss claim");
	return 0;
}

/* Authority, signature, times, policy. */
/* Does any leaf of the policy (nested anyOf/allOf) test this claim? */
static bool release_policy_names_claim(json_t *node, const char *claim)
{
	if (json_is_array(node)) {
		size_t i;
		json_t *v;
		json_array_foreach(node, i, v)
			if (release_policy_names_claim(v, claim))
				return true;
		return false;
	}
	if (!json_is_object(node))
		return false;
	const char *c = json_string_value(json_object_get(node, "claim"));
	if (c && strcmp(c, claim) == 0)
		return true;
	return release_policy_names_claim(json_object_get(node, "anyOf"), claim) ||
	       release_policy_names_claim(json_object_get(node, "allOf"), claim);
}

static int verify_target(struct cvm_hsm *h, struct target *t, json_t *policy, const char *name,
			 int64_t now, struct cvm_err *err)
{
	bool named = false;
	int r = hsm_policy_names_issuer(policy, t->iss, &named, err);
	if (r < 0)
		return r;
	if (!named)
		return cvm_err_set(err, EPERM, "Forbidden",
				   "target: token issuer %s is not an authority of this key's release "
				   "policy", t->iss);
	const char *kid = json_string_value(json_object_get(t->jws->header, "kid"));
	_cleanup_key_ struct cvm_key *pub = NULL;
	if ((r = hsm_jwks_key(h, t->iss, kid, &pub, err)) < 0)
		return r;
	if ((r = cvm_jws_verify(t->jws, pub, err)) < 0) {
		cvm_err_prefix(err, "target: signature verification with the issuer's key failed");
		return cvm_err_set_code(err, EBADMSG, "BadParameter");
	}
	if ((r = cvm_jwt_check_times(t->claims, now, LEEWAY, false, err)) < 0)
		return cvm_err_prefix(err, "target");
	bool allowed = false;
	if ((r = hsm_policy_eval(policy, t->iss, t->claims, &allowed, err)) < 0)
		return r;
	if (!allowed)
		return cvm_err_set(err, EPERM, "Forbidden",
				   "target: the token's claims do not satisfy the release policy of "
				   "key %s", name);
	/* Emulated evidence proves nothing about hardware: its tokens are honoured only by
	 * policies that opt in by naming the claim (trust rule: default policies refuse them). */
	if (json_is_true(json_object_get(t->claims, "x-opencvm-emulated")) &&
	    !release_policy_names_claim(policy, "x-opencvm-emulated"))
		return cvm_err_set(err, EPERM, "Forbidden",
				   "target: the token comes from the TEE emulator and the release "
				   "policy of key %s does not accept emulated evidence (it must name "
				   "the claim x-opencvm-emulated)", name);
	return 0;
}

static int build_response(struct cvm_hsm *h, const struct cvm_hsm_caller *c,
			  const struct cvm_hsm_keyver *kv, const char *api_version,
			  const char *enc, const char *nonce, const char *key_hsm_b64,
			  json_t **out, struct cvm_err *err)
{
	_cleanup_json_ json_t *bundle = NULL;
	int r = cvm_hsm_key_bundle(h, c, kv, &bundle, err);
	if (r < 0)
		return r;
	json_t *key = json_object_get(bundle, "key");
	if (!key || json_object_set_new(key, "key_hsm",
						     json_stringn_nocheck(key_hsm_b64, strlen(key_hsm_b64))) < 0)
		return cvm_err_internal(err, "release: key bundle without key object");
	_cleanup_free_ char *kid = cvm_hsm_kid(c, kv->display, kv->version);
	_cleanup_json_ json_t *payload = json_pack("{s:{s:s,s:s,s:s},s:{s:O}}", "request",
						   "api-version", api_version, "enc", enc, "kid",
						   kid ? kid : "", "response", "key", bundle);
	if (!kid || !payload ||
	    (nonce && json_object_set_new(json_object_get(payload, "request"), "nonce",
					  json_string(nonce)) < 0))
		return cvm_err_nomem(err);
	_cleanup_free_ char *text = cvm_json_dump(payload);
	if (!text)
		return cvm_err_nomem(err);
	struct cvm_key *signer;
	json_t *hdr;
	if ((r = hsm_release_signer(h, &signer, &hdr, err)) < 0)
		return r;
	_cleanup_free_ char *jws = NULL;
	if ((r = cvm_jws_sign(signer, "RS256", hdr, (const uint8_t *)text, strlen(text), &jws,
			      err)) < 0)
		return r;
	/* A compact JWS is base64url and dots: ASCII, no UTF-8 check needed. */
	*out = json_pack("{s:o}", "value", json_stringn_nocheck(jws, strlen(jws)));
	return *out ? 0 : cvm_err_nomem(err);
}

int cvm_hsm_key_release(struct cvm_hsm *h, const struct cvm_hsm_caller *c, const char *name,
			const char *version, const char *api_version, json_t *body, json_t **out,
			struct cvm_err *err)
{
	struct cvm_hsm_auth *a;
	int r = hsm_auth(h, &a, err);
	if (r < 0)
		return r;
	int64_t now = cvm_now();
	_cleanup_keyver_ struct cvm_hsm_keyver *kv = NULL;
	if ((r = cvm_hsm_keyver_load(h, name, version, &kv, err)) < 0 ||
	    (r = cvm_hsm_keyver_usable(kv, "release", now, err)) < 0)
		return r;
	if (!kv->exportable)
		return cvm_err_set(err, EPERM, "Forbidden",
				   "Key %s is not exportable; only exportable keys can be released.",
				   name);
	if (!kv->release_policy)
		return cvm_err_set(err, EPERM, "Forbidden",
				   "Key %s has no release policy; only keys with a release policy "
				   "can be released.", name);
	_cleanup_json_ json_t *policy = NULL;
	if ((r = decode_policy(kv, &policy, err)) < 0)
		return r;

	const char *target, *nonce = NULL, *enc = NULL;
	if (!json_is_object(body))
		return cvm_err_badparam(err, "body: expected a JSON object with target");
	if ((r = cvm_json_str(body, "target", "target", true, &target, NULL, err)) < 0 ||
	    (r = cvm_json_str(body, "nonce", "nonce", false, &nonce, NULL, err)) < 0 ||
	    (r = cvm_json_enum(body, "enc", "enc", false, encs, &enc, err)) < 0)
		return r;
	if (!enc)
		enc = encs[0];

	_cleanup_(target_clear) struct target t = { 0 };
	if ((r = parse_target(target, &t, err)) < 0 ||
	    (r = verify_target(h, &t, policy, name, now, err)) < 0)
		return r;
	if (nonce && (r = check_nonce(t.claims, nonce, err)) < 0)
		return r;
	_cleanup_key_ struct cvm_key *wrap = NULL;
	const char *wrap_kid = NULL;
	if ((r = wrapping_key(t.claims, &wrap, &wrap_kid, err)) < 0)
		return r;

	uint8_t th[32];
	SHA256((const uint8_t *)t.jws->signing_input, t.jws->signing_input_len, th);
	if ((r = replay_check(h, th, json_integer_value(json_object_get(t.claims, "exp")), now,
			      err)) < 0)
		return r;

	_cleanup_free_ char *kh = NULL;
	if ((r = key_hsm(kv->key, wrap, wrap_kid, enc, &kh, err)) < 0)
		return r;
	r = build_response(h, c, kv, api_version ? api_version : "7.4", enc, nonce, kh, out, err);
	if (r < 0)
		return r;
	cvm_log_info("hsm_key_released", "key=%s version=%s principal=%s issuer=%s enc=%s "
		     "wrapping_kid=%s request_id=%s", kv->name, kv->version,
		     c && c->principal ? c->principal : "-", t.iss, enc,
		     wrap_kid ? wrap_kid : "-", c && c->request_id ? c->request_id : "-");
	return 0;
}
