/* SPDX-License-Identifier: Apache-2.0 */
/* vm: confidential VM lifecycle. Size catalogue (data file sizes.json), VM objects in the store
 * with a validated, audited state machine, the QEMU/OVMF/swtpm command lines (pure functions:
 * argv arrays, never shell strings), the VMGS sealing of vTPM and UEFI variable state, and the
 * host side of the emulated TEE the guest reaches over virtio-serial.
 *
 * Errors: 0 or negative errno (util.h); -EINVAL bad input (message names the field), -ENOENT no
 * such VM/size, -EEXIST name taken, -EBUSY the state forbids the operation ("InvalidState"). */
#pragma once

#include <stdbool.h>
#include <stdint.h>

#include <opencvm/attest.h>
#include <opencvm/util.h>

struct cvm_store;

/* ==== size catalogue ======================================================================== */

enum cvm_vm_security { CVM_VM_SEC_STANDARD, CVM_VM_SEC_TRUSTED_LAUNCH, CVM_VM_SEC_CONFIDENTIAL };
enum cvm_vm_tee { CVM_VM_TEE_NONE, CVM_VM_TEE_SEV_SNP, CVM_VM_TEE_TDX, CVM_VM_TEE_EMULATED };

/* "Standard" | "TrustedLaunch" | "ConfidentialVM" */
CVM_EXPORT const char *cvm_vm_security_name(enum cvm_vm_security s);
CVM_EXPORT int cvm_vm_security_parse(const char *s, enum cvm_vm_security *out, struct cvm_err *err);
/* "none" | "sev-snp" | "tdx" | "emulated" */
CVM_EXPORT const char *cvm_vm_tee_name(enum cvm_vm_tee t);
CVM_EXPORT int cvm_vm_tee_parse(const char *s, enum cvm_vm_tee *out, struct cvm_err *err);

struct cvm_vm_size {
	char name[64];       /* "Standard_DC2as_v5" */
	char family[32];     /* "DCasv5" */
	int vcpus;           /* 1..1024 */
	int64_t memory_mib;  /* 512..16 TiB */
	int gpus;            /* 0.. */
	bool temp_disk;      /* "d" sizes carry a local temp disk */
	enum cvm_vm_tee tee; /* CVM_VM_TEE_NONE: not a confidential size */
};
struct cvm_vm_sizes {
	struct cvm_vm_size *v;
	size_t n;
};
/* sizes.json: {"version":1,"sizes":[{"name","family","vcpus","memory_gib","gpus"?,
 * "temp_disk"?,"tee":"sev-snp"|"tdx"|"none"}]}. Strict: unknown members, duplicate names and
 * out-of-range values are refused, naming the entry. */
CVM_EXPORT int cvm_vm_sizes_parse(const uint8_t *buf, size_t len, struct cvm_vm_sizes *out,
				  struct cvm_err *err);
CVM_EXPORT int cvm_vm_sizes_load(const char *path, struct cvm_vm_sizes *out, struct cvm_err *err);
/* The catalogue path: explicit (non-NULL) wins, then the installed data file, then the source
 * tree's copy (for running from a build dir). *out is malloc'd. -ENOENT when none exists. */
CVM_EXPORT int cvm_vm_sizes_locate(const char *explicit_path, char **out, struct cvm_err *err);
CVM_EXPORT void cvm_vm_sizes_clear(struct cvm_vm_sizes *s);
/* Case-insensitive lookup; NULL when unknown. */
CVM_EXPORT const struct cvm_vm_size *cvm_vm_sizes_find(const struct cvm_vm_sizes *s,
							const char *name);
/* May a VM of this security type (and TEE, for ConfidentialVM) use size? -EINVAL otherwise
 * with a message listing the allowed sizes. tee NONE means "the size's own TEE". */
CVM_EXPORT int cvm_vm_sizes_check(const struct cvm_vm_sizes *s, const char *size,
				  enum cvm_vm_security sec, enum cvm_vm_tee tee,
				  struct cvm_err *err);

/* ==== VM objects and the state machine ====================================================== */

enum cvm_vm_state {
	CVM_VM_CREATING,
	CVM_VM_STOPPED,
	CVM_VM_STARTING,
	CVM_VM_ATTESTING,
	CVM_VM_RUNNING,
	CVM_VM_STOPPING,
	CVM_VM_FAILED,
};
CVM_EXPORT const char *cvm_vm_state_name(enum cvm_vm_state s); /* "creating", ... */
CVM_EXPORT int cvm_vm_state_parse(const char *s, enum cvm_vm_state *out, struct cvm_err *err);
/* creating->stopped|failed, stopped->starting, starting->attesting|stopping|failed,
 * attesting->running|stopping|failed, running->stopping|failed, stopping->stopped|failed,
 * failed->stopped|stopping. */
CVM_EXPORT bool cvm_vm_transition_allowed(enum cvm_vm_state from, enum cvm_vm_state to);

#define CVM_VM_MAX_DATA_DISKS 16
struct cvm_vm {
	char *name;         /* 1..64 of [A-Za-z0-9_-], starts alphanumeric */
	char *size;
	enum cvm_vm_security security;
	enum cvm_vm_tee tee;
	char *os_disk;      /* disk registry name (disk.h), required for ConfidentialVM */
	char *data_disks[CVM_VM_MAX_DATA_DISKS];
	size_t n_data_disks;
	bool temp_disk;     /* fresh random key each boot */
	char *vmgs;         /* VMGS disk name; NULL until provisioned */
	char *des;          /* Disk Encryption Set name */
	char *identity;     /* orchestrator identity (object id) holding the Release User role */
	char *network;      /* e.g. "user,hostfwd=tcp:127.0.0.1:8080-:80"; NULL = none */
	enum cvm_vm_state state;
	char *state_reason; /* last failure or transition reason, NULL when none */
	int64_t generation; /* bumped by every transition */
	int64_t created, updated;
};
CVM_EXPORT void cvm_vm_clear(struct cvm_vm *vm);
CVM_EXPORT bool cvm_vm_name_valid(const char *name);
/* JSON view for the CLI and REST (new reference). */
CVM_EXPORT int cvm_vm_to_json(const struct cvm_vm *vm, json_t **out, struct cvm_err *err);

/* Create: validates the object (name, size against the catalogue and the security type, a
 * ConfidentialVM needs a TEE, an OS disk and a DES) and stores it in state "creating"; audited
 * as "vms/create". The caller provisions, then moves it to stopped (or failed). */
CVM_EXPORT int cvm_vm_create(struct cvm_store *s, const struct cvm_vm_sizes *sizes,
			     const struct cvm_vm *in, const char *principal, struct cvm_err *err);
CVM_EXPORT int cvm_vm_get(struct cvm_store *s, const char *name, struct cvm_vm *out,
			  struct cvm_err *err);
/* Ordered by name; free with cvm_vm_list_free. */
CVM_EXPORT int cvm_vm_list(struct cvm_store *s, struct cvm_vm **out, size_t *n,
			   struct cvm_err *err);
CVM_EXPORT void cvm_vm_list_free(struct cvm_vm *list, size_t n);
/* Move name to state `to`. When expect is non-NULL the current state must equal *expect
 * (compare-and-set against concurrent orchestrators). Allowed transitions commit together with
 * their audit record ("vms/state", detail {"from","to","reason"}); refused ones return -EBUSY
 * ("InvalidState", naming both states) and are audited with that result. reason may be NULL. */
CVM_EXPORT int cvm_vm_transition(struct cvm_store *s, const char *name,
				 const enum cvm_vm_state *expect, enum cvm_vm_state to,
				 const char *reason, const char *principal, struct cvm_err *err);
/* Delete: only in stopped or failed (-EBUSY otherwise); audited as "vms/delete". */
CVM_EXPORT int cvm_vm_delete(struct cvm_store *s, const char *name, const char *principal,
			     struct cvm_err *err);

/* ==== launch: QEMU and swtpm command lines ================================================== */

/* Debian's ovmf package: the Secure Boot build (SMM) and the variable store with Microsoft's
 * and Debian's keys enrolled, copied per VM. */
#define CVM_VM_OVMF_CODE "/usr/share/OVMF/OVMF_CODE_4M.secboot.fd"
#define CVM_VM_OVMF_VARS "/usr/share/OVMF/OVMF_VARS_4M.ms.fd"

/* Secure Boot state of an OVMF variable store (authenticated-variable format). */
struct cvm_ovmf_secure_boot {
	bool pk, kek, db, dbx;      /* enrolled (present, non-empty) */
	int secure_boot_enable;     /* SecureBootEnable's value, -1 when absent */
	bool enabled;               /* PK enrolled and SecureBootEnable not 0 */
	unsigned variables;         /* records seen, live or deleted */
};
/* -EINVAL naming what is malformed (untrusted input: a guest writes its VARS). */
CVM_EXPORT int cvm_ovmf_vars_secure_boot(const uint8_t *data, size_t len,
					 struct cvm_ovmf_secure_boot *out, struct cvm_err *err);

/* ==== validate: the checks of a cutover ==================================================== */
struct cvm_vm_validate_in {
	struct cvm_store *store;    /* the VM's row was read from it; its audit log is read */
	const struct cvm_vm *vm;
	const char *firmware;       /* OVMF code the VM boots */
	const char *vars_file;      /* the running VM's VARS; NULL or absent when not running */
	const char *swtpm_sock;     /* the running vTPM's control socket, NULL when unknown */
	const char *vmgs_file;      /* the sealed VMGS */
	const uint8_t *reference;   /* pinned launch measurement (48 bytes); NULL = none pinned */
	int64_t now_ms;
};
/* Appends to *checks (a new JSON array of {check, passed, detail}): securityType, secureBoot
 * (PK enrolled, SecureBootEnable on, read from the running VM's variable store), vTPM (swtpm
 * running or sealed VMGS), state, attestation (the current boot's disk-key release, recorded
 * by the orchestrator with the token's claims: released after the boot started, token not
 * expired, not debuggable) and bootIntegrity (the attested launch measurement equals the
 * reference). *failed = checks that did not pass. Errors only for the store or memory. */
CVM_EXPORT int cvm_vm_validate(const struct cvm_vm_validate_in *in, json_t **checks, int *failed,
			       struct cvm_err *err);
/* Whether a process accepts connections on the unix socket at path (QMP, swtpm control). */
CVM_EXPORT bool cvm_vm_socket_alive(const char *path);

enum cvm_vm_accel { CVM_VM_ACCEL_TCG, CVM_VM_ACCEL_KVM };
/* KVM when /dev/kvm can be opened read-write (and, with need_smm, reports KVM_CAP_X86_SMM:
 * the Secure Boot OVMF build needs SMM, which nested KVM often lacks), TCG otherwise. */
CVM_EXPORT enum cvm_vm_accel cvm_vm_accel_detect(bool need_smm);

struct cvm_vm_launch {
	const char *qemu;           /* binary; NULL = "qemu-system-x86_64" */
	const char *name;           /* VM name (QEMU -name guest=) */
	int vcpus;
	int64_t memory_mib;
	enum cvm_vm_accel accel;
	enum cvm_vm_tee tee;        /* SEV_SNP / TDX: real hardware objects; EMULATED: virtio-serial */
	/* Firmware. With pflash (NONE/EMULATED): ovmf_code read-only + the VM's own ovmf_vars copy.
	 * SEV-SNP/TDX: ovmf_code is the (stateless) firmware passed with -bios. */
	const char *ovmf_code;
	const char *ovmf_vars;
	bool secure_boot;           /* q35 SMM on (required by the Secure Boot OVMF build) */
	/* Direct kernel boot (optional; SEV-SNP kernel-hashes measures these). */
	const char *kernel, *initrd, *append;
	const char *swtpm_sock;     /* swtpm control socket; NULL = no vTPM */
	const char *os_disk;        /* raw image */
	const char *const *data_disks;
	size_t n_data_disks;
	/* The virtio serial of each data disk (the guest maps the disk as /dev/mapper/<serial>):
	 * 1..20 of [A-Za-z0-9_-] (virtio-blk's ID field), unique, not "os" or "temp". NULL =
	 * data0, data1, ... */
	const char *const *data_disk_serials;
	const char *temp_disk;      /* raw image, NULL = none */
	const char *tee_sock;       /* EMULATED: unix socket of the host TEE service */
	const char *serial_log;     /* console written here */
	const char *qmp_sock;       /* QMP control socket, NULL = none */
	const char *netdev;         /* e.g. "user,id=net0,hostfwd=tcp:127.0.0.1:8080-:80" or NULL */
	/* SEV-SNP */
	uint64_t snp_policy;        /* 0 = 0x30000 (SMT allowed, debug off) */
	const char *snp_id_block;   /* base64, both or neither */
	const char *snp_id_auth;
	const char *snp_host_data;  /* base64 of 32 bytes, or NULL */
	/* TDX */
	uint64_t tdx_attributes;    /* 0 = default; bit 0 (debug) refused */
};
/* Build the QEMU argv (NULL-terminated, malloc'd; free with cvm_argv_free). Validates the
 * combination (-EINVAL naming the field). */
CVM_EXPORT int cvm_vm_qemu_argv(const struct cvm_vm_launch *l, char ***argv, struct cvm_err *err);
/* swtpm socket --tpm2 with state in state_dir and its control channel on ctrl_sock: QEMU's
 * tpm-emulator backend connects there (its chardev path is this socket = swtpm_sock above)
 * and passes the data channel over it. swtpm exits when QEMU disconnects. NULL swtpm =
 * "swtpm"; log_file and pid_file may be NULL. */
CVM_EXPORT int cvm_vm_swtpm_argv(const char *swtpm, const char *state_dir, const char *ctrl_sock,
				 const char *log_file, const char *pid_file, char ***argv,
				 struct cvm_err *err);
/* swtpm_setup: manufacture the vTPM once (EK created) in state_dir. */
CVM_EXPORT int cvm_vm_swtpm_setup_argv(const char *swtpm_setup, const char *state_dir,
				       char ***argv, struct cvm_err *err);
CVM_EXPORT void cvm_argv_free(char **argv);
/* Render argv for logs/tests: arguments joined by '\n' (malloc'd). */
CVM_EXPORT char *cvm_argv_join(char *const *argv, const char *sep);

/* ==== VMGS: vTPM state + UEFI variables sealed at rest ======================================
 * A VMGS blob holds the swtpm state directory's regular files and the VM's OVMF VARS file,
 * sealed with cvm_seal (AES-256-GCM) under a 32-byte key the orchestrator obtains through the
 * key release path; the AAD binds it to the VM name. Plain layout before sealing:
 *   "OCVMGS01" ‖ u32 count ‖ count × (u16 name_len ‖ name ‖ u32 data_len ‖ data)   (big-endian)
 * Names are plain file names ([A-Za-z0-9._-], no "/" or ".."); "ovmf-vars.fd" is the VARS file. */
#define CVM_VMGS_VARS_NAME "ovmf-vars.fd"
#define CVM_VMGS_MAX_FILES 64
#define CVM_VMGS_MAX_FILE (64u * 1024u * 1024u)
/* Seal state_dir's files plus vars_file into out_path (atomic write, 0600). */
CVM_EXPORT int cvm_vmgs_seal(const char *state_dir, const char *vars_file, const char *vm_name,
			     const struct cvm_secret *key, const char *out_path,
			     struct cvm_err *err);
/* Unseal in_path into state_dir (created 0700) and vars_file. -EBADMSG wrong key/VM/tampered. */
CVM_EXPORT int cvm_vmgs_unseal(const char *in_path, const char *vm_name,
			       const struct cvm_secret *key, const char *state_dir,
			       const char *vars_file, struct cvm_err *err);
/* The plain-layout parser (exposed for tests and the fuzz harness): calls fn for each file. */
typedef int (*cvm_vmgs_file_fn)(void *ctx, const char *name, const uint8_t *data, size_t len,
				struct cvm_err *err);
CVM_EXPORT int cvm_vmgs_parse(const uint8_t *buf, size_t len, cvm_vmgs_file_fn fn, void *ctx,
			      struct cvm_err *err);

/* ==== host channel: emulated TEE and orchestrator relay =====================================
 * Line protocol on the virtio-serial port (org.opencvm.tee.0):
 *   guest: "SNP_REPORT <128 hex digits of report_data>\n"
 *   host:  "OK <2368 hex digits of the 1184-byte report>\n" | "ERR <message>\n"
 *   guest: "VCEK\n"  host: "OK <hex of the PEM chain VCEK+ASK+ARK>\n"
 *   guest: "ATTEST <hex of the /attest/SevSnpVm body>\n"  host: "OK <hex of the response>\n"
 *   guest: "RELEASE <hex of {"target","kid","nonce"}>\n" host: "OK <hex of the key service's
 *          release response>\n"
 * The measurement, host_data and policy come from the host's template (the launch the
 * orchestrator configured), never from the guest. ATTEST and RELEASE go to relay (the
 * orchestrator), which forwards them over TLS to the services: the guest needs no network
 * path to them, and what it receives is only ever usable with the key inside it. */
#define CVM_VM_HOST_LINE_MAX (512u * 1024u)
typedef int (*cvm_vm_relay_fn)(void *ctx, const char *kind, const uint8_t *body, size_t len,
			       struct cvm_buf *reply, struct cvm_err *err);
struct cvm_vm_tee_emu {
	const char *emu_dir;                    /* cvm_tee_emu_init directory; NULL: no reports */
	struct cvm_tee_emu_report_in tmpl;      /* report_data is overwritten per request */
	cvm_vm_relay_fn relay;                  /* NULL: ATTEST/RELEASE answered with ERR */
	void *relay_ctx;
};

/* The orchestrator side of the relay (Confidential VM Orchestrator). It holds an identity
 * with the Crypto Service Release User role on the DES key and performs the release for the
 * guest with the guest's token as target; the key comes back wrapped to the guest's key.
 * RELEASE is refused unless kid is the VM's disk key (expected_kid). State changes: a RELEASE
 * moves the VM starting -> attesting, then attesting -> running on success or -> failed with
 * the key service's reason. Everything is audited (vms/release). */
struct cvm_vm_orch {
	struct cvm_store *store;
	const char *vm;
	const char *attest_url;     /* attestation service base URL */
	const char *kv_url;         /* key service base URL */
	const char *tenant;
	const char *client_id;
	const struct cvm_secret *client_secret;
	const char *ca_file;
	const char *expected_kid;   /* the OS disk's opencvm-hsm token key_url */
};
CVM_EXPORT int cvm_vm_orch_relay(void *orch, const char *kind, const uint8_t *body, size_t len,
				 struct cvm_buf *reply, struct cvm_err *err);
/* Pre-flight before a launch: reads the disk key (expected_kid) with the orchestrator's
 * identity and refuses (-EPERM, code KeyDisabled | KeyExpired | KeyNotYetValid, message naming
 * the key and why; audited as a vms/release refusal at stage "preflight") a key the key
 * service would refuse to release. *checked is false when the identity may not read the key
 * (Release User alone): then the release-time check decides. Transport errors and a missing
 * key are returned (and audited) as well. */
CVM_EXPORT int cvm_vm_orch_preflight(const struct cvm_vm_orch *o, bool *checked,
				     struct cvm_err *err);
/* The VMGS key (32 bytes): on first use generated and wrapped by the VM's disk key through the
 * key service (wrapkey, RSA-OAEP-256) with the orchestrator's identity, and stored wrapped at
 * path as {"kid","alg","value"}; afterwards unwrapped through the key service (unwrapkey).
 * The plaintext key exists only in this process's locked memory; the key service's RBAC
 * (Crypto Service Encryption User on the disk key) and audit log gate every unlock. */
CVM_EXPORT int cvm_vm_orch_vmgs_key(const struct cvm_vm_orch *o, const char *path,
				    struct cvm_secret **key, struct cvm_err *err);
/* The launch measurement the emulated TEE reports for a direct-boot launch, standing in for
 * the AMD-SP's launch digest until the attestation module's calculator covers it: SHA-384 of
 * "opencvm-emulated-launch-v1" ‖ SHA-256(firmware) ‖ SHA-256(kernel) ‖ SHA-256(initrd) ‖
 * SHA-256(cmdline). Like SEV-SNP kernel-hashes, any change to the firmware, kernel, initrd or
 * command line changes it, so a release policy pinning it refuses a tampered boot. */
CVM_EXPORT int cvm_vm_emulated_measurement(const char *firmware, const char *kernel,
					   const char *initrd, const char *cmdline,
					   uint8_t out[48], struct cvm_err *err);
/* Handle one request line (without the newline); *reply is malloc'd, newline-terminated.
 * Returns 0 when a reply (OK or ERR) was produced. */
CVM_EXPORT int cvm_vm_tee_emu_handle(const struct cvm_vm_tee_emu *e, const char *line,
				     char **reply, struct cvm_err *err);
/* Serve requests on fd until EOF. */
CVM_EXPORT int cvm_vm_tee_emu_serve(const struct cvm_vm_tee_emu *e, int fd, struct cvm_err *err);

/* ==== running a VM ==========================================================================
 * One boot of one VM, in the calling process: restores the VMGS (or manufactures a fresh vTPM
 * and copies the VARS template on first boot), starts swtpm and, for the emulated TEE, serves
 * the guest's report requests on a unix socket; runs QEMU until it exits (or timeout_s passes:
 * killed); then seals the vTPM state and VARS back into the VMGS and deletes the plaintext.
 * Paths: vm_dir/vmgs.bin (sealed, persistent), vm_dir/console.log; run_dir (0700, private):
 * swtpm state, VARS, sockets — keep it on tmpfs. */
struct cvm_vm_run_config {
	const char *vm_dir;
	const char *run_dir;
	struct cvm_vm_launch launch;      /* ovmf_vars, swtpm_sock, tee_sock, serial_log and
					   * qmp_sock are filled in by cvm_vm_run */
	const char *ovmf_vars_template;   /* e.g. /usr/share/OVMF/OVMF_VARS_4M.ms.fd */
	const struct cvm_secret *vmgs_key; /* 32 bytes, obtained through the release path */
	const struct cvm_vm_tee_emu *tee_emu; /* required when launch.tee is EMULATED */
	const char *swtpm, *swtpm_setup;  /* NULL = from PATH */
	int timeout_s;                    /* 0 = no limit */
	/* > 0: a fresh sparse temp disk of this size (run_dir/temp.img, virtio serial "temp")
	 * for this boot only; the guest encrypts it with a key of its own and it is deleted when
	 * the boot ends. launch.temp_disk is then set by cvm_vm_run. */
	uint64_t temp_disk_bytes;
};
/* *qemu_status: the QEMU wait status (or -1 when killed on timeout). */
CVM_EXPORT int cvm_vm_run(const struct cvm_vm_run_config *c, int *qemu_status,
			  struct cvm_err *err);
