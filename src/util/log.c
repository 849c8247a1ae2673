/* SPDX-License-Identifier: Apache-2.0 */
#include <opencvm/util.h>

#include <stdatomic.h>
#include <stdio.h>
#include <string.h>

/* The threshold is set once by main() before threads start; atomics keep readers race-free. */
static _Atomic int log_threshold = CVM_LOG_INFO;

void cvm_log_set_level(enum cvm_log_level lvl)
{
	atomic_store(&log_threshold, (int)lvl);
}

void cvm_log(enum cvm_log_level lvl, const char *event, const char *fmt, ...)
{
	static const char *const names[] = {"debug", "info", "warn", "error"};
	if ((int)lvl < atomic_load(&log_threshold))
		return;
	char ts[32], line[2048];
	cvm_time_iso8601(cvm_now(), ts);
	int n = snprintf(line, sizeof(line), "ts=%s level=%s event=%s", ts, names[lvl], event);
	if (n < 0)
		return;
	if (fmt && *fmt && (size_t)n < sizeof(line) - 2) {
		line[n++] = ' ';
		va_list ap;
		va_start(ap, fmt);
		int m = vsnprintf(line + n, sizeof(line) - (size_t)n, fmt, ap);
		va_end(ap);
		if (m > 0)
			n += m;
	}
	if ((size_t)n >= sizeof(line) - 1)
		n = (int)sizeof(line) - 2;
	/* One write per line keeps concurrent lines from interleaving. */
	for (int i = 0; i < n; i++)
		if (line[i] == '\n')
			line[i] = ' ';
	line[n++] = '\n';
	fwrite(line, 1, (size_t)n, stderr);
}
