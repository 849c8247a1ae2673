/* SPDX-License-Identifier: Apache-2.0 */
/* Shared CLI plumbing: verb dispatch, option parsing, output, file I/O. */
#include "cli.h"

#include <fcntl.h>
#include <string.h>
#include <unistd.h>

int cli_dispatch(struct cli *cli, const char *group, const struct cli_verb *verbs, size_t n,
		 int argc, char **argv)
{
	if (argc >= 1 && strcmp(argv[0], "help") != 0 && strcmp(argv[0], "--help") != 0) {
		for (size_t i = 0; i < n; i++)
			if (strcmp(argv[0], verbs[i].name) == 0)
				return verbs[i].fn(cli, argc, argv);
		fprintf(stderr, "cvm %s: unknown verb '%s'\n", group, argv[0]);
	}
	FILE *f = argc >= 1 && strcmp(argv[0], "help") == 0 ? stdout : stderr;
	fprintf(f, "usage:\n");
	for (size_t i = 0; i < n; i++)
		fprintf(f, "  cvm %s %s\n", group, verbs[i].usage);
	return f == stdout ? CLI_OK : CLI_USAGE;
}

int cli_usage_error(const char *usage, const char *fmt, ...)
{
	va_list ap;
	fprintf(stderr, "cvm: ");
	va_start(ap, fmt);
	vfprintf(stderr, fmt, ap);
	va_end(ap);
	fprintf(stderr, "\nusage: cvm %s\n", usage);
	return CLI_USAGE;
}

static int push_multi(const char ***multi, const char *v)
{
	size_t n = 0;
	while (*multi && (*multi)[n])
		n++;
	const char **p = realloc(*multi, (n + 2) * sizeof(*p));
	if (!p)
		return -ENOMEM;
	p[n] = v;
	p[n + 1] = NULL;
	*multi = p;
	return 0;
}

int cli_parse(int argc, char **argv, const struct cli_opt *opts, size_t nopts,
	      const char **pos, size_t maxpos, size_t minpos, size_t *npos, const char *usage)
{
	size_t np = 0;
	bool only_pos = false;
	for (int i = 1; i < argc; i++) {
		const char *a = argv[i];
		if (!only_pos && strcmp(a, "--") == 0) {
			only_pos = true;
			continue;
		}
		if (only_pos || a[0] != '-' || a[1] != '-' || strcmp(a, "-") == 0) {
			if (np >= maxpos)
				return cli_usage_error(usage, "unexpected argument '%s'", a);
			pos[np++] = a;
			continue;
		}
		const char *eq = strchr(a, '=');
		size_t nl = eq ? (size_t)(eq - a) : strlen(a);
		const struct cli_opt *o = NULL;
		for (size_t k = 0; k < nopts; k++)
			if (strlen(opts[k].name) == nl && strncmp(opts[k].name, a, nl) == 0)
				o = &opts[k];
		if (!o)
			return cli_usage_error(usage, "unknown option '%.*s'", (int)nl, a);
		if (!o->has_value) {
			if (eq)
				return cli_usage_error(usage, "%s takes no value", o->name);
			*o->flag = true;
			continue;
		}
		const char *v = eq ? eq + 1 : NULL;
		if (!v) {
			if (i + 1 >= argc)
				return cli_usage_error(usage, "%s needs a value", o->name);
			v = argv[++i];
		}
		if (o->multi) {
			if (push_multi(o->multi, v) < 0)
				return CLI_FAIL;
		} else {
			*o->value = v;
		}
	}
	if (np < minpos)
		return cli_usage_error(usage, "missing argument");
	if (npos)
		*npos = np;
	return 0;
}

void cli_print_json(const json_t *v)
{
	char *s = json_dumps(v, JSON_INDENT(2) | JSON_PRESERVE_ORDER | JSON_ENCODE_ANY);
	if (s) {
		puts(s);
		free(s);
	}
}

/* Render a scalar JSON value for a table cell; times (created/updated/...) stay numeric in
 * --json output but read as ISO dates here. */
static char *cell_text(json_t *v, const char *path)
{
	if (!v || json_is_null(v))
		return strdup("-");
	if (json_is_string(v))
		return strdup(json_string_value(v));
	if (json_is_boolean(v))
		return strdup(json_is_true(v) ? "yes" : "no");
	if (json_is_integer(v)) {
		const char *leaf = strrchr(path, '.');
		leaf = leaf ? leaf + 1 : path;
		static const char *const times[] = {"created", "updated", "exp", "nbf", "deletedDate",
						    "scheduledPurgeDate"};
		for (size_t i = 0; i < CVM_ARRAY_SIZE(times); i++) {
			if (strcmp(leaf, times[i]) == 0) {
				char ts[32];
				cvm_time_iso8601(json_integer_value(v), ts);
				return strdup(ts);
			}
		}
		return cvm_asprintf("%lld", (long long)json_integer_value(v));
	}
	return json_dumps(v, JSON_COMPACT | JSON_ENCODE_ANY);
}

void cli_print_table(json_t *rows, const char *const *headers, const char *const *paths,
		     size_t ncols)
{
	size_t nrows = json_array_size(rows);
	size_t width[16] = {0};
	if (ncols > CVM_ARRAY_SIZE(width))
		ncols = CVM_ARRAY_SIZE(width);
	char **cells = calloc(nrows * ncols + 1, sizeof(*cells));
	if (!cells)
		return;
	for (size_t c = 0; c < ncols; c++)
		width[c] = strlen(headers[c]);
	for (size_t r = 0; r < nrows; r++) {
		for (size_t c = 0; c < ncols; c++) {
			char *t = cell_text(cvm_json_path(json_array_get(rows, r), paths[c]), paths[c]);
			cells[r * ncols + c] = t;
			if (t && strlen(t) > width[c])
				width[c] = strlen(t);
		}
	}
	for (size_t c = 0; c < ncols; c++)
		printf("%-*s%s", (int)width[c], headers[c], c + 1 < ncols ? "  " : "\n");
	for (size_t r = 0; r < nrows; r++) {
		for (size_t c = 0; c < ncols; c++) {
			const char *t = cells[r * ncols + c];
			printf("%-*s%s", (int)width[c], t ? t : "-", c + 1 < ncols ? "  " : "\n");
			free(cells[r * ncols + c]);
		}
	}
	free(cells);
}

void cli_print_fields(json_t *obj, const char *const *labels, const char *const *paths, size_t n)
{
	size_t w = 0;
	for (size_t i = 0; i < n; i++)
		if (strlen(labels[i]) > w)
			w = strlen(labels[i]);
	for (size_t i = 0; i < n; i++) {
		json_t *v = cvm_json_path(obj, paths[i]);
		if (!v)
			continue;
		char *t = cell_text(v, paths[i]);
		printf("%-*s  %s\n", (int)w + 1, labels[i], t ? t : "-");
		free(t);
	}
}

int cli_fail(const struct cvm_err *err, const char *context)
{
	fprintf(stderr, "cvm: %s: %s: %s\n", context, err->code[0] ? err->code : "Error", err->msg);
	if (err->errnum == ECONNREFUSED || err->errnum == EHOSTUNREACH || err->errnum == EACCES)
		return CLI_CONNECT;
	return CLI_FAIL;
}

int cli_read_input(const char *path, size_t max, uint8_t **out, size_t *len, struct cvm_err *err)
{
	if (strcmp(path, "-") != 0)
		return cvm_file_read(path, max, out, len, err);
	struct cvm_buf b = {0};
	uint8_t chunk[65536];
	ssize_t n;
	while ((n = read(STDIN_FILENO, chunk, sizeof(chunk))) != 0) {
		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0 || b.len + (size_t)n > max || cvm_buf_append(&b, chunk, (size_t)n) < 0) {
			cvm_buf_wipe(&b);
			return cvm_err_badparam(err, "stdin: unreadable or larger than %zu bytes", max);
		}
	}
	if (!cvm_buf_cstr(&b)) {
		cvm_buf_free(&b);
		return cvm_err_nomem(err);
	}
	*out = b.data;
	*len = b.len;
	return 0;
}

int cli_write_output(const char *path, const void *data, size_t len, int mode,
		     struct cvm_err *err)
{
	if (strcmp(path, "-") == 0) {
		if (fwrite(data, 1, len, stdout) != len || fflush(stdout) != 0)
			return cvm_err_internal(err, "cannot write to stdout");
		return 0;
	}
	return cvm_file_write_atomic(path, data, len, mode, err);
}

int cli_read_secret_file(const char *path, struct cvm_secret **out, struct cvm_err *err)
{
	uint8_t *raw = NULL;
	size_t len = 0;
	int r = cli_read_input(path, 4096, &raw, &len, err);
	if (r < 0)
		return cvm_err_prefix(err, "client secret");
	while (len && (raw[len - 1] == '\n' || raw[len - 1] == '\r'))
		len--;
	if (!len) {
		cvm_free_secure(raw, len + 1);
		return cvm_err_badparam(err, "client secret file %s is empty", path);
	}
	*out = cvm_secret_from(raw, len);
	cvm_free_secure(raw, len + 1);
	return *out ? 0 : cvm_err_nomem(err);
}
