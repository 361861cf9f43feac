/* SPDX-License-Identifier: Apache-2.0 */
/* A hostile network (issue 19): the real kippu-backend behind a fault proxy
 * (tests/faultproxy.h) that drops, delays, duplicates, reorders, cuts at byte N and
 * half-opens connections, against in-process terminals that sync through the client
 * library (kp_sync_run, real mutual TLS); and a backend under resource exhaustion (idle TCP
 * connections, half-done TLS handshakes, a one-byte-a-second peer, a frame that announces
 * 16 MiB and stops) while real terminals sync within their deadline.
 *
 * KP_FAULT_SEED replays a campaign's faults (the seed is printed); KP_HOSTILE_SESSIONS,
 * KP_HOSTILE_TERMINALS and KP_HOSTILE_SESSION_MS make it bigger (README, "Reliability"). */
#include <errno.h>
#include <poll.h>
#include <pthread.h>
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <arpa/inet.h>
#include <netinet/in.h>

#include <cmocka.h>

#include "faultproxy.h"
#include "kp_backend.h"
#include "kp_terminal.h"
#include "testutil.h"

#define MAX_TERMS 256
#define OPERATORS 2                  /* OP-A and OP-B, in turn (tools/demo/sync/backend-setup.sh) */
#define SESSION_MS 600               /* a campaign session's deadline (half-open ones wait it);
                                      * KP_HOSTILE_SESSION_MS changes it */
#define REAL_MS 5000                 /* a real terminal's deadline here (its default: 30 s) */
#define BACKEND_MS 3000              /* the backend's deadline per read and handshake */

/* One terminal of the campaign: its store (two connections, as kippu-terminal has), key,
 * tap engine and TLS configuration, in this process. */
struct term {
	char id[16], op[16];
	kp_store *s, *ss;
	kp_key *key;
	kp_tap_engine *e;
	kp_tls_conf *conf;
	struct kp_sync_source src;
	int64_t clock_ms;                /* the test's clock: the terminal's taps come from it */
	uint64_t rng;
	int sessions, ok;
	int64_t slowest_ms;
	int port;                        /* where it syncs: the proxy or the backend */
	pthread_t th;
};

static struct {
	char dir[256], bin[1024], src[1024];
	int session_ms;
	pid_t backend;
	int port, n_terms;
	struct term t[MAX_TERMS];
	kp_cert *bcert;
	volatile int done_sessions;
} G;

#define sh(...) tu_sh_in(G.dir, G.bin, __VA_ARGS__)

static long env_num(const char *name, long def)
{
	const char *v = getenv(name);

	return v != NULL && *v != '\0' ? strtol(v, NULL, 0) : def;
}

static void backend_start(const char *extra)
{
	char out[600];
	FILE *fp;

	snprintf(out, sizeof(out), "%s/backend.out", G.dir);
	remove(out);
	G.backend = tu_spawn("cd '%s' && exec '%s/kippu-backend' --listen 127.0.0.1:0 "
	                     "--db backend.db --ca ca.crt --cert backend.crt --key backend.key "
	                     "--timeout-ms %d %s > backend.out 2>> backend.log", G.dir, G.bin,
	                     BACKEND_MS, extra);
	tu_wait_text(out, "listening", 1, TU_WAIT_S);
	fp = fopen(out, "r");
	assert_non_null(fp);
	assert_int_equal(fscanf(fp, "kippu-backend: listening on 127.0.0.1:%d", &G.port), 1);
	fclose(fp);
}

/* SIGTERM, and the backend must be gone within 10 s: a connection thread stuck for good
 * (the gate that lost a ticket) kept it from stopping. */
static void backend_stop(void)
{
	pid_t pid = G.backend;

	if (pid > 0) {
		G.backend = 0;
		kill(pid, SIGTERM);
		assert_int_equal(tu_wait_pid(pid, 10, "kippu-backend after SIGTERM"), 0);
	}
}

/* The PKI, the demo's operators and products, and n terminals T-0 .. T-(n-1) registered
 * with OP-A and OP-B in turn, each with its own store and tap engine in this process. */
static void terms_make(int n)
{
	char path[600], err[256];
	uint8_t token_key[KP_TOKEN_KEY_LEN] = { 0x42 };

	assert_int_equal(sh("\"$CTL\" ca create --key ca.key --cert ca.crt >/dev/null && "
	                    "\"$CTL\" backend create --ca-key ca.key --ca-cert ca.crt "
	                    "--key backend.key --cert backend.crt >/dev/null && "
	                    "\"$CTL\" token-key create token.key >/dev/null && "
	                    "cp %s/demo/sync/*.txt . && CTL=\"$CTL\" DB=backend.db "
	                    ". %s/demo/sync/backend-setup.sh >/dev/null && i=0 && "
	                    "while [ $i -lt %d ]; do "
	                    "\"$CTL\" terminal create --ca-key ca.key --ca-cert ca.crt --id T-$i "
	                    "--key T-$i.key --cert T-$i.crt >/dev/null && "
	                    "op=OP-A && [ $((i %% 2)) = 0 ] || op=OP-B; "
	                    "\"$CTL\" backend terminal add backend.db T-$i --operator $op "
	                    ">/dev/null || exit 1; i=$((i + 1)); done", G.src, G.src, n), 0);
	snprintf(path, sizeof(path), "%s/backend.crt", G.dir);
	assert_int_equal(kp_cert_load(&G.bcert, path), 0);
	G.n_terms = n;
	for (int i = 0; i < n; i++) {
		struct term *t = &G.t[i];
		struct kp_terminal_cfg cfg;
		char crt[600], ca[600];

		snprintf(t->id, sizeof(t->id), "T-%d", i);
		snprintf(t->op, sizeof(t->op), "OP-%c", 'A' + i % OPERATORS);
		kp_terminal_cfg_defaults(&cfg);
		snprintf(cfg.terminal_id, sizeof(cfg.terminal_id), "%s", t->id);
		snprintf(cfg.operator_id, sizeof(cfg.operator_id), "%s", t->op);
		snprintf(cfg.route, sizeof(cfg.route), "R1");
		snprintf(path, sizeof(path), "%s/%s.db", G.dir, t->id);
		assert_int_equal(kp_store_open(&t->s, path), KP_OK);
		assert_int_equal(kp_store_open(&t->ss, path), KP_OK);
		snprintf(path, sizeof(path), "%s/%s.key", G.dir, t->id);
		snprintf(crt, sizeof(crt), "%s/%s.crt", G.dir, t->id);
		assert_int_equal(kp_key_load(&t->key, path), 0);
		assert_int_equal(kp_tap_engine_open(&t->e, t->s, &cfg, t->key, token_key), KP_OK);
		snprintf(ca, sizeof(ca), "%s/ca.crt", G.dir);
		assert_int_equal(kp_tls_conf_new(&t->conf, KP_TLS_CLIENT, ca, crt, path, err,
		                                 sizeof(err)), 0);
		kp_store_sync_source(t->ss, &t->src);
		t->clock_ms = 1795651200000LL;   /* 2026-11-26, the test's clock */
	}
}

static void terms_free(void)
{
	for (int i = 0; i < G.n_terms; i++) {
		struct term *t = &G.t[i];

		kp_tap_engine_close(t->e);
		kp_store_close(t->ss);
		kp_store_close(t->s);
		kp_key_free(t->key);
		kp_tls_conf_free(t->conf);
	}
	kp_cert_free(G.bcert);
	G.n_terms = 0;
}

static uint64_t next_rand(uint64_t *x)
{
	*x ^= *x << 13;
	*x ^= *x >> 7;
	*x ^= *x << 17;
	return *x;
}

/* Taps 1 .. max_taps refusals (each a signed, chained, committed record). */
static void term_taps(struct term *t, int max_taps)
{
	int n = 1 + (int)(next_rand(&t->rng) % (uint64_t)max_taps);

	for (int k = 0; k < n; k++) {
		struct kp_tap_outcome o;
		uint8_t token[KP_TOKEN_LEN];

		memset(token, (int)(next_rand(&t->rng) & 0xff), sizeof(token));
		t->clock_ms += 1000;
		if (kp_tap_refuse(t->e, token, "card-error", t->clock_ms, &o) != KP_OK)
			fail_msg("%s: a tap was not recorded", t->id);
	}
}

/* One sync through kp_sync_run to t->port; its duration in *ms. */
static int term_sync(struct term *t, int timeout_ms, int64_t *ms, char *err, size_t cap)
{
	struct kp_sync_stats st;
	char port[16];
	int64_t t0 = tu_mono_ms();
	int rc;

	memset(&st, 0, sizeof(st));
	snprintf(port, sizeof(port), "%d", t->port);
	rc = kp_sync_run(t->conf, "127.0.0.1", port, "backend", t->id, G.bcert, &t->src,
	                 timeout_ms, &st, err, cap);
	*ms = tu_mono_ms() - t0;
	if (*ms > t->slowest_ms)
		t->slowest_ms = *ms;
	return rc;
}

/* A terminal of the campaign: taps a few records, syncs through the proxy, again. */
static void *campaign_main(void *arg)
{
	struct term *t = arg;
	char err[256];

	for (int i = 0; i < t->sessions; i++) {
		int64_t ms;

		term_taps(t, 3);
		if (term_sync(t, G.session_ms, &ms, err, sizeof(err)) == 0)
			t->ok++;
		__atomic_add_fetch(&G.done_sessions, 1, __ATOMIC_RELAXED);
	}
	return NULL;
}

/* ---- the invariants, from the backend's store API against each terminal's journal ---- */

struct seen {
	uint64_t n;
	uint8_t **cose;
	size_t *len;
	uint64_t twice, foreign;
};

static int journal_row(const struct kp_journal_row *row, void *arg)
{
	struct seen *j = arg;

	if (row->seq != j->n + 1)
		return 1;
	j->cose = realloc(j->cose, (j->n + 1) * sizeof(*j->cose));
	j->len = realloc(j->len, (j->n + 1) * sizeof(*j->len));
	j->cose[j->n] = malloc(row->cose_len);
	memcpy(j->cose[j->n], row->cose, row->cose_len);
	j->len[j->n] = row->cose_len;
	j->n++;
	return 0;
}

/* Each stored record of the terminal: the same bytes as its journal's record of that seq,
 * stored once (a second copy of a seq, or bytes the journal does not hold, are counted). */
struct match {
	struct seen *j;
	uint8_t *hit;
	uint64_t held;
};

static int export_row(void *arg, const struct kp_export_row *row)
{
	struct match *m = arg;

	m->held++;
	if (row->seq < 1 || row->seq > m->j->n || m->j->len[row->seq - 1] != row->cose_len ||
	    memcmp(m->j->cose[row->seq - 1], row->cose, row->cose_len) != 0) {
		m->j->foreign++;
		return 0;
	}
	if (m->hit[row->seq - 1]++ != 0)
		m->j->twice++;
	return 0;
}

struct ledger {
	int64_t records[OPERATORS], amount;
	int rows;
};

/* KP_REPORT_LEDGER, by column name: operator accepted refused already rides amount */
static int ledger_row(void *arg, int ncol, const char *const *cols, const char *const *names)
{
	struct ledger *l = arg;
	int op = -1;

	for (int c = 0; c < ncol; c++) {
		if (strcmp(names[c], "operator") == 0 && strncmp(cols[c], "OP-", 3) == 0)
			op = cols[c][3] - 'A';
	}
	assert_in_range(op, 0, OPERATORS - 1);
	for (int c = 0; c < ncol; c++) {
		int64_t v = cols[c] != NULL ? atoll(cols[c]) : 0;

		if (strcmp(names[c], "accepted") == 0 || strcmp(names[c], "refused") == 0 ||
		    strcmp(names[c], "already") == 0)
			l->records[op] += v;
		else if (strcmp(names[c], "amount") == 0)
			l->amount += v;
	}
	l->rows++;
	return 0;
}

/* The backend holds exactly the union of the journals, each record once; the ledger per
 * operator is the sum of its terminals' journals; every terminal has the latest bundle. */
static void check_invariants(void)
{
	char path[600];
	kp_bstore *bs = NULL;
	uint64_t latest = 0;
	int64_t per_op[OPERATORS] = { 0 };
	struct ledger l;

	snprintf(path, sizeof(path), "%s/backend.db", G.dir);
	assert_int_equal(kp_bstore_open(&bs, path), KP_BE_OK);
	assert_int_equal(kp_bstore_state_version(bs, &latest), KP_BE_OK);
	for (int i = 0; i < G.n_terms; i++) {
		struct term *t = &G.t[i];
		struct seen j;
		struct match m;
		uint64_t acked = 0, version = 0;

		memset(&j, 0, sizeof(j));
		assert_int_equal(kp_journal_foreach(t->s, journal_row, &j), 0);
		m.j = &j;
		m.hit = calloc(j.n + 1, 1);
		m.held = 0;
		assert_int_equal(kp_bstore_export_walk(bs, t->id, export_row, &m), KP_BE_OK);
		for (uint64_t k = 0; k < j.n; k++) {
			if (m.hit[k] == 0)
				fail_msg("%s: record %llu of the journal is not at the backend", t->id,
				         (unsigned long long)k + 1);
			free(j.cose[k]);
		}
		assert_int_equal(j.twice, 0);
		assert_int_equal(j.foreign, 0);
		assert_int_equal(m.held, j.n);
		assert_int_equal(kp_store_sync_state(t->ss, &acked, &version, NULL), KP_OK);
		assert_int_equal(acked, j.n);
		assert_int_equal(version, latest);
		per_op[i % OPERATORS] += (int64_t)j.n;
		free(j.cose);
		free(j.len);
		free(m.hit);
	}
	memset(&l, 0, sizeof(l));
	assert_int_equal(kp_bstore_report(bs, KP_REPORT_LEDGER, NULL, ledger_row, &l), KP_BE_OK);
	for (int k = 0; k < OPERATORS; k++)
		assert_int_equal(l.records[k], per_op[k]);
	assert_int_equal(l.amount, 0);       /* refusals only: nothing charged */
	kp_bstore_close(bs);
}

/* A new bundle: a card on the denylist raises the backend's state version. */
static void bundle_bump(int n)
{
	char path[600];
	kp_bstore *bs = NULL;
	uint8_t card[KP_TOKEN_LEN];

	memset(card, 0xA0 + n, sizeof(card));
	snprintf(path, sizeof(path), "%s/backend.db", G.dir);
	assert_int_equal(kp_bstore_open(&bs, path), KP_BE_OK);
	assert_int_equal(kp_bstore_denylist(bs, card, "hostile-net", 1795651200000LL), KP_BE_OK);
	kp_bstore_close(bs);
}

static void test_campaign_under_random_faults(void **state)
{
	int sessions = (int)env_num("KP_HOSTILE_SESSIONS", 1000);
	int terms = (int)env_num("KP_HOSTILE_TERMINALS", 20), bumps = 0, ok = 0;
	struct fp_opts o = { 0 };
	struct faultproxy *p;
	struct fp_stats st;
	int64_t t0 = tu_mono_ms();
	char err[256];

	(void)state;
	assert_in_range(terms, 1, MAX_TERMS);
	o.seed = (uint64_t)env_num("KP_FAULT_SEED", 20261208);
	o.fault_pct = 60;
	o.max_byte = 2500;
	o.delay_max_ms = 20;
	G.session_ms = (int)env_num("KP_HOSTILE_SESSION_MS", SESSION_MS);
	o.hold_ms = 2 * G.session_ms;
	print_message("hostile network: seed %llu (KP_FAULT_SEED replays), %d sessions by %d "
	              "terminals, deadline %d ms\n", (unsigned long long)o.seed, sessions, terms,
	              G.session_ms);
	terms_make(terms);
	backend_start("");
	o.upstream_port = G.port;
	p = fp_start(&o);
	assert_non_null(p);
	G.done_sessions = 0;
	for (int i = 0; i < terms; i++) {
		G.t[i].port = fp_port(p);
		G.t[i].rng = o.seed * 2654435761u + (uint64_t)i + 1;
		G.t[i].sessions = sessions / terms + (i < sessions % terms);
		assert_int_equal(pthread_create(&G.t[i].th, NULL, campaign_main, &G.t[i]), 0);
	}
	/* three new bundles while the campaign runs */
	while (bumps < 3) {
		if (G.done_sessions >= (bumps + 1) * sessions / 4)
			bundle_bump(bumps++);
		else
			tu_sleep_ms(10);
	}
	for (int i = 0; i < terms; i++) {
		pthread_join(G.t[i].th, NULL);
		ok += G.t[i].ok;
	}
	fp_stats(p, &st);
	fp_stop(p);
	print_message("%d sessions in %.1f s, %d whole; %lu connections through the proxy:",
	              sessions, (double)(tu_mono_ms() - t0) / 1000, ok, st.conns);
	for (int k = 0; k < FP_KINDS; k++)
		print_message(" %s %lu (%lu bit)", fp_fault_name((enum fp_fault)k), st.faults[k],
		              st.bit[k]);
	print_message("\n");
	assert_true(st.conns >= (unsigned long)sessions);
	for (int k = 1; k < FP_KINDS; k++)
		assert_true(st.bit[k] > 0);       /* every kind of fault did happen */
	/* then each terminal twice on a clean line: the first round uploads what is left (each
	 * batch stored raises the backend's state version: a new bundle), the second, with
	 * nothing to upload, brings every terminal the same latest bundle */
	for (int i = 0; i < 2 * terms; i++) {
		int64_t ms;

		G.t[i % terms].port = G.port;
		if (term_sync(&G.t[i % terms], REAL_MS, &ms, err, sizeof(err)) != 0)
			fail_msg("%s: the clean sync failed after %lld ms: %s", G.t[i % terms].id,
			         (long long)ms, err);
	}
	check_invariants();
	backend_stop();
	terms_free();
}

/* ---- resource exhaustion ---- */

#define IDLE_CONNS 500               /* TCP connections that never speak */
#define HALF_TLS 200                 /* TLS handshakes that stop after the first bytes */
#define ATTACK_ADDRS 8               /* they come from 127.0.0.2 .. 127.0.0.9 */
#define ATTACK_ROUND_MS 20           /* the attacker reopens what the backend dropped */
#define REAL_TERMS 8
#define REAL_RUN_MS 4000             /* real terminals sync this long, past the deadlines */

/* The start of a ClientHello: a record header that announces 512 bytes, then 6 of them. */
static const char hello_start[] = "\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03";

struct attack {
	int port;
	volatile int stop;
	unsigned long opened, dropped;
	int64_t loris_ms, frame_ms;      /* how long the backend held each one (-1: still) */
	kp_tls_conf *frame_conf;         /* a terminal's: the big frame comes after the handshake */
	pthread_t th[3];
};

/* A connection from 127.0.0.(2 + i % ATTACK_ADDRS), or from 127.0.0.10 for i < 0; blocking
 * connect (loopback), then non-blocking. */
static int attack_open(int port, int i)
{
	struct sockaddr_in src, dst;
	int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);

	if (fd < 0)
		return -1;
	memset(&src, 0, sizeof(src));
	src.sin_family = AF_INET;
	src.sin_addr.s_addr = htonl(i < 0 ? 0x7f00000au : 0x7f000002u + (uint32_t)(i % ATTACK_ADDRS));
	dst = src;
	dst.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	dst.sin_port = htons((uint16_t)port);
	if (bind(fd, (struct sockaddr *)&src, sizeof(src)) != 0 ||
	    connect(fd, (struct sockaddr *)&dst, sizeof(dst)) != 0) {
		close(fd);
		return -1;
	}
	return fd;
}

/* IDLE_CONNS silent connections and HALF_TLS stalled handshakes, reopened as the backend
 * drops them, until stop. */
static void *crowd_main(void *arg)
{
	struct attack *a = arg;
	static struct pollfd pf[IDLE_CONNS + HALF_TLS];
	char sink[512];

	for (int i = 0; i < IDLE_CONNS + HALF_TLS; i++) {
		pf[i].fd = -1;
		pf[i].events = POLLIN;
	}
	while (!a->stop) {
		int64_t round = tu_mono_ms();

		for (int i = 0; i < IDLE_CONNS + HALF_TLS && !a->stop; i++) {
			if (pf[i].fd >= 0 || (pf[i].fd = attack_open(a->port, i)) < 0)
				continue;
			a->opened++;
			if (i >= IDLE_CONNS &&
			    send(pf[i].fd, hello_start, sizeof(hello_start) - 1, MSG_NOSIGNAL) < 0)
				continue;            /* dropped already: seen below */
		}
		if (poll(pf, IDLE_CONNS + HALF_TLS, ATTACK_ROUND_MS) > 0) {
			for (int i = 0; i < IDLE_CONNS + HALF_TLS; i++) {
				if (pf[i].fd >= 0 && pf[i].revents != 0 &&
				    recv(pf[i].fd, sink, sizeof(sink), MSG_DONTWAIT) <= 0) {
					close(pf[i].fd);
					pf[i].fd = -1;
					a->dropped++;
				}
			}
		}
		tu_sleep_ms(round + ATTACK_ROUND_MS - tu_mono_ms());
	}
	for (int i = 0; i < IDLE_CONNS + HALF_TLS; i++) {
		if (pf[i].fd >= 0)
			close(pf[i].fd);
	}
	return NULL;
}

/* A ClientHello, one byte a second, from 127.0.0.10: how long until the backend ends it. */
static void *loris_main(void *arg)
{
	struct attack *a = arg;
	int fd = attack_open(a->port, -1);
	int64_t t0 = tu_mono_ms();
	size_t k = 0;

	a->loris_ms = -1;
	while (fd >= 0 && !a->stop) {
		struct pollfd pf = { fd, POLLIN, 0 };
		char c;

		if (send(fd, hello_start + k % (sizeof(hello_start) - 1), 1, MSG_NOSIGNAL) != 1 ||
		    (poll(&pf, 1, 1000) > 0 && recv(fd, &c, 1, 0) <= 0)) {
			a->loris_ms = tu_mono_ms() - t0;
			break;
		}
		k++;
	}
	if (fd >= 0)
		close(fd);
	return NULL;
}

/* A terminal's handshake, then a frame header that announces 16 MiB, and nothing more. */
static void *frame_main(void *arg)
{
	struct attack *a = arg;
	static const uint8_t hdr[4] = { 0x01, 0x00, 0x00, 0x00 };   /* 16 MiB, big-endian */
	char port[16], err[256];
	kp_tls *t = NULL;
	uint8_t b;
	int fd = -1;
	int64_t t0;

	a->frame_ms = -1;
	snprintf(port, sizeof(port), "%d", a->port);
	if (kp_tcp_connect("127.0.0.1", port, REAL_MS, &fd) != 0 ||
	    kp_tls_handshake(&t, a->frame_conf, fd, "backend", REAL_MS, err, sizeof(err)) != 0 ||
	    kp_tls_write_all(t, hdr, sizeof(hdr), REAL_MS) != 0) {
		kp_tls_close(t);
		return NULL;
	}
	t0 = tu_mono_ms();
	while (!a->stop) {
		int rc = kp_tls_read_exact(t, &b, 1, 100);

		if (rc != KP_TLS_E_TIMEOUT) {
			a->frame_ms = tu_mono_ms() - t0;
			break;
		}
	}
	kp_tls_close(t);
	return NULL;
}

/* A real terminal during the attack: taps and syncs straight to the backend, again and
 * again; every sync must succeed within REAL_MS. */
static void *real_main(void *arg)
{
	struct term *t = arg;
	int64_t start = tu_mono_ms();
	char err[256];

	while (t->sessions < 3 || tu_mono_ms() - start < REAL_RUN_MS) {
		int64_t ms;

		term_taps(t, 3);
		t->sessions++;
		if (term_sync(t, REAL_MS, &ms, err, sizeof(err)) != 0) {
			print_message("%s: sync %d failed after %lld ms: %s\n", t->id, t->sessions,
			              (long long)ms, err);
			break;
		}
		t->ok++;
	}
	return NULL;
}

static void test_exhaustion_bounded(void **state)
{
	struct attack a;
	int64_t slowest = 0;
	int syncs = 0, ok = 0;
	void *(*const attackers[3])(void *) = { crowd_main, loris_main, frame_main };

	(void)state;
	terms_make(REAL_TERMS + 1);
	/* the limits, given as options (these are the defaults) */
	backend_start("--max-unauth 256 --max-per-addr 16 --max-conns 256");
	memset(&a, 0, sizeof(a));
	a.port = G.port;
	a.frame_conf = G.t[REAL_TERMS].conf;
	for (int k = 0; k < 3; k++)
		assert_int_equal(pthread_create(&a.th[k], NULL, attackers[k], &a), 0);
	/* the crowd is in place and the backend is turning it away */
	while (a.dropped < IDLE_CONNS + HALF_TLS && a.opened < 4 * (IDLE_CONNS + HALF_TLS))
		tu_sleep_ms(20);
	for (int i = 0; i < REAL_TERMS; i++) {
		G.t[i].port = G.port;
		assert_int_equal(pthread_create(&G.t[i].th, NULL, real_main, &G.t[i]), 0);
	}
	for (int i = 0; i < REAL_TERMS; i++) {
		pthread_join(G.t[i].th, NULL);
		syncs += G.t[i].sessions;
		ok += G.t[i].ok;
		slowest = G.t[i].slowest_ms > slowest ? G.t[i].slowest_ms : slowest;
	}
	/* the slow peer and the big frame were ended by the backend's deadline meanwhile */
	for (int64_t t0 = tu_mono_ms(); (a.loris_ms < 0 || a.frame_ms < 0) &&
	     tu_mono_ms() - t0 < TU_WAIT_S * 1000;)
		tu_sleep_ms(50);
	a.stop = 1;
	for (int k = 0; k < 3; k++)
		pthread_join(a.th[k], NULL);
	print_message("under %d idle connections, %d stalled handshakes, a 1 byte/s peer and a "
	              "16 MiB frame: %d of %d real syncs by %d terminals succeeded, the slowest in "
	              "%lld ms (deadline %d ms); the attacker opened %lu connections, the backend "
	              "dropped %lu; the 1 byte/s peer was ended after %lld ms, the 16 MiB frame "
	              "after %lld ms (backend deadline %d ms)\n", IDLE_CONNS, HALF_TLS, ok, syncs,
	              REAL_TERMS, (long long)slowest, REAL_MS, a.opened, a.dropped,
	              (long long)a.loris_ms, (long long)a.frame_ms, BACKEND_MS);
	assert_int_equal(ok, syncs);
	assert_true(a.loris_ms >= 0);
	assert_true(a.frame_ms >= 0);
	backend_stop();
	terms_free();
}

static int setup(void **state)
{
	char cwd[700];

	(void)state;
	memset(&G, 0, sizeof(G));
	tu_tmpdir(G.dir, sizeof(G.dir));
	if (getcwd(cwd, sizeof(cwd)) == NULL)
		return -1;
	snprintf(G.src, sizeof(G.src), "%s/tools", cwd);
	if (tu_bin()[0] == '/')
		snprintf(G.bin, sizeof(G.bin), "%s", tu_bin());
	else
		snprintf(G.bin, sizeof(G.bin), "%s/%s", cwd, tu_bin());
	setenv("KIPPU_BACKEND_SAMPLE", "0", 1);
	return 0;
}

static int teardown(void **state)
{
	(void)state;
	if (G.backend > 0) {                 /* a test that failed */
		kill(G.backend, SIGKILL);
		waitpid(G.backend, NULL, 0);
	}
	tu_rmdir(G.dir);
	return 0;
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test_setup_teardown(test_campaign_under_random_faults, setup, teardown),
		cmocka_unit_test_setup_teardown(test_exhaustion_bounded, setup, teardown),
	};

	signal(SIGPIPE, SIG_IGN);
	return cmocka_run_group_tests(tests, NULL, NULL);
}
