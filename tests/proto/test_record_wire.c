/* SPDX-License-Identifier: Apache-2.0 */
/* Unit tests of backend-sync's wire protocol (wire.c), config bundle (bundle.c) and the
 * client exchange (client.c), the latter over an in-memory peer instead of TLS.
 *
 * How the byte vectors were computed: by hand from RFC 8949, not with our encoder or
 * libcbor. A head is major type << 5 | argument when the argument is below 24, else
 * | 24/25/26/27 followed by 1/2/4/8 big-endian bytes (section 3); text keys are sorted by
 * their encoded bytes (section 4.2.1), which for keys shorter than 24 bytes means shorter
 * keys first, then bytewise ("t" 0x6174 < "v" 0x6176 < "seq" 0x63.. < "acked" 0x65..).
 * Strings were spelled out from an ASCII table. Every message and bundle the tests encode is
 * also run through det_item() below, a separate ~50-line checker of RFC 8949 deterministic
 * encoding that knows nothing of our key tables. */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "kp_proto.h"
#include "kp_bundle.h"
#include "kp_client.h"
#include "testutil.h"

/* ---- helpers ---- */

struct buf {
	uint8_t b[4096];
	size_t n;
};

static struct buf hex(const char *h)
{
	struct buf o;

	o.n = tu_hex(h, o.b, sizeof(o.b));
	return o;
}

static uint32_t lcg(uint32_t *s)
{
	*s = *s * 1664525u + 1013904223u;
	return *s >> 8;
}

/* Length of the deterministically encoded (RFC 8949 4.2.1) item at p, 0 if it is not:
 * shortest heads, definite lengths, map keys in bytewise lexicographic order of their
 * encodings. Covers what our formats use: integers, strings, arrays, maps, null, tag 18. */
static size_t det_item(const uint8_t *p, size_t n, int depth)
{
	static const uint64_t min_for[] = { 24, 0x100, 0x10000, 0x100000000ull };
	uint8_t major, ai;
	uint64_t arg = 0, i;
	size_t h, len, k;

	if (n < 1 || depth > 16)
		return 0;
	major = p[0] >> 5;
	ai = p[0] & 31;
	if (major == 7)
		return p[0] == 0xF6 ? 1 : 0;
	if (ai < 24) {
		arg = ai;
		h = 1;
	} else if (ai <= 27) {
		h = 1 + ((size_t)1 << (ai - 24));
		if (n < h)
			return 0;
		for (i = 1; i < h; i++)
			arg = arg << 8 | p[i];
		if (arg < min_for[ai - 24])
			return 0;               /* a longer head than needed */
	} else {
		return 0;                       /* indefinite or reserved */
	}
	switch (major) {
	case 0: case 1:
		return h;
	case 2: case 3:
		return arg <= n - h ? h + (size_t)arg : 0;
	case 4:
		for (len = h, i = 0; i < arg; i++, len += k) {
			k = det_item(p + len, n - len, depth + 1);
			if (k == 0)
				return 0;
		}
		return len;
	case 5: {
		const uint8_t *prev = NULL;
		size_t prev_len = 0;

		for (len = h, i = 0; i < arg; i++) {
			size_t kl = det_item(p + len, n - len, depth + 1), m, vl;
			int c;

			if (kl == 0)
				return 0;
			if (prev != NULL) {
				m = prev_len < kl ? prev_len : kl;
				c = memcmp(prev, p + len, m);
				if (c > 0 || (c == 0 && prev_len >= kl))
					return 0;       /* not ascending, or a duplicate */
			}
			prev = p + len;
			prev_len = kl;
			len += kl;
			vl = det_item(p + len, n - len, depth + 1);
			if (vl == 0)
				return 0;
			len += vl;
		}
		return len;
	}
	case 6:
		if (arg != 18 || h != 1)
			return 0;
		k = det_item(p + 1, n - 1, depth + 1);
		return k != 0 ? 1 + k : 0;
	}
	return 0;
}

static void assert_deterministic(const uint8_t *p, size_t n)
{
	assert_int_equal(det_item(p, n, 0), n);
}

/* ---- messages ---- */

static const uint8_t ITEM1[] = { 0x01 };
static const uint8_t ITEM2[] = { 0x02, 0x03 };
static uint8_t ITEM3[24];
static struct kp_bytes sample_items[3] = {
	{ ITEM1, sizeof(ITEM1) }, { ITEM2, sizeof(ITEM2) }, { ITEM3, sizeof(ITEM3) },
};
static const uint8_t BUNDLE_BYTES[] = { 0xD2, 0x84, 0x40 };   /* opaque to the wire layer */

/* One message of each kind, only its own fields set. */
static struct kp_msg sample(enum kp_msg_type t, int variant)
{
	struct kp_msg m;

	memset(&m, 0, sizeof(m));
	memset(ITEM3, 0xAA, sizeof(ITEM3));
	m.type = t;
	switch (t) {
	case KP_MSG_HELLO:
		strcpy(m.terminal, "bus-042");
		m.config = 300;
		break;
	case KP_MSG_WELCOME:
	case KP_MSG_ACK:
		m.acked = variant ? UINT64_MAX : 16;
		break;
	case KP_MSG_RECORDS:
		m.items = sample_items;
		m.n_items = 3;
		break;
	case KP_MSG_REFUSED:
		m.acked = 16;
		m.seq = 17;
		strcpy(m.reason, "bad signature");
		break;
	case KP_MSG_GETCONFIG:
	case KP_MSG_GETDELTA:
		m.config = variant ? 0 : 4294967296ull;
		break;
	case KP_MSG_CONFIG:
	case KP_MSG_DELTA:
		if (variant) {
			m.has_bundle = 1;
			m.bundle.p = BUNDLE_BYTES;
			m.bundle.n = sizeof(BUNDLE_BYTES);
		}
		break;
	case KP_MSG_BYE:
		break;
	case KP_MSG_ERROR:
		strcpy(m.reason, variant ? "" : "関西: backend store unavailable");
		break;
	}
	return m;
}

static void assert_msg_equal(const struct kp_msg *a, const struct kp_msg *b)
{
	size_t i;

	assert_int_equal(a->type, b->type);
	assert_string_equal(a->terminal, b->terminal);
	assert_true(a->config == b->config);
	assert_true(a->acked == b->acked);
	assert_true(a->seq == b->seq);
	assert_string_equal(a->reason, b->reason);
	assert_int_equal(a->n_items, b->n_items);
	for (i = 0; i < a->n_items; i++) {
		assert_int_equal(a->items[i].n, b->items[i].n);
		assert_memory_equal(a->items[i].p, b->items[i].p, a->items[i].n);
	}
	assert_int_equal(a->has_bundle, b->has_bundle);
	if (a->has_bundle) {
		assert_int_equal(a->bundle.n, b->bundle.n);
		assert_memory_equal(a->bundle.p, b->bundle.p, a->bundle.n);
	}
}

static void test_msg_roundtrip(void **state)
{
	int t, variant;

	(void)state;
	for (t = KP_MSG_HELLO; t <= KP_MSG_LAST; t++) {
		for (variant = 0; variant < 2; variant++) {
			struct kp_msg m = sample((enum kp_msg_type)t, variant), d;
			uint8_t *out = NULL, *again = NULL;
			size_t n = 0, n2 = 0;

			assert_int_equal(kp_msg_encode(&m, &out, &n), KP_SYNC_OK);
			assert_deterministic(out, n);
			memset(&d, 0x5A, sizeof(d));
			assert_int_equal(kp_msg_decode(out, n, &d), KP_SYNC_OK);
			assert_msg_equal(&m, &d);
			assert_int_equal(kp_msg_encode(&d, &again, &n2), KP_SYNC_OK);
			assert_int_equal(n2, n);
			assert_memory_equal(again, out, n);
			kp_msg_clear(&d);
			free(out);
			free(again);
		}
	}
	assert_string_equal(kp_msg_type_name(KP_MSG_HELLO), "hello");
	assert_string_equal(kp_msg_type_name(KP_MSG_GETCONFIG), "getconfig");
	assert_string_equal(kp_msg_type_name(KP_MSG_ERROR), "error");
	assert_string_equal(kp_msg_type_name((enum kp_msg_type)0), "unknown");
	assert_string_equal(kp_msg_type_name((enum kp_msg_type)99), "unknown");
	assert_string_equal(kp_sync_strerror(KP_SYNC_E_STALE),
	                    "bundle is not newer than the one applied");
	assert_string_equal(kp_sync_strerror(-1), "unknown sync error");
}

/* Hand-computed (see the top of the file). */
static const char HELLO_HEX[] =
	"A4"                                    /* map of 4 */
	"6174" "6568656C6C6F"                   /* "t": "hello" */
	"6176" "01"                             /* "v": 1 */
	"66636F6E666967" "19012C"               /* "config": 300 (0x012C in a 2-byte head) */
	"687465726D696E616C" "676275732D303432"; /* "terminal": "bus-042" */
static const char RECORDS_HEX[] =
	"A3"
	"6174" "677265636F726473"               /* "t": "records" */
	"6176" "01"
	"656974656D73" "83"                     /* "items": array of 3 */
	"4101" "420203"                         /* h'01', h'0203' */
	"5818" "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA"; /* 24 bytes: 1-byte length */
static const char REFUSED_HEX[] =
	"A5" "6174" "67726566757365" "64" "6176" "01"
	"63736571" "11"                         /* "seq": 17 */
	"6561636B6564" "10"                     /* "acked": 16 */
	"66726561736F6E" "6D626164207369676E6174757265"; /* "reason": "bad signature" */
static const char BYE_HEX[] = "A2" "6174" "63627965" "6176" "01";
static const char CONFIG_NONE_HEX[] =
	"A3" "6174" "66636F6E666967" "6176" "01" "6662756E646C65" "F6"; /* "bundle": null */

static void test_msg_vectors(void **state)
{
	static const struct { enum kp_msg_type t; const char *hex; } v[] = {
		{ KP_MSG_HELLO, HELLO_HEX }, { KP_MSG_RECORDS, RECORDS_HEX },
		{ KP_MSG_REFUSED, REFUSED_HEX }, { KP_MSG_BYE, BYE_HEX },
		{ KP_MSG_CONFIG, CONFIG_NONE_HEX },
	};
	size_t i;

	(void)state;
	for (i = 0; i < sizeof(v) / sizeof(v[0]); i++) {
		struct kp_msg m = sample(v[i].t, 0), d;
		struct buf want = hex(v[i].hex);
		uint8_t *out = NULL;
		size_t n = 0;

		assert_int_equal(kp_msg_encode(&m, &out, &n), KP_SYNC_OK);
		assert_int_equal(n, want.n);
		assert_memory_equal(out, want.b, n);
		assert_int_equal(kp_msg_decode(want.b, want.n, &d), KP_SYNC_OK);
		assert_msg_equal(&m, &d);
		kp_msg_clear(&d);
		free(out);
	}
}

static void test_msg_encode_rejects(void **state)
{
	struct kp_bytes bad_items[2] = { { ITEM1, 1 }, { NULL, 0 } };
	struct kp_bytes empty_item[1] = { { ITEM1, 0 } };
	struct kp_msg m;
	uint8_t *out = (uint8_t *)1;
	size_t n = 1;
	int i;

	(void)state;
	for (i = 0; i < 14; i++) {
		switch (i) {
		case 0:  m = sample(KP_MSG_HELLO, 0); m.terminal[0] = '\0'; break;
		case 1:  m = sample(KP_MSG_HELLO, 0); memset(m.terminal, 'x', sizeof(m.terminal)); break;
		case 2:  m = sample(KP_MSG_HELLO, 0); strcpy(m.terminal, "\xC3\x28"); break;
		case 3:  m = sample(KP_MSG_ERROR, 0); memset(m.reason, 'x', sizeof(m.reason)); break;
		case 4:  m = sample(KP_MSG_REFUSED, 0); strcpy(m.reason, "\xED\xA0\x80"); break;
		case 5:  m = sample(KP_MSG_RECORDS, 0); m.n_items = 0; break;
		case 6:  m = sample(KP_MSG_RECORDS, 0); m.n_items = KP_SYNC_BATCH_MAX + 1; break;
		case 7:  m = sample(KP_MSG_RECORDS, 0); m.items = NULL; break;
		case 8:  m = sample(KP_MSG_RECORDS, 0); m.items = bad_items; m.n_items = 2; break;
		case 9:  m = sample(KP_MSG_RECORDS, 0); m.items = empty_item; m.n_items = 1; break;
		case 10: m = sample(KP_MSG_CONFIG, 1); m.bundle.p = NULL; break;
		case 11: m = sample(KP_MSG_CONFIG, 1); m.bundle.n = 0; break;
		case 12: m = sample(KP_MSG_BYE, 0); m.type = (enum kp_msg_type)0; break;
		case 13: m = sample(KP_MSG_BYE, 0); m.type = (enum kp_msg_type)(KP_MSG_LAST + 1); break;
		}
		assert_int_equal(kp_msg_encode(&m, &out, &n), KP_SYNC_E_INVAL);
		assert_null(out);
		assert_int_equal(n, 0);
	}
	m = sample(KP_MSG_BYE, 0);
	assert_int_equal(kp_msg_encode(NULL, &out, &n), KP_SYNC_E_INVAL);
	assert_int_equal(kp_msg_encode(&m, NULL, &n), KP_SYNC_E_INVAL);
	assert_int_equal(kp_msg_encode(&m, &out, NULL), KP_SYNC_E_INVAL);
}

static int msg_decode(const uint8_t *p, size_t n, void *m) { return kp_msg_decode(p, n, m); }
static int msg_encode(const void *m, uint8_t **out, size_t *n) { return kp_msg_encode(m, out, n); }
static void msg_clear(void *m) { kp_msg_clear(m); }

static int bundle_decode(const uint8_t *p, size_t n, void *b) { return kp_bundle_decode(p, n, b); }
static int bundle_encode(const void *b, uint8_t **out, size_t *n) { return kp_bundle_encode(b, out, n); }
static void bundle_clear(void *b) { kp_bundle_free(b); }

/* What decode answers to the hex h (obj is cleared again). */
static int decode_hex_as(const char *h, void *obj, int (*decode)(const uint8_t *, size_t, void *),
                         void (*clear)(void *))
{
	struct buf b = hex(h);
	int rc = decode(b.b, b.n, obj);

	clear(obj);
	return rc;
}

static int decode_hex(const char *h)
{
	struct kp_msg m;

	return decode_hex_as(h, &m, msg_decode, msg_clear);
}

static void test_msg_decode_rejects(void **state)
{
#define T_HELLO "6174" "6568656C6C6F"
#define T_WELC  "6174" "6777656C636F6D65"
#define T_REC   "6174" "677265636F726473"
#define T_CONF  "6174" "66636F6E666967"
#define T_BYE   "6174" "63627965"
#define V1      "6176" "01"
#define CFG     "66636F6E666967" "07"
#define TERM    "687465726D696E616C" "676275732D303432"
#define ACKED   "6561636B6564"
#define ITEMS   "656974656D73"
#define BUNDLE  "6662756E646C65"
#define LAST    "646C617374"
	static const struct { const char *hex; int rc; const char *what; } t[] = {
		{ "", KP_SYNC_E_MALFORMED, "empty" },
		{ "84" T_HELLO V1 CFG TERM, KP_SYNC_E_MALFORMED, "array, not map" },
		{ "BF" T_HELLO V1 CFG TERM "FF", KP_SYNC_E_MALFORMED, "indefinite map" },
		{ "A5" T_HELLO V1 CFG TERM "63666F6F00", KP_SYNC_E_MALFORMED, "unknown key" },
		{ "A5" T_HELLO V1 "6161" "00" CFG TERM, KP_SYNC_E_MALFORMED, "unknown key 'a'" },
		{ "A3" T_HELLO V1 CFG, KP_SYNC_E_MALFORMED, "terminal missing" },
		{ "A3" T_HELLO V1 TERM, KP_SYNC_E_MALFORMED, "config missing" },
		{ "A3" "6176" "01" CFG TERM, KP_SYNC_E_MALFORMED, "type missing" },
		{ "A3" T_HELLO CFG TERM, KP_SYNC_E_MALFORMED, "version missing" },
		{ "A5" T_HELLO V1 CFG CFG TERM, KP_SYNC_E_MALFORMED, "duplicate key" },
		{ "A5" T_HELLO T_HELLO V1 CFG TERM, KP_SYNC_E_MALFORMED, "duplicate type" },
		{ "A4" T_HELLO V1 TERM CFG, KP_SYNC_E_MALFORMED, "keys out of order" },
		{ "A4" V1 T_HELLO CFG TERM, KP_SYNC_E_MALFORMED, "v before t" },
		{ "A4" T_HELLO "6176" "02" CFG TERM, KP_SYNC_E_VERSION, "version 2" },
		{ "A4" T_HELLO "6176" "00" CFG TERM, KP_SYNC_E_VERSION, "version 0" },
		{ "A2" "6174" "636E6577" "6176" "02", KP_SYNC_E_VERSION, "version 2, new type" },
		{ "A4" T_HELLO "6176" "1801" CFG TERM, KP_SYNC_E_MALFORMED, "version in 2 bytes" },
		{ "A4" T_HELLO "6176" "6131" CFG TERM, KP_SYNC_E_MALFORMED, "version as text" },
		{ "A4" T_HELLO "6176" "20" CFG TERM, KP_SYNC_E_MALFORMED, "version -1" },
		{ "A4" T_HELLO V1 "66636F6E666967" "20" TERM, KP_SYNC_E_MALFORMED, "config -1" },
		{ "A4" T_HELLO V1 "66636F6E666967" "1807" TERM, KP_SYNC_E_MALFORMED, "config long head" },
		{ "A4" T_HELLO V1 "66636F6E666967" "F93C00" TERM, KP_SYNC_E_MALFORMED, "config float" },
		{ "A4" T_HELLO V1 "66636F6E666967" "F6" TERM, KP_SYNC_E_MALFORMED, "config null" },
		{ "A4" T_HELLO V1 CFG "687465726D696E616C" "476275732D303432", KP_SYNC_E_MALFORMED,
		  "terminal as bytes" },
		{ "A4" T_HELLO V1 CFG "687465726D696E616C" "60", KP_SYNC_E_MALFORMED, "empty terminal" },
		{ "A4" T_HELLO V1 CFG "687465726D696E616C" "7821"
		  "414141414141414141414141414141414141414141414141414141414141414141",
		  KP_SYNC_E_MALFORMED, "terminal of 33 bytes" },
		{ "A4" T_HELLO V1 CFG "687465726D696E616C" "62410042", KP_SYNC_E_MALFORMED,
		  "NUL in terminal" },
		{ "A4" T_HELLO V1 CFG "687465726D696E616C" "62C328", KP_SYNC_E_MALFORMED,
		  "invalid UTF-8" },
		{ "A4" T_HELLO V1 CFG "687465726D696E616C" "7F62627573FF", KP_SYNC_E_MALFORMED,
		  "indefinite text" },
		{ "A4" T_HELLO V1 CFG TERM "00", KP_SYNC_E_MALFORMED, "trailing byte" },
		{ "A4" T_HELLO V1 CFG TERM "A0", KP_SYNC_E_MALFORMED, "trailing map" },
		{ "A4" "6174" "6568656C6C70" V1 CFG TERM, KP_SYNC_E_MALFORMED, "unknown type" },
		{ "A4" "6174" "4568656C6C6F" V1 CFG TERM, KP_SYNC_E_MALFORMED, "type as bytes" },
		{ "A4" "6174" "7805" "68656C6C6F" V1 CFG TERM, KP_SYNC_E_MALFORMED, "type long head" },
		{ "A3" T_HELLO V1 ACKED "01", KP_SYNC_E_MALFORMED, "hello with welcome's fields" },
		/* optional keys (PROTOCOL.md 4.1): hello's chain (1 only), welcome's head (32 bytes) */
		{ "A5" T_HELLO V1 "65636861696E" "01" CFG TERM, KP_SYNC_OK, "hello with chain" },
		{ "A5" T_HELLO V1 "65636861696E" "02" CFG TERM, KP_SYNC_E_MALFORMED, "chain 2" },
		{ "A5" T_HELLO V1 "65636861696E" "00" CFG TERM, KP_SYNC_E_MALFORMED, "chain 0" },
		{ "A5" T_HELLO V1 CFG TERM "65636861696E" "01", KP_SYNC_E_MALFORMED, "chain last" },
		{ "A4" T_HELLO V1 "65636861696E" "01" CFG TERM, KP_SYNC_E_MALFORMED,
		  "map count without chain" },
		{ "A5" T_HELLO V1 CFG TERM, KP_SYNC_E_MALFORMED, "map count with a chain not there" },
		/* hello's last (the newest seq, any uint up to 2^63-1; "last" sorts before "chain") */
		{ "A5" T_HELLO V1 LAST "00" CFG TERM, KP_SYNC_OK, "hello with last 0" },
		{ "A6" T_HELLO V1 LAST "1903E8" "65636861696E" "01" CFG TERM, KP_SYNC_OK,
		  "hello with last 1000 and chain" },
		{ "A5" T_HELLO V1 LAST "1B7FFFFFFFFFFFFFFF" CFG TERM, KP_SYNC_OK, "last 2^63-1" },
		{ "A5" T_HELLO V1 LAST "1B8000000000000000" CFG TERM, KP_SYNC_E_MALFORMED,
		  "last 2^63" },
		{ "A5" T_HELLO V1 LAST "20" CFG TERM, KP_SYNC_E_MALFORMED, "last -1" },
		{ "A5" T_HELLO V1 LAST "1805" CFG TERM, KP_SYNC_E_MALFORMED, "last long head" },
		{ "A5" T_HELLO V1 LAST "F93C00" CFG TERM, KP_SYNC_E_MALFORMED, "last float" },
		{ "A5" T_HELLO V1 LAST "F6" CFG TERM, KP_SYNC_E_MALFORMED, "last null" },
		{ "A5" T_HELLO V1 LAST "6131" CFG TERM, KP_SYNC_E_MALFORMED, "last as text" },
		{ "A5" T_HELLO V1 LAST "4101" CFG TERM, KP_SYNC_E_MALFORMED, "last as bytes" },
		{ "A5" T_HELLO V1 LAST "C105" CFG TERM, KP_SYNC_E_MALFORMED, "last tagged" },
		{ "A6" T_HELLO V1 "65636861696E" "01" LAST "05" CFG TERM, KP_SYNC_E_MALFORMED,
		  "last after chain" },
		{ "A5" T_HELLO V1 CFG TERM LAST "05", KP_SYNC_E_MALFORMED, "last at the end" },
		{ "A6" T_HELLO V1 LAST "05" LAST "05" CFG TERM, KP_SYNC_E_MALFORMED,
		  "last twice" },
		{ "A4" T_HELLO V1 LAST "05" CFG TERM, KP_SYNC_E_MALFORMED, "map count without last" },
		{ "A4" T_WELC V1 LAST "05" ACKED "01", KP_SYNC_E_MALFORMED, "last in a welcome" },
		{ "A4" T_WELC V1 "6468656164" "5820" "ABABABABABABABABABABABABABABABABABABABABABABABABABABABABABABABAB" ACKED "01", KP_SYNC_OK, "welcome with head" },
		{ "A4" T_WELC V1 "6468656164" "581F" "ABABABABABABABABABABABABABABABABABABABABABABABABABABABABABABAB" ACKED "01", KP_SYNC_E_MALFORMED, "head of 31" },
		{ "A4" T_WELC V1 "6468656164" "F6" ACKED "01", KP_SYNC_E_MALFORMED, "head null" },
		{ "A4" T_WELC V1 ACKED "01" "6468656164" "5820" "ABABABABABABABABABABABABABABABABABABABABABABABABABABABABABABABAB", KP_SYNC_E_MALFORMED, "head last" },
		{ "A3" T_WELC V1 "6468656164" "5820" "ABABABABABABABABABABABABABABABABABABABABABABABABABABABABABABABAB", KP_SYNC_E_MALFORMED, "head without acked" },
		{ "A4" T_WELC V1 "65636861696E" "01" ACKED "01", KP_SYNC_E_MALFORMED,
		  "chain in a welcome" },
		{ "A4" T_REC V1 "6468656164" "5820" "ABABABABABABABABABABABABABABABABABABABABABABABABABABABABABABABAB" ITEMS "814101", KP_SYNC_E_MALFORMED,
		  "head in records" },
		{ "A3" T_WELC V1 ACKED "01", KP_SYNC_OK, "welcome" },
		{ "A3" T_WELC V1 ACKED "F93C00", KP_SYNC_E_MALFORMED, "acked float" },
		{ "A3" T_WELC V1 ACKED "C101", KP_SYNC_E_MALFORMED, "acked tagged" },
		{ "A3" T_WELC V1 ACKED "1B0000000100000000", KP_SYNC_OK, "acked 2^32" },
		{ "A3" T_WELC V1 ACKED "1B00000000FFFFFFFF", KP_SYNC_E_MALFORMED, "acked long head" },
		{ "A3" T_REC V1 ITEMS "80", KP_SYNC_E_MALFORMED, "no items" },
		{ "A3" T_REC V1 ITEMS "8140", KP_SYNC_E_MALFORMED, "empty item" },
		{ "A3" T_REC V1 ITEMS "4101", KP_SYNC_E_MALFORMED, "items not an array" },
		{ "A3" T_REC V1 ITEMS "816101", KP_SYNC_E_MALFORMED, "item as text" },
		{ "A3" T_REC V1 ITEMS "9F4101FF", KP_SYNC_E_MALFORMED, "indefinite items" },
		{ "A3" T_REC V1 ITEMS "825F4101FF", KP_SYNC_E_MALFORMED, "indefinite item" },
		{ "A3" T_REC V1 ITEMS "82410141", KP_SYNC_E_MALFORMED, "truncated item" },
		{ "A3" T_REC V1 ITEMS "9B7FFFFFFFFFFFFFFF41", KP_SYNC_E_MALFORMED, "huge count" },
		{ "A3" T_CONF V1 BUNDLE "F6", KP_SYNC_OK, "config, none" },
		{ "A3" T_CONF V1 BUNDLE "40", KP_SYNC_E_MALFORMED, "empty bundle" },
		{ "A3" T_CONF V1 BUNDLE "6141", KP_SYNC_E_MALFORMED, "bundle as text" },
		{ "A3" T_CONF V1 BUNDLE "F7", KP_SYNC_E_MALFORMED, "bundle undefined" },
		{ "A3" T_CONF V1 BUNDLE "F4", KP_SYNC_E_MALFORMED, "bundle false" },
		{ "A2" T_CONF V1, KP_SYNC_E_MALFORMED, "bundle missing" },
		{ "A3" T_BYE V1 ACKED "01", KP_SYNC_E_MALFORMED, "bye with a field" },
		{ "A1" T_BYE, KP_SYNC_E_MALFORMED, "bye without version" },
		{ "BB7FFFFFFFFFFFFFFF" T_BYE V1, KP_SYNC_E_MALFORMED, "huge map count" },
		{ "A2" "7B7FFFFFFFFFFFFFFF74" V1, KP_SYNC_E_MALFORMED, "huge key length" },
		{ "D818A2" T_BYE V1, KP_SYNC_E_MALFORMED, "tagged message" },
		{ "A2" T_BYE "6176" "01" "1C", KP_SYNC_E_MALFORMED, "reserved byte after" },
		{ "A2" T_BYE V1, KP_SYNC_OK, "bye" },
	};
	size_t i;

	(void)state;
	for (i = 0; i < sizeof(t) / sizeof(t[0]); i++) {
		int rc = decode_hex(t[i].hex);

		if (rc != t[i].rc)
			fail_msg("%s: got %d (%s), want %d", t[i].what, rc, kp_sync_strerror(rc), t[i].rc);
	}
	assert_int_equal(kp_msg_decode(NULL, 0, &(struct kp_msg){ 0 }), KP_SYNC_E_MALFORMED);
	assert_int_equal(kp_msg_decode(NULL, 3, &(struct kp_msg){ 0 }), KP_SYNC_E_INVAL);
	assert_int_equal(kp_msg_decode((const uint8_t *)"\xA0", 1, NULL), KP_SYNC_E_INVAL);
}

/* hello's chain and welcome's head: written only when set, read back as written, and a
 * message without them is byte for byte what version 1 was. */
static void test_msg_optional_keys(void **state)
{
	struct kp_msg m, d;
	uint8_t *out = NULL, *out2 = NULL;
	size_t n = 0, n2 = 0;

	(void)state;
	memset(&m, 0, sizeof(m));
	m.type = KP_MSG_WELCOME;
	m.acked = 20;
	assert_int_equal(kp_msg_encode(&m, &out, &n), KP_SYNC_OK);
	assert_int_equal(out[0], 0xA3);                 /* no head: t, v, acked */
	free(out);
	m.has_head = 1;
	memset(m.head, 0xAB, sizeof(m.head));
	assert_int_equal(kp_msg_encode(&m, &out, &n), KP_SYNC_OK);
	assert_int_equal(out[0], 0xA4);
	assert_int_equal(kp_msg_decode(out, n, &d), KP_SYNC_OK);
	assert_int_equal(d.type, KP_MSG_WELCOME);
	assert_int_equal(d.acked, 20);
	assert_int_equal(d.has_head, 1);
	assert_memory_equal(d.head, m.head, sizeof(m.head));
	assert_int_equal(kp_msg_encode(&d, &out2, &n2), KP_SYNC_OK);
	assert_int_equal(n2, n);
	assert_memory_equal(out2, out, n);
	free(out);
	free(out2);

	memset(&m, 0, sizeof(m));
	m.type = KP_MSG_HELLO;
	m.config = 300;
	snprintf(m.terminal, sizeof(m.terminal), "bus-042");
	assert_int_equal(kp_msg_encode(&m, &out, &n), KP_SYNC_OK);
	assert_int_equal(n * 2, strlen(HELLO_HEX) );   /* without chain: the version 1 vector */
	free(out);
	m.chain = 1;
	assert_int_equal(kp_msg_encode(&m, &out, &n), KP_SYNC_OK);
	assert_int_equal(kp_msg_decode(out, n, &d), KP_SYNC_OK);
	assert_int_equal(d.chain, 1);
	assert_int_equal(d.config, 300);
	assert_string_equal(d.terminal, "bus-042");
	assert_int_equal(d.has_journal, 0);
	free(out);

	/* journal: 16 bytes between config and terminal ("journal" is 7 bytes long), read back
	 * as written; all zeros (the legacy journal) has one encoding, absent */
	m.has_journal = 1;
	memset(m.journal, 0x5A, sizeof(m.journal));
	assert_int_equal(kp_msg_encode(&m, &out, &n), KP_SYNC_OK);
	assert_int_equal(out[0], 0xA6);
	assert_non_null(memmem(out, n, "\x67journal\x50\x5A\x5A", 10));
	assert_true((uint8_t *)memmem(out, n, "\x66" "config", 7) < (uint8_t *)memmem(out, n, "\x67journal", 8));
	assert_true((uint8_t *)memmem(out, n, "\x67journal", 8) < (uint8_t *)memmem(out, n, "\x68terminal", 9));
	assert_int_equal(kp_msg_decode(out, n, &d), KP_SYNC_OK);
	assert_int_equal(d.has_journal, 1);
	assert_memory_equal(d.journal, m.journal, sizeof(m.journal));
	assert_int_equal(kp_msg_encode(&d, &out2, &n2), KP_SYNC_OK);
	assert_int_equal(n2, n);
	assert_memory_equal(out2, out, n);
	free(out2);
	{
		uint8_t *j = memmem(out, n, "\x67journal\x50", 9);

		/* all zeros on the wire: refused */
		memset(j + 9, 0, KP_JOURNAL_ID_LEN);
		assert_int_equal(kp_msg_decode(out, n, &d), KP_SYNC_E_MALFORMED);
		/* 15 bytes: refused */
		j[8] = 0x4F;
		memset(j + 9, 0x5A, KP_JOURNAL_ID_LEN);
		assert_int_equal(kp_msg_decode(out, n, &d), KP_SYNC_E_MALFORMED);
	}
	free(out);
	memset(m.journal, 0, sizeof(m.journal));
	assert_int_equal(kp_msg_encode(&m, &out, &n), KP_SYNC_E_INVAL);
}

/* hello's last: written only when reported (0 too: an empty journal), first after t and v
 * ("last" is the shortest key), read back as written; a hello without it is unchanged. */
static void test_msg_hello_last(void **state)
{
	static const uint64_t vals[] = { 0, 1, 23, 24, 65535, 65536, UINT64_C(1) << 32,
	                                 (uint64_t)INT64_MAX };
	struct kp_msg m, d;
	uint8_t *out = NULL, *out2 = NULL;
	size_t n = 0, n2 = 0, i;

	(void)state;
	memset(&m, 0, sizeof(m));
	m.type = KP_MSG_HELLO;
	m.config = 300;
	snprintf(m.terminal, sizeof(m.terminal), "bus-042");
	assert_int_equal(kp_msg_encode(&m, &out, &n), KP_SYNC_OK);
	assert_int_equal(n * 2, strlen(HELLO_HEX));     /* without last: the version 1 vector */
	assert_int_equal(kp_msg_decode(out, n, &d), KP_SYNC_OK);
	assert_int_equal(d.has_last, 0);
	assert_int_equal(d.last, 0);
	free(out);
	m.chain = 1;
	m.has_journal = 1;
	memset(m.journal, 0x5A, sizeof(m.journal));
	m.has_last = 1;
	for (i = 0; i < sizeof(vals) / sizeof(vals[0]); i++) {
		m.last = vals[i];
		assert_int_equal(kp_msg_encode(&m, &out, &n), KP_SYNC_OK);
		assert_int_equal(out[0], 0xA7);
		/* t, v, then "last" */
		assert_memory_equal(out + 1 + 2 + 6 + 2 + 1, "\x64last", 5);
		assert_int_equal(kp_msg_decode(out, n, &d), KP_SYNC_OK);
		assert_int_equal(d.has_last, 1);
		assert_true(d.last == vals[i]);
		assert_int_equal(d.chain, 1);
		assert_int_equal(d.has_journal, 1);
		assert_int_equal(d.config, 300);
		assert_int_equal(kp_msg_encode(&d, &out2, &n2), KP_SYNC_OK);
		assert_int_equal(n2, n);
		assert_memory_equal(out2, out, n);
		free(out2);
		free(out);
	}
	m.last = (uint64_t)INT64_MAX + 1;
	assert_int_equal(kp_msg_encode(&m, &out, &n), KP_SYNC_E_INVAL);
	assert_null(out);
}

/* The limits that need more bytes than a table row: 256 items and a 127-byte reason pass,
 * one more of either does not. */
static void test_msg_limits(void **state)
{
	struct kp_bytes many[KP_SYNC_BATCH_MAX + 1];
	struct kp_msg m, d;
	uint8_t *out = NULL;
	size_t n = 0, i;

	(void)state;
	for (i = 0; i <= KP_SYNC_BATCH_MAX; i++) {
		many[i].p = ITEM2;
		many[i].n = sizeof(ITEM2);
	}
	m = sample(KP_MSG_RECORDS, 0);
	m.items = many;
	m.n_items = KP_SYNC_BATCH_MAX;
	assert_int_equal(kp_msg_encode(&m, &out, &n), KP_SYNC_OK);
	assert_int_equal(kp_msg_decode(out, n, &d), KP_SYNC_OK);
	assert_int_equal(d.n_items, KP_SYNC_BATCH_MAX);
	kp_msg_clear(&d);
	/* 257 items: the array head 0x190100 becomes 0x190101 and one more item follows */
	{
		uint8_t *big = malloc(n + 3);
		uint8_t *head;

		assert_non_null(big);
		memcpy(big, out, n);
		head = big + n - KP_SYNC_BATCH_MAX * 3 - 3;
		assert_memory_equal(head, "\x99\x01\x00", 3);
		head[2] = 0x01;
		memcpy(big + n, "\x42\x02\x03", 3);
		assert_int_equal(kp_msg_decode(big, n + 3, &d), KP_SYNC_E_MALFORMED);
		free(big);
	}
	free(out);

	m = sample(KP_MSG_ERROR, 0);
	memset(m.reason, 'r', sizeof(m.reason) - 1);
	m.reason[sizeof(m.reason) - 1] = '\0';
	assert_int_equal(kp_msg_encode(&m, &out, &n), KP_SYNC_OK);
	assert_int_equal(kp_msg_decode(out, n, &d), KP_SYNC_OK);
	assert_string_equal(d.reason, m.reason);
	/* the same with a 128-byte reason: length 0x7F -> 0x80, one more 'r' */
	{
		uint8_t *big = malloc(n + 1);
		size_t at = n - 127 - 2;

		assert_non_null(big);
		memcpy(big, out, n);
		assert_memory_equal(big + at, "\x78\x7F", 2);
		big[at + 1] = 0x80;
		big[n] = 'r';
		assert_int_equal(kp_msg_decode(big, n + 1, &d), KP_SYNC_E_MALFORMED);
		free(big);
	}
	free(out);
}

/* Any input gives an error or a message that encodes back to exactly the input. */
static void check_msg_any(const uint8_t *p, size_t n)
{
	struct kp_msg m;

	if (tu_expect_reencodes(p, n, &m, msg_decode, msg_encode, msg_clear,
	                        TU_INTS(KP_SYNC_E_MALFORMED, KP_SYNC_E_VERSION, 0)) != KP_SYNC_OK)
		assert_null(m.items);
}

/* Every truncation (in a buffer of exactly that size, so ASan sees over-reads), every bit
 * flip and a few byte values at every position, random multi-byte damage. */
static void fuzz_bytes(const uint8_t *b, size_t n, void (*check)(const uint8_t *, size_t),
                       uint32_t *seed, int rounds)
{
	static const uint8_t vals[] = { 0x00, 0x17, 0x18, 0x1B, 0x3B, 0x5B, 0x7B, 0x9B,
	                                0xBB, 0xBF, 0xD2, 0xF6, 0xFF };
	uint8_t *heap;
	size_t i, j;
	int r;

	for (i = 0; i < n; i++) {
		heap = malloc(i + 1);
		assert_non_null(heap);
		memcpy(heap, b, i);
		check(i > 0 ? heap : NULL, i);
		free(heap);
	}
	heap = malloc(n);
	assert_non_null(heap);
	for (i = 0; i < n; i++) {
		for (j = 0; j < 8 + sizeof(vals); j++) {
			memcpy(heap, b, n);
			heap[i] = j < 8 ? (uint8_t)(heap[i] ^ (1u << j)) : vals[j - 8];
			check(heap, n);
		}
	}
	for (r = 0; r < rounds; r++) {
		size_t k, hits = 1 + lcg(seed) % 4;

		memcpy(heap, b, n);
		for (k = 0; k < hits; k++)
			heap[lcg(seed) % n] = (uint8_t)lcg(seed);
		check(heap, 1 + lcg(seed) % n);
	}
	free(heap);
}

static void test_msg_fuzz(void **state)
{
	uint32_t seed = 4242;
	int t, variant;
	size_t i, j;

	(void)state;
	for (t = KP_MSG_HELLO; t <= KP_MSG_LAST; t++) {
		for (variant = 0; variant < 2; variant++) {
			struct kp_msg m = sample((enum kp_msg_type)t, variant);
			uint8_t *out = NULL;
			size_t n = 0;

			assert_int_equal(kp_msg_encode(&m, &out, &n), KP_SYNC_OK);
			fuzz_bytes(out, n, check_msg_any, &seed, 3000);
			free(out);
		}
	}
	/* random garbage, mostly starting with a small map head */
	for (i = 0; i < 30000; i++) {
		uint8_t g[48];
		size_t n = lcg(&seed) % sizeof(g);

		for (j = 0; j < n; j++)
			g[j] = (uint8_t)lcg(&seed);
		if (n > 0 && i % 2 == 0)
			g[0] = (uint8_t)(0xA0 | (g[0] & 0x07));
		if (n > 3 && i % 4 == 0)
			memcpy(g + 1, "\x61\x74", 2);
		check_msg_any(g, n);
	}
}

/* ---- frames over an in-memory stream ---- */

struct pipe {
	uint8_t *buf;
	size_t len, cap, rpos;
	int reads, writes;
};

static int pipe_read(void *ctx, void *b, size_t n, int timeout_ms)
{
	struct pipe *p = ctx;

	(void)timeout_ms;
	p->reads++;
	if (p->len - p->rpos < n) {
		p->rpos = p->len;
		return KP_TLS_E_CLOSED;
	}
	memcpy(b, p->buf + p->rpos, n);
	p->rpos += n;
	return 0;
}

static void pipe_put(struct pipe *p, const void *b, size_t n)
{
	if (p->len + n > p->cap) {
		p->cap = (p->len + n) * 2;
		p->buf = realloc(p->buf, p->cap);
		assert_non_null(p->buf);
	}
	memcpy(p->buf + p->len, b, n);
	p->len += n;
}

static int pipe_write(void *ctx, const void *b, size_t n, int timeout_ms)
{
	struct pipe *p = ctx;

	(void)timeout_ms;
	p->writes++;
	pipe_put(p, b, n);
	return 0;
}

static void pipe_reset(struct pipe *p)
{
	free(p->buf);
	memset(p, 0, sizeof(*p));
}

static void test_frames(void **state)
{
	struct pipe p = { 0 };
	const struct kp_sync_io io = { .ctx = &p, .read_exact = pipe_read, .write_all = pipe_write };
	uint8_t *got = (uint8_t *)1;
	size_t n = 1;
	int t, variant;

	(void)state;
	/* one frame out and back */
	assert_int_equal(kp_frame_write_io(&io, (const uint8_t *)"abc", 3, 100), KP_SYNC_OK);
	assert_int_equal(p.len, 7);
	assert_memory_equal(p.buf, "\x00\x00\x00\x03" "abc", 7);
	assert_int_equal(kp_frame_read_io(&io, &got, &n, 100), KP_SYNC_OK);
	assert_int_equal(n, 3);
	assert_memory_equal(got, "abc", 3);
	free(got);
	pipe_reset(&p);

	/* lengths 0 and above the limit: refused after the 4-byte read, before any other */
	{
		static const char *const bad[] = { "00000000", "01000001", "FFFFFFFF", "80000000" };

		for (size_t i = 0; i < 4; i++) {
			struct buf h = hex(bad[i]);

			pipe_put(&p, h.b, h.n);
			pipe_put(&p, "abcdefgh", 8);
			assert_int_equal(kp_frame_read_io(&io, &got, &n, 100), KP_SYNC_E_TOOBIG);
			assert_null(got);
			assert_int_equal(n, 0);
			assert_int_equal(p.reads, 1);
			assert_int_equal(p.rpos, 4);
			pipe_reset(&p);
		}
	}
	/* the largest length is allowed; a body that ends early is the stream's error */
	pipe_put(&p, "\x01\x00\x00\x00" "abc", 7);
	assert_int_equal(kp_frame_read_io(&io, &got, &n, 100), KP_TLS_E_CLOSED);
	assert_null(got);
	pipe_reset(&p);
	pipe_put(&p, "\x00\x00", 2);
	assert_int_equal(kp_frame_read_io(&io, &got, &n, 100), KP_TLS_E_CLOSED);
	pipe_reset(&p);

	/* writing: nothing, or more than a frame holds, is refused before writing */
	assert_int_equal(kp_frame_write_io(&io, (const uint8_t *)"a", 0, 100), KP_SYNC_E_INVAL);
	assert_int_equal(kp_frame_write_io(&io, (const uint8_t *)"a", KP_SYNC_FRAME_MAX + 1, 100),
	                 KP_SYNC_E_TOOBIG);
	assert_int_equal(p.writes, 0);
	assert_int_equal(kp_frame_write_io(NULL, (const uint8_t *)"a", 1, 100), KP_SYNC_E_INVAL);
	assert_int_equal(kp_frame_read_io(NULL, &got, &n, 100), KP_SYNC_E_INVAL);

	/* messages: one write per message, each read back equal */
	for (t = KP_MSG_HELLO; t <= KP_MSG_LAST; t++) {
		for (variant = 0; variant < 2; variant++) {
			struct kp_msg m = sample((enum kp_msg_type)t, variant);

			assert_int_equal(kp_msg_send_io(&io, &m, 100), KP_SYNC_OK);
		}
	}
	assert_int_equal(p.writes, 2 * (KP_MSG_LAST - KP_MSG_HELLO + 1));
	for (t = KP_MSG_HELLO; t <= KP_MSG_LAST; t++) {
		for (variant = 0; variant < 2; variant++) {
			struct kp_msg m = sample((enum kp_msg_type)t, variant), d;

			assert_int_equal(kp_msg_recv_io(&io, &d, &got, 100), KP_SYNC_OK);
			assert_msg_equal(&m, &d);
			kp_msg_clear(&d);
			free(got);
		}
	}
	assert_int_equal(p.rpos, p.len);
	pipe_reset(&p);

	/* a frame that is not a message: error, nothing to free */
	pipe_put(&p, "\x00\x00\x00\x02\xA0\x00", 6);
	{
		struct kp_msg d;

		assert_int_equal(kp_msg_recv_io(&io, &d, &got, 100), KP_SYNC_E_MALFORMED);
		assert_null(got);
		assert_null(d.items);
	}
	pipe_reset(&p);

	/* a batch above the frame limit is refused before writing */
	{
		struct kp_bytes two[2];
		uint8_t *big = calloc(1, KP_SYNC_FRAME_MAX / 2 + 1);
		struct kp_msg m = sample(KP_MSG_RECORDS, 0);

		assert_non_null(big);
		two[0].p = two[1].p = big;
		two[0].n = two[1].n = KP_SYNC_FRAME_MAX / 2 + 1;
		m.items = two;
		m.n_items = 2;
		assert_int_equal(kp_msg_send_io(&io, &m, 100), KP_SYNC_E_TOOBIG);
		assert_int_equal(p.writes, 0);
		free(big);
	}
	pipe_reset(&p);
}

/* ---- the bundle ---- */

static const char *const TERMINAL = "bus-042";

static void token_of(uint8_t tok[KP_TOKEN_LEN], unsigned seed)
{
	for (unsigned i = 0; i < KP_TOKEN_LEN; i++)
		tok[i] = (uint8_t)(seed * 37u + i * 11u);
}

/* A bundle with a few of each, already in canonical order (so that a decoded copy compares
 * equal field by field). Arrays are calloc'd: free with kp_bundle_free. */
static struct kp_bundle sample_bundle(uint64_t version)
{
	struct kp_bundle b;
	size_t i;

	memset(&b, 0, sizeof(b));
	b.version = version;
	b.issued_ms = 1700000000000LL;
	strcpy(b.terminal, TERMINAL);
	b.acked = 1234;
	b.n_operators = 3;
	b.operators = calloc(3, sizeof(*b.operators));
	b.n_products = 3;
	b.products = calloc(3, sizeof(*b.products));
	b.n_entitlements = 4;
	b.entitlements = calloc(4, sizeof(*b.entitlements));
	b.n_denylist = 3;
	b.denylist = calloc(3, sizeof(*b.denylist));
	assert_true(b.operators && b.products && b.entitlements && b.denylist);

	strcpy(b.operators[0].id, "gunma-bus");
	strcpy(b.operators[0].name, "群馬バス");
	strcpy(b.operators[1].id, "kansai-bus");
	strcpy(b.operators[1].name, "関西バス");
	strcpy(b.operators[2].id, "nankai");
	strcpy(b.operators[2].name, "");

	strcpy(b.products[0].id, "any");
	strcpy(b.products[0].name, "anything");
	b.products[0].rides = -1;
	strcpy(b.products[1].id, "pass-1d");
	strcpy(b.products[1].name, "1-day pass");
	b.products[1].rides = 0;
	strcpy(b.products[1].operators[0], "kansai-bus");
	strcpy(b.products[1].operators[1], "nankai");
	b.products[1].n_operators = 2;
	strcpy(b.products[2].id, "ride-10");
	strcpy(b.products[2].name, "10 rides");
	b.products[2].rides = 10;
	strcpy(b.products[2].operators[0], "gunma-bus");
	b.products[2].n_operators = 1;

	/* two entitlements on the first card (tokens 0, 0, 1, 2: see token_of) */
	for (i = 0; i < 4; i++) {
		struct kp_bundle_entitlement *e = &b.entitlements[i];

		token_of(e->token, i == 0 ? 0 : (unsigned)i - 1);
		e->id = i == 1 ? 70000 : (int64_t)(i + 1);
		strcpy(e->product, i == 3 ? "ride-10" : "pass-1d");
		e->remaining = (int64_t)i * 3;
		e->valid_from_ms = 1700000000000LL;
		e->valid_until_ms = i == 2 ? INT64_MAX : 1800000000000LL;
	}
	for (i = 0; i < 3; i++) {
		token_of(b.denylist[i].token, (unsigned)i + 1);
		strcpy(b.denylist[i].reason, i == 1 ? "overdraft" : "lost");
	}
	return b;
}

static void bundle_bytes(const struct kp_bundle *b, uint8_t **out, size_t *n)
{
	assert_int_equal(kp_bundle_encode(b, out, n), KP_SYNC_OK);
	assert_deterministic(*out, *n);
}

static void assert_bundle_equal(const struct kp_bundle *a, const struct kp_bundle *b)
{
	assert_true(a->version == b->version);
	assert_true(a->issued_ms == b->issued_ms);
	assert_string_equal(a->terminal, b->terminal);
	assert_true(a->acked == b->acked);
	assert_int_equal(a->n_operators, b->n_operators);
	assert_int_equal(a->n_products, b->n_products);
	assert_int_equal(a->n_entitlements, b->n_entitlements);
	assert_int_equal(a->n_denylist, b->n_denylist);
	if (a->n_operators > 0)
		assert_memory_equal(a->operators, b->operators, a->n_operators * sizeof(*a->operators));
	if (a->n_products > 0)
		assert_memory_equal(a->products, b->products, a->n_products * sizeof(*a->products));
	if (a->n_entitlements > 0)
		assert_memory_equal(a->entitlements, b->entitlements,
		                    a->n_entitlements * sizeof(*a->entitlements));
	if (a->n_denylist > 0)
		assert_memory_equal(a->denylist, b->denylist, a->n_denylist * sizeof(*a->denylist));
	assert_int_equal(a->n_eligibility, b->n_eligibility);
	if (a->n_eligibility > 0)
		assert_memory_equal(a->eligibility, b->eligibility,
		                    a->n_eligibility * sizeof(*a->eligibility));
}

static void test_bundle_roundtrip(void **state)
{
	struct kp_bundle b = sample_bundle(7), d, empty;
	uint8_t *out = NULL, *again = NULL;
	size_t n = 0, n2 = 0;

	(void)state;
	bundle_bytes(&b, &out, &n);
	memset(&d, 0x5A, sizeof(d));
	assert_int_equal(kp_bundle_decode(out, n, &d), KP_SYNC_OK);
	assert_bundle_equal(&b, &d);
	bundle_bytes(&d, &again, &n2);
	assert_int_equal(n2, n);
	assert_memory_equal(again, out, n);
	/* the top-level keys, in the documented order */
	assert_memory_equal(out, "\xA9\x61v\x01\x65" "acked", 10);
	kp_bundle_free(&d);
	kp_bundle_free(&b);
	free(out);
	free(again);

	/* an empty snapshot is a bundle too */
	memset(&empty, 0, sizeof(empty));
	empty.version = 1;
	strcpy(empty.terminal, "t");
	bundle_bytes(&empty, &out, &n);
	assert_int_equal(kp_bundle_decode(out, n, &d), KP_SYNC_OK);
	assert_bundle_equal(&empty, &d);
	assert_null(d.operators);
	kp_bundle_free(&d);
	kp_bundle_free(NULL);
	free(out);
}

/* Any order in, one order out; the decoder takes only that order. */
static void test_bundle_canonical_order(void **state)
{
	struct kp_bundle b = sample_bundle(7), s = sample_bundle(7), d;
	uint8_t *want = NULL, *got = NULL;
	size_t n = 0, m = 0, i;
	uint8_t t0[KP_TOKEN_LEN], t1[KP_TOKEN_LEN];
	uint8_t *p0, *p1;

	(void)state;
	bundle_bytes(&b, &want, &n);
	/* reverse every array and the product's operators */
#define REVERSE(arr, cnt)                                               \
	for (i = 0; i < (cnt) / 2; i++) {                                \
		__typeof__(arr[0]) tmp_ = arr[i];                        \
		arr[i] = arr[(cnt) - 1 - i];                             \
		arr[(cnt) - 1 - i] = tmp_;                               \
	}
	REVERSE(s.operators, s.n_operators);
	REVERSE(s.products, s.n_products);
	REVERSE(s.entitlements, s.n_entitlements);
	REVERSE(s.denylist, s.n_denylist);
	strcpy(s.products[1].operators[0], "nankai");
	strcpy(s.products[1].operators[1], "kansai-bus");
#undef REVERSE
	bundle_bytes(&s, &got, &m);
	assert_int_equal(m, n);
	assert_memory_equal(got, want, n);
	free(got);
	/* the encoder sorted pointers, not the caller's arrays */
	assert_string_equal(s.operators[0].id, "nankai");

	/* duplicates are refused */
	strcpy(s.operators[1].id, "nankai");
	assert_int_equal(kp_bundle_encode(&s, &got, &m), KP_SYNC_E_INVAL);
	kp_bundle_free(&s);
	s = sample_bundle(7);
	s.entitlements[1] = s.entitlements[0];
	assert_int_equal(kp_bundle_encode(&s, &got, &m), KP_SYNC_E_INVAL);
	kp_bundle_free(&s);
	s = sample_bundle(7);
	memcpy(s.denylist[2].token, s.denylist[0].token, KP_TOKEN_LEN);
	assert_int_equal(kp_bundle_encode(&s, &got, &m), KP_SYNC_E_INVAL);
	kp_bundle_free(&s);
	s = sample_bundle(7);
	strcpy(s.products[1].operators[1], "kansai-bus");
	assert_int_equal(kp_bundle_encode(&s, &got, &m), KP_SYNC_E_INVAL);
	kp_bundle_free(&s);

	/* two denylist tokens swapped in the encoding: out of order */
	token_of(t0, 1);
	token_of(t1, 2);
	p0 = memmem(want, n, t0, KP_TOKEN_LEN);
	p1 = memmem(want, n, t1, KP_TOKEN_LEN);
	assert_true(p0 != NULL && p1 != NULL && p0 < p1);
	memcpy(p0, t1, KP_TOKEN_LEN);
	memcpy(p1, t0, KP_TOKEN_LEN);
	assert_int_equal(kp_bundle_decode(want, n, &d), KP_SYNC_E_MALFORMED);
	/* ... and the same token twice */
	memcpy(p0, t1, KP_TOKEN_LEN);
	assert_int_equal(kp_bundle_decode(want, n, &d), KP_SYNC_E_MALFORMED);
	memcpy(p0, t0, KP_TOKEN_LEN);
	memcpy(p1, t1, KP_TOKEN_LEN);
	assert_int_equal(kp_bundle_decode(want, n, &d), KP_SYNC_OK);
	kp_bundle_free(&d);
	free(want);

	/* operators of equal id length swapped in the encoding */
	kp_bundle_free(&b);
	memset(&b, 0, sizeof(b));
	b.version = 2;
	strcpy(b.terminal, TERMINAL);
	b.n_operators = 2;
	b.operators = calloc(2, sizeof(*b.operators));
	assert_non_null(b.operators);
	strcpy(b.operators[0].id, "op-a");
	strcpy(b.operators[1].id, "op-b");
	bundle_bytes(&b, &want, &n);
	p0 = memmem(want, n, "op-a", 4);
	p1 = memmem(want, n, "op-b", 4);
	assert_true(p0 != NULL && p1 != NULL);
	p0[3] = 'b';
	p1[3] = 'a';
	assert_int_equal(kp_bundle_decode(want, n, &d), KP_SYNC_E_MALFORMED);
	kp_bundle_free(&b);
	free(want);
}

static void test_bundle_encode_rejects(void **state)
{
	uint8_t *out = (uint8_t *)1;
	size_t n = 1;
	int i;

	(void)state;
	for (i = 0; i < 19; i++) {
		struct kp_bundle b = sample_bundle(7);
		struct kp_bundle_operator *keep = NULL;
		int want = KP_SYNC_E_INVAL;

		switch (i) {
		case 0:  b.version = 0; break;
		case 1:  b.issued_ms = -1; break;
		case 2:  b.terminal[0] = '\0'; break;
		case 3:  memset(b.terminal, 'x', sizeof(b.terminal)); break;
		case 4:  b.operators[0].id[0] = '\0'; break;
		case 5:  memset(b.operators[0].name, 'x', sizeof(b.operators[0].name)); break;
		case 6:  strcpy(b.products[0].name, "\xC0\xAF"); break;
		case 7:  b.products[0].n_operators = KP_BUNDLE_PRODUCT_OPS_MAX + 1; break;
		case 8:  strcpy(b.products[2].operators[0], "no-such-operator"); break;
		case 9:  strcpy(b.entitlements[0].product, "no-such-product"); break;
		case 10: b.entitlements[0].id = 0; break;
		case 11: b.entitlements[0].remaining = -1; break;
		case 12: b.entitlements[0].valid_from_ms = -1; break;
		case 13: b.entitlements[0].valid_until_ms = b.entitlements[0].valid_from_ms - 1; break;
		case 14: b.entitlements[0].product[0] = '\0'; break;
		case 15: strcpy(b.denylist[0].reason, "\xF4\x90\x80\x80"); break;
		case 16: keep = b.operators; b.operators = NULL; break;
		case 17: b.n_operators = KP_BUNDLE_OPERATORS_MAX + 1; want = KP_SYNC_E_TOOBIG; break;
		case 18: b.n_denylist = KP_BUNDLE_DENYLIST_MAX + 1; want = KP_SYNC_E_TOOBIG; break;
		}
		if (kp_bundle_encode(&b, &out, &n) != want)
			fail_msg("case %d: want %d", i, want);
		assert_null(out);
		assert_int_equal(n, 0);
		if (keep != NULL)
			b.operators = keep;
		kp_bundle_free(&b);
	}
	assert_int_equal(kp_bundle_encode(NULL, &out, &n), KP_SYNC_E_INVAL);
}

/* Any input gives an error or a bundle that encodes back to exactly the input. */
static void check_bundle_any(const uint8_t *p, size_t n)
{
	struct kp_bundle b;

	if (tu_expect_reencodes(p, n, &b, bundle_decode, bundle_encode, bundle_clear,
	                        TU_INTS(KP_SYNC_E_MALFORMED, KP_SYNC_E_VERSION, KP_SYNC_E_TOOBIG, 0))
	    != KP_SYNC_OK) {
		assert_null(b.entitlements);
		assert_int_equal(b.n_entitlements, 0);
	}
}

/* Patches the byte `at` after the first occurrence of hex `find` in a copy of buf and
 * expects the decoder to refuse it with rc. */
static void policy_patch(const uint8_t *buf, size_t n, const char *find, size_t at, uint8_t to,
                         int rc, const char *what)
{
	uint8_t needle[32], *copy = malloc(n), *p;
	size_t k = strlen(find) / 2;
	struct kp_bundle d;

	assert_non_null(copy);
	for (size_t i = 0; i < k; i++)
		sscanf(find + 2 * i, "%2hhx", &needle[i]);
	memcpy(copy, buf, n);
	p = memmem(copy, n, needle, k);
	if (p == NULL)
		fail_msg("%s: %s not found", what, find);
	p[at] = to;
	if (kp_bundle_decode(copy, n, &d) != rc)
		fail_msg("%s: not refused", what);
	free(copy);
}

/* Format 4: the scheme's My Number policy. The default policy is written as no key (the
 * bundle stays in its format, byte for byte); any other round-trips as format 4 with one
 * encoding; what the policy cannot be is refused both ways. */
static void test_bundle_policy_format4(void **state)
{
	struct kp_bundle b = sample_bundle(7), d;
	uint8_t *out = NULL, *dflt = NULL, *re = NULL;
	size_t n = 0, dn = 0, rn = 0;

	(void)state;
	bundle_bytes(&b, &dflt, &dn);
	assert_int_equal(kp_bundle_decode(dflt, dn, &d), KP_SYNC_OK);
	assert_true(d.format < 4);
	assert_int_equal(d.policy.direct, 0);
	assert_int_equal(d.policy.max_age_s, KP_POLICY_MAX_AGE_DEFAULT);
	kp_bundle_free(&d);
	/* the default said explicitly is the same bytes */
	b.policy.max_age_s = KP_POLICY_MAX_AGE_DEFAULT;
	bundle_bytes(&b, &out, &n);
	assert_int_equal(n, dn);
	assert_memory_equal(out, dflt, n);
	free(out);

	/* format 2 and later carry real ride counts only */
	b.products[0].rides = 1;
	b.products[1].rides = 1;
	b.policy.direct = 1;
	b.policy.direct_rides = 1;
	b.policy.direct_value = 2000;
	b.policy.max_age_s = 3600;
	strcpy(b.policy.products[0], "P10");
	b.policy.n_products = 1;
	strcpy(b.policy.categories[0], "a");
	strcpy(b.policy.categories[1], "b");
	b.policy.n_categories = 2;
	bundle_bytes(&b, &out, &n);
	assert_int_equal(out[3], 4);                        /* "v": 4 */
	assert_int_equal(kp_bundle_decode(out, n, &d), KP_SYNC_OK);
	assert_int_equal(d.format, 4);
	assert_memory_equal(&d.policy, &b.policy, sizeof(d.policy));
	assert_int_equal(kp_bundle_encode(&d, &re, &rn), KP_SYNC_OK);
	assert_int_equal(rn, n);
	assert_memory_equal(re, out, n);
	free(re);
	kp_bundle_free(&d);
	/* one change at a time, each refused */
	policy_patch(out, n, "617604", 2, 0x03, KP_SYNC_E_MALFORMED, "policy in format 3");
	policy_patch(out, n, "617604", 2, 0x05, KP_SYNC_E_VERSION, "format 5");
	policy_patch(out, n, "657269646573016576616C7565", 6, 0x00, KP_SYNC_E_MALFORMED, "rides 0");
	policy_patch(out, n, "676D61785F616765190E10", 10, 0x0F, KP_SYNC_E_MALFORMED, "max_age 3599 s");
	policy_patch(out, n, "8261616162", 2, 0x62, KP_SYNC_E_MALFORMED, "categories b, b");
	policy_patch(out, n, "8261616162", 2, 0x63, KP_SYNC_E_MALFORMED, "categories c, b");
	policy_patch(out, n, "66646972656374A4", 7, 0xA5, KP_SYNC_E_MALFORMED, "direct: 5 keys");
	free(out);
	/* what the encoder refuses */
	{
		struct kp_bundle_policy ok = b.policy;

		b.policy.n_products = b.policy.n_categories = 0;
		assert_int_equal(kp_bundle_encode(&b, &out, &n), KP_SYNC_E_INVAL);
		b.policy = ok;
		strcpy(b.policy.categories[0], "c");           /* c, b: not sorted */
		assert_int_equal(kp_bundle_encode(&b, &out, &n), KP_SYNC_E_INVAL);
		b.policy = ok;
		b.policy.max_age_s = KP_POLICY_MAX_AGE_MAX + 1;
		assert_int_equal(kp_bundle_encode(&b, &out, &n), KP_SYNC_E_INVAL);
		b.policy = ok;
		b.policy.direct_rides = KP_POLICY_RIDES_MAX + 1;
		assert_int_equal(kp_bundle_encode(&b, &out, &n), KP_SYNC_E_INVAL);
		b.policy = ok;
		b.policy.direct = 0;                           /* off, but lists */
		assert_int_equal(kp_bundle_encode(&b, &out, &n), KP_SYNC_E_INVAL);
		b.policy = ok;
		b.policy.products[0][0] = '\0';                 /* an empty id */
		assert_int_equal(kp_bundle_encode(&b, &out, &n), KP_SYNC_E_INVAL);
	}
	free(dflt);
	kp_bundle_free(&b);
}

static void test_bundle_decode_rejects(void **state)
{
	struct kp_bundle b = sample_bundle(7), d;
	uint8_t *out = NULL, *big;
	size_t n = 0;
	uint32_t seed = 99;

	(void)state;
	bundle_bytes(&b, &out, &n);
	/* v: 5 is a version we do not speak, whatever follows (2 to 4 are formats 2 to 4) */
	out[3] = 0x05;
	assert_int_equal(kp_bundle_decode(out, n, &d), KP_SYNC_E_VERSION);
	out[3] = 0x01;
	/* one pair more or less */
	out[0] = 0xAA;
	assert_int_equal(kp_bundle_decode(out, n, &d), KP_SYNC_E_MALFORMED);
	out[0] = 0xA8;
	assert_int_equal(kp_bundle_decode(out, n, &d), KP_SYNC_E_MALFORMED);
	out[0] = 0xA9;
	/* a trailing byte */
	big = malloc(n + 1);
	assert_non_null(big);
	memcpy(big, out, n);
	big[n] = 0;
	assert_int_equal(kp_bundle_decode(big, n + 1, &d), KP_SYNC_E_MALFORMED);
	free(big);
	assert_int_equal(kp_bundle_decode(NULL, 0, &d), KP_SYNC_E_MALFORMED);
	assert_int_equal(kp_bundle_decode(NULL, 1, &d), KP_SYNC_E_INVAL);
	assert_int_equal(kp_bundle_decode(out, n, NULL), KP_SYNC_E_INVAL);

	fuzz_bytes(out, n, check_bundle_any, &seed, 20000);
	free(out);
	kp_bundle_free(&b);
}

/* A header may claim anything; only what is really there is allocated. */
static void test_bundle_limits(void **state)
{
	struct kp_bundle b, d;
	uint8_t *out = NULL, *big;
	size_t n = 0, i;

	(void)state;
	memset(&b, 0, sizeof(b));
	b.version = 3;
	strcpy(b.terminal, TERMINAL);
	bundle_bytes(&b, &out, &n);
	/* ends with "entitlements": [] = 6C 'entitlements' 80 */
	assert_int_equal(out[n - 1], 0x80);
	big = malloc(n + 4 + 62);
	assert_non_null(big);
	memcpy(big, out, n - 1);
	/* 2,000,001 claimed: above the limit */
	memcpy(big + n - 1, "\x9A\x00\x1E\x84\x81", 5);
	assert_int_equal(kp_bundle_decode(big, n + 4, &d), KP_SYNC_E_TOOBIG);
	/* 2,000,000 claimed, room for one: refused before allocating */
	memcpy(big + n - 1, "\x9A\x00\x1E\x84\x80", 5);
	memset(big + n + 4, 0, 62);
	assert_int_equal(kp_bundle_decode(big, n + 4 + 62, &d), KP_SYNC_E_MALFORMED);
	/* 2^64 - 1 claimed */
	memcpy(big + n - 1, "\x9B\xFF\xFF\xFF\xFF", 5);
	assert_int_equal(kp_bundle_decode(big, n + 4, &d), KP_SYNC_E_MALFORMED);
	free(big);
	free(out);

	/* a large snapshot in any order: 100,000 entitlements and denylist entries */
	b.n_operators = 1;
	b.operators = calloc(1, sizeof(*b.operators));
	b.n_products = 1;
	b.products = calloc(1, sizeof(*b.products));
	b.n_entitlements = 100000;
	b.entitlements = calloc(b.n_entitlements, sizeof(*b.entitlements));
	b.n_denylist = 100000;
	b.denylist = calloc(b.n_denylist, sizeof(*b.denylist));
	assert_true(b.operators && b.products && b.entitlements && b.denylist);
	strcpy(b.operators[0].id, "op");
	strcpy(b.products[0].id, "p");
	strcpy(b.products[0].operators[0], "op");
	b.products[0].n_operators = 1;
	for (i = 0; i < b.n_entitlements; i++) {
		struct kp_bundle_entitlement *e = &b.entitlements[i];
		uint32_t h = (uint32_t)i * 2654435761u;          /* scrambled order */

		memcpy(e->token, &h, sizeof(h));
		memcpy(e->token + 4, &i, sizeof(i));
		e->id = (int64_t)i + 1;
		strcpy(e->product, "p");
		e->remaining = 10;
		e->valid_from_ms = 1700000000000LL;
		e->valid_until_ms = 1800000000000LL;
		memcpy(b.denylist[i].token, e->token, KP_TOKEN_LEN);
		strcpy(b.denylist[i].reason, "lost");
	}
	bundle_bytes(&b, &out, &n);
	assert_true(n < KP_SYNC_FRAME_MAX);
	assert_int_equal(kp_bundle_decode(out, n, &d), KP_SYNC_OK);
	assert_int_equal(d.n_entitlements, 100000);
	for (i = 1; i < d.n_entitlements; i++)
		assert_true(memcmp(d.entitlements[i - 1].token, d.entitlements[i].token,
		                   KP_TOKEN_LEN) < 0);
	print_message("100,000 entitlements + 100,000 denylist entries: %zu bytes\n", n);
	kp_bundle_free(&d);
	kp_bundle_free(&b);
	free(out);
}


/* ---- eligibility and product categories (My Number linkage) ----
 *
 * The pieces below were computed at development time with a 20-line Python encoder written
 * from RFC 8949 (heads as described at the top of the file; a dict's entries sorted by their
 * encoded keys, a list of pairs written in the order given, to build wrong orders), from:
 *   full = {"v": 1, "acked": 0, "issued": F, "version": 5, "denylist": [],
 *           "products": [{"id": "res", "name": "", "rides": 10, "category": "resident",
 *                         "operators": ["op"]}],
 *           "terminal": "t", "operators": [{"id": "op", "name": ""}],
 *           "eligibility": [{"token": h'01' x 16, "category": "resident", "from": F, "until": U},
 *                           {"via": h'AA' x 16, "token": h'02' x 16, "category": "resident",
 *                            "from": F, "until": U}],
 *           "entitlements": []}        F = 1700000000000, U = 1800000000000
 * and BV_OLD the same without "eligibility" and without the product's "category" (the
 * layout every bundle had before these keys existed). Hand check of the new key order:
 * "eligibility" (6B, 11 bytes) sorts after "operators" (69) and before "entitlements" (6C);
 * inside an element "via" (63) < "from" (64) < "token" (65) < "until" (65, 't' < 'u') <
 * "category" (68); in a product "rides" (65) < "category" (68) < "operators" (69). */
#define BV_FULL \
	"AA6176016561636B656400666973737565641B0000018BCFE568006776657273696F6E056864656E" \
	"796C697374806870726F647563747381A562696463726573646E616D65606572696465730A686361" \
	"7465676F7279687265736964656E74696F70657261746F727381626F70687465726D696E616C6174" \
	"696F70657261746F727381A2626964626F70646E616D65606B656C69676962696C69747982A46466" \
	"726F6D1B0000018BCFE5680065746F6B656E500101010101010101010101010101010165756E7469" \
	"6C1B000001A3185C50006863617465676F7279687265736964656E74A56376696150AAAAAAAAAAAA" \
	"AAAAAAAAAAAAAAAAAAAA6466726F6D1B0000018BCFE5680065746F6B656E50020202020202020202" \
	"0202020202020265756E74696C1B000001A3185C50006863617465676F7279687265736964656E74" \
	"6C656E7469746C656D656E747380"
#define BV_OLD \
	"A96176016561636B656400666973737565641B0000018BCFE568006776657273696F6E056864656E" \
	"796C697374806870726F647563747381A462696463726573646E616D65606572696465730A696F70" \
	"657261746F727381626F70687465726D696E616C6174696F70657261746F727381A2626964626F70" \
	"646E616D65606C656E7469746C656D656E747380"
#define BP_HEAD \
	"6176016561636B656400666973737565641B0000018BCFE568006776657273696F6E056864656E79" \
	"6C697374806870726F647563747381"
#define BP_PROD_CAT \
	"A562696463726573646E616D65606572696465730A6863617465676F7279687265736964656E7469" \
	"6F70657261746F727381626F70"
#define BP_PROD_OLD \
	"A462696463726573646E616D65606572696465730A696F70657261746F727381626F70"
#define BP_OPS \
	"687465726D696E616C6174696F70657261746F727381A2626964626F70646E616D6560"
#define BP_ELIG_KEY \
	"6B656C69676962696C697479"
#define BP_E1 \
	"A46466726F6D1B0000018BCFE5680065746F6B656E50010101010101010101010101010101016575" \
	"6E74696C1B000001A3185C50006863617465676F7279687265736964656E74"
#define BP_E2 \
	"A56376696150AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA6466726F6D1B0000018BCFE5680065746F6B" \
	"656E500202020202020202020202020202020265756E74696C1B000001A3185C5000686361746567" \
	"6F7279687265736964656E74"
#define BP_TAIL \
	"6C656E7469746C656D656E747380"
#define BP_E_VIA15 \
	"A5637669614FAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA6466726F6D1B0000018BCFE5680065746F6B65" \
	"6E500202020202020202020202020202020265756E74696C1B000001A3185C50006863617465676F" \
	"7279687265736964656E74"
#define BP_E_FROM_FIRST \
	"A56466726F6D1B0000018BCFE568006376696150AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA65746F6B" \
	"656E500202020202020202020202020202020265756E74696C1B000001A3185C5000686361746567" \
	"6F7279687265736964656E74"
#define BP_E_BACKWARDS \
	"A46466726F6D1B000001A3185C500065746F6B656E50010101010101010101010101010101016575" \
	"6E74696C1B0000018BCFE568006863617465676F7279687265736964656E74"
#define BP_E_EMPTY_CAT \
	"A46466726F6D1B0000018BCFE5680065746F6B656E50010101010101010101010101010101016575" \
	"6E74696C1B000001A3185C50006863617465676F727960"
#define BP_E_EXTRA \
	"A56178006466726F6D1B0000018BCFE5680065746F6B656E50010101010101010101010101010101" \
	"0165756E74696C1B000001A3185C50006863617465676F7279687265736964656E74"
#define BP_E_NO_CAT \
	"A36466726F6D1B0000018BCFE5680065746F6B656E50010101010101010101010101010101016575" \
	"6E74696C1B000001A3185C5000"
#define BP_E_CAT_A \
	"A46466726F6D1B0000018BCFE5680065746F6B656E50010101010101010101010101010101016575" \
	"6E74696C1B000001A3185C50006863617465676F72796161"
#define BP_E_CAT_B \
	"A46466726F6D1B0000018BCFE5680065746F6B656E50010101010101010101010101010101016575" \
	"6E74696C1B000001A3185C50006863617465676F72796162"
#define BP_PROD_EMPTY_CAT \
	"A562696463726573646E616D65606572696465730A6863617465676F727960696F70657261746F72" \
	"7381626F70"
#define BP_PROD_CAT_LAST \
	"A562696463726573646E616D65606572696465730A696F70657261746F727381626F706863617465" \
	"676F7279687265736964656E74"

static struct kp_bundle elig_bundle(void)
{
	struct kp_bundle b;

	memset(&b, 0, sizeof(b));
	b.version = 5;
	b.issued_ms = 1700000000000LL;
	strcpy(b.terminal, "t");
	b.n_operators = 1;
	b.operators = calloc(1, sizeof(*b.operators));
	b.n_products = 1;
	b.products = calloc(1, sizeof(*b.products));
	b.n_eligibility = 2;
	b.eligibility = calloc(2, sizeof(*b.eligibility));
	assert_true(b.operators && b.products && b.eligibility);
	strcpy(b.operators[0].id, "op");
	strcpy(b.products[0].id, "res");
	b.products[0].rides = 10;
	strcpy(b.products[0].category, "resident");
	strcpy(b.products[0].operators[0], "op");
	b.products[0].n_operators = 1;
	for (size_t i = 0; i < 2; i++) {
		struct kp_bundle_eligibility *e = &b.eligibility[i];

		memset(e->token, (int)i + 1, KP_TOKEN_LEN);
		strcpy(e->category, "resident");
		e->valid_from_ms = 1700000000000LL;
		e->valid_until_ms = 1800000000000LL;
		e->has_via = i == 1;
		if (e->has_via)
			memset(e->via, 0xAA, KP_TOKEN_LEN);
	}
	return b;
}

static void assert_bundle_bytes(const struct kp_bundle *b, const char *want_hex)
{
	struct buf want = hex(want_hex);
	uint8_t *out = NULL;
	size_t n = 0;

	bundle_bytes(b, &out, &n);
	assert_int_equal(n, want.n);
	assert_memory_equal(out, want.b, n);
	free(out);
}

static int bundle_decode_hex(const char *h)
{
	struct kp_bundle d;

	return decode_hex_as(h, &d, bundle_decode, bundle_clear);
}

static void test_bundle_eligibility_vectors(void **state)
{
	struct kp_bundle b = elig_bundle(), d;
	struct buf full = hex(BV_FULL), old = hex(BV_OLD);

	(void)state;
	/* the pieces put together are the whole */
	assert_string_equal("AA" BP_HEAD BP_PROD_CAT BP_OPS BP_ELIG_KEY "82" BP_E1 BP_E2 BP_TAIL,
	                    BV_FULL);
	assert_string_equal("A9" BP_HEAD BP_PROD_OLD BP_OPS BP_TAIL, BV_OLD);
	assert_bundle_bytes(&b, BV_FULL);
	memset(&d, 0x5A, sizeof(d));
	assert_int_equal(kp_bundle_decode(full.b, full.n, &d), KP_SYNC_OK);
	assert_bundle_equal(&b, &d);
	assert_int_equal(d.eligibility[1].has_via, 1);
	assert_int_equal(d.eligibility[0].has_via, 0);
	kp_bundle_free(&d);

	/* an old bundle decodes: no eligibility, no product category; and the encoder still
	 * writes exactly that layout when there is none */
	memset(&d, 0x5A, sizeof(d));
	assert_int_equal(kp_bundle_decode(old.b, old.n, &d), KP_SYNC_OK);
	assert_int_equal(d.n_eligibility, 0);
	assert_null(d.eligibility);
	assert_string_equal(d.products[0].category, "");
	kp_bundle_free(&d);
	free(b.eligibility);
	b.eligibility = NULL;
	b.n_eligibility = 0;
	b.products[0].category[0] = '\0';
	assert_bundle_bytes(&b, BV_OLD);
	/* a category alone, eligibility alone */
	strcpy(b.products[0].category, "resident");
	assert_bundle_bytes(&b, "A9" BP_HEAD BP_PROD_CAT BP_OPS BP_TAIL);
	kp_bundle_free(&b);
	b = elig_bundle();
	b.products[0].category[0] = '\0';
	assert_bundle_bytes(&b, "AA" BP_HEAD BP_PROD_OLD BP_OPS BP_ELIG_KEY "82" BP_E1 BP_E2 BP_TAIL);
	kp_bundle_free(&b);
}

static void test_bundle_eligibility_order(void **state)
{
	struct kp_bundle b = elig_bundle();
	struct kp_bundle_eligibility tmp;
	uint8_t *out = NULL;
	size_t n = 0;

	(void)state;
	/* any order in, one order out; the caller's array untouched */
	tmp = b.eligibility[0];
	b.eligibility[0] = b.eligibility[1];
	b.eligibility[1] = tmp;
	assert_bundle_bytes(&b, BV_FULL);
	assert_int_equal(b.eligibility[0].token[0], 2);
	/* the same (token, category) twice is refused, whatever the via */
	memcpy(b.eligibility[0].token, b.eligibility[1].token, KP_TOKEN_LEN);
	assert_int_equal(kp_bundle_encode(&b, &out, &n), KP_SYNC_E_INVAL);
	assert_null(out);
	/* one token in two categories: sorted by category (bytewise) */
	strcpy(b.eligibility[0].category, "b");
	strcpy(b.eligibility[1].category, "a");
	b.eligibility[0].has_via = 0;
	memset(b.eligibility[0].via, 0, KP_TOKEN_LEN);
	assert_bundle_bytes(&b, "AA" BP_HEAD BP_PROD_CAT BP_OPS BP_ELIG_KEY "82" BP_E_CAT_A
	                        BP_E_CAT_B BP_TAIL);
	kp_bundle_free(&b);
}

static void test_bundle_eligibility_rejects(void **state)
{
#define B10(elig) "AA" BP_HEAD BP_PROD_CAT BP_OPS BP_ELIG_KEY elig BP_TAIL
	static const struct { const char *hex; int rc; const char *what; } t[] = {
		{ B10("82" BP_E1 BP_E2), KP_SYNC_OK, "the vector" },
		{ B10("82" BP_E_CAT_A BP_E_CAT_B), KP_SYNC_OK, "one token, two categories" },
		{ "A9" BP_HEAD BP_PROD_CAT BP_OPS BP_TAIL, KP_SYNC_OK, "a category, no eligibility" },
		{ B10("80"), KP_SYNC_E_MALFORMED, "eligibility: [] (none is no key)" },
		{ B10("82" BP_E2 BP_E1), KP_SYNC_E_MALFORMED, "tokens out of order" },
		{ B10("82" BP_E1 BP_E1), KP_SYNC_E_MALFORMED, "the same row twice" },
		{ B10("82" BP_E_CAT_B BP_E_CAT_A), KP_SYNC_E_MALFORMED, "categories out of order" },
		{ B10("81" BP_E_VIA15), KP_SYNC_E_MALFORMED, "via of 15 bytes" },
		{ B10("81" BP_E_FROM_FIRST), KP_SYNC_E_MALFORMED, "element keys out of order" },
		{ B10("81" BP_E_BACKWARDS), KP_SYNC_E_MALFORMED, "until before from" },
		{ B10("81" BP_E_EMPTY_CAT), KP_SYNC_E_MALFORMED, "empty category" },
		{ B10("81" BP_E_EXTRA), KP_SYNC_E_MALFORMED, "an unknown key in an element" },
		{ B10("81" BP_E_NO_CAT), KP_SYNC_E_MALFORMED, "category missing" },
		{ B10("A0"), KP_SYNC_E_MALFORMED, "eligibility as a map" },
		{ B10("9F" BP_E1 "FF"), KP_SYNC_E_MALFORMED, "indefinite array" },
		{ B10("9801" BP_E1), KP_SYNC_E_MALFORMED, "count in a longer head" },
		{ "AA" BP_HEAD BP_PROD_CAT BP_OPS BP_TAIL, KP_SYNC_E_MALFORMED, "10 keys claimed, 9 there" },
		{ "A9" BP_HEAD BP_PROD_CAT BP_OPS BP_ELIG_KEY "81" BP_E1 BP_TAIL, KP_SYNC_E_MALFORMED,
		  "9 keys claimed, 10 there" },
		{ "AA" BP_HEAD BP_PROD_CAT BP_OPS BP_TAIL BP_ELIG_KEY "81" BP_E1, KP_SYNC_E_MALFORMED,
		  "eligibility after entitlements" },
		{ "AB" BP_HEAD BP_PROD_CAT BP_OPS BP_ELIG_KEY "81" BP_E1 BP_TAIL, KP_SYNC_E_MALFORMED,
		  "11 keys" },
		{ "A9" BP_HEAD BP_PROD_EMPTY_CAT BP_OPS BP_TAIL, KP_SYNC_E_MALFORMED,
		  "product category \"\" (none is no key)" },
		{ "A9" BP_HEAD BP_PROD_CAT_LAST BP_OPS BP_TAIL, KP_SYNC_E_MALFORMED,
		  "product category after operators" },
	};
#undef B10
	struct buf full = hex(BV_FULL);
	uint32_t seed = 4242;
	size_t i;

	(void)state;
	for (i = 0; i < sizeof(t) / sizeof(t[0]); i++) {
		int rc = bundle_decode_hex(t[i].hex);

		if (rc != t[i].rc)
			fail_msg("%s: got %d (%s), want %d", t[i].what, rc, kp_sync_strerror(rc), t[i].rc);
	}
	/* what the encoder refuses */
	for (i = 0; i < 11; i++) {
		struct kp_bundle b = elig_bundle();
		struct kp_bundle_eligibility *keep = NULL;
		uint8_t *out = (uint8_t *)1;
		size_t n = 1;
		int want = KP_SYNC_E_INVAL;

		switch (i) {
		case 0:  b.eligibility[0].category[0] = '\0'; break;
		case 1:  memset(b.eligibility[0].category, 'x', sizeof(b.eligibility[0].category)); break;
		case 2:  strcpy(b.eligibility[1].category, "\xC3\x28"); break;
		case 3:  b.eligibility[0].valid_from_ms = -1; break;
		case 4:  b.eligibility[0].valid_until_ms = b.eligibility[0].valid_from_ms - 1; break;
		case 5:  keep = b.eligibility; b.eligibility = NULL; break;
		case 6:  b.n_eligibility = KP_BUNDLE_ELIGIBILITY_MAX + 1; want = KP_SYNC_E_TOOBIG; break;
		case 7:  strcpy(b.products[0].category, "\xED\xA0\x80"); break;
		case 8:  memset(b.products[0].category, 'x', sizeof(b.products[0].category)); break;
		case 9:  b.eligibility[1] = b.eligibility[0]; break;
		case 10: memset(b.eligibility[0].category, 'x', KP_ID_MAX);    /* 32: fine */
		         want = KP_SYNC_OK; break;
		}
		if (kp_bundle_encode(&b, &out, &n) != want)
			fail_msg("encode case %zu: want %d", i, want);
		if (want != KP_SYNC_OK) {
			assert_null(out);
			assert_int_equal(n, 0);
		}
		if (out != (uint8_t *)1)
			free(out);
		if (keep != NULL)
			b.eligibility = keep;
		kp_bundle_free(&b);
	}
	fuzz_bytes(full.b, full.n, check_bundle_any, &seed, 20000);
}

static void test_bundle_eligibility_limits(void **state)
{
	struct kp_bundle b, d;
	uint8_t *out = NULL;
	size_t n = 0, i;
	int rc;

	(void)state;
	/* 2,000,001 claimed: above the limit; 2,000,000 with room for one: refused before
	 * anything is allocated; 2^64 - 1: above the limit */
	rc = bundle_decode_hex("AA" BP_HEAD BP_PROD_CAT BP_OPS BP_ELIG_KEY "9A001E8481" BP_E1 BP_TAIL);
	assert_int_equal(rc, KP_SYNC_E_TOOBIG);
	rc = bundle_decode_hex("AA" BP_HEAD BP_PROD_CAT BP_OPS BP_ELIG_KEY "9A001E8480" BP_E1 BP_TAIL);
	assert_int_equal(rc, KP_SYNC_E_MALFORMED);
	rc = bundle_decode_hex("AA" BP_HEAD BP_PROD_CAT BP_OPS BP_ELIG_KEY "9BFFFFFFFFFFFFFFFF" BP_E1
	                       BP_TAIL);
	assert_int_equal(rc, KP_SYNC_E_TOOBIG);

	/* a town's worth: 100,000 rows in scrambled order, every other one through a linkage */
	memset(&b, 0, sizeof(b));
	b.version = 9;
	strcpy(b.terminal, TERMINAL);
	b.n_eligibility = 100000;
	b.eligibility = calloc(b.n_eligibility, sizeof(*b.eligibility));
	assert_non_null(b.eligibility);
	for (i = 0; i < b.n_eligibility; i++) {
		struct kp_bundle_eligibility *e = &b.eligibility[i];
		uint32_t h = (uint32_t)i * 2654435761u;

		memcpy(e->token, &h, sizeof(h));
		memcpy(e->token + 4, &i, sizeof(i));
		strcpy(e->category, i % 3 ? "resident" : "senior-resident");
		e->valid_from_ms = 1700000000000LL;
		e->valid_until_ms = 1800000000000LL;
		e->has_via = i % 2;
		if (e->has_via)
			memset(e->via, (int)(i & 0xFF), KP_TOKEN_LEN);
	}
	bundle_bytes(&b, &out, &n);
	assert_true(n < KP_SYNC_FRAME_MAX);
	assert_int_equal(kp_bundle_decode(out, n, &d), KP_SYNC_OK);
	assert_int_equal(d.n_eligibility, 100000);
	for (i = 1; i < d.n_eligibility; i++)
		assert_true(memcmp(d.eligibility[i - 1].token, d.eligibility[i].token,
		                   KP_TOKEN_LEN) < 0);
	print_message("100,000 eligibility rows (half with via): %zu bytes, %zu per row\n", n,
	              n / 100000);
	kp_bundle_free(&d);
	kp_bundle_free(&b);
	free(out);
}

/* ---- signing and opening ---- */

static kp_key *ca_key, *backend_key, *other_key, *terminal_key;
static kp_cert *backend_cert, *other_cert, *terminal_cert;

static int keys_setup(void **state)
{
	kp_cert *ca_cert = NULL;
	int rc;

	tu_scratch_setup(state);
	rc = kp_key_generate(&ca_key) || kp_key_generate(&backend_key) ||
	     kp_key_generate(&other_key) || kp_key_generate(&terminal_key) ||
	     kp_cert_create_ca(ca_key, "Wire Test CA", 30, tu_tmp("ca.pem")) ||
	     kp_cert_load(&ca_cert, tu_tmp("ca.pem")) ||
	     kp_cert_issue(ca_key, ca_cert, backend_key, "backend", 30, tu_tmp("backend.pem")) ||
	     kp_cert_load(&backend_cert, tu_tmp("backend.pem")) ||
	     kp_cert_issue(ca_key, ca_cert, other_key, "backend", 30, tu_tmp("other.pem")) ||
	     kp_cert_load(&other_cert, tu_tmp("other.pem")) ||
	     kp_cert_issue(ca_key, ca_cert, terminal_key, TERMINAL, 30, tu_tmp("terminal.pem")) ||
	     kp_cert_load(&terminal_cert, tu_tmp("terminal.pem")) ||
	     kp_key_save(terminal_key, tu_tmp("terminal.key"));
	kp_cert_free(ca_cert);
	return rc ? -1 : 0;
}

static int keys_teardown(void **state)
{
	kp_key_free(ca_key);
	kp_key_free(backend_key);
	kp_key_free(other_key);
	kp_key_free(terminal_key);
	kp_cert_free(backend_cert);
	kp_cert_free(other_cert);
	kp_cert_free(terminal_cert);
	return tu_scratch_teardown(state);
}

static void test_bundle_sign_open(void **state)
{
	struct kp_bundle b = sample_bundle(7), d;
	uint8_t *cose = NULL, *other = NULL, *payload = NULL, *copy;
	size_t n = 0, on = 0, pn = 0;
	char err[256];

	(void)state;
	assert_int_equal(kp_bundle_sign(&b, backend_key, &cose, &n), KP_SYNC_OK);
	assert_deterministic(cose, n);

	/* good: newer than what we have, for us */
	assert_int_equal(kp_bundle_open_err(backend_cert, cose, n, TERMINAL, 6, &d, err,
	                                    sizeof(err)), KP_SYNC_OK);
	assert_string_equal(err, "");
	assert_bundle_equal(&b, &d);
	kp_bundle_free(&d);
	assert_int_equal(kp_bundle_open(backend_cert, cose, n, TERMINAL, 0, &d), KP_SYNC_OK);
	kp_bundle_free(&d);

	/* stale: the same version or older than ours */
	assert_int_equal(kp_bundle_open_err(backend_cert, cose, n, TERMINAL, 7, &d, err,
	                                    sizeof(err)), KP_SYNC_E_STALE);
	assert_string_equal(err, "bundle version 7 is not newer than version 7 applied");
	assert_null(d.entitlements);
	assert_int_equal(kp_bundle_open(backend_cert, cose, n, TERMINAL, 8, &d), KP_SYNC_E_STALE);

	/* made for another terminal */
	assert_int_equal(kp_bundle_open_err(backend_cert, cose, n, "bus-043", 0, &d, err,
	                                    sizeof(err)), KP_SYNC_E_MALFORMED);
	assert_string_equal(err, "bundle is for terminal bus-042, not bus-043");
	assert_null(d.operators);

	/* a flipped bit in the payload, in the signature */
	copy = malloc(n);
	assert_non_null(copy);
	memcpy(copy, cose, n);
	copy[n / 2] ^= 0x04;
	assert_int_equal(kp_bundle_open_err(backend_cert, copy, n, TERMINAL, 0, &d, err,
	                                    sizeof(err)), KP_SYNC_E_SIGNATURE);
	assert_non_null(strstr(err, "signature"));
	memcpy(copy, cose, n);
	copy[n - 1] ^= 0x80;
	assert_int_equal(kp_bundle_open(backend_cert, copy, n, TERMINAL, 0, &d),
	                 KP_SYNC_E_SIGNATURE);
	free(copy);

	/* signed with another key (whose certificate says "backend" too) */
	assert_int_equal(kp_bundle_sign(&b, other_key, &other, &on), KP_SYNC_OK);
	assert_int_equal(kp_bundle_open(backend_cert, other, on, TERMINAL, 0, &d),
	                 KP_SYNC_E_SIGNATURE);
	assert_int_equal(kp_bundle_open(other_cert, other, on, TERMINAL, 0, &d), KP_SYNC_OK);
	kp_bundle_free(&d);
	free(other);

	/* the backend's key, but another kid */
	assert_int_equal(kp_bundle_encode(&b, &payload, &pn), KP_SYNC_OK);
	assert_int_equal(kp_cose_sign1(backend_key, "bus-042", payload, pn, &other, &on),
	                 KP_RECORD_OK);
	assert_int_equal(kp_bundle_open_err(backend_cert, other, on, TERMINAL, 0, &d, err,
	                                    sizeof(err)), KP_SYNC_E_MALFORMED);
	assert_string_equal(err, "bundle is signed with kid 'bus-042', not 'backend'");
	free(other);
	/* signed properly, but not a bundle inside */
	assert_int_equal(kp_cose_sign1(backend_key, "backend", payload, pn - 1, &other, &on),
	                 KP_RECORD_OK);
	assert_int_equal(kp_bundle_open(backend_cert, other, on, TERMINAL, 0, &d),
	                 KP_SYNC_E_MALFORMED);
	free(other);
	free(payload);

	/* not COSE at all */
	assert_int_equal(kp_bundle_open_err(backend_cert, (const uint8_t *)"\xA0", 1, TERMINAL, 0,
	                                    &d, err, sizeof(err)), KP_SYNC_E_MALFORMED);
	assert_int_equal(kp_bundle_open(backend_cert, NULL, 0, TERMINAL, 0, &d),
	                 KP_SYNC_E_MALFORMED);
	assert_int_equal(kp_bundle_open(NULL, cose, n, TERMINAL, 0, &d), KP_SYNC_E_INVAL);
	assert_int_equal(kp_bundle_sign(&b, NULL, &other, &on), KP_SYNC_E_INVAL);

	free(cose);
	kp_bundle_free(&b);
}

/* ---- the client, against an in-memory backend ---- */

#define N_RECORDS 600

static uint8_t *journal[N_RECORDS + 1];        /* COSE records, seq 1..N_RECORDS */
static size_t journal_len[N_RECORDS + 1];

static int journal_setup(void **state)
{
	uint8_t prev[KP_SHA256_LEN] = { 0 };

	if (keys_setup(state) != 0)
		return -1;
	for (size_t seq = 1; seq <= N_RECORDS; seq++) {
		struct kp_record r;
		uint8_t *pl = NULL;
		size_t pl_len = 0;

		memset(&r, 0, sizeof(r));
		strcpy(r.terminal, TERMINAL);
		r.seq = seq;
		r.time_ms = 1700000000000LL + (int64_t)seq * 1000;
		strcpy(r.kind, "tap");
		strcpy(r.operator_id, "kansai-bus");
		strcpy(r.result, "accepted");
		strcpy(r.reason, "ok");
		r.rides = 1;
		memcpy(r.prev, prev, sizeof(prev));
		if (kp_record_encode(&r, &pl, &pl_len) != KP_RECORD_OK ||
		    kp_sha256(pl, pl_len, prev) != KP_CRYPTO_OK ||
		    kp_cose_sign1(terminal_key, TERMINAL, pl, pl_len, &journal[seq],
		                  &journal_len[seq]) != KP_RECORD_OK)
			return -1;
		free(pl);
	}
	return 0;
}

static int journal_teardown(void **state)
{
	for (size_t seq = 1; seq <= N_RECORDS; seq++)
		free(journal[seq]);
	return keys_teardown(state);
}

/* The terminal's side: a journal in memory. */
struct store {
	uint64_t acked, version;
	int applied, fail_apply, fail_records;
	int set_acked_calls;
	uint64_t acked_seen[32];
};

static int st_records_after(void *ctx, uint64_t after, size_t max, struct kp_bytes *items,
                            size_t *n)
{
	struct store *s = ctx;

	*n = 0;
	if (s->fail_records)
		return -0x7001;
	for (uint64_t seq = after + 1; seq <= N_RECORDS && *n < max; seq++) {
		uint8_t *copy = malloc(journal_len[seq]);

		assert_non_null(copy);
		memcpy(copy, journal[seq], journal_len[seq]);
		items[*n].p = copy;
		items[*n].n = journal_len[seq];
		(*n)++;
	}
	return 0;
}

static int st_set_acked(void *ctx, uint64_t acked)
{
	struct store *s = ctx;

	if (s->set_acked_calls < 32)
		s->acked_seen[s->set_acked_calls] = acked;
	s->set_acked_calls++;
	s->acked = acked;
	return 0;
}

static int st_config_version(void *ctx, uint64_t *version)
{
	*version = ((struct store *)ctx)->version;
	return 0;
}

static int st_apply_bundle(void *ctx, const struct kp_bundle *b)
{
	struct store *s = ctx;

	if (s->fail_apply)
		return -0x7002;
	assert_string_equal(b->terminal, TERMINAL);
	assert_int_equal(b->n_entitlements, 4);
	s->version = b->version;
	s->applied++;
	return 0;
}

/* The backend's side, answering each frame as it arrives. */
enum ack_mode { ACK_ALL, ACK_SOME, ACK_BEYOND, ACK_BACK, ACK_NONE, ACK_WRONG_TYPE, ACK_ERROR };
enum bundle_mode { B_NONE, B_GOOD, B_STALE, B_OTHER_TERMINAL, B_BAD_SIG };

struct backend {
	struct pipe to_server, to_client;
	uint64_t held;                  /* what the backend holds of this terminal */
	enum ack_mode ack;
	enum bundle_mode bundle;
	uint64_t refuse_seq;            /* 0: none */
	int error_at_hello, silent_after_hello;
	enum kp_msg_type seen[64];
	size_t n_seen;
	uint64_t config_asked;
	int hello_has_last;             /* what the hello said of the terminal's newest seq */
	uint64_t hello_last;
};

static void backend_send(struct backend *be, const struct kp_msg *m)
{
	const struct kp_sync_io io = { .ctx = &be->to_client, .read_exact = pipe_read,
	                               .write_all = pipe_write };

	assert_int_equal(kp_msg_send_io(&io, m, 100), KP_SYNC_OK);
}

static void backend_answer(struct backend *be, const struct kp_msg *in)
{
	struct kp_msg out;
	struct kp_bundle b;
	size_t i;

	memset(&out, 0, sizeof(out));
	switch (in->type) {
	case KP_MSG_HELLO:
		assert_string_equal(in->terminal, TERMINAL);
		be->hello_has_last = in->has_last;
		be->hello_last = in->last;
		if (be->silent_after_hello)
			return;
		out.type = be->error_at_hello ? KP_MSG_ERROR : KP_MSG_WELCOME;
		out.acked = be->held;
		strcpy(out.reason, "terminal id differs from the certificate's\n\x1b[31m");
		break;
	case KP_MSG_RECORDS:
		/* every record verifies with the terminal's key, in sequence after held */
		for (i = 0; i < in->n_items; i++) {
			const uint8_t *pl;
			size_t pl_len;
			struct kp_record r;

			assert_int_equal(kp_cose_verify1(terminal_cert, in->items[i].p, in->items[i].n,
			                                 &pl, &pl_len, NULL, 0), KP_RECORD_OK);
			assert_int_equal(kp_record_decode(pl, pl_len, &r), KP_RECORD_OK);
			assert_true(r.seq == be->held + 1 + i);
		}
		out.type = KP_MSG_ACK;
		switch (be->ack) {
		case ACK_ALL:        out.acked = be->held + in->n_items; break;
		case ACK_SOME:       out.acked = be->held + (in->n_items + 1) / 2; break;
		case ACK_BEYOND:     out.acked = be->held + in->n_items + 1; break;
		case ACK_BACK:       out.acked = be->held > 0 ? be->held - 1 : 0; break;
		case ACK_NONE:       out.acked = be->held; break;
		case ACK_WRONG_TYPE: out.type = KP_MSG_WELCOME; break;
		case ACK_ERROR:
			out.type = KP_MSG_ERROR;
			strcpy(out.reason, "backend could not store the batch; try later");
			break;
		}
		if (be->refuse_seq > be->held && be->refuse_seq <= be->held + in->n_items) {
			out.type = KP_MSG_REFUSED;
			out.acked = be->refuse_seq - 1;
			out.seq = be->refuse_seq;
			strcpy(out.reason, "bad signature");
		}
		if (out.type == KP_MSG_ACK || out.type == KP_MSG_REFUSED)
			be->held = out.acked > be->held ? out.acked : be->held;
		break;
	case KP_MSG_GETCONFIG:
		be->config_asked = in->config;
		out.type = KP_MSG_CONFIG;
		if (be->bundle == B_NONE)
			break;
		b = sample_bundle(be->bundle == B_STALE ? in->config : in->config + 5);
		if (be->bundle == B_OTHER_TERMINAL)
			strcpy(b.terminal, "bus-043");
		assert_int_equal(kp_bundle_sign(&b, be->bundle == B_BAD_SIG ? other_key : backend_key,
		                                (uint8_t **)&out.bundle.p, &out.bundle.n), KP_SYNC_OK);
		out.has_bundle = 1;
		kp_bundle_free(&b);
		backend_send(be, &out);
		free((void *)out.bundle.p);
		return;
	case KP_MSG_BYE:
		return;
	default:
		fail_msg("backend got %s", kp_msg_type_name(in->type));
	}
	backend_send(be, &out);
}

/* The client's io: writes go to the backend, which answers each complete frame at once;
 * reads take the answers, and time out when there are none. */
static int client_write(void *ctx, const void *b, size_t n, int timeout_ms)
{
	struct backend *be = ctx;
	struct pipe *p = &be->to_server;

	(void)timeout_ms;
	pipe_write(p, b, n, 0);
	while (p->len - p->rpos >= 4) {
		const uint8_t *h = p->buf + p->rpos;
		size_t len = (size_t)h[0] << 24 | (size_t)h[1] << 16 | (size_t)h[2] << 8 | h[3];
		struct kp_msg m;

		if (p->len - p->rpos < 4 + len)
			break;
		assert_int_equal(kp_msg_decode(h + 4, len, &m), KP_SYNC_OK);
		p->rpos += 4 + len;
		assert_true(be->n_seen < 64);
		be->seen[be->n_seen++] = m.type;
		backend_answer(be, &m);
		kp_msg_clear(&m);
	}
	return 0;
}

static int client_read(void *ctx, void *b, size_t n, int timeout_ms)
{
	struct backend *be = ctx;
	struct pipe *p = &be->to_client;

	(void)timeout_ms;
	if (p->len - p->rpos < n)
		return KP_TLS_E_TIMEOUT;
	memcpy(b, p->buf + p->rpos, n);
	p->rpos += n;
	return 0;
}

static const char *st_errmsg(void *ctx)
{
	(void)ctx;
	return "product P1: not valid here";
}

static struct kp_sync_source store_source(struct store *s)
{
	struct kp_sync_source src = { .ctx = s, .records_after = st_records_after,
	                              .set_acked = st_set_acked,
	                              .config_version = st_config_version,
	                              .apply_bundle = st_apply_bundle };

	return src;
}

static int run_client(struct backend *be, struct store *s, struct kp_sync_stats *st, char *err,
                      size_t err_cap)
{
	const struct kp_sync_io io = { .ctx = be, .read_exact = client_read,
	                               .write_all = client_write };
	const struct kp_sync_source src = store_source(s);

	return kp_sync_exchange(&io, TERMINAL, backend_cert, &src, 1000, st, err, err_cap);
}

static void backend_free(struct backend *be)
{
	pipe_reset(&be->to_server);
	pipe_reset(&be->to_client);
}

/* The types the backend saw, as one string: "hello records records getconfig bye". */
static const char *seen(const struct backend *be)
{
	static char out[1024];
	size_t i;

	out[0] = '\0';
	for (i = 0; i < be->n_seen; i++) {
		strcat(out, i > 0 ? " " : "");
		strcat(out, kp_msg_type_name(be->seen[i]));
	}
	return out;
}

static void test_client_full_sync(void **state)
{
	struct backend be = { .ack = ACK_ALL, .bundle = B_GOOD };
	struct store s = { .version = 2 };
	struct kp_sync_stats st;
	char err[256];

	(void)state;
	assert_int_equal(run_client(&be, &s, &st, err, sizeof(err)), KP_SYNC_OK);
	assert_string_equal(err, "");
	assert_string_equal(seen(&be), "hello records records records getconfig bye");
	assert_true(st.sent == N_RECORDS && st.acked == N_RECORDS);
	assert_true(s.acked == N_RECORDS);
	assert_int_equal(s.set_acked_calls, 4);         /* welcome, then each ack */
	assert_true(s.acked_seen[0] == 0 && s.acked_seen[1] == 256 && s.acked_seen[2] == 512);
	assert_true(be.config_asked == 2);
	assert_int_equal(st.bundle_applied, 1);
	assert_true(st.bundle_version == 7 && s.version == 7);
	assert_int_equal(s.applied, 1);
	assert_int_equal(be.to_client.rpos, be.to_client.len);  /* nothing left unread */
	backend_free(&be);

	/* again: nothing to send, no newer bundle */
	memset(&be, 0, sizeof(be));
	be.held = N_RECORDS;
	be.bundle = B_NONE;
	assert_int_equal(run_client(&be, &s, &st, err, sizeof(err)), KP_SYNC_OK);
	assert_string_equal(seen(&be), "hello getconfig bye");
	assert_true(st.sent == 0 && st.acked == N_RECORDS);
	assert_int_equal(st.bundle_applied, 0);
	assert_true(st.bundle_version == 7);
	backend_free(&be);
}

/* The backend acknowledges only part of each batch: the client goes on from there. */
static void test_client_partial_acks(void **state)
{
	struct backend be = { .ack = ACK_SOME, .held = 550 };
	struct store s = { 0 };
	struct kp_sync_stats st;
	char err[256];

	(void)state;
	assert_int_equal(run_client(&be, &s, &st, err, sizeof(err)), KP_SYNC_OK);
	/* 50 -> 25 acked, 25 -> 13, 12 -> 6, 6 -> 3, 3 -> 2, 1 -> 1 */
	assert_string_equal(seen(&be), "hello records records records records records records "
	                    "getconfig bye");
	assert_true(st.acked == N_RECORDS && s.acked == N_RECORDS);
	assert_true(st.sent == 50 + 25 + 12 + 6 + 3 + 1);
	backend_free(&be);
}

static void test_client_refused(void **state)
{
	struct backend be = { .ack = ACK_ALL, .bundle = B_GOOD, .refuse_seq = 300 };
	struct store s = { 0 };
	struct kp_sync_stats st;
	char err[256];

	(void)state;
	assert_int_equal(run_client(&be, &s, &st, err, sizeof(err)), KP_SYNC_E_REFUSED);
	assert_string_equal(err, "backend refused record 300: bad signature");
	assert_true(st.refused_seq == 300);
	assert_string_equal(st.refused_reason, "bad signature");
	assert_true(st.acked == 299 && s.acked == 299);
	assert_true(st.sent == 512);
	/* uploading stops, the bundle is still fetched and applied */
	assert_string_equal(seen(&be), "hello records records getconfig bye");
	assert_int_equal(st.bundle_applied, 1);
	assert_int_equal(s.applied, 1);
	backend_free(&be);
}

static void test_client_protocol_errors(void **state)
{
	static const struct { enum ack_mode ack; const char *err; } t[] = {
		{ ACK_BEYOND, "backend acknowledged 257 after records 1..256" },
		{ ACK_BACK, "backend acknowledged 99 after records 101..356" },
		{ ACK_NONE, "backend acknowledged none of records 101..356" },
		{ ACK_WRONG_TYPE, "expected ack or refused, got welcome" },
		{ ACK_ERROR, "backend error: backend could not store the batch; try later" },
	};
	size_t i;

	(void)state;
	for (i = 0; i < sizeof(t) / sizeof(t[0]); i++) {
		struct backend be = { .ack = t[i].ack, .bundle = B_GOOD };
		struct store s = { 0 };
		struct kp_sync_stats st;
		char err[256];

		be.held = t[i].ack == ACK_BACK || t[i].ack == ACK_NONE ? 100 : 0;
		assert_int_equal(run_client(&be, &s, &st, err, sizeof(err)), KP_SYNC_E_PROTOCOL);
		assert_string_equal(err, t[i].err);
		/* the exchange ends there: no config, no bye */
		assert_string_equal(seen(&be), "hello records");
		assert_int_equal(s.applied, 0);
		backend_free(&be);
	}
}

static void test_client_backend_error_and_silence(void **state)
{
	struct backend be = { .error_at_hello = 1 };
	struct store s = { 0 };
	struct kp_sync_stats st;
	char err[256];

	(void)state;
	assert_int_equal(run_client(&be, &s, &st, err, sizeof(err)), KP_SYNC_E_PROTOCOL);
	/* control characters from the backend never reach a log line */
	assert_string_equal(err, "backend error: terminal id differs from the certificate's?"
	                    "?[31m");
	assert_int_equal(s.set_acked_calls, 0);
	backend_free(&be);

	memset(&be, 0, sizeof(be));
	be.silent_after_hello = 1;
	assert_int_equal(run_client(&be, &s, &st, err, sizeof(err)), KP_TLS_E_TIMEOUT);
	assert_non_null(strstr(err, "waiting for the answer to hello: "));
	backend_free(&be);
}

static void test_client_bad_bundles(void **state)
{
	static const struct { enum bundle_mode mode; int rc; const char *err; } t[] = {
		{ B_BAD_SIG, KP_SYNC_E_SIGNATURE,
		  "config: bundle signature does not verify with the backend certificate" },
		{ B_OTHER_TERMINAL, KP_SYNC_E_MALFORMED,
		  "config: bundle is for terminal bus-043, not bus-042" },
		{ B_STALE, KP_SYNC_E_STALE,
		  "config: bundle version 3 is not newer than version 3 applied" },
	};
	size_t i;

	(void)state;
	for (i = 0; i < sizeof(t) / sizeof(t[0]); i++) {
		struct backend be = { .held = N_RECORDS, .bundle = t[i].mode };
		struct store s = { .acked = N_RECORDS, .version = 3 };
		struct kp_sync_stats st;
		char err[256];

		assert_int_equal(run_client(&be, &s, &st, err, sizeof(err)), t[i].rc);
		assert_string_equal(err, t[i].err);
		/* refused, not applied; the connection was fine, so bye */
		assert_string_equal(seen(&be), "hello getconfig bye");
		assert_int_equal(s.applied, 0);
		assert_int_equal(st.bundle_applied, 0);
		assert_true(s.version == 3 && st.bundle_version == 3);
		backend_free(&be);
	}
}

static void test_client_store_failures(void **state)
{
	struct backend be = { .bundle = B_GOOD };
	struct store s = { .fail_apply = 1 };
	struct kp_sync_stats st;
	const struct kp_sync_io io = { .ctx = &be, .read_exact = client_read,
	                               .write_all = client_write };
	struct kp_sync_source src = store_source(&s);
	char err[256];

	(void)state;
	be.held = N_RECORDS;
	assert_int_equal(run_client(&be, &s, &st, err, sizeof(err)), -0x7002);
	assert_string_equal(err, "terminal store: applying bundle version 5 failed (error)");
	assert_string_equal(seen(&be), "hello getconfig bye");
	backend_free(&be);

	/* A store that says why: its words end the client's error text (the terminal's store
	 * prints nothing itself). */
	memset(&be, 0, sizeof(be));
	be.bundle = B_GOOD;
	be.held = N_RECORDS;
	src.errmsg = st_errmsg;
	assert_int_equal(kp_sync_exchange(&io, TERMINAL, backend_cert, &src, 1000, &st, err,
	                                  sizeof(err)), -0x7002);
	assert_string_equal(err, "terminal store: applying bundle version 5 failed "
	                         "(error: product P1: not valid here)");
	backend_free(&be);

	memset(&be, 0, sizeof(be));
	s.fail_apply = 0;
	s.fail_records = 1;
	be.bundle = B_GOOD;
	assert_int_equal(run_client(&be, &s, &st, err, sizeof(err)), -0x7001);
	assert_string_equal(err, "terminal store: reading records after 0 failed (error)");
	assert_string_equal(seen(&be), "hello getconfig bye");
	assert_int_equal(s.applied, 1);
	backend_free(&be);

	/* arguments */
	assert_int_equal(kp_sync_exchange(NULL, TERMINAL, backend_cert, &src, 10, &st, err,
	                                  sizeof(err)), KP_SYNC_E_INVAL);
	assert_string_equal(err, "invalid argument");
	assert_int_equal(kp_sync_exchange(&io, "", backend_cert, &src, 10, &st, err, sizeof(err)),
	                 KP_SYNC_E_INVAL);
	assert_int_equal(kp_sync_exchange(&io, TERMINAL, NULL, &src, 10, NULL, NULL, 0),
	                 KP_SYNC_E_INVAL);
	src.apply_bundle = NULL;
	assert_int_equal(kp_sync_exchange(&io, TERMINAL, backend_cert, &src, 10, &st, err,
	                                  sizeof(err)), KP_SYNC_E_INVAL);
	assert_int_equal(be.to_server.len, 0);
}

static int st_last_seq(void *ctx, uint64_t *seq)
{
	struct store *s = ctx;

	if (s->fail_records)
		return -0x7003;
	*seq = N_RECORDS;
	return 0;
}

/* A store with last_seq: its hello says the newest seq (PROTOCOL.md hello `last`); without
 * it the hello says nothing; a failing one ends the exchange before anything is sent. */
static void test_client_hello_last(void **state)
{
	struct backend be = { .ack = ACK_ALL };
	struct store s = { 0 };
	struct kp_sync_stats st;
	const struct kp_sync_io io = { .ctx = &be, .read_exact = client_read,
	                               .write_all = client_write };
	struct kp_sync_source src = store_source(&s);
	char err[256];

	(void)state;
	be.held = N_RECORDS;
	assert_int_equal(kp_sync_exchange(&io, TERMINAL, backend_cert, &src, 1000, &st, err,
	                                  sizeof(err)), KP_SYNC_OK);
	assert_int_equal(be.hello_has_last, 0);
	backend_free(&be);

	memset(&be, 0, sizeof(be));
	be.ack = ACK_ALL;
	be.held = 100;
	src.last_seq = st_last_seq;
	assert_int_equal(kp_sync_exchange(&io, TERMINAL, backend_cert, &src, 1000, &st, err,
	                                  sizeof(err)), KP_SYNC_OK);
	assert_int_equal(be.hello_has_last, 1);
	assert_true(be.hello_last == N_RECORDS);
	assert_true(st.acked == N_RECORDS);
	backend_free(&be);

	memset(&be, 0, sizeof(be));
	s.fail_records = 1;
	assert_int_equal(kp_sync_exchange(&io, TERMINAL, backend_cert, &src, 1000, &st, err,
	                                  sizeof(err)), -0x7003);
	assert_string_equal(err, "terminal store: reading the newest seq failed (error)");
	assert_int_equal(be.to_server.len, 0);
	backend_free(&be);
}

/* kp_sync_run's own part: a port nobody listens on. */
static void test_client_connect_refused(void **state)
{
	struct store s = { 0 };
	struct kp_sync_source src = store_source(&s);
	struct kp_sync_stats st;
	kp_tls_conf *conf = NULL;
	char err[256], port[16], want[64];
	int fd = -1, bound = 0;

	(void)state;
	assert_int_equal(kp_tls_conf_new(&conf, KP_TLS_CLIENT, tu_tmp("ca.pem"),
	                                 tu_tmp("terminal.pem"), tu_tmp("terminal.key"), err,
	                                 sizeof(err)), KP_TLS_OK);
	assert_int_equal(kp_tcp_listen("127.0.0.1", "0", &fd, &bound), KP_TLS_OK);
	close(fd);
	snprintf(port, sizeof(port), "%d", bound);
	assert_int_equal(kp_sync_run(conf, "127.0.0.1", port, "backend", TERMINAL, backend_cert,
	                             &src, 2000, &st, err, sizeof(err)), KP_TLS_E_NET);
	snprintf(want, sizeof(want), "connect 127.0.0.1:%s: ", port);
	assert_memory_equal(err, want, strlen(want));
	print_message("%s\n", err);
	assert_true(st.sent == 0);
	assert_int_equal(kp_sync_run(NULL, "127.0.0.1", port, "backend", TERMINAL, backend_cert,
	                             &src, 2000, &st, err, sizeof(err)), KP_SYNC_E_INVAL);
	kp_tls_conf_free(conf);
}

int main(void)
{
	const struct CMUnitTest wire_tests[] = {
		cmocka_unit_test(test_msg_roundtrip),
		cmocka_unit_test(test_msg_vectors),
		cmocka_unit_test(test_msg_encode_rejects),
		cmocka_unit_test(test_msg_decode_rejects),
		cmocka_unit_test(test_msg_optional_keys),
		cmocka_unit_test(test_msg_hello_last),
		cmocka_unit_test(test_msg_limits),
		cmocka_unit_test(test_msg_fuzz),
		cmocka_unit_test(test_frames),
	};
	const struct CMUnitTest bundle_tests[] = {
		cmocka_unit_test(test_bundle_roundtrip),
		cmocka_unit_test(test_bundle_canonical_order),
		cmocka_unit_test(test_bundle_encode_rejects),
		cmocka_unit_test(test_bundle_decode_rejects),
		cmocka_unit_test(test_bundle_policy_format4),
		cmocka_unit_test(test_bundle_limits),
		cmocka_unit_test(test_bundle_eligibility_vectors),
		cmocka_unit_test(test_bundle_eligibility_order),
		cmocka_unit_test(test_bundle_eligibility_rejects),
		cmocka_unit_test(test_bundle_eligibility_limits),
		cmocka_unit_test(test_bundle_sign_open),
	};
	const struct CMUnitTest client_tests[] = {
		cmocka_unit_test(test_client_full_sync),
		cmocka_unit_test(test_client_partial_acks),
		cmocka_unit_test(test_client_refused),
		cmocka_unit_test(test_client_protocol_errors),
		cmocka_unit_test(test_client_backend_error_and_silence),
		cmocka_unit_test(test_client_bad_bundles),
		cmocka_unit_test(test_client_store_failures),
		cmocka_unit_test(test_client_hello_last),
		cmocka_unit_test(test_client_connect_refused),
	};
	int failed = cmocka_run_group_tests_name("wire", wire_tests, NULL, NULL);

	failed += cmocka_run_group_tests_name("bundle", bundle_tests, keys_setup, keys_teardown);
	failed += cmocka_run_group_tests_name("client", client_tests, journal_setup,
	                                      journal_teardown);
	return failed != 0;
}
