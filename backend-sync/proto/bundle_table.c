/* SPDX-License-Identifier: Apache-2.0 */
/* The bundle's arrays as tables (kp_bundle.h): each field's CBOR key, member, limits and SQL
 * column, in wire order. bundle.c encodes and decodes every array from these; the backend
 * fills them from its database and the terminal writes them into its own through
 * kp_bundle_row_*. A new field is a row here. */
#include "kp_bundle.h"
#include "bundle_fields.h"

#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define SPENT_MAX 1000000000000000LL     /* 10^15 minor units */
#define MONEY_MAX 1000000000000LL        /* 10^12 */

#define M(ty, member) offsetof(ty, member), sizeof(((ty *)0)->member)
#define ID(k, ty, member, col)   { .key = k, .type = KP_BF_ID, M(ty, member), .column = col }
#define TEXT(k, ty, member, col) { .key = k, .type = KP_BF_TEXT, M(ty, member), .column = col }
#define BYTES(k, ty, member, col) { .key = k, .type = KP_BF_BYTES, M(ty, member), .column = col }
#define UINT(k, ty, member, lo, hi, col) \
	{ .key = k, .type = KP_BF_UINT, M(ty, member), .min = lo, .max = hi, .column = col }
#define ENUM(k, ty, member, nm, col) \
	{ .key = k, .type = KP_BF_ENUM, M(ty, member), .names = nm, \
	  .n_names = sizeof(nm) / sizeof(nm[0]), .column = col }

static const char *const ROUNDING_NAMES[] = { "down", "up", "nearest" };
static const char *const PERIOD_NAMES[] = { "day", "month" };
static const char *const MODE_NAMES[] = { "flat", "distance" };
static const char *const SCOPE_KINDS[] = { "route", "network" };

#define T struct kp_bundle_operator
static const struct kp_bundle_field OPERATOR[] = {
	ID("id", T, id, "id"),
	TEXT("name", T, name, "name"),
};
#undef T
#define T struct kp_bundle_deny
static const struct kp_bundle_field DENY[] = {
	BYTES("token", T, token, "token"),
	TEXT("reason", T, reason, "reason"),
};
#undef T
#define T struct kp_bundle_entitlement
static const struct kp_bundle_field ENTITLEMENT[] = {
	UINT("id", T, id, 1, INT64_MAX, "id"),
	UINT("from", T, valid_from_ms, 0, INT64_MAX, "valid_from"),
	BYTES("token", T, token, "token"),
	UINT("until", T, valid_until_ms, 0, INT64_MAX, "valid_until"),
	ID("product", T, product, "product_id"),
	{ .key = "first_use", .type = KP_BF_FLAG, M(T, first_use), .when = KP_BW_SET, .format = 2,
	  .column = "first_use" },
	UINT("remaining", T, remaining, 0, INT64_MAX, "rides_left"),
};
#undef T
#define T struct kp_bundle_eligibility
static const struct kp_bundle_field ELIGIBILITY[] = {
	{ .key = "via", .type = KP_BF_BYTES, M(T, via), .when = KP_BW_FLAG,
	  .flag = offsetof(T, has_via), .sql = KP_BF_SQL_NULL, .column = "via" },
	UINT("from", T, valid_from_ms, 0, INT64_MAX, "valid_from"),
	BYTES("token", T, token, "token"),
	UINT("until", T, valid_until_ms, 0, INT64_MAX, "valid_until"),
	ID("category", T, category, "category"),
};
#undef T
#define T struct kp_bundle_discount
static const struct kp_bundle_field DISCOUNT[] = {
	UINT("unit", T, unit, 1, 100000, "unit"),
	UINT("percent", T, percent, 0, 100, "percent"),
	ID("category", T, category, "category"),
	ID("operator", T, operator_id, "operator_id"),
	ENUM("rounding", T, rounding, ROUNDING_NAMES, "rounding"),
};
#undef T
#define T struct kp_bundle_cap
static const struct kp_bundle_field CAP[] = {
	UINT("amount", T, amount, 0, MONEY_MAX, "amount"),
	ENUM("period", T, period, PERIOD_NAMES, "period"),
	{ .key = "category", .type = KP_BF_ID, M(T, category), .when = KP_BW_SET,
	  .column = "category" },     /* riders without a category: no key, never "" */
};
#undef T
#define T struct kp_bundle_transfer
static const struct kp_bundle_field TRANSFER[] = {
	{ .key = "to", .type = KP_BF_ID_ANY, M(T, to_operator), .column = "to_operator" },
	UINT("max", T, max_transfers, 1, 100, "max_transfers"),
	{ .key = "off", .type = KP_BF_INT, M(T, off), .min = -1, .max = MONEY_MAX, .column = "off" },
	{ .key = "from", .type = KP_BF_ID_ANY, M(T, from_operator), .column = "from_operator" },
	UINT("within", T, within_s, 60, 86400, "within_s"),
};
#undef T
#define T struct kp_bundle_operator_fare
static const struct kp_bundle_field OPERATOR_FARE[] = {
	ID("feed", T, feed_id, "feed_id"),
	ENUM("mode", T, distance, MODE_NAMES, "distance"),
	ID("operator", T, operator_id, "operator_id"),
};
#undef T
#define T struct kp_bundle_feed
static const struct kp_bundle_field FEED[] = {
	ID("id", T, id, "feed_id"),
	BYTES("digest", T, digest, "digest"),
	{ .key = "package", .type = KP_BF_BLOB, M(T, package), .aux = offsetof(T, package_len),
	  .column = "package" },
};
#undef T
#define T struct kp_bundle_scope
static const struct kp_bundle_field SCOPE[] = {
	ID("id", T, scope_id, "scope_id"),
	{ .key = "kind", .type = KP_BF_ENUM, M(T, network), .names = SCOPE_KINDS, .n_names = 2,
	  .sql = KP_BF_SQL_NAME, .column = "kind" },
	ID("product", T, product, "product_id"),
};
#undef T
#define T struct kp_bundle_remote
static const struct kp_bundle_field REMOTE_LEG[] = {
	UINT("on", T, leg_on_ms, 0, INT64_MAX, "leg_on_ms"),
	UINT("off", T, leg_off_ms, 0, INT64_MAX, "leg_off_ms"),
	UINT("amount", T, leg_paid, 1, SPENT_MAX, "leg_paid"),
	ID("operator", T, leg_operator, "leg_operator"),
};
#define OPT_ID(k, member) { .key = k, .type = KP_BF_ID, M(T, member), .when = KP_BW_SET, \
                            .sql = KP_BF_SQL_NULL, .column = #member }
static const struct kp_bundle_field REMOTE_OPEN[] = {
	UINT("at", T, open_ms, 1, INT64_MAX, "open_ms"),
	{ .key = "ent", .type = KP_BF_UINT, M(T, open_ent), .when = KP_BW_SET, .min = 1,
	  .max = INT64_MAX, .column = "open_ent" },
	{ .key = "paid", .type = KP_BF_FLAG, M(T, open_paid), .when = KP_BW_SET,
	  .column = "open_paid" },
	OPT_ID("stop", open_stop),
	OPT_ID("route", open_route),
	OPT_ID("product", open_product),
	ID("operator", T, open_operator, "open_operator"),
};
#undef OPT_ID
#define PAIR(k, a, b) { .key = k, .type = KP_BF_PAIR, M(T, a), .aux = offsetof(T, b), \
                        .when = KP_BW_SET, .min = 1, .max = SPENT_MAX, .column = #a, .column2 = #b }
#define SUBMAP(k, fl, s) { .key = k, .type = KP_BF_MAP, .when = KP_BW_FLAG, \
                           .flag = offsetof(T, fl), .sub = s, .n_sub = sizeof(s) / sizeof(s[0]) }
static const struct kp_bundle_field REMOTE[] = {
	PAIR("day", day_id, day_spent),
	SUBMAP("leg", has_leg, REMOTE_LEG),
	UINT("last", T, last_ms, 0, INT64_MAX, "last_ms"),
	SUBMAP("open", open, REMOTE_OPEN),
	PAIR("month", month_id, month_spent),
	BYTES("token", T, token, "token"),
	{ .key = "closed", .type = KP_BF_UINT, M(T, closed_ms), .when = KP_BW_SET, .min = 1,
	  .max = INT64_MAX, .sql = KP_BF_SQL_NULL, .column = "closed_ms" },
};
#undef SUBMAP
#undef PAIR
#undef T

#define ARRAY(k, ty, arr, cnt, mx, f, tbl, ord)                                          \
	{ k, sizeof(ty), mx, offsetof(struct kp_bundle, arr), offsetof(struct kp_bundle, cnt), \
	  f, sizeof(f) / sizeof(f[0]), tbl, ord }
static const struct kp_bundle_array ARRAYS[KP_BA_COUNT] = {
	[KP_BA_CAPS] = ARRAY("caps", struct kp_bundle_cap, caps, n_caps, KP_BUNDLE_CAPS_MAX, CAP,
	                     "fare_caps", "category, period"),
	[KP_BA_FEEDS] = ARRAY("feeds", struct kp_bundle_feed, feeds, n_feeds, KP_BUNDLE_FEEDS_MAX,
	                      FEED, "fare_packages", "feed_id"),
	[KP_BA_REMOTE] = ARRAY("remote", struct kp_bundle_remote, remote, n_remote,
	                       KP_BUNDLE_REMOTE_MAX, REMOTE, "fare_remote", "token"),
	[KP_BA_SCOPES] = ARRAY("scopes", struct kp_bundle_scope, scopes, n_scopes,
	                       KP_BUNDLE_SCOPES_MAX, SCOPE, "product_scope",
	                       "product_id, kind, scope_id"),
	[KP_BA_DENYLIST] = ARRAY("denylist", struct kp_bundle_deny, denylist, n_denylist,
	                         KP_BUNDLE_DENYLIST_MAX, DENY, "denylist", "token"),
	[KP_BA_PRODUCTS] = { "products", sizeof(struct kp_bundle_product), KP_BUNDLE_PRODUCTS_MAX,
	                     offsetof(struct kp_bundle, products),
	                     offsetof(struct kp_bundle, n_products), NULL, 0, "products", "id" },
	[KP_BA_DISCOUNTS] = ARRAY("discounts", struct kp_bundle_discount, discounts, n_discounts,
	                          KP_BUNDLE_DISCOUNTS_MAX, DISCOUNT, "discounts",
	                          "operator_id, category"),
	[KP_BA_OPERATORS] = ARRAY("operators", struct kp_bundle_operator, operators, n_operators,
	                          KP_BUNDLE_OPERATORS_MAX, OPERATOR, "operators", "id"),
	[KP_BA_TRANSFERS] = ARRAY("transfers", struct kp_bundle_transfer, transfers, n_transfers,
	                          KP_BUNDLE_TRANSFERS_MAX, TRANSFER, "transfer_rules",
	                          "from_operator, to_operator"),
	[KP_BA_ELIGIBILITY] = ARRAY("eligibility", struct kp_bundle_eligibility, eligibility,
	                            n_eligibility, KP_BUNDLE_ELIGIBILITY_MAX, ELIGIBILITY,
	                            "eligibility", "token, category"),
	[KP_BA_ENTITLEMENTS] = ARRAY("entitlements", struct kp_bundle_entitlement, entitlements,
	                             n_entitlements, KP_BUNDLE_ENTITLEMENTS_MAX, ENTITLEMENT,
	                             "entitlements", "token, id"),
	[KP_BA_OPERATOR_FARES] = ARRAY("operator_fares", struct kp_bundle_operator_fare,
	                               operator_fares, n_operator_fares,
	                               KP_BUNDLE_OPERATOR_FARES_MAX, OPERATOR_FARE,
	                               "operator_fares", "operator_id"),
};
#undef ARRAY

const struct kp_bundle_array *kp_bundle_array(enum kp_bundle_array_id id)
{
	return (unsigned)id < KP_BA_COUNT ? &ARRAYS[id] : NULL;
}

/* ---- SQL rows ---- */

int64_t kp_bundle_field_int(const void *el, size_t off, size_t size)
{
	const uint8_t *p = (const uint8_t *)el + off;

	return size == sizeof(int) ? *(const int *)p : *(const int64_t *)p;
}

void kp_bundle_field_put_int(void *el, size_t off, size_t size, int64_t v)
{
	uint8_t *p = (uint8_t *)el + off;

	if (size == sizeof(int))
		*(int *)p = (int)v;
	else
		*(int64_t *)p = v;
}

/* One callback per column: the field, and for a pair which half (0, 1). */
typedef void (*column_fn)(const struct kp_bundle_field *f, int half, int in_map, void *arg);

static void walk_columns(const struct kp_bundle_field *f, size_t n, int in_map, column_fn fn,
                         void *arg)
{
	for (size_t i = 0; i < n; i++) {
		if (f[i].type == KP_BF_MAP) {
			walk_columns(f[i].sub, f[i].n_sub, 1, fn, arg);
			continue;
		}
		fn(&f[i], 0, in_map, arg);
		if (f[i].type == KP_BF_PAIR)
			fn(&f[i], 1, in_map, arg);
	}
}

struct cols_arg { const char **cols; int *blob; size_t n; };

static void column_name(const struct kp_bundle_field *f, int half, int in_map, void *arg)
{
	struct cols_arg *a = arg;

	(void)in_map;
	if (a->n < KP_BUNDLE_ROW_MAX) {
		a->cols[a->n] = half ? f->column2 : f->column;
		if (a->blob != NULL)
			a->blob[a->n] = f->type == KP_BF_BYTES || f->type == KP_BF_BLOB;
	}
	a->n++;
}

size_t kp_bundle_row_columns(enum kp_bundle_array_id id, const char **cols, int *blob)
{
	const struct kp_bundle_array *a = kp_bundle_array(id);
	struct cols_arg c = { cols, blob, 0 };

	if (a != NULL)
		walk_columns(a->fields, a->n_fields, 0, column_name, &c);
	return c.n;
}

/* Written on the wire? (the element's own view: a map's fields are judged by its flag) */
int kp_bundle_field_on(const struct kp_bundle_field *f, const void *el)
{
	const uint8_t *p = (const uint8_t *)el + f->offset;

	switch (f->when) {
	case KP_BW_ALWAYS:
		return 1;
	case KP_BW_FLAG:
		return kp_bundle_field_int(el, f->flag, sizeof(int)) != 0;
	case KP_BW_SET:
		break;
	}
	if (f->type == KP_BF_ID || f->type == KP_BF_ID_ANY || f->type == KP_BF_TEXT)
		return p[0] != '\0';
	if (f->type == KP_BF_PAIR)
		return kp_bundle_field_int(el, f->aux, sizeof(int64_t)) != 0;
	return kp_bundle_field_int(el, f->offset, f->size) != 0;
}

/* The column walk for a row: where it is, the element and the maps that are absent. */
struct row_arg {
	void *el;
	struct kp_fare_value *vals;
	const struct kp_fare_value *in;
	size_t i;
	int map_absent, rc;
};

static void value_get(const struct kp_bundle_field *f, int half, int in_map, void *arg)
{
	struct row_arg *a = arg;
	struct kp_fare_value *v = &a->vals[a->i++];
	const uint8_t *p = (const uint8_t *)a->el + f->offset;

	memset(v, 0, sizeof(*v));
	/* a pair not set is 0, 0; an int inside a map that is there keeps its value */
	if ((in_map && a->map_absent) ||
	    (f->type != KP_BF_PAIR && !kp_bundle_field_on(f, a->el) && (f->sql & KP_BF_SQL_NULL))) {
		v->is_null = 1;
		return;
	}
	switch (f->type) {
	case KP_BF_ID: case KP_BF_ID_ANY: case KP_BF_TEXT:
		v->s = (const char *)p;
		v->n = strlen(v->s);
		break;
	case KP_BF_BYTES:
		v->s = (const char *)p;
		v->n = f->size;
		break;
	case KP_BF_BLOB:
		v->s = *(const char *const *)p;
		v->n = *(const size_t *)((const uint8_t *)a->el + f->aux);
		break;
	case KP_BF_ENUM:
		if (f->sql & KP_BF_SQL_NAME) {
			int64_t k = kp_bundle_field_int(a->el, f->offset, f->size);

			v->s = f->names[k > 0 && (size_t)k < f->n_names ? k : 0];
			v->n = strlen(v->s);
			break;
		}
		v->i = kp_bundle_field_int(a->el, f->offset, f->size);
		break;
	case KP_BF_FLAG:
		v->i = kp_bundle_field_int(a->el, f->offset, f->size) != 0;
		break;
	case KP_BF_PAIR:
		if (kp_bundle_field_on(f, a->el))
			v->i = half ? kp_bundle_field_int(a->el, f->aux, sizeof(int64_t)) :
			              kp_bundle_field_int(a->el, f->offset, sizeof(int64_t));
		break;
	default:
		v->i = kp_bundle_field_int(a->el, f->offset, f->size);
		break;
	}
}

static void walk_row(const struct kp_bundle_array *a, struct row_arg *r, column_fn fn)
{
	for (size_t i = 0; i < a->n_fields; i++) {
		const struct kp_bundle_field *f = &a->fields[i];

		if (f->type != KP_BF_MAP) {
			walk_columns(f, 1, 0, fn, r);
			continue;
		}
		r->map_absent = fn == value_get && !kp_bundle_field_on(f, r->el);
		/* set: the map is there when its first column is not NULL */
		if (fn != value_get && !r->in[r->i].is_null)
			kp_bundle_field_put_int(r->el, f->flag, sizeof(int), 1);
		walk_columns(f->sub, f->n_sub, 1, fn, r);
		r->map_absent = 0;
	}
}

void kp_bundle_row_get(enum kp_bundle_array_id id, const void *el, struct kp_fare_value *vals)
{
	struct row_arg r = { (void *)el, vals, NULL, 0, 0, 0 };

	walk_row(kp_bundle_array(id), &r, value_get);
}

/* Copies n bytes of s as a NUL-terminated text into dst[cap], cut on a UTF-8 character
 * boundary. */
static void copy_text(char *dst, size_t cap, const char *s, size_t n)
{
	if (n >= cap) {
		n = cap - 1;
		while (n > 0 && ((unsigned char)s[n] & 0xC0) == 0x80)
			n--;
	}
	memcpy(dst, s, n);
	dst[n] = '\0';
}

static void value_set(const struct kp_bundle_field *f, int half, int in_map, void *arg)
{
	struct row_arg *a = arg;
	const struct kp_fare_value *v = &a->in[a->i++];
	uint8_t *p = (uint8_t *)a->el + f->offset;

	(void)in_map;
	if (v->is_null || a->rc != KP_SYNC_OK)
		return;
	switch (f->type) {
	case KP_BF_ID: case KP_BF_ID_ANY: case KP_BF_TEXT:
		copy_text((char *)p, f->size, v->s != NULL ? v->s : "", v->s != NULL ? v->n : 0);
		break;
	case KP_BF_BYTES:
		if (v->n == f->size) {
			memcpy(p, v->s, f->size);
			if (f->when == KP_BW_FLAG)
				kp_bundle_field_put_int(a->el, f->flag, sizeof(int), 1);
		}
		break;
	case KP_BF_BLOB:
		*(uint8_t **)p = malloc(v->n > 0 ? v->n : 1);
		if (*(uint8_t **)p == NULL) {
			a->rc = KP_SYNC_E_NOMEM;
			break;
		}
		if (v->n > 0)
			memcpy(*(uint8_t **)p, v->s, v->n);
		*(size_t *)((uint8_t *)a->el + f->aux) = v->n;
		break;
	case KP_BF_ENUM:
		if (f->sql & KP_BF_SQL_NAME) {
			for (size_t k = 0; v->s != NULL && k < f->n_names; k++) {
				if (strlen(f->names[k]) == v->n && memcmp(f->names[k], v->s, v->n) == 0)
					kp_bundle_field_put_int(a->el, f->offset, f->size, (int64_t)k);
			}
			break;
		}
		kp_bundle_field_put_int(a->el, f->offset, f->size, v->i);
		break;
	case KP_BF_PAIR:
		kp_bundle_field_put_int(a->el, half ? f->aux : f->offset, sizeof(int64_t), v->i);
		break;
	default:
		kp_bundle_field_put_int(a->el, f->offset, f->size, v->i);
		break;
	}
}

int kp_bundle_row_set(enum kp_bundle_array_id id, void *el, const struct kp_fare_value *vals)
{
	struct row_arg r = { el, NULL, vals, 0, 0, KP_SYNC_OK };

	walk_row(kp_bundle_array(id), &r, value_set);
	return r.rc;
}

int kp_bundle_row_sql(enum kp_bundle_array_id id, int insert, char *sql, size_t cap)
{
	const struct kp_bundle_array *a = kp_bundle_array(id);
	const char *cols[KP_BUNDLE_ROW_MAX];
	size_t n = a != NULL ? kp_bundle_row_columns(id, cols, NULL) : 0, used;
	int w;

	if (a == NULL || a->table == NULL || n > KP_BUNDLE_ROW_MAX)
		return KP_SYNC_E_INVAL;
	w = snprintf(sql, cap, insert ? "INSERT OR REPLACE INTO %s(" : "SELECT ", a->table);
	for (size_t i = 0; w >= 0 && (size_t)w < cap && i < n; i++)
		w += snprintf(sql + w, cap - (size_t)w, "%s%s", i > 0 ? ", " : "", cols[i]);
	used = w >= 0 ? (size_t)w : cap;
	if (used < cap && insert) {
		used += (size_t)snprintf(sql + used, cap - used, ") VALUES (?1");
		for (size_t i = 1; used < cap && i < n; i++)
			used += (size_t)snprintf(sql + used, cap - used, ", ?%zu", i + 1);
		if (used < cap)
			used += (size_t)snprintf(sql + used, cap - used, ")");
	} else if (used < cap) {
		used += (size_t)snprintf(sql + used, cap - used, " FROM %s ORDER BY %s", a->table,
		                         a->order);
	}
	return used < cap ? KP_SYNC_OK : KP_SYNC_E_INVAL;
}
