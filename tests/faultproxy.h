/* SPDX-License-Identifier: Apache-2.0 */
/* A hostile network for the tests (issue 19, "A hostile network"): a TCP proxy on
 * 127.0.0.1 that forwards to an upstream port and gives each connection it accepts one fault,
 * drawn from a seeded generator:
 *
 *   pass      forwards everything untouched
 *   drop      the chunk that crosses byte N (in one direction) vanishes; the rest flows
 *   delay     every chunk, both ways, waits 1..delay_max_ms before it is forwarded
 *   duplicate the chunk that crosses byte N is forwarded twice
 *   reorder   the chunk that crosses byte N goes out second half first
 *   cut       forwards exactly N bytes in one direction, then closes both sides
 *   halfopen  forwards N bytes, then goes silent: both sockets stay open, nothing moves,
 *             until hold_ms has passed (each peer sees a live but dead connection)
 *
 * A chunk is what one read() returned, so with TLS above, drop, duplicate and reorder
 * corrupt the record stream the way a broken middlebox would. Connection k's fault comes
 * from splitmix64(splitmix64(seed) + k): the same seed gives the same faults to the same connection
 * numbers (which terminal gets connection k depends on the threads' timing). One thread per
 * connection; fp_stop waits for all of them. */
#ifndef KP_FAULTPROXY_H
#define KP_FAULTPROXY_H

#include <stdint.h>

enum fp_fault { FP_PASS, FP_DROP, FP_DELAY, FP_DUP, FP_REORDER, FP_CUT, FP_HALFOPEN, FP_KINDS };

struct fp_opts {
	int upstream_port;                /* on 127.0.0.1 */
	uint64_t seed;
	int fault_pct;                    /* connections that get a fault other than pass */
	int max_byte;                     /* N is drawn from 0 .. max_byte - 1 */
	int delay_max_ms;
	int hold_ms;                      /* how long a half-open connection is held */
};

struct fp_stats {
	unsigned long conns;
	unsigned long faults[FP_KINDS];   /* connections given each fault */
	unsigned long bit[FP_KINDS];      /* ... whose fault was applied (N was reached) */
};

struct faultproxy;

/* Listens on 127.0.0.1, any free port; NULL if it cannot. */
struct faultproxy *fp_start(const struct fp_opts *o);
int fp_port(const struct faultproxy *p);
void fp_stats(struct faultproxy *p, struct fp_stats *out);
const char *fp_fault_name(enum fp_fault f);
/* Stops accepting, ends every connection (half-open ones too) and frees p. */
void fp_stop(struct faultproxy *p);

#endif
