/* SPDX-License-Identifier: Apache-2.0 */
/* Shared fixture of the key-store tests (test-keys/ops/softdelete/rotation/backup/domain): each
 * test gets a fresh database (SQLite in a temporary directory, and PostgreSQL when
 * CVM_TEST_POSTGRES is set, via tests/unit/store/testdb.c) and an activated HSM. Include once
 * per test program. */
#pragma once

#include "../store/testdb.h"
#include "../store/testdb.c"

#include <opencvm/crypto.h>
#include <opencvm/hsm.h>
#include <opencvm/json.h>

#include <stdio.h>
#include <string.h>

#include "hsm/hsm-internal.h"

#define ASSERT_OK(expr)                                                                      \
	do {                                                                                 \
		_Pragma("GCC diagnostic push");                                              \
		_Pragma("GCC diagnostic ignored \"-Wshadow\"");                              \
		struct cvm_err e_ = { 0 };                                                   \
		struct cvm_err *err = &e_;                                                   \
		int r_ = (expr);                                                             \
		if (r_ < 0)                                                                  \
			fail_msg("%s = %d: %s: %s", #expr, r_, e_.code, e_.msg);             \
		_Pragma("GCC diagnostic pop");                                               \
	} while (0)

/* expr must fail with -errno_ and code_; the message must contain substr (may be NULL). */
#define ASSERT_ERR(expr, errno_, code_, substr)                                              \
	do {                                                                                 \
		_Pragma("GCC diagnostic push");                                              \
		_Pragma("GCC diagnostic ignored \"-Wshadow\"");                              \
		struct cvm_err e_ = { 0 };                                                   \
		struct cvm_err *err = &e_;                                                   \
		int r_ = (expr);                                                             \
		const char *sub_ = (substr);                                                 \
		if (r_ != -(errno_) || strcmp(e_.code, (code_)) ||                           \
		    (sub_ && !strstr(e_.msg, sub_)))                                         \
			fail_msg("%s = %d (%s: %s), expected %d %s '%s'", #expr, r_, e_.code,  \
				 e_.msg, -(errno_), (code_), sub_ ? sub_ : "");        \
		_Pragma("GCC diagnostic pop");                                               \
	} while (0)

static const struct cvm_hsm_caller caller = {
	.principal = "tester",
	.request_id = "req-1",
	.source = "127.0.0.1",
	.base_url = "https://hsm.test:8443",
};

/* A fixed domain key, so several HSMs (second store, backups) share one security domain. */
static inline struct cvm_secret *test_domain_key(uint8_t fill)
{
	uint8_t k[32];
	memset(k, fill, sizeof(k));
	return cvm_secret_from(k, sizeof(k));
}

struct kt {
	struct testdb *db;
	struct cvm_store *store;
	struct cvm_hsm *h;
	char dbname[80];
};

static inline struct cvm_hsm *kt_hsm(struct cvm_store *s, int days, bool pp)
{
	struct cvm_hsm_config cfg = { .store = s, .soft_delete_days_default = days,
				      .purge_protection = pp, .name = "test-hsm" };
	struct cvm_hsm *h = NULL;
	ASSERT_OK(cvm_hsm_open(&cfg, &h, err));
	return h;
}

/* Fresh store + HSM activated with the test domain (fill 0x11). */
static inline void kt_open(struct kt *t, void **state, const char *name, int days, bool pp)
{
	memset(t, 0, sizeof(*t));
	t->db = *state;
	t->store = testdb_open(t->db, name);
	snprintf(t->dbname, sizeof(t->dbname), "%s", t->db->names[t->db->nnames - 1]);
	t->h = kt_hsm(t->store, days, pp);
	struct cvm_secret *k = test_domain_key(0x11);
	ASSERT_OK(cvm_hsm_domain_create_with_key(t->h, k, err));
	cvm_secret_free(k);
}

static inline void kt_close(struct kt *t)
{
	cvm_hsm_free(t->h);
	cvm_store_close(t->store);
}

/* body from a JSON literal */
static inline json_t *J(const char *text)
{
	json_error_t je;
	json_t *v = json_loads(text, 0, &je);
	if (!v)
		fail_msg("bad test JSON %s: %s", text, je.text);
	return v;
}

static inline json_t *kt_create(struct kt *t, const char *name, const char *body)
{
	json_t *b = J(body), *out = NULL;
	ASSERT_OK(cvm_hsm_key_create(t->h, &caller, name, b, &out, err));
	json_decref(b);
	return out;
}

/* version part of a KeyBundle's kid */
static inline const char *kid_version(json_t *bundle)
{
	const char *kid = json_string_value(json_object_get(json_object_get(bundle, "key"), "kid"));
	assert_non_null(kid);
	const char *slash = strrchr(kid, '/');
	assert_non_null(slash);
	return slash + 1;
}

static inline const char *jstr(json_t *o, const char *path)
{
	json_t *v = cvm_json_path(o, path);
	return json_string_value(v);
}
