/* SPDX-License-Identifier: Apache-2.0 */
/* cvmd module-private interface: configuration and service wiring. */
#pragma once

#include <stdbool.h>

#include <opencvm/util.h>

/* Everything cvmd reads from its config file or the command line. Strings are owned. */
struct cvmd_config {
	char *listen;            /* "127.0.0.1:8443" (loopback by default) */
	char *state_dir;         /* state directory (created 0700) */
	char *store;             /* store URL; NULL = sqlite:<state_dir>/cvmd.db */
	char *tls_cert, *tls_key; /* PEM paths; both NULL ("auto") = self-signed in state_dir */
	bool svc_hsm, svc_attest;
	char *base_url;          /* external base URL used when the Host header is unusable */
	int soft_delete_days;    /* 7..90 */
	bool purge_protection;
	enum cvm_log_level log_level;
	/* Unattended activation: a 32-byte domain key file. Missing file + empty store -> a new
	 * domain whose key is written there (0600). Unset -> the HSM waits for a security domain
	 * upload over REST. */
	char *domain_key_file;
	/* Where the first start writes the bootstrap administrator's credentials (0600). */
	char *admin_file;
	char *attest_emulator_root; /* PEM path of a TEE emulator root to trust (opt-in) */
	/* SHA-256 of that emulator's ARK (`cvm tee-emu init` prints it); required with the root
	 * outside --dev, so a swapped emulator directory is refused. */
	char *attest_emulator_fingerprint;
	unsigned threads;        /* HTTP worker threads, 0 = CPUs */

	/* --dev only */
	bool dev;
	bool dev_temp_state;     /* state dir is a temp dir removed at exit */
	char *dev_info;          /* where the dev JSON goes; NULL = stdout */
};

void cvmd_config_init(struct cvmd_config *c);
void cvmd_config_free(struct cvmd_config *c);
/* Parse the INI-like config text: "key = value" lines, '#' comments, blank lines. Unknown
 * keys and bad values are errors naming the line. */
int cvmd_config_parse(struct cvmd_config *c, const uint8_t *buf, size_t len, struct cvm_err *err);
int cvmd_config_load(struct cvmd_config *c, const char *path, struct cvm_err *err);
/* Fill defaults that depend on other fields and check the result. */
int cvmd_config_finish(struct cvmd_config *c, struct cvm_err *err);

/* Run the service until SIGTERM/SIGINT. Returns 0 or a negative errno. */
int cvmd_run(struct cvmd_config *c, struct cvm_err *err);
/* Maintenance: verify the audit chain of the configured store; prints a summary line. */
int cvmd_verify_audit(struct cvmd_config *c, struct cvm_err *err);
