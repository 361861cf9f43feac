/* SPDX-License-Identifier: Apache-2.0 */
/* kippu sync protocol, proto/: error codes, the messages and frames between terminals and
 * the backend, and what the client needs from a terminal's journal (kp_sync_source). The
 * bundle is in kp_bundle.h, the client in client/kp_client.h. The protocol is documented in
 * backend-sync/PROTOCOL.md.
 *
 * Frames: a 4-byte big-endian length, then that many bytes of one CBOR message (a map with
 * text keys); a length of 0 or above KP_SYNC_FRAME_MAX ends the connection. */
#ifndef KP_PROTO_H
#define KP_PROTO_H

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
	KP_SYNC_E_JOURNAL   = -0x34A, /* the backend holds another journal under this terminal id
	                               * (database replaced or restored): nothing sent or deleted */
};
const char *kp_sync_strerror(int rc);
/* Text for any crypto, TLS, record or sync error code (backend-sync/proto/errors.c). */
const char *kp_sync_error_text(int rc);

#define KP_SYNC_VERSION     1
#define KP_SYNC_FRAME_MAX   (16u * 1024 * 1024)
#define KP_SYNC_BATCH_MAX   256           /* records per "records" message */
#define KP_BUNDLE_KID       "backend"

/* A journal's identity: 16 random bytes made with the terminal's database (PROTOCOL.md
 * section 4.1). All zeros names the journal of a database made before journal ids, which
 * sends none. */
#define KP_JOURNAL_ID_LEN   16
static inline int kp_journal_id_is_legacy(const uint8_t id[KP_JOURNAL_ID_LEN])
{
	uint8_t acc = 0;

	for (int i = 0; i < KP_JOURNAL_ID_LEN; i++)
		acc |= id[i];
	return acc == 0;
}

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
	KP_MSG_GETDELTA,    /* C->S  config: the changes since this version, please */
	KP_MSG_DELTA,       /* S->C  bundle: a signed delta (kp_delta); the answer may also be
	                     *       config (a full bundle, or none: up to date) */
};
#define KP_MSG_LAST KP_MSG_DELTA

struct kp_bytes {
	const uint8_t *p;
	size_t n;
};

/* A decoded message points into the buffer it was decoded from (items too). */
struct kp_msg {
	enum kp_msg_type type;
	char terminal[KP_ID_MAX + 1];    /* hello */
	uint64_t config;                 /* hello, getconfig, getdelta */
	uint64_t acked;                  /* welcome, ack, refused */
	int chain;                       /* hello, optional: 1 = send me the hash at acked */
	int has_journal;                 /* hello, optional: the journal's id (absent: the */
	uint8_t journal[KP_JOURNAL_ID_LEN]; /* legacy journal, all zeros; present: never 0s) */
	int has_last;                    /* hello, optional: the seq of the newest record in */
	uint64_t last;                   /*   the terminal's journal (0: none) */
	int has_head;                    /* welcome, optional (only to a hello with chain): */
	uint8_t head[KP_SHA256_LEN];     /*   SHA-256 of the payload of record acked (0s: none) */
	uint64_t seq;                    /* refused */
	char reason[128];                /* refused, error */
	struct kp_bytes *items;          /* records: malloc'd array of n_items (free with kp_msg_clear) */
	size_t n_items;
	int has_bundle;                  /* config, delta */
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

/* ---- a journal as the sync client reads it ---- */

struct kp_bundle;
struct kp_delta;

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
	/* Optional (NULL: the client asks for full bundles only, getconfig): applies a verified
	 * delta in one transaction, refusing it with KP_SYNC_E_STALE when its base is not the
	 * version applied (the client then asks again with the version it holds). */
	int (*apply_delta)(void *ctx, const struct kp_delta *d);
	/* Optional (NULL: the legacy journal, all zeros, and no way out of another journal).
	 * journal_id: this database's journal id. new_journal: the backend holds another
	 * journal under our id (a database restored from a backup): store a fresh random id,
	 * return it; the records stay as they are (PROTOCOL.md section 4.1). */
	int (*journal_id)(void *ctx, uint8_t id[KP_JOURNAL_ID_LEN]);
	int (*new_journal)(void *ctx, uint8_t id[KP_JOURNAL_ID_LEN]);
	/* Optional (NULL: the hello reports nothing): the seq of the newest record in the
	 * journal (0: none), sent in every hello as `last` (the backend's unsent count). */
	int (*last_seq)(void *ctx, uint64_t *seq);
	/* Optional: what went wrong in the last callback that failed ("" or NULL: nothing
	 * more to say), for the client's error text. */
	const char *(*errmsg)(void *ctx);
};

#endif
