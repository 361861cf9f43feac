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
 * one encoding. */
#include "kp_sync.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cbor_util.h"

#define BUNDLE_FORMAT 1
#define BUNDLE_KEYS   9         /* 10 with "eligibility" */

/* Lower bounds of one element's encoding (every key, the shortest values): a claimed count
 * above remaining bytes / this cannot be true and is refused before anything is allocated. */
#define MIN_OPERATOR    12      /* {"id": 1 char, "name": ""} */
#define MIN_PRODUCT     30
#define MIN_ENTITLEMENT 62
#define MIN_DENY        32
#define MIN_ELIGIBILITY 48      /* {"from": 0, "token": 16 bytes, "until": 0, "category": 1 char} */

/* ---- the canonical order ---- */

static int ent_cmp(const struct kp_bundle_entitlement *a, const struct kp_bundle_entitlement *b)
{
	int c = memcmp(a->token, b->token, KP_TOKEN_LEN);

	if (c != 0)
		return c;
	return (a->id > b->id) - (a->id < b->id);
}

static int deny_cmp(const struct kp_bundle_deny *a, const struct kp_bundle_deny *b)
{
	return memcmp(a->token, b->token, KP_TOKEN_LEN);
}

static int elig_cmp(const struct kp_bundle_eligibility *a, const struct kp_bundle_eligibility *b)
{
	int c = memcmp(a->token, b->token, KP_TOKEN_LEN);

	return c != 0 ? c : strcmp(a->category, b->category);
}

/* Ids compare bytewise (strcmp), as SQLite's ORDER BY does with the BINARY collation. */
static int qs_op(const void *a, const void *b)
{
	const struct kp_bundle_operator *x = *(const void *const *)a, *y = *(const void *const *)b;

	return strcmp(x->id, y->id);
}

static int qs_prod(const void *a, const void *b)
{
	const struct kp_bundle_product *x = *(const void *const *)a, *y = *(const void *const *)b;

	return strcmp(x->id, y->id);
}

static int qs_ent(const void *a, const void *b)
{
	return ent_cmp(*(const void *const *)a, *(const void *const *)b);
}

static int qs_deny(const void *a, const void *b)
{
	return deny_cmp(*(struct kp_bundle_deny *const *)a, *(struct kp_bundle_deny *const *)b);
}

static int qs_elig(const void *a, const void *b)
{
	return elig_cmp(*(struct kp_bundle_eligibility *const *)a,
	                *(struct kp_bundle_eligibility *const *)b);
}

static int qs_str(const void *a, const void *b)
{
	return strcmp(*(const char *const *)a, *(const char *const *)b);
}

/* Pointers to the n elements of arr (of size elem) in canonical order, or NULL when out of
 * memory (n == 0 gives a valid empty allocation). Sorting is skipped for sorted input. */
static const void **sorted_ptrs(const void *arr, size_t n, size_t elem,
                                int (*cmp)(const void *, const void *))
{
	const void **p = malloc((n > 0 ? n : 1) * sizeof(*p));
	bool sorted = true;
	size_t i;

	if (p == NULL)
		return NULL;
	for (i = 0; i < n; i++) {
		p[i] = (const uint8_t *)arr + i * elem;
		if (i > 0 && sorted && cmp(&p[i - 1], &p[i]) > 0)
			sorted = false;
	}
	if (!sorted)
		qsort(p, n, sizeof(*p), cmp);
	return p;
}

/* Strictly increasing: sorted and no two equal. */
static bool strictly_increasing(const void **p, size_t n, int (*cmp)(const void *, const void *))
{
	for (size_t i = 1; i < n; i++) {
		if (cmp(&p[i - 1], &p[i]) >= 0)
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

/* ---- encoding ---- */

static int elements_check(const struct kp_bundle *b)
{
	size_t i, j;

	for (i = 0; i < b->n_operators; i++) {
		const struct kp_bundle_operator *o = &b->operators[i];

		if (!kp_cbor_id_valid(o->id, false) || !kp_cbor_text_valid(o->name, sizeof(o->name), true))
			return KP_SYNC_E_INVAL;
	}
	for (i = 0; i < b->n_products; i++) {
		const struct kp_bundle_product *p = &b->products[i];

		if (!kp_cbor_id_valid(p->id, false) || !kp_cbor_text_valid(p->name, sizeof(p->name), true) ||
		    !kp_cbor_id_valid(p->category, true) || p->n_operators > KP_BUNDLE_PRODUCT_OPS_MAX)
			return KP_SYNC_E_INVAL;
		for (j = 0; j < p->n_operators; j++) {
			if (!kp_cbor_id_valid(p->operators[j], false))
				return KP_SYNC_E_INVAL;
		}
	}
	for (i = 0; i < b->n_entitlements; i++) {
		const struct kp_bundle_entitlement *e = &b->entitlements[i];

		if (e->id < 1 || e->remaining < 0 || e->valid_from_ms < 0 ||
		    e->valid_until_ms < e->valid_from_ms || !kp_cbor_id_valid(e->product, false))
			return KP_SYNC_E_INVAL;
	}
	for (i = 0; i < b->n_denylist; i++) {
		const struct kp_bundle_deny *d = &b->denylist[i];

		if (!kp_cbor_text_valid(d->reason, sizeof(d->reason), true))
			return KP_SYNC_E_INVAL;
	}
	for (i = 0; i < b->n_eligibility; i++) {
		const struct kp_bundle_eligibility *e = &b->eligibility[i];

		if (!kp_cbor_id_valid(e->category, false) || e->valid_from_ms < 0 ||
		    e->valid_until_ms < e->valid_from_ms)
			return KP_SYNC_E_INVAL;
	}
	return KP_SYNC_OK;
}

static int bundle_check(const struct kp_bundle *b)
{
	if (b->version < 1 || b->issued_ms < 0 || !kp_cbor_id_valid(b->terminal, false))
		return KP_SYNC_E_INVAL;
	if (b->n_operators > KP_BUNDLE_OPERATORS_MAX || b->n_products > KP_BUNDLE_PRODUCTS_MAX ||
	    b->n_entitlements > KP_BUNDLE_ENTITLEMENTS_MAX || b->n_denylist > KP_BUNDLE_DENYLIST_MAX ||
	    b->n_eligibility > KP_BUNDLE_ELIGIBILITY_MAX)
		return KP_SYNC_E_TOOBIG;
	if ((b->n_operators > 0 && b->operators == NULL) ||
	    (b->n_products > 0 && b->products == NULL) ||
	    (b->n_entitlements > 0 && b->entitlements == NULL) ||
	    (b->n_denylist > 0 && b->denylist == NULL) ||
	    (b->n_eligibility > 0 && b->eligibility == NULL))
		return KP_SYNC_E_INVAL;
	return elements_check(b);
}

/* A product's operators, sorted, unique, each one of the bundle's operators. */
static int product_write(struct kp_cbor_writer *w, const struct kp_bundle_product *p,
                         struct kp_bundle_operator *const *ops, size_t n_ops)
{
	const char *ids[KP_BUNDLE_PRODUCT_OPS_MAX];
	size_t j;

	for (j = 0; j < p->n_operators; j++)
		ids[j] = p->operators[j];
	qsort(ids, p->n_operators, sizeof(ids[0]), qs_str);
	for (j = 0; j < p->n_operators; j++) {
		if ((j > 0 && strcmp(ids[j - 1], ids[j]) == 0) ||
		    bsearch(ids[j], ops, n_ops, sizeof(*ops), key_op_ptr) == NULL)
			return KP_SYNC_E_INVAL;
	}
	kp_cbor_put_map(w, p->category[0] != '\0' ? 5 : 4);
	kp_cbor_put_tstr(w, "id");
	kp_cbor_put_tstr(w, p->id);
	kp_cbor_put_tstr(w, "name");
	kp_cbor_put_tstr(w, p->name);
	kp_cbor_put_tstr(w, "rides");
	kp_cbor_put_int(w, p->rides);
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

int kp_bundle_encode(const struct kp_bundle *b, uint8_t **out, size_t *out_len)
{
	struct kp_cbor_writer w = { 0 };
	struct kp_bundle_operator **ops = NULL;
	struct kp_bundle_product **prods = NULL;
	struct kp_bundle_entitlement **ents = NULL;
	struct kp_bundle_deny **deny = NULL;
	struct kp_bundle_eligibility **elig = NULL;
	size_t i;
	int rc;

	if (out != NULL)
		*out = NULL;
	if (out_len != NULL)
		*out_len = 0;
	if (b == NULL || out == NULL || out_len == NULL)
		return KP_SYNC_E_INVAL;
	rc = bundle_check(b);
	if (rc != KP_SYNC_OK)
		return rc;
	ops = (void *)sorted_ptrs(b->operators, b->n_operators, sizeof(*b->operators), qs_op);
	prods = (void *)sorted_ptrs(b->products, b->n_products, sizeof(*b->products), qs_prod);
	ents = (void *)sorted_ptrs(b->entitlements, b->n_entitlements, sizeof(*b->entitlements),
	                           qs_ent);
	deny = (void *)sorted_ptrs(b->denylist, b->n_denylist, sizeof(*b->denylist), qs_deny);
	elig = (void *)sorted_ptrs(b->eligibility, b->n_eligibility, sizeof(*b->eligibility),
	                           qs_elig);
	if (ops == NULL || prods == NULL || ents == NULL || deny == NULL || elig == NULL) {
		rc = KP_SYNC_E_NOMEM;
		goto out;
	}
	if (!strictly_increasing((const void **)ops, b->n_operators, qs_op) ||
	    !strictly_increasing((const void **)prods, b->n_products, qs_prod) ||
	    !strictly_increasing((const void **)ents, b->n_entitlements, qs_ent) ||
	    !strictly_increasing((const void **)deny, b->n_denylist, qs_deny) ||
	    !strictly_increasing((const void **)elig, b->n_eligibility, qs_elig)) {
		rc = KP_SYNC_E_INVAL;           /* the same id, token or (token, category) twice */
		goto out;
	}

	/* keys in canonical order: by length, then bytewise */
	kp_cbor_put_map(&w, BUNDLE_KEYS + (b->n_eligibility > 0));
	kp_cbor_put_tstr(&w, "v");
	kp_cbor_put_uint(&w, BUNDLE_FORMAT);
	kp_cbor_put_tstr(&w, "acked");
	kp_cbor_put_uint(&w, b->acked);
	kp_cbor_put_tstr(&w, "issued");
	kp_cbor_put_uint(&w, (uint64_t)b->issued_ms);
	kp_cbor_put_tstr(&w, "version");
	kp_cbor_put_uint(&w, b->version);
	kp_cbor_put_tstr(&w, "denylist");
	kp_cbor_put_array(&w, b->n_denylist);
	for (i = 0; i < b->n_denylist; i++) {
		kp_cbor_put_map(&w, 2);
		kp_cbor_put_tstr(&w, "token");
		kp_cbor_put_bstr(&w, deny[i]->token, KP_TOKEN_LEN);
		kp_cbor_put_tstr(&w, "reason");
		kp_cbor_put_tstr(&w, deny[i]->reason);
	}
	kp_cbor_put_tstr(&w, "products");
	kp_cbor_put_array(&w, b->n_products);
	for (i = 0; i < b->n_products && rc == KP_SYNC_OK; i++)
		rc = product_write(&w, prods[i], ops, b->n_operators);
	if (rc != KP_SYNC_OK)
		goto out;
	kp_cbor_put_tstr(&w, "terminal");
	kp_cbor_put_tstr(&w, b->terminal);
	kp_cbor_put_tstr(&w, "operators");
	kp_cbor_put_array(&w, b->n_operators);
	for (i = 0; i < b->n_operators; i++) {
		kp_cbor_put_map(&w, 2);
		kp_cbor_put_tstr(&w, "id");
		kp_cbor_put_tstr(&w, ops[i]->id);
		kp_cbor_put_tstr(&w, "name");
		kp_cbor_put_tstr(&w, ops[i]->name);
	}
	if (b->n_eligibility > 0) {
		kp_cbor_put_tstr(&w, "eligibility");
		kp_cbor_put_array(&w, b->n_eligibility);
	}
	for (i = 0; i < b->n_eligibility; i++) {
		const struct kp_bundle_eligibility *e = elig[i];

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
		const struct kp_bundle_entitlement *e = ents[i];

		if (bsearch(e->product, prods, b->n_products, sizeof(*prods), key_prod_ptr) == NULL) {
			rc = KP_SYNC_E_INVAL;   /* an entitlement for a product not in the bundle */
			goto out;
		}
		kp_cbor_put_map(&w, 6);
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
		kp_cbor_put_tstr(&w, "remaining");
		kp_cbor_put_uint(&w, (uint64_t)e->remaining);
	}
	rc = kp_cbor_sync_rc(kp_cbor_writer_finish(&w, out, out_len));
out:
	kp_cbor_writer_free(&w);
	free(ops);
	free(prods);
	free(ents);
	free(deny);
	free(elig);
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

/* An array head whose count is within max (else TOOBIG) and that the rest of the input
 * could hold (else MALFORMED). Returns a KP_SYNC_* code. */
static int array_head(struct kp_cbor_reader *r, const char *key, size_t max, size_t min_size,
                      size_t *count)
{
	uint64_t n;
	int rc = kp_cbor_read_key(r, key);

	if (rc == KP_RECORD_OK)
		rc = kp_cbor_read_array(r, &n);
	if (rc != KP_RECORD_OK)
		return kp_cbor_sync_rc(rc);
	if (n > max)
		return KP_SYNC_E_TOOBIG;
	if (n > (r->len - r->pos) / min_size)
		return KP_SYNC_E_MALFORMED;
	*count = (size_t)n;
	return KP_SYNC_OK;
}

static int map_head(struct kp_cbor_reader *r, uint64_t want)
{
	uint64_t n;
	int rc = kp_cbor_read_map(r, &n);

	if (rc == KP_RECORD_OK && n != want)
		rc = KP_RECORD_E_MALFORMED;
	return rc;
}

static int deny_read(struct kp_cbor_reader *r, struct kp_bundle_deny *d)
{
	int rc = map_head(r, 2);

	if (rc == KP_RECORD_OK)
		rc = kp_cbor_read_key(r, "token");
	if (rc == KP_RECORD_OK)
		rc = kp_cbor_read_bstr_exact(r, d->token, KP_TOKEN_LEN);
	if (rc == KP_RECORD_OK)
		rc = kp_cbor_read_key(r, "reason");
	if (rc == KP_RECORD_OK)
		rc = kp_cbor_read_text(r, d->reason, sizeof(d->reason), true);
	return rc;
}

static int product_read(struct kp_cbor_reader *r, struct kp_bundle_product *p)
{
	uint64_t n, j, keys = 0;
	int rc = kp_cbor_read_map(r, &keys);

	if (rc == KP_RECORD_OK && keys != 4 && keys != 5)
		rc = KP_RECORD_E_MALFORMED;

	if (rc == KP_RECORD_OK)
		rc = kp_cbor_read_key(r, "id");
	if (rc == KP_RECORD_OK)
		rc = kp_cbor_read_id(r, p->id);
	if (rc == KP_RECORD_OK)
		rc = kp_cbor_read_key(r, "name");
	if (rc == KP_RECORD_OK)
		rc = kp_cbor_read_text(r, p->name, sizeof(p->name), true);
	if (rc == KP_RECORD_OK)
		rc = kp_cbor_read_key(r, "rides");
	if (rc == KP_RECORD_OK)
		rc = kp_cbor_read_int(r, &p->rides);
	if (rc == KP_RECORD_OK && keys == 5) {
		rc = kp_cbor_read_key(r, "category");
		if (rc == KP_RECORD_OK)
			rc = kp_cbor_read_id(r, p->category);     /* never empty: "" is left out */
	}
	if (rc == KP_RECORD_OK)
		rc = kp_cbor_read_key(r, "operators");
	if (rc == KP_RECORD_OK)
		rc = kp_cbor_read_array(r, &n);
	if (rc != KP_RECORD_OK)
		return rc;
	if (n > KP_BUNDLE_PRODUCT_OPS_MAX)
		return KP_RECORD_E_MALFORMED;
	for (j = 0; j < n; j++) {
		rc = kp_cbor_read_id(r, p->operators[j]);
		if (rc != KP_RECORD_OK)
			return rc;
		if (j > 0 && strcmp(p->operators[j - 1], p->operators[j]) >= 0)
			return KP_RECORD_E_MALFORMED;
		p->n_operators++;
	}
	return KP_RECORD_OK;
}

static int operator_read(struct kp_cbor_reader *r, struct kp_bundle_operator *o)
{
	int rc = map_head(r, 2);

	if (rc == KP_RECORD_OK)
		rc = kp_cbor_read_key(r, "id");
	if (rc == KP_RECORD_OK)
		rc = kp_cbor_read_id(r, o->id);
	if (rc == KP_RECORD_OK)
		rc = kp_cbor_read_key(r, "name");
	if (rc == KP_RECORD_OK)
		rc = kp_cbor_read_text(r, o->name, sizeof(o->name), true);
	return rc;
}

static int entitlement_read(struct kp_cbor_reader *r, struct kp_bundle_entitlement *e)
{
	int rc = map_head(r, 6);

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
	if (rc == KP_RECORD_OK)
		rc = kp_cbor_read_key(r, "remaining");
	if (rc == KP_RECORD_OK)
		rc = kp_cbor_read_uint63(r, &e->remaining);
	if (rc == KP_RECORD_OK && (e->id < 1 || e->valid_until_ms < e->valid_from_ms))
		rc = KP_RECORD_E_MALFORMED;
	return rc;
}

static int eligibility_read(struct kp_cbor_reader *r, struct kp_bundle_eligibility *e)
{
	uint64_t keys = 0;
	int rc = kp_cbor_read_map(r, &keys);

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

/* Element comparators for the decoder's order checks. */
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

static int ent_cmp_v(const void *a, const void *b)
{
	return ent_cmp(a, b);
}

static int deny_cmp_v(const void *a, const void *b)
{
	return deny_cmp(a, b);
}

static int elig_cmp_v(const void *a, const void *b)
{
	return elig_cmp(a, b);
}

static int deny_read_v(struct kp_cbor_reader *r, void *el)      { return deny_read(r, el); }
static int product_read_v(struct kp_cbor_reader *r, void *el)   { return product_read(r, el); }
static int operator_read_v(struct kp_cbor_reader *r, void *el)  { return operator_read(r, el); }
static int ent_read_v(struct kp_cbor_reader *r, void *el)       { return entitlement_read(r, el); }
static int elig_read_v(struct kp_cbor_reader *r, void *el)      { return eligibility_read(r, el); }

struct array_spec {
	const char *key;
	size_t max, min_size, elem;
	int (*read)(struct kp_cbor_reader *r, void *el);
	int (*cmp)(const void *a, const void *b);
};

static const struct array_spec DENYLIST = { "denylist", KP_BUNDLE_DENYLIST_MAX, MIN_DENY,
	sizeof(struct kp_bundle_deny), deny_read_v, deny_cmp_v };
static const struct array_spec PRODUCTS = { "products", KP_BUNDLE_PRODUCTS_MAX, MIN_PRODUCT,
	sizeof(struct kp_bundle_product), product_read_v, prod_cmp };
static const struct array_spec OPERATORS = { "operators", KP_BUNDLE_OPERATORS_MAX, MIN_OPERATOR,
	sizeof(struct kp_bundle_operator), operator_read_v, op_cmp };
static const struct array_spec ENTITLEMENTS = { "entitlements", KP_BUNDLE_ENTITLEMENTS_MAX,
	MIN_ENTITLEMENT, sizeof(struct kp_bundle_entitlement), ent_read_v, ent_cmp_v };
static const struct array_spec ELIGIBILITY = { "eligibility", KP_BUNDLE_ELIGIBILITY_MAX,
	MIN_ELIGIBILITY, sizeof(struct kp_bundle_eligibility), elig_read_v, elig_cmp_v };

/* "key": [elements] into a growing *arr; each element must sort strictly after the one
 * before. Returns a KP_SYNC_* code; *arr is the caller's to free also on failure. */
static int array_read(struct kp_cbor_reader *r, const struct array_spec *s, void **arr,
                      size_t *count)
{
	size_t claimed = 0, cap = 0;
	uint8_t *el;
	int rc;

	rc = array_head(r, s->key, s->max, s->min_size, &claimed);
	while (rc == KP_SYNC_OK && *count < claimed) {
		rc = kp_cbor_sync_rc(grow(arr, &cap, *count, claimed, s->elem));
		if (rc != KP_SYNC_OK)
			break;
		el = (uint8_t *)*arr + *count * s->elem;
		memset(el, 0, s->elem);
		rc = kp_cbor_sync_rc(s->read(r, el));
		if (rc == KP_SYNC_OK && *count > 0 && s->cmp(el - s->elem, el) >= 0)
			rc = KP_SYNC_E_MALFORMED;
		if (rc == KP_SYNC_OK)
			(*count)++;
	}
	return rc;
}

/* Every product's operators and every entitlement's product are in the bundle (both
 * arrays are sorted by now). */
static bool references_valid(const struct kp_bundle *b)
{
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
		if (i > 0 && strcmp(b->entitlements[i - 1].product, b->entitlements[i].product) == 0)
			continue;
		if (bsearch(b->entitlements[i].product, b->products, b->n_products,
		            sizeof(*b->products), key_prod) == NULL)
			return false;
	}
	return true;
}

int kp_bundle_decode(const uint8_t *buf, size_t len, struct kp_bundle *b)
{
	struct kp_cbor_reader r = { .buf = buf, .len = len };
	uint64_t n, v;
	int rc;

	if (b == NULL || (buf == NULL && len > 0))
		return KP_SYNC_E_INVAL;
	memset(b, 0, sizeof(*b));
	/* "v" sorts first; judge it before the shape, which another format may change */
	rc = kp_cbor_read_map(&r, &n);
	if (rc == KP_RECORD_OK)
		rc = kp_cbor_read_key(&r, "v");
	if (rc == KP_RECORD_OK)
		rc = kp_cbor_read_uint(&r, &v);
	if (rc == KP_RECORD_OK && v != BUNDLE_FORMAT)
		rc = KP_RECORD_E_VERSION;
	if (rc == KP_RECORD_OK && n != BUNDLE_KEYS && n != BUNDLE_KEYS + 1)
		rc = KP_RECORD_E_MALFORMED;
	if (rc == KP_RECORD_OK)
		rc = kp_cbor_read_key(&r, "acked");
	if (rc == KP_RECORD_OK)
		rc = kp_cbor_read_uint(&r, &b->acked);
	if (rc == KP_RECORD_OK)
		rc = kp_cbor_read_key(&r, "issued");
	if (rc == KP_RECORD_OK)
		rc = kp_cbor_read_uint63(&r, &b->issued_ms);
	if (rc == KP_RECORD_OK)
		rc = kp_cbor_read_key(&r, "version");
	if (rc == KP_RECORD_OK)
		rc = kp_cbor_read_uint(&r, &b->version);
	if (rc == KP_RECORD_OK && b->version == 0)
		rc = KP_RECORD_E_MALFORMED;
	rc = kp_cbor_sync_rc(rc);
	if (rc != KP_SYNC_OK)
		goto out;
	rc = array_read(&r, &DENYLIST, (void **)&b->denylist, &b->n_denylist);
	if (rc == KP_SYNC_OK)
		rc = array_read(&r, &PRODUCTS, (void **)&b->products, &b->n_products);
	if (rc == KP_SYNC_OK) {
		rc = kp_cbor_read_key(&r, "terminal");
		if (rc == KP_RECORD_OK)
			rc = kp_cbor_read_id(&r, b->terminal);
		rc = kp_cbor_sync_rc(rc);
	}
	if (rc == KP_SYNC_OK)
		rc = array_read(&r, &OPERATORS, (void **)&b->operators, &b->n_operators);
	if (rc == KP_SYNC_OK && n == BUNDLE_KEYS + 1) {
		rc = array_read(&r, &ELIGIBILITY, (void **)&b->eligibility, &b->n_eligibility);
		if (rc == KP_SYNC_OK && b->n_eligibility == 0)
			rc = KP_SYNC_E_MALFORMED;       /* none is written as no key, never [] */
	}
	if (rc == KP_SYNC_OK)
		rc = array_read(&r, &ENTITLEMENTS, (void **)&b->entitlements, &b->n_entitlements);
	if (rc != KP_SYNC_OK)
		goto out;
	if (r.pos != r.len || r.noncanonical || !references_valid(b)) {
		rc = KP_SYNC_E_MALFORMED;
		goto out;
	}
out:
	if (rc != KP_SYNC_OK)
		kp_bundle_free(b);
	return rc;
}

void kp_bundle_free(struct kp_bundle *b)
{
	if (b == NULL)
		return;
	free(b->operators);
	free(b->products);
	free(b->entitlements);
	free(b->denylist);
	free(b->eligibility);
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
	__attribute__((format(printf, 3, 4)));

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
	rc = kp_bundle_decode(payload, payload_len, b);
	if (rc != KP_SYNC_OK) {
		set_err(err, err_cap, "bundle payload: %s", kp_sync_strerror(rc));
		return rc;
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
