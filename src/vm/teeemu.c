/* SPDX-License-Identifier: Apache-2.0 */
/* Host side of the emulated TEE: answers the guest's report requests on the virtio-serial
 * port with reports signed by the emulator's VCEK (attest.h). The guest chooses only
 * report_data; measurement, policy and host_data are the host's launch template, as on real
 * hardware where the AMD-SP, not the guest, fills them. */
#include <opencvm/vm.h>

#include <string.h>
#include <unistd.h>

#define LINE_MAX_LEN CVM_VM_HOST_LINE_MAX

static int file_sha256(const char *path, uint8_t out[32], struct cvm_err *err)
{
	_cleanup_free_ uint8_t *d = NULL;
	size_t l = 0, dl = 0;
	uint8_t h[64];
	int r = cvm_file_read(path, 512u * 1024 * 1024, &d, &l, err);
	if (r < 0 || (r = cvm_digest("SHA256", d, l, h, &dl, err)) < 0)
		return r;
	memcpy(out, h, 32);
	return 0;
}

int cvm_vm_emulated_measurement(const char *firmware, const char *kernel, const char *initrd,
				const char *cmdline, uint8_t out[48], struct cvm_err *err)
{
	static const char label[] = "opencvm-emulated-launch-v1";
	uint8_t buf[sizeof(label) - 1 + 4 * 32];
	memcpy(buf, label, sizeof(label) - 1);
	uint8_t *p = buf + sizeof(label) - 1;
	uint8_t h[64];
	size_t hl = 0;
	int r;
	if ((r = file_sha256(firmware, p, err)) < 0 || (r = file_sha256(kernel, p + 32, err)) < 0 ||
	    (r = file_sha256(initrd, p + 64, err)) < 0 ||
	    (r = cvm_digest("SHA256", cmdline ? cmdline : "", cmdline ? strlen(cmdline) : 0, h, &hl,
			    err)) < 0)
		return r;
	memcpy(p + 96, h, 32);
	if ((r = cvm_digest("SHA384", buf, sizeof(buf), h, &hl, err)) < 0)
		return r;
	memcpy(out, h, 48);
	return 0;
}

static int reply_err(char **reply, const char *msg, struct cvm_err *err)
{
	*reply = cvm_asprintf("ERR %s\n", msg);
	return *reply ? 0 : cvm_err_nomem(err);
}

static int reply_hex(char **reply, const uint8_t *data, size_t len, struct cvm_err *err)
{
	_cleanup_free_ char *hex = cvm_hex_encode(data, len);
	if (!hex)
		return cvm_err_nomem(err);
	*reply = cvm_asprintf("OK %s\n", hex);
	return *reply ? 0 : cvm_err_nomem(err);
}

static int chain_pem(const char *dir, struct cvm_buf *out, struct cvm_err *err)
{
	static const char *const files[] = { "vcek.pem", "ask.pem", "ark.pem" };
	for (size_t i = 0; i < CVM_ARRAY_SIZE(files); i++) {
		_cleanup_free_ char *p = cvm_path_join(dir, files[i]);
		_cleanup_free_ uint8_t *d = NULL;
		size_t dl = 0;
		if (!p)
			return cvm_err_nomem(err);
		int r = cvm_file_read(p, 64 * 1024, &d, &dl, err);
		if (r < 0)
			return r;
		if (cvm_buf_append(out, d, dl) < 0)
			return cvm_err_nomem(err);
	}
	return 0;
}

static int relay(const struct cvm_vm_tee_emu *e, const char *kind, const char *hex,
		 char **reply, struct cvm_err *err)
{
	if (!e->relay)
		return reply_err(reply, "no orchestrator relay on this host channel", err);
	_cleanup_free_ uint8_t *body = NULL;
	size_t bl = 0;
	struct cvm_err e2 = { 0 };
	if (cvm_hex_decode(hex, strlen(hex), &body, &bl, kind, &e2) < 0)
		return reply_err(reply, "body: expected hex", err);
	_cleanup_buf_ struct cvm_buf out = { 0 };
	if (e->relay(e->relay_ctx, kind, body, bl, &out, &e2) < 0) {
		/* The reason goes back to the guest's console: it names the failed check. */
		char msg[600];
		snprintf(msg, sizeof(msg), "%s: %s", kind, e2.msg);
		for (char *c = msg; *c; c++)
			if (*c == '\n' || *c == '\r')
				*c = ' ';
		return reply_err(reply, msg, err);
	}
	return reply_hex(reply, out.data, out.len, err);
}

int cvm_vm_tee_emu_handle(const struct cvm_vm_tee_emu *e, const char *line, char **reply,
			  struct cvm_err *err)
{
	*reply = NULL;
	if (cvm_str_startswith(line, "ATTEST "))
		return relay(e, "ATTEST", line + 7, reply, err);
	if (cvm_str_startswith(line, "RELEASE "))
		return relay(e, "RELEASE", line + 8, reply, err);
	if (!e->emu_dir)
		return reply_err(reply, "no TEE emulator on this host channel", err);
	if (strcmp(line, "VCEK") == 0) {
		_cleanup_buf_ struct cvm_buf pem = { 0 };
		struct cvm_err e2 = { 0 };
		if (chain_pem(e->emu_dir, &pem, &e2) < 0) {
			cvm_log_error("tee_emu_chain", "dir=%s reason=\"%s\"", e->emu_dir, e2.msg);
			return reply_err(reply, "certificate chain unavailable", err);
		}
		return reply_hex(reply, pem.data, pem.len, err);
	}
	if (!cvm_str_startswith(line, "SNP_REPORT "))
		return reply_err(reply, "unknown request", err);
	const char *hex = line + strlen("SNP_REPORT ");
	struct cvm_tee_emu_report_in in = e->tmpl;
	struct cvm_err e2 = { 0 };
	if (strlen(hex) != 128 || cvm_hex_decode_fixed(hex, in.report_data, 64, "report_data",
						       &e2) < 0)
		return reply_err(reply, "report_data: expected 128 hex digits", err);
	uint8_t rep[CVM_SNP_REPORT_SIZE];
	if (cvm_tee_emu_snp_report(e->emu_dir, &in, rep, &e2) < 0) {
		cvm_log_error("tee_emu_report", "reason=\"%s\"", e2.msg);
		return reply_err(reply, "report generation failed", err);
	}
	return reply_hex(reply, rep, sizeof(rep), err);
}

static int write_all(int fd, const char *s, size_t len, struct cvm_err *err)
{
	while (len) {
		ssize_t w = write(fd, s, len);
		if (w < 0 && errno == EINTR)
			continue;
		if (w <= 0)
			return cvm_err_internal(err, "tee-emu: write: %s", strerror(errno));
		s += w;
		len -= (size_t)w;
	}
	return 0;
}

int cvm_vm_tee_emu_serve(const struct cvm_vm_tee_emu *e, int fd, struct cvm_err *err)
{
	_cleanup_free_ char *line = malloc(LINE_MAX_LEN + 1);
	size_t n = 0;
	if (!line)
		return cvm_err_nomem(err);
	bool overlong = false;
	char chunk[4096];
	size_t have = 0, pos = 0;
	for (;;) {
		if (pos == have) {
			ssize_t rd = read(fd, chunk, sizeof(chunk));
			if (rd < 0 && errno == EINTR)
				continue;
			if (rd < 0)
				return cvm_err_internal(err, "tee-emu: read: %s", strerror(errno));
			if (rd == 0)
				return 0;
			have = (size_t)rd;
			pos = 0;
		}
		char c = chunk[pos++];
		if (c != '\n') {
			if (n < LINE_MAX_LEN)
				line[n++] = c;
			else
				overlong = true;
			continue;
		}
		line[n] = 0;
		if (n && line[n - 1] == '\r')
			line[n - 1] = 0;
		_cleanup_free_ char *reply = NULL;
		int r = overlong ? reply_err(&reply, "request too long", err)
				 : cvm_vm_tee_emu_handle(e, line, &reply, err);
		if (r < 0 || (r = write_all(fd, reply, strlen(reply), err)) < 0)
			return r;
		n = 0;
		overlong = false;
	}
}
