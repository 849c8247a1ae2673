/* SPDX-License-Identifier: Apache-2.0 */
/* Filesystems inside an image, without mounting: libblkid probes a partition's superblock at
 * its byte offset, libext2fs reads (and for fstab, rewrites) files of an ext2/3/4 volume. */
#include "migrate-internal.h"

#include <blkid/blkid.h>
#include <ctype.h>
#include <et/com_err.h>
#include <ext2fs/ext2fs.h>
#include <unistd.h>

struct mig_extfs {
	ext2_filsys fs;
};

static int ext_err(struct cvm_err *err, errcode_t e, const char *what)
{
	return cvm_err_set(err, EIO, "InternalError", "%s: %s", what, error_message(e));
}

int mig_probe_fs(const char *image, uint64_t offset, uint64_t size, struct mig_fsinfo *out,
		 struct cvm_err *err)
{
	memset(out, 0, sizeof(*out));
	int fd = open(image, O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		return cvm_err_set(err, errno, "InternalError", "%s: %s", image, strerror(errno));
	blkid_probe pr = blkid_new_probe();
	int r = 0;
	if (!pr) {
		r = cvm_err_nomem(err);
		goto out;
	}
	if (blkid_probe_set_device(pr, fd, (blkid_loff_t)offset, (blkid_loff_t)size) < 0) {
		r = cvm_err_internal(err, "blkid: cannot probe %s at offset %llu", image,
				     (unsigned long long)offset);
		goto out;
	}
	blkid_probe_enable_superblocks(pr, 1);
	blkid_probe_set_superblocks_flags(pr, BLKID_SUBLKS_TYPE | BLKID_SUBLKS_UUID |
						      BLKID_SUBLKS_LABEL);
	blkid_probe_enable_partitions(pr, 0);
	int pr_rc = blkid_do_safeprobe(pr);
	if (pr_rc < 0 && pr_rc != -2) {
		r = cvm_err_internal(err, "blkid: probing %s at offset %llu failed", image,
				     (unsigned long long)offset);
		goto out;
	}
	if (pr_rc == -2) {
		snprintf(out->type, sizeof(out->type), "ambiguous");
		goto out;
	}
	const char *v;
	size_t vl;
	if (pr_rc == 0 && blkid_probe_lookup_value(pr, "TYPE", &v, &vl) == 0)
		snprintf(out->type, sizeof(out->type), "%s", v);
	if (pr_rc == 0 && blkid_probe_lookup_value(pr, "UUID", &v, &vl) == 0)
		snprintf(out->uuid, sizeof(out->uuid), "%s", v);
	if (pr_rc == 0 && blkid_probe_lookup_value(pr, "LABEL", &v, &vl) == 0)
		snprintf(out->label, sizeof(out->label), "%s", v);
out:
	if (pr)
		blkid_free_probe(pr);
	close(fd);
	return r;
}

int mig_extfs_open(const char *image, uint64_t offset, bool rw, struct mig_extfs **out,
		   struct cvm_err *err)
{
	initialize_ext2_error_table();
	char opts[64];
	snprintf(opts, sizeof(opts), "offset=%llu", (unsigned long long)offset);
	ext2_filsys fs = NULL;
	int flags = EXT2_FLAG_64BITS | (rw ? EXT2_FLAG_RW : 0);
	errcode_t e = ext2fs_open2(image, opts, flags, 0, 0, unix_io_manager, &fs);
	if (e)
		return ext_err(err, e, "ext4: open");
	if (rw && (fs->super->s_state & EXT2_ERROR_FS)) {
		ext2fs_close_free(&fs);
		return cvm_err_set(err, ENOTSUP, "BadParameter", "ext4: filesystem has errors "
				   "recorded; run e2fsck on it first");
	}
	if (rw && ext2fs_has_feature_journal_needs_recovery(fs->super)) {
		ext2fs_close_free(&fs);
		return cvm_err_set(err, ENOTSUP, "BadParameter", "ext4: journal needs recovery "
				   "(the source was not shut down cleanly); replay it with e2fsck "
				   "first");
	}
	/* Allocation updates the bitmaps; they must be loaded or the counts go stale. */
	if (rw && (e = ext2fs_read_bitmaps(fs))) {
		ext2fs_close_free(&fs);
		return ext_err(err, e, "ext4: reading bitmaps");
	}
	struct mig_extfs *x = calloc(1, sizeof(*x));
	if (!x) {
		ext2fs_close_free(&fs);
		return cvm_err_nomem(err);
	}
	x->fs = fs;
	*out = x;
	return 0;
}

void mig_extfs_close(struct mig_extfs *x)
{
	if (!x)
		return;
	ext2fs_close_free(&x->fs);
	free(x);
}

static int lookup(struct mig_extfs *x, const char *path, ext2_ino_t *ino, struct cvm_err *err)
{
	errcode_t e = ext2fs_namei_follow(x->fs, EXT2_ROOT_INO, EXT2_ROOT_INO, path, ino);
	if (e == EXT2_ET_FILE_NOT_FOUND || e == EXT2_ET_NO_DIRECTORY)
		return cvm_err_set(err, ENOENT, "NotFound", "ext4: %s: not found", path);
	if (e)
		return ext_err(err, e, path);
	return 0;
}

bool mig_extfs_exists(struct mig_extfs *x, const char *path)
{
	ext2_ino_t ino;
	struct cvm_err e = {0};
	return lookup(x, path, &ino, &e) == 0;
}

int mig_extfs_read(struct mig_extfs *x, const char *path, size_t max, uint8_t **out,
		   size_t *len, struct cvm_err *err)
{
	ext2_ino_t ino;
	int r = lookup(x, path, &ino, err);
	if (r < 0)
		return r;
	struct ext2_inode inode;
	errcode_t e = ext2fs_read_inode(x->fs, ino, &inode);
	if (e)
		return ext_err(err, e, path);
	if (!LINUX_S_ISREG(inode.i_mode))
		return cvm_err_badparam(err, "ext4: %s: not a regular file", path);
	uint64_t size = EXT2_I_SIZE(&inode);
	if (size > max)
		return cvm_err_set(err, E2BIG, "BadParameter", "ext4: %s: %llu bytes (limit %zu)",
				   path, (unsigned long long)size, max);
	_cleanup_free_ uint8_t *buf = malloc((size_t)size + 1);
	if (!buf)
		return cvm_err_nomem(err);
	ext2_file_t f;
	if ((e = ext2fs_file_open(x->fs, ino, 0, &f)))
		return ext_err(err, e, path);
	size_t got = 0;
	while (got < size) {
		unsigned int n = 0;
		e = ext2fs_file_read(f, buf + got, (unsigned int)(size - got), &n);
		if (e || n == 0)
			break;
		got += n;
	}
	ext2fs_file_close(f);
	if (e)
		return ext_err(err, e, path);
	if (got != size)
		return cvm_err_internal(err, "ext4: %s: short read (%zu of %llu bytes)", path, got,
					(unsigned long long)size);
	buf[size] = 0;
	*len = (size_t)size;
	*out = CVM_TAKE(buf);
	return 0;
}

void mig_strv_free(char **v)
{
	for (size_t i = 0; v && v[i]; i++)
		free(v[i]);
	free(v);
}

struct list_ctx {
	char **v;
	size_t n;
	int rc;
};

static int list_cb(ext2_ino_t dir, int entry, struct ext2_dir_entry *d, int offset,
		   int blocksize, char *buf, void *priv)
{
	struct list_ctx *c = priv;
	int nl = ext2fs_dirent_name_len(d);
	if ((nl == 1 && d->name[0] == '.') || (nl == 2 && d->name[0] == '.' && d->name[1] == '.'))
		return 0;
	char **v = realloc(c->v, (c->n + 2) * sizeof(*v));
	if (!v) {
		c->rc = -ENOMEM;
		return DIRENT_ABORT;
	}
	c->v = v;
	c->v[c->n] = strndup(d->name, (size_t)nl);
	if (!c->v[c->n]) {
		c->rc = -ENOMEM;
		return DIRENT_ABORT;
	}
	c->v[++c->n] = NULL;
	return 0;
}

int mig_extfs_list(struct mig_extfs *x, const char *dir, char ***names, struct cvm_err *err)
{
	ext2_ino_t ino;
	int r = lookup(x, dir, &ino, err);
	if (r < 0)
		return r;
	struct list_ctx c = {0};
	errcode_t e = ext2fs_dir_iterate2(x->fs, ino, 0, NULL, list_cb, &c);
	if (e || c.rc) {
		mig_strv_free(c.v);
		return c.rc ? cvm_err_nomem(err) : ext_err(err, e, dir);
	}
	if (!c.v && !(c.v = calloc(1, sizeof(char *))))
		return cvm_err_nomem(err);
	*names = c.v;
	return 0;
}

int mig_extfs_rewrite(struct mig_extfs *x, const char *path, const uint8_t *data, size_t len,
		      struct cvm_err *err)
{
	ext2_ino_t ino;
	int r = lookup(x, path, &ino, err);
	if (r < 0)
		return r;
	ext2_file_t f;
	errcode_t e = ext2fs_file_open(x->fs, ino, EXT2_FILE_WRITE, &f);
	if (e)
		return ext_err(err, e, path);
	size_t done = 0;
	while (!e && done < len) {
		unsigned int n = 0;
		e = ext2fs_file_write(f, data + done, (unsigned int)(len - done), &n);
		if (!e && n == 0)
			e = EXT2_ET_SHORT_WRITE;
		done += n;
	}
	/* Then cut to the new length so a shorter file leaves no tail of the old one. */
	if (!e)
		e = ext2fs_file_set_size2(f, len);
	errcode_t ce = ext2fs_file_close(f);
	if (e || ce)
		return ext_err(err, e ? e : ce, path);
	return 0;
}

/* ---- fstab -------------------------------------------------------------------------------- */
static size_t next_field(const char *line, size_t len, size_t *pos, char *out, size_t outlen)
{
	size_t i = *pos;
	while (i < len && isspace((unsigned char)line[i]))
		i++;
	size_t start = i;
	while (i < len && !isspace((unsigned char)line[i]))
		i++;
	size_t n = i - start;
	if (n >= outlen)
		n = outlen - 1;
	memcpy(out, line + start, n);
	out[n] = 0;
	*pos = i;
	return i - start;
}

int mig_fstab_parse(const uint8_t *buf, size_t len, struct mig_fstab_entry *out, size_t max,
		    size_t *n, struct cvm_err *err)
{
	size_t count = 0, pos = 0;
	const char *s = (const char *)buf;
	while (pos < len) {
		size_t eol = pos;
		while (eol < len && s[eol] != '\n')
			eol++;
		size_t p = pos;
		while (p < eol && isspace((unsigned char)s[p]))
			p++;
		if (p < eol && s[p] != '#') {
			if (count >= max)
				return cvm_err_set(err, E2BIG, "BadParameter",
						   "fstab: more than %zu entries", max);
			struct mig_fstab_entry *e = &out[count];
			size_t lp = p - pos;
			const char *line = s + pos;
			size_t ll = eol - pos;
			if (next_field(line, ll, &lp, e->spec, sizeof(e->spec)) == 0 ||
			    next_field(line, ll, &lp, e->file, sizeof(e->file)) == 0 ||
			    next_field(line, ll, &lp, e->type, sizeof(e->type)) == 0)
				return cvm_err_badparam(err, "fstab: entry %zu has fewer than 3 "
							"fields", count + 1);
			count++;
		}
		pos = eol + 1;
	}
	*n = count;
	return 0;
}

bool mig_fstab_is_devname(const char *spec)
{
	static const char *const prefixes[] = {"/dev/sd", "/dev/hd", "/dev/vd", "/dev/xvd",
					       "/dev/nvme", "/dev/mmcblk"};
	for (size_t i = 0; i < CVM_ARRAY_SIZE(prefixes); i++)
		if (cvm_str_startswith(spec, prefixes[i]))
			return true;
	return false;
}
