/* SPDX-License-Identifier: Apache-2.0 */
/* hsm security domain: 3 officers, quorum 2; activation of a fresh HSM over the same store from
 * decrypted shares; refusals for too few, wrong or foreign shares; disaster recovery into an
 * empty store plus full restore. SQLite and (CVM_TEST_POSTGRES) PostgreSQL. */
#include "keystest.h"

#include <stdlib.h>
#include <unistd.h>

struct officers {
	char *pub[3];
	char *priv[3];
};

static void officers_new(struct officers *o)
{
	for (int i = 0; i < 3; i++) {
		struct cvm_key *k = NULL;
		ASSERT_OK(cvm_key_generate_rsa(2048, 0, &k, err));
		ASSERT_OK(cvm_key_to_pem(k, false, &o->pub[i], err));
		ASSERT_OK(cvm_key_to_pem(k, true, &o->priv[i], err));
		cvm_key_free(k);
	}
}

static void officers_free(struct officers *o)
{
	for (int i = 0; i < 3; i++) {
		free(o->pub[i]);
		free(o->priv[i]);
	}
}

static struct cvm_secret *share(json_t *dl, const char *priv)
{
	struct cvm_secret *s = NULL;
	ASSERT_OK(cvm_hsm_domain_decrypt_share(dl, priv, &s, err));
	return s;
}

static json_t *wrap(struct cvm_hsm *h)
{
	json_t *b = json_pack("{s:s,s:s}", "alg", "A256KW", "value", "AAECAwQFBgcICQoLDA0ODw"),
	       *out = NULL;
	ASSERT_OK(cvm_hsm_key_op(h, &caller, "dk", NULL, "wrapkey", b, &out, err));
	json_decref(b);
	return out;
}

static int unwrap(struct cvm_hsm *h, json_t *w, struct cvm_err *err)
{
	json_t *b = json_pack("{s:s,s:O}", "alg", "A256KW", "value", json_object_get(w, "value")),
	       *out = NULL;
	int r = cvm_hsm_key_op(h, &caller, "dk", NULL, "unwrapkey", b, &out, err);
	if (r == 0)
		assert_string_equal(json_string_value(json_object_get(out, "value")),
				    "AAECAwQFBgcICQoLDA0ODw");
	json_decref(out);
	json_decref(b);
	return r;
}

/* store + not-activated HSM */
static struct cvm_hsm *fresh(struct testdb *db, const char *name, struct cvm_store **s)
{
	*s = testdb_open(db, name);
	return kt_hsm(*s, 7, false);
}

static void create_and_upload(void **state)
{
	struct testdb *db = *state;
	struct officers o;
	officers_new(&o);
	struct cvm_store *s = NULL;
	struct cvm_hsm *h = fresh(db, "sd", &s);
	assert_false(cvm_hsm_domain_exists(h));
	json_t *dl = NULL;
	ASSERT_OK(cvm_hsm_domain_create(h, (const char *const *)o.pub, 3, 2, &dl, err));
	assert_true(cvm_hsm_activated(h));
	assert_true(cvm_hsm_domain_exists(h));
	assert_int_equal(json_integer_value(json_object_get(dl, "quorum")), 2);
	assert_int_equal(json_array_size(json_object_get(dl, "shares")), 3);
	assert_int_equal(strlen(jstr(json_array_get(json_object_get(dl, "shares"), 0),
				     "officer_key_sha256")),
			 64);
	json_t *b = J("{\"kty\":\"oct-HSM\"}"), *out = NULL;
	ASSERT_OK(cvm_hsm_key_create(h, &caller, "dk", b, &out, err));
	json_decref(out);
	json_decref(b);
	json_t *w = wrap(h);
	/* a second domain over the same store is refused */
	json_t *dl2 = NULL;
	ASSERT_ERR(cvm_hsm_domain_create(h, (const char *const *)o.pub, 3, 2, &dl2, err), EEXIST,
		   "Conflict", "already has a security domain");

	/* a fresh process over the same store: sealed material only, nothing works yet */
	struct cvm_hsm *h2 = kt_hsm(s, 7, false);
	assert_false(cvm_hsm_activated(h2));
	assert_true(cvm_hsm_domain_exists(h2));
	ASSERT_ERR(unwrap(h2, w, err), EBUSY, "HsmNotActivated", NULL);

	struct cvm_secret *s0 = share(dl, o.priv[0]), *s1 = share(dl, o.priv[1]),
			  *s2 = share(dl, o.priv[2]);
	/* one share is not enough; a duplicate is refused; a corrupted share does not verify */
	ASSERT_ERR(cvm_hsm_domain_upload(h2, &s0, 1, err), EINVAL, "BadParameter", "shares");
	struct cvm_secret *dup[2] = { s0, s0 };
	ASSERT_ERR(cvm_hsm_domain_upload(h2, dup, 2, err), EINVAL, "BadParameter", "duplicate");
	struct cvm_secret *bad = cvm_secret_from(s1->data, s1->len);
	bad->data[5] ^= 1;
	struct cvm_secret *wrong[2] = { s0, bad };
	ASSERT_ERR(cvm_hsm_domain_upload(h2, wrong, 2, err), EPERM, "Forbidden", NULL);
	assert_false(cvm_hsm_activated(h2));
	/* twin: two good shares (any two) activate it */
	struct cvm_secret *good[2] = { s2, s0 };
	ASSERT_OK(cvm_hsm_domain_upload(h2, good, 2, err));
	assert_true(cvm_hsm_activated(h2));
	ASSERT_OK(unwrap(h2, w, err));
	struct cvm_secret *all[3] = { s0, s1, s2 };
	struct cvm_hsm *h3 = kt_hsm(s, 7, false);
	ASSERT_OK(cvm_hsm_domain_upload(h3, all, 3, err));
	ASSERT_OK(unwrap(h3, w, err));

	/* a share of another domain (same officers) does not open this one */
	struct cvm_store *so = NULL;
	struct cvm_hsm *ho = fresh(db, "sd_other", &so);
	json_t *dlo = NULL;
	ASSERT_OK(cvm_hsm_domain_create(ho, (const char *const *)o.pub, 3, 2, &dlo, err));
	struct cvm_secret *f0 = share(dlo, o.priv[0]), *f1 = share(dlo, o.priv[1]);
	struct cvm_secret *foreign[2] = { f0, f1 };
	struct cvm_hsm *h4 = kt_hsm(s, 7, false);
	ASSERT_ERR(cvm_hsm_domain_upload(h4, foreign, 2, err), EPERM, "Forbidden", NULL);
	struct cvm_secret *mixed[2] = { s0, f1 };
	ASSERT_ERR(cvm_hsm_domain_upload(h4, mixed, 2, err), EPERM, "Forbidden", NULL);
	assert_false(cvm_hsm_activated(h4));

	/* someone who is not an officer gets no share */
	struct cvm_key *stranger = NULL;
	char *spem = NULL;
	ASSERT_OK(cvm_key_generate_rsa(2048, 0, &stranger, err));
	ASSERT_OK(cvm_key_to_pem(stranger, true, &spem, err));
	struct cvm_secret *none = NULL;
	ASSERT_ERR(cvm_hsm_domain_decrypt_share(dl, spem, &none, err), ENOENT, "NotFound", NULL);
	assert_null(none);

	free(spem);
	cvm_key_free(stranger);
	cvm_secret_free(bad);
	cvm_secret_free(s0);
	cvm_secret_free(s1);
	cvm_secret_free(s2);
	cvm_secret_free(f0);
	cvm_secret_free(f1);
	json_decref(dl);
	json_decref(dlo);
	json_decref(w);
	cvm_hsm_free(h);
	cvm_hsm_free(h2);
	cvm_hsm_free(h3);
	cvm_hsm_free(h4);
	cvm_hsm_free(ho);
	cvm_store_close(s);
	cvm_store_close(so);
	officers_free(&o);
}

static void create_refuses_bad_officers(void **state)
{
	struct testdb *db = *state;
	struct officers o;
	officers_new(&o);
	struct cvm_store *s = NULL;
	struct cvm_hsm *h = fresh(db, "sdbad", &s);
	json_t *dl = NULL;
	ASSERT_ERR(cvm_hsm_domain_create(h, (const char *const *)o.pub, 2, 2, &dl, err), EINVAL,
		   "BadParameter", "certificates");
	ASSERT_ERR(cvm_hsm_domain_create(h, (const char *const *)o.pub, 3, 1, &dl, err), EINVAL,
		   "BadParameter", "quorum");
	ASSERT_ERR(cvm_hsm_domain_create(h, (const char *const *)o.pub, 3, 4, &dl, err), EINVAL,
		   "BadParameter", "quorum");
	const char *dupes[3] = { o.pub[0], o.pub[1], o.pub[0] };
	ASSERT_ERR(cvm_hsm_domain_create(h, dupes, 3, 2, &dl, err), EINVAL, "BadParameter",
		   "certificates[2]");
	struct cvm_key *ec = NULL;
	char *ecpem = NULL;
	ASSERT_OK(cvm_key_generate_ec("P-256", &ec, err));
	ASSERT_OK(cvm_key_to_pem(ec, false, &ecpem, err));
	const char *withec[3] = { o.pub[0], ecpem, o.pub[2] };
	ASSERT_ERR(cvm_hsm_domain_create(h, withec, 3, 2, &dl, err), EINVAL, "BadParameter",
		   "certificates[1]");
	const char *garbage[3] = { o.pub[0], o.pub[1], "not a pem" };
	struct cvm_err e = { 0 };
	assert_int_equal(cvm_hsm_domain_create(h, garbage, 3, 2, &dl, &e), -EINVAL);
	assert_non_null(strstr(e.msg, "certificates[2]"));
	assert_null(dl);
	assert_false(cvm_hsm_activated(h));
	assert_false(cvm_hsm_domain_exists(h));
	free(ecpem);
	cvm_key_free(ec);
	cvm_hsm_free(h);
	cvm_store_close(s);
	officers_free(&o);
}

static void unlock_with_key(void **state)
{
	struct testdb *db = *state;
	struct cvm_store *s = NULL;
	struct cvm_hsm *h = fresh(db, "sdkey", &s);
	struct cvm_secret *k = test_domain_key(0x33), *k2 = test_domain_key(0x34);
	ASSERT_ERR(cvm_hsm_domain_unlock(h, k, err), EINVAL, "BadParameter", "none yet");
	ASSERT_OK(cvm_hsm_domain_create_with_key(h, k, err));
	struct cvm_hsm *h2 = kt_hsm(s, 7, false);
	ASSERT_ERR(cvm_hsm_domain_unlock(h2, k2, err), EPERM, "Forbidden", NULL);
	assert_false(cvm_hsm_activated(h2));
	ASSERT_OK(cvm_hsm_domain_unlock(h2, k, err));
	assert_true(cvm_hsm_activated(h2));
	ASSERT_ERR(cvm_hsm_domain_create_dev(h2, err), EEXIST, "Conflict", NULL);
	cvm_secret_free(k);
	cvm_secret_free(k2);
	cvm_hsm_free(h);
	cvm_hsm_free(h2);
	cvm_store_close(s);
}

static void disaster_recovery(void **state)
{
	struct testdb *db = *state;
	struct officers o;
	officers_new(&o);
	struct cvm_store *s = NULL;
	struct cvm_hsm *h = fresh(db, "sddr", &s);
	json_t *dl = NULL;
	ASSERT_OK(cvm_hsm_domain_create(h, (const char *const *)o.pub, 3, 2, &dl, err));
	json_t *b = J("{\"kty\":\"oct-HSM\"}"), *out = NULL;
	ASSERT_OK(cvm_hsm_key_create(h, &caller, "dk", b, &out, err));
	json_decref(out);
	json_decref(b);
	json_t *w = wrap(h);
	char tmpl[] = "/tmp/cvm-hsm-dr-XXXXXX";
	assert_non_null(mkdtemp(tmpl));
	ASSERT_OK(cvm_hsm_full_backup(h, tmpl, err));

	/* a brand-new, empty store: officers bring the download and two shares */
	struct cvm_store *s2 = NULL;
	struct cvm_hsm *h2 = fresh(db, "sddr_new", &s2);
	struct cvm_secret *s0 = share(dl, o.priv[0]), *s2s = share(dl, o.priv[2]);
	struct cvm_secret *one[1] = { s0 };
	ASSERT_ERR(cvm_hsm_domain_restore(h2, dl, one, 1, err), EINVAL, "BadParameter", "shares");
	json_t *forged = json_deep_copy(dl);
	json_object_set_new(forged, "check", json_string("AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA"));
	struct cvm_secret *two[2] = { s0, s2s };
	ASSERT_ERR(cvm_hsm_domain_restore(h2, forged, two, 2, err), EPERM, "Forbidden", NULL);
	assert_false(cvm_hsm_domain_exists(h2));
	ASSERT_OK(cvm_hsm_domain_restore(h2, dl, two, 2, err));
	assert_true(cvm_hsm_activated(h2));
	assert_true(cvm_hsm_domain_exists(h2));
	ASSERT_OK(cvm_hsm_full_restore(h2, tmpl, err));
	ASSERT_OK(unwrap(h2, w, err));

	char *m = cvm_path_join(tmpl, "manifest.json"), *d = cvm_path_join(tmpl, "keys.json");
	unlink(m);
	unlink(d);
	rmdir(tmpl);
	free(m);
	free(d);
	json_decref(forged);
	cvm_secret_free(s0);
	cvm_secret_free(s2s);
	json_decref(w);
	json_decref(dl);
	cvm_hsm_free(h);
	cvm_hsm_free(h2);
	cvm_store_close(s);
	cvm_store_close(s2);
	officers_free(&o);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(create_and_upload),
		cmocka_unit_test(create_refuses_bad_officers),
		cmocka_unit_test(unlock_with_key),
		cmocka_unit_test(disaster_recovery),
	};
	return testdb_run("hsm-domain", tests, CVM_ARRAY_SIZE(tests));
}
