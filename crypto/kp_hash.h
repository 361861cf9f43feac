/* SPDX-License-Identifier: Apache-2.0 */
/* kippu crypto: SHA-256, HMAC-SHA-256, wiping and constant-time comparison. */
#ifndef KP_HASH_H
#define KP_HASH_H

#include <stddef.h>
#include <stdint.h>
#include "kp_crypto_err.h"

#define KP_SHA256_LEN 32

int kp_sha256(const void *data, size_t len, uint8_t out[KP_SHA256_LEN]);
int kp_hmac_sha256(const uint8_t *key, size_t key_len, const void *msg, size_t msg_len,
                   uint8_t out[KP_SHA256_LEN]);
/* Wipes memory in a way the compiler cannot drop. */
void kp_zeroize(void *p, size_t len);
/* Constant-time comparison: 0 when equal. */
int kp_memcmp_ct(const void *a, const void *b, size_t len);

#endif
