/* SPDX-License-Identifier: Apache-2.0 */
/* Block replication: state files (per-block SHA-256 of what the target durably holds), the
 * TLS 1.3 mutual-auth connection carrying wire.c frames, the sending pass and the target's
 * session loop. See migrate.h for the protocol and the durability rules. */
#include "migrate-internal.h"

#include <opencvm/disk.h>

#include <linux/tcp.h>
#include <netdb.h>
#include <openssl/evp.h>
#include <openssl/ssl.h>
#include <openssl/x509v3.h>
#include <pthread.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>
#include <zstd.h>

#define ST_HDR 4096u
#define ST_MAGIC "CVMRST01"
#define HASH 32u
#define BATCH 256u                 /* blocks whose hashes are read from the state at once */
#define BATCH_BYTES (16u << 20)    /* source data read and hashed at once */
#define MAX_PENDING 65536u         /* target: blocks accepted between SYNCs */
#define SYNC_MS 2000u

/* ---- state files ------------------------------------------------------------------------- */
struct rstate {
	int fd;
	char role;
	bool stale;                  /* target: some hashes were invalidated, source must refetch */
	uint32_t bs;
	uint64_t disk, nblocks;
	uint8_t gen[16];
	uint64_t pass, cursor;
	int64_t updated;
};

static uint64_t nblocks_of(uint64_t disk, uint32_t bs) { return (disk + bs - 1) / bs; }

static int st_parse(const uint8_t *h, struct cvm_repl_state_info *o, struct cvm_err *err)
{
	if (memcmp(h, ST_MAGIC, 8) != 0)
		return cvm_err_set(err, EBADMSG, "BadParameter", "state: not a replication state file");
	if (mig_crc32(0, h, 64) != mig_le32(h + 64))
		return cvm_err_set(err, EBADMSG, "BadParameter", "state: header CRC mismatch (torn "
				   "write); the next pass refetches the target's hashes");
	o->role = (char)h[8];
	o->stale = h[9] == 1;
	o->block_size = mig_le32(h + 12);
	o->disk_size = mig_le64(h + 16);
	memcpy(o->gen, h + 24, 16);
	o->pass = mig_le64(h + 40);
	o->cursor = mig_le64(h + 48);
	o->updated = (int64_t)mig_le64(h + 56);
	if ((o->role != 'S' && o->role != 'T') || o->block_size < CVM_REPL_MIN_BLOCK ||
	    o->block_size > CVM_REPL_MAX_BLOCK || !o->disk_size || o->disk_size > (1ull << 50))
		return cvm_err_set(err, EBADMSG, "BadParameter", "state: header fields out of range");
	o->nblocks = nblocks_of(o->disk_size, o->block_size);
	if (o->cursor > o->nblocks)
		return cvm_err_set(err, EBADMSG, "BadParameter", "state: cursor beyond the disk");
	return 0;
}

int cvm_repl_state_read(const char *path, struct cvm_repl_state_info *out, struct cvm_err *err)
{
	uint8_t h[ST_HDR];
	int fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		return cvm_err_set(err, errno, errno == ENOENT ? "NotFound" : "InternalError",
				   "state %s: %s", path, strerror(errno));
	int r = mig_pread_full(fd, h, sizeof(h), 0, err);
	close(fd);
	return r < 0 ? r : st_parse(h, out, err);
}

static int st_write_hdr(struct rstate *s, struct cvm_err *err)
{
	uint8_t h[ST_HDR] = {0};
	memcpy(h, ST_MAGIC, 8);
	h[8] = (uint8_t)s->role;
	h[9] = s->stale ? 1 : 0;
	mig_put_le32(h + 12, s->bs);
	mig_put_le64(h + 16, s->disk);
	memcpy(h + 24, s->gen, 16);
	mig_put_le64(h + 40, s->pass);
	mig_put_le64(h + 48, s->cursor);
	s->updated = cvm_now();
	mig_put_le64(h + 56, (uint64_t)s->updated);
	mig_put_le32(h + 64, mig_crc32(0, h, 64));
	int r = mig_pwrite_full(s->fd, h, sizeof(h), 0, err);
	if (r == 0 && fdatasync(s->fd) < 0)
		r = cvm_err_internal(err, "state: fsync: %s", strerror(errno));
	return r;
}

static int st_get(struct rstate *s, uint64_t first, uint64_t n, uint8_t *out, struct cvm_err *err)
{
	return mig_pread_full(s->fd, out, n * HASH, ST_HDR + first * HASH, err);
}

/* Fill every hash with `fill` (NULL = zeros: unknown), then write the header. */
static int st_init(struct rstate *s, const uint8_t *fill, struct cvm_err *err)
{
	if (ftruncate(s->fd, 0) < 0 || ftruncate(s->fd, (off_t)(ST_HDR + s->nblocks * HASH)) < 0)
		return cvm_err_internal(err, "state: %s", strerror(errno));
	if (fill) {
		uint8_t buf[BATCH * HASH];
		for (unsigned i = 0; i < BATCH; i++)
			memcpy(buf + i * HASH, fill, HASH);
		for (uint64_t i = 0; i < s->nblocks; i += BATCH) {
			uint64_t n = s->nblocks - i < BATCH ? s->nblocks - i : BATCH;
			int r = mig_pwrite_full(s->fd, buf, n * HASH, ST_HDR + i * HASH, err);
			if (r < 0)
				return r;
		}
	}
	if (fdatasync(s->fd) < 0)
		return cvm_err_internal(err, "state: fsync: %s", strerror(errno));
	return st_write_hdr(s, err);
}

/* Open an existing state; -ENOENT when missing, -EBADMSG when unusable. */
static int st_open(const char *path, char role, struct rstate *s, struct cvm_err *err)
{
	memset(s, 0, sizeof(*s));
	s->fd = open(path, O_RDWR | O_CLOEXEC);
	if (s->fd < 0)
		return cvm_err_set(err, errno, errno == ENOENT ? "NotFound" : "InternalError",
				   "state %s: %s", path, strerror(errno));
	uint8_t h[ST_HDR];
	struct cvm_repl_state_info i;
	int r = mig_pread_full(s->fd, h, sizeof(h), 0, err);
	if (r == 0)
		r = st_parse(h, &i, err);
	if (r == 0 && i.role != role)
		r = cvm_err_badparam(err, "state %s belongs to the %s side", path,
				     i.role == 'S' ? "source" : "target");
	struct stat st;
	if (r == 0 && (fstat(s->fd, &st) < 0 || (uint64_t)st.st_size < ST_HDR + i.nblocks * HASH))
		r = cvm_err_set(err, EBADMSG, "BadParameter", "state %s: truncated hash table", path);
	if (r < 0) {
		/* keep the fd: the caller may reinitialize the file */
		return r;
	}
	s->role = role;
	s->bs = i.block_size;
	s->disk = i.disk_size;
	s->nblocks = i.nblocks;
	memcpy(s->gen, i.gen, 16);
	s->pass = i.pass;
	s->cursor = i.cursor;
	s->updated = i.updated;
	s->stale = i.stale;
	return 0;
}

static int st_create(const char *path, struct rstate *s, struct cvm_err *err)
{
	if (s->fd <= 0)
		s->fd = open(path, O_RDWR | O_CREAT | O_CLOEXEC, 0600);
	if (s->fd < 0)
		return cvm_err_internal(err, "state %s: %s", path, strerror(errno));
	return 0;
}

static void st_close(struct rstate *s)
{
	if (s->fd > 0)
		close(s->fd);
	s->fd = -1;
}

static int sha256(const uint8_t *p, size_t n, uint8_t out[HASH], struct cvm_err *err)
{
	unsigned int ol = HASH;
	if (!EVP_Digest(p, n, out, &ol, EVP_sha256(), NULL))
		return cvm_err_openssl(err, EIO, "sha256");
	return 0;
}

/* A peer that vanishes must fail the write with EPIPE, not kill the process with SIGPIPE
 * (OpenSSL writes with write(2)). Block it on this thread while replicating and drop any
 * instance raised meanwhile before restoring the caller's mask. */
struct sigpipe_guard {
	sigset_t old;
};

static void sigpipe_block(struct sigpipe_guard *g)
{
	sigset_t s;
	sigemptyset(&s);
	sigaddset(&s, SIGPIPE);
	pthread_sigmask(SIG_BLOCK, &s, &g->old);
}

static void sigpipe_restore(struct sigpipe_guard *g)
{
	sigset_t s;
	sigemptyset(&s);
	sigaddset(&s, SIGPIPE);
	struct timespec zero = {0, 0};
	while (sigtimedwait(&s, NULL, &zero) > 0)
		;
	pthread_sigmask(SIG_SETMASK, &g->old, NULL);
}

/* ---- connection ---------------------------------------------------------------------------- */
struct conn {
	int fd;
	SSL_CTX *ctx;
	SSL *ssl;
	uint8_t *rbuf, *wbuf;        /* CVM_REPL_HDR + CVM_REPL_MAX_PAYLOAD each */
	uint64_t bytes;              /* frame bytes written + read */
};

static int ssl_fail(struct cvm_err *err, const char *what)
{
	return cvm_err_openssl(err, EPROTO, what);
}

static int tls_ctx(const struct cvm_repl_tls *t, bool server, SSL_CTX **out, struct cvm_err *err)
{
	if (!t->cert || !t->key || !t->ca)
		return cvm_err_badparam(err, "tls: --cert, --key and --ca are all required (mutual "
					"authentication)");
	SSL_CTX *c = SSL_CTX_new(server ? TLS_server_method() : TLS_client_method());
	if (!c)
		return ssl_fail(err, "tls: context");
	SSL_CTX_set_min_proto_version(c, TLS1_3_VERSION);
	if (SSL_CTX_use_certificate_chain_file(c, t->cert) != 1) {
		SSL_CTX_free(c);
		ssl_fail(err, "tls: certificate");
		return cvm_err_prefix(err, "%s", t->cert);
	}
	if (SSL_CTX_use_PrivateKey_file(c, t->key, SSL_FILETYPE_PEM) != 1 ||
	    SSL_CTX_check_private_key(c) != 1) {
		SSL_CTX_free(c);
		return ssl_fail(err, "tls: private key");
	}
	if (SSL_CTX_load_verify_locations(c, t->ca, NULL) != 1) {
		SSL_CTX_free(c);
		return ssl_fail(err, "tls: CA file");
	}
	SSL_CTX_set_verify(c, SSL_VERIFY_PEER | SSL_VERIFY_FAIL_IF_NO_PEER_CERT, NULL);
	*out = c;
	return 0;
}

static void conn_close(struct conn *c)
{
	if (c->ssl) {
		SSL_shutdown(c->ssl);
		SSL_free(c->ssl);
	}
	SSL_CTX_free(c->ctx);
	if (c->fd >= 0)
		close(c->fd);
	free(c->rbuf);
	free(c->wbuf);
	memset(c, 0, sizeof(*c));
	c->fd = -1;
}

static int conn_bufs(struct conn *c, struct cvm_err *err)
{
	c->rbuf = malloc(CVM_REPL_HDR + CVM_REPL_MAX_PAYLOAD);
	c->wbuf = malloc(CVM_REPL_HDR + CVM_REPL_MAX_PAYLOAD);
	return c->rbuf && c->wbuf ? 0 : cvm_err_nomem(err);
}

/* The peer certificate must carry `name` when one is configured (the chain is verified by the
 * handshake already). */
static int check_peer(struct conn *c, const char *name, struct cvm_err *err)
{
	if (SSL_get_verify_result(c->ssl) != X509_V_OK)
		return cvm_err_set(err, EACCES, "Unauthorized", "tls: peer certificate not verified");
	if (!name)
		return 0;
	X509 *peer = SSL_get1_peer_certificate(c->ssl);
	int ok = peer && X509_check_host(peer, name, 0, 0, NULL) == 1;
	X509_free(peer);
	return ok ? 0 : cvm_err_set(err, EACCES, "Unauthorized",
				    "tls: peer certificate is not for '%s'", name);
}

static int split_hostport(const char *hp, char host[256], char port[16], struct cvm_err *err)
{
	const char *colon = strrchr(hp ? hp : "", ':');
	if (!hp || !colon || colon == hp || strlen(colon + 1) == 0 || strlen(colon + 1) >= 16 ||
	    (size_t)(colon - hp) >= 256)
		return cvm_err_badparam(err, "address '%s': expected host:port", hp ? hp : "");
	const char *h = hp;
	size_t hl = (size_t)(colon - hp);
	if (h[0] == '[' && hl >= 2 && h[hl - 1] == ']') {
		h++;
		hl -= 2;
	}
	memcpy(host, h, hl);
	host[hl] = 0;
	snprintf(port, 16, "%s", colon + 1);
	return 0;
}

static int conn_write_all(struct conn *c, const uint8_t *p, size_t n, struct cvm_err *err)
{
	while (n) {
		int w = SSL_write(c->ssl, p, n > INT32_MAX ? INT32_MAX : (int)n);
		if (w <= 0)
			return cvm_err_set(err, EPIPE, "InternalError", "connection lost while sending");
		p += w;
		n -= (size_t)w;
	}
	return 0;
}

static int conn_read_all(struct conn *c, uint8_t *p, size_t n, struct cvm_err *err)
{
	while (n) {
		int r = SSL_read(c->ssl, p, n > INT32_MAX ? INT32_MAX : (int)n);
		if (r <= 0)
			return cvm_err_set(err, EPIPE, "InternalError", "connection lost while receiving");
		p += r;
		n -= (size_t)r;
	}
	return 0;
}

/* Send one frame; payload = a || b (b may be NULL). */
static int conn_send(struct conn *c, uint8_t type, uint8_t flags, const void *a, size_t alen,
		     const void *b, size_t blen, struct cvm_err *err)
{
	int r = cvm_repl_frame_header(type, flags, alen + blen, c->wbuf, err);
	if (r < 0)
		return r;
	if (alen)
		memcpy(c->wbuf + CVM_REPL_HDR, a, alen);
	if (blen)
		memcpy(c->wbuf + CVM_REPL_HDR + alen, b, blen);
	c->bytes += CVM_REPL_HDR + alen + blen;
	return conn_write_all(c, c->wbuf, CVM_REPL_HDR + alen + blen, err);
}

static int conn_send_u64(struct conn *c, uint8_t type, uint64_t v, struct cvm_err *err)
{
	uint8_t b[8];
	mig_put_le64(b, v);
	return conn_send(c, type, 0, b, 8, NULL, 0, err);
}

static void conn_send_error(struct conn *c, const struct cvm_err *why)
{
	/* Only an established session (handshake done, buffers allocated) can carry a frame;
	 * a failed handshake is reported by TLS itself. */
	if (!c->ssl || !c->wbuf)
		return;
	struct cvm_err ignored = {0};
	conn_send(c, CVM_REPL_ERROR, 0, why->msg, strnlen(why->msg, 512), NULL, 0, &ignored);
}

/* Receive one frame into rbuf; an ERROR frame from the peer becomes our error. */
static int conn_recv(struct conn *c, struct cvm_repl_frame *f, struct cvm_err *err)
{
	int r = conn_read_all(c, c->rbuf, CVM_REPL_HDR, err);
	if (r < 0)
		return r;
	uint32_t plen = mig_le32(c->rbuf + 8);
	if (plen > CVM_REPL_MAX_PAYLOAD)
		return cvm_err_set(err, EBADMSG, "BadParameter", "frame: payload %u bytes exceeds %u",
				   plen, CVM_REPL_MAX_PAYLOAD);
	if ((r = conn_read_all(c, c->rbuf + CVM_REPL_HDR, plen, err)) < 0)
		return r;
	size_t used;
	if ((r = cvm_repl_frame_parse(c->rbuf, CVM_REPL_HDR + plen, f, &used, err)) < 0)
		return r;
	c->bytes += used;
	if (f->type == CVM_REPL_ERROR)
		return cvm_err_set(err, EPROTO, "Conflict", "peer: %.*s", (int)(f->len > 400 ? 400 : f->len),
				   (const char *)f->payload);
	return 0;
}

static int expect(struct conn *c, uint8_t type, struct cvm_repl_frame *f, struct cvm_err *err)
{
	int r = conn_recv(c, f, err);
	if (r < 0)
		return r;
	if (f->type != type)
		return cvm_err_set(err, EPROTO, "BadParameter", "protocol: expected frame type %u, "
				   "got %u", type, f->type);
	return 0;
}

static uint64_t tcp_bytes(int fd)
{
	struct tcp_info ti;
	socklen_t l = sizeof(ti);
	memset(&ti, 0, sizeof(ti));
	if (getsockopt(fd, IPPROTO_TCP, TCP_INFO, &ti, &l) < 0)
		return 0;
	return ti.tcpi_bytes_acked + ti.tcpi_bytes_received;
}

/* ---- sending -------------------------------------------------------------------------------- */
struct sender {
	const struct cvm_repl_send_opts *o;
	struct cvm_repl_stats *st;
	struct conn c;
	struct rstate s;
	int img;
	struct mig_vmsrc *vm;        /* VM source instead of img */
	uint8_t *dirty;              /* VM source, incremental pass: blocks to look at */
	uint8_t *data, *zbuf;
	uint8_t *batch;              /* BATCH_BYTES of source read at once */
	size_t zcap;
	ZSTD_CCtx *zc;
	unsigned zmiss, zskip;       /* consecutive incompressible blocks; blocks left to skip */
	uint64_t *pend_idx;
	uint8_t *pend_hash;
	size_t npend, pend_cap;
	uint64_t since_sync;
	uint64_t last_sync_ms, last_progress_ms, start_ms;
};

static int do_connect(struct sender *x, struct cvm_err *err)
{
	char host[256], port[16];
	int r = split_hostport(x->o->connect, host, port, err);
	if (r < 0)
		return r;
	struct addrinfo hints = {.ai_socktype = SOCK_STREAM}, *ai = NULL;
	int g = getaddrinfo(host, port, &hints, &ai);
	if (g)
		return cvm_err_set(err, EHOSTUNREACH, "InternalError", "resolve %s: %s", host,
				   gai_strerror(g));
	x->c.fd = -1;
	for (struct addrinfo *a = ai; a && x->c.fd < 0; a = a->ai_next) {
		int fd = socket(a->ai_family, a->ai_socktype | SOCK_CLOEXEC, a->ai_protocol);
		if (fd >= 0 && connect(fd, a->ai_addr, a->ai_addrlen) == 0)
			x->c.fd = fd;
		else if (fd >= 0)
			close(fd);
	}
	freeaddrinfo(ai);
	if (x->c.fd < 0)
		return cvm_err_set(err, ECONNREFUSED, "InternalError", "connect %s: %s",
				   x->o->connect, strerror(errno));
	int one = 1;
	setsockopt(x->c.fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
	if ((r = tls_ctx(&x->o->tls, false, &x->c.ctx, err)) < 0)
		return r;
	x->c.ssl = SSL_new(x->c.ctx);
	if (!x->c.ssl || SSL_set_fd(x->c.ssl, x->c.fd) != 1)
		return ssl_fail(err, "tls: session");
	if (x->o->tls.peer_name)
		SSL_set_tlsext_host_name(x->c.ssl, x->o->tls.peer_name);
	if (SSL_connect(x->c.ssl) != 1)
		return cvm_err_openssl(err, EACCES, "tls: handshake with the target");
	if ((r = check_peer(&x->c, x->o->tls.peer_name, err)) < 0)
		return r;
	return conn_bufs(&x->c, err);
}

static int sync_upto(struct sender *x, uint64_t upto, struct cvm_err *err)
{
	struct cvm_repl_frame f;
	uint64_t acked;
	int r = conn_send_u64(&x->c, CVM_REPL_SYNC, upto, err);
	if (r == 0)
		r = expect(&x->c, CVM_REPL_ACK, &f, err);
	if (r == 0)
		r = cvm_repl_u64_parse(f.payload, f.len, &acked, err);
	if (r == 0 && acked != upto)
		r = cvm_err_set(err, EPROTO, "BadParameter", "protocol: ACK %llu for SYNC %llu",
				(unsigned long long)acked, (unsigned long long)upto);
	if (r < 0)
		return r;
	/* Only now, with the target durable, do the sent hashes become our record of it. */
	for (size_t i = 0; i < x->npend && r == 0; i++)
		r = mig_pwrite_full(x->s.fd, x->pend_hash + i * HASH, HASH,
				    ST_HDR + x->pend_idx[i] * HASH, err);
	if (r == 0 && x->npend && fdatasync(x->s.fd) < 0)
		r = cvm_err_internal(err, "state: fsync: %s", strerror(errno));
	x->npend = 0;
	x->since_sync = 0;
	x->s.cursor = upto;
	x->last_sync_ms = (uint64_t)cvm_now_ms();
	return r < 0 ? r : st_write_hdr(&x->s, err);
}

static int fetch_manifest(struct sender *x, struct cvm_err *err)
{
	int r = conn_send(&x->c, CVM_REPL_MANIFEST_REQ, 0, NULL, 0, NULL, 0, err);
	ZSTD_DCtx *dz = ZSTD_createDCtx();
	_cleanup_free_ uint8_t *plain = malloc(12 + CVM_REPL_MANIFEST_MAX * HASH);
	if (!dz || !plain) {
		ZSTD_freeDCtx(dz);
		return cvm_err_nomem(err);
	}
	uint64_t next = 0;
	while (r == 0) {
		struct cvm_repl_frame f;
		struct cvm_repl_manifest m;
		if ((r = expect(&x->c, CVM_REPL_MANIFEST, &f, err)) < 0)
			break;
		const uint8_t *p = f.payload;
		size_t n = f.len;
		if (f.flags & CVM_REPL_F_ZSTD) {
			size_t d = ZSTD_decompressDCtx(dz, plain, 12 + CVM_REPL_MANIFEST_MAX * HASH, p, n);
			if (ZSTD_isError(d)) {
				r = cvm_err_set(err, EBADMSG, "BadParameter", "manifest: zstd: %s",
						ZSTD_getErrorName(d));
				break;
			}
			p = plain;
			n = d;
		}
		if ((r = cvm_repl_manifest_parse(p, n, &m, err)) < 0)
			break;
		if (m.count == 0) {
			if (next != x->s.nblocks)
				r = cvm_err_set(err, EPROTO, "BadParameter", "manifest: ended at block "
						"%llu of %llu", (unsigned long long)next,
						(unsigned long long)x->s.nblocks);
			break;
		}
		if (m.first != next || m.first + m.count > x->s.nblocks) {
			r = cvm_err_set(err, EPROTO, "BadParameter", "manifest: blocks %llu+%u out of "
					"order", (unsigned long long)m.first, m.count);
			break;
		}
		r = mig_pwrite_full(x->s.fd, m.hashes, (size_t)m.count * HASH, ST_HDR + m.first * HASH, err);
		next += m.count;
	}
	ZSTD_freeDCtx(dz);
	if (r == 0 && fdatasync(x->s.fd) < 0)
		r = cvm_err_internal(err, "state: fsync: %s", strerror(errno));
	return r;
}

static void report(struct sender *x, uint64_t block, bool force)
{
	uint64_t now = (uint64_t)cvm_now_ms();
	if (!x->o->progress || (!force && now - x->last_progress_ms < 250))
		return;
	x->last_progress_ms = now;
	x->st->elapsed_ms = now - x->start_ms;
	x->st->bytes_payload = x->c.bytes;
	x->o->progress(x->o->progress_ctx, block, x->s.nblocks, x->st);
}

static int send_block(struct sender *x, uint64_t i, const uint8_t *data, size_t len,
		      const uint8_t hash[HASH], struct cvm_err *err)
{
	uint8_t head[8 + HASH];
	mig_put_le64(head, i);
	memcpy(head + 8, hash, HASH);
	const uint8_t *payload = data;
	size_t plen = len;
	uint8_t flags = 0;
	/* Incompressible runs (encrypted or compressed data) skip zstd for a while rather than
	 * paying for it on every block; a probe every 64 blocks notices when that changes. */
	if (x->zc && (x->zskip == 0 || x->zskip-- == 0)) {
		size_t z = ZSTD_compressCCtx(x->zc, x->zbuf, x->zcap, data, len,
					     x->o->zstd_level ? x->o->zstd_level : 1);
		if (!ZSTD_isError(z) && z < len - len / 64) {
			payload = x->zbuf;
			plen = z;
			flags = CVM_REPL_F_ZSTD;
			x->zmiss = 0;
		} else if (++x->zmiss >= 8) {
			x->zskip = 64;
			x->zmiss = 0;
		}
	}
	int r = conn_send(&x->c, CVM_REPL_BLOCK, flags, head, sizeof(head), payload, plen, err);
	if (r < 0)
		return r;
	if (x->npend == x->pend_cap) {
		size_t cap = x->pend_cap ? x->pend_cap * 2 : 256;
		uint64_t *pi = realloc(x->pend_idx, cap * sizeof(*pi));
		if (pi)
			x->pend_idx = pi;
		uint8_t *ph = pi ? realloc(x->pend_hash, cap * HASH) : NULL;
		if (!pi || !ph)
			return cvm_err_nomem(err);
		x->pend_hash = ph;
		x->pend_cap = cap;
	}
	x->pend_idx[x->npend] = i;
	memcpy(x->pend_hash + x->npend * HASH, hash, HASH);
	x->npend++;
	x->since_sync += len;
	x->st->blocks_sent++;
	x->st->bytes_changed += len;
	return 0;
}

/* Hash blocks [from, to) of a batch already in memory. */
struct hash_job {
	const uint8_t *buf;
	const uint8_t *dirty;        /* bit per block of the batch; NULL = all */
	const uint8_t *known;        /* hashes copied for blocks not dirty */
	uint8_t *out;
	uint64_t from, to;
	uint32_t bs;
	uint64_t last_len;   /* length of the batch's final block (short at the disk's end) */
	uint64_t nblk;
	bool ok;
};

static void *hash_range_job(void *arg)
{
	struct hash_job *j = arg;
	unsigned int ol;
	j->ok = true;
	for (uint64_t k = j->from; k < j->to && j->ok; k++) {
		size_t len = k + 1 == j->nblk ? (size_t)j->last_len : j->bs;
		if (j->dirty && !(j->dirty[k / 8] & (1u << (k % 8)))) {
			memcpy(j->out + k * HASH, j->known + k * HASH, HASH);
			continue;
		}
		ol = HASH;
		j->ok = EVP_Digest(j->buf + k * j->bs, len, j->out + k * HASH, &ol, EVP_sha256(), NULL) == 1;
	}
	return NULL;
}

/* One read for the batch, hashes on two threads (the host's cores, not the network, bound a
 * delta pass), then the changed blocks go out in order. */
static int scan(struct sender *x, uint64_t start, struct cvm_err *err)
{
	uint64_t sync_bytes = x->o->sync_bytes ? x->o->sync_bytes : 64ull << 20;
	uint8_t known[BATCH * HASH], hashes[BATCH * HASH], zero_hash[HASH];
	memset(x->data, 0, x->s.bs);
	int r = sha256(x->data, x->s.bs, zero_hash, err);
	x->last_sync_ms = (uint64_t)cvm_now_ms();
	uint64_t per = BATCH_BYTES / x->s.bs < BATCH ? BATCH_BYTES / x->s.bs : BATCH;
	for (uint64_t b = start; b < x->s.nblocks && r == 0; b += per) {
		uint64_t n = x->s.nblocks - b < per ? x->s.nblocks - b : per;
		uint64_t off = b * x->s.bs;
		uint64_t blen = x->s.disk - off < n * x->s.bs ? x->s.disk - off : n * x->s.bs;
		uint8_t bd[BATCH / 8] = {0};
		uint64_t nd = n;
		if (x->dirty) {
			nd = 0;
			for (uint64_t k = 0; k < n; k++)
				if (x->dirty[(b + k) / 8] & (1u << ((b + k) % 8))) {
					bd[k / 8] |= (uint8_t)(1u << (k % 8));
					nd++;
				}
			if (nd == 0) {
				report(x, b + n, false);
				continue;
			}
		}
		if ((r = st_get(&x->s, b, n, known, err)) < 0)
			break;
		if (!x->dirty) {
			r = x->vm ? mig_vmsrc_read(x->vm, x->batch, (size_t)blen, off, err) :
				    mig_pread_full(x->img, x->batch, (size_t)blen, off, err);
		} else {
			for (uint64_t k = 0; k < n && r == 0; k++)
				if (bd[k / 8] & (1u << (k % 8)))
					r = mig_vmsrc_read(x->vm, x->batch + k * x->s.bs,
							   k + 1 == n ? (size_t)(blen - k * x->s.bs) : x->s.bs,
							   off + k * x->s.bs, err);
		}
		if (r < 0)
			break;
		x->st->blocks_read += nd;
		struct hash_job j[2];
		for (int t = 0; t < 2; t++)
			j[t] = (struct hash_job){.buf = x->batch, .out = hashes, .from = t ? n / 2 : 0,
						 .to = t ? n : n / 2, .bs = x->s.bs, .nblk = n,
						 .last_len = blen - (n - 1) * x->s.bs,
						 .dirty = x->dirty ? bd : NULL, .known = known};
		pthread_t th;
		bool threaded = n > 1 && pthread_create(&th, NULL, hash_range_job, &j[1]) == 0;
		hash_range_job(&j[0]);
		if (threaded)
			pthread_join(th, NULL);
		else
			hash_range_job(&j[1]);
		if (!j[0].ok || !j[1].ok) {
			r = cvm_err_openssl(err, EIO, "sha256");
			break;
		}
		for (uint64_t k = 0; k < n && r == 0; k++) {
			uint64_t i = b + k;
			size_t len = k + 1 == n ? (size_t)j[0].last_len : x->s.bs;
			const uint8_t *h = hashes + k * HASH;
			if (memcmp(h, known + k * HASH, HASH) == 0) {
				if (len == x->s.bs && memcmp(h, zero_hash, HASH) == 0)
					x->st->blocks_zero_skipped++;
				continue;
			}
			if ((r = send_block(x, i, x->batch + k * x->s.bs, len, h, err)) < 0)
				break;
			if (x->since_sync >= sync_bytes ||
			    (uint64_t)cvm_now_ms() - x->last_sync_ms >= SYNC_MS)
				r = sync_upto(x, i + 1, err);
		}
		report(x, b + n, false);
	}
	return r < 0 ? r : sync_upto(x, x->s.nblocks, err);
}

static int sender_state(struct sender *x, uint64_t disk, struct cvm_err *err)
{
	const struct cvm_repl_send_opts *o = x->o;
	uint32_t bs = o->block_size ? o->block_size : CVM_REPL_DEFAULT_BLOCK;
	struct cvm_err e = {0};
	int r = st_open(o->state, 'S', &x->s, &e);
	if (r == 0 && (x->s.disk != disk || (o->block_size && x->s.bs != o->block_size)))
		return cvm_err_set(err, ENOTSUP, "BadParameter",
				   "state %s is for a %llu-byte disk in %u-byte blocks; the image is "
				   "%llu bytes: start a new replication with a new state file",
				   o->state, (unsigned long long)x->s.disk, x->s.bs,
				   (unsigned long long)disk);
	if (r == 0)
		return 0;
	if (r != -ENOENT && r != -EBADMSG) {
		*err = e;
		return r;
	}
	/* New (or unreadable) state: generation unknown, so the target's hashes get fetched. */
	if (r == -ENOENT)
		x->s.fd = -1;
	if ((r = st_create(o->state, &x->s, err)) < 0)
		return r;
	x->s.role = 'S';
	x->s.stale = false;
	x->s.bs = bs;
	x->s.disk = disk;
	x->s.nblocks = nblocks_of(disk, bs);
	memset(x->s.gen, 0, 16);
	x->s.pass = x->s.cursor = 0;
	return st_init(&x->s, NULL, err);
}

static int repl_send(const struct cvm_repl_send_opts *o, struct cvm_repl_stats *st,
		     struct cvm_err *err);

int cvm_repl_send(const struct cvm_repl_send_opts *o, struct cvm_repl_stats *st,
		  struct cvm_err *err)
{
	struct sigpipe_guard g;
	sigpipe_block(&g);
	int r = repl_send(o, st, err);
	sigpipe_restore(&g);
	return r;
}

static int repl_send(const struct cvm_repl_send_opts *o, struct cvm_repl_stats *st,
		     struct cvm_err *err)
{
	if (!o || (!o->image == !o->qmp) || !o->state || !o->connect || !st)
		return cvm_err_badparam(err, "replicate: an image or a VM (qmp + node), state and "
					"connect are required");
	if (o->block_size && (o->block_size < CVM_REPL_MIN_BLOCK || o->block_size > CVM_REPL_MAX_BLOCK ||
			      (o->block_size & (o->block_size - 1))))
		return cvm_err_badparam(err, "block size: expected a power of two from 4096 to 1048576");
	memset(st, 0, sizeof(*st));
	struct sender x = {.o = o, .st = st, .img = -1, .c = {.fd = -1}, .s = {.fd = -1}};
	x.start_ms = (uint64_t)cvm_now_ms();
	uint64_t disk = 0;
	int r = 0;
	bool incremental = false;
	if (o->qmp) {
		if ((r = mig_vmsrc_open(o->qmp, o->node, &x.vm, &disk, &incremental, err)) < 0)
			goto out;
	} else {
		x.img = open(o->image, O_RDONLY | O_CLOEXEC);
		if (x.img < 0) {
			r = cvm_err_set(err, errno, errno == ENOENT ? "NotFound" : "InternalError",
					"%s: %s", o->image, strerror(errno));
			goto out;
		}
		posix_fadvise(x.img, 0, 0, POSIX_FADV_SEQUENTIAL);
		if ((r = mig_fd_size(x.img, &disk, err)) < 0)
			goto out;
	}
	if (disk == 0) {
		r = cvm_err_badparam(err, "%s: empty image", o->image ? o->image : o->node);
		goto out;
	}
	if ((r = sender_state(&x, disk, err)) < 0)
		goto out;
	x.data = malloc(x.s.bs);
	x.batch = malloc(BATCH_BYTES);
	x.zcap = ZSTD_compressBound(x.s.bs);
	x.zbuf = malloc(x.zcap);
	if (o->zstd_level >= 0)
		x.zc = ZSTD_createCCtx();
	if (!x.data || !x.batch || !x.zbuf || (o->zstd_level >= 0 && !x.zc)) {
		r = cvm_err_nomem(err);
		goto out;
	}
	if ((r = do_connect(&x, err)) < 0)
		goto out;
	struct cvm_repl_hello me = {.version = CVM_REPL_VERSION, .block_size = x.s.bs,
				    .disk_size = x.s.disk, .pass = x.s.pass, .cursor = x.s.cursor},
			      them;
	memcpy(me.gen, x.s.gen, 16);
	uint8_t hb[CVM_REPL_HELLO_LEN];
	cvm_repl_hello_put(&me, hb);
	struct cvm_repl_frame f;
	if ((r = conn_send(&x.c, CVM_REPL_HELLO, 0, hb, sizeof(hb), NULL, 0, err)) < 0 ||
	    (r = expect(&x.c, CVM_REPL_HELLO_ACK, &f, err)) < 0 ||
	    (r = cvm_repl_hello_parse(f.payload, f.len, &them, err)) < 0)
		goto out;
	if (them.disk_size != me.disk_size || them.block_size != me.block_size) {
		r = cvm_err_set(err, ENOTSUP, "Conflict", "target holds a %llu-byte disk in %u-byte "
				"blocks; this source is %llu bytes in %u-byte blocks",
				(unsigned long long)them.disk_size, them.block_size,
				(unsigned long long)me.disk_size, me.block_size);
		goto out;
	}
	uint64_t start;
	static const uint8_t nogen[16];
	if (memcmp(them.gen, x.s.gen, 16) == 0 && them.pass == x.s.pass &&
	    memcmp(x.s.gen, nogen, 16) != 0) {
		/* Same history; an interrupted target may have forgotten some blocks' hashes. */
		start = x.s.cursor;
		if ((them.flags & CVM_REPL_HELLO_STALE) && (r = fetch_manifest(&x, err)) < 0)
			goto out;
		st->manifest_fetched = (them.flags & CVM_REPL_HELLO_STALE) != 0;
	} else {
		if ((r = fetch_manifest(&x, err)) < 0)
			goto out;
		st->manifest_fetched = true;
		memcpy(x.s.gen, them.gen, 16);
		x.s.pass = them.pass;
		x.s.cursor = 0;
		if ((r = st_write_hdr(&x.s, err)) < 0)
			goto out;
		start = 0;
	}
	st->resumed_from = start;
	st->blocks_total = x.s.nblocks;
	/* The bitmap narrows the pass only when the target holds what our state says; after a
	 * manifest fetch every block is compared. */
	if (x.vm && incremental && !st->manifest_fetched) {
		uint64_t nd = 0;
		x.dirty = calloc((x.s.nblocks + 7) / 8, 1);
		if (!x.dirty) {
			r = cvm_err_nomem(err);
			goto out;
		}
		if ((r = mig_vmsrc_dirty(x.vm, x.s.bs, x.s.nblocks, x.dirty, &nd, err)) < 0)
			goto out;
		st->dirty_bitmap = true;
	}
	cvm_log_info("migrate.replicate.pass", "source=%s pass=%llu start=%llu blocks=%llu fetched=%d",
		     o->image ? o->image : o->node, (unsigned long long)x.s.pass, (unsigned long long)start,
		     (unsigned long long)x.s.nblocks, st->manifest_fetched);
	if ((r = scan(&x, start, err)) < 0)
		goto out;
	uint64_t next;
	if ((r = conn_send_u64(&x.c, CVM_REPL_DONE, x.s.pass, err)) < 0 ||
	    (r = expect(&x.c, CVM_REPL_ACK, &f, err)) < 0 ||
	    (r = cvm_repl_u64_parse(f.payload, f.len, &next, err)) < 0)
		goto out;
	if (next != x.s.pass + 1) {
		r = cvm_err_set(err, EPROTO, "BadParameter", "protocol: DONE acknowledged as pass %llu",
				(unsigned long long)next);
		goto out;
	}
	x.s.pass = next;
	x.s.cursor = 0;
	r = st_write_hdr(&x.s, err);
	st->pass = x.s.pass;
	report(&x, x.s.nblocks, true);
out:
	st->bytes_payload = x.c.bytes;
	st->bytes_wire = x.c.fd >= 0 ? tcp_bytes(x.c.fd) : 0;
	st->elapsed_ms = (uint64_t)cvm_now_ms() - x.start_ms;
	if (r < 0 && x.c.ssl && err->errnum != EPIPE && err->errnum != EPROTO)
		conn_send_error(&x.c, err);
	conn_close(&x.c);
	st_close(&x.s);
	if (x.img >= 0)
		close(x.img);
	mig_vmsrc_finish(x.vm, r == 0);
	free(x.dirty);
	ZSTD_freeCCtx(x.zc);
	free(x.data);
	free(x.batch);
	free(x.zbuf);
	free(x.pend_idx);
	free(x.pend_hash);
	return r;
}

/* ---- target --------------------------------------------------------------------------------- */
struct target {
	const struct cvm_repl_serve_opts *o;
	struct conn c;
	struct rstate s;
	int img;                     /* raw target, or -1 when writing into a confidential disk */
	struct cvm_disk_writer *cd;  /* confidential-disk target: encrypts every block it writes */
	int inflight;                /* "<state>.inflight": blocks written since the last SYNC */
	bool manifest_served;
	ZSTD_DCtx *dz;
	ZSTD_CCtx *zc;
	uint8_t *raw;
	uint64_t *pend_idx;
	uint8_t *pend_hash;
	size_t npend;
	struct cvm_repl_stats *st;
};

/* Blocks written after the last acknowledged SYNC may or may not be on disk: their hashes
 * become unknown, and the state says so (stale) until a source has fetched the hashes and
 * synced again. The list is written before each block's data, so it covers every such block
 * (for a killed process; after power loss the data may be older still, which hashes also
 * catch because the old hash no longer claims anything new). */
static int invalidate_inflight(struct target *t, struct cvm_err *err)
{
	uint64_t size = 0;
	int r = mig_fd_size(t->inflight, &size, err);
	if (r < 0)
		return r;
	if (size / 8 > MAX_PENDING)
		return cvm_err_set(err, EBADMSG, "BadParameter", "inflight list longer than %u blocks",
				   MAX_PENDING);
	static const uint8_t unknown[HASH];
	uint8_t b[8];
	for (uint64_t i = 0; i < size / 8 && r == 0; i++) {
		if ((r = mig_pread_full(t->inflight, b, 8, i * 8, err)) < 0)
			break;
		uint64_t idx = mig_le64(b);
		if (idx < t->s.nblocks)
			r = mig_pwrite_full(t->s.fd, unknown, HASH, ST_HDR + idx * HASH, err);
	}
	if (r < 0 || size < 8)
		return r;
	if (fdatasync(t->s.fd) < 0)
		return cvm_err_internal(err, "state fsync: %s", strerror(errno));
	t->s.stale = true;
	if ((r = st_write_hdr(&t->s, err)) < 0)
		return r;
	cvm_log_warn("migrate.replicate.inflight", "blocks=%llu action=hashes-invalidated",
		     (unsigned long long)(size / 8));
	return ftruncate(t->inflight, 0) < 0 ? cvm_err_internal(err, "inflight: %s", strerror(errno)) : 0;
}

static const char *target_name(const struct cvm_repl_serve_opts *o)
{
	return o->confidential_disk ? o->confidential_disk : o->target;
}

/* Make `want` bytes at `off` of the target durable-to-be: ciphertext through the disk writer
 * for a confidential disk (the plaintext stays in memory), else the raw bytes. */
static int target_write(struct target *t, const uint8_t *data, size_t want, uint64_t off,
			struct cvm_err *err)
{
	if (t->cd)
		return cvm_disk_writer_pwrite(t->cd, data, want, off, err);
	int r = mig_pwrite_full(t->img, data, want, off, err);
	/* Start writeback now so the fdatasync at the next SYNC has little left to wait for
	 * (disk writes overlap the network instead of stalling the stream every window). */
	if (r == 0)
		sync_file_range(t->img, (off_t)off, (off_t)want, SYNC_FILE_RANGE_WRITE);
	return r;
}

static int target_sync(struct target *t, struct cvm_err *err)
{
	if (t->cd)
		return cvm_disk_writer_sync(t->cd, err);
	if (fdatasync(t->img) < 0)
		return cvm_err_internal(err, "%s: fsync: %s", t->o->target, strerror(errno));
	return 0;
}

/* A confidential disk is never created here (it carries a wrapped secret the disk module
 * makes); its never-written sectors decrypt to garbage, so no block counts as held. */
static int target_open_cd(struct target *t, const struct cvm_repl_hello *h, struct cvm_err *err)
{
	const struct cvm_repl_serve_opts *o = t->o;
	int r = cvm_disk_writer_open(o->confidential_disk, o->disk_secret, &t->cd, err);
	if (r < 0)
		return r;
	uint64_t size = cvm_disk_writer_size(t->cd);
	if (size != h->disk_size)
		return cvm_err_set(err, ENOTSUP, "Conflict", "confidential disk %s holds a %llu-byte "
				   "volume, the source disk is %llu bytes (create it with %llu bytes "
				   "of image)", o->confidential_disk, (unsigned long long)size,
				   (unsigned long long)h->disk_size,
				   (unsigned long long)(h->disk_size + CVM_DISK_DATA_OFFSET));
	if (h->block_size % cvm_disk_writer_sector_size(t->cd))
		return cvm_err_set(err, ENOTSUP, "Conflict", "block size %u is not a multiple of "
				   "the confidential disk's sector size %u", h->block_size,
				   cvm_disk_writer_sector_size(t->cd));
	return 0;
}

/* Open (or create) the target image and its state for the disk the source announces. */
static int target_open(struct target *t, const struct cvm_repl_hello *h, struct cvm_err *err)
{
	const struct cvm_repl_serve_opts *o = t->o;
	struct cvm_err e = {0};
	bool created = false;
	if (o->confidential_disk) {
		int cr = target_open_cd(t, h, err);
		if (cr < 0)
			return cr;
	}
	int r = st_open(o->state, 'T', &t->s, &e);
	if (!o->confidential_disk)
		t->img = open(o->target, O_RDWR | O_CLOEXEC);
	if (!o->confidential_disk && t->img < 0 && errno == ENOENT) {
		t->img = open(o->target, O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
		created = t->img >= 0;
		if (created && ftruncate(t->img, (off_t)h->disk_size) < 0)
			return cvm_err_internal(err, "%s: %s", o->target, strerror(errno));
	}
	if (!o->confidential_disk && t->img < 0)
		return cvm_err_internal(err, "%s: %s", o->target, strerror(errno));
	uint64_t size;
	if (!o->confidential_disk && (r == 0 || created) && mig_fd_size(t->img, &size, err) == 0 &&
	    size != h->disk_size)
		return cvm_err_set(err, ENOTSUP, "Conflict", "target %s is %llu bytes, the source "
				   "%llu", o->target, (unsigned long long)size,
				   (unsigned long long)h->disk_size);
	_cleanup_free_ char *ipath = cvm_asprintf("%s.inflight", o->state);
	if (!ipath)
		return cvm_err_nomem(err);
	t->inflight = open(ipath, O_RDWR | O_CREAT | O_CLOEXEC, 0600);
	if (t->inflight < 0)
		return cvm_err_internal(err, "%s: %s", ipath, strerror(errno));
	if (r == 0 && !created)
		return invalidate_inflight(t, err);
	if (r < 0 && r != -ENOENT && r != -EBADMSG) {
		*err = e;
		return r;
	}
	if (ftruncate(t->inflight, 0) < 0)
		return cvm_err_internal(err, "%s: %s", ipath, strerror(errno));
	/* A new generation: the hashes say what the image holds for sure — zeros when we just
	 * created it sparse, nothing known otherwise (every block will be sent). */
	if (r == -ENOENT)
		t->s.fd = -1;
	if ((r = st_create(o->state, &t->s, err)) < 0)
		return r;
	t->s.role = 'T';
	t->s.stale = false;
	t->s.bs = h->block_size;
	t->s.disk = h->disk_size;
	t->s.nblocks = nblocks_of(h->disk_size, h->block_size);
	t->s.pass = t->s.cursor = 0;
	if ((r = cvm_random(t->s.gen, 16, err)) < 0)
		return r;
	uint8_t zh[HASH];
	_cleanup_free_ uint8_t *z = calloc(1, h->block_size);
	if (!z)
		return cvm_err_nomem(err);
	if ((r = sha256(z, h->block_size, zh, err)) < 0 || (r = st_init(&t->s, created ? zh : NULL, err)) < 0)
		return r;
	/* A short last block of zeros hashes differently; record it exactly. */
	uint64_t tail = h->disk_size % h->block_size;
	if (created && tail) {
		if ((r = sha256(z, (size_t)tail, zh, err)) < 0 ||
		    (r = mig_pwrite_full(t->s.fd, zh, HASH, ST_HDR + (t->s.nblocks - 1) * HASH, err)) < 0)
			return r;
	}
	return target_sync(t, err);
}

static int serve_manifest(struct target *t, struct cvm_err *err)
{
	uint8_t buf[12 + CVM_REPL_MANIFEST_MAX * HASH];
	size_t zcap = ZSTD_compressBound(sizeof(buf));
	_cleanup_free_ uint8_t *z = malloc(zcap);
	if (!z)
		return cvm_err_nomem(err);
	int r = 0;
	for (uint64_t i = 0; r == 0; i += CVM_REPL_MANIFEST_MAX) {
		uint32_t n = i >= t->s.nblocks ? 0 :
			     (uint32_t)(t->s.nblocks - i < CVM_REPL_MANIFEST_MAX ? t->s.nblocks - i :
										    CVM_REPL_MANIFEST_MAX);
		mig_put_le64(buf, n ? i : t->s.nblocks);
		mig_put_le32(buf + 8, n);
		if (n && (r = st_get(&t->s, i, n, buf + 12, err)) < 0)
			break;
		size_t zl = ZSTD_compressCCtx(t->zc, z, zcap, buf, 12 + (size_t)n * HASH, 3);
		if (!ZSTD_isError(zl) && zl < 12 + (size_t)n * HASH)
			r = conn_send(&t->c, CVM_REPL_MANIFEST, CVM_REPL_F_ZSTD, z, zl, NULL, 0, err);
		else
			r = conn_send(&t->c, CVM_REPL_MANIFEST, 0, buf, 12 + (size_t)n * HASH, NULL, 0, err);
		if (n == 0)
			break;
	}
	return r;
}

static int recv_block(struct target *t, const struct cvm_repl_frame *f, struct cvm_err *err)
{
	struct cvm_repl_block b;
	int r = cvm_repl_block_parse(f->payload, f->len, &b, err);
	if (r < 0)
		return r;
	if (b.index >= t->s.nblocks)
		return cvm_err_set(err, EBADMSG, "BadParameter", "block %llu beyond the disk",
				   (unsigned long long)b.index);
	uint64_t off = b.index * t->s.bs;
	size_t want = t->s.disk - off < t->s.bs ? (size_t)(t->s.disk - off) : t->s.bs;
	const uint8_t *data = b.data;
	if (f->flags & CVM_REPL_F_ZSTD) {
		unsigned long long cs = ZSTD_getFrameContentSize(b.data, b.len);
		if (cs != want)
			return cvm_err_set(err, EBADMSG, "BadParameter", "block %llu: compressed "
					   "frame declares %llu bytes, expected %zu",
					   (unsigned long long)b.index, cs, want);
		size_t d = ZSTD_decompressDCtx(t->dz, t->raw, want, b.data, b.len);
		if (ZSTD_isError(d) || d != want)
			return cvm_err_set(err, EBADMSG, "BadParameter", "block %llu: zstd: %s",
					   (unsigned long long)b.index,
					   ZSTD_isError(d) ? ZSTD_getErrorName(d) : "short");
		data = t->raw;
	} else if (b.len != want) {
		return cvm_err_set(err, EBADMSG, "BadParameter", "block %llu: %zu bytes, expected %zu",
				   (unsigned long long)b.index, b.len, want);
	}
	uint8_t h[HASH];
	if ((r = sha256(data, want, h, err)) < 0)
		return r;
	if (CRYPTO_memcmp(h, b.hash, HASH) != 0)
		return cvm_err_set(err, EBADMSG, "BadParameter", "block %llu: SHA-256 mismatch "
				   "(corrupted in transit or at the source)", (unsigned long long)b.index);
	if (t->npend >= MAX_PENDING)
		return cvm_err_set(err, E2BIG, "BadParameter", "more than %u blocks without a SYNC",
				   MAX_PENDING);
	uint8_t ib[8];
	mig_put_le64(ib, b.index);
	if ((r = mig_pwrite_full(t->inflight, ib, 8, t->npend * 8, err)) < 0 ||
	    (r = target_write(t, data, want, off, err)) < 0)
		return r;
	t->pend_idx[t->npend] = b.index;
	memcpy(t->pend_hash + t->npend * HASH, h, HASH);
	t->npend++;
	t->st->blocks_sent++;
	t->st->bytes_changed += want;
	return 0;
}

/* Data first, then hashes, then the cursor: the state never claims more than the disk holds. */
static int recv_sync(struct target *t, const struct cvm_repl_frame *f, struct cvm_err *err)
{
	uint64_t upto;
	int r = cvm_repl_u64_parse(f->payload, f->len, &upto, err);
	if (r < 0)
		return r;
	if (upto > t->s.nblocks)
		return cvm_err_set(err, EBADMSG, "BadParameter", "SYNC %llu beyond %llu blocks",
				   (unsigned long long)upto, (unsigned long long)t->s.nblocks);
	for (size_t i = 0; i < t->npend; i++)
		if (t->pend_idx[i] >= upto)
			return cvm_err_set(err, EBADMSG, "BadParameter", "SYNC %llu before block %llu",
					   (unsigned long long)upto, (unsigned long long)t->pend_idx[i]);
	if ((r = target_sync(t, err)) < 0)
		return r;
	for (size_t i = 0; i < t->npend && r == 0; i++)
		r = mig_pwrite_full(t->s.fd, t->pend_hash + i * HASH, HASH,
				    ST_HDR + t->pend_idx[i] * HASH, err);
	if (r == 0 && t->npend && fdatasync(t->s.fd) < 0)
		r = cvm_err_internal(err, "state fsync: %s", strerror(errno));
	t->npend = 0;
	t->s.cursor = upto;
	/* A source that fetched our hashes has stored them before its first SYNC. */
	if (t->manifest_served)
		t->s.stale = false;
	if (r == 0)
		r = st_write_hdr(&t->s, err);
	if (r == 0 && ftruncate(t->inflight, 0) < 0)
		r = cvm_err_internal(err, "inflight: %s", strerror(errno));
	return r < 0 ? r : conn_send_u64(&t->c, CVM_REPL_ACK, upto, err);
}

static int session(struct target *t, struct cvm_err *err)
{
	struct cvm_repl_frame f;
	struct cvm_repl_hello h;
	int r = expect(&t->c, CVM_REPL_HELLO, &f, err);
	if (r == 0)
		r = cvm_repl_hello_parse(f.payload, f.len, &h, err);
	if (r == 0)
		r = target_open(t, &h, err);
	if (r == 0 && (t->s.disk != h.disk_size || t->s.bs != h.block_size))
		r = cvm_err_set(err, ENOTSUP, "Conflict", "target state is for a %llu-byte disk in "
				"%u-byte blocks", (unsigned long long)t->s.disk, t->s.bs);
	if (r < 0)
		return r;
	struct cvm_repl_hello me = {.version = CVM_REPL_VERSION, .block_size = t->s.bs,
				    .disk_size = t->s.disk, .pass = t->s.pass, .cursor = t->s.cursor,
				    .flags = t->s.stale ? CVM_REPL_HELLO_STALE : 0};
	memcpy(me.gen, t->s.gen, 16);
	uint8_t hb[CVM_REPL_HELLO_LEN];
	cvm_repl_hello_put(&me, hb);
	if ((r = conn_send(&t->c, CVM_REPL_HELLO_ACK, 0, hb, sizeof(hb), NULL, 0, err)) < 0)
		return r;
	t->raw = malloc(t->s.bs);
	t->pend_idx = malloc(MAX_PENDING * sizeof(*t->pend_idx));
	t->pend_hash = malloc((size_t)MAX_PENDING * HASH);
	if (!t->raw || !t->pend_idx || !t->pend_hash)
		return cvm_err_nomem(err);
	for (;;) {
		if ((r = conn_recv(&t->c, &f, err)) < 0)
			return r;
		switch (f.type) {
		case CVM_REPL_MANIFEST_REQ:
			r = serve_manifest(t, err);
			t->manifest_served = r == 0;
			break;
		case CVM_REPL_BLOCK:
			r = recv_block(t, &f, err);
			break;
		case CVM_REPL_SYNC:
			r = recv_sync(t, &f, err);
			break;
		case CVM_REPL_DONE: {
			uint64_t pass;
			if ((r = cvm_repl_u64_parse(f.payload, f.len, &pass, err)) < 0)
				return r;
			if (pass != t->s.pass || t->npend)
				return cvm_err_set(err, EPROTO, "BadParameter", "DONE for pass %llu; "
						   "target is in pass %llu with %zu blocks unsynced",
						   (unsigned long long)pass,
						   (unsigned long long)t->s.pass, t->npend);
			t->s.pass++;
			t->s.cursor = 0;
			if ((r = st_write_hdr(&t->s, err)) < 0)
				return r;
			t->st->pass = t->s.pass;
			return conn_send_u64(&t->c, CVM_REPL_ACK, t->s.pass, err);
		}
		default:
			return cvm_err_set(err, EPROTO, "BadParameter", "protocol: unexpected frame "
					   "type %u", f.type);
		}
		if (r < 0)
			return r;
	}
}

static int listen_on(const char *addr, int *out, uint16_t *port, struct cvm_err *err)
{
	char host[256], p[16];
	int r = split_hostport(addr, host, p, err);
	if (r < 0)
		return r;
	struct addrinfo hints = {.ai_socktype = SOCK_STREAM, .ai_flags = AI_PASSIVE}, *ai = NULL;
	int g = getaddrinfo(host, p, &hints, &ai);
	if (g)
		return cvm_err_badparam(err, "listen %s: %s", addr, gai_strerror(g));
	int fd = socket(ai->ai_family, ai->ai_socktype | SOCK_CLOEXEC, ai->ai_protocol);
	int one = 1;
	if (fd >= 0)
		setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
	if (fd < 0 || bind(fd, ai->ai_addr, ai->ai_addrlen) < 0 || listen(fd, 4) < 0) {
		r = cvm_err_set(err, errno, "InternalError", "listen %s: %s", addr, strerror(errno));
		if (fd >= 0)
			close(fd);
		freeaddrinfo(ai);
		return r;
	}
	freeaddrinfo(ai);
	struct sockaddr_storage ss;
	socklen_t sl = sizeof(ss);
	getsockname(fd, (struct sockaddr *)&ss, &sl);
	*port = ntohs(ss.ss_family == AF_INET6 ? ((struct sockaddr_in6 *)&ss)->sin6_port :
						 ((struct sockaddr_in *)&ss)->sin_port);
	*out = fd;
	return 0;
}

static int repl_serve(const struct cvm_repl_serve_opts *o, struct cvm_repl_stats *last,
		      struct cvm_err *err);

int cvm_repl_serve(const struct cvm_repl_serve_opts *o, struct cvm_repl_stats *last,
		   struct cvm_err *err)
{
	struct sigpipe_guard g;
	sigpipe_block(&g);
	int r = repl_serve(o, last, err);
	sigpipe_restore(&g);
	return r;
}

static int repl_serve(const struct cvm_repl_serve_opts *o, struct cvm_repl_stats *last,
		      struct cvm_err *err)
{
	if (!o || !o->state || !o->listen || !last)
		return cvm_err_badparam(err, "replicate serve: target, state and listen are required");
	if (!o->target == !o->confidential_disk)
		return cvm_err_badparam(err, "replicate serve: exactly one of target and "
					"confidential_disk is required");
	if (o->confidential_disk && !o->disk_secret)
		return cvm_err_badparam(err, "replicate serve: disk_secret is required with "
					"confidential_disk");
	SSL_CTX *ctx = NULL;
	int r = tls_ctx(&o->tls, true, &ctx, err);
	if (r < 0)
		return r;
	int lfd = -1;
	uint16_t port = 0;
	if ((r = listen_on(o->listen, &lfd, &port, err)) < 0) {
		SSL_CTX_free(ctx);
		return r;
	}
	if (o->ready_file) {
		char pb[16];
		int n = snprintf(pb, sizeof(pb), "%u\n", port);
		if ((r = cvm_file_write_atomic(o->ready_file, pb, (size_t)n, 0644, err)) < 0) {
			close(lfd);
			SSL_CTX_free(ctx);
			return r;
		}
	}
	cvm_log_info("migrate.replicate.listen", "addr=%s port=%u target=%s confidential=%s", o->listen, port,
		     target_name(o), o->confidential_disk ? "yes" : "no");
	for (unsigned n = 0; o->sessions == 0 || n < o->sessions; n++) {
		struct target t = {.o = o, .img = -1, .inflight = -1, .c = {.fd = -1}, .s = {.fd = -1},
				   .st = last};
		memset(last, 0, sizeof(*last));
		uint64_t t0 = (uint64_t)cvm_now_ms();
		struct cvm_err se = {0};
		int sr = 0;
		t.c.fd = accept4(lfd, NULL, NULL, SOCK_CLOEXEC);
		if (t.c.fd < 0) {
			r = cvm_err_internal(err, "accept: %s", strerror(errno));
			break;
		}
		t.c.ctx = NULL; /* shared listener context, freed below */
		t.c.ssl = SSL_new(ctx);
		t.dz = ZSTD_createDCtx();
		t.zc = ZSTD_createCCtx();
		if (!t.c.ssl || !t.dz || !t.zc || SSL_set_fd(t.c.ssl, t.c.fd) != 1)
			sr = cvm_err_nomem(&se);
		else if (SSL_accept(t.c.ssl) != 1)
			sr = cvm_err_openssl(&se, EACCES, "tls: handshake with the source");
		else if ((sr = check_peer(&t.c, o->tls.peer_name, &se)) == 0 &&
			 (sr = conn_bufs(&t.c, &se)) == 0)
			sr = session(&t, &se);
		if (sr < 0 && t.c.rbuf && se.errnum != EPIPE && se.errnum != EPROTO)
			conn_send_error(&t.c, &se);
		last->bytes_payload = t.c.bytes;
		last->bytes_wire = tcp_bytes(t.c.fd);
		last->elapsed_ms = (uint64_t)cvm_now_ms() - t0;
		if (sr < 0)
			cvm_log_warn("migrate.replicate.session", "result=failed reason=\"%s\"", se.msg);
		else
			cvm_log_info("migrate.replicate.session", "result=ok pass=%llu blocks=%llu",
				     (unsigned long long)last->pass,
				     (unsigned long long)last->blocks_sent);
		conn_close(&t.c);
		st_close(&t.s);
		if (t.img >= 0)
			close(t.img);
		cvm_disk_writer_close(t.cd);
		if (t.inflight >= 0)
			close(t.inflight);
		ZSTD_freeDCtx(t.dz);
		ZSTD_freeCCtx(t.zc);
		free(t.raw);
		free(t.pend_idx);
		free(t.pend_hash);
		/* With a fixed session count the caller wants the outcome of each. */
		if (sr < 0 && o->sessions) {
			*err = se;
			r = sr;
		}
	}
	close(lfd);
	SSL_CTX_free(ctx);
	return r;
}
