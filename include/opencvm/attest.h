/* SPDX-License-Identifier: Apache-2.0 */
/* attest: turns TEE evidence into a verdict and a verdict into an MAA-style token.
 *
 * AMD SEV-SNP: report parser (versions 2, 3, 5), VCEK/VLEK extension parser, chain verification
 * VCEK/VLEK -> ASK/ASVK -> ARK (RSA-PSS SHA-384, salt 48) against pinned roots, report signature
 * (ECDSA P-384), TCB/hwID consistency and a policy with go-sev-guest's validate knobs.
 * Emulator: an AMD-shaped chain with our own keys producing byte-identical reports, trusted only
 * when the verifier is configured with the emulator root's fingerprint.
 * Service: MAA-shaped attestation (POST /attest/SevSnpVm), JWKS, OIDC discovery, RS256 tokens.
 *
 * Conventions: 0 or negative errno (util.h); -EINVAL malformed input, -EBADMSG a signature or
 * chain check failed, -EPERM a policy check refused otherwise valid evidence. Messages name the
 * check ("snp.policy.debug: ..."). */
#pragma once

#include <jansson.h>
#include <openssl/x509.h>
#include <opencvm/crypto.h>
#include <opencvm/util.h>

/* ==== SEV-SNP attestation report ============================================================ */

#define CVM_SNP_REPORT_SIZE 1184
#define CVM_SNP_SIGNED_SIZE 0x2A0

enum cvm_snp_product {
	CVM_SNP_PRODUCT_UNKNOWN = 0,
	CVM_SNP_PRODUCT_MILAN,
	CVM_SNP_PRODUCT_GENOA,
	CVM_SNP_PRODUCT_TURIN,
};
/* "Milan", "Genoa", "Turin", "unknown". */
CVM_EXPORT const char *cvm_snp_product_name(enum cvm_snp_product p);
/* Accepts a VCEK productName ("Milan-B0", "Genoa", "Turin") or plain names, case-insensitive. */
CVM_EXPORT enum cvm_snp_product cvm_snp_product_from_name(const char *name);

/* Signer of the report (flags bits 2-4). */
enum cvm_snp_signer { CVM_SNP_SIGNER_VCEK = 0, CVM_SNP_SIGNER_VLEK = 1, CVM_SNP_SIGNER_NONE = 7 };

/* Guest policy bits (report offset 0x08). */
#define CVM_SNP_POLICY_SMT (1ULL << 16)
#define CVM_SNP_POLICY_RESERVED_1 (1ULL << 17)
#define CVM_SNP_POLICY_MIGRATE_MA (1ULL << 18)
#define CVM_SNP_POLICY_DEBUG (1ULL << 19)
#define CVM_SNP_POLICY_SINGLE_SOCKET (1ULL << 20)
#define CVM_SNP_POLICY_CXL_ALLOW (1ULL << 21)
#define CVM_SNP_POLICY_MEM_AES_256_XTS (1ULL << 22)
#define CVM_SNP_POLICY_RAPL_DIS (1ULL << 23)
#define CVM_SNP_POLICY_CIPHERTEXT_HIDING (1ULL << 24)
#define CVM_SNP_POLICY_PAGE_SWAP_DISABLE (1ULL << 25)
/* Platform info bits (report offset 0x40). */
#define CVM_SNP_PLATFORM_SMT_EN (1ULL << 0)
#define CVM_SNP_PLATFORM_TSME_EN (1ULL << 1)
#define CVM_SNP_PLATFORM_ECC_EN (1ULL << 2)
#define CVM_SNP_PLATFORM_RAPL_DIS (1ULL << 3)
#define CVM_SNP_PLATFORM_CIPHERTEXT_HIDING_EN (1ULL << 4)
#define CVM_SNP_PLATFORM_ALIAS_CHECK_COMPLETE (1ULL << 5)
#define CVM_SNP_PLATFORM_TIO_EN (1ULL << 7)

/* A TCB_VERSION decoded for a CPU generation (the byte layout differs on Turin). */
struct cvm_snp_tcb {
	uint8_t fmc; /* Turin and later only */
	uint8_t bl;
	uint8_t tee;
	uint8_t snp;
	uint8_t ucode;
};
/* Decode/encode a raw TCB_VERSION for product (Milan/Genoa layout for anything but Turin). */
CVM_EXPORT void cvm_snp_tcb_decode(uint64_t raw, enum cvm_snp_product p, struct cvm_snp_tcb *out);
CVM_EXPORT uint64_t cvm_snp_tcb_encode(const struct cvm_snp_tcb *t, enum cvm_snp_product p);

struct cvm_snp_report {
	uint32_t version;
	uint32_t guest_svn;
	uint64_t policy;
	uint8_t family_id[16];
	uint8_t image_id[16];
	uint32_t vmpl;
	uint32_t signature_algo;
	uint64_t current_tcb;
	uint64_t platform_info;
	uint32_t flags;           /* bit0 AUTHOR_KEY_EN, bit1 MASK_CHIP_KEY, bits 2-4 SIGNING_KEY */
	uint8_t report_data[64];
	uint8_t measurement[48];
	uint8_t host_data[32];
	uint8_t id_key_digest[48];
	uint8_t author_key_digest[48];
	uint8_t report_id[32];
	uint8_t report_id_ma[32];
	uint64_t reported_tcb;
	uint8_t cpuid_fam_id;     /* v3+ */
	uint8_t cpuid_mod_id;
	uint8_t cpuid_step;
	uint8_t chip_id[64];
	uint64_t committed_tcb;
	uint8_t current_build, current_minor, current_major;
	uint8_t committed_build, committed_minor, committed_major;
	uint64_t launch_tcb;
	uint64_t launch_mit_vector;  /* v5+ */
	uint64_t current_mit_vector; /* v5+ */
	uint8_t sig_r[72];        /* little-endian */
	uint8_t sig_s[72];
};
/* Parses exactly CVM_SNP_REPORT_SIZE bytes (len must be at least that; trailing bytes are the
 * caller's business and rejected here: pass the report's own length). Checks version 2..5,
 * signature algorithm 1, reserved fields zero, signer field valid. */
CVM_EXPORT int cvm_snp_report_parse(const uint8_t *buf, size_t len, struct cvm_snp_report *out,
				    struct cvm_err *err);
/* Serialize back to the 1184-byte wire layout (inverse of parse). */
CVM_EXPORT void cvm_snp_report_serialize(const struct cvm_snp_report *r,
					 uint8_t out[CVM_SNP_REPORT_SIZE]);
/* The product a v3+ report names in its CPUID fields; UNKNOWN for v2 or unknown models. */
CVM_EXPORT enum cvm_snp_product cvm_snp_report_product(const struct cvm_snp_report *r);
CVM_EXPORT enum cvm_snp_signer cvm_snp_report_signer(const struct cvm_snp_report *r);
/* Decoded JSON view of every field (hex strings lowercase, TCBs decoded for product). */
CVM_EXPORT int cvm_snp_report_to_json(const struct cvm_snp_report *r, enum cvm_snp_product p,
				      json_t **out, struct cvm_err *err);

/* ==== VCEK / VLEK certificates ============================================================== */

struct cvm_snp_vek_ext {
	int struct_version;       /* -1 when absent */
	char product_name[32];    /* "" when absent */
	bool has_bl, has_tee, has_snp, has_ucode, has_fmc;
	struct cvm_snp_tcb tcb;
	uint8_t hwid[64];         /* VCEK only: 64 bytes (Milan/Genoa) or 8 (Turin) */
	size_t hwid_len;          /* 0 when absent (VLEK) */
	char csp_id[128];         /* VLEK only */
	bool is_vlek;             /* subject CN SEV-VLEK or a cspID extension */
};
/* Parse the AMD extensions (OIDs 1.3.6.1.4.1.3704.1.*) of a DER certificate. SPLs are DER
 * INTEGERs 0..255; hwID may be raw bytes or a DER OCTET STRING. */
CVM_EXPORT int cvm_snp_vek_ext_parse(const uint8_t *der, size_t len, struct cvm_snp_vek_ext *out,
				     struct cvm_err *err);
CVM_EXPORT int cvm_snp_vek_ext_from_x509(X509 *x, struct cvm_snp_vek_ext *out,
					 struct cvm_err *err);

/* Certificates offered for one report. Any member may be NULL (ASK/ARK then come from the
 * trusted roots). Owned: cvm_snp_certs_clear frees them. */
struct cvm_snp_certs {
	X509 *vek; /* VCEK or VLEK */
	X509 *ask; /* ASK or ASVK */
	X509 *ark;
};
CVM_EXPORT void cvm_snp_certs_clear(struct cvm_snp_certs *c);
/* Read certificates (PEM, possibly several, or DER) and sort them into vek/ask/ark by their
 * subject and extensions; adds to what c already holds and refuses duplicates. */
CVM_EXPORT int cvm_snp_certs_add(struct cvm_snp_certs *c, const uint8_t *buf, size_t len,
				 struct cvm_err *err);
CVM_EXPORT int cvm_snp_certs_add_file(struct cvm_snp_certs *c, const char *path,
				      struct cvm_err *err);
/* Extended-report certificate table (GHCB spec): entries {GUID(16), offset u32, length u32}
 * ending with an all-zero entry; offsets relative to the table start. Known GUIDs: VCEK, VLEK,
 * ASK, ARK; other entries are skipped. */
CVM_EXPORT int cvm_snp_certs_from_table(struct cvm_snp_certs *c, const uint8_t *buf, size_t len,
					struct cvm_err *err);
/* A directory laid out like AMD's key distribution service paths:
 *   DIR/vcek/v1/<Product>/cert_chain                          (ASK then ARK, PEM)
 *   DIR/vcek/v1/<Product>/<hwid hex>?blSPL=B&teeSPL=T&snpSPL=S&ucodeSPL=U   (VCEK, DER or PEM;
 *     Turin: 8-byte hwid and fmcSPL=F first)
 *   DIR/vlek/v1/<Product>/cert_chain                          (ASVK then ARK)
 * Fills what is missing in c for report r (product UNKNOWN: tried in Milan, Genoa, Turin order).
 * -ENOENT when no VCEK file for this chip and REPORTED_TCB exists. */
CVM_EXPORT int cvm_snp_certs_from_kds_dir(struct cvm_snp_certs *c, const char *dir,
					  const struct cvm_snp_report *r, enum cvm_snp_product p,
					  struct cvm_err *err);
/* The KDS-relative path of the VCEK for report r on product p (malloc'd), e.g.
 * "vcek/v1/Milan/<hex>?blSPL=3&teeSPL=0&snpSPL=8&ucodeSPL=115". */
CVM_EXPORT char *cvm_snp_kds_vcek_path(const struct cvm_snp_report *r, enum cvm_snp_product p);

/* ==== trust anchors ========================================================================= */

/* A set of trusted ARKs (and known ASK/ASVK intermediates) per product. Immutable once built;
 * share it read-only between threads. */
struct cvm_attest_roots;
/* The built-in AMD Milan/Genoa/Turin ARK/ASK/ASVK, each checked against its pinned SHA-256. */
CVM_EXPORT int cvm_attest_roots_new_builtin(struct cvm_attest_roots **out, struct cvm_err *err);
/* An empty set (tests, or operators trusting only explicit roots). */
CVM_EXPORT int cvm_attest_roots_new_empty(struct cvm_attest_roots **out, struct cvm_err *err);
CVM_EXPORT void cvm_attest_roots_free(struct cvm_attest_roots *r);
CVM_DEFINE_CLEANUP(struct cvm_attest_roots, cvm_attest_roots_free)
#define _cleanup_roots_ _cleanup_(cvm_attest_roots_freep)
/* Trust an ARK (PEM or DER) for product after checking its SHA-256 DER fingerprint against
 * fingerprint_hex (64 hex digits) and its RSA-PSS self-signature. ask (may be NULL) is an ASK or
 * ASVK signed by it. emulated marks every verdict under this root (emulator chains). */
CVM_EXPORT int cvm_attest_roots_add(struct cvm_attest_roots *r, enum cvm_snp_product p,
				    const uint8_t *ark, size_t ark_len, const uint8_t *ask,
				    size_t ask_len, const char *fingerprint_hex, bool emulated,
				    struct cvm_err *err);
/* Trust the emulator chain in dir (ark.pem, ask.pem written by cvm_tee_emu_init) only if the
 * ARK fingerprint equals fingerprint_hex. */
CVM_EXPORT int cvm_attest_roots_add_emulator(struct cvm_attest_roots *r, const char *dir,
					     const char *fingerprint_hex, struct cvm_err *err);

/* ==== verification ========================================================================== */

/* A chain VEK -> ASK/ASVK -> ARK checked once, reusable for many reports from the same chip
 * and TCB (the "cached chain"). */
struct cvm_snp_chain;
struct cvm_snp_verify_opts {
	int64_t now;              /* certificate validity time, Unix seconds; 0 = current time */
	X509_CRL *crl;            /* optional AMD CRL (signed by the ARK): ASK/VEK must be absent */
	enum cvm_snp_product product; /* expected product, UNKNOWN = accept any trusted one */
};
CVM_EXPORT int cvm_snp_chain_verify(const struct cvm_snp_certs *certs,
				    const struct cvm_attest_roots *roots,
				    const struct cvm_snp_verify_opts *opts,
				    struct cvm_snp_chain **out, struct cvm_err *err);
CVM_EXPORT void cvm_snp_chain_free(struct cvm_snp_chain *c);
CVM_DEFINE_CLEANUP(struct cvm_snp_chain, cvm_snp_chain_free)
CVM_EXPORT enum cvm_snp_product cvm_snp_chain_product(const struct cvm_snp_chain *c);
CVM_EXPORT bool cvm_snp_chain_emulated(const struct cvm_snp_chain *c);

/* Policy knobs (go-sev-guest validate.Options and more). cvm_snp_policy_default gives the
 * default policy: debug forbidden, emulated evidence refused, everything else permissive. */
struct cvm_snp_policy {
	/* guest policy (report POLICY): "allow" bits may be set, "require" bits must be set */
	bool allow_debug, allow_migrate_ma, allow_smt, allow_cxl;
	bool require_single_socket, require_mem_aes_256_xts, require_rapl_dis,
		require_ciphertext_hiding, require_page_swap_disable;
	uint8_t min_abi_major, min_abi_minor;
	/* platform info */
	bool allow_platform_smt, allow_platform_tsme, allow_platform_tio;
	bool require_platform_ecc, require_platform_rapl_dis,
		require_platform_ciphertext_hiding, require_platform_alias_check;
	/* fields */
	int vmpl;                 /* -1 any, else exact 0..3 */
	uint32_t min_guest_svn;
	uint8_t min_build;        /* CURRENT_BUILD and COMMITTED_BUILD */
	uint16_t min_version;     /* major << 8 | minor, current and committed */
	struct cvm_snp_tcb min_tcb;        /* component-wise <= REPORTED_TCB */
	struct cvm_snp_tcb min_launch_tcb; /* component-wise <= LAUNCH_TCB */
	bool permit_provisional_firmware;  /* false: COMMITTED must equal CURRENT */
	uint64_t min_launch_mit_vector, min_current_mit_vector; /* required bits */
	bool require_author_key;  /* AUTHOR_KEY_EN set (implies require_id_block) */
	bool require_id_block;    /* ID key digest in id_key_digests or author in author_key_digests */
	const uint8_t (*id_key_digests)[48];
	size_t n_id_key_digests;
	const uint8_t (*author_key_digests)[48];
	size_t n_author_key_digests;
	const uint8_t (*measurements)[48]; /* allow-list; n == 0: any */
	size_t n_measurements;
	const uint8_t (*chip_ids)[64];
	size_t n_chip_ids;
	bool check_report_data, check_host_data, check_family_id, check_image_id,
		check_report_id, check_report_id_ma;
	uint8_t report_data[64];
	uint8_t host_data[32];
	uint8_t family_id[16];
	uint8_t image_id[16];
	uint8_t report_id[32];
	uint8_t report_id_ma[32];
	enum cvm_snp_product product; /* UNKNOWN: any */
	bool allow_vlek;          /* default true */
	bool allow_emulated;      /* default false */
};
CVM_EXPORT void cvm_snp_policy_default(struct cvm_snp_policy *p);
/* JSON form for files and the CLI: {"allow_debug": bool, ..., "vmpl": n, "min_tcb": {"bl": n,
 * ...}, "measurements": [hex,...], "report_data": hex, ...} with the struct's member names.
 * Unknown members are refused. Arrays are allocated into *store (free with
 * cvm_snp_policy_store_free). */
struct cvm_snp_policy_store;
CVM_EXPORT int cvm_snp_policy_from_json(json_t *j, struct cvm_snp_policy *p,
					struct cvm_snp_policy_store **store, struct cvm_err *err);
CVM_EXPORT void cvm_snp_policy_store_free(struct cvm_snp_policy_store *s);

struct cvm_snp_verdict {
	struct cvm_snp_report report;
	enum cvm_snp_product product;
	enum cvm_snp_signer signer;
	struct cvm_snp_tcb reported_tcb; /* decoded for product */
	struct cvm_snp_vek_ext vek;
	bool emulated;
};
/* Report signature with the chain's VEK, VEK TCB == REPORTED_TCB, hwID == CHIP_ID, product
 * consistency, then the policy (NULL = default). */
CVM_EXPORT int cvm_snp_verify_with_chain(const uint8_t *report, size_t len,
					 const struct cvm_snp_chain *chain,
					 const struct cvm_snp_policy *policy,
					 struct cvm_snp_verdict *out, struct cvm_err *err);
/* Everything: chain (certs completed from the roots' ASK/ASVK) then cvm_snp_verify_with_chain. */
CVM_EXPORT int cvm_snp_verify(const uint8_t *report, size_t len, const struct cvm_snp_certs *certs,
			      const struct cvm_attest_roots *roots,
			      const struct cvm_snp_verify_opts *opts,
			      const struct cvm_snp_policy *policy, struct cvm_snp_verdict *out,
			      struct cvm_err *err);
/* Only the policy stage (for callers that verified the signature themselves). */
CVM_EXPORT int cvm_snp_policy_check(const struct cvm_snp_verdict *v,
				    const struct cvm_snp_policy *policy, struct cvm_err *err);
/* Verify from files: report (raw 1184 bytes), optional VEK/ASK/ARK files (PEM or DER) and an
 * optional KDS-layout dir; CLI entry point. */
struct cvm_snp_files {
	const char *report;
	const char *vek, *ask, *ark;
	const char *certs_dir;
	const char *crl;
};
CVM_EXPORT int cvm_snp_verify_files(const struct cvm_snp_files *f,
				    const struct cvm_attest_roots *roots,
				    const struct cvm_snp_verify_opts *opts,
				    const struct cvm_snp_policy *policy, struct cvm_snp_verdict *out,
				    struct cvm_err *err);
/* MAA claim set for a verdict: x-ms-sevsnpvm-* members added to obj. */
CVM_EXPORT int cvm_snp_verdict_claims(const struct cvm_snp_verdict *v, json_t *obj,
				      struct cvm_err *err);

/* ==== TEE emulator ==========================================================================
 * An AMD-shaped chain with our own keys: ARK/ASK RSA-4096 with RSA-PSS SHA-384 salt 48, VCEK
 * ECDSA P-384 carrying AMD's extensions. dir receives ark.pem, ask.pem, vcek.pem (public),
 * vcek-key.pem and ark-key.pem (0600), platform.json, plus the KDS layout for the VCEK. */
struct cvm_tee_emu_params {
	enum cvm_snp_product product; /* UNKNOWN = Genoa */
	struct cvm_snp_tcb tcb;       /* reported TCB the VCEK is issued for */
	uint8_t chip_id[64];          /* Turin uses the first 8 bytes */
};
CVM_EXPORT int cvm_tee_emu_init(const char *dir, const struct cvm_tee_emu_params *params,
				char fingerprint_hex[65], struct cvm_err *err);
/* The SHA-256 fingerprint of the emulator ARK in dir. */
CVM_EXPORT int cvm_tee_emu_fingerprint(const char *dir, char fingerprint_hex[65],
				       struct cvm_err *err);
/* Fields the caller chooses; everything else is filled from the emulated platform
 * (TCB, chip id, firmware version 1.55 build 0, CPUID for the product, signer VCEK). */
struct cvm_tee_emu_report_in {
	uint8_t report_data[64];
	uint8_t measurement[48];
	uint8_t host_data[32];
	uint8_t family_id[16];
	uint8_t image_id[16];
	uint64_t policy;          /* 0 = 0x30000 */
	uint32_t vmpl;
	uint32_t guest_svn;
};
/* Write dir/crl.pem: a CRL signed by the emulator ARK (RSA-PSS like AMD's), revoking the
 * emulator VCEK when revoke_vcek. */
CVM_EXPORT int cvm_tee_emu_crl(const char *dir, bool revoke_vcek, struct cvm_err *err);
/* Produce a signed 1184-byte report (version 3 Milan/Genoa, 5 Turin) with the VCEK in dir. */
CVM_EXPORT int cvm_tee_emu_snp_report(const char *dir, const struct cvm_tee_emu_report_in *in,
				      uint8_t out[CVM_SNP_REPORT_SIZE], struct cvm_err *err);

/* ==== Intel TDX quotes (v4, v5) ==============================================================
 * Quote = 48-byte header, TD report body (v4: 584 bytes at 48; v5: u16 type, u32 size, body at
 * 54), u32 signature data length, ECDSA-P256 quote signature (r||s big-endian) by the
 * attestation key, the key (X||Y), certification data type 6 (QE report, its PCK signature, QE
 * auth data, type 5 PEM PCK chain). Trailing bytes after the signature data are ignored. */
struct cvm_tdx_body {
	uint8_t tee_tcb_svn[16];
	uint8_t mrseam[48];
	uint8_t mrsignerseam[48];
	uint64_t seam_attributes;
	uint64_t td_attributes;   /* bit 0: DEBUG */
	uint64_t xfam;
	uint8_t mrtd[48];
	uint8_t mrconfigid[48];
	uint8_t mrowner[48];
	uint8_t mrownerconfig[48];
	uint8_t rtmr[4][48];
	uint8_t report_data[64];
	bool td15;                /* v5 body type 3 */
	uint8_t tee_tcb_svn2[16];
	uint8_t mrservicetd[48];
};
struct cvm_tdx_qe_report {
	uint8_t cpusvn[16];
	uint32_t miscselect;
	uint8_t attributes[16];
	uint8_t mrenclave[32];
	uint8_t mrsigner[32];
	uint16_t isvprodid;
	uint16_t isvsvn;
	uint8_t report_data[64];
};
struct cvm_tdx_quote {
	uint16_t version;
	uint16_t att_key_type;
	uint32_t tee_type;
	uint16_t qe_svn, pce_svn;
	uint8_t qe_vendor_id[16];
	uint8_t user_data[20];
	uint16_t body_type;       /* v4: 2 */
	uint32_t body_size;
	struct cvm_tdx_body body;
	size_t signed_len;        /* bytes covered by the quote signature */
	uint8_t signature[64];
	uint8_t attest_key[64];
	uint8_t qe_report_raw[384];
	struct cvm_tdx_qe_report qe_report;
	uint8_t qe_report_sig[64];
	size_t qe_auth_off, qe_auth_len;   /* into the parsed buffer */
	size_t pck_chain_off, pck_chain_len;
	size_t quote_len;         /* bytes used; the rest of the buffer is ignored */
};
CVM_EXPORT int cvm_tdx_quote_parse(const uint8_t *buf, size_t len, struct cvm_tdx_quote *out,
				   struct cvm_err *err);
CVM_EXPORT int cvm_tdx_quote_to_json(const struct cvm_tdx_quote *q, json_t **out,
				     struct cvm_err *err);

/* go-tdx-guest validate knobs. */
struct cvm_tdx_policy {
	uint16_t min_qe_svn, min_pce_svn;
	uint8_t min_tee_tcb_svn[16];     /* component-wise */
	bool allow_debug;                /* TD_ATTRIBUTES.DEBUG; default false */
	bool check_qe_vendor_id, check_mrseam, check_td_attributes, check_xfam,
		check_mrconfigid, check_mrowner, check_mrownerconfig, check_report_data;
	bool check_rtmr[4];
	uint8_t qe_vendor_id[16];
	uint8_t mrseam[48];
	uint64_t td_attributes, xfam;
	uint8_t mrconfigid[48], mrowner[48], mrownerconfig[48];
	uint8_t rtmr[4][48];
	uint8_t report_data[64];
	const uint8_t (*mrtds)[48];      /* allow-list; n == 0: any */
	size_t n_mrtds;
	/* TCB statuses accepted when collateral was evaluated ("UpToDate", ...; NULL-terminated;
	 * NULL = UpToDate, SWHardeningNeeded, ConfigurationNeeded,
	 * ConfigurationAndSWHardeningNeeded). */
	const char *const *allowed_tcb_status;
	bool allow_emulated;             /* quotes under the emulator root; default false */
};
CVM_EXPORT void cvm_tdx_policy_default(struct cvm_tdx_policy *p);
/* JSON form with the struct's member names: {"allow_debug": bool, "min_qe_svn": n,
 * "min_pce_svn": n, "min_tee_tcb_svn": hex(16), "qe_vendor_id"|"mrseam"|"mrconfigid"|"mrowner"|
 * "mrownerconfig"|"report_data": hex, "td_attributes"|"xfam": hex(8, little-endian as in the
 * quote), "rtmr0".."rtmr3": hex, "mrtds": [hex], "allowed_tcb_status": [string]}. Setting a
 * value turns its check on. Unknown members are refused. Arrays live in *store. */
struct cvm_tdx_policy_store;
CVM_EXPORT int cvm_tdx_policy_from_json(json_t *j, struct cvm_tdx_policy *p,
					struct cvm_tdx_policy_store **store, struct cvm_err *err);
CVM_EXPORT void cvm_tdx_policy_store_free(struct cvm_tdx_policy_store *s);

struct cvm_tdx_verify_opts {
	int64_t now;                     /* 0 = current time */
	X509 *root;                      /* NULL = built-in Intel SGX Root CA (pinned) */
	/* A TEE-emulator root (cvm_tee_emu_tdx_root, pinned by fingerprint), tried when the
	 * PCK chain does not lead to root; verdicts under it are marked emulated. */
	X509 *emulator_root;
	X509_CRL *pck_crl;               /* optional, signed by the PCK CA */
	/* Collateral (PCS JSON bodies) and the chain that signed them (PEM, TCB signing cert +
	 * root). Without the chain the collateral is used only when collateral_trusted says the
	 * operator vouches for the files (fetched over authenticated TLS, pinned in config). */
	const char *tcb_info;
	size_t tcb_info_len;
	const char *qe_identity;
	size_t qe_identity_len;
	const char *collateral_chain;
	size_t collateral_chain_len;
	X509 *collateral_root;           /* root for collateral_chain; NULL = same as root */
	bool collateral_trusted;
	bool check_collateral_dates;     /* refuse collateral past nextUpdate (default off: files) */
};
struct cvm_tdx_verdict {
	struct cvm_tdx_quote quote;
	uint8_t fmspc[6];
	uint8_t pck_cpusvn[16];
	uint16_t pck_pcesvn;
	char tcb_status[40];             /* "" when no TCB info was given */
	char qe_tcb_status[40];          /* "" when no QE identity was given */
	bool emulated;                   /* the PCK chain ends at the emulator root */
};
CVM_EXPORT int cvm_tdx_verify(const uint8_t *buf, size_t len,
			      const struct cvm_tdx_verify_opts *opts,
			      const struct cvm_tdx_policy *policy, struct cvm_tdx_verdict *out,
			      struct cvm_err *err);
CVM_EXPORT int cvm_tdx_policy_check(const struct cvm_tdx_verdict *v,
				    const struct cvm_tdx_policy *policy, struct cvm_err *err);
/* x-ms-tdx-* claims (MAA names: x-ms-tdx-mrtd, -rtmr0..3, -mrseam, -reportdata, -tdattributes,
 * -xfam, -mrconfigid, -mrowner, -mrownerconfig, -is-debuggable, -tcb-status). */
CVM_EXPORT int cvm_tdx_verdict_claims(const struct cvm_tdx_verdict *v, json_t *obj,
				      struct cvm_err *err);

/* ==== vTPM quotes and Azure HCL reports ======================================================
 * TPMS_ATTEST (TPM 2.0 Part 2, 10.12.12) of type TPM_ST_ATTEST_QUOTE. Big-endian fields. */
#define CVM_TPM_MAX_BANKS 4
struct cvm_tpm_quote {
	uint8_t signer_name[68];   /* qualifiedSigner (TPM2B_NAME contents) */
	size_t signer_name_len;
	uint8_t extra_data[64];    /* the nonce */
	size_t extra_data_len;
	uint64_t clock;
	uint32_t reset_count, restart_count;
	uint8_t safe;
	uint64_t firmware_version;
	size_t n_banks;
	uint16_t bank_alg[CVM_TPM_MAX_BANKS]; /* 0x000b SHA-256, 0x000c SHA-384, 0x0004 SHA-1 */
	uint8_t bank_select[CVM_TPM_MAX_BANKS][4];   /* PCR bitmaps (PCR0 = bit 0 of byte 0) */
	uint8_t pcr_digest[64];
	size_t pcr_digest_len;
};
CVM_EXPORT int cvm_tpm_quote_parse(const uint8_t *buf, size_t len, struct cvm_tpm_quote *out,
				   struct cvm_err *err);
/* Checks the quote signature (RSASSA-PKCS1-v1_5 or RSA-PSS, SHA-256, raw signature bytes) with
 * the attestation key, that pcrDigest equals the hash of the selected SHA-256 PCR values taken
 * from pcrs[0..23] in selection order, and, when nonce is non-NULL, extraData == nonce. */
CVM_EXPORT int cvm_tpm_quote_verify(const uint8_t *msg, size_t len, const uint8_t *sig,
				    size_t sig_len, EVP_PKEY *ak, const uint8_t (*pcrs)[32],
				    size_t n_pcrs, const uint8_t *nonce, size_t nonce_len,
				    struct cvm_tpm_quote *out, struct cvm_err *err);

/* Azure CVM HCL report (vTPM NV index 0x01400001): "HCLA" header, hardware report at 0x20
 * (SNP 1184 bytes or TDREPORT 1024 bytes), IGVM request data at 0x4C0, runtime-data JSON at
 * 0x4D4. Pointers refer into the parsed buffer. */
struct cvm_hcl_report {
	uint32_t version, report_size, request_type, status;
	uint32_t report_type;        /* 2 SNP, 4 TDX */
	uint32_t hash_type;          /* 1 SHA-256, 2 SHA-384, 3 SHA-512 */
	const uint8_t *hw_report;
	size_t hw_len;
	const uint8_t *runtime;      /* runtime data JSON bytes exactly as stored */
	size_t runtime_len;
};
CVM_EXPORT int cvm_hcl_report_parse(const uint8_t *buf, size_t len, struct cvm_hcl_report *out,
				    struct cvm_err *err);
/* The hardware report's REPORT_DATA must be hash(runtime data) followed by zeros. */
CVM_EXPORT int cvm_hcl_check_binding(const struct cvm_hcl_report *h, struct cvm_err *err);
/* The runtime data's key with this kid ("HCLAkPub", "HCLEkPub") as an EVP_PKEY (new ref). */
CVM_EXPORT int cvm_hcl_runtime_key(const struct cvm_hcl_report *h, const char *kid,
				   EVP_PKEY **out, struct cvm_err *err);

/* End to end for an Azure SEV-SNP CVM: SNP report (chain, signature, policy), runtime-data
 * binding, TPM quote signed by HCLAkPub over the given PCRs (and nonce when given). */
struct cvm_azure_evidence {
	const uint8_t *hcl;
	size_t hcl_len;
	const uint8_t *tpm_quote, *tpm_sig;
	size_t tpm_quote_len, tpm_sig_len;
	const uint8_t (*pcrs)[32];   /* 24 SHA-256 PCR values */
	size_t n_pcrs;
	const uint8_t *nonce;
	size_t nonce_len;
	const uint8_t *td_quote;     /* TDX CVMs: the TD quote for the TDREPORT */
	size_t td_quote_len;
};
struct cvm_azure_verdict {
	uint32_t report_type;        /* 2 SNP, 4 TDX */
	struct cvm_snp_verdict snp;
	struct cvm_tdx_verdict tdx;
	struct cvm_tpm_quote tpm;
};
CVM_EXPORT int cvm_azure_verify(const struct cvm_azure_evidence *ev,
				const struct cvm_snp_certs *certs,
				const struct cvm_attest_roots *roots,
				const struct cvm_snp_verify_opts *snp_opts,
				const struct cvm_snp_policy *snp_policy,
				const struct cvm_tdx_verify_opts *tdx_opts,
				const struct cvm_tdx_policy *tdx_policy,
				struct cvm_azure_verdict *out, struct cvm_err *err);

/* ==== decoding any evidence (cvm attest show) ================================================ */
enum cvm_evidence_kind {
	CVM_EVIDENCE_UNKNOWN = 0,
	CVM_EVIDENCE_SNP_REPORT,   /* 1184-byte SEV-SNP report */
	CVM_EVIDENCE_TDX_QUOTE,    /* TDX quote v4/v5 */
	CVM_EVIDENCE_HCL_REPORT,   /* Azure HCL report */
	CVM_EVIDENCE_TPM_QUOTE,    /* TPMS_ATTEST */
	CVM_EVIDENCE_TCG_LOG,      /* TCG crypto-agile event log */
};
CVM_EXPORT enum cvm_evidence_kind cvm_evidence_detect(const uint8_t *buf, size_t len);
/* {"kind": "snp-report"|"tdx-quote"|"hcl-report"|"tpm-quote"|"tcg-log", ...decoded fields}. */
CVM_EXPORT int cvm_evidence_to_json(const uint8_t *buf, size_t len, json_t **out,
				    struct cvm_err *err);

/* ==== TCG PC Client crypto-agile event log ==================================================
 * First event in the SHA-1 format carrying "Spec ID Event03", then TCG_PCR_EVENT2 records.
 * Replay extends the SHA-256 bank (EV_NO_ACTION skipped; the StartupLocality event sets
 * PCR0's starting locality). */
#define CVM_TCG_MAX_EVENTS 4096
struct cvm_tcg_log {
	size_t n_events;
	uint8_t pcrs[24][32];        /* replayed SHA-256 bank */
	uint32_t extended_mask;      /* PCRs touched by at least one event */
};
CVM_EXPORT int cvm_tcg_log_replay(const uint8_t *buf, size_t len, struct cvm_tcg_log *out,
				  struct cvm_err *err);
/* Every PCR the log extends must equal the given value (e.g. from a verified TPM quote). */
CVM_EXPORT int cvm_tcg_log_check(const struct cvm_tcg_log *log, const uint8_t (*pcrs)[32],
				 size_t n_pcrs, struct cvm_err *err);
/* Events as JSON: [{"pcr", "type", "sha256", "data" (hex, up to 256 bytes)}]. */
CVM_EXPORT int cvm_tcg_log_to_json(const uint8_t *buf, size_t len, json_t **out,
				   struct cvm_err *err);

/* ==== MAA policy language (text format, version 1.0) =========================================
 * See src/attest/policy.c for the grammar. Parse errors read "policy:LINE:COL: what". */
struct cvm_maa_policy;
CVM_EXPORT int cvm_maa_policy_parse(const char *text, size_t len, struct cvm_maa_policy **out,
				    struct cvm_err *err);
CVM_EXPORT void cvm_maa_policy_free(struct cvm_maa_policy *p);
CVM_DEFINE_CLEANUP(struct cvm_maa_policy, cvm_maa_policy_free)
CVM_EXPORT const char *cvm_maa_policy_text(const struct cvm_maa_policy *p);
/* base64url SHA-256 of the text (the x-ms-policy-hash claim). */
CVM_EXPORT const char *cvm_maa_policy_hash(const struct cvm_maa_policy *p);
/* claims: flat object of incoming claims (e.g. from cvm_snp_verdict_claims). *permitted is the
 * authorization result; when permitted and issued is non-NULL the issuance rules add their
 * claims to it. */
CVM_EXPORT int cvm_maa_policy_eval(const struct cvm_maa_policy *p, json_t *claims,
				   bool *permitted, json_t *issued, struct cvm_err *err);

/* TDX emulator: an Intel-shaped PCK chain (P-256 root, PCK CA, PCK certificate with the SGX
 * extensions) and an attestation key, in dir as tdx-root.pem, tdx-pck-ca.pem, tdx-pck.pem,
 * tdx-pck-key.pem, tdx-ak-key.pem (keys 0600) and tdx-platform.json. Quotes are v4 with a QE
 * report signed by the PCK key, in the exact hardware layout. */
struct cvm_tee_emu_tdx_params {
	uint8_t fmspc[6];
	uint8_t cpusvn[16];              /* also the PCK TCB component SVNs */
	uint16_t pcesvn;
	uint8_t tee_tcb_svn[16];
	uint8_t mrseam[48];
};
CVM_EXPORT int cvm_tee_emu_tdx_init(const char *dir, const struct cvm_tee_emu_tdx_params *p,
				    char fingerprint_hex[65], struct cvm_err *err);
struct cvm_tee_emu_tdx_in {
	uint8_t report_data[64];
	uint8_t mrtd[48];
	uint8_t rtmr[4][48];
	uint8_t mrconfigid[48], mrowner[48], mrownerconfig[48];
	uint64_t td_attributes;
	uint64_t xfam;
};
/* Appends the quote to out (zeroed cvm_buf). */
CVM_EXPORT int cvm_tee_emu_tdx_quote(const char *dir, const struct cvm_tee_emu_tdx_in *in,
				     struct cvm_buf *out, struct cvm_err *err);
/* The emulator root from dir, only if its SHA-256 fingerprint equals fingerprint_hex. */
CVM_EXPORT int cvm_tee_emu_tdx_root(const char *dir, const char *fingerprint_hex, X509 **out,
				    struct cvm_err *err);

/* Service mode, transport-independent (the host wires it to a guest's virtio-serial port):
 * the guest asks with {"tee": "sev-snp"|"tdx", "report_data": hex(64 bytes), "vmpl"?: 0..3}
 * and gets {"report": b64url, "cert_chain": PEM VCEK+ASK+ARK} or {"quote": b64url}. What the
 * VM is (measurement, host data, MRTD, ...) comes from the host's launch description, never
 * from the guest. Errors: {"error": "message"} and a negative return. */
struct cvm_tee_emu_vm {
	struct cvm_tee_emu_report_in snp;   /* report_data and vmpl are taken from the request */
	struct cvm_tee_emu_tdx_in tdx;      /* report_data is taken from the request */
};
CVM_EXPORT int cvm_tee_emu_serve(const char *dir, const struct cvm_tee_emu_vm *vm,
				 const char *request, size_t len, char **response,
				 struct cvm_err *err);

/* ==== attestation service (MAA shape) ======================================================= */

struct cvm_attest_service_config {
	const char *issuer;          /* base URL clients use, no trailing slash */
	const char *key_dir;         /* signing key persisted here (created when missing) */
	struct cvm_key *signing_key; /* or given (RSA, reference taken); overrides key_dir */
	int64_t token_lifetime;      /* seconds; 0 = 8 hours */
	const struct cvm_attest_roots *roots; /* borrowed, must outlive the service */
	const struct cvm_snp_policy *snp_policy; /* NULL = default */
	const struct cvm_snp_verify_opts *verify_opts; /* NULL = defaults */
	const struct cvm_tdx_policy *tdx_policy;       /* NULL = default */
	const struct cvm_tdx_verify_opts *tdx_opts;    /* NULL = defaults (strings borrowed) */
};
struct cvm_attest_service;
/* Key rotation with overlap, offline: key_dir's current key becomes previous.pem (still in the
 * JWKS, so tokens it signed keep verifying) and a new current key is written; a service
 * started afterwards signs with the new key. The key before previous is dropped. */
CVM_EXPORT int cvm_attest_keys_rotate(const char *key_dir, struct cvm_err *err);
CVM_EXPORT int cvm_attest_service_new(const struct cvm_attest_service_config *cfg,
				      struct cvm_attest_service **out, struct cvm_err *err);
CVM_EXPORT void cvm_attest_service_free(struct cvm_attest_service *s);
CVM_DEFINE_CLEANUP(struct cvm_attest_service, cvm_attest_service_free)
/* The body of POST /attest/SevSnpVm (JSON text): verifies and returns the JWT (malloc'd). */
CVM_EXPORT int cvm_attest_service_attest_snp(struct cvm_attest_service *s, const char *body,
					     size_t len, char **token, struct cvm_err *err);
/* The body of POST /attest/TdxVm: {"quote": b64url, "runtimeData", "nonce"?}. */
CVM_EXPORT int cvm_attest_service_attest_tdx(struct cvm_attest_service *s, const char *body,
					     size_t len, char **token, struct cvm_err *err);
/* Token for an already verified verdict: runtime data bytes must hash into report_data, then
 * the SevSnpVm policy (if set) authorizes and adds issued claims. */
struct cvm_attest_runtime {
	const uint8_t *data;
	size_t len;
	bool is_json;             /* dataType "JSON": embedded as x-ms-runtime */
	const char *nonce;        /* may be NULL */
};
CVM_EXPORT int cvm_attest_issue_snp_token(struct cvm_attest_service *s,
					  const struct cvm_snp_verdict *v,
					  const struct cvm_attest_runtime *rt, char **token,
					  struct cvm_err *err);
CVM_EXPORT int cvm_attest_issue_tdx_token(struct cvm_attest_service *s,
					  const struct cvm_tdx_verdict *v,
					  const struct cvm_attest_runtime *rt, char **token,
					  struct cvm_err *err);
/* GET /certs and GET /.well-known/openid-configuration bodies (new references). */
CVM_EXPORT int cvm_attest_service_jwks(struct cvm_attest_service *s, json_t **out,
				       struct cvm_err *err);
CVM_EXPORT int cvm_attest_service_openid(struct cvm_attest_service *s, json_t **out,
					 struct cvm_err *err);
/* Attestation policies per type ("SevSnpVm", "TdxVm", "AzureGuest"): MAA text format.
 * get: *text NULL when none is set (everything the appraisal policy passes is permitted). */
CVM_EXPORT int cvm_attest_service_set_policy(struct cvm_attest_service *s, const char *type,
					     const char *text, size_t len, struct cvm_err *err);
CVM_EXPORT int cvm_attest_service_get_policy(struct cvm_attest_service *s, const char *type,
					     char **text, struct cvm_err *err);
/* Verify a token this service issued (signature, times); claims is a new reference. */
CVM_EXPORT int cvm_attest_service_verify_token(struct cvm_attest_service *s, const char *token,
					       json_t **claims, struct cvm_err *err);

/* REST glue: registers POST /attest/SevSnpVm, POST /attest/TdxVm, POST /attest/AzureGuest,
 * GET /certs, GET /.well-known/openid-configuration, GET and PUT /policies/{type}
 * on srv (include/opencvm/http.h). PUT /policies answers 403 here: policy changes need
 * cvm_attest_register_routes_guarded. */
struct cvm_http_server;
CVM_EXPORT int cvm_attest_register_routes(struct cvm_attest_service *svc,
					  struct cvm_http_server *srv, struct cvm_err *err);
/* The same routes, with PUT /policies/{type} enabled: every call is first authorized by
 * authorize (0 = allowed; else an error with its status, 401/403; principal, a NUL-terminated
 * identity of the caller, is filled whenever the caller was identified, also on refusal), then
 * validated, and every outcome, allowed or refused, leaves one audit record before the answer:
 * principal, operation "policies/set", key_name = the attestation type (when it is one),
 * status, result ("ok" or the error code), request id, source, and detail
 * {"attestation_type", "policy_sha256" (hex SHA-256 of the policy text) or, when no policy
 * text could be read from the body, "body_sha256"} (never the text). A successful change is
 * recorded before it takes effect; when the record cannot be written nothing changes and the
 * answer is 500. *out must be freed with cvm_attest_rest_free after cvm_http_server_free. */
struct cvm_audit;
struct cvm_http_req;
struct cvm_attest_rest;
#define CVM_ATTEST_PRINCIPAL_MAX 128
typedef int (*cvm_attest_authorize_fn)(void *ctx, const struct cvm_http_req *req,
				       char principal[CVM_ATTEST_PRINCIPAL_MAX],
				       struct cvm_err *err);
struct cvm_attest_rest_config {
	cvm_attest_authorize_fn authorize_policy; /* required */
	void *authorize_ctx;
	struct cvm_audit *audit;                  /* required; borrowed, outlives the server */
};
CVM_EXPORT int cvm_attest_register_routes_guarded(struct cvm_attest_service *svc,
						  struct cvm_http_server *srv,
						  const struct cvm_attest_rest_config *cfg,
						  struct cvm_attest_rest **out, struct cvm_err *err);
CVM_EXPORT void cvm_attest_rest_free(struct cvm_attest_rest *r); /* NULL-safe */

/* ==== SEV-SNP launch measurement (measure.c) ===================================================
 * The launch digest (report MEASUREMENT) the AMD-SP computes while QEMU launches a guest:
 * OVMF pages at 4 GiB - size, OVMF's SEV metadata sections, the SEV hashes table for direct
 * kernel boot, then one VMSA per vCPU. Each SNP_LAUNCH_UPDATE page extends the digest:
 * ld = SHA-384(PAGE_INFO{ld, SHA-384(page) or zeros, 0x70, type, 0, 0, gpa}). */
#define CVM_SNP_LD_SIZE 48
#define CVM_SNP_PAGE_INFO_SIZE 0x70
#define CVM_SNP_VMSA_SIZE 4096
#define CVM_SNP_MAX_VCPUS 512
enum cvm_snp_page_type {
	CVM_SNP_PAGE_NORMAL = 1, CVM_SNP_PAGE_VMSA = 2, CVM_SNP_PAGE_ZERO = 3,
	CVM_SNP_PAGE_UNMEASURED = 4, CVM_SNP_PAGE_SECRETS = 5, CVM_SNP_PAGE_CPUID = 6,
};
struct cvm_snp_gctx {
	uint8_t ld[CVM_SNP_LD_SIZE];
};
/* seed NULL: zeros (a fresh launch); else a digest to continue from (a precomputed OVMF hash). */
CVM_EXPORT void cvm_snp_gctx_init(struct cvm_snp_gctx *g, const uint8_t seed[CVM_SNP_LD_SIZE]);
/* The 0x70-byte PAGE_INFO structure hashed for one update. */
CVM_EXPORT void cvm_snp_page_info(const uint8_t digest_cur[CVM_SNP_LD_SIZE],
				  const uint8_t contents[CVM_SNP_LD_SIZE],
				  enum cvm_snp_page_type type, uint64_t gpa,
				  uint8_t out[CVM_SNP_PAGE_INFO_SIZE]);
CVM_EXPORT int cvm_snp_gctx_update(struct cvm_snp_gctx *g, enum cvm_snp_page_type type,
				   uint64_t gpa, const uint8_t contents[CVM_SNP_LD_SIZE],
				   struct cvm_err *err);
/* Normal pages: CONTENTS = SHA-384 of each 4096-byte page of data, GPAs consecutive. */
CVM_EXPORT int cvm_snp_gctx_update_normal(struct cvm_snp_gctx *g, uint64_t gpa,
					  const uint8_t *data, size_t len, struct cvm_err *err);
CVM_EXPORT int cvm_snp_gctx_update_vmsa(struct cvm_snp_gctx *g,
					const uint8_t page[CVM_SNP_VMSA_SIZE], struct cvm_err *err);

/* OVMF's GUIDed footer table (ends 32 bytes before the image end) and SEV metadata ("ASEV"). */
#define CVM_OVMF_MAX_SECTIONS 64
enum cvm_ovmf_section_type {
	CVM_OVMF_SECTION_SNP_SEC_MEM = 1, CVM_OVMF_SECTION_SNP_SECRETS = 2,
	CVM_OVMF_SECTION_CPUID = 3, CVM_OVMF_SECTION_SVSM_CAA = 4,
	CVM_OVMF_SECTION_SNP_KERNEL_HASHES = 0x10,
};
struct cvm_ovmf_section {
	uint32_t gpa, size, type;
};
struct cvm_ovmf_info {
	size_t size;                  /* image bytes */
	uint64_t gpa;                 /* 4 GiB - size */
	bool has_reset_eip;           /* SEV-ES reset block 00f771de-...: AP entry point */
	uint32_t reset_eip;
	bool has_hashes_table;        /* SEV hash table 7255371f-...: where QEMU puts it */
	uint32_t hashes_table_gpa, hashes_table_size;
	bool has_metadata;            /* SEV metadata dc886566-... */
	uint32_t metadata_version;
	size_t n_sections;
	struct cvm_ovmf_section sections[CVM_OVMF_MAX_SECTIONS];
};
/* Parse an OVMF image (or its suffix holding the table). Images without the footer parse to
 * an info with no entries; malformed tables, sections off page boundaries or above 4 GiB and
 * unknown section types are -EINVAL. */
CVM_EXPORT int cvm_ovmf_parse(const uint8_t *buf, size_t len, struct cvm_ovmf_info *out,
			      struct cvm_err *err);
CVM_EXPORT bool cvm_ovmf_has_section(const struct cvm_ovmf_info *o,
				     enum cvm_ovmf_section_type type);

/* SEV hashes table for direct kernel boot (QEMU's SevHashTable): SHA-256 of the kernel file,
 * the initrd (empty when none) and the command line with its NUL ("\0" when none). */
#define CVM_SEV_HASHES_TABLE_SIZE 168   /* the length field */
#define CVM_SEV_HASHES_TABLE_PADDED 176 /* bytes placed in the page */
struct cvm_sev_hashes {
	uint8_t cmdline[32], initrd[32], kernel[32];
};
CVM_EXPORT int cvm_sev_hashes_compute(const uint8_t *kernel, size_t kernel_len,
				      const uint8_t *initrd, size_t initrd_len, const char *append,
				      struct cvm_sev_hashes *out, struct cvm_err *err);
/* kernel required; initrd and append may be NULL. Files are streamed, not loaded. */
CVM_EXPORT int cvm_sev_hashes_from_files(const char *kernel, const char *initrd,
					 const char *append, struct cvm_sev_hashes *out,
					 struct cvm_err *err);
CVM_EXPORT void cvm_sev_hashes_table(const struct cvm_sev_hashes *h,
				     uint8_t out[CVM_SEV_HASHES_TABLE_PADDED]);

/* VMSA reset state. QEMU: QEMU >= 9.1 on KVM with KVM_SEV_INIT2, which syncs the FPU reset
 * state (MXCSR 0x1f80, FCW 0x37f) into the VMSA. QEMU_LEGACY: QEMU on hosts launching with
 * the older KVM_SEV_SNP_INIT path (AMD's out-of-tree SNP kernels), FPU fields left zero.
 * EC2: that VMM's register reset values (public known-answer vectors exist for it). */
enum cvm_snp_vmm { CVM_SNP_VMM_QEMU = 0, CVM_SNP_VMM_EC2 = 1, CVM_SNP_VMM_QEMU_LEGACY = 2 };
/* CPUID Fn0000_0001_EAX signature for family/model/stepping. */
CVM_EXPORT uint32_t cvm_cpuid_sig(unsigned family, unsigned model, unsigned stepping);
/* QEMU -cpu model name (case-insensitive, e.g. "EPYC-Milan") to its signature. */
CVM_EXPORT int cvm_snp_vcpu_sig(const char *type, uint32_t *sig, struct cvm_err *err);
CVM_EXPORT size_t cvm_snp_vcpu_type_count(void);
CVM_EXPORT const char *cvm_snp_vcpu_type_name(size_t i);
/* eip 0xfffffff0 builds the BSP's VMSA, OVMF's reset_eip an AP's. */
CVM_EXPORT void cvm_snp_vmsa_page(uint32_t eip, uint64_t sev_features, uint32_t vcpu_sig,
				  enum cvm_snp_vmm vmm, uint8_t page[CVM_SNP_VMSA_SIZE]);

struct cvm_snp_measure_in {
	const struct cvm_ovmf_info *ovmf;   /* from cvm_ovmf_parse */
	const uint8_t *ovmf_data;           /* the parsed image, measured as normal pages, or */
	size_t ovmf_len;
	const uint8_t *ovmf_hash;           /* 48 bytes: digest after the OVMF pages (precomputed) */
	const struct cvm_sev_hashes *hashes; /* NULL: no direct kernel boot */
	uint32_t vcpus;
	uint32_t vcpu_sig;
	uint64_t guest_features;            /* VMSA SEV_FEATURES; bit 0 SNPActive required */
	enum cvm_snp_vmm vmm;
};
CVM_EXPORT int cvm_snp_measure(const struct cvm_snp_measure_in *in,
			       uint8_t ld[CVM_SNP_LD_SIZE], struct cvm_err *err);
/* CLI entry point: read and parse the OVMF file, hash kernel/initrd/append, measure. info
 * (optional) receives the parsed metadata. */
struct cvm_snp_measure_files {
	const char *ovmf, *kernel, *initrd, *append;
	const char *vcpu_type;
	uint32_t vcpus;
	uint64_t guest_features;
	const uint8_t *ovmf_hash;           /* optional precomputed OVMF digest */
	enum cvm_snp_vmm vmm;
};
CVM_EXPORT int cvm_snp_measure_files(const struct cvm_snp_measure_files *f,
				     uint8_t ld[CVM_SNP_LD_SIZE], struct cvm_ovmf_info *info,
				     struct cvm_err *err);

/* ==== POST /attest/AzureGuest (azureguest.c) ===================================================
 * The endpoint Azure's CVM guest attestation library calls (api-version 2020-10-01, 2022-08-01):
 * body {"AttestationInfo": base64(JSON AttestationInfo)}, response {"token": T}. T is the JWT,
 * or, when TpmInfo carries an EncKeyPub certified by the AK, the sealed form:
 * base64url(JSON {"EncryptionParams", "AuthenticationData", "Jwt", "EncryptedInnerKey"}).
 * Checks: isolation evidence (SNP report + VCEK chain, or TD quote) with the service's roots and
 * policies; SHA-256(RunTimeData) || zeros == REPORT_DATA; TPM quote signed by the runtime
 * data's HCLAkPub over the given PCRs; TCG log replay against the quoted PCRs when present.
 * Token claims: x-ms-attestation-type "azurevm", x-ms-azurevm-*, x-ms-isolation-tee {...},
 * x-ms-runtime {client-payload, keys [TpmEphemeralEncryptionKey]}; policy type "AzureGuest". */
struct cvm_azureguest_req {
	json_t *info;                 /* decoded AttestationInfo (owned) */
	const char *protocol_version; /* AttestationProtocolVersion (borrowed from info) */
	char *os_type, *os_distro, *os_build; /* decoded text; distro/build NULL when absent */
	int64_t os_major, os_minor;   /* -1 when absent */
	bool tdx;                     /* IsolationInfo.Type "Tdx" (else "SevSnp") */
	uint8_t *hw;                  /* SNP report or TD quote */
	size_t hw_len;
	uint8_t *vcek_chain;          /* SNP: VcekCertChain bytes (PEM or DER) */
	size_t vcek_chain_len;
	uint8_t *runtime;             /* RunTimeData bytes exactly as sent */
	size_t runtime_len;
	uint8_t *tcg_log;             /* NULL when absent */
	size_t tcg_log_len;
	json_t *client_payload;       /* object of strings, NULL when absent (owned) */
	uint8_t *quote, *quote_sig;   /* TpmInfo.PcrQuote (TPMS_ATTEST), PcrSignature */
	size_t quote_len, quote_sig_len;
	uint8_t pcrs[24][32];         /* TpmInfo.Pcrs (SHA-256 bank) */
	uint32_t pcr_mask;            /* PCRs present in TpmInfo.Pcrs */
	uint8_t *enc_key_pub, *enc_certify, *enc_certify_sig; /* NULL when absent */
	size_t enc_key_pub_len, enc_certify_len, enc_certify_sig_len;
};
/* Parse the request body; errors name the field ("AttestationInfo.TpmInfo.PcrQuote: ..."). */
CVM_EXPORT int cvm_azureguest_parse(const uint8_t *buf, size_t len,
				    struct cvm_azureguest_req *out, struct cvm_err *err);
CVM_EXPORT void cvm_azureguest_req_clear(struct cvm_azureguest_req *r);
/* The sealed response token: AES-256-GCM over the JWT (AAD "Transport Key"), key encrypted
 * with RSAES-PKCS1-v1_5 to enc_key. *out is malloc'd base64url JSON. */
CVM_EXPORT int cvm_azureguest_seal(const char *jwt, EVP_PKEY *enc_key, char **out,
				   struct cvm_err *err);
/* Whole request: parse, verify, issue; *token is the value of the response's "token". */
CVM_EXPORT int cvm_attest_service_attest_azureguest(struct cvm_attest_service *s,
						    const char *body, size_t len, char **token,
						    struct cvm_err *err);
