/* SPDX-License-Identifier: Apache-2.0 */
/* kippuctl fares quote DB JOURNEYS.csv: prices a list of taps without a card or reader by
 * running the terminal's own tap decision (kp_tap_decide) on a scratch copy of DB, with a
 * throw-away signing key. Every journaled record becomes one output line. */
#include <errno.h>
#include <libgen.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "kp_csv.h"
#include "kp_civil.h"
#include "kp_tools.h"

#define QUOTE_ENT_BASE 1000000000LL     /* ids of entitlements a journeys file gives */

struct card {
	uint8_t token[KP_TOKEN_LEN];
	char label[80];
};

struct quote {
	struct kp_ctl_out *out;
	kp_store *s;
	struct card *cards;
	size_t n_cards, cap_cards;
	int offset_s;                       /* of the row being decided */
	int64_t next_ent;
};

/* The quote's columns (README, "Listings as JSON and CSV"): its CSV is its human form. */
enum { Q_TIME, Q_CARD, Q_OPERATOR, Q_ROUTE, Q_STOP, Q_EVENT, Q_RESULT, Q_REASON, Q_AMOUNT,
       Q_PRODUCT, Q_LEFT, Q_RULES, Q_NCOL };
static const struct kp_ctl_col quote_cols[Q_NCOL] = {
	{ "time", KP_COL_TIME, "" }, { "card", KP_COL_TEXT, "" },
	{ "operator", KP_COL_TEXT, "" }, { "route", KP_COL_TEXT, "" },
	{ "stop", KP_COL_TEXT, "" }, { "event", KP_COL_TEXT, "" },
	{ "result", KP_COL_TEXT, "" }, { "reason", KP_COL_TEXT, "" },
	{ "amount", KP_COL_AMOUNT, "" }, { "product", KP_COL_TEXT, "" },
	{ "left", KP_COL_INT, "" }, { "rules", KP_COL_TEXT, "" },
};

void kp_fares_quote_out(struct kp_ctl_out *o, enum kp_ctl_format format)
{
	kp_ctl_out_begin(o, format == KP_OUT_HUMAN ? KP_OUT_CSV : format, quote_cols, Q_NCOL, NULL);
}

/* ISO 8601 local time with the given offset, e.g. 2026-12-01T08:00:00+09:00. */
static void iso_time(int64_t ms, int offset_s, char *out, size_t cap)
{
	struct kp_civil c;
	int off = offset_s < 0 ? -offset_s : offset_s;

	kp_civil_local(ms, offset_s, &c);
	snprintf(out, cap, "%04d-%02d-%02dT%02d:%02d:%02d%c%02d:%02d", c.y, c.m, c.d, c.hh, c.mm,
	         c.ss, offset_s < 0 ? '-' : '+', off / 3600, off % 3600 / 60);
}

static const char *card_label(const struct quote *q, const uint8_t token[KP_TOKEN_LEN])
{
	for (size_t i = 0; i < q->n_cards; i++) {
		if (memcmp(q->cards[i].token, token, KP_TOKEN_LEN) == 0)
			return q->cards[i].label;
	}
	return "?";
}

static void on_record(void *arg, const struct kp_record *rec)
{
	struct quote *q = arg;
	char t[40], amount[24], left[24];

	iso_time(rec->time_ms, q->offset_s, t, sizeof(t));
	snprintf(amount, sizeof(amount), "%lld", (long long)rec->amount);
	if (rec->has_left)
		snprintf(left, sizeof(left), "%lld", (long long)rec->left);
	else
		left[0] = '\0';
	const char *v[Q_NCOL] = {
		t, rec->has_token ? card_label(q, rec->token) : "", rec->operator_id, rec->route,
		rec->stop, rec->event, rec->result, rec->reason, amount, rec->product, left, rec->fare,
	};

	kp_ctl_out_row(q->out, v);
}

/* The card's first row: its rider category and the entitlements it starts from. */
static int card_start(struct quote *q, const uint8_t token[KP_TOKEN_LEN], int64_t now,
                             const char *category, const char *ents, char *err, size_t cap)
{
	const int64_t year = 366LL * 86400000LL;
	char buf[1024], *save = NULL;
	int rc;

	if (category[0] != '\0' && strcmp(category, "adult") != 0) {
		if (!kp_valid_id(category)) {
			snprintf(err, cap, "rider_category: 1-32 of A-Z a-z 0-9 - _ .");
			return KP_E_PARSE;
		}
		rc = kp_store_put_eligibility(q->s, token, category, now - 86400000LL, now + year, NULL);
		if (rc != KP_OK) {
			snprintf(err, cap, "rider_category: %s", kp_store_errmsg(q->s));
			return rc;
		}
	}
	if (strlen(ents) >= sizeof(buf)) {
		snprintf(err, cap, "entitlements: too long");
		return KP_E_PARSE;
	}
	snprintf(buf, sizeof(buf), "%s", ents);
	for (char *it = strtok_r(buf, ";", &save); it != NULL; it = strtok_r(NULL, ";", &save)) {
		struct kp_entitlement e;
		char *colon = strchr(it, ':');
		int days = 0, stored = 0;

		memset(&e, 0, sizeof(e));
		while (*it == ' ')
			it++;
		if (colon != NULL)
			*colon = '\0';
		if (!kp_valid_id(it) || kp_store_product_period(q->s, it, &days) != KP_OK ||
		    kp_store_product_stored(q->s, it, &stored) != KP_OK) {
			snprintf(err, cap, "entitlements: no product \"%s\"", it);
			return KP_E_PARSE;
		}
		snprintf(e.product, sizeof(e.product), "%s", it);
		memcpy(e.token, token, KP_TOKEN_LEN);
		e.id = q->next_ent++;
		e.valid_from_ms = now;
		e.valid_until_ms = now + year;
		if (colon != NULL) {
			char *end;
			long long v;

			errno = 0;
			v = strtoll(colon + 1, &end, 10);
			if (errno != 0 || end == colon + 1 || *end != '\0' || v < 0 ||
			    v > 1000000000000LL || (!stored && v > 10000)) {
				snprintf(err, cap, "entitlements: \"%s:%s\": rides 0-10000 or a balance 0-10^12",
				         it, colon + 1);
				return KP_E_PARSE;
			}
			e.rides_left = v;
		} else if (days > 0) {
			e.first_use = 1;
		} else if (stored) {
			snprintf(err, cap, "entitlements: stored value %s needs :BALANCE", it);
			return KP_E_PARSE;
		}
		rc = kp_store_put_entitlement(q->s, &e);
		if (rc != KP_OK) {
			snprintf(err, cap, "entitlements: %s", kp_store_errmsg(q->s));
			return rc;
		}
	}
	return KP_OK;
}

static int card_of(struct quote *q, const char *label, const uint8_t key[KP_TOKEN_KEY_LEN],
                   uint8_t token[KP_TOKEN_LEN], int *is_new)
{
	int rc;

	*is_new = 0;
	if (label[0] == '\0' || strlen(label) >= sizeof(q->cards[0].label))
		return KP_E_PARSE;
	if (strncmp(label, "felica:", 7) == 0 || strncmp(label, "token:", 6) == 0)
		rc = kp_parse_card(label, key, token);
	else
		rc = kp_token_derive(key, "quote", (const uint8_t *)label, strlen(label), token);
	if (rc != KP_OK)
		return KP_E_PARSE;
	for (size_t i = 0; i < q->n_cards; i++) {
		if (strcmp(q->cards[i].label, label) == 0)
			return KP_OK;
	}
	if (q->n_cards == q->cap_cards) {
		size_t cap = q->cap_cards ? q->cap_cards * 2 : 64;
		struct card *c = realloc(q->cards, cap * sizeof(*c));

		if (c == NULL)
			return KP_E_NOMEM;
		q->cards = c;
		q->cap_cards = cap;
	}
	memcpy(q->cards[q->n_cards].token, token, KP_TOKEN_LEN);
	snprintf(q->cards[q->n_cards].label, sizeof(q->cards[0].label), "%s", label);
	q->n_cards++;
	*is_new = 1;
	return KP_OK;
}

static int sweep_all(kp_tap_engine *e, int64_t now, char *err, size_t cap)
{
	size_t closed;
	int rc;

	do {
		rc = kp_tap_sweep(e, now, &closed);
	} while (rc == KP_OK && closed > 0);
	if (rc != KP_OK)
		snprintf(err, cap, "closing journeys: %s", kp_strerror(rc));
	return rc;
}

static int run_rows(struct quote *q, kp_tap_engine *e, struct kp_csv *c,
                    const uint8_t key[KP_TOKEN_KEY_LEN], const char *name, char *err, size_t cap)
{
	static const char *const need[] = { "time", "card", "operator", "route", "stop", "event",
	                                    "rider_category" };
	int col[8], r;
	int64_t last = 0;
	char why[256];

	for (size_t i = 0; i < 7; i++) {
		col[i] = kp_csv_col(c, need[i]);
		if (col[i] < 0) {
			snprintf(err, cap, "%s:1: missing column %s", name, need[i]);
			return KP_E_PARSE;
		}
	}
	col[7] = kp_csv_col(c, "entitlements");
	while ((r = kp_csv_next(c, err, cap)) == 1) {
		const char *t = kp_csv_get(c, col[0]), *ev = kp_csv_get(c, col[5]);
		uint8_t token[KP_TOKEN_LEN];
		struct kp_tap_outcome out;
		int64_t now;
		int is_new, rc;

		if (kp_parse_time_offset(t, &now, &q->offset_s) != KP_OK) {
			snprintf(err, cap, "%s:%d: time: \"%s\" is not ISO 8601 with an offset", name,
			         c->rec_line, t);
			return KP_E_PARSE;
		}
		if (now < last) {
			snprintf(err, cap, "%s:%d: time: earlier than the row before", name, c->rec_line);
			return KP_E_PARSE;
		}
		last = now;
		if (ev[0] != '\0' && strcmp(ev, "tap") != 0 && strcmp(ev, "tap_on") != 0 &&
		    strcmp(ev, "tap_off") != 0) {
			snprintf(err, cap, "%s:%d: event: \"%s\" is not tap, tap_on or tap_off", name,
			         c->rec_line, ev);
			return KP_E_PARSE;
		}
		rc = card_of(q, kp_csv_get(c, col[1]), key, token, &is_new);
		if (rc != KP_OK) {
			snprintf(err, cap, "%s:%d: card: a label of 1-79 bytes, felica:IDm or token:HEX",
			         name, c->rec_line);
			return rc;
		}
		rc = kp_tap_engine_set_place(e, kp_csv_get(c, col[2]), kp_csv_get(c, col[3]),
		                             kp_csv_get(c, col[4]), q->offset_s, ev);
		if (rc != KP_OK) {
			snprintf(err, cap, "%s:%d: operator, route or stop: ids of 1-32 bytes "
			         "(operator required)", name, c->rec_line);
			return rc;
		}
		if (is_new) {
			rc = card_start(q, token, now, kp_csv_get(c, col[6]), kp_csv_get(c, col[7]),
			                       why, sizeof(why));
			if (rc != KP_OK) {
				snprintf(err, cap, "%s:%d: %s", name, c->rec_line, why);
				return rc;
			}
		}
		rc = sweep_all(e, now, err, cap);
		if (rc == KP_OK)
			rc = kp_tap_decide(e, token, now, &out);
		if (rc != KP_OK) {
			snprintf(err, cap, "%s:%d: %s (%s)", name, c->rec_line, kp_strerror(rc),
			         kp_store_errmsg(q->s));
			return rc;
		}
	}
	if (r < 0)
		return r;
	/* Journeys still open at the end are closed when their service day ends. */
	return last > 0 ? sweep_all(e, last + 400LL * 86400000LL, err, cap) : KP_OK;
}

int kp_fares_quote(const char *db_path, const char *journeys,
                   const uint8_t token_key[KP_TOKEN_KEY_LEN], struct kp_ctl_out *out, char *err,
                   size_t cap)
{
	struct quote q;
	struct kp_terminal_cfg cfg;
	struct kp_csv c;
	kp_tap_engine *e = NULL;
	kp_key *key = NULL;
	char tmpl[] = "/tmp/kippu-quote-XXXXXX", path[64], dir[4096], base[4096];
	int missing = 0, rc;

	err[0] = '\0';
	memset(&q, 0, sizeof(q));
	memset(&c, 0, sizeof(c));
	q.out = out;
	q.next_ent = QUOTE_ENT_BASE;
	/* The database as it is (missing, or not a terminal's, is named) before its copy. */
	rc = kp_store_open_mode(&q.s, db_path, KP_STORE_READONLY, err, cap);
	kp_store_close(q.s);
	q.s = NULL;
	if (rc != KP_OK)
		return rc;
	snprintf(dir, sizeof(dir), "%s", journeys);
	snprintf(base, sizeof(base), "%s", journeys);
	rc = kp_csv_open(&c, dirname(dir), basename(base), &missing, err, cap);
	if (rc != KP_OK) {
		if (missing)
			snprintf(err, cap, "%s: no such file", journeys);
		return rc;
	}
	if (mkdtemp(tmpl) == NULL) {
		snprintf(err, cap, "scratch folder: %s", strerror(errno));
		kp_csv_close(&c);
		return KP_E_IO;
	}
	snprintf(path, sizeof(path), "%s/quote.db", tmpl);
	rc = kp_store_snapshot(db_path, path, err, cap);
	if (rc == KP_OK)
		rc = kp_store_open(&q.s, path);
	if (rc == KP_OK)
		rc = kp_store_scratch(q.s);
	if (rc == KP_OK)
		rc = kp_key_generate(&key) == 0 ? KP_OK : KP_E_IO;
	if (rc == KP_OK) {
		kp_terminal_cfg_defaults(&cfg);
		snprintf(cfg.terminal_id, sizeof(cfg.terminal_id), "quote");
		snprintf(cfg.operator_id, sizeof(cfg.operator_id), "quote");
		rc = kp_tap_engine_open(&e, q.s, &cfg, key, token_key);
	}
	if (rc == KP_OK) {
		kp_tap_engine_observe(e, on_record, &q);
		rc = run_rows(&q, e, &c, token_key, c.name, err, cap);
		if (rc == KP_OK && kp_ctl_out_end(out, NULL) != 0)
			rc = KP_E_INVAL;
	} else if (err[0] == '\0') {
		snprintf(err, cap, "%s: %s (%s)", db_path, kp_strerror(rc),
		         q.s != NULL ? kp_store_errmsg(q.s) : "");
	}
	kp_tap_engine_close(e);
	kp_key_free(key);
	kp_store_close(q.s);
	kp_csv_close(&c);
	unlink(path);
	snprintf(path, sizeof(path), "%s/quote.db-wal", tmpl);
	unlink(path);
	snprintf(path, sizeof(path), "%s/quote.db-shm", tmpl);
	unlink(path);
	rmdir(tmpl);
	free(q.cards);
	return rc;
}
