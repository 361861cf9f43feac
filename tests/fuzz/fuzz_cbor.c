/* SPDX-License-Identifier: Apache-2.0 */
/* The strict CBOR reader (backend-sync/proto/cbor_util.c): kp_cbor_next over every item
 * of the input, and the typed reads every decoder is built of, from the same position. */
#include "fuzzutil.h"
#include "kp_cbor.h"
#include "kp_record.h"

#include <string.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct kp_cbor_reader r = { .buf = data, .len = size };
	struct kp_cbor_item it;
	size_t n = 0;

	while (r.pos < r.len && kp_cbor_next(&r, &it) == KP_RECORD_OK) {
		if (r.pos > r.len)
			__builtin_trap();
		if (it.type == KP_CBOR_TSTR || it.type == KP_CBOR_BSTR) {
			/* the content lies inside the input, before the reader's position */
			if (it.data < data || it.data + it.arg != data + r.pos)
				__builtin_trap();
			if (it.type == KP_CBOR_TSTR)
				(void)kp_cbor_utf8_valid(it.data, (size_t)it.arg);
		}
		n++;
	}
	/* each typed read from the start */
	for (int k = 0; k < 8; k++) {
		struct kp_cbor_reader q = { .buf = data, .len = size };
		char text[KP_ID_MAX + 1];
		uint8_t b16[16];
		const uint8_t *p;
		size_t len;
		uint64_t u;
		int64_t v;
		int rc;

		switch (k) {
		case 0: rc = kp_cbor_read_uint(&q, &u); break;
		case 1: rc = kp_cbor_read_uint63(&q, &v); break;
		case 2: rc = kp_cbor_read_int(&q, &v); break;
		case 3: rc = kp_cbor_read_text(&q, text, sizeof(text), true);
			if (rc == KP_RECORD_OK && (strlen(text) >= sizeof(text) ||
			                           !kp_cbor_text_valid(text, sizeof(text), true)))
				__builtin_trap();
			break;
		case 4: rc = kp_cbor_read_bstr_exact(&q, b16, sizeof(b16)); break;
		case 5: rc = kp_cbor_read_bstr(&q, &p, &len);
			if (rc == KP_RECORD_OK && (p < data || p + len > data + size))
				__builtin_trap();
			break;
		case 6: rc = kp_cbor_read_array(&q, &u); break;
		default: rc = kp_cbor_read_map(&q, &u); break;
		}
		if (rc == KP_RECORD_OK && q.pos > size)
			__builtin_trap();
	}
	(void)n;
	return 0;
}
