/* SPDX-License-Identifier: Apache-2.0 */
/* cvm-guest configuration from the kernel command line, and TEE backend detection. */
#include <opencvm/guest.h>

#include <string.h>
#include <unistd.h>

static const char *const tee_names[] = { "auto", "sev-snp", "tdx", "vtpm", "emulator", NULL };

const char *cvm_guest_tee_name(enum cvm_guest_tee t)
{
	return (size_t)t < CVM_ARRAY_SIZE(tee_names) - 1 ? tee_names[t] : "unknown";
}

int cvm_guest_tee_parse(const char *s, enum cvm_guest_tee *out, struct cvm_err *err)
{
	for (size_t i = 0; s && tee_names[i]; i++) {
		if (strcmp(s, tee_names[i]) == 0) {
			*out = (enum cvm_guest_tee)i;
			return 0;
		}
	}
	return cvm_err_badparam(err, "cvm.tee: expected auto, sev-snp, tdx, vtpm or emulator, got "
				"'%s'", s ? s : "");
}

void cvm_guest_config_clear(struct cvm_guest_config *c)
{
	free(c->attest_url);
	free(c->orchestrator_url);
	free(c->vm);
	free(c->disk);
	free(c->ca_file);
	*c = (struct cvm_guest_config){ 0 };
}

static int set_once(char **slot, const char *key, const char *v, size_t vl, struct cvm_err *err)
{
	if (*slot)
		return cvm_err_badparam(err, "%s: given twice on the kernel command line", key);
	if (vl == 0 || vl > 1024)
		return cvm_err_badparam(err, "%s: expected 1..1024 characters", key);
	*slot = strndup(v, vl);
	return *slot ? 0 : cvm_err_nomem(err);
}

static int parse_word(const char *w, size_t wl, struct cvm_guest_config *c, bool *tee_seen,
		      struct cvm_err *err)
{
	const char *eq = memchr(w, '=', wl);
	size_t kl = eq ? (size_t)(eq - w) : wl;
	const char *v = eq ? eq + 1 : "";
	size_t vl = eq ? wl - kl - 1 : 0;
	char key[32];
	if (kl >= sizeof(key))
		return cvm_err_badparam(err, "%.*s: unknown cvm.* option", (int)(kl > 64 ? 64 : kl), w);
	memcpy(key, w, kl);
	key[kl] = 0;
	if (strcmp(key, "cvm.tee") == 0) {
		if (*tee_seen)
			return cvm_err_badparam(err, "cvm.tee: given twice on the kernel command line");
		*tee_seen = true;
		char tv[16];
		if (vl >= sizeof(tv))
			return cvm_err_badparam(err, "cvm.tee: value too long");
		memcpy(tv, v, vl);
		tv[vl] = 0;
		return cvm_guest_tee_parse(tv, &c->tee, err);
	}
	static const struct {
		const char *key;
		size_t off;
	} strs[] = {
		{ "cvm.attest", offsetof(struct cvm_guest_config, attest_url) },
		{ "cvm.orchestrator", offsetof(struct cvm_guest_config, orchestrator_url) },
		{ "cvm.vm", offsetof(struct cvm_guest_config, vm) },
		{ "cvm.disk", offsetof(struct cvm_guest_config, disk) },
		{ "cvm.ca", offsetof(struct cvm_guest_config, ca_file) },
	};
	for (size_t i = 0; i < CVM_ARRAY_SIZE(strs); i++)
		if (strcmp(key, strs[i].key) == 0)
			return set_once((char **)((char *)c + strs[i].off), key, v, vl, err);
	return cvm_err_badparam(err, "%s: unknown cvm.* option", key);
}

int cvm_guest_cmdline_parse(const char *cmdline, size_t len, struct cvm_guest_config *out,
			    struct cvm_err *err)
{
	*out = (struct cvm_guest_config){ 0 };
	bool tee_seen = false;
	size_t i = 0;
	int r = 0;
	while (r == 0 && i < len) {
		while (i < len && (cmdline[i] == ' ' || cmdline[i] == '\n' || cmdline[i] == '\t'))
			i++;
		size_t s = i;
		while (i < len && cmdline[i] != ' ' && cmdline[i] != '\n' && cmdline[i] != '\t') {
			if (cmdline[i] == 0 || cmdline[i] == '"')
				r = cvm_err_badparam(err, "kernel command line: quotes and NUL bytes "
						     "are not supported");
			i++;
		}
		if (r == 0 && i > s && cvm_str_startswith(cmdline + s, "cvm.") && i - s > 4)
			r = parse_word(cmdline + s, i - s, out, &tee_seen, err);
	}
	if (r == 0 && !out->attest_url != !out->orchestrator_url)
		r = cvm_err_badparam(err, "cvm.attest, cvm.orchestrator: give both (HTTPS) or "
				     "neither (host channel)");
	static const struct {
		const char *key;
		size_t off;
	} req[] = {
		{ "cvm.vm", offsetof(struct cvm_guest_config, vm) },
		{ "cvm.disk", offsetof(struct cvm_guest_config, disk) },
	};
	for (size_t k = 0; r == 0 && k < CVM_ARRAY_SIZE(req); k++)
		if (!*(char **)((char *)out + req[k].off))
			r = cvm_err_badparam(err, "%s: required on the kernel command line",
					     req[k].key);
	if (r < 0)
		cvm_guest_config_clear(out);
	return r;
}

void cvm_guest_env_default(struct cvm_guest_env *e)
{
	*e = (struct cvm_guest_env){
		.sev_dev = "/dev/sev-guest",
		.tdx_dev = "/dev/tdx_guest",
		.emu_port = "/dev/virtio-ports/org.opencvm.tee.0",
		.tpm_dev = "/dev/tpmrm0",
		.tpm2_nvread = "tpm2_nvread",
	};
}

static bool present(enum cvm_guest_tee t, const struct cvm_guest_env *e)
{
	switch (t) {
	case CVM_GUEST_TEE_SEV_GUEST:
		return access(e->sev_dev, R_OK | W_OK) == 0;
	case CVM_GUEST_TEE_TDX:
		return access(e->tdx_dev, R_OK | W_OK) == 0;
	case CVM_GUEST_TEE_EMULATOR:
		return access(e->emu_port, R_OK | W_OK) == 0;
	case CVM_GUEST_TEE_VTPM_HCL:
		return access(e->tpm_dev, R_OK | W_OK) == 0;
	default:
		return false;
	}
}

int cvm_guest_tee_detect(const struct cvm_guest_env *e, enum cvm_guest_tee forced,
			 enum cvm_guest_tee *out, struct cvm_err *err)
{
	if (forced != CVM_GUEST_TEE_AUTO) {
		if (!present(forced, e))
			return cvm_err_set(err, ENODEV, "TeeNotFound",
					   "cvm.tee=%s: the backend's device is not present",
					   cvm_guest_tee_name(forced));
		*out = forced;
		return 0;
	}
	static const enum cvm_guest_tee order[] = { CVM_GUEST_TEE_SEV_GUEST, CVM_GUEST_TEE_TDX,
						    CVM_GUEST_TEE_EMULATOR, CVM_GUEST_TEE_VTPM_HCL };
	for (size_t i = 0; i < CVM_ARRAY_SIZE(order); i++) {
		if (present(order[i], e)) {
			*out = order[i];
			return 0;
		}
	}
	return cvm_err_set(err, ENODEV, "TeeNotFound",
			   "no TEE: none of %s, %s, %s, %s is present", e->sev_dev, e->tdx_dev,
			   e->emu_port, e->tpm_dev);
}
