/* SPDX-License-Identifier: Apache-2.0 */
/* The fare engine at the terminal (terminal/fare/FARES.md), beside the golden table (which runs
 * through `kippuctl fares quote`): journeys left open are charged at the service day's end
 * by the idle sweep; a journey closed by the next tap is journaled in the same transaction
 * as that tap, both signed and chained; a refused tap-off changes no balance, journey or
 * cap; every record says its event and fare rules; the load-file directives refuse bad
 * forms with the line and leave the store unchanged. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <cmocka.h>
#include <sqlite3.h>

#include "kp_terminal.h"
#include "kp_tools.h"
#include "fixtures.h"
#include "testutil.h"

#define T0 1796086800000LL            /* 2026-12-01T10:00:00+09:00 */
#define MIN (60LL * 1000)
#define HOUR (60 * MIN)

struct fx {
	struct tu_term *t;
	struct kp_record seen[16];
	int n_seen;
};

/* A zone bus: stops S1..S3 in zones Z1..Z3; 200 within a zone, 300 one zone on, 400 two. */
static void write_feed(const char *dir)
{
	TU_WRITE_FILES(tu_path(dir, "feed"),
		{ "agency.txt", "agency_id,agency_name,agency_url,agency_timezone\n"
		  "B,Bus,http://b.example,Asia/Tokyo\n" },
		{ "routes.txt", "route_id,agency_id,route_short_name,route_long_name,route_type\n"
		  "R,B,R,Harbour,3\n" },
		{ "stops.txt", "stop_id,stop_name,stop_lat,stop_lon,zone_id\nS1,One,43,141,Z1\n"
		  "S2,Two,43,141,Z2\nS3,Three,43,141,Z3\n" },
		{ "networks.txt", "network_id,network_name\n"
		  "N1,Harbour network\nN2,Hill network\n" },
		{ "route_networks.txt", "network_id,route_id\nN1,R\n" },
		{ "fare_attributes.txt", "fare_id,price,currency_type,payment_method,transfers\n"
		  "F200,200,JPY,0,0\n"
		  "F300,300,JPY,0,0\nF400,400,JPY,0,0\n" },
		{ "fare_rules.txt", "fare_id,route_id,origin_id,destination_id\n"
		  "F200,R,Z1,Z1\nF200,R,Z2,Z2\nF200,R,Z3,Z3\nF300,R,Z1,Z2\nF300,R,Z2,Z1\n"
		  "F300,R,Z2,Z3\nF300,R,Z3,Z2\nF400,R,Z1,Z3\nF400,R,Z3,Z1\n" });
}

static void observe(void *arg, const struct kp_record *rec)
{
	struct fx *f = arg;

	if (f->n_seen < 16)
		f->seen[f->n_seen++] = *rec;
}

static int setup(void **state)
{
	struct fx *f = calloc(1, sizeof(*f));
	const char *ops[] = { "B", "A" };
	char p[400], err[KP_FARE_MSG_MAX] = "";
	struct kp_fare_import_opts io = { "zone", NULL, NULL };
	struct kp_entitlement en;

	assert_non_null(f);
	f->t = tu_term_new("T-1", "B", 0x33);
	write_feed(f->t->dir);
	snprintf(p, sizeof(p), "%s/feed", f->t->dir);
	if (kp_fares_import(f->t->s, p, &io, NULL, err, sizeof(err)) != KP_OK)
		fail_msg("import: %s", err);
	f->t->cert = tu_term_cert(f->t, "T-1");

	assert_int_equal(kp_store_begin(f->t->s), KP_OK);
	assert_int_equal(kp_store_put_operator(f->t->s, "B", "Zone bus"), KP_OK);
	assert_int_equal(kp_store_put_operator(f->t->s, "A", "Flat bus"), KP_OK);
	/* B by this terminal's config (fare_feed, fare_mode distance); A by a fares row */
	assert_int_equal(kp_store_put_operator_fare(f->t->s, "A", "zone", 1), KP_OK);
	assert_int_equal(kp_store_put_product_stored(f->t->s, "SV", "Account", ops, 2), KP_OK);
	memset(&en, 0, sizeof(en));
	assert_int_equal(kp_token_derive(f->t->token_key, "test", (const uint8_t *)"c1", 2,
	                                 en.token), 0);
	en.id = 1;
	snprintf(en.product, sizeof(en.product), "SV");
	en.rides_left = 1000;
	en.valid_from_ms = T0 - 24 * HOUR;
	en.valid_until_ms = T0 + 90 * 24 * HOUR;
	assert_int_equal(kp_store_put_entitlement(f->t->s, &en), KP_OK);
	assert_int_equal(kp_store_commit(f->t->s), KP_OK);

	snprintf(f->t->cfg.route, sizeof(f->t->cfg.route), "R");
	snprintf(f->t->cfg.stop, sizeof(f->t->cfg.stop), "S1");
	snprintf(f->t->cfg.fare_feed, sizeof(f->t->cfg.fare_feed), "zone");
	f->t->cfg.fare_distance = 1;
	tu_term_engine(f->t);
	kp_tap_engine_observe(f->t->e, observe, f);
	*state = f;
	return 0;
}

static int teardown(void **state)
{
	struct fx *f = *state;

	tu_term_free(f->t);
	free(f);
	return 0;
}

static void tap_at(struct fx *f, const char *op, const char *stop, int64_t now,
                   struct kp_tap_outcome *o)
{
	uint8_t token[KP_TOKEN_LEN];

	assert_int_equal(kp_token_derive(f->t->token_key, "test", (const uint8_t *)"c1", 2, token), 0);
	assert_int_equal(kp_tap_engine_set_place(f->t->e, op, "R", stop, 9 * 3600, NULL), KP_OK);
	assert_int_equal(kp_tap_decide(f->t->e, token, now, o), KP_OK);
}

static int64_t balance(struct fx *f)
{
	struct kp_entitlement en;
	uint8_t token[KP_TOKEN_LEN];

	assert_int_equal(kp_token_derive(f->t->token_key, "test", (const uint8_t *)"c1", 2, token), 0);
	assert_int_equal(kp_store_get_entitlement(f->t->s, token, 1, &en), KP_OK);
	return en.rides_left;
}

static void journal_ok(struct fx *f, uint64_t expect_n)
{
	uint64_t n = 0, bad = 0;
	char err[256] = "";

	if (kp_journal_verify(f->t->s, f->t->cert, &n, &bad, err, sizeof(err)) != 0)
		fail_msg("journal: record %llu: %s", (unsigned long long)bad, err);
	assert_int_equal(n, expect_n);
}

/* tap-on / tap-off by the terminal's own mode, and the records' event and fare note */
static void test_on_off(void **state)
{
	struct fx *f = *state;
	struct kp_tap_outcome o;

	tap_at(f, "B", "S1", T0, &o);
	assert_int_equal(o.kind, KP_TAP_ACCEPTED);
	assert_string_equal(o.event, "tap_on");
	assert_int_equal(o.amount, 0);
	assert_int_equal(balance(f), 1000);
	tap_at(f, "B", "S3", T0 + 20 * MIN, &o);
	assert_int_equal(o.kind, KP_TAP_ACCEPTED);
	assert_string_equal(o.event, "tap_off");
	assert_int_equal(o.amount, 400);
	assert_int_equal(balance(f), 600);
	assert_int_equal(f->n_seen, 2);
	assert_string_equal(f->seen[1].event, "tap_off");
	assert_non_null(strstr(f->seen[1].fare, "fare_rules.txt:9 (400)"));
	assert_string_equal(f->seen[1].stop, "S3");
	/* a tap-off with no journey open */
	assert_int_equal(kp_tap_engine_set_place(f->t->e, "B", "R", "S2", 9 * 3600, "tap_off"), KP_OK);
	{
		uint8_t token[KP_TOKEN_LEN];

		kp_token_derive(f->t->token_key, "test", (const uint8_t *)"c1", 2, token);
		assert_int_equal(kp_tap_decide(f->t->e, token, T0 + 40 * MIN, &o), KP_OK);
	}
	assert_int_equal(o.kind, KP_TAP_REFUSED);
	assert_string_equal(o.reason, "no-tap-on");
	journal_ok(f, 3);
}

/* The next tap on another operator first closes the open journey: two records, one
 * transaction, consecutive and chained. */
static void test_next_tap_closes(void **state)
{
	struct fx *f = *state;
	struct kp_tap_outcome o;

	tap_at(f, "B", "S2", T0, &o);
	assert_int_equal(o.kind, KP_TAP_ACCEPTED);
	tap_at(f, "A", "S1", T0 + HOUR, &o);       /* a tap-on on operator A */
	assert_int_equal(o.kind, KP_TAP_ACCEPTED);
	assert_string_equal(o.event, "tap_on");
	assert_int_equal(o.amount, 0);
	assert_int_equal(f->n_seen, 3);
	assert_string_equal(f->seen[1].event, "no_tap_off");
	assert_string_equal(f->seen[1].reason, "no-tap-off");
	assert_string_equal(f->seen[1].operator_id, "B");
	assert_string_equal(f->seen[1].stop, "S2");
	assert_int_equal(f->seen[1].amount, 300);     /* the highest fare from Z2 */
	assert_int_equal(f->seen[1].seq + 1, f->seen[2].seq);
	assert_int_equal(balance(f), 1000 - 300);
	journal_ok(f, 3);
}

/* A journey still open when its service day ends is charged by the idle sweep, as of
 * 04:00 the next morning. */
static void test_sweep(void **state)
{
	struct fx *f = *state;
	struct kp_tap_outcome o;
	size_t closed = 9;

	tap_at(f, "B", "S1", T0, &o);
	assert_int_equal(kp_tap_sweep(f->t->e, T0 + 10 * HOUR, &closed), KP_OK);   /* 20:00 */
	assert_int_equal(closed, 0);
	assert_int_equal(kp_tap_sweep(f->t->e, T0 + 19 * HOUR, &closed), KP_OK);   /* 05:00 */
	assert_int_equal(closed, 1);
	assert_int_equal(f->n_seen, 2);
	assert_string_equal(f->seen[1].event, "no_tap_off");
	assert_int_equal(f->seen[1].time_ms, T0 + 18 * HOUR);                  /* 04:00 */
	assert_int_equal(f->seen[1].amount, 400);
	assert_int_equal(balance(f), 600);
	assert_int_equal(kp_tap_sweep(f->t->e, T0 + 20 * HOUR, &closed), KP_OK);
	assert_int_equal(closed, 0);
	journal_ok(f, 2);
}

/* A tap-off the balance does not cover is refused and changes nothing: the journey stays
 * open and is charged later. */
static void test_refusal_changes_nothing(void **state)
{
	struct fx *f = *state;
	struct kp_tap_outcome o;
	uint8_t token[KP_TOKEN_LEN];

	tap_at(f, "B", "S1", T0, &o);
	assert_int_equal(o.kind, KP_TAP_ACCEPTED);
	/* the balance drops under the fare behind the terminal's back (another sale) */
	assert_int_equal(kp_token_derive(f->t->token_key, "test", (const uint8_t *)"c1", 2, token), 0);
	assert_int_equal(kp_store_begin(f->t->s), KP_OK);
	{
		struct kp_entitlement en;

		assert_int_equal(kp_store_get_entitlement(f->t->s, token, 1, &en), KP_OK);
		en.rides_left = 350;
		assert_int_equal(kp_store_put_entitlement(f->t->s, &en), KP_OK);
	}
	assert_int_equal(kp_store_commit(f->t->s), KP_OK);
	tap_at(f, "B", "S3", T0 + 20 * MIN, &o);
	assert_int_equal(o.kind, KP_TAP_REFUSED);
	assert_string_equal(o.reason, "insufficient-balance");
	assert_int_equal(balance(f), 350);
	/* still open: a tap-off at S2 (300) goes through */
	tap_at(f, "B", "S2", T0 + 25 * MIN, &o);
	assert_int_equal(o.kind, KP_TAP_ACCEPTED);
	assert_int_equal(o.amount, 300);
	assert_int_equal(balance(f), 50);
	/* a tap-on is refused now: 50 does not cover the 400 that journey could cost */
	tap_at(f, "B", "S1", T0 + 2 * HOUR, &o);
	assert_int_equal(o.kind, KP_TAP_REFUSED);
	assert_string_equal(o.reason, "insufficient-balance");
	journal_ok(f, 4);
}

static void card_token(struct fx *f, uint8_t token[KP_TOKEN_LEN])
{
	assert_int_equal(kp_token_derive(f->t->token_key, "test", (const uint8_t *)"c1", 2, token), 0);
}

/* What the other terminals saw (kp_fare_remote, from the bundle): their spending counts
 * for the caps; a journey opened there can be tapped off here; a journey of ours they
 * closed is not charged again; one they did not know of is charged at once. */
static void test_remote_state(void **state)
{
	struct fx *f = *state;
	struct kp_fare_remote r;
	struct kp_tap_outcome o;
	size_t closed = 0;

	memset(&r, 0, sizeof(r));
	card_token(f, r.token);
	r.last_ms = T0 - HOUR;
	r.day_id = (T0 / 1000 + 9 * 3600 - 4 * 3600) / 86400;     /* this service day */
	r.day_spent = 600;
	r.open = 1;                                   /* tapped on at S1 on another bus of B */
	r.open_ms = T0 - HOUR;
	snprintf(r.open_operator, sizeof(r.open_operator), "B");
	snprintf(r.open_route, sizeof(r.open_route), "R");
	snprintf(r.open_stop, sizeof(r.open_stop), "S1");
	assert_int_equal(kp_store_begin(f->t->s), KP_OK);
	assert_int_equal(kp_store_put_fare_cap(f->t->s, "", KP_CAP_DAY, 700), KP_OK);
	assert_int_equal(kp_store_put_fare_remote(f->t->s, &r), KP_OK);
	assert_int_equal(kp_store_commit(f->t->s), KP_OK);
	/* a refused tap does not make that journey this terminal's */
	assert_int_equal(kp_tap_engine_set_place(f->t->e, "B", "R", "S9", 9 * 3600, NULL), KP_OK);
	{
		uint8_t token[KP_TOKEN_LEN];

		card_token(f, token);
		assert_int_equal(kp_tap_decide(f->t->e, token, T0 - 30 * MIN, &o), KP_OK);
	}
	assert_int_equal(o.kind, KP_TAP_REFUSED);          /* S9: no such stop in the feed */
	assert_int_equal(kp_tap_sweep(f->t->e, T0 + 30 * HOUR, &closed), KP_OK);
	assert_int_equal(closed, 0);                       /* nothing of ours to charge */
	tap_at(f, "B", "S3", T0, &o);                 /* its tap-off here: 400, cap leaves 100 */
	assert_int_equal(o.kind, KP_TAP_ACCEPTED);
	assert_string_equal(o.event, "tap_off");
	assert_int_equal(o.amount, 100);
	assert_int_equal(balance(f), 900);

	/* our own journey, then the backend says another terminal closed it */
	tap_at(f, "B", "S2", T0 + HOUR, &o);
	assert_string_equal(o.event, "tap_on");
	r.open = 0;
	r.last_ms = T0 + 2 * HOUR;
	r.closed_ms = T0 + HOUR;
	assert_int_equal(kp_store_put_fare_remote(f->t->s, &r), KP_OK);
	assert_int_equal(kp_tap_sweep(f->t->e, T0 + 3 * HOUR, &closed), KP_OK);
	assert_int_equal(closed, 1);
	assert_int_equal(f->n_seen, 3);               /* nothing journaled, nothing charged */
	assert_int_equal(balance(f), 900);

	/* another journey; the card then tapped elsewhere, where it was not known */
	tap_at(f, "B", "S2", T0 + 4 * HOUR, &o);
	assert_string_equal(o.event, "tap_on");
	r.closed_ms = 0;
	r.last_ms = T0 + 5 * HOUR;
	r.day_spent = 0;
	assert_int_equal(kp_store_put_fare_remote(f->t->s, &r), KP_OK);
	assert_int_equal(kp_tap_sweep(f->t->e, T0 + 6 * HOUR, &closed), KP_OK);
	assert_int_equal(closed, 1);
	assert_int_equal(f->n_seen, 5);
	assert_string_equal(f->seen[4].event, "no_tap_off");
	assert_int_equal(f->seen[4].time_ms, T0 + 6 * HOUR);
	assert_int_equal(f->seen[4].amount, 300);     /* day: 100 here, 0 there; cap 700 */
	assert_int_equal(balance(f), 600);
	journal_ok(f, 5);
}

/* A product limited to routes or networks is refused elsewhere with the reason. */
static void test_scope(void **state)
{
	struct fx *f = *state;
	struct kp_tap_outcome o;
	char path[400], err[512] = "";
	size_t n = 0;

	snprintf(path, sizeof(path), "%s/scope.load", f->t->dir);
	tu_write(path, "product-scope SV route X,Y\n");
	if (kp_load_file(f->t->s, path, f->t->token_key, err, sizeof(err), &n) != KP_OK)
		fail_msg("load: %s", err);
	tap_at(f, "B", "S1", T0, &o);                 /* route R */
	assert_int_equal(o.kind, KP_TAP_REFUSED);
	assert_string_equal(o.reason, "wrong-route");
	tu_write(path, "product-scope SV network N2\n");        /* route R is in N1 */
	assert_int_equal(kp_load_file(f->t->s, path, f->t->token_key, err, sizeof(err), &n), KP_OK);
	tap_at(f, "B", "S1", T0 + 2 * MIN, &o);
	assert_int_equal(o.kind, KP_TAP_REFUSED);
	assert_string_equal(o.reason, "wrong-route");
	tu_write(path, "product-scope SV network N1\n");
	assert_int_equal(kp_load_file(f->t->s, path, f->t->token_key, err, sizeof(err), &n), KP_OK);
	tap_at(f, "B", "S1", T0 + 5 * MIN, &o);
	assert_int_equal(o.kind, KP_TAP_ACCEPTED);
	tu_write(path, "product-scope SV line R\n");
	assert_int_not_equal(kp_load_file(f->t->s, path, f->t->token_key, err, sizeof(err), &n), KP_OK);
	assert_non_null(strstr(err, "route|network"));
	tu_write(path, "product-scope NOPE route R\n");
	assert_int_not_equal(kp_load_file(f->t->s, path, f->t->token_key, err, sizeof(err), &n), KP_OK);
}

/* One journey on operator A from S1 to S2: what its tap-off charged. */
static int64_t ride(struct fx *f, int64_t on, int64_t off)
{
	struct kp_tap_outcome o;

	tap_at(f, "A", "S1", on, &o);
	assert_int_equal(o.kind, KP_TAP_ACCEPTED);
	assert_string_equal(o.event, "tap_on");
	tap_at(f, "A", "S2", off, &o);
	assert_int_equal(o.kind, KP_TAP_ACCEPTED);
	assert_string_equal(o.event, "tap_off");
	return o.amount;
}

/* A fares v2 rule matched by consecutive transfers measures its duration_limit from the
 * run's first leg; the run lives in the card's fare state, whose columns schema 11 added.
 * A card mid-chain in a schema 10 store keeps its chain after the upgrade, with its run
 * starting at its last leg. */
static void test_run_upgrade(void **state)
{
	struct fx *f = *state;
	struct kp_fare_import_opts io = { "run", NULL, NULL };
	char p[400], err[KP_FARE_MSG_MAX] = "";
	sqlite3 *raw = NULL;
	int v = 0;

	TU_WRITE_FILES(tu_path(f->t->dir, "run"),
		{ "agency.txt", "agency_id,agency_name,agency_url,agency_timezone\n"
		  "A,Bus,http://a.example,Asia/Tokyo\n" },
		{ "routes.txt", "route_id,agency_id,route_short_name,route_long_name,route_type,network_id\n"
		  ""
		  "R,A,R,Ring,3,N1\n" },
		{ "stops.txt", "stop_id,stop_name,stop_lat,stop_lon\n"
		  "S1,One,43,141\nS2,Two,43,141\n" },
		{ "fare_products.txt", "fare_product_id,amount,currency\nP,100,JPY\n" },
		{ "fare_leg_rules.txt", "leg_group_id,network_id,fare_product_id\nL1,N1,P\n" },
		{ "fare_transfer_rules.txt",
		  "from_leg_group_id,to_leg_group_id,transfer_count,duration_limit,"
		  "duration_limit_type,fare_transfer_type\nL1,L1,-1,9000,1,0\n" });
	snprintf(p, sizeof(p), "%s/run", f->t->dir);
	if (kp_fares_import(f->t->s, p, &io, NULL, err, sizeof(err)) != KP_OK)
		fail_msg("import: %s", err);
	assert_int_equal(kp_store_put_operator_fare(f->t->s, "A", "run", 1), KP_OK);

	/* 2.5 h departure to departure, from the run's first leg: 165 min after it, 75 after
	 * the previous leg, the third ride pays and starts a new chain */
	assert_int_equal(ride(f, T0, T0 + 30 * MIN), 100);
	assert_int_equal(ride(f, T0 + 90 * MIN, T0 + 120 * MIN), 0);
	assert_int_equal(ride(f, T0 + 165 * MIN, T0 + 195 * MIN), 100);
	assert_int_equal(ride(f, T0 + 240 * MIN, T0 + 260 * MIN), 0);     /* a run from leg 3 */

	/* the store goes back to schema 10 with the card one transfer into that run */
	kp_tap_engine_close(f->t->e);
	kp_store_close(f->t->s);
	assert_int_equal(sqlite3_open(f->t->db, &raw), SQLITE_OK);
	assert_int_equal(sqlite3_exec(raw, "ALTER TABLE fare_state DROP COLUMN run_from;"
	                              " ALTER TABLE fare_state DROP COLUMN run_to;"
	                              " ALTER TABLE fare_state DROP COLUMN run_on_ms;"
	                              " ALTER TABLE fare_state DROP COLUMN run_off_ms;"
	                              " DROP TABLE direct_use;"          /* schema 13 */
	                              " DROP TABLE snapshot_stage;"      /* schema 14 */
	                              " DROP TABLE snapshot_chunks;"
	                              " PRAGMA user_version = 10;", NULL, NULL, NULL), SQLITE_OK);
	sqlite3_close(raw);
	assert_int_equal(kp_store_open(&f->t->s, f->t->db), KP_OK);
	assert_int_equal(kp_store_schema_version(f->t->s, &v), KP_OK);
	assert_int_equal(v, KP_SCHEMA_VERSION);
	assert_int_equal(kp_tap_engine_open(&f->t->e, f->t->s, &f->t->cfg, f->t->key, f->t->token_key), KP_OK);
	kp_tap_engine_observe(f->t->e, observe, f);

	/* 165 min after leg 3, but the upgrade lost where the run began: measured from the
	 * previous leg (leg 4, 90 min), as before schema 11; a new run starts at leg 4 */
	assert_int_equal(ride(f, T0 + 330 * MIN, T0 + 350 * MIN), 0);
	assert_int_equal(ride(f, T0 + 400 * MIN, T0 + 420 * MIN), 100);   /* 160 min after leg 4 */
	assert_int_equal(balance(f), 1000 - 300);
	journal_ok(f, 12);
}

/* The place file an onboard system writes: "ROUTE STOP", nothing else. */
static void test_place_parse(void **state)
{
	static const char *const bad[] = {
		"", "\n", "R\n", "R S1 S2\n", "R S:1\n", "R S1;x\n", "R/1 S1\n",
		"R 123456789012345678901234567890123\n",             /* 33 bytes */
		"R \xe6\x9d\xb1\n",                                /* not an id character */
	};
	char route[KP_ID_MAX + 1], stop[KP_ID_MAX + 1];

	(void)state;
	assert_int_equal(kp_place_parse("R S1\n", route, stop), KP_OK);
	assert_string_equal(route, "R");
	assert_string_equal(stop, "S1");
	assert_int_equal(kp_place_parse("  72\tS00016AGC6000020104493T000  \r\n", route, stop), KP_OK);
	assert_string_equal(stop, "S00016AGC6000020104493T000");
	assert_int_equal(kp_place_parse("R 12345678901234567890123456789012\n", route, stop), KP_OK);
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		if (kp_place_parse(bad[i], route, stop) != KP_E_CONFIG)
			fail_msg("place line %zu accepted", i);
	}
	assert_int_equal(kp_place_parse(NULL, route, stop), KP_E_CONFIG);
}

static void load_bad(struct fx *f, const char *text, const char *want)
{
	char path[400], err[512] = "";
	int64_t before = 0, after = 0;
	size_t lines = 0;

	snprintf(path, sizeof(path), "%s/bad.load", f->t->dir);
	tu_write(path, text);
	assert_int_equal(kp_store_count(f->t->s, "fare_feeds", &before), KP_OK);
	assert_int_not_equal(kp_load_file(f->t->s, path, f->t->token_key, err, sizeof(err), &lines), KP_OK);
	if (strstr(err, want) == NULL)
		fail_msg("load error \"%s\" does not say \"%s\"", err, want);
	assert_int_equal(kp_store_count(f->t->s, "fare_feeds", &after), KP_OK);
	assert_int_equal(before, after);
}

static void test_load_directives(void **state)
{
	struct fx *f = *state;
	char path[400], err[512] = "", route[KP_ID_MAX + 1], stops[4][KP_ID_MAX + 1];
	struct kp_transfer_rule tr;
	int64_t cap = 0;
	size_t n = 0;
	int found = 0, distance = 0;
	char feed[KP_ID_MAX + 1];

	snprintf(path, sizeof(path), "%s/ok.load", f->t->dir);
	tu_write(path, "fares B zone distance\n"
	               "cap child day 350\ncap - month 2000\n"
	               "transfer A * 60 2 off 100\ntransfer * B 30 1 free\n"
	               "product COM commuter B R S1,S2 Commuter S1-S2\n");
	if (kp_load_file(f->t->s, path, f->t->token_key, err, sizeof(err), &n) != KP_OK)
		fail_msg("load: %s", err);
	assert_int_equal(kp_store_operator_fare(f->t->s, "B", feed, sizeof(feed), &distance, &found), KP_OK);
	assert_true(found && distance == 1 && strcmp(feed, "zone") == 0);
	assert_int_equal(kp_store_fare_cap(f->t->s, "child", KP_CAP_DAY, &cap, &found), KP_OK);
	assert_true(found && cap == 350);
	assert_int_equal(kp_store_fare_cap(f->t->s, "", KP_CAP_MONTH, &cap, &found), KP_OK);
	assert_true(found && cap == 2000);
	assert_int_equal(kp_store_transfer_rule(f->t->s, "A", "B", &tr, &found), KP_OK);
	assert_true(found && strcmp(tr.from_operator, "A") == 0 && tr.off == 100 &&
	            tr.within_s == 3600 && tr.max_transfers == 2);   /* exact from before "*" */
	assert_int_equal(kp_store_transfer_rule(f->t->s, "C", "B", &tr, &found), KP_OK);
	assert_true(found && tr.off == -1 && tr.within_s == 1800);
	n = 0;
	assert_int_equal(kp_store_product_commuter(f->t->s, "COM", route, stops, 4, &n), KP_OK);
	assert_int_equal(n, 2);
	assert_string_equal(route, "R");
	assert_string_equal(stops[1], "S2");

	load_bad(f, "fares B zone sometimes\n", ":1:");
	load_bad(f, "operator X Ok\nfares B\n", ":2:");
	load_bad(f, "cap adult week 100\n", "day|month");
	load_bad(f, "cap - day -5\n", "AMOUNT");
	load_bad(f, "cap - day 12x\n", ":1:");
	load_bad(f, "transfer A B 0 1 free\n", "MINUTES");
	load_bad(f, "transfer A B 60 1 off\n", "free, or off");
	load_bad(f, "transfer A B 60 1 half 50\n", "free, or off");
	load_bad(f, "product C2 commuter B R S1 One stop\n", "2 to 64");
	load_bad(f, "product C3 commuter B R S1,S1 Same stop\n", "twice");
}

/* The tests below run between setup and teardown unless their row names others. */
#define FX_TEST(test) cmocka_unit_test_setup_teardown(test, setup, teardown)

int main(void)
{
	const struct CMUnitTest tests[] = {
		FX_TEST(test_on_off),
		FX_TEST(test_next_tap_closes),
		FX_TEST(test_sweep),
		FX_TEST(test_refusal_changes_nothing),
		FX_TEST(test_load_directives),
		FX_TEST(test_remote_state),
		FX_TEST(test_scope),
		FX_TEST(test_run_upgrade),
		cmocka_unit_test(test_place_parse),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
