/* SPDX-License-Identifier: Apache-2.0 */
/* Everything cvm-guest parses that comes from outside the TEE: the sev-guest ioctl response,
 * the extended-report certificate table, the host channel's reply lines, the attestation
 * service's token response and the orchestrator's release response. The first input byte picks
 * the parser so one corpus drives all five. */
#include <stdlib.h>
#include <string.h>

#include <opencvm/guest.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	if (size < 1)
		return 0;
	uint8_t which = data[0] % 5;
	data++;
	size--;
	struct cvm_err err = {0};
	switch (which) {
	case 0: {
		const uint8_t *report = NULL;
		size_t rlen = 0;
		if (cvm_guest_snp_parse_resp(data, size, &report, &rlen, &err) == 0 &&
		    (report < data || report + rlen > data + size))
			abort(); /* the report must lie inside the response */
		break;
	}
	case 1: {
		char *pem = NULL;
		if (cvm_guest_snp_certs_pem(data, size, &pem, &err) == 0)
			free(pem);
		break;
	}
	case 2: {
		uint8_t *out = NULL;
		size_t olen = 0;
		if (cvm_guest_emu_parse_reply((const char *)data, size, &out, &olen, &err) == 0)
			free(out);
		break;
	}
	case 3: {
		char *token = NULL;
		if (cvm_guest_parse_token(data, size, &token, &err) == 0)
			free(token);
		break;
	}
	default: {
		uint8_t *ct = NULL;
		size_t ctlen = 0;
		char *enc = NULL;
		if (cvm_guest_parse_release(data, size, &ct, &ctlen, &enc, &err) == 0) {
			free(ct);
			free(enc);
		}
		break;
	}
	}
	return 0;
}
