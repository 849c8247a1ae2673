/* SPDX-License-Identifier: Apache-2.0 */
/* SEV-SNP ATTESTATION_REPORT: parse, serialize, decode (AMD SEV-SNP ABI spec, Table 23). */
#include <string.h>
#include <strings.h>

#include "attest-internal.h"

/* Field offsets in the 1184-byte report. */
enum {
	OFF_VERSION = 0x000, OFF_GUEST_SVN = 0x004, OFF_POLICY = 0x008, OFF_FAMILY_ID = 0x010,
	OFF_IMAGE_ID = 0x020, OFF_VMPL = 0x030, OFF_SIG_ALGO = 0x034, OFF_CURRENT_TCB = 0x038,
	OFF_PLATFORM_INFO = 0x040, OFF_FLAGS = 0x048, OFF_RSVD1 = 0x04C, OFF_REPORT_DATA = 0x050,
	OFF_MEASUREMENT = 0x090, OFF_HOST_DATA = 0x0C0, OFF_ID_KEY_DIGEST = 0x0E0,
	OFF_AUTHOR_KEY_DIGEST = 0x110, OFF_REPORT_ID = 0x140, OFF_REPORT_ID_MA = 0x160,
	OFF_REPORTED_TCB = 0x180, OFF_CPUID_FAM = 0x188, OFF_CPUID_MOD = 0x189,
	OFF_CPUID_STEP = 0x18A, OFF_RSVD2 = 0x18B, OFF_CHIP_ID = 0x1A0, OFF_COMMITTED_TCB = 0x1E0,
	OFF_CURRENT_BUILD = 0x1E8, OFF_CURRENT_MINOR = 0x1E9, OFF_CURRENT_MAJOR = 0x1EA,
	OFF_RSVD3 = 0x1EB, OFF_COMMITTED_BUILD = 0x1EC, OFF_COMMITTED_MINOR = 0x1ED,
	OFF_COMMITTED_MAJOR = 0x1EE, OFF_RSVD4 = 0x1EF, OFF_LAUNCH_TCB = 0x1F0,
	OFF_LAUNCH_MIT = 0x1F8, OFF_CURRENT_MIT = 0x200, OFF_RSVD5 = 0x208, OFF_SIG_R = 0x2A0,
	OFF_SIG_S = 0x2E8, OFF_SIG_RSVD = 0x330,
};

#define SNP_MIN_VERSION 2
#define SNP_MAX_VERSION 5
#define SNP_SIG_ALGO_ECDSA_P384_SHA384 1
/* Policy bits 26..63 must be zero (ABI spec). */
#define SNP_POLICY_MBZ (~((1ULL << 26) - 1))
/* Flags bits 5..31 must be zero. */
#define SNP_FLAGS_MBZ 0xFFFFFFE0u

const char *cvm_snp_product_name(enum cvm_snp_product p)
{
	switch (p) {
	case CVM_SNP_PRODUCT_MILAN: return "Milan";
	case CVM_SNP_PRODUCT_GENOA: return "Genoa";
	case CVM_SNP_PRODUCT_TURIN: return "Turin";
	default: return "unknown";
	}
}

enum cvm_snp_product cvm_snp_product_from_name(const char *name)
{
	static const struct { const char *n; enum cvm_snp_product p; } map[] = {
		{ "Milan", CVM_SNP_PRODUCT_MILAN },
		{ "Genoa", CVM_SNP_PRODUCT_GENOA },
		{ "Turin", CVM_SNP_PRODUCT_TURIN },
	};
	if (!name)
		return CVM_SNP_PRODUCT_UNKNOWN;
	for (size_t i = 0; i < CVM_ARRAY_SIZE(map); i++) {
		size_t l = strlen(map[i].n);
		/* "Milan", "Milan-B0", "milan" all name Milan; "Milanx" does not. */
		if (strncasecmp(name, map[i].n, l) == 0 && (name[l] == '\0' || name[l] == '-'))
			return map[i].p;
	}
	return CVM_SNP_PRODUCT_UNKNOWN;
}

void cvm_snp_tcb_decode(uint64_t raw, enum cvm_snp_product p, struct cvm_snp_tcb *out)
{
	uint8_t b[8];
	cvm_put_le64(b, raw);
	memset(out, 0, sizeof(*out));
	if (p == CVM_SNP_PRODUCT_TURIN) {
		/* [fmc, bl, tee, snp, 0, 0, 0, ucode] */
		out->fmc = b[0];
		out->bl = b[1];
		out->tee = b[2];
		out->snp = b[3];
	} else {
		/* [bl, tee, 0, 0, 0, 0, snp, ucode] */
		out->bl = b[0];
		out->tee = b[1];
		out->snp = b[6];
	}
	out->ucode = b[7];
}

uint64_t cvm_snp_tcb_encode(const struct cvm_snp_tcb *t, enum cvm_snp_product p)
{
	uint8_t b[8] = { 0 };
	if (p == CVM_SNP_PRODUCT_TURIN) {
		b[0] = t->fmc;
		b[1] = t->bl;
		b[2] = t->tee;
		b[3] = t->snp;
	} else {
		b[0] = t->bl;
		b[1] = t->tee;
		b[6] = t->snp;
	}
	b[7] = t->ucode;
	return cvm_le64(b);
}

static bool all_zero(const uint8_t *p, size_t n)
{
	uint8_t acc = 0;
	for (size_t i = 0; i < n; i++)
		acc |= p[i];
	return acc == 0;
}

int cvm_snp_report_parse(const uint8_t *buf, size_t len, struct cvm_snp_report *r,
			 struct cvm_err *err)
{
	if (!buf || len != CVM_SNP_REPORT_SIZE)
		return cvm_err_badparam(err, "snp.report: expected %d bytes, got %zu",
					CVM_SNP_REPORT_SIZE, buf ? len : 0);
	memset(r, 0, sizeof(*r));
	r->version = cvm_le32(buf + OFF_VERSION);
	if (r->version < SNP_MIN_VERSION || r->version > SNP_MAX_VERSION)
		return cvm_err_badparam(err, "snp.report.version: %u is not supported (2..5)",
					r->version);
	r->guest_svn = cvm_le32(buf + OFF_GUEST_SVN);
	r->policy = cvm_le64(buf + OFF_POLICY);
	if (r->policy & SNP_POLICY_MBZ)
		return cvm_err_badparam(err, "snp.report.policy: reserved bits set (0x%llx)",
					(unsigned long long)r->policy);
	memcpy(r->family_id, buf + OFF_FAMILY_ID, 16);
	memcpy(r->image_id, buf + OFF_IMAGE_ID, 16);
	r->vmpl = cvm_le32(buf + OFF_VMPL);
	if (r->vmpl > 3)
		return cvm_err_badparam(err, "snp.report.vmpl: %u is out of range 0..3", r->vmpl);
	r->signature_algo = cvm_le32(buf + OFF_SIG_ALGO);
	if (r->signature_algo != SNP_SIG_ALGO_ECDSA_P384_SHA384)
		return cvm_err_badparam(err,
					"snp.report.signature_algo: %u, expected 1 (ECDSA P-384)",
					r->signature_algo);
	r->current_tcb = cvm_le64(buf + OFF_CURRENT_TCB);
	r->platform_info = cvm_le64(buf + OFF_PLATFORM_INFO);
	r->flags = cvm_le32(buf + OFF_FLAGS);
	if (r->flags & SNP_FLAGS_MBZ)
		return cvm_err_badparam(err, "snp.report.flags: reserved bits set (0x%x)", r->flags);
	unsigned signer = (r->flags >> 2) & 7;
	if (signer != CVM_SNP_SIGNER_VCEK && signer != CVM_SNP_SIGNER_VLEK &&
	    signer != CVM_SNP_SIGNER_NONE)
		return cvm_err_badparam(err, "snp.report.flags.signing_key: reserved value %u",
					signer);
	if (!all_zero(buf + OFF_RSVD1, 4))
		return cvm_err_badparam(err, "snp.report: reserved bytes at 0x4c are not zero");
	memcpy(r->report_data, buf + OFF_REPORT_DATA, 64);
	memcpy(r->measurement, buf + OFF_MEASUREMENT, 48);
	memcpy(r->host_data, buf + OFF_HOST_DATA, 32);
	memcpy(r->id_key_digest, buf + OFF_ID_KEY_DIGEST, 48);
	memcpy(r->author_key_digest, buf + OFF_AUTHOR_KEY_DIGEST, 48);
	memcpy(r->report_id, buf + OFF_REPORT_ID, 32);
	memcpy(r->report_id_ma, buf + OFF_REPORT_ID_MA, 32);
	r->reported_tcb = cvm_le64(buf + OFF_REPORTED_TCB);
	r->cpuid_fam_id = buf[OFF_CPUID_FAM];
	r->cpuid_mod_id = buf[OFF_CPUID_MOD];
	r->cpuid_step = buf[OFF_CPUID_STEP];
	if (r->version < 3 && (r->cpuid_fam_id || r->cpuid_mod_id || r->cpuid_step))
		return cvm_err_badparam(err, "snp.report: CPUID fields must be zero in version 2");
	if (!all_zero(buf + OFF_RSVD2, OFF_CHIP_ID - OFF_RSVD2))
		return cvm_err_badparam(err, "snp.report: reserved bytes at 0x18b are not zero");
	memcpy(r->chip_id, buf + OFF_CHIP_ID, 64);
	r->committed_tcb = cvm_le64(buf + OFF_COMMITTED_TCB);
	r->current_build = buf[OFF_CURRENT_BUILD];
	r->current_minor = buf[OFF_CURRENT_MINOR];
	r->current_major = buf[OFF_CURRENT_MAJOR];
	r->committed_build = buf[OFF_COMMITTED_BUILD];
	r->committed_minor = buf[OFF_COMMITTED_MINOR];
	r->committed_major = buf[OFF_COMMITTED_MAJOR];
	if (buf[OFF_RSVD3] || buf[OFF_RSVD4])
		return cvm_err_badparam(err, "snp.report: reserved version bytes are not zero");
	r->launch_tcb = cvm_le64(buf + OFF_LAUNCH_TCB);
	r->launch_mit_vector = cvm_le64(buf + OFF_LAUNCH_MIT);
	r->current_mit_vector = cvm_le64(buf + OFF_CURRENT_MIT);
	if (r->version < 5 && (r->launch_mit_vector || r->current_mit_vector))
		return cvm_err_badparam(err,
					"snp.report: mitigation vectors must be zero before version 5");
	if (!all_zero(buf + OFF_RSVD5, OFF_SIG_R - OFF_RSVD5))
		return cvm_err_badparam(err, "snp.report: reserved bytes at 0x208 are not zero");
	memcpy(r->sig_r, buf + OFF_SIG_R, 72);
	memcpy(r->sig_s, buf + OFF_SIG_S, 72);
	if (!all_zero(buf + OFF_SIG_RSVD, CVM_SNP_REPORT_SIZE - OFF_SIG_RSVD))
		return cvm_err_badparam(err, "snp.report.signature: reserved bytes are not zero");
	return 0;
}

void cvm_snp_report_serialize(const struct cvm_snp_report *r, uint8_t out[CVM_SNP_REPORT_SIZE])
{
	memset(out, 0, CVM_SNP_REPORT_SIZE);
	cvm_put_le32(out + OFF_VERSION, r->version);
	cvm_put_le32(out + OFF_GUEST_SVN, r->guest_svn);
	cvm_put_le64(out + OFF_POLICY, r->policy);
	memcpy(out + OFF_FAMILY_ID, r->family_id, 16);
	memcpy(out + OFF_IMAGE_ID, r->image_id, 16);
	cvm_put_le32(out + OFF_VMPL, r->vmpl);
	cvm_put_le32(out + OFF_SIG_ALGO, r->signature_algo);
	cvm_put_le64(out + OFF_CURRENT_TCB, r->current_tcb);
	cvm_put_le64(out + OFF_PLATFORM_INFO, r->platform_info);
	cvm_put_le32(out + OFF_FLAGS, r->flags);
	memcpy(out + OFF_REPORT_DATA, r->report_data, 64);
	memcpy(out + OFF_MEASUREMENT, r->measurement, 48);
	memcpy(out + OFF_HOST_DATA, r->host_data, 32);
	memcpy(out + OFF_ID_KEY_DIGEST, r->id_key_digest, 48);
	memcpy(out + OFF_AUTHOR_KEY_DIGEST, r->author_key_digest, 48);
	memcpy(out + OFF_REPORT_ID, r->report_id, 32);
	memcpy(out + OFF_REPORT_ID_MA, r->report_id_ma, 32);
	cvm_put_le64(out + OFF_REPORTED_TCB, r->reported_tcb);
	out[OFF_CPUID_FAM] = r->cpuid_fam_id;
	out[OFF_CPUID_MOD] = r->cpuid_mod_id;
	out[OFF_CPUID_STEP] = r->cpuid_step;
	memcpy(out + OFF_CHIP_ID, r->chip_id, 64);
	cvm_put_le64(out + OFF_COMMITTED_TCB, r->committed_tcb);
	out[OFF_CURRENT_BUILD] = r->current_build;
	out[OFF_CURRENT_MINOR] = r->current_minor;
	out[OFF_CURRENT_MAJOR] = r->current_major;
	out[OFF_COMMITTED_BUILD] = r->committed_build;
	out[OFF_COMMITTED_MINOR] = r->committed_minor;
	out[OFF_COMMITTED_MAJOR] = r->committed_major;
	cvm_put_le64(out + OFF_LAUNCH_TCB, r->launch_tcb);
	cvm_put_le64(out + OFF_LAUNCH_MIT, r->launch_mit_vector);
	cvm_put_le64(out + OFF_CURRENT_MIT, r->current_mit_vector);
	memcpy(out + OFF_SIG_R, r->sig_r, 72);
	memcpy(out + OFF_SIG_S, r->sig_s, 72);
}

enum cvm_snp_product cvm_snp_report_product(const struct cvm_snp_report *r)
{
	if (r->version < 3)
		return CVM_SNP_PRODUCT_UNKNOWN;
	/* Combined family/model as in CPUID Fn0000_0001_EAX (go-sev-guest abi constants). */
	if (r->cpuid_fam_id == 0x19 && r->cpuid_mod_id == 0x01)
		return CVM_SNP_PRODUCT_MILAN;
	if (r->cpuid_fam_id == 0x19 && r->cpuid_mod_id == 0x11)
		return CVM_SNP_PRODUCT_GENOA;
	if (r->cpuid_fam_id == 0x1A && r->cpuid_mod_id == 0x02)
		return CVM_SNP_PRODUCT_TURIN;
	return CVM_SNP_PRODUCT_UNKNOWN;
}

enum cvm_snp_signer cvm_snp_report_signer(const struct cvm_snp_report *r)
{
	return (enum cvm_snp_signer)((r->flags >> 2) & 7);
}

int cvm_attest_json_hex(json_t *obj, const char *key, const void *data, size_t len)
{
	_cleanup_free_ char *h = cvm_hex_encode(data, len);
	if (!h)
		return -ENOMEM;
	return json_object_set_new(obj, key, json_string(h)) == 0 ? 0 : -ENOMEM;
}

static json_t *tcb_json(uint64_t raw, enum cvm_snp_product p)
{
	struct cvm_snp_tcb t;
	cvm_snp_tcb_decode(raw, p, &t);
	char rawhex[19];
	snprintf(rawhex, sizeof(rawhex), "0x%016llx", (unsigned long long)raw);
	json_t *o = json_pack("{s:s, s:i, s:i, s:i, s:i}", "raw", rawhex, "bootloader", t.bl,
			      "tee", t.tee, "snp", t.snp, "microcode", t.ucode);
	if (o && p == CVM_SNP_PRODUCT_TURIN)
		json_object_set_new(o, "fmc", json_integer(t.fmc));
	return o;
}

int cvm_snp_report_to_json(const struct cvm_snp_report *r, enum cvm_snp_product p, json_t **out,
			   struct cvm_err *err)
{
	if (p == CVM_SNP_PRODUCT_UNKNOWN)
		p = cvm_snp_report_product(r);
	json_t *o = json_object();
	if (!o)
		return cvm_err_nomem(err);
	int rc = 0;
	char fw[32];
	rc |= json_object_set_new(o, "version", json_integer(r->version));
	rc |= json_object_set_new(o, "guest_svn", json_integer(r->guest_svn));
	rc |= json_object_set_new(o, "policy", json_pack("{s:I, s:i, s:i, s:b, s:b, s:b, s:b, s:b}",
		"raw", (json_int_t)r->policy, "abi_major", (int)((r->policy >> 8) & 0xff),
		"abi_minor", (int)(r->policy & 0xff), "smt", !!(r->policy & CVM_SNP_POLICY_SMT),
		"migrate_ma", !!(r->policy & CVM_SNP_POLICY_MIGRATE_MA),
		"debug", !!(r->policy & CVM_SNP_POLICY_DEBUG),
		"single_socket", !!(r->policy & CVM_SNP_POLICY_SINGLE_SOCKET),
		"cxl_allow", !!(r->policy & CVM_SNP_POLICY_CXL_ALLOW)));
	rc |= cvm_attest_json_hex(o, "family_id", r->family_id, 16);
	rc |= cvm_attest_json_hex(o, "image_id", r->image_id, 16);
	rc |= json_object_set_new(o, "vmpl", json_integer(r->vmpl));
	rc |= json_object_set_new(o, "signature_algo", json_integer(r->signature_algo));
	rc |= json_object_set_new(o, "current_tcb", tcb_json(r->current_tcb, p));
	rc |= json_object_set_new(o, "platform_info", json_integer((json_int_t)r->platform_info));
	rc |= json_object_set_new(o, "author_key_en", json_boolean(r->flags & 1));
	rc |= json_object_set_new(o, "mask_chip_key", json_boolean(r->flags & 2));
	rc |= json_object_set_new(o, "signing_key",
				  json_string(cvm_snp_report_signer(r) == CVM_SNP_SIGNER_VCEK ? "vcek"
					      : cvm_snp_report_signer(r) == CVM_SNP_SIGNER_VLEK ? "vlek"
					      : "none"));
	rc |= cvm_attest_json_hex(o, "report_data", r->report_data, 64);
	rc |= cvm_attest_json_hex(o, "measurement", r->measurement, 48);
	rc |= cvm_attest_json_hex(o, "host_data", r->host_data, 32);
	rc |= cvm_attest_json_hex(o, "id_key_digest", r->id_key_digest, 48);
	rc |= cvm_attest_json_hex(o, "author_key_digest", r->author_key_digest, 48);
	rc |= cvm_attest_json_hex(o, "report_id", r->report_id, 32);
	rc |= cvm_attest_json_hex(o, "report_id_ma", r->report_id_ma, 32);
	rc |= json_object_set_new(o, "reported_tcb", tcb_json(r->reported_tcb, p));
	rc |= json_object_set_new(o, "cpuid_fam_id", json_integer(r->cpuid_fam_id));
	rc |= json_object_set_new(o, "cpuid_mod_id", json_integer(r->cpuid_mod_id));
	rc |= json_object_set_new(o, "cpuid_step", json_integer(r->cpuid_step));
	rc |= json_object_set_new(o, "product", json_string(cvm_snp_product_name(p)));
	rc |= cvm_attest_json_hex(o, "chip_id", r->chip_id, 64);
	rc |= json_object_set_new(o, "committed_tcb", tcb_json(r->committed_tcb, p));
	snprintf(fw, sizeof(fw), "%u.%u.%u", r->current_major, r->current_minor, r->current_build);
	rc |= json_object_set_new(o, "current_version", json_string(fw));
	snprintf(fw, sizeof(fw), "%u.%u.%u", r->committed_major, r->committed_minor,
		 r->committed_build);
	rc |= json_object_set_new(o, "committed_version", json_string(fw));
	rc |= json_object_set_new(o, "launch_tcb", tcb_json(r->launch_tcb, p));
	rc |= json_object_set_new(o, "launch_mit_vector", json_integer((json_int_t)r->launch_mit_vector));
	rc |= json_object_set_new(o, "current_mit_vector",
				  json_integer((json_int_t)r->current_mit_vector));
	rc |= cvm_attest_json_hex(o, "signature_r", r->sig_r, 72);
	rc |= cvm_attest_json_hex(o, "signature_s", r->sig_s, 72);
	if (rc) {
		json_decref(o);
		return cvm_err_nomem(err);
	}
	*out = o;
	return 0;
}
