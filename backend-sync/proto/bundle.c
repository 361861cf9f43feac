/* SPDX-License-Identifier: Apache-2.0 */
/* kippu config bundle: a full snapshot of what a terminal needs, as one canonical CBOR map
 * with text keys, signed by the backend as COSE_Sign1 (kid "backend"). PROTOCOL.md
 * describes the format.
 *
 * Arrays travel in one canonical order (operators and products by id, entitlements by
 * (token, id), denylist by token, eligibility by (token, category)), so one snapshot has one
 * encoding. The encoder accepts any order and sorts pointers, not copies; the decoder accepts
 * only the canonical order and grows its arrays with what it has read, never with what a
 * header claims. Optional parts (a product's category, the eligibility array) are left out
 * when empty, never sent empty, so bundles of the first layout still decode and still have
 * one encoding.
 *
 * Format 2 adds product kinds (stored value, period and commuter passes), first-use passes,
 * the fare engine's configuration (discounts, caps, transfer rules, operator fares) and GTFS
 * fare feeds as packages (farepkg.c). It is written only when a bundle holds one of these,
 * so an N-ride-only snapshot is still format 1, byte for byte, and terminals that read only
 * format 1 refuse a format 2 bundle with KP_SYNC_E_VERSION.
 *
 * Format 3 adds the cards' fare state at the other terminals ("remote", terminal/fare/FARES.md
 * "Across terminals") and product scopes ("scopes"); it too is written only when a bundle
 * holds one of them, since a format 2 decoder refuses unknown keys.
 *
 * Format 4 adds the scheme's My Number policy ("policy": direct taps and their limits, the
 * maximum age of eligibility data), written only when it is not the default policy. */
#include "kp_bundle.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "kp_cbor.h"
#include "bundle_fields.h"

#define BUNDLE_KEYS   9         /* required top-level keys, "v" included */

/* Lower bounds of one element's encoding (every key, the shortest values): a claimed count
 * above remaining bytes / this cannot be true and is refused before anything is allocated. */
#define MIN_OPERATOR    12      /* {"id": 1 char, "name": ""} */
#define MIN_PRODUCT     30
#define MIN_ENTITLEMENT 62
#define MIN_DENY        32
#define MIN_ELIGIBILITY 48      /* {"from": 0, "token": 16 bytes, "until": 0, "category": 1 char} */
#define MIN_DISCOUNT    44      /* {"unit": 1, "percent": 0, "category": 1 char, "operator": 1 char,
                                 *  "rounding": "up"} */
#define MIN_CAP         19      /* {"amount": 0, "period": "day"} */
#define MIN_TRANSFER    30      /* {"to": "*", "max": 1, "off": -1, "from": "*", "within": 60} */
#define MIN_OPERATOR_FARE 31    /* {"feed": 1 char, "mode": "flat", "operator": 1 char} */
#define MIN_FEED        54      /* {"id": 1 char, "digest": 32 bytes, "package": 1 byte} */
#define MIN_REMOTE      30      /* {"last": 0, "token": 16 bytes} */
#define MIN_SCOPE       27      /* {"id": 1 char, "kind": "route", "product": 1 char} */
#define SPENT_MAX       1000000000000000LL      /* 10^15 minor units */

/* ---- the canonical order ---- */

static int ent_cmp(const void *pa, const void *pb)
{
	const struct kp_bundle_entitlement *a = pa, *b = pb;

	int c = memcmp(a->token, b->token, KP_TOKEN_LEN);

	if (c != 0)
		return c;
	return (a->id > b->id) - (a->id < b->id);
}

static int deny_cmp(const void *pa, const void *pb)
{
	const struct kp_bundle_deny *a = pa, *b = pb;

	return memcmp(a->token, b->token, KP_TOKEN_LEN);
}

static int elig_cmp(const void *pa, const void *pb)
{
	const struct kp_bundle_eligibility *a = pa, *b = pb;

	int c = memcmp(a->token, b->token, KP_TOKEN_LEN);

	return c != 0 ? c : strcmp(a->category, b->category);
}

/* Ids compare bytewise (strcmp), as SQLite's ORDER BY does with the BINARY collation. */
static int op_cmp(const void *a, const void *b)
{
	const struct kp_bundle_operator *x = a, *y = b;

	return strcmp(x->id, y->id);
}

static int prod_cmp(const void *a, const void *b)
{
	const struct kp_bundle_product *x = a, *y = b;

	return strcmp(x->id, y->id);
}

static int qs_str(const void *a, const void *b)
{
	return strcmp(*(const char *const *)a, *(const char *const *)b);
}

/* Pointers to the n elements of arr (of size elem) in canonical order, or NULL when out of
 * memory (n == 0 gives a valid empty allocation). Sorting is skipped for sorted input. */
typedef int (*elem_cmp)(const void *a, const void *b);

/* qsort_r adapter: compares the elements two pointers point at. */
static int ptr_cmp(const void *a, const void *b, void *cmp)
{
	return (*(const elem_cmp *)cmp)(*(const void *const *)a, *(const void *const *)b);
}

static const void **sorted_ptrs(const void *arr, size_t n, size_t elem, elem_cmp cmp)
{
	const void **p = malloc((n > 0 ? n : 1) * sizeof(*p));
	bool sorted = true;
	size_t i;

	if (p == NULL)
		return NULL;
	for (i = 0; i < n; i++) {
		p[i] = (const uint8_t *)arr + i * elem;
		if (i > 0 && sorted && cmp(p[i - 1], p[i]) > 0)
			sorted = false;
	}
	if (!sorted)
		qsort_r(p, n, sizeof(*p), ptr_cmp, &cmp);
	return p;
}

/* Strictly increasing: sorted and no two equal. */
static bool strictly_increasing(const void **p, size_t n, elem_cmp cmp)
{
	for (size_t i = 1; i < n; i++) {
		if (cmp(p[i - 1], p[i]) >= 0)
			return false;
	}
	return true;
}

/* bsearch comparators: an id against an element pointer (encoder) or an element (decoder). */
static int key_op_ptr(const void *key, const void *el)
{
	return strcmp(key, (*(struct kp_bundle_operator *const *)el)->id);
}

static int key_prod_ptr(const void *key, const void *el)
{
	return strcmp(key, (*(struct kp_bundle_product *const *)el)->id);
}

static int key_op(const void *key, const void *el)
{
	return strcmp(key, ((const struct kp_bundle_operator *)el)->id);
}

static int key_prod(const void *key, const void *el)
{
	return strcmp(key, ((const struct kp_bundle_product *)el)->id);
}

/* ---- format 2 parts: comparators and names ---- */

static const char *const KIND_NAMES[] = { "nride", "stored", "period", "commuter" };

static int disc_cmp(const void *pa, const void *pb)
{
	const struct kp_bundle_discount *a = pa, *b = pb;

	int c = strcmp(a->operator_id, b->operator_id);

	return c != 0 ? c : strcmp(a->category, b->category);
}

static int cap_cmp(const void *pa, const void *pb)
{
	const struct kp_bundle_cap *a = pa, *b = pb;

	int c = strcmp(a->category, b->category);

	return c != 0 ? c : (a->period > b->period) - (a->period < b->period);
}

static int xfer_cmp(const void *pa, const void *pb)
{
	const struct kp_bundle_transfer *a = pa, *b = pb;

	int c = strcmp(a->from_operator, b->from_operator);

	return c != 0 ? c : strcmp(a->to_operator, b->to_operator);
}

static int ofare_cmp(const void *pa, const void *pb)
{
	const struct kp_bundle_operator_fare *a = pa, *b = pb;

	return strcmp(a->operator_id, b->operator_id);
}

static int feed_cmp(const void *pa, const void *pb)
{
	const struct kp_bundle_feed *a = pa, *b = pb;

	return strcmp(a->id, b->id);
}

static int remote_cmp(const void *pa, const void *pb)
{
	const struct kp_bundle_remote *a = pa, *b = pb;

	return memcmp(a->token, b->token, KP_TOKEN_LEN);
}

static const char *const SCOPE_KINDS[] = { "route", "network" };

/* by product, then kind name ("network" before "route"), then id */
static int scope_cmp(const void *pa, const void *pb)
{
	const struct kp_bundle_scope *a = pa, *b = pb;

	int c = strcmp(a->product, b->product);

	if (c == 0)
		c = strcmp(SCOPE_KINDS[a->network != 0], SCOPE_KINDS[b->network != 0]);
	return c != 0 ? c : strcmp(a->scope_id, b->scope_id);
}

/* Format 2 is written only when a bundle uses something format 1 cannot say, so a backend
 * that sells N-ride tickets only still serves terminals that know format 1. */
static bool needs_format2(const struct kp_bundle *b)
{
	size_t i;

	if (b->n_discounts > 0 || b->n_caps > 0 || b->n_transfers > 0 ||
	    b->n_operator_fares > 0 || b->n_feeds > 0)
		return true;
	for (i = 0; i < b->n_products; i++) {
		if (b->products[i].kind != KP_PRODUCT_NRIDE)
			return true;
	}
	for (i = 0; i < b->n_entitlements; i++) {
		if (b->entitlements[i].first_use)
			return true;
	}
	return false;
}

/* The default policy (no direct taps, the default maximum age) is said by leaving the key
 * out, so that it has one encoding. */
static bool policy_default(const struct kp_bundle_policy *p)
{
	return !p->direct && (p->max_age_s == 0 || p->max_age_s == KP_POLICY_MAX_AGE_DEFAULT);
}

/* Ids sorted, unique, valid; direct taps name at least one product or category; limits
 * and age in range. What is not direct must be empty. */
static bool id_list_valid(const char (*ids)[KP_ID_MAX + 1], size_t n)
{
	if (n > KP_POLICY_LIST_MAX)
		return false;
	for (size_t i = 0; i < n; i++) {
		if (!kp_cbor_id_valid(ids[i], false) || (i > 0 && strcmp(ids[i - 1], ids[i]) >= 0))
			return false;
	}
	return true;
}

static bool policy_valid(const struct kp_bundle_policy *p)
{
	if (p->max_age_s != 0 &&
	    (p->max_age_s < KP_POLICY_MAX_AGE_MIN || p->max_age_s > KP_POLICY_MAX_AGE_MAX))
		return false;
	if (p->direct != 0 && p->direct != 1)
		return false;
	if (!p->direct)
		return p->direct_rides == 0 && p->direct_value == 0 && p->n_products == 0 &&
		       p->n_categories == 0;
	return p->direct_rides >= 0 && p->direct_rides <= KP_POLICY_RIDES_MAX &&
	       p->direct_value >= 0 && p->direct_value <= KP_POLICY_VALUE_MAX &&
	       p->n_products + p->n_categories > 0 &&
	       id_list_valid((const char (*)[KP_ID_MAX + 1])p->products, p->n_products) &&
	       id_list_valid((const char (*)[KP_ID_MAX + 1])p->categories, p->n_categories);
}

/* The lowest format that can say what b holds, and at least b->format. */
static int format_needed(const struct kp_bundle *b)
{
	int fmt = b->format > 1 ? b->format : 1;

	if (!policy_default(&b->policy))
		return 4;
	if (b->n_remote > 0 || b->n_scopes > 0)
		return fmt > 3 ? fmt : 3;
	if (fmt < 2 && needs_format2(b))
		fmt = 2;
	return fmt;
}

static bool op_or_any(const char *s)
{
	return strcmp(s, "*") == 0 || kp_cbor_id_valid(s, false);
}

static bool stops_valid(const char (*stops)[KP_ID_MAX + 1], size_t n)
{
	if (stops == NULL || n < 2 || n > KP_BUNDLE_PRODUCT_STOPS_MAX)
		return false;
	for (size_t j = 0; j < n; j++) {
		if (!kp_cbor_id_valid(stops[j], false))
			return false;
		for (size_t k = 0; k < j; k++) {
			if (strcmp(stops[j], stops[k]) == 0)
				return false;
		}
	}
	return true;
}

/* ---- text ---- */

static void set_err(char *err, size_t err_cap, const char *fmt, ...)
	__attribute__((format(printf, 3, 4)));

int kp_bundle_text_check(const char *field, const char *s, char *err, size_t err_cap)
{
	size_t n = s != NULL ? strlen(s) : 0;
	const char *why = NULL;

	if (s == NULL)
		why = "missing";
	else if (!kp_cbor_utf8_valid((const uint8_t *)s, n))
		why = "not valid UTF-8 (Shift_JIS or another encoding?)";
	else if (n > KP_BUNDLE_TEXT_MAX)
		why = "too long";
	for (size_t i = 0; why == NULL && i < n; i++) {
		unsigned char c = (unsigned char)s[i];

		/* C1 controls are U+0080..U+009F: C2 80..C2 9F in UTF-8 */
		if (c < 0x20 || c == 0x7F || (c == 0xC2 && (unsigned char)s[i + 1] < 0xA0))
			why = "control character";
	}
	if (why == NULL)
		return KP_SYNC_OK;
	set_err(err, err_cap, "%s: %s (%zu bytes; at most %d bytes of UTF-8, no control characters)",
	        field, why, n, KP_BUNDLE_TEXT_MAX);
	return KP_SYNC_E_INVAL;
}

static bool text_ok(const char *s)
{
	return kp_bundle_text_check("", s, NULL, 0) == KP_SYNC_OK;
}

/* The decoder holds a name or a reason to the encoder's rule: what decodes re-encodes. */
static int read_bundle_text(struct kp_cbor_reader *r, char dst[KP_BUNDLE_TEXT_MAX + 1])
{
	int rc = kp_cbor_read_text(r, dst, KP_BUNDLE_TEXT_MAX + 1, true);

	return rc == KP_RECORD_OK && !text_ok(dst) ? KP_RECORD_E_MALFORMED : rc;
}

/* ---- encoding ---- */

static int product_check(const struct kp_bundle_product *p, bool fmt2)
{
	if (!kp_cbor_id_valid(p->id, false) || !text_ok(p->name) ||
	    !kp_cbor_id_valid(p->category, true) || p->n_operators > KP_BUNDLE_PRODUCT_OPS_MAX)
		return KP_SYNC_E_INVAL;
	for (size_t j = 0; j < p->n_operators; j++) {
		if (!kp_cbor_id_valid(p->operators[j], false))
			return KP_SYNC_E_INVAL;
	}
	switch (p->kind) {
	case KP_PRODUCT_NRIDE:
		/* format 1 carried any integer; format 2 only a real count */
		if (fmt2 && (p->rides < 1 || p->rides > INT32_MAX))
			return KP_SYNC_E_INVAL;
		return KP_SYNC_OK;
	case KP_PRODUCT_STORED:
		return KP_SYNC_OK;
	case KP_PRODUCT_PERIOD:
		return p->days >= 1 && p->days <= 366 ? KP_SYNC_OK : KP_SYNC_E_INVAL;
	case KP_PRODUCT_COMMUTER:
		return op_or_any(p->route) && stops_valid((const void *)p->stops, p->n_stops) ?
		       KP_SYNC_OK : KP_SYNC_E_INVAL;
	}
	return KP_SYNC_E_INVAL;
}

/* What a remote row may hold (encoder and decoder alike); the parts that are absent are
 * not looked at. */
static bool remote_valid(const struct kp_bundle_remote *r)
{
	if (r->last_ms < 0 || r->closed_ms < 0 || (r->open != 0 && r->open != 1) ||
	    (r->has_leg != 0 && r->has_leg != 1) || r->day_spent < 0 || r->day_spent > SPENT_MAX ||
	    r->month_spent < 0 || r->month_spent > SPENT_MAX ||
	    (r->day_spent > 0 && r->day_id < 0) ||
	    (r->month_spent > 0 && (r->month_id < 197001 || r->month_id > 999912 ||
	                            r->month_id % 100 < 1 || r->month_id % 100 > 12)))
		return false;
	if (r->open && (r->open_ms <= 0 || !kp_cbor_id_valid(r->open_operator, false) ||
	                !kp_cbor_id_valid(r->open_route, true) ||
	                !kp_cbor_id_valid(r->open_stop, true) ||
	                !kp_cbor_id_valid(r->open_product, true) || r->open_ent < 0 ||
	                (r->open_paid != 0 && r->open_paid != 1)))
		return false;
	if (r->has_leg && (!kp_cbor_id_valid(r->leg_operator, false) || r->leg_on_ms < 0 ||
	                   r->leg_off_ms < r->leg_on_ms || r->leg_paid <= 0 ||
	                   r->leg_paid > SPENT_MAX))
		return false;
	return true;
}

/* Where the decoder says why it refused (kp_bundle_open_err shows it). */
struct derr {
	char *buf;
	size_t cap;
};

static int dfail(struct derr *e, int rc, const char *fmt, ...)
	__attribute__((format(printf, 3, 4)));

static int dfail(struct derr *e, int rc, const char *fmt, ...)
{
	va_list ap;

	if (e != NULL && e->buf != NULL && e->cap > 0 && e->buf[0] == '\0') {
		va_start(ap, fmt);
		vsnprintf(e->buf, e->cap, fmt, ap);
		va_end(ap);
	}
	return rc;
}

static bool entitlement_valid(const void *el)
{
	const struct kp_bundle_entitlement *e = el;

	return e->valid_until_ms >= e->valid_from_ms;
}

static bool eligibility_valid(const void *el)
{
	const struct kp_bundle_eligibility *e = el;

	return e->valid_until_ms >= e->valid_from_ms;
}

static bool remote_valid_v(const void *el)
{
	return remote_valid(el);
}

/* A feed: its package is checked table by table and against its digest. The decoder's
 * err gets why through feed_err. */
static _Thread_local struct derr *feed_err;
static _Thread_local bool feed_toobig;

static bool feed_valid(const void *el)
{
	const struct kp_bundle_feed *f = el;
	uint8_t digest[KP_SHA256_LEN];
	char why[256];
	int rc;

	if (f->package == NULL || f->package_len == 0)
		return false;
	rc = kp_fare_pkg_walk(f->package, f->package_len, -1, NULL, NULL, NULL, why, sizeof(why));
	if (rc != KP_SYNC_OK) {
		dfail(feed_err, rc, "feed %s: %s", f->id, why);
		feed_toobig = rc == KP_SYNC_E_TOOBIG;
		return false;
	}
	if (kp_sha256(f->package, f->package_len, digest) != 0 ||
	    memcmp(digest, f->digest, KP_SHA256_LEN) != 0) {
		dfail(feed_err, KP_SYNC_E_MALFORMED, "feed %s: digest does not match its package",
		      f->id);
		return false;
	}
	return true;
}

/* What the field tables do not say, per array: its canonical order, the least one element
 * takes encoded (a claimed count above what the input can hold is refused before anything
 * is allocated), and a rule across fields, for the encoder and the decoder alike. */
struct array_ops {
	int (*cmp)(const void *a, const void *b);
	size_t min_size;
	bool (*valid)(const void *el);
};
static const struct array_ops OPS[KP_BA_COUNT] = {
	[KP_BA_CAPS] = { cap_cmp, MIN_CAP, NULL },
	[KP_BA_FEEDS] = { feed_cmp, MIN_FEED, feed_valid },
	[KP_BA_REMOTE] = { remote_cmp, MIN_REMOTE, remote_valid_v },
	[KP_BA_SCOPES] = { scope_cmp, MIN_SCOPE, NULL },
	[KP_BA_DENYLIST] = { deny_cmp, MIN_DENY, NULL },
	[KP_BA_PRODUCTS] = { prod_cmp, MIN_PRODUCT, NULL },
	[KP_BA_DISCOUNTS] = { disc_cmp, MIN_DISCOUNT, NULL },
	[KP_BA_OPERATORS] = { op_cmp, MIN_OPERATOR, NULL },
	[KP_BA_TRANSFERS] = { xfer_cmp, MIN_TRANSFER, NULL },
	[KP_BA_ELIGIBILITY] = { elig_cmp, MIN_ELIGIBILITY, eligibility_valid },
	[KP_BA_ENTITLEMENTS] = { ent_cmp, MIN_ENTITLEMENT, entitlement_valid },
	[KP_BA_OPERATOR_FARES] = { ofare_cmp, MIN_OPERATOR_FARE, NULL },
};

/* The array id's elements and their count in b. */
static void *array_of(const struct kp_bundle *b, enum kp_bundle_array_id id, size_t *n)
{
	const struct kp_bundle_array *a = kp_bundle_array(id);

	*n = *(const size_t *)((const uint8_t *)b + a->count_offset);
	return *(void *const *)((const uint8_t *)b + a->arr_offset);
}

static bool fields_valid(const struct kp_bundle_field *f, size_t n, const void *el);

/* A field the encoder is given: its limits (one that is not written is not looked at). */
static bool field_valid(const struct kp_bundle_field *f, const void *el)
{
	const char *s = (const char *)el + f->offset;
	int64_t v = f->type == KP_BF_PAIR ? kp_bundle_field_int(el, f->aux, sizeof(int64_t)) :
	            f->size == sizeof(int) || f->size == sizeof(int64_t) ?
	            kp_bundle_field_int(el, f->offset, f->size) : 0;

	switch (f->type) {
	case KP_BF_ID:    return kp_cbor_id_valid(s, false);
	case KP_BF_ID_ANY: return op_or_any(s);
	case KP_BF_TEXT:  return text_ok(s);
	case KP_BF_BYTES: return true;
	case KP_BF_BLOB:  return true;      /* the array's own rule looks at it */
	case KP_BF_ENUM:  return v >= 0 && (uint64_t)v < f->n_names;
	case KP_BF_FLAG:  return v == 1;
	case KP_BF_MAP:   return fields_valid(f->sub, f->n_sub, el);
	case KP_BF_PAIR:
		if (kp_bundle_field_int(el, f->offset, sizeof(int64_t)) < 0)
			return false;
		break;
	default:
		break;
	}
	return v >= f->min && v <= f->max;
}

static bool fields_valid(const struct kp_bundle_field *f, size_t n, const void *el)
{
	for (size_t i = 0; i < n; i++) {
		if (kp_bundle_field_on(&f[i], el) && !field_valid(&f[i], el))
			return false;
	}
	return true;
}

static int elements_check(const struct kp_bundle *b, bool fmt2)
{
	for (int id = 0; id < KP_BA_COUNT; id++) {
		const struct kp_bundle_array *a = kp_bundle_array(id);
		size_t n;
		const uint8_t *arr = array_of(b, id, &n);

		for (size_t i = 0; i < n; i++) {
			const void *el = arr + i * a->elem_size;

			if (id == KP_BA_PRODUCTS ? product_check(el, fmt2) != KP_SYNC_OK :
			    !fields_valid(a->fields, a->n_fields, el) ||
			    (OPS[id].valid != NULL && !OPS[id].valid(el)))
				return KP_SYNC_E_INVAL;
		}
	}
	return KP_SYNC_OK;
}

static int bundle_check(const struct kp_bundle *b, bool fmt2)
{
	size_t n;
	int id;

	if (b->version < 1 || b->issued_ms < 0 || !kp_cbor_id_valid(b->terminal, false))
		return KP_SYNC_E_INVAL;
	for (id = 0; id < KP_BA_COUNT; id++) {
		array_of(b, id, &n);
		if (n > kp_bundle_array(id)->max)
			return KP_SYNC_E_TOOBIG;
	}
	for (id = 0; id < KP_BA_COUNT; id++) {
		if (array_of(b, id, &n) == NULL && n > 0)
			return KP_SYNC_E_INVAL;
	}
	if (b->format < 0 || b->format > KP_BUNDLE_FORMAT || !policy_valid(&b->policy))
		return KP_SYNC_E_INVAL;
	return elements_check(b, fmt2);
}
/* A product's operators, sorted, unique, each one of the bundle's operators. Format 2
 * keys: id, days, kind, name, rides, route, stops, category, operators (canonical order). */
static int product_write(struct kp_cbor_writer *w, const struct kp_bundle_product *p,
                         struct kp_bundle_operator *const *ops, size_t n_ops, bool fmt2)
{
	const char *ids[KP_BUNDLE_PRODUCT_OPS_MAX];
	bool nride = p->kind == KP_PRODUCT_NRIDE, period = p->kind == KP_PRODUCT_PERIOD,
	     commuter = p->kind == KP_PRODUCT_COMMUTER;
	size_t j;

	for (j = 0; j < p->n_operators; j++)
		ids[j] = p->operators[j];
	qsort(ids, p->n_operators, sizeof(ids[0]), qs_str);
	for (j = 0; j < p->n_operators; j++) {
		if ((j > 0 && strcmp(ids[j - 1], ids[j]) == 0) ||
		    bsearch(ids[j], ops, n_ops, sizeof(*ops), key_op_ptr) == NULL)
			return KP_SYNC_E_INVAL;
	}
	if (!fmt2) {
		kp_cbor_put_map(w, p->category[0] != '\0' ? 5 : 4);
		kp_cbor_put_tstr(w, "id");
		kp_cbor_put_tstr(w, p->id);
		kp_cbor_put_tstr(w, "name");
		kp_cbor_put_tstr(w, p->name);
		kp_cbor_put_tstr(w, "rides");
		kp_cbor_put_int(w, p->rides);
	} else {
		kp_cbor_put_map(w, 4 + nride + period + 2 * commuter + (p->category[0] != '\0'));
		kp_cbor_put_tstr(w, "id");
		kp_cbor_put_tstr(w, p->id);
		if (period) {
			kp_cbor_put_tstr(w, "days");
			kp_cbor_put_uint(w, (uint64_t)p->days);
		}
		kp_cbor_put_tstr(w, "kind");
		kp_cbor_put_tstr(w, KIND_NAMES[p->kind]);
		kp_cbor_put_tstr(w, "name");
		kp_cbor_put_tstr(w, p->name);
		if (nride) {
			kp_cbor_put_tstr(w, "rides");
			kp_cbor_put_uint(w, (uint64_t)p->rides);
		}
		if (commuter) {
			kp_cbor_put_tstr(w, "route");
			kp_cbor_put_tstr(w, p->route);
			kp_cbor_put_tstr(w, "stops");
			kp_cbor_put_array(w, p->n_stops);
			for (j = 0; j < p->n_stops; j++)
				kp_cbor_put_tstr(w, p->stops[j]);
		}
	}
	if (p->category[0] != '\0') {
		kp_cbor_put_tstr(w, "category");
		kp_cbor_put_tstr(w, p->category);
	}
	kp_cbor_put_tstr(w, "operators");
	kp_cbor_put_array(w, p->n_operators);
	for (j = 0; j < p->n_operators; j++)
		kp_cbor_put_tstr(w, ids[j]);
	return KP_SYNC_OK;
}

static void fields_write(struct kp_cbor_writer *w, const struct kp_bundle_field *f, size_t n,
                         const void *el);

static void field_write(struct kp_cbor_writer *w, const struct kp_bundle_field *f,
                        const void *el)
{
	const uint8_t *p = (const uint8_t *)el + f->offset;

	switch (f->type) {
	case KP_BF_ID: case KP_BF_ID_ANY: case KP_BF_TEXT:
		kp_cbor_put_tstr(w, (const char *)p);
		break;
	case KP_BF_BYTES:
		kp_cbor_put_bstr(w, p, f->size);
		break;
	case KP_BF_BLOB:
		kp_cbor_put_bstr(w, *(uint8_t *const *)p,
		                 *(const size_t *)((const uint8_t *)el + f->aux));
		break;
	case KP_BF_ENUM:
		kp_cbor_put_tstr(w, f->names[kp_bundle_field_int(el, f->offset, f->size)]);
		break;
	case KP_BF_FLAG:
		kp_cbor_put_uint(w, 1);
		break;
	case KP_BF_PAIR:
		kp_cbor_put_array(w, 2);
		kp_cbor_put_uint(w, (uint64_t)kp_bundle_field_int(el, f->offset, sizeof(int64_t)));
		kp_cbor_put_uint(w, (uint64_t)kp_bundle_field_int(el, f->aux, sizeof(int64_t)));
		break;
	case KP_BF_MAP:
		fields_write(w, f->sub, f->n_sub, el);
		break;
	case KP_BF_INT:
		kp_cbor_put_int(w, kp_bundle_field_int(el, f->offset, f->size));
		break;
	case KP_BF_UINT:
		kp_cbor_put_uint(w, (uint64_t)kp_bundle_field_int(el, f->offset, f->size));
		break;
	}
}

/* One element as a map of the fields it has, in the table's (wire) order. */
static void fields_write(struct kp_cbor_writer *w, const struct kp_bundle_field *f, size_t n,
                         const void *el)
{
	size_t i, keys = 0;

	for (i = 0; i < n; i++)
		keys += kp_bundle_field_on(&f[i], el) != 0;
	kp_cbor_put_map(w, keys);
	for (i = 0; i < n; i++) {
		if (kp_bundle_field_on(&f[i], el)) {
			kp_cbor_put_tstr(w, f[i].key);
			field_write(w, &f[i], el);
		}
	}
}

/* The pointers of every array in canonical order (the caller's arrays are not touched). */
struct sorted {
	const void **p[KP_BA_COUNT];
};

static void sorted_free(struct sorted *s)
{
	for (int id = 0; id < KP_BA_COUNT; id++)
		free(s->p[id]);
}

static int sorted_make(const struct kp_bundle *b, struct sorted *s)
{
	size_t n;
	int id;

	memset(s, 0, sizeof(*s));
	for (id = 0; id < KP_BA_COUNT; id++) {
		const void *arr = array_of(b, id, &n);

		s->p[id] = sorted_ptrs(arr, n, kp_bundle_array(id)->elem_size, OPS[id].cmp);
		if (s->p[id] == NULL)
			return KP_SYNC_E_NOMEM;
	}
	/* the same id, token or key twice */
	for (id = 0; id < KP_BA_COUNT; id++) {
		array_of(b, id, &n);
		if (!strictly_increasing(s->p[id], n, OPS[id].cmp))
			return KP_SYNC_E_INVAL;
	}
	return KP_SYNC_OK;
}
static void write_ids(struct kp_cbor_writer *w, const char *key,
                      const char (*ids)[KP_ID_MAX + 1], size_t n)
{
	kp_cbor_put_tstr(w, key);
	kp_cbor_put_array(w, n);
	for (size_t i = 0; i < n; i++)
		kp_cbor_put_tstr(w, ids[i]);
}

/* {"direct"?: {"rides"?, "value"?, "products"?, "categories"?}, "max_age"} */
static void write_policy(struct kp_cbor_writer *w, const struct kp_bundle_policy *p)
{
	kp_cbor_put_tstr(w, "policy");
	kp_cbor_put_map(w, 1 + (p->direct != 0));
	if (p->direct) {
		kp_cbor_put_tstr(w, "direct");
		kp_cbor_put_map(w, (p->direct_rides > 0) + (p->direct_value > 0) +
		                (p->n_products > 0) + (p->n_categories > 0));
		if (p->direct_rides > 0) {
			kp_cbor_put_tstr(w, "rides");
			kp_cbor_put_uint(w, (uint64_t)p->direct_rides);
		}
		if (p->direct_value > 0) {
			kp_cbor_put_tstr(w, "value");
			kp_cbor_put_uint(w, (uint64_t)p->direct_value);
		}
		if (p->n_products > 0)
			write_ids(w, "products", (const char (*)[KP_ID_MAX + 1])p->products,
			          p->n_products);
		if (p->n_categories > 0)
			write_ids(w, "categories", (const char (*)[KP_ID_MAX + 1])p->categories,
			          p->n_categories);
	}
	kp_cbor_put_tstr(w, "max_age");
	kp_cbor_put_uint(w, (uint64_t)(p->max_age_s != 0 ? p->max_age_s : KP_POLICY_MAX_AGE_DEFAULT));
}

/* Operators named by discounts and operator fares are in the bundle; entitlements' products
 * too, and a first-use entitlement is of a period pass. */
static bool refs_valid_sorted(const struct kp_bundle *b, const struct sorted *s)
{
	struct kp_bundle_operator *const *ops = (void *)s->p[KP_BA_OPERATORS];
	struct kp_bundle_product *const *prods = (void *)s->p[KP_BA_PRODUCTS];
	struct kp_bundle_discount *const *disc = (void *)s->p[KP_BA_DISCOUNTS];
	struct kp_bundle_operator_fare *const *ofares = (void *)s->p[KP_BA_OPERATOR_FARES];
	struct kp_bundle_entitlement *const *ents = (void *)s->p[KP_BA_ENTITLEMENTS];
	struct kp_bundle_scope *const *scopes = (void *)s->p[KP_BA_SCOPES];
	size_t i;

	for (i = 0; i < b->n_discounts; i++) {
		if (bsearch(disc[i]->operator_id, ops, b->n_operators, sizeof(*ops),
		            key_op_ptr) == NULL)
			return false;
	}
	for (i = 0; i < b->n_operator_fares; i++) {
		if (bsearch(ofares[i]->operator_id, ops, b->n_operators, sizeof(*ops),
		            key_op_ptr) == NULL)
			return false;
	}
	for (i = 0; i < b->n_entitlements; i++) {
		struct kp_bundle_product *const *p = bsearch(ents[i]->product, prods, b->n_products,
		                                             sizeof(*prods), key_prod_ptr);

		if (p == NULL || (ents[i]->first_use && (*p)->kind != KP_PRODUCT_PERIOD))
			return false;
	}
	for (i = 0; i < b->n_scopes; i++) {
		if (bsearch(scopes[i]->product, prods, b->n_products, sizeof(*prods),
		            key_prod_ptr) == NULL)
			return false;
	}
	return true;
}

/* The top-level keys in canonical order; V1: allowed in format 1; REQ: required. */
enum { TK_V, TK_CAPS, TK_ACKED, TK_FEEDS, TK_ISSUED, TK_POLICY, TK_REMOTE, TK_SCOPES, TK_VERSION,
       TK_DENYLIST, TK_PRODUCTS, TK_TERMINAL, TK_DISCOUNTS, TK_OPERATORS, TK_TRANSFERS,
       TK_ELIGIBILITY, TK_ENTITLEMENTS, TK_OPERATOR_FARES, TK_COUNT };
static const char *const TOP_KEYS[TK_COUNT] = { "v", "caps", "acked", "feeds", "issued",
	"policy", "remote", "scopes", "version", "denylist", "products", "terminal", "discounts",
	"operators", "transfers", "eligibility", "entitlements", "operator_fares" };
/* The array under each key (-1: not an array) */
static const int TK_ARRAY[TK_COUNT] = {
	[TK_V] = -1, [TK_CAPS] = KP_BA_CAPS, [TK_ACKED] = -1, [TK_FEEDS] = KP_BA_FEEDS,
	[TK_ISSUED] = -1, [TK_POLICY] = -1, [TK_REMOTE] = KP_BA_REMOTE, [TK_SCOPES] = KP_BA_SCOPES,
	[TK_VERSION] = -1, [TK_DENYLIST] = KP_BA_DENYLIST, [TK_PRODUCTS] = KP_BA_PRODUCTS,
	[TK_TERMINAL] = -1, [TK_DISCOUNTS] = KP_BA_DISCOUNTS, [TK_OPERATORS] = KP_BA_OPERATORS,
	[TK_TRANSFERS] = KP_BA_TRANSFERS, [TK_ELIGIBILITY] = KP_BA_ELIGIBILITY,
	[TK_ENTITLEMENTS] = KP_BA_ENTITLEMENTS, [TK_OPERATOR_FARES] = KP_BA_OPERATOR_FARES,
};
#define TK_REQUIRED (1u << TK_ACKED | 1u << TK_ISSUED | 1u << TK_VERSION | 1u << TK_DENYLIST | \
                     1u << TK_PRODUCTS | 1u << TK_TERMINAL | 1u << TK_OPERATORS |              \
                     1u << TK_ENTITLEMENTS)
#define TK_FORMAT1 (TK_REQUIRED | 1u << TK_ELIGIBILITY)
#define TK_FORMAT3 (1u << TK_REMOTE | 1u << TK_SCOPES)
#define TK_FORMAT4 (1u << TK_POLICY)

/* A key the encoder writes: the required ones, the arrays that are not empty, a policy
 * that is not the default. */
static bool top_written(const struct kp_bundle *b, int k)
{
	size_t n = 0;

	if (k == TK_V || (TK_REQUIRED & (1u << k)))
		return true;
	if (k == TK_POLICY)
		return !policy_default(&b->policy);
	array_of(b, TK_ARRAY[k], &n);
	return n > 0;
}

/* "key": [elements] in canonical order. */
static int array_write(struct kp_cbor_writer *w, const struct kp_bundle *b,
                       const struct sorted *s, int id, bool fmt2)
{
	const struct kp_bundle_array *a = kp_bundle_array(id);
	size_t n;
	int rc = KP_SYNC_OK;

	array_of(b, id, &n);
	kp_cbor_put_tstr(w, a->key);
	kp_cbor_put_array(w, n);
	for (size_t i = 0; i < n && rc == KP_SYNC_OK; i++) {
		if (id == KP_BA_PRODUCTS)
			rc = product_write(w, s->p[id][i], (void *)s->p[KP_BA_OPERATORS],
			                   b->n_operators, fmt2);
		else
			fields_write(w, a->fields, a->n_fields, s->p[id][i]);
	}
	return rc;
}

int kp_bundle_encode(const struct kp_bundle *b, uint8_t **out, size_t *out_len)
{
	struct kp_cbor_writer w = { 0 };
	struct sorted s;
	bool fmt2;
	size_t keys = 0;
	int fmt, rc;

	memset(&s, 0, sizeof(s));
	if (out != NULL)
		*out = NULL;
	if (out_len != NULL)
		*out_len = 0;
	if (b == NULL || out == NULL || out_len == NULL)
		return KP_SYNC_E_INVAL;
	fmt = (b->products == NULL && b->n_products > 0) ||
	      (b->entitlements == NULL && b->n_entitlements > 0) ? 1 : format_needed(b);
	fmt2 = fmt >= 2;
	rc = bundle_check(b, fmt2);
	if (rc != KP_SYNC_OK)
		return rc;
	rc = sorted_make(b, &s);
	if (rc != KP_SYNC_OK)
		goto out;
	if (!refs_valid_sorted(b, &s)) {
		rc = KP_SYNC_E_INVAL;
		goto out;
	}

	/* keys in canonical order: by length, then bytewise (PROTOCOL.md section 5) */
	for (int k = 0; k < TK_COUNT; k++)
		keys += top_written(b, k);
	kp_cbor_put_map(&w, keys);
	for (int k = 0; k < TK_COUNT && rc == KP_SYNC_OK; k++) {
		if (!top_written(b, k))
			continue;
		if (TK_ARRAY[k] >= 0) {
			rc = array_write(&w, b, &s, TK_ARRAY[k], fmt2);
			continue;
		}
		if (k == TK_POLICY) {
			write_policy(&w, &b->policy);
			continue;
		}
		kp_cbor_put_tstr(&w, TOP_KEYS[k]);
		if (k == TK_V)
			kp_cbor_put_uint(&w, (uint64_t)fmt);
		else if (k == TK_ACKED)
			kp_cbor_put_uint(&w, b->acked);
		else if (k == TK_ISSUED)
			kp_cbor_put_uint(&w, (uint64_t)b->issued_ms);
		else if (k == TK_VERSION)
			kp_cbor_put_uint(&w, b->version);
		else
			kp_cbor_put_tstr(&w, b->terminal);
	}
	if (rc == KP_SYNC_OK)
		rc = kp_cbor_sync_rc(kp_cbor_writer_finish(&w, out, out_len));
out:
	kp_cbor_writer_free(&w);
	sorted_free(&s);
	return rc;
}

/* ---- decoding ---- */
/* Room for one more element: doubles, but never beyond what the array head claimed
 * (which is already bounded by the input's size). */
static int grow(void **arr, size_t *cap, size_t have, size_t claimed, size_t elem)
{
	size_t n;
	void *p;

	if (have < *cap)
		return KP_RECORD_OK;
	n = *cap > 0 ? *cap * 2 : 64;
	if (n > claimed)
		n = claimed;
	p = realloc(*arr, n * elem);
	if (p == NULL)
		return KP_RECORD_E_NOMEM;
	*arr = p;
	*cap = n;
	return KP_RECORD_OK;
}

/* The next map key, which must be one of the n names (one every stride bytes from names:
 * a list, or the keys of a field table) in canonical order after *last: its index in *idx.
 * Keeps keys known, in order and unique. */
static int next_key(struct kp_cbor_reader *r, const char *const *names, size_t stride, size_t n,
                    int *last, int *idx)
{
	char key[32];
	int rc = kp_cbor_read_text(r, key, sizeof(key), false);

	if (rc != KP_RECORD_OK)
		return KP_RECORD_E_MALFORMED;
	for (size_t i = (size_t)(*last + 1); i < n; i++) {
		if (strcmp(key, *(const char *const *)((const char *)names + i * stride)) == 0) {
			*idx = *last = (int)i;
			return KP_RECORD_OK;
		}
	}
	return KP_RECORD_E_MALFORMED;
}

/* A text value that must be one of names[]. */
static int read_enum(struct kp_cbor_reader *r, const char *const *names, size_t n, int *out)
{
	char v[16];
	int rc = kp_cbor_read_text(r, v, sizeof(v), false);

	if (rc != KP_RECORD_OK)
		return KP_RECORD_E_MALFORMED;
	for (size_t i = 0; i < n; i++) {
		if (strcmp(v, names[i]) == 0) {
			*out = (int)i;
			return KP_RECORD_OK;
		}
	}
	return KP_RECORD_E_MALFORMED;
}

static int read_range(struct kp_cbor_reader *r, int64_t min, int64_t max, int64_t *out)
{
	int rc = kp_cbor_read_int(r, out);

	if (rc == KP_RECORD_OK && (*out < min || *out > max))
		rc = KP_RECORD_E_MALFORMED;
	return rc;
}

enum { PK_ID, PK_DAYS, PK_KIND, PK_NAME, PK_RIDES, PK_ROUTE, PK_STOPS, PK_CATEGORY,
       PK_OPERATORS, PK_COUNT };
static const char *const PRODUCT_KEYS[PK_COUNT] = { "id", "days", "kind", "name", "rides",
	"route", "stops", "category", "operators" };

static int product_read(struct kp_cbor_reader *r, struct kp_bundle_product *p, int fmt)
{
	uint64_t keys = 0, n, j;
	unsigned seen = 0, want;
	int64_t v;
	int last = -1, idx = 0, kind = KP_PRODUCT_NRIDE;
	int rc = kp_cbor_read_map(r, &keys);

	if (rc == KP_RECORD_OK && (keys < 4 || keys > PK_COUNT))
		rc = KP_RECORD_E_MALFORMED;
	for (uint64_t k = 0; rc == KP_RECORD_OK && k < keys; k++) {
		rc = next_key(r, PRODUCT_KEYS, sizeof(char *), PK_COUNT, &last, &idx);
		if (rc != KP_RECORD_OK)
			break;
		seen |= 1u << idx;
		switch (idx) {
		case PK_ID:
			rc = kp_cbor_read_id(r, p->id);
			break;
		case PK_DAYS:
			rc = read_range(r, 1, 366, &v);
			p->days = (int)v;
			break;
		case PK_KIND:
			rc = read_enum(r, KIND_NAMES, 4, &kind);
			p->kind = (enum kp_product_kind)kind;
			break;
		case PK_NAME:
			rc = read_bundle_text(r, p->name);
			break;
		case PK_RIDES:
			/* format 1 carried any integer; format 2 only a real count */
			if (fmt == 1)
				rc = kp_cbor_read_int(r, &p->rides);
			else
				rc = read_range(r, 1, INT32_MAX, &p->rides);
			break;
		case PK_ROUTE:
			rc = kp_cbor_read_id(r, p->route);
			if (rc == KP_RECORD_OK && !op_or_any(p->route))
				rc = KP_RECORD_E_MALFORMED;
			break;
		case PK_STOPS:
			rc = kp_cbor_read_array(r, &n);
			if (rc == KP_RECORD_OK && (n < 2 || n > KP_BUNDLE_PRODUCT_STOPS_MAX))
				rc = KP_RECORD_E_MALFORMED;
			if (rc == KP_RECORD_OK) {
				p->stops = calloc((size_t)n, sizeof(*p->stops));
				if (p->stops == NULL)
					rc = KP_RECORD_E_NOMEM;
			}
			for (j = 0; rc == KP_RECORD_OK && j < n; j++) {
				rc = kp_cbor_read_id(r, p->stops[j]);
				if (rc == KP_RECORD_OK)
					p->n_stops++;
			}
			if (rc == KP_RECORD_OK && !stops_valid((const void *)p->stops, p->n_stops))
				rc = KP_RECORD_E_MALFORMED;      /* a stop twice */
			break;
		case PK_CATEGORY:
			rc = kp_cbor_read_id(r, p->category);     /* never empty: "" is left out */
			break;
		case PK_OPERATORS:
			rc = kp_cbor_read_array(r, &n);
			if (rc == KP_RECORD_OK && n > KP_BUNDLE_PRODUCT_OPS_MAX)
				rc = KP_RECORD_E_MALFORMED;
			for (j = 0; rc == KP_RECORD_OK && j < n; j++) {
				rc = kp_cbor_read_id(r, p->operators[j]);
				if (rc == KP_RECORD_OK && j > 0 &&
				    strcmp(p->operators[j - 1], p->operators[j]) >= 0)
					rc = KP_RECORD_E_MALFORMED;
				if (rc == KP_RECORD_OK)
					p->n_operators++;
			}
			break;
		}
	}
	if (rc != KP_RECORD_OK)
		return rc;
	/* exactly the keys the kind has */
	want = 1u << PK_ID | 1u << PK_NAME | 1u << PK_OPERATORS |
	       (seen & (1u << PK_CATEGORY));
	if (fmt == 1)
		want |= 1u << PK_RIDES;
	else if (p->kind == KP_PRODUCT_NRIDE)
		want |= 1u << PK_KIND | 1u << PK_RIDES;
	else if (p->kind == KP_PRODUCT_PERIOD)
		want |= 1u << PK_KIND | 1u << PK_DAYS;
	else if (p->kind == KP_PRODUCT_COMMUTER)
		want |= 1u << PK_KIND | 1u << PK_ROUTE | 1u << PK_STOPS;
	else
		want |= 1u << PK_KIND;
	return seen == want ? KP_RECORD_OK : KP_RECORD_E_MALFORMED;
}

/* An array of 1..KP_POLICY_LIST_MAX ids, sorted, unique. */
static int ids_read(struct kp_cbor_reader *r, char (*ids)[KP_ID_MAX + 1], size_t *n)
{
	uint64_t count = 0;
	int rc = kp_cbor_read_array(r, &count);

	if (rc == KP_RECORD_OK && (count < 1 || count > KP_POLICY_LIST_MAX))
		rc = KP_RECORD_E_MALFORMED;
	for (uint64_t i = 0; rc == KP_RECORD_OK && i < count; i++) {
		rc = kp_cbor_read_id(r, ids[i]);
		if (rc == KP_RECORD_OK && i > 0 && strcmp(ids[i - 1], ids[i]) >= 0)
			rc = KP_RECORD_E_MALFORMED;
	}
	if (rc == KP_RECORD_OK)
		*n = (size_t)count;
	return rc;
}

enum { PD_RIDES, PD_VALUE, PD_PRODUCTS, PD_CATEGORIES, PD_COUNT };
static const char *const DIRECT_KEYS[PD_COUNT] = { "rides", "value", "products", "categories" };

static int policy_read(struct kp_cbor_reader *r, struct kp_bundle_policy *p)
{
	uint64_t keys = 0, dkeys = 0;
	int rc = kp_cbor_read_map(r, &keys), last = -1, idx = 0;

	if (rc == KP_RECORD_OK && keys != 1 && keys != 2)
		rc = KP_RECORD_E_MALFORMED;
	if (rc == KP_RECORD_OK && keys == 2) {
		p->direct = 1;
		rc = kp_cbor_read_key(r, "direct");
		if (rc == KP_RECORD_OK)
			rc = kp_cbor_read_map(r, &dkeys);
		if (rc == KP_RECORD_OK && (dkeys < 1 || dkeys > PD_COUNT))
			rc = KP_RECORD_E_MALFORMED;
		for (uint64_t k = 0; rc == KP_RECORD_OK && k < dkeys; k++) {
			rc = next_key(r, DIRECT_KEYS, sizeof(char *), PD_COUNT, &last, &idx);
			if (rc != KP_RECORD_OK)
				break;
			switch (idx) {
			case PD_RIDES:
				rc = read_range(r, 1, KP_POLICY_RIDES_MAX, &p->direct_rides);
				break;
			case PD_VALUE:
				rc = read_range(r, 1, KP_POLICY_VALUE_MAX, &p->direct_value);
				break;
			case PD_PRODUCTS:
				rc = ids_read(r, p->products, &p->n_products);
				break;
			default:
				rc = ids_read(r, p->categories, &p->n_categories);
				break;
			}
		}
	}
	if (rc == KP_RECORD_OK)
		rc = kp_cbor_read_key(r, "max_age");
	if (rc == KP_RECORD_OK)
		rc = read_range(r, KP_POLICY_MAX_AGE_MIN, KP_POLICY_MAX_AGE_MAX, &p->max_age_s);
	/* direct taps name what they may use; the default policy is written as no key */
	if (rc == KP_RECORD_OK && (!policy_valid(p) || policy_default(p)))
		rc = KP_RECORD_E_MALFORMED;
	return rc;
}

static int fields_read(struct kp_cbor_reader *r, const struct kp_bundle_field *f, size_t n,
                       void *el, int fmt);

/* [id, spent]: spent in [min, max] (none is written as no key). */
static int pair_read(struct kp_cbor_reader *r, const struct kp_bundle_field *f, void *el)
{
	uint64_t n = 0;
	int rc = kp_cbor_read_array(r, &n);

	if (rc == KP_RECORD_OK && n != 2)
		rc = KP_RECORD_E_MALFORMED;
	if (rc == KP_RECORD_OK)
		rc = kp_cbor_read_uint63(r, (int64_t *)((uint8_t *)el + f->offset));
	if (rc == KP_RECORD_OK)
		rc = read_range(r, f->min, f->max, (int64_t *)((uint8_t *)el + f->aux));
	return rc;
}

static int blob_read(struct kp_cbor_reader *r, const struct kp_bundle_field *f, void *el)
{
	const uint8_t *p = NULL;
	size_t len = 0;
	uint8_t **dst = (uint8_t **)((uint8_t *)el + f->offset);
	int rc = kp_cbor_read_bstr(r, &p, &len);

	if (rc != KP_RECORD_OK)
		return rc;
	*dst = malloc(len > 0 ? len : 1);
	if (*dst == NULL)
		return KP_RECORD_E_NOMEM;
	memcpy(*dst, p, len);
	*(size_t *)((uint8_t *)el + f->aux) = len;
	return KP_RECORD_OK;
}

static int field_read(struct kp_cbor_reader *r, const struct kp_bundle_field *f, void *el,
                      int fmt)
{
	uint8_t *p = (uint8_t *)el + f->offset;
	uint64_t one = 0;
	int64_t v = 0;
	int k = 0, rc;

	switch (f->type) {
	case KP_BF_ID:
		return kp_cbor_read_id(r, (char *)p);
	case KP_BF_ID_ANY:
		rc = kp_cbor_read_id(r, (char *)p);
		return rc == KP_RECORD_OK && !op_or_any((char *)p) ? KP_RECORD_E_MALFORMED : rc;
	case KP_BF_TEXT:
		return read_bundle_text(r, (char *)p);
	case KP_BF_BYTES:
		return kp_cbor_read_bstr_exact(r, p, f->size);
	case KP_BF_BLOB:
		return blob_read(r, f, el);
	case KP_BF_ENUM:
		rc = read_enum(r, f->names, f->n_names, &k);
		kp_bundle_field_put_int(el, f->offset, f->size, k);
		return rc;
	case KP_BF_FLAG:
		/* present only when set: 1 */
		rc = kp_cbor_read_uint(r, &one);
		kp_bundle_field_put_int(el, f->offset, f->size, 1);
		return rc == KP_RECORD_OK && one != 1 ? KP_RECORD_E_MALFORMED : rc;
	case KP_BF_PAIR:
		return pair_read(r, f, el);
	case KP_BF_MAP:
		return fields_read(r, f->sub, f->n_sub, el, fmt);
	default:
		rc = read_range(r, f->min, f->max, &v);
		kp_bundle_field_put_int(el, f->offset, f->size, v);
		return rc;
	}
}

/* One element: a map of the table's keys this format has, known, in order, unique, the
 * ones always written all there. */
static int fields_read(struct kp_cbor_reader *r, const struct kp_bundle_field *f, size_t n,
                       void *el, int fmt)
{
	uint64_t keys = 0;
	unsigned seen = 0, need = 0;
	size_t allowed = 0;
	int last = -1, idx = 0;
	int rc = kp_cbor_read_map(r, &keys);

	for (size_t i = 0; i < n; i++) {
		allowed += f[i].format <= fmt;
		if (f[i].format <= fmt && f[i].when == KP_BW_ALWAYS)
			need |= 1u << i;
	}
	if (rc == KP_RECORD_OK && (keys < (uint64_t)__builtin_popcount(need) || keys > allowed))
		rc = KP_RECORD_E_MALFORMED;
	for (uint64_t k = 0; rc == KP_RECORD_OK && k < keys; k++) {
		rc = next_key(r, &f[0].key, sizeof(*f), n, &last, &idx);
		if (rc == KP_RECORD_OK && f[idx].format > fmt)
			rc = KP_RECORD_E_MALFORMED;
		if (rc != KP_RECORD_OK)
			break;
		seen |= 1u << idx;
		if (f[idx].when == KP_BW_FLAG)
			kp_bundle_field_put_int(el, f[idx].flag, sizeof(int), 1);
		rc = field_read(r, &f[idx], el, fmt);
	}
	if (rc == KP_RECORD_OK && (seen & need) != need)
		rc = KP_RECORD_E_MALFORMED;
	return rc;
}

static int element_read(struct kp_cbor_reader *r, int id, void *el, int fmt)
{
	const struct kp_bundle_array *a = kp_bundle_array(id);
	int rc;

	if (id == KP_BA_PRODUCTS)
		return product_read(r, el, fmt);
	rc = fields_read(r, a->fields, a->n_fields, el, fmt);
	if (rc == KP_RECORD_OK && OPS[id].valid != NULL && !OPS[id].valid(el))
		rc = KP_RECORD_E_MALFORMED;
	return rc;
}

/* "key": [elements] into a growing *arr; each element must sort strictly after the one
 * before. Returns a KP_SYNC_* code; *arr is the caller's to free also on failure (with
 * *count elements complete, and one more partly read ones' allocations: see free_partial). */
static int array_read(struct kp_cbor_reader *r, int id, void **arr, size_t *count, int fmt)
{
	const struct kp_bundle_array *a = kp_bundle_array(id);
	size_t claimed = 0, cap = 0;
	uint64_t n;
	uint8_t *el;
	int rc = kp_cbor_sync_rc(kp_cbor_read_array(r, &n));

	if (rc != KP_SYNC_OK)
		return rc;
	if (n > a->max)
		return KP_SYNC_E_TOOBIG;
	if (n > (r->len - r->pos) / OPS[id].min_size)
		return KP_SYNC_E_MALFORMED;
	claimed = (size_t)n;
	while (rc == KP_SYNC_OK && *count < claimed) {
		rc = kp_cbor_sync_rc(grow(arr, &cap, *count, claimed, a->elem_size));
		if (rc != KP_SYNC_OK)
			break;
		el = (uint8_t *)*arr + *count * a->elem_size;
		memset(el, 0, a->elem_size);
		rc = kp_cbor_sync_rc(element_read(r, id, el, fmt));
		if (rc == KP_SYNC_OK && *count > 0 && OPS[id].cmp(el - a->elem_size, el) >= 0)
			rc = KP_SYNC_E_MALFORMED;
		/* counted even when bad, so kp_bundle_free frees what it allocated */
		(*count)++;
	}
	return rc;
}
/* Every product's operators, every entitlement's product, and the operators of discounts
 * and operator fares are in the bundle (all arrays are sorted by now); first-use
 * entitlements are of period passes. */
static bool references_valid(const struct kp_bundle *b)
{
	const struct kp_bundle_product *p = NULL;
	size_t i, j;

	for (i = 0; i < b->n_products; i++) {
		for (j = 0; j < b->products[i].n_operators; j++) {
			if (bsearch(b->products[i].operators[j], b->operators, b->n_operators,
			            sizeof(struct kp_bundle_operator), key_op) == NULL)
				return false;
		}
	}
	for (i = 0; i < b->n_entitlements; i++) {
		/* sorted by token, neighbours often share a product */
		if (p == NULL || strcmp(p->id, b->entitlements[i].product) != 0)
			p = bsearch(b->entitlements[i].product, b->products, b->n_products,
			            sizeof(*b->products), key_prod);
		if (p == NULL || (b->entitlements[i].first_use && p->kind != KP_PRODUCT_PERIOD))
			return false;
	}
	for (i = 0; i < b->n_discounts; i++) {
		if (bsearch(b->discounts[i].operator_id, b->operators, b->n_operators,
		            sizeof(struct kp_bundle_operator), key_op) == NULL)
			return false;
	}
	for (i = 0; i < b->n_operator_fares; i++) {
		if (bsearch(b->operator_fares[i].operator_id, b->operators, b->n_operators,
		            sizeof(struct kp_bundle_operator), key_op) == NULL)
			return false;
	}
	for (i = 0; i < b->n_scopes; i++) {
		if (bsearch(b->scopes[i].product, b->products, b->n_products, sizeof(*b->products),
		            key_prod) == NULL)
			return false;
	}
	return true;
}

static int bundle_decode(const uint8_t *buf, size_t len, struct kp_bundle *b, struct derr *e)
{
	struct kp_cbor_reader r = { .buf = buf, .len = len };
	uint64_t n, v;
	unsigned seen = 0;
	int last = 0, idx = 0, rc;

	if (b == NULL || (buf == NULL && len > 0))
		return KP_SYNC_E_INVAL;
	memset(b, 0, sizeof(*b));
	/* "v" sorts first; judge it before the shape, which another format may change */
	rc = kp_cbor_read_map(&r, &n);
	if (rc == KP_RECORD_OK)
		rc = kp_cbor_read_key(&r, "v");
	if (rc == KP_RECORD_OK)
		rc = kp_cbor_read_uint(&r, &v);
	if (rc == KP_RECORD_OK && (v < 1 || v > KP_BUNDLE_FORMAT)) {
		rc = dfail(e, KP_SYNC_E_VERSION, "bundle format %llu (this terminal reads 1 to %d)",
		           (unsigned long long)v, KP_BUNDLE_FORMAT);
		goto out;
	}
	if (rc == KP_RECORD_OK && (n < BUNDLE_KEYS || n > TK_COUNT))
		rc = KP_RECORD_E_MALFORMED;
	rc = kp_cbor_sync_rc(rc);
	if (rc != KP_SYNC_OK)
		goto out;
	b->format = (int)v;
	feed_err = e;
	feed_toobig = false;
	for (uint64_t k = 1; rc == KP_SYNC_OK && k < n; k++) {
		void **arr = NULL;
		size_t *count = NULL;

		rc = kp_cbor_sync_rc(next_key(&r, TOP_KEYS, sizeof(char *), TK_COUNT, &last, &idx));
		if (rc != KP_SYNC_OK)
			break;
		if ((b->format == 1 && !(TK_FORMAT1 & (1u << idx))) ||
		    (b->format == 2 && ((TK_FORMAT3 | TK_FORMAT4) & (1u << idx))) ||
		    (b->format == 3 && (TK_FORMAT4 & (1u << idx)))) {
			rc = dfail(e, KP_SYNC_E_MALFORMED, "key %s in a format %d bundle", TOP_KEYS[idx],
			           b->format);
			break;
		}
		seen |= 1u << idx;
		switch (idx) {
		case TK_ACKED:
			rc = kp_cbor_sync_rc(kp_cbor_read_uint(&r, &b->acked));
			continue;
		case TK_ISSUED:
			rc = kp_cbor_sync_rc(kp_cbor_read_uint63(&r, &b->issued_ms));
			continue;
		case TK_VERSION:
			rc = kp_cbor_sync_rc(kp_cbor_read_uint(&r, &b->version));
			if (rc == KP_SYNC_OK && b->version == 0)
				rc = KP_SYNC_E_MALFORMED;
			continue;
		case TK_TERMINAL:
			rc = kp_cbor_sync_rc(kp_cbor_read_id(&r, b->terminal));
			continue;
		case TK_POLICY:
			rc = kp_cbor_sync_rc(policy_read(&r, &b->policy));
			if (rc != KP_SYNC_OK)
				dfail(e, rc, "policy: %s", kp_sync_strerror(rc));
			continue;
		default:
			break;
		}
		if (TK_ARRAY[idx] < 0) {
			rc = KP_SYNC_E_MALFORMED;
			continue;
		}
		arr = (void **)((uint8_t *)b + kp_bundle_array(TK_ARRAY[idx])->arr_offset);
		count = (size_t *)((uint8_t *)b + kp_bundle_array(TK_ARRAY[idx])->count_offset);
		rc = array_read(&r, TK_ARRAY[idx], arr, count, b->format);
		if (rc != KP_SYNC_OK && feed_toobig)
			rc = KP_SYNC_E_TOOBIG;
		if (rc == KP_SYNC_OK && *count == 0 && !(TK_REQUIRED & (1u << idx)))
			rc = KP_SYNC_E_MALFORMED;       /* none is written as no key, never [] */
		if (rc != KP_SYNC_OK)
			dfail(e, rc, "%s: %s", TOP_KEYS[idx], kp_sync_strerror(rc));
	}
	feed_err = NULL;
	if (rc != KP_SYNC_OK)
		goto out;
	if ((seen & TK_REQUIRED) != TK_REQUIRED || r.pos != r.len || r.noncanonical) {
		rc = KP_SYNC_E_MALFORMED;
		goto out;
	}
	if (b->policy.max_age_s == 0)
		b->policy.max_age_s = KP_POLICY_MAX_AGE_DEFAULT;
	if (!references_valid(b))
		rc = dfail(e, KP_SYNC_E_MALFORMED, "a product, operator, entitlement or scope refers "
		           "to something the bundle does not hold");
out:
	if (rc != KP_SYNC_OK)
		kp_bundle_free(b);
	return rc;
}

int kp_bundle_decode(const uint8_t *buf, size_t len, struct kp_bundle *b)
{
	return bundle_decode(buf, len, b, NULL);
}

void kp_bundle_free(struct kp_bundle *b)
{
	if (b == NULL)
		return;
	for (size_t i = 0; b->products != NULL && i < b->n_products; i++)
		free(b->products[i].stops);
	for (size_t i = 0; b->feeds != NULL && i < b->n_feeds; i++)
		free(b->feeds[i].package);
	for (int id = 0; id < KP_BA_COUNT; id++)
		free(*(void **)((uint8_t *)b + kp_bundle_array(id)->arr_offset));
	memset(b, 0, sizeof(*b));
}

/* ---- signing ---- */

int kp_bundle_sign(const struct kp_bundle *b, const kp_key *key, uint8_t **out, size_t *out_len)
{
	uint8_t *payload = NULL;
	size_t payload_len = 0;
	int rc;

	if (out != NULL)
		*out = NULL;
	if (out_len != NULL)
		*out_len = 0;
	if (b == NULL || key == NULL || out == NULL || out_len == NULL)
		return KP_SYNC_E_INVAL;
	rc = kp_bundle_encode(b, &payload, &payload_len);
	if (rc != KP_SYNC_OK)
		return rc;
	return kp_bundle_cose_sign(key, payload, payload_len, out, out_len);
}

int kp_bundle_cose_sign(const kp_key *key, uint8_t *payload, size_t payload_len, uint8_t **out,
                        size_t *out_len)
{
	int rc = kp_cose_sign1(key, KP_BUNDLE_KID, payload, payload_len, out, out_len);

	free(payload);
	switch (rc) {
	case KP_RECORD_OK:      return KP_SYNC_OK;
	case KP_RECORD_E_NOMEM: return KP_SYNC_E_NOMEM;
	case KP_RECORD_E_INVAL: return KP_SYNC_E_INVAL;
	default:                return KP_SYNC_E_SIGNATURE;     /* the key could not sign */
	}
}

static void set_err(char *err, size_t err_cap, const char *fmt, ...)
{
	va_list ap;

	if (err == NULL || err_cap == 0)
		return;
	va_start(ap, fmt);
	vsnprintf(err, err_cap, fmt, ap);
	va_end(ap);
}

/* The signature with the backend certificate, ES256, kid "backend": the payload, pointing
 * into cose; KP_SYNC_E_* with why in err otherwise (bundles and deltas alike). */
int kp_bundle_cose_payload(const kp_cert *backend_cert, const uint8_t *cose, size_t len,
                           const uint8_t **payload_out, size_t *payload_len_out, char *err,
                           size_t err_cap)
{
	const uint8_t *payload = NULL;
	size_t payload_len = 0;
	char kid[KP_ID_MAX + 1], shown[KP_ID_MAX + 1];
	int rc;

	rc = kp_cose_verify1(backend_cert, cose, len, &payload, &payload_len, kid, sizeof(kid));
	switch (rc) {
	case KP_RECORD_OK:
		break;
	case KP_RECORD_E_SIGNATURE:
		set_err(err, err_cap, "bundle signature does not verify with the backend certificate");
		return KP_SYNC_E_SIGNATURE;
	case KP_RECORD_E_CRYPTO:
		set_err(err, err_cap, "bundle signature cannot be checked: %s",
		        kp_crypto_last_error());
		return KP_SYNC_E_SIGNATURE;
	case KP_RECORD_E_VERSION:
		set_err(err, err_cap, "bundle is not signed with ES256");
		return KP_SYNC_E_VERSION;
	case KP_RECORD_E_NOMEM:
		set_err(err, err_cap, "out of memory");
		return KP_SYNC_E_NOMEM;
	default:
		set_err(err, err_cap, "bundle is not a COSE_Sign1: %s", kp_record_strerror(rc));
		return KP_SYNC_E_MALFORMED;
	}
	if (strcmp(kid, KP_BUNDLE_KID) != 0) {
		kp_cbor_text_printable(shown, sizeof(shown), kid, strlen(kid));
		set_err(err, err_cap, "bundle is signed with kid '%s', not '%s'", shown,
		        KP_BUNDLE_KID);
		return KP_SYNC_E_MALFORMED;
	}
	*payload_out = payload;
	*payload_len_out = payload_len;
	return KP_SYNC_OK;
}

int kp_bundle_open_err(const kp_cert *backend_cert, const uint8_t *cose, size_t len,
                       const char *terminal, uint64_t have_version, struct kp_bundle *b,
                       char *err, size_t err_cap)
{
	const uint8_t *payload = NULL;
	size_t payload_len = 0;
	char shown[2][KP_ID_MAX + 1];
	int rc;

	if (err != NULL && err_cap > 0)
		err[0] = '\0';
	if (b != NULL)
		memset(b, 0, sizeof(*b));
	if (backend_cert == NULL || (cose == NULL && len > 0) || terminal == NULL || b == NULL) {
		set_err(err, err_cap, "invalid argument");
		return KP_SYNC_E_INVAL;
	}
	rc = kp_bundle_cose_payload(backend_cert, cose, len, &payload, &payload_len, err, err_cap);
	if (rc != KP_SYNC_OK)
		return rc;
	{
		char why[384] = "";
		struct derr e = { why, sizeof(why) };

		rc = bundle_decode(payload, payload_len, b, &e);
		if (rc != KP_SYNC_OK) {
			set_err(err, err_cap, "bundle payload: %s%s%s", kp_sync_strerror(rc),
			        why[0] != '\0' ? ": " : "", why);
			return rc;
		}
	}
	if (strcmp(b->terminal, terminal) != 0) {
		kp_cbor_text_printable(shown[0], sizeof(shown[0]), b->terminal, strlen(b->terminal));
		kp_cbor_text_printable(shown[1], sizeof(shown[1]), terminal, strlen(terminal));
		set_err(err, err_cap, "bundle is for terminal %s, not %s", shown[0], shown[1]);
		rc = KP_SYNC_E_MALFORMED;
	} else if (b->version <= have_version) {
		set_err(err, err_cap, "bundle version %llu is not newer than version %llu applied",
		        (unsigned long long)b->version, (unsigned long long)have_version);
		rc = KP_SYNC_E_STALE;
	}
	if (rc != KP_SYNC_OK)
		kp_bundle_free(b);
	return rc;
}

int kp_bundle_open(const kp_cert *backend_cert, const uint8_t *cose, size_t len,
                   const char *terminal, uint64_t have_version, struct kp_bundle *b)
{
	return kp_bundle_open_err(backend_cert, cose, len, terminal, have_version, b, NULL, 0);
}

/* ---- what delta.c shares of the bundle's encoding ---- */

int kp_bundle_rows_write(struct kp_cbor_writer *w, enum kp_bundle_array_id id, const void *arr,
                         size_t n)
{
	const struct kp_bundle_array *a = kp_bundle_array(id);
	const void **p;

	if (id == KP_BA_PRODUCTS || n > a->max || (arr == NULL && n > 0))
		return KP_SYNC_E_INVAL;
	for (size_t i = 0; i < n; i++) {
		const void *el = (const uint8_t *)arr + i * a->elem_size;

		if (!fields_valid(a->fields, a->n_fields, el) ||
		    (OPS[id].valid != NULL && !OPS[id].valid(el)))
			return KP_SYNC_E_INVAL;
	}
	p = sorted_ptrs(arr, n, a->elem_size, OPS[id].cmp);
	if (p == NULL)
		return KP_SYNC_E_NOMEM;
	if (!strictly_increasing(p, n, OPS[id].cmp)) {
		free(p);
		return KP_SYNC_E_INVAL;
	}
	kp_cbor_put_array(w, n);
	for (size_t i = 0; i < n; i++)
		fields_write(w, a->fields, a->n_fields, p[i]);
	free(p);
	return KP_SYNC_OK;
}

int kp_bundle_rows_read(struct kp_cbor_reader *r, enum kp_bundle_array_id id, void **arr,
                        size_t *n)
{
	if (id == KP_BA_PRODUCTS || id == KP_BA_FEEDS)
		return KP_SYNC_E_INVAL;
	return array_read(r, id, arr, n, KP_BUNDLE_FORMAT);
}

int kp_bundle_rows_cmp(enum kp_bundle_array_id id, const void *a, const void *b)
{
	return OPS[id].cmp(a, b);
}

bool kp_bundle_policy_is_default(const struct kp_bundle_policy *p)
{
	return policy_default(p);
}

int kp_bundle_policy_check(const struct kp_bundle_policy *p)
{
	return policy_valid(p) ? KP_SYNC_OK : KP_SYNC_E_INVAL;
}

void kp_bundle_policy_write(struct kp_cbor_writer *w, const struct kp_bundle_policy *p)
{
	write_policy(w, p);
}

int kp_bundle_policy_read(struct kp_cbor_reader *r, struct kp_bundle_policy *p)
{
	return kp_cbor_sync_rc(policy_read(r, p));
}
