/* SPDX-License-Identifier: Apache-2.0 */
#include <opencvm/util.h>

#include <string.h>

static const char b64_std[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
static const char b64_url[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";

static char *b64_encode(const uint8_t *in, size_t len, const char *alpha, bool pad)
{
	if (len > (SIZE_MAX - 4) / 4 * 3)
		return NULL;
	char *out = malloc((len + 2) / 3 * 4 + 1), *o = out;
	if (!out)
		return NULL;
	size_t i = 0;
	for (; i + 3 <= len; i += 3) {
		uint32_t v = (uint32_t)in[i] << 16 | (uint32_t)in[i + 1] << 8 | in[i + 2];
		*o++ = alpha[v >> 18 & 63];
		*o++ = alpha[v >> 12 & 63];
		*o++ = alpha[v >> 6 & 63];
		*o++ = alpha[v & 63];
	}
	if (len - i == 1) {
		uint32_t v = (uint32_t)in[i] << 16;
		*o++ = alpha[v >> 18 & 63];
		*o++ = alpha[v >> 12 & 63];
		if (pad) {
			*o++ = '=';
			*o++ = '=';
		}
	} else if (len - i == 2) {
		uint32_t v = (uint32_t)in[i] << 16 | (uint32_t)in[i + 1] << 8;
		*o++ = alpha[v >> 18 & 63];
		*o++ = alpha[v >> 12 & 63];
		*o++ = alpha[v >> 6 & 63];
		if (pad)
			*o++ = '=';
	}
	*o = 0;
	return out;
}

char *cvm_b64url_encode(const void *data, size_t len)
{
	return b64_encode(data, len, b64_url, false);
}

char *cvm_b64_encode(const void *data, size_t len)
{
	return b64_encode(data, len, b64_std, true);
}

static int b64_value(char c, bool url)
{
	if (c >= 'A' && c <= 'Z') return c - 'A';
	if (c >= 'a' && c <= 'z') return c - 'a' + 26;
	if (c >= '0' && c <= '9') return c - '0' + 52;
	if (url ? c == '-' : c == '+') return 62;
	if (url ? c == '_' : c == '/') return 63;
	return -1;
}

static int b64_decode(const char *s, size_t slen, uint8_t **out, size_t *outlen, bool url,
		      const char *what, struct cvm_err *err)
{
	uint8_t *o = malloc(slen / 4 * 3 + 3);
	if (!o)
		return cvm_err_nomem(err);
	size_t n = 0, pads = 0;
	uint32_t acc = 0;
	unsigned bits = 0, digits = 0;
	for (size_t i = 0; i < slen; i++) {
		char c = s[i];
		if (!url && (c == '\n' || c == '\r' || c == ' ' || c == '\t'))
			continue;
		if (c == '=') {
			pads++;
			continue;
		}
		int v = b64_value(c, url);
		if (v < 0 || pads) {
			free(o);
			return cvm_err_badparam(err, "%s: invalid %s character at offset %zu", what,
						url ? "base64url" : "base64", i);
		}
		acc = acc << 6 | (uint32_t)v;
		bits += 6;
		digits++;
		if (bits >= 8) {
			bits -= 8;
			o[n++] = (uint8_t)(acc >> bits);
		}
	}
	/* A single leftover digit cannot encode a byte; more than two '=' is malformed;
	 * padding, when present, must complete the last quantum. */
	if (digits % 4 == 1 || pads > 2 || (pads && (digits + pads) % 4 != 0)) {
		free(o);
		return cvm_err_badparam(err, "%s: truncated or badly padded %s", what,
					url ? "base64url" : "base64");
	}
	*out = o;
	*outlen = n;
	return 0;
}

int cvm_b64url_decode(const char *s, size_t slen, uint8_t **out, size_t *outlen,
		      const char *what, struct cvm_err *err)
{
	return b64_decode(s, slen, out, outlen, true, what, err);
}

int cvm_b64_decode(const char *s, size_t slen, uint8_t **out, size_t *outlen, const char *what,
		   struct cvm_err *err)
{
	return b64_decode(s, slen, out, outlen, false, what, err);
}

char *cvm_hex_encode(const void *data, size_t len)
{
	static const char digits[] = "0123456789abcdef";
	const uint8_t *in = data;
	if (len > (SIZE_MAX - 1) / 2)
		return NULL;
	char *out = malloc(len * 2 + 1);
	if (!out)
		return NULL;
	for (size_t i = 0; i < len; i++) {
		out[2 * i] = digits[in[i] >> 4];
		out[2 * i + 1] = digits[in[i] & 15];
	}
	out[len * 2] = 0;
	return out;
}

static int hex_value(char c)
{
	if (c >= '0' && c <= '9') return c - '0';
	if (c >= 'a' && c <= 'f') return c - 'a' + 10;
	if (c >= 'A' && c <= 'F') return c - 'A' + 10;
	return -1;
}

static int hex_decode_into(const char *s, size_t slen, uint8_t *out, const char *what,
			   struct cvm_err *err)
{
	for (size_t i = 0; i < slen; i += 2) {
		int hi = hex_value(s[i]), lo = hex_value(s[i + 1]);
		if (hi < 0 || lo < 0)
			return cvm_err_badparam(err, "%s: invalid hex digit at offset %zu", what,
						hi < 0 ? i : i + 1);
		out[i / 2] = (uint8_t)(hi << 4 | lo);
	}
	return 0;
}

int cvm_hex_decode(const char *s, size_t slen, uint8_t **out, size_t *outlen, const char *what,
		   struct cvm_err *err)
{
	if (slen % 2)
		return cvm_err_badparam(err, "%s: hex string has odd length %zu", what, slen);
	uint8_t *o = malloc(slen / 2 + 1);
	if (!o)
		return cvm_err_nomem(err);
	int r = hex_decode_into(s, slen, o, what, err);
	if (r < 0) {
		free(o);
		return r;
	}
	*out = o;
	*outlen = slen / 2;
	return 0;
}

int cvm_hex_decode_fixed(const char *s, uint8_t *out, size_t len, const char *what,
			 struct cvm_err *err)
{
	size_t slen = strlen(s);
	if (slen != 2 * len)
		return cvm_err_badparam(err, "%s: expected %zu hex digits, got %zu", what, 2 * len,
					slen);
	return hex_decode_into(s, slen, out, what, err);
}
