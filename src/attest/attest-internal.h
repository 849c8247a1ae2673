/* SPDX-License-Identifier: Apache-2.0 */
/* attest module-private declarations. */
#pragma once

#include <opencvm/attest.h>

enum cvm_amd_cert_kind { CVM_AMD_CERT_ARK, CVM_AMD_CERT_ASK, CVM_AMD_CERT_ASVK };

struct cvm_amd_builtin {
	enum cvm_snp_product product;
	enum cvm_amd_cert_kind kind;
	const char *pem;
	const char *sha256_hex; /* SHA-256 of the DER, lowercase */
};
extern const struct cvm_amd_builtin cvm_amd_builtin_certs[];
extern const size_t cvm_amd_builtin_count;

/* Little-endian readers/writers for the report layout. */
static inline uint32_t cvm_le32(const uint8_t *p)
{
	return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}
static inline uint64_t cvm_le64(const uint8_t *p)
{
	return (uint64_t)cvm_le32(p) | (uint64_t)cvm_le32(p + 4) << 32;
}
static inline void cvm_put_le32(uint8_t *p, uint32_t v)
{
	for (int i = 0; i < 4; i++)
		p[i] = (uint8_t)(v >> (8 * i));
}
static inline void cvm_put_le64(uint8_t *p, uint64_t v)
{
	for (int i = 0; i < 8; i++)
		p[i] = (uint8_t)(v >> (8 * i));
}

/* SHA-256 of a certificate's DER as lowercase hex. */
int cvm_attest_x509_fingerprint(X509 *x, char out[65], struct cvm_err *err);
/* Check that x carries an RSASSA-PSS signature with SHA-384, MGF1-SHA-384, salt 48 (the only
 * algorithm AMD uses for ARK/ASK/VCEK) and that issuer_key verifies it. */
int cvm_attest_verify_amd_sig(X509 *x, EVP_PKEY *issuer_key, const char *what,
			      struct cvm_err *err);
/* Parse PEM (one or more certs) or DER; calls fn for each certificate. */
int cvm_attest_x509_each(const uint8_t *buf, size_t len,
			 int (*fn)(X509 *x, void *ctx, struct cvm_err *err), void *ctx,
			 struct cvm_err *err);
/* Subject CN into out ("" when absent). */
void cvm_attest_x509_cn(X509 *x, char *out, size_t outlen);
/* Hex-encode into a json object member. */
int cvm_attest_json_hex(json_t *obj, const char *key, const void *data, size_t len);

/* Service internals shared by token.c, policy.c and rest.c. */
#include <pthread.h>
struct cvm_attest_policy_slot;
pthread_mutex_t *cvm_attest_service_lock(struct cvm_attest_service *s);
struct cvm_attest_policy_slot **cvm_attest_service_policies(struct cvm_attest_service *s);
const char *cvm_attest_service_issuer(const struct cvm_attest_service *s);
/* The service's verification settings (borrowed; used by azureguest.c). */
struct cvm_attest_verifiers {
	const struct cvm_attest_roots *roots;
	const struct cvm_snp_verify_opts *snp_opts;
	const struct cvm_snp_policy *snp_policy;
	const struct cvm_tdx_verify_opts *tdx_opts;
	const struct cvm_tdx_policy *tdx_policy;
};
void cvm_attest_service_verifiers(const struct cvm_attest_service *s,
				  struct cvm_attest_verifiers *out);
void cvm_attest_policy_slots_free(struct cvm_attest_policy_slot *p);
/* Evaluate the policy set for type (none set: permit, nothing issued). hash receives the
 * base64url SHA-256 of the policy text, "" when none. -EPERM when not permitted. */
int cvm_attest_policy_apply(struct cvm_attest_service *s, const char *type, json_t *claims,
			    json_t *issued, char hash[48], struct cvm_err *err);
/* Sign service statements (policy results) with the current key; adds iss/iat/nbf/exp. */
int cvm_attest_service_sign_claims(struct cvm_attest_service *s, json_t *claims, char **jwt,
				   struct cvm_err *err);

extern const char cvm_intel_sgx_root_pem[];
extern const char cvm_intel_sgx_root_sha256[];
