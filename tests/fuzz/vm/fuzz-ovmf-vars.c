/* SPDX-License-Identifier: Apache-2.0 */
/* libFuzzer: the OVMF variable-store reader (the guest's firmware writes the VARS file that
 * vm validate reads). Refusals name a reason; accepted stores give a consistent verdict. */
#include <opencvm/vm.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct cvm_ovmf_secure_boot sb;
	struct cvm_err err = { 0 };
	if (cvm_ovmf_vars_secure_boot(data, size, &sb, &err) < 0) {
		if (!err.msg[0])
			__builtin_trap();
		return 0;
	}
	if (sb.enabled != (sb.pk && sb.secure_boot_enable != 0))
		__builtin_trap();
	return 0;
}
