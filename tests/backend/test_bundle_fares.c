/* SPDX-License-Identifier: Apache-2.0 */
/* The config bundle's format 2: product kinds, first-use passes, the fare engine's
 * configuration and GTFS fare feeds as packages. Encoding and strict decoding, the terminal
 * applying them (a feed prices exactly like a direct import; a feed already held is not
 * rewritten; a bad bundle changes nothing), and the backend's side: stored value sold and
 * charged, first-use passes started by a terminal's record. The largest real feed
 * (jp-donanbus-muroran-zone, 63,745 fare rules) is measured: bundle size, apply time. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>

#include <cmocka.h>

#include "kp_backend.h"
#include "kp_terminal.h"
#include "testutil.h"
#include "testutil_bundle.h"
#include "testutil_db.h"

#define MURORAN_FEED "jp-donanbus-muroran-zone"
#define T0 1767225600000LL               /* 2026-01-01T00:00:00Z */
#define T1 1798761600000LL               /* 2027-01-01T00:00:00Z */

static char dir[256];

static int group_setup(void **state)
{
	(void)state;
	tu_tmpdir(dir, sizeof(dir));
	/* a small fares v1 feed: a flat fare from zone Z1, another to Z3 */
	TU_WRITE_FILES(tu_path(dir, "feed"),
		{ "stops.txt", "stop_id,stop_name,zone_id\nS1,One,Z1\nS2,Two,Z2\nS3,Three,Z3\n" },
		{ "routes.txt", "route_id,agency_id,route_short_name,route_long_name,route_type\n"
		  "R1,A1,1,Line,3\n" },
		{ "fare_attributes.txt",
		  "fare_id,price,currency_type,payment_method,transfers,transfer_duration\n"
		  "F1,200,JPY,0,0,\nF2,300,JPY,0,,3600\n" },
		{ "fare_rules.txt", "fare_id,route_id,origin_id,destination_id,contains_id\n"
		  "F1,R1,Z1,,\nF2,R1,Z1,Z3,\n" });
	return 0;
}

static int group_teardown(void **state)
{
	(void)state;
	tu_rmdir(dir);
	return 0;
}

static kp_store *term_open(const char *name)
{
	char path[512];
	kp_store *s = NULL;

	snprintf(path, sizeof(path), "%s/%s", dir, name);
	remove(path);
	assert_int_equal(kp_store_open(&s, path), KP_OK);
	return s;
}

static int64_t count(kp_store *s, const char *table)
{
	int64_t n = -1;

	assert_int_equal(kp_store_count(s, table, &n), KP_OK);
	return n;
}

/* The largest real feed, under tu_gtfs_dir(); file is NULL for the folder itself. */
static const char *muroran(const char *file)
{
	static char path[PATH_MAX + 128];

	snprintf(path, sizeof(path), "%s/" MURORAN_FEED "%s%s", tu_gtfs_dir(),
	         file != NULL ? "/" : "", file != NULL ? file : "");
	return path;
}

static double ms_since(const struct timespec *t0)
{
	struct timespec t1;

	clock_gettime(CLOCK_MONOTONIC, &t1);
	return (double)(t1.tv_sec - t0->tv_sec) * 1e3 + (double)(t1.tv_nsec - t0->tv_nsec) / 1e6;
}

/* A feed imported into a scratch store, as a package. */
static void feed_package(const char *feed_dir, const char *feed_id, struct kp_bundle_feed *f)
{
	struct kp_fare_import_opts opts = { feed_id, NULL, NULL };
	kp_store *s = NULL;
	char err[512];
	size_t rows = 0;

	memset(f, 0, sizeof(*f));
	assert_int_equal(kp_store_open(&s, ":memory:"), KP_OK);
	if (kp_fares_import(s, feed_dir, &opts, NULL, err, sizeof(err)) != KP_OK)
		fail_msg("import %s: %s", feed_dir, err);
	assert_int_equal(kp_store_export_feed(s, feed_id, &f->package, &f->package_len, &rows, err,
	                                      sizeof(err)), KP_OK);
	assert_true(rows > 0);
	snprintf(f->id, sizeof(f->id), "%s", feed_id);
	assert_int_equal(kp_sha256(f->package, f->package_len, f->digest), 0);
	kp_store_close(s);
}

/* A bundle that uses every part of format 2 (arrays calloc'd, kp_bundle_free frees it). */
static struct kp_bundle full_bundle(uint64_t version)
{
	struct kp_bundle b;
	struct kp_bundle_product *p;

	memset(&b, 0, sizeof(b));
	b.version = version;
	b.issued_ms = T0;
	strcpy(b.terminal, "T-A");
	b.acked = 0;
	b.n_operators = 2;
	b.operators = calloc(2, sizeof(*b.operators));
	strcpy(b.operators[0].id, "OP-A");
	strcpy(b.operators[0].name, "Alpha");
	strcpy(b.operators[1].id, "OP-B");
	strcpy(b.operators[1].name, "Beta");
	b.n_products = 4;
	b.products = p = calloc(4, sizeof(*b.products));
	strcpy(p[0].id, "CM");
	strcpy(p[0].name, "commuter S1-S3");
	p[0].kind = KP_PRODUCT_COMMUTER;
	strcpy(p[0].route, "R1");
	p[0].stops = calloc(3, sizeof(*p[0].stops));
	strcpy(p[0].stops[0], "S1");
	strcpy(p[0].stops[1], "S2");
	strcpy(p[0].stops[2], "S3");
	p[0].n_stops = 3;
	strcpy(p[0].operators[0], "OP-A");
	p[0].n_operators = 1;
	strcpy(p[1].id, "P1D");
	strcpy(p[1].name, "1-day pass");
	p[1].kind = KP_PRODUCT_PERIOD;
	p[1].days = 1;
	strcpy(p[1].operators[0], "OP-A");
	strcpy(p[1].operators[1], "OP-B");
	p[1].n_operators = 2;
	strcpy(p[2].id, "R10");
	strcpy(p[2].name, "10 rides, children");
	p[2].rides = 10;
	strcpy(p[2].category, "child");
	strcpy(p[2].operators[0], "OP-A");
	p[2].n_operators = 1;
	strcpy(p[3].id, "SV");
	strcpy(p[3].name, "scheme balance");
	p[3].kind = KP_PRODUCT_STORED;
	strcpy(p[3].operators[0], "OP-A");
	strcpy(p[3].operators[1], "OP-B");
	p[3].n_operators = 2;
	b.n_entitlements = 2;
	b.entitlements = calloc(2, sizeof(*b.entitlements));
	memset(b.entitlements[0].token, 0x11, KP_TOKEN_LEN);
	b.entitlements[0].id = 1;
	strcpy(b.entitlements[0].product, "SV");
	b.entitlements[0].remaining = 5000;
	b.entitlements[0].valid_from_ms = T0;
	b.entitlements[0].valid_until_ms = T1;
	memset(b.entitlements[1].token, 0x22, KP_TOKEN_LEN);
	b.entitlements[1].id = 2;
	strcpy(b.entitlements[1].product, "P1D");
	b.entitlements[1].remaining = 1;
	b.entitlements[1].valid_from_ms = T0;
	b.entitlements[1].valid_until_ms = T1;
	b.entitlements[1].first_use = 1;
	b.n_discounts = 1;
	b.discounts = calloc(1, sizeof(*b.discounts));
	strcpy(b.discounts[0].operator_id, "OP-A");
	strcpy(b.discounts[0].category, "child");
	b.discounts[0].percent = 50;
	b.discounts[0].rounding = 1;
	b.discounts[0].unit = 10;
	b.n_caps = 2;
	b.caps = calloc(2, sizeof(*b.caps));
	b.caps[0].period = 0;
	b.caps[0].amount = 1000;
	strcpy(b.caps[1].category, "child");
	b.caps[1].period = 1;
	b.caps[1].amount = 5000;
	b.n_transfers = 2;
	b.transfers = calloc(2, sizeof(*b.transfers));
	strcpy(b.transfers[0].from_operator, "*");
	strcpy(b.transfers[0].to_operator, "OP-A");
	b.transfers[0].within_s = 1800;
	b.transfers[0].max_transfers = 1;
	b.transfers[0].off = -1;
	strcpy(b.transfers[1].from_operator, "OP-A");
	strcpy(b.transfers[1].to_operator, "OP-B");
	b.transfers[1].within_s = 3600;
	b.transfers[1].max_transfers = 2;
	b.transfers[1].off = 100;
	b.n_operator_fares = 1;
	b.operator_fares = calloc(1, sizeof(*b.operator_fares));
	strcpy(b.operator_fares[0].operator_id, "OP-A");
	strcpy(b.operator_fares[0].feed_id, "small");
	b.operator_fares[0].distance = 1;
	return b;
}

static struct kp_bundle with_feed(struct kp_bundle b)
{
	char path[512];

	snprintf(path, sizeof(path), "%s/feed", dir);
	b.n_feeds = 1;
	b.feeds = calloc(1, sizeof(*b.feeds));
	feed_package(path, "small", &b.feeds[0]);
	return b;
}

static void assert_same_bundle(const struct kp_bundle *a, const struct kp_bundle *b)
{
	size_t i;

	assert_true(a->version == b->version && a->issued_ms == b->issued_ms);
	assert_string_equal(a->terminal, b->terminal);
	assert_int_equal(a->n_products, b->n_products);
	for (i = 0; i < a->n_products; i++) {
		const struct kp_bundle_product *x = &a->products[i], *y = &b->products[i];

		assert_string_equal(x->id, y->id);
		assert_string_equal(x->name, y->name);
		assert_string_equal(x->category, y->category);
		assert_int_equal(x->kind, y->kind);
		assert_int_equal(x->days, y->days);
		assert_string_equal(x->route, y->route);
		assert_int_equal(x->n_stops, y->n_stops);
		if (x->n_stops > 0)
			assert_memory_equal(x->stops, y->stops, x->n_stops * sizeof(*x->stops));
		assert_int_equal(x->n_operators, y->n_operators);
		assert_memory_equal(x->operators, y->operators, sizeof(x->operators));
		if (x->kind == KP_PRODUCT_NRIDE)
			assert_int_equal(x->rides, y->rides);
	}
	assert_int_equal(a->n_entitlements, b->n_entitlements);
	assert_memory_equal(a->entitlements, b->entitlements,
	                    a->n_entitlements * sizeof(*a->entitlements));
	assert_int_equal(a->n_discounts, b->n_discounts);
	assert_memory_equal(a->discounts, b->discounts, a->n_discounts * sizeof(*a->discounts));
	assert_int_equal(a->n_caps, b->n_caps);
	assert_memory_equal(a->caps, b->caps, a->n_caps * sizeof(*a->caps));
	assert_int_equal(a->n_transfers, b->n_transfers);
	assert_memory_equal(a->transfers, b->transfers, a->n_transfers * sizeof(*a->transfers));
	assert_int_equal(a->n_operator_fares, b->n_operator_fares);
	assert_memory_equal(a->operator_fares, b->operator_fares,
	                    a->n_operator_fares * sizeof(*a->operator_fares));
	assert_int_equal(a->n_feeds, b->n_feeds);
	for (i = 0; i < a->n_feeds; i++) {
		assert_string_equal(a->feeds[i].id, b->feeds[i].id);
		assert_memory_equal(a->feeds[i].digest, b->feeds[i].digest, KP_SHA256_LEN);
		assert_int_equal(a->feeds[i].package_len, b->feeds[i].package_len);
		assert_memory_equal(a->feeds[i].package, b->feeds[i].package, a->feeds[i].package_len);
	}
}

/* ---- packages ---- */

static void test_package_whitelist_and_roundtrip(void **state)
{
	struct kp_bundle_feed f;
	char path[512], err[256];
	size_t rows = 0;

	(void)state;
	/* the whitelist is in canonical key order: shorter names first, then bytewise */
	for (size_t i = 1; i < KP_FARE_PKG_TABLES; i++) {
		const char *a = kp_fare_table(i - 1)->name, *b = kp_fare_table(i)->name;

		assert_true(strlen(a) < strlen(b) || (strlen(a) == strlen(b) && strcmp(a, b) < 0));
		assert_true(kp_fare_table(i)->n_cols <= KP_FARE_PKG_COLS_MAX);
	}
	assert_null(kp_fare_table(KP_FARE_PKG_TABLES));
	assert_int_equal(kp_fare_table_index("evil; DROP TABLE journal"), -1);
	snprintf(path, sizeof(path), "%s/feed", dir);
	feed_package(path, "small", &f);
	assert_int_equal(kp_fare_pkg_walk(f.package, f.package_len, -1, NULL, NULL, &rows, err,
	                                  sizeof(err)), KP_SYNC_OK);
	/* fare_feeds 1, stops 3, routes 1, attributes 2, rules 2 */
	assert_int_equal(rows, 9);
	free(f.package);
}

/* A package by hand: tables given as CBOR bytes after the map head. */
static size_t put_head(uint8_t *p, int major, size_t n)
{
	if (n < 24) {
		p[0] = (uint8_t)(major << 5 | n);
		return 1;
	}
	if (n < 256) {
		p[0] = (uint8_t)(major << 5 | 24);
		p[1] = (uint8_t)n;
		return 2;
	}
	p[0] = (uint8_t)(major << 5 | 25);
	p[1] = (uint8_t)(n >> 8);
	p[2] = (uint8_t)n;
	return 3;
}

static size_t put_text(uint8_t *p, const char *s)
{
	size_t n = put_head(p, 3, strlen(s));

	memcpy(p + n, s, strlen(s));
	return n + strlen(s);
}

/* {"fare_feeds": {"cols": [...], "rows": [["src", 0, 0, ""]]}} with `extra` bytes of
 * whatever a case adds (another table, already encoded) and n_tables in the head. */
static size_t pkg_build(uint8_t *out, size_t n_tables, const uint8_t *before, size_t nb,
                        const uint8_t *after, size_t na, const char *feeds_col0)
{
	size_t n = put_head(out, 5, n_tables);

	if (nb > 0)
		memcpy(out + n, before, nb);
	n += nb;
	n += put_text(out + n, "fare_feeds");
	n += put_head(out + n, 5, 2);
	n += put_text(out + n, "cols");
	n += put_head(out + n, 4, 4);
	n += put_text(out + n, feeds_col0);
	n += put_text(out + n, "has_leg_rules");
	n += put_text(out + n, "has_rule_priority");
	n += put_text(out + n, "default_category");
	n += put_text(out + n, "rows");
	n += put_head(out + n, 4, 1);
	n += put_head(out + n, 4, 4);
	n += put_text(out + n, "src");
	out[n++] = 0x00;
	out[n++] = 0x00;
	n += put_text(out + n, "");
	if (na > 0)
		memcpy(out + n, after, na);
	return n + na;
}

static void test_package_refused(void **state)
{
	uint8_t buf[4096], tbl[1024];
	char err[256];
	size_t n, t;

	(void)state;
	n = pkg_build(buf, 1, NULL, 0, NULL, 0, "source");
	assert_int_equal(kp_fare_pkg_walk(buf, n, -1, NULL, NULL, NULL, err, sizeof(err)),
	                 KP_SYNC_OK);
	/* trailing byte */
	buf[n] = 0;
	assert_int_equal(kp_fare_pkg_walk(buf, n + 1, -1, NULL, NULL, NULL, err, sizeof(err)),
	                 KP_SYNC_E_MALFORMED);
	assert_string_equal(err, "fare package: trailing bytes");
	/* an unknown column */
	n = pkg_build(buf, 1, NULL, 0, NULL, 0, "sourcе");       /* a Cyrillic е */
	assert_int_equal(kp_fare_pkg_walk(buf, n, -1, NULL, NULL, NULL, err, sizeof(err)),
	                 KP_SYNC_E_MALFORMED);
	assert_non_null(strstr(err, "fare_feeds: column 1"));
	/* an unknown table, before fare_feeds */
	t = put_text(tbl, "fare_evil");
	t += put_head(tbl + t, 5, 2);
	t += put_text(tbl + t, "cols");
	t += put_head(tbl + t, 4, 0);
	t += put_text(tbl + t, "rows");
	t += put_head(tbl + t, 4, 0);
	n = pkg_build(buf, 2, tbl, t, NULL, 0, "source");
	assert_int_equal(kp_fare_pkg_walk(buf, n, -1, NULL, NULL, NULL, err, sizeof(err)),
	                 KP_SYNC_E_MALFORMED);
	assert_string_equal(err, "fare package: unknown table 'fare_evil'");
	/* a table out of order (fare_areas sorts before fare_feeds) and one with a wrong type */
	t = put_text(tbl, "fare_areas");
	t += put_head(tbl + t, 5, 2);
	t += put_text(tbl + t, "cols");
	t += put_head(tbl + t, 4, 2);
	t += put_text(tbl + t, "area_id");
	t += put_text(tbl + t, "name");
	t += put_text(tbl + t, "rows");
	t += put_head(tbl + t, 4, 1);
	t += put_head(tbl + t, 4, 2);
	t += put_text(tbl + t, "A1");
	tbl[t++] = 0x05;                                   /* name: an integer */
	n = pkg_build(buf, 2, tbl, t, NULL, 0, "source");
	assert_int_equal(kp_fare_pkg_walk(buf, n, -1, NULL, NULL, NULL, err, sizeof(err)),
	                 KP_SYNC_E_MALFORMED);
	assert_string_equal(err, "fare package: fare_areas row 1: name: not a valid text");
	tbl[t - 1] = 0x60;                                 /* name: "" */
	n = pkg_build(buf, 2, tbl, t, NULL, 0, "source");
	assert_int_equal(kp_fare_pkg_walk(buf, n, -1, NULL, NULL, NULL, err, sizeof(err)),
	                 KP_SYNC_OK);
	n = pkg_build(buf, 2, NULL, 0, tbl, t, "source");
	assert_int_equal(kp_fare_pkg_walk(buf, n, -1, NULL, NULL, NULL, err, sizeof(err)),
	                 KP_SYNC_E_MALFORMED);
	assert_string_equal(err, "fare package: table fare_areas out of order or twice");
	/* too many rows claimed: over the limit, or more than the input can hold */
	t = put_text(tbl, "fare_areas");
	t += put_head(tbl + t, 5, 2);
	t += put_text(tbl + t, "cols");
	t += put_head(tbl + t, 4, 2);
	t += put_text(tbl + t, "area_id");
	t += put_text(tbl + t, "name");
	t += put_text(tbl + t, "rows");
	tbl[t++] = 0x9A;                                   /* array, 4-byte count */
	tbl[t++] = 0x7F;
	tbl[t++] = 0xFF;
	tbl[t++] = 0xFF;
	tbl[t++] = 0xFF;
	n = pkg_build(buf, 2, tbl, t, NULL, 0, "source");
	assert_int_equal(kp_fare_pkg_walk(buf, n, -1, NULL, NULL, NULL, err, sizeof(err)),
	                 KP_SYNC_E_TOOBIG);
	tbl[t - 4] = 0x00;
	tbl[t - 3] = 0x01;                                 /* 65,535 + ... rows in a few bytes */
	n = pkg_build(buf, 2, tbl, t, NULL, 0, "source");
	assert_int_equal(kp_fare_pkg_walk(buf, n, -1, NULL, NULL, NULL, err, sizeof(err)),
	                 KP_SYNC_E_MALFORMED);
	assert_non_null(strstr(err, "the input cannot hold them"));
	/* no fare_feeds at all; not a map; empty */
	assert_int_equal(kp_fare_pkg_walk((const uint8_t *)"\xA0", 1, -1, NULL, NULL, NULL, err,
	                                  sizeof(err)), KP_SYNC_E_MALFORMED);
	assert_int_equal(kp_fare_pkg_walk((const uint8_t *)"\x80", 1, -1, NULL, NULL, NULL, err,
	                                  sizeof(err)), KP_SYNC_E_MALFORMED);
	assert_int_equal(kp_fare_pkg_walk(NULL, 0, -1, NULL, NULL, NULL, err, sizeof(err)),
	                 KP_SYNC_E_MALFORMED);
}

/* ---- the bundle ---- */

static void test_bundle_format2_roundtrip(void **state)
{
	struct kp_bundle b = with_feed(full_bundle(7)), d, d2;
	uint8_t *out = NULL, *again = NULL;
	size_t n = 0, m = 0;

	(void)state;
	assert_int_equal(kp_bundle_encode(&b, &out, &n), KP_SYNC_OK);
	assert_memory_equal(out, "\xAE\x61v\x02\x64" "caps", 9);     /* 14 keys, v 2, caps */
	assert_int_equal(kp_bundle_decode(out, n, &d), KP_SYNC_OK);
	assert_int_equal(d.format, 2);
	assert_same_bundle(&b, &d);
	assert_int_equal(kp_bundle_encode(&d, &again, &m), KP_SYNC_OK);
	assert_int_equal(m, n);
	assert_memory_equal(again, out, n);
	free(again);
	/* any order in, one order out */
	{
		struct kp_bundle_transfer t = b.transfers[0];
		struct kp_bundle_cap c = b.caps[0];

		b.transfers[0] = b.transfers[1];
		b.transfers[1] = t;
		b.caps[0] = b.caps[1];
		b.caps[1] = c;
		assert_int_equal(kp_bundle_encode(&b, &again, &m), KP_SYNC_OK);
		assert_int_equal(m, n);
		assert_memory_equal(again, out, n);
		free(again);
		/* the same key twice is refused */
		b.caps[0] = b.caps[1];
		assert_int_equal(kp_bundle_encode(&b, &again, &m), KP_SYNC_E_INVAL);
		b.caps[0] = c;
	}
	/* references: a first-use N-ride ticket, a discount of an unknown operator */
	b.entitlements[0].first_use = 1;
	assert_int_equal(kp_bundle_encode(&b, &again, &m), KP_SYNC_E_INVAL);
	b.entitlements[0].first_use = 0;
	strcpy(b.discounts[0].operator_id, "OP-X");
	assert_int_equal(kp_bundle_encode(&b, &again, &m), KP_SYNC_E_INVAL);
	strcpy(b.discounts[0].operator_id, "OP-A");
	/* a feed whose digest is not its package's */
	b.feeds[0].digest[0] ^= 1;
	assert_int_equal(kp_bundle_encode(&b, &again, &m), KP_SYNC_E_INVAL);
	b.feeds[0].digest[0] ^= 1;
	/* too many feeds or caps for one bundle */
	b.n_feeds = KP_BUNDLE_FEEDS_MAX + 1;
	assert_int_equal(kp_bundle_encode(&b, &again, &m), KP_SYNC_E_TOOBIG);
	b.n_feeds = 1;
	b.n_caps = KP_BUNDLE_CAPS_MAX + 1;
	assert_int_equal(kp_bundle_encode(&b, &again, &m), KP_SYNC_E_TOOBIG);
	b.n_caps = 2;
	/* ranges */
	b.transfers[0].within_s = 59;
	assert_int_equal(kp_bundle_encode(&b, &again, &m), KP_SYNC_E_INVAL);
	b.transfers[0].within_s = 1800;
	b.products[1].days = 367;
	assert_int_equal(kp_bundle_encode(&b, &again, &m), KP_SYNC_E_INVAL);
	b.products[1].days = 1;
	strcpy(b.products[0].stops[2], "S1");                          /* a stop twice */
	assert_int_equal(kp_bundle_encode(&b, &again, &m), KP_SYNC_E_INVAL);
	strcpy(b.products[0].stops[2], "S3");

	/* format 1 stays format 1: an N-ride-only snapshot, byte for byte the first layout */
	memset(&d2, 0, sizeof(d2));
	d2.version = 3;
	strcpy(d2.terminal, "T-A");
	d2.n_operators = 1;
	d2.operators = b.operators;
	d2.n_products = 1;
	d2.products = &b.products[2];
	assert_int_equal(kp_bundle_encode(&d2, &again, &m), KP_SYNC_OK);
	assert_memory_equal(again, "\xA9\x61v\x01", 4);
	kp_bundle_free(&d);
	assert_int_equal(kp_bundle_decode(again, m, &d), KP_SYNC_OK);
	assert_int_equal(d.format, 1);
	assert_int_equal(d.products[0].kind, KP_PRODUCT_NRIDE);
	kp_bundle_free(&d);
	free(again);
	/* ... unless the backend asks for format 2 (it does once fares are configured) */
	d2.format = 2;
	assert_int_equal(kp_bundle_encode(&d2, &again, &m), KP_SYNC_OK);
	assert_memory_equal(again, "\xA9\x61v\x02", 4);
	assert_int_equal(kp_bundle_decode(again, m, &d), KP_SYNC_OK);
	assert_int_equal(d.format, 2);
	kp_bundle_free(&d);
	free(again);

	/* every truncation of the format 2 bundle is refused, with nothing leaked */
	for (size_t k = 0; k < n; k += (k < 600 ? 1 : 97))
		assert_int_not_equal(kp_bundle_decode(out, k, &d), KP_SYNC_OK);
	/* random damage: refused, or a bundle that encodes back to exactly the damaged bytes */
	tu_bundle_fuzz(out, n, 7, 20000, 3);
	/* a format 5 bundle is refused whatever follows */
	out[3] = 0x05;
	assert_int_equal(kp_bundle_decode(out, n, &d), KP_SYNC_E_VERSION);
	/* a format 1 bundle may not carry format 2 keys */
	out[3] = 0x01;
	assert_int_equal(kp_bundle_decode(out, n, &d), KP_SYNC_E_MALFORMED);
	out[3] = 0x02;
	assert_int_equal(kp_bundle_decode(out, n, &d), KP_SYNC_OK);
	kp_bundle_free(&d);
	free(out);
	kp_bundle_free(&b);
}

/* Bundles signed by the backend but wrong inside: each refused with a reason. */
static void test_bundle_bad_feed_refused(void **state)
{
	struct kp_bundle b = with_feed(full_bundle(7)), d;
	kp_key *key = NULL;
	kp_cert *cert = NULL;
	uint8_t *cose = NULL, *p;
	size_t n = 0, plen;
	char path[512], err[512];

	(void)state;
	snprintf(path, sizeof(path), "%s/backend.crt", dir);
	assert_int_equal(kp_key_generate(&key), 0);
	assert_int_equal(kp_cert_create_ca(key, "backend", 1, path), 0);
	assert_int_equal(kp_cert_load(&cert, path), 0);
	assert_int_equal(kp_bundle_sign(&b, key, &cose, &n), KP_SYNC_OK);
	assert_int_equal(kp_bundle_open_err(cert, cose, n, "T-A", 0, &d, err, sizeof(err)),
	                 KP_SYNC_OK);
	kp_bundle_free(&d);
	free(cose);
	/* a table name in the package that is not ours (same length, so only its name differs) */
	p = memmem(b.feeds[0].package, b.feeds[0].package_len, "fare_rules", 10);
	assert_non_null(p);
	memcpy(p, "fare_rulez", 10);
	assert_int_equal(kp_sha256(b.feeds[0].package, b.feeds[0].package_len,
	                           b.feeds[0].digest), 0);
	/* the encoder refuses it; a backend that would not gets it refused by the terminal */
	assert_int_equal(kp_bundle_encode(&b, &cose, &n), KP_SYNC_E_INVAL);
	memcpy(p, "fare_rules", 10);
	assert_int_equal(kp_sha256(b.feeds[0].package, b.feeds[0].package_len,
	                           b.feeds[0].digest), 0);
	assert_int_equal(kp_bundle_encode(&b, &cose, &n), KP_SYNC_OK);
	p = memmem(cose, n, "fare_rules", 10);
	memcpy(p, "fare_rulez", 10);
	plen = n;
	{
		/* re-sign the damaged payload as a (compromised) backend would */
		uint8_t *signed_ = NULL;
		size_t sn = 0;
		uint8_t digest[KP_SHA256_LEN];
		uint8_t *pk = memmem(cose, plen, "package", 7);
		size_t off;

		/* fix the digest so only the whitelist catches it */
		assert_non_null(pk);
		off = (size_t)(pk - cose) + 7;
		/* package bstr head: 0x59 + 2 bytes or 0x58 + 1 byte */
		{
			size_t hl = cose[off] == 0x59 ? 3 : cose[off] == 0x58 ? 2 : 1;
			size_t blen = hl == 3 ? (size_t)cose[off + 1] << 8 | cose[off + 2] :
			              hl == 2 ? cose[off + 1] : (size_t)(cose[off] & 0x1F);
			uint8_t *dg = memmem(cose, plen, b.feeds[0].digest, KP_SHA256_LEN);

			assert_int_equal(kp_sha256(cose + off + hl, blen, digest), 0);
			assert_non_null(dg);
			memcpy(dg, digest, KP_SHA256_LEN);
		}
		assert_int_equal(kp_cose_sign1(key, KP_BUNDLE_KID, cose, plen, &signed_, &sn),
		                 KP_RECORD_OK);
		assert_int_equal(kp_bundle_open_err(cert, signed_, sn, "T-A", 0, &d, err, sizeof(err)),
		                 KP_SYNC_E_MALFORMED);
		assert_string_equal(err, "bundle payload: malformed message or bundle: feed small: "
		                         "fare package: unknown table 'fare_rulez'");
		assert_null(d.feeds);
		free(signed_);
	}
	free(cose);
	kp_bundle_free(&b);
	kp_cert_free(cert);
	kp_key_free(key);
}

/* ---- the terminal applying format 2 ---- */

static int apply(kp_store *s, const struct kp_bundle *b)
{
	struct kp_sync_source src;

	kp_store_sync_source(s, &src);
	return src.apply_bundle(src.ctx, b);
}

static void test_terminal_applies_everything(void **state)
{
	struct kp_bundle b = with_feed(full_bundle(5)), bad;
	kp_store *s = term_open("t1.db");
	struct kp_entitlement e;
	struct kp_transfer_rule r;
	struct kp_discount dsc;
	char route[KP_ID_MAX + 1], stops[8][KP_ID_MAX + 1], feed[KP_ID_MAX + 1];
	uint8_t tok[KP_TOKEN_LEN];
	int64_t amount = 0;
	int found = 0, distance = 0, days = 0, stored = 0;
	size_t n = 0;
	uint64_t acked = 0, version = 0;

	(void)state;
	assert_int_equal(apply(s, &b), KP_OK);
	assert_int_equal(kp_store_product_stored(s, "SV", &stored), KP_OK);
	assert_int_equal(stored, 1);
	assert_int_equal(kp_store_product_period(s, "P1D", &days), KP_OK);
	assert_int_equal(days, 1);
	assert_int_equal(kp_store_product_commuter(s, "CM", route, stops, 8, &n), KP_OK);
	assert_int_equal(n, 3);
	assert_string_equal(route, "R1");
	assert_string_equal(stops[2], "S3");
	memset(tok, 0x22, sizeof(tok));
	assert_int_equal(kp_store_get_entitlement(s, tok, 2, &e), KP_OK);
	assert_int_equal(e.first_use, 1);
	memset(tok, 0x11, sizeof(tok));
	assert_int_equal(kp_store_get_entitlement(s, tok, 1, &e), KP_OK);
	assert_int_equal(e.rides_left, 5000);
	assert_int_equal(kp_store_discount(s, "OP-A", "child", &dsc, &found), KP_OK);
	assert_true(found && dsc.percent == 50 && dsc.rounding == KP_ROUND_UP && dsc.unit == 10);
	assert_int_equal(kp_store_fare_cap(s, "", KP_CAP_DAY, &amount, &found), KP_OK);
	assert_true(found && amount == 1000);
	assert_int_equal(kp_store_fare_cap(s, "child", KP_CAP_MONTH, &amount, &found), KP_OK);
	assert_true(found && amount == 5000);
	assert_int_equal(kp_store_transfer_rule(s, "OP-B", "OP-A", &r, &found), KP_OK);
	assert_true(found && r.off == -1 && r.within_s == 1800);
	assert_int_equal(kp_store_operator_fare(s, "OP-A", feed, sizeof(feed), &distance, &found),
	                 KP_OK);
	assert_true(found && distance == 1);
	assert_string_equal(feed, "small");
	assert_int_equal(count(s, "fare_rules"), 2);
	assert_int_equal(count(s, "fare_attributes"), 2);

	/* a bundle that decodes but that the store refuses (a calendar date's exception type
	 * the schema forbids is caught by decoding already; here: a discount category the
	 * terminal's ids do not allow) changes nothing */
	bad = with_feed(full_bundle(6));
	strcpy(bad.discounts[0].category, "kid s");
	bad.n_caps = 0;
	assert_int_not_equal(apply(s, &bad), KP_OK);
	assert_int_equal(kp_store_fare_cap(s, "", KP_CAP_DAY, &amount, &found), KP_OK);
	assert_true(found && amount == 1000);
	assert_int_equal(count(s, "fare_rules"), 2);
	assert_int_equal(kp_store_sync_state(s, &acked, &version, NULL), KP_OK);
	assert_int_equal(version, 5);
	kp_bundle_free(&bad);

	/* the next bundle withdraws the feed and the fare rules: they go */
	kp_bundle_free(&b);
	b = full_bundle(8);
	b.n_discounts = 0;
	b.n_operator_fares = 0;
	assert_int_equal(apply(s, &b), KP_OK);
	assert_int_equal(count(s, "fare_feeds"), 0);
	assert_int_equal(count(s, "fare_rules"), 0);
	assert_int_equal(kp_store_discount(s, "OP-A", "child", &dsc, &found), KP_OK);
	assert_false(found);
	kp_bundle_free(&b);
	kp_store_close(s);
}

/* The same journeys priced on a terminal that imported the feed itself and on one that got
 * it in a bundle: the same fare, the same rule. The Muroran feed is also the measurement. */
static void test_feed_from_bundle_prices_like_import(void **state)
{
	struct kp_fare_import_opts opts = { "muroran", NULL, NULL };
	struct kp_bundle b, d;
	kp_store *direct = term_open("direct.db"), *synced = term_open("synced.db");
	char err[512], line[512], path[512];
	uint8_t *payload = NULL;
	size_t n = 0, checked = 0;
	struct timespec t0;
	double apply_ms, again_ms, decode_ms;
	FILE *fp;

	(void)state;
	assert_int_equal(kp_fares_import(direct, muroran(NULL), &opts, NULL, err, sizeof(err)), KP_OK);
	memset(&b, 0, sizeof(b));
	b.version = 1;
	b.issued_ms = T0;
	strcpy(b.terminal, "T-A");
	b.n_feeds = 1;
	b.feeds = calloc(1, sizeof(*b.feeds));
	feed_package(muroran(NULL), "muroran", &b.feeds[0]);
	assert_int_equal(kp_bundle_encode(&b, &payload, &n), KP_SYNC_OK);
	assert_true(n < KP_SYNC_FRAME_MAX);
	clock_gettime(CLOCK_MONOTONIC, &t0);
	assert_int_equal(kp_bundle_decode(payload, n, &d), KP_SYNC_OK);
	decode_ms = ms_since(&t0);
	clock_gettime(CLOCK_MONOTONIC, &t0);
	assert_int_equal(apply(synced, &d), KP_OK);
	apply_ms = ms_since(&t0);
	assert_int_equal(count(synced, "fare_rules"), 63745);
	assert_int_equal(count(synced, "fare_rules"), count(direct, "fare_rules"));
	assert_int_equal(count(synced, "fare_attributes"), count(direct, "fare_attributes"));

	/* every 97th fare rule's zones, priced both ways */
	fp = fopen(muroran("fare_rules.txt"), "r");
	assert_non_null(fp);
	for (size_t i = 0; fgets(line, sizeof(line), fp) != NULL; i++) {
		char *f[5] = { 0 }, *save = NULL, *tok = strtok_r(line, ",\r\n", &save);
		struct kp_fare_query q;
		struct kp_fare_result r1, r2;
		int rc1, rc2;

		if (i == 0 || i % 97 != 0)
			continue;
		for (int k = 0; k < 4 && tok != NULL; k++, tok = strtok_r(NULL, ",\r\n", &save))
			f[k] = tok;
		memset(&q, 0, sizeof(q));
		q.feed_id = "muroran";
		q.route_id = f[1];
		q.from_zone = f[2];
		q.to_zone = f[3];
		q.payment_method = -1;
		memset(&r1, 0, sizeof(r1));
		memset(&r2, 0, sizeof(r2));
		rc1 = kp_fare_lookup(direct, &q, &r1);
		rc2 = kp_fare_lookup(synced, &q, &r2);
		assert_int_equal(rc1, rc2);
		assert_int_equal(rc1, KP_OK);
		assert_int_equal(r1.amount, r2.amount);
		assert_string_equal(r1.fare_id, r2.fare_id);
		assert_string_equal(r1.rule, r2.rule);
		checked++;
	}
	fclose(fp);
	assert_true(checked > 600);
	/* a newer bundle with the same feed does not rewrite it: rows a local import put in
	 * behind the bundle's back (the small feed, as "muroran") stay */
	snprintf(path, sizeof(path), "%s/feed", dir);
	assert_int_equal(kp_fares_import(synced, path, &opts, NULL, err, sizeof(err)), KP_OK);
	assert_int_equal(count(synced, "fare_rules"), 2);
	d.version = 2;
	clock_gettime(CLOCK_MONOTONIC, &t0);
	assert_int_equal(apply(synced, &d), KP_OK);
	again_ms = ms_since(&t0);
	assert_int_equal(count(synced, "fare_rules"), 2);
	print_message("muroran feed: package %zu bytes, bundle payload %zu bytes (frame limit %u); "
	              "decode %.1f ms, first apply %.1f ms, apply of the same feed again %.1f ms\n",
	              b.feeds[0].package_len, n, KP_SYNC_FRAME_MAX, decode_ms, apply_ms, again_ms);
	kp_bundle_free(&d);
	free(payload);
	kp_bundle_free(&b);
	kp_store_close(direct);
	kp_store_close(synced);
}

/* A feed the terminal already holds (same digest) is skipped; another digest replaces it. */
static void test_feed_digest_skip(void **state)
{
	struct kp_bundle b = with_feed(full_bundle(1));
	kp_store *s = term_open("skip.db");
	struct kp_fare_import_opts opts = { "small", NULL, NULL };
	char err[512];

	(void)state;
	assert_int_equal(apply(s, &b), KP_OK);
	assert_int_equal(count(s, "fare_rules"), 2);
	/* the rows change behind the bundle's back (a local import of another feed as "small") */
	assert_int_equal(kp_fares_import(s, muroran(NULL), &opts, NULL, err, sizeof(err)), KP_OK);
	assert_int_equal(count(s, "fare_rules"), 63745);
	/* the same digest again: not re-applied (the rows stay as they are) */
	b.version = 2;
	assert_int_equal(apply(s, &b), KP_OK);
	assert_int_equal(count(s, "fare_rules"), 63745);
	/* another digest: replaced */
	kp_bundle_free(&b);
	b = full_bundle(3);
	b.n_feeds = 1;
	b.feeds = calloc(1, sizeof(*b.feeds));
	feed_package(muroran(NULL), "small", &b.feeds[0]);
	b.feeds[0].package[b.feeds[0].package_len - 1] ^= 0;   /* same bytes: the Muroran rows */
	assert_int_equal(apply(s, &b), KP_OK);
	assert_int_equal(count(s, "fare_rules"), 63745);
	kp_bundle_free(&b);
	b = with_feed(full_bundle(4));
	assert_int_equal(apply(s, &b), KP_OK);
	assert_int_equal(count(s, "fare_rules"), 2);
	kp_bundle_free(&b);
	kp_store_close(s);
}

/* ---- the backend ---- */

struct chain {
	uint8_t prev[KP_SHA256_LEN];
	uint64_t seq;
	struct kp_ingest in[16];
	size_t n;
};

static void chain_add(struct chain *c, int64_t ent, const char *product, int64_t rides,
                      int64_t amount, int64_t at)
{
	struct kp_ingest *in = &c->in[c->n++];
	struct kp_record r;
	uint8_t *payload = NULL;
	size_t len = 0;

	memset(&r, 0, sizeof(r));
	strcpy(r.terminal, "T-A");
	r.seq = ++c->seq;
	r.time_ms = at;
	strcpy(r.kind, "tap");
	strcpy(r.operator_id, "OP-A");
	r.has_token = 1;
	memset(r.token, 0x33, KP_TOKEN_LEN);
	strcpy(r.product, product);
	r.entitlement = ent;
	r.rides = rides;
	r.amount = amount;
	strcpy(r.result, "accepted");
	strcpy(r.reason, "ok");
	memcpy(r.prev, c->prev, KP_SHA256_LEN);
	assert_int_equal(kp_record_encode(&r, &payload, &len), KP_RECORD_OK);
	memset(in, 0, sizeof(*in));
	in->payload = payload;
	in->payload_len = len;
	in->cose = payload;
	in->cose_len = len;
	in->sig_ok = 1;
	in->rec = r;
	assert_int_equal(kp_sha256(payload, len, in->hash), 0);
	memcpy(c->prev, in->hash, KP_SHA256_LEN);
}

static void ingest(kp_bstore *s, struct chain *c)
{
	uint64_t acked = 0, refused = 0;
	char reason[128];

	assert_int_equal(kp_bstore_ingest(s, "T-A", c->in, c->n, T0, &acked, &refused, reason,
	                                  sizeof(reason)), KP_BE_OK);
	assert_int_equal(refused, 0);
	assert_int_equal(acked, c->seq);
	for (size_t i = 0; i < c->n; i++)
		free((void *)c->in[i].payload);
	c->n = 0;
}

static const struct kp_bundle_entitlement *ent_of(const struct kp_bundle *b, int64_t id)
{
	for (size_t i = 0; i < b->n_entitlements; i++) {
		if (b->entitlements[i].id == id)
			return &b->entitlements[i];
	}
	fail_msg("no entitlement %lld", (long long)id);
	return NULL;
}

static void test_backend_stored_value_and_first_use(void **state)
{
	struct kp_bundle cfg = full_bundle(1), b;
	struct chain c;
	kp_bstore *s = NULL;
	char path[700];
	uint8_t card[KP_TOKEN_LEN];
	int64_t sv = 0, nr = 0, pass = 0, day;
	uint64_t acked = 0;
	int has = 0;

	(void)state;
	memset(&c, 0, sizeof(c));
	memset(card, 0x33, sizeof(card));
	tu_store_conn(path, sizeof(path), dir);
	remove(path);
	assert_int_equal(kp_bstore_open(&s, path), KP_BE_OK);
	/* the whole configuration in one go (no cards: those are sold) */
	assert_int_equal(kp_bstore_put_config(s, &cfg), KP_BE_E_INVAL);
	cfg.n_entitlements = 0;
	assert_int_equal(kp_bstore_put_config(s, &cfg), KP_BE_OK);
	assert_int_equal(kp_bstore_register_card(s, card, "rider", T0), KP_BE_OK);
	/* stored value needs a balance; other kinds refuse one; first use only for passes */
	assert_int_equal(kp_bstore_sell_ex(s, card, "SV", T0, T1, 0, 0, T0, &sv), KP_BE_E_INVAL);
	assert_int_equal(kp_bstore_sell_ex(s, card, "R10", T0, T1, 100, 0, T0, &nr), KP_BE_E_INVAL);
	assert_int_equal(kp_bstore_sell_ex(s, card, "R10", T0, T1, 0, 1, T0, &nr), KP_BE_E_INVAL);
	assert_int_equal(kp_bstore_sell_ex(s, card, "SV", T0, T1, 1000, 0, T0, &sv), KP_BE_OK);
	assert_int_equal(kp_bstore_sell_ex(s, card, "R10", T0, T1, 0, 0, T0, &nr), KP_BE_OK);
	assert_int_equal(kp_bstore_sell_ex(s, card, "P1D", T0, T1, 0, 1, T0, &pass), KP_BE_OK);
	/* a sold product keeps its kind */
	cfg.products[3].kind = KP_PRODUCT_NRIDE;
	cfg.products[3].rides = 5;
	assert_int_equal(kp_bstore_put_config(s, &cfg), KP_BE_E_INVAL);
	cfg.products[3].kind = KP_PRODUCT_STORED;

	/* charges of 330 and 250 minor units from stored value, one ride, a pass's first tap
	 * at 2026-01-10 02:00 JST (service day 2026-01-09, 04:00 JST = 2026-01-08T19:00Z) */
	assert_int_equal(kp_bstore_terminal_add(s, "T-A", NULL, T0, NULL), KP_BE_OK);
	assert_int_equal(kp_bstore_terminal_seen(s, "T-A", (const uint8_t *)"x", 1, T0, &acked),
	                 KP_BE_OK);
	day = T0 + 9LL * 86400000 - 7LL * 3600000;       /* 2026-01-09T17:00Z = 01-10 02:00 JST */
	chain_add(&c, sv, "SV", 0, 330, T0 + 1000);
	chain_add(&c, sv, "SV", 0, 250, T0 + 2000);
	chain_add(&c, nr, "R10", 1, 0, T0 + 3000);
	chain_add(&c, pass, "P1D", 0, 0, day);
	ingest(s, &c);
	assert_int_equal(kp_bstore_bundle(s, "T-A", 0, T0, &b, &has), KP_BE_OK);
	assert_true(has);
	assert_int_equal(b.format, 2);
	assert_int_equal(ent_of(&b, sv)->remaining, 1000 - 330 - 250);
	assert_int_equal(ent_of(&b, nr)->remaining, 9);
	assert_int_equal(ent_of(&b, pass)->first_use, 0);
	assert_int_equal(ent_of(&b, pass)->valid_from_ms, T0 + 7LL * 86400000 + 19LL * 3600000);
	assert_int_equal(ent_of(&b, pass)->valid_until_ms, T0 + 8LL * 86400000 + 19LL * 3600000);
	assert_int_equal(b.n_denylist, 0);
	assert_int_equal(b.n_discounts, 1);
	assert_int_equal(b.n_transfers, 2);
	kp_bundle_free(&b);

	/* overdrawn across terminals (500 more than the 420 left): the card is denied */
	chain_add(&c, sv, "SV", 0, 500, T0 + 4000);
	ingest(s, &c);
	assert_int_equal(kp_bstore_bundle(s, "T-A", 0, T0, &b, &has), KP_BE_OK);
	assert_int_equal(ent_of(&b, sv)->remaining, 0);
	assert_int_equal(b.n_denylist, 1);
	assert_memory_equal(b.denylist[0].token, card, KP_TOKEN_LEN);
	kp_bundle_free(&b);
	kp_bundle_free(&cfg);
	kp_bstore_close(s);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_package_whitelist_and_roundtrip),
		cmocka_unit_test(test_package_refused),
		cmocka_unit_test(test_bundle_format2_roundtrip),
		cmocka_unit_test(test_bundle_bad_feed_refused),
		cmocka_unit_test(test_terminal_applies_everything),
		cmocka_unit_test(test_feed_from_bundle_prices_like_import),
		cmocka_unit_test(test_feed_digest_skip),
		cmocka_unit_test(test_backend_stored_value_and_first_use),
	};

	/* the store's case on PostgreSQL (KIPPU_TEST_PG, tests/backend/test_store_pg.sh) */
	const struct CMUnitTest on_pg[] = {
		cmocka_unit_test(test_backend_stored_value_and_first_use),
	};
	const char *pg = getenv("KIPPU_TEST_PG");

	if (pg != NULL && pg[0] != '\0')
		return cmocka_run_group_tests_name("bundle_fares_pg", on_pg, group_setup,
		                                   group_teardown);
	return cmocka_run_group_tests_name("bundle_fares", tests, group_setup, group_teardown);
}
