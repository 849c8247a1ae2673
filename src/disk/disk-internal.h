/* SPDX-License-Identifier: Apache-2.0 */
/* disk module internals: the parallel AES-XTS engine and libcryptsetup helpers. */
#pragma once

#include <opencvm/disk.h>

#include <libcryptsetup.h>

/* ---- byte ranges ----------------------------------------------------------------------- */
struct cvm_range {
	uint64_t start, end; /* [start, end) */
};
struct cvm_rangeset {
	struct cvm_range *r; /* sorted, disjoint */
	size_t n, cap;
};
void cvm_rangeset_free(struct cvm_rangeset *rs);
/* used.c: sector-aligned ranges of the source that ext2/3/4 file systems (whole device or
 * partitions) do not use. Refuses (-EINVAL) file systems that are not cleanly unmounted. */
int cvm_disk_free_ranges(int fd, const char *path, uint64_t size, uint32_t sector_size,
			 struct cvm_rangeset *out, struct cvm_err *err);

/* ---- engine (xts.c) ---------------------------------------------------------------------- */
/* Encrypt or decrypt `len` bytes from in_fd@in_off to out_fd@out_off with AES-256-XTS, one
 * sector_size unit at a time, IV = plain64 of the unit's offset from the region start counted
 * in 512-byte sectors — exactly what dm-crypt and cryptsetup do for LUKS2 aes-xts-plain64 (LUKS2
 * does not set iv_large_sectors, so with 4096-byte sectors the IV goes 0, 8, 16, ...; checked
 * byte for byte against cryptsetup in tests/integration/disk). Work starts at `start`
 * (bytes into the region, a multiple of the chunk size, for resume). Every checkpoint_ms the
 * calling thread fdatasyncs out_fd and calls checkpoint(ctx, done) with the offset below which
 * every byte is written and durable. */
struct cvm_xts_job {
	int in_fd, out_fd;
	uint64_t in_off, out_off;
	uint64_t len;
	uint64_t start;
	uint32_t sector_size;
	const uint8_t *key; /* CVM_DISK_VOLUME_KEY_LEN bytes */
	bool encrypt;
	/* rekey: when set, each unit is first decrypted with rekey_from (same IV), then encrypted
	 * with key (encrypt must be true) */
	const uint8_t *rekey_from;
	bool skip_holes;    /* leave chunks that are wholly holes in in_fd unwritten */
	const struct cvm_rangeset *skip; /* region ranges to leave unwritten (may be NULL) */
	unsigned threads;
	size_t chunk;
	unsigned checkpoint_ms;
	cvm_disk_progress_fn progress;
	void *progress_ctx;
	int (*checkpoint)(void *ctx, uint64_t done, struct cvm_err *err);
	void *checkpoint_ctx;
};
int cvm_xts_run(const struct cvm_xts_job *job, struct cvm_err *err);
/* One sector with IV = plain64(iv_sector), iv_sector in 512-byte units; for tests and checks. */
int cvm_xts_sector(const uint8_t *key, bool encrypt, uint64_t iv_sector, const uint8_t *in,
		   uint8_t *out, size_t sector_size, struct cvm_err *err);
/* len bytes of consecutive sectors (sector_size 512 or 4096, len a multiple of it), the first
 * with IV = plain64(iv_sector); in and out may be the same buffer. One key schedule for the
 * whole run, so random-access callers (writer.c) pay it once per call, not once per sector. */
int cvm_xts_sectors(const uint8_t *key, bool encrypt, uint64_t iv_sector, const uint8_t *in,
		    uint8_t *out, size_t len, size_t sector_size, struct cvm_err *err);

/* ---- the opencvm-progress token (token.c) ------------------------------------------------ */
/* {"type":"opencvm-progress","keyslots":[],"done":"N","total":"N","source_size":"N",
 *  "source_mtime_ns":"N","chunk":"N","sector_size":4096} */
struct cvm_disk_progress {
	uint64_t done, total, source_size, source_mtime_ns, chunk;
	uint32_t sector_size;
};
int cvm_disk_progress_json(const struct cvm_disk_progress *p, char **out, struct cvm_err *err);
/* Strict (buf, len) parser; errors prefixed "opencvm-progress token". */
int cvm_disk_progress_parse(const uint8_t *buf, size_t len, struct cvm_disk_progress *p,
			    struct cvm_err *err);

/* ---- single writer (disk.c) -------------------------------------------------------------- */
/* Exclusive open-file-description lock on the whole file (not flock: libcryptsetup flocks the
 * image for its metadata writes, and the two kinds do not interact); -EBUSY when another
 * writer holds it. Released when fd is closed. */
int cvm_disk_lock_writer(int fd, const char *path, struct cvm_err *err);

/* ---- libcryptsetup (luks.c) -------------------------------------------------------------- */
/* A loaded header with libcryptsetup's last error message captured for our cvm_err. */
struct cvm_luks {
	struct crypt_device *cd;
	char last_error[256];
};
int cvm_luks_open(const char *path, struct cvm_luks *l, struct cvm_err *err);
void cvm_luks_close(struct cvm_luks *l);
/* Set err from a libcryptsetup return code r, naming what failed. Returns a negative errno. */
int cvm_luks_err(struct cvm_luks *l, int r, struct cvm_err *err, const char *what);

/* Format path (existing file of its final size) as LUKS2 aes-xts-plain64 with data at
 * CVM_DISK_DATA_OFFSET, keyslot 0 = secret with cheap PBKDF2, optional fixed volume key. */
int cvm_luks_format(struct cvm_luks *l, const char *path, uint32_t sector_size,
		    const struct cvm_secret *secret, const struct cvm_secret *volume_key,
		    const struct cvm_disk_opts *opts, struct cvm_err *err);
/* The first token whose type is `type`; -ENOENT when none. *json is malloc'd (may be NULL). */
int cvm_luks_find_token(struct cvm_luks *l, const char *type, int *id, char **json,
			struct cvm_err *err);
/* Volume key via the keyslot passphrase; -EPERM when the passphrase does not open `keyslot`. */
int cvm_luks_volume_key(struct cvm_luks *l, int keyslot, const struct cvm_secret *pass,
			struct cvm_secret **vk, struct cvm_err *err);
/* Refuse anything but aes-xts-plain64 with a 64-byte key, iv offset 0, sector 512/4096, and a
 * data area that fits inside the file. */
int cvm_luks_check_layout(struct cvm_luks *l, uint64_t file_size, uint64_t *data_offset,
			  uint64_t *data_size, uint32_t *sector_size, struct cvm_err *err);
