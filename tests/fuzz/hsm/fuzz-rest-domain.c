/* SPDX-License-Identifier: Apache-2.0 */
/* Arbitrary request bodies through the security domain routes' body parsers (rest-domain.c):
 * the first byte picks POST /securitydomain/download (even) or POST /securitydomain/upload
 * (odd), the rest is the body. Parsing and shape checks only; no state is touched. An accepted
 * download holds 3..10 distinct officer SPKI PEMs and a quorum 2..n; an accepted upload 2..10
 * ciphertexts of the exchange key's size and an optional security_domain object. A refusal
 * leaves the output empty and names a field with a status-bearing errno. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "hsm/rest-internal.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static void check_refusal(int r, const struct cvm_err *err)
{
	if (r >= 0 || err->errnum == 0 || err->msg[0] == '\0' || r != -err->errnum)
		abort();
}

static void download(const uint8_t *data, size_t size)
{
	struct cvm_err err = { 0 };
	struct rest_sd_download d;
	int r = rest_sd_parse_download(data, size, &d, &err);
	if (r < 0) {
		check_refusal(r, &err);
		for (size_t i = 0; i < REST_SD_OFFICERS_MAX; i++)
			if (d.pems[i])
				abort();
		if (d.n || d.quorum)
			abort();
		return;
	}
	if (d.n < REST_SD_OFFICERS_MIN || d.n > REST_SD_OFFICERS_MAX || d.quorum < 2 ||
	    d.quorum > d.n)
		abort();
	for (size_t i = 0; i < d.n; i++) {
		if (!d.pems[i] || strncmp(d.pems[i], "-----BEGIN PUBLIC KEY-----", 26))
			abort();
		for (size_t j = 0; j < i; j++)
			if (!strcmp(d.pems[i], d.pems[j]))
				abort();
	}
	rest_sd_download_clear(&d);
}

static void upload(const uint8_t *data, size_t size)
{
	struct cvm_err err = { 0 };
	struct rest_sd_upload u;
	int r = rest_sd_parse_upload(data, size, &u, &err);
	if (r < 0) {
		check_refusal(r, &err);
		for (size_t i = 0; i < REST_SD_OFFICERS_MAX; i++)
			if (u.shares[i])
				abort();
		if (u.n || u.security_domain)
			abort();
		return;
	}
	if (u.n < 2 || u.n > REST_SD_OFFICERS_MAX ||
	    (u.security_domain && !json_is_object(u.security_domain)))
		abort();
	for (size_t i = 0; i < REST_SD_OFFICERS_MAX; i++) {
		if ((i < u.n) != (u.shares[i] != NULL))
			abort();
		volatile uint8_t x = 0; /* the whole ciphertext is readable (ASan checks bounds) */
		for (size_t k = 0; u.shares[i] && k < REST_SD_SHARE_BYTES; k++)
			x ^= u.shares[i][k];
		(void)x;
	}
	rest_sd_upload_clear(&u);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	if (size < 1)
		return 0;
	if (data[0] % 2 == 0)
		download(data + 1, size - 1);
	else
		upload(data + 1, size - 1);
	return 0;
}
