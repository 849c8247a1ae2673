/* SPDX-License-Identifier: Apache-2.0 */
/* libFuzzer: the opencvm-hsm LUKS2 token parser. Anything it accepts must serialize and parse
 * back to the same fields. */
#include <opencvm/disk.h>

#include <string.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct cvm_disk_hsm_token t, u;
	struct cvm_err err = { 0 };
	if (cvm_disk_hsm_token_parse(data, size, &t, &err) < 0) {
		if (!err.msg[0])
			__builtin_trap(); /* every refusal names a reason */
		return 0;
	}
	char *json = NULL;
	if (cvm_disk_hsm_token_json(&t, &json, &err) < 0 ||
	    cvm_disk_hsm_token_parse((const uint8_t *)json, strlen(json), &u, &err) < 0)
		__builtin_trap();
	if (t.keyslot != u.keyslot || t.version != u.version || strcmp(t.key_url, u.key_url) ||
	    strcmp(t.alg, u.alg) || strcmp(t.wrapped, u.wrapped) || strcmp(t.des, u.des))
		__builtin_trap();
	free(json);
	cvm_disk_hsm_token_clear(&t);
	cvm_disk_hsm_token_clear(&u);
	return 0;
}
