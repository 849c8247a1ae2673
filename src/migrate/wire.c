/* SPDX-License-Identifier: Apache-2.0 */
/* Replication wire frames: length-checked parsers and builders (fuzzed by fuzz-repl-frame). */
#include "migrate-internal.h"

int cvm_repl_frame_header(uint8_t type, uint8_t flags, size_t len, uint8_t *out,
			  struct cvm_err *err)
{
	if (type < CVM_REPL_HELLO || type > CVM_REPL_ERROR)
		return cvm_err_badparam(err, "frame: type %u unknown", type);
	if (len > CVM_REPL_MAX_PAYLOAD)
		return cvm_err_badparam(err, "frame: payload %zu bytes exceeds %u", len,
					CVM_REPL_MAX_PAYLOAD);
	memcpy(out, CVM_REPL_MAGIC, 4);
	out[4] = type;
	out[5] = flags;
	out[6] = out[7] = 0;
	mig_put_le32(out + 8, (uint32_t)len);
	return 0;
}

int cvm_repl_frame_parse(const uint8_t *buf, size_t len, struct cvm_repl_frame *f,
			 size_t *consumed, struct cvm_err *err)
{
	if (!buf || !f || !consumed)
		return cvm_err_badparam(err, "frame: buffer and outputs are required");
	if (len < CVM_REPL_HDR)
		return cvm_err_set(err, EAGAIN, "BadParameter", "frame: need %u header bytes, have %zu",
				   CVM_REPL_HDR, len);
	if (memcmp(buf, CVM_REPL_MAGIC, 4) != 0)
		return cvm_err_set(err, EBADMSG, "BadParameter", "frame: bad magic");
	uint8_t type = buf[4], flags = buf[5];
	if (type < CVM_REPL_HELLO || type > CVM_REPL_ERROR)
		return cvm_err_set(err, EBADMSG, "BadParameter", "frame: type %u unknown", type);
	if (flags & ~CVM_REPL_F_ZSTD)
		return cvm_err_set(err, EBADMSG, "BadParameter", "frame: unknown flags 0x%02x", flags);
	if ((flags & CVM_REPL_F_ZSTD) && type != CVM_REPL_BLOCK && type != CVM_REPL_MANIFEST)
		return cvm_err_set(err, EBADMSG, "BadParameter",
				   "frame: compression flag on a type %u frame", type);
	if (buf[6] || buf[7])
		return cvm_err_set(err, EBADMSG, "BadParameter", "frame: reserved bytes not zero");
	uint32_t plen = mig_le32(buf + 8);
	if (plen > CVM_REPL_MAX_PAYLOAD)
		return cvm_err_set(err, EBADMSG, "BadParameter", "frame: payload %u bytes exceeds %u",
				   plen, CVM_REPL_MAX_PAYLOAD);
	if (len - CVM_REPL_HDR < plen)
		return cvm_err_set(err, EAGAIN, "BadParameter", "frame: need %u payload bytes, have %zu",
				   plen, len - CVM_REPL_HDR);
	f->type = type;
	f->flags = flags;
	f->len = plen;
	f->payload = buf + CVM_REPL_HDR;
	*consumed = CVM_REPL_HDR + plen;
	return 0;
}

void cvm_repl_hello_put(const struct cvm_repl_hello *h, uint8_t out[CVM_REPL_HELLO_LEN])
{
	mig_put_le32(out, h->version);
	mig_put_le32(out + 4, h->block_size);
	mig_put_le64(out + 8, h->disk_size);
	memcpy(out + 16, h->gen, 16);
	mig_put_le64(out + 32, h->pass);
	mig_put_le64(out + 40, h->cursor);
	mig_put_le32(out + 48, h->flags);
}

int cvm_repl_hello_parse(const uint8_t *buf, size_t len, struct cvm_repl_hello *h,
			 struct cvm_err *err)
{
	if (!buf || len != CVM_REPL_HELLO_LEN)
		return cvm_err_set(err, EBADMSG, "BadParameter", "hello: %zu bytes (expected %u)", len,
				   CVM_REPL_HELLO_LEN);
	h->version = mig_le32(buf);
	h->block_size = mig_le32(buf + 4);
	h->disk_size = mig_le64(buf + 8);
	memcpy(h->gen, buf + 16, 16);
	h->pass = mig_le64(buf + 32);
	h->cursor = mig_le64(buf + 40);
	h->flags = mig_le32(buf + 48);
	if (h->flags & ~CVM_REPL_HELLO_STALE)
		return cvm_err_set(err, EBADMSG, "BadParameter", "hello: unknown flags 0x%x", h->flags);
	if (h->version != CVM_REPL_VERSION)
		return cvm_err_set(err, ENOTSUP, "BadParameter", "hello: protocol version %u "
				   "(this side speaks %u)", h->version, CVM_REPL_VERSION);
	if (h->block_size < CVM_REPL_MIN_BLOCK || h->block_size > CVM_REPL_MAX_BLOCK ||
	    (h->block_size & (h->block_size - 1)))
		return cvm_err_set(err, EBADMSG, "BadParameter", "hello: block size %u (expected a "
				   "power of two from %u to %u)", h->block_size, CVM_REPL_MIN_BLOCK,
				   CVM_REPL_MAX_BLOCK);
	if (h->disk_size == 0 || h->disk_size > (1ull << 50))
		return cvm_err_set(err, EBADMSG, "BadParameter", "hello: disk size %llu out of range",
				   (unsigned long long)h->disk_size);
	uint64_t nblocks = (h->disk_size + h->block_size - 1) / h->block_size;
	if (h->cursor > nblocks)
		return cvm_err_set(err, EBADMSG, "BadParameter", "hello: cursor %llu beyond %llu "
				   "blocks", (unsigned long long)h->cursor,
				   (unsigned long long)nblocks);
	return 0;
}

int cvm_repl_block_parse(const uint8_t *buf, size_t len, struct cvm_repl_block *b,
			 struct cvm_err *err)
{
	if (!buf || len < 8 + 32 + 1)
		return cvm_err_set(err, EBADMSG, "BadParameter", "block: %zu bytes (need index, hash "
				   "and data)", len);
	if (len - 40 > CVM_REPL_MAX_BLOCK + 32)
		return cvm_err_set(err, EBADMSG, "BadParameter", "block: %zu data bytes", len - 40);
	b->index = mig_le64(buf);
	b->hash = buf + 8;
	b->data = buf + 40;
	b->len = len - 40;
	return 0;
}

int cvm_repl_manifest_parse(const uint8_t *buf, size_t len, struct cvm_repl_manifest *m,
			    struct cvm_err *err)
{
	if (!buf || len < 12)
		return cvm_err_set(err, EBADMSG, "BadParameter", "manifest: %zu bytes (need 12)", len);
	m->first = mig_le64(buf);
	m->count = mig_le32(buf + 8);
	if (m->count > CVM_REPL_MANIFEST_MAX)
		return cvm_err_set(err, EBADMSG, "BadParameter", "manifest: %u hashes in one frame "
				   "(at most %u)", m->count, CVM_REPL_MANIFEST_MAX);
	if (len - 12 != (size_t)m->count * 32)
		return cvm_err_set(err, EBADMSG, "BadParameter", "manifest: %zu hash bytes for %u "
				   "hashes", len - 12, m->count);
	if (m->first > (1ull << 50))
		return cvm_err_set(err, EBADMSG, "BadParameter", "manifest: first index out of range");
	m->hashes = buf + 12;
	return 0;
}

int cvm_repl_u64_parse(const uint8_t *buf, size_t len, uint64_t *v, struct cvm_err *err)
{
	if (!buf || len != 8)
		return cvm_err_set(err, EBADMSG, "BadParameter", "counter: %zu bytes (expected 8)", len);
	*v = mig_le64(buf);
	return 0;
}
