/* The backend store: My Number linkages and the cards linked to them. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "bstore_int.h"

/* ---- My Number linkage ---- */

/* Whether a linkage may take a new link at time at_ms: KP_BE_OK, else KP_BE_E_NOTFOUND
 * ("unknown linkage") or KP_BE_E_INVAL ("revoked", "expired", "not yet valid"), the word in
 * *why. early: a linkage whose validity has not begun takes links too. */
static int linkage_usable(kp_bstore *s, const uint8_t linkage[KP_TOKEN_LEN], int64_t at_ms,
                          int early, const char **why)
{
	sqlite3_stmt *st = NULL;
	int rc = bs_prep(s, &st, "SELECT status, valid_from, valid_until FROM linkages WHERE token = ?1");
	int step;

	*why = "ok";
	if (rc != KP_BE_OK)
		return rc;
	sqlite3_bind_blob(st, 1, linkage, KP_TOKEN_LEN, SQLITE_STATIC);
	step = sqlite3_step(st);
	if (step == SQLITE_ROW) {
		const char *status = (const char *)sqlite3_column_text(st, 0);

		if (status == NULL || strcmp(status, "active") != 0) {
			*why = "revoked";
			rc = KP_BE_E_INVAL;
		} else if (!early && at_ms < sqlite3_column_int64(st, 1)) {
			*why = "not yet valid";
			rc = KP_BE_E_INVAL;
		} else if (at_ms >= sqlite3_column_int64(st, 2)) {
			*why = "expired";
			rc = KP_BE_E_INVAL;
		}
	} else if (step == SQLITE_DONE) {
		*why = "unknown linkage";
		rc = KP_BE_E_NOTFOUND;
	} else {
		rc = bs_fail(s, "linkage");
	}
	sqlite3_finalize(st);
	return rc;
}

/* Inserts the link (an existing one is kept as it is); *added says whether it is new. */
static int link_insert(kp_bstore *s, const uint8_t linkage[KP_TOKEN_LEN],
                       const uint8_t card[KP_TOKEN_LEN], int64_t linked_ms, const char *source,
                       int *added)
{
	sqlite3_stmt *st = NULL;
	int rc = bs_prep(s, &st, "INSERT INTO linkage_cards(linkage, card, linked, source)"
	                      " VALUES (?1, ?2, ?3, ?4) ON CONFLICT(linkage, card) DO NOTHING");

	if (rc != KP_BE_OK)
		return rc;
	sqlite3_bind_blob(st, 1, linkage, KP_TOKEN_LEN, SQLITE_STATIC);
	sqlite3_bind_blob(st, 2, card, KP_TOKEN_LEN, SQLITE_STATIC);
	sqlite3_bind_int64(st, 3, linked_ms);
	sqlite3_bind_text(st, 4, source, -1, SQLITE_STATIC);
	rc = bs_step_done(s, st, "link");
	*added = rc == KP_BE_OK && sqlite3_changes(s->db) > 0;
	return rc;
}

/* A link record from a terminal (inside the ingest transaction): link if the linkage allows
 * it at the record's time, and note the outcome either way. The record itself is already
 * stored, so a refusal here refuses the link, never the record. */
int bs_link_request(kp_bstore *s, const struct kp_bsession *ses,
                    const struct kp_record *c, int64_t now_ms)
{
	const char *terminal = ses->terminal;
	sqlite3_stmt *st = NULL;
	char source[KP_ID_MAX + 40], reason[128];
	const char *why = "linked";
	int accepted = 0, added = 0, rc = KP_BE_OK;

	if (strcmp(c->result, "requested") != 0) {
		snprintf(reason, sizeof(reason), "not a request: %s at the terminal (%s)", c->result,
		         c->reason);
		why = reason;
	} else if (!c->has_token || !c->has_via) {
		why = !c->has_token ? "no card token" : "no linkage token (via)";
	} else {
		rc = linkage_usable(s, c->via, c->time_ms, 0, &why);
		if (rc == KP_BE_OK) {
			snprintf(source, sizeof(source), "terminal:%s:%llu", terminal,
			         (unsigned long long)c->seq);
			rc = link_insert(s, c->via, c->token, c->time_ms, source, &added);
			if (rc != KP_BE_OK)
				return rc;
			accepted = 1;
			why = added ? "linked" : "already linked";
		} else if (rc != KP_BE_E_NOTFOUND && rc != KP_BE_E_INVAL) {
			return rc;
		}
	}
	rc = bs_prep(s, &st, "INSERT INTO link_requests(terminal, seq, linkage, card, result, reason,"
	                  " at, journal) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)");
	if (rc != KP_BE_OK)
		return rc;
	sqlite3_bind_text(st, 1, terminal, -1, SQLITE_STATIC);
	sqlite3_bind_int64(st, 2, (sqlite3_int64)c->seq);
	if (c->has_via)
		sqlite3_bind_blob(st, 3, c->via, KP_TOKEN_LEN, SQLITE_STATIC);
	if (c->has_token)
		sqlite3_bind_blob(st, 4, c->token, KP_TOKEN_LEN, SQLITE_STATIC);
	sqlite3_bind_text(st, 5, accepted ? "accepted" : "refused", -1, SQLITE_STATIC);
	sqlite3_bind_text(st, 6, why, -1, SQLITE_TRANSIENT);
	sqlite3_bind_int64(st, 7, now_ms);
	sqlite3_bind_blob(st, 8, ses->journal, KP_JOURNAL_ID_LEN, SQLITE_STATIC);
	return bs_step_done(s, st, "link request");
}

int bs_meta_int(kp_bstore *s, const char *key, int64_t def, int64_t *v)
{
	sqlite3_stmt *st = NULL;
	int rc = bs_prep(s, &st, "SELECT value FROM meta WHERE key = ?1");

	if (rc != KP_BE_OK)
		return rc;
	sqlite3_bind_text(st, 1, key, -1, SQLITE_STATIC);
	*v = sqlite3_step(st) == SQLITE_ROW ? sqlite3_column_int64(st, 0) : def;
	sqlite3_finalize(st);
	return KP_BE_OK;
}

/* The stop places of a feed go with it (inside the caller's transaction). */
int bs_change_feed_places(kp_bstore *s, const char *feed_id)
{
	sqlite3_stmt *st = NULL;
	int rc = bs_prep(s, &st, "DELETE FROM stop_places WHERE feed_id = ?1");

	if (rc != KP_BE_OK)
		return rc;
	sqlite3_bind_text(st, 1, feed_id, -1, SQLITE_STATIC);
	return bs_step_done(s, st, "stop places");
}

int kp_bstore_linkage_add(kp_bstore *s, const uint8_t token[KP_TOKEN_LEN], const char *category,
                          int64_t valid_from_ms, int64_t valid_until_ms, int64_t now_ms)
{
	sqlite3_stmt *st = NULL;
	int rc;

	if (token == NULL || category == NULL || !kp_cbor_id_valid(category, false) ||
	    valid_from_ms < 0 || valid_until_ms <= valid_from_ms) {
		snprintf(s->err, sizeof(s->err), "linkage: a category of 1 to %d bytes of UTF-8, "
		         "and UNTIL after FROM", KP_ID_MAX);
		return KP_BE_E_INVAL;
	}
	rc = bs_exec(s, "BEGIN IMMEDIATE");
	if (rc != KP_BE_OK)
		return rc;
	/* An active linkage takes the new category and validity; a revoked one is left alone. */
	rc = bs_prep(s, &st, "INSERT INTO linkages(token, category, valid_from, valid_until, created)"
	                  " VALUES (?1, ?2, ?3, ?4, ?5) ON CONFLICT(token) DO UPDATE SET"
	                  " category = excluded.category, valid_from = excluded.valid_from,"
	                  " valid_until = excluded.valid_until WHERE linkages.status = 'active'");
	if (rc == KP_BE_OK) {
		sqlite3_bind_blob(st, 1, token, KP_TOKEN_LEN, SQLITE_STATIC);
		sqlite3_bind_text(st, 2, category, -1, SQLITE_STATIC);
		sqlite3_bind_int64(st, 3, valid_from_ms);
		sqlite3_bind_int64(st, 4, valid_until_ms);
		sqlite3_bind_int64(st, 5, now_ms);
		rc = bs_step_done(s, st, "linkage");
	}
	if (rc == KP_BE_OK && sqlite3_changes(s->db) == 0) {
		snprintf(s->err, sizeof(s->err), "this linkage was revoked and stays revoked "
		         "(a renewed My Number card has a new certificate, so a new linkage token)");
		rc = KP_BE_E_INVAL;
	}
	return bs_commit_change(s, rc);
}

int kp_bstore_linkage_revoke(kp_bstore *s, const uint8_t token[KP_TOKEN_LEN], int64_t now_ms)
{
	int rc;

	if (token == NULL)
		return KP_BE_E_INVAL;
	rc = bs_change(s, "UPDATE linkages SET status = 'revoked', revoked = ?3"
	               " WHERE token = ?1 AND status = 'active'",
	            "linkage revoke", NULL, NULL, token, now_ms, 0);
	if (rc == KP_BE_E_NOTFOUND)
		snprintf(s->err, sizeof(s->err), "no active linkage with this token");
	return rc;
}

int kp_bstore_linkage_link(kp_bstore *s, const uint8_t linkage[KP_TOKEN_LEN],
                           const uint8_t card_token[KP_TOKEN_LEN], int64_t now_ms,
                           const char *source)
{
	const char *why = NULL;
	int added = 0, rc;

	if (source == NULL)
		source = "backend";
	if (linkage == NULL || card_token == NULL ||
	    !kp_cbor_text_valid(source, KP_ID_MAX + 40, false) ||
	    (strcmp(source, "backend") != 0 && strncmp(source, "terminal:", 9) != 0)) {
		snprintf(s->err, sizeof(s->err), "link: source is backend or terminal:<id>:<seq>");
		return KP_BE_E_INVAL;
	}
	rc = bs_exec(s, "BEGIN IMMEDIATE");
	if (rc != KP_BE_OK)
		return rc;
	rc = linkage_usable(s, linkage, now_ms, 1, &why);
	if (rc == KP_BE_E_NOTFOUND || rc == KP_BE_E_INVAL)
		snprintf(s->err, sizeof(s->err), "cannot link to this linkage: %s", why);
	if (rc == KP_BE_OK)
		rc = link_insert(s, linkage, card_token, now_ms, source, &added);
	if (rc == KP_BE_OK && added)
		rc = bs_bump_version(s);
	if (rc == KP_BE_OK)
		rc = bs_exec(s, "COMMIT");
	if (rc != KP_BE_OK)
		bs_rollback(s);
	return rc;
}
