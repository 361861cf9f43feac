/* SPDX-License-Identifier: Apache-2.0 */
/* backend-sync internal CBOR: builders, a canonical writer and a strict streaming reader.
 * See kp_cbor.h for why the reader never builds a libcbor tree. */
#include "kp_cbor.h"

#include <stdlib.h>
#include <string.h>

#include "kp_bundle.h"

/* ---- text ---- */

/* CBOR text strings must be valid UTF-8, and a verifier in another language would reject
 * them otherwise. */
bool kp_cbor_utf8_valid(const uint8_t *s, size_t n)
{
	size_t i = 0;

	while (i < n) {
		uint8_t c = s[i];
		size_t len;
		uint32_t cp;

		if (c < 0x80) {
			i++;
			continue;
		} else if (c >= 0xC2 && c <= 0xDF) {
			len = 2; cp = c & 0x1F;
		} else if (c >= 0xE0 && c <= 0xEF) {
			len = 3; cp = c & 0x0F;
		} else if (c >= 0xF0 && c <= 0xF4) {
			len = 4; cp = c & 0x07;
		} else {
			return false;
		}
		if (n - i < len)
			return false;
		for (size_t j = 1; j < len; j++) {
			if ((s[i + j] & 0xC0) != 0x80)
				return false;
			cp = cp << 6 | (s[i + j] & 0x3F);
		}
		if ((len == 3 && cp < 0x800) || (len == 4 && (cp < 0x10000 || cp > 0x10FFFF)) ||
		    (cp >= 0xD800 && cp <= 0xDFFF))
			return false;
		i += len;
	}
	return true;
}

bool kp_cbor_text_valid(const char *s, size_t cap, bool may_be_empty)
{
	size_t n;

	if (s == NULL || cap == 0)
		return false;
	n = strnlen(s, cap);
	if (n >= cap || (n == 0 && !may_be_empty))
		return false;
	return kp_cbor_utf8_valid((const uint8_t *)s, n);
}

bool kp_cbor_id_valid(const char *s, bool may_be_empty)
{
	return kp_cbor_text_valid(s, KP_ID_MAX + 1, may_be_empty);
}

void kp_cbor_text_printable(char *dst, size_t cap, const char *s, size_t n)
{
	size_t i, o = 0;

	if (cap == 0)
		return;
	for (i = 0; i < n && s[i] != '\0' && o + 1 < cap; i++) {
		unsigned char c = (unsigned char)s[i];

		dst[o++] = c < 0x20 || c == 0x7F ? '?' : (char)c;
	}
	/* never end inside a UTF-8 sequence that was cut short */
	if (i < n && s[i] != '\0') {
		size_t k = o;

		while (k > 0 && ((unsigned char)dst[k - 1] & 0xC0) == 0x80)
			k--;
		if (k > 0 && (unsigned char)dst[k - 1] >= 0xC0) {
			unsigned char lead = (unsigned char)dst[k - 1];
			size_t need = lead >= 0xF0 ? 4 : lead >= 0xE0 ? 3 : 2;

			if (o - (k - 1) < need)
				o = k - 1;
		}
	}
	dst[o] = '\0';
}

/* ---- libcbor builders ---- */

/* Shortest form (RFC 8949 4.2.1): libcbor keeps the width it is handed. */
cbor_item_t *kp_cbor_build_uint(uint64_t v)
{
	if (v <= UINT8_MAX)
		return cbor_build_uint8((uint8_t)v);
	if (v <= UINT16_MAX)
		return cbor_build_uint16((uint16_t)v);
	if (v <= UINT32_MAX)
		return cbor_build_uint32((uint32_t)v);
	return cbor_build_uint64(v);
}

cbor_item_t *kp_cbor_build_int(int64_t v)
{
	uint64_t n;

	if (v >= 0)
		return kp_cbor_build_uint((uint64_t)v);
	n = (uint64_t)(-(v + 1));       /* CBOR stores -1 - v; cannot overflow for INT64_MIN */
	if (n <= UINT8_MAX)
		return cbor_build_negint8((uint8_t)n);
	if (n <= UINT16_MAX)
		return cbor_build_negint16((uint16_t)n);
	if (n <= UINT32_MAX)
		return cbor_build_negint32((uint32_t)n);
	return cbor_build_negint64(n);
}

cbor_item_t *kp_cbor_build_tstr(const char *s)
{
	return cbor_build_stringn(s, strlen(s));
}

/* libcbor copies with memcpy even for zero bytes; never hand it NULL. */
cbor_item_t *kp_cbor_build_bstr(const uint8_t *p, size_t n)
{
	static const uint8_t none[1];

	return cbor_build_bytestring(n > 0 ? p : none, n);
}

int kp_cbor_map_put(cbor_item_t *map, uint8_t key, cbor_item_t *val)
{
	cbor_item_t *k = NULL;
	int rc = KP_RECORD_OK;

	if (val == NULL) {
		rc = KP_RECORD_E_NOMEM;
		goto out;
	}
	k = cbor_build_uint8(key);
	if (k == NULL || !cbor_map_add(map, (struct cbor_pair){ .key = k, .value = val })) {
		rc = KP_RECORD_E_NOMEM;
		goto out;
	}
out:
	if (k != NULL)
		cbor_decref(&k);
	if (val != NULL)
		cbor_decref(&val);
	return rc;
}

int kp_cbor_array_put(cbor_item_t *array, cbor_item_t *it)
{
	int rc = KP_RECORD_OK;

	if (it == NULL)
		return KP_RECORD_E_NOMEM;
	if (!cbor_array_push(array, it))
		rc = KP_RECORD_E_NOMEM;
	cbor_decref(&it);
	return rc;
}

int kp_cbor_serialize(const cbor_item_t *item, uint8_t **out, size_t *out_len)
{
	unsigned char *buf = NULL;
	size_t cap = 0, n;

	n = cbor_serialize_alloc(item, &buf, &cap);
	if (n == 0) {
		free(buf);
		return KP_RECORD_E_NOMEM;
	}
	*out = buf;
	*out_len = n;
	return KP_RECORD_OK;
}

/* ---- direct canonical writer ---- */

static bool writer_reserve(struct kp_cbor_writer *w, size_t n)
{
	size_t cap;
	uint8_t *p;

	if (w->rc != KP_RECORD_OK)
		return false;
	if (n <= w->cap - w->len)
		return true;
	if (n > SIZE_MAX / 2 - w->len) {
		w->rc = KP_RECORD_E_NOMEM;
		return false;
	}
	cap = w->cap > 0 ? w->cap : 256;
	while (cap - w->len < n)
		cap *= 2;
	p = realloc(w->buf, cap);
	if (p == NULL) {
		w->rc = KP_RECORD_E_NOMEM;
		return false;
	}
	w->buf = p;
	w->cap = cap;
	return true;
}

void kp_cbor_put_raw(struct kp_cbor_writer *w, const void *p, size_t n)
{
	if (n == 0 || !writer_reserve(w, n))
		return;
	memcpy(w->buf + w->len, p, n);
	w->len += n;
}

void kp_cbor_put_head(struct kp_cbor_writer *w, uint8_t major, uint64_t arg)
{
	uint8_t h[9];
	size_t n = kp_cbor_head_len(arg), i;

	h[0] = (uint8_t)(major << 5);
	if (n == 1) {
		h[0] |= (uint8_t)arg;
	} else {
		h[0] |= n == 2 ? 24 : n == 3 ? 25 : n == 5 ? 26 : 27;
		for (i = 1; i < n; i++)         /* big-endian argument */
			h[i] = (uint8_t)(arg >> (8 * (n - 1 - i)));
	}
	kp_cbor_put_raw(w, h, n);
}

void kp_cbor_put_uint(struct kp_cbor_writer *w, uint64_t v)
{
	kp_cbor_put_head(w, 0, v);
}

void kp_cbor_put_int(struct kp_cbor_writer *w, int64_t v)
{
	if (v >= 0)
		kp_cbor_put_head(w, 0, (uint64_t)v);
	else
		kp_cbor_put_head(w, 1, (uint64_t)(-(v + 1)));
}

void kp_cbor_put_tstr(struct kp_cbor_writer *w, const char *s)
{
	size_t n = strlen(s);

	kp_cbor_put_head(w, 3, n);
	kp_cbor_put_raw(w, s, n);
}

void kp_cbor_put_bstr(struct kp_cbor_writer *w, const uint8_t *p, size_t n)
{
	kp_cbor_put_head(w, 2, n);
	kp_cbor_put_raw(w, p, n);
}

void kp_cbor_put_array(struct kp_cbor_writer *w, uint64_t n)
{
	kp_cbor_put_head(w, 4, n);
}

void kp_cbor_put_map(struct kp_cbor_writer *w, uint64_t n)
{
	kp_cbor_put_head(w, 5, n);
}

void kp_cbor_put_null(struct kp_cbor_writer *w)
{
	kp_cbor_put_raw(w, "\xF6", 1);
}

int kp_cbor_writer_finish(struct kp_cbor_writer *w, uint8_t **out, size_t *out_len)
{
	int rc = w->rc;

	if (rc == KP_RECORD_OK && w->len == 0)
		rc = KP_RECORD_E_INVAL;
	if (rc != KP_RECORD_OK) {
		kp_cbor_writer_free(w);
		return rc;
	}
	*out = w->buf;
	*out_len = w->len;
	memset(w, 0, sizeof(*w));
	return KP_RECORD_OK;
}

void kp_cbor_writer_free(struct kp_cbor_writer *w)
{
	if (w == NULL)
		return;
	free(w->buf);
	memset(w, 0, sizeof(*w));
}

/* ---- strict streaming reader ---- */

static void it_set(void *ctx, enum kp_cbor_type t, uint64_t v)
{
	struct kp_cbor_item *it = ctx;

	it->type = t;
	it->arg = v;
}

static void cb_uint8(void *c, uint8_t v)   { it_set(c, KP_CBOR_UINT, v); }
static void cb_uint16(void *c, uint16_t v) { it_set(c, KP_CBOR_UINT, v); }
static void cb_uint32(void *c, uint32_t v) { it_set(c, KP_CBOR_UINT, v); }
static void cb_uint64(void *c, uint64_t v) { it_set(c, KP_CBOR_UINT, v); }
static void cb_neg8(void *c, uint8_t v)    { it_set(c, KP_CBOR_NEGINT, v); }
static void cb_neg16(void *c, uint16_t v)  { it_set(c, KP_CBOR_NEGINT, v); }
static void cb_neg32(void *c, uint32_t v)  { it_set(c, KP_CBOR_NEGINT, v); }
static void cb_neg64(void *c, uint64_t v)  { it_set(c, KP_CBOR_NEGINT, v); }
static void cb_array(void *c, size_t n)    { it_set(c, KP_CBOR_ARRAY, n); }
static void cb_map(void *c, size_t n)      { it_set(c, KP_CBOR_MAP, n); }
static void cb_tag(void *c, uint64_t v)    { it_set(c, KP_CBOR_TAG, v); }
static void cb_null(void *c)               { it_set(c, KP_CBOR_NULL, 0); }
static void cb_other(void *c)              { it_set(c, KP_CBOR_OTHER, 0); }
static void cb_float(void *c, float v)     { (void)v; it_set(c, KP_CBOR_OTHER, 0); }
static void cb_double(void *c, double v)   { (void)v; it_set(c, KP_CBOR_OTHER, 0); }
static void cb_bool(void *c, bool v)       { (void)v; it_set(c, KP_CBOR_OTHER, 0); }

static void cb_bstr(void *c, cbor_data d, size_t n)
{
	it_set(c, KP_CBOR_BSTR, n);
	((struct kp_cbor_item *)c)->data = d;
}

static void cb_tstr(void *c, cbor_data d, size_t n)
{
	it_set(c, KP_CBOR_TSTR, n);
	((struct kp_cbor_item *)c)->data = d;
}

/* Indefinite-length starts, break, simple values and floats all become KP_CBOR_OTHER,
 * which no field of ours accepts. */
static const struct cbor_callbacks item_callbacks = {
	.uint8 = cb_uint8, .uint16 = cb_uint16, .uint32 = cb_uint32, .uint64 = cb_uint64,
	.negint8 = cb_neg8, .negint16 = cb_neg16, .negint32 = cb_neg32, .negint64 = cb_neg64,
	.byte_string_start = cb_other, .byte_string = cb_bstr,
	.string = cb_tstr, .string_start = cb_other,
	.indef_array_start = cb_other, .array_start = cb_array,
	.indef_map_start = cb_other, .map_start = cb_map,
	.tag = cb_tag,
	.float2 = cb_float, .float4 = cb_float, .float8 = cb_double,
	.undefined = cb_other, .null = cb_null, .boolean = cb_bool,
	.indef_break = cb_other,
};

size_t kp_cbor_head_len(uint64_t arg)
{
	if (arg < 24)
		return 1;
	if (arg <= UINT8_MAX)
		return 2;
	if (arg <= UINT16_MAX)
		return 3;
	if (arg <= UINT32_MAX)
		return 5;
	return 9;
}

int kp_cbor_next(struct kp_cbor_reader *r, struct kp_cbor_item *it)
{
	struct cbor_decoder_result res;
	size_t head;

	memset(it, 0, sizeof(*it));
	if (r->pos >= r->len)
		return KP_RECORD_E_MALFORMED;
	/* libcbor 0.8's decoder refuses the one-byte tag heads 0xC6..0xD4 (tags 6 to 20, tag
	 * 18 COSE_Sign1 among them) as "unassigned"; CBOR says they are well-formed. */
	if (r->buf[r->pos] >= 0xC6 && r->buf[r->pos] <= 0xD4) {
		it->type = KP_CBOR_TAG;
		it->arg = r->buf[r->pos] & 0x1F;
		it->shortest = true;
		r->pos++;
		return KP_RECORD_OK;
	}
	res = cbor_stream_decode(r->buf + r->pos, r->len - r->pos, &item_callbacks, it);
	if (res.status != CBOR_DECODER_FINISHED || res.read == 0 || res.read > r->len - r->pos ||
	    it->type == KP_CBOR_NONE)
		return KP_RECORD_E_MALFORMED;
	head = res.read;
	if (it->type == KP_CBOR_BSTR || it->type == KP_CBOR_TSTR) {
		if (it->arg >= head)
			return KP_RECORD_E_MALFORMED;
		head -= (size_t)it->arg;
	}
	it->shortest = it->type == KP_CBOR_OTHER || head == kp_cbor_head_len(it->arg);
	if (!it->shortest)
		r->noncanonical = true;
	r->pos += res.read;
	return KP_RECORD_OK;
}

int kp_cbor_read_uint(struct kp_cbor_reader *r, uint64_t *v)
{
	struct kp_cbor_item it;
	int rc = kp_cbor_next(r, &it);

	if (rc != KP_RECORD_OK)
		return rc;
	if (it.type != KP_CBOR_UINT)
		return KP_RECORD_E_MALFORMED;
	*v = it.arg;
	return KP_RECORD_OK;
}

int kp_cbor_read_uint63(struct kp_cbor_reader *r, int64_t *v)
{
	uint64_t u;
	int rc = kp_cbor_read_uint(r, &u);

	if (rc != KP_RECORD_OK)
		return rc;
	if (u > INT64_MAX)
		return KP_RECORD_E_INVAL;
	*v = (int64_t)u;
	return KP_RECORD_OK;
}

int kp_cbor_read_int(struct kp_cbor_reader *r, int64_t *v)
{
	struct kp_cbor_item it;
	int rc = kp_cbor_next(r, &it);

	if (rc != KP_RECORD_OK)
		return rc;
	if (it.type != KP_CBOR_UINT && it.type != KP_CBOR_NEGINT)
		return KP_RECORD_E_MALFORMED;
	if (it.arg > INT64_MAX)         /* beyond int64 either way */
		return KP_RECORD_E_INVAL;
	*v = it.type == KP_CBOR_UINT ? (int64_t)it.arg : -1 - (int64_t)it.arg;
	return KP_RECORD_OK;
}

int kp_cbor_read_text(struct kp_cbor_reader *r, char *dst, size_t cap, bool may_be_empty)
{
	struct kp_cbor_item it;
	int rc = kp_cbor_next(r, &it);

	if (rc != KP_RECORD_OK)
		return rc;
	if (it.type != KP_CBOR_TSTR)
		return KP_RECORD_E_MALFORMED;
	if (it.arg >= cap || (it.arg == 0 && !may_be_empty))
		return KP_RECORD_E_INVAL;
	if (memchr(it.data, '\0', (size_t)it.arg) != NULL ||
	    !kp_cbor_utf8_valid(it.data, (size_t)it.arg))
		return KP_RECORD_E_MALFORMED;
	memcpy(dst, it.data, (size_t)it.arg);
	dst[it.arg] = '\0';
	return KP_RECORD_OK;
}

/* Optional record fields are omitted when empty, so an empty id is never a canonical value. */
int kp_cbor_read_id(struct kp_cbor_reader *r, char *dst)
{
	return kp_cbor_read_text(r, dst, KP_ID_MAX + 1, false);
}

int kp_cbor_read_bstr_exact(struct kp_cbor_reader *r, uint8_t *dst, size_t n)
{
	struct kp_cbor_item it;
	int rc = kp_cbor_next(r, &it);

	if (rc != KP_RECORD_OK)
		return rc;
	if (it.type != KP_CBOR_BSTR || it.arg != n)
		return KP_RECORD_E_MALFORMED;
	memcpy(dst, it.data, n);
	return KP_RECORD_OK;
}

int kp_cbor_read_bstr(struct kp_cbor_reader *r, const uint8_t **p, size_t *n)
{
	struct kp_cbor_item it;
	int rc = kp_cbor_next(r, &it);

	if (rc != KP_RECORD_OK)
		return rc;
	if (it.type != KP_CBOR_BSTR)
		return KP_RECORD_E_MALFORMED;
	*p = it.data;
	*n = (size_t)it.arg;
	return KP_RECORD_OK;
}

int kp_cbor_read_key(struct kp_cbor_reader *r, const char *key)
{
	struct kp_cbor_item it;
	size_t n = strlen(key);
	int rc = kp_cbor_next(r, &it);

	if (rc != KP_RECORD_OK)
		return rc;
	if (it.type != KP_CBOR_TSTR || it.arg != n || memcmp(it.data, key, n) != 0)
		return KP_RECORD_E_MALFORMED;
	return KP_RECORD_OK;
}

static int read_head(struct kp_cbor_reader *r, enum kp_cbor_type want, uint64_t *n)
{
	struct kp_cbor_item it;
	int rc = kp_cbor_next(r, &it);

	if (rc != KP_RECORD_OK)
		return rc;
	if (it.type != want)
		return KP_RECORD_E_MALFORMED;
	*n = it.arg;
	return KP_RECORD_OK;
}

int kp_cbor_read_array(struct kp_cbor_reader *r, uint64_t *n)
{
	return read_head(r, KP_CBOR_ARRAY, n);
}

int kp_cbor_read_map(struct kp_cbor_reader *r, uint64_t *n)
{
	return read_head(r, KP_CBOR_MAP, n);
}

int kp_cbor_sync_rc(int record_rc)
{
	switch (record_rc) {
	case KP_RECORD_OK:       return KP_SYNC_OK;
	case KP_RECORD_E_NOMEM:  return KP_SYNC_E_NOMEM;
	case KP_RECORD_E_VERSION: return KP_SYNC_E_VERSION;
	default:                 return KP_SYNC_E_MALFORMED;
	}
}
