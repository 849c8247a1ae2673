/* SPDX-License-Identifier: Apache-2.0 */
#include <opencvm/util.h>

#include <openssl/err.h>
#include <stdio.h>
#include <string.h>

int cvm_err_set(struct cvm_err *err, int errnum, const char *code, const char *fmt, ...)
{
	if (errnum <= 0)
		errnum = EIO;
	if (err) {
		va_list ap;
		err->errnum = errnum;
		snprintf(err->code, sizeof(err->code), "%s", code ? code : "InternalError");
		va_start(ap, fmt);
		vsnprintf(err->msg, sizeof(err->msg), fmt, ap);
		va_end(ap);
	}
	return -errnum;
}

int cvm_err_prefix(struct cvm_err *err, const char *fmt, ...)
{
	if (!err)
		return -EIO;
	char old[sizeof(err->msg)];
	memcpy(old, err->msg, sizeof(old));
	old[sizeof(old) - 1] = 0;
	va_list ap;
	va_start(ap, fmt);
	int n = vsnprintf(err->msg, sizeof(err->msg), fmt, ap);
	va_end(ap);
	/* Append ": old" after the prefix, truncating the old message if space runs out. */
	if (n >= 0 && (size_t)n < sizeof(err->msg) - 3) {
		size_t at = (size_t)n, room = sizeof(err->msg) - at - 3;
		size_t ol = strnlen(old, room);
		err->msg[at] = ':';
		err->msg[at + 1] = ' ';
		memcpy(err->msg + at + 2, old, ol);
		err->msg[at + 2 + ol] = 0;
	}
	return -(err->errnum ? err->errnum : EIO);
}

int cvm_err_openssl(struct cvm_err *err, int errnum, const char *what)
{
	unsigned long e = ERR_peek_last_error();
	char detail[160] = "no detail";
	if (e)
		ERR_error_string_n(e, detail, sizeof(detail));
	ERR_clear_error();
	return cvm_err_set(err, errnum, errnum == EBADMSG ? "BadParameter" : "InternalError",
			   "%s failed (%s)", what, detail);
}

int cvm_err_set_code(struct cvm_err *err, int errnum, const char *code)
{
	if (err) {
		err->errnum = errnum;
		snprintf(err->code, sizeof(err->code), "%s", code);
	}
	return -errnum;
}

void cvm_err_clear(struct cvm_err *err)
{
	if (err)
		memset(err, 0, sizeof(*err));
}

int cvm_err_http_status(const struct cvm_err *err)
{
	switch (err ? err->errnum : EIO) {
	case 0: return 200;
	case EINVAL: case ENOTSUP: case EBADMSG: case EOVERFLOW: return 400;
	case EACCES: return 401;
	case EPERM: return 403;
	case ENOENT: return 404;
	case EEXIST: case EBUSY: return 409;
	case E2BIG: return 413;
	case EAGAIN: return 429;
	case ETIMEDOUT: return 504;
	case ECONNREFUSED: case EHOSTUNREACH: return 502;
	default: return 500;
	}
}
