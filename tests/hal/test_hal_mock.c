/* SPDX-License-Identifier: Apache-2.0 */
/* The HAL's generic half and the mock backends: scenario parsing (every error names its
 * line), the reader flow through kp_reader_* (activation, virtual clock, transceive,
 * remove-after, every fault kind, END, NOCARD, OVERFLOW, cards that stay in the field
 * across polls they do not answer), NOTSUP for missing ops, and the
 * mock HMI's memory and line file. Scenario files live in a mkdtemp folder per test. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <fcntl.h>
#include <unistd.h>

#include <cmocka.h>

#include "kp_hal.h"
#include "mock_scenario.h"
#include "testutil.h"

#define IDM     "0101020304050607"
#define PMM     "0120220427674EFF"
#define BAL1    "0000000000000000 200000 DC05 00 0100" /* type 2, 1500, counter 1 */
#define HIST0   "16010002 2A61 0001 0002 D007 000001 00"
#define CARD_A  "card alice felica idm=" IDM "\n"
#define START_MS 1795647600000LL                   /* 2026-11-26T08:00:00+09:00 */
#define RR      "0A 04" IDM                        /* Request Response */
#define RD_BAL  "10 06" IDM "01 8B00 01 8000"      /* Read 008B block 0 */

struct fx {
	char dir[64];
	char files[128][160];
	size_t n_files;
};

/* ---- helpers ---- */

static int fx_setup(void **state)
{
	struct fx *f = calloc(1, sizeof(*f));

	if (f == NULL)
		return -1;
	tu_tmpdir(f->dir, sizeof(f->dir));
	*state = f;
	return 0;
}

static int fx_teardown(void **state)
{
	struct fx *f = *state;

	for (size_t i = 0; i < f->n_files; i++)
		unlink(f->files[i]);
	rmdir(f->dir);
	free(f);
	return 0;
}

/* A path in the test folder, removed at teardown. */
static const char *fx_path(struct fx *f, const char *name)
{
	char dir[sizeof(f->dir)], *p;

	assert_true(f->n_files < sizeof(f->files) / sizeof(f->files[0]));
	memcpy(dir, f->dir, sizeof(dir)); /* a copy: snprintf's source and target must not overlap */
	p = f->files[f->n_files++];
	snprintf(p, sizeof(f->files[0]), "%s/%s", dir, name);
	return p;
}

static const char *fx_write_n(struct fx *f, const char *name, const char *text, size_t len)
{
	const char *p = fx_path(f, name);
	FILE *fp = fopen(p, "w");

	assert_non_null(fp);
	assert_int_equal(fwrite(text, 1, len, fp), len);
	assert_int_equal(fclose(fp), 0);
	return p;
}

static const char *fx_write(struct fx *f, const char *name, const char *text)
{
	return fx_write_n(f, name, text, strlen(text));
}

static char *slurp(const char *path)
{
	FILE *fp = fopen(path, "r");
	char *buf = calloc(1, 8192);
	size_t n;

	assert_non_null(fp);
	assert_non_null(buf);
	n = fread(buf, 1, 8191, fp);
	buf[n] = '\0';
	fclose(fp);
	return buf;
}

/* Sends fd (1 or 2) to a file until capture_end. */
static int capture_begin(int fd, const char *path)
{
	int saved, t;

	fflush(stdout);
	fflush(stderr);
	saved = dup(fd);
	t = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0600);
	assert_true(saved >= 0 && t >= 0);
	assert_true(dup2(t, fd) >= 0);
	close(t);
	return saved;
}

static void capture_end(int fd, int saved)
{
	fflush(stdout);
	fflush(stderr);
	assert_true(dup2(saved, fd) >= 0);
	close(saved);
}

static int64_t real_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_REALTIME, &ts);
	return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static struct kp_reader *open_scn(struct fx *f, const char *name, const char *text)
{
	char conn[200];
	struct kp_reader *r = NULL;

	snprintf(conn, sizeof(conn), "mock:%s", fx_write(f, name, text));
	assert_int_equal(kp_reader_open(&r, conn), KP_HAL_OK);
	assert_non_null(r);
	return r;
}

static const struct kp_poll poll_transit = { KP_TECH_FELICA | KP_TECH_ISO14443B, 0x0003, 1 };
static const struct kp_poll poll_all = {
	KP_TECH_FELICA | KP_TECH_ISO14443A | KP_TECH_ISO14443B, 0xFFFF, 1
};

/* One frame through the reader, compared with want (NULL: expect rc_want). */
static void xfer(struct kp_reader *r, const char *what, const char *tx_hex, int rc_want,
                 const char *want)
{
	uint8_t tx[300], rx[300];
	size_t tx_len = tu_hex(tx_hex, tx, sizeof(tx)), rx_len = 77;
	int rc = kp_reader_transceive(r, tx, tx_len, rx, sizeof(rx), &rx_len, 100);

	if (rc != rc_want)
		fail_msg("%s: rc %d (%s), want %d", what, rc, kp_hal_strerror(rc), rc_want);
	if (want != NULL)
		tu_expect_hex(what, rx, rx_len, want);
	else
		assert_int_equal(rx_len, 0);
}

/* ---- scenario parsing ---- */

static const char good_scn[] =
	"# the example of hal/SCENARIO.md\n"
	"start 2026-11-26T08:00:00+09:00      # virtual time of t=0\n"
	"pace virtual\n"
	"\n"
	"card alice felica idm=0101020304050607 pmm=100B4B428485D0FF sys=0003,FE00 balance=1500 "
	"cardtype=2 region=3\n"
	"history alice 16010002 2A61 0001 0002 D007 000001 00   # newest\n"
	"history alice 16010002 2A60 0001 0002 DA07 000000 00\n"
	"card bob typeb pupi=A1B2C3D4 app=00000000 proto=008171\n"
	"card carol typea uid=04112233445566 atqa=0044 sak=00\n"
	"card dave felica idm=0A0B0C0D0E0F1011\r\n"
	"tap +0 alice\n"
	"tap +12.5 alice remove-after=1\n"
	"tap +20 bob fault=len\n"
	"\ttap  +20.05   carol  \n"
	"tap +21 dave fault=garbage remove-after=0\n";

static void test_scn_good(void **state)
{
	struct fx *f = *state;
	struct kp_scenario *s = NULL;
	char err[256] = "x";
	const struct kp_card_felica *a;
	uint8_t want[16];

	assert_int_equal(kp_scenario_load(&s, fx_write(f, "good.txt", good_scn), err, sizeof(err)),
	                 KP_HAL_OK);
	assert_string_equal(err, "");
	assert_int_equal(s->start_ms, START_MS);
	assert_int_equal(s->pace, KP_SCN_PACE_VIRTUAL);
	assert_int_equal(s->n_cards, 4);
	assert_int_equal(s->n_taps, 5);

	assert_string_equal(s->cards[0].name, "alice");
	assert_int_equal(s->cards[0].tech, KP_TECH_FELICA);
	a = &s->cards[0].u.felica;
	tu_expect_hex("idm", a->idm, 8, IDM);
	tu_expect_hex("pmm", a->pmm, 8, "100B4B428485D0FF");
	assert_int_equal(a->n_sys, 2);
	assert_int_equal(a->sys_codes[0], 0x0003);
	assert_int_equal(a->sys_codes[1], 0xFE00);
	tu_expect_hex("balance block", a->balance[0], 16, "0000000000000000 230000 DC05 00 0200");
	assert_int_equal(a->n_history, 2);
	tu_expect_hex("history 0", a->history[0], 16, HIST0);
	tu_expect_hex("history 1", a->history[1], 16, "16010002 2A60 0001 0002 DA07 000000 00");
	tu_hex("00000000000000000000000000000000", want, sizeof(want));
	assert_memory_equal(a->history[2], want, 16);

	assert_int_equal(s->cards[1].tech, KP_TECH_ISO14443B);
	tu_expect_hex("pupi", s->cards[1].u.b.pupi, 4, "A1B2C3D4");
	tu_expect_hex("proto", s->cards[1].u.b.proto_info, 3, "008171");
	assert_int_equal(s->cards[2].tech, KP_TECH_ISO14443A);
	assert_int_equal(s->cards[2].u.a.uid_len, 7);
	tu_expect_hex("uid", s->cards[2].u.a.uid, 7, "04112233445566");
	tu_expect_hex("atqa", s->cards[2].u.a.atqa, 2, "0044");
	/* defaults */
	tu_expect_hex("default pmm", s->cards[3].u.felica.pmm, 8, PMM);
	assert_int_equal(s->cards[3].u.felica.n_sys, 1);
	assert_int_equal(s->cards[3].u.felica.sys_codes[0], 0x0003);
	tu_expect_hex("default balance", s->cards[3].u.felica.balance[0], 16,
	           "00000000000000000000000000000000");

	assert_int_equal(s->taps[0].offset_ms, 0);
	assert_int_equal(s->taps[0].card, 0);
	assert_int_equal(s->taps[0].remove_after, -1);
	assert_int_equal(s->taps[0].fault, KP_SCN_FAULT_NONE);
	assert_int_equal(s->taps[1].offset_ms, 12500);
	assert_int_equal(s->taps[1].remove_after, 1);
	assert_int_equal(s->taps[2].card, 1);
	assert_int_equal(s->taps[2].fault, KP_SCN_FAULT_LEN);
	assert_int_equal(s->taps[3].offset_ms, 20050);
	assert_int_equal(s->taps[3].line, 14);
	assert_int_equal(s->taps[4].fault, KP_SCN_FAULT_GARBAGE);
	assert_int_equal(s->taps[4].remove_after, 0);
	kp_scenario_free(s);
}

static void test_scn_times(void **state)
{
	static const struct {
		const char *start;            /* NULL: no start line */
		long long ms;
	} v[] = {
		{ NULL, 1767225600000LL },
		{ "2026-11-26T08:00:00+09:00", START_MS },
		{ "2026-11-26T08:00:00+0900", START_MS },
		{ "2026-11-25T23:00:00Z", START_MS },
		{ "1795647600", START_MS },
		{ "2024-02-29T23:59:59.250-05:30", 1709270999250LL },
		{ "2024-02-29T23:59:59.2-05:30", 1709270999200LL },
		{ "1970-01-01T00:00:00Z", 0 },
	};
	struct fx *f = *state;

	for (size_t i = 0; i < sizeof(v) / sizeof(v[0]); i++) {
		char text[128], name[32], err[256];
		struct kp_scenario *s = NULL;

		snprintf(text, sizeof(text), "%s%s\npace real\n", v[i].start ? "start " : "# none ",
		         v[i].start ? v[i].start : "");
		snprintf(name, sizeof(name), "time%zu.txt", i);
		if (kp_scenario_load(&s, fx_write(f, name, text), err, sizeof(err)) != KP_HAL_OK)
			fail_msg("start '%s': %s", v[i].start ? v[i].start : "(none)", err);
		assert_int_equal(s->start_ms, v[i].ms);
		assert_int_equal(s->pace, KP_SCN_PACE_REAL);
		kp_scenario_free(s);
	}
}

/* kp_time_parse, the one parser of written times (scenarios, load files, kippuctl): strict. */
static void test_time_parse_strict(void **state)
{
	static const struct { const char *s; long long ms; int off; } good[] = {
		{ "2026-11-01T00:00:00+09:00", 1793458800000LL, 32400 },
		{ "2026-11-01T00:00:00+0900", 1793458800000LL, 32400 },
		{ "2036-02-29T12:00:00Z", 2087899200000LL, 0 },
		{ "2030-12-31T23:59:30-14:00", 1924991970000LL + 14LL * 3600000, -50400 },
		{ "9999-12-31T23:59:59Z", 253402300799000LL, 0 },
		{ "0", 0, 0 },
	};
	static const char *const bad[] = {
		"2026-11-01T-1:00:00+09:00", "2026-11-01T00:-5:-9Z", "2026-11-01T00:00:00+-1:00",
		"2026-11-01T00:00:00", "2026-11-01 00:00:00Z", "2026-11-1T00:00:00Z",
		"+2026-11-01T00:00:00Z", "2026-11-01T00:00:00+15:00", "2026-11-01T00:00:00+14:30",
		"2026-11-01T00:00:00Z ", " 2026-11-01T00:00:00Z", "2026-02-29T00:00:00Z",
		"2026-11-01T24:00:00Z", "2026-11-01T00:00:60Z", "1969-12-31T23:59:59Z",
		"1970-01-01T08:59:59+09:00", "-1", "+5", "253402300800", "99999999999999999999",
		"2026-11-01T00:00:00.Z", "2026-11-01T00:00:00+9:00", "", "Z",
	};
	int64_t ms;
	int off;

	(void)state;
	for (size_t i = 0; i < sizeof(good) / sizeof(good[0]); i++) {
		if (kp_time_parse(good[i].s, &ms, &off) != 0)
			fail_msg("'%s' refused", good[i].s);
		assert_int_equal(ms, good[i].ms);
		assert_int_equal(off, good[i].off);
	}
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		if (kp_time_parse(bad[i], &ms, &off) == 0)
			fail_msg("'%s' accepted as %lld", bad[i], (long long)ms);
	}
}

struct bad_case {
	const char *name;
	const char *text;
	unsigned line;
	const char *msg;                  /* must appear after "PATH:LINE: " */
};

static const struct bad_case bad_cases[] = {
	{ "unknown directive", CARD_A "# comment\n\nfrobnicate now\n", 4,
	  "unknown directive 'frobnicate'" },
	{ "bad hex", "card alice felica idm=01010203040506ZZ\n", 1, "bad hex in idm=" },
	{ "odd hex", "card alice felica idm=010102030405060\n", 1, "bad hex in idm=" },
	{ "IDm too short", "\ncard alice felica idm=01010203\n", 2,
	  "idm= must be 8 bytes (16 hex digits)" },
	{ "IDm too long", "card alice felica idm=010102030405060708\n", 1,
	  "idm= must be 8 bytes (16 hex digits)" },
	{ "duplicate card", CARD_A "card alice felica idm=0202020202020202\n", 2,
	  "duplicate card name 'alice' (first declared on line 1)" },
	{ "tap of unknown card", CARD_A "tap +0 bob\n", 2, "tap of unknown card 'bob'" },
	{ "taps out of order", CARD_A "tap +5 alice\ntap +4.999 alice\n", 3,
	  "taps out of time order: +4.999 comes before the tap on line 2" },
	{ "history before its card", "history alice " HIST0 "\n" CARD_A, 1,
	  "history for unknown card 'alice'" },
	{ "balance too big", "card alice felica idm=" IDM " balance=65536\n", 1,
	  "balance= out of range 0..65535" },
	{ "balance negative", "card alice felica idm=" IDM " balance=-1\n", 1,
	  "balance= out of range 0..65535" },
	{ "balance huge", "card alice felica idm=" IDM " balance=99999999999999999999999\n", 1,
	  "balance= out of range 0..65535" },
	{ "balance not a number", "card alice felica idm=" IDM " balance=1k\n", 1,
	  "balance= is not a number" },
	{ "unknown card option", "card alice felica idm=" IDM " colour=red\n", 1,
	  "unknown option 'colour' for a felica card" },
	{ "option without =", "card alice felica idm=" IDM " fast\n", 1,
	  "unknown option 'fast' for a felica card" },
	{ "unknown tap option", CARD_A "tap +0 alice speed=3\n", 2,
	  "unknown option 'speed' for a tap" },
	{ "typeb option on felica", "card alice felica idm=" IDM " pupi=A1B2C3D4\n", 1,
	  "unknown option 'pupi' for a felica card" },
	{ "duplicate option", "card alice felica idm=" IDM " idm=" IDM "\n", 1,
	  "duplicate option 'idm'" },
	{ "empty value", "card alice felica idm=\n", 1, "empty value for 'idm='" },
	{ "missing idm", "card alice felica balance=5\n", 1, "felica card 'alice' needs idm=" },
	{ "pmm length", "card alice felica idm=" IDM " pmm=0102\n", 1,
	  "pmm= must be 8 bytes (16 hex digits)" },
	{ "sys wildcard", "card alice felica idm=" IDM " sys=0003,FFFF\n", 1,
	  "sys=: FFFF is a wildcard" },
	{ "sys FF byte", "card alice felica idm=" IDM " sys=00FF\n", 1, "sys=: 00FF is a wildcard" },
	{ "sys short", "card alice felica idm=" IDM " sys=003\n", 1, "sys= takes system codes" },
	{ "sys trailing comma", "card alice felica idm=" IDM " sys=0003,\n", 1,
	  "sys= takes system codes" },
	{ "sys bad hex", "card alice felica idm=" IDM " sys=00G3\n", 1, "bad hex in sys=" },
	{ "sys twice", "card alice felica idm=" IDM " sys=0003,FE00,0003\n", 1,
	  "sys=: 0003 given twice" },
	{ "cardtype", "card alice felica idm=" IDM " cardtype=16\n", 1,
	  "cardtype= out of range 0..15" },
	{ "region", "card alice felica idm=" IDM " region=99\n", 1, "region= out of range 0..15" },
	{ "card type", "card alice mifare uid=04112233\n", 1, "card: unknown type 'mifare'" },
	{ "card name", "card al!ce felica idm=" IDM "\n", 1, "card: bad name 'al!ce'" },
	{ "card name too long", "card a2345678901234567890123456789012 felica idm=" IDM "\n", 1,
	  "card: bad name" },
	{ "card too short", "card alice\n", 1, "card: expected 'card NAME TYPE" },
	{ "typeb needs pupi", "card bob typeb app=00000000\n", 1, "typeb card 'bob' needs pupi=" },
	{ "pupi length", "card bob typeb pupi=A1B2C3\n", 1, "pupi= must be 4 bytes (8 hex digits)" },
	{ "proto length", "card bob typeb pupi=A1B2C3D4 proto=0081\n", 1,
	  "proto= must be 3 bytes" },
	{ "typea uid length", "card carol typea uid=0411223344\n", 1,
	  "uid= must be 4, 7 or 10 bytes" },
	{ "typea needs uid", "card carol typea sak=08\n", 1, "typea card 'carol' needs uid=" },
	{ "history length", CARD_A "history alice 1601\n", 2,
	  "history: need 16 bytes (32 hex digits), got 4 digits" },
	{ "history too long", CARD_A "history alice " HIST0 " 00\n", 2,
	  "history: need 16 bytes (32 hex digits), got 34 digits" },
	{ "history bad hex", CARD_A "history alice 16010002 2A6G 0001 0002 D007 000001 00\n", 2,
	  "history: bad hex '2A6G'" },
	{ "history of a typeb card", "card bob typeb pupi=A1B2C3D4\nhistory bob " HIST0 "\n", 2,
	  "history: card 'bob' is not a felica card" },
	{ "history without data", CARD_A "history alice\n", 2, "history: expected" },
	{ "tap time without +", CARD_A "tap 5 alice\n", 2, "tap: bad time '5'" },
	{ "tap time 4 decimals", CARD_A "tap +1.2345 alice\n", 2, "tap: bad time '+1.2345'" },
	{ "tap time dot only", CARD_A "tap +1. alice\n", 2, "tap: bad time '+1.'" },
	{ "tap time negative", CARD_A "tap +-1 alice\n", 2, "tap: bad time '+-1'" },
	{ "tap time too far", CARD_A "tap +1000000001 alice\n", 2, "tap: bad time" },
	{ "tap without card", CARD_A "tap +1\n", 2, "tap: expected" },
	{ "unknown fault", CARD_A "tap +0 alice fault=melt\n", 2, "unknown fault 'melt'" },
	{ "remove-after not a number", CARD_A "tap +0 alice remove-after=x\n", 2,
	  "remove-after= is not a number" },
	{ "remove-after too big", CARD_A "tap +0 alice remove-after=1000001\n", 2,
	  "remove-after= out of range 0..1000000" },
	{ "duplicate tap option", CARD_A "tap +0 alice fault=len fault=code\n", 2,
	  "duplicate option 'fault'" },
	{ "bad month", "start 2026-13-01T00:00:00Z\n", 1, "start: bad time '2026-13-01T00:00:00Z'" },
	{ "no offset", "start 2026-11-26T08:00:00\n", 1, "start: bad time" },
	{ "not a leap year", "start 2026-02-29T00:00:00Z\n", 1, "start: bad time" },
	{ "hour 24", "start 2026-02-01T24:00:00Z\n", 1, "start: bad time" },
	{ "start without time", "start\n", 1, "start: expected 'start TIME'" },
	{ "duplicate start", "start 0\nstart 1\n", 2, "duplicate start (first on line 1)" },
	{ "bad pace", "pace fast\n", 1, "pace: expected 'pace virtual' or 'pace real'" },
	{ "duplicate pace", "pace real\n\npace real\n", 3, "duplicate pace (first on line 1)" },
};

static void check_bad(struct fx *f, const char *name, const char *path, unsigned line,
                      const char *msg)
{
	struct kp_scenario *s = (struct kp_scenario *)1;
	char err[600], prefix[256];
	int rc = kp_scenario_load(&s, path, err, sizeof(err));

	if (rc != KP_HAL_E_CONFIG)
		fail_msg("case '%s': rc %d, want KP_HAL_E_CONFIG", name, rc);
	assert_null(s);
	snprintf(prefix, sizeof(prefix), "%s:%u: ", path, line);
	if (strncmp(err, prefix, strlen(prefix)) != 0 || strstr(err + strlen(prefix), msg) == NULL)
		fail_msg("case '%s': got \"%s\", want \"%s%s...\"", name, err, prefix, msg);
	/* Card IDs never appear in messages. */
	if (strstr(err, IDM) != NULL || strstr(err, "A1B2C3D4") != NULL)
		fail_msg("case '%s': message quotes a card ID: %s", name, err);
	(void)f;
}

static void test_scn_errors(void **state)
{
	struct fx *f = *state;

	for (size_t i = 0; i < sizeof(bad_cases) / sizeof(bad_cases[0]); i++) {
		char name[32];

		snprintf(name, sizeof(name), "bad%zu.txt", i);
		check_bad(f, bad_cases[i].name, fx_write(f, name, bad_cases[i].text), bad_cases[i].line,
		          bad_cases[i].msg);
	}
}

static void test_scn_history_limit(void **state)
{
	struct fx *f = *state;
	char text[4096];
	size_t n = 0;
	struct kp_scenario *s = NULL;

	n += (size_t)snprintf(text + n, sizeof(text) - n, CARD_A);
	for (int i = 0; i < 20; i++)
		n += (size_t)snprintf(text + n, sizeof(text) - n,
		                      "history alice 16010002 2A61 0001 0002 D007 0000%02X 00\n", i);
	assert_int_equal(kp_scenario_load(&s, fx_write(f, "h20.txt", text), NULL, 0), KP_HAL_OK);
	assert_int_equal(s->cards[0].u.felica.n_history, 20);
	assert_int_equal(s->cards[0].u.felica.history[19][14], 19);
	assert_int_equal(s->cards[0].u.felica.balance[0][14], 20); /* counter */
	kp_scenario_free(s);
	snprintf(text + n, sizeof(text) - n, "history alice " HIST0 "\n");
	check_bad(f, "21 history lines", fx_write(f, "h21.txt", text), 22,
	          "more than 20 history lines for card 'alice'");
}

static void test_scn_long_line(void **state)
{
	static const char nul_text[] = CARD_A "tap +0\0 alice\n";
	struct fx *f = *state;
	char text[2048];
	size_t n;
	struct kp_scenario *s = NULL;

	/* 512 characters (plus CR) is the limit, 513 is too many. */
	n = (size_t)snprintf(text, sizeof(text), CARD_A "#");
	memset(text + n, 'x', 511);
	n += 511;
	memcpy(text + n, "\r\ntap +0 alice\n", 16);
	assert_int_equal(kp_scenario_load(&s, fx_write(f, "l512.txt", text), NULL, 0), KP_HAL_OK);
	assert_int_equal(s->n_taps, 1);
	kp_scenario_free(s);

	n = (size_t)snprintf(text, sizeof(text), CARD_A "\n#");
	memset(text + n, 'x', 512);
	n += 512;
	memcpy(text + n, "\ntap +0 alice\n", 15);
	check_bad(f, "513 characters", fx_write(f, "l513.txt", text), 3,
	          "line longer than 512 characters");

	memset(text, 'y', 1500);
	text[1500] = '\0';
	check_bad(f, "no newline at all", fx_write(f, "l1500.txt", text), 1,
	          "line longer than 512 characters");

	check_bad(f, "NUL byte", fx_write_n(f, "nul.txt", nul_text, sizeof(nul_text) - 1), 2,
	          "NUL byte in line");
}

static void test_scn_misc(void **state)
{
	struct fx *f = *state;
	struct kp_scenario *s = NULL;
	char err[256];

	/* A UTF-8 BOM, CRLF ends and a last line without newline are fine. */
	assert_int_equal(kp_scenario_load(&s, fx_write(f, "bom.txt", "\xEF\xBB\xBF" "card alice "
	                                               "felica idm=" IDM "\r\ntap +0 alice"),
	                                  err, sizeof(err)), KP_HAL_OK);
	assert_int_equal(s->n_taps, 1);
	kp_scenario_free(s);
	/* An empty file is a scenario with no taps. */
	assert_int_equal(kp_scenario_load(&s, fx_write(f, "empty.txt", ""), err, sizeof(err)),
	                 KP_HAL_OK);
	assert_int_equal(s->n_cards, 0);
	kp_scenario_free(s);

	assert_int_equal(kp_scenario_load(&s, "/nonexistent/kp.txt", err, sizeof(err)),
	                 KP_HAL_E_CONFIG);
	assert_non_null(strstr(err, "/nonexistent/kp.txt: cannot open"));
	/* A tiny error buffer is truncated, never overrun. */
	assert_int_equal(kp_scenario_load(&s, fx_write(f, "tiny.txt", "bogus\n"), err, 8),
	                 KP_HAL_E_CONFIG);
	assert_int_equal(strlen(err), 7);
	assert_int_equal(kp_scenario_load(NULL, "x", err, sizeof(err)), KP_HAL_E_INVAL);
	assert_string_equal(kp_scn_fault_name(KP_SCN_FAULT_STATUS), "status");
}

/* ---- the reader through kp_reader_* ---- */

static const char flow_scn[] =
	"start 2026-11-26T08:00:00+09:00\n"
	"card alice felica idm=" IDM " balance=1500 cardtype=2\n"
	"history alice " HIST0 "\n"
	"card multi felica idm=0202020304050607 pmm=100B4B428485D0FF sys=FE00,0003\n"
	"card bob typeb pupi=A1B2C3D4 app=11223344 proto=008171\n"
	"card carol typea uid=04112233445566 atqa=0044 sak=08\n"
	"tap +0 alice\n"
	"tap +12.5 alice remove-after=1\n"
	"tap +20 bob\n"
	"tap +21 carol\n"
	"tap +30 multi\n";

static void test_reader_flow(void **state)
{
	struct fx *f = *state;
	struct kp_reader *r = open_scn(f, "flow.txt", flow_scn);
	struct kp_card_info info;
	char desc[128];

	assert_int_equal(kp_reader_describe(r, desc, sizeof(desc)), KP_HAL_OK);
	assert_string_equal(desc, "mock reader: scenario flow.txt, 4 cards, 5 taps");
	assert_int_equal(kp_reader_now_ms(r), START_MS);
	/* No card yet. */
	xfer(r, "before any tap", RR, KP_HAL_E_NOCARD, NULL);

	/* Tap 1: alice, activated by a real Polling frame with RC 01. */
	assert_int_equal(kp_reader_wait_card(r, &poll_transit, &info, 1000), KP_HAL_OK);
	assert_int_equal(info.tech, KP_TECH_FELICA);
	assert_int_equal(info.baud_kbps, 212);
	tu_expect_hex("idm", info.u.felica.idm, 8, IDM);
	tu_expect_hex("pmm", info.u.felica.pmm, 8, PMM);
	assert_int_equal(info.u.felica.has_sys_code, 1);
	tu_expect_hex("sys code", info.u.felica.sys_code, 2, "0003");
	assert_int_equal(kp_reader_now_ms(r), START_MS);
	xfer(r, "request response", RR, KP_HAL_OK, "0B 05" IDM "00");
	xfer(r, "read balance", RD_BAL, KP_HAL_OK, "1D 07" IDM "00 00 01" BAL1);
	xfer(r, "read history", "10 06" IDM "01 0F09 01 8000", KP_HAL_OK, "1D 07" IDM "00 00 01" HIST0);
	xfer(r, "other IDm", "0A 04 0101020304050608", KP_HAL_E_TIMEOUT, NULL);
	xfer(r, "request system code", "0A 0C" IDM, KP_HAL_OK, "0D 0D" IDM "01 0003");
	assert_int_equal(kp_reader_release(r, 1, 500), KP_HAL_OK);
	xfer(r, "after release", RR, KP_HAL_E_NOCARD, NULL);
	assert_int_equal(kp_reader_release(r, 0, 0), KP_HAL_OK); /* twice is harmless */

	/* Tap 2: the clock jumps; one frame, then the card is gone. */
	assert_int_equal(kp_reader_wait_card(r, &poll_transit, &info, 1000), KP_HAL_OK);
	assert_int_equal(kp_reader_now_ms(r), START_MS + 12500);
	xfer(r, "remove-after frame 1", RR, KP_HAL_OK, "0B 05" IDM "00");
	xfer(r, "remove-after frame 2", RR, KP_HAL_E_TIMEOUT, NULL);
	xfer(r, "remove-after frame 3", RD_BAL, KP_HAL_E_TIMEOUT, NULL);
	assert_int_equal(kp_reader_release(r, 1, 500), KP_HAL_OK);

	/* Tap 3: Type B. */
	assert_int_equal(kp_reader_wait_card(r, &poll_transit, &info, 1000), KP_HAL_OK);
	assert_int_equal(kp_reader_now_ms(r), START_MS + 20000);
	assert_int_equal(info.tech, KP_TECH_ISO14443B);
	assert_int_equal(info.baud_kbps, 106);
	tu_expect_hex("atqb", info.u.b.atqb, 12, "50 A1B2C3D4 11223344 008171");
	tu_expect_hex("pupi", info.u.b.pupi, 4, "A1B2C3D4");
	tu_expect_hex("app", info.u.b.app_data, 4, "11223344");
	tu_expect_hex("proto", info.u.b.proto_info, 3, "008171");
	xfer(r, "SELECT JPKI", "00 A4 04 0C 0A D392F000260100000001", KP_HAL_OK, "6A 82");
	xfer(r, "READ BINARY", "00 B0 0000 07", KP_HAL_OK, "6D 00");
	xfer(r, "short APDU", "00 A4", KP_HAL_OK, "67 00");

	/* Tap 4: Type A, which answers nothing. */
	assert_int_equal(kp_reader_wait_card(r, &poll_all, &info, 1000), KP_HAL_OK);
	assert_int_equal(info.tech, KP_TECH_ISO14443A);
	assert_int_equal(info.baud_kbps, 106);
	assert_int_equal(info.u.a.uid_len, 7);
	tu_expect_hex("uid", info.u.a.uid, 7, "04112233445566");
	tu_expect_hex("atqa", info.u.a.atqa, 2, "0044");
	assert_int_equal(info.u.a.sak, 0x08);
	xfer(r, "type A", "30 00", KP_HAL_E_TIMEOUT, NULL);

	/* Tap 5: polled for 0003, the card in FE00 and 0003 reports the code that matched. */
	assert_int_equal(kp_reader_wait_card(r, &poll_transit, &info, 1000), KP_HAL_OK);
	tu_expect_hex("multi idm", info.u.felica.idm, 8, "0202020304050607");
	tu_expect_hex("multi pmm", info.u.felica.pmm, 8, "100B4B428485D0FF");
	tu_expect_hex("multi sys", info.u.felica.sys_code, 2, "0003");

	/* No taps left: END, again and again; the clock stays at the last tap. */
	assert_int_equal(kp_reader_wait_card(r, &poll_transit, &info, 1000), KP_HAL_E_END);
	assert_int_equal(kp_reader_wait_card(r, &poll_transit, &info, 0), KP_HAL_E_END);
	xfer(r, "after END", RR, KP_HAL_E_NOCARD, NULL);
	assert_int_equal(kp_reader_now_ms(r), START_MS + 30000);
	kp_reader_close(r);
}

static void test_reader_poll_mismatch(void **state)
{
	struct fx *f = *state;
	struct kp_reader *r = open_scn(f, "nocard.txt", flow_scn);
	struct kp_card_info info;
	struct kp_poll p = { KP_TECH_FELICA, 0x8FC1, 1 };

	/* alice is not in system 8FC1: no card, but she stays in the field... */
	memset(&info, 0xAA, sizeof(info));
	assert_int_equal(kp_reader_wait_card(r, &p, &info, 100), KP_HAL_E_NOCARD);
	assert_int_equal(info.tech, KP_TECH_NONE);
	xfer(r, "no session", RR, KP_HAL_E_NOCARD, NULL);
	p.techs = KP_TECH_ISO14443B;
	assert_int_equal(kp_reader_wait_card(r, &p, &info, 100), KP_HAL_E_NOCARD);
	assert_int_equal(kp_reader_now_ms(r), START_MS);
	/* ...until the third poll in a row she does not answer: then the next tap comes. */
	p.techs = KP_TECH_ISO14443A;
	assert_int_equal(kp_reader_wait_card(r, &p, &info, 100), KP_HAL_E_NOCARD);
	/* alice's second tap: FeliCa is not polled for (three times), so she leaves too. */
	p.techs = KP_TECH_ISO14443B;
	for (int i = 0; i < 3; i++)
		assert_int_equal(kp_reader_wait_card(r, &p, &info, 100), KP_HAL_E_NOCARD);
	assert_int_equal(kp_reader_now_ms(r), START_MS + 12500);
	/* bob is Type B: polled for FeliCa first, then for Type B, which finds him. */
	p.techs = KP_TECH_FELICA;
	p.felica_sys_code = 0xFFFF;
	assert_int_equal(kp_reader_wait_card(r, &p, &info, 100), KP_HAL_E_NOCARD);
	assert_int_equal(kp_reader_now_ms(r), START_MS + 20000);
	p.techs = KP_TECH_ISO14443B;
	assert_int_equal(kp_reader_wait_card(r, &p, &info, 100), KP_HAL_OK);
	assert_int_equal(info.tech, KP_TECH_ISO14443B);
	tu_expect_hex("pupi after a FeliCa poll", info.u.b.pupi, 4, "A1B2C3D4");
	xfer(r, "bob's session", "00 A4", KP_HAL_OK, "67 00");
	/* carol is Type A: two misses, then the third technology finds her. */
	p.techs = KP_TECH_FELICA;
	assert_int_equal(kp_reader_wait_card(r, &p, &info, 100), KP_HAL_E_NOCARD);
	xfer(r, "polling ended bob's session", "00 A4", KP_HAL_E_NOCARD, NULL);
	p.techs = KP_TECH_ISO14443B;
	assert_int_equal(kp_reader_wait_card(r, &p, &info, 100), KP_HAL_E_NOCARD);
	p.techs = KP_TECH_ISO14443A;
	assert_int_equal(kp_reader_wait_card(r, &p, &info, 100), KP_HAL_OK);
	tu_expect_hex("uid after two misses", info.u.a.uid, 7, "04112233445566");
	/* multi with the wildcard and RC 01: the first of its system codes. A wait for
	 * removal takes away a card that no poll has matched. */
	p.techs = KP_TECH_ISO14443B;
	assert_int_equal(kp_reader_wait_card(r, &p, &info, 100), KP_HAL_E_NOCARD);
	assert_int_equal(kp_reader_release(r, 0, 0), KP_HAL_OK);
	p.techs = KP_TECH_FELICA | KP_TECH_ISO14443B;
	assert_int_equal(kp_reader_wait_card(r, &p, &info, 100), KP_HAL_OK);
	tu_expect_hex("wildcard sys", info.u.felica.sys_code, 2, "FE00");
	assert_int_equal(kp_reader_wait_card(r, &p, &info, 100), KP_HAL_E_END);
	kp_reader_close(r);
}

static void test_reader_release_removes_lingering(void **state)
{
	struct fx *f = *state;
	struct kp_reader *r = open_scn(f, "linger.txt", CARD_A "card bob typeb pupi=A1B2C3D4\n"
	                               "tap +0 bob\ntap +1 alice\n");
	struct kp_card_info info;
	struct kp_poll p = { KP_TECH_FELICA, 0x0003, 1 };

	assert_int_equal(kp_reader_wait_card(r, &p, &info, 100), KP_HAL_E_NOCARD);
	assert_int_equal(kp_reader_release(r, 1, 0), KP_HAL_OK); /* bob is taken away */
	assert_int_equal(kp_reader_wait_card(r, &p, &info, 100), KP_HAL_OK);
	tu_expect_hex("next tap", info.u.felica.idm, 8, IDM);
	assert_int_equal(kp_reader_now_ms(r), KP_SCN_START_DEFAULT_MS + 1000);
	kp_reader_close(r);
}

static void test_reader_request_codes(void **state)
{
	struct fx *f = *state;
	struct kp_reader *r = open_scn(f, "rc.txt", CARD_A "tap +0 alice\ntap +1 alice\n"
	                               "tap +2 alice\n");
	struct kp_card_info info;
	struct kp_poll p = { KP_TECH_FELICA, 0x0003, 0 };

	assert_int_equal(kp_reader_wait_card(r, &p, &info, 100), KP_HAL_OK);
	assert_int_equal(info.u.felica.has_sys_code, 0);
	tu_expect_hex("RC 00 idm", info.u.felica.idm, 8, IDM);
	p.felica_request_code = 2;
	assert_int_equal(kp_reader_wait_card(r, &p, &info, 100), KP_HAL_OK);
	assert_int_equal(info.u.felica.has_sys_code, 0);
	tu_expect_hex("RC 02 pmm", info.u.felica.pmm, 8, PMM);
	p.felica_request_code = 1;
	p.felica_sys_code = 0xFF03;
	assert_int_equal(kp_reader_wait_card(r, &p, &info, 100), KP_HAL_OK);
	assert_int_equal(info.u.felica.has_sys_code, 1);
	tu_expect_hex("FF03 sys", info.u.felica.sys_code, 2, "0003");
	kp_reader_close(r);
}

/* Each fault, on two different frames of one tap. */
static const struct {
	const char *fault;
	int rc;
	const char *rr;                   /* reply to Request Response */
	const char *rd;                   /* reply to Read of 008B */
} fault_cases[] = {
	{ "none", KP_HAL_OK, "0B 05" IDM "00", "1D 07" IDM "00 00 01" BAL1 },
	{ "short", KP_HAL_OK, "0B 05" IDM, "1D 07" IDM "00 00 01 0000000000000000 200000 DC05 00 01" },
	{ "long", KP_HAL_OK, "0B 05" IDM "00 0000", "1D 07" IDM "00 00 01" BAL1 "0000" },
	{ "len", KP_HAL_OK, "0C 05" IDM "00", "1E 07" IDM "00 00 01" BAL1 },
	{ "code", KP_HAL_OK, "0B 85" IDM "00", "1D 87" IDM "00 00 01" BAL1 },
	{ "idm", KP_HAL_OK, "0B 05 01010203040506F8 00", "1D 07 01010203040506F8 00 00 01" BAL1 },
	{ "status", KP_HAL_OK, "0B 05" IDM "00", "1D 07" IDM "FF A8 01" BAL1 },
	{ "garbage", KP_HAL_OK, NULL, NULL },
	{ "silent", KP_HAL_E_TIMEOUT, NULL, NULL },
};

static void test_reader_faults(void **state)
{
	struct fx *f = *state;
	char text[2048];
	size_t n = (size_t)snprintf(text, sizeof(text), "%s",
	                    "card alice felica idm=" IDM " balance=1500 cardtype=2\n"
	                    "history alice " HIST0 "\n");
	size_t n_cases = sizeof(fault_cases) / sizeof(fault_cases[0]);
	struct kp_reader *r;
	struct kp_card_info info;

	for (size_t i = 0; i < n_cases; i++)
		n += (size_t)snprintf(text + n, sizeof(text) - n, "tap +%zu alice fault=%s\n", i,
		                      fault_cases[i].fault);
	r = open_scn(f, "faults.txt", text);
	for (size_t i = 0; i < n_cases; i++) {
		char what[64];
		uint8_t tx[32], rx[300], rx2[300];
		size_t rx_len = 0, rx2_len = 0, tx_len;

		/* Faults never touch activation. */
		assert_int_equal(kp_reader_wait_card(r, &poll_transit, &info, 100), KP_HAL_OK);
		tu_expect_hex("activation idm", info.u.felica.idm, 8, IDM);
		tu_expect_hex("activation sys", info.u.felica.sys_code, 2, "0003");
		if (strcmp(fault_cases[i].fault, "garbage") == 0) {
			tx_len = tu_hex(RR, tx, sizeof(tx));
			assert_int_equal(kp_reader_transceive(r, tx, tx_len, rx, sizeof(rx), &rx_len, 100),
			                 KP_HAL_OK);
			assert_int_equal(rx_len, 5);
			tx_len = tu_hex(RD_BAL, tx, sizeof(tx));
			assert_int_equal(kp_reader_transceive(r, tx, tx_len, rx2, sizeof(rx2), &rx2_len,
			                                      100), KP_HAL_OK);
			assert_int_equal(rx2_len, 5);
			assert_memory_not_equal(rx, rx2, 5);
			continue;
		}
		snprintf(what, sizeof(what), "fault=%s request response", fault_cases[i].fault);
		xfer(r, what, RR, fault_cases[i].rc, fault_cases[i].rr);
		snprintf(what, sizeof(what), "fault=%s read", fault_cases[i].fault);
		xfer(r, what, RD_BAL, fault_cases[i].rc, fault_cases[i].rd);
	}
	assert_int_equal(kp_reader_wait_card(r, &poll_transit, &info, 100), KP_HAL_E_END);
	kp_reader_close(r);
}

static void test_reader_faults_typeb(void **state)
{
	struct fx *f = *state;
	struct kp_reader *r = open_scn(f, "fb.txt", "card bob typeb pupi=A1B2C3D4\n"
	                               "tap +0 bob fault=len\ntap +1 bob fault=short\n"
	                               "tap +2 bob fault=silent\n");
	struct kp_card_info info;

	/* On an APDU reply the byte-level faults hit SW1 and SW2. */
	assert_int_equal(kp_reader_wait_card(r, &poll_transit, &info, 100), KP_HAL_OK);
	xfer(r, "typeb len", "00 A4 04 00 02 1234", KP_HAL_OK, "6B 82");
	assert_int_equal(kp_reader_wait_card(r, &poll_transit, &info, 100), KP_HAL_OK);
	xfer(r, "typeb short", "00 A4 04 00 02 1234", KP_HAL_OK, "6A");
	assert_int_equal(kp_reader_wait_card(r, &poll_transit, &info, 100), KP_HAL_OK);
	xfer(r, "typeb silent", "00 A4 04 00 02 1234", KP_HAL_E_TIMEOUT, NULL);
	kp_reader_close(r);
}

static void test_reader_overflow(void **state)
{
	struct fx *f = *state;
	struct kp_reader *r = open_scn(f, "ovf.txt", CARD_A "tap +0 alice\ntap +1 alice fault=long\n");
	struct kp_card_info info;
	uint8_t tx[32], rx[64];
	size_t tx_len, rx_len = 9;

	assert_int_equal(kp_reader_wait_card(r, &poll_transit, &info, 100), KP_HAL_OK);
	tx_len = tu_hex(RD_BAL, tx, sizeof(tx));
	assert_int_equal(kp_reader_transceive(r, tx, tx_len, rx, 28, &rx_len, 100),
	                 KP_HAL_E_OVERFLOW);
	assert_int_equal(rx_len, 0);
	assert_int_equal(kp_reader_transceive(r, tx, tx_len, rx, 29, &rx_len, 100), KP_HAL_OK);
	assert_int_equal(rx_len, 29);
	/* fault=long: the model's 11 bytes fit, the 13 that arrive do not. */
	assert_int_equal(kp_reader_wait_card(r, &poll_transit, &info, 100), KP_HAL_OK);
	tx_len = tu_hex(RR, tx, sizeof(tx));
	assert_int_equal(kp_reader_transceive(r, tx, tx_len, rx, 11, &rx_len, 100),
	                 KP_HAL_E_OVERFLOW);
	assert_int_equal(kp_reader_transceive(r, tx, tx_len, rx, 13, &rx_len, 100), KP_HAL_OK);
	assert_int_equal(rx_len, 13);
	/* Bad arguments. */
	assert_int_equal(kp_reader_transceive(r, NULL, 4, rx, 13, &rx_len, 100), KP_HAL_E_INVAL);
	assert_int_equal(kp_reader_transceive(r, tx, tx_len, NULL, 13, &rx_len, 100),
	                 KP_HAL_E_INVAL);
	assert_int_equal(kp_reader_transceive(r, tx, tx_len, rx, 13, NULL, 100), KP_HAL_E_INVAL);
	assert_int_equal(kp_reader_wait_card(r, NULL, &info, 100), KP_HAL_E_INVAL);
	assert_int_equal(kp_reader_wait_card(r, &poll_transit, NULL, 100), KP_HAL_E_INVAL);
	kp_reader_close(r);
}

/* Real pace is checked on the reader's own clock (start + the time since it was opened), and
 * only for "not before": a loaded machine may be late, never early. Taps are due seconds
 * after the open, so that the polls meant to come before them do even on a slow machine. */
static void test_reader_real_pace(void **state)
{
	struct fx *f = *state;
	struct kp_reader *r = open_scn(f, "real.txt", "pace real\nstart 1000\n" CARD_A
	                               "tap +2 alice\ntap +2 alice\n");
	struct kp_card_info info;
	int64_t v0 = kp_reader_now_ms(r);

	assert_true(v0 >= 1000000);
	/* Not due within 20 ms: NOCARD after the whole timeout, and the tap is kept. */
	assert_int_equal(kp_reader_wait_card(r, &poll_transit, &info, 20), KP_HAL_E_NOCARD);
	assert_true(kp_reader_now_ms(r) - v0 >= 20);
	/* Due within the timeout: the card, when it is due (at the timeout it would be NOCARD). */
	assert_int_equal(kp_reader_wait_card(r, &poll_transit, &info, 60000), KP_HAL_OK);
	assert_true(kp_reader_now_ms(r) >= 1000000 + 2000);
	tu_expect_hex("real idm", info.u.felica.idm, 8, IDM);
	/* Overdue: at once, even with a zero timeout. */
	assert_int_equal(kp_reader_wait_card(r, &poll_transit, &info, 0), KP_HAL_OK);
	assert_int_equal(kp_reader_wait_card(r, &poll_transit, &info, -1), KP_HAL_E_END);
	kp_reader_close(r);
}

static void test_reader_real_pace_linger(void **state)
{
	struct fx *f = *state;
	struct kp_reader *r = open_scn(f, "linger.txt", "pace real\nstart 1000\n" CARD_A
	                               "card bob typeb pupi=A1B2C3D4\n"
	                               "card carol typea uid=04112233\n"
	                               "tap +0 bob\ntap +2 carol\ntap +2.5 alice\n"
	                               "tap +3 bob\n");
	struct kp_card_info info;
	struct kp_poll fel = { KP_TECH_FELICA, 0xFFFF, 1 }, b = { KP_TECH_ISO14443B, 0, 0 };
	int64_t v;

	/* bob answers no FeliCa poll: a zero timeout returns NOCARD, and he stays (1 s)... */
	assert_int_equal(kp_reader_wait_card(r, &fel, &info, 0), KP_HAL_E_NOCARD);
	/* ...through a poll that waits 50 ms for a FeliCa card, */
	v = kp_reader_now_ms(r);
	assert_int_equal(kp_reader_wait_card(r, &fel, &info, 50), KP_HAL_E_NOCARD);
	assert_true(kp_reader_now_ms(r) - v >= 50);
	/* so the Type B poll finds him. */
	assert_int_equal(kp_reader_wait_card(r, &b, &info, 0), KP_HAL_OK);
	tu_expect_hex("lingering pupi", info.u.b.pupi, 4, "A1B2C3D4");
	/* carol (+2) is pushed out by alice (+2.5): a FeliCa poll with a long timeout waits
	 * through carol and returns alice, not before she is due. */
	assert_int_equal(kp_reader_wait_card(r, &fel, &info, 60000), KP_HAL_OK);
	assert_true(kp_reader_now_ms(r) >= 1000000 + 2500);
	tu_expect_hex("after carol", info.u.felica.idm, 8, IDM);
	/* bob (+3) is the last card: unanswered, he leaves 1 s after he came, then END. */
	assert_int_equal(kp_reader_wait_card(r, &fel, &info, -1), KP_HAL_E_END);
	assert_true(kp_reader_now_ms(r) >= 1000000 + 3000 + 1000);
	kp_reader_close(r);
}

static void test_reader_open_errors(void **state)
{
	struct fx *f = *state;
	struct kp_reader *r = (struct kp_reader *)1;
	const char *path = fx_write(f, "broken.txt", CARD_A "tap +0 bob\n");
	const char *log = fx_path(f, "stderr.txt");
	char conn[256], want[256], err[512], *out;
	int saved;

	/* The HAL prints nothing: what is wrong comes back in the caller's buffer. */
	snprintf(conn, sizeof(conn), "mock:%s", path);
	saved = capture_begin(2, log);
	assert_int_equal(kp_reader_open_err(&r, conn, err, sizeof(err)), KP_HAL_E_CONFIG);
	assert_null(r);
	snprintf(want, sizeof(want), "%s:2: tap of unknown card 'bob'", path);
	assert_string_equal(err, want);
	assert_int_equal(kp_reader_open_err(&r, "mock:/nonexistent/kp.txt", err, sizeof(err)),
	                 KP_HAL_E_CONFIG);
	assert_non_null(strstr(err, "/nonexistent/kp.txt: cannot open"));
	assert_int_equal(kp_reader_open_err(&r, "mock", err, sizeof(err)), KP_HAL_E_CONFIG);
	assert_non_null(strstr(err, "no scenario file"));
	assert_int_equal(kp_reader_open(&r, "mock:"), KP_HAL_E_CONFIG);
	assert_int_equal(kp_reader_open(&r, conn), KP_HAL_E_CONFIG);
	capture_end(2, saved);
	out = slurp(log);
	assert_string_equal(out, "");
	free(out);

	assert_int_equal(kp_reader_open(&r, "nosuch:x"), KP_HAL_E_CONFIG);
	assert_int_equal(kp_reader_open(&r, ":x"), KP_HAL_E_CONFIG);
	assert_int_equal(kp_reader_open(&r, ""), KP_HAL_E_CONFIG);
	assert_int_equal(kp_reader_open(&r, "averyveryveryverylongschemenamethatisnot:x"),
	                 KP_HAL_E_CONFIG);
	assert_int_equal(kp_reader_open(&r, NULL), KP_HAL_E_INVAL);
	assert_int_equal(kp_reader_open(NULL, "mock:x"), KP_HAL_E_INVAL);
	assert_null(r);
}

static void test_reader_describe(void **state)
{
	struct fx *f = *state;
	struct kp_reader *r = open_scn(f, "one.txt", CARD_A "tap +0 alice\n");
	char buf[64];

	assert_int_equal(kp_reader_describe(r, buf, sizeof(buf)), KP_HAL_OK);
	assert_string_equal(buf, "mock reader: scenario one.txt, 1 card, 1 tap");
	assert_int_equal(kp_reader_describe(r, buf, 10), KP_HAL_E_OVERFLOW);
	assert_string_equal(buf, "mock read");
	assert_int_equal(kp_reader_describe(r, NULL, 10), KP_HAL_E_INVAL);
	assert_int_equal(kp_reader_describe(r, buf, 0), KP_HAL_E_INVAL);
	kp_reader_close(r);
}

static void test_reader_default_start(void **state)
{
	struct fx *f = *state;
	struct kp_reader *r = open_scn(f, "def.txt", CARD_A "tap +3600.001 alice\n");
	struct kp_card_info info;

	assert_int_equal(kp_reader_now_ms(r), 1767225600000LL);
	assert_int_equal(kp_reader_wait_card(r, &poll_transit, &info, 0), KP_HAL_OK);
	assert_int_equal(kp_reader_now_ms(r), 1767225600000LL + 3600001);
	kp_reader_close(r);
}

/* ---- registry, NOTSUP, clock fallback ---- */

struct stub_reader {
	struct kp_reader base;
	char rest[64];
};

static int stub_open(struct kp_reader **out, const char *conn)
{
	struct stub_reader *s = calloc(1, sizeof(*s));

	if (s == NULL)
		return KP_HAL_E_NOMEM;
	snprintf(s->rest, sizeof(s->rest), "%s", conn);
	*out = &s->base;                  /* ops left NULL: kp_reader_open fills them in */
	return KP_HAL_OK;
}

static void stub_close(struct kp_reader *r)
{
	free(r);
}

static int stub_now_notsup(struct kp_reader *r, int64_t *ms)
{
	return KP_HAL_E_NOTSUP;
}

static int stub_now_fixed(struct kp_reader *r, int64_t *ms)
{
	*ms = 42;
	return KP_HAL_OK;
}

static int stub_open_fail(struct kp_reader **out, const char *conn)
{
	return KP_HAL_E_IO;
}

static const struct kp_reader_ops stub_ops = { .scheme = "stub", .open = stub_open,
                                               .close = stub_close };
static const struct kp_reader_ops stub_ops2 = { .scheme = "stub", .open = stub_open,
                                                .close = stub_close };
static const struct kp_reader_ops stub_clock_ops = {
	.scheme = "stubclock", .open = stub_open, .now_ms = stub_now_notsup, .close = stub_close
};
static const struct kp_reader_ops stub_fixed_ops = {
	.scheme = "stubfixed", .open = stub_open, .now_ms = stub_now_fixed, .close = stub_close
};
static const struct kp_reader_ops stub_fail_ops = { .scheme = "stubfail", .open = stub_open_fail };
static const struct kp_reader_ops fake_mock_ops = { .scheme = "mock", .open = stub_open };
static const struct kp_reader_ops colon_ops = { .scheme = "a:b", .open = stub_open };
static const struct kp_reader_ops empty_ops = { .scheme = "", .open = stub_open };
static const struct kp_reader_ops noopen_ops = { .scheme = "noopen" };

static void test_registry_notsup(void **state)
{
	struct kp_reader *r = NULL;
	struct kp_card_info info;
	uint8_t tx[2] = { 0, 0 }, rx[8];
	size_t rx_len = 3;
	char buf[32] = "junk";
	int64_t before, now, after;

	assert_int_equal(kp_reader_register(&stub_ops), KP_HAL_OK);
	assert_int_equal(kp_reader_register(&stub_ops), KP_HAL_OK); /* same table again */
	assert_int_equal(kp_reader_register(&stub_ops2), KP_HAL_E_INVAL);
	assert_int_equal(kp_reader_register(&fake_mock_ops), KP_HAL_E_INVAL);
	assert_int_equal(kp_reader_register(&kp_mock_reader_ops), KP_HAL_OK);
	assert_int_equal(kp_reader_register(&colon_ops), KP_HAL_E_INVAL);
	assert_int_equal(kp_reader_register(&empty_ops), KP_HAL_E_INVAL);
	assert_int_equal(kp_reader_register(&noopen_ops), KP_HAL_E_INVAL);
	assert_int_equal(kp_reader_register(NULL), KP_HAL_E_INVAL);
	assert_int_equal(kp_reader_register(&stub_clock_ops), KP_HAL_OK);
	assert_int_equal(kp_reader_register(&stub_fixed_ops), KP_HAL_OK);
	assert_int_equal(kp_reader_register(&stub_fail_ops), KP_HAL_OK);

	/* The backend gets what follows "scheme:", colons and all. */
	assert_int_equal(kp_reader_open(&r, "stub:pn532_uart:/dev/ttyUSB0"), KP_HAL_OK);
	assert_ptr_equal(r->ops, &stub_ops);
	assert_string_equal(((struct stub_reader *)r)->rest, "pn532_uart:/dev/ttyUSB0");
	assert_int_equal(kp_reader_wait_card(r, &poll_all, &info, 0), KP_HAL_E_NOTSUP);
	assert_int_equal(kp_reader_transceive(r, tx, 2, rx, sizeof(rx), &rx_len, 0),
	                 KP_HAL_E_NOTSUP);
	assert_int_equal(rx_len, 0);
	assert_int_equal(kp_reader_release(r, 1, 0), KP_HAL_E_NOTSUP);
	assert_int_equal(kp_reader_describe(r, buf, sizeof(buf)), KP_HAL_E_NOTSUP);
	assert_string_equal(buf, "");
	before = real_ms();
	now = kp_reader_now_ms(r);
	after = real_ms();
	assert_true(now >= before && now <= after);
	kp_reader_close(r);

	assert_int_equal(kp_reader_open(&r, "stub"), KP_HAL_OK);
	assert_string_equal(((struct stub_reader *)r)->rest, "");
	kp_reader_close(r);

	assert_int_equal(kp_reader_open(&r, "stubclock:x"), KP_HAL_OK);
	before = real_ms();
	now = kp_reader_now_ms(r);
	after = real_ms();
	assert_true(now >= before && now <= after);
	kp_reader_close(r);

	assert_int_equal(kp_reader_open(&r, "stubfixed:x"), KP_HAL_OK);
	assert_int_equal(kp_reader_now_ms(r), 42);
	kp_reader_close(r);

	assert_int_equal(kp_reader_open(&r, "stubfail:x"), KP_HAL_E_IO);
	assert_null(r);

	/* NULL handles. */
	before = real_ms();
	now = kp_reader_now_ms(NULL);
	assert_true(now >= before && now <= real_ms());
	assert_int_equal(kp_reader_wait_card(NULL, &poll_all, &info, 0), KP_HAL_E_INVAL);
	assert_int_equal(kp_reader_transceive(NULL, tx, 2, rx, sizeof(rx), &rx_len, 0),
	                 KP_HAL_E_INVAL);
	assert_int_equal(kp_reader_release(NULL, 0, 0), KP_HAL_E_INVAL);
	assert_int_equal(kp_reader_describe(NULL, buf, sizeof(buf)), KP_HAL_E_INVAL);
	kp_reader_close(NULL);
	(void)state;
}

/* ---- the spy reader (hal/spy_reader.c): a log and chosen answers around mock: ---- */

static void test_spy_reader(void **state)
{
	static const struct {
		const char *cfg, *msg;
	} bad[] = {
		{ "log x.log\n", "no \"inner mock:SCENARIO\" line" },
		{ "inner libnfc:pn532_uart:/dev/ttyUSB0\n", "wraps mock: readers only" },
		{ "inner spy:other.spy\n", "wraps mock: readers only" },
		{ "inner mock:scn.txt\nreply 0020008 9000\n", "want \"reply" },     /* odd hex */
		{ "inner mock:scn.txt\nreply 00200080 90\n", "want \"reply" },      /* 1-byte reply */
		{ "inner mock:scn.txt\nreply 00200080\n", "want \"reply" },
		{ "inner mock:scn.txt\nreply 00200080 9000 card=0\n", "want \"reply" },
		{ "inner mock:scn.txt\nreply 00200080 9000 times=x\n", "want \"reply" },
		{ "inner mock:scn.txt\nreply 00ZZ 9000\n", "want \"reply" },
		{ "inner mock:scn.txt\nforward all\n", "unknown line" },
		{ "inner mock:scn.txt\nlog a.log\nlog b.log\n", "given twice" },
	};
	struct fx *f = *state;
	struct kp_card_info info;
	struct kp_spy_stats st;
	struct kp_reader *r = NULL;
	char conn[300], *log;
	int saved;

	fx_write(f, "scn.txt", "start 2026-11-26T08:00:00+09:00\n"
	                       "card bob typeb pupi=A1B2C3D4\n"
	                       "card alice felica idm=0101020304050607\n"
	                       "tap +0 bob\ntap +1 bob\ntap +2 alice\n");
	fx_path(f, "a.log");
	fx_path(f, "x.log");
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		char err[512], *printed;

		snprintf(conn, sizeof(conn), "spy:%s", fx_write(f, "bad.spy", bad[i].cfg));
		f->n_files--;                          /* the same file each time */
		saved = capture_begin(2, fx_path(f, "spy.err"));
		f->n_files--;
		assert_int_equal(kp_reader_open_err(&r, conn, err, sizeof(err)), KP_HAL_E_CONFIG);
		capture_end(2, saved);
		assert_null(r);
		if (strstr(err, bad[i].msg) == NULL)
			fail_msg("spy config #%zu: \"%s\" not in: %s", i, bad[i].msg, err);
		printed = slurp(fx_path(f, "spy.err"));   /* the HAL prints nothing */
		f->n_files--;
		assert_string_equal(printed, "");
		free(printed);
	}
	fx_path(f, "bad.spy");
	fx_path(f, "spy.err");
	assert_int_equal(kp_reader_open(&r, "spy:"), KP_HAL_E_CONFIG);
	assert_int_equal(kp_reader_open(&r, "spy:/nonexistent/kippu.spy"), KP_HAL_E_CONFIG);

	/* SELECT answered by a rule in the 2nd session only, once; a VERIFY with a PIN masked;
	 * a prefix rule answering silence */
	snprintf(conn, sizeof(conn), "spy:%s",
	         fx_write(f, "ok.spy", "# the mock reader, with two answers of ours\n"
	                               "inner mock:scn.txt\nlog spy.log\n"
	                               "reply 00A4040C02AABB 9000 card=2 times=1\n"
	                               "reply 00B0* silent\n"));
	fx_path(f, "spy.log");
	assert_int_equal(kp_reader_open(&r, conn), KP_HAL_OK);
	assert_int_equal(kp_reader_wait_card(r, &poll_all, &info, 100), KP_HAL_OK);
	assert_int_equal(info.tech, KP_TECH_ISO14443B);
	xfer(r, "session 1: the card answers", "00A4040C02AABB", KP_HAL_OK, "6A82");
	xfer(r, "a PIN", "0020008004 31323334", KP_HAL_OK, "6D00");
	xfer(r, "prefix rule", "00B0000007", KP_HAL_E_TIMEOUT, NULL);
	assert_int_equal(kp_reader_release(r, 0, 0), KP_HAL_OK);
	assert_int_equal(kp_reader_wait_card(r, &poll_all, &info, 100), KP_HAL_OK);
	xfer(r, "session 2: the rule", "00A4040C02AABB", KP_HAL_OK, "9000");
	xfer(r, "session 2: used up", "00A4040C02AABB", KP_HAL_OK, "6A82");
	xfer(r, "longer than the exact match", "00A4040C02AABBCC", KP_HAL_OK, "6A82");
	assert_int_equal(kp_reader_release(r, 0, 0), KP_HAL_OK);
	assert_int_equal(kp_reader_wait_card(r, &poll_all, &info, 100), KP_HAL_OK);
	assert_int_equal(info.tech, KP_TECH_FELICA);
	xfer(r, "felica", "0A0401010203040506 07", KP_HAL_OK, "0B050101020304050607 00");
	assert_int_equal(kp_spy_stats(r, &st), KP_HAL_OK);
	tu_expect_row("sessions frames overridden verify_with_pin verify_sessions max_verify",
	              TU_INTS(st.sessions, st.frames, st.overridden, st.verify_with_pin,
	                      st.verify_sessions, st.max_verify_per_session),
	              TU_INTS(3, 7, 2, 1, 1, 1));
	assert_ptr_equal(kp_spy_inner(r)->ops, &kp_mock_reader_ops);
	assert_int_equal(kp_spy_stats(kp_spy_inner(r), &st), KP_HAL_E_NOTSUP);
	{
		char d[200];

		assert_int_equal(kp_reader_describe(r, d, sizeof(d)), KP_HAL_OK);
		assert_non_null(strstr(d, "spy around mock reader"));
	}
	kp_reader_close(r);
	log = slurp(fx_path(f, "spy.log"));
	f->n_files--;
	assert_non_null(strstr(log, "card 1 typeb\n> 00A4040C02 AABB\n< 6A82\n"
	                            "> 0020008004 ********\n< 6D00\n"
	                            "> 00B0000007\n< silent (no reply from the card in time) [spy]\n"
	                            "release\ncard 2 typeb\n> 00A4040C02 AABB\n< 9000 [spy]\n"));
	assert_non_null(strstr(log, "card 3 felica\n> felica 04 (10 bytes)\n< 11 bytes\n"));
	assert_null(strstr(log, "31323334"));      /* no PIN */
	assert_null(strstr(log, "A1B2C3D4"));      /* no PUPI */
	assert_null(strstr(log, "0102030405"));    /* no IDm */
	free(log);
}

struct stub_hmi {
	struct kp_hmi base;
};

static const struct kp_hmi_ops stub_hmi_ops;

static int stub_hmi_open(struct kp_hmi **out, const char *conn)
{
	struct stub_hmi *h = calloc(1, sizeof(*h));

	if (h == NULL)
		return KP_HAL_E_NOMEM;
	h->base.ops = &stub_hmi_ops;
	*out = &h->base;
	return KP_HAL_OK;
}

static void stub_hmi_close(struct kp_hmi *h)
{
	free(h);
}

static const struct kp_hmi_ops stub_hmi_ops = { .scheme = "stubhmi", .open = stub_hmi_open,
                                                .close = stub_hmi_close };
static const struct kp_hmi_ops fake_mock_hmi_ops = { .scheme = "mock", .open = stub_hmi_open };

static void test_hmi_registry_notsup(void **state)
{
	struct kp_hmi *h = NULL;
	struct kp_hmi_msg msg = { KP_HMI_ACCEPTED, "ok", "ok", NULL, -1, 0 };

	assert_int_equal(kp_hmi_register(&stub_hmi_ops), KP_HAL_OK);
	assert_int_equal(kp_hmi_register(&fake_mock_hmi_ops), KP_HAL_E_INVAL);
	assert_int_equal(kp_hmi_register(NULL), KP_HAL_E_INVAL);
	assert_int_equal(kp_hmi_open(&h, "stubhmi"), KP_HAL_OK);
	assert_int_equal(kp_hmi_show(h, &msg), KP_HAL_E_NOTSUP);
	assert_int_equal(kp_hmi_beep(h, KP_BEEP_OK), KP_HAL_E_NOTSUP);
	assert_int_equal(kp_hmi_led(h, KP_LED_GREEN), KP_HAL_E_NOTSUP);
	assert_int_equal(kp_mock_hmi_count(h), 0);
	assert_null(kp_mock_hmi_event(h, 0));
	kp_hmi_close(h);
	assert_int_equal(kp_hmi_open(&h, "nosuch:x"), KP_HAL_E_CONFIG);
	assert_null(h);
	assert_int_equal(kp_hmi_open(&h, NULL), KP_HAL_E_INVAL);
	assert_int_equal(kp_hmi_show(NULL, &msg), KP_HAL_E_INVAL);
	assert_int_equal(kp_hmi_beep(NULL, KP_BEEP_OK), KP_HAL_E_INVAL);
	assert_int_equal(kp_hmi_led(NULL, KP_LED_OFF), KP_HAL_E_INVAL);
	kp_hmi_close(NULL);
	(void)state;
}

/* ---- mock HMI ---- */

static void hmi_script(struct kp_hmi *h)
{
	struct kp_hmi_msg ok = { KP_HMI_ACCEPTED, "ok", "Have a nice trip", "pass-1d", 3,
	                         START_MS };
	struct kp_hmi_msg bad = { KP_HMI_REFUSED, "deny listed", "Card blocked\nsee staff\r",
	                          "", -1, 5 };
	struct kp_hmi_msg info = { KP_HMI_INFO, NULL, "\t210 yen", NULL, -1, -7 };

	assert_int_equal(kp_hmi_show(h, &ok), KP_HAL_OK);
	assert_int_equal(kp_hmi_beep(h, KP_BEEP_OK), KP_HAL_OK);
	assert_int_equal(kp_hmi_led(h, KP_LED_GREEN), KP_HAL_OK);
	assert_int_equal(kp_hmi_show(h, &bad), KP_HAL_OK);
	assert_int_equal(kp_hmi_beep(h, KP_BEEP_ERROR), KP_HAL_OK);
	assert_int_equal(kp_hmi_led(h, KP_LED_RED), KP_HAL_OK);
	assert_int_equal(kp_hmi_show(h, &info), KP_HAL_OK);
	assert_int_equal(kp_hmi_beep(h, KP_BEEP_NOTICE), KP_HAL_OK);
	assert_int_equal(kp_hmi_led(h, KP_LED_OFF), KP_HAL_OK);
}

static const char hmi_lines[] =
	"show 1795647600000 accepted ok pass-1d 3 Have a nice trip\n"
	"beep ok\n"
	"led green\n"
	"show 5 refused deny_listed - -1 Card blocked see staff \n"
	"beep error\n"
	"led red\n"
	"show -7 info - - -1  210 yen\n"
	"beep notice\n"
	"led off\n";

static void test_hmi_memory(void **state)
{
	struct kp_hmi *h = NULL;
	const struct kp_hmi_event *e;
	struct kp_hmi_msg m = { KP_HMI_ALREADY, "already", "x", NULL, 0, 0 };
	char big[200];

	assert_int_equal(kp_hmi_open(&h, "mock"), KP_HAL_OK);
	hmi_script(h);
	assert_int_equal(kp_mock_hmi_count(h), 9);
	e = kp_mock_hmi_event(h, 0);
	assert_string_equal(e->kind, "show");
	assert_int_equal(e->result, KP_HMI_ACCEPTED);
	assert_string_equal(e->reason, "ok");
	assert_string_equal(e->product, "pass-1d");
	assert_int_equal(e->rides_left, 3);
	assert_int_equal(e->time_ms, START_MS);
	assert_string_equal(e->text, "Have a nice trip");
	e = kp_mock_hmi_event(h, 1);
	assert_string_equal(e->kind, "beep");
	assert_int_equal(e->value, KP_BEEP_OK);
	e = kp_mock_hmi_event(h, 5);
	assert_string_equal(e->kind, "led");
	assert_int_equal(e->value, KP_LED_RED);
	e = kp_mock_hmi_event(h, 3);
	assert_string_equal(e->text, "Card blocked\nsee staff\r"); /* memory keeps the text */
	assert_string_equal(e->product, "");
	assert_null(kp_mock_hmi_event(h, 9));

	/* Bad values are refused and not recorded. */
	m.result = (enum kp_hmi_result)0;
	assert_int_equal(kp_hmi_show(h, &m), KP_HAL_E_INVAL);
	m.result = (enum kp_hmi_result)5;
	assert_int_equal(kp_hmi_show(h, &m), KP_HAL_E_INVAL);
	assert_int_equal(kp_hmi_show(h, NULL), KP_HAL_E_INVAL);
	assert_int_equal(kp_hmi_beep(h, (enum kp_beep)0), KP_HAL_E_INVAL);
	assert_int_equal(kp_hmi_beep(h, (enum kp_beep)4), KP_HAL_E_INVAL);
	assert_int_equal(kp_hmi_led(h, (enum kp_led)5), KP_HAL_E_INVAL);
	assert_int_equal(kp_hmi_led(h, (enum kp_led)-1), KP_HAL_E_INVAL);
	assert_int_equal(kp_mock_hmi_count(h), 9);

	/* Long texts are cut at a UTF-8 character boundary; many events grow the array. */
	big[0] = '\0';
	for (int i = 0; i < 60; i++)
		strcat(big, "\xE3\x81\x82"); /* "a" in hiragana, 3 bytes */
	m.result = KP_HMI_ALREADY;
	m.text = big;
	m.reason = "a-reason-much-longer-than-thirty-one-bytes";
	for (int i = 0; i < 100; i++)
		assert_int_equal(kp_hmi_show(h, &m), KP_HAL_OK);
	assert_int_equal(kp_mock_hmi_count(h), 109);
	e = kp_mock_hmi_event(h, 108);
	assert_int_equal(strlen(e->text), 126);
	assert_memory_equal(e->text, big, 126);
	assert_int_equal(strlen(e->reason), 31);
	assert_int_equal(kp_mock_hmi_count(NULL), 0);
	kp_hmi_close(h);
}

/* With an output file the lines are the record: the memory keeps only the last 1024
 * events (a terminal on the mock HMI for a week offline must not grow), the count is of
 * every event, and every line is in the file. Memory only, every event stays. */
static void test_hmi_file_ring(void **state)
{
	struct fx *f = *state;
	const char *path = fx_path(f, "ring.log");
	char conn[200], line[256];
	struct kp_hmi *h = NULL;
	struct kp_hmi_msg m;
	size_t lines = 0;
	FILE *fp;

	memset(&m, 0, sizeof(m));
	m.result = KP_HMI_ACCEPTED;
	m.reason = "ok";
	m.text = "OK";
	snprintf(conn, sizeof(conn), "mock:%s", path);
	assert_int_equal(kp_hmi_open(&h, conn), KP_HAL_OK);
	for (int i = 0; i < 5000; i++) {
		m.time_ms = i;
		assert_int_equal(kp_hmi_show(h, &m), KP_HAL_OK);
	}
	assert_int_equal(kp_mock_hmi_count(h), 5000);
	assert_null(kp_mock_hmi_event(h, 0));
	assert_null(kp_mock_hmi_event(h, 5000 - 1025));
	assert_int_equal(kp_mock_hmi_event(h, 5000 - 1024)->time_ms, 5000 - 1024);
	assert_int_equal(kp_mock_hmi_event(h, 4999)->time_ms, 4999);
	assert_null(kp_mock_hmi_event(h, 5000));
	kp_hmi_close(h);
	fp = fopen(path, "r");
	assert_non_null(fp);
	while (fgets(line, sizeof(line), fp) != NULL)
		lines++;
	fclose(fp);
	assert_int_equal(lines, 5000);

	assert_int_equal(kp_hmi_open(&h, "mock"), KP_HAL_OK);
	for (int i = 0; i < 3000; i++) {
		m.time_ms = i;
		assert_int_equal(kp_hmi_show(h, &m), KP_HAL_OK);
	}
	assert_int_equal(kp_mock_hmi_event(h, 0)->time_ms, 0);
	assert_int_equal(kp_mock_hmi_event(h, 2999)->time_ms, 2999);
	kp_hmi_close(h);
}

static void test_hmi_file(void **state)
{
	struct fx *f = *state;
	const char *path = fx_path(f, "hmi.log"), *log = fx_path(f, "stderr.txt");
	char conn[200], *out, want[2048], err[512];
	struct kp_hmi *h = NULL;
	int saved;

	snprintf(conn, sizeof(conn), "mock:%s", path);
	assert_int_equal(kp_hmi_open(&h, conn), KP_HAL_OK);
	assert_int_equal(kp_hmi_beep(h, KP_BEEP_OK), KP_HAL_OK);
	/* Flushed per line: the line is there before close. */
	out = slurp(path);
	assert_string_equal(out, "beep ok\n");
	free(out);
	kp_hmi_close(h);

	/* Opening again appends. */
	assert_int_equal(kp_hmi_open(&h, conn), KP_HAL_OK);
	hmi_script(h);
	assert_int_equal(kp_mock_hmi_count(h), 9);
	out = slurp(path);
	snprintf(want, sizeof(want), "beep ok\n%s", hmi_lines);
	assert_string_equal(out, want);
	free(out);
	kp_hmi_close(h);

	saved = capture_begin(2, log);
	assert_int_equal(kp_hmi_open_err(&h, "mock:/nonexistent/dir/hmi.log", err, sizeof(err)),
	                 KP_HAL_E_CONFIG);
	assert_int_equal(kp_hmi_open(&h, "mock:/nonexistent/dir/hmi.log"), KP_HAL_E_CONFIG);
	capture_end(2, saved);
	assert_null(h);
	assert_non_null(strstr(err, "mock hmi: cannot open /nonexistent/dir/hmi.log"));
	out = slurp(log);
	assert_string_equal(out, "");       /* the HAL prints nothing */
	free(out);
}

static void test_hmi_stdout(void **state)
{
	struct fx *f = *state;
	const char *path = fx_path(f, "stdout.txt");
	struct kp_hmi *h = NULL;
	char *out;
	int saved;

	assert_int_equal(kp_hmi_open(&h, "mock:-"), KP_HAL_OK);
	saved = capture_begin(1, path);
	hmi_script(h);
	capture_end(1, saved);
	kp_hmi_close(h);
	out = slurp(path);
	assert_string_equal(out, hmi_lines);
	free(out);
}

/* ---- strings ---- */

static void test_names(void **state)
{
	static const int codes[] = { KP_HAL_OK, KP_HAL_E_IO, KP_HAL_E_TIMEOUT, KP_HAL_E_NOCARD,
	                             KP_HAL_E_NOTSUP, KP_HAL_E_INVAL, KP_HAL_E_NOMEM,
	                             KP_HAL_E_CONFIG, KP_HAL_E_OVERFLOW, KP_HAL_E_END };
	size_t n = sizeof(codes) / sizeof(codes[0]);

	for (size_t i = 0; i < n; i++) {
		assert_non_null(kp_hal_strerror(codes[i]));
		assert_string_not_equal(kp_hal_strerror(codes[i]), "unknown HAL error");
		for (size_t j = 0; j < i; j++)
			assert_string_not_equal(kp_hal_strerror(codes[i]), kp_hal_strerror(codes[j]));
	}
	assert_string_equal(kp_hal_strerror(-1), "unknown HAL error");
	assert_string_equal(kp_hal_strerror(1), "unknown HAL error");
	assert_string_equal(kp_hmi_result_name(KP_HMI_ACCEPTED), "accepted");
	assert_string_equal(kp_hmi_result_name(KP_HMI_REFUSED), "refused");
	assert_string_equal(kp_hmi_result_name(KP_HMI_ALREADY), "already");
	assert_string_equal(kp_hmi_result_name(KP_HMI_INFO), "info");
	assert_string_equal(kp_hmi_result_name((enum kp_hmi_result)9), "unknown");
	assert_string_equal(kp_led_name(KP_LED_OFF), "off");
	assert_string_equal(kp_led_name(KP_LED_GREEN), "green");
	assert_string_equal(kp_led_name(KP_LED_RED), "red");
	assert_string_equal(kp_led_name(KP_LED_AMBER), "amber");
	assert_string_equal(kp_led_name(KP_LED_BLUE), "blue");
	assert_string_equal(kp_led_name((enum kp_led)9), "unknown");
	assert_string_equal(kp_beep_name(KP_BEEP_OK), "ok");
	assert_string_equal(kp_beep_name(KP_BEEP_ERROR), "error");
	assert_string_equal(kp_beep_name(KP_BEEP_NOTICE), "notice");
	assert_string_equal(kp_beep_name((enum kp_beep)0), "unknown");
	(void)state;
}

#define FX(t) cmocka_unit_test_setup_teardown(t, fx_setup, fx_teardown)

int main(void)
{
	const struct CMUnitTest tests[] = {
		FX(test_scn_good),
		FX(test_scn_times),
		FX(test_scn_errors),
		FX(test_scn_history_limit),
		FX(test_scn_long_line),
		FX(test_scn_misc),
		FX(test_reader_flow),
		FX(test_reader_poll_mismatch),
		FX(test_reader_release_removes_lingering),
		FX(test_reader_request_codes),
		FX(test_reader_faults),
		FX(test_reader_faults_typeb),
		FX(test_reader_overflow),
		FX(test_reader_real_pace),
		FX(test_reader_real_pace_linger),
		FX(test_reader_open_errors),
		FX(test_reader_describe),
		FX(test_spy_reader),
		FX(test_reader_default_start),
		cmocka_unit_test(test_registry_notsup),
		cmocka_unit_test(test_hmi_registry_notsup),
		cmocka_unit_test(test_hmi_memory),
		FX(test_hmi_file),
		FX(test_hmi_file_ring),
		FX(test_hmi_stdout),
		cmocka_unit_test(test_names),
		cmocka_unit_test(test_time_parse_strict),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
