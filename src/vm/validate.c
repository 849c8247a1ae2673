/* SPDX-License-Identifier: Apache-2.0 */
/* The checks of a cutover, on a VM's own records: security type, Secure Boot in the firmware's
 * variable store, vTPM, state, and — from the audit log — that this boot was attested and its
 * disk key released, with a fresh token whose launch measurement is the pinned reference. */
#include <opencvm/audit.h>
#include <opencvm/json.h>
#include <opencvm/vm.h>

#include <stdarg.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

/* Token issue times may precede the host's record of the start by clock skew. */
#define SKEW_MS (5 * 60 * 1000)

struct checks {
	json_t *list;
	int failed;
};

static int add(struct checks *c, const char *name, bool passed, const char *fmt, ...)
	CVM_PRINTF(4, 5);
static int add(struct checks *c, const char *name, bool passed, const char *fmt, ...)
{
	char detail[512];
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(detail, sizeof(detail), fmt, ap);
	va_end(ap);
	c->failed += !passed;
	return json_array_append_new(c->list, json_pack("{s:s,s:b,s:s}", "check", name, "passed",
							passed, "detail", detail));
}

bool cvm_vm_socket_alive(const char *path)
{
	struct sockaddr_un a = { .sun_family = AF_UNIX };
	if (!path || strlen(path) >= sizeof(a.sun_path))
		return false;
	strcpy(a.sun_path, path);
	int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
	bool alive = fd >= 0 && connect(fd, (struct sockaddr *)&a, sizeof(a)) == 0;
	if (fd >= 0)
		close(fd);
	return alive;
}

static int secure_boot(struct checks *c, const struct cvm_vm_validate_in *in)
{
	if (!in->vars_file || access(in->vars_file, R_OK) != 0)
		return add(c, "secureBoot", false, "not running: its UEFI variables are sealed in "
						   "the VMGS (validate a running VM)");
	_cleanup_free_ uint8_t *d = NULL;
	size_t len = 0;
	struct cvm_err e = { 0 };
	struct cvm_ovmf_secure_boot sb;
	if (cvm_file_read(in->vars_file, 64u << 20, &d, &len, &e) < 0 ||
	    cvm_ovmf_vars_secure_boot(d, len, &sb, &e) < 0)
		return add(c, "secureBoot", false, "%s", e.msg);
	if (!sb.enabled)
		return add(c, "secureBoot", false, "off: PK %s, SecureBootEnable %d",
			   sb.pk ? "enrolled" : "not enrolled (setup mode)", sb.secure_boot_enable);
	return add(c, "secureBoot", true, "on: PK, KEK%s, db%s enrolled in %s",
		   sb.kek ? "" : " (missing)", sb.db ? "" : " (missing)", in->firmware);
}

static int vtpm(struct checks *c, const struct cvm_vm_validate_in *in)
{
	if (cvm_vm_socket_alive(in->swtpm_sock))
		return add(c, "vTPM", true, "swtpm running; its state is sealed into the VMGS at "
					    "power-off");
	if (in->vmgs_file && access(in->vmgs_file, R_OK) == 0)
		return add(c, "vTPM", true, "sealed VMGS present (vTPM state encrypted at rest)");
	return add(c, "vTPM", false, "no running swtpm and no sealed VMGS (never booted)");
}

/* When the current boot started: the newest transition into "starting". */
static int boot_start(const struct cvm_vm_validate_in *in, int64_t *start_ms, struct cvm_err *err)
{
	_cleanup_json_ json_t *recs = NULL;
	*start_ms = 0;
	int r = cvm_audit_recent(in->store, in->vm->name, "vms/state", 64, &recs, err);
	if (r < 0)
		return r;
	size_t i;
	json_t *rec;
	json_array_foreach(recs, i, rec) {
		const char *dj = json_string_value(json_object_get(rec, "detail"));
		_cleanup_json_ json_t *detail = dj ? json_loads(dj, 0, NULL) : NULL;
		const char *to = json_string_value(json_object_get(detail, "to"));
		if (to && strcmp(to, "starting") == 0) {
			*start_ms = json_integer_value(json_object_get(rec, "time_ms"));
			return 0;
		}
	}
	return 0;
}

static void hex48(const uint8_t m[48], char out[97])
{
	for (size_t i = 0; i < 48; i++)
		snprintf(out + 2 * i, 3, "%02x", m[i]);
}

/* attestation + bootIntegrity from the newest release record of this boot. */
static int attestation(struct checks *c, const struct cvm_vm_validate_in *in, struct cvm_err *err)
{
	int64_t start = 0;
	_cleanup_json_ json_t *recs = NULL;
	int r = boot_start(in, &start, err);
	if (r == 0)
		r = cvm_audit_recent(in->store, in->vm->name, "vms/release", 1, &recs, err);
	if (r < 0)
		return r;
	json_t *rec = json_array_get(recs, 0);
	const char *result = json_string_value(json_object_get(rec, "result"));
	int64_t at = json_integer_value(json_object_get(rec, "time_ms"));
	const char *dj = json_string_value(json_object_get(rec, "detail"));
	_cleanup_json_ json_t *claims = dj ? json_loads(dj, 0, NULL) : NULL;
	const char *m = json_string_value(json_object_get(claims, "x-ms-sevsnpvm-launchmeasurement"));
	int64_t iat = json_integer_value(json_object_get(claims, "iat")) * 1000;
	int64_t exp = json_integer_value(json_object_get(claims, "exp")) * 1000;
	bool running = in->vm->state == CVM_VM_RUNNING;
	if (!running)
		r = add(c, "attestation", false, "not running (state %s): no attestation of a "
						 "current boot", cvm_vm_state_name(in->vm->state));
	else if (!rec || !start || at < start)
		r = add(c, "attestation", false, "no disk-key release recorded for the current boot");
	else if (!result || strcmp(result, "ok") != 0)
		r = add(c, "attestation", false, "the current boot's release was refused (%s)",
			result ? result : "?");
	else if (!claims || !iat || !exp)
		r = add(c, "attestation", false, "the release record carries no token claims");
	else if (iat + SKEW_MS < start)
		r = add(c, "attestation", false, "token issued %lld s before this boot started",
			(long long)((start - iat) / 1000));
	else if (exp <= in->now_ms)
		r = add(c, "attestation", false, "token expired %lld s ago; re-attest",
			(long long)((in->now_ms - exp) / 1000));
	else if (json_is_true(json_object_get(claims, "x-ms-sevsnpvm-is-debuggable")))
		r = add(c, "attestation", false, "the guest is debuggable");
	else
		r = add(c, "attestation", true, "%s token issued %lld s after start, valid %lld s "
						"more; not debuggable%s",
			json_string_value(json_object_get(claims, "x-ms-attestation-type")) ?: "?",
			(long long)((iat - start) / 1000), (long long)((exp - in->now_ms) / 1000),
			json_is_true(json_object_get(claims, "x-opencvm-emulated"))
				? "; EMULATED TEE evidence" : "");
	if (r < 0)
		return cvm_err_nomem(err);
	char want[97] = "";
	if (in->reference)
		hex48(in->reference, want);
	if (!in->reference)
		r = add(c, "bootIntegrity", false, "no pinned reference measurement to compare with");
	else if (!running || !m)
		r = add(c, "bootIntegrity", false, "no attested launch measurement for the current "
						   "boot");
	else if (strcasecmp(m, want) != 0)
		r = add(c, "bootIntegrity", false, "launch measurement %.16s… differs from the pinned "
						   "%.16s…", m, want);
	else
		r = add(c, "bootIntegrity", true, "launch measurement %.16s… is the pinned reference",
			m);
	return r < 0 ? cvm_err_nomem(err) : 0;
}

int cvm_vm_validate(const struct cvm_vm_validate_in *in, json_t **checks, int *failed,
		    struct cvm_err *err)
{
	*checks = NULL;
	*failed = 0;
	if (!in || !in->store || !in->vm)
		return cvm_err_badparam(err, "validate: expected a store and a VM");
	struct checks c = { .list = json_array() };
	if (!c.list)
		return cvm_err_nomem(err);
	int r = add(&c, "securityType", in->vm->security == CVM_VM_SEC_CONFIDENTIAL, "%s",
		    cvm_vm_security_name(in->vm->security));
	if (r == 0)
		r = secure_boot(&c, in);
	if (r == 0)
		r = vtpm(&c, in);
	if (r == 0)
		r = add(&c, "state", in->vm->state != CVM_VM_FAILED, "%s%s%s",
			cvm_vm_state_name(in->vm->state), in->vm->state_reason ? ": " : "",
			in->vm->state_reason ? in->vm->state_reason : "");
	if (r == 0)
		r = attestation(&c, in, err);
	else
		r = cvm_err_nomem(err);
	if (r < 0) {
		json_decref(c.list);
		return r;
	}
	*checks = c.list;
	*failed = c.failed;
	return 0;
}
