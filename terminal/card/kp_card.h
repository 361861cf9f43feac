/* kippu terminal: card protocols, card tokens, the SQLite store and journal, the tap
 * decision. The one public header of terminal/ (tools/ and tests/ include it). */
#ifndef KP_CARD_H
#define KP_CARD_H

#include <stddef.h>
#include <stdint.h>
#include "kp_hal.h"
#include "kp_crypto.h"
#include "kp_record.h"
#include "kp_proto.h"

enum kp_term_rc {
	KP_OK              = 0,
	KP_E_INVAL         = -0x401, /* bad argument or value */
	KP_E_NOMEM         = -0x402,
	KP_E_IO            = -0x403,
	KP_E_DB            = -0x404, /* SQLite failed; detail in the store's last error */
	KP_E_SCHEMA        = -0x405, /* database newer than this program, or damaged schema */
	KP_E_FRAME_SHORT   = -0x410, /* card reply shorter than its form requires */
	KP_E_FRAME_LONG    = -0x411, /* card reply longer than its form allows */
	KP_E_FRAME_LEN     = -0x412, /* LEN byte disagrees with the reply's length */
	KP_E_FRAME_CODE    = -0x413, /* response code is not command + 1 */
	KP_E_FRAME_IDM     = -0x414, /* reply from another IDm than the polled card's */
	KP_E_CARD_STATUS   = -0x415, /* card answered with error status flags */
	KP_E_FRAME_FORMAT  = -0x416, /* counts or fields inside the reply are inconsistent */
	KP_E_CONFIG        = -0x420, /* configuration file or option is wrong */
	KP_E_PARSE         = -0x421, /* a load file line is wrong */
	KP_E_CHAIN         = -0x430, /* journal hash chain broken */
	KP_E_SEQ           = -0x431, /* journal sequence not gapless */
	KP_E_JOURNAL       = -0x432, /* stored record differs from its signed payload */
	KP_E_SW_NOTFOUND   = -0x440, /* card: 6A82 file or application not found */
	KP_E_SW_SECURITY   = -0x441, /* card: 6982 security status not satisfied */
	KP_E_SW_LENGTH     = -0x442, /* card: 6700 wrong length, or 6Cxx wrong Le */
	KP_E_SW_BLOCKED    = -0x443, /* card: 6984/6983 PIN blocked */
	KP_E_SW_PIN        = -0x444, /* card: 63Cx wrong PIN (x tries left) */
	KP_E_SW_OTHER      = -0x445, /* card: another error status word */
	KP_E_CERT          = -0x446, /* certificate unreadable, not from the JPKI CA, wrong use */
	KP_E_CERT_EXPIRED  = -0x447, /* certificate past its notAfter at the tap's time */
	KP_E_PIN_LAST_TRY  = -0x448, /* one PIN try left: the terminal will not risk it */
	KP_E_CERT_NOT_YET  = -0x449, /* certificate before its notBefore at the tap's time */
	KP_E_PIN_FORMAT    = -0x44A, /* the PIN input is not exactly 4 ASCII digits */
	KP_E_PIN_NONE      = -0x44B, /* no PIN was entered for this card */
	KP_E_PIN_COUNTER   = -0x44C, /* the PIN counter's answer is not a well-formed 63 Cx */
	KP_E_CARD_SIGNATURE = -0x44D, /* the card's signature does not verify: not that card's key */
	KP_E_FEED          = -0x450, /* a GTFS feed file violates the spec (detail: file:line: field) */
	KP_E_NOFARE        = -0x451, /* no fare rule matches the journey */
};

/* Text for any kippu error code (HAL, crypto, record, terminal). */
const char *kp_strerror(int rc);

/* ---- FeliCa client (JIS X 6319-4 frames over the HAL) ---- */

#define KP_FELICA_MAX_BLOCKS 12
#define KP_FELICA_HISTORY_BLOCKS 20
#define KP_SVC_BALANCE 0x008B
#define KP_SVC_HISTORY 0x090F
#define KP_SVC_GATE    0x108F

struct kp_felica {
	struct kp_reader *reader;
	uint8_t idm[8];
	uint8_t pmm[8];
	int timeout_ms;
	uint8_t sf1, sf2;                /* status flags of the last error reply */
};

/* Binds the client to the card the reader activated (its IDm/PMm). */
void kp_felica_init(struct kp_felica *f, struct kp_reader *r, const struct kp_card_info *info,
                    int timeout_ms);
/* Polling: fills idm/pmm (and sys_code when request_code is 1). */
int kp_felica_poll(struct kp_felica *f, uint16_t sys_code, uint8_t request_code,
                   uint8_t idm[8], uint8_t pmm[8], uint16_t *sys_code_out);
/* Request Service: key versions (0xFFFF = no such node) for n node codes. */
int kp_felica_request_service(struct kp_felica *f, const uint16_t *nodes, size_t n,
                              uint16_t *key_versions);
/* Read Without Encryption of n blocks (n <= KP_FELICA_MAX_BLOCKS) of one service. */
int kp_felica_read(struct kp_felica *f, uint16_t service, const uint16_t *blocks, size_t n,
                   uint8_t *out /* 16*n */);

/* Parsers of single replies, exposed so tests can feed them crafted frames. */
int kp_felica_parse_poll(const uint8_t *rx, size_t len, uint8_t request_code,
                         uint8_t idm[8], uint8_t pmm[8], uint16_t *sys_code_out);
int kp_felica_parse_read(const uint8_t *rx, size_t len, const uint8_t idm[8], size_t n_blocks,
                         uint8_t *out, uint8_t *sf1, uint8_t *sf2);
int kp_felica_parse_request_service(const uint8_t *rx, size_t len, const uint8_t idm[8],
                                    size_t n, uint16_t *key_versions);

/* Transit IC (Suica/ICOCA/...) view of the card. */
struct kp_transit_balance {
	unsigned card_type;              /* 008B byte 8 high nibble */
	unsigned region;                 /* 008B byte 8 low nibble */
	unsigned balance;                /* yen */
};
struct kp_transit_history {
	int empty;
	uint8_t terminal_type, process_type;
	unsigned year, month, day;
	uint16_t entry, exit_;           /* station / operator-stop codes */
	unsigned balance;
	uint32_t seq;
	uint8_t region;
};
int kp_transit_read_balance(struct kp_felica *f, struct kp_transit_balance *out);
/* Reads all 20 history blocks (in two reads); out[0] is the newest. */
int kp_transit_read_history(struct kp_felica *f, struct kp_transit_history out[KP_FELICA_HISTORY_BLOCKS]);
void kp_transit_parse_history_block(const uint8_t blk[16], struct kp_transit_history *h);

#define KP_TOKEN_KEY_LEN 32

/* ---- My Number card (JPKI application only) ---- */

#define KP_JPKI_CERT_MAX 4096

struct kp_jpki {
	struct kp_reader *reader;
	int timeout_ms;
	uint16_t sw;                     /* status word of the last APDU */
};
void kp_jpki_init(struct kp_jpki *j, struct kp_reader *r, int timeout_ms);
int  kp_jpki_select_app(struct kp_jpki *j);
/* SELECT JPKI, SELECT EF 000A, READ BINARY (DER header, then chunks of at most 255). */
int  kp_jpki_read_auth_cert(struct kp_jpki *j, uint8_t *der, size_t cap, size_t *len);
#define KP_JPKI_PIN_TRIES 3           /* JPKI's authentication PIN: 4 digits, 3 tries */
#define KP_JPKI_SERIAL_MAX 32         /* octets of a serial number (RFC 5280 says 20) */
#define KP_KU_DIGITAL_SIGNATURE 0x80
/* Tries left on the authentication PIN (VERIFY without data): exactly 63 Cx with x <= 3,
 * or 69 84 (blocked, 0). Anything else is KP_E_PIN_COUNTER (with j->sw): the card is not
 * asked for a PIN. */
int  kp_jpki_pin_tries(struct kp_jpki *j, int *tries);
int  kp_jpki_verify_pin(struct kp_jpki *j, const char *pin, int *tries_left);
/* COMPUTE DIGITAL SIGNATURE over a SHA-256 DigestInfo with the authentication key. */
int  kp_jpki_sign(struct kp_jpki *j, const uint8_t hash[KP_SHA256_LEN], uint8_t *sig,
                  size_t cap, size_t *sig_len);
/* linkage token = first 16 bytes of HMAC-SHA256(token_key, "jpki2" || SHA-256(the issuing
 * CA's SubjectPublicKeyInfo) || serial in canonical form). ca must be the CA whose
 * signature on cert verified (kp_jpki_check_card). The derivation before issue 13,
 * "jpki" || issuer Name || serial, is gone: README, "Linkage tokens made before issue 13". */
#define KP_LINKAGE_KIND "jpki2"
int  kp_linkage_token(const uint8_t key[KP_TOKEN_KEY_LEN], const kp_cert *ca,
                      const kp_cert *cert, uint8_t token[KP_TOKEN_LEN]);
/* Is cert a card's user-authentication certificate from one of cas, at at_ms? An
 * end-entity certificate (no CA:TRUE), keyUsage present with digitalSignature, none of the
 * cas itself (nor their keys), signed by one of cas (*issuer: its index) and valid with it
 * at at_ms (INT64_MIN: dates not looked at). KP_E_CERT_EXPIRED / KP_E_CERT_NOT_YET only
 * for a certificate a configured CA did sign; KP_E_CERT for everything else; err says
 * why (no serial, no name). */
int  kp_jpki_check_card(const kp_cert *cert, const kp_cert *const *cas, size_t n_cas,
                        int64_t at_ms, size_t *issuer, char *err, size_t err_cap);
/* Reads the authentication certificate, checks it (kp_jpki_check_card) and derives the
 * linkage token. *cert_out (if not NULL) keeps the certificate for kp_jpki_prove. Nothing
 * of the certificate is kept. */
int  kp_jpki_identify(struct kp_jpki *j, const kp_cert *const *cas, size_t n_cas,
                      int64_t at_ms, const uint8_t token_key[KP_TOKEN_KEY_LEN],
                      uint8_t token[KP_TOKEN_LEN], kp_cert **cert_out, char *err,
                      size_t err_cap);

/* ---- the PIN of one card session (link mode) ----
 * A PIN belongs to the card in the field: taken once for it, used at most once, wiped at
 * once, never read again for another card. */
#define KP_PIN_LEN 4
#define KP_PIN_FILE_MAX 64            /* a longer PIN input is refused unread */
struct kp_pin {
	char digits[KP_PIN_LEN + 1];
	int have;
};
/* KP_OK if digits is exactly 4 ASCII digits, else KP_E_PIN_FORMAT. */
int  kp_pin_check(const char *digits);
/* buf (n bytes): exactly 4 ASCII digits, optionally followed by one newline; else
 * KP_E_PIN_FORMAT and err says what is wrong (never a digit of it). */
int  kp_pin_parse(struct kp_pin *pin, const char *buf, size_t n, char *err, size_t err_cap);
/* Takes the PIN the pad left in path and consumes it: the file is renamed away (atomic: a
 * later card never sees it), read, overwritten and removed, whatever it held. KP_E_PIN_NONE
 * if there is none, KP_E_PIN_FORMAT if it is not 4 digits (nothing to send), KP_E_IO. */
int  kp_pin_take_file(struct kp_pin *pin, const char *path, char *err, size_t err_cap);
void kp_pin_wipe(struct kp_pin *pin);
/* Strong mode: checks the PIN (KP_E_PIN_NONE, KP_E_PIN_FORMAT before any APDU); reads the
 * PIN counter (KP_E_PIN_COUNTER when malformed) and refuses when one try or none is left;
 * VERIFY, and the PIN is wiped (on every path: it is used at most once); has the card sign a
 * fresh random challenge and verifies it with the certificate (KP_E_CARD_SIGNATURE). */
int  kp_jpki_prove(struct kp_jpki *j, const kp_cert *cert, struct kp_pin *pin, int *tries_left,
                   char *err, size_t err_cap);

/* Lets mock My Number cards sign with their RSA keys (see hal/SCENARIO.md). */
void kp_terminal_register_mock_signer(void);

/* ---- card tokens ---- */
/* token = first 16 bytes of HMAC-SHA256(token_key, kind || id); kind is ASCII, e.g. "felica". */
int kp_token_derive(const uint8_t key[KP_TOKEN_KEY_LEN], const char *kind,
                    const uint8_t *id, size_t id_len, uint8_t token[KP_TOKEN_LEN]);
/* Token key files hold 64 hex digits; kp_token_key_create writes a random one with mode 0600. */
int kp_token_key_load(const char *path, uint8_t key[KP_TOKEN_KEY_LEN]);
int kp_token_key_create(const char *path);
void kp_hex(const uint8_t *b, size_t n, char *out /* 2n+1 */);
/* Ids of terminals, operators, products, categories: 1-32 of A-Z a-z 0-9 - _ . */
int  kp_valid_id(const char *s);
int kp_unhex(const char *s, uint8_t *out, size_t n);   /* exactly n bytes */

/* ---- the store (SQLite) ---- */

typedef struct kp_store kp_store;

#define KP_SCHEMA_VERSION 13

int  kp_store_open(kp_store **out, const char *path);
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
struct kp_fare_remote {
	uint8_t token[KP_TOKEN_LEN];
	int64_t last_ms;                    /* the card's latest record at another terminal */
	int open;                           /* its latest record there is an open tap-on */
	int64_t open_ms;
	char open_operator[KP_ID_MAX + 1], open_route[KP_ID_MAX + 1], open_stop[KP_ID_MAX + 1];
	int open_paid;                      /* paid at tap-on (a pass or a ride) */
	char open_product[KP_ID_MAX + 1];
	int64_t open_ent;
	int64_t closed_ms;                  /* a journey the receiving terminal opened at this
	                                     * time was closed at another terminal (0: none) */
	int has_leg;                        /* its last stored-value leg there */
	char leg_operator[KP_ID_MAX + 1];
	int64_t leg_on_ms, leg_off_ms, leg_paid;
	int64_t day_id, day_spent;          /* charged there in service day day_id */
	int64_t month_id, month_spent;      /* and in month month_id (YYYYMM) */
};
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

/* ---- the tap ---- */

struct kp_terminal_cfg {
	char terminal_id[KP_ID_MAX + 1];
	char operator_id[KP_ID_MAX + 1];
	char route[KP_ID_MAX + 1];
	char stop[KP_ID_MAX + 1];
	char fare_feed[KP_ID_MAX + 1];   /* imported GTFS feed that prices stored value ("" none) */
	char reader[512];
	char hmi[512];
	char database[512];
	char key_path[512];
	char cert_path[512];
	char token_key_path[512];
	int64_t double_tap_window_ms;
	int poll_timeout_ms;             /* wait_card timeout per loop turn */
	int card_timeout_ms;             /* per frame */
	int checkpoint_idle_ms;          /* idle time before a WAL checkpoint */
	int use_syslog;
	char backend_host[128];          /* "" = no backend configured */
	char backend_port[16];
	char backend_ca[512];            /* the operator CA both ends pin */
	char backend_cert[512];          /* the backend's certificate: verifies bundles */
	char backend_name[KP_ID_MAX + 1];/* CN the backend's TLS certificate must carry */
	int sync_interval_s;
	int sync_timeout_ms;
	char jpki_ca[1024];              /* JPKI authentication CA certificate(s), comma-separated */
	int reenrol_warn_days;           /* warn riders this many days before a category ends */
	int utc_offset_s;                /* local time = UTC + this (default +09:00, JST) */
	int service_day_end_s;           /* local time a service day ends (default 04:00) */
	int fare_distance;               /* fare_mode = distance: tap-on/tap-off, charged at
	                                  * tap-off by boarding and alighting stop; 0 = flat */
	enum kp_gate { KP_GATE_BOTH = 0, KP_GATE_ENTRY, KP_GATE_EXIT } gate;
	char place_file[512];            /* "" or a file holding "ROUTE STOP": where a moving
	                                  * vehicle is now (written by its onboard system) */
	                                 /* gate = both (a bus reader: a tap with an open
	                                  * journey on this operator is its tap-off), entry, exit */
};
void kp_terminal_cfg_defaults(struct kp_terminal_cfg *cfg);
/* One setting by its file key (the command line uses this too). */
int  kp_terminal_cfg_set(struct kp_terminal_cfg *cfg, const char *key, const char *value,
                         char *err, size_t err_cap);
/* A place_file's line: "ROUTE STOP" (ids as the `route` and `stop` settings take);
 * KP_E_CONFIG for anything else. */
int  kp_place_parse(const char *line, char route[KP_ID_MAX + 1], char stop[KP_ID_MAX + 1]);
/* key = value lines; err gets "FILE:LINE: message". */
int  kp_terminal_cfg_load(struct kp_terminal_cfg *cfg, const char *path, char *err, size_t err_cap);

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
void kp_tap_engine_close(kp_tap_engine *e);
/* A copy of the card-token key (wipe it after use). */
int  kp_tap_engine_token_key(const kp_tap_engine *e, uint8_t key[KP_TOKEN_KEY_LEN]);
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
/* The configuration the engine was opened with. */
const struct kp_terminal_cfg *kp_tap_engine_cfg(const kp_tap_engine *e);
/* The validity of a period pass of `days` service days activated at now_ms: from the start
 * of now's service day (which ends at cfg's service_day_end, local time) to the end of the
 * service day days-1 later. */
void kp_service_days(const struct kp_terminal_cfg *cfg, int64_t now_ms, int days,
                     int64_t *from_ms, int64_t *until_ms);
/* What the rider reads for an outcome. */
const char *kp_tap_reason_text(const char *reason);

/* ---- fares from GTFS (fares v1 / GTFS-JP and fares v2) ---- */

#define KP_FARE_ID_MAX 127
#define KP_FARE_MSG_MAX 512

struct kp_fare_import_opts {
	const char *feed_id;        /* NULL: the folder's last path component */
	/* Called once per tolerated deviation (unknown column, BOM, missing optional file...). */
	void (*warn)(void *arg, const char *msg);
	void *warn_arg;
};
struct kp_fare_import_stats {
	int64_t fares, fare_rules, rider_prices;             /* fares v1 */
	int64_t products, leg_rules, transfer_rules;         /* fares v2 */
	int64_t warnings;
};
/* Imports the fare files of the GTFS feed in dir as one feed, replacing that feed's rows,
 * in one transaction: on any error nothing changes and err says "file:line: field: why". */
/* The place of every stop of the GTFS feed in dir that has one (stops.txt stop_lat,
 * stop_lon, in micro-degrees), for the backend's clone detection; fn returning other than
 * KP_OK stops the walk with its code. Stops without a place, or a place out of range, are
 * skipped. KP_E_IO when there is no stops.txt. */
int kp_gtfs_stop_places(const char *dir,
                        int (*fn)(void *arg, const char *stop_id, int64_t lat_e6, int64_t lon_e6),
                        void *arg, char *err, size_t err_cap);
int kp_fares_import(kp_store *s, const char *dir, const struct kp_fare_import_opts *opts,
                    struct kp_fare_import_stats *stats, char *err, size_t err_cap);

enum kp_fare_model { KP_FARE_AUTO = 0, KP_FARE_V1 = 1, KP_FARE_V2 = 2 };

/* One leg. Stops give zones (v1, stops.txt zone_id) and areas (v2, stop_areas.txt); a zone
 * or area given directly is used instead. NULL or "" = not known. */
struct kp_fare_query {
	const char *feed_id;
	const char *route_id;
	const char *from_stop, *to_stop;
	const char *from_zone, *to_zone;    /* v1 zone_id / v2 area_id */
	int32_t date;                       /* service date YYYYMMDD (agency local), 0 = unknown */
	int32_t time_s;                     /* seconds after that date's midnight (may pass 24 h) */
	const char *rider_category;         /* NULL: the feed's default category */
	const char *fare_media;             /* v2 fare_media_id, NULL: any */
	int payment_method;                 /* v1: -1 any, 0 on board, 1 before boarding */
	enum kp_fare_model model;           /* AUTO: v2 if the feed has fare_leg_rules */
	int max_to;                         /* 1: the highest fare from from_stop to any stop
	                                     * (what a journey without tap-off is charged) */
};
struct kp_fare_result {
	int64_t amount;                     /* in the currency's minor unit (JPY 1, USD 0.01) */
	char currency[4];
	int minor_digits;
	enum kp_fare_model model;
	char fare_id[KP_FARE_ID_MAX + 1];   /* v1 fare_id, v2 fare_product_id */
	char leg_group_id[KP_FARE_ID_MAX + 1];  /* v2 */
	char rider_category[KP_FARE_ID_MAX + 1]; /* the category priced ("" = none) */
	char rule[KP_FARE_MSG_MAX];         /* the rule that matched, e.g. "fare_rules.txt:12" */
};
/* Prices one leg: KP_OK, KP_E_NOFARE (nothing matches), KP_E_INVAL (unknown feed), KP_E_DB. */
int kp_fare_lookup(kp_store *s, const struct kp_fare_query *q, struct kp_fare_result *r);
/* A run: consecutive transfers matched by rules of one (from_leg_group_id, to_leg_group_id)
 * pair as the rules write it ("" = any). GTFS measures the duration_limit of such a rule
 * from the run's first leg, not from the previous one. */
struct kp_fare_run {
	char from_group[KP_FARE_ID_MAX + 1], to_group[KP_FARE_ID_MAX + 1];
	int64_t on_ms, off_ms;              /* the run's first leg's departure and arrival taps */
};
/* A transfer from the previous leg (prev_*) to this one within one feed. */
struct kp_fare_transfer_query {
	const char *feed_id;
	const char *from_group, *to_group;  /* v2 leg_group_id of each leg */
	const char *rider_category;         /* NULL: the feed's default */
	int64_t prev_on_ms, prev_off_ms;    /* the previous leg's departure and arrival taps */
	int64_t on_ms, off_ms;              /* this leg's */
	int transfers_so_far;               /* in the current chain */
	int64_t prev_paid;                  /* what the previous leg cost (A) */
	int64_t fare;                       /* this leg's own fare (B) */
	const struct kp_fare_run *run;      /* the run that reached the previous leg, NULL: none */
};
struct kp_fare_transfer_result {
	int64_t cost;                       /* this leg's cost under the rule */
	char rule[64];                      /* e.g. "fare_transfer_rules.txt:3 type 1" */
	struct kp_fare_run run;             /* the run this transfer continues, or starts at the
	                                     * previous leg */
};
/* fares v2 fare_transfer_rules: the cheapest cost of this leg under a rule that applies
 * (type 0: AB, 1: AB + B, 2: AB - A, never below 0); *found = 0 when none applies. */
int kp_fare_transfer_v2(kp_store *s, const struct kp_fare_transfer_query *q,
                        struct kp_fare_transfer_result *r, int *found);
/* fares v1: fare_attributes transfers (-1 = unlimited) and transfer_duration in seconds
 * (-1 = none given) of fare_id; *found = 0 if the feed has no such fare. */
int kp_fare_v1_transfers(kp_store *s, const char *feed_id, const char *fare_id, int *transfers,
                         int64_t *duration_s, int *found);
/* ISO 4217 minor-unit digits of a currency code, or -1 if unknown. */
int kp_currency_digits(const char *code);
/* Parses a decimal amount ("2.50", "3", "0.5") into minor units without floating point;
 * KP_E_PARSE if malformed, negative (unless allowed) or with more decimals than digits. */
int kp_money_parse(const char *s, int digits, int allow_negative, int64_t *out);

/* ---- fare feeds and fare configuration in the config bundle (terminal/store/syncfares.c,
 * backend-sync/PROTOCOL.md section 5; added for the bundle's format 2) ---- */

/* Feed feed_id of the store as a fare package (kp_sync.h); *pkg malloc'd. */
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

#endif
