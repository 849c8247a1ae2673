/* SPDX-License-Identifier: Apache-2.0 */
/* guest: the cvm-guest agent's building blocks. TEE backends behind one interface (SEV-SNP
 * /dev/sev-guest, TDX /dev/tdx_guest, Azure-style vTPM NV index with the HCL report, and the
 * emulated TEE over virtio-serial), and the pure steps of the unlock flow:
 *   ephemeral RSA key -> runtime data JSON (its public JWK, kid TpmEphemeralEncryptionKey, a
 *   nonce, the VM name) -> report_data = SHA-256(runtime data) || 32 zero bytes -> evidence ->
 *   POST /attest/SevSnpVm -> token -> orchestrator release (target = token) -> key_hsm
 *   unwrapped with the ephemeral key (CKM_RSA_AES_KEY_WRAP family) -> the disk's LUKS2 secret
 *   unwrapped with the released key -> activation.
 * The agent (src/guest/main.c) prints "cvm-guest: FAILED <check>: <reason>" and powers off on
 * any failure; there is no unencrypted fallback. */
#pragma once

#include <jansson.h>

#include <opencvm/crypto.h>
#include <opencvm/util.h>

/* ==== configuration ========================================================================= */

enum cvm_guest_tee {
	CVM_GUEST_TEE_AUTO,
	CVM_GUEST_TEE_SEV_GUEST,  /* "sev-snp": /dev/sev-guest */
	CVM_GUEST_TEE_TDX,        /* "tdx": /dev/tdx_guest */
	CVM_GUEST_TEE_VTPM_HCL,   /* "vtpm": Azure HCL report in vTPM NV 0x01400001 */
	CVM_GUEST_TEE_EMULATOR,   /* "emulator": virtio-serial port to the host emulator */
};
CVM_EXPORT const char *cvm_guest_tee_name(enum cvm_guest_tee t);
CVM_EXPORT int cvm_guest_tee_parse(const char *s, enum cvm_guest_tee *out, struct cvm_err *err);

/* From the kernel command line (/proc/cmdline): cvm.tee=auto|sev-snp|tdx|vtpm|emulator,
 * cvm.attest=URL (attestation service base), cvm.orchestrator=URL, cvm.vm=NAME,
 * cvm.disk=/dev/... (LUKS2 root), cvm.ca=FILE (CA bundle for both URLs, inside the initramfs).
 * cvm.attest and cvm.orchestrator go together; without both, attestation and release go
 * through the host channel (virtio-serial) to the VM's orchestrator.
 * Other words are ignored; a cvm.* word the agent does not know is refused (a typo must not
 * silently change the flow). */
struct cvm_guest_config {
	enum cvm_guest_tee tee;
	char *attest_url;
	char *orchestrator_url;
	char *vm;
	char *disk;
	char *ca_file;
};
CVM_EXPORT int cvm_guest_cmdline_parse(const char *cmdline, size_t len,
				       struct cvm_guest_config *out, struct cvm_err *err);
CVM_EXPORT void cvm_guest_config_clear(struct cvm_guest_config *c);

/* Device paths (tests point them at fixtures). */
struct cvm_guest_env {
	const char *sev_dev;     /* /dev/sev-guest */
	const char *tdx_dev;     /* /dev/tdx_guest */
	const char *emu_port;    /* /dev/virtio-ports/org.opencvm.tee.0 */
	const char *tpm_dev;     /* /dev/tpmrm0 */
	const char *tpm2_nvread; /* tpm2_nvread (tpm2-tools), run without a shell */
};
CVM_EXPORT void cvm_guest_env_default(struct cvm_guest_env *e);
/* forced != AUTO: that backend, whose device must be present. AUTO: sev-guest, tdx, emulator,
 * vtpm in that order (hardware first; a vTPM without a paravisor's HCL report then fails when
 * its NV index is read, with a message naming the index). -ENODEV when none is present. */
CVM_EXPORT int cvm_guest_tee_detect(const struct cvm_guest_env *e, enum cvm_guest_tee forced,
				    enum cvm_guest_tee *out, struct cvm_err *err);

/* ==== evidence ============================================================================== */

struct cvm_guest_evidence {
	enum cvm_guest_tee tee;
	uint8_t *report;   /* SNP: 1184-byte report; TDX: TDREPORT (1024); vTPM: HCL report */
	size_t report_len;
	char *cert_chain;  /* SNP: PEM VCEK(+ASK+ARK) when known, else NULL */
};
CVM_EXPORT void cvm_guest_evidence_clear(struct cvm_guest_evidence *ev);
CVM_EXPORT int cvm_guest_get_evidence(const struct cvm_guest_env *e, enum cvm_guest_tee tee,
				      const uint8_t report_data[64],
				      struct cvm_guest_evidence *out, struct cvm_err *err);

/* ---- sev-guest ioctl marshalling (Linux uapi <linux/sev-guest.h>) ------------------------
 * SNP_GET_REPORT's response buffer holds the firmware's MSG_REPORT_RSP: status (u32 LE),
 * report_size (u32 LE), 24 reserved bytes, then the report. */
#define CVM_GUEST_SNP_RESP_HDR 32
CVM_EXPORT int cvm_guest_snp_parse_resp(const uint8_t *buf, size_t len, const uint8_t **report,
					size_t *report_len, struct cvm_err *err);
/* Describe a failed SNP ioctl: exitinfo2 bits 63:32 VMM error, 31:0 firmware error. */
CVM_EXPORT void cvm_guest_snp_ioctl_error(uint64_t exitinfo2, int errnum, char *out, size_t cap);
/* Extended report certificate table (GHCB GUID table) -> PEM chain VCEK, ASK, ARK. */
CVM_EXPORT int cvm_guest_snp_certs_pem(const uint8_t *table, size_t len, char **pem,
				       struct cvm_err *err);

/* ---- host channel line protocol (see include/opencvm/vm.h) ------------------------------- */
/* Send "<kind> <hex(body)>" on the host channel port and return the decoded OK reply
 * (kind "ATTEST" or "RELEASE"; the host's orchestrator relays them). */
CVM_EXPORT int cvm_guest_host_call(const struct cvm_guest_env *e, const char *kind,
				   const char *body, uint8_t **out, size_t *outlen,
				   struct cvm_err *err);
/* "OK <hex>" -> bytes; "ERR <msg>" -> -EIO with the host's message. line excludes '\n'. */
CVM_EXPORT int cvm_guest_emu_parse_reply(const char *line, size_t len, uint8_t **out,
					 size_t *outlen, struct cvm_err *err);

/* ==== ephemeral key in the vTPM (tpmkey.c) ==================================================
 * RSA-2048 primary key under the owner hierarchy, decrypt-only, fixedTPM/fixedParent (never
 * leaves the TPM), new each boot. tcti_conf as for Tss2_TctiLdr_Initialize: "device:/dev/tpmrm0"
 * in the guest, "swtpm:host=127.0.0.1,port=N" against a swtpm in tests. The public half goes
 * into the runtime data; unwrap opens a CKM_RSA_AES_KEY_WRAP* release with TPM2_RSA_Decrypt. */
struct cvm_guest_tpm_key;
CVM_EXPORT int cvm_guest_tpm_key_create(const char *tcti_conf, struct cvm_guest_tpm_key **out,
					struct cvm_err *err);
CVM_EXPORT const struct cvm_key *cvm_guest_tpm_key_public(const struct cvm_guest_tpm_key *k);
CVM_EXPORT int cvm_guest_tpm_key_unwrap(struct cvm_guest_tpm_key *k, const char *enc,
					const uint8_t *ct, size_t len,
					struct cvm_secret **material, struct cvm_err *err);
CVM_EXPORT void cvm_guest_tpm_key_free(struct cvm_guest_tpm_key *k);

/* ==== temp disk ============================================================================
 * The host attaches the temp disk as the virtio-blk device with serial "temp" (a fresh sparse
 * file each boot). Find it under sys_block (/sys/block): *name = "vdX"; -ENOENT when the VM has
 * none, -EEXIST when two devices claim the serial. */
CVM_EXPORT int cvm_guest_find_temp_disk(const char *sys_block, char *name, size_t cap,
				       struct cvm_err *err);
/* Refuse (-EPERM) the OS disk or a partition of it, and (-EEXIST) a device whose first MiB is
 * not all zero: only a blank device is formatted. */
CVM_EXPORT int cvm_guest_temp_disk_check(const char *dev, const char *os_dev,
					 struct cvm_err *err);

/* ==== data disks ===========================================================================
 * The host attaches each confidential data disk as a virtio-blk device whose serial is the
 * disk's registry name. List under sys_block (/sys/block) every virtio disk that is neither
 * the OS disk os_dev (the disk itself or the disk holding that partition) nor the temp disk
 * (serial "temp"), in device order, with the /dev/mapper name each gets: its serial when that
 * is 1..64 of [A-Za-z0-9_-], not root, temp or control, and not an earlier disk's name; else
 * dataN. Whether a listed device is a confidential disk is decided by its LUKS2 header alone
 * (main.c). -E2BIG when more than cap. */
#define CVM_GUEST_DATA_NAME_MAX 64
struct cvm_guest_data_disk {
	char dev[32];                             /* "vdb" */
	char serial[CVM_GUEST_DATA_NAME_MAX + 2]; /* as read; "" when none */
	char name[CVM_GUEST_DATA_NAME_MAX + 1];   /* /dev/mapper/<name> */
};
CVM_EXPORT bool cvm_guest_data_disk_name_valid(const char *s);
CVM_EXPORT int cvm_guest_find_data_disks(const char *sys_block, const char *os_dev,
					 struct cvm_guest_data_disk *out, size_t cap, size_t *n,
					 struct cvm_err *err);

/* ==== flow (pure parts) ===================================================================== */

#define CVM_GUEST_KID "TpmEphemeralEncryptionKey"

/* {"keys":[<public JWK, kid TpmEphemeralEncryptionKey, key_ops ["encrypt"]>],
 *  "client-payload":{"nonce":...},"vm-id":...}; *json malloc'd, compact. */
CVM_EXPORT int cvm_guest_runtime_data(const struct cvm_key *key, const char *nonce,
				      const char *vm, char **json, struct cvm_err *err);
/* SHA-256(data) || 32 zero bytes: what the attestation service checks. */
CVM_EXPORT int cvm_guest_report_data(const void *data, size_t len, uint8_t out[64],
				     struct cvm_err *err);
/* POST /attest/SevSnpVm body: {"report": b64url({"SnpReport": b64url, "VcekCertChain":
 * b64url(PEM)}), "runtimeData": {"data": b64url(runtime), "dataType": "JSON"}, "nonce"}. */
CVM_EXPORT int cvm_guest_attest_body(const struct cvm_guest_evidence *ev, const char *runtime,
				     const char *nonce, char **body, struct cvm_err *err);
/* {"token": "<JWT>"} -> token (malloc'd). */
CVM_EXPORT int cvm_guest_parse_token(const uint8_t *buf, size_t len, char **token,
				     struct cvm_err *err);
/* The orchestrator's release response is the key service's {"value": JWS}; its payload's
 * response.key.key.key_hsm is b64url(JSON {"header": {"enc"}, "ciphertext"}). Returns the
 * ciphertext and enc. The JWS signature is not trusted for secrecy: only the ephemeral key can
 * unwrap, and a wrong key fails the LUKS2 keyslot check. */
CVM_EXPORT int cvm_guest_parse_release(const uint8_t *buf, size_t len, uint8_t **ct,
				       size_t *ct_len, char **enc, struct cvm_err *err);
/* Unwrap the released key material (PKCS#8 DER for RSA, raw for oct) with the ephemeral key. */
CVM_EXPORT int cvm_guest_unwrap_released(const struct cvm_key *ephemeral, const char *enc,
					 const uint8_t *ct, size_t len,
					 struct cvm_secret **material, struct cvm_err *err);
/* Unwrap the disk's LUKS2 secret (opencvm-hsm token: alg RSA-OAEP-256 or A256KW) with the
 * released key material. */
CVM_EXPORT int cvm_guest_unwrap_disk_secret(const struct cvm_secret *material, const char *alg,
					    const char *wrapped_b64url, struct cvm_secret **secret,
					    struct cvm_err *err);
/* "https://kv/keys/name/version" -> name, version (malloc'd). */
CVM_EXPORT int cvm_guest_key_url_split(const char *url, char **name, char **version,
				       struct cvm_err *err);
