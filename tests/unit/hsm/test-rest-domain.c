/* SPDX-License-Identifier: Apache-2.0 */
/* Security domain REST bodies (src/hsm/rest-domain.c): the download and upload parsers accept
 * well-formed bodies and refuse every malformed field with 400 BadParameter naming it; over a
 * real cvmd-style HTTP server on 127.0.0.1 a refused body leaves the store exactly as it was
 * (byte digest of every hsm_* table) and the HSM un-activated, and the well-formed body then
 * activates it. SQLite and (CVM_TEST_POSTGRES) PostgreSQL. */
#include "keystest.h"

#include <stdlib.h>
#include <unistd.h>

#include <openssl/pem.h>
#include <openssl/rsa.h>
#include <openssl/x509.h>

#include <opencvm/audit.h>
#include <opencvm/http.h>

#include "hsm/rest-internal.h"

#pragma GCC diagnostic ignored "-Wunused-function"

/* ---- officers ------------------------------------------------------------------------------ */

struct officers {
	struct cvm_key *k[3];
	char *pub[3];   /* SPKI PEM */
	char *priv[3];  /* PKCS#8 PEM */
	char *x5c[3];   /* base64 DER self-signed certificate */
};

static void officers_new(struct officers *o)
{
	for (int i = 0; i < 3; i++) {
		ASSERT_OK(cvm_key_generate_rsa(2048, 0, &o->k[i], err));
		ASSERT_OK(cvm_key_to_pem(o->k[i], false, &o->pub[i], err));
		ASSERT_OK(cvm_key_to_pem(o->k[i], true, &o->priv[i], err));
		X509 *x = NULL;
		ASSERT_OK(cvm_x509_self_signed(o->k[i], "officer", NULL, NULL, 1, &x, err));
		unsigned char *der = NULL;
		int dlen = i2d_X509(x, &der);
		assert_true(dlen > 0);
		o->x5c[i] = cvm_b64_encode(der, (size_t)dlen);
		OPENSSL_free(der);
		X509_free(x);
	}
}

static void officers_free(struct officers *o)
{
	for (int i = 0; i < 3; i++) {
		cvm_key_free(o->k[i]);
		free(o->pub[i]);
		free(o->priv[i]);
		free(o->x5c[i]);
	}
}

/* JSON string literal of a PEM (newlines escaped). */
static char *jstring(const char *s)
{
	json_t *v = json_string(s);
	char *t = json_dumps(v, JSON_ENCODE_ANY);
	json_decref(v);
	return t;
}

static char *public_jwk(const struct cvm_key *k)
{
	json_t *j = NULL;
	ASSERT_OK(cvm_key_to_jwk(k, false, &j, err));
	char *t = json_dumps(j, JSON_COMPACT);
	json_decref(j);
	return t;
}

/* ---- download bodies ------------------------------------------------------------------------- */

struct bad {
	char *body;
	const char *field; /* named in the 400 */
};

static int parse_dl(const char *body, struct rest_sd_download *p, struct cvm_err *err)
{
	return rest_sd_parse_download((const uint8_t *)body, strlen(body), p, err);
}

/* Well-formed download bodies: PEM strings, {"keys":[JWK with x5c]}, JWKs with n/e. */
static size_t good_downloads(const struct officers *o, char *out[3])
{
	_cleanup_free_ char *p0 = jstring(o->pub[0]), *p1 = jstring(o->pub[1]),
			    *p2 = jstring(o->pub[2]);
	_cleanup_free_ char *j0 = public_jwk(o->k[0]), *j1 = public_jwk(o->k[1]),
			    *j2 = public_jwk(o->k[2]);
	out[0] = cvm_asprintf("{\"certificates\":[%s,%s,%s],\"required\":2}", p0, p1, p2);
	out[1] = cvm_asprintf("{\"certificates\":{\"keys\":[{\"kty\":\"RSA\",\"x5c\":[\"%s\"]},"
			      "{\"kty\":\"RSA\",\"x5c\":[\"%s\"]},{\"kty\":\"RSA\",\"x5c\":[\"%s\"]}"
			      "]},\"required\":3}", o->x5c[0], o->x5c[1], o->x5c[2]);
	out[2] = cvm_asprintf("{\"certificates\":[%s,%s,%s]}", j0, j1, j2);
	return 3;
}

static size_t bad_downloads(const struct officers *o, struct bad *b)
{
	_cleanup_free_ char *p0 = jstring(o->pub[0]), *p1 = jstring(o->pub[1]),
			    *p2 = jstring(o->pub[2]), *j0 = public_jwk(o->k[0]);
	struct cvm_key *ec = NULL;
	ASSERT_OK(cvm_key_generate_ec("P-256", &ec, err));
	/* RSA-1024 (cvm_key_generate_rsa refuses to make one) */
	EVP_PKEY *small = EVP_RSA_gen(1024);
	BIO *bio = BIO_new(BIO_s_mem());
	assert_true(small && bio && PEM_write_bio_PUBKEY(bio, small) == 1);
	char *spem = NULL;
	long sl = BIO_get_mem_data(bio, &spem);
	_cleanup_free_ char *spem0 = strndup(spem, (size_t)sl);
	_cleanup_free_ char *sj = jstring(spem0), *ecj = public_jwk(ec);
	BIO_free(bio);
	EVP_PKEY_free(small);
	cvm_key_free(ec);
	/* a JWK whose modulus is not base64url */
	json_t *jb = json_loads(j0, 0, NULL);
	json_object_set_new(jb, "n", json_string("*not base64*"));
	_cleanup_free_ char *badn = json_dumps(jb, JSON_COMPACT);
	json_decref(jb);
	size_t n = 0;
#define BAD(field_, ...) b[n++] = (struct bad){ cvm_asprintf(__VA_ARGS__), (field_) }
	BAD("body", "{\"certificates\":[%s,%s,%s]", p0, p1, p2);
	BAD("body", "[%s,%s,%s]", p0, p1, p2);
	BAD("certificates", "{\"required\":2}");
	BAD("certificates", "{\"certificates\":\"%s\"}", o->x5c[0]);
	BAD("certificates.keys", "{\"certificates\":{\"keys\":5}}");
	BAD("certificates", "{\"certificates\":[%s,%s]}", p0, p1);
	BAD("certificates", "{\"certificates\":[%s,%s,%s,%s,%s,%s,%s,%s,%s,%s,%s]}", p0, p1, p2, p0,
	    p1, p2, p0, p1, p2, p0, p1);
	BAD("required", "{\"certificates\":[%s,%s,%s],\"required\":\"2\"}", p0, p1, p2);
	BAD("required", "{\"certificates\":[%s,%s,%s],\"required\":1}", p0, p1, p2);
	BAD("required", "{\"certificates\":[%s,%s,%s],\"required\":4}", p0, p1, p2);
	BAD("certificates[1]", "{\"certificates\":[%s,7,%s]}", p0, p2);
	BAD("certificates[0]", "{\"certificates\":[\"hello\",%s,%s]}", p1, p2);
	BAD("certificates[0]", "{\"certificates\":[\"-----BEGIN PUBLIC KEY-----\\nAAAA\\n-----END "
			       "PUBLIC KEY-----\\n\",%s,%s]}", p1, p2);
	BAD("certificates[2].x5c", "{\"certificates\":[%s,%s,{\"kty\":\"RSA\",\"x5c\":\"%s\"}]}",
	    p0, p1, o->x5c[2]);
	BAD("certificates[2].x5c", "{\"certificates\":[%s,%s,{\"kty\":\"RSA\",\"x5c\":[]}]}", p0,
	    p1);
	BAD("certificates[2].x5c[0]", "{\"certificates\":[%s,%s,{\"kty\":\"RSA\",\"x5c\":[5]}]}",
	    p0, p1);
	BAD("certificates[2].x5c[0]", "{\"certificates\":[%s,%s,{\"kty\":\"RSA\",\"x5c\":["
				      "\"bm90IGEgY2VydA==\"]}]}", p0, p1);
	BAD("certificates[0]", "{\"certificates\":[%s,%s,%s]}", badn, p1, p2);
	BAD("certificates[1]", "{\"certificates\":[%s,%s,%s]}", p0, sj, p2);
	BAD("certificates[2]", "{\"certificates\":[%s,%s,%s]}", p0, p1, ecj);
	BAD("certificates[2]", "{\"certificates\":[%s,%s,%s]}", p0, p1, j0); /* same as [0] */
#undef BAD
	return n;
}

static void bads_free(struct bad *b, size_t n)
{
	for (size_t i = 0; i < n; i++)
		free(b[i].body);
}

static void parse_download(void **state)
{
	(void)state;
	struct officers o;
	officers_new(&o);
	char *good[3];
	size_t ng = good_downloads(&o, good);
	for (size_t i = 0; i < ng; i++) {
		struct rest_sd_download p;
		struct cvm_err e = { 0 };
		if (parse_dl(good[i], &p, &e) < 0)
			fail_msg("good download %zu refused: %s", i, e.msg);
		assert_int_equal(p.n, 3);
		assert_int_equal(p.quorum, i == 1 ? 3 : 2);
		for (size_t k = 0; k < 3; k++) /* normalized to the officers' SPKI PEM */
			assert_string_equal(p.pems[k], o.pub[k]);
		rest_sd_download_clear(&p);
		free(good[i]);
	}
	struct bad b[32];
	size_t nb = bad_downloads(&o, b);
	for (size_t i = 0; i < nb; i++) {
		struct rest_sd_download p;
		struct cvm_err e = { 0 };
		int r = parse_dl(b[i].body, &p, &e);
		if (r != -EINVAL || strcmp(e.code, "BadParameter") || !strstr(e.msg, b[i].field))
			fail_msg("bad download %zu: %d %s \"%s\", expected BadParameter naming %s", i,
				 r, e.code, e.msg, b[i].field);
		assert_int_equal(p.n, 0);
		assert_null(p.pems[0]);
	}
	bads_free(b, nb);
	officers_free(&o);
}

/* ---- upload bodies --------------------------------------------------------------------------- */

static int parse_ul(const char *body, struct rest_sd_upload *p, struct cvm_err *err)
{
	return rest_sd_parse_upload((const uint8_t *)body, strlen(body), p, err);
}

/* {"value": JSON text of inner} */
static char *upload_body(const char *inner)
{
	json_t *v = json_pack("{s:s}", "value", inner);
	char *t = json_dumps(v, JSON_COMPACT);
	json_decref(v);
	return t;
}

static char *b64_of(size_t n, uint8_t fill)
{
	uint8_t *b = malloc(n);
	memset(b, fill, n);
	char *t = cvm_b64url_encode(b, n);
	free(b);
	return t;
}

static size_t bad_uploads(struct bad *b)
{
	_cleanup_free_ char *ok = b64_of(REST_SD_SHARE_BYTES, 1),
			    *short_ = b64_of(REST_SD_SHARE_BYTES - 1, 2);
	size_t n = 0;
	char *in;
#define BADV(field_, ...)                                                                    \
	(in = cvm_asprintf(__VA_ARGS__), b[n++] = (struct bad){ upload_body(in), (field_) },    \
	 free(in))
#define BAD(field_, ...) b[n++] = (struct bad){ cvm_asprintf(__VA_ARGS__), (field_) }
	BAD("body", "{\"value\":");
	BAD("value", "{}");
	BAD("value", "{\"value\":{\"shares\":[]}}");
	BAD("value", "{\"value\":\"not json\"}");
	BADV("value", "[\"%s\",\"%s\"]", ok, ok);
	BADV("value.shares", "{\"security_domain\":{}}");
	BADV("value.shares", "{\"shares\":\"%s\"}", ok);
	BADV("value.shares", "{\"shares\":[\"%s\"]}", ok);
	BADV("value.shares", "{\"shares\":[\"%s\",\"%s\",\"%s\",\"%s\",\"%s\",\"%s\",\"%s\","
			     "\"%s\",\"%s\",\"%s\",\"%s\"]}", ok, ok, ok, ok, ok, ok, ok, ok, ok,
	     ok, ok);
	BADV("value.shares[1]", "{\"shares\":[\"%s\",17]}", ok);
	BADV("value.shares[0]", "{\"shares\":[\"***\",\"%s\"]}", ok);
	BADV("value.shares[1]", "{\"shares\":[\"%s\",\"%s\"]}", ok, short_);
	BADV("value.security_domain", "{\"shares\":[\"%s\",\"%s\"],\"security_domain\":\"x\"}", ok,
	     ok);
#undef BAD
#undef BADV
	return n;
}

static void parse_upload(void **state)
{
	(void)state;
	_cleanup_free_ char *ok = b64_of(REST_SD_SHARE_BYTES, 1);
	_cleanup_free_ char *in1 = cvm_asprintf("{\"shares\":[\"%s\",\"%s\"]}", ok, ok);
	_cleanup_free_ char *in2 = cvm_asprintf("{\"shares\":[\"%s\",\"%s\",\"%s\"],"
						"\"security_domain\":{\"version\":1}}", ok, ok, ok);
	_cleanup_free_ char *g1 = upload_body(in1), *g2 = upload_body(in2);
	struct rest_sd_upload p;
	struct cvm_err e = { 0 };
	if (parse_ul(g1, &p, &e) < 0)
		fail_msg("good upload refused: %s", e.msg);
	assert_int_equal(p.n, 2);
	assert_null(p.security_domain);
	assert_int_equal(p.shares[1][0], 1);
	rest_sd_upload_clear(&p);
	if (parse_ul(g2, &p, &e) < 0)
		fail_msg("good upload refused: %s", e.msg);
	assert_int_equal(p.n, 3);
	assert_true(json_is_object(p.security_domain));
	rest_sd_upload_clear(&p);

	struct bad b[32];
	size_t nb = bad_uploads(b);
	for (size_t i = 0; i < nb; i++) {
		int r = parse_ul(b[i].body, &p, &e);
		if (r != -EINVAL || strcmp(e.code, "BadParameter") || !strstr(e.msg, b[i].field))
			fail_msg("bad upload %zu: %d %s \"%s\", expected BadParameter naming %s", i, r,
				 e.code, e.msg, b[i].field);
		assert_int_equal(p.n, 0);
		assert_null(p.shares[0]);
		assert_null(p.security_domain);
	}
	bads_free(b, nb);
}

/* ---- over the wire: a real server, refusals leave the store untouched ----------------------- */

struct node {
	struct cvm_store *store;
	struct cvm_hsm *h;
	struct cvm_audit *audit;
	struct cvm_http_server *srv;
	struct cvm_hsm_rest *rest;
	char dir[64];
	char url[64];
	char token[128];
};

static void node_start(struct node *n, struct cvm_store *s)
{
	memset(n, 0, sizeof(*n));
	n->store = s;
	n->h = kt_hsm(s, 7, false);
	ASSERT_OK(cvm_audit_open(s, &n->audit, err));
	snprintf(n->dir, sizeof(n->dir), "/tmp/cvm-rest-domain-XXXXXX");
	assert_non_null(mkdtemp(n->dir));
	char tf[128];
	snprintf(tf, sizeof(tf), "%s/activation-token", n->dir);
	struct cvm_http_config hc = { .listen = "127.0.0.1:0", .threads = 2 };
	ASSERT_OK(cvm_http_server_new(&hc, &n->srv, err));
	struct cvm_hsm_rest_config rc = { .base_url = "https://hsm.test:8443",
					  .activation_token_file = tf };
	ASSERT_OK(cvm_hsm_register_routes(n->h, n->audit, n->srv, &rc, &n->rest, err));
	ASSERT_OK(cvm_http_server_start(n->srv, err));
	snprintf(n->url, sizeof(n->url), "http://127.0.0.1:%d", cvm_http_server_port(n->srv));
	uint8_t *t = NULL;
	size_t tl = 0;
	if (!cvm_hsm_activated(n->h)) {
		ASSERT_OK(cvm_file_read(tf, sizeof(n->token) - 1, &t, &tl, err));
		memcpy(n->token, t, tl);
		free(t);
	}
}

static void node_stop(struct node *n)
{
	cvm_http_server_free(n->srv);
	cvm_hsm_rest_free(n->rest);
	cvm_audit_close(n->audit);
	cvm_hsm_free(n->h);
	char tf[128];
	snprintf(tf, sizeof(tf), "%s/activation-token", n->dir);
	unlink(tf);
	rmdir(n->dir);
}

/* POST/GET path; returns the status, *out the JSON answer (new reference). */
static long call(struct node *n, const char *method, const char *path, const char *token,
		 const char *body, json_t **out)
{
	struct cvm_http_client_opts o = { .allow_plain_http_loopback = true };
	char url[256], th[200];
	snprintf(url, sizeof(url), "%s%s?api-version=7.5", n->url, path);
	snprintf(th, sizeof(th), "x-opencvm-activation-token: %s", token ? token : "");
	const char *hdr[] = { "content-type: application/json", token ? th : NULL, NULL };
	struct cvm_http_result res = { 0 };
	ASSERT_OK(cvm_http_request(&o, method, url, hdr, body, body ? strlen(body) : 0, &res, err));
	json_t *j = res.body.len ? json_loadb((const char *)res.body.data, res.body.len, 0, NULL)
				 : NULL;
	long st = res.status;
	cvm_http_result_free(&res);
	if (out)
		*out = j;
	else
		json_decref(j);
	return st;
}

static const char *const hsm_tables[] = {
	"hsm_meta",       "hsm_keys",           "hsm_key_versions",     "hsm_principals",
	"hsm_role_definitions", "hsm_role_assignments", "hsm_auth_meta", "hsm_service_keys",
};

static int fingerprint_tx(struct cvm_tx *tx, void *ctx, struct cvm_err *err)
{
	EVP_MD_CTX *md = ctx;
	for (size_t t = 0; t < CVM_ARRAY_SIZE(hsm_tables); t++) {
		char sql[96];
		snprintf(sql, sizeof(sql), "SELECT * FROM %s ORDER BY 1", hsm_tables[t]);
		struct cvm_rows *rows = NULL;
		int r = cvm_tx_query(tx, sql, NULL, 0, &rows, err);
		if (r < 0)
			return r;
		EVP_DigestUpdate(md, sql, strlen(sql));
		for (size_t i = 0; i < cvm_rows_count(rows); i++)
			for (size_t c = 0; c < cvm_rows_ncols(rows); c++) {
				size_t len = 0;
				const uint8_t *v = cvm_rows_blob(rows, i, c, &len);
				uint64_t tag = cvm_rows_null(rows, i, c) ? UINT64_MAX : len;
				EVP_DigestUpdate(md, &tag, sizeof(tag));
				if (v)
					EVP_DigestUpdate(md, v, len);
			}
		cvm_rows_free(rows);
	}
	return 0;
}

/* SHA-256 over every row of every hsm_* table. */
static void fingerprint(struct cvm_store *s, uint8_t out[32])
{
	EVP_MD_CTX *md = EVP_MD_CTX_new();
	assert_non_null(md);
	assert_int_equal(EVP_DigestInit_ex(md, EVP_sha256(), NULL), 1);
	ASSERT_OK(cvm_store_transact(s, CVM_TX_READ, fingerprint_tx, md, err));
	unsigned int l = 0;
	assert_int_equal(EVP_DigestFinal_ex(md, out, &l), 1);
	EVP_MD_CTX_free(md);
}

static void expect_refusal(struct node *n, const char *path, const char *token, const char *body,
			   long status, const char *field, const uint8_t before[32])
{
	json_t *j = NULL;
	long st = call(n, "POST", path, token, body, &j);
	const char *msg = jstr(j, "error.message");
	if (st != status || !msg || !strstr(msg, field))
		fail_msg("POST %s %.80s...: %ld \"%s\", expected %ld naming %s", path, body, st,
			 msg ? msg : "(no error)", status, field);
	json_decref(j);
	uint8_t after[32];
	fingerprint(n->store, after);
	assert_memory_equal(before, after, 32);
	assert_false(cvm_hsm_activated(n->h));
}

static void download_over_rest(void **state)
{
	struct testdb *db = *state;
	struct officers o;
	officers_new(&o);
	struct node n;
	node_start(&n, testdb_open(db, "sddl"));
	uint8_t before[32];
	fingerprint(n.store, before);
	struct bad b[32];
	size_t nb = bad_downloads(&o, b);
	for (size_t i = 0; i < nb; i++)
		expect_refusal(&n, "/securitydomain/download", n.token, b[i].body, 400, b[i].field,
			       before);
	bads_free(b, nb);
	assert_false(cvm_hsm_domain_exists(n.h));
	char *good[3];
	good_downloads(&o, good);
	/* a wrong token refuses a good body the same way (403, store untouched) */
	expect_refusal(&n, "/securitydomain/download", "wrong", good[0], 403,
		       "x-opencvm-activation-token", before);
	json_t *j = NULL;
	assert_int_equal(call(&n, "POST", "/securitydomain/download", n.token, good[1], &j), 202);
	assert_true(cvm_hsm_activated(n.h));
	assert_true(cvm_hsm_domain_exists(n.h));
	uint8_t after[32]; /* the digest sees what a change writes */
	fingerprint(n.store, after);
	assert_memory_not_equal(before, after, 32);
	json_t *dl = J(jstr(j, "value"));
	assert_int_equal(json_integer_value(json_object_get(dl, "quorum")), 3);
	assert_non_null(jstr(j, "administrator.client_secret"));
	json_decref(dl);
	json_decref(j);
	for (size_t i = 0; i < 3; i++)
		free(good[i]);
	/* refusals were audited, and the chain verifies */
	int64_t records = 0, bad_seq = 0;
	ASSERT_OK(cvm_audit_verify(n.store, &records, &bad_seq, err));
	assert_true(records >= (int64_t)nb + 2);
	node_stop(&n);
	cvm_store_close(n.store);
	officers_free(&o);
}

/* Shares of dl for officers idx[], encrypted to the node's exchange key, as an upload body. */
static char *shares_body(struct node *n, json_t *dl, const struct officers *o, const int *idx,
			 size_t k, bool with_sd)
{
	json_t *ans = NULL;
	assert_int_equal(call(n, "GET", "/securitydomain/upload", NULL, NULL, &ans), 200);
	struct cvm_key *xk = NULL;
	ASSERT_OK(cvm_key_from_jwk(json_object_get(ans, "transfer_key"), false, &xk, err));
	json_decref(ans);
	json_t *arr = json_array();
	for (size_t i = 0; i < k; i++) {
		struct cvm_secret *s = NULL;
		ASSERT_OK(cvm_hsm_domain_decrypt_share(dl, o->priv[idx[i]], &s, err));
		struct cvm_buf ct = { 0 };
		ASSERT_OK(cvm_rsa_oaep_encrypt(cvm_key_pkey(xk), "SHA256", s->data, s->len, &ct,
					       err));
		cvm_secret_free(s);
		char *b = cvm_b64url_encode(ct.data, ct.len);
		json_array_append_new(arr, json_string(b));
		free(b);
		cvm_buf_free(&ct);
	}
	cvm_key_free(xk);
	json_t *v = json_pack("{s:o}", "shares", arr);
	if (with_sd)
		json_object_set(v, "security_domain", dl);
	char *inner = json_dumps(v, JSON_COMPACT);
	json_decref(v);
	char *body = upload_body(inner);
	free(inner);
	return body;
}

static void upload_over_rest(void **state)
{
	struct testdb *db = *state;
	struct officers o;
	officers_new(&o);
	/* the store gets its domain from a first HSM; a second (cvmd restart) activates by upload */
	struct cvm_store *s = testdb_open(db, "sdul");
	struct cvm_hsm *first = kt_hsm(s, 7, false);
	json_t *dl = NULL;
	ASSERT_OK(cvm_hsm_domain_create(first, (const char *const *)o.pub, 3, 2, &dl, err));
	cvm_hsm_free(first);

	struct bad b[32];
	size_t nb = bad_uploads(b);
	/* not-encrypted-to-the-exchange-key and wrong shares are refused after parsing */
	_cleanup_free_ char *ok = b64_of(REST_SD_SHARE_BYTES, 1);
	_cleanup_free_ char *in = cvm_asprintf("{\"shares\":[\"%s\",\"%s\"]}", ok, ok);
	b[nb++] = (struct bad){ upload_body(in), "value.shares[0]" };
	/* Five failures per minute per process are allowed (then 429): a fresh node per four. */
	for (size_t i = 0; i < nb; i += 4) {
		struct node n;
		node_start(&n, s);
		uint8_t before[32];
		fingerprint(s, before);
		json_t *ans = NULL;
		assert_int_equal(call(&n, "GET", "/securitydomain/upload", NULL, NULL, &ans), 200);
		json_decref(ans);
		for (size_t k = i; k < nb && k < i + 4; k++)
			expect_refusal(&n, "/securitydomain/upload", NULL, b[k].body, 400,
				       b[k].field, before);
		node_stop(&n);
	}
	bads_free(b, nb);

	struct node n;
	node_start(&n, s);
	uint8_t before[32];
	fingerprint(s, before);
	/* one officer's share twice: the quorum is not met */
	const int twice[] = { 1, 1 }, two[] = { 0, 2 };
	_cleanup_free_ char *dup = shares_body(&n, dl, &o, twice, 2, false);
	expect_refusal(&n, "/securitydomain/upload", NULL, dup, 400, "share", before);
	_cleanup_free_ char *good = shares_body(&n, dl, &o, two, 2, false);
	json_t *ans = NULL;
	assert_int_equal(call(&n, "POST", "/securitydomain/upload", NULL, good, &ans), 202);
	assert_string_equal(jstr(ans, "status"), "Success");
	json_decref(ans);
	assert_true(cvm_hsm_activated(n.h));
	node_stop(&n);
	json_decref(dl);
	cvm_store_close(s);
	officers_free(&o);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(parse_download),
		cmocka_unit_test(parse_upload),
		cmocka_unit_test(download_over_rest),
		cmocka_unit_test(upload_over_rest),
	};
	return testdb_run("hsm-rest-domain", tests, CVM_ARRAY_SIZE(tests));
}
