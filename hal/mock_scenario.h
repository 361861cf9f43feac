/* SPDX-License-Identifier: Apache-2.0 */
/* Mock reader scenarios: the parsed form of a scenario file (format in hal/SCENARIO.md).
 * Internal to hal/ (and its tests). */
#ifndef KP_MOCK_SCENARIO_H
#define KP_MOCK_SCENARIO_H

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#include "card_model.h"
#include "kp_hal.h"

#define KP_SCN_LINE_MAX    512  /* characters per line, newline excluded */
#define KP_SCN_NAME_MAX    31   /* characters in a card name */
#define KP_SCN_TAP_SEC_MAX 1000000000LL
#define KP_SCN_REMOVE_MAX  1000000L
#define KP_SCN_START_DEFAULT_MS 1767225600000LL /* 2026-01-01T00:00:00Z */
#define KP_SCN_KEY_FILE_MAX 16384 /* a mynumber card's auth.key */

enum kp_scn_pace { KP_SCN_PACE_VIRTUAL = 0, KP_SCN_PACE_REAL = 1 };

enum kp_scn_fault {
	KP_SCN_FAULT_NONE = 0,
	KP_SCN_FAULT_SHORT,    /* drop the reply's last byte */
	KP_SCN_FAULT_LONG,     /* append 00 00, LEN unchanged */
	KP_SCN_FAULT_LEN,      /* byte 0 (FeliCa LEN) + 1 */
	KP_SCN_FAULT_CODE,     /* byte 1 (FeliCa response code) XOR 80 */
	KP_SCN_FAULT_IDM,      /* byte 9 (last IDm byte) XOR FF */
	KP_SCN_FAULT_STATUS,   /* FeliCa read reply (code 07): SF1 = FF, SF2 = A8 */
	KP_SCN_FAULT_GARBAGE,  /* reply replaced by 5 pseudo-random bytes */
	KP_SCN_FAULT_SILENT,   /* no reply: timeout */
};

struct kp_scn_card {
	char name[KP_SCN_NAME_MAX + 1];
	enum kp_card_tech tech;
	int mynumber;                    /* a Type B card whose model is u.jpki, not u.b */
	unsigned line;                   /* where it was declared */
	/* FeliCa 008B block 0 inputs, written into the model once the file is read. */
	unsigned card_type, region;
	uint16_t balance;
	union {
		struct kp_card_felica felica;
		struct kp_card_typeb b;
		struct kp_card_typea a;
		struct kp_card_jpki jpki;    /* owns its files' bytes: kp_scenario_free frees them */
	} u;
};

struct kp_scn_tap {
	int64_t offset_ms;               /* from the scenario's start */
	size_t card;                     /* index into kp_scenario.cards */
	long remove_after;               /* frames answered after activation; -1: no limit */
	enum kp_scn_fault fault;
	unsigned line;
};

struct kp_scenario {
	int64_t start_ms;                /* virtual Unix time of t=0, in ms */
	enum kp_scn_pace pace;
	struct kp_scn_card *cards;
	size_t n_cards, cap_cards;
	struct kp_scn_tap *taps;
	size_t n_taps, cap_taps;
};

/* Reads and validates a whole scenario. On a bad file: KP_HAL_E_CONFIG and err holds
 * "NAME:LINE: message" (just "NAME: message" when the file cannot be read); parsing stops
 * at the first error. Other codes: KP_HAL_E_NOMEM, KP_HAL_E_INVAL. err may be NULL. */
int kp_scenario_load(struct kp_scenario **out, const char *path, char *err, size_t err_cap);
/* The same from an open stream; name is used in messages and, for a mynumber card's
 * relative dir=, as the path whose folder it is relative to. */
int kp_scenario_parse(struct kp_scenario **out, const char *name, FILE *f,
                      char *err, size_t err_cap);
void kp_scenario_free(struct kp_scenario *s);

/* Index of the card called name, or -1. */
long kp_scenario_find_card(const struct kp_scenario *s, const char *name);
const char *kp_scn_fault_name(enum kp_scn_fault f);

#endif
