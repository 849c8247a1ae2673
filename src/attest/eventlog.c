/* SPDX-License-Identifier: Apache-2.0 */
/* TCG PC Client Platform Firmware Profile crypto-agile event log: parser and SHA-256 replay. */
#include <openssl/evp.h>
#include <string.h>

#include "attest-internal.h"

#define EV_NO_ACTION 0x00000003u
#define ALG_SHA1 0x0004
#define ALG_SHA256 0x000b
#define MAX_ALGS 8
#define MAX_EVENT_DATA (16u * 1024u * 1024u)

static const char spec_id_sig[16] = "Spec ID Event03";
static const char startup_locality_sig[16] = "StartupLocality";

struct log_alg {
	uint16_t id;
	uint16_t size;
};

struct log_event {
	uint32_t pcr;
	uint32_t type;
	const uint8_t *sha256; /* NULL when the event has no SHA-256 digest */
	const uint8_t *data;
	uint32_t data_len;
};

struct log_reader {
	const uint8_t *p;
	size_t left;
	struct log_alg algs[MAX_ALGS];
	size_t n_algs;
};

static bool take(struct log_reader *r, size_t n, const uint8_t **out)
{
	if (r->left < n)
		return false;
	*out = r->p;
	r->p += n;
	r->left -= n;
	return true;
}

static bool take32(struct log_reader *r, uint32_t *v)
{
	const uint8_t *p;
	if (!take(r, 4, &p))
		return false;
	*v = cvm_le32(p);
	return true;
}

/* TPM_ALG_ID -> digest size for the algorithms TPM event logs use; 0 for others. */
static size_t tpm_alg_digest_size(uint16_t alg)
{
	switch (alg) {
	case 0x0004: return 20; /* SHA-1 */
	case 0x000b: return 32; /* SHA-256 */
	case 0x000c: return 48; /* SHA-384 */
	case 0x000d: return 64; /* SHA-512 */
	case 0x0012: return 32; /* SM3-256 */
	default: return 0;
	}
}

/* The first record: TCG_PCR_EVENT (SHA-1 format) with the TCG_EfiSpecIDEvent listing the
 * digest sizes every later record uses. */
static int read_header(struct log_reader *r, struct cvm_err *err)
{
	uint32_t pcr, type, size;
	const uint8_t *digest, *ev;
	if (!take32(r, &pcr) || !take32(r, &type) || !take(r, 20, &digest) || !take32(r, &size) ||
	    size > r->left || !take(r, size, &ev))
		return cvm_err_badparam(err, "tcg_log: truncated first event");
	if (type != EV_NO_ACTION || size < 29 || memcmp(ev, spec_id_sig, 16) != 0)
		return cvm_err_badparam(err, "tcg_log: not a crypto-agile log (no Spec ID Event03)");
	uint32_t n = cvm_le32(ev + 24);
	if (n == 0 || n > MAX_ALGS || size < 28 + 4 * (size_t)n + 1)
		return cvm_err_badparam(err, "tcg_log.spec_id: %u algorithms", n);
	for (uint32_t i = 0; i < n; i++) {
		const uint8_t *a = ev + 28 + 4 * i;
		r->algs[i].id = (uint16_t)(a[0] | a[1] << 8);
		r->algs[i].size = (uint16_t)(a[2] | a[3] << 8);
		if (r->algs[i].size == 0 || r->algs[i].size > 64)
			return cvm_err_badparam(err, "tcg_log.spec_id: digest size %u",
						r->algs[i].size);
		/* A known algorithm has one digest size: a log declaring another is malformed
		 * (SHA-256 digests are read as 32 bytes when replayed). */
		size_t want = tpm_alg_digest_size(r->algs[i].id);
		if (want && r->algs[i].size != want)
			return cvm_err_badparam(err, "tcg_log.spec_id: algorithm 0x%04x with digest "
						"size %u, expected %zu", r->algs[i].id,
						r->algs[i].size, want);
	}
	r->n_algs = n;
	return 0;
}

static int read_event(struct log_reader *r, struct log_event *e, size_t idx, struct cvm_err *err)
{
	uint32_t count;
	memset(e, 0, sizeof(*e));
	if (!take32(r, &e->pcr) || !take32(r, &e->type) || !take32(r, &count))
		return cvm_err_badparam(err, "tcg_log.event[%zu]: truncated header", idx);
	if (e->pcr >= 24 && e->type != EV_NO_ACTION)
		return cvm_err_badparam(err, "tcg_log.event[%zu].pcr: %u out of range", idx, e->pcr);
	if (count > MAX_ALGS)
		return cvm_err_badparam(err, "tcg_log.event[%zu]: %u digests", idx, count);
	for (uint32_t i = 0; i < count; i++) {
		const uint8_t *a, *d;
		if (!take(r, 2, &a))
			return cvm_err_badparam(err, "tcg_log.event[%zu]: truncated digest", idx);
		uint16_t alg = (uint16_t)(a[0] | a[1] << 8);
		size_t k;
		for (k = 0; k < r->n_algs && r->algs[k].id != alg; k++)
			;
		if (k == r->n_algs)
			return cvm_err_badparam(err, "tcg_log.event[%zu]: digest algorithm 0x%04x not "
						"declared in the Spec ID event", idx, alg);
		if (!take(r, r->algs[k].size, &d))
			return cvm_err_badparam(err, "tcg_log.event[%zu]: truncated digest", idx);
		if (alg == ALG_SHA256 && r->algs[k].size == 32)
			e->sha256 = d;
	}
	const uint8_t *data;
	if (!take32(r, &e->data_len) || e->data_len > MAX_EVENT_DATA ||
	    !take(r, e->data_len, &data))
		return cvm_err_badparam(err, "tcg_log.event[%zu]: truncated event data", idx);
	e->data = data;
	return 0;
}

static int extend(uint8_t pcr[32], const uint8_t digest[32], struct cvm_err *err)
{
	uint8_t in[64];
	memcpy(in, pcr, 32);
	memcpy(in + 32, digest, 32);
	size_t dl = 0;
	return cvm_digest("SHA256", in, 64, pcr, &dl, err);
}

int cvm_tcg_log_replay(const uint8_t *buf, size_t len, struct cvm_tcg_log *out,
		       struct cvm_err *err)
{
	if (!buf)
		return cvm_err_badparam(err, "tcg_log: missing");
	struct log_reader r = { .p = buf, .left = len };
	memset(out, 0, sizeof(*out));
	int rc = read_header(&r, err);
	if (rc < 0)
		return rc;
	for (size_t i = 0; r.left > 0; i++) {
		if (i >= CVM_TCG_MAX_EVENTS)
			return cvm_err_badparam(err, "tcg_log: more than %d events", CVM_TCG_MAX_EVENTS);
		struct log_event e;
		if ((rc = read_event(&r, &e, i, err)) < 0)
			return rc;
		out->n_events++;
		if (e.type == EV_NO_ACTION) {
			/* StartupLocality (PC Client spec 10.4.5.3): PCR0 starts at the locality. */
			if (e.pcr == 0 && e.data_len == 17 &&
			    memcmp(e.data, startup_locality_sig, 16) == 0 &&
			    !(out->extended_mask & 1)) {
				memset(out->pcrs[0], 0, 32);
				out->pcrs[0][31] = e.data[16];
			}
			continue;
		}
		if (!e.sha256)
			return cvm_err_badparam(err, "tcg_log.event[%zu]: no SHA-256 digest", i);
		if ((rc = extend(out->pcrs[e.pcr], e.sha256, err)) < 0)
			return rc;
		out->extended_mask |= 1u << e.pcr;
	}
	return 0;
}

int cvm_tcg_log_check(const struct cvm_tcg_log *log, const uint8_t (*pcrs)[32], size_t n_pcrs,
		      struct cvm_err *err)
{
	for (size_t i = 0; i < 24; i++) {
		if (!(log->extended_mask & (1u << i)))
			continue;
		if (i >= n_pcrs || !pcrs)
			return cvm_err_badparam(err, "tcg_log: PCR %zu is extended but not given", i);
		if (memcmp(log->pcrs[i], pcrs[i], 32) != 0)
			return cvm_err_set(err, EBADMSG, "Unauthorized",
					   "tcg_log: replay of PCR %zu does not match the quoted value",
					   i);
	}
	return 0;
}

int cvm_tcg_log_to_json(const uint8_t *buf, size_t len, json_t **out, struct cvm_err *err)
{
	struct log_reader r = { .p = buf, .left = len };
	int rc = buf ? read_header(&r, err) : cvm_err_badparam(err, "tcg_log: missing");
	if (rc < 0)
		return rc;
	json_t *arr = json_array();
	if (!arr)
		return cvm_err_nomem(err);
	for (size_t i = 0; r.left > 0; i++) {
		struct log_event e;
		if (i >= CVM_TCG_MAX_EVENTS) {
			rc = cvm_err_badparam(err, "tcg_log: more than %d events", CVM_TCG_MAX_EVENTS);
			break;
		}
		if ((rc = read_event(&r, &e, i, err)) < 0)
			break;
		json_t *o = json_pack("{s:i, s:I}", "pcr", (int)e.pcr, "type", (json_int_t)e.type);
		if (!o || (e.sha256 && cvm_attest_json_hex(o, "sha256", e.sha256, 32)) ||
		    cvm_attest_json_hex(o, "data", e.data, e.data_len > 256 ? 256 : e.data_len)) {
			json_decref(o);
			rc = cvm_err_nomem(err);
			break;
		}
		/* append_new consumes o even when it fails. */
		if (json_array_append_new(arr, o)) {
			rc = cvm_err_nomem(err);
			break;
		}
	}
	if (rc < 0) {
		json_decref(arr);
		return rc;
	}
	*out = arr;
	return 0;
}
