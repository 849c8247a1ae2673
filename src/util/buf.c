/* SPDX-License-Identifier: Apache-2.0 */
#include <opencvm/util.h>

#include <openssl/crypto.h>
#include <stdio.h>
#include <string.h>

int cvm_buf_reserve(struct cvm_buf *b, size_t extra)
{
	if (extra > SIZE_MAX - b->len - 1)
		return -ENOMEM;
	size_t need = b->len + extra + 1;
	if (need <= b->cap)
		return 0;
	size_t cap = b->cap ? b->cap : 64;
	while (cap < need)
		cap = cap > SIZE_MAX / 2 ? need : cap * 2;
	uint8_t *p = realloc(b->data, cap);
	if (!p)
		return -ENOMEM;
	b->data = p;
	b->cap = cap;
	return 0;
}

int cvm_buf_append(struct cvm_buf *b, const void *data, size_t len)
{
	int r = cvm_buf_reserve(b, len);
	if (r < 0)
		return r;
	if (len)
		memcpy(b->data + b->len, data, len);
	b->len += len;
	b->data[b->len] = 0;
	return 0;
}

int cvm_buf_append_str(struct cvm_buf *b, const char *s)
{
	return cvm_buf_append(b, s, strlen(s));
}

int cvm_buf_printf(struct cvm_buf *b, const char *fmt, ...)
{
	va_list ap, ap2;
	va_start(ap, fmt);
	va_copy(ap2, ap);
	int n = vsnprintf(NULL, 0, fmt, ap);
	va_end(ap);
	if (n < 0) {
		va_end(ap2);
		return -EINVAL;
	}
	int r = cvm_buf_reserve(b, (size_t)n);
	if (r < 0) {
		va_end(ap2);
		return r;
	}
	vsnprintf((char *)b->data + b->len, (size_t)n + 1, fmt, ap2);
	va_end(ap2);
	b->len += (size_t)n;
	return 0;
}

char *cvm_buf_cstr(struct cvm_buf *b)
{
	if (cvm_buf_reserve(b, 0) < 0)
		return NULL;
	b->data[b->len] = 0;
	return (char *)b->data;
}

void cvm_buf_free(struct cvm_buf *b)
{
	free(b->data);
	b->data = NULL;
	b->len = b->cap = 0;
}

void cvm_buf_wipe(struct cvm_buf *b)
{
	if (b->data)
		OPENSSL_cleanse(b->data, b->cap);
	cvm_buf_free(b);
}
