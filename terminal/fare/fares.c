/* SPDX-License-Identifier: Apache-2.0 */
/* Fare lookup over imported GTFS fares, and money without floating point.
 * v1 (fare_attributes + fare_rules): empty rule fields are wildcards; of all matching fares
 * the cheapest is charged (the spec leaves the choice to the consumer; the cheapest is what a
 * rider expects and what a ticket office would sell).
 * v2 (fare_leg_rules): network, from/to area and from/to timeframe are matched as the spec
 * says; the highest rule_priority wins, then the cheapest product for the rider category. */
#include <stdio.h>
#include <string.h>

#include "kp_fare.h"
#include "kp_store_sql.h"

static const struct { const char code[4]; int digits; } currencies[] = {
	{ "AED", 2 }, { "ARS", 2 }, { "AUD", 2 }, { "BGN", 2 }, { "BHD", 3 }, { "BIF", 0 },
	{ "BRL", 2 }, { "CAD", 2 }, { "CHF", 2 }, { "CLP", 0 }, { "CNY", 2 }, { "COP", 2 },
	{ "CZK", 2 }, { "DJF", 0 }, { "DKK", 2 }, { "EGP", 2 }, { "EUR", 2 }, { "GBP", 2 },
	{ "GNF", 0 }, { "HKD", 2 }, { "HUF", 2 }, { "IDR", 2 }, { "ILS", 2 }, { "INR", 2 },
	{ "IQD", 3 }, { "ISK", 0 }, { "JOD", 3 }, { "JPY", 0 }, { "KMF", 0 }, { "KRW", 0 },
	{ "KWD", 3 }, { "LYD", 3 }, { "MXN", 2 }, { "MYR", 2 }, { "NOK", 2 }, { "NZD", 2 },
	{ "OMR", 3 }, { "PHP", 2 }, { "PLN", 2 }, { "PYG", 0 }, { "RON", 2 }, { "RWF", 0 },
	{ "SAR", 2 }, { "SEK", 2 }, { "SGD", 2 }, { "THB", 2 }, { "TND", 3 }, { "TRY", 2 },
	{ "TWD", 2 }, { "UAH", 2 }, { "UGX", 0 }, { "USD", 2 }, { "UYI", 0 }, { "VND", 0 },
	{ "VUV", 0 }, { "XAF", 0 }, { "XOF", 0 }, { "XPF", 0 }, { "ZAR", 2 },
};

int kp_currency_digits(const char *code)
{
	for (size_t i = 0; code != NULL && i < sizeof(currencies) / sizeof(currencies[0]); i++) {
		if (strcmp(code, currencies[i].code) == 0)
			return currencies[i].digits;
	}
	return -1;
}

int kp_money_parse(const char *s, int digits, int allow_negative, int64_t *out)
{
	const int64_t cap = 1000000000000000LL;   /* 10^15 minor units: no real fare comes close */
	int64_t v = 0;
	int neg = 0, frac = -1, any = 0;

	if (s == NULL || digits < 0 || digits > 4)
		return KP_E_PARSE;
	if (*s == '-') {
		neg = 1;
		s++;
	}
	for (; *s != '\0'; s++) {
		if (*s == '.' && frac < 0) {
			frac = 0;
			continue;
		}
		if (*s < '0' || *s > '9')
			return KP_E_PARSE;
		if (frac >= 0 && ++frac > digits)
			return KP_E_PARSE;
		v = v * 10 + (*s - '0');
		any = 1;
		if (v > cap)
			return KP_E_PARSE;
	}
	if (!any || (neg && !allow_negative))
		return KP_E_PARSE;
	for (int i = frac < 0 ? 0 : frac; i < digits; i++)
		v *= 10;
	if (v > cap)
		return KP_E_PARSE;
	*out = neg ? -v : v;
	return KP_OK;
}

static int is_set(const char *s)
{
	return s != NULL && s[0] != '\0';
}

struct feed_info {
	int has_leg_rules, has_priority;
	char default_cat[KP_FARE_ID_MAX + 1];
};

static int feed_get(kp_store *s, const char *feed, struct feed_info *fi)
{
	sqlite3_stmt *st = NULL;
	int rc;

	st = kp_store_stmt_sql(s, KP_STMT_FARE_FEED, "SELECT has_leg_rules, has_rule_priority,"
	                       " default_category FROM fare_feeds WHERE feed_id = ?1");
	if (st == NULL)
		return KP_E_DB;
	sqlite3_bind_text(st, 1, feed, -1, SQLITE_STATIC);
	rc = sqlite3_step(st);
	if (rc == SQLITE_ROW) {
		fi->has_leg_rules = sqlite3_column_int(st, 0);
		fi->has_priority = sqlite3_column_int(st, 1);
		kp_store_col_text(st, 2, fi->default_cat, sizeof(fi->default_cat));
		rc = KP_OK;
	} else if (rc == SQLITE_DONE) {
		snprintf(s->err, sizeof(s->err), "no fare feed \"%s\"", feed);
		rc = KP_E_INVAL;
	} else {
		rc = kp_store_fail(s, "fare feed");
	}
	sqlite3_reset(st);
	return rc;
}

/* The zone (v1) of a stop: the query's zone if given, else stops.txt's zone_id. *zone is
 * "" when the stop has none; KP_E_INVAL if the stop is unknown. */
static int stop_zone(kp_store *s, const char *feed, const char *stop, const char *zone,
                     char *out, size_t cap)
{
	sqlite3_stmt *st = NULL;
	int rc;

	out[0] = '\0';
	if (is_set(zone) || !is_set(stop)) {
		snprintf(out, cap, "%s", is_set(zone) ? zone : "");
		return KP_OK;
	}
	st = kp_store_stmt_sql(s, KP_STMT_FARE_STOP, "SELECT zone_id FROM fare_stops"
	                       " WHERE feed_id = ?1 AND stop_id = ?2");
	if (st == NULL)
		return KP_E_DB;
	sqlite3_bind_text(st, 1, feed, -1, SQLITE_STATIC);
	sqlite3_bind_text(st, 2, stop, -1, SQLITE_STATIC);
	rc = sqlite3_step(st);
	if (rc == SQLITE_ROW) {
		kp_store_col_text(st, 0, out, cap);
		rc = KP_OK;
	} else if (rc == SQLITE_DONE) {
		snprintf(s->err, sizeof(s->err), "feed %s has no stop \"%s\"", feed, stop);
		rc = KP_E_INVAL;
	} else {
		rc = kp_store_fail(s, "fare stop");
	}
	sqlite3_reset(st);
	return rc;
}

/* v1. Rules without contains_id match on route, origin and destination (IN ('', x): the
 * empty field is a wildcard, and the index serves both). A fare with contains_id rules
 * matches when its contained zones are exactly the leg's zones; a lookup knows only the
 * origin and destination zones, not the ones passed through. A feed without fare_rules
 * makes every fare apply everywhere. */
static const char v1_sql[] =
	"SELECT a.fare_id, coalesce(rp.price, a.price) AS p, coalesce(rp.currency, a.currency),"
	"  'fare_rules.txt:' || r.line, coalesce(rp.rider_category_id, '')"
	" FROM fare_rules r JOIN fare_attributes a ON a.feed_id = r.feed_id AND a.fare_id = r.fare_id"
	" LEFT JOIN fare_rider_prices rp ON rp.feed_id = a.feed_id AND rp.fare_id = a.fare_id"
	"  AND rp.rider_category_id = ?5"
	" WHERE r.feed_id = ?1 AND r.origin_id IN ('', ?3) AND r.destination_id IN ('', ?4)"
	"  AND r.route_id IN ('', ?2) AND r.contains_id = '' AND (?6 < 0 OR a.payment_method = ?6)"
	" UNION ALL"
	" SELECT a.fare_id, coalesce(rp.price, a.price), coalesce(rp.currency, a.currency),"
	"  'fare_rules.txt:' || min(r.line), coalesce(rp.rider_category_id, '')"
	" FROM fare_rules r JOIN fare_attributes a ON a.feed_id = r.feed_id AND a.fare_id = r.fare_id"
	" LEFT JOIN fare_rider_prices rp ON rp.feed_id = a.feed_id AND rp.fare_id = a.fare_id"
	"  AND rp.rider_category_id = ?5"
	" WHERE r.feed_id = ?1 AND r.origin_id IN ('', ?3) AND r.destination_id IN ('', ?4)"
	"  AND r.route_id IN ('', ?2) AND r.contains_id <> '' AND (?6 < 0 OR a.payment_method = ?6)"
	" GROUP BY a.fare_id HAVING ?7 > 0 AND count(DISTINCT r.contains_id) = ?7"
	"  AND count(DISTINCT CASE WHEN r.contains_id IN (?3, ?4) THEN r.contains_id END) = ?7"
	" UNION ALL"
	" SELECT a.fare_id, coalesce(rp.price, a.price), coalesce(rp.currency, a.currency),"
	"  'fare_attributes.txt:' || a.line || ' (no fare_rules)', coalesce(rp.rider_category_id, '')"
	" FROM fare_attributes a LEFT JOIN fare_rider_prices rp ON rp.feed_id = a.feed_id"
	"  AND rp.fare_id = a.fare_id AND rp.rider_category_id = ?5"
	" WHERE a.feed_id = ?1 AND (?6 < 0 OR a.payment_method = ?6)"
	"  AND NOT EXISTS (SELECT 1 FROM fare_rules x WHERE x.feed_id = ?1)"
	" ORDER BY 2, 1 LIMIT 1";

/* v1, the highest fare from an origin (a journey without tap-off): a rule with an empty
 * destination matches every destination, so when one matches it bounds every destination
 * and its cheapest fare is the answer; otherwise the dearest of the per-destination
 * cheapest fares. Rules with contains_id are left out (the zones passed are unknown). */
#define V1_MAX_FROM                                                                            \
	" FROM fare_rules r JOIN fare_attributes a ON a.feed_id = r.feed_id AND a.fare_id = r.fare_id" \
	" LEFT JOIN fare_rider_prices rp ON rp.feed_id = a.feed_id AND rp.fare_id = a.fare_id"        \
	"  AND rp.rider_category_id = ?5"                                                            \
	" WHERE r.feed_id = ?1 AND r.origin_id IN ('', ?3) AND r.route_id IN ('', ?2)"                \
	"  AND r.contains_id = '' AND (?6 < 0 OR a.payment_method = ?6)"
static const char v1_max_sql[] =
	"SELECT f, p, cur, rule, cat FROM ("
	" SELECT 0 AS k, a.fare_id AS f, coalesce(rp.price, a.price) AS p,"
	"  coalesce(rp.currency, a.currency) AS cur,"
	"  'fare_rules.txt:' || r.line || ' (any destination)' AS rule,"
	"  coalesce(rp.rider_category_id, '') AS cat"
	V1_MAX_FROM " AND r.destination_id = ''"
	" UNION ALL"
	" SELECT 1, a.fare_id, min(coalesce(rp.price, a.price)), coalesce(rp.currency, a.currency),"
	"  'fare_rules.txt:' || r.line || ' (highest, to ' || r.destination_id || ')',"
	"  coalesce(rp.rider_category_id, '')"
	V1_MAX_FROM " AND r.destination_id <> '' GROUP BY r.destination_id"
	" UNION ALL"
	" SELECT 0, a.fare_id, coalesce(rp.price, a.price), coalesce(rp.currency, a.currency),"
	"  'fare_attributes.txt:' || a.line || ' (no fare_rules)', coalesce(rp.rider_category_id, '')"
	" FROM fare_attributes a LEFT JOIN fare_rider_prices rp ON rp.feed_id = a.feed_id"
	"  AND rp.fare_id = a.fare_id AND rp.rider_category_id = ?5"
	" WHERE a.feed_id = ?1 AND (?6 < 0 OR a.payment_method = ?6)"
	"  AND NOT EXISTS (SELECT 1 FROM fare_rules x WHERE x.feed_id = ?1)"
	") ORDER BY k, CASE k WHEN 0 THEN p ELSE -p END, f LIMIT 1";

/* The matching rule of a v1 or v2 lookup: v2 rows start with the leg group, then both
 * give fare id, amount, currency, rule and rider category. */
static int fare_row(kp_store *s, sqlite3_stmt *st, enum kp_fare_model model,
                    struct kp_fare_result *r)
{
	int rc = sqlite3_step(st), c = model == KP_FARE_V2 ? 1 : 0;

	if (rc == SQLITE_ROW) {
		r->model = model;
		if (model == KP_FARE_V2)
			kp_store_col_text(st, 0, r->leg_group_id, sizeof(r->leg_group_id));
		kp_store_col_text(st, c, r->fare_id, sizeof(r->fare_id));
		r->amount = sqlite3_column_int64(st, c + 1);
		kp_store_col_text(st, c + 2, r->currency, sizeof(r->currency));
		kp_store_col_text(st, c + 3, r->rule, sizeof(r->rule));
		kp_store_col_text(st, c + 4, r->rider_category, sizeof(r->rider_category));
		rc = KP_OK;
	} else {
		rc = rc == SQLITE_DONE ? KP_E_NOFARE
		     : kp_store_fail(s, model == KP_FARE_V2 ? "fare lookup v2" : "fare lookup v1");
	}
	sqlite3_reset(st);
	return rc;
}

static int lookup_v1(kp_store *s, const struct kp_fare_query *q, const char *cat,
                     struct kp_fare_result *r)
{
	char from[KP_FARE_ID_MAX + 1], to[KP_FARE_ID_MAX + 1];
	sqlite3_stmt *st = NULL;
	int rc, nz;

	rc = stop_zone(s, q->feed_id, q->from_stop, q->from_zone, from, sizeof(from));
	if (rc == KP_OK && !q->max_to)
		rc = stop_zone(s, q->feed_id, q->to_stop, q->to_zone, to, sizeof(to));
	else
		to[0] = '\0';
	if (rc != KP_OK)
		return rc;
	nz = (from[0] != '\0') + (to[0] != '\0' && strcmp(from, to) != 0);
	st = q->max_to ? kp_store_stmt_sql(s, KP_STMT_FARE_V1_MAX, v1_max_sql) :
	                 kp_store_stmt_sql(s, KP_STMT_FARE_V1, v1_sql);
	if (st == NULL)
		return KP_E_DB;
	sqlite3_bind_text(st, 1, q->feed_id, -1, SQLITE_STATIC);
	kp_store_bind_opt(st, 2, q->route_id);
	kp_store_bind_opt(st, 3, from);
	kp_store_bind_opt(st, 4, to);
	sqlite3_bind_text(st, 5, cat, -1, SQLITE_STATIC);
	sqlite3_bind_int(st, 6, q->payment_method);
	sqlite3_bind_int(st, 7, nz);
	return fare_row(s, st, KP_FARE_V1, r);
}

/* v2. Without a rule_priority column, an empty field matches only legs whose value no rule
 * names ("all networks excluding the ones listed"); with it, an empty field matches any leg
 * (?10). A leg's time falls in a timeframe group when the service of one of its rows runs on
 * the date and start_time <= time < end_time; a query without a date matches no timeframe.
 * Products that fare_transfer_rules charge are transfer products: not sold for a single leg. */
#define V2_FIELD(col, set)                                                                    \
	" AND (r." col " IN " set " OR (r." col " = '' AND (?10 OR NOT EXISTS (SELECT 1 FROM"      \
	" fare_leg_rules x WHERE x.feed_id = ?1 AND x." col " IN " set "))))"

/* The CTEs both v2 lookups share: the leg's networks, boarding areas, and the timeframe
 * groups its date and time fall in. */
#define V2_HEAD                                                                              \
	"WITH net(id) AS (SELECT network_id FROM fare_route_networks WHERE feed_id = ?1"          \
	"  AND route_id = ?2 UNION SELECT network_id FROM fare_routes WHERE feed_id = ?1"           \
	"  AND route_id = ?2 AND network_id <> ''),"                                                \
	" fa(id) AS (SELECT area_id FROM fare_stop_areas WHERE feed_id = ?1 AND stop_id = ?3"      \
	"  AND ?5 IS NULL UNION SELECT ?5 WHERE ?5 IS NOT NULL),"                                   \
	" svc(id) AS (SELECT service_id FROM fare_calendar WHERE feed_id = ?1 AND start_date <= ?7" \
	"  AND end_date >= ?7 AND (days >> ?8) & 1"                                                 \
	"  EXCEPT SELECT service_id FROM fare_calendar_dates WHERE feed_id = ?1 AND date = ?7"      \
	"  AND exception_type = 2"                                                                  \
	"  UNION SELECT service_id FROM fare_calendar_dates WHERE feed_id = ?1 AND date = ?7"       \
	"  AND exception_type = 1),"                                                                \
	" tf(id) AS (SELECT timeframe_group_id FROM fare_timeframes WHERE feed_id = ?1"             \
	"  AND service_id IN svc AND start_s <= ?9 AND ?9 < end_s)"

static const char v2_sql[] =
	V2_HEAD
	", ta(id) AS (SELECT area_id FROM fare_stop_areas WHERE feed_id = ?1 AND stop_id = ?4"
	"  AND ?6 IS NULL UNION SELECT ?6 WHERE ?6 IS NOT NULL)"
	" SELECT r.leg_group_id, r.fare_product_id, p.amount, p.currency,"
	"  'fare_leg_rules.txt:' || r.line, p.rider_category_id"
	" FROM fare_leg_rules r JOIN fare_products p ON p.feed_id = r.feed_id"
	"  AND p.fare_product_id = r.fare_product_id"
	" WHERE r.feed_id = ?1"
	V2_FIELD("network_id", "net")
	V2_FIELD("from_area_id", "fa")
	V2_FIELD("to_area_id", "ta")
	V2_FIELD("from_timeframe_group_id", "tf")
	V2_FIELD("to_timeframe_group_id", "tf")
	"  AND p.rider_category_id IN ('', ?11)"
	"  AND (?12 IS NULL OR p.fare_media_id IN ('', ?12))"
	"  AND NOT EXISTS (SELECT 1 FROM fare_transfer_rules t WHERE t.feed_id = ?1"
	"   AND t.fare_product_id = r.fare_product_id)"
	" ORDER BY r.rule_priority DESC, p.amount, r.leg_group_id, r.fare_product_id, r.line"
	" LIMIT 1";

/* v2, the highest fare from a boarding area (a journey without tap-off): the same match
 * without the destination area and arrival timeframe, the dearest product of the best
 * priority. */
static const char v2_max_sql[] =
	V2_HEAD
	" SELECT r.leg_group_id, r.fare_product_id, p.amount, p.currency,"
	"  'fare_leg_rules.txt:' || r.line || ' (highest from boarding)', p.rider_category_id"
	" FROM fare_leg_rules r JOIN fare_products p ON p.feed_id = r.feed_id"
	"  AND p.fare_product_id = r.fare_product_id"
	" WHERE r.feed_id = ?1"
	V2_FIELD("network_id", "net")
	V2_FIELD("from_area_id", "fa")
	V2_FIELD("from_timeframe_group_id", "tf")
	"  AND p.rider_category_id IN ('', ?11)"
	"  AND (?12 IS NULL OR p.fare_media_id IN ('', ?12))"
	"  AND NOT EXISTS (SELECT 1 FROM fare_transfer_rules t WHERE t.feed_id = ?1"
	"   AND t.fare_product_id = r.fare_product_id)"
	" ORDER BY r.rule_priority DESC, p.amount DESC, r.leg_group_id, r.fare_product_id, r.line"
	" LIMIT 1";

/* Monday = 0 .. Sunday = 6 of a YYYYMMDD date (Sakamoto's method). */
static int weekday(int32_t date)
{
	static const int t[] = { 0, 3, 2, 5, 0, 3, 5, 1, 4, 6, 2, 4 };
	int y = date / 10000, m = date / 100 % 100, d = date % 100;

	if (m < 1 || m > 12)
		return 0;
	if (m < 3)
		y--;
	return ((y + y / 4 - y / 100 + y / 400 + t[m - 1] + d) % 7 + 6) % 7;
}

static int lookup_v2(kp_store *s, const struct kp_fare_query *q, const char *cat, int prio,
                     struct kp_fare_result *r)
{
	sqlite3_stmt *st = NULL;

	st = q->max_to ? kp_store_stmt_sql(s, KP_STMT_FARE_V2_MAX, v2_max_sql) :
	                 kp_store_stmt_sql(s, KP_STMT_FARE_V2, v2_sql);
	if (st == NULL)
		return KP_E_DB;
	sqlite3_bind_text(st, 1, q->feed_id, -1, SQLITE_STATIC);
	kp_store_bind_opt(st, 2, q->route_id);
	kp_store_bind_opt(st, 3, q->from_stop);
	kp_store_bind_opt(st, 4, q->to_stop);
	kp_store_bind_opt(st, 5, q->from_zone);
	kp_store_bind_opt(st, 6, q->to_zone);
	sqlite3_bind_int(st, 7, q->date);
	sqlite3_bind_int(st, 8, weekday(q->date));
	sqlite3_bind_int(st, 9, q->time_s);
	sqlite3_bind_int(st, 10, prio);
	sqlite3_bind_text(st, 11, cat, -1, SQLITE_STATIC);
	kp_store_bind_opt(st, 12, q->fare_media);
	return fare_row(s, st, KP_FARE_V2, r);
}

int kp_fare_lookup(kp_store *s, const struct kp_fare_query *q, struct kp_fare_result *r)
{
	struct feed_info fi;
	const char *cat;
	int rc, v2;

	if (s == NULL || q == NULL || r == NULL || !is_set(q->feed_id))
		return KP_E_INVAL;
	memset(r, 0, sizeof(*r));
	s->err[0] = '\0';
	rc = feed_get(s, q->feed_id, &fi);
	if (rc != KP_OK)
		return rc;
	cat = is_set(q->rider_category) ? q->rider_category : fi.default_cat;
	v2 = q->model == KP_FARE_V2 || (q->model == KP_FARE_AUTO && fi.has_leg_rules);
	rc = v2 ? lookup_v2(s, q, cat, fi.has_priority, r) : lookup_v1(s, q, cat, r);
	if (rc == KP_OK)
		r->minor_digits = kp_currency_digits(r->currency);
	return rc;
}

/* A rule's duration_limit_type picks which taps the limit spans: of the first leg (the
 * previous one, or the first of the rule's run) and of this one. */
static int64_t transfer_span_ms(const struct kp_fare_transfer_query *q,
                                const struct kp_fare_run *first, int type)
{
	switch (type) {
	case 0:  return q->off_ms - first->on_ms;      /* departure -> arrival */
	case 1:  return q->on_ms - first->on_ms;       /* departure -> departure */
	case 2:  return q->on_ms - first->off_ms;      /* arrival -> departure */
	default: return q->off_ms - first->off_ms;     /* 3: arrival -> arrival */
	}
}

int kp_fare_transfer_v2(kp_store *s, const struct kp_fare_transfer_query *q,
                        struct kp_fare_transfer_result *r, int *found)
{
	static const char sql[] =
		"SELECT t.transfer_count, t.duration_limit, t.duration_limit_type,"
		" t.fare_transfer_type, t.line, t.fare_product_id,"
		" CASE WHEN t.fare_product_id = '' THEN 0 ELSE (SELECT min(p.amount) FROM fare_products p"
		"  WHERE p.feed_id = t.feed_id AND p.fare_product_id = t.fare_product_id"
		"  AND p.rider_category_id IN ('', ?4)) END,"
		" t.from_leg_group_id, t.to_leg_group_id"
		" FROM fare_transfer_rules t WHERE t.feed_id = ?1 AND t.from_leg_group_id IN ('', ?2)"
		" AND t.to_leg_group_id IN ('', ?3) ORDER BY t.line";
	struct feed_info fi;
	sqlite3_stmt *st = NULL;
	int rc;

	*found = 0;
	if (q == NULL || !is_set(q->feed_id))
		return KP_E_INVAL;
	rc = feed_get(s, q->feed_id, &fi);
	if (rc != KP_OK)
		return rc;
	st = kp_store_stmt_sql(s, KP_STMT_FARE_XFER_V2, sql);
	if (st == NULL)
		return KP_E_DB;
	sqlite3_bind_text(st, 1, q->feed_id, -1, SQLITE_STATIC);
	sqlite3_bind_text(st, 2, q->from_group != NULL ? q->from_group : "", -1, SQLITE_STATIC);
	sqlite3_bind_text(st, 3, q->to_group != NULL ? q->to_group : "", -1, SQLITE_STATIC);
	sqlite3_bind_text(st, 4, is_set(q->rider_category) ? q->rider_category : fi.default_cat, -1,
	                  SQLITE_STATIC);
	while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
		struct kp_fare_run run;
		int64_t ab, c;
		int type = sqlite3_column_int(st, 3);

		if (sqlite3_column_type(st, 6) == SQLITE_NULL)
			continue;                       /* no price for this rider category */
		if (sqlite3_column_type(st, 0) != SQLITE_NULL && sqlite3_column_int(st, 0) >= 0 &&
		    q->transfers_so_far >= sqlite3_column_int(st, 0))
			continue;
		/* A rule of the pair that reached the previous leg continues that run: its limit
		 * counts from the run's first leg. Any other rule starts a run at the previous leg. */
		kp_store_col_text(st, 7, run.from_group, sizeof(run.from_group));
		kp_store_col_text(st, 8, run.to_group, sizeof(run.to_group));
		if (q->run != NULL && strcmp(run.from_group, q->run->from_group) == 0 &&
		    strcmp(run.to_group, q->run->to_group) == 0) {
			run.on_ms = q->run->on_ms;
			run.off_ms = q->run->off_ms;
		} else {
			run.on_ms = q->prev_on_ms;
			run.off_ms = q->prev_off_ms;
		}
		if (sqlite3_column_type(st, 1) != SQLITE_NULL) {
			int64_t span = transfer_span_ms(q, &run, sqlite3_column_int(st, 2));

			if (span < 0 || span > sqlite3_column_int64(st, 1) * 1000)
				continue;
		}
		ab = sqlite3_column_int64(st, 6);
		c = type == 0 ? ab : type == 1 ? ab + q->fare : ab - q->prev_paid;
		if (c < 0)
			c = 0;
		if (!*found || c < r->cost) {
			r->cost = c;
			r->run = run;
			*found = 1;
			snprintf(r->rule, sizeof(r->rule), "fare_transfer_rules.txt:%d type %d",
			         sqlite3_column_int(st, 4), type);
		}
	}
	rc = rc == SQLITE_DONE ? KP_OK : kp_store_fail(s, "fare transfer v2");
	sqlite3_reset(st);
	return rc;
}

int kp_fare_v1_transfers(kp_store *s, const char *feed_id, const char *fare_id, int *transfers,
                         int64_t *duration_s, int *found)
{
	sqlite3_stmt *st = NULL;
	int rc;

	*found = 0;
	st = kp_store_stmt_sql(s, KP_STMT_FARE_XFER_V1, "SELECT transfers, transfer_duration"
	                       " FROM fare_attributes WHERE feed_id = ?1 AND fare_id = ?2");
	if (st == NULL)
		return KP_E_DB;
	sqlite3_bind_text(st, 1, feed_id, -1, SQLITE_STATIC);
	sqlite3_bind_text(st, 2, fare_id, -1, SQLITE_STATIC);
	rc = sqlite3_step(st);
	if (rc == SQLITE_ROW) {
		*transfers = sqlite3_column_type(st, 0) == SQLITE_NULL ? -1 : sqlite3_column_int(st, 0);
		*duration_s = sqlite3_column_type(st, 1) == SQLITE_NULL ? -1 :
		              sqlite3_column_int64(st, 1);
		*found = 1;
		rc = SQLITE_DONE;
	}
	rc = rc == SQLITE_DONE ? KP_OK : kp_store_fail(s, "fare transfers v1");
	sqlite3_reset(st);
	return rc;
}
