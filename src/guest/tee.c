/* SPDX-License-Identifier: Apache-2.0 */
/* TEE backends: each turns 64 bytes of report_data into evidence. */
#include <opencvm/attest.h>
#include <opencvm/guest.h>

#include <fcntl.h>
#include <linux/sev-guest.h>
#include <poll.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/wait.h>
#include <unistd.h>

/* Linux uapi <linux/tdx-guest.h> (6.2+; the build host's headers may predate it). */
struct cvm_tdx_report_req {
	uint8_t reportdata[64];
	uint8_t tdreport[1024];
};
#define CVM_TDX_CMD_GET_REPORT0 _IOWR('T', 1, struct cvm_tdx_report_req)

#define EXT_CERTS_MAX (64 * 1024) /* SEV_FW_BLOB_MAX_SIZE is 16 KiB; leave room */
#define EMU_REPLY_MAX (512 * 1024)
#define HCL_NV_INDEX "0x01400001"
#define HCL_MAX (16 * 1024)

void cvm_guest_evidence_clear(struct cvm_guest_evidence *ev)
{
	free(ev->report);
	free(ev->cert_chain);
	*ev = (struct cvm_guest_evidence){ 0 };
}

/* ---- SEV-SNP ------------------------------------------------------------------------------ */

static uint32_t le32(const uint8_t *p)
{
	return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}

int cvm_guest_snp_parse_resp(const uint8_t *buf, size_t len, const uint8_t **report,
			     size_t *report_len, struct cvm_err *err)
{
	if (len < CVM_GUEST_SNP_RESP_HDR)
		return cvm_err_badparam(err, "sev-guest response: %zu bytes, shorter than its header",
					len);
	uint32_t status = le32(buf), size = le32(buf + 4);
	if (status != 0)
		return cvm_err_set(err, EIO, "TeeError",
				   "sev-guest response: firmware status 0x%x (0x16 = invalid "
				   "parameter, 0x27 = invalid key)", status);
	if (size < CVM_SNP_REPORT_SIZE || size > len - CVM_GUEST_SNP_RESP_HDR)
		return cvm_err_badparam(err, "sev-guest response: report_size %u does not fit "
					"(need %d..%zu)", size, CVM_SNP_REPORT_SIZE,
					len - CVM_GUEST_SNP_RESP_HDR);
	*report = buf + CVM_GUEST_SNP_RESP_HDR;
	*report_len = CVM_SNP_REPORT_SIZE; /* newer firmware may pad; the report is fixed-size */
	return 0;
}

void cvm_guest_snp_ioctl_error(uint64_t exitinfo2, int errnum, char *out, size_t cap)
{
	uint32_t fw = (uint32_t)exitinfo2, vmm = (uint32_t)(exitinfo2 >> 32);
	const char *v = vmm == SNP_GUEST_VMM_ERR_INVALID_LEN ? " (certificate buffer too small)"
			: vmm == SNP_GUEST_VMM_ERR_BUSY	     ? " (host busy)"
							     : "";
	snprintf(out, cap, "%s; firmware error 0x%x, VMM error 0x%x%s", strerror(errnum), fw, vmm,
		 v);
}

int cvm_guest_snp_certs_pem(const uint8_t *table, size_t len, char **pem, struct cvm_err *err)
{
	*pem = NULL;
	struct cvm_snp_certs c = { 0 };
	int r = cvm_snp_certs_from_table(&c, table, len, err);
	if (r == 0 && !c.vek)
		r = cvm_err_set(err, ENOENT, "TeeError",
				"extended report: the host supplied no VCEK/VLEK certificate");
	struct cvm_buf b = { 0 };
	X509 *order[] = { c.vek, c.ask, c.ark };
	for (size_t i = 0; r == 0 && i < CVM_ARRAY_SIZE(order); i++) {
		if (!order[i])
			continue;
		_cleanup_free_ char *p = NULL;
		if ((r = cvm_x509_to_pem(order[i], &p, err)) == 0 && cvm_buf_append_str(&b, p) < 0)
			r = cvm_err_nomem(err);
	}
	cvm_snp_certs_clear(&c);
	if (r == 0 && !(*pem = cvm_buf_cstr(&b)))
		r = cvm_err_nomem(err);
	if (r < 0)
		cvm_buf_free(&b);
	return r;
}

static int snp_evidence(const struct cvm_guest_env *e, const uint8_t rd[64],
			struct cvm_guest_evidence *out, struct cvm_err *err)
{
	int fd = open(e->sev_dev, O_RDWR | O_CLOEXEC);
	if (fd < 0)
		return cvm_err_set(err, ENODEV, "TeeError", "%s: %s", e->sev_dev, strerror(errno));
	struct snp_ext_report_req ext = { 0 };
	memcpy(ext.data.user_data, rd, 64);
	ext.data.vmpl = 0;
	struct snp_report_resp resp = { 0 };
	/* certs_len must be a page multiple; grow once if the host asks for more. */
	size_t cap = 4 * 4096;
	uint8_t *certs = NULL;
	int r = 0;
	for (int attempt = 0; attempt < 2; attempt++) {
		free(certs);
		certs = aligned_alloc(4096, cap);
		if (!certs) {
			r = cvm_err_nomem(err);
			break;
		}
		memset(certs, 0, cap);
		ext.certs_address = (uint64_t)(uintptr_t)certs;
		ext.certs_len = (uint32_t)cap;
		struct snp_guest_request_ioctl io = { .msg_version = 1,
						      .req_data = (uint64_t)(uintptr_t)&ext,
						      .resp_data = (uint64_t)(uintptr_t)&resp };
		if (ioctl(fd, SNP_GET_EXT_REPORT, &io) == 0) {
			r = 0;
			break;
		}
		int en = errno;
		char why[160];
		cvm_guest_snp_ioctl_error(io.exitinfo2, en, why, sizeof(why));
		if ((io.exitinfo2 >> 32) == SNP_GUEST_VMM_ERR_INVALID_LEN && attempt == 0 &&
		    ext.certs_len > cap && ext.certs_len <= EXT_CERTS_MAX) {
			cap = (ext.certs_len + 4095) & ~(size_t)4095;
			continue;
		}
		r = cvm_err_set(err, EIO, "TeeError", "SNP_GET_EXT_REPORT: %s", why);
		break;
	}
	close(fd);
	const uint8_t *rep = NULL;
	size_t rl = 0;
	if (r == 0)
		r = cvm_guest_snp_parse_resp(resp.data, sizeof(resp.data), &rep, &rl, err);
	if (r == 0 && !(out->report = malloc(rl)))
		r = cvm_err_nomem(err);
	if (r == 0) {
		memcpy(out->report, rep, rl);
		out->report_len = rl;
		out->tee = CVM_GUEST_TEE_SEV_GUEST;
		r = cvm_guest_snp_certs_pem(certs, cap, &out->cert_chain, err);
	}
	free(certs);
	if (r < 0)
		cvm_guest_evidence_clear(out);
	return r;
}

/* ---- TDX ---------------------------------------------------------------------------------- */

static int tdx_evidence(const struct cvm_guest_env *e, const uint8_t rd[64],
			struct cvm_guest_evidence *out, struct cvm_err *err)
{
	int fd = open(e->tdx_dev, O_RDWR | O_CLOEXEC);
	if (fd < 0)
		return cvm_err_set(err, ENODEV, "TeeError", "%s: %s", e->tdx_dev, strerror(errno));
	struct cvm_tdx_report_req req = { 0 };
	memcpy(req.reportdata, rd, 64);
	int r = ioctl(fd, CVM_TDX_CMD_GET_REPORT0, &req);
	int en = errno;
	close(fd);
	if (r < 0)
		return cvm_err_set(err, EIO, "TeeError", "TDX_CMD_GET_REPORT0: %s", strerror(en));
	/* The TDREPORT is MAC'd for this platform only; a remote verifier needs it turned into
	 * a quote by the quoting enclave, which the host's QGS provides. */
	if (!(out->report = malloc(sizeof(req.tdreport))))
		return cvm_err_nomem(err);
	memcpy(out->report, req.tdreport, sizeof(req.tdreport));
	out->report_len = sizeof(req.tdreport);
	out->tee = CVM_GUEST_TEE_TDX;
	return 0;
}

/* ---- emulator ------------------------------------------------------------------------------ */

int cvm_guest_emu_parse_reply(const char *line, size_t len, uint8_t **out, size_t *outlen,
			      struct cvm_err *err)
{
	*out = NULL;
	*outlen = 0;
	if (len >= 4 && memcmp(line, "ERR ", 4) == 0)
		return cvm_err_set(err, EIO, "TeeError", "host: %.*s",
				   (int)(len - 4 > 200 ? 200 : len - 4), line + 4);
	if (len < 4 || memcmp(line, "OK ", 3) != 0)
		return cvm_err_badparam(err, "emulator: malformed reply");
	return cvm_hex_decode(line + 3, len - 3, out, outlen, "emulator reply", err);
}

static int emu_request(int fd, const char *req, uint8_t **out, size_t *outlen,
		       struct cvm_err *err)
{
	size_t rl = strlen(req);
	for (size_t off = 0; off < rl;) {
		ssize_t w = write(fd, req + off, rl - off);
		if (w < 0 && errno == EINTR)
			continue;
		if (w <= 0)
			return cvm_err_set(err, EIO, "TeeError", "emulator port: write: %s",
					   strerror(errno));
		off += (size_t)w;
	}
	_cleanup_free_ char *line = malloc(EMU_REPLY_MAX);
	if (!line)
		return cvm_err_nomem(err);
	size_t n = 0;
	for (;;) {
		struct pollfd p = { .fd = fd, .events = POLLIN };
		int pr = poll(&p, 1, 120000);
		if (pr < 0 && errno == EINTR)
			continue;
		if (pr == 0)
			return cvm_err_set(err, ETIMEDOUT, "TeeError",
					   "host channel: no reply within 120 s");
		char c;
		ssize_t rd = read(fd, &c, 1);
		if (rd < 0 && (errno == EINTR || errno == EAGAIN))
			continue;
		if (rd <= 0)
			return cvm_err_set(err, EIO, "TeeError", "emulator port: read: %s",
					   rd == 0 ? "end of file" : strerror(errno));
		if (c == '\n')
			break;
		if (n + 1 >= EMU_REPLY_MAX)
			return cvm_err_badparam(err, "emulator port: reply longer than %d bytes",
						EMU_REPLY_MAX);
		line[n++] = c;
	}
	return cvm_guest_emu_parse_reply(line, n, out, outlen, err);
}

int cvm_guest_host_call(const struct cvm_guest_env *e, const char *kind, const char *body,
			uint8_t **out, size_t *outlen, struct cvm_err *err)
{
	*out = NULL;
	*outlen = 0;
	_cleanup_free_ char *hex = cvm_hex_encode(body, strlen(body));
	_cleanup_free_ char *req = hex ? cvm_asprintf("%s %s\n", kind, hex) : NULL;
	if (!req)
		return cvm_err_nomem(err);
	int fd = open(e->emu_port, O_RDWR | O_CLOEXEC | O_NOCTTY);
	if (fd < 0)
		return cvm_err_set(err, ENODEV, "HostChannel", "%s: %s", e->emu_port,
				   strerror(errno));
	int r = emu_request(fd, req, out, outlen, err);
	close(fd);
	return r;
}

static int emu_evidence(const struct cvm_guest_env *e, const uint8_t rd[64],
			struct cvm_guest_evidence *out, struct cvm_err *err)
{
	int fd = open(e->emu_port, O_RDWR | O_CLOEXEC | O_NOCTTY);
	if (fd < 0)
		return cvm_err_set(err, ENODEV, "TeeError", "%s: %s", e->emu_port, strerror(errno));
	_cleanup_free_ char *hex = cvm_hex_encode(rd, 64);
	_cleanup_free_ char *req = hex ? cvm_asprintf("SNP_REPORT %s\n", hex) : NULL;
	uint8_t *pem = NULL;
	size_t pl = 0;
	int r = req ? emu_request(fd, req, &out->report, &out->report_len, err) : cvm_err_nomem(err);
	if (r == 0 && out->report_len != CVM_SNP_REPORT_SIZE)
		r = cvm_err_badparam(err, "emulator: report of %zu bytes, expected %d",
				     out->report_len, CVM_SNP_REPORT_SIZE);
	if (r == 0)
		r = emu_request(fd, "VCEK\n", &pem, &pl, err);
	close(fd);
	if (r == 0) {
		out->cert_chain = strndup((const char *)pem, pl);
		if (!out->cert_chain)
			r = cvm_err_nomem(err);
	}
	free(pem);
	out->tee = CVM_GUEST_TEE_EMULATOR;
	if (r < 0)
		cvm_guest_evidence_clear(out);
	return r;
}

/* ---- vTPM HCL report (Azure-style paravisor) ------------------------------------------------ */

/* Run argv (no shell) and capture stdout, at most max bytes. */
static int run_capture(char *const argv[], uint8_t **out, size_t *outlen, size_t max,
		       struct cvm_err *err)
{
	int pfd[2];
	if (pipe2(pfd, O_CLOEXEC) < 0)
		return cvm_err_internal(err, "pipe: %s", strerror(errno));
	pid_t pid = fork();
	if (pid < 0) {
		close(pfd[0]);
		close(pfd[1]);
		return cvm_err_internal(err, "fork: %s", strerror(errno));
	}
	if (pid == 0) {
		dup2(pfd[1], STDOUT_FILENO);
		execvp(argv[0], argv);
		_exit(127);
	}
	close(pfd[1]);
	struct cvm_buf b = { 0 };
	int r = 0;
	for (;;) {
		uint8_t chunk[4096];
		ssize_t n = read(pfd[0], chunk, sizeof(chunk));
		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0)
			break;
		if (b.len + (size_t)n > max) {
			r = cvm_err_badparam(err, "%s: output larger than %zu bytes", argv[0], max);
			break;
		}
		if (cvm_buf_append(&b, chunk, (size_t)n) < 0) {
			r = cvm_err_nomem(err);
			break;
		}
	}
	close(pfd[0]);
	int st = 0;
	while (waitpid(pid, &st, 0) < 0 && errno == EINTR)
		;
	if (r == 0 && (!WIFEXITED(st) || WEXITSTATUS(st) != 0))
		r = cvm_err_set(err, EIO, "TeeError", "%s exited with status %d", argv[0],
				WIFEXITED(st) ? WEXITSTATUS(st) : -1);
	if (r < 0) {
		cvm_buf_free(&b);
		return r;
	}
	*out = b.data;
	*outlen = b.len;
	return 0;
}

static int vtpm_evidence(const struct cvm_guest_env *e, const uint8_t rd[64],
			 struct cvm_guest_evidence *out, struct cvm_err *err)
{
	/* The paravisor puts its own runtime data (HCLAkPub, HCLEkPub, user-data) under the SNP
	 * report's report_data; the guest's 64 bytes cannot be bound directly, so this backend
	 * reads the report as is and the flow's binding check (report_data == SHA-256(runtime))
	 * applies to the HCL's runtime data. */
	(void)rd;
	char *argv[] = { (char *)e->tpm2_nvread, "-C", "o", HCL_NV_INDEX, NULL };
	uint8_t *buf = NULL;
	size_t len = 0;
	int r = run_capture(argv, &buf, &len, HCL_MAX, err);
	if (r < 0)
		return cvm_err_prefix(err, "vTPM NV index %s", HCL_NV_INDEX);
	struct cvm_hcl_report h;
	if ((r = cvm_hcl_report_parse(buf, len, &h, err)) < 0 ||
	    (r = cvm_hcl_check_binding(&h, err)) < 0) {
		free(buf);
		return r;
	}
	out->report = buf;
	out->report_len = len;
	out->tee = CVM_GUEST_TEE_VTPM_HCL;
	return 0;
}

int cvm_guest_get_evidence(const struct cvm_guest_env *e, enum cvm_guest_tee tee,
			   const uint8_t report_data[64], struct cvm_guest_evidence *out,
			   struct cvm_err *err)
{
	*out = (struct cvm_guest_evidence){ 0 };
	switch (tee) {
	case CVM_GUEST_TEE_SEV_GUEST:
		return snp_evidence(e, report_data, out, err);
	case CVM_GUEST_TEE_TDX:
		return tdx_evidence(e, report_data, out, err);
	case CVM_GUEST_TEE_EMULATOR:
		return emu_evidence(e, report_data, out, err);
	case CVM_GUEST_TEE_VTPM_HCL:
		return vtpm_evidence(e, report_data, out, err);
	default:
		return cvm_err_badparam(err, "tee: a concrete backend is required");
	}
}
