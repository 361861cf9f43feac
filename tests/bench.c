/* SPDX-License-Identifier: Apache-2.0 */
/* make bench: tap latency on a store with 1,000,000 entitlements and 10,000,000 denylist
 * entries (generated once into the build folder, never committed), through the mock HAL's
 * card model, the FeliCa client, the decision, the signature and the durable commit; the
 * signing pool warm and empty (issue 21), and a mix of the kinds of taps riders make.
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

#include "bench_trips.h"
#include "bench_util.h"
#include "kp_tools.h"

#define N_ENT_FULL  1000000
#define N_DENY_FULL 10000000
#define N_CARDS    2000            /* cards tapped, all holding entitlements */
#define N_TAPS     10000
#define GEN_MARK   "kippu-bench-v1"
#define POOL_TAPS  2000            /* taps with the pool warm, and as many with it empty */
#define POOL_BURST 50              /* back-to-back taps before the pool is refilled */
#define CROWD_TAPS 200             /* a crowd at a bus door: a tap every 100 ms */
#define CROWD_GAP_MS 100

#define MIX_TAPS   3000            /* the mix of kinds, a tap every 3 s (virtual time) */

/* The kinds of taps of the mix and their share of it (per cent; README, Bench). Stored
 * value is priced by the Muroran feed (operator DN, tap-on/tap-off, a day cap). Not yet in
 * the mix: My Number cards on resident passes (kippu-bench-jpki measures them alone). */
enum mix_kind { MX_NRIDE, MX_DOUBLE, MX_PASS_FIRST, MX_PASS_LATER, MX_SV_ON, MX_SV_OFF,
                MX_DENY, MX_NOTHING, MX_KINDS };
static const struct { const char *name; int share; enum kp_tap_kind outcome; } mix[MX_KINDS] = {
	{ "N-ride (10 rides), accepted", 30, KP_TAP_ACCEPTED },
	{ "the same card again in the double-tap window", 10, KP_TAP_ALREADY },
	{ "period pass, first use (activates it)", 5, KP_TAP_ACCEPTED },
	{ "period pass, a later use", 15, KP_TAP_ACCEPTED },
	{ "stored value, tap-on (maximum fare vs balance)", 15, KP_TAP_ACCEPTED },
	{ "stored value, tap-off (fare, transfer, day cap)", 15, KP_TAP_ACCEPTED },
	{ "denylisted card, refused", 5, KP_TAP_REFUSED },
	{ "card with nothing, refused", 5, KP_TAP_REFUSED },
};

/* --small: a store 50 times smaller (build/bench-small), for a quick run of the rows. */
static uint32_t N_ENT = N_ENT_FULL, N_DENY = N_DENY_FULL;

static char dir[1024], db[1100], key_path[1100], scenario[1100], scenario_pool[1100];
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
	    strcmp(mark, N_ENT == N_ENT_FULL ? GEN_MARK : GEN_MARK "-small") == 0) {
		kp_store_close(s);
		return;
	}
	kp_store_close(s);
	unlink(db);
	unlink(key_path);
	fprintf(stderr, "bench: generating %u entitlements and %u denylist entries in %s "
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
	kp_store_meta_set(s, "bench", N_ENT == N_ENT_FULL ? GEN_MARK : GEN_MARK "-small");
	if ((rc = kp_store_commit(s)) != KP_OK)
		die("commit", rc);
	kp_store_close(s);
	fprintf(stderr, "bench: generated in %.0f s\n", (now_us() - t0) / 1e6);
}

/* The taps of the main rows, and (a day later, so that no tap falls in an earlier one's
 * double-tap window) those of the pool's rows. */
static void write_scenario(const char *path, const char *start)
{
	FILE *fp = fopen(path, "w");

	if (fp == NULL) {
		perror(path);
		exit(1);
	}
	fprintf(fp, "start %s\npace virtual\n", start);
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

/* The signing pool's rows (kp_sign_pool.h), microseconds unless named otherwise. */
struct pool_result {
	double warm[3], empty[3];             /* tap p50 p99 p99.9: pool warm, pool empty */
	double sign_warm[3], sign_empty[3];   /* the signature, timed where the engine makes it */
	double refill_wall_ms, refill_cpu_ms; /* refilling after a burst of POOL_BURST taps */
	double full_call_us;                  /* a refill call on a full pool (the idle cost) */
	double crowd[3];                      /* CROWD_TAPS taps, CROWD_GAP_MS apart */
	unsigned crowd_pooled;
	size_t crowd_low, bytes, cap;
	int locked;
};

struct mix_result {
	double tap[MX_KINDS + 1][3];          /* per kind, then the whole mix: p50 p99 p99.9 */
	double sign[MX_KINDS + 1], commit[MX_KINDS + 1];  /* p50 of the parts */
	unsigned n[MX_KINDS + 1], pooled;
};

struct result {
	struct pool_result pool;
	struct mix_result mix;
	int pool_only;
	double tap[4];        /* p50 p99 p99.9 max, microseconds */
	double sign[2];       /* p50 p99 */
	double commit[2];     /* p50 p99 of an empty durable commit */
	unsigned long accepted, refused;
	char journal_mode[16];  /* as the store's connection reads them back */
	int synchronous, foreign_keys;
};

static double cpu_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &ts);
	return ts.tv_sec * 1e3 + ts.tv_nsec / 1e6;
}

static void pct3(double *v, size_t n, double out[3])
{
	qsort(v, n, sizeof(double), cmp_double);
	out[0] = pct(v, n, 50);
	out[1] = pct(v, n, 99);
	out[2] = pct(v, n, 99.9);
}

/* One tap through the reader: card detected -> decided, signed, committed (*lat), and
 * the signature as the engine timed it (*sign). */
static void one_tap(kp_tap_engine *e, struct kp_reader *rd, double *lat, double *sign,
                    int *pooled)
{
	struct kp_poll poll = { KP_TECH_FELICA, 0x0003, 1 };
	struct kp_card_info info;
	struct kp_tap_outcome o;
	struct kp_tap_timing tm;
	double t0;
	int rc;

	rc = kp_reader_wait_card(rd, &poll, &info, 100);
	if (rc != KP_HAL_OK)
		die("pool: wait_card", rc);
	t0 = now_us();
	rc = kp_tap_card(e, rd, &info, kp_reader_now_ms(rd), &o);
	*lat = now_us() - t0;
	if (rc != KP_OK)
		die("pool: tap", rc);
	kp_tap_engine_timing(e, &tm);
	*sign = tm.sign_ns / 1e3;
	*pooled = tm.pooled;
	kp_reader_release(rd, 0, 0);
}

/* One idle turn of the terminal's loop (terminal/app/main.c): the wait for a card (no card
 * comes; a short wait while the pool is not full, at most max_us), then a bounded refill,
 * whose CPU time *cpu adds. */
static void idle_turn(kp_sign_pool *pool, double max_us, double *cpu)
{
	double wait = kp_sign_pool_count(pool) < KP_SIGN_POOL_DEFAULT ?
	              KP_SIGN_POOL_IDLE_WAIT_MS * 1e3 : 500e3, c0;

	if (wait > max_us)
		wait = max_us;
	if (wait > 0)
		usleep((useconds_t)wait);
	c0 = cpu_ms();
	kp_sign_pool_refill(pool, KP_SIGN_POOL_IDLE_BATCH, NULL);
	*cpu += cpu_ms() - c0;
}

/* Taps with the pool warm and empty (interleaved, so that the machine's load hits both
 * alike), the refill after a burst, the pool's memory and idle cost, and a crowd. */
static void measure_pool(kp_store *s, kp_tap_engine *e, const kp_key *key,
                         struct kp_reader *rd, struct pool_result *pr)
{
	double *lw = malloc(sizeof(double) * POOL_TAPS * 4), *le = lw + POOL_TAPS;
	double *sw = le + POOL_TAPS, *se = sw + POOL_TAPS, lat, sign, cpu = 0, t0;
	kp_sign_pool *pool = NULL, *dry = NULL;
	struct kp_sign_pool_stats st;
	int pooled, rc;

	if ((rc = kp_sign_pool_open(&pool, key, KP_SIGN_POOL_DEFAULT)) != 0 ||
	    (rc = kp_sign_pool_open(&dry, key, 1)) != 0 || lw == NULL)
		die("pool: open", rc);
	for (size_t i = 0; i < POOL_TAPS; i++) {
		kp_sign_pool_refill(pool, KP_SIGN_POOL_DEFAULT, NULL);   /* riders seconds apart */
		kp_tap_engine_set_pool(e, pool);
		one_tap(e, rd, &lw[i], &sw[i], &pooled);
		if (!pooled)
			die("pool: a warm tap was not signed from the pool", 0);
		kp_tap_engine_set_pool(e, dry);
		one_tap(e, rd, &le[i], &se[i], &pooled);
		if (i % 8 == 7)
			kp_store_idle(s);
	}
	pct3(lw, POOL_TAPS, pr->warm);
	pct3(le, POOL_TAPS, pr->empty);
	pct3(sw, POOL_TAPS, pr->sign_warm);
	pct3(se, POOL_TAPS, pr->sign_empty);
	/* A burst of taps back to back, then the terminal idles until the pool is full. */
	kp_tap_engine_set_pool(e, pool);
	kp_sign_pool_refill(pool, KP_SIGN_POOL_DEFAULT, NULL);
	for (int i = 0; i < POOL_BURST; i++)
		one_tap(e, rd, &lat, &sign, &pooled);
	t0 = now_us();
	while (kp_sign_pool_count(pool) < KP_SIGN_POOL_DEFAULT)
		idle_turn(pool, 1e9, &cpu);
	pr->refill_wall_ms = (now_us() - t0) / 1e3;
	pr->refill_cpu_ms = cpu;
	t0 = now_us();
	for (int i = 0; i < 1000; i++)
		kp_sign_pool_refill(pool, KP_SIGN_POOL_IDLE_BATCH, NULL);
	pr->full_call_us = (now_us() - t0) / 1000;
	kp_sign_pool_stats(pool, &st);
	pr->bytes = st.bytes;
	pr->locked = st.locked;
	pr->cap = st.capacity;
	/* The crowd at a bus door: a tap every CROWD_GAP_MS, the loop idling in between. */
	pr->crowd_low = KP_SIGN_POOL_DEFAULT;
	for (int i = 0; i < CROWD_TAPS; i++) {
		double next = now_us() + CROWD_GAP_MS * 1e3;

		one_tap(e, rd, &lw[i], &sign, &pooled);
		pr->crowd_pooled += (unsigned)pooled;
		if (kp_sign_pool_count(pool) < pr->crowd_low)
			pr->crowd_low = kp_sign_pool_count(pool);
		while (now_us() < next)
			idle_turn(pool, next - now_us(), &cpu);
	}
	pct3(lw, CROWD_TAPS, pr->crowd);
	kp_tap_engine_set_pool(e, NULL);
	kp_sign_pool_free(pool);
	kp_sign_pool_free(dry);
	free(lw);
}

/* The mix's cards (new ones each run, so that every pass starts unused): N-ride cards are
 * the store's own, the others get an IDm of their own (02 salt kind index) and their
 * entitlement or denylist entry here. */
#define MIX_PASSES 400
#define MIX_DENIED 100
#define MIX_NOTHING 100
#define MIX_NRIDE 1000
#define MIX_SV 300
#define MIX_TRIPS 2000

static void mix_idm(uint32_t salt, int kind, uint32_t i, uint8_t idm[8])
{
	idm[0] = 0x02; idm[1] = (uint8_t)(salt >> 16); idm[2] = (uint8_t)(salt >> 8);
	idm[3] = (uint8_t)salt; idm[4] = (uint8_t)kind;
	idm[5] = (uint8_t)(i >> 16); idm[6] = (uint8_t)(i >> 8); idm[7] = (uint8_t)i;
}

/* The Muroran feed, imported once into the bench's store; operator DN prices by it. */
static void mix_feed(kp_store *s)
{
	struct kp_fare_import_opts io = { "muroran", NULL, NULL };
	struct kp_fare_import_stats ist;
	char mark[32], err[KP_FARE_MSG_MAX];
	int rc;

	if (kp_store_meta_get(s, "bench_feed", mark, sizeof(mark)) == KP_OK)
		return;
	if (kp_fares_import(s, FEED_DIR, &io, &ist, err, sizeof(err)) != KP_OK) {
		fprintf(stderr, "bench: import of %s: %s\n", FEED_DIR, err);
		exit(1);
	}
	rc = kp_store_begin(s);
	if (rc == KP_OK)
		rc = put_dn_scheme(s);
	if (rc == KP_OK)
		rc = kp_store_meta_set(s, "bench_feed", "muroran");
	if (rc == KP_OK)
		rc = kp_store_commit(s);
	if (rc != KP_OK)
		die("mix: feed", rc);
}

/* n entitlements of product for the mix's cards of a kind (a period pass: not yet used). */
static void mix_put_ents(kp_store *s, uint32_t salt, int kind, uint32_t n, const char *product,
                         int64_t left)
{
	uint8_t idm[8];
	int rc;

	for (uint32_t i = 0; i < n; i++) {
		struct kp_entitlement e;

		memset(&e, 0, sizeof(e));
		mix_idm(salt, kind, i, idm);
		kp_token_derive(token_key, "felica", idm, 8, e.token);
		e.id = ((int64_t)kind << 40) | ((int64_t)salt << 16) | (int64_t)i;   /* unique per run */
		snprintf(e.product, sizeof(e.product), "%s", product);
		e.rides_left = left;
		e.valid_until_ms = 4102444800000LL;
		e.first_use = left == 0;
		if ((rc = kp_store_put_entitlement(s, &e)) != KP_OK)
			die("mix: entitlement", rc);
	}
}

/* Sets up the run's cards; *run counts the mix runs on this store, so that each run's
 * taps come after the last run's (the N-ride cards are the same ones). */
static void mix_setup(kp_store *s, uint32_t salt, long *run)
{
	const char *ops[] = { "OP-A", "OP-B" };
	uint8_t idm[8], tok[KP_TOKEN_LEN];
	char runs[24] = "0";
	int days = 0, rc;

	mix_feed(s);
	if ((rc = kp_store_begin(s)) != KP_OK)
		die("mix: begin", rc);
	(void)kp_store_meta_get(s, "bench_mix_runs", runs, sizeof(runs));
	*run = atol(runs);
	snprintf(runs, sizeof(runs), "%ld", *run + 1);
	if ((rc = kp_store_meta_set(s, "bench_mix_runs", runs)) != KP_OK)
		die("mix: runs", rc);
	if (kp_store_product_period(s, "PASS7", &days) != KP_OK &&
	    (rc = kp_store_put_product_period(s, "PASS7", "7-day pass", 7, ops, 2)) != KP_OK)
		die("mix: pass product", rc);
	mix_put_ents(s, salt, MX_PASS_FIRST, MIX_PASSES, "PASS7", 0);
	mix_put_ents(s, salt, MX_SV_ON, MIX_SV, "SV", 10000000);     /* yen */
	for (uint32_t i = 0; i < MIX_DENIED; i++) {
		mix_idm(salt, MX_DENY, i, idm);
		kp_token_derive(token_key, "felica", idm, 8, tok);
		if ((rc = kp_store_put_denylist(s, tok, "lost", 0)) != KP_OK)
			die("mix: denylist", rc);
	}
	if ((rc = kp_store_commit(s)) != KP_OK)
		die("mix: commit", rc);
}

/* The mix's taps, 3 s apart: kinds drawn by their shares; a double tap is the last N-ride
 * card again, less than 45 s after its tap; a pass's later use comes at least 75 s after
 * its last use (until passes are that old, later uses become first uses). */
static void mix_schedule(const char *path, uint32_t salt, long run, enum mix_kind *kinds,
                         int *trip_of, size_t n_trips)
{
	FILE *fp = fopen(path, "w");
	uint32_t next_nride = 0, next_pass = 0, next_deny = 0, next_none = 0, oldest = 0;
	uint32_t next_sv = 0, next_trip = 0, open_head = 0, n_open = 0;
	uint32_t open_card[MIX_SV], open_trip[MIX_SV], open_slot[MIX_SV];
	uint32_t pass_last[MIX_PASSES], prev_card = 0, last_nride = 0;
	uint64_t x = 0x2545F4914F6CDD1DULL ^ salt;
	char hex[17];
	uint8_t idm[8];

	if (fp == NULL)
		die("mix: scenario", 0);
	/* from 2026-12-01 09:00 JST (the day kippu-bench-fares looks fares up on), 3 hours
	 * later for each earlier run: a run's taps last 2.5 hours */
	time_t start = (time_t)1796083200 + (time_t)run * 3 * 3600;
	struct tm tm;
	char when[40];

	gmtime_r(&start, &tm);
	strftime(when, sizeof(when), "%Y-%m-%dT%H:%M:%SZ", &tm);
	fprintf(fp, "start %s\npace virtual\n", when);
	for (uint32_t i = 0; i < MIX_NRIDE; i++) {
		idm_of((i * 997u + 13u) % N_ENT, idm);
		kp_hex(idm, 8, hex);
		fprintf(fp, "card n%u felica idm=%s balance=1000\n", i, hex);
	}
	for (int k = MX_PASS_FIRST; k <= MX_NOTHING; k++) {
		uint32_t n = k == MX_PASS_FIRST ? MIX_PASSES : k == MX_DENY ? MIX_DENIED :
		             k == MX_NOTHING ? MIX_NOTHING : k == MX_SV_ON ? MIX_SV : 0;

		for (uint32_t i = 0; i < n; i++) {
			mix_idm(salt, k, i, idm);
			kp_hex(idm, 8, hex);
			fprintf(fp, "card k%d_%u felica idm=%s balance=1000\n", k, i, hex);
		}
	}
	for (uint32_t t = 0; t < MIX_TAPS; t++) {
		int pick, k = 0;

		x ^= x << 13; x ^= x >> 7; x ^= x << 17;
		pick = (int)(x % 100);
		while (pick >= mix[k].share)
			pick -= mix[k++].share;
		if (k == MX_DOUBLE && (next_nride == 0 || last_nride + 15 < t))
			k = MX_NRIDE;        /* a double tap needs an N-ride tap less than 45 s ago */
		if (k == MX_PASS_LATER && (oldest == next_pass || pass_last[oldest] + 25 > t))
			k = MX_PASS_FIRST;
		if (k == MX_PASS_FIRST && next_pass == MIX_PASSES)
			k = MX_NRIDE;
		/* a tap-off closes the journey opened longest ago, at least 75 s after its tap-on */
		if (k == MX_SV_OFF && (n_open == 0 || open_slot[open_head] + 25 > t))
			k = MX_SV_ON;
		if (k == MX_SV_ON && (n_open == MIX_SV || n_trips == 0))
			k = MX_NRIDE;
		kinds[t] = (enum mix_kind)k;
		trip_of[t] = -1;
		switch (k) {
		case MX_NRIDE:
			prev_card = next_nride++ % MIX_NRIDE;
			last_nride = t;
			fprintf(fp, "tap +%u n%u\n", t * 3, prev_card);
			break;
		case MX_DOUBLE:
			fprintf(fp, "tap +%u n%u\n", t * 3, prev_card);
			break;
		case MX_PASS_FIRST:
			pass_last[next_pass] = t;
			fprintf(fp, "tap +%u k%d_%u\n", t * 3, MX_PASS_FIRST, next_pass++);
			break;
		case MX_PASS_LATER:   /* the pass used longest ago goes to the back of the queue */
			fprintf(fp, "tap +%u k%d_%u\n", t * 3, MX_PASS_FIRST, oldest);
			pass_last[oldest] = t;
			oldest = (oldest + 1) % next_pass;
			break;
		case MX_SV_ON: {
			uint32_t at = (open_head + n_open++) % MIX_SV;

			open_card[at] = next_sv++ % MIX_SV;
			open_trip[at] = next_trip++ % (uint32_t)n_trips;
			open_slot[at] = t;
			trip_of[t] = (int)open_trip[at];
			fprintf(fp, "tap +%u k%d_%u\n", t * 3, MX_SV_ON, open_card[at]);
			break;
		}
		case MX_SV_OFF:
			trip_of[t] = (int)open_trip[open_head];
			fprintf(fp, "tap +%u k%d_%u\n", t * 3, MX_SV_ON, open_card[open_head]);
			open_head = (open_head + 1) % MIX_SV;
			n_open--;
			break;
		case MX_DENY:
			fprintf(fp, "tap +%u k%d_%u\n", t * 3, MX_DENY, next_deny++ % MIX_DENIED);
			break;
		default:
			fprintf(fp, "tap +%u k%d_%u\n", t * 3, MX_NOTHING, next_none++ % MIX_NOTHING);
			break;
		}
	}
	fclose(fp);
}

/* The mix, with the pool warm (riders seconds apart: the idle loop refills between them). */
static void measure_mix(kp_store *s, kp_tap_engine *e, const kp_key *key, struct mix_result *mr)
{
	enum mix_kind *kinds = malloc(sizeof(*kinds) * MIX_TAPS);
	int *trip_of = malloc(sizeof(int) * MIX_TAPS);
	struct trip *trips = calloc(MIX_TRIPS, sizeof(*trips));
	int utc_offset = kp_tap_engine_cfg(e)->utc_offset_s;
	size_t n_trips;
	long run = 0;
	double *v = malloc(sizeof(double) * MIX_TAPS * 3 * (MX_KINDS + 1));
	uint32_t salt = (uint32_t)(getpid() ^ time(NULL)) & 0xFFFFFF;
	struct kp_poll poll = { KP_TECH_FELICA, 0x0003, 1 };
	char path[1200], conn[1300];
	struct kp_reader *rd = NULL;
	kp_sign_pool *pool = NULL;
	int rc;

	if (kinds == NULL || v == NULL || trip_of == NULL || trips == NULL)
		die("mix: memory", 0);
	snprintf(path, sizeof(path), "%s/bench-scenario-mix.txt", dir);
	snprintf(conn, sizeof(conn), "mock:%s", path);
	mix_setup(s, salt, &run);
	n_trips = sample_trips(db, trips, MIX_TRIPS);
	mix_schedule(path, salt, run, kinds, trip_of, n_trips);
	if ((rc = kp_reader_open(&rd, conn)) != KP_OK ||
	    (rc = kp_sign_pool_open(&pool, key, KP_SIGN_POOL_DEFAULT)) != 0)
		die("mix: set-up", rc);
	kp_tap_engine_set_pool(e, pool);
	for (uint32_t t = 0; t < MIX_TAPS; t++) {
		struct kp_card_info info;
		struct kp_tap_outcome o;
		struct kp_tap_timing tm;
		double t0, lat;
		int k = kinds[t];

		kp_sign_pool_refill(pool, KP_SIGN_POOL_DEFAULT, NULL);
		/* where the tap is: a DN bus on the journey's route for stored value */
		if (trip_of[t] >= 0) {
			const struct trip *tr = &trips[trip_of[t]];

			rc = kp_tap_engine_set_place(e, "DN", tr->route, k == MX_SV_ON ? tr->from : tr->to,
			                             utc_offset, k == MX_SV_ON ? "tap_on" : "tap_off");
		} else {
			rc = kp_tap_engine_set_place(e, "OP-A", "R1", "", utc_offset, NULL);
		}
		if (rc != KP_OK)
			die("mix: place", rc);
		if ((rc = kp_reader_wait_card(rd, &poll, &info, 100)) != KP_HAL_OK)
			die("mix: wait_card", rc);
		t0 = now_us();
		rc = kp_tap_card(e, rd, &info, kp_reader_now_ms(rd), &o);
		lat = now_us() - t0;
		if (rc != KP_OK)
			die("mix: tap", rc);
		if (o.kind != mix[k].outcome) {
			fprintf(stderr, "bench: mix tap %u (%s) came out %s\n", t, mix[k].name, o.reason);
			exit(1);
		}
		kp_tap_engine_timing(e, &tm);
		mr->pooled += (unsigned)tm.pooled;
		for (int g = 0; g < 2; g++) {        /* its kind's row, and the mix's */
			int row = g == 0 ? k : MX_KINDS;
			double *base = v + (size_t)row * MIX_TAPS * 3;
			unsigned i = mr->n[row]++;

			base[i] = lat;
			base[MIX_TAPS + i] = tm.sign_ns / 1e3;
			base[2 * MIX_TAPS + i] = tm.commit_ns / 1e3;
		}
		kp_reader_release(rd, 0, 0);
		if (t % 16 == 15)
			kp_store_idle(s);
	}
	for (int row = 0; row <= MX_KINDS; row++) {
		double *base = v + (size_t)row * MIX_TAPS * 3, part[3];

		if (mr->n[row] == 0)
			continue;
		pct3(base, mr->n[row], mr->tap[row]);
		pct3(base + MIX_TAPS, mr->n[row], part);
		mr->sign[row] = part[0];
		pct3(base + 2 * MIX_TAPS, mr->n[row], part);
		mr->commit[row] = part[0];
	}
	kp_tap_engine_set_pool(e, NULL);
	kp_sign_pool_free(pool);
	kp_reader_close(rd);
	free(kinds);
	free(trip_of);
	free(trips);
	free(v);
}

/* Runs in a child so that its peak RSS is the terminal's, not the generator's. */
static void measure(int out_fd, int pool_only)
{
	struct result r;
	struct kp_terminal_cfg cfg;
	kp_store *s = NULL;
	kp_key *key = NULL;
	kp_tap_engine *e = NULL;
	struct kp_reader *reader = NULL, *pool_reader = NULL;
	struct kp_poll poll = { KP_TECH_FELICA, 0x0003, 1 };
	double *lat = malloc(sizeof(double) * N_TAPS), *sg = malloc(sizeof(double) * 2000);
	char conn[1200], conn_pool[1200];
	size_t n = 0;
	int rc;

	memset(&r, 0, sizeof(r));
	kp_terminal_cfg_defaults(&cfg);
	snprintf(cfg.terminal_id, sizeof(cfg.terminal_id), "BENCH-1");
	snprintf(cfg.operator_id, sizeof(cfg.operator_id), "OP-A");
	snprintf(cfg.route, sizeof(cfg.route), "R1");
	snprintf(conn, sizeof(conn), "mock:%s", scenario);
	snprintf(conn_pool, sizeof(conn_pool), "mock:%s", scenario_pool);
	if ((rc = kp_store_open(&s, db)) != KP_OK || (rc = kp_key_load(&key, key_path)) != 0 ||
	    (rc = kp_tap_engine_open(&e, s, &cfg, key, token_key)) != KP_OK ||
	    (rc = kp_reader_open(&reader, conn)) != KP_OK ||
	    (rc = kp_reader_open(&pool_reader, conn_pool)) != KP_OK)
		die("set-up", rc);
	/* What the durable commits measured here rest on, read back rather than assumed. */
	rc = kp_store_pragmas(s, r.journal_mode, sizeof(r.journal_mode), &r.synchronous,
	                      &r.foreign_keys);
	if (rc != KP_OK)
		die("pragmas", rc);
	r.pool_only = pool_only;
	for (; !pool_only;) {
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
	if (pool_only)
		goto pool;
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
pool:
	measure_pool(s, e, key, pool_reader, &r.pool);
	measure_mix(s, e, key, &r.mix);
	if (write(out_fd, &r, sizeof(r)) != sizeof(r))
		exit(1);
	kp_reader_close(reader);
	kp_reader_close(pool_reader);
	kp_tap_engine_close(e);
	kp_store_close(s);
	kp_key_free(key);
	free(lat);
	free(sg);
	exit(0);
}

static void print_pool(const struct pool_result *p)
{
	printf("| tap, pool warm: detected -> signed+committed [2] | %7.3f | %7.3f | %7.3f |         | p99<=0.5 p99.9<=1 |\n",
	       p->warm[0] / 1e3, p->warm[1] / 1e3, p->warm[2] / 1e3);
	printf("| tap, pool empty: detected -> signed+committed [2] | %7.3f | %7.3f | %7.3f |         |                 |\n",
	       p->empty[0] / 1e3, p->empty[1] / 1e3, p->empty[2] / 1e3);
	printf("| part: the signature in the tap, pool warm (ms)  | %7.3f | %7.3f | %7.3f |         |                 |\n",
	       p->sign_warm[0] / 1e3, p->sign_warm[1] / 1e3, p->sign_warm[2] / 1e3);
	printf("| part: the signature in the tap, pool empty (ms) | %7.3f | %7.3f | %7.3f |         |                 |\n",
	       p->sign_empty[0] / 1e3, p->sign_empty[1] / 1e3, p->sign_empty[2] / 1e3);
	printf("| pool: refilled after %d taps, wall / CPU (ms) [3] | %7.1f | %7.1f |         |         | wall<=1000      |\n",
	       POOL_BURST, p->refill_wall_ms, p->refill_cpu_ms);
	printf("| pool: memory, %zu entries (KiB; %s)       | %7.1f |         |         |         |                 |\n",
	       p->cap, p->locked ? "mlocked" : "not locked", p->bytes / 1024.0);
	printf("| pool: idle with the pool full, per turn (us)    | %7.3f |         |         |         |                 |\n",
	       p->full_call_us);
	printf("| crowd: %d taps %d ms apart (ms)              | %7.3f | %7.3f | %7.3f |         | pooled %u, low %zu |\n",
	       CROWD_TAPS, CROWD_GAP_MS, p->crowd[0] / 1e3, p->crowd[1] / 1e3, p->crowd[2] / 1e3,
	       p->crowd_pooled, p->crowd_low);
}

static void print_mix(const struct mix_result *m)
{
	printf("\nThe mix of kinds (%d taps, pool warm; %u signed from the pool): ms\n\n",
	       MIX_TAPS, m->pooled);
	printf("| kind (share)                                         |  taps |     p50 |     p99 |   p99.9 | sign p50 | commit p50 |\n");
	printf("|------------------------------------------------------|-------|---------|---------|---------|----------|------------|\n");
	for (int k = 0; k <= MX_KINDS; k++)
		printf("| %-46s %4s | %5u | %7.3f | %7.3f | %7.3f | %8.3f | %10.3f |\n",
		       k < MX_KINDS ? mix[k].name : "the whole mix", "", m->n[k], m->tap[k][0] / 1e3,
		       m->tap[k][1] / 1e3, m->tap[k][2] / 1e3, m->sign[k] / 1e3, m->commit[k] / 1e3);
}

int main(int argc, char **argv)
{
	const char *json = NULL;
	struct result r;
	struct rusage ru;
	int fds[2], st = 0;
	pid_t pid;
	double rss_mb;
	int pool_only = 0, small = 0;

	dir[0] = '\0';
	const struct bench_opt opts[] = {
		{ "json", BENCH_OPT_STR, &json, 0 },
		{ "dir", BENCH_OPT_PATH, dir, sizeof(dir) },
		{ "pool-only", BENCH_OPT_FLAG, &pool_only, 0 },   /* only the signing pool's rows */
		{ "small", BENCH_OPT_FLAG, &small, 0 },           /* a store 50 times smaller */
	};

	if (bench_opts(argc, argv, opts, sizeof(opts) / sizeof(opts[0])) != 0)
		return 2;
	if (small) {
		N_ENT = N_ENT_FULL / 50;
		N_DENY = N_DENY_FULL / 50;
	}
	if (dir[0] == '\0')
		snprintf(dir, sizeof(dir), small ? "build/bench-small" : "build/bench");
	mkdir(dir, 0755);
	snprintf(db, sizeof(db), "%s/bench.db", dir);
	snprintf(key_path, sizeof(key_path), "%s/bench.key", dir);
	snprintf(scenario, sizeof(scenario), "%s/bench-scenario.txt", dir);
	snprintf(scenario_pool, sizeof(scenario_pool), "%s/bench-scenario-pool.txt", dir);
	pid = fork();
	if (pid == 0) {
		generate();
		exit(0);
	}
	waitpid(pid, &st, 0);
	if (!WIFEXITED(st) || WEXITSTATUS(st) != 0)
		return 1;
	write_scenario(scenario, "2026-11-26T06:00:00+09:00");
	write_scenario(scenario_pool, "2026-11-27T06:00:00+09:00");
	if (pipe(fds) != 0)
		return 1;
	pid = fork();
	if (pid == 0) {
		close(fds[0]);
		measure(fds[1], pool_only);
	}
	close(fds[1]);
	if (read(fds[0], &r, sizeof(r)) != sizeof(r) || wait4(pid, &st, 0, &ru) != pid ||
	    !WIFEXITED(st) || WEXITSTATUS(st) != 0) {
		fprintf(stderr, "bench: measurement failed\n");
		return 1;
	}
	rss_mb = ru.ru_maxrss / 1024.0;

	printf("\nkippu bench: %d taps by %d cards through mock HAL + FeliCa client,\n"
	       "store of %u entitlements and %u denylist entries\n"
	       "(read back from the store: journal_mode=%s, synchronous=%d (%s), foreign_keys=%d)\n\n",
	       N_TAPS, N_CARDS, N_ENT, N_DENY, r.journal_mode, r.synchronous,
	       sync_name(r.synchronous), r.foreign_keys);
	printf("| metric                                          |     p50 |     p99 |   p99.9 |     max | target          |\n");
	printf("|-------------------------------------------------|---------|---------|---------|---------|-----------------|\n");
	print_pool(&r.pool);
	if (r.pool_only)
		goto footer;
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
footer:
	print_mix(&r.mix);
	printf("\n[1] the record is signed inside the tap's transaction, so signed = committed.\n"
	       "[2] %d taps each, interleaved; empty = the pool had no entry: RFC 6979 in the tap.\n"
	       "[3] the idle loop: %d entries a turn, turns of %d ms while the pool is not full.\n"
	       "accepted %lu, refused %lu (the 10,000 taps of the first rows)\n", POOL_TAPS, KP_SIGN_POOL_IDLE_BATCH,
	       KP_SIGN_POOL_IDLE_WAIT_MS, r.accepted, r.refused);
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
		        "  {\"metric\": \"tap_pool_warm_p50\", \"unit\": \"ms\", \"value\": %.4f},\n"
		        "  {\"metric\": \"tap_pool_warm_p99\", \"unit\": \"ms\", \"value\": %.4f},\n"
		        "  {\"metric\": \"tap_pool_warm_p999\", \"unit\": \"ms\", \"value\": %.4f},\n"
		        "  {\"metric\": \"tap_pool_empty_p99\", \"unit\": \"ms\", \"value\": %.4f},\n"
		        "  {\"metric\": \"sign_pool_warm_p50\", \"unit\": \"ms\", \"value\": %.4f},\n"
		        "  {\"metric\": \"pool_refill_wall\", \"unit\": \"ms\", \"value\": %.1f},\n"
		        "  {\"metric\": \"tap_mix_p50\", \"unit\": \"ms\", \"value\": %.4f},\n"
		        "  {\"metric\": \"tap_mix_p99\", \"unit\": \"ms\", \"value\": %.4f},\n"
		        "  {\"metric\": \"tap_mix_p999\", \"unit\": \"ms\", \"value\": %.4f},\n"
		        "  {\"metric\": \"peak_rss\", \"unit\": \"MB\", \"value\": %.1f}\n"
		        "]\n",
		        r.tap[0] / 1e3, r.tap[1] / 1e3, r.tap[2] / 1e3, r.tap[3] / 1e3,
		        r.tap[0] / 1e3, r.tap[1] / 1e3, r.tap[2] / 1e3, r.sign[0] / 1e3,
		        r.commit[0] / 1e3, r.pool.warm[0] / 1e3, r.pool.warm[1] / 1e3,
		        r.pool.warm[2] / 1e3, r.pool.empty[1] / 1e3, r.pool.sign_warm[0] / 1e3,
		        r.pool.refill_wall_ms, r.mix.tap[MX_KINDS][0] / 1e3, r.mix.tap[MX_KINDS][1] / 1e3,
		        r.mix.tap[MX_KINDS][2] / 1e3, rss_mb);
		fclose(fp);
	}
	return 0;
}
