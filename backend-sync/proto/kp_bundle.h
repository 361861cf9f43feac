/* SPDX-License-Identifier: Apache-2.0 */
/* kippu sync protocol, proto/: the config bundle (a full snapshot signed by the backend's
 * key) and fare packages (one imported GTFS fare feed, table by table); PROTOCOL.md
 * section 5. */
#ifndef KP_BUNDLE_H
#define KP_BUNDLE_H

#include "kp_proto.h"

/* ---- the config bundle (a full snapshot, signed by the backend's key) ---- */

/* A name or a reason in the bundle: at most KP_BUNDLE_TEXT_MAX bytes of UTF-8 (21 kanji),
 * no control characters. kp_bundle_text_check() is the rule, for the encoder and for every
 * place that takes such a text in (kippuctl backend, load files). */
#define KP_BUNDLE_TEXT_MAX 64
/* KP_SYNC_OK, or KP_SYNC_E_INVAL with "FIELD: why (the limit)" in err: not valid UTF-8
 * (Shift_JIS, Latin-1 ...), more than KP_BUNDLE_TEXT_MAX bytes, or a control character
 * (C0 incl. TAB and ESC, DEL, C1). Empty is allowed. */
int kp_bundle_text_check(const char *field, const char *s, char *err, size_t err_cap);

struct kp_bundle_operator {
	char id[KP_ID_MAX + 1];
	char name[KP_BUNDLE_TEXT_MAX + 1];
};
/* Product kinds (bundle format 2; a format 1 bundle has N-ride products only). */
enum kp_product_kind {
	KP_PRODUCT_NRIDE = 0,            /* rides: the rides bought */
	KP_PRODUCT_STORED,               /* stored value: an entitlement's remaining is the balance
	                                  * in the currency's minor unit */
	KP_PRODUCT_PERIOD,               /* a pass of `days` service days */
	KP_PRODUCT_COMMUTER,             /* a pass on `route` ("*" any) between stops[0] and
	                                  * stops[n_stops - 1], listed in route order */
};
#define KP_BUNDLE_PRODUCT_STOPS_MAX 64   /* stops of a commuter pass */
struct kp_bundle_product {
	char id[KP_ID_MAX + 1];
	char name[KP_BUNDLE_TEXT_MAX + 1];
	int64_t rides;                   /* N-ride: 1..10000; other kinds: ignored (sent as none) */
	char category[KP_ID_MAX + 1];    /* "" = any rider; else only riders of this category */
	char operators[16][KP_ID_MAX + 1];
	size_t n_operators;
	/* format 2 */
	enum kp_product_kind kind;
	int days;                        /* period: 1..366 */
	char route[KP_ID_MAX + 1];       /* commuter */
	char (*stops)[KP_ID_MAX + 1];    /* commuter: malloc'd (kp_bundle_free frees it) */
	size_t n_stops;                  /* commuter: 2..KP_BUNDLE_PRODUCT_STOPS_MAX */
};
struct kp_bundle_entitlement {
	int64_t id;
	uint8_t token[KP_TOKEN_LEN];
	char product[KP_ID_MAX + 1];
	int64_t remaining;               /* bought - uses reported by all terminals, >= 0;
	                                  * stored value: the balance in minor units */
	int64_t valid_from_ms, valid_until_ms;
	int first_use;                   /* format 2: a period pass not yet started ([from, until)
	                                  * is the window of its first tap) */
};
/* An operator's price for a rider category: percent (0..100) of the adult fare, rounded
 * (0 down, 1 up, 2 nearest) to a multiple of unit (1..100000) minor units. */
struct kp_bundle_discount {
	char operator_id[KP_ID_MAX + 1];
	char category[KP_ID_MAX + 1];
	int percent, rounding;
	int64_t unit;
};
/* A fare cap: riders of category ("" = riders without one) pay at most amount per
 * period (0 service day, 1 month). */
struct kp_bundle_cap {
	char category[KP_ID_MAX + 1];
	int period;
	int64_t amount;                  /* 0..10^12 minor units */
};
/* A scheme transfer rule ("*" = any operator): off minor units off the next leg, -1 free. */
struct kp_bundle_transfer {
	char from_operator[KP_ID_MAX + 1], to_operator[KP_ID_MAX + 1];
	int within_s;                    /* 60..86400 */
	int max_transfers;               /* 1..100 */
	int64_t off;                     /* -1..10^12 */
};
/* The fare feed that prices an operator's taps and its mode (distance: tap-on/tap-off). */
struct kp_bundle_operator_fare {
	char operator_id[KP_ID_MAX + 1];
	char feed_id[KP_ID_MAX + 1];
	int distance;
};
/* An imported GTFS fare feed as a package (canonical CBOR, see "fare packages" below);
 * digest = SHA-256 of package, which lets a terminal skip a feed it already holds. */
struct kp_bundle_feed {
	char id[KP_ID_MAX + 1];
	uint8_t digest[KP_SHA256_LEN];
	uint8_t *package;                /* malloc'd (kp_bundle_free frees it) */
	size_t package_len;
};
/* A rider category a card or a My Number linkage holds: token is a transit IC card's token
 * (via = the linkage it is linked through) or a linkage token itself (has_via = 0). Only
 * active linkages whose until has not passed are sent; revoked ones are left out, so the
 * next bundle withdraws them. */
struct kp_bundle_eligibility {
	uint8_t token[KP_TOKEN_LEN];
	char category[KP_ID_MAX + 1];
	int64_t valid_from_ms, valid_until_ms;
	int has_via;
	uint8_t via[KP_TOKEN_LEN];
};
struct kp_bundle_deny {
	uint8_t token[KP_TOKEN_LEN];
	char reason[KP_BUNDLE_TEXT_MAX + 1];
};
/* Format 3: what the backend knows of a card from the records of the terminals other than
 * the one the bundle is for (terminal/fare/FARES.md, "Across terminals"); the terminal keeps it
 * as its kp_fare_remote. Strings "" and times 0 when absent. */
struct kp_bundle_remote {
	uint8_t token[KP_TOKEN_LEN];
	int64_t last_ms;                 /* the card's latest record at another terminal, >= 0 */
	int open;                        /* that record is an accepted tap_on: */
	int64_t open_ms;                 /*   its time, > 0 */
	char open_operator[KP_ID_MAX + 1], open_route[KP_ID_MAX + 1], open_stop[KP_ID_MAX + 1];
	int open_paid;                   /*   a ride or a period pass paid the journey */
	char open_product[KP_ID_MAX + 1];
	int64_t open_ent;                /*   0 = none */
	int64_t closed_ms;               /* the receiving terminal's tap-on closed elsewhere (0: none) */
	int has_leg;                     /* the last stored-value leg there: */
	char leg_operator[KP_ID_MAX + 1];
	int64_t leg_on_ms, leg_off_ms;   /*   on <= off */
	int64_t leg_paid;                /*   > 0 */
	int64_t day_id, day_spent;       /* charged there in service day day_id (spent 0: none) */
	int64_t month_id, month_spent;   /* and in month month_id, YYYYMM */
};
/* Format 3: a product valid only on these GTFS routes or networks (beyond its operators). */
struct kp_bundle_scope {
	char product[KP_ID_MAX + 1];
	int network;                     /* 1: scope_id is a network, 0: a route */
	char scope_id[KP_ID_MAX + 1];
};
/* Format 4: the scheme's My Number policy (PROTOCOL.md section 5.3). A bundle without it
 * carries the default policy: no direct My Number taps, eligibility data usable for
 * KP_POLICY_MAX_AGE_DEFAULT seconds after the bundle was issued. */
#define KP_POLICY_MAX_AGE_DEFAULT   259200       /* 72 hours */
#define KP_POLICY_MAX_AGE_MIN       3600
#define KP_POLICY_MAX_AGE_MAX       31622400     /* 366 days */
#define KP_POLICY_LIST_MAX          16           /* products, categories */
#define KP_POLICY_RIDES_MAX         1000
#define KP_POLICY_VALUE_MAX         1000000000000LL
struct kp_bundle_policy {
	int64_t max_age_s;               /* 0 = the default */
	int direct;                      /* 1: My Number cards may be tapped directly, for the
	                                  * products and product categories listed */
	int64_t direct_rides;            /* direct taps per linkage and service day, 0: no limit */
	int64_t direct_value;            /* minor units charged per linkage and service day, 0: none */
	char products[KP_POLICY_LIST_MAX][KP_ID_MAX + 1];
	size_t n_products;
	char categories[KP_POLICY_LIST_MAX][KP_ID_MAX + 1];
	size_t n_categories;
};
struct kp_bundle {
	uint64_t version;                /* backend state version; terminals refuse <= theirs */
	int64_t issued_ms;
	char terminal[KP_ID_MAX + 1];    /* the terminal this bundle was made for */
	uint64_t acked;                  /* that terminal's records the snapshot includes */
	struct kp_bundle_operator *operators;       size_t n_operators;
	struct kp_bundle_product *products;         size_t n_products;
	struct kp_bundle_entitlement *entitlements; size_t n_entitlements;
	struct kp_bundle_deny *denylist;            size_t n_denylist;
	struct kp_bundle_eligibility *eligibility;  size_t n_eligibility;
	/* format 2: the fare engine's configuration and fare feeds (empty arrays are left
	 * out of the encoding) */
	struct kp_bundle_discount *discounts;       size_t n_discounts;
	struct kp_bundle_cap *caps;                 size_t n_caps;
	struct kp_bundle_transfer *transfers;       size_t n_transfers;
	struct kp_bundle_operator_fare *operator_fares; size_t n_operator_fares;
	struct kp_bundle_feed *feeds;               size_t n_feeds;
	/* format 3: the cards' fare state at the other terminals, and product scopes */
	struct kp_bundle_remote *remote;            size_t n_remote;
	struct kp_bundle_scope *scopes;             size_t n_scopes;
	/* format 4: written only when it is not the default policy */
	struct kp_bundle_policy policy;
	int format;                      /* decoded: the bundle format read (1, 2 or 3). The
	                                  * encoder writes the lowest format that can say what
	                                  * the bundle holds, and at least this one */
};
#define KP_BUNDLE_FORMAT 4               /* the highest format read and written */

/* Canonical CBOR payload of a bundle; *out malloc'd. */
int  kp_bundle_encode(const struct kp_bundle *b, uint8_t **out, size_t *out_len);
/* Strict decode of format 1 to 4 (another format: KP_SYNC_E_VERSION); allocates the arrays,
 * each commuter pass's stops and each feed's package (kp_bundle_free frees them all, also
 * in a bundle the caller filled with malloc'd ones). */
int  kp_bundle_decode(const uint8_t *buf, size_t len, struct kp_bundle *b);
void kp_bundle_free(struct kp_bundle *b);
/* COSE_Sign1 (kid "backend") around the encoded bundle; *out malloc'd. */
int  kp_bundle_sign(const struct kp_bundle *b, const kp_key *key, uint8_t **out, size_t *out_len);
/* Verifies the signature with the backend certificate, then decodes. Checks that the
 * bundle is for `terminal` and newer than have_version (else KP_SYNC_E_STALE). */
int  kp_bundle_open(const kp_cert *backend_cert, const uint8_t *cose, size_t len,
                    const char *terminal, uint64_t have_version, struct kp_bundle *b);
/* Added: the same, with a readable reason in err on failure ("bundle is for terminal
 * bus-007, not bus-042", ...). */
int  kp_bundle_open_err(const kp_cert *backend_cert, const uint8_t *cose, size_t len,
                        const char *terminal, uint64_t have_version, struct kp_bundle *b,
                        char *err, size_t err_cap);

/* Added: hard limits of a bundle (kp_bundle_encode and _decode refuse more with
 * KP_SYNC_E_TOOBIG). A bundle travels in one frame, so KP_SYNC_FRAME_MAX is the tighter
 * bound in practice: an entitlement takes about 85 bytes, a denylist entry about 40. */
#define KP_BUNDLE_OPERATORS_MAX     10000
#define KP_BUNDLE_PRODUCTS_MAX      10000
#define KP_BUNDLE_ENTITLEMENTS_MAX  2000000
#define KP_BUNDLE_DENYLIST_MAX      2000000
#define KP_BUNDLE_ELIGIBILITY_MAX   2000000      /* a row takes about 71 bytes, 92 with via */
#define KP_BUNDLE_PRODUCT_OPS_MAX   16           /* operators of one product */
#define KP_BUNDLE_DISCOUNTS_MAX     10000
#define KP_BUNDLE_CAPS_MAX          1000
#define KP_BUNDLE_TRANSFERS_MAX     10000
#define KP_BUNDLE_OPERATOR_FARES_MAX 10000
#define KP_BUNDLE_FEEDS_MAX         64
#define KP_BUNDLE_REMOTE_MAX        2000000      /* a row takes 38 to 377 bytes */
#define KP_BUNDLE_SCOPES_MAX        100000

/* ---- the bundle's arrays as tables ----
 *
 * One table per array says, field by field in wire order, its CBOR key, where it lives in
 * the element's struct, its limits and its SQL column. The encoder, the decoder, the
 * backend's bundle builder and the terminal's apply all read these tables, so a new field
 * is one row here (and a column in each database). Products keep hooks of their own in
 * bundle.c (their keys depend on the kind and the format). */
enum kp_bundle_ftype {
	KP_BF_ID = 1,                    /* char[KP_ID_MAX + 1]: tstr 1..32 */
	KP_BF_ID_ANY,                    /* the same, or "*" */
	KP_BF_TEXT,                      /* char[KP_BUNDLE_TEXT_MAX + 1]: kp_bundle_text_check */
	KP_BF_BYTES,                     /* uint8_t[size]: bstr of exactly size bytes */
	KP_BF_BLOB,                      /* uint8_t * (malloc'd), its size_t length at aux */
	KP_BF_UINT,                      /* int or int64_t (size) in [min, max]: uint */
	KP_BF_INT,                       /* the same, written as a signed int */
	KP_BF_ENUM,                      /* int, an index into names: tstr */
	KP_BF_FLAG,                      /* int: uint 1, written only when set */
	KP_BF_PAIR,                      /* int64_t at offset and at aux: [uint, uint in
	                                  * [min, max]], written only when the second is set */
	KP_BF_MAP,                       /* the fields sub (of the same struct) as a map */
};
enum kp_bundle_fwhen {
	KP_BW_ALWAYS = 0,
	KP_BW_SET,                       /* written only when not zero or empty */
	KP_BW_FLAG,                      /* written only when the int at flag is not zero (the
	                                  * decoder sets it to 1) */
};
#define KP_BF_SQL_NULL 1u                /* SQL NULL when not written (else 0 or '') */
#define KP_BF_SQL_NAME 2u                /* an enum stored by its name (else its index) */
struct kp_bundle_field {
	const char *key;                 /* CBOR key */
	enum kp_bundle_ftype type;
	size_t offset, size;             /* the member */
	size_t aux;                      /* BLOB: the length member; PAIR: the second member */
	enum kp_bundle_fwhen when;
	size_t flag;                     /* KP_BW_FLAG: the int member that says it is there */
	int64_t min, max;                /* UINT, INT, PAIR (its second) */
	const char *const *names;        /* ENUM */
	size_t n_names;
	const struct kp_bundle_field *sub;   /* MAP */
	size_t n_sub;
	int format;                      /* the lowest bundle format with this field (0: 1) */
	unsigned sql;                    /* KP_BF_SQL_* */
	const char *column, *column2;    /* SQL column (PAIR: and the second's); MAP: none */
};
enum kp_bundle_array_id {            /* in wire order */
	KP_BA_CAPS, KP_BA_FEEDS, KP_BA_REMOTE, KP_BA_SCOPES, KP_BA_DENYLIST, KP_BA_PRODUCTS,
	KP_BA_DISCOUNTS, KP_BA_OPERATORS, KP_BA_TRANSFERS, KP_BA_ELIGIBILITY,
	KP_BA_ENTITLEMENTS, KP_BA_OPERATOR_FARES, KP_BA_COUNT
};
struct kp_bundle_array {
	const char *key;                 /* the top-level key */
	size_t elem_size, max;           /* KP_BUNDLE_*_MAX */
	size_t arr_offset, count_offset; /* the array and its count in struct kp_bundle */
	const struct kp_bundle_field *fields;
	size_t n_fields;
	const char *table;               /* its SQL table (the terminal's; feeds: the backend's) */
	const char *order;               /* its canonical order as SQL ORDER BY columns */
};
const struct kp_bundle_array *kp_bundle_array(enum kp_bundle_array_id id);
/* SQL rows of an array: its columns, flattened in field order (a map's fields in turn, a
 * pair's two), at most KP_BUNDLE_ROW_MAX, and which of them are BLOBs. Values are
 * kp_fare_values (below): ints, texts, blobs in s/n, NULL. row_set copies a row into a zeroed
 * element (texts cut on a character boundary, blobs malloc'd: KP_SYNC_E_NOMEM); row_get
 * points into the element. */
#define KP_BUNDLE_ROW_MAX 20
struct kp_fare_value;
size_t kp_bundle_row_columns(enum kp_bundle_array_id id, const char **cols, int *blob);
int  kp_bundle_row_set(enum kp_bundle_array_id id, void *el, const struct kp_fare_value *vals);
void kp_bundle_row_get(enum kp_bundle_array_id id, const void *el, struct kp_fare_value *vals);
/* The SQL of the array's table: "INSERT OR REPLACE INTO t(columns) VALUES (?1, ...)" or
 * "SELECT columns FROM t ORDER BY its order"; KP_SYNC_E_INVAL when it does not fit. */
int  kp_bundle_row_sql(enum kp_bundle_array_id id, int insert, char *sql, size_t cap);

/* ---- the delta: the changes since a version the terminal holds (PROTOCOL.md 5.4) ----
 *
 * Signed like a bundle (kid "backend"); its payload names the version it applies to (base)
 * and the one it makes (version). For each array it carries, the cards whose rows changed
 * (their tokens: every row of those four arrays starts with one) and the rows they have now:
 * the terminal deletes every row of a listed key and puts the rows (a key without a row is
 * gone). Everything else a bundle says (operators, products, the fare engine, feeds, scopes)
 * is not in a delta: a change to it makes the backend send a full bundle instead. */
#define KP_DELTA_FORMAT 1
#define KP_DELTA_KEYS_MAX 1000000        /* keys per array */
struct kp_delta_keys {
	uint8_t (*tokens)[KP_TOKEN_LEN];     /* card tokens, sorted by memcmp, each once */
	size_t n;
};
struct kp_delta {
	uint64_t base;                       /* the version it applies to (>= 1) */
	uint64_t version;                    /* the version it makes (> base) */
	int64_t issued_ms;
	char terminal[KP_ID_MAX + 1];
	uint64_t acked;                      /* that terminal's records the rows include */
	struct kp_bundle_policy policy;      /* the scheme's policy now (as in a bundle) */
	/* keys[KP_BA_DENYLIST], [_ENTITLEMENTS], [_ELIGIBILITY], [_REMOTE]; the others empty */
	struct kp_delta_keys keys[KP_BA_COUNT];
	struct kp_bundle rows;               /* their rows now; only those four arrays */
};
/* The four arrays a delta carries. */
int  kp_delta_array(enum kp_bundle_array_id id);
int  kp_delta_encode(const struct kp_delta *d, uint8_t **out, size_t *out_len);
int  kp_delta_decode(const uint8_t *buf, size_t len, struct kp_delta *d, char *err,
                     size_t err_cap);
void kp_delta_free(struct kp_delta *d);
int  kp_delta_sign(const struct kp_delta *d, const kp_key *key, uint8_t **out, size_t *out_len);
/* Signature (backend certificate, kid "backend"), strict decode, for `terminal`, base equal
 * to have_version (else KP_SYNC_E_STALE: the terminal asks again with its version). */
int  kp_delta_open(const kp_cert *backend_cert, const uint8_t *cose, size_t len,
                   const char *terminal, uint64_t have_version, struct kp_delta *d,
                   char *err, size_t err_cap);

/* ---- fare packages: one imported GTFS fare feed, table by table ----
 *
 * A package is one canonical CBOR map: each non-empty table of a fixed whitelist (the
 * terminal's fare_* tables) -> {"cols": [its column names], "rows": [[values], ...]}, tables
 * in canonical key order, columns exactly the whitelist's, in its order, without feed_id
 * (the bundle's feed id supplies it). fare_feeds is always there, with exactly one row.
 * Values: text (UTF-8, no NUL, at most KP_FARE_PKG_TEXT_MAX bytes), int (int64), or null
 * where the column allows it. Nothing in a package is ever used to build SQL: both ends
 * use the whitelist's own strings. */
enum kp_fare_col_type { KP_FCOL_TEXT = 1, KP_FCOL_INT, KP_FCOL_INT_NULL };
struct kp_fare_table_spec {
	const char *name;
	size_t n_cols;
	const char *const *cols;
	const enum kp_fare_col_type *types;
};
#define KP_FARE_PKG_TABLES      18
#define KP_FARE_PKG_ROWS_MAX    4000000       /* rows of one package, all tables */
#define KP_FARE_PKG_TEXT_MAX    1024
#define KP_FARE_PKG_COLS_MAX    9
/* The whitelist, i in 0 .. KP_FARE_PKG_TABLES - 1, in canonical (package) order; NULL past
 * the end. kp_fare_table_index: the index of a table name, or -1. */
const struct kp_fare_table_spec *kp_fare_table(size_t i);
int kp_fare_table_index(const char *name);
#define KP_FARE_TABLE_FEEDS "fare_feeds"

struct kp_fare_value {
	int is_null;
	int64_t i;                       /* KP_FCOL_INT* */
	const char *s;                   /* KP_FCOL_TEXT: not NUL-terminated */
	size_t n;
};
/* Writing a package: begin with the number of non-empty tables, then each table (in
 * kp_fare_table order) with its row count, then exactly that many rows. finish checks
 * the result with kp_fare_pkg_walk. */
typedef struct kp_fare_pkg_writer kp_fare_pkg_writer;
int  kp_fare_pkg_begin(kp_fare_pkg_writer **out, size_t n_tables);
int  kp_fare_pkg_table(kp_fare_pkg_writer *w, size_t table, size_t n_rows);
int  kp_fare_pkg_row(kp_fare_pkg_writer *w, const struct kp_fare_value *vals);
int  kp_fare_pkg_finish(kp_fare_pkg_writer *w, uint8_t **out, size_t *out_len, char *err,
                        size_t err_cap);
void kp_fare_pkg_writer_free(kp_fare_pkg_writer *w);
/* Strictly decodes a package, calling fn (if not NULL) for each row of each table, or of
 * table `only` when only >= 0; a non-zero return from fn stops the walk and is returned.
 * KP_SYNC_E_MALFORMED (unknown table or column, wrong type, order, duplicates, missing
 * fare_feeds, trailing bytes ...) or KP_SYNC_E_TOOBIG, with the reason in err. *n_rows (if
 * not NULL) gets the rows of all tables. */
int  kp_fare_pkg_walk(const uint8_t *pkg, size_t len, int only,
                      int (*fn)(void *arg, size_t table, const struct kp_fare_value *vals),
                      void *arg, size_t *n_rows, char *err, size_t err_cap);

#endif
