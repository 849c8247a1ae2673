/* SPDX-License-Identifier: Apache-2.0 */
/* POST /attest/AzureGuest: the request Azure's CVM guest attestation library sends.
 *
 * Request shape as recorded from the client library (AttestationParameters.cpp, TpmInfo.cpp,
 * IsolationInfo.cpp; see shared/reference/azure-rest-facts.md "AzureGuest flow"):
 *   {"AttestationInfo": base64url(JSON {
 *      "AttestationProtocolVersion": "...", "OSType": b64, "OSDistro": b64, "OSVersionMajor": n,
 *      "OSVersionMinor": n, "OSBuild": b64, "TcgLogs": b64, "ClientPayload": {"k": b64, ...},
 *      "TpmInfo": {"AikCert", "AikPub", "PcrQuote", "PcrSignature", "EncKeyPub",
 *                  "EncKeyCertifyInfo", "EncKeyCertifyInfoSignature", "PcrSet": [n],
 *                  "Pcrs": [{"Index": n, "Digest": b64}]},
 *      "IsolationInfo": {"Type": "SevSnp"|"Tdx"|"TrustedLaunch",
 *                        "Evidence": {"Proof": b64, "RunTimeData": b64}}})}
 * Where the reference is silent we decide, and say so here:
 *  - base64 flavour: every base64 field accepts base64url and standard base64.
 *  - ClientPayload: an object of base64 strings (the reference); a base64 JSON object is also
 *    accepted. Its decoded members become x-ms-runtime.client-payload (claim name not recorded).
 *  - PcrQuote is the marshalled TPMS_ATTEST; PcrSignature / EncKeyCertifyInfoSignature are the
 *    raw RSA signature or a marshalled TPMT_SIGNATURE (RSASSA/RSAPSS, SHA-256), both accepted.
 *  - EncKeyPub is a TPM2B_PUBLIC / TPMT_PUBLIC RSA key; EncKeyCertifyInfo is a TPMS_ATTEST of
 *    type TPM_ST_ATTEST_CERTIFY whose certified name must be SHA-256 name of EncKeyPub, signed
 *    by the AK with RSASSA-PKCS1-v1_5 SHA-256.
 *  - AikCert/AikPub are not used: the AK we trust is HCLAkPub from RunTimeData, which the TEE
 *    report binds; Azure's vTPM AK certificate CA is not available to us.
 *  - IsolationInfo.Type "TrustedLaunch" (no TEE evidence) is refused.
 * Sealed response (reference "AzureGuest sealed response format"): implemented as recorded -
 * AES-256-GCM, 12-byte IV, AAD "Transport Key", key RSAES-PKCS1-v1_5 to EncKeyPub. Not
 * implemented: "BlockPadding" (not emitted: GCM needs none) and key sizes other than 256. */
#include <string.h>

#include <openssl/evp.h>
#include <openssl/rsa.h>

#include <opencvm/json.h>

#include "attest-internal.h"

#define AG "AttestationInfo"
#define AG_TEXT_MAX 256
#define AG_PAYLOAD_MAX 8192
#define AG_RUNTIME_MAX (64 * 1024)
#define TPM_ALG_SHA256 0x000b
#define TPM_ALG_RSA 0x0001
#define TPM_ALG_NULL 0x0010
#define TPM_ALG_RSASSA 0x0014
#define TPM_ALG_RSAPSS 0x0016
#define TPM_ST_ATTEST_CERTIFY 0x8017
#define TPM_GENERATED 0xff544347u

void cvm_azureguest_req_clear(struct cvm_azureguest_req *r)
{
	json_decref(r->info);
	json_decref(r->client_payload);
	free(r->os_type);
	free(r->os_distro);
	free(r->os_build);
	free(r->hw);
	free(r->vcek_chain);
	free(r->runtime);
	free(r->tcg_log);
	free(r->quote);
	free(r->quote_sig);
	free(r->enc_key_pub);
	free(r->enc_certify);
	free(r->enc_certify_sig);
	memset(r, 0, sizeof(*r));
}

/* base64url or standard base64: the client library's encoder is not recorded precisely. */
static int b64_any(const char *s, uint8_t **out, size_t *len, const char *what,
		   struct cvm_err *err)
{
	if (cvm_b64url_decode(s, strlen(s), out, len, what, err) == 0)
		return 0;
	cvm_err_clear(err);
	return cvm_b64_decode(s, strlen(s), out, len, what, err);
}

/* obj[field] as a base64 string decoded; *out NULL when absent and optional. */
static int b64_field(json_t *obj, const char *field, const char *path, bool required,
		     uint8_t **out, size_t *len, struct cvm_err *err)
{
	const char *s = NULL;
	*out = NULL;
	*len = 0;
	int rc = cvm_json_str(obj, field, path, required, &s, NULL, err);
	if (rc < 0 || !s)
		return rc;
	if ((rc = b64_any(s, out, len, path, err)) < 0)
		return rc;
	if (*len == 0) {
		/* An empty optional value (e.g. TcgLogs "" on a VM without logs) means absent. */
		free(CVM_TAKE(*out));
		if (required)
			return cvm_err_badparam(err, "%s: must not be empty", path);
	}
	return 0;
}

/* A base64 field holding short text (OSType, ...): NUL-terminated, no NUL inside. */
static int text_field(json_t *obj, const char *field, const char *path, bool required,
		      size_t max, char **out, struct cvm_err *err)
{
	_cleanup_free_ uint8_t *b = NULL;
	size_t bl = 0;
	int rc = b64_field(obj, field, path, required, &b, &bl, err);
	if (rc < 0 || !b)
		return rc;
	if (bl > max || memchr(b, 0, bl))
		return cvm_err_badparam(err, "%s: expected base64 text of at most %zu bytes", path,
					max);
	char *t = malloc(bl + 1);
	if (!t)
		return cvm_err_nomem(err);
	memcpy(t, b, bl);
	t[bl] = '\0';
	*out = t;
	return 0;
}

static int parse_os(json_t *info, struct cvm_azureguest_req *r, struct cvm_err *err)
{
	int rc;
	if ((rc = cvm_json_str(info, "AttestationProtocolVersion", AG ".AttestationProtocolVersion",
			       true, &r->protocol_version, NULL, err)) < 0)
		return rc;
	if (!r->protocol_version[0] || strlen(r->protocol_version) > 16)
		return cvm_err_badparam(err, AG ".AttestationProtocolVersion: expected a version "
					"string like \"2.0\"");
	if ((rc = text_field(info, "OSType", AG ".OSType", true, AG_TEXT_MAX, &r->os_type,
			      err)) < 0)
		return rc;
	if (strcmp(r->os_type, "Linux") != 0 && strcmp(r->os_type, "Windows") != 0)
		return cvm_err_badparam(err, AG ".OSType: expected base64 of \"Linux\" or \"Windows\"");
	bool present = false;
	r->os_major = r->os_minor = -1;
	if ((rc = text_field(info, "OSDistro", AG ".OSDistro", false, AG_TEXT_MAX, &r->os_distro,
				   err)) < 0 ||
	    (rc = text_field(info, "OSBuild", AG ".OSBuild", false, AG_TEXT_MAX, &r->os_build,
				   err)) < 0 ||
	    (rc = cvm_json_int(info, "OSVersionMajor", AG ".OSVersionMajor", false, 0, INT32_MAX,
			       &r->os_major, &present, err)) < 0)
		return rc;
	if (!present)
		r->os_major = -1;
	if ((rc = cvm_json_int(info, "OSVersionMinor", AG ".OSVersionMinor", false, 0, INT32_MAX,
			       &r->os_minor, &present, err)) < 0)
		return rc;
	if (!present)
		r->os_minor = -1;
	return 0;
}

/* SevSnp Proof: base64(JSON {"SnpReport": base64url, "VcekCertChain": base64}). */
static int parse_snp_proof(const uint8_t *proof, size_t len, struct cvm_azureguest_req *r,
			   struct cvm_err *err)
{
	_cleanup_json_ json_t *p = NULL;
	int rc = cvm_json_parse(proof, len, false, &p, err);
	if (rc < 0)
		return cvm_err_prefix(err, AG ".IsolationInfo.Evidence.Proof");
	if ((rc = b64_field(p, "SnpReport", AG ".IsolationInfo.Evidence.Proof.SnpReport", true,
			    &r->hw, &r->hw_len, err)) < 0)
		return rc;
	return b64_field(p, "VcekCertChain", AG ".IsolationInfo.Evidence.Proof.VcekCertChain", true,
			 &r->vcek_chain, &r->vcek_chain_len, err);
}

static int parse_isolation(json_t *info, struct cvm_azureguest_req *r, struct cvm_err *err)
{
	static const char *const types[] = { "SevSnp", "Tdx", "TrustedLaunch", NULL };
	json_t *iso = NULL, *ev = NULL;
	const char *type = NULL;
	int rc;
	if ((rc = cvm_json_obj(info, "IsolationInfo", AG ".IsolationInfo", true, &iso, err)) < 0 ||
	    (rc = cvm_json_enum(iso, "Type", AG ".IsolationInfo.Type", true, types, &type, err)) < 0)
		return rc;
	if (strcmp(type, "TrustedLaunch") == 0)
		return cvm_err_set(err, ENOTSUP, "BadParameter",
				   AG ".IsolationInfo.Type: TrustedLaunch carries no TEE evidence; "
				   "only SevSnp and Tdx are supported");
	r->tdx = strcmp(type, "Tdx") == 0;
	if ((rc = cvm_json_obj(iso, "Evidence", AG ".IsolationInfo.Evidence", true, &ev, err)) < 0)
		return rc;
	_cleanup_free_ uint8_t *proof = NULL;
	size_t pl = 0;
	if ((rc = b64_field(ev, "Proof", AG ".IsolationInfo.Evidence.Proof", true, &proof, &pl,
			    err)) < 0 ||
	    (rc = b64_field(ev, "RunTimeData", AG ".IsolationInfo.Evidence.RunTimeData", true,
			    &r->runtime, &r->runtime_len, err)) < 0)
		return rc;
	if (r->runtime_len > AG_RUNTIME_MAX)
		return cvm_err_set(err, E2BIG, "BadParameter",
				   AG ".IsolationInfo.Evidence.RunTimeData: larger than %d bytes",
				   AG_RUNTIME_MAX);
	if (r->tdx) {
		r->hw = CVM_TAKE(proof);
		r->hw_len = pl;
		return 0;
	}
	return parse_snp_proof(proof, pl, r, err);
}

static int parse_pcrs(json_t *tpm, struct cvm_azureguest_req *r, struct cvm_err *err)
{
	json_t *arr = NULL, *set = NULL;
	int rc = cvm_json_arr(tpm, "Pcrs", AG ".TpmInfo.Pcrs", true, &arr, err);
	if (rc < 0)
		return rc;
	size_t i;
	json_t *e;
	json_array_foreach(arr, i, e) {
		char path[64];
		snprintf(path, sizeof(path), AG ".TpmInfo.Pcrs[%zu]", i);
		if (!json_is_object(e))
			return cvm_err_badparam(err, "%s: expected an object {Index, Digest}", path);
		int64_t idx = 0;
		_cleanup_free_ uint8_t *d = NULL;
		size_t dl = 0;
		char p2[80];
		snprintf(p2, sizeof(p2), "%s.Index", path);
		if ((rc = cvm_json_int(e, "Index", p2, true, 0, 23, &idx, NULL, err)) < 0)
			return rc;
		snprintf(p2, sizeof(p2), "%s.Digest", path);
		if ((rc = b64_field(e, "Digest", p2, true, &d, &dl, err)) < 0)
			return rc;
		if (dl != 32)
			return cvm_err_badparam(err, "%s: expected a 32-byte SHA-256 PCR value", p2);
		if (r->pcr_mask & (1u << idx))
			return cvm_err_badparam(err, "%s: PCR %d given twice", p2, (int)idx);
		r->pcr_mask |= 1u << idx;
		memcpy(r->pcrs[idx], d, 32);
	}
	if ((rc = cvm_json_arr(tpm, "PcrSet", AG ".TpmInfo.PcrSet", false, &set, err)) < 0)
		return rc;
	json_array_foreach(set, i, e) {
		json_int_t n = json_integer_value(e);
		if (!json_is_integer(e) || n < 0 || n > 23)
			return cvm_err_badparam(err, AG ".TpmInfo.PcrSet[%zu]: expected 0..23", i);
		if (!(r->pcr_mask & (1u << n)))
			return cvm_err_badparam(err, AG ".TpmInfo.PcrSet[%zu]: PCR %d has no value in "
						"TpmInfo.Pcrs", i, (int)n);
	}
	return 0;
}

static int parse_tpm(json_t *info, struct cvm_azureguest_req *r, struct cvm_err *err)
{
	json_t *tpm = NULL;
	int rc;
	if ((rc = cvm_json_obj(info, "TpmInfo", AG ".TpmInfo", true, &tpm, err)) < 0 ||
	    (rc = b64_field(tpm, "PcrQuote", AG ".TpmInfo.PcrQuote", true, &r->quote,
			    &r->quote_len, err)) < 0 ||
	    (rc = b64_field(tpm, "PcrSignature", AG ".TpmInfo.PcrSignature", true, &r->quote_sig,
			    &r->quote_sig_len, err)) < 0 ||
	    (rc = parse_pcrs(tpm, r, err)) < 0 ||
	    (rc = b64_field(tpm, "EncKeyPub", AG ".TpmInfo.EncKeyPub", false, &r->enc_key_pub,
			    &r->enc_key_pub_len, err)) < 0)
		return rc;
	/* An encryption key is only usable when the AK vouches for it. */
	bool need = r->enc_key_pub != NULL;
	if ((rc = b64_field(tpm, "EncKeyCertifyInfo", AG ".TpmInfo.EncKeyCertifyInfo", need,
			    &r->enc_certify, &r->enc_certify_len, err)) < 0)
		return rc;
	return b64_field(tpm, "EncKeyCertifyInfoSignature",
			 AG ".TpmInfo.EncKeyCertifyInfoSignature", need, &r->enc_certify_sig,
			 &r->enc_certify_sig_len, err);
}

/* {"k": base64, ...} (recorded shape) or base64(JSON object): members decoded to text. */
static int parse_client_payload(json_t *info, struct cvm_azureguest_req *r, struct cvm_err *err)
{
	json_t *cp = json_object_get(info, "ClientPayload");
	if (!cp || json_is_null(cp))
		return 0;
	_cleanup_json_ json_t *inner = NULL;
	int rc;
	if (json_is_string(cp)) {
		_cleanup_free_ uint8_t *b = NULL;
		size_t bl = 0;
		if ((rc = b64_field(info, "ClientPayload", AG ".ClientPayload", false, &b, &bl,
				    err)) < 0)
			return rc;
		if ((rc = cvm_json_parse(b, bl, false, &inner, err)) < 0)
			return cvm_err_prefix(err, AG ".ClientPayload");
		r->client_payload = CVM_TAKE(inner);
		return 0;
	}
	if (!json_is_object(cp))
		return cvm_err_badparam(err, AG ".ClientPayload: expected an object of base64 "
					"strings, got %s", cvm_json_type_name(cp));
	_cleanup_json_ json_t *out = json_object();
	if (!out)
		return cvm_err_nomem(err);
	const char *k;
	json_t *v;
	json_object_foreach(cp, k, v) {
		char path[128];
		snprintf(path, sizeof(path), AG ".ClientPayload.%.64s", k);
		_cleanup_free_ char *t = NULL;
		if ((rc = text_field(cp, k, path, true, AG_PAYLOAD_MAX, &t, err)) < 0)
			return rc;
		json_t *s = cvm_json_string_lossy(t);
		if (!s || json_object_set_new(out, k, s))
			return cvm_err_nomem(err);
	}
	r->client_payload = CVM_TAKE(out);
	return 0;
}

int cvm_azureguest_parse(const uint8_t *buf, size_t len, struct cvm_azureguest_req *r,
			 struct cvm_err *err)
{
	memset(r, 0, sizeof(*r));
	_cleanup_json_ json_t *body = NULL;
	int rc = cvm_json_parse(buf, len, false, &body, err);
	if (rc < 0)
		return rc;
	_cleanup_free_ uint8_t *info = NULL;
	size_t il = 0;
	if ((rc = b64_field(body, "AttestationInfo", AG, true, &info, &il, err)) < 0)
		return rc;
	if ((rc = cvm_json_parse(info, il, false, &r->info, err)) < 0)
		return cvm_err_prefix(err, AG);
	if ((rc = parse_os(r->info, r, err)) < 0 || (rc = parse_isolation(r->info, r, err)) < 0 ||
	    (rc = parse_tpm(r->info, r, err)) < 0 ||
	    (rc = b64_field(r->info, "TcgLogs", AG ".TcgLogs", false, &r->tcg_log,
			    &r->tcg_log_len, err)) < 0 ||
	    (rc = parse_client_payload(r->info, r, err)) < 0) {
		cvm_azureguest_req_clear(r);
		return rc;
	}
	return 0;
}

/* ---- TPM structures for the encryption key --------------------------------------------------- */

struct rd {
	const uint8_t *p;
	size_t left;
};

static bool rd_u16(struct rd *r, uint16_t *v)
{
	if (r->left < 2)
		return false;
	*v = (uint16_t)(r->p[0] << 8 | r->p[1]);
	r->p += 2;
	r->left -= 2;
	return true;
}

static bool rd_skip(struct rd *r, size_t n)
{
	if (r->left < n)
		return false;
	r->p += n;
	r->left -= n;
	return true;
}

/* TPM2B: u16 size then bytes; *data points into the buffer. */
static bool rd_2b(struct rd *r, const uint8_t **data, uint16_t *n)
{
	if (!rd_u16(r, n))
		return false;
	*data = r->p;
	return rd_skip(r, *n);
}

/* Raw RSA signature, or a marshalled TPMT_SIGNATURE {sigAlg, hash, TPM2B sig} around it. */
static void strip_tpmt_signature(const uint8_t **sig, size_t *len)
{
	struct rd r = { *sig, *len };
	uint16_t alg, hash, n;
	const uint8_t *d;
	if (rd_u16(&r, &alg) && (alg == TPM_ALG_RSASSA || alg == TPM_ALG_RSAPSS) &&
	    rd_u16(&r, &hash) && hash == TPM_ALG_SHA256 && rd_2b(&r, &d, &n) && r.left == 0) {
		*sig = d;
		*len = n;
	}
}

/* TPMT_PUBLIC of an RSA key (optionally inside a TPM2B_PUBLIC): the key and where the
 * TPMT_PUBLIC bytes are (its name is nameAlg || H(TPMT_PUBLIC)). */
static int enc_key_parse(const uint8_t *buf, size_t len, EVP_PKEY **out, const uint8_t **pub,
			 size_t *pub_len, struct cvm_err *err)
{
	static const char what[] = AG ".TpmInfo.EncKeyPub";
	if (len >= 2 && (size_t)(buf[0] << 8 | buf[1]) == len - 2) {
		buf += 2;
		len -= 2;
	}
	*pub = buf;
	*pub_len = len;
	struct rd r = { buf, len };
	uint16_t type, name_alg, sym, scheme, bits, n_len, pol_len;
	const uint8_t *n, *pol;
	if (!rd_u16(&r, &type) || type != TPM_ALG_RSA)
		return cvm_err_badparam(err, "%s: expected a TPMT_PUBLIC of type TPM_ALG_RSA", what);
	if (!rd_u16(&r, &name_alg) || name_alg != TPM_ALG_SHA256)
		return cvm_err_badparam(err, "%s.nameAlg: expected TPM_ALG_SHA256", what);
	if (!rd_skip(&r, 4) || !rd_2b(&r, &pol, &pol_len) || !rd_u16(&r, &sym) ||
	    (sym != TPM_ALG_NULL && !rd_skip(&r, 4)) || !rd_u16(&r, &scheme) ||
	    (scheme != TPM_ALG_NULL && !rd_skip(&r, 2)) || !rd_u16(&r, &bits) ||
	    r.left < 4)
		return cvm_err_badparam(err, "%s: truncated RSA parameters", what);
	uint32_t e = (uint32_t)r.p[0] << 24 | (uint32_t)r.p[1] << 16 | (uint32_t)r.p[2] << 8 |
		     r.p[3];
	rd_skip(&r, 4);
	if (!rd_2b(&r, &n, &n_len) || r.left != 0 || n_len < 256 || n_len * 8u != bits)
		return cvm_err_badparam(err, "%s.unique: expected a modulus of keyBits >= 2048", what);
	if (e == 0)
		e = 65537; /* TPM convention: 0 means the default exponent */
	uint8_t eb[4] = { (uint8_t)(e >> 24), (uint8_t)(e >> 16), (uint8_t)(e >> 8), (uint8_t)e };
	size_t skip = 0;
	while (skip < 3 && eb[skip] == 0)
		skip++;
	_cleanup_json_ json_t *jwk = json_pack("{s:s}", "kty", "RSA");
	if (!jwk || cvm_json_set_b64url(jwk, "n", n, n_len) ||
	    cvm_json_set_b64url(jwk, "e", eb + skip, 4 - skip))
		return cvm_err_nomem(err);
	struct cvm_key *k = NULL;
	int rc = cvm_key_from_jwk(jwk, false, &k, err);
	if (rc < 0)
		return cvm_err_prefix(err, "%s", what);
	EVP_PKEY *pk = cvm_key_pkey(k);
	if (!pk || !EVP_PKEY_up_ref(pk)) {
		cvm_key_free(k);
		return cvm_err_internal(err, "%s: key conversion failed", what);
	}
	cvm_key_free(k);
	*out = pk;
	return 0;
}

static int ak_verify(EVP_PKEY *ak, const uint8_t *msg, size_t len, const uint8_t *sig,
		     size_t sig_len, const char *what, struct cvm_err *err)
{
	strip_tpmt_signature(&sig, &sig_len);
	EVP_MD_CTX *ctx = EVP_MD_CTX_new();
	if (!ctx)
		return cvm_err_nomem(err);
	int ok = EVP_DigestVerifyInit(ctx, NULL, EVP_sha256(), NULL, ak) == 1 &&
		 EVP_DigestVerify(ctx, sig, sig_len, msg, len) == 1;
	EVP_MD_CTX_free(ctx);
	if (!ok) {
		cvm_err_openssl(err, EBADMSG, what);
		return cvm_err_set(err, EBADMSG, "Unauthorized",
				   "%s: not signed by HCLAkPub (RSASSA-PKCS1-v1_5 SHA-256)", what);
	}
	return 0;
}

/* EncKeyCertifyInfo: TPMS_ATTEST (TPM_ST_ATTEST_CERTIFY) by the AK naming EncKeyPub. */
static int enc_key_certified(const struct cvm_azureguest_req *r, EVP_PKEY *ak, EVP_PKEY **out,
			     struct cvm_err *err)
{
	static const char what[] = AG ".TpmInfo.EncKeyCertifyInfo";
	int rc = ak_verify(ak, r->enc_certify, r->enc_certify_len, r->enc_certify_sig,
			   r->enc_certify_sig_len, AG ".TpmInfo.EncKeyCertifyInfoSignature", err);
	if (rc < 0)
		return rc;
	struct rd rd = { r->enc_certify, r->enc_certify_len };
	uint16_t hi, lo, type, n;
	const uint8_t *d, *name, *qname;
	uint16_t name_len, qname_len;
	if (!rd_u16(&rd, &hi) || !rd_u16(&rd, &lo) ||
	    ((uint32_t)hi << 16 | lo) != TPM_GENERATED || !rd_u16(&rd, &type) ||
	    type != TPM_ST_ATTEST_CERTIFY)
		return cvm_err_badparam(err, "%s: expected a TPMS_ATTEST of type "
					"TPM_ST_ATTEST_CERTIFY", what);
	/* qualifiedSigner, extraData, clockInfo (17), firmwareVersion (8), then TPMS_CERTIFY_INFO
	 * {name, qualifiedName}. The qualified name depends on the parent chain, which the request
	 * does not carry: only its framing is checked. */
	if (!rd_2b(&rd, &d, &n) || !rd_2b(&rd, &d, &n) || !rd_skip(&rd, 17 + 8) ||
	    !rd_2b(&rd, &name, &name_len) || !rd_2b(&rd, &qname, &qname_len) || rd.left != 0)
		return cvm_err_badparam(err, "%s: truncated or trailing bytes", what);
	EVP_PKEY *pk = NULL;
	const uint8_t *pub;
	size_t pub_len;
	if ((rc = enc_key_parse(r->enc_key_pub, r->enc_key_pub_len, &pk, &pub, &pub_len, err)) < 0)
		return rc;
	uint8_t want[2 + 64] = { TPM_ALG_SHA256 >> 8, TPM_ALG_SHA256 & 0xff };
	size_t dl = 0;
	if ((rc = cvm_digest("SHA256", pub, pub_len, want + 2, &dl, err)) < 0) {
		EVP_PKEY_free(pk);
		return rc;
	}
	if (name_len != 2 + dl || memcmp(name, want, name_len) != 0) {
		EVP_PKEY_free(pk);
		return cvm_err_set(err, EBADMSG, "Unauthorized",
				   "%s.name: does not name TpmInfo.EncKeyPub", what);
	}
	*out = pk;
	return 0;
}

/* ---- sealed response ---------------------------------------------------------------------- */

static int rsaes_pkcs1_encrypt(EVP_PKEY *pub, const uint8_t *in, size_t len, uint8_t **out,
			       size_t *out_len, struct cvm_err *err)
{
	EVP_PKEY_CTX *ctx = EVP_PKEY_CTX_new(pub, NULL);
	size_t ol = 0;
	uint8_t *o = NULL;
	if (!ctx || EVP_PKEY_encrypt_init(ctx) != 1 ||
	    EVP_PKEY_CTX_set_rsa_padding(ctx, RSA_PKCS1_PADDING) != 1 ||
	    EVP_PKEY_encrypt(ctx, NULL, &ol, in, len) != 1 || !(o = malloc(ol)) ||
	    EVP_PKEY_encrypt(ctx, o, &ol, in, len) != 1) {
		EVP_PKEY_CTX_free(ctx);
		free(o);
		return cvm_err_openssl(err, EIO, "sealed response: RSAES-PKCS1-v1_5");
	}
	EVP_PKEY_CTX_free(ctx);
	*out = o;
	*out_len = ol;
	return 0;
}

int cvm_azureguest_seal(const char *jwt, EVP_PKEY *enc_key, char **out, struct cvm_err *err)
{
	static const char aad[] = "Transport Key";
	if (!jwt || !enc_key)
		return cvm_err_badparam(err, "seal: jwt and key are required");
	size_t len = strlen(jwt);
	_cleanup_secret_ struct cvm_secret *key = cvm_secret_random(32);
	uint8_t iv[12], tag[16];
	_cleanup_free_ uint8_t *ct = malloc(len ? len : 1);
	int rc;
	if (!key || !ct)
		return cvm_err_nomem(err);
	if ((rc = cvm_random(iv, sizeof(iv), err)) < 0 ||
	    (rc = cvm_aes_gcm_seal(key->data, key->len, iv, aad, strlen(aad),
				   (const uint8_t *)jwt, len, ct, tag, err)) < 0)
		return rc;
	_cleanup_free_ uint8_t *ek = NULL;
	size_t ek_len = 0;
	if ((rc = rsaes_pkcs1_encrypt(enc_key, key->data, key->len, &ek, &ek_len, err)) < 0)
		return rc;
	_cleanup_free_ char *iv64 = cvm_b64_encode(iv, sizeof(iv));
	_cleanup_free_ char *tag64 = cvm_b64_encode(tag, sizeof(tag));
	_cleanup_free_ char *ct64 = cvm_b64_encode(ct, len);
	_cleanup_free_ char *ek64 = cvm_b64_encode(ek, ek_len);
	_cleanup_json_ json_t *o =
		iv64 && tag64 && ct64 && ek64
			? json_pack("{s:{s:s, s:s, s:i, s:s}, s:s, s:s, s:s}", "EncryptionParams",
				    "BlockMode", "ChainingModeGCM", "Cipher", "AES",
				    "KeySizeInBits", 256, "Iv", iv64, "AuthenticationData", tag64,
				    "Jwt", ct64, "EncryptedInnerKey", ek64)
			: NULL;
	_cleanup_free_ char *text = o ? cvm_json_dump(o) : NULL;
	char *sealed = text ? cvm_b64url_encode(text, strlen(text)) : NULL;
	if (!sealed)
		return cvm_err_nomem(err);
	*out = sealed;
	return 0;
}

/* ---- verification and token ----------------------------------------------------------------- */

struct ag_verdict {
	struct cvm_snp_verdict snp;
	struct cvm_tdx_verdict tdx;
	struct cvm_tpm_quote tpm;
	const uint8_t *report_data;
	bool emulated;
};

static int verify_tee(const struct cvm_azureguest_req *r, const struct cvm_attest_verifiers *vf,
		      struct ag_verdict *v, struct cvm_err *err)
{
	int rc;
	if (r->tdx) {
		rc = cvm_tdx_verify(r->hw, r->hw_len, vf->tdx_opts, vf->tdx_policy, &v->tdx, err);
		v->report_data = v->tdx.quote.body.report_data;
		v->emulated = v->tdx.emulated;
	} else {
		struct cvm_snp_certs certs = { 0 };
		rc = cvm_snp_certs_add(&certs, r->vcek_chain, r->vcek_chain_len, err);
		if (rc < 0) {
			cvm_snp_certs_clear(&certs);
			return cvm_err_prefix(err, AG ".IsolationInfo.Evidence.Proof.VcekCertChain");
		}
		rc = cvm_snp_verify(r->hw, r->hw_len, &certs, vf->roots, vf->snp_opts,
				    vf->snp_policy, &v->snp, err);
		cvm_snp_certs_clear(&certs);
		v->report_data = v->snp.report.report_data;
		v->emulated = v->snp.emulated;
	}
	if (rc < 0)
		return cvm_err_prefix(err, AG ".IsolationInfo.Evidence.Proof");
	/* What the TEE bound: SHA-256(RunTimeData exactly as sent) || 32 zero bytes. */
	uint8_t want[64] = { 0 };
	size_t dl = 0;
	if ((rc = cvm_digest("SHA256", r->runtime, r->runtime_len, want, &dl, err)) < 0)
		return rc;
	memset(want + 32, 0, 32);
	if (!cvm_memeq_ct(want, v->report_data, 64))
		return cvm_err_set(err, EBADMSG, "Unauthorized",
				   AG ".IsolationInfo.Evidence.RunTimeData: SHA-256 of the data is "
				   "not the report's report_data (SHA-256 || 32 zero bytes)");
	return 0;
}

/* TPM quote by HCLAkPub over TpmInfo.Pcrs; every PCR the quote selects must be given. */
static int verify_tpm(const struct cvm_azureguest_req *r, EVP_PKEY *ak, struct ag_verdict *v,
		      uint32_t *attested, struct cvm_err *err)
{
	struct cvm_tpm_quote q;
	int rc = cvm_tpm_quote_parse(r->quote, r->quote_len, &q, err);
	if (rc < 0)
		return cvm_err_prefix(err, AG ".TpmInfo.PcrQuote");
	uint32_t sel = 0;
	for (size_t b = 0; b < q.n_banks; b++) {
		if (q.bank_alg[b] != TPM_ALG_SHA256)
			return cvm_err_set(err, ENOTSUP, "BadParameter",
					   AG ".TpmInfo.PcrQuote: only the SHA-256 PCR bank is "
					   "supported");
		sel |= (uint32_t)q.bank_select[b][0] | (uint32_t)q.bank_select[b][1] << 8 |
		       (uint32_t)q.bank_select[b][2] << 16;
	}
	for (int i = 0; i < 24; i++)
		if ((sel & (1u << i)) && !(r->pcr_mask & (1u << i)))
			return cvm_err_badparam(err, AG ".TpmInfo.Pcrs: PCR %d is quoted but has no "
						"value", i);
	const uint8_t *sig = r->quote_sig;
	size_t sig_len = r->quote_sig_len;
	strip_tpmt_signature(&sig, &sig_len);
	rc = cvm_tpm_quote_verify(r->quote, r->quote_len, sig, sig_len, ak,
				  (const uint8_t(*)[32])r->pcrs, 24, NULL, 0, &v->tpm, err);
	if (rc < 0)
		return cvm_err_prefix(err, AG ".TpmInfo.PcrQuote");
	*attested = sel;
	return 0;
}

static int verify_tcg_log(const struct cvm_azureguest_req *r, uint32_t attested,
			  struct cvm_err *err)
{
	if (!r->tcg_log)
		return 0;
	struct cvm_tcg_log *log = calloc(1, sizeof(*log));
	if (!log)
		return cvm_err_nomem(err);
	int rc = cvm_tcg_log_replay(r->tcg_log, r->tcg_log_len, log, err);
	if (rc == 0 && (log->extended_mask & ~attested))
		rc = cvm_err_set(err, EBADMSG, "Unauthorized",
				 "log extends PCRs the quote does not cover (mask 0x%06x)",
				 log->extended_mask & ~attested);
	if (rc == 0)
		rc = cvm_tcg_log_check(log, (const uint8_t(*)[32])r->pcrs, 24, err);
	free(log);
	return rc < 0 ? cvm_err_prefix(err, AG ".TcgLogs") : 0;
}

static int set_str(json_t *o, const char *k, const char *v)
{
	json_t *s = cvm_json_string_lossy(v);
	return !s || json_object_set_new(o, k, s);
}

/* x-ms-azurevm-* from the OS fields and the TEE-bound runtime data's vm-configuration. */
static int azurevm_claims(const struct cvm_azureguest_req *r, json_t *runtime, json_t *tee,
			  uint32_t attested, json_t *c)
{
	int bad = set_str(c, "x-ms-azurevm-attestation-protocol-ver", r->protocol_version);
	bad |= set_str(c, "x-ms-azurevm-ostype", r->os_type);
	bad |= json_object_set_new(c, "x-ms-azurevm-is-windows",
				   json_boolean(strcmp(r->os_type, "Windows") == 0));
	if (r->os_distro)
		bad |= set_str(c, "x-ms-azurevm-osdistro", r->os_distro);
	bad |= set_str(c, "x-ms-azurevm-osbuild", r->os_build ? r->os_build : "NotApplicable");
	if (r->os_major >= 0)
		bad |= json_object_set_new(c, "x-ms-azurevm-osversion-major",
					   json_integer(r->os_major));
	if (r->os_minor >= 0)
		bad |= json_object_set_new(c, "x-ms-azurevm-osversion-minor",
					   json_integer(r->os_minor));
	json_t *pcrs = json_array();
	for (int i = 0; pcrs && i < 24; i++)
		if (attested & (1u << i))
			bad |= json_array_append_new(pcrs, json_integer(i));
	bad |= json_object_set_new(c, "x-ms-azurevm-attested-pcrs", pcrs);
	json_t *dbg = json_object_get(tee, r->tdx ? "x-ms-tdx-is-debuggable"
						  : "x-ms-sevsnpvm-is-debuggable");
	if (json_is_boolean(dbg))
		bad |= json_object_set(c, "x-ms-azurevm-is-debuggable", dbg);
	json_t *cfg = json_object_get(runtime, "vm-configuration");
	json_t *sb = json_object_get(cfg, "secure-boot");
	if (json_is_boolean(sb))
		bad |= json_object_set(c, "secureboot", sb);
	const char *vmid = json_string_value(json_object_get(cfg, "vmUniqueId"));
	if (vmid && strlen(vmid) < 64) {
		char up[64];
		size_t i = 0;
		for (; vmid[i]; i++)
			up[i] = (vmid[i] >= 'a' && vmid[i] <= 'z') ? (char)(vmid[i] - 32) : vmid[i];
		up[i] = '\0';
		bad |= set_str(c, "x-ms-azurevm-vmid", up);
	}
	return bad ? -ENOMEM : 0;
}

/* Top-level x-ms-runtime: the client payload and the TPM ephemeral key a release wraps to. */
static int outer_runtime(const struct cvm_azureguest_req *r, EVP_PKEY *enc, json_t *c,
			 struct cvm_err *err)
{
	_cleanup_json_ json_t *rt = json_object();
	if (!rt)
		return cvm_err_nomem(err);
	if (r->client_payload && json_object_set(rt, "client-payload", r->client_payload))
		return cvm_err_nomem(err);
	if (enc) {
		struct cvm_key *k = NULL;
		json_t *jwk = NULL;
		if (!EVP_PKEY_up_ref(enc))
			return cvm_err_nomem(err);
		int rc = cvm_key_from_pkey(enc, &k, err);
		if (rc < 0)
			EVP_PKEY_free(enc);
		if (rc == 0)
			rc = cvm_key_to_jwk(k, false, &jwk, err);
		cvm_key_free(k);
		if (rc < 0)
			return rc;
		json_object_del(jwk, "kid");
		if (json_object_set_new(jwk, "kid", json_string("TpmEphemeralEncryptionKey")) ||
		    json_object_set_new(jwk, "key_ops", json_pack("[s]", "encrypt")) ||
		    json_object_set_new(rt, "keys", json_pack("[o]", jwk)))
			return cvm_err_nomem(err);
	}
	if (json_object_size(rt) && json_object_set(c, "x-ms-runtime", rt))
		return cvm_err_nomem(err);
	return 0;
}

static int build_claims(struct cvm_attest_service *s, const struct cvm_azureguest_req *r,
			const struct ag_verdict *v, uint32_t attested, EVP_PKEY *enc, json_t *c,
			struct cvm_err *err)
{
	_cleanup_json_ json_t *runtime = NULL;
	int rc = cvm_json_parse(r->runtime, r->runtime_len, false, &runtime, err);
	if (rc < 0)
		return cvm_err_prefix(err, AG ".IsolationInfo.Evidence.RunTimeData");
	_cleanup_json_ json_t *tee = json_object();
	if (!tee)
		return cvm_err_nomem(err);
	const char *compliance = v->emulated ? "opencvm-emulated" : "azure-compliant-cvm";
	int bad = json_object_set_new(tee, "x-ms-attestation-type",
				      json_string(r->tdx ? "tdxvm" : "sevsnpvm"));
	bad |= json_object_set_new(tee, "x-ms-compliance-status", json_string(compliance));
	bad |= json_object_set(tee, "x-ms-runtime", runtime);
	if (bad)
		return cvm_err_nomem(err);
	rc = r->tdx ? cvm_tdx_verdict_claims(&v->tdx, tee, err)
		    : cvm_snp_verdict_claims(&v->snp, tee, err);
	if (rc < 0)
		return rc;
	uint8_t jti[32];
	if ((rc = cvm_random(jti, sizeof(jti), err)) < 0)
		return rc;
	bad = cvm_attest_json_hex(c, "jti", jti, sizeof(jti));
	bad |= json_object_set_new(c, "x-ms-ver", json_string("1.0"));
	bad |= json_object_set_new(c, "x-ms-attestation-type", json_string("azurevm"));
	bad |= json_object_set_new(c, "x-opencvm-emulated", json_boolean(v->emulated));
	const char *nonce = json_string_value(json_object_get(r->client_payload, "nonce"));
	if (nonce)
		bad |= set_str(c, "nonce", nonce);
	if (bad || azurevm_claims(r, runtime, tee, attested, c) < 0)
		return cvm_err_nomem(err);
	if ((rc = outer_runtime(r, enc, c, err)) < 0)
		return rc;
	/* The policy sees the azurevm claims and the TEE's claims side by side. */
	_cleanup_json_ json_t *flat = json_deep_copy(c);
	_cleanup_json_ json_t *issued = json_object();
	char hash[48];
	if (!flat || !issued || json_object_update_missing(flat, tee))
		return cvm_err_nomem(err);
	if ((rc = cvm_attest_policy_apply(s, "AzureGuest", flat, issued, hash, err)) < 0) {
		cvm_log_info("attest_refused", "type=azurevm reason=policy");
		return rc;
	}
	if (json_object_update(c, issued) || json_object_set(c, "x-ms-isolation-tee", tee) ||
	    (hash[0] && json_object_set_new(c, "x-ms-policy-hash", json_string(hash))))
		return cvm_err_nomem(err);
	return 0;
}

static int attest_parsed(struct cvm_attest_service *s, const struct cvm_azureguest_req *r,
			 char **token, struct cvm_err *err)
{
	struct cvm_attest_verifiers vf;
	cvm_attest_service_verifiers(s, &vf);
	struct ag_verdict *v = calloc(1, sizeof(*v));
	if (!v)
		return cvm_err_nomem(err);
	EVP_PKEY *ak = NULL, *enc = NULL;
	uint32_t attested = 0;
	/* HCLAkPub is trusted only because RunTimeData is bound into the TEE report. */
	const struct cvm_hcl_report h = { .runtime = r->runtime, .runtime_len = r->runtime_len };
	int rc = verify_tee(r, &vf, v, err);
	if (rc == 0 && (rc = cvm_hcl_runtime_key(&h, "HCLAkPub", &ak, err)) < 0)
		rc = cvm_err_prefix(err, AG ".IsolationInfo.Evidence.RunTimeData");
	if (rc == 0)
		rc = verify_tpm(r, ak, v, &attested, err);
	if (rc == 0)
		rc = verify_tcg_log(r, attested, err);
	if (rc == 0 && r->enc_key_pub)
		rc = enc_key_certified(r, ak, &enc, err);
	_cleanup_json_ json_t *c = rc == 0 ? json_object() : NULL;
	if (rc == 0 && !c)
		rc = cvm_err_nomem(err);
	if (rc == 0)
		rc = build_claims(s, r, v, attested, enc, c, err);
	_cleanup_free_ char *jwt = NULL;
	if (rc == 0)
		rc = cvm_attest_service_sign_claims(s, c, &jwt, err);
	if (rc == 0 && enc)
		rc = cvm_azureguest_seal(jwt, enc, token, err);
	else if (rc == 0)
		*token = CVM_TAKE(jwt);
	if (rc == 0)
		cvm_log_info("attest_token_issued", "type=azurevm tee=%s sealed=%s emulated=%s",
			     r->tdx ? "tdxvm" : "sevsnpvm", enc ? "true" : "false",
			     v->emulated ? "true" : "false");
	else
		cvm_log_info("attest_refused", "type=azurevm reason=\"%s\"", err->msg);
	EVP_PKEY_free(ak);
	EVP_PKEY_free(enc);
	free(v);
	return rc;
}

int cvm_attest_service_attest_azureguest(struct cvm_attest_service *s, const char *body,
					 size_t len, char **token, struct cvm_err *err)
{
	struct cvm_azureguest_req r;
	int rc = cvm_azureguest_parse((const uint8_t *)body, len, &r, err);
	if (rc < 0)
		return rc;
	rc = attest_parsed(s, &r, token, err);
	cvm_azureguest_req_clear(&r);
	return rc;
}
