/* SPDX-License-Identifier: Apache-2.0 */
/* Recognize a piece of evidence by its own structure and decode it to JSON (cvm attest show). */
#include <string.h>

#include <opencvm/json.h>

#include "attest-internal.h"

enum cvm_evidence_kind cvm_evidence_detect(const uint8_t *buf, size_t len)
{
	struct cvm_err err = { 0 };
	if (!buf || len < 4)
		return CVM_EVIDENCE_UNKNOWN;
	struct cvm_hcl_report h;
	if (cvm_hcl_report_parse(buf, len, &h, &err) == 0)
		return CVM_EVIDENCE_HCL_REPORT;
	struct cvm_tdx_quote *q = malloc(sizeof(*q));
	bool tdx = q && cvm_tdx_quote_parse(buf, len, q, &err) == 0;
	free(q);
	if (tdx)
		return CVM_EVIDENCE_TDX_QUOTE;
	struct cvm_tpm_quote tq;
	if (cvm_tpm_quote_parse(buf, len, &tq, &err) == 0)
		return CVM_EVIDENCE_TPM_QUOTE;
	struct cvm_snp_report r;
	if (cvm_snp_report_parse(buf, len, &r, &err) == 0)
		return CVM_EVIDENCE_SNP_REPORT;
	struct cvm_tcg_log *log = malloc(sizeof(*log));
	bool tcg = log && cvm_tcg_log_replay(buf, len, log, &err) == 0;
	free(log);
	return tcg ? CVM_EVIDENCE_TCG_LOG : CVM_EVIDENCE_UNKNOWN;
}

static int tpm_json(const uint8_t *buf, size_t len, json_t **out, struct cvm_err *err)
{
	struct cvm_tpm_quote q;
	int rc = cvm_tpm_quote_parse(buf, len, &q, err);
	if (rc < 0)
		return rc;
	json_t *o = json_pack("{s:I, s:I, s:I, s:b, s:I, s:i}", "clock", (json_int_t)q.clock,
			      "reset_count", (json_int_t)q.reset_count, "restart_count",
			      (json_int_t)q.restart_count, "safe", q.safe, "firmware_version",
			      (json_int_t)q.firmware_version, "pcr_bank_alg", q.bank_alg[0]);
	if (!o || cvm_attest_json_hex(o, "extra_data", q.extra_data, q.extra_data_len) ||
	    cvm_attest_json_hex(o, "pcr_select", q.bank_select[0], 3) ||
	    cvm_attest_json_hex(o, "pcr_digest", q.pcr_digest, q.pcr_digest_len) ||
	    cvm_attest_json_hex(o, "qualified_signer", q.signer_name, q.signer_name_len)) {
		json_decref(o);
		return cvm_err_nomem(err);
	}
	*out = o;
	return 0;
}

static int hcl_json(const uint8_t *buf, size_t len, json_t **out, struct cvm_err *err)
{
	struct cvm_hcl_report h;
	int rc = cvm_hcl_report_parse(buf, len, &h, err);
	if (rc < 0)
		return rc;
	json_t *hw = NULL;
	if (h.report_type == 2) {
		struct cvm_snp_report r;
		if ((rc = cvm_snp_report_parse(h.hw_report, h.hw_len, &r, err)) < 0 ||
		    (rc = cvm_snp_report_to_json(&r, CVM_SNP_PRODUCT_UNKNOWN, &hw, err)) < 0)
			return cvm_err_prefix(err, "hcl.hw_report");
	} else {
		hw = json_object();
		if (!hw || cvm_attest_json_hex(hw, "report_data", h.hw_report + 0x80, 64) ||
		    cvm_attest_json_hex(hw, "mrtd", h.hw_report + 0x210, 48)) {
			json_decref(hw);
			return cvm_err_nomem(err);
		}
	}
	json_t *runtime = NULL;
	if (cvm_json_parse(h.runtime, h.runtime_len, false, &runtime, err) < 0) {
		cvm_err_clear(err);
		runtime = cvm_json_string_lossy("(runtime data is not JSON)");
	}
	struct cvm_err e2 = { 0 };
	bool bound = cvm_hcl_check_binding(&h, &e2) == 0;
	json_t *o = json_pack("{s:i, s:i, s:i, s:i, s:o, s:o, s:b}", "version", (int)h.version,
			      "request_type", (int)h.request_type, "report_type", (int)h.report_type,
			      "hash_type", (int)h.hash_type, "hw_report", hw, "runtime_data", runtime,
			      "runtime_data_bound", bound);
	if (!o)
		return cvm_err_nomem(err);
	*out = o;
	return 0;
}

int cvm_evidence_to_json(const uint8_t *buf, size_t len, json_t **out, struct cvm_err *err)
{
	enum cvm_evidence_kind k = cvm_evidence_detect(buf, len);
	json_t *body = NULL;
	const char *name;
	int rc;
	switch (k) {
	case CVM_EVIDENCE_SNP_REPORT: {
		struct cvm_snp_report r;
		name = "snp-report";
		rc = cvm_snp_report_parse(buf, len, &r, err);
		if (rc == 0)
			rc = cvm_snp_report_to_json(&r, CVM_SNP_PRODUCT_UNKNOWN, &body, err);
		break;
	}
	case CVM_EVIDENCE_TDX_QUOTE: {
		struct cvm_tdx_quote *q = malloc(sizeof(*q));
		name = "tdx-quote";
		rc = q ? cvm_tdx_quote_parse(buf, len, q, err) : cvm_err_nomem(err);
		if (rc == 0)
			rc = cvm_tdx_quote_to_json(q, &body, err);
		free(q);
		break;
	}
	case CVM_EVIDENCE_HCL_REPORT:
		name = "hcl-report";
		rc = hcl_json(buf, len, &body, err);
		break;
	case CVM_EVIDENCE_TPM_QUOTE:
		name = "tpm-quote";
		rc = tpm_json(buf, len, &body, err);
		break;
	case CVM_EVIDENCE_TCG_LOG:
		name = "tcg-log";
		rc = cvm_tcg_log_to_json(buf, len, &body, err);
		break;
	default:
		return cvm_err_badparam(err, "evidence: not an SNP report, TDX quote, HCL report, "
					"TPM quote or TCG event log");
	}
	if (rc < 0)
		return rc;
	json_t *o = json_pack("{s:s, s:o}", "kind", name, "evidence", body);
	if (!o)
		return cvm_err_nomem(err);
	*out = o;
	return 0;
}
