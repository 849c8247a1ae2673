/* SPDX-License-Identifier: Apache-2.0 */
#include <opencvm/util.h>

#include <fcntl.h>
#include <libgen.h>
#include <limits.h>
#include <openssl/rand.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

int cvm_random(void *buf, size_t len, struct cvm_err *err)
{
	while (len) {
		int chunk = len > INT_MAX ? INT_MAX : (int)len;
		if (RAND_bytes(buf, chunk) != 1)
			return cvm_err_openssl(err, EIO, "RAND_bytes");
		buf = (uint8_t *)buf + chunk;
		len -= (size_t)chunk;
	}
	return 0;
}

int cvm_random_hex32(char out[33], struct cvm_err *err)
{
	uint8_t b[16];
	int r = cvm_random(b, sizeof(b), err);
	if (r < 0)
		return r;
	for (int i = 0; i < 16; i++)
		snprintf(out + 2 * i, 3, "%02x", b[i]);
	return 0;
}

int cvm_uuid4(char out[37], struct cvm_err *err)
{
	uint8_t b[16];
	int r = cvm_random(b, sizeof(b), err);
	if (r < 0)
		return r;
	b[6] = (b[6] & 0x0f) | 0x40;
	b[8] = (b[8] & 0x3f) | 0x80;
	snprintf(out, 37,
		 "%02x%02x%02x%02x-%02x%02x-%02x%02x-%02x%02x-%02x%02x%02x%02x%02x%02x", b[0],
		 b[1], b[2], b[3], b[4], b[5], b[6], b[7], b[8], b[9], b[10], b[11], b[12], b[13],
		 b[14], b[15]);
	return 0;
}

int64_t cvm_now(void)
{
	return (int64_t)time(NULL);
}

int64_t cvm_now_ms(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_REALTIME, &ts);
	return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

uint64_t cvm_monotonic_ns(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

void cvm_time_iso8601(int64_t t, char out[32])
{
	time_t tt = (time_t)t;
	struct tm tm;
	gmtime_r(&tt, &tm);
	strftime(out, 32, "%Y-%m-%dT%H:%M:%SZ", &tm);
}

int cvm_duration_parse(const char *s, int64_t *seconds, const char *what, struct cvm_err *err)
{
	if (!s || s[0] != 'P' || !s[1])
		return cvm_err_badparam(err, "%s: expected an ISO 8601 duration like P90D, got '%s'",
					what, s ? s : "");
	int64_t total = 0;
	bool in_time = false, any = false;
	for (const char *p = s + 1; *p;) {
		if (*p == 'T') {
			if (in_time)
				goto bad;
			in_time = true;
			p++;
			continue;
		}
		if (*p < '0' || *p > '9')
			goto bad;
		int64_t n = 0;
		while (*p >= '0' && *p <= '9') {
			if (n > INT64_MAX / 10 - 9)
				goto bad;
			n = n * 10 + (*p++ - '0');
		}
		int64_t unit;
		switch (*p) {
		case 'Y': unit = in_time ? -1 : 365 * 86400; break;
		case 'M': unit = in_time ? 60 : 30 * 86400; break;
		case 'W': unit = in_time ? -1 : 7 * 86400; break;
		case 'D': unit = in_time ? -1 : 86400; break;
		case 'H': unit = in_time ? 3600 : -1; break;
		case 'S': unit = in_time ? 1 : -1; break;
		default: unit = -1;
		}
		if (unit < 0 || n > (INT64_MAX - total) / unit)
			goto bad;
		total += n * unit;
		any = true;
		p++;
	}
	if (!any)
		goto bad;
	*seconds = total;
	return 0;
bad:
	return cvm_err_badparam(err, "%s: expected an ISO 8601 duration like P90D, got '%s'", what,
				s);
}

int cvm_file_read(const char *path, size_t max, uint8_t **out, size_t *outlen,
		  struct cvm_err *err)
{
	int fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		return cvm_err_set(err, errno == ENOENT ? ENOENT : EIO, "NotFound",
				   "cannot open %s: %s", path, strerror(errno));
	struct cvm_buf b = {0};
	uint8_t chunk[65536];
	for (;;) {
		ssize_t n = read(fd, chunk, sizeof(chunk));
		if (n < 0) {
			if (errno == EINTR)
				continue;
			int e = errno;
			close(fd);
			cvm_buf_free(&b);
			return cvm_err_set(err, EIO, "InternalError", "cannot read %s: %s", path,
					   strerror(e));
		}
		if (n == 0)
			break;
		if (b.len + (size_t)n > max) {
			close(fd);
			cvm_buf_free(&b);
			return cvm_err_set(err, E2BIG, "BadParameter",
					   "%s is larger than the %zu-byte limit", path, max);
		}
		if (cvm_buf_append(&b, chunk, (size_t)n) < 0) {
			close(fd);
			cvm_buf_free(&b);
			return cvm_err_nomem(err);
		}
	}
	close(fd);
	if (!cvm_buf_cstr(&b)) {
		cvm_buf_free(&b);
		return cvm_err_nomem(err);
	}
	*out = b.data;
	*outlen = b.len;
	return 0;
}

int cvm_file_write_atomic(const char *path, const void *data, size_t len, int mode,
			  struct cvm_err *err)
{
	_cleanup_free_ char *tmp = cvm_asprintf("%s.tmp.%d", path, (int)getpid());
	_cleanup_free_ char *dircopy = cvm_strdup(path);
	if (!tmp || !dircopy)
		return cvm_err_nomem(err);
	int fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, mode);
	if (fd < 0)
		return cvm_err_internal(err, "cannot create %s: %s", tmp, strerror(errno));
	const uint8_t *p = data;
	size_t left = len;
	while (left) {
		ssize_t n = write(fd, p, left);
		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0) {
			int e = errno;
			close(fd);
			unlink(tmp);
			return cvm_err_internal(err, "cannot write %s: %s", tmp, strerror(e));
		}
		p += n;
		left -= (size_t)n;
	}
	if (fsync(fd) < 0 || close(fd) < 0) {
		unlink(tmp);
		return cvm_err_internal(err, "cannot sync %s: %s", tmp, strerror(errno));
	}
	if (rename(tmp, path) < 0) {
		int e = errno;
		unlink(tmp);
		return cvm_err_internal(err, "cannot rename %s to %s: %s", tmp, path, strerror(e));
	}
	int dfd = open(dirname(dircopy), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (dfd >= 0) {
		fsync(dfd);
		close(dfd);
	}
	return 0;
}

int cvm_mkdir_p(const char *path, int mode, struct cvm_err *err)
{
	_cleanup_free_ char *p = cvm_strdup(path);
	if (!p)
		return cvm_err_nomem(err);
	for (char *s = p + 1;; s++) {
		if (*s == '/' || *s == 0) {
			char c = *s;
			*s = 0;
			if (mkdir(p, (mode_t)mode) < 0 && errno != EEXIST)
				return cvm_err_internal(err, "cannot create directory %s: %s", p,
							strerror(errno));
			*s = c;
			if (!c)
				break;
		}
	}
	return 0;
}

char *cvm_path_join(const char *a, const char *b)
{
	size_t la = strlen(a);
	return cvm_asprintf("%s%s%s", a, la && a[la - 1] == '/' ? "" : "/", b);
}

char *cvm_strdup(const char *s)
{
	return s ? strdup(s) : NULL;
}

char *cvm_asprintf(const char *fmt, ...)
{
	va_list ap;
	char *s = NULL;
	va_start(ap, fmt);
	if (vasprintf(&s, fmt, ap) < 0)
		s = NULL;
	va_end(ap);
	return s;
}

bool cvm_str_startswith(const char *s, const char *prefix)
{
	return strncmp(s, prefix, strlen(prefix)) == 0;
}

int cvm_parse_i64(const char *s, int64_t min, int64_t max, int64_t *out, const char *what,
		  struct cvm_err *err)
{
	if (!s || !*s)
		return cvm_err_badparam(err, "%s: expected an integer, got an empty value", what);
	errno = 0;
	char *end;
	long long v = strtoll(s, &end, 10);
	if (errno || *end)
		return cvm_err_badparam(err, "%s: expected an integer, got '%s'", what, s);
	if (v < min || v > max)
		return cvm_err_badparam(err, "%s: %lld is outside %lld..%lld", what, v,
					(long long)min, (long long)max);
	*out = v;
	return 0;
}
