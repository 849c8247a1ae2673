/* SPDX-License-Identifier: Apache-2.0 */
/* --used-only: find the blocks ext2/3/4 file systems in a source image do not use, so the
 * engine can leave them unwritten. libblkid lists the partitions, libext2fs reads each file
 * system's block bitmap; anything that is not a cleanly unmounted ext file system is encrypted
 * whole. */
#include "disk-internal.h"

#include <blkid/blkid.h>
#include <et/com_err.h>
#include <ext2fs/ext2fs.h>
#include <string.h>

void cvm_rangeset_free(struct cvm_rangeset *rs)
{
	free(rs->r);
	memset(rs, 0, sizeof(*rs));
}

/* Add [start, end) shrunk inward to whole sectors. */
static int add_range(struct cvm_rangeset *rs, uint64_t start, uint64_t end, uint32_t ss,
		     struct cvm_err *err)
{
	start = (start + ss - 1) / ss * ss;
	end = end / ss * ss;
	if (end <= start)
		return 0;
	if (rs->n == rs->cap) {
		size_t cap = rs->cap ? rs->cap * 2 : 64;
		struct cvm_range *r = realloc(rs->r, cap * sizeof(*r));
		if (!r)
			return cvm_err_nomem(err);
		rs->r = r;
		rs->cap = cap;
	}
	rs->r[rs->n++] = (struct cvm_range){ .start = start, .end = end };
	return 0;
}

static int cmp_range(const void *a, const void *b)
{
	const struct cvm_range *x = a, *y = b;
	return x->start < y->start ? -1 : x->start > y->start;
}

/* Sort and merge touching or overlapping ranges. */
static void normalize(struct cvm_rangeset *rs)
{
	if (rs->n < 2)
		return;
	qsort(rs->r, rs->n, sizeof(*rs->r), cmp_range);
	size_t w = 0;
	for (size_t i = 1; i < rs->n; i++) {
		if (rs->r[i].start <= rs->r[w].end) {
			if (rs->r[i].end > rs->r[w].end)
				rs->r[w].end = rs->r[i].end;
		} else {
			rs->r[++w] = rs->r[i];
		}
	}
	rs->n = w + 1;
}

/* Free blocks of the ext file system at [off, limit), if there is one. */
static int ext_free(const char *path, uint64_t off, uint64_t limit, uint32_t ss,
		    struct cvm_rangeset *rs, struct cvm_err *err)
{
	char io_opts[48];
	snprintf(io_opts, sizeof(io_opts), "offset=%llu", (unsigned long long)off);
	ext2_filsys fs = NULL;
	errcode_t e = ext2fs_open2(path, io_opts, EXT2_FLAG_64BITS, 0, 0, unix_io_manager, &fs);
	if (e)
		return 0; /* not an ext file system: encrypted whole */
	int r = 0;
	struct ext2_super_block *sb = fs->super;
	uint64_t bs = fs->blocksize;
	blk64_t last = ext2fs_blocks_count(sb) - 1;
	/* A bitmap is only the truth about a file system that was cleanly unmounted: a journal
	 * still to replay may allocate blocks the bitmap calls free. */
	if (!(sb->s_state & EXT2_VALID_FS) || (sb->s_state & EXT2_ERROR_FS) ||
	    ext2fs_has_feature_journal_needs_recovery(sb)) {
		r = cvm_err_badparam(err,
				     "used_only: the ext file system at offset %llu was not cleanly "
				     "unmounted or has errors; run e2fsck on the source first",
				     (unsigned long long)off);
		goto out;
	}
	if (off + (last + 1) * bs > limit) {
		r = cvm_err_badparam(err,
				     "used_only: the ext file system at offset %llu is larger than "
				     "its partition",
				     (unsigned long long)off);
		goto out;
	}
	if ((e = ext2fs_read_block_bitmap(fs))) {
		r = cvm_err_set(err, EIO, "InternalError",
				"used_only: block bitmap of the file system at offset %llu: %s",
				(unsigned long long)off, error_message(e));
		goto out;
	}
	for (blk64_t b = sb->s_first_data_block; b <= last;) {
		blk64_t z, u;
		if (ext2fs_find_first_zero_block_bitmap2(fs->block_map, b, last, &z))
			break; /* no free block left */
		if (ext2fs_find_first_set_block_bitmap2(fs->block_map, z, last, &u))
			u = last + 1;
		if ((r = add_range(rs, off + z * bs, off + u * bs, ss, err)) < 0)
			goto out;
		b = u;
	}
out:
	ext2fs_close_free(&fs);
	return r;
}

int cvm_disk_free_ranges(int fd, const char *path, uint64_t size, uint32_t ss,
			 struct cvm_rangeset *out, struct cvm_err *err)
{
	memset(out, 0, sizeof(*out));
	blkid_probe pr = blkid_new_probe();
	if (!pr)
		return cvm_err_nomem(err);
	int r = 0;
	if (blkid_probe_set_device(pr, fd, 0, (blkid_loff_t)size) != 0) {
		r = cvm_err_internal(err, "used_only: cannot probe %s", path);
		goto out;
	}
	blkid_probe_enable_partitions(pr, 1);
	blkid_partlist ls = blkid_probe_get_partitions(pr);
	int n = ls ? blkid_partlist_numof_partitions(ls) : 0;
	if (n <= 0) {
		r = ext_free(path, 0, size, ss, out, err);
		goto out;
	}
	for (int i = 0; i < n && r == 0; i++) {
		blkid_partition par = blkid_partlist_get_partition(ls, i);
		blkid_loff_t start = blkid_partition_get_start(par);
		blkid_loff_t len = blkid_partition_get_size(par);
		if (start <= 0 || len <= 0 || (uint64_t)(start + len) * 512 > size)
			continue; /* not a region we can trust: leave it encrypted whole */
		r = ext_free(path, (uint64_t)start * 512, (uint64_t)(start + len) * 512, ss, out, err);
	}
out:
	blkid_free_probe(pr);
	if (r < 0)
		cvm_rangeset_free(out);
	else
		normalize(out);
	return r;
}
