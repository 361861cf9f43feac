/* SPDX-License-Identifier: Apache-2.0 */
/* The scheme's My Number policy as the last bundle said it. */
#include "tap_int.h"

static void ids_split(char *list, char (*ids)[KP_ID_MAX + 1], size_t *n)
{
	char *save = NULL;

	*n = 0;
	if (strcmp(list, "-") == 0)
		return;
	for (char *t = strtok_r(list, ",", &save); t != NULL && *n < KP_POLICY_LIST_MAX;
	     t = strtok_r(NULL, ",", &save))
		snprintf(ids[(*n)++], KP_ID_MAX + 1, "%s", t);
}

int tap_policy_load(kp_tap_engine *e, struct policy *p)
{
	char text[2 * KP_POLICY_LIST_MAX * (KP_ID_MAX + 1) + 200];
	char prods[KP_POLICY_LIST_MAX * (KP_ID_MAX + 1) + 2];
	char cats[KP_POLICY_LIST_MAX * (KP_ID_MAX + 1) + 2];
	long long rides, value, age, issued;
	unsigned long long seq;
	uint64_t acked = 0, version = 0;
	int fmt, direct, rc;

	memset(p, 0, sizeof(*p));
	p->max_age_s = KP_POLICY_MAX_AGE_DEFAULT;
	rc = kp_store_meta_get(e->s, "mynumber_policy", text, sizeof(text));
	if (rc == KP_OK && sscanf(text, "%d %d %lld %lld %lld %lld %llu %529s %529s", &fmt, &direct,
	                          &rides, &value, &age, &issued, &seq, prods, cats) == 9 &&
	    fmt == 4 && age > 0) {
		p->synced = p->known = 1;
		p->direct = direct == 1;
		p->rides = rides;
		p->value = value;
		p->max_age_s = age;
		p->issued_ms = issued;
		p->seq = seq;
		ids_split(prods, p->products, &p->n_products);
		ids_split(cats, p->categories, &p->n_categories);
		return KP_OK;
	}
	if (rc != KP_OK && rc != KP_E_INVAL)
		return rc;
	rc = kp_store_sync_state(e->s, &acked, &version, NULL);
	p->synced = version > 0;
	return rc;
}

/* Eligibility data older than the scheme allows: judged from the bundle's issued time (the
 * backend's clock, signed) to the later of now and the newest record journaled since the
 * bundle was applied, so a clock set back after taps gains nothing. */
int tap_policy_stale(kp_tap_engine *e, const struct policy *p, int64_t now, int *stale)
{
	int64_t newest = 0;
	int rc = KP_OK;

	*stale = 0;
	if (!p->synced)
		return KP_OK;
	if (!p->known) {
		*stale = 1;
		return KP_OK;
	}
	rc = kp_store_journal_latest_after(e->s, p->seq, &newest);
	if (newest > now)
		now = newest;
	*stale = now - p->issued_ms > p->max_age_s * 1000;
	return rc;
}

int tap_policy_lists(const char (*ids)[KP_ID_MAX + 1], size_t n, const char *id)
{
	for (size_t i = 0; id[0] != '\0' && i < n; i++) {
		if (strcmp(ids[i], id) == 0)
			return 1;
	}
	return 0;
}
