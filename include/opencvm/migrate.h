/* SPDX-License-Identifier: Apache-2.0 */
/* migrate: the migration factory. Reads a server's disk offline (no boot, no mount) to judge
 * whether it can become a confidential VM, and converts MBR/BIOS disks to GPT/UEFI on a copy.
 *
 * Partition tables are parsed by our own length-checked parsers (fuzzed) and cross-checked
 * with libblkid/libfdisk; ext2/3/4 root filesystems are read (and for mbr2gpt, /etc/fstab is
 * rewritten) through libext2fs at the partition's byte offset, so nothing is ever mounted.
 *
 * Errors: -EINVAL "BadParameter" bad arguments or malformed table, -EBADMSG CRC/signature
 * mismatch, -ENOENT missing file, -EEXIST destination exists, -ENOTSUP a layout we refuse to
 * convert (the message says why), -ENOSPC no room for an ESP (the message says where space must
 * come from), -EIO I/O or library failure. */
#pragma once

#include <stdbool.h>
#include <stdint.h>

#include <opencvm/util.h>

/* ---- partition tables ------------------------------------------------------------------- */
#define CVM_MBR_SECTOR 512u
#define CVM_GPT_HEADER_MIN 92u
#define CVM_GPT_MAX_ENTRIES 1024u   /* we refuse larger arrays (spec minimum is 128) */
#define CVM_PT_MAX_PARTS 128u       /* partitions we report (GPT entries in use, MBR incl. logical) */
#define CVM_MBR_MAX_LOGICAL 60u     /* EBR chain length we follow before calling it a loop */

enum cvm_pt_kind { CVM_PT_NONE, CVM_PT_MBR, CVM_PT_GPT };
CVM_EXPORT const char *cvm_pt_kind_name(enum cvm_pt_kind k); /* "none" | "mbr" | "gpt" */

/* One MBR partition table entry (primary table or an EBR). */
struct cvm_mbr_entry {
	uint8_t status;    /* 0x80 = active (bootable) */
	uint8_t type;
	uint32_t start_lba;
	uint32_t nsectors;
};
/* A parsed MBR sector. Entries with type 0 are kept (slot positions matter), nsectors 0 too. */
struct cvm_mbr {
	uint32_t disk_signature;
	struct cvm_mbr_entry e[4];
};
/* buf is at least one 512-byte sector; checks the 0x55AA signature and that every used entry
 * has a non-zero start and length (an entry with type != 0 and nsectors == 0 is malformed). */
CVM_EXPORT int cvm_mbr_parse(const uint8_t *buf, size_t len, struct cvm_mbr *out,
			     struct cvm_err *err);

struct cvm_gpt_header {
	uint32_t header_size;
	uint64_t my_lba, alternate_lba;
	uint64_t first_usable, last_usable;
	uint8_t disk_guid[16];
	uint64_t entries_lba;
	uint32_t num_entries, entry_size;
	uint32_t entries_crc;
};
/* buf is one logical sector (sector_size bytes, 512 or 4096) holding a GPT header: checks the
 * signature, revision 1.0, header_size in [92, sector_size], the header CRC32, entry_size a
 * multiple of 128 (<= 4096), num_entries <= CVM_GPT_MAX_ENTRIES, first_usable <= last_usable. */
CVM_EXPORT int cvm_gpt_header_parse(const uint8_t *buf, size_t len, uint32_t sector_size,
				    struct cvm_gpt_header *out, struct cvm_err *err);

struct cvm_part {
	unsigned number;        /* 1-based, as Linux names them (sda1); GPT: entry index + 1 */
	uint64_t start_lba;     /* in logical sectors */
	uint64_t nsectors;
	/* MBR */
	uint8_t mbr_type;
	bool bootable;
	bool logical;           /* inside an extended partition */
	/* GPT */
	uint8_t type_guid[16];  /* on-disk byte order (mixed endian) */
	uint8_t part_guid[16];
	uint64_t attrs;
	char name[72 * 3 + 1];  /* UTF-8 of the UTF-16LE name */
};
/* buf holds the whole entry array (num_entries * entry_size bytes, CRC-checked against the
 * header). Entries with a zero type GUID are skipped. Every used entry must lie within
 * [first_usable, last_usable] with first <= last, and no two may overlap. */
CVM_EXPORT int cvm_gpt_entries_parse(const struct cvm_gpt_header *h, const uint8_t *buf,
				     size_t len, struct cvm_part *parts, size_t max, size_t *n,
				     struct cvm_err *err);

struct cvm_ptable {
	enum cvm_pt_kind kind;
	uint32_t sector_size;     /* logical sector size the table was found at */
	uint64_t disk_bytes;
	uint32_t mbr_signature;   /* MBR disk signature (MBR disks) */
	uint8_t disk_guid[16];    /* GPT */
	uint64_t first_usable, last_usable;
	bool backup_gpt_ok;       /* GPT: backup header present, valid, and matching */
	bool hybrid_mbr;          /* GPT whose MBR has entries besides the 0xEE one */
	size_t nparts;
	struct cvm_part parts[CVM_PT_MAX_PARTS];
};
/* Read and validate the partition table of a raw image (or block device): MBR with its EBR
 * chain, or protective MBR + primary GPT (backup checked; a corrupt primary with a valid
 * backup is reported as an error naming it). Partitions must lie inside the disk. */
CVM_EXPORT int cvm_ptable_read(const char *path, struct cvm_ptable *out, struct cvm_err *err);
CVM_EXPORT int cvm_ptable_read_fd(int fd, struct cvm_ptable *out, struct cvm_err *err);

/* Well-known partition kinds. */
CVM_EXPORT bool cvm_part_is_esp(const struct cvm_ptable *t, const struct cvm_part *p);
CVM_EXPORT bool cvm_part_is_bios_boot(const struct cvm_ptable *t, const struct cvm_part *p);
CVM_EXPORT bool cvm_part_is_ldm(const struct cvm_ptable *t, const struct cvm_part *p);
CVM_EXPORT bool cvm_part_is_extended(const struct cvm_ptable *t, const struct cvm_part *p);
/* "C12A7328-F81F-11D2-BA4B-00A0C93EC93B" form of an on-disk GUID; out >= 37 bytes. */
CVM_EXPORT void cvm_guid_format(const uint8_t g[16], char out[37]);
CVM_EXPORT int cvm_guid_parse(const char *s, uint8_t out[16], struct cvm_err *err);

/* ---- assessment ------------------------------------------------------------------------- */
/* The target's OS-disk limit (4 TiB, the largest OS disk a confidential VM boots from). */
#define CVM_MIGRATE_MAX_OS_DISK (4ull << 40)

enum cvm_check_status { CVM_CHECK_PASS, CVM_CHECK_WARN, CVM_CHECK_FAIL };
CVM_EXPORT const char *cvm_check_status_name(enum cvm_check_status s); /* "pass"|"warn"|"fail" */

enum cvm_verdict { CVM_VERDICT_READY, CVM_VERDICT_READY_WITH_REMEDIATION, CVM_VERDICT_NOT_READY };
/* "ready" | "ready-with-remediation" | "not-ready" */
CVM_EXPORT const char *cvm_verdict_name(enum cvm_verdict v);

struct cvm_finding {
	char check[32];        /* "partition-table", "dynamic-disk", ... */
	enum cvm_check_status status;
	char *detail;          /* what was found */
	char *remediation;     /* the exact step; "" when status is pass */
};

/* Facts the checks were made from (also in the JSON report under "facts"). */
struct cvm_assess_facts {
	char format[16];           /* "raw" | "qcow2" | ... (as qemu-img names it) */
	uint64_t disk_bytes;
	enum cvm_pt_kind table;
	char firmware[8];          /* "uefi" | "bios" | "unknown" */
	int esp_part, root_part;   /* partition numbers, 0 = none */
	char os_id[32], os_version[32], os_pretty[128];
	char kernel[64];           /* newest kernel version with a /boot/config-* */
};

struct cvm_assess_report {
	enum cvm_verdict verdict;
	struct cvm_assess_facts facts;
	size_t n;
	struct cvm_finding *findings;
};
CVM_EXPORT void cvm_assess_report_clear(struct cvm_assess_report *r);

struct cvm_assess_opts {
	uint64_t max_os_disk;      /* 0 = CVM_MIGRATE_MAX_OS_DISK */
	const char *tmpdir;        /* where non-raw images are converted; NULL = $TMPDIR or /tmp */
};

/* Assess one disk image. Images in other formats than raw are converted to a sparse raw
 * temporary with qemu-img first. Findings always include, in this order: partition-table,
 * dynamic-disk, os-disk-size, firmware, filesystems, fstab-device-names, os-supported,
 * kernel-sev-snp, kernel-tdx, virtio-drivers, initramfs, secure-boot-loader, tpm-tools.
 * Verdict: any fail -> not-ready, else any warn -> ready-with-remediation, else ready. */
CVM_EXPORT int cvm_migrate_assess_image(const char *path, const struct cvm_assess_opts *opts,
					struct cvm_assess_report *out, struct cvm_err *err);
/* {"image":..,"verdict":..,"facts":{..},"findings":[{check,status,detail,remediation}]};
 * *json is malloc'd, pretty-printed. */
CVM_EXPORT int cvm_assess_report_json(const struct cvm_assess_report *r, const char *image,
				      char **json, struct cvm_err *err);

/* ---- MBR -> GPT ------------------------------------------------------------------------- */
#define CVM_ESP_SIZE (100ull << 20)  /* 100 MiB FAT32 ESP */

struct cvm_mbr2gpt_opts {
	/* When no free gap holds an ESP, append the space at the end of the copy (the target
	 * disk is that much larger). Without it such disks are refused with -ENOSPC. */
	bool grow;
	bool rewrite_fstab;        /* default true via cvm_mbr2gpt_opts_init; also root=/resume=
				    * device names on kernel command lines (grub.cfg, /etc/default/grub) */
	bool dry_run;              /* plan only; out is not written */
};
CVM_EXPORT void cvm_mbr2gpt_opts_init(struct cvm_mbr2gpt_opts *o);

struct cvm_mbr2gpt_result {
	char plan[2048];           /* what was (or would be) done, one step per line */
	uint64_t out_bytes;
	unsigned esp_number;       /* GPT entry number of the new ESP */
	uint64_t esp_start_lba, esp_nsectors;
	unsigned fstab_rewritten;  /* entries changed */
	unsigned cmdline_rewritten; /* root=/resume= device names in grub.cfg, /etc/default/grub */
	int fstab_part;            /* partition whose /etc/fstab changed, 0 = none */
	bool checksums_equal;      /* every partition's data equal to the source (before fstab) */
	bool bootloader_installed; /* shim + signed grub from the image's packages on the ESP */
};

/* Convert the MBR image `in` (raw) into a GPT image at `out` (-EEXIST when it exists): same
 * partition extents and filesystem UUIDs, a new FAT32 ESP, protective MBR, primary and backup
 * GPT with correct CRCs, verified by re-reading with our parser and libfdisk; partition data
 * compared by SHA-256 before /etc/fstab is rewritten to UUID= through libext2fs. When the
 * image carries Debian/Ubuntu's signed shim and grub (shim-signed, grub-efi-amd64-signed), they
 * are copied onto the ESP (EFI/BOOT/BOOTX64.EFI + EFI/<os>/) with a grub.cfg that loads
 * /boot/grub/grub.cfg by filesystem UUID; otherwise the plan names the packages. Refuses
 * (-ENOTSUP, reason in err) GPT inputs, LDM, extended partitions whose logical partitions
 * would not keep their numbers, 4K-sector tables, and partitions past 2^32 sectors. */
CVM_EXPORT int cvm_mbr2gpt(const char *in, const char *out, const struct cvm_mbr2gpt_opts *opts,
			   struct cvm_mbr2gpt_result *res, struct cvm_err *err);

/* ---- replication -------------------------------------------------------------------------
 * A source agent sends a disk image to a target over TLS 1.3 with mutual authentication
 * (both sides present certificates from the configured CA). The first pass copies every block
 * that differs from what the target holds (holes of a new sparse target count as held); later
 * passes send only blocks whose SHA-256 changed. Each block travels with its hash and the
 * target verifies it before writing (end to end); blocks are zstd-compressed when that helps.
 *
 * Both sides keep a state file: a header (generation id, pass, cursor) and one SHA-256 per
 * block of what the target durably holds. The target fsyncs data, then hashes, then the
 * cursor before acknowledging a SYNC; the source records hashes only for acknowledged blocks.
 * Either side killed at any point resumes from the last acknowledged cursor; if the two states
 * disagree (different generation or pass) the source fetches the target's hashes (zstd) and
 * compares against those, so nothing is trusted that the target cannot vouch for. The target
 * lists each block in "<state>.inflight" before writing it; after an interruption it marks
 * those blocks' hashes unknown and flags its state stale (HELLO_ACK), so the source refetches
 * the hashes before resuming from the cursor (a block written but never acknowledged cannot
 * hide behind the source's older record of it). Memory is
 * bounded (16 MiB read batch, one block of each buffer, hashes of the sync window),
 * independent of the disk size.
 *
 * Wire frames: 12-byte header "CVR1" | type u8 | flags u8 | reserved u16 (0) | length u32 LE,
 * then `length` payload bytes (<= CVM_REPL_MAX_PAYLOAD). All integers little-endian. */
#define CVM_REPL_MAGIC "CVR1"
#define CVM_REPL_HDR 12u
#define CVM_REPL_MAX_BLOCK (1u << 20)
#define CVM_REPL_MIN_BLOCK 4096u
#define CVM_REPL_DEFAULT_BLOCK (64u << 10)
#define CVM_REPL_MAX_PAYLOAD (CVM_REPL_MAX_BLOCK + 64u)
#define CVM_REPL_MANIFEST_MAX 1024u  /* hashes per MANIFEST frame */
#define CVM_REPL_VERSION 1u

enum cvm_repl_type {
	CVM_REPL_HELLO = 1,        /* source -> target: struct cvm_repl_hello */
	CVM_REPL_HELLO_ACK = 2,    /* target -> source: struct cvm_repl_hello (target's view) */
	CVM_REPL_MANIFEST_REQ = 3, /* source -> target: empty */
	CVM_REPL_MANIFEST = 4,     /* target -> source: first u64 | count u32 | count*32 hashes;
				    * count 0 ends the manifest */
	CVM_REPL_BLOCK = 5,        /* source -> target: index u64 | sha256[32] | data */
	CVM_REPL_SYNC = 6,         /* source -> target: upto u64 (blocks below are all sent) */
	CVM_REPL_ACK = 7,          /* target -> source: upto u64 (durable) */
	CVM_REPL_DONE = 8,         /* source -> target: pass u64 completed; ACK carries pass+1 */
	CVM_REPL_ERROR = 9,        /* either way: UTF-8 reason (<= 512 bytes) */
};
#define CVM_REPL_F_ZSTD 0x01u     /* payload data part is one zstd frame */

struct cvm_repl_frame {
	uint8_t type, flags;
	uint32_t len;
	const uint8_t *payload;   /* points into the parsed buffer */
};
/* Parse one frame from buf (which may hold more); *consumed = header + payload. -EAGAIN when
 * buf holds only part of a frame (len says nothing about validity yet), -EBADMSG otherwise. */
CVM_EXPORT int cvm_repl_frame_parse(const uint8_t *buf, size_t len, struct cvm_repl_frame *f,
				    size_t *consumed, struct cvm_err *err);
/* Header for a frame of `len` payload bytes; out holds CVM_REPL_HDR bytes. */
CVM_EXPORT int cvm_repl_frame_header(uint8_t type, uint8_t flags, size_t len, uint8_t *out,
				     struct cvm_err *err);

struct cvm_repl_hello {
	uint32_t version, block_size;
	uint64_t disk_size;
	uint8_t gen[16];
	uint64_t pass, cursor;
	uint32_t flags;           /* CVM_REPL_HELLO_STALE (target only) */
};
#define CVM_REPL_HELLO_LEN 52u
/* The target was interrupted with blocks written but not yet acknowledged; it marked their
 * hashes unknown, and the source must fetch the hashes before trusting its own copy. */
#define CVM_REPL_HELLO_STALE 0x1u
CVM_EXPORT void cvm_repl_hello_put(const struct cvm_repl_hello *h, uint8_t out[CVM_REPL_HELLO_LEN]);
/* Checks version, block size (power of two in [4 KiB, 1 MiB]), disk size (non-zero, at most
 * 2^50 bytes) and cursor <= number of blocks. */
CVM_EXPORT int cvm_repl_hello_parse(const uint8_t *buf, size_t len, struct cvm_repl_hello *h,
				    struct cvm_err *err);

struct cvm_repl_block {
	uint64_t index;
	const uint8_t *hash;      /* 32 bytes */
	const uint8_t *data;
	size_t len;               /* of data as carried (compressed or not) */
};
CVM_EXPORT int cvm_repl_block_parse(const uint8_t *buf, size_t len, struct cvm_repl_block *b,
				    struct cvm_err *err);
struct cvm_repl_manifest {
	uint64_t first;
	uint32_t count;
	const uint8_t *hashes;    /* count * 32 bytes */
};
CVM_EXPORT int cvm_repl_manifest_parse(const uint8_t *buf, size_t len,
				       struct cvm_repl_manifest *m, struct cvm_err *err);
/* SYNC, ACK, DONE: exactly 8 bytes. */
CVM_EXPORT int cvm_repl_u64_parse(const uint8_t *buf, size_t len, uint64_t *v,
				  struct cvm_err *err);

struct cvm_repl_tls {
	const char *cert, *key;   /* PEM: own certificate chain and private key */
	const char *ca;           /* PEM: CA that must have issued the peer's certificate */
	const char *peer_name;    /* name the peer certificate must carry (DNS SAN/CN); NULL =
				   * any certificate from the CA */
};

struct cvm_repl_stats {
	uint64_t blocks_total, blocks_sent, blocks_zero_skipped;
	uint64_t blocks_read;     /* read and hashed at the source (dirty blocks only, VM sources) */
	bool dirty_bitmap;        /* the pass was limited to a dirty bitmap's blocks */
	uint64_t bytes_changed;   /* raw bytes of the blocks sent */
	uint64_t bytes_payload;   /* frame bytes written + read (after compression) */
	uint64_t bytes_wire;      /* TCP bytes sent + received on the connection (TLS included) */
	uint64_t resumed_from;    /* block the pass (re)started at */
	bool manifest_fetched;    /* states disagreed: the target's hashes were fetched */
	uint64_t pass;            /* passes completed after this run */
	uint64_t elapsed_ms;
};

/* Called about 4 times a second from the sending thread. */
typedef void (*cvm_repl_progress_fn)(void *ctx, uint64_t block, uint64_t nblocks,
				     const struct cvm_repl_stats *st);

struct cvm_repl_send_opts {
	const char *image;        /* raw image (regular file or block device), read only */
	/* Or a running QEMU VM, agentless: its QMP socket and the block node of the disk. A
	 * dirty bitmap on the node limits later passes to the blocks written since the last
	 * successful pass; the data is read over an NBD export (see vmsrc.c). */
	const char *qmp, *node;
	const char *state;        /* source state file (created on first use) */
	const char *connect;      /* host:port of the target */
	struct cvm_repl_tls tls;
	uint32_t block_size;      /* 0 = CVM_REPL_DEFAULT_BLOCK (first pass fixes it) */
	int zstd_level;           /* 0 = 1 (fast); < 0 = no compression */
	uint64_t sync_bytes;      /* 0 = 64 MiB: data between SYNCs (bounds what a crash resends) */
	cvm_repl_progress_fn progress;
	void *progress_ctx;
};
/* One pass: connect, agree on state, send changed blocks, complete the pass. */
CVM_EXPORT int cvm_repl_send(const struct cvm_repl_send_opts *o, struct cvm_repl_stats *st,
			     struct cvm_err *err);

struct cvm_repl_serve_opts {
	const char *target;       /* raw target image (created sparse when missing) */
	/* Or, instead of target: an existing complete confidential disk (disk.h) whose volume is
	 * exactly the source disk's size. Blocks are encrypted with its volume key before they
	 * are written (cvm_disk_writer); plaintext never reaches the file. disk_secret is its
	 * keyslot secret (cvm_disk_unlock_secret), borrowed for the duration of the call. */
	const char *confidential_disk;
	const struct cvm_secret *disk_secret;
	const char *state;        /* target state file */
	const char *listen;       /* host:port, e.g. 127.0.0.1:9443 */
	struct cvm_repl_tls tls;
	unsigned sessions;        /* serve this many sessions then return; 0 = forever */
	const char *ready_file;   /* written with the bound port once listening (may be NULL) */
};
CVM_EXPORT int cvm_repl_serve(const struct cvm_repl_serve_opts *o, struct cvm_repl_stats *last,
			      struct cvm_err *err);

struct cvm_repl_state_info {
	char role;                /* 'S' source, 'T' target */
	bool stale;               /* target: hashes invalidated after an interruption */
	uint32_t block_size;
	uint64_t disk_size, nblocks;
	uint8_t gen[16];
	uint64_t pass, cursor;
	int64_t updated;          /* unix seconds of the last checkpoint (RPO) */
};
CVM_EXPORT int cvm_repl_state_read(const char *path, struct cvm_repl_state_info *out,
				   struct cvm_err *err);

/* ---- projects and servers (persisted through store.h, every change audited) --------------
 * A project holds servers; each server moves through the phases below. Every transition is
 * checked against the table (cvm_mig_phase_allowed) and committed in one transaction with its
 * audit record (operation "migrate/servers/<verb>", detail JSON with project, server, from,
 * to, reason). A server whose last assessment is not-ready cannot start replicating. */
enum cvm_mig_phase {
	CVM_MIG_DISCOVERED, CVM_MIG_ASSESSED, CVM_MIG_REMEDIATED, CVM_MIG_REPLICATING,
	CVM_MIG_TEST_MIGRATED, CVM_MIG_CUTOVER_READY, CVM_MIG_CUT_OVER, CVM_MIG_DECOMMISSIONED,
	CVM_MIG_FAILED, CVM_MIG_ROLLED_BACK,
};
/* "discovered" "assessed" "remediated" "replicating" "test-migrated" "cutover-ready"
 * "cut-over" "decommissioned" "failed" "rolled-back" */
CVM_EXPORT const char *cvm_mig_phase_name(enum cvm_mig_phase p);
CVM_EXPORT int cvm_mig_phase_parse(const char *s, enum cvm_mig_phase *out, struct cvm_err *err);
CVM_EXPORT bool cvm_mig_phase_allowed(enum cvm_mig_phase from, enum cvm_mig_phase to);

struct cvm_mig_server {
	char *project, *name;
	char *source;             /* disk image path */
	enum cvm_mig_phase phase;
	enum cvm_mig_phase failed_from; /* phase a failed/rolled-back server left */
	char *verdict;            /* last assessment verdict, NULL before the first */
	char *reason;             /* reason given with the last transition */
	int64_t created, updated;
};
CVM_EXPORT void cvm_mig_server_clear(struct cvm_mig_server *s);
CVM_EXPORT void cvm_mig_server_list_free(struct cvm_mig_server *list, size_t n);

struct cvm_store;
/* Names: 1..80 of [A-Za-z0-9_.-]. principal (nullable) goes into the audit records. */
CVM_EXPORT int cvm_mig_project_create(struct cvm_store *s, const char *name,
				      const char *principal, struct cvm_err *err);
CVM_EXPORT int cvm_mig_server_add(struct cvm_store *s, const char *project, const char *name,
				  const char *source, const char *principal, struct cvm_err *err);
/* Assess the server's source image, store the verdict and report, and move it to assessed
 * (from discovered, assessed, remediated or failed). *report is the JSON (malloc'd). */
CVM_EXPORT int cvm_mig_server_assess(struct cvm_store *s, const char *project, const char *name,
				     const struct cvm_assess_opts *opts, const char *principal,
				     char **report, struct cvm_err *err);
/* Move to `to` when the table allows it; -EPERM "Forbidden" with the allowed next phases
 * otherwise. */
CVM_EXPORT int cvm_mig_server_transition(struct cvm_store *s, const char *project,
					 const char *name, enum cvm_mig_phase to,
					 const char *reason, const char *principal,
					 struct cvm_err *err);
CVM_EXPORT int cvm_mig_server_get(struct cvm_store *s, const char *project, const char *name,
				  struct cvm_mig_server *out, struct cvm_err *err);
/* Ordered by name; -ENOENT when the project does not exist. */
CVM_EXPORT int cvm_mig_server_list(struct cvm_store *s, const char *project,
				   struct cvm_mig_server **out, size_t *n, struct cvm_err *err);

/* ---- connectivity (cvm migrate check-network) --------------------------------------------
 * From the source side: TCP reachability of the target's ports (the seed matrix: 443 key and
 * attestation service, 9443 replication, 22 SSH, 5985 WinRM) and name resolution of private
 * endpoints. A port passes when a TCP connection completes within the timeout. */
struct cvm_netcheck {
	char check[96];           /* "tcp 10.0.0.2:443 (key/attestation service)", "dns kv.internal" */
	bool ok;
	char detail[192];         /* "connected", "refused", "timed out after 2000 ms", addresses */
	uint64_t ms;
};
CVM_EXPORT int cvm_migrate_check_network(const char *host, const uint16_t *ports, size_t nports,
					 const char *const *names, size_t nnames,
					 unsigned timeout_ms, struct cvm_netcheck **out, size_t *n,
					 struct cvm_err *err);

/* ---- cutover (cvm migrate cutover) -------------------------------------------------------
 * For a server in phase cutover-ready whose source is a running QEMU VM: freeze the source
 * (QMP stop), final delta pass (dirty bitmap, VM paused so the copy is consistent), validate
 * the replica (its readiness verdict must not be not-ready and its firmware must be UEFI; then
 * the optional validator program, run as `PROGRAM REPLICA`, must exit 0; then the optional
 * check of the target VM must pass), switch traffic (the
 * server's name in the endpoints file, a JSON object name -> address, moves to the target
 * address; written atomically), then mark cut-over and decommission the source (QMP quit,
 * phase decommissioned). Any failure after the freeze rolls back: the source resumes (QMP
 * cont), the endpoints stay, the phase becomes rolled-back with the reason. Every step is
 * timed; the downtime is freeze to switch (or to resume on rollback). Transitions are audited
 * with the timings in their reason. */
struct cvm_cutover_opts {
	const char *project, *server, *principal;
	struct cvm_repl_send_opts repl;   /* qmp, node, state, connect, tls of the replication */
	const char *replica;              /* the replica image as the validator can read it */
	const char *validator;            /* optional program; NULL = built-in checks only */
	const char *endpoints;            /* JSON name -> address file; NULL = no switch */
	const char *name, *target_addr;   /* entry to move and where it moves */
	struct cvm_assess_opts assess;
	/* Optional last check, of the target confidential VM started from the replica (the CLI
	 * runs `vm validate`'s checks: attestation of its current boot, launch measurement
	 * against the pinned reference, disk encryption with its DES, security type, Secure
	 * Boot, vTPM). Negative with err naming what failed: the cutover rolls back. */
	int (*check_target)(void *ctx, struct cvm_err *err);
	void *check_target_ctx;
};
struct cvm_cutover_result {
	bool cut_over, rolled_back;
	char reason[384];                 /* why it rolled back */
	uint64_t freeze_ms, sync_ms, validate_ms, switch_ms, downtime_ms;
	struct cvm_repl_stats sync;
};
/* 0 when cut over; -ECANCELED when validation failed and the rollback succeeded (res says
 * why); other errors when even the rollback failed or the server was not cutover-ready. */
CVM_EXPORT int cvm_migrate_cutover(struct cvm_store *s, const struct cvm_cutover_opts *o,
				   struct cvm_cutover_result *res, struct cvm_err *err);

/* ---- test migration (cvm migrate test) ---------------------------------------------------
 * Boot a copy-on-write view of the replica (the replica itself is never written) with UEFI
 * firmware under QEMU inside a network namespace created for the test (loopback only: no route
 * to the source network; the guest's user-mode network is restricted too), run the checklist,
 * record it, and remove everything it created. Checklist: isolated (the namespace has no
 * route out), boots (the serial console matches `expect` within the timeout), secure-boot
 * (the kernel reports Secure Boot enabled, when requested), fstab-by-uuid and firmware (the
 * replica's readiness findings), service (a request to guest port `service_port`, forwarded
 * to the namespace's loopback, gets a reply, when set). A server in phase replicating moves to
 * test-migrated when every check passes, to failed otherwise (reason: the failed checks). */
struct cvm_testmig_opts {
	const char *project, *server, *principal;
	const char *replica;          /* raw replica image */
	const char *ovmf_code, *ovmf_vars; /* firmware (vars are copied, never written) */
	bool secure_boot;             /* machine with SMM and secure flash, check SB is on */
	unsigned timeout_s;           /* boot wait; 0 = 600 */
	const char *expect;           /* extended regex for "booted"; NULL = "login:|Reached target" */
	uint16_t service_port;        /* guest TCP port that must answer; 0 = none */
};
struct cvm_testmig_check {
	char name[24];
	bool ok;
	char detail[224];
};
struct cvm_testmig_result {
	bool passed;
	uint64_t boot_ms;
	size_t n;
	struct cvm_testmig_check checks[8];
};
CVM_EXPORT int cvm_migrate_test(struct cvm_store *s, const struct cvm_testmig_opts *o,
				struct cvm_testmig_result *res, struct cvm_err *err);
