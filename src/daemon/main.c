/* SPDX-License-Identifier: Apache-2.0 */
/* cvmd: the OpenCVM service daemon (key service + attestation service over HTTPS). */
#include <getopt.h>
#include <stdio.h>
#include <string.h>

#include "daemon.h"

static void usage(FILE *f)
{
	fputs("usage: cvmd --config FILE\n"
	      "       cvmd --dev [--listen ADDR:PORT] [--dev-info FILE] [--store URL]\n"
	      "                  [--state-dir DIR] [--log-level LEVEL]\n"
	      "       cvmd --verify-audit (--config FILE | --store URL)\n"
	      "       cvmd --check-config --config FILE\n"
	      "See cvmd(8).\n",
	      f);
}

static int set_opt(char **dst, const char *v)
{
	free(*dst);
	*dst = strdup(v);
	return *dst ? 0 : -ENOMEM;
}

int main(int argc, char **argv)
{
	enum { OPT_DEV = 256, OPT_DEV_INFO, OPT_STORE, OPT_STATE, OPT_VERIFY, OPT_LEVEL, OPT_LISTEN,
	       OPT_CHECK };
	static const struct option opts[] = {
		{ "config", required_argument, NULL, 'c' },
		{ "dev", no_argument, NULL, OPT_DEV },
		{ "listen", required_argument, NULL, OPT_LISTEN },
		{ "dev-info", required_argument, NULL, OPT_DEV_INFO },
		{ "store", required_argument, NULL, OPT_STORE },
		{ "state-dir", required_argument, NULL, OPT_STATE },
		{ "verify-audit", no_argument, NULL, OPT_VERIFY },
		{ "check-config", no_argument, NULL, OPT_CHECK },
		{ "log-level", required_argument, NULL, OPT_LEVEL },
		{ "help", no_argument, NULL, 'h' },
		{ NULL, 0, NULL, 0 },
	};
	struct cvmd_config cfg;
	struct cvm_err err = { 0 };
	const char *config_path = NULL, *listen = NULL, *dev_info = NULL, *store = NULL;
	const char *state_dir = NULL, *level = NULL;
	bool dev = false, verify = false, check = false;
	int c, r = 0;

	cvmd_config_init(&cfg);
	while ((c = getopt_long(argc, argv, "c:h", opts, NULL)) != -1) {
		switch (c) {
		case 'c': config_path = optarg; break;
		case OPT_DEV: dev = true; break;
		case OPT_LISTEN: listen = optarg; break;
		case OPT_DEV_INFO: dev_info = optarg; break;
		case OPT_STORE: store = optarg; break;
		case OPT_STATE: state_dir = optarg; break;
		case OPT_VERIFY: verify = true; break;
		case OPT_CHECK: check = true; break;
		case OPT_LEVEL: level = optarg; break;
		case 'h': usage(stdout); return 0;
		default: usage(stderr); return 2;
		}
	}
	if (optind != argc || (dev && config_path) || (!dev && !config_path && !(verify && store)) ||
	    (!dev && (dev_info || state_dir)) || (check && (!config_path || verify))) {
		usage(stderr);
		return 2;
	}
	if (config_path)
		r = cvmd_config_load(&cfg, config_path, &err);
	if (r == 0 && level) {
		/* Reuse the config parser so both spell levels the same way. */
		_cleanup_free_ char *line = cvm_asprintf("log_level = %s\n", level);
		r = line ? cvmd_config_parse(&cfg, (const uint8_t *)line, strlen(line), &err)
			 : cvm_err_nomem(&err);
	}
	if (r == 0 && ((listen && set_opt(&cfg.listen, listen) < 0) ||
		       (store && set_opt(&cfg.store, store) < 0) ||
		       (state_dir && set_opt(&cfg.state_dir, state_dir) < 0) ||
		       (dev_info && set_opt(&cfg.dev_info, dev_info) < 0)))
		r = cvm_err_nomem(&err);
	if (r == 0 && dev) {
		cfg.dev = true;
		cfg.soft_delete_days = 7;
		cfg.purge_protection = false;
		if (!cfg.state_dir) {
			char tmpl[] = "/tmp/cvmd-dev-XXXXXX";
			if (!mkdtemp(tmpl))
				r = cvm_err_set(&err, errno, "InternalError", "mkdtemp: %s",
						strerror(errno));
			else if (set_opt(&cfg.state_dir, tmpl) < 0)
				r = cvm_err_nomem(&err);
			cfg.dev_temp_state = true;
		}
	}
	/* Verifying a store named on the command line needs nothing else from the config. */
	if (r == 0 && !(verify && cfg.store && !cfg.state_dir))
		r = cvmd_config_finish(&cfg, &err);
	cvm_log_set_level(cfg.log_level);
	if (r == 0 && check)
		printf("config: ok\n");
	else if (r == 0)
		r = verify ? cvmd_verify_audit(&cfg, &err) : cvmd_run(&cfg, &err);
	if (r < 0) {
		cvm_log_error("cvmd_failed", "code=%s error=\"%s\"", err.code, err.msg);
		fprintf(stderr, "cvmd: %s\n", err.msg);
	}
	cvmd_config_free(&cfg);
	return r < 0 ? 1 : 0;
}
