/* SPDX-License-Identifier: Apache-2.0 */
/* The tap decision. One SQLite transaction holds the entitlement change and the signed
 * journal record; it commits before the caller may show anything to the rider. The
 * record is signed inside the transaction (deterministic ECDSA, ~0.3 ms), so no unsigned
 * record ever exists on disk and "committed" and "signed" are the same instant. */
#include "tap_int.h"

enum fare_event { EV_TAP, EV_TAP_ON, EV_TAP_OFF };
static const char *const event_names[] = { "tap", "tap_on", "tap_off" };

/* One tap being decided: the card's entitlements on an operator and its fare state. */
struct tap {
	kp_tap_engine *e;
	const uint8_t *token;
	int64_t now;
	struct kp_ent_view ents[KP_MAX_CARD_ENTITLEMENTS];
	size_t n;
	struct kp_elig_view el[KP_MAX_CARD_ELIGIBILITY];
	size_t n_el;
	int stored[KP_MAX_CARD_ENTITLEMENTS], commuter[KP_MAX_CARD_ENTITLEMENTS], any_stored;
	struct choice c;
	struct kp_fare_state fs;
	char feed[KP_ID_MAX + 1];
	int distance, have_fare;
	int used_stored;                 /* the decision charged (or checked) stored value */
	int64_t adopted_ms;              /* the open journey is another terminal's, opened then */
	int mynumber;                    /* the token is a My Number card's linkage token */
	int stale;                       /* eligibility data too old: no category, no linkage */
	int stale_hit;                   /* ... and the card holds some, valid now */
	const struct policy *direct;     /* a My Number card tapped directly: the policy */
	int direct_filtered;             /* entitlements the policy does not allow were left out */
};

static int load_card(struct tap *t, const char *operator_id, const char *route)
{
	int rc;

	memset(t->stored, 0, sizeof(t->stored));
	memset(t->commuter, 0, sizeof(t->commuter));
	t->any_stored = 0;
	rc = tap_gather(t->e, t->token, operator_id, route, t->now, t->ents, &t->n, t->el, &t->n_el);
	if (rc != KP_OK)
		return rc;
	if (t->stale) {
		/* neither the card's categories nor what it holds through a linkage: only its own
		 * tickets, at the price of a rider without a category */
		size_t k = 0;

		for (size_t i = 0; i < t->n_el; i++)
			t->stale_hit |= t->now >= t->el[i].valid_from_ms && t->now < t->el[i].valid_until_ms;
		t->n_el = 0;
		for (size_t i = 0; i < t->n; i++) {
			if (memcmp(t->ents[i].e.token, t->token, KP_TOKEN_LEN) == 0 &&
			    t->ents[i].category[0] == '\0' && t->direct == NULL)
				t->ents[k++] = t->ents[i];
			else
				t->stale_hit = 1;
		}
		t->n = k;
	}
	if (t->direct != NULL) {
		/* a My Number card tapped directly uses only what the scheme lists */
		size_t k = 0;

		for (size_t i = 0; i < t->n; i++) {
			if (tap_policy_lists((const char (*)[KP_ID_MAX + 1])t->direct->products,
			                     t->direct->n_products, t->ents[i].e.product) ||
			    tap_policy_lists((const char (*)[KP_ID_MAX + 1])t->direct->categories,
			                     t->direct->n_categories, t->ents[i].category))
				t->ents[k++] = t->ents[i];
			else
				t->direct_filtered = 1;
		}
		t->n = k;
	}
	t->c = tap_choose(t->ents, t->n, t->el, t->n_el, t->now, t->stored, t->commuter);
	for (size_t i = 0; i < t->n; i++)
		t->any_stored |= t->stored[i];
	return KP_OK;
}

/* The journal names where a pass or category came from: the linkage's token, never the
 * person. */
static void note_origin(const struct tap *t, const struct kp_ent_view *used,
                        const struct kp_elig_view *cat, struct kp_record *rec)
{
	if (used != NULL && memcmp(used->e.token, t->token, KP_TOKEN_LEN) != 0) {
		rec->has_via = 1;
		memcpy(rec->via, used->e.token, KP_TOKEN_LEN);
	} else if (cat != NULL && cat->has_via) {
		rec->has_via = 1;
		memcpy(rec->via, cat->via, KP_TOKEN_LEN);
	}
	if (cat != NULL)
		snprintf(rec->category, sizeof(rec->category), "%s", cat->category);
}

/* The stored-value entitlement that expires first among those covering amount; with
 * any_balance, the one with the largest balance when none covers it. */
static const struct kp_ent_view *stored_for(const struct tap *t, int64_t amount, int any_balance)
{
	const struct kp_ent_view *best = NULL, *largest = NULL;

	for (size_t i = 0; i < t->n; i++) {
		if (!t->stored[i])
			continue;
		if (largest == NULL || t->ents[i].e.rides_left > largest->e.rides_left)
			largest = &t->ents[i];
		if (t->ents[i].e.rides_left < amount)
			continue;
		if (best == NULL || t->ents[i].e.valid_until_ms < best->e.valid_until_ms)
			best = &t->ents[i];
	}
	return best != NULL ? best : any_balance ? largest : NULL;
}

static int charge(struct tap *t, const struct kp_ent_view *sv, int64_t amount,
                  struct kp_record *rec)
{
	t->used_stored = 1;
	snprintf(rec->product, sizeof(rec->product), "%s", sv->e.product);
	rec->entitlement = sv->e.id;
	rec->amount = amount;
	rec->has_left = 1;
	rec->left = sv->e.rides_left - amount;
	if (amount == 0)
		return KP_OK;
	return kp_store_charge(t->e->s, sv->e.token, sv->e.id, sv->e.rides_left, amount);
}

enum cover_kind { COVER_NONE = 0, COVER_PART, COVER_FULL };

/* What a commuter pass of the card covers of a journey. */
struct cover {
	enum cover_kind kind;
	const struct kp_ent_view *pass;
	char ends[2][KP_ID_MAX + 1];     /* PART: the pass's first and last stop */
	int from_inside;                 /* PART: the boarding stop is on the pass */
};

/* A usable commuter pass on route covering stop from (and to, NULL for a flat tap): the
 * first covering the whole journey, else one holding either stop. */
static int commuter_cover(struct tap *t, const char *route, const char *from, const char *to,
                          struct cover *cv)
{
	char stops[KP_COMMUTER_MAX_STOPS][KP_ID_MAX + 1], r[KP_ID_MAX + 1];

	memset(cv, 0, sizeof(*cv));
	for (size_t i = 0; i < t->n; i++) {
		size_t ns = 0;
		int in_from = 0, in_to = to == NULL;
		int rc;

		if (!t->commuter[i])
			continue;
		rc = kp_store_product_commuter(t->e->s, t->ents[i].e.product, r, stops,
		                               KP_COMMUTER_MAX_STOPS, &ns);
		if (rc != KP_OK)
			return rc;
		if (ns < 2 || (strcmp(r, "*") != 0 && strcmp(r, route != NULL ? route : "") != 0))
			continue;
		for (size_t k = 0; k < ns; k++) {
			in_from |= from != NULL && strcmp(stops[k], from) == 0;
			in_to |= to != NULL && strcmp(stops[k], to) == 0;
		}
		if (in_from && in_to) {
			cv->kind = COVER_FULL;
			cv->pass = &t->ents[i];
			return KP_OK;
		}
		if ((in_from || in_to) && to != NULL && cv->kind == COVER_NONE) {
			cv->kind = COVER_PART;
			cv->pass = &t->ents[i];
			cv->from_inside = in_from;
			snprintf(cv->ends[0], KP_ID_MAX + 1, "%s", stops[0]);
			snprintf(cv->ends[1], KP_ID_MAX + 1, "%s", stops[ns - 1]);
		}
	}
	return KP_OK;
}

/* Fare, transfer and caps of a stored-value leg; with apply, the card's fare state takes
 * the leg (the caller restores it if the tap is then refused). */
static int price_leg(struct tap *t, const struct kp_leg *leg, int64_t cap_at, int transfer,
                     int apply, struct kp_leg_price *p)
{
	int rc = kp_leg_fare(t->e->s, &t->e->cfg, leg, t->el, t->n_el, t->now, p);

	if (rc == KP_OK && transfer)
		rc = kp_leg_transfer(t->e->s, leg, &t->fs, p, apply);
	if (rc == KP_OK)
		rc = kp_leg_caps(t->e->s, &t->e->cfg, cap_at, &t->fs, p, apply);
	return rc;
}

/* Accepts with a pass (period pass; a first-use one starts now) or a ride. */
static int use_pass_or_ride(struct tap *t, struct kp_record *rec, int64_t *pass_until,
                            int *warn_days)
{
	kp_tap_engine *e = t->e;
	const struct choice *c = &t->c;
	int rc = KP_OK;

	tap_set_reason(rec, KP_R_OK);
	snprintf(rec->product, sizeof(rec->product), "%s", c->best->e.product);
	rec->entitlement = c->best->e.id;
	if (c->pass != NULL) {
		/* A pass charges nothing; its first use fixes its days, in this transaction, and
		 * the journal says so ("activated"). */
		*pass_until = c->pass->e.valid_until_ms;
		kp_note_add(rec->fare, sizeof(rec->fare), "pass");
		if (c->pass->first_use) {
			int64_t from = 0;

			kp_service_days(&e->cfg, t->now, c->pass->period_days, &from, pass_until);
			tap_set_reason(rec, KP_R_ACTIVATED);
			rc = kp_store_activate(e->s, c->pass->e.token, c->pass->e.id, from, *pass_until);
		}
	} else {
		kp_note_add(rec->fare, sizeof(rec->fare), "ride");
		rec->rides = 1;
		rec->has_left = 1;
		rec->left = c->best->e.rides_left - 1;
		rc = kp_store_take_ride(e->s, c->best->e.token, c->best->e.id, c->best->e.rides_left);
	}
	note_origin(t, c->best, c->elig, rec);
	if (c->elig != NULL) {
		int64_t left_ms = c->elig->valid_until_ms - t->now;

		if (left_ms < (int64_t)e->cfg.reenrol_warn_days * 86400000LL)
			*warn_days = (int)(left_ms / 86400000LL);
	}
	return rc;
}

static int accept_commuter(struct tap *t, const struct kp_ent_view *pass, struct kp_record *rec)
{
	tap_set_reason(rec, KP_R_OK);
	snprintf(rec->product, sizeof(rec->product), "%s", pass->e.product);
	rec->entitlement = pass->e.id;
	kp_note_add(rec->fare, sizeof(rec->fare), "commuter pass");
	note_origin(t, pass, NULL, rec);
	return KP_OK;
}

/* Why nothing on the card was usable: a commuter pass that does not reach this stop says
 * so rather than "no ticket". */
static enum kp_reason refusal(const struct tap *t)
{
	if (t->stale_hit)
		return KP_R_ELIGIBILITY_STALE;
	if (t->direct_filtered && t->c.reason == KP_R_NO_ENTITLEMENT)
		return KP_R_DIRECT_NOT_ALLOWED;
	if (t->c.reason == KP_R_NO_ENTITLEMENT) {
		for (size_t i = 0; i < t->n; i++) {
			if (t->commuter[i])
				return KP_R_NOT_COVERED;
		}
		/* A genuine My Number card with no ticket at all: the rider is told that a renewed
		 * card (new certificate, so a new linkage token) must be linked again. Whether the
		 * terminal holds an old category for the token does not matter: that depends on
		 * what the last bundle carried. */
		if (t->mynumber && t->n == 0)
			return KP_R_CARD_NOT_LINKED;
	}
	return t->c.reason;
}

static void refuse_why(struct kp_record *rec, enum kp_reason reason, const char *note)
{
	tap_set_reason(rec, reason);
	if (note != NULL && note[0] != '\0')
		kp_note_add(rec->fare, sizeof(rec->fare), "%s", note);
}

/* price_leg, and when the leg cannot be priced (no feed, an unknown stop, no fare) the
 * refusal fare-unknown: *priced says which (KP_E_DB is returned as it is). */
static int price_or_refuse(struct tap *t, const struct kp_leg *leg, int64_t cap_at, int transfer,
                           int apply, struct kp_leg_price *p, struct kp_record *rec, int *priced)
{
	int rc = price_leg(t, leg, cap_at, transfer, apply, p);

	*priced = rc == KP_OK;
	if (rc == KP_E_DB || rc == KP_OK)
		return rc;
	tap_log(t->e, "no fare: %s (%s)", kp_strerror(rc),
	        !t->have_fare ? "no fare feed for this operator" : kp_store_errmsg(t->e->s));
	refuse_why(rec, KP_R_FARE_UNKNOWN, NULL);
	return KP_OK;
}

/* Charges a priced leg to stored value; refuses when no balance covers it. *ok = 1 if
 * charged. */
static int charge_leg(struct tap *t, const struct kp_leg_price *p, struct kp_record *rec, int *ok)
{
	const struct kp_ent_view *sv = stored_for(t, p->amount, 0);

	*ok = 0;
	if (sv == NULL) {
		refuse_why(rec, KP_R_INSUFFICIENT_BALANCE, p->note);
		return KP_OK;
	}
	tap_set_reason(rec, KP_R_OK);
	kp_note_add(rec->fare, sizeof(rec->fare), "stored");
	kp_note_add(rec->fare, sizeof(rec->fare), "%s", p->note);
	note_origin(t, sv, p->cat, rec);
	*ok = 1;
	return charge(t, sv, p->amount, rec);
}

/* A journey without tap-off: its maximum fare from the boarding stop (category price and
 * caps of its day, no transfer), journaled as its own record (event no_tap_off) at at_ms. */
static int close_journey(struct tap *t, int64_t at_ms)
{
	kp_tap_engine *e = t->e;
	struct kp_fare_state *fs = &t->fs;
	struct kp_record rec;
	int rc = KP_OK;

	memset(&rec, 0, sizeof(rec));
	rec.time_ms = at_ms;
	rec.has_token = 1;
	memcpy(rec.token, t->token, KP_TOKEN_LEN);
	snprintf(rec.event, sizeof(rec.event), "no_tap_off");
	snprintf(rec.result, sizeof(rec.result), "accepted");
	tap_set_reason(&rec, KP_R_NO_TAP_OFF);
	snprintf(rec.operator_id, sizeof(rec.operator_id), "%s", fs->open_operator);
	snprintf(rec.route, sizeof(rec.route), "%s", fs->open_route);
	snprintf(rec.stop, sizeof(rec.stop), "%s", fs->open_stop);
	if (fs->open_paid) {
		snprintf(rec.product, sizeof(rec.product), "%s", fs->open_product);
		rec.entitlement = fs->open_ent;
		kp_note_add(rec.fare, sizeof(rec.fare), "paid at tap-on");
	} else {
		struct kp_leg_price p;
		struct kp_leg leg;
		char feed[KP_ID_MAX + 1];
		int64_t now = t->now;
		int distance = 0, have = 0;

		/* The card as it was at the tap-on, on the journey's operator. */
		t->now = fs->open_ms;
		rc = load_card(t, fs->open_operator, fs->open_route);
		if (rc == KP_OK)
			rc = kp_operator_fare(e->s, &e->cfg, fs->open_operator, feed, &distance, &have);
		if (rc != KP_OK) {
			t->now = now;
			return rc;
		}
		memset(&leg, 0, sizeof(leg));
		leg.feed = have ? feed : NULL;
		leg.operator_id = fs->open_operator;
		leg.route = fs->open_route;
		leg.from_stop = fs->open_stop;
		leg.max_to = 1;
		leg.on_ms = leg.off_ms = fs->open_ms;
		rc = price_leg(t, &leg, fs->open_ms, 0, 1, &p);
		if (rc == KP_E_DB)
			return rc;
		if (rc != KP_OK) {
			kp_note_add(rec.fare, sizeof(rec.fare), "maximum fare unknown: not charged");
			rc = KP_OK;
		} else {
			const struct kp_ent_view *sv = stored_for(t, p.amount, 1);

			kp_note_add(rec.fare, sizeof(rec.fare), "stored");
			kp_note_add(rec.fare, sizeof(rec.fare), "maximum fare");
			kp_note_add(rec.fare, sizeof(rec.fare), "%s", p.note);
			if (sv == NULL) {
				kp_note_add(rec.fare, sizeof(rec.fare), "no stored value: %lld not charged",
				            (long long)p.amount);
			} else {
				int64_t amount = p.amount <= sv->e.rides_left ? p.amount : sv->e.rides_left;

				if (amount < p.amount)
					kp_note_add(rec.fare, sizeof(rec.fare), "balance short by %lld",
					            (long long)(p.amount - amount));
				note_origin(t, sv, p.cat, &rec);
				rc = charge(t, sv, amount, &rec);
			}
		}
		t->now = now;
	}
	fs->open = 0;
	if (rc == KP_OK)
		rc = tap_journal(e, &rec);
	if (rc == KP_OK && rec.entitlement != 0)
		rc = kp_store_pending_use(e->s, rec.seq, rec.entitlement,
		                          rec.amount > 0 ? rec.amount : rec.rides);
	return rc;
}

/* Folds in what the backend knows of the card from the other terminals: a journey of ours
 * closed there is no longer open here (they charged it); a journey open there, newer than
 * anything this terminal saw, is the card's open journey; a newer stored-value leg there is
 * the one a transfer starts from; their spending counts for the caps. */
static void merge_remote(struct tap *t, const struct kp_fare_remote *r, int64_t last_local)
{
	struct kp_fare_state *fs = &t->fs;

	if (fs->open && r->closed_ms != 0 && r->closed_ms == fs->open_ms)
		fs->open = 0;
	if (!fs->open && r->open && r->open_ms > last_local) {
		fs->open = 1;
		fs->open_ms = r->open_ms;
		fs->open_seq = 0;
		snprintf(fs->open_operator, sizeof(fs->open_operator), "%s", r->open_operator);
		snprintf(fs->open_route, sizeof(fs->open_route), "%s", r->open_route);
		snprintf(fs->open_stop, sizeof(fs->open_stop), "%s", r->open_stop);
		fs->open_ent = r->open_ent;
		snprintf(fs->open_product, sizeof(fs->open_product), "%s", r->open_product);
		fs->open_paid = r->open_paid;
	}
	if (r->has_leg && (!fs->has_leg || r->leg_off_ms > fs->leg_off_ms)) {
		fs->has_leg = 1;
		fs->leg_on_ms = r->leg_on_ms;
		fs->leg_off_ms = r->leg_off_ms;
		snprintf(fs->leg_operator, sizeof(fs->leg_operator), "%s", r->leg_operator);
		fs->leg_feed[0] = '\0';          /* only the scheme's transfer rules apply */
		fs->leg_group[0] = '\0';
		fs->leg_paid = r->leg_paid;
		fs->chain_start_ms = r->leg_on_ms;
		fs->chain_fare[0] = '\0';
		fs->chain_transfers = 0;
	}
	fs->remote_day_id = r->day_id;
	fs->remote_day_spent = r->day_spent;
	fs->remote_month_id = r->month_id;
	fs->remote_month_spent = r->month_spent;
}

static int load_fare_state(struct tap *t, int64_t last_local, int *found)
{
	struct kp_fare_remote r;
	int rc, have = 0;

	rc = kp_store_fare_state(t->e->s, t->token, &t->fs, found);
	if (rc == KP_OK)
		rc = kp_store_fare_remote(t->e->s, t->token, &r, &have);
	if (rc == KP_OK && have) {
		int was_open = t->fs.open;

		merge_remote(t, &r, last_local);
		if (!was_open && t->fs.open)
			t->adopted_ms = t->fs.open_ms;
		*found = 1;
	}
	return rc;
}

static void open_journey(struct tap *t, const struct kp_record *rec, int paid)
{
	struct kp_fare_state *fs = &t->fs;

	fs->open = 1;
	fs->open_ms = t->now;
	fs->open_seq = rec->seq;
	snprintf(fs->open_operator, sizeof(fs->open_operator), "%s", t->e->cfg.operator_id);
	snprintf(fs->open_route, sizeof(fs->open_route), "%s", t->e->cfg.route);
	snprintf(fs->open_stop, sizeof(fs->open_stop), "%s", t->e->cfg.stop);
	fs->open_ent = rec->entitlement;
	snprintf(fs->open_product, sizeof(fs->open_product), "%s", rec->product);
	fs->open_paid = paid;
}

static enum fare_event pick_event(const kp_tap_engine *e, const struct kp_fare_state *fs,
                                  int distance)
{
	if (strcmp(e->force_event, "tap") == 0)
		return EV_TAP;
	if (strcmp(e->force_event, "tap_on") == 0)
		return EV_TAP_ON;
	if (strcmp(e->force_event, "tap_off") == 0)
		return EV_TAP_OFF;
	if (!distance)
		return EV_TAP;
	if (e->cfg.gate == KP_GATE_ENTRY)
		return EV_TAP_ON;
	if (e->cfg.gate == KP_GATE_EXIT)
		return EV_TAP_OFF;
	return fs->open && strcmp(fs->open_operator, e->cfg.operator_id) == 0 ? EV_TAP_OFF : EV_TAP_ON;
}

static void leg_here(const struct tap *t, struct kp_leg *leg, const char *route, const char *from,
                     const char *to, int64_t on_ms)
{
	memset(leg, 0, sizeof(*leg));
	leg->feed = t->have_fare ? t->feed : NULL;
	leg->operator_id = t->e->cfg.operator_id;
	leg->route = route;
	leg->from_stop = from;
	leg->to_stop = to;
	leg->on_ms = on_ms;
	leg->off_ms = t->now;
}

static int decide_flat(struct tap *t, struct kp_record *rec, int64_t *pass_until, int *warn_days,
                       int *accepted)
{
	struct cover cv;
	int rc;

	*accepted = 0;
	if (t->c.pass != NULL) {
		*accepted = 1;
		return use_pass_or_ride(t, rec, pass_until, warn_days);
	}
	rc = commuter_cover(t, t->e->cfg.route, t->e->cfg.stop, NULL, &cv);
	if (rc != KP_OK)
		return rc;
	if (cv.kind == COVER_FULL) {
		*accepted = 1;
		return accept_commuter(t, cv.pass, rec);
	}
	if (t->c.best != NULL) {
		*accepted = 1;
		return use_pass_or_ride(t, rec, pass_until, warn_days);
	}
	if (t->any_stored) {
		struct kp_leg_price p;
		struct kp_leg leg;

		int priced;

		leg_here(t, &leg, t->e->cfg.route, t->e->cfg.stop, NULL, t->now);
		rc = price_or_refuse(t, &leg, t->now, 1, 1, &p, rec, &priced);
		return rc != KP_OK || !priced ? rc : charge_leg(t, &p, rec, accepted);
	}
	refuse_why(rec, refusal(t), NULL);
	return KP_OK;
}

static int decide_on(struct tap *t, struct kp_record *rec, int64_t *pass_until, int *warn_days,
                     int *accepted)
{
	struct cover cv;
	int rc;

	*accepted = 0;
	if (t->c.pass != NULL) {
		rc = use_pass_or_ride(t, rec, pass_until, warn_days);
		*accepted = 1;
		open_journey(t, rec, 1);
		return rc;
	}
	/* A commuter pass holding the boarding stop: the tap-off decides what it covers. */
	rc = commuter_cover(t, t->e->cfg.route, t->e->cfg.stop, NULL, &cv);
	if (rc != KP_OK)
		return rc;
	if (cv.kind == COVER_FULL) {
		*accepted = 1;
		rc = accept_commuter(t, cv.pass, rec);
		open_journey(t, rec, 0);
		return rc;
	}
	if (t->c.best != NULL) {
		rc = use_pass_or_ride(t, rec, pass_until, warn_days);
		*accepted = 1;
		open_journey(t, rec, 1);
		return rc;
	}
	if (t->any_stored) {
		struct kp_leg_price p;
		struct kp_leg leg;
		const struct kp_ent_view *sv;
		int priced;

		/* Nothing is charged now, but the balance must cover the most this journey can
		 * cost from here. */
		leg_here(t, &leg, t->e->cfg.route, t->e->cfg.stop, NULL, t->now);
		leg.max_to = 1;
		rc = price_or_refuse(t, &leg, t->now, 0, 0, &p, rec, &priced);
		if (rc != KP_OK || !priced)
			return rc;
		sv = stored_for(t, p.amount, 0);
		if (sv == NULL) {
			refuse_why(rec, KP_R_INSUFFICIENT_BALANCE, "maximum fare");
			kp_note_add(rec->fare, sizeof(rec->fare), "%s", p.note);
			return KP_OK;
		}
		tap_set_reason(rec, KP_R_OK);
		kp_note_add(rec->fare, sizeof(rec->fare), "stored; covers maximum %lld",
		            (long long)p.amount);
		note_origin(t, sv, p.cat, rec);
		rc = charge(t, sv, 0, rec);
		*accepted = 1;
		open_journey(t, rec, 0);
		return rc;
	}
	refuse_why(rec, refusal(t), NULL);
	return KP_OK;
}

static int decide_off(struct tap *t, struct kp_record *rec, int *accepted)
{
	struct kp_fare_state *fs = &t->fs;
	struct kp_leg_price p;
	struct kp_leg leg;
	struct cover cv;
	int excess = -1, priced, rc;

	*accepted = 0;
	if (!fs->open || strcmp(fs->open_operator, t->e->cfg.operator_id) != 0) {
		refuse_why(rec, KP_R_NO_TAP_ON, NULL);
		return KP_OK;
	}
	if (fs->open_paid) {
		*accepted = 1;
		tap_set_reason(rec, KP_R_OK);
		snprintf(rec->product, sizeof(rec->product), "%s", fs->open_product);
		rec->entitlement = fs->open_ent;
		kp_note_add(rec->fare, sizeof(rec->fare), "paid at tap-on");
		for (size_t i = 0; i < t->n; i++) {
			/* what an N-ride ticket has left */
			if (t->ents[i].e.id == fs->open_ent && t->ents[i].period_days == 0 &&
			    !t->ents[i].stored && !t->ents[i].commuter) {
				rec->has_left = 1;
				rec->left = t->ents[i].e.rides_left;
			}
		}
		fs->open = 0;
		return KP_OK;
	}
	rc = commuter_cover(t, fs->open_route, fs->open_stop, t->e->cfg.stop, &cv);
	if (rc != KP_OK)
		return rc;
	if (cv.kind == COVER_FULL) {
		*accepted = 1;
		fs->open = 0;
		return accept_commuter(t, cv.pass, rec);
	}
	leg_here(t, &leg, fs->open_route, fs->open_stop, t->e->cfg.stop, fs->open_ms);
	if (cv.kind == COVER_PART) {
		/* Only the excess beyond the pass: the cheaper fare from either of its ends to
		 * the stop outside it. */
		int64_t cheapest = -1;

		for (int k = 0; k < 2; k++) {
			struct kp_leg x = leg;

			*(cv.from_inside ? &x.from_stop : &x.to_stop) = cv.ends[k];
			rc = price_leg(t, &x, fs->open_ms, 1, 0, &p);
			if (rc == KP_E_DB)
				return rc;
			if (rc == KP_OK && (cheapest < 0 || p.amount < cheapest)) {
				cheapest = p.amount;
				excess = k;
			}
		}
		if (excess >= 0) {
			*(cv.from_inside ? &leg.from_stop : &leg.to_stop) = cv.ends[excess];
			kp_note_add(rec->fare, sizeof(rec->fare), "commuter %s excess from %s",
			            cv.pass->e.product, cv.ends[excess]);
		}
	}
	rc = price_or_refuse(t, &leg, fs->open_ms, 1, 1, &p, rec, &priced);
	if (rc != KP_OK || !priced)
		return rc;
	rc = charge_leg(t, &p, rec, accepted);
	if (rc == KP_OK && *accepted)
		fs->open = 0;
	return rc;
}

/* Why the policy refuses a direct My Number tap before anything else is looked at, or
 * KP_R_OK; *day_id gets the service day its limits count in. */
static enum kp_reason direct_refusal(kp_tap_engine *e, const struct policy *p,
                                     const uint8_t token[KP_TOKEN_LEN], int64_t now, int stale,
                                     enum fare_event ev, int64_t *day_id, int64_t *value_today,
                                     int *rc)
{
	int64_t rides_today = 0;

	kp_service_day(now, e->cfg.utc_offset_s, e->cfg.service_day_end_s, day_id, NULL);
	*value_today = 0;
	if (!p->direct)
		return KP_R_DIRECT_NOT_ALLOWED;
	if (stale)
		return KP_R_ELIGIBILITY_STALE;
	*rc = kp_store_direct_use(e->s, token, *day_id, &rides_today, value_today);
	/* a tap-off ends a journey begun within the limits */
	if (*rc == KP_OK && ev != EV_TAP_OFF &&
	    ((p->rides > 0 && rides_today >= p->rides) || (p->value > 0 && *value_today >= p->value)))
		return KP_R_DIRECT_LIMIT;
	return KP_R_OK;
}

static int decide(kp_tap_engine *e, const uint8_t token[KP_TOKEN_LEN], int64_t now_ms,
                  int direct, struct kp_tap_outcome *out);

int kp_tap_decide(kp_tap_engine *e, const uint8_t token[KP_TOKEN_LEN], int64_t now_ms,
                  struct kp_tap_outcome *out)
{
	return decide(e, token, now_ms, 0, out);
}

int kp_tap_decide_mynumber(kp_tap_engine *e, const uint8_t token[KP_TOKEN_LEN], int64_t now_ms,
                           struct kp_tap_outcome *out)
{
	return decide(e, token, now_ms, 1, out);
}

static int decide(kp_tap_engine *e, const uint8_t token[KP_TOKEN_LEN], int64_t now_ms,
                  int direct, struct kp_tap_outcome *out)
{
	struct tap *t;
	struct kp_record rec;
	struct kp_fare_state before;
	struct policy pol;
	uint8_t prev_before[KP_SHA256_LEN];
	enum kp_tap_kind kind = KP_TAP_REFUSED;
	enum fare_event ev = EV_TAP;
	int64_t last = 0, pass_until = 0, day_id = 0, value_today = 0;
	int listed = 0, found = 0, fs_found = 0, warn_days = -1, accepted = 0, stale = 0, rc;
	enum kp_reason no_direct = KP_R_OK;

	t = calloc(1, sizeof(*t));
	if (t == NULL)
		return KP_E_NOMEM;
	t->e = e;
	t->token = token;
	t->now = now_ms;
	t->mynumber = direct;
	memset(&rec, 0, sizeof(rec));
	memcpy(prev_before, e->prev, KP_SHA256_LEN);
	rec.time_ms = now_ms;
	rec.has_token = 1;
	memcpy(rec.token, token, KP_TOKEN_LEN);

	rc = kp_store_begin(e->s);
	if (rc == KP_OK)
		rc = kp_store_is_denylisted(e->s, token, &listed);
	if (rc == KP_OK && !listed)
		rc = kp_store_last_tap(e->s, token, &last, &found);
	if (rc == KP_OK && !listed)
		rc = load_fare_state(t, found ? last : 0, &fs_found);
	if (rc == KP_OK && !listed)
		rc = kp_operator_fare(e->s, &e->cfg, e->cfg.operator_id, t->feed, &t->distance,
		                      &t->have_fare);
	if (rc == KP_OK && !listed)
		rc = tap_policy_load(e, &pol);
	if (rc == KP_OK && !listed)
		rc = tap_policy_stale(e, &pol, now_ms, &stale);
	if (rc != KP_OK)
		goto done;
	t->stale = stale;
	ev = pick_event(e, &t->fs, t->distance);
	snprintf(rec.event, sizeof(rec.event), "%s", event_names[ev]);
	if (!listed && direct && pol.synced) {
		t->direct = &pol;
		no_direct = direct_refusal(e, &pol, token, now_ms, stale, ev, &day_id, &value_today,
		                           &rc);
		if (rc != KP_OK)
			goto done;
	}
	if (listed) {
		tap_set_reason(&rec, KP_R_DENYLISTED);
	} else if (found && now_ms - last < e->cfg.double_tap_window_ms &&
	           last - now_ms < e->cfg.double_tap_window_ms &&
	           (ev == EV_TAP || (strcmp(t->fs.last_operator, e->cfg.operator_id) == 0 &&
	                             strcmp(t->fs.last_stop, e->cfg.stop) == 0))) {
		/* Within the window (either way, should the clock have stepped back); with
		 * tap-on/tap-off only at the same place, so a tap-off is never taken for one. */
		kind = KP_TAP_ALREADY;
		tap_set_reason(&rec, KP_R_ALREADY);
	} else if (no_direct != KP_R_OK) {
		tap_set_reason(&rec, no_direct);
	} else {
		/* A journey left open elsewhere is closed first, in this same transaction. */
		if (t->fs.open && !(ev == EV_TAP_OFF &&
		                    strcmp(t->fs.open_operator, e->cfg.operator_id) == 0))
			rc = close_journey(t, now_ms);
		if (rc == KP_OK)
			rc = load_card(t, e->cfg.operator_id, e->cfg.route);
		before = t->fs;
		if (rc == KP_OK && ev == EV_TAP)
			rc = decide_flat(t, &rec, &pass_until, &warn_days, &accepted);
		else if (rc == KP_OK && ev == EV_TAP_ON)
			rc = decide_on(t, &rec, &pass_until, &warn_days, &accepted);
		else if (rc == KP_OK)
			rc = decide_off(t, &rec, &accepted);
		if (rc == KP_OK && !accepted)
			t->fs = before;          /* a refusal changes no journey, chain or cap */
		kind = accepted ? KP_TAP_ACCEPTED : KP_TAP_REFUSED;
		if (rc == KP_OK && accepted && t->direct != NULL && ev != EV_TAP_OFF &&
		    t->direct->value > 0 && value_today + rec.amount > t->direct->value) {
			/* this fare would pass the day's value: nothing of the decision is kept */
			kp_store_rollback(e->s);
			e->n_pending = 0;
			memcpy(e->prev, prev_before, KP_SHA256_LEN);
			rc = kp_store_journal_head(e->s, &e->seq, e->prev);
			free(t);
			return rc != KP_OK ? rc : kp_tap_refuse(e, token, kp_reason_code(KP_R_DIRECT_LIMIT), now_ms, out);
		}
		if (rc == KP_OK && accepted && t->direct != NULL)
			rc = kp_store_add_direct_use(e->s, token, day_id, ev != EV_TAP_OFF, rec.amount);
	}
	snprintf(rec.result, sizeof(rec.result), "%s",
	         kind == KP_TAP_ACCEPTED ? "accepted" : kind == KP_TAP_ALREADY ? "already" : "refused");
	if (rc == KP_OK)
		rc = tap_journal(e, &rec);
	if (rc == KP_OK && kind == KP_TAP_ACCEPTED) {
		rc = kp_store_set_last_tap(e->s, token, now_ms, rec.seq);
		snprintf(t->fs.last_operator, sizeof(t->fs.last_operator), "%s", e->cfg.operator_id);
		snprintf(t->fs.last_stop, sizeof(t->fs.last_stop), "%s", e->cfg.stop);
		if (t->fs.open && t->fs.open_ms == now_ms)
			t->fs.open_seq = rec.seq;
	}
	if (rc == KP_OK && kind == KP_TAP_ACCEPTED && rec.entitlement != 0)
		rc = kp_store_pending_use(e->s, rec.seq, rec.entitlement,
		                          rec.amount > 0 ? rec.amount : rec.rides);
	/* Another terminal's journey that this tap did not close stays that terminal's to
	 * charge: it is not kept here. */
	if (t->adopted_ms != 0 && t->fs.open && t->fs.open_ms == t->adopted_ms)
		t->fs.open = 0;
	if (rc == KP_OK && !listed && (fs_found || kind == KP_TAP_ACCEPTED || e->n_pending > 1))
		rc = kp_store_put_fare_state(e->s, token, &t->fs);
done:
	rc = tap_finish(e, rc, prev_before);
	if (rc == KP_OK) {
		tap_outcome_from(out, &rec, kind);
		snprintf(out->event, sizeof(out->event), "%s", rec.event);
		out->balance = kind == KP_TAP_ACCEPTED && t->used_stored && rec.has_left;
		out->warn_days = warn_days;
		if (kind == KP_TAP_ACCEPTED && pass_until != 0) {
			out->valid_until_ms = pass_until;
			tap_until_text(&e->cfg, now_ms, pass_until, out->until_text, sizeof(out->until_text));
		}
	}
	free(t);
	return rc;
}

int kp_tap_sweep(kp_tap_engine *e, int64_t now_ms, size_t *closed)
{
	uint8_t tokens[64][KP_TOKEN_LEN];
	int64_t day_start, day_end;
	size_t n = 0, n_old = 0;
	int rc;

	*closed = 0;
	kp_service_days(&e->cfg, now_ms, 1, &day_start, &day_end);
	/* journeys the card has tapped away from at another terminal, then those whose
	 * service day is over */
	rc = kp_store_superseded_journeys(e->s, tokens, 32, &n);
	if (rc == KP_OK)
		rc = kp_store_open_journeys(e->s, day_start, tokens + n, 64 - n, &n_old);
	n += n_old;
	for (size_t i = 0; rc == KP_OK && i < n; i++) {
		struct tap *t = calloc(1, sizeof(*t));
		uint8_t prev_before[KP_SHA256_LEN];
		int found = 0;

		if (t == NULL)
			return KP_E_NOMEM;
		t->e = e;
		t->token = tokens[i];
		t->now = now_ms;
		memcpy(prev_before, e->prev, KP_SHA256_LEN);
		struct kp_fare_remote r;
		int have = 0, open_before;

		rc = kp_store_begin(e->s);
		if (rc == KP_OK)
			rc = kp_store_fare_state(e->s, tokens[i], &t->fs, &found);
		if (rc == KP_OK)
			rc = kp_store_fare_remote(e->s, tokens[i], &r, &have);
		open_before = found && t->fs.open;
		if (rc == KP_OK && open_before && have)
			merge_remote(t, &r, INT64_MAX);     /* never adopt a remote journey here */
		if (rc == KP_OK && open_before && !t->fs.open) {
			/* closed and charged at another terminal: nothing to charge here */
			rc = kp_store_put_fare_state(e->s, tokens[i], &t->fs);
			if (rc == KP_OK)
				(*closed)++;
		} else if (rc == KP_OK && open_before &&
		           (t->fs.open_ms < day_start || (have && r.last_ms > t->fs.open_ms))) {
			int64_t from, until;

			/* charged as of the end of the journey's own service day, or now when the
			 * card has since tapped at another terminal that did not know of it */
			kp_service_days(&e->cfg, t->fs.open_ms, 1, &from, &until);
			rc = close_journey(t, until < now_ms ? until : now_ms);
			if (rc == KP_OK)
				rc = kp_store_put_fare_state(e->s, tokens[i], &t->fs);
			if (rc == KP_OK)
				(*closed)++;
		}
		rc = tap_finish(e, rc, prev_before);
		free(t);
	}
	return rc;
}
