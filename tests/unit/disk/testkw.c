/* SPDX-License-Identifier: Apache-2.0 */
#include "testkw.h"

#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/rsa.h>
#include <stdio.h>
#include <string.h>

/* ".../keys/<name>[/<version>]" -> name, version ("" when absent) */
static int split_url(const char *url, char *name, size_t nsz, char *ver, size_t vsz)
{
	const char *k = strstr(url, "/keys/");
	if (!k)
		return -1;
	k += 6;
	const char *slash = strchr(k, '/');
	size_t nlen = slash ? (size_t)(slash - k) : strlen(k);
	if (nlen == 0 || nlen >= nsz)
		return -1;
	memcpy(name, k, nlen);
	name[nlen] = '\0';
	snprintf(ver, vsz, "%s", slash ? slash + 1 : "");
	return 0;
}

static char *key_path(const char *dir, const char *name, const char *ver, const char *ext)
{
	return cvm_asprintf("%s/%s-%s.%s", dir, name, ver, ext);
}

static int latest(const char *dir, const char *name, char *ver, size_t vsz)
{
	_cleanup_free_ char *p = cvm_asprintf("%s/%s.latest", dir, name);
	FILE *f = p ? fopen(p, "r") : NULL;
	if (!f)
		return -1;
	int ok = fgets(ver, (int)vsz, f) != NULL;
	fclose(f);
	ver[strcspn(ver, "\n")] = '\0';
	return ok ? 0 : -1;
}

static EVP_PKEY *load_rsa(const char *path)
{
	FILE *f = fopen(path, "r");
	if (!f)
		return NULL;
	EVP_PKEY *k = PEM_read_PrivateKey(f, NULL, NULL, NULL);
	fclose(f);
	return k;
}

static int load_kek(const char *path, uint8_t kek[32])
{
	FILE *f = fopen(path, "rb");
	if (!f)
		return -1;
	size_t n = fread(kek, 1, 32, f);
	fclose(f);
	return n == 32 ? 0 : -1;
}

static int rsa_oaep(EVP_PKEY *k, bool enc, const uint8_t *in, size_t inlen, uint8_t *out,
		    size_t *outlen)
{
	EVP_PKEY_CTX *c = EVP_PKEY_CTX_new(k, NULL);
	int ok = c && (enc ? EVP_PKEY_encrypt_init(c) : EVP_PKEY_decrypt_init(c)) > 0 &&
		 EVP_PKEY_CTX_set_rsa_padding(c, RSA_PKCS1_OAEP_PADDING) > 0 &&
		 EVP_PKEY_CTX_set_rsa_oaep_md(c, EVP_sha256()) > 0 &&
		 EVP_PKEY_CTX_set_rsa_mgf1_md(c, EVP_sha256()) > 0 &&
		 (enc ? EVP_PKEY_encrypt(c, out, outlen, in, inlen)
		      : EVP_PKEY_decrypt(c, out, outlen, in, inlen)) > 0;
	EVP_PKEY_CTX_free(c);
	return ok ? 0 : -1;
}

static int aes_kw(const uint8_t kek[32], bool enc, const uint8_t *in, size_t inlen, uint8_t *out,
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

static int tw_wrap(void *ctx, const char *key_url, const char *alg, const struct cvm_secret *in,
		   char **wrapped, char **kid_used, struct cvm_err *err)
{
	struct testkw *t = ctx;
	char name[128], ver[80];
	if (split_url(key_url, name, sizeof(name), ver, sizeof(ver)) < 0)
		return cvm_err_badparam(err, "kid: malformed");
	if (!ver[0] && latest(t->dir, name, ver, sizeof(ver)) < 0)
		return cvm_err_set(err, ENOENT, "KeyNotFound", "key %s not found", name);
	bool rsa = strcmp(alg, "RSA-OAEP-256") == 0;
	_cleanup_free_ char *p = key_path(t->dir, name, ver, rsa ? "pem" : "kek");
	uint8_t out[512];
	size_t outlen = sizeof(out);
	if (rsa) {
		EVP_PKEY *k = load_rsa(p);
		if (!k)
			return cvm_err_set(err, ENOENT, "KeyNotFound", "key %s/%s not found", name, ver);
		int r = rsa_oaep(k, true, in->data, in->len, out, &outlen);
		EVP_PKEY_free(k);
		if (r < 0)
			return cvm_err_internal(err, "RSA-OAEP encrypt failed");
	} else {
		uint8_t kek[32];
		if (load_kek(p, kek) < 0)
			return cvm_err_set(err, ENOENT, "KeyNotFound", "key %s/%s not found", name, ver);
		int r = aes_kw(kek, true, in->data, in->len, out, &outlen);
		OPENSSL_cleanse(kek, sizeof(kek));
		if (r < 0)
			return cvm_err_internal(err, "A256KW failed");
	}
	*wrapped = cvm_b64url_encode(out, outlen);
	size_t ulen = strlen(key_url);
	if (key_url[ulen - 1] == '/')
		ulen--;
	/* the kid always names the version used */
	*kid_used = strchr(strstr(key_url, "/keys/") + 6, '/') && key_url[strlen(key_url) - 1] != '/'
			    ? cvm_strdup(key_url)
			    : cvm_asprintf("%.*s/%s", (int)ulen, key_url, ver);
	return *wrapped && *kid_used ? 0 : cvm_err_nomem(err);
}

static int tw_unwrap(void *ctx, const char *kid, const char *alg, const char *wrapped,
		     struct cvm_secret **out, struct cvm_err *err)
{
	struct testkw *t = ctx;
	t->unwrap_calls++;
	char name[128], ver[80];
	if (split_url(kid, name, sizeof(name), ver, sizeof(ver)) < 0 || !ver[0])
		return cvm_err_badparam(err, "kid: malformed");
	_cleanup_free_ uint8_t *raw = NULL;
	size_t rawlen = 0;
	int r = cvm_b64url_decode(wrapped, strlen(wrapped), &raw, &rawlen, "wrapped", err);
	if (r < 0)
		return r;
	bool rsa = strcmp(alg, "RSA-OAEP-256") == 0;
	_cleanup_free_ char *p = key_path(t->dir, name, ver, rsa ? "pem" : "kek");
	uint8_t buf[512];
	size_t len = sizeof(buf);
	if (rsa) {
		EVP_PKEY *k = load_rsa(p);
		if (!k)
			return cvm_err_set(err, ENOENT, "KeyNotFound", "key %s/%s not found", name, ver);
		r = rsa_oaep(k, false, raw, rawlen, buf, &len);
		EVP_PKEY_free(k);
	} else {
		uint8_t kek[32];
		if (load_kek(p, kek) < 0)
			return cvm_err_set(err, ENOENT, "KeyNotFound", "key %s/%s not found", name, ver);
		r = aes_kw(kek, false, raw, rawlen, buf, &len);
		OPENSSL_cleanse(kek, sizeof(kek));
	}
	if (r < 0)
		return cvm_err_set(err, EBADMSG, "BadParameter", "unwrap failed (wrong key?)");
	*out = cvm_secret_from(buf, len);
	OPENSSL_cleanse(buf, sizeof(buf));
	return *out ? 0 : cvm_err_nomem(err);
}

void testkw_init(struct testkw *t, const char *dir, struct cvm_disk_keywrap *kw)
{
	t->dir = dir;
	t->unwrap_calls = 0;
	kw->wrap = tw_wrap;
	kw->unwrap = tw_unwrap;
	kw->ctx = t;
}

int testkw_make_key(const char *dir, const char *name, const char *version, const char *alg)
{
	bool rsa = strcmp(alg, "RSA-OAEP-256") == 0;
	_cleanup_free_ char *p = key_path(dir, name, version, rsa ? "pem" : "kek");
	_cleanup_free_ char *lp = cvm_asprintf("%s/%s.latest", dir, name);
	FILE *f = p ? fopen(p, "w") : NULL;
	if (!f)
		return -1;
	int ok;
	if (rsa) {
		EVP_PKEY *k = EVP_RSA_gen(2048);
		ok = k && PEM_write_PrivateKey(f, k, NULL, NULL, 0, NULL, NULL);
		EVP_PKEY_free(k);
	} else {
		uint8_t kek[32];
		ok = cvm_random(kek, sizeof(kek), NULL) == 0 && fwrite(kek, 1, 32, f) == 32;
	}
	ok = (fclose(f) == 0) && ok;
	FILE *l = lp ? fopen(lp, "w") : NULL;
	ok = l && fprintf(l, "%s\n", version) > 0 && ok;
	if (l)
		ok = (fclose(l) == 0) && ok;
	return ok ? 0 : -1;
}
