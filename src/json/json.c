/* SPDX-License-Identifier: Apache-2.0 */
/* Typed access to jansson values with errors that name the field and the expectation, so the
 * REST layer can return Key Vault style "BadParameter" messages without writing them by hand. */
#include <opencvm/json.h>

#include <inttypes.h>
#include <stdio.h>
#include <string.h>

const char *cvm_json_type_name(const json_t *v)
{
	switch (v ? json_typeof(v) : JSON_NULL) {
	case JSON_OBJECT: return "object";
	case JSON_ARRAY: return "array";
	case JSON_STRING: return "string";
	case JSON_INTEGER: return "integer";
	case JSON_REAL: return "number";
	case JSON_TRUE:
	case JSON_FALSE: return "boolean";
	case JSON_NULL: return "null";
	}
	return "unknown";
}

/* Length of the valid UTF-8 sequence at s (1..4), or 0 when the bytes are not valid UTF-8
 * (bad lead, missing continuation, overlong, surrogate, beyond U+10FFFF). */
static size_t utf8_seq_len(const unsigned char *s)
{
	unsigned char c = s[0];
	if (c < 0x80)
		return 1;
	size_t need;
	uint32_t cp;
	if (c >= 0xC2 && c <= 0xDF) {
		need = 2;
		cp = c & 0x1F;
	} else if (c >= 0xE0 && c <= 0xEF) {
		need = 3;
		cp = c & 0x0F;
	} else if (c >= 0xF0 && c <= 0xF4) {
		need = 4;
		cp = c & 0x07;
	} else {
		return 0;
	}
	for (size_t k = 1; k < need; k++) {
		if ((s[k] & 0xC0) != 0x80)
			return 0; /* also stops at the NUL terminator */
		cp = cp << 6 | (s[k] & 0x3F);
	}
	if ((need == 3 && (cp < 0x800 || (cp >= 0xD800 && cp <= 0xDFFF))) ||
	    (need == 4 && (cp < 0x10000 || cp > 0x10FFFF)))
		return 0;
	return need;
}

/* Copy a caller-supplied string for an error message: bounded, valid UTF-8 only, control
 * characters and quotes replaced, "..." when cut, so a hostile value cannot break the message
 * or the JSON error body it ends up in. */
static void quote_value(const char *str, char *out, size_t outsz)
{
	const unsigned char *s = (const unsigned char *)str;
	const size_t max = outsz - 4; /* room for "..." and NUL */
	size_t n = 0, i = 0;
	while (s[i]) {
		size_t l = utf8_seq_len(s + i);
		size_t w = l ? l : 1;
		if (n + w > max)
			break;
		if (l == 1 && (s[i] < 0x20 || s[i] == 0x7f || s[i] == '"' || s[i] == '\\'))
			out[n++] = '?';
		else if (l == 0)
			out[n++] = '?';
		else {
			memcpy(out + n, s + i, l);
			n += l;
		}
		i += w;
	}
	if (s[i]) {
		memcpy(out + n, "...", 3);
		n += 3;
	}
	out[n] = 0;
}

json_t *cvm_json_string_lossy(const char *str)
{
	const unsigned char *s = (const unsigned char *)str;
	size_t len = strlen(str);
	char *copy = malloc(len + 1);
	if (!copy)
		return NULL;
	size_t n = 0;
	for (size_t i = 0; i < len;) {
		size_t l = utf8_seq_len(s + i);
		if (l == 0) {
			copy[n++] = '?';
			i++;
		} else {
			memcpy(copy + n, s + i, l);
			n += l;
			i += l;
		}
	}
	json_t *v = json_stringn(copy, n);
	free(copy);
	return v;
}

/* Scan for nesting depth before handing the buffer to jansson: its own limit (2048) is far
 * above anything a request needs, and rejecting early avoids building a deep tree at all. */
static int check_depth(const uint8_t *buf, size_t len, struct cvm_err *err)
{
	unsigned depth = 0;
	bool in_str = false, esc = false;
	size_t line = 1, col = 0;
	for (size_t i = 0; i < len; i++) {
		uint8_t c = buf[i];
		col++;
		if (c == '\n') {
			line++;
			col = 0;
		}
		if (in_str) {
			if (esc)
				esc = false;
			else if (c == '\\')
				esc = true;
			else if (c == '"')
				in_str = false;
			continue;
		}
		if (c == '"') {
			in_str = true;
		} else if (c == '{' || c == '[') {
			if (++depth > CVM_JSON_MAX_DEPTH)
				return cvm_err_badparam(err,
					"body: invalid JSON at line %zu column %zu: nesting deeper than %d levels",
					line, col, CVM_JSON_MAX_DEPTH);
		} else if ((c == '}' || c == ']') && depth > 0) {
			depth--;
		}
	}
	return 0;
}

int cvm_json_parse(const uint8_t *buf, size_t len, bool any_type, json_t **out,
		   struct cvm_err *err)
{
	*out = NULL;
	if (!buf || len == 0)
		return cvm_err_badparam(err, "body: required JSON body is missing");
	if (len > CVM_JSON_MAX_SIZE)
		return cvm_err_set(err, E2BIG, "BadParameter", "body: larger than %u bytes",
				   CVM_JSON_MAX_SIZE);
	int r = check_depth(buf, len, err);
	if (r < 0)
		return r;

	json_error_t jerr;
	size_t flags = JSON_REJECT_DUPLICATES | (any_type ? JSON_DECODE_ANY : 0);
	json_t *v = json_loadb((const char *)buf, len, flags, &jerr);
	if (!v) {
		if (json_error_code(&jerr) == json_error_out_of_memory)
			return cvm_err_nomem(err);
		char reason[sizeof(jerr.text)];
		quote_value(jerr.text, reason, sizeof(reason));
		return cvm_err_badparam(err, "body: invalid JSON at line %d column %d: %s",
					jerr.line, jerr.column, reason);
	}
	if (!any_type && !json_is_object(v)) {
		const char *t = cvm_json_type_name(v);
		json_decref(v);
		return cvm_err_badparam(err, "body: expected a JSON object, got %s", t);
	}
	*out = v;
	return 0;
}

/* Look up obj[field]. Returns 1 when present (non-null), 0 when absent (error when required),
 * negative on error. A NULL obj means the enclosing optional object was absent. */
static int lookup(json_t *obj, const char *field, const char **path, bool required,
		  json_t **v, struct cvm_err *err)
{
	if (!*path)
		*path = field;
	*v = NULL;
	if (obj && !json_is_object(obj))
		return cvm_err_badparam(err, "%s: enclosing value is %s, not an object", *path,
					cvm_json_type_name(obj));
	json_t *x = obj ? json_object_get(obj, field) : NULL;
	if (!x || json_is_null(x)) {
		if (required)
			return cvm_err_badparam(err, "%s: required field is missing", *path);
		return 0;
	}
	*v = x;
	return 1;
}

static int wrong_type(const char *path, const char *want, const json_t *v, struct cvm_err *err)
{
	return cvm_err_badparam(err, "%s: expected %s, got %s", path, want, cvm_json_type_name(v));
}

static void set_present(bool *present, bool value)
{
	if (present)
		*present = value;
}

int cvm_json_str(json_t *obj, const char *field, const char *path, bool required,
		 const char **out, bool *present, struct cvm_err *err)
{
	json_t *v;
	set_present(present, false);
	int r = lookup(obj, field, &path, required, &v, err);
	if (r <= 0)
		return r;
	if (!json_is_string(v))
		return wrong_type(path, "a string", v, err);
	*out = json_string_value(v);
	set_present(present, true);
	return 0;
}

int cvm_json_int(json_t *obj, const char *field, const char *path, bool required, int64_t min,
		 int64_t max, int64_t *out, bool *present, struct cvm_err *err)
{
	json_t *v;
	set_present(present, false);
	int r = lookup(obj, field, &path, required, &v, err);
	if (r <= 0)
		return r;
	if (!json_is_integer(v))
		return wrong_type(path, "an integer", v, err);
	int64_t x = (int64_t)json_integer_value(v);
	if (x < min || x > max)
		return cvm_err_badparam(err,
					"%s: must be between %" PRId64 " and %" PRId64 ", got %" PRId64,
					path, min, max, x);
	*out = x;
	set_present(present, true);
	return 0;
}

int cvm_json_bool(json_t *obj, const char *field, const char *path, bool required, bool *out,
		  bool *present, struct cvm_err *err)
{
	json_t *v;
	set_present(present, false);
	int r = lookup(obj, field, &path, required, &v, err);
	if (r <= 0)
		return r;
	if (!json_is_boolean(v))
		return wrong_type(path, "a boolean", v, err);
	*out = json_is_true(v);
	set_present(present, true);
	return 0;
}

int cvm_json_obj(json_t *obj, const char *field, const char *path, bool required, json_t **out,
		 struct cvm_err *err)
{
	json_t *v;
	*out = NULL;
	int r = lookup(obj, field, &path, required, &v, err);
	if (r <= 0)
		return r;
	if (!json_is_object(v))
		return wrong_type(path, "an object", v, err);
	*out = v;
	return 0;
}

int cvm_json_arr(json_t *obj, const char *field, const char *path, bool required, json_t **out,
		 struct cvm_err *err)
{
	json_t *v;
	*out = NULL;
	int r = lookup(obj, field, &path, required, &v, err);
	if (r <= 0)
		return r;
	if (!json_is_array(v))
		return wrong_type(path, "an array", v, err);
	*out = v;
	return 0;
}

int cvm_json_b64url(json_t *obj, const char *field, const char *path, bool required,
		    uint8_t **out, size_t *len, struct cvm_err *err)
{
	json_t *v;
	*out = NULL;
	*len = 0;
	int r = lookup(obj, field, &path, required, &v, err);
	if (r <= 0)
		return r;
	if (!json_is_string(v))
		return wrong_type(path, "a base64url string", v, err);
	return cvm_b64url_decode(json_string_value(v), json_string_length(v), out, len, path, err);
}

/* "a", "b", "c" into buf, truncated with "..." when the list is long. */
static void list_allowed(const char *const *allowed, char *buf, size_t bufsz)
{
	size_t n = 0;
	buf[0] = 0;
	for (size_t i = 0; allowed[i]; i++) {
		int w = snprintf(buf + n, bufsz - n, "%s\"%s\"", i ? ", " : "", allowed[i]);
		if (w < 0 || (size_t)w >= bufsz - n) {
			if (bufsz > 4)
				memcpy(buf + bufsz - 4, "...", 4);
			return;
		}
		n += (size_t)w;
	}
}

static bool in_list(const char *const *allowed, const char *s)
{
	for (size_t i = 0; allowed[i]; i++)
		if (strcmp(allowed[i], s) == 0)
			return true;
	return false;
}

static int not_allowed(const char *path, const char *const *allowed, const char *got,
		       struct cvm_err *err)
{
	char list[320], q[72];
	list_allowed(allowed, list, sizeof(list));
	quote_value(got, q, sizeof(q));
	return cvm_err_badparam(err, "%s: expected one of %s, got \"%s\"", path, list, q);
}

int cvm_json_enum(json_t *obj, const char *field, const char *path, bool required,
		  const char *const *allowed, const char **out, struct cvm_err *err)
{
	json_t *v;
	*out = NULL;
	int r = lookup(obj, field, &path, required, &v, err);
	if (r <= 0)
		return r;
	if (!json_is_string(v))
		return wrong_type(path, "a string", v, err);
	const char *s = json_string_value(v);
	if (!in_list(allowed, s))
		return not_allowed(path, allowed, s, err);
	*out = s;
	return 0;
}

int cvm_json_str_array(json_t *obj, const char *field, const char *path, bool required,
		       const char *const *allowed, json_t **out, struct cvm_err *err)
{
	json_t *v;
	*out = NULL;
	int r = lookup(obj, field, &path, required, &v, err);
	if (r <= 0)
		return r;
	if (!json_is_array(v))
		return wrong_type(path, "an array of strings", v, err);
	size_t i;
	json_t *e;
	json_array_foreach(v, i, e) {
		if (!json_is_string(e))
			return cvm_err_badparam(err, "%s[%zu]: expected a string, got %s", path, i,
						cvm_json_type_name(e));
		if (allowed && !in_list(allowed, json_string_value(e))) {
			char ipath[160];
			snprintf(ipath, sizeof(ipath), "%s[%zu]", path, i);
			return not_allowed(ipath, allowed, json_string_value(e), err);
		}
	}
	*out = v;
	return 0;
}

/* ---- serialization -------------------------------------------------------------------- */

/* Byte for byte what json_dumps(v, JSON_COMPACT | JSON_ENCODE_ANY) writes (insertion order,
 * UTF-8 passed through, only '"', '\\' and control characters escaped), several times
 * faster on long strings: jansson decodes every code point of every string it writes, and
 * responses carry kilobytes of base64url (JWS, wrapped keys). */
#define DUMP_MAX_DEPTH 2048

static int dump_string(struct cvm_buf *b, const char *s, size_t len)
{
	static const char hex[] = "0123456789ABCDEF";
	if (cvm_buf_reserve(b, len + 2) < 0 || cvm_buf_append(b, "\"", 1) < 0)
		return -ENOMEM;
	size_t run = 0;
	for (size_t i = 0; i < len; i++) {
		unsigned char c = (unsigned char)s[i];
		if (c >= 0x20 && c != '"' && c != '\\')
			continue;
		if (cvm_buf_append(b, s + run, i - run) < 0)
			return -ENOMEM;
		run = i + 1;
		char esc[6] = { '\\', 0 };
		size_t n = 2;
		switch (c) {
		case '"': esc[1] = '"'; break;
		case '\\': esc[1] = '\\'; break;
		case '\b': esc[1] = 'b'; break;
		case '\f': esc[1] = 'f'; break;
		case '\n': esc[1] = 'n'; break;
		case '\r': esc[1] = 'r'; break;
		case '\t': esc[1] = 't'; break;
		default:
			memcpy(esc + 1, "u00", 3);
			esc[4] = hex[c >> 4];
			esc[5] = hex[c & 15];
			n = 6;
		}
		if (cvm_buf_append(b, esc, n) < 0)
			return -ENOMEM;
	}
	if (cvm_buf_append(b, s + run, len - run) < 0 || cvm_buf_append(b, "\"", 1) < 0)
		return -ENOMEM;
	return 0;
}

static int dump_value(struct cvm_buf *b, const json_t *v, unsigned depth)
{
	if (depth > DUMP_MAX_DEPTH)
		return -ELOOP;
	char num[32];
	int r = 0;
	switch (json_typeof(v)) {
	case JSON_OBJECT: {
		const char *key;
		json_t *m;
		bool first = true;
		if (cvm_buf_append(b, "{", 1) < 0)
			return -ENOMEM;
		json_object_foreach((json_t *)v, key, m) {
			if ((!first && cvm_buf_append(b, ",", 1) < 0) ||
			    dump_string(b, key, strlen(key)) < 0 || cvm_buf_append(b, ":", 1) < 0)
				return -ENOMEM;
			if ((r = dump_value(b, m, depth + 1)) < 0)
				return r;
			first = false;
		}
		return cvm_buf_append(b, "}", 1);
	}
	case JSON_ARRAY:
		if (cvm_buf_append(b, "[", 1) < 0)
			return -ENOMEM;
		for (size_t i = 0; i < json_array_size(v); i++) {
			if (i && cvm_buf_append(b, ",", 1) < 0)
				return -ENOMEM;
			if ((r = dump_value(b, json_array_get(v, i), depth + 1)) < 0)
				return r;
		}
		return cvm_buf_append(b, "]", 1);
	case JSON_STRING:
		return dump_string(b, json_string_value(v), json_string_length(v));
	case JSON_INTEGER:
		r = snprintf(num, sizeof(num), "%" JSON_INTEGER_FORMAT, json_integer_value(v));
		return cvm_buf_append(b, num, (size_t)r);
	case JSON_REAL: {
		/* jansson's own formatting (precision, locale, the ".0" it appends). */
		size_t n = json_dumpb(v, num, sizeof(num), JSON_COMPACT | JSON_ENCODE_ANY);
		return n && n <= sizeof(num) ? cvm_buf_append(b, num, n) : -ENOMEM;
	}
	case JSON_TRUE:
		return cvm_buf_append(b, "true", 4);
	case JSON_FALSE:
		return cvm_buf_append(b, "false", 5);
	case JSON_NULL:
		return cvm_buf_append(b, "null", 4);
	}
	return -EINVAL;
}

int cvm_json_dump_buf(const json_t *v, struct cvm_buf *out)
{
	if (!v || !out)
		return -EINVAL;
	size_t mark = out->len;
	int r = dump_value(out, v, 0);
	if (r < 0)
		out->len = mark;
	return r;
}

char *cvm_json_dump(const json_t *v)
{
	struct cvm_buf b = { 0 };
	if (cvm_json_dump_buf(v, &b) < 0 || !cvm_buf_cstr(&b)) {
		cvm_buf_free(&b);
		return NULL;
	}
	return (char *)b.data;
}

int cvm_json_set_b64url(json_t *obj, const char *field, const void *data, size_t len)
{
	if (!json_is_object(obj))
		return -EINVAL;
	char *s = cvm_b64url_encode(data, len);
	if (!s)
		return -ENOMEM;
	/* base64url is ASCII by construction: skip jansson's per-character UTF-8 check. */
	json_t *js = json_stringn_nocheck(s, strlen(s));
	free(s);
	if (!js || json_object_set_new(obj, field, js) < 0)
		return -ENOMEM;
	return 0;
}

/* Claim names may themselves contain dots, so at each level the whole remaining string is
 * tried as a key first, then each split point from the left. */
static json_t *path_lookup(json_t *node, const char *s, unsigned depth)
{
	if (!json_is_object(node) || depth > CVM_JSON_MAX_DEPTH)
		return NULL;
	json_t *v = json_object_get(node, s);
	if (v)
		return v;
	for (const char *dot = strchr(s, '.'); dot; dot = strchr(dot + 1, '.')) {
		json_t *child = json_object_getn(node, s, (size_t)(dot - s));
		if (!child)
			continue;
		json_t *found = path_lookup(child, dot + 1, depth + 1);
		if (found)
			return found;
	}
	return NULL;
}

json_t *cvm_json_path(json_t *root, const char *dotted)
{
	if (!root || !dotted || !*dotted)
		return NULL;
	return path_lookup(root, dotted, 0);
}
