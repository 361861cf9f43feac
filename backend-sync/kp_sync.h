/* kippu sync: the wire protocol between terminals and the backend, the signed config
 * bundle, and the client a terminal runs. The protocol is documented in
 * backend-sync/PROTOCOL.md.
 *
 * Frames: a 4-byte big-endian length, then that many bytes of one CBOR message (a map with
 * text keys); a length of 0 or above KP_SYNC_FRAME_MAX ends the connection. */
#ifndef KP_SYNC_H
#define KP_SYNC_H

#include <stddef.h>
#include <stdint.h>
#include "kp_crypto.h"
#include "kp_record.h"
#include "kp_tls.h"

enum kp_sync_rc {
	KP_SYNC_OK          = 0,
	KP_SYNC_E_INVAL     = -0x341,
	KP_SYNC_E_NOMEM     = -0x342,
	KP_SYNC_E_MALFORMED = -0x343, /* a message or bundle that is not what the protocol says */
	KP_SYNC_E_VERSION   = -0x344, /* protocol or bundle version we do not speak */
	KP_SYNC_E_TOOBIG    = -0x345, /* frame above KP_SYNC_FRAME_MAX */
	KP_SYNC_E_REFUSED   = -0x346, /* the backend refused a record (quarantine, wrong terminal) */
	KP_SYNC_E_STALE     = -0x347, /* bundle not newer than the one we have */
	KP_SYNC_E_SIGNATURE = -0x348, /* bundle signature does not verify */
	KP_SYNC_E_PROTOCOL  = -0x349, /* unexpected message in this state */
};
const char *kp_sync_strerror(int rc);
/* Text for any crypto, TLS, record, sync or backend error code (backend-sync/errors.c). */
const char *kp_sync_error_text(int rc);

#define KP_SYNC_VERSION     1
#define KP_SYNC_FRAME_MAX   (16u * 1024 * 1024)
#define KP_SYNC_BATCH_MAX   256           /* records per "records" message */
#define KP_BUNDLE_KID       "backend"

/* ---- messages ---- */

enum kp_msg_type {
	KP_MSG_HELLO = 1,   /* C->S  terminal, config (bundle version held) */
	KP_MSG_WELCOME,     /* S->C  acked (highest contiguous seq the backend holds) */
	KP_MSG_RECORDS,     /* C->S  items: 1..KP_SYNC_BATCH_MAX COSE_Sign1 records, ascending seq */
	KP_MSG_ACK,         /* S->C  acked */
	KP_MSG_REFUSED,     /* S->C  acked, seq (the refused record), reason */
	KP_MSG_GETCONFIG,   /* C->S  config (bundle version held) */
	KP_MSG_CONFIG,      /* S->C  bundle (COSE_Sign1) or none (has_bundle = 0) */
	KP_MSG_BYE,         /* C->S */
	KP_MSG_ERROR,       /* S->C  reason; the server closes after it */
};

struct kp_bytes {
	const uint8_t *p;
	size_t n;
};

/* A decoded message points into the buffer it was decoded from (items too). */
struct kp_msg {
	enum kp_msg_type type;
	char terminal[KP_ID_MAX + 1];    /* hello */
	uint64_t config;                 /* hello, getconfig */
	uint64_t acked;                  /* welcome, ack, refused */
	uint64_t seq;                    /* refused */
	char reason[128];                /* refused, error */
	struct kp_bytes *items;          /* records: malloc'd array of n_items (free with kp_msg_clear) */
	size_t n_items;
	int has_bundle;                  /* config */
	struct kp_bytes bundle;
};

/* Canonical CBOR ({"t": type name, "v": 1, ...}); *out malloc'd. */
int  kp_msg_encode(const struct kp_msg *m, uint8_t **out, size_t *out_len);
/* Strict: unknown keys, wrong types, missing fields, trailing bytes, v != 1 are errors. */
int  kp_msg_decode(const uint8_t *buf, size_t len, struct kp_msg *m);
void kp_msg_clear(struct kp_msg *m);
const char *kp_msg_type_name(enum kp_msg_type t);

/* One frame over TLS. kp_frame_read mallocs *buf (free it). */
int  kp_frame_write(kp_tls *t, const uint8_t *buf, size_t len, int timeout_ms);
int  kp_frame_read(kp_tls *t, uint8_t **buf, size_t *len, int timeout_ms);
/* Encode + frame, and frame + decode (the message points into *buf). */
int  kp_msg_send(kp_tls *t, const struct kp_msg *m, int timeout_ms);
int  kp_msg_recv(kp_tls *t, struct kp_msg *m, uint8_t **buf, int timeout_ms);

/* Added: the same over any byte stream (the TLS versions above are these over kp_tls), in
 * the way mbedTLS takes its bio callbacks: tests run whole exchanges over memory. Both
 * callbacks move exactly len bytes or fail with a negative code, which is passed through. */
struct kp_sync_io {
	void *ctx;
	int (*read_exact)(void *ctx, void *buf, size_t len, int timeout_ms);
	int (*write_all)(void *ctx, const void *buf, size_t len, int timeout_ms);
};
int  kp_frame_write_io(const struct kp_sync_io *io, const uint8_t *buf, size_t len,
                       int timeout_ms);
int  kp_frame_read_io(const struct kp_sync_io *io, uint8_t **buf, size_t *len, int timeout_ms);
int  kp_msg_send_io(const struct kp_sync_io *io, const struct kp_msg *m, int timeout_ms);
int  kp_msg_recv_io(const struct kp_sync_io *io, struct kp_msg *m, uint8_t **buf,
                    int timeout_ms);

/* ---- the config bundle (a full snapshot, signed by the backend's key) ---- */

struct kp_bundle_operator {
	char id[KP_ID_MAX + 1];
	char name[65];
};
struct kp_bundle_product {
	char id[KP_ID_MAX + 1];
	char name[65];
	int64_t rides;
	char category[KP_ID_MAX + 1];    /* "" = any rider; else only riders of this category */
	char operators[16][KP_ID_MAX + 1];
	size_t n_operators;
};
struct kp_bundle_entitlement {
	int64_t id;
	uint8_t token[KP_TOKEN_LEN];
	char product[KP_ID_MAX + 1];
	int64_t remaining;               /* bought - uses reported by all terminals, >= 0 */
	int64_t valid_from_ms, valid_until_ms;
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
	char reason[65];
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
};

/* Canonical CBOR payload of a bundle; *out malloc'd. */
int  kp_bundle_encode(const struct kp_bundle *b, uint8_t **out, size_t *out_len);
/* Strict decode; allocates the arrays (kp_bundle_free). */
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

/* ---- the client a terminal runs ---- */

/* What the client needs from the terminal's store; the terminal implements these. */
struct kp_sync_source {
	void *ctx;
	/* Up to max records with seq > after, ascending: fills items (malloc'd copies, the
	 * client frees each .p with free()) and *n. */
	int (*records_after)(void *ctx, uint64_t after, size_t max, struct kp_bytes *items,
	                     size_t *n);
	/* The backend holds every record up to acked. */
	int (*set_acked)(void *ctx, uint64_t acked);
	/* The bundle version the terminal has applied (0: none). */
	int (*config_version)(void *ctx, uint64_t *version);
	/* Applies a verified bundle in one transaction. */
	int (*apply_bundle)(void *ctx, const struct kp_bundle *b);
};

struct kp_sync_stats {
	uint64_t sent, acked, bundle_version;
	int bundle_applied;
	char refused_reason[128];
	uint64_t refused_seq;
};

/* One exchange: connect, hello, upload what the backend lacks in batches, fetch and apply a
 * newer bundle, bye. err gets a readable reason on failure. */
int kp_sync_run(const kp_tls_conf *conf, const char *host, const char *port,
                const char *server_cn, const char *terminal_id, const kp_cert *backend_cert,
                const struct kp_sync_source *src, int timeout_ms, struct kp_sync_stats *st,
                char *err, size_t err_cap);

/* Added: the exchange of kp_sync_run (hello .. bye) over a connection that is already
 * established; kp_sync_run is connect + TLS handshake + this + close. Returns KP_SYNC_OK,
 * a KP_SYNC_E_* code, a transport code passed through from io (KP_TLS_E_* over TLS), or
 * what a source callback returned. */
int kp_sync_exchange(const struct kp_sync_io *io, const char *terminal_id,
                     const kp_cert *backend_cert, const struct kp_sync_source *src,
                     int timeout_ms, struct kp_sync_stats *st, char *err, size_t err_cap);

#endif
