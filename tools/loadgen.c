/* SPDX-License-Identifier: Apache-2.0 */
/* Simulated terminals over the real protocol (kp_loadgen.h): pre-signed chains, one
 * terminal's session timed exchange by exchange, percentiles and the figures as JSON. */
#include <errno.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "kp_loadgen.h"
#include "kp_bundle.h"
#include "kp_terminal.h"

double kp_lg_now(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + ts.tv_nsec / 1e9;
}

static void err_set(char *err, size_t cap, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
static void err_set(char *err, size_t cap, const char *fmt, ...)
{
	va_list ap;

	if (err == NULL || cap == 0)
		return;
	va_start(ap, fmt);
	vsnprintf(err, cap, fmt, ap);
	va_end(ap);
}

/* ---- the mix of record kinds ---- */

int kp_lg_mix_parse(const char *s, struct kp_lg_mix *mix, char *err, size_t err_cap)
{
	static const char *const names[] = { "ride", "pass", "stored", "refused", "link" };
	int *w[] = { &mix->ride, &mix->pass, &mix->stored, &mix->refused, &mix->link };
	const char *p = s;

	memset(mix, 0, sizeof(*mix));
	while (*p != '\0') {
		size_t len = strcspn(p, "="), i;
		char *end;
		long v;

		for (i = 0; i < 5; i++) {
			if (strlen(names[i]) == len && strncmp(p, names[i], len) == 0)
				break;
		}
		if (i == 5 || p[len] != '=') {
			err_set(err, err_cap, "'%.*s' is no record kind (ride, pass, stored, refused, "
			        "link, each as KIND=WEIGHT)", (int)strcspn(p, "=,"), p);
			return -1;
		}
		errno = 0;
		v = strtol(p + len + 1, &end, 10);
		if (end == p + len + 1 || (*end != ',' && *end != '\0') || errno != 0 || v < 0 ||
		    v > 1000000) {
			err_set(err, err_cap, "%s wants a whole number weight from 0 to 1000000",
			        names[i]);
			return -1;
		}
		*w[i] = (int)v;
		p = *end == ',' ? end + 1 : end;
	}
	if (mix->ride + mix->pass + mix->stored + mix->refused + mix->link == 0) {
		err_set(err, err_cap, "at least one record kind needs a weight above 0");
		return -1;
	}
	return 0;
}

/* Record i's content by the kind the mix gives it: spread evenly, the same every run. */
static void fill_record(struct kp_record *r, int i, int salt, const struct kp_lg_mix *m)
{
	int total = m->ride + m->pass + m->stored + m->refused + m->link;
	int pick = (int)(((uint32_t)i * 2654435761u + (uint32_t)salt * 40503u) % (uint32_t)total);
	static const char *const refusals[] = { "exhausted", "denied", "expired" };

	if ((pick -= m->link) < 0) {
		snprintf(r->kind, sizeof(r->kind), "link");
		r->has_via = 1;
		for (int b = 0; b < KP_TOKEN_LEN; b++)
			r->via[b] = (uint8_t)(b * 13 + salt);
		snprintf(r->result, sizeof(r->result), "requested");
		snprintf(r->reason, sizeof(r->reason), "%s", kp_reason_code(KP_R_LINK_REQUEST));
		return;
	}
	snprintf(r->kind, sizeof(r->kind), "tap");
	if ((pick -= m->refused) < 0) {
		snprintf(r->result, sizeof(r->result), "refused");
		snprintf(r->reason, sizeof(r->reason), "%s", refusals[i % 3]);
		return;
	}
	snprintf(r->result, sizeof(r->result), "accepted");
	snprintf(r->reason, sizeof(r->reason), "ok");
	r->entitlement = 1000 + (i * 7919) % 100000;
	if ((pick -= m->ride) < 0) {
		snprintf(r->product, sizeof(r->product), "P10");
		r->rides = 1;
		r->has_left = 1;
		r->left = i % 10;
	} else if ((pick -= m->pass) < 0) {
		snprintf(r->product, sizeof(r->product), "PASS30");
	} else {
		snprintf(r->product, sizeof(r->product), "SV");
		r->amount = 230;
		r->has_left = 1;
		r->left = 100000 - (i % 400) * 230;
	}
}

int kp_lg_chain_encode(struct kp_lg_chain *c, const char *id, int salt, int n, int64_t t0_ms,
                       const struct kp_lg_mix *mix)
{
	uint8_t prev[KP_SHA256_LEN] = { 0 };
	int rc;

	snprintf(c->id, sizeof(c->id), "%s", id);
	c->n = n;
	/* n may be 0: a terminal that only says hello and fetches its configuration */
	c->payload = calloc((size_t)n + 1, sizeof(*c->payload));
	c->payload_len = calloc((size_t)n + 1, sizeof(*c->payload_len));
	c->cose = calloc((size_t)n + 1, sizeof(*c->cose));
	if (c->payload == NULL || c->payload_len == NULL || c->cose == NULL)
		return KP_SYNC_E_NOMEM;
	for (int i = 0; i < n; i++) {
		struct kp_record r;

		/* A bus tap (or link request) as the terminal journals it. */
		memset(&r, 0, sizeof(r));
		r.seq = (uint64_t)i + 1;
		r.time_ms = t0_ms + (int64_t)i * 2000;
		snprintf(r.terminal, sizeof(r.terminal), "%s", c->id);
		r.has_token = 1;
		for (int b = 0; b < KP_TOKEN_LEN; b++)
			r.token[b] = (uint8_t)(i * 31 + b * 7 + salt);
		snprintf(r.operator_id, sizeof(r.operator_id), "OP-A");
		snprintf(r.route, sizeof(r.route), "R%d", salt % 7);
		snprintf(r.stop, sizeof(r.stop), "S%d", i % 40);
		fill_record(&r, i, salt, mix);
		memcpy(r.prev, prev, KP_SHA256_LEN);
		if ((rc = kp_record_encode(&r, &c->payload[i], &c->payload_len[i])) != 0 ||
		    (rc = kp_sha256(c->payload[i], c->payload_len[i], prev)) != 0)
			return rc;
	}
	return 0;
}

void kp_lg_chain_free(struct kp_lg_chain *c)
{
	for (int i = 0; i < c->n; i++) {
		if (c->payload != NULL)
			free(c->payload[i]);
		if (c->cose != NULL)
			free((void *)c->cose[i].p);
	}
	free(c->payload);
	free(c->payload_len);
	free(c->cose);
	memset(c, 0, sizeof(*c));
}

/* ---- signing on every core ---- */

#define SIGN_CHUNK 250

struct sign_work {
	struct kp_lg_chain *chains;
	int n_chains;
	atomic_int next;                /* the next chunk: chain-major */
	int *chunk_chain, *chunk_from, n_chunks;
	atomic_int failed;
	char err[700];
	pthread_mutex_t mu;
};

/* Each chunk loads its own copy of the terminal's key: a kp_key signs in one thread at a
 * time, so one terminal's long chain can be signed on every core at once. */
static void *sign_main(void *arg)
{
	struct sign_work *w = arg;

	for (;;) {
		int j = atomic_fetch_add(&w->next, 1), rc;
		struct kp_lg_chain *c;
		kp_key *key = NULL;
		int to;

		if (j >= w->n_chunks || atomic_load(&w->failed))
			return NULL;
		c = &w->chains[w->chunk_chain[j]];
		to = w->chunk_from[j] + SIGN_CHUNK < c->n ? w->chunk_from[j] + SIGN_CHUNK : c->n;
		rc = kp_key_load(&key, c->key_path);
		for (int i = w->chunk_from[j]; rc == 0 && i < to; i++) {
			uint8_t *cose = NULL;
			size_t len = 0;

			rc = kp_cose_sign1(key, c->id, c->payload[i], c->payload_len[i], &cose, &len);
			c->cose[i].p = cose;
			c->cose[i].n = len;
		}
		kp_key_free(key);
		if (rc != 0) {
			pthread_mutex_lock(&w->mu);
			if (!atomic_exchange(&w->failed, 1))
				snprintf(w->err, sizeof(w->err), "%s: %s", c->key_path,
				         kp_sync_error_text(rc));
			pthread_mutex_unlock(&w->mu);
			return NULL;
		}
	}
}

int kp_lg_chains_sign(struct kp_lg_chain *chains, int n_chains, int threads, char *err,
                      size_t err_cap)
{
	struct sign_work w;
	pthread_t th[64];
	int total = 0, started = 0;

	memset(&w, 0, sizeof(w));
	w.chains = chains;
	w.n_chains = n_chains;
	for (int t = 0; t < n_chains; t++)
		total += (chains[t].n + SIGN_CHUNK - 1) / SIGN_CHUNK;
	w.chunk_chain = calloc((size_t)total + 1, sizeof(int));
	w.chunk_from = calloc((size_t)total + 1, sizeof(int));
	if (w.chunk_chain == NULL || w.chunk_from == NULL) {
		free(w.chunk_chain);
		free(w.chunk_from);
		err_set(err, err_cap, "out of memory");
		return -1;
	}
	for (int t = 0; t < n_chains; t++) {
		for (int from = 0; from < chains[t].n; from += SIGN_CHUNK) {
			w.chunk_chain[w.n_chunks] = t;
			w.chunk_from[w.n_chunks++] = from;
		}
	}
	pthread_mutex_init(&w.mu, NULL);
	threads = threads < 1 ? 1 : threads > 64 ? 64 : threads;
	for (int i = 0; i < threads; i++) {
		if (pthread_create(&th[i], NULL, sign_main, &w) != 0)
			break;
		started++;
	}
	if (started == 0)
		sign_main(&w);
	for (int i = 0; i < started; i++)
		pthread_join(th[i], NULL);
	pthread_mutex_destroy(&w.mu);
	free(w.chunk_chain);
	free(w.chunk_from);
	if (w.failed) {
		err_set(err, err_cap, "signing: %s", w.err);
		return -1;
	}
	return 0;
}

int kp_lg_mint(const kp_key *ca_key, const kp_cert *ca_cert, const char *dir, const char *id,
               int days, char *err, size_t err_cap)
{
	char key_path[600], crt_path[600];
	kp_key *k = NULL;
	int rc;

	snprintf(key_path, sizeof(key_path), "%s/%s.key", dir, id);
	snprintf(crt_path, sizeof(crt_path), "%s/%s.crt", dir, id);
	if ((rc = kp_key_generate(&k)) != 0 || (rc = kp_key_save(k, key_path)) != 0 ||
	    (rc = kp_cert_issue(ca_key, ca_cert, k, id, days, crt_path)) != 0) {
		err_set(err, err_cap, "terminal %s's key and certificate in %s: %s", id, dir,
		        kp_sync_error_text(rc));
		kp_key_free(k);
		return -1;
	}
	kp_key_free(k);
	return 0;
}

/* ---- one terminal's session ---- */

const char *kp_lg_exchange_name(enum kp_lg_exchange x)
{
	static const char *const names[KP_LG_NX] = { "handshake", "hello", "records", "getconfig",
	                                             "getdelta" };

	return x < KP_LG_NX ? names[x] : "?";
}

const char *kp_lg_error_name(enum kp_lg_error e)
{
	static const char *const names[KP_LG_NE] = { "none", "connect", "tls", "timeout", "refused",
	                                             "backend", "protocol" };

	return e < KP_LG_NE ? names[e] : "?";
}

static void sample(struct kp_lg_samples *s, double v)
{
	if (s->n == s->cap) {
		size_t cap = s->cap ? s->cap * 2 : 64;
		double *nv = realloc(s->v, cap * sizeof(*nv));

		if (nv == NULL)
			return;                 /* a sample lost, never the run */
		s->v = nv;
		s->cap = cap;
	}
	s->v[s->n++] = v;
}

static int fail(struct kp_lg_term *t, enum kp_lg_error e, const char *fmt, ...)
	__attribute__((format(printf, 3, 4)));
static int fail(struct kp_lg_term *t, enum kp_lg_error e, const char *fmt, ...)
{
	va_list ap;

	t->error = e;
	va_start(ap, fmt);
	vsnprintf(t->reason, sizeof(t->reason), fmt, ap);
	va_end(ap);
	return e;
}

/* An I/O failure of an exchange: a timeout, or the connection gone. */
static int io_fail(struct kp_lg_term *t, const char *what, int rc)
{
	return fail(t, rc == KP_TLS_E_TIMEOUT ? KP_LG_E_TIMEOUT : KP_LG_E_PROTOCOL, "%s: %s", what,
	            kp_sync_error_text(rc));
}

/* One request and its answer, timed under exchange x; the answer in *in (points into *buf).
 * A `refused` or `error` answer is the error it says; any other type than want (or or_want)
 * is protocol's. */
static int exchange(struct kp_lg_term *t, kp_tls *tls, const struct kp_msg *out,
                    struct kp_msg *in, uint8_t **buf, enum kp_lg_exchange x,
                    enum kp_msg_type want, enum kp_msg_type or_want)
{
	double t0 = kp_lg_now();
	int rc;

	kp_msg_clear(in);
	free(*buf);
	*buf = NULL;
	if ((rc = kp_msg_send(tls, out, t->timeout_ms)) != 0 ||
	    (rc = kp_msg_recv(tls, in, buf, t->timeout_ms)) != 0)
		return io_fail(t, kp_lg_exchange_name(x), rc);
	sample(&t->lat[x], kp_lg_now() - t0);
	if (in->type == want || in->type == or_want)
		return 0;
	if (in->type == KP_MSG_REFUSED)
		return fail(t, KP_LG_E_REFUSED, "%s", in->reason);
	if (in->type == KP_MSG_ERROR)
		return fail(t, KP_LG_E_BACKEND, "%s", in->reason);
	return fail(t, KP_LG_E_PROTOCOL, "%s: expected %s, got %s", kp_lg_exchange_name(x),
	            kp_msg_type_name(want), kp_msg_type_name(in->type));
}

/* The answer's bundle or delta opened as a terminal would (signature with the backend's
 * certificate, for this terminal, newer than, or for a delta based on, the version held);
 * the version it makes in *version. */
static int open_answer(struct kp_lg_term *t, kp_tls *tls, const struct kp_msg *in,
                       uint64_t *version)
{
	struct kp_bundle b;
	struct kp_delta d;
	const uint8_t *der = NULL;
	size_t der_len = 0;
	kp_cert *cert = NULL;
	char why[160];
	int rc;

	memset(&b, 0, sizeof(b));
	memset(&d, 0, sizeof(d));
	why[0] = '\0';
	if ((rc = kp_tls_peer_cert_der(tls, &der, &der_len)) == 0 &&
	    (rc = kp_cert_parse(&cert, der, der_len)) == 0) {
		if (in->type == KP_MSG_DELTA)
			rc = kp_delta_open(cert, in->bundle.p, in->bundle.n, t->c->id, t->config_version,
			                   &d, why, sizeof(why));
		else
			rc = kp_bundle_open_err(cert, in->bundle.p, in->bundle.n, t->c->id,
			                        t->config_version, &b, why, sizeof(why));
	}
	kp_cert_free(cert);
	if (rc != 0)
		return fail(t, KP_LG_E_PROTOCOL, "%s: %s", in->type == KP_MSG_DELTA ? "delta" : "bundle",
		            why[0] != '\0' ? why : kp_sync_error_text(rc));
	*version = in->type == KP_MSG_DELTA ? d.version : b.version;
	kp_delta_free(&d);
	kp_bundle_free(&b);
	return 0;
}

/* What a terminal asks for: getconfig while it holds no version, then getdelta with the
 * version held (answered by a delta, a full bundle, or nothing newer). */
static int fetch_config(struct kp_lg_term *t, kp_tls *tls, struct kp_msg *in, uint8_t **buf)
{
	struct kp_msg out;
	int delta = t->config_version > 0;
	uint64_t version = 0;

	memset(&out, 0, sizeof(out));
	out.type = delta ? KP_MSG_GETDELTA : KP_MSG_GETCONFIG;
	out.config = t->config_version;
	if (exchange(t, tls, &out, in, buf, delta ? KP_LG_GETDELTA : KP_LG_GETCONFIG,
	             KP_MSG_CONFIG, delta ? KP_MSG_DELTA : KP_MSG_CONFIG) != 0)
		return t->error;
	if (!in->has_bundle)
		return 0;
	if (open_answer(t, tls, in, &version) != 0)
		return t->error;
	t->config_version = version;
	if (in->type == KP_MSG_DELTA)
		t->deltas++;
	else
		t->bundles++;
	return 0;
}

/* The first address of the list (from first_addr on) that takes the connection. */
static int connect_any(struct kp_lg_term *t, int *fd)
{
	int rc = KP_TLS_E_NET;
	const char *host = "", *port = "";

	for (int k = 0; k < t->n_addrs; k++) {
		int a = (t->first_addr + k) % t->n_addrs;

		host = t->hosts[a];
		port = t->ports[a];
		errno = 0;
		if ((rc = kp_tcp_connect(host, port, t->timeout_ms, fd)) == 0)
			return 0;
	}
	return fail(t, KP_LG_E_CONNECT, "connect to %s:%s%s: %s", host, port,
	            t->n_addrs > 1 ? " (the last address tried)" : "",
	            errno != 0 ? strerror(errno) : kp_sync_error_text(rc));
}

/* How many records may go in the next batch: all that are due at the tap rate (waiting
 * for the next one when none is), at most KP_SYNC_BATCH_MAX; 0 when the deadline passes. */
static int batch_size(const struct kp_lg_term *t, int sent)
{
	int k = t->n - sent < KP_SYNC_BATCH_MAX ? t->n - sent : KP_SYNC_BATCH_MAX;

	if (t->rate > 0) {
		double due_at = t->t_welcome + (sent + 1) / t->rate, now = kp_lg_now();
		long due;

		if (due_at > now) {
			struct timespec ts;
			double wait = due_at - now;

			if (t->deadline > 0 && due_at > t->deadline)
				return 0;
			ts.tv_sec = (time_t)wait;
			ts.tv_nsec = (long)((wait - (double)ts.tv_sec) * 1e9);
			while (nanosleep(&ts, &ts) != 0 && errno == EINTR)
				;
		}
		due = (long)((kp_lg_now() - t->t_welcome) * t->rate);
		if (due - sent < k)
			k = due - sent > 1 ? (int)(due - sent) : 1;
	}
	if (t->deadline > 0 && kp_lg_now() >= t->deadline)
		return 0;
	return k;
}

static int send_records(struct kp_lg_term *t, kp_tls *tls, struct kp_msg *in, uint8_t **buf)
{
	struct kp_msg out;
	int sent = 0, k;

	while (sent < t->n && (k = batch_size(t, sent)) > 0) {
		memset(&out, 0, sizeof(out));
		out.type = KP_MSG_RECORDS;
		out.items = (struct kp_bytes *)&t->c->cose[sent];
		out.n_items = (size_t)k;
		if (exchange(t, tls, &out, in, buf, KP_LG_RECORDS, KP_MSG_ACK, KP_MSG_ACK) != 0)
			return t->error;
		if (in->acked != (uint64_t)(sent + k))
			return fail(t, KP_LG_E_PROTOCOL, "records %d..%d: ack %llu", sent + 1, sent + k,
			            (unsigned long long)in->acked);
		sent += k;
		t->acked = sent;
		t->t_last_ack = kp_lg_now();
		t->batches++;
		if (t->config_every > 0 && t->batches % t->config_every == 0 &&
		    fetch_config(t, tls, in, buf) != 0)
			return t->error;
	}
	/* and at the end of the session, as a terminal's sync does (one fewer when the last
	 * batch was just followed by one) */
	if (t->config_every > 0) {
		int n_end = t->end_fetches > 0 ? t->end_fetches : 1;

		if (t->batches > 0 && t->batches % t->config_every == 0)
			n_end--;
		for (int i = 0; i < n_end; i++) {
			if (fetch_config(t, tls, in, buf) != 0)
				return t->error;
		}
	}
	return 0;
}

int kp_lg_term_run(struct kp_lg_term *t)
{
	struct kp_msg out, in;
	uint8_t *buf = NULL;
	kp_tls *tls = NULL;
	char err[256];
	int fd = -1, rc;

	memset(&out, 0, sizeof(out));
	memset(&in, 0, sizeof(in));
	t->error = KP_LG_E_NONE;
	t->reason[0] = '\0';
	t->t_connect = kp_lg_now();
	if (connect_any(t, &fd) != 0)
		return t->error;
	err[0] = '\0';
	if ((rc = kp_tls_handshake(&tls, t->conf, fd, t->server_cn, t->timeout_ms, err,
	                           sizeof(err))) != 0)
		return fail(t, rc == KP_TLS_E_TIMEOUT ? KP_LG_E_TIMEOUT : KP_LG_E_TLS, "handshake: %s",
		            err[0] != '\0' ? err : kp_sync_error_text(rc));
	t->t_handshake = kp_lg_now();
	sample(&t->lat[KP_LG_HANDSHAKE], t->t_handshake - t->t_connect);
	out.type = KP_MSG_HELLO;
	snprintf(out.terminal, sizeof(out.terminal), "%s", t->c->id);
	out.config = t->config_version;
	if (exchange(t, tls, &out, &in, &buf, KP_LG_HELLO, KP_MSG_WELCOME, KP_MSG_WELCOME) == 0) {
		t->t_welcome = kp_lg_now();
		if (in.acked != 0)
			fail(t, KP_LG_E_PROTOCOL, "the backend already holds %llu records of %s (each "
			     "run needs terminal ids of its own)", (unsigned long long)in.acked, t->c->id);
		else
			send_records(t, tls, &in, &buf);
	}
	if (t->error == KP_LG_E_NONE || t->error == KP_LG_E_REFUSED) {
		memset(&out, 0, sizeof(out));
		out.type = KP_MSG_BYE;
		kp_msg_send(tls, &out, t->timeout_ms);
	}
	kp_msg_clear(&in);
	free(buf);
	kp_tls_close(tls);
	t->t_done = kp_lg_now();
	return t->error;
}

void kp_lg_term_free(struct kp_lg_term *t)
{
	for (int x = 0; x < KP_LG_NX; x++) {
		free(t->lat[x].v);
		memset(&t->lat[x], 0, sizeof(t->lat[x]));
	}
}

/* ---- figures ---- */

static int cmp_double(const void *a, const void *b)
{
	double x = *(const double *)a, y = *(const double *)b;

	return x < y ? -1 : x > y;
}

double kp_lg_pct(double *v, size_t n, double p)
{
	size_t i;

	if (n == 0)
		return 0;
	qsort(v, n, sizeof(*v), cmp_double);
	i = (size_t)(p / 100.0 * (double)(n - 1) + 0.5);
	return v[i < n ? i : n - 1];
}

/* The array already in path, without its closing bracket (*len 0: none or empty). */
static int json_old(const char *path, char **old, size_t *old_len)
{
	FILE *fp = fopen(path, "r");
	long len;

	*old = NULL;
	*old_len = 0;
	if (fp == NULL)
		return 0;
	fseek(fp, 0, SEEK_END);
	len = ftell(fp);
	fseek(fp, 0, SEEK_SET);
	*old = len >= 0 ? calloc(1, (size_t)len + 1) : NULL;
	if (*old == NULL || fread(*old, 1, (size_t)len, fp) != (size_t)len) {
		fclose(fp);
		free(*old);
		*old = NULL;
		return -1;
	}
	fclose(fp);
	*old_len = (size_t)len;
	/* Cut at the closing bracket; an empty array adds no comma. */
	while (*old_len > 0 && (*old)[*old_len - 1] != ']')
		(*old_len)--;
	if (*old_len == 0 || strchr(*old, '[') == NULL) {
		fprintf(stderr, "%s does not hold a JSON array\n", path);
		free(*old);
		*old = NULL;
		return -1;
	}
	(*old_len)--;
	while (*old_len > 0 && ((*old)[*old_len - 1] == ' ' || (*old)[*old_len - 1] == '\n'))
		(*old_len)--;
	return 0;
}

int kp_metrics_json(const char *path, int append, const struct kp_metric *m, size_t n)
{
	char *old = NULL;
	size_t old_len = 0;
	FILE *fp;

	if (append && json_old(path, &old, &old_len) != 0)
		return -1;
	fp = fopen(path, "w");
	if (fp == NULL) {
		perror(path);
		free(old);
		return -1;
	}
	if (old != NULL) {
		fwrite(old, 1, old_len, fp);
		if (old[old_len - 1] != '[')
			fputc(',', fp);
		fputc('\n', fp);
	} else {
		fputs("[\n", fp);
	}
	for (size_t i = 0; i < n; i++)
		fprintf(fp, "  {\"metric\": \"%s\", \"unit\": \"%s\", \"value\": %.4f}%s\n", m[i].name,
		        m[i].unit, m[i].value, i + 1 < n ? "," : "");
	fputs("]\n", fp);
	free(old);
	return fclose(fp) == 0 ? 0 : -1;
}
