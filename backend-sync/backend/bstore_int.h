/* SPDX-License-Identifier: Apache-2.0 */
/* backend/ internal: what the bstore*.c files (the backend's store on SQLite or
 * PostgreSQL, split by subject) share. Not a public header: kp_backend.h is the store's interface. */
#ifndef KP_BSTORE_INT_H
#define KP_BSTORE_INT_H

#include <stdbool.h>
#include <stdint.h>

#include "kp_backend.h"
#include "kp_cbor.h"
#include "kp_db.h"
#include "kp_civil.h"
#include "kp_sqlval.h"

struct kp_bstore {
	kp_db *db;                       /* SQLite or PostgreSQL (kp_db.h); bs_run's and
	                                    bs_query_int's statements are its cached ones */
	char err[512];
	size_t n_left_out;               /* rows the last bundle left out, the first one noted */
	char left_out[384];
	int64_t partitions_day;          /* PostgreSQL: the day (the store's clock) the monthly
	                                    record partitions were last made ahead */
};

/* The legacy journal (all zeros): records of terminals from before journal ids. */
extern const uint8_t bs_legacy_journal[KP_JOURNAL_ID_LEN];
/* products.product_kind of each enum kp_product_kind */
extern const char *const bs_kind_sql[4];

/* The larger of two SQL values (SQLite's scalar max, which PostgreSQL lacks). */
#define BS_GREATER(a, b) "(CASE WHEN " a " >= " b " THEN " a " ELSE " b " END)"

/* The tables the change log (schema 10) follows, on both engines: ROW(table, kind, key
 * column) for what a delta carries, CONFIG(table) for what it cannot say. */
#define BS_LOGGED_TABLES(ROW, CONFIG)                                                      \
	ROW(denylist, deny, token) ROW(entitlements, ent, token)                              \
	ROW(linkages, linkage, token) ROW(linkage_cards, elig, card)                          \
	ROW(clone_flags, linkage, linkage) ROW(clone_flags, deny, linkage)                    \
	CONFIG(operators) CONFIG(products) CONFIG(product_operators) CONFIG(product_stops)    \
	CONFIG(product_scope) CONFIG(discounts) CONFIG(fare_caps) CONFIG(transfer_rules)      \
	CONFIG(operator_fares) CONFIG(fare_packages)

/* The values bs_query binds (kp_sqlval.h), by shorter names. */
#define BS_TEXT       KP_SQL_TEXT
#define BS_OPT        KP_SQL_OPT
#define BS_INT        KP_SQL_INT
#define BS_INT_IF     KP_SQL_INT_IF
#define BS_BLOB       KP_SQL_BLOB
#define BS_TOKEN(x)   KP_SQL_BLOB((x), KP_TOKEN_LEN)
#define BS_JOURNAL(x) KP_SQL_BLOB((x), KP_JOURNAL_ID_LEN)
#define BS_VALS       KP_SQL_VALS
/* Prepares sql and binds the values (copies: they need not outlive the call). */
#define bs_query(s, st, sql, ...) bs_prep_bind((s), (st), (sql), BS_VALS(__VA_ARGS__))
/* The same, then steps a statement that returns no rows and finalizes it. */
#define bs_run(s, what, sql, ...) bs_run_vals((s), (what), (sql), BS_VALS(__VA_ARGS__))
/* The same for a query: its first column of its first row in *v, else def. */
#define bs_query_int(s, def, v, sql, ...) \
	bs_int_vals((s), (def), (v), (sql), BS_VALS(__VA_ARGS__))

/* bs_query's statement prepared once per connection (the per-record queries of ingest):
 * give it back with kp_db_reset (kp_db_finalize only resets it). */
#define bs_query_cached(s, st, sql, ...) \
	bs_cached_bind((s), (st), (sql), BS_VALS(__VA_ARGS__))

/* Eligibility: every active, unexpired linkage (token = the linkage, no via) and every card
 * linked to one (token = the card, via = the linkage), with the linkage's category and
 * validity. A card linked through several linkages of one category gets one row: the
 * linkage valid the longest (row_number, which both engines run). One row per (token,
 * category) also keeps the bundle valid should a card token ever equal a linkage token.
 * ELIGIBILITY_OF is the same for one token (?2), for a delta. */
#define SUSPENDED(col) " AND NOT EXISTS (SELECT 1 FROM clone_flags f WHERE f.linkage = " \
	col " AND f.suspended = 1 AND f.cleared IS NULL)"
#define ELIGIBILITY_FROM(w1, w2)                                                           \
	" FROM (SELECT via, valid_from, token, valid_until, category, row_number() OVER"     \
	" (PARTITION BY token, category ORDER BY valid_until DESC, valid_from,"              \
	" via NULLS FIRST) AS rn"                                                             \
	" FROM (SELECT token, category, valid_from, valid_until, NULL AS via FROM linkages"  \
	"   WHERE status = 'active' AND valid_until > ?1" w1 SUSPENDED("linkages.token")      \
	" UNION ALL SELECT lc.card, l.category, l.valid_from, l.valid_until, lc.linkage"       \
	"   FROM linkage_cards lc JOIN linkages l ON l.token = lc.linkage"                      \
	"   WHERE l.status = 'active' AND l.valid_until > ?1" w2 SUSPENDED("lc.linkage")     \
	") AS u) AS e WHERE rn = 1"
#define ELIGIBILITY_SQL ELIGIBILITY_FROM("", "")
#define ELIGIBILITY_OF ELIGIBILITY_FROM(" AND token = ?2", " AND lc.card = ?2")
#define ELIGIBILITY_COLS "SELECT via, valid_from, token, valid_until, category"
/* The denylist, and every linkage suspended as a possible copy (its eligibility is
 * withheld above, and a direct tap of it is refused as denylisted). */
#define SUSPENDED_REASON "suspended: possible copied My Number card"
#define DENYLIST_SQL                                                                       \
	" FROM (SELECT token, reason, added FROM denylist UNION ALL"                           \
	"  SELECT linkage, '" SUSPENDED_REASON "', min(at) FROM clone_flags"                   \
	"  WHERE suspended = 1 AND cleared IS NULL"                                            \
	"  AND linkage NOT IN (SELECT token FROM denylist) GROUP BY linkage) AS dl"
/* Entitlements as the bundle's field table reads them. */
#define ENTITLEMENT_COLS "SELECT id, valid_from, token, valid_until, product_id, first_use," \
	" " BS_GREATER("bought - used", "0") " FROM entitlements"

/* bstore_bundle.c, for bstore_delta.c */
struct kp_fare_value;
void bs_row_values(kp_db_stmt *st, size_t n_cols, struct kp_fare_value *vals);
int  bs_fill_remote(kp_bstore *s, const char *terminal, int64_t now_ms, struct kp_bundle *b,
                    const uint8_t *only);

/* bstore.c */
int bs_cached_bind(kp_bstore *s, kp_db_stmt **st, const char *sql,
                   const struct kp_sql_val *v, size_t n);
int bs_prep_bind(kp_bstore *s, kp_db_stmt **st, const char *sql, const struct kp_sql_val *v,
                 size_t n);
int bs_run_vals(kp_bstore *s, const char *what, const char *sql, const struct kp_sql_val *v,
                size_t n);
int bs_int_vals(kp_bstore *s, int64_t def, int64_t *out, const char *sql,
                const struct kp_sql_val *v, size_t n);
int bs_bump_version(kp_bstore *s);
/* The change log's entry for the current state version, and its retention (bstore.c). */
int bs_version_mark(kp_bstore *s);
int bs_commit_change(kp_bstore *s, int rc);
int bs_end(kp_bstore *s, int rc, int bump);
int bs_exec(kp_bstore *s, const char *sql);
/* The store is on PostgreSQL (else SQLite). */
bool bs_is_pg(const kp_bstore *s);
/* After a rolled back transaction that failed with rc: run it again? Yes for a
 * PostgreSQL serialization failure or deadlock (KP_DB_E_BUSY; SQLite's busy timeout already
 * waited), at most BS_ATTEMPTS times in all. */
#define BS_ATTEMPTS 5
bool bs_retry(kp_bstore *s, int rc, int attempt);
/* PostgreSQL: the records' monthly partitions of now_ms's month and the next two made
 * (kippu_record_partitions), once a day of the store's clock; SQLite: nothing. */
void bs_partitions(kp_bstore *s, int64_t now_ms);
/* kp_db_begin / kp_db_commit with the store's errors. */
int bs_begin(kp_bstore *s, enum kp_db_txn mode);
int bs_commit(kp_bstore *s);
int bs_fail(kp_bstore *s, const char *what);
/* Writes the message into s->err and returns rc. */
int bs_refuse(kp_bstore *s, int rc, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
int bs_prep(kp_bstore *s, kp_db_stmt **st, const char *sql);
void bs_rollback(kp_bstore *s);
int bs_step_done(kp_bstore *s, kp_db_stmt *st, const char *what);
uint64_t bs_version_clock_ms(void);
/* bstore_bundle.c */
void bs_copy_text(char *dst, size_t cap, const char *src);
bool bs_plain_id(const char *s);
/* bstore_config.c */
int bs_change(kp_bstore *s, const char *sql, const char *what, const char *t1,
              const char *t2, const uint8_t *blob, int64_t i3, int64_t i4);
int bs_meta_put(kp_bstore *s, const char *key, int64_t v);
int bs_meta_puts(kp_bstore *s, const char *const *keys, const int64_t *v, size_t n);
/* bstore_ingest.c */
int bs_bundle_refresh(kp_bstore *s, int64_t now_ms);
/* bstore_journal.c */
int bs_alias_of_held(kp_bstore *s, const struct kp_bsession *ses, const struct kp_ingest *r,
                     int64_t now_ms, int *found);
int bs_quarantine(kp_bstore *s, const char *terminal, uint64_t seq, const char *reason,
                  const struct kp_ingest *r, int64_t now_ms);
int bs_same_as_stored(kp_bstore *s, const struct kp_bsession *ses, const struct kp_ingest *r,
                      int *same);
int bs_session_of(kp_bstore *s, struct kp_bsession *ses, const char *terminal,
                  const uint8_t *journal);
/* bstore_linkage.c */
int bs_change_feed_places(kp_bstore *s, const char *feed_id);
int bs_link_request(kp_bstore *s, const struct kp_bsession *ses,
                    const struct kp_record *c, int64_t now_ms);
/* bstore_certs.c: ms as 2027-03-15T08:00:00Z (UTC), both engines (no SQL date functions). */
void bs_iso_time(char *out, size_t cap, int64_t ms);
/* bstore_certs.c: a certificate's fingerprint (hex) and validity (ms; *valid 0: none). */
void bs_cert_facts(const uint8_t *der, size_t len, char fp[2 * KP_SHA256_LEN + 1],
                   int64_t *not_before, int64_t *not_after, int *valid);
/* kp_cert_fingerprint(der), kp_cert_not_before(der), kp_cert_not_after(der) (ms) on db. */
int bs_cert_functions(kp_db *db);
int bs_meta_int(kp_bstore *s, const char *key, int64_t def, int64_t *v);

#endif
