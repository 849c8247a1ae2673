/* SPDX-License-Identifier: Apache-2.0 */
/* Arbitrary request bodies through the REST layer's body parser: the first byte picks the
 * route's body kind (create, import, update, crypto op, sign, verify, release, restore, rotation
 * policy, rng, role assignment/definition, full backup/restore, principal, token form), the rest
 * is the body. Parsing and shape checks only; no state is touched. On success the parsed object
 * must be a JSON object (or absent for kinds without one), on failure the error must name a
 * field and carry a status-bearing errno. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <opencvm/hsm.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	if (size < 1)
		return 0;
	enum cvm_hsm_rest_body kind = (enum cvm_hsm_rest_body)(data[0] % CVM_HSM_BODY_COUNT_);
	struct cvm_err err = { 0 };
	json_t *out = NULL;
	int r = cvm_hsm_rest_parse_body(kind, data + 1, size - 1, &out, &err);
	if (r == 0) {
		bool json_kind = kind != CVM_HSM_BODY_NONE && kind != CVM_HSM_BODY_TOKEN_FORM;
		if (json_kind != (out != NULL) || (out && !json_is_object(out)))
			abort();
	} else if (out || err.errnum == 0 || err.msg[0] == '\0' || r != -err.errnum) {
		abort();
	}
	json_decref(out);
	if (kind == CVM_HSM_BODY_TOKEN_FORM) {
		char *v = NULL;
		if (cvm_hsm_form_field(data + 1, size - 1, "client_secret", &v, &err) == 0 && v &&
		    strlen(v) > size)
			abort();
		free(v);
	}
	return 0;
}
