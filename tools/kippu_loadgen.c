/* SPDX-License-Identifier: Apache-2.0 */
/* kippu-loadgen: N simulated terminals against a running kippu-backend, over the real
 * protocol and real mutual TLS (README, "Load generator"; tools/man/kippu-loadgen.1).
 *
 * Each terminal gets a key and a certificate (minted from the CA's key, or read from a
 * folder), its chain of records is built and signed before the clock starts (on every
 * core), then one thread per terminal syncs it: hello, batches of up to KP_SYNC_BATCH_MAX
 * records at a tap rate (0: as fast as the backend takes them), a bundle fetch every M
 * batches (getconfig while it holds no version, then getdelta with the version held), bye.
 * The run is bounded by --records and --duration, and every connect and exchange by
 * --timeout-ms. It prints a table (throughput, latency
 * percentiles per exchange, errors by kind) and exits 1 when any error occurred (unless
 * --allow-errors), 2 on a usage error. */
#include <errno.h>
#include <math.h>
#include <stdarg.h>
#include <pthread.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "kp_backend.h"
#include "kp_loadgen.h"
#include "kp_tools.h"
#include "kp_version.h"

#define PROG        "kippu-loadgen"
#define MAX_ADDRS   16
#define MAX_TERMS   2000
#define MAX_REASONS 12

struct args {
	const char *backend[MAX_ADDRS];
	int n_backend;
	const char *server_name, *ca_cert, *ca_key, *certs, *prefix, *rate, *mix, *reg, *op;
	const char *print_reg, *json, *json_append;
	int terminals, records, duration, config_every, fetches, timeout_ms, threads, allow_errors;
	int records_set;
};

#define S(name, field, help) { name, KP_CTL_STR, offsetof(struct args, field), 0, 0, 0, help }
#define I(name, field, lo, hi, help) \
	{ name, KP_CTL_INT, offsetof(struct args, field), lo, hi, 0, help }
static const struct kp_ctl_opt opts[] = {
	{ "backend", KP_CTL_LIST, offsetof(struct args, backend), 0, MAX_ADDRS,
	  offsetof(struct args, n_backend), "HOST:PORT" },
	S("server-name", server_name, "CN"), S("ca-cert", ca_cert, "PATH"),
	S("ca-key", ca_key, "PATH"), S("certs", certs, "DIR"), S("prefix", prefix, "P"),
	I("terminals", terminals, 1, MAX_TERMS, "N"), I("records", records, 0, 10000000, "N"),
	I("duration", duration, 1, 86400, "S"), S("rate", rate, "R"), S("mix", mix, "SPEC"),
	I("config-every", config_every, 0, 1000000, "M"), I("fetches", fetches, 1, 100, "K"),
	I("timeout-ms", timeout_ms, 100, 600000, "MS"), I("threads", threads, 1, 64, "N"),
	S("register", reg, "DB"), S("operator", op, "OP"), S("print-register", print_reg, "DB"),
	S("json", json, "PATH"), S("json-append", json_append, "PATH"),
	{ "allow-errors", KP_CTL_FLAG, offsetof(struct args, allow_errors), 0, 0, 0, "" },
	{ NULL, 0, 0, 0, 0, 0, NULL },
};

static void usage(FILE *fp)
{
	fputs("usage: kippu-loadgen --backend HOST:PORT [--backend HOST:PORT ...] --ca-cert CA.crt\n"
	      "                     (--ca-key CA.key | --certs DIR) [options]\n"
	      "       kippu-loadgen --print-register DB [--terminals N] [--prefix P] [--operator OP]\n"
	      "       kippu-loadgen --help | -h | --version\n"
	      "N simulated terminals sync pre-signed, hash-chained records to a running kippu-backend\n"
	      "over the real protocol and mutual TLS; prints throughput, latency percentiles per\n"
	      "exchange and errors by kind.\n"
	      "  --backend HOST:PORT  a backend address; repeat it for a list (terminal i starts at\n"
	      "                       address i mod the count and tries the next on connect failure)\n"
	      "  --server-name CN     the backend certificate's name (default backend)\n"
	      "  --ca-cert PATH       the CA that issued the backend's and the terminals' certificates\n"
	      "  --ca-key PATH        mint each terminal's key and certificate from this CA key\n"
	      "                       (in a temporary folder, removed at the end)\n"
	      "  --certs DIR          or read them: DIR/ID.key and DIR/ID.crt for each terminal ID\n"
	      "  --terminals N        simulated terminals, 1-2000 (default 4)\n"
	      "  --prefix P           terminal ids are P1 .. PN (default LG-); a backend holds each\n"
	      "                       terminal's records once, so each run needs ids of its own\n"
	      "  --records N          records per terminal, 0-10000000 (default 1000, or rate x\n"
	      "                       duration when both are given; 0: hello and fetches only)\n"
	      "  --duration S         stop starting batches after S seconds, 1-86400 (default none)\n"
	      "  --rate R             taps per second per terminal, a decimal number; each batch\n"
	      "                       holds the records due (default 0: as fast as possible, full\n"
	      "                       batches of 256)\n"
	      "  --mix SPEC           record kinds by weight: ride=W,pass=W,stored=W,refused=W,link=W\n"
	      "                       (default ride=70,pass=15,stored=5,refused=10,link=0)\n"
	      "  --config-every M     a bundle fetch every M batches and at the end: getconfig while\n"
	      "                       no version is held, then getdelta (default 4; 0: none)\n"
	      "  --fetches K          fetches at the end of the session, 1-100 (default 1; with\n"
	      "                       --records 0 --fetches 2: a bundle, then a delta)\n"
	      "  --timeout-ms MS      per connect and per exchange, 100-600000 (default 10000)\n"
	      "  --threads N          threads that sign the chains (default: the online CPUs)\n"
	      "  --register DB        register the terminals in this SQLite backend database first\n"
	      "  --operator OP        the operator they are registered for (--register,\n"
	      "                       --print-register)\n"
	      "  --print-register DB  print the `kippuctl backend terminal add` lines and exit\n"
	      "  --json PATH          write the figures as a JSON array\n"
	      "  --json-append PATH   add them to the JSON array in PATH (make bench BENCH_JSON=...)\n"
	      "  --allow-errors       exit 0 even when errors occurred\n"
	      "Exit status: 0 done, 1 errors occurred (or setup failed), 2 usage error.\n", fp);
}

static int usage_error(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static int usage_error(const char *fmt, ...)
{
	va_list ap;

	fprintf(stderr, PROG ": ");
	va_start(ap, fmt);
	vfprintf(stderr, fmt, ap);
	va_end(ap);
	fputc('\n', stderr);
	return 2;
}

/* ---- the run's settings, checked ---- */

struct run {
	struct args a;
	char hosts[MAX_ADDRS][256], ports[MAX_ADDRS][16];
	const char *host_p[MAX_ADDRS], *port_p[MAX_ADDRS];
	double rate;
	struct kp_lg_mix mix;
	char dir[400];                  /* where the keys and certificates are */
	int minted;                     /* dir is ours: removed at the end */
	struct kp_lg_chain *chains;
	struct kp_lg_term *terms;
};

static int parse_addr(struct run *r, int i)
{
	const char *v = r->a.backend[i], *colon = strrchr(v, ':');
	char *end;
	long port;

	if (colon == NULL || colon == v || (size_t)(colon - v) >= sizeof(r->hosts[i]) ||
	    colon[1] == '\0')
		return usage_error("--backend wants HOST:PORT, not '%s'", v);
	errno = 0;
	port = strtol(colon + 1, &end, 10);
	if (*end != '\0' || errno != 0 || port < 1 || port > 65535)
		return usage_error("--backend '%s': the port must be 1 to 65535", v);
	snprintf(r->hosts[i], sizeof(r->hosts[i]), "%.*s", (int)(colon - v), v);
	/* [::1]:7800 */
	if (r->hosts[i][0] == '[' && r->hosts[i][strlen(r->hosts[i]) - 1] == ']') {
		memmove(r->hosts[i], r->hosts[i] + 1, strlen(r->hosts[i]));
		r->hosts[i][strlen(r->hosts[i]) - 1] = '\0';
	}
	snprintf(r->ports[i], sizeof(r->ports[i]), "%ld", port);
	r->host_p[i] = r->hosts[i];
	r->port_p[i] = r->ports[i];
	return 0;
}

/* The id of terminal i (0-based): prefix and i + 1. */
static void term_id(const struct run *r, int i, char *out, size_t cap)
{
	snprintf(out, cap, "%s%d", r->a.prefix, i + 1);
}

static int check_ids(const struct run *r)
{
	char id[KP_ID_MAX + 40];

	term_id(r, r->a.terminals - 1, id, sizeof(id));
	if (strlen(id) > KP_ID_MAX || !kp_valid_id(id))
		return usage_error("--prefix '%s': terminal ids (%s) are 1-32 characters of A-Z a-z "
		                   "0-9 - _ .", r->a.prefix, id);
	return 0;
}

static int check_files(const struct run *r)
{
	char err[700];
	const char *files[] = { r->a.ca_cert, r->a.ca_key };
	const char *what[] = { "--ca-cert", "--ca-key" };

	for (int i = 0; i < 2; i++) {
		if (files[i] != NULL && kp_file_unreadable(what[i], files[i], err, sizeof(err)) != 0) {
			fprintf(stderr, PROG ": %s\n", err);
			return 2;
		}
	}
	return 0;
}

/* Every option's value, or 2 after naming what is wrong. */
static int check_args(struct run *r)
{
	struct args *a = &r->a;
	char err[200];
	char *end;

	if (check_ids(r) != 0)
		return 2;
	if (a->op != NULL && !kp_valid_id(a->op))
		return usage_error("--operator: 1-32 characters of A-Z a-z 0-9 - _ .");
	if (a->print_reg != NULL)
		return 0;
	if (a->n_backend == 0)
		return usage_error("--backend HOST:PORT is required");
	for (int i = 0; i < a->n_backend; i++) {
		if (parse_addr(r, i) != 0)
			return 2;
	}
	if (a->ca_cert == NULL)
		return usage_error("--ca-cert is required (the CA the backend trusts)");
	if ((a->ca_key == NULL) == (a->certs == NULL))
		return usage_error("give one of --ca-key (mint the terminals' certificates) and "
		                   "--certs DIR (read them)");
	if (a->server_name[0] == '\0' || strlen(a->server_name) > KP_ID_MAX)
		return usage_error("--server-name: 1-32 characters");
	if (a->rate != NULL) {
		errno = 0;
		r->rate = strtod(a->rate, &end);
		if (end == a->rate || *end != '\0' || errno != 0 || !isfinite(r->rate) ||
		    r->rate < 0 || r->rate > 1e6)
			return usage_error("--rate wants taps per second from 0 to 1000000, not '%s'",
			                   a->rate);
	}
	if (a->mix != NULL && kp_lg_mix_parse(a->mix, &r->mix, err, sizeof(err)) != 0)
		return usage_error("--mix: %s", err);
	if (a->certs != NULL && strlen(a->certs) >= sizeof(r->dir))
		return usage_error("--certs: a folder path of at most %zu bytes", sizeof(r->dir) - 1);
	if (a->json != NULL && a->json_append != NULL)
		return usage_error("--json and --json-append: one or the other");
	if (!a->records_set) {
		double n = r->rate > 0 && a->duration > 0 ? ceil(r->rate * a->duration) : 1000;

		a->records = n > 10000000 ? 10000000 : (int)n;
	}
	if ((double)a->records * a->terminals > 50e6)
		return usage_error("%d terminals x %d records: at most 50,000,000 records are signed "
		                   "beforehand", a->terminals, a->records);
	return check_files(r);
}

/* ---- before the clock ---- */

static int print_register(const struct run *r)
{
	char id[KP_ID_MAX + 1];

	for (int i = 0; i < r->a.terminals; i++) {
		term_id(r, i, id, sizeof(id));
		printf("kippuctl backend terminal add %s %s%s%s\n", r->a.print_reg, id,
		       r->a.op != NULL ? " --operator " : "", r->a.op != NULL ? r->a.op : "");
	}
	return 0;
}

static int register_terminals(const struct run *r)
{
	kp_bstore *s = NULL;
	char id[KP_ID_MAX + 1], err[600] = "";
	int rc = kp_bstore_open_mode(&s, r->a.reg, KP_BSTORE_EXISTING, err, sizeof(err));

	for (int i = 0; rc == KP_BE_OK && i < r->a.terminals; i++) {
		term_id(r, i, id, sizeof(id));
		rc = kp_bstore_terminal_add(s, id, r->a.op, (int64_t)time(NULL) * 1000, NULL);
		if (rc != KP_BE_OK)
			snprintf(err, sizeof(err), "%s: %s", id, kp_bstore_errmsg(s));
	}
	if (rc != KP_BE_OK) {
		fprintf(stderr, PROG ": --register %s: %s\n", r->a.reg, err);
		kp_bstore_close(s);
		return -1;
	}
	kp_bstore_close(s);
	fprintf(stderr, PROG ": registered %d terminals in %s\n", r->a.terminals, r->a.reg);
	return 0;
}

/* The terminals' keys and certificates: minted into a temporary folder, or --certs. */
static int certificates(struct run *r)
{
	kp_key *ca_key = NULL;
	kp_cert *ca = NULL;
	const char *tmp = getenv("TMPDIR");
	char id[KP_ID_MAX + 1], err[700];
	int rc;

	if (r->a.certs != NULL) {
		snprintf(r->dir, sizeof(r->dir), "%s", r->a.certs);
		for (int i = 0; i < r->a.terminals; i++) {
			char path[700];

			term_id(r, i, id, sizeof(id));
			snprintf(path, sizeof(path), "%s/%s.crt", r->dir, id);
			if (kp_file_unreadable("--certs: the certificate", path, err, sizeof(err)) != 0) {
				fprintf(stderr, PROG ": %s\n", err);
				return -1;
			}
		}
		return 0;
	}
	if ((rc = kp_key_load(&ca_key, r->a.ca_key)) != 0 ||
	    (rc = kp_cert_load(&ca, r->a.ca_cert)) != 0) {
		fprintf(stderr, PROG ": --ca-key/--ca-cert: %s\n", kp_sync_error_text(rc));
		kp_key_free(ca_key);
		return -1;
	}
	snprintf(r->dir, sizeof(r->dir), "%s/kippu-loadgen-XXXXXX",
	         tmp != NULL && tmp[0] != '\0' ? tmp : "/tmp");
	if (mkdtemp(r->dir) == NULL) {
		fprintf(stderr, PROG ": %s: %s\n", r->dir, strerror(errno));
		rc = -1;
	}
	r->minted = rc == 0;
	for (int i = 0; rc == 0 && i < r->a.terminals; i++) {
		term_id(r, i, id, sizeof(id));
		if ((rc = kp_lg_mint(ca_key, ca, r->dir, id, 30, err, sizeof(err))) != 0)
			fprintf(stderr, PROG ": %s\n", err);
	}
	kp_cert_free(ca);
	kp_key_free(ca_key);
	return rc == 0 ? 0 : -1;
}

static int make_chains(struct run *r)
{
	int n = r->a.terminals, rc;
	char id[KP_ID_MAX + 1], err[800];
	double t0 = kp_lg_now();

	r->chains = calloc((size_t)n, sizeof(*r->chains));
	if (r->chains == NULL)
		return -1;
	for (int i = 0; i < n; i++) {
		term_id(r, i, id, sizeof(id));
		/* the records' times: the run's own, one tap every 2 s before now */
		rc = kp_lg_chain_encode(&r->chains[i], id, i, r->a.records,
		                        ((int64_t)time(NULL) - 2LL * r->a.records) * 1000, &r->mix);
		if (rc != 0) {
			fprintf(stderr, PROG ": records of %s: %s\n", id, kp_sync_error_text(rc));
			return -1;
		}
		snprintf(r->chains[i].key_path, sizeof(r->chains[i].key_path), "%s/%s.key", r->dir, id);
	}
	fprintf(stderr, PROG ": signing %d x %d records on %d threads\n", n, r->a.records,
	        r->a.threads);
	if (kp_lg_chains_sign(r->chains, n, r->a.threads, err, sizeof(err)) != 0) {
		fprintf(stderr, PROG ": %s\n", err);
		return -1;
	}
	fprintf(stderr, PROG ": signed in %.1f s\n", kp_lg_now() - t0);
	return 0;
}

/* ---- the run ---- */

struct worker {
	struct kp_lg_term *t;
	pthread_barrier_t *start;
};

static void *worker_main(void *arg)
{
	struct worker *w = arg;

	pthread_barrier_wait(w->start);
	kp_lg_term_run(w->t);
	return NULL;
}

static int setup_terms(struct run *r)
{
	char crt[700], err[300];

	r->terms = calloc((size_t)r->a.terminals, sizeof(*r->terms));
	if (r->terms == NULL)
		return -1;
	for (int i = 0; i < r->a.terminals; i++) {
		struct kp_lg_term *t = &r->terms[i];
		kp_tls_conf *conf = NULL;

		snprintf(crt, sizeof(crt), "%s/%s.crt", r->dir, r->chains[i].id);
		if (kp_tls_conf_new(&conf, KP_TLS_CLIENT, r->a.ca_cert, crt, r->chains[i].key_path,
		                    err, sizeof(err)) != 0) {
			fprintf(stderr, PROG ": terminal %s: %s\n", r->chains[i].id, err);
			return -1;
		}
		t->c = &r->chains[i];
		t->conf = conf;
		t->hosts = r->host_p;
		t->ports = r->port_p;
		t->n_addrs = r->a.n_backend;
		t->first_addr = i % r->a.n_backend;
		t->server_cn = r->a.server_name;
		t->timeout_ms = r->a.timeout_ms;
		t->n = r->a.records;
		t->rate = r->rate;
		t->config_every = r->a.config_every;
		t->end_fetches = r->a.fetches;
	}
	return 0;
}

/* Releases every terminal at once; the seconds from the release to the last ack (and in
 * *sessions to the last session's end). */
static double run_terms(struct run *r, double *sessions)
{
	int n = r->a.terminals, started = 0;
	struct worker *w = calloc((size_t)n, sizeof(*w));
	pthread_t *th = calloc((size_t)n, sizeof(*th));
	pthread_barrier_t start;
	pthread_attr_t attr;
	double t0, end = 0;

	if (w == NULL || th == NULL) {
		free(w);
		free(th);
		return -1;
	}
	/* 2,000 threads of the default 8 MiB would reserve 16 GiB of address space */
	pthread_attr_init(&attr);
	pthread_attr_setstacksize(&attr, 1024 * 1024);
	pthread_barrier_init(&start, NULL, (unsigned)n + 1);
	for (int i = 0; i < n; i++) {
		w[i].t = &r->terms[i];
		w[i].start = &start;
		if (pthread_create(&th[i], &attr, worker_main, &w[i]) != 0) {
			fprintf(stderr, PROG ": cannot start thread %d of %d\n", i + 1, n);
			exit(1);
		}
		started++;
	}
	fprintf(stderr, PROG ": %d terminals x %d records: go\n", n, r->a.records);
	t0 = kp_lg_now();
	for (int i = 0; i < n; i++)
		r->terms[i].deadline = r->a.duration > 0 ? t0 + r->a.duration : 0;
	pthread_barrier_wait(&start);
	for (int i = 0; i < started; i++)
		pthread_join(th[i], NULL);
	*sessions = 0;
	for (int i = 0; i < n; i++) {
		double e = r->terms[i].t_last_ack > 0 ? r->terms[i].t_last_ack : t0;

		end = e > end ? e : end;
		if (r->terms[i].t_done - t0 > *sessions)
			*sessions = r->terms[i].t_done - t0;
	}
	pthread_barrier_destroy(&start);
	pthread_attr_destroy(&attr);
	free(w);
	free(th);
	return end - t0;
}

/* ---- the figures ---- */

struct figures {
	double seconds, sessions, records_s, exchanges_s;
	long acked, exchanges, bundles, deltas, done;
	struct { size_t n; double p50, p99, p999, max; } x[KP_LG_NX];
	long errors[KP_LG_NE], total_errors;
	struct { char kind[16], text[160]; long n; } reason[MAX_REASONS];
	int n_reasons;
	long other_reasons;
};

/* A reason counted under the text with the terminal's id and numbers (but an address's)
 * taken out. */
static void count_reason(struct figures *f, const struct kp_lg_term *t)
{
	char text[160];
	const char *id = t->c->id, *p = t->reason;
	size_t o = 0, idlen = strlen(id);

	while (*p != '\0' && o + 4 < sizeof(text)) {
		if (strncmp(p, id, idlen) == 0) {
			o += (size_t)snprintf(text + o, sizeof(text) - o, "ID");
			p += idlen;
		} else if (*p >= '0' && *p <= '9' && t->error != KP_LG_E_CONNECT) {
			text[o++] = 'N';
			while (*p >= '0' && *p <= '9')
				p++;
		} else {
			text[o++] = *p++;
		}
	}
	text[o] = '\0';
	for (int i = 0; i < f->n_reasons; i++) {
		if (strcmp(f->reason[i].text, text) == 0 &&
		    strcmp(f->reason[i].kind, kp_lg_error_name(t->error)) == 0) {
			f->reason[i].n++;
			return;
		}
	}
	if (f->n_reasons == MAX_REASONS) {
		f->other_reasons++;
		return;
	}
	snprintf(f->reason[f->n_reasons].kind, sizeof(f->reason[0].kind), "%s",
	         kp_lg_error_name(t->error));
	snprintf(f->reason[f->n_reasons].text, sizeof(f->reason[0].text), "%s", text);
	f->reason[f->n_reasons++].n = 1;
}

static void figures(struct run *r, double seconds, double sessions, struct figures *f)
{
	memset(f, 0, sizeof(*f));
	f->seconds = seconds;
	f->sessions = sessions;
	for (int x = 0; x < KP_LG_NX; x++) {
		size_t total = 0, o = 0;
		double *all;

		for (int i = 0; i < r->a.terminals; i++)
			total += r->terms[i].lat[x].n;
		all = malloc((total + 1) * sizeof(*all));
		for (int i = 0; all != NULL && i < r->a.terminals; i++) {
			if (r->terms[i].lat[x].n == 0)
				continue;
			memcpy(all + o, r->terms[i].lat[x].v, r->terms[i].lat[x].n * sizeof(*all));
			o += r->terms[i].lat[x].n;
		}
		f->x[x].n = all != NULL ? total : 0;
		f->x[x].p50 = kp_lg_pct(all, f->x[x].n, 50) * 1e3;
		f->x[x].p99 = kp_lg_pct(all, f->x[x].n, 99) * 1e3;
		f->x[x].p999 = kp_lg_pct(all, f->x[x].n, 99.9) * 1e3;
		f->x[x].max = kp_lg_pct(all, f->x[x].n, 100) * 1e3;
		if (x != KP_LG_HANDSHAKE)
			f->exchanges += (long)f->x[x].n;
		free(all);
	}
	for (int i = 0; i < r->a.terminals; i++) {
		const struct kp_lg_term *t = &r->terms[i];

		f->acked += t->acked;
		f->bundles += t->bundles;
		f->deltas += t->deltas;
		f->done += t->error == KP_LG_E_NONE && t->acked == t->n;
		if (t->error != KP_LG_E_NONE) {
			f->errors[t->error]++;
			f->total_errors++;
			count_reason(f, t);
		}
	}
	f->records_s = seconds > 0 ? f->acked / seconds : 0;
	f->exchanges_s = sessions > 0 ? f->exchanges / sessions : 0;
}

static void print_table(const struct run *r, const struct figures *f)
{
	printf("\nkippu-loadgen: %d terminals x %d records against %s:%s%s, mutual TLS; batches of up "
	       "to %d, a bundle fetch every %d batches; tap rate %s%s\n\n",
	       r->a.terminals, r->a.records, r->hosts[0], r->ports[0],
	       r->a.n_backend > 1 ? " (and others)" : "", KP_SYNC_BATCH_MAX, r->a.config_every,
	       r->rate > 0 ? r->a.rate : "as fast as possible", r->rate > 0 ? "/s per terminal" : "");
	printf("| %-34s | %12s |\n|------------------------------------|--------------|\n",
	       "figure", "value");
	printf("| %-34s | %12.2f |\n", "run: release to last ack (s)", f->seconds);
	printf("| %-34s | %12.2f |\n", "sessions: release to last bye (s)", f->sessions);
	printf("| %-34s | %5ld of %4d |\n", "terminals that sent all", f->done, r->a.terminals);
	printf("| %-34s | %12ld |\n", "records ingested (acked)", f->acked);
	printf("| %-34s | %12.0f |\n", "records/s ingested", f->records_s);
	printf("| %-34s | %12.0f |\n", "exchanges/s", f->exchanges_s);
	printf("| %-34s | %12ld |\n", "bundles received", f->bundles);
	printf("| %-34s | %12ld |\n", "deltas received", f->deltas);
	printf("\n| %-10s | %8s | %9s | %9s | %9s | %9s |\n", "exchange", "count", "p50 ms",
	       "p99 ms", "p99.9 ms", "max ms");
	printf("|------------|----------|-----------|-----------|-----------|-----------|\n");
	for (int x = 0; x < KP_LG_NX; x++)
		printf("| %-10s | %8zu | %9.2f | %9.2f | %9.2f | %9.2f |\n", kp_lg_exchange_name(x),
		       f->x[x].n, f->x[x].p50, f->x[x].p99, f->x[x].p999, f->x[x].max);
	printf("\n| %-10s | %8s |\n|------------|----------|\n", "error", "count");
	for (int e = 1; e < KP_LG_NE; e++)
		printf("| %-10s | %8ld |\n", kp_lg_error_name(e), f->errors[e]);
	if (f->n_reasons > 0)
		printf("\nerrors by reason (ID: the terminal's id, N: a number):\n");
	for (int i = 0; i < f->n_reasons; i++)
		printf("  %-9s %6ld  %s\n", f->reason[i].kind, f->reason[i].n, f->reason[i].text);
	if (f->other_reasons > 0)
		printf("  %-9s %6ld  (other reasons)\n", "", f->other_reasons);
}

static int write_figures(const struct run *r, const struct figures *f)
{
	struct kp_metric m[8 + 4 * KP_LG_NX + KP_LG_NE];
	char names[4 * KP_LG_NX + KP_LG_NE][48];
	size_t n = 0, k = 0;
	const char *path = r->a.json != NULL ? r->a.json : r->a.json_append;
	static const char *const pn[4] = { "p50", "p99", "p999", "max" };

	m[n++] = (struct kp_metric){ "loadgen_terminals", "count", r->a.terminals };
	m[n++] = (struct kp_metric){ "loadgen_records_acked", "records", (double)f->acked };
	m[n++] = (struct kp_metric){ "loadgen_run", "s", f->seconds };
	m[n++] = (struct kp_metric){ "loadgen_sessions", "s", f->sessions };
	m[n++] = (struct kp_metric){ "loadgen_records_per_s", "records/s", f->records_s };
	m[n++] = (struct kp_metric){ "loadgen_exchanges_per_s", "1/s", f->exchanges_s };
	for (int x = 0; x < KP_LG_NX; x++) {
		const double v[4] = { f->x[x].p50, f->x[x].p99, f->x[x].p999, f->x[x].max };

		for (int p = 0; p < 4; p++) {
			snprintf(names[k], sizeof(names[k]), "loadgen_%s_%s", kp_lg_exchange_name(x), pn[p]);
			m[n++] = (struct kp_metric){ names[k++], "ms", v[p] };
		}
	}
	for (int e = 1; e < KP_LG_NE; e++) {
		snprintf(names[k], sizeof(names[k]), "loadgen_errors_%s", kp_lg_error_name(e));
		m[n++] = (struct kp_metric){ names[k++], "count", (double)f->errors[e] };
	}
	if (kp_metrics_json(path, r->a.json_append != NULL, m, n) != 0) {
		fprintf(stderr, PROG ": cannot write the figures to %s\n", path);
		return -1;
	}
	return 0;
}

static void cleanup(struct run *r)
{
	for (int i = 0; r->terms != NULL && i < r->a.terminals; i++) {
		kp_tls_conf_free((kp_tls_conf *)r->terms[i].conf);
		kp_lg_term_free(&r->terms[i]);
	}
	for (int i = 0; r->chains != NULL && i < r->a.terminals; i++)
		kp_lg_chain_free(&r->chains[i]);
	free(r->terms);
	free(r->chains);
	if (r->minted) {
		char path[800];

		for (int i = 0; i < r->a.terminals; i++) {
			char id[KP_ID_MAX + 1];

			term_id(r, i, id, sizeof(id));
			snprintf(path, sizeof(path), "%s/%s.key", r->dir, id);
			unlink(path);
			snprintf(path, sizeof(path), "%s/%s.crt", r->dir, id);
			unlink(path);
		}
		rmdir(r->dir);
	}
}

static int parse(int argc, char **argv, struct run *r)
{
	const char *extra[1];
	struct kp_ctl_pos pos = { extra, 0, 0, NULL };
	const struct kp_lg_mix mix = KP_LG_MIX_DEFAULT;
	long ncpu = sysconf(_SC_NPROCESSORS_ONLN);

	memset(r, 0, sizeof(*r));
	r->mix = mix;
	r->a.server_name = KP_BUNDLE_KID;
	r->a.prefix = "LG-";
	r->a.terminals = 4;
	r->a.config_every = 4;
	r->a.fetches = 1;
	r->a.records = -1;
	r->a.timeout_ms = 10000;
	r->a.threads = ncpu < 1 ? 1 : ncpu > 64 ? 64 : (int)ncpu;
	kp_ctl_prog = PROG;
	if (kp_ctl_parse(argc, argv, opts, &r->a, &pos) != 0) {
		if (pos.extra != NULL)
			usage_error("unexpected argument '%s'", pos.extra);
		return 2;
	}
	r->a.records_set = r->a.records >= 0;
	return check_args(r);
}

int main(int argc, char **argv)
{
	struct run r;
	struct figures f;
	double seconds, sessions = 0;
	int rc;

	for (int i = 1; i < argc && strcmp(argv[i], "--") != 0; i++) {
		if (strcmp(argv[i], "--help") == 0 || strcmp(argv[i], "-h") == 0) {
			usage(stdout);
			return 0;
		}
		if (strcmp(argv[i], "--version") == 0) {
			printf(PROG " (kippu) %s\n", KP_VERSION);
			return 0;
		}
	}
	if ((rc = parse(argc, argv, &r)) != 0)
		return rc;
	if (r.a.print_reg != NULL)
		return print_register(&r);
	if ((r.a.reg != NULL && register_terminals(&r) != 0) || certificates(&r) != 0 ||
	    make_chains(&r) != 0 || setup_terms(&r) != 0 ||
	    (seconds = run_terms(&r, &sessions)) < 0) {
		cleanup(&r);
		return 1;
	}
	figures(&r, seconds, sessions, &f);
	print_table(&r, &f);
	rc = (r.a.json != NULL || r.a.json_append != NULL) && write_figures(&r, &f) != 0;
	if (f.errors[KP_LG_E_BACKEND] > 0 && r.a.reg == NULL)
		fprintf(stderr, PROG ": the backend refused terminals: are they registered? "
		        "(--register DB, or the lines of --print-register DB)\n");
	cleanup(&r);
	if (rc != 0)
		return 1;
	return f.total_errors > 0 && !r.a.allow_errors ? 1 : 0;
}
