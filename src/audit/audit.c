/* SPDX-License-Identifier: Apache-2.0 */
/* audit: hash-chained append-only log in the store, with a group-commit writer thread.
 * The chain format and the durability guarantee are described in include/opencvm/audit.h. */
#include <opencvm/audit.h>

#include <jansson.h>
#include <inttypes.h>
#include <openssl/evp.h>
#include <pthread.h>
#include <semaphore.h>
#include <string.h>

#define HASH_LEN 32
#define BATCH_MAX 1024
#define PAGE_ROWS 1000
#define CHAIN_TAG "opencvm-audit-v1" /* hashed with its NUL */

static const char *const audit_schema_v1[] = {
	("CREATE TABLE IF NOT EXISTS cvm_audit (seq INTEGER PRIMARY KEY, time_ms INTEGER NOT NULL, "
	 "principal TEXT, operation TEXT NOT NULL, key_name TEXT, key_version TEXT, "
	 "status INTEGER NOT NULL, result TEXT NOT NULL, request_id TEXT, source TEXT, "
	 "detail TEXT, prev_hash BLOB NOT NULL, hash BLOB NOT NULL)"),
	"CREATE INDEX IF NOT EXISTS cvm_audit_time ON cvm_audit (time_ms)",
	/* The head row: latest seq and hash (NULL hash = empty chain). Every append updates it
	 * first, which serializes appenders across processes and anchors the tail. */
	("CREATE TABLE IF NOT EXISTS cvm_audit_head (id INTEGER PRIMARY KEY CHECK (id = 1), "
	 "seq INTEGER NOT NULL, hash BLOB)"),
	"INSERT INTO cvm_audit_head (id, seq, hash) VALUES (1, 0, NULL) ON CONFLICT DO NOTHING",
};

#define RECORD_COLUMNS                                                                        \
	"seq, time_ms, principal, operation, key_name, key_version, status, result, "         \
	"request_id, source, detail, prev_hash, hash"

/* One pending cvm_audit_append, living on the appender's stack until done. Each waiter has
 * its own semaphore: the writer wakes exactly the appenders of the batch it committed, without
 * the lock (a shared condition variable woke every queued appender at every commit, and they
 * all fought for the lock only to sleep again). */
struct waiter {
	struct cvm_audit_event ev; /* time resolved; strings borrowed from the caller */
	int64_t seq;
	int rc;
	struct cvm_err *err; /* the appender's; filled only on failure */
	sem_t done;
	struct waiter *next;
};

struct batch {
	struct cvm_audit_event *evs[BATCH_MAX];
	int64_t seqs[BATCH_MAX];
	size_t n;
};

struct cvm_audit {
	struct cvm_store *store;
	pthread_t thread;
	pthread_mutex_t lock;
	pthread_cond_t work; /* writer waits for appends */
	struct waiter *head, *tail;
	bool writer_idle;    /* writer sleeps on `work`: only then is a signal needed */
	bool stop;
	struct cvm_audit_stats stats; /* under lock */
	struct batch batch;           /* used by the writer thread only */
};

/* ---- canonical encoding and hashing ----------------------------------------------------- */

static int hash_u64(EVP_MD_CTX *md, uint64_t v)
{
	uint8_t b[8];
	for (int i = 7; i >= 0; i--, v >>= 8)
		b[i] = (uint8_t)v;
	return EVP_DigestUpdate(md, b, sizeof(b));
}

static int hash_str(EVP_MD_CTX *md, const char *s)
{
	uint8_t tag = s ? 1 : 0;
	if (!EVP_DigestUpdate(md, &tag, 1))
		return 0;
	if (!s)
		return 1;
	size_t len = strlen(s);
	uint8_t l[4] = { (uint8_t)(len >> 24), (uint8_t)(len >> 16), (uint8_t)(len >> 8),
			 (uint8_t)len };
	return EVP_DigestUpdate(md, l, sizeof(l)) && EVP_DigestUpdate(md, s, len);
}

/* SHA-256 fetched once and one digest context, reused for every record of a batch or of a
 * verification (EVP_sha256() in EVP_DigestInit_ex looks the implementation up again each
 * time). */
struct hasher {
	EVP_MD *sha256;
	EVP_MD_CTX *md;
};

static void hasher_free(struct hasher *hs)
{
	EVP_MD_CTX_free(hs->md);
	EVP_MD_free(hs->sha256);
}

static int hasher_init(struct hasher *hs, struct cvm_err *err)
{
	hs->sha256 = EVP_MD_fetch(NULL, "SHA256", NULL);
	hs->md = EVP_MD_CTX_new();
	if (!hs->sha256 || !hs->md) {
		hasher_free(hs);
		*hs = (struct hasher){ 0 };
		return cvm_err_openssl(err, EIO, "audit SHA-256");
	}
	return 0;
}

static int chain_hash(struct hasher *hs, const uint8_t prev[HASH_LEN], int64_t seq,
		      const struct cvm_audit_event *ev, uint8_t out[HASH_LEN], struct cvm_err *err)
{
	EVP_MD_CTX *md = hs->md;
	unsigned int len = 0;
	int ok = EVP_DigestInit_ex2(md, hs->sha256, NULL) &&
		 EVP_DigestUpdate(md, prev, HASH_LEN) &&
		 EVP_DigestUpdate(md, CHAIN_TAG, sizeof(CHAIN_TAG)) && hash_u64(md, (uint64_t)seq) &&
		 hash_u64(md, (uint64_t)ev->time_ms) && hash_u64(md, (uint64_t)(int64_t)ev->status) &&
		 hash_str(md, ev->principal) && hash_str(md, ev->operation) &&
		 hash_str(md, ev->key_name) && hash_str(md, ev->key_version) &&
		 hash_str(md, ev->result) && hash_str(md, ev->request_id) &&
		 hash_str(md, ev->source) && hash_str(md, ev->detail) &&
		 EVP_DigestFinal_ex(md, out, &len) && len == HASH_LEN;
	return ok ? 0 : cvm_err_openssl(err, EIO, "audit SHA-256");
}

/* ---- appending -------------------------------------------------------------------------- */

static int check_field(const char *v, const char *name, size_t max, bool required,
		       struct cvm_err *err)
{
	if (!v)
		return required ? cvm_err_badparam(err, "audit event: %s is required", name) : 0;
	if (strnlen(v, max + 1) > max)
		return cvm_err_badparam(err, "audit event: %s longer than %zu bytes", name, max);
	return 0;
}

static int check_event(const struct cvm_audit_event *ev, struct cvm_err *err)
{
	if (!ev)
		return cvm_err_badparam(err, "audit event: missing");
	int r;
	if ((r = check_field(ev->principal, "principal", CVM_AUDIT_FIELD_MAX, false, err)) < 0 ||
	    (r = check_field(ev->operation, "operation", CVM_AUDIT_FIELD_MAX, true, err)) < 0 ||
	    (r = check_field(ev->key_name, "key_name", CVM_AUDIT_FIELD_MAX, false, err)) < 0 ||
	    (r = check_field(ev->key_version, "key_version", CVM_AUDIT_FIELD_MAX, false, err)) < 0 ||
	    (r = check_field(ev->result, "result", CVM_AUDIT_FIELD_MAX, true, err)) < 0 ||
	    (r = check_field(ev->request_id, "request_id", CVM_AUDIT_FIELD_MAX, false, err)) < 0 ||
	    (r = check_field(ev->source, "source", CVM_AUDIT_FIELD_MAX, false, err)) < 0 ||
	    (r = check_field(ev->detail, "detail", CVM_AUDIT_DETAIL_MAX, false, err)) < 0)
		return r;
	if (ev->time_ms < 0)
		return cvm_err_badparam(err, "audit event: time_ms must be >= 0");
	if (ev->detail) {
		json_error_t je;
		json_t *j = json_loads(ev->detail, JSON_DECODE_ANY | JSON_REJECT_DUPLICATES, &je);
		if (!j)
			return cvm_err_badparam(err, "audit event: detail must be JSON text");
		json_decref(j);
	}
	return 0;
}

#define RECORD_PARAMS 13
#define INSERT_CHUNK 32 /* rows per INSERT: fewer round trips on PostgreSQL */

/* One multi-row INSERT for records [first, first + k) of a batch; hashes[i] is the hash before
 * record i and hashes[i + 1] its own. The SQL text depends on k only, so it stays cached. */
static int insert_chunk(struct cvm_tx *tx, struct cvm_audit_event *const *evs, size_t first,
			size_t k, int64_t seq0, uint8_t (*hashes)[HASH_LEN], struct cvm_err *err)
{
	struct cvm_val v[RECORD_PARAMS * INSERT_CHUNK];
	_cleanup_buf_ struct cvm_buf sql = { 0 };
	int r = cvm_buf_append_str(&sql, "INSERT INTO cvm_audit (" RECORD_COLUMNS ") VALUES ");
	for (size_t j = 0; j < k && r >= 0; j++) {
		size_t i = first + j;
		const struct cvm_audit_event *ev = evs[i];
		struct cvm_val *p = &v[j * RECORD_PARAMS];
		p[0] = CVM_VAL_I(seq0 + (int64_t)i);
		p[1] = CVM_VAL_I(ev->time_ms);
		p[2] = CVM_VAL_S(ev->principal);
		p[3] = CVM_VAL_S(ev->operation);
		p[4] = CVM_VAL_S(ev->key_name);
		p[5] = CVM_VAL_S(ev->key_version);
		p[6] = CVM_VAL_I(ev->status);
		p[7] = CVM_VAL_S(ev->result);
		p[8] = CVM_VAL_S(ev->request_id);
		p[9] = CVM_VAL_S(ev->source);
		p[10] = CVM_VAL_S(ev->detail);
		p[11] = CVM_VAL_B(hashes[i], HASH_LEN);
		p[12] = CVM_VAL_B(hashes[i + 1], HASH_LEN);
		r = cvm_buf_append_str(&sql, j ? ", (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
					       : "(?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)");
	}
	if (r < 0 || !cvm_buf_cstr(&sql))
		return cvm_err_nomem(err);
	r = cvm_tx_exec(tx, (const char *)sql.data, v, k * RECORD_PARAMS, NULL, err);
	return r < 0 ? cvm_err_prefix(err, "audit append") : 0;
}

/* Appends n records in the caller's transaction: lock the head (before the snapshot when this
 * is the transaction's first statement, so appenders from other processes queue instead of
 * failing serialization), reserve n seqs on the head row, chain and insert the records, store
 * the new head hash. */
static int append_records(struct cvm_tx *tx, struct cvm_audit_event *const *evs, size_t n,
			  int64_t *seqs, struct cvm_err *err)
{
	_cleanup_rows_ struct cvm_rows *head = NULL;
	struct cvm_val inc = CVM_VAL_I((int64_t)n);
	int r = cvm_tx_lock(tx, "cvm_audit_head", err);
	if (r < 0)
		return cvm_err_prefix(err, "audit append");
	r = cvm_tx_query(tx, "UPDATE cvm_audit_head SET seq = seq + ? WHERE id = 1 "
				 "RETURNING seq, hash",
			     &inc, 1, &head, err);
	if (r < 0)
		return cvm_err_prefix(err, "audit append");
	if (cvm_rows_count(head) != 1)
		return cvm_err_internal(err, "audit append: head row missing (schema not ensured?)");
	size_t hlen;
	const uint8_t *h = cvm_rows_blob(head, 0, 1, &hlen);
	if (h && hlen != HASH_LEN)
		return cvm_err_internal(err, "audit append: head hash has %zu bytes", hlen);
	_cleanup_free_ uint8_t(*hashes)[HASH_LEN] = calloc(n + 1, HASH_LEN);
	if (!hashes)
		return cvm_err_nomem(err);
	if (h)
		memcpy(hashes[0], h, HASH_LEN);
	int64_t seq0 = cvm_rows_int(head, 0, 0) - (int64_t)n + 1;
	struct hasher hs;
	if ((r = hasher_init(&hs, err)) < 0)
		return r;
	for (size_t i = 0; i < n && r == 0; i++) {
		r = chain_hash(&hs, hashes[i], seq0 + (int64_t)i, evs[i], hashes[i + 1], err);
		seqs[i] = seq0 + (int64_t)i;
	}
	hasher_free(&hs);
	if (r < 0)
		return r;
	for (size_t i = 0; i < n; i += INSERT_CHUNK) {
		r = insert_chunk(tx, evs, i, n - i < INSERT_CHUNK ? n - i : INSERT_CHUNK, seq0,
				 hashes, err);
		if (r < 0)
			return r;
	}
	struct cvm_val hv = CVM_VAL_B(hashes[n], HASH_LEN);
	r = cvm_tx_exec(tx, "UPDATE cvm_audit_head SET hash = ? WHERE id = 1", &hv, 1, NULL, err);
	return r < 0 ? cvm_err_prefix(err, "audit append") : 0;
}

int cvm_audit_append_tx(struct cvm_tx *tx, const struct cvm_audit_event *ev, int64_t *seq,
			struct cvm_err *err)
{
	if (!tx)
		return cvm_err_badparam(err, "audit append: no transaction");
	if (cvm_tx_mode(tx) != CVM_TX_WRITE)
		return cvm_err_badparam(err, "audit append: transaction is read-only");
	int r = check_event(ev, err);
	if (r < 0)
		return r;
	struct cvm_audit_event e = *ev;
	if (!e.time_ms)
		e.time_ms = cvm_now_ms();
	struct cvm_audit_event *evs[] = { &e };
	int64_t s;
	r = append_records(tx, evs, 1, &s, err);
	if (r == 0 && seq)
		*seq = s;
	return r;
}

static int batch_fn(struct cvm_tx *tx, void *ctx, struct cvm_err *err)
{
	struct batch *b = ctx;
	return append_records(tx, b->evs, b->n, b->seqs, err);
}

static void *writer_main(void *arg)
{
	struct cvm_audit *a = arg;
	struct batch *b = &a->batch;
	pthread_mutex_lock(&a->lock);
	for (;;) {
		while (!a->head && !a->stop) {
			a->writer_idle = true;
			pthread_cond_wait(&a->work, &a->lock);
			a->writer_idle = false;
		}
		if (!a->head)
			break;
		/* Everything queued while the previous commit ran becomes one batch; appends that
		 * arrive during this commit queue up for the next one. */
		struct waiter *first = a->head, *w = first;
		size_t n = 0;
		for (; w && n < BATCH_MAX; w = w->next, n++)
			b->evs[n] = &w->ev;
		a->head = w;
		if (!w)
			a->tail = NULL;
		pthread_mutex_unlock(&a->lock);

		struct cvm_err err = { 0 };
		b->n = n;
		int rc = cvm_store_transact(a->store, CVM_TX_WRITE, batch_fn, b, &err);
		if (rc < 0)
			cvm_log_error("audit_commit_failed", "records=%zu error=%s", n, err.msg);

		/* Counted before anyone returns, so a caller's append shows in cvm_audit_stats. */
		pthread_mutex_lock(&a->lock);
		if (rc == 0) {
			a->stats.records += (int64_t)n;
			a->stats.batches++;
		} else {
			a->stats.failed_batches++;
		}
		pthread_mutex_unlock(&a->lock);

		/* The batch is detached from the queue: hand out results without the lock. Read
		 * next before posting; the appender's stack frame may be gone right after. */
		w = first;
		for (size_t i = 0; i < n; i++) {
			struct waiter *next = w->next;
			w->rc = rc;
			w->seq = rc == 0 ? b->seqs[i] : 0;
			if (rc < 0 && w->err)
				*w->err = err;
			sem_post(&w->done);
			w = next;
		}
		pthread_mutex_lock(&a->lock);
	}
	pthread_mutex_unlock(&a->lock);
	return NULL;
}

int cvm_audit_append(struct cvm_audit *a, const struct cvm_audit_event *ev, int64_t *seq,
		     struct cvm_err *err)
{
	if (!a)
		return cvm_err_badparam(err, "audit append: no audit log");
	int r = check_event(ev, err);
	if (r < 0)
		return r;
	struct waiter w = { .ev = *ev, .err = err };
	if (!w.ev.time_ms)
		w.ev.time_ms = cvm_now_ms();
	if (sem_init(&w.done, 0, 0) != 0)
		return cvm_err_internal(err, "audit append: cannot create semaphore");
	pthread_mutex_lock(&a->lock);
	if (a->stop) {
		pthread_mutex_unlock(&a->lock);
		sem_destroy(&w.done);
		return cvm_err_internal(err, "audit append: audit log is closing");
	}
	if (a->tail)
		a->tail->next = &w;
	else
		a->head = &w;
	a->tail = &w;
	bool wake = a->writer_idle;
	pthread_mutex_unlock(&a->lock);
	if (wake)
		pthread_cond_signal(&a->work);
	while (sem_wait(&w.done) != 0)
		; /* EINTR: keep waiting, the writer always posts */
	sem_destroy(&w.done);
	if (w.rc < 0)
		return w.rc;
	if (seq)
		*seq = w.seq;
	return 0;
}

void cvm_audit_stats(struct cvm_audit *a, struct cvm_audit_stats *out)
{
	pthread_mutex_lock(&a->lock);
	*out = a->stats;
	pthread_mutex_unlock(&a->lock);
}

int cvm_audit_open(struct cvm_store *s, struct cvm_audit **out, struct cvm_err *err)
{
	if (!s || !out)
		return cvm_err_badparam(err, "audit open: expected a store");
	int r = cvm_store_ensure_schema(s, "audit", 1, audit_schema_v1,
					CVM_ARRAY_SIZE(audit_schema_v1), err);
	if (r < 0)
		return r;
	struct cvm_audit *a = calloc(1, sizeof(*a));
	if (!a)
		return cvm_err_nomem(err);
	a->store = s;
	pthread_mutex_init(&a->lock, NULL);
	pthread_cond_init(&a->work, NULL);
	r = pthread_create(&a->thread, NULL, writer_main, a);
	if (r != 0) {
		pthread_mutex_destroy(&a->lock);
		pthread_cond_destroy(&a->work);
		free(a);
		return cvm_err_set(err, r, "InternalError", "audit open: cannot start writer thread");
	}
	*out = a;
	return 0;
}

void cvm_audit_close(struct cvm_audit *a)
{
	if (!a)
		return;
	pthread_mutex_lock(&a->lock);
	a->stop = true;
	pthread_cond_signal(&a->work);
	pthread_mutex_unlock(&a->lock);
	pthread_join(a->thread, NULL);
	pthread_mutex_destroy(&a->lock);
	pthread_cond_destroy(&a->work);
	free(a);
}

/* ---- reading back ----------------------------------------------------------------------- */

static void row_event(const struct cvm_rows *r, size_t i, struct cvm_audit_event *ev)
{
	*ev = (struct cvm_audit_event){
		.time_ms = cvm_rows_int(r, i, 1),
		.principal = cvm_rows_text(r, i, 2),
		.operation = cvm_rows_text(r, i, 3),
		.key_name = cvm_rows_text(r, i, 4),
		.key_version = cvm_rows_text(r, i, 5),
		.status = (int)cvm_rows_int(r, i, 6),
		.result = cvm_rows_text(r, i, 7),
		.request_id = cvm_rows_text(r, i, 8),
		.source = cvm_rows_text(r, i, 9),
		.detail = cvm_rows_text(r, i, 10),
	};
}

static int fetch_page(struct cvm_tx *tx, int64_t after, int64_t since_ms, struct cvm_rows **out,
		      struct cvm_err *err)
{
	struct cvm_val v[] = { CVM_VAL_I(after), CVM_VAL_I(since_ms), CVM_VAL_I(PAGE_ROWS) };
	return cvm_tx_query(tx, "SELECT " RECORD_COLUMNS " FROM cvm_audit "
				"WHERE seq > ? AND time_ms >= ? ORDER BY seq LIMIT ?",
			    v, CVM_ARRAY_SIZE(v), out, err);
}

struct verify_state {
	int64_t expected; /* next seq */
	uint8_t prev[HASH_LEN];
	int64_t bad;
	struct hasher hs;
};

/* Checks one record against the running chain; sets st->bad on the first mismatch. */
static int verify_row(struct verify_state *st, const struct cvm_rows *r, size_t i,
		      struct cvm_err *err)
{
	int64_t seq = cvm_rows_int(r, i, 0);
	if (seq != st->expected) { /* a gap: record `expected` was deleted or renumbered */
		st->bad = st->expected;
		return 0;
	}
	size_t plen, hlen;
	const uint8_t *prev = cvm_rows_blob(r, i, 11, &plen);
	const uint8_t *hash = cvm_rows_blob(r, i, 12, &hlen);
	if (plen != HASH_LEN || hlen != HASH_LEN || memcmp(prev, st->prev, HASH_LEN) != 0) {
		st->bad = seq;
		return 0;
	}
	struct cvm_audit_event ev;
	row_event(r, i, &ev);
	uint8_t h[HASH_LEN];
	int ret = chain_hash(&st->hs, st->prev, seq, &ev, h, err);
	if (ret < 0)
		return ret;
	if (memcmp(h, hash, HASH_LEN) != 0) {
		st->bad = seq;
		return 0;
	}
	memcpy(st->prev, h, HASH_LEN);
	st->expected++;
	return 0;
}

/* The head row must name exactly the last verified record: a larger seq means the tail was
 * cut off, a smaller one means records were added behind the head's back. */
static void verify_head(struct verify_state *st, const struct cvm_rows *head)
{
	int64_t last = st->expected - 1;
	int64_t head_seq = cvm_rows_int(head, 0, 0);
	size_t hlen;
	const uint8_t *h = cvm_rows_blob(head, 0, 1, &hlen);
	if (head_seq > last)
		st->bad = last + 1;
	else if (head_seq < last)
		st->bad = head_seq + 1;
	else if (last > 0 && (!h || hlen != HASH_LEN || memcmp(h, st->prev, HASH_LEN) != 0))
		st->bad = last;
	else if (last == 0 && h)
		st->bad = 1;
}

/* Walks the whole chain and the head row in one read transaction; fills st->bad. */
static int verify_chain(struct cvm_store *s, struct verify_state *st, struct cvm_err *err)
{
	_cleanup_tx_ struct cvm_tx *tx = NULL;
	int r = cvm_tx_begin(s, CVM_TX_READ, &tx, err);
	if (r < 0)
		return r;
	_cleanup_rows_ struct cvm_rows *head = NULL;
	r = cvm_tx_query(tx, "SELECT seq, hash FROM cvm_audit_head WHERE id = 1", NULL, 0, &head,
			 err);
	if (r < 0)
		return cvm_err_prefix(err, "audit verify");
	if (cvm_rows_count(head) != 1)
		return cvm_err_internal(err, "audit verify: head row missing");
	while (!st->bad) {
		_cleanup_rows_ struct cvm_rows *page = NULL;
		r = fetch_page(tx, st->expected - 1, INT64_MIN, &page, err);
		if (r < 0)
			return cvm_err_prefix(err, "audit verify");
		size_t n = cvm_rows_count(page);
		for (size_t i = 0; i < n && !st->bad; i++)
			if ((r = verify_row(st, page, i, err)) < 0)
				return r;
		if (n < PAGE_ROWS)
			break;
	}
	if (!st->bad)
		verify_head(st, head);
	return 0;
}

int cvm_audit_verify(struct cvm_store *s, int64_t *records, int64_t *bad_seq,
		     struct cvm_err *err)
{
	if (!s)
		return cvm_err_badparam(err, "audit verify: expected a store");
	struct verify_state st = { .expected = 1 };
	int r = hasher_init(&st.hs, err);
	if (r < 0)
		return r;
	r = verify_chain(s, &st, err);
	hasher_free(&st.hs);
	if (r < 0)
		return r;
	if (records)
		*records = st.expected - 1;
	if (bad_seq)
		*bad_seq = st.bad;
	if (st.bad)
		return cvm_err_set(err, EBADMSG, "AuditChainBroken",
				   "audit verify: chain broken at seq %" PRId64, st.bad);
	return 0;
}

static json_t *hex_json(const uint8_t *b, size_t len)
{
	_cleanup_free_ char *h = b ? cvm_hex_encode(b, len) : NULL;
	return h ? json_string(h) : json_null();
}

/* One record as the JSON object of the export format. NULL: out of memory. */
static json_t *row_json(const struct cvm_rows *r, size_t i)
{
	struct cvm_audit_event ev;
	row_event(r, i, &ev);
	char iso[32];
	cvm_time_iso8601(ev.time_ms / 1000, iso);
	size_t plen, hlen;
	const uint8_t *prev = cvm_rows_blob(r, i, 11, &plen);
	const uint8_t *hash = cvm_rows_blob(r, i, 12, &hlen);
	return json_pack("{sI sI ss ss? ss? ss? ss? si ss? ss? ss? ss? so so}",
			 "seq", (json_int_t)cvm_rows_int(r, i, 0), "time_ms",
			 (json_int_t)ev.time_ms, "time", iso, "principal", ev.principal,
			 "operation", ev.operation, "key_name", ev.key_name, "key_version",
			 ev.key_version, "status", ev.status, "result", ev.result,
			 "request_id", ev.request_id, "source", ev.source, "detail", ev.detail,
			 "prev_hash", hex_json(prev, plen), "hash", hex_json(hash, hlen));
}

int cvm_audit_recent(struct cvm_store *s, const char *key_name, const char *operation,
		     size_t max, json_t **records, struct cvm_err *err)
{
	*records = NULL;
	if (!s || !key_name || !operation || !max || max > 10000)
		return cvm_err_badparam(err, "audit recent: expected a store, a name, an operation "
					     "and 1..10000 records");
	_cleanup_tx_ struct cvm_tx *tx = NULL;
	_cleanup_rows_ struct cvm_rows *rows = NULL;
	struct cvm_val v[] = { CVM_VAL_S(key_name), CVM_VAL_S(operation),
			       CVM_VAL_I((int64_t)max) };
	int r = cvm_tx_begin(s, CVM_TX_READ, &tx, err);
	if (r == 0)
		r = cvm_tx_query(tx, "SELECT " RECORD_COLUMNS " FROM cvm_audit WHERE key_name = ? "
				     "AND operation = ? ORDER BY seq DESC LIMIT ?",
				 v, CVM_ARRAY_SIZE(v), &rows, err);
	if (r < 0)
		return cvm_err_prefix(err, "audit recent");
	json_t *a = json_array();
	for (size_t i = 0; a && i < cvm_rows_count(rows); i++) {
		json_t *o = row_json(rows, i);
		if (!o || json_array_append_new(a, o) < 0) {
			json_decref(a);
			a = NULL;
		}
	}
	*records = a;
	return a ? 0 : cvm_err_nomem(err);
}

static int export_row(const struct cvm_rows *r, size_t i, FILE *out, struct cvm_err *err)
{
	json_t *o = row_json(r, i);
	if (!o)
		return cvm_err_nomem(err);
	int r2 = json_dumpf(o, out, JSON_COMPACT | JSON_PRESERVE_ORDER);
	json_decref(o);
	if (r2 < 0 || fputc('\n', out) == EOF)
		return cvm_err_internal(err, "audit export: write failed");
	return 0;
}

int cvm_audit_export(struct cvm_store *s, int64_t since_ms, FILE *out, int64_t *count,
		     struct cvm_err *err)
{
	if (!s || !out)
		return cvm_err_badparam(err, "audit export: expected a store and an output stream");
	_cleanup_tx_ struct cvm_tx *tx = NULL;
	int r = cvm_tx_begin(s, CVM_TX_READ, &tx, err);
	if (r < 0)
		return r;
	int64_t after = 0, n_out = 0;
	for (;;) {
		_cleanup_rows_ struct cvm_rows *page = NULL;
		r = fetch_page(tx, after, since_ms, &page, err);
		if (r < 0)
			return cvm_err_prefix(err, "audit export");
		size_t n = cvm_rows_count(page);
		for (size_t i = 0; i < n; i++) {
			if ((r = export_row(page, i, out, err)) < 0)
				return r;
			after = cvm_rows_int(page, i, 0);
			n_out++;
		}
		if (n < PAGE_ROWS)
			break;
	}
	if (fflush(out) == EOF)
		return cvm_err_internal(err, "audit export: write failed");
	if (count)
		*count = n_out;
	return 0;
}
