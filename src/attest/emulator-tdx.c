/* SPDX-License-Identifier: Apache-2.0 */
/* TDX half of the TEE emulator: an Intel-shaped PCK chain and TD quotes (v4) in the hardware
 * layout, so the real quote parser and verifier run without TDX. Trusted only through
 * cvm_tdx_verify_opts.emulator_root after a fingerprint check. */
#include <openssl/ec.h>
#include <openssl/err.h>
#include <openssl/pem.h>
#include <openssl/x509v3.h>
#include <string.h>

#include <opencvm/json.h>

#include "attest-internal.h"

#define SGX_OID "1.2.840.113741.1.13.1"
#define TDX_FILE_MAX (64 * 1024)

static const uint8_t intel_qe_vendor[16] = { 0x93, 0x9a, 0x72, 0x33, 0xf7, 0x9c, 0x4c, 0xa9,
					     0x94, 0x0a, 0x0d, 0xb3, 0x95, 0x7f, 0x06, 0x07 };

/* ---- a small DER writer for the SGX extension -------------------------------------------- */

static int der_tlv(struct cvm_buf *out, uint8_t tag, const uint8_t *v, size_t len)
{
	uint8_t hdr[4] = { tag };
	size_t hl;
	if (len < 0x80) {
		hdr[1] = (uint8_t)len;
		hl = 2;
	} else if (len < 0x100) {
		hdr[1] = 0x81;
		hdr[2] = (uint8_t)len;
		hl = 3;
	} else {
		hdr[1] = 0x82;
		hdr[2] = (uint8_t)(len >> 8);
		hdr[3] = (uint8_t)len;
		hl = 4;
	}
	if (cvm_buf_append(out, hdr, hl) < 0 || cvm_buf_append(out, v, len) < 0)
		return -ENOMEM;
	return 0;
}

static int der_oid(struct cvm_buf *out, const char *oid)
{
	ASN1_OBJECT *o = OBJ_txt2obj(oid, 1);
	unsigned char *der = NULL;
	int n = o ? i2d_ASN1_OBJECT(o, &der) : -1;
	int rc = n > 0 ? cvm_buf_append(out, der, (size_t)n) : -ENOMEM;
	OPENSSL_free(der);
	ASN1_OBJECT_free(o);
	return rc;
}

/* SEQUENCE { OID, value } where value is already DER. */
static int der_pair(struct cvm_buf *out, const char *oid, const struct cvm_buf *value)
{
	struct cvm_buf in = { 0 };
	int rc = der_oid(&in, oid);
	if (rc == 0)
		rc = cvm_buf_append(&in, value->data, value->len);
	if (rc == 0)
		rc = der_tlv(out, 0x30, in.data, in.len);
	cvm_buf_free(&in);
	return rc;
}

static int der_pair_prim(struct cvm_buf *out, const char *oid, uint8_t tag, const uint8_t *v,
			 size_t len)
{
	struct cvm_buf val = { 0 };
	int rc = der_tlv(&val, tag, v, len);
	if (rc == 0)
		rc = der_pair(out, oid, &val);
	cvm_buf_free(&val);
	return rc;
}

static int der_pair_int(struct cvm_buf *out, const char *oid, unsigned v)
{
	uint8_t b[3];
	size_t n = 0;
	/* Minimal two's-complement encoding of a small non-negative integer. */
	if (v >= 0x8000)
		b[n++] = 0;
	if (v >= 0x80)
		b[n++] = (uint8_t)(v >> 8);
	b[n++] = (uint8_t)v;
	if (n == 2 && b[0] == 0 && !(b[1] & 0x80)) {
		b[0] = b[1];
		n = 1;
	}
	return der_pair_prim(out, oid, 0x02, b, n);
}

static int sgx_extension(const struct cvm_tee_emu_tdx_params *p, struct cvm_buf *out)
{
	struct cvm_buf items = { 0 }, tcb = { 0 }, tcbseq = { 0 };
	uint8_t ppid[16] = { 0 };
	uint8_t pceid[2] = { 0, 0 };
	uint8_t sgx_type = 0;
	char oid[48];
	int rc = der_pair_prim(&items, SGX_OID ".1", 0x04, ppid, sizeof(ppid));
	for (int i = 1; rc == 0 && i <= 16; i++) {
		snprintf(oid, sizeof(oid), SGX_OID ".2.%d", i);
		rc = der_pair_int(&tcb, oid, p->cpusvn[i - 1]);
	}
	if (rc == 0)
		rc = der_pair_int(&tcb, SGX_OID ".2.17", p->pcesvn);
	if (rc == 0)
		rc = der_pair_prim(&tcb, SGX_OID ".2.18", 0x04, p->cpusvn, 16);
	if (rc == 0)
		rc = der_tlv(&tcbseq, 0x30, tcb.data, tcb.len);
	if (rc == 0)
		rc = der_pair(&items, SGX_OID ".2", &tcbseq);
	if (rc == 0)
		rc = der_pair_prim(&items, SGX_OID ".3", 0x04, pceid, 2);
	if (rc == 0)
		rc = der_pair_prim(&items, SGX_OID ".4", 0x04, p->fmspc, 6);
	if (rc == 0)
		rc = der_pair_prim(&items, SGX_OID ".5", 0x0a, &sgx_type, 1);
	if (rc == 0)
		rc = der_tlv(out, 0x30, items.data, items.len);
	cvm_buf_free(&items);
	cvm_buf_free(&tcb);
	cvm_buf_free(&tcbseq);
	return rc;
}

/* ---- chain ------------------------------------------------------------------------------- */

static X509 *ec_cert(const char *cn, EVP_PKEY *key, X509 *issuer, EVP_PKEY *ikey, bool ca,
		     const struct cvm_buf *sgx_ext)
{
	X509 *x = X509_new();
	X509_NAME *n = X509_NAME_new();
	bool ok = x && n &&
		  X509_NAME_add_entry_by_txt(n, "CN", MBSTRING_ASC, (const unsigned char *)cn, -1,
					     -1, 0) &&
		  X509_NAME_add_entry_by_txt(n, "O", MBSTRING_ASC,
					     (const unsigned char *)"OpenCVM TEE Emulator", -1, -1,
					     0) &&
		  X509_set_version(x, 2) && ASN1_INTEGER_set(X509_get_serialNumber(x), 1) &&
		  X509_set_subject_name(x, n) &&
		  X509_set_issuer_name(x, issuer ? X509_get_subject_name(issuer) : n) &&
		  X509_gmtime_adj(X509_getm_notBefore(x), -3600) &&
		  X509_time_adj_ex(X509_getm_notAfter(x), 7 * 365, 0, NULL) &&
		  X509_set_pubkey(x, key);
	X509_NAME_free(n);
	if (ok && ca) {
		X509V3_CTX ctx;
		X509V3_set_ctx(&ctx, issuer ? issuer : x, x, NULL, NULL, 0);
		X509_EXTENSION *e = X509V3_EXT_conf_nid(NULL, &ctx, NID_basic_constraints,
							"critical,CA:TRUE");
		X509_EXTENSION *u = X509V3_EXT_conf_nid(NULL, &ctx, NID_key_usage,
							"critical,keyCertSign,cRLSign");
		ok = e && u && X509_add_ext(x, e, -1) && X509_add_ext(x, u, -1);
		X509_EXTENSION_free(e);
		X509_EXTENSION_free(u);
	}
	if (ok && sgx_ext) {
		ASN1_OBJECT *obj = OBJ_txt2obj(SGX_OID, 1);
		ASN1_OCTET_STRING *os = ASN1_OCTET_STRING_new();
		X509_EXTENSION *e = NULL;
		ok = obj && os && ASN1_OCTET_STRING_set(os, sgx_ext->data, (int)sgx_ext->len) &&
		     (e = X509_EXTENSION_create_by_OBJ(NULL, obj, 0, os)) && X509_add_ext(x, e, -1);
		X509_EXTENSION_free(e);
		ASN1_OBJECT_free(obj);
		ASN1_OCTET_STRING_free(os);
	}
	if (!ok || X509_sign(x, ikey ? ikey : key, EVP_sha256()) <= 0) {
		X509_free(x);
		return NULL;
	}
	return x;
}

static int put_file(const char *dir, const char *name, const void *data, size_t len, int mode,
		    struct cvm_err *err)
{
	_cleanup_free_ char *path = cvm_path_join(dir, name);
	return path ? cvm_file_write_atomic(path, data, len, mode, err) : cvm_err_nomem(err);
}

static int put_pem(const char *dir, const char *name, X509 *x, EVP_PKEY *k, struct cvm_err *err)
{
	BIO *b = BIO_new(BIO_s_mem());
	char *data = NULL;
	long n = 0;
	bool ok = b && (x ? PEM_write_bio_X509(b, x)
			  : PEM_write_bio_PrivateKey(b, k, NULL, NULL, 0, NULL, NULL)) &&
		  (n = BIO_get_mem_data(b, &data)) > 0;
	int rc = ok ? put_file(dir, name, data, (size_t)n, x ? 0644 : 0600, err)
		    : cvm_err_openssl(err, EIO, "emulator: PEM encoding");
	if (data && n > 0 && !x)
		OPENSSL_cleanse(data, (size_t)n);
	BIO_free(b);
	return rc;
}

static int put_platform(const char *dir, const struct cvm_tee_emu_tdx_params *p,
			struct cvm_err *err)
{
	_cleanup_free_ char *fmspc = cvm_hex_encode(p->fmspc, 6);
	_cleanup_free_ char *cpusvn = cvm_hex_encode(p->cpusvn, 16);
	_cleanup_free_ char *tee = cvm_hex_encode(p->tee_tcb_svn, 16);
	_cleanup_free_ char *mrseam = cvm_hex_encode(p->mrseam, 48);
	json_t *j = fmspc && cpusvn && tee && mrseam
			    ? json_pack("{s:s, s:s, s:i, s:s, s:s}", "fmspc", fmspc, "cpusvn", cpusvn,
					"pcesvn", p->pcesvn, "tee_tcb_svn", tee, "mrseam", mrseam)
			    : NULL;
	_cleanup_free_ char *text = j ? json_dumps(j, JSON_INDENT(2) | JSON_SORT_KEYS) : NULL;
	json_decref(j);
	return text ? put_file(dir, "tdx-platform.json", text, strlen(text), 0644, err)
		    : cvm_err_nomem(err);
}

int cvm_tee_emu_tdx_init(const char *dir, const struct cvm_tee_emu_tdx_params *p,
			 char fingerprint_hex[65], struct cvm_err *err)
{
	if (!dir || !p)
		return cvm_err_badparam(err, "emulator: dir and TDX params are required");
	int rc = cvm_mkdir_p(dir, 0700, err);
	if (rc < 0)
		return rc;
	EVP_PKEY *rk = EVP_EC_gen("P-256"), *ck = EVP_EC_gen("P-256"), *pk = EVP_EC_gen("P-256");
	EVP_PKEY *ak = EVP_EC_gen("P-256");
	X509 *root = NULL, *ca = NULL, *pck = NULL;
	struct cvm_buf ext = { 0 };
	if (!rk || !ck || !pk || !ak) {
		rc = cvm_err_openssl(err, EIO, "emulator: TDX key generation");
		goto out;
	}
	if (sgx_extension(p, &ext) < 0) {
		rc = cvm_err_nomem(err);
		goto out;
	}
	root = ec_cert("OpenCVM Emulated SGX Root CA", rk, NULL, NULL, true, NULL);
	ca = root ? ec_cert("OpenCVM Emulated SGX PCK Platform CA", ck, root, rk, true, NULL) : NULL;
	pck = ca ? ec_cert("OpenCVM Emulated SGX PCK Certificate", pk, ca, ck, false, &ext) : NULL;
	if (!pck) {
		rc = cvm_err_openssl(err, EIO, "emulator: TDX certificates");
		goto out;
	}
	if ((rc = put_pem(dir, "tdx-root.pem", root, NULL, err)) < 0 ||
	    (rc = put_pem(dir, "tdx-pck-ca.pem", ca, NULL, err)) < 0 ||
	    (rc = put_pem(dir, "tdx-pck.pem", pck, NULL, err)) < 0 ||
	    (rc = put_pem(dir, "tdx-pck-key.pem", NULL, pk, err)) < 0 ||
	    (rc = put_pem(dir, "tdx-ak-key.pem", NULL, ak, err)) < 0 ||
	    (rc = put_platform(dir, p, err)) < 0)
		goto out;
	rc = fingerprint_hex ? cvm_attest_x509_fingerprint(root, fingerprint_hex, err) : 0;
out:
	cvm_buf_free(&ext);
	X509_free(root);
	X509_free(ca);
	X509_free(pck);
	EVP_PKEY_free(rk);
	EVP_PKEY_free(ck);
	EVP_PKEY_free(pk);
	EVP_PKEY_free(ak);
	return rc;
}

/* ---- quotes ------------------------------------------------------------------------------ */

static int read_text(const char *dir, const char *name, uint8_t **buf, size_t *len,
		     struct cvm_err *err)
{
	_cleanup_free_ char *path = cvm_path_join(dir, name);
	return path ? cvm_file_read(path, TDX_FILE_MAX, buf, len, err) : cvm_err_nomem(err);
}

static EVP_PKEY *read_key(const char *dir, const char *name, struct cvm_err *err)
{
	uint8_t *pem = NULL;
	size_t len = 0;
	if (read_text(dir, name, &pem, &len, err) < 0)
		return NULL;
	BIO *b = BIO_new_mem_buf(pem, (int)len);
	EVP_PKEY *k = b ? PEM_read_bio_PrivateKey(b, NULL, NULL, NULL) : NULL;
	BIO_free(b);
	cvm_free_secure(pem, len);
	if (!k) {
		ERR_clear_error();
		cvm_err_badparam(err, "emulator: %s/%s is not a private key", dir, name);
	}
	return k;
}

/* ECDSA P-256 / SHA-256, raw r||s big-endian as in TDX quotes. */
static int sign_raw(EVP_PKEY *k, const uint8_t *data, size_t len, uint8_t out[64],
		    struct cvm_err *err)
{
	EVP_MD_CTX *md = EVP_MD_CTX_new();
	uint8_t der[80];
	size_t dl = sizeof(der);
	int rc = 0;
	if (!md || EVP_DigestSignInit(md, NULL, EVP_sha256(), NULL, k) != 1 ||
	    EVP_DigestSign(md, der, &dl, data, len) != 1)
		rc = cvm_err_openssl(err, EIO, "emulator: TDX signature");
	EVP_MD_CTX_free(md);
	if (rc < 0)
		return rc;
	const unsigned char *p = der;
	ECDSA_SIG *s = d2i_ECDSA_SIG(NULL, &p, (long)dl);
	const BIGNUM *r = NULL, *sv = NULL;
	if (s)
		ECDSA_SIG_get0(s, &r, &sv);
	if (!s || BN_bn2binpad(r, out, 32) != 32 || BN_bn2binpad(sv, out + 32, 32) != 32)
		rc = cvm_err_openssl(err, EIO, "emulator: TDX signature encoding");
	ECDSA_SIG_free(s);
	return rc;
}

static int hex_member(json_t *j, const char *k, uint8_t *out, size_t n, struct cvm_err *err)
{
	const char *s = json_string_value(json_object_get(j, k));
	if (!s)
		return cvm_err_badparam(err, "emulator tdx-platform.json: %s missing", k);
	return cvm_hex_decode_fixed(s, out, n, k, err);
}

static void put16(struct cvm_buf *b, uint16_t v, int *rc)
{
	uint8_t x[2] = { (uint8_t)v, (uint8_t)(v >> 8) };
	if (cvm_buf_append(b, x, 2) < 0)
		*rc = -ENOMEM;
}

static void put32le(struct cvm_buf *b, uint32_t v, int *rc)
{
	uint8_t x[4];
	cvm_put_le32(x, v);
	if (cvm_buf_append(b, x, 4) < 0)
		*rc = -ENOMEM;
}

static void put_body(uint8_t body[584], const uint8_t tee[16], const uint8_t mrseam[48],
		     const struct cvm_tee_emu_tdx_in *in)
{
	memset(body, 0, 584);
	memcpy(body, tee, 16);
	memcpy(body + 16, mrseam, 48);
	cvm_put_le64(body + 120, in->td_attributes);
	cvm_put_le64(body + 128, in->xfam);
	memcpy(body + 136, in->mrtd, 48);
	memcpy(body + 184, in->mrconfigid, 48);
	memcpy(body + 232, in->mrowner, 48);
	memcpy(body + 280, in->mrownerconfig, 48);
	for (int i = 0; i < 4; i++)
		memcpy(body + 328 + 48 * i, in->rtmr[i], 48);
	memcpy(body + 520, in->report_data, 64);
}

int cvm_tee_emu_tdx_quote(const char *dir, const struct cvm_tee_emu_tdx_in *in,
			  struct cvm_buf *out, struct cvm_err *err)
{
	if (!dir || !in || !out)
		return cvm_err_badparam(err, "emulator: dir, input and output are required");
	_cleanup_free_ uint8_t *pj = NULL, *c0 = NULL, *c1 = NULL, *c2 = NULL;
	size_t pl = 0, l0 = 0, l1 = 0, l2 = 0;
	int rc;
	if ((rc = read_text(dir, "tdx-platform.json", &pj, &pl, err)) < 0 ||
	    (rc = read_text(dir, "tdx-pck.pem", &c0, &l0, err)) < 0 ||
	    (rc = read_text(dir, "tdx-pck-ca.pem", &c1, &l1, err)) < 0 ||
	    (rc = read_text(dir, "tdx-root.pem", &c2, &l2, err)) < 0)
		return rc;
	json_t *j = json_loadb((const char *)pj, pl, 0, NULL);
	uint8_t tee[16], mrseam[48];
	rc = j ? 0 : cvm_err_badparam(err, "emulator: tdx-platform.json is not JSON");
	if (rc == 0 && (rc = hex_member(j, "tee_tcb_svn", tee, 16, err)) == 0)
		rc = hex_member(j, "mrseam", mrseam, 48, err);
	json_int_t pcesvn = json_integer_value(json_object_get(j, "pcesvn"));
	json_decref(j);
	if (rc < 0)
		return rc;
	EVP_PKEY *ak = read_key(dir, "tdx-ak-key.pem", err);
	EVP_PKEY *pk = ak ? read_key(dir, "tdx-pck-key.pem", err) : NULL;
	if (!pk) {
		EVP_PKEY_free(ak);
		return -EINVAL;
	}
	/* Header (48) and TD1.0 body (584): the signed part. */
	struct cvm_buf q = { 0 };
	put16(&q, 4, &rc);
	put16(&q, 2, &rc);
	put32le(&q, 0x81, &rc);
	put16(&q, 0, &rc);
	put16(&q, (uint16_t)pcesvn, &rc);
	if (rc == 0 && cvm_buf_append(&q, intel_qe_vendor, 16) < 0)
		rc = -ENOMEM;
	uint8_t zero[20] = { 0 }, body[584];
	put_body(body, tee, mrseam, in);
	if (rc == 0 && (cvm_buf_append(&q, zero, 20) < 0 || cvm_buf_append(&q, body, 584) < 0))
		rc = -ENOMEM;
	/* The attestation key as raw X||Y. */
	uint8_t pub[65], akxy[64], auth[32], qe[384] = { 0 }, qe_sig[64], sig[64];
	size_t publen = 0;
	if (rc == 0 && (EVP_PKEY_get_octet_string_param(ak, "pub", pub, sizeof(pub), &publen) != 1 ||
			publen != 65))
		rc = cvm_err_openssl(err, EIO, "emulator: attestation key");
	if (rc == 0) {
		memcpy(akxy, pub + 1, 64);
		for (int i = 0; i < 32; i++)
			auth[i] = (uint8_t)i;
		/* QE report: ISVPRODID 2 (TDX QE), report_data = SHA-256(AK || auth) || 0. */
		qe[256] = 2;
		uint8_t cat[96];
		memcpy(cat, akxy, 64);
		memcpy(cat + 64, auth, 32);
		size_t dl = 0;
		rc = cvm_digest("SHA256", cat, sizeof(cat), qe + 320, &dl, err);
	}
	if (rc == 0)
		rc = sign_raw(pk, qe, sizeof(qe), qe_sig, err);
	if (rc == 0)
		rc = sign_raw(ak, q.data, q.len, sig, err);
	if (rc == 0) {
		size_t chain_len = l0 + l1 + l2;
		uint32_t cert6 = 384 + 64 + 2 + 32 + 2 + 4 + (uint32_t)chain_len;
		uint32_t sig_len = 64 + 64 + 2 + 4 + cert6;
		put32le(&q, sig_len, &rc);
		if (rc == 0 && (cvm_buf_append(&q, sig, 64) < 0 || cvm_buf_append(&q, akxy, 64) < 0))
			rc = -ENOMEM;
		put16(&q, 6, &rc);
		put32le(&q, cert6, &rc);
		if (rc == 0 && (cvm_buf_append(&q, qe, 384) < 0 || cvm_buf_append(&q, qe_sig, 64) < 0))
			rc = -ENOMEM;
		put16(&q, 32, &rc);
		if (rc == 0 && cvm_buf_append(&q, auth, 32) < 0)
			rc = -ENOMEM;
		put16(&q, 5, &rc);
		put32le(&q, (uint32_t)chain_len, &rc);
		if (rc == 0 && (cvm_buf_append(&q, c0, l0) < 0 || cvm_buf_append(&q, c1, l1) < 0 ||
				cvm_buf_append(&q, c2, l2) < 0))
			rc = -ENOMEM;
		if (rc == -ENOMEM)
			rc = cvm_err_nomem(err);
	}
	if (rc == 0)
		rc = cvm_buf_append(out, q.data, q.len) < 0 ? cvm_err_nomem(err) : 0;
	cvm_buf_free(&q);
	EVP_PKEY_free(ak);
	EVP_PKEY_free(pk);
	return rc;
}

int cvm_tee_emu_tdx_root(const char *dir, const char *fingerprint_hex, X509 **out,
			 struct cvm_err *err)
{
	_cleanup_free_ uint8_t *pem = NULL;
	size_t len = 0;
	int rc = read_text(dir, "tdx-root.pem", &pem, &len, err);
	if (rc < 0)
		return rc;
	BIO *b = BIO_new_mem_buf(pem, (int)len);
	X509 *x = b ? PEM_read_bio_X509(b, NULL, NULL, NULL) : NULL;
	BIO_free(b);
	if (!x) {
		ERR_clear_error();
		return cvm_err_badparam(err, "emulator: %s/tdx-root.pem is not a certificate", dir);
	}
	char fp[65];
	rc = cvm_attest_x509_fingerprint(x, fp, err);
	if (rc == 0 && (!fingerprint_hex || strcasecmp(fp, fingerprint_hex) != 0))
		rc = cvm_err_set(err, EBADMSG, "Unauthorized",
				 "emulator: TDX root fingerprint %s does not match the pinned value", fp);
	if (rc < 0) {
		X509_free(x);
		return rc;
	}
	*out = x;
	return 0;
}
