/* SPDX-License-Identifier: Apache-2.0 */
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
	kp_db_stmt *st = NULL;
	int rc = bs_query(s, &st, "SELECT status, valid_from, valid_until FROM linkages"
	                  " WHERE token = ?1", BS_TOKEN(linkage));
	int step;

	*why = "ok";
	if (rc != KP_BE_OK)
		return rc;
	step = kp_db_step(st);
	if (step == KP_DB_ROW) {
		const char *status = kp_db_column_text(st, 0);

		if (status == NULL || strcmp(status, "active") != 0) {
			*why = "revoked";
			rc = KP_BE_E_INVAL;
		} else if (!early && at_ms < kp_db_column_int64(st, 1)) {
			*why = "not yet valid";
			rc = KP_BE_E_INVAL;
		} else if (at_ms >= kp_db_column_int64(st, 2)) {
			*why = "expired";
			rc = KP_BE_E_INVAL;
		}
	} else if (step == KP_DB_DONE) {
		*why = "unknown linkage";
		rc = KP_BE_E_NOTFOUND;
	} else {
		rc = bs_fail(s, "linkage");
	}
	kp_db_finalize(st);
	return rc;
}

/* Inserts the link (an existing one is kept as it is); *added says whether it is new. */
static int link_insert(kp_bstore *s, const uint8_t linkage[KP_TOKEN_LEN],
                       const uint8_t card[KP_TOKEN_LEN], int64_t linked_ms, const char *source,
                       int *added)
{
	int rc = bs_run(s, "link", "INSERT INTO linkage_cards(linkage, card, linked, source)"
	                " VALUES (?1, ?2, ?3, ?4) ON CONFLICT(linkage, card) DO NOTHING",
	                BS_TOKEN(linkage), BS_TOKEN(card), BS_INT(linked_ms), BS_TEXT(source));

	*added = rc == KP_BE_OK && kp_db_changes(s->db) > 0;
	return rc;
}

/* A link record from a terminal (inside the ingest transaction): link if the linkage allows
 * it at the record's time, and note the outcome either way. The record itself is already
 * stored, so a refusal here refuses the link, never the record. */
int bs_link_request(kp_bstore *s, const struct kp_bsession *ses,
                    const struct kp_record *c, int64_t now_ms)
{
	const char *terminal = ses->terminal;
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
	return bs_run(s, "link request", "INSERT INTO link_requests(terminal, seq, linkage, card,"
	              " result, reason, at, journal) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
	              BS_TEXT(terminal), BS_INT(c->seq), BS_TOKEN(c->has_via ? c->via : NULL),
	              BS_TOKEN(c->has_token ? c->token : NULL),
	              BS_TEXT(accepted ? "accepted" : "refused"), BS_TEXT(why), BS_INT(now_ms),
	              BS_BLOB(ses->journal, KP_JOURNAL_ID_LEN));
}

int bs_meta_int(kp_bstore *s, const char *key, int64_t def, int64_t *v)
{
	return bs_query_int(s, def, v, "SELECT value FROM meta WHERE key = ?1", BS_TEXT(key));
}

/* The stop places of a feed go with it (inside the caller's transaction). */
int bs_change_feed_places(kp_bstore *s, const char *feed_id)
{
	return bs_run(s, "stop places", "DELETE FROM stop_places WHERE feed_id = ?1",
	              BS_TEXT(feed_id));
}

int kp_bstore_linkage_add(kp_bstore *s, const uint8_t token[KP_TOKEN_LEN], const char *category,
                          int64_t valid_from_ms, int64_t valid_until_ms, int64_t now_ms)
{
	int rc;

	if (token == NULL || category == NULL || !kp_cbor_id_valid(category, false) ||
	    valid_from_ms < 0 || valid_until_ms <= valid_from_ms)
		return bs_refuse(s, KP_BE_E_INVAL, "linkage: a category of 1 to %d bytes of UTF-8, "
		                 "and UNTIL after FROM", KP_ID_MAX);
	rc = bs_begin(s, KP_DB_TXN_WRITE);
	if (rc != KP_BE_OK)
		return rc;
	/* An active linkage takes the new category and validity; a revoked one is left alone. */
	rc = bs_run(s, "linkage", "INSERT INTO linkages(token, category, valid_from, valid_until,"
	            " created) VALUES (?1, ?2, ?3, ?4, ?5) ON CONFLICT(token) DO UPDATE SET"
	            " category = excluded.category, valid_from = excluded.valid_from,"
	            " valid_until = excluded.valid_until WHERE linkages.status = 'active'",
	            BS_TOKEN(token), BS_TEXT(category), BS_INT(valid_from_ms),
	            BS_INT(valid_until_ms), BS_INT(now_ms));
	if (rc == KP_BE_OK && kp_db_changes(s->db) == 0) {
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
	rc = bs_begin(s, KP_DB_TXN_WRITE);
	if (rc != KP_BE_OK)
		return rc;
	rc = linkage_usable(s, linkage, now_ms, 1, &why);
	if (rc == KP_BE_E_NOTFOUND || rc == KP_BE_E_INVAL)
		snprintf(s->err, sizeof(s->err), "cannot link to this linkage: %s", why);
	if (rc == KP_BE_OK)
		rc = link_insert(s, linkage, card_token, now_ms, source, &added);
	return bs_end(s, rc, added);
}
