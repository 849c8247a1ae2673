/* SPDX-License-Identifier: Apache-2.0 */
/* cvm CLI internals: option parsing, the connection to cvmd, output helpers. */
#pragma once

#include <jansson.h>
#include <openssl/crypto.h>
#include <stdio.h>

#include <opencvm/http.h>
#include <opencvm/json.h>
#include <opencvm/util.h>

/* Exit codes (documented in docs/cvm.1). */
enum {
	CLI_OK = 0,
	CLI_FAIL = 1,      /* the operation was refused or failed */
	CLI_USAGE = 2,     /* bad command line */
	CLI_CONNECT = 3,   /* cannot reach or authenticate to the service */
};

/* Where the service is and who we are. Resolved from flags, then the environment, then the
 * profile written by `cvm login`. The client secret is read from a file, never from argv or
 * the environment. */
struct cli_conn {
	char *base_url;
	char *tenant;
	char *client_id;
	struct cvm_secret *client_secret;
	char *ca_cert;
	char *token; /* bearer token, fetched lazily */
	struct cvm_http_client_opts http;
};

struct cli {
	bool json;
	const char *url, *tenant, *client_id, *secret_file, *ca_cert, *dev_info, *profile_path;
	struct cli_conn conn;
	bool conn_ready;
};

/* A verb: argv[0] is the verb name. Returns an exit code. */
typedef int (*cli_verb_fn)(struct cli *cli, int argc, char **argv);
struct cli_verb {
	const char *name;
	cli_verb_fn fn;
	const char *usage;
};
/* Run the verb named argv[0] from the table, or print the group's usage. */
int cli_dispatch(struct cli *cli, const char *group, const struct cli_verb *verbs, size_t n,
		 int argc, char **argv);

/* Groups */
int cli_key(struct cli *cli, int argc, char **argv);
int cli_role(struct cli *cli, int argc, char **argv);
int cli_identity(struct cli *cli, int argc, char **argv);
int cli_audit(struct cli *cli, int argc, char **argv);
int cli_hsm(struct cli *cli, int argc, char **argv);
int cli_login(struct cli *cli, int argc, char **argv);
int cli_demo(struct cli *cli, int argc, char **argv);
int cli_vm(struct cli *cli, int argc, char **argv);
/* vm validate's checks of VM name (JSON array of {check, passed, detail}); vm.c. */
struct cvm_store;
int cli_vm_checks(struct cvm_store *store, const char *state_dir, const char *name,
		  const uint8_t *reference, const char *image, json_t **checks, int *failed,
		  struct cvm_err *err);
int cli_migrate(struct cli *cli, int argc, char **argv);
int cli_disk(struct cli *cli, int argc, char **argv);
int cli_des(struct cli *cli, int argc, char **argv);
int cli_attest(struct cli *cli, int argc, char **argv);
int cli_tee_emu(struct cli *cli, int argc, char **argv);
int cli_measure(struct cli *cli, int argc, char **argv);
/* disk.c: the keyslot secret of a confidential disk image, unwrapped through the key service
 * with the image's opencvm-hsm token (for other groups writing into such disks). */
struct cvm_secret;
int cli_disk_unlock(struct cli *cli, const char *path, struct cvm_secret **secret,
		    struct cvm_err *err);

/* ---- options ---------------------------------------------------------------------------
 * A tiny long-option parser: verbs declare their options in a table; positional arguments are
 * collected in order. "--opt value" and "--opt=value" both work; flags take no value. */
struct cli_opt {
	const char *name;
	bool has_value;
	const char **value; /* set for options with a value (last one wins) */
	bool *flag;         /* set for flags */
	const char ***multi; /* repeated options collect into a NULL-terminated array */
};
int cli_parse(int argc, char **argv, const struct cli_opt *opts, size_t nopts,
	      const char **pos, size_t maxpos, size_t minpos, size_t *npos, const char *usage);

/* ---- talking to cvmd ------------------------------------------------------------------- */
int cli_connect(struct cli *cli, struct cvm_err *err);
/* method + path (relative to base, may carry a query; api-version is added when missing).
 * body may be NULL. On 2xx *out gets the parsed JSON (or NULL for empty bodies). Non-2xx ->
 * err filled from the Key Vault error body, errno from the status. */
int cli_call(struct cli *cli, const char *method, const char *path, json_t *body, json_t **out,
	     struct cvm_err *err);
/* Same, but against an absolute URL (nextLink paging). */
int cli_call_url(struct cli *cli, const char *method, const char *url, json_t *body,
		 json_t **out, struct cvm_err *err);
void cli_conn_free(struct cli_conn *c);
/* application/x-www-form-urlencoded escaping */
char *cli_form_escape(const char *s, size_t len);

/* ---- output ---------------------------------------------------------------------------- */
void cli_print_json(const json_t *v);
/* Print a table: columns are dotted JSON paths into each row object. */
void cli_print_table(json_t *rows, const char *const *headers, const char *const *paths,
		     size_t ncols);
/* Print "key: value" lines for the given paths of one object. */
void cli_print_fields(json_t *obj, const char *const *labels, const char *const *paths,
		      size_t n);
/* One-line error to stderr: "cvm: <context>: <code>: <message>". Returns the exit code. */
int cli_fail(const struct cvm_err *err, const char *context);
int cli_usage_error(const char *usage, const char *fmt, ...) CVM_PRINTF(2, 3);

/* ---- files ----------------------------------------------------------------------------- */
/* "-" means stdin/stdout. */
int cli_read_input(const char *path, size_t max, uint8_t **out, size_t *len, struct cvm_err *err);
int cli_write_output(const char *path, const void *data, size_t len, int mode,
		     struct cvm_err *err);
/* Read a whole secret file (trailing newline stripped). */
int cli_read_secret_file(const char *path, struct cvm_secret **out, struct cvm_err *err);
/* Keep the connection, authenticate as another identity (used by `cvm demo`). */
int cli_switch_identity(struct cli *cli, const char *client_id, const struct cvm_secret *secret,
			struct cvm_err *err);
