/* SPDX-License-Identifier: Apache-2.0 */
/* kippu crypto: ECDSA P-256 keys and ES256 signatures. */
#ifndef KP_KEY_H
#define KP_KEY_H

#include <stdint.h>
#include "kp_crypto_err.h"
#include "kp_hash.h"

#define KP_ES256_SIG_LEN 64             /* r || s, 32 bytes each (COSE form) */

typedef struct kp_key kp_key;
int  kp_key_generate(kp_key **out);
int  kp_key_load(kp_key **out, const char *path);        /* PEM or DER private key */
/* Writes the private key as PEM with mode 0600; refuses to overwrite (KP_CRYPTO_E_EXISTS). */
int  kp_key_save(const kp_key *key, const char *path);
/* Writes the public key as PEM (SubjectPublicKeyInfo). */
int  kp_key_save_public(const kp_key *key, const char *path);
/* ES256 over a SHA-256 hash, deterministic (RFC 6979), signature as r || s. */
int  kp_key_sign(const kp_key *key, const uint8_t hash[KP_SHA256_LEN],
                 uint8_t sig[KP_ES256_SIG_LEN]);
/* Verifies with the key's own public half. */
int  kp_key_verify(const kp_key *key, const uint8_t hash[KP_SHA256_LEN],
                   const uint8_t sig[KP_ES256_SIG_LEN]);
void kp_key_free(kp_key *key);
/* Added: a key from its raw private scalar d (big-endian, 1 <= d < n), e.g. for test
 * vectors. KP_CRYPTO_E_INVAL if d is out of range. */
int  kp_key_from_raw(kp_key **out, const uint8_t d[32]);
/* Threads: kp_key_sign / kp_key_verify may be called from one thread at a time per key;
 * different keys are independent. */

#endif
