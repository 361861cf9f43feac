/* SPDX-License-Identifier: Apache-2.0 */
/* Helpers for the test programs that link SQLite (header-only, beside testutil.h). */
#ifndef KP_TESTUTIL_DB_H
#define KP_TESTUTIL_DB_H

#include <stdint.h>

#include <sqlite3.h>

/* The first column of the first row sql gives over the database at path, opened read-only
 * (-1 if there is no row); a database that does not open or a query that does not prepare
 * fails the test. */
static __attribute__((unused)) int64_t tu_db_value(const char *path, const char *sql)
{
	sqlite3 *db = NULL;
	sqlite3_stmt *st = NULL;
	int64_t n = -1;

	assert_int_equal(sqlite3_open_v2(path, &db, SQLITE_OPEN_READONLY, NULL), SQLITE_OK);
	assert_int_equal(sqlite3_prepare_v2(db, sql, -1, &st, NULL), SQLITE_OK);
	if (sqlite3_step(st) == SQLITE_ROW)
		n = sqlite3_column_int64(st, 0);
	sqlite3_finalize(st);
	sqlite3_close(db);
	return n;
}

#endif
