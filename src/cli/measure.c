/* SPDX-License-Identifier: Apache-2.0 */
/* cvm measure ...: launch measurements computed offline, so operators can pin the reference
 * value in a policy before the VM ever starts. */
#include "cli.h"

#include <opencvm/attest.h>
#include <string.h>

/* Hex with or without 0x, full string, 64-bit. */
static int parse_hex_u64(const char *s, uint64_t *out)
{
	if (cvm_str_startswith(s, "0x") || cvm_str_startswith(s, "0X"))
		s += 2;
	size_t n = strlen(s);
	if (n == 0 || n > 16 || strspn(s, "0123456789abcdefABCDEF") != n)
		return -EINVAL;
	uint64_t v = 0;
	for (size_t i = 0; i < n; i++) {
		char c = s[i];
		unsigned d = c <= '9' ? (unsigned)(c - '0') : (unsigned)((c | 0x20) - 'a' + 10);
		v = v << 4 | d;
	}
	*out = v;
	return 0;
}

static json_t *sections_json(const struct cvm_ovmf_info *o)
{
	static const struct {
		uint32_t type;
		const char *name;
	} names[] = {
		{ CVM_OVMF_SECTION_SNP_SEC_MEM, "SNP_SEC_MEM" },
		{ CVM_OVMF_SECTION_SNP_SECRETS, "SNP_SECRETS" },
		{ CVM_OVMF_SECTION_CPUID, "CPUID" },
		{ CVM_OVMF_SECTION_SVSM_CAA, "SVSM_CAA" },
		{ CVM_OVMF_SECTION_SNP_KERNEL_HASHES, "SNP_KERNEL_HASHES" },
	};
	json_t *a = json_array();
	for (size_t i = 0; a && i < o->n_sections; i++) {
		const char *name = "unknown";
		for (size_t k = 0; k < CVM_ARRAY_SIZE(names); k++)
			if (names[k].type == o->sections[i].type)
				name = names[k].name;
		char gpa[24], size[24];
		snprintf(gpa, sizeof(gpa), "0x%x", o->sections[i].gpa);
		snprintf(size, sizeof(size), "0x%x", o->sections[i].size);
		json_array_append_new(a, json_pack("{s:s,s:s,s:s}", "type", name, "gpa", gpa,
						   "size", size));
	}
	return a;
}

static int measure_snp(struct cli *cli, int argc, char **argv)
{
	const char *usage =
		"measure snp --ovmf FILE [--kernel FILE [--initrd FILE] [--append STR]] --vcpus N "
		"--vcpu-type TYPE [--guest-features HEX] [--ovmf-hash HEX] "
		"[--vmm-type qemu|qemu-legacy|ec2]";
	const char *ovmf = NULL, *kernel = NULL, *initrd = NULL, *append = NULL, *vcpus = NULL,
		   *vcpu_type = NULL, *features = NULL, *ovmf_hash = NULL, *vmm = NULL;
	const struct cli_opt opts[] = {
		{ "--ovmf", true, &ovmf, NULL, NULL },
		{ "--kernel", true, &kernel, NULL, NULL },
		{ "--initrd", true, &initrd, NULL, NULL },
		{ "--append", true, &append, NULL, NULL },
		{ "--vcpus", true, &vcpus, NULL, NULL },
		{ "--vcpu-type", true, &vcpu_type, NULL, NULL },
		{ "--guest-features", true, &features, NULL, NULL },
		{ "--ovmf-hash", true, &ovmf_hash, NULL, NULL },
		{ "--vmm-type", true, &vmm, NULL, NULL },
	};
	int rc = cli_parse(argc, argv, opts, CVM_ARRAY_SIZE(opts), NULL, 0, 0, NULL, usage);
	if (rc)
		return rc;
	if (!ovmf || !vcpus || !vcpu_type)
		return cli_usage_error(usage, "--ovmf, --vcpus and --vcpu-type are required");
	struct cvm_err err = { 0 };
	int64_t n = 0;
	if (cvm_parse_i64(vcpus, 1, CVM_SNP_MAX_VCPUS, &n, "--vcpus", &err) < 0)
		return cli_usage_error(usage, "%s", err.msg);
	struct cvm_snp_measure_files f = { .ovmf = ovmf, .kernel = kernel, .initrd = initrd,
					   .append = append, .vcpu_type = vcpu_type,
					   .vcpus = (uint32_t)n, .guest_features = 0x1,
					   .vmm = CVM_SNP_VMM_QEMU };
	if (features && parse_hex_u64(features, &f.guest_features) < 0)
		return cli_usage_error(usage, "--guest-features: '%s' is not a hex number (e.g. "
					      "0x1)", features);
	uint8_t seed[CVM_SNP_LD_SIZE];
	if (ovmf_hash) {
		if (cvm_hex_decode_fixed(ovmf_hash, seed, sizeof(seed), "--ovmf-hash", &err) < 0)
			return cli_usage_error(usage, "%s", err.msg);
		f.ovmf_hash = seed;
	}
	if (vmm && strcmp(vmm, "ec2") == 0)
		f.vmm = CVM_SNP_VMM_EC2;
	else if (vmm && strcmp(vmm, "qemu-legacy") == 0)
		f.vmm = CVM_SNP_VMM_QEMU_LEGACY;
	else if (vmm && strcmp(vmm, "qemu") != 0)
		return cli_usage_error(usage, "--vmm-type: '%s' (expected qemu, qemu-legacy or ec2)",
				       vmm);

	uint8_t ld[CVM_SNP_LD_SIZE];
	struct cvm_ovmf_info info;
	if (cvm_snp_measure_files(&f, ld, &info, &err) < 0)
		return cli_fail(&err, "measure snp");
	_cleanup_free_ char *hex = cvm_hex_encode(ld, sizeof(ld));
	if (!hex) {
		cvm_err_nomem(&err);
		return cli_fail(&err, "measure snp");
	}
	if (!cli->json) {
		printf("%s\n", hex);
		return CLI_OK;
	}
	uint32_t sig = 0;
	if (cvm_snp_vcpu_sig(vcpu_type, &sig, &err) < 0)
		return cli_fail(&err, "measure snp");
	char sigs[16], feats[24], gpa[24], eip[16];
	snprintf(sigs, sizeof(sigs), "0x%x", sig);
	snprintf(feats, sizeof(feats), "0x%llx", (unsigned long long)f.guest_features);
	snprintf(gpa, sizeof(gpa), "0x%llx", (unsigned long long)info.gpa);
	snprintf(eip, sizeof(eip), "0x%x", info.reset_eip);
	json_t *j = json_pack("{s:s,s:s,s:i,s:s,s:s,s:s,s:s,s:{s:s,s:I,s:s,s:s,s:o}}",
			      "measurement", hex, "mode", "snp", "vcpus", (int)f.vcpus,
			      "vcpuType", vcpu_type, "vcpuSig", sigs, "guestFeatures", feats,
			      "vmmType", vmm ? vmm : "qemu", "ovmf", "file",
			      ovmf, "size", (json_int_t)info.size, "gpa", gpa, "resetEip", eip,
			      "sections", sections_json(&info));
	if (!j) {
		cvm_err_nomem(&err);
		return cli_fail(&err, "measure snp");
	}
	if (kernel) {
		json_object_set_new(j, "kernel", json_string(kernel));
		if (initrd)
			json_object_set_new(j, "initrd", json_string(initrd));
		json_object_set_new(j, "append", json_string(append ? append : ""));
	}
	cli_print_json(j);
	json_decref(j);
	return CLI_OK;
}

int cli_measure(struct cli *cli, int argc, char **argv)
{
	static const struct cli_verb verbs[] = {
		{ "snp", measure_snp,
		  "snp --ovmf FILE [--kernel FILE [--initrd FILE] [--append STR]] --vcpus N "
		  "--vcpu-type TYPE [--guest-features HEX] [--ovmf-hash HEX] "
		  "[--vmm-type qemu|qemu-legacy|ec2]" },
	};
	return cli_dispatch(cli, "measure", verbs, CVM_ARRAY_SIZE(verbs), argc, argv);
}
