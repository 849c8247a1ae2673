/* SPDX-License-Identifier: Apache-2.0 */
/* Size catalogue and the VM state machine over a real (in-memory SQLite) store and audit log. */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdio.h>
#include <string.h>

#include <opencvm/audit.h>
#include <opencvm/store.h>
#include <opencvm/vm.h>

struct fx {
	struct cvm_store *store;
	struct cvm_audit *audit;
	struct cvm_vm_sizes sizes;
};

static int setup(void **state)
{
	struct fx *fx = calloc(1, sizeof(*fx));
	struct cvm_err err = { 0 };
	_cleanup_free_ char *path = NULL;
	if (!fx || cvm_store_open("sqlite::memory:", &fx->store, &err) < 0 ||
	    cvm_audit_open(fx->store, &fx->audit, &err) < 0 ||
	    cvm_vm_sizes_locate(NULL, &path, &err) < 0 ||
	    cvm_vm_sizes_load(path, &fx->sizes, &err) < 0) {
		fprintf(stderr, "setup: %s\n", err.msg);
		return -1;
	}
	*state = fx;
	return 0;
}

static int teardown(void **state)
{
	struct fx *fx = *state;
	cvm_vm_sizes_clear(&fx->sizes);
	cvm_audit_close(fx->audit);
	cvm_store_close(fx->store);
	free(fx);
	return 0;
}

static int parse_str(const char *s, struct cvm_vm_sizes *out, struct cvm_err *err)
{
	return cvm_vm_sizes_parse((const uint8_t *)s, strlen(s), out, err);
}

/* ---- catalogue ------------------------------------------------------------------------------ */

static void test_catalogue_families(void **state)
{
	struct fx *fx = *state;
	static const struct {
		const char *name;
		int vcpus;
		int64_t mib;
		enum cvm_vm_tee tee;
	} want[] = {
		{ "Standard_DC2as_v5", 2, 8192, CVM_VM_TEE_SEV_SNP },
		{ "Standard_DC96ads_v5", 96, 384 * 1024, CVM_VM_TEE_SEV_SNP },
		{ "Standard_EC20as_v5", 20, 160 * 1024, CVM_VM_TEE_SEV_SNP },
		{ "Standard_EC96ads_v5", 96, 672 * 1024, CVM_VM_TEE_SEV_SNP },
		{ "Standard_DC4es_v5", 4, 16384, CVM_VM_TEE_TDX },
		{ "Standard_DC8eds_v5", 8, 32768, CVM_VM_TEE_TDX },
		{ "Standard_EC128es_v5", 128, 768 * 1024, CVM_VM_TEE_TDX },
		{ "Standard_EC2eds_v5", 2, 16384, CVM_VM_TEE_TDX },
		{ "Standard_NCC40ads_H100_v5", 40, 320 * 1024, CVM_VM_TEE_SEV_SNP },
		{ "Standard_D2s_v5", 2, 8192, CVM_VM_TEE_NONE },
	};
	for (size_t i = 0; i < CVM_ARRAY_SIZE(want); i++) {
		const struct cvm_vm_size *z = cvm_vm_sizes_find(&fx->sizes, want[i].name);
		assert_non_null(z);
		assert_int_equal(z->vcpus, want[i].vcpus);
		assert_int_equal(z->memory_mib, want[i].mib);
		assert_int_equal(z->tee, want[i].tee);
	}
	assert_int_equal(cvm_vm_sizes_find(&fx->sizes, "standard_dc2AS_v5")->vcpus, 2);
	assert_int_equal(cvm_vm_sizes_find(&fx->sizes, "Standard_NCC40ads_H100_v5")->gpus, 1);
	assert_true(cvm_vm_sizes_find(&fx->sizes, "Standard_DC2ads_v5")->temp_disk);
	assert_false(cvm_vm_sizes_find(&fx->sizes, "Standard_DC2as_v5")->temp_disk);
	assert_null(cvm_vm_sizes_find(&fx->sizes, "Standard_DC3as_v5"));
}

static void test_catalogue_parse_ok(void **state)
{
	(void)state;
	struct cvm_vm_sizes s;
	struct cvm_err err = { 0 };
	assert_int_equal(parse_str("{\"version\":1,\"sizes\":[{\"name\":\"A_1\",\"family\":\"A\","
				   "\"vcpus\":1,\"memory_gib\":2,\"tee\":\"tdx\",\"gpus\":2}]}",
				   &s, &err), 0);
	assert_int_equal(s.n, 1);
	assert_int_equal(s.v[0].memory_mib, 2048);
	assert_int_equal(s.v[0].gpus, 2);
	assert_int_equal(s.v[0].tee, CVM_VM_TEE_TDX);
	cvm_vm_sizes_clear(&s);
}

static void test_catalogue_parse_refusals(void **state)
{
	(void)state;
	static const struct {
		const char *json, *msg;
	} bad[] = {
		{ "{\"version\":2,\"sizes\":[]}", "version" },
		{ "{\"version\":1,\"sizes\":[]}", "sizes: expected 1.." },
		{ "{\"version\":1,\"sizes\":[],\"x\":1}", "sizes" },
		{ "{\"version\":1,\"sizes\":[{\"name\":\"A\",\"family\":\"F\",\"vcpus\":1,"
		  "\"memory_gib\":1,\"tee\":\"none\",\"color\":1}]}", "sizes[0].color: unknown member" },
		{ "{\"version\":1,\"sizes\":[{\"name\":\"A\",\"family\":\"F\",\"vcpus\":0,"
		  "\"memory_gib\":1,\"tee\":\"none\"}]}", "sizes[0].vcpus" },
		{ "{\"version\":1,\"sizes\":[{\"name\":\"A\",\"family\":\"F\",\"vcpus\":1,"
		  "\"memory_gib\":1,\"tee\":\"sgx\"}]}", "tee" },
		{ "{\"version\":1,\"sizes\":[{\"name\":\"A\",\"family\":\"F\",\"vcpus\":1,"
		  "\"memory_gib\":1,\"tee\":\"emulated\"}]}", "emulation is a property of the VM" },
		{ "{\"version\":1,\"sizes\":[{\"name\":\"A b\",\"family\":\"F\",\"vcpus\":1,"
		  "\"memory_gib\":1,\"tee\":\"none\"}]}", "sizes[0].name" },
		{ "{\"version\":1,\"sizes\":[{\"name\":\"A\",\"family\":\"F\",\"vcpus\":1,"
		  "\"memory_gib\":1,\"tee\":\"none\"},{\"name\":\"a\",\"family\":\"F\",\"vcpus\":1,"
		  "\"memory_gib\":1,\"tee\":\"none\"}]}", "duplicate size" },
		{ "{\"version\":1,\"sizes\":[{\"name\":\"A\",\"family\":\"F\",\"vcpus\":1,"
		  "\"tee\":\"none\"}]}", "memory_gib: required" },
		{ "[1]", "sizes" },
	};
	for (size_t i = 0; i < CVM_ARRAY_SIZE(bad); i++) {
		struct cvm_vm_sizes s = { 0 };
		struct cvm_err err = { 0 };
		assert_int_equal(parse_str(bad[i].json, &s, &err), -EINVAL);
		if (!strstr(err.msg, bad[i].msg))
			fail_msg("case %zu: '%s' lacks '%s'", i, err.msg, bad[i].msg);
		assert_null(s.v);
	}
}

static void test_catalogue_locate(void **state)
{
	(void)state;
	struct cvm_err err = { 0 };
	_cleanup_free_ char *p = NULL;
	assert_int_equal(cvm_vm_sizes_locate("/x/y.json", &p, &err), 0);
	assert_string_equal(p, "/x/y.json");
	struct cvm_vm_sizes s = { 0 };
	assert_int_equal(cvm_vm_sizes_load("/nonexistent/sizes.json", &s, &err), -ENOENT);
}

static void test_size_check(void **state)
{
	struct fx *fx = *state;
	struct cvm_err err = { 0 };
	assert_int_equal(cvm_vm_sizes_check(&fx->sizes, "Standard_DC2as_v5", CVM_VM_SEC_CONFIDENTIAL,
					    CVM_VM_TEE_SEV_SNP, &err), 0);
	assert_int_equal(cvm_vm_sizes_check(&fx->sizes, "Standard_DC2as_v5", CVM_VM_SEC_CONFIDENTIAL,
					    CVM_VM_TEE_EMULATED, &err), 0);
	assert_int_equal(cvm_vm_sizes_check(&fx->sizes, "Standard_DC2es_v5", CVM_VM_SEC_CONFIDENTIAL,
					    CVM_VM_TEE_TDX, &err), 0);
	assert_int_equal(cvm_vm_sizes_check(&fx->sizes, "Standard_D2s_v5", CVM_VM_SEC_TRUSTED_LAUNCH,
					    CVM_VM_TEE_NONE, &err), 0);
	/* Non-confidential size for a ConfidentialVM: refused, the allowed families listed. */
	assert_int_equal(cvm_vm_sizes_check(&fx->sizes, "Standard_D2s_v5", CVM_VM_SEC_CONFIDENTIAL,
					    CVM_VM_TEE_SEV_SNP, &err), -EINVAL);
	assert_non_null(strstr(err.msg, "cannot host a ConfidentialVM"));
	assert_non_null(strstr(err.msg, "DCasv5 (Standard_DC2as_v5..Standard_DC96as_v5)"));
	assert_non_null(strstr(err.msg, "NCCadsH100v5 (Standard_NCC40ads_H100_v5)"));
	assert_null(strstr(err.msg, "DCesv5"));
	/* TDX VM on an SEV-SNP size, and the other way round. */
	assert_int_equal(cvm_vm_sizes_check(&fx->sizes, "Standard_DC2as_v5", CVM_VM_SEC_CONFIDENTIAL,
					    CVM_VM_TEE_TDX, &err), -EINVAL);
	assert_non_null(strstr(err.msg, "ECedsv5"));
	assert_int_equal(cvm_vm_sizes_check(&fx->sizes, "Standard_DC2es_v5", CVM_VM_SEC_CONFIDENTIAL,
					    CVM_VM_TEE_EMULATED, &err), -EINVAL);
	/* A confidential size for a Standard VM. */
	assert_int_equal(cvm_vm_sizes_check(&fx->sizes, "Standard_DC2as_v5", CVM_VM_SEC_STANDARD,
					    CVM_VM_TEE_NONE, &err), -EINVAL);
	assert_non_null(strstr(err.msg, "Dsv5"));
	assert_int_equal(cvm_vm_sizes_check(&fx->sizes, "Nope", CVM_VM_SEC_CONFIDENTIAL,
					    CVM_VM_TEE_SEV_SNP, &err), -EINVAL);
	assert_non_null(strstr(err.msg, "unknown size 'Nope'"));
}

/* ---- VM objects ----------------------------------------------------------------------------- */

static struct cvm_vm cvm_def(const char *name)
{
	return (struct cvm_vm){ .name = (char *)name, .size = "Standard_DC2as_v5",
				.security = CVM_VM_SEC_CONFIDENTIAL, .tee = CVM_VM_TEE_EMULATED,
				.os_disk = "osdisk1", .des = "des1", .temp_disk = true,
				.data_disks = { "data1", "data2" }, .n_data_disks = 2,
				.identity = "cvo-oid" };
}

static int64_t audit_count(struct fx *fx)
{
	int64_t records = 0, bad = 0;
	struct cvm_err err = { 0 };
	assert_int_equal(cvm_audit_verify(fx->store, &records, &bad, &err), 0);
	return records;
}

static void test_create_get_list(void **state)
{
	struct fx *fx = *state;
	struct cvm_err err = { 0 };
	struct cvm_vm in = cvm_def("vm1");
	int64_t a0 = audit_count(fx);
	assert_int_equal(cvm_vm_create(fx->store, &fx->sizes, &in, "alice", &err), 0);
	assert_int_equal(audit_count(fx), a0 + 1);
	struct cvm_vm got;
	assert_int_equal(cvm_vm_get(fx->store, "vm1", &got, &err), 0);
	assert_string_equal(got.size, "Standard_DC2as_v5");
	assert_int_equal(got.state, CVM_VM_CREATING);
	assert_int_equal(got.tee, CVM_VM_TEE_EMULATED);
	assert_int_equal(got.security, CVM_VM_SEC_CONFIDENTIAL);
	assert_int_equal(got.n_data_disks, 2);
	assert_string_equal(got.data_disks[1], "data2");
	assert_true(got.temp_disk);
	assert_null(got.vmgs);
	assert_string_equal(got.identity, "cvo-oid");
	json_t *j = NULL;
	assert_int_equal(cvm_vm_to_json(&got, &j, &err), 0);
	assert_string_equal(json_string_value(json_object_get(j, "state")), "creating");
	assert_string_equal(json_string_value(json_object_get(j, "securityType")), "ConfidentialVM");
	json_decref(j);
	cvm_vm_clear(&got);

	/* Same name again: conflict, audited. */
	assert_int_equal(cvm_vm_create(fx->store, &fx->sizes, &in, "alice", &err), -EEXIST);
	assert_int_equal(audit_count(fx), a0 + 2);

	struct cvm_vm in2 = cvm_def("a-vm");
	assert_int_equal(cvm_vm_create(fx->store, &fx->sizes, &in2, "alice", &err), 0);
	struct cvm_vm *list = NULL;
	size_t n = 0;
	assert_int_equal(cvm_vm_list(fx->store, &list, &n, &err), 0);
	assert_int_equal(n, 2);
	assert_string_equal(list[0].name, "a-vm");
	assert_string_equal(list[1].name, "vm1");
	cvm_vm_list_free(list, n);

	assert_int_equal(cvm_vm_get(fx->store, "nope", &got, &err), -ENOENT);
	assert_string_equal(err.code, "VmNotFound");
	assert_int_equal(cvm_vm_get(fx->store, "bad name", &got, &err), -EINVAL);
}

static void test_create_refusals(void **state)
{
	struct fx *fx = *state;
	struct cvm_err err = { 0 };
	int64_t a0 = audit_count(fx);
	struct cvm_vm v = cvm_def("r1");
	v.size = "Standard_D2s_v5";
	assert_int_equal(cvm_vm_create(fx->store, &fx->sizes, &v, "alice", &err), -EINVAL);
	assert_non_null(strstr(err.msg, "DCasv5"));
	assert_int_equal(audit_count(fx), a0 + 1); /* the refusal is audited */
	struct cvm_vm got;
	assert_int_equal(cvm_vm_get(fx->store, "r1", &got, &err), -ENOENT);

	v = cvm_def("r1");
	v.tee = CVM_VM_TEE_NONE;
	assert_int_equal(cvm_vm_create(fx->store, &fx->sizes, &v, NULL, &err), -EINVAL);
	assert_non_null(strstr(err.msg, "tee"));
	v = cvm_def("r1");
	v.os_disk = NULL;
	assert_int_equal(cvm_vm_create(fx->store, &fx->sizes, &v, NULL, &err), -EINVAL);
	assert_non_null(strstr(err.msg, "osDisk"));
	v = cvm_def("r1");
	v.des = NULL;
	assert_int_equal(cvm_vm_create(fx->store, &fx->sizes, &v, NULL, &err), -EINVAL);
	assert_non_null(strstr(err.msg, "diskEncryptionSet"));
	v = cvm_def("-r1");
	assert_int_equal(cvm_vm_create(fx->store, &fx->sizes, &v, NULL, &err), -EINVAL);
	assert_non_null(strstr(err.msg, "name"));
	v = (struct cvm_vm){ .name = "std1", .size = "Standard_D2s_v5",
			     .security = CVM_VM_SEC_STANDARD, .tee = CVM_VM_TEE_SEV_SNP };
	assert_int_equal(cvm_vm_create(fx->store, &fx->sizes, &v, NULL, &err), -EINVAL);
	assert_non_null(strstr(err.msg, "only a ConfidentialVM has a TEE"));
	v.tee = CVM_VM_TEE_NONE;
	assert_int_equal(cvm_vm_create(fx->store, &fx->sizes, &v, NULL, &err), 0);
}

static void expect_state(struct fx *fx, const char *name, enum cvm_vm_state st, int64_t gen)
{
	struct cvm_vm got;
	struct cvm_err err = { 0 };
	assert_int_equal(cvm_vm_get(fx->store, name, &got, &err), 0);
	assert_int_equal(got.state, st);
	assert_int_equal(got.generation, gen);
	cvm_vm_clear(&got);
}

static void test_lifecycle(void **state)
{
	struct fx *fx = *state;
	struct cvm_err err = { 0 };
	struct cvm_vm in = cvm_def("life");
	assert_int_equal(cvm_vm_create(fx->store, &fx->sizes, &in, "cvo", &err), 0);
	static const enum cvm_vm_state path[] = { CVM_VM_STOPPED,  CVM_VM_STARTING, CVM_VM_ATTESTING,
						  CVM_VM_RUNNING,  CVM_VM_STOPPING, CVM_VM_STOPPED };
	int64_t a0 = audit_count(fx);
	for (size_t i = 0; i < CVM_ARRAY_SIZE(path); i++) {
		assert_int_equal(cvm_vm_transition(fx->store, "life", NULL, path[i], NULL, "cvo", &err),
				 0);
		expect_state(fx, "life", path[i], (int64_t)i + 2);
	}
	assert_int_equal(audit_count(fx), a0 + (int64_t)CVM_ARRAY_SIZE(path));

	/* Refused: stopped -> running skips attestation. Audited, state unchanged. */
	assert_int_equal(cvm_vm_transition(fx->store, "life", NULL, CVM_VM_RUNNING, NULL, "cvo", &err),
			 -EBUSY);
	assert_string_equal(err.code, "InvalidState");
	assert_non_null(strstr(err.msg, "cannot go from stopped to running"));
	expect_state(fx, "life", CVM_VM_STOPPED, 7);
	assert_int_equal(audit_count(fx), a0 + (int64_t)CVM_ARRAY_SIZE(path) + 1);

	/* Compare-and-set: expecting "running" while stopped is refused. */
	enum cvm_vm_state want = CVM_VM_RUNNING;
	assert_int_equal(cvm_vm_transition(fx->store, "life", &want, CVM_VM_STOPPING, NULL, "cvo",
					   &err), -EBUSY);
	assert_non_null(strstr(err.msg, "expected running"));
	want = CVM_VM_STOPPED;
	assert_int_equal(cvm_vm_transition(fx->store, "life", &want, CVM_VM_STARTING, NULL, "cvo",
					   &err), 0);

	/* A failure records its reason; delete refused until stopped/failed. */
	assert_int_equal(cvm_vm_delete(fx->store, "life", "cvo", &err), -EBUSY);
	assert_non_null(strstr(err.msg, "stop it before deleting"));
	assert_int_equal(cvm_vm_transition(fx->store, "life", NULL, CVM_VM_FAILED,
					   "attestation: measurement mismatch", "cvo", &err), 0);
	struct cvm_vm got;
	assert_int_equal(cvm_vm_get(fx->store, "life", &got, &err), 0);
	assert_string_equal(got.state_reason, "attestation: measurement mismatch");
	cvm_vm_clear(&got);
	assert_int_equal(cvm_vm_delete(fx->store, "life", "cvo", &err), 0);
	assert_int_equal(cvm_vm_get(fx->store, "life", &got, &err), -ENOENT);
	assert_int_equal(cvm_vm_delete(fx->store, "life", "cvo", &err), -ENOENT);
	assert_int_equal(cvm_vm_transition(fx->store, "life", NULL, CVM_VM_STOPPED, NULL, "cvo", &err),
			 -ENOENT);
}

static void test_transition_table(void **state)
{
	(void)state;
	/* Exhaustive: exactly the documented edges. */
	static const char *const edges[] = { "creating>stopped", "creating>failed",
					     "stopped>starting", "starting>attesting",
					     "starting>stopping", "starting>failed",
					     "attesting>running", "attesting>stopping",
					     "attesting>failed", "running>stopping", "running>failed",
					     "stopping>stopped", "stopping>failed", "failed>stopped",
					     "failed>stopping" };
	size_t allowed = 0;
	for (int f = CVM_VM_CREATING; f <= CVM_VM_FAILED; f++) {
		for (int t = CVM_VM_CREATING; t <= CVM_VM_FAILED; t++) {
			char e[64];
			snprintf(e, sizeof(e), "%s>%s", cvm_vm_state_name(f), cvm_vm_state_name(t));
			bool listed = false;
			for (size_t i = 0; i < CVM_ARRAY_SIZE(edges); i++)
				listed |= strcmp(edges[i], e) == 0;
			assert_int_equal(cvm_vm_transition_allowed(f, t), listed);
			allowed += listed;
		}
	}
	assert_int_equal(allowed, CVM_ARRAY_SIZE(edges));
	assert_false(cvm_vm_transition_allowed((enum cvm_vm_state)99, CVM_VM_STOPPED));
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_catalogue_families),
		cmocka_unit_test(test_catalogue_parse_ok),
		cmocka_unit_test(test_catalogue_parse_refusals),
		cmocka_unit_test(test_catalogue_locate),
		cmocka_unit_test(test_size_check),
		cmocka_unit_test(test_create_get_list),
		cmocka_unit_test(test_create_refusals),
		cmocka_unit_test(test_lifecycle),
		cmocka_unit_test(test_transition_table),
	};
	return cmocka_run_group_tests(tests, setup, teardown);
}
