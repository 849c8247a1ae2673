/* SPDX-License-Identifier: Apache-2.0 */
/* Intel TDX quotes v4/v5 (Intel TDX DCAP Quoting Library API): parser, signature chain
 * (quote by the attestation key, QE report by the PCK, PCK chain to the Intel SGX Root CA),
 * QE report binding, TCB status from TCB info / QE identity collateral, and the policy. */
#include <openssl/ec.h>
#include <openssl/err.h>
#include <openssl/pem.h>
#include <openssl/x509v3.h>
#include <string.h>
#include <strings.h>

#include <opencvm/json.h>

#include "attest-internal.h"

#define HDR_LEN 48
#define TD10_LEN 584
#define TD15_LEN 648
#define QE_REPORT_LEN 384
#define TEE_TDX 0x81
#define ATT_KEY_ECDSA_P256 2
#define CERT_QE_REPORT 6
#define CERT_PCK_CHAIN 5
#define SGX_EXT_OID "1.2.840.113741.1.13.1"

static const uint8_t intel_qe_vendor[16] = { 0x93, 0x9a, 0x72, 0x33, 0xf7, 0x9c, 0x4c, 0xa9,
					     0x94, 0x0a, 0x0d, 0xb3, 0x95, 0x7f, 0x06, 0x07 };

static uint16_t le16(const uint8_t *p)
{
	return (uint16_t)(p[0] | p[1] << 8);
}

static void parse_body(const uint8_t *b, bool td15, struct cvm_tdx_body *o)
{
	memcpy(o->tee_tcb_svn, b, 16);
	memcpy(o->mrseam, b + 16, 48);
	memcpy(o->mrsignerseam, b + 64, 48);
	o->seam_attributes = cvm_le64(b + 112);
	o->td_attributes = cvm_le64(b + 120);
	o->xfam = cvm_le64(b + 128);
	memcpy(o->mrtd, b + 136, 48);
	memcpy(o->mrconfigid, b + 184, 48);
	memcpy(o->mrowner, b + 232, 48);
	memcpy(o->mrownerconfig, b + 280, 48);
	for (int i = 0; i < 4; i++)
		memcpy(o->rtmr[i], b + 328 + 48 * i, 48);
	memcpy(o->report_data, b + 520, 64);
	o->td15 = td15;
	if (td15) {
		memcpy(o->tee_tcb_svn2, b + 584, 16);
		memcpy(o->mrservicetd, b + 600, 48);
	}
}

static void parse_qe_report(const uint8_t *b, struct cvm_tdx_qe_report *o)
{
	memcpy(o->cpusvn, b, 16);
	o->miscselect = cvm_le32(b + 16);
	memcpy(o->attributes, b + 48, 16);
	memcpy(o->mrenclave, b + 64, 32);
	memcpy(o->mrsigner, b + 128, 32);
	o->isvprodid = le16(b + 256);
	o->isvsvn = le16(b + 258);
	memcpy(o->report_data, b + 320, 64);
}

int cvm_tdx_quote_parse(const uint8_t *buf, size_t len, struct cvm_tdx_quote *q,
			struct cvm_err *err)
{
	if (!buf || len < HDR_LEN)
		return cvm_err_badparam(err, "tdx.quote: shorter than the 48-byte header");
	memset(q, 0, sizeof(*q));
	q->version = le16(buf);
	q->att_key_type = le16(buf + 2);
	q->tee_type = cvm_le32(buf + 4);
	q->qe_svn = le16(buf + 8);
	q->pce_svn = le16(buf + 10);
	memcpy(q->qe_vendor_id, buf + 12, 16);
	memcpy(q->user_data, buf + 28, 20);
	if (q->version != 4 && q->version != 5)
		return cvm_err_badparam(err, "tdx.quote.version: %u is not supported (4, 5)",
					q->version);
	if (q->att_key_type != ATT_KEY_ECDSA_P256)
		return cvm_err_badparam(err, "tdx.quote.attestation_key_type: %u, expected 2 (P-256)",
					q->att_key_type);
	if (q->tee_type != TEE_TDX)
		return cvm_err_badparam(err, "tdx.quote.tee_type: 0x%x, expected 0x81 (TDX)",
					q->tee_type);
	size_t off = HDR_LEN;
	if (q->version == 4) {
		q->body_type = 2;
		q->body_size = TD10_LEN;
	} else {
		if (len - off < 6)
			return cvm_err_badparam(err, "tdx.quote: truncated v5 body descriptor");
		q->body_type = le16(buf + off);
		q->body_size = cvm_le32(buf + off + 2);
		off += 6;
		if (!((q->body_type == 2 && q->body_size == TD10_LEN) ||
		      (q->body_type == 3 && q->body_size == TD15_LEN)))
			return cvm_err_badparam(err,
						"tdx.quote.body: type %u size %u is not a TD report",
						q->body_type, q->body_size);
	}
	if (len - off < q->body_size)
		return cvm_err_badparam(err, "tdx.quote.body: truncated");
	parse_body(buf + off, q->body_type == 3, &q->body);
	off += q->body_size;
	q->signed_len = off;
	if (len - off < 4)
		return cvm_err_badparam(err, "tdx.quote: missing signature data length");
	uint32_t sig_len = cvm_le32(buf + off);
	off += 4;
	if (sig_len > len - off)
		return cvm_err_badparam(err, "tdx.quote.signature_data: length %u exceeds the input",
					sig_len);
	const uint8_t *s = buf + off;
	size_t end = off + sig_len;
	/* 64 sig + 64 key + 2 type + 4 size + 384 QE report + 64 QE sig + 2 auth size */
	if (sig_len < 584)
		return cvm_err_badparam(err, "tdx.quote.signature_data: too short (%u)", sig_len);
	memcpy(q->signature, s, 64);
	memcpy(q->attest_key, s + 64, 64);
	uint16_t ctype = le16(s + 128);
	uint32_t csize = cvm_le32(s + 130);
	if (ctype != CERT_QE_REPORT)
		return cvm_err_badparam(err, "tdx.quote.certification_data.type: %u, expected 6",
					ctype);
	if (csize > sig_len - 134)
		return cvm_err_badparam(err, "tdx.quote.certification_data: size %u too large", csize);
	const uint8_t *c = s + 134;
	memcpy(q->qe_report_raw, c, QE_REPORT_LEN);
	parse_qe_report(c, &q->qe_report);
	memcpy(q->qe_report_sig, c + 384, 64);
	size_t coff = off + 134 + 448;
	uint16_t auth_len = le16(buf + coff);
	coff += 2;
	if (auth_len > end - coff)
		return cvm_err_badparam(err, "tdx.quote.qe_auth_data: length %u exceeds the data",
					auth_len);
	q->qe_auth_off = coff;
	q->qe_auth_len = auth_len;
	coff += auth_len;
	if (end - coff < 6)
		return cvm_err_badparam(err, "tdx.quote: missing the PCK certification data");
	uint16_t ptype = le16(buf + coff);
	uint32_t psize = cvm_le32(buf + coff + 2);
	coff += 6;
	if (ptype != CERT_PCK_CHAIN)
		return cvm_err_badparam(err, "tdx.quote.pck_certification_data.type: %u, expected 5",
					ptype);
	if (psize > end - coff)
		return cvm_err_badparam(err, "tdx.quote.pck_chain: size %u exceeds the data", psize);
	q->pck_chain_off = coff;
	q->pck_chain_len = psize;
	q->quote_len = end;
	return 0;
}

int cvm_tdx_quote_to_json(const struct cvm_tdx_quote *q, json_t **out, struct cvm_err *err)
{
	json_t *o = json_object();
	if (!o)
		return cvm_err_nomem(err);
	const struct cvm_tdx_body *b = &q->body;
	int rc = 0;
	rc |= json_object_set_new(o, "version", json_integer(q->version));
	rc |= json_object_set_new(o, "tee_type", json_integer(q->tee_type));
	rc |= json_object_set_new(o, "qe_svn", json_integer(q->qe_svn));
	rc |= json_object_set_new(o, "pce_svn", json_integer(q->pce_svn));
	rc |= cvm_attest_json_hex(o, "qe_vendor_id", q->qe_vendor_id, 16);
	rc |= json_object_set_new(o, "body_type", json_integer(q->body_type));
	rc |= cvm_attest_json_hex(o, "tee_tcb_svn", b->tee_tcb_svn, 16);
	rc |= cvm_attest_json_hex(o, "mrseam", b->mrseam, 48);
	rc |= cvm_attest_json_hex(o, "mrsignerseam", b->mrsignerseam, 48);
	rc |= json_object_set_new(o, "seam_attributes", json_integer((json_int_t)b->seam_attributes));
	rc |= json_object_set_new(o, "td_attributes", json_integer((json_int_t)b->td_attributes));
	rc |= json_object_set_new(o, "xfam", json_integer((json_int_t)b->xfam));
	rc |= cvm_attest_json_hex(o, "mrtd", b->mrtd, 48);
	rc |= cvm_attest_json_hex(o, "mrconfigid", b->mrconfigid, 48);
	rc |= cvm_attest_json_hex(o, "mrowner", b->mrowner, 48);
	rc |= cvm_attest_json_hex(o, "mrownerconfig", b->mrownerconfig, 48);
	char name[8];
	for (int i = 0; i < 4; i++) {
		snprintf(name, sizeof(name), "rtmr%d", i);
		rc |= cvm_attest_json_hex(o, name, b->rtmr[i], 48);
	}
	rc |= cvm_attest_json_hex(o, "report_data", b->report_data, 64);
	if (b->td15) {
		rc |= cvm_attest_json_hex(o, "tee_tcb_svn2", b->tee_tcb_svn2, 16);
		rc |= cvm_attest_json_hex(o, "mrservicetd", b->mrservicetd, 48);
	}
	rc |= cvm_attest_json_hex(o, "qe_mrsigner", q->qe_report.mrsigner, 32);
	rc |= json_object_set_new(o, "qe_isvsvn", json_integer(q->qe_report.isvsvn));
	if (rc) {
		json_decref(o);
		return cvm_err_nomem(err);
	}
	*out = o;
	return 0;
}

/* ---- signatures ---------------------------------------------------------------------------- */

/* ECDSA P-256 / SHA-256 with a raw r||s (big-endian) signature. */
static int verify_p256(EVP_PKEY *pub, const uint8_t *data, size_t len, const uint8_t sig[64],
		       const char *what, struct cvm_err *err)
{
	ECDSA_SIG *s = ECDSA_SIG_new();
	BIGNUM *r = BN_bin2bn(sig, 32, NULL), *ss = BN_bin2bn(sig + 32, 32, NULL);
	uint8_t *der = NULL;
	int dl = 0, rc;
	if (!s || !r || !ss || !ECDSA_SIG_set0(s, r, ss)) {
		BN_free(r);
		BN_free(ss);
		ECDSA_SIG_free(s);
		return cvm_err_nomem(err);
	}
	dl = i2d_ECDSA_SIG(s, &der);
	ECDSA_SIG_free(s);
	EVP_MD_CTX *md = EVP_MD_CTX_new();
	if (dl > 0 && md && EVP_DigestVerifyInit(md, NULL, EVP_sha256(), NULL, pub) == 1 &&
	    EVP_DigestVerify(md, der, (size_t)dl, data, len) == 1) {
		rc = 0;
	} else {
		ERR_clear_error();
		rc = cvm_err_set(err, EBADMSG, "Unauthorized", "%s: signature does not verify", what);
	}
	EVP_MD_CTX_free(md);
	OPENSSL_free(der);
	return rc;
}

static EVP_PKEY *p256_from_raw(const uint8_t xy[64])
{
	uint8_t pt[65];
	pt[0] = 0x04;
	memcpy(pt + 1, xy, 64);
	EVP_PKEY_CTX *ctx = EVP_PKEY_CTX_new_from_name(NULL, "EC", NULL);
	EVP_PKEY *pk = NULL;
	OSSL_PARAM params[] = {
		OSSL_PARAM_utf8_string("group", (char *)"P-256", 0),
		OSSL_PARAM_octet_string("pub", pt, sizeof(pt)),
		OSSL_PARAM_END,
	};
	if (!ctx || EVP_PKEY_fromdata_init(ctx) != 1 ||
	    EVP_PKEY_fromdata(ctx, &pk, EVP_PKEY_PUBLIC_KEY, params) != 1)
		pk = NULL;
	EVP_PKEY_CTX_free(ctx);
	ERR_clear_error();
	return pk;
}

struct chain_ctx {
	STACK_OF(X509) *certs;
};

static int collect(X509 *x, void *ctx, struct cvm_err *err)
{
	struct chain_ctx *c = ctx;
	if (!X509_up_ref(x))
		return cvm_err_nomem(err);
	if (!sk_X509_push(c->certs, x)) {
		X509_free(x);
		return cvm_err_nomem(err);
	}
	return 0;
}

static X509 *builtin_intel_root(struct cvm_err *err)
{
	BIO *b = BIO_new_mem_buf(cvm_intel_sgx_root_pem, -1);
	X509 *x = b ? PEM_read_bio_X509(b, NULL, NULL, NULL) : NULL;
	BIO_free(b);
	char fp[65];
	if (!x || cvm_attest_x509_fingerprint(x, fp, err) < 0 ||
	    strcmp(fp, cvm_intel_sgx_root_sha256) != 0) {
		X509_free(x);
		cvm_err_internal(err, "tdx: built-in Intel root does not match its pinned fingerprint");
		return NULL;
	}
	return x;
}

/* Verify a PEM chain (leaf first) to root at time now; returns the leaf (new reference). */
static int verify_chain(const uint8_t *pem, size_t len, X509 *root, int64_t now, X509_CRL *crl,
			const char *what, X509 **leaf, struct cvm_err *err)
{
	/* The PCK chain often ends with a NUL byte. */
	while (len > 0 && pem[len - 1] == '\0')
		len--;
	struct chain_ctx c = { sk_X509_new_null() };
	if (!c.certs)
		return cvm_err_nomem(err);
	int rc = cvm_attest_x509_each(pem, len, collect, &c, err);
	X509_STORE *store = X509_STORE_new();
	X509_STORE_CTX *sctx = X509_STORE_CTX_new();
	if (rc == 0 && (!store || !sctx || !X509_STORE_add_cert(store, root)))
		rc = cvm_err_nomem(err);
	if (rc == 0 && sk_X509_num(c.certs) < 1)
		rc = cvm_err_badparam(err, "%s: empty certificate chain", what);
	if (rc == 0 && crl) {
		X509_STORE_add_crl(store, crl);
		X509_STORE_set_flags(store, X509_V_FLAG_CRL_CHECK);
	}
	if (rc == 0) {
		X509 *l = sk_X509_value(c.certs, 0);
		if (!X509_STORE_CTX_init(sctx, store, l, c.certs)) {
			rc = cvm_err_nomem(err);
		} else {
			X509_VERIFY_PARAM *vp = X509_STORE_CTX_get0_param(sctx);
			X509_VERIFY_PARAM_set_time(vp, (time_t)now);
			if (X509_verify_cert(sctx) != 1) {
				int e = X509_STORE_CTX_get_error(sctx);
				rc = cvm_err_set(err, EBADMSG, "Unauthorized", "%s: %s", what,
						 X509_verify_cert_error_string(e));
			} else if (X509_up_ref(l)) {
				*leaf = l;
			} else {
				rc = cvm_err_nomem(err);
			}
		}
	}
	ERR_clear_error();
	X509_STORE_CTX_free(sctx);
	X509_STORE_free(store);
	sk_X509_pop_free(c.certs, X509_free);
	return rc;
}

/* ---- PCK certificate SGX extensions ------------------------------------------------------ */

struct pck_info {
	uint8_t fmspc[6];
	uint8_t pceid[2];
	uint8_t comp[16];
	uint16_t pcesvn;
	uint8_t cpusvn[16];
	bool have_fmspc, have_tcb;
};

static int oid_text(const ASN1_TYPE *t, char *out, size_t cap)
{
	if (!t || t->type != V_ASN1_OBJECT)
		return -1;
	return OBJ_obj2txt(out, (int)cap, t->value.object, 1) > 0 ? 0 : -1;
}

static STACK_OF(ASN1_TYPE) *seq_of(const ASN1_TYPE *t)
{
	if (!t || t->type != V_ASN1_SEQUENCE)
		return NULL;
	const unsigned char *p = t->value.sequence->data;
	return d2i_ASN1_SEQUENCE_ANY(NULL, &p, t->value.sequence->length);
}

static int parse_tcb_seq(const ASN1_TYPE *t, struct pck_info *o)
{
	STACK_OF(ASN1_TYPE) *items = seq_of(t);
	int rc = items ? 0 : -1;
	for (int i = 0; rc == 0 && i < sk_ASN1_TYPE_num(items); i++) {
		STACK_OF(ASN1_TYPE) *kv = seq_of(sk_ASN1_TYPE_value(items, i));
		char oid[64];
		if (!kv || sk_ASN1_TYPE_num(kv) != 2 ||
		    oid_text(sk_ASN1_TYPE_value(kv, 0), oid, sizeof(oid)) < 0) {
			rc = -1;
		} else {
			const ASN1_TYPE *v = sk_ASN1_TYPE_value(kv, 1);
			const char *sub = cvm_str_startswith(oid, SGX_EXT_OID ".2.")
						  ? oid + strlen(SGX_EXT_OID ".2.") : "";
			int n = atoi(sub);
			if (n >= 1 && n <= 17 && v->type == V_ASN1_INTEGER) {
				long x = ASN1_INTEGER_get(v->value.integer);
				if (x < 0 || x > (n == 17 ? 65535 : 255))
					rc = -1;
				else if (n == 17)
					o->pcesvn = (uint16_t)x;
				else
					o->comp[n - 1] = (uint8_t)x;
			} else if (n == 18 && v->type == V_ASN1_OCTET_STRING &&
				   v->value.octet_string->length == 16) {
				memcpy(o->cpusvn, v->value.octet_string->data, 16);
			}
		}
		sk_ASN1_TYPE_pop_free(kv, ASN1_TYPE_free);
	}
	sk_ASN1_TYPE_pop_free(items, ASN1_TYPE_free);
	return rc;
}

static int pck_extensions(X509 *pck, struct pck_info *o, struct cvm_err *err)
{
	memset(o, 0, sizeof(*o));
	ASN1_OBJECT *obj = OBJ_txt2obj(SGX_EXT_OID, 1);
	int idx = obj ? X509_get_ext_by_OBJ(pck, obj, -1) : -1;
	ASN1_OBJECT_free(obj);
	if (idx < 0)
		return cvm_err_badparam(err, "tdx.pck: no SGX extension");
	ASN1_OCTET_STRING *os = X509_EXTENSION_get_data(X509_get_ext(pck, idx));
	const unsigned char *p = os->data;
	STACK_OF(ASN1_TYPE) *items = d2i_ASN1_SEQUENCE_ANY(NULL, &p, os->length);
	int rc = items ? 0 : -1;
	for (int i = 0; rc == 0 && i < sk_ASN1_TYPE_num(items); i++) {
		STACK_OF(ASN1_TYPE) *kv = seq_of(sk_ASN1_TYPE_value(items, i));
		char oid[64];
		if (!kv || sk_ASN1_TYPE_num(kv) != 2 ||
		    oid_text(sk_ASN1_TYPE_value(kv, 0), oid, sizeof(oid)) < 0) {
			rc = -1;
		} else {
			const ASN1_TYPE *v = sk_ASN1_TYPE_value(kv, 1);
			if (strcmp(oid, SGX_EXT_OID ".2") == 0) {
				rc = parse_tcb_seq(v, o);
				o->have_tcb = rc == 0;
			} else if (strcmp(oid, SGX_EXT_OID ".4") == 0 &&
				   v->type == V_ASN1_OCTET_STRING &&
				   v->value.octet_string->length == 6) {
				memcpy(o->fmspc, v->value.octet_string->data, 6);
				o->have_fmspc = true;
			} else if (strcmp(oid, SGX_EXT_OID ".3") == 0 &&
				   v->type == V_ASN1_OCTET_STRING &&
				   v->value.octet_string->length == 2) {
				memcpy(o->pceid, v->value.octet_string->data, 2);
			}
		}
		sk_ASN1_TYPE_pop_free(kv, ASN1_TYPE_free);
	}
	sk_ASN1_TYPE_pop_free(items, ASN1_TYPE_free);
	if (rc < 0 || !o->have_fmspc || !o->have_tcb)
		return cvm_err_badparam(err, "tdx.pck: malformed SGX extension (FMSPC/TCB)");
	return 0;
}

/* ---- collateral -------------------------------------------------------------------------- */

/* PCS bodies are {"<member>": {...}, "signature": "<hex r||s>"}; the signature covers the
 * member's JSON text exactly as sent. */
static int collateral_signed_part(const char *body, size_t len, const char *member,
				  const char **start, size_t *slen, uint8_t sig[64],
				  struct cvm_err *err)
{
	char key[48];
	snprintf(key, sizeof(key), "{\"%s\":", member);
	const char *sigkey = ",\"signature\":\"";
	size_t kl = strlen(key), sl = strlen(sigkey);
	if (len < kl + sl + 130 || memcmp(body, key, kl) != 0)
		return cvm_err_badparam(err, "tdx.collateral: expected {\"%s\":...,\"signature\":...}",
					member);
	const char *sp = NULL;
	for (const char *p = body + kl; p + sl <= body + len; p++)
		if (memcmp(p, sigkey, sl) == 0)
			sp = p;
	if (!sp || (size_t)(body + len - (sp + sl)) < 130 || sp[sl + 128] != '"')
		return cvm_err_badparam(err, "tdx.collateral.signature: expected 128 hex digits");
	char hex[129];
	memcpy(hex, sp + sl, 128);
	hex[128] = '\0';
	int rc = cvm_hex_decode_fixed(hex, sig, 64, "tdx.collateral.signature", err);
	if (rc < 0)
		return rc;
	*start = body + kl;
	*slen = (size_t)(sp - *start);
	return 0;
}

static int collateral_verify(const char *body, size_t len, const char *member,
			     const struct cvm_tdx_verify_opts *o, X509 *root, int64_t now,
			     json_t **out, struct cvm_err *err)
{
	const char *part = NULL;
	size_t plen = 0;
	uint8_t sig[64];
	int rc = collateral_signed_part(body, len, member, &part, &plen, sig, err);
	if (rc < 0)
		return rc;
	if (o->collateral_chain) {
		X509 *signer = NULL;
		rc = verify_chain((const uint8_t *)o->collateral_chain, o->collateral_chain_len,
				  o->collateral_root ? o->collateral_root : root, now, NULL,
				  "tdx.collateral_chain", &signer, err);
		if (rc == 0)
			rc = verify_p256(X509_get0_pubkey(signer), (const uint8_t *)part, plen, sig,
					 "tdx.collateral", err);
		X509_free(signer);
		if (rc < 0)
			return rc;
	} else if (!o->collateral_trusted) {
		return cvm_err_set(err, EBADMSG, "Unauthorized",
				   "tdx.collateral: no signing chain given and the files are not "
				   "marked trusted");
	}
	json_t *j = NULL;
	rc = cvm_json_parse((const uint8_t *)part, plen, false, &j, err);
	if (rc < 0)
		return cvm_err_prefix(err, "tdx.collateral.%s", member);
	if (o->check_collateral_dates) {
		const char *nu = json_string_value(json_object_get(j, "nextUpdate"));
		struct tm tm = { 0 };
		if (!nu || !strptime(nu, "%Y-%m-%dT%H:%M:%SZ", &tm) || timegm(&tm) < now) {
			json_decref(j);
			return cvm_err_set(err, EBADMSG, "Unauthorized",
					   "tdx.collateral.%s.nextUpdate: collateral is stale", member);
		}
	}
	*out = j;
	return 0;
}

static int hex_field(json_t *o, const char *k, uint8_t *out, size_t n, struct cvm_err *err)
{
	const char *s = json_string_value(json_object_get(o, k));
	if (!s)
		return cvm_err_badparam(err, "tdx.collateral.%s: missing", k);
	return cvm_hex_decode_fixed(s, out, n, k, err);
}

static bool svns_ge(json_t *comps, const uint8_t *have, size_t n)
{
	if (!json_is_array(comps) || json_array_size(comps) != n)
		return false;
	for (size_t i = 0; i < n; i++) {
		json_t *svn = json_object_get(json_array_get(comps, i), "svn");
		if (!json_is_integer(svn) || json_integer_value(svn) > have[i])
			return false;
	}
	return true;
}

static int tcb_status(json_t *info, const struct pck_info *pck, const struct cvm_tdx_quote *q,
		      char *out, size_t cap, struct cvm_err *err)
{
	uint8_t fmspc[6], pceid[2];
	int rc;
	if ((rc = hex_field(info, "fmspc", fmspc, 6, err)) < 0 ||
	    (rc = hex_field(info, "pceId", pceid, 2, err)) < 0)
		return rc;
	const char *id = json_string_value(json_object_get(info, "id"));
	if (!id || strcmp(id, "TDX") != 0)
		return cvm_err_badparam(err, "tdx.tcb_info.id: expected \"TDX\"");
	if (memcmp(fmspc, pck->fmspc, 6) != 0 || memcmp(pceid, pck->pceid, 2) != 0)
		return cvm_err_set(err, EBADMSG, "Unauthorized",
				   "tdx.tcb_info: FMSPC/PCE-ID differ from the PCK certificate's");
	size_t i;
	json_t *lvl;
	json_array_foreach(json_object_get(info, "tcbLevels"), i, lvl) {
		json_t *tcb = json_object_get(lvl, "tcb");
		json_t *pcesvn = json_object_get(tcb, "pcesvn");
		if (!svns_ge(json_object_get(tcb, "sgxtcbcomponents"), pck->comp, 16) ||
		    !json_is_integer(pcesvn) || json_integer_value(pcesvn) > pck->pcesvn ||
		    !svns_ge(json_object_get(tcb, "tdxtcbcomponents"), q->body.tee_tcb_svn, 16))
			continue;
		const char *st = json_string_value(json_object_get(lvl, "tcbStatus"));
		if (!st)
			return cvm_err_badparam(err, "tdx.tcb_info.tcbLevels[%zu].tcbStatus: missing", i);
		snprintf(out, cap, "%s", st);
		return 0;
	}
	snprintf(out, cap, "NotSupported");
	return 0;
}

static int qe_identity_status(json_t *id, const struct cvm_tdx_qe_report *qe, char *out,
			      size_t cap, struct cvm_err *err)
{
	uint8_t mrsigner[32], misc[4], miscmask[4], attr[16], attrmask[16];
	int rc;
	if ((rc = hex_field(id, "mrsigner", mrsigner, 32, err)) < 0 ||
	    (rc = hex_field(id, "miscselect", misc, 4, err)) < 0 ||
	    (rc = hex_field(id, "miscselectMask", miscmask, 4, err)) < 0 ||
	    (rc = hex_field(id, "attributes", attr, 16, err)) < 0 ||
	    (rc = hex_field(id, "attributesMask", attrmask, 16, err)) < 0)
		return rc;
	if (memcmp(mrsigner, qe->mrsigner, 32) != 0)
		return cvm_err_set(err, EBADMSG, "Unauthorized", "tdx.qe: MRSIGNER is not Intel's QE");
	json_t *prod = json_object_get(id, "isvprodid");
	if (!json_is_integer(prod) || json_integer_value(prod) != qe->isvprodid)
		return cvm_err_set(err, EBADMSG, "Unauthorized", "tdx.qe: ISVPRODID mismatch");
	/* miscselect hex is big-endian text of the little-endian field. */
	uint32_t m = (uint32_t)misc[0] << 24 | misc[1] << 16 | misc[2] << 8 | misc[3];
	uint32_t mm = (uint32_t)miscmask[0] << 24 | miscmask[1] << 16 | miscmask[2] << 8 | miscmask[3];
	if ((qe->miscselect & mm) != (m & mm))
		return cvm_err_set(err, EBADMSG, "Unauthorized", "tdx.qe: MISCSELECT mismatch");
	for (int i = 0; i < 16; i++)
		if ((qe->attributes[i] & attrmask[i]) != (attr[i] & attrmask[i]))
			return cvm_err_set(err, EBADMSG, "Unauthorized", "tdx.qe: ATTRIBUTES mismatch");
	size_t i;
	json_t *lvl;
	json_array_foreach(json_object_get(id, "tcbLevels"), i, lvl) {
		json_t *svn = json_object_get(json_object_get(lvl, "tcb"), "isvsvn");
		if (!json_is_integer(svn) || json_integer_value(svn) > qe->isvsvn)
			continue;
		snprintf(out, cap, "%s", json_string_value(json_object_get(lvl, "tcbStatus"))
						  ? json_string_value(json_object_get(lvl, "tcbStatus"))
						  : "Unknown");
		return 0;
	}
	snprintf(out, cap, "NotSupported");
	return 0;
}

/* ---- verification ------------------------------------------------------------------------ */

int cvm_tdx_verify(const uint8_t *buf, size_t len, const struct cvm_tdx_verify_opts *opts,
		   const struct cvm_tdx_policy *policy, struct cvm_tdx_verdict *out,
		   struct cvm_err *err)
{
	static const struct cvm_tdx_verify_opts defaults = { 0 };
	if (!opts)
		opts = &defaults;
	struct cvm_tdx_verdict v = { 0 };
	int rc = cvm_tdx_quote_parse(buf, len, &v.quote, err);
	if (rc < 0)
		return rc;
	const struct cvm_tdx_quote *q = &v.quote;
	if (memcmp(q->qe_vendor_id, intel_qe_vendor, 16) != 0)
		return cvm_err_set(err, EBADMSG, "Unauthorized", "tdx.quote.qe_vendor_id: not Intel");
	int64_t now = opts->now ? opts->now : cvm_now();
	X509 *root = opts->root;
	X509 *own_root = NULL, *pck = NULL;
	EVP_PKEY *ak = NULL;
	json_t *info = NULL, *qeid = NULL;
	if (!root && !(root = own_root = builtin_intel_root(err)))
		return -EIO;
	/* 1. the PCK chain to the root; 2. the QE report signed by the PCK. */
	rc = verify_chain(buf + q->pck_chain_off, q->pck_chain_len, root, now, opts->pck_crl,
			  "tdx.pck_chain", &pck, err);
	if (rc == -EBADMSG && opts->emulator_root) {
		struct cvm_err e2 = { 0 };
		if (verify_chain(buf + q->pck_chain_off, q->pck_chain_len, opts->emulator_root, now,
				 NULL, "tdx.pck_chain", &pck, &e2) == 0) {
			rc = 0;
			v.emulated = true;
			cvm_err_clear(err);
		}
	}
	if (rc == 0)
		rc = verify_p256(X509_get0_pubkey(pck), q->qe_report_raw, QE_REPORT_LEN,
				 q->qe_report_sig, "tdx.qe_report", err);
	/* 3. the QE vouches for the attestation key: report_data = SHA-256(key || auth) || 0. */
	if (rc == 0) {
		uint8_t h[64] = { 0 };
		size_t hl = 0;
		_cleanup_free_ uint8_t *cat = malloc(64 + q->qe_auth_len + 1);
		if (!cat) {
			rc = cvm_err_nomem(err);
		} else {
			memcpy(cat, q->attest_key, 64);
			memcpy(cat + 64, buf + q->qe_auth_off, q->qe_auth_len);
			rc = cvm_digest("SHA256", cat, 64 + q->qe_auth_len, h, &hl, err);
			memset(h + 32, 0, 32);
			if (rc == 0 && memcmp(h, q->qe_report.report_data, 64) != 0)
				rc = cvm_err_set(err, EBADMSG, "Unauthorized",
						 "tdx.qe_report.report_data: does not bind the attestation key");
		}
	}
	/* 4. the quote signed by the attestation key. */
	if (rc == 0 && !(ak = p256_from_raw(q->attest_key)))
		rc = cvm_err_set(err, EBADMSG, "Unauthorized",
				 "tdx.quote.attestation_key: not a P-256 point");
	if (rc == 0)
		rc = verify_p256(ak, buf, q->signed_len, q->signature, "tdx.quote", err);
	/* 5. TCB status from collateral. */
	struct pck_info pi;
	if (rc == 0)
		rc = pck_extensions(pck, &pi, err);
	if (rc == 0) {
		memcpy(v.fmspc, pi.fmspc, 6);
		memcpy(v.pck_cpusvn, pi.cpusvn, 16);
		v.pck_pcesvn = pi.pcesvn;
	}
	if (rc == 0 && opts->tcb_info &&
	    (rc = collateral_verify(opts->tcb_info, opts->tcb_info_len, "tcbInfo", opts, root, now,
				    &info, err)) == 0)
		rc = tcb_status(info, &pi, q, v.tcb_status, sizeof(v.tcb_status), err);
	if (rc == 0 && opts->qe_identity &&
	    (rc = collateral_verify(opts->qe_identity, opts->qe_identity_len, "enclaveIdentity",
				    opts, root, now, &qeid, err)) == 0)
		rc = qe_identity_status(qeid, &q->qe_report, v.qe_tcb_status,
					sizeof(v.qe_tcb_status), err);
	json_decref(info);
	json_decref(qeid);
	EVP_PKEY_free(ak);
	X509_free(pck);
	X509_free(own_root);
	if (rc < 0)
		return rc;
	if ((rc = cvm_tdx_policy_check(&v, policy, err)) < 0)
		return rc;
	*out = v;
	return 0;
}

void cvm_tdx_policy_default(struct cvm_tdx_policy *p)
{
	memset(p, 0, sizeof(*p));
}

#define REFUSE(...) cvm_err_set(err, EPERM, "Forbidden", __VA_ARGS__)

static bool status_allowed(const char *st, const char *const *allowed)
{
	static const char *const defaults[] = { "UpToDate", "SWHardeningNeeded",
						"ConfigurationNeeded",
						"ConfigurationAndSWHardeningNeeded", NULL };
	if (!st[0])
		return true;
	for (const char *const *a = allowed ? allowed : defaults; *a; a++)
		if (strcmp(st, *a) == 0)
			return true;
	return false;
}

int cvm_tdx_policy_check(const struct cvm_tdx_verdict *v, const struct cvm_tdx_policy *p,
			 struct cvm_err *err)
{
	struct cvm_tdx_policy def;
	if (!p) {
		cvm_tdx_policy_default(&def);
		p = &def;
	}
	const struct cvm_tdx_quote *q = &v->quote;
	const struct cvm_tdx_body *b = &q->body;
	if (v->emulated && !p->allow_emulated)
		return REFUSE("tdx.emulated: the quote comes from the TEE emulator");
	if ((b->td_attributes & 1) && !p->allow_debug)
		return REFUSE("tdx.td_attributes.debug: the TD is debuggable");
	if (!status_allowed(v->tcb_status, p->allowed_tcb_status))
		return REFUSE("tdx.tcb_status: %s is not accepted", v->tcb_status);
	if (!status_allowed(v->qe_tcb_status, p->allowed_tcb_status))
		return REFUSE("tdx.qe_tcb_status: %s is not accepted", v->qe_tcb_status);
	if (q->qe_svn < p->min_qe_svn)
		return REFUSE("tdx.qe_svn: %u below %u", q->qe_svn, p->min_qe_svn);
	if (q->pce_svn < p->min_pce_svn)
		return REFUSE("tdx.pce_svn: %u below %u", q->pce_svn, p->min_pce_svn);
	for (int i = 0; i < 16; i++)
		if (b->tee_tcb_svn[i] < p->min_tee_tcb_svn[i])
			return REFUSE("tdx.tee_tcb_svn[%d]: %u below %u", i, b->tee_tcb_svn[i],
				      p->min_tee_tcb_svn[i]);
	if (p->check_qe_vendor_id && memcmp(q->qe_vendor_id, p->qe_vendor_id, 16))
		return REFUSE("tdx.qe_vendor_id: mismatch");
	if (p->check_mrseam && memcmp(b->mrseam, p->mrseam, 48))
		return REFUSE("tdx.mrseam: mismatch");
	if (p->check_td_attributes && b->td_attributes != p->td_attributes)
		return REFUSE("tdx.td_attributes: mismatch");
	if (p->check_xfam && b->xfam != p->xfam)
		return REFUSE("tdx.xfam: mismatch");
	if (p->check_mrconfigid && memcmp(b->mrconfigid, p->mrconfigid, 48))
		return REFUSE("tdx.mrconfigid: mismatch");
	if (p->check_mrowner && memcmp(b->mrowner, p->mrowner, 48))
		return REFUSE("tdx.mrowner: mismatch");
	if (p->check_mrownerconfig && memcmp(b->mrownerconfig, p->mrownerconfig, 48))
		return REFUSE("tdx.mrownerconfig: mismatch");
	for (int i = 0; i < 4; i++)
		if (p->check_rtmr[i] && memcmp(b->rtmr[i], p->rtmr[i], 48))
			return REFUSE("tdx.rtmr%d: mismatch", i);
	if (p->check_report_data && memcmp(b->report_data, p->report_data, 64))
		return REFUSE("tdx.report_data: mismatch");
	if (p->n_mrtds) {
		size_t i;
		for (i = 0; i < p->n_mrtds; i++)
			if (memcmp(b->mrtd, p->mrtds[i], 48) == 0)
				break;
		if (i == p->n_mrtds)
			return REFUSE("tdx.mrtd: not in the allowed list");
	}
	return 0;
}

int cvm_tdx_verdict_claims(const struct cvm_tdx_verdict *v, json_t *o, struct cvm_err *err)
{
	const struct cvm_tdx_body *b = &v->quote.body;
	int rc = 0;
	rc |= cvm_attest_json_hex(o, "x-ms-tdx-mrtd", b->mrtd, 48);
	char name[24];
	for (int i = 0; i < 4; i++) {
		snprintf(name, sizeof(name), "x-ms-tdx-rtmr%d", i);
		rc |= cvm_attest_json_hex(o, name, b->rtmr[i], 48);
	}
	rc |= cvm_attest_json_hex(o, "x-ms-tdx-mrseam", b->mrseam, 48);
	rc |= cvm_attest_json_hex(o, "x-ms-tdx-mrsignerseam", b->mrsignerseam, 48);
	rc |= cvm_attest_json_hex(o, "x-ms-tdx-mrconfigid", b->mrconfigid, 48);
	rc |= cvm_attest_json_hex(o, "x-ms-tdx-mrowner", b->mrowner, 48);
	rc |= cvm_attest_json_hex(o, "x-ms-tdx-mrownerconfig", b->mrownerconfig, 48);
	rc |= cvm_attest_json_hex(o, "x-ms-tdx-reportdata", b->report_data, 64);
	rc |= cvm_attest_json_hex(o, "x-ms-tdx-tee-tcb-svn", b->tee_tcb_svn, 16);
	uint8_t le[8];
	cvm_put_le64(le, b->td_attributes);
	rc |= cvm_attest_json_hex(o, "x-ms-tdx-tdattributes", le, 8);
	cvm_put_le64(le, b->xfam);
	rc |= cvm_attest_json_hex(o, "x-ms-tdx-xfam", le, 8);
	rc |= json_object_set_new(o, "x-ms-tdx-is-debuggable", json_boolean(b->td_attributes & 1));
	if (v->tcb_status[0])
		rc |= json_object_set_new(o, "x-ms-tdx-tcb-status", json_string(v->tcb_status));
	return rc ? cvm_err_nomem(err) : 0;
}

/* ---- policy JSON ------------------------------------------------------------------------- */

struct cvm_tdx_policy_store {
	uint8_t (*mrtds)[48];
	char **status;  /* NULL-terminated */
	size_t n_status;
};

void cvm_tdx_policy_store_free(struct cvm_tdx_policy_store *s)
{
	if (!s)
		return;
	free(s->mrtds);
	for (size_t i = 0; i < s->n_status; i++)
		free(s->status[i]);
	free(s->status);
	free(s);
}

#define TF(name, chk) { #name, offsetof(struct cvm_tdx_policy, name), \
		sizeof(((struct cvm_tdx_policy *)0)->name), offsetof(struct cvm_tdx_policy, chk) }
static const struct { const char *name; size_t off, len, chk; } tdx_fixed[] = {
	TF(qe_vendor_id, check_qe_vendor_id), TF(mrseam, check_mrseam),
	TF(mrconfigid, check_mrconfigid), TF(mrowner, check_mrowner),
	TF(mrownerconfig, check_mrownerconfig), TF(report_data, check_report_data),
};

static int tdx_member(const char *k, json_t *x, struct cvm_tdx_policy *p,
		      struct cvm_tdx_policy_store *s, struct cvm_err *err)
{
	const char *h = json_string_value(x);
	for (size_t i = 0; i < CVM_ARRAY_SIZE(tdx_fixed); i++)
		if (strcmp(k, tdx_fixed[i].name) == 0) {
			if (!h)
				return cvm_err_badparam(err, "policy.%s: expected a hex string", k);
			*(bool *)((char *)p + tdx_fixed[i].chk) = true;
			return cvm_hex_decode_fixed(h, (uint8_t *)p + tdx_fixed[i].off,
						    tdx_fixed[i].len, k, err);
		}
	if (strncmp(k, "rtmr", 4) == 0 && k[4] >= '0' && k[4] <= '3' && !k[5]) {
		int i = k[4] - '0';
		if (!h)
			return cvm_err_badparam(err, "policy.%s: expected a hex string", k);
		p->check_rtmr[i] = true;
		return cvm_hex_decode_fixed(h, p->rtmr[i], 48, k, err);
	}
	if (strcmp(k, "td_attributes") == 0 || strcmp(k, "xfam") == 0) {
		uint8_t le[8];
		if (!h)
			return cvm_err_badparam(err, "policy.%s: expected 16 hex digits", k);
		int rc = cvm_hex_decode_fixed(h, le, 8, k, err);
		if (rc < 0)
			return rc;
		if (k[0] == 't') {
			p->td_attributes = cvm_le64(le);
			p->check_td_attributes = true;
		} else {
			p->xfam = cvm_le64(le);
			p->check_xfam = true;
		}
		return 0;
	}
	if (strcmp(k, "min_tee_tcb_svn") == 0) {
		if (!h)
			return cvm_err_badparam(err, "policy.%s: expected 32 hex digits", k);
		return cvm_hex_decode_fixed(h, p->min_tee_tcb_svn, 16, k, err);
	}
	if (strcmp(k, "allow_debug") == 0 || strcmp(k, "allow_emulated") == 0) {
		if (!json_is_boolean(x))
			return cvm_err_badparam(err, "policy.%s: expected a boolean", k);
		*(k[6] == 'd' ? &p->allow_debug : &p->allow_emulated) = json_is_true(x);
		return 0;
	}
	if (strcmp(k, "min_qe_svn") == 0 || strcmp(k, "min_pce_svn") == 0) {
		json_int_t n = json_integer_value(x);
		if (!json_is_integer(x) || n < 0 || n > 65535)
			return cvm_err_badparam(err, "policy.%s: expected an integer 0..65535", k);
		*(k[4] == 'q' ? &p->min_qe_svn : &p->min_pce_svn) = (uint16_t)n;
		return 0;
	}
	if (strcmp(k, "mrtds") == 0) {
		size_t n = json_array_size(x);
		if (!json_is_array(x) || n > 4096)
			return cvm_err_badparam(err, "policy.mrtds: expected up to 4096 hex strings");
		s->mrtds = calloc(n ? n : 1, 48);
		if (!s->mrtds)
			return cvm_err_nomem(err);
		for (size_t i = 0; i < n; i++) {
			const char *m = json_string_value(json_array_get(x, i));
			if (!m)
				return cvm_err_badparam(err, "policy.mrtds[%zu]: expected hex", i);
			int rc = cvm_hex_decode_fixed(m, s->mrtds[i], 48, "mrtds", err);
			if (rc < 0)
				return rc;
		}
		p->mrtds = (const uint8_t(*)[48])s->mrtds;
		p->n_mrtds = n;
		return 0;
	}
	if (strcmp(k, "allowed_tcb_status") == 0) {
		size_t n = json_array_size(x);
		if (!json_is_array(x) || n > 16)
			return cvm_err_badparam(err, "policy.%s: expected up to 16 strings", k);
		s->status = calloc(n + 1, sizeof(char *));
		if (!s->status)
			return cvm_err_nomem(err);
		for (size_t i = 0; i < n; i++) {
			const char *st = json_string_value(json_array_get(x, i));
			if (!st)
				return cvm_err_badparam(err, "policy.%s[%zu]: expected a string", k, i);
			if (!(s->status[i] = cvm_strdup(st)))
				return cvm_err_nomem(err);
			s->n_status++;
		}
		p->allowed_tcb_status = (const char *const *)s->status;
		return 0;
	}
	return cvm_err_badparam(err, "policy.%s: unknown member", k);
}

int cvm_tdx_policy_from_json(json_t *j, struct cvm_tdx_policy *p,
			     struct cvm_tdx_policy_store **store, struct cvm_err *err)
{
	if (!json_is_object(j))
		return cvm_err_badparam(err, "policy: expected a JSON object");
	struct cvm_tdx_policy_store *s = calloc(1, sizeof(*s));
	if (!s)
		return cvm_err_nomem(err);
	cvm_tdx_policy_default(p);
	const char *k;
	json_t *x;
	json_object_foreach(j, k, x) {
		int rc = tdx_member(k, x, p, s, err);
		if (rc < 0) {
			cvm_tdx_policy_store_free(s);
			return rc;
		}
	}
	*store = s;
	return 0;
}
