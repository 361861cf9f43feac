/* SPDX-License-Identifier: Apache-2.0 */
/* Card models: virtual cards that answer the frames a real card answers, byte for byte
 * (PROTOCOLS.md sections 1-3). Internal to hal/: the mock reader drives them today and a
 * PN532 emulator can drive the same models later, so they know nothing about scenarios,
 * clocks or faults. Every answer function returns KP_HAL_E_TIMEOUT where a real card
 * would stay silent, and KP_HAL_E_OVERFLOW (with *rx_len = the reply's size) when the
 * reply does not fit rx_cap. */
#ifndef KP_CARD_MODEL_H
#define KP_CARD_MODEL_H

#include <stddef.h>
#include <stdint.h>

#include "kp_hal.h"

#define KP_CARD_FELICA_BLOCK          16
#define KP_CARD_FELICA_MAX_SYS        16  /* system codes one card model holds */
#define KP_CARD_FELICA_HISTORY_BLOCKS 20  /* service 090F */
#define KP_CARD_FELICA_GATE_BLOCKS    3   /* service 108F */
/* Blocks per Read/Write Without Encryption this model accepts; more is answered with
 * SF1=FF SF2=A2. Real cards vary (often 4-15); 12 matches the terminal's limit. */
#define KP_CARD_FELICA_MAX_BLOCKS     12
#define KP_CARD_FELICA_MAX_SERVICES   16  /* m of Read/Write, per JIS X 6319-4 */
#define KP_CARD_FELICA_MAX_NODES      32  /* n of Request Service */
#define KP_CARD_FELICA_FRAME_MAX      255 /* LEN is one byte and counts itself */

/* A Japanese transit IC card (PROTOCOLS.md section 2). It holds three services, all
 * readable without a key: 008B (1 block: balance), 090F (20 blocks of history, cyclic,
 * block 0 newest) and 108F (3 blocks of gate history). A service code whose service
 * number is one of these but whose attribute is even (e.g. 0088) is that service's keyed
 * access: reading it is refused with A5. Any other code is unknown to the card (A6).
 * Every service belongs to every system code of the card. Nothing can be written. */
struct kp_card_felica {
	uint8_t idm[8];
	uint8_t pmm[8];
	uint16_t sys_codes[KP_CARD_FELICA_MAX_SYS];
	size_t n_sys;
	uint8_t balance[1][KP_CARD_FELICA_BLOCK];
	uint8_t history[KP_CARD_FELICA_HISTORY_BLOCKS][KP_CARD_FELICA_BLOCK];
	size_t n_history;                 /* history blocks pushed so far; the rest are zero */
	uint8_t gate[KP_CARD_FELICA_GATE_BLOCKS][KP_CARD_FELICA_BLOCK];
};

/* Zeroes the card, sets its IDm, PMm 0120220427674EFF and the one system code 0003. */
void kp_card_felica_init(struct kp_card_felica *c, const uint8_t idm[8]);
/* Replaces the system codes (1..KP_CARD_FELICA_MAX_SYS, none with an FF byte, no
 * duplicates): KP_HAL_E_INVAL otherwise, and the card is left unchanged. */
int kp_card_felica_set_sys_codes(struct kp_card_felica *c, const uint16_t *codes, size_t n);
/* Writes 008B block 0: byte 8 = card_type<<4 | region, bytes 11-12 balance LE, bytes 14-15
 * counter LE (the real byte order is UNVERIFIED), everything else zero. */
void kp_card_felica_set_balance(struct kp_card_felica *c, unsigned card_type, unsigned region,
                                uint16_t balance, uint16_t counter);
/* Appends the next history block (the first one pushed is block 0, the newest);
 * KP_HAL_E_OVERFLOW when all 20 are taken. */
int kp_card_felica_push_history(struct kp_card_felica *c, const uint8_t block[16]);
/* Answers one FeliCa frame (LEN byte first, no preamble or CRC). */
int kp_card_felica_answer(struct kp_card_felica *c, const uint8_t *tx, size_t tx_len,
                          uint8_t *rx, size_t rx_cap, size_t *rx_len);

/* An ISO 14443-4 Type B card with no application the terminal knows (kp_card_jpki below is
 * the My Number card): SELECT by AID of any AID -> 6A 82, any other APDU -> 6D 00, an
 * APDU shorter than 4 bytes -> 67 00. */
struct kp_card_typeb {
	uint8_t pupi[4];
	uint8_t app_data[4];
	uint8_t proto_info[3];
};

/* ATQB as a reader chip reports it: 50 PUPI(4) AppData(4) ProtoInfo(3). */
void kp_card_typeb_atqb(const struct kp_card_typeb *c, uint8_t atqb[12]);
int kp_card_typeb_answer(struct kp_card_typeb *c, const uint8_t *tx, size_t tx_len,
                         uint8_t *rx, size_t rx_cap, size_t *rx_len);

/* An ISO 14443 Type A card: it can be activated (UID, ATQA, SAK) and answers nothing. */
struct kp_card_typea {
	uint8_t uid[10];
	size_t uid_len;                   /* 4, 7 or 10 */
	uint8_t atqa[2];
	uint8_t sak;
};

int kp_card_typea_answer(struct kp_card_typea *c, const uint8_t *tx, size_t tx_len,
                         uint8_t *rx, size_t rx_cap, size_t *rx_len);

/* ---- My Number card: the JPKI application's user authentication (PROTOCOLS.md 3) ---- */

#define KP_CARD_APDU_REPLY_MAX 258    /* READ BINARY with Le 00: 256 bytes + SW1 SW2 */
#define KP_CARD_JPKI_EF_MAX    32767  /* READ BINARY offsets are 15 bits (P1 bit 8 = SFI) */
#define KP_CARD_JPKI_TRIES_MAX 15     /* x of 63 Cx is one hex digit */
#define KP_CARD_JPKI_TRIES_DEFAULT 3

enum kp_card_jpki_df {
	KP_CARD_JPKI_DF_NONE = 0,         /* after activation: the MF */
	KP_CARD_JPKI_DF_JPKI,             /* D3 92 F0 00 26 01 00 00 00 01 */
	KP_CARD_JPKI_DF_INPUT_SUPPORT,    /* D3 92 10 00 31 00 01 01 04 08: kippu never selects it */
	KP_CARD_JPKI_DF_CARD_FACE,        /* D3 92 10 00 31 00 01 01 04 02: kippu never selects it */
};

/* A My Number card: JPKI AP with EF 000A (user-authentication certificate), 000B (the
 * authentication CA's certificate), 0018 (4-digit PIN), 0017 (RSA key, used through
 * COMPUTE DIGITAL SIGNATURE and the signer registered with kp_mock_set_rsa_signer) and 0001
 * (signature certificate, never readable here). The input-support and card-face APs can be
 * selected, are counted in stats, and give nothing (status words: hal/SCENARIO.md).
 * The certificate and key buffers belong to the model (kp_card_jpki_free releases them);
 * key is handed to the signer as is and key[key_len] must be a NUL. */
struct kp_card_jpki {
	struct kp_card_typeb b;           /* activation: PUPI, AppData, ProtoInfo */
	uint8_t *auth_cert;               /* EF 000A */
	size_t auth_cert_len;             /* 1..KP_CARD_JPKI_EF_MAX */
	uint8_t *ca_cert;                 /* EF 000B */
	size_t ca_cert_len;
	uint8_t *key;                     /* the card's private key file (PEM or DER) */
	size_t key_len;
	uint8_t pin[4];                   /* ASCII digits */
	unsigned tries_max;               /* 1..KP_CARD_JPKI_TRIES_MAX, VERIFY success resets to it */
	unsigned tries_left;              /* survives sessions; 0: blocked for good */
	/* the session: reset at activation */
	enum kp_card_jpki_df df;
	uint16_t ef;
	int ef_selected;
	int pin_ok;                       /* VERIFY of EF 0018 succeeded since the DF was selected */
	struct kp_mock_jpki_stats stats;  /* since init; stats.tries_left is not kept up to date */
};

/* Zeroes the card and sets its PUPI, AppData 00000000, ProtoInfo 008171, PIN "1234" and
 * 3 tries; the caller then sets the certificates and the key. */
void kp_card_jpki_init(struct kp_card_jpki *c, const uint8_t pupi[4]);
/* Activation: a new session (no DF, no EF, PIN not verified). The retry counter stays. */
void kp_card_jpki_reset(struct kp_card_jpki *c);
/* Answers one APDU. Replies are at most KP_CARD_APDU_REPLY_MAX bytes; a card answers every
 * APDU (never KP_HAL_E_TIMEOUT). */
int kp_card_jpki_answer(struct kp_card_jpki *c, const uint8_t *tx, size_t tx_len,
                        uint8_t *rx, size_t rx_cap, size_t *rx_len);
/* Frees the certificates and the key (wiped first). Accepts NULL. */
void kp_card_jpki_free(struct kp_card_jpki *c);

#endif
