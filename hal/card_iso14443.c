/* SPDX-License-Identifier: Apache-2.0 */
/* Minimal ISO 14443 card models: a Type B card that answers APDUs but holds no
 * application the terminal knows, and a Type A card that can only be activated. */
#include <string.h>

#include "card_model.h"

void kp_card_typeb_atqb(const struct kp_card_typeb *c, uint8_t atqb[12])
{
	atqb[0] = 0x50;
	memcpy(atqb + 1, c->pupi, 4);
	memcpy(atqb + 5, c->app_data, 4);
	memcpy(atqb + 9, c->proto_info, 3);
}

int kp_card_typeb_answer(struct kp_card_typeb *c, const uint8_t *tx, size_t tx_len,
                         uint8_t *rx, size_t rx_cap, size_t *rx_len)
{
	uint8_t sw1, sw2;

	if (c == NULL || rx_len == NULL || (tx == NULL && tx_len > 0) || (rx == NULL && rx_cap > 0))
		return KP_HAL_E_INVAL;
	if (tx_len < 4) {
		sw1 = 0x67; /* wrong length */
		sw2 = 0x00;
	} else if (tx[0] == 0x00 && tx[1] == 0xA4 && tx[2] == 0x04) {
		sw1 = 0x6A; /* SELECT by AID: file or application not found */
		sw2 = 0x82;
	} else {
		sw1 = 0x6D; /* instruction not supported */
		sw2 = 0x00;
	}
	*rx_len = 2;
	if (rx_cap < 2)
		return KP_HAL_E_OVERFLOW;
	rx[0] = sw1;
	rx[1] = sw2;
	return KP_HAL_OK;
}

int kp_card_typea_answer(struct kp_card_typea *c, const uint8_t *tx, size_t tx_len,
                         uint8_t *rx, size_t rx_cap, size_t *rx_len)
{
	if (c == NULL || rx_len == NULL || (tx == NULL && tx_len > 0) || (rx == NULL && rx_cap > 0))
		return KP_HAL_E_INVAL;
	*rx_len = 0;
	return KP_HAL_E_TIMEOUT;
}
