/* SPDX-License-Identifier: Apache-2.0 */
/* Secure Boot state read from an OVMF variable store (the VARS flash a VM boots with): the
 * firmware volume (EFI_FIRMWARE_VOLUME_HEADER, "_FVH"), its VARIABLE_STORE_HEADER, then
 * 4-byte aligned AUTHENTICATED_VARIABLE_HEADER records (StartId 0x55AA) with UCS-2 names.
 * Secure Boot is in force when PK is enrolled (user mode) and SecureBootEnable is not 0 —
 * edk2's AuthVariableLib creates SecureBootEnable = 1 on its own when PK exists. */
#include <opencvm/vm.h>

#include <string.h>

#define FV_SIGNATURE_OFF 40
#define FV_HEADER_LEN_OFF 48
#define STORE_HEADER_LEN 28
#define VAR_HEADER_LEN 60
#define VAR_START_ID 0x55AA
#define VAR_ADDED 0x3F
#define VAR_IN_DELETED_TRANSITION 0xFE

/* EFI GUIDs in their on-disk (mixed-endian) byte order. */
static const uint8_t auth_store_guid[16] = { 0x78, 0x2c, 0xf3, 0xaa, 0x7b, 0x94, 0x9a, 0x43,
					     0xa1, 0x80, 0x2e, 0x14, 0x4e, 0xc3, 0x77, 0x92 };
static const uint8_t global_var_guid[16] = { 0x61, 0xdf, 0xe4, 0x8b, 0xca, 0x93, 0xd2, 0x11,
					     0xaa, 0x0d, 0x00, 0xe0, 0x98, 0x03, 0x2b, 0x8c };
static const uint8_t image_security_guid[16] = { 0xcb, 0xb2, 0x19, 0xd7, 0x3a, 0x3d, 0x96, 0x45,
						 0xa3, 0xbc, 0xda, 0xd0, 0x0e, 0x67, 0x65, 0x6f };
static const uint8_t sb_enable_guid[16] = { 0xc7, 0x0b, 0xa3, 0xf0, 0x08, 0xaf, 0x56, 0x45,
					    0x99, 0xc4, 0x00, 0x10, 0x09, 0xc9, 0x3a, 0x44 };

static uint16_t le16(const uint8_t *p)
{
	return (uint16_t)(p[0] | p[1] << 8);
}

static uint32_t le32(const uint8_t *p)
{
	return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}

/* name (UCS-2, NUL-terminated, name_size bytes) equals the ASCII want? */
static bool name_is(const uint8_t *name, uint32_t name_size, const char *want)
{
	size_t n = strlen(want);
	if (name_size != 2 * (n + 1))
		return false;
	for (size_t i = 0; i <= n; i++)
		if (le16(name + 2 * i) != (uint16_t)(unsigned char)want[i])
			return false;
	return true;
}

static void note_variable(struct cvm_ovmf_secure_boot *sb, const uint8_t *guid,
			  const uint8_t *name, uint32_t name_size, const uint8_t *data,
			  uint32_t data_size)
{
	if (memcmp(guid, global_var_guid, 16) == 0) {
		if (name_is(name, name_size, "PK"))
			sb->pk = data_size > 0;
		else if (name_is(name, name_size, "KEK"))
			sb->kek = data_size > 0;
	} else if (memcmp(guid, image_security_guid, 16) == 0) {
		if (name_is(name, name_size, "db"))
			sb->db = data_size > 0;
		else if (name_is(name, name_size, "dbx"))
			sb->dbx = data_size > 0;
	} else if (memcmp(guid, sb_enable_guid, 16) == 0 &&
		   name_is(name, name_size, "SecureBootEnable") && data_size >= 1) {
		sb->secure_boot_enable = data[0];
	}
}

int cvm_ovmf_vars_secure_boot(const uint8_t *d, size_t len, struct cvm_ovmf_secure_boot *sb,
			      struct cvm_err *err)
{
	memset(sb, 0, sizeof(*sb));
	sb->secure_boot_enable = -1;
	if (len < FV_HEADER_LEN_OFF + 2 || memcmp(d + FV_SIGNATURE_OFF, "_FVH", 4) != 0)
		return cvm_err_badparam(err, "OVMF vars: no firmware volume header (_FVH)");
	size_t off = le16(d + FV_HEADER_LEN_OFF);
	if (off < FV_HEADER_LEN_OFF + 8 || off > len || len - off < STORE_HEADER_LEN)
		return cvm_err_badparam(err, "OVMF vars: firmware volume header length %zu outside "
					     "the %zu-byte file", off, len);
	if (memcmp(d + off, auth_store_guid, 16) != 0)
		return cvm_err_badparam(err, "OVMF vars: the variable store is not of the "
					     "authenticated format (Secure Boot builds use it)");
	uint32_t store_size = le32(d + off + 16);
	if (store_size < STORE_HEADER_LEN || store_size > len - off)
		return cvm_err_badparam(err, "OVMF vars: variable store size %u outside the file",
					store_size);
	size_t end = off + store_size;
	size_t p = (off + STORE_HEADER_LEN + 3) & ~(size_t)3;
	while (p + VAR_HEADER_LEN <= end && le16(d + p) == VAR_START_ID) {
		uint8_t state = d[p + 2];
		uint32_t name_size = le32(d + p + 36), data_size = le32(d + p + 40);
		const uint8_t *guid = d + p + 44;
		size_t body = p + VAR_HEADER_LEN;
		if (name_size > end - body || data_size > end - body - name_size)
			return cvm_err_badparam(err, "OVMF vars: variable at offset %zu runs past the "
						     "store (name %u, data %u bytes)", p, name_size,
						data_size);
		if (state == VAR_ADDED || state == (VAR_ADDED & VAR_IN_DELETED_TRANSITION))
			note_variable(sb, guid, d + body, name_size, d + body + name_size,
				      data_size);
		sb->variables++;
		p = (body + name_size + data_size + 3) & ~(size_t)3;
	}
	sb->enabled = sb->pk && sb->secure_boot_enable != 0;
	return 0;
}
