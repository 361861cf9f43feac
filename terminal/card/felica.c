/* SPDX-License-Identifier: Apache-2.0 */
/* FeliCa client: builds command packets, sends them through the HAL and parses replies
 * strictly. A reply is only believed when its LEN byte, response code, IDm and counts all
 * agree with what was asked; anything else is refused with a specific error. */
#include <string.h>

#include "kp_card.h"

#define FELICA_FRAME_MAX 255

void kp_felica_init(struct kp_felica *f, struct kp_reader *r, const struct kp_card_info *info,
                    int timeout_ms)
{
	memset(f, 0, sizeof(*f));
	f->reader = r;
	f->timeout_ms = timeout_ms > 0 ? timeout_ms : 100;
	if (info != NULL && info->tech == KP_TECH_FELICA) {
		memcpy(f->idm, info->u.felica.idm, 8);
		memcpy(f->pmm, info->u.felica.pmm, 8);
	}
}

/* Checks what every reply shares: LEN matches the length, code is cmd+1, and (except
 * for Polling) the IDm is the card's. */
static int check_header(const uint8_t *rx, size_t len, uint8_t cmd, const uint8_t *idm)
{
	size_t min = idm != NULL ? 10 : 2;

	if (len < 2)
		return KP_E_FRAME_SHORT;
	if (rx[0] != len)
		return KP_E_FRAME_LEN;
	if (rx[1] != (uint8_t)(cmd + 1))
		return KP_E_FRAME_CODE;
	if (len < min)
		return KP_E_FRAME_SHORT;
	if (idm != NULL && memcmp(rx + 2, idm, 8) != 0)
		return KP_E_FRAME_IDM;
	return KP_OK;
}

int kp_felica_parse_poll(const uint8_t *rx, size_t len, uint8_t request_code,
                         uint8_t idm[8], uint8_t pmm[8], uint16_t *sys_code_out)
{
	size_t want = (request_code == 1 || request_code == 2) ? 20 : 18;
	int rc = check_header(rx, len, 0x00, NULL);

	if (rc != KP_OK)
		return rc;
	if (len < want)
		return KP_E_FRAME_SHORT;
	if (len > want)
		return KP_E_FRAME_LONG;
	memcpy(idm, rx + 2, 8);
	memcpy(pmm, rx + 10, 8);
	if (sys_code_out != NULL)
		*sys_code_out = request_code == 1 ? (uint16_t)(rx[18] << 8 | rx[19]) : 0;
	return KP_OK;
}

int kp_felica_parse_read(const uint8_t *rx, size_t len, const uint8_t idm[8], size_t n_blocks,
                         uint8_t *out, uint8_t *sf1, uint8_t *sf2)
{
	int rc = check_header(rx, len, 0x06, idm);

	if (rc != KP_OK)
		return rc;
	if (len < 12)
		return KP_E_FRAME_SHORT;
	*sf1 = rx[10];
	*sf2 = rx[11];
	if (rx[10] != 0 || rx[11] != 0)
		/* An error reply carries no block count or data. */
		return len == 12 ? KP_E_CARD_STATUS : KP_E_FRAME_LONG;
	if (len < 13)
		return KP_E_FRAME_SHORT;
	if (rx[12] != n_blocks)
		return KP_E_FRAME_FORMAT;
	if (len < 13 + 16 * n_blocks)
		return KP_E_FRAME_SHORT;
	if (len > 13 + 16 * n_blocks)
		return KP_E_FRAME_LONG;
	memcpy(out, rx + 13, 16 * n_blocks);
	return KP_OK;
}

int kp_felica_parse_request_service(const uint8_t *rx, size_t len, const uint8_t idm[8],
                                    size_t n, uint16_t *key_versions)
{
	int rc = check_header(rx, len, 0x02, idm);

	if (rc != KP_OK)
		return rc;
	if (len < 11)
		return KP_E_FRAME_SHORT;
	if (rx[10] != n)
		return KP_E_FRAME_FORMAT;
	if (len < 11 + 2 * n)
		return KP_E_FRAME_SHORT;
	if (len > 11 + 2 * n)
		return KP_E_FRAME_LONG;
	for (size_t i = 0; i < n; i++)
		key_versions[i] = (uint16_t)(rx[11 + 2 * i] | rx[12 + 2 * i] << 8);
	return KP_OK;
}

static int exchange(struct kp_felica *f, const uint8_t *tx, size_t tx_len, uint8_t *rx,
                    size_t *rx_len)
{
	return kp_reader_transceive(f->reader, tx, tx_len, rx, FELICA_FRAME_MAX, rx_len,
	                            f->timeout_ms);
}

int kp_felica_poll(struct kp_felica *f, uint16_t sys_code, uint8_t request_code,
                   uint8_t idm[8], uint8_t pmm[8], uint16_t *sys_code_out)
{
	uint8_t tx[6] = { 6, 0x00, (uint8_t)(sys_code >> 8), (uint8_t)sys_code, request_code, 0 };
	uint8_t rx[FELICA_FRAME_MAX];
	size_t rx_len = 0;
	int rc = exchange(f, tx, sizeof(tx), rx, &rx_len);

	if (rc != KP_OK)
		return rc;
	return kp_felica_parse_poll(rx, rx_len, request_code, idm, pmm, sys_code_out);
}

int kp_felica_request_service(struct kp_felica *f, const uint16_t *nodes, size_t n,
                              uint16_t *key_versions)
{
	uint8_t tx[FELICA_FRAME_MAX], rx[FELICA_FRAME_MAX];
	size_t tx_len = 0, rx_len = 0;
	int rc;

	if (n == 0 || n > 32)
		return KP_E_INVAL;
	tx[tx_len++] = 0;
	tx[tx_len++] = 0x02;
	memcpy(tx + tx_len, f->idm, 8);
	tx_len += 8;
	tx[tx_len++] = (uint8_t)n;
	for (size_t i = 0; i < n; i++) {
		tx[tx_len++] = (uint8_t)nodes[i];
		tx[tx_len++] = (uint8_t)(nodes[i] >> 8);
	}
	tx[0] = (uint8_t)tx_len;
	rc = exchange(f, tx, tx_len, rx, &rx_len);
	if (rc != KP_OK)
		return rc;
	return kp_felica_parse_request_service(rx, rx_len, f->idm, n, key_versions);
}

int kp_felica_read(struct kp_felica *f, uint16_t service, const uint16_t *blocks, size_t n,
                   uint8_t *out)
{
	uint8_t tx[FELICA_FRAME_MAX], rx[FELICA_FRAME_MAX];
	size_t tx_len = 0, rx_len = 0;
	int rc;

	if (n == 0 || n > KP_FELICA_MAX_BLOCKS)
		return KP_E_INVAL;
	tx[tx_len++] = 0;
	tx[tx_len++] = 0x06;
	memcpy(tx + tx_len, f->idm, 8);
	tx_len += 8;
	tx[tx_len++] = 1;                            /* one service */
	tx[tx_len++] = (uint8_t)service;             /* service code little-endian */
	tx[tx_len++] = (uint8_t)(service >> 8);
	tx[tx_len++] = (uint8_t)n;
	for (size_t i = 0; i < n; i++) {
		if (blocks[i] < 256) {               /* two-byte element: 1 000 0000, block */
			tx[tx_len++] = 0x80;
			tx[tx_len++] = (uint8_t)blocks[i];
		} else {                             /* three-byte element, block number LE */
			tx[tx_len++] = 0x00;
			tx[tx_len++] = (uint8_t)blocks[i];
			tx[tx_len++] = (uint8_t)(blocks[i] >> 8);
		}
	}
	tx[0] = (uint8_t)tx_len;
	rc = exchange(f, tx, tx_len, rx, &rx_len);
	if (rc != KP_OK)
		return rc;
	return kp_felica_parse_read(rx, rx_len, f->idm, n, out, &f->sf1, &f->sf2);
}

int kp_transit_read_balance(struct kp_felica *f, struct kp_transit_balance *out)
{
	uint16_t blk = 0;
	uint8_t data[16];
	int rc = kp_felica_read(f, KP_SVC_BALANCE, &blk, 1, data);

	if (rc != KP_OK)
		return rc;
	out->card_type = data[8] >> 4;
	out->region = data[8] & 0x0F;
	out->balance = (unsigned)(data[11] | data[12] << 8);
	return KP_OK;
}

void kp_transit_parse_history_block(const uint8_t b[16], struct kp_transit_history *h)
{
	unsigned date = (unsigned)(b[4] << 8 | b[5]);

	memset(h, 0, sizeof(*h));
	h->empty = date == 0;
	h->terminal_type = b[0];
	h->process_type = b[1];
	h->year = 2000 + (date >> 9);
	h->month = (date >> 5) & 0x0F;
	h->day = date & 0x1F;
	h->entry = (uint16_t)(b[6] << 8 | b[7]);
	h->exit_ = (uint16_t)(b[8] << 8 | b[9]);
	h->balance = (unsigned)(b[10] | b[11] << 8);
	h->seq = (uint32_t)(b[12] << 16 | b[13] << 8 | b[14]);
	h->region = b[15];
}

int kp_transit_read_history(struct kp_felica *f,
                            struct kp_transit_history out[KP_FELICA_HISTORY_BLOCKS])
{
	uint8_t data[16 * 10];
	uint16_t blocks[10];
	int rc;

	/* 10 blocks per read keeps each frame within the limits cards accept. */
	for (int part = 0; part < 2; part++) {
		for (int i = 0; i < 10; i++)
			blocks[i] = (uint16_t)(part * 10 + i);
		rc = kp_felica_read(f, KP_SVC_HISTORY, blocks, 10, data);
		if (rc != KP_OK)
			return rc;
		for (int i = 0; i < 10; i++)
			kp_transit_parse_history_block(data + 16 * i, &out[part * 10 + i]);
	}
	return KP_OK;
}
