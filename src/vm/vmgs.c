/* SPDX-License-Identifier: Apache-2.0 */
/* VMGS: the vTPM state directory and the UEFI variable store, sealed at rest. The plaintext
 * exists only in a cvm_secret while packing/unpacking and in the swtpm state dir while the VM
 * runs (which the orchestrator keeps on a private tmpfs-backed runtime dir). */
#include <opencvm/crypto.h>
#include <opencvm/vm.h>

#include <dirent.h>
#include <fcntl.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#define VMGS_MAGIC "OCVMGS01"
#define VMGS_AAD_PREFIX "opencvm-vmgs-v1:"

static bool file_name_ok(const char *n, size_t len)
{
	if (len == 0 || len > 255 || (len == 1 && n[0] == '.') ||
	    (len == 2 && n[0] == '.' && n[1] == '.'))
		return false;
	for (size_t i = 0; i < len; i++) {
		char c = n[i];
		if (!((c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') ||
		      c == '.' || c == '_' || c == '-'))
			return false;
	}
	return true;
}

static uint32_t be32(const uint8_t *p)
{
	return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3];
}

int cvm_vmgs_parse(const uint8_t *buf, size_t len, cvm_vmgs_file_fn fn, void *ctx,
		   struct cvm_err *err)
{
	if (len < 12 || memcmp(buf, VMGS_MAGIC, 8) != 0)
		return cvm_err_set(err, EINVAL, "BadParameter", "vmgs: bad magic or truncated header");
	uint32_t count = be32(buf + 8);
	if (count > CVM_VMGS_MAX_FILES)
		return cvm_err_badparam(err, "vmgs: %u files, at most %d", count, CVM_VMGS_MAX_FILES);
	size_t off = 12;
	char names[CVM_VMGS_MAX_FILES][256];
	for (uint32_t i = 0; i < count; i++) {
		if (len - off < 2)
			return cvm_err_badparam(err, "vmgs: file %u: truncated name length", i);
		size_t nl = (size_t)buf[off] << 8 | buf[off + 1];
		off += 2;
		if (nl > len - off)
			return cvm_err_badparam(err, "vmgs: file %u: truncated name", i);
		if (!file_name_ok((const char *)buf + off, nl))
			return cvm_err_badparam(err, "vmgs: file %u: invalid name", i);
		memcpy(names[i], buf + off, nl);
		names[i][nl] = 0;
		off += nl;
		for (uint32_t j = 0; j < i; j++)
			if (strcmp(names[j], names[i]) == 0)
				return cvm_err_badparam(err, "vmgs: duplicate file %s", names[i]);
		if (len - off < 4)
			return cvm_err_badparam(err, "vmgs: file %s: truncated data length", names[i]);
		uint32_t dl = be32(buf + off);
		off += 4;
		if (dl > CVM_VMGS_MAX_FILE || dl > len - off)
			return cvm_err_badparam(err, "vmgs: file %s: data length %u exceeds the blob",
						names[i], dl);
		if (fn) {
			int r = fn(ctx, names[i], buf + off, dl, err);
			if (r < 0)
				return r;
		}
		off += dl;
	}
	if (off != len)
		return cvm_err_badparam(err, "vmgs: %zu trailing bytes", len - off);
	return 0;
}

/* ---- packing ------------------------------------------------------------------------------ */

static int put_file(struct cvm_buf *b, const char *name, const char *path, struct cvm_err *err)
{
	uint8_t *data = NULL;
	size_t dl = 0;
	int r = cvm_file_read(path, CVM_VMGS_MAX_FILE, &data, &dl, err);
	if (r < 0)
		return r;
	size_t nl = strlen(name);
	uint8_t hdr[2] = { (uint8_t)(nl >> 8), (uint8_t)nl };
	uint8_t dh[4] = { (uint8_t)(dl >> 24), (uint8_t)(dl >> 16), (uint8_t)(dl >> 8), (uint8_t)dl };
	if (cvm_buf_append(b, hdr, 2) < 0 || cvm_buf_append(b, name, nl) < 0 ||
	    cvm_buf_append(b, dh, 4) < 0 || cvm_buf_append(b, data, dl) < 0)
		r = cvm_err_nomem(err);
	cvm_free_secure(data, dl);
	return r;
}

static char *aad_for(const char *vm_name)
{
	return cvm_asprintf(VMGS_AAD_PREFIX "%s", vm_name);
}

int cvm_vmgs_seal(const char *state_dir, const char *vars_file, const char *vm_name,
		  const struct cvm_secret *key, const char *out_path, struct cvm_err *err)
{
	if (!cvm_vm_name_valid(vm_name))
		return cvm_err_badparam(err, "vmgs: vm name invalid");
	if (!key || key->len != 32)
		return cvm_err_badparam(err, "vmgs: key must be 32 bytes");
	DIR *d = opendir(state_dir);
	if (!d)
		return cvm_err_set(err, errno == ENOENT ? ENOENT : EIO, "InternalError",
				   "vmgs: cannot open %s: %s", state_dir, strerror(errno));
	struct cvm_buf plain = { 0 };
	uint8_t hdr[12] = VMGS_MAGIC;
	int r = cvm_buf_append(&plain, hdr, 12) < 0 ? cvm_err_nomem(err) : 0;
	uint32_t count = 0;
	struct dirent *e;
	while (r == 0 && (e = readdir(d))) {
		if (e->d_name[0] == '.')
			continue;
		_cleanup_free_ char *p = cvm_path_join(state_dir, e->d_name);
		struct stat st;
		if (!p) {
			r = cvm_err_nomem(err);
			break;
		}
		if (lstat(p, &st) < 0 || !S_ISREG(st.st_mode))
			continue; /* swtpm's lock file is regular; sockets and dirs are not state */
		if (strcmp(e->d_name, CVM_VMGS_VARS_NAME) == 0 ||
		    !file_name_ok(e->d_name, strlen(e->d_name))) {
			r = cvm_err_badparam(err, "vmgs: unexpected file %s in the state dir",
					     e->d_name);
			break;
		}
		if (++count >= CVM_VMGS_MAX_FILES) {
			r = cvm_err_badparam(err, "vmgs: too many files in %s", state_dir);
			break;
		}
		r = put_file(&plain, e->d_name, p, err);
	}
	closedir(d);
	if (r == 0 && vars_file) {
		count++;
		r = put_file(&plain, CVM_VMGS_VARS_NAME, vars_file, err);
	}
	if (r == 0) {
		plain.data[8] = (uint8_t)(count >> 24);
		plain.data[9] = (uint8_t)(count >> 16);
		plain.data[10] = (uint8_t)(count >> 8);
		plain.data[11] = (uint8_t)count;
	}
	_cleanup_free_ char *aad = aad_for(vm_name);
	struct cvm_buf sealed = { 0 };
	if (r == 0 && !aad)
		r = cvm_err_nomem(err);
	if (r == 0)
		r = cvm_seal(key, aad, strlen(aad), plain.data, plain.len, &sealed, err);
	cvm_buf_wipe(&plain);
	if (r == 0)
		r = cvm_file_write_atomic(out_path, sealed.data, sealed.len, 0600, err);
	cvm_buf_free(&sealed);
	return r;
}

struct unpack_ctx {
	const char *state_dir;
	const char *vars_file;
	bool dry; /* first pass validates the whole blob before anything is written */
};

static int unpack_fn(void *vctx, const char *name, const uint8_t *data, size_t len,
		     struct cvm_err *err)
{
	struct unpack_ctx *c = vctx;
	if (c->dry)
		return 0;
	if (strcmp(name, CVM_VMGS_VARS_NAME) == 0) {
		if (!c->vars_file)
			return 0;
		return cvm_file_write_atomic(c->vars_file, data, len, 0600, err);
	}
	_cleanup_free_ char *p = cvm_path_join(c->state_dir, name);
	if (!p)
		return cvm_err_nomem(err);
	return cvm_file_write_atomic(p, data, len, 0600, err);
}

int cvm_vmgs_unseal(const char *in_path, const char *vm_name, const struct cvm_secret *key,
		    const char *state_dir, const char *vars_file, struct cvm_err *err)
{
	if (!cvm_vm_name_valid(vm_name))
		return cvm_err_badparam(err, "vmgs: vm name invalid");
	if (!key || key->len != 32)
		return cvm_err_badparam(err, "vmgs: key must be 32 bytes");
	_cleanup_free_ uint8_t *blob = NULL;
	size_t bl = 0;
	int r = cvm_file_read(in_path, CVM_VMGS_MAX_FILES * (size_t)CVM_VMGS_MAX_FILE, &blob, &bl,
			      err);
	if (r < 0)
		return r;
	_cleanup_free_ char *aad = aad_for(vm_name);
	if (!aad)
		return cvm_err_nomem(err);
	_cleanup_secret_ struct cvm_secret *plain = NULL;
	if ((r = cvm_unseal(key, aad, strlen(aad), blob, bl, &plain, err)) < 0)
		return cvm_err_prefix(err, "vmgs %s", in_path);
	struct unpack_ctx c = { state_dir, vars_file, true };
	if ((r = cvm_vmgs_parse(plain->data, plain->len, unpack_fn, &c, err)) < 0)
		return r;
	if ((r = cvm_mkdir_p(state_dir, 0700, err)) < 0)
		return r;
	c.dry = false;
	return cvm_vmgs_parse(plain->data, plain->len, unpack_fn, &c, err);
}
