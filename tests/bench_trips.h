/* SPDX-License-Identifier: Apache-2.0 */
/* The Muroran feed (the largest real feed in ../shared/data/gtfs: 706 stops, 63,745 route +
 * origin/destination fare rules) and journeys it prices, for the benches that tap with
 * stored value (kippu-bench-fares, kippu-bench's mix). Header-only, as each bench is one
 * program of its own. */
#ifndef KP_BENCH_TRIPS_H
#define KP_BENCH_TRIPS_H

#include <sqlite3.h>
#include <stddef.h>
#include <stdio.h>

#include "kp_terminal.h"

#define FEED_DIR "../shared/data/gtfs/jp-donanbus-muroran-zone"

struct trip { char route[40], from[40], to[40]; };

/* The scheme of the stored-value benches, inside the caller's transaction: operator DN
 * prices by the feed (imported as "muroran") with tap-on/tap-off, riders hold stored value
 * (product SV), and a day cap of 1500. A kippu return code. */
static __attribute__((unused)) int put_dn_scheme(kp_store *s)
{
	const char *dn[] = { "DN" };
	int rc = kp_store_put_operator(s, "DN", "Donan Bus");

	if (rc == KP_OK)
		rc = kp_store_put_operator_fare(s, "DN", "muroran", 1);
	if (rc == KP_OK)
		rc = kp_store_put_product_stored(s, "SV", "Scheme account", dn, 1);
	if (rc == KP_OK)
		rc = kp_store_put_fare_cap(s, "", KP_CAP_DAY, 1500);
	return rc;
}

/* Journeys the feed prices: a rule's route, and a stop in its origin and in its
 * destination zone (the feed's zones are stops). */
static __attribute__((unused)) size_t sample_trips(const char *db, struct trip *t, size_t n)
{
	sqlite3 *h = NULL;
	sqlite3_stmt *st = NULL;
	size_t k = 0;

	if (sqlite3_open_v2(db, &h, SQLITE_OPEN_READONLY, NULL) != SQLITE_OK ||
	    sqlite3_prepare_v2(h, "SELECT r.route_id, a.stop_id, b.stop_id FROM fare_rules r"
	                       " JOIN fare_stops a ON a.feed_id = r.feed_id AND a.zone_id = r.origin_id"
	                       " JOIN fare_stops b ON b.feed_id = r.feed_id"
	                       "  AND b.zone_id = r.destination_id"
	                       " WHERE r.feed_id = 'muroran' AND r.route_id <> '' AND a.stop_id <> b.stop_id"
	                       " AND length(r.route_id) <= 32 AND length(a.stop_id) <= 32"
	                       " AND length(b.stop_id) <= 32"
	                       " ORDER BY random() LIMIT ?1", -1, &st, NULL) != SQLITE_OK)
		return 0;
	sqlite3_bind_int64(st, 1, (sqlite3_int64)n);
	while (k < n && sqlite3_step(st) == SQLITE_ROW) {
		snprintf(t[k].route, sizeof(t[k].route), "%s", (const char *)sqlite3_column_text(st, 0));
		snprintf(t[k].from, sizeof(t[k].from), "%s", (const char *)sqlite3_column_text(st, 1));
		snprintf(t[k].to, sizeof(t[k].to), "%s", (const char *)sqlite3_column_text(st, 2));
		k++;
	}
	sqlite3_finalize(st);
	sqlite3_close(h);
	return k;
}

#endif
