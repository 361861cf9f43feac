/* SPDX-License-Identifier: Apache-2.0 */
/* The backend store: the config bundle of a terminal, and the cards' fare state across
 * terminals. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "bstore_int.h"

/* ---- the bundle ---- */

/* Copies text, cutting an over-long value at a UTF-8 character boundary. */
void bs_copy_text(char *dst, size_t cap, const char *src)
{
	size_t n;

	snprintf(dst, cap, "%s", src != NULL ? src : "");
	n = strlen(dst);
	if (src != NULL && n < strlen(src)) {
		while (n > 0 && ((unsigned char)dst[n] & 0xC0) == 0x80)
			n--;
		dst[n] = '\0';
	}
}

static enum kp_product_kind kind_of(const char *k)
{
	for (int i = 0; k != NULL && i < 4; i++) {
		if (strcmp(k, bs_kind_sql[i]) == 0)
			return (enum kp_product_kind)i;
	}
	return KP_PRODUCT_NRIDE;
}

/* A commuter pass's stops, in route order (malloc'd, freed by kp_bundle_free). */
static int fill_stops(kp_bstore *s, struct kp_bundle_product *p)
{
	kp_db_stmt *st = NULL;
	int rc;

	p->stops = calloc(KP_BUNDLE_PRODUCT_STOPS_MAX, sizeof(*p->stops));
	if (p->stops == NULL)
		return KP_BE_E_NOMEM;
	rc = bs_query(s, &st, "SELECT stop_id FROM product_stops WHERE product_id = ?1"
	              " ORDER BY pos", BS_TEXT(p->id));
	if (rc != KP_BE_OK)
		return rc;
	while (kp_db_step(st) == KP_DB_ROW && p->n_stops < KP_BUNDLE_PRODUCT_STOPS_MAX)
		bs_copy_text(p->stops[p->n_stops++], KP_ID_MAX + 1, kp_db_column_text(st, 0));
	kp_db_finalize(st);
	return KP_BE_OK;
}

/* ---- fares across terminals (terminal/fare/FARES.md, "Across terminals") ---- */

#define REMOTE_WINDOW_MS (32LL * 86400000LL)
#define REMOTE_SPENT_MAX 1000000000000000LL     /* the bundle's bound: 10^15 minor units */

/* YYYYMM of a day count from 1970-01-01, as the terminal's kp_service_period computes a
 * service day's month. */
static int64_t month_of_day(int64_t z)
{
	int y, m, d;

	kp_civil_from_days(z, &y, &m, &d);
	return (int64_t)y * 100 + m;
}

/* The latest accepted tap_on of the card at one other terminal (a tap_off's leg starts
 * there). */
struct remote_on {
	char terminal[KP_ID_MAX + 1];
	int64_t ms;
};

/* One card's records in time order, folded into its remote row. */
struct remote_acc {
	struct kp_bundle_remote r;
	int others;                          /* records at other terminals seen */
	int own_on, own_closed;              /* the receiving terminal's latest accepted tap_on */
	int64_t own_on_ms;
	char own_on_op[KP_ID_MAX + 1], own_on_stop[KP_ID_MAX + 1];
	struct remote_on *ons;
	size_t n_ons, cap_ons;
};

static void text_col(kp_db_stmt *st, int i, char *dst, size_t cap)
{
	bs_copy_text(dst, cap, kp_db_column_text(st, i));
	if (!kp_cbor_id_valid(dst, true))
		dst[0] = '\0';
}

/* An operator id as terminals write them (their config's A-Z a-z 0-9 - _ .): a terminal
 * refuses a remote row with any other, and with it the whole bundle, so a record that says
 * otherwise opens no journey and makes no leg here. */
bool bs_plain_id(const char *s)
{
	if (*s == '\0')
		return false;
	for (; *s != '\0'; s++) {
		if (!(*s >= 'a' && *s <= 'z') && !(*s >= 'A' && *s <= 'Z') &&
		    !(*s >= '0' && *s <= '9') && *s != '-' && *s != '_' && *s != '.')
			return false;
	}
	return true;
}

static int remote_on_set(struct remote_acc *a, const char *terminal, int64_t ms)
{
	size_t i;

	for (i = 0; i < a->n_ons && strcmp(a->ons[i].terminal, terminal) != 0; i++)
		;
	if (i == a->n_ons) {
		if (a->n_ons == a->cap_ons) {
			size_t cap = a->cap_ons ? a->cap_ons * 2 : 8;
			void *p = realloc(a->ons, cap * sizeof(*a->ons));

			if (p == NULL)
				return KP_BE_E_NOMEM;
			a->ons = p;
			a->cap_ons = cap;
		}
		snprintf(a->ons[a->n_ons++].terminal, KP_ID_MAX + 1, "%s", terminal);
	}
	a->ons[i].ms = ms;
	return KP_BE_OK;
}

static int64_t remote_on_get(const struct remote_acc *a, const char *terminal, int64_t dflt)
{
	for (size_t i = 0; i < a->n_ons; i++) {
		if (strcmp(a->ons[i].terminal, terminal) == 0)
			return a->ons[i].ms;
	}
	return dflt;
}

/* Columns of REMOTE_SQL. */
enum { RC_TOKEN, RC_OWN, RC_TERMINAL, RC_TIME, RC_EVENT, RC_ACCEPTED, RC_OPERATOR, RC_ROUTE,
       RC_STOP, RC_PRODUCT, RC_ENT, RC_RIDES, RC_AMOUNT, RC_KIND };

/* Every card's fare decisions of the last 32 days, at every terminal, in one pass grouped by
 * card and in time order (records_recent gives the window; the sort is SQLite's). Refusals
 * count (a card refused elsewhere has left a journey open here); "already" answers decide
 * nothing and are left out, so a double tap does not hide the tap-on it repeats. Records
 * stored before the event column existed and not filled from their payload read as "tap". */
#define REMOTE_SQL                                                                        \
	"SELECT r.token, r.terminal = ?1, r.terminal, r.time_ms, coalesce(r.event, 'tap'),"   \
	" r.result = 'accepted', r.operator, r.route, r.stop, r.product, coalesce(r.ent_id, 0),"\
	" r.rides, r.amount, p.product_kind"                                                  \
	" FROM records r LEFT JOIN products p ON p.id = r.product"                            \
	" WHERE r.token IS NOT NULL AND r.time_ms >= ?2 AND r.kind = 'tap'"                  \
	" AND r.result <> 'already'"
#define REMOTE_ORDER " ORDER BY r.token, r.time_ms, r.terminal, r.seq"

static void remote_fold(struct remote_acc *a, kp_db_stmt *st, int64_t day_now,
                        int64_t month_now, int64_t day_shift_s, int *nomem)
{
	const char *event = kp_db_column_text(st, RC_EVENT);
	const char *kind = kp_db_column_text(st, RC_KIND);
	const char *terminal = kp_db_column_text(st, RC_TERMINAL);
	int64_t t = kp_db_column_int64(st, RC_TIME), amount = kp_db_column_int64(st, RC_AMOUNT);
	int accepted = (int)kp_db_column_int64(st, RC_ACCEPTED);
	int tap_on = strcmp(event, "tap_on") == 0, tap_off = strcmp(event, "tap_off") == 0;
	char op[KP_ID_MAX + 1], stop[KP_ID_MAX + 1];
	struct kp_bundle_remote *r = &a->r;

	text_col(st, RC_OPERATOR, op, sizeof(op));
	text_col(st, RC_STOP, stop, sizeof(stop));
	if ((int)kp_db_column_int64(st, RC_OWN)) {
		if (accepted && tap_on) {
			a->own_on = 1;
			a->own_closed = 0;
			a->own_on_ms = t;
			snprintf(a->own_on_op, sizeof(a->own_on_op), "%s", op);
			snprintf(a->own_on_stop, sizeof(a->own_on_stop), "%s", stop);
		}
		return;
	}
	a->others = 1;
	r->last_ms = t;
	/* the latest record there decides whether a journey is open there */
	r->open = accepted && tap_on && t > 0 && bs_plain_id(op);
	if (r->open) {
		int64_t rides = kp_db_column_int64(st, RC_RIDES);

		r->open_ms = t;
		snprintf(r->open_operator, sizeof(r->open_operator), "%s", op);
		text_col(st, RC_ROUTE, r->open_route, sizeof(r->open_route));
		snprintf(r->open_stop, sizeof(r->open_stop), "%s", stop);
		text_col(st, RC_PRODUCT, r->open_product, sizeof(r->open_product));
		r->open_ent = kp_db_column_int64(st, RC_ENT);
		if (r->open_ent < 0)
			r->open_ent = 0;
		r->open_paid = rides > 0 || (kind != NULL && strcmp(kind, "period") == 0);
		if (remote_on_set(a, terminal, t) != KP_BE_OK)
			*nomem = 1;
	}
	if (!accepted)
		return;
	/* a journey of the receiving terminal that this terminal closed and charged */
	if (a->own_on && t > a->own_on_ms && strcmp(op, a->own_on_op) == 0 &&
	    (tap_off || (strcmp(event, "no_tap_off") == 0 && strcmp(stop, a->own_on_stop) == 0)))
		a->own_closed = 1;
	if (amount <= 0)
		return;
	if (amount > REMOTE_SPENT_MAX)
		amount = REMOTE_SPENT_MAX;
	if ((tap_off || strcmp(event, "tap") == 0) && kind != NULL && strcmp(kind, "stored") == 0 &&
	    bs_plain_id(op)) {
		r->has_leg = 1;
		snprintf(r->leg_operator, sizeof(r->leg_operator), "%s", op);
		r->leg_off_ms = t;
		r->leg_on_ms = tap_off ? remote_on_get(a, terminal, t) : t;
		r->leg_paid = amount;
	}
	{
		int64_t day = kp_floor_div(kp_floor_div(t, 1000) + day_shift_s, 86400);

		if (day == day_now)
			r->day_spent = r->day_spent + amount > REMOTE_SPENT_MAX ? REMOTE_SPENT_MAX :
			               r->day_spent + amount;
		if (month_of_day(day) == month_now)
			r->month_spent = r->month_spent + amount > REMOTE_SPENT_MAX ? REMOTE_SPENT_MAX :
			                 r->month_spent + amount;
	}
}

/* The card's row, if it has records at other terminals. */
static int remote_emit(struct remote_acc *a, struct kp_bundle *b, size_t *cap)
{
	if (!a->others)
		return KP_BE_OK;
	if (b->n_remote == *cap) {
		size_t n = *cap ? *cap * 2 : 256;
		void *p = realloc(b->remote, n * sizeof(*b->remote));

		if (p == NULL)
			return KP_BE_E_NOMEM;
		b->remote = p;
		*cap = n;
	}
	if (a->own_on && a->own_closed)
		a->r.closed_ms = a->own_on_ms;
	b->remote[b->n_remote++] = a->r;
	return KP_BE_OK;
}

/* For a bundle made for `terminal` at now_ms: one row per card with records at other
 * terminals in the last 32 days, from those records only (closed_ms aside, which names the
 * receiving terminal's own tap-on), spending by the backend's service-day setting. only:
 * that card's row alone (a delta), appended to b->remote (whose room is b->n_remote). */
int bs_fill_remote(kp_bstore *s, const char *terminal, int64_t now_ms, struct kp_bundle *b,
                   const uint8_t *only)
{
	struct remote_acc a;
	kp_db_stmt *st = NULL;
	uint8_t token[KP_TOKEN_LEN];
	int64_t end_s = 14400, offset_s = 32400, day_now, month_now;
	size_t cap = b->n_remote;
	int have = 0, nomem = 0, step = KP_DB_DONE, rc;

	memset(&a, 0, sizeof(a));
	rc = bs_meta_int(s, "service_day_end_s", 14400, &end_s);
	if (rc == KP_BE_OK)
		rc = bs_meta_int(s, "utc_offset_s", 32400, &offset_s);
	if (rc == KP_BE_OK)
		rc = bs_prep(s, &st, only != NULL ? REMOTE_SQL " AND r.token = ?3" REMOTE_ORDER :
		             REMOTE_SQL REMOTE_ORDER);
	if (rc != KP_BE_OK)
		return rc;
	day_now = kp_floor_div(kp_floor_div(now_ms, 1000) + offset_s - end_s, 86400);
	month_now = month_of_day(day_now);
	kp_db_bind_text(st, 1, terminal, SIZE_MAX);
	kp_db_bind_int64(st, 2, now_ms - REMOTE_WINDOW_MS);
	if (only != NULL)
		kp_db_bind_blob(st, 3, only, KP_TOKEN_LEN);
	while (rc == KP_BE_OK && !nomem && (step = kp_db_step(st)) == KP_DB_ROW) {
		if (kp_db_column_bytes(st, RC_TOKEN) != KP_TOKEN_LEN)
			continue;
		if (!have || memcmp(token, kp_db_column_blob(st, RC_TOKEN), KP_TOKEN_LEN) != 0) {
			if (have)
				rc = remote_emit(&a, b, &cap);
			memcpy(token, kp_db_column_blob(st, RC_TOKEN), KP_TOKEN_LEN);
			have = 1;
			{
				struct remote_on *ons = a.ons;
				size_t cap_ons = a.cap_ons;

				memset(&a, 0, sizeof(a));
				a.ons = ons;
				a.cap_ons = cap_ons;
			}
			memcpy(a.r.token, token, KP_TOKEN_LEN);
			a.r.day_id = day_now;
			a.r.month_id = month_now;
		}
		remote_fold(&a, st, day_now, month_now, offset_s - end_s, &nomem);
	}
	if (rc == KP_BE_OK && nomem)
		rc = KP_BE_E_NOMEM;
	if (rc == KP_BE_OK && step != KP_DB_DONE)
		rc = bs_fail(s, "fare state across terminals");
	if (rc == KP_BE_OK && have)
		rc = remote_emit(&a, b, &cap);
	kp_db_finalize(st);
	free(a.ons);
	return rc;
}

/* The current row of st as the field tables' values (pointing into st's row). */
void bs_row_values(kp_db_stmt *st, size_t n_cols, struct kp_fare_value *vals)
{
	for (size_t c = 0; c < n_cols; c++) {
		int type = kp_db_column_type(st, (int)c);

		memset(&vals[c], 0, sizeof(vals[c]));
		vals[c].is_null = type == KP_DB_NULL;
		if (type == KP_DB_INTEGER) {
			vals[c].i = kp_db_column_int64(st, (int)c);
		} else if (type != KP_DB_NULL) {
			vals[c].s = kp_db_column_blob(st, (int)c);
			vals[c].n = (size_t)kp_db_column_bytes(st, (int)c);
		}
	}
}

/* Rows of an array through its field table: count_sql counts them, sql (its columns in
 * the table's row order; both may bind ?1 = bind) reads them in canonical order. */
static int fill_rows(kp_bstore *s, struct kp_bundle *b, enum kp_bundle_array_id id,
                     const char *count_sql, const char *sql, int64_t bind)
{
	const struct kp_bundle_array *a = kp_bundle_array(id);
	void **arr = (void **)((uint8_t *)b + a->arr_offset);
	size_t *n = (size_t *)((uint8_t *)b + a->count_offset);
	struct kp_fare_value vals[KP_BUNDLE_ROW_MAX];
	const char *cols[KP_BUNDLE_ROW_MAX];
	size_t n_cols = kp_bundle_row_columns(id, cols, NULL);
	char built[1024], counted[256];
	kp_db_stmt *st = NULL;
	int64_t count;
	int rc;

	if (sql == NULL) {
		if (kp_bundle_row_sql(id, 0, built, sizeof(built)) != KP_SYNC_OK)
			return KP_BE_E_INVAL;
		sql = built;
		snprintf(counted, sizeof(counted), "SELECT count(*) FROM %s", a->table);
		count_sql = counted;
	}
	rc = bs_prep(s, &st, count_sql);
	if (rc != KP_BE_OK)
		return rc;
	kp_db_bind_int64(st, 1, bind);
	count = kp_db_step(st) == KP_DB_ROW ? kp_db_column_int64(st, 0) : 0;
	kp_db_finalize(st);
	*arr = calloc((size_t)count + 1, a->elem_size);
	if (*arr == NULL)
		return KP_BE_E_NOMEM;
	rc = bs_prep(s, &st, sql);
	if (rc != KP_BE_OK)
		return rc;
	kp_db_bind_int64(st, 1, bind);
	while (rc == KP_BE_OK && *n < (size_t)count && kp_db_step(st) == KP_DB_ROW) {
		bs_row_values(st, n_cols, vals);
		if (kp_bundle_row_set(id, (uint8_t *)*arr + (*n)++ * a->elem_size, vals) != KP_SYNC_OK)
			rc = KP_BE_E_NOMEM;
	}
	kp_db_finalize(st);
	return rc;
}

/* A row whose text the bundle cannot carry (put there by hand: every entry point checks
 * the same rule) is left out, and only that row: one bad name must not keep the denylist
 * from every terminal. The first is noted for the log. */
static bool left_out(kp_bstore *s, const char *table, const char *row, const char *field,
                     const char *text)
{
	char why[200];

	if (kp_bundle_text_check(field, (const char *)text, why, sizeof(why)) == KP_SYNC_OK)
		return false;
	if (s->n_left_out++ == 0)
		snprintf(s->left_out, sizeof(s->left_out), "%s row %s: %s", table, row, why);
	return true;
}

/* An id the bundle cannot carry (longer than KP_ID_MAX bytes, not UTF-8, a control
 * character: put into the database by hand) leaves its row out, as left_out does, instead of
 * being cut short into another id or failing the whole bundle. */
static bool left_out_id(kp_bstore *s, const char *table, const char *id,
                        const char *field, bool may_be_empty)
{
	const char *t = id != NULL ? (const char *)id : "";
	char shown[KP_ID_MAX + 8];

	bool control = false;

	for (const char *c = t; *c != '\0'; c++)
		control |= (unsigned char)*c < 0x20 || *c == 0x7F;
	if (!control && strlen(t) <= KP_ID_MAX && kp_cbor_id_valid(t, may_be_empty))
		return false;
	kp_cbor_text_printable(shown, sizeof(shown), t, strlen(t));
	if (s->n_left_out++ == 0)
		snprintf(s->left_out, sizeof(s->left_out), "%s row %s%s: %s: not an id the bundle "
		         "can carry (1 to %d bytes of UTF-8, no control characters)", table, shown,
		         strlen(t) > KP_ID_MAX ? "..." : "", field, KP_ID_MAX);
	return true;
}

static int cmp_operator_id(const void *key, const void *elem)
{
	return strcmp(key, ((const struct kp_bundle_operator *)elem)->id);
}

static int cmp_product_id(const void *key, const void *elem)
{
	return strcmp(key, ((const struct kp_bundle_product *)elem)->id);
}

/* Operators and products are read in id order (BINARY collation = strcmp order). */
static bool has_operator(const struct kp_bundle *b, const char *id)
{
	return bsearch(id, b->operators, b->n_operators, sizeof(*b->operators),
	               cmp_operator_id) != NULL;
}

static bool has_product(const struct kp_bundle *b, const char *id)
{
	return bsearch(id, b->products, b->n_products, sizeof(*b->products),
	               cmp_product_id) != NULL;
}

/* After rows were left out: what names them goes too, so the rest still encodes. */
#define DROP_ORPHANS(arr, n, keep)                                              \
	do {                                                                    \
		size_t kept_ = 0;                                               \
		for (size_t i_ = 0; i_ < (n); i_++) {                           \
			if (keep(&(arr)[i_]))                                   \
				(arr)[kept_++] = (arr)[i_];                     \
			else                                                    \
				s->n_left_out++;                                \
		}                                                               \
		(n) = kept_;                                                    \
	} while (0)

static void drop_orphans(kp_bstore *s, struct kp_bundle *b)
{
#define ENT_KEEP(e)   has_product(b, (e)->product)
#define SCOPE_KEEP(c) has_product(b, (c)->product)
#define DISC_KEEP(d)  has_operator(b, (d)->operator_id)
#define OFARE_KEEP(f) has_operator(b, (f)->operator_id)
	DROP_ORPHANS(b->entitlements, b->n_entitlements, ENT_KEEP);
	DROP_ORPHANS(b->scopes, b->n_scopes, SCOPE_KEEP);
	DROP_ORPHANS(b->discounts, b->n_discounts, DISC_KEEP);
	DROP_ORPHANS(b->operator_fares, b->n_operator_fares, OFARE_KEEP);
#undef ENT_KEEP
#undef SCOPE_KEEP
#undef DISC_KEEP
#undef OFARE_KEEP
}

/* Operators, products and the denylist: a row whose text the bundle cannot carry is left
 * out (left_out), and what names it with it. */
static int fill_catalogue(kp_bstore *s, struct kp_bundle *b)
{
	kp_db_stmt *st = NULL;
	char skipped[KP_ID_MAX + 1] = "";
	int64_t count;
	int rc;

#define COUNT_INTO(sql, var)                                                      \
	do {                                                                      \
		rc = bs_prep(s, &st, sql);                                           \
		if (rc != KP_BE_OK)                                               \
			return rc;                                                \
		count = kp_db_step(st) == KP_DB_ROW ? kp_db_column_int64(st, 0) : 0; \
		kp_db_finalize(st);                                             \
		var = calloc((size_t)count + 1, sizeof(*var));                    \
		if (var == NULL)                                                  \
			return KP_BE_E_NOMEM;                                     \
	} while (0)

	COUNT_INTO("SELECT count(*) FROM operators", b->operators);
	rc = bs_prep(s, &st, "SELECT id, name FROM operators ORDER BY id");
	if (rc != KP_BE_OK)
		return rc;
	while (kp_db_step(st) == KP_DB_ROW && b->n_operators < (size_t)count) {
		struct kp_bundle_operator *o = &b->operators[b->n_operators];

		if (left_out_id(s, "operators", kp_db_column_text(st, 0), "id", false))
			continue;
		bs_copy_text(o->id, sizeof(o->id), kp_db_column_text(st, 0));
		if (left_out(s, "operators", o->id, "name", kp_db_column_text(st, 1)))
			continue;
		bs_copy_text(o->name, sizeof(o->name), kp_db_column_text(st, 1));
		b->n_operators++;
	}
	kp_db_finalize(st);

	COUNT_INTO("SELECT count(*) FROM products", b->products);
	rc = bs_prep(s, &st, "SELECT p.id, p.name, p.rides, po.operator_id, p.category,"
	                  " p.product_kind, coalesce(p.days, 0), coalesce(p.route, '') FROM products p"
	                  " LEFT JOIN product_operators po ON po.product_id = p.id"
	                  " ORDER BY p.id, po.operator_id");
	if (rc != KP_BE_OK)
		return rc;
	while (kp_db_step(st) == KP_DB_ROW) {
		const char *id = kp_db_column_text(st, 0);
		struct kp_bundle_product *p = b->n_products > 0 ? &b->products[b->n_products - 1] : NULL;

		if (skipped[0] != '\0' && strcmp(skipped, id) == 0)
			continue;
		if (p == NULL || strcmp(p->id, id) != 0) {
			if (b->n_products == (size_t)count)
				break;
			if (left_out_id(s, "products", (const char *)id, "id", false) ||
			    left_out_id(s, "products", kp_db_column_text(st, 4), "category", true) ||
			    left_out(s, "products", id, "name", kp_db_column_text(st, 1))) {
				bs_copy_text(skipped, sizeof(skipped), (const char *)id);
				continue;
			}
			p = &b->products[b->n_products++];
			bs_copy_text(p->id, sizeof(p->id), kp_db_column_text(st, 0));
			bs_copy_text(p->name, sizeof(p->name), kp_db_column_text(st, 1));
			p->rides = kp_db_column_int64(st, 2);
			bs_copy_text(p->category, sizeof(p->category), kp_db_column_text(st, 4));
			p->kind = kind_of(kp_db_column_text(st, 5));
			p->days = (int)kp_db_column_int64(st, 6);
			bs_copy_text(p->route, sizeof(p->route), kp_db_column_text(st, 7));
		}
		/* an operator left out takes its products' rows on it along */
		if (p->n_operators < 16 && kp_db_column_type(st, 3) != KP_DB_NULL &&
		    has_operator(b, kp_db_column_text(st, 3)))
			bs_copy_text(p->operators[p->n_operators++], KP_ID_MAX + 1, kp_db_column_text(st, 3));
	}
	kp_db_finalize(st);
	st = NULL;
	for (size_t i = 0; i < b->n_products; i++) {
		if (b->products[i].kind == KP_PRODUCT_COMMUTER) {
			rc = fill_stops(s, &b->products[i]);
			if (rc != KP_BE_OK)
				return rc;
		}
	}

	COUNT_INTO("SELECT count(*)" DENYLIST_SQL, b->denylist);
	rc = bs_prep(s, &st, "SELECT token, reason, added" DENYLIST_SQL " ORDER BY token");
	if (rc != KP_BE_OK)
		return rc;
	while (kp_db_step(st) == KP_DB_ROW && b->n_denylist < (size_t)count) {
		struct kp_bundle_deny *d = &b->denylist[b->n_denylist];
		char row[40];

		const char *reason = kp_db_column_text(st, 1);

		/* named by when it was added: a card's token stays out of the log. A reason the
		 * bundle cannot carry never frees a denied card: the card goes with a stand-in. */
		snprintf(row, sizeof(row), "added %lld (card kept denied)",
		         (long long)kp_db_column_int64(st, 2));
		if (left_out(s, "denylist", row, "reason", reason))
			reason = (const char *)"(reason unreadable: see the backend)";
		b->n_denylist++;
		if (kp_db_column_bytes(st, 0) == KP_TOKEN_LEN)
			memcpy(d->token, kp_db_column_blob(st, 0), KP_TOKEN_LEN);
		bs_copy_text(d->reason, sizeof(d->reason), reason);
	}
	kp_db_finalize(st);
#undef COUNT_INTO
	return KP_BE_OK;
}

/* What the field tables read as they are: entitlements, eligibility, the fare engine's
 * configuration and the feeds. */
static int fill_tables(kp_bstore *s, int64_t now_ms, struct kp_bundle *b)
{
	static const enum kp_bundle_array_id plain[] = {
		KP_BA_DISCOUNTS, KP_BA_CAPS, KP_BA_TRANSFERS, KP_BA_OPERATOR_FARES, KP_BA_FEEDS,
	};
	int rc = fill_rows(s, b, KP_BA_ENTITLEMENTS, "SELECT count(*) FROM entitlements",
	                   ENTITLEMENT_COLS " ORDER BY token, id", 0);

	if (rc == KP_BE_OK)
		rc = fill_rows(s, b, KP_BA_ELIGIBILITY,
		               "SELECT count(*) FROM (SELECT 1" ELIGIBILITY_SQL ") AS n",
		               ELIGIBILITY_COLS ELIGIBILITY_SQL " ORDER BY token, category", now_ms);
	for (size_t i = 0; rc == KP_BE_OK && i < sizeof(plain) / sizeof(plain[0]); i++)
		rc = fill_rows(s, b, plain[i], NULL, NULL, 0);
	return rc;
}

static int fill_bundle(kp_bstore *s, const char *terminal, const uint8_t *journal, int64_t now_ms,
                       struct kp_bundle *b)
{
	int64_t acked = 0;
	int rc = fill_catalogue(s, b);

	if (rc == KP_BE_OK)
		rc = fill_tables(s, now_ms, b);
	if (rc != KP_BE_OK)
		return rc;

	{
		int64_t fmt2 = 0;

		rc = bs_meta_int(s, "format2", 0, &fmt2);
		if (rc != KP_BE_OK)
			return rc;
		b->format = fmt2 ? 2 : 0;
	}
	/* Cards' state across terminals is the fare engine's: a backend that sells N-ride
	 * tickets only keeps sending format 1, byte for byte. */
	rc = fill_rows(s, b, KP_BA_SCOPES, NULL, NULL, 0);
	if (rc == KP_BE_OK)
		rc = kp_bstore_get_policy(s, &b->policy);
	if (rc == KP_BE_OK && b->format == 2)
		rc = bs_fill_remote(s, terminal, now_ms, b, NULL);
	if (rc != KP_BE_OK)
		return rc;
	if (s->n_left_out > 0)
		drop_orphans(s, b);
	rc = bs_query_int(s, 0, &acked, "SELECT acked FROM journals WHERE terminal = ?1"
	                  " AND journal = ?2", BS_TEXT(terminal), BS_JOURNAL(journal));
	if (rc != KP_BE_OK)
		return rc;
	b->acked = (uint64_t)acked;
	snprintf(b->terminal, sizeof(b->terminal), "%s", terminal);
	return KP_BE_OK;
}

static int bundle_for(kp_bstore *s, const char *terminal, const uint8_t *journal,
                      uint64_t have_version, int64_t now_ms, struct kp_bundle *b, int *has)
{
	int rc;

	memset(b, 0, sizeof(*b));
	*has = 0;
	s->n_left_out = 0;
	s->left_out[0] = '\0';
	rc = bs_bundle_refresh(s, now_ms);
	if (rc != KP_BE_OK)
		return rc;
	/* One read transaction: the snapshot and its version agree. */
	rc = bs_begin(s, KP_DB_TXN_SNAPSHOT);
	if (rc != KP_BE_OK)
		return rc;
	rc = kp_bstore_state_version(s, &b->version);
	if (rc == KP_BE_OK && b->version > have_version) {
		b->issued_ms = now_ms;
		rc = fill_bundle(s, terminal, journal, now_ms, b);
		*has = rc == KP_BE_OK;
	}
	bs_rollback(s);
	if (rc != KP_BE_OK || !*has)
		kp_bundle_free(b);
	return rc;
}

int kp_bstore_bundle(kp_bstore *s, const char *terminal, uint64_t have_version, int64_t now_ms,
                     struct kp_bundle *b, int *has)
{
	return bundle_for(s, terminal, bs_legacy_journal, have_version, now_ms, b, has);
}

int kp_bstore_bundle_session(kp_bstore *s, const struct kp_bsession *ses,
                             uint64_t have_version, int64_t now_ms, struct kp_bundle *b,
                             int *has)
{
	return bundle_for(s, ses->terminal, ses->journal, have_version, now_ms, b, has);
}

const char *kp_bstore_bundle_left_out(const kp_bstore *s, size_t *n)
{
	*n = s->n_left_out;
	return s->left_out;
}
