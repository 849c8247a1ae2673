/* SPDX-License-Identifier: Apache-2.0 */
/* Migration projects and their servers' phase state machine, persisted through store.h; each
 * change commits in one transaction with its audit record. */
#include "migrate-internal.h"

#include <jansson.h>

#include <opencvm/audit.h>
#include <opencvm/store.h>

static const char *const schema_v1[] = {
	"CREATE TABLE IF NOT EXISTS migrate_projects ("
	" name TEXT PRIMARY KEY, created INTEGER NOT NULL)",
	"CREATE TABLE IF NOT EXISTS migrate_servers ("
	" project TEXT NOT NULL, name TEXT NOT NULL, source TEXT NOT NULL, phase TEXT NOT NULL,"
	" failed_from TEXT, verdict TEXT, report TEXT, reason TEXT,"
	" created INTEGER NOT NULL, updated INTEGER NOT NULL, PRIMARY KEY (project, name))",
};

static const char *const phase_names[] = {
	"discovered", "assessed", "remediated", "replicating", "test-migrated",
	"cutover-ready", "cut-over", "decommissioned", "failed", "rolled-back",
};

const char *cvm_mig_phase_name(enum cvm_mig_phase p)
{
	return (unsigned)p < CVM_ARRAY_SIZE(phase_names) ? phase_names[p] : "unknown";
}

int cvm_mig_phase_parse(const char *s, enum cvm_mig_phase *out, struct cvm_err *err)
{
	for (size_t i = 0; s && i < CVM_ARRAY_SIZE(phase_names); i++)
		if (strcmp(s, phase_names[i]) == 0) {
			*out = (enum cvm_mig_phase)i;
			return 0;
		}
	return cvm_err_badparam(err, "phase: must be one of discovered, assessed, remediated, "
				"replicating, test-migrated, cutover-ready, cut-over, "
				"decommissioned, failed, rolled-back");
}

/* Next phases by current phase (bit i = phase i). A remediated server is assessed again
 * before it may replicate: the new verdict is the proof the remediation worked. */
#define B(p) (1u << (p))
static const unsigned allowed[] = {
	[CVM_MIG_DISCOVERED] = B(CVM_MIG_ASSESSED) | B(CVM_MIG_FAILED),
	[CVM_MIG_ASSESSED] = B(CVM_MIG_ASSESSED) | B(CVM_MIG_REMEDIATED) | B(CVM_MIG_REPLICATING) |
			     B(CVM_MIG_FAILED),
	[CVM_MIG_REMEDIATED] = B(CVM_MIG_ASSESSED) | B(CVM_MIG_FAILED),
	[CVM_MIG_REPLICATING] = B(CVM_MIG_REPLICATING) | B(CVM_MIG_TEST_MIGRATED) | B(CVM_MIG_FAILED),
	[CVM_MIG_TEST_MIGRATED] = B(CVM_MIG_REPLICATING) | B(CVM_MIG_CUTOVER_READY) | B(CVM_MIG_FAILED),
	[CVM_MIG_CUTOVER_READY] = B(CVM_MIG_CUT_OVER) | B(CVM_MIG_REPLICATING) | B(CVM_MIG_FAILED) |
				  B(CVM_MIG_ROLLED_BACK),
	[CVM_MIG_CUT_OVER] = B(CVM_MIG_DECOMMISSIONED) | B(CVM_MIG_ROLLED_BACK),
	[CVM_MIG_DECOMMISSIONED] = 0,
	[CVM_MIG_FAILED] = B(CVM_MIG_ASSESSED) | B(CVM_MIG_REPLICATING) | B(CVM_MIG_ROLLED_BACK),
	[CVM_MIG_ROLLED_BACK] = B(CVM_MIG_ASSESSED) | B(CVM_MIG_REPLICATING),
};

bool cvm_mig_phase_allowed(enum cvm_mig_phase from, enum cvm_mig_phase to)
{
	if ((unsigned)from >= CVM_ARRAY_SIZE(allowed) || (unsigned)to >= CVM_ARRAY_SIZE(allowed))
		return false;
	return (allowed[from] & B(to)) != 0;
}

void cvm_mig_server_clear(struct cvm_mig_server *s)
{
	if (!s)
		return;
	free(s->project);
	free(s->name);
	free(s->source);
	free(s->verdict);
	free(s->reason);
	memset(s, 0, sizeof(*s));
}

void cvm_mig_server_list_free(struct cvm_mig_server *list, size_t n)
{
	for (size_t i = 0; list && i < n; i++)
		cvm_mig_server_clear(&list[i]);
	free(list);
}

static bool valid_name(const char *s)
{
	size_t n = s ? strlen(s) : 0;
	if (n == 0 || n > 80)
		return false;
	for (size_t i = 0; i < n; i++) {
		char c = s[i];
		if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
		      c == '-' || c == '_' || c == '.'))
			return false;
	}
	return true;
}

/* The module's tables and the audit tables (append_tx needs them to exist). */
static int ensure_schema(struct cvm_store *s, struct cvm_err *err)
{
	if (!s)
		return cvm_err_badparam(err, "store: required");
	int r = cvm_store_ensure_schema(s, "migrate", 1, schema_v1, CVM_ARRAY_SIZE(schema_v1), err);
	if (r < 0)
		return r;
	struct cvm_audit *a = NULL;
	if ((r = cvm_audit_open(s, &a, err)) < 0)
		return r;
	cvm_audit_close(a);
	return 0;
}

static char *detail_json(const char *project, const char *server, const char *from,
			 const char *to, const char *reason, const char *extra_key,
			 const char *extra)
{
	json_t *j = json_pack("{s:s,s:s?,s:s?,s:s?,s:s?}", "project", project, "server", server,
			      "from", from, "to", to, "reason", reason);
	if (j && extra_key && extra)
		json_object_set_new(j, extra_key, json_string(extra));
	char *s = j ? json_dumps(j, JSON_COMPACT | JSON_PRESERVE_ORDER) : NULL;
	json_decref(j);
	return s;
}

static int audit_tx(struct cvm_tx *tx, const char *op, const char *principal, const char *detail,
		    struct cvm_err *err)
{
	if (!detail)
		return cvm_err_nomem(err);
	struct cvm_audit_event ev = {.principal = principal, .operation = op, .status = 200,
				     .result = "ok", .detail = detail};
	return cvm_audit_append_tx(tx, &ev, NULL, err);
}

/* ---- create ------------------------------------------------------------------------------ */
struct create_ctx {
	const char *project, *name, *source, *principal;
};

static int project_create_tx(struct cvm_tx *tx, void *p, struct cvm_err *err)
{
	struct create_ctx *c = p;
	_cleanup_free_ char *d = detail_json(c->project, NULL, NULL, NULL, NULL, NULL, NULL);
	int r = audit_tx(tx, "migrate/projects/create", c->principal, d, err);
	if (r < 0)
		return r;
	struct cvm_val v[] = {CVM_VAL_S(c->project), CVM_VAL_I(cvm_now())};
	int64_t ch = 0;
	r = cvm_tx_exec(tx, "INSERT INTO migrate_projects (name, created) VALUES (?, ?) "
			"ON CONFLICT DO NOTHING", v, 2, &ch, err);
	if (r == 0 && ch == 0)
		r = cvm_err_set(err, EEXIST, "Conflict", "project %s already exists", c->project);
	return r;
}

int cvm_mig_project_create(struct cvm_store *s, const char *name, const char *principal,
			   struct cvm_err *err)
{
	if (!valid_name(name))
		return cvm_err_badparam(err, "project: expected 1..80 characters of A-Z a-z 0-9 . - _");
	int r = ensure_schema(s, err);
	struct create_ctx c = {.project = name, .principal = principal};
	return r < 0 ? r : cvm_store_transact(s, CVM_TX_WRITE, project_create_tx, &c, err);
}

static int server_add_tx(struct cvm_tx *tx, void *p, struct cvm_err *err)
{
	struct create_ctx *c = p;
	_cleanup_free_ char *d = detail_json(c->project, c->name, NULL, "discovered", NULL,
					     "source", c->source);
	int r = audit_tx(tx, "migrate/servers/add", c->principal, d, err);
	if (r < 0)
		return r;
	_cleanup_rows_ struct cvm_rows *rows = NULL;
	struct cvm_val q[] = {CVM_VAL_S(c->project)};
	if ((r = cvm_tx_query(tx, "SELECT name FROM migrate_projects WHERE name = ?", q, 1, &rows,
			      err)) < 0)
		return r;
	if (cvm_rows_count(rows) == 0)
		return cvm_err_set(err, ENOENT, "NotFound", "project %s not found", c->project);
	int64_t now = cvm_now(), ch = 0;
	struct cvm_val v[] = {CVM_VAL_S(c->project), CVM_VAL_S(c->name), CVM_VAL_S(c->source),
			      CVM_VAL_S("discovered"), CVM_VAL_I(now), CVM_VAL_I(now)};
	r = cvm_tx_exec(tx, "INSERT INTO migrate_servers (project, name, source, phase, created, "
			"updated) VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT DO NOTHING", v,
			CVM_ARRAY_SIZE(v), &ch, err);
	if (r == 0 && ch == 0)
		r = cvm_err_set(err, EEXIST, "Conflict", "server %s already exists in project %s",
				c->name, c->project);
	return r;
}

int cvm_mig_server_add(struct cvm_store *s, const char *project, const char *name,
		       const char *source, const char *principal, struct cvm_err *err)
{
	if (!valid_name(project) || !valid_name(name))
		return cvm_err_badparam(err, "project, server: expected 1..80 characters of A-Z a-z "
					"0-9 . - _");
	if (!source || !source[0] || strlen(source) > 4096)
		return cvm_err_badparam(err, "source: the server's disk image path is required");
	int r = ensure_schema(s, err);
	struct create_ctx c = {.project = project, .name = name, .source = source,
			       .principal = principal};
	return r < 0 ? r : cvm_store_transact(s, CVM_TX_WRITE, server_add_tx, &c, err);
}

/* ---- read --------------------------------------------------------------------------------- */
#define SRV_COLS "project, name, source, phase, failed_from, verdict, reason, created, updated"

static int from_row(const struct cvm_rows *rows, size_t i, struct cvm_mig_server *o,
		    struct cvm_err *err)
{
	struct cvm_err ignored = {0};
	memset(o, 0, sizeof(*o));
	o->project = cvm_strdup(cvm_rows_text(rows, i, 0));
	o->name = cvm_strdup(cvm_rows_text(rows, i, 1));
	o->source = cvm_strdup(cvm_rows_text(rows, i, 2));
	o->verdict = cvm_strdup(cvm_rows_text(rows, i, 5));
	o->reason = cvm_strdup(cvm_rows_text(rows, i, 6));
	o->created = cvm_rows_int(rows, i, 7);
	o->updated = cvm_rows_int(rows, i, 8);
	if (!o->project || !o->name || !o->source)
		return cvm_err_nomem(err);
	if (cvm_mig_phase_parse(cvm_rows_text(rows, i, 3), &o->phase, &ignored) < 0)
		return cvm_err_internal(err, "server %s: unknown stored phase", o->name);
	o->failed_from = o->phase;
	if (!cvm_rows_null(rows, i, 4))
		cvm_mig_phase_parse(cvm_rows_text(rows, i, 4), &o->failed_from, &ignored);
	return 0;
}

static int get_tx(struct cvm_tx *tx, const char *project, const char *name,
		  struct cvm_mig_server *out, struct cvm_err *err)
{
	_cleanup_rows_ struct cvm_rows *rows = NULL;
	struct cvm_val q[] = {CVM_VAL_S(project), CVM_VAL_S(name)};
	int r = cvm_tx_query(tx, "SELECT " SRV_COLS " FROM migrate_servers WHERE project = ? AND "
			     "name = ?", q, 2, &rows, err);
	if (r < 0)
		return r;
	if (cvm_rows_count(rows) == 0)
		return cvm_err_set(err, ENOENT, "NotFound", "server %s not found in project %s", name,
				   project);
	r = from_row(rows, 0, out, err);
	if (r < 0)
		cvm_mig_server_clear(out);
	return r;
}

/* A snapshot read on a reader connection: safe while this thread holds a write transaction. */
static int read_server(struct cvm_store *s, const char *project, const char *name,
		       struct cvm_mig_server *out, struct cvm_err *err)
{
	_cleanup_tx_ struct cvm_tx *tx = NULL;
	int r = cvm_tx_begin(s, CVM_TX_READ, &tx, err);
	return r < 0 ? r : get_tx(tx, project, name, out, err);
}

int cvm_mig_server_get(struct cvm_store *s, const char *project, const char *name,
		       struct cvm_mig_server *out, struct cvm_err *err)
{
	int r = ensure_schema(s, err);
	return r < 0 ? r : read_server(s, project, name, out, err);
}

int cvm_mig_server_list(struct cvm_store *s, const char *project, struct cvm_mig_server **out,
			size_t *n, struct cvm_err *err)
{
	int r = ensure_schema(s, err);
	if (r < 0)
		return r;
	_cleanup_tx_ struct cvm_tx *tx = NULL;
	_cleanup_rows_ struct cvm_rows *p = NULL, *rows = NULL;
	struct cvm_val q[] = {CVM_VAL_S(project)};
	if ((r = cvm_tx_begin(s, CVM_TX_READ, &tx, err)) < 0 ||
	    (r = cvm_tx_query(tx, "SELECT name FROM migrate_projects WHERE name = ?", q, 1, &p,
			      err)) < 0)
		return r;
	if (cvm_rows_count(p) == 0)
		return cvm_err_set(err, ENOENT, "NotFound", "project %s not found", project);
	if ((r = cvm_tx_query(tx, "SELECT " SRV_COLS " FROM migrate_servers WHERE project = ? "
			      "ORDER BY name", q, 1, &rows, err)) < 0)
		return r;
	size_t cnt = cvm_rows_count(rows);
	struct cvm_mig_server *list = calloc(cnt ? cnt : 1, sizeof(*list));
	if (!list)
		return cvm_err_nomem(err);
	for (size_t i = 0; i < cnt; i++)
		if ((r = from_row(rows, i, &list[i], err)) < 0) {
			cvm_mig_server_list_free(list, cnt);
			return r;
		}
	*out = list;
	*n = cnt;
	return 0;
}

/* ---- transitions -------------------------------------------------------------------------- */
struct move_ctx {
	struct cvm_store *store;
	const char *project, *name, *reason, *principal, *op;
	enum cvm_mig_phase to;
	const char *verdict, *report;   /* set by assessment */
};

static int allowed_list(enum cvm_mig_phase from, char *out, size_t len)
{
	size_t o = 0;
	out[0] = 0;
	for (unsigned p = 0; p < CVM_ARRAY_SIZE(phase_names); p++)
		if (cvm_mig_phase_allowed(from, (enum cvm_mig_phase)p))
			o += (size_t)snprintf(out + o, o < len ? len - o : 0, "%s%s", o ? ", " : "",
					      phase_names[p]);
	if (!out[0])
		snprintf(out, len, "none (final phase)");
	return 0;
}

static int move_tx(struct cvm_tx *tx, void *p, struct cvm_err *err)
{
	struct move_ctx *c = p;
	struct cvm_mig_server cur;
	/* The audit record must be the write transaction's first statement, and it names the
	 * phase we leave: read that from a snapshot first, and let the UPDATE below (which
	 * requires the phase unchanged) send a concurrent transition back for a retry. */
	int r = read_server(c->store, c->project, c->name, &cur, err);
	if (r < 0)
		return r;
	enum cvm_mig_phase from = cur.phase;
	bool blocked = c->to == CVM_MIG_REPLICATING && from == CVM_MIG_ASSESSED && cur.verdict &&
		       strcmp(cur.verdict, "not-ready") == 0;
	cvm_mig_server_clear(&cur);
	if (!cvm_mig_phase_allowed(from, c->to)) {
		char list[256];
		allowed_list(from, list, sizeof(list));
		return cvm_err_set(err, EPERM, "Forbidden", "server %s is %s: it cannot move to %s "
				   "(allowed: %s)", c->name, phase_names[from],
				   cvm_mig_phase_name(c->to), list);
	}
	if (blocked)
		return cvm_err_set(err, EPERM, "Forbidden", "server %s was assessed not-ready: "
				   "remediate the failed findings and assess again before "
				   "replicating", c->name);
	_cleanup_free_ char *d = detail_json(c->project, c->name, phase_names[from],
					     phase_names[c->to], c->reason, "verdict", c->verdict);
	if ((r = audit_tx(tx, c->op, c->principal, d, err)) < 0)
		return r;
	bool failing = c->to == CVM_MIG_FAILED || c->to == CVM_MIG_ROLLED_BACK;
	struct cvm_val v[] = {CVM_VAL_S(phase_names[c->to]),
			      CVM_VAL_S(failing ? phase_names[from] : NULL), CVM_VAL_S(c->reason),
			      CVM_VAL_S(c->verdict), CVM_VAL_S(c->report), CVM_VAL_I(cvm_now()),
			      CVM_VAL_S(c->project), CVM_VAL_S(c->name),
			      CVM_VAL_S(phase_names[from])};
	int64_t ch = 0;
	r = cvm_tx_exec(tx, "UPDATE migrate_servers SET phase = ?, failed_from = ?, reason = ?, "
			"verdict = COALESCE(?, verdict), report = COALESCE(?, report), updated = ? "
			"WHERE project = ? AND name = ? AND phase = ?", v, CVM_ARRAY_SIZE(v), &ch, err);
	if (r == 0 && ch != 1)
		r = cvm_err_set(err, EAGAIN, "Conflict", "server %s changed phase meanwhile", c->name);
	return r;
}

int cvm_mig_server_transition(struct cvm_store *s, const char *project, const char *name,
			      enum cvm_mig_phase to, const char *reason, const char *principal,
			      struct cvm_err *err)
{
	if ((unsigned)to >= CVM_ARRAY_SIZE(phase_names))
		return cvm_err_badparam(err, "phase: unknown");
	if (reason && strlen(reason) > 1024)
		return cvm_err_badparam(err, "reason: at most 1024 bytes");
	int r = ensure_schema(s, err);
	struct move_ctx c = {.store = s, .project = project, .name = name, .reason = reason,
			     .principal = principal, .op = "migrate/servers/transition", .to = to};
	return r < 0 ? r : cvm_store_transact(s, CVM_TX_WRITE, move_tx, &c, err);
}

int cvm_mig_server_assess(struct cvm_store *s, const char *project, const char *name,
			  const struct cvm_assess_opts *opts, const char *principal, char **report,
			  struct cvm_err *err)
{
	struct cvm_mig_server srv;
	int r = cvm_mig_server_get(s, project, name, &srv, err);
	if (r < 0)
		return r;
	if (!cvm_mig_phase_allowed(srv.phase, CVM_MIG_ASSESSED)) {
		r = cvm_err_set(err, EPERM, "Forbidden", "server %s is %s: assessment is for "
				"servers not yet replicating", name, cvm_mig_phase_name(srv.phase));
		cvm_mig_server_clear(&srv);
		return r;
	}
	struct cvm_assess_report rep;
	r = cvm_migrate_assess_image(srv.source, opts, &rep, err);
	_cleanup_free_ char *js = NULL;
	if (r == 0)
		r = cvm_assess_report_json(&rep, srv.source, &js, err);
	cvm_mig_server_clear(&srv);
	if (r < 0) {
		cvm_assess_report_clear(&rep);
		return cvm_err_prefix(err, "assessing %s", name);
	}
	struct move_ctx c = {.store = s, .project = project, .name = name, .principal = principal,
			     .op = "migrate/servers/assess", .to = CVM_MIG_ASSESSED,
			     .verdict = cvm_verdict_name(rep.verdict), .report = js};
	cvm_assess_report_clear(&rep);
	if ((r = cvm_store_transact(s, CVM_TX_WRITE, move_tx, &c, err)) < 0)
		return r;
	if (report)
		*report = CVM_TAKE(js);
	return 0;
}
