/* SPDX-License-Identifier: Apache-2.0 */
/* Fuzz the VCEK/VLEK extension parser and certificate sorting (PEM or DER input). */
#include <opencvm/attest.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct cvm_snp_vek_ext x;
	struct cvm_err err = { 0 };
	(void)cvm_snp_vek_ext_parse(data, size, &x, &err);
	struct cvm_snp_certs c = { 0 };
	(void)cvm_snp_certs_add(&c, data, size, &err);
	cvm_snp_certs_clear(&c);
	return 0;
}
