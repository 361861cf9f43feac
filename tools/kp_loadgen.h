/* SPDX-License-Identifier: Apache-2.0 */
/* Simulated terminals over the real protocol (tools/loadgen.c): what kippu-loadgen and
 * kippu-bench-sync share. Each terminal's chain of signed records is built in memory before
 * the clock starts (kp_record + kp_record_encode + kp_cose_sign1, seq 1..n, prev = SHA-256
 * of the previous payload, kid = terminal id = certificate CN); one thread per terminal
 * then speaks the protocol by hand over mutual TLS (hello -> welcome, records of up to
 * KP_SYNC_BATCH_MAX -> ack ..., getconfig or getdelta every M batches, bye), timing each
 * exchange and classifying what goes wrong. */
#ifndef KP_LOADGEN_H
#define KP_LOADGEN_H

#include <stddef.h>
#include <stdint.h>
#include "kp_proto.h"

/* Monotonic seconds. */
double kp_lg_now(void);

/* The mix of record kinds in a chain, as weights (at least one above 0): taps accepted on
 * an n-ride ticket, a pass and stored value, taps refused, and link requests (kind "link"). */
struct kp_lg_mix { int ride, pass, stored, refused, link; };
#define KP_LG_MIX_DEFAULT { 70, 15, 5, 10, 0 }
/* "ride=70,pass=15,stored=5,refused=10,link=0" (any subset; the others 0): 0, or -1 with
 * what is wrong in err. */
int kp_lg_mix_parse(const char *s, struct kp_lg_mix *mix, char *err, size_t err_cap);

/* One terminal's pre-signed chain. */
struct kp_lg_chain {
	char id[KP_ID_MAX + 1];         /* the terminal id: its certificate's CN and the kid */
	char key_path[512];             /* its private key */
	int n;
	uint8_t **payload;
	size_t *payload_len;
	struct kp_bytes *cose;          /* what goes on the wire */
};

/* The payloads of records 1..n (n >= 0) of terminal id (salt varies the cards), hash-chained,
 * the first at time t0_ms and one every 2 s; signing comes later. 0, or a KP_SYNC_E_ code. */
int kp_lg_chain_encode(struct kp_lg_chain *c, const char *id, int salt, int n, int64_t t0_ms,
                       const struct kp_lg_mix *mix);
/* Signs every chain's records on `threads` threads at once (chunks of 250 records, each with
 * its own copy of the key, so one long chain uses every core too). 0, or -1 with err. */
int kp_lg_chains_sign(struct kp_lg_chain *chains, int n_chains, int threads, char *err,
                      size_t err_cap);
void kp_lg_chain_free(struct kp_lg_chain *c);

/* A new key and a terminal certificate (CN id, `days` days) signed by the CA, written to
 * dir/ID.key and dir/ID.crt. 0, or -1 with err. */
int kp_lg_mint(const kp_key *ca_key, const kp_cert *ca_cert, const char *dir, const char *id,
               int days, char *err, size_t err_cap);

/* The exchanges timed, and the kinds of errors counted. */
enum kp_lg_exchange { KP_LG_HANDSHAKE, KP_LG_HELLO, KP_LG_RECORDS, KP_LG_GETCONFIG,
                      KP_LG_GETDELTA, KP_LG_NX };
enum kp_lg_error {
	KP_LG_E_NONE,
	KP_LG_E_CONNECT,     /* no address took the connection */
	KP_LG_E_TLS,         /* the handshake failed (certificate, CA, name) */
	KP_LG_E_TIMEOUT,     /* no answer within the timeout */
	KP_LG_E_REFUSED,     /* the backend refused a record (`refused`, with its reason) */
	KP_LG_E_BACKEND,     /* the backend said `error` (e.g. terminal not registered) */
	KP_LG_E_PROTOCOL,    /* a message not as the protocol says, a closed connection */
	KP_LG_NE
};
const char *kp_lg_exchange_name(enum kp_lg_exchange x);
const char *kp_lg_error_name(enum kp_lg_error e);

/* Latencies in seconds. */
struct kp_lg_samples { double *v; size_t n, cap; };

/* One simulated terminal: the fields above `out` are set by the caller. */
struct kp_lg_term {
	const struct kp_lg_chain *c;
	const kp_tls_conf *conf;        /* client: CA, the terminal's certificate and key */
	const char *const *hosts;       /* backend addresses, tried in turn from first_addr */
	const char *const *ports;
	int n_addrs, first_addr;
	const char *server_cn;          /* the backend certificate's CN */
	int timeout_ms;                 /* per connect and per exchange */
	int n;                          /* records to send (<= c->n) */
	double rate;                    /* records/s (0: as fast as the backend takes them) */
	int config_every;               /* a bundle fetch every M record batches and at the end
	                                   of the session (0: never): getconfig while no version
	                                   is held, then getdelta */
	int end_fetches;                /* fetches at the end of the session (0 counts as 1) */
	double deadline;                /* kp_lg_now() after which no new batch starts (0: none) */
	uint64_t config_version;        /* the bundle version held; updated by each bundle */
	/* out */
	double t_connect, t_handshake, t_welcome, t_last_ack, t_done;
	int acked, batches, bundles, deltas;
	struct kp_lg_samples lat[KP_LG_NX];
	enum kp_lg_error error;
	char reason[160];               /* what went wrong, in plain words */
};

/* Runs one terminal to its end: all its records acked, its deadline, or its first error
 * (then error and reason say what). Returns t->error. */
int kp_lg_term_run(struct kp_lg_term *t);
void kp_lg_term_free(struct kp_lg_term *t);

/* The p-th percentile (nearest rank) of n samples, which it sorts; 0 when n is 0. */
double kp_lg_pct(double *v, size_t n, double p);

/* Figures as a JSON array of {"metric", "unit", "value"}, or added to the array already in
 * path (append; a new array if path does not exist): what `make bench BENCH_JSON=...` reads. */
struct kp_metric { const char *name, *unit; double value; };
int kp_metrics_json(const char *path, int append, const struct kp_metric *m, size_t n);

#endif
