/* SPDX-License-Identifier: Apache-2.0 */
/* The run: the service-day setting, products and transfer windows from the backend's
 * database, then every accepted tap of the period, one card at a time in time order, made
 * into legs (a boarding and, where the rider tapped off, its alighting), grouped by service
 * day, and counted into the cells (README, "Ridership analytics"). */
#include <errno.h>
#include <stdarg.h>
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "an_int.h"
#include "kp_civil.h"
#include "kp_db.h"
#include "kp_hash.h"
#include "kp_record.h"

#define LEG_MAX 64                    /* legs of one card in one service day (more: flushed) */
#define ID 33


static const struct an_table tables[T_N] = {
	{ "stops", { "operator", "route", "route_name", "stop", "stop_name", "boardings",
	             "alightings", "alightings_inferred" }, 5, 3, NULL, 0, 0 },
	{ "hours", { "operator", "route", "hour", "boardings", "alightings" }, 3, 2, NULL, 0, 0 },
	{ "days", { "service_date", "boardings", "alightings" }, 1, 2, NULL, 0, 0 },
	{ "categories", { "rider_category", "resident", "boardings" }, 2, 1, NULL, 0, 0 },
	{ "product_kinds", { "product_kind", "boardings" }, 1, 1, NULL, 0, 0 },
	{ "transfers", { "from_operator", "from_route", "to_operator", "to_route", "transfers" },
	  4, 1, NULL, 0, 0 },
	{ "od_routes", { "operator", "route", "origin_stop", "destination_stop", "alighting",
	                 "trips" }, 5, 1, NULL, 0, 0 },
	{ "od_journeys", { "origin", "destination", "alighting", "journeys" }, 3, 1, NULL, 0, 0 },
	{ "station_activities", { "service_date", "stop_id", "time_period_start",
	                          "time_period_end", "total_entries", "total_exits" },
	  4, 2, NULL, 0, 0 },
	{ "load_profiles", { "operator", "route", "direction_id", "segment", "from_stop", "to_stop",
	                     "on_board" }, 6, 1, NULL, 0, 0 },
};

struct leg {
	char op[ID], route[ID], on[ID], off[ID], cat[ID];
	const char *pkind;
	int64_t on_ms, off_ms;
	int resident;
	char inferred[ID];
};

struct xrule { char from[ID], to[ID]; int64_t within_ms; };
struct prod { char id[ID], kind[16]; };
struct rstop { char route[2 * ID + 1], stop[ID]; };

struct run {
	const struct kp_an_opts *o;
	struct kp_an_summary *sum;
	kp_db *db;
	struct an_gtfs g;
	struct an_optout opt;
	uint8_t secret[4096];
	size_t slen;
	int end_s, off_s;
	struct an_table t[T_N];
	struct prod *prods; size_t n_prods;
	struct xrule *xr; size_t n_xr;
	struct rstop *rs; size_t n_rs;
	FILE *ft;                           /* tides/fare_transactions.csv */
	char period[8], pseud[33];          /* the current card's pseudonym for period */
	uint8_t period_key[KP_SHA256_LEN];  /* the period's key, derived once a period */
	char key_period[8];
	uint64_t card;
	uint8_t token[16];
	int64_t day;
	struct leg legs[LEG_MAX];
	int nleg, open;
	char *err;
	size_t cap;
};

static int fail(struct run *r, int rc, const char *what)
{
	if (rc == KP_AN_E_DB)
		snprintf(r->err, r->cap, "database %s: %s: %s", r->o->db, what, kp_db_errmsg(r->db));
	else if (rc == KP_AN_E_NOMEM)
		snprintf(r->err, r->cap, "out of memory (%s)", what);
	return rc;
}

int kp_an_parse_date(const char *s, int *day)
{
	int y, m, d, n = 0;
	int yy, mm, dd;

	if (s == NULL || sscanf(s, "%4d-%2d-%2d%n", &y, &m, &d, &n) != 3 || n != 10 ||
	    s[n] != '\0' || y < 1970 || y > 9999 || m < 1 || m > 12 || d < 1 || d > 31)
		return KP_AN_E_INVAL;
	*day = (int)kp_days_from_civil(y, m, d);
	kp_civil_from_days(*day, &yy, &mm, &dd);
	return (yy == y && mm == m && dd == d) ? KP_AN_OK : KP_AN_E_INVAL;
}

static void date_text(int64_t day, char out[11])
{
	int y, m, d;

	kp_civil_from_days(day, &y, &m, &d);
	snprintf(out, 11, "%04d-%02d-%02d", y, m, d);
}

/* The local hour (0-23) of ms. */
static int hour_of(const struct run *r, int64_t ms)
{
	struct kp_civil c;

	kp_civil_local(ms, r->off_s, &c);
	return c.hh;
}

static int64_t service_day(const struct run *r, int64_t ms)
{
	int64_t day, month;

	kp_service_day(ms, r->off_s, r->end_s, &day, &month);
	return day;
}

/* ---- what the database holds besides the records ---- */

static int meta_int(struct run *r, const char *key, int *v)
{
	kp_db_stmt *st = NULL;
	int rc = kp_db_prepare(r->db, &st, "SELECT value FROM meta WHERE key = ?1");

	if (rc == KP_DB_OK)
		rc = kp_db_bind_text(st, 1, key, SIZE_MAX);
	if (rc == KP_DB_OK)
		rc = kp_db_step(st);
	if (rc == KP_DB_ROW)
		*v = (int)kp_db_column_int64(st, 0);
	kp_db_finalize(st);
	return rc == KP_DB_ROW || rc == KP_DB_DONE ? KP_AN_OK : fail(r, KP_AN_E_DB, key);
}

/* Runs sql (no parameters but the period and operator, see bind_range) and hands each row
 * to row(). */
static int each_row(struct run *r, const char *sql, int range,
                    int (*row)(struct run *r, kp_db_stmt *st), const char *what);

static int prod_row(struct run *r, kp_db_stmt *st)
{
	void *p = realloc(r->prods, (r->n_prods + 1) * sizeof(*r->prods));

	if (p == NULL)
		return KP_AN_E_NOMEM;
	r->prods = p;
	snprintf(r->prods[r->n_prods].id, ID, "%s", kp_db_column_text(st, 0));
	snprintf(r->prods[r->n_prods].kind, 16, "%s", kp_db_column_text(st, 1));
	r->n_prods++;
	return KP_AN_OK;
}

static int xrule_row(struct run *r, kp_db_stmt *st)
{
	void *p = realloc(r->xr, (r->n_xr + 1) * sizeof(*r->xr));

	if (p == NULL)
		return KP_AN_E_NOMEM;
	r->xr = p;
	snprintf(r->xr[r->n_xr].from, ID, "%s", kp_db_column_text(st, 0));
	snprintf(r->xr[r->n_xr].to, ID, "%s", kp_db_column_text(st, 1));
	r->xr[r->n_xr].within_ms = kp_db_column_int64(st, 2) * 1000;
	r->n_xr++;
	return KP_AN_OK;
}

static int rstop_row(struct run *r, kp_db_stmt *st)
{
	void *p = realloc(r->rs, (r->n_rs + 1) * sizeof(*r->rs));

	if (p == NULL)
		return KP_AN_E_NOMEM;
	r->rs = p;
	snprintf(r->rs[r->n_rs].route, sizeof(r->rs[0].route), "%s\x1f%s",
	         kp_db_column_text(st, 0), kp_db_column_text(st, 1));
	snprintf(r->rs[r->n_rs].stop, ID, "%s", kp_db_column_text(st, 2));
	r->n_rs++;
	return KP_AN_OK;
}

static int bind_range(struct run *r, kp_db_stmt *st)
{
	int64_t from = ((int64_t)r->o->from_day * 86400 + r->end_s - r->off_s) * 1000;
	int64_t to = ((int64_t)(r->o->to_day + 1) * 86400 + r->end_s - r->off_s) * 1000;
	int rc = kp_db_bind_int64(st, 1, from);

	if (rc == KP_DB_OK)
		rc = kp_db_bind_int64(st, 2, to);
	if (rc == KP_DB_OK && r->o->operator_id != NULL)
		rc = kp_db_bind_text(st, 3, r->o->operator_id, SIZE_MAX);
	return rc;
}

static int each_row(struct run *r, const char *sql, int range,
                    int (*row)(struct run *r, kp_db_stmt *st), const char *what)
{
	kp_db_stmt *st = NULL;
	int rc = kp_db_prepare(r->db, &st, sql), arc = KP_AN_OK;

	if (rc == KP_DB_OK && range)
		rc = bind_range(r, st);
	while (rc == KP_DB_OK || rc == KP_DB_ROW) {
		rc = kp_db_step(st);
		if (rc == KP_DB_ROW && (arc = row(r, st)) != KP_AN_OK)
			break;
	}
	kp_db_finalize(st);
	if (arc != KP_AN_OK)
		return arc == KP_AN_E_NOMEM ? fail(r, arc, what) : arc;
	return rc == KP_DB_DONE ? KP_AN_OK : fail(r, KP_AN_E_DB, what);
}

static int cmp_rstop(const void *a, const void *b)
{
	const struct rstop *x = a, *y = b;
	int c = strcmp(x->route, y->route);

	return c != 0 ? c : strcmp(x->stop, y->stop);
}

/* "+time_ms": not the time index (SQLite would sort the whole period by card then); the
 * card-token index gives the rows by card, each card's few sorted by time */
#define RANGE " +time_ms >= ?1 AND +time_ms < ?2"
static int load_context(struct run *r)
{
	int rc = meta_int(r, "service_day_end_s", &r->end_s);

	if (rc == KP_AN_OK)
		rc = meta_int(r, "utc_offset_s", &r->off_s);
	if (rc == KP_AN_OK)
		rc = each_row(r, "SELECT id, product_kind FROM products", 0, prod_row, "products");
	if (rc == KP_AN_OK)
		rc = each_row(r, "SELECT from_operator, to_operator, within_s FROM transfer_rules", 0,
		              xrule_row, "transfer rules");
	/* the stops each route serves, as the records saw them: the candidates of an inferred
	 * alighting (few: routes times stops) */
	if (rc == KP_AN_OK)
		rc = each_row(r, r->o->operator_id != NULL ?
		              "SELECT DISTINCT operator, route, stop FROM records WHERE kind = 'tap'"
		              " AND route IS NOT NULL AND stop IS NOT NULL AND" RANGE
		              " AND operator = ?3" :
		              "SELECT DISTINCT operator, route, stop FROM records WHERE kind = 'tap'"
		              " AND route IS NOT NULL AND stop IS NOT NULL AND" RANGE, 1, rstop_row,
		              "route stops");
	if (rc == KP_AN_OK && r->n_rs > 0)
		qsort(r->rs, r->n_rs, sizeof(*r->rs), cmp_rstop);
	return rc;
}

static const char *product_kind(const struct run *r, const char *product)
{
	if (product[0] == '\0')
		return "none";
	for (size_t i = 0; i < r->n_prods; i++) {
		if (strcmp(r->prods[i].id, product) == 0)
			return r->prods[i].kind;
	}
	return "unknown";
}

static int64_t transfer_window(const struct run *r, const char *from, const char *to)
{
	for (size_t i = 0; i < r->n_xr; i++) {
		if (strcmp(r->xr[i].from, from) == 0 && strcmp(r->xr[i].to, to) == 0)
			return r->xr[i].within_ms;
	}
	return (int64_t)(r->o->transfer_min ? r->o->transfer_min : KP_AN_TRANSFER_MIN) * 60000;
}

/* ---- trip chaining ---- */

/* The stop of leg's route nearest to the next boarding's stop, within walking distance and
 * not the leg's own boarding stop (Barry et al. 2002): 0 with it in out, -1 unlinked. */
static int infer(const struct run *r, const struct leg *leg, const char *next, char out[ID])
{
	const struct an_stop *ns = an_gtfs_stop(&r->g, next);
	struct rstop key;
	double best = -1;
	size_t lo = 0, hi = r->n_rs;
	int walk = r->o->walk_m ? r->o->walk_m : KP_AN_WALK_M_DEFAULT;

	if (ns == NULL || !ns->has_pos)
		return -1;
	snprintf(key.route, sizeof(key.route), "%s\x1f%s", leg->op, leg->route);
	while (lo < hi) {                   /* the route's first row */
		size_t mid = (lo + hi) / 2;

		if (strcmp(r->rs[mid].route, key.route) < 0)
			lo = mid + 1;
		else
			hi = mid;
	}
	for (size_t i = lo; i < r->n_rs && strcmp(r->rs[i].route, key.route) == 0; i++) {
		double d;

		if (strcmp(r->rs[i].stop, leg->on) == 0)
			continue;
		d = an_distance_m(an_gtfs_stop(&r->g, r->rs[i].stop), ns);
		if (d >= 0 && d <= walk && (best < 0 || d < best)) {
			best = d;
			snprintf(out, ID, "%s", r->rs[i].stop);
		}
	}
	return best >= 0 ? 0 : -1;
}

#define SEP "\x1f"
static int add(struct run *r, int t, int v, const char *fmt, ...)
	__attribute__((format(printf, 4, 5)));
static int add(struct run *r, int t, int v, const char *fmt, ...)
{
	char key[512];
	va_list ap;
	struct an_cell *c;

	va_start(ap, fmt);
	vsnprintf(key, sizeof(key), fmt, ap);
	va_end(ap);
	c = an_add(&r->t[t], key, r->card);
	if (c == NULL)
		return KP_AN_E_NOMEM;
	if (v >= 0)
		c->v[v]++;
	return KP_AN_OK;
}

/* A stop's activity in the hour of ms (TIDES station_activities, one-hour periods). */
static int station(struct run *r, const char *stop, int64_t ms, int v)
{
	char date[11];
	int h = hour_of(r, ms);

	date_text(service_day(r, ms), date);
	return add(r, T_STATION, v, "%s" SEP "%s" SEP "%02d:00:00" SEP "%02d:59:59", date, stop, h,
	           h);
}

static int count_boarding(struct run *r, const struct leg *l)
{
	const struct an_gtfs *g = &r->g;
	const struct an_stop *s = an_gtfs_stop(g, l->on);
	char date[11];
	int rc;

	date_text(r->day, date);
	rc = add(r, T_STOP, 0, "%s" SEP "%s" SEP "%s" SEP "%s" SEP "%s", l->op, l->route,
	         an_gtfs_route_name(g, l->route), l->on, s != NULL ? s->name : "");
	if (rc == KP_AN_OK)
		rc = add(r, T_HOUR, 0, "%s" SEP "%s" SEP "%02d", l->op, l->route, hour_of(r, l->on_ms));
	if (rc == KP_AN_OK)
		rc = add(r, T_DAY, 0, "%s", date);
	if (rc == KP_AN_OK)
		rc = add(r, T_CAT, 0, "%s" SEP "%s", l->cat[0] ? l->cat : "none",
		         l->resident ? "yes" : "no");
	if (rc == KP_AN_OK)
		rc = add(r, T_KIND, 0, "%s", l->pkind);
	if (rc == KP_AN_OK)
		rc = station(r, l->on, l->on_ms, 0);
	r->sum->boardings++;
	return rc;
}

/* Load profile: an observed trip rides every segment of its route's pattern from its
 * boarding to its alighting (the first pattern, by direction, that has both in that order). */
static int count_load(struct run *r, const struct leg *l)
{
	size_t n = 0;
	const struct an_pattern *p = an_gtfs_patterns(&r->g, l->route, &n);

	for (size_t k = 0; k < n; k++, p++) {
		size_t a = p->n, b = p->n;

		for (size_t i = 0; i < p->n; i++) {
			if (a == p->n && strcmp(p->stops[i], l->on) == 0)
				a = i;
			else if (a < p->n && strcmp(p->stops[i], l->off) == 0) {
				b = i;
				break;
			}
		}
		if (b == p->n)
			continue;
		for (size_t i = a; i < b; i++) {
			int rc = add(r, T_LOAD, 0, "%s" SEP "%s" SEP "%d" SEP "%03zu" SEP "%s" SEP "%s",
			             l->op, l->route, p->dir, i + 1, p->stops[i], p->stops[i + 1]);

			if (rc != KP_AN_OK)
				return rc;
		}
		break;
	}
	return KP_AN_OK;
}

static int count_alighting(struct run *r, const struct leg *l)
{
	const struct an_stop *s = an_gtfs_stop(&r->g, l->off);
	char date[11];
	int rc;

	date_text(r->day, date);
	rc = add(r, T_STOP, 1, "%s" SEP "%s" SEP "%s" SEP "%s" SEP "%s", l->op, l->route,
	         an_gtfs_route_name(&r->g, l->route), l->off, s != NULL ? s->name : "");
	if (rc == KP_AN_OK)
		rc = add(r, T_HOUR, 1, "%s" SEP "%s" SEP "%02d", l->op, l->route,
		         hour_of(r, l->off_ms));
	if (rc == KP_AN_OK)
		rc = add(r, T_DAY, 1, "%s", date);
	if (rc == KP_AN_OK)
		rc = station(r, l->off, l->off_ms, 1);
	if (rc == KP_AN_OK)
		rc = add(r, T_OD, 0, "%s" SEP "%s" SEP "%s" SEP "%s" SEP "observed", l->op, l->route,
		         l->on, l->off);
	if (rc == KP_AN_OK)
		rc = count_load(r, l);
	r->sum->alightings++;
	return rc;
}

/* The next boarding's stop after leg i, or the day's first for the last leg (none: NULL). */
static const char *next_stop(const struct run *r, int i)
{
	if (r->nleg < 2)
		return NULL;
	return r->legs[i + 1 < r->nleg ? i + 1 : 0].on;
}

static int count_inference(struct run *r, struct leg *l, int i)
{
	const char *next = next_stop(r, i);
	const struct an_stop *s;
	char out[ID];

	if (l->off[0] != '\0') {            /* accuracy: the tap-off hidden, then inferred */
		r->sum->acc_tested++;
		if (next != NULL && infer(r, l, next, out) == 0) {
			r->sum->acc_inferred++;
			r->sum->acc_correct += strcmp(out, l->off) == 0;
		}
		return KP_AN_OK;
	}
	r->sum->tap_on_only++;
	if (next == NULL || infer(r, l, next, l->inferred) != 0) {
		r->sum->unlinked++;
		return add(r, T_OD, 0, "%s" SEP "%s" SEP "%s" SEP "" SEP "unlinked", l->op, l->route,
		           l->on);
	}
	r->sum->inferred++;
	s = an_gtfs_stop(&r->g, l->inferred);
	if (add(r, T_STOP, 2, "%s" SEP "%s" SEP "%s" SEP "%s" SEP "%s", l->op, l->route,
	        an_gtfs_route_name(&r->g, l->route), l->inferred, s != NULL ? s->name : "") != 0)
		return KP_AN_E_NOMEM;
	return add(r, T_OD, 0, "%s" SEP "%s" SEP "%s" SEP "%s" SEP "inferred", l->op, l->route,
	           l->on, l->inferred);
}

/* Transfers between consecutive legs and the journeys they chain into. */
static int count_journeys(struct run *r)
{
	int start = 0, rc = KP_AN_OK;

	for (int i = 0; i < r->nleg && rc == KP_AN_OK; i++) {
		struct leg *a = &r->legs[i], *b = i + 1 < r->nleg ? &r->legs[i + 1] : NULL;
		int64_t last = a->off[0] != '\0' ? a->off_ms : a->on_ms;
		int linked = b != NULL && b->on_ms - last <= transfer_window(r, a->op, b->op) &&
		             (strcmp(a->op, b->op) != 0 || strcmp(a->route, b->route) != 0);

		if (linked) {
			rc = add(r, T_XFER, 0, "%s" SEP "%s" SEP "%s" SEP "%s", a->op, a->route, b->op,
			         b->route);
			continue;
		}
		{
			const struct leg *o = &r->legs[start];
			int observed = 1;
			const char *dest = a->off[0] ? a->off : a->inferred;

			for (int j = start; j <= i; j++)
				observed &= r->legs[j].off[0] != '\0';
			rc = add(r, T_JOURNEY, 0, "%s:%s" SEP "%s%s%s" SEP "%s", o->op, o->on,
			         dest[0] ? a->op : "", dest[0] ? ":" : "", dest,
			         !dest[0] ? "unlinked" : observed ? "observed" : "inferred");
		}
		start = i + 1;
	}
	return rc;
}

static int flush_day(struct run *r)
{
	int rc = KP_AN_OK;

	for (int i = 0; i < r->nleg && rc == KP_AN_OK; i++) {
		struct leg *l = &r->legs[i];

		l->inferred[0] = '\0';
		rc = count_boarding(r, l);
		if (rc == KP_AN_OK && l->off[0] != '\0')
			rc = count_alighting(r, l);
		if (rc == KP_AN_OK)
			rc = count_inference(r, l, i);
	}
	if (rc == KP_AN_OK)
		rc = count_journeys(r);
	r->nleg = 0;
	r->open = 0;
	return rc == KP_AN_OK ? rc : fail(r, rc, "cells");
}

/* ---- the records ---- */

#define T_COLS "token, time_ms, operator, route, stop, product, category, event, via, amount," \
	" left_after, terminal, seq, payload"
#define T_WHERE " FROM records WHERE kind = 'tap' AND result = 'accepted' AND token IS NOT NULL" \
	" AND" RANGE
#define T_ORDER " ORDER BY token, time_ms, terminal, seq"

static const char *text_col(kp_db_stmt *st, int col)
{
	const char *s = kp_db_column_text(st, col);

	return s != NULL ? s : "";
}

static void tides_header(FILE *fp)
{
	fputs("transaction_id,service_date,event_timestamp,amount,currency_type,fare_action,"
	      "trip_id_performed,stop_id,vehicle_id,device_id,num_riders,fare_media_id,"
	      "rider_category,fare_product,fare_capped,token_id,balance\n", fp);
}

/* One fare_transactions row: the record as TIDES has it, the card as this period's pseudonym. */
static int tides_row(struct run *r, kp_db_stmt *st, const char *event, const char *pkind)
{
	struct kp_record rec;
	struct kp_civil c;
	char date[11], period[8], pseud[33];
	int64_t ms = kp_db_column_int64(st, 1), day = service_day(r, ms);
	int capped = 0, off = r->off_s;
	const char *action = strcmp(event, "tap_off") == 0 ? "Exit" :
	                     strcmp(event, "no_tap_off") == 0 ? "Fare adjustment" : "Enter";

	/* the fare note is only in the signed payload: decoded by the project's own decoder,
	 * when the payload holds the word at all (most do not: no decoding for them) */
	if (memmem(kp_db_column_blob(st, 13), kp_db_column_bytes(st, 13), "cap", 3) != NULL &&
	    kp_record_decode(kp_db_column_blob(st, 13), kp_db_column_bytes(st, 13), &rec) ==
	    KP_RECORD_OK)
		capped = strstr(rec.fare, "cap") != NULL;
	date_text(day, date);
	memcpy(period, date, 7);
	period[7] = '\0';
	if (strcmp(period, r->period) != 0 || r->pseud[0] == '\0') {   /* a new card or month */
		if (strcmp(period, r->key_period) != 0 &&
		    an_period_key(r->secret, r->slen, period, r->period_key) != KP_AN_OK)
			return KP_AN_E_INVAL;
		snprintf(r->key_period, sizeof(r->key_period), "%s", period);
		if (an_pseudonym_with(r->period_key, r->token, r->pseud) != KP_AN_OK)
			return KP_AN_E_INVAL;
		snprintf(r->period, sizeof(r->period), "%s", period);
	}
	memcpy(pseud, r->pseud, sizeof(pseud));
	kp_civil_local(ms, off, &c);
	an_csv_field(r->ft, text_col(st, 11));
	fprintf(r->ft, "-%" PRId64 ",%s,%04d-%02d-%02dT%02d:%02d:%02d.%03d%+03d:%02d,%" PRId64
	        ",JPY,%s,,", kp_db_column_int64(st, 12), date, c.y, c.m, c.d, c.hh, c.mm, c.ss,
	        (int)(((ms % 1000) + 1000) % 1000), off / 3600, (off < 0 ? -off : off) % 3600 / 60,
	        kp_db_column_int64(st, 9), action);
	an_csv_field(r->ft, text_col(st, 4));
	fputs(",,", r->ft);
	an_csv_field(r->ft, text_col(st, 11));
	fputs(",1,,", r->ft);
	an_csv_field(r->ft, text_col(st, 6));
	fputc(',', r->ft);
	an_csv_field(r->ft, text_col(st, 5));
	fprintf(r->ft, ",%s,%s,", capped ? "true" : "false", pseud);
	if (strcmp(pkind, "stored") == 0 && !kp_db_column_is_null(st, 10))
		fprintf(r->ft, "%" PRId64, kp_db_column_int64(st, 10));
	fputc('\n', r->ft);
	return KP_AN_OK;
}

static struct leg *new_leg(struct run *r, kp_db_stmt *st, int64_t ms, const char *pkind)
{
	struct leg *l;

	if (r->nleg == LEG_MAX && flush_day(r) != KP_AN_OK)
		return NULL;
	l = &r->legs[r->nleg++];
	memset(l, 0, sizeof(*l));
	snprintf(l->op, ID, "%s", text_col(st, 2));
	snprintf(l->route, ID, "%s", text_col(st, 3));
	snprintf(l->on, ID, "%s", text_col(st, 4));
	snprintf(l->cat, ID, "%s", text_col(st, 6));
	l->resident = !kp_db_column_is_null(st, 8);
	l->pkind = pkind;
	l->on_ms = ms;
	return l;
}

static int record_row(struct run *r, kp_db_stmt *st)
{
	const uint8_t *tok = kp_db_column_blob(st, 0);
	int64_t ms = kp_db_column_int64(st, 1), day;
	const char *event = text_col(st, 7), *pkind = product_kind(r, text_col(st, 5));
	int rc = KP_AN_OK;

	if (kp_db_column_bytes(st, 0) != 16)
		return KP_AN_OK;
	r->sum->records++;
	if (an_optout_has(&r->opt, tok)) {
		r->sum->opted_out++;
		return KP_AN_OK;
	}
	day = service_day(r, ms);
	if (r->card == 0 || memcmp(tok, r->token, 16) != 0 || day != r->day) {
		if (r->card != 0 && (rc = flush_day(r)) != KP_AN_OK)
			return rc;
		if (r->card == 0 || memcmp(tok, r->token, 16) != 0) {
			r->pseud[0] = '\0';
			r->card++;
			r->sum->cards++;
			memcpy(r->token, tok, 16);
		}
		r->day = day;
	}
	rc = tides_row(r, st, event, pkind);
	if (rc != KP_AN_OK)
		return fail(r, rc, "pseudonym");
	if (strcmp(event, "tap_off") == 0) {
		struct leg *l = r->open ? &r->legs[r->nleg - 1] : NULL;

		if (l != NULL && strcmp(l->op, text_col(st, 2)) == 0) {
			snprintf(l->off, ID, "%s", text_col(st, 4));
			l->off_ms = ms;
		}
		r->open = 0;
		return KP_AN_OK;
	}
	if (strcmp(event, "no_tap_off") == 0) {
		r->open = 0;
		return KP_AN_OK;
	}
	if (new_leg(r, st, ms, pkind) == NULL)
		return fail(r, KP_AN_E_NOMEM, "legs");
	r->open = strcmp(event, "tap_on") == 0;
	return KP_AN_OK;
}

/* tides/station_activities.csv: the standard's columns; a suppressed cell's counts empty. */
static int write_station_tides(struct run *r, const char *path)
{
	const struct an_table *t = &r->t[T_STATION];
	FILE *fp = fopen(path, "w");

	if (fp == NULL) {
		snprintf(r->err, r->cap, "cannot write %s: %s", path, strerror(errno));
		return KP_AN_E_IO;
	}
	fputs("service_date,stop_id,time_period_start,time_period_end,time_period_category,"
	      "total_entries,total_exits\n", fp);
	for (size_t i = 0; i < t->cap; i++) {
		const struct an_cell *c = &t->cells[i];
		char buf[512], *f[4], *p = buf;

		if (c->key == NULL)
			continue;
		snprintf(buf, sizeof(buf), "%s", c->key);
		for (int j = 0; j < 4; j++) {
			f[j] = p;
			p = strchr(p, '\x1f');
			if (p != NULL)
				*p++ = '\0';
			else
				p = buf + strlen(buf);
		}
		fprintf(fp, "%s,", f[0]);
		an_csv_field(fp, f[1]);
		fprintf(fp, ",%s,%s,hour,", f[2], f[3]);
		if (!c->suppressed)
			fprintf(fp, "%" PRId64 ",%" PRId64, c->v[0], c->v[1]);
		else
			fputc(',', fp);
		fputc('\n', fp);
	}
	if (fclose(fp) != 0) {
		snprintf(r->err, r->cap, "cannot write %s: %s", path, strerror(errno));
		return KP_AN_E_IO;
	}
	return KP_AN_OK;
}

static void summary_json(const struct run *r, FILE *js)
{
	const struct kp_an_summary *s = r->sum;
	char from[11], to[11];

	date_text(r->o->from_day, from);
	date_text(r->o->to_day, to);
	fprintf(js, "\"summary\":{\"from\":\"%s\",\"to\":\"%s\",\"operator\":", from, to);
	if (r->o->operator_id != NULL)
		an_json_str(js, r->o->operator_id);
	else
		fputs("null", js);
	fprintf(js, ",\"k\":%d,\"service_day_end_s\":%d,\"utc_offset_s\":%d,"
	        "\"records\":%" PRId64 ",\"opted_out_records\":%" PRId64 ",\"boardings\":%" PRId64
	        ",\"alightings_observed\":%" PRId64 ",\"tap_on_only\":%" PRId64
	        ",\"alightings_inferred\":%" PRId64 ",\"unlinked\":%" PRId64
	        ",\"accuracy\":{\"tested\":%" PRId64 ",\"inferred\":%" PRId64 ",\"correct\":%" PRId64
	        "},\"cells\":%" PRId64 ",\"suppressed_cells\":%" PRId64 "}",
	        r->o->k, r->end_s, r->off_s, s->records, s->opted_out, s->boardings, s->alightings,
	        s->tap_on_only, s->inferred, s->unlinked, s->acc_tested, s->acc_inferred,
	        s->acc_correct, s->cells, s->suppressed);
}

static int write_all(struct run *r)
{
	char path[4096];
	FILE *js;
	int rc = KP_AN_OK;

	for (int i = 0; i < T_N; i++) {
		r->sum->suppressed += (int64_t)an_suppress(&r->t[i], r->o->k);
		r->sum->cells += (int64_t)r->t[i].n;
	}
	snprintf(path, sizeof(path), "%s/ridership.json", r->o->out_dir);
	js = fopen(path, "w");
	if (js == NULL) {
		snprintf(r->err, r->cap, "cannot write %s: %s", path, strerror(errno));
		return KP_AN_E_IO;
	}
	fputc('{', js);
	summary_json(r, js);
	for (int i = 0; i < T_N && rc == KP_AN_OK; i++)
		rc = an_write(&r->t[i], r->o->out_dir, js, 0, r->err, r->cap);
	fputs("\n}\n", js);
	if (fclose(js) != 0 && rc == KP_AN_OK) {
		snprintf(r->err, r->cap, "cannot write %s: %s", path, strerror(errno));
		rc = KP_AN_E_IO;
	}
	snprintf(path, sizeof(path), "%s/tides/station_activities.csv", r->o->out_dir);
	if (rc == KP_AN_OK)
		rc = write_station_tides(r, path);
	if (rc == KP_AN_OK) {
		char from[11], to[11], period[32];

		date_text(r->o->from_day, from);
		date_text(r->o->to_day, to);
		snprintf(period, sizeof(period), "%s to %s", from, to);
		snprintf(path, sizeof(path), "%s/report.html", r->o->out_dir);
		rc = an_report_html(path, r->o->chartjs != NULL ? r->o->chartjs : KP_AN_CHARTJS, r->t,
		                    &r->g, r->sum, period, r->o->k, r->err, r->cap);
	}
	return rc;
}

static int check_opts(const struct kp_an_opts *o, char *err, size_t cap)
{
	if (o->db == NULL || o->out_dir == NULL || o->secret_path == NULL)
		snprintf(err, cap, "the database, the output folder and the pseudonym secret are"
		         " required");
	else if (o->k < 1)
		snprintf(err, cap, "k must be 1 or more, not %d", o->k);
	else if (o->to_day < o->from_day)
		snprintf(err, cap, "the period ends before it begins");
	else if (o->to_day - o->from_day > 366)
		snprintf(err, cap, "the period is longer than 366 days");
	else
		return KP_AN_OK;
	return KP_AN_E_INVAL;
}

static int make_dir(const char *path, char *err, size_t cap)
{
	if (mkdir(path, 0750) != 0 && errno != EEXIST) {
		snprintf(err, cap, "cannot make %s: %s", path, strerror(errno));
		return KP_AN_E_IO;
	}
	return KP_AN_OK;
}

static int open_inputs(struct run *r)
{
	const struct kp_an_opts *o = r->o;
	char path[4096], dberr[256];
	int rc = an_secret_load(o->secret_path, r->secret, sizeof(r->secret), &r->slen, r->err,
	                        r->cap);

	if (rc == KP_AN_OK && o->opt_out_path != NULL)
		rc = an_optout_load(&r->opt, o->opt_out_path, r->err, r->cap);
	if (rc == KP_AN_OK && o->gtfs_dir != NULL)
		rc = an_gtfs_load(&r->g, o->gtfs_dir, r->err, r->cap);
	if (rc != KP_AN_OK)
		return rc;
	/* read-only: the backend may be running and is never written to */
	if (kp_db_open(&r->db, o->db, KP_DB_READONLY, dberr, sizeof(dberr)) != KP_DB_OK) {
		snprintf(r->err, r->cap, "cannot open the database %s: %s", o->db, dberr);
		return KP_AN_E_DB;
	}
	/* SQLite: a 64 MB page cache for the month's one pass (this connection only; nothing is
	 * written) */
	if (strcmp(kp_db_engine(r->db), "sqlite") == 0 &&
	    kp_db_exec(r->db, "PRAGMA cache_size = -65536") != KP_DB_OK) {
		snprintf(r->err, r->cap, "database %s: %s", o->db, kp_db_errmsg(r->db));
		return KP_AN_E_DB;
	}
	rc = make_dir(o->out_dir, r->err, r->cap);
	snprintf(path, sizeof(path), "%s/tides", o->out_dir);
	if (rc == KP_AN_OK)
		rc = make_dir(path, r->err, r->cap);
	snprintf(path, sizeof(path), "%s/tides/fare_transactions.csv", o->out_dir);
	if (rc == KP_AN_OK && (r->ft = fopen(path, "w")) == NULL) {
		snprintf(r->err, r->cap, "cannot write %s: %s", path, strerror(errno));
		rc = KP_AN_E_IO;
	}
	if (rc == KP_AN_OK)
		tides_header(r->ft);
	return rc;
}

int kp_an_run(const struct kp_an_opts *opts, struct kp_an_summary *sum, char *err, size_t cap)
{
	struct run *r;
	int rc = check_opts(opts, err, cap);

	memset(sum, 0, sizeof(*sum));
	if (rc != KP_AN_OK)
		return rc;
	r = calloc(1, sizeof(*r));
	if (r == NULL) {
		snprintf(err, cap, "out of memory");
		return KP_AN_E_NOMEM;
	}
	r->o = opts;
	r->sum = sum;
	r->err = err;
	r->cap = cap;
	memcpy(r->t, tables, sizeof(tables));
	rc = open_inputs(r);
	if (rc == KP_AN_OK)
		rc = load_context(r);
	if (rc == KP_AN_OK)
		rc = each_row(r, opts->operator_id != NULL ?
		              "SELECT " T_COLS T_WHERE " AND operator = ?3" T_ORDER :
		              "SELECT " T_COLS T_WHERE T_ORDER, 1, record_row, "records");
	if (rc == KP_AN_OK && r->card != 0)
		rc = flush_day(r);
	if (rc == KP_AN_OK)
		rc = write_all(r);
	if (r->ft != NULL && fclose(r->ft) != 0 && rc == KP_AN_OK) {
		snprintf(err, cap, "cannot write the TIDES fare_transactions: %s", strerror(errno));
		rc = KP_AN_E_IO;
	}
	for (int i = 0; i < T_N; i++)
		an_table_free(&r->t[i]);
	kp_db_close(r->db);
	an_gtfs_free(&r->g);
	an_optout_free(&r->opt);
	kp_zeroize(r->secret, sizeof(r->secret));
	kp_zeroize(r->period_key, sizeof(r->period_key));
	free(r->prods);
	free(r->xr);
	free(r->rs);
	free(r);
	return rc;
}
