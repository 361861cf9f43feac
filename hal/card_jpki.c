/* SPDX-License-Identifier: Apache-2.0 */
/* The My Number card model: the JPKI application's user authentication, APDU by APDU
 * (PROTOCOLS.md section 3; status words in hal/SCENARIO.md). The signature itself comes from
 * the signer registered with kp_mock_set_rsa_signer, because hal/ links no crypto. The
 * input-support and card-face APs exist only to be counted: kippu must never select them. */
#include <stdlib.h>
#include <string.h>

#include "card_model.h"

#define SW_OK               0x9000
#define SW_WRONG_LENGTH     0x6700
#define SW_INCOMPATIBLE     0x6981 /* command incompatible with file structure */
#define SW_SECURITY         0x6982 /* security status not satisfied */
#define SW_BLOCKED          0x6984 /* reference data not usable */
#define SW_NOT_ALLOWED      0x6986 /* command not allowed (no current EF) */
#define SW_NOT_FOUND        0x6A82
#define SW_WRONG_P1P2       0x6A86
#define SW_WRONG_OFFSET     0x6B00
#define SW_WRONG_LE         0x6C00 /* | the number of bytes there are */
#define SW_RETRIES          0x63C0 /* | tries left */
#define SW_INS              0x6D00
#define SW_CLA              0x6E00
#define SW_NO_DIAGNOSIS     0x6F00

#define EF_SIGN_CERT 0x0001
#define EF_AUTH_CERT 0x000A
#define EF_AUTH_CA   0x000B
#define EF_AUTH_KEY  0x0017
#define EF_AUTH_PIN  0x0018
#define AID_LEN      10
#define SIG_MAX      256   /* RSA-2048 */

static const uint8_t aid_jpki[AID_LEN] = { 0xD3, 0x92, 0xF0, 0x00, 0x26, 0x01, 0x00, 0x00, 0x00, 0x01 };
static const uint8_t aid_input_support[AID_LEN] = { 0xD3, 0x92, 0x10, 0x00, 0x31, 0x00, 0x01, 0x01, 0x04, 0x08 };
static const uint8_t aid_card_face[AID_LEN] = { 0xD3, 0x92, 0x10, 0x00, 0x31, 0x00, 0x01, 0x01, 0x04, 0x02 };

/* The process's signer (kp_hal.h): set before readers are used, read by every card. */
static int (*jpki_signer)(void *ctx, const uint8_t *key, size_t key_len, const uint8_t *di,
                          size_t di_len, uint8_t *sig, size_t sig_cap, size_t *sig_len);
static void *jpki_signer_ctx;

void kp_mock_set_rsa_signer(int (*sign)(void *ctx, const uint8_t *key, size_t key_len,
                                        const uint8_t *di, size_t di_len, uint8_t *sig,
                                        size_t sig_cap, size_t *sig_len),
                            void *ctx)
{
	jpki_signer = sign;
	jpki_signer_ctx = sign != NULL ? ctx : NULL;
}

void kp_card_jpki_init(struct kp_card_jpki *c, const uint8_t pupi[4])
{
	memset(c, 0, sizeof(*c));
	memcpy(c->b.pupi, pupi, sizeof(c->b.pupi));
	c->b.proto_info[1] = 0x81;
	c->b.proto_info[2] = 0x71;
	memcpy(c->pin, "1234", sizeof(c->pin));
	c->tries_max = KP_CARD_JPKI_TRIES_DEFAULT;
	c->tries_left = KP_CARD_JPKI_TRIES_DEFAULT;
}

void kp_card_jpki_reset(struct kp_card_jpki *c)
{
	c->df = KP_CARD_JPKI_DF_NONE;
	c->ef = 0;
	c->ef_selected = 0;
	c->pin_ok = 0;
}

void kp_card_jpki_free(struct kp_card_jpki *c)
{
	if (c == NULL)
		return;
	free(c->auth_cert);
	free(c->ca_cert);
	if (c->key != NULL) {
		explicit_bzero(c->key, c->key_len + 1);   /* the NUL after it too */
		free(c->key);
	}
	c->auth_cert = c->ca_cert = c->key = NULL;
	c->auth_cert_len = c->ca_cert_len = c->key_len = 0;
}

static int jpki_forbidden_df(const struct kp_card_jpki *c)
{
	return c->df == KP_CARD_JPKI_DF_INPUT_SUPPORT || c->df == KP_CARD_JPKI_DF_CARD_FACE;
}

/* SELECT DF by AID: 00 A4 04 0C 0A <AID>. A DF selection starts over: no EF, no PIN. */
static unsigned jpki_select_df(struct kp_card_jpki *c, const uint8_t *tx, size_t tx_len)
{
	enum kp_card_jpki_df df;

	if (tx_len < 5 || tx[4] == 0 || tx_len != 5 + (size_t)tx[4])
		return SW_WRONG_LENGTH;
	if (tx[4] != AID_LEN)
		return SW_NOT_FOUND;
	if (memcmp(tx + 5, aid_jpki, AID_LEN) == 0) {
		df = KP_CARD_JPKI_DF_JPKI;
		c->stats.select_jpki++;
	} else if (memcmp(tx + 5, aid_input_support, AID_LEN) == 0) {
		df = KP_CARD_JPKI_DF_INPUT_SUPPORT;
		c->stats.select_input_support++;
	} else if (memcmp(tx + 5, aid_card_face, AID_LEN) == 0) {
		df = KP_CARD_JPKI_DF_CARD_FACE;
		c->stats.select_card_face++;
	} else {
		return SW_NOT_FOUND;  /* the current DF stays */
	}
	kp_card_jpki_reset(c);
	c->df = df;
	return SW_OK;
}

/* SELECT EF: 00 A4 02 0C 02 <FID>, within the current DF. */
static unsigned jpki_select_ef(struct kp_card_jpki *c, const uint8_t *tx, size_t tx_len)
{
	uint16_t fid;

	if (tx_len != 7 || tx[4] != 2)
		return SW_WRONG_LENGTH;
	fid = (uint16_t)(tx[5] << 8 | tx[6]);
	if (c->df == KP_CARD_JPKI_DF_NONE)
		return SW_NOT_FOUND;  /* the MF holds none of these */
	if (c->df == KP_CARD_JPKI_DF_JPKI && fid != EF_AUTH_CERT && fid != EF_AUTH_CA &&
	    fid != EF_AUTH_PIN && fid != EF_AUTH_KEY && fid != EF_SIGN_CERT)
		return SW_NOT_FOUND;  /* the current EF stays */
	/* Under the other APs every EF "exists" and holds nothing we give out. */
	c->ef = fid;
	c->ef_selected = 1;
	return SW_OK;
}

static unsigned jpki_select(struct kp_card_jpki *c, const uint8_t *tx, size_t tx_len)
{
	if (tx[3] != 0x0C)
		return SW_WRONG_P1P2;     /* only "no response data" */
	if (tx[2] == 0x04)
		return jpki_select_df(c, tx, tx_len);
	if (tx[2] == 0x02)
		return jpki_select_ef(c, tx, tx_len);
	return SW_WRONG_P1P2;
}

/* READ BINARY: 00 B0 <offset hi> <offset lo> <Le>, Le 00 = 256. */
static unsigned jpki_read(struct kp_card_jpki *c, const uint8_t *tx, size_t tx_len,
                          uint8_t *data, size_t *n)
{
	const uint8_t *file;
	size_t len, off, le;

	if (tx_len != 5)
		return SW_WRONG_LENGTH;
	if (!c->ef_selected)
		return SW_NOT_ALLOWED;
	if (c->df != KP_CARD_JPKI_DF_JPKI || c->ef == EF_SIGN_CERT)
		return SW_SECURITY;       /* signature password / another AP's PIN never given */
	if (c->ef == EF_AUTH_PIN || c->ef == EF_AUTH_KEY)
		return SW_INCOMPATIBLE;
	if (tx[2] & 0x80)
		return SW_WRONG_OFFSET;   /* short EF identifier addressing: not supported */
	file = c->ef == EF_AUTH_CERT ? c->auth_cert : c->ca_cert;
	len = c->ef == EF_AUTH_CERT ? c->auth_cert_len : c->ca_cert_len;
	off = (size_t)tx[2] << 8 | tx[3];
	if (file == NULL || off >= len)
		return SW_WRONG_OFFSET;
	le = tx[4] != 0 ? tx[4] : 256;
	if (le > len - off)
		return SW_WRONG_LE | (unsigned)(len - off);   /* < le <= 256, so it fits in SW2 */
	memcpy(data, file + off, le);
	*n = le;
	c->stats.read_binary++;
	return SW_OK;
}

/* VERIFY: 00 20 00 80 (tries left) or 00 20 00 80 04 <4 ASCII digits>, on EF 0018. */
static unsigned jpki_verify(struct kp_card_jpki *c, const uint8_t *tx, size_t tx_len)
{
	if (tx[2] != 0x00 || tx[3] != 0x80)
		return SW_WRONG_P1P2;
	if (tx_len != 4 && (tx_len < 5 || tx[4] != 4 || tx_len != 9))
		return SW_WRONG_LENGTH;
	if (c->df != KP_CARD_JPKI_DF_JPKI || !c->ef_selected || c->ef != EF_AUTH_PIN)
		return SW_NOT_ALLOWED;
	if (c->tries_left == 0)
		return SW_BLOCKED;
	if (tx_len == 4)
		return SW_RETRIES | c->tries_left;
	if (memcmp(tx + 5, c->pin, sizeof(c->pin)) == 0) {
		c->tries_left = c->tries_max;
		c->pin_ok = 1;
		c->stats.verify_ok++;
		return SW_OK;
	}
	c->tries_left--;
	c->pin_ok = 0;
	c->stats.verify_wrong++;
	return SW_RETRIES | c->tries_left;
}

/* COMPUTE DIGITAL SIGNATURE: 80 2A 00 80 <Lc> <DigestInfo> [00], on EF 0017 after VERIFY. */
static unsigned jpki_sign(struct kp_card_jpki *c, const uint8_t *tx, size_t tx_len,
                          uint8_t *sig, size_t *n)
{
	size_t lc, len = 0;

	if (tx[2] != 0x00 || tx[3] != 0x80)
		return SW_WRONG_P1P2;
	if (tx_len < 6)
		return SW_WRONG_LENGTH;
	lc = tx[4];
	if (lc == 0 || (tx_len != 5 + lc && !(tx_len == 6 + lc && tx[tx_len - 1] == 0x00)))
		return SW_WRONG_LENGTH;
	if (c->df != KP_CARD_JPKI_DF_JPKI || !c->ef_selected || c->ef != EF_AUTH_KEY)
		return SW_NOT_ALLOWED;
	if (!c->pin_ok)
		return SW_SECURITY;
	if (jpki_signer == NULL || c->key == NULL ||
	    jpki_signer(jpki_signer_ctx, c->key, c->key_len, tx + 5, lc, sig, SIG_MAX, &len) != 0 ||
	    len == 0 || len > SIG_MAX)
		return SW_NO_DIAGNOSIS;
	*n = len;
	c->stats.signatures++;
	return SW_OK;
}

static unsigned jpki_apdu(struct kp_card_jpki *c, const uint8_t *tx, size_t tx_len,
                          uint8_t *data, size_t *n)
{
	if (tx_len < 4)
		return SW_WRONG_LENGTH;
	if (tx[0] != 0x00 && tx[0] != 0x80)
		return SW_CLA;
	if (tx[0] == 0x00 && tx[1] == 0xA4 && tx[2] == 0x04)
		return jpki_select(c, tx, tx_len);       /* DF selection works from anywhere */
	if (jpki_forbidden_df(c)) {
		c->stats.forbidden_apdus++;
		if (tx[0] == 0x00 && tx[1] == 0xA4)
			return jpki_select(c, tx, tx_len);
		return SW_SECURITY;
	}
	if (tx[0] == 0x00 && tx[1] == 0xA4)
		return jpki_select(c, tx, tx_len);
	if (tx[0] == 0x00 && tx[1] == 0xB0)
		return jpki_read(c, tx, tx_len, data, n);
	if (tx[0] == 0x00 && tx[1] == 0x20)
		return jpki_verify(c, tx, tx_len);
	if (tx[0] == 0x80 && tx[1] == 0x2A)
		return jpki_sign(c, tx, tx_len, data, n);
	return SW_INS;
}

int kp_card_jpki_answer(struct kp_card_jpki *c, const uint8_t *tx, size_t tx_len,
                        uint8_t *rx, size_t rx_cap, size_t *rx_len)
{
	uint8_t data[KP_CARD_APDU_REPLY_MAX - 2];
	size_t n = 0;
	unsigned sw;

	if (c == NULL || rx_len == NULL || (tx == NULL && tx_len > 0) || (rx == NULL && rx_cap > 0))
		return KP_HAL_E_INVAL;
	sw = jpki_apdu(c, tx, tx_len, data, &n);
	*rx_len = n + 2;
	if (rx_cap < n + 2)
		return KP_HAL_E_OVERFLOW;
	memcpy(rx, data, n);
	rx[n] = (uint8_t)(sw >> 8);
	rx[n + 1] = (uint8_t)sw;
	return KP_HAL_OK;
}
