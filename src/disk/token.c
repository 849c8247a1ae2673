/* SPDX-License-Identifier: Apache-2.0 */
/* The opencvm-hsm LUKS2 token: strict parser and serializer, disk kinds, key URL checks. */
#include "disk-internal.h"
#include <opencvm/json.h>

#include <string.h>

#define TOKEN_CTX "opencvm-hsm token"
#define PROGRESS_CTX "opencvm-progress token"
#define MAX_URL 2048
#define MAX_DES 512
#define MAX_WRAPPED_B64 1024 /* RSA-4096 output is 512 bytes = 683 b64url chars */

static const char *const kind_names[] = { "os", "data", "temp", "vmgs" };

const char *cvm_disk_kind_name(enum cvm_disk_kind k)
{
	if ((unsigned)k < CVM_ARRAY_SIZE(kind_names))
		return kind_names[k];
	return "unknown";
}

int cvm_disk_kind_parse(const char *s, enum cvm_disk_kind *out, struct cvm_err *err)
{
	for (size_t i = 0; s && i < CVM_ARRAY_SIZE(kind_names); i++) {
		if (strcmp(s, kind_names[i]) == 0) {
			*out = (enum cvm_disk_kind)i;
			return 0;
		}
	}
	return cvm_err_badparam(err, "kind: must be one of os, data, temp, vmgs");
}

static bool is_name_char(char c, bool allow_dash)
{
	return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') ||
	       (allow_dash && c == '-');
}

/* http(s)://host[/prefix]/keys/<name>[/<version>]: name as Key Vault allows (1-127 of
 * [0-9A-Za-z-]), version 1-64 alphanumerics. Anything after is refused: the URL is the kid. */
bool cvm_disk_key_url_valid(const char *url, bool require_version)
{
	if (!url)
		return false;
	size_t len = strnlen(url, MAX_URL + 1);
	if (len > MAX_URL)
		return false;
	const char *p;
	if (cvm_str_startswith(url, "https://"))
		p = url + 8;
	else if (cvm_str_startswith(url, "http://"))
		p = url + 7;
	else
		return false;
	const char *host_end = strchr(p, '/');
	if (!host_end || host_end == p)
		return false;
	for (const char *c = p; c < host_end; c++)
		if ((unsigned char)*c <= ' ' || *c == '?' || *c == '#' || *c == '@')
			return false;
	/* the last "/keys/" segment starts the key part */
	const char *keys = NULL;
	for (const char *c = host_end; (c = strstr(c, "/keys/")); c++)
		keys = c;
	if (!keys)
		return false;
	const char *name = keys + 6;
	size_t nlen = 0;
	while (is_name_char(name[nlen], true))
		nlen++;
	if (nlen == 0 || nlen > 127)
		return false;
	const char *rest = name + nlen;
	if (*rest == '\0' || (rest[0] == '/' && rest[1] == '\0'))
		return !require_version;
	if (*rest != '/')
		return false;
	const char *ver = rest + 1;
	size_t vlen = 0;
	while (is_name_char(ver[vlen], false))
		vlen++;
	return vlen > 0 && vlen <= 64 && ver[vlen] == '\0';
}

void cvm_disk_hsm_token_clear(struct cvm_disk_hsm_token *t)
{
	if (!t)
		return;
	free(t->key_url);
	free(t->alg);
	free(t->wrapped);
	free(t->des);
	memset(t, 0, sizeof(*t));
}

static const char *const algs[] = { "RSA-OAEP-256", "A256KW", NULL };

/* Wrapped length the algorithm can produce: A256KW of 32 bytes is 40; RSA-OAEP output is the
 * modulus size, and the key service makes 2048, 3072 and 4096-bit RSA keys. */
static int check_wrapped(const char *alg, const char *b64, struct cvm_err *err)
{
	size_t slen = strlen(b64);
	if (slen == 0 || slen > MAX_WRAPPED_B64)
		return cvm_err_badparam(err, "wrapped: expected 1..%d base64url characters",
					MAX_WRAPPED_B64);
	_cleanup_free_ uint8_t *raw = NULL;
	size_t rawlen = 0;
	int r = cvm_b64url_decode(b64, slen, &raw, &rawlen, "wrapped", err);
	if (r < 0)
		return r;
	if (strcmp(alg, "A256KW") == 0) {
		if (rawlen != CVM_DISK_SECRET_LEN + 8)
			return cvm_err_badparam(err, "wrapped: A256KW output must be %d bytes, got %zu",
						CVM_DISK_SECRET_LEN + 8, rawlen);
	} else if (rawlen != 256 && rawlen != 384 && rawlen != 512) {
		return cvm_err_badparam(err,
					"wrapped: RSA-OAEP-256 output must be 256, 384 or 512 bytes "
					"(RSA-2048/3072/4096), got %zu",
					rawlen);
	}
	return 0;
}

static int check_des(const char *des, struct cvm_err *err)
{
	size_t len = strlen(des);
	if (len == 0 || len > MAX_DES)
		return cvm_err_badparam(err, "des: expected 1..%d characters", MAX_DES);
	for (size_t i = 0; i < len; i++)
		if ((unsigned char)des[i] < 0x20 || des[i] == 0x7f)
			return cvm_err_badparam(err, "des: control characters are not allowed");
	return 0;
}

static int check_fields(const struct cvm_disk_hsm_token *t, struct cvm_err *err)
{
	if (t->keyslot < 0 || t->keyslot > 31)
		return cvm_err_badparam(err, "keyslots: keyslot must be 0..31");
	if (!t->key_url || !cvm_disk_key_url_valid(t->key_url, true))
		return cvm_err_badparam(err, "key_url: expected http(s)://host/keys/<name>/<version>");
	if (!t->alg || (strcmp(t->alg, algs[0]) != 0 && strcmp(t->alg, algs[1]) != 0))
		return cvm_err_badparam(err, "alg: must be one of RSA-OAEP-256, A256KW");
	if (!t->wrapped)
		return cvm_err_badparam(err, "wrapped: required field is missing");
	int r = check_wrapped(t->alg, t->wrapped, err);
	if (r < 0)
		return r;
	if (!t->des)
		return cvm_err_badparam(err, "des: required field is missing");
	r = check_des(t->des, err);
	if (r < 0)
		return r;
	if (t->version != 1)
		return cvm_err_badparam(err, "version: must be 1");
	return 0;
}

static int parse_keyslots(json_t *obj, int *slot, struct cvm_err *err)
{
	json_t *arr = NULL;
	int r = cvm_json_arr(obj, "keyslots", NULL, true, &arr, err);
	if (r < 0)
		return r;
	if (json_array_size(arr) != 1)
		return cvm_err_badparam(err, "keyslots: expected exactly one keyslot, got %zu",
					json_array_size(arr));
	json_t *v = json_array_get(arr, 0);
	if (!json_is_string(v))
		return cvm_err_badparam(err, "keyslots[0]: expected a string, got %s",
					cvm_json_type_name(v));
	int64_t n;
	r = cvm_parse_i64(json_string_value(v), 0, 31, &n, "keyslots[0]", err);
	if (r < 0)
		return r;
	*slot = (int)n;
	return 0;
}

static int only_fields(json_t *obj, const char *const *names, size_t n, struct cvm_err *err);

static const char *const known_fields[] = { "type", "keyslots", "key_url", "alg",
					    "wrapped", "des", "version" };

static int parse_obj(json_t *obj, struct cvm_disk_hsm_token *t, struct cvm_err *err)
{
	int r = only_fields(obj, known_fields, CVM_ARRAY_SIZE(known_fields), err);
	if (r < 0)
		return r;
	static const char *const types[] = { CVM_DISK_TOKEN_HSM, NULL };
	const char *s;
	r = cvm_json_enum(obj, "type", NULL, true, types, &s, err);
	if (r < 0)
		return r;
	r = parse_keyslots(obj, &t->keyslot, err);
	if (r < 0)
		return r;
	const char *url, *alg, *wrapped, *des;
	if ((r = cvm_json_str(obj, "key_url", NULL, true, &url, NULL, err)) < 0 ||
	    (r = cvm_json_enum(obj, "alg", NULL, true, algs, &alg, err)) < 0 ||
	    (r = cvm_json_str(obj, "wrapped", NULL, true, &wrapped, NULL, err)) < 0 ||
	    (r = cvm_json_str(obj, "des", NULL, true, &des, NULL, err)) < 0)
		return r;
	int64_t version;
	r = cvm_json_int(obj, "version", NULL, true, 1, 1, &version, NULL, err);
	if (r < 0)
		return r;
	t->version = (int)version;
	t->key_url = strdup(url);
	t->alg = strdup(alg);
	t->wrapped = strdup(wrapped);
	t->des = strdup(des);
	if (!t->key_url || !t->alg || !t->wrapped || !t->des)
		return cvm_err_nomem(err);
	return check_fields(t, err);
}

int cvm_disk_hsm_token_parse(const uint8_t *buf, size_t len, struct cvm_disk_hsm_token *out,
			     struct cvm_err *err)
{
	memset(out, 0, sizeof(*out));
	/* LUKS2 limits the whole JSON area to < 4 MiB; one token is tiny. */
	if (len > 16384)
		return cvm_err_set(err, E2BIG, "BadParameter", TOKEN_CTX ": larger than 16384 bytes");
	_cleanup_json_ json_t *obj = NULL;
	int r = cvm_json_parse(buf, len, false, &obj, err);
	if (r >= 0)
		r = parse_obj(obj, out, err);
	if (r < 0) {
		cvm_disk_hsm_token_clear(out);
		return cvm_err_prefix(err, TOKEN_CTX);
	}
	return 0;
}

int cvm_disk_hsm_token_json(const struct cvm_disk_hsm_token *t, char **json, struct cvm_err *err)
{
	*json = NULL;
	int r = check_fields(t, err);
	if (r < 0)
		return cvm_err_prefix(err, TOKEN_CTX);
	char slot[8];
	snprintf(slot, sizeof(slot), "%d", t->keyslot);
	_cleanup_json_ json_t *obj = json_pack("{s:s, s:[s], s:s, s:s, s:s, s:s, s:i}",
					       "type", CVM_DISK_TOKEN_HSM, "keyslots", slot,
					       "key_url", t->key_url, "alg", t->alg,
					       "wrapped", t->wrapped, "des", t->des,
					       "version", t->version);
	if (!obj)
		return cvm_err_nomem(err);
	*json = cvm_json_dump(obj);
	return *json ? 0 : cvm_err_nomem(err);
}

/* ---- the progress token ------------------------------------------------------------------- */

int cvm_disk_progress_json(const struct cvm_disk_progress *p, char **out, struct cvm_err *err)
{
	/* 64-bit values as decimal strings, as LUKS2 itself stores offsets and sizes */
	*out = cvm_asprintf("{\"type\":\"" CVM_DISK_TOKEN_PROGRESS "\",\"keyslots\":[],"
			    "\"done\":\"%llu\",\"total\":\"%llu\",\"source_size\":\"%llu\","
			    "\"source_mtime_ns\":\"%llu\",\"chunk\":\"%llu\",\"sector_size\":%u}",
			    (unsigned long long)p->done, (unsigned long long)p->total,
			    (unsigned long long)p->source_size,
			    (unsigned long long)p->source_mtime_ns, (unsigned long long)p->chunk,
			    p->sector_size);
	return *out ? 0 : cvm_err_nomem(err);
}

static int get_u64_str(json_t *obj, const char *field, uint64_t *out, struct cvm_err *err)
{
	const char *s;
	int r = cvm_json_str(obj, field, NULL, true, &s, NULL, err);
	if (r < 0)
		return r;
	int64_t v;
	r = cvm_parse_i64(s, 0, INT64_MAX, &v, field, err);
	if (r < 0)
		return r;
	*out = (uint64_t)v;
	return 0;
}

static const char *const progress_fields[] = { "type", "keyslots", "done", "total",
					       "source_size", "source_mtime_ns", "chunk",
					       "sector_size" };

static int only_fields(json_t *obj, const char *const *names, size_t n, struct cvm_err *err)
{
	const char *key;
	json_t *val;
	json_object_foreach(obj, key, val) {
		bool known = false;
		for (size_t i = 0; i < n; i++)
			known = known || strcmp(key, names[i]) == 0;
		if (!known) {
			/* the name may be arbitrary bytes; quote it lossily and briefly */
			json_t *q = cvm_json_string_lossy(key);
			int r = cvm_err_badparam(err, "%.64s: unknown field",
						 q ? json_string_value(q) : "?");
			json_decref(q);
			return r;
		}
	}
	return 0;
}

static int progress_obj(json_t *obj, struct cvm_disk_progress *p, struct cvm_err *err)
{
	static const char *const types[] = { CVM_DISK_TOKEN_PROGRESS, NULL };
	const char *type;
	json_t *slots;
	int64_t ss = 0;
	int r;
	if ((r = only_fields(obj, progress_fields, CVM_ARRAY_SIZE(progress_fields), err)) < 0 ||
	    (r = cvm_json_enum(obj, "type", NULL, true, types, &type, err)) < 0 ||
	    (r = cvm_json_arr(obj, "keyslots", NULL, true, &slots, err)) < 0)
		return r;
	if (json_array_size(slots) != 0)
		return cvm_err_badparam(err, "keyslots: must be empty");
	if ((r = get_u64_str(obj, "done", &p->done, err)) < 0 ||
	    (r = get_u64_str(obj, "total", &p->total, err)) < 0 ||
	    (r = get_u64_str(obj, "source_size", &p->source_size, err)) < 0 ||
	    (r = get_u64_str(obj, "source_mtime_ns", &p->source_mtime_ns, err)) < 0 ||
	    (r = get_u64_str(obj, "chunk", &p->chunk, err)) < 0 ||
	    (r = cvm_json_int(obj, "sector_size", NULL, true, 512, 4096, &ss, NULL, err)) < 0)
		return r;
	if (ss != 512 && ss != 4096)
		return cvm_err_badparam(err, "sector_size: must be 512 or 4096");
	p->sector_size = (uint32_t)ss;
	if (p->chunk == 0 || p->chunk % 4096 || p->chunk > (1u << 30))
		return cvm_err_badparam(err, "chunk: must be a multiple of 4096 up to 1 GiB");
	if (p->total % p->sector_size)
		return cvm_err_badparam(err, "total: not a multiple of sector_size");
	if (p->done > p->total || (p->done % p->chunk && p->done != p->total))
		return cvm_err_badparam(err, "done: must be a chunk boundary not beyond total");
	return 0;
}

int cvm_disk_progress_parse(const uint8_t *buf, size_t len, struct cvm_disk_progress *p,
			    struct cvm_err *err)
{
	memset(p, 0, sizeof(*p));
	if (len > 16384)
		return cvm_err_set(err, E2BIG, "BadParameter", PROGRESS_CTX ": larger than 16384 bytes");
	_cleanup_json_ json_t *obj = NULL;
	int r = cvm_json_parse(buf, len, false, &obj, err);
	if (r >= 0)
		r = progress_obj(obj, p, err);
	if (r < 0)
		return cvm_err_prefix(err, PROGRESS_CTX);
	return 0;
}
