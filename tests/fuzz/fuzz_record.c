/* SPDX-License-Identifier: Apache-2.0 */
/* A journal record as the backend receives it: a COSE_Sign1 (kp_cose_open1, then
 * kp_cose_verify1 against a fixed certificate) around the record's CBOR payload
 * (kp_record_decode); the input is also decoded as a bare payload. A payload the strict
 * decoder accepts must encode back to the very same bytes. */
#include "fuzzutil.h"
#include "kp_cert.h"
#include "kp_record.h"

#include <stdlib.h>
#include <string.h>

static kp_cert *cert;

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
	if (kp_cert_load(&cert, fuzz_data_file("fuzz-cert.pem")) != 0)
		cert = NULL;     /* run from elsewhere: the signature check is skipped */
	return 0;
}

static void payload(const uint8_t *p, size_t n)
{
	struct kp_record rec;
	uint8_t *out = NULL;
	size_t out_len = 0;

	if (kp_record_decode(p, n, &rec) != KP_RECORD_OK)
		return;
	if (kp_record_encode(&rec, &out, &out_len) != KP_RECORD_OK || out_len != n ||
	    memcmp(out, p, n) != 0)
		__builtin_trap();       /* accepted, yet not canonical */
	free(out);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	const uint8_t *p, *p2;
	size_t n, n2;
	char kid[KP_ID_MAX + 1];

	payload(data, size);
	if (kp_cose_open1(data, size, &p, &n) == KP_RECORD_OK) {
		if (p < data || p + n > data + size)
			__builtin_trap();
		payload(p, n);
	}
	if (cert != NULL && kp_cose_verify1(cert, data, size, &p2, &n2, kid, sizeof(kid)) ==
	    KP_RECORD_OK && strlen(kid) >= sizeof(kid))
		__builtin_trap();
	return 0;
}
