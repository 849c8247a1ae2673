/* SPDX-License-Identifier: Apache-2.0 */
/* Confidential VM Orchestrator relay: forwards the guest's attestation request to the
 * attestation service and performs the disk-key release with its own identity, the guest's
 * token as target. It never sees the key: the release comes back wrapped to the guest's
 * ephemeral key (bound in the token), and it forwards the response as is. */
#include <opencvm/audit.h>
#include <opencvm/crypto.h>
#include <opencvm/http.h>
#include <opencvm/json.h>
#include <opencvm/store.h>
#include <opencvm/vm.h>

#include <openssl/crypto.h>
#include <string.h>
#include <unistd.h>

#define TOKEN_SCOPE "https://managedhsm.azure.net/.default"

static int form_escape(struct cvm_buf *b, const char *s, size_t len)
{
	for (size_t i = 0; i < len; i++) {
		unsigned char c = (unsigned char)s[i];
		int r = ((c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') ||
			 c == '-' || c == '_' || c == '.' || c == '~')
				? cvm_buf_append(b, &c, 1)
				: cvm_buf_printf(b, "%%%02X", c);
		if (r < 0)
			return r;
	}
	return 0;
}

static const char *http_error_message(const struct cvm_http_result *res, char *buf, size_t cap)
{
	_cleanup_json_ json_t *j = NULL;
	struct cvm_err e = { 0 };
	const char *m = NULL;
	if (cvm_json_parse(res->body.data, res->body.len, false, &j, &e) == 0)
		m = json_string_value(cvm_json_path(j, "error.message"));
	if (!m && j)
		m = json_string_value(json_object_get(j, "error_description"));
	snprintf(buf, cap, "%s", m ? m : "no error message");
	return buf;
}

/* method with a body of ctype, or without one (ctype NULL, GET). */
static int request(const struct cvm_vm_orch *o, const char *method, const char *url,
		   const char *ctype, const char *bearer, const void *body, size_t len,
		   struct cvm_http_result *res, struct cvm_err *err)
{
	struct cvm_http_client_opts opts = { .ca_file = o->ca_file, .timeout_ms = 60000 };
	_cleanup_free_ char *ct = ctype ? cvm_asprintf("Content-Type: %s", ctype) : NULL;
	_cleanup_free_ char *auth = bearer ? cvm_asprintf("Authorization: Bearer %s", bearer) : NULL;
	if ((ctype && !ct) || (bearer && !auth))
		return cvm_err_nomem(err);
	const char *hdrs[4] = { 0 };
	size_t nh = 0;
	if (ct)
		hdrs[nh++] = ct;
	hdrs[nh++] = "Accept: application/json";
	hdrs[nh] = auth;
	int r = cvm_http_request(&opts, method, url, hdrs, body, len, res, err);
	if (r < 0)
		return cvm_err_prefix(err, "%s %s", method, url);
	if (res->status / 100 != 2) {
		char m[400];
		http_error_message(res, m, sizeof(m));
		int en = res->status == 401 ? EACCES : res->status == 403 ? EPERM
			: res->status == 404 ? ENOENT : res->status / 100 == 4 ? EINVAL : EIO;
		return cvm_err_set(err, en, "Refused", "HTTP %ld: %s", res->status, m);
	}
	return 0;
}

static int post(const struct cvm_vm_orch *o, const char *url, const char *ctype,
		const char *bearer, const void *body, size_t len, struct cvm_http_result *res,
		struct cvm_err *err)
{
	return request(o, "POST", url, ctype, bearer, body, len, res, err);
}

/* Client-credentials token for the orchestrator's identity. */
static int orch_token(const struct cvm_vm_orch *o, char **token, struct cvm_err *err)
{
	*token = NULL;
	if (!o->tenant || !o->client_id || !o->client_secret)
		return cvm_err_set(err, EACCES, "NotConfigured",
				   "orchestrator identity: tenant, client id and secret are required");
	_cleanup_free_ char *url = cvm_asprintf("%s/%s/oauth2/v2.0/token", o->kv_url, o->tenant);
	struct cvm_buf form = { 0 };
	int r = url ? cvm_buf_append_str(&form, "grant_type=client_credentials&client_id=")
		    : -ENOMEM;
	if (r == 0)
		r = form_escape(&form, o->client_id, strlen(o->client_id));
	if (r == 0)
		r = cvm_buf_append_str(&form, "&client_secret=");
	if (r == 0)
		r = form_escape(&form, (const char *)o->client_secret->data, o->client_secret->len);
	if (r == 0)
		r = cvm_buf_append_str(&form, "&scope=");
	if (r == 0)
		r = form_escape(&form, TOKEN_SCOPE, strlen(TOKEN_SCOPE));
	if (r < 0) {
		cvm_buf_wipe(&form);
		return cvm_err_nomem(err);
	}
	struct cvm_http_result res = { 0 };
	r = post(o, url, "application/x-www-form-urlencoded", NULL, form.data, form.len, &res, err);
	cvm_buf_wipe(&form);
	if (r == 0) {
		_cleanup_json_ json_t *j = NULL;
		const char *t = NULL;
		if ((r = cvm_json_parse(res.body.data, res.body.len, false, &j, err)) == 0 &&
		    (r = cvm_json_str(j, "access_token", "access_token", true, &t, NULL, err)) == 0 &&
		    !(*token = cvm_strdup(t)))
			r = cvm_err_nomem(err);
	}
	cvm_http_result_free(&res);
	return r < 0 ? cvm_err_prefix(err, "orchestrator token") : 0;
}

/* ".../keys/<name>/<version>" of a kid. */
static int kid_path(const char *kid, char **out, struct cvm_err *err)
{
	const char *k = kid ? strstr(kid, "/keys/") : NULL;
	if (!k || !strchr(k + 6, '/'))
		return cvm_err_badparam(err, "kid: expected .../keys/<name>/<version>");
	*out = cvm_strdup(k);
	return *out ? 0 : cvm_err_nomem(err);
}

/* POST {kv}{/keys/name/version}/{op} with the orchestrator's token; *out is the response. */
static int key_op(const struct cvm_vm_orch *o, const char *kid, const char *op, json_t *body,
		  json_t **out, struct cvm_err *err)
{
	_cleanup_free_ char *path = NULL, *token = NULL, *url = NULL, *payload = NULL;
	int r;
	if ((r = kid_path(kid, &path, err)) < 0 || (r = orch_token(o, &token, err)) < 0)
		return r;
	url = cvm_asprintf("%s%s/%s?api-version=7.4", o->kv_url, path, op);
	payload = cvm_json_dump(body);
	if (!url || !payload)
		return cvm_err_nomem(err);
	struct cvm_http_result res = { 0 };
	r = post(o, url, "application/json", token, payload, strlen(payload), &res, err);
	OPENSSL_cleanse(payload, strlen(payload));
	if (r == 0)
		r = cvm_json_parse(res.body.data, res.body.len, false, out, err);
	cvm_buf_wipe(&res.body);
	cvm_http_result_free(&res);
	return r < 0 ? cvm_err_prefix(err, "%s", op) : 0;
}

int cvm_vm_orch_vmgs_key(const struct cvm_vm_orch *o, const char *path, struct cvm_secret **key,
			 struct cvm_err *err)
{
	*key = NULL;
	_cleanup_free_ uint8_t *stored = NULL;
	size_t sl = 0;
	int r;
	if (access(path, F_OK) != 0) {
		/* First boot: a fresh key, stored only wrapped. */
		if (!o->expected_kid)
			return cvm_err_badparam(err, "vmgs: the VM has no disk key to wrap with");
		_cleanup_secret_ struct cvm_secret *k = cvm_secret_random(32);
		json_t *body = json_pack("{s:s}", "alg", "RSA-OAEP-256");
		if (!k || !body || cvm_json_set_b64url(body, "value", k->data, k->len) < 0) {
			if (body)
				json_decref(body);
			return cvm_err_nomem(err);
		}
		_cleanup_json_ json_t *res = NULL;
		r = key_op(o, o->expected_kid, "wrapkey", body, &res, err);
		json_decref(body);
		if (r < 0)
			return cvm_err_prefix(err, "vmgs key");
		const char *w = json_string_value(json_object_get(res, "value"));
		const char *kid = json_string_value(json_object_get(res, "kid"));
		_cleanup_json_ json_t *rec = json_pack("{s:s,s:s,s:s}", "kid", kid ? kid : o->expected_kid,
						       "alg", "RSA-OAEP-256", "value", w ? w : "");
		_cleanup_free_ char *text = rec && w ? cvm_json_dump(rec) : NULL;
		if (!text)
			return cvm_err_internal(err, "vmgs key: wrapkey response without value");
		if ((r = cvm_file_write_atomic(path, text, strlen(text), 0600, err)) < 0)
			return r;
		*key = CVM_TAKE(k);
		return 0;
	}
	if ((r = cvm_file_read(path, 64 * 1024, &stored, &sl, err)) < 0)
		return r;
	_cleanup_json_ json_t *rec = NULL;
	const char *kid, *alg, *value;
	if ((r = cvm_json_parse(stored, sl, false, &rec, err)) < 0 ||
	    (r = cvm_json_str(rec, "kid", "vmgs key.kid", true, &kid, NULL, err)) < 0 ||
	    (r = cvm_json_str(rec, "alg", "vmgs key.alg", true, &alg, NULL, err)) < 0 ||
	    (r = cvm_json_str(rec, "value", "vmgs key.value", true, &value, NULL, err)) < 0)
		return cvm_err_prefix(err, "%s", path);
	json_t *body = json_pack("{s:s,s:s}", "alg", alg, "value", value);
	_cleanup_json_ json_t *res = NULL;
	r = body ? key_op(o, kid, "unwrapkey", body, &res, err) : cvm_err_nomem(err);
	if (body)
		json_decref(body);
	if (r < 0)
		return cvm_err_prefix(err, "vmgs key");
	uint8_t *pt = NULL;
	size_t pl = 0;
	json_t *v = json_object_get(res, "value");
	if (!json_is_string(v) || cvm_b64url_decode(json_string_value(v), json_string_length(v), &pt,
						    &pl, "unwrapkey.value", err) < 0)
		return cvm_err_internal(err, "vmgs key: unwrapkey response without value");
	if (pl != 32) {
		cvm_free_secure(pt, pl);
		return cvm_err_internal(err, "vmgs key: unwrapped %zu bytes, expected 32", pl);
	}
	*key = cvm_secret_from(pt, pl);
	cvm_free_secure(pt, pl);
	/* the JSON response held the key too */
	OPENSSL_cleanse((void *)json_string_value(v), json_string_length(v));
	return *key ? 0 : cvm_err_nomem(err);
}

/* What the guest's token claimed, for the audit record: the key service verified the token
 * (this is only its payload, unverified here), and `cvm vm validate` reads the record for
 * attestation freshness and the launch measurement. NULL when the body has no readable token. */
static char *claims_detail(const uint8_t *body, size_t len)
{
	static const char *const keep[] = {
		"x-ms-attestation-type", "x-ms-sevsnpvm-launchmeasurement",
		"x-ms-sevsnpvm-is-debuggable", "x-ms-sevsnpvm-guestsvn", "x-ms-sevsnpvm-vmpl",
		"x-opencvm-emulated", "iat", "exp", "iss",
	};
	_cleanup_json_ json_t *req = NULL;
	struct cvm_err e = { 0 };
	if (cvm_json_parse(body, len, false, &req, &e) < 0)
		return NULL;
	const char *t = json_string_value(json_object_get(req, "target"));
	struct cvm_jws *jws = NULL;
	if (!t || cvm_jws_parse(t, strlen(t), &jws, &e) < 0)
		return NULL;
	_cleanup_json_ json_t *payload = json_loadb((const char *)jws->payload, jws->payload_len,
						    0, NULL);
	cvm_jws_free(jws);
	if (!json_is_object(payload))
		return NULL;
	_cleanup_json_ json_t *claims = json_object();
	for (size_t i = 0; claims && i < CVM_ARRAY_SIZE(keep); i++) {
		json_t *v = json_object_get(payload, keep[i]);
		if (v && !json_is_object(v) && !json_is_array(v))
			json_object_set(claims, keep[i], v);
	}
	return claims ? cvm_json_dump(claims) : NULL;
}

static int audit_release(const struct cvm_vm_orch *o, const char *kid, const char *claims,
			 const struct cvm_err *why)
{
	struct cvm_audit *a = NULL;
	struct cvm_err e = { 0 };
	int r = cvm_audit_open(o->store, &a, &e);
	if (r == 0) {
		struct cvm_audit_event ev = {
			.principal = o->client_id, .operation = "vms/release", .key_name = o->vm,
			.key_version = kid, .status = why ? cvm_err_http_status(why) : 200,
			.result = why ? why->code : "ok", .detail = claims,
		};
		r = cvm_audit_append(a, &ev, NULL, &e);
	}
	cvm_audit_close(a);
	if (r < 0)
		cvm_log_error("vm_audit_failed", "vm=%s op=vms/release reason=\"%s\"", o->vm, e.msg);
	return r;
}

/* A refusal the orchestrator itself saw (op vms/release at pre-flight, vms/attest): the
 * code as result, the stage and the reason (the failed check) as detail. */
static int audit_refusal(const struct cvm_vm_orch *o, const char *op, const char *stage,
			 const struct cvm_err *why)
{
	struct cvm_audit *a = NULL;
	struct cvm_err e = { 0 };
	_cleanup_json_ json_t *d = json_pack("{s:s,s:s}", "stage", stage, "reason", why->msg);
	_cleanup_free_ char *detail = d ? cvm_json_dump(d) : NULL;
	int r = cvm_audit_open(o->store, &a, &e);
	if (r == 0) {
		struct cvm_audit_event ev = {
			.principal = o->client_id, .operation = op, .key_name = o->vm,
			.key_version = o->expected_kid, .status = cvm_err_http_status(why),
			.result = why->code[0] ? why->code : "Refused", .detail = detail,
		};
		r = cvm_audit_append(a, &ev, NULL, &e);
	}
	cvm_audit_close(a);
	if (r < 0)
		cvm_log_error("vm_audit_failed", "vm=%s op=%s reason=\"%s\"", o->vm, op, e.msg);
	return r;
}

/* "<name>" of a kid ".../keys/<name>/<version>" (the whole kid without that shape). */
static void kid_key_name(const char *kid, char *out, size_t cap)
{
	const char *k = kid ? strstr(kid, "/keys/") : NULL;
	const char *n = k ? k + 6 : (kid ? kid : "");
	snprintf(out, cap, "%.*s", (int)strcspn(n, "/"), n);
}

/* The key's attributes as the key service reports them to the orchestrator. */
static int check_key_attributes(const struct cvm_vm_orch *o, const char *name, json_t *key,
				struct cvm_err *err)
{
	json_t *at = json_object_get(key, "attributes");
	json_t *exp = json_object_get(at, "exp"), *nbf = json_object_get(at, "nbf");
	int64_t now = cvm_now();
	char t[32];
	if (json_is_false(json_object_get(at, "enabled")))
		return cvm_err_set(err, EPERM, "KeyDisabled",
				   "disk key %s is disabled: the key service would refuse its "
				   "release (kid %s)", name, o->expected_kid);
	if (json_is_integer(exp) && now >= json_integer_value(exp)) {
		cvm_time_iso8601(json_integer_value(exp), t);
		return cvm_err_set(err, EPERM, "KeyExpired",
				   "disk key %s expired at %s: the key service would refuse its "
				   "release (kid %s)", name, t, o->expected_kid);
	}
	if (json_is_integer(nbf) && now < json_integer_value(nbf)) {
		cvm_time_iso8601(json_integer_value(nbf), t);
		return cvm_err_set(err, EPERM, "KeyNotYetValid",
				   "disk key %s is not valid before %s: the key service would "
				   "refuse its release (kid %s)", name, t, o->expected_kid);
	}
	return 0;
}

int cvm_vm_orch_preflight(const struct cvm_vm_orch *o, bool *checked, struct cvm_err *err)
{
	*checked = false;
	char name[128];
	kid_key_name(o->expected_kid, name, sizeof(name));
	_cleanup_free_ char *path = NULL, *token = NULL, *url = NULL;
	int r = o->expected_kid ? kid_path(o->expected_kid, &path, err)
				: cvm_err_badparam(err, "kid: VM %s has no disk key", o->vm);
	if (r == 0)
		r = orch_token(o, &token, err);
	if (r == 0 && !(url = cvm_asprintf("%s%s?api-version=7.4", o->kv_url, path)))
		r = cvm_err_nomem(err);
	struct cvm_http_result res = { 0 };
	if (r == 0)
		r = request(o, "GET", url, NULL, token, NULL, 0, &res, err);
	if (r < 0 && res.status == 403) {
		/* Release User alone may not read the key: the release itself decides. */
		cvm_http_result_free(&res);
		cvm_log_info("vm_preflight_unchecked", "vm=%s key=%s reason=\"%s\"", o->vm, name,
			     err->msg);
		*err = (struct cvm_err){ 0 };
		return 0;
	}
	_cleanup_json_ json_t *key = NULL;
	if (r == 0)
		r = cvm_json_parse(res.body.data, res.body.len, false, &key, err);
	cvm_http_result_free(&res);
	if (r < 0)
		cvm_err_prefix(err, "disk key %s", name);
	else
		r = check_key_attributes(o, name, key, err);
	if (r < 0) {
		audit_refusal(o, "vms/release", "preflight", err);
		return r;
	}
	*checked = true;
	return 0;
}

static int do_release(const struct cvm_vm_orch *o, const uint8_t *body, size_t len,
		      struct cvm_buf *reply, struct cvm_err *err)
{
	_cleanup_json_ json_t *req = NULL;
	const char *target = NULL, *kid = NULL, *nonce = NULL;
	int r = cvm_json_parse(body, len, false, &req, err);
	if (r < 0 || (r = cvm_json_str(req, "target", "target", true, &target, NULL, err)) < 0 ||
	    (r = cvm_json_str(req, "kid", "kid", true, &kid, NULL, err)) < 0 ||
	    (r = cvm_json_str(req, "nonce", "nonce", false, &nonce, NULL, err)) < 0)
		return r;
	/* Only this VM's disk key: a guest must not use the orchestrator's role for others. */
	if (!o->expected_kid || strcmp(kid, o->expected_kid) != 0)
		return cvm_err_set(err, EPERM, "Forbidden",
				   "kid: %s is not the disk key of VM %s", kid, o->vm);
	_cleanup_free_ char *path = NULL, *token = NULL, *url = NULL, *payload = NULL;
	if ((r = kid_path(kid, &path, err)) < 0 || (r = orch_token(o, &token, err)) < 0)
		return r;
	url = cvm_asprintf("%s%s/release?api-version=7.4", o->kv_url, path);
	json_t *p = json_pack("{s:s}", "target", target);
	if (p && nonce)
		json_object_set_new(p, "nonce", json_string(nonce));
	payload = p ? cvm_json_dump(p) : NULL;
	if (p)
		json_decref(p);
	if (!url || !payload)
		return cvm_err_nomem(err);
	struct cvm_http_result res = { 0 };
	r = post(o, url, "application/json", token, payload, strlen(payload), &res, err);
	if (r == 0 && cvm_buf_append(reply, res.body.data, res.body.len) < 0)
		r = cvm_err_nomem(err);
	cvm_http_result_free(&res);
	return r < 0 ? cvm_err_prefix(err, "key release") : 0;
}

int cvm_vm_orch_relay(void *ctx, const char *kind, const uint8_t *body, size_t len,
		      struct cvm_buf *reply, struct cvm_err *err)
{
	const struct cvm_vm_orch *o = ctx;
	if (strcmp(kind, "ATTEST") == 0) {
		_cleanup_free_ char *url =
			cvm_asprintf("%s/attest/SevSnpVm?api-version=2022-08-01", o->attest_url);
		if (!url)
			return cvm_err_nomem(err);
		struct cvm_http_result res = { 0 };
		int r = post(o, url, "application/json", NULL, body, len, &res, err);
		if (r == 0 && cvm_buf_append(reply, res.body.data, res.body.len) < 0)
			r = cvm_err_nomem(err);
		cvm_http_result_free(&res);
		if (r < 0) {
			/* No token, so no release: this boot has failed. */
			cvm_err_prefix(err, "attestation");
			cvm_log_info("vm_attest_refused", "vm=%s reason=\"%s\"", o->vm, err->msg);
			audit_refusal(o, "vms/attest", "attest", err);
			enum cvm_vm_state starting = CVM_VM_STARTING;
			struct cvm_err e2 = { 0 };
			cvm_vm_transition(o->store, o->vm, &starting, CVM_VM_FAILED, err->msg,
					  o->client_id, &e2);
			return r;
		}
		return 0;
	}
	if (strcmp(kind, "RELEASE") != 0)
		return cvm_err_badparam(err, "relay: unknown request %s", kind);
	enum cvm_vm_state starting = CVM_VM_STARTING;
	struct cvm_err e2 = { 0 };
	int r = cvm_vm_transition(o->store, o->vm, &starting, CVM_VM_ATTESTING, "release requested",
				  o->client_id, err);
	if (r < 0)
		return r;
	r = do_release(o, body, len, reply, err);
	_cleanup_free_ char *claims = claims_detail(body, len);
	audit_release(o, o->expected_kid, claims, r < 0 ? err : NULL);
	if (r < 0) {
		cvm_vm_transition(o->store, o->vm, NULL, CVM_VM_FAILED, err->msg, o->client_id, &e2);
		return r;
	}
	if (cvm_vm_transition(o->store, o->vm, NULL, CVM_VM_RUNNING, "disk key released",
			      o->client_id, &e2) < 0)
		cvm_log_error("vm_state_failed", "vm=%s reason=\"%s\"", o->vm, e2.msg);
	return 0;
}
