/* SPDX-License-Identifier: Apache-2.0 */
/* TPM 2.0 quotes: TPMS_ATTEST parser (TPM 2.0 Library Part 2, 10.12.12) and verification of
 * the signature, the PCR digest and the nonce. */
#include <openssl/err.h>
#include <openssl/rsa.h>
#include <string.h>

#include "attest-internal.h"

#define TPM_GENERATED_VALUE 0xff544347u
#define TPM_ST_ATTEST_QUOTE 0x8018
#define TPM_ALG_SHA1 0x0004
#define TPM_ALG_SHA256 0x000b
#define TPM_ALG_SHA384 0x000c
#define TPM_ALG_SHA512 0x000d

struct rd {
	const uint8_t *p;
	size_t left;
};

static bool rd_u8(struct rd *r, uint8_t *v)
{
	if (r->left < 1)
		return false;
	*v = r->p[0];
	r->p++;
	r->left--;
	return true;
}

static bool rd_be(struct rd *r, size_t n, uint64_t *v)
{
	if (r->left < n)
		return false;
	uint64_t x = 0;
	for (size_t i = 0; i < n; i++)
		x = x << 8 | r->p[i];
	*v = x;
	r->p += n;
	r->left -= n;
	return true;
}

/* TPM2B: u16 size then bytes, at most cap. */
static bool rd_2b(struct rd *r, uint8_t *out, size_t cap, size_t *len)
{
	uint64_t n;
	if (!rd_be(r, 2, &n) || n > cap || r->left < n)
		return false;
	memcpy(out, r->p, n);
	*len = n;
	r->p += n;
	r->left -= n;
	return true;
}

int cvm_tpm_quote_parse(const uint8_t *buf, size_t len, struct cvm_tpm_quote *q,
			struct cvm_err *err)
{
	if (!buf)
		return cvm_err_badparam(err, "tpm.quote: missing");
	memset(q, 0, sizeof(*q));
	struct rd r = { buf, len };
	uint64_t magic, type, v;
	if (!rd_be(&r, 4, &magic) || magic != TPM_GENERATED_VALUE)
		return cvm_err_badparam(err, "tpm.quote.magic: not TPM_GENERATED_VALUE");
	if (!rd_be(&r, 2, &type) || type != TPM_ST_ATTEST_QUOTE)
		return cvm_err_badparam(err, "tpm.quote.type: not TPM_ST_ATTEST_QUOTE");
	if (!rd_2b(&r, q->signer_name, sizeof(q->signer_name), &q->signer_name_len))
		return cvm_err_badparam(err, "tpm.quote.qualifiedSigner: malformed");
	if (!rd_2b(&r, q->extra_data, sizeof(q->extra_data), &q->extra_data_len))
		return cvm_err_badparam(err, "tpm.quote.extraData: malformed or longer than 64");
	if (!rd_be(&r, 8, &q->clock) || !rd_be(&r, 4, &v))
		return cvm_err_badparam(err, "tpm.quote.clockInfo: truncated");
	q->reset_count = (uint32_t)v;
	if (!rd_be(&r, 4, &v) || !rd_u8(&r, &q->safe) || !rd_be(&r, 8, &q->firmware_version))
		return cvm_err_badparam(err, "tpm.quote.clockInfo: truncated");
	q->restart_count = (uint32_t)v;
	if (q->safe > 1)
		return cvm_err_badparam(err, "tpm.quote.clockInfo.safe: not a TPMI_YES_NO");
	uint64_t count;
	if (!rd_be(&r, 4, &count) || count == 0 || count > CVM_TPM_MAX_BANKS)
		return cvm_err_badparam(err, "tpm.quote.pcrSelect: 1..%d banks expected",
					CVM_TPM_MAX_BANKS);
	q->n_banks = count;
	for (size_t i = 0; i < count; i++) {
		uint64_t alg;
		uint8_t sz;
		if (!rd_be(&r, 2, &alg) || !rd_u8(&r, &sz) || sz < 3 || sz > 4 || r.left < sz)
			return cvm_err_badparam(err, "tpm.quote.pcrSelect[%zu]: malformed", i);
		q->bank_alg[i] = (uint16_t)alg;
		memcpy(q->bank_select[i], r.p, sz);
		r.p += sz;
		r.left -= sz;
	}
	if (!rd_2b(&r, q->pcr_digest, sizeof(q->pcr_digest), &q->pcr_digest_len))
		return cvm_err_badparam(err, "tpm.quote.pcrDigest: malformed");
	if (r.left != 0)
		return cvm_err_badparam(err, "tpm.quote: %zu trailing bytes", r.left);
	return 0;
}

static int check_signature(const uint8_t *msg, size_t len, const uint8_t *sig, size_t sig_len,
			   EVP_PKEY *ak, struct cvm_err *err)
{
	if (EVP_PKEY_get_base_id(ak) != EVP_PKEY_RSA)
		return cvm_err_badparam(err, "tpm.ak: only RSA attestation keys are supported");
	/* Azure's vTPM signs with RSASSA-PKCS1-v1_5; other TPMs use RSA-PSS. Try both. */
	static const int pads[] = { RSA_PKCS1_PADDING, RSA_PKCS1_PSS_PADDING };
	for (size_t i = 0; i < CVM_ARRAY_SIZE(pads); i++) {
		EVP_MD_CTX *md = EVP_MD_CTX_new();
		EVP_PKEY_CTX *pctx = NULL;
		bool ok = md && EVP_DigestVerifyInit(md, &pctx, EVP_sha256(), NULL, ak) == 1 &&
			  EVP_PKEY_CTX_set_rsa_padding(pctx, pads[i]) == 1 &&
			  EVP_DigestVerify(md, sig, sig_len, msg, len) == 1;
		EVP_MD_CTX_free(md);
		ERR_clear_error();
		if (ok)
			return 0;
	}
	return cvm_err_set(err, EBADMSG, "Unauthorized",
			   "tpm.quote.signature: does not verify with the attestation key");
}

int cvm_tpm_quote_verify(const uint8_t *msg, size_t len, const uint8_t *sig, size_t sig_len,
			 EVP_PKEY *ak, const uint8_t (*pcrs)[32], size_t n_pcrs,
			 const uint8_t *nonce, size_t nonce_len, struct cvm_tpm_quote *out,
			 struct cvm_err *err)
{
	struct cvm_tpm_quote q;
	int rc = cvm_tpm_quote_parse(msg, len, &q, err);
	if (rc < 0)
		return rc;
	if (!ak || !sig)
		return cvm_err_badparam(err, "tpm.quote: signature and attestation key are required");
	if ((rc = check_signature(msg, len, sig, sig_len, ak, err)) < 0)
		return rc;
	if (q.n_banks != 1 || q.bank_alg[0] != TPM_ALG_SHA256)
		return cvm_err_badparam(err, "tpm.quote.pcrSelect: expected one SHA-256 bank");
	/* PCR values are hashed in ascending index order, as selected. */
	EVP_MD_CTX *md = EVP_MD_CTX_new();
	uint8_t d[32];
	unsigned int dl = 0;
	bool ok = md && EVP_DigestInit_ex(md, EVP_sha256(), NULL) == 1;
	for (size_t i = 0; ok && i < 32; i++) {
		if (!(q.bank_select[0][i / 8] & (1u << (i % 8))))
			continue;
		if (i >= n_pcrs || !pcrs) {
			EVP_MD_CTX_free(md);
			return cvm_err_badparam(err, "tpm.pcrs: PCR %zu is selected but not given", i);
		}
		ok = EVP_DigestUpdate(md, pcrs[i], 32) == 1;
	}
	ok = ok && EVP_DigestFinal_ex(md, d, &dl) == 1;
	EVP_MD_CTX_free(md);
	if (!ok)
		return cvm_err_openssl(err, EIO, "tpm.pcrDigest");
	if (q.pcr_digest_len != 32 || memcmp(d, q.pcr_digest, 32) != 0)
		return cvm_err_set(err, EBADMSG, "Unauthorized",
				   "tpm.quote.pcrDigest: does not match the PCR values");
	if (nonce && (nonce_len != q.extra_data_len || !cvm_memeq_ct(nonce, q.extra_data, nonce_len)))
		return cvm_err_set(err, EBADMSG, "Unauthorized",
				   "tpm.quote.extraData: does not match the nonce");
	if (out)
		*out = q;
	return 0;
}
