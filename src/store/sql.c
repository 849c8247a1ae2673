/* SPDX-License-Identifier: Apache-2.0 */
/* SQL text helpers: the per-connection prepared-statement cache, the PostgreSQL dialect
 * rewrite, and the statement summary used in error messages. */
#include "store-int.h"

#include <ctype.h>
#include <stdio.h>
#include <string.h>
#include <strings.h>

/* ---- statement cache -------------------------------------------------------------------- */

static uint64_t fnv1a(const char *s)
{
	uint64_t h = 14695981039346656037ULL;
	for (; *s; s++) {
		h ^= (uint8_t)*s;
		h *= 1099511628211ULL;
	}
	return h;
}

void *stmt_cache_get(const struct stmt_cache *c, const char *sql)
{
	if (!c->nbuckets)
		return NULL;
	uint64_t h = fnv1a(sql);
	for (struct stmt_entry *e = c->buckets[h % c->nbuckets]; e; e = e->next)
		if (e->hash == h && strcmp(e->sql, sql) == 0)
			return e->handle;
	return NULL;
}

static int cache_rehash(struct stmt_cache *c, size_t nbuckets)
{
	struct stmt_entry **b = calloc(nbuckets, sizeof(*b));
	if (!b)
		return -ENOMEM;
	for (size_t i = 0; i < c->nbuckets; i++) {
		struct stmt_entry *e = c->buckets[i];
		while (e) {
			struct stmt_entry *next = e->next;
			e->next = b[e->hash % nbuckets];
			b[e->hash % nbuckets] = e;
			e = next;
		}
	}
	free(c->buckets);
	c->buckets = b;
	c->nbuckets = nbuckets;
	return 0;
}

int stmt_cache_put(struct stmt_cache *c, const char *sql, void *handle)
{
	if (c->count >= c->nbuckets) {
		int r = cache_rehash(c, c->nbuckets ? c->nbuckets * 2 : 64);
		if (r < 0)
			return r;
	}
	struct stmt_entry *e = calloc(1, sizeof(*e));
	if (!e)
		return -ENOMEM;
	e->sql = strdup(sql);
	if (!e->sql) {
		free(e);
		return -ENOMEM;
	}
	e->hash = fnv1a(sql);
	e->handle = handle;
	e->next = c->buckets[e->hash % c->nbuckets];
	c->buckets[e->hash % c->nbuckets] = e;
	c->count++;
	return 0;
}

void stmt_cache_remove(struct stmt_cache *c, const char *sql)
{
	if (!c->nbuckets)
		return;
	uint64_t h = fnv1a(sql);
	for (struct stmt_entry **pp = &c->buckets[h % c->nbuckets]; *pp; pp = &(*pp)->next) {
		struct stmt_entry *e = *pp;
		if (e->hash == h && strcmp(e->sql, sql) == 0) {
			*pp = e->next;
			free(e->sql);
			free(e);
			c->count--;
			return;
		}
	}
}

void stmt_cache_clear(struct stmt_cache *c, void (*free_handle)(void *handle, void *ctx),
		      void *ctx)
{
	for (size_t i = 0; i < c->nbuckets; i++) {
		struct stmt_entry *e = c->buckets[i];
		while (e) {
			struct stmt_entry *next = e->next;
			if (free_handle)
				free_handle(e->handle, ctx);
			free(e->sql);
			free(e);
			e = next;
		}
	}
	free(c->buckets);
	memset(c, 0, sizeof(*c));
}

/* ---- SQL text ---------------------------------------------------------------------------- */

/* A word ends at whitespace or at punctuation that could start values. */
static bool word_char(char c)
{
	return c && !isspace((unsigned char)c) && !strchr("('\"?,=;", c);
}

void sql_first_words(const char *sql, char *out, size_t outlen)
{
	size_t o = 0, words = 0;
	const char *p = sql;
	if (!outlen)
		return;
	while (words < 3) {
		while (*p && isspace((unsigned char)*p))
			p++;
		if (!word_char(*p))
			break;
		if (words && o + 1 < outlen)
			out[o++] = ' ';
		for (; word_char(*p); p++)
			if (o + 1 < outlen)
				out[o++] = *p;
		words++;
	}
	out[o] = 0;
	/* "SELECT a, b FROM t" reads best as "SELECT a ... FROM t"; only when no literal comes
	 * first, so nothing quoted is ever copied. */
	const char *from = strcasestr(sql, " FROM ");
	if (from && strncasecmp(sql + strspn(sql, " \t\r\n"), "SELECT", 6) == 0 &&
	    !memchr(sql, '\'', (size_t)(from - sql)) && from >= p) {
		const char *t = from + strlen(" FROM ");
		size_t tl = 0;
		while (word_char(t[tl]))
			tl++;
		if (tl)
			snprintf(out + o, outlen - o, " ... FROM %.*s", (int)tl, t);
	}
}

static bool is_word(char c)
{
	return isalnum((unsigned char)c) || c == '_';
}

/* Copies a quoted span starting at p (quote char q, doubled quote escapes) to b; returns the
 * position after it. */
static const char *copy_quoted(const char *p, char q, struct cvm_buf *b, int *r)
{
	const char *start = p++;
	while (*p) {
		if (*p == q) {
			if (p[1] == q) {
				p += 2;
				continue;
			}
			p++;
			break;
		}
		p++;
	}
	*r = cvm_buf_append(b, start, (size_t)(p - start));
	return p;
}

char *sql_to_postgres(const char *sql, size_t *nparams)
{
	struct cvm_buf b = { 0 };
	size_t n = 0;
	int r = 0;
	const char *p = sql;
	while (*p && r >= 0) {
		if (*p == '\'' || *p == '"') {
			p = copy_quoted(p, *p, &b, &r);
		} else if (p[0] == '-' && p[1] == '-') {
			const char *e = strchr(p, '\n');
			size_t len = e ? (size_t)(e - p) : strlen(p);
			r = cvm_buf_append(&b, p, len);
			p += len;
		} else if (p[0] == '/' && p[1] == '*') {
			const char *e = strstr(p + 2, "*/");
			size_t len = e ? (size_t)(e + 2 - p) : strlen(p);
			r = cvm_buf_append(&b, p, len);
			p += len;
		} else if (*p == '?') {
			r = cvm_buf_printf(&b, "$%zu", ++n);
			p++;
		} else if (is_word(*p)) {
			const char *s = p;
			while (is_word(*p))
				p++;
			size_t len = (size_t)(p - s);
			if (len == 7 && strncasecmp(s, "INTEGER", 7) == 0)
				r = cvm_buf_append_str(&b, "BIGINT");
			else if (len == 4 && strncasecmp(s, "BLOB", 4) == 0)
				r = cvm_buf_append_str(&b, "BYTEA");
			else
				r = cvm_buf_append(&b, s, len);
		} else {
			r = cvm_buf_append(&b, p, 1);
			p++;
		}
	}
	if (r >= 0 && !cvm_buf_cstr(&b))
		r = -ENOMEM;
	if (r < 0) {
		cvm_buf_free(&b);
		return NULL;
	}
	*nparams = n;
	return (char *)b.data;
}
