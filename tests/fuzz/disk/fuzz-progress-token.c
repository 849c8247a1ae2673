/* SPDX-License-Identifier: Apache-2.0 */
/* libFuzzer: the opencvm-progress LUKS2 token parser (read back on resume). Anything it
 * accepts must be self-consistent and round-trip. */
#include "disk/disk-internal.h"

#include <string.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct cvm_disk_progress p, q;
	struct cvm_err err = { 0 };
	if (cvm_disk_progress_parse(data, size, &p, &err) < 0)
		return 0;
	if (p.done > p.total || p.chunk == 0 || p.chunk % 4096)
		__builtin_trap();
	char *json = NULL;
	if (cvm_disk_progress_json(&p, &json, &err) < 0 ||
	    cvm_disk_progress_parse((const uint8_t *)json, strlen(json), &q, &err) < 0 ||
	    p.done != q.done || p.total != q.total || p.source_size != q.source_size ||
	    p.source_mtime_ns != q.source_mtime_ns || p.chunk != q.chunk ||
	    p.sector_size != q.sector_size)
		__builtin_trap();
	free(json);
	return 0;
}
