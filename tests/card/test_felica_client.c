/* SPDX-License-Identifier: Apache-2.0 */
/* The terminal's FeliCa client against crafted replies: every malformed form is refused
 * with its own error. A fake reader (our HAL ops table, the one place we mock) hands the
 * client exactly the bytes a test wants, and records what the client sent. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <cmocka.h>

#include "kp_terminal.h"
#include "testutil.h"

static const uint8_t IDM[8] = { 0x01, 0x01, 0x02, 0x03, 0x04, 0x05, 0x06, 0x07 };
static const uint8_t PMM[8] = { 0x01, 0x20, 0x22, 0x04, 0x27, 0x67, 0x4E, 0xFF };

struct fake {
	struct kp_reader base;
	uint8_t reply[300];
	size_t reply_len;
	int reply_rc;
	uint8_t sent[300];
	size_t sent_len;
};
static struct fake fake_reader;

static int fake_open(struct kp_reader **out, const char *conn)
{
	(void)conn;
	*out = &fake_reader.base;
	return KP_HAL_OK;
}

static int fake_transceive(struct kp_reader *r, const uint8_t *tx, size_t tx_len, uint8_t *rx,
                           size_t rx_cap, size_t *rx_len, int timeout_ms)
{
	struct fake *f = (struct fake *)r;

	(void)timeout_ms;
	memcpy(f->sent, tx, tx_len);
	f->sent_len = tx_len;
	if (f->reply_rc != KP_HAL_OK)
		return f->reply_rc;
	if (f->reply_len > rx_cap)
		return KP_HAL_E_OVERFLOW;
	memcpy(rx, f->reply, f->reply_len);
	*rx_len = f->reply_len;
	return KP_HAL_OK;
}

static void fake_close(struct kp_reader *r)
{
	(void)r;
}

static const struct kp_reader_ops fake_ops = {
	.scheme = "fake", .open = fake_open, .transceive = fake_transceive, .close = fake_close,
};

static struct kp_reader *reader;

static int setup(void **state)
{
	(void)state;
	kp_reader_register(&fake_ops);
	memset(&fake_reader, 0, sizeof(fake_reader));
	fake_reader.base.ops = &fake_ops;
	return kp_reader_open(&reader, "fake:") == KP_HAL_OK ? 0 : -1;
}

static void set_reply(const uint8_t *b, size_t n)
{
	memcpy(fake_reader.reply, b, n);
	fake_reader.reply_len = n;
	fake_reader.reply_rc = KP_HAL_OK;
}

/* A good one-block read reply for IDm, with balance 1500 yen and card type 2. */
static size_t good_read_reply(uint8_t *b)
{
	size_t n = 0;

	b[n++] = 29;
	b[n++] = 0x07;
	memcpy(b + n, IDM, 8);
	n += 8;
	b[n++] = 0;
	b[n++] = 0;
	b[n++] = 1;
	memset(b + n, 0, 16);
	b[n + 8] = 0x20;
	b[n + 11] = 1500 & 0xFF;
	b[n + 12] = 1500 >> 8;
	return n + 16;
}

static struct kp_felica client(void)
{
	struct kp_card_info info;
	struct kp_felica f;

	memset(&info, 0, sizeof(info));
	info.tech = KP_TECH_FELICA;
	memcpy(info.u.felica.idm, IDM, 8);
	memcpy(info.u.felica.pmm, PMM, 8);
	kp_felica_init(&f, reader, &info, 50);
	return f;
}

static void test_read_balance_ok_and_frame_sent(void **state)
{
	static const uint8_t want_tx[] = { 0x10, 0x06, 0x01, 0x01, 0x02, 0x03, 0x04, 0x05, 0x06,
	                                   0x07, 0x01, 0x8B, 0x00, 0x01, 0x80, 0x00 };
	uint8_t b[64];
	struct kp_felica f = client();
	struct kp_transit_balance bal;

	(void)state;
	set_reply(b, good_read_reply(b));
	assert_int_equal(kp_transit_read_balance(&f, &bal), KP_OK);
	assert_int_equal(bal.balance, 1500);
	assert_int_equal(bal.card_type, 2);
	assert_int_equal(fake_reader.sent_len, sizeof(want_tx));
	assert_memory_equal(fake_reader.sent, want_tx, sizeof(want_tx));
}

/* Each mutation of a good reply and the error it must give. */
static void test_read_malformed_replies(void **state)
{
	struct {
		const char *what;
		int rc;
	} cases[] = {
		{ "empty", KP_E_FRAME_SHORT },
		{ "one byte", KP_E_FRAME_SHORT },
		{ "truncated data", KP_E_FRAME_LEN },
		{ "truncated data, LEN fixed", KP_E_FRAME_SHORT },
		{ "extra bytes", KP_E_FRAME_LEN },
		{ "extra bytes, LEN fixed", KP_E_FRAME_LONG },
		{ "LEN off by one", KP_E_FRAME_LEN },
		{ "response code", KP_E_FRAME_CODE },
		{ "response code of another command", KP_E_FRAME_CODE },
		{ "IDm", KP_E_FRAME_IDM },
		{ "status flags", KP_E_CARD_STATUS },
		{ "status flags with data", KP_E_FRAME_LONG },
		{ "block count", KP_E_FRAME_FORMAT },
		{ "header only", KP_E_FRAME_SHORT },
	};
	(void)state;
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		uint8_t b[64];
		size_t n = good_read_reply(b);
		struct kp_felica f = client();
		struct kp_transit_balance bal;

		switch (i) {
		case 0: n = 0; break;
		case 1: n = 1; break;
		case 2: n -= 3; break;
		case 3: n -= 3; b[0] = (uint8_t)n; break;
		case 4: b[n++] = 0; b[n++] = 0; break;
		case 5: b[n++] = 0; b[n++] = 0; b[0] = (uint8_t)n; break;
		case 6: b[0]++; break;
		case 7: b[1] = 0x09; break;
		case 8: b[1] = 0x01; break;
		case 9: b[5] ^= 0x40; break;
		case 10: b[10] = 0x01; b[11] = 0xA8; n = 12; b[0] = 12; break;
		case 11: b[10] = 0xFF; b[11] = 0xA6; break;
		case 12: b[12] = 2; break;
		case 13: n = 12; b[0] = 12; break;
		}
		set_reply(b, n);
		print_message("case: %s\n", cases[i].what);
		assert_int_equal(kp_transit_read_balance(&f, &bal), cases[i].rc);
	}
}

static void test_status_flags_are_kept(void **state)
{
	uint8_t b[12] = { 12, 0x07 };
	struct kp_felica f = client();
	struct kp_transit_balance bal;

	(void)state;
	memcpy(b + 2, IDM, 8);
	b[10] = 0x01;
	b[11] = 0xA6;
	set_reply(b, sizeof(b));
	assert_int_equal(kp_transit_read_balance(&f, &bal), KP_E_CARD_STATUS);
	assert_int_equal(f.sf1, 0x01);
	assert_int_equal(f.sf2, 0xA6);
}

static void test_silent_card_and_reader_errors_pass_through(void **state)
{
	struct kp_felica f = client();
	struct kp_transit_balance bal;

	(void)state;
	fake_reader.reply_rc = KP_HAL_E_TIMEOUT;
	assert_int_equal(kp_transit_read_balance(&f, &bal), KP_HAL_E_TIMEOUT);
	fake_reader.reply_rc = KP_HAL_E_NOCARD;
	assert_int_equal(kp_transit_read_balance(&f, &bal), KP_HAL_E_NOCARD);
	fake_reader.reply_rc = KP_HAL_E_IO;
	assert_int_equal(kp_transit_read_balance(&f, &bal), KP_HAL_E_IO);
}

static void test_poll_parse(void **state)
{
	uint8_t r[20] = { 20, 0x01 };
	uint8_t idm[8], pmm[8];
	uint16_t sc = 0;

	(void)state;
	memcpy(r + 2, IDM, 8);
	memcpy(r + 10, PMM, 8);
	r[18] = 0x00;
	r[19] = 0x03;
	assert_int_equal(kp_felica_parse_poll(r, 20, 1, idm, pmm, &sc), KP_OK);
	assert_memory_equal(idm, IDM, 8);
	assert_memory_equal(pmm, PMM, 8);
	assert_int_equal(sc, 0x0003);
	/* RC=01 expects the system code: an 18-byte reply is short */
	r[0] = 18;
	assert_int_equal(kp_felica_parse_poll(r, 18, 1, idm, pmm, &sc), KP_E_FRAME_SHORT);
	/* RC=00 with a 20-byte reply is long */
	r[0] = 20;
	assert_int_equal(kp_felica_parse_poll(r, 20, 0, idm, pmm, &sc), KP_E_FRAME_LONG);
	r[1] = 0x03;
	assert_int_equal(kp_felica_parse_poll(r, 20, 1, idm, pmm, &sc), KP_E_FRAME_CODE);
	r[1] = 0x01;
	r[0] = 19;
	assert_int_equal(kp_felica_parse_poll(r, 20, 1, idm, pmm, &sc), KP_E_FRAME_LEN);
}

static void test_request_service(void **state)
{
	static const uint8_t want_tx[] = { 0x0F, 0x02, 0x01, 0x01, 0x02, 0x03, 0x04, 0x05, 0x06,
	                                   0x07, 0x02, 0x8B, 0x00, 0xC8, 0x1C };
	uint8_t r[15] = { 15, 0x03 };
	uint16_t nodes[2] = { 0x008B, 0x1CC8 }, kv[2];
	struct kp_felica f = client();

	(void)state;
	memcpy(r + 2, IDM, 8);
	r[10] = 2;
	r[11] = 0x00; r[12] = 0x00;
	r[13] = 0xFF; r[14] = 0xFF;
	set_reply(r, sizeof(r));
	assert_int_equal(kp_felica_request_service(&f, nodes, 2, kv), KP_OK);
	assert_memory_equal(fake_reader.sent, want_tx, sizeof(want_tx));
	assert_int_equal(kv[0], 0x0000);
	assert_int_equal(kv[1], 0xFFFF);
	r[10] = 3;
	set_reply(r, sizeof(r));
	assert_int_equal(kp_felica_request_service(&f, nodes, 2, kv), KP_E_FRAME_FORMAT);
	r[10] = 2;
	set_reply(r, 13);
	assert_int_equal(kp_felica_request_service(&f, nodes, 2, kv), KP_E_FRAME_LEN);
}

static void test_history_parse_and_three_byte_blocks(void **state)
{
	/* A bus ride on 2026-11-20: date bits year 26, month 11, day 20. */
	uint8_t blk[16] = { 0x05, 0x0F, 0, 0, 0x35, 0x74, 0x12, 0x34, 0x56, 0x78,
	                    0xDC, 0x05, 0x00, 0x01, 0x2C, 0x01 };
	struct kp_transit_history h;
	struct kp_felica f = client();
	uint16_t big = 300;
	uint8_t out[16];

	(void)state;
	kp_transit_parse_history_block(blk, &h);
	assert_false(h.empty);
	tu_expect_row("year month day balance seq entry",
	              TU_INTS(h.year, h.month, h.day, h.balance, h.seq, h.entry),
	              TU_INTS(2026, 11, 20, 1500, 0x00012C, 0x1234));
	/* Block numbers >= 256 go out in the three-byte form, little-endian. */
	fake_reader.reply_rc = KP_HAL_E_TIMEOUT;
	assert_int_equal(kp_felica_read(&f, KP_SVC_HISTORY, &big, 1, out), KP_HAL_E_TIMEOUT);
	assert_int_equal(fake_reader.sent[0], 17);
	assert_int_equal(fake_reader.sent[14], 0x00);
	assert_int_equal(fake_reader.sent[15], 0x2C);
	assert_int_equal(fake_reader.sent[16], 0x01);
	/* Too many blocks is refused before anything is sent. */
	assert_int_equal(kp_felica_read(&f, KP_SVC_HISTORY, &big, 13, out), KP_E_INVAL);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_read_balance_ok_and_frame_sent),
		cmocka_unit_test(test_read_malformed_replies),
		cmocka_unit_test(test_status_flags_are_kept),
		cmocka_unit_test(test_silent_card_and_reader_errors_pass_through),
		cmocka_unit_test(test_poll_parse),
		cmocka_unit_test(test_request_service),
		cmocka_unit_test(test_history_parse_and_three_byte_blocks),
	};

	return cmocka_run_group_tests_name("felica_client", tests, setup, NULL);
}
