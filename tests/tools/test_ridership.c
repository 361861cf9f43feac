/* SPDX-License-Identifier: Apache-2.0 */
/* Ridership analytics (README, "Ridership analytics"): each measure against a hand-counted day
 * of crafted records ingested into a real backend store, the inference and its accuracy on
 * hidden tap-offs, k-suppression and the subtraction attack, the pseudonym's rotation, the
 * opt-out, and the TIDES files against the field table (backend-sync/analytics/tides_fields.csv).
 *
 * The day (2026-11-26, service day ending 04:00 JST), k = 1 unless said:
 *   cards 1-12: R1 (OP-A, tap-on/off) A1 08:0c -> A3 08:2c, then R2 (OP-B, flat) at B1 08:3c
 *               (a transfer); cards 1-3 residents (My Number linked), 4-12 adults
 *   card 13:    R2 at B2 10:00, its only trip (unlinked)
 *   card 14:    R1 A2 09:00 -> A4 09:30, its only trip; and R2 at B1 on 2026-12-01 10:00
 * Stops lie on one line of latitude 36, 0.01 degree (about 900 m) apart: A1 A2 A3 A4 at 139.00,
 * .01, .02, .03; B1 10 m from A3, B2 10 m from A1. Hand-counted: R1's tap-on-only trips none;
 * R2's 12 trips from B1 end where the day began (A1), the R2 stop nearest to it being B2. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include <cmocka.h>

#include "kp_analytics.h"
#include "kp_backend.h"
#include "kp_db.h"
#include "schema_pg.h"
#include "kp_terminal.h"
#include "testutil.h"

#define MIN_MS 60000LL
#define DAY_MS 86400000LL
/* 2026-11-26T00:00+09:00 */
#define D0 1795618800000LL

struct term { const char *id; uint8_t prev[KP_SHA256_LEN]; uint64_t seq; };
static struct term terms[2] = { { "T1", { 0 }, 0 }, { "T2", { 0 }, 0 } };
static char db_path[PATH_MAX], gtfs_dir[PATH_MAX], secret[PATH_MAX];
/* A GTFS-JP feed as published (Kumagaya's Yuyu bus), read in place. */
#define JP_FEED "../shared/data/gtfs/kumagaya-yuyubus"

static void put(kp_bstore *s, int t, int c, int64_t at, const char *event, const char *stop,
                const char *product, const char *category, int resident)
{
	struct term *tm = &terms[t];
	struct kp_ingest in;
	struct kp_record r;
	uint8_t *payload = NULL;
	size_t len = 0;
	uint64_t acked = 0, refused = 0;
	char reason[128];

	memset(&r, 0, sizeof(r));
	snprintf(r.terminal, sizeof(r.terminal), "%s", tm->id);
	r.seq = ++tm->seq;
	r.time_ms = at;
	strcpy(r.kind, "tap");
	strcpy(r.operator_id, t == 0 ? "OP-A" : "OP-B");
	/* the GTFS-JP feed's stop ids are on its route 000001 */
	strcpy(r.route, strncmp(stop, "0000", 4) == 0 ? "000001" : t == 0 ? "R1" : "R2");
	snprintf(r.stop, sizeof(r.stop), "%s", stop);
	r.has_token = 1;
	memset(r.token, c, KP_TOKEN_LEN);
	snprintf(r.product, sizeof(r.product), "%s", product);
	r.amount = t == 1 ? 200 : 0;
	strcpy(r.result, "accepted");
	strcpy(r.reason, "ok");
	snprintf(r.event, sizeof(r.event), "%s", event);
	snprintf(r.category, sizeof(r.category), "%s", category);
	if (resident) {
		r.has_via = 1;
		memset(r.via, 0x80 + c, KP_TOKEN_LEN);
	}
	if (c == 5 && t == 1)
		strcpy(r.fare, "cap day adult");
	memcpy(r.prev, tm->prev, KP_SHA256_LEN);
	assert_int_equal(kp_record_encode(&r, &payload, &len), KP_RECORD_OK);
	memset(&in, 0, sizeof(in));
	in.payload = in.cose = payload;
	in.payload_len = in.cose_len = len;
	in.sig_ok = 1;
	in.rec = r;
	assert_int_equal(kp_sha256(payload, len, in.hash), 0);
	memcpy(tm->prev, in.hash, KP_SHA256_LEN);
	assert_int_equal(kp_bstore_ingest(s, tm->id, &in, 1, D0 + 40 * DAY_MS, &acked, &refused,
	                                  reason, sizeof(reason)), KP_BE_OK);
	assert_int_equal(refused, 0);
	free(payload);
}

static void config(kp_bstore *s)
{
	assert_int_equal(kp_bstore_put_operator(s, "OP-A", "Bus A"), KP_BE_OK);
	assert_int_equal(kp_bstore_put_operator(s, "OP-B", "Bus B"), KP_BE_OK);
	for (int i = 0; i < 2; i++) {
		uint64_t acked = 0;

		assert_int_equal(kp_bstore_terminal_add(s, terms[i].id, NULL, D0 - DAY_MS, NULL),
		                 KP_BE_OK);
		assert_int_equal(kp_bstore_terminal_seen(s, terms[i].id, (const uint8_t *)"x", 1,
		                                         D0 - DAY_MS, &acked), KP_BE_OK);
	}
}

static void products(void)
{
	/* the kinds the analytics read from the products table */
	char cmd[PATH_MAX + 400];

	snprintf(cmd, sizeof(cmd), "sqlite3 '%s' \"INSERT INTO products(id, name, rides,"
	         " product_kind) VALUES ('P1D', 'Day pass', 1, 'period'), ('SV', 'Stored value', 1,"
	         " 'stored')\"", db_path);
	assert_int_equal(system(cmd), 0);
}

static int setup(void **state)
{
	kp_bstore *s = NULL;
	(void)state;

	tu_tmpdir(tu_scratch, sizeof(tu_scratch));
	snprintf(db_path, sizeof(db_path), "%s/backend.db", tu_scratch);
	snprintf(gtfs_dir, sizeof(gtfs_dir), "%s/gtfs", tu_scratch);
	snprintf(secret, sizeof(secret), "%s/secret", tu_scratch);
	TU_WRITE_FILES(gtfs_dir,
		{ "stops.txt", "\xEF\xBB\xBFstop_id,stop_name,stop_lat,stop_lon\n"
		  "A1,\"Ekimae, North\",36.0,139.0\nA2,Shiyakusho,36.0,139.01\n"
		  "A3,\xe5\xb8\x82\xe5\xbd\xb9\xe6\x89\x80,36.0,139.02\nA4,Byoin,36.0,139.03\n"
		  "B1,B One,36.0,139.0201\nB2,B Two,36.0,139.0001\n" },
		{ "routes.txt", "route_id,agency_id,route_short_name,route_long_name,route_type\n"
		  "R1,A,1,Line One,3\nR2,B,,Line Two,3\n" },
		{ "trips.txt", "route_id,service_id,trip_id,direction_id\n"
		  "R1,D,short,0\nR1,D,long,0\nR1,D,back,1\n" },
		{ "stop_times.txt", "trip_id,arrival_time,departure_time,stop_id,stop_sequence\n"
		  "long,08:00:00,08:00:00,A1,1\nlong,08:05:00,08:05:00,A2,2\n"
		  "long,08:15:00,08:15:00,A4,10\nlong,08:10:00,08:10:00,A3,3\n"
		  "short,08:00:00,08:00:00,A1,1\nshort,08:05:00,08:05:00,A2,2\n"
		  "back,09:00:00,09:00:00,A4,1\nback,09:10:00,09:10:00,A1,2\n" });
	tu_write(secret, "0123456789abcdef0123456789abcdef");
	if (kp_bstore_open(&s, db_path) != KP_BE_OK)
		return -1;
	config(s);
	for (int c = 1; c <= 12; c++) {
		const char *cat = c <= 3 ? "resident" : "adult";
		int64_t t0 = D0 + 8 * 3600000LL + c * MIN_MS;

		put(s, 0, c, t0, "tap_on", "A1", "P1D", cat, c <= 3);
		put(s, 0, c, t0 + 20 * MIN_MS, "tap_off", "A3", "P1D", cat, c <= 3);
		put(s, 1, c, t0 + 30 * MIN_MS, "tap", "B1", "SV", cat, c <= 3);
	}
	put(s, 1, 13, D0 + 10 * 3600000LL, "tap", "B2", "", "", 0);
	put(s, 0, 14, D0 + 9 * 3600000LL, "tap_on", "A2", "", "", 0);
	put(s, 0, 14, D0 + 9 * 3600000LL + 30 * MIN_MS, "tap_off", "A4", "", "", 0);
	put(s, 1, 14, D0 + 5 * DAY_MS + 10 * 3600000LL, "tap", "B1", "", "", 0);
	put(s, 0, 15, D0 + DAY_MS + 9 * 3600000LL, "tap", "000001_001", "", "", 0);
	kp_bstore_close(s);
	products();
	return 0;
}

static int teardown(void **state)
{
	(void)state;
	return tu_rmdir(tu_scratch);
}

/* A run over the day (or to `to`) into OUT/name with k and an opt-out list (NULL: none). */
static struct kp_an_summary run(const char *name, int k, const char *opt_out, const char *to)
{
	struct kp_an_opts o;
	struct kp_an_summary s;
	char err[512], out[PATH_MAX];

	snprintf(out, sizeof(out), "%s/%s", tu_scratch, name);
	memset(&o, 0, sizeof(o));
	o.db = db_path;
	assert_int_equal(kp_an_parse_date("2026-11-26", &o.from_day), KP_AN_OK);
	assert_int_equal(kp_an_parse_date(to != NULL ? to : "2026-11-26", &o.to_day), KP_AN_OK);
	o.gtfs_dir = gtfs_dir;
	o.k = k;
	o.secret_path = secret;
	o.opt_out_path = opt_out;
	o.out_dir = out;
	if (kp_an_run(&o, &s, err, sizeof(err)) != KP_AN_OK)
		fail_msg("run: %s", err);
	return s;
}

/* The row of OUT/name/file.csv whose first fields are `key` (comma-joined), with the rest after
 * it in rest (cap bytes); 0 if found. */
static int row(const char *name, const char *file, const char *key, char *rest, size_t cap)
{
	char path[PATH_MAX], line[1024];
	size_t n = strlen(key);
	FILE *fp;
	int found = -1;

	snprintf(path, sizeof(path), "%s/%s/%s", tu_scratch, name, file);
	fp = fopen(path, "r");
	assert_non_null(fp);
	while (fgets(line, sizeof(line), fp) != NULL) {
		if (strncmp(line, key, n) == 0 && line[n] == ',') {
			line[strcspn(line, "\n")] = '\0';
			snprintf(rest, cap, "%s", line + n + 1);
			found = 0;
			break;
		}
	}
	fclose(fp);
	return found;
}

/* expect NAME FILE KEY REST: the row's values after the key, exactly. */
static void expect(const char *name, const char *file, const char *key, const char *want)
{
	char rest[512];

	if (row(name, file, key, rest, sizeof(rest)) != 0)
		fail_msg("%s %s: no row %s", name, file, key);
	if (strcmp(rest, want) != 0)
		fail_msg("%s %s %s: got %s, want %s", name, file, key, rest, want);
}

/* The hand-counted table: every measure of the day with k = 1 (nothing suppressed). */
static void test_measures(void **state)
{
	struct kp_an_summary s = run("k1", 1, NULL, NULL);
	static const char *const want[][3] = {
		/* file, key, values (boardings, alightings, inferred..., riders, suppressed) */
		{ "stops.csv", "OP-A,R1,1,A1,\"Ekimae, North\"", "12,0,0,12,0" },
		{ "stops.csv", "OP-A,R1,1,A3,\xe5\xb8\x82\xe5\xbd\xb9\xe6\x89\x80", "0,12,0,12,0" },
		{ "stops.csv", "OP-A,R1,1,A2,Shiyakusho", "1,0,0,1,0" },
		{ "stops.csv", "OP-A,R1,1,A4,Byoin", "0,1,0,1,0" },
		{ "stops.csv", "OP-B,R2,Line Two,B1,B One", "12,0,0,12,0" },
		{ "stops.csv", "OP-B,R2,Line Two,B2,B Two", "1,0,12,13,0" },
		{ "hours.csv", "OP-A,R1,08", "12,12,12,0" },
		{ "hours.csv", "OP-A,R1,09", "1,1,1,0" },
		{ "hours.csv", "OP-B,R2,08", "12,0,12,0" },
		{ "hours.csv", "OP-B,R2,10", "1,0,1,0" },
		{ "days.csv", "2026-11-26", "26,13,14,0" },
		{ "categories.csv", "resident,yes", "6,3,0" },
		{ "categories.csv", "adult,no", "18,9,0" },
		{ "categories.csv", "none,no", "2,2,0" },
		{ "product_kinds.csv", "period", "12,12,0" },
		{ "product_kinds.csv", "stored", "12,12,0" },
		{ "product_kinds.csv", "none", "2,2,0" },
		{ "transfers.csv", "OP-A,R1,OP-B,R2", "12,12,0" },
		{ "od_routes.csv", "OP-A,R1,A1,A3,observed", "12,12,0" },
		{ "od_routes.csv", "OP-A,R1,A2,A4,observed", "1,1,0" },
		{ "od_routes.csv", "OP-B,R2,B1,B2,inferred", "12,12,0" },
		{ "od_routes.csv", "OP-B,R2,B2,,unlinked", "1,1,0" },
		{ "od_journeys.csv", "OP-A:A1,OP-B:B2,inferred", "12,12,0" },
		{ "od_journeys.csv", "OP-A:A2,OP-A:A4,observed", "1,1,0" },
		{ "od_journeys.csv", "OP-B:B2,,unlinked", "1,1,0" },
		{ "station_activities.csv", "2026-11-26,A1,08:00:00,08:59:59", "12,0,12,0" },
		{ "tides/station_activities.csv", "2026-11-26,A3,08:00:00,08:59:59", "hour,0,12" },
		/* the pattern of R1 direction 0 is its longest trip, A1 A2 A3 A4 (stop_sequence
		 * 1, 2, 3, 10 out of file order): 12 ride A1-A3, card 14 A2-A4 */
		{ "load_profiles.csv", "OP-A,R1,0,001,A1,A2", "12,12,0" },
		{ "load_profiles.csv", "OP-A,R1,0,002,A2,A3", "13,13,0" },
		{ "load_profiles.csv", "OP-A,R1,0,003,A3,A4", "1,1,0" },
	};
	(void)state;
	for (size_t i = 0; i < sizeof(want) / sizeof(want[0]); i++)
		expect("k1", want[i][0], want[i][1], want[i][2]);
	assert_int_equal(s.records, 39);
	assert_int_equal(s.cards, 14);
	assert_int_equal(s.boardings, 26);
	assert_int_equal(s.alightings, 13);
	/* R2's 13 trips tap on only: 12 inferred (B2), card 13's alone unlinked */
	assert_int_equal(s.tap_on_only, 13);
	assert_int_equal(s.inferred, 12);
	assert_int_equal(s.unlinked, 1);
	/* R1's 13 tap-offs hidden: 12 inferred (A3, nearest B1) and right; card 14's unlinked */
	assert_int_equal(s.acc_tested, 13);
	assert_int_equal(s.acc_inferred, 12);
	assert_int_equal(s.acc_correct, 12);
	assert_int_equal(s.suppressed, 0);
}

/* k = 10: A2 and A4 (one rider each) suppressed, and with them the smallest other cell, so
 * the total minus the published cells is never one small cell alone. */
static void test_k_suppression(void **state)
{
	struct kp_an_summary s = run("k10", 10, NULL, NULL);
	char rest[256];
	(void)state;
	expect("k10", "stops.csv", "OP-A,R1,1,A2,Shiyakusho", ",,,,1");
	expect("k10", "stops.csv", "OP-A,R1,1,A4,Byoin", ",,,,1");
	/* the subtraction attack: 26 boardings in all (days.csv) minus the published stops' 13
	 * leaves 13, A2's 1 and A1's 12 together: the complementary cell hides A2's */
	expect("k10", "stops.csv", "OP-A,R1,1,A1,\"Ekimae, North\"", ",,,,1");
	expect("k10", "stops.csv", "OP-B,R2,Line Two,B1,B One", "12,0,0,12,0");
	expect("k10", "stops.csv", "OP-B,R2,Line Two,B2,B Two", "1,0,12,13,0");
	expect("k10", "days.csv", "2026-11-26", "26,13,14,0");
	/* categories: none,no (2 riders) and resident,yes (3) are below 10; 5 together: adult,no
	 * joins them, the whole table suppressed rather than one cell recoverable */
	expect("k10", "categories.csv", "none,no", ",,1");
	expect("k10", "categories.csv", "resident,yes", ",,1");
	expect("k10", "categories.csv", "adult,no", ",,1");
	/* TIDES: a suppressed stop-hour has no counts */
	expect("k10", "tides/station_activities.csv", "2026-11-26,A2,09:00:00,09:59:59", "hour,,");
	assert_int_equal(row("k10", "od_routes.csv", "OP-B,R2,B2,,unlinked", rest, sizeof(rest)), 0);
	assert_string_equal(rest, ",,1");
	assert_true(s.suppressed > 0);
}

/* The opt-out list: card 12 leaves every figure and the TIDES export. */
static void test_opt_out(void **state)
{
	char list[PATH_MAX], path[PATH_MAX], line[1024];
	struct kp_an_summary s;
	FILE *fp;
	int rows = 0;
	(void)state;

	snprintf(list, sizeof(list), "%s/opt-out.txt", tu_scratch);
	tu_write(list, "# riders who said no\n\ntoken:0c0c0c0c0c0c0c0c0c0c0c0c0c0c0c0c\n");
	s = run("optout", 1, list, NULL);
	assert_int_equal(s.opted_out, 3);
	assert_int_equal(s.boardings, 24);
	expect("optout", "stops.csv", "OP-A,R1,1,A1,\"Ekimae, North\"", "11,0,0,11,0");
	expect("optout", "transfers.csv", "OP-A,R1,OP-B,R2", "11,11,0");
	snprintf(path, sizeof(path), "%s/optout/tides/fare_transactions.csv", tu_scratch);
	fp = fopen(path, "r");
	assert_non_null(fp);
	while (fgets(line, sizeof(line), fp) != NULL)
		rows++;
	fclose(fp);
	assert_int_equal(rows, 1 + 36);
	/* a bad list is refused with its line */
	{
		struct kp_an_opts o = { 0 };
		struct kp_an_summary t;
		char err[512];

		tu_write(list, "0c0c\n");
		o.db = db_path;
		o.from_day = o.to_day = 20000;
		o.k = 1;
		o.secret_path = secret;
		o.opt_out_path = list;
		o.out_dir = tu_tmp("bad");
		assert_int_equal(kp_an_run(&o, &t, err, sizeof(err)), KP_AN_E_INVAL);
		assert_non_null(strstr(err, "opt-out.txt:1: not a card token"));
	}
}

/* The TIDES token_id of card 14's rows: November's two the same, December's another. */
static void test_pseudonym_rotation(void **state)
{
	uint8_t tok[16], sec[32];
	char a[33], b[33], c[33], d[33], path[PATH_MAX], line[1024], nov[33] = "", dec[33] = "";
	FILE *fp;
	int n_nov = 0;
	(void)state;

	memset(tok, 14, sizeof(tok));
	memcpy(sec, "0123456789abcdef0123456789abcdef", 32);
	assert_int_equal(kp_an_pseudonym(sec, 32, "2026-11", tok, a), KP_AN_OK);
	assert_int_equal(kp_an_pseudonym(sec, 32, "2026-11", tok, b), KP_AN_OK);
	assert_int_equal(kp_an_pseudonym(sec, 32, "2026-12", tok, c), KP_AN_OK);
	sec[0] ^= 1;
	assert_int_equal(kp_an_pseudonym(sec, 32, "2026-11", tok, d), KP_AN_OK);
	assert_string_equal(a, b);
	assert_string_not_equal(a, c);
	assert_string_not_equal(a, d);
	run("rotation", 1, NULL, "2026-12-01");
	snprintf(path, sizeof(path), "%s/rotation/tides/fare_transactions.csv", tu_scratch);
	fp = fopen(path, "r");
	assert_non_null(fp);
	while (fgets(line, sizeof(line), fp) != NULL) {
		if (strstr(line, a) != NULL) {
			assert_non_null(strstr(line, ",2026-11-26,"));
			n_nov++;
			snprintf(nov, sizeof(nov), "%s", a);
		}
		if (strstr(line, c) != NULL) {
			assert_non_null(strstr(line, ",2026-12-01,"));
			snprintf(dec, sizeof(dec), "%s", c);
		}
		/* no token as stored, no linkage token, in any row */
		assert_null(strstr(line, "0e0e0e0e0e0e0e0e"));
		assert_null(strstr(line, "8181818181818181"));
	}
	fclose(fp);
	assert_int_equal(n_nov, 2);
	assert_string_equal(nov, a);
	assert_string_equal(dec, c);
}

/* Names from a GTFS-JP feed given by a path relative to the project (2026-11-27). */
static void test_gtfs_jp_names(void **state)
{
	struct kp_an_opts o = { 0 };
	struct kp_an_summary s;
	char err[512], out[PATH_MAX];
	const char *feed = getenv("KP_GTFS_DIR") != NULL ? NULL : JP_FEED;
	char path[PATH_MAX];
	(void)state;

	if (feed == NULL) {
		snprintf(path, sizeof(path), "%s/kumagaya-yuyubus", getenv("KP_GTFS_DIR"));
		feed = path;
	}
	snprintf(out, sizeof(out), "%s/jp", tu_scratch);
	o.db = db_path;
	assert_int_equal(kp_an_parse_date("2026-11-27", &o.from_day), KP_AN_OK);
	o.to_day = o.from_day;
	o.gtfs_dir = feed;
	o.k = 1;
	o.secret_path = secret;
	o.out_dir = out;
	if (kp_an_run(&o, &s, err, sizeof(err)) != KP_AN_OK)
		fail_msg("run: %s", err);
	assert_int_equal(s.boardings, 1);
	expect("jp", "stops.csv", "OP-A,000001,\xe3\x81\x95\xe3\x81\x8f\xe3\x82\x89\xe5\x8f\xb7,"
	       "000001_001,\xe7\xb1\xa0\xe5\x8e\x9f\xe9\xa7\x85\xe5\x8d\x97\xe5\x8f\xa3",
	       "1,0,0,1,0");
}

/* The HTML report as a person sees it: rendered by headless Chromium, every chart's title in
 * the DOM, every chart drawn and not blank on the screenshot (tests/report_check.py); and
 * nothing in the page that needs a network. */
static void test_report_in_chromium(void **state)
{
	char path[PATH_MAX], cmd[2 * PATH_MAX];
	FILE *fp;
	char *page;
	long n;
	(void)state;

	run("html", 1, NULL, NULL);
	snprintf(path, sizeof(path), "%s/html/report.html", tu_scratch);
	fp = fopen(path, "r");
	assert_non_null(fp);
	assert_int_equal(fseek(fp, 0, SEEK_END), 0);
	n = ftell(fp);
	rewind(fp);
	page = malloc((size_t)n + 1);
	assert_non_null(page);
	assert_int_equal(fread(page, 1, (size_t)n, fp), (size_t)n);
	page[n] = '\0';
	fclose(fp);
	assert_null(strstr(page, "<script src"));
	assert_null(strstr(page, "<link "));
	/* the Japanese stop name is in the page's data, escaped for HTML where needed */
	assert_non_null(strstr(page, "\xe5\xb8\x82\xe5\xbd\xb9\xe6\x89\x80"));
	free(page);
	snprintf(cmd, sizeof(cmd), "python3 tests/report_check.py '%s' 'Boardings by hour'"
	         " 'Daily totals' 'Boardings and alightings along OP-A 1'"
	         " 'Boardings and alightings along OP-B Line Two' 'Load profile: OP-A 1, direction 0'"
	         " 'Origin-destination (journeys across operators)' 'Rider categories'"
	         " 'Resident share (My Number linked cards)' 'Inferred-alighting accuracy'", path);
	assert_int_equal(system(cmd), 0);
}

static void test_bad_arguments(void **state)
{
	struct kp_an_opts o = { 0 };
	struct kp_an_summary s;
	char err[512];
	int day;
	(void)state;

	assert_int_equal(kp_an_parse_date("2026-02-29", &day), KP_AN_E_INVAL);
	assert_int_equal(kp_an_parse_date("2026-13-01", &day), KP_AN_E_INVAL);
	assert_int_equal(kp_an_parse_date("2026-1-01", &day), KP_AN_E_INVAL);
	assert_int_equal(kp_an_parse_date("2026-01-01x", &day), KP_AN_E_INVAL);
	assert_int_equal(kp_an_parse_date("2028-02-29", &day), KP_AN_OK);
	o.db = db_path;
	o.from_day = 20001;
	o.to_day = 20000;
	o.k = 10;
	o.secret_path = secret;
	o.out_dir = tu_tmp("bad");
	assert_int_equal(kp_an_run(&o, &s, err, sizeof(err)), KP_AN_E_INVAL);
	assert_string_equal(err, "the period ends before it begins");
	o.to_day = 20001;
	o.k = 0;
	assert_int_equal(kp_an_run(&o, &s, err, sizeof(err)), KP_AN_E_INVAL);
	assert_string_equal(err, "k must be 1 or more, not 0");
	o.k = 10;
	tu_write(tu_tmp("short"), "too short");
	o.secret_path = tu_tmp("short");
	assert_int_equal(kp_an_run(&o, &s, err, sizeof(err)), KP_AN_E_INVAL);
	assert_non_null(strstr(err, "9 bytes, at least 16 needed"));
	o.secret_path = secret;
	o.gtfs_dir = tu_tmp("no-gtfs");
	assert_int_equal(kp_an_run(&o, &s, err, sizeof(err)), KP_AN_E_IO);
	assert_non_null(strstr(err, "no-gtfs/stops.txt: No such file or directory"));
	o.gtfs_dir = NULL;
	o.db = tu_tmp("missing.db");
	assert_int_equal(kp_an_run(&o, &s, err, sizeof(err)), KP_AN_E_DB);
	assert_non_null(strstr(err, "cannot open the database"));
	assert_int_equal(access(tu_tmp("missing.db"), F_OK), -1);
}

/* ---- TIDES against the field table ---- */

struct field { char table[32], name[40], type[16], enums[64]; int required; };

/* Splits a CSV line (quotes allowed, as the field table's last column has them). */
static int split_csv(char *line, char **f, int max)
{
	int n = 0;
	char *p = line, *w;

	line[strcspn(line, "\r\n")] = '\0';
	while (n < max) {
		int q = *p == '"';

		f[n++] = w = p;
		if (q)
			p++;
		while (*p != '\0' && (q || *p != ',')) {
			if (q && *p == '"' && p[1] == '"')
				p++;
			else if (q && *p == '"') {
				q = 0;
				p++;
				continue;
			}
			*w++ = *p++;
		}
		if (*p == '\0') {
			*w = '\0';
			break;
		}
		*w = '\0';
		p++;
	}
	return n;
}

static size_t load_fields(struct field *f, size_t max)
{
	FILE *fp = fopen("backend-sync/analytics/tides_fields.csv", "r");
	char line[512], *v[8];
	size_t n = 0;

	if (fp == NULL)
		fp = fopen("../backend-sync/analytics/tides_fields.csv", "r");
	assert_non_null(fp);
	assert_non_null(fgets(line, sizeof(line), fp));
	assert_int_equal(split_csv(line, v, 8), 6);
	assert_string_equal(v[0], "table");
	while (n < max && fgets(line, sizeof(line), fp) != NULL) {
		assert_int_equal(split_csv(line, v, 8), 6);
		snprintf(f[n].table, sizeof(f[n].table), "%s", v[0]);
		snprintf(f[n].name, sizeof(f[n].name), "%s", v[1]);
		snprintf(f[n].type, sizeof(f[n].type), "%s", v[2]);
		f[n].required = strcmp(v[3], "yes") == 0;
		snprintf(f[n].enums, sizeof(f[n].enums), "%s", v[4]);
		n++;
	}
	fclose(fp);
	return n;
}

static int digits(const char *s, int n)
{
	for (int i = 0; i < n; i++) {
		if (s[i] < '0' || s[i] > '9')
			return 0;
	}
	return 1;
}

/* value of the field's type (an empty value: only when not required). */
static void check_value(const struct field *f, const char *v)
{
	size_t n = strlen(v);
	char *end;

	if (n == 0) {
		if (f->required)
			fail_msg("%s.%s is required, found empty", f->table, f->name);
		return;
	}
	if (strcmp(f->type, "date") == 0)
		assert_true(n == 10 && digits(v, 4) && v[4] == '-' && digits(v + 5, 2) &&
		            v[7] == '-' && digits(v + 8, 2));
	else if (strcmp(f->type, "time") == 0)
		assert_true(n == 8 && digits(v, 2) && v[2] == ':' && digits(v + 3, 2) && v[5] == ':');
	else if (strcmp(f->type, "datetime") == 0)
		assert_true(n >= 20 && v[10] == 'T' && digits(v, 4) && (v[n - 1] == 'Z' ||
		            v[n - 6] == '+' || v[n - 6] == '-'));
	else if (strcmp(f->type, "integer") == 0) {
		(void)strtoll(v, &end, 10);
		assert_true(*end == '\0');
	} else if (strcmp(f->type, "number") == 0) {
		(void)strtod(v, &end);
		assert_true(*end == '\0');
	} else if (strcmp(f->type, "boolean") == 0)
		assert_true(strcmp(v, "true") == 0 || strcmp(v, "false") == 0);
	if (f->enums[0] != '\0') {
		char e[64], *tok, *save = NULL;
		int found = 0;

		snprintf(e, sizeof(e), "%s", f->enums);
		for (tok = strtok_r(e, "|", &save); tok != NULL; tok = strtok_r(NULL, "|", &save))
			found |= strcmp(tok, v) == 0;
		if (!found)
			fail_msg("%s.%s: %s is not one of %s", f->table, f->name, v, f->enums);
	}
}

static void check_tides(const char *table, const struct field *f, size_t nf)
{
	char path[PATH_MAX], line[1024], head[1024], *h[32], *v[32];
	const struct field *col[32];
	int nh, rows = 0;
	FILE *fp;

	snprintf(path, sizeof(path), "%s/tides/tides/%s.csv", tu_scratch, table);
	fp = fopen(path, "r");
	assert_non_null(fp);
	assert_non_null(fgets(head, sizeof(head), fp));
	nh = split_csv(head, h, 32);
	for (int i = 0; i < nh; i++) {             /* every column is a field of the table */
		col[i] = NULL;
		for (size_t j = 0; j < nf; j++) {
			if (strcmp(f[j].table, table) == 0 && strcmp(f[j].name, h[i]) == 0)
				col[i] = &f[j];
		}
		if (col[i] == NULL)
			fail_msg("%s: column %s is not in the field table", table, h[i]);
	}
	for (size_t j = 0; j < nf; j++) {           /* every required field is a column */
		int found = 0;

		for (int i = 0; i < nh; i++)
			found |= strcmp(f[j].table, table) == 0 && strcmp(f[j].name, h[i]) == 0;
		if (strcmp(f[j].table, table) == 0 && f[j].required && !found)
			fail_msg("%s: required field %s missing", table, f[j].name);
	}
	while (fgets(line, sizeof(line), fp) != NULL) {
		assert_int_equal(split_csv(line, v, 32), nh);
		for (int i = 0; i < nh; i++)
			check_value(col[i], v[i]);
		rows++;
	}
	fclose(fp);
	assert_true(rows > 0);
}

/* The TIDES files (k = 10: suppressed cells too) against the field table. */
static void test_tides_fields(void **state)
{
	struct field f[64];
	size_t nf = load_fields(f, 64);
	(void)state;

	run("tides", 10, NULL, NULL);
	{       /* fare_capped: from the signed fare note, card 5's one flat-fare tap on R2 */
		char path[PATH_MAX], line[1024];
		FILE *fp;
		int capped = 0;

		snprintf(path, sizeof(path), "%s/tides/tides/fare_transactions.csv", tu_scratch);
		fp = fopen(path, "r");
		assert_non_null(fp);
		while (fgets(line, sizeof(line), fp) != NULL)
			capped += strstr(line, ",adult,SV,true,") != NULL;
		fclose(fp);
		assert_int_equal(capped, 1);
	}
	assert_true(nf >= 20);
	check_tides("fare_transactions", f, nf);
	check_tides("station_activities", f, nf);
}

/* ---- the same on PostgreSQL ---- */

#define REC_COLS "terminal, journal, seq, time_ms, token, operator, route, stop, product," \
	" ent_id, rides, amount, left_after, result, reason, cose, payload, hash, received_ms," \
	" via, category, kind, event"

/* Copies the rows of sql (SQLite) into the PostgreSQL table by insert (n columns). */
static void copy_rows(kp_db *from, kp_db *to, const char *sql, const char *insert, int n)
{
	kp_db_stmt *a = NULL, *b = NULL;

	assert_int_equal(kp_db_prepare(from, &a, sql), KP_DB_OK);
	assert_int_equal(kp_db_prepare(to, &b, insert), KP_DB_OK);
	while (kp_db_step(a) == KP_DB_ROW) {
		for (int i = 0; i < n; i++) {
			switch (kp_db_column_type(a, i)) {
			case KP_DB_NULL: kp_db_bind_null(b, i + 1); break;
			case KP_DB_INTEGER: kp_db_bind_int64(b, i + 1, kp_db_column_int64(a, i)); break;
			case KP_DB_BLOB:
				kp_db_bind_blob(b, i + 1, kp_db_column_blob(a, i), kp_db_column_bytes(a, i));
				break;
			default: kp_db_bind_text(b, i + 1, kp_db_column_text(a, i), SIZE_MAX); break;
			}
		}
		if (kp_db_step(b) != KP_DB_DONE)
			fail_msg("copy: %s", kp_db_errmsg(to));
		kp_db_reset(b);
	}
	kp_db_finalize(a);
	kp_db_finalize(b);
}

static void same_file(const char *name)
{
	char a[PATH_MAX], b[PATH_MAX], cmd[2 * PATH_MAX + 20];

	snprintf(a, sizeof(a), "%s/k1/%s", tu_scratch, name);
	snprintf(b, sizeof(b), "%s/pg/%s", tu_scratch, name);
	snprintf(cmd, sizeof(cmd), "cmp -s '%s' '%s'", a, b);
	if (system(cmd) != 0)
		fail_msg("%s differs between SQLite and PostgreSQL", name);
}

/* The backend's records copied into the store's PostgreSQL schema (schema_pg.c) give the
 * same figures byte for byte: the analytics speak only kp_db.h. Run by test_pg.sh. */
static void test_same_on_postgresql(void **state)
{
	const char *uri = getenv("KIPPU_TEST_PG");
	static const char *const files[] = { "stops.csv", "hours.csv", "days.csv",
		"categories.csv", "product_kinds.csv", "transfers.csv", "od_routes.csv",
		"od_journeys.csv", "station_activities.csv", "load_profiles.csv",
		"tides/fare_transactions.csv", "tides/station_activities.csv" };
	const struct kp_db_migration *m;
	struct kp_an_opts o;
	struct kp_an_summary s, ref;
	kp_db *lite = NULL, *pg = NULL;
	char err[512], out[PATH_MAX];
	size_t n;
	(void)state;

	if (uri == NULL || uri[0] == '\0') {
		printf("ridership on PostgreSQL: not run here (no KIPPU_TEST_PG; tests/backend/"
		       "test_pg.sh runs it against a throw-away server)\n");
		return;
	}
	ref = run("k1", 1, NULL, NULL);
	assert_int_equal(kp_db_open(&lite, db_path, KP_DB_READONLY, err, sizeof(err)), KP_DB_OK);
	assert_int_equal(kp_db_open(&pg, uri, 0, err, sizeof(err)), KP_DB_OK);
	assert_int_equal(kp_db_exec(pg, "DROP SCHEMA public CASCADE; CREATE SCHEMA public"),
	                 KP_DB_OK);
	m = kp_bstore_pg_migrations(&n);
	assert_int_equal(kp_db_migrate(pg, m, n, NULL, NULL), KP_DB_OK);
	copy_rows(lite, pg, "SELECT id, first_seen, last_seen FROM terminals",
	          "INSERT INTO terminals(id, first_seen, last_seen) VALUES (?1, ?2, ?3)", 3);
	copy_rows(lite, pg, "SELECT id, name, rides, product_kind FROM products",
	          "INSERT INTO products(id, name, rides, product_kind) VALUES (?1, ?2, ?3, ?4)", 4);
	copy_rows(lite, pg, "SELECT " REC_COLS " FROM records", "INSERT INTO records(" REC_COLS
	          ") VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16,"
	          " ?17, ?18, ?19, ?20, ?21, ?22, ?23)", 23);
	kp_db_close(lite);
	kp_db_close(pg);
	snprintf(out, sizeof(out), "%s/pg", tu_scratch);
	memset(&o, 0, sizeof(o));
	o.db = uri;
	assert_int_equal(kp_an_parse_date("2026-11-26", &o.from_day), KP_AN_OK);
	o.to_day = o.from_day;
	o.gtfs_dir = gtfs_dir;
	o.k = 1;
	o.secret_path = secret;
	o.out_dir = out;
	if (kp_an_run(&o, &s, err, sizeof(err)) != KP_AN_OK)
		fail_msg("run on PostgreSQL: %s", err);
	assert_memory_equal(&s, &ref, sizeof(s));
	for (size_t i = 0; i < sizeof(files) / sizeof(files[0]); i++)
		same_file(files[i]);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_measures),
		cmocka_unit_test(test_k_suppression),
		cmocka_unit_test(test_tides_fields),
		cmocka_unit_test(test_opt_out),
		cmocka_unit_test(test_pseudonym_rotation),
		cmocka_unit_test(test_gtfs_jp_names),
		cmocka_unit_test(test_report_in_chromium),
		cmocka_unit_test(test_bad_arguments),
		cmocka_unit_test(test_same_on_postgresql),
	};

	return cmocka_run_group_tests_name("ridership", tests, setup, teardown);
}
