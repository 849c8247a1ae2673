/* SPDX-License-Identifier: Apache-2.0 */
/* cvm demo, shared by its two halves: demo.c (cvmd, key service, Secure Key Release) and
 * demo-vm.c (a confidential VM booted through attestation). */
#pragma once
#include "cli.h"

#include <sys/types.h>

struct demo {
	struct cli *cli;      /* the key user (demo-app) once step 4 ran */
	char dir[64];         /* temp dir of this run: cvmd state, store, VM state */
	char *dev_info, *store_url, *state_dir;
	const char *image_dir; /* --guest-image DIR, NULL = the per-user cache */
	json_t *claims;       /* claims of the attestation token */
	char release_path[160]; /* /keys/NAME/VERSION of the exportable key */
	pid_t cvmd;
	uint64_t t0, step_t0;
	int step;
	char disk_path[160], sign_path[160]; /* /keys/NAME/VERSION */
	pid_t vm;             /* the VM's supervisor (`cvm vm start`), 0 when none */
};

void demo_step_begin(struct demo *d, const char *what);
void demo_step_end(struct demo *d, const char *detail);
/* A binary installed beside cvm (cvmd, cvm-guest). */
char *demo_sibling_binary(const char *name);
/* cli_call as the demo's current identity; consumes body. */
int demo_call(struct demo *d, const char *method, const char *path, json_t *body, json_t **out,
	      struct cvm_err *err);
/* The confidential VM steps: image, DES, encrypted OS disk, boot through attestation, audit,
 * validate, stop. Needs cvmd started and the key user signed in. */
int demo_vm(struct demo *d, struct cvm_err *err);
/* Stop the VM (if its supervisor runs) and wait for the supervisor. */
void demo_vm_stop(struct demo *d);
