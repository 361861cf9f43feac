/* SPDX-License-Identifier: Apache-2.0 */
/* The backend store: terminals' sessions, journals and certificates, quarantined records. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "bstore_int.h"

const uint8_t bs_legacy_journal[KP_JOURNAL_ID_LEN];

/* A session for terminal and journal (NULL: the legacy journal), nothing found yet. */
static int session_init(struct kp_bsession *ses, const char *terminal, const uint8_t *journal)
{
	memset(ses, 0, sizeof(*ses));
	if (terminal == NULL || strlen(terminal) > KP_ID_MAX)
		return KP_BE_E_INVAL;
	snprintf(ses->terminal, sizeof(ses->terminal), "%s", terminal);
	memcpy(ses->journal, journal != NULL ? journal : bs_legacy_journal, KP_JOURNAL_ID_LEN);
	return KP_BE_OK;
}

/* Steps st, whose first columns are a journal's epoch, acked and last_hash, into ses. */
static bool journal_fields(kp_db_stmt *st, struct kp_bsession *ses)
{
	if (kp_db_step(st) != KP_DB_ROW || kp_db_column_bytes(st, 2) != KP_SHA256_LEN)
		return false;
	ses->epoch = kp_db_column_int64(st, 0);
	ses->acked = (uint64_t)kp_db_column_int64(st, 1);
	memcpy(ses->head, kp_db_column_blob(st, 2), KP_SHA256_LEN);
	return true;
}

/* The row of this certificate in the terminal's history, made on first sight. */
static int cert_row(kp_bstore *s, struct kp_bsession *ses, const uint8_t *der, size_t len,
                    int64_t now_ms)
{
	kp_db_stmt *st = NULL;
	char fp[2 * KP_SHA256_LEN + 1];
	int64_t nb, na;
	int valid, rc;

	bs_cert_facts(der, len, fp, &nb, &na, &valid);
	rc = bs_query(s, &st, "INSERT INTO terminal_certs(terminal, cert, first_seen, last_seen,"
	              " fingerprint, not_before, not_after) VALUES (?1, ?2, ?3, ?3, ?4, ?5, ?6)"
	              " ON CONFLICT(terminal, cert) DO UPDATE SET"
	              " last_seen = " BS_GREATER("terminal_certs.last_seen", "excluded.last_seen")
	              " RETURNING id, CASE WHEN first_seen = ?3 AND last_seen = ?3 THEN 1 ELSE 0"
	              " END", BS_TEXT(ses->terminal), BS_BLOB(der, len), BS_INT(now_ms),
	              BS_TEXT(fp), BS_INT_IF(valid, nb), BS_INT_IF(valid, na));

	if (rc != KP_BE_OK)
		return rc;
	if (kp_db_step(st) == KP_DB_ROW) {
		ses->cert_id = kp_db_column_int64(st, 0);
		ses->new_cert = (int)kp_db_column_int64(st, 1);
	} else {
		rc = bs_fail(s, "terminal certificate");
	}
	kp_db_finalize(st);
	return rc;
}

/* With the hello's transaction open: KP_BE_E_REVOKED (why in s->err) if this certificate of
 * the terminal was revoked at or before now. */
static int revoked_check(kp_bstore *s, const char *terminal, const uint8_t *der, size_t len,
                         int64_t now_ms)
{
	kp_db_stmt *st = NULL;
	char at[40];
	int rc = bs_query(s, &st, "SELECT fingerprint, revoked_at FROM terminal_certs"
	                  " WHERE terminal = ?1 AND cert = ?2 AND revoked_at <= ?3",
	                  BS_TEXT(terminal), BS_BLOB(der, len), BS_INT(now_ms));

	if (rc != KP_BE_OK)
		return rc;
	if (kp_db_step(st) == KP_DB_ROW) {
		bs_iso_time(at, sizeof(at), kp_db_column_int64(st, 1));
		rc = bs_refuse(s, KP_BE_E_REVOKED, "certificate %.16s of terminal %s was revoked at %s",
		               kp_db_column_text(st, 0), terminal, at);
	}
	kp_db_finalize(st);
	return rc;
}

/* The session's journal row: found, or made as the terminal's next epoch. */
static int journal_row(kp_bstore *s, struct kp_bsession *ses, int64_t now_ms)
{
	kp_db_stmt *st = NULL;
	int rc = bs_run(s, "journal", "INSERT INTO journals(terminal, journal, epoch, first_seen,"
	                " last_seen) VALUES (?1, ?2, (SELECT coalesce(max(epoch), 0) + 1 FROM"
	                " journals WHERE terminal = ?1), ?3, ?3) ON CONFLICT(terminal, journal)"
	                " DO NOTHING", BS_TEXT(ses->terminal), BS_JOURNAL(ses->journal),
	                BS_INT(now_ms));

	if (rc != KP_BE_OK)
		return rc;
	ses->new_journal = kp_db_changes(s->db) == 1;
	rc = bs_query(s, &st, "UPDATE journals SET last_seen = " BS_GREATER("last_seen", "?3")
	              " WHERE terminal = ?1 AND journal = ?2 RETURNING epoch, acked, last_hash",
	              BS_TEXT(ses->terminal), BS_JOURNAL(ses->journal), BS_INT(now_ms));
	if (rc != KP_BE_OK)
		return rc;
	if (!journal_fields(st, ses))
		rc = bs_fail(s, "journal head");
	kp_db_finalize(st);
	return rc;
}

/* With the hello's transaction open: KP_BE_OK if terminal is registered and not retired,
 * else KP_BE_E_UNREGISTERED and why in s->err. */
static int registered_check(kp_bstore *s, const char *terminal)
{
	kp_db_stmt *st = NULL;
	int rc = bs_query(s, &st, "SELECT status FROM terminal_registry WHERE id = ?1",
	                  BS_TEXT(terminal));

	if (rc != KP_BE_OK)
		return rc;
	switch (kp_db_step(st)) {
	case KP_DB_ROW:
		if (strcmp(kp_db_column_text(st, 0), "active") != 0) {
			snprintf(s->err, sizeof(s->err), "retired at this backend");
			rc = KP_BE_E_UNREGISTERED;
		}
		break;
	case KP_DB_DONE:
		snprintf(s->err, sizeof(s->err), "not registered at this backend");
		rc = KP_BE_E_UNREGISTERED;
		break;
	default:
		rc = bs_fail(s, "terminal registry");
	}
	kp_db_finalize(st);
	return rc;
}

int kp_bstore_hello(kp_bstore *s, struct kp_bsession *ses, const char *terminal,
                    const uint8_t *journal, const uint8_t *cert_der, size_t cert_len,
                    int64_t now_ms)
{
	return kp_bstore_hello_last(s, ses, terminal, journal, NULL, cert_der, cert_len, now_ms);
}

int kp_bstore_hello_last(kp_bstore *s, struct kp_bsession *ses, const char *terminal,
                         const uint8_t *journal, const uint64_t *last, const uint8_t *cert_der,
                         size_t cert_len, int64_t now_ms)
{
	int rc;

	if (session_init(ses, terminal, journal) != KP_BE_OK || cert_der == NULL ||
	    cert_len == 0 || (last != NULL && *last > INT64_MAX))
		return KP_BE_E_INVAL;
	rc = bs_begin(s, KP_DB_TXN_WRITE);
	if (rc != KP_BE_OK)
		return rc;
	/* in the same transaction as what it guards: a retire is never half seen */
	rc = registered_check(s, terminal);
	if (rc == KP_BE_OK)
		rc = revoked_check(s, terminal, cert_der, cert_len, now_ms);
	if (rc != KP_BE_OK) {
		bs_rollback(s);
		return rc;
	}
	/* terminals.cert: the certificate of the last connection; the history has them all */
	rc = bs_run(s, "terminal", "INSERT INTO terminals(id, cert, first_seen, last_seen,"
	            " hello_journal, hello_last) VALUES (?1, ?2, ?3, ?3, ?4, ?5) ON CONFLICT(id)"
	            " DO UPDATE SET cert = excluded.cert, last_seen = excluded.last_seen,"
	            " hello_journal = excluded.hello_journal,"
	            " hello_last = excluded.hello_last",
	            BS_TEXT(terminal), BS_BLOB(cert_der, cert_len), BS_INT(now_ms),
	            BS_JOURNAL(ses->journal), BS_INT_IF(last != NULL, last != NULL ? *last : 0));
	if (rc == KP_BE_OK)
		rc = cert_row(s, ses, cert_der, cert_len, now_ms);
	if (rc == KP_BE_OK)
		rc = journal_row(s, ses, now_ms);
	return bs_end(s, rc, 0);
}

int kp_bstore_terminal_seen(kp_bstore *s, const char *terminal, const uint8_t *cert_der,
                            size_t cert_len, int64_t now_ms, uint64_t *acked)
{
	struct kp_bsession ses;
	int rc = kp_bstore_hello(s, &ses, terminal, NULL, cert_der, cert_len, now_ms);

	if (rc == KP_BE_OK)
		*acked = ses.acked;
	return rc;
}

/* The session of a terminal's journal as it stands, with its newest certificate (for
 * callers of the legacy-journal functions, which have no connection). */
int bs_session_of(kp_bstore *s, struct kp_bsession *ses, const char *terminal,
                  const uint8_t *journal)
{
	kp_db_stmt *st = NULL;
	int rc;

	if (session_init(ses, terminal, journal) != KP_BE_OK)
		return KP_BE_E_INVAL;
	rc = bs_query(s, &st, "SELECT j.epoch, j.acked, j.last_hash, (SELECT max(c.id) FROM"
	              " terminal_certs c WHERE c.terminal = j.terminal) FROM journals j"
	              " WHERE j.terminal = ?1 AND j.journal = ?2",
	              BS_TEXT(terminal), BS_JOURNAL(ses->journal));
	if (rc != KP_BE_OK)
		return rc;
	if (journal_fields(st, ses)) {
		ses->cert_id = kp_db_column_int64(st, 3);
	} else {
		snprintf(s->err, sizeof(s->err), "unknown terminal or journal: %s", terminal);
		rc = KP_BE_E_NOTFOUND;
	}
	kp_db_finalize(st);
	return rc;
}

int kp_bstore_state_at_least(kp_bstore *s, uint64_t have, int *raised, uint64_t *was)
{
	uint64_t v = 0;
	int rc;

	*raised = 0;
	*was = 0;
	if (have > (UINT64_C(1) << 53)) {
		snprintf(s->err, sizeof(s->err), "config version %llu is beyond any this backend "
		         "makes", (unsigned long long)have);
		return KP_BE_E_INVAL;
	}
	/* the common case, a terminal at or below the backend's version, takes no write lock */
	rc = kp_bstore_state_version(s, &v);
	if (rc != KP_BE_OK || have <= v)
		return rc;
	rc = bs_begin(s, KP_DB_TXN_WRITE);
	if (rc != KP_BE_OK)
		return rc;
	rc = kp_bstore_state_version(s, &v);
	if (rc == KP_BE_OK && have > v) {
		rc = bs_run(s, "state version", "UPDATE meta SET value = ?1"
		            " WHERE key = 'state_version'", BS_INT(have + 1 > bs_version_clock_ms() ?
		            have + 1 : bs_version_clock_ms()));
		if (rc == KP_BE_OK)
			rc = bs_version_mark(s);
		*raised = rc == KP_BE_OK;
		*was = v;
	}
	if (rc == KP_BE_OK)
		rc = bs_commit(s);
	if (rc != KP_BE_OK) {
		bs_rollback(s);
		*raised = 0;
	}
	return rc;
}

int bs_quarantine(kp_bstore *s, const char *terminal, uint64_t seq, const char *reason,
                  const struct kp_ingest *r, int64_t now_ms)
{
	int rc = bs_run(s, "quarantine", "INSERT INTO quarantine(terminal, seq, reason, cose, at)"
	                " VALUES (?1, ?2, ?3, ?4, ?5)", BS_TEXT(terminal), BS_INT(seq),
	                BS_TEXT(reason), BS_BLOB(r != NULL ? r->cose : NULL,
	                                         r != NULL ? r->cose_len : 0), BS_INT(now_ms));

	if (rc != KP_BE_OK)
		return rc;
	return bs_run(s, "quarantine flag", "UPDATE terminals SET quarantined = 1 WHERE id = ?1",
	              BS_TEXT(terminal));
}

/* 1 if the journal holds this record under its seq (stored, or an alias of another
 * epoch's), judged by the payload's hash; 0 if another. */
int bs_same_as_stored(kp_bstore *s, const struct kp_bsession *ses, const struct kp_ingest *r,
                      int *same)
{
	kp_db_stmt *st = NULL;
	int rc = bs_query(s, &st, "SELECT hash FROM records WHERE terminal = ?1 AND seq = ?3 AND"
	                  " journal = coalesce((SELECT of_journal FROM record_aliases a WHERE"
	                  " a.terminal = ?1 AND a.journal = ?2 AND a.seq = ?3), ?2)",
	                  BS_TEXT(ses->terminal), BS_JOURNAL(ses->journal), BS_INT(r->rec.seq));

	if (rc != KP_BE_OK)
		return rc;
	*same = 0;
	if (kp_db_step(st) == KP_DB_ROW)
		*same = kp_db_column_bytes(st, 0) == KP_SHA256_LEN &&
		        memcmp(kp_db_column_blob(st, 0), r->hash, KP_SHA256_LEN) == 0;
	kp_db_finalize(st);
	return KP_BE_OK;
}

/* The record another epoch of the terminal holds under this seq with this payload hash
 * (the same history up to it): *found = 1 and the alias made. */
int bs_alias_of_held(kp_bstore *s, const struct kp_bsession *ses, const struct kp_ingest *r,
                     int64_t now_ms, int *found)
{
	int rc;

	*found = 0;
	rc = bs_run(s, "record alias", "INSERT INTO record_aliases(terminal, journal, seq,"
	            " of_journal, received_ms) SELECT terminal, ?2, seq, journal, ?5 FROM records"
	            " INDEXED BY records_seq"   /* not the PK's (terminal): a scan */
	            " WHERE terminal = ?1 AND seq = ?3 AND hash = ?4 AND journal <> ?2 LIMIT 1",
	            BS_TEXT(ses->terminal), BS_JOURNAL(ses->journal), BS_INT(r->rec.seq),
	            BS_BLOB(r->hash, KP_SHA256_LEN), BS_INT(now_ms));
	if (rc == KP_BE_OK)
		*found = kp_db_changes(s->db) == 1;
	return rc;
}
