/* SPDX-License-Identifier: Apache-2.0 */
/* SoftHSM2 anchor for the unwrapkey benchmark: in-process PKCS#11 C_Decrypt with
 * CKM_RSA_PKCS_OAEP on an RSA-2048 key, one session per thread. SHA-256/MGF1-SHA256 is asked
 * for first; SoftHSM2 before 2.7 accepts only SHA-1 for OAEP (CKR_ARGUMENTS_BAD otherwise), so
 * it falls back to SHA-1 and says so: the RSA private-key operation, not the hash over a 32-byte
 * message, is the cost being compared.
 *
 * bench-softhsm-oaep MODULE_SO TOKEN_LABEL USER_PIN THREADS SECONDS
 * (SOFTHSM2_CONF must point at a config whose token dir holds an initialized token.)
 * Prints: oaep_hash=H decrypts=N seconds=S ops=R */
#include <dlfcn.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <p11-kit/pkcs11.h>

static CK_FUNCTION_LIST_PTR p11;

struct job {
	CK_SLOT_ID slot;
	const char *pin;
	double seconds;
	CK_OBJECT_HANDLE priv;
	CK_BYTE ct[256];
	CK_ULONG ct_len;
	atomic_long ops;
	atomic_int failed;
};

static double now_s(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static CK_RSA_PKCS_OAEP_PARAMS oaep = { CKM_SHA256, CKG_MGF1_SHA256, CKZ_DATA_SPECIFIED, NULL, 0 };

static void *worker(void *arg)
{
	struct job *j = arg;
	CK_SESSION_HANDLE s;
	CK_MECHANISM m = { CKM_RSA_PKCS_OAEP, &oaep, sizeof(oaep) };
	if (p11->C_OpenSession(j->slot, CKF_SERIAL_SESSION, NULL, NULL, &s) != CKR_OK) {
		atomic_store(&j->failed, 1);
		return NULL;
	}
	double end = now_s() + j->seconds;
	while (now_s() < end) {
		CK_BYTE out[256];
		CK_ULONG out_len = sizeof(out);
		CK_RV rv = p11->C_DecryptInit(s, &m, j->priv);
		if (rv == CKR_OK)
			rv = p11->C_Decrypt(s, j->ct, j->ct_len, out, &out_len);
		if (rv != CKR_OK || out_len != 32) {
			fprintf(stderr, "C_Decrypt: rv=0x%lx len=%lu\n", (unsigned long)rv,
				(unsigned long)out_len);
			atomic_store(&j->failed, 1);
			break;
		}
		atomic_fetch_add(&j->ops, 1);
	}
	p11->C_CloseSession(s);
	return NULL;
}

int main(int argc, char **argv)
{
	if (argc != 6) {
		fprintf(stderr, "usage: %s MODULE_SO TOKEN_LABEL USER_PIN THREADS SECONDS\n", argv[0]);
		return 2;
	}
	void *lib = dlopen(argv[1], RTLD_NOW);
	if (!lib) {
		fprintf(stderr, "dlopen %s: %s\n", argv[1], dlerror());
		return 1;
	}
	CK_C_GetFunctionList gfl = (CK_C_GetFunctionList)dlsym(lib, "C_GetFunctionList");
	/* several threads call in: let the library use OS locking */
	CK_C_INITIALIZE_ARGS init = { .flags = CKF_OS_LOCKING_OK };
	if (!gfl || gfl(&p11) != CKR_OK || p11->C_Initialize(&init) != CKR_OK) {
		fprintf(stderr, "PKCS#11 initialization failed\n");
		return 1;
	}
	struct job j = { .pin = argv[3], .seconds = atof(argv[5]) };
	int threads = atoi(argv[4]);
	CK_SLOT_ID slots[16];
	CK_ULONG nslots = 16;
	if (p11->C_GetSlotList(CK_TRUE, slots, &nslots) != CKR_OK || nslots == 0) {
		fprintf(stderr, "no token\n");
		return 1;
	}
	bool found = false;
	for (CK_ULONG i = 0; i < nslots && !found; i++) {
		CK_TOKEN_INFO ti;
		if (p11->C_GetTokenInfo(slots[i], &ti) != CKR_OK)
			continue;
		size_t l = strlen(argv[2]);
		if (l <= sizeof(ti.label) && !memcmp(ti.label, argv[2], l)) {
			j.slot = slots[i];
			found = true;
		}
	}
	if (!found) {
		fprintf(stderr, "token %s not found\n", argv[2]);
		return 1;
	}
	CK_SESSION_HANDLE s;
	if (p11->C_OpenSession(j.slot, CKF_SERIAL_SESSION | CKF_RW_SESSION, NULL, NULL, &s) != CKR_OK ||
	    p11->C_Login(s, CKU_USER, (CK_UTF8CHAR_PTR)j.pin, strlen(j.pin)) != CKR_OK) {
		fprintf(stderr, "login failed\n");
		return 1;
	}
	CK_ULONG bits = 2048;
	CK_BYTE exp[] = { 1, 0, 1 };
	CK_BBOOL yes = CK_TRUE, no = CK_FALSE;
	CK_ATTRIBUTE pub_t[] = {
		{ CKA_MODULUS_BITS, &bits, sizeof(bits) }, { CKA_PUBLIC_EXPONENT, exp, sizeof(exp) },
		{ CKA_ENCRYPT, &yes, sizeof(yes) },        { CKA_TOKEN, &no, sizeof(no) },
	};
	CK_ATTRIBUTE priv_t[] = {
		{ CKA_DECRYPT, &yes, sizeof(yes) }, { CKA_TOKEN, &no, sizeof(no) },
		{ CKA_PRIVATE, &yes, sizeof(yes) }, { CKA_SENSITIVE, &yes, sizeof(yes) },
	};
	CK_MECHANISM gen = { CKM_RSA_PKCS_KEY_PAIR_GEN, NULL, 0 };
	CK_OBJECT_HANDLE pub;
	if (p11->C_GenerateKeyPair(s, &gen, pub_t, 4, priv_t, 4, &pub, &j.priv) != CKR_OK) {
		fprintf(stderr, "key generation failed\n");
		return 1;
	}
	CK_MECHANISM m = { CKM_RSA_PKCS_OAEP, &oaep, sizeof(oaep) };
	CK_BYTE pt[32];
	memset(pt, 0x5a, sizeof(pt));
	j.ct_len = sizeof(j.ct);
	CK_RV rv = p11->C_EncryptInit(s, &m, pub);
	if (rv == CKR_ARGUMENTS_BAD) {
		oaep.hashAlg = CKM_SHA_1;
		oaep.mgf = CKG_MGF1_SHA1;
		rv = p11->C_EncryptInit(s, &m, pub);
	}
	if (rv == CKR_OK)
		rv = p11->C_Encrypt(s, pt, sizeof(pt), j.ct, &j.ct_len);
	if (rv != CKR_OK) {
		fprintf(stderr, "encrypt failed: rv=0x%lx\n", (unsigned long)rv);
		return 1;
	}
	/* session objects are visible to the other sessions of this application while s is open */
	pthread_t t[64];
	if (threads < 1 || threads > 64)
		return 2;
	double start = now_s();
	for (int i = 0; i < threads; i++)
		pthread_create(&t[i], NULL, worker, &j);
	for (int i = 0; i < threads; i++)
		pthread_join(t[i], NULL);
	double el = now_s() - start;
	long ops = atomic_load(&j.ops);
	printf("oaep_hash=%s decrypts=%ld seconds=%.2f ops=%.1f\n",
	       oaep.hashAlg == CKM_SHA256 ? "sha256" : "sha1", ops, el, (double)ops / el);
	p11->C_Logout(s);
	p11->C_CloseSession(s);
	p11->C_Finalize(NULL);
	return atomic_load(&j.failed) ? 1 : 0;
}
