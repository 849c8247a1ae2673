/* SPDX-License-Identifier: Apache-2.0 */
/* crypto module internals shared by key.c, jwk.c, ops.c, jws.c, x509.c. */
#pragma once

#include <opencvm/crypto.h>

#include <stdatomic.h>

struct cvm_key {
	atomic_int refs;
	enum cvm_kty kty;
	bool has_private;
	int bits;
	const struct cvm_curve *curve;  /* EC only */
	EVP_PKEY *pkey;                 /* RSA/EC */
	struct cvm_secret *oct;         /* oct */
	/* PKCS#8 DER of an RSA/EC private key: the bytes it was imported with, or the encoder's
	 * output kept on first export (encoding costs far more than a copy). Set once, then
	 * read-only; wiped with the key. */
	_Atomic(struct cvm_secret *) pkcs8;
};

/* A NIST curve as JOSE names it, with what we need to encode and sign on it. */
struct cvm_curve {
	const char *jose;      /* "P-256" */
	const char *group;     /* OpenSSL group name */
	size_t coord_len;      /* bytes per coordinate / scalar */
	int bits;
	const char *sig_alg;   /* matching ES* alg */
	const char *md;        /* digest of that alg */
};

const struct cvm_curve *cvm_curve_by_jose(const char *jose);
const struct cvm_curve *cvm_curve_by_group(const char *group);

/* Wrap pkey (reference taken on success) after reading type, size, curve, private-ness. */
int cvm_key_wrap_pkey(EVP_PKEY *pkey, struct cvm_key **out, struct cvm_err *err);
/* Wrap oct material (ownership taken on success). */
int cvm_key_wrap_oct(struct cvm_secret *s, struct cvm_key **out, struct cvm_err *err);

/* ECDSA signature conversions between DER (OpenSSL) and JOSE raw r||s of 2*coord_len bytes. */
int cvm_ecdsa_der_to_raw(const uint8_t *der, size_t der_len, size_t coord_len,
			 struct cvm_buf *out, struct cvm_err *err);
/* -EBADMSG-free: returns 1 and fills *der on success, 0 when raw has the wrong length. */
int cvm_ecdsa_raw_to_der(const uint8_t *raw, size_t raw_len, size_t coord_len, uint8_t **der,
			 size_t *der_len, struct cvm_err *err);

