/* SPDX-License-Identifier: Apache-2.0 */
/* kippu crypto: the process's random numbers. */
#ifndef KP_RNG_H
#define KP_RNG_H

#include <stddef.h>
#include "kp_crypto_err.h"

/* CSPRNG (mbedTLS CTR_DRBG seeded from the OS entropy source). */
int kp_random(void *buf, size_t len);

#endif
