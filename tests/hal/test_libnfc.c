/* SPDX-License-Identifier: Apache-2.0 */
/* The libnfc reader backend. Unit tests: connection strings, libnfc's error codes, what it
 * cannot do, opening what is not there. End to end through Debian's unmodified libnfc
 * and kippu-pn532-emu (a PN532 on a pseudo-terminal driving the mock HAL's card models):
 * the real kippu-terminal runs the same scenario once on "mock:S" and once on
 * "libnfc:pn532_uart:LINK", and the rider must see the same results (result, reason and
 * rides left of every HMI line) - FeliCa reads, a Type B card, a card pulled away, faulty
 * replies, a reader that vanishes and comes back, malformed PN532 frames, a slow reader.
 * --inspect prints the same balances and histories; a Type B card's APDUs and a card
 * taken away mid-read (SIGUSR1) are checked through the HAL. */
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <cmocka.h>

#include "kp_terminal.h"
#include "testutil.h"

/* One scenario tap every TAP_GAP seconds (pace real): enough for a tap through the
 * emulator to be read, decided and released (the release waits poll_timeout_ms = 150 for
 * the card to leave; the emulator's card leaves only when deselected). */
#define TAP_GAP 0.4
/* Commands a release sends when the card has already left: one presence check (libnfc 1.8
 * tries it three times) and the deselect, 4; waiting out a 2 s timeout would be hundreds. */
#define RELEASE_GONE_CMDS 8

/* Cards shared by the scenarios; the load file gives them tickets valid 2000-2099 so
 * that the mock's clock (2026-01-01) and the system clock decide alike. The double-tap
 * window is 1 s: the same card TAP_GAP apart is "already", 2.4 s apart it is not. */
#define CARDS \
	"card alice felica idm=0101020304050607 balance=1500 cardtype=2\n" \
	"history alice 05 0F 0000 3574 0001 0012 DC05 00012C 01\n" \
	"history alice 16 01 0002 3574 0001 0012 E803 00012B 01\n" \
	"card bob   felica idm=01010203040506A0 balance=320 cardtype=3\n" \
	"card carol felica idm=01010203040506B0 balance=900\n" \
	"card dave  felica idm=01010203040506C0 balance=50\n" \
	"card erin  felica idm=01010203040506D0 balance=2000\n" \
	"card frank typeb pupi=A1B2C3D4\n" \
	"card grace felica idm=01010203040506E0 balance=700\n"

static const char load_txt[] =
	"operator OP-A Test Bus\n"
	"operator OP-C Other Bus\n"
	"product P10 nride 10 OP-A 10 rides\n"
	"product PC nride 5 OP-C other operator\n"
	"entitlement 1001 felica:0101020304050607 P10 3 2000-01-01T00:00:00Z 2099-01-01T00:00:00Z\n"
	"entitlement 1002 felica:01010203040506A0 P10 1 2000-01-01T00:00:00Z 2099-01-01T00:00:00Z\n"
	"entitlement 1003 felica:01010203040506B0 P10 5 2000-01-01T00:00:00Z 2001-01-01T00:00:00Z\n"
	"entitlement 1004 felica:01010203040506C0 P10 5 2000-01-01T00:00:00Z 2099-01-01T00:00:00Z\n"
	"entitlement 1005 felica:01010203040506E0 PC 5 2000-01-01T00:00:00Z 2099-01-01T00:00:00Z\n"
	"denylist felica:01010203040506C0 reported lost\n";

static const char conf_txt[] =
	"terminal_id = BUS-OPA-0042\n"
	"operator = OP-A\n"
	"key = terminal.key\n"
	"cert = terminal.crt\n"
	"token_key = token.key\n"
	"double_tap_window = 1\n"
	"poll_timeout_ms = 150\n"
	"log = stderr\n";

struct fx {
	char dir[256];
	const char *bin;
	char link[320];
	pid_t emu;
	int emu_out;                      /* the emulator's stdout */
	pid_t term;
	pid_t mock;                       /* a mock run going on beside it */
	int mock_run;
	int runs;                         /* names each run's files */
};

static void path_of(const struct fx *f, const char *name, char *out, size_t cap)
{
	snprintf(out, cap, "%s/%s", f->dir, name);
}

static int have_emulator(const struct fx *f)
{
	char path[1100];

	snprintf(path, sizeof(path), "%s/kippu-pn532-emu", f->bin);
	return access(path, X_OK) == 0;
}

static int setup(void **state)
{
	struct fx *f = calloc(1, sizeof(*f));
	char path[512];

	if (f == NULL)
		return -1;
	tu_tmpdir(f->dir, sizeof(f->dir));
	f->bin = tu_bin_abs();
	snprintf(f->link, sizeof(f->link), "%s/rd", f->dir);
	f->emu = f->term = f->mock = -1;
	f->emu_out = -1;
	path_of(f, "load.txt", path, sizeof(path));
	tu_write(path, load_txt);
	path_of(f, "terminal.conf", path, sizeof(path));
	tu_write(path, conf_txt);
	/* libnfc must find no reader but ours: no USB scanning, no configured device. */
	setenv("LIBNFC_AUTO_SCAN", "false", 1);
	unsetenv("LIBNFC_DEVICE");
	unsetenv("LIBNFC_DEFAULT_DEVICE");
	*state = f;
	return 0;
}

/* Keys, certificate and the loaded database (copied for each run). */
static int setup_terminal(void **state)
{
	struct fx *f;

	if (setup(state) != 0)
		return -1;
	f = *state;
	assert_int_equal(tu_sh("cd %s && %s/kippuctl ca create --key ca.key --cert ca.crt "
	                       ">/dev/null && %s/kippuctl terminal create --ca-key ca.key "
	                       "--ca-cert ca.crt --id BUS-OPA-0042 --key terminal.key "
	                       "--cert terminal.crt >/dev/null && %s/kippuctl token-key create "
	                       "token.key >/dev/null && %s/kippuctl load base.db load.txt "
	                       "--token-key token.key >/dev/null", f->dir, f->bin, f->bin, f->bin,
	                       f->bin), 0);
	return 0;
}

static void emu_stop(struct fx *f)
{
	if (f->emu > 0) {
		kill(f->emu, SIGTERM);
		waitpid(f->emu, NULL, 0);
		f->emu = -1;
	}
	if (f->emu_out >= 0) {
		close(f->emu_out);
		f->emu_out = -1;
	}
}

static void term_kill(struct fx *f)
{
	if (f->term > 0) {
		kill(f->term, SIGKILL);
		waitpid(f->term, NULL, 0);
		f->term = -1;
	}
	if (f->mock > 0) {
		kill(f->mock, SIGKILL);
		waitpid(f->mock, NULL, 0);
		f->mock = -1;
	}
}

static int teardown(void **state)
{
	struct fx *f = *state;

	term_kill(f);
	emu_stop(f);
	tu_rmdir(f->dir);
	free(f);
	return 0;
}

/* Writes the scenario file NAME. */
static void scenario(struct fx *f, const char *name, const char *text)
{
	char path[512];

	path_of(f, name, path, sizeof(path));
	tu_write(path, text);
}

/* Starts the emulator on a scenario file with extra options; waits for its pty line. */
static void emu_start(struct fx *f, const char *scn, const char *extra)
{
	char line[256];

	f->emu = tu_spawn_piped(&f->emu_out, "cd %s && exec %s/kippu-pn532-emu --scenario %s "
	                        "--link %s --log emu.log %s", f->dir, f->bin, scn, f->link, extra);
	tu_read_line(f->emu_out, line, sizeof(line), tu_mono_ms() + TU_WAIT_S * 1000, "the emulator");
	assert_non_null(strstr(line, "kippu-pn532-emu: pty /dev/pts/"));
}

/* Starts kippu-terminal in the test folder on a fresh copy of the database; its HMI goes
 * to hmi-RUN.log, stdout to out-RUN.txt, stderr to log-RUN.txt. Returns RUN. */
static int term_start(struct fx *f, const char *reader, const char *extra)
{
	int run = ++f->runs;

	assert_int_equal(tu_sh("cp %s/base.db %s/run%d.db", f->dir, f->dir, run), 0);
	f->term = tu_spawn("cd %s && exec %s/kippu-terminal --config terminal.conf --db run%d.db "
	                   "--reader %s --hmi mock:hmi-%d.log %s >out-%d.txt 2>log-%d.txt",
	                   f->dir, f->bin, run, reader, run, extra, run, run);
	return run;
}

/* Waits for the terminal to exit by itself (a mock scenario's end); its exit status. */
static int term_wait(struct fx *f)
{
	pid_t pid = f->term;

	f->term = -1;                     /* tu_wait_pid kills and reaps one that does not exit */
	return tu_wait_pid(pid, TU_WAIT_S, "kippu-terminal");
}

/* SIGTERM, as an operator stops it; its exit status. */
static int term_stop(struct fx *f)
{
	kill(f->term, SIGTERM);
	return term_wait(f);
}

static char *run_file(const struct fx *f, const char *kind, int run)
{
	char path[600];

	snprintf(path, sizeof(path), "%s/%s-%d.%s", f->dir, kind,
	         run, strcmp(kind, "hmi") == 0 ? "log" : "txt");
	return tu_read(path);
}

/* Waits until the run's HMI log has at least n lines containing needle; fails showing
 * what the terminal logged. */
static void wait_hmi(const struct fx *f, int run, const char *needle, int n)
{
	char path[600];
	char *log;

	snprintf(path, sizeof(path), "%s/hmi-%d.log", f->dir, run);
	if (tu_poll_text(path, needle, n, TU_WAIT_S))
		return;
	log = run_file(f, "log", run);
	fail_msg("after %d s, %s holds '%s' %d time(s), not %d; the terminal said:\n%s",
	         TU_WAIT_S, path, needle, tu_file_count(path, needle), n, log ? log : "");
}

/* Waits until the emulator's log holds needle from + n times: n more than an earlier
 * emu_count() gave (from), i.e. n times since that moment. */
static void wait_emu(const struct fx *f, const char *needle, int from, int n)
{
	char path[600];

	path_of(f, "emu.log", path, sizeof(path));
	tu_wait_text(path, needle, from + n, TU_WAIT_S);
}

static int emu_count(const struct fx *f, const char *needle)
{
	char path[600];

	path_of(f, "emu.log", path, sizeof(path));
	return tu_file_count(path, needle);
}

/* Nothing more can come from the taps: the terminal has polled two more rounds (FeliCa,
 * then Type B) and found no card. */
static void wait_idle_polls(const struct fx *f)
{
	wait_emu(f, "106B: no target", emu_count(f, "106B: no target"), 2);
}

/* The rider's view of a run: "result reason rides_left" per show line; info lines
 * (reader offline/online) go to info when it is not NULL, else are skipped. */
static void hmi_view(const struct fx *f, int run, char *out, size_t cap, char *info,
                     size_t info_cap)
{
	char *hmi = run_file(f, "hmi", run), *line, *save = NULL;
	size_t k = 0, ki = 0;

	assert_non_null(hmi);
	out[0] = '\0';
	if (info != NULL)
		info[0] = '\0';
	for (line = strtok_r(hmi, "\n", &save); line != NULL; line = strtok_r(NULL, "\n", &save)) {
		char result[32], reason[40], left[24];

		if (sscanf(line, "show %*s %31s %39s %*s %23s", result, reason, left) != 3)
			continue;
		if (strcmp(result, "info") == 0) {
			if (info != NULL)
				ki += (size_t)snprintf(info + ki, info_cap - ki, "%s@%d\n", reason,
				                       tu_count(out, "\n"));
			continue;
		}
		k += (size_t)snprintf(out + k, cap - k, "%s %s %s\n", result, reason, left);
		assert_true(k < cap && (info == NULL || ki < info_cap));
	}
	free(hmi);
}

/* Runs scenario file scn on the mock reader (to its end) beside what the test does next;
 * mock_finish waits for it and returns the rider's view. */
static void mock_start(struct fx *f, const char *scn)
{
	char reader[600];

	snprintf(reader, sizeof(reader), "mock:%s", scn);
	f->mock_run = term_start(f, reader, "");
	f->mock = f->term;
	f->term = -1;
}

static void mock_finish(struct fx *f, char *view, size_t cap)
{
	f->term = f->mock;
	f->mock = -1;
	assert_int_equal(term_wait(f), 0);
	hmi_view(f, f->mock_run, view, cap, NULL, 0);
}

/* Runs scenario file scn through libnfc and the emulator until n taps were shown, then
 * stops the terminal; returns the run number. */
static int nfc_run(struct fx *f, const char *scn, const char *emu_extra, int n)
{
	char reader[600];
	int run;

	emu_start(f, scn, emu_extra);
	snprintf(reader, sizeof(reader), "libnfc:pn532_uart:%s", f->link);
	run = term_start(f, reader, "");
	wait_hmi(f, run, "show ", n);
	wait_idle_polls(f);               /* nothing more should come */
	assert_int_equal(term_stop(f), 0);
	emu_stop(f);
	return run;
}

/* Journal of a run: records and kippuctl's verdict. */
static void journal_check(struct fx *f, int run, int64_t want)
{
	char path[600];
	kp_store *s = NULL;
	int64_t n = -1;

	snprintf(path, sizeof(path), "%s/run%d.db", f->dir, run);
	assert_int_equal(kp_store_open(&s, path), KP_OK);
	assert_int_equal(kp_store_count(s, "journal", &n), KP_OK);
	kp_store_close(s);
	assert_int_equal(n, want);
	assert_int_equal(tu_sh("cd %s && %s/kippuctl journal verify run%d.db --ca ca.crt "
	                       ">/dev/null", f->dir, f->bin, run), 0);
}

/* Builds "pace real" + CARDS + taps gap seconds apart from a list of tap lines. */
static void taps_scenario_gap(struct fx *f, const char *name, const char *const *taps,
                              size_t n, double gap)
{
	char text[4096];
	size_t k = (size_t)snprintf(text, sizeof(text), "pace real\n%s", CARDS);

	for (size_t i = 0; i < n; i++)
		k += (size_t)snprintf(text + k, sizeof(text) - k, "tap +%.1f %s\n",
		                      0.5 + gap * (double)i, taps[i]);
	assert_true(k < sizeof(text));
	scenario(f, name, text);
}

static void taps_scenario(struct fx *f, const char *name, const char *const *taps, size_t n)
{
	taps_scenario_gap(f, name, taps, n, TAP_GAP);
}

/* ---- unit tests (no emulator) ---- */

static void test_parse_conn(void **state)
{
	static const struct { const char *in; int rc; const char *out; } v[] = {
		{ "", KP_HAL_OK, "" },
		{ "pn532_uart:/dev/ttyUSB0", KP_HAL_OK, "pn532_uart:/dev/ttyUSB0" },
		{ "pn532_uart:/dev/ttyUSB0:115200", KP_HAL_OK, "pn532_uart:/dev/ttyUSB0:115200" },
		{ "pn53x_usb", KP_HAL_OK, "pn53x_usb" },
		{ "pn53x_usb:003:004", KP_HAL_OK, "pn53x_usb:003:004" },
		{ "acr122_usb", KP_HAL_OK, "acr122_usb" },
		{ "usb", KP_HAL_OK, "usb" },
		{ "arygon:/dev/ttyS0:9600", KP_HAL_OK, "arygon:/dev/ttyS0:9600" },
		{ "pn532_i2c:/dev/i2c-1", KP_HAL_OK, "pn532_i2c:/dev/i2c-1" },
		{ "pn532_uart", KP_HAL_E_CONFIG, "" },            /* a serial driver needs a port */
		{ "pn532_uart:", KP_HAL_E_CONFIG, "" },
		{ "pn532_uart:/dev/ttyUSB0:", KP_HAL_E_CONFIG, "" },
		{ "pn532_uart::115200", KP_HAL_E_CONFIG, "" },
		{ "pn532_uart:/dev/ttyUSB0:fast", KP_HAL_E_CONFIG, "" },
		{ "pn532_uart:/dev/ttyUSB0:1152000000", KP_HAL_E_CONFIG, "" },
		{ "pn532_uarts:/dev/ttyUSB0", KP_HAL_E_CONFIG, "" }, /* unknown driver */
		{ "pn532", KP_HAL_E_CONFIG, "" },
		{ "mock:x.txt", KP_HAL_E_CONFIG, "" },
		{ ":x", KP_HAL_E_CONFIG, "" },
		{ "pn532_uart:/dev/tty USB0", KP_HAL_E_CONFIG, "" },
		{ "pn532_uart:/dev/tty\nUSB0", KP_HAL_E_CONFIG, "" },
	};
	char out[64], big[1100], big_out[1100];

	for (size_t i = 0; i < sizeof(v) / sizeof(v[0]); i++) {
		print_message("%s\n", v[i].in);
		strcpy(out, "junk");
		assert_int_equal(kp_libnfc_parse_conn(v[i].in, out, sizeof(out)), v[i].rc);
		assert_string_equal(out, v[i].out);
	}
	/* Longer than the caller's buffer, or than libnfc's 1024 bytes. */
	assert_int_equal(kp_libnfc_parse_conn("pn532_uart:/dev/ttyUSB0", out, 10), KP_HAL_E_CONFIG);
	memset(big, 'a', sizeof(big));
	memcpy(big, "pn532_uart:/", 12);
	big[sizeof(big) - 1] = '\0';
	assert_int_equal(kp_libnfc_parse_conn(big, big_out, sizeof(big_out)), KP_HAL_E_CONFIG);
	assert_int_equal(kp_libnfc_parse_conn(NULL, out, sizeof(out)), KP_HAL_E_INVAL);
	assert_int_equal(kp_libnfc_parse_conn("usb", NULL, 8), KP_HAL_E_INVAL);
	(void)state;
}

static void test_map_error(void **state)
{
	/* libnfc's codes (nfc.h), here as numbers: this file does not include libnfc. */
	static const struct { int nfc; int exchange; int rc; } v[] = {
		{ 0, 0, KP_HAL_OK },                   { 5, 1, KP_HAL_OK },
		{ -1, 0, KP_HAL_E_IO },                { -1, 1, KP_HAL_E_IO },         /* EIO */
		{ -2, 1, KP_HAL_E_INVAL },                                             /* EINVARG */
		{ -3, 0, KP_HAL_E_NOTSUP },            { -8, 1, KP_HAL_E_NOTSUP },     /* EDEVNOTSUPP, ENOTIMPL */
		{ -4, 0, KP_HAL_E_IO },                                                /* ENOTSUCHDEV */
		{ -5, 1, KP_HAL_E_OVERFLOW },                                          /* EOVFLOW */
		{ -6, 1, KP_HAL_E_TIMEOUT },           { -6, 0, KP_HAL_E_IO },         /* ETIMEOUT */
		{ -7, 1, KP_HAL_E_IO },                                                /* EOPABORTED */
		{ -10, 1, KP_HAL_E_NOCARD },           { -10, 0, KP_HAL_E_NOCARD },    /* ETGRELEASED */
		{ -20, 1, KP_HAL_E_TIMEOUT },          { -20, 0, KP_HAL_E_NOCARD },    /* ERFTRANS */
		{ -30, 1, KP_HAL_E_IO },               { -80, 0, KP_HAL_E_IO },        /* MFCAUTH, ESOFT */
		{ -90, 1, KP_HAL_E_IO },               { -12345, 1, KP_HAL_E_IO },     /* ECHIP, unknown */
	};

	for (size_t i = 0; i < sizeof(v) / sizeof(v[0]); i++)
		assert_int_equal(kp_libnfc_map_error(v[i].nfc, v[i].exchange), v[i].rc);
	(void)state;
}

/* Opening what is not there: a bad string is a configuration error at once; a missing
 * or silent device is KP_HAL_E_IO (the terminal waits for it). */
static void test_open_errors(void **state)
{
	struct fx *f = *state;
	struct kp_reader *r = (struct kp_reader *)1;
	char path[512];

	assert_int_equal(kp_reader_open(&r, "libnfc:nosuch:x"), KP_HAL_E_CONFIG);
	assert_null(r);
	assert_int_equal(kp_reader_open(&r, "libnfc:pn532_uart"), KP_HAL_E_CONFIG);
	assert_int_equal(kp_reader_open(&r, "libnfc:pn532_uart:/nonexistent/tty"), KP_HAL_E_IO);
	assert_null(r);
	/* A file that is no reader at all: libnfc cannot set it up or gets no answer. */
	path_of(f, "notatty", path, sizeof(path));
	tu_write(path, "hello\n");
	{
		char conn[600];

		snprintf(conn, sizeof(conn), "libnfc:pn532_uart:%s", path);
		assert_int_equal(kp_reader_open(&r, conn), KP_HAL_E_IO);
	}
	/* The default device when none is configured and scanning is off. */
	assert_int_equal(kp_reader_open(&r, "libnfc"), KP_HAL_E_IO);
	assert_int_equal(kp_reader_open(&r, "libnfc:"), KP_HAL_E_IO);
}

/* What a backend does not keep is NOTSUP, never success; and the mock keeps no error text. */
static void test_notsup(void **state)
{
	struct fx *f = *state;
	struct kp_reader *r = NULL;
	char path[512], conn[600], buf[64] = "junk";
	size_t n = 7;

	path_of(f, "one.txt", path, sizeof(path));
	tu_write(path, "card a felica idm=0101020304050607\ntap +0 a\n");
	snprintf(conn, sizeof(conn), "mock:%s", path);
	assert_int_equal(kp_reader_open(&r, conn), KP_HAL_OK);
	assert_int_equal(kp_reader_last_error(r, buf, sizeof(buf)), KP_HAL_E_NOTSUP);
	assert_string_equal(buf, "");
	assert_int_equal(kp_reader_last_error(r, NULL, 0), KP_HAL_E_INVAL);
	assert_int_equal(kp_reader_last_error(NULL, buf, sizeof(buf)), KP_HAL_E_INVAL);
	kp_reader_close(r);
	/* libnfc lists nothing here; its list still succeeds. */
	assert_int_equal(kp_libnfc_list(buf, sizeof(buf), &n), KP_HAL_OK);
	assert_int_equal(n, 0);
	assert_string_equal(buf, "");
	assert_int_equal(kp_libnfc_list(NULL, 0, &n), KP_HAL_E_INVAL);
}

/* --list-readers: "no readers found", or each device with its name; exit 0 either way. */
static void test_list_readers(void **state)
{
	struct fx *f = *state;
	char path[512], *out;

	assert_int_equal(tu_sh("cd %s && %s/kippu-terminal --list-readers >list1.txt 2>&1",
	                       f->dir, f->bin), 0);
	path_of(f, "list1.txt", path, sizeof(path));
	out = tu_read(path);
	assert_non_null(out);
	assert_string_equal(out, "no readers found\n");
	free(out);
	/* A configured device is listed with what libnfc calls it, if it answers. */
	assert_int_equal(tu_sh("cd %s && LIBNFC_DEVICE=pn532_uart:/nonexistent/tty "
	                       "%s/kippu-terminal --list-readers >list2.txt 2>/dev/null && "
	                       "grep -qx 'pn532_uart:/nonexistent/tty.(does not answer)' list2.txt",
	                       f->dir, f->bin), 0);
	if (!have_emulator(f))
		return;
	scenario(f, "none.txt", "card a felica idm=0101020304050607\n");
	emu_start(f, "none.txt", "");
	assert_int_equal(tu_sh("cd %s && LIBNFC_DEVICE=pn532_uart:%s %s/kippu-terminal "
	                       "--list-readers >list3.txt 2>&1 && test $(wc -l <list3.txt) -eq 1 "
	                       "&& grep -q '^pn532_uart:%s\t' list3.txt", f->dir, f->link, f->bin,
	                       f->link), 0);
	assert_int_equal(tu_sh("cd %s && %s/kippu-terminal --reader libnfc:pn532_uart:%s "
	                       "--describe >desc.txt && grep -qx 'libnfc 1\\.8\\.[0-9]*: "
	                       "pn532_uart:%s (pn532_uart:%s)' desc.txt", f->dir, f->bin, f->link,
	                       f->link, f->link), 0);
	emu_stop(f);
}

/* ---- end to end through libnfc and the emulator ---- */

#define NEED_EMULATOR(f) do { if (!have_emulator(f)) { \
	print_message("kippu-pn532-emu not built: skipped\n"); skip(); } } while (0)

/* The FeliCa tap path: every outcome the terminal knows, a Type B card, a card pulled
 * away before its read, faulty card replies; same rider's view as on the mock. */
static void test_taps_equal_mock(void **state)
{
	static const char *const taps[] = {
		"alice",                        /* accepted, 2 left */
		"alice",                        /* already */
		"bob",                          /* accepted, 0 left */
		"carol",                        /* expired */
		"dave",                         /* denylisted */
		"erin",                         /* no-entitlement */
		"frank",                        /* Type B: unsupported-card */
		"grace",                        /* wrong-operator */
		"bob",                          /* exhausted */
		"alice remove-after=0",         /* card-removed */
		"alice fault=len",              /* card-error */
		"alice fault=garbage",          /* card-error */
		"alice fault=silent",           /* card-removed */
		"erin",                         /* no-entitlement */
	};
	static const char want[] =
		"accepted ok 2\nalready already -1\naccepted ok 0\nrefused expired -1\n"
		"refused denylisted -1\nrefused no-entitlement -1\nrefused unsupported-card -1\n"
		"refused wrong-operator -1\nrefused exhausted -1\nrefused card-removed -1\n"
		"refused card-error -1\nrefused card-error -1\nrefused card-removed -1\n"
		"refused no-entitlement -1\n";
	struct fx *f = *state;
	char mock[2048], nfc[2048], info[256];
	char *log;
	int run;

	NEED_EMULATOR(f);
	taps_scenario(f, "taps.txt", taps, sizeof(taps) / sizeof(taps[0]));
	mock_start(f, "taps.txt");
	run = nfc_run(f, "taps.txt", "", 14);
	mock_finish(f, mock, sizeof(mock));
	assert_string_equal(mock, want);
	hmi_view(f, run, nfc, sizeof(nfc), info, sizeof(info));
	print_message("libnfc run:\n%s", nfc);
	assert_string_equal(nfc, mock);
	assert_string_equal(info, "");            /* the reader never went offline */
	journal_check(f, run, 14);
	/* Logs name no card. */
	log = run_file(f, "log", run);
	assert_non_null(log);
	assert_null(strstr(log, "0101020304050607"));
	free(log);
}

/* --inspect through libnfc prints what it prints on the mock: balances, histories, and
 * "history unreadable" for a card that leaves after its balance was read. */
static void test_inspect_equal_mock(void **state)
{
	static const char *const taps[] = { "alice", "bob", "alice remove-after=1", "frank" };
	struct fx *f = *state;
	char reader[600];
	char *mock, *nfc;
	int run_mock, run_nfc;

	NEED_EMULATOR(f);
	taps_scenario(f, "inspect.txt", taps, 4);
	run_mock = term_start(f, "mock:inspect.txt", "--inspect");
	assert_int_equal(term_wait(f), 0);
	emu_start(f, "inspect.txt", "");
	snprintf(reader, sizeof(reader), "libnfc:pn532_uart:%s", f->link);
	run_nfc = term_start(f, reader, "--inspect");
	wait_emu(f, "106B: 1 target", 0, 1);          /* frank, the last tap */
	wait_idle_polls(f);
	assert_int_equal(term_stop(f), 0);
	emu_stop(f);
	mock = run_file(f, "out", run_mock);
	nfc = run_file(f, "out", run_nfc);
	assert_non_null(mock);
	assert_non_null(nfc);
	print_message("libnfc run:\n%s", nfc);
	assert_int_equal(tu_count(mock, "balance 1500 yen"), 2);
	assert_int_equal(tu_count(mock, "history unreadable"), 1);
	assert_int_equal(tu_count(mock, "not a FeliCa card"), 1);
	assert_int_equal(tu_count(mock, "balance 1000 seq"), 1);  /* a history line */
	assert_string_equal(nfc, mock);
	free(mock);
	free(nfc);
}

/* Through the HAL: a Type B card's activation data and APDUs; a FeliCa-only poll does not
 * see it. */
static void test_typeb_apdus(void **state)
{
	static const struct kp_poll poll_b = { KP_TECH_ISO14443B, 0, 0 };
	static const struct kp_poll poll_f = { KP_TECH_FELICA, 0x0003, 1 };
	static const uint8_t atqb[12] = { 0x50, 0xA1, 0xB2, 0xC3, 0xD4, 0, 0, 0, 0, 0x00, 0x81,
	                                  0x71 };
	static const struct { const char *apdu, *reply; } v[] = {
		{ "00A4040C 0A D392F000260100000001", "6A82" },   /* SELECT JPKI */
		{ "00A4040C 0A D3921000310001010408", "6A82" },   /* SELECT by AID, any */
		{ "00B0000007", "6D00" },                        /* READ BINARY: not here */
		{ "00A4", "6700" },                              /* too short */
	};
	struct fx *f = *state;
	struct kp_reader *r = NULL;
	struct kp_card_info info;
	char conn[600], err[256];
	uint8_t tx[64], rx[300], want[8];
	size_t n, rx_len;

	NEED_EMULATOR(f);
	scenario(f, "b.txt", "pace real\n" CARDS "tap +0.3 frank\ntap +2.5 frank\n");
	emu_start(f, "b.txt", "");
	snprintf(conn, sizeof(conn), "libnfc:pn532_uart:%s", f->link);
	assert_int_equal(kp_reader_open(&r, conn), KP_HAL_OK);
	assert_int_equal(kp_reader_wait_card(r, &poll_f, &info, 800), KP_HAL_E_NOCARD);
	assert_int_equal(kp_reader_wait_card(r, &poll_b, &info, TU_WAIT_S * 1000), KP_HAL_OK);
	assert_int_equal(info.tech, KP_TECH_ISO14443B);
	assert_int_equal(info.baud_kbps, 106);
	assert_memory_equal(info.u.b.atqb, atqb, sizeof(atqb));
	assert_memory_equal(info.u.b.pupi, atqb + 1, 4);
	assert_memory_equal(info.u.b.proto_info, atqb + 9, 3);
	for (size_t i = 0; i < sizeof(v) / sizeof(v[0]); i++) {
		n = tu_hex(v[i].apdu, tx, sizeof(tx));
		assert_int_equal(kp_reader_transceive(r, tx, n, rx, sizeof(rx), &rx_len, 200),
		                 KP_HAL_OK);
		assert_int_equal(rx_len, tu_hex(v[i].reply, want, sizeof(want)));
		assert_memory_equal(rx, want, rx_len);
	}
	/* A reply bigger than the caller's buffer. */
	n = tu_hex(v[0].apdu, tx, sizeof(tx));
	assert_int_equal(kp_reader_transceive(r, tx, n, rx, 1, &rx_len, 200), KP_HAL_E_OVERFLOW);
	/* Frames libnfc cannot carry. */
	assert_int_equal(kp_reader_transceive(r, tx, 0, rx, sizeof(rx), &rx_len, 200),
	                 KP_HAL_E_INVAL);
	assert_int_equal(kp_reader_transceive(r, rx, 263, rx, sizeof(rx), &rx_len, 200),
	                 KP_HAL_E_INVAL);
	assert_int_equal(kp_reader_release(r, 1, 500), KP_HAL_OK);
	/* No card selected now. */
	assert_int_equal(kp_reader_transceive(r, tx, n, rx, sizeof(rx), &rx_len, 200),
	                 KP_HAL_E_NOCARD);
	assert_int_equal(kp_reader_last_error(r, err, sizeof(err)), KP_HAL_OK);
	/* Only A, B and FeliCa exist. */
	{
		struct kp_poll none = { 0, 0, 0 };

		assert_int_equal(kp_reader_wait_card(r, &none, &info, 0), KP_HAL_E_INVAL);
	}
	kp_reader_close(r);
	emu_stop(f);
}

/* Through the HAL: a card taken away (SIGUSR1) after its balance read: the next frame
 * gets KP_HAL_E_TIMEOUT, and release sees it gone without waiting out its timeout. */
static void test_card_removed_mid_read(void **state)
{
	static const struct kp_poll poll = { KP_TECH_FELICA | KP_TECH_ISO14443B, 0x0003, 1 };
	struct fx *f = *state;
	struct kp_reader *r = NULL;
	struct kp_card_info info;
	struct kp_felica fel;
	struct kp_transit_balance bal;
	struct kp_transit_history h[KP_FELICA_HISTORY_BLOCKS];
	char conn[600], err[256];
	int64_t t;
	int cmds;

	NEED_EMULATOR(f);
	scenario(f, "rm.txt", "pace real\n" CARDS "tap +0.3 alice\ntap +6 alice\n");
	emu_start(f, "rm.txt", "");
	snprintf(conn, sizeof(conn), "libnfc:pn532_uart:%s", f->link);
	assert_int_equal(kp_reader_open(&r, conn), KP_HAL_OK);
	assert_int_equal(kp_reader_wait_card(r, &poll, &info, TU_WAIT_S * 1000), KP_HAL_OK);
	assert_int_equal(info.tech, KP_TECH_FELICA);
	/* 212 or 424: the card may come into the field between the two polls of a round. */
	assert_true(info.baud_kbps == 212 || info.baud_kbps == 424);
	assert_int_equal(info.u.felica.has_sys_code, 1);
	assert_int_equal(info.u.felica.sys_code[0], 0x00);
	assert_int_equal(info.u.felica.sys_code[1], 0x03);
	kp_felica_init(&fel, r, &info, 100);
	assert_int_equal(kp_transit_read_balance(&fel, &bal), KP_OK);
	assert_int_equal(bal.balance, 1500);
	kill(f->emu, SIGUSR1);
	wait_emu(f, "SIGUSR1: card taken out of the field", 0, 1);
	assert_int_equal(kp_transit_read_history(&fel, h), KP_HAL_E_TIMEOUT);
	assert_int_equal(kp_reader_last_error(r, err, sizeof(err)), KP_HAL_OK);
	print_message("libnfc said: %s\n", err);
	assert_non_null(strstr(err, "transceive"));
	/* Counted in the emulator's commands, not in time: one presence check sees the card
	 * gone (waiting out the timeout would be one check every few ms for 2 s). */
	cmds = emu_count(f, " bytes)");
	assert_int_equal(kp_reader_release(r, 1, 2000), KP_HAL_OK);
	cmds = emu_count(f, " bytes)") - cmds;
	print_message("release: %d command(s) to the reader\n", cmds);
	assert_true(cmds >= 1 && cmds <= RELEASE_GONE_CMDS);
	/* A card held on the reader is one tap: the second tap of alice is due at +6 s, so
	 * until then polling finds nothing. */
	assert_int_equal(kp_reader_wait_card(r, &poll, &info, 500), KP_HAL_E_NOCARD);
	assert_int_equal(kp_reader_wait_card(r, &poll, &info, TU_WAIT_S * 1000), KP_HAL_OK);
	t = tu_mono_ms();
	assert_int_equal(kp_reader_release(r, 1, 300), KP_HAL_E_TIMEOUT); /* it stays */
	assert_true(tu_mono_ms() - t >= 300);
	kp_reader_close(r);
	emu_stop(f);
}

/* The reader vanishes (SIGUSR2) after two taps: the rider sees "reader offline" once; it
 * comes back (SIGUSR2): "reader online", and the later taps are decided as on the mock. */
static void test_reader_vanishes_and_returns(void **state)
{
	struct fx *f = *state;
	char reader[600], mock[512], nfc[512], info[256];
	char *log;
	int run;

	NEED_EMULATOR(f);
	scenario(f, "v.txt", "pace real\n" CARDS
	         "tap +0.5 alice\ntap +1.0 erin\ntap +9.0 bob\ntap +9.5 erin\n");
	mock_start(f, "v.txt");
	emu_start(f, "v.txt", "");
	snprintf(reader, sizeof(reader), "libnfc:pn532_uart:%s", f->link);
	run = term_start(f, reader, "");
	wait_hmi(f, run, "show ", 2);
	kill(f->emu, SIGUSR2);                                    /* unplugged */
	wait_hmi(f, run, "reader-offline", 1);
	kill(f->emu, SIGUSR2);                                    /* plugged in again */
	wait_hmi(f, run, "reader-online", 1);
	wait_hmi(f, run, "show ", 6);
	wait_idle_polls(f);
	assert_int_equal(term_stop(f), 0);
	emu_stop(f);
	mock_finish(f, mock, sizeof(mock));
	assert_string_equal(mock, "accepted ok 2\nrefused no-entitlement -1\n"
	                          "accepted ok 0\nrefused no-entitlement -1\n");
	hmi_view(f, run, nfc, sizeof(nfc), info, sizeof(info));
	assert_string_equal(nfc, mock);
	/* offline once after the second tap, online once before the third */
	assert_string_equal(info, "reader-offline@2\nreader-online@2\n");
	journal_check(f, run, 4);
	log = run_file(f, "log", run);
	assert_non_null(log);
	assert_int_equal(tu_count(log, "offline"), 1);
	assert_int_equal(tu_count(log, "reader online"), 1);
	assert_non_null(strstr(log, "libnfc"));                   /* libnfc's own words */
	free(log);
}

/* The first InDataExchange (the balance read of the first tap) and every command after
 * it get a malformed reply: that tap is refused as on the mock with the matching card
 * fault, nothing is half recorded, the reader goes offline once and stays so. In virtual
 * pace the emulator's first poll finds the first card, so that exchange is always the
 * same command number (libnfc opens a reader the same way every time). */
static void malformed(struct fx *f, const char *fault, unsigned long first_exchange,
                      const char *mock_fault)
{
	char scn[1024], extra[128], mock[256], nfc[256], info[128], reader[600], log[700];
	int run;

	snprintf(scn, sizeof(scn), "pace virtual\n" CARDS "tap +0 alice %s\n", mock_fault);
	scenario(f, "mm.txt", scn);
	mock_start(f, "mm.txt");
	snprintf(extra, sizeof(extra), "--fault %s --fault-after %lu", fault, first_exchange);
	emu_start(f, "m.txt", extra);
	snprintf(reader, sizeof(reader), "libnfc:pn532_uart:%s", f->link);
	run = term_start(f, reader, "");
	wait_hmi(f, run, "reader-offline", 1);
	snprintf(log, sizeof(log), "%s/log-%d.txt", f->dir, run);    /* a reopen or two, */
	tu_wait_text(log, "reader failure; next attempt in", 2, TU_WAIT_S);     /* all failing */
	assert_int_equal(term_stop(f), 0);
	emu_stop(f);
	mock_finish(f, mock, sizeof(mock));
	hmi_view(f, run, nfc, sizeof(nfc), info, sizeof(info));
	print_message("%s: %s", fault, nfc);
	assert_string_equal(nfc, mock);
	assert_string_equal(info, "reader-offline@1\n");
	journal_check(f, run, 1);
}

static void test_malformed_frames(void **state)
{
	struct fx *f = *state;
	char reader[600], path[512], *log;
	unsigned long first_exchange = 0;
	int run;

	NEED_EMULATOR(f);
	scenario(f, "m.txt", "pace virtual\n" CARDS "tap +0 alice\n");
	emu_start(f, "m.txt", "");
	snprintf(reader, sizeof(reader), "libnfc:pn532_uart:%s", f->link);
	run = term_start(f, reader, "");
	wait_hmi(f, run, "show ", 1);
	assert_int_equal(term_stop(f), 0);
	emu_stop(f);
	path_of(f, "emu.log", path, sizeof(path));
	log = tu_read(path);
	assert_non_null(log);
	for (char *p = log; (p = strstr(p, " #")) != NULL; p++) {
		unsigned long k;
		char code[4];

		if (sscanf(p, " #%lu %2s", &k, code) == 2 && strcmp(code, "40") == 0) {
			first_exchange = k;
			break;
		}
	}
	free(log);
	print_message("the first InDataExchange is command %lu\n", first_exchange);
	assert_true(first_exchange > 1);
	/* A reply libnfc reads as broken (bad checksum, garbage, a reply where the ACK should
	 * be) is a card error; one that never comes whole is a card that did not answer. */
	malformed(f, "checksum", first_exchange, "fault=garbage");
	malformed(f, "garbage", first_exchange, "fault=garbage");
	malformed(f, "noack", first_exchange, "fault=garbage");
	malformed(f, "truncate", first_exchange, "fault=silent");
}

/* A reader that cannot be opened: the terminal starts anyway, shows "reader offline"
 * once and retries 0.5, 1, 2 s apart; when the device appears it shows "reader online"
 * and takes taps. */
static void test_open_fails_backoff(void **state)
{
	struct fx *f = *state;
	char reader[600], info[128], view[64], path[600];
	char *log;
	int run;

	NEED_EMULATOR(f);
	scenario(f, "o.txt", "pace real\n" CARDS "tap +2.0 alice\n");
	snprintf(reader, sizeof(reader), "libnfc:pn532_uart:%s", f->link);
	run = term_start(f, reader, "");              /* nothing at the link yet */
	/* Attempts at 0, 0.5, 1.5 and 3.5 s: the device appears after the third failed. */
	snprintf(path, sizeof(path), "%s/log-%d.txt", f->dir, run);
	tu_wait_text(path, "next attempt in 2000 ms", 1, TU_WAIT_S);
	emu_start(f, "o.txt", "");
	wait_hmi(f, run, "reader-online", 1);
	wait_hmi(f, run, "accepted", 1);
	assert_int_equal(term_stop(f), 0);
	emu_stop(f);
	hmi_view(f, run, view, sizeof(view), info, sizeof(info));
	assert_string_equal(view, "accepted ok 2\n");
	assert_string_equal(info, "reader-offline@0\nreader-online@0\n");
	log = run_file(f, "log", run);
	assert_non_null(log);
	assert_non_null(strstr(log, "reopening in 500 ms"));
	assert_non_null(strstr(log, "next attempt in 1000 ms"));
	assert_non_null(strstr(log, "next attempt in 2000 ms"));
	assert_null(strstr(log, "next attempt in 4000 ms"));
	free(log);
	journal_check(f, run, 1);
}

/* A slow reader: replies 40 ms late are within the 100 ms card timeout (same results as
 * the mock); 250 ms late is beyond it, and every FeliCa tap is refused as a card that did
 * not answer, exactly as the mock refuses silent cards. */
static void test_slow_reader(void **state)
{
	static const char *const taps[] = { "alice", "bob", "frank", "erin" };
	static const char *const silent[] = { "alice fault=silent", "bob fault=silent", "frank",
	                                      "erin fault=silent" };
	struct fx *f = *state;
	char mock[512], nfc[512], info[128];
	int run;

	NEED_EMULATOR(f);
	taps_scenario(f, "s.txt", taps, 4);
	mock_start(f, "s.txt");
	run = nfc_run(f, "s.txt", "--slow-ms 40", 4);
	mock_finish(f, mock, sizeof(mock));
	assert_string_equal(mock, "accepted ok 2\naccepted ok 0\nrefused unsupported-card -1\n"
	                          "refused no-entitlement -1\n");
	hmi_view(f, run, nfc, sizeof(nfc), info, sizeof(info));
	assert_string_equal(nfc, mock);
	assert_string_equal(info, "");

	/* 250 ms: the gap between taps must cover a read that times out and a release. */
	taps_scenario_gap(f, "s2.txt", silent, 4, 1.0);
	taps_scenario_gap(f, "s3.txt", taps, 4, 1.0);
	mock_start(f, "s2.txt");
	run = nfc_run(f, "s3.txt", "--slow-ms 250", 4);
	mock_finish(f, mock, sizeof(mock));
	assert_string_equal(mock, "refused card-removed -1\nrefused card-removed -1\n"
	                          "refused unsupported-card -1\nrefused card-removed -1\n");
	hmi_view(f, run, nfc, sizeof(nfc), info, sizeof(info));
	assert_string_equal(nfc, mock);
	assert_string_equal(info, "");
	journal_check(f, run, 4);
}

/* The My Number flows through Debian's libnfc and the emulator, as on mock:: a card
 * tapped directly (certificate read in chunks over InDataExchange, checked, a pass bound
 * to its linkage used), a foreign Type B card, and link mode at a counter (PIN, then the
 * card signs a challenge with its RSA key inside the emulator, then a Suica). */
static void test_mynumber_equal_mock(void **state)
{
	static const char want[] =
		"accepted ok 2\nrefused unsupported-card -1\naccepted ok 1\n";
	struct fx *f = *state;
	char mock[1024], nfc[1024], info[256], path[600];
	char *hmi;
	int run;

	NEED_EMULATOR(f);
	assert_int_equal(tu_sh("cd %s && %s/kippuctl jpki ca create --key jca.key --cert jca.crt "
	                       ">/dev/null && %s/kippuctl jpki card create --ca-key jca.key "
	                       "--ca-cert jca.crt --dir hanako --serial 7 >/dev/null && "
	                       "echo 'jpki_ca = jca.crt' >> terminal.conf && "
	                       "L=$(%s/kippuctl linkage token --token-key token.key --cert "
	                       "hanako/auth.der --jpki-ca jca.crt) && printf 'entitlement 2001 token:%%s P10 3 "
	                       "2000-01-01T00:00:00Z 2099-01-01T00:00:00Z\\n' $L > my-load.txt && "
	                       "%s/kippuctl load base.db my-load.txt --token-key token.key >/dev/null",
	                       f->dir, f->bin, f->bin, f->bin, f->bin), 0);
	/* The mock's clock must agree with the certificates, made just now. */
	{
		char text[2048];

		snprintf(text, sizeof(text), "start %lld\npace real\n" CARDS
		         "card hanako mynumber dir=hanako pin=4321\n"
		         "tap +0.4 hanako\ntap +1.2 frank\ntap +3.6 hanako\n", (long long)time(NULL));
		scenario(f, "my.txt", text);
	}
	mock_start(f, "my.txt");
	run = nfc_run(f, "my.txt", "", 3);
	mock_finish(f, mock, sizeof(mock));
	assert_string_equal(mock, want);
	hmi_view(f, run, nfc, sizeof(nfc), info, sizeof(info));
	print_message("libnfc run:\n%s", nfc);
	assert_string_equal(nfc, mock);
	journal_check(f, run, 3);

	/* Link mode through the emulator: the card's signature is made by the emulator. */
	path_of(f, "pin.txt", path, sizeof(path));
	tu_write(path, "4321\n");
	scenario(f, "link.txt", "pace real\n" CARDS "card hanako mynumber dir=hanako pin=4321\n"
	                        "tap +0.4 hanako\ntap +1.6 erin\n");
	emu_start(f, "link.txt", "");
	snprintf(path, sizeof(path), "libnfc:pn532_uart:%s", f->link);
	run = term_start(f, path, "--link-mode --pin-file pin.txt --offline");
	wait_hmi(f, run, "info link-request", 1);
	assert_int_equal(term_stop(f), 0);
	emu_stop(f);
	hmi = run_file(f, "hmi", run);
	assert_non_null(hmi);
	assert_non_null(strstr(hmi, "info link-ready"));
	free(hmi);
	journal_check(f, run, 1);
}

/* The tests below run between setup_terminal and teardown unless their row names others. */
#define FX_TEST(test) cmocka_unit_test_setup_teardown(test, setup_terminal, teardown)

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_parse_conn),
		cmocka_unit_test(test_map_error),
		cmocka_unit_test_setup_teardown(test_open_errors, setup, teardown),
		cmocka_unit_test_setup_teardown(test_notsup, setup, teardown),
		cmocka_unit_test_setup_teardown(test_list_readers, setup, teardown),
		FX_TEST(test_taps_equal_mock),
		FX_TEST(test_inspect_equal_mock),
		cmocka_unit_test_setup_teardown(test_typeb_apdus, setup, teardown),
		cmocka_unit_test_setup_teardown(test_card_removed_mid_read, setup, teardown),
		FX_TEST(test_reader_vanishes_and_returns),
		FX_TEST(test_malformed_frames),
		FX_TEST(test_open_fails_backoff),
		FX_TEST(test_slow_reader),
		FX_TEST(test_mynumber_equal_mock),
	};

	return cmocka_run_group_tests_name("libnfc", tests, NULL, NULL);
}
