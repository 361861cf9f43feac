/* SPDX-License-Identifier: Apache-2.0 */
/* proto/ internal: what bundle.c and bundle_table.c share of the bundle's field tables. */
#ifndef KP_BUNDLE_FIELDS_H
#define KP_BUNDLE_FIELDS_H

#include <stdint.h>

#include "kp_bundle.h"
#include "kp_cbor.h"

/* An int or int64_t member (size says which). */
int64_t kp_bundle_field_int(const void *el, size_t off, size_t size);
void kp_bundle_field_put_int(void *el, size_t off, size_t size, int64_t v);
/* 1 when the field is written for this element (KP_BW_*). */
int kp_bundle_field_on(const struct kp_bundle_field *f, const void *el);

/* What delta.c shares of the bundle's encoding: an array's elements (not products or
 * feeds) checked, sorted and written, or read in canonical order (format KP_BUNDLE_FORMAT's
 * fields); the canonical order of two elements; the My Number policy ("policy": {...}
 * written with its key); the COSE_Sign1 check (backend certificate, ES256, kid). */
int  kp_bundle_rows_write(struct kp_cbor_writer *w, enum kp_bundle_array_id id, const void *arr,
                          size_t n);
int  kp_bundle_rows_read(struct kp_cbor_reader *r, enum kp_bundle_array_id id, void **arr,
                         size_t *n);
int  kp_bundle_rows_cmp(enum kp_bundle_array_id id, const void *a, const void *b);
bool kp_bundle_policy_is_default(const struct kp_bundle_policy *p);
int  kp_bundle_policy_check(const struct kp_bundle_policy *p);
void kp_bundle_policy_write(struct kp_cbor_writer *w, const struct kp_bundle_policy *p);
int  kp_bundle_policy_read(struct kp_cbor_reader *r, struct kp_bundle_policy *p);
/* Signs payload (and frees it) as COSE_Sign1 with kid "backend". */
int  kp_bundle_cose_sign(const kp_key *key, uint8_t *payload, size_t payload_len, uint8_t **out,
                         size_t *out_len);
int  kp_bundle_cose_payload(const kp_cert *backend_cert, const uint8_t *cose, size_t len,
                            const uint8_t **payload, size_t *payload_len, char *err,
                            size_t err_cap);

#endif
