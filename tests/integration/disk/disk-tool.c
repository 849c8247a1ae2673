/* SPDX-License-Identifier: Apache-2.0 */
/* Test-only driver for the disk module (the real CLI is `cvm disk ...`). Key wrapping uses
 * the local key directory stand-in (tests/unit/disk/testkw.c), never a real key service.
 *
 *   disk-tool keygen KEYDIR NAME VERSION ALG
 *   disk-tool create IMG SIZE KEYDIR KEY_URL ALG DES [KIND]
 *   disk-tool encrypt SRC DST KEYDIR KEY_URL ALG DES [threads=N] [chunk=N] [sector=N]
 *                     [ckpt_ms=N] [vkfile=PATH] [progress] [used_only] [skip_holes]
 *   disk-tool decrypt IMG OUT KEYFILE [threads=N]
 *   disk-tool rekey SRC DST KEYFILE KEYDIR KEY_URL ALG DES
 *   disk-tool verify IMG KEYFILE [SRC [SAMPLES]]
 *   disk-tool unlock IMG KEYDIR OUTFILE        (writes the 32-byte secret, mode 0600)
 *   disk-tool rotate IMG KEYDIR KEY_URL ALG
 *   disk-tool info IMG
 * Exit status 0 on success, 1 on error (message on stderr). */
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include <opencvm/disk.h>

#include "testkw.h"

static int fail(const struct cvm_err *err)
{
	fprintf(stderr, "error: %s (%s, errno %d)\n", err->msg, err->code, err->errnum);
	return 1;
}

static int parse_u64(const char *s, uint64_t *out)
{
	struct cvm_err err = { 0 };
	int64_t v;
	if (cvm_parse_i64(s, 0, INT64_MAX, &v, "number", &err) < 0)
		return -1;
	*out = (uint64_t)v;
	return 0;
}

static void progress(void *ctx, uint64_t done, uint64_t total)
{
	(void)ctx;
	fprintf(stderr, "progress %llu/%llu\n", (unsigned long long)done,
		(unsigned long long)total);
}

static int read_secret(const char *path, size_t want, struct cvm_secret **out)
{
	struct cvm_err err = { 0 };
	uint8_t *buf = NULL;
	size_t len = 0;
	if (cvm_file_read(path, 4096, &buf, &len, &err) < 0)
		return fail(&err);
	if (want && len != want) {
		cvm_free_secure(buf, len);
		fprintf(stderr, "error: %s: expected %zu bytes\n", path, want);
		return 1;
	}
	*out = cvm_secret_from(buf, len);
	cvm_free_secure(buf, len);
	return *out ? 0 : 1;
}

static int cmd_encrypt(int argc, char **argv)
{
	if (argc < 8)
		return 2;
	struct testkw tw;
	struct cvm_disk_keywrap kw;
	testkw_init(&tw, argv[4], &kw);
	struct cvm_disk_wrap_params wp = { .kw = &kw, .key_url = argv[5], .alg = argv[6],
					   .des = argv[7] };
	struct cvm_disk_opts o = { .kind = CVM_DISK_KIND_OS };
	struct cvm_secret *vk = NULL;
	for (int i = 8; i < argc; i++) {
		uint64_t v = 0;
		const char *eq = strchr(argv[i], '=');
		if (strcmp(argv[i], "progress") == 0) {
			o.progress = progress;
			continue;
		}
		if (strcmp(argv[i], "used_only") == 0 || strcmp(argv[i], "skip_holes") == 0) {
			*(argv[i][0] == 'u' ? &o.used_only : &o.skip_holes) = true;
			continue;
		}
		if (!eq)
			return 2;
		if (cvm_str_startswith(argv[i], "vkfile=")) {
			if (read_secret(eq + 1, CVM_DISK_VOLUME_KEY_LEN, &vk))
				return 1;
			o.volume_key = vk;
			continue;
		}
		if (parse_u64(eq + 1, &v) < 0)
			return 2;
		if (cvm_str_startswith(argv[i], "threads="))
			o.threads = (unsigned)v;
		else if (cvm_str_startswith(argv[i], "chunk="))
			o.chunk_size = (size_t)v;
		else if (cvm_str_startswith(argv[i], "sector="))
			o.sector_size = (uint32_t)v;
		else if (cvm_str_startswith(argv[i], "ckpt_ms="))
			o.checkpoint_ms = (unsigned)v;
		else
			return 2;
	}
	struct cvm_err err = { 0 };
	int r = cvm_disk_encrypt_image(argv[2], argv[3], &wp, &o, &err);
	cvm_secret_free(vk);
	return r < 0 ? fail(&err) : 0;
}

static int cmd_info(const char *img)
{
	struct cvm_disk_info info;
	struct cvm_err err = { 0 };
	if (cvm_disk_info(img, &info, &err) < 0)
		return fail(&err);
	printf("uuid=%s\ncipher=%s\nsector_size=%u\ndata_offset=%llu\ndata_size=%llu\n"
	       "kind=%s\nlabel=%s\ncomplete=%d\nprogress_done=%llu\n",
	       info.uuid, info.cipher, info.sector_size, (unsigned long long)info.data_offset,
	       (unsigned long long)info.data_size,
	       info.has_kind ? cvm_disk_kind_name(info.kind) : "", info.label, info.complete,
	       (unsigned long long)info.progress_done);
	if (info.has_hsm_token)
		printf("key_url=%s\nalg=%s\ndes=%s\n", info.hsm.key_url, info.hsm.alg, info.hsm.des);
	cvm_disk_info_clear(&info);
	return 0;
}

int main(int argc, char **argv)
{
	struct cvm_err err = { 0 };
	const char *cmd = argc > 1 ? argv[1] : "";
	int r = 2;
	cvm_log_set_level(CVM_LOG_WARN);
	if (strcmp(cmd, "keygen") == 0 && argc == 6) {
		r = testkw_make_key(argv[2], argv[3], argv[4], argv[5]) < 0 ? 1 : 0;
	} else if (strcmp(cmd, "create") == 0 && (argc == 8 || argc == 9)) {
		struct testkw tw;
		struct cvm_disk_keywrap kw;
		testkw_init(&tw, argv[4], &kw);
		struct cvm_disk_wrap_params wp = { .kw = &kw, .key_url = argv[5], .alg = argv[6],
						   .des = argv[7] };
		struct cvm_disk_opts o = { .kind = CVM_DISK_KIND_DATA };
		uint64_t size;
		if (parse_u64(argv[3], &size) < 0 ||
		    (argc == 9 && cvm_disk_kind_parse(argv[8], &o.kind, &err) < 0))
			return 2;
		r = cvm_disk_create(argv[2], size, &wp, &o, &err) < 0 ? fail(&err) : 0;
	} else if (strcmp(cmd, "encrypt") == 0) {
		r = cmd_encrypt(argc, argv);
	} else if (strcmp(cmd, "decrypt") == 0 && (argc == 5 || argc == 6)) {
		struct cvm_secret *s = NULL;
		uint64_t threads = 0;
		if (argc == 6 && (!cvm_str_startswith(argv[5], "threads=") ||
				  parse_u64(argv[5] + 8, &threads) < 0))
			return 2;
		struct cvm_disk_opts o = { .threads = (unsigned)threads };
		if (read_secret(argv[4], 0, &s))
			return 1;
		r = cvm_disk_decrypt_image(argv[2], argv[3], s, &o, &err) < 0 ? fail(&err) : 0;
		cvm_secret_free(s);
	} else if (strcmp(cmd, "rekey") == 0 && argc == 9) {
		struct testkw tw;
		struct cvm_disk_keywrap kw;
		testkw_init(&tw, argv[5], &kw);
		struct cvm_disk_wrap_params wp = { .kw = &kw, .key_url = argv[6], .alg = argv[7],
						   .des = argv[8] };
		struct cvm_secret *s = NULL;
		if (read_secret(argv[4], 0, &s))
			return 1;
		r = cvm_disk_rekey(argv[2], argv[3], s, &wp, NULL, &err) < 0 ? fail(&err) : 0;
		cvm_secret_free(s);
	} else if (strcmp(cmd, "verify") == 0 && argc >= 4 && argc <= 6) {
		struct cvm_secret *s = NULL;
		uint64_t samples = 0;
		if (argc == 6 && parse_u64(argv[5], &samples) < 0)
			return 2;
		if (read_secret(argv[3], 0, &s))
			return 1;
		r = cvm_disk_verify(argv[2], s, argc >= 5 ? argv[4] : NULL, (unsigned)samples, &err);
		cvm_secret_free(s);
		r = r < 0 ? fail(&err) : 0;
	} else if (strcmp(cmd, "unlock") == 0 && argc == 5) {
		struct testkw tw;
		struct cvm_disk_keywrap kw;
		testkw_init(&tw, argv[3], &kw);
		struct cvm_secret *s = NULL;
		r = cvm_disk_unlock_secret(argv[2], &kw, &s, &err);
		if (r == 0)
			r = cvm_file_write_atomic(argv[4], s->data, s->len, 0600, &err);
		cvm_secret_free(s);
		r = r < 0 ? fail(&err) : 0;
	} else if (strcmp(cmd, "rotate") == 0 && argc == 6) {
		struct testkw tw;
		struct cvm_disk_keywrap kw;
		testkw_init(&tw, argv[3], &kw);
		r = cvm_disk_rotate(argv[2], &kw, argv[4], argv[5], &err) < 0 ? fail(&err) : 0;
	} else if (strcmp(cmd, "info") == 0 && argc == 3) {
		r = cmd_info(argv[2]);
	}
	if (r == 2)
		fprintf(stderr, "usage: see the comment at the top of disk-tool.c\n");
	return r;
}
