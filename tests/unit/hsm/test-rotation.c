/* SPDX-License-Identifier: Apache-2.0 */
/* hsm rotation policy validation, manual rotation and scheduled rotation/notification, on
 * SQLite and (CVM_TEST_POSTGRES) PostgreSQL. */
#include "keystest.h"

#include <pthread.h>

#define DAY 86400

static void policy_validation(void **state)
{
	struct kt t;
	kt_open(&t, state, "polval", 7, false);
	json_decref(kt_create(&t, "k", "{\"kty\":\"EC\"}"));
	static const struct { const char *body, *substr; } bad[] = {
		{ "{\"attributes\":{\"expiryTime\":\"P27D\"}}", "attributes.expiryTime" },
		{ "{\"attributes\":{\"expiryTime\":\"90 days\"}}", "attributes.expiryTime" },
		{ "{\"lifetimeActions\":[{\"trigger\":{\"timeAfterCreate\":\"P6D\"},\"action\":"
		  "{\"type\":\"Rotate\"}}]}",
		  "lifetimeActions[0].trigger.timeAfterCreate" },
		{ "{\"lifetimeActions\":[{\"trigger\":{\"timeAfterCreate\":\"P30D\"},\"action\":"
		  "{\"type\":\"Notify\"}}]}",
		  "Notify" },
		{ "{\"lifetimeActions\":[{\"trigger\":{\"timeAfterCreate\":\"P30D\","
		  "\"timeBeforeExpiry\":\"P30D\"},\"action\":{\"type\":\"Rotate\"}}]}",
		  "exactly one" },
		{ "{\"lifetimeActions\":[{\"trigger\":{},\"action\":{\"type\":\"Rotate\"}}]}",
		  "exactly one" },
		{ "{\"lifetimeActions\":[{\"trigger\":{\"timeAfterCreate\":\"P30D\"},\"action\":"
		  "{\"type\":\"Explode\"}}]}",
		  "lifetimeActions[0].action.type" },
		{ "{\"lifetimeActions\":[{\"trigger\":{\"timeAfterCreate\":\"P30D\"},\"action\":"
		  "{\"type\":\"Rotate\"}},{\"trigger\":{\"timeBeforeExpiry\":\"P30D\"},\"action\":"
		  "{\"type\":\"rotate\"}}]}",
		  "only one Rotate" },
		{ "{\"lifetimeActions\":[{\"trigger\":{\"timeAfterCreate\":\"P85D\"},\"action\":"
		  "{\"type\":\"Rotate\"}}],\"attributes\":{\"expiryTime\":\"P90D\"}}",
		  "expiryTime minus P7D" },
		{ "{\"lifetimeActions\":{}}", "lifetimeActions" },
		{ "{\"lifetimeActions\":[{\"action\":{\"type\":\"Rotate\"}}]}", "trigger" },
	};
	for (size_t i = 0; i < CVM_ARRAY_SIZE(bad); i++) {
		json_t *b = J(bad[i].body), *out = NULL;
		struct cvm_err e = { 0 };
		int r = cvm_hsm_rotation_policy_put(t.h, &caller, "k", b, &out, &e);
		if (r != -EINVAL || strcmp(e.code, "BadParameter") || !strstr(e.msg, bad[i].substr))
			fail_msg("case %zu: %d %s %s", i, r, e.code, e.msg);
		json_decref(b);
	}
	/* twin: valid policies are stored and read back normalized */
	json_t *out = NULL;
	ASSERT_OK(cvm_hsm_rotation_policy_get(t.h, &caller, "k", &out, err));
	assert_string_equal(jstr(out, "id"), "https://hsm.test:8443/keys/k/rotationpolicy");
	assert_string_equal(jstr(json_array_get(json_object_get(out, "lifetimeActions"), 0),
				 "action.type"),
			    "Notify");
	json_decref(out);
	json_t *good = J("{\"lifetimeActions\":[{\"trigger\":{\"timeAfterCreate\":\"P30D\"},"
			 "\"action\":{\"type\":\"rotate\"}},{\"trigger\":{\"timeBeforeExpiry\":"
			 "\"P7D\"},\"action\":{\"type\":\"notify\"}}],\"attributes\":"
			 "{\"expiryTime\":\"P28D\"}}");
	json_t *bad30 = J("{\"lifetimeActions\":[{\"trigger\":{\"timeAfterCreate\":\"P30D\"},"
			  "\"action\":{\"type\":\"rotate\"}}],\"attributes\":{\"expiryTime\":"
			  "\"P28D\"}}");
	ASSERT_ERR(cvm_hsm_rotation_policy_put(t.h, &caller, "k", bad30, &out, err), EINVAL,
		   "BadParameter", "expiryTime minus P7D");
	json_decref(bad30);
	json_decref(good);
	good = J("{\"lifetimeActions\":[{\"trigger\":{\"timeAfterCreate\":\"P21D\"},"
		 "\"action\":{\"type\":\"rotate\"}},{\"trigger\":{\"timeBeforeExpiry\":"
		 "\"P7D\"},\"action\":{\"type\":\"notify\"}}],\"attributes\":"
		 "{\"expiryTime\":\"P28D\"}}");
	ASSERT_OK(cvm_hsm_rotation_policy_put(t.h, &caller, "k", good, &out, err));
	json_t *la = json_object_get(out, "lifetimeActions");
	assert_int_equal(json_array_size(la), 2);
	assert_string_equal(jstr(json_array_get(la, 0), "action.type"), "Rotate");
	assert_string_equal(jstr(json_array_get(la, 1), "action.type"), "Notify");
	assert_string_equal(jstr(out, "attributes.expiryTime"), "P28D");
	int64_t created = json_integer_value(cvm_json_path(out, "attributes.created"));
	assert_true(created > 0);
	json_decref(out);
	ASSERT_OK(cvm_hsm_rotation_policy_get(t.h, &caller, "k", &out, err));
	assert_string_equal(jstr(json_array_get(json_object_get(out, "lifetimeActions"), 0),
				 "trigger.timeAfterCreate"),
			    "P21D");
	json_decref(out);
	out = NULL;
	ASSERT_ERR(cvm_hsm_rotation_policy_put(t.h, &caller, "nokey", good, &out, err), ENOENT,
		   "KeyNotFound", NULL);
	ASSERT_ERR(cvm_hsm_rotation_policy_get(t.h, &caller, "nokey", &out, err), ENOENT,
		   "KeyNotFound", NULL);
	assert_null(out);
	json_decref(good);
	kt_close(&t);
}

static void manual_rotate(void **state)
{
	struct kt t;
	kt_open(&t, state, "manrot", 7, false);
	const char *policy = "{\"version\":\"1.0.0\",\"anyOf\":[{\"authority\":\"https://maa.test\","
			     "\"allOf\":[{\"claim\":\"a\",\"equals\":true}]}]}";
	char *data = cvm_b64url_encode(policy, strlen(policy));
	char body[512];
	snprintf(body, sizeof(body),
		 "{\"kty\":\"RSA-HSM\",\"key_size\":3072,\"key_ops\":[\"unwrapKey\",\"wrapKey\"],"
		 "\"tags\":{\"t\":\"1\"},\"attributes\":{\"exportable\":true},\"release_policy\":"
		 "{\"data\":\"%s\"}}",
		 data);
	json_t *v1 = kt_create(&t, "r", body);
	json_t *pol = J("{\"attributes\":{\"expiryTime\":\"P60D\"}}"), *out = NULL;
	ASSERT_OK(cvm_hsm_rotation_policy_put(t.h, &caller, "r", pol, &out, err));
	json_decref(out);
	json_decref(pol);
	json_t *v2 = NULL;
	int64_t before = cvm_now();
	ASSERT_OK(cvm_hsm_key_rotate(t.h, &caller, "r", &v2, err));
	assert_string_not_equal(kid_version(v1), kid_version(v2));
	assert_string_equal(jstr(v2, "key.kty"), "RSA-HSM");
	assert_string_not_equal(jstr(v2, "key.n"), jstr(v1, "key.n"));
	assert_int_equal(strlen(jstr(v2, "key.n")), strlen(jstr(v1, "key.n")));
	assert_int_equal(json_array_size(cvm_json_path(v2, "key.key_ops")), 2);
	assert_string_equal(jstr(v2, "tags.t"), "1");
	assert_string_equal(jstr(v2, "release_policy.data"), data);
	assert_true(json_is_true(cvm_json_path(v2, "attributes.exportable")));
	int64_t exp = json_integer_value(cvm_json_path(v2, "attributes.exp"));
	assert_true(exp >= before + 60 * DAY && exp <= cvm_now() + 60 * DAY);
	ASSERT_OK(cvm_hsm_key_get(t.h, &caller, "r", NULL, &out, err));
	assert_string_equal(kid_version(out), kid_version(v2));
	json_decref(out);
	out = NULL;
	ASSERT_ERR(cvm_hsm_key_rotate(t.h, &caller, "nokey", &out, err), ENOENT, "KeyNotFound",
		   NULL);
	/* compare-and-set: a rotation based on a stale current version is refused */
	char ver[33];
	ASSERT_ERR(cvm_hsm_rotate_at(t.h, &caller, "r", kid_version(v1), cvm_now(), ver, err),
		   EALREADY, "Conflict", NULL);
	json_decref(v1);
	json_decref(v2);
	free(data);
	kt_close(&t);
}

static void tick_rotates_when_due(void **state)
{
	struct kt t;
	kt_open(&t, state, "tickrot", 7, false);
	json_t *v1 = kt_create(&t, "auto", "{\"kty\":\"oct-HSM\"}");
	json_decref(kt_create(&t, "manual", "{\"kty\":\"oct-HSM\"}"));
	int64_t c1 = json_integer_value(cvm_json_path(v1, "attributes.created"));
	json_t *pol = J("{\"lifetimeActions\":[{\"trigger\":{\"timeAfterCreate\":\"P30D\"},"
			"\"action\":{\"type\":\"Rotate\"}}],\"attributes\":{\"expiryTime\":"
			"\"P90D\"}}"),
	       *out = NULL;
	ASSERT_OK(cvm_hsm_rotation_policy_put(t.h, &caller, "auto", pol, &out, err));
	json_decref(out);
	json_decref(pol);
	struct cvm_err e = { 0 };
	assert_int_equal(cvm_hsm_tick(t.h, c1 + 29 * DAY, &e), 0);
	ASSERT_OK(cvm_hsm_key_get(t.h, &caller, "auto", NULL, &out, err));
	assert_string_equal(kid_version(out), kid_version(v1));
	json_decref(out);
	/* due: one rotation, by one of two HSMs sharing the database */
	struct cvm_hsm *h2 = kt_hsm(t.store, 7, false);
	struct cvm_secret *k = test_domain_key(0x11);
	ASSERT_OK(cvm_hsm_domain_unlock(h2, k, err));
	cvm_secret_free(k);
	int64_t now = c1 + 30 * DAY;
	int n1 = cvm_hsm_tick(t.h, now, &e);
	int n2 = cvm_hsm_tick(h2, now, &e);
	assert_int_equal(n1 + n2, 1);
	ASSERT_OK(cvm_hsm_key_get(t.h, &caller, "auto", NULL, &out, err));
	assert_string_not_equal(kid_version(out), kid_version(v1));
	assert_int_equal(json_integer_value(cvm_json_path(out, "attributes.created")), now);
	assert_int_equal(json_integer_value(cvm_json_path(out, "attributes.exp")), now + 90 * DAY);
	json_decref(out);
	json_t *vers = NULL;
	ASSERT_OK(cvm_hsm_key_versions(t.h, &caller, "auto", 0, NULL, NULL, &vers, err));
	assert_int_equal(json_array_size(json_object_get(vers, "value")), 2);
	json_decref(vers);
	ASSERT_OK(cvm_hsm_key_versions(t.h, &caller, "manual", 0, NULL, NULL, &vers, err));
	assert_int_equal(json_array_size(json_object_get(vers, "value")), 1);
	json_decref(vers);
	/* the new version is not due yet; 30 days after it, it is */
	assert_int_equal(cvm_hsm_tick(t.h, now + DAY, &e), 0);
	assert_int_equal(cvm_hsm_tick(h2, now + 30 * DAY, &e), 1);
	cvm_hsm_free(h2);
	json_decref(v1);
	kt_close(&t);
}

static void tick_notifies_once(void **state)
{
	struct kt t;
	kt_open(&t, state, "ticknotify", 7, false);
	int64_t now = cvm_now();
	char body[128];
	snprintf(body, sizeof(body), "{\"kty\":\"EC\",\"attributes\":{\"exp\":%lld}}",
		 (long long)(now + 40 * DAY));
	json_t *v1 = kt_create(&t, "n", body);
	json_t *pol = J("{\"lifetimeActions\":[{\"trigger\":{\"timeBeforeExpiry\":\"P10D\"},"
			"\"action\":{\"type\":\"Notify\"}}]}"),
	       *out = NULL;
	ASSERT_OK(cvm_hsm_rotation_policy_put(t.h, &caller, "n", pol, &out, err));
	json_decref(out);
	json_decref(pol);
	struct cvm_err e = { 0 };
	assert_int_equal(cvm_hsm_tick(t.h, now + 29 * DAY, &e), 0);
	assert_int_equal(cvm_hsm_tick(t.h, now + 31 * DAY, &e), 1);
	assert_int_equal(cvm_hsm_tick(t.h, now + 32 * DAY, &e), 0);
	/* notify never rotates */
	ASSERT_OK(cvm_hsm_key_get(t.h, &caller, "n", NULL, &out, err));
	assert_string_equal(kid_version(out), kid_version(v1));
	json_decref(out);
	/* a not-activated HSM rotates nothing */
	struct cvm_hsm *cold = kt_hsm(t.store, 7, false);
	assert_int_equal(cvm_hsm_tick(cold, now + 365 * DAY, &e), 0);
	cvm_hsm_free(cold);
	json_decref(v1);
	kt_close(&t);
}

struct ticker {
	struct cvm_hsm *h;
	int64_t now;
	int done;
	struct cvm_err err;
};

static void *tick_thread(void *arg)
{
	struct ticker *tk = arg;
	tk->done = cvm_hsm_tick(tk->h, tk->now, &tk->err);
	return NULL;
}

/* Several processes tick at the same instant: each due rotation happens exactly once. */
static void concurrent_ticks(void **state)
{
	struct kt t;
	kt_open(&t, state, "tickrace", 7, false);
	json_t *pol = J("{\"lifetimeActions\":[{\"trigger\":{\"timeAfterCreate\":\"P7D\"},"
			"\"action\":{\"type\":\"Rotate\"}}]}");
	int64_t created = 0;
	for (int i = 0; i < 5; i++) {
		char name[16];
		snprintf(name, sizeof(name), "r%d", i);
		json_t *b = kt_create(&t, name, "{\"kty\":\"EC\"}"), *out = NULL;
		created = json_integer_value(cvm_json_path(b, "attributes.created"));
		json_decref(b);
		ASSERT_OK(cvm_hsm_rotation_policy_put(t.h, &caller, name, pol, &out, err));
		json_decref(out);
	}
	json_decref(pol);
	struct ticker tk[3] = { 0 };
	pthread_t th[3];
	for (int i = 0; i < 3; i++) {
		tk[i].h = kt_hsm(t.store, 7, false);
		tk[i].now = created + 8 * DAY;
		struct cvm_secret *k = test_domain_key(0x11);
		ASSERT_OK(cvm_hsm_domain_unlock(tk[i].h, k, err));
		cvm_secret_free(k);
	}
	for (int i = 0; i < 3; i++)
		assert_int_equal(pthread_create(&th[i], NULL, tick_thread, &tk[i]), 0);
	int total = 0;
	for (int i = 0; i < 3; i++) {
		pthread_join(th[i], NULL);
		if (tk[i].done < 0)
			fail_msg("tick %d: %s: %s", i, tk[i].err.code, tk[i].err.msg);
		total += tk[i].done;
		cvm_hsm_free(tk[i].h);
	}
	assert_int_equal(total, 5);
	for (int i = 0; i < 5; i++) {
		char name[16];
		snprintf(name, sizeof(name), "r%d", i);
		json_t *vers = NULL;
		ASSERT_OK(cvm_hsm_key_versions(t.h, &caller, name, 0, NULL, NULL, &vers, err));
		assert_int_equal(json_array_size(json_object_get(vers, "value")), 2);
		json_decref(vers);
	}
	kt_close(&t);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(policy_validation),
		cmocka_unit_test(manual_rotate),
		cmocka_unit_test(tick_rotates_when_due),
		cmocka_unit_test(tick_notifies_once),
		cmocka_unit_test(concurrent_ticks),
	};
	return testdb_run("hsm-rotation", tests, CVM_ARRAY_SIZE(tests));
}
