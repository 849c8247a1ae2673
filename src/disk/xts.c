/* SPDX-License-Identifier: Apache-2.0 */
/* The data path: AES-256-XTS over large chunks, a worker pool, pread/pwrite, checkpoints.
 *
 * Each worker owns an AES-256-XTS context keyed once and a small page-aligned buffer; it claims the
 * next chunk index and goes through the chunk in pieces of PIECE bytes: read a piece, transform
 * it in place sector by sector (only the IV changes per sector), write it. A piece fits in the
 * core's L2 cache, so the kernel's copy into the buffer, the cipher and the kernel's copy out of
 * it all hit the cache (a whole 4 MiB chunk would go through DRAM three times). Workers run
 * read/encrypt/write independently, so while one waits on I/O the others keep the cores busy:
 * that is the pipeline. Chunks stay the unit of claiming and of checkpoints. The calling thread
 * only reports progress and writes checkpoints; a chunk counts as done once its last pwrite
 * returned, and the checkpoint offset is the first chunk not yet done, made durable by
 * fdatasync before it is recorded. */
#include "disk-internal.h"

#include <openssl/core_dispatch.h>
#include <openssl/evp.h>
#include <openssl/provider.h>
#include <pthread.h>
#include <string.h>
#include <strings.h>
#include <time.h>
#include <unistd.h>

#define DEFAULT_CHUNK (4u * 1024u * 1024u)
/* Bytes per read/transform/write inside a chunk: a multiple of 4096, small enough to stay in
 * L2 beside the kernel's page-cache lines (measured on tmpfs: 256 KiB uses ~7% less CPU than
 * whole 4 MiB chunks; 64 KiB is no better and costs more system calls). */
#define PIECE (256u * 1024u)
#define MAX_THREADS 256u

/* EVP_CipherInit_ex with nothing but a new IV costs 110 to 150 ns on OpenSSL 3.0 (it reads
 * the IV length back through OSSL_PARAM lookups on every call): as much as the cipher itself
 * on a 512-byte sector. The workers therefore call the AES-256-XTS implementation that
 * EVP_CIPHER_fetch selects through its provider dispatch table (public provider API), whose
 * init with only an IV is a copy. Anything missing, or a first sector that differs from EVP's:
 * EVP is used. cvm_xts_sectors always uses EVP, so the tests compare the two. */
struct xts_impl {
	EVP_CIPHER *cipher; /* held for the run: keeps the provider loaded */
	const OSSL_PROVIDER *prov;
	const OSSL_ALGORITHM *algs;
	void *provctx;
	OSSL_FUNC_cipher_newctx_fn *newctx;
	OSSL_FUNC_cipher_freectx_fn *freectx;
	OSSL_FUNC_cipher_encrypt_init_fn *einit;
	OSSL_FUNC_cipher_decrypt_init_fn *dinit;
	OSSL_FUNC_cipher_update_fn *update;
};

struct engine {
	const struct cvm_xts_job *job;
	uint64_t nchunks;
	uint64_t first;       /* first chunk index to do (resume) */
	struct xts_impl impl; /* the provider's XTS functions (impl.update NULL: EVP only) */
	pthread_mutex_t lock;
	pthread_cond_t cond;
	uint64_t next;        /* next chunk to claim */
	uint64_t watermark;   /* chunks [first, watermark) all done */
	uint8_t *done;        /* per-chunk flag, indices relative to first */
	uint64_t bytes_done;  /* including the resumed prefix */
	unsigned running;
	bool failed;
	struct cvm_err err;   /* first worker error */
};

/* One keyed AES-256-XTS context: the provider's (algctx) or EVP's. */
struct xts_cipher {
	const struct xts_impl *impl;
	void *algctx;
	EVP_CIPHER_CTX *evp;
	bool encrypt;
};

/* names is "NAME:NAME:..." as providers list them */
static bool has_name(const char *names, const char *want)
{
	size_t n = strlen(want);
	for (const char *p = names; p && *p; p = strchr(p, ':') ? strchr(p, ':') + 1 : NULL)
		if (strncasecmp(p, want, n) == 0 && (p[n] == '\0' || p[n] == ':'))
			return true;
	return false;
}

static void impl_release(struct xts_impl *x)
{
	if (x->algs)
		OSSL_PROVIDER_unquery_operation(x->prov, OSSL_OP_CIPHER, x->algs);
	EVP_CIPHER_free(x->cipher);
	memset(x, 0, sizeof(*x));
}

/* Fill x with the dispatch functions, or leave x->update NULL. */
static void impl_find(struct xts_impl *x)
{
	memset(x, 0, sizeof(*x));
	int no_store = 0;
	if (!(x->cipher = EVP_CIPHER_fetch(NULL, "AES-256-XTS", NULL)) ||
	    !(x->prov = EVP_CIPHER_get0_provider(x->cipher)) ||
	    !(x->algs = OSSL_PROVIDER_query_operation(x->prov, OSSL_OP_CIPHER, &no_store)))
		goto none;
	x->provctx = OSSL_PROVIDER_get0_provider_ctx(x->prov);
	const OSSL_ALGORITHM *a = x->algs;
	while (a->algorithm_names && !has_name(a->algorithm_names, "AES-256-XTS"))
		a++;
	for (const OSSL_DISPATCH *d = a->algorithm_names ? a->implementation : NULL;
	     d && d->function_id; d++) {
		switch (d->function_id) {
		case OSSL_FUNC_CIPHER_NEWCTX: x->newctx = OSSL_FUNC_cipher_newctx(d); break;
		case OSSL_FUNC_CIPHER_FREECTX: x->freectx = OSSL_FUNC_cipher_freectx(d); break;
		case OSSL_FUNC_CIPHER_ENCRYPT_INIT: x->einit = OSSL_FUNC_cipher_encrypt_init(d); break;
		case OSSL_FUNC_CIPHER_DECRYPT_INIT: x->dinit = OSSL_FUNC_cipher_decrypt_init(d); break;
		case OSSL_FUNC_CIPHER_UPDATE: x->update = OSSL_FUNC_cipher_update(d); break;
		default: break;
		}
	}
	if (x->newctx && x->freectx && x->einit && x->dinit && x->update)
		return;
none:
	impl_release(x);
}

static int direct_init(const struct xts_cipher *c, const uint8_t *key, const uint8_t *iv)
{
	return (c->encrypt ? c->impl->einit : c->impl->dinit)(c->algctx, key,
							      key ? CVM_DISK_VOLUME_KEY_LEN : 0,
							      iv, iv ? 16 : 0, NULL);
}

/* One unit (sector) with its IV. */
static int cipher_unit(const struct xts_cipher *c, const uint8_t iv[16], const uint8_t *in,
		       uint8_t *out, size_t n)
{
	if (c->algctx) {
		size_t outl = 0;
		return direct_init(c, NULL, iv) &&
		       c->impl->update(c->algctx, out, &outl, n, in, n) && outl == n ? 0 : -1;
	}
	int outl = 0;
	return EVP_CipherInit_ex(c->evp, NULL, NULL, NULL, iv, -1) &&
	       EVP_CipherUpdate(c->evp, out, &outl, in, (int)n) && (size_t)outl == n ? 0 : -1;
}

static void cipher_free(struct xts_cipher *c)
{
	if (c->algctx)
		c->impl->freectx(c->algctx); /* the provider cleanses its key schedule */
	EVP_CIPHER_CTX_free(c->evp);
	memset(c, 0, sizeof(*c));
}

/* Key c through EVP, then through impl (may be NULL) if its first sector equals EVP's. */
static int cipher_key(struct xts_cipher *c, const struct xts_impl *impl, const uint8_t *key,
		      bool encrypt)
{
	memset(c, 0, sizeof(*c));
	c->encrypt = encrypt;
	if (!(c->evp = EVP_CIPHER_CTX_new()) ||
	    !EVP_CipherInit_ex(c->evp, EVP_aes_256_xts(), NULL, key, NULL, encrypt))
		return -1;
	if (!impl || !impl->update || !(c->algctx = impl->newctx(impl->provctx)))
		return 0;
	c->impl = impl;
	uint8_t iv[16] = { 1 }, in[512] = { 0 }, a[512], b[512];
	void *algctx = c->algctx;
	bool same = direct_init(c, key, NULL) && cipher_unit(c, iv, in, a, sizeof(a)) == 0;
	c->algctx = NULL;
	same = same && cipher_unit(c, iv, in, b, sizeof(b)) == 0 && memcmp(a, b, sizeof(a)) == 0;
	OPENSSL_cleanse(a, sizeof(a));
	OPENSSL_cleanse(b, sizeof(b));
	if (same)
		c->algctx = algctx;
	else
		impl->freectx(algctx);
	return 0;
}

/* len bytes (whole units of sector_size) in place or out of place; the unit at byte
 * k * sector_size gets IV = plain64(sector + k * sector_size / 512). One keyed context for the
 * whole run: only the IV is reset per unit. */
static int xts_units(const struct xts_cipher *c, uint64_t sector, const uint8_t *in,
		     uint8_t *out, size_t len, size_t sector_size)
{
	uint64_t step = sector_size / 512;
	for (size_t off = 0; off < len; off += sector_size, sector += step) {
		uint8_t iv[16] = { 0 };
		for (int i = 0; i < 8; i++)
			iv[i] = (uint8_t)(sector >> (8 * i));
		if (cipher_unit(c, iv, in + off, out + off, sector_size) < 0)
			return -1;
	}
	return 0;
}

int cvm_xts_sectors(const uint8_t *key, bool encrypt, uint64_t iv_sector, const uint8_t *in,
		    uint8_t *out, size_t len, size_t sector_size, struct cvm_err *err)
{
	if ((sector_size != 512 && sector_size != 4096) || len % sector_size)
		return cvm_err_badparam(err, "xts: %zu bytes are not whole %zu-byte sectors", len,
					sector_size);
	struct xts_cipher c;
	int r = 0;
	if (cipher_key(&c, NULL, key, encrypt) < 0 ||
	    xts_units(&c, iv_sector, in, out, len, sector_size) < 0)
		r = cvm_err_openssl(err, EIO, "aes-256-xts");
	cipher_free(&c);
	return r;
}

int cvm_xts_sector(const uint8_t *key, bool encrypt, uint64_t iv_sector, const uint8_t *in,
		   uint8_t *out, size_t sector_size, struct cvm_err *err)
{
	return cvm_xts_sectors(key, encrypt, iv_sector, in, out, sector_size, sector_size, err);
}

static int full_pread(int fd, uint8_t *buf, size_t len, uint64_t off, struct cvm_err *err)
{
	size_t got = 0;
	while (got < len) {
		ssize_t n = pread(fd, buf + got, len - got, (off_t)(off + got));
		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0)
			return cvm_err_set(err, errno, "InternalError", "read at offset %llu: %s",
					   (unsigned long long)(off + got), strerror(errno));
		if (n == 0)
			return cvm_err_set(err, EIO, "InternalError",
					   "read: unexpected end of file at offset %llu (file truncated?)",
					   (unsigned long long)(off + got));
		got += (size_t)n;
	}
	return 0;
}

static int full_pwrite(int fd, const uint8_t *buf, size_t len, uint64_t off, struct cvm_err *err)
{
	size_t put = 0;
	while (put < len) {
		ssize_t n = pwrite(fd, buf + put, len - put, (off_t)(off + put));
		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0)
			return cvm_err_set(err, n < 0 ? errno : EIO, "InternalError",
					   "write at offset %llu: %s", (unsigned long long)(off + put),
					   n < 0 ? strerror(errno) : "no progress");
		put += (size_t)n;
	}
	return 0;
}

static int transform(const struct xts_cipher *ctx, const struct xts_cipher *from,
		     const struct cvm_xts_job *job, uint8_t *buf, size_t len, uint64_t region_off,
		     struct cvm_err *err)
{
	/* dm-crypt counts the plain64 IV in 512-byte units whatever the LUKS2 sector size (no
	 * iv_large_sectors for LUKS2), so a 4096-byte sector's IV advances by 8. */
	uint64_t sector = region_off / 512;
	if (from && xts_units(from, sector, buf, buf, len, job->sector_size) < 0)
		return cvm_err_openssl(err, EIO, "aes-256-xts (old key)");
	if (xts_units(ctx, sector, buf, buf, len, job->sector_size) < 0)
		return cvm_err_openssl(err, EIO, "aes-256-xts");
	return 0;
}

/* The first range that ends after off (binary search). */
static void first_overlap(const struct cvm_rangeset *rs, uint64_t off, const struct cvm_range **out)
{
	size_t lo = 0, hi = rs->n;
	while (lo < hi) {
		size_t mid = lo + (hi - lo) / 2;
		if (rs->r[mid].end <= off)
			lo = mid + 1;
		else
			hi = mid;
	}
	*out = rs->r + lo;
}

/* Read, transform and write [off, off + len) of the region, leaving the skipped ranges
 * unwritten. */
static int do_piece(const struct cvm_xts_job *job, const struct xts_cipher *ctx,
		    const struct xts_cipher *from,
		    uint8_t *buf, uint64_t off, size_t len, struct cvm_err *err)
{
	const struct cvm_range *rng = NULL, *rend = NULL;
	if (job->skip && job->skip->n) {
		first_overlap(job->skip, off, &rng);
		rend = job->skip->r + job->skip->n;
		if (rng < rend && rng->start <= off && rng->end >= off + len)
			return 0; /* nothing to write here */
	}
	int r = full_pread(job->in_fd, buf, len, job->in_off + off, err);
	if (r < 0)
		return cvm_err_prefix(err, "source");
	r = transform(ctx, from, job, buf, len, off, err);
	if (r < 0)
		return r;
	/* write everything but the skipped ranges */
	uint64_t pos = off;
	for (; rng && rng < rend && rng->start < off + len; rng++) {
		if (rng->start > pos && (r = full_pwrite(job->out_fd, buf + (pos - off),
							  rng->start - pos,
							  job->out_off + pos, err)) < 0)
			return cvm_err_prefix(err, "destination");
		if (rng->end > pos)
			pos = rng->end;
	}
	if (pos < off + len &&
	    (r = full_pwrite(job->out_fd, buf + (pos - off), off + len - pos, job->out_off + pos,
			     err)) < 0)
		return cvm_err_prefix(err, "destination");
	return 0;
}

static int do_chunk(struct engine *e, const struct xts_cipher *ctx,
		    const struct xts_cipher *from, uint8_t *buf, uint64_t idx, struct cvm_err *err)
{
	const struct cvm_xts_job *job = e->job;
	uint64_t off = idx * job->chunk;
	size_t len = (size_t)(job->len - off < job->chunk ? job->len - off : job->chunk);
	if (job->skip_holes) {
		/* the next data at or after the chunk start lies beyond it: the chunk is a hole (the
		 * file offset lseek moves is unused: all I/O here is pread/pwrite) */
		off_t data = lseek(job->in_fd, (off_t)(job->in_off + off), SEEK_DATA);
		if ((data < 0 && errno == ENXIO) ||
		    (data >= 0 && (uint64_t)data >= job->in_off + off + len))
			return 0;
	}
	for (size_t done = 0; done < len;) {
		size_t n = len - done < PIECE ? len - done : PIECE;
		int r = do_piece(job, ctx, from, buf, off + done, n, err);
		if (r < 0)
			return r;
		done += n;
	}
	return 0;
}

static void finish_chunk(struct engine *e, uint64_t idx, int r, const struct cvm_err *err)
{
	pthread_mutex_lock(&e->lock);
	if (r < 0) {
		if (!e->failed)
			e->err = *err;
		e->failed = true;
	} else {
		uint64_t off = idx * e->job->chunk;
		e->bytes_done += e->job->len - off < e->job->chunk ? e->job->len - off
								    : e->job->chunk;
		e->done[idx - e->first] = 1;
		while (e->watermark < e->nchunks && e->done[e->watermark - e->first])
			e->watermark++;
	}
	pthread_cond_signal(&e->cond);
	pthread_mutex_unlock(&e->lock);
}

static void *worker(void *arg)
{
	struct engine *e = arg;
	const struct cvm_xts_job *job = e->job;
	struct cvm_err err = { 0 };
	size_t bufsize = job->chunk < PIECE ? job->chunk : PIECE;
	uint8_t *buf = NULL;
	struct xts_cipher ctx = { 0 }, from = { 0 };
	int r = 0;
	if (posix_memalign((void **)&buf, 4096, bufsize) != 0)
		r = cvm_err_nomem(&err);
	else if (cipher_key(&ctx, &e->impl, job->key, job->encrypt) < 0 ||
		 (job->rekey_from && cipher_key(&from, &e->impl, job->rekey_from, false) < 0))
		r = cvm_err_openssl(&err, EIO, "aes-256-xts key setup");
	if (r < 0)
		finish_chunk(e, 0, r, &err);
	while (r == 0) {
		pthread_mutex_lock(&e->lock);
		bool stop = e->failed || e->next >= e->nchunks;
		uint64_t idx = e->next;
		if (!stop)
			e->next++;
		pthread_mutex_unlock(&e->lock);
		if (stop)
			break;
		r = do_chunk(e, &ctx, job->rekey_from ? &from : NULL, buf, idx, &err);
		finish_chunk(e, idx, r, &err);
	}
	cipher_free(&ctx);
	cipher_free(&from);
	if (buf) {
		/* plaintext passed through this buffer */
		OPENSSL_cleanse(buf, bufsize);
		free(buf);
	}
	pthread_mutex_lock(&e->lock);
	e->running--;
	pthread_cond_signal(&e->cond);
	pthread_mutex_unlock(&e->lock);
	return NULL;
}

static unsigned default_threads(void)
{
	long n = sysconf(_SC_NPROCESSORS_ONLN);
	return n > 0 ? (unsigned)n : 1;
}

static int check_job(const struct cvm_xts_job *job, struct cvm_err *err)
{
	if (job->sector_size != 512 && job->sector_size != 4096)
		return cvm_err_badparam(err, "sector_size: must be 512 or 4096");
	if (job->len % job->sector_size)
		return cvm_err_badparam(err, "length %llu: not a multiple of the sector size %u",
					(unsigned long long)job->len, job->sector_size);
	if (job->chunk == 0 || job->chunk % 4096 || job->chunk > (1u << 30))
		return cvm_err_badparam(err, "chunk_size: must be a multiple of 4096 up to 1 GiB");
	if (job->start > job->len || (job->start % job->chunk && job->start != job->len))
		return cvm_err_badparam(err, "resume offset %llu: not a chunk boundary",
					(unsigned long long)job->start);
	if (job->rekey_from && !job->encrypt)
		return cvm_err_badparam(err, "rekey: the target direction must be encrypt");
	if (job->threads == 0 || job->threads > MAX_THREADS)
		return cvm_err_badparam(err, "threads: must be 1..%u", MAX_THREADS);
	return 0;
}

static void deadline_after(struct timespec *ts, unsigned ms)
{
	clock_gettime(CLOCK_MONOTONIC, ts);
	ts->tv_sec += ms / 1000;
	ts->tv_nsec += (long)(ms % 1000) * 1000000L;
	if (ts->tv_nsec >= 1000000000L) {
		ts->tv_sec++;
		ts->tv_nsec -= 1000000000L;
	}
}

/* Make everything below `wm` durable, then record it. Called without the lock held. */
static int checkpoint(struct engine *e, uint64_t wm_bytes, struct cvm_err *err)
{
	const struct cvm_xts_job *job = e->job;
	if (!job->checkpoint)
		return 0;
	if (fdatasync(job->out_fd) < 0)
		return cvm_err_set(err, errno, "InternalError", "destination: fdatasync: %s",
				   strerror(errno));
	return job->checkpoint(job->checkpoint_ctx, wm_bytes, err);
}

/* Coordinator loop on the calling thread: progress ~4/s, checkpoints every checkpoint_ms. */
static int supervise(struct engine *e, struct cvm_err *err)
{
	const struct cvm_xts_job *job = e->job;
	unsigned ckpt_ms = job->checkpoint_ms ? job->checkpoint_ms : 1000;
	uint64_t last_ckpt = cvm_monotonic_ns();
	uint64_t last_wm = e->watermark;
	int r = 0;
	pthread_mutex_lock(&e->lock);
	while (e->running > 0) {
		struct timespec ts;
		deadline_after(&ts, 250);
		pthread_cond_timedwait(&e->cond, &e->lock, &ts);
		uint64_t done = e->bytes_done, wm = e->watermark;
		bool failed = e->failed;
		pthread_mutex_unlock(&e->lock);
		if (job->progress)
			job->progress(job->progress_ctx, done, job->len);
		uint64_t now = cvm_monotonic_ns();
		if (r == 0 && !failed && wm != last_wm && now - last_ckpt >= ckpt_ms * 1000000ull) {
			uint64_t wm_bytes = wm * job->chunk < job->len ? wm * job->chunk : job->len;
			r = checkpoint(e, wm_bytes, err);
			last_ckpt = now;
			last_wm = wm;
		}
		pthread_mutex_lock(&e->lock);
		if (r < 0)
			e->failed = true; /* stop claiming chunks; workers drain */
	}
	pthread_mutex_unlock(&e->lock);
	return r;
}

int cvm_xts_run(const struct cvm_xts_job *in, struct cvm_err *err)
{
	struct cvm_xts_job job = *in;
	if (!job.chunk)
		job.chunk = DEFAULT_CHUNK;
	if (!job.threads)
		job.threads = default_threads();
	int r = check_job(&job, err);
	if (r < 0)
		return r;
	struct engine e = { .job = &job };
	e.nchunks = (job.len + job.chunk - 1) / job.chunk;
	e.first = e.next = e.watermark = job.start / job.chunk;
	if (job.start == job.len)
		e.first = e.next = e.watermark = e.nchunks;
	e.bytes_done = job.start;
	if (job.threads > e.nchunks - e.first)
		job.threads = (unsigned)(e.nchunks - e.first ? e.nchunks - e.first : 1);
	e.done = calloc(e.nchunks - e.first + 1, 1);
	if (!e.done)
		return cvm_err_nomem(err);
	impl_find(&e.impl);
	pthread_mutex_init(&e.lock, NULL);
	pthread_condattr_t ca;
	pthread_condattr_init(&ca);
	pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
	pthread_cond_init(&e.cond, &ca);
	pthread_condattr_destroy(&ca);

	pthread_t tids[MAX_THREADS];
	unsigned started = 0;
	for (; started < job.threads; started++) {
		pthread_mutex_lock(&e.lock);
		e.running++;
		pthread_mutex_unlock(&e.lock);
		if (pthread_create(&tids[started], NULL, worker, &e) != 0) {
			pthread_mutex_lock(&e.lock);
			e.running--;
			e.failed = true;
			if (started == 0)
				cvm_err_set(&e.err, EAGAIN, "InternalError", "cannot start workers");
			pthread_mutex_unlock(&e.lock);
			break;
		}
	}
	r = supervise(&e, err);
	for (unsigned i = 0; i < started; i++)
		pthread_join(tids[i], NULL);
	if (r == 0 && e.failed && e.err.errnum) {
		*err = e.err;
		r = -e.err.errnum;
	} else if (r == 0 && e.failed) {
		r = cvm_err_internal(err, "encryption workers stopped");
	}
	if (r == 0 && fdatasync(job.out_fd) < 0 && errno != EINVAL)
		r = cvm_err_set(err, errno, "InternalError", "destination: fdatasync: %s",
				strerror(errno));
	if (r == 0 && job.progress)
		job.progress(job.progress_ctx, job.len, job.len);
	impl_release(&e.impl);
	pthread_cond_destroy(&e.cond);
	pthread_mutex_destroy(&e.lock);
	free(e.done);
	return r;
}
