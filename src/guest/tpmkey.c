/* SPDX-License-Identifier: Apache-2.0 */
/* The guest's ephemeral key inside the vTPM: an RSA-2048 primary key under the owner hierarchy,
 * decrypt-only (no sign), fixedTPM and fixedParent (never exportable), created with a random
 * unique field so every boot gets a new key although the owner seed persists. The released key
 * comes back as CKM_RSA_AES_KEY_WRAP: TPM2_RSA_Decrypt (OAEP) opens the 32-byte transfer key,
 * AES key wrap with padding (RFC 5649) opens the key material. Only the transfer key and the
 * material ever sit in this process's memory (cvm_secret: locked, wiped). */
#include <opencvm/crypto.h>
#include <opencvm/guest.h>
#include <opencvm/json.h>

#include <openssl/crypto.h>
#include <string.h>
#include <tss2/tss2_esys.h>
#include <tss2/tss2_rc.h>
#include <tss2/tss2_tctildr.h>

struct cvm_guest_tpm_key {
	TSS2_TCTI_CONTEXT *tcti;
	ESYS_CONTEXT *esys;
	ESYS_TR handle;
	struct cvm_key *pub;
};

static int tss_err(struct cvm_err *err, const char *what, TSS2_RC rc)
{
	return cvm_err_set(err, EIO, "TpmError", "vTPM %s: %s (0x%x)", what, Tss2_RC_Decode(rc),
			   (unsigned)rc);
}

static int public_key(const TPM2B_PUBLIC *pub, struct cvm_key **out, struct cvm_err *err)
{
	const TPM2B_PUBLIC_KEY_RSA *n = &pub->publicArea.unique.rsa;
	uint32_t e = pub->publicArea.parameters.rsaDetail.exponent;
	if (e == 0)
		e = 65537;
	uint8_t eb[4] = { (uint8_t)(e >> 24), (uint8_t)(e >> 16), (uint8_t)(e >> 8), (uint8_t)e };
	size_t skip = 0;
	while (skip < 3 && eb[skip] == 0)
		skip++;
	_cleanup_json_ json_t *jwk = json_pack("{s:s}", "kty", "RSA");
	if (!jwk || cvm_json_set_b64url(jwk, "n", n->buffer, n->size) < 0 ||
	    cvm_json_set_b64url(jwk, "e", eb + skip, sizeof(eb) - skip) < 0)
		return cvm_err_nomem(err);
	int r = cvm_key_from_jwk(jwk, false, out, err);
	return r < 0 ? cvm_err_prefix(err, "vTPM public key") : 0;
}

int cvm_guest_tpm_key_create(const char *tcti_conf, struct cvm_guest_tpm_key **out,
			     struct cvm_err *err)
{
	*out = NULL;
	struct cvm_guest_tpm_key *k = calloc(1, sizeof(*k));
	if (!k)
		return cvm_err_nomem(err);
	k->handle = ESYS_TR_NONE;
	TSS2_RC rc = Tss2_TctiLdr_Initialize(tcti_conf, &k->tcti);
	if (rc != TSS2_RC_SUCCESS) {
		free(k);
		return cvm_err_set(err, ENODEV, "TpmError", "vTPM %s: %s", tcti_conf,
				   Tss2_RC_Decode(rc));
	}
	int r = 0;
	if ((rc = Esys_Initialize(&k->esys, k->tcti, NULL)) != TSS2_RC_SUCCESS)
		r = tss_err(err, "connect", rc);
	TPM2B_PUBLIC tmpl = {
		.publicArea = {
			.type = TPM2_ALG_RSA,
			.nameAlg = TPM2_ALG_SHA256,
			.objectAttributes = TPMA_OBJECT_DECRYPT | TPMA_OBJECT_FIXEDTPM |
					    TPMA_OBJECT_FIXEDPARENT | TPMA_OBJECT_SENSITIVEDATAORIGIN |
					    TPMA_OBJECT_USERWITHAUTH | TPMA_OBJECT_NODA,
			.parameters.rsaDetail = {
				.symmetric.algorithm = TPM2_ALG_NULL,
				.scheme.scheme = TPM2_ALG_NULL, /* OAEP hash chosen per decrypt */
				.keyBits = 2048,
				.exponent = 0,
			},
		},
	};
	/* A random unique field: a fresh key each boot from the same (persistent) owner seed. */
	tmpl.publicArea.unique.rsa.size = 32;
	if (r == 0)
		r = cvm_random(tmpl.publicArea.unique.rsa.buffer, 32, err);
	TPM2B_SENSITIVE_CREATE sens = { 0 };
	TPM2B_DATA outside = { 0 };
	TPML_PCR_SELECTION pcrs = { 0 };
	TPM2B_PUBLIC *pub = NULL;
	if (r == 0 && (rc = Esys_CreatePrimary(k->esys, ESYS_TR_RH_OWNER, ESYS_TR_PASSWORD,
					       ESYS_TR_NONE, ESYS_TR_NONE, &sens, &tmpl, &outside,
					       &pcrs, &k->handle, &pub, NULL, NULL, NULL)) !=
			      TSS2_RC_SUCCESS)
		r = tss_err(err, "CreatePrimary (RSA-2048, decrypt-only)", rc);
	if (r == 0)
		r = public_key(pub, &k->pub, err);
	Esys_Free(pub);
	if (r < 0) {
		cvm_guest_tpm_key_free(k);
		return r;
	}
	*out = k;
	return 0;
}

const struct cvm_key *cvm_guest_tpm_key_public(const struct cvm_guest_tpm_key *k)
{
	return k->pub;
}

static TPM2_ALG_ID oaep_hash(const char *enc)
{
	if (!enc)
		return TPM2_ALG_ERROR;
	if (strcmp(enc, "CKM_RSA_AES_KEY_WRAP") == 0)
		return TPM2_ALG_SHA1;
	if (strcmp(enc, "RSA_AES_KEY_WRAP_256") == 0)
		return TPM2_ALG_SHA256;
	if (strcmp(enc, "RSA_AES_KEY_WRAP_384") == 0)
		return TPM2_ALG_SHA384;
	return TPM2_ALG_ERROR;
}

int cvm_guest_tpm_key_unwrap(struct cvm_guest_tpm_key *k, const char *enc, const uint8_t *ct,
			     size_t len, struct cvm_secret **material, struct cvm_err *err)
{
	*material = NULL;
	TPM2_ALG_ID hash = oaep_hash(enc);
	if (hash == TPM2_ALG_ERROR)
		return cvm_err_set(err, ENOTSUP, "BadParameter", "enc: must be CKM_RSA_AES_KEY_WRAP, "
				   "RSA_AES_KEY_WRAP_256 or RSA_AES_KEY_WRAP_384");
	const size_t kb = 256; /* RSA-2048 */
	if (len < kb + 16)
		return cvm_err_badparam(err, "released key: ciphertext truncated (%zu bytes)", len);
	TPM2B_PUBLIC_KEY_RSA cipher = { .size = (UINT16)kb };
	memcpy(cipher.buffer, ct, kb);
	TPMT_RSA_DECRYPT scheme = { .scheme = TPM2_ALG_OAEP, .details.oaep.hashAlg = hash };
	TPM2B_DATA label = { 0 };
	TPM2B_PUBLIC_KEY_RSA *msg = NULL;
	TSS2_RC rc = Esys_RSA_Decrypt(k->esys, k->handle, ESYS_TR_PASSWORD, ESYS_TR_NONE,
				      ESYS_TR_NONE, &cipher, &scheme, &label, &msg);
	if (rc != TSS2_RC_SUCCESS)
		return tss_err(err, "RSA_Decrypt of the transfer key", rc);
	int r = 0;
	if (msg->size != 32)
		r = cvm_err_set(err, EBADMSG, "BadParameter",
				"released key: transfer key is %u bytes, expected 32", msg->size);
	if (r == 0)
		r = cvm_aes_kw_unwrap(msg->buffer, 32, true, ct + kb, len - kb, material, err);
	OPENSSL_cleanse(msg->buffer, sizeof(msg->buffer));
	Esys_Free(msg);
	return r < 0 ? cvm_err_prefix(err, "released key") : 0;
}

void cvm_guest_tpm_key_free(struct cvm_guest_tpm_key *k)
{
	if (!k)
		return;
	if (k->esys && k->handle != ESYS_TR_NONE)
		Esys_FlushContext(k->esys, k->handle);
	if (k->esys)
		Esys_Finalize(&k->esys);
	if (k->tcti)
		Tss2_TctiLdr_Finalize(&k->tcti);
	cvm_key_free(k->pub);
	free(k);
}
