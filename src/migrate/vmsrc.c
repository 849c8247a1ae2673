/* SPDX-License-Identifier: Apache-2.0 */
/* A running QEMU VM as a replication source, agentless: QMP manages a dirty bitmap on the
 * disk's block node and an NBD export of it, libnbd reads the data and the bitmap's extents
 * (NBD_CMD_BLOCK_STATUS, meta context "qemu:dirty-bitmap:<name>") — the way hypervisor backup
 * tools do incremental copies.
 *
 * Bitmaps: "cvm-repl" tracks writes between passes. A pass starts with one QMP transaction that
 * creates "cvm-repl-pass" (disabled: a frozen set, as a read-only export requires), merges
 * "cvm-repl" into it and clears "cvm-repl": the pass reads what
 * changed before it began, later writes are tracked for the next pass. A pass that succeeds
 * removes "cvm-repl-pass"; one that fails (or was killed: found at the next start) merges it
 * back into "cvm-repl", so no change is ever forgotten. When "cvm-repl" did not exist (first
 * pass, or the VM restarted: bitmaps are not persistent) the pass reads everything. */
#include "migrate-internal.h"

#include <jansson.h>
#include <libnbd.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#define TRACK "cvm-repl"
#define PASS "cvm-repl-pass"
#define EXPORT "cvm-repl"

struct mig_vmsrc {
	FILE *qmp;
	char node[128];
	char dir[64];
	char sock[128];
	struct nbd_handle *nbd;
	uint64_t size;
	bool incremental;       /* TRACK existed: PASS holds the changes since the last pass */
	bool exported, server;
};

/* ---- QMP ------------------------------------------------------------------------------- */
/* Send one command, skip events, return the "return" value (new ref) or fill err from the
 * error's desc. */
int mig_qmp_cmd(FILE *qmp, json_t *cmd, json_t **ret, struct cvm_err *err)
{
	char *s = json_dumps(cmd, JSON_COMPACT);
	json_decref(cmd);
	if (!s)
		return cvm_err_nomem(err);
	int w = fprintf(qmp, "%s\n", s);
	free(s);
	if (w < 0 || fflush(qmp) != 0)
		return cvm_err_internal(err, "qmp: write failed");
	char line[65536];
	for (;;) {
		if (!fgets(line, sizeof(line), qmp))
			return cvm_err_internal(err, "qmp: connection closed");
		json_t *j = json_loads(line, 0, NULL);
		if (!j)
			return cvm_err_set(err, EBADMSG, "BadParameter", "qmp: unparsable reply");
		json_t *r = json_object_get(j, "return"), *e = json_object_get(j, "error");
		if (r) {
			if (ret)
				*ret = json_incref(r);
			json_decref(j);
			return 0;
		}
		if (e) {
			const char *d = json_string_value(json_object_get(e, "desc"));
			int rc = cvm_err_set(err, EIO, "InternalError", "qmp: %s", d ? d : "error");
			json_decref(j);
			return rc;
		}
		json_decref(j); /* an event */
	}
}

int mig_qmp_open(const char *path, FILE **out, struct cvm_err *err)
{
	struct sockaddr_un a = {.sun_family = AF_UNIX};
	if (strlen(path) >= sizeof(a.sun_path))
		return cvm_err_badparam(err, "qmp: socket path too long");
	memcpy(a.sun_path, path, strlen(path));
	int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (fd < 0 || connect(fd, (struct sockaddr *)&a, sizeof(a)) < 0) {
		int e = errno;
		if (fd >= 0)
			close(fd);
		return cvm_err_set(err, e, "InternalError", "qmp %s: %s", path, strerror(e));
	}
	FILE *f = fdopen(fd, "r+");
	if (!f) {
		close(fd);
		return cvm_err_nomem(err);
	}
	char greet[4096];
	int r = 0;
	if (!fgets(greet, sizeof(greet), f) || !strstr(greet, "\"QMP\""))
		r = cvm_err_set(err, EPROTO, "BadParameter", "qmp %s: no QMP greeting", path);
	if (r == 0)
		r = mig_qmp_cmd(f, json_pack("{s:s}", "execute", "qmp_capabilities"), NULL, err);
	if (r < 0) {
		fclose(f);
		return r;
	}
	*out = f;
	return 0;
}

static json_t *cmd(const char *name, json_t *args)
{
	return json_pack("{s:s,s:o}", "execute", name, "arguments", args);
}

static json_t *bitmap_action(const char *type, json_t *data)
{
	return json_pack("{s:s,s:o}", "type", type, "data", data);
}

/* Fold a leftover PASS (from a killed or failed pass) back into TRACK. Absent PASS is fine. */
static void recover_pass(struct mig_vmsrc *v)
{
	struct cvm_err e = {0};
	json_t *acts = json_pack("[o,o]",
				 bitmap_action("block-dirty-bitmap-merge",
					       json_pack("{s:s,s:s,s:[s]}", "node", v->node, "target",
							 TRACK, "bitmaps", PASS)),
				 bitmap_action("block-dirty-bitmap-remove",
					       json_pack("{s:s,s:s}", "node", v->node, "name", PASS)));
	mig_qmp_cmd(v->qmp, cmd("transaction", json_pack("{s:o}", "actions", acts)), NULL, &e);
}

/* ---- open / read / dirty / finish ------------------------------------------------------- */
int mig_vmsrc_open(const char *qmp, const char *node, struct mig_vmsrc **out, uint64_t *size,
		   bool *incremental, struct cvm_err *err)
{
	if (!qmp || !node || strlen(node) >= 128)
		return cvm_err_badparam(err, "vm source: --qmp SOCKET and --node NAME are required");
	struct mig_vmsrc *v = calloc(1, sizeof(*v));
	if (!v)
		return cvm_err_nomem(err);
	snprintf(v->node, sizeof(v->node), "%s", node);
	int r = mig_qmp_open(qmp, &v->qmp, err);
	if (r < 0)
		goto fail;
	recover_pass(v);
	/* TRACK either exists (incremental) or starts tracking now (this pass reads it all). */
	struct cvm_err e = {0};
	r = mig_qmp_cmd(v->qmp, cmd("block-dirty-bitmap-add", json_pack("{s:s,s:s,s:b}", "node", node,
								 "name", TRACK, "persistent", 0)),
		    NULL, &e);
	if (r < 0 && !strstr(e.msg, "already")) {
		*err = e;
		goto fail;
	}
	v->incremental = r < 0;
	json_t *acts = json_pack(
		"[o,o,o]",
		bitmap_action("block-dirty-bitmap-add",
			      json_pack("{s:s,s:s,s:b,s:b}", "node", node, "name", PASS, "persistent",
					0, "disabled", 1)),
		bitmap_action("block-dirty-bitmap-merge",
			      json_pack("{s:s,s:s,s:[s]}", "node", node, "target", PASS, "bitmaps",
					TRACK)),
		bitmap_action("block-dirty-bitmap-clear",
			      json_pack("{s:s,s:s}", "node", node, "name", TRACK)));
	if ((r = mig_qmp_cmd(v->qmp, cmd("transaction", json_pack("{s:o}", "actions", acts)), NULL, err)) < 0)
		goto fail;
	const char *tmpd = getenv("TMPDIR");
	snprintf(v->dir, sizeof(v->dir), "%s/cvm-nbd-XXXXXX", tmpd && strlen(tmpd) < 40 ? tmpd : "/tmp");
	if (!mkdtemp(v->dir)) {
		r = cvm_err_internal(err, "vm source: temporary directory: %s", strerror(errno));
		v->dir[0] = 0;
		goto fail;
	}
	snprintf(v->sock, sizeof(v->sock), "%s/nbd.sock", v->dir);
	if ((r = mig_qmp_cmd(v->qmp, cmd("nbd-server-start",
				json_pack("{s:{s:s,s:{s:s}}}", "addr", "type", "unix", "data", "path",
					  v->sock)), NULL, err)) < 0)
		goto fail;
	v->server = true;
	if ((r = mig_qmp_cmd(v->qmp, cmd("block-export-add",
				json_pack("{s:s,s:s,s:s,s:s,s:[s]}", "type", "nbd", "id", EXPORT,
					  "node-name", node, "name", EXPORT, "bitmaps", PASS)),
			 NULL, err)) < 0)
		goto fail;
	v->exported = true;
	v->nbd = nbd_create();
	if (!v->nbd || nbd_set_export_name(v->nbd, EXPORT) < 0 ||
	    nbd_add_meta_context(v->nbd, "qemu:dirty-bitmap:" PASS) < 0 ||
	    nbd_connect_unix(v->nbd, v->sock) < 0) {
		r = cvm_err_internal(err, "nbd: %s", nbd_get_error() ? nbd_get_error() : "connect failed");
		goto fail;
	}
	int64_t sz = nbd_get_size(v->nbd);
	if (sz <= 0 || nbd_can_meta_context(v->nbd, "qemu:dirty-bitmap:" PASS) != 1) {
		r = cvm_err_internal(err, "nbd: export has no size or no dirty-bitmap context");
		goto fail;
	}
	v->size = (uint64_t)sz;
	*size = v->size;
	*incremental = v->incremental;
	*out = v;
	return 0;
fail:
	mig_vmsrc_finish(v, false);
	return r;
}

int mig_vmsrc_read(struct mig_vmsrc *v, void *buf, size_t len, uint64_t off, struct cvm_err *err)
{
	/* QEMU's NBD server takes requests up to 32 MiB; batches are 16 MiB. */
	if (nbd_pread(v->nbd, buf, len, off, 0) < 0)
		return cvm_err_internal(err, "nbd read at %llu: %s", (unsigned long long)off,
					nbd_get_error() ? nbd_get_error() : "failed");
	return 0;
}

struct extent_ctx {
	uint8_t *bits;
	uint32_t bs;
	uint64_t nblocks, off, dirty;
};

static int extent_cb(void *p, const char *meta, uint64_t offset, uint32_t *entries, size_t n,
		     int *error)
{
	struct extent_ctx *c = p;
	if (strcmp(meta, "qemu:dirty-bitmap:" PASS) != 0)
		return 0;
	uint64_t o = offset;
	for (size_t i = 0; i + 1 < n; i += 2) {
		uint64_t len = entries[i];
		if (entries[i + 1] & 1) {
			for (uint64_t b = o / c->bs; b < c->nblocks && b * c->bs < o + len; b++) {
				if (!(c->bits[b / 8] & (1u << (b % 8))))
					c->dirty++;
				c->bits[b / 8] |= (uint8_t)(1u << (b % 8));
			}
		}
		o += len;
	}
	c->off = o;
	return 0;
}

int mig_vmsrc_dirty(struct mig_vmsrc *v, uint32_t bs, uint64_t nblocks, uint8_t *bits,
		    uint64_t *ndirty, struct cvm_err *err)
{
	struct extent_ctx c = {.bits = bits, .bs = bs, .nblocks = nblocks};
	memset(bits, 0, (nblocks + 7) / 8);
	for (uint64_t off = 0; off < v->size;) {
		uint64_t count = v->size - off < (1ull << 30) ? v->size - off : (1ull << 30);
		c.off = off;
		if (nbd_block_status(v->nbd, count, off,
				     (nbd_extent_callback){.callback = extent_cb, .user_data = &c},
				     0) < 0)
			return cvm_err_internal(err, "nbd block status at %llu: %s",
						(unsigned long long)off,
						nbd_get_error() ? nbd_get_error() : "failed");
		if (c.off <= off)
			return cvm_err_internal(err, "nbd block status made no progress at %llu",
						(unsigned long long)off);
		off = c.off;
	}
	*ndirty = c.dirty;
	return 0;
}

void mig_vmsrc_finish(struct mig_vmsrc *v, bool ok)
{
	if (!v)
		return;
	struct cvm_err e = {0};
	if (v->nbd) {
		nbd_shutdown(v->nbd, 0);
		nbd_close(v->nbd);
	}
	if (v->qmp && v->exported)
		mig_qmp_cmd(v->qmp, cmd("block-export-del", json_pack("{s:s,s:s}", "id", EXPORT, "mode", "hard")),
			NULL, &e);
	if (v->qmp && v->server)
		mig_qmp_cmd(v->qmp, cmd("nbd-server-stop", json_object()), NULL, &e);
	if (v->qmp) {
		if (ok)
			mig_qmp_cmd(v->qmp, cmd("block-dirty-bitmap-remove",
				       json_pack("{s:s,s:s}", "node", v->node, "name", PASS)), NULL, &e);
		else
			recover_pass(v);
		fclose(v->qmp);
	}
	if (v->sock[0])
		unlink(v->sock);
	if (v->dir[0])
		rmdir(v->dir);
	free(v);
}
