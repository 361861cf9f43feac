/* The tap decision. One SQLite transaction holds the entitlement change and the signed
 * journal record; it commits before the caller may show anything to the rider. The
 * record is signed inside the transaction (deterministic ECDSA, ~0.3 ms), so no unsigned
 * record ever exists on disk and "committed" and "signed" are the same instant. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "store.h"

struct kp_tap_engine {
	kp_store *s;
	struct kp_terminal_cfg cfg;
	const kp_key *key;
	uint8_t token_key[KP_TOKEN_KEY_LEN];
	uint64_t seq;                        /* last committed sequence */
	uint8_t prev[KP_SHA256_LEN];         /* its payload's hash */
};

int kp_tap_engine_open(kp_tap_engine **out, kp_store *s, const struct kp_terminal_cfg *cfg,
                       const kp_key *key, const uint8_t token_key[KP_TOKEN_KEY_LEN])
{
	kp_tap_engine *e;
	int rc;

	*out = NULL;
	if (s == NULL || cfg == NULL || key == NULL || token_key == NULL ||
	    cfg->terminal_id[0] == '\0' || cfg->operator_id[0] == '\0')
		return KP_E_INVAL;
	e = calloc(1, sizeof(*e));
	if (e == NULL)
		return KP_E_NOMEM;
	e->s = s;
	e->cfg = *cfg;
	e->key = key;
	memcpy(e->token_key, token_key, KP_TOKEN_KEY_LEN);
	rc = kp_store_journal_head(s, &e->seq, e->prev);
	if (rc != KP_OK) {
		kp_tap_engine_close(e);
		return rc;
	}
	*out = e;
	return KP_OK;
}

void kp_tap_engine_close(kp_tap_engine *e)
{
	if (e == NULL)
		return;
	kp_zeroize(e->token_key, sizeof(e->token_key));
	free(e);
}

const char *kp_tap_reason_text(const char *reason)
{
	static const struct { const char *code, *text; } texts[] = {
		{ "ok",               "OK" },
		{ "already",          "Already validated" },
		{ "denylisted",       "Card blocked: please see staff" },
		{ "expired",          "Ticket expired" },
		{ "not-yet-valid",    "Ticket not valid yet" },
		{ "exhausted",        "No rides left" },
		{ "wrong-operator",   "Ticket not valid on this operator" },
		{ "no-entitlement",   "No ticket on this card" },
		{ "card-removed",     "Card removed too soon: tap again" },
		{ "card-error",       "Card could not be read: tap again" },
		{ "unsupported-card", "Card not supported here" },
	};

	for (size_t i = 0; i < sizeof(texts) / sizeof(texts[0]); i++) {
		if (strcmp(texts[i].code, reason) == 0)
			return texts[i].text;
	}
	return "Refused";
}

/* Builds, signs and appends the record inside the open transaction. */
static int journal(kp_tap_engine *e, struct kp_record *rec)
{
	uint8_t *payload = NULL, *cose = NULL;
	size_t payload_len = 0, cose_len = 0;
	uint8_t hash[KP_SHA256_LEN];
	int rc;

	rec->seq = e->seq + 1;
	snprintf(rec->terminal, sizeof(rec->terminal), "%s", e->cfg.terminal_id);
	snprintf(rec->kind, sizeof(rec->kind), "tap");
	snprintf(rec->operator_id, sizeof(rec->operator_id), "%s", e->cfg.operator_id);
	snprintf(rec->route, sizeof(rec->route), "%s", e->cfg.route);
	snprintf(rec->stop, sizeof(rec->stop), "%s", e->cfg.stop);
	memcpy(rec->prev, e->prev, KP_SHA256_LEN);
	rc = kp_record_encode(rec, &payload, &payload_len);
	if (rc != 0)
		goto out;
	rc = kp_sha256(payload, payload_len, hash);
	if (rc != 0)
		goto out;
	rc = kp_cose_sign1(e->key, e->cfg.terminal_id, payload, payload_len, &cose, &cose_len);
	if (rc != 0)
		goto out;
	rc = kp_store_journal_append(e->s, rec, payload, payload_len, cose, cose_len, hash);
	if (rc == KP_OK)
		memcpy(e->prev, hash, KP_SHA256_LEN);  /* provisional until commit, see finish() */
out:
	free(payload);
	free(cose);
	return rc;
}

static void outcome_from(struct kp_tap_outcome *out, const struct kp_record *rec,
                         enum kp_tap_kind kind)
{
	memset(out, 0, sizeof(*out));
	out->kind = kind;
	snprintf(out->reason, sizeof(out->reason), "%s", rec->reason);
	snprintf(out->product, sizeof(out->product), "%s", rec->product);
	out->entitlement = rec->entitlement;
	out->rides_left = rec->has_left ? rec->left : -1;
	out->seq = rec->seq;
}

/* Commits, or rolls back and forgets the provisional journal head. */
static int finish(kp_tap_engine *e, int rc, const uint8_t prev_before[KP_SHA256_LEN])
{
	if (rc == KP_OK)
		rc = kp_store_commit(e->s);
	if (rc != KP_OK) {
		kp_store_rollback(e->s);
		memcpy(e->prev, prev_before, KP_SHA256_LEN);
		/* Re-read the head, in case the failure came from a journal that moved. */
		if (kp_store_journal_head(e->s, &e->seq, e->prev) != KP_OK)
			memcpy(e->prev, prev_before, KP_SHA256_LEN);
		fprintf(stderr, "kippu: tap not recorded: %s (%s)\n", kp_strerror(rc),
		        kp_store_errmsg(e->s));
		return rc;
	}
	e->seq++;
	return KP_OK;
}

struct choice {
	const struct kp_ent_view *best;
	const char *reason;
};

/* The entitlement best for the rider: among usable ones the one that expires first; if
 * none is usable, the most specific reason why. */
static struct choice choose(const struct kp_ent_view *v, size_t n, int64_t now)
{
	struct choice c = { NULL, "no-entitlement" };
	int exhausted = 0, expired = 0, early = 0, elsewhere = 0;

	for (size_t i = 0; i < n; i++) {
		const struct kp_entitlement *en = &v[i].e;

		if (!v[i].valid_here) {
			elsewhere = 1;
		} else if (now >= en->valid_until_ms) {
			expired = 1;
		} else if (now < en->valid_from_ms) {
			early = 1;
		} else if (en->rides_left <= 0) {
			exhausted = 1;
		} else if (c.best == NULL || en->valid_until_ms < c.best->e.valid_until_ms) {
			c.best = &v[i];
		}
	}
	if (c.best != NULL)
		c.reason = "ok";
	else if (exhausted)
		c.reason = "exhausted";
	else if (expired)
		c.reason = "expired";
	else if (early)
		c.reason = "not-yet-valid";
	else if (elsewhere)
		c.reason = "wrong-operator";
	return c;
}

int kp_tap_decide(kp_tap_engine *e, const uint8_t token[KP_TOKEN_LEN], int64_t now_ms,
                  struct kp_tap_outcome *out)
{
	struct kp_ent_view ents[KP_MAX_CARD_ENTITLEMENTS];
	struct kp_record rec;
	uint8_t prev_before[KP_SHA256_LEN];
	enum kp_tap_kind kind = KP_TAP_REFUSED;
	size_t n = 0;
	int64_t last = 0;
	int listed = 0, found = 0, rc;

	memset(&rec, 0, sizeof(rec));
	memcpy(prev_before, e->prev, KP_SHA256_LEN);
	rec.time_ms = now_ms;
	rec.has_token = 1;
	memcpy(rec.token, token, KP_TOKEN_LEN);

	rc = kp_store_begin(e->s);
	if (rc != KP_OK)
		return finish(e, rc, prev_before);
	rc = kp_store_is_denylisted(e->s, token, &listed);
	if (rc == KP_OK && !listed)
		rc = kp_store_last_tap(e->s, token, &last, &found);
	if (rc != KP_OK)
		return finish(e, rc, prev_before);

	if (listed) {
		snprintf(rec.reason, sizeof(rec.reason), "denylisted");
	} else if (found && now_ms - last < e->cfg.double_tap_window_ms &&
	           last - now_ms < e->cfg.double_tap_window_ms) {
		/* Within the window (either way, should the clock have stepped back). */
		kind = KP_TAP_ALREADY;
		snprintf(rec.reason, sizeof(rec.reason), "already");
	} else {
		struct choice c;

		rc = kp_store_card_entitlements(e->s, token, e->cfg.operator_id, ents,
		                                KP_MAX_CARD_ENTITLEMENTS, &n);
		if (rc != KP_OK)
			return finish(e, rc, prev_before);
		c = choose(ents, n, now_ms);
		snprintf(rec.reason, sizeof(rec.reason), "%s", c.reason);
		if (c.best != NULL) {
			kind = KP_TAP_ACCEPTED;
			snprintf(rec.product, sizeof(rec.product), "%s", c.best->e.product);
			rec.entitlement = c.best->e.id;
			rec.rides = 1;
			rec.has_left = 1;
			rec.left = c.best->e.rides_left - 1;
			rc = kp_store_take_ride(e->s, token, c.best->e.id, c.best->e.rides_left);
		}
	}
	snprintf(rec.result, sizeof(rec.result), "%s",
	         kind == KP_TAP_ACCEPTED ? "accepted" : kind == KP_TAP_ALREADY ? "already" : "refused");
	if (rc == KP_OK)
		rc = journal(e, &rec);
	if (rc == KP_OK && kind == KP_TAP_ACCEPTED)
		rc = kp_store_set_last_tap(e->s, token, now_ms, rec.seq);
	if (rc == KP_OK && kind == KP_TAP_ACCEPTED)
		rc = kp_store_pending_use(e->s, rec.seq, rec.entitlement, rec.rides);
	rc = finish(e, rc, prev_before);
	if (rc == KP_OK)
		outcome_from(out, &rec, kind);
	return rc;
}

int kp_tap_refuse(kp_tap_engine *e, const uint8_t *token, const char *reason, int64_t now_ms,
                  struct kp_tap_outcome *out)
{
	struct kp_record rec;
	uint8_t prev_before[KP_SHA256_LEN];
	int rc;

	memset(&rec, 0, sizeof(rec));
	memcpy(prev_before, e->prev, KP_SHA256_LEN);
	rec.time_ms = now_ms;
	if (token != NULL) {
		rec.has_token = 1;
		memcpy(rec.token, token, KP_TOKEN_LEN);
	}
	snprintf(rec.result, sizeof(rec.result), "refused");
	snprintf(rec.reason, sizeof(rec.reason), "%s", reason);
	rc = kp_store_begin(e->s);
	if (rc == KP_OK)
		rc = journal(e, &rec);
	rc = finish(e, rc, prev_before);
	if (rc == KP_OK)
		outcome_from(out, &rec, KP_TAP_REFUSED);
	return rc;
}

int kp_tap_card(kp_tap_engine *e, struct kp_reader *r, const struct kp_card_info *info,
                int64_t now_ms, struct kp_tap_outcome *out)
{
	struct kp_felica f;
	struct kp_transit_balance bal;
	uint8_t token[KP_TOKEN_LEN];
	int rc;

	if (info->tech != KP_TECH_FELICA)
		return kp_tap_refuse(e, NULL, "unsupported-card", now_ms, out);
	rc = kp_token_derive(e->token_key, "felica", info->u.felica.idm, 8, token);
	if (rc != 0)
		return rc;
	/* Reading the balance block proves the card is a transit IC card that is still in
	 * the field; a card pulled away before the decision is refused, never charged. */
	kp_felica_init(&f, r, info, e->cfg.card_timeout_ms);
	rc = kp_transit_read_balance(&f, &bal);
	if (rc == KP_HAL_E_TIMEOUT || rc == KP_HAL_E_NOCARD) {
		fprintf(stderr, "kippu: card read: %s\n", kp_strerror(rc));
		return kp_tap_refuse(e, token, "card-removed", now_ms, out);
	}
	if (rc != KP_OK) {
		fprintf(stderr, "kippu: card read refused: %s\n", kp_strerror(rc));
		return kp_tap_refuse(e, token, "card-error", now_ms, out);
	}
	return kp_tap_decide(e, token, now_ms, out);
}
