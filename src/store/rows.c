/* SPDX-License-Identifier: Apache-2.0 */
/* Materialized result sets. Cells live in one arena so a result is freed (and wiped: sealed key
 * material passes through here) in one go; the arena is grown by copy-and-wipe, never by
 * realloc, so no stale copy of a cell survives in freed memory. */
#include "store-int.h"

#include <openssl/crypto.h>
#include <inttypes.h>
#include <stdio.h>
#include <string.h>

struct cell {
	int64_t i;
	size_t off;
	size_t len;
	enum cvm_val_type type;
};

struct cvm_rows {
	size_t ncols;
	struct cell *cells;
	size_t ncells, cells_cap;
	uint8_t *arena;
	size_t arena_len, arena_cap;
};

struct cvm_rows *rows_new(void)
{
	return calloc(1, sizeof(struct cvm_rows));
}

int rows_set_ncols(struct cvm_rows *r, size_t ncols)
{
	r->ncols = ncols;
	return 0;
}

static int grow_cells(struct cvm_rows *r)
{
	if (r->ncells < r->cells_cap)
		return 0;
	size_t cap = r->cells_cap ? r->cells_cap * 2 : 16;
	if (cap > SIZE_MAX / sizeof(struct cell))
		return -ENOMEM;
	struct cell *c = realloc(r->cells, cap * sizeof(*c));
	if (!c)
		return -ENOMEM;
	r->cells = c;
	r->cells_cap = cap;
	return 0;
}

/* Copies len bytes plus a NUL into the arena; returns the offset via *off. */
static int arena_put(struct cvm_rows *r, const void *data, size_t len, size_t *off)
{
	if (len > SIZE_MAX / 4 - r->arena_len)
		return -ENOMEM;
	size_t need = r->arena_len + len + 1;
	if (need > r->arena_cap) {
		size_t cap = r->arena_cap ? r->arena_cap : 256;
		while (cap < need)
			cap *= 2;
		uint8_t *a = malloc(cap);
		if (!a)
			return -ENOMEM;
		if (r->arena) {
			memcpy(a, r->arena, r->arena_len);
			OPENSSL_cleanse(r->arena, r->arena_cap);
			free(r->arena);
		}
		r->arena = a;
		r->arena_cap = cap;
	}
	if (len)
		memcpy(r->arena + r->arena_len, data, len);
	r->arena[r->arena_len + len] = 0;
	*off = r->arena_len;
	r->arena_len = need;
	return 0;
}

static int add_cell(struct cvm_rows *r, enum cvm_val_type type, int64_t i, const void *data,
		    size_t len)
{
	int ret = grow_cells(r);
	if (ret < 0)
		return ret;
	struct cell c = { .i = i, .type = type, .len = len };
	if (type != CVM_VAL_NULL) {
		ret = arena_put(r, data, len, &c.off);
		if (ret < 0)
			return ret;
	}
	r->cells[r->ncells++] = c;
	return 0;
}

int rows_add_null(struct cvm_rows *r)
{
	return add_cell(r, CVM_VAL_NULL, 0, NULL, 0);
}

int rows_add_int(struct cvm_rows *r, int64_t v)
{
	char txt[24];
	int n = snprintf(txt, sizeof(txt), "%" PRId64, v);
	return add_cell(r, CVM_VAL_INT, v, txt, (size_t)n);
}

int rows_add_text(struct cvm_rows *r, const char *s, size_t len)
{
	return add_cell(r, CVM_VAL_TEXT, 0, s, len);
}

int rows_add_blob(struct cvm_rows *r, const void *b, size_t len)
{
	return add_cell(r, CVM_VAL_BLOB, 0, b, len);
}

size_t cvm_rows_count(const struct cvm_rows *r)
{
	return r && r->ncols ? r->ncells / r->ncols : 0;
}

size_t cvm_rows_ncols(const struct cvm_rows *r)
{
	return r ? r->ncols : 0;
}

static const struct cell *cell_at(const struct cvm_rows *r, size_t row, size_t col)
{
	if (!r || col >= r->ncols || row >= cvm_rows_count(r))
		return NULL;
	const struct cell *c = &r->cells[row * r->ncols + col];
	return c->type == CVM_VAL_NULL ? NULL : c;
}

bool cvm_rows_null(const struct cvm_rows *r, size_t row, size_t col)
{
	return cell_at(r, row, col) == NULL;
}

int64_t cvm_rows_int(const struct cvm_rows *r, size_t row, size_t col)
{
	const struct cell *c = cell_at(r, row, col);
	if (!c)
		return 0;
	if (c->type == CVM_VAL_INT)
		return c->i;
	/* Text cells (e.g. PostgreSQL NUMERIC from SUM()) are parsed; junk reads as 0. */
	const char *s = (const char *)r->arena + c->off;
	char *end;
	errno = 0;
	long long v = strtoll(s, &end, 10);
	if (errno || end == s || *end)
		return 0;
	return v;
}

const char *cvm_rows_text(const struct cvm_rows *r, size_t row, size_t col)
{
	const struct cell *c = cell_at(r, row, col);
	return c ? (const char *)r->arena + c->off : NULL;
}

const uint8_t *cvm_rows_blob(const struct cvm_rows *r, size_t row, size_t col, size_t *len)
{
	const struct cell *c = cell_at(r, row, col);
	if (len)
		*len = c ? c->len : 0;
	return c ? r->arena + c->off : NULL;
}

void cvm_rows_free(struct cvm_rows *r)
{
	if (!r)
		return;
	if (r->arena) {
		OPENSSL_cleanse(r->arena, r->arena_cap);
		free(r->arena);
	}
	free(r->cells);
	free(r);
}
