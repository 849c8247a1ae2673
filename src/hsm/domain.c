/* SPDX-License-Identifier: Apache-2.0 */
/* Security domain: a random 256-bit domain key that seals every private key at rest. It is
 * split M-of-N (Shamir) to officers' RSA keys; the store holds only a check value (an HMAC
 * under a subkey), so recombined shares can be verified before the HSM is activated with them. */
#include "hsm-internal.h"

#include <stdio.h>
#include <string.h>

#include <openssl/crypto.h>

#define CHECK_LABEL "opencvm domain check v1"
#define DOMAIN_KEY_LEN 32
#define SHARE_LEN (1 + DOMAIN_KEY_LEN)
#define OFFICERS_MIN 3
#define OFFICERS_MAX 10

bool cvm_hsm_activated(struct cvm_hsm *h)
{
	pthread_rwlock_rdlock(&h->domain_lock);
	bool on = h->domain_key != NULL;
	pthread_rwlock_unlock(&h->domain_lock);
	return on;
}

static int check_value(const struct cvm_secret *key, const char *hsm_id, uint8_t out[32],
		       struct cvm_err *err)
{
	_cleanup_secret_ struct cvm_secret *ck = NULL;
	int r = cvm_hsm_derive(key, CHECK_LABEL, &ck, err);
	if (r < 0)
		return r;
	_cleanup_free_ char *msg = cvm_asprintf(CHECK_LABEL "|%s", hsm_id);
	if (!msg)
		return cvm_err_nomem(err);
	return cvm_hmac_sha256(ck->data, ck->len, msg, strlen(msg), out, err);
}

/* Install key32 (copied) and its subkeys. Drops cached keys unsealed under a previous domain. */
static int activate(struct cvm_hsm *h, const struct cvm_secret *key32, struct cvm_err *err)
{
	_cleanup_secret_ struct cvm_secret *dk = cvm_secret_from(key32->data, key32->len);
	_cleanup_secret_ struct cvm_secret *seal = NULL, *backup = NULL, *full = NULL;
	if (!dk)
		return cvm_err_nomem(err);
	int r;
	if ((r = cvm_hsm_derive(dk, "opencvm key seal v1", &seal, err)) < 0 ||
	    (r = cvm_hsm_derive(dk, "opencvm key backup v1", &backup, err)) < 0 ||
	    (r = cvm_hsm_derive(dk, "opencvm full backup v1", &full, err)) < 0)
		return r;
	pthread_rwlock_wrlock(&h->domain_lock);
	cvm_secret_free(h->domain_key);
	cvm_secret_free(h->seal_key);
	cvm_secret_free(h->backup_key);
	cvm_secret_free(h->full_key);
	h->domain_key = CVM_TAKE(dk);
	h->seal_key = CVM_TAKE(seal);
	h->backup_key = CVM_TAKE(backup);
	h->full_key = CVM_TAKE(full);
	pthread_rwlock_unlock(&h->domain_lock);
	cvm_hsm_cache_drop(h, NULL);
	cvm_log_info("hsm_activated", "hsm=%s", h->name);
	return 0;
}

struct meta {
	bool has_domain;
	char hsm_id[37];
	uint8_t check[32];
	int quorum;
};

static int read_meta(struct cvm_hsm *h, struct meta *m, struct cvm_err *err)
{
	_cleanup_tx_ struct cvm_tx *tx = NULL;
	_cleanup_rows_ struct cvm_rows *rows = NULL;
	int r;
	if ((r = cvm_tx_begin(h->store, CVM_TX_READ, &tx, err)) < 0 ||
	    (r = cvm_tx_query(tx, "SELECT hsm_id, domain_check, domain_quorum FROM hsm_meta "
				  "WHERE id = 1",
			      NULL, 0, &rows, err)) < 0 ||
	    (r = cvm_tx_commit(CVM_TAKE(tx), err)) < 0)
		return r;
	memset(m, 0, sizeof(*m));
	size_t len = 0;
	const uint8_t *chk = cvm_rows_blob(rows, 0, 1, &len);
	const char *id = cvm_rows_text(rows, 0, 0);
	if (!chk)
		return 0;
	if (len != 32 || !id || strlen(id) != 36)
		return cvm_err_internal(err, "hsm_meta: malformed security domain check value");
	m->has_domain = true;
	memcpy(m->check, chk, 32);
	memcpy(m->hsm_id, id, 37);
	m->quorum = (int)cvm_rows_int(rows, 0, 2);
	return 0;
}

bool cvm_hsm_domain_exists(struct cvm_hsm *h)
{
	struct meta m;
	struct cvm_err e = {0};
	return read_meta(h, &m, &e) == 0 && m.has_domain;
}

struct store_ctx {
	const char *hsm_id;
	const uint8_t *check;
	int quorum;
	int64_t now;
};

static int store_domain_tx(struct cvm_tx *tx, void *vctx, struct cvm_err *err)
{
	struct store_ctx *s = vctx;
	int64_t changes = 0;
	struct cvm_val p[] = { CVM_VAL_S(s->hsm_id), CVM_VAL_B(s->check, 32), CVM_VAL_I(s->quorum),
			       CVM_VAL_I(s->now) };
	int r = cvm_tx_exec(tx, "UPDATE hsm_meta SET hsm_id = ?, domain_check = ?, "
				"domain_quorum = ?, domain_created = ? WHERE id = 1 AND "
				"domain_check IS NULL",
			    p, 4, &changes, err);
	if (r < 0)
		return r;
	if (changes != 1)
		return cvm_err_set(err, EEXIST, "Conflict",
				   "security domain: this HSM already has a security domain; "
				   "upload it (POST /securitydomain/upload) to activate");
	return 0;
}

/* Record a new domain (atomically: only the first creator wins) and activate it. */
static int create_domain(struct cvm_hsm *h, const struct cvm_secret *key, const char *hsm_id,
			 int quorum, struct cvm_err *err)
{
	uint8_t check[32];
	int r = check_value(key, hsm_id, check, err);
	if (r < 0)
		return r;
	struct store_ctx s = { .hsm_id = hsm_id, .check = check, .quorum = quorum,
			       .now = cvm_now() };
	if ((r = cvm_store_transact(h->store, CVM_TX_WRITE, store_domain_tx, &s, err)) < 0)
		return r;
	cvm_log_info("hsm_domain_created", "hsm=%s hsm_id=%s quorum=%d", h->name, hsm_id, quorum);
	return activate(h, key, err);
}

int cvm_hsm_domain_create_with_key(struct cvm_hsm *h, const struct cvm_secret *key32,
				   struct cvm_err *err)
{
	if (!key32 || key32->len != DOMAIN_KEY_LEN)
		return cvm_err_badparam(err, "domain key: expected %d bytes", DOMAIN_KEY_LEN);
	char id[37];
	int r = cvm_uuid4(id, err);
	if (r < 0)
		return r;
	return create_domain(h, key32, id, 0, err);
}

int cvm_hsm_domain_create_dev(struct cvm_hsm *h, struct cvm_err *err)
{
	_cleanup_secret_ struct cvm_secret *k = cvm_secret_random(DOMAIN_KEY_LEN);
	if (!k)
		return cvm_err_internal(err, "cannot generate a domain key");
	return cvm_hsm_domain_create_with_key(h, k, err);
}

static int verify_and_activate(struct cvm_hsm *h, const struct cvm_secret *key,
			       const struct meta *m, struct cvm_err *err)
{
	uint8_t check[32];
	if (key->len != DOMAIN_KEY_LEN)
		goto wrong;
	int r = check_value(key, m->hsm_id, check, err);
	if (r < 0)
		return r;
	if (CRYPTO_memcmp(check, m->check, 32) != 0)
		goto wrong;
	return activate(h, key, err);
wrong:
	return cvm_err_set(err, EPERM, "Forbidden",
			   "security domain: the key does not match this HSM's security domain "
			   "(too few shares, a wrong share, or another domain)");
}

int cvm_hsm_domain_unlock(struct cvm_hsm *h, const struct cvm_secret *key32, struct cvm_err *err)
{
	struct meta m;
	int r = read_meta(h, &m, err);
	if (r < 0)
		return r;
	if (!m.has_domain)
		return cvm_err_badparam(err, "security domain: this HSM has none yet; create one");
	if (!key32)
		return cvm_err_badparam(err, "domain key: required");
	return verify_and_activate(h, key32, &m, err);
}

static int combine(struct cvm_secret *const *shares, size_t n, struct cvm_secret **out,
		   struct cvm_err *err)
{
	if (!shares || n < 2 || n > 255)
		return cvm_err_badparam(err, "shares: at least 2 (the quorum) are required, got %zu",
					n);
	for (size_t i = 0; i < n; i++)
		if (!shares[i] || shares[i]->len != SHARE_LEN)
			return cvm_err_badparam(err, "shares[%zu]: expected %d bytes", i, SHARE_LEN);
	return cvm_shamir_combine(shares, (unsigned)n, out, err);
}

int cvm_hsm_domain_upload(struct cvm_hsm *h, struct cvm_secret *const *shares, size_t n,
			  struct cvm_err *err)
{
	struct meta m;
	_cleanup_secret_ struct cvm_secret *key = NULL;
	int r = read_meta(h, &m, err);
	if (r < 0)
		return r;
	if (!m.has_domain)
		return cvm_err_badparam(err, "security domain: this HSM has none yet; use "
					     "cvm_hsm_domain_restore with the download blob");
	if ((r = combine(shares, n, &key, err)) < 0)
		return r;
	return verify_and_activate(h, key, &m, err);
}

int cvm_hsm_domain_restore(struct cvm_hsm *h, json_t *download, struct cvm_secret *const *shares,
			   size_t n, struct cvm_err *err)
{
	struct meta m;
	int r = read_meta(h, &m, err);
	if (r < 0)
		return r;
	if (m.has_domain)
		return cvm_hsm_domain_upload(h, shares, n, err);
	const char *id;
	int64_t version, quorum;
	_cleanup_free_ uint8_t *check = NULL;
	size_t clen;
	if (!json_is_object(download))
		return cvm_err_badparam(err, "security domain: expected a JSON object");
	if ((r = cvm_json_int(download, "version", "version", true, 1, 1, &version, NULL, err)) < 0 ||
	    (r = cvm_json_str(download, "hsm_id", "hsm_id", true, &id, NULL, err)) < 0 ||
	    (r = cvm_json_int(download, "quorum", "quorum", true, 2, OFFICERS_MAX, &quorum, NULL,
			      err)) < 0 ||
	    (r = cvm_json_b64url(download, "check", "check", true, &check, &clen, err)) < 0)
		return r;
	if (strlen(id) != 36)
		return cvm_err_badparam(err, "hsm_id: expected a UUID");
	if (clen != 32)
		return cvm_err_badparam(err, "check: expected 32 bytes");
	memcpy(m.hsm_id, id, 37);
	memcpy(m.check, check, 32);
	_cleanup_secret_ struct cvm_secret *key = NULL;
	uint8_t got[32];
	if ((r = combine(shares, n, &key, err)) < 0)
		return r;
	if (key->len != DOMAIN_KEY_LEN || (r = check_value(key, id, got, err)) < 0 ||
	    CRYPTO_memcmp(got, m.check, 32) != 0)
		return r < 0 ? r :
			       cvm_err_set(err, EPERM, "Forbidden",
					   "security domain: the shares do not reconstruct the "
					   "domain of this download");
	struct store_ctx s = { .hsm_id = id, .check = m.check, .quorum = (int)quorum,
			       .now = cvm_now() };
	if ((r = cvm_store_transact(h->store, CVM_TX_WRITE, store_domain_tx, &s, err)) < 0)
		return r;
	return activate(h, key, err);
}

/* Hex SHA-256 of the key's SubjectPublicKeyInfo DER. */
static int spki_sha256(const struct cvm_key *k, char out[65], struct cvm_err *err)
{
	_cleanup_buf_ struct cvm_buf der = {0};
	uint8_t md[64];
	size_t mdlen;
	int r = cvm_key_export_public_der(k, &der, err);
	if (r < 0 || (r = cvm_digest("SHA256", der.data, der.len, md, &mdlen, err)) < 0)
		return r;
	_cleanup_free_ char *hex = cvm_hex_encode(md, mdlen);
	if (!hex)
		return cvm_err_nomem(err);
	snprintf(out, 65, "%s", hex);
	return 0;
}

static int officer_key(const char *pem, size_t i, struct cvm_key **out, char fp[65],
		       struct cvm_err *err)
{
	_cleanup_key_ struct cvm_key *k = NULL;
	if (!pem)
		return cvm_err_badparam(err, "certificates[%zu]: required", i);
	int r = cvm_key_from_pem(pem, strlen(pem), &k, err);
	if (r < 0)
		return cvm_err_prefix(err, "certificates[%zu]", i);
	if (cvm_key_type(k) != CVM_KTY_RSA || cvm_key_bits(k) < 2048)
		return cvm_err_badparam(err, "certificates[%zu]: an RSA key of at least 2048 bits is "
					     "required",
					i);
	if ((r = spki_sha256(k, fp, err)) < 0)
		return r;
	*out = CVM_TAKE(k);
	return 0;
}

int cvm_hsm_domain_create(struct cvm_hsm *h, const char *const *officer_pems, size_t n,
			  unsigned quorum, json_t **download, struct cvm_err *err)
{
	if (n < OFFICERS_MIN || n > OFFICERS_MAX || !officer_pems)
		return cvm_err_badparam(err, "certificates: expected %d..%d officer keys, got %zu",
					OFFICERS_MIN, OFFICERS_MAX, n);
	if (quorum < 2 || quorum > n)
		return cvm_err_badparam(err, "required: the quorum must be 2..%zu, got %u", n,
					quorum);
	char fps[OFFICERS_MAX][65];
	struct cvm_key *keys[OFFICERS_MAX] = {0};
	struct cvm_secret *shares[OFFICERS_MAX] = {0};
	_cleanup_secret_ struct cvm_secret *dk = cvm_secret_random(DOMAIN_KEY_LEN);
	_cleanup_json_ json_t *arr = json_array();
	_cleanup_json_ json_t *dl = NULL;
	uint8_t check[32];
	char id[37];
	int r = 0;
	if (!dk || !arr) {
		r = cvm_err_nomem(err);
		goto out;
	}
	for (size_t i = 0; i < n && r == 0; i++) {
		r = officer_key(officer_pems[i], i, &keys[i], fps[i], err);
		for (size_t j = 0; r == 0 && j < i; j++)
			if (!strcmp(fps[i], fps[j]))
				r = cvm_err_badparam(err, "certificates[%zu]: the same key as "
							  "certificates[%zu]",
						     i, j);
	}
	if (r < 0 || (r = cvm_uuid4(id, err)) < 0 ||
	    (r = cvm_shamir_split(dk, quorum, (unsigned)n, shares, err)) < 0)
		goto out;
	for (size_t i = 0; i < n; i++) {
		_cleanup_buf_ struct cvm_buf ct = {0};
		if ((r = cvm_rsa_oaep_encrypt(cvm_key_pkey(keys[i]), "SHA256", shares[i]->data,
					      shares[i]->len, &ct, err)) < 0)
			goto out;
		json_t *e = json_pack("{s:I,s:s}", "index", (json_int_t)(i + 1),
				      "officer_key_sha256", fps[i]);
		if (!e || json_array_append_new(arr, e) ||
		    cvm_json_set_b64url(e, "enc_share", ct.data, ct.len)) {
			r = cvm_err_nomem(err);
			goto out;
		}
	}
	if ((r = check_value(dk, id, check, err)) < 0)
		goto out;
	dl = json_pack("{s:i,s:s,s:I,s:I}", "version", 1, "hsm_id", id,
					      "quorum", (json_int_t)quorum, "created",
					      (json_int_t)cvm_now());
	if (!dl || cvm_json_set_b64url(dl, "check", check, 32) ||
	    json_object_set(dl, "shares", arr)) {
		r = cvm_err_nomem(err);
		goto out;
	}
	if ((r = create_domain(h, dk, id, (int)quorum, err)) < 0)
		goto out;
	*download = CVM_TAKE(dl);
out:
	for (size_t i = 0; i < OFFICERS_MAX; i++) {
		cvm_key_free(keys[i]);
		cvm_secret_free(shares[i]);
	}
	return r;
}

int cvm_hsm_domain_decrypt_share(json_t *download, const char *officer_private_pem,
				 struct cvm_secret **share, struct cvm_err *err)
{
	json_t *arr;
	int r;
	if (!json_is_object(download))
		return cvm_err_badparam(err, "security domain: expected a JSON object");
	if ((r = cvm_json_arr(download, "shares", "shares", true, &arr, err)) < 0)
		return r;
	_cleanup_key_ struct cvm_key *k = NULL;
	char fp[65];
	if (!officer_private_pem ||
	    (r = cvm_key_from_pem(officer_private_pem, strlen(officer_private_pem), &k, err)) < 0)
		return r < 0 ? cvm_err_prefix(err, "officer key") :
			       cvm_err_badparam(err, "officer key: required");
	if (!cvm_key_has_private(k) || cvm_key_type(k) != CVM_KTY_RSA)
		return cvm_err_badparam(err, "officer key: an RSA private key is required");
	if ((r = spki_sha256(k, fp, err)) < 0)
		return r;
	size_t i;
	json_t *e;
	json_array_foreach(arr, i, e) {
		char path[64];
		const char *efp;
		int64_t index;
		snprintf(path, sizeof(path), "shares[%zu]", i);
		if (!json_is_object(e))
			return cvm_err_badparam(err, "%s: expected an object", path);
		if ((r = cvm_json_str(e, "officer_key_sha256", "officer_key_sha256", true, &efp, NULL,
				      err)) < 0)
			return cvm_err_prefix(err, "%s", path);
		if (strcmp(efp, fp))
			continue;
		_cleanup_free_ uint8_t *ct = NULL;
		size_t ctlen;
		if ((r = cvm_json_int(e, "index", "index", true, 1, 255, &index, NULL, err)) < 0 ||
		    (r = cvm_json_b64url(e, "enc_share", "enc_share", true, &ct, &ctlen, err)) < 0)
			return cvm_err_prefix(err, "%s", path);
		_cleanup_secret_ struct cvm_secret *s = NULL;
		if ((r = cvm_rsa_oaep_decrypt(cvm_key_pkey(k), "SHA256", ct, ctlen, &s, err)) < 0)
			return cvm_err_prefix(err, "%s.enc_share", path);
		if (s->len != SHARE_LEN || s->data[0] != (uint8_t)index)
			return cvm_err_set(err, EBADMSG, "BadParameter",
					   "%s.enc_share: not a share of this security domain", path);
		*share = CVM_TAKE(s);
		return 0;
	}
	return cvm_err_set(err, ENOENT, "NotFound",
			   "shares: no share is encrypted to this officer key (SHA-256 %s)", fp);
}
