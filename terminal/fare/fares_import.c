/* SPDX-License-Identifier: Apache-2.0 */
/* kippuctl fares import: a GTFS feed's fare files (fares v1 / GTFS-JP and fares v2) into the
 * store, checked against the spec, in one transaction. Each error names file:line: field;
 * tolerable deviations (a BOM, unknown columns, a legacy extension file) are warnings. */
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "kp_fare.h"
#include "kp_csv.h"
#include "kp_store_sql.h"

struct imp {
	kp_store *s;
	const char *dir, *feed;
	const struct kp_fare_import_opts *opts;
	struct kp_fare_import_stats *st;
	char *err;
	size_t err_cap;
	struct kp_csv c;
	int have_stops, have_routes, have_calendar, have_rider_cats, have_media, have_networks,
	    have_areas, have_timeframes, have_products, have_leg_rules, has_priority;
	int routes_have_network;
	char default_cat[KP_FARE_ID_MAX + 1];
};

static void warn(struct imp *im, const char *fmt, ...)
{
	char msg[KP_FARE_MSG_MAX];
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(msg, sizeof(msg), fmt, ap);
	va_end(ap);
	im->st->warnings++;
	if (im->opts != NULL && im->opts->warn != NULL)
		im->opts->warn(im->opts->warn_arg, msg);
}

/* "file:line: field: why" into the caller's buffer; returns KP_E_FEED. */
static int ferr(struct imp *im, const char *field, const char *fmt, ...)
{
	char why[KP_FARE_MSG_MAX];
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(why, sizeof(why), fmt, ap);
	va_end(ap);
	snprintf(im->err, im->err_cap, "%s:%d: %s: %s", im->c.name, im->c.rec_line, field, why);
	return KP_E_FEED;
}

static const char *fld(struct imp *im, const char *name)
{
	return kp_csv_get(&im->c, kp_csv_col(&im->c, name));
}

static int req(struct imp *im, const char *name, const char **out)
{
	*out = fld(im, name);
	if ((*out)[0] == '\0')
		return ferr(im, name, "required value missing");
	return KP_OK;
}

/* An optional integer in [min, max]; *is_null when empty. */
static int num(struct imp *im, const char *name, int64_t min, int64_t max, int64_t *out,
               int *is_null)
{
	const char *v = fld(im, name), *p = v;
	int64_t n = 0;
	int neg = 0;

	*is_null = v[0] == '\0';
	*out = 0;
	if (*is_null)
		return KP_OK;
	if (*p == '-') {
		neg = 1;
		p++;
	}
	if (*p == '\0')
		return ferr(im, name, "bad number \"%s\"", v);
	for (; *p != '\0'; p++) {
		if (*p < '0' || *p > '9' || n > (INT64_MAX - 9) / 10)
			return ferr(im, name, "bad number \"%s\"", v);
		n = n * 10 + (*p - '0');
	}
	if (neg)
		n = -n;
	if (n < min || n > max)
		return ferr(im, name, "%s is out of range [%lld, %lld]", v, (long long)min,
		            (long long)max);
	*out = n;
	return KP_OK;
}

static int req_num(struct imp *im, const char *name, int64_t min, int64_t max, int64_t *out)
{
	int is_null, rc = num(im, name, min, max, out, &is_null);

	if (rc == KP_OK && is_null)
		return ferr(im, name, "required value missing");
	return rc;
}

static int money(struct imp *im, const char *name, const char *cur_field, int allow_neg,
                 int64_t *out, const char **cur)
{
	const char *v;
	int digits, rc;

	rc = req(im, cur_field, cur);
	if (rc != KP_OK)
		return rc;
	digits = kp_currency_digits(*cur);
	if (digits < 0)
		return ferr(im, cur_field, "\"%s\" is not an ISO 4217 currency code", *cur);
	rc = req(im, name, &v);
	if (rc != KP_OK)
		return rc;
	if (kp_money_parse(v, digits, allow_neg, out) != KP_OK)
		return ferr(im, name, "bad amount \"%s\" for %s (%d decimal%s at most%s)", v, *cur,
		            digits, digits == 1 ? "" : "s", allow_neg ? "" : ", not negative");
	return KP_OK;
}

/* HH:MM:SS (hours may pass 24) into seconds. */
static int hms(struct imp *im, const char *name, int64_t *out, int *is_null)
{
	const char *v = fld(im, name);
	int h, m, sec, n = 0;

	*is_null = v[0] == '\0';
	if (*is_null)
		return KP_OK;
	if (sscanf(v, "%2d:%2d:%2d%n", &h, &m, &sec, &n) != 3 || v[n] != '\0' || h < 0 ||
	    m < 0 || m > 59 || sec < 0 || sec > 59)
		return ferr(im, name, "bad time \"%s\" (HH:MM:SS)", v);
	*out = (int64_t)h * 3600 + m * 60 + sec;
	return KP_OK;
}

static int date8(struct imp *im, const char *name, int64_t *out)
{
	int64_t d;
	int rc = req_num(im, name, 19000101, 29991231, &d);

	if (rc == KP_OK && (d / 100 % 100 < 1 || d / 100 % 100 > 12 || d % 100 < 1 || d % 100 > 31))
		return ferr(im, name, "bad date \"%s\" (YYYYMMDD)", fld(im, name));
	*out = d;
	return rc;
}

static int prep(struct imp *im, sqlite3_stmt **st, const char *sql)
{
	if (sqlite3_prepare_v2(im->s->db, sql, -1, st, NULL) != SQLITE_OK) {
		snprintf(im->err, im->err_cap, "prepare: %s", sqlite3_errmsg(im->s->db));
		return KP_E_DB;
	}
	return KP_OK;
}

/* Binds ?1 = feed then the arguments by type letters: t text, i int64, n int64 or NULL
 * (value, is_null). */
static void bindv(struct imp *im, sqlite3_stmt *st, const char *types, va_list ap)
{
	int i = 2;

	sqlite3_reset(st);
	sqlite3_clear_bindings(st);
	sqlite3_bind_text(st, 1, im->feed, -1, SQLITE_STATIC);
	for (const char *t = types; *t != '\0'; t++, i++) {
		if (*t == 't') {
			sqlite3_bind_text(st, i, va_arg(ap, const char *), -1, SQLITE_TRANSIENT);
		} else if (*t == 'i') {
			sqlite3_bind_int64(st, i, va_arg(ap, int64_t));
		} else {
			int64_t v = va_arg(ap, int64_t);

			if (va_arg(ap, int))
				sqlite3_bind_null(st, i);
			else
				sqlite3_bind_int64(st, i, v);
		}
	}
}

/* Steps a bound insert; a primary-key clash is reported against key_field. */
static int step_insert(struct imp *im, sqlite3_stmt *st, const char *key_field)
{
	int rc = sqlite3_step(st);

	if (rc == SQLITE_DONE)
		return KP_OK;
	if (rc == SQLITE_CONSTRAINT_PRIMARYKEY || rc == SQLITE_CONSTRAINT_UNIQUE)
		return ferr(im, key_field, "duplicate key \"%s\"", fld(im, key_field));
	snprintf(im->err, im->err_cap, "%s:%d: %s", im->c.name, im->c.rec_line,
	         sqlite3_errmsg(im->s->db));
	return KP_E_DB;
}

/* Inserts a row bound like bindv. */
static int ins(struct imp *im, sqlite3_stmt *st, const char *key_field, const char *types, ...)
{
	va_list ap;

	va_start(ap, types);
	bindv(im, st, types, ap);
	va_end(ap);
	return step_insert(im, st, key_field);
}

/* 1 if the query (bound like ins) returns a row, 0 if not, <0 on error. */
static int exists(struct imp *im, sqlite3_stmt *st, const char *types, ...)
{
	va_list ap;
	int rc;

	va_start(ap, types);
	bindv(im, st, types, ap);
	va_end(ap);
	rc = sqlite3_step(st);
	if (rc == SQLITE_ROW)
		return 1;
	if (rc == SQLITE_DONE)
		return 0;
	snprintf(im->err, im->err_cap, "%s: %s", im->c.name, sqlite3_errmsg(im->s->db));
	return KP_E_DB;
}

/* An id that must be known: found via st (bound with the id) unless `check` is 0. */
static int ref(struct imp *im, sqlite3_stmt *st, int check, const char *field, const char *what)
{
	const char *v = fld(im, field);
	int rc;

	if (!check || v[0] == '\0')
		return KP_OK;
	rc = exists(im, st, "t", v);
	if (rc < 0)
		return rc;
	if (rc == 0)
		return ferr(im, field, "unknown %s \"%s\"", what, v);
	return KP_OK;
}

/* Opens a file: *present = 0 if it is absent. Checks required columns and warns about a BOM
 * and columns the spec does not have (known == NULL: no check, e.g. stops.txt). */
static int open_file(struct imp *im, const char *name, const char *const *required,
                     const char *const *known, int *present)
{
	int missing = 0, rc;

	kp_csv_close(&im->c);
	rc = kp_csv_open(&im->c, im->dir, name, &missing, im->err, im->err_cap);
	*present = rc == KP_OK;
	if (missing)
		return KP_OK;
	if (rc != KP_OK)
		return rc;
	if (im->c.had_bom)
		warn(im, "%s:1: starts with a UTF-8 byte order mark (ignored)", name);
	for (; required != NULL && *required != NULL; required++) {
		if (kp_csv_col(&im->c, *required) < 0) {
			snprintf(im->err, im->err_cap, "%s:1: %s: required column missing", name,
			         *required);
			return KP_E_FEED;
		}
	}
	for (size_t i = 0; known != NULL && i < im->c.n_cols; i++) {
		size_t k = 0;

		while (known[k] != NULL && strcmp(known[k], im->c.cols[i]) != 0)
			k++;
		if (known[k] == NULL)
			warn(im, "%s:1: column \"%s\" is not in the spec (ignored)", name,
			     im->c.cols[i]);
	}
	return KP_OK;
}

#define COLS(...) ((const char *const[]){ __VA_ARGS__, NULL })

static int next(struct imp *im)
{
	return kp_csv_next(&im->c, im->err, im->err_cap);
}

/* ---- the files, in dependency order ---- */

/* The files that are a list of ids with names and references: one table each, read by
 * one loader. A column is 'r' required text, 'o' optional text or 'n' a required number in
 * [min, max]; a reference is checked when the file it points into was present. */
#define ALWAYS ((size_t)-1)
#define NO_FLAG ((size_t)-2)
struct gtfs_col { const char *name; char kind; int64_t min, max; };
struct gtfs_ref { const char *field, *sql, *what; size_t check; };
struct gtfs_file {
	const char *name;
	const char *const *required, *const *known;  /* known NULL: unknown columns unchecked */
	size_t present;                  /* offsetof the struct imp flag set when present */
	const char *sql;                 /* the INSERT, ?1 = the feed */
	const char *key;                 /* the field a duplicate row is reported against */
	struct gtfs_col cols[3];
	struct gtfs_ref refs[2];
};
#define FLAG(f) offsetof(struct imp, f)

static const struct gtfs_file STOPS = {
	"stops.txt", COLS("stop_id"), NULL, FLAG(have_stops),
	"INSERT INTO fare_stops VALUES (?1, ?2, ?3)", "stop_id",
	{ { "stop_id", 'r', 0, 0 }, { "zone_id", 'o', 0, 0 } }, { { NULL } } };
static const struct gtfs_file ROUTES = {
	"routes.txt", COLS("route_id"), NULL, FLAG(have_routes),
	"INSERT INTO fare_routes VALUES (?1, ?2, ?3, ?4)", "route_id",
	{ { "route_id", 'r', 0, 0 }, { "agency_id", 'o', 0, 0 }, { "network_id", 'o', 0, 0 } },
	{ { NULL } } };
static const struct gtfs_file FARE_MEDIA = {
	"fare_media.txt", COLS("fare_media_id", "fare_media_type"),
	COLS("fare_media_id", "fare_media_name", "fare_media_type"), FLAG(have_media),
	"INSERT INTO fare_media VALUES (?1, ?2, ?3, ?4)", "fare_media_id",
	{ { "fare_media_id", 'r', 0, 0 }, { "fare_media_name", 'o', 0, 0 },
	  { "fare_media_type", 'n', 0, 4 } }, { { NULL } } };
static const struct gtfs_file NETWORKS = {
	"networks.txt", COLS("network_id"), COLS("network_id", "network_name"), FLAG(have_networks),
	"INSERT INTO fare_networks VALUES (?1, ?2, ?3)", "network_id",
	{ { "network_id", 'r', 0, 0 }, { "network_name", 'o', 0, 0 } }, { { NULL } } };
static const struct gtfs_file ROUTE_NETWORKS = {
	"route_networks.txt", COLS("network_id", "route_id"), COLS("network_id", "route_id"),
	NO_FLAG, "INSERT INTO fare_route_networks VALUES (?1, ?2, ?3)", "route_id",
	{ { "network_id", 'r', 0, 0 }, { "route_id", 'r', 0, 0 } },
	{ { "network_id", "SELECT 1 FROM fare_networks WHERE feed_id = ?1 AND network_id = ?2",
	    "network", FLAG(have_networks) },
	  { "route_id", "SELECT 1 FROM fare_routes WHERE feed_id = ?1 AND route_id = ?2",
	    "route", FLAG(have_routes) } } };
static const struct gtfs_file AREAS = {
	"areas.txt", COLS("area_id"), COLS("area_id", "area_name"), FLAG(have_areas),
	"INSERT INTO fare_areas VALUES (?1, ?2, ?3)", "area_id",
	{ { "area_id", 'r', 0, 0 }, { "area_name", 'o', 0, 0 } }, { { NULL } } };
static const struct gtfs_file STOP_AREAS = {
	"stop_areas.txt", COLS("area_id", "stop_id"), COLS("area_id", "stop_id"), NO_FLAG,
	"INSERT INTO fare_stop_areas VALUES (?1, ?2, ?3)", "stop_id",
	{ { "area_id", 'r', 0, 0 }, { "stop_id", 'r', 0, 0 } },
	{ { "area_id", "SELECT 1 FROM fare_areas WHERE feed_id = ?1 AND area_id = ?2", "area",
	    ALWAYS },
	  { "stop_id", "SELECT 1 FROM fare_stops WHERE feed_id = ?1 AND stop_id = ?2", "stop",
	    FLAG(have_stops) } } };

static int flag_of(struct imp *im, size_t off)
{
	return off == ALWAYS ? 1 : *(int *)((char *)im + off);
}

/* One row of a gtfs_file: its columns checked in order, then its references, then the
 * insert. */
static int load_row(struct imp *im, const struct gtfs_file *f, sqlite3_stmt *st,
                    sqlite3_stmt *const *q)
{
	const char *text[3] = { NULL, NULL, NULL };
	int64_t n[3] = { 0, 0, 0 };
	int rc = KP_OK, i = 2;
	size_t k;

	for (k = 0; rc == KP_OK && k < 3 && f->cols[k].name != NULL; k++) {
		const struct gtfs_col *c = &f->cols[k];

		if (c->kind == 'r')
			rc = req(im, c->name, &text[k]);
		else if (c->kind == 'o')
			text[k] = fld(im, c->name);
		else
			rc = req_num(im, c->name, c->min, c->max, &n[k]);
	}
	for (size_t r = 0; rc == KP_OK && r < 2 && f->refs[r].field != NULL; r++)
		rc = ref(im, q[r], flag_of(im, f->refs[r].check), f->refs[r].field, f->refs[r].what);
	if (rc != KP_OK)
		return rc;
	sqlite3_reset(st);
	sqlite3_clear_bindings(st);
	sqlite3_bind_text(st, 1, im->feed, -1, SQLITE_STATIC);
	for (size_t j = 0; j < k; j++, i++) {
		if (f->cols[j].kind == 'n')
			sqlite3_bind_int64(st, i, n[j]);
		else
			sqlite3_bind_text(st, i, text[j], -1, SQLITE_TRANSIENT);
	}
	return step_insert(im, st, f->key);
}

static int load_file(struct imp *im, const struct gtfs_file *f)
{
	sqlite3_stmt *st = NULL, *q[2] = { NULL, NULL };
	int present, rc;

	rc = open_file(im, f->name, f->required, f->known, &present);
	if (f->present != NO_FLAG)
		*(int *)((char *)im + f->present) = present;
	if (rc != KP_OK || !present)
		return rc;
	rc = prep(im, &st, f->sql);
	for (size_t r = 0; rc == KP_OK && r < 2 && f->refs[r].field != NULL; r++)
		rc = prep(im, &q[r], f->refs[r].sql);
	while (rc == KP_OK && (rc = next(im)) == 1)
		rc = load_row(im, f, st, q);
	sqlite3_finalize(st);
	sqlite3_finalize(q[0]);
	sqlite3_finalize(q[1]);
	return rc;
}

static int load_stops(struct imp *im)
{
	return load_file(im, &STOPS);
}

static int load_routes(struct imp *im)
{
	int rc = load_file(im, &ROUTES);

	if (im->have_routes)
		im->routes_have_network = kp_csv_col(&im->c, "network_id") >= 0;
	return rc;
}

static int load_media_networks_areas(struct imp *im)
{
	static const struct gtfs_file *const files[] = {
		&FARE_MEDIA, &NETWORKS, &ROUTE_NETWORKS, &AREAS, &STOP_AREAS,
	};
	int rc = KP_OK;

	for (size_t i = 0; rc >= 0 && i < sizeof(files) / sizeof(files[0]); i++)
		rc = load_file(im, files[i]);
	return rc;
}

static int load_calendar(struct imp *im)
{
	static const char *const day[] = { "monday", "tuesday", "wednesday", "thursday", "friday",
	                                   "saturday", "sunday" };
	sqlite3_stmt *st = NULL;
	const char *id;
	int present, rc;
	int64_t v, d0, d1, days;

	rc = open_file(im, "calendar.txt", COLS("service_id", "monday", "tuesday", "wednesday",
	               "thursday", "friday", "saturday", "sunday", "start_date", "end_date"), NULL,
	               &present);
	if (rc != KP_OK)
		return rc;
	im->have_calendar = present;
	if (present)
		rc = prep(im, &st, "INSERT INTO fare_calendar VALUES (?1, ?2, ?3, ?4, ?5)");
	while (present && rc == KP_OK && (rc = next(im)) == 1) {
		days = 0;
		rc = req(im, "service_id", &id);
		for (int i = 0; rc == KP_OK && i < 7; i++) {
			rc = req_num(im, day[i], 0, 1, &v);
			days |= v << i;
		}
		if (rc == KP_OK)
			rc = date8(im, "start_date", &d0);
		if (rc == KP_OK)
			rc = date8(im, "end_date", &d1);
		if (rc == KP_OK)
			rc = ins(im, st, "service_id", "tiii", id, days, d0, d1);
	}
	sqlite3_finalize(st);
	st = NULL;
	if (rc < 0)
		return rc;
	rc = open_file(im, "calendar_dates.txt", COLS("service_id", "date", "exception_type"),
	               NULL, &present);
	if (rc != KP_OK || !present)
		return rc;
	im->have_calendar = 1;
	rc = prep(im, &st, "INSERT INTO fare_calendar_dates VALUES (?1, ?2, ?3, ?4)");
	while (rc == KP_OK && (rc = next(im)) == 1) {
		rc = req(im, "service_id", &id);
		if (rc == KP_OK)
			rc = date8(im, "date", &d0);
		if (rc == KP_OK)
			rc = req_num(im, "exception_type", 1, 2, &v);
		if (rc == KP_OK)
			rc = ins(im, st, "date", "tii", id, d0, v);
	}
	sqlite3_finalize(st);
	return rc;
}

static int load_fares_v1(struct imp *im)
{
	sqlite3_stmt *st = NULL, *q_fare = NULL, *q_route = NULL, *q_zone = NULL;
	const char *id, *cur;
	int present, rc, null_t, null_d;
	int64_t price, pm, tr, dur;

	rc = open_file(im, "fare_attributes.txt", COLS("fare_id", "price", "currency_type",
	               "payment_method", "transfers"), COLS("fare_id", "price", "currency_type",
	               "payment_method", "transfers", "agency_id", "transfer_duration"), &present);
	if (rc != KP_OK)
		return rc;
	if (present)
		rc = prep(im, &st, "INSERT INTO fare_attributes VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)");
	while (present && rc == KP_OK && (rc = next(im)) == 1) {
		rc = req(im, "fare_id", &id);
		if (rc == KP_OK)
			rc = money(im, "price", "currency_type", 0, &price, &cur);
		if (rc == KP_OK)
			rc = req_num(im, "payment_method", 0, 1, &pm);
		if (rc == KP_OK)
			rc = num(im, "transfers", 0, 2, &tr, &null_t);
		if (rc == KP_OK)
			rc = num(im, "transfer_duration", 0, INT32_MAX, &dur, &null_d);
		if (rc == KP_OK)
			rc = ins(im, st, "fare_id", "titinnti", id, price, cur, pm, tr, null_t, dur,
			         null_d, fld(im, "agency_id"), (int64_t)im->c.rec_line);
		if (rc == KP_OK)
			im->st->fares++;
	}
	sqlite3_finalize(st);
	st = NULL;
	if (rc < 0)
		return rc;

	rc = open_file(im, "fare_rules.txt", COLS("fare_id"), COLS("fare_id", "route_id",
	               "origin_id", "destination_id", "contains_id"), &present);
	if (rc != KP_OK || !present)
		return rc;
	rc = prep(im, &st, "INSERT INTO fare_rules VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)");
	if (rc == KP_OK)
		rc = prep(im, &q_fare, "SELECT 1 FROM fare_attributes WHERE feed_id = ?1 AND fare_id = ?2");
	if (rc == KP_OK)
		rc = prep(im, &q_route, "SELECT 1 FROM fare_routes WHERE feed_id = ?1 AND route_id = ?2");
	if (rc == KP_OK)
		rc = prep(im, &q_zone, "SELECT 1 FROM fare_stops WHERE feed_id = ?1 AND zone_id = ?2");
	while (rc == KP_OK && (rc = next(im)) == 1) {
		rc = req(im, "fare_id", &id);
		if (rc == KP_OK)
			rc = ref(im, q_fare, 1, "fare_id", "fare");
		if (rc == KP_OK)
			rc = ref(im, q_route, im->have_routes, "route_id", "route");
		if (rc == KP_OK)
			rc = ref(im, q_zone, im->have_stops, "origin_id", "zone (stops.txt zone_id)");
		if (rc == KP_OK)
			rc = ref(im, q_zone, im->have_stops, "destination_id", "zone (stops.txt zone_id)");
		if (rc == KP_OK)
			rc = ref(im, q_zone, im->have_stops, "contains_id", "zone (stops.txt zone_id)");
		if (rc == KP_OK)
			rc = ins(im, st, "fare_id", "ttttti", id, fld(im, "route_id"),
			         fld(im, "origin_id"), fld(im, "destination_id"), fld(im, "contains_id"),
			         (int64_t)im->c.rec_line);
		if (rc == KP_OK)
			im->st->fare_rules++;
	}
	sqlite3_finalize(st);
	sqlite3_finalize(q_fare);
	sqlite3_finalize(q_route);
	sqlite3_finalize(q_zone);
	return rc;
}

static int load_rider_categories(struct imp *im)
{
	sqlite3_stmt *st = NULL;
	const char *id;
	int rc, null_d;
	int64_t def;

	rc = open_file(im, "rider_categories.txt", COLS("rider_category_id"),
	               COLS("rider_category_id", "rider_category_name", "is_default_fare_category",
	                    "eligibility_url"), &im->have_rider_cats);
	if (rc != KP_OK || !im->have_rider_cats)
		return rc;
	/* A name is shown to riders, not used to price: an old extension's file without one
	 * (rider_category_description) still gives usable ids. */
	if (kp_csv_col(&im->c, "rider_category_name") < 0)
		warn(im, "rider_categories.txt:1: rider_category_name: required column missing "
		     "(names left empty)");
	rc = prep(im, &st, "INSERT INTO fare_rider_categories VALUES (?1, ?2, ?3, ?4)");
	while (rc == KP_OK && (rc = next(im)) == 1) {
		rc = req(im, "rider_category_id", &id);
		if (rc == KP_OK)
			rc = num(im, "is_default_fare_category", 0, 1, &def, &null_d);
		if (rc == KP_OK && def == 1 && im->default_cat[0] != '\0')
			rc = ferr(im, "is_default_fare_category", "a second default category (\"%s\" "
			          "is one)", im->default_cat);
		if (rc == KP_OK)
			rc = ins(im, st, "rider_category_id", "tti", id,
			         fld(im, "rider_category_name"), def);
		if (rc == KP_OK && def == 1)
			snprintf(im->default_cat, sizeof(im->default_cat), "%s", id);
	}
	sqlite3_finalize(st);
	return rc;
}

/* fare_rider_categories.txt: Google's old extension (child fares of a v1 fare). */
static int load_rider_prices(struct imp *im)
{
	sqlite3_stmt *st = NULL, *q_fare = NULL, *q_cat = NULL;
	const char *id, *cat, *cur;
	int present, rc;
	int64_t price;

	rc = open_file(im, "fare_rider_categories.txt", COLS("fare_id", "rider_category_id",
	               "price", "currency_type"), COLS("fare_id", "rider_category_id", "price",
	               "currency_type"), &present);
	if (rc != KP_OK || !present)
		return rc;
	warn(im, "fare_rider_categories.txt: not in GTFS (old Google extension): imported as "
	     "fares v1 prices per rider category");
	rc = prep(im, &st, "INSERT INTO fare_rider_prices VALUES (?1, ?2, ?3, ?4, ?5, ?6)");
	if (rc == KP_OK)
		rc = prep(im, &q_fare, "SELECT 1 FROM fare_attributes WHERE feed_id = ?1 AND fare_id = ?2");
	if (rc == KP_OK)
		rc = prep(im, &q_cat, "SELECT 1 FROM fare_rider_categories WHERE feed_id = ?1"
		          " AND rider_category_id = ?2");
	while (rc == KP_OK && (rc = next(im)) == 1) {
		rc = req(im, "fare_id", &id);
		if (rc == KP_OK)
			rc = req(im, "rider_category_id", &cat);
		if (rc == KP_OK)
			rc = ref(im, q_fare, 1, "fare_id", "fare");
		if (rc == KP_OK)
			rc = ref(im, q_cat, im->have_rider_cats, "rider_category_id", "rider category");
		if (rc == KP_OK)
			rc = money(im, "price", "currency_type", 0, &price, &cur);
		if (rc == KP_OK)
			rc = ins(im, st, "rider_category_id", "ttiti", id, cat, price, cur,
			         (int64_t)im->c.rec_line);
		if (rc == KP_OK)
			im->st->rider_prices++;
	}
	sqlite3_finalize(st);
	sqlite3_finalize(q_fare);
	sqlite3_finalize(q_cat);
	return rc;
}

static int load_timeframes(struct imp *im)
{
	sqlite3_stmt *st = NULL, *q_svc = NULL;
	const char *id, *svc;
	int rc, null0, null1;
	int64_t t0 = 0, t1 = 0;

	rc = open_file(im, "timeframes.txt", COLS("timeframe_group_id", "service_id"),
	               COLS("timeframe_group_id", "start_time", "end_time", "service_id"),
	               &im->have_timeframes);
	if (rc != KP_OK || !im->have_timeframes)
		return rc;
	rc = prep(im, &st, "INSERT INTO fare_timeframes VALUES (?1, ?2, ?3, ?4, ?5)");
	if (rc == KP_OK)
		rc = prep(im, &q_svc, "SELECT 1 FROM fare_calendar WHERE feed_id = ?1 AND service_id = ?2"
		          " UNION ALL SELECT 1 FROM fare_calendar_dates WHERE feed_id = ?1"
		          " AND service_id = ?2");
	while (rc == KP_OK && (rc = next(im)) == 1) {
		rc = req(im, "timeframe_group_id", &id);
		if (rc == KP_OK)
			rc = req(im, "service_id", &svc);
		if (rc == KP_OK)
			rc = ref(im, q_svc, im->have_calendar, "service_id", "service");
		if (rc == KP_OK)
			rc = hms(im, "start_time", &t0, &null0);
		if (rc == KP_OK)
			rc = hms(im, "end_time", &t1, &null1);
		if (rc == KP_OK && null0 != null1)
			rc = ferr(im, null0 ? "start_time" : "end_time", "required when %s is given",
			          null0 ? "end_time" : "start_time");
		if (rc == KP_OK && null0) {      /* neither: the whole day */
			t0 = 0;
			t1 = 24 * 3600;
		}
		if (rc == KP_OK && (t1 > 24 * 3600 || t0 >= t1))
			rc = ferr(im, "end_time", "must be after start_time and at most 24:00:00");
		if (rc == KP_OK)
			rc = ins(im, st, "timeframe_group_id", "tiit", id, t0, t1, svc);
	}
	sqlite3_finalize(st);
	sqlite3_finalize(q_svc);
	return rc;
}

static int load_products(struct imp *im)
{
	sqlite3_stmt *st = NULL, *q_cat = NULL, *q_media = NULL;
	const char *id, *cur;
	int rc;
	int64_t amount;

	rc = open_file(im, "fare_products.txt", COLS("fare_product_id", "amount", "currency"),
	               COLS("fare_product_id", "fare_product_name", "rider_category_id",
	                    "fare_media_id", "amount", "currency"), &im->have_products);
	if (rc != KP_OK || !im->have_products)
		return rc;
	rc = prep(im, &st, "INSERT INTO fare_products VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)");
	if (rc == KP_OK)
		rc = prep(im, &q_cat, "SELECT 1 FROM fare_rider_categories WHERE feed_id = ?1"
		          " AND rider_category_id = ?2");
	if (rc == KP_OK)
		rc = prep(im, &q_media, "SELECT 1 FROM fare_media WHERE feed_id = ?1"
		          " AND fare_media_id = ?2");
	while (rc == KP_OK && (rc = next(im)) == 1) {
		rc = req(im, "fare_product_id", &id);
		if (rc == KP_OK)
			rc = ref(im, q_cat, 1, "rider_category_id", "rider category");
		if (rc == KP_OK)
			rc = ref(im, q_media, 1, "fare_media_id", "fare media");
		/* Negative amounts are allowed: a transfer discount is one. */
		if (rc == KP_OK)
			rc = money(im, "amount", "currency", 1, &amount, &cur);
		if (rc == KP_OK)
			rc = ins(im, st, "fare_product_id", "ttttiti", id,
			         fld(im, "rider_category_id"), fld(im, "fare_media_id"),
			         fld(im, "fare_product_name"), amount, cur, (int64_t)im->c.rec_line);
		if (rc == KP_OK)
			im->st->products++;
	}
	sqlite3_finalize(st);
	sqlite3_finalize(q_cat);
	sqlite3_finalize(q_media);
	return rc;
}

static int load_leg_rules(struct imp *im)
{
	sqlite3_stmt *st = NULL, *q_prod = NULL, *q_net = NULL, *q_area = NULL, *q_tf = NULL;
	const char *prod;
	int rc, null_p;
	int64_t prio;

	rc = open_file(im, "fare_leg_rules.txt", COLS("fare_product_id"),
	               COLS("leg_group_id", "network_id", "from_area_id", "to_area_id",
	                    "from_timeframe_group_id", "to_timeframe_group_id", "fare_product_id",
	                    "rule_priority"), &im->have_leg_rules);
	if (rc != KP_OK || !im->have_leg_rules)
		return rc;
	im->has_priority = kp_csv_col(&im->c, "rule_priority") >= 0;
	rc = prep(im, &st, "INSERT INTO fare_leg_rules VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)");
	if (rc == KP_OK)
		rc = prep(im, &q_prod, "SELECT 1 FROM fare_products WHERE feed_id = ?1"
		          " AND fare_product_id = ?2");
	if (rc == KP_OK)
		rc = prep(im, &q_net, "SELECT 1 FROM fare_networks WHERE feed_id = ?1 AND network_id = ?2"
		          " UNION ALL SELECT 1 FROM fare_routes WHERE feed_id = ?1 AND network_id = ?2");
	if (rc == KP_OK)
		rc = prep(im, &q_area, "SELECT 1 FROM fare_areas WHERE feed_id = ?1 AND area_id = ?2");
	if (rc == KP_OK)
		rc = prep(im, &q_tf, "SELECT 1 FROM fare_timeframes WHERE feed_id = ?1"
		          " AND timeframe_group_id = ?2");
	while (rc == KP_OK && (rc = next(im)) == 1) {
		rc = req(im, "fare_product_id", &prod);
		if (rc == KP_OK)
			rc = ref(im, q_prod, 1, "fare_product_id", "fare product");
		if (rc == KP_OK)
			rc = ref(im, q_net, im->have_networks || im->routes_have_network, "network_id",
			         "network");
		if (rc == KP_OK)
			rc = ref(im, q_area, 1, "from_area_id", "area");
		if (rc == KP_OK)
			rc = ref(im, q_area, 1, "to_area_id", "area");
		if (rc == KP_OK)
			rc = ref(im, q_tf, 1, "from_timeframe_group_id", "timeframe group");
		if (rc == KP_OK)
			rc = ref(im, q_tf, 1, "to_timeframe_group_id", "timeframe group");
		if (rc == KP_OK)
			rc = num(im, "rule_priority", 0, INT32_MAX, &prio, &null_p);
		if (rc == KP_OK)
			rc = ins(im, st, "fare_product_id", "tttttttii", fld(im, "leg_group_id"),
			         fld(im, "network_id"), fld(im, "from_area_id"), fld(im, "to_area_id"),
			         fld(im, "from_timeframe_group_id"), fld(im, "to_timeframe_group_id"),
			         prod, prio, (int64_t)im->c.rec_line);
		if (rc == KP_OK)
			im->st->leg_rules++;
	}
	sqlite3_finalize(st);
	sqlite3_finalize(q_prod);
	sqlite3_finalize(q_net);
	sqlite3_finalize(q_area);
	sqlite3_finalize(q_tf);
	return rc;
}

static int load_transfer_rules(struct imp *im)
{
	sqlite3_stmt *st = NULL, *q_leg = NULL, *q_prod = NULL;
	const char *from, *to;
	int present, rc, null_c, null_d, null_t;
	int64_t count, dur, dtype, ftype;

	rc = open_file(im, "fare_transfer_rules.txt", COLS("fare_transfer_type"),
	               COLS("from_leg_group_id", "to_leg_group_id", "transfer_count",
	                    "duration_limit", "duration_limit_type", "fare_transfer_type",
	                    "fare_product_id"), &present);
	if (rc != KP_OK || !present)
		return rc;
	if (!im->have_leg_rules)
		warn(im, "fare_transfer_rules.txt: no fare_leg_rules.txt: leg groups not checked");
	if (!im->have_products)
		warn(im, "fare_transfer_rules.txt: no fare_products.txt: fare products not checked");
	rc = prep(im, &st, "INSERT INTO fare_transfer_rules VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)");
	if (rc == KP_OK)
		rc = prep(im, &q_leg, "SELECT 1 FROM fare_leg_rules WHERE feed_id = ?1"
		          " AND leg_group_id = ?2");
	if (rc == KP_OK)
		rc = prep(im, &q_prod, "SELECT 1 FROM fare_products WHERE feed_id = ?1"
		          " AND fare_product_id = ?2");
	while (rc == KP_OK && (rc = next(im)) == 1) {
		from = fld(im, "from_leg_group_id");
		to = fld(im, "to_leg_group_id");
		rc = ref(im, q_leg, im->have_leg_rules, "from_leg_group_id", "leg group");
		if (rc == KP_OK)
			rc = ref(im, q_leg, im->have_leg_rules, "to_leg_group_id", "leg group");
		if (rc == KP_OK)
			rc = ref(im, q_prod, im->have_products, "fare_product_id", "fare product");
		if (rc == KP_OK)
			rc = num(im, "transfer_count", -1, INT32_MAX, &count, &null_c);
		if (rc == KP_OK && !null_c && count == 0)
			rc = ferr(im, "transfer_count", "must be -1 or at least 1");
		if (rc == KP_OK && strcmp(from, to) == 0 && null_c)
			rc = ferr(im, "transfer_count", "required when from_leg_group_id equals "
			          "to_leg_group_id");
		if (rc == KP_OK && strcmp(from, to) != 0 && !null_c)
			rc = ferr(im, "transfer_count", "forbidden when from_leg_group_id differs "
			          "from to_leg_group_id");
		if (rc == KP_OK)
			rc = num(im, "duration_limit", 1, INT32_MAX, &dur, &null_d);
		if (rc == KP_OK)
			rc = num(im, "duration_limit_type", 0, 3, &dtype, &null_t);
		if (rc == KP_OK && null_d != null_t)
			rc = ferr(im, "duration_limit_type", null_d ? "forbidden without duration_limit"
			          : "required with duration_limit");
		if (rc == KP_OK)
			rc = req_num(im, "fare_transfer_type", 0, 2, &ftype);
		if (rc == KP_OK)
			rc = ins(im, st, "fare_transfer_type", "ttnnniti", from, to, count, null_c, dur,
			         null_d, dtype, null_t, ftype, fld(im, "fare_product_id"),
			         (int64_t)im->c.rec_line);
		if (rc == KP_OK)
			im->st->transfer_rules++;
	}
	sqlite3_finalize(st);
	sqlite3_finalize(q_leg);
	sqlite3_finalize(q_prod);
	return rc;
}

static int exec_feed(struct imp *im, const char *sql, const char *types, ...)
{
	sqlite3_stmt *st = NULL;
	va_list ap;
	int rc = prep(im, &st, sql);

	if (rc != KP_OK)
		return rc;
	va_start(ap, types);
	bindv(im, st, types, ap);
	va_end(ap);
	if (sqlite3_step(st) != SQLITE_DONE) {
		snprintf(im->err, im->err_cap, "%s", sqlite3_errmsg(im->s->db));
		rc = KP_E_DB;
	}
	sqlite3_finalize(st);
	return rc;
}

static int valid_feed_id(const char *id)
{
	size_t n = strlen(id);

	if (n == 0 || n > KP_FARE_ID_MAX)
		return 0;
	for (; *id != '\0'; id++) {
		if ((unsigned char)*id < 0x21 || *id == 0x7f)
			return 0;
	}
	return 1;
}

/* The last name of a path, trailing slashes left off: the default feed id. */
static void dir_name(const char *dir, char *out, size_t cap)
{
	size_t end = strlen(dir), start;

	while (end > 1 && dir[end - 1] == '/')
		end--;
	for (start = end; start > 0 && dir[start - 1] != '/'; start--)
		;
	snprintf(out, cap, "%.*s", (int)(end - start), dir + start);
}

int kp_fares_import(kp_store *s, const char *dir, const struct kp_fare_import_opts *opts,
                    struct kp_fare_import_stats *stats, char *err, size_t err_cap)
{
	static int (*const steps[])(struct imp *) = {
		load_stops, load_routes, load_calendar, load_fares_v1, load_rider_categories,
		load_rider_prices, load_media_networks_areas, load_timeframes, load_products,
		load_leg_rules, load_transfer_rules,
	};
	struct kp_fare_import_stats local;
	struct imp im;
	char feed[KP_FARE_ID_MAX + 2];
	int rc;

	memset(&im, 0, sizeof(im));
	memset(&local, 0, sizeof(local));
	if (stats == NULL)
		stats = &local;
	memset(stats, 0, sizeof(*stats));
	if (err_cap > 0)
		err[0] = '\0';
	if (s == NULL || dir == NULL || err == NULL || err_cap == 0)
		return KP_E_INVAL;
	if (opts != NULL && opts->feed_id != NULL)
		snprintf(feed, sizeof(feed), "%s", opts->feed_id);
	else
		dir_name(dir, feed, sizeof(feed));
	if (!valid_feed_id(feed)) {
		snprintf(err, err_cap, "feed id \"%s\": 1 to %d printable characters, no spaces",
		         feed, KP_FARE_ID_MAX);
		return KP_E_INVAL;
	}
	im.s = s;
	im.dir = dir;
	im.feed = feed;
	im.opts = opts;
	im.st = stats;
	im.err = err;
	im.err_cap = err_cap;
	rc = kp_store_begin(s);
	if (rc != KP_OK) {
		snprintf(err, err_cap, "begin: %s", kp_store_errmsg(s));
		return rc;
	}
	rc = exec_feed(&im, "DELETE FROM fare_feeds WHERE feed_id = ?1", "");
	if (rc == KP_OK)
		rc = exec_feed(&im, "INSERT INTO fare_feeds VALUES (?1, ?2, 0, 0, '')", "t", dir);
	for (size_t i = 0; rc == KP_OK && i < sizeof(steps) / sizeof(steps[0]); i++)
		rc = steps[i](&im);
	kp_csv_close(&im.c);
	if (rc == KP_OK && stats->fares == 0 && stats->products == 0 && stats->transfer_rules == 0) {
		snprintf(err, err_cap, "%s: no fare files (fare_attributes.txt, fare_products.txt, "
		         "fare_transfer_rules.txt)", dir);
		rc = KP_E_FEED;
	}
	if (rc == KP_OK)
		rc = exec_feed(&im, "UPDATE fare_feeds SET has_leg_rules = ?2, has_rule_priority = ?3,"
		               " default_category = ?4 WHERE feed_id = ?1", "iit",
		               (int64_t)im.have_leg_rules, (int64_t)im.has_priority, im.default_cat);
	if (rc == KP_OK) {
		rc = kp_store_commit(s);
		if (rc != KP_OK)
			snprintf(err, err_cap, "commit: %s", kp_store_errmsg(s));
	}
	if (rc != KP_OK)
		kp_store_rollback(s);
	return rc < 0 ? rc : KP_OK;
}

/* "35.681236" -> 35681236: at most 6 decimals used (a tenth of a metre), range checked by
 * the caller. */
static int parse_micro_degrees(const char *v, int64_t *out)
{
	int64_t whole = 0, frac = 0;
	int neg = 0, digits = 0, n = 0;

	if (*v == '-' || *v == '+')
		neg = *v++ == '-';
	for (; *v >= '0' && *v <= '9' && n < 4; v++, n++)
		whole = whole * 10 + (*v - '0');
	if (n == 0 && *v != '.')
		return -1;
	if (*v == '.') {
		for (v++; *v >= '0' && *v <= '9'; v++) {
			if (digits < 6) {
				frac = frac * 10 + (*v - '0');
				digits++;
			}
		}
	}
	if (*v != '\0' || (n == 0 && digits == 0))
		return -1;
	while (digits++ < 6)
		frac *= 10;
	*out = (whole * 1000000 + frac) * (neg ? -1 : 1);
	return 0;
}

int kp_gtfs_stop_places(const char *dir,
                        int (*fn)(void *arg, const char *stop_id, int64_t lat_e6, int64_t lon_e6),
                        void *arg, char *err, size_t err_cap)
{
	struct kp_csv c;
	int missing = 0, rc, id, lat, lon;

	memset(&c, 0, sizeof(c));
	rc = kp_csv_open(&c, dir, "stops.txt", &missing, err, err_cap);
	if (rc != KP_OK) {
		if (missing)
			snprintf(err, err_cap, "stops.txt: not found");
		return missing ? KP_E_IO : rc;
	}
	id = kp_csv_col(&c, "stop_id");
	lat = kp_csv_col(&c, "stop_lat");
	lon = kp_csv_col(&c, "stop_lon");
	if (id < 0) {
		snprintf(err, err_cap, "stops.txt: no stop_id column");
		kp_csv_close(&c);
		return KP_E_FEED;
	}
	while ((rc = kp_csv_next(&c, err, err_cap)) == 1) {
		const char *sid = kp_csv_get(&c, id);
		int64_t la = 0, lo = 0;

		/* stations' entrances and nodes may have no place; stops without one are not
		 * placed (the gap rule judges them) */
		if (lat < 0 || lon < 0 || sid[0] == '\0' || strlen(sid) > KP_ID_MAX ||
		    parse_micro_degrees(kp_csv_get(&c, lat), &la) != 0 ||
		    parse_micro_degrees(kp_csv_get(&c, lon), &lo) != 0 ||
		    la < -90000000 || la > 90000000 || lo < -180000000 || lo > 180000000)
			continue;
		rc = fn(arg, sid, la, lo);
		if (rc != KP_OK)
			break;
	}
	kp_csv_close(&c);
	return rc == 0 ? KP_OK : rc;
}
