/* SPDX-License-Identifier: Apache-2.0 */
/* Shamir secret sharing over GF(2^8) with the AES polynomial x^8+x^4+x^3+x+1 (0x11b).
 * Arithmetic is branch-free and table-free so share values do not leak through timing. */
#include "crypto-internal.h"

#include <string.h>

static uint8_t gf_mul(uint8_t a, uint8_t b)
{
	uint8_t p = 0;
	for (int i = 0; i < 8; i++) {
		p ^= (uint8_t)(-(b & 1) & a);
		uint8_t hi = (uint8_t)-(a >> 7);
		a = (uint8_t)((a << 1) ^ (hi & 0x1b));
		b >>= 1;
	}
	return p;
}

/* a^254 = a^-1 for a != 0 (the multiplicative group has order 255). */
static uint8_t gf_inv(uint8_t a)
{
	uint8_t r = 1, base = a;
	for (int e = 254; e; e >>= 1) {
		if (e & 1)
			r = gf_mul(r, base);
		base = gf_mul(base, base);
	}
	return r;
}

int cvm_shamir_split(const struct cvm_secret *secret, unsigned m, unsigned n,
		     struct cvm_secret **shares, struct cvm_err *err)
{
	if (!secret || secret->len == 0)
		return cvm_err_badparam(err, "secret: must not be empty");
	if (m < 2 || m > n || n > 255)
		return cvm_err_badparam(err, "shares: need 2 <= threshold (%u) <= count (%u) <= 255",
					m, n);
	size_t len = secret->len;
	if (len > SIZE_MAX / m - 1)
		return cvm_err_badparam(err, "secret: too large");
	/* coef[j*(m-1) + k] is coefficient k+1 of the polynomial for byte j. */
	_cleanup_secret_ struct cvm_secret *coef = cvm_secret_new(len * (m - 1));
	if (!coef)
		return cvm_err_nomem(err);
	int r = cvm_random(coef->data, coef->len, err);
	if (r < 0)
		return r;
	for (unsigned i = 0; i < n; i++)
		shares[i] = NULL;
	for (unsigned i = 0; i < n; i++) {
		struct cvm_secret *s = cvm_secret_new(1 + len);
		if (!s) {
			for (unsigned k = 0; k < i; k++) {
				cvm_secret_free(shares[k]);
				shares[k] = NULL;
			}
			return cvm_err_nomem(err);
		}
		uint8_t x = (uint8_t)(i + 1);
		s->data[0] = x;
		for (size_t j = 0; j < len; j++) {
			const uint8_t *c = coef->data + j * (m - 1);
			uint8_t y = 0;
			/* Horner from the highest coefficient down to the secret byte. */
			for (unsigned k = m - 1; k > 0; k--)
				y = gf_mul(y, x) ^ c[k - 1];
			s->data[1 + j] = gf_mul(y, x) ^ secret->data[j];
		}
		shares[i] = s;
	}
	return 0;
}

int cvm_shamir_combine(struct cvm_secret *const *shares, unsigned count, struct cvm_secret **out,
		       struct cvm_err *err)
{
	if (count < 2 || count > 255)
		return cvm_err_badparam(err, "shares: need 2..255 shares, got %u", count);
	size_t slen = shares[0] ? shares[0]->len : 0;
	if (slen < 2)
		return cvm_err_badparam(err, "shares[0]: too short");
	bool seen[256] = { false };
	for (unsigned i = 0; i < count; i++) {
		if (!shares[i] || shares[i]->len != slen)
			return cvm_err_badparam(err, "shares[%u]: length differs from shares[0]", i);
		uint8_t x = shares[i]->data[0];
		if (x == 0)
			return cvm_err_badparam(err, "shares[%u]: x coordinate 0 is invalid", i);
		if (seen[x])
			return cvm_err_badparam(err, "shares[%u]: duplicate share (x = %u)", i, x);
		seen[x] = true;
	}
	_cleanup_secret_ struct cvm_secret *s = cvm_secret_new(slen - 1);
	if (!s)
		return cvm_err_nomem(err);
	for (unsigned i = 0; i < count; i++) {
		/* Lagrange basis at 0: prod_{j != i} x_j / (x_j - x_i); subtraction is xor. */
		uint8_t xi = shares[i]->data[0], num = 1, den = 1;
		for (unsigned j = 0; j < count; j++) {
			if (j == i)
				continue;
			uint8_t xj = shares[j]->data[0];
			num = gf_mul(num, xj);
			den = gf_mul(den, xj ^ xi);
		}
		uint8_t l = gf_mul(num, gf_inv(den));
		for (size_t b = 0; b + 1 < slen; b++)
			s->data[b] ^= gf_mul(l, shares[i]->data[1 + b]);
	}
	*out = CVM_TAKE(s);
	return 0;
}
