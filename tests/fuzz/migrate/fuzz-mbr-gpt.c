/* SPDX-License-Identifier: Apache-2.0 */
/* libFuzzer: the MBR and GPT parsers and the table reader. The input is a disk prefix:
 * sector 0 (MBR), sector 1 (GPT header), then the entry array; the same bytes are also read as
 * a whole (small) disk image through cvm_ptable_read_fd (EBR chains, backup GPT lookup).
 * Invariants: every refusal names a reason; accepted partitions lie inside the disk and the
 * usable range, and never overlap. */
#include <opencvm/migrate.h>

#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static struct cvm_part parts[CVM_PT_MAX_PARTS];
static struct cvm_ptable table;

static void check_parts(const struct cvm_part *p, size_t n, uint64_t lo, uint64_t hi)
{
	for (size_t i = 0; i < n; i++) {
		if (p[i].nsectors == 0 || p[i].start_lba < lo || p[i].start_lba + p[i].nsectors - 1 > hi)
			__builtin_trap();
		for (size_t k = 0; k < i; k++)
			if (p[i].start_lba < p[k].start_lba + p[k].nsectors &&
			    p[k].start_lba < p[i].start_lba + p[i].nsectors && !p[i].logical && !p[k].logical)
				__builtin_trap();
	}
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct cvm_err err = {0};
	struct cvm_mbr m;
	if (cvm_mbr_parse(data, size, &m, &err) < 0 && !err.msg[0])
		__builtin_trap();

	struct cvm_gpt_header h;
	cvm_err_clear(&err);
	if (size >= 512 && cvm_gpt_header_parse(data + 512, size - 512, 512, &h, &err) == 0) {
		size_t n = 0, off = 1024;
		cvm_err_clear(&err);
		if (cvm_gpt_entries_parse(&h, data + off, size - off, parts, CVM_PT_MAX_PARTS, &n,
					  &err) == 0)
			check_parts(parts, n, h.first_usable, h.last_usable);
		else if (!err.msg[0])
			__builtin_trap();
	} else if (size >= 512 && !err.msg[0]) {
		__builtin_trap();
	}

	/* Whole-image reader: bounded so the fuzzer stays fast (EBR links may point anywhere
	 * inside the file; beyond it reads fail cleanly). */
	if (size > (1u << 20))
		return 0;
	int fd = memfd_create("fuzz", MFD_CLOEXEC);
	if (fd < 0)
		return 0;
	if (write(fd, data, size) == (ssize_t)size) {
		cvm_err_clear(&err);
		if (cvm_ptable_read_fd(fd, &table, &err) == 0) {
			uint64_t sectors = table.disk_bytes / table.sector_size;
			if (table.nparts > CVM_PT_MAX_PARTS)
				__builtin_trap();
			if (table.nparts)
				check_parts(table.parts, table.nparts, 0, sectors - 1);
		} else if (!err.msg[0]) {
			__builtin_trap();
		}
	}
	close(fd);
	return 0;
}
