/* SPDX-License-Identifier: Apache-2.0 */
/* make bench, the reader part: the time from a card coming into the field to the tap being
 * decided and committed, through Debian's libnfc, a pseudo-terminal and kippu-pn532-emu
 * (a PN532 whose cards are the mock HAL's models) - the polling loop, the PN532 UART
 * protocol, the FeliCa read, the decision, the signature and the durable commit. A small
 * store of its own (N_CARDS entitlements), in a folder removed afterwards.
 *
 * "Came into the field" is the scenario's tap time counted from when the emulator said it
 * was ready; the emulator's clock starts a little before that (the startup gap printed),
 * so presence figures err low by at most that much. */
#include <errno.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "kp_loadgen.h"
#include "bench_util.h"
#include "kp_terminal.h"

#define N_CARDS  20                 /* consecutive taps are different cards */
#define N_TAPS   200
#define TAP_MS   50                 /* one tap every 50 ms */
#define FIRST_MS 500

static const uint8_t token_key[KP_TOKEN_KEY_LEN] = { 0x6B, 0x69, 0x70, 0x70, 0x75 };

static void die(const char *what, int rc)
{
	fprintf(stderr, "bench-libnfc: %s: %s\n", what, kp_strerror(rc));
	exit(1);
}

static void idm_of(unsigned i, uint8_t idm[8])
{
	static const uint8_t base[8] = { 0x01, 0x2E, 0x4E, 0x46, 0x43, 0x00, 0x00, 0x00 };

	memcpy(idm, base, 8);
	idm[7] = (uint8_t)i;
}

static void build(const char *dir, const char *db, const char *key_path, const char *scn)
{
	const char *ops[] = { "OP-A" };
	kp_store *s = NULL;
	kp_key *key = NULL;
	FILE *fp;
	int rc;

	if ((rc = kp_key_generate(&key)) != 0 || (rc = kp_key_save(key, key_path)) != 0)
		die("key", rc);
	kp_key_free(key);
	if ((rc = kp_store_open(&s, db)) != KP_OK || (rc = kp_store_begin(s)) != KP_OK ||
	    (rc = kp_store_put_operator(s, "OP-A", "A")) != KP_OK ||
	    (rc = kp_store_put_product(s, "P1000", "1000 rides", 1000, ops, 1)) != KP_OK)
		die("store", rc);
	for (unsigned i = 0; i < N_CARDS; i++) {
		struct kp_entitlement e;
		uint8_t idm[8];

		memset(&e, 0, sizeof(e));
		idm_of(i, idm);
		kp_token_derive(token_key, "felica", idm, 8, e.token);
		e.id = 1 + i;
		snprintf(e.product, sizeof(e.product), "P1000");
		e.rides_left = 1000;
		e.valid_from_ms = 0;
		e.valid_until_ms = INT64_C(4102444800000);  /* 2100 */
		if ((rc = kp_store_put_entitlement(s, &e)) != KP_OK)
			die("entitlement", rc);
	}
	if ((rc = kp_store_commit(s)) != KP_OK)
		die("commit", rc);
	kp_store_close(s);
	fp = fopen(scn, "w");
	if (fp == NULL) {
		perror(scn);
		exit(1);
	}
	fprintf(fp, "pace real\n");
	for (unsigned i = 0; i < N_CARDS; i++)
		fprintf(fp, "card c%u felica idm=012E4E46430000%02X balance=1000\n", i, i);
	for (unsigned i = 0; i < N_TAPS; i++)
		fprintf(fp, "tap +%u.%03u c%u\n", (FIRST_MS + i * TAP_MS) / 1000,
		        (FIRST_MS + i * TAP_MS) % 1000, i % N_CARDS);
	fclose(fp);
	(void)dir;
}

/* Starts the emulator; returns its pid and when it said it was ready. */
static pid_t emu_start(const char *emu, const char *scn, const char *link, double *t_spawn,
                       double *t_ready)
{
	char line[256];
	size_t n = 0;
	int p[2];
	pid_t pid;

	if (pipe(p) != 0)
		exit(1);
	*t_spawn = now_us();
	pid = fork();
	if (pid == 0) {
		dup2(p[1], 1);
		close(p[0]);
		close(p[1]);
		execl(emu, emu, "--scenario", scn, "--link", link, (char *)NULL);
		_exit(127);
	}
	close(p[1]);
	while (n < sizeof(line) - 1) {
		struct pollfd pfd = { .fd = p[0], .events = POLLIN };

		if (poll(&pfd, 1, 5000) <= 0 || read(p[0], line + n, 1) != 1) {
			fprintf(stderr, "bench-libnfc: %s did not start\n", emu);
			exit(1);
		}
		if (line[n++] == '\n')
			break;
	}
	*t_ready = now_us();
	close(p[0]);
	return pid;
}

int main(int argc, char **argv)
{
	char dir[900] = "build/bench-libnfc", db[1000], key_path[1000], scn[1000], link[1000];
	char conn[1100], emu[1000] = "";
	const char *json = NULL;
	struct kp_poll poll = { KP_TECH_FELICA | KP_TECH_ISO14443B, 0x0003, 1 };
	struct kp_terminal_cfg cfg;
	struct kp_reader *reader = NULL;
	kp_store *s = NULL;
	kp_key *key = NULL;
	kp_tap_engine *e = NULL;
	double *present = calloc(N_TAPS, sizeof(double)), *decided = calloc(N_TAPS, sizeof(double));
	double *total = calloc(N_TAPS, sizeof(double));
	double t_spawn, t_ready;
	unsigned long accepted = 0;
	size_t n = 0;
	pid_t pid;
	int rc;
	const struct bench_opt opts[] = {
		{ "dir", BENCH_OPT_PATH, dir, sizeof(dir) },
		{ "emu", BENCH_OPT_PATH, emu, sizeof(emu) },
		{ "json-append", BENCH_OPT_STR, &json, 0 },
	};

	if (bench_opts(argc, argv, opts, sizeof(opts) / sizeof(opts[0])) != 0)
		return 2;
	if (emu[0] == '\0') {
		/* The emulator is built next to this program. */
		const char *slash = strrchr(argv[0], '/');

		snprintf(emu, sizeof(emu), "%.*skippu-pn532-emu",
		         slash != NULL ? (int)(slash - argv[0] + 1) : 0, argv[0]);
	}
	if (present == NULL || decided == NULL || total == NULL)
		return 1;
	if (access(emu, X_OK) != 0) {
		fprintf(stderr, "bench-libnfc: no emulator at %s\n", emu);
		return 1;
	}
	if (mkdir(dir, 0700) != 0 && errno != EEXIST) {
		perror(dir);
		return 1;
	}
	snprintf(db, sizeof(db), "%s/nfc.db", dir);
	snprintf(key_path, sizeof(key_path), "%s/nfc.key", dir);
	snprintf(scn, sizeof(scn), "%s/nfc-scenario.txt", dir);
	snprintf(link, sizeof(link), "%s/pn532", dir);
	unlink(db);
	unlink(key_path);
	build(dir, db, key_path, scn);

	kp_terminal_cfg_defaults(&cfg);
	snprintf(cfg.terminal_id, sizeof(cfg.terminal_id), "BENCH-NFC");
	snprintf(cfg.operator_id, sizeof(cfg.operator_id), "OP-A");
	cfg.double_tap_window_ms = 0;    /* a card comes back every second: always a ride */
	if ((rc = kp_store_open(&s, db)) != KP_OK || (rc = kp_key_load(&key, key_path)) != 0 ||
	    (rc = kp_tap_engine_open(&e, s, &cfg, key, token_key)) != KP_OK)
		die("set-up", rc);
	pid = emu_start(emu, scn, link, &t_spawn, &t_ready);
	snprintf(conn, sizeof(conn), "libnfc:pn532_uart:%s", link);
	setenv("LIBNFC_AUTO_SCAN", "false", 1);
	if ((rc = kp_reader_open(&reader, conn)) != KP_HAL_OK)
		die("libnfc open", rc);
	while (n < N_TAPS) {
		struct kp_card_info info;
		struct kp_tap_outcome o;
		double t_detect, t_done, t_present;
		unsigned idx;

		rc = kp_reader_wait_card(reader, &poll, &info, 2000);
		if (rc == KP_HAL_E_NOCARD)
			break;                   /* the scenario is over */
		if (rc != KP_HAL_OK)
			die("wait_card", rc);
		t_detect = now_us();
		rc = kp_tap_card(e, reader, &info, kp_reader_now_ms(reader), &o);
		t_done = now_us();
		if (rc != KP_OK)
			die("tap", rc);
		accepted += o.kind == KP_TAP_ACCEPTED;
		/* Which tap this was: the n-th, whose card the IDm names. */
		idx = (unsigned)n;
		if (info.u.felica.idm[7] != idx % N_CARDS) {
			fprintf(stderr, "bench-libnfc: tap %u missed\n", idx);
			break;
		}
		t_present = t_ready + (FIRST_MS + idx * TAP_MS) * 1e3;
		present[n] = t_detect - t_present;
		decided[n] = t_done - t_detect;
		total[n] = t_done - t_present;
		n++;
		kp_reader_release(reader, 0, 0);   /* the emulator's card leaves when deselected */
		if (n % 16 == 0)
			kp_store_idle(s);
	}
	kp_reader_close(reader);
	kill(pid, SIGTERM);
	waitpid(pid, NULL, 0);
	kp_tap_engine_close(e);
	kp_store_close(s);
	kp_key_free(key);
	if (n < N_TAPS) {
		fprintf(stderr, "bench-libnfc: only %zu of %d taps\n", n, N_TAPS);
		return 1;
	}
	qsort(present, n, sizeof(double), cmp_double);
	qsort(decided, n, sizeof(double), cmp_double);
	qsort(total, n, sizeof(double), cmp_double);
	printf("\nkippu bench, reader: %d taps by %d cards, %d ms apart, through libnfc %s,\n"
	       "a pty and kippu-pn532-emu (polling FeliCa 212/424 and Type B, %s)\n\n",
	       N_TAPS, N_CARDS, TAP_MS, "1.8", "10 ms between rounds");
	printf("| metric (ms)                                     |     p50 |     p99 |     max |\n");
	printf("|-------------------------------------------------|---------|---------|---------|\n");
	printf("| card in the field -> decided+committed [1]      | %7.3f | %7.3f | %7.3f |\n",
	       pct(total, n, 50) / 1e3, pct(total, n, 99) / 1e3, total[n - 1] / 1e3);
	printf("| part: card in the field -> detected (polling)   | %7.3f | %7.3f | %7.3f |\n",
	       pct(present, n, 50) / 1e3, pct(present, n, 99) / 1e3, present[n - 1] / 1e3);
	printf("| part: detected -> decided (read over PN532 too) | %7.3f | %7.3f | %7.3f |\n",
	       pct(decided, n, 50) / 1e3, pct(decided, n, 99) / 1e3, decided[n - 1] / 1e3);
	printf("\n[1] from the tap's time on the emulator's clock; that clock starts up to %.3f ms\n"
	       "before it says it is ready, which these figures do not count. accepted %lu of %zu\n",
	       (t_ready - t_spawn) / 1e3, accepted, n);
	if (json != NULL) {
		/* Added to the JSON array kippu-bench wrote (or a new one). */
		const struct kp_metric m[] = {
			{ "nfc_presence_to_decision_p50", "ms", pct(total, n, 50) / 1e3 },
			{ "nfc_presence_to_decision_p99", "ms", pct(total, n, 99) / 1e3 },
			{ "nfc_detected_to_decision_p50", "ms", pct(decided, n, 50) / 1e3 },
			{ "nfc_detected_to_decision_p99", "ms", pct(decided, n, 99) / 1e3 },
		};

		if (kp_metrics_json(json, 1, m, sizeof(m) / sizeof(m[0])) != 0)
			return 1;
	}
	unlink(db);
	unlink(key_path);
	unlink(scn);
	{
		char wal[1100];

		snprintf(wal, sizeof(wal), "%s-wal", db);
		unlink(wal);
		snprintf(wal, sizeof(wal), "%s-shm", db);
		unlink(wal);
	}
	rmdir(dir);
	free(present);
	free(decided);
	free(total);
	return 0;
}
