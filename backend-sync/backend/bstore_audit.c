/* SPDX-License-Identifier: Apache-2.0 */
/* The auditor (PROTOCOL.md section 4.2): every record whose own signature was not verified at
 * ingest (audit_pending) is verified later, with the key that was valid for it (section
 * 4.3: the certificate of the connection it came in on first, then the terminal's others
 * valid at the record's time); one that fails quarantines its terminal and is reported.
 * Signatures are checked outside any transaction; only the short bookkeeping writes. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "bstore_int.h"
#include "kp_sys.h"

struct pending {
	char terminal[KP_ID_MAX + 1];
	uint8_t journal[KP_JOURNAL_ID_LEN];
	int64_t seq, time_ms;
	int64_t cert_id;                 /* the connection's (0: none known) */
	uint8_t *cose;
	size_t cose_len;
	int ok;
	int64_t signer;                  /* the certificate that verified it */
	char why[160];
};

static void free_pending(struct pending *p, size_t n)
{
	for (size_t i = 0; i < n; i++)
		free(p[i].cose);
	free(p);
}

static uint8_t *dup_col(kp_db_stmt *st, int col, size_t *len)
{
	const void *b = kp_db_column_blob(st, col);
	uint8_t *out;

	*len = (size_t)kp_db_column_bytes(st, col);
	out = malloc(*len > 0 ? *len : 1);
	if (out != NULL && *len > 0)
		memcpy(out, b, *len);
	return out;
}

/* Up to max pending records, a terminal's together, with their COSE bytes, time and the
 * certificate they came in with (else the terminal's newest). */
static int load_pending(kp_bstore *s, int max, struct pending **out, size_t *n)
{
	kp_db_stmt *st = NULL;
	struct pending *p = calloc((size_t)max, sizeof(*p));
	int rc;

	*out = NULL;
	*n = 0;
	if (p == NULL)
		return KP_BE_E_NOMEM;
	rc = bs_query(s, &st, "SELECT p.terminal, p.journal, p.seq, r.cose, coalesce(r.cert_id,"
	              " (SELECT k.id FROM terminal_certs k WHERE k.terminal = p.terminal"
	              " ORDER BY k.last_seen DESC LIMIT 1), 0), r.time_ms FROM audit_pending p"
	              " JOIN records r ON r.terminal = p.terminal AND r.journal = p.journal"
	              " AND r.seq = p.seq ORDER BY p.terminal LIMIT ?1", BS_INT(max));
	if (rc != KP_BE_OK) {
		free(p);
		return rc;
	}
	while (*n < (size_t)max && kp_db_step(st) == KP_DB_ROW) {
		struct pending *e = &p[*n];

		snprintf(e->terminal, sizeof(e->terminal), "%s",
		         kp_db_column_text(st, 0));
		if (kp_db_column_bytes(st, 1) == KP_JOURNAL_ID_LEN)
			memcpy(e->journal, kp_db_column_blob(st, 1), KP_JOURNAL_ID_LEN);
		e->seq = kp_db_column_int64(st, 2);
		e->cose = dup_col(st, 3, &e->cose_len);
		e->cert_id = kp_db_column_int64(st, 4);
		e->time_ms = kp_db_column_int64(st, 5);
		(*n)++;
		if (e->cose == NULL) {
			rc = KP_BE_E_NOMEM;
			break;
		}
	}
	kp_db_finalize(st);
	if (rc != KP_BE_OK) {
		free_pending(p, *n);
		*n = 0;
		return rc;
	}
	*out = p;
	return KP_BE_OK;
}

/* Each record with its terminal's certificate history (read once per terminal: load_pending
 * puts a terminal's records together). */
static int verify_all(kp_bstore *s, struct pending *p, size_t n, uint64_t *failed)
{
	struct kp_cert_history h = { NULL, 0, INT64_MAX };
	const char *of = NULL;
	int rc = KP_BE_OK;

	for (size_t i = 0; i < n && rc == KP_BE_OK; i++) {
		if (of == NULL || strcmp(of, p[i].terminal) != 0) {
			kp_cert_history_free(&h);
			rc = kp_bstore_cert_history(s, p[i].terminal, &h);
			of = p[i].terminal;
		}
		if (rc == KP_BE_OK)
			p[i].ok = kp_cert_history_verify(&h, p[i].cert_id, p[i].cose, p[i].cose_len,
			                                 p[i].time_ms, &p[i].signer, p[i].why,
			                                 sizeof(p[i].why)) == 0;
		*failed += rc == KP_BE_OK && !p[i].ok;
	}
	kp_cert_history_free(&h);
	return rc;
}

/* The verdicts in one transaction: pending rows gone, failures quarantined. */
static int settle(kp_bstore *s, const struct pending *p, size_t n, int64_t now_ms)
{
	int rc = bs_begin(s, KP_DB_TXN_WRITE);

	for (size_t i = 0; rc == KP_BE_OK && i < n; i++) {
		struct kp_ingest r = { .cose = p[i].cose, .cose_len = p[i].cose_len };
		char reason[256];

		rc = bs_run(s, "audit", "DELETE FROM audit_pending WHERE terminal = ?1 AND"
		            " journal = ?2 AND seq = ?3", BS_TEXT(p[i].terminal),
		            BS_JOURNAL(p[i].journal), BS_INT(p[i].seq));
		if (rc == KP_BE_OK && p[i].ok && p[i].signer != p[i].cert_id)
			rc = bs_run(s, "record signer", "INSERT INTO record_signers(terminal, journal,"
			            " seq, cert_id) VALUES (?1, ?2, ?3, ?4) ON CONFLICT(terminal,"
			            " journal, seq) DO UPDATE SET cert_id = excluded.cert_id",
			            BS_TEXT(p[i].terminal), BS_JOURNAL(p[i].journal), BS_INT(p[i].seq),
			            BS_INT(p[i].signer));
		if (rc != KP_BE_OK || p[i].ok)
			continue;
		snprintf(reason, sizeof(reason), "record %lld: %s (found by the auditor)",
		         (long long)p[i].seq, p[i].why);
		rc = bs_quarantine(s, p[i].terminal, (uint64_t)p[i].seq, reason, &r, now_ms);
	}
	if (rc == KP_BE_OK)
		rc = bs_commit(s);
	if (rc != KP_BE_OK) {
		bs_rollback(s);
		return rc;
	}
	for (size_t i = 0; i < n; i++) {       /* told once it is held */
		if (!p[i].ok)
			kp_log(LOG_ERR, "terminal %s quarantined: record %lld: %s (found by the "
			       "auditor)", p[i].terminal, (long long)p[i].seq, p[i].why);
	}
	return KP_BE_OK;
}

int kp_bstore_audit(kp_bstore *s, int max, int64_t now_ms, uint64_t *audited,
                    uint64_t *failed)
{
	return kp_bstore_audit_gated(s, max, now_ms, audited, failed, NULL, NULL);
}

int kp_bstore_audit_gated(kp_bstore *s, int max, int64_t now_ms, uint64_t *audited,
                          uint64_t *failed, void (*gate)(void *arg, int enter), void *arg)
{
	struct pending *p = NULL;
	size_t n = 0;
	int rc = load_pending(s, max > 0 ? max : 1, &p, &n);

	*audited = 0;
	*failed = 0;
	if (rc != KP_BE_OK || n == 0) {
		free_pending(p, n);            /* nothing pending: the empty array still goes */
		return rc;
	}
	rc = verify_all(s, p, n, failed);
	if (rc != KP_BE_OK) {
		*failed = 0;
		free_pending(p, n);
		return rc;
	}
	if (gate != NULL)
		gate(arg, 1);
	s->db->err_rc = KP_DB_OK;                /* no earlier failure counts as this one's */
	for (int attempt = 0; attempt == 0 || bs_retry(s, rc, attempt); attempt++)
		rc = settle(s, p, n, now_ms);
	if (gate != NULL)
		gate(arg, 0);
	if (rc == KP_BE_OK)
		*audited = n;
	else
		*failed = 0;
	free_pending(p, n);
	return rc;
}

int kp_bstore_audit_lag(kp_bstore *s, uint64_t *lag)
{
	int64_t n = 0;
	int rc = bs_query_int(s, 0, &n, "SELECT count(*) FROM audit_pending WHERE ?1 = 1",
	                      BS_INT(1));

	*lag = (uint64_t)n;
	return rc;
}
