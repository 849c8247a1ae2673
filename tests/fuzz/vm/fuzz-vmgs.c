/* SPDX-License-Identifier: Apache-2.0 */
/* libFuzzer: the VMGS plain-layout parser (runs on unsealed data; the seal authenticates it,
 * but the parser must hold on its own). Every file it hands out has a safe plain name and
 * lies within the buffer. */
#include <opencvm/vm.h>

#include <string.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

struct bounds {
	const uint8_t *buf;
	size_t len;
};

static int on_file(void *ctx, const char *name, const uint8_t *d, size_t len, struct cvm_err *err)
{
	const struct bounds *b = ctx;
	(void)err;
	if (!name[0] || strchr(name, '/') || strcmp(name, ".") == 0 || strcmp(name, "..") == 0)
		__builtin_trap();
	if (len && (d < b->buf || d + len > b->buf + b->len))
		__builtin_trap();
	return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct bounds b = { data, size };
	struct cvm_err err = { 0 };
	if (cvm_vmgs_parse(data, size, on_file, &b, &err) < 0 && !err.msg[0])
		__builtin_trap();
	return 0;
}
