/* SPDX-License-Identifier: Apache-2.0 */
/* kippu crypto: offline/online ES256 signing. Almost all of an ECDSA signature is the
 * scalar multiplication k·G, which does not depend on the message: the pool computes it
 * ahead (kp_sign_pool_refill, called while the terminal is idle), so that a signature
 * made from the pool costs a few modular multiplications.
 *
 * Nonces: each entry comes from a fresh k drawn from the CSPRNG (kp_random); k itself is
 * not kept, only r = (k·G).x mod n and blinded forms of k^-1 and k^-1·r·d (sign_pool.c
 * says how, and what is constant-time). The entries live in memory only: one mapping,
 * locked in RAM when the process may lock memory (never swapped), left out of core dumps
 * and not inherited by a forked child; an entry is copied out and wiped in the pool
 * before the signature is computed, so no k can sign twice. A crash or restart loses the
 * pool (nothing of it is on disk) and the next process computes fresh nonces: the same k
 * is never used across a crash either. kp_sign_pool_free wipes every entry left.
 *
 * Signatures from the pool are ordinary ES256 (r || s, any s in [1, n-1], not normalised
 * to low s) with a random k: unlike kp_key_sign they are not deterministic (RFC 6979).
 * When the pool is empty (a burst of taps) kp_sign_pool_sign falls back to kp_key_sign.
 *
 * Threads: one thread at a time per pool (the one that uses its key). */
#ifndef KP_SIGN_POOL_H
#define KP_SIGN_POOL_H

#include <stddef.h>
#include <stdint.h>
#include "kp_crypto_err.h"
#include "kp_key.h"

#define KP_SIGN_POOL_DEFAULT 64          /* entries: a burst of 64 taps signs from the pool */
#define KP_SIGN_POOL_MAX     4096
#define KP_SIGN_POOL_ENTRY   128         /* bytes per entry: r, k^-1·b, k^-1·r·d·b, b^-1 */
/* How the terminal refills when idle (terminal/app/main.c; the bench does the same): at
 * most this many entries per idle turn of its loop, so that a card presented meanwhile
 * waits for that much work at most, and turns of this many ms while the pool is not full. */
#define KP_SIGN_POOL_IDLE_BATCH   4
#define KP_SIGN_POOL_IDLE_WAIT_MS 10

typedef struct kp_sign_pool kp_sign_pool;

/* An empty pool of `capacity` entries (1..KP_SIGN_POOL_MAX) for key (ECDSA P-256), which
 * must outlive the pool. KP_CRYPTO_E_INVAL, _E_KEYTYPE, _E_NOMEM. */
int  kp_sign_pool_open(kp_sign_pool **out, const kp_key *key, size_t capacity);
/* Computes at most `max` new entries (one k·G each, about as long as one kp_key_sign),
 * stopping when the pool is full; *added (may be NULL) says how many. Bounded work: call
 * it when idle with a small max. */
int  kp_sign_pool_refill(kp_sign_pool *p, size_t max, size_t *added);
/* ES256 over hash with an entry taken out of the pool; when it is empty (or p is NULL,
 * or in a forked child), kp_key_sign. *pooled (may be NULL): 1 when the pool signed. */
int  kp_sign_pool_sign(kp_sign_pool *p, const kp_key *key, const uint8_t hash[KP_SHA256_LEN],
                       uint8_t sig[KP_ES256_SIG_LEN], int *pooled);
/* Entries ready (0 for NULL). */
size_t kp_sign_pool_count(const kp_sign_pool *p);

struct kp_sign_pool_stats {
	size_t count, capacity;
	size_t bytes;                        /* the entries' mapping (whole pages) */
	int locked;                          /* mlock succeeded: never swapped */
	uint64_t computed;                   /* entries made since open */
	uint64_t pooled;                     /* signatures from the pool */
	uint64_t fallback;                   /* signatures by kp_key_sign (pool empty) */
};
void kp_sign_pool_stats(const kp_sign_pool *p, struct kp_sign_pool_stats *st);
/* For tests: the entries' memory (capacity entries of KP_SIGN_POOL_ENTRY bytes; the slots
 * from count on are all zero). */
const uint8_t *kp_sign_pool_memory(const kp_sign_pool *p, size_t *len);
/* Wipes every entry and frees the pool; NULL is fine. */
void kp_sign_pool_free(kp_sign_pool *p);

#endif
