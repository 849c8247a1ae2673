/* SPDX-License-Identifier: Apache-2.0 */
/* TEE emulator: an AMD-shaped certificate chain with our own keys and SEV-SNP reports signed
 * by its VCEK in the exact hardware layout, so the real parsers and verifiers run on machines
 * without SEV-SNP. Nothing here is trusted unless the verifier is configured with the emulator
 * ARK's fingerprint (cvm_attest_roots_add_emulator). */
#include <openssl/ec.h>
#include <openssl/err.h>
#include <openssl/pem.h>
#include <openssl/rsa.h>
#include <openssl/x509v3.h>
#include <string.h>

#include "attest-internal.h"

#define EMU_ORG "OpenCVM TEE Emulator"
#define EMU_FILE_MAX (64 * 1024)

static int write_file(const char *dir, const char *name, const void *data, size_t len, int mode,
		      struct cvm_err *err)
{
	_cleanup_free_ char *path = cvm_path_join(dir, name);
	if (!path)
		return cvm_err_nomem(err);
	return cvm_file_write_atomic(path, data, len, mode, err);
}

static X509_NAME *emu_name(const char *cn)
{
	X509_NAME *n = X509_NAME_new();
	if (!n)
		return NULL;
	/* Same attribute order as AMD's certificates. */
	if (!X509_NAME_add_entry_by_txt(n, "OU", MBSTRING_ASC, (const unsigned char *)"Engineering",
					-1, -1, 0) ||
	    !X509_NAME_add_entry_by_txt(n, "C", MBSTRING_ASC, (const unsigned char *)"US", -1, -1, 0) ||
	    !X509_NAME_add_entry_by_txt(n, "L", MBSTRING_ASC, (const unsigned char *)"Santa Clara", -1,
					-1, 0) ||
	    !X509_NAME_add_entry_by_txt(n, "ST", MBSTRING_ASC, (const unsigned char *)"CA", -1, -1, 0) ||
	    !X509_NAME_add_entry_by_txt(n, "O", MBSTRING_ASC, (const unsigned char *)EMU_ORG, -1, -1,
					0) ||
	    !X509_NAME_add_entry_by_txt(n, "CN", MBSTRING_ASC, (const unsigned char *)cn, -1, -1, 0)) {
		X509_NAME_free(n);
		return NULL;
	}
	return n;
}

static int add_ext_nid(X509 *x, X509 *issuer, int nid, const char *value)
{
	X509V3_CTX ctx;
	X509V3_set_ctx(&ctx, issuer, x, NULL, NULL, 0);
	X509_EXTENSION *e = X509V3_EXT_conf_nid(NULL, &ctx, nid, value);
	if (!e)
		return -1;
	int ok = X509_add_ext(x, e, -1);
	X509_EXTENSION_free(e);
	return ok ? 0 : -1;
}

/* An AMD extension whose extnValue contents are the given DER bytes. */
static int add_amd_ext(X509 *x, const char *oid, const uint8_t *der, size_t len)
{
	ASN1_OBJECT *obj = OBJ_txt2obj(oid, 1);
	ASN1_OCTET_STRING *os = ASN1_OCTET_STRING_new();
	int rc = -1;
	if (obj && os && ASN1_OCTET_STRING_set(os, der, (int)len)) {
		X509_EXTENSION *e = X509_EXTENSION_create_by_OBJ(NULL, obj, 0, os);
		if (e && X509_add_ext(x, e, -1))
			rc = 0;
		X509_EXTENSION_free(e);
	}
	ASN1_OBJECT_free(obj);
	ASN1_OCTET_STRING_free(os);
	return rc;
}

static int add_amd_int(X509 *x, const char *oid, uint8_t v)
{
	/* DER INTEGER: values >= 0x80 need a leading zero, like AMD's ucodeSPL 02 02 00 d9. */
	uint8_t der[4] = { 0x02, 1, v, 0 };
	size_t len = 3;
	if (v >= 0x80) {
		der[1] = 2;
		der[2] = 0;
		der[3] = v;
		len = 4;
	}
	return add_amd_ext(x, oid, der, len);
}

/* Sign with RSASSA-PSS SHA-384, MGF1-SHA-384, salt 48, the way AMD signs ARK/ASK/VCEK. */
static int sign_pss(X509 *x, EVP_PKEY *key)
{
	EVP_MD_CTX *md = EVP_MD_CTX_new();
	EVP_PKEY_CTX *pctx = NULL;
	int rc = -1;
	if (md && EVP_DigestSignInit(md, &pctx, EVP_sha384(), NULL, key) == 1 &&
	    EVP_PKEY_CTX_set_rsa_padding(pctx, RSA_PKCS1_PSS_PADDING) == 1 &&
	    EVP_PKEY_CTX_set_rsa_pss_saltlen(pctx, 48) == 1 &&
	    EVP_PKEY_CTX_set_rsa_mgf1_md(pctx, EVP_sha384()) == 1 && X509_sign_ctx(x, md) > 0)
		rc = 0;
	EVP_MD_CTX_free(md);
	return rc;
}

static X509 *make_cert(const char *cn, X509 *issuer, EVP_PKEY *pub, EVP_PKEY *signer,
		       int64_t days, bool ca, long serial)
{
	X509 *x = X509_new();
	X509_NAME *name = emu_name(cn);
	bool ok = x && name && X509_set_version(x, 2) &&
		  ASN1_INTEGER_set(X509_get_serialNumber(x), serial) &&
		  X509_set_subject_name(x, name) &&
		  X509_set_issuer_name(x, issuer ? X509_get_subject_name(issuer) : name) &&
		  X509_gmtime_adj(X509_getm_notBefore(x), -3600) &&
		  X509_time_adj_ex(X509_getm_notAfter(x), (int)days, 0, NULL) &&
		  X509_set_pubkey(x, pub);
	X509_NAME_free(name);
	if (ok && ca)
		ok = add_ext_nid(x, issuer ? issuer : x, NID_basic_constraints,
				 issuer ? "critical,CA:TRUE,pathlen:0" : "critical,CA:TRUE") == 0 &&
		     add_ext_nid(x, issuer ? issuer : x, NID_key_usage,
				 "critical,keyCertSign,cRLSign") == 0;
	if (!ok) {
		X509_free(x);
		return NULL;
	}
	return x;
}

static enum cvm_snp_product emu_product(const struct cvm_tee_emu_params *p)
{
	return p->product == CVM_SNP_PRODUCT_UNKNOWN ? CVM_SNP_PRODUCT_GENOA : p->product;
}

static int add_vcek_exts(X509 *x, enum cvm_snp_product prod, const struct cvm_tee_emu_params *p)
{
	bool turin = prod == CVM_SNP_PRODUCT_TURIN;
	const char *pname = cvm_snp_product_name(prod);
	uint8_t ia5[32];
	size_t nl = strlen(pname);
	ia5[0] = 0x16;
	ia5[1] = (uint8_t)nl;
	memcpy(ia5 + 2, pname, nl);
	if (add_amd_int(x, "1.3.6.1.4.1.3704.1.1", turin ? 1 : 0) ||
	    add_amd_ext(x, "1.3.6.1.4.1.3704.1.2", ia5, nl + 2) ||
	    add_amd_int(x, "1.3.6.1.4.1.3704.1.3.1", p->tcb.bl) ||
	    add_amd_int(x, "1.3.6.1.4.1.3704.1.3.2", p->tcb.tee) ||
	    add_amd_int(x, "1.3.6.1.4.1.3704.1.3.3", p->tcb.snp) ||
	    add_amd_int(x, "1.3.6.1.4.1.3704.1.3.4", 0) ||
	    add_amd_int(x, "1.3.6.1.4.1.3704.1.3.5", 0) ||
	    add_amd_int(x, "1.3.6.1.4.1.3704.1.3.6", 0) ||
	    add_amd_int(x, "1.3.6.1.4.1.3704.1.3.7", 0) ||
	    add_amd_int(x, "1.3.6.1.4.1.3704.1.3.8", p->tcb.ucode))
		return -1;
	if (turin && add_amd_int(x, "1.3.6.1.4.1.3704.1.3.9", p->tcb.fmc))
		return -1;
	/* hwID as raw bytes, as AMD's key distribution service issues it. */
	return add_amd_ext(x, "1.3.6.1.4.1.3704.1.4", p->chip_id, turin ? 8 : 64);
}

static int pem_of(X509 *x, struct cvm_buf *out, struct cvm_err *err)
{
	BIO *b = BIO_new(BIO_s_mem());
	char *data = NULL;
	long n;
	if (!b || !PEM_write_bio_X509(b, x) || (n = BIO_get_mem_data(b, &data)) <= 0 ||
	    cvm_buf_append(out, data, (size_t)n) < 0) {
		BIO_free(b);
		return cvm_err_openssl(err, EIO, "emulator: PEM encoding");
	}
	BIO_free(b);
	return 0;
}

static int write_key(const char *dir, const char *name, EVP_PKEY *k, struct cvm_err *err)
{
	BIO *b = BIO_new(BIO_s_mem());
	char *data = NULL;
	long n;
	int rc;
	if (!b || !PEM_write_bio_PrivateKey(b, k, NULL, NULL, 0, NULL, NULL) ||
	    (n = BIO_get_mem_data(b, &data)) <= 0)
		rc = cvm_err_openssl(err, EIO, "emulator: key encoding");
	else
		rc = write_file(dir, name, data, (size_t)n, 0600, err);
	/* The memory BIO held the private key: wipe before freeing. */
	if (b && data && (n = BIO_get_mem_data(b, &data)) > 0)
		OPENSSL_cleanse(data, (size_t)n);
	BIO_free(b);
	return rc;
}

static int write_platform(const char *dir, enum cvm_snp_product prod,
			  const struct cvm_tee_emu_params *p, struct cvm_err *err)
{
	_cleanup_free_ char *chip = cvm_hex_encode(p->chip_id, 64);
	json_t *j = chip ? json_pack("{s:s, s:s, s:{s:i, s:i, s:i, s:i, s:i}}", "product",
				     cvm_snp_product_name(prod), "chip_id", chip, "tcb", "fmc",
				     p->tcb.fmc, "bl", p->tcb.bl, "tee", p->tcb.tee, "snp", p->tcb.snp,
				     "ucode", p->tcb.ucode)
			 : NULL;
	_cleanup_free_ char *text = j ? json_dumps(j, JSON_INDENT(2) | JSON_SORT_KEYS) : NULL;
	json_decref(j);
	if (!text)
		return cvm_err_nomem(err);
	return write_file(dir, "platform.json", text, strlen(text), 0644, err);
}

static int write_kds_layout(const char *dir, enum cvm_snp_product prod,
			    const struct cvm_tee_emu_params *p, X509 *vcek, struct cvm_buf *chain,
			    struct cvm_err *err)
{
	struct cvm_snp_report r = { .reported_tcb = cvm_snp_tcb_encode(&p->tcb, prod) };
	memcpy(r.chip_id, p->chip_id, 64);
	_cleanup_free_ char *rel = cvm_snp_kds_vcek_path(&r, prod);
	_cleanup_free_ char *sub = cvm_asprintf("vcek/v1/%s", cvm_snp_product_name(prod));
	_cleanup_free_ char *subdir = sub ? cvm_path_join(dir, sub) : NULL;
	if (!rel || !subdir)
		return cvm_err_nomem(err);
	int rc = cvm_mkdir_p(subdir, 0755, err);
	if (rc < 0)
		return rc;
	unsigned char *der = NULL;
	int dl = i2d_X509(vcek, &der);
	if (dl <= 0)
		return cvm_err_openssl(err, EIO, "emulator: VCEK DER");
	rc = write_file(dir, rel, der, (size_t)dl, 0644, err);
	OPENSSL_free(der);
	if (rc < 0)
		return rc;
	_cleanup_free_ char *cc = cvm_path_join(sub, "cert_chain");
	return cc ? write_file(dir, cc, chain->data, chain->len, 0644, err) : cvm_err_nomem(err);
}

int cvm_tee_emu_init(const char *dir, const struct cvm_tee_emu_params *params,
		     char fingerprint_hex[65], struct cvm_err *err)
{
	if (!dir || !params)
		return cvm_err_badparam(err, "emulator: dir and params are required");
	enum cvm_snp_product prod = emu_product(params);
	int rc = cvm_mkdir_p(dir, 0700, err);
	if (rc < 0)
		return rc;
	EVP_PKEY *ark_key = EVP_RSA_gen(4096);
	EVP_PKEY *ask_key = ark_key ? EVP_RSA_gen(4096) : NULL;
	EVP_PKEY *vcek_key = ask_key ? EVP_EC_gen("P-384") : NULL;
	X509 *ark = NULL, *ask = NULL, *vcek = NULL;
	struct cvm_buf ark_pem = { 0 }, ask_pem = { 0 }, vcek_pem = { 0 }, chain = { 0 };
	char cn[64];
	if (!vcek_key) {
		rc = cvm_err_openssl(err, EIO, "emulator: key generation");
		goto out;
	}
	snprintf(cn, sizeof(cn), "ARK-%s", cvm_snp_product_name(prod));
	ark = make_cert(cn, NULL, ark_key, ark_key, 25 * 365, true, 1);
	if (!ark || sign_pss(ark, ark_key) < 0) {
		rc = cvm_err_openssl(err, EIO, "emulator: ARK");
		goto out;
	}
	snprintf(cn, sizeof(cn), "SEV-%s", cvm_snp_product_name(prod));
	ask = make_cert(cn, ark, ask_key, ark_key, 25 * 365, true, 2);
	if (!ask || sign_pss(ask, ark_key) < 0) {
		rc = cvm_err_openssl(err, EIO, "emulator: ASK");
		goto out;
	}
	vcek = make_cert("SEV-VCEK", ask, vcek_key, ask_key, 7 * 365, false, 0);
	if (!vcek || add_vcek_exts(vcek, prod, params) < 0 || sign_pss(vcek, ask_key) < 0) {
		rc = cvm_err_openssl(err, EIO, "emulator: VCEK");
		goto out;
	}
	if ((rc = pem_of(ark, &ark_pem, err)) < 0 || (rc = pem_of(ask, &ask_pem, err)) < 0 ||
	    (rc = pem_of(vcek, &vcek_pem, err)) < 0 || (rc = pem_of(ask, &chain, err)) < 0 ||
	    (rc = pem_of(ark, &chain, err)) < 0)
		goto out;
	/* The ARK key stays to sign CRLs, as AMD's key distribution service does. */
	if ((rc = write_key(dir, "vcek-key.pem", vcek_key, err)) < 0 ||
	    (rc = write_key(dir, "ark-key.pem", ark_key, err)) < 0 ||
	    (rc = write_file(dir, "ark.pem", ark_pem.data, ark_pem.len, 0644, err)) < 0 ||
	    (rc = write_file(dir, "ask.pem", ask_pem.data, ask_pem.len, 0644, err)) < 0 ||
	    (rc = write_file(dir, "vcek.pem", vcek_pem.data, vcek_pem.len, 0644, err)) < 0 ||
	    (rc = write_platform(dir, prod, params, err)) < 0 ||
	    (rc = write_kds_layout(dir, prod, params, vcek, &chain, err)) < 0)
		goto out;
	rc = fingerprint_hex ? cvm_attest_x509_fingerprint(ark, fingerprint_hex, err) : 0;
	if (rc == 0)
		cvm_log_info("tee_emu_init", "dir=%s product=%s", dir, cvm_snp_product_name(prod));
out:
	cvm_buf_free(&ark_pem);
	cvm_buf_free(&ask_pem);
	cvm_buf_free(&vcek_pem);
	cvm_buf_free(&chain);
	X509_free(ark);
	X509_free(ask);
	X509_free(vcek);
	EVP_PKEY_free(ark_key);
	EVP_PKEY_free(ask_key);
	EVP_PKEY_free(vcek_key);
	return rc;
}

static int read_dir_file(const char *dir, const char *name, uint8_t **out, size_t *len,
			 struct cvm_err *err)
{
	_cleanup_free_ char *path = cvm_path_join(dir, name);
	if (!path)
		return cvm_err_nomem(err);
	return cvm_file_read(path, EMU_FILE_MAX, out, len, err);
}

int cvm_tee_emu_fingerprint(const char *dir, char fingerprint_hex[65], struct cvm_err *err)
{
	_cleanup_free_ uint8_t *pem = NULL;
	size_t len = 0;
	int rc = read_dir_file(dir, "ark.pem", &pem, &len, err);
	if (rc < 0)
		return rc;
	BIO *b = BIO_new_mem_buf(pem, (int)len);
	X509 *x = b ? PEM_read_bio_X509(b, NULL, NULL, NULL) : NULL;
	BIO_free(b);
	if (!x) {
		ERR_clear_error();
		return cvm_err_badparam(err, "emulator: %s/ark.pem is not a certificate", dir);
	}
	rc = cvm_attest_x509_fingerprint(x, fingerprint_hex, err);
	X509_free(x);
	return rc;
}

struct emu_platform {
	enum cvm_snp_product product;
	struct cvm_snp_tcb tcb;
	uint8_t chip_id[64];
};

static int tcb_member(json_t *tcb, const char *k, uint8_t *out, struct cvm_err *err)
{
	json_t *v = json_object_get(tcb, k);
	if (!json_is_integer(v) || json_integer_value(v) < 0 || json_integer_value(v) > 255)
		return cvm_err_badparam(err, "emulator platform.json: tcb.%s must be 0..255", k);
	*out = (uint8_t)json_integer_value(v);
	return 0;
}

static int load_platform(const char *dir, struct emu_platform *pl, struct cvm_err *err)
{
	_cleanup_free_ uint8_t *text = NULL;
	size_t len = 0;
	int rc = read_dir_file(dir, "platform.json", &text, &len, err);
	if (rc < 0)
		return rc;
	json_error_t je;
	json_t *j = json_loadb((const char *)text, len, JSON_REJECT_DUPLICATES, &je);
	if (!j)
		return cvm_err_badparam(err, "emulator platform.json: %s (line %d)", je.text, je.line);
	json_t *tcb = json_object_get(j, "tcb");
	const char *chip = json_string_value(json_object_get(j, "chip_id"));
	pl->product = cvm_snp_product_from_name(json_string_value(json_object_get(j, "product")));
	if (pl->product == CVM_SNP_PRODUCT_UNKNOWN)
		rc = cvm_err_badparam(err, "emulator platform.json: unknown product");
	else if (!chip)
		rc = cvm_err_badparam(err, "emulator platform.json: chip_id missing");
	else
		rc = cvm_hex_decode_fixed(chip, pl->chip_id, 64, "chip_id", err);
	if (rc == 0)
		rc = tcb_member(tcb, "fmc", &pl->tcb.fmc, err);
	if (rc == 0)
		rc = tcb_member(tcb, "bl", &pl->tcb.bl, err);
	if (rc == 0)
		rc = tcb_member(tcb, "tee", &pl->tcb.tee, err);
	if (rc == 0)
		rc = tcb_member(tcb, "snp", &pl->tcb.snp, err);
	if (rc == 0)
		rc = tcb_member(tcb, "ucode", &pl->tcb.ucode, err);
	json_decref(j);
	return rc;
}

static EVP_PKEY *load_key(const char *dir, const char *name, int type, struct cvm_err *err)
{
	uint8_t *pem = NULL;
	size_t len = 0;
	if (read_dir_file(dir, name, &pem, &len, err) < 0)
		return NULL;
	BIO *b = BIO_new_mem_buf(pem, (int)len);
	EVP_PKEY *k = b ? PEM_read_bio_PrivateKey(b, NULL, NULL, NULL) : NULL;
	BIO_free(b);
	cvm_free_secure(pem, len);
	if (!k || EVP_PKEY_get_base_id(k) != type) {
		EVP_PKEY_free(k);
		ERR_clear_error();
		cvm_err_badparam(err, "emulator: %s/%s is not the expected private key", dir, name);
		return NULL;
	}
	return k;
}

/* ECDSA P-384 / SHA-384 over bytes 0..0x29F; r and s stored little-endian, 72 bytes each. */
static int sign_report(uint8_t *rep, EVP_PKEY *key, struct cvm_err *err)
{
	EVP_MD_CTX *md = EVP_MD_CTX_new();
	uint8_t der[160];
	size_t dl = sizeof(der);
	int rc = 0;
	if (!md || EVP_DigestSignInit(md, NULL, EVP_sha384(), NULL, key) != 1 ||
	    EVP_DigestSign(md, der, &dl, rep, CVM_SNP_SIGNED_SIZE) != 1)
		rc = cvm_err_openssl(err, EIO, "emulator: report signature");
	EVP_MD_CTX_free(md);
	if (rc < 0)
		return rc;
	const unsigned char *p = der;
	ECDSA_SIG *sig = d2i_ECDSA_SIG(NULL, &p, (long)dl);
	const BIGNUM *r = NULL, *s = NULL;
	if (sig)
		ECDSA_SIG_get0(sig, &r, &s);
	if (!sig || BN_bn2lebinpad(r, rep + 0x2A0, 72) != 72 ||
	    BN_bn2lebinpad(s, rep + 0x2E8, 72) != 72)
		rc = cvm_err_openssl(err, EIO, "emulator: signature encoding");
	ECDSA_SIG_free(sig);
	return rc;
}

int cvm_tee_emu_snp_report(const char *dir, const struct cvm_tee_emu_report_in *in,
			   uint8_t out[CVM_SNP_REPORT_SIZE], struct cvm_err *err)
{
	if (!dir || !in)
		return cvm_err_badparam(err, "emulator: dir and report input are required");
	if (in->vmpl > 3)
		return cvm_err_badparam(err, "emulator: vmpl must be 0..3");
	uint64_t policy = in->policy ? in->policy : 0x30000;
	if (!(policy & CVM_SNP_POLICY_RESERVED_1) || (policy >> 26))
		return cvm_err_badparam(err, "emulator: policy needs bit 17 set and bits 26..63 clear");
	struct emu_platform pl;
	int rc = load_platform(dir, &pl, err);
	if (rc < 0)
		return rc;
	EVP_PKEY *key = load_key(dir, "vcek-key.pem", EVP_PKEY_EC, err);
	if (!key)
		return -EINVAL;
	struct cvm_snp_report r = { 0 };
	bool turin = pl.product == CVM_SNP_PRODUCT_TURIN;
	r.version = turin ? 5 : 3;
	r.guest_svn = in->guest_svn;
	r.policy = policy;
	memcpy(r.family_id, in->family_id, 16);
	memcpy(r.image_id, in->image_id, 16);
	r.vmpl = in->vmpl;
	r.signature_algo = 1;
	r.current_tcb = r.reported_tcb = r.committed_tcb = r.launch_tcb =
		cvm_snp_tcb_encode(&pl.tcb, pl.product);
	r.platform_info = CVM_SNP_PLATFORM_SMT_EN | CVM_SNP_PLATFORM_ECC_EN;
	r.flags = CVM_SNP_SIGNER_VCEK << 2;
	memcpy(r.report_data, in->report_data, 64);
	memcpy(r.measurement, in->measurement, 48);
	memcpy(r.host_data, in->host_data, 32);
	rc = cvm_random(r.report_id, sizeof(r.report_id), err);
	r.cpuid_fam_id = turin ? 0x1A : 0x19;
	r.cpuid_mod_id = pl.product == CVM_SNP_PRODUCT_MILAN ? 0x01 : turin ? 0x02 : 0x11;
	r.cpuid_step = 1;
	memcpy(r.chip_id, pl.chip_id, turin ? 8 : 64);
	r.current_major = r.committed_major = 1;
	r.current_minor = r.committed_minor = 55;
	if (rc == 0) {
		cvm_snp_report_serialize(&r, out);
		rc = sign_report(out, key, err);
	}
	EVP_PKEY_free(key);
	return rc;
}

static X509 *read_cert(const char *dir, const char *name, struct cvm_err *err)
{
	_cleanup_free_ uint8_t *pem = NULL;
	size_t len = 0;
	if (read_dir_file(dir, name, &pem, &len, err) < 0)
		return NULL;
	BIO *b = BIO_new_mem_buf(pem, (int)len);
	X509 *x = b ? PEM_read_bio_X509(b, NULL, NULL, NULL) : NULL;
	BIO_free(b);
	if (!x) {
		ERR_clear_error();
		cvm_err_badparam(err, "emulator: %s/%s is not a certificate", dir, name);
	}
	return x;
}

int cvm_tee_emu_crl(const char *dir, bool revoke_vcek, struct cvm_err *err)
{
	EVP_PKEY *ark_key = load_key(dir, "ark-key.pem", EVP_PKEY_RSA, err);
	X509 *ark = ark_key ? read_cert(dir, "ark.pem", err) : NULL;
	X509 *vcek = ark ? read_cert(dir, "vcek.pem", err) : NULL;
	X509_CRL *crl = X509_CRL_new();
	X509_REVOKED *rev = NULL;
	EVP_MD_CTX *md = EVP_MD_CTX_new();
	EVP_PKEY_CTX *pctx = NULL;
	BIO *b = NULL;
	int rc = vcek ? 0 : -EINVAL;
	if (rc == 0 && (!crl || !md))
		rc = cvm_err_nomem(err);
	if (rc == 0 && (!X509_CRL_set_version(crl, 1) ||
			!X509_CRL_set_issuer_name(crl, X509_get_subject_name(ark))))
		rc = cvm_err_openssl(err, EIO, "emulator: CRL issuer");
	if (rc == 0) {
		ASN1_TIME *last = ASN1_TIME_new(), *next = ASN1_TIME_new();
		bool ok = last && next && X509_gmtime_adj(last, -60) &&
			  X509_gmtime_adj(next, 7 * 86400) && X509_CRL_set1_lastUpdate(crl, last) &&
			  X509_CRL_set1_nextUpdate(crl, next);
		ASN1_TIME_free(last);
		ASN1_TIME_free(next);
		if (!ok)
			rc = cvm_err_openssl(err, EIO, "emulator: CRL dates");
	}
	if (rc == 0 && revoke_vcek) {
		ASN1_TIME *when = ASN1_TIME_new();
		rev = X509_REVOKED_new();
		bool ok = when && rev && X509_gmtime_adj(when, -60) &&
			  X509_REVOKED_set_serialNumber(rev, X509_get_serialNumber(vcek)) &&
			  X509_REVOKED_set_revocationDate(rev, when) && X509_CRL_add0_revoked(crl, rev);
		ASN1_TIME_free(when);
		if (!ok)
			rc = cvm_err_openssl(err, EIO, "emulator: CRL entry");
		else
			rev = NULL;
	}
	/* Signed like AMD's CRLs: RSASSA-PSS SHA-384, MGF1-SHA-384, salt 48, by the ARK. */
	if (rc == 0 && (EVP_DigestSignInit(md, &pctx, EVP_sha384(), NULL, ark_key) != 1 ||
			EVP_PKEY_CTX_set_rsa_padding(pctx, RSA_PKCS1_PSS_PADDING) != 1 ||
			EVP_PKEY_CTX_set_rsa_pss_saltlen(pctx, 48) != 1 ||
			EVP_PKEY_CTX_set_rsa_mgf1_md(pctx, EVP_sha384()) != 1 ||
			!X509_CRL_sort(crl) || X509_CRL_sign_ctx(crl, md) <= 0))
		rc = cvm_err_openssl(err, EIO, "emulator: CRL signature");
	char *data = NULL;
	long n = 0;
	if (rc == 0 && (!(b = BIO_new(BIO_s_mem())) || !PEM_write_bio_X509_CRL(b, crl) ||
			(n = BIO_get_mem_data(b, &data)) <= 0))
		rc = cvm_err_openssl(err, EIO, "emulator: CRL encoding");
	if (rc == 0)
		rc = write_file(dir, "crl.pem", data, (size_t)n, 0644, err);
	BIO_free(b);
	X509_REVOKED_free(rev);
	EVP_MD_CTX_free(md);
	X509_CRL_free(crl);
	X509_free(vcek);
	X509_free(ark);
	EVP_PKEY_free(ark_key);
	return rc;
}
