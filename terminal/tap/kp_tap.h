/* SPDX-License-Identifier: Apache-2.0 */
/* kippu terminal, tap/: the terminal's settings, the tap decision and its outcome, the
 * sweep of open journeys, service days, the rider's texts of an outcome. Depends on card/,
 * fare/ and store/. */
#ifndef KP_TAP_H
#define KP_TAP_H

#include "kp_card.h"
#include "kp_store.h"
#include "kp_fare.h"

/* ---- the tap ---- */

enum kp_tap_kind { KP_TAP_ACCEPTED = 1, KP_TAP_REFUSED = 2, KP_TAP_ALREADY = 3 };

struct kp_tap_outcome {
	enum kp_tap_kind kind;
	char reason[KP_ID_MAX + 1];      /* "ok", "denylisted", "exhausted", ... */
	char product[KP_ID_MAX + 1];
	int64_t entitlement;
	int64_t rides_left;              /* -1 when not applicable; stored value: the balance */
	int64_t amount;                  /* fare charged to stored value (minor unit), else 0 */
	uint64_t seq;                    /* journal record written */
	char category[KP_ID_MAX + 1];    /* rider category applied ("" none) */
	int linked;                      /* the pass or category came through a linkage */
	int warn_days;                   /* eligibility ends within the warning window: days
	                                  * left; -1 otherwise */
	int64_t valid_until_ms;          /* period pass used: end of its validity, else 0 */
	char until_text[24];             /* that end in local time ("04:00" within a day,
	                                  * else "2026-11-21 04:00"), "" otherwise */
	char event[KP_ID_MAX + 1];       /* "tap", "tap_on", "tap_off" ("" for refusals
	                                  * without a card) */
	int balance;                     /* rides_left is a stored-value balance */
};

typedef struct kp_tap_engine kp_tap_engine;
/* The engine owns the prepared statements of the tap path and the journal head. */
int  kp_tap_engine_open(kp_tap_engine **out, kp_store *s, const struct kp_terminal_cfg *cfg,
                        const kp_key *key, const uint8_t token_key[KP_TOKEN_KEY_LEN]);
/* The same; err says why it failed (a jpki_ca that cannot be loaded). */
int  kp_tap_engine_open_err(kp_tap_engine **out, kp_store *s, const struct kp_terminal_cfg *cfg,
                            const kp_key *key, const uint8_t token_key[KP_TOKEN_KEY_LEN],
                            char *err, size_t err_cap);
void kp_tap_engine_close(kp_tap_engine *e);
/* Where the engine's log lines go (a tap not recorded, a fare not found, a card read or a
 * My Number card refused; never a card id): fn gets one line without a newline, on the
 * deciding thread. NULL (the default): nowhere. */
void kp_tap_engine_log(kp_tap_engine *e, void (*fn)(void *arg, const char *msg), void *arg);
/* Decides for a card token at time now_ms, journals and commits (signed) before returning. */
int  kp_tap_decide(kp_tap_engine *e, const uint8_t token[KP_TOKEN_LEN], int64_t now_ms,
                   struct kp_tap_outcome *out);
/* The same for a My Number card tapped directly (token: its linkage token): the scheme's
 * policy for direct taps applies (direct-not-allowed, direct-limit; bundle format 4). */
int  kp_tap_decide_mynumber(kp_tap_engine *e, const uint8_t token[KP_TOKEN_LEN], int64_t now_ms,
                            struct kp_tap_outcome *out);
/* Journals a refusal that has no entitlement lookup (card unreadable, unsupported card);
 * token may be NULL. */
int  kp_tap_refuse(kp_tap_engine *e, const uint8_t *token, const char *reason, int64_t now_ms,
                   struct kp_tap_outcome *out);
/* Identifies the card the reader activated (kp_card_identify) with the engine's token key,
 * JPKI CAs and card timeout; flags: KP_CARD_ID_BALANCE, KP_CARD_ID_CERT. Nothing is
 * journaled; why a My Number card is refused is logged. */
int  kp_tap_engine_identify(kp_tap_engine *e, struct kp_reader *r, const struct kp_card_info *info,
                            int64_t now_ms, unsigned flags, struct kp_card_id *out);
/* The whole tap for an activated card: identify, derive token, read, decide, journal. */
int  kp_tap_card(kp_tap_engine *e, struct kp_reader *r, const struct kp_card_info *info,
                 int64_t now_ms, struct kp_tap_outcome *out);
/* Reads a My Number card (JPKI only) and derives its linkage token; on failure *reason
 * is the refusal to journal ("unsupported-card", "card-invalid", "card-expired",
 * "card-not-yet-valid", "card-removed", "card-error"). *cert (if not NULL) gets the certificate for strong mode. */
int  kp_tap_identify_mynumber(kp_tap_engine *e, struct kp_reader *r, int64_t now_ms,
                              uint8_t linkage[KP_TOKEN_LEN], kp_cert **cert,
                              const char **reason);
/* Journals a link request (kind "link": this transit IC card to this linkage); the backend
 * accepts or refuses it on the next sync. */
int  kp_tap_link(kp_tap_engine *e, const uint8_t card[KP_TOKEN_LEN],
                 const uint8_t linkage[KP_TOKEN_LEN], int64_t now_ms,
                 struct kp_tap_outcome *out);
/* Closes the journeys opened before the start of now's service day (no tap-off): each
 * is charged its maximum fare as of the end of its service day, journaled with event
 * no_tap_off. Call at idle; *closed = how many (at most 64 per call). */
int  kp_tap_sweep(kp_tap_engine *e, int64_t now_ms, size_t *closed);
/* Where the next taps happen and, for `kippuctl fares quote`, what they are: event NULL
 * or "" lets the operator's fare mode decide, else "tap", "tap_on" or "tap_off". */
int  kp_tap_engine_set_place(kp_tap_engine *e, const char *operator_id, const char *route,
                             const char *stop, int utc_offset_s, const char *event);
/* Journals a record the caller filled (result, reason, token, driver, ...; e.g. a driver's
 * override or shift event from the console) as `kind` ("tap" or "shift"): seq, terminal,
 * operator, route, stop and prev are set here; signed and committed before it returns. */
int  kp_tap_journal(kp_tap_engine *e, struct kp_record *rec, const char *kind);
/* Calls fn (from the deciding thread, after the commit) with every record the engine
 * journals, in sequence order; fn must not call back into the engine. NULL: none. */
void kp_tap_engine_observe(kp_tap_engine *e, void (*fn)(void *arg, const struct kp_record *rec),
                           void *arg);
/* Signs the engine's records from pool (kp_sign_pool.h: a random k computed ahead, each
 * used once; kp_key_sign when the pool is empty). The pool stays the caller's: it refills
 * it when idle (kp_sign_pool_refill) and frees it after the engine. NULL: no pool. */
void kp_tap_engine_set_pool(kp_tap_engine *e, kp_sign_pool *pool);
/* How the last record journaled was signed: the time kp_cose_sign1 took (monotonic clock,
 * nanoseconds) and whether the pool signed it; and the time of its durable commit. */
struct kp_tap_timing {
	int64_t sign_ns;
	int pooled;
	int64_t commit_ns;
};
void kp_tap_engine_timing(const kp_tap_engine *e, struct kp_tap_timing *out);
/* The configuration the engine was opened with. */
const struct kp_terminal_cfg *kp_tap_engine_cfg(const kp_tap_engine *e);
/* The validity of a period pass of `days` service days activated at now_ms: from the start
 * of now's service day (which ends at cfg's service_day_end, local time) to the end of the
 * service day days-1 later. */
void kp_service_days(const struct kp_terminal_cfg *cfg, int64_t now_ms, int days,
                     int64_t *from_ms, int64_t *until_ms);
/* What the rider reads for an outcome. */
const char *kp_tap_reason_text(const char *reason);

#endif
