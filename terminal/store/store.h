/* Internal to terminal/: the store's operations on the tap path and the journal's rows.
 * Only the store modules (store.c, journal.c, syncstore.c, fares*.c) include <sqlite3.h>;
 * the rest of terminal/ calls these. */
#ifndef KP_TERMINAL_STORE_H
#define KP_TERMINAL_STORE_H

#include "kp_terminal.h"

#define KP_MAX_CARD_ENTITLEMENTS 32

#define KP_MAX_CARD_ELIGIBILITY 8

struct kp_ent_view {
	struct kp_entitlement e;
	int valid_here;                  /* the product is valid on the asked operator */
	char category[KP_ID_MAX + 1];    /* the product's rider category, "" = anyone */
	int stored;                      /* stored value: e.rides_left is the balance */
	int period_days;                 /* period pass of this many service days, else 0 */
	int first_use;                   /* = e.first_use */
	int commuter;                    /* a commuter pass (its stops decide where) */
	int route_ok;                    /* the product's routes/networks hold the asked route */
};

int kp_store_is_denylisted(kp_store *s, const uint8_t token[KP_TOKEN_LEN], int *listed);
int kp_store_last_tap(kp_store *s, const uint8_t token[KP_TOKEN_LEN], int64_t *time_ms,
                      int *found);
int kp_store_set_last_tap(kp_store *s, const uint8_t token[KP_TOKEN_LEN], int64_t time_ms,
                          uint64_t seq);
/* Up to cap entitlements of a token (n gets how many), each marked valid on operator_id. */
int kp_store_card_entitlements(kp_store *s, const uint8_t token[KP_TOKEN_LEN],
                               const char *operator_id, struct kp_ent_view *out, size_t cap,
                               size_t *n);
/* The same, also marking route_ok for route (NULL: not checked, route_ok = 1). */
int kp_store_card_entitlements_at(kp_store *s, const uint8_t token[KP_TOKEN_LEN],
                                  const char *operator_id, const char *route,
                                  struct kp_ent_view *out, size_t cap, size_t *n);
int kp_store_card_eligibility(kp_store *s, const uint8_t token[KP_TOKEN_LEN],
                              struct kp_elig_view *out, size_t cap, size_t *n);
/* Takes one ride: fails (KP_E_DB) unless rides_left was still `expect`. */
int kp_store_take_ride(kp_store *s, const uint8_t token[KP_TOKEN_LEN], int64_t id,
                       int64_t expect);
/* Deducts amount (minor units) from a stored-value balance: fails (KP_E_DB) unless the
 * balance was still `expect` and covers it. */
int kp_store_charge(kp_store *s, const uint8_t token[KP_TOKEN_LEN], int64_t id, int64_t expect,
                    int64_t amount);

/* Starts a first-use pass: sets its validity; fails (KP_E_DB) unless it was still
 * waiting for its first use. */
int kp_store_activate(kp_store *s, const uint8_t token[KP_TOKEN_LEN], int64_t id,
                      int64_t from_ms, int64_t until_ms);

/* Records a ride taken by journal record seq until the backend acknowledges it. */
int kp_store_pending_use(kp_store *s, uint64_t seq, int64_t ent_id, int64_t rides);

/* A card's fare state (terminal/fare/FARES.md): its open journey, its last stored-value leg
 * and transfer chain, and its cap spending. Strings "" when absent. */
struct kp_fare_state {
	int open;                        /* a journey tapped on and not yet off */
	int64_t open_ms;
	uint64_t open_seq;
	char open_operator[KP_ID_MAX + 1], open_route[KP_ID_MAX + 1], open_stop[KP_ID_MAX + 1];
	int64_t open_ent;                /* entitlement that paid it at tap-on (pass, ride) */
	char open_product[KP_ID_MAX + 1];
	int open_paid;                   /* 1: paid at tap-on; 0: charged at tap-off */
	int has_leg;                     /* a stored-value leg was charged */
	int64_t leg_on_ms, leg_off_ms;
	char leg_operator[KP_ID_MAX + 1];
	char leg_feed[KP_ID_MAX + 1];
	char leg_group[KP_FARE_ID_MAX + 1];  /* v2 leg group or v1 fare id */
	int64_t leg_paid;                /* what that leg cost the rider (before caps) */
	int64_t chain_start_ms;          /* start of the chain's first leg */
	char chain_fare[KP_FARE_ID_MAX + 1]; /* v1 fare id of the chain's first leg */
	int chain_transfers;
	int has_run;                     /* the last leg was reached by a v2 rule's run */
	struct kp_fare_run run;
	int64_t day_id, day_spent, month_id, month_spent;
	char last_operator[KP_ID_MAX + 1], last_stop[KP_ID_MAX + 1];  /* last accepted tap */
	/* not stored: the other terminals' spending (kp_fare_remote), added for the caps */
	int64_t remote_day_id, remote_day_spent, remote_month_id, remote_month_spent;
};
int kp_store_fare_state(kp_store *s, const uint8_t token[KP_TOKEN_LEN], struct kp_fare_state *st,
                        int *found);
int kp_store_put_fare_state(kp_store *s, const uint8_t token[KP_TOKEN_LEN],
                            const struct kp_fare_state *st);
/* Up to cap cards with a journey open here that the other terminals saw the card after
 * (kp_fare_remote.last_ms later than its tap-on). */
int kp_store_superseded_journeys(kp_store *s, uint8_t (*tokens)[KP_TOKEN_LEN], size_t cap,
                                 size_t *n);
/* Up to cap cards whose journey opened before before_ms. */
int kp_store_open_journeys(kp_store *s, int64_t before_ms, uint8_t (*tokens)[KP_TOKEN_LEN],
                           size_t cap, size_t *n);

/* Direct My Number taps of a linkage in service day day_id (0, 0 for another day), and
 * adding to them (a new day starts again from these). */
int kp_store_direct_use(kp_store *s, const uint8_t token[KP_TOKEN_LEN], int64_t day_id,
                        int64_t *rides, int64_t *value);
int kp_store_add_direct_use(kp_store *s, const uint8_t token[KP_TOKEN_LEN], int64_t day_id,
                            int64_t rides, int64_t value);
/* The latest time of the records journaled after after_seq (0: none). */
int kp_store_journal_latest_after(kp_store *s, uint64_t after_seq, int64_t *time_ms);
int kp_store_journal_head(kp_store *s, uint64_t *seq, uint8_t hash[KP_SHA256_LEN]);
int kp_store_journal_append(kp_store *s, const struct kp_record *rec,
                            const uint8_t *payload, size_t payload_len,
                            const uint8_t *cose, size_t cose_len,
                            const uint8_t hash[KP_SHA256_LEN]);

#endif
