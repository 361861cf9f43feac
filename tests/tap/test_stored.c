/* SPDX-License-Identifier: Apache-2.0 */
/* Stored value at the tap: charged the published tap-on fare of an imported GTFS feed
 * (Kumagaya ゆうゆうバス, flat 200 yen), after any usable pass or ride, refused when the
 * balance is short or the fare is unknown, journalled with amount and balance left. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>
#include <sys/stat.h>

#include <cmocka.h>

#include "fixtures.h"
#include "kp_terminal.h"
#include "testutil.h"

#define T0 1795000000000LL            /* 2026-11-18, a fixed "now" */
#define DAY (86400LL * 1000)
#define MIN (60LL * 1000)

static void import(struct tu_term *f, const char *dir, const char *feed)
{
	struct kp_fare_import_opts o = { feed, NULL, NULL };
	char err[KP_FARE_MSG_MAX] = "";

	if (kp_fares_import(f->s, dir, &o, NULL, err, sizeof(err)) != KP_OK)
		fail_msg("import %s: %s", dir, err);
}

static void put_ent(struct tu_term *f, uint8_t card, int64_t id, const char *product,
                    int64_t left)
{
	tu_term_put_ent(f, card, id, product, left, T0 - DAY, T0 + 30 * DAY);
}

static int64_t left_of(struct tu_term *f, uint8_t card, int64_t id)
{
	struct kp_entitlement e;
	uint8_t token[KP_TOKEN_LEN];

	tu_term_token(f, card, token);
	assert_int_equal(kp_store_get_entitlement(f->s, token, id, &e), KP_OK);
	return e.rides_left;
}

static int setup(void **state)
{
	struct tu_term *f = tu_term_new("T-1", "OP-A", 0x5A);
	const char *a[] = { "OP-A" }, *c[] = { "OP-C" };
	char feed[PATH_MAX + 100];

	f->cert = tu_term_cert(f, "T-1");
	snprintf(feed, sizeof(feed), "%s/kumagaya-yuyubus", tu_gtfs_dir());
	import(f, feed, "kumagaya");
	snprintf(f->cfg.route, sizeof(f->cfg.route), "1");
	snprintf(f->cfg.stop, sizeof(f->cfg.stop), "000001_001");   /* 籠原駅南口 */
	snprintf(f->cfg.fare_feed, sizeof(f->cfg.fare_feed), "kumagaya");
	f->cfg.double_tap_window_ms = 60000;
	assert_int_equal(kp_store_begin(f->s), KP_OK);
	assert_int_equal(kp_store_put_operator(f->s, "OP-A", "Operator A"), KP_OK);
	assert_int_equal(kp_store_put_operator(f->s, "OP-C", "Operator C"), KP_OK);
	assert_int_equal(kp_store_put_product(f->s, "P10", "10 rides", 10, a, 1), KP_OK);
	assert_int_equal(kp_store_put_product_stored(f->s, "SV", "Scheme account", a, 1), KP_OK);
	assert_int_equal(kp_store_put_product_stored(f->s, "SVC", "C account", c, 1), KP_OK);
	assert_int_equal(kp_store_commit(f->s), KP_OK);
	tu_term_engine(f);
	*state = f;
	return 0;
}

static void tap(struct tu_term *f, uint8_t card, int64_t now, struct kp_tap_outcome *o)
{
	uint8_t token[KP_TOKEN_LEN];

	tu_term_token(f, card, token);
	assert_int_equal(kp_tap_decide(f->e, token, now, o), KP_OK);
}

struct rec_check { uint64_t seq; struct kp_record rec; int found; };

static int find_rec(const struct kp_journal_row *row, void *arg)
{
	struct rec_check *c = arg;

	if (row->seq != c->seq)
		return 0;
	assert_int_equal(kp_record_decode(row->payload, row->payload_len, &c->rec), 0);
	c->found = 1;
	return 1;
}

static void journal_ok(struct tu_term *f, uint64_t expect_n)
{
	uint64_t n = 0, bad = 0;
	char err[256] = "";

	if (kp_journal_verify(f->s, f->cert, &n, &bad, err, sizeof(err)) != 0)
		fail_msg("journal: record %llu: %s", (unsigned long long)bad, err);
	assert_int_equal(n, expect_n);
}

static void test_schema(void **state)
{
	struct tu_term *f = *state;
	int v = 0, stored = -1;

	assert_int_equal(kp_store_schema_version(f->s, &v), KP_OK);
	assert_int_equal(v, KP_SCHEMA_VERSION);
	assert_int_equal(kp_store_product_stored(f->s, "SV", &stored), KP_OK);
	assert_int_equal(stored, 1);
	assert_int_equal(kp_store_product_stored(f->s, "P10", &stored), KP_OK);
	assert_int_equal(stored, 0);
	assert_int_equal(kp_store_product_stored(f->s, "nope", &stored), KP_E_INVAL);
}

/* 1000 yen, flat fare 200 (fare_rules.txt: one all-blank rule): 800 left. */
static void test_charge_flat_fare(void **state)
{
	struct tu_term *f = *state;
	struct kp_tap_outcome o;
	struct rec_check c = { 0 };

	put_ent(f, 1, 1, "SV", 1000);
	tap(f, 1, T0, &o);
	assert_int_equal(o.kind, KP_TAP_ACCEPTED);
	assert_string_equal(o.reason, "ok");
	assert_string_equal(o.product, "SV");
	assert_int_equal(o.amount, 200);
	assert_int_equal(o.rides_left, 800);
	assert_int_equal(left_of(f, 1, 1), 800);
	c.seq = o.seq;
	kp_journal_foreach(f->s, find_rec, &c);
	assert_true(c.found);
	assert_int_equal(c.rec.amount, 200);
	assert_int_equal(c.rec.rides, 0);
	assert_true(c.rec.has_left);
	assert_int_equal(c.rec.left, 800);
	assert_string_equal(c.rec.result, "accepted");
	/* a second tap after the double-tap window: 600 */
	tap(f, 1, T0 + 2 * MIN, &o);
	assert_int_equal(o.amount, 200);
	assert_int_equal(left_of(f, 1, 1), 600);
	journal_ok(f, 2);
}

/* 150 yen < 200: refused, nothing charged, journalled. */
static void test_insufficient_balance(void **state)
{
	struct tu_term *f = *state;
	struct kp_tap_outcome o;
	struct rec_check c = { 0 };

	put_ent(f, 2, 1, "SV", 150);
	tap(f, 2, T0, &o);
	assert_int_equal(o.kind, KP_TAP_REFUSED);
	assert_string_equal(o.reason, "insufficient-balance");
	assert_int_equal(o.amount, 0);
	assert_int_equal(left_of(f, 2, 1), 150);
	c.seq = o.seq;
	kp_journal_foreach(f->s, find_rec, &c);
	assert_true(c.found);
	assert_int_equal(c.rec.amount, 0);
	assert_string_equal(c.rec.reason, "insufficient-balance");
	journal_ok(f, 1);
	/* exactly the fare is enough: 200 -> 0 */
	put_ent(f, 3, 1, "SV", 200);
	tap(f, 3, T0, &o);
	assert_int_equal(o.kind, KP_TAP_ACCEPTED);
	assert_int_equal(left_of(f, 3, 1), 0);
}

/* A ride from an N-ride ticket goes before stored value; once it is used up, stored value
 * pays. A stored-value product of another operator is never charged here. */
static void test_nride_before_stored(void **state)
{
	struct tu_term *f = *state;
	struct kp_tap_outcome o;

	put_ent(f, 4, 1, "SV", 1000);
	put_ent(f, 4, 2, "P10", 1);
	put_ent(f, 4, 3, "SVC", 5000);
	tap(f, 4, T0, &o);
	assert_int_equal(o.kind, KP_TAP_ACCEPTED);
	assert_string_equal(o.product, "P10");
	assert_int_equal(o.amount, 0);
	assert_int_equal(o.rides_left, 0);
	assert_int_equal(left_of(f, 4, 1), 1000);
	tap(f, 4, T0 + 2 * MIN, &o);
	assert_int_equal(o.kind, KP_TAP_ACCEPTED);
	assert_string_equal(o.product, "SV");
	assert_int_equal(o.amount, 200);
	assert_int_equal(left_of(f, 4, 1), 800);
	assert_int_equal(left_of(f, 4, 3), 5000);
	/* only another operator's account: refused as before */
	put_ent(f, 5, 1, "SVC", 5000);
	tap(f, 5, T0, &o);
	assert_int_equal(o.kind, KP_TAP_REFUSED);
	assert_string_equal(o.reason, "wrong-operator");
	journal_ok(f, 3);
}

/* A stop the feed does not know, or no fare feed configured: refused, nothing charged. */
static void test_fare_unknown(void **state)
{
	struct tu_term *f = *state;
	struct kp_tap_outcome o;

	put_ent(f, 6, 1, "SV", 1000);
	snprintf(f->cfg.stop, sizeof(f->cfg.stop), "no-such-stop");
	tu_term_engine(f);
	tap(f, 6, T0, &o);
	assert_int_equal(o.kind, KP_TAP_REFUSED);
	assert_string_equal(o.reason, "fare-unknown");
	assert_int_equal(left_of(f, 6, 1), 1000);
	f->cfg.fare_feed[0] = '\0';
	snprintf(f->cfg.stop, sizeof(f->cfg.stop), "000001_001");
	tu_term_engine(f);
	tap(f, 6, T0 + 2 * MIN, &o);
	assert_string_equal(o.reason, "fare-unknown");
	snprintf(f->cfg.fare_feed, sizeof(f->cfg.fare_feed), "no-such-feed");
	tu_term_engine(f);
	tap(f, 6, T0 + 4 * MIN, &o);
	assert_string_equal(o.reason, "fare-unknown");
	assert_int_equal(left_of(f, 6, 1), 1000);
	journal_ok(f, 3);
}

/* A small v1 feed with a child price (fare_rider_categories.txt): a card holding the
 * category "child" pays 100, any other card the adult 200. */
static void test_child_category(void **state)
{
	struct tu_term *f = *state;
	struct kp_tap_outcome o;
	uint8_t token[KP_TOKEN_LEN];
	char dir[300];

	snprintf(dir, sizeof(dir), "%s/flat", f->dir);
	TU_WRITE_FILES(dir,
		{ "stops.txt", "stop_id,stop_name,stop_lat,stop_lon,zone_id\n"
		  "S1,One,36.1,139.3,S1\n" },
		{ "fare_attributes.txt", "fare_id,price,currency_type,payment_method,transfers\n"
		  "F200,200,JPY,0,0\n" },
		{ "fare_rules.txt", "fare_id,route_id,origin_id,destination_id\nF200,,,\n" },
		{ "fare_rider_categories.txt", "fare_id,rider_category_id,currency_type,price\n"
		  "F200,child,JPY,100\n" });
	import(f, dir, "flat");
	snprintf(f->cfg.fare_feed, sizeof(f->cfg.fare_feed), "flat");
	snprintf(f->cfg.stop, sizeof(f->cfg.stop), "S1");
	tu_term_engine(f);
	put_ent(f, 7, 1, "SV", 1000);
	put_ent(f, 8, 1, "SV", 1000);
	tu_term_token(f, 7, token);
	assert_int_equal(kp_store_put_eligibility(f->s, token, "child", T0 - DAY, T0 + DAY, NULL),
	                 KP_OK);
	tu_term_token(f, 8, token);
	assert_int_equal(kp_store_put_eligibility(f->s, token, "resident", T0 - DAY, T0 + DAY,
	                                          NULL), KP_OK);
	tap(f, 7, T0, &o);
	assert_int_equal(o.kind, KP_TAP_ACCEPTED);
	assert_int_equal(o.amount, 100);
	assert_string_equal(o.category, "child");
	assert_int_equal(left_of(f, 7, 1), 900);
	tap(f, 8, T0, &o);                     /* "resident" is no rider category of the feed */
	assert_int_equal(o.amount, 200);
	assert_string_equal(o.category, "");
	assert_int_equal(left_of(f, 8, 1), 800);
	/* a lapsed child category prices as adult */
	tap(f, 7, T0 + 2 * DAY, &o);
	assert_int_equal(o.amount, 200);
	assert_int_equal(left_of(f, 7, 1), 700);
	journal_ok(f, 3);
}

/* Load files: `product ID stored OPERATORS NAME` next to `nride`; a balance above the
 * N-ride limit only for a stored-value product. */
static void test_load_file(void **state)
{
	struct tu_term *f = *state;
	const char *bin = tu_bin();
	kp_store *s = NULL;
	struct kp_entitlement e;
	uint8_t key[KP_TOKEN_KEY_LEN], token[KP_TOKEN_LEN];
	uint8_t idm[8] = { 1, 1, 2, 3, 4, 5, 6, 7 };
	char path[400];
	int stored = 0;

	assert_int_equal(tu_sh("%s/kippuctl token-key create %s/tk >/dev/null && "
	                       "printf 'operator OP-A A\nproduct P10 nride 10 OP-A Ten rides\n"
	                       "product SV stored OP-A Scheme account\n"
	                       "entitlement 1 felica:0101020304050607 SV 50000 2026-01-01T00:00:00Z "
	                       "2027-01-01T00:00:00Z\n' > %s/l.txt && "
	                       "%s/kippuctl load %s/l.db %s/l.txt --token-key %s/tk >/dev/null",
	                       bin, f->dir, f->dir, bin, f->dir, f->dir, f->dir), 0);
	/* 50000 rides on an N-ride ticket is refused, and the file loads nothing */
	assert_int_equal(tu_sh("printf 'entitlement 2 felica:0101020304050607 P10 50000 "
	                       "2026-01-01T00:00:00Z 2027-01-01T00:00:00Z\n' > %s/l2.txt && "
	                       "%s/kippuctl load %s/l.db %s/l2.txt --token-key %s/tk 2>/dev/null; "
	                       "test $? -eq 1", f->dir, bin, f->dir, f->dir, f->dir), 0);
	assert_int_equal(tu_sh("printf 'product X stored 5 OP-A\n' > %s/l3.txt && "
	                       "%s/kippuctl load %s/l.db %s/l3.txt --token-key %s/tk 2>/dev/null; "
	                       "test $? -eq 1", f->dir, bin, f->dir, f->dir, f->dir), 0);
	snprintf(path, sizeof(path), "%s/l.db", f->dir);
	assert_int_equal(kp_store_open(&s, path), KP_OK);
	assert_int_equal(kp_store_product_stored(s, "SV", &stored), KP_OK);
	assert_int_equal(stored, 1);
	assert_int_equal(kp_store_product_stored(s, "P10", &stored), KP_OK);
	assert_int_equal(stored, 0);
	snprintf(path, sizeof(path), "%s/tk", f->dir);
	assert_int_equal(kp_token_key_load(path, key), KP_OK);
	assert_int_equal(kp_token_derive(key, "felica", idm, 8, token), 0);
	assert_int_equal(kp_store_get_entitlement(s, token, 1, &e), KP_OK);
	assert_int_equal(e.rides_left, 50000);
	assert_int_equal(kp_store_get_entitlement(s, token, 2, &e) == KP_OK, 0);
	kp_store_close(s);
}

/* kp_discount_apply: adult * percent / 100 rounded exactly to a multiple of unit. */
static void test_discount_apply(void **state)
{
	static const struct { int64_t adult; int percent; enum kp_rounding r; int64_t unit, want; }
	v[] = {
		{ 210, 50, KP_ROUND_DOWN, 10, 100 },       /* 105 -> 100 */
		{ 210, 50, KP_ROUND_UP, 10, 110 },         /* 105 -> 110 */
		{ 210, 50, KP_ROUND_NEAREST, 1, 105 },     /* exact */
		{ 210, 50, KP_ROUND_NEAREST, 10, 110 },    /* 105: a half rounds up */
		{ 210, 30, KP_ROUND_NEAREST, 10, 60 },     /* 63 -> 60 */
		{ 210, 100, KP_ROUND_DOWN, 1, 210 },
		{ 210, 0, KP_ROUND_UP, 10, 0 },
		{ 205, 100, KP_ROUND_UP, 10, 205 },        /* never above the adult fare */
		{ 199, 50, KP_ROUND_DOWN, 1, 99 },         /* 99.5 */
		{ 199, 50, KP_ROUND_UP, 1, 100 },
		{ 1000000000000LL, 33, KP_ROUND_NEAREST, 100000, 330000000000LL },
		{ -1, 50, KP_ROUND_DOWN, 1, -1 },
		{ 210, 101, KP_ROUND_DOWN, 1, -1 },
		{ 210, 50, KP_ROUND_DOWN, 0, -1 },
	};

	for (size_t i = 0; i < sizeof(v) / sizeof(v[0]); i++) {
		struct kp_discount d = { v[i].percent, v[i].r, v[i].unit };

		if (kp_discount_apply(v[i].adult, &d) != v[i].want)
			fail_msg("vector %zu: %lld", i, (long long)kp_discount_apply(v[i].adult, &d));
	}
}

/* A card holding a category that the feed does not price pays the operator's discount
 * on the adult fare; one the feed prices itself pays the feed's price. */
static void elig(struct tu_term *f, uint8_t card, const char *cat, int64_t until)
{
	uint8_t token[KP_TOKEN_LEN];

	tu_term_token(f, card, token);
	assert_int_equal(kp_store_put_eligibility(f->s, token, cat, T0 - DAY, until, NULL), KP_OK);
}

static void rule(struct tu_term *f, const char *op, const char *cat, int percent, enum kp_rounding r,
                 int64_t unit)
{
	struct kp_discount d = { percent, r, unit };

	assert_int_equal(kp_store_put_discount(f->s, op, cat, &d), KP_OK);
}

static void charged(struct tu_term *f, uint8_t card, int64_t now, int64_t amount, const char *cat)
{
	struct kp_tap_outcome o;
	struct rec_check c = { 0 };

	tap(f, card, now, &o);
	assert_int_equal(o.kind, KP_TAP_ACCEPTED);
	assert_int_equal(o.amount, amount);
	assert_string_equal(o.category, cat);
	c.seq = o.seq;
	kp_journal_foreach(f->s, find_rec, &c);
	assert_true(c.found);
	assert_int_equal(c.rec.amount, amount);
	assert_string_equal(c.rec.category, cat);
}

static void test_discount_tap(void **state)
{
	struct tu_term *f = *state;
	char dir[300];

	/* 210 flat; the feed prices "senior" (150) itself, nothing else */
	snprintf(dir, sizeof(dir), "%s/f210", f->dir);
	TU_WRITE_FILES(dir,
		{ "stops.txt", "stop_id,stop_name,stop_lat,stop_lon,zone_id\n"
		  "S1,One,36.1,139.3,S1\n" },
		{ "fare_attributes.txt", "fare_id,price,currency_type,payment_method,transfers\n"
		  "F210,210,JPY,0,0\n" },
		{ "fare_rules.txt", "fare_id,route_id,origin_id,destination_id\nF210,,,\n" },
		{ "fare_rider_categories.txt", "fare_id,rider_category_id,currency_type,price\n"
		  "F210,senior,JPY,150\n" });
	import(f, dir, "f210");
	snprintf(f->cfg.fare_feed, sizeof(f->cfg.fare_feed), "f210");
	snprintf(f->cfg.stop, sizeof(f->cfg.stop), "S1");
	tu_term_engine(f);

	rule(f, "OP-A", "child", 50, KP_ROUND_DOWN, 10);
	rule(f, "OP-A", "senior", 0, KP_ROUND_DOWN, 1);     /* the feed's 150 wins */
	rule(f, "OP-A", "free", 0, KP_ROUND_DOWN, 1);
	rule(f, "OP-A", "full", 100, KP_ROUND_UP, 10);
	rule(f, "OP-C", "resident", 10, KP_ROUND_DOWN, 1);  /* another operator's rule */
	for (uint8_t card = 20; card <= 26; card++)
		put_ent(f, card, 1, "SV", 1000);
	elig(f, 20, "child", T0 + DAY);
	charged(f, 20, T0, 100, "child");                    /* 105 down to 10 */
	assert_int_equal(left_of(f, 20, 1), 900);
	rule(f, "OP-A", "child", 50, KP_ROUND_UP, 10);
	charged(f, 20, T0 + 2 * MIN, 110, "child");          /* 105 up to 10 */
	rule(f, "OP-A", "child", 50, KP_ROUND_NEAREST, 1);
	charged(f, 20, T0 + 4 * MIN, 105, "child");
	assert_int_equal(left_of(f, 20, 1), 1000 - 100 - 110 - 105);
	elig(f, 21, "senior", T0 + DAY);
	charged(f, 21, T0, 150, "senior");                   /* the feed's price, not the 0% rule */
	elig(f, 22, "free", T0 + DAY);
	charged(f, 22, T0, 0, "free");
	assert_int_equal(left_of(f, 22, 1), 1000);
	elig(f, 23, "full", T0 + DAY);
	charged(f, 23, T0, 210, "full");
	elig(f, 24, "resident", T0 + DAY);
	charged(f, 24, T0, 210, "");                          /* OP-C's rule: not here */
	elig(f, 25, "child", T0 + MIN);
	charged(f, 25, T0 + 2 * MIN, 210, "");                /* a lapsed child pays adult */
	/* several categories: the cheapest for the rider (child 105 < senior 150) */
	elig(f, 26, "child", T0 + DAY);
	elig(f, 26, "senior", T0 + DAY);
	charged(f, 26, T0, 105, "child");
	/* a balance below the adult fare but above the discounted one is enough */
	put_ent(f, 27, 1, "SV", 150);
	elig(f, 27, "child", T0 + DAY);
	charged(f, 27, T0, 105, "child");
	assert_int_equal(left_of(f, 27, 1), 45);
	journal_ok(f, 10);
}

/* `discount OPERATOR CATEGORY PERCENT ROUNDING UNIT` in a load file; bad ones name the
 * line and load nothing. */
static void test_discount_load(void **state)
{
	struct tu_term *f = *state;
	static const char *const bad[] = {
		"discount OP-A child 101 down 10",
		"discount OP-A child -1 down 10",
		"discount OP-A child 50 sideways 10",
		"discount OP-A child 50 down 0",
		"discount OP-A child 50 down",
		"discount OP-A child 50 down 10 extra",
		"discount OP-A ch/ld 50 down 10",
		"discount OP-A child 5x down 10",
	};
	const char *bin = tu_bin();
	struct kp_discount d;
	kp_store *s = NULL;
	char path[400];
	int found = 0;

	assert_int_equal(tu_sh("%s/kippuctl token-key create %s/tk >/dev/null && "
	                       "printf 'operator OP-A A\ndiscount OP-A child 50 up 10\n"
	                       "discount OP-A senior 70 nearest 1  # comment\n' > %s/d.txt && "
	                       "%s/kippuctl load %s/d.db %s/d.txt --token-key %s/tk >/dev/null",
	                       bin, f->dir, f->dir, bin, f->dir, f->dir, f->dir), 0);
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		char *err;

		if (tu_sh("printf 'discount OP-A x 20 down 1\n%s\n' > %s/b.txt && "
		          "%s/kippuctl load %s/d.db %s/b.txt --token-key %s/tk 2>%s/b.err; "
		          "test $? -eq 1", bad[i], f->dir, bin, f->dir, f->dir, f->dir, f->dir) != 0)
			fail_msg("accepted: %s", bad[i]);
		snprintf(path, sizeof(path), "%s/b.err", f->dir);
		err = tu_read(path);
		assert_non_null(err);
		if (strstr(err, "b.txt:2:") == NULL)
			fail_msg("%s: no line in \"%s\"", bad[i], err);
		free(err);
	}
	snprintf(path, sizeof(path), "%s/d.db", f->dir);
	assert_int_equal(kp_store_open(&s, path), KP_OK);
	assert_int_equal(kp_store_discount(s, "OP-A", "child", &d, &found), KP_OK);
	assert_int_equal(found, 1);
	assert_int_equal(d.percent, 50);
	assert_int_equal(d.rounding, KP_ROUND_UP);
	assert_int_equal(d.unit, 10);
	assert_int_equal(kp_store_discount(s, "OP-A", "senior", &d, &found), KP_OK);
	assert_int_equal(found, 1);
	assert_int_equal(d.percent, 70);
	assert_int_equal(d.rounding, KP_ROUND_NEAREST);
	assert_int_equal(d.unit, 1);
	assert_int_equal(kp_store_discount(s, "OP-A", "x", &d, &found), KP_OK);
	assert_int_equal(found, 0);                           /* the failed files loaded nothing */
	assert_int_equal(kp_store_discount(s, "OP-C", "child", &d, &found), KP_OK);
	assert_int_equal(found, 0);
	kp_store_close(s);
}

/* The tests below run between setup and tu_term_teardown unless their row names others. */
#define FX_TEST(test) cmocka_unit_test_setup_teardown(test, setup, tu_term_teardown)

int main(void)
{
	const struct CMUnitTest tests[] = {
		FX_TEST(test_schema),
		FX_TEST(test_charge_flat_fare),
		FX_TEST(test_insufficient_balance),
		FX_TEST(test_nride_before_stored),
		FX_TEST(test_fare_unknown),
		FX_TEST(test_child_category),
		FX_TEST(test_load_file),
		cmocka_unit_test(test_discount_apply),
		FX_TEST(test_discount_tap),
		FX_TEST(test_discount_load),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
