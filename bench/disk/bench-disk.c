/* SPDX-License-Identifier: Apache-2.0 */
/* Encrypt (and decrypt) an image with the disk module and print the throughput as key=value
 * lines for bench-disk.sh. Key wrapping uses a random in-memory A256KW key: the bench measures
 * the data path, not the key service.
 *   bench-disk SRC DST [threads] [sector_size: 512 or 4096; default: chosen from the source] */
#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <stdio.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <unistd.h>

#include <opencvm/disk.h>

struct kek {
	uint8_t key[32];
};

static int aes_kw(const uint8_t *kek, int enc, const uint8_t *in, size_t inlen, uint8_t *out,
		  size_t *outlen)
{
	EVP_CIPHER_CTX *c = EVP_CIPHER_CTX_new();
	int l1 = 0, l2 = 0;
	int ok = c && EVP_CipherInit_ex(c, EVP_aes_256_wrap(), NULL, kek, NULL, enc) &&
		 EVP_CipherUpdate(c, out, &l1, in, (int)inlen) &&
		 EVP_CipherFinal_ex(c, out + l1, &l2);
	EVP_CIPHER_CTX_free(c);
	*outlen = (size_t)(l1 + l2);
	return ok ? 0 : -1;
}

static int wrap(void *ctx, const char *key_url, const char *alg, const struct cvm_secret *in,
		char **wrapped, char **kid_used, struct cvm_err *err)
{
	struct kek *k = ctx;
	uint8_t out[64];
	size_t n = sizeof(out);
	(void)alg;
	if (aes_kw(k->key, 1, in->data, in->len, out, &n) < 0)
		return cvm_err_internal(err, "A256KW failed");
	*wrapped = cvm_b64url_encode(out, n);
	*kid_used = cvm_asprintf("%s/bench", key_url);
	return *wrapped && *kid_used ? 0 : cvm_err_nomem(err);
}

static int unwrap(void *ctx, const char *kid, const char *alg, const char *wrapped,
		  struct cvm_secret **out, struct cvm_err *err)
{
	struct kek *k = ctx;
	(void)kid, (void)alg;
	uint8_t *raw = NULL, buf[64];
	size_t rawlen = 0, n = sizeof(buf);
	int r = cvm_b64url_decode(wrapped, strlen(wrapped), &raw, &rawlen, "wrapped", err);
	if (r < 0)
		return r;
	r = aes_kw(k->key, 0, raw, rawlen, buf, &n);
	free(raw);
	if (r < 0)
		return cvm_err_set(err, EBADMSG, "BadParameter", "unwrap failed");
	*out = cvm_secret_from(buf, n);
	OPENSSL_cleanse(buf, sizeof(buf));
	return *out ? 0 : cvm_err_nomem(err);
}

/* CPU seconds (user + system, all threads) used by this process so far. */
static double cpu_seconds(void)
{
	struct rusage ru;
	getrusage(RUSAGE_SELF, &ru);
	return (double)ru.ru_utime.tv_sec + (double)ru.ru_utime.tv_usec / 1e6 +
	       (double)ru.ru_stime.tv_sec + (double)ru.ru_stime.tv_usec / 1e6;
}

int main(int argc, char **argv)
{
	if (argc < 3)
		return 2;
	cvm_log_set_level(CVM_LOG_WARN);
	struct kek k;
	struct cvm_err err = { 0 };
	if (cvm_random(k.key, sizeof(k.key), &err) < 0)
		return 1;
	struct cvm_disk_keywrap kw = { .wrap = wrap, .unwrap = unwrap, .ctx = &k };
	struct cvm_disk_wrap_params wp = { .kw = &kw, .key_url = "https://bench.local/keys/b",
					   .alg = "A256KW", .des = "bench" };
	struct cvm_disk_opts o = { 0 };
	if (argc > 3)
		o.threads = (unsigned)atoi(argv[3]);
	if (argc > 4)
		o.sector_size = (uint32_t)atoi(argv[4]);
	struct stat st;
	if (stat(argv[1], &st) < 0)
		return 1;
	uint64_t t0 = cvm_monotonic_ns();
	double c0 = cpu_seconds();
	if (cvm_disk_encrypt_image(argv[1], argv[2], &wp, &o, &err) < 0) {
		fprintf(stderr, "encrypt: %s\n", err.msg);
		return 1;
	}
	double enc_s = (double)(cvm_monotonic_ns() - t0) / 1e9;
	double enc_cpu = cpu_seconds() - c0;
	struct cvm_secret *s = NULL;
	if (cvm_disk_unlock_secret(argv[2], &kw, &s, &err) < 0) {
		fprintf(stderr, "unlock: %s\n", err.msg);
		return 1;
	}
	char *out = cvm_asprintf("%s.dec", argv[2]);
	t0 = cvm_monotonic_ns();
	int r = cvm_disk_decrypt_image(argv[2], out, s, &o, &err);
	double dec_s = (double)(cvm_monotonic_ns() - t0) / 1e9;
	cvm_secret_free(s);
	if (r < 0) {
		fprintf(stderr, "decrypt: %s\n", err.msg);
		free(out);
		return 1;
	}
	unlink(out);
	free(out);
	double mb = (double)st.st_size / 1e6;
	printf("opencvm_encrypt_seconds=%.3f\nopencvm_encrypt_MBps=%.1f\n", enc_s, mb / enc_s);
	/* load-independent: MB per CPU-second, kernel I/O work included */
	printf("opencvm_encrypt_cpu_seconds=%.3f\nopencvm_encrypt_MB_per_cpu_s=%.1f\n", enc_cpu,
	       mb / enc_cpu);
	printf("opencvm_decrypt_seconds=%.3f\nopencvm_decrypt_MBps=%.1f\n", dec_s, mb / dec_s);
	return 0;
}
