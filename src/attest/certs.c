/* SPDX-License-Identifier: Apache-2.0 */
/* AMD certificates: VCEK/VLEK extensions, sorting offered certificates, the extended-report
 * certificate table, a KDS-layout cache directory, and the RSA-PSS signature rule. */
#include <openssl/err.h>
#include <openssl/pem.h>
#include <openssl/rsa.h>
#include <openssl/x509v3.h>
#include <string.h>

#include "attest-internal.h"

#define AMD_OID_PREFIX "1.3.6.1.4.1.3704.1."
#define CERT_FILE_MAX (256 * 1024)

void cvm_attest_x509_cn(X509 *x, char *out, size_t outlen)
{
	out[0] = '\0';
	X509_NAME *n = X509_get_subject_name(x);
	int i = n ? X509_NAME_get_index_by_NID(n, NID_commonName, -1) : -1;
	if (i < 0)
		return;
	ASN1_STRING *s = X509_NAME_ENTRY_get_data(X509_NAME_get_entry(n, i));
	int l = ASN1_STRING_length(s);
	if (l < 0 || (size_t)l >= outlen)
		return;
	memcpy(out, ASN1_STRING_get0_data(s), (size_t)l);
	out[l] = '\0';
}

int cvm_attest_x509_fingerprint(X509 *x, char out[65], struct cvm_err *err)
{
	unsigned char md[32];
	unsigned int mdlen = 0;
	if (!X509_digest(x, EVP_sha256(), md, &mdlen) || mdlen != 32)
		return cvm_err_openssl(err, EIO, "certificate fingerprint");
	static const char hexd[] = "0123456789abcdef";
	for (int i = 0; i < 32; i++) {
		out[2 * i] = hexd[md[i] >> 4];
		out[2 * i + 1] = hexd[md[i] & 15];
	}
	out[64] = '\0';
	return 0;
}

/* The hash inside an AlgorithmIdentifier must be SHA-384 (absent means SHA-1: refused). */
static bool algor_is_sha384(const X509_ALGOR *a)
{
	const ASN1_OBJECT *obj = NULL;
	if (!a)
		return false;
	X509_ALGOR_get0(&obj, NULL, NULL, a);
	return OBJ_obj2nid(obj) == NID_sha384;
}

int cvm_attest_verify_amd_sig(X509 *x, EVP_PKEY *issuer_key, const char *what,
			      struct cvm_err *err)
{
	const X509_ALGOR *alg = NULL;
	X509_get0_signature(NULL, &alg, x);
	const ASN1_OBJECT *obj = NULL;
	int ptype = 0;
	const void *pval = NULL;
	X509_ALGOR_get0(&obj, &ptype, &pval, alg);
	if (OBJ_obj2nid(obj) != NID_rsassaPss || ptype != V_ASN1_SEQUENCE)
		return cvm_err_set(err, EBADMSG, "Unauthorized",
				   "%s: signature algorithm is not RSASSA-PSS", what);
	const ASN1_STRING *seq = pval;
	const unsigned char *p = ASN1_STRING_get0_data(seq);
	RSA_PSS_PARAMS *pss = d2i_RSA_PSS_PARAMS(NULL, &p, ASN1_STRING_length(seq));
	if (!pss)
		return cvm_err_set(err, EBADMSG, "Unauthorized", "%s: malformed RSA-PSS parameters",
				   what);
	/* d2i leaves maskHash empty: the MGF1 hash sits in the mask algorithm's parameter. */
	X509_ALGOR *mgf_md = NULL;
	if (pss->maskGenAlgorithm && OBJ_obj2nid(pss->maskGenAlgorithm->algorithm) == NID_mgf1 &&
	    pss->maskGenAlgorithm->parameter)
		mgf_md = ASN1_TYPE_unpack_sequence(ASN1_ITEM_rptr(X509_ALGOR),
						   pss->maskGenAlgorithm->parameter);
	bool ok = algor_is_sha384(pss->hashAlgorithm) && algor_is_sha384(mgf_md) &&
		  pss->saltLength &&
		  ASN1_INTEGER_get(pss->saltLength) == 48 &&
		  (!pss->trailerField || ASN1_INTEGER_get(pss->trailerField) == 1);
	RSA_PSS_PARAMS_free(pss);
	X509_ALGOR_free(mgf_md);
	if (!ok)
		return cvm_err_set(err, EBADMSG, "Unauthorized",
				   "%s: RSA-PSS parameters are not SHA-384/MGF1-SHA-384/salt 48",
				   what);
	if (EVP_PKEY_get_base_id(issuer_key) != EVP_PKEY_RSA &&
	    EVP_PKEY_get_base_id(issuer_key) != EVP_PKEY_RSA_PSS)
		return cvm_err_set(err, EBADMSG, "Unauthorized", "%s: issuer key is not RSA", what);
	if (X509_verify(x, issuer_key) != 1) {
		ERR_clear_error();
		return cvm_err_set(err, EBADMSG, "Unauthorized", "%s: signature does not verify",
				   what);
	}
	return 0;
}

int cvm_attest_x509_each(const uint8_t *buf, size_t len,
			 int (*fn)(X509 *x, void *ctx, struct cvm_err *err), void *ctx,
			 struct cvm_err *err)
{
	if (!buf || len == 0 || len > INT32_MAX)
		return cvm_err_badparam(err, "certificate: empty or too large input");
	if (buf[0] == 0x30) {
		const unsigned char *p = buf;
		X509 *x = d2i_X509(NULL, &p, (long)len);
		if (!x || (size_t)(p - buf) != len) {
			X509_free(x);
			ERR_clear_error();
			return cvm_err_badparam(err, "certificate: malformed DER");
		}
		int rc = fn(x, ctx, err);
		X509_free(x);
		return rc;
	}
	BIO *bio = BIO_new_mem_buf(buf, (int)len);
	if (!bio)
		return cvm_err_nomem(err);
	int n = 0, rc = 0;
	for (;;) {
		X509 *x = PEM_read_bio_X509(bio, NULL, NULL, NULL);
		if (!x)
			break;
		n++;
		rc = fn(x, ctx, err);
		X509_free(x);
		if (rc < 0)
			break;
	}
	BIO_free(bio);
	/* PEM_read stops with "no start line" at the end; anything else was a broken block. */
	unsigned long e = ERR_peek_last_error();
	ERR_clear_error();
	if (rc < 0)
		return rc;
	if (n == 0)
		return cvm_err_badparam(err, "certificate: no PEM or DER certificate found");
	if (e && ERR_GET_REASON(e) != PEM_R_NO_START_LINE)
		return cvm_err_badparam(err, "certificate: malformed PEM block after %d certs", n);
	return 0;
}

/* ---- VCEK/VLEK extensions ---------------------------------------------------------------- */

/* extnValue contents holding a DER INTEGER 0..255 (1 byte, or 2 with a leading 0x00). */
static int parse_spl(const uint8_t *d, size_t l, uint8_t *out, const char *name,
		     struct cvm_err *err)
{
	if (l == 3 && d[0] == 0x02 && d[1] == 1 && d[2] < 0x80) {
		*out = d[2];
		return 0;
	}
	if (l == 4 && d[0] == 0x02 && d[1] == 2 && d[2] == 0 && d[3] >= 0x80) {
		*out = d[3];
		return 0;
	}
	return cvm_err_badparam(err, "vek.%s: expected a DER INTEGER 0..255", name);
}

static int parse_ia5(const uint8_t *d, size_t l, char *out, size_t outlen, const char *name,
		     struct cvm_err *err)
{
	/* Short-form length only: these strings are tiny. */
	if (l < 2 || (d[0] != 0x16 && d[0] != 0x0c) || d[1] >= 0x80 || (size_t)d[1] != l - 2 ||
	    l - 2 >= outlen)
		return cvm_err_badparam(err, "vek.%s: expected a short IA5String", name);
	for (size_t i = 2; i < l; i++)
		if (d[i] < 0x20 || d[i] > 0x7e)
			return cvm_err_badparam(err, "vek.%s: non-printable character", name);
	memcpy(out, d + 2, l - 2);
	out[l - 2] = '\0';
	return 0;
}

static int parse_hwid(const uint8_t *d, size_t l, struct cvm_snp_vek_ext *o, struct cvm_err *err)
{
	/* Real certificates carry the raw bytes; some tools wrap them in an OCTET STRING. */
	if (l == 64 || l == 8) {
		memcpy(o->hwid, d, l);
		o->hwid_len = l;
		return 0;
	}
	if (l >= 2 && d[0] == 0x04 && d[1] == l - 2 && (d[1] == 64 || d[1] == 8)) {
		memcpy(o->hwid, d + 2, d[1]);
		o->hwid_len = d[1];
		return 0;
	}
	return cvm_err_badparam(err, "vek.hwID: expected 64 or 8 bytes (raw or OCTET STRING), got %zu",
				l);
}

int cvm_snp_vek_ext_from_x509(X509 *x, struct cvm_snp_vek_ext *o, struct cvm_err *err)
{
	memset(o, 0, sizeof(*o));
	o->struct_version = -1;
	int n = X509_get_ext_count(x);
	for (int i = 0; i < n; i++) {
		X509_EXTENSION *ext = X509_get_ext(x, i);
		char oid[80];
		if (OBJ_obj2txt(oid, sizeof(oid), X509_EXTENSION_get_object(ext), 1) <= 0)
			continue;
		if (!cvm_str_startswith(oid, AMD_OID_PREFIX))
			continue;
		const char *sub = oid + strlen(AMD_OID_PREFIX);
		ASN1_OCTET_STRING *os = X509_EXTENSION_get_data(ext);
		const uint8_t *d = ASN1_STRING_get0_data(os);
		size_t l = (size_t)ASN1_STRING_length(os);
		int rc = 0;
		if (strcmp(sub, "1") == 0) {
			uint8_t v = 0;
			rc = parse_spl(d, l, &v, "structVersion", err);
			o->struct_version = v;
		} else if (strcmp(sub, "2") == 0) {
			rc = parse_ia5(d, l, o->product_name, sizeof(o->product_name), "productName",
				       err);
		} else if (strcmp(sub, "3.1") == 0) {
			rc = parse_spl(d, l, &o->tcb.bl, "blSPL", err);
			o->has_bl = true;
		} else if (strcmp(sub, "3.2") == 0) {
			rc = parse_spl(d, l, &o->tcb.tee, "teeSPL", err);
			o->has_tee = true;
		} else if (strcmp(sub, "3.3") == 0) {
			rc = parse_spl(d, l, &o->tcb.snp, "snpSPL", err);
			o->has_snp = true;
		} else if (strcmp(sub, "3.8") == 0) {
			rc = parse_spl(d, l, &o->tcb.ucode, "ucodeSPL", err);
			o->has_ucode = true;
		} else if (strcmp(sub, "3.9") == 0) {
			rc = parse_spl(d, l, &o->tcb.fmc, "fmcSPL", err);
			o->has_fmc = true;
		} else if (strcmp(sub, "4") == 0) {
			rc = parse_hwid(d, l, o, err);
		} else if (strcmp(sub, "5") == 0) {
			rc = parse_ia5(d, l, o->csp_id, sizeof(o->csp_id), "cspID", err);
			o->is_vlek = true;
		}
		/* 3.4..3.7 are reserved SPL slots; other sub-OIDs are future extensions. */
		if (rc < 0)
			return rc;
	}
	char cn[64];
	cvm_attest_x509_cn(x, cn, sizeof(cn));
	if (cvm_str_startswith(cn, "SEV-VLEK"))
		o->is_vlek = true;
	return 0;
}

int cvm_snp_vek_ext_parse(const uint8_t *der, size_t len, struct cvm_snp_vek_ext *out,
			  struct cvm_err *err)
{
	if (!der || len == 0 || len > INT32_MAX)
		return cvm_err_badparam(err, "vek: empty certificate");
	const unsigned char *p = der;
	X509 *x = d2i_X509(NULL, &p, (long)len);
	if (!x || (size_t)(p - der) != len) {
		X509_free(x);
		ERR_clear_error();
		return cvm_err_badparam(err, "vek: malformed DER certificate");
	}
	int rc = cvm_snp_vek_ext_from_x509(x, out, err);
	X509_free(x);
	return rc;
}

/* ---- offered certificates ---------------------------------------------------------------- */

void cvm_snp_certs_clear(struct cvm_snp_certs *c)
{
	X509_free(c->vek);
	X509_free(c->ask);
	X509_free(c->ark);
	memset(c, 0, sizeof(*c));
}

static bool has_amd_ext(X509 *x)
{
	int n = X509_get_ext_count(x);
	for (int i = 0; i < n; i++) {
		char oid[80];
		if (OBJ_obj2txt(oid, sizeof(oid), X509_EXTENSION_get_object(X509_get_ext(x, i)), 1) >
			    0 &&
		    cvm_str_startswith(oid, AMD_OID_PREFIX))
			return true;
	}
	return false;
}

static int sort_cert(X509 *x, void *ctx, struct cvm_err *err)
{
	struct cvm_snp_certs *c = ctx;
	X509 **slot;
	const char *what;
	/* Self-issued: the root; AMD extensions: the leaf; anything else: the intermediate. */
	if (X509_NAME_cmp(X509_get_subject_name(x), X509_get_issuer_name(x)) == 0) {
		slot = &c->ark;
		what = "ARK";
	} else if (has_amd_ext(x)) {
		slot = &c->vek;
		what = "VCEK/VLEK";
	} else {
		slot = &c->ask;
		what = "ASK/ASVK";
	}
	if (*slot) {
		if (X509_cmp(*slot, x) == 0)
			return 0;
		return cvm_err_badparam(err, "certificates: more than one %s offered", what);
	}
	if (!X509_up_ref(x))
		return cvm_err_nomem(err);
	*slot = x;
	return 0;
}

int cvm_snp_certs_add(struct cvm_snp_certs *c, const uint8_t *buf, size_t len,
		      struct cvm_err *err)
{
	return cvm_attest_x509_each(buf, len, sort_cert, c, err);
}

int cvm_snp_certs_add_file(struct cvm_snp_certs *c, const char *path, struct cvm_err *err)
{
	_cleanup_free_ uint8_t *buf = NULL;
	size_t len = 0;
	int rc = cvm_file_read(path, CERT_FILE_MAX, &buf, &len, err);
	if (rc < 0)
		return rc;
	rc = cvm_snp_certs_add(c, buf, len, err);
	if (rc < 0)
		return cvm_err_prefix(err, "%s", path);
	return 0;
}

/* GHCB spec 56421, "SNP Extended Guest Request": certificate table GUIDs, stored in RFC 4122
 * (string) byte order as AMD's sev-tool, the Linux host tools and go-sev-guest do. */
static const struct {
	const char *name;
	const char *guid;
} table_guids[] = {
	{ "VCEK", "63da758d-e664-4564-adc5-f4b93be8accd" },
	{ "VLEK", "a8074bc2-a25a-483e-aae6-39c045a0b8a1" },
	{ "ASK", "4ab7b379-bbac-4fe4-a02f-05aef327c782" },
	{ "ARK", "c0b406a4-a803-4952-9743-3fb6014cd0ae" },
};

static void guid_format(const uint8_t g[16], char out[37])
{
	static const char hexd[] = "0123456789abcdef";
	size_t o = 0;
	for (int i = 0; i < 16; i++) {
		if (i == 4 || i == 6 || i == 8 || i == 10)
			out[o++] = '-';
		out[o++] = hexd[g[i] >> 4];
		out[o++] = hexd[g[i] & 15];
	}
	out[o] = '\0';
}

#define CERT_TABLE_ENTRY 24
#define CERT_TABLE_MAX_ENTRIES 64

int cvm_snp_certs_from_table(struct cvm_snp_certs *c, const uint8_t *buf, size_t len,
			     struct cvm_err *err)
{
	if (!buf)
		return cvm_err_badparam(err, "snp.certtable: missing");
	size_t i;
	for (i = 0;; i++) {
		if (i >= CERT_TABLE_MAX_ENTRIES)
			return cvm_err_badparam(err, "snp.certtable: more than %d entries",
						CERT_TABLE_MAX_ENTRIES);
		if (len / CERT_TABLE_ENTRY <= i)
			return cvm_err_badparam(err, "snp.certtable: no terminating zero entry");
		const uint8_t *e = buf + i * CERT_TABLE_ENTRY;
		static const uint8_t zero[CERT_TABLE_ENTRY];
		if (memcmp(e, zero, sizeof(zero)) == 0)
			break;
		uint32_t off = cvm_le32(e + 16), l = cvm_le32(e + 20);
		if (off > len || l > len - off || l == 0)
			return cvm_err_badparam(err,
						"snp.certtable[%zu]: offset %u length %u outside %zu bytes",
						i, off, l, len);
		if (off < (i + 1) * CERT_TABLE_ENTRY)
			return cvm_err_badparam(err, "snp.certtable[%zu]: data overlaps the table",
						i);
		char guid[37];
		guid_format(e, guid);
		size_t k;
		for (k = 0; k < CVM_ARRAY_SIZE(table_guids); k++)
			if (strcmp(guid, table_guids[k].guid) == 0)
				break;
		if (k == CVM_ARRAY_SIZE(table_guids))
			continue;
		/* Hosts pad entries: the DER length decides where the certificate ends. */
		const uint8_t *d = buf + off;
		size_t dl = l;
		if (dl >= 4 && d[0] == 0x30 && d[1] == 0x82) {
			size_t inner = ((size_t)d[2] << 8 | d[3]) + 4;
			if (inner <= dl)
				dl = inner;
		}
		struct cvm_snp_certs one = { 0 };
		int rc = cvm_attest_x509_each(d, dl, sort_cert, &one, err);
		if (rc < 0) {
			cvm_snp_certs_clear(&one);
			return cvm_err_prefix(err, "snp.certtable.%s", table_guids[k].name);
		}
		X509 *x = one.vek ? one.vek : one.ask ? one.ask : one.ark;
		X509 **slot = k <= 1 ? &c->vek : k == 2 ? &c->ask : &c->ark;
		if (!*slot && X509_up_ref(x))
			*slot = x;
		cvm_snp_certs_clear(&one);
	}
	return 0;
}

/* ---- KDS-layout directory ---------------------------------------------------------------- */

char *cvm_snp_kds_vcek_path(const struct cvm_snp_report *r, enum cvm_snp_product p)
{
	struct cvm_snp_tcb t;
	cvm_snp_tcb_decode(r->reported_tcb, p, &t);
	bool turin = p == CVM_SNP_PRODUCT_TURIN;
	_cleanup_free_ char *hw = cvm_hex_encode(r->chip_id, turin ? 8 : 64);
	if (!hw)
		return NULL;
	if (turin)
		return cvm_asprintf("vcek/v1/%s/%s?fmcSPL=%u&blSPL=%u&teeSPL=%u&snpSPL=%u&ucodeSPL=%u",
				    cvm_snp_product_name(p), hw, t.fmc, t.bl, t.tee, t.snp,
				    t.ucode);
	return cvm_asprintf("vcek/v1/%s/%s?blSPL=%u&teeSPL=%u&snpSPL=%u&ucodeSPL=%u",
			    cvm_snp_product_name(p), hw, t.bl, t.tee, t.snp, t.ucode);
}

static int kds_try(struct cvm_snp_certs *c, const char *dir, const struct cvm_snp_report *r,
		   enum cvm_snp_product p, struct cvm_err *err)
{
	bool vlek = cvm_snp_report_signer(r) == CVM_SNP_SIGNER_VLEK;
	if (!c->vek) {
		if (vlek)
			return cvm_err_set(err, ENOENT, "NotFound",
					   "snp.certs: a VLEK must be offered (KDS dirs hold VCEKs)");
		_cleanup_free_ char *rel = cvm_snp_kds_vcek_path(r, p);
		_cleanup_free_ char *path = rel ? cvm_path_join(dir, rel) : NULL;
		if (!path)
			return cvm_err_nomem(err);
		int rc = cvm_snp_certs_add_file(c, path, err);
		if (rc < 0)
			return rc;
	}
	if (!c->ask || !c->ark) {
		_cleanup_free_ char *rel = cvm_asprintf("%s/v1/%s/cert_chain", vlek ? "vlek" : "vcek",
							cvm_snp_product_name(p));
		_cleanup_free_ char *path = rel ? cvm_path_join(dir, rel) : NULL;
		if (!path)
			return cvm_err_nomem(err);
		struct cvm_err e2 = { 0 };
		/* The chain is optional here: the trusted roots supply ASK/ARK. */
		(void)cvm_snp_certs_add_file(c, path, &e2);
	}
	return 0;
}

int cvm_snp_certs_from_kds_dir(struct cvm_snp_certs *c, const char *dir,
			       const struct cvm_snp_report *r, enum cvm_snp_product p,
			       struct cvm_err *err)
{
	if (p == CVM_SNP_PRODUCT_UNKNOWN)
		p = cvm_snp_report_product(r);
	if (p != CVM_SNP_PRODUCT_UNKNOWN)
		return kds_try(c, dir, r, p, err);
	static const enum cvm_snp_product order[] = { CVM_SNP_PRODUCT_MILAN, CVM_SNP_PRODUCT_GENOA,
						      CVM_SNP_PRODUCT_TURIN };
	int rc = -ENOENT;
	for (size_t i = 0; i < CVM_ARRAY_SIZE(order); i++) {
		cvm_err_clear(err);
		rc = kds_try(c, dir, r, order[i], err);
		if (rc != -ENOENT)
			return rc;
	}
	return rc;
}
