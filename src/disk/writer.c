/* SPDX-License-Identifier: Apache-2.0 */
/* Block writer: random-access encrypted writes into a complete confidential disk. The header
 * is read and the volume key recovered with libcryptsetup (luks.c); sectors are encrypted with
 * the module's AES-XTS (xts.c), so the bytes equal what dm-crypt writes for the same data. */
#include "disk-internal.h"

#include <fcntl.h>
#include <string.h>
#include <unistd.h>

/* Ciphertext staging per system call: bounds memory whatever the caller's length. */
#define WRITER_BUF (1024u * 1024u)

struct cvm_disk_writer {
	int fd;
	char *path;
	uint64_t data_offset, data_size;
	uint32_t sector_size;
	struct cvm_secret *vk;
	uint8_t *ct; /* WRITER_BUF bytes; only ever holds ciphertext */
};

static void luks_closep(struct cvm_luks *l) { cvm_luks_close(l); }

void cvm_disk_writer_close(struct cvm_disk_writer *w)
{
	if (!w)
		return;
	if (w->fd >= 0)
		close(w->fd);
	cvm_secret_free(w->vk);
	free(w->ct);
	free(w->path);
	free(w);
}
CVM_DEFINE_CLEANUP(struct cvm_disk_writer, cvm_disk_writer_close)

int cvm_disk_writer_open(const char *path, const struct cvm_secret *passphrase,
			 struct cvm_disk_writer **out, struct cvm_err *err)
{
	if (!out)
		return cvm_err_badparam(err, "out: required");
	*out = NULL;
	if (!path || !passphrase)
		return cvm_err_badparam(err, "path, passphrase: required");
	_cleanup_(luks_closep) struct cvm_luks l = { 0 };
	int r = cvm_luks_open(path, &l, err);
	if (r < 0)
		return r;
	int id;
	struct cvm_err ignored = { 0 };
	if (cvm_luks_find_token(&l, CVM_DISK_TOKEN_PROGRESS, &id, NULL, &ignored) == 0)
		return cvm_err_set(err, EBUSY, "Conflict",
				   "%s: encryption of this image has not finished (resume it)", path);
	_cleanup_(cvm_disk_writer_closep) struct cvm_disk_writer *w = calloc(1, sizeof(*w));
	if (!w)
		return cvm_err_nomem(err);
	w->fd = open(path, O_RDWR | O_CLOEXEC);
	if (w->fd < 0)
		return cvm_err_set(err, errno, "InternalError", "open %s: %s", path,
				   strerror(errno));
	/* one writer at a time: a second replication (or a resumed encryption) into the same
	 * image would interleave sectors */
	if ((r = cvm_disk_lock_writer(w->fd, path, err)) < 0)
		return r;
	/* lseek gives the size of regular files and block devices alike */
	off_t end = lseek(w->fd, 0, SEEK_END);
	if (end < 0)
		return cvm_err_set(err, errno, "InternalError", "size of %s: %s", path,
				   strerror(errno));
	if ((r = cvm_luks_check_layout(&l, (uint64_t)end, &w->data_offset, &w->data_size,
				       &w->sector_size, err)) < 0 ||
	    (r = cvm_luks_volume_key(&l, CRYPT_ANY_SLOT, passphrase, &w->vk, err)) < 0)
		return r;
	w->path = strdup(path);
	w->ct = malloc(WRITER_BUF);
	if (!w->path || !w->ct)
		return cvm_err_nomem(err);
	*out = CVM_TAKE(w);
	return 0;
}

uint64_t cvm_disk_writer_size(const struct cvm_disk_writer *w) { return w->data_size; }
uint32_t cvm_disk_writer_sector_size(const struct cvm_disk_writer *w) { return w->sector_size; }

/* Whole sectors, inside the volume (overflow-safe). */
static int check_range(const struct cvm_disk_writer *w, const void *buf, size_t len,
		       uint64_t off, const char *what, struct cvm_err *err)
{
	if (!w || (!buf && len))
		return cvm_err_badparam(err, "%s: writer and buffer required", what);
	if (len % w->sector_size || off % w->sector_size)
		return cvm_err_badparam(err, "%s: offset %llu and length %zu must be multiples of "
					"the sector size %u", what, (unsigned long long)off, len,
					w->sector_size);
	if (off > w->data_size || len > w->data_size - off)
		return cvm_err_badparam(err, "%s: %zu bytes at offset %llu end past the volume "
					"(%llu bytes)", what, len, (unsigned long long)off,
					(unsigned long long)w->data_size);
	return 0;
}

static int io_err(struct cvm_disk_writer *w, const char *what, uint64_t at, ssize_t n,
		  struct cvm_err *err)
{
	if (n < 0)
		return cvm_err_set(err, errno, "InternalError", "%s %s at %llu: %s", what,
				   w->path, (unsigned long long)at, strerror(errno));
	return cvm_err_set(err, EIO, "InternalError", "%s %s at %llu: short transfer", what,
			   w->path, (unsigned long long)at);
}

static int xts_span(struct cvm_disk_writer *w, bool encrypt, const uint8_t *in, uint8_t *out,
		    size_t n, uint64_t off, struct cvm_err *err)
{
	return cvm_xts_sectors(w->vk->data, encrypt, off / 512, in, out, n, w->sector_size, err);
}

int cvm_disk_writer_pwrite(struct cvm_disk_writer *w, const void *buf, size_t len,
			   uint64_t plaintext_offset, struct cvm_err *err)
{
	int r = check_range(w, buf, len, plaintext_offset, "disk writer: write", err);
	if (r < 0)
		return r;
	const uint8_t *p = buf;
	for (size_t done = 0; done < len;) {
		size_t n = len - done < WRITER_BUF ? len - done : WRITER_BUF;
		uint64_t off = plaintext_offset + done;
		if ((r = xts_span(w, true, p + done, w->ct, n, off, err)) < 0)
			return r;
		for (size_t put = 0; put < n;) {
			ssize_t k = pwrite(w->fd, w->ct + put, n - put,
					   (off_t)(w->data_offset + off + put));
			if (k < 0 && errno == EINTR)
				continue;
			if (k <= 0)
				return io_err(w, "write", off + put, k, err);
			put += (size_t)k;
		}
		done += n;
	}
	return 0;
}

int cvm_disk_writer_pread(struct cvm_disk_writer *w, void *buf, size_t len,
			  uint64_t plaintext_offset, struct cvm_err *err)
{
	int r = check_range(w, buf, len, plaintext_offset, "disk writer: read", err);
	if (r < 0)
		return r;
	uint8_t *p = buf;
	for (size_t done = 0; done < len;) {
		size_t n = len - done < WRITER_BUF ? len - done : WRITER_BUF;
		uint64_t off = plaintext_offset + done;
		for (size_t got = 0; got < n;) {
			ssize_t k = pread(w->fd, w->ct + got, n - got,
					  (off_t)(w->data_offset + off + got));
			if (k < 0 && errno == EINTR)
				continue;
			if (k <= 0)
				return io_err(w, "read", off + got, k, err);
			got += (size_t)k;
		}
		if ((r = xts_span(w, false, w->ct, p + done, n, off, err)) < 0)
			return r;
		done += n;
	}
	return 0;
}

int cvm_disk_writer_sync(struct cvm_disk_writer *w, struct cvm_err *err)
{
	if (!w)
		return cvm_err_badparam(err, "disk writer: required");
	if (fdatasync(w->fd) < 0)
		return cvm_err_set(err, errno, "InternalError", "fsync %s: %s", w->path,
				   strerror(errno));
	return 0;
}
