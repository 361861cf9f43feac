/* SPDX-License-Identifier: Apache-2.0 */
/* A config bundle as the terminal receives it: kp_bundle_open_err (COSE_Sign1 verified with
 * a fixed backend certificate, then decoded), the bare payload through kp_bundle_decode
 * (which must encode back to the same bytes when accepted) and, when accepted, the
 * terminal's apply path (the store's sync source, as the sync client calls it) on a fresh
 * in-memory store; and a fare package through kp_fare_pkg_walk (the strict reader of a
 * bundle's GTFS fare tables). */
#include "fuzzutil.h"
#include "kp_bundle.h"
#include "kp_cert.h"
#include "kp_proto.h"
#include "kp_store.h"

#include <stdlib.h>
#include <string.h>

static kp_cert *cert;

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
	if (kp_cert_load(&cert, fuzz_data_file("fuzz-cert.pem")) != 0)
		cert = NULL;
	return 0;
}

static int count_row(void *arg, size_t table, const struct kp_fare_value *vals)
{
	(*(size_t *)arg)++;
	return 0;
}

static void apply(const struct kp_bundle *b)
{
	struct kp_sync_source src;

	kp_store_sync_source(fuzz_fresh_store(), &src);
	(void)src.apply_bundle(src.ctx, b);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct kp_bundle b;
	char err[256];
	size_t rows = 0, n_rows = 0;

	memset(&b, 0, sizeof(b));
	if (kp_bundle_decode(data, size, &b) == KP_SYNC_OK) {
		uint8_t *out = NULL;
		size_t out_len = 0;

		if (kp_bundle_encode(&b, &out, &out_len) != KP_SYNC_OK || out_len != size ||
		    memcmp(out, data, size) != 0)
			__builtin_trap();       /* accepted, yet not canonical */
		free(out);
		apply(&b);
	}
	kp_bundle_free(&b);
	if (cert != NULL) {
		memset(&b, 0, sizeof(b));
		if (kp_bundle_open_err(cert, data, size, "fuzz-term", 0, &b, err, sizeof(err)) ==
		    KP_SYNC_OK)
			kp_bundle_free(&b);
	}
	if (kp_fare_pkg_walk(data, size, -1, count_row, &rows, &n_rows, err, sizeof(err)) ==
	    KP_SYNC_OK && rows != n_rows)
		__builtin_trap();
	return 0;
}
