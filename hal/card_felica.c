/* SPDX-License-Identifier: Apache-2.0 */
/* The FeliCa transit IC card model: answers Polling, Request Service, Request Response,
 * Read/Write Without Encryption and Request System Code exactly as PROTOCOLS.md sections
 * 1-2 describe. A frame the card cannot make sense of (LEN disagreeing with the length,
 * too short or too long for its command, another IDm, an unknown command) gets no answer,
 * as on a real card, so the reader sees a timeout. */
#include <string.h>

#include "card_model.h"

#define FELICA_HDR   10 /* LEN CMD IDm(8) */
#define SF_OK        0x00
#define SF1_GENERAL  0xFF
#define SF2_SERVICES 0xA1 /* illegal number of services */
#define SF2_BLOCKS   0xA2 /* illegal number of blocks */
#define SF2_ORDER    0xA3 /* block list: service order out of range */
#define SF2_ACCESS   0xA5 /* access not allowed */
#define SF2_SVC_LIST 0xA6 /* illegal service code list */
#define SF2_MODE     0xA7 /* block list: access mode */
#define SF2_BLOCKNUM 0xA8 /* illegal block number */

static const uint8_t felica_default_pmm[8] = { 0x01, 0x20, 0x22, 0x04, 0x27, 0x67, 0x4E, 0xFF };

/* The card's services, in the order felica_block() expects. */
static const uint16_t felica_services[] = { 0x008B, 0x090F, 0x108F };
#define FELICA_N_SERVICES (sizeof(felica_services) / sizeof(felica_services[0]))

struct felica_elem {
	uint8_t order;
	uint8_t access;
	uint16_t block;
};

/* One parsed Read or Write Without Encryption command. */
struct felica_rw {
	uint16_t svc[KP_CARD_FELICA_MAX_SERVICES];
	size_t m;
	struct felica_elem elem[KP_CARD_FELICA_MAX_BLOCKS];
	size_t k;
	uint8_t sf1, sf2;                 /* nonzero: answer with these at once */
};

void kp_card_felica_init(struct kp_card_felica *c, const uint8_t idm[8])
{
	memset(c, 0, sizeof(*c));
	memcpy(c->idm, idm, sizeof(c->idm));
	memcpy(c->pmm, felica_default_pmm, sizeof(c->pmm));
	c->sys_codes[0] = 0x0003;
	c->n_sys = 1;
}

int kp_card_felica_set_sys_codes(struct kp_card_felica *c, const uint16_t *codes, size_t n)
{
	if (n == 0 || n > KP_CARD_FELICA_MAX_SYS)
		return KP_HAL_E_INVAL;
	for (size_t i = 0; i < n; i++) {
		/* FF in either byte is a Polling wildcard, never a card's own code. */
		if ((codes[i] >> 8) == 0xFF || (codes[i] & 0xFF) == 0xFF)
			return KP_HAL_E_INVAL;
		for (size_t j = 0; j < i; j++)
			if (codes[j] == codes[i])
				return KP_HAL_E_INVAL;
	}
	memcpy(c->sys_codes, codes, n * sizeof(codes[0]));
	c->n_sys = n;
	return KP_HAL_OK;
}

void kp_card_felica_set_balance(struct kp_card_felica *c, unsigned card_type, unsigned region,
                                uint16_t balance, uint16_t counter)
{
	uint8_t *b = c->balance[0];

	memset(b, 0, KP_CARD_FELICA_BLOCK);
	b[8] = (uint8_t)((card_type & 0x0F) << 4 | (region & 0x0F));
	b[11] = (uint8_t)(balance & 0xFF);
	b[12] = (uint8_t)(balance >> 8);
	b[14] = (uint8_t)(counter & 0xFF);
	b[15] = (uint8_t)(counter >> 8);
}

int kp_card_felica_push_history(struct kp_card_felica *c, const uint8_t block[16])
{
	if (c->n_history >= KP_CARD_FELICA_HISTORY_BLOCKS)
		return KP_HAL_E_OVERFLOW;
	memcpy(c->history[c->n_history], block, KP_CARD_FELICA_BLOCK);
	c->n_history++;
	return KP_HAL_OK;
}

/* Index into felica_services, or -1. */
static int felica_service_find(uint16_t code)
{
	for (size_t i = 0; i < FELICA_N_SERVICES; i++)
		if (felica_services[i] == code)
			return (int)i;
	return -1;
}

/* An even attribute on one of our service numbers: the service exists, but this access
 * needs a key the mock never has. */
static int felica_service_keyed(uint16_t code)
{
	if (code & 1)
		return 0;
	for (size_t i = 0; i < FELICA_N_SERVICES; i++)
		if ((felica_services[i] >> 6) == (code >> 6))
			return 1;
	return 0;
}

static size_t felica_service_blocks(int idx)
{
	static const size_t n[FELICA_N_SERVICES] = { 1, KP_CARD_FELICA_HISTORY_BLOCKS,
	                                             KP_CARD_FELICA_GATE_BLOCKS };
	return n[idx];
}

static const uint8_t *felica_block(const struct kp_card_felica *c, int idx, uint16_t blk)
{
	if (idx == 0)
		return c->balance[blk];
	if (idx == 1)
		return c->history[blk];
	return c->gate[blk];
}

/* Starts a reply: LEN placeholder, response code, IDm. */
static size_t felica_reply_head(const struct kp_card_felica *c, uint8_t *out, uint8_t code)
{
	out[0] = 0;
	out[1] = code;
	memcpy(out + 2, c->idm, 8);
	return FELICA_HDR;
}

static int felica_polling(const struct kp_card_felica *c, const uint8_t *tx, size_t tx_len,
                          uint8_t *out, size_t *n)
{
	uint8_t sch, scl, tsn;
	size_t hit = c->n_sys;
	size_t len = 0;

	if (tx_len != 6)
		return KP_HAL_E_TIMEOUT;
	sch = tx[2];
	scl = tx[3];
	tsn = tx[5];
	/* Time slot numbers other than these are not defined: a card ignores the poll. */
	if (tsn != 0x00 && tsn != 0x01 && tsn != 0x03 && tsn != 0x07 && tsn != 0x0F)
		return KP_HAL_E_TIMEOUT;
	for (size_t i = 0; i < c->n_sys; i++) {
		uint8_t h = (uint8_t)(c->sys_codes[i] >> 8), l = (uint8_t)c->sys_codes[i];

		if ((sch == 0xFF || sch == h) && (scl == 0xFF || scl == l)) {
			hit = i;
			break;
		}
	}
	if (hit == c->n_sys)
		return KP_HAL_E_TIMEOUT;
	out[len++] = 0;
	out[len++] = 0x01;
	memcpy(out + len, c->idm, 8);
	len += 8;
	memcpy(out + len, c->pmm, 8);
	len += 8;
	if (tx[4] == 0x01) {
		out[len++] = (uint8_t)(c->sys_codes[hit] >> 8);
		out[len++] = (uint8_t)c->sys_codes[hit];
	} else if (tx[4] == 0x02) {
		out[len++] = 0x00;
		out[len++] = 0x83; /* 212 and 424 kbps */
	}
	out[0] = (uint8_t)len;
	*n = len;
	return KP_HAL_OK;
}

static int felica_request_service(const struct kp_card_felica *c, const uint8_t *tx,
                                  size_t tx_len, uint8_t *out, size_t *n)
{
	size_t nodes, len;

	if (tx_len < FELICA_HDR + 1)
		return KP_HAL_E_TIMEOUT;
	nodes = tx[FELICA_HDR];
	if (nodes < 1 || nodes > KP_CARD_FELICA_MAX_NODES)
		return KP_HAL_E_TIMEOUT;
	if (tx_len != FELICA_HDR + 1 + 2 * nodes)
		return KP_HAL_E_TIMEOUT;
	len = felica_reply_head(c, out, 0x03);
	out[len++] = (uint8_t)nodes;
	for (size_t i = 0; i < nodes; i++) {
		const uint8_t *p = tx + FELICA_HDR + 1 + 2 * i;
		uint16_t node = (uint16_t)(p[0] | p[1] << 8);
		uint16_t kv = (node == 0x0000 || felica_service_find(node) >= 0) ? 0x0000 : 0xFFFF;

		out[len++] = (uint8_t)(kv & 0xFF);
		out[len++] = (uint8_t)(kv >> 8);
	}
	out[0] = (uint8_t)len;
	*n = len;
	return KP_HAL_OK;
}

static int felica_request_response(const struct kp_card_felica *c, size_t tx_len,
                                   uint8_t *out, size_t *n)
{
	size_t len;

	if (tx_len != FELICA_HDR)
		return KP_HAL_E_TIMEOUT;
	len = felica_reply_head(c, out, 0x05);
	out[len++] = 0x00; /* mode 0: no authentication in progress */
	out[0] = (uint8_t)len;
	*n = len;
	return KP_HAL_OK;
}

static int felica_request_system_code(const struct kp_card_felica *c, size_t tx_len,
                                      uint8_t *out, size_t *n)
{
	size_t len;

	if (tx_len != FELICA_HDR)
		return KP_HAL_E_TIMEOUT;
	len = felica_reply_head(c, out, 0x0D);
	out[len++] = (uint8_t)c->n_sys;
	for (size_t i = 0; i < c->n_sys; i++) {
		out[len++] = (uint8_t)(c->sys_codes[i] >> 8);
		out[len++] = (uint8_t)c->sys_codes[i];
	}
	out[0] = (uint8_t)len;
	*n = len;
	return KP_HAL_OK;
}

/* Parses `m [svc]*m k [elem]*k` (plus 16*k data bytes when data is set) in frame order.
 * A count out of range sets rw->sf1/sf2 and stops; a list that runs past the end of the
 * frame, or a frame with bytes left over, is malformed: the card stays silent. */
static int felica_parse_rw(const uint8_t *tx, size_t tx_len, int data, struct felica_rw *rw)
{
	size_t pos = FELICA_HDR;

	memset(rw, 0, sizeof(*rw));
	if (tx_len < pos + 1)
		return KP_HAL_E_TIMEOUT;
	rw->m = tx[pos++];
	if (rw->m < 1 || rw->m > KP_CARD_FELICA_MAX_SERVICES) {
		rw->sf1 = SF1_GENERAL;
		rw->sf2 = SF2_SERVICES;
		return KP_HAL_OK;
	}
	if (tx_len < pos + 2 * rw->m + 1)
		return KP_HAL_E_TIMEOUT;
	for (size_t i = 0; i < rw->m; i++, pos += 2)
		rw->svc[i] = (uint16_t)(tx[pos] | tx[pos + 1] << 8);
	rw->k = tx[pos++];
	if (rw->k < 1 || rw->k > KP_CARD_FELICA_MAX_BLOCKS) {
		rw->sf1 = SF1_GENERAL;
		rw->sf2 = SF2_BLOCKS;
		return KP_HAL_OK;
	}
	for (size_t i = 0; i < rw->k; i++) {
		struct felica_elem *e = &rw->elem[i];
		uint8_t b;

		if (tx_len < pos + 2)
			return KP_HAL_E_TIMEOUT;
		b = tx[pos];
		e->order = b & 0x0F;
		e->access = (b >> 4) & 0x07;
		if (b & 0x80) {
			e->block = tx[pos + 1];
			pos += 2;
		} else {
			if (tx_len < pos + 3)
				return KP_HAL_E_TIMEOUT;
			e->block = (uint16_t)(tx[pos + 1] | tx[pos + 2] << 8);
			pos += 3;
		}
	}
	if (data)
		pos += KP_CARD_FELICA_BLOCK * rw->k;
	if (pos != tx_len)
		return KP_HAL_E_TIMEOUT;
	return KP_HAL_OK;
}

/* The status checks after parsing: the service list first (A6), then each block list
 * element in turn (A3, A7, A5, A8), SF1 being the 1-based index of the failing entry. */
static void felica_check_rw(struct felica_rw *rw, int writing)
{
	for (size_t i = 0; i < rw->m; i++) {
		if (felica_service_find(rw->svc[i]) < 0 && !felica_service_keyed(rw->svc[i])) {
			rw->sf1 = (uint8_t)(i + 1);
			rw->sf2 = SF2_SVC_LIST;
			return;
		}
	}
	for (size_t i = 0; i < rw->k; i++) {
		const struct felica_elem *e = &rw->elem[i];
		uint8_t sf2 = SF_OK;
		int idx;

		if (e->order >= rw->m) {
			sf2 = SF2_ORDER;
		} else if (e->access != 0) {
			sf2 = SF2_MODE;
		} else {
			idx = felica_service_find(rw->svc[e->order]);
			/* Every service of this card is read-only. */
			if (idx < 0 || writing)
				sf2 = SF2_ACCESS;
			else if (e->block >= felica_service_blocks(idx))
				sf2 = SF2_BLOCKNUM;
		}
		if (sf2 != SF_OK) {
			rw->sf1 = (uint8_t)(i + 1);
			rw->sf2 = sf2;
			return;
		}
	}
}

static size_t felica_status_reply(const struct kp_card_felica *c, uint8_t code,
                                  const struct felica_rw *rw, uint8_t *out)
{
	size_t len = felica_reply_head(c, out, code);

	out[len++] = rw->sf1;
	out[len++] = rw->sf2;
	out[0] = (uint8_t)len;
	return len;
}

static int felica_read(const struct kp_card_felica *c, const uint8_t *tx, size_t tx_len,
                       uint8_t *out, size_t *n)
{
	struct felica_rw rw;
	size_t len;
	int rc = felica_parse_rw(tx, tx_len, 0, &rw);

	if (rc != KP_HAL_OK)
		return rc;
	if (rw.sf1 == SF_OK && rw.sf2 == SF_OK)
		felica_check_rw(&rw, 0);
	if (rw.sf1 != SF_OK || rw.sf2 != SF_OK) {
		*n = felica_status_reply(c, 0x07, &rw, out);
		return KP_HAL_OK;
	}
	len = felica_status_reply(c, 0x07, &rw, out);
	out[len++] = (uint8_t)rw.k;
	for (size_t i = 0; i < rw.k; i++) {
		int idx = felica_service_find(rw.svc[rw.elem[i].order]);

		memcpy(out + len, felica_block(c, idx, rw.elem[i].block), KP_CARD_FELICA_BLOCK);
		len += KP_CARD_FELICA_BLOCK;
	}
	out[0] = (uint8_t)len;
	*n = len;
	return KP_HAL_OK;
}

static int felica_write(const struct kp_card_felica *c, const uint8_t *tx, size_t tx_len,
                        uint8_t *out, size_t *n)
{
	struct felica_rw rw;
	int rc = felica_parse_rw(tx, tx_len, 1, &rw);

	if (rc != KP_HAL_OK)
		return rc;
	if (rw.sf1 == SF_OK && rw.sf2 == SF_OK)
		felica_check_rw(&rw, 1);
	*n = felica_status_reply(c, 0x09, &rw, out);
	return KP_HAL_OK;
}

int kp_card_felica_answer(struct kp_card_felica *c, const uint8_t *tx, size_t tx_len,
                          uint8_t *rx, size_t rx_cap, size_t *rx_len)
{
	/* Every reply is built here first: the longest (Read of 12 blocks) is 205 bytes. */
	uint8_t out[KP_CARD_FELICA_FRAME_MAX];
	size_t n = 0;
	int rc;

	if (c == NULL || rx_len == NULL || (tx == NULL && tx_len > 0) || (rx == NULL && rx_cap > 0))
		return KP_HAL_E_INVAL;
	*rx_len = 0;
	if (tx_len < 2 || tx_len > KP_CARD_FELICA_FRAME_MAX || tx[0] != tx_len) {
		rc = KP_HAL_E_TIMEOUT;
		goto out;
	}
	if (tx[1] == 0x00) {
		rc = felica_polling(c, tx, tx_len, out, &n);
		goto out;
	}
	if (tx_len < FELICA_HDR || memcmp(tx + 2, c->idm, 8) != 0) {
		rc = KP_HAL_E_TIMEOUT;
		goto out;
	}
	switch (tx[1]) {
	case 0x02:
		rc = felica_request_service(c, tx, tx_len, out, &n);
		break;
	case 0x04:
		rc = felica_request_response(c, tx_len, out, &n);
		break;
	case 0x06:
		rc = felica_read(c, tx, tx_len, out, &n);
		break;
	case 0x08:
		rc = felica_write(c, tx, tx_len, out, &n);
		break;
	case 0x0C:
		rc = felica_request_system_code(c, tx_len, out, &n);
		break;
	default:
		rc = KP_HAL_E_TIMEOUT;
		break;
	}
out:
	if (rc != KP_HAL_OK)
		return rc;
	*rx_len = n;
	if (n > rx_cap)
		return KP_HAL_E_OVERFLOW;
	memcpy(rx, out, n);
	return KP_HAL_OK;
}
