/* SPDX-License-Identifier: Apache-2.0 */
/* Test helper: a self-signed EC P-256 certificate for 127.0.0.1 / ::1 / localhost. */
#pragma once

#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/x509.h>
#include <openssl/x509v3.h>
#include <stdlib.h>
#include <string.h>

static char *tls_bio_to_str(BIO *b)
{
	char *data;
	long n = BIO_get_mem_data(b, &data);
	char *s = n >= 0 ? malloc((size_t)n + 1) : NULL;
	if (s) {
		memcpy(s, data, (size_t)n);
		s[n] = 0;
	}
	BIO_free(b);
	return s;
}

static int tls_add_ext(X509 *x, int nid, const char *value)
{
	X509V3_CTX ctx;
	X509V3_set_ctx_nodb(&ctx);
	X509V3_set_ctx(&ctx, x, x, NULL, NULL, 0);
	X509_EXTENSION *e = X509V3_EXT_conf_nid(NULL, &ctx, nid, value);
	if (!e)
		return -1;
	int r = X509_add_ext(x, e, -1) == 1 ? 0 : -1;
	X509_EXTENSION_free(e);
	return r;
}

/* PEM strings, malloc'd; 0 on success. */
static int tls_make_cert(const char *cn, char **cert_pem, char **key_pem)
{
	EVP_PKEY *k = EVP_EC_gen("P-256");
	X509 *x = X509_new();
	int r = -1;
	if (!k || !x)
		goto out;
	X509_set_version(x, 2);
	ASN1_INTEGER_set(X509_get_serialNumber(x), 1);
	X509_gmtime_adj(X509_getm_notBefore(x), -60);
	X509_gmtime_adj(X509_getm_notAfter(x), 3600);
	X509_NAME *n = X509_get_subject_name(x);
	X509_NAME_add_entry_by_txt(n, "CN", MBSTRING_ASC, (const unsigned char *)cn, -1, -1, 0);
	X509_set_issuer_name(x, n);
	X509_set_pubkey(x, k);
	if (tls_add_ext(x, NID_subject_alt_name, "IP:127.0.0.1,IP:::1,DNS:localhost") < 0 ||
	    tls_add_ext(x, NID_basic_constraints, "critical,CA:TRUE") < 0 ||
	    X509_sign(x, k, EVP_sha256()) <= 0)
		goto out;
	BIO *cb = BIO_new(BIO_s_mem()), *kb = BIO_new(BIO_s_mem());
	if (!cb || !kb || PEM_write_bio_X509(cb, x) != 1 ||
	    PEM_write_bio_PrivateKey(kb, k, NULL, NULL, 0, NULL, NULL) != 1) {
		BIO_free(cb);
		BIO_free(kb);
		goto out;
	}
	*cert_pem = tls_bio_to_str(cb);
	*key_pem = tls_bio_to_str(kb);
	r = *cert_pem && *key_pem ? 0 : -1;
out:
	X509_free(x);
	EVP_PKEY_free(k);
	return r;
}
