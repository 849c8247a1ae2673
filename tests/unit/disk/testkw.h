/* SPDX-License-Identifier: Apache-2.0 */
/* A local stand-in for the key service's wrap/unwrap, for tests and tools only.
 * Keys live in a directory: "<name>-<version>.pem" (RSA private key, for RSA-OAEP-256) or
 * "<name>-<version>.kek" (32 raw bytes, for A256KW); "<name>.latest" holds the version a
 * versionless key URL means. */
#pragma once

#include <opencvm/disk.h>

struct testkw {
	const char *dir;
	unsigned unwrap_calls;
};

void testkw_init(struct testkw *t, const char *dir, struct cvm_disk_keywrap *kw);
/* Create an RSA-2048 key (alg "RSA-OAEP-256") or a 256-bit KEK ("A256KW") as name/version
 * and make it the latest. 0 or -1. */
int testkw_make_key(const char *dir, const char *name, const char *version, const char *alg);
