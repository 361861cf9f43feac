/* SPDX-License-Identifier: Apache-2.0 */
/* The backend store: the scheme's My Number policy, the clone policy, stop places. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "bstore_int.h"

/* ---- the scheme's My Number policy (bundle format 4) ---- */

static int allow_list(kp_bstore *s, const char *kind, char (*ids)[KP_ID_MAX + 1], size_t *n)
{
	kp_db_stmt *st = NULL;
	int rc = bs_query(s, &st, "SELECT id FROM direct_tap_allow WHERE kind = ?1 ORDER BY id",
	                  BS_TEXT(kind));

	*n = 0;
	if (rc != KP_BE_OK)
		return rc;
	while (kp_db_step(st) == KP_DB_ROW && *n < KP_POLICY_LIST_MAX) {
		const char *id = kp_db_column_text(st, 0);

		/* a row put in by hand that no terminal could hold is left out */
		if (id != NULL && kp_cbor_id_valid(id, false))
			snprintf(ids[(*n)++], KP_ID_MAX + 1, "%s", id);
	}
	kp_db_finalize(st);
	return KP_BE_OK;
}

int kp_bstore_get_policy(kp_bstore *s, struct kp_bundle_policy *p)
{
	int64_t direct = 0;
	int rc;

	memset(p, 0, sizeof(*p));
	rc = bs_meta_int(s, "direct_taps", 0, &direct);
	if (rc == KP_BE_OK)
		rc = bs_meta_int(s, "direct_rides", 0, &p->direct_rides);
	if (rc == KP_BE_OK)
		rc = bs_meta_int(s, "direct_value", 0, &p->direct_value);
	if (rc == KP_BE_OK)
		rc = bs_meta_int(s, "elig_max_age_s", KP_POLICY_MAX_AGE_DEFAULT, &p->max_age_s);
	if (rc == KP_BE_OK)
		rc = allow_list(s, "product", p->products, &p->n_products);
	if (rc == KP_BE_OK)
		rc = allow_list(s, "category", p->categories, &p->n_categories);
	if (rc != KP_BE_OK)
		return rc;
	p->direct = direct == 1 && p->n_products + p->n_categories > 0;
	if (p->max_age_s < KP_POLICY_MAX_AGE_MIN || p->max_age_s > KP_POLICY_MAX_AGE_MAX)
		p->max_age_s = KP_POLICY_MAX_AGE_DEFAULT;       /* a value put in by hand */
	if (!p->direct || p->direct_rides < 0 || p->direct_rides > KP_POLICY_RIDES_MAX)
		p->direct_rides = 0;
	if (!p->direct || p->direct_value < 0 || p->direct_value > KP_POLICY_VALUE_MAX)
		p->direct_value = 0;
	if (!p->direct)
		p->n_products = p->n_categories = 0;
	return KP_BE_OK;
}


static int allow_put(kp_bstore *s, const char *kind, const char (*ids)[KP_ID_MAX + 1], size_t n)
{
	int rc = KP_BE_OK;

	for (size_t i = 0; rc == KP_BE_OK && i < n; i++)
		rc = bs_run(s, "direct tap allow", "INSERT INTO direct_tap_allow(kind, id)"
		            " VALUES (?1, ?2) ON CONFLICT DO NOTHING", BS_TEXT(kind), BS_TEXT(ids[i]));
	return rc;
}

int kp_bstore_set_policy(kp_bstore *s, const struct kp_bundle_policy *p)
{
	static const char *const keys[] = { "direct_taps", "direct_rides", "direct_value",
	                                     "elig_max_age_s" };
	const int64_t v[] = { p->direct ? 1 : 0, p->direct ? p->direct_rides : 0,
	                      p->direct ? p->direct_value : 0, p->max_age_s };
	int rc;

	s->err[0] = '\0';
	if (p->max_age_s < KP_POLICY_MAX_AGE_MIN || p->max_age_s > KP_POLICY_MAX_AGE_MAX) {
		snprintf(s->err, sizeof(s->err), "eligibility max age: %d to %d hours",
		         KP_POLICY_MAX_AGE_MIN / 3600, KP_POLICY_MAX_AGE_MAX / 3600);
		return KP_BE_E_INVAL;
	}
	if (p->direct && (p->n_products + p->n_categories == 0 ||
	                  p->n_products > KP_POLICY_LIST_MAX ||
	                  p->n_categories > KP_POLICY_LIST_MAX)) {
		snprintf(s->err, sizeof(s->err), "direct taps: name 1 to %d products and/or 1 to %d "
		         "categories", KP_POLICY_LIST_MAX, KP_POLICY_LIST_MAX);
		return KP_BE_E_INVAL;
	}
	if (p->direct_rides < 0 || p->direct_rides > KP_POLICY_RIDES_MAX ||
	    p->direct_value < 0 || p->direct_value > KP_POLICY_VALUE_MAX) {
		snprintf(s->err, sizeof(s->err), "rides per day 0 to %d, value per day 0 to 10^12 "
		         "minor units (0: no limit)", KP_POLICY_RIDES_MAX);
		return KP_BE_E_INVAL;
	}
	for (size_t i = 0; i < p->n_products + p->n_categories; i++) {
		const char *id = i < p->n_products ? p->products[i] : p->categories[i - p->n_products];

		if (!kp_cbor_id_valid(id, false))
			return bs_refuse(s, KP_BE_E_INVAL, "'%.40s': ids are 1-32 characters of "
			                 "A-Z a-z 0-9 - _ .", id);
	}
	rc = bs_begin(s, KP_DB_TXN_WRITE);
	if (rc != KP_BE_OK)
		return rc;
	for (size_t i = 0; rc == KP_BE_OK && i < p->n_products; i++) {
		int64_t known = 0;

		rc = bs_query_int(s, 0, &known, "SELECT 1 FROM products WHERE id = ?1",
		                  BS_TEXT(p->products[i]));
		if (rc == KP_BE_OK && !known) {
			snprintf(s->err, sizeof(s->err), "no product %s", p->products[i]);
			rc = KP_BE_E_NOTFOUND;
		}
	}
	if (rc == KP_BE_OK)
		rc = bs_exec(s, "DELETE FROM direct_tap_allow");
	if (rc == KP_BE_OK && p->direct)
		rc = allow_put(s, "product", (const char (*)[KP_ID_MAX + 1])p->products, p->n_products);
	if (rc == KP_BE_OK && p->direct)
		rc = allow_put(s, "category", (const char (*)[KP_ID_MAX + 1])p->categories,
		               p->n_categories);
	if (rc == KP_BE_OK)
		rc = bs_meta_puts(s, keys, v, 4);
	return bs_commit_change(s, rc);
}

int kp_bstore_get_clone_policy(kp_bstore *s, int *action, int64_t *speed_kmh, int64_t *gap_s)
{
	int64_t a = 1;
	int rc = bs_meta_int(s, "clone_action", 1, &a);

	if (rc == KP_BE_OK)
		rc = bs_meta_int(s, "clone_speed_kmh", 120, speed_kmh);
	if (rc == KP_BE_OK)
		rc = bs_meta_int(s, "clone_gap_s", 60, gap_s);
	*action = a >= 0 && a <= 2 ? (int)a : 1;
	return rc;
}

int kp_bstore_set_clone_policy(kp_bstore *s, int action, int64_t speed_kmh, int64_t gap_s)
{
	static const char *const keys[] = { "clone_action", "clone_speed_kmh", "clone_gap_s" };
	const int64_t v[] = { action, speed_kmh, gap_s };
	int rc;

	s->err[0] = '\0';
	if (action < 0 || action > 2 || speed_kmh < 1 || speed_kmh > 2000 || gap_s < 0 ||
	    gap_s > 86400) {
		snprintf(s->err, sizeof(s->err), "clones: off, report or suspend; speed 1 to 2000 "
		         "km/h; gap 0 to 86400 s");
		return KP_BE_E_INVAL;
	}
	rc = bs_begin(s, KP_DB_TXN_WRITE);
	if (rc == KP_BE_OK)
		rc = bs_meta_puts(s, keys, v, 3);
	return bs_commit_change(s, rc);
}

int kp_bstore_clone_clear(kp_bstore *s, const uint8_t linkage[KP_TOKEN_LEN], int64_t now_ms)
{
	int rc = bs_begin(s, KP_DB_TXN_WRITE);

	s->err[0] = '\0';
	if (rc == KP_BE_OK)
		rc = bs_run(s, "clone clear", "UPDATE clone_flags SET cleared = ?2 WHERE linkage = ?1"
		            " AND cleared IS NULL", BS_TOKEN(linkage), BS_INT(now_ms));
	if (rc == KP_BE_OK && kp_db_changes(s->db) == 0) {
		snprintf(s->err, sizeof(s->err), "no open flag for that linkage");
		rc = KP_BE_E_NOTFOUND;
	}
	return bs_commit_change(s, rc);
}

int kp_bstore_put_stop_places(kp_bstore *s, const char *feed_id,
                              const struct kp_stop_place *places, size_t n)
{
	int rc;

	s->err[0] = '\0';
	for (size_t i = 0; i < n; i++) {
		if (!kp_cbor_id_valid(feed_id, false) || places[i].stop_id[0] == '\0' ||
		    places[i].lat_e6 < -90000000 || places[i].lat_e6 > 90000000 ||
		    places[i].lon_e6 < -180000000 || places[i].lon_e6 > 180000000) {
			snprintf(s->err, sizeof(s->err), "stop %.40s: latitude -90..90, longitude "
			         "-180..180", places[i].stop_id);
			return KP_BE_E_INVAL;
		}
	}
	rc = bs_begin(s, KP_DB_TXN_WRITE);
	if (rc == KP_BE_OK)
		rc = bs_change_feed_places(s, feed_id);
	for (size_t i = 0; rc == KP_BE_OK && i < n; i++)
		rc = bs_run(s, "stop place", "INSERT INTO stop_places(feed_id, stop_id, lat_e6,"
		            " lon_e6) VALUES (?1, ?2, ?3, ?4) ON CONFLICT(feed_id, stop_id) DO UPDATE"
		            " SET lat_e6 = excluded.lat_e6, lon_e6 = excluded.lon_e6", BS_TEXT(feed_id),
		            BS_TEXT(places[i].stop_id), BS_INT(places[i].lat_e6),
		            BS_INT(places[i].lon_e6));
	return bs_end(s, rc, 0);
}

/* A terminal judges the age of its eligibility data by the bundle's `issued` time, so a
 * backend whose state does not change still sends a fresh bundle at least every quarter of
 * the maximum age: the state version moves on when the last refresh is that old. */
