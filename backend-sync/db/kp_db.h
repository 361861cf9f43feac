/* SPDX-License-Identifier: Apache-2.0 */
/* kippu's SQL engines behind one table of operations (the HAL's shape, STYLE.md): the
 * backend's store writes its logic once against this header, and a connection string picks
 * the engine. SQLite is the default (a file path); PostgreSQL is reached through libpq
 * ("postgresql://...", "postgres://..." or libpq's "host=... dbname=..." form).
 *
 * The contract both engines keep (tests/backend/test_db.c runs it against both):
 * - SQL is prepared with `?` or `?N` placeholders (SQLite's spelling); PostgreSQL gets them
 *   as $1, $2, ... (kp_db_placeholders), never values written into the text. A bare `?` is
 *   one above the highest number so far, as in SQLite.
 * - Values are bound by copy (they need not outlive the call): int64, text, blob (bytea,
 *   sent in binary), NULL; an unbound parameter is NULL.
 * - kp_db_step answers KP_DB_ROW while there are rows, then KP_DB_DONE (again until
 *   kp_db_reset, which lets it run once more with the same bindings); columns are read
 *   between two steps and what they return lives until the next step, reset or finalize.
 * - An error in the SQL itself comes from kp_db_prepare on SQLite, from the first
 *   kp_db_step on PostgreSQL (the text goes to the server with its first values): check
 *   both, as every caller of a step does anyway.
 * - After an error inside a transaction the only thing to do is roll it back (PostgreSQL
 *   aborts the transaction; SQLite would let it go on, the store must not rely on that).
 * - Errors are negative KP_DB_E_* codes, one per class a caller acts on differently
 *   (retry, report the refusal, reconnect, give up); kp_db_errmsg has the engine's words.
 * Library code: nothing here prints. */
#ifndef KP_DB_H
#define KP_DB_H

#include <stddef.h>
#include <stdint.h>

enum kp_db_rc {
	KP_DB_OK           = 0,
	KP_DB_ROW          = 1,      /* kp_db_step: a row is ready */
	KP_DB_DONE         = 2,      /* kp_db_step: no more rows (or none: not a query) */
	KP_DB_E_INVAL      = -0x4C1, /* bad argument or misuse (index out of range, no txn) */
	KP_DB_E_NOMEM      = -0x4C2,
	KP_DB_E_OPEN       = -0x4C3, /* cannot open the file / connect to the server */
	KP_DB_E_SQL        = -0x4C4, /* any other error of the statement (syntax, types...) */
	KP_DB_E_CONSTRAINT = -0x4C5, /* a constraint or a trigger refused the change */
	KP_DB_E_BUSY       = -0x4C6, /* locked, deadlock or serialization failure: roll back
	                                and run the transaction again */
	KP_DB_E_LOST       = -0x4C7, /* the connection to the server is gone */
	KP_DB_E_NOTSUP     = -0x4C8, /* this engine cannot do that */
	KP_DB_E_SCHEMA     = -0x4C9, /* the database's schema is newer than the program's */
};

/* The text of a KP_DB_* code (a class, not the engine's detail: see kp_db_errmsg). */
const char *kp_db_strerror(int rc);

/* kp_db_column_type: what a value is (SQLite's storage classes; PostgreSQL's by the
 * column's type: int2/int4/int8/bool are integers, float4/float8/numeric floats, bytea
 * blobs, anything else text). */
enum kp_db_type { KP_DB_NULL = 0, KP_DB_INTEGER = 1, KP_DB_FLOAT = 2, KP_DB_TEXT = 3,
                  KP_DB_BLOB = 4 };

/* kp_db_open flags */
#define KP_DB_CREATE   0x1   /* SQLite: create the file if missing (PostgreSQL: ignored) */
#define KP_DB_READONLY 0x2   /* SQLite: open read-only; PostgreSQL: read-only session */

/* kp_db_begin modes */
enum kp_db_txn {
	/* A writer. SQLite: BEGIN IMMEDIATE (the database's one write lock, taken now).
	 * PostgreSQL: READ COMMITTED, so that every statement after a lock wait
	 * (kp_db_lock) sees what the lock's previous holder committed; writers that must not
	 * interleave take a kp_db_lock first. */
	KP_DB_TXN_WRITE = 1,
	/* One consistent view over several statements (a bundle). SQLite: BEGIN (deferred);
	 * PostgreSQL: REPEATABLE READ (a write in it may fail with KP_DB_E_BUSY). */
	KP_DB_TXN_SNAPSHOT = 2,
};

/* kp_db_lock namespaces: a lock is (namespace, key), held until the transaction ends. */
enum kp_db_lock_ns {
	KP_DB_LOCK_TERMINAL = 1,     /* one terminal's ingest (key: the terminal id) */
	KP_DB_LOCK_CONFIG   = 2,     /* operators' changes to the catalog and policy */
	KP_DB_LOCK_SCHEMA   = 3,     /* migrations (kp_db_migrate takes it itself) */
};

typedef struct kp_db kp_db;
typedef struct kp_db_stmt kp_db_stmt;

/* An engine's operations. kp_db_* answers KP_DB_E_NOTSUP for a missing one, except the
 * column and count readers, close, finalize, in_txn and changes, which every engine has. */
struct kp_db_ops {
	const char *scheme;          /* "sqlite", "postgresql" */
	/* conn: a path (SQLite) or a libpq connection string; why it failed in err. */
	int (*open)(kp_db **out, const char *conn, int flags, char *err, size_t err_cap);
	void (*close)(kp_db *db);
	/* Runs sql (one or more statements, no parameters, rows discarded). */
	int (*exec)(kp_db *db, const char *sql);
	/* A statement of its own (never cached); sql in SQLite's placeholder spelling. */
	int (*prepare)(kp_db *db, kp_db_stmt **out, const char *sql);
	int (*bind_int64)(kp_db_stmt *st, int i, int64_t v);
	int (*bind_text)(kp_db_stmt *st, int i, const char *s, size_t len);
	int (*bind_blob)(kp_db_stmt *st, int i, const void *p, size_t len);
	int (*bind_null)(kp_db_stmt *st, int i);
	int (*clear_bindings)(kp_db_stmt *st);
	int (*step)(kp_db_stmt *st);
	int (*param_count)(kp_db_stmt *st);
	int (*column_count)(kp_db_stmt *st);
	const char *(*column_name)(kp_db_stmt *st, int col);
	int (*column_type)(kp_db_stmt *st, int col);
	int (*column_is_null)(kp_db_stmt *st, int col);
	int64_t (*column_int64)(kp_db_stmt *st, int col);
	const char *(*column_text)(kp_db_stmt *st, int col);
	const void *(*column_blob)(kp_db_stmt *st, int col);
	size_t (*column_bytes)(kp_db_stmt *st, int col);
	int (*reset)(kp_db_stmt *st);
	void (*finalize)(kp_db_stmt *st);
	int (*begin)(kp_db *db, enum kp_db_txn mode);
	int (*commit)(kp_db *db);
	int (*rollback)(kp_db *db);
	int (*in_txn)(kp_db *db);
	int64_t (*changes)(kp_db *db);
	int (*last_id)(kp_db *db, int64_t *id);
	int (*lock)(kp_db *db, enum kp_db_lock_ns ns, const char *key);
	int (*version_get)(kp_db *db, int *version);
	int (*version_set)(kp_db *db, int version);
};

#define KP_DB_CACHE 64

/* Every connection starts with this (the engine's own fields follow), every statement
 * with struct kp_db_stmt_base. */
struct kp_db {
	const struct kp_db_ops *ops;
	char err[512];               /* the last failure, in the engine's words */
	int err_rc;                  /* and its KP_DB_E_* class */
	/* kp_db_prepare_cached's statements, keyed by the SQL text's address (then text) */
	struct { const char *sql; kp_db_stmt *st; } cache[KP_DB_CACHE];
	unsigned cache_next;
};
struct kp_db_stmt {
	kp_db *db;
	int cached;                  /* owned by the cache: finalize only resets it */
};

extern const struct kp_db_ops kp_db_sqlite_ops;
extern const struct kp_db_ops kp_db_pg_ops;

/* The engine a connection string names: PostgreSQL for "postgresql://", "postgres://" or a
 * libpq keyword string (starting with `word=`), else SQLite (a path; write "./host=x.db"
 * for a file whose name looks like a keyword). */
const struct kp_db_ops *kp_db_engine_of(const char *conn);
int kp_db_open(kp_db **out, const char *conn, int flags, char *err, size_t err_cap);
void kp_db_close(kp_db *db);
/* "sqlite" or "postgresql" */
const char *kp_db_engine(const kp_db *db);
/* The sqlite3 handle of a SQLite connection (to register SQL functions on it), else NULL. */
void *kp_db_sqlite_handle(kp_db *db);
const char *kp_db_errmsg(const kp_db *db);
/* The KP_DB_E_* class of the last failure (meaningful right after one). */
int kp_db_errclass(const kp_db *db);

int kp_db_exec(kp_db *db, const char *sql);
int kp_db_prepare(kp_db *db, kp_db_stmt **out, const char *sql);
/* The connection's statement for sql, prepared once (PostgreSQL: a named server-side
 * statement), its bindings cleared. Give it back with kp_db_reset; kp_db_finalize on it only
 * resets it. sql must be a string that lives as long as the connection (a literal). */
int kp_db_prepare_cached(kp_db *db, kp_db_stmt **out, const char *sql);
/* Parameters count from 1, columns from 0, as in SQLite. len (SIZE_MAX: strlen). */
int kp_db_bind_int64(kp_db_stmt *st, int i, int64_t v);
int kp_db_bind_text(kp_db_stmt *st, int i, const char *s, size_t len);
int kp_db_bind_blob(kp_db_stmt *st, int i, const void *p, size_t len);
int kp_db_bind_null(kp_db_stmt *st, int i);
int kp_db_clear_bindings(kp_db_stmt *st);
/* KP_DB_ROW, KP_DB_DONE or a KP_DB_E_* code. */
int kp_db_step(kp_db_stmt *st);
/* The highest parameter number the SQL holds. */
int kp_db_param_count(kp_db_stmt *st);
/* Columns of the current row (0 when there is none). */
int kp_db_column_count(kp_db_stmt *st);
/* Its name (AS ...), while there is a row; NULL for no such column. */
const char *kp_db_column_name(kp_db_stmt *st, int col);
/* enum kp_db_type of the current row's value. */
int kp_db_column_type(kp_db_stmt *st, int col);
int kp_db_column_is_null(kp_db_stmt *st, int col);
/* A NULL reads as 0, NULL text, NULL blob of 0 bytes. */
int64_t kp_db_column_int64(kp_db_stmt *st, int col);
const char *kp_db_column_text(kp_db_stmt *st, int col);
const void *kp_db_column_blob(kp_db_stmt *st, int col);
size_t kp_db_column_bytes(kp_db_stmt *st, int col);
int kp_db_reset(kp_db_stmt *st);
void kp_db_finalize(kp_db_stmt *st);

int kp_db_begin(kp_db *db, enum kp_db_txn mode);
int kp_db_commit(kp_db *db);
/* Rolls back the open transaction, if any (none: KP_DB_OK). */
int kp_db_rollback(kp_db *db);
int kp_db_in_txn(kp_db *db);
/* Rows changed by the last INSERT, UPDATE or DELETE. */
int64_t kp_db_changes(kp_db *db);
/* The id of the last row inserted. Portable SQL says `INSERT ... RETURNING id` (both
 * engines run it); this is SQLite's last_insert_rowid and PostgreSQL's lastval() (the last
 * identity or sequence value this session drew). */
int kp_db_last_id(kp_db *db, int64_t *id);
/* Within a KP_DB_TXN_WRITE transaction: waits until no other transaction holds (ns, key),
 * then holds it until this one ends. PostgreSQL: pg_advisory_xact_lock on (a kippu class
 * and ns, a 32-bit hash of key): two keys of one hash only wait for each other. SQLite: the
 * write transaction already excludes every other writer (KP_DB_OK). */
int kp_db_lock(kp_db *db, enum kp_db_lock_ns ns, const char *key);

/* Migrations: the schema is at version N once every migration up to N has run. A
 * database older than the first migration's version gets all of them; each one runs in a
 * transaction of its own, under KP_DB_LOCK_SCHEMA, and re-reads the version inside it (two
 * programs starting at once migrate once). SQLite keeps the version in PRAGMA user_version,
 * PostgreSQL in a table schema_version (one row per migration, with when it ran). */
struct kp_db_migration {
	int version;                 /* strictly increasing along the table */
	const char *sql;             /* run by kp_db_exec */
};
/* *from, *to (either may be NULL): the version found and the one left. A database newer
 * than the last migration is KP_DB_E_SCHEMA. */
int kp_db_migrate(kp_db *db, const struct kp_db_migration *m, size_t n, int *from, int *to);
int kp_db_schema_version(kp_db *db, int *version);

/* PostgreSQL's spelling of sql: `?` and `?N` outside quotes and comments become $N. out
 * gets at most cap bytes with its NUL; *n_params the highest number. KP_DB_E_INVAL if it
 * does not fit or a number is above 32767 (PostgreSQL's limit is 65535; SQLite's 32766). */
int kp_db_placeholders(const char *sql, char *out, size_t cap, int *n_params);

/* For the engines (db.c): record an error in db->err and return rc. */
int kp_db_fail(kp_db *db, int rc, const char *fmt, ...) __attribute__((format(printf, 3, 4)));

#endif
