/* SPDX-License-Identifier: Apache-2.0 */
/* SEV-SNP verification: trust anchors, the VEK -> ASK/ASVK -> ARK chain, the report signature
 * and the consistency checks between report and certificate (TCB, hwID, product, signer). */
#include <openssl/core_names.h>
#include <openssl/ec.h>
#include <openssl/err.h>
#include <openssl/pem.h>
#include <string.h>

#include "attest-internal.h"

#define ROOTS_MAX 64

struct root_entry {
	enum cvm_snp_product product;
	enum cvm_amd_cert_kind kind;
	X509 *cert;
	bool emulated;
};

struct cvm_attest_roots {
	struct root_entry e[ROOTS_MAX];
	size_t n;
};

struct cvm_snp_chain {
	X509 *vek;
	EVP_PKEY *vek_pub; /* borrowed from vek */
	/* Fetched once: per-report verification then skips OpenSSL's algorithm lookups. */
	EVP_MD *sha384;
	EVP_PKEY_CTX *verify_ctx; /* verify-initialized template, duplicated per report */
	struct cvm_snp_vek_ext ext;
	enum cvm_snp_product product;
	bool emulated;
};

static int load_one(X509 *x, void *ctx, struct cvm_err *err)
{
	X509 **out = ctx;
	if (*out)
		return cvm_err_badparam(err, "certificate: expected exactly one");
	if (!X509_up_ref(x))
		return cvm_err_nomem(err);
	*out = x;
	return 0;
}

static int cert_load(const uint8_t *buf, size_t len, X509 **out, struct cvm_err *err)
{
	*out = NULL;
	int rc = cvm_attest_x509_each(buf, len, load_one, out, err);
	if (rc < 0) {
		X509_free(*out);
		*out = NULL;
	}
	return rc;
}

int cvm_attest_roots_new_empty(struct cvm_attest_roots **out, struct cvm_err *err)
{
	*out = calloc(1, sizeof(**out));
	return *out ? 0 : cvm_err_nomem(err);
}

void cvm_attest_roots_free(struct cvm_attest_roots *r)
{
	if (!r)
		return;
	for (size_t i = 0; i < r->n; i++)
		X509_free(r->e[i].cert);
	free(r);
}

static const struct root_entry *roots_find(const struct cvm_attest_roots *r,
					   enum cvm_snp_product p, enum cvm_amd_cert_kind kind)
{
	for (size_t i = 0; i < r->n; i++)
		if (r->e[i].product == p && r->e[i].kind == kind)
			return &r->e[i];
	return NULL;
}

static const struct root_entry *roots_find_cert(const struct cvm_attest_roots *r, X509 *x,
						enum cvm_amd_cert_kind kind)
{
	for (size_t i = 0; i < r->n; i++)
		if (r->e[i].kind == kind && X509_cmp(r->e[i].cert, x) == 0)
			return &r->e[i];
	return NULL;
}

static int roots_push(struct cvm_attest_roots *r, enum cvm_snp_product p,
		      enum cvm_amd_cert_kind kind, X509 *x, bool emulated, struct cvm_err *err)
{
	if (r->n >= ROOTS_MAX)
		return cvm_err_badparam(err, "roots: more than %d certificates", ROOTS_MAX);
	if (!X509_up_ref(x))
		return cvm_err_nomem(err);
	r->e[r->n++] = (struct root_entry){ p, kind, x, emulated };
	return 0;
}

/* An intermediate's kind: ASVK subjects say VLEK ("SEV-VLEK-Milan"). */
static enum cvm_amd_cert_kind intermediate_kind(X509 *x)
{
	char cn[64];
	cvm_attest_x509_cn(x, cn, sizeof(cn));
	return strstr(cn, "VLEK") ? CVM_AMD_CERT_ASVK : CVM_AMD_CERT_ASK;
}

static int roots_add_x509(struct cvm_attest_roots *r, enum cvm_snp_product p, X509 *ark,
			  X509 *ask, const char *fingerprint_hex, bool emulated,
			  struct cvm_err *err)
{
	char fp[65];
	int rc = cvm_attest_x509_fingerprint(ark, fp, err);
	if (rc < 0)
		return rc;
	if (!fingerprint_hex || strlen(fingerprint_hex) != 64 ||
	    strcasecmp(fp, fingerprint_hex) != 0)
		return cvm_err_set(err, EBADMSG, "Unauthorized",
				   "roots.%s: ARK fingerprint %s does not match the pinned value",
				   cvm_snp_product_name(p), fp);
	EVP_PKEY *ark_pub = X509_get0_pubkey(ark);
	if (!ark_pub)
		return cvm_err_badparam(err, "roots.%s: ARK has no usable key",
					cvm_snp_product_name(p));
	rc = cvm_attest_verify_amd_sig(ark, ark_pub, "ARK self-signature", err);
	if (rc < 0)
		return rc;
	if (!roots_find_cert(r, ark, CVM_AMD_CERT_ARK)) {
		rc = roots_push(r, p, CVM_AMD_CERT_ARK, ark, emulated, err);
		if (rc < 0)
			return rc;
	}
	if (ask) {
		rc = cvm_attest_verify_amd_sig(ask, ark_pub, "ASK signature by ARK", err);
		if (rc < 0)
			return rc;
		rc = roots_push(r, p, intermediate_kind(ask), ask, emulated, err);
	}
	return rc;
}

int cvm_attest_roots_add(struct cvm_attest_roots *r, enum cvm_snp_product p, const uint8_t *ark,
			 size_t ark_len, const uint8_t *ask, size_t ask_len,
			 const char *fingerprint_hex, bool emulated, struct cvm_err *err)
{
	if (p == CVM_SNP_PRODUCT_UNKNOWN)
		return cvm_err_badparam(err, "roots: product must be Milan, Genoa or Turin");
	X509 *ark_x = NULL, *ask_x = NULL;
	int rc = cert_load(ark, ark_len, &ark_x, err);
	if (rc == 0 && ask)
		rc = cert_load(ask, ask_len, &ask_x, err);
	if (rc == 0)
		rc = roots_add_x509(r, p, ark_x, ask_x, fingerprint_hex, emulated, err);
	X509_free(ark_x);
	X509_free(ask_x);
	return rc;
}

int cvm_attest_roots_new_builtin(struct cvm_attest_roots **out, struct cvm_err *err)
{
	_cleanup_roots_ struct cvm_attest_roots *r = NULL;
	int rc = cvm_attest_roots_new_empty(&r, err);
	if (rc < 0)
		return rc;
	/* The table lists each product's ARK first, then its intermediates. */
	for (size_t i = 0; i < cvm_amd_builtin_count; i++) {
		const struct cvm_amd_builtin *b = &cvm_amd_builtin_certs[i];
		X509 *x = NULL;
		rc = cert_load((const uint8_t *)b->pem, strlen(b->pem), &x, err);
		if (rc < 0)
			return rc;
		char fp[65];
		rc = cvm_attest_x509_fingerprint(x, fp, err);
		if (rc == 0 && strcmp(fp, b->sha256_hex) != 0)
			rc = cvm_err_internal(err, "roots: built-in %s certificate %zu has an unexpected fingerprint",
					      cvm_snp_product_name(b->product), i);
		if (rc == 0 && b->kind == CVM_AMD_CERT_ARK)
			rc = roots_add_x509(r, b->product, x, NULL, b->sha256_hex, false, err);
		else if (rc == 0) {
			const struct root_entry *ark = roots_find(r, b->product, CVM_AMD_CERT_ARK);
			rc = ark ? cvm_attest_verify_amd_sig(x, X509_get0_pubkey(ark->cert),
							     "built-in intermediate", err)
				 : cvm_err_internal(err, "roots: built-in table order");
			if (rc == 0)
				rc = roots_push(r, b->product, b->kind, x, false, err);
		}
		X509_free(x);
		if (rc < 0)
			return rc;
	}
	*out = CVM_TAKE(r);
	return 0;
}

int cvm_attest_roots_add_emulator(struct cvm_attest_roots *r, const char *dir,
				  const char *fingerprint_hex, struct cvm_err *err)
{
	_cleanup_free_ char *ark_path = cvm_path_join(dir, "ark.pem");
	_cleanup_free_ char *ask_path = cvm_path_join(dir, "ask.pem");
	if (!ark_path || !ask_path)
		return cvm_err_nomem(err);
	_cleanup_free_ uint8_t *ark = NULL, *ask = NULL;
	size_t ark_len = 0, ask_len = 0;
	int rc = cvm_file_read(ark_path, 64 * 1024, &ark, &ark_len, err);
	if (rc == 0)
		rc = cvm_file_read(ask_path, 64 * 1024, &ask, &ask_len, err);
	if (rc < 0)
		return rc;
	X509 *ark_x = NULL;
	rc = cert_load(ark, ark_len, &ark_x, err);
	if (rc < 0)
		return rc;
	/* The emulator names its product in the ARK subject like AMD ("ARK-Genoa"). */
	char cn[64];
	cvm_attest_x509_cn(ark_x, cn, sizeof(cn));
	X509_free(ark_x);
	enum cvm_snp_product p =
		cvm_str_startswith(cn, "ARK-") ? cvm_snp_product_from_name(cn + 4)
					       : CVM_SNP_PRODUCT_UNKNOWN;
	return cvm_attest_roots_add(r, p, ark, ark_len, ask, ask_len, fingerprint_hex, true, err);
}

/* ---- chain ------------------------------------------------------------------------------- */

static int check_validity(X509 *x, int64_t now, const char *what, struct cvm_err *err)
{
	time_t t = (time_t)now;
	if (X509_cmp_time(X509_get0_notBefore(x), &t) >= 0)
		return cvm_err_set(err, EBADMSG, "Unauthorized", "%s: not yet valid", what);
	if (X509_cmp_time(X509_get0_notAfter(x), &t) <= 0)
		return cvm_err_set(err, EBADMSG, "Unauthorized", "%s: expired", what);
	return 0;
}

static int check_crl(X509_CRL *crl, X509 *ark, X509 *x, const char *what, struct cvm_err *err)
{
	if (X509_CRL_verify(crl, X509_get0_pubkey(ark)) != 1) {
		ERR_clear_error();
		return cvm_err_set(err, EBADMSG, "Unauthorized",
				   "crl: not signed by the chain's ARK");
	}
	/* AMD's CRL is issued by the ARK for certificates the ASK issued too, so entries are
	 * matched by serial number alone (as go-sev-guest does), not by issuer. */
	STACK_OF(X509_REVOKED) *revs = X509_CRL_get_REVOKED(crl);
	const ASN1_INTEGER *serial = X509_get0_serialNumber(x);
	for (int i = 0; i < sk_X509_REVOKED_num(revs); i++)
		if (ASN1_INTEGER_cmp(X509_REVOKED_get0_serialNumber(sk_X509_REVOKED_value(revs, i)),
				     serial) == 0)
			return cvm_err_set(err, EBADMSG, "Unauthorized", "%s: revoked by the CRL",
					   what);
	return 0;
}

void cvm_snp_chain_free(struct cvm_snp_chain *c)
{
	if (!c)
		return;
	X509_free(c->vek);
	EVP_MD_free(c->sha384);
	EVP_PKEY_CTX_free(c->verify_ctx);
	free(c);
}

enum cvm_snp_product cvm_snp_chain_product(const struct cvm_snp_chain *c)
{
	return c->product;
}

bool cvm_snp_chain_emulated(const struct cvm_snp_chain *c)
{
	return c->emulated;
}

/* The intermediate for this ARK: the offered one, or a configured one the ARK signed. */
static int pick_intermediate(const struct cvm_snp_certs *certs,
			     const struct cvm_attest_roots *roots, const struct root_entry *ark,
			     enum cvm_amd_cert_kind want, X509 **out, struct cvm_err *err)
{
	EVP_PKEY *ark_pub = X509_get0_pubkey(ark->cert);
	if (certs->ask) {
		if (intermediate_kind(certs->ask) != want)
			return cvm_err_set(err, EBADMSG, "Unauthorized",
					   "snp.chain.ask: a %s needs an %s intermediate",
					   want == CVM_AMD_CERT_ASVK ? "VLEK" : "VCEK",
					   want == CVM_AMD_CERT_ASVK ? "ASVK" : "ASK");
		*out = certs->ask;
		return cvm_attest_verify_amd_sig(certs->ask, ark_pub, "snp.chain.ask", err);
	}
	for (size_t i = 0; i < roots->n; i++) {
		const struct root_entry *e = &roots->e[i];
		if (e->kind != want || e->product != ark->product || e->emulated != ark->emulated)
			continue;
		struct cvm_err e2 = { 0 };
		if (cvm_attest_verify_amd_sig(e->cert, ark_pub, "snp.chain.ask", &e2) == 0) {
			*out = e->cert;
			return 0;
		}
	}
	return cvm_err_set(err, EBADMSG, "Unauthorized",
			   "snp.chain.ask: no %s for %s offered or configured",
			   want == CVM_AMD_CERT_ASVK ? "ASVK" : "ASK",
			   cvm_snp_product_name(ark->product));
}

static int try_chain(const struct cvm_snp_certs *certs, const struct cvm_attest_roots *roots,
		     const struct root_entry *ark, const struct cvm_snp_verify_opts *opts,
		     struct cvm_snp_chain *c, struct cvm_err *err)
{
	enum cvm_snp_product named = cvm_snp_product_from_name(c->ext.product_name);
	if (named != CVM_SNP_PRODUCT_UNKNOWN && named != ark->product)
		return cvm_err_set(err, EBADMSG, "Unauthorized",
				   "snp.chain: VEK product \"%s\" but the ARK is for %s",
				   c->ext.product_name, cvm_snp_product_name(ark->product));
	if (opts->product != CVM_SNP_PRODUCT_UNKNOWN && opts->product != ark->product)
		return cvm_err_set(err, EBADMSG, "Unauthorized",
				   "snp.chain: expected product %s, the chain is for %s",
				   cvm_snp_product_name(opts->product),
				   cvm_snp_product_name(ark->product));
	X509 *ask = NULL;
	int rc = pick_intermediate(certs, roots, ark,
				   c->ext.is_vlek ? CVM_AMD_CERT_ASVK : CVM_AMD_CERT_ASK, &ask, err);
	if (rc < 0)
		return rc;
	EVP_PKEY *ask_pub = X509_get0_pubkey(ask);
	if (!ask_pub)
		return cvm_err_badparam(err, "snp.chain.ask: no usable key");
	rc = cvm_attest_verify_amd_sig(certs->vek, ask_pub, "snp.chain.vek", err);
	if (rc < 0)
		return rc;
	int64_t now = opts->now ? opts->now : cvm_now();
	if ((rc = check_validity(ark->cert, now, "snp.chain.ark", err)) < 0 ||
	    (rc = check_validity(ask, now, "snp.chain.ask", err)) < 0 ||
	    (rc = check_validity(certs->vek, now, "snp.chain.vek", err)) < 0)
		return rc;
	if (opts->crl && ((rc = check_crl(opts->crl, ark->cert, ask, "snp.chain.ask", err)) < 0 ||
			  (rc = check_crl(opts->crl, ark->cert, certs->vek, "snp.chain.vek", err)) < 0))
		return rc;
	c->product = ark->product;
	c->emulated = ark->emulated;
	return 0;
}

int cvm_snp_chain_verify(const struct cvm_snp_certs *certs, const struct cvm_attest_roots *roots,
			 const struct cvm_snp_verify_opts *opts, struct cvm_snp_chain **out,
			 struct cvm_err *err)
{
	static const struct cvm_snp_verify_opts defaults = { 0 };
	if (!opts)
		opts = &defaults;
	if (!certs || !certs->vek)
		return cvm_err_badparam(err, "snp.certs: no VCEK or VLEK offered");
	if (!roots)
		return cvm_err_badparam(err, "snp.roots: no trust anchors configured");
	_cleanup_(cvm_snp_chain_freep) struct cvm_snp_chain *c = calloc(1, sizeof(*c));
	if (!c)
		return cvm_err_nomem(err);
	int rc = cvm_snp_vek_ext_from_x509(certs->vek, &c->ext, err);
	if (rc < 0)
		return rc;
	EVP_PKEY *pub = X509_get0_pubkey(certs->vek);
	if (!pub || EVP_PKEY_get_base_id(pub) != EVP_PKEY_EC || EVP_PKEY_get_bits(pub) != 384)
		return cvm_err_set(err, EBADMSG, "Unauthorized", "snp.chain.vek: key is not P-384");
	enum cvm_snp_product named = cvm_snp_product_from_name(c->ext.product_name);
	if (certs->ark) {
		/* An offered ARK must be one we trust. */
		const struct root_entry *ark = roots_find_cert(roots, certs->ark, CVM_AMD_CERT_ARK);
		if (!ark)
			return cvm_err_set(err, EBADMSG, "Unauthorized",
					   "snp.chain.ark: the offered ARK is not a trusted root");
		rc = try_chain(certs, roots, ark, opts, c, err);
	} else {
		/* Several trusted ARKs may serve a product (AMD's and an emulator's). */
		rc = cvm_err_set(err, EBADMSG, "Unauthorized",
				 "snp.chain.ark: no trusted ARK for product \"%s\"",
				 c->ext.product_name);
		for (size_t i = 0; i < roots->n && rc < 0; i++) {
			const struct root_entry *e = &roots->e[i];
			if (e->kind != CVM_AMD_CERT_ARK ||
			    (named != CVM_SNP_PRODUCT_UNKNOWN && e->product != named))
				continue;
			rc = try_chain(certs, roots, e, opts, c, err);
		}
	}
	if (rc < 0)
		return rc;
	if (!X509_up_ref(certs->vek))
		return cvm_err_nomem(err);
	c->vek = certs->vek;
	c->vek_pub = pub;
	c->sha384 = EVP_MD_fetch(NULL, "SHA384", NULL);
	c->verify_ctx = EVP_PKEY_CTX_new_from_pkey(NULL, pub, NULL);
	if (!c->sha384 || !c->verify_ctx || EVP_PKEY_verify_init(c->verify_ctx) != 1)
		return cvm_err_openssl(err, EIO, "snp.chain: verification context");
	*out = CVM_TAKE(c);
	return 0;
}

/* ---- report ------------------------------------------------------------------------------ */

static int verify_signature(const uint8_t *report, const struct cvm_snp_chain *chain,
			    const struct cvm_snp_report *r, struct cvm_err *err)
{
	int rc = -EBADMSG;
	uint8_t *der = NULL;
	uint8_t digest[48];
	unsigned int dlen = 0;
	ECDSA_SIG *sig = ECDSA_SIG_new();
	BIGNUM *br = BN_lebin2bn(r->sig_r, 72, NULL), *bs = BN_lebin2bn(r->sig_s, 72, NULL);
	/* The template context is shared by threads: each report works on its own copy. */
	EVP_PKEY_CTX *ctx = EVP_PKEY_CTX_dup(chain->verify_ctx);
	if (!sig || !br || !bs || !ctx || !ECDSA_SIG_set0(sig, br, bs)) {
		if (sig && br && bs && ctx)
			br = bs = NULL;
		BN_free(br);
		BN_free(bs);
		rc = cvm_err_nomem(err);
		goto out;
	}
	int dl = i2d_ECDSA_SIG(sig, &der);
	if (dl <= 0 || EVP_Digest(report, CVM_SNP_SIGNED_SIZE, digest, &dlen, chain->sha384, NULL) != 1) {
		rc = cvm_err_openssl(err, EIO, "snp.report.signature");
		goto out;
	}
	if (EVP_PKEY_verify(ctx, der, (size_t)dl, digest, dlen) != 1) {
		ERR_clear_error();
		rc = cvm_err_set(err, EBADMSG, "Unauthorized",
				 "snp.report.signature: does not verify with the VEK");
		goto out;
	}
	rc = 0;
out:
	ECDSA_SIG_free(sig);
	OPENSSL_free(der);
	EVP_PKEY_CTX_free(ctx);
	return rc;
}

static int check_tcb(const struct cvm_snp_vek_ext *x, const struct cvm_snp_tcb *t,
		     enum cvm_snp_product p, struct cvm_err *err)
{
	if (!x->has_bl || !x->has_tee || !x->has_snp || !x->has_ucode ||
	    (p == CVM_SNP_PRODUCT_TURIN && !x->has_fmc))
		return cvm_err_set(err, EBADMSG, "Unauthorized",
				   "snp.vek.tcb: certificate lacks an SPL extension");
	if (x->tcb.bl != t->bl || x->tcb.tee != t->tee || x->tcb.snp != t->snp ||
	    x->tcb.ucode != t->ucode || (p == CVM_SNP_PRODUCT_TURIN && x->tcb.fmc != t->fmc))
		return cvm_err_set(err, EBADMSG, "Unauthorized",
				   "snp.vek.tcb: certificate TCB (bl %u tee %u snp %u ucode %u fmc %u) "
				   "differs from REPORTED_TCB (bl %u tee %u snp %u ucode %u fmc %u)",
				   x->tcb.bl, x->tcb.tee, x->tcb.snp, x->tcb.ucode, x->tcb.fmc, t->bl,
				   t->tee, t->snp, t->ucode, t->fmc);
	return 0;
}

static int check_hwid(const struct cvm_snp_vek_ext *x, const struct cvm_snp_report *r,
		      enum cvm_snp_product p, struct cvm_err *err)
{
	static const uint8_t zero[64];
	/* A masked CHIP_ID is all zeros; the signature still binds the report to this VCEK. */
	if (memcmp(r->chip_id, zero, 64) == 0)
		return 0;
	size_t want = p == CVM_SNP_PRODUCT_TURIN ? 8 : 64;
	if (x->hwid_len != want)
		return cvm_err_set(err, EBADMSG, "Unauthorized",
				   "snp.vek.hwID: %zu bytes, %s needs %zu", x->hwid_len,
				   cvm_snp_product_name(p), want);
	if (memcmp(x->hwid, r->chip_id, want) != 0 || memcmp(r->chip_id + want, zero, 64 - want))
		return cvm_err_set(err, EBADMSG, "Unauthorized",
				   "snp.vek.hwID: does not equal the report's CHIP_ID");
	return 0;
}

int cvm_snp_verify_with_chain(const uint8_t *report, size_t len,
			      const struct cvm_snp_chain *chain,
			      const struct cvm_snp_policy *policy, struct cvm_snp_verdict *out,
			      struct cvm_err *err)
{
	struct cvm_snp_verdict v = { 0 };
	int rc = cvm_snp_report_parse(report, len, &v.report, err);
	if (rc < 0)
		return rc;
	v.signer = cvm_snp_report_signer(&v.report);
	if (v.signer == CVM_SNP_SIGNER_NONE)
		return cvm_err_set(err, EBADMSG, "Unauthorized",
				   "snp.report.flags.signing_key: report is not signed");
	if ((v.signer == CVM_SNP_SIGNER_VLEK) != chain->ext.is_vlek)
		return cvm_err_set(err, EBADMSG, "Unauthorized",
				   "snp.report.flags.signing_key: report signed by a %s, certificate is a %s",
				   v.signer == CVM_SNP_SIGNER_VLEK ? "VLEK" : "VCEK",
				   chain->ext.is_vlek ? "VLEK" : "VCEK");
	enum cvm_snp_product rp = cvm_snp_report_product(&v.report);
	if (rp != CVM_SNP_PRODUCT_UNKNOWN && rp != chain->product)
		return cvm_err_set(err, EBADMSG, "Unauthorized",
				   "snp.report.cpuid: report is from %s, the chain is for %s",
				   cvm_snp_product_name(rp), cvm_snp_product_name(chain->product));
	v.product = chain->product;
	cvm_snp_tcb_decode(v.report.reported_tcb, v.product, &v.reported_tcb);
	if ((rc = check_tcb(&chain->ext, &v.reported_tcb, v.product, err)) < 0)
		return rc;
	if (v.signer == CVM_SNP_SIGNER_VCEK &&
	    (rc = check_hwid(&chain->ext, &v.report, v.product, err)) < 0)
		return rc;
	if ((rc = verify_signature(report, chain, &v.report, err)) < 0)
		return rc;
	v.vek = chain->ext;
	v.emulated = chain->emulated;
	if ((rc = cvm_snp_policy_check(&v, policy, err)) < 0)
		return rc;
	*out = v;
	return 0;
}

int cvm_snp_verify(const uint8_t *report, size_t len, const struct cvm_snp_certs *certs,
		   const struct cvm_attest_roots *roots, const struct cvm_snp_verify_opts *opts,
		   const struct cvm_snp_policy *policy, struct cvm_snp_verdict *out,
		   struct cvm_err *err)
{
	_cleanup_(cvm_snp_chain_freep) struct cvm_snp_chain *chain = NULL;
	int rc = cvm_snp_chain_verify(certs, roots, opts, &chain, err);
	if (rc < 0)
		return rc;
	return cvm_snp_verify_with_chain(report, len, chain, policy, out, err);
}

int cvm_snp_verify_files(const struct cvm_snp_files *f, const struct cvm_attest_roots *roots,
			 const struct cvm_snp_verify_opts *opts, const struct cvm_snp_policy *policy,
			 struct cvm_snp_verdict *out, struct cvm_err *err)
{
	if (!f || !f->report)
		return cvm_err_badparam(err, "snp: a report file is required");
	_cleanup_free_ uint8_t *rep = NULL;
	size_t rep_len = 0;
	int rc = cvm_file_read(f->report, 64 * 1024, &rep, &rep_len, err);
	if (rc < 0)
		return rc;
	struct cvm_snp_certs certs = { 0 };
	struct cvm_snp_verify_opts o = opts ? *opts : (struct cvm_snp_verify_opts){ 0 };
	X509_CRL *crl = NULL;
	const char *paths[] = { f->vek, f->ask, f->ark };
	for (size_t i = 0; rc == 0 && i < CVM_ARRAY_SIZE(paths); i++)
		if (paths[i])
			rc = cvm_snp_certs_add_file(&certs, paths[i], err);
	if (rc == 0 && f->certs_dir && (!certs.vek || !certs.ask)) {
		struct cvm_snp_report r;
		rc = cvm_snp_report_parse(rep, rep_len, &r, err);
		if (rc == 0)
			rc = cvm_snp_certs_from_kds_dir(&certs, f->certs_dir, &r, o.product, err);
	}
	if (rc == 0 && f->crl) {
		_cleanup_free_ uint8_t *cb = NULL;
		size_t cl = 0;
		rc = cvm_file_read(f->crl, 1024 * 1024, &cb, &cl, err);
		if (rc == 0) {
			const unsigned char *p = cb;
			BIO *bio = NULL;
			crl = cl > 0 && cb[0] == 0x30 ? d2i_X509_CRL(NULL, &p, (long)cl) : NULL;
			if (!crl && (bio = BIO_new_mem_buf(cb, (int)cl)))
				crl = PEM_read_bio_X509_CRL(bio, NULL, NULL, NULL);
			BIO_free(bio);
			ERR_clear_error();
			if (!crl)
				rc = cvm_err_badparam(err, "%s: not a CRL (DER or PEM)", f->crl);
			o.crl = crl;
		}
	}
	if (rc == 0)
		rc = cvm_snp_verify(rep, rep_len, &certs, roots, &o, policy, out, err);
	X509_CRL_free(crl);
	cvm_snp_certs_clear(&certs);
	return rc;
}
