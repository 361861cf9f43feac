/* SPDX-License-Identifier: Apache-2.0 */
/* Private to terminal/tap/: the engine, the entitlement a card would use (choose.c), the
 * scheme's My Number policy (policy.c), and what engine.c gives the decision (decide.c). */
#ifndef KP_TAP_INT_H
#define KP_TAP_INT_H

#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "kp_tap.h"
#include "kp_fare.h"
#include "kp_civil.h"
#include "kp_store.h"

#define KP_MAX_JPKI_CAS 4

struct kp_tap_engine {
	kp_cert *jpki_cas[KP_MAX_JPKI_CAS];  /* JPKI authentication CAs My Number cards chain to */
	size_t n_jpki_cas;
	kp_store *s;
	struct kp_terminal_cfg cfg;
	const kp_key *key;
	kp_sign_pool *pool;                  /* the caller's, or NULL: records signed by kp_key_sign */
	struct kp_tap_timing timing;         /* of the last record journaled */
	uint8_t token_key[KP_TOKEN_KEY_LEN];
	uint64_t seq;                        /* last committed sequence */
	uint8_t prev[KP_SHA256_LEN];         /* its payload's hash */
	void (*observer)(void *arg, const struct kp_record *rec);
	void *observer_arg;
	struct kp_record pending[2];         /* the records of the open transaction */
	int n_pending;
	char force_event[16];                /* "" or the event the next taps are (quote) */
	void (*log)(void *arg, const char *msg);
	void *log_arg;
};

struct choice {
	const struct kp_ent_view *pass;      /* a period pass: used before any ride */
	const struct kp_elig_view *pass_elig;
	const struct kp_ent_view *best;
	const struct kp_elig_view *elig;     /* the category that allowed it, if any */
	enum kp_reason reason;
};


/* The scheme's My Number policy, as the last bundle said it (syncstore.c, put_policy). A
 * terminal that never applied a bundle (run from load files alone) has no scheme policy:
 * direct taps as before, no age limit. One that applied a bundle before this version
 * wrote the policy has the default one, and data of unknown age (stale until the next
 * bundle, which the backend sends at least every quarter of the maximum age). */
struct policy {
	int synced, known, direct;
	int64_t rides, value, max_age_s, issued_ms;
	uint64_t seq;
	char products[KP_POLICY_LIST_MAX][KP_ID_MAX + 1];
	size_t n_products;
	char categories[KP_POLICY_LIST_MAX][KP_ID_MAX + 1];
	size_t n_categories;
};

void tap_log(const kp_tap_engine *e, const char *fmt, ...)
	__attribute__((format(printf, 2, 3)));
int tap_journal(kp_tap_engine *e, struct kp_record *rec);
void tap_set_reason(struct kp_record *rec, enum kp_reason reason);
void tap_outcome_from(struct kp_tap_outcome *out, const struct kp_record *rec,
                      enum kp_tap_kind kind);
int tap_finish(kp_tap_engine *e, int rc, const uint8_t prev_before[KP_SHA256_LEN]);
void tap_until_text(const struct kp_terminal_cfg *cfg, int64_t now_ms, int64_t until_ms,
                    char *out, size_t cap);
struct choice tap_choose(const struct kp_ent_view *v, size_t n, const struct kp_elig_view *el,
                         size_t n_el, int64_t now, int *stored, int *commuter);
int tap_gather(kp_tap_engine *e, const uint8_t token[KP_TOKEN_LEN], const char *operator_id,
               const char *route, int64_t now, struct kp_ent_view *ents, size_t *n,
               struct kp_elig_view *el, size_t *n_el);
int tap_policy_load(kp_tap_engine *e, struct policy *p);
int tap_policy_stale(kp_tap_engine *e, const struct policy *p, int64_t now, int *stale);
int tap_policy_lists(const char (*ids)[KP_ID_MAX + 1], size_t n, const char *id);

#endif
