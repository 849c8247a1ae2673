/* SPDX-License-Identifier: Apache-2.0 */
/* Azure CVM evidence: the HCL report ("HCLA" header, hardware report, runtime-data JSON whose
 * hash the hardware report carries) and the end-to-end check with the vTPM quote. */
#include <string.h>

#include <opencvm/json.h>

#include "attest-internal.h"

#define HCL_SIGNATURE 0x414c4348u /* "HCLA" little-endian */
#define HCL_HW_OFF 0x20
#define HCL_HW_LEN 1184
#define HCL_REQ_OFF 0x4C0
#define HCL_VAR_OFF 0x4D4
#define HCL_REQ_HDR 20
#define TDREPORT_LEN 1024
#define TDREPORT_REPORT_DATA 0x80
#define TDREPORT_MRTD 0x210
#define RUNTIME_MAX (64 * 1024)

int cvm_hcl_report_parse(const uint8_t *buf, size_t len, struct cvm_hcl_report *h,
			 struct cvm_err *err)
{
	if (!buf || len < HCL_VAR_OFF)
		return cvm_err_badparam(err, "hcl: shorter than the %d-byte fixed part", HCL_VAR_OFF);
	memset(h, 0, sizeof(*h));
	if (cvm_le32(buf) != HCL_SIGNATURE)
		return cvm_err_badparam(err, "hcl.signature: expected \"HCLA\"");
	h->version = cvm_le32(buf + 4);
	h->report_size = cvm_le32(buf + 8);
	h->request_type = cvm_le32(buf + 12);
	h->status = cvm_le32(buf + 16);
	if (h->version < 1 || h->version > 2)
		return cvm_err_badparam(err, "hcl.version: %u is not supported (1, 2)", h->version);
	uint32_t data_size = cvm_le32(buf + HCL_REQ_OFF);
	uint32_t req_version = cvm_le32(buf + HCL_REQ_OFF + 4);
	h->report_type = cvm_le32(buf + HCL_REQ_OFF + 8);
	h->hash_type = cvm_le32(buf + HCL_REQ_OFF + 12);
	uint32_t var = cvm_le32(buf + HCL_REQ_OFF + 16);
	if (req_version != 1)
		return cvm_err_badparam(err, "hcl.request_data.version: %u, expected 1", req_version);
	if (h->report_type != 2 && h->report_type != 4)
		return cvm_err_badparam(err, "hcl.request_data.report_type: %u (2 SNP, 4 TDX)",
					h->report_type);
	if (h->hash_type < 1 || h->hash_type > 3)
		return cvm_err_badparam(err, "hcl.request_data.hash_type: %u (1..3)", h->hash_type);
	if (var > RUNTIME_MAX || var > len - HCL_VAR_OFF)
		return cvm_err_badparam(err, "hcl.request_data.variable_data_size: %u exceeds the report",
					var);
	if (data_size != HCL_REQ_HDR + var)
		return cvm_err_badparam(err, "hcl.request_data.data_size: %u, expected %u", data_size,
					HCL_REQ_HDR + var);
	h->hw_report = buf + HCL_HW_OFF;
	h->hw_len = h->report_type == 2 ? HCL_HW_LEN : TDREPORT_LEN;
	h->runtime = buf + HCL_VAR_OFF;
	h->runtime_len = var;
	return 0;
}

static const uint8_t *hw_report_data(const struct cvm_hcl_report *h)
{
	return h->hw_report + (h->report_type == 2 ? 0x50 : TDREPORT_REPORT_DATA);
}

int cvm_hcl_check_binding(const struct cvm_hcl_report *h, struct cvm_err *err)
{
	static const char *const mds[] = { NULL, "SHA256", "SHA384", "SHA512" };
	uint8_t want[64] = { 0 };
	size_t dl = 0;
	int rc = cvm_digest(mds[h->hash_type], h->runtime, h->runtime_len, want, &dl, err);
	if (rc < 0)
		return rc;
	if (!cvm_memeq_ct(want, hw_report_data(h), 64))
		return cvm_err_set(err, EBADMSG, "Unauthorized",
				   "hcl.runtime_data: its hash is not the hardware report's REPORT_DATA");
	return 0;
}

int cvm_hcl_runtime_key(const struct cvm_hcl_report *h, const char *kid, EVP_PKEY **out,
			struct cvm_err *err)
{
	_cleanup_json_ json_t *j = NULL;
	int rc = cvm_json_parse(h->runtime, h->runtime_len, false, &j, err);
	if (rc < 0)
		return cvm_err_prefix(err, "hcl.runtime_data");
	size_t i;
	json_t *k;
	json_array_foreach(json_object_get(j, "keys"), i, k) {
		const char *id = json_string_value(json_object_get(k, "kid"));
		if (!id || strcmp(id, kid) != 0)
			continue;
		struct cvm_key *key = NULL;
		if ((rc = cvm_key_from_jwk(k, false, &key, err)) < 0)
			return cvm_err_prefix(err, "hcl.runtime_data.keys[%zu]", i);
		EVP_PKEY *pk = cvm_key_pkey(key);
		if (!pk || !EVP_PKEY_up_ref(pk)) {
			cvm_key_free(key);
			return cvm_err_badparam(err, "hcl.runtime_data.keys[%zu]: not an RSA/EC key", i);
		}
		cvm_key_free(key);
		*out = pk;
		return 0;
	}
	return cvm_err_set(err, ENOENT, "NotFound", "hcl.runtime_data.keys: no key \"%s\"", kid);
}

static int verify_tdx_part(const struct cvm_azure_evidence *ev, const struct cvm_hcl_report *h,
			   const struct cvm_tdx_verify_opts *opts, const struct cvm_tdx_policy *pol,
			   struct cvm_azure_verdict *v, struct cvm_err *err)
{
	if (!ev->td_quote)
		return cvm_err_badparam(err, "azure: a TDX HCL report needs the TD quote");
	int rc = cvm_tdx_verify(ev->td_quote, ev->td_quote_len, opts, pol, &v->tdx, err);
	if (rc < 0)
		return rc;
	/* The TDREPORT itself is MAC'd for the local platform only: the quote vouches for it. */
	if (memcmp(v->tdx.quote.body.report_data, h->hw_report + TDREPORT_REPORT_DATA, 64) != 0 ||
	    memcmp(v->tdx.quote.body.mrtd, h->hw_report + TDREPORT_MRTD, 48) != 0)
		return cvm_err_set(err, EBADMSG, "Unauthorized",
				   "azure: the TD quote is not for this HCL report's TDREPORT");
	return 0;
}

int cvm_azure_verify(const struct cvm_azure_evidence *ev, const struct cvm_snp_certs *certs,
		     const struct cvm_attest_roots *roots, const struct cvm_snp_verify_opts *snp_opts,
		     const struct cvm_snp_policy *snp_policy,
		     const struct cvm_tdx_verify_opts *tdx_opts,
		     const struct cvm_tdx_policy *tdx_policy, struct cvm_azure_verdict *out,
		     struct cvm_err *err)
{
	if (!ev)
		return cvm_err_badparam(err, "azure: evidence is required");
	struct cvm_hcl_report h;
	int rc = cvm_hcl_report_parse(ev->hcl, ev->hcl_len, &h, err);
	if (rc < 0)
		return rc;
	struct cvm_azure_verdict *v = calloc(1, sizeof(*v));
	if (!v)
		return cvm_err_nomem(err);
	v->report_type = h.report_type;
	EVP_PKEY *ak = NULL;
	if (h.report_type == 2)
		rc = cvm_snp_verify(h.hw_report, h.hw_len, certs, roots, snp_opts, snp_policy, &v->snp,
				    err);
	else
		rc = verify_tdx_part(ev, &h, tdx_opts, tdx_policy, v, err);
	if (rc == 0)
		rc = cvm_hcl_check_binding(&h, err);
	if (rc == 0)
		rc = cvm_hcl_runtime_key(&h, "HCLAkPub", &ak, err);
	if (rc == 0)
		rc = cvm_tpm_quote_verify(ev->tpm_quote, ev->tpm_quote_len, ev->tpm_sig,
					  ev->tpm_sig_len, ak, ev->pcrs, ev->n_pcrs, ev->nonce,
					  ev->nonce_len, &v->tpm, err);
	EVP_PKEY_free(ak);
	if (rc == 0)
		*out = *v;
	free(v);
	return rc;
}
