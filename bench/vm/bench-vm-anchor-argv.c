/* SPDX-License-Identifier: Apache-2.0 */
/* The anchor of bench-vm-boot.sh: the QEMU command line `cvm vm start` would build for this
 * VM (cvm_vm_qemu_argv: same machine, accelerator, CPU model, Secure Boot OVMF, memory, vCPUs,
 * virtio disk and network, console to a file) but without any TEE: no emulated-TEE port, no
 * vTPM. Prints one argument per line. Never part of pass/fail.
 * Usage: bench-vm-anchor-argv NAME VCPUS MEMORY_MIB OVMF_CODE OVMF_VARS KERNEL INITRD APPEND
 *        OS_IMAGE CONSOLE_LOG */
#include <opencvm/vm.h>

#include <stdio.h>
#include <stdlib.h>

int main(int argc, char **argv)
{
	if (argc != 11) {
		fprintf(stderr, "usage: bench-vm-anchor-argv NAME VCPUS MEMORY_MIB OVMF_CODE "
				"OVMF_VARS KERNEL INITRD APPEND OS_IMAGE CONSOLE_LOG\n");
		return 2;
	}
	struct cvm_err err = { 0 };
	int64_t vcpus = 0, mem = 0;
	if (cvm_parse_i64(argv[2], 1, 1024, &vcpus, "VCPUS", &err) < 0 ||
	    cvm_parse_i64(argv[3], 128, 16LL * 1024 * 1024, &mem, "MEMORY_MIB", &err) < 0) {
		fprintf(stderr, "bench-vm-anchor-argv: %s\n", err.msg);
		return 2;
	}
	struct cvm_vm_launch l = {
		.name = argv[1],
		.vcpus = (int)vcpus,
		.memory_mib = mem,
		.accel = cvm_vm_accel_detect(true),
		.tee = CVM_VM_TEE_NONE,
		.ovmf_code = argv[4],
		.ovmf_vars = argv[5],
		.secure_boot = true,
		.kernel = argv[6],
		.initrd = argv[7],
		.append = argv[8],
		.os_disk = argv[9],
		.serial_log = argv[10],
		.netdev = "user,id=net0",
	};
	char **qa = NULL;
	if (cvm_vm_qemu_argv(&l, &qa, &err) < 0) {
		fprintf(stderr, "bench-vm-anchor-argv: %s\n", err.msg);
		return 1;
	}
	for (size_t i = 0; qa[i]; i++)
		printf("%s\n", qa[i]);
	cvm_argv_free(qa);
	return 0;
}
