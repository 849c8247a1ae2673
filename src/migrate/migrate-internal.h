/* SPDX-License-Identifier: Apache-2.0 */
/* migrate module internals shared between ptable.c, rootfs.c, assess.c and mbr2gpt.c. */
#pragma once

#include <fcntl.h>
#include <stdio.h>
#include <string.h>

#include <opencvm/migrate.h>

static inline uint32_t mig_le32(const uint8_t *p)
{
	return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}
static inline uint64_t mig_le64(const uint8_t *p)
{
	return (uint64_t)mig_le32(p) | (uint64_t)mig_le32(p + 4) << 32;
}
static inline void mig_put_le32(uint8_t *p, uint32_t v)
{
	for (int i = 0; i < 4; i++)
		p[i] = (uint8_t)(v >> (8 * i));
}
static inline void mig_put_le64(uint8_t *p, uint64_t v)
{
	for (int i = 0; i < 8; i++)
		p[i] = (uint8_t)(v >> (8 * i));
}

/* CRC32 as GPT uses it (IEEE 802.3, reflected); crc = 0 to start. */
uint32_t mig_crc32(uint32_t crc, const uint8_t *p, size_t n);
const uint8_t *mig_guid_esp(void);

int mig_pread_full(int fd, void *buf, size_t len, uint64_t off, struct cvm_err *err);
int mig_pwrite_full(int fd, const void *buf, size_t len, uint64_t off, struct cvm_err *err);
int mig_fd_size(int fd, uint64_t *size, struct cvm_err *err);

/* ---- filesystems (libblkid probing at an offset) ---- */
struct mig_fsinfo {
	char type[16];   /* "ext4", "vfat", "ntfs", "xfs", "swap", "" when unknown */
	char uuid[40];
	char label[64];
};
int mig_probe_fs(const char *image, uint64_t offset, uint64_t size, struct mig_fsinfo *out,
		 struct cvm_err *err);

/* ---- ext2/3/4 read/write through libext2fs at a byte offset ---- */
struct mig_extfs;
int mig_extfs_open(const char *image, uint64_t offset, bool rw, struct mig_extfs **out,
		   struct cvm_err *err);
void mig_extfs_close(struct mig_extfs *fs);
/* Whole regular file (symlinks followed inside the filesystem), at most max bytes, NUL added.
 * -ENOENT when it does not exist. */
int mig_extfs_read(struct mig_extfs *fs, const char *path, size_t max, uint8_t **out,
		   size_t *len, struct cvm_err *err);
bool mig_extfs_exists(struct mig_extfs *fs, const char *path);
/* Names in a directory, NULL-terminated malloc'd array of malloc'd strings. */
int mig_extfs_list(struct mig_extfs *fs, const char *dir, char ***names, struct cvm_err *err);
void mig_strv_free(char **v);
/* Replace the contents of an existing regular file. */
int mig_extfs_rewrite(struct mig_extfs *fs, const char *path, const uint8_t *data, size_t len,
		      struct cvm_err *err);

/* ---- fstab ---- */
struct mig_fstab_entry {
	char spec[256], file[256], type[32];
};
/* Parse fstab text (comments and blank lines skipped); at most max entries. */
int mig_fstab_parse(const uint8_t *buf, size_t len, struct mig_fstab_entry *out, size_t max,
		    size_t *n, struct cvm_err *err);
/* True for kernel device names (/dev/sda1, /dev/vdb, /dev/hda2, /dev/xvda1, /dev/nvme0n1p1). */
bool mig_fstab_is_devname(const char *spec);

/* ---- QMP (vmsrc.c): one JSON command per line; events skipped ---- */
#include <jansson.h>
int mig_qmp_open(const char *path, FILE **out, struct cvm_err *err);
/* Takes cmd's reference; *ret (nullable) gets the "return" value (new reference). */
int mig_qmp_cmd(FILE *qmp, json_t *cmd, json_t **ret, struct cvm_err *err);

/* ---- running QEMU VM as a replication source (vmsrc.c): QMP dirty bitmaps + NBD ---- */
struct mig_vmsrc;
/* Connects to QMP, starts the pass (see vmsrc.c), exports the node over NBD and connects.
 * *incremental: the pass bitmap holds every change since the last successful pass. */
int mig_vmsrc_open(const char *qmp, const char *node, struct mig_vmsrc **out, uint64_t *size,
		   bool *incremental, struct cvm_err *err);
int mig_vmsrc_read(struct mig_vmsrc *v, void *buf, size_t len, uint64_t off, struct cvm_err *err);
/* Bit b of bits (nblocks bits) set when block b (bs bytes) holds a change. */
int mig_vmsrc_dirty(struct mig_vmsrc *v, uint32_t bs, uint64_t nblocks, uint8_t *bits,
		    uint64_t *ndirty, struct cvm_err *err);
/* Ends the pass: ok removes the pass bitmap, !ok folds it back into the tracking bitmap. */
void mig_vmsrc_finish(struct mig_vmsrc *v, bool ok);
