/* SPDX-License-Identifier: Apache-2.0 */
/* Internal to the store modules (store.c, journal.c, syncstore.c, fares.c, fares_import.c):
 * the only files that see SQLite. */
#ifndef KP_TERMINAL_STORE_INTERNAL_H
#define KP_TERMINAL_STORE_INTERNAL_H

#include <sqlite3.h>

#include "kp_sqlval.h"
#include "kp_store.h"

enum kp_stmt {
	KP_STMT_META_GET,
	KP_STMT_META_SET,
	KP_STMT_DENY_GET,
	KP_STMT_RECENT_GET,
	KP_STMT_RECENT_SET,
	KP_STMT_CARD_ENTS,
	KP_STMT_TAKE_RIDE,
	KP_STMT_JOURNAL_HEAD,
	KP_STMT_JOURNAL_APPEND,
	KP_STMT_ENT_GET,
	KP_STMT_PENDING_USE,
	KP_STMT_CARD_ELIG,
	KP_STMT_CHARGE,
	KP_STMT_ACTIVATE,
	KP_STMT_DISCOUNT,
	KP_STMT_FARE_STATE_GET,
	KP_STMT_FARE_STATE_PUT,
	KP_STMT_OPERATOR_FARE,
	KP_STMT_FARE_CAP,
	KP_STMT_TRANSFER_RULE,
	KP_STMT_PRODUCT_STOPS,
	KP_STMT_FARE_REMOTE,
	/* fares.c's lookups: prepared from its own SQL by kp_store_stmt_sql */
	KP_STMT_FARE_FEED,
	KP_STMT_FARE_STOP,
	KP_STMT_FARE_V1,
	KP_STMT_FARE_V1_MAX,
	KP_STMT_FARE_V2,
	KP_STMT_FARE_V2_MAX,
	KP_STMT_FARE_XFER_V2,
	KP_STMT_FARE_XFER_V1,
	KP_STMT_COUNT
};

struct kp_store {
	sqlite3 *db;
	sqlite3_stmt *stmts[KP_STMT_COUNT];  /* prepared once, on first use */
	char err[512];
};

/* A cached statement, reset and unbound; NULL (with s->err set) if it cannot be prepared. */
sqlite3_stmt *kp_store_stmt(kp_store *s, enum kp_stmt id);
/* The same for a statement whose SQL the caller owns (always the same text for an id). */
sqlite3_stmt *kp_store_stmt_sql(kp_store *s, enum kp_stmt id, const char *sql);
/* Column i as text into out ("" for NULL). */
void kp_store_col_text(sqlite3_stmt *st, int i, char *out, size_t cap);
/* Binds s as text, or NULL when s is NULL or empty. */
void kp_store_bind_opt(sqlite3_stmt *st, int i, const char *s);
/* The bundle's arrays as rows (bundlerows.c), through their field tables (SQL from
 * kp_bundle_row_sql): an element bound from ?1 on, an element from the columns from 0 on;
 * get_rows reads the whole table into b's array. */
void kp_store_bind_row(sqlite3_stmt *st, enum kp_bundle_array_id id, const void *el);
int  kp_store_read_row(sqlite3_stmt *st, enum kp_bundle_array_id id, void *el);
int  kp_store_get_rows(kp_store *s, enum kp_bundle_array_id id, struct kp_bundle *b);
/* The staging area of a chunked snapshot (snapstage.c): fills src's snap_* callbacks. */
void kp_store_snap_source(struct kp_sync_source *src);
/* Records SQLite's message for `what` in s->err and returns KP_E_DB. */
int kp_store_fail(kp_store *s, const char *what);

/* Binds a table of values (kp_sqlval.h) at ?1, ?2, ... */
#define KP_SQL_TOKEN(x) KP_SQL_BLOB((x), KP_TOKEN_LEN)
void kp_store_bind_vals(sqlite3_stmt *st, const struct kp_sql_val *v, size_t n);
/* Steps a statement that returns no rows, then resets it. */
int kp_store_step_done(kp_store *s, sqlite3_stmt *st, const char *what);
/* Prepares sql (its failure reported as `what`) and binds the values. */
int kp_store_prep_vals(kp_store *s, sqlite3_stmt **st, const char *sql, const char *what,
                       const struct kp_sql_val *v, size_t n);
/* The same, stepped as a statement that returns no rows and finalized. */
int kp_store_run_vals(kp_store *s, const char *what, const char *sql,
                      const struct kp_sql_val *v, size_t n);
/* A cached statement with the values bound, stepped once: *row says whether it stands on
 * a row (read it, then sqlite3_reset); NULL on failure (s->err set, reported as `what`). */
sqlite3_stmt *kp_store_row_vals(kp_store *s, enum kp_stmt id, const char *what, int *row,
                                const struct kp_sql_val *v, size_t n);
#define kp_store_row(s, id, what, row, ...) \
	kp_store_row_vals((s), (id), (what), (row), KP_SQL_VALS(__VA_ARGS__))
#define kp_store_bind(st, ...) kp_store_bind_vals((st), KP_SQL_VALS(__VA_ARGS__))
#define kp_store_prep(s, st, sql, what, ...) \
	kp_store_prep_vals((s), (st), (sql), (what), KP_SQL_VALS(__VA_ARGS__))
#define kp_store_run(s, what, sql, ...) kp_store_run_vals((s), (what), (sql), \
	KP_SQL_VALS(__VA_ARGS__))

#endif
