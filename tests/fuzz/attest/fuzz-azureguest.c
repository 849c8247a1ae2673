/* SPDX-License-Identifier: Apache-2.0 */
/* Fuzz the POST /attest/AzureGuest body: the outer JSON, the base64 AttestationInfo JSON, the
 * SNP proof JSON, TpmInfo's PCR list and client payload (cvm_azureguest_parse), then the whole
 * service path (TEE evidence, runtime data, TPM quote, TCG log and EncKeyPub parsers). */
#include <opencvm/attest.h>

int LLVMFuzzerInitialize(int *argc, char ***argv);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

/* libFuzzer's process-wide fixture: the service is built once and never mutated. */
static struct cvm_attest_service *svc;
static struct cvm_attest_roots *roots;

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
	(void)argc;
	(void)argv;
	struct cvm_err err = { 0 };
	struct cvm_key *k = NULL;
	if (cvm_attest_roots_new_builtin(&roots, &err) < 0 ||
	    cvm_key_generate_rsa(2048, 0, &k, &err) < 0)
		abort();
	struct cvm_attest_service_config cfg = { .issuer = "https://fuzz.invalid", .signing_key = k,
						 .roots = roots };
	if (cvm_attest_service_new(&cfg, &svc, &err) < 0)
		abort();
	cvm_key_free(k);
	cvm_log_set_level(CVM_LOG_ERROR);
	return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct cvm_err err = { 0 };
	struct cvm_azureguest_req r;
	if (cvm_azureguest_parse(data, size, &r, &err) < 0)
		return 0;
	cvm_azureguest_req_clear(&r);
	char *token = NULL;
	if (cvm_attest_service_attest_azureguest(svc, (const char *)data, size, &token, &err) == 0)
		free(token);
	return 0;
}
