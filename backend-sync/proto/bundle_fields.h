/* SPDX-License-Identifier: Apache-2.0 */
/* proto/ internal: what bundle.c and bundle_table.c share of the bundle's field tables. */
#ifndef KP_BUNDLE_FIELDS_H
#define KP_BUNDLE_FIELDS_H

#include <stdint.h>

#include "kp_bundle.h"

/* An int or int64_t member (size says which). */
int64_t kp_bundle_field_int(const void *el, size_t off, size_t size);
void kp_bundle_field_put_int(void *el, size_t off, size_t size, int64_t v);
/* 1 when the field is written for this element (KP_BW_*). */
int kp_bundle_field_on(const struct kp_bundle_field *f, const void *el);

#endif
