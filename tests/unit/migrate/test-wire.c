/* SPDX-License-Identifier: Apache-2.0 */
/* Replication wire frames and payloads; state-file header checks. Every accepted input has a
 * rejected twin. */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "migrate/migrate-internal.h"

static size_t frame(uint8_t *out, uint8_t type, uint8_t flags, const void *p, size_t n)
{
	struct cvm_err err = {0};
	assert_int_equal(cvm_repl_frame_header(type, flags, n, out, &err), 0);
	memcpy(out + CVM_REPL_HDR, p, n);
	return CVM_REPL_HDR + n;
}

static void test_frame(void **state)
{
	(void)state;
	uint8_t buf[64];
	struct cvm_repl_frame f;
	struct cvm_err err = {0};
	size_t used = 0, n = frame(buf, CVM_REPL_SYNC, 0, "\x05\0\0\0\0\0\0\0", 8);
	assert_int_equal(cvm_repl_frame_parse(buf, n, &f, &used, &err), 0);
	assert_int_equal(used, 20);
	assert_int_equal(f.type, CVM_REPL_SYNC);
	uint64_t v;
	assert_int_equal(cvm_repl_u64_parse(f.payload, f.len, &v, &err), 0);
	assert_int_equal(v, 5);
	/* partial: header only, then a byte short */
	assert_int_equal(cvm_repl_frame_parse(buf, 11, &f, &used, &err), -EAGAIN);
	assert_int_equal(cvm_repl_frame_parse(buf, n - 1, &f, &used, &err), -EAGAIN);
	/* twins: magic, type, flags, compression on a non-data frame, reserved, size */
	uint8_t bad[64];
	memcpy(bad, buf, n);
	bad[0] = 'X';
	assert_int_equal(cvm_repl_frame_parse(bad, n, &f, &used, &err), -EBADMSG);
	memcpy(bad, buf, n);
	bad[4] = 42;
	assert_int_equal(cvm_repl_frame_parse(bad, n, &f, &used, &err), -EBADMSG);
	memcpy(bad, buf, n);
	bad[5] = 0x80;
	assert_int_equal(cvm_repl_frame_parse(bad, n, &f, &used, &err), -EBADMSG);
	memcpy(bad, buf, n);
	bad[5] = CVM_REPL_F_ZSTD;
	assert_int_equal(cvm_repl_frame_parse(bad, n, &f, &used, &err), -EBADMSG);
	assert_non_null(strstr(err.msg, "compression flag"));
	memcpy(bad, buf, n);
	bad[7] = 1;
	assert_int_equal(cvm_repl_frame_parse(bad, n, &f, &used, &err), -EBADMSG);
	memcpy(bad, buf, n);
	mig_put_le32(bad + 8, CVM_REPL_MAX_PAYLOAD + 1);
	assert_int_equal(cvm_repl_frame_parse(bad, n, &f, &used, &err), -EBADMSG);
	assert_int_equal(cvm_repl_frame_header(CVM_REPL_BLOCK, 0, CVM_REPL_MAX_PAYLOAD + 1, bad, &err),
			 -EINVAL);
	assert_int_equal(cvm_repl_frame_header(0, 0, 1, bad, &err), -EINVAL);
	assert_int_equal(cvm_repl_u64_parse(f.payload, 7, &v, &err), -EBADMSG);
}

static void test_hello(void **state)
{
	(void)state;
	struct cvm_repl_hello h = {.version = CVM_REPL_VERSION, .block_size = 65536,
				   .disk_size = 1ull << 30, .pass = 3, .cursor = 16384}, g;
	memset(h.gen, 0xab, 16);
	uint8_t b[CVM_REPL_HELLO_LEN];
	struct cvm_err err = {0};
	cvm_repl_hello_put(&h, b);
	assert_int_equal(cvm_repl_hello_parse(b, sizeof(b), &g, &err), 0);
	assert_memory_equal(&g.gen, &h.gen, 16);
	assert_int_equal(g.cursor, 16384);
	assert_int_equal(cvm_repl_hello_parse(b, sizeof(b) - 1, &g, &err), -EBADMSG);
	struct cvm_repl_hello t = h;
	t.version = 2;
	cvm_repl_hello_put(&t, b);
	assert_int_equal(cvm_repl_hello_parse(b, sizeof(b), &g, &err), -ENOTSUP);
	t = h;
	t.block_size = 65535;
	cvm_repl_hello_put(&t, b);
	assert_int_equal(cvm_repl_hello_parse(b, sizeof(b), &g, &err), -EBADMSG);
	assert_non_null(strstr(err.msg, "power of two"));
	t = h;
	t.block_size = 2048;
	cvm_repl_hello_put(&t, b);
	assert_int_equal(cvm_repl_hello_parse(b, sizeof(b), &g, &err), -EBADMSG);
	t = h;
	t.disk_size = 0;
	cvm_repl_hello_put(&t, b);
	assert_int_equal(cvm_repl_hello_parse(b, sizeof(b), &g, &err), -EBADMSG);
	t = h;
	t.flags = 2;
	cvm_repl_hello_put(&t, b);
	assert_int_equal(cvm_repl_hello_parse(b, sizeof(b), &g, &err), -EBADMSG);
	assert_non_null(strstr(err.msg, "flags"));
	t = h;
	t.flags = CVM_REPL_HELLO_STALE;
	cvm_repl_hello_put(&t, b);
	assert_int_equal(cvm_repl_hello_parse(b, sizeof(b), &g, &err), 0);
	assert_int_equal(g.flags, CVM_REPL_HELLO_STALE);
	t = h;
	t.cursor = 16385;
	cvm_repl_hello_put(&t, b);
	assert_int_equal(cvm_repl_hello_parse(b, sizeof(b), &g, &err), -EBADMSG);
	assert_non_null(strstr(err.msg, "cursor"));
}

static void test_block_manifest(void **state)
{
	(void)state;
	uint8_t b[8 + 32 + 16] = {0};
	mig_put_le64(b, 9);
	struct cvm_repl_block blk;
	struct cvm_err err = {0};
	assert_int_equal(cvm_repl_block_parse(b, sizeof(b), &blk, &err), 0);
	assert_int_equal(blk.index, 9);
	assert_int_equal(blk.len, 16);
	assert_ptr_equal(blk.data, b + 40);
	assert_int_equal(cvm_repl_block_parse(b, 40, &blk, &err), -EBADMSG); /* no data */

	uint8_t m[12 + 64] = {0};
	mig_put_le64(m, 1024);
	mig_put_le32(m + 8, 2);
	struct cvm_repl_manifest man;
	assert_int_equal(cvm_repl_manifest_parse(m, sizeof(m), &man, &err), 0);
	assert_int_equal(man.first, 1024);
	assert_int_equal(man.count, 2);
	assert_int_equal(cvm_repl_manifest_parse(m, sizeof(m) - 1, &man, &err), -EBADMSG);
	mig_put_le32(m + 8, CVM_REPL_MANIFEST_MAX + 1);
	assert_int_equal(cvm_repl_manifest_parse(m, sizeof(m), &man, &err), -EBADMSG);
	assert_int_equal(cvm_repl_manifest_parse(m, 11, &man, &err), -EBADMSG);
}

static void test_state_read(void **state)
{
	(void)state;
	char path[] = "/tmp/test-wire-XXXXXX";
	int fd = mkstemp(path);
	assert_true(fd >= 0);
	uint8_t junk[4096] = "CVMRST01";
	assert_int_equal(write(fd, junk, sizeof(junk)), (ssize_t)sizeof(junk));
	close(fd);
	struct cvm_repl_state_info i;
	struct cvm_err err = {0};
	assert_int_equal(cvm_repl_state_read(path, &i, &err), -EBADMSG); /* CRC */
	assert_non_null(strstr(err.msg, "CRC"));
	unlink(path);
	assert_int_equal(cvm_repl_state_read(path, &i, &err), -ENOENT);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_frame),
		cmocka_unit_test(test_hello),
		cmocka_unit_test(test_block_manifest),
		cmocka_unit_test(test_state_read),
	};
	cvm_log_set_level(CVM_LOG_ERROR);
	return cmocka_run_group_tests(tests, NULL, NULL);
}
