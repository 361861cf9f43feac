/* SPDX-License-Identifier: Apache-2.0 */
/* kippu-bench-fares: the fare engine on the largest real feed in ../shared/data/gtfs
 * (jp-donanbus-muroran-zone: 706 stops, 63,745 route + origin/destination fare rules).
 * Measures the import of the feed, and the tap decision of a distance-fare bus (tap-on:
 * the maximum fare from the boarding stop is checked against the balance; tap-off: the
 * stop-to-stop fare, transfer and caps, charged) with the signed journal record and the
 * durable commit, over riders on random routes and stops of the feed. Prints a table;
 * --json-append adds its figures to kippu-bench's JSON array. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "bench_trips.h"
#include "kp_loadgen.h"
#include "bench_util.h"
#include "kp_terminal.h"
#include "kp_tools.h"

#define N_CARDS 2000
#define N_JOURNEYS 5000

/* The p-th percentile of n samples, in ms: sorts them, and truncates the rank. */
static double pct_ms(double *v, size_t n, double p)
{
	size_t i = (size_t)(p / 100.0 * (double)n);

	qsort(v, n, sizeof(double), cmp_double);
	return v[i < n ? i : n - 1] / 1e3;
}

static void die(const char *what, int rc, kp_store *s)
{
	fprintf(stderr, "bench-fares: %s: %s (%s)\n", what, kp_strerror(rc),
	        s != NULL ? kp_store_errmsg(s) : "");
	exit(1);
}

int main(int argc, char **argv)
{
	static const uint8_t token_key[KP_TOKEN_KEY_LEN] = { 7 };
	char dir[900] = "build/bench-fares", db[1000], err[KP_FARE_MSG_MAX];
	const char *json = NULL;
	struct kp_fare_import_opts io = { "muroran", NULL, NULL };
	struct kp_fare_import_stats ist;
	struct kp_terminal_cfg cfg;
	struct trip *trips;
	kp_store *s = NULL;
	kp_key *key = NULL;
	kp_tap_engine *e = NULL;
	double *on, *off, *look, *maxl, imp_s, t0;
	int64_t now = 1796083200000LL;            /* 2026-12-01T00:00:00Z = 09:00 JST */
	size_t n_trips, n_on = 0, n_off = 0, accepted = 0;
	int rc;
	struct rusage ru;
	const struct bench_opt opts[] = {
		{ "dir", BENCH_OPT_PATH, dir, sizeof(dir) },
		{ "json-append", BENCH_OPT_STR, &json, 0 },
	};

	if (bench_opts(argc, argv, opts, sizeof(opts) / sizeof(opts[0])) != 0)
		return 2;
	if (access(FEED_DIR "/fare_rules.txt", R_OK) != 0) {
		fprintf(stderr, "bench-fares: %s not found (run from the project root, with "
		        "../shared beside it)\n", FEED_DIR);
		return 1;
	}
	mkdir(dir, 0755);
	snprintf(db, sizeof(db), "%s/fares.db", dir);
	unlink(db);
	if ((rc = kp_store_open(&s, db)) != KP_OK)
		die("open", rc, s);
	t0 = now_us();
	rc = kp_fares_import(s, FEED_DIR, &io, &ist, err, sizeof(err));
	imp_s = (now_us() - t0) / 1e6;
	if (rc != KP_OK) {
		fprintf(stderr, "bench-fares: import: %s\n", err);
		return 1;
	}
	/* the scheme: operator DN prices by the feed, tap-on/tap-off; riders hold stored value */
	rc = kp_store_begin(s);
	if (rc == KP_OK)
		rc = put_dn_scheme(s);
	for (int i = 0; rc == KP_OK && i < N_CARDS; i++) {
		struct kp_entitlement en;
		char label[16];

		memset(&en, 0, sizeof(en));
		snprintf(label, sizeof(label), "%d", i);
		kp_token_derive(token_key, "bench", (const uint8_t *)label, strlen(label), en.token);
		en.id = i + 1;
		snprintf(en.product, sizeof(en.product), "SV");
		en.rides_left = 10000000;
		en.valid_from_ms = now - 86400000LL;
		en.valid_until_ms = now + 400LL * 86400000LL;
		rc = kp_store_put_entitlement(s, &en);
	}
	if (rc == KP_OK)
		rc = kp_store_commit(s);
	if (rc != KP_OK)
		die("set-up", rc, s);
	trips = calloc(N_JOURNEYS, sizeof(*trips));
	on = calloc(N_JOURNEYS, sizeof(double));
	off = calloc(N_JOURNEYS, sizeof(double));
	look = calloc(N_JOURNEYS, sizeof(double));
	maxl = calloc(N_JOURNEYS, sizeof(double));
	n_trips = sample_trips(db, trips, N_JOURNEYS);
	if (n_trips < 100) {
		fprintf(stderr, "bench-fares: only %zu journeys sampled\n", n_trips);
		return 1;
	}
	/* the fare lookups alone */
	for (size_t i = 0; i < n_trips; i++) {
		struct kp_fare_query q = { "muroran", trips[i].route, trips[i].from, trips[i].to,
		                           NULL, NULL, 20261201, 9 * 3600, NULL, NULL, -1,
		                           KP_FARE_AUTO, 0 };
		struct kp_fare_result r;

		t0 = now_us();
		kp_fare_lookup(s, &q, &r);
		look[i] = now_us() - t0;
		q.max_to = 1;
		t0 = now_us();
		kp_fare_lookup(s, &q, &r);
		maxl[i] = now_us() - t0;
	}
	kp_terminal_cfg_defaults(&cfg);
	snprintf(cfg.terminal_id, sizeof(cfg.terminal_id), "BENCH-F");
	snprintf(cfg.operator_id, sizeof(cfg.operator_id), "DN");
	if (kp_key_generate(&key) != 0 || (rc = kp_tap_engine_open(&e, s, &cfg, key, token_key)) != KP_OK)
		die("engine", rc, s);
	/* A card taps on at a journey's first stop and off at its last, a minute later. */
	for (size_t i = 0; i < n_trips; i++) {
		struct kp_tap_outcome o;
		uint8_t token[KP_TOKEN_LEN];
		char label[16];

		snprintf(label, sizeof(label), "%zu", i % N_CARDS);
		kp_token_derive(token_key, "bench", (const uint8_t *)label, strlen(label), token);
		now += 2000;
		kp_tap_engine_set_place(e, "DN", trips[i].route, trips[i].from, 9 * 3600, "tap_on");
		t0 = now_us();
		rc = kp_tap_decide(e, token, now, &o);
		on[n_on++] = now_us() - t0;
		if (rc != KP_OK)
			die("tap_on", rc, s);
		kp_tap_engine_set_place(e, "DN", trips[i].route, trips[i].to, 9 * 3600, "tap_off");
		t0 = now_us();
		rc = kp_tap_decide(e, token, now + 90000, &o);
		off[n_off++] = now_us() - t0;
		if (rc != KP_OK)
			die("tap_off", rc, s);
		accepted += o.kind == KP_TAP_ACCEPTED && o.amount >= 0;
		if (i % 16 == 0)
			kp_store_idle(s);
	}
	getrusage(RUSAGE_SELF, &ru);
	{
		double v[] = { imp_s,
		               pct_ms(on, n_on, 50), pct_ms(on, n_on, 99), pct_ms(on, n_on, 99.9),
		               pct_ms(off, n_off, 50), pct_ms(off, n_off, 99), pct_ms(off, n_off, 99.9),
		               pct_ms(look, n_trips, 50), pct_ms(look, n_trips, 99),
		               pct_ms(maxl, n_trips, 50), pct_ms(maxl, n_trips, 99) };
		const struct kp_metric m[] = {
			{ "fares_import_muroran", "s", v[0] },
			{ "fare_tap_on_p50", "ms", v[1] }, { "fare_tap_on_p99", "ms", v[2] },
			{ "fare_tap_on_p999", "ms", v[3] }, { "fare_tap_off_p50", "ms", v[4] },
			{ "fare_tap_off_p99", "ms", v[5] }, { "fare_tap_off_p999", "ms", v[6] },
			{ "fare_lookup_p50", "ms", v[7] }, { "fare_lookup_p99", "ms", v[8] },
			{ "fare_max_lookup_p50", "ms", v[9] }, { "fare_max_lookup_p99", "ms", v[10] },
		};

		printf("\nkippu bench-fares: jp-donanbus-muroran-zone (%lld fare rules), %zu journeys by "
		       "%d cards\n(tap-on + tap-off on a distance-fare bus, stored value, day cap; "
		       "signed + durable commit)\n\n", (long long)ist.fare_rules, n_trips, N_CARDS);
		printf("| metric                                          |     p50 |     p99 |   p99.9 | target   |\n");
		printf("|-------------------------------------------------|---------|---------|---------|----------|\n");
		printf("| import of the feed (s)                          | %7.2f |         |         |          |\n", v[0]);
		printf("| tap-on: max fare + balance, committed (ms)      | %7.3f | %7.3f | %7.3f | p99<=1   |\n", v[1], v[2], v[3]);
		printf("| tap-off: fare+transfer+caps, committed (ms)     | %7.3f | %7.3f | %7.3f | p99<=1   |\n", v[4], v[5], v[6]);
		printf("| part: stop-to-stop fare lookup (ms)             | %7.3f | %7.3f |         |          |\n", v[7], v[8]);
		printf("| part: maximum fare from a stop (ms)             | %7.3f | %7.3f |         |          |\n", v[9], v[10]);
		printf("| peak RSS (MB)                                   | %7.1f |         |         |          |\n", ru.ru_maxrss / 1024.0);
		printf("\ntap-offs charged: %zu of %zu\n", accepted, n_off);
		if (json != NULL && kp_metrics_json(json, 1, m, sizeof(m) / sizeof(m[0])) != 0)
			return 1;
	}
	kp_tap_engine_close(e);
	kp_key_free(key);
	kp_store_close(s);
	free(trips);
	free(on);
	free(off);
	free(look);
	free(maxl);
	return 0;
}
