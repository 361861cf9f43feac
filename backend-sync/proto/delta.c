/* SPDX-License-Identifier: Apache-2.0 */
/* kippu config delta: the changes since the version a terminal holds, as one canonical CBOR
 * map with text keys, signed by the backend as COSE_Sign1 (kid "backend"); PROTOCOL.md
 * section 5.4. Its rows are written and read by the bundle's own field tables
 * (bundle_fields.h), so a row of a delta is byte for byte the row of a bundle.
 *
 * A delta always has "base", which no bundle has, and a bundle's required keys ("products",
 * "operators" ...) are not in a delta: each decoder refuses the other's payload as
 * malformed, so a signed delta can never be taken for a bundle, nor the other way. */
#include "kp_bundle.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "kp_cbor.h"
#include "bundle_fields.h"

/* Top-level keys in canonical order (length, then bytewise); the arrays' are optional. */
enum { DK_V, DK_BASE, DK_ACKED, DK_ISSUED, DK_POLICY, DK_REMOTE, DK_VERSION, DK_DENYLIST,
       DK_TERMINAL, DK_ELIGIBILITY, DK_ENTITLEMENTS, DK_COUNT };
static const char *const DKEYS[DK_COUNT] = { "v", "base", "acked", "issued", "policy",
	"remote", "version", "denylist", "terminal", "eligibility", "entitlements" };
static const int DK_ARRAY[DK_COUNT] = {
	[DK_V] = -1, [DK_BASE] = -1, [DK_ACKED] = -1, [DK_ISSUED] = -1, [DK_POLICY] = -1,
	[DK_REMOTE] = KP_BA_REMOTE, [DK_VERSION] = -1, [DK_DENYLIST] = KP_BA_DENYLIST,
	[DK_TERMINAL] = -1, [DK_ELIGIBILITY] = KP_BA_ELIGIBILITY,
	[DK_ENTITLEMENTS] = KP_BA_ENTITLEMENTS,
};
#define DK_REQUIRED (1u << DK_V | 1u << DK_BASE | 1u << DK_ACKED | 1u << DK_ISSUED | \
                     1u << DK_VERSION | 1u << DK_TERMINAL)

int kp_delta_array(enum kp_bundle_array_id id)
{
	return id == KP_BA_DENYLIST || id == KP_BA_ENTITLEMENTS || id == KP_BA_ELIGIBILITY ||
	       id == KP_BA_REMOTE;
}

/* A row's key: its card token (the first member, but an entitlement's id comes first). */
static int row_key_cmp(int id, const void *row, const struct kp_delta_keys *k, size_t i)
{
	const uint8_t *token = id == KP_BA_ENTITLEMENTS ?
	                       ((const struct kp_bundle_entitlement *)row)->token : row;

	return memcmp(token, k->tokens[i], KP_TOKEN_LEN);
}

static bool row_has_key(int id, const void *row, const struct kp_delta_keys *k)
{
	size_t lo = 0, hi = k->n;

	while (lo < hi) {
		size_t mid = lo + (hi - lo) / 2;
		int c = row_key_cmp(id, row, k, mid);

		if (c == 0)
			return true;
		if (c < 0)
			hi = mid;
		else
			lo = mid + 1;
	}
	return false;
}

static int keys_cmp(const struct kp_delta_keys *k, size_t i)
{
	return memcmp(k->tokens[i - 1], k->tokens[i], KP_TOKEN_LEN);
}

static size_t *rows_count(struct kp_bundle *b, enum kp_bundle_array_id id)
{
	return (size_t *)((uint8_t *)b + kp_bundle_array(id)->count_offset);
}

static void **rows_arr(struct kp_bundle *b, enum kp_bundle_array_id id)
{
	return (void **)((uint8_t *)b + kp_bundle_array(id)->arr_offset);
}

/* Keys strictly increasing, every row's key listed. */
static int part_check(const struct kp_delta *d, enum kp_bundle_array_id id)
{
	const struct kp_delta_keys *k = &d->keys[id];
	struct kp_bundle *rows = (struct kp_bundle *)&d->rows;
	size_t n = *rows_count(rows, id);
	const uint8_t *arr = *rows_arr(rows, id);
	size_t elem = kp_bundle_array(id)->elem_size;

	if (k->n > KP_DELTA_KEYS_MAX)
		return KP_SYNC_E_TOOBIG;
	if (k->tokens == NULL && k->n > 0)
		return KP_SYNC_E_INVAL;
	for (size_t i = 1; i < k->n; i++) {
		if (keys_cmp(k, i) >= 0)
			return KP_SYNC_E_INVAL;
	}
	for (size_t i = 0; i < n; i++) {
		if (!row_has_key(id, arr + i * elem, k))
			return KP_SYNC_E_INVAL;
	}
	return KP_SYNC_OK;
}

static int delta_check(const struct kp_delta *d)
{
	if (d->base < 1 || d->version <= d->base || d->issued_ms < 0 ||
	    !kp_cbor_id_valid(d->terminal, false) || kp_bundle_policy_check(&d->policy) != KP_SYNC_OK)
		return KP_SYNC_E_INVAL;
	for (int id = 0; id < KP_BA_COUNT; id++) {
		size_t n = *rows_count((struct kp_bundle *)&d->rows, id);
		int rc;

		if (!kp_delta_array(id)) {
			if (n > 0 || d->keys[id].n > 0)
				return KP_SYNC_E_INVAL;
			continue;
		}
		rc = part_check(d, id);
		if (rc != KP_SYNC_OK)
			return rc;
	}
	return KP_SYNC_OK;
}

/* "key": {"keys": [...], "rows": [...]} */
static int part_write(struct kp_cbor_writer *w, const struct kp_delta *d, int id)
{
	const struct kp_delta_keys *k = &d->keys[id];
	struct kp_bundle *rows = (struct kp_bundle *)&d->rows;

	kp_cbor_put_tstr(w, kp_bundle_array(id)->key);
	kp_cbor_put_map(w, 2);
	kp_cbor_put_tstr(w, "keys");
	kp_cbor_put_array(w, k->n);
	for (size_t i = 0; i < k->n; i++)
		kp_cbor_put_bstr(w, k->tokens[i], KP_TOKEN_LEN);
	kp_cbor_put_tstr(w, "rows");
	return kp_bundle_rows_write(w, id, *rows_arr(rows, id), *rows_count(rows, id));
}

static bool key_written(const struct kp_delta *d, int k)
{
	if (DK_REQUIRED & (1u << k))
		return true;
	if (k == DK_POLICY)
		return !kp_bundle_policy_is_default(&d->policy);
	return d->keys[DK_ARRAY[k]].n > 0;
}

int kp_delta_encode(const struct kp_delta *d, uint8_t **out, size_t *out_len)
{
	struct kp_cbor_writer w = { 0 };
	size_t keys = 0;
	int rc;

	if (out == NULL || out_len == NULL || d == NULL)
		return KP_SYNC_E_INVAL;
	*out = NULL;
	*out_len = 0;
	rc = delta_check(d);
	if (rc != KP_SYNC_OK)
		return rc;
	for (int k = 0; k < DK_COUNT; k++)
		keys += key_written(d, k);
	kp_cbor_put_map(&w, keys);
	for (int k = 0; k < DK_COUNT && rc == KP_SYNC_OK; k++) {
		if (!key_written(d, k))
			continue;
		if (DK_ARRAY[k] >= 0) {
			rc = part_write(&w, d, DK_ARRAY[k]);
			continue;
		}
		if (k == DK_POLICY) {
			kp_bundle_policy_write(&w, &d->policy);
			continue;
		}
		kp_cbor_put_tstr(&w, DKEYS[k]);
		switch (k) {
		case DK_V:        kp_cbor_put_uint(&w, KP_DELTA_FORMAT); break;
		case DK_BASE:     kp_cbor_put_uint(&w, d->base); break;
		case DK_ACKED:    kp_cbor_put_uint(&w, d->acked); break;
		case DK_ISSUED:   kp_cbor_put_uint(&w, (uint64_t)d->issued_ms); break;
		case DK_VERSION:  kp_cbor_put_uint(&w, d->version); break;
		default:          kp_cbor_put_tstr(&w, d->terminal); break;
		}
	}
	if (rc == KP_SYNC_OK)
		rc = kp_cbor_sync_rc(kp_cbor_writer_finish(&w, out, out_len));
	kp_cbor_writer_free(&w);
	return rc;
}

void kp_delta_free(struct kp_delta *d)
{
	if (d == NULL)
		return;
	for (int id = 0; id < KP_BA_COUNT; id++)
		free(d->keys[id].tokens);
	kp_bundle_free(&d->rows);
	memset(d, 0, sizeof(*d));
}

static int keys_read(struct kp_cbor_reader *r, struct kp_delta_keys *k)
{
	uint64_t n = 0;
	int rc = kp_cbor_sync_rc(kp_cbor_read_array(r, &n));

	if (rc != KP_SYNC_OK)
		return rc;
	if (n > KP_DELTA_KEYS_MAX)
		return KP_SYNC_E_TOOBIG;
	/* a key takes 17 bytes */
	if (n == 0 || n > (r->len - r->pos) / (KP_TOKEN_LEN + 1))
		return KP_SYNC_E_MALFORMED;
	k->tokens = calloc((size_t)n, sizeof(*k->tokens));
	if (k->tokens == NULL)
		return KP_SYNC_E_NOMEM;
	for (k->n = 0; rc == KP_SYNC_OK && k->n < (size_t)n; k->n++) {
		rc = kp_cbor_sync_rc(kp_cbor_read_bstr_exact(r, k->tokens[k->n], KP_TOKEN_LEN));
		if (rc == KP_SYNC_OK && k->n > 0 && keys_cmp(k, k->n) >= 0)
			rc = KP_SYNC_E_MALFORMED;
	}
	return rc;
}

static int part_read(struct kp_cbor_reader *r, struct kp_delta *d, int id)
{
	uint64_t n = 0;
	int rc = kp_cbor_sync_rc(kp_cbor_read_map(r, &n));

	if (rc == KP_SYNC_OK && n != 2)
		rc = KP_SYNC_E_MALFORMED;
	if (rc == KP_SYNC_OK)
		rc = kp_cbor_sync_rc(kp_cbor_read_key(r, "keys"));
	if (rc == KP_SYNC_OK)
		rc = keys_read(r, &d->keys[id]);
	if (rc == KP_SYNC_OK)
		rc = kp_cbor_sync_rc(kp_cbor_read_key(r, "rows"));
	if (rc == KP_SYNC_OK)
		rc = kp_bundle_rows_read(r, id, rows_arr(&d->rows, id), rows_count(&d->rows, id));
	if (rc == KP_SYNC_OK)
		rc = part_check(d, id) == KP_SYNC_OK ? KP_SYNC_OK : KP_SYNC_E_MALFORMED;
	return rc;
}

static void derr(char *err, size_t cap, const char *fmt, ...)
	__attribute__((format(printf, 3, 4)));

static void derr(char *err, size_t cap, const char *fmt, ...)
{
	va_list ap;

	if (err == NULL || cap == 0 || err[0] != '\0')
		return;
	va_start(ap, fmt);
	vsnprintf(err, cap, fmt, ap);
	va_end(ap);
}

static int top_read(struct kp_cbor_reader *r, struct kp_delta *d, int k)
{
	uint64_t v = 0;
	int rc;

	if (DK_ARRAY[k] >= 0)
		return part_read(r, d, DK_ARRAY[k]);
	switch (k) {
	case DK_BASE:
		rc = kp_cbor_sync_rc(kp_cbor_read_uint(r, &d->base));
		return rc == KP_SYNC_OK && d->base == 0 ? KP_SYNC_E_MALFORMED : rc;
	case DK_ACKED:
		return kp_cbor_sync_rc(kp_cbor_read_uint(r, &d->acked));
	case DK_ISSUED:
		return kp_cbor_sync_rc(kp_cbor_read_uint63(r, &d->issued_ms));
	case DK_POLICY:
		return kp_bundle_policy_read(r, &d->policy);
	case DK_VERSION:
		rc = kp_cbor_sync_rc(kp_cbor_read_uint(r, &v));
		d->version = v;
		return rc == KP_SYNC_OK && v <= d->base ? KP_SYNC_E_MALFORMED : rc;
	default:
		return kp_cbor_sync_rc(kp_cbor_read_id(r, d->terminal));
	}
}

int kp_delta_decode(const uint8_t *buf, size_t len, struct kp_delta *d, char *err,
                    size_t err_cap)
{
	struct kp_cbor_reader r = { .buf = buf, .len = len };
	uint64_t n = 0, v = 0;
	unsigned seen = 1u << DK_V;
	int rc, k = DK_V;

	if (d == NULL || (buf == NULL && len > 0))
		return KP_SYNC_E_INVAL;
	memset(d, 0, sizeof(*d));
	rc = kp_cbor_sync_rc(kp_cbor_read_map(&r, &n));
	if (rc == KP_SYNC_OK)
		rc = kp_cbor_sync_rc(kp_cbor_read_key(&r, "v"));
	if (rc == KP_SYNC_OK)
		rc = kp_cbor_sync_rc(kp_cbor_read_uint(&r, &v));
	if (rc == KP_SYNC_OK && v != KP_DELTA_FORMAT) {
		derr(err, err_cap, "delta format %llu (this terminal reads %d)",
		     (unsigned long long)v, KP_DELTA_FORMAT);
		rc = KP_SYNC_E_VERSION;
	}
	if (rc == KP_SYNC_OK && (n < 6 || n > DK_COUNT))
		rc = KP_SYNC_E_MALFORMED;
	/* every key after "v", each after the one before in canonical order */
	for (uint64_t i = 1; rc == KP_SYNC_OK && i < n; i++) {
		char key[16];
		int next;

		rc = kp_cbor_sync_rc(kp_cbor_read_text(&r, key, sizeof(key), false));
		for (next = k + 1; rc == KP_SYNC_OK && next < DK_COUNT &&
		     strcmp(DKEYS[next], key) != 0; next++)
			;
		if (rc == KP_SYNC_OK && next == DK_COUNT) {
			derr(err, err_cap, "unknown, repeated or misplaced key '%s'", key);
			rc = KP_SYNC_E_MALFORMED;
		}
		if (rc != KP_SYNC_OK)
			break;
		k = next;
		seen |= 1u << k;
		rc = top_read(&r, d, k);
		if (rc != KP_SYNC_OK)
			derr(err, err_cap, "%s: %s", DKEYS[k], kp_sync_strerror(rc));
	}
	if (rc == KP_SYNC_OK && ((seen & DK_REQUIRED) != DK_REQUIRED || r.pos != r.len ||
	                         r.noncanonical)) {
		derr(err, err_cap, "a required key is missing, or the encoding is not canonical");
		rc = KP_SYNC_E_MALFORMED;
	}
	if (rc == KP_SYNC_OK && d->policy.max_age_s == 0)
		d->policy.max_age_s = KP_POLICY_MAX_AGE_DEFAULT;
	if (rc != KP_SYNC_OK)
		kp_delta_free(d);
	return rc;
}

int kp_delta_sign(const struct kp_delta *d, const kp_key *key, uint8_t **out, size_t *out_len)
{
	uint8_t *payload = NULL;
	size_t payload_len = 0;
	int rc;

	if (out == NULL || out_len == NULL || key == NULL)
		return KP_SYNC_E_INVAL;
	*out = NULL;
	*out_len = 0;
	rc = kp_delta_encode(d, &payload, &payload_len);
	if (rc != KP_SYNC_OK)
		return rc;
	return kp_bundle_cose_sign(key, payload, payload_len, out, out_len);
}

int kp_delta_open(const kp_cert *backend_cert, const uint8_t *cose, size_t len,
                  const char *terminal, uint64_t have_version, struct kp_delta *d,
                  char *err, size_t err_cap)
{
	const uint8_t *payload = NULL;
	size_t payload_len = 0;
	char why[256] = "", shown[2][KP_ID_MAX + 1];
	int rc;

	if (err != NULL && err_cap > 0)
		err[0] = '\0';
	if (d != NULL)
		memset(d, 0, sizeof(*d));
	if (backend_cert == NULL || (cose == NULL && len > 0) || terminal == NULL || d == NULL)
		return KP_SYNC_E_INVAL;
	rc = kp_bundle_cose_payload(backend_cert, cose, len, &payload, &payload_len, err, err_cap);
	if (rc != KP_SYNC_OK)
		return rc;
	rc = kp_delta_decode(payload, payload_len, d, why, sizeof(why));
	if (rc != KP_SYNC_OK) {
		derr(err, err_cap, "delta payload: %s%s%s", kp_sync_strerror(rc),
		     why[0] != '\0' ? ": " : "", why);
		return rc;
	}
	if (strcmp(d->terminal, terminal) != 0) {
		kp_cbor_text_printable(shown[0], sizeof(shown[0]), d->terminal, strlen(d->terminal));
		kp_cbor_text_printable(shown[1], sizeof(shown[1]), terminal, strlen(terminal));
		derr(err, err_cap, "delta is for terminal %s, not %s", shown[0], shown[1]);
		rc = KP_SYNC_E_MALFORMED;
	} else if (d->base != have_version) {
		derr(err, err_cap, "delta applies to version %llu, this terminal holds %llu",
		     (unsigned long long)d->base, (unsigned long long)have_version);
		rc = KP_SYNC_E_STALE;
	}
	if (rc != KP_SYNC_OK)
		kp_delta_free(d);
	return rc;
}
