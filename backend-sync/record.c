/* kippu journal records: canonical CBOR encoding, strict decoding, COSE_Sign1 (ES256).
 *
 * Encoding builds libcbor items and lets libcbor serialize them; canonical form is ours to
 * keep (libcbor writes integers in the width it is given, so we pick the smallest).
 * Decoding never builds a libcbor tree: cbor_load() allocates what a header claims
 * (a map "of 2^40 pairs" asks for terabytes), so input is walked one item at a time with
 * cbor_stream_decode(), which only reports what is in the buffer. */
#include "kp_record.h"

#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

#include <cbor.h>

#define COSE_TAG_SIGN1   18
#define COSE_HDR_ALG     1
#define COSE_HDR_KID     4
#define RECORD_KEY_MAX   17

/* {1: -7}: alg ES256, the only protected header we write or accept. */
static const uint8_t PROTECTED_ES256[] = { 0xA1, 0x01, 0x26 };

enum rkey {
	K_V = 1, K_TERMINAL, K_SEQ, K_TIME, K_KIND, K_TOKEN, K_OPERATOR, K_ROUTE, K_STOP,
	K_PRODUCT, K_ENT, K_RIDES, K_AMOUNT, K_LEFT, K_RESULT, K_REASON, K_PREV,
};

#define BIT(k) (1u << (k))
#define REQUIRED_KEYS (BIT(K_V) | BIT(K_TERMINAL) | BIT(K_SEQ) | BIT(K_TIME) | BIT(K_KIND) | \
                       BIT(K_OPERATOR) | BIT(K_RIDES) | BIT(K_AMOUNT) | BIT(K_RESULT) |      \
                       BIT(K_REASON) | BIT(K_PREV))

const char *kp_record_strerror(int rc)
{
	switch (rc) {
	case KP_RECORD_OK:          return "ok";
	case KP_RECORD_E_INVAL:     return "record field out of range or too long";
	case KP_RECORD_E_NOMEM:     return "out of memory";
	case KP_RECORD_E_MALFORMED: return "not a record or COSE_Sign1";
	case KP_RECORD_E_CANONICAL: return "not the canonical CBOR encoding";
	case KP_RECORD_E_VERSION:   return "unknown record version or algorithm";
	case KP_RECORD_E_SIGNATURE: return "signature does not verify";
	case KP_RECORD_E_CRYPTO:    return "crypto failure";
	default:                    return "unknown record error";
	}
}

/* ---- text ---- */

/* RFC 3629 UTF-8: no overlong forms, no surrogates, nothing above U+10FFFF. CBOR text
 * strings must be valid UTF-8, and a verifier in another language would reject them. */
static bool utf8_valid(const uint8_t *s, size_t n)
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

/* A field string: NUL-terminated within KP_ID_MAX, valid UTF-8; empty only if allowed. */
static bool id_valid(const char *s, bool may_be_empty)
{
	size_t n = strnlen(s, KP_ID_MAX + 1);

	if (n > KP_ID_MAX || (n == 0 && !may_be_empty))
		return false;
	return utf8_valid((const uint8_t *)s, n);
}

/* ---- encoding ---- */

static int record_check(const struct kp_record *r)
{
	if (r->seq < 1 || r->time_ms < 0 || r->entitlement < 0)
		return KP_RECORD_E_INVAL;
	if (!id_valid(r->terminal, false) || !id_valid(r->kind, false) ||
	    !id_valid(r->operator_id, false) || !id_valid(r->result, false) ||
	    !id_valid(r->reason, false) || !id_valid(r->route, true) ||
	    !id_valid(r->stop, true) || !id_valid(r->product, true))
		return KP_RECORD_E_INVAL;
	return KP_RECORD_OK;
}

/* Shortest form (RFC 8949 4.2.1): libcbor keeps the width it is handed. */
static cbor_item_t *build_uint(uint64_t v)
{
	if (v <= UINT8_MAX)
		return cbor_build_uint8((uint8_t)v);
	if (v <= UINT16_MAX)
		return cbor_build_uint16((uint16_t)v);
	if (v <= UINT32_MAX)
		return cbor_build_uint32((uint32_t)v);
	return cbor_build_uint64(v);
}

static cbor_item_t *build_int(int64_t v)
{
	uint64_t n;

	if (v >= 0)
		return build_uint((uint64_t)v);
	n = (uint64_t)(-(v + 1));       /* CBOR stores -1 - v; cannot overflow for INT64_MIN */
	if (n <= UINT8_MAX)
		return cbor_build_negint8((uint8_t)n);
	if (n <= UINT16_MAX)
		return cbor_build_negint16((uint16_t)n);
	if (n <= UINT32_MAX)
		return cbor_build_negint32((uint32_t)n);
	return cbor_build_negint64(n);
}

static cbor_item_t *build_tstr(const char *s)
{
	return cbor_build_stringn(s, strlen(s));
}

/* Adds key: val to map and drops our reference to val (NULL val = allocation failed). */
static int map_put(cbor_item_t *map, uint8_t key, cbor_item_t *val)
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

/* Appends it to array and drops our reference to it. */
static int array_put(cbor_item_t *array, cbor_item_t *it)
{
	int rc = KP_RECORD_OK;

	if (it == NULL)
		return KP_RECORD_E_NOMEM;
	if (!cbor_array_push(array, it))
		rc = KP_RECORD_E_NOMEM;
	cbor_decref(&it);
	return rc;
}

/* libcbor copies with memcpy even for zero bytes; never hand it NULL. */
static cbor_item_t *build_bstr(const uint8_t *p, size_t n)
{
	static const uint8_t none[1];

	return cbor_build_bytestring(n > 0 ? p : none, n);
}

static int serialize(const cbor_item_t *item, uint8_t **out, size_t *out_len)
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

int kp_record_encode(const struct kp_record *rec, uint8_t **out, size_t *out_len)
{
	cbor_item_t *map = NULL;
	size_t n = 11;                  /* required fields */
	int rc;

	if (out != NULL)
		*out = NULL;
	if (out_len != NULL)
		*out_len = 0;
	if (rec == NULL || out == NULL || out_len == NULL)
		return KP_RECORD_E_INVAL;
	rc = record_check(rec);
	if (rc != KP_RECORD_OK)
		return rc;
	n += (rec->has_token != 0) + (rec->route[0] != '\0') + (rec->stop[0] != '\0') +
	     (rec->product[0] != '\0') + (rec->entitlement != 0) + (rec->has_left != 0);
	map = cbor_new_definite_map(n);
	if (map == NULL)
		return KP_RECORD_E_NOMEM;
	/* Keys in ascending order: all are below 24, so that is also bytewise order. */
	rc = map_put(map, K_V, build_uint(KP_RECORD_VERSION));
	if (rc == KP_RECORD_OK)
		rc = map_put(map, K_TERMINAL, build_tstr(rec->terminal));
	if (rc == KP_RECORD_OK)
		rc = map_put(map, K_SEQ, build_uint(rec->seq));
	if (rc == KP_RECORD_OK)
		rc = map_put(map, K_TIME, build_uint((uint64_t)rec->time_ms));
	if (rc == KP_RECORD_OK)
		rc = map_put(map, K_KIND, build_tstr(rec->kind));
	if (rc == KP_RECORD_OK && rec->has_token)
		rc = map_put(map, K_TOKEN, build_bstr(rec->token, KP_TOKEN_LEN));
	if (rc == KP_RECORD_OK)
		rc = map_put(map, K_OPERATOR, build_tstr(rec->operator_id));
	if (rc == KP_RECORD_OK && rec->route[0] != '\0')
		rc = map_put(map, K_ROUTE, build_tstr(rec->route));
	if (rc == KP_RECORD_OK && rec->stop[0] != '\0')
		rc = map_put(map, K_STOP, build_tstr(rec->stop));
	if (rc == KP_RECORD_OK && rec->product[0] != '\0')
		rc = map_put(map, K_PRODUCT, build_tstr(rec->product));
	if (rc == KP_RECORD_OK && rec->entitlement != 0)
		rc = map_put(map, K_ENT, build_uint((uint64_t)rec->entitlement));
	if (rc == KP_RECORD_OK)
		rc = map_put(map, K_RIDES, build_int(rec->rides));
	if (rc == KP_RECORD_OK)
		rc = map_put(map, K_AMOUNT, build_int(rec->amount));
	if (rc == KP_RECORD_OK && rec->has_left)
		rc = map_put(map, K_LEFT, build_int(rec->left));
	if (rc == KP_RECORD_OK)
		rc = map_put(map, K_RESULT, build_tstr(rec->result));
	if (rc == KP_RECORD_OK)
		rc = map_put(map, K_REASON, build_tstr(rec->reason));
	if (rc == KP_RECORD_OK)
		rc = map_put(map, K_PREV, build_bstr(rec->prev, KP_SHA256_LEN));
	if (rc != KP_RECORD_OK)
		goto out;
	rc = serialize(map, out, out_len);
out:
	cbor_decref(&map);
	return rc;
}

/* ---- decoding: one item at a time ---- */

enum item_type { IT_NONE, IT_UINT, IT_NEGINT, IT_BSTR, IT_TSTR, IT_ARRAY, IT_MAP, IT_TAG, IT_OTHER };

struct item {
	enum item_type type;
	uint64_t arg;           /* value, length or count */
	const uint8_t *data;    /* strings: the content, inside the input */
	bool shortest;          /* the head used the shortest form for arg */
};

struct reader {
	const uint8_t *buf;
	size_t len, pos;
	bool noncanonical;      /* some head was longer than needed */
};

static void it_set(void *ctx, enum item_type t, uint64_t v)
{
	struct item *it = ctx;

	it->type = t;
	it->arg = v;
}

static void cb_uint8(void *c, uint8_t v)   { it_set(c, IT_UINT, v); }
static void cb_uint16(void *c, uint16_t v) { it_set(c, IT_UINT, v); }
static void cb_uint32(void *c, uint32_t v) { it_set(c, IT_UINT, v); }
static void cb_uint64(void *c, uint64_t v) { it_set(c, IT_UINT, v); }
static void cb_neg8(void *c, uint8_t v)    { it_set(c, IT_NEGINT, v); }
static void cb_neg16(void *c, uint16_t v)  { it_set(c, IT_NEGINT, v); }
static void cb_neg32(void *c, uint32_t v)  { it_set(c, IT_NEGINT, v); }
static void cb_neg64(void *c, uint64_t v)  { it_set(c, IT_NEGINT, v); }
static void cb_array(void *c, size_t n)    { it_set(c, IT_ARRAY, n); }
static void cb_map(void *c, size_t n)      { it_set(c, IT_MAP, n); }
static void cb_tag(void *c, uint64_t v)    { it_set(c, IT_TAG, v); }
static void cb_other(void *c)              { it_set(c, IT_OTHER, 0); }
static void cb_float(void *c, float v)     { (void)v; it_set(c, IT_OTHER, 0); }
static void cb_double(void *c, double v)   { (void)v; it_set(c, IT_OTHER, 0); }
static void cb_bool(void *c, bool v)       { (void)v; it_set(c, IT_OTHER, 0); }

static void cb_bstr(void *c, cbor_data d, size_t n)
{
	it_set(c, IT_BSTR, n);
	((struct item *)c)->data = d;
}

static void cb_tstr(void *c, cbor_data d, size_t n)
{
	it_set(c, IT_TSTR, n);
	((struct item *)c)->data = d;
}

/* Indefinite-length starts, break, simple values and floats all become IT_OTHER, which
 * no record or COSE field accepts. */
static const struct cbor_callbacks item_callbacks = {
	.uint8 = cb_uint8, .uint16 = cb_uint16, .uint32 = cb_uint32, .uint64 = cb_uint64,
	.negint8 = cb_neg8, .negint16 = cb_neg16, .negint32 = cb_neg32, .negint64 = cb_neg64,
	.byte_string_start = cb_other, .byte_string = cb_bstr,
	.string = cb_tstr, .string_start = cb_other,
	.indef_array_start = cb_other, .array_start = cb_array,
	.indef_map_start = cb_other, .map_start = cb_map,
	.tag = cb_tag,
	.float2 = cb_float, .float4 = cb_float, .float8 = cb_double,
	.undefined = cb_other, .null = cb_other, .boolean = cb_bool,
	.indef_break = cb_other,
};

static size_t head_len(uint64_t arg)
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

/* Reads the next item's head (and a string's content). Truncation, reserved values and
 * anything libcbor cannot decode are KP_RECORD_E_MALFORMED. */
static int reader_next(struct reader *r, struct item *it)
{
	struct cbor_decoder_result res;
	size_t head;

	memset(it, 0, sizeof(*it));
	if (r->pos >= r->len)
		return KP_RECORD_E_MALFORMED;
	res = cbor_stream_decode(r->buf + r->pos, r->len - r->pos, &item_callbacks, it);
	if (res.status != CBOR_DECODER_FINISHED || res.read == 0 || res.read > r->len - r->pos ||
	    it->type == IT_NONE)
		return KP_RECORD_E_MALFORMED;
	head = res.read;
	if (it->type == IT_BSTR || it->type == IT_TSTR) {
		if (it->arg >= head)
			return KP_RECORD_E_MALFORMED;
		head -= (size_t)it->arg;
	}
	it->shortest = it->type == IT_OTHER || head == head_len(it->arg);
	if (!it->shortest)
		r->noncanonical = true;
	r->pos += res.read;
	return KP_RECORD_OK;
}

static int read_uint(struct reader *r, uint64_t *v)
{
	struct item it;
	int rc = reader_next(r, &it);

	if (rc != KP_RECORD_OK)
		return rc;
	if (it.type != IT_UINT)
		return KP_RECORD_E_MALFORMED;
	*v = it.arg;
	return KP_RECORD_OK;
}

/* A uint in 0..INT64_MAX. */
static int read_uint63(struct reader *r, int64_t *v)
{
	uint64_t u;
	int rc = read_uint(r, &u);

	if (rc != KP_RECORD_OK)
		return rc;
	if (u > INT64_MAX)
		return KP_RECORD_E_INVAL;
	*v = (int64_t)u;
	return KP_RECORD_OK;
}

static int read_int(struct reader *r, int64_t *v)
{
	struct item it;
	int rc = reader_next(r, &it);

	if (rc != KP_RECORD_OK)
		return rc;
	if (it.type != IT_UINT && it.type != IT_NEGINT)
		return KP_RECORD_E_MALFORMED;
	if (it.arg > INT64_MAX)         /* beyond int64 either way */
		return KP_RECORD_E_INVAL;
	*v = it.type == IT_UINT ? (int64_t)it.arg : -1 - (int64_t)it.arg;
	return KP_RECORD_OK;
}

/* A text field into dst[KP_ID_MAX + 1]. Optional fields are omitted when empty, so an
 * empty string is never a canonical value. */
static int read_tstr(struct reader *r, char *dst)
{
	struct item it;
	int rc = reader_next(r, &it);

	if (rc != KP_RECORD_OK)
		return rc;
	if (it.type != IT_TSTR)
		return KP_RECORD_E_MALFORMED;
	if (it.arg == 0 || it.arg > KP_ID_MAX)
		return KP_RECORD_E_INVAL;
	if (memchr(it.data, '\0', (size_t)it.arg) != NULL || !utf8_valid(it.data, (size_t)it.arg))
		return KP_RECORD_E_MALFORMED;
	memcpy(dst, it.data, (size_t)it.arg);
	dst[it.arg] = '\0';
	return KP_RECORD_OK;
}

static int read_bstr_exact(struct reader *r, uint8_t *dst, size_t n)
{
	struct item it;
	int rc = reader_next(r, &it);

	if (rc != KP_RECORD_OK)
		return rc;
	if (it.type != IT_BSTR || it.arg != n)
		return KP_RECORD_E_MALFORMED;
	memcpy(dst, it.data, n);
	return KP_RECORD_OK;
}

static int decode_field(struct reader *r, unsigned key, struct kp_record *rec)
{
	uint64_t u;
	int rc;

	switch (key) {
	case K_V:
		rc = read_uint(r, &u);
		if (rc == KP_RECORD_OK && u != KP_RECORD_VERSION)
			rc = KP_RECORD_E_VERSION;
		return rc;
	case K_TERMINAL: return read_tstr(r, rec->terminal);
	case K_SEQ:
		rc = read_uint(r, &rec->seq);
		if (rc == KP_RECORD_OK && rec->seq == 0)
			rc = KP_RECORD_E_INVAL;
		return rc;
	case K_TIME:     return read_uint63(r, &rec->time_ms);
	case K_KIND:     return read_tstr(r, rec->kind);
	case K_TOKEN:
		rec->has_token = 1;
		return read_bstr_exact(r, rec->token, KP_TOKEN_LEN);
	case K_OPERATOR: return read_tstr(r, rec->operator_id);
	case K_ROUTE:    return read_tstr(r, rec->route);
	case K_STOP:     return read_tstr(r, rec->stop);
	case K_PRODUCT:  return read_tstr(r, rec->product);
	case K_ENT:
		rc = read_uint63(r, &rec->entitlement);
		if (rc == KP_RECORD_OK && rec->entitlement == 0)
			rc = KP_RECORD_E_INVAL;         /* 0 means absent: it is never sent */
		return rc;
	case K_RIDES:    return read_int(r, &rec->rides);
	case K_AMOUNT:   return read_int(r, &rec->amount);
	case K_LEFT:
		rec->has_left = 1;
		return read_int(r, &rec->left);
	case K_RESULT:   return read_tstr(r, rec->result);
	case K_REASON:   return read_tstr(r, rec->reason);
	case K_PREV:     return read_bstr_exact(r, rec->prev, KP_SHA256_LEN);
	default:         return KP_RECORD_E_MALFORMED;
	}
}

int kp_record_decode(const uint8_t *buf, size_t len, struct kp_record *rec)
{
	struct reader r = { .buf = buf, .len = len };
	struct item it;
	uint8_t *again = NULL;
	size_t again_len = 0;
	uint32_t seen = 0;
	uint64_t i, last_key = 0;
	bool out_of_order = false;
	int rc;

	if (rec == NULL || (buf == NULL && len > 0))
		return KP_RECORD_E_INVAL;
	memset(rec, 0, sizeof(*rec));
	rc = reader_next(&r, &it);
	if (rc != KP_RECORD_OK)
		goto out;
	if (it.type != IT_MAP || it.arg > RECORD_KEY_MAX) {     /* 17 keys at most, each once */
		rc = KP_RECORD_E_MALFORMED;
		goto out;
	}
	for (i = 0; i < it.arg; i++) {
		struct item key;

		rc = reader_next(&r, &key);
		if (rc != KP_RECORD_OK)
			goto out;
		if (key.type != IT_UINT || key.arg < K_V || key.arg > K_PREV ||
		    (seen & BIT(key.arg)) != 0) {
			rc = KP_RECORD_E_MALFORMED;
			goto out;
		}
		seen |= BIT(key.arg);
		if (key.arg < last_key)
			out_of_order = true;
		last_key = key.arg;
		rc = decode_field(&r, (unsigned)key.arg, rec);
		if (rc != KP_RECORD_OK)
			goto out;
	}
	if (r.pos != r.len || (seen & REQUIRED_KEYS) != REQUIRED_KEYS) {
		rc = KP_RECORD_E_MALFORMED;
		goto out;
	}
	if (out_of_order || r.noncanonical) {
		rc = KP_RECORD_E_CANONICAL;
		goto out;
	}
	/* The checks above should leave nothing but the canonical form; re-encoding proves it,
	 * so that a record is stored and hashed only in the bytes it was signed in. */
	rc = kp_record_encode(rec, &again, &again_len);
	if (rc != KP_RECORD_OK)
		goto out;
	if (again_len != len || memcmp(again, buf, len) != 0) {
		rc = KP_RECORD_E_CANONICAL;
		goto out;
	}
out:
	free(again);
	if (rc != KP_RECORD_OK)
		memset(rec, 0, sizeof(*rec));
	return rc;
}

/* ---- COSE_Sign1 ---- */

int kp_cose_sig_structure(const uint8_t *payload, size_t payload_len, uint8_t **out,
                          size_t *out_len)
{
	static const char context[] = "Signature1";
	cbor_item_t *arr = NULL;
	int rc;

	if (out != NULL)
		*out = NULL;
	if (out_len != NULL)
		*out_len = 0;
	if ((payload == NULL && payload_len > 0) || out == NULL || out_len == NULL)
		return KP_RECORD_E_INVAL;
	arr = cbor_new_definite_array(4);
	if (arr == NULL)
		return KP_RECORD_E_NOMEM;
	rc = array_put(arr, cbor_build_stringn(context, sizeof(context) - 1));
	if (rc == KP_RECORD_OK)
		rc = array_put(arr, build_bstr(PROTECTED_ES256, sizeof(PROTECTED_ES256)));
	if (rc == KP_RECORD_OK)
		rc = array_put(arr, build_bstr(NULL, 0));   /* external_aad: none */
	if (rc == KP_RECORD_OK)
		rc = array_put(arr, build_bstr(payload, payload_len));
	if (rc == KP_RECORD_OK)
		rc = serialize(arr, out, out_len);
	cbor_decref(&arr);
	return rc;
}

static int sig_hash(const uint8_t *payload, size_t payload_len, uint8_t hash[KP_SHA256_LEN])
{
	uint8_t *tbs = NULL;
	size_t tbs_len = 0;
	int rc;

	rc = kp_cose_sig_structure(payload, payload_len, &tbs, &tbs_len);
	if (rc != KP_RECORD_OK)
		goto out;
	if (kp_sha256(tbs, tbs_len, hash) != KP_CRYPTO_OK)
		rc = KP_RECORD_E_CRYPTO;
out:
	free(tbs);
	return rc;
}

int kp_cose_sign1(const kp_key *key, const char *kid, const uint8_t *payload, size_t payload_len,
                  uint8_t **out, size_t *out_len)
{
	uint8_t hash[KP_SHA256_LEN], sig[KP_ES256_SIG_LEN];
	cbor_item_t *arr = NULL, *hdr = NULL, *tagged = NULL;
	size_t kid_len;
	int rc;

	if (out != NULL)
		*out = NULL;
	if (out_len != NULL)
		*out_len = 0;
	if (key == NULL || kid == NULL || (payload == NULL && payload_len > 0) || out == NULL ||
	    out_len == NULL)
		return KP_RECORD_E_INVAL;
	kid_len = strnlen(kid, KP_ID_MAX + 1);
	if (kid_len == 0 || kid_len > KP_ID_MAX)
		return KP_RECORD_E_INVAL;
	rc = sig_hash(payload, payload_len, hash);
	if (rc != KP_RECORD_OK)
		goto out;
	rc = kp_key_sign(key, hash, sig);
	if (rc != KP_CRYPTO_OK) {
		rc = rc == KP_CRYPTO_E_NOMEM ? KP_RECORD_E_NOMEM : KP_RECORD_E_CRYPTO;
		goto out;
	}
	arr = cbor_new_definite_array(4);
	hdr = cbor_new_definite_map(1);
	if (arr == NULL || hdr == NULL) {
		rc = KP_RECORD_E_NOMEM;
		goto out;
	}
	rc = map_put(hdr, COSE_HDR_KID, build_bstr((const uint8_t *)kid, kid_len));
	if (rc == KP_RECORD_OK)
		rc = array_put(arr, build_bstr(PROTECTED_ES256, sizeof(PROTECTED_ES256)));
	if (rc == KP_RECORD_OK) {
		rc = array_put(arr, hdr);       /* array_put drops our reference */
		hdr = NULL;
	}
	if (rc == KP_RECORD_OK)
		rc = array_put(arr, build_bstr(payload, payload_len));
	if (rc == KP_RECORD_OK)
		rc = array_put(arr, build_bstr(sig, sizeof(sig)));
	if (rc != KP_RECORD_OK)
		goto out;
	tagged = cbor_build_tag(COSE_TAG_SIGN1, arr);
	if (tagged == NULL) {
		rc = KP_RECORD_E_NOMEM;
		goto out;
	}
	rc = serialize(tagged, out, out_len);
out:
	if (tagged != NULL)
		cbor_decref(&tagged);
	if (hdr != NULL)
		cbor_decref(&hdr);
	if (arr != NULL)
		cbor_decref(&arr);
	return rc;
}

int kp_cose_verify1(const kp_cert *cert, const uint8_t *cose, size_t cose_len,
                    const uint8_t **payload, size_t *payload_len, char *kid, size_t kid_cap)
{
	struct reader r = { .buf = cose, .len = cose_len };
	struct item it, prot, key, kid_it, body, sig;
	uint8_t hash[KP_SHA256_LEN];
	int rc;

	if (payload != NULL)
		*payload = NULL;
	if (payload_len != NULL)
		*payload_len = 0;
	if (kid != NULL && kid_cap > 0)
		kid[0] = '\0';
	if (cert == NULL || (cose == NULL && cose_len > 0) || payload == NULL ||
	    payload_len == NULL || (kid != NULL && kid_cap == 0))
		return KP_RECORD_E_INVAL;
	/* libcbor 0.8's decoder rejects the one-byte tag heads 0xC6..0xD4 (tag 18 is 0xD2)
	 * as "unassigned", so the tag is read here. */
	if (cose_len == 0)
		return KP_RECORD_E_MALFORMED;
	if (cose[0] == 0xC0 + COSE_TAG_SIGN1) {
		r.pos = 1;
	} else {
		rc = reader_next(&r, &it);
		if (rc != KP_RECORD_OK)
			return rc;
		/* tag 18 in a longer head is still COSE_Sign1, just not canonical */
		if (it.type != IT_TAG || it.arg != COSE_TAG_SIGN1)
			return KP_RECORD_E_MALFORMED;
	}
	rc = reader_next(&r, &it);
	if (rc != KP_RECORD_OK)
		return rc;
	if (it.type != IT_ARRAY || it.arg != 4)
		return KP_RECORD_E_MALFORMED;
	/* protected: exactly {1: -7} */
	rc = reader_next(&r, &prot);
	if (rc != KP_RECORD_OK)
		return rc;
	if (prot.type != IT_BSTR)
		return KP_RECORD_E_MALFORMED;
	if (prot.arg != sizeof(PROTECTED_ES256) ||
	    memcmp(prot.data, PROTECTED_ES256, sizeof(PROTECTED_ES256)) != 0)
		return KP_RECORD_E_VERSION;
	/* unprotected: exactly {4: kid} */
	rc = reader_next(&r, &it);
	if (rc != KP_RECORD_OK)
		return rc;
	if (it.type != IT_MAP || it.arg != 1)
		return KP_RECORD_E_MALFORMED;
	rc = reader_next(&r, &key);
	if (rc == KP_RECORD_OK)
		rc = reader_next(&r, &kid_it);
	if (rc != KP_RECORD_OK)
		return rc;
	if (key.type != IT_UINT || key.arg != COSE_HDR_KID || kid_it.type != IT_BSTR ||
	    kid_it.arg == 0 || kid_it.arg > KP_ID_MAX ||
	    memchr(kid_it.data, '\0', (size_t)kid_it.arg) != NULL)
		return KP_RECORD_E_MALFORMED;
	/* payload (attached) and signature */
	rc = reader_next(&r, &body);
	if (rc == KP_RECORD_OK)
		rc = reader_next(&r, &sig);
	if (rc != KP_RECORD_OK)
		return rc;
	if (body.type != IT_BSTR || sig.type != IT_BSTR || sig.arg != KP_ES256_SIG_LEN)
		return KP_RECORD_E_MALFORMED;
	if (r.pos != r.len)
		return KP_RECORD_E_MALFORMED;
	/* One encoding per record, so stored copies can be compared byte for byte. */
	if (r.noncanonical || cose[0] != 0xC0 + COSE_TAG_SIGN1)
		return KP_RECORD_E_CANONICAL;

	rc = sig_hash(body.data, (size_t)body.arg, hash);
	if (rc != KP_RECORD_OK)
		return rc;
	rc = kp_cert_verify(cert, hash, sig.data);
	if (rc == KP_CRYPTO_E_VERIFY)
		return KP_RECORD_E_SIGNATURE;
	if (rc == KP_CRYPTO_E_NOMEM)
		return KP_RECORD_E_NOMEM;
	if (rc != KP_CRYPTO_OK)
		return KP_RECORD_E_CRYPTO;
	if (kid != NULL) {
		if (kid_it.arg >= kid_cap)
			return KP_RECORD_E_INVAL;
		memcpy(kid, kid_it.data, (size_t)kid_it.arg);
		kid[kid_it.arg] = '\0';
	}
	*payload = body.data;
	*payload_len = (size_t)body.arg;
	return KP_RECORD_OK;
}
