/* SPDX-License-Identifier: Apache-2.0 */
/* kippu-bench-ridership: a month of a mid-size city's taps (by default 10 million taps, 300
 * routes of 10 stops, 3,000 stops, 500,000 cards; half the routes tap-on/tap-off, half flat
 * fare) generated into a backend database and a GTFS feed under --dir (removed after, unless
 * --keep), then the time to build the whole ridership report over it (kp_an_run: every
 * measure, the TIDES exports and report.html) and its peak memory. The records go into the
 * store's records table directly (each payload encoded by kp_record_encode, as the analytics
 * decode it), not through ingest: the bench measures the analytics, not the backend. */
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <sqlite3.h>

#include "bench_util.h"
#include "kp_analytics.h"
#include "kp_backend.h"
#include "kp_loadgen.h"
#include "kp_terminal.h"

#define STOPS_PER_ROUTE 10
#define D0 1793458800000LL            /* 2026-11-01T00:00+09:00 */
#define HOUR_MS 3600000LL

struct gen {
	sqlite3 *db;
	sqlite3_stmt *ins;
	uint64_t *seq;                /* per route's terminal */
	int routes;
	long taps;
};

static int die(const char *what, const char *why)
{
	fprintf(stderr, "bench-ridership: %s: %s\n", what, why);
	return 1;
}

static int write_gtfs(const char *dir, int routes)
{
	char path[1100];
	FILE *s, *r, *t, *st;

	snprintf(path, sizeof(path), "%s/gtfs", dir);
	if (mkdir(path, 0755) != 0 && errno != EEXIST)
		return -1;
	snprintf(path, sizeof(path), "%s/gtfs/stops.txt", dir);
	s = fopen(path, "w");
	snprintf(path, sizeof(path), "%s/gtfs/routes.txt", dir);
	r = fopen(path, "w");
	snprintf(path, sizeof(path), "%s/gtfs/trips.txt", dir);
	t = fopen(path, "w");
	snprintf(path, sizeof(path), "%s/gtfs/stop_times.txt", dir);
	st = fopen(path, "w");
	if (s == NULL || r == NULL || t == NULL || st == NULL)
		return -1;
	fputs("stop_id,stop_name,stop_lat,stop_lon\n", s);
	fputs("route_id,route_short_name,route_long_name,route_type\n", r);
	fputs("route_id,service_id,trip_id,direction_id\n", t);
	fputs("trip_id,arrival_time,departure_time,stop_id,stop_sequence\n", st);
	for (int k = 0; k < routes; k++) {
		fprintf(r, "R%03d,%d,Route %d,3\n", k, k, k);
		fprintf(t, "R%03d,D,R%03d-0,0\nR%03d,D,R%03d-1,1\n", k, k, k, k);
		for (int i = 0; i < STOPS_PER_ROUTE; i++) {
			fprintf(s, "S%04d,Stop %d-%d,%.5f,%.5f\n", k * STOPS_PER_ROUTE + i, k, i,
			        36.0 + (k / 20) * 0.02, 139.0 + (k % 20) * 0.1 + i * 0.008);
			fprintf(st, "R%03d-0,06:%02d:00,06:%02d:00,S%04d,%d\n", k, i, i,
			        k * STOPS_PER_ROUTE + i, i + 1);
			fprintf(st, "R%03d-1,07:%02d:00,07:%02d:00,S%04d,%d\n", k, i, i,
			        k * STOPS_PER_ROUTE + STOPS_PER_ROUTE - 1 - i, i + 1);
		}
	}
	return fclose(s) | fclose(r) | fclose(t) | fclose(st);
}

static int put(struct gen *g, int route, uint32_t card, int64_t at, int stop, const char *event,
               const char *category)
{
	struct kp_record rec;
	uint8_t *payload = NULL;
	size_t len = 0;
	static const uint8_t zero[32];
	sqlite3_stmt *st = g->ins;
	int rc;

	memset(&rec, 0, sizeof(rec));
	snprintf(rec.terminal, sizeof(rec.terminal), "T%03d", route);
	rec.seq = ++g->seq[route];
	rec.time_ms = at;
	strcpy(rec.kind, "tap");
	rec.has_token = 1;
	memcpy(rec.token, &card, sizeof(card));
	memset(rec.token + 4, 0x5A, KP_TOKEN_LEN - 4);
	snprintf(rec.operator_id, sizeof(rec.operator_id), "OP%d", route % 3);
	snprintf(rec.route, sizeof(rec.route), "R%03d", route);
	snprintf(rec.stop, sizeof(rec.stop), "S%04d", route * STOPS_PER_ROUTE + stop);
	strcpy(rec.product, "SV");
	rec.amount = strcmp(event, "tap_on") == 0 ? 0 : 200;
	strcpy(rec.result, "accepted");
	strcpy(rec.reason, "ok");
	strcpy(rec.event, event);
	snprintf(rec.category, sizeof(rec.category), "%s", category);
	if (kp_record_encode(&rec, &payload, &len) != KP_RECORD_OK)
		return -1;
	sqlite3_bind_text(st, 1, rec.terminal, -1, SQLITE_TRANSIENT);
	sqlite3_bind_blob(st, 2, zero, 16, SQLITE_STATIC);
	sqlite3_bind_int64(st, 3, (sqlite3_int64)rec.seq);
	sqlite3_bind_int64(st, 4, at);
	sqlite3_bind_blob(st, 5, rec.token, KP_TOKEN_LEN, SQLITE_TRANSIENT);
	sqlite3_bind_text(st, 6, rec.operator_id, -1, SQLITE_TRANSIENT);
	sqlite3_bind_text(st, 7, rec.route, -1, SQLITE_TRANSIENT);
	sqlite3_bind_text(st, 8, rec.stop, -1, SQLITE_TRANSIENT);
	sqlite3_bind_int64(st, 9, rec.amount);
	sqlite3_bind_blob(st, 10, payload, (int)len, SQLITE_TRANSIENT);
	sqlite3_bind_text(st, 11, rec.category, -1, SQLITE_TRANSIENT);
	sqlite3_bind_text(st, 12, event, -1, SQLITE_TRANSIENT);
	rc = sqlite3_step(st);
	sqlite3_reset(st);
	free(payload);
	g->taps++;
	return rc == SQLITE_DONE ? 0 : -1;
}

/* One card's month: a home route; on its days a trip out and a trip back (tap-on and
 * tap-off on even routes, one tap on odd ones), until its share of the taps is made. */
static int card_month(struct gen *g, uint32_t c, long budget)
{
	int route = (int)(c * 2654435761u % (uint32_t)g->routes);
	int a = (int)(c % 4), b = 5 + (int)(c % 5), days = 0;
	int per_trip = route % 2 == 0 ? 2 : 1;
	const char *cat = c % 10 == 0 ? "child" : c % 7 == 0 ? "resident" : "adult";

	for (long made = 0; made + 2 * per_trip <= budget && days < 30; days++) {
		int64_t day = D0 + (int64_t)((days * 7 + c) % 30) * 24 * HOUR_MS;
		int64_t out = day + (7 + c % 3) * HOUR_MS + (c % 60) * 60000LL;
		int64_t back = day + (17 + c % 4) * HOUR_MS + (c % 50) * 60000LL;

		if (put(g, route, c, out, a, per_trip == 2 ? "tap_on" : "tap", cat) != 0 ||
		    (per_trip == 2 && put(g, route, c, out + 20 * 60000LL, b, "tap_off", cat) != 0) ||
		    put(g, route, c, back, b, per_trip == 2 ? "tap_on" : "tap", cat) != 0 ||
		    (per_trip == 2 && put(g, route, c, back + 20 * 60000LL, a, "tap_off", cat) != 0))
			return -1;
		made += 2 * per_trip;
	}
	return 0;
}

static int generate(const char *path, int routes, long cards, long taps, long *made)
{
	struct gen g = { 0 };
	kp_bstore *s = NULL;
	int rc = 0;

	if (kp_bstore_open(&s, path) != KP_BE_OK)
		return -1;
	for (int k = 0; k < routes && rc == 0; k++) {
		char id[16];

		snprintf(id, sizeof(id), "T%03d", k);
		rc = kp_bstore_terminal_add(s, id, NULL, D0, NULL) == KP_BE_OK ? 0 : -1;
	}
	kp_bstore_close(s);
	g.routes = routes;
	g.seq = calloc((size_t)routes, sizeof(*g.seq));
	if (rc != 0 || g.seq == NULL || sqlite3_open(path, &g.db) != SQLITE_OK ||
	    sqlite3_exec(g.db, "PRAGMA synchronous = OFF; BEGIN", NULL, NULL, NULL) != SQLITE_OK ||
	    sqlite3_prepare_v2(g.db, "INSERT INTO records(terminal, journal, seq, time_ms, token,"
	                       " operator, route, stop, product, rides, amount, result, reason, cose,"
	                       " payload, hash, received_ms, kind, category, event) VALUES (?1, ?2,"
	                       " ?3, ?4, ?5, ?6, ?7, ?8, 'SV', 0, ?9, 'accepted', 'ok', ?10, ?10,"
	                       " zeroblob(32), ?4, 'tap', ?11, ?12)", -1, &g.ins, NULL) != SQLITE_OK)
		rc = -1;
	for (long c = 0; c < cards && rc == 0; c++)
		rc = card_month(&g, (uint32_t)c, (taps - g.taps) / (cards - c));
	sqlite3_finalize(g.ins);
	if (rc == 0 && sqlite3_exec(g.db, "COMMIT", NULL, NULL, NULL) != SQLITE_OK)
		rc = -1;
	if (rc != 0)
		fprintf(stderr, "bench-ridership: generate: %s\n", sqlite3_errmsg(g.db));
	sqlite3_close(g.db);
	free(g.seq);
	*made = g.taps;
	return rc;
}

static int report_child(const struct kp_an_opts *o, struct kp_an_summary *sum, char *err,
                        size_t cap)
{
	int fd[2], status = 0;
	pid_t pid;

	if (pipe(fd) != 0 || (pid = fork()) < 0) {
		snprintf(err, cap, "fork: %s", strerror(errno));
		return -1;
	}
	if (pid == 0) {
		int rc = kp_an_run(o, sum, err, cap);

		if (rc != KP_AN_OK)
			fprintf(stderr, "bench-ridership: report: %s\n", err);
		_exit(rc == KP_AN_OK && write(fd[1], sum, sizeof(*sum)) == (ssize_t)sizeof(*sum) ?
		      0 : 1);
	}
	close(fd[1]);
	if (read(fd[0], sum, sizeof(*sum)) != (ssize_t)sizeof(*sum) ||
	    waitpid(pid, &status, 0) != pid || !WIFEXITED(status) || WEXITSTATUS(status) != 0) {
		snprintf(err, cap, "the report's process failed");
		close(fd[0]);
		return -1;
	}
	close(fd[0]);
	return 0;
}

static int write_secret(const char *path)
{
	FILE *fp = fopen(path, "w");

	return fp == NULL || fputs("bench-ridership-secret-0123456789", fp) < 0 || fclose(fp) != 0 ?
	       -1 : 0;
}

static void print_table(long made, int routes, long cards, double gen_s, double run_s,
                        const struct kp_an_summary *sum, const struct rusage *ru)
{
	printf("\nkippu bench-ridership: %ld taps, %d routes, %d stops, %ld cards, one month "
	       "(SQLite)\n", made, routes, routes * STOPS_PER_ROUTE, cards);
	printf("| metric                                          |   value | target   |\n");
	printf("|-------------------------------------------------|---------|----------|\n");
	printf("| generate the month (s)                          | %7.1f |          |\n", gen_s);
	printf("| the whole report: measures, TIDES, HTML (s)     | %7.1f | <=60     |\n", run_s);
	printf("| the report's peak RSS (MB)                      | %7.1f |          |\n",
	       ru->ru_maxrss / 1024.0);
	printf("\nboardings %" PRId64 ", alightings %" PRId64 ", inferred %" PRId64 ", unlinked %"
	       PRId64 "; accuracy %" PRId64 "/%" PRId64 " inferred, %" PRId64 " correct; %" PRId64
	       " of %" PRId64 " cells suppressed\n", sum->boardings, sum->alightings, sum->inferred,
	       sum->unlinked, sum->acc_inferred, sum->acc_tested, sum->acc_correct, sum->suppressed,
	       sum->cells);
}

int main(int argc, char **argv)
{
	char dir[900] = "build/bench-ridership", db[1000], out[1000], secret[1000], gtfs[1000];
	char err[600];
	const char *json = NULL;
	double taps_m = 10, t0, gen_s, run_s;
	int routes = 300, cards_k = 500, keep = 0;
	long made = 0;
	struct kp_an_opts o;
	struct kp_an_summary sum;
	struct rusage ru;
	const struct bench_opt opts[] = {
		{ "dir", BENCH_OPT_PATH, dir, sizeof(dir) },
		{ "json-append", BENCH_OPT_STR, &json, 0 },
		{ "taps-m", BENCH_OPT_DOUBLE, &taps_m, 0 },       /* millions of taps */
		{ "cards-k", BENCH_OPT_INT, &cards_k, 0 },        /* thousands of cards */
		{ "keep", BENCH_OPT_FLAG, &keep, 0 },
	};

	if (bench_opts(argc, argv, opts, sizeof(opts) / sizeof(opts[0])) != 0)
		return 2;
	if (mkdir(dir, 0755) != 0 && errno != EEXIST)
		return die(dir, strerror(errno));
	snprintf(db, sizeof(db), "%s/backend.db", dir);
	snprintf(out, sizeof(out), "%s/report", dir);
	snprintf(secret, sizeof(secret), "%s/secret", dir);
	snprintf(gtfs, sizeof(gtfs), "%s/gtfs", dir);
	remove(db);
	if (write_secret(secret) != 0 || write_gtfs(dir, routes) != 0)
		return die(dir, "cannot write the secret or the GTFS feed");
	t0 = now_us();
	if (generate(db, routes, (long)cards_k * 1000, (long)(taps_m * 1e6), &made) != 0)
		return 1;
	gen_s = (now_us() - t0) / 1e6;
	memset(&o, 0, sizeof(o));
	o.db = db;
	kp_an_parse_date("2026-11-01", &o.from_day);
	kp_an_parse_date("2026-11-30", &o.to_day);
	o.gtfs_dir = gtfs;
	o.k = KP_AN_K_DEFAULT;
	o.secret_path = secret;
	o.out_dir = out;
	/* the report in a process of its own: its peak memory is the report's, not the
	 * generator's (the summary comes back through a pipe) */
	t0 = now_us();
	if (report_child(&o, &sum, err, sizeof(err)) != 0)
		return die("report", err);
	run_s = (now_us() - t0) / 1e6;
	getrusage(RUSAGE_CHILDREN, &ru);
	print_table(made, routes, (long)cards_k * 1000, gen_s, run_s, &sum, &ru);
	if (json != NULL) {
		const struct kp_metric m[] = {
			{ "ridership_report_month_s", "s", run_s },
			{ "ridership_report_peak_rss_mb", "MB", ru.ru_maxrss / 1024.0 },
		};

		if (kp_metrics_json(json, 1, m, 2) != 0)
			return 1;
	}
	if (!keep) {
		char cmd[1100];

		snprintf(cmd, sizeof(cmd), "rm -rf '%s'", dir);
		if (system(cmd) != 0)
			return die(dir, "cannot remove");
	}
	return 0;
}
