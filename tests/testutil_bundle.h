/* SPDX-License-Identifier: Apache-2.0 */
/* Helpers for the test programs that link the bundle codec (header-only, beside testutil.h). */
#ifndef KP_TESTUTIL_BUNDLE_H
#define KP_TESTUTIL_BUNDLE_H

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "kp_bundle.h"

/* Random damage to an encoded bundle of n bytes, rounds times: round i flips 1 + i % flips
 * bits of a fresh copy, chosen by a linear congruential generator from seed. Each damaged
 * copy is refused, or decodes to a bundle that encodes back to exactly the damaged bytes. */
static __attribute__((unused)) void tu_bundle_fuzz(const uint8_t *enc, size_t n, uint32_t seed,
                                                   int rounds, int flips)
{
	uint8_t *copy = malloc(n);
	struct kp_bundle d;

	assert_non_null(copy);
	for (int it = 0; it < rounds; it++) {
		uint8_t *re = NULL;
		size_t rn = 0;

		memcpy(copy, enc, n);
		for (int k = 0; k < 1 + it % flips; k++) {
			seed = seed * 1103515245u + 12345u;
			copy[(seed >> 8) % n] ^= (uint8_t)(1u << (seed >> 28 & 7));
		}
		if (kp_bundle_decode(copy, n, &d) != KP_SYNC_OK)
			continue;
		assert_int_equal(kp_bundle_encode(&d, &re, &rn), KP_SYNC_OK);
		assert_int_equal(rn, n);
		assert_memory_equal(re, copy, n);
		free(re);
		kp_bundle_free(&d);
	}
	free(copy);
}

#endif
