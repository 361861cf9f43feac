/* The tap decision. One SQLite transaction holds the entitlement change and the signed
 * journal record; it commits before the caller may show anything to the rider. The
 * record is signed inside the transaction (deterministic ECDSA, ~0.3 ms), so no unsigned
 * record ever exists on disk and "committed" and "signed" are the same instant. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "store.h"

#define KP_MAX_JPKI_CAS 4

struct kp_tap_engine {
	kp_cert *jpki_cas[KP_MAX_JPKI_CAS];  /* JPKI authentication CAs My Number cards chain to */
	size_t n_jpki_cas;
	kp_store *s;
	struct kp_terminal_cfg cfg;
	const kp_key *key;
	uint8_t token_key[KP_TOKEN_KEY_LEN];
	uint64_t seq;                        /* last committed sequence */
	uint8_t prev[KP_SHA256_LEN];         /* its payload's hash */
	void (*observer)(void *arg, const struct kp_record *rec);
	void *observer_arg;
	struct kp_record last;               /* the record of the open transaction */
	int has_last;
};

/* jpki_ca: comma-separated certificate files (PEM or DER). */
static int load_jpki_cas(kp_tap_engine *e, const char *list)
{
	char buf[sizeof(((struct kp_terminal_cfg *)0)->jpki_ca)], *save = NULL;
	int rc;

	snprintf(buf, sizeof(buf), "%s", list);
	for (char *p = strtok_r(buf, ",", &save); p != NULL; p = strtok_r(NULL, ",", &save)) {
		if (e->n_jpki_cas == KP_MAX_JPKI_CAS) {
			fprintf(stderr, "kippu: jpki_ca: at most %d certificates\n", KP_MAX_JPKI_CAS);
			return KP_E_CONFIG;
		}
		rc = kp_cert_load(&e->jpki_cas[e->n_jpki_cas], p);
		if (rc != 0) {
			fprintf(stderr, "kippu: jpki_ca %s: %s\n", p, kp_strerror(rc));
			return KP_E_CONFIG;
		}
		e->n_jpki_cas++;
	}
	return KP_OK;
}

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
	if (rc == KP_OK)
		rc = load_jpki_cas(e, cfg->jpki_ca);
	if (rc != KP_OK) {
		kp_tap_engine_close(e);
		return rc;
	}
	*out = e;
	return KP_OK;
}

int kp_tap_engine_token_key(const kp_tap_engine *e, uint8_t key[KP_TOKEN_KEY_LEN])
{
	memcpy(key, e->token_key, KP_TOKEN_KEY_LEN);
	return KP_OK;
}

void kp_tap_engine_close(kp_tap_engine *e)
{
	if (e == NULL)
		return;
	kp_zeroize(e->token_key, sizeof(e->token_key));
	for (size_t i = 0; i < e->n_jpki_cas; i++)
		kp_cert_free(e->jpki_cas[i]);
	free(e);
}

const char *kp_tap_reason_text(const char *reason)
{
	static const struct { const char *code, *text; } texts[] = {
		{ "ok",               "OK" },
		{ "activated",        "OK: pass started" },
		{ "already",          "Already validated" },
		{ "denylisted",       "Card blocked: please see staff" },
		{ "expired",          "Ticket expired" },
		{ "not-yet-valid",    "Ticket not valid yet" },
		{ "exhausted",        "No rides left" },
		{ "insufficient-balance", "Balance too low: please top up" },
		{ "fare-unknown",     "Fare not known here: see staff" },
		{ "wrong-operator",   "Ticket not valid on this operator" },
		{ "no-entitlement",   "No ticket on this card" },
		{ "card-removed",     "Card removed too soon: tap again" },
		{ "card-error",       "Card could not be read: tap again" },
		{ "unsupported-card", "Card not supported here" },
		{ "not-eligible",     "Ticket is for another rider category" },
		{ "eligibility-expired", "Resident status expired: please renew" },
		{ "card-invalid",     "Card not accepted: see staff" },
		{ "card-expired",     "Card certificate expired: renew at the city office" },
	};

	for (size_t i = 0; i < sizeof(texts) / sizeof(texts[0]); i++) {
		if (strcmp(texts[i].code, reason) == 0)
			return texts[i].text;
	}
	return "Refused";
}

/* Builds, signs and appends the record inside the open transaction. */
static int journal_kind(kp_tap_engine *e, struct kp_record *rec, const char *kind)
{
	uint8_t *payload = NULL, *cose = NULL;
	size_t payload_len = 0, cose_len = 0;
	uint8_t hash[KP_SHA256_LEN];
	int rc;

	rec->seq = e->seq + 1;
	snprintf(rec->terminal, sizeof(rec->terminal), "%s", e->cfg.terminal_id);
	snprintf(rec->kind, sizeof(rec->kind), "%s", kind);
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
	if (rc == KP_OK) {
		memcpy(e->prev, hash, KP_SHA256_LEN);  /* provisional until commit, see finish() */
		e->last = *rec;
		e->has_last = 1;
	}
out:
	free(payload);
	free(cose);
	return rc;
}

static int journal(kp_tap_engine *e, struct kp_record *rec)
{
	return journal_kind(e, rec, "tap");
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
	out->amount = rec->amount;
	out->seq = rec->seq;
	snprintf(out->category, sizeof(out->category), "%s", rec->category);
	out->linked = rec->has_via;
	out->warn_days = -1;
}

/* Commits, or rolls back and forgets the provisional journal head. */
static int finish(kp_tap_engine *e, int rc, const uint8_t prev_before[KP_SHA256_LEN])
{
	int had = e->has_last;

	e->has_last = 0;
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
	if (had && e->observer != NULL)
		e->observer(e->observer_arg, &e->last);
	return KP_OK;
}

void kp_tap_engine_observe(kp_tap_engine *e, void (*fn)(void *arg, const struct kp_record *rec),
                           void *arg)
{
	e->observer = fn;
	e->observer_arg = arg;
}

struct choice {
	const struct kp_ent_view *pass;      /* a period pass: used before any ride */
	const struct kp_elig_view *pass_elig;
	const struct kp_ent_view *best;
	const struct kp_elig_view *elig;     /* the category that allowed it, if any */
	const char *reason;
};

static int64_t floor_div(int64_t a, int64_t b)
{
	return a / b - (a % b != 0 && (a < 0) != (b < 0));
}

void kp_service_days(const struct kp_terminal_cfg *cfg, int64_t now_ms, int days,
                     int64_t *from_ms, int64_t *until_ms)
{
	/* Local time shifted back by the day's end hour: a tap at 01:30 belongs to yesterday. */
	int64_t shifted = floor_div(now_ms, 1000) + cfg->utc_offset_s - cfg->service_day_end_s;
	int64_t day = floor_div(shifted, 86400);

	*from_ms = (day * 86400 + cfg->service_day_end_s - cfg->utc_offset_s) * 1000;
	*until_ms = *from_ms + (int64_t)days * 86400000LL;
}

/* until in local time: "HH:MM" when within a day of now, else "YYYY-MM-DD HH:MM". */
static void until_text(const struct kp_terminal_cfg *cfg, int64_t now_ms, int64_t until_ms,
                       char *out, size_t cap)
{
	int64_t local = floor_div(until_ms, 1000) + cfg->utc_offset_s;
	int64_t z = floor_div(local, 86400) + 719468, sod = local - floor_div(local, 86400) * 86400;
	int64_t era = floor_div(z, 146097), doe = z - era * 146097;
	int64_t yoe = (doe - doe / 1460 + doe / 36524 - doe / 146096) / 365;
	int64_t doy = doe - (365 * yoe + yoe / 4 - yoe / 100), mp = (5 * doy + 2) / 153;
	int64_t d = doy - (153 * mp + 2) / 5 + 1, m = mp < 10 ? mp + 3 : mp - 9;
	int64_t y = yoe + era * 400 + (m <= 2);

	if (until_ms - now_ms <= 86400000LL)
		snprintf(out, cap, "%02d:%02d", (int)(sod / 3600), (int)(sod % 3600 / 60));
	else
		snprintf(out, cap, "%04d-%02d-%02d %02d:%02d", (int)y, (int)m, (int)d,
		         (int)(sod / 3600), (int)(sod % 3600 / 60));
}

/* The rider's category `cat` valid at now, or NULL; *lapsed says one exists but is not
 * valid now (the terminal refuses a passed eligibility even before the next sync). */
static const struct kp_elig_view *find_elig(const struct kp_elig_view *el, size_t n_el,
                                            const char *cat, int64_t now, int *lapsed)
{
	for (size_t i = 0; i < n_el; i++) {
		if (strcmp(el[i].category, cat) != 0)
			continue;
		if (now >= el[i].valid_from_ms && now < el[i].valid_until_ms)
			return &el[i];
		*lapsed = 1;
	}
	return NULL;
}

/* The entitlement best for the rider: among usable ones the one that expires first; if
 * none is usable, the most specific reason why. Stored value is never chosen here: a pass
 * or ride goes before it, so usable stored-value entitlements are only marked in stored[]. */
static struct choice choose(const struct kp_ent_view *v, size_t n, const struct kp_elig_view *el,
                            size_t n_el, int64_t now, int *stored)
{
	struct choice c = { NULL, NULL, NULL, NULL, "no-entitlement" };
	int exhausted = 0, expired = 0, early = 0, elsewhere = 0, lapsed = 0, not_eligible = 0;

	for (size_t i = 0; i < n; i++) {
		const struct kp_entitlement *en = &v[i].e;
		const struct kp_elig_view *cat = NULL;

		if (v[i].category[0] != '\0') {
			int was = 0;

			cat = find_elig(el, n_el, v[i].category, now, &was);
			if (cat == NULL) {
				lapsed |= was;
				not_eligible |= !was;
				continue;
			}
		}
		if (!v[i].valid_here) {
			elsewhere = 1;
		} else if (now >= en->valid_until_ms) {
			expired = 1;
		} else if (now < en->valid_from_ms) {
			early = 1;
		} else if (v[i].period_days > 0) {
			/* An active pass before one still to start (its days run from now on), then
			 * the one that ends first. */
			if (c.pass == NULL || (c.pass->first_use && !v[i].first_use) ||
			    (c.pass->first_use == v[i].first_use &&
			     en->valid_until_ms < c.pass->e.valid_until_ms)) {
				c.pass = &v[i];
				c.pass_elig = cat;
			}
		} else if (v[i].stored) {
			stored[i] = 1;
		} else if (en->rides_left <= 0) {
			exhausted = 1;
		} else if (c.best == NULL || en->valid_until_ms < c.best->e.valid_until_ms) {
			c.best = &v[i];
			c.elig = cat;
		}
	}
	if (c.pass != NULL) {
		c.best = c.pass;
		c.elig = c.pass_elig;
	}
	if (c.best != NULL)
		c.reason = "ok";
	else if (exhausted)
		c.reason = "exhausted";
	else if (lapsed)
		c.reason = "eligibility-expired";
	else if (expired)
		c.reason = "expired";
	else if (early)
		c.reason = "not-yet-valid";
	else if (elsewhere)
		c.reason = "wrong-operator";
	else if (not_eligible)
		c.reason = "not-eligible";
	return c;
}

/* The fare of a tap-on here from the terminal's fare feed: boarding stop only, no
 * destination. Each rider category the card holds now is priced by the feed if the feed
 * has it as a GTFS rider category id, else by this operator's discount rule applied to
 * the adult (default) fare, if there is one; the cheapest wins. Otherwise the feed's
 * default category. *cat_used gets the eligibility that priced it, or NULL. */
static int tap_on_fare(kp_tap_engine *e, const struct kp_elig_view *el, size_t n_el,
                       int64_t now, struct kp_fare_result *fare,
                       const struct kp_elig_view **cat_used)
{
	struct kp_fare_query q;
	struct kp_fare_result r, adult;
	int rc, found = 0, adult_rc = KP_E_NOFARE, have_adult = 0;

	*cat_used = NULL;
	if (e->cfg.fare_feed[0] == '\0')
		return KP_E_NOFARE;
	memset(&q, 0, sizeof(q));
	q.feed_id = e->cfg.fare_feed;
	q.route_id = e->cfg.route;
	q.from_stop = e->cfg.stop;
	q.payment_method = -1;
	for (size_t i = 0; i < n_el; i++) {
		struct kp_discount d;
		int has_rule = 0;

		if (now < el[i].valid_from_ms || now >= el[i].valid_until_ms)
			continue;
		q.rider_category = el[i].category;
		rc = kp_fare_lookup(e->s, &q, &r);
		if (rc == KP_E_DB)
			return rc;
		if (rc != KP_OK || strcmp(r.rider_category, el[i].category) != 0) {
			/* The feed has no price of its own for it: the operator's rule, if any. */
			rc = kp_store_discount(e->s, e->cfg.operator_id, el[i].category, &d, &has_rule);
			if (rc != KP_OK)
				return rc;
			if (!has_rule)
				continue;
			if (!have_adult) {
				q.rider_category = NULL;
				adult_rc = kp_fare_lookup(e->s, &q, &adult);
				if (adult_rc == KP_E_DB)
					return adult_rc;
				have_adult = 1;
			}
			if (adult_rc != KP_OK || adult.amount < 0)
				continue;
			r = adult;
			r.amount = kp_discount_apply(adult.amount, &d);
			if (r.amount < 0)
				continue;
			_Static_assert(sizeof(r.rider_category) >= sizeof(el[i].category), "category");
			memcpy(r.rider_category, el[i].category, sizeof(el[i].category));
		}
		if (!found || r.amount < fare->amount) {
			*fare = r;
			*cat_used = &el[i];
			found = 1;
		}
	}
	if (found)
		return KP_OK;
	if (have_adult) {
		if (adult_rc == KP_OK)
			*fare = adult;
		return adult_rc;
	}
	q.rider_category = NULL;
	return kp_fare_lookup(e->s, &q, fare);
}

/* Charges stored value when no pass or ride was usable: the entitlement that expires first
 * among those whose balance covers the fare. Sets rec's reason, and on success the
 * product, amount and balance left; *chosen is NULL when refused. */
static int charge_stored(kp_tap_engine *e, const struct kp_ent_view *v, size_t n,
                         const int *stored, const struct kp_elig_view *el, size_t n_el,
                         int64_t now, struct kp_record *rec, const struct kp_ent_view **chosen,
                         const struct kp_elig_view **cat_used)
{
	struct kp_fare_result fare;
	int rc = tap_on_fare(e, el, n_el, now, &fare, cat_used);

	*chosen = NULL;
	if (rc == KP_E_DB)
		return rc;
	if (rc != KP_OK || fare.amount < 0) {
		/* Unknown feed, route or stop, or a fare that needs the alighting stop. */
		fprintf(stderr, "kippu: no tap-on fare: %s (%s)\n", kp_strerror(rc),
		        e->cfg.fare_feed[0] == '\0' ? "no fare_feed configured" : kp_store_errmsg(e->s));
		snprintf(rec->reason, sizeof(rec->reason), "fare-unknown");
		return KP_OK;
	}
	for (size_t i = 0; i < n; i++) {
		if (!stored[i] || v[i].e.rides_left < fare.amount)
			continue;
		if (*chosen == NULL || v[i].e.valid_until_ms < (*chosen)->e.valid_until_ms)
			*chosen = &v[i];
	}
	if (*chosen == NULL) {
		snprintf(rec->reason, sizeof(rec->reason), "insufficient-balance");
		return KP_OK;
	}
	snprintf(rec->reason, sizeof(rec->reason), "ok");
	snprintf(rec->product, sizeof(rec->product), "%s", (*chosen)->e.product);
	rec->entitlement = (*chosen)->e.id;
	rec->rides = 0;
	rec->amount = fare.amount;
	rec->has_left = 1;
	rec->left = (*chosen)->e.rides_left - fare.amount;
	return kp_store_charge(e->s, (*chosen)->e.token, (*chosen)->e.id, (*chosen)->e.rides_left,
	                       fare.amount);
}

/* The card's entitlements, and those of the My Number linkages it is linked through. */
static int gather(kp_tap_engine *e, const uint8_t token[KP_TOKEN_LEN], int64_t now,
                  struct kp_ent_view *ents, size_t *n, struct kp_elig_view *el, size_t *n_el)
{
	int rc = kp_store_card_eligibility(e->s, token, el, KP_MAX_CARD_ELIGIBILITY, n_el);

	if (rc == KP_OK)
		rc = kp_store_card_entitlements(e->s, token, e->cfg.operator_id, ents,
		                                KP_MAX_CARD_ENTITLEMENTS, n);
	for (size_t i = 0; rc == KP_OK && i < *n_el; i++) {
		size_t more = 0;

		if (!el[i].has_via || now < el[i].valid_from_ms || now >= el[i].valid_until_ms)
			continue;
		rc = kp_store_card_entitlements(e->s, el[i].via, e->cfg.operator_id, ents + *n,
		                                KP_MAX_CARD_ENTITLEMENTS - *n, &more);
		*n += more;
		/* The linkage's own categories count for the card too. */
		if (rc == KP_OK && *n_el < KP_MAX_CARD_ELIGIBILITY) {
			size_t extra = 0;

			rc = kp_store_card_eligibility(e->s, el[i].via, el + *n_el,
			                               KP_MAX_CARD_ELIGIBILITY - *n_el, &extra);
			for (size_t k = *n_el; k < *n_el + extra; k++) {
				el[k].has_via = 1;
				memcpy(el[k].via, el[i].via, KP_TOKEN_LEN);
			}
			*n_el += extra;
		}
	}
	return rc;
}

int kp_tap_decide(kp_tap_engine *e, const uint8_t token[KP_TOKEN_LEN], int64_t now_ms,
                  struct kp_tap_outcome *out)
{
	struct kp_ent_view ents[KP_MAX_CARD_ENTITLEMENTS];
	struct kp_elig_view el[KP_MAX_CARD_ELIGIBILITY];
	struct kp_record rec;
	uint8_t prev_before[KP_SHA256_LEN];
	enum kp_tap_kind kind = KP_TAP_REFUSED;
	size_t n = 0, n_el = 0;
	int64_t last = 0, pass_until = 0;
	int listed = 0, found = 0, warn_days = -1, rc;

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
		int stored[KP_MAX_CARD_ENTITLEMENTS] = { 0 }, any_stored = 0;

		rc = gather(e, token, now_ms, ents, &n, el, &n_el);
		if (rc != KP_OK)
			return finish(e, rc, prev_before);
		c = choose(ents, n, el, n_el, now_ms, stored);
		snprintf(rec.reason, sizeof(rec.reason), "%s", c.reason);
		for (size_t i = 0; i < n; i++)
			any_stored |= stored[i];
		if (c.best == NULL && any_stored) {
			const struct kp_ent_view *sv = NULL;
			const struct kp_elig_view *cat = NULL;

			rc = charge_stored(e, ents, n, stored, el, n_el, now_ms, &rec, &sv, &cat);
			if (rc == KP_OK && sv != NULL) {
				kind = KP_TAP_ACCEPTED;
				if (memcmp(sv->e.token, token, KP_TOKEN_LEN) != 0) {
					rec.has_via = 1;
					memcpy(rec.via, sv->e.token, KP_TOKEN_LEN);
				} else if (cat != NULL && cat->has_via) {
					rec.has_via = 1;
					memcpy(rec.via, cat->via, KP_TOKEN_LEN);
				}
				if (cat != NULL)
					snprintf(rec.category, sizeof(rec.category), "%s", cat->category);
			}
		} else if (c.best != NULL) {
			kind = KP_TAP_ACCEPTED;
			snprintf(rec.product, sizeof(rec.product), "%s", c.best->e.product);
			rec.entitlement = c.best->e.id;
			if (c.pass != NULL) {
				/* A pass charges nothing; its first use fixes its days, in this
				 * transaction, and the journal says so ("activated"). */
				pass_until = c.pass->e.valid_until_ms;
				if (c.pass->first_use) {
					int64_t from = 0;

					kp_service_days(&e->cfg, now_ms, c.pass->period_days, &from, &pass_until);
					snprintf(rec.reason, sizeof(rec.reason), "activated");
				}
			} else {
				rec.rides = 1;
				rec.has_left = 1;
				rec.left = c.best->e.rides_left - 1;
			}
			/* The journal says where a discount or pass came from: the linkage's token,
			 * never the person. */
			if (memcmp(c.best->e.token, token, KP_TOKEN_LEN) != 0) {
				rec.has_via = 1;
				memcpy(rec.via, c.best->e.token, KP_TOKEN_LEN);
			} else if (c.elig != NULL && c.elig->has_via) {
				rec.has_via = 1;
				memcpy(rec.via, c.elig->via, KP_TOKEN_LEN);
			}
			if (c.elig != NULL) {
				int64_t left_ms = c.elig->valid_until_ms - now_ms;

				snprintf(rec.category, sizeof(rec.category), "%s", c.elig->category);
				if (left_ms < (int64_t)e->cfg.reenrol_warn_days * 86400000LL)
					warn_days = (int)(left_ms / 86400000LL);
			}
			if (c.pass == NULL)
				rc = kp_store_take_ride(e->s, c.best->e.token, c.best->e.id,
				                        c.best->e.rides_left);
			else if (c.pass->first_use)
				rc = kp_store_activate(e->s, c.pass->e.token, c.pass->e.id,
				                       pass_until - (int64_t)c.pass->period_days * 86400000LL,
				                       pass_until);
		}
	}
	snprintf(rec.result, sizeof(rec.result), "%s",
	         kind == KP_TAP_ACCEPTED ? "accepted" : kind == KP_TAP_ALREADY ? "already" : "refused");
	if (rc == KP_OK)
		rc = journal(e, &rec);
	if (rc == KP_OK && kind == KP_TAP_ACCEPTED)
		rc = kp_store_set_last_tap(e->s, token, now_ms, rec.seq);
	if (rc == KP_OK && kind == KP_TAP_ACCEPTED)
		rc = kp_store_pending_use(e->s, rec.seq, rec.entitlement,
		                          rec.amount > 0 ? rec.amount : rec.rides);
	rc = finish(e, rc, prev_before);
	if (rc == KP_OK) {
		outcome_from(out, &rec, kind);
		out->warn_days = warn_days;
		if (kind == KP_TAP_ACCEPTED && pass_until != 0) {
			out->valid_until_ms = pass_until;
			until_text(&e->cfg, now_ms, pass_until, out->until_text, sizeof(out->until_text));
		}
	}
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

int kp_tap_journal(kp_tap_engine *e, struct kp_record *rec, const char *kind)
{
	uint8_t prev_before[KP_SHA256_LEN];
	int rc;

	if (e == NULL || rec == NULL || kind == NULL)
		return KP_E_INVAL;
	memcpy(prev_before, e->prev, KP_SHA256_LEN);
	rc = kp_store_begin(e->s);
	if (rc == KP_OK)
		rc = journal_kind(e, rec, kind);
	return finish(e, rc, prev_before);
}

const struct kp_terminal_cfg *kp_tap_engine_cfg(const kp_tap_engine *e)
{
	return &e->cfg;
}

/* What a failed My Number card read means for the rider. */
static const char *jpki_reason(int rc)
{
	if (rc == KP_HAL_E_TIMEOUT || rc == KP_HAL_E_NOCARD)
		return "card-removed";
	if (rc == KP_E_CERT_EXPIRED)
		return "card-expired";
	if (rc == KP_E_CERT)
		return "card-invalid";
	return "card-error";
}

int kp_tap_identify_mynumber(kp_tap_engine *e, struct kp_reader *r, int64_t now_ms,
                             uint8_t linkage[KP_TOKEN_LEN], kp_cert **cert, const char **reason)
{
	struct kp_jpki j;
	char err[256] = "";                 /* stays empty when SELECT itself fails */
	int rc;

	*reason = NULL;
	kp_jpki_init(&j, r, e->cfg.card_timeout_ms);
	rc = kp_jpki_select_app(&j);
	if (rc == KP_E_SW_NOTFOUND || rc == KP_E_SW_OTHER || rc == KP_E_SW_LENGTH ||
	    e->n_jpki_cas == 0) {
		/* A Type B card without JPKI (or a terminal not set up for it): one quiet
		 * refusal, not an error storm. */
		*reason = "unsupported-card";
		return rc != KP_OK ? rc : KP_E_CONFIG;
	}
	if (rc == KP_OK)
		rc = kp_jpki_identify(&j, (const kp_cert *const *)e->jpki_cas, e->n_jpki_cas, now_ms,
		                      e->token_key, linkage, cert, err, sizeof(err));
	if (rc != KP_OK) {
		*reason = jpki_reason(rc);
		fprintf(stderr, "kippu: My Number card refused: %s\n", err[0] ? err : kp_strerror(rc));
	}
	return rc;
}

int kp_tap_link(kp_tap_engine *e, const uint8_t card[KP_TOKEN_LEN],
                const uint8_t linkage[KP_TOKEN_LEN], int64_t now_ms, struct kp_tap_outcome *out)
{
	struct kp_record rec;
	uint8_t prev_before[KP_SHA256_LEN];
	int rc;

	memset(&rec, 0, sizeof(rec));
	memcpy(prev_before, e->prev, KP_SHA256_LEN);
	rec.time_ms = now_ms;
	rec.has_token = 1;
	memcpy(rec.token, card, KP_TOKEN_LEN);
	rec.has_via = 1;
	memcpy(rec.via, linkage, KP_TOKEN_LEN);
	snprintf(rec.result, sizeof(rec.result), "requested");
	snprintf(rec.reason, sizeof(rec.reason), "link-request");
	rc = kp_store_begin(e->s);
	if (rc == KP_OK)
		rc = journal_kind(e, &rec, "link");
	rc = finish(e, rc, prev_before);
	if (rc == KP_OK) {
		outcome_from(out, &rec, KP_TAP_ACCEPTED);
		out->linked = 1;
	}
	return rc;
}

int kp_tap_card(kp_tap_engine *e, struct kp_reader *r, const struct kp_card_info *info,
                int64_t now_ms, struct kp_tap_outcome *out)
{
	struct kp_felica f;
	struct kp_transit_balance bal;
	uint8_t token[KP_TOKEN_LEN];
	int rc;

	if (info->tech == KP_TECH_ISO14443B) {
		const char *reason = NULL;

		/* A My Number card tapped directly: its linkage token is the card's token. */
		rc = kp_tap_identify_mynumber(e, r, now_ms, token, NULL, &reason);
		if (rc != KP_OK)
			return kp_tap_refuse(e, NULL, reason, now_ms, out);
		return kp_tap_decide(e, token, now_ms, out);
	}
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
