/* SPDX-License-Identifier: Apache-2.0 */
/* The sync protocol as both ends read it: frames from a byte stream (kp_frame_read_io over
 * memory), each decoded as a message (kp_msg_decode), and a records message's items opened
 * as the backend does (kp_cose_open1, kp_record_decode). A message the decoder accepts
 * encodes back to the same bytes (PROTOCOL.md: only the canonical encoding is taken). */
#include "fuzzutil.h"
#include "kp_proto.h"
#include "kp_record.h"

#include <stdlib.h>
#include <string.h>

struct mem {
	const uint8_t *p;
	size_t n;
};

static int mem_read(void *ctx, void *buf, size_t len, int timeout_ms)
{
	struct mem *m = ctx;

	if (len > m->n)
		return -1;
	memcpy(buf, m->p, len);
	m->p += len;
	m->n -= len;
	return 0;
}

static int mem_write(void *ctx, const void *buf, size_t len, int timeout_ms)
{
	return 0;
}

static void message(const uint8_t *buf, size_t len)
{
	struct kp_msg m;
	uint8_t *out = NULL;
	size_t out_len = 0;

	memset(&m, 0, sizeof(m));
	if (kp_msg_decode(buf, len, &m) != KP_SYNC_OK)
		return;
	(void)kp_msg_type_name(m.type);
	for (size_t i = 0; i < m.n_items; i++) {
		const uint8_t *p;
		size_t n;
		struct kp_record rec;

		if (kp_cose_open1(m.items[i].p, m.items[i].n, &p, &n) == KP_RECORD_OK)
			(void)kp_record_decode(p, n, &rec);
	}
	if (kp_msg_encode(&m, &out, &out_len) != KP_SYNC_OK || out_len != len ||
	    memcmp(out, buf, len) != 0)
		__builtin_trap();       /* accepted, yet not canonical */
	free(out);
	kp_msg_clear(&m);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct mem mem = { data, size };
	struct kp_sync_io io = { &mem, mem_read, mem_write };

	message(data, size);
	for (int k = 0; k < 4; k++) {
		uint8_t *buf = NULL;
		size_t len = 0;

		if (kp_frame_read_io(&io, &buf, &len, 1000) != KP_SYNC_OK) {
			free(buf);
			break;
		}
		message(buf, len);
		free(buf);
	}
	return 0;
}
