/* SPDX-License-Identifier: Apache-2.0 */
/* X.509 self-signed certificates, fingerprints, and PEM import/export of keys. */
#include "crypto-internal.h"

#include <arpa/inet.h>
#include <openssl/err.h>
#include <openssl/pem.h>
#include <openssl/x509v3.h>
#include <string.h>

static int add_ext(X509 *x, int nid, const char *value, struct cvm_err *err)
{
	X509V3_CTX ctx;
	X509V3_set_ctx_nodb(&ctx);
	X509V3_set_ctx(&ctx, x, x, NULL, NULL, 0);
	X509_EXTENSION *e = X509V3_EXT_conf_nid(NULL, &ctx, nid, value);
	if (!e)
		return cvm_err_openssl(err, EINVAL, "certificate extension");
	int ok = X509_add_ext(x, e, -1);
	X509_EXTENSION_free(e);
	return ok == 1 ? 0 : cvm_err_openssl(err, EIO, "certificate extension");
}

static int add_sans(X509 *x, const char *const *dns, const char *const *ips, struct cvm_err *err)
{
	GENERAL_NAMES *gens = sk_GENERAL_NAME_new_null();
	if (!gens)
		return cvm_err_nomem(err);
	int r = 0;
	for (size_t i = 0; r >= 0 && dns && dns[i]; i++) {
		GENERAL_NAME *g = GENERAL_NAME_new();
		ASN1_IA5STRING *s = ASN1_IA5STRING_new();
		if (!g || !s || !ASN1_STRING_set(s, dns[i], -1)) {
			GENERAL_NAME_free(g);
			ASN1_IA5STRING_free(s);
			r = cvm_err_nomem(err);
			break;
		}
		GENERAL_NAME_set0_value(g, GEN_DNS, s);
		if (!sk_GENERAL_NAME_push(gens, g)) {
			GENERAL_NAME_free(g);
			r = cvm_err_nomem(err);
		}
	}
	for (size_t i = 0; r >= 0 && ips && ips[i]; i++) {
		uint8_t addr[16];
		int alen = inet_pton(AF_INET, ips[i], addr) == 1    ? 4
			   : inet_pton(AF_INET6, ips[i], addr) == 1 ? 16
								    : 0;
		if (!alen) {
			r = cvm_err_badparam(err, "ip_sans[%zu]: not an IPv4 or IPv6 address", i);
			break;
		}
		GENERAL_NAME *g = GENERAL_NAME_new();
		ASN1_OCTET_STRING *s = ASN1_OCTET_STRING_new();
		if (!g || !s || !ASN1_OCTET_STRING_set(s, addr, alen)) {
			GENERAL_NAME_free(g);
			ASN1_OCTET_STRING_free(s);
			r = cvm_err_nomem(err);
			break;
		}
		GENERAL_NAME_set0_value(g, GEN_IPADD, s);
		if (!sk_GENERAL_NAME_push(gens, g)) {
			GENERAL_NAME_free(g);
			r = cvm_err_nomem(err);
		}
	}
	if (r >= 0 && sk_GENERAL_NAME_num(gens) > 0 &&
	    X509_add1_ext_i2d(x, NID_subject_alt_name, gens, 0, X509V3_ADD_DEFAULT) != 1)
		r = cvm_err_openssl(err, EIO, "subjectAltName");
	GENERAL_NAMES_free(gens);
	return r;
}

int cvm_x509_self_signed(const struct cvm_key *k, const char *cn, const char *const *dns_sans,
			 const char *const *ip_sans, int days, X509 **out, struct cvm_err *err)
{
	if (!k->pkey || !k->has_private)
		return cvm_err_badparam(err, "key: a private RSA or EC key is required");
	if (!cn || !*cn || strlen(cn) > 64)
		return cvm_err_badparam(err, "cn: must be 1..64 characters");
	if (days < 1 || days > 3650)
		return cvm_err_badparam(err, "days: must be 1..3650");
	const char *md = k->kty == CVM_KTY_EC ? k->curve->md : "SHA256";
	X509 *x = X509_new();
	if (!x)
		return cvm_err_nomem(err);
	uint8_t serial[16];
	BIGNUM *sn = NULL;
	X509_NAME *name = X509_get_subject_name(x);
	int r = cvm_random(serial, sizeof(serial), err);
	if (r < 0)
		goto fail;
	serial[0] &= 0x7f; /* positive INTEGER */
	serial[0] |= 0x40; /* full length */
	sn = BN_bin2bn(serial, sizeof(serial), NULL);
	if (!sn || X509_set_version(x, X509_VERSION_3) != 1 ||
	    !BN_to_ASN1_INTEGER(sn, X509_get_serialNumber(x)) ||
	    !X509_gmtime_adj(X509_getm_notBefore(x), -3600) ||
	    !X509_gmtime_adj(X509_getm_notAfter(x), (long)days * 86400) ||
	    X509_NAME_add_entry_by_txt(name, "CN", MBSTRING_UTF8, (const unsigned char *)cn, -1, -1,
				       0) != 1 ||
	    X509_set_issuer_name(x, name) != 1 || X509_set_pubkey(x, k->pkey) != 1) {
		r = cvm_err_openssl(err, EIO, "certificate fields");
		goto fail;
	}
	const char *ku = k->kty == CVM_KTY_RSA ? "critical,digitalSignature,keyEncipherment"
					       : "critical,digitalSignature,keyAgreement";
	if ((r = add_ext(x, NID_basic_constraints, "critical,CA:FALSE", err)) < 0 ||
	    (r = add_ext(x, NID_key_usage, ku, err)) < 0 ||
	    (r = add_ext(x, NID_ext_key_usage, "serverAuth,clientAuth", err)) < 0 ||
	    (r = add_ext(x, NID_subject_key_identifier, "hash", err)) < 0 ||
	    (r = add_sans(x, dns_sans, ip_sans, err)) < 0)
		goto fail;
	if (X509_sign(x, k->pkey, EVP_get_digestbyname(md)) <= 0) {
		r = cvm_err_openssl(err, EIO, "certificate signing");
		goto fail;
	}
	BN_free(sn);
	*out = x;
	return 0;
fail:
	BN_free(sn);
	X509_free(x);
	return r;
}

/* Drain a memory BIO into a malloc'd NUL-terminated string. */
static int bio_string(BIO *b, char **out, bool secret, struct cvm_err *err)
{
	char *p = NULL;
	long n = BIO_get_mem_data(b, &p);
	if (n < 0 || !p)
		return cvm_err_internal(err, "PEM output missing");
	char *s = malloc((size_t)n + 1);
	if (!s)
		return cvm_err_nomem(err);
	memcpy(s, p, (size_t)n);
	s[n] = 0;
	if (secret)
		OPENSSL_cleanse(p, (size_t)n);
	*out = s;
	return 0;
}

int cvm_x509_to_pem(X509 *x, char **out, struct cvm_err *err)
{
	BIO *b = BIO_new(BIO_s_mem());
	if (!b)
		return cvm_err_nomem(err);
	int r = PEM_write_bio_X509(b, x) == 1 ? bio_string(b, out, false, err)
					      : cvm_err_openssl(err, EIO, "certificate PEM");
	BIO_free(b);
	return r;
}

int cvm_x509_sha256_fingerprint(X509 *x, char out[65], struct cvm_err *err)
{
	uint8_t h[32];
	unsigned int n = 0;
	if (X509_digest(x, EVP_sha256(), h, &n) != 1 || n != 32)
		return cvm_err_openssl(err, EIO, "certificate fingerprint");
	static const char digits[] = "0123456789abcdef";
	for (size_t i = 0; i < 32; i++) {
		out[2 * i] = digits[h[i] >> 4];
		out[2 * i + 1] = digits[h[i] & 15];
	}
	out[64] = 0;
	return 0;
}

int cvm_key_to_pem(const struct cvm_key *k, bool private_part, char **out, struct cvm_err *err)
{
	if (!k->pkey)
		return cvm_err_badparam(err, "key: oct keys have no PEM form");
	if (private_part && !k->has_private)
		return cvm_err_badparam(err, "key: has no private part");
	BIO *b = BIO_new(BIO_s_mem());
	if (!b)
		return cvm_err_nomem(err);
	int ok = private_part ? PEM_write_bio_PrivateKey(b, k->pkey, NULL, NULL, 0, NULL, NULL)
			      : PEM_write_bio_PUBKEY(b, k->pkey);
	int r = ok == 1 ? bio_string(b, out, private_part, err)
			: cvm_err_openssl(err, EIO, "key PEM encoding");
	BIO_free(b);
	return r;
}

/* Decode one PEM block by its label. Returns 1 with *pkey set, 0 for a label to skip. */
static int pem_block(const char *label, const uint8_t *der, long dlen, EVP_PKEY **pkey,
		     struct cvm_err *err)
{
	const unsigned char *p = der;
	if (strcmp(label, "PRIVATE KEY") == 0) {
		PKCS8_PRIV_KEY_INFO *p8 = d2i_PKCS8_PRIV_KEY_INFO(NULL, &p, dlen);
		*pkey = p8 ? EVP_PKCS82PKEY(p8) : NULL;
		PKCS8_PRIV_KEY_INFO_free(p8);
	} else if (strcmp(label, "RSA PRIVATE KEY") == 0) {
		*pkey = d2i_PrivateKey(EVP_PKEY_RSA, NULL, &p, dlen);
	} else if (strcmp(label, "EC PRIVATE KEY") == 0) {
		*pkey = d2i_PrivateKey(EVP_PKEY_EC, NULL, &p, dlen);
	} else if (strcmp(label, "PUBLIC KEY") == 0) {
		*pkey = d2i_PUBKEY(NULL, &p, dlen);
	} else if (strcmp(label, "RSA PUBLIC KEY") == 0) {
		*pkey = d2i_PublicKey(EVP_PKEY_RSA, NULL, &p, dlen);
	} else if (strcmp(label, "CERTIFICATE") == 0) {
		X509 *x = d2i_X509(NULL, &p, dlen);
		*pkey = x ? X509_get_pubkey(x) : NULL;
		X509_free(x);
	} else if (strcmp(label, "EC PARAMETERS") == 0) {
		return 0; /* `openssl ecparam -genkey` writes these before the key */
	} else if (strcmp(label, "ENCRYPTED PRIVATE KEY") == 0) {
		return cvm_err_badparam(err, "pem: encrypted private keys are not accepted");
	} else {
		return cvm_err_badparam(err, "pem: unsupported block '%.40s'", label);
	}
	if (!*pkey) {
		ERR_clear_error();
		return cvm_err_badparam(err, "pem: '%.40s' block is malformed", label);
	}
	return 1;
}

int cvm_key_from_pem(const char *pem, size_t len, struct cvm_key **out, struct cvm_err *err)
{
	if (!pem || len == 0 || len > 64 * 1024)
		return cvm_err_badparam(err, "pem: must be 1..65536 bytes");
	BIO *b = BIO_new_mem_buf(pem, (int)len);
	if (!b)
		return cvm_err_nomem(err);
	EVP_PKEY *pkey = NULL;
	int r = 0;
	while (r == 0) {
		char *label = NULL, *hdr = NULL;
		unsigned char *der = NULL;
		long dlen = 0;
		if (PEM_read_bio(b, &label, &hdr, &der, &dlen) != 1) {
			ERR_clear_error();
			r = cvm_err_badparam(err, "pem: no key or certificate block found");
			break;
		}
		r = pem_block(label, der, dlen, &pkey, err);
		OPENSSL_free(label);
		OPENSSL_free(hdr);
		OPENSSL_clear_free(der, (size_t)dlen);
	}
	BIO_free(b);
	if (r < 0)
		return r;
	r = cvm_key_wrap_pkey(pkey, out, err);
	if (r < 0)
		EVP_PKEY_free(pkey);
	return r;
}
