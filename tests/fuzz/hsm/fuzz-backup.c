/* SPDX-License-Identifier: Apache-2.0 */
/* Arbitrary bytes through the key backup blob reader, three ways: as a blob (magic + sealed
 * envelope), as the decrypted payload JSON, and sealed under the fixed test domain's backup key
 * so the payload parser is reached through the envelope too; and as the keys.json of a full
 * backup (records with deleted state). */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "hsm/hsm-internal.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

/* the fixed test domain: 32 bytes of 0x11 (as tests/unit/hsm use) */
static struct cvm_secret *test_backup_key(void)
{
	uint8_t raw[32];
	memset(raw, 0x11, sizeof(raw));
	struct cvm_secret *domain = cvm_secret_from(raw, sizeof(raw)), *bk = NULL;
	struct cvm_err err = { 0 };
	if (domain && cvm_hsm_derive(domain, "opencvm key backup v1", &bk, &err) < 0)
		bk = NULL;
	cvm_secret_free(domain);
	return bk;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct cvm_err err = { 0 };
	struct cvm_hsm_backup *b = NULL;
	struct cvm_secret *bk = test_backup_key();
	if (!bk)
		abort();
	if (cvm_hsm_backup_open(bk, data, size, &b, &err) == 0)
		cvm_hsm_backup_free(b);
	b = NULL;
	if (cvm_hsm_backup_parse_payload(data, size, &b, &err) == 0) {
		/* an accepted payload must be internally consistent */
		if (!b->nversions || strlen(b->current_version) != 32)
			abort();
		cvm_hsm_backup_free(b);
	}
	struct cvm_hsm_full_data *fd = NULL;
	if (cvm_hsm_full_data_parse(data, size, &fd, &err) == 0) {
		for (size_t i = 1; i < fd->n; i++)
			if (!strcmp(fd->recs[i - 1]->name, fd->recs[i]->name))
				abort(); /* duplicates must have been refused */
		cvm_hsm_full_data_free(fd);
	}
	struct cvm_buf blob = { 0 };
	if (size <= 65536 && cvm_buf_append(&blob, "OCVMKB\x01", 7) == 0 &&
	    cvm_seal(bk, "opencvm key backup v1", strlen("opencvm key backup v1"), data, size, &blob,
		     &err) == 0) {
		b = NULL;
		int r1 = cvm_hsm_backup_open(bk, blob.data, blob.len, &b, &err);
		cvm_hsm_backup_free(b);
		b = NULL;
		int r2 = cvm_hsm_backup_parse_payload(data, size, &b, &err);
		cvm_hsm_backup_free(b);
		/* the envelope adds nothing but authentication: same verdict either way */
		if ((r1 == 0) != (r2 == 0))
			abort();
	}
	cvm_buf_free(&blob);
	cvm_secret_free(bk);
	return 0;
}
