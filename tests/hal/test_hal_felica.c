/* SPDX-License-Identifier: Apache-2.0 */
/* The FeliCa card model answers every command byte for byte as PROTOCOLS.md sections
 * 1-2 say; the ISO 14443 models answer their few APDUs. Vectors are hex strings
 * (spaces ignored); a NULL reply means the card must stay silent. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include <cmocka.h>

#include "card_model.h"
#include "testutil.h"

#define IDM    "0101020304050607"
#define IDM2   "0101020304050608"
#define PMM    "0120220427674EFF"
#define BAL    "0000000000000000 200000 DC05 00 0200" /* type 2, region 0, 1500, counter 2 */
#define HIST0  "16010002 2A61 0001 0002 D007 000001 00"
#define HIST1  "05 0F 0000 2A60 00AA 00BB 480D 000002 00"
#define ZERO16 "00000000000000000000000000000000"
#define DATA16 "0102030405060708090A0B0C0D0E0F10"

struct vec {
	const char *name;
	const char *tx;
	const char *rx;                   /* NULL: silence */
};

static void dump(const char *what, const uint8_t *b, size_t n)
{
	fprintf(stderr, "%s (%zu):", what, n);
	for (size_t i = 0; i < n; i++)
		fprintf(stderr, " %02X", b[i]);
	fprintf(stderr, "\n");
}

static void expect_bytes(const char *name, const uint8_t *got, size_t got_len,
                         const uint8_t *want, size_t want_len)
{
	if (got_len != want_len || memcmp(got, want, want_len) != 0) {
		dump("want", want, want_len);
		dump("got ", got, got_len);
		fail_msg("vector '%s': reply differs", name);
	}
}

/* The transit card of most vectors: sys 0003, balance 1500, two history blocks. */
static int setup_card(void **state)
{
	static struct kp_card_felica card;
	uint8_t idm[8], blk[16];

	memset(&card, 0, sizeof(card));
	tu_hex(IDM, idm, sizeof(idm));
	kp_card_felica_init(&card, idm);
	kp_card_felica_set_balance(&card, 2, 0, 1500, 2);
	tu_hex(HIST0, blk, sizeof(blk));
	assert_int_equal(kp_card_felica_push_history(&card, blk), KP_HAL_OK);
	tu_hex(HIST1, blk, sizeof(blk));
	assert_int_equal(kp_card_felica_push_history(&card, blk), KP_HAL_OK);
	*state = &card;
	return 0;
}

/* A card in two systems, FE00 first. */
static int setup_multi(void **state)
{
	static const uint16_t sys[] = { 0xFE00, 0x0003 };
	int rc = setup_card(state);

	assert_int_equal(kp_card_felica_set_sys_codes(*state, sys, 2), KP_HAL_OK);
	return rc;
}

static void run_vectors(struct kp_card_felica *c, const struct vec *v, size_t n)
{
	for (size_t i = 0; i < n; i++) {
		uint8_t tx[300], want[300], rx[300];
		size_t tx_len = tu_hex(v[i].tx, tx, sizeof(tx)), rx_len = 99;
		int rc = kp_card_felica_answer(c, tx, tx_len, rx, sizeof(rx), &rx_len);

		if (v[i].rx == NULL) {
			if (rc != KP_HAL_E_TIMEOUT)
				fail_msg("vector '%s': want silence, got rc %d", v[i].name, rc);
			assert_int_equal(rx_len, 0);
			continue;
		}
		if (rc != KP_HAL_OK)
			fail_msg("vector '%s': rc %d", v[i].name, rc);
		expect_bytes(v[i].name, rx, rx_len, want, tu_hex(v[i].rx, want, sizeof(want)));
	}
}

#define RUN(state, table) run_vectors(*(state), table, sizeof(table) / sizeof(table[0]))

static void test_polling(void **state)
{
	static const struct vec v[] = {
		{ "RC 00", "06 00 0003 00 00", "12 01" IDM PMM },
		{ "RC 01 exact", "06 00 0003 01 00", "14 01" IDM PMM "0003" },
		{ "RC 01 second system", "06 00 FE00 01 00", "14 01" IDM PMM "FE00" },
		{ "RC 01 FFFF gives the first", "06 00 FFFF 01 00", "14 01" IDM PMM "FE00" },
		{ "RC 01 FF high byte", "06 00 FF03 01 00", "14 01" IDM PMM "0003" },
		{ "RC 01 FF low byte", "06 00 00FF 01 00", "14 01" IDM PMM "0003" },
		{ "RC 01 FE FF", "06 00 FEFF 01 00", "14 01" IDM PMM "FE00" },
		{ "RC 02 performance", "06 00 0003 02 00", "14 01" IDM PMM "0083" },
		{ "RC 05 like 00", "06 00 0003 05 00", "12 01" IDM PMM },
		{ "RC FF like 00", "06 00 FFFF FF 00", "12 01" IDM PMM },
		{ "TSN 01", "06 00 0003 00 01", "12 01" IDM PMM },
		{ "TSN 03", "06 00 0003 00 03", "12 01" IDM PMM },
		{ "TSN 07", "06 00 0003 00 07", "12 01" IDM PMM },
		{ "TSN 0F", "06 00 0003 00 0F", "12 01" IDM PMM },
		{ "TSN 02", "06 00 0003 00 02", NULL },
		{ "TSN 10", "06 00 0003 00 10", NULL },
		{ "TSN FF", "06 00 0003 00 FF", NULL },
		{ "other system", "06 00 8FC1 01 00", NULL },
		{ "other system high FF", "06 00 FFC1 01 00", NULL },
		{ "other system low FF", "06 00 88FF 01 00", NULL },
		{ "LEN too big", "07 00 0003 00 00", NULL },
		{ "LEN too small", "05 00 0003 00 00", NULL },
		{ "too short", "05 00 0003 00", NULL },
		{ "trailing byte", "07 00 0003 00 00 00", NULL },
		{ "empty", "", NULL },
		{ "LEN only", "01", NULL },
	};
	RUN(state, v);
}

static void test_polling_default_system(void **state)
{
	static const struct vec v[] = {
		{ "0003", "06 00 0003 01 00", "14 01" IDM PMM "0003" },
		{ "FFFF", "06 00 FFFF 01 0F", "14 01" IDM PMM "0003" },
		{ "FE00 absent", "06 00 FE00 01 00", NULL },
	};
	RUN(state, v);
}

static void test_request_service(void **state)
{
	static const struct vec v[] = {
		{ "PROTOCOLS example nodes absent", "0F 02" IDM "02 0900 4900",
		  "0F 03" IDM "02 FFFF FFFF" },
		{ "three services", "11 02" IDM "03 8B00 0F09 8F10", "11 03" IDM "03 0000 0000 0000" },
		{ "area 0000", "0D 02" IDM "01 0000", "0D 03" IDM "01 0000" },
		{ "keyed 0088 is no node", "0D 02" IDM "01 8800", "0D 03" IDM "01 FFFF" },
		{ "PASMO probe 1CC8", "0D 02" IDM "01 C81C", "0D 03" IDM "01 FFFF" },
		{ "big-endian 008B is 8B00", "0D 02" IDM "01 008B", "0D 03" IDM "01 FFFF" },
		{ "mixed", "0F 02" IDM "02 C81C 0F09", "0F 03" IDM "02 FFFF 0000" },
		{ "n 0", "0B 02" IDM "00", NULL },
		{ "n 2 one node", "0D 02" IDM "02 8B00", NULL },
		{ "n 1 two nodes", "0F 02" IDM "01 8B00 0F09", NULL },
		{ "LEN disagrees", "0E 02" IDM "01 8B00", NULL },
		{ "other IDm", "0D 02" IDM2 "01 8B00", NULL },
		{ "no n", "0A 02" IDM, NULL },
	};
	RUN(state, v);
}

static void test_request_service_limits(void **state)
{
	struct kp_card_felica *c = *state;
	uint8_t tx[255], rx[255];
	size_t rx_len;

	for (size_t n = 32; n <= 33; n++) {
		size_t len = 11 + 2 * n;

		tx[0] = (uint8_t)len;
		tx[1] = 0x02;
		tu_hex(IDM, tx + 2, 8);
		tx[10] = (uint8_t)n;
		for (size_t i = 0; i < n; i++) {
			tx[11 + 2 * i] = 0x8B;    /* 008B little-endian */
			tx[12 + 2 * i] = 0x00;
		}
		if (n == 33) {
			assert_int_equal(kp_card_felica_answer(c, tx, len, rx, sizeof(rx), &rx_len),
			                 KP_HAL_E_TIMEOUT);
			continue;
		}
		assert_int_equal(kp_card_felica_answer(c, tx, len, rx, sizeof(rx), &rx_len),
		                 KP_HAL_OK);
		assert_int_equal(rx_len, 75);
		assert_int_equal(rx[0], 75);
		assert_int_equal(rx[1], 0x03);
		assert_memory_equal(rx + 2, tx + 2, 8);
		assert_int_equal(rx[10], 32);
		for (size_t i = 0; i < n; i++) {
			assert_int_equal(rx[11 + 2 * i], 0x00);
			assert_int_equal(rx[12 + 2 * i], 0x00);
		}
	}
}

static void test_request_response(void **state)
{
	static const struct vec v[] = {
		{ "presence", "0A 04" IDM, "0B 05" IDM "00" },
		{ "other IDm", "0A 04" IDM2, NULL },
		{ "trailing byte", "0B 04" IDM "00", NULL },
		{ "short IDm", "09 04 01010203040506", NULL },
		{ "LEN disagrees", "0B 04" IDM, NULL },
	};
	RUN(state, v);
}

static void test_read(void **state)
{
	static const struct vec v[] = {
		{ "balance", "10 06" IDM "01 8B00 01 8000", "1D 07" IDM "00 00 01" BAL },
		{ "two history blocks", "12 06" IDM "01 0F09 02 8000 8001",
		  "2D 07" IDM "00 00 02" HIST0 HIST1 },
		{ "history newest last", "12 06" IDM "01 0F09 02 8001 8000",
		  "2D 07" IDM "00 00 02" HIST1 HIST0 },
		{ "empty history block", "10 06" IDM "01 0F09 01 8002", "1D 07" IDM "00 00 01" ZERO16 },
		{ "history block 19", "10 06" IDM "01 0F09 01 8013", "1D 07" IDM "00 00 01" ZERO16 },
		{ "three-byte element LE", "11 06" IDM "01 0F09 01 000100",
		  "1D 07" IDM "00 00 01" HIST1 },
		{ "gate block 2", "10 06" IDM "01 8F10 01 8002", "1D 07" IDM "00 00 01" ZERO16 },
		{ "two services", "14 06" IDM "02 8B00 0F09 02 8100 8000",
		  "2D 07" IDM "00 00 02" HIST0 BAL },
		{ "m 0", "0B 06" IDM "00", "0C 07" IDM "FF A1" },
		{ "m 17", "0B 06" IDM "11", "0C 07" IDM "FF A1" },
		{ "k 0", "0E 06" IDM "01 8B00 00", "0C 07" IDM "FF A2" },
		{ "k 13", "0E 06" IDM "01 8B00 0D", "0C 07" IDM "FF A2" },
		{ "order past m", "10 06" IDM "01 8B00 01 8100", "0C 07" IDM "01 A3" },
		{ "second element order", "12 06" IDM "01 0F09 02 8000 8100", "0C 07" IDM "02 A3" },
		{ "access bits", "10 06" IDM "01 8B00 01 9000", "0C 07" IDM "01 A7" },
		{ "access bits 3-byte", "11 06" IDM "01 8B00 01 700000", "0C 07" IDM "01 A7" },
		{ "unknown service", "10 06" IDM "01 0900 01 8000", "0C 07" IDM "01 A6" },
		{ "PROTOCOLS example 000B", "12 06" IDM "01 0B00 02 8000 8001", "0C 07" IDM "01 A6" },
		{ "unknown second service", "12 06" IDM "02 8B00 0900 01 8000", "0C 07" IDM "02 A6" },
		{ "A6 before A3", "10 06" IDM "01 0900 01 8100", "0C 07" IDM "01 A6" },
		{ "odd attribute of a known number", "10 06" IDM "01 8900 01 8000",
		  "0C 07" IDM "01 A6" },
		{ "keyed 0088", "10 06" IDM "01 8800 01 8000", "0C 07" IDM "01 A5" },
		{ "keyed 090C second", "14 06" IDM "02 8B00 0C09 02 8000 8100", "0C 07" IDM "02 A5" },
		{ "balance block 1", "10 06" IDM "01 8B00 01 8001", "0C 07" IDM "01 A8" },
		{ "history block 20", "10 06" IDM "01 0F09 01 8014", "0C 07" IDM "01 A8" },
		{ "gate block 3", "10 06" IDM "01 8F10 01 8003", "0C 07" IDM "01 A8" },
		{ "block 256 (big-endian mistake)", "11 06" IDM "01 0F09 01 000001",
		  "0C 07" IDM "01 A8" },
		{ "second block bad", "12 06" IDM "01 0F09 02 8000 8020", "0C 07" IDM "02 A8" },
		{ "service list past end", "0D 06" IDM "02 8B00", NULL },
		{ "no k", "0D 06" IDM "01 8B00", NULL },
		{ "block list past end", "10 06" IDM "01 8B00 02 8000", NULL },
		{ "3-byte element cut", "10 06" IDM "01 8B00 01 0000", NULL },
		{ "trailing byte", "11 06" IDM "01 8B00 01 8000 00", NULL },
		{ "LEN disagrees", "11 06" IDM "01 8B00 01 8000", NULL },
		{ "no m", "0A 06" IDM, NULL },
		{ "other IDm", "10 06" IDM2 "01 8B00 01 8000", NULL },
	};
	RUN(state, v);
}

/* Twelve blocks is this model's limit: the reply is 13 + 192 bytes. */
static void test_read_twelve_blocks(void **state)
{
	struct kp_card_felica *c = *state;
	uint8_t tx[64], rx[255], h0[16], h1[16];
	size_t len = 0, rx_len;

	tx[len++] = 0;
	tx[len++] = 0x06;
	tu_hex(IDM, tx + len, 8);
	len += 8;
	tx[len++] = 1;
	tx[len++] = 0x0F;
	tx[len++] = 0x09;
	tx[len++] = 12;
	for (uint8_t b = 0; b < 12; b++) {
		tx[len++] = 0x80;
		tx[len++] = b;
	}
	tx[0] = (uint8_t)len;
	assert_int_equal(kp_card_felica_answer(c, tx, len, rx, sizeof(rx), &rx_len), KP_HAL_OK);
	assert_int_equal(rx_len, 13 + 192);
	assert_int_equal(rx[0], 13 + 192);
	assert_int_equal(rx[10], 0);
	assert_int_equal(rx[11], 0);
	assert_int_equal(rx[12], 12);
	tu_hex(HIST0, h0, sizeof(h0));
	tu_hex(HIST1, h1, sizeof(h1));
	assert_memory_equal(rx + 13, h0, 16);
	assert_memory_equal(rx + 29, h1, 16);
	for (size_t i = 45; i < rx_len; i++)
		assert_int_equal(rx[i], 0);
}

static void test_write(void **state)
{
	static const struct vec v[] = {
		{ "balance is read-only", "20 08" IDM "01 8B00 01 8000" DATA16, "0C 09" IDM "01 A5" },
		{ "history is read-only", "20 08" IDM "01 0F09 01 8001" DATA16, "0C 09" IDM "01 A5" },
		{ "gate 3-byte element", "21 08" IDM "01 8F10 01 000000" DATA16, "0C 09" IDM "01 A5" },
		{ "keyed", "20 08" IDM "01 8800 01 8000" DATA16, "0C 09" IDM "01 A5" },
		{ "unknown service", "20 08" IDM "01 0900 01 8000" DATA16, "0C 09" IDM "01 A6" },
		{ "order past m", "20 08" IDM "01 8B00 01 8100" DATA16, "0C 09" IDM "01 A3" },
		{ "access bits", "20 08" IDM "01 8B00 01 A000" DATA16, "0C 09" IDM "01 A7" },
		{ "m 0", "0B 08" IDM "00", "0C 09" IDM "FF A1" },
		{ "k 0", "0E 08" IDM "01 8B00 00", "0C 09" IDM "FF A2" },
		{ "k 13", "0E 08" IDM "01 8B00 0D", "0C 09" IDM "FF A2" },
		{ "no data", "10 08" IDM "01 8B00 01 8000", NULL },
		{ "data one byte short", "1F 08" IDM "01 8B00 01 8000 0102030405060708090A0B0C0D0E0F",
		  NULL },
		{ "data one byte long", "21 08" IDM "01 8B00 01 8000" DATA16 "11", NULL },
		{ "other IDm", "20 08" IDM2 "01 8B00 01 8000" DATA16, NULL },
	};
	RUN(state, v);
}

static void test_request_system_code(void **state)
{
	static const struct vec v[] = {
		{ "one system", "0A 0C" IDM, "0D 0D" IDM "01 0003" },
		{ "trailing byte", "0B 0C" IDM "00", NULL },
		{ "other IDm", "0A 0C" IDM2, NULL },
	};
	RUN(state, v);
}

static void test_request_system_code_multi(void **state)
{
	static const struct vec v[] = {
		{ "two systems", "0A 0C" IDM, "0F 0D" IDM "02 FE00 0003" },
	};
	RUN(state, v);
}

static void test_unknown_commands(void **state)
{
	static const struct vec v[] = {
		{ "Search Service Code 0A", "0C 0A" IDM "0000", NULL },
		{ "Authentication1 10", "0A 10" IDM, NULL },
		{ "a response code 07", "0C 07" IDM "0000", NULL },
		{ "FF", "0A FF" IDM, NULL },
	};
	RUN(state, v);
}

static void test_overflow(void **state)
{
	struct kp_card_felica *c = *state;
	uint8_t tx[16], rx[16];
	size_t tx_len = tu_hex("0A 04" IDM, tx, sizeof(tx)), rx_len = 0;

	assert_int_equal(kp_card_felica_answer(c, tx, tx_len, rx, 10, &rx_len), KP_HAL_E_OVERFLOW);
	assert_int_equal(rx_len, 11);
	assert_int_equal(kp_card_felica_answer(c, tx, tx_len, rx, 11, &rx_len), KP_HAL_OK);
	assert_int_equal(rx_len, 11);
	assert_int_equal(kp_card_felica_answer(c, tx, tx_len, NULL, 0, &rx_len), KP_HAL_E_OVERFLOW);
	assert_int_equal(kp_card_felica_answer(c, NULL, 3, rx, sizeof(rx), &rx_len),
	                 KP_HAL_E_INVAL);
	assert_int_equal(kp_card_felica_answer(c, tx, tx_len, rx, sizeof(rx), NULL),
	                 KP_HAL_E_INVAL);
}

static void test_model_setters(void **state)
{
	struct kp_card_felica c;
	uint8_t idm[8] = { 1, 2, 3, 4, 5, 6, 7, 8 }, blk[16] = { 0x16 }, pmm[8];
	static const uint16_t ok[] = { 0x0003, 0x8FC1, 0xFE00 };
	static const uint16_t wild_hi[] = { 0x0003, 0xFF03 };
	static const uint16_t wild_lo[] = { 0x00FF };
	static const uint16_t dup[] = { 0x0003, 0x0003 };
	uint16_t many[KP_CARD_FELICA_MAX_SYS + 1];

	kp_card_felica_init(&c, idm);
	tu_hex(PMM, pmm, sizeof(pmm));
	assert_memory_equal(c.pmm, pmm, 8);
	assert_memory_equal(c.idm, idm, 8);
	assert_int_equal(c.n_sys, 1);
	assert_int_equal(c.sys_codes[0], 0x0003);
	assert_int_equal(kp_card_felica_set_sys_codes(&c, ok, 3), KP_HAL_OK);
	assert_int_equal(c.n_sys, 3);
	assert_int_equal(kp_card_felica_set_sys_codes(&c, wild_hi, 2), KP_HAL_E_INVAL);
	assert_int_equal(kp_card_felica_set_sys_codes(&c, wild_lo, 1), KP_HAL_E_INVAL);
	assert_int_equal(kp_card_felica_set_sys_codes(&c, dup, 2), KP_HAL_E_INVAL);
	assert_int_equal(kp_card_felica_set_sys_codes(&c, ok, 0), KP_HAL_E_INVAL);
	for (size_t i = 0; i < KP_CARD_FELICA_MAX_SYS + 1; i++)
		many[i] = (uint16_t)(0x1000 + i);
	assert_int_equal(kp_card_felica_set_sys_codes(&c, many, KP_CARD_FELICA_MAX_SYS + 1),
	                 KP_HAL_E_INVAL);
	assert_int_equal(c.n_sys, 3); /* refused changes leave the card alone */
	assert_int_equal(c.sys_codes[1], 0x8FC1);

	kp_card_felica_set_balance(&c, 3, 5, 0xBEEF, 0x1234);
	{
		static const uint8_t want[16] = { 0, 0, 0, 0, 0, 0, 0, 0, 0x35, 0, 0, 0xEF, 0xBE, 0,
		                                  0x34, 0x12 };

		assert_memory_equal(c.balance[0], want, 16);
	}
	for (int i = 0; i < KP_CARD_FELICA_HISTORY_BLOCKS; i++) {
		blk[15] = (uint8_t)i;
		assert_int_equal(kp_card_felica_push_history(&c, blk), KP_HAL_OK);
	}
	assert_int_equal(kp_card_felica_push_history(&c, blk), KP_HAL_E_OVERFLOW);
	assert_int_equal(c.history[0][15], 0);
	assert_int_equal(c.history[19][15], 19);
}

static void test_typeb(void **state)
{
	static const struct vec v[] = {
		{ "SELECT JPKI", "00 A4 04 0C 0A D392F000260100000001", "6A 82" },
		{ "SELECT any AID", "00 A4 04 00 02 1234", "6A 82" },
		{ "SELECT no Lc", "00 A4 04 00", "6A 82" },
		{ "SELECT EF", "00 A4 02 0C 02 000A", "6D 00" },
		{ "READ BINARY", "00 B0 0000 07", "6D 00" },
		{ "VERIFY", "00 20 0080", "6D 00" },
		{ "CLA 80", "80 A4 04 00 02 1234", "6D 00" },
		{ "3 bytes", "00 A4 04", "67 00" },
		{ "1 byte", "00", "67 00" },
		{ "empty", "", "67 00" },
	};
	struct kp_card_typeb b = { { 0xA1, 0xB2, 0xC3, 0xD4 }, { 0, 0, 0, 0 }, { 0x00, 0x81, 0x71 } };
	uint8_t atqb[12], want[12], rx[8];
	size_t rx_len;

	for (size_t i = 0; i < sizeof(v) / sizeof(v[0]); i++) {
		uint8_t tx[64], w[8];
		size_t tx_len = tu_hex(v[i].tx, tx, sizeof(tx));

		assert_int_equal(kp_card_typeb_answer(&b, tx_len ? tx : NULL, tx_len, rx, sizeof(rx),
		                                      &rx_len), KP_HAL_OK);
		expect_bytes(v[i].name, rx, rx_len, w, tu_hex(v[i].rx, w, sizeof(w)));
	}
	assert_int_equal(kp_card_typeb_answer(&b, rx, 4, rx, 1, &rx_len), KP_HAL_E_OVERFLOW);
	kp_card_typeb_atqb(&b, atqb);
	tu_hex("50 A1B2C3D4 00000000 008171", want, sizeof(want));
	assert_memory_equal(atqb, want, 12);
	(void)state;
}

static void test_typea(void **state)
{
	struct kp_card_typea a = { { 0x04, 0x11, 0x22, 0x33, 0x44, 0x55, 0x66 }, 7, { 0, 0x44 }, 0 };
	uint8_t tx[4] = { 0x30, 0x00, 0, 0 }, rx[16];
	size_t rx_len = 5;

	assert_int_equal(kp_card_typea_answer(&a, tx, 2, rx, sizeof(rx), &rx_len),
	                 KP_HAL_E_TIMEOUT);
	assert_int_equal(rx_len, 0);
	(void)state;
}

static uint32_t rnd(uint32_t *x)
{
	*x ^= *x << 13;
	*x ^= *x >> 17;
	*x ^= *x << 5;
	return *x;
}

/* A Read or Write frame of random shape: mostly plausible counts, services and block
 * list elements, then sometimes one byte changed or the frame cut or extended (LEN kept
 * consistent), so every status and silence path is reached. */
static size_t random_rw(uint32_t *x, const uint8_t idm[8], uint8_t *tx)
{
	static const uint16_t svcs[] = { 0x008B, 0x090F, 0x108F, 0x0088, 0x090C, 0x0009, 0x1CC8 };
	size_t len = 0, m = rnd(x) % 4, k = rnd(x) % 5;
	uint8_t cmd = (rnd(x) & 3) == 0 ? 0x08 : 0x06;

	tx[len++] = 0;
	tx[len++] = cmd;
	memcpy(tx + len, idm, 8);
	len += 8;
	tx[len++] = (uint8_t)m;
	for (size_t i = 0; i < m; i++) {
		uint16_t sc = svcs[rnd(x) % (sizeof(svcs) / sizeof(svcs[0]))];

		tx[len++] = (uint8_t)sc;
		tx[len++] = (uint8_t)(sc >> 8);
	}
	tx[len++] = (uint8_t)k;
	for (size_t i = 0; i < k; i++) {
		uint8_t order = (uint8_t)(rnd(x) % 4), access = (rnd(x) % 8) == 0 ? 1 : 0;
		uint16_t blk = (uint16_t)(rnd(x) % 24);

		if (rnd(x) & 1) {
			tx[len++] = (uint8_t)(0x80 | access << 4 | order);
			tx[len++] = (uint8_t)blk;
		} else {
			tx[len++] = (uint8_t)(access << 4 | order);
			tx[len++] = (uint8_t)blk;
			tx[len++] = (uint8_t)(blk >> 8);
		}
	}
	if (cmd == 0x08)
		for (size_t i = 0; i < 16 * k; i++)
			tx[len++] = (uint8_t)rnd(x);
	switch (rnd(x) % 8) {
	case 0:
		tx[2 + rnd(x) % (len - 2)] ^= (uint8_t)(1u << (rnd(x) % 8));
		break;
	case 1:
		len -= len > 11 ? 1 : 0;
		break;
	case 2:
		tx[len++] = 0x80;
		break;
	default:
		break;
	}
	tx[0] = (uint8_t)len;
	return len;
}

/* Random frames addressed to the card: every answer is silence or a well-formed reply
 * (LEN = length, code = command + 1, the IDm echoed), and every status this model knows
 * turns up. */
static void test_random_frames(void **state)
{
	static const uint8_t cmds[] = { 0x00, 0x02, 0x04, 0x0C, 0x0A, 0x10 };
	static const uint8_t statuses[] = { 0xA1, 0xA2, 0xA3, 0xA5, 0xA6, 0xA7, 0xA8 };
	struct kp_card_felica *c = *state;
	unsigned seen[256] = { 0 };
	uint32_t x = 12345;

	for (int iter = 0; iter < 200000; iter++) {
		uint8_t tx[300], rx[255];
		size_t len, rx_len = 0;
		int rc;

		if (rnd(&x) & 1) {
			len = random_rw(&x, c->idm, tx);
		} else {
			len = 2 + rnd(&x) % 40;
			for (size_t i = 0; i < len; i++)
				tx[i] = (uint8_t)rnd(&x);
			tx[0] = (uint8_t)len;
			tx[1] = cmds[rnd(&x) % sizeof(cmds)];
			if (len >= 10)
				memcpy(tx + 2, c->idm, 8);
		}
		rc = kp_card_felica_answer(c, tx, len, rx, sizeof(rx), &rx_len);
		if (rc == KP_HAL_E_TIMEOUT) {
			assert_int_equal(rx_len, 0);
			continue;
		}
		assert_int_equal(rc, KP_HAL_OK);
		assert_true(rx_len >= 11);
		assert_int_equal(rx[0], rx_len);
		assert_int_equal(rx[1], tx[1] + 1);
		assert_memory_equal(rx + 2, c->idm, 8);
		if (rx[1] == 0x07 || rx[1] == 0x09) {
			assert_true(rx_len >= 12);
			seen[rx[11]]++;
			if (rx[10] != 0 || rx[11] != 0)
				assert_int_equal(rx_len, 12);
			else
				assert_int_equal(rx_len, 13 + 16 * (size_t)rx[12]);
		}
	}
	assert_true(seen[0x00] > 0);
	for (size_t i = 0; i < sizeof(statuses); i++)
		if (seen[statuses[i]] == 0)
			fail_msg("status %02X never produced", statuses[i]);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test_setup(test_polling, setup_multi),
		cmocka_unit_test_setup(test_polling_default_system, setup_card),
		cmocka_unit_test_setup(test_request_service, setup_card),
		cmocka_unit_test_setup(test_request_service_limits, setup_card),
		cmocka_unit_test_setup(test_request_response, setup_card),
		cmocka_unit_test_setup(test_read, setup_card),
		cmocka_unit_test_setup(test_read_twelve_blocks, setup_card),
		cmocka_unit_test_setup(test_write, setup_card),
		cmocka_unit_test_setup(test_request_system_code, setup_card),
		cmocka_unit_test_setup(test_request_system_code_multi, setup_multi),
		cmocka_unit_test_setup(test_unknown_commands, setup_card),
		cmocka_unit_test_setup(test_overflow, setup_card),
		cmocka_unit_test(test_model_setters),
		cmocka_unit_test(test_typeb),
		cmocka_unit_test(test_typea),
		cmocka_unit_test_setup(test_random_frames, setup_card),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
