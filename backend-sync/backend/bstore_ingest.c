/* SPDX-License-Identifier: Apache-2.0 */
/* The backend store: records in (every record once, terminal + seq the key, the full COSE
 * bytes kept for audit), merged uses, clone detection. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "bstore_int.h"

int bs_bundle_refresh(kp_bstore *s, int64_t now_ms)
{
	int64_t max_age = KP_POLICY_MAX_AGE_DEFAULT, last = -1;
	int rc = bs_meta_int(s, "elig_max_age_s", KP_POLICY_MAX_AGE_DEFAULT, &max_age);

	if (rc == KP_BE_OK)
		rc = bs_meta_int(s, "elig_refreshed_ms", -1, &last);
	if (rc != KP_BE_OK || (last >= 0 && now_ms - last < max_age * 1000 / 4 && now_ms >= last))
		return rc;
	rc = bs_begin(s, KP_DB_TXN_WRITE);
	if (rc == KP_BE_OK)
		rc = bs_meta_put(s, "elig_refreshed_ms", now_ms);
	/* the first call only starts the clock */
	return bs_end(s, rc, last >= 0 && now_ms > last);
}

/* The service days of a pass first used at at_ms, as a terminal computes them
 * (kp_service_days): from the start of that service day, days * 24 h. */
static int service_days(kp_bstore *s, int64_t at_ms, int days, int64_t *from_ms,
                        int64_t *until_ms)
{
	int64_t end_s = 14400, offset_s = 32400, day;
	int rc = bs_meta_int(s, "service_day_end_s", 14400, &end_s);

	if (rc == KP_BE_OK)
		rc = bs_meta_int(s, "utc_offset_s", 32400, &offset_s);
	day = kp_floor_div(kp_floor_div(at_ms, 1000) + offset_s - end_s, 86400);
	*from_ms = (day * 86400 + end_s - offset_s) * 1000;
	*until_ms = *from_ms + (int64_t)days * 86400000LL;
	return rc;
}

/* An accepted use, merged into the backend's truth: an N-ride ticket loses the record's
 * rides, stored value the record's amount (never its rides), and a first-use pass starts
 * at the record's time. A use beyond what was bought denylists the card. */
static int merge_use(kp_bstore *s, const struct kp_record *c, int64_t now_ms)
{
	kp_db_stmt *st = NULL;
	char kind[16] = "";
	int64_t use = 0, from = 0, until = 0;
	int first_use = 0, days = 0, rc;

	rc = bs_query_cached(s, &st, "SELECT e.first_use, p.product_kind, coalesce(p.days, 0)"
	                     " FROM entitlements e JOIN products p ON p.id = e.product_id"
	                     " WHERE e.id = ?1", BS_INT(c->entitlement));
	if (rc != KP_BE_OK)
		return rc;
	if (kp_db_step(st) == KP_DB_ROW) {
		first_use = (int)kp_db_column_int64(st, 0);
		snprintf(kind, sizeof(kind), "%s", kp_db_column_text(st, 1));
		days = (int)kp_db_column_int64(st, 2);
	}
	kp_db_reset(st);
	if (strcmp(kind, "stored") == 0)
		use = c->amount;
	else if (strcmp(kind, "nride") == 0)
		use = c->rides;
	if (first_use && strcmp(kind, "period") == 0 && days > 0) {
		rc = service_days(s, c->time_ms, days, &from, &until);
		if (rc == KP_BE_OK)
			rc = bs_run(s, "activate", "UPDATE entitlements SET first_use = 0,"
			            " valid_from = ?2, valid_until = ?3 WHERE id = ?1 AND first_use = 1",
			            BS_INT(c->entitlement), BS_INT(from), BS_INT(until));
		if (rc != KP_BE_OK)
			return rc;
	}
	if (use <= 0)
		return KP_BE_OK;
	/* Merge the use: the backend's truth is bought minus every terminal's uses. */
	rc = bs_run(s, "use", "UPDATE entitlements SET used = used + ?2 WHERE id = ?1",
	            BS_INT(c->entitlement), BS_INT(use));
	if (rc != KP_BE_OK)
		return rc;
	/* Overdrawn across terminals: deny the card until an operator looks at it. */
	return bs_run(s, "overdraft", "INSERT INTO denylist(token, reason, added)"
	              " SELECT token, 'overdraft of entitlement ' || id, ?2 FROM entitlements"
	              " WHERE id = ?1 AND used > bought ON CONFLICT(token) DO NOTHING",
	              BS_INT(c->entitlement), BS_INT(now_ms));
}

/* ---- clone detection (issue 13) ---- */

#define CLONE_WINDOW_MS (12LL * 3600 * 1000)    /* pairs further apart are never impossible */

/* Where a record was made: its stop's coordinates in the operator's fare feed, else in any
 * feed that has the stop. 0: not known. */
static int stop_place(kp_bstore *s, const char *operator_id, const char *stop, int64_t *lat,
                      int64_t *lon, int *known)
{
	kp_db_stmt *st = NULL;
	int rc;

	*known = 0;
	if (stop == NULL || stop[0] == '\0')
		return KP_BE_OK;
	rc = bs_query_cached(s, &st, "SELECT p.lat_e6, p.lon_e6 FROM stop_places p WHERE p.stop_id = ?2"
	                     " ORDER BY p.feed_id <> coalesce((SELECT feed_id FROM operator_fares"
	                     " WHERE operator_id = ?1), ''), p.feed_id LIMIT 1",
	                     BS_TEXT(operator_id), BS_TEXT(stop));
	if (rc != KP_BE_OK)
		return rc;
	if (kp_db_step(st) == KP_DB_ROW) {
		*lat = kp_db_column_int64(st, 0);
		*lon = kp_db_column_int64(st, 1);
		*known = 1;
	}
	kp_db_reset(st);
	return KP_BE_OK;
}

/* Great-circle distance in metres between two points in micro-degrees. */
static double distance_m(int64_t lat1, int64_t lon1, int64_t lat2, int64_t lon2)
{
	const double rad = 3.14159265358979323846 / 180e6, r = 6371008.8;
	double p1 = (double)lat1 * rad, p2 = (double)lat2 * rad;
	double dp = p2 - p1, dl = (double)(lon2 - lon1) * rad;
	double a = sin(dp / 2) * sin(dp / 2) + cos(p1) * cos(p2) * sin(dl / 2) * sin(dl / 2);

	return 2 * r * asin(sqrt(a < 1 ? a : 1));
}

static int flag_clone(kp_bstore *s, const uint8_t linkage[KP_TOKEN_LEN], const char *kind,
                      const char *ta, int64_t sa, const char *tb, int64_t sb, const char *detail,
                      int suspend, int64_t now_ms)
{
	int rc = bs_run(s, "clone flag", "INSERT INTO clone_flags(linkage, kind, terminal_a,"
	                " seq_a, terminal_b, seq_b, detail, at, suspended) VALUES"
	                " (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9) ON CONFLICT DO NOTHING",
	                BS_TOKEN(linkage), BS_TEXT(kind),
	                BS_TEXT(ta), BS_INT(sa), BS_TEXT(tb), BS_INT(sb), BS_TEXT(detail),
	                BS_INT(now_ms), BS_INT(suspend));

	if (rc == KP_BE_OK && kp_db_changes(s->db) > 0)
		fprintf(stderr, "kippu-backend: possible copied My Number card: %s (%s %lld, %s "
		        "%lld)%s\n", detail, ta, (long long)sa, tb, (long long)sb,
		        suspend ? "; linkage suspended" : "");
	return rc;
}

/* The linkage a record used: its via, or its token when that is a linkage (a direct tap). */
static int record_linkage(kp_bstore *s, const struct kp_record *c, uint8_t out[KP_TOKEN_LEN],
                          int *found)
{
	kp_db_stmt *st = NULL;
	int rc;

	*found = 0;
	if (c->has_via) {
		memcpy(out, c->via, KP_TOKEN_LEN);
		*found = 1;
		return KP_BE_OK;
	}
	if (!c->has_token)
		return KP_BE_OK;
	rc = bs_query_cached(s, &st, "SELECT 1 FROM linkages WHERE token = ?1", BS_TOKEN(c->token));
	if (rc != KP_BE_OK)
		return rc;
	if (kp_db_step(st) == KP_DB_ROW) {
		memcpy(out, c->token, KP_TOKEN_LEN);
		*found = 1;
	}
	kp_db_reset(st);
	return KP_BE_OK;
}

/* Direct taps of the linkage in the record's service day, at every terminal, against the
 * scheme's rides per day. */
static int clone_limit(kp_bstore *s, const char *terminal, const struct kp_record *c,
                       const uint8_t linkage[KP_TOKEN_LEN], int suspend, int64_t now_ms)
{
	int64_t limit = 0, direct = 0, from = 0, until = 0, n = 0;
	char detail[128];
	int rc = bs_meta_int(s, "direct_taps", 0, &direct);

	if (rc == KP_BE_OK)
		rc = bs_meta_int(s, "direct_rides", 0, &limit);
	if (rc != KP_BE_OK || !direct || limit <= 0 || !c->has_token ||
	    memcmp(c->token, linkage, KP_TOKEN_LEN) != 0 || strcmp(c->result, "accepted") != 0 ||
	    strcmp(c->event, "tap_off") == 0)
		return rc;
	rc = service_days(s, c->time_ms, 1, &from, &until);
	if (rc == KP_BE_OK)
		rc = bs_query_int(s, 0, &n, "SELECT count(*) FROM records WHERE token = ?1"
		                  " AND kind = 'tap' AND result = 'accepted'"
		                  " AND coalesce(event, 'tap') <> 'tap_off'"
		                  " AND time_ms >= ?2 AND time_ms < ?3",
		                  BS_TOKEN(linkage), BS_INT(from), BS_INT(until));
	if (rc != KP_BE_OK || n <= limit)
		return rc;
	snprintf(detail, sizeof(detail), "%lld direct taps in one service day, the policy allows "
	         "%lld", (long long)n, (long long)limit);
	return flag_clone(s, linkage, "limit", terminal, (int64_t)c->seq, terminal,
	                  (int64_t)c->seq, detail, suspend, now_ms);
}

/* On ingest, inside its transaction: a record that used a linkage against the linkage's
 * records at other terminals within CLONE_WINDOW_MS. A pair is impossible when the stops'
 * distance over the time between them is above clone_speed_kmh, or, where a stop's place is
 * not known, when they are less than clone_gap_s apart. Repeated answers (already) and
 * records without a decision are left out. */
static int clone_check(kp_bstore *s, const char *terminal, const struct kp_record *c,
                       int64_t now_ms)
{
	kp_db_stmt *st = NULL;
	uint8_t linkage[KP_TOKEN_LEN];
	int64_t action = 1, speed_kmh = 120, gap_s = 60, lat = 0, lon = 0;
	int found = 0, here = 0, rc;

	if (strcmp(c->kind, "tap") != 0 ||
	    (strcmp(c->result, "accepted") != 0 && strcmp(c->result, "refused") != 0))
		return KP_BE_OK;
	rc = bs_meta_int(s, "clone_action", 1, &action);
	if (rc == KP_BE_OK && action > 0)
		rc = record_linkage(s, c, linkage, &found);
	if (rc != KP_BE_OK || action <= 0 || !found)
		return rc;
	rc = bs_meta_int(s, "clone_speed_kmh", 120, &speed_kmh);
	if (rc == KP_BE_OK)
		rc = bs_meta_int(s, "clone_gap_s", 60, &gap_s);
	if (rc == KP_BE_OK)
		rc = stop_place(s, c->operator_id, c->stop, &lat, &lon, &here);
	if (rc == KP_BE_OK)
		rc = clone_limit(s, terminal, c, linkage, action == 2, now_ms);
	if (rc == KP_BE_OK)
		rc = bs_query_cached(s, &st, "SELECT terminal, seq, time_ms, operator, stop FROM records"
		                     " WHERE (via = ?1 OR token = ?1) AND terminal <> ?2 AND kind = 'tap'"
		                     " AND result IN ('accepted', 'refused')"
		                     " AND time_ms BETWEEN ?3 AND ?4 ORDER BY abs(time_ms - ?5) LIMIT 16",
		                     BS_TOKEN(linkage), BS_TEXT(terminal),
		                     BS_INT(c->time_ms - CLONE_WINDOW_MS),
		                     BS_INT(c->time_ms + CLONE_WINDOW_MS), BS_INT(c->time_ms));
	if (rc != KP_BE_OK)
		return rc;
	while (rc == KP_BE_OK && kp_db_step(st) == KP_DB_ROW) {
		const char *other = kp_db_column_text(st, 0);
		int64_t seq = kp_db_column_int64(st, 1), t = kp_db_column_int64(st, 2);
		int64_t dt_ms = t > c->time_ms ? t - c->time_ms : c->time_ms - t, lat2 = 0, lon2 = 0;
		int there = 0, impossible = 0;
		char detail[160];

		rc = stop_place(s, kp_db_column_text(st, 3),
		                kp_db_column_text(st, 4), &lat2, &lon2, &there);
		if (rc != KP_BE_OK || other == NULL)
			break;
		if (here && there) {
			double d = distance_m(lat, lon, lat2, lon2);

			/* metres per millisecond against km/h: d / dt > v / 3600 */
			impossible = d > 0 && d * 3600.0 > (double)speed_kmh * (double)dt_ms;
			snprintf(detail, sizeof(detail), "%.1f km in %lld s (more than %lld km/h)",
			         d / 1000.0, (long long)(dt_ms / 1000), (long long)speed_kmh);
		} else {
			impossible = dt_ms < gap_s * 1000;
			snprintf(detail, sizeof(detail), "two terminals %lld s apart (less than %lld s; "
			         "a stop's place is not known)", (long long)(dt_ms / 1000),
			         (long long)gap_s);
		}
		if (!impossible)
			continue;
		/* the earlier record first, so a pair is flagged once whichever arrives last */
		if (t < c->time_ms || (t == c->time_ms && strcmp(other, terminal) < 0))
			rc = flag_clone(s, linkage, "travel", other, seq, terminal, (int64_t)c->seq,
			                detail, action == 2, now_ms);
		else
			rc = flag_clone(s, linkage, "travel", terminal, (int64_t)c->seq, other, seq,
			                detail, action == 2, now_ms);
	}
	kp_db_reset(st);
	return rc;
}

static int store_record(kp_bstore *s, const struct kp_bsession *ses, const struct kp_ingest *r,
                        int64_t now_ms)
{
	const struct kp_record *c = &r->rec;
	int rc = bs_run(s, "record", "INSERT INTO records(terminal, seq, time_ms, token, operator,"
	                " route, stop, product, ent_id, rides, amount, left_after, result, reason,"
	                " cose, payload, hash, received_ms, kind, via, category, event,"
	                " journal, cert_id) VALUES"
	                " (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15,"
	                " ?16, ?17, ?18, ?19, ?20, ?21, ?22, ?23, ?24)",
	                BS_TEXT(ses->terminal), BS_INT(c->seq), BS_INT(c->time_ms),
	                BS_TOKEN(c->has_token ? c->token : NULL), BS_TEXT(c->operator_id),
	                BS_OPT(c->route), BS_OPT(c->stop), BS_OPT(c->product),
	                BS_INT_IF(c->entitlement != 0, c->entitlement), BS_INT(c->rides),
	                BS_INT(c->amount), BS_INT_IF(c->has_left, c->left), BS_TEXT(c->result),
	                BS_TEXT(c->reason), BS_BLOB(r->cose, r->cose_len),
	                BS_BLOB(r->payload, r->payload_len), BS_BLOB(r->hash, KP_SHA256_LEN),
	                BS_INT(now_ms), BS_TEXT(c->kind), BS_TOKEN(c->has_via ? c->via : NULL),
	                BS_OPT(c->category), BS_OPT(c->event), BS_JOURNAL(ses->journal),
	                BS_INT_IF(ses->cert_id > 0, ses->cert_id));

	/* verified with a certificate of the history, not the connection's (section 4.3) */
	if (rc == KP_BE_OK && r->signer > 0 && r->signer != ses->cert_id)
		rc = bs_run(s, "record signer", "INSERT INTO record_signers(terminal, journal, seq,"
		            " cert_id) VALUES (?1, ?2, ?3, ?4)", BS_TEXT(ses->terminal),
		            BS_JOURNAL(ses->journal), BS_INT(c->seq), BS_INT(r->signer));
	if (rc == KP_BE_OK && r->sig_deferred)
		rc = bs_run(s, "audit pending", "INSERT INTO audit_pending(terminal, journal, seq)"
		            " VALUES (?1, ?2, ?3)", BS_TEXT(ses->terminal), BS_JOURNAL(ses->journal),
		            BS_INT(c->seq));
	if (rc == KP_BE_OK && strcmp(c->kind, "link") == 0)
		return bs_link_request(s, ses, c, now_ms);
	if (rc != KP_BE_OK || strcmp(c->result, "accepted") != 0 || c->entitlement == 0)
		return rc;
	return merge_use(s, c, now_ms);
}

/* Takes back the records no verified record vouches for yet (since SAVEPOINT unvouched). */
static int unwind_unvouched(kp_bstore *s, int *unvouched, uint64_t *held, uint8_t *last_hash,
                            int *moved, uint64_t safe_held, const uint8_t *safe_hash,
                            int safe_moved)
{
	int rc;

	if (!*unvouched)
		return KP_BE_OK;
	rc = bs_exec(s, "ROLLBACK TO unvouched");
	if (rc == KP_BE_OK)
		rc = bs_exec(s, "RELEASE unvouched");
	*unvouched = 0;
	*held = safe_held;
	memcpy(last_hash, safe_hash, KP_SHA256_LEN);
	*moved = safe_moved;
	return rc;
}

int kp_bstore_ingest(kp_bstore *s, const char *terminal, const struct kp_ingest *recs, size_t n,
                     int64_t now_ms, uint64_t *acked, uint64_t *refused_seq, char *reason,
                     size_t reason_cap)
{
	struct kp_bsession ses;
	int rc = bs_session_of(s, &ses, terminal, NULL);

	*refused_seq = 0;
	*acked = 0;
	reason[0] = '\0';
	if (rc != KP_BE_OK)
		return rc == KP_BE_E_NOTFOUND ? bs_fail(s, "unknown terminal") : rc;
	return kp_bstore_ingest_session(s, &ses, recs, n, now_ms, acked, refused_seq, reason,
	                                reason_cap);
}

static int ingest_once(kp_bstore *s, const struct kp_bsession *ses,
                       const struct kp_ingest *recs, size_t n, int64_t now_ms,
                       uint64_t *acked, uint64_t *refused_seq, char *reason, size_t reason_cap)
{
	const char *terminal = ses->terminal;
	kp_db_stmt *st = NULL;
	uint8_t last_hash[KP_SHA256_LEN];
	uint64_t held = 0, held_before = 0, safe_held = 0;
	uint8_t safe_hash[KP_SHA256_LEN];
	int quarantined = 0, epochs = 0, moved = 0, safe_moved = 0, unvouched = 0, rc;

	*refused_seq = 0;
	*acked = 0;
	reason[0] = '\0';
	rc = bs_begin(s, KP_DB_TXN_WRITE);
	if (rc != KP_BE_OK)
		return rc;
	/* one terminal's batches one after another, whichever connection or backend instance
	 * runs them (PostgreSQL; SQLite's write transaction already excludes every writer) */
	if (kp_db_lock(s->db, KP_DB_LOCK_TERMINAL, terminal) != KP_DB_OK) {
		rc = bs_fail(s, "terminal lock");
		goto out;
	}
	rc = bs_query(s, &st, "SELECT j.acked, j.last_hash, t.quarantined, CASE WHEN (SELECT count(*)"
	              " FROM journals k WHERE k.terminal = j.terminal) > 1 THEN 1 ELSE 0 END"
	              " FROM journals j"
	              " JOIN terminals t ON t.id = j.terminal"
	              " WHERE j.terminal = ?1 AND j.journal = ?2",
	              BS_TEXT(terminal), BS_JOURNAL(ses->journal));
	if (rc != KP_BE_OK)
		goto out;
	if (kp_db_step(st) != KP_DB_ROW || kp_db_column_bytes(st, 1) != KP_SHA256_LEN) {
		kp_db_finalize(st);
		rc = bs_fail(s, "unknown terminal");
		goto out;
	}
	held = (uint64_t)kp_db_column_int64(st, 0);
	held_before = held;
	memcpy(last_hash, kp_db_column_blob(st, 1), KP_SHA256_LEN);
	quarantined = (int)kp_db_column_int64(st, 2);
	epochs = (int)kp_db_column_int64(st, 3);   /* another epoch could hold these records */
	kp_db_finalize(st);

	if (quarantined) {
		*refused_seq = held + 1;
		snprintf(reason, reason_cap, "terminal is quarantined (kippuctl quarantine list)");
		goto done;
	}
	for (size_t i = 0; i < n; i++) {
		const struct kp_ingest *r = &recs[i];
		const char *why = NULL;
		int alias = 0;

		if (r->sig_ok && r->decode_rc == 0 && r->rec.seq <= held) {
			int same = 0;

			rc = bs_same_as_stored(s, ses, r, &same);
			if (rc != KP_BE_OK)
				goto out;
			if (same)
				continue;            /* sent twice: changes nothing */
			why = "a different record under a sequence number already held";
		} else if (!r->sig_ok) {
			why = r->why[0] != '\0' ? r->why : "bad signature";
		} else if (r->decode_rc != 0) {
			why = "payload is not a valid record";
		} else if (strcmp(r->rec.terminal, terminal) != 0) {
			why = "terminal id in the record differs from the certificate's";
		} else if (r->rec.seq != held + 1) {
			/* A gap is the sender's mistake, not evidence of tampering: refuse the
			 * batch from here and let the client resend from what we hold. */
			rc = unwind_unvouched(s, &unvouched, &held, last_hash, &moved, safe_held,
			                      safe_hash, safe_moved);
			if (rc != KP_BE_OK)
				goto out;
			*refused_seq = r->rec.seq;
			snprintf(reason, reason_cap, "sequence gap: expected %llu, got %llu",
			         (unsigned long long)(held + 1), (unsigned long long)r->rec.seq);
			break;
		} else if (memcmp(r->rec.prev, last_hash, KP_SHA256_LEN) != 0) {
			why = "hash chain broken: prev does not match the last record held";
		}
		if (why != NULL) {
			uint64_t seq = r->decode_rc == 0 ? r->rec.seq : held + 1;

			rc = unwind_unvouched(s, &unvouched, &held, last_hash, &moved, safe_held,
			                      safe_hash, safe_moved);
			if (rc != KP_BE_OK)
				goto out;
			*refused_seq = seq;
			snprintf(reason, reason_cap, "record %llu: %s", (unsigned long long)seq, why);
			fprintf(stderr, "kippu-backend: terminal %s quarantined: %s\n", terminal, reason);
			rc = bs_quarantine(s, terminal, seq, reason, r, now_ms);
			if (rc != KP_BE_OK)
				goto out;
			break;
		}
		if (r->sig_deferred && !unvouched) {
			/* held only once a later verified record vouches for it (the chain) */
			rc = bs_exec(s, "SAVEPOINT unvouched");
			if (rc != KP_BE_OK)
				goto out;
			unvouched = 1;
			safe_held = held;
			memcpy(safe_hash, last_hash, KP_SHA256_LEN);
			safe_moved = moved;
		}
		/* Another epoch holds this very record (a database restored from a backup sends
		 * its records again under a new journal): held once, no second use, no second
		 * clone check. */
		if (epochs)
			rc = bs_alias_of_held(s, ses, r, now_ms, &alias);
		if (rc == KP_BE_OK && !alias)
			rc = store_record(s, ses, r, now_ms);
		if (rc == KP_BE_OK && !alias)
			rc = clone_check(s, terminal, &r->rec, now_ms);
		if (rc != KP_BE_OK)
			goto out;
		held = r->rec.seq;
		memcpy(last_hash, r->hash, KP_SHA256_LEN);
		moved++;
		if (!r->sig_deferred && unvouched) {
			rc = bs_exec(s, "RELEASE unvouched");   /* its chain reaches this one */
			if (rc != KP_BE_OK)
				goto out;
			unvouched = 0;
		}
	}
	/* a batch that ends unverified (never from kippu-backend's server: it verifies the
	 * last record) is held up to its last verified record */
	rc = unwind_unvouched(s, &unvouched, &held, last_hash, &moved, safe_held, safe_hash,
	                      safe_moved);
	if (rc != KP_BE_OK)
		goto out;
	if (moved > 0) {
		rc = bs_run(s, "journal head", "UPDATE journals SET acked = ?3, last_hash = ?4"
		            " WHERE terminal = ?1 AND journal = ?2", BS_TEXT(terminal),
		            BS_JOURNAL(ses->journal), BS_INT(held), BS_BLOB(last_hash, KP_SHA256_LEN));
		if (rc == KP_BE_OK)
			rc = bs_bump_version(s);
		if (rc != KP_BE_OK)
			goto out;
	}
done:
	rc = bs_commit(s);
out:
	if (rc != KP_BE_OK)
		bs_rollback(s);
	/* A batch whose COMMIT failed is not held: it must never be acknowledged. */
	*acked = rc == KP_BE_OK ? held : held_before;
	return rc;
}

/* ingest_once, run again after a PostgreSQL serialization failure or deadlock (it rolled
 * back whole: nothing of the failed attempt stays). */
int kp_bstore_ingest_session(kp_bstore *s, const struct kp_bsession *ses,
                             const struct kp_ingest *recs, size_t n, int64_t now_ms,
                             uint64_t *acked, uint64_t *refused_seq, char *reason,
                             size_t reason_cap)
{
	int rc = KP_BE_OK;

	bs_partitions(s, now_ms);
	s->db->err_rc = KP_DB_OK;                /* no earlier failure counts as this one's */
	for (int attempt = 0; attempt == 0 || bs_retry(s, rc, attempt); attempt++)
		rc = ingest_once(s, ses, recs, n, now_ms, acked, refused_seq, reason, reason_cap);
	return rc;
}

int kp_bstore_quarantine_clear(kp_bstore *s, const char *terminal)
{
	int rc = bs_run(s, "quarantine clear", "UPDATE terminals SET quarantined = 0"
	                " WHERE id = ?1 AND quarantined = 1", BS_TEXT(terminal));

	if (rc != KP_BE_OK)
		return rc;
	if (kp_db_changes(s->db) == 0) {
		snprintf(s->err, sizeof(s->err), "terminal %s is not quarantined", terminal);
		return KP_BE_E_NOTFOUND;
	}
	return bs_run(s, "quarantine clear", "UPDATE quarantine SET cleared = ?2"
	              " WHERE terminal = ?1 AND cleared IS NULL", BS_TEXT(terminal),
	              BS_INT(bs_version_clock_ms() / 1000 * 1000));
}
