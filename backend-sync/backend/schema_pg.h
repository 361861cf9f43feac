/* SPDX-License-Identifier: Apache-2.0 */
/* backend/ internal: the store's schema on PostgreSQL (schema_pg.c), for kp_db_migrate. */
#ifndef KP_SCHEMA_PG_H
#define KP_SCHEMA_PG_H

#include <stddef.h>

#include "kp_db.h"

/* The migrations, oldest first, and their number in *n. */
const struct kp_db_migration *kp_bstore_pg_migrations(size_t *n);

#endif
