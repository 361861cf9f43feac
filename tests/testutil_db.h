/* SPDX-License-Identifier: Apache-2.0 */
/* Helpers for the test programs that link SQLite (header-only, beside testutil.h). */
#ifndef KP_TESTUTIL_DB_H
#define KP_TESTUTIL_DB_H

#include <stdint.h>

#include <sqlite3.h>

#include "kp_db.h"

/* The first column of the first row sql gives over the database conn (a path, or a
 * PostgreSQL connection string), opened read-only (-1 if there is no row); a database that
 * does not open or a query that fails fails the test. */
static __attribute__((unused)) int64_t tu_db_value(const char *conn, const char *sql)
{
	kp_db *db = NULL;
	kp_db_stmt *st = NULL;
	char err[600];
	int64_t n = -1;
	int rc;

	if (kp_db_open(&db, conn, KP_DB_READONLY, err, sizeof(err)) != KP_DB_OK)
		fail_msg("%s", err);
	if (kp_db_prepare(db, &st, sql) != KP_DB_OK)
		fail_msg("%s: %s", sql, kp_db_errmsg(db));
	rc = kp_db_step(st);
	if (rc == KP_DB_ROW)
		n = kp_db_column_int64(st, 0);
	else if (rc != KP_DB_DONE)
		fail_msg("%s: %s", sql, kp_db_errmsg(db));
	kp_db_finalize(st);
	kp_db_close(db);
	return n;
}

/* The backend store's connection string for a test: dir/backend.db, or with KIPPU_TEST_PG
 * set (tests/pgtmp.sh run), a schema of its own in that PostgreSQL database (made here,
 * empty: every store opened on it starts from nothing, as a new file does). */
static __attribute__((unused)) void tu_store_conn(char *out, size_t cap, const char *dir)
{
	const char *pg = getenv("KIPPU_TEST_PG");
	static unsigned n;
	char name[64], sql[128], err[600];
	kp_db *db = NULL;

	if (pg == NULL || pg[0] == '\0') {
		snprintf(out, cap, "%s/backend.db", dir);
		return;
	}
	snprintf(name, sizeof(name), "t%ld_%u_%ld", (long)getpid(), n++, (long)time(NULL));
	snprintf(sql, sizeof(sql), "CREATE SCHEMA %s", name);
	if (kp_db_open(&db, pg, 0, err, sizeof(err)) != KP_DB_OK)
		fail_msg("KIPPU_TEST_PG %s: %s", pg, err);
	if (kp_db_exec(db, sql) != KP_DB_OK)
		fail_msg("%s: %s", sql, kp_db_errmsg(db));
	kp_db_close(db);
	snprintf(out, cap, "%s%soptions=-csearch_path%%3D%s", pg, strchr(pg, '?') ? "&" : "?",
	         name);
}

#endif
