/* SPDX-License-Identifier: Apache-2.0 */
/* crypto: OpenSSL 3 EVP wrappers for the key service, attestation and disks: keys (RSA, EC, oct)
 * with JWK/PEM/DER import-export, Key Vault operations (encrypt/decrypt/wrap/unwrap/sign/verify),
 * AEAD, AES-KW(P), RSA-OAEP, CKM_RSA_AES_KEY_WRAP, HKDF/HMAC, JWS/JWT, Shamir, X.509.
 *
 * Conventions: 0 or negative errno (see util.h); -EINVAL "BadParameter" for bad input,
 * -ENOTSUP "BadParameter" for an unknown algorithm name, -EBADMSG for a failed signature/tag/
 * format check. Output buffers (struct cvm_buf) are appended to: pass a zeroed buffer.
 * Secret outputs are struct cvm_secret (mlock'd, zeroized on free). */
#pragma once

#include <jansson.h>
#include <openssl/evp.h>
#include <openssl/x509.h>
#include <opencvm/util.h>

/* ==== keys ================================================================================= */

enum cvm_kty { CVM_KTY_RSA = 1, CVM_KTY_EC, CVM_KTY_OCT };

/* Opaque, immutable after creation (safe to share read-only between threads; every operation
 * makes its own EVP_PKEY_CTX). Reference counted: cvm_key_ref/cvm_key_free. Holds an EVP_PKEY
 * for RSA/EC (private or public-only) and a struct cvm_secret for oct. */
struct cvm_key;

/* bits: 2048, 3072 or 4096; e: public exponent, 0 means 65537 (must be odd and >= 3). */
CVM_EXPORT int cvm_key_generate_rsa(int bits, unsigned long e, struct cvm_key **out,
				    struct cvm_err *err);
/* crv: "P-256", "P-384", "P-521" ("P-256K" is not supported: -ENOTSUP). */
CVM_EXPORT int cvm_key_generate_ec(const char *crv, struct cvm_key **out, struct cvm_err *err);
/* bits: 128, 192, 256 (AES key sizes); Key Vault Managed HSM oct-HSM keys. */
CVM_EXPORT int cvm_key_generate_oct(int bits, struct cvm_key **out, struct cvm_err *err);
/* Drops one reference; frees (and wipes oct material) on the last. NULL-safe. */
CVM_EXPORT void cvm_key_free(struct cvm_key *k);
/* Takes another reference (for caches); returns k. */
CVM_EXPORT struct cvm_key *cvm_key_ref(struct cvm_key *k);
CVM_DEFINE_CLEANUP(struct cvm_key, cvm_key_free)
#define _cleanup_key_ _cleanup_(cvm_key_freep)

CVM_EXPORT enum cvm_kty cvm_key_type(const struct cvm_key *k);
/* RSA modulus bits, EC field bits (256/384/521), oct bits. */
CVM_EXPORT int cvm_key_bits(const struct cvm_key *k);
/* "P-256", "P-384", "P-521" for EC keys, NULL otherwise. */
CVM_EXPORT const char *cvm_key_curve(const struct cvm_key *k);
/* True for RSA/EC keys with the private part and for oct keys. */
CVM_EXPORT bool cvm_key_has_private(const struct cvm_key *k);
/* Borrowed EVP_PKEY (do not free); NULL for oct keys. */
CVM_EXPORT EVP_PKEY *cvm_key_pkey(const struct cvm_key *k);
/* Wrap an existing RSA or EC (P-256/384/521) EVP_PKEY. Takes the caller's reference on success
 * only; on failure the caller still owns pkey. */
CVM_EXPORT int cvm_key_from_pkey(EVP_PKEY *pkey, struct cvm_key **out, struct cvm_err *err);
/* A new key holding only the public part (RSA/EC); -EINVAL for oct. */
CVM_EXPORT int cvm_key_public(const struct cvm_key *k, struct cvm_key **out, struct cvm_err *err);

/* Private material for storage/release: PKCS#8 DER for RSA/EC, raw bytes for oct.
 * -EINVAL when the key has no private part. */
CVM_EXPORT int cvm_key_export_private(const struct cvm_key *k, struct cvm_secret **out,
				      struct cvm_err *err);
/* Inverse of cvm_key_export_private; the PKCS#8 key type must match kty. */
CVM_EXPORT int cvm_key_import_private(enum cvm_kty kty, const uint8_t *buf, size_t len,
				      struct cvm_key **out, struct cvm_err *err);
/* SubjectPublicKeyInfo DER of the public part (RSA/EC). */
CVM_EXPORT int cvm_key_export_public_der(const struct cvm_key *k, struct cvm_buf *out,
					 struct cvm_err *err);
/* Inverse: parse SubjectPublicKeyInfo DER. */
CVM_EXPORT int cvm_key_import_public_der(const uint8_t *buf, size_t len, struct cvm_key **out,
					 struct cvm_err *err);

/* JWK (RFC 7517/7518, base64url without padding, Key Vault field names).
 * Public: RSA kty,n,e; EC kty,crv,x,y (coordinates fixed-length); oct: only kty.
 * include_private adds RSA d,p,q,dp,dq,qi; EC d (fixed length); oct k.
 * kty is "RSA"/"EC"/"oct" (callers that need "-HSM" set it themselves). */
CVM_EXPORT int cvm_key_to_jwk(const struct cvm_key *k, bool include_private, json_t **out,
			      struct cvm_err *err);
/* Parse a JWK (BYOK import when require_private; public-only keys for verification / wrapping
 * otherwise: private members are then ignored). kty may be "RSA", "RSA-HSM", "EC", "EC-HSM",
 * "oct", "oct-HSM". Errors name the JWK field ("key.n: ..."), -EINVAL "BadParameter"
 * (-ENOTSUP for an unsupported kty/crv). RSA: n 2048..8192 bits, odd e >= 3; a private RSA JWK
 * needs d, p, q, dp, dq and qi, and their RFC 8017 relations are checked (the message names the
 * member that does not fit). EC: x, y (and d) exactly the curve's coordinate length, point on the
 * curve, d matching it. oct: k of 16, 24 or 32 bytes (required even when !require_private). */
CVM_EXPORT int cvm_key_from_jwk(json_t *jwk, bool require_private, struct cvm_key **out,
				struct cvm_err *err);
/* RFC 7638 JWK thumbprint, SHA-256, base64url (malloc'd). oct: {"k","kty"}. */
CVM_EXPORT int cvm_key_thumbprint(const struct cvm_key *k, char **out, struct cvm_err *err);

/* ==== Key Vault operations ===================================================================
 * alg names exactly as Key Vault: RSA-OAEP, RSA-OAEP-256, RSA1_5 (RSA keys);
 * A128GCM/A192GCM/A256GCM (oct encrypt/decrypt: iv 12 bytes, generated when absent on encrypt,
 * tag 16 bytes, aad optional); A128KW/A192KW/A256KW (oct wrap/unwrap, RFC 3394).
 * Also A128CBC/A192CBC/A256CBC (no padding, len a multiple of 16) and A128CBCPAD/A192CBCPAD/
 * A256CBCPAD (PKCS#7) for oct encrypt/decrypt, iv 16 bytes (generated when absent on encrypt),
 * and CKM_AES_KEY_WRAP (RFC 3394) / CKM_AES_KEY_WRAP_PAD (RFC 5649) for oct wrap/unwrap with any
 * AES key size. RSA-OAEP and RSA1_5 are accepted by both encrypt and wrap; GCM/CBC only by
 * encrypt/decrypt; KW only by wrap/unwrap.
 * Algorithm/key mismatch (including key size, e.g. A256GCM with a 128-bit key) -> -EINVAL
 * "BadParameter" naming the alg. Unknown alg -> -ENOTSUP "BadParameter".
 * Decrypt/unwrap with a wrong key or a flipped bit -> -EBADMSG (for RSA1_5 too, without
 * distinguishing padding errors). RSA operations need the private part for decrypt/unwrap/sign.
 * out must be zeroed before the call; on success the caller frees it with cvm_crypt_out_free. */
struct cvm_crypt_in {
	const char *alg;
	const uint8_t *data;
	size_t len;
	const uint8_t *iv;     /* GCM/CBC only */
	size_t iv_len;
	const uint8_t *aad;    /* GCM only */
	size_t aad_len;
	const uint8_t *tag;    /* GCM decrypt only */
	size_t tag_len;
};
struct cvm_crypt_out {
	struct cvm_buf data;   /* ciphertext / plaintext / wrapped / unwrapped key */
	uint8_t iv[16];        /* GCM/CBC encrypt: the IV used */
	size_t iv_len;
	uint8_t tag[16];       /* GCM encrypt: the tag */
	size_t tag_len;
};
CVM_EXPORT int cvm_key_encrypt(const struct cvm_key *k, const struct cvm_crypt_in *in,
			       struct cvm_crypt_out *out, struct cvm_err *err);
CVM_EXPORT int cvm_key_decrypt(const struct cvm_key *k, const struct cvm_crypt_in *in,
			       struct cvm_crypt_out *out, struct cvm_err *err);
CVM_EXPORT int cvm_key_wrap(const struct cvm_key *k, const struct cvm_crypt_in *in,
			    struct cvm_crypt_out *out, struct cvm_err *err);
CVM_EXPORT int cvm_key_unwrap(const struct cvm_key *k, const struct cvm_crypt_in *in,
			      struct cvm_crypt_out *out, struct cvm_err *err);
/* Wipes and frees out->data and clears iv/tag. */
CVM_EXPORT void cvm_crypt_out_free(struct cvm_crypt_out *o);

/* Sign/verify a DIGEST (Key Vault semantics: the caller hashes). alg RS256/384/512,
 * PS256/384/512 (MGF1 with the same hash, salt = digest length), ES256/384/512 (signature is
 * JOSE raw r||s, fixed length; the curve must match: ES256<->P-256, ES384<->P-384,
 * ES512<->P-521). dlen must equal the alg's digest length. verify: *valid false and return 0
 * for a well-formed but wrong signature; errors only for bad parameters. */
CVM_EXPORT int cvm_key_sign_digest(const struct cvm_key *k, const char *alg, const uint8_t *digest,
				   size_t dlen, struct cvm_buf *sig, struct cvm_err *err);
CVM_EXPORT int cvm_key_verify_digest(const struct cvm_key *k, const char *alg,
				     const uint8_t *digest, size_t dlen, const uint8_t *sig,
				     size_t siglen, bool *valid, struct cvm_err *err);
/* Hash name for a JOSE signature alg ("RS256" -> "SHA256", ...), NULL when unknown. */
CVM_EXPORT const char *cvm_alg_digest(const char *alg);

/* ==== primitives ============================================================================ */

/* md: "SHA256", "SHA384", "SHA512", "SHA1". out must hold 64 bytes; *outlen receives the size. */
CVM_EXPORT int cvm_digest(const char *md, const void *data, size_t len, uint8_t *out,
			  size_t *outlen, struct cvm_err *err);
CVM_EXPORT int cvm_hmac_sha256(const void *key, size_t klen, const void *data, size_t len,
			       uint8_t out[32], struct cvm_err *err);
/* RFC 5869 extract-and-expand; out_len <= 255*32. */
CVM_EXPORT int cvm_hkdf_sha256(const void *ikm, size_t ikm_len, const void *salt, size_t salt_len,
			       const void *info, size_t info_len, uint8_t *out, size_t out_len,
			       struct cvm_err *err);
/* AES-GCM with klen 16/24/32, 12-byte IV, 16-byte tag; ct/pt have len bytes (may alias). */
CVM_EXPORT int cvm_aes_gcm_seal(const uint8_t *key, size_t klen, const uint8_t iv[12],
				const void *aad, size_t aad_len, const uint8_t *pt, size_t len,
				uint8_t *ct, uint8_t tag[16], struct cvm_err *err);
/* -EBADMSG on tag mismatch (pt is zeroed then). */
CVM_EXPORT int cvm_aes_gcm_open(const uint8_t *key, size_t klen, const uint8_t iv[12],
				const void *aad, size_t aad_len, const uint8_t *ct, size_t len,
				const uint8_t tag[16], uint8_t *pt, struct cvm_err *err);

/* Self-describing sealed blob for data at rest: version byte (0x01) ‖ 12-byte random IV ‖
 * ciphertext ‖ 16-byte tag, AES-256-GCM; the version byte is authenticated together with the
 * caller's aad (which binds the blob to its context, e.g. the key id). key32->len must be 32. */
#define CVM_SEAL_OVERHEAD (1 + 12 + 16)
CVM_EXPORT int cvm_seal(const struct cvm_secret *key32, const void *aad, size_t aad_len,
			const uint8_t *pt, size_t len, struct cvm_buf *out, struct cvm_err *err);
/* -EBADMSG for wrong key/aad/tampering, -EINVAL for a truncated blob or unknown version. */
CVM_EXPORT int cvm_unseal(const struct cvm_secret *key32, const void *aad, size_t aad_len,
			  const uint8_t *blob, size_t len, struct cvm_secret **pt,
			  struct cvm_err *err);

/* AES key wrap: RFC 3394 (pad=false; len a multiple of 8, >= 16) or RFC 5649 KWP (pad=true;
 * len >= 1). kek_len 16/24/32. Unwrap integrity failure -> -EBADMSG. */
CVM_EXPORT int cvm_aes_kw_wrap(const uint8_t *kek, size_t kek_len, bool pad, const uint8_t *in,
			       size_t len, struct cvm_buf *out, struct cvm_err *err);
CVM_EXPORT int cvm_aes_kw_unwrap(const uint8_t *kek, size_t kek_len, bool pad, const uint8_t *in,
				 size_t len, struct cvm_secret **out, struct cvm_err *err);

/* RSA-OAEP with md for both the OAEP hash and MGF1 (md: "SHA1", "SHA256", "SHA384",
 * "SHA512"), empty label. Decrypt failure -> -EBADMSG. */
CVM_EXPORT int cvm_rsa_oaep_encrypt(EVP_PKEY *pub, const char *md, const uint8_t *in, size_t len,
				    struct cvm_buf *out, struct cvm_err *err);
CVM_EXPORT int cvm_rsa_oaep_decrypt(EVP_PKEY *priv, const char *md, const uint8_t *in, size_t len,
				    struct cvm_secret **out, struct cvm_err *err);

/* Azure SKR / PKCS#11 CKM_RSA_AES_KEY_WRAP: RSA-OAEP(md)(fresh AES-256 transfer key) ‖
 * AES-KWP(transfer key, material). enc: "CKM_RSA_AES_KEY_WRAP" (SHA1), "RSA_AES_KEY_WRAP_256"
 * (SHA256), "RSA_AES_KEY_WRAP_384" (SHA384). The first modulus-size bytes are the RSA part. */
CVM_EXPORT int cvm_rsa_aes_key_wrap(EVP_PKEY *pub, const char *enc, const uint8_t *material,
				    size_t len, struct cvm_buf *out, struct cvm_err *err);
CVM_EXPORT int cvm_rsa_aes_key_unwrap(EVP_PKEY *priv, const char *enc, const uint8_t *in,
				      size_t len, struct cvm_secret **out, struct cvm_err *err);

/* ==== JWS compact (RFC 7515) and JWT ======================================================== */

#define CVM_JWS_MAX_LEN (1024 * 1024)   /* compact serialization limit */
#define CVM_JWS_MAX_HEADER (16 * 1024)  /* decoded header limit */

struct cvm_jws {
	json_t *header;          /* protected header, a JSON object */
	uint8_t *payload;        /* decoded payload (NUL-terminated, not counted in payload_len) */
	size_t payload_len;
	const char *alg;         /* points into header */
	uint8_t *sig;            /* decoded signature (JOSE form: raw r||s for ES*) */
	size_t sig_len;
	char *signing_input;     /* "b64(header).b64(payload)", NUL-terminated */
	size_t signing_input_len;
};
/* header_extra: extra header members (kid, x5c, x5t#S256, typ, jku; may be NULL); alg is set
 * from alg and overrides any alg in header_extra. payload bytes are signed as given. Supported
 * algs: RS256/384/512, PS256/384/512, ES256/384/512 (curve must fit), HS256 with an oct key. */
CVM_EXPORT int cvm_jws_sign(const struct cvm_key *k, const char *alg, json_t *header_extra,
			    const uint8_t *payload, size_t len, char **compact, struct cvm_err *err);
/* Strict: exactly 3 parts of base64url, header a JSON object with a string alg, size limits
 * above, rejects alg "none" and any "crit" member. Errors: -EINVAL (malformed), -E2BIG. */
CVM_EXPORT int cvm_jws_parse(const char *compact, size_t len, struct cvm_jws **out,
			     struct cvm_err *err);
/* The alg must fit the key type (RS* and PS* RSA, ES* EC with matching curve, HS256 oct);
 * -EINVAL for a mismatch, -EBADMSG for a bad signature. */
CVM_EXPORT int cvm_jws_verify(const struct cvm_jws *jws, const struct cvm_key *pub,
			      struct cvm_err *err);
CVM_EXPORT void cvm_jws_free(struct cvm_jws *jws);
CVM_DEFINE_CLEANUP(struct cvm_jws, cvm_jws_free)
#define _cleanup_jws_ _cleanup_(cvm_jws_freep)

/* Sign a claims object (serialized compactly, keys in insertion order); header typ "JWT" is
 * added unless header_extra has typ. */
CVM_EXPORT int cvm_jwt_sign(const struct cvm_key *k, const char *alg, json_t *header_extra,
			    json_t *claims, char **out, struct cvm_err *err);
/* Parse + verify a JWT; on success *claims is the payload object (new reference) and, when
 * header is non-NULL, *header the protected header (new reference). Does not check times. */
CVM_EXPORT int cvm_jwt_verify(const char *compact, size_t len, const struct cvm_key *pub,
			      json_t **claims, json_t **header, struct cvm_err *err);
/* Check exp/nbf (integer NumericDate) against now with leeway seconds. exp missing is an error
 * unless allow_no_exp. Expired / not yet valid / malformed -> -EINVAL "BadParameter" with a
 * message naming exp or nbf. */
CVM_EXPORT int cvm_jwt_check_times(json_t *claims, int64_t now, int64_t leeway, bool allow_no_exp,
				   struct cvm_err *err);

/* ==== Shamir secret sharing ================================================================
 * Over GF(2^8) with the AES polynomial 0x11b, one random polynomial of degree m-1 per byte.
 * share i = 1-byte x (1..n) ‖ len bytes of y. 2 <= m <= n <= 255, secret len >= 1.
 * Combining fewer than m distinct shares cannot be detected (information-theoretic scheme): it
 * returns 0 and a wrong secret; callers that must detect it store a check value (e.g. a
 * cvm_seal'd blob or HMAC) beside the shares. */
CVM_EXPORT int cvm_shamir_split(const struct cvm_secret *secret, unsigned m, unsigned n,
				struct cvm_secret **shares /* array of n, filled */,
				struct cvm_err *err);
/* Rejects count < 2, x = 0, duplicate x and mismatched lengths (-EINVAL). */
CVM_EXPORT int cvm_shamir_combine(struct cvm_secret *const *shares, unsigned count,
				  struct cvm_secret **out, struct cvm_err *err);

/* ==== X.509 and PEM ========================================================================= */

/* Self-signed certificate for k (RSA: sha256WithRSAEncryption; EC: ecdsa-with-SHA256/384/512
 * by curve), subject CN=cn, random 16-byte serial, notBefore now-1h, SANs from NULL-terminated
 * lists (either may be NULL), basicConstraints CA:FALSE, keyUsage digitalSignature+
 * keyEncipherment, extendedKeyUsage serverAuth+clientAuth. days 1..3650. */
CVM_EXPORT int cvm_x509_self_signed(const struct cvm_key *k, const char *cn,
				    const char *const *dns_sans, const char *const *ip_sans,
				    int days, X509 **out, struct cvm_err *err);
CVM_EXPORT int cvm_x509_to_pem(X509 *x, char **out, struct cvm_err *err);
/* SHA-256 of the DER certificate, 64 lowercase hex chars + NUL. */
CVM_EXPORT int cvm_x509_sha256_fingerprint(X509 *x, char out[65], struct cvm_err *err);
/* private_part: PKCS#8 "PRIVATE KEY" PEM (unencrypted; callers protect it), else SPKI
 * "PUBLIC KEY". RSA/EC only. */
CVM_EXPORT int cvm_key_to_pem(const struct cvm_key *k, bool private_part, char **out,
			      struct cvm_err *err);
/* Accepts PKCS#8 / traditional private keys, SPKI public keys, or a certificate (its public
 * key). RSA/EC (P-256/384/521) only. */
CVM_EXPORT int cvm_key_from_pem(const char *pem, size_t len, struct cvm_key **out,
				struct cvm_err *err);
