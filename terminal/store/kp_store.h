/* SPDX-License-Identifier: Apache-2.0 */
/* kippu terminal, store/: the SQLite store (open, migrate, statement cache), the catalog and
 * entitlements, the fare engine's tables, the journal, the sync state and the bundle's
 * apply path. Depends on card/ (error codes, token sizes) and proto/. */
#ifndef KP_STORE_H
#define KP_STORE_H

#include "kp_card.h"
#include "kp_proto.h"
#include "kp_bundle.h"

/* ---- the store (SQLite) ---- */

typedef struct kp_store kp_store;

#define KP_SCHEMA_VERSION 14

int  kp_store_open(kp_store **out, const char *path);
/* The same; err says why it failed ("store PATH: SQLite's message"). */
int  kp_store_open_err(kp_store **out, const char *path, char *err, size_t err_cap);
/* How kp_store_open_mode opens: CREATE makes a missing database (as kp_store_open does);
 * EXISTING and READONLY never do ("no such database: PATH" in err), and READONLY neither
 * writes nor migrates. Every mode refuses a database that is not a terminal's, by its
 * tables ("PATH is a backend database, not a terminal database"). */
enum { KP_STORE_CREATE, KP_STORE_EXISTING, KP_STORE_READONLY };
int  kp_store_open_mode(kp_store **out, const char *path, int mode, char *err, size_t err_cap);
/* Opens without migrating past `version` (tests build older databases with it). */
int  kp_store_open_at(kp_store **out, const char *path, int version);
void kp_store_close(kp_store *s);
const char *kp_store_errmsg(const kp_store *s);
int  kp_store_schema_version(kp_store *s, int *version);
/* How long a statement waits for another connection's lock (default 5000 ms). */
void kp_store_set_busy_timeout(kp_store *s, int ms);
/* Runs a passive WAL checkpoint: call while the terminal is idle. */
int  kp_store_idle(kp_store *s);
/* The settings a committed tap's durability rests on, as the store's connection reads
 * them back: journal_mode ("wal"), synchronous (2 = FULL), foreign_keys (1 = on). */
int  kp_store_pragmas(kp_store *s, char *journal_mode, size_t cap, int *synchronous,
                      int *foreign_keys);

int kp_store_meta_set(kp_store *s, const char *key, const char *value);
/* Copies the value into out; KP_E_INVAL if missing. */
int kp_store_meta_get(kp_store *s, const char *key, char *out, size_t cap);

int kp_store_begin(kp_store *s);
int kp_store_commit(kp_store *s);
void kp_store_rollback(kp_store *s);

int kp_store_put_operator(kp_store *s, const char *id, const char *name);
/* *found = 1 when the store has an operator (product: 0) or a product (1) with this id. */
int kp_store_defined(kp_store *s, int product, const char *id, int *found);
int kp_store_put_product(kp_store *s, const char *id, const char *name, int rides,
                         const char *const *operators, size_t n_operators);
/* A product only riders of `category` may use ("" or NULL: anyone). */
int kp_store_put_product_cat(kp_store *s, const char *id, const char *name, int rides,
                             const char *category, const char *const *operators,
                             size_t n_operators);
/* A stored-value product (scheme account in the currency's minor unit): its entitlements'
 * rides_left is the balance, charged the published fare at a tap. */
int kp_store_put_product_stored(kp_store *s, const char *id, const char *name,
                                const char *const *operators, size_t n_operators);
/* A period pass valid `days` (1..366) service days on the operators; "monthly" is 30. */
int kp_store_put_product_period(kp_store *s, const char *id, const char *name, int days,
                                const char *const *operators, size_t n_operators);
/* *days = the product's period in service days, 0 if it is no period pass; KP_E_INVAL if
 * there is no such product. */
int kp_store_product_period(kp_store *s, const char *id, int *days);
/* *stored = 1 when product id is stored value; KP_E_INVAL if there is no such product. */
int kp_store_product_stored(kp_store *s, const char *id, int *stored);
/* Restricts an existing product to riders of `category`. */
int kp_store_run_product_category(kp_store *s, const char *product, const char *category);
/* A rider category a card or a linkage holds; via: the linkage it came through, or NULL. */
int kp_store_put_eligibility(kp_store *s, const uint8_t token[KP_TOKEN_LEN], const char *category,
                             int64_t from_ms, int64_t until_ms, const uint8_t *via);
/* An operator's discount for a rider category: the rider pays `percent` (0..100) of the
 * adult fare, rounded to a multiple of `unit` (1..100000) minor units. */
enum kp_rounding { KP_ROUND_DOWN = 0, KP_ROUND_UP = 1, KP_ROUND_NEAREST = 2 };
struct kp_discount {
	int percent;
	enum kp_rounding rounding;
	int64_t unit;
};
/* Adds or replaces operator's rule for category; KP_E_INVAL if out of range. */
int kp_store_put_discount(kp_store *s, const char *operator_id, const char *category,
                          const struct kp_discount *d);
/* *found = 1 and *d filled when operator has a rule for category. */
int kp_store_discount(kp_store *s, const char *operator_id, const char *category,
                      struct kp_discount *d, int *found);
/* The discounted fare: adult * percent / 100 rounded exactly (integers only) to a
 * multiple of unit, never more than adult; -1 if an argument is out of range. */
int64_t kp_discount_apply(int64_t adult, const struct kp_discount *d);
/* Copies the database at src_path (opened read-only, never migrated) to a new file. */
int kp_store_snapshot(const char *src_path, const char *dst_path, char *err, size_t err_cap);
/* A throw-away store (quote's copy): commits need not reach the disk. */
int kp_store_scratch(kp_store *s);

/* GTFS ids in fare rows, and the text naming a fare rule. */
#define KP_FARE_ID_MAX 127
#define KP_FARE_MSG_MAX 512

/* A run: consecutive transfers matched by rules of one (from_leg_group_id, to_leg_group_id)
 * pair as the rules write it ("" = any). GTFS measures the duration_limit of such a rule
 * from the run's first leg, not from the previous one. */
struct kp_fare_run {
	char from_group[KP_FARE_ID_MAX + 1], to_group[KP_FARE_ID_MAX + 1];
	int64_t on_ms, off_ms;              /* the run's first leg's departure and arrival taps */
};

/* ---- fare engine configuration (terminal/fare/FARES.md) ---- */
/* The operator's taps are priced by feed_id; distance: tap-on/tap-off, else flat. */
int kp_store_put_operator_fare(kp_store *s, const char *operator_id, const char *feed_id,
                               int distance);
/* *found = 0 when the operator has none (the terminal's config then decides). */
int kp_store_operator_fare(kp_store *s, const char *operator_id, char *feed, size_t cap,
                           int *distance, int *found);
enum kp_cap_period { KP_CAP_DAY = 0, KP_CAP_MONTH = 1 };
/* A fare cap for riders of category ("" = riders without one, adults). */
int kp_store_put_fare_cap(kp_store *s, const char *category, enum kp_cap_period period,
                          int64_t amount);
int kp_store_fare_cap(kp_store *s, const char *category, enum kp_cap_period period,
                      int64_t *amount, int *found);
struct kp_transfer_rule {
	char from_operator[KP_ID_MAX + 1];  /* "*" = any */
	char to_operator[KP_ID_MAX + 1];    /* "*" = any */
	int within_s;                       /* from the end of a leg to the start of the next */
	int max_transfers;                  /* in a row, 1..100 */
	int64_t off;                        /* minor units off the next leg; -1 = free */
};
int kp_store_put_transfer_rule(kp_store *s, const struct kp_transfer_rule *r);
/* The most specific rule from -> to (exact before "*"); *found = 0 if none. */
int kp_store_transfer_rule(kp_store *s, const char *from_operator, const char *to_operator,
                           struct kp_transfer_rule *r, int *found);
#define KP_COMMUTER_MAX_STOPS 64
/* A commuter pass on route ("*" = any) between stops[0] and stops[n-1], listed in order. */
int kp_store_put_product_commuter(kp_store *s, const char *id, const char *name,
                                  const char *route, const char *const *stops, size_t n_stops,
                                  const char *const *operators, size_t n_operators);
/* Limits a product to a route or a network (kind "route" or "network"; GTFS ids of the
 * operators' feeds) beyond its operators; a product with none is valid on every route. */
int kp_store_put_product_scope(kp_store *s, const char *product, const char *kind,
                               const char *scope_id);
/* A commuter pass's route and stops; *n = 0 when the product is no commuter pass. */
int kp_store_product_commuter(kp_store *s, const char *id, char route[KP_ID_MAX + 1],
                              char stops[][KP_ID_MAX + 1], size_t cap, size_t *n);

/* What the backend knows of a card from the other terminals of the scheme (in the bundle,
 * computed per receiving terminal from the others' records; terminal/fare/FARES.md, "Across
 * terminals"). Strings "" and times 0 when absent. */
/* What the backend knows of a card from the other terminals: the bundle's own row
 * (struct kp_bundle_remote, kp_bundle.h), kept as it came in fare_remote, whose columns are
 * its field table's. The old name stays for the store's callers. */
#define kp_fare_remote kp_bundle_remote
/* Replaces every card's remote fare state (inside the bundle's transaction). */
int kp_store_clear_fare_remote(kp_store *s);
int kp_store_put_fare_remote(kp_store *s, const struct kp_fare_remote *r);
int kp_store_fare_remote(kp_store *s, const uint8_t token[KP_TOKEN_LEN],
                         struct kp_fare_remote *r, int *found);

struct kp_elig_view {
	char category[KP_ID_MAX + 1];
	int64_t valid_from_ms, valid_until_ms;
	int has_via;
	uint8_t via[KP_TOKEN_LEN];
};
struct kp_entitlement {
	int64_t id;
	uint8_t token[KP_TOKEN_LEN];
	char product[KP_ID_MAX + 1];
	int64_t rides_left;
	int64_t valid_from_ms, valid_until_ms;  /* [from, until) */
	int first_use;                   /* period pass not yet started: [from, until) is the
	                                  * window in which its first tap may activate it */
};
int kp_store_put_entitlement(kp_store *s, const struct kp_entitlement *e);
int kp_store_put_denylist(kp_store *s, const uint8_t token[KP_TOKEN_LEN], const char *reason,
                          int64_t added_ms);
int kp_store_get_entitlement(kp_store *s, const uint8_t token[KP_TOKEN_LEN], int64_t id,
                             struct kp_entitlement *e);
/* *taken = 1 if entitlement id is held by a card other than token (load files: an id names
 * one entitlement; a bundle's ids come from the backend, unique already). Scans the table:
 * for load lines, not for bundles. */
int kp_store_entitlement_id_taken(kp_store *s, int64_t id, const uint8_t token[KP_TOKEN_LEN],
                                  int *taken);
/* Counts rows of a table named by the caller from a fixed list (tests, tools). */
int kp_store_count(kp_store *s, const char *table, int64_t *n);

/* ---- sync ---- */

/* What the backend acknowledged, the bundle version applied, the last journal seq. */
int kp_store_sync_state(kp_store *s, uint64_t *acked, uint64_t *config_version, uint64_t *head);
/* The chunked snapshot being fetched (PROTOCOL.md section 5.5): its SHA-256, its chunk count
 * and how many chunks are staged (all 0: none). */
int kp_store_snapshot_staged(kp_store *s, uint8_t snap[KP_SHA256_LEN], uint32_t *n_chunks,
                             uint32_t *staged);
/* The journal's identity (PROTOCOL.md section 4.1; all zeros: the legacy journal). */
int kp_store_journal_id(kp_store *s, uint8_t id[KP_JOURNAL_ID_LEN]);
/* The store as the sync client's source (use a connection of its own). */
void kp_store_sync_source(kp_store *s, struct kp_sync_source *src);

/* ---- journal ---- */

struct kp_journal_row {
	uint64_t seq;
	int64_t time_ms;
	uint8_t *payload; size_t payload_len;
	uint8_t *cose; size_t cose_len;
	uint8_t hash[KP_SHA256_LEN];
};
/* Calls fn for each record in sequence order; fn returns non-zero to stop (returned). */
int kp_journal_foreach(kp_store *s, int (*fn)(const struct kp_journal_row *row, void *arg), void *arg);
/* Checks every record: gapless seq from 1, payload decodes canonically and matches the
 * row's columns, prev hash chain, COSE signature with cert. On failure *bad_seq names the
 * first bad record and err says why. */
int kp_journal_verify(kp_store *s, const kp_cert *cert, uint64_t *n_ok, uint64_t *bad_seq,
                      char *err, size_t err_cap);
/* Writes DIR/SEQ.cose per record and DIR/terminal.crt (from the store's meta). */
int kp_journal_export(kp_store *s, const char *dir, uint64_t *n, char *err, size_t err_cap);

/* ---- fare feeds and fare configuration in the config bundle (terminal/store/syncfares.c,
 * backend-sync/PROTOCOL.md section 5; added for the bundle's format 2) ---- */

/* Feed feed_id of the store as a fare package (kp_bundle.h); *pkg malloc'd. */
int kp_store_export_feed(kp_store *s, const char *feed_id, uint8_t **pkg, size_t *len,
                         size_t *n_rows, char *err, size_t err_cap);
/* Inside the caller's transaction: replaces feed feed_id by the package's rows, unless the
 * store already holds a feed of this digest from an earlier bundle (*applied = 0). */
int kp_store_apply_feed(kp_store *s, const char *feed_id, const uint8_t digest[KP_SHA256_LEN],
                        const uint8_t *pkg, size_t len, int *applied);
/* Inside the caller's transaction: deletes the feeds an earlier bundle brought that are not
 * in keep (feeds imported locally are left alone). */
int kp_store_withdraw_feeds(kp_store *s, const char *const *keep, size_t n_keep);
/* The store's operators, products (every kind), product scopes, discounts, caps, transfer
 * rules and operator fares as a bundle's arrays (free with kp_bundle_free). */
int kp_store_export_config(kp_store *s, struct kp_bundle *b);

/* ---- the store on the tap path: what the tap decision reads and writes ---- */

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
