/* SPDX-License-Identifier: Apache-2.0 */
/* kippu-terminal's figures for Prometheus, as a node_exporter textfile (metrics_file =
 * PATH): written whole to PATH.tmp and renamed over PATH, so the collector never reads half
 * a file. A vehicle terminal opens no listening port; node_exporter, already the standard
 * agent on a Linux box, serves the file with the machine's own figures. The tap loop and
 * the sync thread both report, under one mutex; the file is written at most every
 * KP_TM_EVERY_MS unless forced (after a sync, at exit). Counters start at 0 with the
 * process (Prometheus' rate() takes the reset). Times are Unix timestamps, not ages: a file
 * is read later than it is written, and an age in it would stand still. */
#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "kp_app.h"

#define KP_TM_EVERY_MS 2000
#define MAX_PAIRS 64
#define N_BUCKETS 10

static const double bounds[N_BUCKETS] = {
	0.01, 0.025, 0.05, 0.1, 0.2, 0.3, 0.5, 1, 2.5, 5,
};

static struct {
	pthread_mutex_t mu;
	struct { char result[16], reason[40]; unsigned long n; } pairs[MAX_PAIRS];
	int n_pairs;
	unsigned long bucket[N_BUCKETS + 1];   /* not cumulative; the last is +Inf */
	double sum;
	uint64_t unsent;
	int has_unsent, reader_online;
	int64_t last_sync_ms, last_sync_ok_ms;
	int64_t last_write_mono;
	int pending;
} tm = { .mu = PTHREAD_MUTEX_INITIALIZER, .last_write_mono = -1 };

static int64_t mono_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

void kp_tmetrics_tap(const char *result, const char *reason, double seconds)
{
	int i, b = 0;

	pthread_mutex_lock(&tm.mu);
	for (i = 0; i < tm.n_pairs; i++) {
		if (strcmp(tm.pairs[i].result, result) == 0 && strcmp(tm.pairs[i].reason, reason) == 0)
			break;
	}
	if (i == tm.n_pairs && tm.n_pairs < MAX_PAIRS) {
		snprintf(tm.pairs[i].result, sizeof(tm.pairs[i].result), "%s", result);
		snprintf(tm.pairs[i].reason, sizeof(tm.pairs[i].reason), "%s", reason);
		tm.n_pairs++;
	}
	if (i < tm.n_pairs)
		tm.pairs[i].n++;
	while (b < N_BUCKETS && seconds > bounds[b])
		b++;
	tm.bucket[b]++;
	tm.sum += seconds;
	tm.pending = 1;
	pthread_mutex_unlock(&tm.mu);
}

void kp_tmetrics_state(uint64_t unsent, int reader_online)
{
	pthread_mutex_lock(&tm.mu);
	tm.unsent = unsent;
	tm.has_unsent = 1;
	tm.reader_online = reader_online;
	pthread_mutex_unlock(&tm.mu);
}

void kp_tmetrics_sync(int ok, uint64_t unsent, int64_t now_ms)
{
	pthread_mutex_lock(&tm.mu);
	tm.last_sync_ms = now_ms;
	if (ok)
		tm.last_sync_ok_ms = now_ms;
	tm.unsent = unsent;
	tm.has_unsent = 1;
	tm.pending = 1;
	pthread_mutex_unlock(&tm.mu);
}

static void head(FILE *fp, const char *name, const char *type, const char *help)
{
	fprintf(fp, "# HELP kippu_terminal_%s %s\n# TYPE kippu_terminal_%s %s\n", name, help, name,
	        type);
}

/* With tm.mu held: the whole text into fp. */
static void render(FILE *fp, const char *db_path)
{
	char wal[600];
	struct stat sb;
	unsigned long cum = 0;

	head(fp, "taps_total", "counter", "Taps decided since start, by result and reason.");
	for (int i = 0; i < tm.n_pairs; i++)
		fprintf(fp, "kippu_terminal_taps_total{result=\"%s\",reason=\"%s\"} %lu\n",
		        tm.pairs[i].result, tm.pairs[i].reason, tm.pairs[i].n);
	head(fp, "tap_seconds", "histogram", "Time from a card found to its tap decided.");
	for (int b = 0; b < N_BUCKETS; b++) {
		cum += tm.bucket[b];
		fprintf(fp, "kippu_terminal_tap_seconds_bucket{le=\"%g\"} %lu\n", bounds[b], cum);
	}
	cum += tm.bucket[N_BUCKETS];
	fprintf(fp, "kippu_terminal_tap_seconds_bucket{le=\"+Inf\"} %lu\n", cum);
	fprintf(fp, "kippu_terminal_tap_seconds_sum %.6f\n", tm.sum);
	fprintf(fp, "kippu_terminal_tap_seconds_count %lu\n", cum);
	if (tm.has_unsent) {
		head(fp, "unsent_records", "gauge", "Journal records the backend has not acknowledged.");
		fprintf(fp, "kippu_terminal_unsent_records %llu\n", (unsigned long long)tm.unsent);
	}
	head(fp, "last_sync_attempt_timestamp_seconds", "gauge",
	     "Unix time of the last sync attempt since start (0: none).");
	fprintf(fp, "kippu_terminal_last_sync_attempt_timestamp_seconds %.3f\n",
	        (double)tm.last_sync_ms / 1000.0);
	head(fp, "last_sync_timestamp_seconds", "gauge",
	     "Unix time of the last successful sync since start (0: none).");
	fprintf(fp, "kippu_terminal_last_sync_timestamp_seconds %.3f\n",
	        (double)tm.last_sync_ok_ms / 1000.0);
	head(fp, "denylist_timestamp_seconds", "gauge", "Unix time the applied bundle (denylist) "
	     "was last known current: the last successful sync (0: not since start).");
	fprintf(fp, "kippu_terminal_denylist_timestamp_seconds %.3f\n",
	        (double)tm.last_sync_ok_ms / 1000.0);
	head(fp, "reader_online", "gauge", "1 while the card reader is open and answering.");
	fprintf(fp, "kippu_terminal_reader_online %d\n", tm.reader_online);
	snprintf(wal, sizeof(wal), "%s-wal", db_path);
	head(fp, "wal_size_bytes", "gauge", "Size of the database's write-ahead log.");
	fprintf(fp, "kippu_terminal_wal_size_bytes %lld\n",
	        stat(wal, &sb) == 0 ? (long long)sb.st_size : 0LL);
	head(fp, "metrics_written_timestamp_seconds", "gauge", "Unix time this file was written.");
	{
		struct timespec ts;

		clock_gettime(CLOCK_REALTIME, &ts);
		fprintf(fp, "kippu_terminal_metrics_written_timestamp_seconds %lld\n",
		        (long long)ts.tv_sec);
	}
}

int kp_tmetrics_write(const char *path, const char *db_path, int force, char *err,
                      size_t err_cap)
{
	char tmp[600];
	FILE *fp;
	int rc = 0;

	if (path == NULL || path[0] == '\0')
		return 1;
	pthread_mutex_lock(&tm.mu);
	if (!force && tm.last_write_mono >= 0 &&
	    (!tm.pending || mono_ms() - tm.last_write_mono < KP_TM_EVERY_MS)) {
		pthread_mutex_unlock(&tm.mu);
		return 1;
	}
	snprintf(tmp, sizeof(tmp), "%s.tmp", path);
	fp = fopen(tmp, "w");
	if (fp == NULL) {
		snprintf(err, err_cap, "metrics_file %s: %s", tmp, strerror(errno));
		rc = -1;
	} else {
		render(fp, db_path);
		if (fflush(fp) != 0 || ferror(fp) || fclose(fp) != 0) {
			snprintf(err, err_cap, "metrics_file %s: %s", tmp, strerror(errno));
			remove(tmp);
			rc = -1;
		} else if (rename(tmp, path) != 0) {
			snprintf(err, err_cap, "metrics_file %s: %s", path, strerror(errno));
			remove(tmp);
			rc = -1;
		}
	}
	/* A failed write is retried after the same interval, not on every poll. */
	tm.last_write_mono = mono_ms();
	if (rc == 0)
		tm.pending = 0;
	pthread_mutex_unlock(&tm.mu);
	return rc;
}
