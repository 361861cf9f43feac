/* SPDX-License-Identifier: Apache-2.0 */
/* Fares across terminals (terminal/fare/FARES.md, "Across terminals"): the backend's remote row
 * per card, computed for the terminal a bundle is made for from the other terminals'
 * records; bundle format 3 ("remote", "scopes") round trip and strict decoding; the
 * terminal applying it in the bundle's transaction; the records' event column migration;
 * and the time to build a bundle over 100,000 recent records. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

#include <cmocka.h>

#include "kp_backend.h"
#include "kp_terminal.h"
#include "testutil.h"
#include "testutil_bundle.h"
#include "testutil_db.h"

/* what the backend's migration 6 (the My Number policy, clone detection) made */
#define SCHEMA_6_DROP " DROP TABLE changes; DROP TABLE change_versions;" /* schema 10 */  \
	" DROP TABLE record_signers;" /* schema 9 */                                         \
	" DROP TABLE audit_pending;" /* schema 8 */                                          \
	" ALTER TABLE terminals DROP COLUMN hello_journal;"                                  \
	" ALTER TABLE terminals DROP COLUMN hello_last;" /* schema 7 */                      \
	" DROP TABLE direct_tap_allow; DROP TRIGGER fare_packages_places;"                  \
	" DROP TABLE stop_places; DROP TABLE clone_flags; DROP INDEX records_via;"          \
	" DROP INDEX records_token;"

#define MIN_MS  60000LL
#define HOUR    3600000LL
#define DAY     86400000LL
/* 2026-11-26T12:00+09:00; its service day began at 04:00 JST, its month on Nov 1 04:00 */
#define NOW       1795662000000LL
#define DAY_START 1795633200000LL

/* Migration 9's triggers (the change log), dropped before its tables go back. */
static void drop_change_log(sqlite3 *db)
{
	sqlite3_stmt *st = NULL;
	char sql[200];

	for (;;) {
		assert_int_equal(sqlite3_prepare_v2(db, "SELECT name FROM sqlite_master WHERE"
		                                    " type = 'trigger' AND sql LIKE"
		                                    " '%INSERT INTO changes%' LIMIT 1", -1, &st, NULL),
		                 SQLITE_OK);
		if (sqlite3_step(st) != SQLITE_ROW) {
			sqlite3_finalize(st);
			return;
		}
		snprintf(sql, sizeof(sql), "DROP TRIGGER %s", (const char *)sqlite3_column_text(st, 0));
		sqlite3_finalize(st);
		assert_int_equal(sqlite3_exec(db, sql, NULL, NULL, NULL), SQLITE_OK);
	}
}

static void encode(const struct kp_bundle *b, uint8_t **out, size_t *n);

/* ---- the backend ---- */

struct term {
	const char *id;
	uint8_t prev[KP_SHA256_LEN];
	uint64_t seq;
};

struct fx {
	kp_bstore *s;
	struct term t[3];                    /* T1, T2, T3 */
	char path[700];                      /* the store: a file, or a PostgreSQL schema */
};

static void card(uint8_t token[KP_TOKEN_LEN], int c)
{
	memset(token, c, KP_TOKEN_LEN);
}

static void config(struct kp_bundle *b)
{
	static const char *const ids[] = { "P1D", "R10", "SV" };

	memset(b, 0, sizeof(*b));
	b->operators = calloc(2, sizeof(*b->operators));
	b->products = calloc(3, sizeof(*b->products));
	b->scopes = calloc(2, sizeof(*b->scopes));
	assert_non_null(b->operators);
	assert_non_null(b->products);
	assert_non_null(b->scopes);
	b->n_operators = 2;
	strcpy(b->operators[0].id, "OP-A");
	strcpy(b->operators[1].id, "OP-B");
	b->n_products = 3;
	for (size_t i = 0; i < 3; i++) {
		struct kp_bundle_product *p = &b->products[i];

		strcpy(p->id, ids[i]);
		strcpy(p->name, ids[i]);
		strcpy(p->operators[0], "OP-A");
		strcpy(p->operators[1], "OP-B");
		p->n_operators = 2;
	}
	b->products[0].kind = KP_PRODUCT_PERIOD;
	b->products[0].days = 1;
	b->products[1].kind = KP_PRODUCT_NRIDE;
	b->products[1].rides = 10;
	b->products[2].kind = KP_PRODUCT_STORED;
	b->n_scopes = 2;
	strcpy(b->scopes[0].product, "P1D");
	strcpy(b->scopes[0].scope_id, "R1");
	strcpy(b->scopes[1].product, "P1D");
	b->scopes[1].network = 1;
	strcpy(b->scopes[1].scope_id, "N1");
}

static int fx_setup(void **state)
{
	struct fx *f = calloc(1, sizeof(*f));
	struct kp_bundle cfg;
	uint64_t acked = 0;

	if (f == NULL)
		return -1;
	f->t[0].id = "T1";
	f->t[1].id = "T2";
	f->t[2].id = "T3";
	tu_store_conn(f->path, sizeof(f->path), tu_scratch);
	remove(f->path);
	assert_int_equal(kp_bstore_open(&f->s, f->path), KP_BE_OK);
	config(&cfg);
	assert_int_equal(kp_bstore_put_config(f->s, &cfg), KP_BE_OK);
	kp_bundle_free(&cfg);
	for (int i = 0; i < 3; i++) {
		assert_int_equal(kp_bstore_terminal_add(f->s, f->t[i].id, NULL, NOW - 40 * DAY, NULL),
		                 KP_BE_OK);
		assert_int_equal(kp_bstore_terminal_seen(f->s, f->t[i].id, (const uint8_t *)"x", 1,
		                                         NOW - 40 * DAY, &acked), KP_BE_OK);
	}
	*state = f;
	return 0;
}

static int fx_teardown(void **state)
{
	struct fx *f = *state;

	kp_bstore_close(f->s);
	free(f);
	return 0;
}

struct rec {
	int c;                               /* card: token bytes */
	int64_t at;
	const char *event, *result, *op, *stop, *product;
	int64_t ent, rides, amount;
};

/* One record of terminal i (0: T1), ingested like the server does (signature checked). */
static void put(struct fx *f, int i, const struct rec *x)
{
	struct term *t = &f->t[i];
	struct kp_ingest in;
	struct kp_record r;
	uint8_t *payload = NULL;
	size_t len = 0;
	uint64_t acked = 0, refused = 0;
	char reason[128];

	memset(&r, 0, sizeof(r));
	snprintf(r.terminal, sizeof(r.terminal), "%s", t->id);
	r.seq = ++t->seq;
	r.time_ms = x->at;
	strcpy(r.kind, "tap");
	snprintf(r.operator_id, sizeof(r.operator_id), "%s", x->op ? x->op : "OP-A");
	strcpy(r.route, "R1");
	snprintf(r.stop, sizeof(r.stop), "%s", x->stop ? x->stop : "A1");
	r.has_token = 1;
	card(r.token, x->c);
	snprintf(r.product, sizeof(r.product), "%s", x->product ? x->product : "");
	r.entitlement = x->ent;
	r.rides = x->rides;
	r.amount = x->amount;
	snprintf(r.result, sizeof(r.result), "%s", x->result ? x->result : "accepted");
	snprintf(r.reason, sizeof(r.reason), "%s",
	         strcmp(r.result, "accepted") == 0 ? "ok" : r.result);
	snprintf(r.event, sizeof(r.event), "%s", x->event);
	memcpy(r.prev, t->prev, KP_SHA256_LEN);
	assert_int_equal(kp_record_encode(&r, &payload, &len), KP_RECORD_OK);
	memset(&in, 0, sizeof(in));
	in.payload = in.cose = payload;
	in.payload_len = in.cose_len = len;
	in.sig_ok = 1;
	in.rec = r;
	assert_int_equal(kp_sha256(payload, len, in.hash), 0);
	memcpy(t->prev, in.hash, KP_SHA256_LEN);
	assert_int_equal(kp_bstore_ingest(f->s, t->id, &in, 1, NOW, &acked, &refused, reason,
	                                  sizeof(reason)), KP_BE_OK);
	assert_int_equal(refused, 0);
	free(payload);
}

static void bundle_for(struct fx *f, const char *terminal, struct kp_bundle *b)
{
	int has = 0;

	assert_int_equal(kp_bstore_bundle(f->s, terminal, 0, NOW, b, &has), KP_BE_OK);
	assert_true(has);
}

static const struct kp_bundle_remote *row(const struct kp_bundle *b, int c)
{
	uint8_t token[KP_TOKEN_LEN];

	card(token, c);
	for (size_t i = 0; i < b->n_remote; i++) {
		if (memcmp(b->remote[i].token, token, KP_TOKEN_LEN) == 0)
			return &b->remote[i];
	}
	return NULL;
}

/* The open journey, the paid flag, the last stored-value leg, and the terminal's own
 * records left out. */
static void test_remote_fields(void **state)
{
	struct fx *f = *state;
	const struct kp_bundle_remote *r;
	struct kp_bundle b;
	const int T1 = 0, T2 = 1, T3 = 2;

	/* card 0xA1: a tap at T1 (200 from stored value), then a tap-on at T2 on stored value */
	put(f, T1, &(struct rec){ 0xA1, NOW - 3 * HOUR, "tap", NULL, "OP-A", "A1", "SV", 7, 0, 200 });
	put(f, T2, &(struct rec){ 0xA1, NOW - 2 * HOUR, "tap_on", NULL, "OP-B", "B1", "SV", 7, 0, 0 });
	/* 0xB2: a tap-on that took a ride; 0xC3: one with a period pass */
	put(f, T2, &(struct rec){ 0xB2, NOW - 2 * HOUR, "tap_on", NULL, "OP-B", "B1", "R10", 8, 1, 0 });
	put(f, T2, &(struct rec){ 0xC3, NOW - 2 * HOUR, "tap_on", NULL, "OP-B", "B1", "P1D", 9, 0, 0 });
	/* 0xD4: a flat tap at T3, then tap-on and tap-off at T2: the tap-off is the last leg,
	 * from T2's tap-on */
	put(f, T3, &(struct rec){ 0xD4, NOW - 5 * HOUR, "tap", NULL, "OP-A", "A1", "SV", 7, 0, 150 });
	put(f, T2, &(struct rec){ 0xD4, NOW - 90 * MIN_MS, "tap_on", NULL, "OP-B", "B1", "SV", 7, 0, 0 });
	put(f, T2, &(struct rec){ 0xD4, NOW - 60 * MIN_MS, "tap_off", NULL, "OP-B", "B2", "SV", 7, 0, 330 });
	/* 0xE5: tapped on at T1, off at T2 (no tap-on there: the leg starts at the tap-off) */
	put(f, T1, &(struct rec){ 0xE5, NOW - 2 * HOUR, "tap_on", NULL, "OP-A", "A1", "SV", 7, 0, 0 });
	put(f, T2, &(struct rec){ 0xE5, NOW - 1 * HOUR, "tap_off", NULL, "OP-A", "A2", "SV", 7, 0, 400 });
	/* 0xF6: a tap-on at T2, then an "already" (a double tap) there: still open */
	put(f, T2, &(struct rec){ 0xF6, NOW - 10 * MIN_MS, "tap_on", NULL, "OP-B", "B1", "SV", 7, 0, 0 });
	put(f, T2, &(struct rec){ 0xF6, NOW - 9 * MIN_MS, "tap_on", "already", "OP-B", "B1", NULL, 0, 0, 0 });
	/* 0x17: tapped on at T2, then refused at T3: nothing open there any more */
	put(f, T2, &(struct rec){ 0x17, NOW - 2 * HOUR, "tap_on", NULL, "OP-B", "B1", "SV", 7, 0, 0 });
	put(f, T3, &(struct rec){ 0x17, NOW - 1 * HOUR, "tap", "refused", "OP-A", "A1", NULL, 0, 0, 0 });
	/* 0x29: an operator id no terminal config can have (a terminal would refuse the row,
	 * and the bundle with it): no journey, no leg */
	put(f, T2, &(struct rec){ 0x29, NOW - 1 * HOUR, "tap_on", NULL, "OP/B", "B1", "SV", 7, 0, 0 });
	/* 0x28: records at T1 only */
	put(f, T1, &(struct rec){ 0x28, NOW - 1 * HOUR, "tap", NULL, "OP-A", "A1", "SV", 7, 0, 200 });

	bundle_for(f, "T1", &b);
	r = row(&b, 0xA1);
	assert_non_null(r);
	assert_int_equal(r->last_ms, NOW - 2 * HOUR);
	assert_int_equal(r->open, 1);
	assert_int_equal(r->open_ms, NOW - 2 * HOUR);
	assert_string_equal(r->open_operator, "OP-B");
	assert_string_equal(r->open_route, "R1");
	assert_string_equal(r->open_stop, "B1");
	assert_string_equal(r->open_product, "SV");
	assert_int_equal(r->open_ent, 7);
	assert_int_equal(r->open_paid, 0);
	assert_int_equal(r->has_leg, 0);     /* T1's own tap is not counted here */
	assert_int_equal(r->day_spent, 0);
	assert_int_equal(r->closed_ms, 0);
	assert_int_equal(row(&b, 0xB2)->open_paid, 1);
	assert_int_equal(row(&b, 0xC3)->open_paid, 1);
	r = row(&b, 0xD4);
	assert_int_equal(r->open, 0);
	assert_int_equal(r->last_ms, NOW - 60 * MIN_MS);
	assert_int_equal(r->has_leg, 1);
	assert_string_equal(r->leg_operator, "OP-B");
	assert_int_equal(r->leg_on_ms, NOW - 90 * MIN_MS);
	assert_int_equal(r->leg_off_ms, NOW - 60 * MIN_MS);
	assert_int_equal(r->leg_paid, 330);
	assert_int_equal(r->day_spent, 480);
	assert_int_equal(r->month_spent, 480);
	assert_int_equal(r->day_id, (NOW / 1000 + 9 * 3600 - 4 * 3600) / 86400);
	assert_int_equal(r->month_id, 202611);
	r = row(&b, 0xE5);
	assert_int_equal(r->leg_on_ms, NOW - 1 * HOUR);
	assert_int_equal(r->leg_off_ms, NOW - 1 * HOUR);
	assert_int_equal(r->closed_ms, NOW - 2 * HOUR);     /* T1's journey, closed at T2 */
	r = row(&b, 0xF6);
	assert_int_equal(r->open, 1);
	assert_int_equal(r->last_ms, NOW - 10 * MIN_MS);
	r = row(&b, 0x17);
	assert_int_equal(r->open, 0);
	assert_int_equal(r->last_ms, NOW - 1 * HOUR);
	assert_null(row(&b, 0x28));
	assert_int_equal(row(&b, 0x29)->open, 0);
	assert_int_equal(row(&b, 0x29)->last_ms, NOW - 1 * HOUR);
	assert_int_equal(b.n_remote, 8);
	/* the product scopes came with the configuration */
	assert_int_equal(b.n_scopes, 2);
	assert_string_equal(b.scopes[0].scope_id, "N1");
	assert_int_equal(b.scopes[0].network, 1);
	assert_string_equal(b.scopes[1].scope_id, "R1");
	kp_bundle_free(&b);

	/* for T2: its own records are left out; T1's and T3's count */
	bundle_for(f, "T2", &b);
	r = row(&b, 0xA1);
	assert_non_null(r);
	assert_int_equal(r->last_ms, NOW - 3 * HOUR);
	assert_int_equal(r->open, 0);
	assert_int_equal(r->has_leg, 1);
	assert_string_equal(r->leg_operator, "OP-A");
	assert_int_equal(r->leg_on_ms, NOW - 3 * HOUR);
	assert_int_equal(r->leg_paid, 200);
	assert_int_equal(r->day_spent, 200);
	assert_null(row(&b, 0xB2));
	r = row(&b, 0xD4);
	assert_int_equal(r->day_spent, 150);
	r = row(&b, 0xE5);
	assert_int_equal(r->open, 1);        /* T1's tap-on: T2 closed it, but T2 knows that */
	assert_int_equal(r->closed_ms, 0);
	assert_non_null(row(&b, 0x28));
	kp_bundle_free(&b);
}

/* closed_ms: the receiving terminal's latest accepted tap-on, closed by a later accepted
 * tap-off of its operator or a no_tap_off of that journey elsewhere. */
static void test_remote_closed(void **state)
{
	struct fx *f = *state;
	struct kp_bundle b;
	const int T1 = 0, T2 = 1;

	/* 0x31: closed by a no_tap_off of the same operator and stop */
	put(f, T1, &(struct rec){ 0x31, NOW - 2 * HOUR, "tap_on", NULL, "OP-A", "A1", "SV", 7, 0, 0 });
	put(f, T2, &(struct rec){ 0x31, NOW - 1 * HOUR, "no_tap_off", NULL, "OP-A", "A1", "SV", 7, 0, 500 });
	/* 0x32: a no_tap_off from another stop, a tap-off of another operator, a refused
	 * tap-off: none closes it */
	put(f, T1, &(struct rec){ 0x32, NOW - 2 * HOUR, "tap_on", NULL, "OP-A", "A1", "SV", 7, 0, 0 });
	put(f, T2, &(struct rec){ 0x32, NOW - 100 * MIN_MS, "no_tap_off", NULL, "OP-A", "A9", "SV", 7, 0, 500 });
	put(f, T2, &(struct rec){ 0x32, NOW - 90 * MIN_MS, "tap_off", NULL, "OP-B", "A2", "SV", 7, 0, 300 });
	put(f, T2, &(struct rec){ 0x32, NOW - 80 * MIN_MS, "tap_off", "refused", "OP-A", "A2", NULL, 0, 0, 0 });
	/* 0x33: a tap-off elsewhere before the tap-on does not close it */
	put(f, T2, &(struct rec){ 0x33, NOW - 3 * HOUR, "tap_off", NULL, "OP-A", "A2", "SV", 7, 0, 300 });
	put(f, T1, &(struct rec){ 0x33, NOW - 2 * HOUR, "tap_on", NULL, "OP-A", "A1", "SV", 7, 0, 0 });
	/* 0x34: the first journey was closed at T2, the newer tap-on is still open */
	put(f, T1, &(struct rec){ 0x34, NOW - 3 * HOUR, "tap_on", NULL, "OP-A", "A1", "SV", 7, 0, 0 });
	put(f, T2, &(struct rec){ 0x34, NOW - 150 * MIN_MS, "tap_off", NULL, "OP-A", "A2", "SV", 7, 0, 300 });
	put(f, T1, &(struct rec){ 0x34, NOW - 1 * HOUR, "tap_on", NULL, "OP-A", "A1", "SV", 7, 0, 0 });
	/* 0x35: a refused tap-on at T1 is no journey */
	put(f, T1, &(struct rec){ 0x35, NOW - 2 * HOUR, "tap_on", "refused", "OP-A", "A1", NULL, 0, 0, 0 });
	put(f, T2, &(struct rec){ 0x35, NOW - 1 * HOUR, "tap_off", NULL, "OP-A", "A2", "SV", 7, 0, 300 });

	bundle_for(f, "T1", &b);
	assert_int_equal(row(&b, 0x31)->closed_ms, NOW - 2 * HOUR);
	assert_int_equal(row(&b, 0x32)->closed_ms, 0);
	assert_int_equal(row(&b, 0x33)->closed_ms, 0);
	assert_int_equal(row(&b, 0x34)->closed_ms, 0);
	assert_int_equal(row(&b, 0x35)->closed_ms, 0);
	/* a no_tap_off is spending, never a leg */
	assert_int_equal(row(&b, 0x31)->has_leg, 0);
	assert_int_equal(row(&b, 0x31)->day_spent, 500);
	kp_bundle_free(&b);
	/* and for T2 the journeys are T1's, nothing of T2's is closed */
	bundle_for(f, "T2", &b);
	assert_int_equal(row(&b, 0x31)->closed_ms, 0);
	assert_int_equal(row(&b, 0x31)->open, 1);
	kp_bundle_free(&b);
}

/* Spending: accepted charges of the service day and month of the bundle's making only
 * (service days from 04:00 at +09:00, the backend's default); records older than 32 days
 * are not read at all. */
static void test_remote_spending(void **state)
{
	struct fx *f = *state;
	const struct kp_bundle_remote *r;
	struct kp_bundle b;
	const int T2 = 1;

	put(f, T2, &(struct rec){ 0x41, NOW - 1 * HOUR, "tap", NULL, "OP-A", "A1", "SV", 7, 0, 100 });
	put(f, T2, &(struct rec){ 0x41, NOW - 2 * HOUR, "no_tap_off", NULL, "OP-A", "A1", "SV", 7, 0, 800 });
	put(f, T2, &(struct rec){ 0x41, NOW - 3 * HOUR, "tap", "refused", "OP-A", "A1", "SV", 7, 0, 50 });
	/* 03:30 JST today belongs to yesterday's service day; yesterday is this month */
	put(f, T2, &(struct rec){ 0x41, DAY_START - 30 * MIN_MS, "tap", NULL, "OP-A", "A1", "SV", 7, 0, 16 });
	put(f, T2, &(struct rec){ 0x41, DAY_START - 10 * HOUR, "tap_off", NULL, "OP-A", "A1", "SV", 7, 0, 200 });
	/* Nov 1 03:59 JST is October's last service day; Oct 28 too */
	put(f, T2, &(struct rec){ 0x41, DAY_START - 25 * DAY - MIN_MS, "tap", NULL, "OP-A", "A1", "SV", 7, 0, 4000 });
	put(f, T2, &(struct rec){ 0x41, DAY_START - 29 * DAY, "tap", NULL, "OP-A", "A1", "SV", 7, 0, 400 });
	/* a card whose only record is older than 32 days has no row */
	put(f, T2, &(struct rec){ 0x42, NOW - 33 * DAY, "tap", NULL, "OP-A", "A1", "SV", 7, 0, 1000 });
	/* one ride of an N-ride ticket: no amount, no spending, no stored-value leg */
	put(f, T2, &(struct rec){ 0x43, NOW - 1 * HOUR, "tap", NULL, "OP-A", "A1", "R10", 8, 1, 0 });

	bundle_for(f, "T1", &b);
	r = row(&b, 0x41);
	assert_non_null(r);
	assert_int_equal(r->day_spent, 900);
	assert_int_equal(r->month_spent, 900 + 16 + 200);
	assert_int_equal(r->leg_paid, 100);                   /* the latest leg: the tap at NOW-1h */
	assert_int_equal(r->leg_off_ms, NOW - 1 * HOUR);
	assert_null(row(&b, 0x42));
	r = row(&b, 0x43);
	assert_non_null(r);
	assert_int_equal(r->has_leg, 0);
	assert_int_equal(r->day_spent, 0);
	kp_bundle_free(&b);
}

/* Schema 5 undone: records and link requests as schema 4 keyed them, by (terminal, seq),
 * without journals and certificates. */
#define UNDO_SCHEMA_5                                                                         \
	"UPDATE terminals SET (acked, last_hash) = (SELECT acked, last_hash FROM journals j"   \
	"  WHERE j.terminal = terminals.id AND j.journal = zeroblob(16)) WHERE EXISTS"        \
	"  (SELECT 1 FROM journals j WHERE j.terminal = terminals.id);"                        \
	"DROP TABLE terminal_certs; DROP TABLE journals; DROP TABLE record_aliases;"          \
	"DROP TABLE terminal_registry;"                                                       \
	"CREATE TABLE records4(terminal TEXT NOT NULL REFERENCES terminals(id),"              \
	"  seq INTEGER NOT NULL CHECK (seq > 0), time_ms INTEGER NOT NULL, token BLOB,"        \
	"  operator TEXT NOT NULL, route TEXT, stop TEXT, product TEXT, ent_id INTEGER,"       \
	"  rides INTEGER NOT NULL, amount INTEGER NOT NULL, left_after INTEGER,"               \
	"  result TEXT NOT NULL, reason TEXT NOT NULL,"                                        \
	"  cose BLOB NOT NULL, payload BLOB NOT NULL, hash BLOB NOT NULL,"                     \
	"  received_ms INTEGER NOT NULL, via BLOB, category TEXT,"                             \
	"  kind TEXT NOT NULL DEFAULT 'tap', event TEXT,"                                      \
	"  PRIMARY KEY (terminal, seq)) WITHOUT ROWID;"                                        \
	"INSERT INTO records4 SELECT terminal, seq, time_ms, token, operator, route, stop,"    \
	"  product, ent_id, rides, amount, left_after, result, reason, cose, payload, hash,"   \
	"  received_ms, via, category, kind, event FROM records;"                              \
	"DROP TABLE records; ALTER TABLE records4 RENAME TO records;"                          \
	"CREATE INDEX records_operator ON records(operator);"                                  \
	"CREATE INDEX records_recent ON records(time_ms) WHERE token IS NOT NULL;"             \
	"CREATE TABLE link_requests4(id INTEGER PRIMARY KEY, terminal TEXT NOT NULL,"         \
	"  seq INTEGER NOT NULL, linkage BLOB, card BLOB,"                                     \
	"  result TEXT NOT NULL CHECK (result IN ('accepted', 'refused')),"                    \
	"  reason TEXT NOT NULL, at INTEGER NOT NULL, UNIQUE (terminal, seq));"                \
	"INSERT INTO link_requests4 SELECT id, terminal, seq, linkage, card, result, reason,"  \
	"  at FROM link_requests;"                                                             \
	"DROP TABLE link_requests; ALTER TABLE link_requests4 RENAME TO link_requests;"

/* Migrating a store (schema 3 to 4, then 5) writes no stored row: records from before the
 * event column read as "tap" and stay byte for byte what they were, and immutable; schema
 * 5 puts them, byte for byte, in the legacy journal, epoch 1. */
static void test_event_migration(void **state)
{
	struct fx *f = *state;
	struct kp_bundle b;
	sqlite3 *db = NULL;
	sqlite3_stmt *st = NULL;
	char *sum_before = NULL;

	put(f, 1, &(struct rec){ 0x51, NOW - 1 * HOUR, "tap_on", NULL, "OP-B", "B1", "SV", 7, 0, 0 });
	kp_bstore_close(f->s);
	f->s = NULL;
	/* back to what a schema 3 store held */
	assert_int_equal(sqlite3_open(f->path, &db), SQLITE_OK);
	drop_change_log(db);
	assert_int_equal(sqlite3_exec(db, SCHEMA_6_DROP, NULL, NULL, NULL), SQLITE_OK);
	assert_int_equal(sqlite3_exec(db, UNDO_SCHEMA_5, NULL, NULL, NULL), SQLITE_OK);
	assert_int_equal(sqlite3_exec(db, "DROP INDEX records_recent; DROP TABLE product_scope;"
	                              " ALTER TABLE records DROP COLUMN event;"
	                              " PRAGMA user_version = 3;", NULL, NULL, NULL), SQLITE_OK);
	assert_int_equal(sqlite3_prepare_v2(db, "SELECT group_concat(hex(cose) || hex(payload)"
	                                    " || hex(hash) || time_ms, ',') FROM records", -1, &st,
	                                    NULL), SQLITE_OK);
	assert_int_equal(sqlite3_step(st), SQLITE_ROW);
	sum_before = strdup((const char *)sqlite3_column_text(st, 0));
	sqlite3_finalize(st);
	sqlite3_close(db);
	assert_int_equal(kp_bstore_open(&f->s, f->path), KP_BE_OK);
	bundle_for(f, "T1", &b);
	assert_non_null(row(&b, 0x51));
	assert_int_equal(row(&b, 0x51)->open, 0);
	kp_bundle_free(&b);
	assert_int_equal(sqlite3_open(f->path, &db), SQLITE_OK);
	assert_int_equal(sqlite3_prepare_v2(db, "SELECT group_concat(hex(cose) || hex(payload)"
	                                    " || hex(hash) || time_ms, ','), max(event),"
	                                    " (SELECT count(*) FROM sqlite_master WHERE name ="
	                                    " 'records_immutable') FROM records", -1, &st, NULL),
	                 SQLITE_OK);
	assert_int_equal(sqlite3_step(st), SQLITE_ROW);
	assert_string_equal((const char *)sqlite3_column_text(st, 0), sum_before);
	assert_int_equal(sqlite3_column_type(st, 1), SQLITE_NULL);
	assert_int_equal(sqlite3_column_int(st, 2), 1);
	sqlite3_finalize(st);
	/* records stay immutable, and cannot be deleted */
	assert_int_not_equal(sqlite3_exec(db, "UPDATE records SET event = 'tap'", NULL, NULL,
	                                  NULL), SQLITE_OK);
	assert_int_not_equal(sqlite3_exec(db, "DELETE FROM records", NULL, NULL, NULL), SQLITE_OK);
	/* the legacy journal, epoch 1, holds them (T2's one record); each names the terminal's
	 * certificate */
	assert_int_equal(sqlite3_prepare_v2(db, "SELECT (SELECT count(*) FROM records WHERE"
	                                    " journal = zeroblob(16) AND cert_id IS NOT NULL),"
	                                    " (SELECT count(*) FROM records), (SELECT"
	                                    " group_concat(epoch || ':' || acked) FROM journals"
	                                    " WHERE terminal = 'T2')", -1, &st, NULL), SQLITE_OK);
	assert_int_equal(sqlite3_step(st), SQLITE_ROW);
	assert_int_equal(sqlite3_column_int(st, 0), sqlite3_column_int(st, 1));
	assert_true(sqlite3_column_int(st, 1) > 0);
	assert_string_equal((const char *)sqlite3_column_text(st, 2), "1:1");
	sqlite3_finalize(st);
	/* schema 9: each certificate's fingerprint, the SHA-256 of its DER (here "x", which
	 * is no certificate: no validity, so it verifies nothing) */
	assert_int_equal(sqlite3_prepare_v2(db, "SELECT count(*), sum(fingerprint = '2d711642b7"
	                                    "26b04401627ca9fbac32f5c8530fb1903cc4db02258717921a48"
	                                    "81' AND not_before IS NULL) FROM terminal_certs", -1,
	                                    &st, NULL), SQLITE_OK);
	assert_int_equal(sqlite3_step(st), SQLITE_ROW);
	assert_true(sqlite3_column_int(st, 0) > 0);
	assert_int_equal(sqlite3_column_int(st, 1), sqlite3_column_int(st, 0));
	sqlite3_finalize(st);
	sqlite3_close(db);
	free(sum_before);
}

/* kippuctl backend load's path: product scopes of the configuration's products replace
 * what the backend had for them; a scope of another product is refused. */
static void test_backend_scopes(void **state)
{
	struct fx *f = *state;
	struct kp_bundle cfg, b;

	config(&cfg);
	cfg.n_scopes = 1;
	strcpy(cfg.scopes[0].scope_id, "R7");
	assert_int_equal(kp_bstore_put_config(f->s, &cfg), KP_BE_OK);
	bundle_for(f, "T1", &b);
	assert_int_equal(b.n_scopes, 1);
	assert_string_equal(b.scopes[0].scope_id, "R7");
	kp_bundle_free(&b);
	strcpy(cfg.scopes[0].product, "NOPE");
	assert_int_equal(kp_bstore_put_config(f->s, &cfg), KP_BE_E_INVAL);
	kp_bundle_free(&cfg);
}

/* A backend that sells N-ride tickets only (no fare configuration) sends no remote rows:
 * its bundles stay format 1, byte for byte, for terminals that read only that. */
static void test_nride_only_stays_format1(void **state)
{
	struct fx f;
	struct kp_bundle b;
	const char *ops[] = { "OP-A" };
	uint8_t *out = NULL;
	size_t n = 0;
	uint64_t acked = 0;
	int has = 0;

	(void)state;
	memset(&f, 0, sizeof(f));
	f.t[0].id = "T1";
	f.t[1].id = "T2";
	tu_store_conn(f.path, sizeof(f.path), tu_scratch);
	remove(f.path);
	assert_int_equal(kp_bstore_open(&f.s, f.path), KP_BE_OK);
	assert_int_equal(kp_bstore_put_operator(f.s, "OP-A", "Bus"), KP_BE_OK);
	assert_int_equal(kp_bstore_put_product(f.s, "R10", "10 rides", 10, ops, 1), KP_BE_OK);
	for (int i = 0; i < 2; i++) {
		assert_int_equal(kp_bstore_terminal_add(f.s, f.t[i].id, NULL, NOW, NULL), KP_BE_OK);
		assert_int_equal(kp_bstore_terminal_seen(f.s, f.t[i].id, (const uint8_t *)"x", 1,
		                                         NOW, &acked), KP_BE_OK);
	}
	put(&f, 1, &(struct rec){ 0x61, NOW - HOUR, "tap", NULL, "OP-A", "A1", "R10", 8, 1, 0 });
	assert_int_equal(kp_bstore_bundle(f.s, "T1", 0, NOW, &b, &has), KP_BE_OK);
	assert_true(has);
	assert_int_equal(b.n_remote, 0);
	encode(&b, &out, &n);
	assert_int_equal(out[3], 1);
	free(out);
	kp_bundle_free(&b);
	kp_bstore_close(f.s);
}

/* ---- bundle format 3 ---- */

static struct kp_bundle sample(uint64_t version)
{
	struct kp_bundle b;
	struct kp_bundle_remote *r;

	config(&b);
	b.version = version;
	b.issued_ms = NOW;
	strcpy(b.terminal, "T1");
	b.acked = 3;
	b.remote = calloc(2, sizeof(*b.remote));
	assert_non_null(b.remote);
	b.n_remote = 2;
	/* given out of order: the encoder sorts */
	r = &b.remote[0];
	card(r->token, 0x02);
	r->last_ms = NOW - 2 * HOUR;
	r->open = 1;
	r->open_ms = NOW - 2 * HOUR;
	strcpy(r->open_operator, "OP-B");
	strcpy(r->open_route, "R1");
	strcpy(r->open_stop, "B1");
	r->open_paid = 1;
	strcpy(r->open_product, "R10");
	r->open_ent = 8;
	r->closed_ms = 23;
	r->has_leg = 1;
	strcpy(r->leg_operator, "OP-A");
	r->leg_on_ms = 5000;
	r->leg_off_ms = 6000;
	r->leg_paid = 330;
	r->day_id = 20418;
	r->day_spent = 20;
	r->month_id = 202611;
	r->month_spent = 480;
	r = &b.remote[1];
	card(r->token, 0x01);
	r->last_ms = 1;
	return b;
}

static void encode(const struct kp_bundle *b, uint8_t **out, size_t *n)
{
	assert_int_equal(kp_bundle_encode(b, out, n), KP_SYNC_OK);
}

static size_t find(const uint8_t *buf, size_t n, const char *hex)
{
	uint8_t pat[64];
	size_t m = tu_hex(hex, pat, sizeof(pat));

	for (size_t i = 0; i + m <= n; i++) {
		if (memcmp(buf + i, pat, m) == 0)
			return i;
	}
	fail_msg("pattern %s not found", hex);
	return 0;
}

static void test_format3_roundtrip(void **state)
{
	struct kp_bundle b = sample(1), d, plain;
	uint8_t *out = NULL, *re = NULL;
	size_t n = 0, rn = 0;

	(void)state;
	encode(&b, &out, &n);
	assert_int_equal(out[1], 0x61);
	assert_int_equal(out[2], 'v');
	assert_int_equal(out[3], 3);
	assert_int_equal(kp_bundle_decode(out, n, &d), KP_SYNC_OK);
	assert_int_equal(d.format, 3);
	assert_int_equal(d.n_remote, 2);
	assert_memory_equal(d.remote[1].token, b.remote[0].token, KP_TOKEN_LEN);
	assert_memory_equal(&d.remote[1], &b.remote[0], sizeof(b.remote[0]));
	assert_int_equal(d.remote[0].last_ms, 1);
	assert_int_equal(d.remote[0].open, 0);
	assert_int_equal(d.remote[0].has_leg, 0);
	assert_int_equal(d.n_scopes, 2);
	assert_string_equal(d.scopes[0].scope_id, "N1");     /* "network" sorts first */
	encode(&d, &re, &rn);
	assert_int_equal(rn, n);
	assert_memory_equal(re, out, n);
	free(re);
	kp_bundle_free(&d);

	/* without remote rows and scopes it is format 2 as before, byte for byte */
	plain = b;
	plain.n_remote = 0;
	plain.n_scopes = 0;
	encode(&plain, &re, &rn);
	assert_int_equal(re[3], 2);
	assert_int_equal(kp_bundle_decode(re, rn, &d), KP_SYNC_OK);
	assert_int_equal(d.format, 2);
	assert_int_equal(d.n_remote, 0);
	kp_bundle_free(&d);
	free(re);
	/* asked for: format 3 with neither */
	plain.format = 3;
	encode(&plain, &re, &rn);
	assert_int_equal(re[3], 3);
	free(re);

	/* the encoder refuses what the decoder would */
	b.remote[1].last_ms = -1;
	assert_int_equal(kp_bundle_encode(&b, &re, &rn), KP_SYNC_E_INVAL);
	b.remote[1].last_ms = 1;
	memcpy(b.remote[1].token, b.remote[0].token, KP_TOKEN_LEN);        /* a card twice */
	assert_int_equal(kp_bundle_encode(&b, &re, &rn), KP_SYNC_E_INVAL);
	card(b.remote[1].token, 0x01);
	b.remote[0].leg_on_ms = 7000;                                      /* on after off */
	assert_int_equal(kp_bundle_encode(&b, &re, &rn), KP_SYNC_E_INVAL);
	b.remote[0].leg_on_ms = 5000;
	b.remote[0].open_operator[0] = '\0';
	assert_int_equal(kp_bundle_encode(&b, &re, &rn), KP_SYNC_E_INVAL);
	strcpy(b.remote[0].open_operator, "OP-B");
	strcpy(b.scopes[0].product, "NOPE");                               /* unknown product */
	assert_int_equal(kp_bundle_encode(&b, &re, &rn), KP_SYNC_E_INVAL);
	strcpy(b.scopes[0].product, "P1D");
	b.n_remote = KP_BUNDLE_REMOTE_MAX + 1;
	assert_int_equal(kp_bundle_encode(&b, &re, &rn), KP_SYNC_E_TOOBIG);
	b.n_remote = 2;
	free(out);
	kp_bundle_free(&b);
}

struct patch {
	const char *find;                    /* hex of the bytes to change */
	size_t at;                           /* offset of the byte to change from there */
	uint8_t to;
	const char *what;
};

static void test_format3_malformed_refused(void **state)
{
	static const struct patch patches[] = {
		{ "617603", 2, 0x02, "remote and scopes in a format 2 bundle" },
		{ "617603", 2, 0x05, "format 5" },
		{ "626F6E191388", 4, 0x20, "leg: on after off" },
		{ "647061696401", 5, 0x02, "paid: 2" },
		{ "66636C6F73656417", 7, 0x00, "closed: 0" },
		{ "636461798219", 8, 0x00, "day: spent 0" },
		{ "1A00031773", 4, 0x75, "month 202613" },
		{ "1A00031773", 1, 0x01, "month beyond 999912" },
		{ "646B696E6465726F757465", 10, 'f', "scope kind 'routf'" },
		{ "6770726F6475637463503144", 11, 'E', "scope of an unknown product" },
		{ "646C617374", 4, 's', "unknown row key 'lass'" },
		{ "656D6F6E7468", 5, 'i', "unknown row key 'monti'" },
		{ "65746F6B656E5001010101", 7, 0x03, "rows out of order" },
		{ "6672656D6F746582", 7, 0x83, "more rows claimed than given" },
		{ "6672656D6F746582", 7, 0x80, "no rows: written as no key, never []" },
		{ "656D6F6E7468821A", 0, 0x66, "a row key of the wrong length" },
	};
	struct kp_bundle b = sample(1), d;
	uint8_t *out = NULL, *copy;
	size_t n = 0;

	(void)state;
	encode(&b, &out, &n);
	copy = malloc(n);
	assert_non_null(copy);
	for (size_t i = 0; i < sizeof(patches) / sizeof(patches[0]); i++) {
		const struct patch *p = &patches[i];
		size_t at;

		memcpy(copy, out, n);
		at = find(copy, n, p->find) + p->at;
		copy[at] = p->to;
		if (kp_bundle_decode(copy, n, &d) == KP_SYNC_OK)
			fail_msg("decoded: %s", p->what);
	}
	/* every truncation is refused; any bit flip is refused or re-encodes to itself */
	for (size_t len = 0; len < n; len++)
		assert_int_not_equal(kp_bundle_decode(out, len, &d), KP_SYNC_OK);
	tu_bundle_fuzz(out, n, 7, 20000, 1);
	free(copy);
	free(out);
	kp_bundle_free(&b);
}

/* ---- the terminal ---- */

static int apply(kp_store *s, const struct kp_bundle *b)
{
	struct kp_sync_source src;

	kp_store_sync_source(s, &src);
	return src.apply_bundle(src.ctx, b);
}

static int64_t rows_of(const char *path, const char *table)
{
	char sql[128];

	snprintf(sql, sizeof(sql), "SELECT count(*) FROM %s", table);
	return tu_db_value(path, sql);
}

static void test_terminal_apply(void **state)
{
	struct kp_bundle b = sample(1), bad = sample(2), plain = sample(3);
	struct kp_fare_remote r;
	kp_store *s = NULL;
	char path[512];
	uint8_t token[KP_TOKEN_LEN];
	uint64_t acked = 0, version = 0;
	int found = 0;

	(void)state;
	snprintf(path, sizeof(path), "%s/terminal.db", tu_scratch);
	remove(path);
	assert_int_equal(kp_store_open(&s, path), KP_OK);
	assert_int_equal(apply(s, &b), KP_OK);
	assert_int_equal(rows_of(path, "fare_remote"), 2);
	assert_int_equal(rows_of(path, "product_scope"), 2);
	card(token, 0x02);
	assert_int_equal(kp_store_fare_remote(s, token, &r, &found), KP_OK);
	assert_true(found);
	tu_expect_row("last_ms open open_ms open_paid open_ent closed_ms has_leg leg_on_ms "
	              "leg_off_ms leg_paid day_id day_spent month_id month_spent",
	              TU_INTS(r.last_ms, r.open, r.open_ms, r.open_paid, r.open_ent, r.closed_ms,
	                      r.has_leg, r.leg_on_ms, r.leg_off_ms, r.leg_paid, r.day_id,
	                      r.day_spent, r.month_id, r.month_spent),
	              TU_INTS(NOW - 2 * HOUR, 1, NOW - 2 * HOUR, 1, 8, 23, 1, 5000, 6000, 330,
	                      20418, 20, 202611, 480));
	tu_expect_strs("open_operator open_route open_stop open_product leg_operator",
	               TU_STRS(r.open_operator, r.open_route, r.open_stop, r.open_product,
	                       r.leg_operator),
	               TU_STRS("OP-B", "R1", "B1", "R10", "OP-A"));
	card(token, 0x01);
	assert_int_equal(kp_store_fare_remote(s, token, &r, &found), KP_OK);
	assert_true(found);
	assert_int_equal(r.open, 0);
	assert_int_equal(r.has_leg, 0);

	/* a row the terminal cannot take: the whole bundle is refused, nothing changes */
	bad.remote[1].has_leg = 1;                   /* a leg without an operator */
	assert_int_not_equal(apply(s, &bad), KP_OK);
	assert_int_equal(rows_of(path, "fare_remote"), 2);
	assert_int_equal(rows_of(path, "product_scope"), 2);
	assert_int_equal(kp_store_sync_state(s, &acked, &version, NULL), KP_OK);
	assert_int_equal(version, 1);

	/* a bundle without them (format 2) leaves no stale state */
	plain.n_remote = 0;
	plain.n_scopes = 0;
	assert_int_equal(apply(s, &plain), KP_OK);
	assert_int_equal(rows_of(path, "fare_remote"), 0);
	assert_int_equal(rows_of(path, "product_scope"), 0);
	plain.n_remote = 2;
	plain.n_scopes = 2;
	kp_store_close(s);
	kp_bundle_free(&b);
	kp_bundle_free(&bad);
	kp_bundle_free(&plain);
}

/* ---- how long a bundle takes with 100,000 recent records ---- */

static double ms_since(const struct timespec *t0)
{
	struct timespec t1;

	clock_gettime(CLOCK_MONOTONIC, &t1);
	return (double)(t1.tv_sec - t0->tv_sec) * 1e3 + (double)(t1.tv_nsec - t0->tv_nsec) / 1e6;
}

/* 10,000 cards, 10 records each over the last 30 days at 20 terminals (tap-ons, tap-offs
 * charged to stored value), and as many records older than the window; inserted directly
 * (the ingest path is measured by kippu-bench-sync). */
static void test_bundle_time_100k(void **state)
{
	static const char *const events[] = { "tap_on", "tap_off" };
	struct fx *f = *state;
	struct kp_bundle b;
	struct timespec t0;
	sqlite3 *db = NULL;
	sqlite3_stmt *st = NULL;
	uint8_t *payload = NULL;
	size_t len = 0;
	uint64_t seq[20] = { 0 };
	uint32_t seed = 1;
	double build_ms, encode_ms, migrate_ms;
	int has = 0;
	struct kp_record sample_rec;
	uint8_t *sample_payload = NULL;
	size_t sample_len = 0;

	/* every row carries a real record's payload, for the migration's decoding below */
	memset(&sample_rec, 0, sizeof(sample_rec));
	strcpy(sample_rec.terminal, "TX00");
	sample_rec.seq = 1;
	sample_rec.time_ms = NOW;
	strcpy(sample_rec.kind, "tap");
	sample_rec.has_token = 1;
	strcpy(sample_rec.operator_id, "OP-A");
	strcpy(sample_rec.route, "R1");
	strcpy(sample_rec.stop, "S1");
	strcpy(sample_rec.product, "SV");
	sample_rec.entitlement = 7;
	sample_rec.amount = 230;
	strcpy(sample_rec.result, "accepted");
	strcpy(sample_rec.reason, "ok");
	strcpy(sample_rec.event, "tap_off");
	strcpy(sample_rec.fare, "stored; fare_rules.txt:2 (230)");
	assert_int_equal(kp_record_encode(&sample_rec, &sample_payload, &sample_len), KP_RECORD_OK);

	/* an encoded bundle's payload size is what matters for the frame: measured below */
	assert_int_equal(sqlite3_open(f->path, &db), SQLITE_OK);
	assert_int_equal(sqlite3_exec(db, "BEGIN", NULL, NULL, NULL), SQLITE_OK);
	for (int t = 0; t < 20; t++) {
		char sql[200];

		snprintf(sql, sizeof(sql), "INSERT OR IGNORE INTO terminals(id, first_seen, last_seen)"
		         " VALUES ('TX%02d', 0, 0)", t);
		assert_int_equal(sqlite3_exec(db, sql, NULL, NULL, NULL), SQLITE_OK);
	}
	assert_int_equal(sqlite3_prepare_v2(db, "INSERT INTO records(terminal, seq, time_ms, token,"
	                                    " operator, route, stop, product, ent_id, rides, amount,"
	                                    " result, reason, cose, payload, hash, received_ms, kind,"
	                                    " event, journal) VALUES (?1, ?2, ?3, ?4, 'OP-A', 'R1',"
	                                    " ?5, 'SV', 7, 0, ?6, 'accepted', 'ok', x'00', ?8, x'00',"
	                                    " 0, 'tap', ?7, zeroblob(16))", -1, &st, NULL), SQLITE_OK);
	for (int old = 0; old < 2; old++) {
		for (int c = 0; c < 10000; c++) {
			uint8_t token[KP_TOKEN_LEN];

			memset(token, 0, sizeof(token));
			token[0] = (uint8_t)(c >> 8);
			token[1] = (uint8_t)c;
			token[2] = 0xEE;
			for (int k = 0; k < 10; k++) {
				char term[8], stop[8];
				int t;

				seed = seed * 1103515245u + 12345u;
				t = (int)((seed >> 16) % 20);
				snprintf(term, sizeof(term), "TX%02d", t);
				snprintf(stop, sizeof(stop), "S%u", (seed >> 8) % 50);
				sqlite3_reset(st);
				sqlite3_bind_text(st, 1, term, -1, SQLITE_TRANSIENT);
				sqlite3_bind_int64(st, 2, (int64_t)++seq[t]);
				sqlite3_bind_int64(st, 3, NOW - (old ? 40 * DAY : 0) -
				                   (int64_t)((seed >> 4) % (30 * 86400)) * 1000);
				sqlite3_bind_blob(st, 4, token, KP_TOKEN_LEN, SQLITE_TRANSIENT);
				sqlite3_bind_text(st, 5, stop, -1, SQLITE_TRANSIENT);
				sqlite3_bind_int64(st, 6, k % 2 ? 230 : 0);
				sqlite3_bind_text(st, 7, events[k % 2], -1, SQLITE_STATIC);
				sqlite3_bind_blob(st, 8, sample_payload, (int)sample_len, SQLITE_STATIC);
				assert_int_equal(sqlite3_step(st), SQLITE_DONE);
			}
		}
	}
	sqlite3_finalize(st);
	assert_int_equal(sqlite3_exec(db, "COMMIT; ANALYZE", NULL, NULL, NULL), SQLITE_OK);
	sqlite3_close(db);

	clock_gettime(CLOCK_MONOTONIC, &t0);
	assert_int_equal(kp_bstore_bundle(f->s, "TX00", 0, NOW, &b, &has), KP_BE_OK);
	build_ms = ms_since(&t0);
	assert_true(has);
	assert_int_equal(b.n_remote, 10000);
	clock_gettime(CLOCK_MONOTONIC, &t0);
	assert_int_equal(kp_bundle_encode(&b, &payload, &len), KP_SYNC_OK);
	encode_ms = ms_since(&t0);
	printf("bundle for one of 20 terminals, 100,000 records in the last 32 days (and 100,000 "
	       "older): built in %.0f ms, %zu remote rows, encoded in %.1f ms, %zu bytes "
	       "(%.1f%% of the 16 MiB frame)\n", build_ms, b.n_remote, encode_ms, len,
	       100.0 * (double)len / KP_SYNC_FRAME_MAX);
	assert_true(len < KP_SYNC_FRAME_MAX);
	free(payload);
	kp_bundle_free(&b);

	/* the same 200,000 records in a schema 3 store: migration 4 adds a column and an index */
	kp_bstore_close(f->s);
	f->s = NULL;
	assert_int_equal(sqlite3_open(f->path, &db), SQLITE_OK);
	drop_change_log(db);
	assert_int_equal(sqlite3_exec(db, SCHEMA_6_DROP, NULL, NULL, NULL), SQLITE_OK);
	assert_int_equal(sqlite3_exec(db, UNDO_SCHEMA_5, NULL, NULL, NULL), SQLITE_OK);
	assert_int_equal(sqlite3_exec(db, "DROP INDEX records_recent; DROP TABLE product_scope;"
	                              " ALTER TABLE records DROP COLUMN event;"
	                              " PRAGMA user_version = 3;", NULL, NULL, NULL), SQLITE_OK);
	sqlite3_close(db);
	clock_gettime(CLOCK_MONOTONIC, &t0);
	assert_int_equal(kp_bstore_open(&f->s, f->path), KP_BE_OK);
	migrate_ms = ms_since(&t0);
	printf("migration to schemas 4 and 5 (200,000 records: event column, time index; "
	       "journals, records rebuilt): %.0f ms\n",
	       migrate_ms);
	free(sample_payload);
}

/* The tests below run between fx_setup and fx_teardown unless their row names others. */
#define FX_TEST(test) cmocka_unit_test_setup_teardown(test, fx_setup, fx_teardown)

/* ---- the cards' fare state by delta (PROTOCOL.md section 5.4) ---- */

/* Every row of the terminal's fare_remote and entitlements, as one text. */
static char *remote_text(const char *path)
{
	sqlite3 *db = NULL;
	sqlite3_stmt *st = NULL;
	char *out = NULL;

	assert_int_equal(sqlite3_open_v2(path, &db, SQLITE_OPEN_READONLY, NULL), SQLITE_OK);
	assert_int_equal(sqlite3_prepare_v2(db, "SELECT group_concat(x, ';') FROM (SELECT"
	                                    " quote(token) || quote(last_ms) || quote(open_ms) ||"
	                                    " quote(open_operator) || quote(open_stop) ||"
	                                    " quote(closed_ms) || quote(leg_operator) ||"
	                                    " quote(leg_on_ms) || quote(leg_off_ms) AS x"
	                                    " FROM fare_remote UNION ALL SELECT quote(token) ||"
	                                    " id || product_id || rides_left FROM entitlements"
	                                    " ORDER BY x)", -1, &st, NULL),
	                 SQLITE_OK);
	assert_int_equal(sqlite3_step(st), SQLITE_ROW);
	out = strdup(sqlite3_column_text(st, 0) ? (const char *)sqlite3_column_text(st, 0) : "");
	sqlite3_finalize(st);
	sqlite3_close(db);
	return out;
}

/* T1 by delta (encoded, decoded, applied) or, when the backend says so, by full bundle. */
static int sync_t1(struct fx *f, kp_store *s, int by_delta)
{
	struct kp_sync_source src;
	struct kp_bsession ses;
	struct kp_delta d, got;
	struct kp_bundle b;
	uint8_t *enc = NULL;
	size_t n = 0;
	uint64_t have = 0;
	int kind = KP_BSTORE_DELTA_FULL, has = 0;

	kp_store_sync_source(s, &src);
	assert_int_equal(src.config_version(src.ctx, &have), KP_OK);
	memset(&ses, 0, sizeof(ses));
	snprintf(ses.terminal, sizeof(ses.terminal), "T1");
	if (by_delta)
		assert_int_equal(kp_bstore_delta_session(f->s, &ses, have, NOW, &d, &kind), KP_BE_OK);
	if (kind == KP_BSTORE_DELTA_DELTA) {
		assert_int_equal(kp_delta_encode(&d, &enc, &n), KP_SYNC_OK);
		assert_int_equal(kp_delta_decode(enc, n, &got, NULL, 0), KP_SYNC_OK);
		assert_int_equal(src.apply_delta(src.ctx, &got), KP_OK);
		kp_delta_free(&got);
		kp_delta_free(&d);
		free(enc);
		return kind;
	}
	assert_int_equal(kp_bstore_bundle(f->s, "T1", have, NOW, &b, &has), KP_BE_OK);
	if (has)
		assert_int_equal(apply(s, &b), KP_OK);
	kp_bundle_free(&b);
	return kind;
}

/* td by delta, tf by full bundle: the same rows. */
static void both_sync(struct fx *f, kp_store *td, kp_store *tf, const char *pd, const char *pf)
{
	char *a, *b;

	assert_int_equal(sync_t1(f, td, 1), KP_BSTORE_DELTA_DELTA);
	assert_int_equal(sync_t1(f, tf, 0), KP_BSTORE_DELTA_FULL);
	a = remote_text(pd);
	b = remote_text(pf);
	assert_string_equal(a, b);
	free(a);
	free(b);
}

static void test_remote_by_delta(void **state)
{
	struct fx *f = *state;
	kp_store *td = NULL, *tf = NULL;
	char pd[512], pf[512];
	uint8_t tok[KP_TOKEN_LEN];
	int64_t ent = 0;

	snprintf(pd, sizeof(pd), "%s/td.db", tu_scratch);
	snprintf(pf, sizeof(pf), "%s/tf.db", tu_scratch);
	remove(pd);
	remove(pf);
	assert_int_equal(kp_store_open(&td, pd), KP_OK);
	assert_int_equal(kp_store_open(&tf, pf), KP_OK);
	card(tok, 0x54);
	assert_int_equal(kp_bstore_register_card(f->s, tok, "c", NOW - DAY), KP_BE_OK);
	assert_int_equal(kp_bstore_sell(f->s, tok, "R10", NOW - DAY, NOW + DAY, NOW - DAY, &ent),
	                 KP_BE_OK);
	assert_int_equal(sync_t1(f, td, 1), KP_BSTORE_DELTA_FULL);
	/* a ride taken at T3 on card 0x54's ten-ride ticket */
	put(f, 2, &(struct rec){ 0x54, NOW - 3 * HOUR, "tap", NULL, "OP-A", "A1", "R10", ent, 1, 0 });
	/* cards seen at T2 and T3, and T1's own tap-on closed at T2 */
	put(f, 1, &(struct rec){ 0x51, NOW - 1 * HOUR, "tap_on", NULL, "OP-B", "B1", "R10", 0, 0, 0 });
	put(f, 2, &(struct rec){ 0x52, NOW - 2 * HOUR, "tap", NULL, "OP-A", "A1", "SV", 0, 0, 210 });
	put(f, 0, &(struct rec){ 0x53, NOW - 50 * MIN_MS, "tap_on", NULL, "OP-A", "A1", "R10", 0, 0, 0 });
	put(f, 1, &(struct rec){ 0x53, NOW - 20 * MIN_MS, "tap_off", NULL, "OP-A", "A2", "R10", 0, 0, 0 });
	both_sync(f, td, tf, pd, pf);
	assert_int_equal(rows_of(pd, "fare_remote"), 4);
	assert_int_equal(tu_db_value(pd, "SELECT rides_left FROM entitlements"), 9);
	/* a later record moves one card's row; the delta carries that card alone */
	put(f, 2, &(struct rec){ 0x51, NOW - 10 * MIN_MS, "tap_off", NULL, "OP-B", "B2", "R10", 0, 0, 0 });
	both_sync(f, td, tf, pd, pf);
	kp_store_close(td);
	kp_store_close(tf);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		FX_TEST(test_remote_fields),
		FX_TEST(test_remote_closed),
		FX_TEST(test_remote_spending),
		FX_TEST(test_event_migration),
		FX_TEST(test_backend_scopes),
		cmocka_unit_test(test_nride_only_stays_format1),
		cmocka_unit_test(test_format3_roundtrip),
		cmocka_unit_test(test_format3_malformed_refused),
		cmocka_unit_test(test_terminal_apply),
		FX_TEST(test_remote_by_delta),
		FX_TEST(test_bundle_time_100k),
	};

	/* the store's own behaviour on PostgreSQL (KIPPU_TEST_PG, tests/backend/test_store_pg.sh);
	 * the SQLite-only ones (older schemas' migrations, the 100k bundle's time) stay there */
	const struct CMUnitTest on_pg[] = {
		FX_TEST(test_remote_fields),
		FX_TEST(test_remote_closed),
		FX_TEST(test_remote_spending),
		FX_TEST(test_backend_scopes),
		cmocka_unit_test(test_nride_only_stays_format1),
		FX_TEST(test_remote_by_delta),
	};
	const char *pg = getenv("KIPPU_TEST_PG");

	if (pg != NULL && pg[0] != '\0')
		return cmocka_run_group_tests_name("fare_remote_pg", on_pg, tu_scratch_setup,
		                                   tu_scratch_teardown);
	return cmocka_run_group_tests_name("fare_remote", tests, tu_scratch_setup,
	                                   tu_scratch_teardown);
}
