/* SPDX-License-Identifier: Apache-2.0 */
/* TEE emulator service mode: a guest asks for evidence with its report data; the host's
 * launch description fixes everything else. Transport-independent (virtio-serial, socket). */
#include <string.h>

#include <opencvm/json.h>

#include "attest-internal.h"

static int read_text(const char *dir, const char *name, uint8_t **buf, size_t *len,
		     struct cvm_err *err)
{
	_cleanup_free_ char *path = cvm_path_join(dir, name);
	return path ? cvm_file_read(path, 64 * 1024, buf, len, err) : cvm_err_nomem(err);
}

static int serve_snp(const char *dir, const struct cvm_tee_emu_vm *vm, const uint8_t rd[64],
		     int64_t vmpl, json_t *resp, struct cvm_err *err)
{
	struct cvm_tee_emu_report_in in = vm->snp;
	memcpy(in.report_data, rd, 64);
	in.vmpl = (uint32_t)vmpl;
	uint8_t rep[CVM_SNP_REPORT_SIZE];
	int rc = cvm_tee_emu_snp_report(dir, &in, rep, err);
	if (rc < 0)
		return rc;
	struct cvm_buf chain = { 0 };
	static const char *const files[] = { "vcek.pem", "ask.pem", "ark.pem" };
	for (size_t i = 0; rc == 0 && i < CVM_ARRAY_SIZE(files); i++) {
		_cleanup_free_ uint8_t *pem = NULL;
		size_t l = 0;
		rc = read_text(dir, files[i], &pem, &l, err);
		if (rc == 0 && cvm_buf_append(&chain, pem, l) < 0)
			rc = cvm_err_nomem(err);
	}
	_cleanup_free_ char *b64 = rc == 0 ? cvm_b64url_encode(rep, sizeof(rep)) : NULL;
	char *pem = rc == 0 ? cvm_buf_cstr(&chain) : NULL;
	if (rc == 0 && (!b64 || !pem || json_object_set_new(resp, "report", json_string(b64)) ||
			json_object_set_new(resp, "cert_chain", json_string(pem))))
		rc = cvm_err_nomem(err);
	cvm_buf_free(&chain);
	return rc;
}

static int serve_tdx(const char *dir, const struct cvm_tee_emu_vm *vm, const uint8_t rd[64],
		     json_t *resp, struct cvm_err *err)
{
	struct cvm_tee_emu_tdx_in in = vm->tdx;
	memcpy(in.report_data, rd, 64);
	struct cvm_buf q = { 0 };
	int rc = cvm_tee_emu_tdx_quote(dir, &in, &q, err);
	_cleanup_free_ char *b64 = rc == 0 ? cvm_b64url_encode(q.data, q.len) : NULL;
	if (rc == 0 && (!b64 || json_object_set_new(resp, "quote", json_string(b64))))
		rc = cvm_err_nomem(err);
	cvm_buf_free(&q);
	return rc;
}

int cvm_tee_emu_serve(const char *dir, const struct cvm_tee_emu_vm *vm, const char *request,
		      size_t len, char **response, struct cvm_err *err)
{
	if (!dir || !vm || !response)
		return cvm_err_badparam(err, "emulator: dir, vm and response are required");
	*response = NULL;
	json_t *resp = json_object();
	json_t *req = NULL;
	if (!resp)
		return cvm_err_nomem(err);
	int rc = cvm_json_parse((const uint8_t *)request, len, false, &req, err);
	static const char *const tees[] = { "sev-snp", "tdx", NULL };
	const char *tee = NULL, *rdhex = NULL;
	int64_t vmpl = 0;
	uint8_t rd[64];
	if (rc == 0)
		rc = cvm_json_enum(req, "tee", NULL, true, tees, &tee, err);
	if (rc == 0)
		rc = cvm_json_str(req, "report_data", NULL, true, &rdhex, NULL, err);
	if (rc == 0)
		rc = cvm_hex_decode_fixed(rdhex, rd, 64, "report_data", err);
	if (rc == 0)
		rc = cvm_json_int(req, "vmpl", NULL, false, 0, 3, &vmpl, NULL, err);
	if (rc == 0)
		rc = strcmp(tee, "tdx") == 0 ? serve_tdx(dir, vm, rd, resp, err)
					     : serve_snp(dir, vm, rd, vmpl, resp, err);
	json_decref(req);
	if (rc < 0) {
		json_object_clear(resp);
		json_object_set_new(resp, "error", cvm_json_string_lossy(err->msg));
	}
	*response = cvm_json_dump(resp);
	json_decref(resp);
	if (!*response)
		return cvm_err_nomem(err);
	return rc;
}
