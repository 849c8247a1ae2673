/* SPDX-License-Identifier: Apache-2.0 */
/* disk: confidential disks. A confidential disk is a raw (sparse) image whose content is a
 * standard LUKS2 volume (AES-256-XTS, xts-plain64, 4096-byte sectors where the source allows,
 * 512 otherwise). libcryptsetup writes and validates the header, keyslots and tokens; our own
 * parallel OpenSSL engine encrypts the data area, byte-identical to dm-crypt.
 *
 * Unlock chain: keyslot 0's passphrase is a random 256-bit secret. The secret is wrapped by a
 * key-service key (RSA-OAEP-256 or A256KW) and stored in a LUKS2 token of type "opencvm-hsm":
 *   {"type":"opencvm-hsm","keyslots":["0"],"key_url":"https://kv/keys/name/version",
 *    "alg":"RSA-OAEP-256","wrapped":"<b64url>","des":"<DES id>","version":1}
 * Whoever can unwrap it (the attested guest after key release, or the DES identity holding
 * the Crypto Service Encryption User role) gets the secret; stock `cryptsetup open
 * --key-file <secret>` accepts it.
 *
 * Interrupted work: while an image is being encrypted it lives at "<dst>.partial" and carries
 * a LUKS2 token of type "opencvm-progress" with an fsync'd checkpoint. Rerunning the same
 * encryption resumes from the checkpoint (bytes identical to an uninterrupted run); the token
 * is removed and the file renamed to <dst> only when every sector is written. Opening or
 * decrypting an image that still carries the progress token is refused (-EBUSY).
 *
 * Errors: -EINVAL "BadParameter" bad arguments or malformed token/header, -ENOENT missing file
 * or token, -EEXIST destination exists, -EBUSY image incomplete, -EPERM secret does not open
 * the keyslot, -ENOTSUP unsupported cipher/layout, -EIO I/O or libcryptsetup failure. */
#pragma once

#include <stdbool.h>
#include <stdint.h>

#include <opencvm/util.h>

#define CVM_DISK_SECRET_LEN 32       /* keyslot passphrase: 256 random bits */
#define CVM_DISK_VOLUME_KEY_LEN 64   /* AES-256-XTS: two 256-bit keys */
#define CVM_DISK_TOKEN_HSM "opencvm-hsm"
#define CVM_DISK_TOKEN_PROGRESS "opencvm-progress"
/* Header + keyslot area in front of the data (LUKS2's default, fixed so layouts are stable). */
#define CVM_DISK_DATA_OFFSET (16u * 1024u * 1024u)

/* Wrapping goes through the key service; this module only sees this interface.
 * wrap: key_url is a key URL with or without version; the implementation wraps `in` with the
 *   current (or named) version and returns the wrapped bytes as base64url and the full kid
 *   (with version) it used. unwrap: inverse, for the kid recorded in the token.
 * Both return 0 or a negative errno and fill err; outputs are malloc'd / cvm_secret. */
struct cvm_disk_keywrap {
	int (*wrap)(void *ctx, const char *key_url, const char *alg, const struct cvm_secret *in,
		    char **wrapped_b64url, char **kid_used, struct cvm_err *err);
	int (*unwrap)(void *ctx, const char *kid, const char *alg, const char *wrapped_b64url,
		      struct cvm_secret **out, struct cvm_err *err);
	void *ctx;
};

enum cvm_disk_kind { CVM_DISK_KIND_OS, CVM_DISK_KIND_DATA, CVM_DISK_KIND_TEMP, CVM_DISK_KIND_VMGS };
CVM_EXPORT const char *cvm_disk_kind_name(enum cvm_disk_kind k); /* "os" | "data" | ... */
CVM_EXPORT int cvm_disk_kind_parse(const char *s, enum cvm_disk_kind *out, struct cvm_err *err);

/* ---- the opencvm-hsm token -------------------------------------------------------------- */
struct cvm_disk_hsm_token {
	int keyslot;    /* 0..31 */
	char *key_url;  /* kid with version */
	char *alg;      /* "RSA-OAEP-256" | "A256KW" */
	char *wrapped;  /* base64url of the wrapped secret */
	char *des;      /* Disk Encryption Set id */
	int version;    /* 1 */
};
/* Strict parser: every field required, no unknown fields, lengths checked; errors name the
 * field ("opencvm-hsm token: alg: must be one of RSA-OAEP-256, A256KW"). */
CVM_EXPORT int cvm_disk_hsm_token_parse(const uint8_t *buf, size_t len,
					struct cvm_disk_hsm_token *out, struct cvm_err *err);
/* Serialize (validating the fields the same way); *json is malloc'd. */
CVM_EXPORT int cvm_disk_hsm_token_json(const struct cvm_disk_hsm_token *t, char **json,
				       struct cvm_err *err);
CVM_EXPORT void cvm_disk_hsm_token_clear(struct cvm_disk_hsm_token *t);
/* A key URL the token accepts: http(s)://host[/prefix]/keys/<name>/<version>. */
CVM_EXPORT bool cvm_disk_key_url_valid(const char *url, bool require_version);

/* ---- options ---------------------------------------------------------------------------- */
/* Called from the calling thread only (never from workers), about 4 times a second. */
typedef void (*cvm_disk_progress_fn)(void *ctx, uint64_t done, uint64_t total);

struct cvm_disk_wrap_params {
	const struct cvm_disk_keywrap *kw;
	const char *key_url;  /* DES key, with or without version */
	const char *alg;      /* "RSA-OAEP-256" | "A256KW" */
	const char *des;      /* DES id recorded in the token */
};

struct cvm_disk_opts {
	enum cvm_disk_kind kind;  /* recorded as the LUKS2 subsystem "opencvm-<kind>"; default
				   * (zero, or opts NULL) is os */
	const char *label;        /* LUKS2 label (e.g. the disk name); NULL = none */
	uint32_t sector_size;     /* 512 or 4096; 0 = auto (see cvm_disk_encrypt_image) */
	unsigned threads;         /* workers; 0 = online CPUs */
	size_t chunk_size;        /* bytes per work item; 0 = 4 MiB; multiple of 4096 */
	cvm_disk_progress_fn progress;
	void *progress_ctx;
	/* Checkpoint interval in milliseconds (0 = 1000). */
	unsigned checkpoint_ms;
	/* encrypt only: leave chunks that are entirely holes in a sparse source unwritten (holes in
	 * the image too). Faster and the image stays sparse, but (1) the guest reads those sectors
	 * as pseudorandom bytes (zeros decrypted), not zeros, so only use it when nothing relies on
	 * never-written sectors reading as zeros (a file system's free space, not a partition table
	 * or metadata area the source left sparse); (2) the host can see which regions of the source
	 * were empty. Default off: every sector is encrypted and the ciphertext reveals nothing. */
	bool skip_holes;
	/* encrypt only: leave the blocks that ext2/3/4 file systems in the source do not use
	 * unwritten (the whole source if it is one file system, else each partition libblkid finds;
	 * everything else — partition tables, other file systems, metadata — is encrypted whole).
	 * The guest then reads those free blocks as pseudorandom bytes, which ext4 never looks at;
	 * deleted files' old contents in free blocks are not carried over; the host can see which
	 * blocks are free. File systems not cleanly unmounted are refused (run e2fsck first). */
	bool used_only;
	/* Tests only: use this volume key (64 bytes) instead of a random one, so two runs give the
	 * same ciphertext. Never set in production: the volume key must be fresh per disk. */
	const struct cvm_secret *volume_key;
};

/* ---- operations ------------------------------------------------------------------------- */
/* A new empty confidential disk of `size` bytes (the image size the VM sees; the unlocked
 * volume is size - CVM_DISK_DATA_OFFSET). The data area is left sparse: unwritten sectors read
 * as zeros on the host and as pseudorandom garbage in the guest, and the host can tell written
 * from never-written sectors (as with any LUKS volume on thin storage). Sector size 4096
 * unless opts say otherwise. size must be a multiple of the sector size and leave at least
 * 1 MiB of data. Fails with -EEXIST when path exists. No upper size limit. */
CVM_EXPORT int cvm_disk_create(const char *path, uint64_t size,
			       const struct cvm_disk_wrap_params *wp,
			       const struct cvm_disk_opts *opts, struct cvm_err *err);

/* A temp disk: same layout, but its secret is random, returned to the caller, never wrapped
 * or stored (no token). Recreate it at each boot. */
CVM_EXPORT int cvm_disk_create_temp(const char *path, uint64_t size,
				    const struct cvm_disk_opts *opts,
				    struct cvm_secret **secret, struct cvm_err *err);

/* Encrypt a raw image (regular file or block device) into a new confidential disk at dst
 * (size = CVM_DISK_DATA_OFFSET + source size). Every sector is encrypted, holes included, so
 * the ciphertext reveals nothing about the source's layout. The source is only ever read.
 * Sector size auto: 4096 when the source size is a multiple of 4096 and the source has no
 * MBR/GPT partition table (a table made for 512-byte LBAs would not be found behind 4096-byte
 * logical sectors), 512 otherwise. Work happens in "<dst>.partial"; when that file exists from
 * an interrupted run of the same source, the run resumes (it unwraps the secret through
 * wp->kw to get the volume key back; the interrupted run's sector and chunk size are kept
 * whatever opts say). qcow2, vmdk, vhdx, dynamic vhd and LUKS sources are
 * refused (-ENOTSUP / -EINVAL): convert to raw first (fixed VHD is raw plus a footer). */
CVM_EXPORT int cvm_disk_encrypt_image(const char *src, const char *dst,
				      const struct cvm_disk_wrap_params *wp,
				      const struct cvm_disk_opts *opts, struct cvm_err *err);

/* Full volume-key change (for a compromised key or secret): a new image at dst with a fresh
 * volume key and a fresh secret wrapped per wp, whose data is src's data re-encrypted in one
 * pass (decrypted and encrypted in memory; plaintext never reaches a file). src is any
 * complete LUKS2 aes-xts-plain64 image (ours or cryptsetup's) opened with passphrase; its
 * sector size is kept. Resumable exactly like cvm_disk_encrypt_image (<dst>.partial). The old
 * image is left alone: delete it once the new one is verified. Offline: the VM must not be
 * writing to src. */
CVM_EXPORT int cvm_disk_rekey(const char *src, const char *dst,
			      const struct cvm_secret *passphrase,
			      const struct cvm_disk_wrap_params *wp,
			      const struct cvm_disk_opts *opts, struct cvm_err *err);

/* Decrypt the data area of a LUKS2 AES-XTS image (ours or one cryptsetup made) into a new raw
 * file dst (-EEXIST when it exists), using the keyslot passphrase. Only threads, chunk_size,
 * progress and checkpoint_ms of opts are used (opts may be NULL). */
CVM_EXPORT int cvm_disk_decrypt_image(const char *src, const char *dst,
				      const struct cvm_secret *passphrase,
				      const struct cvm_disk_opts *opts, struct cvm_err *err);

/* Check an image without writing anything: a valid, complete LUKS2 header with a supported
 * layout, and a passphrase that opens a keyslot (libcryptsetup checks it against the volume key
 * digest). When src (the raw image it was made from) is given, also decrypt `samples` sectors
 * — the first, the last and evenly spread ones between (0 = 64) — and compare them with the
 * source: -EBADMSG naming the first sector that differs. */
CVM_EXPORT int cvm_disk_verify(const char *path, const struct cvm_secret *passphrase,
			       const char *src, unsigned samples, struct cvm_err *err);

/* Read the opencvm-hsm token of an image, unwrap the secret through kw, and check that it opens
 * the keyslot the token names. Refuses incomplete images (-EBUSY). */
CVM_EXPORT int cvm_disk_unlock_secret(const char *path, const struct cvm_disk_keywrap *kw,
				      struct cvm_secret **secret, struct cvm_err *err);

/* Re-wrap the secret for another key (or a new version of the same key): unwrap with the
 * current token, wrap with new_key_url/alg, add the new token, prove it unlocks, then remove
 * the old one. Only the LUKS2 metadata area is rewritten (under libcryptsetup's metadata lock),
 * never the data area, so it is safe while a VM uses the disk, as long as nothing inside the
 * guest rewrites the header at the same time. */
CVM_EXPORT int cvm_disk_rotate(const char *path, const struct cvm_disk_keywrap *kw,
			       const char *new_key_url, const char *alg, struct cvm_err *err);
/* Same, for callers that name the exact target (cvmd's automatic rotation): re-wraps of one
 * image are serialized across processes (a one-byte lock away from QEMU's lock bytes; -EBUSY
 * after 30 s), and when new_key_url is versioned and a token already names that version no new
 * token is written (if other tokens remain — a re-wrap killed before it removed the old one —
 * that token is proven first and the others removed). Once the new token is proven, every other
 * opencvm-hsm token of the keyslot is removed. Each header write is atomic (libcryptsetup), so
 * a kill at any point leaves a token for the old or the new version, or both.
 * *changed (nullable): whether a new token was written. */
CVM_EXPORT int cvm_disk_rotate_to(const char *path, const struct cvm_disk_keywrap *kw,
				  const char *new_key_url, const char *alg, bool *changed,
				  struct cvm_err *err);

struct cvm_disk_info {
	char uuid[40];
	char cipher[32];          /* "aes-xts-plain64" */
	uint32_t sector_size;
	uint64_t data_offset;     /* bytes */
	uint64_t data_size;       /* bytes of the encrypted volume */
	bool has_kind;
	enum cvm_disk_kind kind;
	char label[64];
	bool complete;            /* no opencvm-progress token */
	uint64_t progress_done;   /* when !complete */
	bool has_hsm_token;
	struct cvm_disk_hsm_token hsm; /* valid when has_hsm_token */
};
CVM_EXPORT int cvm_disk_info(const char *path, struct cvm_disk_info *out, struct cvm_err *err);
CVM_EXPORT void cvm_disk_info_clear(struct cvm_disk_info *info);

/* ---- Disk Encryption Sets and the disk registry (persisted through store.h) ---------------
 * A DES names the key that wraps its disks' secrets. key_url with a version pins that version;
 * without one the DES follows the key's latest version (rotation re-wraps disks when it
 * changes). Type "ConfidentialVmEncryptedWithPlatformKey" = key in the platform's own key
 * service instance, "ConfidentialVmEncryptedWithCustomerKey" = the customer's HSM key. The
 * identity (object id) uses the key on the DES's behalf: it must hold the Crypto Service
 * Encryption User role on the key (data actions keys/read, keys/wrap/action,
 * keys/unwrap/action); cvm_des_create asks the authz callback and refuses otherwise. */
enum cvm_des_type { CVM_DES_PLATFORM_KEY, CVM_DES_CUSTOMER_KEY };
CVM_EXPORT const char *cvm_des_type_name(enum cvm_des_type t);
/* Accepts the full Azure names and the short "platform" / "customer". */
CVM_EXPORT int cvm_des_type_parse(const char *s, enum cvm_des_type *out, struct cvm_err *err);

struct cvm_des {
	char *name;       /* 1..80 of [A-Za-z0-9_-] */
	char *key_url;    /* http(s)://host/keys/<name>[/<version>] */
	char *alg;        /* wrap algorithm: "RSA-OAEP-256" (RSA keys) | "A256KW" (oct keys) */
	enum cvm_des_type type;
	char *identity;   /* object id of the identity that uses the key */
	int64_t created, updated;
};
CVM_EXPORT void cvm_des_clear(struct cvm_des *d);
CVM_EXPORT bool cvm_des_follows_latest(const struct cvm_des *d);

/* Role check for a DES identity; wired by the daemon/CLI to the key service's RBAC. Returns 0
 * when identity may wrap and unwrap with key_url, -EPERM with a message naming the role
 * otherwise. */
struct cvm_des_authz {
	int (*check)(void *ctx, const char *identity, const char *key_url, struct cvm_err *err);
	void *ctx;
};

struct cvm_store;
/* Creates the tables on first use (module "disk", schema version 1). */
CVM_EXPORT int cvm_des_create(struct cvm_store *s, const struct cvm_des *in,
			      const struct cvm_des_authz *authz, struct cvm_err *err);
CVM_EXPORT int cvm_des_get(struct cvm_store *s, const char *name, struct cvm_des *out,
			   struct cvm_err *err);
/* *out is an array of n entries; free with cvm_des_list_free. Ordered by name. */
CVM_EXPORT int cvm_des_list(struct cvm_store *s, struct cvm_des **out, size_t *n,
			    struct cvm_err *err);
CVM_EXPORT void cvm_des_list_free(struct cvm_des *list, size_t n);
/* Refused (-EBUSY) while registered disks use the DES. */
CVM_EXPORT int cvm_des_delete(struct cvm_store *s, const char *name, struct cvm_err *err);

/* Registry of confidential disks: name -> image path, DES, kind, size, kid of the current
 * wrap. `cvm disk create/encrypt` register; rotate updates kid; list/show read it. */
struct cvm_disk_rec {
	char *name;       /* same rules as a DES name */
	char *path;
	char *des;        /* NULL for temp disks */
	enum cvm_disk_kind kind;
	uint64_t size;    /* image bytes */
	char *kid;        /* NULL for temp disks */
	int64_t created, updated;
};
CVM_EXPORT void cvm_disk_rec_clear(struct cvm_disk_rec *r);
/* -EEXIST when the name is taken, -ENOENT when rec->des names no DES. */
CVM_EXPORT int cvm_disk_rec_add(struct cvm_store *s, const struct cvm_disk_rec *rec,
				struct cvm_err *err);
CVM_EXPORT int cvm_disk_rec_get(struct cvm_store *s, const char *name, struct cvm_disk_rec *out,
				struct cvm_err *err);
/* des NULL = all disks. */
CVM_EXPORT int cvm_disk_rec_list(struct cvm_store *s, const char *des, struct cvm_disk_rec **out,
				 size_t *n, struct cvm_err *err);
CVM_EXPORT void cvm_disk_rec_list_free(struct cvm_disk_rec *list, size_t n);
CVM_EXPORT int cvm_disk_rec_delete(struct cvm_store *s, const char *name, struct cvm_err *err);

/* The CLI's `disk create` / `disk encrypt` in one call each: wrap with the named DES's key,
 * create the image at path (cvm_disk_create / cvm_disk_encrypt_image with opts), then register
 * it under name with the kid actually used. The name is checked first (-EEXIST before any
 * work); if registering still fails, the new image is removed again. */
CVM_EXPORT int cvm_disk_create_registered(struct cvm_store *s, const char *name,
					  const char *path, uint64_t size, const char *des,
					  const struct cvm_disk_keywrap *kw,
					  const struct cvm_disk_opts *opts, struct cvm_err *err);
CVM_EXPORT int cvm_disk_encrypt_registered(struct cvm_store *s, const char *name,
					   const char *src, const char *path, const char *des,
					   const struct cvm_disk_keywrap *kw,
					   const struct cvm_disk_opts *opts, struct cvm_err *err);

/* Rotate a registered disk to its DES's key (the latest version when the DES follows latest):
 * re-wrap via cvm_disk_rotate when the kid would change, then record the new kid. Sets
 * *rotated to whether anything changed. */
CVM_EXPORT int cvm_disk_rotate_registered(struct cvm_store *s, const char *name,
					  const struct cvm_disk_keywrap *kw, bool *rotated,
					  struct cvm_err *err);

/* ---- REST (src/disk/rest.c; part of cvmd, library cvm_disk_rest) ---------------------------
 * cvmd owns the DES objects and the disk registry; the cvm CLI creates and encrypts images on
 * its host and registers them here. Bearer authentication as the key routes
 * (cvm_hsm_rest_authenticate); RBAC with the key service's data actions on the DES key's scope
 * (/keys/{name}): DES create/delete keys/write/action (+ keys/create when a platform key is made),
 * DES and disk reads keys/read/action, disk register/update/delete keys/wrap/action (temp disks
 * and lists: at /keys). Every call is audited (operation "diskEncryptionSets/..." or
 * "disks/...") before the answer.
 *  PUT /opencvm/diskEncryptionSets/{name} {"encryptionType":"ConfidentialVmEncryptedWithCustomerKey"
 *      |"ConfidentialVmEncryptedWithPlatformKey"|"customer"|"platform","keyUrl"? (customer: a key
 *      of this service, with or without version; platform: absent, the key "des-<name>" is
 *      created on demand), "identity": principal object id, client id or name} -> 201 DES
 *  GET /opencvm/diskEncryptionSets[/{name}], DELETE /opencvm/diskEncryptionSets/{name} (204)
 *  PUT /opencvm/disks/{name} {"path","des"?,"kind","size","kid"?} -> 201; PATCH {"kid"?,"path"?,
 *      "size"?} (after rotate/rekey); GET /opencvm/disks[?des=D], GET|DELETE /opencvm/disks/{name}
 * DES JSON: {"name","id","keyUrl","alg","encryptionType","identity","followsLatest","created",
 * "updated"}; disk JSON: {"name","id","path","des","kind","size","kid","created","updated"}. */
struct cvm_hsm;
struct cvm_hsm_rest;
struct cvm_audit;
struct cvm_http_server;
struct cvm_disk_rest;
struct cvm_disk_rest_config {
	struct cvm_store *store;      /* borrowed, all must outlive the server */
	struct cvm_hsm *hsm;
	struct cvm_hsm_rest *hsm_rest; /* for request authentication */
	struct cvm_audit *audit;
};
CVM_EXPORT int cvm_disk_register_routes(const struct cvm_disk_rest_config *cfg,
					struct cvm_http_server *srv, struct cvm_disk_rest **out,
					struct cvm_err *err);
CVM_EXPORT void cvm_disk_rest_free(struct cvm_disk_rest *r); /* NULL-safe */

/* ---- automatic rotation (src/disk/autorotate.c; part of cvmd, library cvm_disk_rest) --------
 * When the key of a DES that follows the latest version (versionless key URL) gets a new
 * version — `cvm key rotate`, the key service's rotation-policy scheduler, on any cvmd sharing
 * the store — every disk registered to the set is re-wrapped for that version (cvm_disk_rotate_to:
 * new token written and proven before the old one goes; header only, safe while a VM runs) and
 * its registry kid updated. cvmd does the wrap and unwrap in-process as the DES identity, after
 * the same RBAC check the REST route makes (keys/read, keys/wrap, keys/unwrap on the key): an
 * identity that lost the Crypto Service Encryption User role is refused and the disk left as it
 * is. Pinned-version sets are never touched. One audit record per disk and try: operation
 * "disks/rotate", principal the DES identity, key_version the new version, detail {"des","disk",
 * "trigger":"auto","oldVersion","newVersion","message"?}. A failed disk (image missing or
 * unreadable, role revoked, key disabled) does not stop the others; it is retried for the same
 * version after 30 s, doubling up to an hour (a newer version retries at once). Several cvmd
 * processes on one store: a per-disk lease (60 s) lets exactly one work on a disk.
 * cvmd calls the tick from its scheduler thread (every few seconds); returns the number of
 * disks tried (>= 0), or a negative errno when every set that had work failed. */
struct cvm_disk_autorotate_config {
	struct cvm_store *store; /* borrowed */
	struct cvm_hsm *hsm;
	struct cvm_audit *audit;
};
CVM_EXPORT int cvm_disk_autorotate_tick(const struct cvm_disk_autorotate_config *cfg,
					int64_t now, struct cvm_err *err);
/* The last automatic rotation pass that tried disks of a DES (present false when none). */
struct cvm_des_autorotation {
	bool present;
	int64_t at;
	char key_version[33];     /* the version the disks were moved to */
	unsigned rotated, failed; /* disks */
	char message[512];        /* first failure, "" when none */
};
CVM_EXPORT int cvm_des_autorotation_get(struct cvm_store *s, const char *des,
					struct cvm_des_autorotation *out, struct cvm_err *err);

/* ---- block writer (src/disk/writer.c) -----------------------------------------------------
 * Random-access writes into an existing, complete confidential disk without dm-crypt: each
 * write is encrypted in memory with the volume key (aes-xts-plain64, IV = 512-byte sector
 * number from the start of the data area, same as dm-crypt) and only ciphertext reaches the
 * file. Used by replication to fill a confidential disk straight from plaintext blocks.
 * Offsets and lengths are in bytes of the unlocked volume (0 = first data byte) and must be
 * multiples of the volume's sector size; nothing is written past the volume (-EINVAL). The
 * caller must be the only writer of the image (a running VM must not use it). */
struct cvm_disk_writer;
/* Opens path read-write; the passphrase is the keyslot secret (cvm_disk_unlock_secret). The
 * volume key is kept in locked memory until close. -EBUSY for incomplete images, -EPERM when
 * the passphrase does not open a keyslot, -ENOTSUP for unsupported layouts. */
CVM_EXPORT int cvm_disk_writer_open(const char *path, const struct cvm_secret *passphrase,
				    struct cvm_disk_writer **out, struct cvm_err *err);
CVM_EXPORT uint64_t cvm_disk_writer_size(const struct cvm_disk_writer *w);        /* volume bytes */
CVM_EXPORT uint32_t cvm_disk_writer_sector_size(const struct cvm_disk_writer *w);
CVM_EXPORT int cvm_disk_writer_pwrite(struct cvm_disk_writer *w, const void *buf, size_t len,
				      uint64_t plaintext_offset, struct cvm_err *err);
/* Decrypt len bytes at plaintext_offset into buf (same alignment rules). */
CVM_EXPORT int cvm_disk_writer_pread(struct cvm_disk_writer *w, void *buf, size_t len,
				     uint64_t plaintext_offset, struct cvm_err *err);
/* fdatasync: every write so far is durable. */
CVM_EXPORT int cvm_disk_writer_sync(struct cvm_disk_writer *w, struct cvm_err *err);
/* Closes the file and wipes the volume key (no sync; NULL-safe). */
CVM_EXPORT void cvm_disk_writer_close(struct cvm_disk_writer *w);
