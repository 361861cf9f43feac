/* SPDX-License-Identifier: Apache-2.0 */
/* The My Number card model (hal/card_jpki.c) and its scenario form ("card NAME mynumber"):
 * every APDU and status word of hal/SCENARIO.md byte for byte, the PIN counter and its
 * blocking, chunked certificate reads and 6C xx, the signature through a fake signer (hal/
 * links no crypto; the real RSA path is tested above it), the input-support and card-face
 * APs counted, and through the mock reader: activation, sessions, certfault=truncate and
 * garble, tap faults, stats and scenario errors. Certificates here are DER-shaped bytes of
 * a known pattern, so every byte served can be predicted. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cmocka.h>

#include "card_model.h"
#include "kp_hal.h"
#include "mock_scenario.h"
#include "testutil.h"

#define SEL_JPKI  "00A4040C0A D392F000260100000001"
#define SEL_INPUT "00A4040C0A D39210003100010104 08"
#define SEL_FACE  "00A4040C0A D39210003100010104 02"
#define SEL_EF(f) "00A4020C02" f
#define AUTH_TBS  1000                    /* auth.der: 1000 + 284 = 1284 bytes */
#define CA_TBS    700                     /* ca.der: 984 bytes */
#define AUTH_LEN  (AUTH_TBS + 284)
#define CA_LEN    (CA_TBS + 284)
#define SIG_OFF   (AUTH_LEN - 256)        /* the signature's first byte in auth.der */
#define DI_SHA256 "3031300D060960864801650304020105000420" \
                  "000102030405060708090A0B0C0D0E0F101112131415161718191A1B1C1D1E1F"
#define KEY_TEXT  "-----BEGIN RSA PRIVATE KEY-----\nnot a real key\n-----END RSA PRIVATE KEY-----\n"

struct fx {
	char dir[4096];
	uint8_t auth[AUTH_LEN], ca[CA_LEN];
	struct kp_card_jpki card;
};

/* ---- helpers ---- */

static void expect_bytes(const char *what, const uint8_t *got, size_t got_len,
                         const uint8_t *want, size_t n)
{
	if (got_len != n || memcmp(got, want, n) != 0) {
		fprintf(stderr, "%s: want %zu bytes, got %zu:", what, n, got_len);
		for (size_t i = 0; i < got_len && i < 40; i++)
			fprintf(stderr, " %02X", got[i]);
		fprintf(stderr, "\n");
		fail_msg("%s: bytes differ", what);
	}
}

/* A DER-shaped certificate: SEQUENCE { SEQUENCE (tbs bytes of a pattern), SEQUENCE
 * sha256WithRSAEncryption, BIT STRING 00 + 256 bytes }: tbs + 284 bytes. */
static size_t fake_cert(uint8_t *out, size_t tbs, uint8_t seed)
{
	static const uint8_t alg[15] = { 0x30, 0x0D, 0x06, 0x09, 0x2A, 0x86, 0x48, 0x86, 0xF7,
	                                 0x0D, 0x01, 0x01, 0x0B, 0x05, 0x00 };
	size_t body = 4 + tbs + sizeof(alg) + 261, k = 0;

	out[k++] = 0x30; out[k++] = 0x82; out[k++] = (uint8_t)(body >> 8); out[k++] = (uint8_t)body;
	out[k++] = 0x30; out[k++] = 0x82; out[k++] = (uint8_t)(tbs >> 8); out[k++] = (uint8_t)tbs;
	for (size_t i = 0; i < tbs; i++)
		out[k++] = (uint8_t)(seed + i * 7);
	memcpy(out + k, alg, sizeof(alg));
	k += sizeof(alg);
	out[k++] = 0x03; out[k++] = 0x82; out[k++] = 0x01; out[k++] = 0x01; out[k++] = 0x00;
	for (size_t i = 0; i < 256; i++)
		out[k++] = (uint8_t)(0xA0 ^ i);
	return k;
}

static uint8_t *dup_bytes(const void *p, size_t n)
{
	uint8_t *q = malloc(n + 1);

	assert_non_null(q);
	memcpy(q, p, n);
	q[n] = 0;
	return q;
}

/* A card folder under the fixture's: auth.der, ca.der, auth.key. */
static void make_card_dir(struct fx *f, const char *name)
{
	char p[4200];

	snprintf(p, sizeof(p), "%s/%s", f->dir, name);
	assert_int_equal(mkdir(p, 0700), 0);
	snprintf(p, sizeof(p), "%s/%s/auth.der", f->dir, name);
	tu_write_bytes(p, f->auth, sizeof(f->auth));
	snprintf(p, sizeof(p), "%s/%s/ca.der", f->dir, name);
	tu_write_bytes(p, f->ca, sizeof(f->ca));
	snprintf(p, sizeof(p), "%s/%s/auth.key", f->dir, name);
	tu_write_bytes(p, KEY_TEXT, strlen(KEY_TEXT));
}

static int fx_setup(void **state)
{
	static const uint8_t pupi[4] = { 0x11, 0x22, 0x33, 0x44 };
	struct fx *f = calloc(1, sizeof(*f));

	if (f == NULL)
		return -1;
	tu_tmpdir(f->dir, sizeof(f->dir));
	assert_int_equal(fake_cert(f->auth, AUTH_TBS, 0x10), AUTH_LEN);
	assert_int_equal(fake_cert(f->ca, CA_TBS, 0x55), CA_LEN);
	kp_card_jpki_init(&f->card, pupi);
	f->card.auth_cert = dup_bytes(f->auth, AUTH_LEN);
	f->card.auth_cert_len = AUTH_LEN;
	f->card.ca_cert = dup_bytes(f->ca, CA_LEN);
	f->card.ca_cert_len = CA_LEN;
	f->card.key = dup_bytes(KEY_TEXT, strlen(KEY_TEXT));
	f->card.key_len = strlen(KEY_TEXT);
	kp_mock_set_rsa_signer(NULL, NULL);
	*state = f;
	return 0;
}

static int fx_teardown(void **state)
{
	struct fx *f = *state;

	kp_mock_set_rsa_signer(NULL, NULL);
	kp_card_jpki_free(&f->card);
	tu_rmdir(f->dir);
	free(f);
	return 0;
}

/* One APDU to the model; the reply must be want_hex exactly. */
static void apdu(struct kp_card_jpki *c, const char *tx_hex, const char *want_hex)
{
	uint8_t tx[300], rx[300], want[300];
	size_t tx_len = tu_hex(tx_hex, tx, sizeof(tx)), n = tu_hex(want_hex, want, sizeof(want));
	size_t rx_len = 0;

	assert_int_equal(kp_card_jpki_answer(c, tx, tx_len, rx, sizeof(rx), &rx_len), KP_HAL_OK);
	if (rx_len != n || memcmp(rx, want, n) != 0) {
		fprintf(stderr, "APDU %s: want %s, got", tx_hex, want_hex);
		for (size_t i = 0; i < rx_len && i < 16; i++)
			fprintf(stderr, " %02X", rx[i]);
		fprintf(stderr, "%s\n", rx_len > 16 ? " ..." : "");
		fail_msg("APDU %s: wrong reply", tx_hex);
	}
}

/* SELECT the JPKI AP, then one of its EFs; both must answer 9000. */
static void select_jpki_ef(struct kp_card_jpki *c, const char *ef)
{
	char tx[64];

	apdu(c, SEL_JPKI, "9000");
	snprintf(tx, sizeof(tx), SEL_EF("%s"), ef);
	apdu(c, tx, "9000");
}

/* READ BINARY at off with Le (0 = 256) on the model: the data and SW, into rx. */
static size_t read_bin(struct kp_card_jpki *c, size_t off, unsigned le, uint8_t *rx, size_t cap)
{
	uint8_t tx[5] = { 0x00, 0xB0, (uint8_t)(off >> 8), (uint8_t)off, (uint8_t)le };
	size_t rx_len = 0;

	assert_int_equal(kp_card_jpki_answer(c, tx, sizeof(tx), rx, cap, &rx_len), KP_HAL_OK);
	assert_true(rx_len >= 2);
	return rx_len;
}

/* Reads an EF the way PROTOCOLS.md says: a 7-byte header, its length, then chunks of at
 * most 255. Returns the bytes read; 0 if a status word other than 90 00 came back. */
static size_t read_cert(struct kp_card_jpki *c, uint8_t *out, size_t cap, uint16_t *last_sw)
{
	uint8_t rx[300];
	size_t n = read_bin(c, 0, 7, rx, sizeof(rx)), total, off;

	*last_sw = (uint16_t)(rx[n - 2] << 8 | rx[n - 1]);
	if (*last_sw != 0x9000)
		return 0;
	assert_int_equal(n, 9);
	assert_int_equal(rx[0], 0x30);
	assert_int_equal(rx[1], 0x82);
	total = 4 + ((size_t)rx[2] << 8 | rx[3]);
	assert_true(total <= cap);
	memcpy(out, rx, 7);
	for (off = 7; off < total;) {
		unsigned le = total - off < 255 ? (unsigned)(total - off) : 255;

		n = read_bin(c, off, le, rx, sizeof(rx));
		*last_sw = (uint16_t)(rx[n - 2] << 8 | rx[n - 1]);
		if (*last_sw != 0x9000)
			return off;
		assert_int_equal(n, le + 2);
		memcpy(out + off, rx, le);
		off += le;
	}
	return off;
}

/* ---- the fake signer ---- */

struct fake_signer {
	int calls;
	int fail;
	size_t key_len, di_len;
	int key_nul;
	uint8_t key[128], di[255];
};

static int fake_sign(void *ctx, const uint8_t *key, size_t key_len, const uint8_t *di,
                     size_t di_len, uint8_t *sig, size_t sig_cap, size_t *sig_len)
{
	struct fake_signer *s = ctx;

	s->calls++;
	s->key_len = key_len;
	s->key_nul = key[key_len] == '\0';
	memcpy(s->key, key, key_len < sizeof(s->key) ? key_len : sizeof(s->key));
	s->di_len = di_len;
	memcpy(s->di, di, di_len);
	if (s->fail)
		return -1;
	assert_int_equal(sig_cap, 256);
	for (size_t i = 0; i < 256; i++)
		sig[i] = (uint8_t)(di[di_len - 1] + i);   /* "signature": predictable bytes */
	*sig_len = 256;
	return 0;
}

static void expect_fake_sig(struct kp_card_jpki *c, const char *tx_hex, uint8_t last)
{
	uint8_t tx[300], rx[300];
	size_t tx_len = tu_hex(tx_hex, tx, sizeof(tx)), rx_len = 0;

	assert_int_equal(kp_card_jpki_answer(c, tx, tx_len, rx, sizeof(rx), &rx_len), KP_HAL_OK);
	assert_int_equal(rx_len, 258);
	for (size_t i = 0; i < 256; i++)
		assert_int_equal(rx[i], (uint8_t)(last + i));
	assert_int_equal(rx[256], 0x90);
	assert_int_equal(rx[257], 0x00);
}

/* ---- the model, APDU by APDU ---- */

static void test_select_df(void **state)
{
	struct kp_card_jpki *c = &((struct fx *)*state)->card;

	apdu(c, SEL_JPKI, "9000");
	assert_int_equal(c->df, KP_CARD_JPKI_DF_JPKI);
	apdu(c, "00A4040C0A D392F000260100000002", "6A82");          /* unknown AID */
	apdu(c, "00A4040C05 D392F00026", "6A82");                    /* another length */
	apdu(c, "00A4040C0A D392F0002601000000", "6700");            /* Lc says 10, 9 follow */
	apdu(c, "00A4040C0A D392F00026010000000100", "6700");        /* 11 follow */
	apdu(c, "00A4040C00", "6700");
	apdu(c, "00A4040C", "6700");
	apdu(c, "00A404000A D392F000260100000001", "6A86");          /* FCI wanted */
	apdu(c, "00A400000A D392F000260100000001", "6A86");
	apdu(c, "00A4010C0A D392F000260100000001", "6A86");
	/* a failed selection leaves the JPKI AP selected */
	assert_int_equal(c->df, KP_CARD_JPKI_DF_JPKI);
	apdu(c, SEL_EF("000A"), "9000");
	assert_int_equal(c->stats.select_jpki, 1);
	assert_int_equal(c->stats.select_input_support, 0);
	assert_int_equal(c->stats.select_card_face, 0);
}

static void test_select_ef(void **state)
{
	struct kp_card_jpki *c = &((struct fx *)*state)->card;
	static const char *const jpki_efs[] = { "000A", "000B", "0018", "0017", "0001" };
	static const char *const absent[] = { "0002", "001A", "001B", "3F00", "0006", "FFFF" };
	char tx[64];

	apdu(c, SEL_EF("000A"), "6A82");                       /* no DF yet: the MF has none */
	apdu(c, SEL_JPKI, "9000");
	for (size_t i = 0; i < sizeof(jpki_efs) / sizeof(jpki_efs[0]); i++) {
		snprintf(tx, sizeof(tx), SEL_EF("%s"), jpki_efs[i]);
		apdu(c, tx, "9000");
	}
	for (size_t i = 0; i < sizeof(absent) / sizeof(absent[0]); i++) {
		snprintf(tx, sizeof(tx), SEL_EF("%s"), absent[i]);
		apdu(c, tx, "6A82");
	}
	assert_int_equal(c->ef, 0x0001);                       /* the last one that existed */
	apdu(c, "00A4020C03 00000A", "6700");
	apdu(c, "00A4020C02 00", "6700");
	apdu(c, "00A4020C02 000A00", "6700");
	apdu(c, "00A4020C01 0A", "6700");
	apdu(c, "00A40200 02000A", "6A86");
	apdu(c, "00A4080C02 000A", "6A86");
}

static void test_read_chunked(void **state)
{
	struct fx *f = *state;
	struct kp_card_jpki *c = &f->card;
	uint8_t out[2000], rx[300];
	uint16_t sw = 0;
	size_t n;

	select_jpki_ef(c, "000A");
	n = read_bin(c, 0, 7, rx, sizeof(rx));
	assert_int_equal(n, 9);
	expect_bytes("header", rx, 7, f->auth, 7);
	assert_int_equal(read_cert(c, out, sizeof(out), &sw), AUTH_LEN);
	assert_int_equal(sw, 0x9000);
	expect_bytes("auth.der", out, AUTH_LEN, f->auth, AUTH_LEN);
	/* Le 00 is 256 bytes */
	n = read_bin(c, 100, 0, rx, sizeof(rx));
	assert_int_equal(n, 258);
	expect_bytes("256 bytes", rx, 256, f->auth + 100, 256);
	assert_int_equal(rx[256], 0x90);
	/* the last byte alone */
	n = read_bin(c, AUTH_LEN - 1, 1, rx, sizeof(rx));
	assert_int_equal(n, 3);
	assert_int_equal(rx[0], f->auth[AUTH_LEN - 1]);
	/* the CA certificate the same way */
	apdu(c, SEL_EF("000B"), "9000");
	assert_int_equal(read_cert(c, out, sizeof(out), &sw), CA_LEN);
	expect_bytes("ca.der", out, CA_LEN, f->ca, CA_LEN);
	/* auth: header twice + 6 chunks, Le 00, last byte; CA: header + 4 chunks */
	assert_int_equal(c->stats.read_binary, 8 + 1 + 1 + 5);
}

static void test_read_errors(void **state)
{
	struct fx *f = *state;
	struct kp_card_jpki *c = &f->card;
	uint8_t rx[300];
	size_t n;

	apdu(c, "00B0000007", "6986");                           /* nothing selected */
	apdu(c, SEL_JPKI, "9000");
	apdu(c, "00B0000007", "6986");                           /* a DF, no EF */
	apdu(c, SEL_EF("000A"), "9000");
	apdu(c, "00B0050400", "6B00");                           /* offset 1284 = the end */
	apdu(c, "00B0050501", "6B00");
	apdu(c, "00B07FFF01", "6B00");
	apdu(c, "00B08A0001", "6B00");                           /* SFI addressing */
	apdu(c, "00B0050010", "6C04");                           /* 4 bytes left, 16 asked */
	apdu(c, "00B0050000", "6C04");                           /* and 256 */
	/* 1284 - 0x0405 (1029) = 255: asking exactly what is left is fine */
	n = read_bin(c, 0x0405, 255, rx, sizeof(rx));
	assert_int_equal(n, 257);
	n = read_bin(c, 0x0405, 0, rx, sizeof(rx));             /* 256 > 255 */
	assert_int_equal(n, 2);
	assert_int_equal(rx[0], 0x6C);
	assert_int_equal(rx[1], 0xFF);
	apdu(c, "00B00000", "6700");                             /* no Le */
	apdu(c, "00B000000700", "6700");
	apdu(c, "00B0000001 00", "6700");
	/* the files that are not read this way */
	apdu(c, SEL_EF("0001"), "9000");
	apdu(c, "00B0000007", "6982");                           /* signature certificate */
	apdu(c, SEL_EF("0018"), "9000");
	apdu(c, "00B0000007", "6981");
	apdu(c, SEL_EF("0017"), "9000");
	apdu(c, "00B0000007", "6981");
	/* an overflowing caller learns the size */
	apdu(c, SEL_EF("000A"), "9000");
	{
		uint8_t tx[5] = { 0x00, 0xB0, 0x00, 0x00, 0x00 };
		size_t rx_len = 0;

		assert_int_equal(kp_card_jpki_answer(c, tx, 5, rx, 100, &rx_len), KP_HAL_E_OVERFLOW);
		assert_int_equal(rx_len, 258);
		assert_int_equal(kp_card_jpki_answer(NULL, tx, 5, rx, 100, &rx_len), KP_HAL_E_INVAL);
		assert_int_equal(kp_card_jpki_answer(c, NULL, 5, rx, 100, &rx_len), KP_HAL_E_INVAL);
		assert_int_equal(kp_card_jpki_answer(c, tx, 5, rx, 100, NULL), KP_HAL_E_INVAL);
	}
}

static void test_verify(void **state)
{
	struct kp_card_jpki *c = &((struct fx *)*state)->card;

	apdu(c, SEL_JPKI, "9000");
	apdu(c, "00200080", "6986");                             /* no EF */
	apdu(c, SEL_EF("000A"), "9000");
	apdu(c, "00200080", "6986");                             /* not the PIN */
	apdu(c, "0020008004 31323334", "6986");
	assert_int_equal(c->tries_left, 3);
	apdu(c, SEL_EF("0018"), "9000");
	apdu(c, "00200080", "63C3");
	apdu(c, "0020008004 31313131", "63C2");                  /* wrong */
	assert_false(c->pin_ok);
	apdu(c, "00200080", "63C2");
	apdu(c, "0020008004 31323334", "9000");                  /* right: back to 3 */
	assert_true(c->pin_ok);
	apdu(c, "00200080", "63C3");
	/* lengths and parameters */
	apdu(c, "0020008003 313233", "6700");
	apdu(c, "0020008005 3132333435", "6700");
	apdu(c, "0020008004 313233", "6700");                    /* Lc 4, 3 bytes */
	apdu(c, "0020008004 3132333435", "6700");
	apdu(c, "0020008000", "6700");
	apdu(c, "00200081", "6A86");
	apdu(c, "00200180", "6A86");
	apdu(c, "00200080", "63C3");                             /* nothing counted */
	assert_int_equal(c->stats.verify_ok, 1);
	assert_int_equal(c->stats.verify_wrong, 1);
}

static void test_verify_blocks(void **state)
{
	struct kp_card_jpki *c = &((struct fx *)*state)->card;

	select_jpki_ef(c, "0018");
	apdu(c, "0020008004 30303030", "63C2");
	apdu(c, "0020008004 39393939", "63C1");
	apdu(c, "0020008004 31323335", "63C0");
	apdu(c, "00200080", "6984");
	apdu(c, "0020008004 31323334", "6984");                  /* blocked for good */
	assert_int_equal(c->tries_left, 0);
	/* a new session does not help */
	kp_card_jpki_reset(c);
	select_jpki_ef(c, "0018");
	apdu(c, "0020008004 31323334", "6984");
	apdu(c, "00200080", "6984");
	assert_int_equal(c->stats.verify_ok, 0);
	assert_int_equal(c->stats.verify_wrong, 3);
}

static void test_verify_tries_max(void **state)
{
	struct kp_card_jpki *c = &((struct fx *)*state)->card;

	memcpy(c->pin, "9876", 4);
	c->tries_max = c->tries_left = 15;
	select_jpki_ef(c, "0018");
	apdu(c, "00200080", "63CF");
	apdu(c, "0020008004 31323334", "63CE");
	apdu(c, "0020008004 39383736", "9000");
	apdu(c, "00200080", "63CF");
}

static void test_sign(void **state)
{
	struct kp_card_jpki *c = &((struct fx *)*state)->card;
	struct fake_signer s = { 0 };
	uint8_t di[64];
	size_t di_len = tu_hex(DI_SHA256, di, sizeof(di));

	kp_mock_set_rsa_signer(fake_sign, &s);
	select_jpki_ef(c, "0017");
	apdu(c, "802A008033" DI_SHA256 "00", "6982");             /* no PIN yet */
	apdu(c, SEL_EF("0018"), "9000");
	apdu(c, "802A008033" DI_SHA256 "00", "6986");             /* PIN EF, not the key */
	apdu(c, "0020008004 31323334", "9000");
	apdu(c, "802A008033" DI_SHA256 "00", "6986");
	apdu(c, SEL_EF("000A"), "9000");
	apdu(c, "802A008033" DI_SHA256 "00", "6986");
	apdu(c, SEL_EF("0017"), "9000");
	assert_int_equal(s.calls, 0);
	expect_fake_sig(c, "802A008033" DI_SHA256 "00", 0x1F);
	assert_int_equal(s.calls, 1);
	assert_int_equal(s.key_len, strlen(KEY_TEXT));
	assert_true(s.key_nul);
	assert_memory_equal(s.key, KEY_TEXT, strlen(KEY_TEXT));
	expect_bytes("DigestInfo", s.di, s.di_len, di, di_len);
	/* without Le, and again: the PIN holds for the session */
	expect_fake_sig(c, "802A008033" DI_SHA256, 0x1F);
	expect_fake_sig(c, "802A008003 AABBCC 00", 0xCC);
	assert_int_equal(c->stats.signatures, 3);
	/* lengths and parameters */
	apdu(c, "802A008033" DI_SHA256 "0000", "6700");
	apdu(c, "802A008033" DI_SHA256 "01", "6700");
	apdu(c, "802A008035" DI_SHA256 "00", "6700");
	apdu(c, "802A008000 00", "6700");
	apdu(c, "802A0080", "6700");
	apdu(c, "802A008133" DI_SHA256 "00", "6A86");
	apdu(c, "802A9E9A33" DI_SHA256 "00", "6A86");
	apdu(c, "002A008033" DI_SHA256 "00", "6D00");             /* CLA 00: no such INS */
	/* the signer fails, or there is none: 6F 00 */
	s.fail = 1;
	apdu(c, "802A008033" DI_SHA256 "00", "6F00");
	kp_mock_set_rsa_signer(NULL, &s);
	apdu(c, "802A008033" DI_SHA256 "00", "6F00");
	assert_int_equal(s.calls, 4);
	assert_int_equal(c->stats.signatures, 3);
	kp_mock_set_rsa_signer(fake_sign, &s);
	s.fail = 0;
	/* a wrong PIN, a DF selection, a new session: the PIN is needed again */
	apdu(c, SEL_EF("0018"), "9000");
	apdu(c, "0020008004 31313131", "63C2");
	apdu(c, SEL_EF("0017"), "9000");
	apdu(c, "802A008033" DI_SHA256 "00", "6982");
	apdu(c, SEL_EF("0018"), "9000");
	apdu(c, "0020008004 31323334", "9000");
	select_jpki_ef(c, "0017");
	apdu(c, "802A008033" DI_SHA256 "00", "6982");
	apdu(c, SEL_EF("0018"), "9000");
	apdu(c, "0020008004 31323334", "9000");
	kp_card_jpki_reset(c);
	select_jpki_ef(c, "0017");
	apdu(c, "802A008033" DI_SHA256 "00", "6982");
	assert_int_equal(s.calls, 4);
}

static void test_cla_ins(void **state)
{
	struct kp_card_jpki *c = &((struct fx *)*state)->card;

	apdu(c, "", "6700");
	apdu(c, "00A404", "6700");
	apdu(c, "90A4040C0A D392F000260100000001", "6E00");
	apdu(c, "0CA4040C0A D392F000260100000001", "6E00");
	apdu(c, "01B0000001", "6E00");
	apdu(c, "FF000000", "6E00");
	apdu(c, "00CA010100", "6D00");
	apdu(c, "00880000", "6D00");
	apdu(c, "80A4040C0A D392F000260100000001", "6D00");
	apdu(c, "80B0000001", "6D00");
	apdu(c, "8020008004 31323334", "6D00");
	assert_int_equal(c->df, KP_CARD_JPKI_DF_NONE);
}

/* The input-support and card-face APs answer selection (a real card has them) and are
 * counted; nothing in them is given out. */
static void test_forbidden_aps(void **state)
{
	struct kp_card_jpki *c = &((struct fx *)*state)->card;
	struct fake_signer s = { 0 };

	kp_mock_set_rsa_signer(fake_sign, &s);
	apdu(c, SEL_INPUT, "9000");
	assert_int_equal(c->stats.select_input_support, 1);
	apdu(c, SEL_EF("0001"), "9000");                         /* the individual number */
	apdu(c, "00B0000011", "6982");
	apdu(c, "00200080", "6982");
	apdu(c, "0020008004 31323334", "6982");
	apdu(c, "802A008033" DI_SHA256 "00", "6982");
	apdu(c, "00CA010100", "6982");
	apdu(c, "90B0000011", "6E00");                           /* not counted: no such class */
	assert_int_equal(c->stats.forbidden_apdus, 6);
	apdu(c, SEL_FACE, "9000");
	assert_int_equal(c->stats.select_card_face, 1);
	apdu(c, SEL_EF("0002"), "9000");
	apdu(c, "00B0000000", "6982");
	assert_int_equal(c->stats.forbidden_apdus, 8);
	/* the JPKI AP after them works, with the PIN untouched */
	select_jpki_ef(c, "0018");
	apdu(c, "00200080", "63C3");
	assert_int_equal(c->stats.forbidden_apdus, 8);
	assert_int_equal(c->stats.select_jpki, 1);
	assert_int_equal(s.calls, 0);
	assert_int_equal(c->stats.read_binary, 0);
}

/* ---- through the mock reader ---- */

static struct kp_reader *open_scn(struct fx *f, const char *text)
{
	char path[4200], conn[4300];
	struct kp_reader *r = NULL;

	snprintf(path, sizeof(path), "%s/scn.txt", f->dir);
	tu_write(path, text);
	snprintf(conn, sizeof(conn), "mock:%s", path);
	assert_int_equal(kp_reader_open(&r, conn), KP_HAL_OK);
	return r;
}

static const struct kp_poll poll_b = { KP_TECH_ISO14443B, 0, 0 };

/* The reader's next tap: a Type B card must be there. info may be NULL. */
static void tap_b(struct kp_reader *r, struct kp_card_info *info)
{
	struct kp_card_info scratch;

	assert_int_equal(kp_reader_wait_card(r, &poll_b, info != NULL ? info : &scratch, 100),
	                 KP_HAL_OK);
}

static void xfer(struct kp_reader *r, const char *tx_hex, int rc_want, const char *want_hex)
{
	uint8_t tx[300], rx[300], want[300];
	size_t tx_len = tu_hex(tx_hex, tx, sizeof(tx)), rx_len = 0, n;
	int rc = kp_reader_transceive(r, tx, tx_len, rx, sizeof(rx), &rx_len, 100);

	if (rc != rc_want)
		fail_msg("%s: rc %d (%s), want %d", tx_hex, rc, kp_hal_strerror(rc), rc_want);
	if (want_hex == NULL)
		return;
	n = tu_hex(want_hex, want, sizeof(want));
	expect_bytes(tx_hex, rx, rx_len, want, n);
}

/* READ BINARY through the reader; returns the reply length. */
static size_t xread(struct kp_reader *r, size_t off, unsigned le, uint8_t *rx)
{
	uint8_t tx[5] = { 0x00, 0xB0, (uint8_t)(off >> 8), (uint8_t)off, (uint8_t)le };
	size_t rx_len = 0;

	assert_int_equal(kp_reader_transceive(r, tx, 5, rx, 300, &rx_len, 100), KP_HAL_OK);
	return rx_len;
}

static void test_scn_session(void **state)
{
	struct fx *f = *state;
	struct kp_mock_jpki_stats st;
	struct kp_card_info info;
	struct fake_signer s = { 0 };
	struct kp_reader *r;
	uint8_t rx[300];

	make_card_dir(f, "m1");
	kp_mock_set_rsa_signer(fake_sign, &s);
	r = open_scn(f, "card hanako mynumber dir=m1 pin=4321 tries=5 pupi=A1B2C3D4\n"
	                "card taro mynumber dir=m1\n"
	                "card bob typeb pupi=01020304\n"
	                "tap +0 hanako\ntap +1 hanako\ntap +2 taro\ntap +3 bob\n");
	tap_b(r, &info);
	assert_int_equal(info.tech, KP_TECH_ISO14443B);
	assert_int_equal(info.baud_kbps, 106);
	expect_bytes("ATQB", info.u.b.atqb, 12,
	             (const uint8_t *)"\x50\xA1\xB2\xC3\xD4\x00\x00\x00\x00\x00\x81\x71", 12);
	xfer(r, SEL_JPKI, KP_HAL_OK, "9000");
	xfer(r, SEL_EF("000A"), KP_HAL_OK, "9000");
	assert_int_equal(xread(r, 0, 0, rx), 258);               /* a 258-byte reply passes */
	expect_bytes("first 256", rx, 256, f->auth, 256);
	xfer(r, SEL_EF("0018"), KP_HAL_OK, "9000");
	xfer(r, "00200080", KP_HAL_OK, "63C5");
	xfer(r, "0020008004 31323334", KP_HAL_OK, "63C4");
	xfer(r, "0020008004 34333231", KP_HAL_OK, "9000");
	xfer(r, SEL_EF("0017"), KP_HAL_OK, "9000");
	assert_int_equal(kp_reader_transceive(r, (const uint8_t *)"\x80\x2A\x00\x80\x01\x42\x00",
	                                      7, rx, sizeof(rx), &(size_t){ 0 }, 100), KP_HAL_OK);
	assert_int_equal(rx[0], 0x42);
	assert_int_equal(s.key_len, strlen(KEY_TEXT));
	assert_true(s.key_nul);
	xfer(r, SEL_EF("0018"), KP_HAL_OK, "9000");
	xfer(r, "0020008004 30303030", KP_HAL_OK, "63C4");
	xfer(r, "0020008004 30303030", KP_HAL_OK, "63C3");
	assert_int_equal(kp_mock_jpki_stats(r, "hanako", &st), KP_HAL_OK);
	tu_expect_row("select_jpki read_binary verify_ok verify_wrong signatures tries_left",
	              TU_INTS(st.select_jpki, st.read_binary, st.verify_ok, st.verify_wrong,
	                      st.signatures, st.tries_left),
	              TU_INTS(1, 1, 1, 3, 1, 3));
	assert_int_equal(st.select_input_support + st.select_card_face + st.forbidden_apdus, 0);
	/* the next tap is a new session; the retry counter stays */
	tap_b(r, &info);
	xfer(r, "00B0000007", KP_HAL_OK, "6986");
	xfer(r, SEL_EF("0018"), KP_HAL_OK, "6A82");
	xfer(r, SEL_INPUT, KP_HAL_OK, "9000");
	xfer(r, SEL_EF("0001"), KP_HAL_OK, "9000");
	xfer(r, "00B0000000", KP_HAL_OK, "6982");
	xfer(r, SEL_JPKI, KP_HAL_OK, "9000");
	xfer(r, SEL_EF("0018"), KP_HAL_OK, "9000");
	xfer(r, "00200080", KP_HAL_OK, "63C3");
	assert_int_equal(kp_mock_jpki_stats(r, "hanako", &st), KP_HAL_OK);
	assert_int_equal(st.select_input_support, 1);
	assert_int_equal(st.forbidden_apdus, 2);
	assert_int_equal(st.select_jpki, 2);
	/* the other card: defaults (PIN 1234, 3 tries, a PUPI of its own) */
	tap_b(r, &info);
	assert_memory_not_equal(info.u.b.pupi, "\xA1\xB2\xC3\xD4", 4);
	xfer(r, SEL_JPKI, KP_HAL_OK, "9000");
	xfer(r, SEL_EF("0018"), KP_HAL_OK, "9000");
	xfer(r, "00200080", KP_HAL_OK, "63C3");
	xfer(r, "0020008004 31323334", KP_HAL_OK, "9000");
	assert_int_equal(kp_mock_jpki_stats(r, "taro", &st), KP_HAL_OK);
	assert_int_equal(st.select_jpki, 1);
	assert_int_equal(st.select_input_support, 0);
	/* a plain Type B card is still the plain one */
	tap_b(r, &info);
	xfer(r, SEL_JPKI, KP_HAL_OK, "6A82");
	assert_int_equal(kp_mock_jpki_stats(r, "bob", &st), KP_HAL_E_INVAL);
	assert_int_equal(kp_mock_jpki_stats(r, "nobody", &st), KP_HAL_E_INVAL);
	assert_int_equal(kp_mock_jpki_stats(r, NULL, &st), KP_HAL_E_INVAL);
	assert_int_equal(kp_mock_jpki_stats(r, "taro", NULL), KP_HAL_E_INVAL);
	kp_reader_close(r);
}

/* Another backend's reader has no such counters. */
static int other_open(struct kp_reader **out, const char *conn)
{
	return KP_HAL_E_NOTSUP;
}

static void test_stats_not_mock(void **state)
{
	static const struct kp_reader_ops other_ops = { .scheme = "other", .open = other_open };
	struct kp_reader other = { &other_ops };
	struct kp_mock_jpki_stats st;

	assert_int_equal(kp_mock_jpki_stats(&other, "x", &st), KP_HAL_E_NOTSUP);
}

static void test_scn_certfault_truncate(void **state)
{
	struct fx *f = *state;
	struct kp_reader *r;
	uint8_t rx[300];
	size_t off = 7, n;

	make_card_dir(f, "t");
	r = open_scn(f, "card c mynumber dir=t certfault=truncate\ntap +0 c\n");
	tap_b(r, NULL);
	xfer(r, SEL_JPKI, KP_HAL_OK, "9000");
	xfer(r, SEL_EF("000A"), KP_HAL_OK, "9000");
	/* the header still says 1284 bytes */
	assert_int_equal(xread(r, 0, 7, rx), 9);
	expect_bytes("header", rx, 7, f->auth, 7);
	for (; off + 255 <= AUTH_LEN / 2; off += 255) {
		assert_int_equal(xread(r, off, 255, rx), 257);
		expect_bytes("chunk", rx, 255, f->auth + off, 255);
	}
	/* 642 served: 125 left of the 255 asked */
	assert_int_equal(off, 517);
	n = xread(r, off, 255, rx);
	assert_int_equal(n, 2);
	assert_int_equal(rx[0], 0x6C);
	assert_int_equal(rx[1], AUTH_LEN / 2 - 517);
	assert_int_equal(xread(r, off, AUTH_LEN / 2 - 517, rx), AUTH_LEN / 2 - 517 + 2);
	xfer(r, "00B0028201", KP_HAL_OK, "6B00");                /* 642: past the end */
	xfer(r, "00B0040001", KP_HAL_OK, "6B00");
	/* the CA certificate is whole */
	xfer(r, SEL_EF("000B"), KP_HAL_OK, "9000");
	assert_int_equal(xread(r, CA_LEN - 10, 10, rx), 12);
	expect_bytes("CA tail", rx, 10, f->ca + CA_LEN - 10, 10);
	kp_reader_close(r);
}

static void test_scn_certfault_garble(void **state)
{
	struct fx *f = *state;
	struct kp_reader *r;
	uint8_t rx[300], got[AUTH_LEN];
	size_t off, diff = 0;

	make_card_dir(f, "g");
	r = open_scn(f, "card c mynumber dir=g certfault=garble\ntap +0 c\n");
	tap_b(r, NULL);
	xfer(r, SEL_JPKI, KP_HAL_OK, "9000");
	xfer(r, SEL_EF("000A"), KP_HAL_OK, "9000");
	for (off = 0; off < AUTH_LEN; off += 200) {
		size_t le = AUTH_LEN - off < 200 ? AUTH_LEN - off : 200;

		assert_int_equal(xread(r, off, (unsigned)le, rx), le + 2);
		memcpy(got + off, rx, le);
	}
	/* four bytes in the middle of the 256-byte signature, each XOR FF; nothing else */
	for (size_t i = 0; i < AUTH_LEN; i++) {
		if (got[i] == f->auth[i])
			continue;
		assert_true(i >= SIG_OFF + 126 && i < SIG_OFF + 130);
		assert_int_equal(got[i], f->auth[i] ^ 0xFF);
		diff++;
	}
	assert_int_equal(diff, 4);
	kp_reader_close(r);
}

static void test_scn_tap_faults(void **state)
{
	struct fx *f = *state;
	struct kp_reader *r;

	make_card_dir(f, "x");
	r = open_scn(f, "card c mynumber dir=x\n"
	                "tap +0 c remove-after=2\ntap +1 c fault=silent\ntap +2 c fault=code\n"
	                "tap +3 c fault=garbage\n");
	tap_b(r, NULL);
	xfer(r, SEL_JPKI, KP_HAL_OK, "9000");
	xfer(r, SEL_EF("000A"), KP_HAL_OK, "9000");
	xfer(r, "00B0000007", KP_HAL_E_TIMEOUT, NULL);           /* gone */
	tap_b(r, NULL);
	xfer(r, SEL_JPKI, KP_HAL_E_TIMEOUT, NULL);
	tap_b(r, NULL);
	xfer(r, SEL_JPKI, KP_HAL_OK, "9080");                    /* SW2 XOR 80 */
	tap_b(r, NULL);
	{
		uint8_t rx[300];
		size_t n = 0;

		assert_int_equal(kp_reader_transceive(r, (const uint8_t *)"\x00\xA4\x04\x0C\x0A"
		                                      "\xD3\x92\xF0\x00\x26\x01\x00\x00\x00\x01", 15,
		                                      rx, sizeof(rx), &n, 100), KP_HAL_OK);
		assert_int_equal(n, 5);
	}
	kp_reader_close(r);
}

static void test_scn_paths(void **state)
{
	struct fx *f = *state;
	struct kp_reader *r;
	char text[4400], sub[4200];

	/* an absolute dir=, and a scenario in another folder than the cards */
	make_card_dir(f, "abs");
	snprintf(text, sizeof(text), "card c mynumber dir=%s/abs\ntap +0 c\n", f->dir);
	r = open_scn(f, text);
	tap_b(r, NULL);
	xfer(r, SEL_JPKI, KP_HAL_OK, "9000");
	kp_reader_close(r);
	snprintf(sub, sizeof(sub), "%s/scn", f->dir);
	assert_int_equal(mkdir(sub, 0700), 0);
	snprintf(sub, sizeof(sub), "%s/scn/s.txt", f->dir);
	tu_write(sub, "card c mynumber dir=../abs\ntap +0 c\n");
	snprintf(text, sizeof(text), "mock:%s", sub);
	r = NULL;
	assert_int_equal(kp_reader_open(&r, text), KP_HAL_OK);
	kp_reader_close(r);
}

static void test_scn_errors(void **state)
{
	static const struct {
		const char *line;
		const char *msg;
	} cases[] = {
		{ "card c mynumber", "scn.txt:1: mynumber card 'c' needs dir=" },
		{ "card c mynumber pin=1234", "scn.txt:1: mynumber card 'c' needs dir=" },
		{ "card c mynumber dir=nosuch", "cannot read " },
		{ "card c mynumber dir=ok pin=123", "scn.txt:1: pin= must be 4 digits" },
		{ "card c mynumber dir=ok pin=12345", "scn.txt:1: pin= must be 4 digits" },
		{ "card c mynumber dir=ok pin=12a4", "scn.txt:1: pin= must be 4 digits" },
		{ "card c mynumber dir=ok tries=16", "scn.txt:1: tries= out of range 0..15" },
		{ "card c mynumber dir=ok tries=x", "scn.txt:1: tries= is not a number" },
		{ "card c mynumber dir=ok pupi=0102", "scn.txt:1: pupi= must be 4 bytes" },
		{ "card c mynumber dir=ok certfault=zap",
		  "scn.txt:1: unknown certfault 'zap' (truncate or garble)" },
		{ "card c mynumber dir=ok idm=0101", "scn.txt:1: unknown option 'idm' for a mynumber card" },
		{ "card c mynumber dir=ok dir=ok", "scn.txt:1: duplicate option 'dir'" },
		{ "card c mynumber dir=notder", "/notder/auth.der is not one DER certificate" },
		{ "card c mynumber dir=notderca", "/notderca/ca.der is not one DER certificate" },
		{ "card c mynumber dir=nokey", "/nokey/auth.key: No such file or directory" },
		{ "card c mynumber dir=emptykey", "/emptykey/auth.key must hold 1 to 16384 bytes" },
		{ "card c mynumber dir=nosig certfault=garble",
		  "scn.txt:1: card 'c': certfault=garble: no signature found in auth.der" },
		{ "card c nokia dir=ok", "(felica, typeb, typea or mynumber)" },
	};
	struct fx *f = *state;
	char path[4200], err[1024];
	uint8_t buf[AUTH_LEN];

	make_card_dir(f, "ok");
	make_card_dir(f, "notder");
	snprintf(path, sizeof(path), "%s/notder/auth.der", f->dir);
	tu_write_bytes(path, f->auth, AUTH_LEN - 1);                /* shorter than it says */
	make_card_dir(f, "notderca");
	snprintf(path, sizeof(path), "%s/notderca/ca.der", f->dir);
	tu_write_bytes(path, "hello", 5);
	make_card_dir(f, "nokey");
	snprintf(path, sizeof(path), "%s/nokey/auth.key", f->dir);
	assert_int_equal(unlink(path), 0);
	make_card_dir(f, "emptykey");
	snprintf(path, sizeof(path), "%s/emptykey/auth.key", f->dir);
	tu_write_bytes(path, "", 0);
	make_card_dir(f, "nosig");
	memcpy(buf, f->auth, AUTH_LEN);
	buf[SIG_OFF - 5] = 0x04;                                 /* OCTET STRING, not BIT STRING */
	snprintf(path, sizeof(path), "%s/nosig/auth.der", f->dir);
	tu_write_bytes(path, buf, AUTH_LEN);

	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		struct kp_scenario *s = NULL;
		char text[256];

		snprintf(path, sizeof(path), "%s/scn.txt", f->dir);
		snprintf(text, sizeof(text), "%s\n", cases[i].line);
		tu_write(path, text);
		err[0] = '\0';
		assert_int_equal(kp_scenario_load(&s, path, err, sizeof(err)), KP_HAL_E_CONFIG);
		assert_null(s);
		if (strstr(err, cases[i].msg) == NULL)
			fail_msg("'%s': message '%s' lacks '%s'", cases[i].line, err, cases[i].msg);
	}
	/* a good card still loads; tries=0 is a blocked card */
	{
		struct kp_scenario *s = NULL;

		snprintf(path, sizeof(path), "%s/scn.txt", f->dir);
		tu_write(path, "card c mynumber dir=ok tries=0\n");
		assert_int_equal(kp_scenario_load(&s, path, err, sizeof(err)), KP_HAL_OK);
		assert_true(s->cards[0].mynumber);
		assert_int_equal(s->cards[0].tech, KP_TECH_ISO14443B);
		assert_int_equal(s->cards[0].u.jpki.tries_left, 0);
		assert_int_equal(s->cards[0].u.jpki.auth_cert_len, AUTH_LEN);
		assert_int_equal(s->cards[0].u.jpki.ca_cert_len, CA_LEN);
		assert_int_equal(s->cards[0].u.jpki.key_len, strlen(KEY_TEXT));
		assert_memory_equal(s->cards[0].u.jpki.pin, "1234", 4);
		apdu(&s->cards[0].u.jpki, SEL_JPKI, "9000");
		apdu(&s->cards[0].u.jpki, SEL_EF("0018"), "9000");
		apdu(&s->cards[0].u.jpki, "00200080", "6984");
		kp_scenario_free(s);
	}
}

/* The tests below run between fx_setup and fx_teardown unless their row names others. */
#define FX_TEST(test) cmocka_unit_test_setup_teardown(test, fx_setup, fx_teardown)

int main(void)
{
	const struct CMUnitTest tests[] = {
		FX_TEST(test_select_df),
		FX_TEST(test_select_ef),
		FX_TEST(test_read_chunked),
		FX_TEST(test_read_errors),
		FX_TEST(test_verify),
		FX_TEST(test_verify_blocks),
		FX_TEST(test_verify_tries_max),
		FX_TEST(test_sign),
		FX_TEST(test_cla_ins),
		FX_TEST(test_forbidden_aps),
		FX_TEST(test_scn_session),
		FX_TEST(test_stats_not_mock),
		FX_TEST(test_scn_certfault_truncate),
		FX_TEST(test_scn_certfault_garble),
		FX_TEST(test_scn_tap_faults),
		FX_TEST(test_scn_paths),
		FX_TEST(test_scn_errors),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
