/* SPDX-License-Identifier: Apache-2.0 */
/* Fuzz the SEV-SNP report parser, its JSON view and the serialize round trip. */
#include <string.h>

#include <opencvm/attest.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct cvm_snp_report r;
	struct cvm_err err = { 0 };
	if (cvm_snp_report_parse(data, size, &r, &err) < 0)
		return 0;
	/* A parsed report serializes back to the same bytes. */
	uint8_t again[CVM_SNP_REPORT_SIZE];
	cvm_snp_report_serialize(&r, again);
	if (memcmp(again, data, CVM_SNP_REPORT_SIZE) != 0)
		__builtin_trap();
	json_t *j = NULL;
	if (cvm_snp_report_to_json(&r, CVM_SNP_PRODUCT_UNKNOWN, &j, &err) == 0)
		json_decref(j);
	char *path = cvm_snp_kds_vcek_path(&r, cvm_snp_report_product(&r));
	free(path);
	return 0;
}
