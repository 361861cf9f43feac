/* SPDX-License-Identifier: Apache-2.0 */
/* kippu-pn532-emu, the PN532 emulator on a pseudo-terminal: Debian's unmodified libnfc
 * (its nfc-list tool) lists the scenario's FeliCa and Type B cards through it, and
 * hand-built host frames check the protocol byte by byte: wake-up, ACKs, bad checksums,
 * extended frames, registers, activation, InDataExchange through the card model, the
 * host's abort, SIGUSR1 removal, SIGUSR2 vanishing, NACK, every fault mode, --slow-ms and
 * the command line. Each test starts its own emulator in a mkdtemp folder. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <termios.h>
#include <time.h>
#include <unistd.h>

#include <cmocka.h>

#include "testutil.h"

#define IDM     "0101020304050607"
#define PMM     "0120220427674EFF"
#define BAL1    "0000000000000000 200000 DC05 00 0000" /* type 2, 1500, no history */
#define RD_BAL  "10 06" IDM "01 8B00 01 8000"      /* Read 008B block 0 */
#define ACK     "00 00 FF 00 FF 00"
#define ERRFR   "00 00 FF 01 FF 7F 81 00"

struct fx {
	char dir[64];
	char link[128];
	char pty[256];
	pid_t pid;
	int out_fd;                       /* the emulator's stdout */
	int fd;                           /* our side of the pty, for hand-built frames */
	int64_t t0;                       /* when the emulator said it was ready */
};

/* How long a read waits for bytes the emulator must send: a bound, not a speed. */
#define WAIT_MS (TU_WAIT_S * 1000)

static int fx_setup(void **state)
{
	struct fx *f = calloc(1, sizeof(*f));

	if (f == NULL)
		return -1;
	tu_tmpdir(f->dir, sizeof(f->dir));
	snprintf(f->link, sizeof(f->link), "%s/pn532", f->dir);
	f->pid = -1;
	f->out_fd = -1;
	f->fd = -1;
	*state = f;
	return 0;
}

static int fx_teardown(void **state)
{
	struct fx *f = *state;

	if (f->fd >= 0)
		close(f->fd);
	if (f->pid > 0) {
		kill(f->pid, SIGKILL);
		waitpid(f->pid, NULL, 0);
	}
	if (f->out_fd >= 0)
		close(f->out_fd);
	tu_rmdir(f->dir);
	free(f);
	return 0;
}

/* Starts the emulator on scenario text with extra options; waits for its pty line. */
static void emu_start(struct fx *f, const char *scenario, const char *extra)
{
	char path[160], line[256];
	const char *prefix = "kippu-pn532-emu: pty ";

	snprintf(path, sizeof(path), "%s/scenario.txt", f->dir);
	tu_write(path, scenario);
	f->pid = tu_spawn_piped(&f->out_fd, "exec %s/kippu-pn532-emu --scenario %s --link %s "
	                        "--log %s/emu.log %s", tu_bin(), path, f->link, f->dir, extra);
	tu_read_line(f->out_fd, line, sizeof(line), tu_mono_ms() + WAIT_MS, "the emulator");
	f->t0 = tu_mono_ms();
	assert_memory_equal(line, prefix, strlen(prefix));
	snprintf(f->pty, sizeof(f->pty), "%s", line + strlen(prefix));
	assert_memory_equal(f->pty, "/dev/pts/", 9);
	{
		char target[64];
		ssize_t k = readlink(f->link, target, sizeof(target) - 1);

		assert_true(k > 0);
		target[k] = '\0';
		assert_string_equal(target, f->pty);
	}
}

/* SIGTERM: exits 0 and takes its link away. */
static void emu_stop(struct fx *f)
{
	struct stat st;
	pid_t pid = f->pid;

	assert_int_equal(kill(pid, SIGTERM), 0);
	f->pid = -1;
	assert_int_equal(tu_wait_pid(pid, TU_WAIT_S, "kippu-pn532-emu after SIGTERM"), 0);
	assert_int_equal(lstat(f->link, &st), -1);
}

static void pty_open(struct fx *f)
{
	struct termios tio;

	f->fd = open(f->link, O_RDWR | O_NOCTTY | O_NONBLOCK);
	assert_true(f->fd >= 0);
	assert_int_equal(tcgetattr(f->fd, &tio), 0);
	cfmakeraw(&tio);
	assert_int_equal(tcsetattr(f->fd, TCSANOW, &tio), 0);
}

static void wr(struct fx *f, const uint8_t *buf, size_t n)
{
	assert_int_equal(write(f->fd, buf, n), (ssize_t)n);
}

static void wr_hex(struct fx *f, const char *hex)
{
	uint8_t buf[600];
	size_t n = tu_hex(hex, buf, sizeof(buf));

	wr(f, buf, n);
}

/* Reads up to n bytes, waiting at most ms in all; returns how many came. */
static size_t rd(struct fx *f, uint8_t *buf, size_t n, int ms)
{
	int64_t deadline = tu_mono_ms() + ms;
	size_t got = 0;

	while (got < n) {
		struct pollfd pfd = { .fd = f->fd, .events = POLLIN };
		int64_t left = deadline - tu_mono_ms();
		ssize_t r;

		if (left <= 0 || poll(&pfd, 1, (int)left) <= 0)
			break;
		r = read(f->fd, buf + got, n - got);
		if (r > 0)
			got += (size_t)r;
	}
	return got;
}

/* Waits until the emulator's log holds what n times (a signal it has acted on). */
static void emu_logged(struct fx *f, const char *what, int n)
{
	char path[300];

	snprintf(path, sizeof(path), "%s/emu.log", f->dir);
	tu_wait_text(path, what, n, TU_WAIT_S);
}

static void expect_silence(struct fx *f, const char *what, int ms)
{
	uint8_t buf[64];
	size_t n = rd(f, buf, sizeof(buf), ms);

	if (n != 0)
		fail_msg("%s: %zu unexpected bytes (first %02X)", what, n, buf[0]);
}

static void expect_bytes(struct fx *f, const char *what, const char *want_hex)
{
	uint8_t want[600], got[600];
	size_t n = tu_hex(want_hex, want, sizeof(want));

	tu_expect_hex(what, got, rd(f, got, n, WAIT_MS), want_hex);
}

/* A host frame around D4 + data: the normal form, or the extended one when asked. */
static size_t build_frame(const uint8_t *data, size_t n, int extended, uint8_t *out)
{
	size_t k = 0, len = n + 1;
	uint8_t sum = 0xD4;

	out[k++] = 0x00;
	out[k++] = 0x00;
	out[k++] = 0xFF;
	if (extended) {
		out[k++] = 0xFF;
		out[k++] = 0xFF;
		out[k++] = (uint8_t)(len >> 8);
		out[k++] = (uint8_t)len;
		out[k++] = (uint8_t)(0x100 - ((len >> 8) + (len & 0xFF)));
	} else {
		out[k++] = (uint8_t)len;
		out[k++] = (uint8_t)(0x100 - len);
	}
	out[k++] = 0xD4;
	memcpy(out + k, data, n);
	k += n;
	for (size_t i = 0; i < n; i++)
		sum = (uint8_t)(sum + data[i]);
	out[k++] = (uint8_t)(0x100 - sum);
	out[k++] = 0x00;
	return k;
}

static void send_cmd_bytes(struct fx *f, const uint8_t *data, size_t n, int extended)
{
	uint8_t frame[700];

	wr(f, frame, build_frame(data, n, extended, frame));
}

static void send_cmd(struct fx *f, const char *hex)
{
	uint8_t data[600];

	send_cmd_bytes(f, data, tu_hex(hex, data, sizeof(data)), 0);
}

/* Reads one chip frame and checks its length and data checksums; returns the bytes after
 * D5 in out (*extended tells which form came). */
static size_t read_reply(struct fx *f, const char *what, uint8_t *out, size_t cap, int *extended)
{
	uint8_t h[8], body[300];
	size_t len, hdr = 5;
	uint8_t sum = 0;

	if (rd(f, h, 5, WAIT_MS) != 5)
		fail_msg("%s: no reply frame", what);
	if (h[0] != 0x00 || h[1] != 0x00 || h[2] != 0xFF)
		fail_msg("%s: bad start %02X %02X %02X", what, h[0], h[1], h[2]);
	*extended = h[3] == 0xFF && h[4] == 0xFF;
	if (*extended) {
		assert_int_equal(rd(f, h + 5, 3, WAIT_MS), 3);
		assert_int_equal((uint8_t)(h[5] + h[6] + h[7]), 0);
		len = (size_t)h[5] << 8 | h[6];
		hdr = 8;
	} else {
		assert_int_equal((uint8_t)(h[3] + h[4]), 0);
		len = h[3];
	}
	(void)hdr;
	assert_true(len >= 2 && len + 2 <= sizeof(body));
	if (rd(f, body, len + 2, WAIT_MS) != len + 2)
		fail_msg("%s: reply cut short", what);
	for (size_t i = 0; i <= len; i++)
		sum = (uint8_t)(sum + body[i]);
	assert_int_equal(sum, 0);
	assert_int_equal(body[len + 1], 0x00);
	assert_int_equal(body[0], 0xD5);
	assert_true(len - 1 <= cap);
	memcpy(out, body + 1, len - 1);
	return len - 1;
}

static void expect_reply(struct fx *f, const char *what, const char *want_hex)
{
	uint8_t want[600], got[600];
	size_t n = tu_hex(want_hex, want, sizeof(want));
	int ext;
	size_t g;

	expect_bytes(f, what, ACK);
	g = read_reply(f, what, got, sizeof(got), &ext);
	if (g != n || memcmp(got, want, n) != 0) {
		fprintf(stderr, "%s: want %s\ngot (%zu):", what, want_hex, g);
		for (size_t i = 0; i < g; i++)
			fprintf(stderr, " %02X", got[i]);
		fprintf(stderr, "\n");
		fail_msg("%s: reply differs", what);
	}
}

static void xchg(struct fx *f, const char *what, const char *cmd_hex, const char *reply_hex)
{
	send_cmd(f, cmd_hex);
	expect_reply(f, what, reply_hex);
}

/* ---- libnfc's own nfc-list against the emulator ---- */

static char *nfc_list(struct fx *f, const char *types, const char *name)
{
	char path[160];

	snprintf(path, sizeof(path), "%s/%s", f->dir, name);
	assert_int_equal(tu_sh("LIBNFC_DEVICE=pn532_uart:%s LIBNFC_AUTO_SCAN=false "
	                       "LIBNFC_LOG_LEVEL=1 nfc-list -t %s > %s 2>&1", f->link, types, path),
	                 0);
	return tu_read(path);
}

static void test_nfc_list(void **state)
{
	struct fx *f = *state;
	char *out;

	emu_start(f, "pace real\n"
	             "card alice felica idm=" IDM " pmm=" PMM "\n"
	             "card bob typeb pupi=A1B2C3D4 app=11223344\n"
	             "tap +0 alice\n"
	             "tap +1.5 bob\n", "");
	/* alice is in the field from the start: a FeliCa listing finds her. */
	out = nfc_list(f, "2", "felica.txt");
	assert_non_null(out);
	if (strstr(out, "1 Felica (212 kbps) passive target(s) found") == NULL ||
	    strstr(out, "ID (NFCID2): 01  01  02  03  04  05  06  07") == NULL ||
	    strstr(out, "Parameter (PAD): 01  20  22  04  27  67  4e  ff") == NULL ||
	    strstr(out, "System Code (SC): 00  03") == NULL)
		fail_msg("nfc-list -t 2 printed:\n%s", out);
	free(out);
	/* bob (+1.5 s) is polled for FeliCa first, then for Type B, which finds him: the
	 * card stays in the field across the poll it did not answer. */
	tu_sleep_ms(1600 - (tu_mono_ms() - f->t0));
	out = nfc_list(f, "10", "typeb.txt");
	assert_non_null(out);
	if (strstr(out, "1 ISO14443B passive target(s) found") == NULL ||
	    strstr(out, "PUPI: a1  b2  c3  d4") == NULL ||
	    strstr(out, "Application Data: 11  22  33  44") == NULL ||
	    strstr(out, "Protocol Info: 00  81  71") == NULL || strstr(out, "Felica") != NULL)
		fail_msg("nfc-list -t 10 printed:\n%s", out);
	free(out);
	/* No taps left: a listing finds nothing, and the emulator keeps serving. */
	out = nfc_list(f, "10", "none.txt");
	assert_non_null(out);
	if (strstr(out, "NFC device:") == NULL || strstr(out, "target(s) found") != NULL)
		fail_msg("nfc-list after the last tap printed:\n%s", out);
	free(out);
	emu_stop(f);
}

/* A reader that never ACKs cannot be opened. */
static void test_nfc_list_noack(void **state)
{
	struct fx *f = *state;
	char path[160], *out;

	emu_start(f, "card alice felica idm=" IDM "\ntap +0 alice\n", "--fault noack");
	snprintf(path, sizeof(path), "%s/noack.txt", f->dir);
	/* nfc-list exits 0 even then: its output says what happened. */
	tu_sh("LIBNFC_DEVICE=pn532_uart:%s LIBNFC_AUTO_SCAN=false nfc-list -t 2 > %s 2>&1",
	      f->link, path);
	out = tu_read(path);
	assert_non_null(out);
	if (strstr(out, "Unable to open NFC device") == NULL)
		fail_msg("nfc-list printed:\n%s", out);
	free(out);
	emu_stop(f);
}

/* ---- hand-built frames ---- */

static void test_frames(void **state)
{
	struct fx *f = *state;
	uint8_t data[300], got[300];
	size_t n;
	int ext;

	emu_start(f, "card alice felica idm=" IDM " balance=1500 cardtype=2\n"
	             "tap +0 alice\ntap +1 alice\n", "");
	pty_open(f);

	/* Wake-up preamble, then SAMConfiguration; only the frame is answered. */
	wr_hex(f, "55 55 00 00 00 00 00 00 00 00 00 00 00 00 00 00");
	xchg(f, "SAMConfiguration", "14 01", "15");
	xchg(f, "Diagnose echo", "00 00 6C 69 62 6E 66 63", "01 00 6C 69 62 6E 66 63");
	xchg(f, "GetFirmwareVersion", "02", "03 32 01 06 07");

	/* A bad data checksum or length checksum: ignored, no ACK. */
	wr_hex(f, "00 00 FF 02 FE D4 02 2B 00");
	expect_silence(f, "bad DCS", 150);
	wr_hex(f, "00 00 FF 02 FD D4 02 2A 00");
	expect_silence(f, "bad LCS", 150);
	/* Junk before a good frame is skipped. */
	wr_hex(f, "12 34 00 FF 55");
	xchg(f, "after junk", "02", "03 32 01 06 07");
	/* A frame the host never finishes is dropped; the next one is served. */
	wr_hex(f, "00 00 FF 05 FB D4 00");
	expect_silence(f, "cut-short frame", 400);
	xchg(f, "after a cut-short frame", "02", "03 32 01 06 07");

	/* Extended frames, both ways. */
	data[0] = 0x00;
	data[1] = 0x00;
	for (size_t i = 0; i < 250; i++)
		data[2 + i] = (uint8_t)i;
	send_cmd_bytes(f, data, 252, 1);
	expect_bytes(f, "extended ACK", ACK);
	n = read_reply(f, "extended in, normal out", got, sizeof(got), &ext);
	assert_int_equal(ext, 0);
	assert_int_equal(n, 252);
	assert_int_equal(got[0], 0x01);
	assert_memory_equal(got + 1, data + 1, 251);
	for (size_t i = 250; i < 260; i++)
		data[2 + i] = (uint8_t)i;
	send_cmd_bytes(f, data, 262, 1);
	expect_bytes(f, "extended ACK 2", ACK);
	n = read_reply(f, "extended both ways", got, sizeof(got), &ext);
	assert_int_equal(ext, 1);
	assert_int_equal(n, 262);
	assert_memory_equal(got + 1, data + 1, 261);

	/* Unknown commands and bad parameters: ACK, then the syntax-error frame. */
	send_cmd(f, "8C 00");
	expect_bytes(f, "TgInitAsTarget", ACK ERRFR);
	send_cmd(f, "32 05 00");
	expect_bytes(f, "RFConfiguration too short", ACK ERRFR);
	send_cmd(f, "4A 01 01 00 FF FF");
	expect_bytes(f, "FeliCa payload too short", ACK ERRFR);

	/* Registers: plausible reset values, and writes are remembered. */
	xchg(f, "ReadRegister", "06 63 02 63 3C 12 34", "07 00 10 00");
	xchg(f, "WriteRegister", "08 63 02 80 12 34 56", "09");
	xchg(f, "ReadRegister again", "06 63 02 12 34 63 03", "07 80 56 00");
	xchg(f, "SetParameters", "12 14", "13");
	xchg(f, "RFConfiguration field", "32 01 01", "33");
	xchg(f, "RFConfiguration MaxRetries: poll once", "32 05 00 01 02", "33");

	/* No target yet. */
	xchg(f, "InDataExchange without a target", "40 01 0A 04" IDM, "41 27");
	/* Activation: the card model's Polling reply, with the system code (RC 01). */
	xchg(f, "InListPassiveTarget FeliCa", "4A 01 01 00 FF FF 01 00",
	     "4B 01 01 14 01" IDM PMM "00 03");
	xchg(f, "GetGeneralStatus", "04", "05 00 01 01 01 01 01 10 00");
	xchg(f, "InDataExchange read", "40 01" RD_BAL, "41 00 1D 07" IDM "00 00 01" BAL1);
	xchg(f, "InDataExchange, another IDm", "40 01 0A 04 0101020304050608", "41 01");
	xchg(f, "card presence", "00 06", "01 00");
	/* NACK: the last reply again, without an ACK. */
	wr_hex(f, "00 00 FF FF 00 00");
	n = read_reply(f, "NACK", got, sizeof(got), &ext);
	assert_int_equal(n, 2);
	assert_memory_equal(got, "\x01\x00", 2);

	/* SIGUSR1 takes the card away: the RF layer times out. */
	assert_int_equal(kill(f->pid, SIGUSR1), 0);
	emu_logged(f, "SIGUSR1: card taken out of the field", 1);
	xchg(f, "InDataExchange after SIGUSR1", "40 01" RD_BAL, "41 01");
	xchg(f, "card presence after SIGUSR1", "00 06", "01 01");
	xchg(f, "InRelease", "52 00", "53 00");
	xchg(f, "InDataExchange after InRelease", "40 01" RD_BAL, "41 27");

	/* Poll until a card comes: a Type B poll finds nothing (alice's second tap is FeliCa
	 * and leaves unanswered), so the chip waits until the host's ACK aborts it. */
	xchg(f, "RFConfiguration MaxRetries: forever", "32 05 FF 01 FF", "33");
	send_cmd(f, "4A 01 03 00");
	expect_bytes(f, "InListPassiveTarget B, ACK", ACK);
	expect_silence(f, "InListPassiveTarget B, waiting", 300);
	wr_hex(f, ACK);
	expect_silence(f, "after the abort", 150);
	xchg(f, "after the abort", "02", "03 32 01 06 07");

	/* No taps left: no card, and the emulator keeps serving. */
	xchg(f, "RFConfiguration MaxRetries: poll once", "32 05 00 01 02", "33");
	xchg(f, "no taps left", "4A 01 01 00 FF FF 01 00", "4B 00");
	xchg(f, "InCommunicateThru", "42 26", "43 01");
	xchg(f, "InDeselect", "44 00", "45 00");
	xchg(f, "PowerDown", "16 F0", "17 00");

	/* SIGUSR2: an unplugged reader answers nothing; a second SIGUSR2 brings it back. */
	assert_int_equal(kill(f->pid, SIGUSR2), 0);
	emu_logged(f, "SIGUSR2: vanished", 1);
	send_cmd(f, "02");
	expect_silence(f, "vanished", 300);
	assert_int_equal(kill(f->pid, SIGUSR2), 0);
	emu_logged(f, "SIGUSR2: back", 1);
	wr_hex(f, "55 55 00 00 00");
	xchg(f, "back again", "02", "03 32 01 06 07");
	emu_stop(f);
}

/* InDataExchange to a Type B card (an APDU), and InAutoPoll. */
static void test_typeb_autopoll(void **state)
{
	struct fx *f = *state;

	emu_start(f, "card bob typeb pupi=A1B2C3D4\ncard alice felica idm=" IDM "\n"
	             "tap +0 bob\ntap +1 alice\n", "");
	pty_open(f);
	xchg(f, "SAMConfiguration", "14 01", "15");
	xchg(f, "RFConfiguration MaxRetries: poll once", "32 05 00 01 02", "33");
	xchg(f, "InListPassiveTarget FeliCa misses bob", "4A 01 01 00 FF FF 01 00", "4B 00");
	xchg(f, "InListPassiveTarget B", "4A 01 03 00",
	     "4B 01 01 50 A1B2C3D4 00000000 008171 01 00");
	xchg(f, "SELECT", "40 01 00 A4 04 0C 02 1234", "41 00 6A 82");
	/* InAutoPoll: FeliCa 212 and Type B, 2 rounds, 150 ms apart. */
	xchg(f, "InAutoPoll", "60 02 01 11 03", "61 01 11 13 01 12 01" IDM PMM);
	xchg(f, "InAutoPoll, nothing left", "60 01 01 11 03", "61 00");
	emu_stop(f);
}

/* ---- faults ---- */

static const char fault_scn[] = "card alice felica idm=" IDM "\ntap +0 alice\n";

static void test_fault_checksum(void **state)
{
	struct fx *f = *state;
	uint8_t buf[16];

	emu_start(f, fault_scn, "--fault checksum --fault-after 3");
	pty_open(f);
	xchg(f, "command 1", "14 01", "15");
	xchg(f, "command 2", "02", "03 32 01 06 07");
	send_cmd(f, "02");
	/* D5 03 32 01 06 07: DCS would be 100 - (D5+03+32+01+06+07) = E8 */
	expect_bytes(f, "command 3", ACK "00 00 FF 06 FA D5 03 32 01 06 07 E9 00");
	send_cmd(f, "02");
	assert_int_equal(rd(f, buf, 6, WAIT_MS), 6);
	expect_bytes(f, "command 4", "00 00 FF 06 FA D5 03 32 01 06 07 E9 00");
	emu_stop(f);
}

static void test_fault_truncate(void **state)
{
	struct fx *f = *state;
	uint8_t buf[32];

	emu_start(f, fault_scn, "--fault truncate --fault-after 2");
	pty_open(f);
	xchg(f, "command 1", "14 01", "15");
	send_cmd(f, "02");
	expect_bytes(f, "ACK", ACK);
	assert_int_equal(rd(f, buf, 6, WAIT_MS), 6);  /* 13 bytes cut to 6: */
	expect_silence(f, "the rest of the truncated reply", 300);
	assert_memory_equal(buf, "\x00\x00\xFF\x06\xFA\xD5", 6);
	emu_stop(f);
}

static void test_fault_garbage(void **state)
{
	struct fx *f = *state;
	uint8_t a[32], b[32];

	emu_start(f, fault_scn, "--fault garbage --fault-after 2");
	pty_open(f);
	xchg(f, "command 1", "14 01", "15");
	send_cmd(f, "02");
	expect_bytes(f, "ACK 2", ACK);
	assert_int_equal(rd(f, a, 11, WAIT_MS), 11);
	expect_silence(f, "after 11 bytes of garbage", 300);
	assert_true(a[0] != 0x00);
	send_cmd(f, "02");
	expect_bytes(f, "ACK 3", ACK);
	assert_int_equal(rd(f, b, 11, WAIT_MS), 11);
	expect_silence(f, "after 11 more bytes of garbage", 300);
	assert_memory_not_equal(a, b, 11);
	emu_stop(f);
}

static void test_fault_noack(void **state)
{
	struct fx *f = *state;
	uint8_t got[16];
	int ext;

	emu_start(f, fault_scn, "--fault noack --fault-after 2");
	pty_open(f);
	xchg(f, "command 1", "14 01", "15");
	send_cmd(f, "02");
	assert_int_equal(read_reply(f, "no ACK, straight to the reply", got, sizeof(got), &ext), 5);
	assert_memory_equal(got, "\x03\x32\x01\x06\x07", 5);
	emu_stop(f);
}

static void test_slow(void **state)
{
	struct fx *f = *state;
	uint8_t got[32], want[32];
	int64_t t;
	int ext;

	emu_start(f, fault_scn, "--slow-ms 300");
	pty_open(f);
	xchg(f, "SAMConfiguration", "14 01", "15");
	xchg(f, "poll once", "32 05 00 01 02", "33");
	xchg(f, "activate", "4A 01 01 00 00 03 00 00", "4B 01 01 12 01" IDM PMM);
	send_cmd(f, "40 01 0A 04" IDM);
	expect_bytes(f, "ACK comes at once", ACK);
	t = tu_mono_ms();
	expect_silence(f, "reply is late", 200);
	assert_int_equal(read_reply(f, "late reply", got, sizeof(got), &ext), 13);
	t = tu_mono_ms() - t;
	assert_memory_equal(got, want, tu_hex("41 00 0B 05" IDM "00", want, sizeof(want)));
	assert_true(t >= 280 && t < 1500);
	/* Only InDataExchange is slow. */
	t = tu_mono_ms();
	xchg(f, "GetFirmwareVersion", "02", "03 32 01 06 07");
	assert_true(tu_mono_ms() - t < 200);
	emu_stop(f);
}

/* ---- the command line ---- */

static void test_usage(void **state)
{
	struct fx *f = *state;
	char bad[160];

	snprintf(bad, sizeof(bad), "%s/bad.txt", f->dir);
	tu_write(bad, "tap +0 nobody\n");
	assert_int_equal(tu_sh("%s/kippu-pn532-emu 2>/dev/null", tu_bin()), 2);
	assert_int_equal(tu_sh("%s/kippu-pn532-emu --scenario %s --fault bogus 2>/dev/null",
	                       tu_bin(), bad), 2);
	assert_int_equal(tu_sh("%s/kippu-pn532-emu --scenario %s --slow-ms -1 2>/dev/null",
	                       tu_bin(), bad), 2);
	assert_int_equal(tu_sh("%s/kippu-pn532-emu --scenario %s 2>/dev/null", tu_bin(), bad), 1);
	assert_int_equal(tu_sh("%s/kippu-pn532-emu --scenario %s/none.txt 2>/dev/null", tu_bin(),
	                       f->dir), 1);
	/* --link refuses to replace anything but a symlink. */
	tu_write(f->link, "x");
	assert_int_equal(tu_sh("printf 'card a felica idm=%s\\n' > %s/ok.txt && "
	                       "%s/kippu-pn532-emu --scenario %s/ok.txt --link %s "
	                       ">/dev/null 2>&1", IDM, f->dir, tu_bin(), f->dir, f->link), 1);
}

/* The log names commands, never a card's IDm. */
static void test_log_has_no_ids(void **state)
{
	struct fx *f = *state;
	char path[160], *log;

	emu_start(f, fault_scn, "");
	pty_open(f);
	xchg(f, "SAMConfiguration", "14 01", "15");
	xchg(f, "poll once", "32 05 00 01 02", "33");
	xchg(f, "activate", "4A 01 01 00 FF FF 01 00", "4B 01 01 14 01" IDM PMM "00 03");
	xchg(f, "read", "40 01" RD_BAL, "41 00 1D 07" IDM "00 00 01"
	     "0000000000000000 000000 0000 00 0000");
	emu_stop(f);
	snprintf(path, sizeof(path), "%s/emu.log", f->dir);
	log = tu_read(path);
	assert_non_null(log);
	assert_non_null(strstr(log, "InListPassiveTarget FeliCa 212: 1 target"));
	assert_non_null(strstr(log, "InDataExchange: 16 bytes out, status 00, 29 bytes back"));
	assert_null(strstr(log, "01 02 03 04 05 06 07"));
	assert_null(strstr(log, "0102030405060"));
	free(log);
}

#define FX(t) cmocka_unit_test_setup_teardown(t, fx_setup, fx_teardown)

int main(void)
{
	const struct CMUnitTest tests[] = {
		FX(test_nfc_list),
		FX(test_nfc_list_noack),
		FX(test_frames),
		FX(test_typeb_autopoll),
		FX(test_fault_checksum),
		FX(test_fault_truncate),
		FX(test_fault_garbage),
		FX(test_fault_noack),
		FX(test_slow),
		FX(test_usage),
		FX(test_log_has_no_ids),
	};

	signal(SIGPIPE, SIG_IGN);
	return cmocka_run_group_tests(tests, NULL, NULL);
}
