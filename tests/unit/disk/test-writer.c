/* SPDX-License-Identifier: Apache-2.0 */
/* Unit tests for the disk block writer: scattered encrypted writes read back through the
 * writer and through cvm_disk_decrypt_image; no plaintext in the image; failure twins (wrong
 * passphrase, unaligned and out-of-range writes, incomplete image). */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <fcntl.h>
#include <ftw.h>
#include <libcryptsetup.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "disk/disk-internal.h"
#include "testkw.h"

#define MIB (1024u * 1024u)
#define VOL (8u * MIB) /* volume bytes of the test disks */

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
	if (!fx)
		return -1;
	snprintf(fx->dir, sizeof(fx->dir), "/tmp/cvm-writer-test-XXXXXX");
	if (!mkdtemp(fx->dir))
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

/* A new confidential disk with VOL volume bytes and its unwrapped keyslot secret. */
static char *make_disk(struct fx *fx, const char *name, uint32_t ss, struct cvm_secret **secret)
{
	char *path = cvm_asprintf("%s/%s", fx->dir, name);
	assert_non_null(path);
	struct cvm_err err = { 0 };
	struct cvm_disk_opts o = { .sector_size = ss };
	assert_int_equal(cvm_disk_create(path, CVM_DISK_DATA_OFFSET + VOL, &fx->wp, &o, &err), 0);
	assert_int_equal(cvm_disk_unlock_secret(path, &fx->kw, secret, &err), 0);
	return path;
}

static uint8_t *read_all(const char *path, size_t *len)
{
	uint8_t *buf = NULL;
	struct cvm_err err = { 0 };
	assert_int_equal(cvm_file_read(path, (size_t)1 << 30, &buf, len, &err), 0);
	return buf;
}

static void roundtrip(struct fx *fx, uint32_t ss)
{
	struct cvm_err err = { 0 };
	_cleanup_secret_ struct cvm_secret *s = NULL;
	_cleanup_free_ char *img = make_disk(fx, ss == 512 ? "d512.img" : "d4k.img", ss, &s);
	struct cvm_disk_writer *w = NULL;
	assert_int_equal(cvm_disk_writer_open(img, s, &w, &err), 0);
	assert_int_equal(cvm_disk_writer_size(w), VOL);
	assert_int_equal(cvm_disk_writer_sector_size(w), ss);

	/* model of the volume: what it decrypts to now (never-written sectors are garbage) */
	uint8_t *model = malloc(VOL), *got = malloc(VOL);
	assert_non_null(model);
	assert_non_null(got);
	assert_int_equal(cvm_disk_writer_pread(w, model, VOL, 0, &err), 0);

	/* scattered writes: first and last sectors, a write spanning the 1 MiB staging buffer,
	 * overlapping rewrites, random offsets and lengths */
	struct { uint64_t off; size_t len; } wr[40] = {
		{ 0, ss }, { VOL - ss, ss }, { MIB - 4096, 2 * MIB + 8192 }, { 3 * MIB, 64 * 1024 },
		{ 3 * MIB + 4096, 4096 },
	};
	size_t nw = 5;
	for (; nw < 40; nw++) {
		uint32_t rnd[2];
		assert_int_equal(cvm_random(rnd, sizeof(rnd), &err), 0);
		size_t len = (size_t)(rnd[0] % 64 + 1) * ss;
		uint64_t off = (uint64_t)(rnd[1] % ((VOL - len) / ss + 1)) * ss;
		wr[nw].off = off;
		wr[nw].len = len;
	}
	uint8_t *buf = malloc(3 * MIB);
	assert_non_null(buf);
	for (size_t i = 0; i < nw; i++) {
		assert_int_equal(cvm_random(buf, wr[i].len, &err), 0);
		memcpy(buf, "WRITER-PLAINTEXT-MARKER", 23);
		assert_int_equal(cvm_disk_writer_pwrite(w, buf, wr[i].len, wr[i].off, &err), 0);
		memcpy(model + wr[i].off, buf, wr[i].len);
	}
	assert_int_equal(cvm_disk_writer_sync(w, &err), 0);
	assert_int_equal(cvm_disk_writer_pread(w, got, VOL, 0, &err), 0);
	assert_memory_equal(got, model, VOL);
	cvm_disk_writer_close(w);

	/* the module's decryptor (the dm-crypt-identical engine) agrees */
	_cleanup_free_ char *out = cvm_asprintf("%s/plain-%u", fx->dir, ss);
	assert_int_equal(cvm_disk_decrypt_image(img, out, s, NULL, &err), 0);
	size_t olen = 0;
	uint8_t *plain = read_all(out, &olen);
	assert_int_equal(olen, VOL);
	assert_memory_equal(plain, model, VOL);
	free(plain);

	/* the image holds no plaintext: neither the marker nor any written sector in clear */
	size_t ilen = 0;
	uint8_t *raw = read_all(img, &ilen);
	assert_int_equal(ilen, CVM_DISK_DATA_OFFSET + VOL);
	assert_null(memmem(raw, ilen, "WRITER-PLAINTEXT-MARKER", 23));
	for (size_t i = 0; i < nw; i++)
		assert_memory_not_equal(raw + CVM_DISK_DATA_OFFSET + wr[i].off, model + wr[i].off,
					ss);
	/* and the header still verifies with the secret */
	assert_int_equal(cvm_disk_verify(img, s, NULL, 0, &err), 0);
	free(raw);
	free(buf);
	free(model);
	free(got);
}

static void test_roundtrip_4k(void **state) { roundtrip(*state, 4096); }
static void test_roundtrip_512(void **state) { roundtrip(*state, 512); }

static void test_refusals(void **state)
{
	struct fx *fx = *state;
	struct cvm_err err = { 0 };
	_cleanup_secret_ struct cvm_secret *s = NULL;
	_cleanup_free_ char *img = make_disk(fx, "r.img", 4096, &s);
	struct cvm_disk_writer *w = NULL;

	/* wrong passphrase */
	_cleanup_secret_ struct cvm_secret *bad = cvm_secret_new(CVM_DISK_SECRET_LEN);
	assert_non_null(bad);
	assert_int_equal(cvm_random(bad->data, bad->len, &err), 0);
	assert_int_equal(cvm_disk_writer_open(img, bad, &w, &err), -EPERM);
	assert_null(w);
	/* missing image, not LUKS */
	_cleanup_free_ char *none = cvm_asprintf("%s/none.img", fx->dir);
	assert_int_equal(cvm_disk_writer_open(none, s, &w, &err), -ENOENT);
	_cleanup_free_ char *junk = cvm_asprintf("%s/junk.img", fx->dir);
	uint8_t z[8192] = { 0 };
	assert_int_equal(cvm_file_write_atomic(junk, z, sizeof(z), 0600, &err), 0);
	assert_int_equal(cvm_disk_writer_open(junk, s, &w, &err), -EINVAL);

	assert_int_equal(cvm_disk_writer_open(img, s, &w, &err), 0);
	/* a second writer on the same image is refused while the first is open */
	struct cvm_disk_writer *w2 = NULL;
	assert_int_equal(cvm_disk_writer_open(img, s, &w2, &err), -EBUSY);
	assert_null(w2);
	uint8_t buf[8192];
	memset(buf, 0x5a, sizeof(buf));
	/* unaligned offset, unaligned length */
	assert_int_equal(cvm_disk_writer_pwrite(w, buf, 4096, 512, &err), -EINVAL);
	assert_non_null(strstr(err.msg, "sector size"));
	assert_int_equal(cvm_disk_writer_pwrite(w, buf, 4000, 0, &err), -EINVAL);
	assert_int_equal(cvm_disk_writer_pread(w, buf, 4096, 100, &err), -EINVAL);
	/* past the end: straddling, at the end, far beyond (overflow) */
	assert_int_equal(cvm_disk_writer_pwrite(w, buf, 8192, VOL - 4096, &err), -EINVAL);
	assert_non_null(strstr(err.msg, "past the volume"));
	assert_int_equal(cvm_disk_writer_pwrite(w, buf, 4096, VOL, &err), -EINVAL);
	assert_int_equal(cvm_disk_writer_pwrite(w, buf, 4096, UINT64_MAX - 4095, &err), -EINVAL);
	/* the twin: the last sector itself is fine */
	assert_int_equal(cvm_disk_writer_pwrite(w, buf, 4096, VOL - 4096, &err), 0);
	uint8_t back[4096];
	assert_int_equal(cvm_disk_writer_pread(w, back, 4096, VOL - 4096, &err), 0);
	assert_memory_equal(back, buf, 4096);
	/* nothing was written past the data area: the file kept its size */
	struct stat st;
	assert_int_equal(stat(img, &st), 0);
	assert_int_equal((uint64_t)st.st_size, CVM_DISK_DATA_OFFSET + VOL);
	cvm_disk_writer_close(w);
	cvm_disk_writer_close(NULL);
	/* ... and accepted once it is closed */
	assert_int_equal(cvm_disk_writer_open(img, s, &w2, &err), 0);
	cvm_disk_writer_close(w2);

	/* an image still carrying the progress token is refused; without it, accepted */
	struct cvm_luks l;
	assert_int_equal(cvm_luks_open(img, &l, &err), 0);
	int tok = crypt_token_json_set(l.cd, CRYPT_ANY_TOKEN,
				       "{\"type\":\"opencvm-progress\",\"keyslots\":[],"
				       "\"done\":\"0\",\"total\":\"8388608\",\"source_size\":"
				       "\"8388608\",\"source_mtime_ns\":\"1\",\"chunk\":\"4194304\","
				       "\"sector_size\":4096}");
	assert_true(tok >= 0);
	cvm_luks_close(&l);
	w = NULL;
	assert_int_equal(cvm_disk_writer_open(img, s, &w, &err), -EBUSY);
	assert_null(w);
	assert_int_equal(cvm_luks_open(img, &l, &err), 0);
	assert_true(crypt_token_json_set(l.cd, tok, NULL) >= 0);
	cvm_luks_close(&l);
	assert_int_equal(cvm_disk_writer_open(img, s, &w, &err), 0);
	cvm_disk_writer_close(w);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test_setup_teardown(test_roundtrip_4k, setup, teardown),
		cmocka_unit_test_setup_teardown(test_roundtrip_512, setup, teardown),
		cmocka_unit_test_setup_teardown(test_refusals, setup, teardown),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
