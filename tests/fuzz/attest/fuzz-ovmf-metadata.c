/* SPDX-License-Identifier: Apache-2.0 */
/* Fuzz the OVMF footer table / SEV metadata parser, then measure what it accepted. */
#include <opencvm/attest.h>

#include <string.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct cvm_ovmf_info o;
	struct cvm_err err = { 0 };
	if (cvm_ovmf_parse(data, size, &o, &err) < 0)
		return 0;
	/* Measuring is one SHA-384 per page: keep inputs whose sections stay small so the fuzzer
	 * spends its time in the parser and the section walk, not in hashing zero pages. */
	uint64_t pages = 0;
	for (size_t i = 0; i < o.n_sections; i++)
		pages += o.sections[i].size / 4096 + 1;
	if (pages > 256)
		return 0;
	static const uint8_t seed[CVM_SNP_LD_SIZE];
	struct cvm_sev_hashes h;
	memset(&h, 0x5a, sizeof(h));
	struct cvm_snp_measure_in in = { .ovmf = &o, .ovmf_hash = seed, .vcpus = 2,
					 .vcpu_sig = 0x800f12, .guest_features = 1,
					 .vmm = CVM_SNP_VMM_QEMU };
	uint8_t ld[CVM_SNP_LD_SIZE];
	(void)cvm_snp_measure(&in, ld, &err);
	in.hashes = &h;
	(void)cvm_snp_measure(&in, ld, &err);
	return 0;
}
