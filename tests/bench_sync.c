/* SPDX-License-Identifier: Apache-2.0 */
/* make bench, second program: how fast the backend takes in journal records, against how
 * fast this machine can check their signatures.
 *
 *  1. ES256 verify rate: one thread per online CPU, each looping kp_cose_verify1 over
 *     pre-signed records for about 2 s (and one thread alone, for reference); measured
 *     again after the ingest runs, and the better figure is the one compared with.
 *  2. Ingest rate of the real server (kp_server_start in this process, port 0, a fresh
 *     backend database each run) with 1 terminal x 10,000 records and with 50 terminals x
 *     1,024 records at once (4 full batches each; --per-terminal etc. change the sizes, the
 *     defaults keep the run near 70 s on 2 cores). Every terminal's
 *     chain of signed records (kp_record + kp_record_encode + kp_cose_sign1, seq 1..K, prev
 *     = SHA-256 of the previous payload, kid = terminal id = certificate CN) is built in
 *     memory beforehand; each terminal is one client thread that speaks the protocol by
 *     hand (hello -> welcome, records of KP_SYNC_BATCH_MAX -> ack ..., bye), all released
 *     at once (the chains and the client are tools/kp_loadgen.h, shared with kippu-loadgen).
 *     The clock runs from the first connect to the last ack. The 50 terminals run
 *     twice: by chain (the default: the last record of each batch and one other verified,
 *     PROTOCOL.md section 4.2) and with every signature verified (verify_every_record).
 *  3. A 10,000-record backlog synced with the terminal's own path: a terminal store filled
 *     by kp_tap_refuse (real signed, chained, committed records), then kp_sync_run with
 *     kp_store_sync_source against a fresh in-process server.
 *
 * Everything lives in a fresh folder under --dir (default $TMPDIR or /tmp), removed at
 * the end unless --keep. Progress goes to stderr, the table to stdout. --json PATH writes
 * the figures as a JSON array; --json-append PATH adds them to the array already in PATH
 * (what `make bench BENCH_JSON=...` uses, so kippu-bench's and these figures end up in one
 * array), or writes a new one if PATH does not exist. */
#include <errno.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "kp_loadgen.h"
#include "bench_util.h"
#include "kp_backend.h"
#include "kp_terminal.h"

#define MAX_TERMINALS 256
#define TIMEOUT_MS    60000

static struct {
	int terminals;          /* terminals in the concurrent run */
	int per_terminal;       /* records each sends in the concurrent run */
	int solo;               /* records of the 1-terminal run */
	int backlog;            /* records of the kp_sync_run backlog */
	double verify_s;        /* length of the all-cores verify loop */
	int keep;
	int ncpu;
} opt = { 50, 1024, 10000, 10000, 2.0, 0, 1 };

static char dir[400];
static char ca_crt[512], backend_crt[512], backend_key[512];

static double now_s(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + ts.tv_nsec / 1e9;
}

static double cpu_s(void)
{
	struct rusage ru;

	getrusage(RUSAGE_SELF, &ru);
	return ru.ru_utime.tv_sec + ru.ru_utime.tv_usec / 1e6 + ru.ru_stime.tv_sec +
	       ru.ru_stime.tv_usec / 1e6;
}

/* CPU seconds every process on the machine has spent (from /proc/stat; 0 if unreadable):
 * what is not ours of it tells whether something else was competing for the cores. */
static double machine_cpu_s(void)
{
	unsigned long long v[8] = { 0 };
	FILE *fp = fopen("/proc/stat", "r");
	int n;

	if (fp == NULL)
		return 0;
	n = fscanf(fp, "cpu %llu %llu %llu %llu %llu %llu %llu %llu", &v[0], &v[1], &v[2], &v[3],
	           &v[4], &v[5], &v[6], &v[7]);
	fclose(fp);
	if (n != 8)
		return 0;
	/* user nice system [idle iowait] irq softirq steal */
	return (double)(v[0] + v[1] + v[2] + v[5] + v[6] + v[7]) / (double)sysconf(_SC_CLK_TCK);
}

struct load { double wall, ours, all; };

static void load_start(struct load *l)
{
	l->wall = now_s();
	l->ours = cpu_s();
	l->all = machine_cpu_s();
}

/* Share of the machine's cores that other processes used since load_start. */
static double load_foreign(const struct load *l, int ncpu)
{
	double wall = now_s() - l->wall, ours = cpu_s() - l->ours, all = machine_cpu_s() - l->all;
	double f = (all - ours) / (wall * ncpu);

	return l->all == 0 || f < 0 ? 0 : f;
}

static void progress(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static void progress(const char *fmt, ...)
{
	va_list ap;

	fprintf(stderr, "bench-sync: ");
	va_start(ap, fmt);
	vfprintf(stderr, fmt, ap);
	va_end(ap);
	fputc('\n', stderr);
}

static void die(const char *what, int rc)
{
	fprintf(stderr, "bench-sync: %s: %s (%d)\n", what, kp_sync_error_text(rc), rc);
	exit(1);
}

static void path_of(char *out, size_t cap, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
static void path_of(char *out, size_t cap, const char *fmt, ...)
{
	char name[100];
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(name, sizeof(name), fmt, ap);
	va_end(ap);
	snprintf(out, cap, "%s/%s", dir, name);
}

/* ---- keys and certificates ---- */

static void make_pki(int n_terminals)
{
	kp_key *ca_key = NULL, *k = NULL;
	kp_cert *ca = NULL;
	char cn[KP_ID_MAX + 1], err[300];
	int rc;

	path_of(ca_crt, sizeof(ca_crt), "ca.crt");
	path_of(backend_crt, sizeof(backend_crt), "backend.crt");
	path_of(backend_key, sizeof(backend_key), "backend.key");
	if ((rc = kp_key_generate(&ca_key)) != 0 ||
	    (rc = kp_cert_create_ca(ca_key, "kippu bench CA", 30, ca_crt)) != 0 ||
	    (rc = kp_cert_load(&ca, ca_crt)) != 0)
		die("CA", rc);
	if ((rc = kp_key_generate(&k)) != 0 || (rc = kp_key_save(k, backend_key)) != 0 ||
	    (rc = kp_cert_issue_profile(ca_key, ca, k, "backend", KP_CERT_BACKEND,
	                                (int64_t)time(NULL) - 86400, (int64_t)time(NULL) + 30 * 86400,
	                                backend_crt)) != 0)
		die("backend certificate", rc);
	kp_key_free(k);
	for (int i = 0; i < n_terminals; i++) {
		snprintf(cn, sizeof(cn), "T-%d", i);
		if (kp_lg_mint(ca_key, ca, dir, cn, 30, err, sizeof(err)) != 0) {
			fprintf(stderr, "bench-sync: %s\n", err);
			exit(1);
		}
	}
	kp_cert_free(ca);
	kp_key_free(ca_key);
}

/* ---- pre-signed record chains (tools/kp_loadgen.h) ---- */

static struct kp_lg_chain *chains; /* one per terminal; T-0's is the longest */

static void make_chains(int n_terminals)
{
	int longest = opt.solo > opt.per_terminal ? opt.solo : opt.per_terminal, total = 0;
	/* bus taps as the terminal journals them; one in ten is refused */
	const struct kp_lg_mix mix = { 9, 0, 0, 1, 0 };
	double t0 = now_s();
	char id[KP_ID_MAX + 1], err[300];
	int rc;

	chains = calloc((size_t)n_terminals, sizeof(*chains));
	if (chains == NULL)
		die("chains", KP_SYNC_E_NOMEM);
	for (int t = 0; t < n_terminals; t++) {
		int n = t == 0 ? longest : opt.per_terminal;

		snprintf(id, sizeof(id), "T-%d", t);
		if ((rc = kp_lg_chain_encode(&chains[t], id, t, n, 1795651200000LL, &mix)) != 0)
			die("record", rc);
		path_of(chains[t].key_path, sizeof(chains[t].key_path), "%s.key", id);
		total += n;
	}
	progress("signing %d records for %d terminals on %d threads", total, n_terminals,
	         opt.ncpu);
	if (kp_lg_chains_sign(chains, n_terminals, opt.ncpu, err, sizeof(err)) != 0) {
		fprintf(stderr, "bench-sync: %s\n", err);
		exit(1);
	}
	progress("signed in %.1f s", now_s() - t0);
}

/* ---- 1. verify rate ---- */

struct vthread {
	pthread_barrier_t *start;
	double seconds;
	unsigned long count;
	double elapsed;
};

static void *verify_main(void *arg)
{
	struct vthread *v = arg;
	const struct kp_lg_chain *c = &chains[0];
	int n = c->n < 1000 ? c->n : 1000, rc;
	char crt[512];
	kp_cert *cert = NULL;
	double t0, t;

	/* A certificate of its own, as each server connection has (it parses its peer's). */
	path_of(crt, sizeof(crt), "%s.crt", c->id);
	if ((rc = kp_cert_load(&cert, crt)) != 0)
		die("cert", rc);
	pthread_barrier_wait(v->start);
	t0 = now_s();
	for (unsigned long i = 0;; i++) {
		const uint8_t *payload = NULL;
		size_t len = 0;

		rc = kp_cose_verify1(cert, c->cose[i % n].p, c->cose[i % n].n, &payload, &len,
		                     NULL, 0);
		if (rc != 0)
			die("verify", rc);
		v->count++;
		if ((i & 15) == 15 && (t = now_s() - t0) >= v->seconds)
			break;
	}
	v->elapsed = now_s() - t0;
	kp_cert_free(cert);
	return NULL;
}

static double verify_rate(int nth, double seconds, double *foreign)
{
	pthread_barrier_t start;
	struct vthread v[64];
	pthread_t th[64];
	struct load l;
	double rate = 0;

	if (nth > 64)
		nth = 64;
	pthread_barrier_init(&start, NULL, (unsigned)nth);
	for (int i = 0; i < nth; i++) {
		memset(&v[i], 0, sizeof(v[i]));
		v[i].start = &start;
		v[i].seconds = seconds;
		pthread_create(&th[i], NULL, verify_main, &v[i]);
	}
	load_start(&l);
	for (int i = 0; i < nth; i++) {
		pthread_join(th[i], NULL);
		rate += v[i].count / v[i].elapsed;
	}
	*foreign = load_foreign(&l, opt.ncpu);
	pthread_barrier_destroy(&start);
	return rate;
}

/* ---- the in-process backend ---- */

/* Only registered terminals sync: the run's T-0 .. T-(n - 1), before the clock starts. */
static void register_terminals(const char *db, int n)
{
	kp_bstore *s = NULL;
	int rc = kp_bstore_open(&s, db);

	for (int i = 0; rc == KP_BE_OK && i < n; i++) {
		char id[16];

		snprintf(id, sizeof(id), "T-%d", i);
		rc = kp_bstore_terminal_add(s, id, NULL, (int64_t)time(NULL) * 1000, NULL);
	}
	if (rc != KP_BE_OK) {
		fprintf(stderr, "bench-sync: terminal registry: %s\n", kp_bstore_errmsg(s));
		exit(1);
	}
	kp_bstore_close(s);
}

/* every_record: the per-record path (verify_every_record), else the chain's */
static kp_server *server_start(const char *tag, int n_terminals, int every_record)
{
	struct kp_server_cfg cfg;
	kp_server *srv = NULL;
	char err[256];
	int rc;

	kp_server_cfg_defaults(&cfg);
	snprintf(cfg.host, sizeof(cfg.host), "127.0.0.1");
	snprintf(cfg.port, sizeof(cfg.port), "0");
	path_of(cfg.db, sizeof(cfg.db), "backend-%s.db", tag);
	register_terminals(cfg.db, n_terminals);
	snprintf(cfg.ca, sizeof(cfg.ca), "%s", ca_crt);
	snprintf(cfg.cert, sizeof(cfg.cert), "%s", backend_crt);
	snprintf(cfg.key, sizeof(cfg.key), "%s", backend_key);
	cfg.max_conns = MAX_TERMINALS;
	cfg.timeout_ms = TIMEOUT_MS;
	cfg.verify_every_record = every_record;
	rc = kp_server_start(&srv, &cfg, err, sizeof(err));
	if (rc != KP_BE_OK) {
		fprintf(stderr, "bench-sync: server: %s\n", err);
		exit(1);
	}
	return srv;
}

static int sum_acked(void *arg, int ncol, const char *const *cols, const char *const *names)
{
	for (int i = 0; i < ncol; i++) {
		if (strcmp(names[i], "acked") == 0 && cols[i] != NULL)
			*(uint64_t *)arg += strtoull(cols[i], NULL, 10);
	}
	return 0;
}

/* Every record of the run must be in the backend's database. */
static void check_stored(const char *tag, uint64_t want)
{
	char db[512];
	kp_bstore *s = NULL;
	uint64_t held = 0;
	int rc;

	path_of(db, sizeof(db), "backend-%s.db", tag);
	if ((rc = kp_bstore_open(&s, db)) != KP_BE_OK ||
	    (rc = kp_bstore_report(s, KP_REPORT_TERMINALS, NULL, sum_acked, &held)) != KP_BE_OK)
		die("backend report", rc);
	kp_bstore_close(s);
	if (held != want) {
		fprintf(stderr, "bench-sync: %s: the backend holds %llu records, expected %llu\n",
		        tag, (unsigned long long)held, (unsigned long long)want);
		exit(1);
	}
}

/* ---- 2. ingest: raw protocol clients ---- */

struct client {
	struct kp_lg_term t;
	pthread_barrier_t *start;
};

/* One terminal (tools/loadgen.c), released with the others; any error ends the bench. */
static void *client_main(void *arg)
{
	struct client *cl = arg;

	pthread_barrier_wait(cl->start);
	if (kp_lg_term_run(&cl->t) != KP_LG_E_NONE || cl->t.acked != cl->t.n) {
		fprintf(stderr, "bench-sync: %s: %s error: %s (%d of %d records acked)\n",
		        cl->t.c->id, kp_lg_error_name(cl->t.error), cl->t.reason, cl->t.acked,
		        cl->t.n);
		exit(1);
	}
	return NULL;
}

struct ingest_result {
	double rate;                    /* records/s */
	double seconds;
	double cpu_util;                /* process CPU time / (wall * ncpu) */
	double handshake_ms;            /* mean connect -> handshake done */
	double welcome_ms;              /* mean handshake -> welcome */
	double rtt_ms;                  /* mean records -> ack round trip per batch */
	double rtt_max_ms, welcome_max_ms;
	double foreign;                 /* share of the cores other processes used meanwhile */
	double cpu_us;                  /* process CPU (server and clients) per record */
};

static struct ingest_result ingest(const char *tag, int n_terminals, int per_terminal,
                                   int every_record)
{
	struct client *cl = calloc((size_t)n_terminals, sizeof(*cl));
	pthread_t *th = calloc((size_t)n_terminals, sizeof(*th));
	pthread_barrier_t start;
	struct ingest_result r;
	kp_server *srv = server_start(tag, n_terminals, every_record);
	double t0, t_end = 0, c0, hs = 0, wl = 0, rtt = 0;
	char port[16];
	const char *hosts[1] = { "127.0.0.1" }, *ports[1] = { port };
	struct load l;
	size_t batches = 0;

	memset(&r, 0, sizeof(r));
	progress("ingest: %d terminal%s x %d records, %s", n_terminals, n_terminals == 1 ? "" : "s",
	         per_terminal, every_record ? "every signature verified" : "by chain");
	pthread_barrier_init(&start, NULL, (unsigned)n_terminals + 1);
	snprintf(port, sizeof(port), "%d", kp_server_port(srv));
	for (int i = 0; i < n_terminals; i++) {
		struct kp_lg_term *t = &cl[i].t;
		char crt[512], err[256];
		kp_tls_conf *conf = NULL;
		int rc;

		path_of(crt, sizeof(crt), "%s.crt", chains[i].id);
		rc = kp_tls_conf_new(&conf, KP_TLS_CLIENT, ca_crt, crt, chains[i].key_path, err,
		                     sizeof(err));
		if (rc != 0) {
			fprintf(stderr, "bench-sync: TLS conf: %s\n", err);
			exit(1);
		}
		t->c = &chains[i];
		t->conf = conf;
		t->hosts = hosts;
		t->ports = ports;
		t->n_addrs = 1;
		t->server_cn = "backend";
		t->timeout_ms = TIMEOUT_MS;
		t->n = per_terminal;
		cl[i].start = &start;
		pthread_create(&th[i], NULL, client_main, &cl[i]);
	}
	load_start(&l);
	c0 = cpu_s();
	t0 = now_s();
	pthread_barrier_wait(&start);
	for (int i = 0; i < n_terminals; i++) {
		const struct kp_lg_term *t = &cl[i].t;
		const struct kp_lg_samples *b = &t->lat[KP_LG_RECORDS];

		pthread_join(th[i], NULL);
		if (t->t_last_ack > t_end)
			t_end = t->t_last_ack;
		hs += t->t_handshake - t->t_connect;
		wl += t->t_welcome - t->t_handshake;
		for (size_t k = 0; k < b->n; k++) {
			rtt += b->v[k];
			if (b->v[k] * 1e3 > r.rtt_max_ms)
				r.rtt_max_ms = b->v[k] * 1e3;
		}
		if ((t->t_welcome - t->t_handshake) * 1e3 > r.welcome_max_ms)
			r.welcome_max_ms = (t->t_welcome - t->t_handshake) * 1e3;
		batches += b->n;
	}
	r.cpu_util = (cpu_s() - c0) / ((now_s() - t0) * opt.ncpu);
	r.cpu_us = (cpu_s() - c0) / ((double)n_terminals * per_terminal) * 1e6;
	r.foreign = load_foreign(&l, opt.ncpu);
	r.seconds = t_end - t0;
	r.rate = (double)n_terminals * per_terminal / r.seconds;
	r.handshake_ms = hs / n_terminals * 1e3;
	r.welcome_ms = wl / n_terminals * 1e3;
	r.rtt_ms = batches > 0 ? rtt / batches * 1e3 : 0;
	kp_server_stop(srv);
	for (int i = 0; i < n_terminals; i++) {
		kp_tls_conf_free((kp_tls_conf *)cl[i].t.conf);
		kp_lg_term_free(&cl[i].t);
	}
	pthread_barrier_destroy(&start);
	free(cl);
	free(th);
	check_stored(tag, (uint64_t)n_terminals * (uint64_t)per_terminal);
	progress("ingest: %d terminal%s: %.0f records/s (%.2f s, CPU %.0f%% of %d cores)",
	         n_terminals, n_terminals == 1 ? "" : "s", r.rate, r.seconds, r.cpu_util * 100,
	         opt.ncpu);
	return r;
}

/* ---- 3. a backlog through the terminal's own sync path ---- */

struct backlog_result {
	double fill_s;
	double sync_s;
	double cpu_util;
};

static struct backlog_result backlog(void)
{
	struct backlog_result r;
	struct kp_terminal_cfg cfg;
	struct kp_sync_source src;
	struct kp_sync_stats st;
	kp_store *s = NULL, *ss = NULL;
	kp_tap_engine *e = NULL;
	kp_key *key = NULL;
	kp_cert *bcert = NULL;
	kp_tls_conf *conf = NULL;
	kp_server *srv;
	uint8_t token_key[KP_TOKEN_KEY_LEN] = { 0x42 };
	char db[512], crt[512], keyp[512], err[512], port[16];
	double t0, c0;
	int rc;

	memset(&r, 0, sizeof(r));
	path_of(db, sizeof(db), "terminal.db");
	path_of(crt, sizeof(crt), "T-0.crt");
	path_of(keyp, sizeof(keyp), "T-0.key");
	kp_terminal_cfg_defaults(&cfg);
	snprintf(cfg.terminal_id, sizeof(cfg.terminal_id), "T-0");
	snprintf(cfg.operator_id, sizeof(cfg.operator_id), "OP-A");
	snprintf(cfg.route, sizeof(cfg.route), "R1");
	progress("backlog: journalling %d taps in a terminal store", opt.backlog);
	t0 = now_s();
	if ((rc = kp_store_open(&s, db)) != KP_OK || (rc = kp_key_load(&key, keyp)) != 0 ||
	    (rc = kp_tap_engine_open(&e, s, &cfg, key, token_key)) != KP_OK)
		die("terminal store", rc);
	for (int i = 0; i < opt.backlog; i++) {
		struct kp_tap_outcome o;
		uint8_t token[KP_TOKEN_LEN];

		memset(token, 0, sizeof(token));
		token[0] = (uint8_t)i;
		token[1] = (uint8_t)(i >> 8);
		rc = kp_tap_refuse(e, token, "card-error", 1795651200000LL + (int64_t)i * 1000, &o);
		if (rc != KP_OK)
			die("tap", rc);
		if (i % 256 == 255)
			kp_store_idle(s);
	}
	kp_store_idle(s);
	r.fill_s = now_s() - t0;
	progress("backlog: journalled in %.1f s; syncing with kp_sync_run", r.fill_s);

	srv = server_start("backlog", 1, 0);
	snprintf(port, sizeof(port), "%d", kp_server_port(srv));
	if ((rc = kp_tls_conf_new(&conf, KP_TLS_CLIENT, ca_crt, crt, keyp, err, sizeof(err))) != 0) {
		fprintf(stderr, "bench-sync: TLS conf: %s\n", err);
		exit(1);
	}
	if ((rc = kp_cert_load(&bcert, backend_crt)) != 0)
		die("backend cert", rc);
	/* The sync runs on a store connection of its own, as in kippu-terminal. */
	if ((rc = kp_store_open(&ss, db)) != KP_OK)
		die("terminal store", rc);
	kp_store_sync_source(ss, &src);
	memset(&st, 0, sizeof(st));
	c0 = cpu_s();
	t0 = now_s();
	rc = kp_sync_run(conf, "127.0.0.1", port, "backend", "T-0", bcert, &src, TIMEOUT_MS, &st,
	                 err, sizeof(err));
	r.sync_s = now_s() - t0;
	r.cpu_util = (cpu_s() - c0) / (r.sync_s * opt.ncpu);
	if (rc != 0) {
		fprintf(stderr, "bench-sync: kp_sync_run: %s\n", err);
		exit(1);
	}
	if (st.sent != (uint64_t)opt.backlog || st.acked != (uint64_t)opt.backlog) {
		fprintf(stderr, "bench-sync: kp_sync_run sent %llu, acked %llu of %d\n",
		        (unsigned long long)st.sent, (unsigned long long)st.acked, opt.backlog);
		exit(1);
	}
	kp_server_stop(srv);
	check_stored("backlog", (uint64_t)opt.backlog);
	progress("backlog: %d records synced in %.2f s", opt.backlog, r.sync_s);
	kp_store_close(ss);
	kp_tap_engine_close(e);
	kp_store_close(s);
	kp_key_free(key);
	kp_cert_free(bcert);
	kp_tls_conf_free(conf);
	return r;
}

/* ---- output ---- */

/* Removes the working folder, also when a step fails (exit). */
static void cleanup(void)
{
	char cmd[512];

	if (opt.keep || dir[0] == '\0')
		return;
	snprintf(cmd, sizeof(cmd), "rm -rf '%s'", dir);
	if (system(cmd) != 0)
		fprintf(stderr, "bench-sync: could not remove %s\n", dir);
	dir[0] = '\0';
}

/* One line of the markdown table. */
static void row(const char *label, const char *fmt, double value, const char *target)
{
	char v[32];

	snprintf(v, sizeof(v), fmt, value);
	printf("| %-53s | %10s | %-17s |\n", label, v, target);
}

static void usage(void)
{
	fputs("usage: kippu-bench-sync [--dir DIR] [--json PATH | --json-append PATH] [--keep]\n"
	      "       [--terminals N] [--per-terminal K] [--solo K] [--backlog K] [--verify-seconds S]\n",
	      stderr);
	exit(2);
}

int main(int argc, char **argv)
{
	struct bench_json out = { NULL, 0 };
	const char *base = getenv("TMPDIR");
	struct ingest_result one, many, every;
	struct backlog_result bl;
	double v1, vall, vall2, fall2, ratio, target_sync, t_start = now_s(), f1, fall, worst;
	char label[96], target[32];
	const struct bench_opt opts[] = {
		{ "dir", BENCH_OPT_STR, &base, 0 },
		{ "json", BENCH_OPT_JSON, &out, 0 },
		{ "json-append", BENCH_OPT_JSON_APPEND, &out, 0 },
		{ "keep", BENCH_OPT_FLAG, &opt.keep, 0 },
		{ "terminals", BENCH_OPT_INT, &opt.terminals, 0 },
		{ "per-terminal", BENCH_OPT_INT, &opt.per_terminal, 0 },
		{ "solo", BENCH_OPT_INT, &opt.solo, 0 },
		{ "backlog", BENCH_OPT_INT, &opt.backlog, 0 },
		{ "verify-seconds", BENCH_OPT_DOUBLE, &opt.verify_s, 0 },
	};

	if (base == NULL || base[0] == '\0')
		base = "/tmp";
	if (bench_opts(argc, argv, opts, sizeof(opts) / sizeof(opts[0])) != 0)
		usage();
	if (optind != argc || opt.terminals < 1 || opt.terminals > MAX_TERMINALS ||
	    opt.per_terminal < 1 || opt.solo < 1 || opt.backlog < 1 || opt.verify_s <= 0)
		usage();
	opt.ncpu = (int)sysconf(_SC_NPROCESSORS_ONLN);
	if (opt.ncpu < 1)
		opt.ncpu = 1;
	mkdir(base, 0755);
	snprintf(dir, sizeof(dir), "%s/kippu-bench-sync-XXXXXX", base);
	if (mkdtemp(dir) == NULL) {
		perror(dir);
		return 1;
	}
	atexit(cleanup);
	progress("working in %s (%d online CPUs)", dir, opt.ncpu);

	make_pki(opt.terminals);
	make_chains(opt.terminals);

	progress("verify: 1 thread for %.1f s", opt.verify_s / 2);
	v1 = verify_rate(1, opt.verify_s / 2, &f1);
	progress("verify: %d threads for %.1f s", opt.ncpu, opt.verify_s);
	vall = verify_rate(opt.ncpu, opt.verify_s, &fall);
	progress("verify: %.0f/s on 1 thread, %.0f/s on %d", v1, vall, opt.ncpu);

	one = ingest("one", 1, opt.solo, 0);
	many = ingest("many", opt.terminals, opt.per_terminal, 0);
	every = ingest("every", opt.terminals, opt.per_terminal, 1);
	/* Again right after: on a shared host the cores' speed drifts (two processes of
	 * `openssl speed -multi 2` vary by half here too). The ratio takes the better of the
	 * two, so it never flatters the backend. */
	progress("verify: %d threads for %.1f s, again", opt.ncpu, opt.verify_s);
	vall2 = verify_rate(opt.ncpu, opt.verify_s, &fall2);
	progress("verify: %.0f/s on %d", vall2, opt.ncpu);
	if (fall2 > fall)
		fall = fall2;
	ratio = every.rate / (vall > vall2 ? vall : vall2);
	bl = backlog();
	target_sync = 1.2 * opt.backlog / one.rate;

	printf("\nkippu bench-sync: in-process kippu backend over loopback mutual TLS, %d online CPUs;\n"
	       "records pre-signed (ES256 COSE_Sign1, hash-chained), batches of %d\n\n",
	       opt.ncpu, KP_SYNC_BATCH_MAX);
	printf("| %-53s | %10s | %-17s |\n", "metric", "value", "target");
	printf("|-------------------------------------------------------|------------|-------------------|\n");
	row("ES256 verify, kp_cose_verify1, 1 thread (/s)", "%.0f", v1, "");
	snprintf(label, sizeof(label), "ES256 verify, kp_cose_verify1, %d threads (/s) [1]",
	         opt.ncpu);
	row(label, "%.0f", vall > vall2 ? vall : vall2, "");
	snprintf(label, sizeof(label), "ingest, 1 terminal x %d records (records/s)", opt.solo);
	row(label, "%.0f", one.rate, "");
	snprintf(label, sizeof(label), "ingest, %d terminals x %d records (records/s)",
	         opt.terminals, opt.per_terminal);
	row(label, "%.0f", many.rate, ">= 20000");
	snprintf(label, sizeof(label), "ingest, %d terminals, every signature (records/s) [3]",
	         opt.terminals);
	row(label, "%.0f", every.rate, "");
	snprintf(label, sizeof(label), "ingest(%d) by chain / every signature", opt.terminals);
	row(label, "%.1f", many.rate / every.rate, ">= 10");
	snprintf(label, sizeof(label), "ingest(%d), every signature / verify(all cores)",
	         opt.terminals);
	row(label, "%.2f", ratio, ">= 0.90");
	snprintf(label, sizeof(label), "sync %d-record backlog, kp_sync_run (s)", opt.backlog);
	snprintf(target, sizeof(target), "<= %.2f [2]", target_sync);
	row(label, "%.2f", bl.sync_s, target);
	printf("\n[1] the better of %.0f (before the ingest runs) and %.0f (after).\n"
	       "[2] 1.2 x %d / ingest(1 terminal).\n"
	       "[3] the per-record path (verify_every_record): every record's ES256 signature at\n"
	       "    ingest; the other rows verify by chain (the batch's last record and %d other(s)).\n",
	       vall, vall2, opt.backlog, KP_AUDIT_SAMPLE);
	printf("phases, 1 terminal:  handshake %.1f ms, hello->welcome %.1f ms, records->ack %.1f ms"
	       " per batch; CPU busy %.0f%% of %d cores, %.0f us CPU per record\n",
	       one.handshake_ms, one.welcome_ms, one.rtt_ms, one.cpu_util * 100, opt.ncpu,
	       one.cpu_us);
	printf("phases, %d terminals: handshake %.1f ms, hello->welcome %.1f ms (max %.1f),"
	       " records->ack %.1f ms per batch (max %.1f); CPU busy %.0f%% of %d cores, %.0f us CPU"
	       " per record\n",
	       opt.terminals, many.handshake_ms, many.welcome_ms, many.welcome_max_ms, many.rtt_ms,
	       many.rtt_max_ms, many.cpu_util * 100, opt.ncpu, many.cpu_us);
	printf("one kp_cose_verify1 costs %.0f us of CPU (1 thread)\n", 1e6 / v1);
	printf("backlog: journalled by kp_tap_refuse in %.1f s; sync CPU %.0f%% of %d cores\n",
	       bl.fill_s, bl.cpu_util * 100, opt.ncpu);
	worst = f1 > fall ? f1 : fall;
	worst = one.foreign > worst ? one.foreign : worst;
	worst = many.foreign > worst ? many.foreign : worst;
	printf("other processes used %.0f%% / %.0f%% / %.0f%% / %.0f%% of the cores during verify(1) /"
	       " verify(all) / ingest(1) / ingest(%d)%s\n", f1 * 100, fall * 100, one.foreign * 100,
	       many.foreign * 100, opt.terminals,
	       worst > 0.05 ? ": the machine was not idle, figures are disturbed" : "");
	printf("total run %.0f s\n", now_s() - t_start);

	if (out.path != NULL) {
		const struct kp_metric m[] = {
			{ "es256_verify_1thread", "1/s", v1 },
			{ "es256_verify_all_cores", "1/s", vall > vall2 ? vall : vall2 },
			{ "ingest_1_terminal", "records/s", one.rate },
			{ "ingest_many_terminals", "records/s", many.rate },
			{ "ingest_many_every_signature", "records/s", every.rate },
			{ "ingest_many_chain_over_every", "ratio", many.rate / every.rate },
			{ "ingest_many_over_verify", "ratio", ratio },
			{ "backlog_sync", "s", bl.sync_s },
			{ "backlog_sync_target", "s", target_sync },
		};

		if (kp_metrics_json(out.path, out.append, m, sizeof(m) / sizeof(m[0])) != 0)
			return 1;
	}
	if (opt.keep)
		progress("kept %s", dir);
	return 0;
}
