/* SPDX-License-Identifier: Apache-2.0 */
/* kippu backend: the store (SQLite) and the server that terminals sync with. kippuctl
 * and the tests use this header; kippu-backend is a thin main around kp_server. */
#ifndef KP_BACKEND_H
#define KP_BACKEND_H

#include <stddef.h>
#include <stdint.h>
#include "kp_bundle.h"
#include "kp_cert.h"

enum kp_backend_rc {
	KP_BE_OK       = 0,
	KP_BE_E_INVAL  = -0x361,
	KP_BE_E_NOMEM  = -0x362,
	KP_BE_E_DB     = -0x363,     /* SQLite failed; detail in kp_bstore_errmsg */
	KP_BE_E_SCHEMA = -0x364,     /* database newer than this program */
	KP_BE_E_NOTFOUND = -0x365,
	KP_BE_E_UNREGISTERED = -0x366, /* the terminal is not registered, or retired */
	KP_BE_E_REVOKED = -0x367,      /* the hello's certificate was revoked (kp_bstore_errmsg) */
};
/* Text for a backend error code, or for any code kp_sync_error_text knows. */
const char *kp_backend_strerror(int rc);

/* ---- the store ---- */

typedef struct kp_bstore kp_bstore;

#define KP_BSTORE_SCHEMA_VERSION 10

/* Creates the database when missing; a failure is told on stderr ("kippu-backend: ..."). */
int  kp_bstore_open(kp_bstore **out, const char *path);
/* How kp_bstore_open_mode opens: CREATE as kp_bstore_open; EXISTING and READONLY never make
 * a database ("no such database: PATH"), READONLY neither writes nor migrates. Every mode
 * refuses a database that is not a backend's ("PATH is a terminal database, not a backend
 * database"). Nothing on stderr: err (cap bytes) says why. */
enum { KP_BSTORE_CREATE, KP_BSTORE_EXISTING, KP_BSTORE_READONLY };
int  kp_bstore_open_mode(kp_bstore **out, const char *path, int mode, char *err, size_t cap);
/* path names a PostgreSQL database (postgresql://..., postgres://... or libpq's
 * "keyword=value ..."), not a file: the store's path arguments take either. */
int  kp_bstore_is_pg(const char *path);
void kp_bstore_close(kp_bstore *s);
const char *kp_bstore_errmsg(const kp_bstore *s);
/* The settings every acknowledged record's durability rests on, as the store's connection
 * reads them back: journal_mode ("wal"), synchronous (2 = FULL), foreign_keys (1 = on). */
int kp_bstore_pragmas(kp_bstore *s, char *journal_mode, size_t cap, int *synchronous,
                      int *foreign_keys);

/* One connection's terminal, journal and certificate (PROTOCOL.md section 4.1), as
 * kp_bstore_hello found or made them. */
struct kp_bsession {
	char terminal[KP_ID_MAX + 1];
	uint8_t journal[KP_JOURNAL_ID_LEN];  /* all zeros: the legacy journal */
	int64_t epoch;                       /* 1, 2, ...: the order the backend met journals in */
	int64_t cert_id;                     /* the certificate's row in the history (0: none) */
	int new_journal;                     /* this hello made the epoch */
	int new_cert;                        /* first connection with this certificate */
	uint64_t acked;                      /* highest contiguous seq held in this journal */
	uint8_t head[KP_SHA256_LEN];         /* SHA-256 of record acked's payload (0s: none) */
};

/* A terminal said hello: records it and its certificate (DER; every certificate a terminal
 * has used is kept), finds the journal (NULL: the legacy journal) or makes it the
 * terminal's next epoch, and fills ses with what the backend holds of that journal: the
 * highest contiguous seq and the SHA-256 of that record's payload, which lets the terminal
 * check that it is its own journal. A terminal that is not registered, or is retired, is
 * refused (KP_BE_E_UNREGISTERED, kp_bstore_errmsg says which) and nothing is written. */
int kp_bstore_hello(kp_bstore *s, struct kp_bsession *ses, const char *terminal,
                    const uint8_t *journal, const uint8_t *cert_der, size_t cert_len,
                    int64_t now_ms);
/* kp_bstore_hello, and keeps what the hello reported: last (NULL: not reported) = the seq
 * of the newest record the terminal holds in that journal (PROTOCOL.md hello `last`; at
 * most INT64_MAX), read back as the unsent-records metric. */
int kp_bstore_hello_last(kp_bstore *s, struct kp_bsession *ses, const char *terminal,
                         const uint8_t *journal, const uint64_t *last, const uint8_t *cert_der,
                         size_t cert_len, int64_t now_ms);
/* kp_bstore_hello for the legacy journal (a terminal that sends no journal id). */
int kp_bstore_terminal_seen(kp_bstore *s, const char *terminal, const uint8_t *cert_der,
                            size_t cert_len, int64_t now_ms, uint64_t *acked);
/* The registry of terminals (PROTOCOL.md section 4). Registers id (1..KP_ID_MAX of
 * A-Z a-z 0-9 - _ ., its certificate's CN) for operator_id (NULL: none; it must exist,
 * else KP_BE_E_NOTFOUND); registering it again changes only the operator (when given), and
 * *was_registered (may be NULL) says so. A retired id is not registered again
 * (KP_BE_E_INVAL). Terminals the backend knew when its database was migrated to schema 5
 * are registered. Neither call bumps the state version (bundles do not carry the registry). */
int kp_bstore_terminal_add(kp_bstore *s, const char *id, const char *operator_id, int64_t now_ms,
                           int *was_registered);
/* Retires a registered terminal: refused at its next hello, its records, journals and
 * certificates kept as they are. KP_BE_E_NOTFOUND if it is not registered; retiring again
 * changes nothing (*was_retired = 1). A connection already past its hello finishes. */
int kp_bstore_terminal_retire(kp_bstore *s, const char *id, int64_t now_ms, int *was_retired);
/* A terminal holds bundle version `have`, above the backend's state version: the backend
 * was restored from a backup. Raises the state version above have (and to the version
 * clock, see bump_version) so that every terminal takes the restored state's bundle (a
 * version never goes back as terminals see it); *raised = 1 and *was = the old version when
 * it did. have above 2^53 is refused (KP_BE_E_INVAL): no backend makes such versions. */
int kp_bstore_state_at_least(kp_bstore *s, uint64_t have, int *raised, uint64_t *was);

/* One record as the server hands it to the store: signature already checked (sig_ok), the
 * payload decoded (decode_rc 0) into rec. */
#define KP_AUDIT_SAMPLE 1               /* other records of a batch verified at ingest, picked at
                                         * random, besides its last one */

struct kp_ingest {
	const uint8_t *cose; size_t cose_len;
	const uint8_t *payload; size_t payload_len;
	int sig_ok;                      /* COSE form good; the signature too unless deferred */
	int sig_deferred;                /* 1: signature not verified at ingest: the chain
	                                  * to a verified record vouches for it, the auditor
	                                  * verifies it later (PROTOCOL.md section 4.2) */
	int decode_rc;
	struct kp_record rec;
	uint8_t hash[KP_SHA256_LEN];     /* SHA-256 of payload */
	int64_t signer;                  /* the certificate (terminal_certs id) whose key verified
	                                  * it; 0: not verified yet, or the session's */
	char why[160];                   /* !sig_ok: why ("" = "bad signature") */
};

/* ---- certificates over time (PROTOCOL.md section 4.3) ---- */

/* A terminal's certificate history, parsed: every certificate it has said hello with. */
struct kp_cert_entry {
	int64_t id;                      /* terminal_certs row */
	kp_cert *cert;
	int64_t not_before, not_after;   /* ms */
	int64_t revoked_at;              /* ms; INT64_MAX: not revoked */
	char fingerprint[2 * KP_SHA256_LEN + 1];   /* hex SHA-256 of the DER */
};
struct kp_cert_history {
	struct kp_cert_entry *e;
	size_t n;
	int64_t first_revoked;           /* the earliest revoked_at (INT64_MAX: none) */
};
int  kp_bstore_cert_history(kp_bstore *s, const char *terminal, struct kp_cert_history *h);
void kp_cert_history_free(struct kp_cert_history *h);
/* Verifies a record's own signature with the key that was valid for it: the certificate
 * first_id first (the connection's, or the one a record came in with), then each other of
 * the history whose validity covers time_ms. 0 and *signer on success; -1 and why (cap
 * bytes) when no certificate verifies it ("bad signature") or the one that does was
 * revoked at or before time_ms ("signed with certificate ... revoked at ..."). */
int  kp_cert_history_verify(const struct kp_cert_history *h, int64_t first_id,
                            const uint8_t *cose, size_t cose_len, int64_t time_ms,
                            int64_t *signer, char *why, size_t cap);
/* Revokes the certificate of terminal whose fingerprint (64 lowercase hex digits) is fp as
 * of at_ms: its key's records made at or after at_ms are refused, its hello from then on.
 * KP_BE_E_NOTFOUND (kp_bstore_errmsg says which) for an unknown terminal or a certificate
 * not in its history. Revoked already: nothing changes, *was_at = that time (else 0). */
int  kp_bstore_cert_revoke(kp_bstore *s, const char *terminal, const char *fp, int64_t at_ms,
                           int64_t now_ms, int64_t *was_at);

/* Stores a batch from `terminal` in one transaction: each record exactly once (a record
 * the backend already holds is skipped if identical), in sequence, chained to the last
 * one held. The first bad record (bad signature, undecodable, wrong terminal id, broken
 * chain, a different record under a sequence already held) quarantines the terminal:
 * nothing more from it is accepted until `kippuctl quarantine clear`. On return *acked is
 * the highest contiguous sequence held; *refused_seq is 0 or the refused record, with
 * reason. A record with sig_deferred (its signature not verified yet) is held only when a
 * later record of the batch without it is (the hash chain vouches for it; section 4.2 of
 * PROTOCOL.md), and listed for kp_bstore_audit. Uses are merged per entitlement and an
 * overdraft denylists the card. A record of
 * kind "link" with result "requested" (token = card, via = linkage) links the card if the
 * linkage is active and valid at the record's time; each link record gets a row in the
 * link requests (KP_REPORT_LINK_REQUESTS), accepted or refused with the reason. */
int kp_bstore_ingest(kp_bstore *s, const char *terminal, const struct kp_ingest *recs, size_t n,
                     int64_t now_ms, uint64_t *acked, uint64_t *refused_seq, char *reason,
                     size_t reason_cap);
/* The auditor (PROTOCOL.md section 4.2): verifies the own signature of up to max records
 * not verified at ingest, with the certificate each came in with; a record that fails
 * quarantines its terminal (kp_log'd). *audited: records settled, *failed: of them bad. */
int kp_bstore_audit(kp_bstore *s, int max, int64_t now_ms, uint64_t *audited,
                    uint64_t *failed);
/* The same; gate (when not NULL) is called with enter 1 before and 0 after the short write
 * (kippu-backend's store gate), the verifications run outside it. */
int kp_bstore_audit_gated(kp_bstore *s, int max, int64_t now_ms, uint64_t *audited,
                          uint64_t *failed, void (*gate)(void *arg, int enter), void *arg);
/* Records not audited yet. */
int kp_bstore_audit_lag(kp_bstore *s, uint64_t *lag);
/* kp_bstore_ingest into the session's journal, each record stored with the session's
 * certificate. A record another epoch of the terminal holds byte for byte (same seq, same
 * payload hash: the same history up to it) is held once: an alias, no second use. */
int kp_bstore_ingest_session(kp_bstore *s, const struct kp_bsession *ses,
                             const struct kp_ingest *recs, size_t n, int64_t now_ms,
                             uint64_t *acked, uint64_t *refused_seq, char *reason,
                             size_t reason_cap);

/* The snapshot for `terminal` if the backend's state version is above have_version
 * (*has = 1), else *has = 0. Fill b; free with kp_bundle_free. It includes, for every card
 * with records at other terminals in the 32 days before now_ms, its remote fare state
 * computed from those records (terminal/fare/FARES.md "Across terminals"; one indexed pass over
 * the recent records, spending by the service-day setting at now_ms). */
int kp_bstore_bundle(kp_bstore *s, const char *terminal, uint64_t have_version, int64_t now_ms,
                     struct kp_bundle *b, int *has);
/* kp_bstore_bundle for the session's journal: the bundle's acked is that journal's. */
int kp_bstore_bundle_session(kp_bstore *s, const struct kp_bsession *ses,
                             uint64_t have_version, int64_t now_ms, struct kp_bundle *b,
                             int *has);
/* The changes since have_version as a delta (PROTOCOL.md section 5.4): *kind says what to
 * send. NONE: have_version is the backend's (nothing newer). DELTA: d holds the rows of every
 * card, entitlement and linkage changed since (built from the change log: the cost follows
 * the changes, not the state). FULL: a delta cannot say it (have_version 0, not in the
 * retained log, a change to the catalogue or the fare engine, more than
 * KP_BSTORE_DELTA_CHANGES_MAX changes): send kp_bstore_bundle_session's bundle. */
enum { KP_BSTORE_DELTA_NONE = 0, KP_BSTORE_DELTA_DELTA, KP_BSTORE_DELTA_FULL };
#define KP_BSTORE_DELTA_CHANGES_MAX 200000
int kp_bstore_delta_session(kp_bstore *s, const struct kp_bsession *ses, uint64_t have_version,
                            int64_t now_ms, struct kp_delta *d, int *kind);
/* How long the change log is kept (seconds; default KP_BSTORE_CHANGE_KEEP_S, 7 days): a
 * terminal whose version is older gets a full bundle. 0 keeps only the newest version. */
#define KP_BSTORE_CHANGE_KEEP_S 604800
int kp_bstore_set_change_keep(kp_bstore *s, int64_t keep_s);

/* Rows the last kp_bstore_bundle left out because the bundle cannot carry them (a name or
 * reason that breaks kp_bundle_text_check, put into the database by hand) and what names
 * them (entitlements of a product left out ...): *n, and the first one's table, row and
 * reason ("" if none), for one log line per bundle. */
const char *kp_bstore_bundle_left_out(const kp_bstore *s, size_t *n);

/* Operations (each bumps the state version so terminals get a new bundle). */
int kp_bstore_put_operator(kp_bstore *s, const char *id, const char *name);
int kp_bstore_put_product(kp_bstore *s, const char *id, const char *name, int64_t rides,
                          const char *const *operators, size_t n_operators);
/* The same with a rider category (1..32 bytes of UTF-8): only riders of that category may use
 * the product. NULL or "" = any rider (kp_bstore_put_product). */
int kp_bstore_put_product_cat(kp_bstore *s, const char *id, const char *name, int64_t rides,
                              const char *const *operators, size_t n_operators,
                              const char *category);
int kp_bstore_register_card(kp_bstore *s, const uint8_t token[KP_TOKEN_LEN], const char *label,
                            int64_t now_ms);
/* Sells product to a registered card; *ent_id gets the new entitlement's id. */
int kp_bstore_sell(kp_bstore *s, const uint8_t token[KP_TOKEN_LEN], const char *product,
                   int64_t valid_from_ms, int64_t valid_until_ms, int64_t now_ms, int64_t *ent_id);
/* The same for every product kind: stored value needs balance (minor units, 1..10^12; it
 * is what was bought, and accepted charges reported by terminals are its uses), other kinds
 * balance 0; first_use (period passes only): [from, until) is the window in which the
 * first tap starts the pass (the backend then fixes its service days from that record's
 * time, kp_bstore_set_service_day). */
int kp_bstore_sell_ex(kp_bstore *s, const uint8_t token[KP_TOKEN_LEN], const char *product,
                      int64_t valid_from_ms, int64_t valid_until_ms, int64_t balance,
                      int first_use, int64_t now_ms, int64_t *ent_id);
/* The terminals' service day (default 04:00 at UTC+09:00), for first-use passes. */
/* The scheme's My Number policy (bundle format 4): direct taps of My Number cards (off,
 * or for the listed products and product categories, with limits per linkage and service
 * day) and the maximum age of eligibility data. Set: validated (KP_BE_E_INVAL, a product
 * not held KP_BE_E_NOTFOUND, the reason in kp_bstore_errmsg), one transaction, the state
 * version bumped. */
int kp_bstore_get_policy(kp_bstore *s, struct kp_bundle_policy *p);
int kp_bstore_set_policy(kp_bstore *s, const struct kp_bundle_policy *p);
/* Clone detection (on ingest): action 0 off, 1 report, 2 suspend the linkage in the next
 * bundle; speed_kmh: faster than this between two terminals' stops is impossible; gap_s:
 * two terminals closer in time than this, where a stop's place is not known. */
int kp_bstore_get_clone_policy(kp_bstore *s, int *action, int64_t *speed_kmh, int64_t *gap_s);
int kp_bstore_set_clone_policy(kp_bstore *s, int action, int64_t speed_kmh, int64_t gap_s);
/* Clears a linkage's open flags (a suspension is lifted by the next bundle);
 * KP_BE_E_NOTFOUND when it has none. */
int kp_bstore_clone_clear(kp_bstore *s, const uint8_t linkage[KP_TOKEN_LEN], int64_t now_ms);
/* Replaces the stop coordinates of a feed (GTFS stops.txt; micro-degrees). */
struct kp_stop_place {
	char stop_id[KP_ID_MAX + 1];
	int64_t lat_e6, lon_e6;
};
int kp_bstore_put_stop_places(kp_bstore *s, const char *feed_id,
                              const struct kp_stop_place *places, size_t n);
int kp_bstore_set_service_day(kp_bstore *s, int end_s, int utc_offset_s);
/* Upserts what b holds of the fare engine's configuration in one transaction (one state
 * version): operators, products of every kind (with category, operators, stops), product
 * scopes (those of b's products are replaced by b's; a scope of another product is
 * KP_BE_E_INVAL), discounts, caps, transfer rules, operator fares. b must hold no
 * entitlements, denylist, eligibility, feeds or remote rows (KP_BE_E_INVAL). Everything
 * else the backend holds stays. A sold product keeps its kind (KP_BE_E_INVAL). */
int kp_bstore_put_config(kp_bstore *s, const struct kp_bundle *b);
/* Stores (or replaces) fare feed feed_id as a fare package (kp_bundle.h), checked first;
 * every bundle carries it. */
int kp_bstore_put_feed(kp_bstore *s, const char *feed_id, const char *source,
                       const uint8_t *package, size_t len, int64_t now_ms);
/* Withdraws a feed: terminals delete it at their next bundle (KP_BE_E_NOTFOUND if none). */
int kp_bstore_delete_feed(kp_bstore *s, const char *feed_id);
int kp_bstore_denylist(kp_bstore *s, const uint8_t token[KP_TOKEN_LEN], const char *reason,
                       int64_t now_ms);
int kp_bstore_undeny(kp_bstore *s, const uint8_t token[KP_TOKEN_LEN]);
int kp_bstore_quarantine_clear(kp_bstore *s, const char *terminal);

/* My Number linkage. A linkage is keyed by the linkage token of a My Number card (16 bytes,
 * never the card's number, serial or name) and gives a rider category (e.g. "resident")
 * from valid_from_ms (inclusive) to valid_until_ms (exclusive). Transit IC cards linked to an
 * active linkage hold its category too: every bundle carries one eligibility row for each
 * active, unexpired linkage and one for each card linked to one.
 *
 * Adds a linkage, or changes the category and validity of an active one. A revoked linkage
 * stays revoked (KP_BE_E_INVAL): a renewed card has a new certificate, hence a new token. */
int kp_bstore_linkage_add(kp_bstore *s, const uint8_t token[KP_TOKEN_LEN], const char *category,
                          int64_t valid_from_ms, int64_t valid_until_ms, int64_t now_ms);
/* Revokes an active linkage (KP_BE_E_NOTFOUND if there is none): the next bundle leaves it
 * and every card linked through it out, so terminals drop them. The links are kept. */
int kp_bstore_linkage_revoke(kp_bstore *s, const uint8_t token[KP_TOKEN_LEN], int64_t now_ms);
/* Links a transit IC card (its card token) to a linkage that is active and not expired at
 * now_ms (one whose validity has not begun yet is fine: the card's eligibility has the
 * linkage's validity): KP_BE_E_NOTFOUND for an unknown linkage, KP_BE_E_INVAL for a revoked
 * or expired one (kp_bstore_errmsg says which). Linking twice changes nothing. source says
 * where the link was made: NULL or "backend" (online), "terminal:<id>:<seq>". Ingest links
 * the cards of link records itself, and there the linkage must be valid at the record's
 * time. */
int kp_bstore_linkage_link(kp_bstore *s, const uint8_t linkage[KP_TOKEN_LEN],
                           const uint8_t card_token[KP_TOKEN_LEN], int64_t now_ms,
                           const char *source);
int kp_bstore_state_version(kp_bstore *s, uint64_t *version);

/* Reports: each calls fn once per row with columns as text (NULL for SQL NULL). */
enum kp_report {
	KP_REPORT_RECORDS = 1,       /* terminal seq time result reason operator product ent rides left
	                                kind via category */
	KP_REPORT_LEDGER,            /* operator accepted refused rides amount */
	KP_REPORT_QUARANTINE,        /* terminal seq reason at */
	KP_REPORT_OVERDRAFTS,        /* ent token product bought used */
	KP_REPORT_TERMINALS,         /* terminal acked last_seen quarantined epoch certs status
	                                operator registered retired unsent: every terminal
	                                registered or seen (acked and epoch: its newest journal;
	                                last_seen "never"; status active, retired, or
	                                unregistered; unsent: the newest seq its last hello
	                                reported minus what the backend holds of that hello's
	                                journal, never below 0, NULL when not reported) */
	KP_REPORT_ENTITLEMENTS,      /* ent token product bought used remaining from until */
	KP_REPORT_LINKAGES,          /* token category valid_from valid_until status cards
	                                (status: active, revoked, or expired once until has passed) */
	KP_REPORT_LINKAGE_CARDS,     /* linkage card linked source */
	KP_REPORT_LINK_REQUESTS,     /* terminal seq linkage card result reason at (link records) */
	KP_REPORT_FEEDS,             /* feed rows bytes digest source imported */
	KP_REPORT_PRODUCTS,          /* product kind name rides days route category operators */
	KP_REPORT_FARES,             /* what rule: discounts, caps, transfers, operator fares */
	KP_REPORT_OPERATORS,         /* operator name */
	KP_REPORT_JOURNALS,          /* terminal epoch journal acked records held_before first_seen
	                                last_seen (PROTOCOL.md 4.1: held_before = records this
	                                epoch sent that an earlier one holds, kept once) */
	KP_REPORT_CERTS,             /* terminal cert fingerprint not_before not_after first_seen
	                                last_seen revoked records (records: those its key
	                                verified) */
	KP_REPORT_CLONES,            /* linkage kind first second detail flagged state */
};
int kp_bstore_report(kp_bstore *s, enum kp_report which, const char *terminal_filter,
                     int (*fn)(void *arg, int ncol, const char *const *cols,
                               const char *const *names), void *arg);
/* The same as of at_ms (ms since the epoch): what is active or expired is judged at that
 * time (kp_bstore_report: now), so an audit or a demo sees the state of its own day. */
int kp_bstore_report_at(kp_bstore *s, enum kp_report which, const char *terminal_filter,
                        int64_t at_ms, int (*fn)(void *arg, int ncol, const char *const *cols,
                                                 const char *const *names), void *arg);
/* The stored COSE bytes of one record of the legacy journal (for audit); *out malloc'd. */
int kp_bstore_record_cose(kp_bstore *s, const char *terminal, uint64_t seq, uint8_t **out,
                          size_t *len);
/* Every record of a terminal, epoch by epoch, each with the certificate it was received
 * under (the one of the connection that brought it: it signed the record). An epoch's
 * records held once by an earlier epoch come from there (alias = 1), so each epoch is a
 * whole chain from seq 1. Pointers are valid during the call; fn returns nonzero to stop
 * (then KP_BE_E_INVAL). */
struct kp_export_row {
	int64_t epoch;
	char journal[2 * KP_JOURNAL_ID_LEN + 1];
	uint64_t seq;
	const uint8_t *cose; size_t cose_len;
	int64_t cert_id;                      /* 0: none known */
	const uint8_t *cert; size_t cert_len; /* DER */
	int alias;
};
int kp_bstore_export_walk(kp_bstore *s, const char *terminal,
                          int (*fn)(void *arg, const struct kp_export_row *row), void *arg);


/* ---- the server ---- */

struct kp_server_cfg {
	char host[128];                  /* listen address, e.g. 127.0.0.1 */
	char port[16];                   /* "0": any free port */
	char db[512];
	char ca[512], cert[512], key[512];
	int max_conns;                   /* authenticated terminals served at once */
	int max_unauth;                  /* connections in the TLS handshake at once */
	int max_per_addr;                /* handshakes from one address while max_unauth is
	                                  * more than half taken */
	int timeout_ms;                  /* per handshake and per message */
	int change_log_days;             /* the change log kept for deltas (PROTOCOL.md 5.4) */
	int verify_every_record;         /* 1: every record's signature at ingest (the old
	                                  * path; the bench's baseline); 0: the chain, the
	                                  * last record's and a sample (PROTOCOL.md 4.2) */
	int audit_sample;                /* N others of a batch verified at ingest (0: none) */
	int auditor;                     /* 1: run the background auditor thread */
};
/* Defaults; for the bench and the tests the environment may change how ingest verifies:
 * KIPPU_BACKEND_VERIFY=every (verify_every_record), KIPPU_BACKEND_SAMPLE=N (audit_sample,
 * default KP_AUDIT_SAMPLE), KIPPU_BACKEND_AUDITOR=0 (no auditor thread). */
void kp_server_cfg_defaults(struct kp_server_cfg *cfg);

typedef struct kp_server kp_server;
/* Binds, listens and starts serving in background threads. */
int  kp_server_start(kp_server **out, const struct kp_server_cfg *cfg, char *err, size_t err_cap);
int  kp_server_port(const kp_server *srv);
/* How many times the accept loop has turned (at least every 200 ms while it runs): the
 * main thread feeds the service watchdog only while this moves. */
unsigned long kp_server_turns(const kp_server *srv);
/* Stops accepting, ends every connection at its next deadline, frees. */
void kp_server_stop(kp_server *srv);

/* ---- metrics (Prometheus; README "Monitoring") ---- */
/* Process-wide figures, bumped by the server's threads with atomics. */
enum kp_metric_refusal { KP_MR_QUARANTINED, KP_MR_SEQUENCE_GAP, KP_MR_BAD_SIGNATURE,
                         KP_MR_BAD_PAYLOAD, KP_MR_TERMINAL_MISMATCH, KP_MR_CHAIN_BROKEN,
                         KP_MR_CONFLICT, KP_MR_OTHER, KP_MR_N };
enum kp_metric_conn { KP_MC_PER_ADDR, KP_MC_HANDSHAKES, KP_MC_TERMINALS, KP_MC_UNREGISTERED,
                      KP_MC_REVOKED, KP_MC_N };
enum kp_metric_tls { KP_MT_TIMEOUT, KP_MT_PEER, KP_MT_CLOSED, KP_MT_PROTOCOL, KP_MT_OTHER,
                     KP_MT_N };
void kp_metrics_ingested(uint64_t n);
void kp_metrics_refused(const char *store_reason);   /* the store's reason text */
void kp_metrics_accepted(void);
void kp_metrics_conn_refused(enum kp_metric_conn why);
void kp_metrics_tls_failed(enum kp_metric_tls kind);
void kp_metrics_verify_seconds(double s);
void kp_metrics_commit_seconds(double s);
void kp_metrics_bundle(size_t bytes);
/* Text format 0.0.4 of every figure, per-terminal ones read from db_path (read-only);
 * malloc'd, NULL when out of memory. */
char *kp_metrics_render(const char *db_path, size_t *len);
/* GET /metrics over HTTP on host:port ("0": any free port), in a thread of its own
 * (metrics_http.c, libmicrohttpd: link it only into programs that call these). */
typedef struct kp_metrics_http kp_metrics_http;
int  kp_metrics_http_start(kp_metrics_http **out, const char *host, const char *port,
                           const char *db_path, char *err, size_t err_cap);
int  kp_metrics_http_port(const kp_metrics_http *h);
void kp_metrics_http_stop(kp_metrics_http *h);

#endif
