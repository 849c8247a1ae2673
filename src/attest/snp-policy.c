/* SPDX-License-Identifier: Apache-2.0 */
/* SEV-SNP appraisal policy: go-sev-guest's validate knobs, their JSON form, and the MAA claims
 * a verdict produces. */
#include <string.h>

#include "attest-internal.h"

void cvm_snp_policy_default(struct cvm_snp_policy *p)
{
	memset(p, 0, sizeof(*p));
	p->allow_migrate_ma = true;
	p->allow_smt = true;
	p->allow_cxl = true;
	p->allow_platform_smt = true;
	p->allow_platform_tsme = true;
	p->allow_platform_tio = true;
	p->vmpl = -1;
	p->permit_provisional_firmware = true;
	p->allow_vlek = true;
}

#define REFUSE(...) cvm_err_set(err, EPERM, "Forbidden", __VA_ARGS__)

static bool tcb_ge(const struct cvm_snp_tcb *have, const struct cvm_snp_tcb *min)
{
	return have->bl >= min->bl && have->tee >= min->tee && have->snp >= min->snp &&
	       have->ucode >= min->ucode && have->fmc >= min->fmc;
}

static bool in_list(const uint8_t *v, const uint8_t *list, size_t n, size_t sz)
{
	for (size_t i = 0; i < n; i++)
		if (memcmp(v, list + i * sz, sz) == 0)
			return true;
	return false;
}

static int check_guest_policy(const struct cvm_snp_report *r, const struct cvm_snp_policy *p,
			      struct cvm_err *err)
{
	uint64_t g = r->policy;
	unsigned major = (g >> 8) & 0xff, minor = g & 0xff;
	if (major < p->min_abi_major || (major == p->min_abi_major && minor < p->min_abi_minor))
		return REFUSE("snp.policy.abi: guest ABI %u.%u below the minimum %u.%u", major,
			      minor, p->min_abi_major, p->min_abi_minor);
	static const struct { uint64_t bit; size_t off; const char *name; } allow[] = {
		{ CVM_SNP_POLICY_DEBUG, offsetof(struct cvm_snp_policy, allow_debug), "debug" },
		{ CVM_SNP_POLICY_MIGRATE_MA, offsetof(struct cvm_snp_policy, allow_migrate_ma),
		  "migrate_ma" },
		{ CVM_SNP_POLICY_SMT, offsetof(struct cvm_snp_policy, allow_smt), "smt" },
		{ CVM_SNP_POLICY_CXL_ALLOW, offsetof(struct cvm_snp_policy, allow_cxl), "cxl_allow" },
	};
	for (size_t i = 0; i < CVM_ARRAY_SIZE(allow); i++)
		if ((g & allow[i].bit) && !*(const bool *)((const char *)p + allow[i].off))
			return REFUSE("snp.policy.%s: guest policy allows %s, the appraisal policy does not",
				      allow[i].name, allow[i].name);
	static const struct { uint64_t bit; size_t off; const char *name; } req[] = {
		{ CVM_SNP_POLICY_SINGLE_SOCKET, offsetof(struct cvm_snp_policy, require_single_socket),
		  "single_socket" },
		{ CVM_SNP_POLICY_MEM_AES_256_XTS,
		  offsetof(struct cvm_snp_policy, require_mem_aes_256_xts), "mem_aes_256_xts" },
		{ CVM_SNP_POLICY_RAPL_DIS, offsetof(struct cvm_snp_policy, require_rapl_dis),
		  "rapl_dis" },
		{ CVM_SNP_POLICY_CIPHERTEXT_HIDING,
		  offsetof(struct cvm_snp_policy, require_ciphertext_hiding), "ciphertext_hiding" },
		{ CVM_SNP_POLICY_PAGE_SWAP_DISABLE,
		  offsetof(struct cvm_snp_policy, require_page_swap_disable), "page_swap_disable" },
	};
	for (size_t i = 0; i < CVM_ARRAY_SIZE(req); i++)
		if (!(g & req[i].bit) && *(const bool *)((const char *)p + req[i].off))
			return REFUSE("snp.policy.%s: required but not set in the guest policy",
				      req[i].name);
	return 0;
}

static int check_platform(const struct cvm_snp_report *r, const struct cvm_snp_policy *p,
			  struct cvm_err *err)
{
	uint64_t pi = r->platform_info;
	if ((pi & CVM_SNP_PLATFORM_SMT_EN) && !p->allow_platform_smt)
		return REFUSE("snp.platform_info.smt: SMT is enabled on the host");
	if ((pi & CVM_SNP_PLATFORM_TSME_EN) && !p->allow_platform_tsme)
		return REFUSE("snp.platform_info.tsme: TSME is enabled on the host");
	if ((pi & CVM_SNP_PLATFORM_TIO_EN) && !p->allow_platform_tio)
		return REFUSE("snp.platform_info.tio: SEV-TIO is enabled on the host");
	if (!(pi & CVM_SNP_PLATFORM_ECC_EN) && p->require_platform_ecc)
		return REFUSE("snp.platform_info.ecc: ECC memory is required");
	if (!(pi & CVM_SNP_PLATFORM_RAPL_DIS) && p->require_platform_rapl_dis)
		return REFUSE("snp.platform_info.rapl_dis: RAPL must be disabled");
	if (!(pi & CVM_SNP_PLATFORM_CIPHERTEXT_HIDING_EN) && p->require_platform_ciphertext_hiding)
		return REFUSE("snp.platform_info.ciphertext_hiding: required");
	if (!(pi & CVM_SNP_PLATFORM_ALIAS_CHECK_COMPLETE) && p->require_platform_alias_check)
		return REFUSE("snp.platform_info.alias_check_complete: required");
	return 0;
}

static int check_firmware(const struct cvm_snp_verdict *v, const struct cvm_snp_policy *p,
			  struct cvm_err *err)
{
	const struct cvm_snp_report *r = &v->report;
	struct cvm_snp_tcb launch, current, committed;
	cvm_snp_tcb_decode(r->launch_tcb, v->product, &launch);
	cvm_snp_tcb_decode(r->current_tcb, v->product, &current);
	cvm_snp_tcb_decode(r->committed_tcb, v->product, &committed);
	if (!tcb_ge(&v->reported_tcb, &p->min_tcb))
		return REFUSE("snp.tcb: REPORTED_TCB below the minimum TCB");
	if (!tcb_ge(&launch, &p->min_launch_tcb))
		return REFUSE("snp.launch_tcb: LAUNCH_TCB below the minimum");
	/* The VEK was derived for REPORTED_TCB, which the platform may not exceed. */
	if (!tcb_ge(&current, &v->reported_tcb))
		return REFUSE("snp.tcb: REPORTED_TCB is above CURRENT_TCB");
	if (r->current_build < p->min_build || r->committed_build < p->min_build)
		return REFUSE("snp.build: firmware build %u (committed %u) below %u",
			      r->current_build, r->committed_build, p->min_build);
	unsigned cur = (unsigned)r->current_major << 8 | r->current_minor;
	unsigned com = (unsigned)r->committed_major << 8 | r->committed_minor;
	if (cur < p->min_version || com < p->min_version)
		return REFUSE("snp.version: firmware %u.%u (committed %u.%u) below %u.%u",
			      r->current_major, r->current_minor, r->committed_major,
			      r->committed_minor, p->min_version >> 8, p->min_version & 0xff);
	if (!p->permit_provisional_firmware &&
	    (r->committed_tcb != r->current_tcb || cur != com ||
	     r->current_build != r->committed_build))
		return REFUSE("snp.provisional_firmware: COMMITTED differs from CURRENT");
	if (p->permit_provisional_firmware && !tcb_ge(&current, &committed))
		return REFUSE("snp.provisional_firmware: COMMITTED_TCB is above CURRENT_TCB");
	if ((r->launch_mit_vector & p->min_launch_mit_vector) != p->min_launch_mit_vector)
		return REFUSE("snp.launch_mit_vector: required mitigations 0x%llx missing",
			      (unsigned long long)p->min_launch_mit_vector);
	if ((r->current_mit_vector & p->min_current_mit_vector) != p->min_current_mit_vector)
		return REFUSE("snp.current_mit_vector: required mitigations 0x%llx missing",
			      (unsigned long long)p->min_current_mit_vector);
	return 0;
}

static int check_identity(const struct cvm_snp_report *r, const struct cvm_snp_policy *p,
			  struct cvm_err *err)
{
	bool author_en = r->flags & 1;
	if (p->require_author_key && !author_en)
		return REFUSE("snp.author_key: AUTHOR_KEY_EN is not set");
	if (p->require_id_block || p->require_author_key) {
		bool id_ok = in_list(r->id_key_digest, (const uint8_t *)p->id_key_digests,
				     p->n_id_key_digests, 48);
		bool author_ok = author_en &&
				 in_list(r->author_key_digest, (const uint8_t *)p->author_key_digests,
					 p->n_author_key_digests, 48);
		if (p->require_author_key ? !author_ok : !(id_ok || author_ok))
			return REFUSE("snp.id_block: %s digest is not trusted",
				      p->require_author_key ? "author key" : "ID key");
	}
	if (p->n_measurements &&
	    !in_list(r->measurement, (const uint8_t *)p->measurements, p->n_measurements, 48))
		return REFUSE("snp.measurement: not in the allowed list");
	if (p->n_chip_ids && !in_list(r->chip_id, (const uint8_t *)p->chip_ids, p->n_chip_ids, 64))
		return REFUSE("snp.chip_id: not in the allowed list");
	static const struct { size_t chk, val, roff, len; const char *name; } ex[] = {
		{ offsetof(struct cvm_snp_policy, check_report_data),
		  offsetof(struct cvm_snp_policy, report_data),
		  offsetof(struct cvm_snp_report, report_data), 64, "report_data" },
		{ offsetof(struct cvm_snp_policy, check_host_data),
		  offsetof(struct cvm_snp_policy, host_data),
		  offsetof(struct cvm_snp_report, host_data), 32, "host_data" },
		{ offsetof(struct cvm_snp_policy, check_family_id),
		  offsetof(struct cvm_snp_policy, family_id),
		  offsetof(struct cvm_snp_report, family_id), 16, "family_id" },
		{ offsetof(struct cvm_snp_policy, check_image_id),
		  offsetof(struct cvm_snp_policy, image_id),
		  offsetof(struct cvm_snp_report, image_id), 16, "image_id" },
		{ offsetof(struct cvm_snp_policy, check_report_id),
		  offsetof(struct cvm_snp_policy, report_id),
		  offsetof(struct cvm_snp_report, report_id), 32, "report_id" },
		{ offsetof(struct cvm_snp_policy, check_report_id_ma),
		  offsetof(struct cvm_snp_policy, report_id_ma),
		  offsetof(struct cvm_snp_report, report_id_ma), 32, "report_id_ma" },
	};
	for (size_t i = 0; i < CVM_ARRAY_SIZE(ex); i++) {
		const char *pp = (const char *)p, *rr = (const char *)r;
		if (*(const bool *)(pp + ex[i].chk) &&
		    memcmp(pp + ex[i].val, rr + ex[i].roff, ex[i].len) != 0)
			return REFUSE("snp.%s: does not match the expected value", ex[i].name);
	}
	return 0;
}

int cvm_snp_policy_check(const struct cvm_snp_verdict *v, const struct cvm_snp_policy *policy,
			 struct cvm_err *err)
{
	struct cvm_snp_policy def;
	if (!policy) {
		cvm_snp_policy_default(&def);
		policy = &def;
	}
	const struct cvm_snp_report *r = &v->report;
	if (v->emulated && !policy->allow_emulated)
		return REFUSE("snp.emulated: evidence comes from the TEE emulator");
	if (v->signer == CVM_SNP_SIGNER_VLEK && !policy->allow_vlek)
		return REFUSE("snp.signer: VLEK-signed reports are not allowed");
	if (policy->product != CVM_SNP_PRODUCT_UNKNOWN && policy->product != v->product)
		return REFUSE("snp.product: %s, expected %s", cvm_snp_product_name(v->product),
			      cvm_snp_product_name(policy->product));
	if (policy->vmpl >= 0 && r->vmpl != (uint32_t)policy->vmpl)
		return REFUSE("snp.vmpl: %u, expected %d", r->vmpl, policy->vmpl);
	if (r->guest_svn < policy->min_guest_svn)
		return REFUSE("snp.guest_svn: %u below the minimum %u", r->guest_svn,
			      policy->min_guest_svn);
	int rc;
	if ((rc = check_guest_policy(r, policy, err)) < 0 ||
	    (rc = check_platform(r, policy, err)) < 0 || (rc = check_firmware(v, policy, err)) < 0 ||
	    (rc = check_identity(r, policy, err)) < 0)
		return rc;
	return 0;
}

/* ---- JSON form --------------------------------------------------------------------------- */

struct cvm_snp_policy_store {
	uint8_t (*measurements)[48];
	uint8_t (*id_keys)[48];
	uint8_t (*author_keys)[48];
	uint8_t (*chip_ids)[64];
};

void cvm_snp_policy_store_free(struct cvm_snp_policy_store *s)
{
	if (!s)
		return;
	free(s->measurements);
	free(s->id_keys);
	free(s->author_keys);
	free(s->chip_ids);
	free(s);
}

static int json_hex_list(json_t *v, const char *key, size_t sz, void **out, size_t *n,
			 struct cvm_err *err)
{
	if (!json_is_array(v))
		return cvm_err_badparam(err, "policy.%s: expected an array of hex strings", key);
	size_t cnt = json_array_size(v);
	if (cnt > 4096)
		return cvm_err_badparam(err, "policy.%s: more than 4096 entries", key);
	uint8_t *buf = calloc(cnt ? cnt : 1, sz);
	if (!buf)
		return cvm_err_nomem(err);
	for (size_t i = 0; i < cnt; i++) {
		const char *s = json_string_value(json_array_get(v, i));
		if (!s || cvm_hex_decode_fixed(s, buf + i * sz, sz, key, err) < 0) {
			free(buf);
			if (!s)
				return cvm_err_badparam(err, "policy.%s[%zu]: expected a hex string",
							key, i);
			return -EINVAL;
		}
	}
	*out = buf;
	*n = cnt;
	return 0;
}

static int json_tcb(json_t *v, const char *key, struct cvm_snp_tcb *t, struct cvm_err *err)
{
	if (!json_is_object(v))
		return cvm_err_badparam(err, "policy.%s: expected an object", key);
	const char *k;
	json_t *x;
	json_object_foreach(v, k, x) {
		json_int_t n = json_integer_value(x);
		if (!json_is_integer(x) || n < 0 || n > 255)
			return cvm_err_badparam(err, "policy.%s.%s: expected an integer 0..255", key, k);
		if (strcmp(k, "bl") == 0) t->bl = (uint8_t)n;
		else if (strcmp(k, "tee") == 0) t->tee = (uint8_t)n;
		else if (strcmp(k, "snp") == 0) t->snp = (uint8_t)n;
		else if (strcmp(k, "ucode") == 0) t->ucode = (uint8_t)n;
		else if (strcmp(k, "fmc") == 0) t->fmc = (uint8_t)n;
		else
			return cvm_err_badparam(err, "policy.%s.%s: unknown TCB component", key, k);
	}
	return 0;
}

#define PB(name) { #name, offsetof(struct cvm_snp_policy, name) }
static const struct { const char *name; size_t off; } bool_knobs[] = {
	PB(allow_debug), PB(allow_migrate_ma), PB(allow_smt), PB(allow_cxl),
	PB(require_single_socket), PB(require_mem_aes_256_xts), PB(require_rapl_dis),
	PB(require_ciphertext_hiding), PB(require_page_swap_disable), PB(allow_platform_smt),
	PB(allow_platform_tsme), PB(allow_platform_tio), PB(require_platform_ecc),
	PB(require_platform_rapl_dis), PB(require_platform_ciphertext_hiding),
	PB(require_platform_alias_check), PB(permit_provisional_firmware),
	PB(require_author_key), PB(require_id_block), PB(allow_vlek), PB(allow_emulated),
};
#define PF(name, chk) { #name, offsetof(struct cvm_snp_policy, name), \
		sizeof(((struct cvm_snp_policy *)0)->name), offsetof(struct cvm_snp_policy, chk) }
static const struct { const char *name; size_t off, len, chk; } fixed_knobs[] = {
	PF(report_data, check_report_data), PF(host_data, check_host_data),
	PF(family_id, check_family_id), PF(image_id, check_image_id),
	PF(report_id, check_report_id), PF(report_id_ma, check_report_id_ma),
};

static int int_knob(json_t *x, const char *k, json_int_t min, json_int_t max, json_int_t *out,
		    struct cvm_err *err)
{
	if (!json_is_integer(x) || json_integer_value(x) < min || json_integer_value(x) > max)
		return cvm_err_badparam(err, "policy.%s: expected an integer %lld..%lld", k,
					(long long)min, (long long)max);
	*out = json_integer_value(x);
	return 0;
}

static int policy_member(const char *k, json_t *x, struct cvm_snp_policy *p,
			 struct cvm_snp_policy_store *s, struct cvm_err *err)
{
	for (size_t i = 0; i < CVM_ARRAY_SIZE(bool_knobs); i++)
		if (strcmp(k, bool_knobs[i].name) == 0) {
			if (!json_is_boolean(x))
				return cvm_err_badparam(err, "policy.%s: expected a boolean", k);
			*(bool *)((char *)p + bool_knobs[i].off) = json_is_true(x);
			return 0;
		}
	for (size_t i = 0; i < CVM_ARRAY_SIZE(fixed_knobs); i++)
		if (strcmp(k, fixed_knobs[i].name) == 0) {
			const char *h = json_string_value(x);
			if (!h)
				return cvm_err_badparam(err, "policy.%s: expected a hex string", k);
			int rc = cvm_hex_decode_fixed(h, (uint8_t *)p + fixed_knobs[i].off,
						      fixed_knobs[i].len, k, err);
			if (rc < 0)
				return rc;
			*(bool *)((char *)p + fixed_knobs[i].chk) = true;
			return 0;
		}
	json_int_t n = 0;
	int rc;
	if (strcmp(k, "vmpl") == 0) {
		if ((rc = int_knob(x, k, -1, 3, &n, err)) == 0) p->vmpl = (int)n;
	} else if (strcmp(k, "min_guest_svn") == 0) {
		if ((rc = int_knob(x, k, 0, UINT32_MAX, &n, err)) == 0) p->min_guest_svn = (uint32_t)n;
	} else if (strcmp(k, "min_build") == 0) {
		if ((rc = int_knob(x, k, 0, 255, &n, err)) == 0) p->min_build = (uint8_t)n;
	} else if (strcmp(k, "min_version") == 0) {
		if ((rc = int_knob(x, k, 0, 0xffff, &n, err)) == 0) p->min_version = (uint16_t)n;
	} else if (strcmp(k, "min_abi_major") == 0) {
		if ((rc = int_knob(x, k, 0, 255, &n, err)) == 0) p->min_abi_major = (uint8_t)n;
	} else if (strcmp(k, "min_abi_minor") == 0) {
		if ((rc = int_knob(x, k, 0, 255, &n, err)) == 0) p->min_abi_minor = (uint8_t)n;
	} else if (strcmp(k, "min_launch_mit_vector") == 0) {
		if ((rc = int_knob(x, k, 0, INT64_MAX, &n, err)) == 0)
			p->min_launch_mit_vector = (uint64_t)n;
	} else if (strcmp(k, "min_current_mit_vector") == 0) {
		if ((rc = int_knob(x, k, 0, INT64_MAX, &n, err)) == 0)
			p->min_current_mit_vector = (uint64_t)n;
	} else if (strcmp(k, "min_tcb") == 0) {
		rc = json_tcb(x, k, &p->min_tcb, err);
	} else if (strcmp(k, "min_launch_tcb") == 0) {
		rc = json_tcb(x, k, &p->min_launch_tcb, err);
	} else if (strcmp(k, "product") == 0) {
		p->product = cvm_snp_product_from_name(json_string_value(x));
		rc = p->product == CVM_SNP_PRODUCT_UNKNOWN
			     ? cvm_err_badparam(err, "policy.product: expected Milan, Genoa or Turin")
			     : 0;
	} else if (strcmp(k, "measurements") == 0) {
		rc = json_hex_list(x, k, 48, (void **)&s->measurements, &p->n_measurements, err);
		p->measurements = (const uint8_t(*)[48])s->measurements;
	} else if (strcmp(k, "id_key_digests") == 0) {
		rc = json_hex_list(x, k, 48, (void **)&s->id_keys, &p->n_id_key_digests, err);
		p->id_key_digests = (const uint8_t(*)[48])s->id_keys;
	} else if (strcmp(k, "author_key_digests") == 0) {
		rc = json_hex_list(x, k, 48, (void **)&s->author_keys, &p->n_author_key_digests, err);
		p->author_key_digests = (const uint8_t(*)[48])s->author_keys;
	} else if (strcmp(k, "chip_ids") == 0) {
		rc = json_hex_list(x, k, 64, (void **)&s->chip_ids, &p->n_chip_ids, err);
		p->chip_ids = (const uint8_t(*)[64])s->chip_ids;
	} else {
		rc = cvm_err_badparam(err, "policy.%s: unknown member", k);
	}
	return rc;
}

int cvm_snp_policy_from_json(json_t *j, struct cvm_snp_policy *p,
			     struct cvm_snp_policy_store **store, struct cvm_err *err)
{
	if (!json_is_object(j))
		return cvm_err_badparam(err, "policy: expected a JSON object");
	struct cvm_snp_policy_store *s = calloc(1, sizeof(*s));
	if (!s)
		return cvm_err_nomem(err);
	cvm_snp_policy_default(p);
	const char *k;
	json_t *x;
	json_object_foreach(j, k, x) {
		/* A member given twice would leak the first list: jansson keeps the last only. */
		int rc = policy_member(k, x, p, s, err);
		if (rc < 0) {
			cvm_snp_policy_store_free(s);
			return rc;
		}
	}
	*store = s;
	return 0;
}

/* ---- claims ------------------------------------------------------------------------------ */

int cvm_snp_verdict_claims(const struct cvm_snp_verdict *v, json_t *o, struct cvm_err *err)
{
	const struct cvm_snp_report *r = &v->report;
	int rc = 0;
	rc |= cvm_attest_json_hex(o, "x-ms-sevsnpvm-authorkeydigest", r->author_key_digest, 48);
	rc |= json_object_set_new(o, "x-ms-sevsnpvm-bootloader-svn", json_integer(v->reported_tcb.bl));
	rc |= cvm_attest_json_hex(o, "x-ms-sevsnpvm-familyId", r->family_id, 16);
	rc |= json_object_set_new(o, "x-ms-sevsnpvm-guestsvn", json_integer(r->guest_svn));
	rc |= cvm_attest_json_hex(o, "x-ms-sevsnpvm-hostdata", r->host_data, 32);
	rc |= cvm_attest_json_hex(o, "x-ms-sevsnpvm-idkeydigest", r->id_key_digest, 48);
	rc |= cvm_attest_json_hex(o, "x-ms-sevsnpvm-imageId", r->image_id, 16);
	rc |= json_object_set_new(o, "x-ms-sevsnpvm-is-debuggable",
				  json_boolean(r->policy & CVM_SNP_POLICY_DEBUG));
	rc |= cvm_attest_json_hex(o, "x-ms-sevsnpvm-launchmeasurement", r->measurement, 48);
	rc |= json_object_set_new(o, "x-ms-sevsnpvm-microcode-svn",
				  json_integer(v->reported_tcb.ucode));
	rc |= json_object_set_new(o, "x-ms-sevsnpvm-migration-allowed",
				  json_boolean(r->policy & CVM_SNP_POLICY_MIGRATE_MA));
	rc |= cvm_attest_json_hex(o, "x-ms-sevsnpvm-reportdata", r->report_data, 64);
	rc |= cvm_attest_json_hex(o, "x-ms-sevsnpvm-reportid", r->report_id, 32);
	rc |= json_object_set_new(o, "x-ms-sevsnpvm-smt-allowed",
				  json_boolean(r->policy & CVM_SNP_POLICY_SMT));
	rc |= json_object_set_new(o, "x-ms-sevsnpvm-snpfw-svn", json_integer(v->reported_tcb.snp));
	rc |= json_object_set_new(o, "x-ms-sevsnpvm-tee-svn", json_integer(v->reported_tcb.tee));
	rc |= json_object_set_new(o, "x-ms-sevsnpvm-vmpl", json_integer(r->vmpl));
	rc |= cvm_attest_json_hex(o, "x-ms-sevsnpvm-chipid", r->chip_id, 64);
	rc |= json_object_set_new(o, "x-ms-sevsnpvm-product",
				  json_string(cvm_snp_product_name(v->product)));
	if (v->product == CVM_SNP_PRODUCT_TURIN)
		rc |= json_object_set_new(o, "x-ms-sevsnpvm-fmc-svn", json_integer(v->reported_tcb.fmc));
	return rc ? cvm_err_nomem(err) : 0;
}
