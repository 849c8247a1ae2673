/* SPDX-License-Identifier: Apache-2.0 */
/* Confidential disk operations: create, encrypt (resumable), decrypt, unlock, rotate, info. */
#include "disk-internal.h"

#include <fcntl.h>
#include <linux/fs.h>
#include <openssl/crypto.h>
#include <stdio.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <opencvm/json.h>

#define MIN_DATA (1024u * 1024u)

/* ---- small helpers ------------------------------------------------------------------------ */

static void closep(int *fd)
{
	if (*fd >= 0)
		close(*fd);
}
#define _cleanup_close_ _cleanup_(closep)

static void luks_closep(struct cvm_luks *l) { cvm_luks_close(l); }
#define _cleanup_luks_ _cleanup_(luks_closep)

static int sys_err(struct cvm_err *err, const char *what, const char *path)
{
	int e = errno ? errno : EIO;
	const char *code = e == ENOENT ? "NotFound" : e == EEXIST ? "Conflict" : "InternalError";
	return cvm_err_set(err, e, code, "%s %s: %s", what, path, strerror(e));
}

static int fsync_dir_of(const char *path, struct cvm_err *err)
{
	_cleanup_free_ char *dir = strdup(path);
	if (!dir)
		return cvm_err_nomem(err);
	char *slash = strrchr(dir, '/');
	const char *d = ".";
	if (slash == dir)
		d = "/";
	else if (slash) {
		*slash = '\0';
		d = dir;
	}
	_cleanup_close_ int fd = open(d, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (fd < 0 || fsync(fd) < 0)
		return sys_err(err, "fsync directory", d);
	return 0;
}

static int file_size_fd(int fd, const char *path, uint64_t *size, struct stat *st,
			struct cvm_err *err)
{
	if (fstat(fd, st) < 0)
		return sys_err(err, "stat", path);
	if (S_ISREG(st->st_mode)) {
		*size = (uint64_t)st->st_size;
	} else if (S_ISBLK(st->st_mode)) {
		if (ioctl(fd, BLKGETSIZE64, size) < 0)
			return sys_err(err, "BLKGETSIZE64", path);
	} else {
		return cvm_err_badparam(err, "%s: not a regular file or block device", path);
	}
	return 0;
}

/* A container format taken for raw data would give a disk the guest cannot boot: refuse the
 * ones qemu-img would have to convert first (their magic is at offset 0, VHD's footer at the
 * end), and LUKS itself (encrypting ciphertext again is never what was meant). */
static int refuse_container(int fd, uint64_t size, const char *src, struct cvm_err *err)
{
	uint8_t head[8] = { 0 }, foot[8] = { 0 };
	if (pread(fd, head, sizeof(head), 0) < 0 ||
	    (size >= 512 && pread(fd, foot, sizeof(foot), (off_t)(size - 512)) < 0))
		return cvm_err_set(err, errno, "InternalError", "source %s: read: %s", src,
				   strerror(errno));
	const char *fmt = NULL;
	if (memcmp(head, "QFI\xfb", 4) == 0)
		fmt = "qcow2";
	else if (memcmp(head, "KDMV", 4) == 0)
		fmt = "vmdk";
	else if (memcmp(head, "vhdxfile", 8) == 0)
		fmt = "vhdx";
	else if (memcmp(foot, "conectix", 8) == 0 && memcmp(head, "conectix", 8) == 0)
		fmt = "vhd (dynamic)";
	else if (memcmp(head, "LUKS\xba\xbe", 6) == 0)
		return cvm_err_badparam(err, "source %s: already a LUKS volume", src);
	if (fmt)
		return cvm_err_set(err, ENOTSUP, "BadParameter",
				   "source %s: a %s image, not raw; convert it first "
				   "(qemu-img convert -O raw)",
				   src, fmt);
	return 0;
}

/* A bare filesystem whose blocks are smaller than 4096 bytes cannot be mounted on a device
 * with 4096-byte logical blocks (ext4: "bad block size 1024"). */
static bool small_fs_blocks(const uint8_t *head, size_t n)
{
	/* ext2/3/4: superblock at 1024, magic 0xEF53 at +56, block size 1024 << s_log_block_size */
	if (n >= 1024 + 58 && head[1024 + 56] == 0x53 && head[1024 + 57] == 0xEF) {
		uint32_t lg = (uint32_t)head[1024 + 24] | (uint32_t)head[1024 + 25] << 8 |
			      (uint32_t)head[1024 + 26] << 16 | (uint32_t)head[1024 + 27] << 24;
		return lg < 2;
	}
	/* XFS: "XFSB", sb_sectsize (big-endian u16) at 102 */
	if (n >= 104 && memcmp(head, "XFSB", 4) == 0)
		return ((uint32_t)head[102] << 8 | head[103]) < 4096;
	return false;
}

/* 4096-byte sectors change the logical block size the guest sees behind dm-crypt; a partition
 * table written for 512-byte LBAs would then not be found, nor would a filesystem with smaller
 * blocks mount. So 4096 only when the source is a multiple of 4096 and carries neither an MBR
 * signature, a GPT header nor a small-block filesystem. */
static int auto_sector_size(int fd, uint64_t size, uint32_t *out, struct cvm_err *err)
{
	*out = 512;
	if (size % 4096)
		return 0;
	uint8_t head[2048];
	ssize_t n = pread(fd, head, sizeof(head), 0);
	if (n < 0)
		return cvm_err_set(err, errno, "InternalError", "source: read: %s", strerror(errno));
	bool mbr = n >= 512 && head[510] == 0x55 && head[511] == 0xAA;
	bool gpt = n >= 520 && memcmp(head + 512, "EFI PART", 8) == 0;
	if (!mbr && !gpt && !small_fs_blocks(head, (size_t)n))
		*out = 4096;
	return 0;
}

static int check_opts(const struct cvm_disk_opts *o, struct cvm_err *err)
{
	if (!o)
		return 0;
	if (o->sector_size && o->sector_size != 512 && o->sector_size != 4096)
		return cvm_err_badparam(err, "sector_size: must be 512 or 4096");
	if (o->chunk_size && (o->chunk_size % 4096 || o->chunk_size > (1u << 30)))
		return cvm_err_badparam(err, "chunk_size: must be a multiple of 4096 up to 1 GiB");
	if (o->label && strlen(o->label) > 47)
		return cvm_err_badparam(err, "label: at most 47 characters");
	if ((unsigned)o->kind > CVM_DISK_KIND_VMGS)
		return cvm_err_badparam(err, "kind: must be one of os, data, temp, vmgs");
	if (o->volume_key && o->volume_key->len != CVM_DISK_VOLUME_KEY_LEN)
		return cvm_err_badparam(err, "volume_key: must be %d bytes", CVM_DISK_VOLUME_KEY_LEN);
	return 0;
}

static int check_wrap_params(const struct cvm_disk_wrap_params *wp, struct cvm_err *err)
{
	if (!wp || !wp->kw || !wp->kw->wrap || !wp->kw->unwrap)
		return cvm_err_badparam(err, "keywrap: wrap and unwrap are required");
	if (!cvm_disk_key_url_valid(wp->key_url, false))
		return cvm_err_badparam(err, "key_url: expected http(s)://host/keys/<name>[/<version>]");
	if (!wp->alg || (strcmp(wp->alg, "RSA-OAEP-256") != 0 && strcmp(wp->alg, "A256KW") != 0))
		return cvm_err_set(err, ENOTSUP, "BadParameter",
				   "alg: must be one of RSA-OAEP-256, A256KW");
	if (!wp->des || !wp->des[0])
		return cvm_err_badparam(err, "des: required");
	return 0;
}

/* Wrap the secret through the key service and serialize the opencvm-hsm token. */
static int make_hsm_token(const struct cvm_disk_keywrap *kw, const char *key_url,
			  const char *alg, const char *des, int keyslot,
			  const struct cvm_secret *secret, char **json, struct cvm_err *err)
{
	struct cvm_disk_hsm_token t = { .keyslot = keyslot, .version = 1 };
	int r = kw->wrap(kw->ctx, key_url, alg, secret, &t.wrapped, &t.key_url, err);
	if (r < 0) {
		cvm_disk_hsm_token_clear(&t);
		return cvm_err_prefix(err, "wrap secret with %s", key_url);
	}
	t.alg = strdup(alg);
	t.des = strdup(des);
	if (!t.alg || !t.des)
		r = cvm_err_nomem(err);
	else
		r = cvm_disk_hsm_token_json(&t, json, err);
	cvm_disk_hsm_token_clear(&t);
	return r;
}

/* Unwrap the secret named by a parsed token and prove it opens the token's keyslot. */
static int unwrap_token(struct cvm_luks *l, const struct cvm_disk_keywrap *kw,
			const struct cvm_disk_hsm_token *t, struct cvm_secret **out,
			struct cvm_err *err)
{
	*out = NULL;
	if (!kw || !kw->unwrap)
		return cvm_err_badparam(err, "keywrap: unwrap is required");
	_cleanup_secret_ struct cvm_secret *s = NULL;
	int r = kw->unwrap(kw->ctx, t->key_url, t->alg, t->wrapped, &s, err);
	if (r < 0)
		return cvm_err_prefix(err, "unwrap secret with %s", t->key_url);
	if (!s || s->len != CVM_DISK_SECRET_LEN)
		return cvm_err_set(err, EBADMSG, "BadParameter",
				   "unwrapped secret: expected %d bytes", CVM_DISK_SECRET_LEN);
	r = crypt_activate_by_passphrase(l->cd, NULL, t->keyslot, (const char *)s->data, s->len, 0);
	if (r < 0)
		return cvm_err_set(err, EPERM, "Forbidden",
				   "unwrapped secret does not open keyslot %d", t->keyslot);
	*out = CVM_TAKE(s);
	return 0;
}

static int read_hsm_token(struct cvm_luks *l, int *id, struct cvm_disk_hsm_token *t,
			  struct cvm_err *err)
{
	_cleanup_free_ char *json = NULL;
	int r = cvm_luks_find_token(l, CVM_DISK_TOKEN_HSM, id, &json, err);
	if (r < 0)
		return r;
	return cvm_disk_hsm_token_parse((const uint8_t *)json, strlen(json), t, err);
}

/* Refuse images whose encryption has not finished. */
static int require_complete(struct cvm_luks *l, const char *path, struct cvm_err *err)
{
	int id;
	struct cvm_err ignored = { 0 };
	if (cvm_luks_find_token(l, CVM_DISK_TOKEN_PROGRESS, &id, NULL, &ignored) == 0)
		return cvm_err_set(err, EBUSY, "Conflict",
				   "%s: encryption of this image has not finished (resume it)", path);
	return 0;
}

/* ---- shared creation path ----------------------------------------------------------------- */
struct build {
	const char *dst;
	char *partial;
	struct cvm_luks luks;
	int fd;
	int lockfd;  /* holds the lock on an existing <dst>.partial while we resume it */
	int progress_id;
	struct cvm_disk_progress prog;
	struct cvm_secret *vk;
};

/* One writer per <dst>.partial: a second run on the same destination (a retry while the first
 * is still going) must not resume, delete or overwrite it. An open-file-description lock, not
 * flock: libcryptsetup flocks the image itself for its metadata writes, and the two kinds of
 * lock do not interact. */
int cvm_disk_lock_writer(int fd, const char *path, struct cvm_err *err)
{
	struct flock fl = { .l_type = F_WRLCK, .l_whence = SEEK_SET };
	if (fcntl(fd, F_OFD_SETLK, &fl) == 0)
		return 0;
	if (errno == EAGAIN || errno == EACCES)
		return cvm_err_set(err, EBUSY, "Conflict", "%s: another process is writing it", path);
	return sys_err(err, "lock", path);
}

/* Lock an existing <dst>.partial before looking at it (resume) or deleting it (start over). */
static int claim_partial(struct build *b, struct cvm_err *err)
{
	b->lockfd = open(b->partial, O_RDWR | O_CLOEXEC);
	if (b->lockfd < 0)
		return errno == ENOENT ? 0 : sys_err(err, "open", b->partial);
	return cvm_disk_lock_writer(b->lockfd, b->partial, err);
}

static void build_clear(struct build *b)
{
	cvm_luks_close(&b->luks);
	if (b->fd >= 0)
		close(b->fd);
	b->fd = -1;
	if (b->lockfd >= 0)
		close(b->lockfd);
	b->lockfd = -1;
	free(b->partial);
	b->partial = NULL;
	cvm_secret_free(b->vk);
	b->vk = NULL;
}

static int set_progress(struct build *b, struct cvm_err *err)
{
	_cleanup_free_ char *json = NULL;
	int r = cvm_disk_progress_json(&b->prog, &json, err);
	if (r < 0)
		return r;
	r = crypt_token_json_set(b->luks.cd, b->progress_id, json);
	if (r < 0)
		return cvm_luks_err(&b->luks, r, err, "write checkpoint");
	b->progress_id = r;
	if (fsync(b->fd) < 0)
		return sys_err(err, "fsync", b->partial);
	return 0;
}

static int checkpoint_cb(void *ctx, uint64_t done, struct cvm_err *err)
{
	struct build *b = ctx;
	b->prog.done = done;
	return set_progress(b, err);
}

/* A fresh <dst>.partial: sized, formatted, keyslot 0, then the progress token (when the data
 * area will be written), then the hsm token. The order makes every crash state recognisable:
 * no valid header or no hsm token and no progress token = header creation was cut short. */
static int build_header(struct build *b, uint64_t image_size, uint32_t sector_size,
			const struct cvm_disk_wrap_params *wp, const struct cvm_secret *secret,
			const struct cvm_disk_opts *opts, bool with_progress, struct cvm_err *err)
{
	b->fd = open(b->partial, O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
	if (b->fd < 0)
		return sys_err(err, "create", b->partial);
	int r = cvm_disk_lock_writer(b->fd, b->partial, err);
	if (r < 0)
		return r;
	if (ftruncate(b->fd, (off_t)image_size) < 0)
		return sys_err(err, "resize", b->partial);
	r = cvm_luks_format(&b->luks, b->partial, sector_size, secret,
				opts ? opts->volume_key : NULL, opts, err);
	if (r < 0)
		return r;
	b->progress_id = CRYPT_ANY_TOKEN;
	if (with_progress && (r = set_progress(b, err)) < 0)
		return r;
	if (wp) {
		_cleanup_free_ char *json = NULL;
		r = make_hsm_token(wp->kw, wp->key_url, wp->alg, wp->des, 0, secret, &json, err);
		if (r < 0)
			return r;
		r = crypt_token_json_set(b->luks.cd, CRYPT_ANY_TOKEN, json);
		if (r < 0)
			return cvm_luks_err(&b->luks, r, err, "write opencvm-hsm token");
	}
	if (fsync(b->fd) < 0)
		return sys_err(err, "fsync", b->partial);
	return 0;
}

/* Remove the progress token, then move <dst>.partial to <dst> (never replacing a file). */
static int build_finish(struct build *b, struct cvm_err *err)
{
	if (b->progress_id != CRYPT_ANY_TOKEN) {
		int r = crypt_token_json_set(b->luks.cd, b->progress_id, NULL);
		if (r < 0)
			return cvm_luks_err(&b->luks, r, err, "remove checkpoint");
	}
	if (fsync(b->fd) < 0)
		return sys_err(err, "fsync", b->partial);
	if (renameat2(AT_FDCWD, b->partial, AT_FDCWD, b->dst, RENAME_NOREPLACE) < 0)
		return sys_err(err, "rename to", b->dst);
	return fsync_dir_of(b->dst, err);
}

static int check_dst_free(const char *dst, struct cvm_err *err)
{
	struct stat st;
	if (lstat(dst, &st) == 0)
		return cvm_err_set(err, EEXIST, "Conflict", "%s: already exists", dst);
	if (errno != ENOENT)
		return sys_err(err, "stat", dst);
	return 0;
}

static int create_common(const char *path, uint64_t size, const struct cvm_disk_wrap_params *wp,
			 const struct cvm_disk_opts *opts, struct cvm_secret *secret,
			 struct cvm_err *err)
{
	int r = check_opts(opts, err);
	if (r < 0)
		return r;
	uint32_t ss = opts && opts->sector_size ? opts->sector_size : 4096;
	if (size % ss || size < (uint64_t)CVM_DISK_DATA_OFFSET + MIN_DATA)
		return cvm_err_badparam(err,
					"size: must be a multiple of %u and at least %u bytes", ss,
					CVM_DISK_DATA_OFFSET + MIN_DATA);
	if (size > (uint64_t)INT64_MAX)
		return cvm_err_badparam(err, "size: too large");
	if ((r = check_dst_free(path, err)) < 0)
		return r;
	struct build b = { .dst = path, .fd = -1, .lockfd = -1,
			   .partial = cvm_asprintf("%s.partial", path) };
	if (!b.partial)
		return cvm_err_nomem(err);
	if ((r = claim_partial(&b, err)) < 0) {
		build_clear(&b);
		return r;
	}
	(void)unlink(b.partial); /* a creation cut short; it never held data */
	r = build_header(&b, size, ss, wp, secret, opts, false, err);
	if (r >= 0)
		r = build_finish(&b, err);
	if (r < 0)
		(void)unlink(b.partial);
	build_clear(&b);
	return r;
}

int cvm_disk_create(const char *path, uint64_t size, const struct cvm_disk_wrap_params *wp,
		    const struct cvm_disk_opts *opts, struct cvm_err *err)
{
	if (!path)
		return cvm_err_badparam(err, "path: required");
	int r = check_wrap_params(wp, err);
	if (r < 0)
		return r;
	if (opts && opts->kind == CVM_DISK_KIND_TEMP)
		return cvm_err_badparam(err, "kind: temp disks are made by cvm_disk_create_temp");
	_cleanup_secret_ struct cvm_secret *secret = cvm_secret_random(CVM_DISK_SECRET_LEN);
	if (!secret)
		return cvm_err_internal(err, "cannot generate the disk secret");
	r = create_common(path, size, wp, opts, secret, err);
	if (r == 0)
		cvm_log_info("disk_created", "path=%s size=%llu des=%s kind=%s", path,
			     (unsigned long long)size, wp->des,
			     cvm_disk_kind_name(opts ? opts->kind : CVM_DISK_KIND_OS));
	return r;
}

int cvm_disk_create_temp(const char *path, uint64_t size, const struct cvm_disk_opts *opts,
			 struct cvm_secret **secret, struct cvm_err *err)
{
	*secret = NULL;
	if (!path)
		return cvm_err_badparam(err, "path: required");
	struct cvm_disk_opts o = opts ? *opts : (struct cvm_disk_opts){ 0 };
	o.kind = CVM_DISK_KIND_TEMP;
	_cleanup_secret_ struct cvm_secret *s = cvm_secret_random(CVM_DISK_SECRET_LEN);
	if (!s)
		return cvm_err_internal(err, "cannot generate the disk secret");
	int r = create_common(path, size, NULL, &o, s, err);
	if (r < 0)
		return r;
	*secret = CVM_TAKE(s);
	return 0;
}

/* ---- encrypt -------------------------------------------------------------------------------- */

/* Reopen an interrupted <dst>.partial. Returns 1 when it can be resumed (b filled), 0 when the
 * header creation itself was cut short (caller starts over), 2 when only the final rename is
 * missing, negative on error. */
static int resume_open(struct build *b, const struct cvm_disk_wrap_params *wp,
		       const struct cvm_disk_progress *want, const struct cvm_disk_opts *opts,
		       struct cvm_err *err)
{
	struct cvm_err ignored = { 0 };
	if (cvm_luks_open(b->partial, &b->luks, &ignored) < 0)
		return 0;
	int hsm_id;
	struct cvm_disk_hsm_token t = { 0 };
	int r = read_hsm_token(&b->luks, &hsm_id, &t, &ignored);
	if (r < 0) {
		cvm_luks_close(&b->luks);
		return 0;
	}
	_cleanup_free_ char *pjson = NULL;
	r = cvm_luks_find_token(&b->luks, CVM_DISK_TOKEN_PROGRESS, &b->progress_id, &pjson,
				&ignored);
	if (r < 0) {
		/* Only the rename is missing, if the file is the size this source would give. */
		b->progress_id = CRYPT_ANY_TOKEN;
		cvm_disk_hsm_token_clear(&t);
		struct stat st;
		if (stat(b->partial, &st) < 0 ||
		    (uint64_t)st.st_size != CVM_DISK_DATA_OFFSET + want->total) {
			cvm_luks_close(&b->luks);
			return 0;
		}
		b->fd = open(b->partial, O_RDWR | O_CLOEXEC);
		return b->fd < 0 ? sys_err(err, "open", b->partial) : 2;
	}
	r = cvm_disk_progress_parse((const uint8_t *)pjson, strlen(pjson), &b->prog, err);
	if (r >= 0 && (b->prog.source_size != want->source_size ||
		       b->prog.source_mtime_ns != want->source_mtime_ns ||
		       b->prog.total != want->total || b->prog.sector_size != want->sector_size))
		r = cvm_err_set(err, EEXIST, "Conflict",
				"%s: interrupted encryption of a different or modified source; "
				"delete it to start over",
				b->partial);
	_cleanup_secret_ struct cvm_secret *secret = NULL;
	if (r >= 0)
		r = unwrap_token(&b->luks, wp->kw, &t, &secret, err);
	if (r >= 0)
		r = cvm_luks_volume_key(&b->luks, t.keyslot, secret, &b->vk, err);
	cvm_disk_hsm_token_clear(&t);
	if (r >= 0 && opts && opts->volume_key &&
	    CRYPTO_memcmp(opts->volume_key->data, b->vk->data, CVM_DISK_VOLUME_KEY_LEN) != 0)
		r = cvm_err_badparam(err, "volume_key: differs from the interrupted run's key");
	if (r < 0)
		return cvm_err_prefix(err, "resume %s", b->partial);
	b->fd = open(b->partial, O_RDWR | O_CLOEXEC);
	if (b->fd < 0)
		return sys_err(err, "open", b->partial);
	cvm_log_info("disk_encrypt_resume", "path=%s done=%llu total=%llu", b->partial,
		     (unsigned long long)b->prog.done, (unsigned long long)b->prog.total);
	return 1;
}

static int encrypt_fresh(struct build *b, const struct cvm_disk_wrap_params *wp,
			 const struct cvm_disk_opts *opts, struct cvm_err *err)
{
	_cleanup_secret_ struct cvm_secret *secret = cvm_secret_random(CVM_DISK_SECRET_LEN);
	if (!secret)
		return cvm_err_internal(err, "cannot generate the disk secret");
	int r = build_header(b, CVM_DISK_DATA_OFFSET + b->prog.total, b->prog.sector_size, wp,
			     secret, opts, true, err);
	if (r >= 0)
		r = cvm_luks_volume_key(&b->luks, 0, secret, &b->vk, err);
	if (r >= 0 && crypt_get_data_offset(b->luks.cd) * 512 != CVM_DISK_DATA_OFFSET)
		r = cvm_err_internal(err, "LUKS2 format: unexpected data offset %llu",
				     (unsigned long long)crypt_get_data_offset(b->luks.cd) * 512);
	return r;
}

/* The shared path of encrypt and rekey: a new image at dst (via <dst>.partial, resumable) whose
 * data area is `size` bytes of in_fd from in_off, encrypted with a fresh volume key. With
 * old_vk the source is ciphertext under old_vk: each chunk is decrypted and re-encrypted in
 * memory, so no plaintext ever reaches a file. */
static int encrypt_into(int in, const char *src, uint64_t in_off, uint64_t size,
			const struct cvm_secret *old_vk, const struct cvm_rangeset *skip,
			const struct cvm_disk_progress *want, const char *dst,
			const struct cvm_disk_wrap_params *wp, const struct cvm_disk_opts *opts,
			struct cvm_err *err)
{
	int r;
	struct build b = { .dst = dst, .fd = -1, .lockfd = -1,
			   .partial = cvm_asprintf("%s.partial", dst) };
	if (!b.partial)
		return cvm_err_nomem(err);
	bool resumed = false;
	if ((r = claim_partial(&b, err)) < 0) {
		build_clear(&b);
		return r;
	}
	r = resume_open(&b, wp, want, opts, err);
	if (r == 2) {
		r = build_finish(&b, err);
		build_clear(&b);
		return r;
	}
	if (r == 1) {
		resumed = true;
	} else if (r == 0) {
		(void)unlink(b.partial);
		b.prog = *want;
		r = encrypt_fresh(&b, wp, opts, err);
		if (r < 0) {
			(void)unlink(b.partial); /* nothing of value yet */
			build_clear(&b);
			return r;
		}
	}
	if (r < 0) {
		build_clear(&b);
		return r;
	}
	struct cvm_xts_job job = {
		.in_fd = in,
		.out_fd = b.fd,
		.in_off = in_off,
		.out_off = CVM_DISK_DATA_OFFSET,
		.len = size,
		.start = b.prog.done,
		.sector_size = b.prog.sector_size,
		.key = b.vk->data,
		.encrypt = true,
		.rekey_from = old_vk ? old_vk->data : NULL,
		.skip_holes = opts && opts->skip_holes,
		.skip = skip,
		.threads = opts ? opts->threads : 0,
		.chunk = b.prog.chunk,
		.checkpoint_ms = opts ? opts->checkpoint_ms : 0,
		.progress = opts ? opts->progress : NULL,
		.progress_ctx = opts ? opts->progress_ctx : NULL,
		.checkpoint = checkpoint_cb,
		.checkpoint_ctx = &b,
	};
	uint64_t t0 = cvm_monotonic_ns();
	r = cvm_xts_run(&job, err);
	if (r < 0)
		cvm_err_prefix(err, "%s %s (interrupted work kept in %s; rerun to resume)",
			       old_vk ? "rekey" : "encrypt", src, b.partial);
	if (r >= 0)
		r = build_finish(&b, err);
	if (r >= 0) {
		uint64_t ms = (cvm_monotonic_ns() - t0) / 1000000u;
		cvm_log_info(old_vk ? "disk_rekeyed" : "disk_encrypted",
			     "src=%s dst=%s bytes=%llu ms=%llu resumed=%d", src, dst,
			     (unsigned long long)size, (unsigned long long)ms, resumed);
	}
	build_clear(&b);
	return r;
}


int cvm_disk_encrypt_image(const char *src, const char *dst,
			   const struct cvm_disk_wrap_params *wp, const struct cvm_disk_opts *opts,
			   struct cvm_err *err)
{
	if (!src || !dst)
		return cvm_err_badparam(err, "src, dst: required");
	int r = check_wrap_params(wp, err);
	if (r < 0 || (r = check_opts(opts, err)) < 0)
		return r;
	if (opts && opts->kind == CVM_DISK_KIND_TEMP)
		return cvm_err_badparam(err, "kind: a temp disk is never made from an image");
	_cleanup_close_ int in = open(src, O_RDONLY | O_CLOEXEC);
	if (in < 0)
		return sys_err(err, "open source", src);
	struct stat st;
	uint64_t size;
	if ((r = file_size_fd(in, src, &size, &st, err)) < 0)
		return r;
	if ((r = refuse_container(in, size, src, err)) < 0)
		return r;
	if (size == 0 || size % 512)
		return cvm_err_badparam(err, "source %s: size %llu is not a non-zero multiple of 512",
					src, (unsigned long long)size);
	if (size > (uint64_t)INT64_MAX - CVM_DISK_DATA_OFFSET)
		return cvm_err_badparam(err, "source %s: too large", src);
	if ((r = check_dst_free(dst, err)) < 0)
		return r;

	struct cvm_disk_progress want = {
		.total = size,
		.source_size = size,
		.source_mtime_ns = (uint64_t)st.st_mtim.tv_sec * 1000000000ull +
				   (uint64_t)st.st_mtim.tv_nsec,
		.chunk = opts && opts->chunk_size ? opts->chunk_size : 4u * 1024u * 1024u,
	};
	if (opts && opts->sector_size)
		want.sector_size = opts->sector_size;
	else if ((r = auto_sector_size(in, size, &want.sector_size, err)) < 0)
		return r;
	if (size % want.sector_size)
		return cvm_err_badparam(err, "source %s: size is not a multiple of sector size %u",
					src, want.sector_size);

	/* free blocks are found before anything is created, so a refusal leaves nothing behind */
	_cleanup_(cvm_rangeset_free) struct cvm_rangeset skip = { 0 };
	if (opts && opts->used_only) {
		if ((r = cvm_disk_free_ranges(in, src, size, want.sector_size, &skip, err)) < 0)
			return r;
		uint64_t skipped = 0;
		for (size_t i = 0; i < skip.n; i++)
			skipped += skip.r[i].end - skip.r[i].start;
		cvm_log_info("disk_used_only", "src=%s free_bytes=%llu ranges=%zu", src,
			     (unsigned long long)skipped, skip.n);
	}
	return encrypt_into(in, src, 0, size, NULL, &skip, &want, dst, wp, opts, err);
}

int cvm_disk_rekey(const char *src, const char *dst, const struct cvm_secret *passphrase,
		   const struct cvm_disk_wrap_params *wp, const struct cvm_disk_opts *opts,
		   struct cvm_err *err)
{
	if (!src || !dst || !passphrase)
		return cvm_err_badparam(err, "src, dst, passphrase: required");
	int r = check_wrap_params(wp, err);
	if (r < 0 || (r = check_opts(opts, err)) < 0)
		return r;
	if (opts && (opts->skip_holes || opts->used_only))
		return cvm_err_badparam(err, "skip_holes, used_only: not meaningful for rekey");
	_cleanup_luks_ struct cvm_luks l = { 0 };
	if ((r = cvm_luks_open(src, &l, err)) < 0 || (r = require_complete(&l, src, err)) < 0)
		return r;
	_cleanup_close_ int in = open(src, O_RDONLY | O_CLOEXEC);
	if (in < 0)
		return sys_err(err, "open", src);
	struct stat st;
	uint64_t fsize, off, len;
	uint32_t ss;
	if ((r = file_size_fd(in, src, &fsize, &st, err)) < 0 ||
	    (r = cvm_luks_check_layout(&l, fsize, &off, &len, &ss, err)) < 0)
		return r;
	if (opts && opts->sector_size && opts->sector_size != ss)
		return cvm_err_badparam(err, "sector_size: rekey keeps the source's %u", ss);
	_cleanup_secret_ struct cvm_secret *old_vk = NULL;
	if ((r = cvm_luks_volume_key(&l, CRYPT_ANY_SLOT, passphrase, &old_vk, err)) < 0)
		return r;
	cvm_luks_close(&l);
	if ((r = check_dst_free(dst, err)) < 0)
		return r;
	struct cvm_disk_progress want = {
		.total = len,
		.source_size = fsize,
		.source_mtime_ns = (uint64_t)st.st_mtim.tv_sec * 1000000000ull +
				   (uint64_t)st.st_mtim.tv_nsec,
		.chunk = opts && opts->chunk_size ? opts->chunk_size : 4u * 1024u * 1024u,
		.sector_size = ss,
	};
	return encrypt_into(in, src, off, len, old_vk, NULL, &want, dst, wp, opts, err);
}

/* ---- decrypt, unlock, rotate, info ------------------------------------------------------------ */

int cvm_disk_decrypt_image(const char *src, const char *dst, const struct cvm_secret *passphrase,
			   const struct cvm_disk_opts *opts, struct cvm_err *err)
{
	if (!src || !dst || !passphrase)
		return cvm_err_badparam(err, "src, dst, passphrase: required");
	int r = check_opts(opts, err);
	if (r < 0)
		return r;
	_cleanup_luks_ struct cvm_luks l = { 0 };
	if ((r = cvm_luks_open(src, &l, err)) < 0 || (r = require_complete(&l, src, err)) < 0)
		return r;
	_cleanup_close_ int in = open(src, O_RDONLY | O_CLOEXEC);
	if (in < 0)
		return sys_err(err, "open", src);
	struct stat st;
	uint64_t fsize, off, len;
	uint32_t ss;
	if ((r = file_size_fd(in, src, &fsize, &st, err)) < 0 ||
	    (r = cvm_luks_check_layout(&l, fsize, &off, &len, &ss, err)) < 0)
		return r;
	_cleanup_secret_ struct cvm_secret *vk = NULL;
	if ((r = cvm_luks_volume_key(&l, CRYPT_ANY_SLOT, passphrase, &vk, err)) < 0)
		return r;
	if ((r = check_dst_free(dst, err)) < 0)
		return r;
	_cleanup_close_ int out = open(dst, O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
	if (out < 0)
		return sys_err(err, "create", dst);
	if (ftruncate(out, (off_t)len) < 0) {
		r = sys_err(err, "resize", dst);
	} else {
		struct cvm_xts_job job = {
			.in_fd = in, .out_fd = out, .in_off = off, .out_off = 0, .len = len,
			.sector_size = ss, .key = vk->data, .encrypt = false,
			.threads = opts ? opts->threads : 0,
			.chunk = opts ? opts->chunk_size : 0,
			.progress = opts ? opts->progress : NULL,
			.progress_ctx = opts ? opts->progress_ctx : NULL,
		};
		r = cvm_xts_run(&job, err);
		if (r < 0)
			cvm_err_prefix(err, "decrypt %s", src);
	}
	if (r < 0)
		(void)unlink(dst); /* a partial plaintext is worth nothing and must not linger */
	return r;
}

static int compare_sector(int img, int src, uint64_t off, uint32_t ss, uint64_t idx,
			  const uint8_t *vk, struct cvm_err *err)
{
	uint8_t ct[4096], pt[4096], want[4096];
	ssize_t a = pread(img, ct, ss, (off_t)(off + idx * ss));
	ssize_t b = pread(src, want, ss, (off_t)(idx * ss));
	if (a != (ssize_t)ss || b != (ssize_t)ss)
		return cvm_err_set(err, EIO, "InternalError", "verify: cannot read sector %llu",
				   (unsigned long long)idx);
	int r = cvm_xts_sector(vk, false, idx * ss / 512, ct, pt, ss, err);
	if (r < 0)
		return r;
	bool same = CRYPTO_memcmp(pt, want, ss) == 0;
	OPENSSL_cleanse(pt, sizeof(pt));
	OPENSSL_cleanse(want, sizeof(want));
	if (!same)
		return cvm_err_set(err, EBADMSG, "BadParameter",
				   "verify: sector %llu does not decrypt to the source",
				   (unsigned long long)idx);
	return 0;
}

int cvm_disk_verify(const char *path, const struct cvm_secret *passphrase, const char *src,
		    unsigned samples, struct cvm_err *err)
{
	if (!path || !passphrase)
		return cvm_err_badparam(err, "path, passphrase: required");
	_cleanup_luks_ struct cvm_luks l = { 0 };
	int r;
	if ((r = cvm_luks_open(path, &l, err)) < 0 || (r = require_complete(&l, path, err)) < 0)
		return r;
	_cleanup_close_ int img = open(path, O_RDONLY | O_CLOEXEC);
	if (img < 0)
		return sys_err(err, "open", path);
	struct stat st;
	uint64_t fsize, off, len;
	uint32_t ss;
	if ((r = file_size_fd(img, path, &fsize, &st, err)) < 0 ||
	    (r = cvm_luks_check_layout(&l, fsize, &off, &len, &ss, err)) < 0)
		return r;
	_cleanup_secret_ struct cvm_secret *vk = NULL;
	if ((r = cvm_luks_volume_key(&l, CRYPT_ANY_SLOT, passphrase, &vk, err)) < 0 || !src)
		return r;
	_cleanup_close_ int in = open(src, O_RDONLY | O_CLOEXEC);
	if (in < 0)
		return sys_err(err, "open source", src);
	uint64_t ssize;
	if ((r = file_size_fd(in, src, &ssize, &st, err)) < 0)
		return r;
	if (ssize != len)
		return cvm_err_set(err, EBADMSG, "BadParameter",
				   "verify: source is %llu bytes, the encrypted volume %llu",
				   (unsigned long long)ssize, (unsigned long long)len);
	uint64_t nsec = len / ss, n = samples ? samples : 64;
	if (n > nsec)
		n = nsec;
	for (uint64_t i = 0; i < n; i++) {
		/* first and last always, the rest evenly spread */
		uint64_t idx = n == 1 ? 0 : i * (nsec - 1) / (n - 1);
		if ((r = compare_sector(img, in, off, ss, idx, vk->data, err)) < 0)
			return r;
	}
	return 0;
}

int cvm_disk_unlock_secret(const char *path, const struct cvm_disk_keywrap *kw,
			   struct cvm_secret **secret, struct cvm_err *err)
{
	*secret = NULL;
	if (!path)
		return cvm_err_badparam(err, "path: required");
	_cleanup_luks_ struct cvm_luks l = { 0 };
	int r, id;
	if ((r = cvm_luks_open(path, &l, err)) < 0 || (r = require_complete(&l, path, err)) < 0)
		return r;
	struct cvm_disk_hsm_token t = { 0 };
	if ((r = read_hsm_token(&l, &id, &t, err)) < 0)
		return cvm_err_prefix(err, "%s", path);
	r = unwrap_token(&l, kw, &t, secret, err);
	cvm_disk_hsm_token_clear(&t);
	return r;
}

/* Re-wraps of one image are serialized across processes (cvmd's automatic rotation and a
 * manual `cvm disk rotate` may meet): an open-file-description lock on one byte of the image,
 * away from the bytes QEMU locks (100.. and 200..) so a running VM does not block it, taken
 * before the header is loaded so each re-wrap starts from the other's result. A writer holding
 * the whole-file lock (cvm_disk_lock_writer) makes us wait; after ROTATE_LOCK_WAIT_MS: -EBUSY. */
#define ROTATE_LOCK_BYTE 4000
#define ROTATE_LOCK_WAIT_MS 30000

static int lock_rotate(int fd, const char *path, struct cvm_err *err)
{
	struct flock fl = { .l_type = F_WRLCK, .l_whence = SEEK_SET, .l_start = ROTATE_LOCK_BYTE,
			    .l_len = 1 };
	for (unsigned waited = 0;; waited += 100) {
		if (fcntl(fd, F_OFD_SETLK, &fl) == 0)
			return 0;
		if (errno != EAGAIN && errno != EACCES)
			return sys_err(err, "lock", path);
		if (waited >= ROTATE_LOCK_WAIT_MS)
			return cvm_err_set(err, EBUSY, "Conflict",
					   "%s: another process is re-wrapping or writing it", path);
		usleep(100 * 1000);
	}
}

/* "https://a/keys/n/v" and "https://b/keys/n/v" name the same key version. */
static bool same_key_version(const char *a, const char *b)
{
	const char *ka = a ? strstr(a, "/keys/") : NULL, *kb = b ? strstr(b, "/keys/") : NULL;
	return ka && kb && strcmp(ka, kb) == 0;
}

/* Token i parsed when it is an opencvm-hsm token (false for any other or a malformed one). */
static bool hsm_token_at(struct cvm_luks *l, int i, struct cvm_disk_hsm_token *t)
{
	const char *type = NULL, *json = NULL;
	crypt_token_info st = crypt_token_status(l->cd, i, &type);
	if (st == CRYPT_TOKEN_INVALID || st == CRYPT_TOKEN_INACTIVE || !type ||
	    strcmp(type, CVM_DISK_TOKEN_HSM) != 0 || crypt_token_json_get(l->cd, i, &json) < 0)
		return false;
	struct cvm_err ignored = { 0 };
	return cvm_disk_hsm_token_parse((const uint8_t *)json, strlen(json), t, &ignored) == 0;
}

/* After the kept token is proven: drop every other opencvm-hsm token of the same keyslot (the
 * old one, and any a re-wrap killed between its two header writes left behind). Each removal
 * is one header write, and the kept token is already on disk. *dropped counts them. */
static int drop_other_tokens(struct cvm_luks *l, int keep, int keyslot, int *dropped,
			     struct cvm_err *err)
{
	*dropped = 0;
	for (int i = 0; i < 32; i++) {
		struct cvm_disk_hsm_token t = { 0 };
		bool same_slot = i != keep && hsm_token_at(l, i, &t) && t.keyslot == keyslot;
		cvm_disk_hsm_token_clear(&t);
		if (!same_slot)
			continue;
		int r = crypt_token_json_set(l->cd, i, NULL);
		if (r < 0)
			return cvm_luks_err(l, r, err, "remove old opencvm-hsm token");
		(*dropped)++;
	}
	return 0;
}

/* The image already has a token for the asked-for version (another re-wrap got there first, or
 * one was killed before it removed the old token): *found tells. When other tokens remain,
 * prove that one (unwrap, open the keyslot) and drop the rest, as the re-wrap would have. */
static int settle_on(struct cvm_luks *l, const struct cvm_disk_keywrap *kw, const char *key_url,
		     const char *alg, bool *found, struct cvm_err *err)
{
	*found = false;
	int id = -1, n = 0;
	_cleanup_(cvm_disk_hsm_token_clear) struct cvm_disk_hsm_token keep = { 0 };
	for (int i = 0; i < 32; i++) {
		struct cvm_disk_hsm_token t = { 0 };
		if (hsm_token_at(l, i, &t)) {
			n++;
			if (id < 0 && same_key_version(t.key_url, key_url) && !strcmp(t.alg, alg)) {
				id = i;
				keep = t;
				continue;
			}
		}
		cvm_disk_hsm_token_clear(&t);
	}
	if (id < 0)
		return 0;
	*found = true;
	if (n == 1)
		return 0;
	_cleanup_secret_ struct cvm_secret *s = NULL;
	int dropped, r = unwrap_token(l, kw, &keep, &s, err);
	if (r < 0)
		return cvm_err_prefix(err, "token for %s (others kept)", keep.key_url);
	return drop_other_tokens(l, id, keep.keyslot, &dropped, err);
}

int cvm_disk_rotate_to(const char *path, const struct cvm_disk_keywrap *kw,
		       const char *new_key_url, const char *alg, bool *changed,
		       struct cvm_err *err)
{
	if (changed)
		*changed = false;
	if (!path || !kw || !kw->wrap || !kw->unwrap)
		return cvm_err_badparam(err, "path, keywrap: required");
	struct cvm_disk_wrap_params wp = { .kw = kw, .key_url = new_key_url, .alg = alg,
					   .des = "-" };
	int r = check_wrap_params(&wp, err);
	if (r < 0)
		return r;
	_cleanup_close_ int fd = open(path, O_RDWR | O_CLOEXEC);
	if (fd < 0)
		return sys_err(err, "open", path);
	if ((r = lock_rotate(fd, path, err)) < 0)
		return r;
	_cleanup_luks_ struct cvm_luks l = { 0 };
	int old_id, new_id;
	if ((r = cvm_luks_open(path, &l, err)) < 0 || (r = require_complete(&l, path, err)) < 0)
		return r;
	_cleanup_(cvm_disk_hsm_token_clear) struct cvm_disk_hsm_token old = { 0 };
	_cleanup_(cvm_disk_hsm_token_clear) struct cvm_disk_hsm_token cur = { 0 };
	_cleanup_secret_ struct cvm_secret *secret = NULL, *check = NULL;
	_cleanup_free_ char *json = NULL;
	bool found = false;
	if (cvm_disk_key_url_valid(new_key_url, true) &&
	    ((r = settle_on(&l, kw, new_key_url, alg, &found, err)) < 0 || found))
		return r;
	if ((r = read_hsm_token(&l, &old_id, &old, err)) < 0)
		return r;
	if ((r = unwrap_token(&l, kw, &old, &secret, err)) < 0)
		return r;
	if ((r = make_hsm_token(kw, new_key_url, alg, old.des, old.keyslot, secret, &json, err)) < 0)
		return r;
	new_id = crypt_token_json_set(l.cd, CRYPT_ANY_TOKEN, json);
	if (new_id < 0)
		return cvm_luks_err(&l, new_id, err, "write new opencvm-hsm token");
	/* Prove the new wrap unlocks before dropping the old one: read it back as any reader
	 * would, unwrap through the key service, open the keyslot. */
	const char *back = NULL;
	r = crypt_token_json_get(l.cd, new_id, &back);
	if (r < 0)
		r = cvm_luks_err(&l, r, err, "read new token");
	else
		r = cvm_disk_hsm_token_parse((const uint8_t *)back, strlen(back), &cur, err);
	if (r >= 0)
		r = unwrap_token(&l, kw, &cur, &check, err);
	if (r >= 0 && !cvm_secret_eq(check, secret->data, secret->len))
		r = cvm_err_internal(err, "new token unwraps to a different secret");
	if (r < 0) {
		(void)crypt_token_json_set(l.cd, new_id, NULL);
		return cvm_err_prefix(err, "rotate %s (old token kept)", path);
	}
	int dropped;
	if ((r = drop_other_tokens(&l, new_id, cur.keyslot, &dropped, err)) < 0)
		return r;
	if (changed)
		*changed = true;
	cvm_log_info("disk_rotated", "path=%s old_kid=%s new_kid=%s", path, old.key_url,
		     cur.key_url);
	return 0;
}

int cvm_disk_rotate(const char *path, const struct cvm_disk_keywrap *kw, const char *new_key_url,
		    const char *alg, struct cvm_err *err)
{
	return cvm_disk_rotate_to(path, kw, new_key_url, alg, NULL, err);
}

void cvm_disk_info_clear(struct cvm_disk_info *info)
{
	if (info)
		cvm_disk_hsm_token_clear(&info->hsm);
}

int cvm_disk_info(const char *path, struct cvm_disk_info *out, struct cvm_err *err)
{
	memset(out, 0, sizeof(*out));
	if (!path)
		return cvm_err_badparam(err, "path: required");
	_cleanup_luks_ struct cvm_luks l = { 0 };
	int r = cvm_luks_open(path, &l, err);
	if (r < 0)
		return r;
	struct stat st;
	if (stat(path, &st) < 0)
		return sys_err(err, "stat", path);
	uint64_t fsize = (uint64_t)st.st_size;
	if (S_ISBLK(st.st_mode)) {
		_cleanup_close_ int fd = open(path, O_RDONLY | O_CLOEXEC);
		if (fd < 0 || (r = file_size_fd(fd, path, &fsize, &st, err)) < 0)
			return fd < 0 ? sys_err(err, "open", path) : r;
	}
	if ((r = cvm_luks_check_layout(&l, fsize, &out->data_offset, &out->data_size,
				       &out->sector_size, err)) < 0)
		return r;
	snprintf(out->uuid, sizeof(out->uuid), "%s", crypt_get_uuid(l.cd) ?: "");
	snprintf(out->cipher, sizeof(out->cipher), "%s-%s", crypt_get_cipher(l.cd),
		 crypt_get_cipher_mode(l.cd));
	const char *sub = crypt_get_subsystem(l.cd), *label = crypt_get_label(l.cd);
	struct cvm_err ignored = { 0 };
	if (sub && cvm_str_startswith(sub, "opencvm-") &&
	    cvm_disk_kind_parse(sub + 8, &out->kind, &ignored) == 0)
		out->has_kind = true;
	snprintf(out->label, sizeof(out->label), "%s", label ? label : "");
	int id;
	_cleanup_free_ char *pjson = NULL;
	out->complete = true;
	if (cvm_luks_find_token(&l, CVM_DISK_TOKEN_PROGRESS, &id, &pjson, &ignored) == 0) {
		struct cvm_disk_progress p = { 0 };
		out->complete = false;
		if ((r = cvm_disk_progress_parse((const uint8_t *)pjson, strlen(pjson), &p, err)) < 0)
			return r;
		out->progress_done = p.done;
	}
	_cleanup_free_ char *hjson = NULL;
	r = cvm_luks_find_token(&l, CVM_DISK_TOKEN_HSM, &id, &hjson, &ignored);
	if (r == 0) {
		if ((r = cvm_disk_hsm_token_parse((const uint8_t *)hjson, strlen(hjson), &out->hsm,
						  err)) < 0)
			return cvm_err_prefix(err, "%s", path);
		out->has_hsm_token = true;
	}
	return 0;
}
