/* SPDX-License-Identifier: Apache-2.0 */
/* The backend server: one thread per terminal connection, each with its own database
 * connection and deadlines on every read, so a slow or silent terminal holds only its own
 * thread. Signatures are verified outside any database lock (they are the expensive part,
 * and run on every core at once); storing a batch is one short transaction.
 *
 * Two first-come first-served gates keep many terminals at once fair (tests/bench_sync.c
 * measures it): at most one batch per online CPU is being verified, and one connection at a
 * time writes to the store. Without them, 50 terminals on 2 cores meant 50 threads
 * verifying at once: the one holding SQLite's write lock got a sliver of a core (95 ms per
 * batch instead of 6), the rest polled for the lock with SQLite's sleeping busy handler,
 * which keeps no order (waits up to 8.5 s; past the 10 s busy timeout a batch failed with
 * "database is locked"), and a batch's ack took up to 14 s, past a terminal's default
 * sync timeout. With them the lock wait stays under 15 ms, and acks come in arrival order.
 * The gates are held only around CPU work and the store call, never across network I/O,
 * and never one inside the other. Batches are stored through one connection (ingest_db,
 * used only under the store gate), whose page cache stays warm.
 *
 * Connections are admitted in two stages, so that clients without a certificate cannot crowd
 * out terminals that have one: at most max_unauth at once may be in the TLS handshake, and
 * at most max_conns authenticated terminals are served. While the handshake slots are more
 * than half taken, one source address may hold at most max_per_addr of them (a depot's
 * terminals behind one NAT address are only limited during a flood, and only while they
 * shake hands), and new handshakes get a shorter deadline. Refusals are counted and logged
 * once per interval, never one line each: a flood must not fill the disk. */
#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

#include "kp_backend.h"

#include "kp_cbor.h"
#include "kp_rng.h"
#include "kp_sys.h"

#define AUDIT_TURN 16                   /* records the auditor verifies per turn (~16 ms) */
#define AUDIT_BACKOFF_MS 20             /* its nap while ingest is busy */
#define AUDIT_IDLE_MS 500               /* its nap while there is nothing to audit */
#define MAX_TRACKED 8192                /* max_unauth + max_conns, each at most 4096 */
#define REFUSAL_LOG_MS 10000            /* one summary of refusals per interval */
#define OWN_LINES 10                    /* failed handshakes, and unregistered terminals,
                                         * logged one by one per interval */

/* Lets `slots` threads through at once, in the order they arrived (ticket order). */
struct gate {
	pthread_mutex_t m;
	pthread_cond_t c;
	unsigned long next, done, slots;
};

enum conn_state { CONN_FREE, CONN_HANDSHAKE, CONN_TERMINAL };

struct slot {
	int fd;
	enum conn_state state;
	unsigned char addr[16];          /* source address; IPv4 as ::ffff:a.b.c.d */
};

/* Why a connection was refused; its text goes into the periodic summary. */
enum refusal { REFUSE_PER_ADDR, REFUSE_HANDSHAKES, REFUSE_TERMINALS, REFUSE_HANDSHAKE_FAILED,
               REFUSE_UNREGISTERED, REFUSE_REVOKED, N_REFUSALS };

static const char *const refusal_text[N_REFUSALS] = {
	[REFUSE_PER_ADDR] = "over the per-address limit",
	[REFUSE_HANDSHAKES] = "over the handshake limit",
	[REFUSE_TERMINALS] = "over the terminal limit",
	[REFUSE_HANDSHAKE_FAILED] = "failed handshakes not logged one by one",
	[REFUSE_UNREGISTERED] = "unregistered terminals not logged one by one",
	[REFUSE_REVOKED] = "revoked certificates not logged one by one",
};

struct kp_server {
	struct kp_server_cfg cfg;
	kp_tls_conf *tls;
	kp_key *key;                     /* signs bundles */
	pthread_mutex_t key_lock;        /* kp_key_sign: one thread at a time per key */
	struct gate verify_gate;         /* signature checks: one batch per online CPU */
	struct gate store_gate;          /* store writes: one connection at a time */
	kp_bstore *ingest_db;            /* the batches' one connection, under store_gate: its
	                                  * page cache stays warm (a connection's own starts
	                                  * cold after another's commit) */
	int listen_fd;
	int port;
	pthread_t acceptor;
	pthread_t auditor;               /* audit_main: the signatures ingest left for later */
	volatile int stopping;
	unsigned long turns;             /* accept loop turns (kp_server_turns) */
	pthread_mutex_t lock;
	pthread_cond_t idle;
	int active;                      /* n_handshake + n_terminal */
	int n_handshake, n_terminal;
	int busy_handshake_ms;           /* handshake deadline under pressure */
	struct slot slots[MAX_TRACKED];  /* live connections, shut down on stop */
	int64_t window_ms;               /* start of the refusal log interval; 0: none open */
	unsigned long refused[N_REFUSALS];
	int own_lines[N_REFUSALS];       /* refusals logged one by one in this interval */
};

struct conn {
	kp_server *srv;
	int fd;
	int slot;
	int handshake_ms;                /* shorter under pressure */
	char addr[64];
};

static void gate_init(struct gate *g, unsigned long slots)
{
	pthread_mutex_init(&g->m, NULL);
	pthread_cond_init(&g->c, NULL);
	g->next = g->done = 0;
	g->slots = slots > 0 ? slots : 1;
}

static void gate_destroy(struct gate *g)
{
	pthread_mutex_destroy(&g->m);
	pthread_cond_destroy(&g->c);
}

static void gate_enter(struct gate *g)
{
	unsigned long ticket;

	pthread_mutex_lock(&g->m);
	ticket = g->next++;
	/* Not `ticket - done >= slots`: with two slots or more, later tickets may enter and
	 * leave before an earlier one wakes up, so done can pass a waiting ticket (the
	 * subtraction then wraps and that thread waited forever, holding its connection, the
	 * auditor and shutdown: found by tests/backend/test_hostile_net.c). */
	while (ticket >= g->done + g->slots)
		pthread_cond_wait(&g->c, &g->m);
	pthread_mutex_unlock(&g->m);
}

static void gate_leave(struct gate *g)
{
	pthread_mutex_lock(&g->m);
	g->done++;
	pthread_cond_broadcast(&g->c);
	pthread_mutex_unlock(&g->m);
}

/* 1 while a thread is in the gate or waits for it. */
static int gate_busy(struct gate *g)
{
	int busy;

	pthread_mutex_lock(&g->m);
	busy = g->next != g->done;
	pthread_mutex_unlock(&g->m);
	return busy;
}

static int64_t now_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_REALTIME, &ts);
	return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static double mono_s(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static int64_t mono_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* With srv->lock held: the summary of an interval that has ended (or, with force, of the
 * open one), as one line. */
static void refusals_flush(kp_server *srv, int force)
{
	int64_t now = mono_ms();
	unsigned long total = 0;
	char line[512];
	size_t n;

	if (srv->window_ms == 0 || (!force && now - srv->window_ms < REFUSAL_LOG_MS))
		return;
	for (int i = 0; i < N_REFUSALS; i++)
		total += srv->refused[i];
	if (total > 0) {
		n = (size_t)snprintf(line, sizeof(line), "refused %lu connections in "
		                     "the last %d s:", total,
		                     (int)((now - srv->window_ms + 999) / 1000));
		for (int i = 0; i < N_REFUSALS && n < sizeof(line); i++) {
			if (srv->refused[i] != 0)
				n += (size_t)snprintf(line + n, sizeof(line) - n, "%s %lu %s",
				                      n > 0 && line[n - 1] == ':' ? "" : ",",
				                      srv->refused[i], refusal_text[i]);
		}
		kp_log(LOG_WARNING, "%s (%d in handshake, %d terminals)", line, srv->n_handshake,
		        srv->n_terminal);
	}
	memset(srv->refused, 0, sizeof(srv->refused));
	memset(srv->own_lines, 0, sizeof(srv->own_lines));
	srv->window_ms = 0;
}

/* With srv->lock held: counts one refusal into the open interval (opening one). */
static void refusal_note(kp_server *srv, enum refusal why)
{
	refusals_flush(srv, 0);
	if (srv->window_ms == 0)
		srv->window_ms = mono_ms();
	srv->refused[why]++;
}

void kp_server_cfg_defaults(struct kp_server_cfg *cfg)
{
	const char *env;
	char *end = NULL;
	long sample;

	memset(cfg, 0, sizeof(*cfg));
	snprintf(cfg->host, sizeof(cfg->host), "127.0.0.1");
	snprintf(cfg->port, sizeof(cfg->port), "7800");
	snprintf(cfg->db, sizeof(cfg->db), "backend.db");
	snprintf(cfg->ca, sizeof(cfg->ca), "ca.crt");
	snprintf(cfg->cert, sizeof(cfg->cert), "backend.crt");
	snprintf(cfg->key, sizeof(cfg->key), "backend.key");
	cfg->max_conns = 256;
	cfg->max_unauth = 256;
	cfg->max_per_addr = 16;
	cfg->timeout_ms = 10000;
	cfg->change_log_days = KP_BSTORE_CHANGE_KEEP_S / 86400;
	/* For the bench and the tests (README "How sync works"), not for production */
	env = getenv("KIPPU_BACKEND_VERIFY");
	cfg->verify_every_record = env != NULL && strcmp(env, "every") == 0;
	env = getenv("KIPPU_BACKEND_SAMPLE");
	sample = env != NULL ? strtol(env, &end, 10) : -1;
	cfg->audit_sample = env != NULL && *end == '\0' && sample >= 0 && sample <= 65535 ?
	                    (int)sample : KP_AUDIT_SAMPLE;
	env = getenv("KIPPU_BACKEND_AUDITOR");
	cfg->auditor = env == NULL || strcmp(env, "0") != 0;
}

static int send_simple(kp_tls *t, enum kp_msg_type type, uint64_t acked, uint64_t seq,
                       const char *reason, int timeout_ms)
{
	struct kp_msg m;

	memset(&m, 0, sizeof(m));
	m.type = type;
	m.acked = acked;
	m.seq = seq;
	if (reason != NULL)
		snprintf(m.reason, sizeof(m.reason), "%s", reason);
	return kp_msg_send(t, &m, timeout_ms);
}

/* welcome, with the hash of record acked when the terminal asked for it (head != NULL). */
static int send_welcome(kp_tls *t, uint64_t acked, const uint8_t *head, int timeout_ms)
{
	struct kp_msg m;

	memset(&m, 0, sizeof(m));
	m.type = KP_MSG_WELCOME;
	m.acked = acked;
	if (head != NULL) {
		m.has_head = 1;
		memcpy(m.head, head, sizeof(m.head));
	}
	return kp_msg_send(t, &m, timeout_ms);
}

/* Which of a batch's n records get their signature verified at ingest: the last one, and
 * `extra` others picked at random (PROTOCOL.md section 4.2 says why); every one with
 * verify_every_record. 0 in check[i]: deferred to the auditor. */
static void pick_checked(const struct kp_server_cfg *cfg, size_t n, unsigned char *check)
{
	memset(check, cfg->verify_every_record ? 1 : 0, n);
	if (n == 0)
		return;
	check[n - 1] = 1;
	for (int k = 0; k < cfg->audit_sample && n > 1; k++) {
		uint32_t r = 0;

		if (kp_random(&r, sizeof(r)) != 0)
			memset(check, 1, n);     /* no randomness: verify them all */
		else
			check[r % (n - 1)] = 1;
	}
}

/* Verifies and decodes one batch, then hands it to the store. *held: the terminal's
 * records held before, then after (for the metrics' count of records stored). */
static int handle_records(kp_server *srv, kp_tls *t, const struct kp_cert_history *hist,
                          const struct kp_bsession *ses, const struct kp_msg *m, uint64_t *held)
{
	const char *terminal = ses->terminal;
	struct kp_ingest *in = calloc(m->n_items, sizeof(*in));
	unsigned char *check = malloc(m->n_items > 0 ? m->n_items : 1);
	uint64_t acked = 0, refused = 0;
	char reason[128], why[256];
	double t0;
	int rc;

	if (in == NULL || check == NULL) {
		free(in);
		free(check);
		return KP_BE_E_NOMEM;
	}
	pick_checked(&srv->cfg, m->n_items, check);
	t0 = mono_s();
	gate_enter(&srv->verify_gate);
	for (size_t i = 0; i < m->n_items; i++) {
		struct kp_ingest *r = &in[i];

		r->cose = m->items[i].p;
		r->cose_len = m->items[i].n;
		r->decode_rc = -1;
		r->sig_ok = kp_cose_open1(r->cose, r->cose_len, &r->payload, &r->payload_len) == 0;
		if (r->sig_ok) {
			r->decode_rc = kp_record_decode(r->payload, r->payload_len, &r->rec);
			kp_sha256(r->payload, r->payload_len, r->hash);
		}
		/* a batch holding a record that a revoked certificate's key could have signed
		 * after its revocation is verified whole (section 4.3): that record is refused
		 * now, and the ones before it are held, verified, without a voucher */
		if (r->decode_rc == 0 && r->rec.time_ms >= hist->first_revoked)
			memset(check, 1, m->n_items);
	}
	for (size_t i = 0; i < m->n_items; i++) {
		struct kp_ingest *r = &in[i];

		/* The chain (PROTOCOL.md section 4.2): the last record's signature, and a
		 * sample; each with the key that was valid for it (section 4.3) */
		r->sig_deferred = !check[i] && r->sig_ok;
		if (!r->sig_ok || r->sig_deferred)
			continue;
		r->sig_ok = kp_cert_history_verify(hist, ses->cert_id, r->cose, r->cose_len,
		                                   r->decode_rc == 0 ? r->rec.time_ms : INT64_MIN,
		                                   &r->signer, r->why, sizeof(r->why)) == 0;
		if (!r->sig_ok)
			r->decode_rc = -1;
	}
	gate_leave(&srv->verify_gate);
	kp_metrics_verify_seconds(mono_s() - t0);
	t0 = mono_s();
	gate_enter(&srv->store_gate);
	rc = kp_bstore_ingest_session(srv->ingest_db, ses, in, m->n_items, now_ms(), &acked,
	                              &refused, reason, sizeof(reason));
	if (rc != KP_BE_OK)
		snprintf(why, sizeof(why), "%s", kp_bstore_errmsg(srv->ingest_db));
	gate_leave(&srv->store_gate);
	kp_metrics_commit_seconds(mono_s() - t0);
	free(in);
	free(check);
	if (rc == KP_BE_OK && acked > *held) {
		kp_metrics_ingested(acked - *held);
		*held = acked;
	}
	if (rc == KP_BE_OK && refused != 0)
		kp_metrics_refused(reason);
	if (rc != KP_BE_OK) {
		kp_log(LOG_ERR, "%s: ingest: %s", terminal, why);
		send_simple(t, KP_MSG_ERROR, 0, 0, "backend could not store the batch; try later",
		            srv->cfg.timeout_ms);
		return rc;
	}
	if (refused != 0) {
		struct kp_log_tap lt = { terminal, (long long)acked + 1, "refused", reason };

		kp_log_tap(LOG_WARNING, &lt, "%s: %llu record(s) refused: %s", terminal,
		           (unsigned long long)refused, reason);
		return send_simple(t, KP_MSG_REFUSED, acked, refused, reason, srv->cfg.timeout_ms);
	}
	return send_simple(t, KP_MSG_ACK, acked, 0, NULL, srv->cfg.timeout_ms);
}

/* config or delta {bundle: cose, or null when cose is NULL}; frees cose. */
static int send_signed(kp_server *srv, kp_tls *t, enum kp_msg_type type, uint8_t *cose,
                       size_t cose_len)
{
	struct kp_msg m;
	int rc;

	memset(&m, 0, sizeof(m));
	m.type = type;
	if (cose != NULL) {
		kp_metrics_bundle(cose_len);
		m.has_bundle = 1;
		m.bundle.p = cose;
		m.bundle.n = cose_len;
	}
	rc = kp_msg_send(t, &m, srv->cfg.timeout_ms);
	free(cose);
	return rc;
}

static int handle_getconfig(kp_server *srv, kp_tls *t, kp_bstore *db,
                            const struct kp_bsession *ses, uint64_t have)
{
	const char *terminal = ses->terminal;
	struct kp_bundle b;
	uint8_t *cose = NULL;
	size_t cose_len = 0;
	int has = 0, rc;

	rc = kp_bstore_bundle_session(db, ses, have, now_ms(), &b, &has);
	if (rc != KP_BE_OK) {
		kp_log(LOG_ERR, "%s: bundle: %s", terminal, kp_bstore_errmsg(db));
		return send_simple(t, KP_MSG_ERROR, 0, 0, "backend could not build the bundle",
		                   srv->cfg.timeout_ms);
	}
	if (has) {
		size_t n_out = 0;
		const char *first = kp_bstore_bundle_left_out(db, &n_out);

		/* once per bundle, i.e. per terminal and state version */
		if (n_out > 0)
			kp_log(LOG_WARNING, "%s: bundle: left out %zu row(s) it cannot carry, "
			        "first %s", terminal, n_out, first);
	}
	if (has) {
		pthread_mutex_lock(&srv->key_lock);
		rc = kp_bundle_sign(&b, srv->key, &cose, &cose_len);
		pthread_mutex_unlock(&srv->key_lock);
		kp_bundle_free(&b);
		if (rc != 0) {
			kp_log(LOG_ERR, "%s: bundle sign: %s", terminal,
			        kp_sync_strerror(rc));
			return send_simple(t, KP_MSG_ERROR, 0, 0, "backend could not sign the bundle",
			                   srv->cfg.timeout_ms);
		}
	}
	return send_signed(srv, t, KP_MSG_CONFIG, cose, cose_len);
}

/* getdelta: the changes since the terminal's version, signed (PROTOCOL.md section 5.4);
 * config {bundle: null} when it is up to date, and the full bundle (handle_getconfig) when
 * a delta cannot say what changed. */
static int handle_getdelta(kp_server *srv, kp_tls *t, kp_bstore *db,
                           const struct kp_bsession *ses, uint64_t have)
{
	struct kp_delta d;
	uint8_t *cose = NULL;
	size_t cose_len = 0;
	int kind = KP_BSTORE_DELTA_FULL, rc;

	rc = kp_bstore_delta_session(db, ses, have, now_ms(), &d, &kind);
	if (rc != KP_BE_OK) {
		kp_log(LOG_ERR, "%s: delta: %s", ses->terminal, kp_bstore_errmsg(db));
		return send_simple(t, KP_MSG_ERROR, 0, 0, "backend could not build the delta",
		                   srv->cfg.timeout_ms);
	}
	if (kind == KP_BSTORE_DELTA_FULL)
		return handle_getconfig(srv, t, db, ses, have);
	if (kind == KP_BSTORE_DELTA_DELTA) {
		pthread_mutex_lock(&srv->key_lock);
		rc = kp_delta_sign(&d, srv->key, &cose, &cose_len);
		pthread_mutex_unlock(&srv->key_lock);
		kp_delta_free(&d);
		if (rc != 0) {
			kp_log(LOG_ERR, "%s: delta sign: %s", ses->terminal, kp_sync_strerror(rc));
			return send_simple(t, KP_MSG_ERROR, 0, 0, "backend could not sign the delta",
			                   srv->cfg.timeout_ms);
		}
	}
	return send_signed(srv, t, cose != NULL ? KP_MSG_DELTA : KP_MSG_CONFIG, cose, cose_len);
}

/* A completed handshake moves its connection from the handshake slots to the terminals';
 * 0 if those are all taken. */
static int conn_promote(kp_server *srv, int slot)
{
	int ok;

	pthread_mutex_lock(&srv->lock);
	ok = srv->n_terminal < srv->cfg.max_conns;
	if (ok) {
		srv->slots[slot].state = CONN_TERMINAL;
		srv->n_handshake--;
		srv->n_terminal++;
	} else {
		refusal_note(srv, REFUSE_TERMINALS);
		kp_metrics_conn_refused(KP_MC_TERMINALS);
	}
	pthread_mutex_unlock(&srv->lock);
	return ok;
}

/* 1 if a failed handshake (or a refused terminal) gets a line of its own; the rest of an
 * interval's are counted. */
static int refusal_logged(kp_server *srv, enum refusal why)
{
	int own;

	pthread_mutex_lock(&srv->lock);
	refusals_flush(srv, 0);
	own = srv->own_lines[why] < OWN_LINES;
	if (own) {
		srv->own_lines[why]++;
		if (srv->window_ms == 0)
			srv->window_ms = mono_ms();
	} else {
		refusal_note(srv, why);
	}
	pthread_mutex_unlock(&srv->lock);
	return own;
}

static void serve(kp_server *srv, const struct conn *c)
{
	const char *peer_addr = c->addr;
	kp_tls *t = NULL;
	kp_bstore *db = NULL;
	kp_cert *peer = NULL;
	const uint8_t *der = NULL;
	size_t der_len = 0;
	char cn[KP_ID_MAX + 8], err[256], jid[9];
	struct kp_bsession ses;
	struct kp_cert_history hist = { NULL, 0, INT64_MAX };
	uint64_t was = 0, held = 0;
	int raised = 0;
	uint8_t *buf = NULL;
	struct kp_msg m;
	int rc;

	memset(&m, 0, sizeof(m));
	rc = kp_tls_handshake(&t, srv->tls, c->fd, NULL, c->handshake_ms, err, sizeof(err));
	if (rc != 0) {
		kp_metrics_tls_failed(rc == KP_TLS_E_TIMEOUT ? KP_MT_TIMEOUT :
		                      rc == KP_TLS_E_PEER ? KP_MT_PEER :
		                      rc == KP_TLS_E_CLOSED ? KP_MT_CLOSED :
		                      rc == KP_TLS_E_HANDSHAKE ? KP_MT_PROTOCOL : KP_MT_OTHER);
		if (refusal_logged(srv, REFUSE_HANDSHAKE_FAILED))
			kp_log(LOG_WARNING, "%s: TLS handshake refused: %s", peer_addr, err);
		return;                          /* the handshake closed fd */
	}
	if (!conn_promote(srv, c->slot)) {
		send_simple(t, KP_MSG_ERROR, 0, 0, "backend busy; try later", srv->cfg.timeout_ms);
		goto out;
	}
	if (kp_tls_peer_cn(t, cn, sizeof(cn)) != 0 || strlen(cn) > KP_ID_MAX ||
	    kp_tls_peer_cert_der(t, &der, &der_len) != 0 || kp_cert_parse(&peer, der, der_len) != 0) {
		kp_log(LOG_WARNING, "%s: unusable client certificate", peer_addr);
		goto out;
	}
	rc = kp_msg_recv(t, &m, &buf, srv->cfg.timeout_ms);
	if (rc != 0 || m.type != KP_MSG_HELLO) {
		kp_log(LOG_WARNING, "%s (%s): no hello: %s", peer_addr, cn,
		        rc != 0 ? kp_backend_strerror(rc) : kp_msg_type_name(m.type));
		send_simple(t, KP_MSG_ERROR, 0, 0, "expected hello", srv->cfg.timeout_ms);
		goto out;
	}
	if (strcmp(m.terminal, cn) != 0) {
		kp_log(LOG_WARNING, "%s: hello says terminal '%s' but the certificate "
		        "is for '%s': refused", peer_addr, m.terminal, cn);
		send_simple(t, KP_MSG_ERROR, 0, 0, "terminal id differs from the certificate's",
		            srv->cfg.timeout_ms);
		goto out;
	}
	db = NULL;
	rc = kp_bstore_open(&db, srv->cfg.db);
	if (rc == KP_BE_OK) {
		gate_enter(&srv->store_gate);
		rc = kp_bstore_hello_last(db, &ses, cn, m.has_journal ? m.journal : NULL,
		                          m.has_last ? &m.last : NULL, der, der_len, now_ms());
		/* the keys its records may be verified with (section 4.3), as of this hello */
		if (rc == KP_BE_OK)
			rc = kp_bstore_cert_history(db, cn, &hist);
		/* A terminal holds a newer config than this backend ever made: the backend was
		 * restored from a backup. Its state goes on from above, so terminals take it. */
		if (rc == KP_BE_OK && kp_bstore_state_at_least(db, m.config, &raised, &was) ==
		    KP_BE_OK && raised)
			kp_log(LOG_WARNING, "%s holds config version %llu, above this "
			        "backend's %llu: the backend's state was restored from an older copy; "
			        "state version raised above it so that every terminal takes this "
			        "backend's state", cn, (unsigned long long)m.config,
			        (unsigned long long)was);
		gate_leave(&srv->store_gate);
	}
	if (rc == KP_BE_E_UNREGISTERED) {
		char shown[KP_ID_MAX + 1], reason[sizeof(m.reason)];

		/* The CN is whatever the CA signed: printable before it reaches a log line. */
		kp_cbor_text_printable(shown, sizeof(shown), cn, strlen(cn));
		kp_metrics_conn_refused(KP_MC_UNREGISTERED);
		if (refusal_logged(srv, REFUSE_UNREGISTERED))
			kp_log(LOG_WARNING, "%s: terminal %s refused: %s (kippuctl backend "
			        "terminal add registers a terminal)", peer_addr, shown,
			        kp_bstore_errmsg(db));
		snprintf(reason, sizeof(reason), "terminal %s is not registered at this backend", shown);
		send_simple(t, KP_MSG_ERROR, 0, 0, reason, srv->cfg.timeout_ms);
		goto out;
	}
	if (rc == KP_BE_E_REVOKED) {
		char reason[sizeof(m.reason)];

		kp_metrics_conn_refused(KP_MC_REVOKED);
		if (refusal_logged(srv, REFUSE_REVOKED))
			kp_log(LOG_WARNING, "%s: terminal %s refused: %s (kippuctl backend cert list)",
			       peer_addr, cn, kp_bstore_errmsg(db));
		snprintf(reason, sizeof(reason), "%s", kp_bstore_errmsg(db));
		send_simple(t, KP_MSG_ERROR, 0, 0, reason, srv->cfg.timeout_ms);
		goto out;
	}
	if (rc != KP_BE_OK) {
		send_simple(t, KP_MSG_ERROR, 0, 0, "backend store unavailable", srv->cfg.timeout_ms);
		goto out;
	}
	snprintf(jid, sizeof(jid), "%02x%02x%02x%02x", ses.journal[0], ses.journal[1],
	         ses.journal[2], ses.journal[3]);
	if (ses.new_journal && ses.epoch > 1)
		kp_log(LOG_WARNING, "%s: new journal %s, epoch %lld: a rebuilt or "
		        "restored database; earlier epochs are kept, records held already are "
		        "kept once", cn, jid, (long long)ses.epoch);
	if (ses.new_cert && ses.epoch > 0 && !(ses.new_journal && ses.epoch == 1))
		kp_log(LOG_WARNING, "%s: a certificate not seen before for this "
		        "terminal (kept with the earlier ones)", cn);
	/* a terminal that asks gets the hash of record acked, to check it is its own */
	if (send_welcome(t, ses.acked, m.chain ? ses.head : NULL, srv->cfg.timeout_ms) != 0)
		goto out;
	held = ses.acked;
	for (;;) {
		kp_msg_clear(&m);
		free(buf);
		buf = NULL;
		rc = kp_msg_recv(t, &m, &buf, srv->cfg.timeout_ms);
		if (rc != 0) {
			kp_log(LOG_WARNING, "%s (%s): %s", peer_addr, cn, kp_backend_strerror(rc));
			if (rc == KP_SYNC_E_MALFORMED || rc == KP_SYNC_E_VERSION || rc == KP_SYNC_E_TOOBIG)
				send_simple(t, KP_MSG_ERROR, 0, 0, kp_backend_strerror(rc), srv->cfg.timeout_ms);
			break;
		}
		if (m.type == KP_MSG_RECORDS)
			rc = handle_records(srv, t, &hist, &ses, &m, &held);
		else if (m.type == KP_MSG_GETCONFIG)
			rc = handle_getconfig(srv, t, db, &ses, m.config);
		else if (m.type == KP_MSG_GETDELTA)
			rc = handle_getdelta(srv, t, db, &ses, m.config);
		else if (m.type == KP_MSG_BYE)
			break;
		else
		{
			send_simple(t, KP_MSG_ERROR, 0, 0, "unexpected message", srv->cfg.timeout_ms);
			rc = KP_SYNC_E_PROTOCOL;
		}
		if (rc != 0)
			break;
	}
out:
	kp_msg_clear(&m);
	free(buf);
	kp_cert_history_free(&hist);
	kp_cert_free(peer);
	kp_bstore_close(db);
	kp_tls_close(t);
}

static void *conn_main(void *arg)
{
	struct conn *c = arg;
	kp_server *srv = c->srv;
	struct slot *s = &srv->slots[c->slot];

	serve(srv, c);
	pthread_mutex_lock(&srv->lock);
	if (s->state == CONN_TERMINAL)
		srv->n_terminal--;
	else
		srv->n_handshake--;
	s->fd = -1;
	s->state = CONN_FREE;
	srv->active--;
	pthread_cond_broadcast(&srv->idle);
	pthread_mutex_unlock(&srv->lock);
	free(c);
	return NULL;
}

/* The peer's address as 16 bytes (IPv4 mapped into IPv6) for the per-address count, and as
 * text for the log. */
static void peer_addr(int fd, unsigned char key[16], char *text, size_t cap)
{
	struct sockaddr_storage ss;
	socklen_t sl = sizeof(ss);
	char ip[INET6_ADDRSTRLEN];

	memset(key, 0, 16);
	snprintf(text, cap, "fd %d", fd);
	if (getpeername(fd, (struct sockaddr *)&ss, &sl) != 0)
		return;
	if (ss.ss_family == AF_INET) {
		const struct sockaddr_in *in = (const struct sockaddr_in *)&ss;

		key[10] = key[11] = 0xff;
		memcpy(key + 12, &in->sin_addr, 4);
		if (inet_ntop(AF_INET, &in->sin_addr, ip, sizeof(ip)) != NULL)
			snprintf(text, cap, "%s:%u", ip, ntohs(in->sin_port));
	} else if (ss.ss_family == AF_INET6) {
		const struct sockaddr_in6 *in6 = (const struct sockaddr_in6 *)&ss;

		memcpy(key, &in6->sin6_addr, 16);
		if (inet_ntop(AF_INET6, &in6->sin6_addr, ip, sizeof(ip)) != NULL)
			snprintf(text, cap, "[%s]:%u", ip, ntohs(in6->sin6_port));
	}
}

/* With srv->lock held: takes a handshake slot for a new connection from addr, or says why
 * not. Under pressure (handshake slots more than half taken) the per-address limit applies
 * and the handshake deadline is shorter. */
static int conn_admit(kp_server *srv, const unsigned char addr[16], int *slot, int *handshake_ms,
                      enum refusal *why)
{
	int scan = srv->cfg.max_unauth + srv->cfg.max_conns, busy, same = 0;

	*slot = -1;
	if (srv->n_handshake >= srv->cfg.max_unauth) {
		*why = REFUSE_HANDSHAKES;
		return -1;
	}
	busy = 2 * srv->n_handshake >= srv->cfg.max_unauth;
	for (int i = 0; i < scan; i++) {
		const struct slot *s = &srv->slots[i];

		if (s->state == CONN_FREE) {
			if (*slot < 0)
				*slot = i;
		} else if (busy && s->state == CONN_HANDSHAKE && memcmp(s->addr, addr, 16) == 0) {
			same++;
		}
	}
	if (busy && same >= srv->cfg.max_per_addr) {
		*why = REFUSE_PER_ADDR;
		return -1;
	}
	if (*slot < 0) {                     /* cannot happen: the counts bound the slots taken */
		*why = REFUSE_HANDSHAKES;
		return -1;
	}
	*handshake_ms = busy ? srv->busy_handshake_ms : srv->cfg.timeout_ms;
	srv->slots[*slot].state = CONN_HANDSHAKE;
	memcpy(srv->slots[*slot].addr, addr, 16);
	srv->n_handshake++;
	srv->active++;
	return 0;
}

static void *accept_main(void *arg)
{
	kp_server *srv = arg;

	while (!srv->stopping) {
		struct conn *c;
		pthread_t th;
		pthread_attr_t attr;
		unsigned char addr[16];
		char text[64];
		enum refusal why = REFUSE_HANDSHAKES;
		int fd = -1, slot = -1, handshake_ms = 0, rc = -1;

		__atomic_add_fetch(&srv->turns, 1, __ATOMIC_RELAXED);
		if (kp_tcp_accept(srv->listen_fd, 200, &fd) != 0) {
			pthread_mutex_lock(&srv->lock);
			refusals_flush(srv, 0);      /* a quiet spell still closes the interval */
			pthread_mutex_unlock(&srv->lock);
			continue;
		}
		peer_addr(fd, addr, text, sizeof(text));
		pthread_mutex_lock(&srv->lock);
		if (!srv->stopping) {
			rc = conn_admit(srv, addr, &slot, &handshake_ms, &why);
			if (rc != 0) {
				refusal_note(srv, why);
				kp_metrics_conn_refused(why == REFUSE_PER_ADDR ? KP_MC_PER_ADDR :
				                        KP_MC_HANDSHAKES);
			} else {
				srv->slots[slot].fd = fd;
				kp_metrics_accepted();
			}
		}
		pthread_mutex_unlock(&srv->lock);
		if (rc != 0) {
			close(fd);
			continue;
		}
		c = calloc(1, sizeof(*c));
		pthread_attr_init(&attr);
		pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
		pthread_attr_setstacksize(&attr, 256 * 1024);
		if (c != NULL) {
			c->srv = srv;
			c->fd = fd;
			c->slot = slot;
			c->handshake_ms = handshake_ms;
			snprintf(c->addr, sizeof(c->addr), "%s", text);
		}
		if (c == NULL || pthread_create(&th, &attr, conn_main, c) != 0) {
			close(fd);
			free(c);
			pthread_mutex_lock(&srv->lock);
			srv->slots[slot].fd = -1;
			srv->slots[slot].state = CONN_FREE;
			srv->n_handshake--;
			srv->active--;
			pthread_mutex_unlock(&srv->lock);
		}
		pthread_attr_destroy(&attr);
	}
	return NULL;
}

static void store_gate_cb(void *arg, int enter)
{
	kp_server *srv = arg;

	if (enter)
		gate_enter(&srv->store_gate);
	else
		gate_leave(&srv->store_gate);
}

static void nap_ms(long ms)
{
	struct timespec ts = { ms / 1000, (ms % 1000) * 1000000L };

	nanosleep(&ts, NULL);
}

/* The auditor (PROTOCOL.md section 4.2): at the lowest CPU priority, a few records per turn
 * and only while no batch is being verified or stored, so that ingest never waits long
 * for it; it naps while there is nothing to audit. */
static void *audit_main(void *arg)
{
	kp_server *srv = arg;
	kp_bstore *db = NULL;
	char err[256];

	if (setpriority(PRIO_PROCESS, (id_t)syscall(SYS_gettid), 19) != 0)
		kp_log(LOG_DEBUG, "auditor: cannot lower its priority: %s", strerror(errno));
	if (kp_bstore_open_mode(&db, srv->cfg.db, KP_BSTORE_EXISTING, err, sizeof(err)) != 0) {
		kp_log(LOG_ERR, "auditor: %s", err);
		return NULL;
	}
	while (!srv->stopping) {
		uint64_t audited = 0, failed = 0;
		int rc;

		if (gate_busy(&srv->store_gate) || gate_busy(&srv->verify_gate)) {
			nap_ms(AUDIT_BACKOFF_MS);
			continue;
		}
		rc = kp_bstore_audit_gated(db, AUDIT_TURN, now_ms(), &audited, &failed, store_gate_cb,
		                           srv);
		if (rc != KP_BE_OK)
			kp_log(LOG_ERR, "auditor: %s", kp_bstore_errmsg(db));
		for (int i = 0; (rc != KP_BE_OK || audited == 0) && i < 10 && !srv->stopping; i++)
			nap_ms(AUDIT_IDLE_MS / 10);
	}
	kp_bstore_close(db);
	return NULL;
}

int kp_server_start(kp_server **out, const struct kp_server_cfg *cfg, char *err, size_t err_cap)
{
	kp_server *srv = calloc(1, sizeof(*srv));
	long ncpu;
	int rc;

	*out = NULL;
	err[0] = '\0';
	if (srv == NULL)
		return KP_BE_E_NOMEM;
	srv->cfg = *cfg;
	srv->listen_fd = -1;
	if (srv->cfg.max_conns <= 0 || srv->cfg.max_conns > MAX_TRACKED / 2)
		srv->cfg.max_conns = 256;
	if (srv->cfg.max_unauth <= 0 || srv->cfg.max_unauth > MAX_TRACKED / 2)
		srv->cfg.max_unauth = 256;
	if (srv->cfg.max_per_addr <= 0)
		srv->cfg.max_per_addr = 16;
	if (srv->cfg.timeout_ms <= 0)
		srv->cfg.timeout_ms = 10000;
	/* Under pressure a silent client holds its slot a fifth as long, never under 1 s: an
	 * honest handshake takes milliseconds. */
	srv->busy_handshake_ms = srv->cfg.timeout_ms / 5 < 1000 ? 1000 : srv->cfg.timeout_ms / 5;
	if (srv->busy_handshake_ms > srv->cfg.timeout_ms)
		srv->busy_handshake_ms = srv->cfg.timeout_ms;
	for (int i = 0; i < MAX_TRACKED; i++)
		srv->slots[i].fd = -1;
	pthread_mutex_init(&srv->lock, NULL);
	pthread_mutex_init(&srv->key_lock, NULL);
	pthread_cond_init(&srv->idle, NULL);
	ncpu = sysconf(_SC_NPROCESSORS_ONLN);
	gate_init(&srv->verify_gate, ncpu > 0 ? (unsigned long)ncpu : 1);
	gate_init(&srv->store_gate, 1);
	rc = kp_tls_conf_new(&srv->tls, KP_TLS_SERVER, cfg->ca, cfg->cert, cfg->key, err, err_cap);
	if (rc != 0)
		goto fail;
	/* Terminals refuse a server certificate without serverAuth: say so now, not per sync. */
	rc = kp_cert_file_check_profile(cfg->cert, KP_CERT_BACKEND, err, err_cap);
	if (rc != 0)
		goto fail;
	rc = kp_key_load(&srv->key, cfg->key);
	if (rc != 0) {
		snprintf(err, err_cap, "key %s: %s", cfg->key, kp_crypto_strerror(rc));
		goto fail;
	}
	/* Open (and migrate) the store once before serving, so a bad database fails here; after
	 * the TLS files, so that a missing certificate leaves no new database behind. */
	rc = kp_bstore_open(&srv->ingest_db, cfg->db);
	if (rc == KP_BE_OK && cfg->change_log_days > 0)
		rc = kp_bstore_set_change_keep(srv->ingest_db, (int64_t)cfg->change_log_days * 86400);
	if (rc != KP_BE_OK) {
		snprintf(err, err_cap, "database %s: %s", cfg->db, kp_backend_strerror(rc));
		goto fail;
	}
	rc = kp_tcp_listen(cfg->host, cfg->port, &srv->listen_fd, &srv->port);
	if (rc != 0) {
		snprintf(err, err_cap, "listen on %s:%s: %s", cfg->host, cfg->port, strerror(errno));
		goto fail;
	}
	if (srv->cfg.auditor && pthread_create(&srv->auditor, NULL, audit_main, srv) != 0) {
		snprintf(err, err_cap, "cannot start the auditor thread");
		rc = KP_BE_E_NOMEM;
		goto fail;
	}
	if (pthread_create(&srv->acceptor, NULL, accept_main, srv) != 0) {
		snprintf(err, err_cap, "cannot start the accept thread");
		srv->stopping = 1;
		if (srv->cfg.auditor)
			pthread_join(srv->auditor, NULL);
		rc = KP_BE_E_NOMEM;
		goto fail;
	}
	*out = srv;
	return KP_BE_OK;
fail:
	if (srv->listen_fd >= 0)
		close(srv->listen_fd);
	kp_bstore_close(srv->ingest_db);
	kp_tls_conf_free(srv->tls);
	kp_key_free(srv->key);
	gate_destroy(&srv->verify_gate);
	gate_destroy(&srv->store_gate);
	free(srv);
	return rc;
}

int kp_server_port(const kp_server *srv)
{
	return srv->port;
}

unsigned long kp_server_turns(const kp_server *srv)
{
	return __atomic_load_n(&srv->turns, __ATOMIC_RELAXED);
}

void kp_server_stop(kp_server *srv)
{
	if (srv == NULL)
		return;
	srv->stopping = 1;
	pthread_join(srv->acceptor, NULL);
	if (srv->cfg.auditor)
		pthread_join(srv->auditor, NULL);
	close(srv->listen_fd);
	pthread_mutex_lock(&srv->lock);
	refusals_flush(srv, 1);
	/* Wake every connection blocked in poll(); each ends its transaction cleanly. (A
	 * connection that just closed may leave its number here an instant longer; the
	 * process is stopping, so a stray shutdown() cannot hurt a live terminal.) */
	for (int i = 0; i < MAX_TRACKED; i++) {
		if (srv->slots[i].fd >= 0)
			shutdown(srv->slots[i].fd, SHUT_RDWR);
	}
	while (srv->active > 0)
		pthread_cond_wait(&srv->idle, &srv->lock);
	pthread_mutex_unlock(&srv->lock);
	kp_bstore_close(srv->ingest_db);
	kp_tls_conf_free(srv->tls);
	kp_key_free(srv->key);
	pthread_mutex_destroy(&srv->lock);
	pthread_mutex_destroy(&srv->key_lock);
	pthread_cond_destroy(&srv->idle);
	gate_destroy(&srv->verify_gate);
	gate_destroy(&srv->store_gate);
	free(srv);
}
