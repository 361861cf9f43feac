/* SPDX-License-Identifier: Apache-2.0 */
/* kippu journal records: canonical CBOR payloads signed as COSE_Sign1 (RFC 9052, ES256).
 * backend-sync owns this format: terminals write it, the backend verifies it.
 *
 * Payload = a CBOR map with unsigned integer keys, encoded deterministically
 * (RFC 8949 section 4.2.1: shortest argument forms, definite lengths, keys in
 * ascending order). Optional fields are left out, never sent as null.
 *    1 v          uint   format version (1)
 *    2 terminal   tstr   terminal id
 *    3 seq        uint   gapless per terminal, from 1
 *    4 time       uint   milliseconds since the Unix epoch (UTC)
 *    5 kind       tstr   "tap" | "link" | "shift" (another kind is KP_RECORD_E_INVAL)
 *    6 token      bstr16 card token (optional: absent when no card was identified)
 *    7 operator   tstr   this terminal's operator
 *    8 route      tstr   (optional)
 *    9 stop       tstr   (optional)
 *   10 product    tstr   product id used (optional)
 *   11 ent        uint   entitlement id used (optional)
 *   12 rides      int    rides deducted (0 when none)
 *   13 amount     int    money charged in the minor unit (0 when none)
 *   14 left       int    rides left after this decision (optional)
 *   15 result     tstr   "accepted" | "refused" | "already"
 *   16 reason     tstr   "ok", "denylisted", "expired", "exhausted", ...
 *   17 prev       bstr32 SHA-256 of the previous record's payload (32 zero bytes for seq 1)
 *   18 via        bstr16 linkage token an eligibility or entitlement came through (optional)
 *   19 category   tstr   rider category applied, e.g. "resident" (optional)
 *   20 event      tstr   fare event: "tap" (flat fare), "tap_on", "tap_off", "no_tap_off"
 *                        (a journey closed without tap-off, charged its maximum fare) (optional)
 *   21 fare       tstr   the fare rules that applied and why the product was chosen,
 *                        up to 160 bytes of UTF-8, e.g. "fare_rules.txt:12; transfer
 *                        A>B -100; cap day adult" (optional)
 *   22 driver     tstr   the driver whose action this record is (console) (optional)
 *
 * Kinds: "tap" (a decision), "shift" (a driver's shift start or end: result "start" or
 * "end", reason "shift", driver set) and "link" (a link request made at a terminal in link mode:
 * token = the transit IC card's token, via = the My Number card's linkage token, result
 * "requested", reason "link-request"; the backend accepts or refuses it on ingest).
 *
 * COSE_Sign1 = tag 18 [ protected: bstr(h'A10126' = {1: -7}), unprotected: {4: kid},
 *                      payload: bstr, signature: bstr(64) ]
 * signed over Sig_structure = ["Signature1", protected, h'', payload]; kid = terminal id.
 * The signature (r || s) is ES256 with a random nonce k from the terminal's signing pool
 * (crypto/kp_sign_pool.h: k·G computed while idle, each k used once), or, when the pool is
 * empty, deterministic RFC 6979: a verifier must not expect either; s is not normalised
 * to low s. */
#ifndef KP_RECORD_H
#define KP_RECORD_H

#include <stddef.h>
#include <stdint.h>
#include "kp_crypto.h"

enum kp_record_rc {
	KP_RECORD_OK          = 0,
	KP_RECORD_E_INVAL     = -0x301, /* a field is out of range or too long */
	KP_RECORD_E_NOMEM     = -0x302,
	KP_RECORD_E_MALFORMED = -0x303, /* not CBOR, or not the shape of a record / COSE_Sign1 */
	KP_RECORD_E_CANONICAL = -0x304, /* valid CBOR but not the deterministic encoding */
	KP_RECORD_E_VERSION   = -0x305, /* unknown format version or algorithm */
	KP_RECORD_E_SIGNATURE = -0x306, /* signature does not verify */
	KP_RECORD_E_CRYPTO    = -0x307,
};

const char *kp_record_strerror(int rc);

#define KP_RECORD_VERSION 1
#define KP_ID_MAX 32                    /* ids and short strings, without the NUL */
#define KP_TOKEN_LEN 16
#define KP_RECORD_FARE_MAX 160          /* bytes of the fare note (key 21) */

struct kp_record {
	uint64_t seq;
	int64_t time_ms;
	char terminal[KP_ID_MAX + 1];
	char kind[KP_ID_MAX + 1];
	int has_token;
	uint8_t token[KP_TOKEN_LEN];
	char operator_id[KP_ID_MAX + 1];
	char route[KP_ID_MAX + 1];          /* "" = absent */
	char stop[KP_ID_MAX + 1];           /* "" = absent */
	char product[KP_ID_MAX + 1];        /* "" = absent */
	int64_t entitlement;                /* 0 = absent */
	int64_t rides;
	int64_t amount;
	int has_left;
	int64_t left;
	char result[KP_ID_MAX + 1];
	char reason[KP_ID_MAX + 1];
	uint8_t prev[KP_SHA256_LEN];
	int has_via;
	uint8_t via[KP_TOKEN_LEN];
	char category[KP_ID_MAX + 1];       /* "" = absent */
	char event[KP_ID_MAX + 1];          /* "" = absent */
	char fare[KP_RECORD_FARE_MAX + 1];  /* "" = absent */
	char driver[KP_ID_MAX + 1];         /* "" = absent */
};

/* Canonical CBOR payload; *out is malloc'd, free() it. */
int kp_record_encode(const struct kp_record *rec, uint8_t **out, size_t *out_len);
/* Strict decode: rejects unknown keys, wrong types, missing fields, trailing bytes and
 * any non-canonical encoding. */
int kp_record_decode(const uint8_t *buf, size_t len, struct kp_record *rec);

/* COSE_Sign1 (tagged) around payload, signed with key; *out is malloc'd. */
int kp_cose_sign1(const kp_key *key, const char *kid, const uint8_t *payload, size_t payload_len,
                  uint8_t **out, size_t *out_len);
/* The same, signed from pool (kp_sign_pool_sign: a random k computed ahead; kp_key_sign
 * when pool is NULL or empty); *pooled (may be NULL) says whether the pool signed. */
int kp_cose_sign1_pooled(kp_sign_pool *pool, const kp_key *key, const char *kid,
                         const uint8_t *payload, size_t payload_len, uint8_t **out,
                         size_t *out_len, int *pooled);
/* Parses a tagged COSE_Sign1, checks alg ES256 and the signature with cert. On success
 * *payload points into cose (no copy) and kid (if not NULL) gets the kid as a string. */
int kp_cose_verify1(const kp_cert *cert, const uint8_t *cose, size_t cose_len,
                    const uint8_t **payload, size_t *payload_len, char *kid, size_t kid_cap);
/* kp_cose_verify1 without the signature check: the form, alg and canonical encoding only
 * (the backend's chain ingest, PROTOCOL.md section 4.2; never alone proof of anything). */
int kp_cose_open1(const uint8_t *cose, size_t cose_len, const uint8_t **payload,
                  size_t *payload_len);
/* The Sig_structure bytes that are hashed and signed (exposed for tests). */
int kp_cose_sig_structure(const uint8_t *payload, size_t payload_len, uint8_t **out, size_t *out_len);

#endif
