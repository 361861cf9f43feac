/* SPDX-License-Identifier: Apache-2.0 */
/* Period passes (1-day, multi-day, monthly = 30 days): fixed validity or started by the
 * first tap, over service days that end at service_day_end local time (04:00 JST), used
 * before rides and stored value, charging nothing. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <cmocka.h>
#include <sqlite3.h>

#include "kp_terminal.h"
#include "kp_tools.h"
#include "fixtures.h"
#include "testutil.h"

#define MIN (60LL * 1000)

static int64_t at(const char *iso)
{
	int64_t ms = 0;

	assert_int_equal(kp_parse_time(iso, &ms), KP_OK);
	return ms;
}

static void load(struct tu_term *f, const char *text)
{
	char path[300], err[512] = "";
	size_t n = 0;

	snprintf(path, sizeof(path), "%s/load.txt", f->dir);
	tu_write(path, text);
	if (kp_load_file(f->s, path, f->token_key, err, sizeof(err), &n) != KP_OK)
		fail_msg("load: %s", err);
}

static int setup(void **state)
{
	struct tu_term *f = tu_term_new("T-1", "OP-A", 0x5A);

	f->cfg.double_tap_window_ms = 60000;
	load(f, "operator OP-A Operator A\n"
	        "operator OP-B Operator B\n"
	        "product DAY1 period 1 OP-A,OP-B 1-day pass\n"
	        "product DAY3 period 3 OP-A 3-day pass\n"
	        "product P10 nride 10 OP-A 10 rides\n"
	        "product SV stored OP-A Scheme account\n");
	tu_term_engine(f);
	*state = f;
	return 0;
}

static void tap(struct tu_term *f, uint8_t card, const char *iso, enum kp_tap_kind kind,
                const char *reason, struct kp_tap_outcome *o)
{
	uint8_t token[KP_TOKEN_LEN];

	tu_term_token(f, card, token);
	assert_int_equal(kp_tap_decide(f->e, token, at(iso), o), KP_OK);
	assert_string_equal(o->reason, reason);
	assert_int_equal(o->kind, kind);
}

static void get(struct tu_term *f, uint8_t card, int64_t id, struct kp_entitlement *e)
{
	uint8_t token[KP_TOKEN_LEN];

	tu_term_token(f, card, token);
	assert_int_equal(kp_store_get_entitlement(f->s, token, id, e), KP_OK);
}

static void test_service_day(void **state)
{
	struct tu_term *f = *state;
	int64_t from, until;

	kp_service_days(&f->cfg, at("2026-11-18T10:00:00+09:00"), 1, &from, &until);
	assert_true(from == at("2026-11-18T04:00:00+09:00"));
	assert_true(until == at("2026-11-19T04:00:00+09:00"));
	/* 01:30 belongs to the previous service day */
	kp_service_days(&f->cfg, at("2026-11-19T01:30:00+09:00"), 3, &from, &until);
	assert_true(from == at("2026-11-18T04:00:00+09:00"));
	assert_true(until == at("2026-11-21T04:00:00+09:00"));
	kp_service_days(&f->cfg, at("2026-11-19T04:00:00+09:00"), 1, &from, &until);
	assert_true(from == at("2026-11-19T04:00:00+09:00"));
}

/* Activated at 10:00 JST: valid at 23:59 and 03:59 the next morning, expired at 04:00;
 * the activation is journalled once and a second tap does not move the start. */
static void test_first_use_one_day(void **state)
{
	struct tu_term *f = *state;
	struct kp_tap_outcome o;
	struct kp_entitlement e;
	int64_t n = 0;

	load(f, "entitlement 1 felica:0101020304050601 DAY1 first-use"
	        " 2026-11-01T00:00:00+09:00 2026-12-01T00:00:00+09:00\n");
	get(f, 1, 1, &e);
	assert_int_equal(e.first_use, 1);
	tap(f, 1, "2026-10-31T12:00:00+09:00", KP_TAP_REFUSED, "not-yet-valid", &o);
	tap(f, 1, "2026-11-18T10:00:00+09:00", KP_TAP_ACCEPTED, "activated", &o);
	assert_string_equal(o.product, "DAY1");
	assert_int_equal(o.amount, 0);
	assert_int_equal(o.rides_left, -1);
	assert_true(o.valid_until_ms == at("2026-11-19T04:00:00+09:00"));
	assert_string_equal(o.until_text, "04:00");
	get(f, 1, 1, &e);
	assert_int_equal(e.first_use, 0);
	assert_true(e.valid_from_ms == at("2026-11-18T04:00:00+09:00"));
	assert_true(e.valid_until_ms == at("2026-11-19T04:00:00+09:00"));
	tap(f, 1, "2026-11-18T23:59:00+09:00", KP_TAP_ACCEPTED, "ok", &o);
	assert_true(o.valid_until_ms == at("2026-11-19T04:00:00+09:00"));
	tap(f, 1, "2026-11-19T03:59:00+09:00", KP_TAP_ACCEPTED, "ok", &o);
	get(f, 1, 1, &e);
	assert_true(e.valid_from_ms == at("2026-11-18T04:00:00+09:00"));
	tap(f, 1, "2026-11-19T04:00:00+09:00", KP_TAP_REFUSED, "expired", &o);
	assert_int_equal(kp_store_count(f->s, "journal", &n), KP_OK);
	assert_int_equal(n, 5);
}

static void test_fixed_three_day(void **state)
{
	struct tu_term *f = *state;
	struct kp_tap_outcome o;

	load(f, "entitlement 2 felica:0101020304050602 DAY3 0"
	        " 2026-11-18T04:00:00+09:00 2026-11-21T04:00:00+09:00\n");
	tap(f, 2, "2026-11-18T03:59:00+09:00", KP_TAP_REFUSED, "not-yet-valid", &o);
	tap(f, 2, "2026-11-18T04:00:00+09:00", KP_TAP_ACCEPTED, "ok", &o);
	assert_string_equal(o.until_text, "2026-11-21 04:00");
	tap(f, 2, "2026-11-21T03:59:00+09:00", KP_TAP_ACCEPTED, "ok", &o);
	assert_string_equal(o.until_text, "04:00");
	tap(f, 2, "2026-11-21T04:00:00+09:00", KP_TAP_REFUSED, "expired", &o);
	/* valid on OP-A only */
	snprintf(f->cfg.operator_id, sizeof(f->cfg.operator_id), "OP-B");
	kp_tap_engine_close(f->e);
	assert_int_equal(kp_tap_engine_open(&f->e, f->s, &f->cfg, f->key, f->token_key), KP_OK);
	tap(f, 2, "2026-11-19T12:00:00+09:00", KP_TAP_REFUSED, "wrong-operator", &o);
}

/* A pass goes before an N-ride ticket and before stored value: neither is touched. */
static void test_pass_preferred(void **state)
{
	struct tu_term *f = *state;
	struct kp_tap_outcome o;
	struct kp_entitlement e;

	load(f, "entitlement 10 felica:0101020304050603 P10 5"
	        " 2026-11-01T00:00:00+09:00 2026-12-01T00:00:00+09:00\n"
	        "entitlement 11 felica:0101020304050603 SV 1000"
	        " 2026-11-01T00:00:00+09:00 2026-12-01T00:00:00+09:00\n"
	        "entitlement 12 felica:0101020304050603 DAY1 first-use"
	        " 2026-11-01T00:00:00+09:00 2026-12-01T00:00:00+09:00\n");
	tap(f, 3, "2026-11-18T10:00:00+09:00", KP_TAP_ACCEPTED, "activated", &o);
	assert_string_equal(o.product, "DAY1");
	assert_int_equal(o.entitlement, 12);
	tap(f, 3, "2026-11-18T18:00:00+09:00", KP_TAP_ACCEPTED, "ok", &o);
	assert_string_equal(o.product, "DAY1");
	get(f, 3, 10, &e);
	assert_int_equal(e.rides_left, 5);
	get(f, 3, 11, &e);
	assert_int_equal(e.rides_left, 1000);
	/* the pass over, the ride is next */
	tap(f, 3, "2026-11-19T05:00:00+09:00", KP_TAP_ACCEPTED, "ok", &o);
	assert_string_equal(o.product, "P10");
	assert_int_equal(o.rides_left, 4);
	assert_int_equal(o.valid_until_ms, 0);
}

/* The activation commits with its journal record or not at all. */
static void test_failed_commit_leaves_pass_unactivated(void **state)
{
	struct tu_term *f = *state;
	struct kp_tap_outcome o;
	struct kp_entitlement e;
	uint8_t token[KP_TOKEN_LEN];
	sqlite3 *raw = NULL;
	int64_t n = 0;

	load(f, "entitlement 1 felica:0101020304050601 DAY1 first-use"
	        " 2026-11-01T00:00:00+09:00 2026-12-01T00:00:00+09:00\n");
	assert_int_equal(sqlite3_open(f->db, &raw), SQLITE_OK);
	sqlite3_busy_timeout(raw, 0);
	kp_store_set_busy_timeout(f->s, 20);
	assert_int_equal(sqlite3_exec(raw, "BEGIN IMMEDIATE", NULL, NULL, NULL), SQLITE_OK);
	tu_term_token(f, 1, token);
	assert_int_not_equal(kp_tap_decide(f->e, token, at("2026-11-18T10:00:00+09:00"), &o), KP_OK);
	sqlite3_exec(raw, "ROLLBACK", NULL, NULL, NULL);
	sqlite3_close(raw);
	get(f, 1, 1, &e);
	assert_int_equal(e.first_use, 1);
	assert_true(e.valid_from_ms == at("2026-11-01T00:00:00+09:00"));
	assert_int_equal(kp_store_count(f->s, "journal", &n), KP_OK);
	assert_int_equal(n, 0);
	/* A failure after the activation's UPDATE (the journal insert refused) rolls it back. */
	assert_int_equal(sqlite3_open(f->db, &raw), SQLITE_OK);
	assert_int_equal(sqlite3_exec(raw, "CREATE TRIGGER no_journal BEFORE INSERT ON journal"
	                                   " BEGIN SELECT RAISE(ABORT, 'test'); END",
	                              NULL, NULL, NULL), SQLITE_OK);
	assert_int_not_equal(kp_tap_decide(f->e, token, at("2026-11-18T11:00:00+09:00"), &o), KP_OK);
	assert_int_equal(sqlite3_exec(raw, "DROP TRIGGER no_journal", NULL, NULL, NULL), SQLITE_OK);
	sqlite3_close(raw);
	get(f, 1, 1, &e);
	assert_int_equal(e.first_use, 1);
	assert_int_equal(kp_store_count(f->s, "journal", &n), KP_OK);
	assert_int_equal(n, 0);
	/* the next day the first tap starts it then */
	tap(f, 1, "2026-11-19T09:00:00+09:00", KP_TAP_ACCEPTED, "activated", &o);
	assert_true(o.valid_until_ms == at("2026-11-20T04:00:00+09:00"));
}

static void test_load_errors(void **state)
{
	struct tu_term *f = *state;
	char path[300], err[512] = "";
	size_t n = 0;

	snprintf(path, sizeof(path), "%s/bad.txt", f->dir);
	tu_write(path, "product M period 367 OP-A month\n");
	assert_int_equal(kp_load_file(f->s, path, f->token_key, err, sizeof(err), &n), KP_E_PARSE);
	assert_non_null(strstr(err, ":1: period days must be 1 to 366"));
	tu_write(path, "product M30 period 30 OP-A monthly\n"
	               "entitlement 1 felica:0101020304050601 P10 first-use"
	               " 2026-11-01T00:00:00Z 2026-12-01T00:00:00Z\n");
	assert_int_equal(kp_load_file(f->s, path, f->token_key, err, sizeof(err), &n), KP_E_PARSE);
	assert_non_null(strstr(err, ":2: first-use: the product must be a period pass"));
}

/* Terminal configs refused, and the start of what the error says. */
static const char *const bad_conf[][2] = {
	{ "terminal_id = T-1\nutc_offset = 09:00\n", "t.conf:2: utc_offset:" },
	{ "utc_offset = +15:00\n", "t.conf:1: utc_offset:" },
	{ "\n\nservice_day_end = 24:00\n", "t.conf:3: service_day_end:" },
	{ "service_day_end = 4:00\n", "t.conf:1: service_day_end:" },
	/* backend addresses: the bad one named */
	{ "backend = a:1, b:99999\n", "t.conf:1: backend: 'b:99999' is not HOST:PORT" },
	{ "backend = a:1,,b:2\n", "t.conf:1: backend: '' is not HOST:PORT (port 1 to 65535): "
	  "an empty address" },
	{ "backend = a:1, b\n", "t.conf:1: backend: 'b' is not HOST:PORT" },
	{ "backend = a:1, b c:2\n", "t.conf:1: backend: 'b c:2' is not HOST:PORT" },
	{ "backend = a:1, a:1\n", "t.conf:1: backend: a:1 is listed twice" },
	{ "backend = a:1,b:1,c:1,d:1,e:1,f:1,g:1,h:1,i:1\n", "t.conf:1: backend: at most 8" },
};

static void test_config(void **state)
{
	struct tu_term *f = *state;
	struct kp_terminal_cfg cfg;
	char path[300], err[512] = "";

	kp_terminal_cfg_defaults(&cfg);
	assert_int_equal(cfg.utc_offset_s, 9 * 3600);
	assert_int_equal(cfg.service_day_end_s, 4 * 3600);
	snprintf(path, sizeof(path), "%s/t.conf", f->dir);
	tu_write(path, "utc_offset = -05:30\nservice_day_end = 03:15\n");
	assert_int_equal(kp_terminal_cfg_load(&cfg, path, err, sizeof(err)), KP_OK);
	assert_int_equal(cfg.utc_offset_s, -(5 * 3600 + 30 * 60));
	assert_int_equal(cfg.service_day_end_s, 3 * 3600 + 15 * 60);
	tu_write(path, "backend = 10.0.0.1:7443 ,backend-2.example:7443,  localhost:7443\n");
	assert_int_equal(kp_terminal_cfg_load(&cfg, path, err, sizeof(err)), KP_OK);
	assert_int_equal(cfg.n_backends, 3);
	assert_string_equal(cfg.backends[0].host, "10.0.0.1");
	assert_string_equal(cfg.backends[1].host, "backend-2.example");
	assert_string_equal(cfg.backends[1].port, "7443");
	assert_string_equal(cfg.backends[2].host, "localhost");
	for (size_t i = 0; i < sizeof(bad_conf) / sizeof(bad_conf[0]); i++) {
		tu_write(path, bad_conf[i][0]);
		err[0] = '\0';
		if (kp_terminal_cfg_load(&cfg, path, err, sizeof(err)) != KP_E_CONFIG ||
		    strstr(err, bad_conf[i][1]) == NULL)
			fail_msg("%s: not refused with '%s' (%s)", bad_conf[i][0], bad_conf[i][1], err);
	}
}

/* The tests below run between setup and tu_term_teardown unless their row names others. */
#define FX_TEST(test) cmocka_unit_test_setup_teardown(test, setup, tu_term_teardown)

int main(void)
{
	const struct CMUnitTest tests[] = {
		FX_TEST(test_service_day),
		FX_TEST(test_first_use_one_day),
		FX_TEST(test_fixed_three_day),
		FX_TEST(test_pass_preferred),
		FX_TEST(test_failed_commit_leaves_pass_unactivated),
		FX_TEST(test_load_errors),
		FX_TEST(test_config),
	};

	return cmocka_run_group_tests_name("pass", tests, NULL, NULL);
}
