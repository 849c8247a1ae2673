/* SPDX-License-Identifier: Apache-2.0 */
/* hsm: the key service (keys, versions, operations, soft delete, rotation, backup, security
 * domain, identities, RBAC, Secure Key Release). rest.c maps the Key Vault REST API onto it. */
#pragma once

#include <opencvm/util.h>

/* ==== keys, versions, operations, soft delete, rotation, backup, security domain ==== */

/* ==== end keys section ==== */

/* ==== identities, OAuth tokens, RBAC, release policy, Secure Key Release ==== */

/* ==== end auth section ==== */
