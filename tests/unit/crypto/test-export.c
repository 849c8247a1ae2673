/* SPDX-License-Identifier: Apache-2.0 */
/* Private-key export keeps PKCS#8 bytes in the key: repeated and concurrent exports return the
 * encoder's bytes, an imported key exports exactly what it was imported from, and the cached
 * bytes never leak across keys (failure twins: different keys, wrong type). */
#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <string.h>
#include <cmocka.h>

#include <opencvm/crypto.h>

#include <openssl/encoder.h>

static struct cvm_secret *export_ok(const struct cvm_key *k)
{
	struct cvm_err err = { 0 };
	struct cvm_secret *s = NULL;
	assert_int_equal(cvm_key_export_private(k, &s, &err), 0);
	assert_non_null(s);
	return s;
}

static void assert_same(const struct cvm_secret *a, const struct cvm_secret *b)
{
	assert_int_equal(a->len, b->len);
	assert_memory_equal(a->data, b->data, a->len);
}

struct race { struct cvm_key *k; struct cvm_secret *out; };

static void *race_export(void *p)
{
	struct race *r = p;
	struct cvm_err err = { 0 };
	if (cvm_key_export_private(r->k, &r->out, &err) < 0)
		r->out = NULL;
	return NULL;
}

static void test_export_cached(void **state)
{
	(void)state;
	struct cvm_err err = { 0 };
	struct cvm_key *rsa = NULL, *ec = NULL;
	assert_int_equal(cvm_key_generate_rsa(2048, 0, &rsa, &err), 0);
	assert_int_equal(cvm_key_generate_ec("P-256", &ec, &err), 0);

	/* Concurrent first exports agree (one encoding wins, the others are freed). */
	struct race rs[4];
	pthread_t th[4];
	for (int i = 0; i < 4; i++) {
		rs[i] = (struct race){ .k = rsa };
		assert_int_equal(pthread_create(&th[i], NULL, race_export, &rs[i]), 0);
	}
	for (int i = 0; i < 4; i++) {
		assert_int_equal(pthread_join(th[i], NULL), 0);
		assert_non_null(rs[i].out);
		assert_same(rs[0].out, rs[i].out);
	}

	/* The bytes are what OpenSSL's PKCS#8 encoder produces for this key. */
	OSSL_ENCODER_CTX *ctx = OSSL_ENCODER_CTX_new_for_pkey(cvm_key_pkey(rsa), EVP_PKEY_KEYPAIR,
							      "DER", "PrivateKeyInfo", NULL);
	unsigned char *der = NULL;
	size_t der_len = 0;
	assert_int_equal(OSSL_ENCODER_to_data(ctx, &der, &der_len), 1);
	OSSL_ENCODER_CTX_free(ctx);
	assert_int_equal(der_len, rs[0].out->len);
	assert_memory_equal(der, rs[0].out->data, der_len);
	OPENSSL_clear_free(der, der_len);

	/* Import then export is byte-identical, and the imported key works. */
	struct cvm_key *back = NULL;
	assert_int_equal(cvm_key_import_private(CVM_KTY_RSA, rs[0].out->data, rs[0].out->len, &back,
						&err), 0);
	struct cvm_secret *again = export_ok(back);
	assert_same(rs[0].out, again);

	/* Failure twins: another key exports other bytes; a type mismatch imports nothing. */
	struct cvm_secret *ecs = export_ok(ec);
	assert_false(ecs->len == again->len && memcmp(ecs->data, again->data, ecs->len) == 0);
	struct cvm_key *wrong = NULL;
	assert_int_equal(cvm_key_import_private(CVM_KTY_EC, rs[0].out->data, rs[0].out->len, &wrong,
						&err), -EINVAL);
	assert_null(wrong);

	cvm_secret_free(ecs);
	cvm_secret_free(again);
	for (int i = 0; i < 4; i++)
		cvm_secret_free(rs[i].out);
	cvm_key_free(back);
	cvm_key_free(ec);
	cvm_key_free(rsa);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_export_cached),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
