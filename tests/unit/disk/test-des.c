/* SPDX-License-Identifier: Apache-2.0 */
/* Disk Encryption Sets, the disk registry, and rotation of registered disks. */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <ftw.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <opencvm/disk.h>
#include <opencvm/store.h>

#include "testkw.h"

struct fx {
	char dir[64];
	char keys[96];
	struct cvm_store *store;
	struct testkw tw;
	struct cvm_disk_keywrap kw;
};

/* The role check stand-in: only identity "oid-ok" holds the role. */
static int authz_check(void *ctx, const char *identity, const char *key_url, struct cvm_err *err)
{
	(void)ctx, (void)key_url;
	if (strcmp(identity, "oid-ok") == 0)
		return 0;
	return cvm_err_set(err, EPERM, "Forbidden", "no role assignment for %s", identity);
}
static const struct cvm_des_authz authz = { .check = authz_check };

static int rm_cb(const char *p, const struct stat *s, int f, struct FTW *w)
{
	(void)s, (void)f, (void)w;
	return remove(p);
}

static int setup(void **state)
{
	struct fx *fx = calloc(1, sizeof(*fx));
	struct cvm_err err = { 0 };
	snprintf(fx->dir, sizeof(fx->dir), "/tmp/cvm-des-test-XXXXXX");
	if (!mkdtemp(fx->dir))
		return -1;
	snprintf(fx->keys, sizeof(fx->keys), "%s/keys", fx->dir);
	mkdir(fx->keys, 0700);
	if (testkw_make_key(fx->keys, "k1", "v1", "RSA-OAEP-256") < 0 ||
	    cvm_store_open("sqlite::memory:", &fx->store, &err) < 0)
		return -1;
	testkw_init(&fx->tw, fx->keys, &fx->kw);
	*state = fx;
	return 0;
}

static int teardown(void **state)
{
	struct fx *fx = *state;
	cvm_store_close(fx->store);
	nftw(fx->dir, rm_cb, 16, FTW_DEPTH | FTW_PHYS);
	free(fx);
	return 0;
}

static struct cvm_des des_of(const char *name, const char *url, const char *identity)
{
	return (struct cvm_des){ .name = (char *)name, .key_url = (char *)url,
				 .alg = (char *)"RSA-OAEP-256", .type = CVM_DES_CUSTOMER_KEY,
				 .identity = (char *)identity };
}

static void test_des_crud(void **state)
{
	struct fx *fx = *state;
	struct cvm_err err = { 0 };
	enum cvm_des_type t;
	assert_int_equal(cvm_des_type_parse("platform", &t, &err), 0);
	assert_int_equal(t, CVM_DES_PLATFORM_KEY);
	assert_int_equal(cvm_des_type_parse("ConfidentialVmEncryptedWithCustomerKey", &t, &err), 0);
	assert_int_equal(t, CVM_DES_CUSTOMER_KEY);
	assert_int_equal(cvm_des_type_parse("cmk", &t, &err), -EINVAL);

	struct cvm_des a = des_of("des-a", "https://kv.test/keys/k1", "oid-ok");
	struct cvm_des b = des_of("des_b", "https://kv.test/keys/k1/v1", "oid-ok");
	b.type = CVM_DES_PLATFORM_KEY;
	assert_int_equal(cvm_des_create(fx->store, &a, &authz, &err), 0);
	assert_int_equal(cvm_des_create(fx->store, &b, &authz, &err), 0);
	assert_int_equal(cvm_des_create(fx->store, &a, &authz, &err), -EEXIST);

	struct cvm_des got;
	assert_int_equal(cvm_des_get(fx->store, "des-a", &got, &err), 0);
	assert_string_equal(got.key_url, "https://kv.test/keys/k1");
	assert_int_equal(got.type, CVM_DES_CUSTOMER_KEY);
	assert_true(cvm_des_follows_latest(&got));
	assert_true(got.created > 0);
	cvm_des_clear(&got);
	assert_int_equal(cvm_des_get(fx->store, "des_b", &got, &err), 0);
	assert_false(cvm_des_follows_latest(&got));
	assert_string_equal(cvm_des_type_name(got.type), "ConfidentialVmEncryptedWithPlatformKey");
	cvm_des_clear(&got);
	assert_int_equal(cvm_des_get(fx->store, "nope", &got, &err), -ENOENT);

	struct cvm_des *list;
	size_t n;
	assert_int_equal(cvm_des_list(fx->store, &list, &n, &err), 0);
	assert_int_equal(n, 2);
	assert_string_equal(list[0].name, "des-a");
	assert_string_equal(list[1].name, "des_b");
	cvm_des_list_free(list, n);

	/* twins: invalid fields, missing role */
	struct cvm_des bad = des_of("bad name", "https://kv.test/keys/k1", "oid-ok");
	assert_int_equal(cvm_des_create(fx->store, &bad, &authz, &err), -EINVAL);
	assert_non_null(strstr(err.msg, "name:"));
	bad = des_of("d", "https://kv.test/secrets/k1", "oid-ok");
	assert_int_equal(cvm_des_create(fx->store, &bad, &authz, &err), -EINVAL);
	assert_non_null(strstr(err.msg, "key:"));
	bad = des_of("d", "https://kv.test/keys/k1", "");
	assert_int_equal(cvm_des_create(fx->store, &bad, &authz, &err), -EINVAL);
	assert_non_null(strstr(err.msg, "identity:"));
	bad = des_of("d", "https://kv.test/keys/k1", "oid-other");
	assert_int_equal(cvm_des_create(fx->store, &bad, &authz, &err), -EPERM);
	assert_non_null(strstr(err.msg, "Crypto Service Encryption User"));
	assert_int_equal(cvm_des_create(fx->store, &bad, NULL, &err), -EINVAL);
	assert_int_equal(cvm_des_get(fx->store, "d", &got, &err), -ENOENT);

	assert_int_equal(cvm_des_delete(fx->store, "des_b", &err), 0);
	assert_int_equal(cvm_des_delete(fx->store, "des_b", &err), -ENOENT);
}

static void test_registry_and_rotation(void **state)
{
	struct fx *fx = *state;
	struct cvm_err err = { 0 };
	struct cvm_des latest = des_of("follow", "https://kv.test/keys/k1", "oid-ok");
	struct cvm_des pinned = des_of("pinned", "https://kv.test/keys/k1/v1", "oid-ok");
	assert_int_equal(cvm_des_create(fx->store, &latest, &authz, &err), 0);
	assert_int_equal(cvm_des_create(fx->store, &pinned, &authz, &err), 0);

	_cleanup_free_ char *p1 = cvm_asprintf("%s/os.img", fx->dir);
	_cleanup_free_ char *p2 = cvm_asprintf("%s/data.img", fx->dir);
	struct cvm_disk_wrap_params wp = { .kw = &fx->kw, .key_url = latest.key_url,
					   .alg = latest.alg, .des = "follow" };
	struct cvm_disk_opts o = { .kind = CVM_DISK_KIND_OS };
	assert_int_equal(cvm_disk_create(p1, 32u << 20, &wp, &o, &err), 0);
	wp.key_url = pinned.key_url;
	wp.des = "pinned";
	o.kind = CVM_DISK_KIND_DATA;
	assert_int_equal(cvm_disk_create(p2, 32u << 20, &wp, &o, &err), 0);

	struct cvm_disk_rec r1 = { .name = (char *)"os1", .path = p1, .des = (char *)"follow",
				   .kind = CVM_DISK_KIND_OS, .size = 32u << 20,
				   .kid = (char *)"https://kv.test/keys/k1/v1" };
	struct cvm_disk_rec r2 = r1;
	r2.name = (char *)"data1";
	r2.path = p2;
	r2.des = (char *)"pinned";
	r2.kind = CVM_DISK_KIND_DATA;
	assert_int_equal(cvm_disk_rec_add(fx->store, &r1, &err), 0);
	assert_int_equal(cvm_disk_rec_add(fx->store, &r2, &err), 0);
	assert_int_equal(cvm_disk_rec_add(fx->store, &r2, &err), -EEXIST);
	/* twins: unknown DES; temp disk with a DES; DES in use */
	struct cvm_disk_rec r3 = r1;
	r3.name = (char *)"x";
	r3.des = (char *)"nope";
	assert_int_equal(cvm_disk_rec_add(fx->store, &r3, &err), -ENOENT);
	r3.des = (char *)"follow";
	r3.kind = CVM_DISK_KIND_TEMP;
	assert_int_equal(cvm_disk_rec_add(fx->store, &r3, &err), -EINVAL);
	assert_int_equal(cvm_des_delete(fx->store, "pinned", &err), -EBUSY);
	assert_non_null(strstr(err.msg, "data1"));

	struct cvm_disk_rec *list;
	size_t n;
	assert_int_equal(cvm_disk_rec_list(fx->store, "follow", &list, &n, &err), 0);
	assert_int_equal(n, 1);
	assert_string_equal(list[0].name, "os1");
	assert_int_equal(list[0].kind, CVM_DISK_KIND_OS);
	cvm_disk_rec_list_free(list, n);
	assert_int_equal(cvm_disk_rec_list(fx->store, NULL, &list, &n, &err), 0);
	assert_int_equal(n, 2);
	cvm_disk_rec_list_free(list, n);

	/* a new key version: the following disk moves to it, the pinned one stays */
	assert_int_equal(testkw_make_key(fx->keys, "k1", "v2", "RSA-OAEP-256"), 0);
	bool rotated = false;
	assert_int_equal(cvm_disk_rotate_registered(fx->store, "os1", &fx->kw, &rotated, &err), 0);
	assert_true(rotated);
	assert_int_equal(cvm_disk_rotate_registered(fx->store, "data1", &fx->kw, &rotated, &err), 0);
	assert_false(rotated);
	struct cvm_disk_rec got;
	assert_int_equal(cvm_disk_rec_get(fx->store, "os1", &got, &err), 0);
	assert_string_equal(got.kid, "https://kv.test/keys/k1/v2");
	cvm_disk_rec_clear(&got);
	struct cvm_disk_info info;
	assert_int_equal(cvm_disk_info(p1, &info, &err), 0);
	assert_string_equal(info.hsm.key_url, "https://kv.test/keys/k1/v2");
	cvm_disk_info_clear(&info);
	assert_int_equal(cvm_disk_info(p2, &info, &err), 0);
	assert_string_equal(info.hsm.key_url, "https://kv.test/keys/k1/v1");
	cvm_disk_info_clear(&info);
	/* rotation does not cost the data: the disk still unlocks */
	_cleanup_secret_ struct cvm_secret *s = NULL;
	assert_int_equal(cvm_disk_unlock_secret(p1, &fx->kw, &s, &err), 0);
	assert_int_equal(cvm_disk_rotate_registered(fx->store, "nope", &fx->kw, &rotated, &err),
			 -ENOENT);

	assert_int_equal(cvm_disk_rec_delete(fx->store, "data1", &err), 0);
	assert_int_equal(cvm_disk_rec_get(fx->store, "data1", &got, &err), -ENOENT);
	assert_int_equal(cvm_des_delete(fx->store, "pinned", &err), 0);
}

static void test_registered(void **state)
{
	struct fx *fx = *state;
	struct cvm_err err = { 0 };
	struct cvm_des d = des_of("des1", "https://kv.test/keys/k1", "oid-ok");
	assert_int_equal(cvm_des_create(fx->store, &d, &authz, &err), 0);
	_cleanup_free_ char *p1 = cvm_asprintf("%s/vm1-os.img", fx->dir);
	_cleanup_free_ char *p2 = cvm_asprintf("%s/other.img", fx->dir);
	_cleanup_free_ char *src = cvm_asprintf("%s/src.raw", fx->dir);
	_cleanup_free_ char *p3 = cvm_asprintf("%s/vm1-data.img", fx->dir);
	struct cvm_disk_opts o = { .kind = CVM_DISK_KIND_VMGS };
	assert_int_equal(cvm_disk_create_registered(fx->store, "vm1-vmgs", p1, 32u << 20, "des1",
						    &fx->kw, &o, &err),
			 0);
	struct cvm_disk_rec rec;
	assert_int_equal(cvm_disk_rec_get(fx->store, "vm1-vmgs", &rec, &err), 0);
	assert_string_equal(rec.kid, "https://kv.test/keys/k1/v1");
	assert_string_equal(rec.des, "des1");
	assert_int_equal(rec.kind, CVM_DISK_KIND_VMGS);
	assert_int_equal(rec.size, 32u << 20);
	cvm_disk_rec_clear(&rec);

	/* twins: the name is taken (nothing created), the DES does not exist (nothing created) */
	assert_int_equal(cvm_disk_create_registered(fx->store, "vm1-vmgs", p2, 32u << 20, "des1",
						    &fx->kw, &o, &err),
			 -EEXIST);
	assert_int_equal(cvm_disk_create_registered(fx->store, "x", p2, 32u << 20, "nope", &fx->kw,
						    &o, &err),
			 -ENOENT);
	assert_int_equal(access(p2, F_OK), -1);

	/* encrypt + register */
	FILE *f = fopen(src, "w");
	assert_non_null(f);
	for (int i = 0; i < 2 * 1024 * 1024; i += 8)
		fputs("opencvm!", f);
	fclose(f);
	o.kind = CVM_DISK_KIND_DATA;
	assert_int_equal(cvm_disk_encrypt_registered(fx->store, "vm1-data", src, p3, "des1", &fx->kw,
						     &o, &err),
			 0);
	assert_int_equal(cvm_disk_rec_get(fx->store, "vm1-data", &rec, &err), 0);
	assert_int_equal(rec.size, (2u << 20) + CVM_DISK_DATA_OFFSET);
	cvm_disk_rec_clear(&rec);
	_cleanup_secret_ struct cvm_secret *sec = NULL;
	assert_int_equal(cvm_disk_unlock_secret(p3, &fx->kw, &sec, &err), 0);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test_setup_teardown(test_des_crud, setup, teardown),
		cmocka_unit_test_setup_teardown(test_registry_and_rotation, setup, teardown),
		cmocka_unit_test_setup_teardown(test_registered, setup, teardown),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
