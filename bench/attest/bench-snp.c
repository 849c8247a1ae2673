/* SPDX-License-Identifier: Apache-2.0 */
/* SEV-SNP report verifications per second with the chain cached (the daemon's steady state),
 * beside `openssl speed -seconds 3 ecdsap384` verify in the same run. Both rates are per second
 * of user CPU time (openssl speed's default divisor), so a loaded machine does not skew the
 * ratio. Prints
 *   ours=N/s openssl=M/s ratio=R
 * Never part of pass/fail. Usage: bench-snp [seconds] [evidence-dir] */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>

#include <opencvm/attest.h>

static double openssl_verify_rate(void)
{
	FILE *p = popen("openssl speed -seconds 3 ecdsap384 2>/dev/null", "r");
	if (!p)
		return 0;
	char line[512];
	double rate = 0;
	while (fgets(line, sizeof(line), p)) {
		/* " 384 bits ecdsa (nistp384)   0.0010s   0.0012s   1000.0    830.0" */
		double sign_t, verify_t, sign_s, verify_s;
		const char *at = strstr(line, "(nistp384)");
		if (at && sscanf(at + strlen("(nistp384)"), " %lfs %lfs %lf %lf", &sign_t, &verify_t,
				 &sign_s, &verify_s) == 4)
			rate = verify_s;
	}
	pclose(p);
	return rate;
}

static double user_seconds(void)
{
	struct rusage ru;
	getrusage(RUSAGE_SELF, &ru);
	return (double)ru.ru_utime.tv_sec + (double)ru.ru_utime.tv_usec / 1e6;
}

int main(int argc, char **argv)
{
	double seconds = argc > 1 ? atof(argv[1]) : 3.0;
	const char *dir = argc > 2 ? argv[2] : CVM_EVIDENCE_DIR;
	char rpath[1024], vpath[1024];
	snprintf(rpath, sizeof(rpath), "%s/snp/virtee-milan/report.bin", dir);
	snprintf(vpath, sizeof(vpath), "%s/snp/virtee-milan/vcek.der", dir);
	struct cvm_err err = { 0 };
	uint8_t *rep = NULL;
	size_t len = 0;
	struct cvm_snp_certs certs = { 0 };
	struct cvm_attest_roots *roots = NULL;
	struct cvm_snp_chain *chain = NULL;
	if (cvm_file_read(rpath, 4096, &rep, &len, &err) < 0 ||
	    cvm_snp_certs_add_file(&certs, vpath, &err) < 0 ||
	    cvm_attest_roots_new_builtin(&roots, &err) < 0 ||
	    cvm_snp_chain_verify(&certs, roots, NULL, &chain, &err) < 0) {
		fprintf(stderr, "bench-snp: %s\n", err.msg);
		return 1;
	}
	struct cvm_snp_verdict v;
	double start = user_seconds(), now = start;
	unsigned long n = 0;
	while (now - start < seconds) {
		for (int i = 0; i < 16; i++, n++)
			if (cvm_snp_verify_with_chain(rep, len, chain, NULL, &v, &err) < 0) {
				fprintf(stderr, "bench-snp: %s\n", err.msg);
				return 1;
			}
		now = user_seconds();
	}
	double ours = (double)n / (now - start);
	double theirs = openssl_verify_rate();
	printf("snp_verify ours=%.1f/s openssl_ecdsap384_verify=%.1f/s\n", ours, theirs);
	printf("ratio=%.3f\n", theirs > 0 ? ours / theirs : 0.0);
	cvm_snp_chain_free(chain);
	cvm_snp_certs_clear(&certs);
	cvm_attest_roots_free(roots);
	free(rep);
	return 0;
}
