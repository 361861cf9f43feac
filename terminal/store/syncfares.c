/* SPDX-License-Identifier: Apache-2.0 */
/* Fare feeds and the fare engine's configuration between a terminal store and the config
 * bundle (format 2): a feed's rows as a fare package (kp_bundle.h) and back, and a store's
 * operators, products and fare rules as a bundle (kippuctl backend load reads a load file
 * into a scratch store with the terminal's own parser, then sends this to the backend).
 * Every SQL text here is built from the package whitelist's own strings, never from a
 * package's. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "kp_proto.h"
#include "kp_store.h"
#include "kp_store_sql.h"

#define FEED_DIGEST_PREFIX "feed_digest:"

/* Tables without a primary key keep the file's order (rowid): the fare engine's ties. */
static int keeps_rowid_order(const char *table)
{
	return strcmp(table, "fare_rules") == 0 || strcmp(table, "fare_leg_rules") == 0 ||
	       strcmp(table, "fare_transfer_rules") == 0;
}

static int prepare(kp_store *s, sqlite3_stmt **st, const char *sql, const char *what)
{
	if (sqlite3_prepare_v2(s->db, sql, -1, st, NULL) != SQLITE_OK)
		return kp_store_fail(s, what);
	return KP_OK;
}

/* "SELECT c1, c2 FROM t WHERE feed_id = ?1 ORDER BY ..." or "INSERT INTO t(feed_id, c1, c2)
 * VALUES (?1, ?2, ?3)" for whitelist table t. */
static int table_sql(const struct kp_fare_table_spec *t, int insert, char *sql, size_t cap)
{
	size_t n = 0;
	int w;

#define ADD(...)                                                              \
	do {                                                                  \
		w = snprintf(sql + n, cap - n, __VA_ARGS__);                  \
		if (w < 0 || (size_t)w >= cap - n)                            \
			return KP_E_INVAL;                                    \
		n += (size_t)w;                                               \
	} while (0)
	if (insert)
		ADD("INSERT INTO %s(feed_id", t->name);
	else
		ADD("SELECT ");
	for (size_t c = 0; c < t->n_cols; c++)
		ADD("%s%s", insert || c > 0 ? ", " : "", t->cols[c]);
	if (insert) {
		ADD(") VALUES (?1");
		for (size_t c = 0; c < t->n_cols; c++)
			ADD(", ?%zu", c + 2);
		ADD(")");
	} else if (keeps_rowid_order(t->name)) {
		ADD(" FROM %s WHERE feed_id = ?1 ORDER BY rowid", t->name);
	} else {
		ADD(" FROM %s WHERE feed_id = ?1 ORDER BY ", t->name);
		for (size_t c = 0; c < t->n_cols; c++)
			ADD("%s%zu", c > 0 ? ", " : "", c + 1);
	}
#undef ADD
	return KP_OK;
}

static int count_rows(kp_store *s, const struct kp_fare_table_spec *t, const char *feed_id,
                      size_t *n)
{
	char sql[160];
	sqlite3_stmt *st = NULL;
	int rc;

	snprintf(sql, sizeof(sql), "SELECT count(*) FROM %s WHERE feed_id = ?1", t->name);
	rc = prepare(s, &st, sql, "fare rows");
	if (rc != KP_OK)
		return rc;
	sqlite3_bind_text(st, 1, feed_id, -1, SQLITE_STATIC);
	rc = sqlite3_step(st) == SQLITE_ROW ? KP_OK : kp_store_fail(s, "fare rows");
	*n = rc == KP_OK ? (size_t)sqlite3_column_int64(st, 0) : 0;
	sqlite3_finalize(st);
	return rc;
}

int kp_store_export_feed(kp_store *s, const char *feed_id, uint8_t **pkg, size_t *len,
                         size_t *n_rows, char *err, size_t err_cap)
{
	size_t counts[KP_FARE_PKG_TABLES], n_tables = 0, total = 0;
	kp_fare_pkg_writer *w = NULL;
	sqlite3_stmt *st = NULL;
	char sql[1024];
	int rc = KP_OK, prc;

	*pkg = NULL;
	*len = 0;
	if (n_rows != NULL)
		*n_rows = 0;
	if (err_cap > 0)
		err[0] = '\0';
	for (size_t i = 0; rc == KP_OK && i < KP_FARE_PKG_TABLES; i++) {
		rc = count_rows(s, kp_fare_table(i), feed_id, &counts[i]);
		n_tables += rc == KP_OK && counts[i] > 0;
		total += counts[i];
	}
	if (rc != KP_OK) {
		snprintf(err, err_cap, "%s", kp_store_errmsg(s));
		return rc;
	}
	if (counts[kp_fare_table_index(KP_FARE_TABLE_FEEDS)] != 1) {
		snprintf(err, err_cap, "no fare feed %s in the store", feed_id);
		return KP_E_INVAL;
	}
	prc = kp_fare_pkg_begin(&w, n_tables);
	for (size_t i = 0; prc == KP_SYNC_OK && rc == KP_OK && i < KP_FARE_PKG_TABLES; i++) {
		const struct kp_fare_table_spec *t = kp_fare_table(i);
		struct kp_fare_value vals[KP_FARE_PKG_COLS_MAX];
		size_t got = 0;

		if (counts[i] == 0)
			continue;
		prc = kp_fare_pkg_table(w, i, counts[i]);
		if (prc == KP_SYNC_OK)
			rc = table_sql(t, 0, sql, sizeof(sql));
		if (prc == KP_SYNC_OK && rc == KP_OK)
			rc = prepare(s, &st, sql, "fare export");
		if (prc != KP_SYNC_OK || rc != KP_OK)
			break;
		sqlite3_bind_text(st, 1, feed_id, -1, SQLITE_STATIC);
		while (prc == KP_SYNC_OK && got < counts[i] && sqlite3_step(st) == SQLITE_ROW) {
			for (size_t c = 0; c < t->n_cols; c++) {
				int type = sqlite3_column_type(st, (int)c);

				memset(&vals[c], 0, sizeof(vals[c]));
				if (t->types[c] == KP_FCOL_TEXT && type != SQLITE_NULL) {
					vals[c].s = (const char *)sqlite3_column_text(st, (int)c);
					vals[c].n = (size_t)sqlite3_column_bytes(st, (int)c);
				} else if (t->types[c] != KP_FCOL_TEXT && type == SQLITE_INTEGER) {
					vals[c].i = sqlite3_column_int64(st, (int)c);
				} else if (t->types[c] == KP_FCOL_INT_NULL && type == SQLITE_NULL) {
					vals[c].is_null = 1;
				} else {
					snprintf(err, err_cap, "%s.%s holds a value of the wrong type",
					         t->name, t->cols[c]);
					rc = KP_E_INVAL;
				}
			}
			if (rc != KP_OK)
				break;
			prc = kp_fare_pkg_row(w, vals);
			got++;
		}
		sqlite3_finalize(st);
		st = NULL;
		if (rc == KP_OK && prc == KP_SYNC_OK && got != counts[i]) {
			snprintf(err, err_cap, "%s changed while it was read", t->name);
			rc = KP_E_DB;
		}
	}
	if (rc == KP_OK && prc == KP_SYNC_OK)
		prc = kp_fare_pkg_finish(w, pkg, len, err, err_cap);
	else if (rc == KP_OK && err[0] == '\0')
		snprintf(err, err_cap, "fare package: %s (a text longer than %d bytes?)",
		         kp_sync_strerror(prc), KP_FARE_PKG_TEXT_MAX);
	kp_fare_pkg_writer_free(w);
	if (rc == KP_OK && prc != KP_SYNC_OK)
		rc = KP_E_INVAL;
	if (rc == KP_OK && n_rows != NULL)
		*n_rows = total;
	return rc;
}

/* ---- applying a package (inside the bundle's transaction) ---- */

struct apply_ctx {
	kp_store *s;
	const char *feed_id;
	sqlite3_stmt *st[KP_FARE_PKG_TABLES];
	int rc;
};

static int apply_row(void *arg, size_t table, const struct kp_fare_value *vals)
{
	struct apply_ctx *a = arg;
	const struct kp_fare_table_spec *t = kp_fare_table(table);
	sqlite3_stmt *st;
	char sql[1024];

	if (a->st[table] == NULL) {
		a->rc = table_sql(t, 1, sql, sizeof(sql));
		if (a->rc == KP_OK)
			a->rc = prepare(a->s, &a->st[table], sql, "fare apply");
		if (a->rc != KP_OK)
			return 1;
	}
	st = a->st[table];
	sqlite3_reset(st);
	sqlite3_clear_bindings(st);
	sqlite3_bind_text(st, 1, a->feed_id, -1, SQLITE_STATIC);
	for (size_t c = 0; c < t->n_cols; c++) {
		if (t->types[c] == KP_FCOL_TEXT)
			sqlite3_bind_text(st, (int)c + 2, vals[c].s, (int)vals[c].n, SQLITE_STATIC);
		else if (vals[c].is_null)
			sqlite3_bind_null(st, (int)c + 2);
		else
			sqlite3_bind_int64(st, (int)c + 2, vals[c].i);
	}
	if (sqlite3_step(st) != SQLITE_DONE) {
		char what[96];

		snprintf(what, sizeof(what), "feed %s: %s", a->feed_id, t->name);
		a->rc = kp_store_fail(a->s, what);
		return 1;
	}
	return 0;
}

/* Every table but fare_feeds, which went first. */
static int apply_other(void *arg, size_t table, const struct kp_fare_value *vals)
{
	if (strcmp(kp_fare_table(table)->name, KP_FARE_TABLE_FEEDS) == 0)
		return 0;
	return apply_row(arg, table, vals);
}

static int digest_get(kp_store *s, const char *feed_id, char hex[2 * KP_SHA256_LEN + 1])
{
	char key[KP_ID_MAX + sizeof(FEED_DIGEST_PREFIX) + 1];

	snprintf(key, sizeof(key), FEED_DIGEST_PREFIX "%s", feed_id);
	if (kp_store_meta_get(s, key, hex, 2 * KP_SHA256_LEN + 1) != KP_OK)
		hex[0] = '\0';
	return KP_OK;
}

static int run1(kp_store *s, const char *sql, const char *text, const char *what)
{
	sqlite3_stmt *st = NULL;
	int rc = prepare(s, &st, sql, what);

	if (rc != KP_OK)
		return rc;
	sqlite3_bind_text(st, 1, text, -1, SQLITE_STATIC);
	rc = sqlite3_step(st) == SQLITE_DONE ? KP_OK : kp_store_fail(s, what);
	sqlite3_finalize(st);
	return rc;
}

static int feed_exists(kp_store *s, const char *feed_id, int *exists)
{
	sqlite3_stmt *st = NULL;
	int rc = prepare(s, &st, "SELECT 1 FROM fare_feeds WHERE feed_id = ?1", "fare feed");

	if (rc != KP_OK)
		return rc;
	sqlite3_bind_text(st, 1, feed_id, -1, SQLITE_STATIC);
	*exists = sqlite3_step(st) == SQLITE_ROW;
	sqlite3_finalize(st);
	return KP_OK;
}

int kp_store_apply_feed(kp_store *s, const char *feed_id, const uint8_t digest[KP_SHA256_LEN],
                        const uint8_t *pkg, size_t len, int *applied)
{
	char have[2 * KP_SHA256_LEN + 1], want[2 * KP_SHA256_LEN + 1], key[80], why[256];
	struct apply_ctx a;
	int exists = 0, rc, wrc;

	*applied = 0;
	kp_hex(digest, KP_SHA256_LEN, want);
	rc = digest_get(s, feed_id, have);
	if (rc == KP_OK)
		rc = feed_exists(s, feed_id, &exists);
	if (rc != KP_OK)
		return rc;
	/* The same content as applied before: a big feed is not rewritten at every sync. */
	if (exists && strcmp(have, want) == 0)
		return KP_OK;
	rc = run1(s, "DELETE FROM fare_feeds WHERE feed_id = ?1", feed_id, "replace feed");
	if (rc != KP_OK)
		return rc;
	memset(&a, 0, sizeof(a));
	a.s = s;
	a.feed_id = feed_id;
	/* fare_feeds first: every other table refers to it */
	wrc = kp_fare_pkg_walk(pkg, len, kp_fare_table_index(KP_FARE_TABLE_FEEDS), apply_row, &a,
	                       NULL, why, sizeof(why));
	if (wrc == KP_SYNC_OK)
		wrc = kp_fare_pkg_walk(pkg, len, -1, apply_other, &a, NULL, why, sizeof(why));
	for (size_t i = 0; i < KP_FARE_PKG_TABLES; i++)
		sqlite3_finalize(a.st[i]);
	if (a.rc != KP_OK)
		return a.rc;
	if (wrc != KP_SYNC_OK) {
		snprintf(s->err, sizeof(s->err), "feed %s: %s", feed_id, why);
		return KP_E_INVAL;
	}
	snprintf(key, sizeof(key), FEED_DIGEST_PREFIX "%s", feed_id);
	rc = kp_store_meta_set(s, key, want);
	*applied = rc == KP_OK;
	return rc;
}

int kp_store_withdraw_feeds(kp_store *s, const char *const *keep, size_t n_keep)
{
	sqlite3_stmt *st = NULL;
	char (*gone)[KP_ID_MAX + 1] = NULL;
	size_t n = 0, cap = 0;
	int rc = prepare(s, &st, "SELECT substr(key, ?1) FROM meta WHERE substr(key, 1, ?2) = ?3",
	                 "bundle feeds");

	if (rc != KP_OK)
		return rc;
	sqlite3_bind_int(st, 1, (int)strlen(FEED_DIGEST_PREFIX) + 1);
	sqlite3_bind_int(st, 2, (int)strlen(FEED_DIGEST_PREFIX));
	sqlite3_bind_text(st, 3, FEED_DIGEST_PREFIX, -1, SQLITE_STATIC);
	while (rc == KP_OK && sqlite3_step(st) == SQLITE_ROW) {
		const char *id = (const char *)sqlite3_column_text(st, 0);
		size_t i;

		for (i = 0; i < n_keep && strcmp(keep[i], id) != 0; i++)
			;
		if (i < n_keep || strlen(id) > KP_ID_MAX)
			continue;
		if (n == cap) {
			void *p = realloc(gone, (cap = cap ? cap * 2 : 8) * sizeof(*gone));

			if (p == NULL) {
				rc = KP_E_NOMEM;
				break;
			}
			gone = p;
		}
		snprintf(gone[n++], KP_ID_MAX + 1, "%s", id);
	}
	sqlite3_finalize(st);
	/* feeds an earlier bundle brought and this one does not: withdrawn at the backend */
	for (size_t i = 0; rc == KP_OK && i < n; i++) {
		char key[80];

		snprintf(key, sizeof(key), FEED_DIGEST_PREFIX "%s", gone[i]);
		rc = run1(s, "DELETE FROM fare_feeds WHERE feed_id = ?1", gone[i], "withdraw feed");
		if (rc == KP_OK)
			rc = run1(s, "DELETE FROM meta WHERE key = ?1", key, "withdraw feed");
	}
	free(gone);
	return rc;
}

/* ---- a store's configuration as a bundle ---- */

static int count_of(kp_store *s, const char *sql, size_t *n)
{
	sqlite3_stmt *st = NULL;
	int rc = prepare(s, &st, sql, "count");

	if (rc != KP_OK)
		return rc;
	rc = sqlite3_step(st) == SQLITE_ROW ? KP_OK : kp_store_fail(s, "count");
	*n = rc == KP_OK ? (size_t)sqlite3_column_int64(st, 0) : 0;
	sqlite3_finalize(st);
	return rc;
}

/* calloc'd room for n elements (at least one, so an empty table is not an error). */
#define ALLOC(arr, n)                                            \
	do {                                                     \
		arr = calloc((n) + 1, sizeof(*(arr)));           \
		if (arr == NULL) {                               \
			rc = KP_E_NOMEM;                         \
			goto out;                                \
		}                                                \
	} while (0)

static int export_products(kp_store *s, struct kp_bundle *b)
{
	sqlite3_stmt *st = NULL, *ops = NULL, *stops = NULL;
	size_t n = 0;
	int rc = count_of(s, "SELECT count(*) FROM products", &n);

	if (rc != KP_OK)
		return rc;
	ALLOC(b->products, n);
	rc = prepare(s, &st, "SELECT id, name, rides, coalesce(category, ''), stored,"
	                     " coalesce(period_days, 0), commuter_route FROM products ORDER BY id",
	             "products");
	if (rc == KP_OK)
		rc = prepare(s, &ops, "SELECT operator_id FROM product_operators WHERE product_id = ?1"
		                      " ORDER BY operator_id", "product operators");
	if (rc == KP_OK)
		rc = prepare(s, &stops, "SELECT stop_id FROM product_stops WHERE product_id = ?1"
		                        " ORDER BY pos", "product stops");
	while (rc == KP_OK && b->n_products < n && sqlite3_step(st) == SQLITE_ROW) {
		struct kp_bundle_product *p = &b->products[b->n_products++];

		kp_store_col_text(st, 0, p->id, sizeof(p->id));
		kp_store_col_text(st, 1, p->name, sizeof(p->name));
		p->rides = sqlite3_column_int64(st, 2);
		kp_store_col_text(st, 3, p->category, sizeof(p->category));
		if (sqlite3_column_type(st, 6) != SQLITE_NULL) {
			p->kind = KP_PRODUCT_COMMUTER;
			kp_store_col_text(st, 6, p->route, sizeof(p->route));
			p->stops = calloc(KP_BUNDLE_PRODUCT_STOPS_MAX, sizeof(*p->stops));
			if (p->stops == NULL) {
				rc = KP_E_NOMEM;
				break;
			}
			sqlite3_reset(stops);
			sqlite3_bind_text(stops, 1, p->id, -1, SQLITE_STATIC);
			while (sqlite3_step(stops) == SQLITE_ROW && p->n_stops < KP_BUNDLE_PRODUCT_STOPS_MAX)
				kp_store_col_text(stops, 0, p->stops[p->n_stops++], KP_ID_MAX + 1);
		} else if (sqlite3_column_int(st, 5) > 0) {
			p->kind = KP_PRODUCT_PERIOD;
			p->days = sqlite3_column_int(st, 5);
		} else if (sqlite3_column_int(st, 4) != 0) {
			p->kind = KP_PRODUCT_STORED;
		}
		sqlite3_reset(ops);
		sqlite3_bind_text(ops, 1, p->id, -1, SQLITE_STATIC);
		while (sqlite3_step(ops) == SQLITE_ROW && p->n_operators < KP_BUNDLE_PRODUCT_OPS_MAX)
			kp_store_col_text(ops, 0, p->operators[p->n_operators++], KP_ID_MAX + 1);
	}
out:
	sqlite3_finalize(st);
	sqlite3_finalize(ops);
	sqlite3_finalize(stops);
	return rc;
}

int kp_store_export_config(kp_store *s, struct kp_bundle *b)
{
	static const enum kp_bundle_array_id arrays[] = {
		KP_BA_OPERATORS, KP_BA_PRODUCTS, KP_BA_SCOPES, KP_BA_DISCOUNTS, KP_BA_CAPS,
		KP_BA_TRANSFERS, KP_BA_OPERATOR_FARES,
	};
	int rc = KP_OK;

	memset(b, 0, sizeof(*b));
	for (size_t i = 0; rc == KP_OK && i < sizeof(arrays) / sizeof(arrays[0]); i++)
		rc = arrays[i] == KP_BA_PRODUCTS ? export_products(s, b) :
		     kp_store_get_rows(s, arrays[i], b);
	if (rc != KP_OK)
		kp_bundle_free(b);
	return rc;
}
