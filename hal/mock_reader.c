/* SPDX-License-Identifier: Apache-2.0 */
/* The mock reader ("mock:PATH"): plays the taps of a scenario file (hal/SCENARIO.md)
 * and passes every frame to the tapped card's model, so the code above the HAL runs
 * exactly as it would against a reader chip. Activation is done the chip's way: a real
 * Polling frame goes to a FeliCa card and its reply is parsed into kp_card_info. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "card_model.h"
#include "kp_hal.h"
#include "mock_scenario.h"

#define MOCK_FRAME_MAX   512 /* a model's reply (at most 258) plus what a fault adds */
/* A tapped card stays in the field across polls it does not answer (a reader polling one
 * technology at a time must still find it): in virtual pace it leaves after this many
 * such polls in a row, in real pace MOCK_LINGER_MS after it came into the field. */
#define MOCK_LINGER_POLLS 3
#define MOCK_LINGER_MS    1000
#define MOCK_GARBAGE_LEN 5
#define MOCK_RNG_SEED    0x6B697070u /* fixed, so a scenario replays the same garbage */

struct kp_mock_reader {
	struct kp_reader base;            /* first: kp_reader_* find the ops here */
	struct kp_scenario *scn;
	char file[64];                    /* the scenario's base name, for describe */
	size_t next_tap;
	const struct kp_scn_tap *tap;     /* the tap whose card is activated, or NULL */
	const struct kp_scn_tap *field;   /* a tapped card no poll has matched yet, or NULL */
	int ignored;                      /* virtual pace: polls in a row field did not answer */
	int64_t field_until_ms;           /* real pace: when field leaves (ms since open) */
	long frames;                      /* transceive frames since activation */
	int64_t vnow_ms;                  /* virtual pace: the clock */
	int64_t t0_mono_ms;               /* real pace: CLOCK_MONOTONIC at open */
	uint32_t rng;
};

static uint32_t mock_rand(struct kp_mock_reader *m)
{
	uint32_t x = m->rng;

	x ^= x << 13;
	x ^= x >> 17;
	x ^= x << 5;
	m->rng = x;
	return x;
}

static void mock_close(struct kp_reader *r)
{
	struct kp_mock_reader *m = (struct kp_mock_reader *)r;

	if (m == NULL)
		return;
	kp_scenario_free(m->scn);
	free(m);
}

static int mock_open_err(struct kp_reader **out, const char *conn, char *err, size_t err_cap)
{
	struct kp_mock_reader *m = NULL;
	const char *base;
	int rc;

	if (out == NULL || conn == NULL)
		return KP_HAL_E_INVAL;
	*out = NULL;
	if (conn[0] == '\0') {
		if (err_cap > 0)
			snprintf(err, err_cap, "mock reader: no scenario file (use mock:PATH)");
		return KP_HAL_E_CONFIG;
	}
	m = calloc(1, sizeof(*m));
	if (m == NULL) {
		rc = KP_HAL_E_NOMEM;
		goto out;
	}
	m->base.ops = &kp_mock_reader_ops;
	rc = kp_scenario_load(&m->scn, conn, err, err_cap);
	if (rc != KP_HAL_OK)
		goto out;
	base = strrchr(conn, '/');
	base = base != NULL ? base + 1 : conn;
	snprintf(m->file, sizeof(m->file), "%s", base);
	m->vnow_ms = m->scn->start_ms;
	m->t0_mono_ms = kp_hal_mono_ms();
	m->rng = MOCK_RNG_SEED;
	*out = &m->base;
	m = NULL;
out:
	mock_close(m ? &m->base : NULL);
	return rc;
}

static int mock_open(struct kp_reader **out, const char *conn)
{
	char err[KP_SCN_LINE_MAX];

	return mock_open_err(out, conn, err, sizeof(err));
}

/* What a reader chip does for FeliCa: send Polling, parse the reply. */
static int mock_activate_felica(struct kp_card_felica *c, const struct kp_poll *poll,
                                struct kp_card_info *info)
{
	uint8_t tx[6] = { 6, 0x00, (uint8_t)(poll->felica_sys_code >> 8),
	                  (uint8_t)poll->felica_sys_code, poll->felica_request_code, 0x00 };
	uint8_t rx[KP_CARD_FELICA_FRAME_MAX];
	size_t n = 0;
	int rc = kp_card_felica_answer(c, tx, sizeof(tx), rx, sizeof(rx), &n);

	if (rc == KP_HAL_E_TIMEOUT)
		return KP_HAL_E_NOCARD;
	if (rc != KP_HAL_OK)
		return rc;
	if (n < 18 || rx[0] != n || rx[1] != 0x01)
		return KP_HAL_E_IO;
	info->tech = KP_TECH_FELICA;
	info->baud_kbps = 212;
	memcpy(info->u.felica.idm, rx + 2, 8);
	memcpy(info->u.felica.pmm, rx + 10, 8);
	if (poll->felica_request_code == 0x01) {
		if (n != 20)
			return KP_HAL_E_IO;
		memcpy(info->u.felica.sys_code, rx + 18, 2);
		info->u.felica.has_sys_code = 1;
	}
	return KP_HAL_OK;
}

static int mock_activate(struct kp_scn_card *card, const struct kp_poll *poll,
                         struct kp_card_info *info)
{
	if (!(poll->techs & (unsigned)card->tech))
		return KP_HAL_E_NOCARD;
	switch (card->tech) {
	case KP_TECH_FELICA:
		return mock_activate_felica(&card->u.felica, poll, info);
	case KP_TECH_ISO14443B: {
		const struct kp_card_typeb *b = card->mynumber ? &card->u.jpki.b : &card->u.b;

		if (card->mynumber)
			kp_card_jpki_reset(&card->u.jpki);   /* a new session */
		info->tech = KP_TECH_ISO14443B;
		info->baud_kbps = 106;
		kp_card_typeb_atqb(b, info->u.b.atqb);
		memcpy(info->u.b.pupi, b->pupi, sizeof(info->u.b.pupi));
		memcpy(info->u.b.app_data, b->app_data, sizeof(info->u.b.app_data));
		memcpy(info->u.b.proto_info, b->proto_info, sizeof(info->u.b.proto_info));
		return KP_HAL_OK;
	}
	case KP_TECH_ISO14443A:
		info->tech = KP_TECH_ISO14443A;
		info->baud_kbps = 106;
		memcpy(info->u.a.uid, card->u.a.uid, sizeof(info->u.a.uid));
		info->u.a.uid_len = card->u.a.uid_len;
		memcpy(info->u.a.atqa, card->u.a.atqa, sizeof(info->u.a.atqa));
		info->u.a.sak = card->u.a.sak;
		return KP_HAL_OK;
	default:
		return KP_HAL_E_NOCARD;
	}
}

/* Real pace: the card of the next tap comes into the field; it leaves unanswered
 * MOCK_LINGER_MS later, or when the tap after it is due (one card at a time). */
static void mock_enter_real(struct kp_mock_reader *m, int64_t now)
{
	const struct kp_scn_tap *tap = &m->scn->taps[m->next_tap++];
	int64_t since = tap->offset_ms > now ? tap->offset_ms : now;

	m->field = tap;
	m->field_until_ms = since + MOCK_LINGER_MS;
	if (m->next_tap < m->scn->n_taps && m->scn->taps[m->next_tap].offset_ms < m->field_until_ms)
		m->field_until_ms = m->scn->taps[m->next_tap].offset_ms;
}

/* Polls the card in the field: a match activates it; a card that answers nothing stays. */
static int mock_poll_field(struct kp_mock_reader *m, const struct kp_poll *poll,
                           struct kp_card_info *info)
{
	int rc = mock_activate(&m->scn->cards[m->field->card], poll, info);

	if (rc == KP_HAL_E_NOCARD) {
		memset(info, 0, sizeof(*info));
		return rc;
	}
	if (rc != KP_HAL_OK) {
		memset(info, 0, sizeof(*info));
		m->field = NULL;              /* a model that cannot be parsed is not kept */
		return rc;
	}
	m->tap = m->field;
	m->field = NULL;
	m->frames = 0;
	return KP_HAL_OK;
}

static int mock_wait_virtual(struct kp_mock_reader *m, const struct kp_poll *poll,
                             struct kp_card_info *info)
{
	int rc;

	if (m->field == NULL) {
		if (m->next_tap >= m->scn->n_taps)
			return KP_HAL_E_END;
		m->field = &m->scn->taps[m->next_tap++];
		m->ignored = 0;
		m->vnow_ms = m->scn->start_ms + m->field->offset_ms;
	}
	rc = mock_poll_field(m, poll, info);
	if (rc == KP_HAL_E_NOCARD && ++m->ignored >= MOCK_LINGER_POLLS)
		m->field = NULL;
	return rc;
}

static int mock_wait_real(struct kp_mock_reader *m, const struct kp_poll *poll,
                          struct kp_card_info *info, int timeout_ms)
{
	int64_t deadline = timeout_ms >= 0 ? kp_hal_mono_ms() - m->t0_mono_ms + timeout_ms : -1;

	for (;;) {
		int64_t now = kp_hal_mono_ms() - m->t0_mono_ms;
		int rc;

		if (m->field != NULL && now >= m->field_until_ms)
			m->field = NULL;
		if (m->field == NULL) {
			int64_t due;

			if (m->next_tap >= m->scn->n_taps)
				return KP_HAL_E_END;
			due = m->scn->taps[m->next_tap].offset_ms;
			if (due > now && deadline >= 0 && due > deadline) {
				/* Not due yet: the field stays empty for the whole timeout. */
				kp_hal_sleep_ms(deadline - now);
				return KP_HAL_E_NOCARD;
			}
			kp_hal_sleep_ms(due - now);
			now = kp_hal_mono_ms() - m->t0_mono_ms;
			mock_enter_real(m, now);
		}
		rc = mock_poll_field(m, poll, info);
		if (rc != KP_HAL_E_NOCARD)
			return rc;
		/* The card answers nothing: the reader keeps polling until its timeout or until
		 * the card has left, and then waits for the next tap. */
		if (deadline >= 0 && deadline < m->field_until_ms) {
			kp_hal_sleep_ms(deadline - now);
			return KP_HAL_E_NOCARD;
		}
		kp_hal_sleep_ms(m->field_until_ms - now);
		m->field = NULL;
	}
}

static int mock_wait_card(struct kp_reader *r, const struct kp_poll *poll,
                          struct kp_card_info *info, int timeout_ms)
{
	struct kp_mock_reader *m = (struct kp_mock_reader *)r;

	if (m == NULL || poll == NULL || info == NULL)
		return KP_HAL_E_INVAL;
	memset(info, 0, sizeof(*info));
	m->tap = NULL; /* polling again ends any session */
	if (m->scn->pace == KP_SCN_PACE_REAL)
		return mock_wait_real(m, poll, info, timeout_ms);
	return mock_wait_virtual(m, poll, info);
}

/* Alters a reply the way the tap's fault says; returns the new length. buf has room for
 * MOCK_FRAME_MAX bytes and n is at most KP_CARD_APDU_REPLY_MAX. */
static size_t mock_fault(struct kp_mock_reader *m, enum kp_scn_fault f, uint8_t *buf, size_t n)
{
	switch (f) {
	case KP_SCN_FAULT_SHORT:
		return n > 0 ? n - 1 : 0;
	case KP_SCN_FAULT_LONG:
		buf[n++] = 0x00;
		buf[n++] = 0x00;
		return n;
	case KP_SCN_FAULT_LEN:
		if (n > 0)
			buf[0] = (uint8_t)(buf[0] + 1);
		return n;
	case KP_SCN_FAULT_CODE:
		if (n > 1)
			buf[1] ^= 0x80;
		return n;
	case KP_SCN_FAULT_IDM:
		if (n > 9)
			buf[9] ^= 0xFF;
		return n;
	case KP_SCN_FAULT_STATUS:
		if (n >= 12 && buf[1] == 0x07) {
			buf[10] = 0xFF;
			buf[11] = 0xA8;
		}
		return n;
	case KP_SCN_FAULT_GARBAGE:
		for (size_t i = 0; i < MOCK_GARBAGE_LEN; i++)
			buf[i] = (uint8_t)(mock_rand(m) >> 24);
		return MOCK_GARBAGE_LEN;
	default:
		return n;
	}
}

static int mock_transceive(struct kp_reader *r, const uint8_t *tx, size_t tx_len,
                           uint8_t *rx, size_t rx_cap, size_t *rx_len, int timeout_ms)
{
	struct kp_mock_reader *m = (struct kp_mock_reader *)r;
	uint8_t buf[MOCK_FRAME_MAX];
	struct kp_scn_card *card;
	size_t n = 0;
	int rc;

	if (m == NULL || rx_len == NULL || (tx == NULL && tx_len > 0) || (rx == NULL && rx_cap > 0))
		return KP_HAL_E_INVAL;
	*rx_len = 0;
	if (m->tap == NULL)
		return KP_HAL_E_NOCARD;
	m->frames++;
	if (m->tap->remove_after >= 0 && m->frames > m->tap->remove_after)
		return KP_HAL_E_TIMEOUT; /* the card has left the field mid-session */
	if (m->tap->fault == KP_SCN_FAULT_SILENT)
		return KP_HAL_E_TIMEOUT;
	card = &m->scn->cards[m->tap->card];
	switch (card->tech) {
	case KP_TECH_FELICA:
		rc = kp_card_felica_answer(&card->u.felica, tx, tx_len, buf,
		                           KP_CARD_FELICA_FRAME_MAX, &n);
		break;
	case KP_TECH_ISO14443B:
		if (card->mynumber)
			rc = kp_card_jpki_answer(&card->u.jpki, tx, tx_len, buf, KP_CARD_APDU_REPLY_MAX,
			                         &n);
		else
			rc = kp_card_typeb_answer(&card->u.b, tx, tx_len, buf, KP_CARD_APDU_REPLY_MAX, &n);
		break;
	case KP_TECH_ISO14443A:
		rc = kp_card_typea_answer(&card->u.a, tx, tx_len, buf, KP_CARD_FELICA_FRAME_MAX, &n);
		break;
	default:
		rc = KP_HAL_E_TIMEOUT;
		break;
	}
	if (rc != KP_HAL_OK)
		return rc;
	n = mock_fault(m, m->tap->fault, buf, n);
	if (n > rx_cap)
		return KP_HAL_E_OVERFLOW;
	memcpy(rx, buf, n);
	*rx_len = n;
	return KP_HAL_OK;
}

static int mock_release(struct kp_reader *r, int wait_removed, int timeout_ms)
{
	struct kp_mock_reader *m = (struct kp_mock_reader *)r;

	if (m == NULL)
		return KP_HAL_E_INVAL;
	/* A mock card leaves the field the moment its session ends; waiting for removal also
	 * takes away a tapped card no poll has matched. */
	m->tap = NULL;
	if (wait_removed)
		m->field = NULL;
	return KP_HAL_OK;
}

static int mock_now_ms(struct kp_reader *r, int64_t *ms)
{
	struct kp_mock_reader *m = (struct kp_mock_reader *)r;

	if (m == NULL || ms == NULL)
		return KP_HAL_E_INVAL;
	if (m->scn->pace == KP_SCN_PACE_REAL)
		*ms = m->scn->start_ms + (kp_hal_mono_ms() - m->t0_mono_ms);
	else
		*ms = m->vnow_ms;
	return KP_HAL_OK;
}

static int mock_describe(struct kp_reader *r, char *buf, size_t cap)
{
	struct kp_mock_reader *m = (struct kp_mock_reader *)r;
	int n;

	if (m == NULL || buf == NULL || cap == 0)
		return KP_HAL_E_INVAL;
	n = snprintf(buf, cap, "mock reader: scenario %s, %zu card%s, %zu tap%s", m->file,
	             m->scn->n_cards, m->scn->n_cards == 1 ? "" : "s", m->scn->n_taps,
	             m->scn->n_taps == 1 ? "" : "s");
	if (n < 0)
		return KP_HAL_E_IO;
	return (size_t)n < cap ? KP_HAL_OK : KP_HAL_E_OVERFLOW;
}

int kp_mock_jpki_stats(struct kp_reader *r, const char *card, struct kp_mock_jpki_stats *out)
{
	struct kp_mock_reader *m = (struct kp_mock_reader *)r;
	const struct kp_scn_card *c;
	long idx;

	if (r == NULL || card == NULL || out == NULL)
		return KP_HAL_E_INVAL;
	r = kp_spy_inner(r);
	m = (struct kp_mock_reader *)r;
	if (r->ops != &kp_mock_reader_ops)
		return KP_HAL_E_NOTSUP;
	idx = kp_scenario_find_card(m->scn, card);
	if (idx < 0 || !m->scn->cards[idx].mynumber)
		return KP_HAL_E_INVAL;
	c = &m->scn->cards[idx];
	*out = c->u.jpki.stats;
	out->tries_left = c->u.jpki.tries_left;
	return KP_HAL_OK;
}

const struct kp_reader_ops kp_mock_reader_ops = {
	.scheme = "mock",
	.open = mock_open,
	.open_err = mock_open_err,
	.wait_card = mock_wait_card,
	.transceive = mock_transceive,
	.release = mock_release,
	.now_ms = mock_now_ms,
	.describe = mock_describe,
	.close = mock_close,
};
