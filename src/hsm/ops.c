/* SPDX-License-Identifier: Apache-2.0 */
/* Key operations: encrypt, decrypt, wrapkey, unwrapkey, sign, verify. The key is loaded from
 * the unsealed-key cache (one indexed row read for its attributes), checked for state and
 * key_ops, and the crypto module does the work. */
#include "hsm-internal.h"

#include <string.h>
#include <strings.h>

#include <opencvm/json.h>

enum op_kind { OP_ENCRYPT, OP_DECRYPT, OP_WRAP, OP_UNWRAP, OP_SIGN, OP_VERIFY };

static const struct {
	const char *path;   /* REST path segment */
	const char *jwk_op; /* key_ops spelling */
	enum op_kind kind;
} ops[] = {
	{ "encrypt", "encrypt", OP_ENCRYPT }, { "decrypt", "decrypt", OP_DECRYPT },
	{ "wrapkey", "wrapKey", OP_WRAP },    { "unwrapkey", "unwrapKey", OP_UNWRAP },
	{ "sign", "sign", OP_SIGN },          { "verify", "verify", OP_VERIFY },
};

struct op_args {
	const char *alg;
	uint8_t *value, *digest, *iv, *aad, *tag;
	size_t value_len, digest_len, iv_len, aad_len, tag_len;
};

static void op_args_clear(struct op_args *a)
{
	cvm_free_secure(a->value, a->value_len);
	free(a->digest);
	free(a->iv);
	free(a->aad);
	free(a->tag);
}

static int parse_args(json_t *body, enum op_kind kind, struct op_args *a, struct cvm_err *err)
{
	int r;
	if (!body || !json_is_object(body))
		return cvm_err_badparam(err, "body: expected a JSON object with alg and value");
	if ((r = cvm_json_str(body, "alg", "alg", true, &a->alg, NULL, err)) < 0 ||
	    (r = cvm_json_b64url(body, "value", "value", true, &a->value, &a->value_len, err)) < 0)
		return r;
	if (kind == OP_VERIFY &&
	    (r = cvm_json_b64url(body, "digest", "digest", true, &a->digest, &a->digest_len,
				 err)) < 0)
		return r;
	if (kind == OP_ENCRYPT || kind == OP_DECRYPT) {
		if ((r = cvm_json_b64url(body, "iv", "iv", false, &a->iv, &a->iv_len, err)) < 0 ||
		    (r = cvm_json_b64url(body, "aad", "aad", false, &a->aad, &a->aad_len, err)) < 0 ||
		    (r = cvm_json_b64url(body, "tag", "tag", false, &a->tag, &a->tag_len, err)) < 0)
			return r;
	}
	return 0;
}

static int do_crypt(const struct cvm_key *k, enum op_kind kind, const struct op_args *a,
		 struct cvm_crypt_out *o, struct cvm_err *err)
{
	struct cvm_crypt_in in = {
		.alg = a->alg, .data = a->value, .len = a->value_len,
		.iv = a->iv, .iv_len = a->iv_len, .aad = a->aad, .aad_len = a->aad_len,
		.tag = a->tag, .tag_len = a->tag_len,
	};
	switch (kind) {
	case OP_ENCRYPT: return cvm_key_encrypt(k, &in, o, err);
	case OP_DECRYPT: return cvm_key_decrypt(k, &in, o, err);
	case OP_WRAP: return cvm_key_wrap(k, &in, o, err);
	case OP_UNWRAP: return cvm_key_unwrap(k, &in, o, err);
	default: return cvm_err_internal(err, "not a crypt operation");
	}
}

static int run_op(const struct cvm_hsm_keyver *kv, const char *kid, enum op_kind kind,
		  const struct op_args *a, json_t **out, struct cvm_err *err)
{
	_cleanup_json_ json_t *res = json_object();
	if (!res)
		return cvm_err_nomem(err);
	int r;
	if (kind == OP_VERIFY) {
		bool valid = false;
		r = cvm_key_verify_digest(kv->key, a->alg, a->digest, a->digest_len, a->value,
					  a->value_len, &valid, err);
		if (r < 0)
			return r;
		if (json_object_set_new(res, "value", json_boolean(valid)))
			return cvm_err_nomem(err);
		*out = CVM_TAKE(res);
		return 0;
	}
	if (json_object_set_new(res, "kid", json_string(kid)))
		return cvm_err_nomem(err);
	if (kind == OP_SIGN) {
		_cleanup_buf_ struct cvm_buf sig = {0};
		r = cvm_key_sign_digest(kv->key, a->alg, a->value, a->value_len, &sig, err);
		if (r < 0)
			return r;
		if (cvm_json_set_b64url(res, "value", sig.data, sig.len))
			return cvm_err_nomem(err);
		*out = CVM_TAKE(res);
		return 0;
	}
	struct cvm_crypt_out o = {0};
	r = do_crypt(kv->key, kind, a, &o, err);
	if (r == 0) {
		int j = cvm_json_set_b64url(res, "value", o.data.data, o.data.len);
		if (kind == OP_ENCRYPT && o.iv_len)
			j |= cvm_json_set_b64url(res, "iv", o.iv, o.iv_len);
		if (kind == OP_ENCRYPT && o.tag_len)
			j |= cvm_json_set_b64url(res, "tag", o.tag, o.tag_len);
		if (kind == OP_ENCRYPT && o.tag_len && a->aad)
			j |= cvm_json_set_b64url(res, "aad", a->aad, a->aad_len);
		if (j)
			r = cvm_err_nomem(err);
	}
	cvm_crypt_out_free(&o);
	if (r < 0)
		return r;
	*out = CVM_TAKE(res);
	return 0;
}

int cvm_hsm_key_op(struct cvm_hsm *h, const struct cvm_hsm_caller *c, const char *name,
		   const char *version, const char *op, json_t *body, json_t **out,
		   struct cvm_err *err)
{
	int active = cvm_hsm_check_active(h, err);
	if (active < 0)
		return active;
	size_t i;
	for (i = 0; i < CVM_ARRAY_SIZE(ops); i++)
		if (op && strcasecmp(op, ops[i].path) == 0)
			break;
	if (i == CVM_ARRAY_SIZE(ops))
		return cvm_err_badparam(err, "operation: expected encrypt, decrypt, wrapkey, "
					     "unwrapkey, sign or verify");
	struct op_args a = {0};
	_cleanup_keyver_ struct cvm_hsm_keyver *kv = NULL;
	int r = parse_args(body, ops[i].kind, &a, err);
	if (r == 0)
		r = cvm_hsm_keyver_load(h, name, version, &kv, err);
	if (r == 0)
		r = cvm_hsm_keyver_usable(kv, ops[i].path, cvm_now(), err);
	if (r == 0)
		r = cvm_hsm_keyver_permits(kv, ops[i].jwk_op, err);
	_cleanup_free_ char *kid = r == 0 ? cvm_hsm_kid(c, kv->display, kv->version) : NULL;
	if (r == 0 && !kid)
		r = cvm_err_nomem(err);
	if (r == 0)
		r = run_op(kv, kid, ops[i].kind, &a, out, err);
	op_args_clear(&a);
	return r;
}
