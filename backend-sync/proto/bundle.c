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
static const char *const ROUNDING_NAMES[] = { "down", "up", "nearest" };
static const char *const PERIOD_NAMES[] = { "day", "month" };

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

static int elements_check(const struct kp_bundle *b, bool fmt2)
{
	size_t i;

	for (i = 0; i < b->n_operators; i++) {
		const struct kp_bundle_operator *o = &b->operators[i];

		if (!kp_cbor_id_valid(o->id, false) || !text_ok(o->name))
			return KP_SYNC_E_INVAL;
	}
	for (i = 0; i < b->n_products; i++) {
		if (product_check(&b->products[i], fmt2) != KP_SYNC_OK)
			return KP_SYNC_E_INVAL;
	}
	for (i = 0; i < b->n_entitlements; i++) {
		const struct kp_bundle_entitlement *e = &b->entitlements[i];

		if (e->id < 1 || e->remaining < 0 || e->valid_from_ms < 0 ||
		    e->valid_until_ms < e->valid_from_ms || !kp_cbor_id_valid(e->product, false) ||
		    (e->first_use != 0 && e->first_use != 1))
			return KP_SYNC_E_INVAL;
	}
	for (i = 0; i < b->n_denylist; i++) {
		const struct kp_bundle_deny *d = &b->denylist[i];

		if (!text_ok(d->reason))
			return KP_SYNC_E_INVAL;
	}
	for (i = 0; i < b->n_eligibility; i++) {
		const struct kp_bundle_eligibility *e = &b->eligibility[i];

		if (!kp_cbor_id_valid(e->category, false) || e->valid_from_ms < 0 ||
		    e->valid_until_ms < e->valid_from_ms)
			return KP_SYNC_E_INVAL;
	}
	for (i = 0; i < b->n_discounts; i++) {
		const struct kp_bundle_discount *d = &b->discounts[i];

		if (!kp_cbor_id_valid(d->operator_id, false) || !kp_cbor_id_valid(d->category, false) ||
		    d->percent < 0 || d->percent > 100 || d->rounding < 0 || d->rounding > 2 ||
		    d->unit < 1 || d->unit > 100000)
			return KP_SYNC_E_INVAL;
	}
	for (i = 0; i < b->n_caps; i++) {
		const struct kp_bundle_cap *c = &b->caps[i];

		if (!kp_cbor_id_valid(c->category, true) || c->period < 0 || c->period > 1 ||
		    c->amount < 0 || c->amount > 1000000000000LL)
			return KP_SYNC_E_INVAL;
	}
	for (i = 0; i < b->n_transfers; i++) {
		const struct kp_bundle_transfer *t = &b->transfers[i];

		if (!op_or_any(t->from_operator) || !op_or_any(t->to_operator) || t->within_s < 60 ||
		    t->within_s > 86400 || t->max_transfers < 1 || t->max_transfers > 100 ||
		    t->off < -1 || t->off > 1000000000000LL)
			return KP_SYNC_E_INVAL;
	}
	for (i = 0; i < b->n_operator_fares; i++) {
		const struct kp_bundle_operator_fare *f = &b->operator_fares[i];

		if (!kp_cbor_id_valid(f->operator_id, false) || !kp_cbor_id_valid(f->feed_id, false) ||
		    (f->distance != 0 && f->distance != 1))
			return KP_SYNC_E_INVAL;
	}
	for (i = 0; i < b->n_remote; i++) {
		if (!remote_valid(&b->remote[i]))
			return KP_SYNC_E_INVAL;
	}
	for (i = 0; i < b->n_scopes; i++) {
		const struct kp_bundle_scope *c = &b->scopes[i];

		if (!kp_cbor_id_valid(c->product, false) || !kp_cbor_id_valid(c->scope_id, false) ||
		    (c->network != 0 && c->network != 1))
			return KP_SYNC_E_INVAL;
	}
	for (i = 0; i < b->n_feeds; i++) {
		const struct kp_bundle_feed *f = &b->feeds[i];
		uint8_t digest[KP_SHA256_LEN];

		if (!kp_cbor_id_valid(f->id, false) || f->package == NULL || f->package_len == 0 ||
		    kp_sha256(f->package, f->package_len, digest) != 0 ||
		    memcmp(digest, f->digest, KP_SHA256_LEN) != 0 ||
		    kp_fare_pkg_walk(f->package, f->package_len, -1, NULL, NULL, NULL, NULL, 0) !=
		    KP_SYNC_OK)
			return KP_SYNC_E_INVAL;
	}
	return KP_SYNC_OK;
}

static int bundle_check(const struct kp_bundle *b, bool fmt2)
{
	if (b->version < 1 || b->issued_ms < 0 || !kp_cbor_id_valid(b->terminal, false))
		return KP_SYNC_E_INVAL;
	if (b->n_operators > KP_BUNDLE_OPERATORS_MAX || b->n_products > KP_BUNDLE_PRODUCTS_MAX ||
	    b->n_entitlements > KP_BUNDLE_ENTITLEMENTS_MAX || b->n_denylist > KP_BUNDLE_DENYLIST_MAX ||
	    b->n_eligibility > KP_BUNDLE_ELIGIBILITY_MAX || b->n_discounts > KP_BUNDLE_DISCOUNTS_MAX ||
	    b->n_caps > KP_BUNDLE_CAPS_MAX || b->n_transfers > KP_BUNDLE_TRANSFERS_MAX ||
	    b->n_operator_fares > KP_BUNDLE_OPERATOR_FARES_MAX || b->n_feeds > KP_BUNDLE_FEEDS_MAX ||
	    b->n_remote > KP_BUNDLE_REMOTE_MAX || b->n_scopes > KP_BUNDLE_SCOPES_MAX)
		return KP_SYNC_E_TOOBIG;
	if ((b->n_operators > 0 && b->operators == NULL) ||
	    (b->n_products > 0 && b->products == NULL) ||
	    (b->n_entitlements > 0 && b->entitlements == NULL) ||
	    (b->n_denylist > 0 && b->denylist == NULL) ||
	    (b->n_eligibility > 0 && b->eligibility == NULL) ||
	    (b->n_discounts > 0 && b->discounts == NULL) ||
	    (b->n_caps > 0 && b->caps == NULL) ||
	    (b->n_transfers > 0 && b->transfers == NULL) ||
	    (b->n_operator_fares > 0 && b->operator_fares == NULL) ||
	    (b->n_feeds > 0 && b->feeds == NULL) ||
	    (b->n_remote > 0 && b->remote == NULL) ||
	    (b->n_scopes > 0 && b->scopes == NULL) || b->format < 0 ||
	    b->format > KP_BUNDLE_FORMAT || !policy_valid(&b->policy))
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

/* The pointers of every array in canonical order (the caller's arrays are not touched). */
struct sorted {
	struct kp_bundle_operator **ops;
	struct kp_bundle_product **prods;
	struct kp_bundle_entitlement **ents;
	struct kp_bundle_deny **deny;
	struct kp_bundle_eligibility **elig;
	struct kp_bundle_discount **disc;
	struct kp_bundle_cap **caps;
	struct kp_bundle_transfer **xfer;
	struct kp_bundle_operator_fare **ofares;
	struct kp_bundle_feed **feeds;
	struct kp_bundle_remote **remote;
	struct kp_bundle_scope **scopes;
};

static void sorted_free(struct sorted *s)
{
	free(s->ops);
	free(s->prods);
	free(s->ents);
	free(s->deny);
	free(s->elig);
	free(s->disc);
	free(s->caps);
	free(s->xfer);
	free(s->ofares);
	free(s->feeds);
	free(s->remote);
	free(s->scopes);
}

static int sorted_make(const struct kp_bundle *b, struct sorted *s)
{
	memset(s, 0, sizeof(*s));
#define SORT(dst, arr, n, cmp) dst = (void *)sorted_ptrs(arr, n, sizeof(*(arr)), cmp)
	SORT(s->ops, b->operators, b->n_operators, op_cmp);
	SORT(s->prods, b->products, b->n_products, prod_cmp);
	SORT(s->ents, b->entitlements, b->n_entitlements, ent_cmp);
	SORT(s->deny, b->denylist, b->n_denylist, deny_cmp);
	SORT(s->elig, b->eligibility, b->n_eligibility, elig_cmp);
	SORT(s->disc, b->discounts, b->n_discounts, disc_cmp);
	SORT(s->caps, b->caps, b->n_caps, cap_cmp);
	SORT(s->xfer, b->transfers, b->n_transfers, xfer_cmp);
	SORT(s->ofares, b->operator_fares, b->n_operator_fares, ofare_cmp);
	SORT(s->feeds, b->feeds, b->n_feeds, feed_cmp);
	SORT(s->remote, b->remote, b->n_remote, remote_cmp);
	SORT(s->scopes, b->scopes, b->n_scopes, scope_cmp);
#undef SORT
	if (s->ops == NULL || s->prods == NULL || s->ents == NULL || s->deny == NULL ||
	    s->elig == NULL || s->disc == NULL || s->caps == NULL || s->xfer == NULL ||
	    s->ofares == NULL || s->feeds == NULL || s->remote == NULL || s->scopes == NULL)
		return KP_SYNC_E_NOMEM;
	/* the same id, token or key twice */
	if (!strictly_increasing((const void **)s->ops, b->n_operators, op_cmp) ||
	    !strictly_increasing((const void **)s->prods, b->n_products, prod_cmp) ||
	    !strictly_increasing((const void **)s->ents, b->n_entitlements, ent_cmp) ||
	    !strictly_increasing((const void **)s->deny, b->n_denylist, deny_cmp) ||
	    !strictly_increasing((const void **)s->elig, b->n_eligibility, elig_cmp) ||
	    !strictly_increasing((const void **)s->disc, b->n_discounts, disc_cmp) ||
	    !strictly_increasing((const void **)s->caps, b->n_caps, cap_cmp) ||
	    !strictly_increasing((const void **)s->xfer, b->n_transfers, xfer_cmp) ||
	    !strictly_increasing((const void **)s->ofares, b->n_operator_fares, ofare_cmp) ||
	    !strictly_increasing((const void **)s->feeds, b->n_feeds, feed_cmp) ||
	    !strictly_increasing((const void **)s->remote, b->n_remote, remote_cmp) ||
	    !strictly_increasing((const void **)s->scopes, b->n_scopes, scope_cmp))
		return KP_SYNC_E_INVAL;
	return KP_SYNC_OK;
}

static void write_caps(struct kp_cbor_writer *w, const struct sorted *s, size_t n)
{
	kp_cbor_put_tstr(w, "caps");
	kp_cbor_put_array(w, n);
	for (size_t i = 0; i < n; i++) {
		const struct kp_bundle_cap *c = s->caps[i];

		kp_cbor_put_map(w, c->category[0] != '\0' ? 3 : 2);
		kp_cbor_put_tstr(w, "amount");
		kp_cbor_put_uint(w, (uint64_t)c->amount);
		kp_cbor_put_tstr(w, "period");
		kp_cbor_put_tstr(w, PERIOD_NAMES[c->period]);
		if (c->category[0] != '\0') {
			kp_cbor_put_tstr(w, "category");
			kp_cbor_put_tstr(w, c->category);
		}
	}
}

static void write_feeds(struct kp_cbor_writer *w, const struct sorted *s, size_t n)
{
	kp_cbor_put_tstr(w, "feeds");
	kp_cbor_put_array(w, n);
	for (size_t i = 0; i < n; i++) {
		kp_cbor_put_map(w, 3);
		kp_cbor_put_tstr(w, "id");
		kp_cbor_put_tstr(w, s->feeds[i]->id);
		kp_cbor_put_tstr(w, "digest");
		kp_cbor_put_bstr(w, s->feeds[i]->digest, KP_SHA256_LEN);
		kp_cbor_put_tstr(w, "package");
		kp_cbor_put_bstr(w, s->feeds[i]->package, s->feeds[i]->package_len);
	}
}

static void write_discounts(struct kp_cbor_writer *w, const struct sorted *s, size_t n)
{
	kp_cbor_put_tstr(w, "discounts");
	kp_cbor_put_array(w, n);
	for (size_t i = 0; i < n; i++) {
		const struct kp_bundle_discount *d = s->disc[i];

		kp_cbor_put_map(w, 5);
		kp_cbor_put_tstr(w, "unit");
		kp_cbor_put_uint(w, (uint64_t)d->unit);
		kp_cbor_put_tstr(w, "percent");
		kp_cbor_put_uint(w, (uint64_t)d->percent);
		kp_cbor_put_tstr(w, "category");
		kp_cbor_put_tstr(w, d->category);
		kp_cbor_put_tstr(w, "operator");
		kp_cbor_put_tstr(w, d->operator_id);
		kp_cbor_put_tstr(w, "rounding");
		kp_cbor_put_tstr(w, ROUNDING_NAMES[d->rounding]);
	}
}

static void write_transfers(struct kp_cbor_writer *w, const struct sorted *s, size_t n)
{
	kp_cbor_put_tstr(w, "transfers");
	kp_cbor_put_array(w, n);
	for (size_t i = 0; i < n; i++) {
		const struct kp_bundle_transfer *t = s->xfer[i];

		kp_cbor_put_map(w, 5);
		kp_cbor_put_tstr(w, "to");
		kp_cbor_put_tstr(w, t->to_operator);
		kp_cbor_put_tstr(w, "max");
		kp_cbor_put_uint(w, (uint64_t)t->max_transfers);
		kp_cbor_put_tstr(w, "off");
		kp_cbor_put_int(w, t->off);
		kp_cbor_put_tstr(w, "from");
		kp_cbor_put_tstr(w, t->from_operator);
		kp_cbor_put_tstr(w, "within");
		kp_cbor_put_uint(w, (uint64_t)t->within_s);
	}
}

static void write_operator_fares(struct kp_cbor_writer *w, const struct sorted *s, size_t n)
{
	kp_cbor_put_tstr(w, "operator_fares");
	kp_cbor_put_array(w, n);
	for (size_t i = 0; i < n; i++) {
		const struct kp_bundle_operator_fare *f = s->ofares[i];

		kp_cbor_put_map(w, 3);
		kp_cbor_put_tstr(w, "feed");
		kp_cbor_put_tstr(w, f->feed_id);
		kp_cbor_put_tstr(w, "mode");
		kp_cbor_put_tstr(w, f->distance ? "distance" : "flat");
		kp_cbor_put_tstr(w, "operator");
		kp_cbor_put_tstr(w, f->operator_id);
	}
}

/* Row keys in canonical order: day?, leg?, last, open?, month?, token, closed?. */
static void write_remote(struct kp_cbor_writer *w, const struct sorted *s, size_t n)
{
	kp_cbor_put_tstr(w, "remote");
	kp_cbor_put_array(w, n);
	for (size_t i = 0; i < n; i++) {
		const struct kp_bundle_remote *r = s->remote[i];
		bool day = r->day_spent > 0, month = r->month_spent > 0, closed = r->closed_ms > 0;

		kp_cbor_put_map(w, 2 + day + (r->has_leg != 0) + (r->open != 0) + month + closed);
		if (day) {
			kp_cbor_put_tstr(w, "day");
			kp_cbor_put_array(w, 2);
			kp_cbor_put_uint(w, (uint64_t)r->day_id);
			kp_cbor_put_uint(w, (uint64_t)r->day_spent);
		}
		if (r->has_leg) {
			kp_cbor_put_tstr(w, "leg");
			kp_cbor_put_map(w, 4);
			kp_cbor_put_tstr(w, "on");
			kp_cbor_put_uint(w, (uint64_t)r->leg_on_ms);
			kp_cbor_put_tstr(w, "off");
			kp_cbor_put_uint(w, (uint64_t)r->leg_off_ms);
			kp_cbor_put_tstr(w, "amount");
			kp_cbor_put_uint(w, (uint64_t)r->leg_paid);
			kp_cbor_put_tstr(w, "operator");
			kp_cbor_put_tstr(w, r->leg_operator);
		}
		kp_cbor_put_tstr(w, "last");
		kp_cbor_put_uint(w, (uint64_t)r->last_ms);
		if (r->open) {
			kp_cbor_put_tstr(w, "open");
			kp_cbor_put_map(w, 2 + (r->open_ent > 0) + (r->open_paid != 0) +
			                (r->open_stop[0] != '\0') + (r->open_route[0] != '\0') +
			                (r->open_product[0] != '\0'));
			kp_cbor_put_tstr(w, "at");
			kp_cbor_put_uint(w, (uint64_t)r->open_ms);
			if (r->open_ent > 0) {
				kp_cbor_put_tstr(w, "ent");
				kp_cbor_put_uint(w, (uint64_t)r->open_ent);
			}
			if (r->open_paid) {
				kp_cbor_put_tstr(w, "paid");
				kp_cbor_put_uint(w, 1);
			}
			if (r->open_stop[0] != '\0') {
				kp_cbor_put_tstr(w, "stop");
				kp_cbor_put_tstr(w, r->open_stop);
			}
			if (r->open_route[0] != '\0') {
				kp_cbor_put_tstr(w, "route");
				kp_cbor_put_tstr(w, r->open_route);
			}
			if (r->open_product[0] != '\0') {
				kp_cbor_put_tstr(w, "product");
				kp_cbor_put_tstr(w, r->open_product);
			}
			kp_cbor_put_tstr(w, "operator");
			kp_cbor_put_tstr(w, r->open_operator);
		}
		if (month) {
			kp_cbor_put_tstr(w, "month");
			kp_cbor_put_array(w, 2);
			kp_cbor_put_uint(w, (uint64_t)r->month_id);
			kp_cbor_put_uint(w, (uint64_t)r->month_spent);
		}
		kp_cbor_put_tstr(w, "token");
		kp_cbor_put_bstr(w, r->token, KP_TOKEN_LEN);
		if (closed) {
			kp_cbor_put_tstr(w, "closed");
			kp_cbor_put_uint(w, (uint64_t)r->closed_ms);
		}
	}
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

static void write_scopes(struct kp_cbor_writer *w, const struct sorted *s, size_t n)
{
	kp_cbor_put_tstr(w, "scopes");
	kp_cbor_put_array(w, n);
	for (size_t i = 0; i < n; i++) {
		kp_cbor_put_map(w, 3);
		kp_cbor_put_tstr(w, "id");
		kp_cbor_put_tstr(w, s->scopes[i]->scope_id);
		kp_cbor_put_tstr(w, "kind");
		kp_cbor_put_tstr(w, SCOPE_KINDS[s->scopes[i]->network != 0]);
		kp_cbor_put_tstr(w, "product");
		kp_cbor_put_tstr(w, s->scopes[i]->product);
	}
}

/* Operators named by discounts and operator fares are in the bundle; entitlements' products
 * too, and a first-use entitlement is of a period pass. */
static bool refs_valid_sorted(const struct kp_bundle *b, const struct sorted *s)
{
	size_t i;

	for (i = 0; i < b->n_discounts; i++) {
		if (bsearch(s->disc[i]->operator_id, s->ops, b->n_operators, sizeof(*s->ops),
		            key_op_ptr) == NULL)
			return false;
	}
	for (i = 0; i < b->n_operator_fares; i++) {
		if (bsearch(s->ofares[i]->operator_id, s->ops, b->n_operators, sizeof(*s->ops),
		            key_op_ptr) == NULL)
			return false;
	}
	for (i = 0; i < b->n_entitlements; i++) {
		struct kp_bundle_product *const *p = bsearch(s->ents[i]->product, s->prods,
		                                             b->n_products, sizeof(*s->prods),
		                                             key_prod_ptr);

		if (p == NULL || (s->ents[i]->first_use && (*p)->kind != KP_PRODUCT_PERIOD))
			return false;
	}
	for (i = 0; i < b->n_scopes; i++) {
		if (bsearch(s->scopes[i]->product, s->prods, b->n_products, sizeof(*s->prods),
		            key_prod_ptr) == NULL)
			return false;
	}
	return true;
}

int kp_bundle_encode(const struct kp_bundle *b, uint8_t **out, size_t *out_len)
{
	struct kp_cbor_writer w = { 0 };
	struct sorted s;
	bool fmt2;
	size_t i, keys;
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
	keys = BUNDLE_KEYS + (b->n_eligibility > 0) + (b->n_caps > 0) + (b->n_feeds > 0) +
	       (b->n_discounts > 0) + (b->n_transfers > 0) + (b->n_operator_fares > 0) +
	       (b->n_remote > 0) + (b->n_scopes > 0) + !policy_default(&b->policy);
	kp_cbor_put_map(&w, keys);
	kp_cbor_put_tstr(&w, "v");
	kp_cbor_put_uint(&w, (uint64_t)fmt);
	if (b->n_caps > 0)
		write_caps(&w, &s, b->n_caps);
	kp_cbor_put_tstr(&w, "acked");
	kp_cbor_put_uint(&w, b->acked);
	if (b->n_feeds > 0)
		write_feeds(&w, &s, b->n_feeds);
	kp_cbor_put_tstr(&w, "issued");
	kp_cbor_put_uint(&w, (uint64_t)b->issued_ms);
	if (!policy_default(&b->policy))
		write_policy(&w, &b->policy);
	if (b->n_remote > 0)
		write_remote(&w, &s, b->n_remote);
	if (b->n_scopes > 0)
		write_scopes(&w, &s, b->n_scopes);
	kp_cbor_put_tstr(&w, "version");
	kp_cbor_put_uint(&w, b->version);
	kp_cbor_put_tstr(&w, "denylist");
	kp_cbor_put_array(&w, b->n_denylist);
	for (i = 0; i < b->n_denylist; i++) {
		kp_cbor_put_map(&w, 2);
		kp_cbor_put_tstr(&w, "token");
		kp_cbor_put_bstr(&w, s.deny[i]->token, KP_TOKEN_LEN);
		kp_cbor_put_tstr(&w, "reason");
		kp_cbor_put_tstr(&w, s.deny[i]->reason);
	}
	kp_cbor_put_tstr(&w, "products");
	kp_cbor_put_array(&w, b->n_products);
	for (i = 0; i < b->n_products && rc == KP_SYNC_OK; i++)
		rc = product_write(&w, s.prods[i], s.ops, b->n_operators, fmt2);
	if (rc != KP_SYNC_OK)
		goto out;
	kp_cbor_put_tstr(&w, "terminal");
	kp_cbor_put_tstr(&w, b->terminal);
	if (b->n_discounts > 0)
		write_discounts(&w, &s, b->n_discounts);
	kp_cbor_put_tstr(&w, "operators");
	kp_cbor_put_array(&w, b->n_operators);
	for (i = 0; i < b->n_operators; i++) {
		kp_cbor_put_map(&w, 2);
		kp_cbor_put_tstr(&w, "id");
		kp_cbor_put_tstr(&w, s.ops[i]->id);
		kp_cbor_put_tstr(&w, "name");
		kp_cbor_put_tstr(&w, s.ops[i]->name);
	}
	if (b->n_transfers > 0)
		write_transfers(&w, &s, b->n_transfers);
	if (b->n_eligibility > 0) {
		kp_cbor_put_tstr(&w, "eligibility");
		kp_cbor_put_array(&w, b->n_eligibility);
	}
	for (i = 0; i < b->n_eligibility; i++) {
		const struct kp_bundle_eligibility *e = s.elig[i];

		kp_cbor_put_map(&w, e->has_via ? 5 : 4);
		if (e->has_via) {
			kp_cbor_put_tstr(&w, "via");
			kp_cbor_put_bstr(&w, e->via, KP_TOKEN_LEN);
		}
		kp_cbor_put_tstr(&w, "from");
		kp_cbor_put_uint(&w, (uint64_t)e->valid_from_ms);
		kp_cbor_put_tstr(&w, "token");
		kp_cbor_put_bstr(&w, e->token, KP_TOKEN_LEN);
		kp_cbor_put_tstr(&w, "until");
		kp_cbor_put_uint(&w, (uint64_t)e->valid_until_ms);
		kp_cbor_put_tstr(&w, "category");
		kp_cbor_put_tstr(&w, e->category);
	}
	kp_cbor_put_tstr(&w, "entitlements");
	kp_cbor_put_array(&w, b->n_entitlements);
	for (i = 0; i < b->n_entitlements; i++) {
		const struct kp_bundle_entitlement *e = s.ents[i];

		kp_cbor_put_map(&w, 6 + (e->first_use != 0));
		kp_cbor_put_tstr(&w, "id");
		kp_cbor_put_uint(&w, (uint64_t)e->id);
		kp_cbor_put_tstr(&w, "from");
		kp_cbor_put_uint(&w, (uint64_t)e->valid_from_ms);
		kp_cbor_put_tstr(&w, "token");
		kp_cbor_put_bstr(&w, e->token, KP_TOKEN_LEN);
		kp_cbor_put_tstr(&w, "until");
		kp_cbor_put_uint(&w, (uint64_t)e->valid_until_ms);
		kp_cbor_put_tstr(&w, "product");
		kp_cbor_put_tstr(&w, e->product);
		if (e->first_use) {
			kp_cbor_put_tstr(&w, "first_use");
			kp_cbor_put_uint(&w, 1);
		}
		kp_cbor_put_tstr(&w, "remaining");
		kp_cbor_put_uint(&w, (uint64_t)e->remaining);
	}
	if (b->n_operator_fares > 0)
		write_operator_fares(&w, &s, b->n_operator_fares);
	rc = kp_cbor_sync_rc(kp_cbor_writer_finish(&w, out, out_len));
out:
	kp_cbor_writer_free(&w);
	sorted_free(&s);
	return rc;
}

/* ---- decoding ---- */

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

static int map_head(struct kp_cbor_reader *r, uint64_t want)
{
	uint64_t n;
	int rc = kp_cbor_read_map(r, &n);

	if (rc == KP_RECORD_OK && n != want)
		rc = KP_RECORD_E_MALFORMED;
	return rc;
}

/* The next map key, which must be one of names[] (canonical order) after *last: its index
 * in *idx. Keeps keys known, in order and unique. */
static int next_key(struct kp_cbor_reader *r, const char *const *names, size_t n, int *last,
                    int *idx)
{
	char key[32];
	int rc = kp_cbor_read_text(r, key, sizeof(key), false);

	if (rc != KP_RECORD_OK)
		return KP_RECORD_E_MALFORMED;
	for (size_t i = (size_t)(*last + 1); i < n; i++) {
		if (strcmp(key, names[i]) == 0) {
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

static int deny_read(struct kp_cbor_reader *r, struct kp_bundle_deny *d, int fmt)
{
	int rc = map_head(r, 2);

	(void)fmt;
	if (rc == KP_RECORD_OK)
		rc = kp_cbor_read_key(r, "token");
	if (rc == KP_RECORD_OK)
		rc = kp_cbor_read_bstr_exact(r, d->token, KP_TOKEN_LEN);
	if (rc == KP_RECORD_OK)
		rc = kp_cbor_read_key(r, "reason");
	if (rc == KP_RECORD_OK)
		rc = read_bundle_text(r, d->reason);
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
		rc = next_key(r, PRODUCT_KEYS, PK_COUNT, &last, &idx);
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

static int operator_read(struct kp_cbor_reader *r, struct kp_bundle_operator *o, int fmt)
{
	int rc = map_head(r, 2);

	(void)fmt;
	if (rc == KP_RECORD_OK)
		rc = kp_cbor_read_key(r, "id");
	if (rc == KP_RECORD_OK)
		rc = kp_cbor_read_id(r, o->id);
	if (rc == KP_RECORD_OK)
		rc = kp_cbor_read_key(r, "name");
	if (rc == KP_RECORD_OK)
		rc = read_bundle_text(r, o->name);
	return rc;
}

static int entitlement_read(struct kp_cbor_reader *r, struct kp_bundle_entitlement *e, int fmt)
{
	uint64_t keys = 0, one = 0;
	int rc = kp_cbor_read_map(r, &keys);

	if (rc == KP_RECORD_OK && keys != 6 && (fmt == 1 || keys != 7))
		rc = KP_RECORD_E_MALFORMED;
	if (rc == KP_RECORD_OK)
		rc = kp_cbor_read_key(r, "id");
	if (rc == KP_RECORD_OK)
		rc = kp_cbor_read_uint63(r, &e->id);
	if (rc == KP_RECORD_OK)
		rc = kp_cbor_read_key(r, "from");
	if (rc == KP_RECORD_OK)
		rc = kp_cbor_read_uint63(r, &e->valid_from_ms);
	if (rc == KP_RECORD_OK)
		rc = kp_cbor_read_key(r, "token");
	if (rc == KP_RECORD_OK)
		rc = kp_cbor_read_bstr_exact(r, e->token, KP_TOKEN_LEN);
	if (rc == KP_RECORD_OK)
		rc = kp_cbor_read_key(r, "until");
	if (rc == KP_RECORD_OK)
		rc = kp_cbor_read_uint63(r, &e->valid_until_ms);
	if (rc == KP_RECORD_OK)
		rc = kp_cbor_read_key(r, "product");
	if (rc == KP_RECORD_OK)
		rc = kp_cbor_read_id(r, e->product);
	if (rc == KP_RECORD_OK && keys == 7) {
		/* present only when set: 1 */
		rc = kp_cbor_read_key(r, "first_use");
		if (rc == KP_RECORD_OK)
			rc = kp_cbor_read_uint(r, &one);
		if (rc == KP_RECORD_OK && one != 1)
			rc = KP_RECORD_E_MALFORMED;
		e->first_use = 1;
	}
	if (rc == KP_RECORD_OK)
		rc = kp_cbor_read_key(r, "remaining");
	if (rc == KP_RECORD_OK)
		rc = kp_cbor_read_uint63(r, &e->remaining);
	if (rc == KP_RECORD_OK && (e->id < 1 || e->valid_until_ms < e->valid_from_ms))
		rc = KP_RECORD_E_MALFORMED;
	return rc;
}

static int eligibility_read(struct kp_cbor_reader *r, struct kp_bundle_eligibility *e, int fmt)
{
	uint64_t keys = 0;
	int rc = kp_cbor_read_map(r, &keys);

	(void)fmt;
	if (rc == KP_RECORD_OK && keys != 4 && keys != 5)
		rc = KP_RECORD_E_MALFORMED;
	if (rc == KP_RECORD_OK && keys == 5) {
		e->has_via = 1;
		rc = kp_cbor_read_key(r, "via");
		if (rc == KP_RECORD_OK)
			rc = kp_cbor_read_bstr_exact(r, e->via, KP_TOKEN_LEN);
	}
	if (rc == KP_RECORD_OK)
		rc = kp_cbor_read_key(r, "from");
	if (rc == KP_RECORD_OK)
		rc = kp_cbor_read_uint63(r, &e->valid_from_ms);
	if (rc == KP_RECORD_OK)
		rc = kp_cbor_read_key(r, "token");
	if (rc == KP_RECORD_OK)
		rc = kp_cbor_read_bstr_exact(r, e->token, KP_TOKEN_LEN);
	if (rc == KP_RECORD_OK)
		rc = kp_cbor_read_key(r, "until");
	if (rc == KP_RECORD_OK)
		rc = kp_cbor_read_uint63(r, &e->valid_until_ms);
	if (rc == KP_RECORD_OK)
		rc = kp_cbor_read_key(r, "category");
	if (rc == KP_RECORD_OK)
		rc = kp_cbor_read_id(r, e->category);
	if (rc == KP_RECORD_OK && e->valid_until_ms < e->valid_from_ms)
		rc = KP_RECORD_E_MALFORMED;
	return rc;
}

static int discount_read(struct kp_cbor_reader *r, struct kp_bundle_discount *d, int fmt)
{
	int64_t v = 0;
	int rc = map_head(r, 5);

	(void)fmt;
	if (rc == KP_RECORD_OK)
		rc = kp_cbor_read_key(r, "unit");
	if (rc == KP_RECORD_OK)
		rc = read_range(r, 1, 100000, &d->unit);
	if (rc == KP_RECORD_OK)
		rc = kp_cbor_read_key(r, "percent");
	if (rc == KP_RECORD_OK)
		rc = read_range(r, 0, 100, &v);
	d->percent = (int)v;
	if (rc == KP_RECORD_OK)
		rc = kp_cbor_read_key(r, "category");
	if (rc == KP_RECORD_OK)
		rc = kp_cbor_read_id(r, d->category);
	if (rc == KP_RECORD_OK)
		rc = kp_cbor_read_key(r, "operator");
	if (rc == KP_RECORD_OK)
		rc = kp_cbor_read_id(r, d->operator_id);
	if (rc == KP_RECORD_OK)
		rc = kp_cbor_read_key(r, "rounding");
	if (rc == KP_RECORD_OK)
		rc = read_enum(r, ROUNDING_NAMES, 3, &d->rounding);
	return rc;
}

static int cap_read(struct kp_cbor_reader *r, struct kp_bundle_cap *c, int fmt)
{
	uint64_t keys = 0;
	int rc = kp_cbor_read_map(r, &keys);

	(void)fmt;
	if (rc == KP_RECORD_OK && keys != 2 && keys != 3)
		rc = KP_RECORD_E_MALFORMED;
	if (rc == KP_RECORD_OK)
		rc = kp_cbor_read_key(r, "amount");
	if (rc == KP_RECORD_OK)
		rc = read_range(r, 0, 1000000000000LL, &c->amount);
	if (rc == KP_RECORD_OK)
		rc = kp_cbor_read_key(r, "period");
	if (rc == KP_RECORD_OK)
		rc = read_enum(r, PERIOD_NAMES, 2, &c->period);
	if (rc == KP_RECORD_OK && keys == 3) {
		rc = kp_cbor_read_key(r, "category");
		if (rc == KP_RECORD_OK)
			rc = kp_cbor_read_id(r, c->category);  /* adults: no key, never "" */
	}
	return rc;
}

static int transfer_read(struct kp_cbor_reader *r, struct kp_bundle_transfer *t, int fmt)
{
	int64_t v = 0;
	int rc = map_head(r, 5);

	(void)fmt;
	if (rc == KP_RECORD_OK)
		rc = kp_cbor_read_key(r, "to");
	if (rc == KP_RECORD_OK)
		rc = kp_cbor_read_id(r, t->to_operator);
	if (rc == KP_RECORD_OK)
		rc = kp_cbor_read_key(r, "max");
	if (rc == KP_RECORD_OK)
		rc = read_range(r, 1, 100, &v);
	t->max_transfers = (int)v;
	if (rc == KP_RECORD_OK)
		rc = kp_cbor_read_key(r, "off");
	if (rc == KP_RECORD_OK)
		rc = read_range(r, -1, 1000000000000LL, &t->off);
	if (rc == KP_RECORD_OK)
		rc = kp_cbor_read_key(r, "from");
	if (rc == KP_RECORD_OK)
		rc = kp_cbor_read_id(r, t->from_operator);
	if (rc == KP_RECORD_OK)
		rc = kp_cbor_read_key(r, "within");
	if (rc == KP_RECORD_OK)
		rc = read_range(r, 60, 86400, &v);
	t->within_s = (int)v;
	if (rc == KP_RECORD_OK && (!op_or_any(t->from_operator) || !op_or_any(t->to_operator)))
		rc = KP_RECORD_E_MALFORMED;
	return rc;
}

static const char *const MODE_NAMES[] = { "flat", "distance" };

static int ofare_read(struct kp_cbor_reader *r, struct kp_bundle_operator_fare *f, int fmt)
{
	int rc = map_head(r, 3);

	(void)fmt;
	if (rc == KP_RECORD_OK)
		rc = kp_cbor_read_key(r, "feed");
	if (rc == KP_RECORD_OK)
		rc = kp_cbor_read_id(r, f->feed_id);
	if (rc == KP_RECORD_OK)
		rc = kp_cbor_read_key(r, "mode");
	if (rc == KP_RECORD_OK)
		rc = read_enum(r, MODE_NAMES, 2, &f->distance);
	if (rc == KP_RECORD_OK)
		rc = kp_cbor_read_key(r, "operator");
	if (rc == KP_RECORD_OK)
		rc = kp_cbor_read_id(r, f->operator_id);
	return rc;
}

/* A feed: its package is checked table by table and against its digest. The error text
 * of a bad package goes to the decoder's err through feed_err. */
static _Thread_local struct derr *feed_err;
static _Thread_local bool feed_toobig;

static int feed_read(struct kp_cbor_reader *r, struct kp_bundle_feed *f, int fmt)
{
	const uint8_t *pkg = NULL;
	size_t len = 0;
	uint8_t digest[KP_SHA256_LEN];
	char why[256];
	int rc = map_head(r, 3);

	(void)fmt;
	if (rc == KP_RECORD_OK)
		rc = kp_cbor_read_key(r, "id");
	if (rc == KP_RECORD_OK)
		rc = kp_cbor_read_id(r, f->id);
	if (rc == KP_RECORD_OK)
		rc = kp_cbor_read_key(r, "digest");
	if (rc == KP_RECORD_OK)
		rc = kp_cbor_read_bstr_exact(r, f->digest, KP_SHA256_LEN);
	if (rc == KP_RECORD_OK)
		rc = kp_cbor_read_key(r, "package");
	if (rc == KP_RECORD_OK)
		rc = kp_cbor_read_bstr(r, &pkg, &len);
	if (rc != KP_RECORD_OK)
		return rc;
	rc = kp_fare_pkg_walk(pkg, len, -1, NULL, NULL, NULL, why, sizeof(why));
	if (rc != KP_SYNC_OK) {
		dfail(feed_err, rc, "feed %s: %s", f->id, why);
		feed_toobig = rc == KP_SYNC_E_TOOBIG;
		return rc == KP_SYNC_E_TOOBIG ? KP_RECORD_E_INVAL : KP_RECORD_E_MALFORMED;
	}
	if (kp_sha256(pkg, len, digest) != 0 || memcmp(digest, f->digest, KP_SHA256_LEN) != 0) {
		dfail(feed_err, KP_SYNC_E_MALFORMED, "feed %s: digest does not match its package",
		      f->id);
		return KP_RECORD_E_MALFORMED;
	}
	f->package = malloc(len);
	if (f->package == NULL)
		return KP_RECORD_E_NOMEM;
	memcpy(f->package, pkg, len);
	f->package_len = len;
	return KP_RECORD_OK;
}

/* [id, spent]: spent > 0 (none is written as no key). */
static int spent_read(struct kp_cbor_reader *r, int64_t *id, int64_t *spent)
{
	uint64_t n = 0;
	int rc = kp_cbor_read_array(r, &n);

	if (rc == KP_RECORD_OK && n != 2)
		rc = KP_RECORD_E_MALFORMED;
	if (rc == KP_RECORD_OK)
		rc = kp_cbor_read_uint63(r, id);
	if (rc == KP_RECORD_OK)
		rc = read_range(r, 1, SPENT_MAX, spent);
	return rc;
}

enum { OK_AT, OK_ENT, OK_PAID, OK_STOP, OK_ROUTE, OK_PRODUCT, OK_OPERATOR, OK_COUNT };
static const char *const OPEN_KEYS[OK_COUNT] = { "at", "ent", "paid", "stop", "route",
	"product", "operator" };

static int open_read(struct kp_cbor_reader *r, struct kp_bundle_remote *x)
{
	uint64_t keys = 0, one = 0;
	unsigned seen = 0;
	int last = -1, idx = 0;
	int rc = kp_cbor_read_map(r, &keys);

	if (rc == KP_RECORD_OK && (keys < 2 || keys > OK_COUNT))
		rc = KP_RECORD_E_MALFORMED;
	for (uint64_t k = 0; rc == KP_RECORD_OK && k < keys; k++) {
		rc = next_key(r, OPEN_KEYS, OK_COUNT, &last, &idx);
		if (rc != KP_RECORD_OK)
			break;
		seen |= 1u << idx;
		switch (idx) {
		case OK_AT:       rc = read_range(r, 1, INT64_MAX, &x->open_ms); break;
		case OK_ENT:      rc = read_range(r, 1, INT64_MAX, &x->open_ent); break;
		case OK_PAID:
			/* present only when set: 1 */
			rc = kp_cbor_read_uint(r, &one);
			if (rc == KP_RECORD_OK && one != 1)
				rc = KP_RECORD_E_MALFORMED;
			x->open_paid = 1;
			break;
		case OK_STOP:     rc = kp_cbor_read_id(r, x->open_stop); break;
		case OK_ROUTE:    rc = kp_cbor_read_id(r, x->open_route); break;
		case OK_PRODUCT:  rc = kp_cbor_read_id(r, x->open_product); break;
		case OK_OPERATOR: rc = kp_cbor_read_id(r, x->open_operator); break;
		}
	}
	if (rc == KP_RECORD_OK && (seen & (1u << OK_AT | 1u << OK_OPERATOR)) !=
	                          (1u << OK_AT | 1u << OK_OPERATOR))
		rc = KP_RECORD_E_MALFORMED;
	x->open = 1;
	return rc;
}

static int leg_read(struct kp_cbor_reader *r, struct kp_bundle_remote *x)
{
	int rc = map_head(r, 4);

	if (rc == KP_RECORD_OK)
		rc = kp_cbor_read_key(r, "on");
	if (rc == KP_RECORD_OK)
		rc = kp_cbor_read_uint63(r, &x->leg_on_ms);
	if (rc == KP_RECORD_OK)
		rc = kp_cbor_read_key(r, "off");
	if (rc == KP_RECORD_OK)
		rc = kp_cbor_read_uint63(r, &x->leg_off_ms);
	if (rc == KP_RECORD_OK)
		rc = kp_cbor_read_key(r, "amount");
	if (rc == KP_RECORD_OK)
		rc = read_range(r, 1, SPENT_MAX, &x->leg_paid);
	if (rc == KP_RECORD_OK)
		rc = kp_cbor_read_key(r, "operator");
	if (rc == KP_RECORD_OK)
		rc = kp_cbor_read_id(r, x->leg_operator);
	if (rc == KP_RECORD_OK && x->leg_off_ms < x->leg_on_ms)
		rc = KP_RECORD_E_MALFORMED;
	x->has_leg = 1;
	return rc;
}

enum { RK_DAY, RK_LEG, RK_LAST, RK_OPEN, RK_MONTH, RK_TOKEN, RK_CLOSED, RK_COUNT };
static const char *const REMOTE_KEYS[RK_COUNT] = { "day", "leg", "last", "open", "month",
	"token", "closed" };

static int remote_read(struct kp_cbor_reader *r, struct kp_bundle_remote *x, int fmt)
{
	uint64_t keys = 0;
	unsigned seen = 0;
	int last = -1, idx = 0;
	int rc = kp_cbor_read_map(r, &keys);

	(void)fmt;
	if (rc == KP_RECORD_OK && (keys < 2 || keys > RK_COUNT))
		rc = KP_RECORD_E_MALFORMED;
	for (uint64_t k = 0; rc == KP_RECORD_OK && k < keys; k++) {
		rc = next_key(r, REMOTE_KEYS, RK_COUNT, &last, &idx);
		if (rc != KP_RECORD_OK)
			break;
		seen |= 1u << idx;
		switch (idx) {
		case RK_DAY:    rc = spent_read(r, &x->day_id, &x->day_spent); break;
		case RK_LEG:    rc = leg_read(r, x); break;
		case RK_LAST:   rc = kp_cbor_read_uint63(r, &x->last_ms); break;
		case RK_OPEN:   rc = open_read(r, x); break;
		case RK_MONTH:  rc = spent_read(r, &x->month_id, &x->month_spent); break;
		case RK_TOKEN:  rc = kp_cbor_read_bstr_exact(r, x->token, KP_TOKEN_LEN); break;
		case RK_CLOSED: rc = read_range(r, 1, INT64_MAX, &x->closed_ms); break;
		}
	}
	if (rc == KP_RECORD_OK && (seen & (1u << RK_LAST | 1u << RK_TOKEN)) !=
	                          (1u << RK_LAST | 1u << RK_TOKEN))
		rc = KP_RECORD_E_MALFORMED;
	if (rc == KP_RECORD_OK && !remote_valid(x))
		rc = KP_RECORD_E_MALFORMED;
	return rc;
}

static int scope_read(struct kp_cbor_reader *r, struct kp_bundle_scope *c, int fmt)
{
	int rc = map_head(r, 3);

	(void)fmt;
	if (rc == KP_RECORD_OK)
		rc = kp_cbor_read_key(r, "id");
	if (rc == KP_RECORD_OK)
		rc = kp_cbor_read_id(r, c->scope_id);
	if (rc == KP_RECORD_OK)
		rc = kp_cbor_read_key(r, "kind");
	if (rc == KP_RECORD_OK)
		rc = read_enum(r, SCOPE_KINDS, 2, &c->network);
	if (rc == KP_RECORD_OK)
		rc = kp_cbor_read_key(r, "product");
	if (rc == KP_RECORD_OK)
		rc = kp_cbor_read_id(r, c->product);
	return rc;
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
			rc = next_key(r, DIRECT_KEYS, PD_COUNT, &last, &idx);
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

#define READ_V(name, fn, type)                                                   \
	static int name(struct kp_cbor_reader *r, void *el, int fmt) { return fn(r, (type *)el, fmt); }
READ_V(deny_read_v, deny_read, struct kp_bundle_deny)
READ_V(product_read_v, product_read, struct kp_bundle_product)
READ_V(operator_read_v, operator_read, struct kp_bundle_operator)
READ_V(ent_read_v, entitlement_read, struct kp_bundle_entitlement)
READ_V(elig_read_v, eligibility_read, struct kp_bundle_eligibility)
READ_V(disc_read_v, discount_read, struct kp_bundle_discount)
READ_V(cap_read_v, cap_read, struct kp_bundle_cap)
READ_V(xfer_read_v, transfer_read, struct kp_bundle_transfer)
READ_V(ofare_read_v, ofare_read, struct kp_bundle_operator_fare)
READ_V(feed_read_v, feed_read, struct kp_bundle_feed)
READ_V(remote_read_v, remote_read, struct kp_bundle_remote)
READ_V(scope_read_v, scope_read, struct kp_bundle_scope)
#undef READ_V

struct array_spec {
	size_t max, min_size, elem;
	int (*read)(struct kp_cbor_reader *r, void *el, int fmt);
	int (*cmp)(const void *a, const void *b);
};

/* "key": [elements] into a growing *arr; each element must sort strictly after the one
 * before. Returns a KP_SYNC_* code; *arr is the caller's to free also on failure (with
 * *count elements complete, and one more partly read ones' allocations: see free_partial). */
static int array_read(struct kp_cbor_reader *r, const struct array_spec *s, void **arr,
                      size_t *count, int fmt)
{
	size_t claimed = 0, cap = 0;
	uint64_t n;
	uint8_t *el;
	int rc = kp_cbor_sync_rc(kp_cbor_read_array(r, &n));

	if (rc != KP_SYNC_OK)
		return rc;
	if (n > s->max)
		return KP_SYNC_E_TOOBIG;
	if (n > (r->len - r->pos) / s->min_size)
		return KP_SYNC_E_MALFORMED;
	claimed = (size_t)n;
	while (rc == KP_SYNC_OK && *count < claimed) {
		rc = kp_cbor_sync_rc(grow(arr, &cap, *count, claimed, s->elem));
		if (rc != KP_SYNC_OK)
			break;
		el = (uint8_t *)*arr + *count * s->elem;
		memset(el, 0, s->elem);
		rc = kp_cbor_sync_rc(s->read(r, el, fmt));
		if (rc == KP_SYNC_OK && *count > 0 && s->cmp(el - s->elem, el) >= 0)
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

/* The top-level keys in canonical order; V1: allowed in format 1; REQ: required. */
enum { TK_V, TK_CAPS, TK_ACKED, TK_FEEDS, TK_ISSUED, TK_POLICY, TK_REMOTE, TK_SCOPES, TK_VERSION,
       TK_DENYLIST, TK_PRODUCTS, TK_TERMINAL, TK_DISCOUNTS, TK_OPERATORS, TK_TRANSFERS,
       TK_ELIGIBILITY, TK_ENTITLEMENTS, TK_OPERATOR_FARES, TK_COUNT };
static const char *const TOP_KEYS[TK_COUNT] = { "v", "caps", "acked", "feeds", "issued",
	"policy", "remote", "scopes", "version", "denylist", "products", "terminal", "discounts",
	"operators", "transfers", "eligibility", "entitlements", "operator_fares" };
#define TK_REQUIRED (1u << TK_ACKED | 1u << TK_ISSUED | 1u << TK_VERSION | 1u << TK_DENYLIST | \
                     1u << TK_PRODUCTS | 1u << TK_TERMINAL | 1u << TK_OPERATORS |              \
                     1u << TK_ENTITLEMENTS)
#define TK_FORMAT1 (TK_REQUIRED | 1u << TK_ELIGIBILITY)
#define TK_FORMAT3 (1u << TK_REMOTE | 1u << TK_SCOPES)
#define TK_FORMAT4 (1u << TK_POLICY)

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
		static const struct array_spec specs[TK_COUNT] = {
			[TK_CAPS] = { KP_BUNDLE_CAPS_MAX, MIN_CAP, sizeof(struct kp_bundle_cap),
			              cap_read_v, cap_cmp },
			[TK_FEEDS] = { KP_BUNDLE_FEEDS_MAX, MIN_FEED, sizeof(struct kp_bundle_feed),
			               feed_read_v, feed_cmp },
			[TK_REMOTE] = { KP_BUNDLE_REMOTE_MAX, MIN_REMOTE, sizeof(struct kp_bundle_remote),
			                remote_read_v, remote_cmp },
			[TK_SCOPES] = { KP_BUNDLE_SCOPES_MAX, MIN_SCOPE, sizeof(struct kp_bundle_scope),
			                scope_read_v, scope_cmp },
			[TK_DENYLIST] = { KP_BUNDLE_DENYLIST_MAX, MIN_DENY,
			                  sizeof(struct kp_bundle_deny), deny_read_v, deny_cmp },
			[TK_PRODUCTS] = { KP_BUNDLE_PRODUCTS_MAX, MIN_PRODUCT,
			                  sizeof(struct kp_bundle_product), product_read_v, prod_cmp },
			[TK_DISCOUNTS] = { KP_BUNDLE_DISCOUNTS_MAX, MIN_DISCOUNT,
			                   sizeof(struct kp_bundle_discount), disc_read_v, disc_cmp },
			[TK_OPERATORS] = { KP_BUNDLE_OPERATORS_MAX, MIN_OPERATOR,
			                   sizeof(struct kp_bundle_operator), operator_read_v, op_cmp },
			[TK_TRANSFERS] = { KP_BUNDLE_TRANSFERS_MAX, MIN_TRANSFER,
			                   sizeof(struct kp_bundle_transfer), xfer_read_v, xfer_cmp },
			[TK_ELIGIBILITY] = { KP_BUNDLE_ELIGIBILITY_MAX, MIN_ELIGIBILITY,
			                     sizeof(struct kp_bundle_eligibility), elig_read_v,
			                     elig_cmp },
			[TK_ENTITLEMENTS] = { KP_BUNDLE_ENTITLEMENTS_MAX, MIN_ENTITLEMENT,
			                      sizeof(struct kp_bundle_entitlement), ent_read_v,
			                      ent_cmp },
			[TK_OPERATOR_FARES] = { KP_BUNDLE_OPERATOR_FARES_MAX, MIN_OPERATOR_FARE,
			                        sizeof(struct kp_bundle_operator_fare), ofare_read_v,
			                        ofare_cmp },
		};
		void **arr = NULL;
		size_t *count = NULL;

		rc = kp_cbor_sync_rc(next_key(&r, TOP_KEYS, TK_COUNT, &last, &idx));
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
		case TK_CAPS:          arr = (void **)&b->caps;           count = &b->n_caps; break;
		case TK_FEEDS:         arr = (void **)&b->feeds;          count = &b->n_feeds; break;
		case TK_REMOTE:        arr = (void **)&b->remote;         count = &b->n_remote; break;
		case TK_SCOPES:        arr = (void **)&b->scopes;         count = &b->n_scopes; break;
		case TK_DENYLIST:      arr = (void **)&b->denylist;       count = &b->n_denylist; break;
		case TK_PRODUCTS:      arr = (void **)&b->products;       count = &b->n_products; break;
		case TK_DISCOUNTS:     arr = (void **)&b->discounts;      count = &b->n_discounts; break;
		case TK_OPERATORS:     arr = (void **)&b->operators;      count = &b->n_operators; break;
		case TK_TRANSFERS:     arr = (void **)&b->transfers;      count = &b->n_transfers; break;
		case TK_ELIGIBILITY:   arr = (void **)&b->eligibility;    count = &b->n_eligibility; break;
		case TK_ENTITLEMENTS:  arr = (void **)&b->entitlements;   count = &b->n_entitlements; break;
		case TK_OPERATOR_FARES: arr = (void **)&b->operator_fares; count = &b->n_operator_fares; break;
		default:               rc = KP_SYNC_E_MALFORMED; continue;
		}
		rc = array_read(&r, &specs[idx], arr, count, b->format);
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
	free(b->operators);
	free(b->products);
	free(b->entitlements);
	free(b->denylist);
	free(b->eligibility);
	free(b->discounts);
	free(b->caps);
	free(b->transfers);
	free(b->operator_fares);
	free(b->feeds);
	free(b->remote);
	free(b->scopes);
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
	rc = kp_cose_sign1(key, KP_BUNDLE_KID, payload, payload_len, out, out_len);
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

int kp_bundle_open_err(const kp_cert *backend_cert, const uint8_t *cose, size_t len,
                       const char *terminal, uint64_t have_version, struct kp_bundle *b,
                       char *err, size_t err_cap)
{
	const uint8_t *payload = NULL;
	size_t payload_len = 0;
	char kid[KP_ID_MAX + 1], shown[2][KP_ID_MAX + 1];
	int rc;

	if (err != NULL && err_cap > 0)
		err[0] = '\0';
	if (b != NULL)
		memset(b, 0, sizeof(*b));
	if (backend_cert == NULL || (cose == NULL && len > 0) || terminal == NULL || b == NULL) {
		set_err(err, err_cap, "invalid argument");
		return KP_SYNC_E_INVAL;
	}
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
		kp_cbor_text_printable(shown[0], sizeof(shown[0]), kid, strlen(kid));
		set_err(err, err_cap, "bundle is signed with kid '%s', not '%s'", shown[0],
		        KP_BUNDLE_KID);
		return KP_SYNC_E_MALFORMED;
	}
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
