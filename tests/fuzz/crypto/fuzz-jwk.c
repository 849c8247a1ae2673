/* SPDX-License-Identifier: Apache-2.0 */
/* cvm_key_from_jwk on arbitrary JSON, public and private; accepted keys must survive a JWK
 * round trip with the same RFC 7638 thumbprint. */
#include <opencvm/crypto.h>

#include <string.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static void check_roundtrip(struct cvm_key *k, bool priv)
{
	struct cvm_err err = { 0 };
	json_t *out = NULL;
	char *tp1 = NULL, *tp2 = NULL;
	struct cvm_key *back = NULL;
	if (cvm_key_to_jwk(k, priv, &out, &err) < 0 || cvm_key_thumbprint(k, &tp1, &err) < 0)
		__builtin_trap();
	if (cvm_key_from_jwk(out, priv, &back, &err) < 0 || cvm_key_thumbprint(back, &tp2, &err) < 0 ||
	    strcmp(tp1, tp2) != 0)
		__builtin_trap();
	cvm_key_free(back);
	free(tp1);
	free(tp2);
	json_decref(out);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	if (size > 64 * 1024)
		return 0;
	json_error_t je;
	json_t *j = json_loadb((const char *)data, size, JSON_REJECT_DUPLICATES, &je);
	if (!j)
		return 0;
	for (int priv = 0; priv < 2; priv++) {
		struct cvm_err err = { 0 };
		struct cvm_key *k = NULL;
		if (cvm_key_from_jwk(j, priv, &k, &err) == 0) {
			if (priv && !cvm_key_has_private(k))
				__builtin_trap();
			/* oct keys are nothing but their secret, so they always travel with k */
			check_roundtrip(k, priv || cvm_key_type(k) == CVM_KTY_OCT);
			cvm_key_free(k);
		} else if (err.errnum == 0 || err.msg[0] == 0) {
			__builtin_trap(); /* every failure must explain itself */
		}
	}
	json_decref(j);
	return 0;
}
