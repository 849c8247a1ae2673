/* SPDX-License-Identifier: Apache-2.0 */
/* Unit tests for the disk module: token parser, key URLs, the XTS engine, create/encrypt/
 * decrypt/unlock/rotate/info, interruption and resume, failure twins. */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <fcntl.h>
#include <ftw.h>
#include <libcryptsetup.h>
#include <openssl/evp.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "disk/disk-internal.h"
#include "testkw.h"

#define MIB (1024u * 1024u)

struct fx {
	char dir[64];
	char keys[96];
	struct testkw tw;
	struct cvm_disk_keywrap kw;
	struct cvm_disk_wrap_params wp;
};

static int rm_cb(const char *p, const struct stat *s, int f, struct FTW *w)
{
	(void)s, (void)f, (void)w;
	return remove(p);
}

static int setup(void **state)
{
	struct fx *fx = calloc(1, sizeof(*fx));
	snprintf(fx->dir, sizeof(fx->dir), "/tmp/cvm-disk-test-XXXXXX");
	if (!fx || !mkdtemp(fx->dir))
		return -1;
	snprintf(fx->keys, sizeof(fx->keys), "%s/keys", fx->dir);
	mkdir(fx->keys, 0700);
	if (testkw_make_key(fx->keys, "des1", "v1", "RSA-OAEP-256") < 0)
		return -1;
	testkw_init(&fx->tw, fx->keys, &fx->kw);
	fx->wp = (struct cvm_disk_wrap_params){ .kw = &fx->kw,
						.key_url = "https://kv.test/keys/des1",
						.alg = "RSA-OAEP-256",
						.des = "/subscriptions/s/des/d1" };
	*state = fx;
	return 0;
}

static int teardown(void **state)
{
	struct fx *fx = *state;
	nftw(fx->dir, rm_cb, 16, FTW_DEPTH | FTW_PHYS);
	free(fx);
	return 0;
}

static char *path_in(struct fx *fx, const char *name)
{
	return cvm_asprintf("%s/%s", fx->dir, name);
}

static void write_file(const char *path, const uint8_t *data, size_t len)
{
	int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0600);
	assert_true(fd >= 0);
	assert_int_equal(write(fd, data, len), (ssize_t)len);
	close(fd);
}

static uint8_t *read_all(const char *path, size_t *len)
{
	uint8_t *buf = NULL;
	struct cvm_err err = { 0 };
	assert_int_equal(cvm_file_read(path, (size_t)1 << 34, &buf, len, &err), 0);
	return buf;
}

static void sha256_file(const char *path, uint8_t out[32])
{
	size_t len;
	uint8_t *b = read_all(path, &len);
	unsigned int olen = 32;
	EVP_Digest(b, len, out, &olen, EVP_sha256(), NULL);
	free(b);
}

/* A source image: random data with a marker every 4 KiB; optionally an MBR signature. */
static uint8_t *make_source(const char *path, size_t len, bool mbr)
{
	uint8_t *d = malloc(len);
	assert_non_null(d);
	assert_int_equal(cvm_random(d, len, NULL), 0);
	for (size_t off = 0; off + 16 <= len; off += 4096)
		memcpy(d + off + 100, "OPENCVM-MARKER!!", 16);
	if (mbr) {
		d[510] = 0x55;
		d[511] = 0xAA;
	} else {
		d[510] = 0;
	}
	write_file(path, d, len);
	return d;
}

static size_t count_marker(const uint8_t *d, size_t len)
{
	size_t n = 0;
	for (const uint8_t *p = d; (p = memmem(p, len - (size_t)(p - d), "OPENCVM-MARKER", 14));
	     p++)
		n++;
	return n;
}

static bool all_zero(const uint8_t *d, size_t n)
{
	for (size_t i = 0; i < n; i++)
		if (d[i])
			return false;
	return true;
}

/* ---- token ---------------------------------------------------------------------------- */

static char *b64_of_len(size_t n)
{
	uint8_t buf[512];
	memset(buf, 0xA5, sizeof(buf));
	return cvm_b64url_encode(buf, n);
}

static char *token_with(const char *fmt_override)
{
	_cleanup_free_ char *w = b64_of_len(40);
	if (fmt_override) {
		/* template with one %s for the wrapped value */
		const char *at = strstr(fmt_override, "%s");
		return cvm_asprintf("%.*s%s%s", (int)(at - fmt_override), fmt_override, w, at + 2);
	}
	return cvm_asprintf("{\"type\":\"opencvm-hsm\",\"keyslots\":[\"0\"],"
			    "\"key_url\":\"https://kv.test/keys/des1/0123abcd\",\"alg\":\"A256KW\","
			    "\"wrapped\":\"%s\",\"des\":\"d1\",\"version\":1}",
			    w);
}

static void test_token_ok(void **state)
{
	(void)state;
	_cleanup_free_ char *j = token_with(NULL);
	struct cvm_disk_hsm_token t;
	struct cvm_err err = { 0 };
	assert_int_equal(cvm_disk_hsm_token_parse((const uint8_t *)j, strlen(j), &t, &err), 0);
	assert_int_equal(t.keyslot, 0);
	assert_string_equal(t.alg, "A256KW");
	assert_string_equal(t.key_url, "https://kv.test/keys/des1/0123abcd");
	assert_string_equal(t.des, "d1");
	_cleanup_free_ char *again = NULL;
	assert_int_equal(cvm_disk_hsm_token_json(&t, &again, &err), 0);
	struct cvm_disk_hsm_token t2;
	assert_int_equal(cvm_disk_hsm_token_parse((const uint8_t *)again, strlen(again), &t2, &err),
			 0);
	assert_string_equal(t2.wrapped, t.wrapped);
	cvm_disk_hsm_token_clear(&t);
	cvm_disk_hsm_token_clear(&t2);
}

static void test_token_errors(void **state)
{
	(void)state;
	static const struct {
		const char *json;  /* %s = a valid A256KW wrapped value */
		const char *want;  /* substring of the error message */
	} cases[] = {
		{ "{\"type\":\"luks2-keyring\",\"keyslots\":[\"0\"],\"key_url\":\"https://k/keys/a/1\",\"alg\":\"A256KW\",\"wrapped\":\"%s\",\"des\":\"d\",\"version\":1}", "type: " },
		{ "{\"type\":\"opencvm-hsm\",\"keyslots\":[],\"key_url\":\"https://k/keys/a/1\",\"alg\":\"A256KW\",\"wrapped\":\"%s\",\"des\":\"d\",\"version\":1}", "keyslots: expected exactly one" },
		{ "{\"type\":\"opencvm-hsm\",\"keyslots\":[0],\"key_url\":\"https://k/keys/a/1\",\"alg\":\"A256KW\",\"wrapped\":\"%s\",\"des\":\"d\",\"version\":1}", "keyslots[0]: expected a string" },
		{ "{\"type\":\"opencvm-hsm\",\"keyslots\":[\"32\"],\"key_url\":\"https://k/keys/a/1\",\"alg\":\"A256KW\",\"wrapped\":\"%s\",\"des\":\"d\",\"version\":1}", "keyslots[0]" },
		{ "{\"type\":\"opencvm-hsm\",\"keyslots\":[\"0\"],\"key_url\":\"https://k/keys/a\",\"alg\":\"A256KW\",\"wrapped\":\"%s\",\"des\":\"d\",\"version\":1}", "key_url: expected" },
		{ "{\"type\":\"opencvm-hsm\",\"keyslots\":[\"0\"],\"key_url\":\"ftp://k/keys/a/1\",\"alg\":\"A256KW\",\"wrapped\":\"%s\",\"des\":\"d\",\"version\":1}", "key_url: expected" },
		{ "{\"type\":\"opencvm-hsm\",\"keyslots\":[\"0\"],\"key_url\":\"https://k/keys/a/1\",\"alg\":\"RSA1_5\",\"wrapped\":\"%s\",\"des\":\"d\",\"version\":1}", "alg: " },
		{ "{\"type\":\"opencvm-hsm\",\"keyslots\":[\"0\"],\"key_url\":\"https://k/keys/a/1\",\"alg\":\"RSA-OAEP-256\",\"wrapped\":\"%s\",\"des\":\"d\",\"version\":1}", "wrapped: RSA-OAEP-256 output must be" },
		{ "{\"type\":\"opencvm-hsm\",\"keyslots\":[\"0\"],\"key_url\":\"https://k/keys/a/1\",\"alg\":\"A256KW\",\"wrapped\":\"!!%s\",\"des\":\"d\",\"version\":1}", "wrapped" },
		{ "{\"type\":\"opencvm-hsm\",\"keyslots\":[\"0\"],\"key_url\":\"https://k/keys/a/1\",\"alg\":\"A256KW\",\"wrapped\":\"%s\",\"des\":\"\",\"version\":1}", "des: expected" },
		{ "{\"type\":\"opencvm-hsm\",\"keyslots\":[\"0\"],\"key_url\":\"https://k/keys/a/1\",\"alg\":\"A256KW\",\"wrapped\":\"%s\",\"des\":\"d\",\"version\":2}", "version" },
		{ "{\"type\":\"opencvm-hsm\",\"keyslots\":[\"0\"],\"key_url\":\"https://k/keys/a/1\",\"alg\":\"A256KW\",\"wrapped\":\"%s\",\"des\":\"d\"}", "version: required" },
		{ "{\"type\":\"opencvm-hsm\",\"keyslots\":[\"0\"],\"key_url\":\"https://k/keys/a/1\",\"alg\":\"A256KW\",\"wrapped\":\"%s\",\"des\":\"d\",\"version\":1,\"extra\":1}", "extra: unknown field" },
		{ "{\"type\":\"opencvm-hsm\",\"type\":\"opencvm-hsm\",\"wrapped\":\"%s\"}", "invalid JSON" },
		{ "[\"%s\"]", "expected a JSON object" },
		{ "{\"type\":\"opencvm-hsm\",\"wrapped\":\"%s\"", "invalid JSON" },
	};
	for (size_t i = 0; i < CVM_ARRAY_SIZE(cases); i++) {
		_cleanup_free_ char *j = token_with(cases[i].json);
		struct cvm_disk_hsm_token t;
		struct cvm_err err = { 0 };
		int r = cvm_disk_hsm_token_parse((const uint8_t *)j, strlen(j), &t, &err);
		if (r >= 0 || !strstr(err.msg, cases[i].want) ||
		    !strstr(err.msg, "opencvm-hsm token"))
			fail_msg("case %zu: r=%d msg=%s (want %s)", i, r, err.msg, cases[i].want);
		assert_null(t.key_url);
	}
	/* empty and oversized input */
	struct cvm_disk_hsm_token t;
	struct cvm_err err = { 0 };
	assert_int_equal(cvm_disk_hsm_token_parse(NULL, 0, &t, &err), -EINVAL);
	uint8_t big[16385];
	memset(big, ' ', sizeof(big));
	assert_int_equal(cvm_disk_hsm_token_parse(big, sizeof(big), &t, &err), -E2BIG);
}

static void test_key_url(void **state)
{
	(void)state;
	assert_true(cvm_disk_key_url_valid("https://kv.example/keys/k1/0123456789abcdef", true));
	assert_true(cvm_disk_key_url_valid("http://127.0.0.1:8443/prefix/keys/k-1/v2", true));
	assert_true(cvm_disk_key_url_valid("https://kv.example/keys/k1", false));
	assert_true(cvm_disk_key_url_valid("https://kv.example/keys/k1/", false));
	assert_false(cvm_disk_key_url_valid("https://kv.example/keys/k1", true));
	assert_false(cvm_disk_key_url_valid("https://kv.example/keys/k1/v1/extra", false));
	assert_false(cvm_disk_key_url_valid("https://kv.example/keys/k_1/v1", false));
	assert_false(cvm_disk_key_url_valid("https://kv.example/keys//v1", false));
	assert_false(cvm_disk_key_url_valid("https:///keys/k1/v1", false));
	assert_false(cvm_disk_key_url_valid("https://kv.example/secrets/k1/v1", false));
	assert_false(cvm_disk_key_url_valid("file:///keys/k1/v1", false));
	assert_false(cvm_disk_key_url_valid("https://kv.example/keys/k1/v1?x=1", false));
	assert_false(cvm_disk_key_url_valid(NULL, false));
}

static void test_kind(void **state)
{
	(void)state;
	enum cvm_disk_kind k;
	struct cvm_err err = { 0 };
	assert_int_equal(cvm_disk_kind_parse("vmgs", &k, &err), 0);
	assert_int_equal(k, CVM_DISK_KIND_VMGS);
	assert_string_equal(cvm_disk_kind_name(CVM_DISK_KIND_OS), "os");
	assert_int_equal(cvm_disk_kind_parse("swap", &k, &err), -EINVAL);
	assert_non_null(strstr(err.msg, "kind"));
}

static void test_progress_token(void **state)
{
	(void)state;
	struct cvm_disk_progress p = { .done = 8388608, .total = 10485760, .source_size = 10485760,
				       .source_mtime_ns = 42, .chunk = 4194304, .sector_size = 4096 };
	struct cvm_disk_progress q;
	struct cvm_err err = { 0 };
	_cleanup_free_ char *j = NULL;
	assert_int_equal(cvm_disk_progress_json(&p, &j, &err), 0);
	assert_int_equal(cvm_disk_progress_parse((const uint8_t *)j, strlen(j), &q, &err), 0);
	assert_true(p.done == q.done && p.total == q.total && p.source_size == q.source_size &&
		    p.source_mtime_ns == q.source_mtime_ns && p.chunk == q.chunk &&
		    p.sector_size == q.sector_size);
	static const struct {
		const char *from, *to, *want;
	} bad[] = {
		{ "\"done\":\"8388608\"", "\"done\":\"8388609\"", "done: must be a chunk boundary" },
		{ "\"done\":\"8388608\"", "\"done\":\"20971520\"", "done: must be a chunk" },
		{ "\"chunk\":\"4194304\"", "\"chunk\":\"100\"", "chunk: must be" },
		{ "\"sector_size\":4096", "\"sector_size\":1024", "sector_size: must be" },
		{ "\"keyslots\":[]", "\"keyslots\":[\"0\"]", "keyslots: must be empty" },
		{ "\"total\":\"10485760\"", "\"total\":10485760", "total: expected a string" },
		{ "\"done\":\"8388608\"", "\"done\":\"-1\"", "done" },
		{ "\"type\":\"opencvm-progress\"", "\"type\":\"x\"", "type: " },
		{ "\"type\":\"opencvm-progress\"", "\"junk\":1,\"type\":\"opencvm-progress\"",
		  "junk: unknown field" },
	};
	for (size_t i = 0; i < CVM_ARRAY_SIZE(bad); i++) {
		const char *at = strstr(j, bad[i].from);
		assert_non_null(at);
		_cleanup_free_ char *m = cvm_asprintf("%.*s%s%s", (int)(at - j), j, bad[i].to,
						      at + strlen(bad[i].from));
		int r = cvm_disk_progress_parse((const uint8_t *)m, strlen(m), &q, &err);
		if (r >= 0 || !strstr(err.msg, bad[i].want) ||
		    !strstr(err.msg, "opencvm-progress token"))
			fail_msg("case %zu: r=%d msg=%s", i, r, err.msg);
	}
}

/* ---- engine --------------------------------------------------------------------------- */

static void engine_case(struct fx *fx, uint32_t ss, unsigned threads, size_t chunk)
{
	uint8_t key[64];
	assert_int_equal(cvm_random(key, sizeof(key), NULL), 0);
	size_t len = 3 * MIB + 8192;
	_cleanup_free_ char *src = path_in(fx, "eng-src"), *enc = path_in(fx, "eng-enc"),
			    *dec = path_in(fx, "eng-dec");
	_cleanup_free_ uint8_t *plain = make_source(src, len, false);
	int in = open(src, O_RDONLY), out = open(enc, O_RDWR | O_CREAT | O_TRUNC, 0600);
	struct cvm_err err = { 0 };
	struct cvm_xts_job job = { .in_fd = in, .out_fd = out, .out_off = 4096, .len = len,
				   .sector_size = ss, .key = key, .encrypt = true,
				   .threads = threads, .chunk = chunk };
	assert_int_equal(cvm_xts_run(&job, &err), 0);
	close(in);
	close(out);
	size_t elen;
	_cleanup_free_ uint8_t *ct = read_all(enc, &elen);
	assert_int_equal(elen, len + 4096);
	/* each sector equals the single-sector reference with IV = offset / 512 (dm-crypt's
	 * plain64 for LUKS2, whatever the sector size) */
	uint8_t sec[4096];
	for (uint64_t s = 0; s < len / ss; s += 97) {
		assert_int_equal(cvm_xts_sector(key, true, s * ss / 512, plain + s * ss, sec, ss, &err),
				 0);
		assert_memory_equal(sec, ct + 4096 + s * ss, ss);
	}
	assert_int_equal(count_marker(ct, elen), 0);
	/* and back */
	in = open(enc, O_RDONLY);
	out = open(dec, O_RDWR | O_CREAT | O_TRUNC, 0600);
	job = (struct cvm_xts_job){ .in_fd = in, .out_fd = out, .in_off = 4096, .len = len,
				    .sector_size = ss, .key = key, .encrypt = false,
				    .threads = threads + 1, .chunk = chunk * 2 };
	assert_int_equal(cvm_xts_run(&job, &err), 0);
	close(in);
	close(out);
	size_t dlen;
	_cleanup_free_ uint8_t *pt = read_all(dec, &dlen);
	assert_int_equal(dlen, len);
	assert_memory_equal(pt, plain, len);
	/* failure twin: another key does not give the plaintext back */
	key[0] ^= 1;
	assert_int_equal(cvm_xts_sector(key, false, 0, ct + 4096, sec, ss, &err), 0);
	assert_memory_not_equal(sec, plain, ss);
}

static void test_engine(void **state)
{
	struct fx *fx = *state;
	engine_case(fx, 4096, 1, 64 * 1024);
	engine_case(fx, 4096, 3, 4 * MIB);
	engine_case(fx, 512, 2, 12288);
}

static void test_engine_skip_ranges(void **state)
{
	struct fx *fx = *state;
	uint8_t key[64];
	assert_int_equal(cvm_random(key, sizeof(key), NULL), 0);
	size_t len = 3 * MIB;
	_cleanup_free_ char *src = path_in(fx, "sk-src"), *enc = path_in(fx, "sk-enc");
	_cleanup_free_ uint8_t *plain = make_source(src, len, false);
	struct cvm_range r[] = { { 4096, 12288 }, { MIB - 4096, 2 * MIB + 8192 },
				 { 3 * MIB - 4096, 3 * MIB } };
	struct cvm_rangeset rs = { .r = r, .n = 3, .cap = 3 };
	int in = open(src, O_RDONLY), out = open(enc, O_RDWR | O_CREAT | O_TRUNC, 0600);
	assert_int_equal(ftruncate(out, (off_t)len), 0);
	struct cvm_err err = { 0 };
	struct cvm_xts_job job = { .in_fd = in, .out_fd = out, .len = len, .sector_size = 4096,
				   .key = key, .encrypt = true, .threads = 2, .chunk = 65536,
				   .skip = &rs };
	assert_int_equal(cvm_xts_run(&job, &err), 0);
	close(in);
	close(out);
	size_t elen;
	_cleanup_free_ uint8_t *ct = read_all(enc, &elen);
	uint8_t sec[4096];
	for (uint64_t off = 0; off < len; off += 4096) {
		bool skipped = false;
		for (size_t i = 0; i < 3; i++)
			skipped = skipped || (off >= r[i].start && off < r[i].end);
		if (skipped) {
			if (!all_zero(ct + off, 4096))
				fail_msg("sector at %llu should be unwritten", (unsigned long long)off);
			continue;
		}
		assert_int_equal(cvm_xts_sector(key, true, off / 512, plain + off, sec, 4096, &err), 0);
		if (memcmp(sec, ct + off, 4096) != 0)
			fail_msg("sector at %llu should be encrypted", (unsigned long long)off);
	}
}

static void test_engine_truncated_source(void **state)
{
	struct fx *fx = *state;
	uint8_t key[64];
	assert_int_equal(cvm_random(key, sizeof(key), NULL), 0);
	_cleanup_free_ char *src = path_in(fx, "short"), *dst = path_in(fx, "short-out");
	free(make_source(src, MIB, false));
	int in = open(src, O_RDONLY), out = open(dst, O_RDWR | O_CREAT | O_TRUNC, 0600);
	struct cvm_err err = { 0 };
	struct cvm_xts_job job = { .in_fd = in, .out_fd = out, .len = 2 * MIB, .sector_size = 4096,
				   .key = key, .encrypt = true, .threads = 2, .chunk = 65536 };
	assert_int_equal(cvm_xts_run(&job, &err), -EIO);
	assert_non_null(strstr(err.msg, "unexpected end of file"));
	job.len = 1000;
	assert_int_equal(cvm_xts_run(&job, &err), -EINVAL);
	close(in);
	close(out);
}

/* ---- create / unlock / info ------------------------------------------------------------ */

static void test_create_unlock(void **state)
{
	struct fx *fx = *state;
	_cleanup_free_ char *img = path_in(fx, "new.img");
	struct cvm_err err = { 0 };
	struct cvm_disk_opts o = { .kind = CVM_DISK_KIND_OS, .label = "disk-a" };
	assert_int_equal(cvm_disk_create(img, 64 * MIB, &fx->wp, &o, &err), 0);
	struct cvm_disk_info info;
	assert_int_equal(cvm_disk_info(img, &info, &err), 0);
	assert_int_equal(info.sector_size, 4096);
	assert_int_equal(info.data_offset, CVM_DISK_DATA_OFFSET);
	assert_int_equal(info.data_size, 64 * MIB - CVM_DISK_DATA_OFFSET);
	assert_string_equal(info.cipher, "aes-xts-plain64");
	assert_true(info.complete);
	assert_true(info.has_kind);
	assert_int_equal(info.kind, CVM_DISK_KIND_OS);
	assert_string_equal(info.label, "disk-a");
	assert_true(info.has_hsm_token);
	assert_string_equal(info.hsm.key_url, "https://kv.test/keys/des1/v1");
	assert_string_equal(info.hsm.des, "/subscriptions/s/des/d1");
	cvm_disk_info_clear(&info);

	_cleanup_secret_ struct cvm_secret *s = NULL;
	assert_int_equal(cvm_disk_unlock_secret(img, &fx->kw, &s, &err), 0);
	assert_int_equal(s->len, CVM_DISK_SECRET_LEN);

	/* twins: exists already; the key is gone; another key under the same name */
	assert_int_equal(cvm_disk_create(img, 64 * MIB, &fx->wp, &o, &err), -EEXIST);
	_cleanup_free_ char *pem = cvm_asprintf("%s/des1-v1.pem", fx->keys);
	_cleanup_free_ char *saved = cvm_asprintf("%s/saved.pem", fx->keys);
	assert_int_equal(rename(pem, saved), 0);
	_cleanup_secret_ struct cvm_secret *s2 = NULL;
	assert_int_equal(cvm_disk_unlock_secret(img, &fx->kw, &s2, &err), -ENOENT);
	assert_non_null(strstr(err.msg, "unwrap secret with https://kv.test/keys/des1/v1"));
	assert_int_equal(testkw_make_key(fx->keys, "des1", "v1", "RSA-OAEP-256"), 0);
	assert_int_equal(cvm_disk_unlock_secret(img, &fx->kw, &s2, &err), -EBADMSG);
	assert_null(s2);
	assert_int_equal(rename(saved, pem), 0);
	/* bad sizes */
	_cleanup_free_ char *img2 = path_in(fx, "small.img");
	assert_int_equal(cvm_disk_create(img2, 16 * MIB, &fx->wp, NULL, &err), -EINVAL);
	assert_int_equal(cvm_disk_create(img2, 64 * MIB + 512, &fx->wp, NULL, &err), -EINVAL);
	assert_int_equal(access(img2, F_OK), -1);
}

static void test_create_a256kw_and_temp(void **state)
{
	struct fx *fx = *state;
	assert_int_equal(testkw_make_key(fx->keys, "kek1", "7", "A256KW"), 0);
	struct cvm_disk_wrap_params wp = fx->wp;
	wp.key_url = "https://kv.test/keys/kek1/7";
	wp.alg = "A256KW";
	_cleanup_free_ char *img = path_in(fx, "kw.img"), *tmp = path_in(fx, "temp.img");
	struct cvm_err err = { 0 };
	assert_int_equal(cvm_disk_create(img, 32 * MIB, &wp, NULL, &err), 0);
	_cleanup_secret_ struct cvm_secret *s = NULL;
	assert_int_equal(cvm_disk_unlock_secret(img, &fx->kw, &s, &err), 0);

	_cleanup_secret_ struct cvm_secret *ts = NULL;
	assert_int_equal(cvm_disk_create_temp(tmp, 32 * MIB, NULL, &ts, &err), 0);
	struct cvm_disk_info info;
	assert_int_equal(cvm_disk_info(tmp, &info, &err), 0);
	assert_false(info.has_hsm_token);
	assert_int_equal(info.kind, CVM_DISK_KIND_TEMP);
	/* the temp secret opens it; a temp disk has nothing to unwrap */
	struct cvm_luks l;
	assert_int_equal(cvm_luks_open(tmp, &l, &err), 0);
	_cleanup_secret_ struct cvm_secret *vk = NULL;
	assert_int_equal(cvm_luks_volume_key(&l, 0, ts, &vk, &err), 0);
	cvm_luks_close(&l);
	_cleanup_secret_ struct cvm_secret *none = NULL;
	assert_int_equal(cvm_disk_unlock_secret(tmp, &fx->kw, &none, &err), -ENOENT);
}

static void test_create_200g_sparse(void **state)
{
	struct fx *fx = *state;
	_cleanup_free_ char *img = path_in(fx, "big.img");
	struct cvm_err err = { 0 };
	uint64_t size = 200ull * 1024 * MIB;
	uint64_t t0 = cvm_monotonic_ns();
	assert_int_equal(cvm_disk_create(img, size, &fx->wp, NULL, &err), 0);
	uint64_t ms = (cvm_monotonic_ns() - t0) / 1000000;
	struct stat st;
	assert_int_equal(stat(img, &st), 0);
	assert_int_equal((uint64_t)st.st_size, size);
	assert_true((uint64_t)st.st_blocks * 512 < 32 * MIB);
	assert_true(ms < 10000);
	_cleanup_secret_ struct cvm_secret *s = NULL;
	assert_int_equal(cvm_disk_unlock_secret(img, &fx->kw, &s, &err), 0);
	struct cvm_disk_info info;
	assert_int_equal(cvm_disk_info(img, &info, &err), 0);
	assert_int_equal(info.data_size, size - CVM_DISK_DATA_OFFSET);
	cvm_disk_info_clear(&info);
}

/* ---- encrypt / decrypt ------------------------------------------------------------------ */

static void test_encrypt_roundtrip(void **state)
{
	struct fx *fx = *state;
	_cleanup_free_ char *src = path_in(fx, "src.raw"), *img = path_in(fx, "enc.img"),
			    *back = path_in(fx, "back.raw");
	size_t len = 6 * MIB;
	_cleanup_free_ uint8_t *plain = make_source(src, len, false);
	uint8_t h0[32], h1[32];
	sha256_file(src, h0);
	struct cvm_err err = { 0 };
	struct cvm_disk_opts o = { .threads = 2, .chunk_size = 256 * 1024 };
	assert_int_equal(cvm_disk_encrypt_image(src, img, &fx->wp, &o, &err), 0);
	size_t elen;
	_cleanup_free_ uint8_t *ct = read_all(img, &elen);
	assert_int_equal(elen, len + CVM_DISK_DATA_OFFSET);
	assert_int_equal(count_marker(ct, elen), 0);
	assert_true(count_marker(plain, len) >= len / 4096);
	struct cvm_disk_info info;
	assert_int_equal(cvm_disk_info(img, &info, &err), 0);
	assert_int_equal(info.sector_size, 4096);
	cvm_disk_info_clear(&info);

	_cleanup_secret_ struct cvm_secret *s = NULL;
	assert_int_equal(cvm_disk_unlock_secret(img, &fx->kw, &s, &err), 0);
	assert_int_equal(cvm_disk_decrypt_image(img, back, s, &o, &err), 0);
	size_t blen;
	_cleanup_free_ uint8_t *pt = read_all(back, &blen);
	assert_int_equal(blen, len);
	assert_memory_equal(pt, plain, len);
	sha256_file(src, h1);
	assert_memory_equal(h0, h1, 32);

	/* verify against the source: every sector, then failure twins */
	assert_int_equal(cvm_disk_verify(img, s, src, 0, &err), 0);
	assert_int_equal(cvm_disk_verify(img, s, src, (unsigned)(len / 4096), &err), 0);
	assert_int_equal(cvm_disk_verify(img, s, NULL, 0, &err), 0);
	_cleanup_free_ char *other = path_in(fx, "other.raw");
	plain[len - 1] ^= 1;
	write_file(other, plain, len);
	plain[len - 1] ^= 1;
	assert_int_equal(cvm_disk_verify(img, s, other, 2, &err), -EBADMSG);
	assert_non_null(strstr(err.msg, "sector 1535 does not decrypt"));
	write_file(other, plain, len - 4096);
	assert_int_equal(cvm_disk_verify(img, s, other, 2, &err), -EBADMSG);

	/* twins: destination exists; decrypt target exists; wrong passphrase */
	assert_int_equal(cvm_disk_encrypt_image(src, img, &fx->wp, &o, &err), -EEXIST);
	assert_int_equal(cvm_disk_decrypt_image(img, back, s, &o, &err), -EEXIST);
	unlink(back);
	s->data[0] ^= 1;
	assert_int_equal(cvm_disk_decrypt_image(img, back, s, &o, &err), -EPERM);
	assert_int_equal(cvm_disk_verify(img, s, src, 0, &err), -EPERM);
	assert_int_equal(access(back, F_OK), -1);
}

/* A bare ext4 with 1 KiB blocks would not mount behind 4096-byte logical blocks. */
static void test_sector_size_follows_fs_blocks(void **state)
{
	struct fx *fx = *state;
	static const struct { uint8_t log_block; uint32_t want; } cases[] = { { 0, 512 },
									       { 2, 4096 } };
	for (size_t i = 0; i < CVM_ARRAY_SIZE(cases); i++) {
		char name[32], iname[32];
		snprintf(name, sizeof(name), "ext4-%u.raw", cases[i].log_block);
		snprintf(iname, sizeof(iname), "ext4-%u.img", cases[i].log_block);
		_cleanup_free_ char *src = path_in(fx, name), *img = path_in(fx, iname);
		size_t len = 1 * MIB;
		_cleanup_free_ uint8_t *plain = calloc(1, len);
		assert_non_null(plain);
		plain[1024 + 24] = cases[i].log_block; /* s_log_block_size */
		plain[1024 + 56] = 0x53;               /* s_magic 0xEF53, little-endian */
		plain[1024 + 57] = 0xEF;
		write_file(src, plain, len);
		struct cvm_err err = { 0 };
		assert_int_equal(cvm_disk_encrypt_image(src, img, &fx->wp, NULL, &err), 0);
		struct cvm_disk_info info;
		assert_int_equal(cvm_disk_info(img, &info, &err), 0);
		assert_int_equal(info.sector_size, cases[i].want);
		cvm_disk_info_clear(&info);
	}
}

static void test_encrypt_512_with_mbr(void **state)
{
	struct fx *fx = *state;
	_cleanup_free_ char *src = path_in(fx, "mbr.raw"), *img = path_in(fx, "mbr.img"),
			    *back = path_in(fx, "mbr.back");
	size_t len = 2 * MIB;
	_cleanup_free_ uint8_t *plain = make_source(src, len, true);
	struct cvm_err err = { 0 };
	assert_int_equal(cvm_disk_encrypt_image(src, img, &fx->wp, NULL, &err), 0);
	struct cvm_disk_info info;
	assert_int_equal(cvm_disk_info(img, &info, &err), 0);
	assert_int_equal(info.sector_size, 512);
	cvm_disk_info_clear(&info);
	_cleanup_secret_ struct cvm_secret *s = NULL;
	assert_int_equal(cvm_disk_unlock_secret(img, &fx->kw, &s, &err), 0);
	assert_int_equal(cvm_disk_decrypt_image(img, back, s, NULL, &err), 0);
	size_t blen;
	_cleanup_free_ uint8_t *pt = read_all(back, &blen);
	assert_memory_equal(pt, plain, len);
	/* a source of odd size is refused; so is an unknown DES key */
	_cleanup_free_ char *odd = path_in(fx, "odd.raw"), *oimg = path_in(fx, "odd.img");
	write_file(odd, plain, 1000);
	assert_int_equal(cvm_disk_encrypt_image(odd, oimg, &fx->wp, NULL, &err), -EINVAL);
	struct cvm_disk_wrap_params wp = fx->wp;
	wp.key_url = "https://kv.test/keys/nope";
	assert_int_equal(cvm_disk_encrypt_image(src, oimg, &wp, NULL, &err), -ENOENT);
	assert_int_equal(access(oimg, F_OK), -1);
	_cleanup_free_ char *opart = cvm_asprintf("%s.partial", oimg);
	assert_int_equal(access(opart, F_OK), -1);
}

static void test_sparse_source(void **state)
{
	struct fx *fx = *state;
	_cleanup_free_ char *src = path_in(fx, "sparse.raw"), *all = path_in(fx, "all.img"),
			    *skip = path_in(fx, "skip.img"), *b1 = path_in(fx, "all.back"),
			    *b2 = path_in(fx, "skip.back");
	size_t len = 64 * MIB;
	int fd = open(src, O_RDWR | O_CREAT | O_TRUNC, 0600);
	assert_int_equal(ftruncate(fd, (off_t)len), 0);
	uint8_t data[8192];
	memset(data, 0x5c, sizeof(data));
	assert_int_equal(pwrite(fd, data, sizeof(data), 8 * MIB), (ssize_t)sizeof(data));
	assert_int_equal(pwrite(fd, data, 4096, (off_t)len - 4096), 4096);
	close(fd);
	struct cvm_err err = { 0 };
	struct cvm_disk_opts o = { .chunk_size = MIB, .threads = 2 };
	/* default: every sector encrypted, holes included; decrypts to the exact source */
	assert_int_equal(cvm_disk_encrypt_image(src, all, &fx->wp, &o, &err), 0);
	struct stat st;
	assert_int_equal(stat(all, &st), 0);
	assert_true((uint64_t)st.st_blocks * 512 >= len);
	_cleanup_secret_ struct cvm_secret *s1 = NULL, *s2 = NULL;
	assert_int_equal(cvm_disk_unlock_secret(all, &fx->kw, &s1, &err), 0);
	assert_int_equal(cvm_disk_decrypt_image(all, b1, s1, NULL, &err), 0);
	size_t n1;
	_cleanup_free_ uint8_t *p1 = read_all(b1, &n1), *orig = read_all(src, &n1);
	assert_memory_equal(p1, orig, len);

	/* skip_holes: only the two data chunks are written; holes decrypt to pseudorandom bytes */
	o.skip_holes = true;
	assert_int_equal(cvm_disk_encrypt_image(src, skip, &fx->wp, &o, &err), 0);
	assert_int_equal(stat(skip, &st), 0);
	assert_true((uint64_t)st.st_blocks * 512 <= CVM_DISK_DATA_OFFSET + 2 * MIB + 64 * 1024);
	assert_int_equal(cvm_disk_unlock_secret(skip, &fx->kw, &s2, &err), 0);
	assert_int_equal(cvm_disk_decrypt_image(skip, b2, s2, NULL, &err), 0);
	size_t n2;
	_cleanup_free_ uint8_t *p2 = read_all(b2, &n2);
	assert_memory_equal(p2 + 8 * MIB, orig + 8 * MIB, MIB);
	assert_memory_equal(p2 + len - MIB, orig + len - MIB, MIB);
	assert_false(all_zero(p2, 4096));
	assert_false(all_zero(p2 + 20 * MIB, 4096));
}

static void corrupt(const char *path, off_t off, size_t n)
{
	int fd = open(path, O_RDWR);
	assert_true(fd >= 0);
	uint8_t junk[64];
	memset(junk, 'Z', sizeof(junk));
	assert_int_equal(pwrite(fd, junk, n, off), (ssize_t)n);
	close(fd);
}

static void copy_file(const char *from, const char *to)
{
	size_t len;
	_cleanup_free_ uint8_t *d = read_all(from, &len);
	write_file(to, d, len);
}

static void test_bad_images(void **state)
{
	struct fx *fx = *state;
	_cleanup_free_ char *src = path_in(fx, "b.raw"), *img = path_in(fx, "b.img"),
			    *bad = path_in(fx, "bad.img"), *out = path_in(fx, "bad.out");
	free(make_source(src, MIB, false));
	struct cvm_err err = { 0 };
	assert_int_equal(cvm_disk_encrypt_image(src, img, &fx->wp, NULL, &err), 0);
	_cleanup_secret_ struct cvm_secret *s = NULL;
	assert_int_equal(cvm_disk_unlock_secret(img, &fx->kw, &s, &err), 0);
	uint8_t h0[32], h1[32];
	sha256_file(img, h0);

	/* both header copies' JSON areas damaged: not LUKS2 any more */
	copy_file(img, bad);
	corrupt(bad, 4096 + 10, 32);
	corrupt(bad, 16384 + 4096 + 10, 32);
	_cleanup_secret_ struct cvm_secret *x = NULL;
	assert_int_equal(cvm_disk_unlock_secret(bad, &fx->kw, &x, &err), -EINVAL);
	assert_non_null(strstr(err.msg, "not a valid LUKS2 image"));
	assert_int_equal(cvm_disk_decrypt_image(bad, out, s, NULL, &err), -EINVAL);
	assert_int_equal(access(out, F_OK), -1);

	/* a token that libcryptsetup accepts but we do not */
	copy_file(img, bad);
	struct cvm_luks l;
	assert_int_equal(cvm_luks_open(bad, &l, &err), 0);
	int id;
	assert_int_equal(cvm_luks_find_token(&l, CVM_DISK_TOKEN_HSM, &id, NULL, &err), 0);
	assert_true(crypt_token_json_set(l.cd, id,
					 "{\"type\":\"opencvm-hsm\",\"keyslots\":[\"0\"],"
					 "\"key_url\":\"https://k/keys/a/1\",\"alg\":\"RSA1_5\","
					 "\"wrapped\":\"AA\",\"des\":\"d\",\"version\":1}") >= 0);
	cvm_luks_close(&l);
	assert_int_equal(cvm_disk_unlock_secret(bad, &fx->kw, &x, &err), -EINVAL);
	assert_non_null(strstr(err.msg, "opencvm-hsm token: alg: expected one of"));

	/* truncated: inside the header area, and mid-sector in the data area */
	copy_file(img, bad);
	assert_int_equal(truncate(bad, CVM_DISK_DATA_OFFSET), 0);
	assert_int_equal(cvm_disk_decrypt_image(bad, out, s, NULL, &err), -EINVAL);
	assert_non_null(strstr(err.msg, "truncated image"));
	assert_int_equal(truncate(bad, CVM_DISK_DATA_OFFSET + 4096 + 100), 0);
	assert_int_equal(cvm_disk_decrypt_image(bad, out, s, NULL, &err), -EINVAL);
	assert_non_null(strstr(err.msg, "truncated image"));
	assert_int_equal(access(out, F_OK), -1);

	/* a damaged data area is caught by verify */
	copy_file(img, bad);
	corrupt(bad, CVM_DISK_DATA_OFFSET + 4096 * 5 + 7, 3);
	assert_int_equal(cvm_disk_verify(bad, s, src, 256, &err), -EBADMSG);
	assert_non_null(strstr(err.msg, "sector 5 "));
	assert_int_equal(cvm_disk_verify(img, s, src, 256, &err), 0);

	/* an image with the progress token is refused */
	copy_file(img, bad);
	assert_int_equal(cvm_luks_open(bad, &l, &err), 0);
	assert_true(crypt_token_json_set(l.cd, CRYPT_ANY_TOKEN,
					 "{\"type\":\"opencvm-progress\",\"keyslots\":[],"
					 "\"done\":\"0\",\"total\":\"1048576\",\"source_size\":"
					 "\"1048576\",\"source_mtime_ns\":\"1\",\"chunk\":\"4194304\","
					 "\"sector_size\":4096}") >= 0);
	cvm_luks_close(&l);
	assert_int_equal(cvm_disk_unlock_secret(bad, &fx->kw, &x, &err), -EBUSY);
	assert_int_equal(cvm_disk_decrypt_image(bad, out, s, NULL, &err), -EBUSY);
	struct cvm_disk_info info;
	assert_int_equal(cvm_disk_info(bad, &info, &err), 0);
	assert_false(info.complete);
	cvm_disk_info_clear(&info);

	sha256_file(img, h1);
	assert_memory_equal(h0, h1, 32);
}

/* ---- interruption ------------------------------------------------------------------------ */

struct killer {
	uint64_t at;
};

static void kill_cb(void *ctx, uint64_t done, uint64_t total)
{
	struct killer *k = ctx;
	(void)total;
	if (done >= k->at)
		raise(SIGKILL);
}

static void test_sigkill_resume(void **state)
{
	struct fx *fx = *state;
	_cleanup_free_ char *src = path_in(fx, "k.raw"), *a = path_in(fx, "a.img"),
			    *b = path_in(fx, "b.img"), *back = path_in(fx, "k.back");
	_cleanup_free_ char *apart = cvm_asprintf("%s.partial", a);
	size_t len = 48 * MIB;
	_cleanup_free_ uint8_t *plain = make_source(src, len, false);
	uint8_t vkb[64];
	for (int i = 0; i < 64; i++)
		vkb[i] = (uint8_t)(i * 7 + 1);
	_cleanup_secret_ struct cvm_secret *vk = cvm_secret_from(vkb, 64);
	struct cvm_err err = { 0 };
	struct killer k = { .at = len / 2 };
	struct cvm_disk_opts o = { .threads = 2, .chunk_size = 128 * 1024, .checkpoint_ms = 1,
				   .volume_key = vk, .progress = kill_cb, .progress_ctx = &k };
	pid_t pid = fork();
	assert_true(pid >= 0);
	if (pid == 0) {
		cvm_disk_encrypt_image(src, a, &fx->wp, &o, &err);
		_exit(0); /* not reached when the kill fires */
	}
	int status;
	assert_int_equal(waitpid(pid, &status, 0), pid);
	assert_true(WIFSIGNALED(status) && WTERMSIG(status) == SIGKILL);
	/* detectably incomplete */
	assert_int_equal(access(a, F_OK), -1);
	struct cvm_disk_info info;
	assert_int_equal(cvm_disk_info(apart, &info, &err), 0);
	assert_false(info.complete);
	/* where the checkpoint landed depends on scheduling; that it is short of the end does not */
	assert_true(info.progress_done < len);
	cvm_disk_info_clear(&info);
	_cleanup_secret_ struct cvm_secret *x = NULL;
	assert_int_equal(cvm_disk_unlock_secret(apart, &fx->kw, &x, &err), -EBUSY);

	/* while another process holds the partial image, nobody resumes or deletes it */
	int lfd = open(apart, O_RDWR);
	struct flock fl = { .l_type = F_WRLCK, .l_whence = SEEK_SET };
	assert_int_equal(fcntl(lfd, F_OFD_SETLK, &fl), 0);
	o.progress = NULL;
	assert_int_equal(cvm_disk_encrypt_image(src, a, &fx->wp, &o, &err), -EBUSY);
	assert_non_null(strstr(err.msg, "another process is writing it"));
	close(lfd);
	assert_int_equal(access(apart, F_OK), 0);

	/* resume, and an uninterrupted run with the same volume key */
	o.progress = NULL;
	unsigned before = fx->tw.unwrap_calls;
	assert_int_equal(cvm_disk_encrypt_image(src, a, &fx->wp, &o, &err), 0);
	assert_true(fx->tw.unwrap_calls > before); /* the key came back through unwrap */
	assert_int_equal(access(apart, F_OK), -1);
	assert_int_equal(cvm_disk_encrypt_image(src, b, &fx->wp, &o, &err), 0);
	size_t alen, blen;
	_cleanup_free_ uint8_t *ad = read_all(a, &alen), *bd = read_all(b, &blen);
	assert_int_equal(alen, blen);
	assert_memory_equal(ad + CVM_DISK_DATA_OFFSET, bd + CVM_DISK_DATA_OFFSET,
			    alen - CVM_DISK_DATA_OFFSET);
	_cleanup_secret_ struct cvm_secret *s = NULL;
	assert_int_equal(cvm_disk_unlock_secret(a, &fx->kw, &s, &err), 0);
	assert_int_equal(cvm_disk_decrypt_image(a, back, s, NULL, &err), 0);
	size_t plen;
	_cleanup_free_ uint8_t *pt = read_all(back, &plen);
	assert_memory_equal(pt, plain, len);

	/* twin: a resume against a modified source is refused */
	_cleanup_free_ char *c = path_in(fx, "c.img");
	_cleanup_free_ char *cpart = cvm_asprintf("%s.partial", c);
	k.at = len / 2;
	o.progress = kill_cb;
	pid = fork();
	if (pid == 0) {
		cvm_disk_encrypt_image(src, c, &fx->wp, &o, &err);
		_exit(0);
	}
	assert_int_equal(waitpid(pid, &status, 0), pid);
	o.progress = NULL;
	plain[0] ^= 1;
	sleep(1); /* mtime granularity on some file systems */
	write_file(src, plain, len);
	assert_int_equal(cvm_disk_encrypt_image(src, c, &fx->wp, &o, &err), -EEXIST);
	assert_non_null(strstr(err.msg, "modified source"));
	assert_int_equal(access(cpart, F_OK), 0);
}

static struct cvm_secret *vk_of(const char *img, const struct cvm_secret *pass)
{
	struct cvm_luks l;
	struct cvm_err err = { 0 };
	struct cvm_secret *vk = NULL;
	assert_int_equal(cvm_luks_open(img, &l, &err), 0);
	assert_int_equal(cvm_luks_volume_key(&l, CRYPT_ANY_SLOT, pass, &vk, &err), 0);
	cvm_luks_close(&l);
	return vk;
}

static void test_rekey(void **state)
{
	struct fx *fx = *state;
	_cleanup_free_ char *src = path_in(fx, "rk.raw"), *img = path_in(fx, "rk.img"),
			    *new1 = path_in(fx, "rk1.img"), *new2 = path_in(fx, "rk2.img"),
			    *back = path_in(fx, "rk.back");
	_cleanup_free_ char *part1 = cvm_asprintf("%s.partial", new1);
	size_t len = 24 * MIB;
	_cleanup_free_ uint8_t *plain = make_source(src, len, false);
	struct cvm_err err = { 0 };
	assert_int_equal(cvm_disk_encrypt_image(src, img, &fx->wp, NULL, &err), 0);
	_cleanup_secret_ struct cvm_secret *s0 = NULL, *s1 = NULL;
	assert_int_equal(cvm_disk_unlock_secret(img, &fx->kw, &s0, &err), 0);
	uint8_t h0[32], h1[32];
	sha256_file(img, h0);

	/* interrupted rekey, resumed; and an uninterrupted one with the same new volume key */
	uint8_t vkb[64];
	for (int i = 0; i < 64; i++)
		vkb[i] = (uint8_t)(i * 11 + 5);
	_cleanup_secret_ struct cvm_secret *vk = cvm_secret_from(vkb, 64);
	struct killer k = { .at = len / 3 };
	struct cvm_disk_opts o = { .threads = 2, .chunk_size = 64 * 1024, .checkpoint_ms = 1,
				   .volume_key = vk, .progress = kill_cb, .progress_ctx = &k };
	pid_t pid = fork();
	assert_true(pid >= 0);
	if (pid == 0) {
		cvm_disk_rekey(img, new1, s0, &fx->wp, &o, &err);
		_exit(0);
	}
	int status;
	assert_int_equal(waitpid(pid, &status, 0), pid);
	assert_true(WIFSIGNALED(status));
	assert_int_equal(access(part1, F_OK), 0);
	o.progress = NULL;
	assert_int_equal(cvm_disk_rekey(img, new1, s0, &fx->wp, &o, &err), 0);
	assert_int_equal(cvm_disk_rekey(img, new2, s0, &fx->wp, &o, &err), 0);
	size_t l1, l2;
	_cleanup_free_ uint8_t *d1 = read_all(new1, &l1), *d2 = read_all(new2, &l2);
	assert_int_equal(l1, l2);
	assert_memory_equal(d1 + CVM_DISK_DATA_OFFSET, d2 + CVM_DISK_DATA_OFFSET,
			    l1 - CVM_DISK_DATA_OFFSET);
	assert_int_equal(count_marker(d1, l1), 0);

	/* new secret, new volume key, same data; the old image untouched */
	assert_int_equal(cvm_disk_unlock_secret(new1, &fx->kw, &s1, &err), 0);
	assert_false(cvm_secret_eq(s0, s1->data, s1->len));
	_cleanup_secret_ struct cvm_secret *vk0 = vk_of(img, s0), *vk1 = vk_of(new1, s1);
	assert_false(cvm_secret_eq(vk0, vk1->data, vk1->len));
	assert_int_equal(cvm_disk_verify(new1, s1, src, 512, &err), 0);
	assert_int_equal(cvm_disk_decrypt_image(new1, back, s1, NULL, &err), 0);
	size_t bl;
	_cleanup_free_ uint8_t *pt = read_all(back, &bl);
	assert_memory_equal(pt, plain, len);
	sha256_file(img, h1);
	assert_memory_equal(h0, h1, 32);
	/* twins: the old secret does not open the new image; a wrong passphrase opens nothing */
	assert_int_equal(cvm_disk_verify(new1, s0, NULL, 0, &err), -EPERM);
	_cleanup_free_ char *new3 = path_in(fx, "rk3.img");
	s0->data[3] ^= 1;
	assert_int_equal(cvm_disk_rekey(img, new3, s0, &fx->wp, NULL, &err), -EPERM);
	assert_int_equal(access(new3, F_OK), -1);
}

/* ---- rotation --------------------------------------------------------------------------- */

static void test_rotate(void **state)
{
	struct fx *fx = *state;
	_cleanup_free_ char *src = path_in(fx, "r.raw"), *img = path_in(fx, "r.img");
	free(make_source(src, MIB, false));
	struct cvm_err err = { 0 };
	assert_int_equal(cvm_disk_encrypt_image(src, img, &fx->wp, NULL, &err), 0);
	_cleanup_secret_ struct cvm_secret *s1 = NULL, *s2 = NULL, *s3 = NULL;
	assert_int_equal(cvm_disk_unlock_secret(img, &fx->kw, &s1, &err), 0);
	size_t len0;
	_cleanup_free_ uint8_t *before = read_all(img, &len0);

	/* twin first: rotating to a key that does not exist leaves the disk as it was */
	assert_int_equal(cvm_disk_rotate(img, &fx->kw, "https://kv.test/keys/missing", "RSA-OAEP-256",
					 &err),
			 -ENOENT);
	assert_int_equal(cvm_disk_unlock_secret(img, &fx->kw, &s3, &err), 0);
	cvm_secret_free(s3);
	s3 = NULL;

	assert_int_equal(testkw_make_key(fx->keys, "des1", "v2", "RSA-OAEP-256"), 0);
	assert_int_equal(cvm_disk_rotate(img, &fx->kw, "https://kv.test/keys/des1", "RSA-OAEP-256",
					 &err),
			 0);
	struct cvm_disk_info info;
	assert_int_equal(cvm_disk_info(img, &info, &err), 0);
	assert_string_equal(info.hsm.key_url, "https://kv.test/keys/des1/v2");
	assert_string_equal(info.hsm.des, "/subscriptions/s/des/d1");
	cvm_disk_info_clear(&info);
	/* the old version is no longer needed nor usable; the new one unlocks the same secret */
	_cleanup_free_ char *v1 = cvm_asprintf("%s/des1-v1.pem", fx->keys);
	assert_int_equal(unlink(v1), 0);
	assert_int_equal(cvm_disk_unlock_secret(img, &fx->kw, &s2, &err), 0);
	assert_true(cvm_secret_eq(s1, s2->data, s2->len));
	/* the data area is untouched */
	size_t len1;
	_cleanup_free_ uint8_t *after = read_all(img, &len1);
	assert_int_equal(len0, len1);
	assert_memory_equal(before + CVM_DISK_DATA_OFFSET, after + CVM_DISK_DATA_OFFSET,
			    len0 - CVM_DISK_DATA_OFFSET);
	/* and exactly one hsm token remains */
	struct cvm_luks l;
	assert_int_equal(cvm_luks_open(img, &l, &err), 0);
	int n = 0;
	for (int i = 0; i < 32; i++) {
		const char *t = NULL;
		if (crypt_token_status(l.cd, i, &t) != CRYPT_TOKEN_INACTIVE && t &&
		    strcmp(t, CVM_DISK_TOKEN_HSM) == 0)
			n++;
	}
	cvm_luks_close(&l);
	assert_int_equal(n, 1);
}

static int count_hsm_tokens(const char *img)
{
	struct cvm_luks l;
	struct cvm_err err = { 0 };
	assert_int_equal(cvm_luks_open(img, &l, &err), 0);
	int n = 0;
	for (int i = 0; i < 32; i++) {
		const char *t = NULL;
		if (crypt_token_status(l.cd, i, &t) != CRYPT_TOKEN_INACTIVE && t &&
		    strcmp(t, CVM_DISK_TOKEN_HSM) == 0)
			n++;
	}
	cvm_luks_close(&l);
	return n;
}

/* Add an opencvm-hsm token for keyslot 0 holding `secret` wrapped with kid: what a re-wrap
 * killed between its two header writes leaves (with another secret: a token that lies). */
static void add_token(struct fx *fx, const char *img, const char *kid,
		      const struct cvm_secret *secret)
{
	struct cvm_err err = { 0 };
	struct cvm_disk_hsm_token t = { .keyslot = 0, .version = 1 };
	assert_int_equal(fx->kw.wrap(fx->kw.ctx, kid, "RSA-OAEP-256", secret, &t.wrapped,
				     &t.key_url, &err),
			 0);
	t.alg = strdup("RSA-OAEP-256");
	t.des = strdup("/subscriptions/s/des/d1");
	_cleanup_free_ char *json = NULL;
	assert_int_equal(cvm_disk_hsm_token_json(&t, &json, &err), 0);
	cvm_disk_hsm_token_clear(&t);
	struct cvm_luks l;
	assert_int_equal(cvm_luks_open(img, &l, &err), 0);
	assert_true(crypt_token_json_set(l.cd, CRYPT_ANY_TOKEN, json) >= 0);
	cvm_luks_close(&l);
}

/* cvm_disk_rotate_to (cvmd's automatic rotation): a token for the target version already on
 * the image is kept, proven and left alone; the state a killed re-wrap leaves (old and new
 * token) is settled on the new one; a stale token that does not unwrap is never trusted. */
static void test_rotate_to(void **state)
{
	struct fx *fx = *state;
	_cleanup_free_ char *src = path_in(fx, "rt.raw"), *img = path_in(fx, "rt.img");
	free(make_source(src, MIB, false));
	struct cvm_err err = { 0 };
	bool changed = true;
	assert_int_equal(cvm_disk_encrypt_image(src, img, &fx->wp, NULL, &err), 0);
	_cleanup_secret_ struct cvm_secret *s1 = NULL, *s2 = NULL;
	assert_int_equal(cvm_disk_unlock_secret(img, &fx->kw, &s1, &err), 0);

	/* already on the asked-for version, one token: nothing is written */
	size_t len0, len1;
	_cleanup_free_ uint8_t *before = read_all(img, &len0);
	assert_int_equal(cvm_disk_rotate_to(img, &fx->kw, "https://other.host/keys/des1/v1",
					    "RSA-OAEP-256", &changed, &err),
			 0);
	assert_false(changed);
	_cleanup_free_ uint8_t *same = read_all(img, &len1);
	assert_int_equal(len0, len1);
	assert_memory_equal(before, same, len0);

	/* the v1 token and a v2 token whose secret does not open the keyslot */
	assert_int_equal(testkw_make_key(fx->keys, "des1", "v2", "RSA-OAEP-256"), 0);
	_cleanup_secret_ struct cvm_secret *bad = cvm_secret_random(CVM_DISK_SECRET_LEN);
	add_token(fx, img, "https://kv.test/keys/des1/v2", bad);
	assert_int_equal(count_hsm_tokens(img), 2);
	assert_true(cvm_disk_rotate_to(img, &fx->kw, "https://kv.test/keys/des1/v2",
				       "RSA-OAEP-256", &changed, &err) < 0);
	assert_non_null(strstr(err.msg, "others kept"));
	assert_int_equal(count_hsm_tokens(img), 2); /* nothing removed on a failed proof */

	/* a fresh image with the good state a kill leaves: old token + proven-to-be-good new one */
	_cleanup_free_ char *img2 = path_in(fx, "rt2.img");
	fx->wp.key_url = "https://kv.test/keys/des1/v1";
	assert_int_equal(cvm_disk_encrypt_image(src, img2, &fx->wp, NULL, &err), 0);
	fx->wp.key_url = "https://kv.test/keys/des1";
	assert_int_equal(cvm_disk_unlock_secret(img2, &fx->kw, &s2, &err), 0);
	add_token(fx, img2, "https://kv.test/keys/des1/v2", s2);
	assert_int_equal(count_hsm_tokens(img2), 2);
	assert_int_equal(cvm_disk_rotate_to(img2, &fx->kw, "https://kv.test/keys/des1/v2",
					    "RSA-OAEP-256", &changed, &err),
			 0);
	assert_false(changed); /* no new token: the one there was proven and kept */
	assert_int_equal(count_hsm_tokens(img2), 1);
	struct cvm_disk_info info;
	assert_int_equal(cvm_disk_info(img2, &info, &err), 0);
	assert_string_equal(info.hsm.key_url, "https://kv.test/keys/des1/v2");
	cvm_disk_info_clear(&info);

	/* a real re-wrap with a stale token left beside the current one: to v3, every other
	 * opencvm-hsm token dropped, the data area untouched */
	add_token(fx, img2, "https://kv.test/keys/des1/v1", s2);
	assert_int_equal(count_hsm_tokens(img2), 2);
	size_t len2, len3;
	_cleanup_free_ uint8_t *before2 = read_all(img2, &len2);
	assert_int_equal(testkw_make_key(fx->keys, "des1", "v3", "RSA-OAEP-256"), 0);
	assert_int_equal(cvm_disk_rotate_to(img2, &fx->kw, "https://kv.test/keys/des1/v3",
					    "RSA-OAEP-256", &changed, &err),
			 0);
	assert_true(changed);
	assert_int_equal(count_hsm_tokens(img2), 1);
	_cleanup_secret_ struct cvm_secret *s3 = NULL;
	assert_int_equal(cvm_disk_unlock_secret(img2, &fx->kw, &s3, &err), 0);
	assert_true(cvm_secret_eq(s2, s3->data, s3->len));
	assert_int_equal(cvm_disk_info(img2, &info, &err), 0);
	assert_string_equal(info.hsm.key_url, "https://kv.test/keys/des1/v3");
	cvm_disk_info_clear(&info);
	_cleanup_free_ uint8_t *after2 = read_all(img2, &len3);
	assert_int_equal(len2, len3);
	assert_memory_equal(before2 + CVM_DISK_DATA_OFFSET, after2 + CVM_DISK_DATA_OFFSET,
			    len2 - CVM_DISK_DATA_OFFSET);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_token_ok),
		cmocka_unit_test(test_token_errors),
		cmocka_unit_test(test_key_url),
		cmocka_unit_test(test_kind),
		cmocka_unit_test(test_progress_token),
		cmocka_unit_test_setup_teardown(test_engine, setup, teardown),
		cmocka_unit_test_setup_teardown(test_engine_skip_ranges, setup, teardown),
		cmocka_unit_test_setup_teardown(test_engine_truncated_source, setup, teardown),
		cmocka_unit_test_setup_teardown(test_create_unlock, setup, teardown),
		cmocka_unit_test_setup_teardown(test_create_a256kw_and_temp, setup, teardown),
		cmocka_unit_test_setup_teardown(test_create_200g_sparse, setup, teardown),
		cmocka_unit_test_setup_teardown(test_encrypt_roundtrip, setup, teardown),
		cmocka_unit_test_setup_teardown(test_encrypt_512_with_mbr, setup, teardown),
		cmocka_unit_test_setup_teardown(test_sector_size_follows_fs_blocks, setup, teardown),
		cmocka_unit_test_setup_teardown(test_sparse_source, setup, teardown),
		cmocka_unit_test_setup_teardown(test_bad_images, setup, teardown),
		cmocka_unit_test_setup_teardown(test_sigkill_resume, setup, teardown),
		cmocka_unit_test_setup_teardown(test_rekey, setup, teardown),
		cmocka_unit_test_setup_teardown(test_rotate, setup, teardown),
		cmocka_unit_test_setup_teardown(test_rotate_to, setup, teardown),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
