/* SPDX-License-Identifier: Apache-2.0 */
/* kippu crypto: the only place that calls mbedTLS for primitives. One header per subject,
 * all included here, so callers include this one:
 *   kp_crypto_err.h  error codes and texts      kp_key.h   ECDSA P-256 keys, ES256
 *   kp_hash.h        SHA-256, HMAC, wiping      kp_cert.h  X.509 certificates
 *   kp_rng.h         random numbers             kp_rsa.h   RSA keys and certificates (JPKI)
 *   kp_sign_pool.h   ES256 with nonces computed ahead (the tap's records)
 * Contexts follow mbedTLS's life: load/generate returns an error code, free accepts NULL
 * and wipes secrets. */
#ifndef KP_CRYPTO_H
#define KP_CRYPTO_H

#include "kp_crypto_err.h"
#include "kp_hash.h"
#include "kp_rng.h"
#include "kp_key.h"
#include "kp_cert.h"
#include "kp_rsa.h"
#include "kp_sign_pool.h"

#endif
