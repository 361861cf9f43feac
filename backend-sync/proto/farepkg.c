/* SPDX-License-Identifier: Apache-2.0 */
/* Fare packages: one imported GTFS fare feed as canonical CBOR, table by table, for the
 * config bundle. The whitelist below is the protocol's view of the terminal's fare_* tables
 * (terminal/store/store.c, migration 5); a package naming any other table or column is refused,
 * and neither end ever builds SQL from a package's strings. PROTOCOL.md section 5. */
#include "kp_bundle.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "kp_cbor.h"

#define T KP_FCOL_TEXT
#define I KP_FCOL_INT
#define N KP_FCOL_INT_NULL
#define TABLE(name, ...)                                                              \
	static const char *const name##_cols[] = { __VA_ARGS__ };                       \
	enum { name##_n = sizeof(name##_cols) / sizeof(name##_cols[0]) }

TABLE(areas, "area_id", "name");
static const enum kp_fare_col_type areas_types[] = { T, T };
TABLE(feeds, "source", "has_leg_rules", "has_rule_priority", "default_category");
static const enum kp_fare_col_type feeds_types[] = { T, I, I, T };
TABLE(media, "fare_media_id", "name", "type");
static const enum kp_fare_col_type media_types[] = { T, T, I };
TABLE(rules, "fare_id", "route_id", "origin_id", "destination_id", "contains_id", "line");
static const enum kp_fare_col_type rules_types[] = { T, T, T, T, T, I };
TABLE(stops, "stop_id", "zone_id");
static const enum kp_fare_col_type stops_types[] = { T, T };
TABLE(routes, "route_id", "agency_id", "network_id");
static const enum kp_fare_col_type routes_types[] = { T, T, T };
TABLE(calendar, "service_id", "days", "start_date", "end_date");
static const enum kp_fare_col_type calendar_types[] = { T, I, I, I };
TABLE(networks, "network_id", "name");
static const enum kp_fare_col_type networks_types[] = { T, T };
TABLE(products, "fare_product_id", "rider_category_id", "fare_media_id", "name", "amount",
      "currency", "line");
static const enum kp_fare_col_type products_types[] = { T, T, T, T, I, T, I };
TABLE(leg_rules, "leg_group_id", "network_id", "from_area_id", "to_area_id",
      "from_timeframe_group_id", "to_timeframe_group_id", "fare_product_id", "rule_priority",
      "line");
static const enum kp_fare_col_type leg_rules_types[] = { T, T, T, T, T, T, T, I, I };
TABLE(attributes, "fare_id", "price", "currency", "payment_method", "transfers",
      "transfer_duration", "agency_id", "line");
static const enum kp_fare_col_type attributes_types[] = { T, I, T, I, N, N, T, I };
TABLE(stop_areas, "area_id", "stop_id");
static const enum kp_fare_col_type stop_areas_types[] = { T, T };
TABLE(timeframes, "timeframe_group_id", "start_s", "end_s", "service_id");
static const enum kp_fare_col_type timeframes_types[] = { T, I, I, T };
TABLE(rider_prices, "fare_id", "rider_category_id", "price", "currency", "line");
static const enum kp_fare_col_type rider_prices_types[] = { T, T, I, T, I };
TABLE(calendar_dates, "service_id", "date", "exception_type");
static const enum kp_fare_col_type calendar_dates_types[] = { T, I, I };
TABLE(route_networks, "network_id", "route_id");
static const enum kp_fare_col_type route_networks_types[] = { T, T };
TABLE(transfer_rules, "from_leg_group_id", "to_leg_group_id", "transfer_count",
      "duration_limit", "duration_limit_type", "fare_transfer_type", "fare_product_id", "line");
static const enum kp_fare_col_type transfer_rules_types[] = { T, T, N, N, N, I, T, I };
TABLE(rider_categories, "rider_category_id", "name", "is_default");
static const enum kp_fare_col_type rider_categories_types[] = { T, T, I };

#define SPEC(table, name) { table, name##_n, name##_cols, name##_types }

/* Canonical key order: shorter names first, then bytewise. */
static const struct kp_fare_table_spec tables[KP_FARE_PKG_TABLES] = {
	SPEC("fare_areas", areas),
	SPEC("fare_feeds", feeds),
	SPEC("fare_media", media),
	SPEC("fare_rules", rules),
	SPEC("fare_stops", stops),
	SPEC("fare_routes", routes),
	SPEC("fare_calendar", calendar),
	SPEC("fare_networks", networks),
	SPEC("fare_products", products),
	SPEC("fare_leg_rules", leg_rules),
	SPEC("fare_attributes", attributes),
	SPEC("fare_stop_areas", stop_areas),
	SPEC("fare_timeframes", timeframes),
	SPEC("fare_rider_prices", rider_prices),
	SPEC("fare_calendar_dates", calendar_dates),
	SPEC("fare_route_networks", route_networks),
	SPEC("fare_transfer_rules", transfer_rules),
	SPEC("fare_rider_categories", rider_categories),
};
#undef T
#undef I
#undef N

const struct kp_fare_table_spec *kp_fare_table(size_t i)
{
	return i < KP_FARE_PKG_TABLES ? &tables[i] : NULL;
}

int kp_fare_table_index(const char *name)
{
	for (size_t i = 0; name != NULL && i < KP_FARE_PKG_TABLES; i++) {
		if (strcmp(tables[i].name, name) == 0)
			return (int)i;
	}
	return -1;
}

/* ---- writing ---- */

struct kp_fare_pkg_writer {
	struct kp_cbor_writer w;
	size_t tables_left, rows_left;
	int table;                       /* last table begun, -1 none */
	int rc;
};

int kp_fare_pkg_begin(kp_fare_pkg_writer **out, size_t n_tables)
{
	kp_fare_pkg_writer *p;

	*out = NULL;
	if (n_tables < 1 || n_tables > KP_FARE_PKG_TABLES)
		return KP_SYNC_E_INVAL;
	p = calloc(1, sizeof(*p));
	if (p == NULL)
		return KP_SYNC_E_NOMEM;
	p->table = -1;
	p->tables_left = n_tables;
	kp_cbor_put_map(&p->w, n_tables);
	*out = p;
	return KP_SYNC_OK;
}

int kp_fare_pkg_table(kp_fare_pkg_writer *p, size_t table, size_t n_rows)
{
	const struct kp_fare_table_spec *t = kp_fare_table(table);

	if (p->rc != KP_SYNC_OK)
		return p->rc;
	if (t == NULL || (int)table <= p->table || p->tables_left == 0 || p->rows_left != 0 ||
	    n_rows == 0 || n_rows > KP_FARE_PKG_ROWS_MAX)
		return p->rc = KP_SYNC_E_INVAL;
	p->table = (int)table;
	p->tables_left--;
	p->rows_left = n_rows;
	kp_cbor_put_tstr(&p->w, t->name);
	kp_cbor_put_map(&p->w, 2);
	kp_cbor_put_tstr(&p->w, "cols");
	kp_cbor_put_array(&p->w, t->n_cols);
	for (size_t c = 0; c < t->n_cols; c++)
		kp_cbor_put_tstr(&p->w, t->cols[c]);
	kp_cbor_put_tstr(&p->w, "rows");
	kp_cbor_put_array(&p->w, n_rows);
	return KP_SYNC_OK;
}

int kp_fare_pkg_row(kp_fare_pkg_writer *p, const struct kp_fare_value *vals)
{
	const struct kp_fare_table_spec *t;

	if (p->rc != KP_SYNC_OK)
		return p->rc;
	if (p->table < 0 || p->rows_left == 0)
		return p->rc = KP_SYNC_E_INVAL;
	t = &tables[p->table];
	kp_cbor_put_array(&p->w, t->n_cols);
	for (size_t c = 0; c < t->n_cols; c++) {
		const struct kp_fare_value *v = &vals[c];

		if (t->types[c] == KP_FCOL_TEXT) {
			if (v->s == NULL || v->n > KP_FARE_PKG_TEXT_MAX)
				return p->rc = KP_SYNC_E_INVAL;
			kp_cbor_put_head(&p->w, 3, v->n);
			kp_cbor_put_raw(&p->w, v->s, v->n);
		} else if (v->is_null) {
			if (t->types[c] != KP_FCOL_INT_NULL)
				return p->rc = KP_SYNC_E_INVAL;
			kp_cbor_put_null(&p->w);
		} else {
			kp_cbor_put_int(&p->w, v->i);
		}
	}
	p->rows_left--;
	return KP_SYNC_OK;
}

int kp_fare_pkg_finish(kp_fare_pkg_writer *p, uint8_t **out, size_t *out_len, char *err,
                       size_t err_cap)
{
	int rc = p->rc;

	*out = NULL;
	*out_len = 0;
	if (rc == KP_SYNC_OK && (p->tables_left != 0 || p->rows_left != 0))
		rc = KP_SYNC_E_INVAL;
	if (rc == KP_SYNC_OK)
		rc = kp_cbor_sync_rc(kp_cbor_writer_finish(&p->w, out, out_len));
	if (rc == KP_SYNC_OK)
		rc = kp_fare_pkg_walk(*out, *out_len, -1, NULL, NULL, NULL, err, err_cap);
	else if (err != NULL && err_cap > 0)
		snprintf(err, err_cap, "fare package: %s", kp_sync_strerror(rc));
	if (rc != KP_SYNC_OK) {
		free(*out);
		*out = NULL;
		*out_len = 0;
	}
	return rc;
}

void kp_fare_pkg_writer_free(kp_fare_pkg_writer *p)
{
	if (p == NULL)
		return;
	kp_cbor_writer_free(&p->w);
	free(p);
}

/* ---- reading ---- */

static int perr(char *err, size_t cap, int rc, const char *fmt, ...)
	__attribute__((format(printf, 4, 5)));

static int perr(char *err, size_t cap, int rc, const char *fmt, ...)
{
	va_list ap;
	int n;

	if (err != NULL && cap > 0) {
		n = snprintf(err, cap, "fare package: ");
		va_start(ap, fmt);
		if (n > 0 && (size_t)n < cap)
			vsnprintf(err + n, cap - (size_t)n, fmt, ap);
		va_end(ap);
	}
	return rc;
}

/* A text item into dst[cap] (names of tables and columns). */
static int read_name(struct kp_cbor_reader *r, char *dst, size_t cap)
{
	int rc = kp_cbor_read_text(r, dst, cap, false);

	return rc == KP_RECORD_E_INVAL ? KP_RECORD_E_MALFORMED : rc;
}

static int read_value(struct kp_cbor_reader *r, enum kp_fare_col_type type,
                      struct kp_fare_value *v)
{
	struct kp_cbor_item it;
	int rc = kp_cbor_next(r, &it);

	memset(v, 0, sizeof(*v));
	if (rc != KP_RECORD_OK)
		return rc;
	if (!it.shortest)
		return KP_RECORD_E_MALFORMED;
	switch (type) {
	case KP_FCOL_TEXT:
		if (it.type != KP_CBOR_TSTR || it.arg > KP_FARE_PKG_TEXT_MAX ||
		    memchr(it.data, 0, it.arg) != NULL || !kp_cbor_utf8_valid(it.data, it.arg))
			return KP_RECORD_E_MALFORMED;
		v->s = (const char *)it.data;
		v->n = it.arg;
		return KP_RECORD_OK;
	case KP_FCOL_INT_NULL:
		if (it.type == KP_CBOR_NULL) {
			v->is_null = 1;
			return KP_RECORD_OK;
		}
		/* fall through */
	case KP_FCOL_INT:
		if (it.type == KP_CBOR_UINT && it.arg <= INT64_MAX) {
			v->i = (int64_t)it.arg;
			return KP_RECORD_OK;
		}
		if (it.type == KP_CBOR_NEGINT && it.arg <= INT64_MAX) {
			v->i = -1 - (int64_t)it.arg;
			return KP_RECORD_OK;
		}
		return KP_RECORD_E_MALFORMED;
	}
	return KP_RECORD_E_MALFORMED;
}

int kp_fare_pkg_walk(const uint8_t *pkg, size_t len, int only,
                     int (*fn)(void *arg, size_t table, const struct kp_fare_value *vals),
                     void *arg, size_t *n_rows, char *err, size_t err_cap)
{
	struct kp_cbor_reader r = { .buf = pkg, .len = len };
	struct kp_fare_value vals[KP_FARE_PKG_COLS_MAX];
	uint64_t n_tables, n, rows_total = 0;
	int last = -1, saw_feeds = 0, rc;
	char name[64];

	if (n_rows != NULL)
		*n_rows = 0;
	if (err != NULL && err_cap > 0)
		err[0] = '\0';
	if (pkg == NULL || len == 0)
		return perr(err, err_cap, KP_SYNC_E_MALFORMED, "empty");
	rc = kp_cbor_read_map(&r, &n_tables);
	if (rc != KP_RECORD_OK || n_tables < 1 || n_tables > KP_FARE_PKG_TABLES)
		return perr(err, err_cap, KP_SYNC_E_MALFORMED, "not a map of 1 to %d tables",
		            KP_FARE_PKG_TABLES);
	for (uint64_t ti = 0; ti < n_tables; ti++) {
		const struct kp_fare_table_spec *t;
		int idx;

		if (read_name(&r, name, sizeof(name)) != KP_RECORD_OK)
			return perr(err, err_cap, KP_SYNC_E_MALFORMED, "table %llu: name is not a "
			            "short text", (unsigned long long)ti + 1);
		idx = kp_fare_table_index(name);
		if (idx < 0) {
			char shown[64];

			kp_cbor_text_printable(shown, sizeof(shown), name, strlen(name));
			return perr(err, err_cap, KP_SYNC_E_MALFORMED, "unknown table '%s'", shown);
		}
		if (idx <= last)
			return perr(err, err_cap, KP_SYNC_E_MALFORMED, "table %s out of order or twice",
			            name);
		last = idx;
		t = &tables[idx];
		saw_feeds |= strcmp(t->name, KP_FARE_TABLE_FEEDS) == 0;
		if (kp_cbor_read_map(&r, &n) != KP_RECORD_OK || n != 2 ||
		    kp_cbor_read_key(&r, "cols") != KP_RECORD_OK ||
		    kp_cbor_read_array(&r, &n) != KP_RECORD_OK)
			return perr(err, err_cap, KP_SYNC_E_MALFORMED, "%s: not {cols, rows}", t->name);
		if (n != t->n_cols)
			return perr(err, err_cap, KP_SYNC_E_MALFORMED, "%s: %llu columns, not %zu",
			            t->name, (unsigned long long)n, t->n_cols);
		for (size_t c = 0; c < t->n_cols; c++) {
			if (read_name(&r, name, sizeof(name)) != KP_RECORD_OK ||
			    strcmp(name, t->cols[c]) != 0) {
				char shown[64];

				kp_cbor_text_printable(shown, sizeof(shown), name, strlen(name));
				return perr(err, err_cap, KP_SYNC_E_MALFORMED, "%s: column %zu is '%s', "
				            "not %s", t->name, c + 1, shown, t->cols[c]);
			}
		}
		if (kp_cbor_read_key(&r, "rows") != KP_RECORD_OK ||
		    kp_cbor_read_array(&r, &n) != KP_RECORD_OK || n == 0)
			return perr(err, err_cap, KP_SYNC_E_MALFORMED, "%s: rows missing or empty",
			            t->name);
		if (n > KP_FARE_PKG_ROWS_MAX - rows_total)
			return perr(err, err_cap, KP_SYNC_E_TOOBIG, "more than %d rows",
			            KP_FARE_PKG_ROWS_MAX);
		/* every row takes at least its head and one byte per column */
		if (n > (r.len - r.pos) / (1 + t->n_cols))
			return perr(err, err_cap, KP_SYNC_E_MALFORMED, "%s: %llu rows claimed, the "
			            "input cannot hold them", t->name, (unsigned long long)n);
		if (strcmp(t->name, KP_FARE_TABLE_FEEDS) == 0 && n != 1)
			return perr(err, err_cap, KP_SYNC_E_MALFORMED, "fare_feeds has %llu rows, not 1",
			            (unsigned long long)n);
		rows_total += n;
		for (uint64_t ri = 0; ri < n; ri++) {
			uint64_t cols = 0;

			if (kp_cbor_read_array(&r, &cols) != KP_RECORD_OK || cols != t->n_cols)
				return perr(err, err_cap, KP_SYNC_E_MALFORMED, "%s row %llu: not an array "
				            "of %zu values", t->name, (unsigned long long)ri + 1, t->n_cols);
			for (size_t c = 0; c < t->n_cols; c++) {
				if (read_value(&r, t->types[c], &vals[c]) != KP_RECORD_OK)
					return perr(err, err_cap, KP_SYNC_E_MALFORMED, "%s row %llu: %s: "
					            "not %s", t->name, (unsigned long long)ri + 1, t->cols[c],
					            t->types[c] == KP_FCOL_TEXT ? "a valid text" :
					            t->types[c] == KP_FCOL_INT ? "an integer" :
					            "an integer or null");
			}
			if (fn != NULL && (only < 0 || only == idx)) {
				rc = fn(arg, (size_t)idx, vals);
				if (rc != 0)
					return rc;
			}
		}
	}
	if (!saw_feeds)
		return perr(err, err_cap, KP_SYNC_E_MALFORMED, "no fare_feeds table");
	if (r.pos != r.len)
		return perr(err, err_cap, KP_SYNC_E_MALFORMED, "trailing bytes");
	if (r.noncanonical)
		return perr(err, err_cap, KP_SYNC_E_MALFORMED, "not canonical CBOR");
	if (n_rows != NULL)
		*n_rows = (size_t)rows_total;
	return KP_SYNC_OK;
}
