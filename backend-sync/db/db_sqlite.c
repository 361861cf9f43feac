/* SPDX-License-Identifier: Apache-2.0 */
/* kp_db.h on SQLite: a thin layer (the placeholders are SQLite's own). The connection
 * enforces foreign keys and waits up to 10 s for a lock, as the backend's store did; the
 * journal mode and synchronous level stay the caller's (kp_db_exec "PRAGMA ..."). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <sqlite3.h>

#include "kp_db.h"

struct sq_db {
	struct kp_db base;
	sqlite3 *db;
};

struct sq_stmt {
	struct kp_db_stmt base;
	sqlite3_stmt *st;
	int done;                        /* stepped to its end: DONE until reset (SQLite would
	                                    run it again) */
};

static sqlite3 *sq(kp_db *db)
{
	return ((struct sq_db *)db)->db;
}

static sqlite3_stmt *sqst(kp_db_stmt *st)
{
	return ((struct sq_stmt *)st)->st;
}

/* SQLite's result code as a KP_DB class, with its message in db->err. */
static int sq_fail(kp_db *db, int code, const char *what)
{
	int rc;

	switch (code & 0xff) {
	case SQLITE_CONSTRAINT: rc = KP_DB_E_CONSTRAINT; break;
	case SQLITE_BUSY:
	case SQLITE_LOCKED:     rc = KP_DB_E_BUSY; break;
	case SQLITE_NOMEM:      rc = KP_DB_E_NOMEM; break;
	case SQLITE_CANTOPEN:   rc = KP_DB_E_OPEN; break;
	case SQLITE_RANGE:
	case SQLITE_MISUSE:     rc = KP_DB_E_INVAL; break;
	default:                rc = KP_DB_E_SQL; break;
	}
	return kp_db_fail(db, rc, "%s: %s", what, sqlite3_errmsg(sq(db)));
}

static int sq_open(kp_db **out, const char *conn, int flags, char *err, size_t err_cap)
{
	struct sq_db *d = calloc(1, sizeof(*d));
	int oflags = (flags & KP_DB_READONLY) ? SQLITE_OPEN_READONLY :
	             SQLITE_OPEN_READWRITE | ((flags & KP_DB_CREATE) ? SQLITE_OPEN_CREATE : 0);
	char *msg = NULL;

	if (d == NULL)
		return KP_DB_E_NOMEM;
	d->base.ops = &kp_db_sqlite_ops;
	if (sqlite3_open_v2(conn, &d->db, oflags | SQLITE_OPEN_NOMUTEX, NULL) != SQLITE_OK) {
		snprintf(err, err_cap, "cannot open database %.400s: %s", conn,
		         d->db != NULL ? sqlite3_errmsg(d->db) : "out of memory");
		sqlite3_close(d->db);
		free(d);
		return KP_DB_E_OPEN;
	}
	sqlite3_busy_timeout(d->db, 10000);
	if (sqlite3_exec(d->db, "PRAGMA foreign_keys = ON", NULL, NULL, &msg) != SQLITE_OK) {
		snprintf(err, err_cap, "database %.400s: %s", conn, msg != NULL ? msg : "pragma");
		sqlite3_free(msg);
		sqlite3_close(d->db);
		free(d);
		return KP_DB_E_OPEN;
	}
	*out = &d->base;
	return KP_DB_OK;
}

static void sq_close(kp_db *db)
{
	struct sq_db *d = (struct sq_db *)db;

	if (!sqlite3_get_autocommit(d->db))
		sqlite3_exec(d->db, "ROLLBACK", NULL, NULL, NULL);
	sqlite3_close(d->db);
	free(d);
}

static int sq_exec(kp_db *db, const char *sql)
{
	char *msg = NULL;
	int code = sqlite3_exec(sq(db), sql, NULL, NULL, &msg);
	int rc;

	if (code == SQLITE_OK)
		return KP_DB_OK;
	rc = sq_fail(db, sqlite3_extended_errcode(sq(db)), "exec");
	kp_db_fail(db, rc, "%s", msg != NULL ? msg : sqlite3_errstr(code));
	sqlite3_free(msg);
	return rc;
}

static int sq_prepare(kp_db *db, kp_db_stmt **out, const char *sql)
{
	struct sq_stmt *s = calloc(1, sizeof(*s));

	if (s == NULL)
		return KP_DB_E_NOMEM;
	s->base.db = db;
	if (sqlite3_prepare_v3(sq(db), sql, -1, SQLITE_PREPARE_PERSISTENT, &s->st, NULL) !=
	    SQLITE_OK) {
		free(s);
		return sq_fail(db, sqlite3_extended_errcode(sq(db)), "prepare");
	}
	*out = &s->base;
	return KP_DB_OK;
}

static int sq_bound(kp_db_stmt *st, int code)
{
	return code == SQLITE_OK ? KP_DB_OK : sq_fail(st->db, code, "bind");
}

static int sq_bind_int64(kp_db_stmt *st, int i, int64_t v)
{
	return sq_bound(st, sqlite3_bind_int64(sqst(st), i, v));
}

static int sq_bind_text(kp_db_stmt *st, int i, const char *s, size_t len)
{
	return sq_bound(st, sqlite3_bind_text64(sqst(st), i, s, len, SQLITE_TRANSIENT,
	                                        SQLITE_UTF8));
}

static int sq_bind_blob(kp_db_stmt *st, int i, const void *p, size_t len)
{
	return sq_bound(st, sqlite3_bind_blob64(sqst(st), i, p, len, SQLITE_TRANSIENT));
}

static int sq_bind_null(kp_db_stmt *st, int i)
{
	return sq_bound(st, sqlite3_bind_null(sqst(st), i));
}

static int sq_clear_bindings(kp_db_stmt *st)
{
	sqlite3_clear_bindings(sqst(st));
	return KP_DB_OK;
}

static int sq_step(kp_db_stmt *st)
{
	struct sq_stmt *s = (struct sq_stmt *)st;
	int code;

	if (s->done)
		return KP_DB_DONE;
	code = sqlite3_step(s->st);
	if (code == SQLITE_ROW)
		return KP_DB_ROW;
	if (code == SQLITE_DONE) {
		s->done = 1;
		return KP_DB_DONE;
	}
	return sq_fail(st->db, sqlite3_extended_errcode(sq(st->db)), "step");
}

static int sq_param_count(kp_db_stmt *st)
{
	return sqlite3_bind_parameter_count(sqst(st));
}

static int sq_column_count(kp_db_stmt *st)
{
	return sqlite3_data_count(sqst(st));
}

static const char *sq_column_name(kp_db_stmt *st, int col)
{
	return col >= 0 && col < sqlite3_data_count(sqst(st)) ?
	       sqlite3_column_name(sqst(st), col) : NULL;
}

static int sq_column_type(kp_db_stmt *st, int col)
{
	switch (sqlite3_column_type(sqst(st), col)) {
	case SQLITE_INTEGER: return KP_DB_INTEGER;
	case SQLITE_FLOAT:   return KP_DB_FLOAT;
	case SQLITE_TEXT:    return KP_DB_TEXT;
	case SQLITE_BLOB:    return KP_DB_BLOB;
	default:             return KP_DB_NULL;
	}
}

static int sq_column_is_null(kp_db_stmt *st, int col)
{
	return sqlite3_column_type(sqst(st), col) == SQLITE_NULL;
}

static int64_t sq_column_int64(kp_db_stmt *st, int col)
{
	return sqlite3_column_int64(sqst(st), col);
}

static const char *sq_column_text(kp_db_stmt *st, int col)
{
	return (const char *)sqlite3_column_text(sqst(st), col);
}

static const void *sq_column_blob(kp_db_stmt *st, int col)
{
	return sqlite3_column_blob(sqst(st), col);
}

static size_t sq_column_bytes(kp_db_stmt *st, int col)
{
	int n = sqlite3_column_bytes(sqst(st), col);

	return n > 0 ? (size_t)n : 0;
}

/* sqlite3_reset repeats the last step's error: that error was reported by the step. */
static int sq_reset(kp_db_stmt *st)
{
	((struct sq_stmt *)st)->done = 0;
	sqlite3_reset(sqst(st));
	return KP_DB_OK;
}

static void sq_finalize(kp_db_stmt *st)
{
	sqlite3_finalize(sqst(st));
	free(st);
}

static int sq_begin(kp_db *db, enum kp_db_txn mode)
{
	return sq_exec(db, mode == KP_DB_TXN_WRITE ? "BEGIN IMMEDIATE" : "BEGIN");
}

static int sq_commit(kp_db *db)
{
	return sq_exec(db, "COMMIT");
}

static int sq_rollback(kp_db *db)
{
	return sqlite3_get_autocommit(sq(db)) ? KP_DB_OK : sq_exec(db, "ROLLBACK");
}

static int sq_in_txn(kp_db *db)
{
	return !sqlite3_get_autocommit(sq(db));
}

static int64_t sq_changes(kp_db *db)
{
	return sqlite3_changes64(sq(db));
}

static int sq_last_id(kp_db *db, int64_t *id)
{
	*id = sqlite3_last_insert_rowid(sq(db));
	return KP_DB_OK;
}

/* The write transaction (BEGIN IMMEDIATE) is the database's one writer already. */
static int sq_lock(kp_db *db, enum kp_db_lock_ns ns, const char *key)
{
	if (sqlite3_txn_state(sq(db), NULL) != SQLITE_TXN_WRITE)
		return kp_db_fail(db, KP_DB_E_INVAL, "lock %s: only inside a write transaction", key);
	return KP_DB_OK;
}

static int sq_version_get(kp_db *db, int *version)
{
	sqlite3_stmt *st = NULL;
	int code = sqlite3_prepare_v2(sq(db), "PRAGMA user_version", -1, &st, NULL);

	if (code == SQLITE_OK)
		code = sqlite3_step(st);
	if (code != SQLITE_ROW) {
		code = sqlite3_extended_errcode(sq(db));
		sqlite3_finalize(st);
		return sq_fail(db, code, "user_version");
	}
	*version = sqlite3_column_int(st, 0);
	sqlite3_finalize(st);
	return KP_DB_OK;
}

static int sq_version_set(kp_db *db, int version)
{
	char sql[48];

	snprintf(sql, sizeof(sql), "PRAGMA user_version = %d", version);
	return sq_exec(db, sql);
}

void *kp_db_sqlite_handle(kp_db *db)
{
	return db != NULL && db->ops == &kp_db_sqlite_ops ? (void *)sq(db) : NULL;
}

const struct kp_db_ops kp_db_sqlite_ops = {
	.scheme = "sqlite",
	.open = sq_open,
	.close = sq_close,
	.exec = sq_exec,
	.prepare = sq_prepare,
	.bind_int64 = sq_bind_int64,
	.bind_text = sq_bind_text,
	.bind_blob = sq_bind_blob,
	.bind_null = sq_bind_null,
	.clear_bindings = sq_clear_bindings,
	.step = sq_step,
	.param_count = sq_param_count,
	.column_count = sq_column_count,
	.column_name = sq_column_name,
	.column_type = sq_column_type,
	.column_is_null = sq_column_is_null,
	.column_int64 = sq_column_int64,
	.column_text = sq_column_text,
	.column_blob = sq_column_blob,
	.column_bytes = sq_column_bytes,
	.reset = sq_reset,
	.finalize = sq_finalize,
	.begin = sq_begin,
	.commit = sq_commit,
	.rollback = sq_rollback,
	.in_txn = sq_in_txn,
	.changes = sq_changes,
	.last_id = sq_last_id,
	.lock = sq_lock,
	.version_get = sq_version_get,
	.version_set = sq_version_set,
};
