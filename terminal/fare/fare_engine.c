/* SPDX-License-Identifier: Apache-2.0 */
/* Pricing one leg charged to stored value (terminal/fare/FARES.md). Integers only: amounts are
 * in the currency's minor unit. */
#include <stdarg.h>
#include <stdio.h>
#include <string.h>

#include "kp_fare.h"
#include "kp_civil.h"

void kp_note_add(char *note, size_t cap, const char *fmt, ...)
{
	size_t len = strnlen(note, cap);
	va_list ap;

	if (len + 1 >= cap)
		return;
	if (len > 0) {
		snprintf(note + len, cap - len, "; ");
		len = strnlen(note, cap);
	}
	va_start(ap, fmt);
	vsnprintf(note + len, cap - len, fmt, ap);
	va_end(ap);
	/* vsnprintf may have cut a UTF-8 sequence: drop a partial one at the end. */
	len = strnlen(note, cap);
	if (len > 0 && ((unsigned char)note[len - 1] & 0x80) != 0) {
		size_t start = len - 1, need;
		unsigned char lead;

		while (start > 0 && ((unsigned char)note[start] & 0xC0) == 0x80)
			start--;
		lead = (unsigned char)note[start];
		need = lead >= 0xF0 ? 4 : lead >= 0xE0 ? 3 : lead >= 0xC0 ? 2 : 1;
		if (len - start < need)
			note[start] = '\0';
	}
}

void kp_local_date_time(int utc_offset_s, int64_t ms, int32_t *date, int32_t *time_s)
{
	struct kp_civil c;

	kp_civil_local(ms, utc_offset_s, &c);
	*date = c.y * 10000 + c.m * 100 + c.d;
	*time_s = c.hh * 3600 + c.mm * 60 + c.ss;
}

void kp_service_period(const struct kp_terminal_cfg *cfg, int64_t ms, int64_t *day_id,
                       int64_t *month_id)
{
	kp_service_day(ms, cfg->utc_offset_s, cfg->service_day_end_s, day_id, month_id);
}

int kp_operator_fare(kp_store *s, const struct kp_terminal_cfg *cfg, const char *operator_id,
                     char feed[KP_ID_MAX + 1], int *distance, int *have)
{
	int rc = kp_store_operator_fare(s, operator_id, feed, KP_ID_MAX + 1, distance, have);

	if (rc != KP_OK || *have)
		return rc;
	if (cfg->fare_feed[0] != '\0') {
		snprintf(feed, KP_ID_MAX + 1, "%s", cfg->fare_feed);
		*distance = cfg->fare_distance;
		*have = 1;
	}
	return KP_OK;
}

static void query_for(const struct kp_terminal_cfg *cfg, const struct kp_leg *leg,
                      struct kp_fare_query *q)
{
	memset(q, 0, sizeof(*q));
	q->feed_id = leg->feed;
	q->route_id = leg->route;
	q->from_stop = leg->from_stop;
	q->to_stop = leg->max_to ? NULL : leg->to_stop;
	q->max_to = leg->max_to;
	q->payment_method = -1;
	kp_local_date_time(cfg->utc_offset_s, leg->on_ms, &q->date, &q->time_s);
}

static void take(struct kp_leg_price *p, const struct kp_fare_result *r,
                 const struct kp_elig_view *cat)
{
	p->fare = r->amount;
	p->cat = cat;
	snprintf(p->fare_id, sizeof(p->fare_id), "%s", r->fare_id);
	snprintf(p->group, sizeof(p->group), "%s",
	         r->model == KP_FARE_V2 ? r->leg_group_id : r->fare_id);
	p->note[0] = '\0';
	kp_note_add(p->note, sizeof(p->note), "%s (%lld)", r->rule, (long long)r->amount);
}

/* Each category the card holds now is priced by the feed if the feed has it as a rider
 * category, else by the operator's discount rule on the adult fare; the cheapest wins,
 * else the adult (default) fare. */
int kp_leg_fare(kp_store *s, const struct kp_terminal_cfg *cfg, const struct kp_leg *leg,
                const struct kp_elig_view *el, size_t n_el, int64_t now, struct kp_leg_price *p)
{
	struct kp_fare_query q;
	struct kp_fare_result r, adult;
	int rc, found = 0, adult_rc = KP_E_NOFARE, have_adult = 0;

	memset(p, 0, sizeof(*p));
	if (leg->feed == NULL || leg->feed[0] == '\0')
		return KP_E_NOFARE;
	query_for(cfg, leg, &q);
	for (size_t i = 0; i < n_el; i++) {
		struct kp_discount d;
		int has_rule = 0;

		if (now < el[i].valid_from_ms || now >= el[i].valid_until_ms)
			continue;
		q.rider_category = el[i].category;
		rc = kp_fare_lookup(s, &q, &r);
		if (rc == KP_E_DB)
			return rc;
		if (rc != KP_OK || strcmp(r.rider_category, el[i].category) != 0) {
			/* The feed has no price of its own for it: the operator's rule, if any. */
			rc = kp_store_discount(s, leg->operator_id, el[i].category, &d, &has_rule);
			if (rc != KP_OK)
				return rc;
			if (!has_rule)
				continue;
			if (!have_adult) {
				q.rider_category = NULL;
				adult_rc = kp_fare_lookup(s, &q, &adult);
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
			if (!found || r.amount < p->fare) {
				take(p, &r, &el[i]);
				kp_note_add(p->note, sizeof(p->note), "%s %d%% %s to %lld = %lld",
				            el[i].category, d.percent,
				            d.rounding == KP_ROUND_DOWN ? "down" :
				            d.rounding == KP_ROUND_UP ? "up" : "nearest",
				            (long long)d.unit, (long long)r.amount);
				found = 1;
			}
			continue;
		}
		if (!found || r.amount < p->fare) {
			take(p, &r, &el[i]);
			kp_note_add(p->note, sizeof(p->note), "%s fare", el[i].category);
			found = 1;
		}
	}
	if (!found) {
		if (have_adult) {
			rc = adult_rc;
			r = adult;
		} else {
			q.rider_category = NULL;
			rc = kp_fare_lookup(s, &q, &r);
		}
		if (rc != KP_OK)
			return rc;
		take(p, &r, NULL);
	}
	if (p->fare < 0)
		return KP_E_NOFARE;
	p->after_transfer = p->fare;
	p->amount = p->fare;
	return KP_OK;
}

int kp_leg_transfer(kp_store *s, const struct kp_leg *leg, struct kp_fare_state *fs,
                    struct kp_leg_price *p, int apply)
{
	int64_t best = p->fare, cost = 0;
	char best_rule[KP_FARE_MSG_MAX] = "";
	struct kp_fare_transfer_result v2;
	int rc, found = 0, v2_found = 0;

	p->transfer = 0;
	if (fs->has_leg && !leg->max_to) {
		/* fares v2: the feed's own transfer rules between leg groups */
		if (strcmp(fs->leg_feed, leg->feed) == 0) {
			struct kp_fare_transfer_query tq = {
				leg->feed, fs->leg_group, p->group,
				p->cat != NULL ? p->cat->category : NULL,
				fs->leg_on_ms, fs->leg_off_ms, leg->on_ms, leg->off_ms,
				fs->chain_transfers, fs->leg_paid, p->fare,
				fs->has_run ? &fs->run : NULL,
			};
			int tx = 0;
			int64_t dur = 0;

			rc = kp_fare_transfer_v2(s, &tq, &v2, &v2_found);
			if (rc != KP_OK)
				return rc;
			if (v2_found && v2.cost < best) {
				best = v2.cost;
				snprintf(best_rule, sizeof(best_rule), "transfer %s (%lld)", v2.rule,
				         (long long)v2.cost);
			}
			/* fares v1: free within transfer_duration of the chain's first leg, on the
			 * same fare, while transfers are left */
			rc = kp_fare_v1_transfers(s, leg->feed, p->fare_id, &tx, &dur, &found);
			if (rc != KP_OK)
				return rc;
			if (found && strcmp(fs->chain_fare, p->fare_id) == 0 && tx != 0 &&
			    (tx < 0 || fs->chain_transfers < tx) && leg->on_ms >= fs->chain_start_ms &&
			    (dur < 0 || leg->on_ms - fs->chain_start_ms <= dur * 1000) && best > 0) {
				best = 0;
				snprintf(best_rule, sizeof(best_rule), "transfer fare %s free (v1 %d within %llds)",
				         p->fare_id, tx, (long long)dur);
			}
		}
		/* the scheme's transfer rules, across operators too */
		{
			struct kp_transfer_rule tr;
			int64_t gap = leg->on_ms - fs->leg_off_ms;

			rc = kp_store_transfer_rule(s, fs->leg_operator, leg->operator_id, &tr, &found);
			if (rc != KP_OK)
				return rc;
			if (found && gap >= 0 && gap <= (int64_t)tr.within_s * 1000 &&
			    fs->chain_transfers < tr.max_transfers) {
				cost = tr.off < 0 ? 0 : (p->fare > tr.off ? p->fare - tr.off : 0);
				if (cost < best) {
					best = cost;
					if (tr.off < 0)
						snprintf(best_rule, sizeof(best_rule), "transfer %s>%s free",
						         tr.from_operator, tr.to_operator);
					else
						snprintf(best_rule, sizeof(best_rule), "transfer %s>%s off %lld",
						         tr.from_operator, tr.to_operator, (long long)tr.off);
				}
			}
		}
	}
	p->after_transfer = best;
	p->amount = best;
	if (best_rule[0] != '\0') {
		p->transfer = 1;
		kp_note_add(p->note, sizeof(p->note), "%s", best_rule);
	}
	if (!apply || leg->max_to)
		return KP_OK;
	if (p->transfer) {
		fs->chain_transfers++;
	} else {
		fs->chain_start_ms = leg->on_ms;
		snprintf(fs->chain_fare, sizeof(fs->chain_fare), "%s", p->fare_id);
		fs->chain_transfers = 0;
	}
	/* A v2 rule that matched a transfer the chain took continues or starts its run; a leg
	 * without one ends any run. */
	fs->has_run = p->transfer && v2_found;
	if (fs->has_run)
		fs->run = v2.run;
	fs->has_leg = 1;
	fs->leg_on_ms = leg->on_ms;
	fs->leg_off_ms = leg->off_ms;
	snprintf(fs->leg_operator, sizeof(fs->leg_operator), "%s", leg->operator_id);
	snprintf(fs->leg_feed, sizeof(fs->leg_feed), "%s", leg->feed);
	snprintf(fs->leg_group, sizeof(fs->leg_group), "%s", p->group);
	fs->leg_paid = p->after_transfer;
	return KP_OK;
}

int kp_leg_caps(kp_store *s, const struct kp_terminal_cfg *cfg, int64_t at_ms,
                struct kp_fare_state *fs, struct kp_leg_price *p, int apply)
{
	const char *cat = p->cat != NULL ? p->cat->category : "";
	int64_t day_id, month_id, day_spent, month_spent, cap;
	int rc, found;

	int64_t local_day, local_month;

	kp_service_period(cfg, at_ms, &day_id, &month_id);
	local_day = fs->day_id == day_id ? fs->day_spent : 0;
	local_month = fs->month_id == month_id ? fs->month_spent : 0;
	/* what the card spent at the other terminals of the scheme counts too */
	day_spent = local_day + (fs->remote_day_id == day_id ? fs->remote_day_spent : 0);
	month_spent = local_month + (fs->remote_month_id == month_id ? fs->remote_month_spent : 0);
	p->cap_hit = 0;
	for (int period = KP_CAP_DAY; period <= KP_CAP_MONTH; period++) {
		int64_t spent = period == KP_CAP_DAY ? day_spent : month_spent, left;

		rc = kp_store_fare_cap(s, cat, (enum kp_cap_period)period, &cap, &found);
		if (rc != KP_OK)
			return rc;
		left = cap > spent ? cap - spent : 0;
		if (found && left < p->amount) {
			p->amount = left;
			p->cap_hit = 1;
			kp_note_add(p->note, sizeof(p->note), "cap %s %s%s%lld left %lld",
			            period == KP_CAP_DAY ? "day" : "month", cat, cat[0] ? " " : "",
			            (long long)cap, (long long)left);
		}
	}
	/* A charge for a past period (a journey closed after its day) is not counted into
	 * today's spending. */
	if (apply && day_id >= fs->day_id) {
		fs->day_id = day_id;
		fs->day_spent = local_day + p->amount;
	}
	if (apply && month_id >= fs->month_id) {
		fs->month_id = month_id;
		fs->month_spent = local_month + p->amount;
	}
	return KP_OK;
}
