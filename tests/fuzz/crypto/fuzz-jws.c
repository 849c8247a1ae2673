/* SPDX-License-Identifier: Apache-2.0 */
/* cvm_jws_parse on arbitrary bytes; parsed tokens are verified against an HS256 key and a
 * P-256 public key, which exercises the alg/key-type checks and signature decoding. */
#include <opencvm/crypto.h>

#include <string.h>

static const char p256_jwk[] =
	"{\"kty\":\"EC\",\"crv\":\"P-256\",\"x\":\"f83OJ3D2xF1Bg8vub9tLe1gHMzV76e8Tus9uPHvRVEU\","
	"\"y\":\"x_FEzRu9m36HLN_tue659LNpXW6pCyStikYjKIWI5a0\"}";

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct cvm_err err = { 0 };
	struct cvm_jws *j = NULL;
	if (cvm_jws_parse((const char *)data, size, &j, &err) < 0)
		return 0;
	/* invariants of a successful parse */
	if (!j->alg || !json_is_object(j->header) || j->signing_input_len >= size ||
	    memcmp(j->signing_input, data, j->signing_input_len) != 0)
		__builtin_trap();
	static const uint8_t k[32] = { 1, 2, 3 };
	struct cvm_key *oct = NULL, *ec = NULL;
	if (cvm_key_import_private(CVM_KTY_OCT, k, sizeof(k), &oct, &err) == 0) {
		(void)cvm_jws_verify(j, oct, &err);
		cvm_key_free(oct);
	}
	json_error_t je;
	json_t *jwk = json_loads(p256_jwk, 0, &je);
	if (jwk && cvm_key_from_jwk(jwk, false, &ec, &err) == 0) {
		(void)cvm_jws_verify(j, ec, &err);
		cvm_key_free(ec);
	}
	json_decref(jwk);
	cvm_jws_free(j);
	return 0;
}
