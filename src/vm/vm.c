/* SPDX-License-Identifier: Apache-2.0 */
/* VM objects in the store and their state machine. Every state change commits in the same
 * transaction as its audit record, so the log and the store never disagree. */
#include <opencvm/audit.h>
#include <opencvm/json.h>
#include <opencvm/store.h>
#include <opencvm/vm.h>

#include <string.h>

static const char *const schema_v1[] = {
	"CREATE TABLE IF NOT EXISTS cvm_vms ("
	" name TEXT PRIMARY KEY,"
	" size TEXT NOT NULL,"
	" security TEXT NOT NULL,"
	" tee TEXT NOT NULL,"
	" os_disk TEXT,"
	" data_disks TEXT NOT NULL,"
	" temp_disk INTEGER NOT NULL,"
	" vmgs TEXT,"
	" des TEXT,"
	" identity TEXT,"
	" network TEXT,"
	" state TEXT NOT NULL,"
	" state_reason TEXT,"
	" generation INTEGER NOT NULL,"
	" created INTEGER NOT NULL,"
	" updated INTEGER NOT NULL)",
};

static int ensure_schema(struct cvm_store *s, struct cvm_err *err)
{
	return cvm_store_ensure_schema(s, "vm", 1, schema_v1, CVM_ARRAY_SIZE(schema_v1), err);
}

static const char *const state_names[] = { "creating", "stopped",  "starting", "attesting",
					    "running",  "stopping", "failed",   NULL };

const char *cvm_vm_state_name(enum cvm_vm_state s)
{
	return (size_t)s < CVM_ARRAY_SIZE(state_names) - 1 ? state_names[s] : "unknown";
}

int cvm_vm_state_parse(const char *s, enum cvm_vm_state *out, struct cvm_err *err)
{
	for (size_t i = 0; s && state_names[i]; i++) {
		if (strcmp(s, state_names[i]) == 0) {
			*out = (enum cvm_vm_state)i;
			return 0;
		}
	}
	return cvm_err_internal(err, "vm state: unknown state '%s'", s ? s : "(null)");
}

bool cvm_vm_transition_allowed(enum cvm_vm_state from, enum cvm_vm_state to)
{
	/* Bit set of allowed targets per source state. */
#define B(x) (1u << (x))
	static const unsigned allowed[] = {
		[CVM_VM_CREATING] = B(CVM_VM_STOPPED) | B(CVM_VM_FAILED),
		[CVM_VM_STOPPED] = B(CVM_VM_STARTING),
		[CVM_VM_STARTING] = B(CVM_VM_ATTESTING) | B(CVM_VM_STOPPING) | B(CVM_VM_FAILED),
		[CVM_VM_ATTESTING] = B(CVM_VM_RUNNING) | B(CVM_VM_STOPPING) | B(CVM_VM_FAILED),
		[CVM_VM_RUNNING] = B(CVM_VM_STOPPING) | B(CVM_VM_FAILED),
		[CVM_VM_STOPPING] = B(CVM_VM_STOPPED) | B(CVM_VM_FAILED),
		[CVM_VM_FAILED] = B(CVM_VM_STOPPED) | B(CVM_VM_STOPPING),
	};
#undef B
	if ((size_t)from >= CVM_ARRAY_SIZE(allowed) || (unsigned)to >= 32)
		return false;
	return (allowed[from] & (1u << to)) != 0;
}

bool cvm_vm_name_valid(const char *name)
{
	size_t l = name ? strlen(name) : 0;
	if (l == 0 || l > 64)
		return false;
	for (size_t i = 0; i < l; i++) {
		char c = name[i];
		bool alnum = (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9');
		if (!alnum && (i == 0 || (c != '-' && c != '_')))
			return false;
	}
	return true;
}

void cvm_vm_clear(struct cvm_vm *vm)
{
	free(vm->name);
	free(vm->size);
	free(vm->os_disk);
	for (size_t i = 0; i < vm->n_data_disks; i++)
		free(vm->data_disks[i]);
	free(vm->vmgs);
	free(vm->des);
	free(vm->identity);
	free(vm->network);
	free(vm->state_reason);
	*vm = (struct cvm_vm){ 0 };
}

void cvm_vm_list_free(struct cvm_vm *list, size_t n)
{
	for (size_t i = 0; list && i < n; i++)
		cvm_vm_clear(&list[i]);
	free(list);
}

int cvm_vm_to_json(const struct cvm_vm *vm, json_t **out, struct cvm_err *err)
{
	json_t *dd = json_array();
	for (size_t i = 0; dd && i < vm->n_data_disks; i++)
		if (json_array_append_new(dd, json_string(vm->data_disks[i])) < 0) {
			json_decref(dd);
			dd = NULL;
		}
	if (!dd)
		return cvm_err_nomem(err);
	char created[32], updated[32];
	cvm_time_iso8601(vm->created, created);
	cvm_time_iso8601(vm->updated, updated);
	*out = json_pack("{s:s,s:s,s:s,s:s,s:s?,s:o,s:b,s:s?,s:s?,s:s?,s:s?,s:s,s:s?,s:I,s:s,s:s}",
			 "name", vm->name, "size", vm->size, "securityType",
			 cvm_vm_security_name(vm->security), "tee", cvm_vm_tee_name(vm->tee),
			 "osDisk", vm->os_disk, "dataDisks", dd, "tempDisk", vm->temp_disk, "vmgs",
			 vm->vmgs, "diskEncryptionSet", vm->des, "identity", vm->identity, "network",
			 vm->network, "state", cvm_vm_state_name(vm->state), "stateReason",
			 vm->state_reason, "generation", (json_int_t)vm->generation, "created",
			 created, "updated", updated);
	return *out ? 0 : cvm_err_nomem(err);
}

/* ---- validation ------------------------------------------------------------------------- */

static int validate(const struct cvm_vm_sizes *sizes, const struct cvm_vm *in,
		    struct cvm_err *err)
{
	if (!cvm_vm_name_valid(in->name))
		return cvm_err_badparam(err, "name: expected 1..64 of letters, digits, '-' and '_', "
					"starting with a letter or digit");
	if (!in->size)
		return cvm_err_badparam(err, "size: required field is missing");
	if (in->security == CVM_VM_SEC_CONFIDENTIAL) {
		if (in->tee == CVM_VM_TEE_NONE)
			return cvm_err_badparam(err, "tee: a ConfidentialVM needs a TEE (sev-snp, tdx "
						"or emulated)");
		if (!in->os_disk)
			return cvm_err_badparam(err, "osDisk: a ConfidentialVM needs a confidential "
						"OS disk");
		if (!in->des)
			return cvm_err_badparam(err, "diskEncryptionSet: a ConfidentialVM needs a "
						"Disk Encryption Set");
	} else if (in->tee != CVM_VM_TEE_NONE) {
		return cvm_err_badparam(err, "tee: only a ConfidentialVM has a TEE, this VM is %s",
					cvm_vm_security_name(in->security));
	}
	if (in->n_data_disks > CVM_VM_MAX_DATA_DISKS)
		return cvm_err_badparam(err, "dataDisks: at most %d", CVM_VM_MAX_DATA_DISKS);
	for (size_t i = 0; i < in->n_data_disks; i++)
		if (!cvm_vm_name_valid(in->data_disks[i]))
			return cvm_err_badparam(err, "dataDisks[%zu]: expected a disk name", i);
	if (in->os_disk && !cvm_vm_name_valid(in->os_disk))
		return cvm_err_badparam(err, "osDisk: expected a disk name");
	return cvm_vm_sizes_check(sizes, in->size, in->security, in->tee, err);
}

static int audit_tx(struct cvm_tx *tx, const char *op, const char *name, const char *principal,
		    int status, const char *result, const char *detail, struct cvm_err *err)
{
	struct cvm_audit_event ev = { .principal = principal, .operation = op, .key_name = name,
				      .status = status, .result = result, .detail = detail };
	return cvm_audit_append_tx(tx, &ev, NULL, err);
}

/* A refusal is recorded in its own transaction: the refused change rolled back. */
struct refusal {
	const char *op, *name, *principal, *code, *detail;
	int status;
};

static int refusal_fn(struct cvm_tx *tx, void *ctx, struct cvm_err *err)
{
	const struct refusal *r = ctx;
	return audit_tx(tx, r->op, r->name, r->principal, r->status, r->code, r->detail, err);
}

static int audit_refusal(struct cvm_store *s, const char *op, const char *name,
			 const char *principal, const struct cvm_err *why, const char *detail)
{
	struct refusal r = { op, name, principal, why->code, detail, cvm_err_http_status(why) };
	struct cvm_err e2 = { 0 };
	int rc = cvm_store_transact(s, CVM_TX_WRITE, refusal_fn, &r, &e2);
	if (rc < 0)
		cvm_log_error("vm_audit_failed", "vm=%s op=%s reason=\"%s\"", name, op, e2.msg);
	return rc;
}

static char *detail_json(const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	json_t *j = json_vpack_ex(NULL, 0, fmt, ap);
	va_end(ap);
	char *s = j ? cvm_json_dump(j) : NULL;
	if (j)
		json_decref(j);
	return s;
}

/* ---- create ------------------------------------------------------------------------------ */

struct create_ctx {
	const struct cvm_vm *vm;
	const char *principal;
	const char *detail;
	const char *disks;
};

static int create_fn(struct cvm_tx *tx, void *vctx, struct cvm_err *err)
{
	struct create_ctx *c = vctx;
	const struct cvm_vm *vm = c->vm;
	int r = audit_tx(tx, "vms/create", vm->name, c->principal, 201, "ok", c->detail, err);
	if (r < 0)
		return r;
	int64_t now = cvm_now();
	struct cvm_val p[] = {
		CVM_VAL_S(vm->name),     CVM_VAL_S(vm->size),
		CVM_VAL_S(cvm_vm_security_name(vm->security)),
		CVM_VAL_S(cvm_vm_tee_name(vm->tee)),
		CVM_VAL_S(vm->os_disk),  CVM_VAL_S(c->disks),
		CVM_VAL_I(vm->temp_disk), CVM_VAL_S(vm->vmgs),
		CVM_VAL_S(vm->des),      CVM_VAL_S(vm->identity),
		CVM_VAL_S(vm->network),  CVM_VAL_S(cvm_vm_state_name(CVM_VM_CREATING)),
		CVM_VAL_I(now),          CVM_VAL_I(now),
	};
	r = cvm_tx_exec(tx,
			"INSERT INTO cvm_vms (name, size, security, tee, os_disk, data_disks, "
			"temp_disk, vmgs, des, identity, network, state, state_reason, generation, "
			"created, updated) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, NULL, 1, ?, ?)",
			p, CVM_ARRAY_SIZE(p), NULL, err);
	if (r == -EEXIST)
		return cvm_err_set(err, EEXIST, "Conflict", "name: a VM named %s already exists",
				   vm->name);
	return r;
}

int cvm_vm_create(struct cvm_store *s, const struct cvm_vm_sizes *sizes, const struct cvm_vm *in,
		  const char *principal, struct cvm_err *err)
{
	int r = validate(sizes, in, err);
	_cleanup_free_ char *detail = detail_json("{s:s,s:s,s:s}", "size", in->size ? in->size : "",
						  "securityType", cvm_vm_security_name(in->security),
						  "tee", cvm_vm_tee_name(in->tee));
	if (!detail)
		return cvm_err_nomem(err);
	if (r == 0)
		r = ensure_schema(s, err);
	if (r < 0) {
		if (r != -EIO && cvm_vm_name_valid(in->name))
			audit_refusal(s, "vms/create", in->name, principal, err, detail);
		return r;
	}
	_cleanup_json_ json_t *dd = json_array();
	for (size_t i = 0; dd && i < in->n_data_disks; i++)
		if (json_array_append_new(dd, json_string(in->data_disks[i])) < 0)
			return cvm_err_nomem(err);
	_cleanup_free_ char *disks = dd ? cvm_json_dump(dd) : NULL;
	if (!disks)
		return cvm_err_nomem(err);
	struct create_ctx c = { in, principal, detail, disks };
	r = cvm_store_transact(s, CVM_TX_WRITE, create_fn, &c, err);
	if (r == -EEXIST)
		audit_refusal(s, "vms/create", in->name, principal, err, detail);
	return r;
}

/* ---- read -------------------------------------------------------------------------------- */

#define VM_COLS                                                                              \
	"name, size, security, tee, os_disk, data_disks, temp_disk, vmgs, des, identity, "  \
	"network, state, state_reason, generation, created, updated"

static char *dup_col(const struct cvm_rows *rows, size_t i, size_t c)
{
	return cvm_strdup(cvm_rows_text(rows, i, c));
}

static int row_to_vm(const struct cvm_rows *rows, size_t i, struct cvm_vm *vm,
		     struct cvm_err *err)
{
	*vm = (struct cvm_vm){ 0 };
	vm->name = dup_col(rows, i, 0);
	vm->size = dup_col(rows, i, 1);
	vm->os_disk = dup_col(rows, i, 4);
	vm->temp_disk = cvm_rows_int(rows, i, 6) != 0;
	vm->vmgs = dup_col(rows, i, 7);
	vm->des = dup_col(rows, i, 8);
	vm->identity = dup_col(rows, i, 9);
	vm->network = dup_col(rows, i, 10);
	vm->state_reason = dup_col(rows, i, 12);
	vm->generation = cvm_rows_int(rows, i, 13);
	vm->created = cvm_rows_int(rows, i, 14);
	vm->updated = cvm_rows_int(rows, i, 15);
	if (!vm->name || !vm->size)
		return cvm_err_nomem(err);
	int r;
	if ((r = cvm_vm_security_parse(cvm_rows_text(rows, i, 2), &vm->security, err)) < 0 ||
	    (r = cvm_vm_tee_parse(cvm_rows_text(rows, i, 3), &vm->tee, err)) < 0 ||
	    (r = cvm_vm_state_parse(cvm_rows_text(rows, i, 11), &vm->state, err)) < 0)
		return cvm_err_prefix(err, "stored VM %s", vm->name);
	const char *dtext = cvm_rows_text(rows, i, 5);
	_cleanup_json_ json_t *dd = NULL;
	if ((r = cvm_json_parse((const uint8_t *)dtext, dtext ? strlen(dtext) : 0, true, &dd,
				err)) < 0)
		return cvm_err_prefix(err, "stored VM %s: data_disks", vm->name);
	if (!json_is_array(dd) || json_array_size(dd) > CVM_VM_MAX_DATA_DISKS)
		return cvm_err_internal(err, "stored VM %s: data_disks: expected an array", vm->name);
	for (size_t k = 0; k < json_array_size(dd); k++) {
		const char *d = json_string_value(json_array_get(dd, k));
		if (!d)
			return cvm_err_internal(err, "stored VM %s: data_disks[%zu]: expected a "
						"string", vm->name, k);
		if (!(vm->data_disks[k] = cvm_strdup(d)))
			return cvm_err_nomem(err);
		vm->n_data_disks = k + 1;
	}
	return 0;
}

struct get_ctx {
	const char *name;
	struct cvm_vm *out;
};

static int get_fn(struct cvm_tx *tx, void *vctx, struct cvm_err *err)
{
	struct get_ctx *c = vctx;
	_cleanup_rows_ struct cvm_rows *rows = NULL;
	struct cvm_val p[] = { CVM_VAL_S(c->name) };
	int r = cvm_tx_query(tx, "SELECT " VM_COLS " FROM cvm_vms WHERE name = ?", p, 1, &rows, err);
	if (r < 0)
		return r;
	if (cvm_rows_count(rows) == 0)
		return cvm_err_set(err, ENOENT, "VmNotFound", "name: no VM named %s", c->name);
	r = row_to_vm(rows, 0, c->out, err);
	if (r < 0)
		cvm_vm_clear(c->out);
	return r;
}

int cvm_vm_get(struct cvm_store *s, const char *name, struct cvm_vm *out, struct cvm_err *err)
{
	*out = (struct cvm_vm){ 0 };
	if (!cvm_vm_name_valid(name))
		return cvm_err_badparam(err, "name: not a valid VM name");
	int r = ensure_schema(s, err);
	if (r < 0)
		return r;
	struct get_ctx c = { name, out };
	return cvm_store_transact(s, CVM_TX_READ, get_fn, &c, err);
}

struct list_ctx {
	struct cvm_vm *v;
	size_t n;
};

static int list_fn(struct cvm_tx *tx, void *vctx, struct cvm_err *err)
{
	struct list_ctx *c = vctx;
	_cleanup_rows_ struct cvm_rows *rows = NULL;
	int r = cvm_tx_query(tx, "SELECT " VM_COLS " FROM cvm_vms ORDER BY name", NULL, 0, &rows,
			     err);
	if (r < 0)
		return r;
	size_t n = cvm_rows_count(rows);
	struct cvm_vm *v = calloc(n ? n : 1, sizeof(*v));
	if (!v)
		return cvm_err_nomem(err);
	for (size_t i = 0; i < n; i++) {
		if ((r = row_to_vm(rows, i, &v[i], err)) < 0) {
			cvm_vm_list_free(v, i + 1);
			return r;
		}
	}
	c->v = v;
	c->n = n;
	return 0;
}

int cvm_vm_list(struct cvm_store *s, struct cvm_vm **out, size_t *n, struct cvm_err *err)
{
	*out = NULL;
	*n = 0;
	int r = ensure_schema(s, err);
	if (r < 0)
		return r;
	struct list_ctx c = { 0 };
	if ((r = cvm_store_transact(s, CVM_TX_READ, list_fn, &c, err)) < 0)
		return r;
	*out = c.v;
	*n = c.n;
	return 0;
}

/* ---- transitions ------------------------------------------------------------------------- */

struct trans_ctx {
	const char *name;
	const enum cvm_vm_state *expect;
	enum cvm_vm_state to;
	const char *reason;
	const char *principal;
	enum cvm_vm_state from; /* out */
	bool refused;           /* out: refused by the state machine (audit separately) */
};

static int current_state(struct cvm_tx *tx, const char *name, enum cvm_vm_state *st,
			 struct cvm_err *err)
{
	_cleanup_rows_ struct cvm_rows *rows = NULL;
	struct cvm_val p[] = { CVM_VAL_S(name) };
	int r = cvm_tx_query(tx, "SELECT state FROM cvm_vms WHERE name = ?", p, 1, &rows, err);
	if (r < 0)
		return r;
	if (cvm_rows_count(rows) == 0)
		return cvm_err_set(err, ENOENT, "VmNotFound", "name: no VM named %s", name);
	return cvm_vm_state_parse(cvm_rows_text(rows, 0, 0), st, err);
}

static int trans_fn(struct cvm_tx *tx, void *vctx, struct cvm_err *err)
{
	struct trans_ctx *c = vctx;
	c->refused = false;
	/* The audit record names the state we leave, so the state is read before the append.
	 * Taking the audit head lock first keeps the snapshot current for the append (see
	 * cvm_audit_append_tx: it must otherwise be the first statement). */
	int r = cvm_tx_lock(tx, "cvm_audit_head", err);
	if (r < 0 || (r = current_state(tx, c->name, &c->from, err)) < 0)
		return r;
	if (c->expect && *c->expect != c->from) {
		c->refused = true;
		return cvm_err_set(err, EBUSY, "InvalidState",
				   "state: VM %s is %s, expected %s (changed concurrently)", c->name,
				   cvm_vm_state_name(c->from), cvm_vm_state_name(*c->expect));
	}
	if (!cvm_vm_transition_allowed(c->from, c->to)) {
		c->refused = true;
		return cvm_err_set(err, EBUSY, "InvalidState",
				   "state: VM %s cannot go from %s to %s", c->name,
				   cvm_vm_state_name(c->from), cvm_vm_state_name(c->to));
	}
	_cleanup_free_ char *detail = detail_json("{s:s,s:s,s:s?}", "from",
						  cvm_vm_state_name(c->from), "to",
						  cvm_vm_state_name(c->to), "reason", c->reason);
	if (!detail)
		return cvm_err_nomem(err);
	if ((r = audit_tx(tx, "vms/state", c->name, c->principal, 200, "ok", detail, err)) < 0)
		return r;
	struct cvm_val p[] = { CVM_VAL_S(cvm_vm_state_name(c->to)), CVM_VAL_S(c->reason),
			       CVM_VAL_I(cvm_now()), CVM_VAL_S(c->name),
			       CVM_VAL_S(cvm_vm_state_name(c->from)) };
	int64_t changes = 0;
	if ((r = cvm_tx_exec(tx,
			     "UPDATE cvm_vms SET state = ?, state_reason = ?, generation = "
			     "generation + 1, updated = ? WHERE name = ? AND state = ?",
			     p, CVM_ARRAY_SIZE(p), &changes, err)) < 0)
		return r;
	if (changes != 1)
		return cvm_err_set(err, EAGAIN, "Conflict", "state: VM %s changed concurrently",
				   c->name);
	return 0;
}

int cvm_vm_transition(struct cvm_store *s, const char *name, const enum cvm_vm_state *expect,
		      enum cvm_vm_state to, const char *reason, const char *principal,
		      struct cvm_err *err)
{
	if (!cvm_vm_name_valid(name))
		return cvm_err_badparam(err, "name: not a valid VM name");
	if ((size_t)to >= CVM_ARRAY_SIZE(state_names) - 1)
		return cvm_err_badparam(err, "state: unknown target state");
	if (reason && strlen(reason) > 400)
		return cvm_err_badparam(err, "reason: at most 400 characters");
	int r = ensure_schema(s, err);
	if (r < 0)
		return r;
	struct trans_ctx c = { .name = name, .expect = expect, .to = to, .reason = reason,
			       .principal = principal };
	r = cvm_store_transact(s, CVM_TX_WRITE, trans_fn, &c, err);
	if (r < 0 && c.refused) {
		_cleanup_free_ char *detail = detail_json("{s:s,s:s,s:s?}", "from",
							  cvm_vm_state_name(c.from), "to",
							  cvm_vm_state_name(to), "reason", reason);
		if (detail)
			audit_refusal(s, "vms/state", name, principal, err, detail);
	}
	if (r == 0)
		cvm_log_info("vm_state", "vm=%s from=%s to=%s", name, cvm_vm_state_name(c.from),
			     cvm_vm_state_name(to));
	return r;
}

/* ---- delete ------------------------------------------------------------------------------ */

struct del_ctx {
	const char *name, *principal;
	enum cvm_vm_state state;
	bool refused;
};

static int delete_fn(struct cvm_tx *tx, void *vctx, struct cvm_err *err)
{
	struct del_ctx *c = vctx;
	c->refused = false;
	int r = cvm_tx_lock(tx, "cvm_audit_head", err);
	if (r < 0 || (r = current_state(tx, c->name, &c->state, err)) < 0)
		return r;
	if (c->state != CVM_VM_STOPPED && c->state != CVM_VM_FAILED) {
		c->refused = true;
		return cvm_err_set(err, EBUSY, "InvalidState",
				   "state: VM %s is %s; stop it before deleting", c->name,
				   cvm_vm_state_name(c->state));
	}
	if ((r = audit_tx(tx, "vms/delete", c->name, c->principal, 200, "ok", NULL, err)) < 0)
		return r;
	struct cvm_val p[] = { CVM_VAL_S(c->name) };
	return cvm_tx_exec(tx, "DELETE FROM cvm_vms WHERE name = ?", p, 1, NULL, err);
}

int cvm_vm_delete(struct cvm_store *s, const char *name, const char *principal,
		  struct cvm_err *err)
{
	if (!cvm_vm_name_valid(name))
		return cvm_err_badparam(err, "name: not a valid VM name");
	int r = ensure_schema(s, err);
	if (r < 0)
		return r;
	struct del_ctx c = { .name = name, .principal = principal };
	r = cvm_store_transact(s, CVM_TX_WRITE, delete_fn, &c, err);
	if (r < 0 && c.refused)
		audit_refusal(s, "vms/delete", name, principal, err, NULL);
	return r;
}
