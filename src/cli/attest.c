/* SPDX-License-Identifier: Apache-2.0 */
/* cvm attest ... and cvm tee-emu ...: verify and decode TEE evidence locally, manage the
 * attestation service's policies, and run the TEE emulator (chains, reports, quotes, and the
 * service a guest reaches over virtio-serial). Verification runs in this process against the
 * built-in roots; nothing here needs cvmd except `attest policy get|set`. */
#include "cli.h"

#include <opencvm/attest.h>
#include <opencvm/vm.h>
#include <openssl/pem.h>

#include <poll.h>
#include <signal.h>
#include <string.h>
#include <sys/signalfd.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#define EVIDENCE_MAX (1u << 20)
#define POLICY_MAX (96u * 1024u)
#define ATTEST_API "api-version=2022-08-01"

/* A failed local check: one line naming it (the library's messages start with the check,
 * e.g. "snp.policy.debug: ..."), always exit 1 (cli_fail maps EACCES to "cannot connect"). */
static int verify_fail(struct cli *cli, const struct cvm_err *err)
{
	if (cli->json) {
		_cleanup_json_ json_t *o = json_pack("{s:s, s:{s:s, s:s}}", "verdict", "fail", "error",
						     "code", err->code[0] ? err->code : "Error",
						     "message", err->msg);
		if (o)
			cli_print_json(o);
	}
	fprintf(stderr, "cvm: attest verify: %s\n", err->msg);
	return CLI_FAIL;
}

/* Hex into a fixed buffer. Shorter values are allowed only for report data (zero-padded, as
 * a 32-byte hash in the first half is the common binding). */
static int hex_opt(const char *v, uint8_t *out, size_t len, bool pad, const char *what,
		   const char *usage)
{
	struct cvm_err err = { 0 };
	_cleanup_free_ uint8_t *b = NULL;
	size_t bl = 0;
	if (cvm_hex_decode(v, strlen(v), &b, &bl, what, &err) < 0)
		return cli_usage_error(usage, "%s", err.msg);
	if (bl > len || (!pad && bl != len))
		return cli_usage_error(usage, "%s: expected %s%zu bytes (%zu hex digits), got %zu",
				       what, pad ? "at most " : "", len, 2 * len, bl);
	memset(out, 0, len);
	memcpy(out, b, bl);
	return 0;
}

/* A 64-bit value in hex ("0x30000" or "30000"). */
static int u64_hex_opt(const char *v, uint64_t *out, const char *what, const char *usage)
{
	const char *p = cvm_str_startswith(v, "0x") || cvm_str_startswith(v, "0X") ? v + 2 : v;
	char *end = NULL;
	errno = 0;
	unsigned long long n = strtoull(p, &end, 16);
	if (!*p || *end || errno || *p == '-')
		return cli_usage_error(usage, "%s: expected a hexadecimal 64-bit value, got '%s'",
				       what, v);
	*out = n;
	return 0;
}

static int u32_opt(const char *v, int64_t max, uint32_t *out, const char *what, const char *usage)
{
	struct cvm_err err = { 0 };
	int64_t n = 0;
	if (cvm_parse_i64(v, 0, max, &n, what, &err) < 0)
		return cli_usage_error(usage, "%s", err.msg);
	*out = (uint32_t)n;
	return 0;
}

static int read_json_file(const char *path, size_t max, json_t **out, struct cvm_err *err)
{
	_cleanup_free_ uint8_t *buf = NULL;
	size_t len = 0;
	int r = cli_read_input(path, max, &buf, &len, err);
	if (r == 0 && (r = cvm_json_parse(buf, len, false, out, err)) < 0)
		cvm_err_prefix(err, "%s", path);
	return r;
}

/* ==== cvm attest verify ===================================================================== */

struct verify_args {
	const char *snp, *vcek, *ask, *ark, *certs_dir, *crl, *policy, *emu_root, *emu_fp;
	const char *tdx, *tcb_info, *qe_identity, *collateral_chain;
	const char *hcl, *tpm_quote, *tpm_sig, *pcrs, *td_quote, *nonce;
	int64_t at; /* certificate validity time, 0 = now */
};

/* --at: Unix seconds or an ISO 8601 UTC date/time, to check evidence as of when it was taken
 * (VLEKs live one year). */
static int time_opt(const char *v, int64_t *out, const char *usage)
{
	struct cvm_err err = { 0 };
	if (cvm_parse_i64(v, 1, INT64_MAX / 2, out, "--at", &err) == 0)
		return 0;
	static const char *const fmts[] = { "%Y-%m-%dT%H:%M:%SZ", "%Y-%m-%d" };
	for (size_t i = 0; i < CVM_ARRAY_SIZE(fmts); i++) {
		struct tm tm = { 0 };
		const char *end = strptime(v, fmts[i], &tm);
		if (end && !*end) {
			*out = (int64_t)timegm(&tm);
			return 0;
		}
	}
	return cli_usage_error(usage, "--at: expected Unix seconds, YYYY-MM-DD or "
				      "YYYY-MM-DDTHH:MM:SSZ, got '%s'", v);
}

static int print_verdict(struct cli *cli, const char *type, const char *summary, json_t *claims)
{
	if (cli->json) {
		_cleanup_json_ json_t *o = json_pack("{s:s, s:s, s:O}", "verdict", "pass", "type", type,
						     "claims", claims);
		if (!o)
			return CLI_FAIL;
		cli_print_json(o);
		return CLI_OK;
	}
	printf("verified: %s\n", summary);
	const char *k;
	json_t *v;
	json_object_foreach(claims, k, v) {
		_cleanup_free_ char *t = json_is_string(v) ? strdup(json_string_value(v))
							   : json_dumps(v, JSON_COMPACT | JSON_ENCODE_ANY);
		printf("  %-36s %s\n", k, t ? t : "-");
	}
	return CLI_OK;
}

/* Trust anchors: the built-in AMD roots, plus the emulator's only when both its directory and
 * the fingerprint the operator pinned are given. */
static int load_roots(const struct verify_args *a, bool snp, struct cvm_attest_roots **roots,
		      struct cvm_err *err)
{
	int r = cvm_attest_roots_new_builtin(roots, err);
	if (r == 0 && snp && a->emu_root)
		r = cvm_attest_roots_add_emulator(*roots, a->emu_root, a->emu_fp, err);
	return r;
}

static int snp_policy_load(const char *path, struct cvm_snp_policy *p,
			   struct cvm_snp_policy_store **store, struct cvm_err *err)
{
	cvm_snp_policy_default(p);
	if (!path)
		return 0;
	_cleanup_json_ json_t *j = NULL;
	int r = read_json_file(path, POLICY_MAX, &j, err);
	if (r == 0 && (r = cvm_snp_policy_from_json(j, p, store, err)) < 0)
		cvm_err_prefix(err, "policy %s", path);
	return r;
}

static int tdx_policy_load(const char *path, struct cvm_tdx_policy *p,
			   struct cvm_tdx_policy_store **store, struct cvm_err *err)
{
	cvm_tdx_policy_default(p);
	if (!path)
		return 0;
	_cleanup_json_ json_t *j = NULL;
	int r = read_json_file(path, POLICY_MAX, &j, err);
	if (r == 0 && (r = cvm_tdx_policy_from_json(j, p, store, err)) < 0)
		cvm_err_prefix(err, "policy %s", path);
	return r;
}

static int load_crl(const char *path, X509_CRL **out, struct cvm_err *err)
{
	_cleanup_free_ uint8_t *buf = NULL;
	size_t len = 0;
	int r = cli_read_input(path, EVIDENCE_MAX, &buf, &len, err);
	if (r < 0)
		return r;
	BIO *b = BIO_new_mem_buf(buf, (int)len);
	X509_CRL *c = b ? PEM_read_bio_X509_CRL(b, NULL, NULL, NULL) : NULL;
	if (!c && b) {
		const unsigned char *p = buf;
		c = d2i_X509_CRL(NULL, &p, (long)len);
	}
	BIO_free(b);
	if (!c)
		return cvm_err_openssl(err, EINVAL, path);
	*out = c;
	return 0;
}

static int verify_snp(struct cli *cli, const struct verify_args *a)
{
	struct cvm_err err = { 0 };
	_cleanup_roots_ struct cvm_attest_roots *roots = NULL;
	struct cvm_snp_policy pol;
	struct cvm_snp_policy_store *store = NULL;
	struct cvm_snp_verify_opts opts = { .now = a->at };
	struct cvm_snp_files f = { .report = a->snp, .vek = a->vcek, .ask = a->ask, .ark = a->ark,
				   .certs_dir = a->certs_dir };
	struct cvm_snp_verdict v;
	_cleanup_json_ json_t *claims = json_object();
	int r = claims ? 0 : cvm_err_nomem(&err);
	if (r == 0)
		r = load_roots(a, true, &roots, &err);
	if (r == 0)
		r = snp_policy_load(a->policy, &pol, &store, &err);
	if (r == 0 && a->crl)
		r = load_crl(a->crl, &opts.crl, &err);
	if (r == 0)
		r = cvm_snp_verify_files(&f, roots, &opts, &pol, &v, &err);
	if (r == 0)
		r = cvm_snp_verdict_claims(&v, claims, &err);
	if (r == 0 && v.emulated)
		r = json_object_set_new(claims, "x-opencvm-emulated", json_true()) ? cvm_err_nomem(&err) : 0;
	X509_CRL_free(opts.crl);
	cvm_snp_policy_store_free(store);
	if (r < 0)
		return verify_fail(cli, &err);
	char summary[160];
	snprintf(summary, sizeof(summary), "SEV-SNP report v%u, %s, signed by %s%s", v.report.version,
		 cvm_snp_product_name(v.product), v.signer == CVM_SNP_SIGNER_VLEK ? "VLEK" : "VCEK",
		 v.emulated ? " (EMULATED root)" : "");
	return print_verdict(cli, "sevsnpvm", summary, claims);
}

/* The TDX options shared by --tdx-quote and Azure TDX CVMs. */
struct tdx_ctx {
	struct cvm_tdx_verify_opts opts;
	struct cvm_tdx_policy pol;
	struct cvm_tdx_policy_store *store;
	uint8_t *tcb, *qe, *chain;
};

static void tdx_ctx_clear(struct tdx_ctx *t)
{
	X509_free(t->opts.emulator_root);
	cvm_tdx_policy_store_free(t->store);
	free(t->tcb);
	free(t->qe);
	free(t->chain);
}

static int tdx_ctx_load(const struct verify_args *a, struct tdx_ctx *t, struct cvm_err *err)
{
	size_t l = 0;
	int r = tdx_policy_load(a->policy, &t->pol, &t->store, err);
	if (r == 0 && a->emu_root)
		r = cvm_tee_emu_tdx_root(a->emu_root, a->emu_fp, &t->opts.emulator_root, err);
	if (r == 0 && a->tcb_info && (r = cli_read_input(a->tcb_info, EVIDENCE_MAX, &t->tcb, &l,
							 err)) == 0) {
		t->opts.tcb_info = (const char *)t->tcb;
		t->opts.tcb_info_len = l;
	}
	if (r == 0 && a->qe_identity && (r = cli_read_input(a->qe_identity, EVIDENCE_MAX, &t->qe,
							    &l, err)) == 0) {
		t->opts.qe_identity = (const char *)t->qe;
		t->opts.qe_identity_len = l;
	}
	if (r == 0 && a->collateral_chain &&
	    (r = cli_read_input(a->collateral_chain, EVIDENCE_MAX, &t->chain, &l, err)) == 0) {
		t->opts.collateral_chain = (const char *)t->chain;
		t->opts.collateral_chain_len = l;
	}
	/* Collateral files named on the command line without their signing chain are the
	 * operator's own vouching (fetched and checked out of band). */
	t->opts.collateral_trusted = !a->collateral_chain;
	t->opts.now = a->at;
	return r;
}

static int verify_tdx(struct cli *cli, const struct verify_args *a)
{
	struct cvm_err err = { 0 };
	struct tdx_ctx t = { 0 };
	_cleanup_free_ uint8_t *q = NULL;
	size_t ql = 0;
	struct cvm_tdx_verdict v;
	_cleanup_json_ json_t *claims = json_object();
	int r = claims ? tdx_ctx_load(a, &t, &err) : cvm_err_nomem(&err);
	if (r == 0)
		r = cli_read_input(a->tdx, EVIDENCE_MAX, &q, &ql, &err);
	if (r == 0)
		r = cvm_tdx_verify(q, ql, &t.opts, &t.pol, &v, &err);
	if (r == 0)
		r = cvm_tdx_verdict_claims(&v, claims, &err);
	if (r == 0 && v.emulated)
		r = json_object_set_new(claims, "x-opencvm-emulated", json_true()) ? cvm_err_nomem(&err) : 0;
	tdx_ctx_clear(&t);
	if (r < 0)
		return verify_fail(cli, &err);
	char summary[160];
	snprintf(summary, sizeof(summary), "TDX quote v%u%s%s%s", v.quote.version,
		 v.tcb_status[0] ? ", TCB " : "", v.tcb_status, v.emulated ? " (EMULATED root)" : "");
	return print_verdict(cli, "tdxvm", summary, claims);
}

/* Bytes given either as an array of integers or as a hex string (both appear in the wild). */
static int json_bytes(json_t *v, const char *what, uint8_t **out, size_t *len, struct cvm_err *err)
{
	if (json_is_string(v))
		return cvm_hex_decode(json_string_value(v), json_string_length(v), out, len, what, err);
	if (!json_is_array(v))
		return cvm_err_badparam(err, "%s: expected hex or an array of bytes", what);
	size_t n = json_array_size(v);
	uint8_t *b = malloc(n ? n : 1);
	if (!b)
		return cvm_err_nomem(err);
	for (size_t i = 0; i < n; i++) {
		json_t *e = json_array_get(v, i);
		if (!json_is_integer(e) || json_integer_value(e) < 0 || json_integer_value(e) > 255) {
			free(b);
			return cvm_err_badparam(err, "%s[%zu]: expected a byte", what, i);
		}
		b[i] = (uint8_t)json_integer_value(e);
	}
	*out = b;
	*len = n;
	return 0;
}

struct tpm_input {
	uint8_t *msg, *sig;
	size_t msg_len, sig_len;
	uint8_t pcrs[24][32];
};

static int pcrs_from_json(json_t *arr, uint8_t pcrs[24][32], struct cvm_err *err)
{
	if (json_array_size(arr) != 24)
		return cvm_err_badparam(err, "pcrs: expected 24 SHA-256 values (PCR0..23)");
	for (size_t i = 0; i < 24; i++) {
		_cleanup_free_ uint8_t *p = NULL;
		size_t pl = 0;
		char what[16];
		snprintf(what, sizeof(what), "pcrs[%zu]", i);
		int r = json_bytes(json_array_get(arr, i), what, &p, &pl, err);
		if (r < 0)
			return r;
		if (pl != 32)
			return cvm_err_badparam(err, "%s: expected 32 bytes", what);
		memcpy(pcrs[i], p, 32);
	}
	return 0;
}

/* --tpm-quote is either JSON {"message","signature","pcrs"} (also nested as "quote" or
 * "tpm_quote" in Azure evidence files) or a raw TPMS_ATTEST with --tpm-sig and --pcrs. */
static int tpm_input_load(const struct verify_args *a, struct tpm_input *t, struct cvm_err *err)
{
	_cleanup_free_ uint8_t *buf = NULL;
	size_t len = 0;
	int r = cli_read_input(a->tpm_quote, EVIDENCE_MAX, &buf, &len, err);
	if (r < 0)
		return r;
	_cleanup_json_ json_t *j = NULL;
	if (len && buf[0] == '{') {
		if ((r = cvm_json_parse(buf, len, false, &j, err)) < 0)
			return cvm_err_prefix(err, "%s", a->tpm_quote);
		json_t *q = json_object_get(j, "tpm_quote") ? json_object_get(j, "tpm_quote")
			  : json_object_get(j, "quote")    ? json_object_get(j, "quote")
							      : j;
		if ((r = json_bytes(json_object_get(q, "message"), "message", &t->msg, &t->msg_len,
				    err)) < 0 ||
		    (r = json_bytes(json_object_get(q, "signature"), "signature", &t->sig,
				    &t->sig_len, err)) < 0 ||
		    (r = pcrs_from_json(json_object_get(q, "pcrs"), t->pcrs, err)) < 0)
			return cvm_err_prefix(err, "%s", a->tpm_quote);
		return 0;
	}
	if (!a->tpm_sig || !a->pcrs)
		return cvm_err_badparam(err, "--tpm-quote %s: a raw quote needs --tpm-sig and --pcrs",
					a->tpm_quote);
	t->msg = CVM_TAKE(buf);
	t->msg_len = len;
	if ((r = cli_read_input(a->tpm_sig, EVIDENCE_MAX, &t->sig, &t->sig_len, err)) < 0 ||
	    (r = read_json_file(a->pcrs, EVIDENCE_MAX, &j, err)) < 0)
		return r;
	json_t *arr = json_is_array(j) ? j : json_object_get(j, "pcrs");
	return pcrs_from_json(arr, t->pcrs, err) < 0 ? cvm_err_prefix(err, "%s", a->pcrs) : 0;
}

static int verify_azure(struct cli *cli, const struct verify_args *a)
{
	struct cvm_err err = { 0 };
	_cleanup_roots_ struct cvm_attest_roots *roots = NULL;
	_cleanup_free_ uint8_t *hcl = NULL, *tdq = NULL, *nonce = NULL;
	size_t hl = 0, tdl = 0, nl = 0;
	struct tpm_input t = { 0 };
	struct tdx_ctx tc = { 0 };
	struct cvm_snp_policy sp;
	struct cvm_snp_policy_store *sstore = NULL;
	struct cvm_snp_certs certs = { 0 };
	struct cvm_hcl_report h;
	struct cvm_azure_verdict v;
	_cleanup_json_ json_t *claims = json_object();
	int r = claims ? cli_read_input(a->hcl, EVIDENCE_MAX, &hcl, &hl, &err) : cvm_err_nomem(&err);
	if (r == 0)
		r = cvm_hcl_report_parse(hcl, hl, &h, &err);
	bool tdx = r == 0 && h.report_type == 4;
	if (r == 0)
		r = tpm_input_load(a, &t, &err);
	if (r == 0)
		r = load_roots(a, !tdx, &roots, &err);
	/* One --policy file: its knobs are the SNP or TDX ones, by the hardware report inside. */
	if (r == 0)
		r = tdx ? tdx_ctx_load(a, &tc, &err) : snp_policy_load(a->policy, &sp, &sstore, &err);
	if (r == 0 && !tdx)
		cvm_tdx_policy_default(&tc.pol);
	if (r == 0 && a->vcek)
		r = cvm_snp_certs_add_file(&certs, a->vcek, &err);
	if (r == 0 && a->ask)
		r = cvm_snp_certs_add_file(&certs, a->ask, &err);
	if (r == 0 && a->ark)
		r = cvm_snp_certs_add_file(&certs, a->ark, &err);
	if (r == 0 && !tdx && a->certs_dir) {
		struct cvm_snp_report rep;
		r = cvm_snp_report_parse(h.hw_report, CVM_SNP_REPORT_SIZE, &rep, &err);
		if (r == 0)
			r = cvm_snp_certs_from_kds_dir(&certs, a->certs_dir, &rep,
						       CVM_SNP_PRODUCT_UNKNOWN, &err);
	}
	if (r == 0 && a->td_quote)
		r = cli_read_input(a->td_quote, EVIDENCE_MAX, &tdq, &tdl, &err);
	if (r == 0 && a->nonce)
		r = cvm_hex_decode(a->nonce, strlen(a->nonce), &nonce, &nl, "--nonce", &err);
	if (r == 0) {
		struct cvm_azure_evidence ev = {
			.hcl = hcl, .hcl_len = hl, .tpm_quote = t.msg, .tpm_quote_len = t.msg_len,
			.tpm_sig = t.sig, .tpm_sig_len = t.sig_len,
			.pcrs = (const uint8_t(*)[32])t.pcrs, .n_pcrs = 24, .nonce = nonce,
			.nonce_len = nl, .td_quote = tdq, .td_quote_len = tdl,
		};
		struct cvm_snp_verify_opts so = { .now = a->at };
		r = cvm_azure_verify(&ev, &certs, roots, &so, tdx ? NULL : &sp, &tc.opts, &tc.pol,
				     &v, &err);
	}
	if (r == 0)
		r = tdx ? cvm_tdx_verdict_claims(&v.tdx, claims, &err)
			: cvm_snp_verdict_claims(&v.snp, claims, &err);
	cvm_snp_certs_clear(&certs);
	cvm_snp_policy_store_free(sstore);
	tdx_ctx_clear(&tc);
	free(t.msg);
	free(t.sig);
	if (r < 0)
		return verify_fail(cli, &err);
	char summary[160];
	snprintf(summary, sizeof(summary), "Azure CVM (%s): HCL report, runtime data binding, vTPM "
		 "quote by HCLAkPub", tdx ? "TDX" : "SEV-SNP");
	return print_verdict(cli, "azurevm", summary, claims);
}

static int attest_verify(struct cli *cli, int argc, char **argv)
{
	static const char usage[] =
		"attest verify (--snp-report FILE [--vcek FILE] [--ask FILE --ark FILE] "
		"[--certs-dir DIR] [--crl FILE] | --tdx-quote FILE [--tcb-info FILE "
		"--qe-identity FILE [--collateral-chain FILE]] | --hcl-report FILE --tpm-quote FILE "
		"[--tpm-sig FILE --pcrs FILE] [--td-quote FILE] [--vcek FILE] [--nonce HEX]) "
		"[--policy FILE] [--emulator-root DIR --emulator-fingerprint HEX] [--at TIME] [--json]";
	struct verify_args a = { 0 };
	const char *at = NULL;
	const struct cli_opt opts[] = {
		{ "--at", true, &at, NULL, NULL },
		{ "--snp-report", true, &a.snp, NULL, NULL },
		{ "--vcek", true, &a.vcek, NULL, NULL },
		{ "--vlek", true, &a.vcek, NULL, NULL },
		{ "--ask", true, &a.ask, NULL, NULL },
		{ "--asvk", true, &a.ask, NULL, NULL },
		{ "--ark", true, &a.ark, NULL, NULL },
		{ "--certs-dir", true, &a.certs_dir, NULL, NULL },
		{ "--crl", true, &a.crl, NULL, NULL },
		{ "--policy", true, &a.policy, NULL, NULL },
		{ "--emulator-root", true, &a.emu_root, NULL, NULL },
		{ "--emulator-fingerprint", true, &a.emu_fp, NULL, NULL },
		{ "--tdx-quote", true, &a.tdx, NULL, NULL },
		{ "--tcb-info", true, &a.tcb_info, NULL, NULL },
		{ "--qe-identity", true, &a.qe_identity, NULL, NULL },
		{ "--collateral-chain", true, &a.collateral_chain, NULL, NULL },
		{ "--hcl-report", true, &a.hcl, NULL, NULL },
		{ "--tpm-quote", true, &a.tpm_quote, NULL, NULL },
		{ "--tpm-sig", true, &a.tpm_sig, NULL, NULL },
		{ "--pcrs", true, &a.pcrs, NULL, NULL },
		{ "--td-quote", true, &a.td_quote, NULL, NULL },
		{ "--nonce", true, &a.nonce, NULL, NULL },
	};
	int rc = cli_parse(argc, argv, opts, CVM_ARRAY_SIZE(opts), NULL, 0, 0, NULL, usage);
	if (rc)
		return rc;
	if (at && (rc = time_opt(at, &a.at, usage)))
		return rc;
	if (!!a.snp + !!a.tdx + !!a.hcl != 1)
		return cli_usage_error(usage, "give exactly one of --snp-report, --tdx-quote, "
					      "--hcl-report");
	/* The emulator is trusted only as a pair: its directory and the pinned fingerprint. */
	if (!a.emu_root != !a.emu_fp)
		return cli_usage_error(usage, "--emulator-root and --emulator-fingerprint go "
					      "together (the fingerprint `cvm tee-emu init` printed)");
	if (!a.ask != !a.ark)
		return cli_usage_error(usage, "--ask and --ark go together (or neither: built-in "
					      "roots)");
	if (a.hcl && !a.tpm_quote)
		return cli_usage_error(usage, "--hcl-report needs --tpm-quote");
	if ((a.tcb_info || a.qe_identity || a.collateral_chain) && !a.tdx && !a.hcl)
		return cli_usage_error(usage, "--tcb-info/--qe-identity apply to TDX quotes");
	if (a.snp)
		return verify_snp(cli, &a);
	if (a.tdx)
		return verify_tdx(cli, &a);
	return verify_azure(cli, &a);
}

/* ==== cvm attest show ======================================================================== */

/* Nested objects as indented "key  value" lines; arrays of scalars or objects compactly. */
static void print_tree(json_t *o, int depth)
{
	size_t w = 0;
	const char *k;
	json_t *v;
	json_object_foreach(o, k, v)
		if (!json_is_object(v) && strlen(k) > w)
			w = strlen(k);
	json_object_foreach(o, k, v) {
		if (json_is_object(v)) {
			printf("%*s%s:\n", depth * 2, "", k);
			print_tree(v, depth + 1);
			continue;
		}
		_cleanup_free_ char *t = json_is_string(v) ? strdup(json_string_value(v))
			: json_is_boolean(v) ? strdup(json_is_true(v) ? "yes" : "no")
					     : json_dumps(v, JSON_COMPACT | JSON_ENCODE_ANY);
		printf("%*s%-*s  %s\n", depth * 2, "", (int)w, k, t ? t : "-");
	}
}

static int attest_show(struct cli *cli, int argc, char **argv)
{
	static const char usage[] = "attest show FILE [--json]";
	const char *pos[1];
	int rc = cli_parse(argc, argv, NULL, 0, pos, 1, 1, NULL, usage);
	if (rc)
		return rc;
	struct cvm_err err = { 0 };
	_cleanup_free_ uint8_t *buf = NULL;
	size_t len = 0;
	_cleanup_json_ json_t *j = NULL;
	if (cli_read_input(pos[0], EVIDENCE_MAX, &buf, &len, &err) < 0 ||
	    cvm_evidence_to_json(buf, len, &j, &err) < 0)
		return cli_fail(&err, pos[0]);
	if (cli->json)
		cli_print_json(j);
	else
		print_tree(j, 0);
	return CLI_OK;
}

/* ==== cvm attest policy ====================================================================== */

static int check_type(const char *type, const char *usage)
{
	static const char *const types[] = { "SevSnpVm", "TdxVm", "AzureGuest" };
	for (size_t i = 0; i < CVM_ARRAY_SIZE(types); i++)
		if (strcmp(type, types[i]) == 0)
			return 0;
	return cli_usage_error(usage, "attestation type '%s': expected SevSnpVm, TdxVm or "
				      "AzureGuest", type);
}

static int policy_get(struct cli *cli, int argc, char **argv)
{
	static const char usage[] = "attest policy get TYPE [--out FILE] [--json]";
	const char *pos[1], *out = NULL;
	const struct cli_opt opts[] = { { "--out", true, &out, NULL, NULL } };
	int rc = cli_parse(argc, argv, opts, CVM_ARRAY_SIZE(opts), pos, 1, 1, NULL, usage);
	if (rc || (rc = check_type(pos[0], usage)))
		return rc;
	struct cvm_err err = { 0 };
	_cleanup_free_ char *path = cvm_asprintf("/policies/%s?" ATTEST_API, pos[0]);
	_cleanup_json_ json_t *res = NULL;
	if (!path)
		return CLI_FAIL;
	if (cli_call(cli, "GET", path, NULL, &res, &err) < 0)
		return cli_fail(&err, "attest policy get");
	const char *text = json_string_value(json_object_get(res, "policy"));
	if (!text) {
		cvm_err_internal(&err, "policies/%s: the response has no policy", pos[0]);
		return cli_fail(&err, "attest policy get");
	}
	if (out) {
		if (cli_write_output(out, text, strlen(text), 0644, &err) < 0)
			return cli_fail(&err, out);
		return CLI_OK;
	}
	if (cli->json)
		cli_print_json(res);
	else
		fputs(text, stdout);
	if (!cli->json && *text && text[strlen(text) - 1] != '\n')
		putchar('\n');
	return CLI_OK;
}

/* MAA's wire form: an unsigned JWS whose payload is {"AttestationPolicy": b64url(text)},
 * sent as a JSON string; the policy text itself never needs JSON escaping this way. */
static char *policy_jws(const uint8_t *text, size_t len)
{
	_cleanup_free_ char *b = cvm_b64url_encode(text, len);
	_cleanup_json_ json_t *p = b ? json_pack("{s:s}", "AttestationPolicy", b) : NULL;
	_cleanup_free_ char *ps = p ? cvm_json_dump(p) : NULL;
	_cleanup_free_ char *pb = ps ? cvm_b64url_encode(ps, strlen(ps)) : NULL;
	static const char hdr[] = "{\"alg\":\"none\"}";
	_cleanup_free_ char *hb = cvm_b64url_encode(hdr, sizeof(hdr) - 1);
	return pb && hb ? cvm_asprintf("%s.%s.", hb, pb) : NULL;
}

static int policy_parse_file(const char *file, uint8_t **text, size_t *len,
			     struct cvm_maa_policy **out, struct cvm_err *err)
{
	int r = cli_read_input(file, POLICY_MAX, text, len, err);
	if (r < 0)
		return r;
	r = cvm_maa_policy_parse((const char *)*text, *len, out, err);
	/* "policy:LINE:COL: what" reads better with the file's name, as compilers print it. */
	if (r < 0 && cvm_str_startswith(err->msg, "policy:")) {
		char msg[sizeof(err->msg)];
		snprintf(msg, sizeof(msg), "%s:%s", file, err->msg + strlen("policy:"));
		memcpy(err->msg, msg, sizeof(msg));
	}
	return r;
}

static int policy_set(struct cli *cli, int argc, char **argv)
{
	static const char usage[] = "attest policy set TYPE --policy FILE";
	const char *pos[1], *file = NULL;
	const struct cli_opt opts[] = { { "--policy", true, &file, NULL, NULL } };
	int rc = cli_parse(argc, argv, opts, CVM_ARRAY_SIZE(opts), pos, 1, 1, NULL, usage);
	if (rc || (rc = check_type(pos[0], usage)))
		return rc;
	if (!file)
		return cli_usage_error(usage, "--policy FILE is required");
	struct cvm_err err = { 0 };
	_cleanup_free_ uint8_t *text = NULL;
	size_t len = 0;
	_cleanup_(cvm_maa_policy_freep) struct cvm_maa_policy *p = NULL;
	/* Parse locally first: a typo is reported with its line and column before any call. */
	if (policy_parse_file(file, &text, &len, &p, &err) < 0) {
		fprintf(stderr, "cvm: attest policy set: %s\n", err.msg);
		return CLI_FAIL;
	}
	_cleanup_free_ char *jws = policy_jws(text, len);
	_cleanup_free_ char *path = cvm_asprintf("/policies/%s?" ATTEST_API, pos[0]);
	_cleanup_json_ json_t *body = jws ? json_string(jws) : NULL;
	_cleanup_json_ json_t *res = NULL;
	if (!body || !path)
		return CLI_FAIL;
	if (cli_call(cli, "PUT", path, body, &res, &err) < 0)
		return cli_fail(&err, "attest policy set");
	if (cli->json)
		cli_print_json(res);
	else
		printf("policy for %s updated (sha256 %s)\n", pos[0], cvm_maa_policy_hash(p));
	return CLI_OK;
}

static int policy_test(struct cli *cli, int argc, char **argv)
{
	static const char usage[] = "attest policy test --policy FILE --claims FILE [--json]";
	const char *file = NULL, *claims_file = NULL;
	const struct cli_opt opts[] = { { "--policy", true, &file, NULL, NULL },
					{ "--claims", true, &claims_file, NULL, NULL } };
	int rc = cli_parse(argc, argv, opts, CVM_ARRAY_SIZE(opts), NULL, 0, 0, NULL, usage);
	if (rc)
		return rc;
	if (!file || !claims_file)
		return cli_usage_error(usage, "--policy and --claims are required");
	struct cvm_err err = { 0 };
	_cleanup_free_ uint8_t *text = NULL;
	size_t len = 0;
	_cleanup_(cvm_maa_policy_freep) struct cvm_maa_policy *p = NULL;
	if (policy_parse_file(file, &text, &len, &p, &err) < 0) {
		fprintf(stderr, "cvm: attest policy test: %s\n", err.msg);
		return CLI_FAIL;
	}
	_cleanup_json_ json_t *claims = NULL, *issued = json_object();
	if (!issued)
		return CLI_FAIL;
	if (read_json_file(claims_file, EVIDENCE_MAX, &claims, &err) < 0)
		return cli_fail(&err, "attest policy test");
	/* `attest verify --json` output can be fed back as it is: take its claims. */
	json_t *flat = json_is_object(json_object_get(claims, "claims"))
			       ? json_object_get(claims, "claims") : claims;
	bool permitted = false;
	if (cvm_maa_policy_eval(p, flat, &permitted, issued, &err) < 0)
		return cli_fail(&err, "attest policy test");
	if (cli->json) {
		_cleanup_json_ json_t *o = json_pack("{s:b, s:O}", "permitted", permitted, "issued",
						     issued);
		if (o)
			cli_print_json(o);
	} else {
		printf("%s\n", permitted ? "permitted" : "denied (no authorization rule permits these claims)");
		if (permitted && json_object_size(issued)) {
			printf("issued claims:\n");
			print_tree(issued, 1);
		}
	}
	return permitted ? CLI_OK : CLI_FAIL;
}

static int attest_policy(struct cli *cli, int argc, char **argv)
{
	static const struct cli_verb verbs[] = {
		{ "get", policy_get, "get TYPE [--out FILE]" },
		{ "set", policy_set, "set TYPE --policy FILE" },
		{ "test", policy_test, "test --policy FILE --claims FILE" },
	};
	return cli_dispatch(cli, "attest policy", verbs, CVM_ARRAY_SIZE(verbs), argc - 1, argv + 1);
}

int cli_attest(struct cli *cli, int argc, char **argv)
{
	static const struct cli_verb verbs[] = {
		{ "verify", attest_verify,
		  "verify --snp-report FILE|--tdx-quote FILE|--hcl-report FILE --tpm-quote FILE "
		  "[--vcek F] [--ask F --ark F] [--certs-dir D] [--crl F] [--policy F] "
		  "[--emulator-root D --emulator-fingerprint HEX]" },
		{ "show", attest_show, "show FILE" },
		{ "policy", attest_policy, "policy get|set|test ..." },
	};
	return cli_dispatch(cli, "attest", verbs, CVM_ARRAY_SIZE(verbs), argc, argv);
}

/* ==== cvm tee-emu ============================================================================ */

static int emu_init(struct cli *cli, int argc, char **argv)
{
	static const char usage[] = "tee-emu init DIR [--product milan|genoa|turin] [--tdx]";
	const char *pos[1], *product = NULL;
	bool tdx = false;
	const struct cli_opt opts[] = { { "--product", true, &product, NULL, NULL },
					{ "--tdx", false, NULL, &tdx, NULL } };
	int rc = cli_parse(argc, argv, opts, CVM_ARRAY_SIZE(opts), pos, 1, 1, NULL, usage);
	if (rc)
		return rc;
	struct cvm_tee_emu_params p = { .product = CVM_SNP_PRODUCT_GENOA };
	if (product && ((p.product = cvm_snp_product_from_name(product)) == CVM_SNP_PRODUCT_UNKNOWN))
		return cli_usage_error(usage, "--product: expected milan, genoa or turin");
	/* Never overwrite a chain: verifiers pinned its fingerprint. */
	_cleanup_free_ char *ark = cvm_path_join(pos[0], "ark.pem");
	if (!ark)
		return CLI_FAIL;
	if (access(ark, F_OK) == 0) {
		fprintf(stderr, "cvm: tee-emu init: %s already holds an emulator (ark.pem); "
				"choose another directory\n", pos[0]);
		return CLI_FAIL;
	}
	struct cvm_err err = { 0 };
	char fp[65], tfp[65] = "";
	/* A random chip id, as every real chip has its own. */
	if (cvm_random(p.chip_id, sizeof(p.chip_id), &err) < 0 ||
	    cvm_tee_emu_init(pos[0], &p, fp, &err) < 0)
		return cli_fail(&err, "tee-emu init");
	if (tdx) {
		struct cvm_tee_emu_tdx_params tp = { .pcesvn = 13 };
		static const uint8_t fmspc[6] = { 0x00, 0x80, 0x6f, 0x05, 0x00, 0x00 };
		memcpy(tp.fmspc, fmspc, sizeof(fmspc));
		memset(tp.cpusvn, 3, sizeof(tp.cpusvn));
		memset(tp.tee_tcb_svn, 3, sizeof(tp.tee_tcb_svn));
		if (cvm_tee_emu_tdx_init(pos[0], &tp, tfp, &err) < 0)
			return cli_fail(&err, "tee-emu init --tdx");
	}
	if (cli->json) {
		_cleanup_json_ json_t *o = json_pack("{s:s, s:s, s:s}", "dir", pos[0], "product",
						     cvm_snp_product_name(p.product), "ark_sha256",
						     fp);
		if (o && tdx)
			json_object_set_new(o, "tdx_root_sha256", json_string(tfp));
		if (o)
			cli_print_json(o);
		return CLI_OK;
	}
	printf("emulated %s chain in %s\nark_sha256 %s\n", cvm_snp_product_name(p.product), pos[0],
	       fp);
	if (tdx)
		printf("tdx_root_sha256 %s\n", tfp);
	printf("To trust it (tests only), configure cvmd with\n"
	       "  attest_emulator_root = %s\n  attest_emulator_fingerprint = %s\n"
	       "or pass --emulator-root %s --emulator-fingerprint %s to `cvm attest verify`.\n",
	       pos[0], fp, pos[0], fp);
	return CLI_OK;
}

/* A CRL signed by the emulator ARK (DIR/crl.pem), to exercise `attest verify --crl`. */
static int emu_crl(struct cli *cli, int argc, char **argv)
{
	static const char usage[] = "tee-emu crl DIR [--revoke-vcek]";
	const char *pos[1];
	bool revoke = false;
	const struct cli_opt opts[] = { { "--revoke-vcek", false, NULL, &revoke, NULL } };
	int rc = cli_parse(argc, argv, opts, CVM_ARRAY_SIZE(opts), pos, 1, 1, NULL, usage);
	if (rc)
		return rc;
	struct cvm_err err = { 0 };
	if (cvm_tee_emu_crl(pos[0], revoke, &err) < 0)
		return cli_fail(&err, "tee-emu crl");
	if (!cli->json)
		printf("%s/crl.pem written (%s)\n", pos[0],
		       revoke ? "the emulator VCEK is revoked" : "nothing revoked");
	return CLI_OK;
}

/* What the VM is, as the host's launch description fixes it (shared by report and serve). */
struct emu_vm_args {
	const char *report_data, *measurement, *host_data, *policy, *vmpl, *family_id, *image_id,
		*guest_svn;
	const char *mrtd, *rtmr[4], *mrconfigid, *mrowner, *mrownerconfig, *td_attributes, *xfam;
};

#define EMU_SNP_OPTS(a)                                                                   \
	{ "--measurement", true, &(a).measurement, NULL, NULL },                          \
	{ "--host-data", true, &(a).host_data, NULL, NULL },                              \
	{ "--policy", true, &(a).policy, NULL, NULL },                                    \
	{ "--vmpl", true, &(a).vmpl, NULL, NULL },                                        \
	{ "--family-id", true, &(a).family_id, NULL, NULL },                              \
	{ "--image-id", true, &(a).image_id, NULL, NULL },                                \
	{ "--guest-svn", true, &(a).guest_svn, NULL, NULL }
#define EMU_TDX_OPTS(a)                                                                   \
	{ "--mrtd", true, &(a).mrtd, NULL, NULL },                                        \
	{ "--rtmr0", true, &(a).rtmr[0], NULL, NULL },                                    \
	{ "--rtmr1", true, &(a).rtmr[1], NULL, NULL },                                    \
	{ "--rtmr2", true, &(a).rtmr[2], NULL, NULL },                                    \
	{ "--rtmr3", true, &(a).rtmr[3], NULL, NULL },                                    \
	{ "--mrconfigid", true, &(a).mrconfigid, NULL, NULL },                            \
	{ "--mrowner", true, &(a).mrowner, NULL, NULL },                                  \
	{ "--mrownerconfig", true, &(a).mrownerconfig, NULL, NULL },                      \
	{ "--td-attributes", true, &(a).td_attributes, NULL, NULL },                      \
	{ "--xfam", true, &(a).xfam, NULL, NULL }

static int emu_snp_in(const struct emu_vm_args *a, struct cvm_tee_emu_report_in *in,
		      const char *usage)
{
	int rc = 0;
	memset(in, 0, sizeof(*in));
	if (a->report_data)
		rc = hex_opt(a->report_data, in->report_data, 64, true, "--report-data", usage);
	if (!rc && a->measurement)
		rc = hex_opt(a->measurement, in->measurement, 48, false, "--measurement", usage);
	if (!rc && a->host_data)
		rc = hex_opt(a->host_data, in->host_data, 32, false, "--host-data", usage);
	if (!rc && a->family_id)
		rc = hex_opt(a->family_id, in->family_id, 16, false, "--family-id", usage);
	if (!rc && a->image_id)
		rc = hex_opt(a->image_id, in->image_id, 16, false, "--image-id", usage);
	if (!rc && a->policy)
		rc = u64_hex_opt(a->policy, &in->policy, "--policy", usage);
	if (!rc && a->vmpl)
		rc = u32_opt(a->vmpl, 3, &in->vmpl, "--vmpl", usage);
	if (!rc && a->guest_svn)
		rc = u32_opt(a->guest_svn, UINT32_MAX, &in->guest_svn, "--guest-svn", usage);
	return rc;
}

static int emu_tdx_in(const struct emu_vm_args *a, struct cvm_tee_emu_tdx_in *in,
		      const char *usage)
{
	int rc = 0;
	memset(in, 0, sizeof(*in));
	if (a->report_data)
		rc = hex_opt(a->report_data, in->report_data, 64, true, "--report-data", usage);
	if (!rc && a->mrtd)
		rc = hex_opt(a->mrtd, in->mrtd, 48, false, "--mrtd", usage);
	for (size_t i = 0; !rc && i < 4; i++)
		if (a->rtmr[i])
			rc = hex_opt(a->rtmr[i], in->rtmr[i], 48, false, "--rtmrN", usage);
	if (!rc && a->mrconfigid)
		rc = hex_opt(a->mrconfigid, in->mrconfigid, 48, false, "--mrconfigid", usage);
	if (!rc && a->mrowner)
		rc = hex_opt(a->mrowner, in->mrowner, 48, false, "--mrowner", usage);
	if (!rc && a->mrownerconfig)
		rc = hex_opt(a->mrownerconfig, in->mrownerconfig, 48, false, "--mrownerconfig",
			     usage);
	if (!rc && a->td_attributes)
		rc = u64_hex_opt(a->td_attributes, &in->td_attributes, "--td-attributes", usage);
	if (!rc && a->xfam)
		rc = u64_hex_opt(a->xfam, &in->xfam, "--xfam", usage);
	return rc;
}

static int emu_report(struct cli *cli, int argc, char **argv)
{
	(void)cli;
	static const char usage[] =
		"tee-emu report DIR --report-data HEX --measurement HEX [--host-data HEX] "
		"[--policy HEX] [--vmpl N] [--family-id HEX] [--image-id HEX] [--guest-svn N] "
		"--out FILE";
	struct emu_vm_args a = { 0 };
	const char *pos[1], *out = NULL;
	const struct cli_opt opts[] = {
		{ "--report-data", true, &a.report_data, NULL, NULL },
		EMU_SNP_OPTS(a),
		{ "--out", true, &out, NULL, NULL },
	};
	int rc = cli_parse(argc, argv, opts, CVM_ARRAY_SIZE(opts), pos, 1, 1, NULL, usage);
	if (rc)
		return rc;
	if (!a.report_data || !a.measurement || !out)
		return cli_usage_error(usage, "--report-data, --measurement and --out are required");
	struct cvm_tee_emu_report_in in;
	if ((rc = emu_snp_in(&a, &in, usage)))
		return rc;
	struct cvm_err err = { 0 };
	uint8_t rep[CVM_SNP_REPORT_SIZE];
	if (cvm_tee_emu_snp_report(pos[0], &in, rep, &err) < 0)
		return cli_fail(&err, "tee-emu report");
	if (cli_write_output(out, rep, sizeof(rep), 0644, &err) < 0)
		return cli_fail(&err, out);
	return CLI_OK;
}

static int emu_quote(struct cli *cli, int argc, char **argv)
{
	(void)cli;
	static const char usage[] =
		"tee-emu quote DIR --report-data HEX --mrtd HEX [--rtmr0..3 HEX] [--mrconfigid HEX] "
		"[--mrowner HEX] [--mrownerconfig HEX] [--td-attributes HEX] [--xfam HEX] --out FILE";
	struct emu_vm_args a = { 0 };
	const char *pos[1], *out = NULL;
	const struct cli_opt opts[] = {
		{ "--report-data", true, &a.report_data, NULL, NULL },
		EMU_TDX_OPTS(a),
		{ "--out", true, &out, NULL, NULL },
	};
	int rc = cli_parse(argc, argv, opts, CVM_ARRAY_SIZE(opts), pos, 1, 1, NULL, usage);
	if (rc)
		return rc;
	if (!a.report_data || !a.mrtd || !out)
		return cli_usage_error(usage, "--report-data, --mrtd and --out are required");
	struct cvm_tee_emu_tdx_in in;
	if ((rc = emu_tdx_in(&a, &in, usage)))
		return rc;
	struct cvm_err err = { 0 };
	_cleanup_buf_ struct cvm_buf q = { 0 };
	if (cvm_tee_emu_tdx_quote(pos[0], &in, &q, &err) < 0)
		return cli_fail(&err, "tee-emu quote");
	if (cli_write_output(out, q.data, q.len, 0644, &err) < 0)
		return cli_fail(&err, out);
	return CLI_OK;
}

/* ---- service mode --------------------------------------------------------------------------
 * One connection at a time (QEMU's chardev holds one), newline-framed. A line starting with
 * '{' is the JSON protocol (cvm_tee_emu_serve: SNP reports and TDX quotes); anything else is
 * the cvm-guest line protocol (SNP_REPORT <hex>, VCEK; cvm_vm_tee_emu_handle). */

static int write_all(int fd, const char *s, size_t len)
{
	while (len) {
		ssize_t w = write(fd, s, len);
		if (w < 0 && errno == EINTR)
			continue;
		if (w <= 0)
			return -EIO;
		s += w;
		len -= (size_t)w;
	}
	return 0;
}

struct emu_srv {
	const char *dir;
	struct cvm_tee_emu_vm vm;
	struct cvm_vm_tee_emu line;
};

static int serve_line(const struct emu_srv *s, int fd, const char *line, size_t n)
{
	struct cvm_err err = { 0 };
	_cleanup_free_ char *reply = NULL;
	if (n && line[0] == '{') {
		/* Errors travel in the reply ({"error": ...}); the connection stays up. */
		cvm_tee_emu_serve(s->dir, &s->vm, line, n, &reply, &err);
		if (!reply)
			return -ENOMEM;
		int r = write_all(fd, reply, strlen(reply));
		return r < 0 ? r : write_all(fd, "\n", 1);
	}
	if (cvm_vm_tee_emu_handle(&s->line, line, &reply, &err) < 0)
		return -ENOMEM;
	return write_all(fd, reply, strlen(reply));
}

/* Returns 1 when a stop signal arrived while the connection was open. */
static int serve_conn(const struct emu_srv *s, int fd, int sfd)
{
	_cleanup_free_ char *line = malloc(CVM_VM_HOST_LINE_MAX + 1);
	size_t n = 0;
	bool overlong = false;
	if (!line)
		return -ENOMEM;
	for (;;) {
		struct pollfd p[2] = { { .fd = fd, .events = POLLIN }, { .fd = sfd, .events = POLLIN } };
		if (poll(p, 2, -1) < 0) {
			if (errno == EINTR)
				continue;
			return -errno;
		}
		if (p[1].revents)
			return 1;
		char chunk[4096];
		ssize_t rd = read(fd, chunk, sizeof(chunk));
		if (rd < 0 && errno == EINTR)
			continue;
		if (rd <= 0)
			return 0;
		for (ssize_t i = 0; i < rd; i++) {
			if (chunk[i] != '\n') {
				if (n < CVM_VM_HOST_LINE_MAX)
					line[n++] = chunk[i];
				else
					overlong = true;
				continue;
			}
			if (n && line[n - 1] == '\r')
				n--;
			line[n] = '\0';
			int r = overlong ? write_all(fd, "ERR request too long\n", 21)
					 : serve_line(s, fd, line, n);
			if (r < 0)
				return 0; /* the peer went away mid-reply: wait for the next one */
			n = 0;
			overlong = false;
		}
	}
}

static int listen_unix(const char *path, struct cvm_err *err)
{
	struct sockaddr_un sa = { .sun_family = AF_UNIX };
	if (strlen(path) >= sizeof(sa.sun_path))
		return cvm_err_badparam(err, "--socket: path longer than %zu bytes",
					sizeof(sa.sun_path) - 1);
	memcpy(sa.sun_path, path, strlen(path) + 1);
	/* A stale socket from an earlier run is replaced; any other file is not. */
	struct stat st;
	if (lstat(path, &st) == 0) {
		if (!S_ISSOCK(st.st_mode))
			return cvm_err_set(err, EEXIST, "Conflict", "--socket %s: exists and is not "
					   "a socket", path);
		unlink(path);
	}
	int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (fd < 0)
		return cvm_err_internal(err, "socket: %s", strerror(errno));
	/* The socket hands out signed evidence: owner only (QEMU runs as the same user). */
	mode_t old = umask(0077);
	int r = bind(fd, (struct sockaddr *)&sa, sizeof(sa));
	umask(old);
	if (r < 0 || listen(fd, 4) < 0) {
		int e = errno;
		close(fd);
		return cvm_err_set(err, e, "InternalError", "--socket %s: %s", path, strerror(e));
	}
	return fd;
}

static int emu_serve(struct cli *cli, int argc, char **argv)
{
	(void)cli;
	static const char usage[] =
		"tee-emu serve DIR --socket PATH [--measurement HEX] [--host-data HEX] "
		"[--policy HEX] [--vmpl N] [--family-id HEX] [--image-id HEX] [--guest-svn N] "
		"[--mrtd HEX] [--rtmr0..3 HEX] [--mrconfigid HEX] [--mrowner HEX] "
		"[--mrownerconfig HEX] [--td-attributes HEX] [--xfam HEX] [--once]";
	struct emu_vm_args a = { 0 };
	const char *pos[1], *sock = NULL;
	bool once = false;
	const struct cli_opt opts[] = {
		EMU_SNP_OPTS(a),
		EMU_TDX_OPTS(a),
		{ "--socket", true, &sock, NULL, NULL },
		{ "--once", false, NULL, &once, NULL },
	};
	int rc = cli_parse(argc, argv, opts, CVM_ARRAY_SIZE(opts), pos, 1, 1, NULL, usage);
	if (rc)
		return rc;
	if (!sock)
		return cli_usage_error(usage, "--socket PATH is required");
	struct emu_srv s = { .dir = pos[0] };
	if ((rc = emu_snp_in(&a, &s.vm.snp, usage)) || (rc = emu_tdx_in(&a, &s.vm.tdx, usage)))
		return rc;
	s.line = (struct cvm_vm_tee_emu){ .emu_dir = pos[0], .tmpl = s.vm.snp };
	struct cvm_err err = { 0 };
	char fp[65];
	/* Fail now, not at the guest's first request, when DIR holds no emulator. */
	if (cvm_tee_emu_fingerprint(pos[0], fp, &err) < 0)
		return cli_fail(&err, "tee-emu serve");
	sigset_t mask;
	sigemptyset(&mask);
	sigaddset(&mask, SIGINT);
	sigaddset(&mask, SIGTERM);
	sigaddset(&mask, SIGPIPE);
	if (sigprocmask(SIG_BLOCK, &mask, NULL) < 0)
		return CLI_FAIL;
	sigdelset(&mask, SIGPIPE); /* stays blocked: a vanished peer is a write error */
	int sfd = signalfd(-1, &mask, SFD_CLOEXEC);
	int lfd = sfd < 0 ? cvm_err_internal(&err, "signalfd: %s", strerror(errno))
			  : listen_unix(sock, &err);
	if (lfd < 0) {
		if (sfd >= 0)
			close(sfd);
		return cli_fail(&err, "tee-emu serve");
	}
	cvm_log_info("tee_emu_serving", "dir=%s socket=%s ark_sha256=%s", pos[0], sock, fp);
	fprintf(stderr, "cvm: tee-emu: serving %s on %s\n", pos[0], sock);
	rc = CLI_OK;
	for (bool stop = false; !stop;) {
		struct pollfd p[2] = { { .fd = lfd, .events = POLLIN }, { .fd = sfd, .events = POLLIN } };
		if (poll(p, 2, -1) < 0) {
			if (errno == EINTR)
				continue;
			rc = CLI_FAIL;
			break;
		}
		if (p[1].revents)
			break;
		int cfd = accept4(lfd, NULL, NULL, SOCK_CLOEXEC);
		if (cfd < 0)
			continue;
		int r = serve_conn(&s, cfd, sfd);
		close(cfd);
		stop = r == 1 || once;
		if (r < 0)
			rc = CLI_FAIL;
	}
	close(lfd);
	close(sfd);
	unlink(sock);
	return rc;
}

int cli_tee_emu(struct cli *cli, int argc, char **argv)
{
	static const struct cli_verb verbs[] = {
		{ "init", emu_init, "init DIR [--product milan|genoa|turin] [--tdx]" },
		{ "report", emu_report,
		  "report DIR --report-data HEX --measurement HEX [--host-data HEX] [--policy HEX] "
		  "[--vmpl N] --out FILE" },
		{ "quote", emu_quote, "quote DIR --report-data HEX --mrtd HEX [--rtmr0..3 HEX] --out FILE" },
		{ "serve", emu_serve, "serve DIR --socket PATH [--measurement HEX ...] [--once]" },
		{ "crl", emu_crl, "crl DIR [--revoke-vcek]" },
	};
	return cli_dispatch(cli, "tee-emu", verbs, CVM_ARRAY_SIZE(verbs), argc, argv);
}
