/* SPDX-License-Identifier: Apache-2.0 */
/* libFuzzer: replication wire frames. The input is a byte stream of frames as a peer would
 * send them; each frame is parsed, then its payload by the parser of its type. Invariants:
 * every refusal names a reason; an accepted frame never claims bytes beyond the input; parsed
 * payload views stay inside the frame; a frame rebuilt from the parsed header is identical. */
#include <opencvm/migrate.h>

#include <string.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static void payload(const struct cvm_repl_frame *f)
{
	struct cvm_err err = {0};
	const uint8_t *end = f->payload + f->len;
	int r = 0;
	switch (f->type) {
	case CVM_REPL_HELLO:
	case CVM_REPL_HELLO_ACK: {
		struct cvm_repl_hello h;
		uint8_t back[CVM_REPL_HELLO_LEN];
		r = cvm_repl_hello_parse(f->payload, f->len, &h, &err);
		if (r == 0) {
			cvm_repl_hello_put(&h, back);
			if (memcmp(back, f->payload, CVM_REPL_HELLO_LEN) != 0)
				__builtin_trap();
		}
		break;
	}
	case CVM_REPL_BLOCK: {
		struct cvm_repl_block b;
		r = cvm_repl_block_parse(f->payload, f->len, &b, &err);
		if (r == 0 && (b.data + b.len != end || b.hash + 32 > b.data))
			__builtin_trap();
		break;
	}
	case CVM_REPL_MANIFEST: {
		struct cvm_repl_manifest m;
		r = cvm_repl_manifest_parse(f->payload, f->len, &m, &err);
		if (r == 0 && m.hashes + (size_t)m.count * 32 != end)
			__builtin_trap();
		break;
	}
	case CVM_REPL_SYNC:
	case CVM_REPL_ACK:
	case CVM_REPL_DONE: {
		uint64_t v;
		r = cvm_repl_u64_parse(f->payload, f->len, &v, &err);
		break;
	}
	default:
		return;
	}
	if (r < 0 && !err.msg[0])
		__builtin_trap();
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	size_t off = 0;
	while (off < size) {
		struct cvm_repl_frame f;
		struct cvm_err err = {0};
		size_t used = 0;
		if (cvm_repl_frame_parse(data + off, size - off, &f, &used, &err) < 0) {
			if (!err.msg[0])
				__builtin_trap();
			return 0;
		}
		if (used < CVM_REPL_HDR || used > size - off || f.payload + f.len != data + off + used)
			__builtin_trap();
		uint8_t hdr[CVM_REPL_HDR];
		if (cvm_repl_frame_header(f.type, f.flags, f.len, hdr, &err) < 0 ||
		    memcmp(hdr, data + off, CVM_REPL_HDR) != 0)
			__builtin_trap();
		payload(&f);
		off += used;
	}
	return 0;
}
