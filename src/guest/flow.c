/* SPDX-License-Identifier: Apache-2.0 */
/* The pure steps of the unlock flow: what the guest binds, sends and receives. */
#include <opencvm/attest.h>
#include <opencvm/guest.h>
#include <opencvm/json.h>

#include <string.h>

int cvm_guest_runtime_data(const struct cvm_key *key, const char *nonce, const char *vm,
			   char **json, struct cvm_err *err)
{
	*json = NULL;
	if (!key || cvm_key_type(key) != CVM_KTY_RSA || cvm_key_bits(key) < 2048)
		return cvm_err_badparam(err, "runtime data: the ephemeral key must be RSA >= 2048");
	if (!nonce || !*nonce || strlen(nonce) > 256)
		return cvm_err_badparam(err, "runtime data: nonce must be 1..256 characters");
	if (!vm || !*vm)
		return cvm_err_badparam(err, "runtime data: vm is required");
	json_t *jwk = NULL;
	int r = cvm_key_to_jwk(key, false, &jwk, err);
	if (r < 0)
		return r;
	if (json_object_set_new(jwk, "kid", json_string(CVM_GUEST_KID)) < 0 ||
	    json_object_set_new(jwk, "key_ops", json_pack("[s]", "encrypt")) < 0) {
		json_decref(jwk);
		return cvm_err_nomem(err);
	}
	_cleanup_json_ json_t *rt = json_pack("{s:[o],s:{s:s},s:s}", "keys", jwk, "client-payload",
					      "nonce", nonce, "vm-id", vm);
	if (!rt)
		return cvm_err_nomem(err);
	/* Sorted keys: the same inputs give the same bytes (and so the same report_data). */
	*json = json_dumps(rt, JSON_COMPACT | JSON_SORT_KEYS);
	return *json ? 0 : cvm_err_nomem(err);
}

int cvm_guest_report_data(const void *data, size_t len, uint8_t out[64], struct cvm_err *err)
{
	memset(out, 0, 64);
	size_t dl = 0;
	int r = cvm_digest("SHA256", data, len, out, &dl, err);
	if (r < 0)
		return r;
	memset(out + 32, 0, 32); /* cvm_digest may use the whole buffer as scratch */
	return 0;
}

int cvm_guest_attest_body(const struct cvm_guest_evidence *ev, const char *runtime,
			  const char *nonce, char **body, struct cvm_err *err)
{
	*body = NULL;
	const uint8_t *snp = ev->report;
	size_t snp_len = ev->report_len;
	const uint8_t *rt = (const uint8_t *)runtime;
	size_t rt_len = runtime ? strlen(runtime) : 0;
	struct cvm_hcl_report h;
	switch (ev->tee) {
	case CVM_GUEST_TEE_SEV_GUEST:
	case CVM_GUEST_TEE_EMULATOR:
		break;
	case CVM_GUEST_TEE_VTPM_HCL: {
		/* The hardware report inside the HCL report, bound to the HCL's runtime data. */
		int r = cvm_hcl_report_parse(ev->report, ev->report_len, &h, err);
		if (r < 0)
			return r;
		if (h.report_type != 2)
			return cvm_err_set(err, ENOTSUP, "TeeError",
					   "vtpm: HCL report type %u; only SEV-SNP (2) is supported "
					   "by /attest/SevSnpVm", h.report_type);
		snp = h.hw_report;
		snp_len = h.hw_len < CVM_SNP_REPORT_SIZE ? h.hw_len : CVM_SNP_REPORT_SIZE;
		rt = h.runtime;
		rt_len = h.runtime_len;
		break;
	}
	default:
		return cvm_err_set(err, ENOTSUP, "TeeError",
				   "%s: the attestation service takes TDX evidence as a TD quote; "
				   "quote generation is not available to cvm-guest",
				   cvm_guest_tee_name(ev->tee));
	}
	if (snp_len != CVM_SNP_REPORT_SIZE)
		return cvm_err_badparam(err, "evidence: SNP report of %zu bytes", snp_len);
	if (!ev->cert_chain)
		return cvm_err_set(err, ENOENT, "TeeError",
				   "evidence: no VCEK certificate chain to send");
	if (!rt || !rt_len)
		return cvm_err_badparam(err, "runtime data is required");
	_cleanup_json_ json_t *inner = json_object();
	if (!inner || cvm_json_set_b64url(inner, "SnpReport", snp, snp_len) < 0 ||
	    cvm_json_set_b64url(inner, "VcekCertChain", ev->cert_chain,
				strlen(ev->cert_chain)) < 0)
		return cvm_err_nomem(err);
	_cleanup_free_ char *inner_s = cvm_json_dump(inner);
	_cleanup_json_ json_t *o = json_object();
	json_t *rtd = json_pack("{s:s}", "dataType", "JSON");
	if (!inner_s || !o || !rtd || json_object_set_new(o, "runtimeData", rtd) < 0 ||
	    cvm_json_set_b64url(o, "report", inner_s, strlen(inner_s)) < 0 ||
	    cvm_json_set_b64url(rtd, "data", rt, rt_len) < 0 ||
	    (nonce && json_object_set_new(o, "nonce", json_string(nonce)) < 0))
		return cvm_err_nomem(err);
	*body = cvm_json_dump(o);
	return *body ? 0 : cvm_err_nomem(err);
}

int cvm_guest_parse_token(const uint8_t *buf, size_t len, char **token, struct cvm_err *err)
{
	*token = NULL;
	_cleanup_json_ json_t *o = NULL;
	const char *t = NULL;
	int r = cvm_json_parse(buf, len, false, &o, err);
	if (r < 0 || (r = cvm_json_str(o, "token", "token", true, &t, NULL, err)) < 0)
		return cvm_err_prefix(err, "attestation response");
	/* A compact JWS: three base64url parts. */
	size_t dots = 0;
	for (const char *p = t; *p; p++) {
		if (*p == '.')
			dots++;
		else if (!((*p >= 'A' && *p <= 'Z') || (*p >= 'a' && *p <= 'z') ||
			   (*p >= '0' && *p <= '9') || *p == '-' || *p == '_'))
			return cvm_err_badparam(err, "attestation response: token: not a compact JWT");
	}
	if (dots != 2)
		return cvm_err_badparam(err, "attestation response: token: not a compact JWT");
	*token = cvm_strdup(t);
	return *token ? 0 : cvm_err_nomem(err);
}

int cvm_guest_parse_release(const uint8_t *buf, size_t len, uint8_t **ct, size_t *ct_len,
			    char **enc, struct cvm_err *err)
{
	*ct = NULL;
	*ct_len = 0;
	*enc = NULL;
	_cleanup_json_ json_t *o = NULL;
	const char *jws_s = NULL;
	int r = cvm_json_parse(buf, len, false, &o, err);
	if (r < 0 || (r = cvm_json_str(o, "value", "value", true, &jws_s, NULL, err)) < 0)
		return cvm_err_prefix(err, "release response");
	struct cvm_jws *jws = NULL;
	if ((r = cvm_jws_parse(jws_s, strlen(jws_s), &jws, err)) < 0)
		return cvm_err_prefix(err, "release response: value");
	_cleanup_json_ json_t *payload = NULL;
	r = cvm_json_parse(jws->payload, jws->payload_len, false, &payload, err);
	cvm_jws_free(jws);
	if (r < 0)
		return cvm_err_prefix(err, "release response: payload");
	json_t *kh = cvm_json_path(payload, "response.key.key.key_hsm");
	if (!json_is_string(kh))
		return cvm_err_badparam(err, "release response: response.key.key.key_hsm: "
					"required string is missing");
	_cleanup_free_ uint8_t *khj = NULL;
	size_t khl = 0;
	if ((r = cvm_b64url_decode(json_string_value(kh), json_string_length(kh), &khj, &khl,
				   "key_hsm", err)) < 0)
		return r;
	_cleanup_json_ json_t *k = NULL;
	json_t *hdr = NULL;
	const char *e = NULL;
	static const char *const encs[] = { "CKM_RSA_AES_KEY_WRAP", "RSA_AES_KEY_WRAP_256",
					    "RSA_AES_KEY_WRAP_384", NULL };
	if ((r = cvm_json_parse(khj, khl, false, &k, err)) < 0 ||
	    (r = cvm_json_obj(k, "header", "key_hsm.header", true, &hdr, err)) < 0 ||
	    (r = cvm_json_enum(hdr, "enc", "key_hsm.header.enc", true, encs, &e, err)) < 0 ||
	    (r = cvm_json_b64url(k, "ciphertext", "key_hsm.ciphertext", true, ct, ct_len, err)) < 0)
		return cvm_err_prefix(err, "release response");
	*enc = cvm_strdup(e);
	if (!*enc) {
		free(*ct);
		*ct = NULL;
		return cvm_err_nomem(err);
	}
	return 0;
}

int cvm_guest_unwrap_released(const struct cvm_key *ephemeral, const char *enc,
			      const uint8_t *ct, size_t len, struct cvm_secret **material,
			      struct cvm_err *err)
{
	int r = cvm_rsa_aes_key_unwrap(cvm_key_pkey(ephemeral), enc, ct, len, material, err);
	return r < 0 ? cvm_err_prefix(err, "released key") : 0;
}

int cvm_guest_unwrap_disk_secret(const struct cvm_secret *material, const char *alg,
				 const char *wrapped_b64url, struct cvm_secret **secret,
				 struct cvm_err *err)
{
	_cleanup_free_ uint8_t *w = NULL;
	size_t wl = 0;
	int r = cvm_b64url_decode(wrapped_b64url, strlen(wrapped_b64url), &w, &wl, "wrapped", err);
	if (r < 0)
		return r;
	if (alg && strcmp(alg, "A256KW") == 0) {
		if (material->len != 32)
			return cvm_err_badparam(err, "A256KW: the released key is %zu bytes, not 32",
						material->len);
		return cvm_aes_kw_unwrap(material->data, 32, false, w, wl, secret, err);
	}
	if (alg && strcmp(alg, "RSA-OAEP-256") == 0) {
		struct cvm_key *k = NULL;
		if ((r = cvm_key_import_private(CVM_KTY_RSA, material->data, material->len, &k,
						err)) < 0)
			return cvm_err_prefix(err, "released key");
		r = cvm_rsa_oaep_decrypt(cvm_key_pkey(k), "SHA256", w, wl, secret, err);
		cvm_key_free(k);
		return r;
	}
	return cvm_err_set(err, ENOTSUP, "BadParameter",
			   "disk token alg: expected RSA-OAEP-256 or A256KW, got %s",
			   alg ? alg : "(none)");
}

int cvm_guest_key_url_split(const char *url, char **name, char **version, struct cvm_err *err)
{
	*name = *version = NULL;
	const char *k = url ? strstr(url, "/keys/") : NULL;
	if (!k)
		return cvm_err_badparam(err, "key url: expected .../keys/<name>/<version>");
	k += 6;
	const char *slash = strchr(k, '/');
	if (!slash || slash == k || !slash[1] || strchr(slash + 1, '/') ||
	    strspn(k, "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-") !=
		    (size_t)(slash - k) ||
	    strspn(slash + 1, "0123456789abcdefABCDEF") != strlen(slash + 1))
		return cvm_err_badparam(err, "key url: expected .../keys/<name>/<version>");
	*name = strndup(k, (size_t)(slash - k));
	*version = cvm_strdup(slash + 1);
	if (!*name || !*version) {
		free(*name);
		free(*version);
		*name = *version = NULL;
		return cvm_err_nomem(err);
	}
	return 0;
}
