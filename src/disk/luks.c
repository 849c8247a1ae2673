/* SPDX-License-Identifier: Apache-2.0 */
/* libcryptsetup glue: format, tokens, keyslot checks, layout checks. libcryptsetup is the
 * reference implementation of LUKS2; everything it can write or validate, it does. */
#include "disk-internal.h"

#include <openssl/crypto.h>
#include <string.h>
#include <unistd.h>

static void log_cb(int level, const char *msg, void *usrptr)
{
	struct cvm_luks *l = usrptr;
	if (level == CRYPT_LOG_ERROR && l) {
		snprintf(l->last_error, sizeof(l->last_error), "%s", msg);
		/* libcryptsetup ends messages with a newline */
		size_t n = strlen(l->last_error);
		while (n && (l->last_error[n - 1] == '\n' || l->last_error[n - 1] == '.'))
			l->last_error[--n] = '\0';
	}
	/* Nothing is printed: errors reach the caller through cvm_err, the rest is noise for a
	 * library user. */
}

int cvm_luks_err(struct cvm_luks *l, int r, struct cvm_err *err, const char *what)
{
	int e = r < 0 ? -r : EIO;
	const char *code = e == EINVAL ? "BadParameter" : "InternalError";
	if (l && l->last_error[0])
		return cvm_err_set(err, e, code, "%s: %s", what, l->last_error);
	return cvm_err_set(err, e, code, "%s: %s", what, strerror(e));
}

static int luks_init(struct cvm_luks *l, const char *path, struct cvm_err *err)
{
	memset(l, 0, sizeof(*l));
	int r = crypt_init(&l->cd, path);
	if (r < 0) {
		l->cd = NULL;
		return cvm_luks_err(l, r, err, path);
	}
	crypt_set_log_callback(l->cd, log_cb, l);
	return 0;
}

int cvm_luks_open(const char *path, struct cvm_luks *l, struct cvm_err *err)
{
	/* say "not found" ourselves: libcryptsetup would print its own message to stderr */
	memset(l, 0, sizeof(*l));
	if (access(path, F_OK) < 0)
		return cvm_err_set(err, errno, errno == ENOENT ? "NotFound" : "InternalError",
				   "%s: %s", path, strerror(errno));
	int r = luks_init(l, path, err);
	if (r < 0)
		return r;
	r = crypt_load(l->cd, CRYPT_LUKS2, NULL);
	if (r < 0) {
		r = cvm_err_set(err, r == -ENOENT ? ENOENT : EINVAL, "BadParameter",
				"%s: not a valid LUKS2 image%s%s", path, l->last_error[0] ? ": " : "",
				l->last_error);
		cvm_luks_close(l);
		return r;
	}
	return 0;
}

void cvm_luks_close(struct cvm_luks *l)
{
	if (l->cd)
		crypt_free(l->cd);
	l->cd = NULL;
}

int cvm_luks_format(struct cvm_luks *l, const char *path, uint32_t sector_size,
		    const struct cvm_secret *secret, const struct cvm_secret *volume_key,
		    const struct cvm_disk_opts *opts, struct cvm_err *err)
{
	if (volume_key && volume_key->len != CVM_DISK_VOLUME_KEY_LEN)
		return cvm_err_badparam(err, "volume_key: must be %d bytes", CVM_DISK_VOLUME_KEY_LEN);
	int r = luks_init(l, path, err);
	if (r < 0)
		return r;
	/* The keyslot passphrase is 256 bits from the CSPRNG: brute force costs 2^256 whatever the
	 * KDF, so key stretching buys nothing. PBKDF2 at libcryptsetup's minimum iteration count
	 * keeps unlock instant and avoids Argon2's memory cost in small guests and in the key
	 * service's verification step. */
	struct crypt_pbkdf_type pbkdf = {
		.type = CRYPT_KDF_PBKDF2,
		.hash = "sha256",
		.iterations = 1000,
		.flags = CRYPT_PBKDF_NO_BENCHMARK,
	};
	char subsystem[32];
	snprintf(subsystem, sizeof(subsystem), "opencvm-%s",
		 cvm_disk_kind_name(opts ? opts->kind : CVM_DISK_KIND_OS));
	struct crypt_params_luks2 params = {
		.pbkdf = &pbkdf,
		.data_alignment = CVM_DISK_DATA_OFFSET / 512,
		.sector_size = sector_size,
		.label = opts ? opts->label : NULL,
		.subsystem = subsystem,
	};
	r = crypt_format(l->cd, CRYPT_LUKS2, "aes", "xts-plain64", NULL,
			 volume_key ? (const char *)volume_key->data : NULL,
			 CVM_DISK_VOLUME_KEY_LEN, &params);
	if (r < 0)
		goto fail;
	r = crypt_keyslot_add_by_volume_key(l->cd, 0, NULL, 0, (const char *)secret->data,
					    secret->len);
	if (r < 0)
		goto fail;
	return 0;
fail:
	r = cvm_luks_err(l, r, err, "LUKS2 format");
	cvm_luks_close(l);
	return r;
}

int cvm_luks_find_token(struct cvm_luks *l, const char *type, int *id, char **json,
			struct cvm_err *err)
{
	if (json)
		*json = NULL;
	/* LUKS2 allows 32 tokens */
	for (int i = 0; i < 32; i++) {
		const char *t = NULL;
		crypt_token_info st = crypt_token_status(l->cd, i, &t);
		if (st == CRYPT_TOKEN_INVALID || st == CRYPT_TOKEN_INACTIVE || !t ||
		    strcmp(t, type) != 0)
			continue;
		*id = i;
		if (json) {
			const char *j = NULL;
			int r = crypt_token_json_get(l->cd, i, &j);
			if (r < 0)
				return cvm_luks_err(l, r, err, type);
			if (!(*json = strdup(j)))
				return cvm_err_nomem(err);
		}
		return 0;
	}
	return cvm_err_set(err, ENOENT, "NotFound", "LUKS2 header: no %s token", type);
}

int cvm_luks_volume_key(struct cvm_luks *l, int keyslot, const struct cvm_secret *pass,
			struct cvm_secret **vk, struct cvm_err *err)
{
	*vk = NULL;
	int ks = crypt_get_volume_key_size(l->cd);
	if (ks != CVM_DISK_VOLUME_KEY_LEN)
		return cvm_err_set(err, ENOTSUP, "BadParameter",
				   "LUKS2 header: volume key size %d, expected %d", ks,
				   CVM_DISK_VOLUME_KEY_LEN);
	_cleanup_secret_ struct cvm_secret *k = cvm_secret_new(CVM_DISK_VOLUME_KEY_LEN);
	if (!k)
		return cvm_err_nomem(err);
	size_t klen = k->len;
	int r = crypt_volume_key_get(l->cd, keyslot, (char *)k->data, &klen,
				     (const char *)pass->data, pass->len);
	if (r == -EPERM || r == -ENOENT)
		return cvm_err_set(err, EPERM, "Forbidden",
				   "secret does not open keyslot %d of the LUKS2 header", keyslot);
	if (r < 0)
		return cvm_luks_err(l, r, err, "volume key");
	if (klen != CVM_DISK_VOLUME_KEY_LEN)
		return cvm_err_internal(err, "volume key: unexpected size %zu", klen);
	*vk = CVM_TAKE(k);
	return 0;
}

int cvm_luks_check_layout(struct cvm_luks *l, uint64_t file_size, uint64_t *data_offset,
			  uint64_t *data_size, uint32_t *sector_size, struct cvm_err *err)
{
	const char *cipher = crypt_get_cipher(l->cd), *mode = crypt_get_cipher_mode(l->cd);
	if (!cipher || !mode || strcmp(cipher, "aes") != 0 || strcmp(mode, "xts-plain64") != 0)
		return cvm_err_set(err, ENOTSUP, "BadParameter",
				   "LUKS2 header: cipher %s-%s, only aes-xts-plain64 is supported",
				   cipher ? cipher : "?", mode ? mode : "?");
	if (crypt_get_volume_key_size(l->cd) != CVM_DISK_VOLUME_KEY_LEN)
		return cvm_err_set(err, ENOTSUP, "BadParameter",
				   "LUKS2 header: only 512-bit AES-XTS keys are supported");
	if (crypt_get_iv_offset(l->cd) != 0)
		return cvm_err_set(err, ENOTSUP, "BadParameter",
				   "LUKS2 header: a non-zero IV offset is not supported");
	int ss = crypt_get_sector_size(l->cd);
	if (ss != 512 && ss != 4096)
		return cvm_err_set(err, ENOTSUP, "BadParameter",
				   "LUKS2 header: sector size %d, expected 512 or 4096", ss);
	uint64_t off = crypt_get_data_offset(l->cd) * 512;
	if (off == 0 || off >= file_size)
		return cvm_err_badparam(err,
					"image: data offset %llu is outside the file (size %llu): "
					"truncated image?",
					(unsigned long long)off, (unsigned long long)file_size);
	uint64_t size = file_size - off;
	/* The data segment spans to the end of the file (LUKS2 "dynamic" size, what luksFormat
	 * and our format write). */
	if (size % (uint64_t)ss)
		return cvm_err_badparam(err,
					"image: data area of %llu bytes is not a multiple of the "
					"sector size %d: truncated image?",
					(unsigned long long)size, ss);
	*data_offset = off;
	*data_size = size;
	*sector_size = (uint32_t)ss;
	return 0;
}
