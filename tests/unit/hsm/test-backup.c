/* SPDX-License-Identifier: Apache-2.0 */
/* hsm key backup blobs and full backups: round trips into a second HSM of the same security
 * domain, refusals for another domain and for tampering, strict payload parsing. SQLite and
 * (CVM_TEST_POSTGRES) PostgreSQL. */
#include "keystest.h"

#include <stdlib.h>
#include <unistd.h>

/* a second HSM on a fresh database, activated with domain key fill */
static struct cvm_hsm *other_hsm(struct testdb *db, const char *name, uint8_t fill,
				 struct cvm_store **store)
{
	*store = testdb_open(db, name);
	struct cvm_hsm *h = kt_hsm(*store, 7, false);
	struct cvm_secret *k = test_domain_key(fill);
	ASSERT_OK(cvm_hsm_domain_create_with_key(h, k, err));
	cvm_secret_free(k);
	return h;
}

static json_t *wrap(struct cvm_hsm *h, const char *name, const char *version)
{
	json_t *b = json_pack("{s:s,s:s}", "alg", "A256KW", "value", "AAECAwQFBgcICQoLDA0ODw"),
	       *out = NULL;
	ASSERT_OK(cvm_hsm_key_op(h, &caller, name, version, "wrapkey", b, &out, err));
	json_decref(b);
	return out;
}

static int unwrap(struct cvm_hsm *h, const char *name, const char *version, json_t *wrapped,
		  struct cvm_err *err)
{
	json_t *b = json_pack("{s:s,s:O}", "alg", "A256KW", "value",
			      json_object_get(wrapped, "value")),
	       *out = NULL;
	int r = cvm_hsm_key_op(h, &caller, name, version, "unwrapkey", b, &out, err);
	if (r == 0)
		assert_string_equal(json_string_value(json_object_get(out, "value")),
				    "AAECAwQFBgcICQoLDA0ODw");
	json_decref(out);
	json_decref(b);
	return r;
}

static int restore(struct cvm_hsm *h, const char *value, json_t **out, struct cvm_err *err)
{
	json_t *b = json_pack("{s:s}", "value", value);
	int r = cvm_hsm_key_restore(h, &caller, b, out, err);
	json_decref(b);
	return r;
}

static void key_backup_roundtrip(void **state)
{
	struct kt t;
	kt_open(&t, state, "bk_a", 7, false);
	json_t *v1 = kt_create(&t, "bk", "{\"kty\":\"oct-HSM\",\"tags\":{\"x\":\"y\"}}");
	json_t *v2 = kt_create(&t, "bk", "{\"kty\":\"oct-HSM\"}");
	json_t *pol = J("{\"attributes\":{\"expiryTime\":\"P30D\"}}"), *out = NULL;
	ASSERT_OK(cvm_hsm_rotation_policy_put(t.h, &caller, "bk", pol, &out, err));
	json_decref(out);
	json_decref(pol);
	json_t *w = wrap(t.h, "bk", kid_version(v1));
	json_t *blob = NULL;
	ASSERT_OK(cvm_hsm_key_backup(t.h, &caller, "bk", &blob, err));
	const char *value = json_string_value(json_object_get(blob, "value"));
	assert_non_null(value);
	ASSERT_ERR(cvm_hsm_key_backup(t.h, &caller, "nokey", &out, err), ENOENT, "KeyNotFound",
		   NULL);

	struct cvm_store *sb = NULL;
	struct cvm_hsm *hb = other_hsm(t.db, "bk_b", 0x11, &sb);
	ASSERT_OK(restore(hb, value, &out, err));
	assert_string_equal(kid_version(out), kid_version(v2));
	json_decref(out);
	ASSERT_OK(unwrap(hb, "bk", kid_version(v1), w, err));
	json_t *vers = NULL;
	ASSERT_OK(cvm_hsm_key_versions(hb, &caller, "bk", 0, NULL, NULL, &vers, err));
	assert_int_equal(json_array_size(json_object_get(vers, "value")), 2);
	json_decref(vers);
	ASSERT_OK(cvm_hsm_key_get(hb, &caller, "bk", kid_version(v1), &out, err));
	assert_string_equal(jstr(out, "tags.x"), "y");
	json_decref(out);
	ASSERT_OK(cvm_hsm_rotation_policy_get(hb, &caller, "bk", &out, err));
	assert_string_equal(jstr(out, "attributes.expiryTime"), "P30D");
	json_decref(out);
	out = NULL;
	/* twins: the name exists / is soft-deleted */
	ASSERT_ERR(restore(hb, value, &out, err), EEXIST, "Conflict", "already exists");
	ASSERT_OK(cvm_hsm_key_delete(hb, &caller, "bk", &out, err));
	json_decref(out);
	out = NULL;
	ASSERT_ERR(restore(hb, value, &out, err), EEXIST, "Conflict", "deleted but recoverable");
	ASSERT_OK(cvm_hsm_deleted_purge(hb, &caller, "bk", err));
	ASSERT_OK(restore(hb, value, &out, err));
	json_decref(out);

	cvm_hsm_free(hb);
	cvm_store_close(sb);
	json_decref(blob);
	json_decref(w);
	json_decref(v1);
	json_decref(v2);
	kt_close(&t);
}

static void key_backup_refusals(void **state)
{
	struct kt t;
	kt_open(&t, state, "bkr_a", 7, false);
	json_decref(kt_create(&t, "bk", "{\"kty\":\"RSA\"}"));
	json_t *blob = NULL, *out = NULL;
	ASSERT_OK(cvm_hsm_key_backup(t.h, &caller, "bk", &blob, err));
	const char *value = json_string_value(json_object_get(blob, "value"));
	struct cvm_store *sc = NULL;
	struct cvm_hsm *hc = other_hsm(t.db, "bkr_c", 0x22, &sc);
	ASSERT_ERR(restore(hc, value, &out, err), EBADMSG, "BadParameter",
		   "value: backup blob is corrupt or from another security domain");
	/* tampered: one bit anywhere */
	uint8_t *raw = NULL;
	size_t len = 0;
	ASSERT_OK(cvm_b64url_decode(value, strlen(value), &raw, &len, "value", err));
	size_t where[] = { 0, 8, len / 2, len - 1 };
	for (size_t i = 0; i < CVM_ARRAY_SIZE(where); i++) {
		raw[where[i]] ^= 0x04;
		char *enc = cvm_b64url_encode(raw, len);
		ASSERT_ERR(restore(t.h, enc, &out, err), EBADMSG, "BadParameter", "corrupt");
		free(enc);
		raw[where[i]] ^= 0x04;
	}
	char *trunc = cvm_b64url_encode(raw, len - 1);
	ASSERT_ERR(restore(t.h, trunc, &out, err), EBADMSG, "BadParameter", "corrupt");
	free(trunc);
	free(raw);
	ASSERT_ERR(restore(t.h, "***", &out, err), EINVAL, "BadParameter", "value");
	json_t *empty = J("{}");
	ASSERT_ERR(cvm_hsm_key_restore(t.h, &caller, empty, &out, err), EINVAL, "BadParameter",
		   "value");
	json_decref(empty);
	assert_null(out);
	cvm_hsm_free(hc);
	cvm_store_close(sc);
	json_decref(blob);
	kt_close(&t);
}

static void payload_parser_is_strict(void **state)
{
	(void)state;
	const char *ver = "0123456789abcdef0123456789abcdef";
	char good_version[1024];
	snprintf(good_version, sizeof(good_version),
		 "{\"version\":\"%s\",\"kty\":\"oct-HSM\",\"key_size\":256,\"key_ops\":[\"encrypt\"],"
		 "\"public_jwk\":{\"kty\":\"oct\"},\"enabled\":true,\"exportable\":false,"
		 "\"created\":1,\"updated\":2,\"sealed\":\"%s\"}",
		 ver, "AQIDBAUGBwgJCgsMDQ4PEBESExQVFhcYGRobHB0eHyAh");
	char good[2048];
	snprintf(good, sizeof(good),
		 "{\"format\":\"opencvm-key-backup\",\"v\":1,\"key\":{\"name\":\"k\","
		 "\"current_version\":\"%s\",\"created\":1,\"updated\":2,\"versions\":[%s]}}",
		 ver, good_version);
	struct cvm_hsm_backup *b = NULL;
	ASSERT_OK(cvm_hsm_backup_parse_payload((const uint8_t *)good, strlen(good), &b, err));
	assert_string_equal(b->name, "k");
	assert_int_equal(b->nversions, 1);
	assert_int_equal(b->versions[0].sealed_len, 33);
	cvm_hsm_backup_free(b);

	const char *bad[] = {
		"",
		"[]",
		"{}",
		"{\"format\":\"other\",\"v\":1,\"key\":{}}",
		"{\"format\":\"opencvm-key-backup\",\"v\":2,\"key\":{}}",
		"{\"format\":\"opencvm-key-backup\",\"v\":1,\"key\":{\"name\":\"bad name\"}}",
		"{\"format\":\"opencvm-key-backup\",\"v\":1,\"key\":{\"name\":\"k\","
		"\"current_version\":\"0123456789abcdef0123456789abcdee\",\"created\":1,"
		"\"updated\":2,\"versions\":[]}}",
	};
	for (size_t i = 0; i < CVM_ARRAY_SIZE(bad); i++) {
		b = NULL;
		struct cvm_err e = { 0 };
		assert_int_equal(cvm_hsm_backup_parse_payload((const uint8_t *)bad[i],
							      strlen(bad[i]), &b, &e),
				 -EINVAL);
		assert_null(b);
	}
	/* current version not among versions; duplicate version; short sealed; EC without crv */
	const char *mut[][2] = {
		{ "\"current_version\":\"0123", "\"current_version\":\"f123" },
		{ "\"versions\":[{", "\"versions\":[{\"version\":\"0123456789abcdef0123456789abcdef\","
				     "\"kty\":\"oct-HSM\",\"key_size\":256,\"key_ops\":[],"
				     "\"public_jwk\":{},\"enabled\":true,\"exportable\":false,"
				     "\"created\":1,\"updated\":2,\"sealed\":\"AQIDBAUGBwgJCgsMDQ4PE"
				     "BESExQVFhcYGRobHB0eHyAh\"},{" },
		{ "\"sealed\":\"AQIDBAUG", "\"sealed\":\"AQ\",\"x\":\"" },
		{ "\"kty\":\"oct-HSM\"", "\"kty\":\"EC\"" },
		{ "\"key_ops\":[\"encrypt\"]", "\"key_ops\":[\"fly\"]" },
	};
	for (size_t i = 0; i < CVM_ARRAY_SIZE(mut); i++) {
		char buf[4096];
		const char *at = strstr(good, mut[i][0]);
		assert_non_null(at);
		snprintf(buf, sizeof(buf), "%.*s%s%s", (int)(at - good), good, mut[i][1],
			 at + strlen(mut[i][0]));
		b = NULL;
		struct cvm_err e = { 0 };
		if (cvm_hsm_backup_parse_payload((const uint8_t *)buf, strlen(buf), &b, &e) != -EINVAL)
			fail_msg("mutation %zu accepted: %s", i, buf);
		assert_null(b);
	}
}

static void full_data_parser(void **state)
{
	(void)state;
#define REC                                                                                    \
	"{\"name\":\"%s\",\"current_version\":\"0123456789abcdef0123456789abcdef\"," \
	"\"created\":1,\"updated\":2,\"deleted\":true,\"deleted_date\":5," \
	"\"scheduled_purge\":6,\"versions\":[{\"version\":" \
	"\"0123456789abcdef0123456789abcdef\",\"kty\":\"oct-HSM\",\"key_size\":256," \
	"\"key_ops\":[],\"public_jwk\":{},\"enabled\":true,\"exportable\":false," \
	"\"created\":1,\"updated\":2,\"sealed\":" \
	"\"AQIDBAUGBwgJCgsMDQ4PEBESExQVFhcYGRobHB0eHyAh\"}]}"
	char r1[1024], r2[1024], r3[1024], doc[4096];
	snprintf(r1, sizeof(r1), REC, "b");
	snprintf(r2, sizeof(r2), REC, "a");
	snprintf(r3, sizeof(r3), REC, "b");
	snprintf(doc, sizeof(doc), "{\"format\":\"opencvm-full-backup\",\"v\":1,\"keys\":[%s,%s]}",
		 r1, r2);
	struct cvm_hsm_full_data *fd = NULL;
	ASSERT_OK(cvm_hsm_full_data_parse((const uint8_t *)doc, strlen(doc), &fd, err));
	assert_int_equal(fd->n, 2);
	assert_true(fd->recs[0]->deleted);
	assert_int_equal(fd->recs[0]->scheduled_purge, 6);
	cvm_hsm_full_data_free(fd);
	/* twins: a name twice; a deleted record without its dates; another format */
	snprintf(doc, sizeof(doc), "{\"format\":\"opencvm-full-backup\",\"v\":1,\"keys\":[%s,%s,%s]}",
		 r1, r2, r3);
	fd = NULL;
	ASSERT_ERR(cvm_hsm_full_data_parse((const uint8_t *)doc, strlen(doc), &fd, err), EINVAL,
		   "BadParameter", "appears twice");
	char *nodate = strstr(r2, ",\"scheduled_purge\":6");
	memmove(nodate, nodate + strlen(",\"scheduled_purge\":6"),
		strlen(nodate + strlen(",\"scheduled_purge\":6")) + 1);
	snprintf(doc, sizeof(doc), "{\"format\":\"opencvm-full-backup\",\"v\":1,\"keys\":[%s]}", r2);
	ASSERT_ERR(cvm_hsm_full_data_parse((const uint8_t *)doc, strlen(doc), &fd, err), EINVAL,
		   "BadParameter", "scheduled_purge");
	snprintf(doc, sizeof(doc), "{\"format\":\"opencvm-key-backup\",\"v\":1,\"keys\":[%s]}", r1);
	ASSERT_ERR(cvm_hsm_full_data_parse((const uint8_t *)doc, strlen(doc), &fd, err), EINVAL,
		   "BadParameter", "format");
	assert_null(fd);
}

static char *tmpdir(void)
{
	char tmpl[] = "/tmp/cvm-hsm-backup-XXXXXX";
	assert_non_null(mkdtemp(tmpl));
	return strdup(tmpl);
}

static void rm_backup(const char *dir)
{
	char *m = cvm_path_join(dir, "manifest.json"), *d = cvm_path_join(dir, "keys.json");
	unlink(m);
	unlink(d);
	rmdir(dir);
	free(m);
	free(d);
}

static void full_backup_restore(void **state)
{
	struct kt t;
	kt_open(&t, state, "full_a", 7, false);
	json_t *a1 = kt_create(&t, "fa", "{\"kty\":\"oct-HSM\"}");
	json_decref(kt_create(&t, "fb", "{\"kty\":\"EC\"}"));
	json_decref(kt_create(&t, "fc", "{\"kty\":\"oct-HSM\"}"));
	json_t *out = NULL;
	ASSERT_OK(cvm_hsm_key_delete(t.h, &caller, "fc", &out, err));
	int64_t sp = json_integer_value(json_object_get(out, "scheduledPurgeDate"));
	json_decref(out);
	json_t *w = wrap(t.h, "fa", NULL);
	char *dir = tmpdir();
	char *sub = cvm_path_join(dir, "b1");
	ASSERT_OK(cvm_hsm_full_backup(t.h, sub, err));

	/* into an HSM of the same domain: everything back, replacing what was there */
	struct cvm_store *sb = NULL;
	struct cvm_hsm *hb = other_hsm(t.db, "full_b", 0x11, &sb);
	json_decref(kt_create(&(struct kt){ .h = hb }, "local", "{\"kty\":\"EC\"}"));
	ASSERT_OK(cvm_hsm_full_restore(hb, sub, err));
	json_t *l = NULL;
	ASSERT_OK(cvm_hsm_key_list(hb, &caller, 0, NULL, NULL, &l, err));
	assert_int_equal(json_array_size(json_object_get(l, "value")), 2);
	json_decref(l);
	ASSERT_OK(cvm_hsm_deleted_get(hb, &caller, "fc", &out, err));
	assert_int_equal(json_integer_value(json_object_get(out, "scheduledPurgeDate")), sp);
	json_decref(out);
	ASSERT_OK(unwrap(hb, "fa", kid_version(a1), w, err));

	/* another domain: refused, nothing changed */
	struct cvm_store *sc = NULL;
	struct cvm_hsm *hc = other_hsm(t.db, "full_c", 0x22, &sc);
	json_decref(kt_create(&(struct kt){ .h = hc }, "mine", "{\"kty\":\"EC\"}"));
	ASSERT_ERR(cvm_hsm_full_restore(hc, sub, err), EBADMSG, "BadParameter",
		   "another security domain");
	ASSERT_OK(cvm_hsm_key_get(hc, &caller, "mine", NULL, &out, err));
	json_decref(out);

	/* tampered data or manifest */
	char *dpath = cvm_path_join(sub, "keys.json");
	uint8_t *data = NULL;
	size_t dlen = 0;
	ASSERT_OK(cvm_file_read(dpath, 1 << 24, &data, &dlen, err));
	char *p = strstr((char *)data, "\"enabled\":true");
	assert_non_null(p);
	memcpy(p, "\"enabled\":tru ", 14);
	ASSERT_OK(cvm_file_write_atomic(dpath, data, dlen, 0600, err));
	ASSERT_ERR(cvm_hsm_full_restore(hb, sub, err), EBADMSG, "BadParameter", "corrupt");
	char *empty = cvm_path_join(dir, "none");
	ASSERT_ERR(cvm_hsm_full_restore(hb, empty, err), ENOENT, "NotFound", NULL);
	free(empty);
	free(data);
	free(dpath);

	cvm_hsm_free(hb);
	cvm_store_close(sb);
	cvm_hsm_free(hc);
	cvm_store_close(sc);
	rm_backup(sub);
	rmdir(dir);
	free(sub);
	free(dir);
	json_decref(w);
	json_decref(a1);
	kt_close(&t);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(key_backup_roundtrip),
		cmocka_unit_test(key_backup_refusals),
		cmocka_unit_test(payload_parser_is_strict),
		cmocka_unit_test(full_data_parser),
		cmocka_unit_test(full_backup_restore),
	};
	return testdb_run("hsm-backup", tests, CVM_ARRAY_SIZE(tests));
}
