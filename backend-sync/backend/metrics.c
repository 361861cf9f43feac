/* SPDX-License-Identifier: Apache-2.0 */
/* The backend's Prometheus figures: process-wide counters and histograms, bumped by the
 * connection threads with C11 atomics (no lock on the ingest path), and rendered in the
 * text exposition format 0.0.4 at scrape time. Per-terminal figures and the database size
 * are read then, through a read-only SQLite connection with a short busy timeout, so a
 * scrape never holds the store's write lock nor waits long behind it. */
#include <stdatomic.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>


#include "kp_backend.h"
#include "kp_db.h"

#define N_LAT_BUCKETS 12
#define N_SIZE_BUCKETS 9

static const double lat_bounds[N_LAT_BUCKETS] = {
	0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 10,
};
static const double size_bounds[N_SIZE_BUCKETS] = {
	256, 1024, 4096, 16384, 65536, 262144, 1048576, 4194304, 16777216,
};

struct hist {
	atomic_ulong bucket[N_LAT_BUCKETS + 1];    /* not cumulative; the last is +Inf (the
	                                            * longer of the two bucket lists) */
	atomic_ullong sum_micro;                   /* seconds or bytes, times 10^6 */
};

static const char *const refused_reasons[KP_MR_N] = {
	[KP_MR_QUARANTINED] = "quarantined",
	[KP_MR_SEQUENCE_GAP] = "sequence_gap",
	[KP_MR_BAD_SIGNATURE] = "bad_signature",
	[KP_MR_BAD_PAYLOAD] = "bad_payload",
	[KP_MR_TERMINAL_MISMATCH] = "terminal_mismatch",
	[KP_MR_CHAIN_BROKEN] = "chain_broken",
	[KP_MR_CONFLICT] = "conflict",
	[KP_MR_OTHER] = "other",
};
static const char *const conn_refused_reasons[KP_MC_N] = {
	[KP_MC_PER_ADDR] = "per_address_limit",
	[KP_MC_HANDSHAKES] = "handshake_limit",
	[KP_MC_TERMINALS] = "terminal_limit",
	[KP_MC_UNREGISTERED] = "unregistered",
	[KP_MC_REVOKED] = "revoked_certificate",
};
static const char *const tls_kinds[KP_MT_N] = {
	[KP_MT_TIMEOUT] = "timeout",
	[KP_MT_PEER] = "certificate",
	[KP_MT_CLOSED] = "closed",
	[KP_MT_PROTOCOL] = "protocol",
	[KP_MT_OTHER] = "other",
};

static struct {
	atomic_ullong ingested;
	atomic_ulong refused[KP_MR_N];
	atomic_ulong quarantines;
	atomic_ulong accepted;
	atomic_ulong conn_refused[KP_MC_N];
	atomic_ulong tls_failed[KP_MT_N];
	atomic_ulong bundles;
	struct hist verify, commit, bundle_size;
} m;

static void hist_note(struct hist *h, const double *bounds, int n, double v)
{
	int i = 0;

	while (i < n && v > bounds[i])
		i++;
	atomic_fetch_add(&h->bucket[i], 1);
	atomic_fetch_add(&h->sum_micro, (unsigned long long)(v * 1e6 + 0.5));
}

void kp_metrics_ingested(uint64_t n)
{
	atomic_fetch_add(&m.ingested, n);
}

/* The store's reason text (bstore_ingest.c) to a label of few values. */
void kp_metrics_refused(const char *reason)
{
	static const struct { const char *part; enum kp_metric_refusal r; } map[] = {
		{ "quarantined", KP_MR_QUARANTINED }, { "sequence gap", KP_MR_SEQUENCE_GAP },
		{ "bad signature", KP_MR_BAD_SIGNATURE }, { "not a valid record", KP_MR_BAD_PAYLOAD },
		{ "differs from the certificate", KP_MR_TERMINAL_MISMATCH },
		{ "hash chain", KP_MR_CHAIN_BROKEN }, { "already held", KP_MR_CONFLICT },
	};
	enum kp_metric_refusal r = KP_MR_OTHER;

	for (size_t i = 0; i < sizeof(map) / sizeof(map[0]); i++) {
		if (strstr(reason, map[i].part) != NULL) {
			r = map[i].r;
			break;
		}
	}
	atomic_fetch_add(&m.refused[r], 1);
	/* A refusal of a record itself ("record N: ...") quarantines the terminal. */
	if (strncmp(reason, "record ", 7) == 0)
		atomic_fetch_add(&m.quarantines, 1);
}

void kp_metrics_accepted(void)
{
	atomic_fetch_add(&m.accepted, 1);
}

void kp_metrics_conn_refused(enum kp_metric_conn why)
{
	if (why >= 0 && why < KP_MC_N)
		atomic_fetch_add(&m.conn_refused[why], 1);
}

void kp_metrics_tls_failed(enum kp_metric_tls kind)
{
	if (kind >= 0 && kind < KP_MT_N)
		atomic_fetch_add(&m.tls_failed[kind], 1);
}

void kp_metrics_verify_seconds(double s)
{
	hist_note(&m.verify, lat_bounds, N_LAT_BUCKETS, s);
}

void kp_metrics_commit_seconds(double s)
{
	hist_note(&m.commit, lat_bounds, N_LAT_BUCKETS, s);
}

void kp_metrics_bundle(size_t bytes)
{
	atomic_fetch_add(&m.bundles, 1);
	hist_note(&m.bundle_size, size_bounds, N_SIZE_BUCKETS, (double)bytes);
}

/* ---- rendering ---- */

struct out {
	char *p;
	size_t n, cap;
	int oom;
};

__attribute__((format(printf, 2, 3)))
static void put(struct out *o, const char *fmt, ...)
{
	va_list ap;
	int k;

	for (;;) {
		va_start(ap, fmt);
		k = vsnprintf(o->p + o->n, o->cap - o->n, fmt, ap);
		va_end(ap);
		if (k < 0) {
			o->oom = 1;
			return;
		}
		if ((size_t)k < o->cap - o->n) {
			o->n += (size_t)k;
			return;
		}
		char *bigger = realloc(o->p, o->cap * 2 + (size_t)k);
		if (bigger == NULL) {
			o->oom = 1;
			return;
		}
		o->p = bigger;
		o->cap = o->cap * 2 + (size_t)k;
	}
}

static void head(struct out *o, const char *name, const char *type, const char *help)
{
	put(o, "# HELP kippu_backend_%s %s\n# TYPE kippu_backend_%s %s\n", name, help, name, type);
}

static void counter(struct out *o, const char *name, const char *help, unsigned long long v)
{
	head(o, name, "counter", help);
	put(o, "kippu_backend_%s %llu\n", name, v);
}

static void labelled(struct out *o, const char *name, const char *help, const char *label,
                     const char *const *values, atomic_ulong *counts, int n)
{
	head(o, name, "counter", help);
	for (int i = 0; i < n; i++)
		put(o, "kippu_backend_%s{%s=\"%s\"} %lu\n", name, label, values[i],
		    atomic_load(&counts[i]));
}

static void histogram(struct out *o, const char *name, const char *help, struct hist *h,
                      const double *bounds, int n)
{
	unsigned long cum = 0;

	head(o, name, "histogram", help);
	for (int i = 0; i < n; i++) {
		cum += atomic_load(&h->bucket[i]);
		put(o, "kippu_backend_%s_bucket{le=\"%g\"} %lu\n", name, bounds[i], cum);
	}
	cum += atomic_load(&h->bucket[n]);
	put(o, "kippu_backend_%s_bucket{le=\"+Inf\"} %lu\n", name, cum);
	put(o, "kippu_backend_%s_sum %.6f\n", name, (double)atomic_load(&h->sum_micro) / 1e6);
	put(o, "kippu_backend_%s_count %lu\n", name, cum);
}

/* A label value as the format wants it: backslash, quote and newline escaped. */
static void label_value(char *dst, size_t cap, const char *v)
{
	size_t n = 0;

	for (; *v != '\0' && n + 3 < cap; v++) {
		if (*v == '\\' || *v == '"')
			dst[n++] = '\\';
		if (*v == '\n') {
			dst[n++] = '\\';
			dst[n++] = 'n';
			continue;
		}
		dst[n++] = *v;
	}
	dst[n] = '\0';
}

/* Records a terminal holds and the backend does not: the newest seq its last hello
 * reported minus the highest contiguous seq the backend holds of that hello's journal
 * (never negative). Only terminals whose last hello reported one (PROTOCOL.md `last`). */
static void unsent(struct out *o, kp_db *db, const char *db_path)
{
	kp_db_stmt *st = NULL;
	char id[4 * KP_ID_MAX + 8];

	head(o, "terminal_unsent_records", "gauge",
	     "Records the terminal reported at its last hello that the backend does not hold yet.");
	if (kp_db_prepare(db, &st, "SELECT t.id, CASE WHEN t.hello_last > j.acked THEN"
	                  " t.hello_last - j.acked ELSE 0 END FROM terminals t"
	                  " JOIN journals j ON j.terminal = t.id AND j.journal ="
	                  " t.hello_journal WHERE t.hello_last IS NOT NULL ORDER BY t.id") !=
	    KP_DB_OK) {
		fprintf(stderr, "kippu-backend: metrics: database %s: %s\n", db_path,
		        kp_db_errmsg(db));
		return;
	}
	while (kp_db_step(st) == KP_DB_ROW) {
		const char *t = kp_db_column_text(st, 0);

		label_value(id, sizeof(id), t != NULL ? t : "");
		put(o, "kippu_backend_terminal_unsent_records{terminal=\"%s\"} %lld\n", id,
		    (long long)kp_db_column_int64(st, 1));
	}
	kp_db_finalize(st);
}

/* Records stored whose own signature the auditor has not verified yet (PROTOCOL.md 4.2). */
static void audit_lag(struct out *o, kp_db *db)
{
	kp_db_stmt *st = NULL;

	head(o, "audit_lag_records", "gauge",
	     "Records stored whose own signature the background auditor has not verified yet.");
	if (kp_db_prepare(db, &st, "SELECT count(*) FROM audit_pending") == KP_DB_OK &&
	    kp_db_step(st) == KP_DB_ROW)
		put(o, "kippu_backend_audit_lag_records %lld\n",
		    (long long)kp_db_column_int64(st, 0));
	kp_db_finalize(st);
}

/* Per-terminal figures from the store, read-only; nothing (and one line on stderr) when
 * the store is busy or unreadable: a scrape must not stall ingest. */
static void terminals(struct out *o, const char *db_path)
{
	kp_db *db = NULL;
	kp_db_stmt *st = NULL;
	char err[600];
	struct timespec ts;
	double now;
	char id[4 * KP_ID_MAX + 8];

	head(o, "terminal_last_seen_age_seconds", "gauge",
	     "Seconds since the terminal last said hello (label terminal: the operator's device id).");
	clock_gettime(CLOCK_REALTIME, &ts);
	now = (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
	if (kp_db_open(&db, db_path, KP_DB_READONLY, err, sizeof(err)) != KP_DB_OK) {
		fprintf(stderr, "kippu-backend: metrics: %s\n", err);
		return;
	}
	if (kp_db_prepare(db, &st, "SELECT id, last_seen FROM terminals ORDER BY id") !=
	    KP_DB_OK) {
		fprintf(stderr, "kippu-backend: metrics: database %s: %s\n", db_path,
		        kp_db_errmsg(db));
		kp_db_close(db);
		return;
	}
	while (kp_db_step(st) == KP_DB_ROW) {
		const char *t = kp_db_column_text(st, 0);
		double age = now - (double)kp_db_column_int64(st, 1) / 1000.0;

		label_value(id, sizeof(id), t != NULL ? t : "");
		put(o, "kippu_backend_terminal_last_seen_age_seconds{terminal=\"%s\"} %.3f\n", id,
		    age < 0 ? 0 : age);
	}
	kp_db_finalize(st);
	unsent(o, db, db_path);
	audit_lag(o, db);
	kp_db_close(db);
}

static unsigned long long file_size(const char *path, const char *suffix)
{
	char p[600];
	struct stat sb;

	snprintf(p, sizeof(p), "%s%s", path, suffix);
	return stat(p, &sb) == 0 ? (unsigned long long)sb.st_size : 0;
}

char *kp_metrics_render(const char *db_path, size_t *len)
{
	struct out o = { malloc(8192), 0, 8192, 0 };

	if (o.p == NULL)
		return NULL;
	counter(&o, "records_ingested_total", "Records newly stored and acknowledged.",
	        atomic_load(&m.ingested));
	labelled(&o, "records_refused_total", "Batches refused, by the store's reason.", "reason",
	         refused_reasons, m.refused, KP_MR_N);
	counter(&o, "quarantines_total", "Terminals quarantined by a refused record.",
	        atomic_load(&m.quarantines));
	counter(&o, "connections_accepted_total", "Connections admitted to the TLS handshake.",
	        atomic_load(&m.accepted));
	labelled(&o, "connections_refused_total", "Connections refused, by reason.", "reason",
	         conn_refused_reasons, m.conn_refused, KP_MC_N);
	labelled(&o, "tls_handshake_failures_total", "Failed TLS handshakes, by kind.", "kind",
	         tls_kinds, m.tls_failed, KP_MT_N);
	histogram(&o, "batch_verify_seconds", "Time to verify one batch's signatures.", &m.verify,
	          lat_bounds, N_LAT_BUCKETS);
	histogram(&o, "batch_commit_seconds", "Time to store one batch (wait for the store "
	          "included).", &m.commit, lat_bounds, N_LAT_BUCKETS);
	counter(&o, "bundle_builds_total", "Config bundles built and signed.",
	        atomic_load(&m.bundles));
	histogram(&o, "bundle_size_bytes", "Size of the signed config bundles sent.",
	          &m.bundle_size, size_bounds, N_SIZE_BUCKETS);
	terminals(&o, db_path);
	head(&o, "database_size_bytes", "gauge", "Size of the database file and its WAL.");
	put(&o, "kippu_backend_database_size_bytes %llu\n",
	    file_size(db_path, "") + file_size(db_path, "-wal"));
	if (o.oom) {
		free(o.p);
		return NULL;
	}
	*len = o.n;
	return o.p;
}
