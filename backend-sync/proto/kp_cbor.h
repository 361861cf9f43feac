/* SPDX-License-Identifier: Apache-2.0 */
/* backend-sync internal: the CBOR pieces that record.c, wire.c and bundle.c share.
 * Not a public header: only the .c files of backend-sync include it.
 *
 * - libcbor item builders (record.c builds records and COSE_Sign1 with them);
 * - a direct canonical writer into one growing buffer (messages and bundles: a bundle of
 *   two million entitlements would be tens of millions of libcbor items);
 * - a strict reader that walks input one item at a time with cbor_stream_decode() and never
 *   builds a tree. Never call cbor_load() on untrusted input: libcbor 0.8 allocates whatever
 *   a header claims and cannot decode tag 18.
 *
 * Everything here returns the record module's codes (KP_RECORD_OK, _E_MALFORMED, _E_INVAL,
 * _E_NOMEM), which it grew out of; kp_cbor_sync_rc() turns them into KP_SYNC_E_* codes. */
#ifndef KP_CBOR_UTIL_H
#define KP_CBOR_UTIL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <cbor.h>

#include "kp_record.h"

/* ---- text ---- */

/* RFC 3629 UTF-8: no overlong forms, no surrogates, nothing above U+10FFFF. */
bool kp_cbor_utf8_valid(const uint8_t *s, size_t n);
/* s is NUL-terminated within cap bytes (so at most cap - 1 long), valid UTF-8, and not
 * empty unless may_be_empty. */
bool kp_cbor_text_valid(const char *s, size_t cap, bool may_be_empty);
/* An id: kp_cbor_text_valid(s, KP_ID_MAX + 1, may_be_empty). */
bool kp_cbor_id_valid(const char *s, bool may_be_empty);

/* Copies n bytes of s into dst[cap] for a log line or an error text: control characters
 * become '?', and the copy is cut (on a character boundary) to fit. */
void kp_cbor_text_printable(char *dst, size_t cap, const char *s, size_t n);

/* ---- libcbor builders (shortest integer forms; NULL when out of memory) ---- */

cbor_item_t *kp_cbor_build_uint(uint64_t v);
cbor_item_t *kp_cbor_build_int(int64_t v);
cbor_item_t *kp_cbor_build_tstr(const char *s);
cbor_item_t *kp_cbor_build_bstr(const uint8_t *p, size_t n);     /* p may be NULL if n == 0 */
/* Adds key: val (an unsigned key below 256) and drops our reference to val; a NULL val
 * means its build failed (KP_RECORD_E_NOMEM). */
int kp_cbor_map_put(cbor_item_t *map, uint8_t key, cbor_item_t *val);
/* Appends it and drops our reference to it. */
int kp_cbor_array_put(cbor_item_t *array, cbor_item_t *it);
/* *out malloc'd. */
int kp_cbor_serialize(const cbor_item_t *item, uint8_t **out, size_t *out_len);

/* ---- direct canonical writer ----
 * Starts zeroed ({0}). Errors are sticky: write everything, then check w.rc once
 * (kp_cbor_writer_finish does). Heads always take the shortest form; map keys are written in
 * the order the caller writes them, so callers write them in canonical order. */
struct kp_cbor_writer {
	uint8_t *buf;
	size_t len, cap;
	int rc;
};

void kp_cbor_put_raw(struct kp_cbor_writer *w, const void *p, size_t n);
void kp_cbor_put_head(struct kp_cbor_writer *w, uint8_t major, uint64_t arg);
void kp_cbor_put_uint(struct kp_cbor_writer *w, uint64_t v);
void kp_cbor_put_int(struct kp_cbor_writer *w, int64_t v);
void kp_cbor_put_tstr(struct kp_cbor_writer *w, const char *s);
void kp_cbor_put_bstr(struct kp_cbor_writer *w, const uint8_t *p, size_t n);
void kp_cbor_put_array(struct kp_cbor_writer *w, uint64_t n);
void kp_cbor_put_map(struct kp_cbor_writer *w, uint64_t n);
void kp_cbor_put_null(struct kp_cbor_writer *w);
/* Hands the buffer over (*out malloc'd) or, after an error, frees it and returns the error. */
int  kp_cbor_writer_finish(struct kp_cbor_writer *w, uint8_t **out, size_t *out_len);
void kp_cbor_writer_free(struct kp_cbor_writer *w);

/* ---- strict streaming reader ---- */

enum kp_cbor_type {
	KP_CBOR_NONE, KP_CBOR_UINT, KP_CBOR_NEGINT, KP_CBOR_BSTR, KP_CBOR_TSTR, KP_CBOR_ARRAY,
	KP_CBOR_MAP, KP_CBOR_TAG, KP_CBOR_NULL,
	KP_CBOR_OTHER,          /* floats, booleans, undefined, indefinite starts, break */
};

struct kp_cbor_item {
	enum kp_cbor_type type;
	uint64_t arg;           /* value, length or count */
	const uint8_t *data;    /* strings: the content, inside the input */
	bool shortest;          /* the head used the shortest form for arg */
};

/* Set buf and len, the rest zero. */
struct kp_cbor_reader {
	const uint8_t *buf;
	size_t len, pos;
	bool noncanonical;      /* some head was longer than needed */
};

/* Length of the shortest head for arg. */
size_t kp_cbor_head_len(uint64_t arg);

/* The next item's head (and a string's content). Truncation, reserved values and anything
 * libcbor cannot decode are KP_RECORD_E_MALFORMED. Array and map contents follow as the
 * next items. */
int kp_cbor_next(struct kp_cbor_reader *r, struct kp_cbor_item *it);
int kp_cbor_read_uint(struct kp_cbor_reader *r, uint64_t *v);
int kp_cbor_read_uint63(struct kp_cbor_reader *r, int64_t *v);   /* 0..INT64_MAX */
int kp_cbor_read_int(struct kp_cbor_reader *r, int64_t *v);      /* uint or negint in int64 */
/* A text string into dst[cap] with its NUL: KP_RECORD_E_INVAL if it does not fit or is
 * empty when it may not be; KP_RECORD_E_MALFORMED if not text, has a NUL or is not UTF-8. */
int kp_cbor_read_text(struct kp_cbor_reader *r, char *dst, size_t cap, bool may_be_empty);
/* kp_cbor_read_text(r, dst, KP_ID_MAX + 1, false). */
int kp_cbor_read_id(struct kp_cbor_reader *r, char *dst);
/* A byte string of exactly n bytes. */
int kp_cbor_read_bstr_exact(struct kp_cbor_reader *r, uint8_t *dst, size_t n);
/* A byte string of any length; *p points into the input. */
int kp_cbor_read_bstr(struct kp_cbor_reader *r, const uint8_t **p, size_t *n);
/* A map key that must be exactly the text key (KP_RECORD_E_MALFORMED otherwise). */
int kp_cbor_read_key(struct kp_cbor_reader *r, const char *key);
/* A definite array / map head; *n is the claimed count (not yet checked against the input). */
int kp_cbor_read_array(struct kp_cbor_reader *r, uint64_t *n);
int kp_cbor_read_map(struct kp_cbor_reader *r, uint64_t *n);

/* KP_RECORD_* from the functions above to KP_SYNC_* (E_INVAL on input becomes E_MALFORMED). */
int kp_cbor_sync_rc(int record_rc);

#endif
