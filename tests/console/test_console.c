/* SPDX-License-Identifier: Apache-2.0 */
/* The console's parts without a screen: the JA/EN texts, the console settings, driver
 * actions journaled and signed with the driver's id, the shift summary computed from the
 * journal (also after a restart), and the event stream against the journal (every record
 * once, in order, no card id), to a file and to a path that cannot be written. The screen
 * itself is tested in tmux by tests/console/test_console_tmux.sh. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>
#include <jansson.h>

#include "kp_terminal.h"
#include "kp_console.h"
#include "fixtures.h"
#include "testutil.h"

#define T0 1795651200000LL           /* 2026-11-26T09:00:00+09:00 */

static void put_ent(struct tu_term *f, uint8_t card, int64_t id, const char *product, int64_t left)
{
	tu_term_put_ent(f, card, id, product, left, T0 - 86400000LL, T0 + 86400000LL);
}

static int setup(void **state)
{
	struct tu_term *f = tu_term_new("BUS-1", "OP-A", 0x5A);
	const char *a[] = { "OP-A" };
	uint8_t token[KP_TOKEN_LEN];

	f->cfg.double_tap_window_ms = 60000;
	assert_int_equal(kp_store_begin(f->s), KP_OK);
	assert_int_equal(kp_store_put_operator(f->s, "OP-A", "Operator A"), KP_OK);
	assert_int_equal(kp_store_put_product(f->s, "P10", "10 rides", 10, a, 1), KP_OK);
	assert_int_equal(kp_store_put_product_cat(f->s, "KIDS", "child rides", 10, "child", a, 1),
	                 KP_OK);
	put_ent(f, 0x07, 1, "P10", 3);
	put_ent(f, 0xF0, 2, "KIDS", 4);
	tu_term_token(f, 0xF0, token);
	assert_int_equal(kp_store_put_eligibility(f->s, token, "child", T0 - 86400000LL,
	                                          T0 + 86400000LL, NULL), KP_OK);
	tu_term_token(f, 0xC0, token);
	assert_int_equal(kp_store_put_denylist(f->s, token, "lost", T0 - 1000), KP_OK);
	assert_int_equal(kp_store_commit(f->s), KP_OK);
	tu_term_engine(f);
	*state = f;
	return 0;
}

static void decide(struct tu_term *f, uint8_t card, int64_t now, const char *reason)
{
	uint8_t token[KP_TOKEN_LEN];
	struct kp_tap_outcome o;

	tu_term_token(f, card, token);
	assert_int_equal(kp_tap_decide(f->e, token, now, &o), KP_OK);
	assert_string_equal(o.reason, reason);
}

/* A driver's shift: start, taps of an adult, a child, a denylisted card and a double tap,
 * an override of a card without a ticket, a refusal, the end. */
static void shift(struct tu_term *f)
{
	uint8_t token[KP_TOKEN_LEN];

	assert_int_equal(kp_driver_journal(f->e, "shift", "start", "shift", "D042", NULL, NULL,
	                                   T0, NULL), KP_OK);
	decide(f, 0x07, T0 + 1000, "ok");
	decide(f, 0xF0, T0 + 2000, "ok");
	decide(f, 0xC0, T0 + 3000, "denylisted");
	decide(f, 0x07, T0 + 4000, "already");
	decide(f, 0xD0, T0 + 5000, "no-entitlement");
	tu_term_token(f, 0xD0, token);
	assert_int_equal(kp_driver_journal(f->e, "tap", "accepted", "override-paper-pass", "D042",
	                                   token, NULL, T0 + 6000, NULL), KP_OK);
	assert_int_equal(kp_driver_journal(f->e, "tap", "refused", "driver-refused", "D042",
	                                   NULL, NULL, T0 + 7000, NULL), KP_OK);
}

static long count(const struct kp_summary_table *t, const char *key)
{
	for (size_t i = 0; i < t->n; i++) {
		if (strcmp(t->c[i].key, key) == 0)
			return t->c[i].n;
	}
	return 0;
}

/* What the console shows for a reason and result, in English (0) or Japanese (1): a reason
 * the fare engine learns later gets its result's text; a link request is no refusal. */
static const struct {
	const char *reason, *result;
	int ja;
	const char *text;
} console_texts[] = {
	{ "denylisted", "refused", 1, "このカードは使えません（係員へ）" },
	{ "denylisted", "refused", 0, "Card blocked: please see staff" },
	{ "override-paper-pass", "accepted", 1, "運転士判断：紙の乗車券" },
	{ "card-not-yet-valid", "refused", 1, "このカードはまだ使えません" },
	{ "card-not-yet-valid", "refused", 0, "This card cannot be used yet" },
	{ "cap-reached-2099", "accepted", 1, "乗車できます" },
	{ "cap-reached-2099", "accepted", 0, "OK" },
	{ "some-new-reason", "refused", 0, "Refused: please see the driver" },
	{ "link-request", "requested", 0, "Link requested: active after the next sync" },
	{ "link-request", "requested", 1, "連携を受け付けました（次回同期後に有効）" },
	{ "pin-blocked", "refused", 0, "PIN blocked: please go to the city office" },
	{ "pin-blocked", "refused", 1, "暗証番号がロックされています（市役所へ）" },
	{ "card-not-genuine", "refused", 1, "カードを確認できません（係員へ）" },
	{ "card-not-linked", "refused", 1, "乗車券がありません（新しいカードは市役所で再連携）" },
};

/* The tap engine's own English texts. */
static const char *const tap_texts[][2] = {
	{ "card-not-yet-valid", "This card cannot be used yet" },
	{ "card-expired", "Card certificate expired: renew at the city office" },
	{ "pin-blocked", "PIN blocked: please go to the city office" },
	{ "card-not-genuine", "Card failed its check: please see staff" },
	{ "card-not-linked", "No ticket for this card: new card? Link it again at the city office" },
};

static void test_texts(void **state)
{
	(void)state;
	for (size_t i = 0; i < sizeof(console_texts) / sizeof(console_texts[0]); i++) {
		const char *got = kp_console_reason_text(console_texts[i].reason, console_texts[i].result,
		                                         console_texts[i].ja);

		if (strcmp(got, console_texts[i].text) != 0)
			fail_msg("%s/%s/%d: \"%s\", expected \"%s\"", console_texts[i].reason,
			         console_texts[i].result, console_texts[i].ja, got, console_texts[i].text);
	}
	for (size_t i = 0; i < sizeof(tap_texts) / sizeof(tap_texts[0]); i++)
		if (strcmp(kp_tap_reason_text(tap_texts[i][0]), tap_texts[i][1]) != 0)
			fail_msg("tap text of %s: \"%s\"", tap_texts[i][0],
			         kp_tap_reason_text(tap_texts[i][0]));
	/* issue 13: a link request is no refusal, and the My Number texts have their own */
	assert_null(strstr(kp_console_reason_text("link-other-2099", "requested", 0), "Refused"));
	assert_null(strstr(kp_console_reason_text("link-other-2099", "requested", 1), "いただけません"));
	/* a My Number card before its certificate's start is not "expired" */
	assert_null(strstr(kp_tap_reason_text("card-not-yet-valid"), "xpired"));
	/* every reason the tap engine or link mode gives has its Japanese text here */
	{
		static const char *const reasons[] = {
			"card-invalid", "card-expired", "card-not-yet-valid", "card-not-linked",
			"card-not-genuine", "pin-missing", "pin-invalid", "pin-wrong", "pin-low",
			"pin-blocked", "pin-unreadable", "link-ready", "link-request", "link-first",
		};

		for (size_t i = 0; i < sizeof(reasons) / sizeof(reasons[0]); i++) {
			assert_string_not_equal(kp_tap_reason_text(reasons[i]), "Refused");
			assert_string_equal(kp_console_reason_text(reasons[i], "refused", 0),
			                    kp_tap_reason_text(reasons[i]));
			assert_string_not_equal(kp_console_reason_text(reasons[i], "refused", 1),
			                        "ご乗車いただけません（運転士へ）");
		}
	}
	assert_string_equal(kp_console_category_text("child", 1), "小児");
	assert_string_equal(kp_console_category_text("", 0), "adult");
	assert_string_equal(kp_console_category_text("veteran", 1), "veteran");
	assert_string_equal(kp_driver_override_reason(2), "override-paper-pass");
	assert_null(kp_driver_override_reason(0));
	assert_null(kp_driver_override_reason(KP_DRIVER_OVERRIDES + 1));
}

static void test_settings(void **state)
{
	struct tu_term *f = *state;
	struct kp_console_cfg c;
	struct kp_terminal_cfg cfg;
	char path[320], err[256], want[sizeof(c.events)];

	kp_console_cfg_defaults(&c);
	assert_int_equal(c.lang_ja, 1);
	assert_int_equal(kp_console_parse_age("24h"), 86400);
	assert_int_equal(kp_console_parse_age("90"), 90);
	assert_int_equal(kp_console_parse_age("2d"), 172800);
	assert_int_equal(kp_console_parse_age("15m"), 900);
	assert_int_equal(kp_console_parse_age("-1h"), -1);
	assert_int_equal(kp_console_parse_age("1y"), -1);
	assert_int_equal(kp_console_parse_age("401d"), -1);
	assert_int_equal(kp_console_cfg_set(&c, "console_language", "en", err, sizeof(err)), KP_OK);
	assert_int_equal(c.lang_ja, 0);
	assert_int_equal(kp_console_cfg_set(&c, "console_language", "fr", err, sizeof(err)),
	                 KP_E_CONFIG);
	assert_string_equal(err, "console_language: ja or en");
	assert_int_equal(kp_console_cfg_set(&c, "console_mode", "confirm", err, sizeof(err)), KP_OK);
	assert_int_equal(c.mode, KP_CONSOLE_CONFIRM);
	assert_int_equal(kp_console_cfg_set(&c, "events", "json:", err, sizeof(err)), KP_E_CONFIG);
	assert_int_equal(kp_console_cfg_set(&c, "events", "xml:/tmp/x", err, sizeof(err)), KP_E_CONFIG);
	assert_int_equal(kp_console_cfg_set(&c, "events", "json:/tmp/ev", err, sizeof(err)), KP_OK);
	assert_int_equal(kp_console_cfg_set(&c, "no_such_key", "1", err, sizeof(err)), KP_E_INVAL);

	/* The file: console keys are taken, or checked and skipped by kp_terminal_cfg_load. */
	snprintf(path, sizeof(path), "%s/t.conf", f->dir);
	tu_write(path, "terminal_id = BUS-1\nconsole_language = en\ndenylist_max_age = 2h\n"
	               "events = json:ev.jsonl\nconsole_mode = validate\n");
	kp_terminal_cfg_defaults(&cfg);
	kp_console_cfg_defaults(&c);
	assert_int_equal(kp_terminal_cfg_load_console(&cfg, &c, path, err, sizeof(err)), KP_OK);
	assert_int_equal(c.lang_ja, 0);
	assert_int_equal(c.denylist_max_age_s, 7200);
	assert_int_equal(c.mode, KP_CONSOLE_VALIDATE);
	/* a relative path in the file is relative to the file's folder */
	snprintf(want, sizeof(want), "json:%s/ev.jsonl", f->dir);
	assert_string_equal(c.events, want);
	assert_int_equal(kp_terminal_cfg_load(&cfg, path, err, sizeof(err)), KP_OK);
	tu_write(path, "terminal_id = BUS-1\ndenylist_max_age = soon\n");
	assert_int_equal(kp_terminal_cfg_load(&cfg, path, err, sizeof(err)), KP_E_CONFIG);
	assert_non_null(strstr(err, "t.conf:2: denylist_max_age"));
	tu_write(path, "console_nonsense = 1\n");
	assert_int_equal(kp_terminal_cfg_load(&cfg, path, err, sizeof(err)), KP_E_CONFIG);
	assert_non_null(strstr(err, "t.conf:1: console_nonsense: unknown key"));
}

static void test_driver_records_signed_with_driver(void **state)
{
	struct tu_term *f = *state;
	uint8_t token[KP_TOKEN_LEN];
	uint64_t seq = 0;

	tu_term_token(f, 0xD0, token);
	assert_int_equal(kp_driver_journal(f->e, "tap", "accepted", "override-unreadable", "D042",
	                                   token, NULL, T0, &seq), KP_OK);
	assert_int_equal(seq, 1);
	/* A bad driver id or reason is refused before anything is journaled. */
	assert_int_equal(kp_driver_journal(f->e, "tap", "accepted", "override-unreadable",
	                                   "bad id", token, NULL, T0, NULL), KP_E_INVAL);
	assert_int_equal(kp_driver_journal(f->e, "tap", "accepted", "", "D042", token, NULL, T0,
	                                   NULL), KP_E_INVAL);
	{
		struct kp_shift_summary sum;
		int found = 1;

		assert_int_equal(kp_shift_find_open(f->s, &sum, &found), KP_OK);
		assert_int_equal(found, 0);
	}
}

static void test_summary_from_journal(void **state)
{
	struct tu_term *f = *state;
	struct kp_shift_summary sum, open;
	char text[4096];
	int found = 0;

	shift(f);
	/* Before the end: the open shift is found again (a restarted terminal continues it). */
	assert_int_equal(kp_shift_find_open(f->s, &open, &found), KP_OK);
	assert_int_equal(found, 1);
	assert_string_equal(open.driver, "D042");
	assert_int_equal(open.start_seq, 1);
	assert_int_equal(open.riders, 3);
	assert_int_equal(kp_driver_journal(f->e, "shift", "end", "shift", "D042", NULL, NULL,
	                                   T0 + 8000, NULL), KP_OK);
	assert_int_equal(kp_shift_find_open(f->s, &open, &found), KP_OK);
	assert_int_equal(found, 0);

	assert_int_equal(kp_shift_summary_compute(f->s, 1, &sum), KP_OK);
	assert_string_equal(sum.driver, "D042");
	tu_expect_row("end_seq riders taps already refused",
	              TU_INTS(sum.end_seq, sum.riders, sum.taps, sum.already, sum.refused),
	              TU_INTS(9, 3, 5, 1, 3));
	assert_int_equal(count(&sum.by_category, "adult"), 2);
	assert_int_equal(count(&sum.by_category, "child"), 1);
	assert_int_equal(count(&sum.by_product, "P10"), 1);
	assert_int_equal(count(&sum.by_product, "KIDS"), 1);
	assert_int_equal(count(&sum.by_product, "override"), 1);
	assert_int_equal(count(&sum.refusals, "denylisted"), 1);
	assert_int_equal(count(&sum.refusals, "no-entitlement"), 1);
	assert_int_equal(count(&sum.refusals, "driver-refused"), 1);
	assert_int_equal(count(&sum.overrides, "override-paper-pass"), 1);
	assert_int_equal(kp_shift_summary_compute(f->s, 2, &open), KP_E_INVAL);  /* no start */

	kp_shift_summary_format(&sum, 1, 9 * 3600, text, sizeof(text));
	assert_non_null(strstr(text, "driver D042  09:00-09:00  records 1-9"));
	assert_non_null(strstr(text, "Riders 乗車: 3"));
	assert_non_null(strstr(text, "By category 区分別: adult(大人) 2 child(小児) 1"));
	assert_non_null(strstr(text, "Refusals 乗車拒否: denylisted 1 no-entitlement 1 driver-refused 1"));
	assert_non_null(strstr(text, "Overrides 運転士判断: 1  override-paper-pass 1"));
	/* A small buffer is cut, never overrun. */
	kp_shift_summary_format(&sum, 0, 0, text, 40);
	assert_true(strlen(text) < 40);
}

static void observe(void *arg, const struct kp_record *rec)
{
	kp_events_record(arg, rec);
}

static int journal_seq(const struct kp_journal_row *row, void *arg)
{
	json_t *seqs = arg;

	json_array_append_new(seqs, json_integer((json_int_t)row->seq));
	return 0;
}

static void test_events_match_journal(void **state)
{
	struct tu_term *f = *state;
	char spec[320], path[310];
	kp_events *ev = NULL;
	json_t *journal = json_array();
	char *text, *line, *save = NULL;
	size_t i = 0;

	snprintf(path, sizeof(path), "%s/ev.jsonl", f->dir);
	snprintf(spec, sizeof(spec), "json:%s", path);
	assert_int_equal(kp_events_open(&ev, "xml", NULL, NULL), KP_E_CONFIG);
	assert_int_equal(kp_events_open(&ev, spec, NULL, NULL), KP_OK);
	kp_tap_engine_observe(f->e, observe, ev);
	shift(f);
	kp_events_reader(ev, T0 + 9000, 0, "Reader offline");
	kp_events_sync(ev, T0 + 9500, 0, 0, 8, 0, "connection refused");
	kp_tap_engine_observe(f->e, NULL, NULL);
	kp_events_close(ev);
	assert_int_equal(kp_journal_foreach(f->s, journal_seq, journal), KP_OK);
	assert_int_equal(json_array_size(journal), 8);

	text = tu_read(path);
	assert_non_null(text);
	/* No card id (IDm 0101020304050607 ...) in any form. */
	assert_null(strstr(text, "0101020304050607"));
	assert_null(strstr(text, "01010203040506"));
	for (line = strtok_r(text, "\n", &save); line != NULL; line = strtok_r(NULL, "\n", &save)) {
		json_error_t jerr;
		json_t *o = json_loads(line, 0, &jerr);
		json_t *seq;

		assert_non_null(o);
		assert_non_null(json_object_get(o, "type"));
		assert_non_null(json_object_get(o, "time"));
		seq = json_object_get(o, "seq");
		if (seq != NULL) {
			assert_true(i < json_array_size(journal));
			assert_int_equal(json_integer_value(seq),
			                 json_integer_value(json_array_get(journal, i)));
			i++;
			if (json_integer_value(seq) == 7) {
				assert_string_equal(json_string_value(json_object_get(o, "type")), "driver");
				assert_string_equal(json_string_value(json_object_get(o, "driver")), "D042");
				assert_string_equal(json_string_value(json_object_get(o, "reason")),
				                    "override-paper-pass");
				assert_int_equal(strlen(json_string_value(json_object_get(o, "card"))), 8);
			}
			if (json_integer_value(seq) == 3)
				assert_string_equal(json_string_value(json_object_get(o, "category")), "child");
		}
		json_decref(o);
	}
	assert_int_equal(i, json_array_size(journal));   /* every record, once, in order */
	free(text);
	json_decref(journal);
}

static int logged;
static void count_log(void *arg, const char *msg)
{
	(void)arg;
	if (strstr(msg, "events: cannot open") != NULL)
		logged++;
}

static void test_events_unwritable_path(void **state)
{
	struct tu_term *f = *state;
	kp_events *ev = NULL;

	logged = 0;
	/* Not an error: the terminal keeps deciding, the writer says why once and retries. */
	assert_int_equal(kp_events_open(&ev, "json:/nonexistent/dir/ev.jsonl", count_log, NULL),
	                 KP_OK);
	kp_tap_engine_observe(f->e, observe, ev);
	decide(f, 0x07, T0 + 1000, "ok");
	kp_tap_engine_observe(f->e, NULL, NULL);
	kp_events_close(ev);
	assert_int_equal(logged, 1);
}

/* The tests below run between setup and tu_term_teardown unless their row names others. */
#define FX_TEST(test) cmocka_unit_test_setup_teardown(test, setup, tu_term_teardown)

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_texts),
		FX_TEST(test_settings),
		FX_TEST(test_driver_records_signed_with_driver),
		FX_TEST(test_summary_from_journal),
		FX_TEST(test_events_match_journal),
		FX_TEST(test_events_unwritable_path),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
