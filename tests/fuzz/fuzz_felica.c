/* SPDX-License-Identifier: Apache-2.0 */
/* FeliCa replies as the terminal reads them (terminal/card/felica.c): Polling, Request
 * Service and Read Without Encryption replies, and a transit card's history blocks. The
 * first byte picks the parser and its arguments; the rest is the reply. */
#include "fuzzutil.h"
#include "kp_card.h"

#include <string.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	static const uint8_t idm[8] = { 1, 2, 3, 4, 5, 6, 7, 8 };
	uint8_t out_idm[8], pmm[8], blocks[16 * KP_FELICA_MAX_BLOCKS], sf1, sf2;
	uint16_t sys_code, kv[32];
	struct kp_transit_history h;
	const uint8_t *rx;
	size_t len, n;

	if (size < 1)
		return 0;
	rx = data + 1;
	len = size - 1;
	n = (size_t)(data[0] >> 2) % 33;          /* blocks or nodes asked for, 0..32 */
	switch (data[0] & 3) {
	case 0:
		(void)kp_felica_parse_poll(rx, len, (uint8_t)(n % 3), out_idm, pmm, &sys_code);
		break;
	case 1:
		if (n > KP_FELICA_MAX_BLOCKS)
			n = KP_FELICA_MAX_BLOCKS;
		(void)kp_felica_parse_read(rx, len, len >= 10 ? rx + 2 : idm, n, blocks, &sf1, &sf2);
		break;
	case 2:
		(void)kp_felica_parse_request_service(rx, len, len >= 10 ? rx + 2 : idm, n, kv);
		break;
	default:
		for (size_t i = 0; i + 16 <= len; i += 16)
			kp_transit_parse_history_block(rx + i, &h);
		break;
	}
	return 0;
}
