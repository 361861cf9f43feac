/* SPDX-License-Identifier: Apache-2.0 */
/* make bench: tap latency on a store with 1,000,000 entitlements and 10,000,000 denylist
 * entries (generated once into the build folder, never committed), through the mock HAL's
 * card model, the FeliCa client, the decision, the signature and the durable commit.
 * Prints a table; --json PATH also writes the figures for regression tracking. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "bench_util.h"
#include "kp_tools.h"

#define N_ENT      1000000
#define N_DENY     10000000
#define N_CARDS    2000            /* cards tapped, all holding entitlements */
#define N_TAPS     10000
#define GEN_MARK   "kippu-bench-v1"

static char dir[1024], db[1100], key_path[1100], scenario[1100];
static const uint8_t token_key[KP_TOKEN_KEY_LEN] = { 0x42, 0x42, 0x42, 0x42 };

static void idm_of(uint32_t i, uint8_t idm[8])
{
	idm[0] = 0x01; idm[1] = 0x2E; idm[2] = 0xBE; idm[3] = 0x4C;
	idm[4] = (uint8_t)(i >> 24); idm[5] = (uint8_t)(i >> 16);
	idm[6] = (uint8_t)(i >> 8); idm[7] = (uint8_t)i;
}

struct ent_tok { uint8_t token[KP_TOKEN_LEN]; uint32_t i; };

static int cmp_tok(const void *a, const void *b)
{
	return memcmp(a, b, KP_TOKEN_LEN);
}

static int die(const char *what, int rc)
{
	fprintf(stderr, "bench: %s: %s\n", what, kp_strerror(rc));
	exit(1);
}

/* Builds the big store once; a marker in meta says it is complete. */
static void generate(void)
{
	kp_store *s = NULL;
	kp_key *key = NULL;
	char mark[64];
	const char *ops[] = { "OP-A", "OP-B" };
	struct ent_tok *ents;
	uint64_t x = 0x9E3779B97F4A7C15ULL;
	double t0 = now_us();
	int rc;

	rc = kp_store_open(&s, db);
	if (rc != KP_OK)
		die("open", rc);
	if (kp_store_meta_get(s, "bench", mark, sizeof(mark)) == KP_OK &&
	    strcmp(mark, GEN_MARK) == 0) {
		kp_store_close(s);
		return;
	}
	kp_store_close(s);
	unlink(db);
	unlink(key_path);
	fprintf(stderr, "bench: generating %d entitlements and %d denylist entries in %s "
	        "(once; about a minute)\n", N_ENT, N_DENY, db);
	if ((rc = kp_store_open(&s, db)) != KP_OK)
		die("open", rc);
	if ((rc = kp_key_generate(&key)) != 0 || (rc = kp_key_save(key, key_path)) != 0)
		die("key", rc);
	kp_key_free(key);
	kp_store_begin(s);
	kp_store_put_operator(s, "OP-A", "A");
	kp_store_put_operator(s, "OP-B", "B");
	if ((rc = kp_store_put_product(s, "P10", "10 rides", 10, ops, 2)) != KP_OK)
		die("product", rc);
	/* Entitlements in key order: the same tree a random load builds, built faster. */
	ents = malloc(sizeof(*ents) * N_ENT);
	for (uint32_t i = 0; i < N_ENT; i++) {
		uint8_t idm[8];

		idm_of(i, idm);
		kp_token_derive(token_key, "felica", idm, 8, ents[i].token);
		ents[i].i = i;
	}
	qsort(ents, N_ENT, sizeof(*ents), cmp_tok);
	for (uint32_t k = 0; k < N_ENT; k++) {
		struct kp_entitlement e;

		memset(&e, 0, sizeof(e));
		memcpy(e.token, ents[k].token, KP_TOKEN_LEN);
		e.id = (int64_t)ents[k].i + 1;
		snprintf(e.product, sizeof(e.product), "P10");
		e.rides_left = 1000000;
		e.valid_from_ms = 0;
		e.valid_until_ms = 4102444800000LL;
		if ((rc = kp_store_put_entitlement(s, &e)) != KP_OK)
			die("entitlement", rc);
		if (k % 100000 == 99999) {
			kp_store_commit(s);
			kp_store_begin(s);
		}
	}
	free(ents);
	/* Denylist: 10M tokens spread evenly over the key space, ascending. */
	for (uint64_t i = 0; i < N_DENY; i++) {
		uint8_t t[KP_TOKEN_LEN];
		uint64_t hi = i * (UINT64_MAX / N_DENY);

		x ^= x << 13; x ^= x >> 7; x ^= x << 17;
		for (int b = 0; b < 8; b++) {
			t[b] = (uint8_t)(hi >> (56 - 8 * b));
			t[8 + b] = (uint8_t)(x >> (8 * b));
		}
		if ((rc = kp_store_put_denylist(s, t, "", 0)) != KP_OK)
			die("denylist", rc);
		if (i % 200000 == 199999) {
			kp_store_commit(s);
			kp_store_begin(s);
		}
	}
	kp_store_meta_set(s, "bench", GEN_MARK);
	if ((rc = kp_store_commit(s)) != KP_OK)
		die("commit", rc);
	kp_store_close(s);
	fprintf(stderr, "bench: generated in %.0f s\n", (now_us() - t0) / 1e6);
}

static void write_scenario(void)
{
	FILE *fp = fopen(scenario, "w");

	if (fp == NULL) {
		perror(scenario);
		exit(1);
	}
	fprintf(fp, "start 2026-11-26T06:00:00+09:00\npace virtual\n");
	for (uint32_t c = 0; c < N_CARDS; c++) {
		uint8_t idm[8];
		char hex[17];

		idm_of(c * (N_ENT / N_CARDS), idm);   /* spread over the entitlements */
		kp_hex(idm, 8, hex);
		fprintf(fp, "card c%u felica idm=%s balance=1000\n", c, hex);
	}
	for (uint32_t t = 0; t < N_TAPS; t++)
		fprintf(fp, "tap +%u c%u\n", t * 2, (t * 7919u) % N_CARDS);
	fclose(fp);
}

/* PRAGMA synchronous's values by name (SQLite's own order). */
static const char *sync_name(int level)
{
	static const char *const names[] = { "OFF", "NORMAL", "FULL", "EXTRA" };

	return level >= 0 && level < 4 ? names[level] : "?";
}

struct result {
	double tap[4];        /* p50 p99 p99.9 max, microseconds */
	double sign[2];       /* p50 p99 */
	double commit[2];     /* p50 p99 of an empty durable commit */
	unsigned long accepted, refused;
	char journal_mode[16];  /* as the store's connection reads them back */
	int synchronous, foreign_keys;
};

/* Runs in a child so that its peak RSS is the terminal's, not the generator's. */
static void measure(int out_fd)
{
	struct result r;
	struct kp_terminal_cfg cfg;
	kp_store *s = NULL;
	kp_key *key = NULL;
	kp_tap_engine *e = NULL;
	struct kp_reader *reader = NULL;
	struct kp_poll poll = { KP_TECH_FELICA, 0x0003, 1 };
	double *lat = malloc(sizeof(double) * N_TAPS), *sg = malloc(sizeof(double) * 2000);
	char conn[1200];
	size_t n = 0;
	int rc;

	memset(&r, 0, sizeof(r));
	kp_terminal_cfg_defaults(&cfg);
	snprintf(cfg.terminal_id, sizeof(cfg.terminal_id), "BENCH-1");
	snprintf(cfg.operator_id, sizeof(cfg.operator_id), "OP-A");
	snprintf(cfg.route, sizeof(cfg.route), "R1");
	snprintf(conn, sizeof(conn), "mock:%s", scenario);
	if ((rc = kp_store_open(&s, db)) != KP_OK || (rc = kp_key_load(&key, key_path)) != 0 ||
	    (rc = kp_tap_engine_open(&e, s, &cfg, key, token_key)) != KP_OK ||
	    (rc = kp_reader_open(&reader, conn)) != KP_OK)
		die("set-up", rc);
	/* What the durable commits measured here rest on, read back rather than assumed. */
	rc = kp_store_pragmas(s, r.journal_mode, sizeof(r.journal_mode), &r.synchronous,
	                      &r.foreign_keys);
	if (rc != KP_OK)
		die("pragmas", rc);
	for (;;) {
		struct kp_card_info info;
		struct kp_tap_outcome o;
		double t0;

		rc = kp_reader_wait_card(reader, &poll, &info, 100);
		if (rc == KP_HAL_E_END)
			break;
		if (rc != KP_HAL_OK)
			die("wait_card", rc);
		t0 = now_us();                           /* card detected */
		rc = kp_tap_card(e, reader, &info, kp_reader_now_ms(reader), &o);
		lat[n++] = now_us() - t0;                /* decided, signed, committed */
		if (rc != KP_OK)
			die("tap", rc);
		if (o.kind == KP_TAP_ACCEPTED)
			r.accepted++;
		else
			r.refused++;
		kp_reader_release(reader, 0, 0);
		/* Riders come seconds apart: the terminal checkpoints in those gaps. */
		if (n % 16 == 0)
			kp_store_idle(s);
	}
	qsort(lat, n, sizeof(double), cmp_double);
	r.tap[0] = pct(lat, n, 50);
	r.tap[1] = pct(lat, n, 99);
	r.tap[2] = pct(lat, n, 99.9);
	r.tap[3] = lat[n - 1];
	/* The parts: an ES256 COSE signature, and an empty durable commit. */
	for (int i = 0; i < 2000; i++) {
		uint8_t payload[120], *cose = NULL;
		size_t cose_len;
		double t0;

		memset(payload, i & 0xFF, sizeof(payload));
		t0 = now_us();
		kp_cose_sign1(key, "BENCH-1", payload, sizeof(payload), &cose, &cose_len);
		sg[i] = now_us() - t0;
		free(cose);
	}
	qsort(sg, 2000, sizeof(double), cmp_double);
	r.sign[0] = pct(sg, 2000, 50);
	r.sign[1] = pct(sg, 2000, 99);
	for (int i = 0; i < 2000; i++) {
		char v[16];
		double t0 = now_us();

		snprintf(v, sizeof(v), "%d", i);
		kp_store_meta_set(s, "bench_probe", v);   /* autocommit: one durable write */
		sg[i] = now_us() - t0;
	}
	qsort(sg, 2000, sizeof(double), cmp_double);
	r.commit[0] = pct(sg, 2000, 50);
	r.commit[1] = pct(sg, 2000, 99);
	if (write(out_fd, &r, sizeof(r)) != sizeof(r))
		exit(1);
	kp_reader_close(reader);
	kp_tap_engine_close(e);
	kp_store_close(s);
	kp_key_free(key);
	free(lat);
	free(sg);
	exit(0);
}

int main(int argc, char **argv)
{
	const char *json = NULL;
	struct result r;
	struct rusage ru;
	int fds[2], st = 0;
	pid_t pid;
	double rss_mb;

	snprintf(dir, sizeof(dir), "build/bench");
	const struct bench_opt opts[] = {
		{ "json", BENCH_OPT_STR, &json, 0 },
		{ "dir", BENCH_OPT_PATH, dir, sizeof(dir) },
	};

	if (bench_opts(argc, argv, opts, sizeof(opts) / sizeof(opts[0])) != 0)
		return 2;
	mkdir(dir, 0755);
	snprintf(db, sizeof(db), "%s/bench.db", dir);
	snprintf(key_path, sizeof(key_path), "%s/bench.key", dir);
	snprintf(scenario, sizeof(scenario), "%s/bench-scenario.txt", dir);
	pid = fork();
	if (pid == 0) {
		generate();
		exit(0);
	}
	waitpid(pid, &st, 0);
	if (!WIFEXITED(st) || WEXITSTATUS(st) != 0)
		return 1;
	write_scenario();
	if (pipe(fds) != 0)
		return 1;
	pid = fork();
	if (pid == 0) {
		close(fds[0]);
		measure(fds[1]);
	}
	close(fds[1]);
	if (read(fds[0], &r, sizeof(r)) != sizeof(r) || wait4(pid, &st, 0, &ru) != pid ||
	    !WIFEXITED(st) || WEXITSTATUS(st) != 0) {
		fprintf(stderr, "bench: measurement failed\n");
		return 1;
	}
	rss_mb = ru.ru_maxrss / 1024.0;

	printf("\nkippu bench: %d taps by %d cards through mock HAL + FeliCa client,\n"
	       "store of %d entitlements and %d denylist entries\n"
	       "(read back from the store: journal_mode=%s, synchronous=%d (%s), foreign_keys=%d)\n\n",
	       N_TAPS, N_CARDS, N_ENT, N_DENY, r.journal_mode, r.synchronous,
	       sync_name(r.synchronous), r.foreign_keys);
	printf("| metric                                          |     p50 |     p99 |   p99.9 |     max | target          |\n");
	printf("|-------------------------------------------------|---------|---------|---------|---------|-----------------|\n");
	printf("| tap: card detected -> decided+committed (ms)    | %7.3f | %7.3f | %7.3f | %7.3f | p99<=1 p99.9<=3 |\n",
	       r.tap[0] / 1e3, r.tap[1] / 1e3, r.tap[2] / 1e3, r.tap[3] / 1e3);
	printf("| tap: card detected -> signed (ms) [1]           | %7.3f | %7.3f | %7.3f | %7.3f | p99<=1.5        |\n",
	       r.tap[0] / 1e3, r.tap[1] / 1e3, r.tap[2] / 1e3, r.tap[3] / 1e3);
	printf("| part: ES256 COSE_Sign1 (ms)                     | %7.3f | %7.3f |         |         |                 |\n",
	       r.sign[0] / 1e3, r.sign[1] / 1e3);
	printf("| part: one durable WAL commit (ms)               | %7.3f | %7.3f |         |         |                 |\n",
	       r.commit[0] / 1e3, r.commit[1] / 1e3);
	printf("| peak RSS of the tapping process (MB)            | %7.1f |         |         |         | <=16            |\n",
	       rss_mb);
	printf("\n[1] the record is signed inside the tap's transaction, so signed = committed.\n"
	       "accepted %lu, refused %lu\n", r.accepted, r.refused);
	if (json != NULL) {
		FILE *fp = fopen(json, "w");

		if (fp == NULL) {
			perror(json);
			return 1;
		}
		fprintf(fp, "[\n"
		        "  {\"metric\": \"tap_decision_p50\", \"unit\": \"ms\", \"value\": %.4f},\n"
		        "  {\"metric\": \"tap_decision_p99\", \"unit\": \"ms\", \"value\": %.4f},\n"
		        "  {\"metric\": \"tap_decision_p999\", \"unit\": \"ms\", \"value\": %.4f},\n"
		        "  {\"metric\": \"tap_decision_max\", \"unit\": \"ms\", \"value\": %.4f},\n"
		        "  {\"metric\": \"tap_signed_p50\", \"unit\": \"ms\", \"value\": %.4f},\n"
		        "  {\"metric\": \"tap_signed_p99\", \"unit\": \"ms\", \"value\": %.4f},\n"
		        "  {\"metric\": \"tap_signed_p999\", \"unit\": \"ms\", \"value\": %.4f},\n"
		        "  {\"metric\": \"es256_sign_p50\", \"unit\": \"ms\", \"value\": %.4f},\n"
		        "  {\"metric\": \"wal_commit_p50\", \"unit\": \"ms\", \"value\": %.4f},\n"
		        "  {\"metric\": \"peak_rss\", \"unit\": \"MB\", \"value\": %.1f}\n"
		        "]\n",
		        r.tap[0] / 1e3, r.tap[1] / 1e3, r.tap[2] / 1e3, r.tap[3] / 1e3,
		        r.tap[0] / 1e3, r.tap[1] / 1e3, r.tap[2] / 1e3, r.sign[0] / 1e3,
		        r.commit[0] / 1e3, rss_mb);
		fclose(fp);
	}
	return 0;
}
