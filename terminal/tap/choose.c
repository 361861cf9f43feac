/* SPDX-License-Identifier: Apache-2.0 */
/* Which of a card's entitlements a tap uses, and if none, why not. */
#include "tap_int.h"

void kp_service_days(const struct kp_terminal_cfg *cfg, int64_t now_ms, int days,
                     int64_t *from_ms, int64_t *until_ms)
{
	/* Local time shifted back by the day's end hour: a tap at 01:30 belongs to yesterday. */
	int64_t day;

	kp_service_day(now_ms, cfg->utc_offset_s, cfg->service_day_end_s, &day, NULL);

	*from_ms = (day * 86400 + cfg->service_day_end_s - cfg->utc_offset_s) * 1000;
	*until_ms = *from_ms + (int64_t)days * 86400000LL;
}

/* until in local time: "HH:MM" when within a day of now, else "YYYY-MM-DD HH:MM". */
void tap_until_text(const struct kp_terminal_cfg *cfg, int64_t now_ms, int64_t until_ms,
                    char *out, size_t cap)
{
	struct kp_civil c;

	kp_civil_local(until_ms, cfg->utc_offset_s, &c);
	if (until_ms - now_ms <= 86400000LL)
		snprintf(out, cap, "%02d:%02d", c.hh, c.mm);
	else
		snprintf(out, cap, "%04d-%02d-%02d %02d:%02d", c.y, c.m, c.d, c.hh, c.mm);
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
struct choice tap_choose(const struct kp_ent_view *v, size_t n, const struct kp_elig_view *el,
                         size_t n_el, int64_t now, int *stored, int *commuter)
{
	struct choice c = { NULL, NULL, NULL, NULL, KP_R_NO_ENTITLEMENT };
	int exhausted = 0, expired = 0, early = 0, elsewhere = 0, lapsed = 0, not_eligible = 0;
	int other_route = 0;

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
		} else if (!v[i].route_ok) {
			other_route = 1;
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
		} else if (v[i].commuter) {
			commuter[i] = 1;
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
	{
		/* Without a usable entitlement, the first of these that holds is the reason. */
		const struct { int holds; enum kp_reason reason; } why[] = {
			{ c.best != NULL, KP_R_OK }, { exhausted, KP_R_EXHAUSTED },
			{ lapsed, KP_R_ELIGIBILITY_EXPIRED }, { expired, KP_R_EXPIRED },
			{ early, KP_R_NOT_YET_VALID }, { elsewhere, KP_R_WRONG_OPERATOR },
			{ other_route, KP_R_WRONG_ROUTE }, { not_eligible, KP_R_NOT_ELIGIBLE },
		};

		for (size_t i = 0; i < sizeof(why) / sizeof(why[0]); i++) {
			if (why[i].holds) {
				c.reason = why[i].reason;
				break;
			}
		}
	}
	return c;
}

/* The card's entitlements valid on operator_id, and those of the My Number linkages it is
 * linked through. */
int tap_gather(kp_tap_engine *e, const uint8_t token[KP_TOKEN_LEN], const char *operator_id,
               const char *route, int64_t now, struct kp_ent_view *ents, size_t *n,
               struct kp_elig_view *el, size_t *n_el)
{
	int rc = kp_store_card_eligibility(e->s, token, el, KP_MAX_CARD_ELIGIBILITY, n_el);

	if (rc == KP_OK)
		rc = kp_store_card_entitlements_at(e->s, token, operator_id, route, ents,
		                                   KP_MAX_CARD_ENTITLEMENTS, n);
	for (size_t i = 0; rc == KP_OK && i < *n_el; i++) {
		size_t more = 0;

		if (!el[i].has_via || now < el[i].valid_from_ms || now >= el[i].valid_until_ms)
			continue;
		rc = kp_store_card_entitlements_at(e->s, el[i].via, operator_id, route, ents + *n,
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
