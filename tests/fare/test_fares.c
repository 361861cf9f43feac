/* SPDX-License-Identifier: Apache-2.0 */
/* Fares from GTFS: every real feed in ../shared/data/gtfs imports and prices published fares;
 * a crafted mini-feed (BOM, CRLF, quoted fields) exercises v1 and v2 matching; each
 * malformed file is refused with file:line: field and leaves the previous import intact. */
#include <dirent.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>
#include <sys/stat.h>

#include <cmocka.h>

#include "kp_terminal.h"
#include "testutil.h"

struct fx {
	char dir[256];
	char db[300];
	kp_store *s;
	int warnings;
};

static int setup(void **state)
{
	struct fx *f = calloc(1, sizeof(*f));

	tu_tmpdir(f->dir, sizeof(f->dir));
	snprintf(f->db, sizeof(f->db), "%s/t.db", f->dir);
	assert_int_equal(kp_store_open(&f->s, f->db), KP_OK);
	*state = f;
	return 0;
}

static int teardown(void **state)
{
	struct fx *f = *state;

	kp_store_close(f->s);
	tu_rmdir(f->dir);
	free(f);
	return 0;
}

static void count_warning(void *arg, const char *msg)
{
	(void)msg;
	((struct fx *)arg)->warnings++;
}

static int import_as(struct fx *f, const char *dir, const char *feed, char *err, size_t cap)
{
	struct kp_fare_import_opts o = { feed, count_warning, f };

	return kp_fares_import(f->s, dir, &o, NULL, err, cap);
}

/* ---- money ---- */

static void test_money(void **state)
{
	static const struct { const char *in; int digits, neg, rc; int64_t out; } v[] = {
		{ "2.50", 2, 0, KP_OK, 250 },   { "3", 2, 0, KP_OK, 300 },
		{ "0.5", 2, 0, KP_OK, 50 },     { "0.25", 2, 0, KP_OK, 25 },
		{ "88.20", 2, 0, KP_OK, 8820 }, { "210", 0, 0, KP_OK, 210 },
		{ "210.", 0, 0, KP_OK, 210 },   { ".5", 2, 0, KP_OK, 50 },
		{ "-0.80", 2, 1, KP_OK, -80 },  { "1.234", 3, 0, KP_OK, 1234 },
		{ "2.505", 2, 0, KP_E_PARSE, 0 }, { "200.5", 0, 0, KP_E_PARSE, 0 },
		{ "-1", 2, 0, KP_E_PARSE, 0 },  { "", 2, 0, KP_E_PARSE, 0 },
		{ ".", 2, 0, KP_E_PARSE, 0 },   { "1.2.3", 2, 0, KP_E_PARSE, 0 },
		{ "1e3", 2, 0, KP_E_PARSE, 0 }, { " 1", 2, 0, KP_E_PARSE, 0 },
		{ "99999999999999999999", 0, 0, KP_E_PARSE, 0 },
	};
	int64_t out;

	(void)state;
	for (size_t i = 0; i < sizeof(v) / sizeof(v[0]); i++) {
		out = -12345;
		assert_int_equal(kp_money_parse(v[i].in, v[i].digits, v[i].neg, &out), v[i].rc);
		if (v[i].rc == KP_OK)
			assert_int_equal(out, v[i].out);
	}
	assert_int_equal(kp_currency_digits("JPY"), 0);
	assert_int_equal(kp_currency_digits("USD"), 2);
	assert_int_equal(kp_currency_digits("CAD"), 2);
	assert_int_equal(kp_currency_digits("PLN"), 2);
	assert_int_equal(kp_currency_digits("KWD"), 3);
	assert_int_equal(kp_currency_digits("XYZ"), -1);
}

/* ---- the real feeds ---- */

static void test_real_feeds_import(void **state)
{
	struct fx *f = *state;
	const char *root = tu_gtfs_dir();
	char path[1024], err[KP_FARE_MSG_MAX];
	struct dirent *de;
	DIR *d = opendir(root);
	int n = 0;

	assert_non_null(d);
	while ((de = readdir(d)) != NULL) {
		if (de->d_name[0] == '.')
			continue;
		snprintf(path, sizeof(path), "%s/%s", root, de->d_name);
		struct stat sb;

		if (stat(path, &sb) != 0 || !S_ISDIR(sb.st_mode))
			continue;
		if (import_as(f, path, NULL, err, sizeof(err)) != KP_OK)
			fail_msg("%s: %s", de->d_name, err);
		n++;
	}
	closedir(d);
	assert_true(n >= 15);
	/* A second import of the largest feed replaces its rows rather than adding to them. */
	int64_t before, after;

	assert_int_equal(kp_store_count(f->s, "fare_rules", &before), KP_OK);
	snprintf(path, sizeof(path), "%s/jp-donanbus-muroran-zone", root);
	assert_int_equal(import_as(f, path, NULL, err, sizeof(err)), KP_OK);
	assert_int_equal(kp_store_count(f->s, "fare_rules", &after), KP_OK);
	assert_int_equal(before, after);
}

struct real_case {
	const char *feed, *route, *from, *to, *from_zone, *to_zone;
	int32_t date, time_s;
	const char *cat;
	int pay;
	enum kp_fare_model model;
	int rc;
	int64_t amount;
	const char *currency, *fare;
};

/* Published fares, read from the feeds' own files. */
static const struct real_case real[] = {
	/* MLIT sample (Rinko Bus): 川崎駅西口59番のりば -> 南幸町二丁目１番のりば, FA_190 */
	{ "mlit-sample-rinko", "21000-0", "1510-59", "1530-01", 0, 0, 0, 0, 0, -1, 0, KP_OK,
	  190, "JPY", "FA_190" },
	/* same feed: the 川56 loop is flat inside zone Z_210 (51番 -> 56番のりば) */
	{ "mlit-sample-rinko", "25000-1", "1510-51", "1510-56", 0, 0, 0, 0, 0, -1, 0, KP_OK,
	  210, "JPY", "F_210" },
	/* Kumagaya ゆうゆうバス: one all-blank rule, flat 200 yen on any route */
	{ "kumagaya-yuyubus", "anything", 0, 0, 0, 0, 0, 0, 0, -1, 0, KP_OK, 200, "JPY", "JPY_200" },
	/* Donan Bus (Muroran): 工大 -> 高砂5丁目 on route 100310 is k_210 ... */
	{ "jp-donanbus-muroran-zone", "100310", "0391_A", "0384_A", 0, 0, 0, 0, 0, -1, 0, KP_OK,
	  210, "JPY", "k_210" },
	/* ... and 110 yen for a child (fare_rider_categories.txt, category 2) */
	{ "jp-donanbus-muroran-zone", "100310", "0391_A", "0384_A", 0, 0, 0, 0, "2", -1, 0, KP_OK,
	  110, "JPY", "k_210" },
	/* Aomori ねぶたん号: 三内丸山遺跡前 -> 県立美術館前, 300 yen */
	{ "jp-aomori-nebutan-od", "N1", "1_01", "2_01", 0, 0, 0, 0, 0, -1, 0, KP_OK, 300, "JPY",
	  "300_00" },
	/* Okinawa airport shuttle: 備瀬フクギ並木入口 -> 本部港, 400 yen paid on board */
	{ "jp-okinawa-airport-shuttle-od", "APL-Rapid", 0, 0, "OAS17_01", "OAS12_02", 0, 0, 0, 0,
	  0, KP_OK, 400, "JPY", "400_00" },
	/* Uenomura shared taxi: 上野村ふれあい館 -> 下仁田厚生病院前, 400 yen */
	{ "jp-uenomura-shared-taxi-od", "R000", 0, 0, "S00001AGC8000020103667T000",
	  "S00002AGC8000020103667T000", 0, 0, 0, -1, 0, KP_OK, 400, "JPY", "K400" },
	/* Toyama まいどはやバス: flat 100 yen by route */
	{ "jp-toyama-maidohaya-flat", "1", 0, 0, 0, 0, 0, 0, 0, -1, 0, KP_OK, 100, "JPY",
	  "均一運賃_00" },
	/* Uozu: flat 1000 yen, paid before boarding only */
	{ "jp-uozu-omotenashi-flat-prepaid", "1_1", 0, 0, 0, 0, 0, 0, 0, 1, 0, KP_OK, 1000, "JPY",
	  "均一運賃_10" },
	{ "jp-uozu-omotenashi-flat-prepaid", "1_1", 0, 0, 0, 0, 0, 0, 0, 0, 0, KP_E_NOFARE, 0, 0, 0 },
	/* Zakroczym (v2): Czarna (area 1) -> stop 117 (area 2, Modlin-Twierdza): 4.00 PLN */
	{ "zakroczym-v2", "x", "100", "117", 0, 0, 0, 0, 0, -1, 0, KP_OK, 400, "PLN",
	  "single_ride_zones12_normal" },
	{ "zakroczym-v2", "x", "100", "120", 0, 0, 0, 0, 0, -1, 0, KP_OK, 500, "PLN",
	  "single_ride_zones13_normal" },
	/* Transcollines (v2, timeframe GT-2026 = service FARES-GT-2026-1, 2026-01-05..08-23):
	 * Gatineau stop F401-10 -> Pontiac stop F101-60 on network REG: 20.00 CAD */
	{ "transcollines-v2", "910", "F401-10", "F101-60", 0, 0, 20260302, 8 * 3600, 0, -1, 0,
	  KP_OK, 2000, "CAD", "PS-2000" },
	{ "transcollines-v2", "910", 0, 0, "COL", "GAT", 20260302, 8 * 3600, 0, -1, 0, KP_OK, 500,
	  "CAD", "PS-500" },
	/* after the timeframe's service ends no 2026 rule applies */
	{ "transcollines-v2", "910", 0, 0, "GAT", "PNT", 20261002, 8 * 3600, 0, -1, 0,
	  KP_E_NOFARE, 0, 0, 0 },
	/* SVRTA (v2, networks.txt + route_networks.txt; amounts written "0.5", "3") */
	{ "svrta-v1v2", "Blue", 0, 0, 0, 0, 0, 0, 0, -1, 0, KP_OK, 50, "USD", "local_adult" },
	{ "svrta-v1v2", "RaylandTripper", 0, 0, 0, 0, 0, 0, 0, -1, 0, KP_OK, 300, "USD", "rayland" },
	/* TriMet (v2, routes.network_id): adult default category 2.80, youth 1.40 */
	{ "trimet-v2-fares-only", "1", 0, 0, 0, 0, 0, 0, 0, -1, 0, KP_OK, 280, "USD",
	  "TRIMET_ADULT_SINGLE_RIDE" },
	{ "trimet-v2-fares-only", "1", 0, 0, 0, 0, 0, 0, "YOUTH", -1, 0, KP_OK, 140, "USD",
	  "TRIMET_YOUTH_SINGLE_RIDE" },
	/* Streetcar: 2.00, not the 0.80 STREETCAR_TRIMET_ADULT_TRANSFER its leg rules also list */
	{ "trimet-v2-fares-only", "193", 0, 0, 0, 0, 0, 0, 0, -1, 0, KP_OK, 200, "USD",
	  "STREETCAR_ADULT_SINGLE_RIDE" },
	/* TriMet's fares v1, side by side: zone B -> R with contains B and R is BR, 2.80 */
	{ "trimet-v2-fares-only", 0, 0, 0, "B", "R", 0, 0, 0, -1, KP_FARE_V1, KP_OK, 280, "USD",
	  "BR" },
	{ "trimet-v2-fares-only", "208", 0, 0, 0, 0, 0, 0, 0, -1, KP_FARE_V1, KP_OK, 850, "USD",
	  "AT" },
	/* Nelson streetcar: 5.00 CAD by donation */
	{ "nelson-streetcar-v2", "SC", 0, 0, 0, 0, 0, 0, 0, -1, 0, KP_OK, 500, "CAD", "donation" },
};

static void test_real_fares(void **state)
{
	struct fx *f = *state;
	const char *root = tu_gtfs_dir();
	char path[1024], err[KP_FARE_MSG_MAX];

	for (size_t i = 0; i < sizeof(real) / sizeof(real[0]); i++) {
		const struct real_case *c = &real[i];
		struct kp_fare_query q = { c->feed, c->route, c->from, c->to, c->from_zone, c->to_zone,
		                           c->date, c->time_s, c->cat, NULL, c->pay, c->model, 0 };
		struct kp_fare_result r;
		int rc;

		if (i == 0 || strcmp(c->feed, real[i - 1].feed) != 0) {
			snprintf(path, sizeof(path), "%s/%s", root, c->feed);
			if (import_as(f, path, NULL, err, sizeof(err)) != KP_OK)
				fail_msg("%s: %s", c->feed, err);
		}
		rc = kp_fare_lookup(f->s, &q, &r);
		if (rc != c->rc)
			fail_msg("case %zu (%s): rc %d, expected %d (%s)", i, c->feed, rc, c->rc,
			         kp_store_errmsg(f->s));
		if (rc != KP_OK)
			continue;
		if (r.amount != c->amount || strcmp(r.currency, c->currency) != 0 ||
		    strcmp(r.fare_id, c->fare) != 0)
			fail_msg("case %zu (%s): %lld %s %s, expected %lld %s %s", i, c->feed,
			         (long long)r.amount, r.currency, r.fare_id, (long long)c->amount,
			         c->currency, c->fare);
		assert_true(strstr(r.rule, ".txt") != NULL);
	}
}

/* ---- a crafted mini-feed: BOM, CRLF, quoted fields, v1 and v2 ---- */

struct file { const char *name, *text; };

static const struct file mini[] = {
	{ "stops.txt", "stop_id,stop_name,zone_id\nS1,One,Z1\nS2,\"Two, \"\"the\"\" second\",Z2\n"
	  "S3,Three,\n" },
	{ "routes.txt", "route_id,agency_id,route_type\r\nR1,A,3\r\nR2,A,3\r\n" },
	{ "calendar.txt", "service_id,monday,tuesday,wednesday,thursday,friday,saturday,sunday,"
	  "start_date,end_date\nWK,1,1,1,1,1,0,0,20260101,20261231\n" },
	{ "calendar_dates.txt", "service_id,date,exception_type\nWK,20260505,2\n" },
	{ "fare_attributes.txt", "\xEF\xBB\xBF" "fare_id,price,currency_type,payment_method,"
	  "transfers,transfer_duration\r\nF1,200,JPY,0,0,\r\nF2,150,JPY,0,,\r\n"
	  "\"F,3\",300,JPY,1,0,3600\r\n" },
	{ "fare_rules.txt", "fare_id,route_id,origin_id,destination_id,contains_id\n"
	  "F1,R1,Z1,Z2,\nF2,R1,Z1,Z2,\n\"F,3\",,,,\n" },
	{ "networks.txt", "network_id,network_name\nN1,\"Net, one\"\n" },
	{ "route_networks.txt", "network_id,route_id\nN1,R1\n" },
	{ "areas.txt", "area_id,area_name\nA1,\"The \"\"Old\"\" Town\"\nA2,\"Two\nlines\"\n" },
	{ "stop_areas.txt", "area_id,stop_id\nA1,S1\nA2,S2\n" },
	{ "timeframes.txt", "timeframe_group_id,start_time,end_time,service_id\n"
	  "PEAK,07:00:00,09:00:00,WK\n" },
	{ "fare_media.txt", "fare_media_id,fare_media_name,fare_media_type\ncard,IC card,2\n" },
	{ "rider_categories.txt", "rider_category_id,rider_category_name,is_default_fare_category\n"
	  "adult,Adult,1\nchild,Child,0\n" },
	{ "fare_products.txt", "fare_product_id,fare_product_name,rider_category_id,fare_media_id,"
	  "amount,currency\nP_BASE,Base,adult,,2.50,EUR\nP_BASE,Base child,child,,1.20,EUR\n"
	  "P_PEAK,Peak,adult,card,3.00,EUR\nP_CHEAP,Cheap,,,2.40,EUR\nP_XFER,Transfer,,,0.5,EUR" },
	{ "fare_leg_rules.txt", "leg_group_id,network_id,from_area_id,to_area_id,"
	  "from_timeframe_group_id,to_timeframe_group_id,fare_product_id,rule_priority\n"
	  "L_ANY,,,,,,P_BASE,0\nL_N1,N1,A1,A2,,,P_BASE,1\nL_N1,N1,A1,A2,,,P_CHEAP,1\n"
	  "L_PEAK,N1,A1,A2,PEAK,,P_PEAK,2\nL_ANY,,,,,,P_XFER,0\n" },
	{ "fare_transfer_rules.txt", "from_leg_group_id,to_leg_group_id,transfer_count,"
	  "duration_limit,duration_limit_type,fare_transfer_type,fare_product_id\n"
	  "L_N1,L_N1,1,3600,1,0,P_XFER\n" },
};

/* Writes the mini-feed into dir, with one file replaced (or removed when text is NULL). */
static void write_feed(const char *dir, const char *name, const char *text)
{
	char path[600];

	mkdir(dir, 0700);
	for (size_t i = 0; i < sizeof(mini) / sizeof(mini[0]); i++) {
		const char *t = mini[i].text;

		snprintf(path, sizeof(path), "%s/%s", dir, mini[i].name);
		if (name != NULL && strcmp(name, mini[i].name) == 0) {
			remove(path);
			if (text == NULL)
				continue;
			t = text;
		}
		tu_write(path, t);
	}
	if (name != NULL && text != NULL) {
		snprintf(path, sizeof(path), "%s/%s", dir, name);
		tu_write(path, text);
	}
}

static void expect(struct fx *f, const struct kp_fare_query *q, int rc, int64_t amount,
                   const char *fare, const char *rule)
{
	struct kp_fare_result r;
	int got = kp_fare_lookup(f->s, q, &r);

	if (got != rc)
		fail_msg("rc %d, expected %d (%s)", got, rc, kp_store_errmsg(f->s));
	if (rc != KP_OK)
		return;
	if (r.amount != amount || strcmp(r.fare_id, fare) != 0 ||
	    (rule != NULL && strcmp(r.rule, rule) != 0))
		fail_msg("%lld %s (%s), expected %lld %s (%s)", (long long)r.amount, r.fare_id, r.rule,
		         (long long)amount, fare, rule != NULL ? rule : "-");
}

/* The v1 query most cases start from: route R1 from S1 to S2, any payment method. */
static void v1_query(struct kp_fare_query *q, const char *feed)
{
	memset(q, 0, sizeof(*q));
	q->feed_id = feed;
	q->model = KP_FARE_V1;
	q->payment_method = -1;
	q->route_id = "R1";
	q->from_stop = "S1";
	q->to_stop = "S2";
}

static void test_mini_feed(void **state)
{
	struct fx *f = *state;
	char dir[300], err[KP_FARE_MSG_MAX];
	struct kp_fare_query q;
	struct kp_fare_result r;

	snprintf(dir, sizeof(dir), "%s/mini", f->dir);
	write_feed(dir, NULL, NULL);
	if (import_as(f, dir, "mini", err, sizeof(err)) != KP_OK)
		fail_msg("%s", err);
	assert_int_equal(f->warnings, 1);       /* the BOM of fare_attributes.txt */

	/* v1: the cheapest of the matching fares; "F,3" (quoted id) is the wildcard fare,
	 * paid before boarding only */
	v1_query(&q, "mini");
	expect(f, &q, KP_OK, 150, "F2", "fare_rules.txt:3");
	q.payment_method = 1;
	expect(f, &q, KP_OK, 300, "F,3", "fare_rules.txt:4");
	q.payment_method = 0;
	q.route_id = "R2";
	expect(f, &q, KP_E_NOFARE, 0, NULL, NULL);
	q.payment_method = -1;
	q.from_stop = "S9";
	expect(f, &q, KP_E_INVAL, 0, NULL, NULL);

	/* v2 (the default when the feed has fare_leg_rules): Tuesday 2026-03-03 08:00 is in
	 * PEAK, whose priority 2 beats the cheaper priority-1 product */
	memset(&q, 0, sizeof(q));
	q.feed_id = "mini";
	q.route_id = "R1";
	q.from_stop = "S1";
	q.to_stop = "S2";
	q.date = 20260303;
	q.time_s = 8 * 3600;
	expect(f, &q, KP_OK, 300, "P_PEAK", "fare_leg_rules.txt:5");
	assert_int_equal(kp_fare_lookup(f->s, &q, &r), KP_OK);
	assert_string_equal(r.currency, "EUR");
	assert_int_equal(r.minor_digits, 2);
	assert_string_equal(r.leg_group_id, "L_PEAK");
	assert_string_equal(r.rider_category, "adult");
	q.time_s = 9 * 3600;                    /* end_time is exclusive */
	expect(f, &q, KP_OK, 240, "P_CHEAP", "fare_leg_rules.txt:4");
	q.time_s = 8 * 3600;
	q.date = 20260505;                      /* calendar_dates removes the service */
	expect(f, &q, KP_OK, 240, "P_CHEAP", NULL);
	q.date = 20260307;                      /* a Saturday */
	expect(f, &q, KP_OK, 240, "P_CHEAP", NULL);
	q.date = 0;                             /* no date: no timeframe matches */
	expect(f, &q, KP_OK, 240, "P_CHEAP", NULL);
	q.date = 20260303;
	q.fare_media = "paper";                 /* P_PEAK is sold on the card only */
	expect(f, &q, KP_OK, 240, "P_CHEAP", NULL);
	q.fare_media = NULL;
	q.rider_category = "child";             /* P_BASE's child row; P_PEAK is adult only */
	expect(f, &q, KP_OK, 120, "P_BASE", "fare_leg_rules.txt:3");
	q.rider_category = NULL;
	q.route_id = "R2";                      /* not on N1: only the any-network rule */
	expect(f, &q, KP_OK, 250, "P_BASE", "fare_leg_rules.txt:2");
	q.route_id = "R1";
	q.from_stop = "S3";                     /* no area: same */
	expect(f, &q, KP_OK, 250, "P_BASE", NULL);
	q.from_stop = NULL;
	q.from_zone = "A1";                     /* an area given directly */
	expect(f, &q, KP_OK, 300, "P_PEAK", NULL);
	q.feed_id = "nosuch";
	expect(f, &q, KP_E_INVAL, 0, NULL, NULL);
}

/* Without a rule_priority column an empty field matches only values no rule names. */
static void test_v2_empty_field_exclusion(void **state)
{
	struct fx *f = *state;
	char dir[300], path[400], err[KP_FARE_MSG_MAX];
	struct kp_fare_query q;

	snprintf(dir, sizeof(dir), "%s/excl", f->dir);
	write_feed(dir, "fare_leg_rules.txt", "leg_group_id,network_id,fare_product_id\n"
	           "L_OTHER,,P_BASE\nL_N1,N1,P_CHEAP\n");
	snprintf(path, sizeof(path), "%s/fare_transfer_rules.txt", dir);
	assert_int_equal(remove(path), 0);
	if (import_as(f, dir, "excl", err, sizeof(err)) != KP_OK)
		fail_msg("%s", err);
	memset(&q, 0, sizeof(q));
	q.feed_id = "excl";
	q.route_id = "R1";                      /* on N1: the empty rule does not apply */
	expect(f, &q, KP_OK, 240, "P_CHEAP", NULL);
	q.route_id = "R2";
	expect(f, &q, KP_OK, 250, "P_BASE", NULL);
}

struct bad_case { const char *file, *text, *err; };

static const struct bad_case bad[] = {
	{ "fare_attributes.txt", "fare_id,price,payment_method,transfers\nF1,200,0,0\n",
	  "fare_attributes.txt:1: currency_type: required column missing" },
	{ "fare_rules.txt", "fare_id,route_id\nF1,R1\nF2,R1\nF9,R1\n",
	  "fare_rules.txt:4: fare_id: unknown fare \"F9\"" },
	{ "fare_rules.txt", "fare_id,route_id\nF1,R7\n", "fare_rules.txt:2: route_id: unknown route \"R7\"" },
	{ "fare_rules.txt", "fare_id,origin_id\nF1,Z9\n",
	  "fare_rules.txt:2: origin_id: unknown zone (stops.txt zone_id) \"Z9\"" },
	{ "fare_attributes.txt", "fare_id,price,currency_type,payment_method,transfers\n"
	  "F1,200,JPY,x,0\nF2,150,JPY,0,\n\"F,3\",1,JPY,0,0\n",
	  "fare_attributes.txt:2: payment_method: bad number \"x\"" },
	{ "fare_attributes.txt", "fare_id,price,currency_type,payment_method,transfers\n"
	  "F1,200,JPY,0,3\nF2,150,JPY,0,\n\"F,3\",1,JPY,0,0\n",
	  "fare_attributes.txt:2: transfers: 3 is out of range [0, 2]" },
	{ "fare_attributes.txt", "fare_id,price,currency_type,payment_method,transfers\n"
	  "F1,2x0,JPY,0,0\nF2,150,JPY,0,\n\"F,3\",1,JPY,0,0\n",
	  "fare_attributes.txt:2: price: bad amount \"2x0\" for JPY" },
	{ "fare_attributes.txt", "fare_id,price,currency_type,payment_method,transfers\n"
	  "F1,200,JPY,0,0\nF2,150,JPY,0,\nF1,1,JPY,0,0\n\"F,3\",1,JPY,0,0\n",
	  "fare_attributes.txt:4: fare_id: duplicate key \"F1\"" },
	{ "fare_attributes.txt", "fare_id,price,currency_type,payment_method,transfers\n"
	  "F1,200.5,JPY,0,0\nF2,150,JPY,0,\n\"F,3\",1,JPY,0,0\n",
	  "fare_attributes.txt:2: price: bad amount \"200.5\" for JPY (0 decimals at most" },
	{ "fare_attributes.txt", "fare_id,price,currency_type,payment_method,transfers\n"
	  "F1,2.505,USD,0,0\nF2,150,JPY,0,\n\"F,3\",1,JPY,0,0\n",
	  "fare_attributes.txt:2: price: bad amount \"2.505\" for USD (2 decimals at most" },
	{ "fare_attributes.txt", "fare_id,price,currency_type,payment_method,transfers\n"
	  "F1,200,YEN,0,0\n", "fare_attributes.txt:2: currency_type: \"YEN\" is not an ISO 4217" },
	{ "fare_rules.txt", "fare_id,route_id\nF1,R1\n\"F2,R1\n",
	  "fare_rules.txt:3: field 1: quote not closed" },
	{ "fare_rules.txt", "fare_id,route_id\nF1,R1\nF2\n", "fare_rules.txt:3: 1 fields, the header has 2" },
	{ "fare_rules.txt", "fare_id,route_id\n\"F1\"x,R1\n", "fare_rules.txt:2: field 1: text after a closing quote" },
	{ "fare_products.txt", "fare_product_id,amount,currency\nP_BASE,2.505,EUR\n",
	  "fare_products.txt:2: amount: bad amount \"2.505\" for EUR (2 decimals at most" },
	{ "fare_products.txt", "fare_product_id,rider_category_id,amount,currency\nP_BASE,senior,2,EUR\n",
	  "fare_products.txt:2: rider_category_id: unknown rider category \"senior\"" },
	{ "fare_products.txt", "fare_product_id,amount\nP_BASE,2\n",
	  "fare_products.txt:1: currency: required column missing" },
	{ "fare_leg_rules.txt", "leg_group_id,fare_product_id\nL1,P_BASE\nL2,P9\n",
	  "fare_leg_rules.txt:3: fare_product_id: unknown fare product \"P9\"" },
	{ "fare_leg_rules.txt", "leg_group_id,from_area_id,fare_product_id\nL1,A9,P_BASE\n",
	  "fare_leg_rules.txt:2: from_area_id: unknown area \"A9\"" },
	{ "fare_leg_rules.txt", "leg_group_id,network_id,fare_product_id\nL1,N9,P_BASE\n",
	  "fare_leg_rules.txt:2: network_id: unknown network \"N9\"" },
	{ "fare_leg_rules.txt", "leg_group_id,fare_product_id,rule_priority\nL1,P_BASE,high\n",
	  "fare_leg_rules.txt:2: rule_priority: bad number \"high\"" },
	{ "stop_areas.txt", "area_id,stop_id\nA1,S1\nA1,S7\n", "stop_areas.txt:3: stop_id: unknown stop \"S7\"" },
	{ "timeframes.txt", "timeframe_group_id,start_time,end_time,service_id\nPEAK,7h,09:00:00,WK\n",
	  "timeframes.txt:2: start_time: bad time \"7h\"" },
	{ "timeframes.txt", "timeframe_group_id,start_time,end_time,service_id\nPEAK,07:00:00,,WK\n",
	  "timeframes.txt:2: end_time: required when start_time is given" },
	{ "fare_transfer_rules.txt", "from_leg_group_id,to_leg_group_id,fare_transfer_type\nL_N1,L_N1,0\n",
	  "fare_transfer_rules.txt:2: transfer_count: required when from_leg_group_id equals" },
	{ "fare_transfer_rules.txt", "from_leg_group_id,to_leg_group_id,transfer_count,"
	  "fare_transfer_type\nL_N1,L_X,1,0\n",
	  "fare_transfer_rules.txt:2: to_leg_group_id: unknown leg group \"L_X\"" },
	{ "rider_categories.txt", "rider_category_id,rider_category_name,is_default_fare_category\n"
	  "adult,Adult,1\nchild,Child,1\n",
	  "rider_categories.txt:3: is_default_fare_category: a second default category" },
	{ "route_networks.txt", "network_id,route_id\nN1,R1\nN1,R1\n",
	  "route_networks.txt:3: route_id: duplicate key \"R1\"" },
};

static int no_place(void *arg, const char *stop_id, int64_t lat_e6, int64_t lon_e6)
{
	return KP_OK;
}

static void test_malformed_feeds(void **state)
{
	struct fx *f = *state;
	char good[300], dir[300], err[KP_FARE_MSG_MAX];
	struct kp_fare_query q;
	int64_t rules, products, after;

	snprintf(good, sizeof(good), "%s/good", f->dir);
	write_feed(good, NULL, NULL);
	if (import_as(f, good, "mini", err, sizeof(err)) != KP_OK)
		fail_msg("%s", err);
	assert_int_equal(kp_store_count(f->s, "fare_rules", &rules), KP_OK);
	assert_int_equal(kp_store_count(f->s, "fare_products", &products), KP_OK);
	v1_query(&q, "mini");
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		snprintf(dir, sizeof(dir), "%s/bad%zu", f->dir, i);
		write_feed(dir, bad[i].file, bad[i].text);
		err[0] = '\0';
		if (import_as(f, dir, "mini", err, sizeof(err)) != KP_E_FEED)
			fail_msg("case %zu (%s): accepted or wrong code: \"%s\"", i, bad[i].file, err);
		if (strncmp(err, bad[i].err, strlen(bad[i].err)) != 0)
			fail_msg("case %zu: \"%s\", expected \"%s...\"", i, err, bad[i].err);
		/* the previous import is intact */
		assert_int_equal(kp_store_count(f->s, "fare_rules", &after), KP_OK);
		assert_int_equal(after, rules);
		assert_int_equal(kp_store_count(f->s, "fare_products", &after), KP_OK);
		assert_int_equal(after, products);
		expect(f, &q, KP_OK, 150, "F2", NULL);
	}
	/* a NUL byte inside a field (plain and quoted) would cut the value: refused with its line */
	{
		static const char nul_plain[] = "fare_id,route_id\nF1,R1\nF2,R\0X\n";
		static const char nul_quoted[] = "fare_id,route_id\nF1,R1\n\"F\0\",R1\n";
		const struct { const char *bytes; size_t len; const char *want; } nul[] = {
			{ nul_plain, sizeof(nul_plain) - 1,
			  "fare_rules.txt:3: field 2: a NUL byte (0x00) inside the field" },
			{ nul_quoted, sizeof(nul_quoted) - 1,
			  "fare_rules.txt:3: field 1: a NUL byte (0x00) inside the field" },
		};

		for (size_t i = 0; i < 2; i++) {
			char path[700];
			FILE *fp;

			snprintf(dir, sizeof(dir), "%s/nul%zu", f->dir, i);
			write_feed(dir, NULL, NULL);
			snprintf(path, sizeof(path), "%s/fare_rules.txt", dir);
			fp = fopen(path, "wb");
			assert_non_null(fp);
			assert_int_equal(fwrite(nul[i].bytes, 1, nul[i].len, fp), nul[i].len);
			assert_int_equal(fclose(fp), 0);
			err[0] = '\0';
			assert_int_equal(import_as(f, dir, "mini", err, sizeof(err)), KP_E_FEED);
			assert_string_equal(err, nul[i].want);
			expect(f, &q, KP_OK, 150, "F2", NULL);
		}
	}
	/* a folder without fare files, and one that does not exist */
	snprintf(dir, sizeof(dir), "%s/empty", f->dir);
	mkdir(dir, 0700);
	assert_int_equal(import_as(f, dir, "mini", err, sizeof(err)), KP_E_FEED);
	assert_non_null(strstr(err, "no fare files"));
	expect(f, &q, KP_OK, 150, "F2", NULL);
	assert_int_equal(import_as(f, good, "bad id", err, sizeof(err)), KP_E_INVAL);
	/* stops.txt with a header refused, read for its stops' places: the reason, and nothing
	 * left allocated (it leaked under ASan before; found by tests/fuzz/fuzz_gtfs, whose
	 * corpus keeps the input) */
	snprintf(dir, sizeof(dir), "%s/dup-stops", f->dir);
	write_feed(dir, "stops.txt", "stop_id,stop_lat,stop_id\nS1,35,S1\n");
	assert_int_equal(kp_gtfs_stop_places(dir, no_place, NULL, err, sizeof(err)), KP_E_FEED);
	assert_non_null(strstr(err, "stop_id: column appears twice"));
}

/* Re-importing a feed replaces its rows; other feeds are untouched. */
static void test_reimport_replaces(void **state)
{
	struct fx *f = *state;
	char dir[300], err[KP_FARE_MSG_MAX];
	struct kp_fare_query q;
	int64_t n1, n2;

	snprintf(dir, sizeof(dir), "%s/v1", f->dir);
	write_feed(dir, NULL, NULL);
	assert_int_equal(import_as(f, dir, "a", err, sizeof(err)), KP_OK);
	assert_int_equal(import_as(f, dir, "b", err, sizeof(err)), KP_OK);
	assert_int_equal(kp_store_count(f->s, "fare_rules", &n1), KP_OK);
	write_feed(dir, "fare_attributes.txt", "fare_id,price,currency_type,payment_method,"
	           "transfers\nF1,200,JPY,0,0\nF2,170,JPY,0,\n\"F,3\",300,JPY,1,0\n");
	assert_int_equal(import_as(f, dir, "a", err, sizeof(err)), KP_OK);
	assert_int_equal(kp_store_count(f->s, "fare_rules", &n2), KP_OK);
	assert_int_equal(n1, n2);
	v1_query(&q, "a");
	expect(f, &q, KP_OK, 170, "F2", NULL);
	q.feed_id = "b";
	expect(f, &q, KP_OK, 150, "F2", NULL);
}

/* The tests below run between setup and teardown unless their row names others. */
#define FX_TEST(test) cmocka_unit_test_setup_teardown(test, setup, teardown)

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_money),
		FX_TEST(test_real_feeds_import),
		FX_TEST(test_real_fares),
		FX_TEST(test_mini_feed),
		FX_TEST(test_v2_empty_field_exclusion),
		FX_TEST(test_malformed_feeds),
		FX_TEST(test_reimport_replaces),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
