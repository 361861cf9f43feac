/* SPDX-License-Identifier: Apache-2.0 */
/* The store and the tap decision: migrations, every refusal reason, the double-tap
 * window, the best entitlement, atomicity, and a journal that verifies and shows tampering. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <cmocka.h>
#include <sqlite3.h>

#include "fixtures.h"
#include "kp_terminal.h"
#include "testutil.h"

#define T0 1795000000000LL            /* 2026-11-18, a fixed "now" for the tests */
#define DAY (86400LL * 1000)

/* The fixture's certificate and terminal id, kept in the store like the terminal does. */
static kp_cert *make_cert(struct tu_term *f)
{
	kp_cert *cert = tu_term_cert(f, "T-1");

	assert_int_equal(kp_store_meta_set(f->s, "terminal_id", "T-1"), KP_OK);
	return cert;
}

static int setup(void **state)
{
	struct tu_term *f = tu_term_new("T-1", "OP-A", 0x5A);
	const char *ab[] = { "OP-A", "OP-B" }, *c[] = { "OP-C" };

	snprintf(f->cfg.route, sizeof(f->cfg.route), "R1");
	f->cfg.double_tap_window_ms = 60000;
	assert_int_equal(kp_store_begin(f->s), KP_OK);
	assert_int_equal(kp_store_put_operator(f->s, "OP-A", "Operator A"), KP_OK);
	assert_int_equal(kp_store_put_operator(f->s, "OP-B", "Operator B"), KP_OK);
	assert_int_equal(kp_store_put_operator(f->s, "OP-C", "Operator C"), KP_OK);
	assert_int_equal(kp_store_put_product(f->s, "P10", "10 rides A+B", 10, ab, 2), KP_OK);
	assert_int_equal(kp_store_put_product(f->s, "PC", "C only", 5, c, 1), KP_OK);
	assert_int_equal(kp_store_commit(f->s), KP_OK);
	tu_term_engine(f);
	*state = f;
	return 0;
}

static void tap(struct tu_term *f, uint8_t card, int64_t now, enum kp_tap_kind kind,
                const char *reason, int64_t left)
{
	uint8_t token[KP_TOKEN_LEN];
	struct kp_tap_outcome o;

	tu_term_token(f, card, token);
	assert_int_equal(kp_tap_decide(f->e, token, now, &o), KP_OK);
	assert_string_equal(o.reason, reason);
	assert_int_equal(o.kind, kind);
	assert_int_equal(o.rides_left, left);
}

static void test_accept_deducts_one_ride(void **state)
{
	struct tu_term *f = *state;
	struct kp_entitlement e;
	uint8_t token[KP_TOKEN_LEN];

	tu_term_put_ent(f, 1, 100, "P10", 3, T0 - DAY, T0 + DAY);
	tap(f, 1, T0, KP_TAP_ACCEPTED, "ok", 2);
	tu_term_token(f, 1, token);
	assert_int_equal(kp_store_get_entitlement(f->s, token, 100, &e), KP_OK);
	assert_int_equal(e.rides_left, 2);
}

static void test_each_refusal_reason(void **state)
{
	struct tu_term *f = *state;
	uint8_t token[KP_TOKEN_LEN];

	tu_term_put_ent(f, 2, 200, "P10", 0, T0 - DAY, T0 + DAY);         /* exhausted */
	tu_term_put_ent(f, 3, 300, "P10", 5, T0 - 2 * DAY, T0 - DAY);     /* expired */
	tu_term_put_ent(f, 4, 400, "P10", 5, T0 + DAY, T0 + 2 * DAY);     /* not yet valid */
	tu_term_put_ent(f, 5, 500, "PC", 5, T0 - DAY, T0 + DAY);          /* other operator only */
	tu_term_put_ent(f, 6, 600, "P10", 5, T0 - DAY, T0 + DAY);         /* denylisted below */
	tu_term_token(f, 6, token);
	assert_int_equal(kp_store_put_denylist(f->s, token, "stolen", T0), KP_OK);

	tap(f, 2, T0, KP_TAP_REFUSED, "exhausted", -1);
	tap(f, 3, T0, KP_TAP_REFUSED, "expired", -1);
	tap(f, 4, T0, KP_TAP_REFUSED, "not-yet-valid", -1);
	tap(f, 5, T0, KP_TAP_REFUSED, "wrong-operator", -1);
	tap(f, 6, T0, KP_TAP_REFUSED, "denylisted", -1);
	tap(f, 7, T0, KP_TAP_REFUSED, "no-entitlement", -1);
	/* The validity period is [from, until): the last millisecond is in, until is out. */
	tu_term_put_ent(f, 8, 800, "P10", 5, T0 - DAY, T0 + 10);
	tap(f, 8, T0 + 9, KP_TAP_ACCEPTED, "ok", 4);
	tap(f, 8, T0 + 10 + 120000, KP_TAP_REFUSED, "expired", -1);
}

static void test_cross_operator_product_on_b(void **state)
{
	struct tu_term *f = *state;
	kp_tap_engine *eb = NULL;
	struct kp_terminal_cfg cb = f->cfg;
	uint8_t token[KP_TOKEN_LEN];
	struct kp_tap_outcome o;

	tu_term_put_ent(f, 1, 100, "P10", 3, T0 - DAY, T0 + DAY);
	/* The same store, a terminal of operator B: the A+B ticket works there too. */
	kp_tap_engine_close(f->e);
	f->e = NULL;
	snprintf(cb.operator_id, sizeof(cb.operator_id), "OP-B");
	assert_int_equal(kp_tap_engine_open(&eb, f->s, &cb, f->key, f->token_key), KP_OK);
	tu_term_token(f, 1, token);
	assert_int_equal(kp_tap_decide(eb, token, T0, &o), KP_OK);
	assert_int_equal(o.kind, KP_TAP_ACCEPTED);
	assert_string_equal(o.product, "P10");
	kp_tap_engine_close(eb);
	/* and on C it is refused */
	snprintf(cb.operator_id, sizeof(cb.operator_id), "OP-C");
	assert_int_equal(kp_tap_engine_open(&eb, f->s, &cb, f->key, f->token_key), KP_OK);
	assert_int_equal(kp_tap_decide(eb, token, T0 + 3600000, &o), KP_OK);
	assert_string_equal(o.reason, "wrong-operator");
	f->e = eb;
}

static void test_double_tap_window(void **state)
{
	struct tu_term *f = *state;

	tu_term_put_ent(f, 1, 100, "P10", 3, T0 - DAY, T0 + DAY);
	tap(f, 1, T0, KP_TAP_ACCEPTED, "ok", 2);
	tap(f, 1, T0 + 5000, KP_TAP_ALREADY, "already", -1);
	tap(f, 1, T0 + 59999, KP_TAP_ALREADY, "already", -1);
	/* The window runs from the accepted tap, not from the repeats. */
	tap(f, 1, T0 + 60000, KP_TAP_ACCEPTED, "ok", 1);
	/* A clock that steps back inside the window does not charge again either. */
	tap(f, 1, T0 + 30000, KP_TAP_ALREADY, "already", -1);
}

static void test_refused_tap_does_not_open_window(void **state)
{
	struct tu_term *f = *state;

	tu_term_put_ent(f, 1, 100, "P10", 3, T0 + 1000, T0 + DAY);
	tap(f, 1, T0, KP_TAP_REFUSED, "not-yet-valid", -1);
	tap(f, 1, T0 + 2000, KP_TAP_ACCEPTED, "ok", 2);
}

static void test_best_entitlement_expires_first(void **state)
{
	struct tu_term *f = *state;
	struct kp_tap_outcome o;
	uint8_t token[KP_TOKEN_LEN];

	tu_term_put_ent(f, 1, 100, "P10", 9, T0 - DAY, T0 + 30 * DAY);
	tu_term_put_ent(f, 1, 101, "P10", 2, T0 - DAY, T0 + 2 * DAY);
	tu_term_put_ent(f, 1, 102, "P10", 0, T0 - DAY, T0 + DAY);          /* exhausted, skipped */
	tu_term_put_ent(f, 1, 103, "PC", 5, T0 - DAY, T0 + DAY);           /* other operator */
	tu_term_token(f, 1, token);
	assert_int_equal(kp_tap_decide(f->e, token, T0, &o), KP_OK);
	assert_int_equal(o.entitlement, 101);
	assert_int_equal(o.rides_left, 1);
}

static void test_journal_chain_verifies_and_detects_tampering(void **state)
{
	struct tu_term *f = *state;
	uint64_t n = 0, bad = 0;
	char err[256];
	kp_cert *cert = NULL;
	sqlite3 *raw = NULL;

	tu_term_put_ent(f, 1, 100, "P10", 10, T0 - DAY, T0 + DAY);
	for (int i = 0; i < 6; i++)
		tap(f, (uint8_t)(1 + i % 2), T0 + i * 61000LL, i % 2 ? KP_TAP_REFUSED : KP_TAP_ACCEPTED,
		    i % 2 ? "no-entitlement" : "ok", i % 2 ? -1 : 9 - i / 2);
	cert = make_cert(f);

	assert_int_equal(kp_journal_verify(f->s, cert, &n, &bad, err, sizeof(err)), 0);
	assert_int_equal(n, 6);

	/* The journal refuses edits... */
	assert_int_equal(sqlite3_open(f->db, &raw), SQLITE_OK);
	assert_int_not_equal(sqlite3_exec(raw, "UPDATE journal SET reason = 'ok' WHERE seq = 2",
	                                  NULL, NULL, NULL), SQLITE_OK);
	assert_int_not_equal(sqlite3_exec(raw, "DELETE FROM journal WHERE seq = 3", NULL, NULL,
	                                  NULL), SQLITE_OK);
	/* ...and one who drops the guard and deletes a record is caught by verify. */
	assert_int_equal(sqlite3_exec(raw, "DROP TRIGGER journal_append_only;"
	                              "DELETE FROM journal WHERE seq = 3", NULL, NULL, NULL),
	                 SQLITE_OK);
	sqlite3_close(raw);
	assert_int_equal(kp_journal_verify(f->s, cert, &n, &bad, err, sizeof(err)), KP_E_SEQ);
	assert_int_equal(bad, 4);
	assert_int_equal(n, 2);
	kp_cert_free(cert);
}

/* With a signing pool the engine signs from it (a random k, test_crypto_pool),
 * then, the pool empty, with RFC 6979; every record verifies with the certificate and the
 * kp_cose_verify1 the backend uses. */
static void test_records_signed_from_pool(void **state)
{
	struct tu_term *f = *state;
	struct kp_tap_timing tm;
	kp_sign_pool *pool = NULL;
	kp_cert *cert = NULL;
	uint64_t n = 0, bad = 0;
	char err[256];

	tu_term_put_ent(f, 1, 100, "P10", 10, T0 - DAY, T0 + DAY);
	assert_int_equal(kp_sign_pool_open(&pool, f->key, 2), KP_CRYPTO_OK);
	assert_int_equal(kp_sign_pool_refill(pool, 2, NULL), KP_CRYPTO_OK);
	kp_tap_engine_set_pool(f->e, pool);
	for (int i = 0; i < 4; i++) {
		/* accepted (card 1) and refused (card 2, nothing) records alike */
		tap(f, (uint8_t)(1 + i % 2), T0 + i * 61000LL, i % 2 ? KP_TAP_REFUSED : KP_TAP_ACCEPTED,
		    i % 2 ? "no-entitlement" : "ok", i % 2 ? -1 : 9 - i / 2);
		kp_tap_engine_timing(f->e, &tm);
		assert_int_equal(tm.pooled, i < 2);
		assert_true(tm.sign_ns > 0);
	}
	assert_int_equal(kp_sign_pool_count(pool), 0);
	cert = make_cert(f);
	assert_int_equal(kp_journal_verify(f->s, cert, &n, &bad, err, sizeof(err)), 0);
	assert_int_equal(n, 4);
	kp_tap_engine_set_pool(f->e, NULL);
	kp_sign_pool_free(pool);
	kp_cert_free(cert);
}

static void test_swapped_payload_is_caught(void **state)
{
	struct tu_term *f = *state;
	uint64_t n = 0, bad = 0;
	char err[256];
	sqlite3 *raw = NULL;

	tu_term_put_ent(f, 1, 100, "P10", 10, T0 - DAY, T0 + DAY);
	tap(f, 1, T0, KP_TAP_ACCEPTED, "ok", 9);
	tap(f, 1, T0 + 61000, KP_TAP_ACCEPTED, "ok", 8);
	assert_int_equal(sqlite3_open(f->db, &raw), SQLITE_OK);
	assert_int_equal(sqlite3_exec(raw, "DROP TRIGGER journal_immutable;"
	                              "UPDATE journal SET payload = (SELECT payload FROM journal"
	                              " WHERE seq = 1) WHERE seq = 2", NULL, NULL, NULL), SQLITE_OK);
	sqlite3_close(raw);
	kp_cert_free(make_cert(f));
	/* no certificate given: verify uses the one the store keeps */
	assert_int_equal(kp_journal_verify(f->s, NULL, &n, &bad, err, sizeof(err)), KP_E_JOURNAL);
	assert_int_equal(bad, 2);
	assert_int_equal(n, 1);
}

static void test_failed_commit_changes_nothing(void **state)
{
	struct tu_term *f = *state;
	struct kp_tap_outcome o;
	struct kp_entitlement e;
	uint8_t token[KP_TOKEN_LEN];
	sqlite3 *raw = NULL;
	int64_t n = 0;

	tu_term_put_ent(f, 1, 100, "P10", 3, T0 - DAY, T0 + DAY);
	tap(f, 1, T0, KP_TAP_ACCEPTED, "ok", 2);
	/* Another connection holds the write lock: the tap must fail whole, not half. */
	assert_int_equal(sqlite3_open(f->db, &raw), SQLITE_OK);
	sqlite3_busy_timeout(raw, 0);
	kp_store_set_busy_timeout(f->s, 20);
	assert_int_equal(sqlite3_exec(raw, "BEGIN IMMEDIATE", NULL, NULL, NULL), SQLITE_OK);
	tu_term_token(f, 1, token);
	assert_int_not_equal(kp_tap_decide(f->e, token, T0 + 120000, &o), KP_OK);
	sqlite3_exec(raw, "ROLLBACK", NULL, NULL, NULL);
	sqlite3_close(raw);
	assert_int_equal(kp_store_get_entitlement(f->s, token, 100, &e), KP_OK);
	assert_int_equal(e.rides_left, 2);
	assert_int_equal(kp_store_count(f->s, "journal", &n), KP_OK);
	assert_int_equal(n, 1);
	/* and the next tap continues the chain without a gap */
	tap(f, 1, T0 + 180000, KP_TAP_ACCEPTED, "ok", 1);
	assert_int_equal(kp_store_count(f->s, "journal", &n), KP_OK);
	assert_int_equal(n, 2);
}

/* kippuctl loads into the store while the terminal runs: the next tap sees the change
 * (no statement may keep an old read snapshot open between taps). */
static void test_load_while_running(void **state)
{
	struct tu_term *f = *state;
	kp_store *other = NULL;
	uint8_t token[KP_TOKEN_LEN];

	tu_term_put_ent(f, 1, 100, "P10", 5, T0 - DAY, T0 + DAY);
	tap(f, 1, T0, KP_TAP_ACCEPTED, "ok", 4);
	assert_int_equal(kp_store_open(&other, f->db), KP_OK);
	tu_term_token(f, 1, token);
	assert_int_equal(kp_store_put_denylist(other, token, "lost", T0), KP_OK);
	kp_store_close(other);
	tap(f, 1, T0 + 120000, KP_TAP_REFUSED, "denylisted", -1);
}

/* Rider categories: a resident product needs a valid resident eligibility; a pass sold to
 * a My Number linkage works for the transit IC card linked to it, and the journal names
 * the linkage (its token), never the person. */
static void test_resident_categories_and_linkage(void **state)
{
	struct tu_term *f = *state;
	const char *ab[] = { "OP-A" };
	uint8_t card[KP_TOKEN_LEN], linkage[KP_TOKEN_LEN];
	struct kp_tap_outcome o;
	struct kp_record rec;
	struct kp_entitlement e;
	struct {
		const struct kp_journal_row *row;
	} unused;

	(void)unused;
	memset(linkage, 0xA7, sizeof(linkage));
	assert_int_equal(kp_store_put_product_cat(f->s, "RES", "resident 10 rides", 10, "resident",
	                                          ab, 1), KP_OK);
	/* card 1: a resident ticket but no category */
	tu_term_put_ent(f, 1, 100, "RES", 10, T0 - DAY, T0 + 90 * DAY);
	tap(f, 1, T0, KP_TAP_REFUSED, "not-eligible", -1);
	/* card 2: resident until yesterday */
	tu_term_put_ent(f, 2, 200, "RES", 10, T0 - DAY, T0 + 90 * DAY);
	tu_term_token(f, 2, card);
	assert_int_equal(kp_store_put_eligibility(f->s, card, "resident", T0 - 400 * DAY, T0 - DAY,
	                                          linkage), KP_OK);
	tap(f, 2, T0, KP_TAP_REFUSED, "eligibility-expired", -1);
	/* card 3: resident for a year, linked through the linkage */
	tu_term_put_ent(f, 3, 300, "RES", 10, T0 - DAY, T0 + 90 * DAY);
	tu_term_token(f, 3, card);
	assert_int_equal(kp_store_put_eligibility(f->s, card, "resident", T0 - DAY, T0 + 365 * DAY,
	                                          linkage), KP_OK);
	tu_term_token(f, 3, card);
	assert_int_equal(kp_tap_decide(f->e, card, T0, &o), KP_OK);
	assert_int_equal(o.kind, KP_TAP_ACCEPTED);
	assert_string_equal(o.category, "resident");
	assert_int_equal(o.linked, 1);
	assert_int_equal(o.warn_days, -1);
	/* card 4: resident status ends in 12 days: accepted with a warning */
	tu_term_put_ent(f, 4, 400, "RES", 10, T0 - DAY, T0 + 90 * DAY);
	tu_term_token(f, 4, card);
	assert_int_equal(kp_store_put_eligibility(f->s, card, "resident", T0 - DAY, T0 + 12 * DAY + 5,
	                                          NULL), KP_OK);
	assert_int_equal(kp_tap_decide(f->e, card, T0, &o), KP_OK);
	assert_int_equal(o.kind, KP_TAP_ACCEPTED);
	assert_int_equal(o.warn_days, 12);
	assert_int_equal(o.linked, 0);
	/* card 5 holds nothing itself; a demand-bus pass was sold to its linkage */
	memset(&e, 0, sizeof(e));
	memcpy(e.token, linkage, KP_TOKEN_LEN);
	e.id = 500;
	snprintf(e.product, sizeof(e.product), "RES");
	e.rides_left = 4;
	e.valid_from_ms = T0 - DAY;
	e.valid_until_ms = T0 + 30 * DAY;
	assert_int_equal(kp_store_put_entitlement(f->s, &e), KP_OK);
	assert_int_equal(kp_store_put_eligibility(f->s, linkage, "resident", T0 - DAY, T0 + 365 * DAY,
	                                          NULL), KP_OK);
	tu_term_token(f, 5, card);
	assert_int_equal(kp_tap_decide(f->e, card, T0, &o), KP_OK);
	assert_string_equal(o.reason, "no-entitlement");      /* not linked yet */
	assert_int_equal(kp_store_put_eligibility(f->s, card, "resident", T0 - DAY, T0 + 365 * DAY,
	                                          linkage), KP_OK);
	assert_int_equal(kp_tap_decide(f->e, card, T0 + 120000, &o), KP_OK);
	assert_int_equal(o.kind, KP_TAP_ACCEPTED);
	assert_int_equal(o.entitlement, 500);
	assert_int_equal(o.rides_left, 3);
	assert_int_equal(o.linked, 1);
	assert_int_equal(kp_store_get_entitlement(f->s, linkage, 500, &e), KP_OK);
	assert_int_equal(e.rides_left, 3);
	/* The linkage itself (a My Number card tapped directly) uses the same pass. */
	assert_int_equal(kp_tap_decide(f->e, linkage, T0 + 240000, &o), KP_OK);
	assert_int_equal(o.kind, KP_TAP_ACCEPTED);
	assert_int_equal(o.rides_left, 2);
	(void)rec;
}

static void test_migrations(void **state)
{
	struct tu_term *f = *state;
	char path[300];
	kp_store *s = NULL;
	int v = -1;
	int64_t n = 0;
	sqlite3 *raw = NULL;

	/* From empty to current. */
	assert_int_equal(kp_store_schema_version(f->s, &v), KP_OK);
	assert_int_equal(v, KP_SCHEMA_VERSION);
	/* From an older database (version 1) that holds data: upgraded, data kept. */
	snprintf(path, sizeof(path), "%s/old.db", f->dir);
	assert_int_equal(kp_store_open_at(&s, path, 1), KP_OK);
	assert_int_equal(kp_store_schema_version(s, &v), KP_OK);
	assert_int_equal(v, 1);
	assert_int_equal(kp_store_put_operator(s, "OP-OLD", "Old operator"), KP_OK);
	assert_int_not_equal(kp_store_count(s, "recent_taps", &n), KP_OK);
	kp_store_close(s);
	assert_int_equal(kp_store_open(&s, path), KP_OK);
	assert_int_equal(kp_store_schema_version(s, &v), KP_OK);
	assert_int_equal(v, KP_SCHEMA_VERSION);
	assert_int_equal(kp_store_count(s, "operators", &n), KP_OK);
	assert_int_equal(n, 1);
	assert_int_equal(kp_store_count(s, "recent_taps", &n), KP_OK);
	kp_store_close(s);
	/* A database from a newer program is refused, not "downgraded". */
	assert_int_equal(sqlite3_open(path, &raw), SQLITE_OK);
	assert_int_equal(sqlite3_exec(raw, "PRAGMA user_version = 99", NULL, NULL, NULL), SQLITE_OK);
	sqlite3_close(raw);
	assert_int_equal(kp_store_open(&s, path), KP_E_SCHEMA);
	assert_null(s);
}

static void test_store_pragmas(void **state)
{
	struct tu_term *f = *state;
	sqlite3 *raw = NULL;
	sqlite3_stmt *st = NULL;

	(void)f;
	assert_int_equal(sqlite3_open(f->db, &raw), SQLITE_OK);
	assert_int_equal(sqlite3_prepare_v2(raw, "PRAGMA journal_mode", -1, &st, NULL), SQLITE_OK);
	assert_int_equal(sqlite3_step(st), SQLITE_ROW);
	assert_string_equal((const char *)sqlite3_column_text(st, 0), "wal");
	sqlite3_finalize(st);
	sqlite3_close(raw);
}

static void test_token_derivation(void **state)
{
	/* HMAC-SHA256(key = 32 x 0x5A, "felica" || 0101020304050607), first 16 bytes;
	 * computed independently with Python's hmac module. */
	static const char *want = "e7f879997b2e10f724ebab53f0e9aeef";
	struct tu_term *f = *state;
	uint8_t token[KP_TOKEN_LEN];
	char hex[33];

	tu_term_token(f, 0x07, token);
	kp_hex(token, KP_TOKEN_LEN, hex);
	assert_string_equal(hex, want);
	/* the kind is part of the token: the same id under another kind differs */
	{
		uint8_t idm[8] = { 0x01, 0x01, 0x02, 0x03, 0x04, 0x05, 0x06, 0x07 }, other[KP_TOKEN_LEN];

		assert_int_equal(kp_token_derive(f->token_key, "jpki", idm, 8, other), 0);
		assert_memory_not_equal(other, token, KP_TOKEN_LEN);
	}
}

/* The tests below run between setup and tu_term_teardown unless their row names others. */
#define FX_TEST(test) cmocka_unit_test_setup_teardown(test, setup, tu_term_teardown)

int main(void)
{
	const struct CMUnitTest tests[] = {
		FX_TEST(test_accept_deducts_one_ride),
		FX_TEST(test_each_refusal_reason),
		FX_TEST(test_cross_operator_product_on_b),
		FX_TEST(test_double_tap_window),
		FX_TEST(test_refused_tap_does_not_open_window),
		FX_TEST(test_best_entitlement_expires_first),
		FX_TEST(test_journal_chain_verifies_and_detects_tampering),
		FX_TEST(test_records_signed_from_pool),
		FX_TEST(test_swapped_payload_is_caught),
		FX_TEST(test_failed_commit_changes_nothing),
		FX_TEST(test_load_while_running),
		FX_TEST(test_resident_categories_and_linkage),
		FX_TEST(test_migrations),
		FX_TEST(test_store_pragmas),
		FX_TEST(test_token_derivation),
	};

	return cmocka_run_group_tests_name("tap", tests, NULL, NULL);
}
