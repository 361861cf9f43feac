/* SPDX-License-Identifier: Apache-2.0 */
/* Integration: the real programs (kippuctl, kippu-terminal) on the demo's mock scenario
 * of 21 taps by 7 cards, malformed card frames included. Asserts what the rider saw (the
 * mock HMI's event file), the final database, and the journal: kippuctl verifies it and
 * an independent checker (Python standard library + openssl) verifies its export. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>
#include <sys/stat.h>

#include <cmocka.h>

#include "kp_terminal.h"
#include "testutil.h"

struct fx {
	char dir[256];
	char src[1024];                  /* the repository's tools/ folder */
	const char *bin;
};

static int setup(void **state)
{
	struct fx *f = calloc(1, sizeof(*f));
	char cwd[768];

	tu_tmpdir(f->dir, sizeof(f->dir));
	if (getcwd(cwd, sizeof(cwd)) == NULL)
		return -1;
	snprintf(f->src, sizeof(f->src), "%s/tools", cwd);
	/* The programs are run by absolute path from inside the temp directory. */
	f->bin = tu_bin_abs();
	assert_int_equal(tu_sh("cd %s && cp %s/demo/scenario.txt %s/demo/load.txt "
	                       "%s/demo/terminal.conf . && "
	                       "%s/kippuctl ca create --key ca.key --cert ca.crt >/dev/null && "
	                       "%s/kippuctl terminal create --ca-key ca.key --ca-cert ca.crt "
	                       "--id BUS-OPA-0042 --key terminal.key --cert terminal.crt >/dev/null && "
	                       "%s/kippuctl token-key create token.key >/dev/null && "
	                       "%s/kippuctl load terminal.db load.txt --token-key token.key >/dev/null",
	                       f->dir, f->src, f->src, f->src, f->bin, f->bin, f->bin, f->bin), 0);
	*state = f;
	return 0;
}

static int run_terminal(struct fx *f, const char *extra)
{
	return tu_sh("cd %s && %s/kippu-terminal --config terminal.conf %s 2>>terminal.log",
	             f->dir, f->bin, extra);
}

static void test_demo_scenario_end_to_end(void **state)
{
	static const struct { const char *result, *reason; const char *left; } want[] = {
		{ "accepted", "ok", "2" },         { "already", "already", "-1" },
		{ "accepted", "ok", "0" },         { "refused", "expired", "-1" },
		{ "refused", "denylisted", "-1" }, { "refused", "no-entitlement", "-1" },
		{ "refused", "unsupported-card", "-1" }, { "refused", "wrong-operator", "-1" },
		{ "refused", "exhausted", "-1" },  { "refused", "card-removed", "-1" },
		{ "refused", "card-error", "-1" }, { "refused", "card-error", "-1" },
		{ "refused", "card-error", "-1" }, { "refused", "card-error", "-1" },
		{ "refused", "card-error", "-1" }, { "refused", "card-error", "-1" },
		{ "refused", "card-error", "-1" }, { "refused", "card-removed", "-1" },
		{ "accepted", "ok", "1" },         { "accepted", "ok", "0" },
		{ "refused", "exhausted", "-1" },
	};
	struct fx *f = *state;
	char path[512], *hmi, *line, *save = NULL;
	size_t i = 0;
	kp_store *s = NULL;
	int64_t n = 0;
	struct kp_entitlement e;
	uint8_t key[KP_TOKEN_KEY_LEN], token[KP_TOKEN_LEN];
	const uint8_t alice[8] = { 0x01, 0x01, 0x02, 0x03, 0x04, 0x05, 0x06, 0x07 };

	assert_int_equal(run_terminal(f, ""), 0);
	snprintf(path, sizeof(path), "%s/hmi.log", f->dir);
	hmi = tu_read(path);
	assert_non_null(hmi);
	/* Every result came with its LED and sound (counted before strtok cuts the text). */
	assert_int_equal(tu_count(hmi, "led green"), 4);
	assert_int_equal(tu_count(hmi, "beep error"), 16);
	for (line = strtok_r(hmi, "\n", &save); line != NULL; line = strtok_r(NULL, "\n", &save)) {
		char result[32], reason[32], product[40], left[24];

		if (strncmp(line, "show ", 5) != 0)
			continue;
		assert_true(i < sizeof(want) / sizeof(want[0]));
		assert_int_equal(sscanf(line, "show %*s %31s %31s %39s %23s", result, reason, product,
		                        left), 4);
		print_message("tap %zu: %s\n", i + 1, line);
		assert_string_equal(result, want[i].result);
		assert_string_equal(reason, want[i].reason);
		assert_string_equal(left, want[i].left);
		i++;
	}
	assert_int_equal(i, sizeof(want) / sizeof(want[0]));
	free(hmi);

	/* The database: one record per decision, rides deducted only for accepted taps. */
	snprintf(path, sizeof(path), "%s/terminal.db", f->dir);
	assert_int_equal(kp_store_open(&s, path), KP_OK);
	assert_int_equal(kp_store_count(s, "journal", &n), KP_OK);
	assert_int_equal(n, 21);
	snprintf(path, sizeof(path), "%s/token.key", f->dir);
	assert_int_equal(kp_token_key_load(path, key), KP_OK);
	assert_int_equal(kp_token_derive(key, "felica", alice, 8, token), 0);
	assert_int_equal(kp_store_get_entitlement(s, token, 1001, &e), KP_OK);
	assert_int_equal(e.rides_left, 0);
	kp_store_close(s);

	/* No raw id of any of the 7 cards (IDm, PUPI; bytes, hex either case) in the database,
	 * its WAL, the logs or the HMI log (tests/no_card_ids.py). */
	assert_int_equal(tu_sh("python3 %s/../tests/no_card_ids.py %s >%s/ids.out 2>&1 && "
	                       "grep -q '^no_card_ids: 7 cards' %s/ids.out", f->src, f->dir, f->dir,
	                       f->dir), 0);

	/* The journal verifies with kippuctl, and its export with an independent checker. */
	assert_int_equal(tu_sh("cd %s && %s/kippuctl journal verify terminal.db --ca ca.crt",
	                       f->dir, f->bin), 0);
	assert_int_equal(tu_sh("cd %s && %s/kippuctl journal export terminal.db export >/dev/null &&"
	                       " test -f export/21.cose && test -f export/terminal.crt &&"
	                       " python3 %s/cose_verify.py export", f->dir, f->bin, f->src), 0);
	/* A flipped byte in one exported record is caught by the independent checker. */
	assert_int_not_equal(tu_sh("cd %s && printf '\\001' | dd of=export/7.cose bs=1 seek=40 "
	                           "conv=notrunc 2>/dev/null && python3 %s/cose_verify.py export "
	                           ">/dev/null 2>&1", f->dir, f->src), 0);
}

static void test_second_run_continues_the_journal(void **state)
{
	struct fx *f = *state;

	assert_int_equal(run_terminal(f, ""), 0);
	assert_int_equal(run_terminal(f, ""), 0);
	/* 42 records, one chain across both runs */
	assert_int_equal(tu_sh("cd %s && %s/kippuctl journal verify terminal.db > verify.txt && "
	                       "grep -q '42 records' verify.txt", f->dir, f->bin), 0);
}

static void test_terminal_refuses_bad_setup(void **state)
{
	struct fx *f = *state;

	/* unknown config key, bad value, missing file: exit 2 with a message naming the line */
	assert_int_equal(tu_sh("cd %s && printf 'terminal_id = X\\nspeed = 3\\n' > bad.conf && "
	                       "%s/kippu-terminal --config bad.conf 2>err.txt; test $? -eq 2 && "
	                       "grep -q 'bad.conf:2: speed: unknown key' err.txt", f->dir, f->bin), 0);
	assert_int_equal(tu_sh("cd %s && %s/kippu-terminal --config terminal.conf "
	                       "--terminal-id 'bad id!' 2>err.txt; test $? -eq 2 && "
	                       "grep -q terminal_id err.txt", f->dir, f->bin), 0);
	assert_int_equal(tu_sh("cd %s && %s/kippu-terminal --config nope.conf 2>/dev/null; "
	                       "test $? -eq 2", f->dir, f->bin), 0);
	/* sync, My Number and fare settings are checked the same way */
	{
		static const char *const bad[] = {
			"backend = 127.0.0.1", "backend = :7800", "backend = host:78x0",
			"sync_interval = 1", "sync_timeout_ms = 50", "backend_name = a b",
			"reenrol_warn_days = 400", "service_day_end = 25:00", "utc_offset = +15:00",
			"fare_mode = zone", "gate = side", "fare_feed = a b",
			"backend = 127.0.0.1:99999", "backend = 127.0.0.1:0",
			"terminal_id = Y",                  /* a key given twice names its first line */
		};

		for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
			assert_int_equal(tu_sh("cd %s && printf 'terminal_id = X\n%%s\n' '%s' > b2.conf && "
			                       "%s/kippu-terminal --config b2.conf 2>err.txt; test $? -eq 2 "
			                       "&& grep -q 'b2.conf:2:' err.txt", f->dir, bad[i], f->bin), 0);
	}
	assert_int_equal(tu_sh("cd %s && printf 'terminal_id = X\nstop = S1\nstop = S2\n' > b3.conf && "
	                       "%s/kippu-terminal --config b3.conf 2>err.txt; test $? -eq 2 && "
	                       "grep -q 'b3.conf:3: stop: already set on line 2' err.txt", f->dir,
	                       f->bin), 0);
	/* a certificate for another terminal id is refused before any tap */
	assert_int_not_equal(run_terminal(f, "--terminal-id BUS-OTHER"), 0);
	/* a scenario with an error: the reader does not open, the terminal says where */
	assert_int_equal(tu_sh("cd %s && printf 'card x felica idm=0102\\n' > bad.txt && "
	                       "%s/kippu-terminal --config terminal.conf --reader mock:bad.txt "
	                       "2>err.txt; test $? -ne 0 && grep -q 'bad.txt:1' err.txt",
	                       f->dir, f->bin), 0);
	/* nothing was journaled by any of these (and the listing itself worked) */
	assert_int_equal(tu_sh("cd %s && %s/kippuctl journal list terminal.db > list.txt && "
	                       "test ! -s list.txt", f->dir, f->bin), 0);
}

static void test_kippuctl_rejects_bad_input(void **state)
{
	struct fx *f = *state;

	/* a load file with an error on line 3 loads nothing at all */
	assert_int_equal(tu_sh("cd %s && printf 'operator OP-Z Zed\\nproduct PZ nride 3 OP-Z Zed\\n"
	                       "entitlement 9 felica:01 PZ 3 2026-01-01T00:00:00Z 2027-01-01T00:00:00Z\\n'"
	                       " > bad-load.txt && %s/kippuctl load terminal.db bad-load.txt "
	                       "--token-key token.key 2>err.txt; test $? -eq 1 && "
	                       "grep -q 'bad-load.txt:3: card must be' err.txt && "
	                       "sqlite3 terminal.db \"select count(*) from operators where id='OP-Z'\" "
	                       "> n.txt && grep -qx 0 n.txt",
	                       f->dir, f->bin, f->bin), 0);
	assert_int_equal(tu_sh("cd %s && printf 'entitlement 9 felica:0101020304050607 P10 3 "
	                       "2027-01-01T00:00:00Z 2026-01-01T00:00:00Z\\n' > l2.txt && "
	                       "%s/kippuctl load terminal.db l2.txt --token-key token.key 2>err.txt;"
	                       " test $? -eq 1 && grep -q 'l2.txt:1: valid_until must be after' err.txt",
	                       f->dir, f->bin), 0);
	assert_int_equal(tu_sh("cd %s && printf 'entitlement 9 felica:0101020304050607 NOPE 3 "
	                       "2026-01-01T00:00:00Z 2027-01-01T00:00:00Z\\n' > l3.txt && "
	                       "%s/kippuctl load terminal.db l3.txt --token-key token.key 2>err.txt;"
	                       " test $? -eq 1 && "
	                       "grep -q 'l3.txt:1: product NOPE is not defined above' err.txt && "
	                       "! grep -q 'FOREIGN KEY' err.txt",
	                       f->dir, f->bin), 0);
	/* an entitlement id names one entitlement: loading it again for the same card updates
	 * it, for another card is refused (it made a second entitlement with the same id) */
	assert_int_equal(tu_sh("cd %s && printf 'entitlement 1001 felica:01010203040506A0 P10 3 "
	                       "2026-11-01T00:00:00Z 2026-12-01T00:00:00Z\\n' > l4.txt && "
	                       "%s/kippuctl load terminal.db l4.txt --token-key token.key 2>err.txt;"
	                       " test $? -eq 1 && grep -q \"l4.txt:1: entitlement id is already another "
	                       "card's\" err.txt && sqlite3 terminal.db \"select count(*) from "
	                       "entitlements where id = 1001\" > n.txt && grep -qx 1 n.txt && "
	                       "printf 'entitlement 1001 felica:0101020304050607 P10 7 "
	                       "2026-11-01T00:00:00Z 2026-12-01T00:00:00Z\\n' > l5.txt && "
	                       "%s/kippuctl load terminal.db l5.txt --token-key token.key >/dev/null && "
	                       "sqlite3 terminal.db \"select count(*), max(rides_left) from "
	                       "entitlements where id = 1001\" > n.txt && grep -qx '1|7' n.txt",
	                       f->dir, f->bin, f->bin), 0);
	/* the rider-category directives: each bad form names its line, nothing is loaded */
	{
		static const char *const bad[] = {
			"product-category NOPE resident",                       /* no such product */
			"product-category P10 'bad id'",
			"eligibility felica:0101 resident 2026-01-01T00:00:00Z 2027-01-01T00:00:00Z",
			"eligibility felica:0101020304050607 resident 2027-01-01T00:00:00Z 2026-01-01T00:00:00Z",
			"eligibility felica:0101020304050607 resident 2026-01-01T00:00:00Z",
			"eligibility felica:0101020304050607 resident 2026-01-01T00:00:00Z "
			"2027-01-01T00:00:00Z via:felica:01",
			"eligibility felica:0101020304050607 resident 2026-01-01T00:00:00Z "
			"2027-01-01T00:00:00Z token:00112233445566778899aabbccddeeff",
			/* times are ISO 8601 exactly: no signs inside fields, no doubled signs */
			"eligibility felica:0101020304050607 resident 2026-11-01T-1:00:00+09:00 "
			"2027-01-01T00:00:00Z",
			"eligibility felica:0101020304050607 resident 2026-11-01T00:-5:-9Z "
			"2027-01-01T00:00:00Z",
			"eligibility felica:0101020304050607 resident 2026-11-01T00:00:00+-1:00 "
			"2027-01-01T00:00:00Z",
		};

		for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
			assert_int_equal(tu_sh("cd %s && printf 'operator OP-Q Q\n%%s\n' \"%s\" > cat.txt && "
			                       "%s/kippuctl load terminal.db cat.txt --token-key token.key "
			                       "2>err.txt; test $? -eq 1 && grep -q 'cat.txt:2:' err.txt && "
			                       "sqlite3 terminal.db \"select count(*) from operators where "
			                       "id='OP-Q'\" > n.txt && grep -qx 0 n.txt", f->dir, bad[i],
			                       f->bin), 0);
		}
	}
	/* keys are never overwritten, and are private */
	assert_int_equal(tu_sh("cd %s && ! %s/kippuctl token-key create token.key 2>/dev/null && "
	                       "test \"$(stat -c %%a terminal.key)\" = 600 && "
	                       "test \"$(stat -c %%a ca.key)\" = 600 && "
	                       "test \"$(stat -c %%a token.key)\" = 600", f->dir, f->bin), 0);
	/* usage errors exit 2 */
	assert_int_equal(tu_sh("%s/kippuctl frobnicate 2>/dev/null; test $? -eq 2", f->bin), 0);
	assert_int_equal(tu_sh("%s/kippuctl terminal create --id 'a b' --ca-key x --ca-cert y "
	                       "--key k --cert c 2>/dev/null; test $? -eq 2", f->bin), 0);
	/* the option table's checks: a number out of range or not a number, a repeated option
	 * past its limit; usage errors (exit 2) named on stderr, nothing written */
	for (int i = 0; i < 2; i++)
		assert_int_equal(tu_sh("cd %s && %s/kippuctl terminal create --id T9 --ca-key ca.key "
		                       "--ca-cert ca.crt --key t9.key --cert t9.crt --days %s "
		                       "2>opt.err; test $? -eq 2 && grep -q -- '--days must be 1 to "
		                       "36500' opt.err && test ! -e t9.key", f->dir, f->bin,
		                       i == 0 ? "0" : "12x"), 0);
	assert_int_equal(tu_sh("cd %s && c=; for i in $(seq 17); do "
	                       "c=\"$c --card felica:01010203040506$(printf %%02x $i)\"; done; "
	                       "%s/kippuctl linkage add many.db token:%032d RES "
	                       "2026-01-01T00:00:00+09:00 2027-01-01T00:00:00+09:00 $c "
	                       "--token-key token.key 2>opt.err; test $? -eq 2 && "
	                       "grep -q 'at most 16 --card at once' opt.err && test ! -e many.db",
	                       f->dir, f->bin, 0), 0);
	/* the configuration keys as a table: every key the file takes, the console's too */
	assert_int_equal(tu_sh("%s/kippu-terminal --config-keys > %s/keys.md && "
	                       "grep -q '^| `terminal_id` |' %s/keys.md && "
	                       "grep -q '^| `service_day_end` | `04:00` |' %s/keys.md && "
	                       "grep -q '^| `console_mode` | `charge` |' %s/keys.md",
	                       f->bin, f->dir, f->dir, f->dir, f->dir), 0);
}

/* SIGTERM while taps arrive in real time, once a few were shown: a clean exit, and every
 * decision the rider was shown is in a journal that verifies. */
static void test_sigterm_loses_nothing(void **state)
{
	struct fx *f = *state;
	char path[512], *hmi;
	kp_store *s = NULL;
	int64_t n = 0;
	pid_t pid;

	tu_write_taps(tu_path(f->dir, "live.txt"), "pace real\ncard alice felica idm=0101020304050607\n"
	              "card erin felica idm=01010203040506D0\n", 100, 10, "erin", "alice", "");
	snprintf(path, sizeof(path), "%s/hmi.log", f->dir);
	remove(path);
	pid = tu_spawn("cd %s && exec %s/kippu-terminal --config terminal.conf --reader mock:live.txt "
	               "2>live.log", f->dir, f->bin);
	tu_wait_text(path, "show ", 3, TU_WAIT_S);
	kill(pid, SIGTERM);
	assert_int_equal(tu_wait_pid(pid, TU_WAIT_S, "kippu-terminal after SIGTERM"), 0);
	hmi = tu_read(path);
	assert_non_null(hmi);
	snprintf(path, sizeof(path), "%s/terminal.db", f->dir);
	assert_int_equal(kp_store_open(&s, path), KP_OK);
	assert_int_equal(kp_store_count(s, "journal", &n), KP_OK);
	kp_store_close(s);
	print_message("stopped after %lld taps\n", (long long)n);
	assert_true(n >= 3 && n < 100);
	assert_int_equal(tu_count(hmi, "show "), (int)n);
	free(hmi);
	assert_int_equal(tu_sh("cd %s && %s/kippuctl journal verify terminal.db >/dev/null && "
	                       "grep -q stopping live.log", f->dir, f->bin), 0);
}

/* The tests below run between setup and tu_dir_fx_teardown unless their row names others. */
#define FX_TEST(test) cmocka_unit_test_setup_teardown(test, setup, tu_dir_fx_teardown)

int main(void)
{
	const struct CMUnitTest tests[] = {
		FX_TEST(test_demo_scenario_end_to_end),
		FX_TEST(test_second_run_continues_the_journal),
		FX_TEST(test_terminal_refuses_bad_setup),
		FX_TEST(test_kippuctl_rejects_bad_input),
		FX_TEST(test_sigterm_loses_nothing),
	};

	return cmocka_run_group_tests_name("integration", tests, NULL, NULL);
}
