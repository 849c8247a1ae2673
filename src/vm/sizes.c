/* SPDX-License-Identifier: Apache-2.0 */
/* The VM size catalogue: a data file (sizes.json) so sizes change without a rebuild. */
#include <opencvm/json.h>
#include <opencvm/vm.h>

#include <strings.h>
#include <string.h>
#include <unistd.h>

#define SIZES_FILE_MAX (1024 * 1024)
#define SIZES_MAX 4096

static const char *const sec_names[] = { "Standard", "TrustedLaunch", "ConfidentialVM", NULL };
static const char *const tee_names[] = { "none", "sev-snp", "tdx", "emulated", NULL };

const char *cvm_vm_security_name(enum cvm_vm_security s)
{
	return (size_t)s < CVM_ARRAY_SIZE(sec_names) - 1 ? sec_names[s] : "unknown";
}

int cvm_vm_security_parse(const char *s, enum cvm_vm_security *out, struct cvm_err *err)
{
	for (size_t i = 0; s && sec_names[i]; i++) {
		if (strcasecmp(s, sec_names[i]) == 0) {
			*out = (enum cvm_vm_security)i;
			return 0;
		}
	}
	return cvm_err_badparam(err, "securityType: expected one of Standard, TrustedLaunch, "
				"ConfidentialVM, got '%s'", s ? s : "(null)");
}

const char *cvm_vm_tee_name(enum cvm_vm_tee t)
{
	return (size_t)t < CVM_ARRAY_SIZE(tee_names) - 1 ? tee_names[t] : "unknown";
}

int cvm_vm_tee_parse(const char *s, enum cvm_vm_tee *out, struct cvm_err *err)
{
	for (size_t i = 0; s && tee_names[i]; i++) {
		if (strcasecmp(s, tee_names[i]) == 0) {
			*out = (enum cvm_vm_tee)i;
			return 0;
		}
	}
	return cvm_err_badparam(err, "tee: expected one of none, sev-snp, tdx, emulated, got '%s'",
				s ? s : "(null)");
}

void cvm_vm_sizes_clear(struct cvm_vm_sizes *s)
{
	free(s->v);
	s->v = NULL;
	s->n = 0;
}

static int copy_name(char *dst, size_t cap, const char *src, const char *path,
		     struct cvm_err *err)
{
	size_t l = strlen(src);
	if (l == 0 || l >= cap)
		return cvm_err_badparam(err, "%s: expected 1..%zu characters", path, cap - 1);
	for (size_t i = 0; i < l; i++) {
		char c = src[i];
		if (!((c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') ||
		      c == '_' || c == '-'))
			return cvm_err_badparam(err, "%s: only letters, digits, '_' and '-' are "
						"allowed", path);
	}
	memcpy(dst, src, l + 1);
	return 0;
}

static int parse_entry(json_t *e, size_t i, struct cvm_vm_size *out, struct cvm_err *err)
{
	char p[64];
	snprintf(p, sizeof(p), "sizes[%zu]", i);
	if (!json_is_object(e))
		return cvm_err_badparam(err, "%s: expected an object", p);
	static const char *const known[] = { "name", "family", "vcpus", "memory_gib", "gpus",
					     "temp_disk", "tee", NULL };
	const char *k;
	json_t *v;
	json_object_foreach(e, k, v) {
		bool ok = false;
		for (size_t j = 0; known[j] && !ok; j++)
			ok = strcmp(k, known[j]) == 0;
		if (!ok)
			return cvm_err_badparam(err, "%s.%s: unknown member", p, k);
	}
	const char *name, *family, *tee;
	int64_t vcpus, mem, gpus = 0;
	bool temp = false;
	char f[96];
	int r;
#define PATH(m) (snprintf(f, sizeof(f), "%s.%s", p, m), f)
	if ((r = cvm_json_str(e, "name", PATH("name"), true, &name, NULL, err)) < 0 ||
	    (r = copy_name(out->name, sizeof(out->name), name, f, err)) < 0 ||
	    (r = cvm_json_str(e, "family", PATH("family"), true, &family, NULL, err)) < 0 ||
	    (r = copy_name(out->family, sizeof(out->family), family, f, err)) < 0 ||
	    (r = cvm_json_int(e, "vcpus", PATH("vcpus"), true, 1, 1024, &vcpus, NULL, err)) < 0 ||
	    (r = cvm_json_int(e, "memory_gib", PATH("memory_gib"), true, 1, 16384, &mem, NULL,
			      err)) < 0 ||
	    (r = cvm_json_int(e, "gpus", PATH("gpus"), false, 0, 16, &gpus, NULL, err)) < 0 ||
	    (r = cvm_json_bool(e, "temp_disk", PATH("temp_disk"), false, &temp, NULL, err)) < 0 ||
	    (r = cvm_json_str(e, "tee", PATH("tee"), true, &tee, NULL, err)) < 0)
		return r;
#undef PATH
	enum cvm_vm_tee t;
	if ((r = cvm_vm_tee_parse(tee, &t, err)) < 0)
		return cvm_err_prefix(err, "%s", p);
	if (t == CVM_VM_TEE_EMULATED)
		return cvm_err_badparam(err, "%s.tee: a size names hardware (sev-snp, tdx or none); "
					"emulation is a property of the VM", p);
	out->vcpus = (int)vcpus;
	out->memory_mib = mem * 1024;
	out->gpus = (int)gpus;
	out->temp_disk = temp;
	out->tee = t;
	return 0;
}

int cvm_vm_sizes_parse(const uint8_t *buf, size_t len, struct cvm_vm_sizes *out,
		       struct cvm_err *err)
{
	*out = (struct cvm_vm_sizes){ 0 };
	_cleanup_json_ json_t *root = NULL;
	int r = cvm_json_parse(buf, len, false, &root, err);
	if (r < 0)
		return cvm_err_prefix(err, "sizes");
	int64_t version;
	json_t *arr;
	if ((r = cvm_json_int(root, "version", "version", true, 1, 1, &version, NULL, err)) < 0 ||
	    (r = cvm_json_arr(root, "sizes", "sizes", true, &arr, err)) < 0)
		return r;
	if (json_object_size(root) != 2)
		return cvm_err_badparam(err, "sizes file: only members version and sizes are allowed");
	size_t n = json_array_size(arr);
	if (n == 0 || n > SIZES_MAX)
		return cvm_err_badparam(err, "sizes: expected 1..%d entries", SIZES_MAX);
	_cleanup_free_ struct cvm_vm_size *v = calloc(n, sizeof(*v));
	if (!v)
		return cvm_err_nomem(err);
	for (size_t i = 0; i < n; i++) {
		if ((r = parse_entry(json_array_get(arr, i), i, &v[i], err)) < 0)
			return r;
		for (size_t j = 0; j < i; j++)
			if (strcasecmp(v[j].name, v[i].name) == 0)
				return cvm_err_badparam(err, "sizes[%zu].name: duplicate size %s", i,
							v[i].name);
	}
	out->v = CVM_TAKE(v);
	out->n = n;
	return 0;
}

int cvm_vm_sizes_load(const char *path, struct cvm_vm_sizes *out, struct cvm_err *err)
{
	_cleanup_free_ uint8_t *buf = NULL;
	size_t len = 0;
	int r = cvm_file_read(path, SIZES_FILE_MAX, &buf, &len, err);
	if (r < 0)
		return r;
	if ((r = cvm_vm_sizes_parse(buf, len, out, err)) < 0)
		return cvm_err_prefix(err, "%s", path);
	return 0;
}

int cvm_vm_sizes_locate(const char *explicit_path, char **out, struct cvm_err *err)
{
	if (explicit_path) {
		*out = cvm_strdup(explicit_path);
		return *out ? 0 : cvm_err_nomem(err);
	}
	/* Installed first; the source copy lets binaries run straight from a build dir. */
	static const char *const candidates[] = { CVM_VM_SIZES_INSTALLED, CVM_VM_SIZES_SOURCE };
	for (size_t i = 0; i < CVM_ARRAY_SIZE(candidates); i++) {
		if (access(candidates[i], R_OK) == 0) {
			*out = cvm_strdup(candidates[i]);
			return *out ? 0 : cvm_err_nomem(err);
		}
	}
	return cvm_err_set(err, ENOENT, "NotFound", "sizes catalogue: neither %s nor %s exists",
			   CVM_VM_SIZES_INSTALLED, CVM_VM_SIZES_SOURCE);
}

const struct cvm_vm_size *cvm_vm_sizes_find(const struct cvm_vm_sizes *s, const char *name)
{
	for (size_t i = 0; name && i < s->n; i++)
		if (strcasecmp(s->v[i].name, name) == 0)
			return &s->v[i];
	return NULL;
}

/* The emulator produces SNP-shaped evidence, so an emulated VM runs on an SEV-SNP size. */
static bool size_fits(const struct cvm_vm_size *z, enum cvm_vm_security sec, enum cvm_vm_tee tee)
{
	if (sec != CVM_VM_SEC_CONFIDENTIAL)
		return z->tee == CVM_VM_TEE_NONE;
	if (z->tee == CVM_VM_TEE_NONE)
		return false;
	if (tee == CVM_VM_TEE_NONE)
		return true;
	if (tee == CVM_VM_TEE_EMULATED)
		return z->tee == CVM_VM_TEE_SEV_SNP;
	return z->tee == tee;
}

int cvm_vm_sizes_check(const struct cvm_vm_sizes *s, const char *size, enum cvm_vm_security sec,
		       enum cvm_vm_tee tee, struct cvm_err *err)
{
	const struct cvm_vm_size *z = cvm_vm_sizes_find(s, size);
	if (z && size_fits(z, sec, tee))
		return 0;
	/* The full catalogue would overflow cvm_err's message, so allowed sizes are listed per
	 * family as "Family (first..last)", in catalogue order. */
	_cleanup_buf_ struct cvm_buf allowed = { 0 };
	for (size_t i = 0; i < s->n; i++) {
		if (!size_fits(&s->v[i], sec, tee))
			continue;
		bool seen = false;
		for (size_t j = 0; j < i && !seen; j++)
			seen = size_fits(&s->v[j], sec, tee) &&
			       strcmp(s->v[j].family, s->v[i].family) == 0;
		if (seen)
			continue;
		const char *last = s->v[i].name;
		for (size_t j = i + 1; j < s->n; j++)
			if (size_fits(&s->v[j], sec, tee) && strcmp(s->v[j].family, s->v[i].family) == 0)
				last = s->v[j].name;
		if ((allowed.len && cvm_buf_append_str(&allowed, ", ") < 0) ||
		    (last == s->v[i].name
			     ? cvm_buf_printf(&allowed, "%s (%s)", s->v[i].family, last)
			     : cvm_buf_printf(&allowed, "%s (%s..%s)", s->v[i].family, s->v[i].name,
					      last)) < 0)
			return cvm_err_nomem(err);
	}
	const char *list = allowed.len ? cvm_buf_cstr(&allowed) : "(none)";
	if (!list)
		return cvm_err_nomem(err);
	/* The message is long with the full catalogue; cvm_err truncates at its buffer, so the
	 * reason comes first. */
	if (!z)
		return cvm_err_badparam(err, "size: unknown size '%s'; allowed for %s%s%s: %s", size,
					cvm_vm_security_name(sec),
					sec == CVM_VM_SEC_CONFIDENTIAL ? " with tee " : "",
					sec == CVM_VM_SEC_CONFIDENTIAL ? cvm_vm_tee_name(tee) : "",
					list);
	return cvm_err_badparam(err, "size: %s (tee %s) cannot host a %s VM%s%s; allowed: %s",
				z->name, cvm_vm_tee_name(z->tee), cvm_vm_security_name(sec),
				sec == CVM_VM_SEC_CONFIDENTIAL ? " with tee " : "",
				sec == CVM_VM_SEC_CONFIDENTIAL ? cvm_vm_tee_name(tee) : "", list);
}
