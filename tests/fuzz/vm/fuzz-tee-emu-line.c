/* SPDX-License-Identifier: Apache-2.0 */
/* libFuzzer: the host side of the guest channel. A request line comes from the guest, which
 * the host does not trust: whatever it sends, the host answers one "OK ...\n" or "ERR ...\n"
 * line, and hands ATTEST/RELEASE bodies to the relay only as decoded bytes. */
#include <opencvm/vm.h>

#include <stdlib.h>
#include <string.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

/* The relay the fuzzer reaches: it only records what the parser decoded. */
static int relay(void *ctx, const char *kind, const uint8_t *body, size_t len,
		 struct cvm_buf *reply, struct cvm_err *err)
{
	(void)ctx;
	(void)body;
	if (strcmp(kind, "ATTEST") != 0 && strcmp(kind, "RELEASE") != 0)
		__builtin_trap();
	if (len > CVM_VM_HOST_LINE_MAX)
		__builtin_trap();
	return cvm_buf_append(reply, "{}", 2) < 0 ? cvm_err_nomem(err) : 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	if (size > 65536)
		return 0;
	char *line = malloc(size + 1);
	if (!line)
		return 0;
	memcpy(line, data, size);
	line[size] = 0;
	struct cvm_vm_tee_emu e = { .relay = relay };
	char *reply = NULL;
	struct cvm_err err = { 0 };
	if (cvm_vm_tee_emu_handle(&e, line, &reply, &err) == 0) {
		size_t n = strlen(reply);
		if (n < 3 || reply[n - 1] != '\n' || memchr(reply, '\n', n - 1) ||
		    (strncmp(reply, "OK ", 3) != 0 && strncmp(reply, "ERR ", 4) != 0))
			__builtin_trap();
	}
	free(reply);
	free(line);
	return 0;
}
