/* SPDX-License-Identifier: Apache-2.0 */
#include <opencvm/util.h>

#include <openssl/crypto.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

/* Each secret gets its own anonymous mapping: it is locked (never swapped), excluded from
 * core dumps, and unmapped after being zeroed. Small secrets cost a page; secrets are few. */
struct cvm_secret *cvm_secret_new(size_t len)
{
	struct cvm_secret *s = calloc(1, sizeof(*s));
	if (!s)
		return NULL;
	size_t page = (size_t)sysconf(_SC_PAGESIZE);
	s->cap = ((len ? len : 1) + page - 1) / page * page;
	void *p = mmap(NULL, s->cap, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	if (p == MAP_FAILED) {
		free(s);
		return NULL;
	}
	/* mlock can fail under RLIMIT_MEMLOCK; the memory is still excluded from dumps and wiped,
	 * so we keep going rather than refuse to work in small containers. */
	(void)mlock(p, s->cap);
	(void)madvise(p, s->cap, MADV_DONTDUMP);
	s->data = p;
	s->len = len;
	return s;
}

struct cvm_secret *cvm_secret_from(const void *data, size_t len)
{
	struct cvm_secret *s = cvm_secret_new(len);
	if (s && len)
		memcpy(s->data, data, len);
	return s;
}

struct cvm_secret *cvm_secret_random(size_t len)
{
	struct cvm_secret *s = cvm_secret_new(len);
	if (s && cvm_random(s->data, len, NULL) < 0) {
		cvm_secret_free(s);
		return NULL;
	}
	return s;
}

void cvm_secret_free(struct cvm_secret *s)
{
	if (!s)
		return;
	if (s->data) {
		OPENSSL_cleanse(s->data, s->cap);
		munlock(s->data, s->cap);
		munmap(s->data, s->cap);
	}
	free(s);
}

bool cvm_secret_eq(const struct cvm_secret *a, const void *b, size_t blen)
{
	if (!a || a->len != blen)
		return false;
	return CRYPTO_memcmp(a->data, b, blen) == 0;
}

bool cvm_memeq_ct(const void *a, const void *b, size_t len)
{
	return CRYPTO_memcmp(a, b, len) == 0;
}

void cvm_free_secure(void *p, size_t len)
{
	if (!p)
		return;
	OPENSSL_cleanse(p, len);
	free(p);
}
