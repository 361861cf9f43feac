/* SPDX-License-Identifier: Apache-2.0 */
/* The backend store: certificates over time (PROTOCOL.md section 4.3). Every certificate a
 * terminal has said hello with is kept with its fingerprint, validity and revocation; a
 * record is verified with the key that was valid for it, at ingest and by the auditor. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <sqlite3.h>

#include "bstore_int.h"

/* ---- SQL functions on the DER of a certificate (migration 9, the hello) ---- */

/* The facts the store keeps of a certificate's DER (both engines: computed here, bound
 * into the INSERT): its SHA-256 fingerprint in hex, and its validity in ms (*valid 0: DER
 * that is no certificate). */
void bs_cert_facts(const uint8_t *der, size_t len, char fp[2 * KP_SHA256_LEN + 1],
                   int64_t *not_before, int64_t *not_after, int *valid)
{
	uint8_t h[KP_SHA256_LEN];
	kp_cert *cert = NULL;
	int64_t nb = 0, na = 0;

	kp_sha256(der, len, h);
	for (size_t i = 0; i < sizeof(h); i++)
		snprintf(fp + 2 * i, 3, "%02x", h[i]);
	*valid = len > 0 && kp_cert_parse(&cert, der, len) == 0 &&
	         kp_cert_validity(cert, &nb, &na) == 0;
	kp_cert_free(cert);
	*not_before = nb * 1000;
	*not_after = na * 1000;
}

/* ---- SQL functions on the DER of a certificate (SQLite's migration 9) ---- */

static void fn_fingerprint(sqlite3_context *ctx, int argc, sqlite3_value **argv)
{
	const uint8_t *der = sqlite3_value_blob(argv[0]);
	int len = sqlite3_value_bytes(argv[0]);
	char hex[2 * KP_SHA256_LEN + 1];
	int64_t nb, na;
	int valid;

	(void)argc;
	if (der == NULL || len <= 0) {
		sqlite3_result_null(ctx);
		return;
	}
	bs_cert_facts(der, (size_t)len, hex, &nb, &na, &valid);
	sqlite3_result_text(ctx, hex, -1, SQLITE_TRANSIENT);
}

/* notBefore (user data 0) or notAfter (1) in ms; NULL for DER that is no certificate. */
static void fn_validity(sqlite3_context *ctx, int argc, sqlite3_value **argv)
{
	const uint8_t *der = sqlite3_value_blob(argv[0]);
	int len = sqlite3_value_bytes(argv[0]);
	char hex[2 * KP_SHA256_LEN + 1];
	int64_t nb = 0, na = 0;
	int valid = 0;

	(void)argc;
	if (der != NULL && len > 0)
		bs_cert_facts(der, (size_t)len, hex, &nb, &na, &valid);
	if (!valid)
		sqlite3_result_null(ctx);
	else
		sqlite3_result_int64(ctx, sqlite3_user_data(ctx) != NULL ? na : nb);
}

/* SQLite only (a handle to register them on); PostgreSQL has none (KP_BE_OK). */
int bs_cert_functions(kp_db *kdb)
{
	static int after = 1;
	sqlite3 *db = kp_db_sqlite_handle(kdb);
	int flags = SQLITE_UTF8 | SQLITE_DETERMINISTIC;
	int rc;

	if (db == NULL)
		return KP_BE_OK;
	rc = sqlite3_create_function(db, "kp_cert_fingerprint", 1, flags, NULL, fn_fingerprint,
	                             NULL, NULL);

	if (rc == SQLITE_OK)
		rc = sqlite3_create_function(db, "kp_cert_not_before", 1, flags, NULL, fn_validity,
		                             NULL, NULL);
	if (rc == SQLITE_OK)
		rc = sqlite3_create_function(db, "kp_cert_not_after", 1, flags, &after, fn_validity,
		                             NULL, NULL);
	return rc == SQLITE_OK ? KP_BE_OK : KP_BE_E_DB;
}

/* ---- the history ---- */

void kp_cert_history_free(struct kp_cert_history *h)
{
	for (size_t i = 0; i < h->n; i++)
		kp_cert_free(h->e[i].cert);
	free(h->e);
	memset(h, 0, sizeof(*h));
	h->first_revoked = INT64_MAX;
}

int kp_bstore_cert_history(kp_bstore *s, const char *terminal, struct kp_cert_history *h)
{
	kp_db_stmt *st = NULL;
	size_t cap = 0;
	int rc, step;

	memset(h, 0, sizeof(*h));
	h->first_revoked = INT64_MAX;
	/* newest first: after the connection's own, the likeliest signer of an old record */
	rc = bs_query(s, &st, "SELECT id, cert, not_before, not_after, revoked_at, fingerprint"
	              " FROM terminal_certs WHERE terminal = ?1 ORDER BY id DESC",
	              BS_TEXT(terminal));
	if (rc != KP_BE_OK)
		return rc;
	while ((step = kp_db_step(st)) == KP_DB_ROW) {
		struct kp_cert_entry *e;

		if (h->n == cap) {
			size_t ncap = cap ? 2 * cap : 4;
			struct kp_cert_entry *ne = realloc(h->e, ncap * sizeof(*ne));

			if (ne == NULL) {
				rc = KP_BE_E_NOMEM;
				break;
			}
			h->e = ne;
			cap = ncap;
		}
		e = &h->e[h->n];
		memset(e, 0, sizeof(*e));
		/* a row that does not parse is no key: it verifies nothing */
		if (kp_cert_parse(&e->cert, kp_db_column_blob(st, 1),
		                  (size_t)kp_db_column_bytes(st, 1)) != 0)
			continue;
		e->id = kp_db_column_int64(st, 0);
		e->not_before = kp_db_column_int64(st, 2);
		e->not_after = kp_db_column_int64(st, 3);
		e->revoked_at = kp_db_column_type(st, 4) == KP_DB_NULL ? INT64_MAX :
		                kp_db_column_int64(st, 4);
		bs_copy_text(e->fingerprint, sizeof(e->fingerprint), kp_db_column_text(st, 5));
		if (kp_db_column_is_null(st, 2) || kp_db_column_is_null(st, 5)) {
			/* a row from before these columns were filled */
			char fp[2 * KP_SHA256_LEN + 1];
			int valid;

			bs_cert_facts(kp_db_column_blob(st, 1), kp_db_column_bytes(st, 1), fp,
			              &e->not_before, &e->not_after, &valid);
			bs_copy_text(e->fingerprint, sizeof(e->fingerprint), fp);
		}
		if (e->revoked_at < h->first_revoked)
			h->first_revoked = e->revoked_at;
		h->n++;
	}
	if (rc == KP_BE_OK && step != KP_DB_DONE)
		rc = bs_fail(s, "certificate history");
	kp_db_finalize(st);
	if (rc != KP_BE_OK)
		kp_cert_history_free(h);
	return rc;
}

void bs_iso_time(char *out, size_t cap, int64_t ms)
{
	time_t t = (time_t)kp_floor_div(ms, 1000);
	struct tm tm;

	if (gmtime_r(&t, &tm) == NULL || strftime(out, cap, "%Y-%m-%dT%H:%M:%SZ", &tm) == 0)
		snprintf(out, cap, "%lld ms", (long long)ms);
}

/* 1 if e's key verifies the record, 0 if not; a revoked one is told in why. */
static int try_cert(const struct kp_cert_entry *e, const uint8_t *cose, size_t cose_len,
                    int64_t time_ms, int64_t *signer, char *why, size_t cap, int *revoked)
{
	const uint8_t *payload = NULL;
	size_t payload_len = 0;
	char at[32], when[32];

	if (kp_cose_verify1(e->cert, cose, cose_len, &payload, &payload_len, NULL, 0) != 0)
		return 0;
	if (e->revoked_at <= time_ms) {
		bs_iso_time(at, sizeof(at), e->revoked_at);
		bs_iso_time(when, sizeof(when), time_ms);
		snprintf(why, cap, "signed with certificate %.16s revoked at %s, record of %s",
		         e->fingerprint, at, when);
		*revoked = 1;
		return 1;
	}
	*signer = e->id;
	return 1;
}

int kp_cert_history_verify(const struct kp_cert_history *h, int64_t first_id,
                           const uint8_t *cose, size_t cose_len, int64_t time_ms,
                           int64_t *signer, char *why, size_t cap)
{
	int revoked = 0;

	*signer = 0;
	why[0] = '\0';
	/* a certificate revoked before the record verifies it only if no other one does (a
	 * renewal may have kept the key) */
	for (size_t i = 0; i < h->n; i++) {
		if (h->e[i].id == first_id &&
		    try_cert(&h->e[i], cose, cose_len, time_ms, signer, why, cap, &revoked) &&
		    *signer != 0)
			return 0;
	}
	for (size_t i = 0; i < h->n; i++) {
		const struct kp_cert_entry *e = &h->e[i];

		if (e->id == first_id || time_ms < e->not_before || time_ms > e->not_after)
			continue;
		if (try_cert(e, cose, cose_len, time_ms, signer, why, cap, &revoked) && *signer != 0)
			return 0;
	}
	if (!revoked)
		snprintf(why, cap, "bad signature");
	return -1;
}

/* ---- revocation ---- */

int kp_bstore_cert_revoke(kp_bstore *s, const char *terminal, const char *fp, int64_t at_ms,
                          int64_t now_ms, int64_t *was_at)
{
	kp_db_stmt *st = NULL;
	int64_t known = 0;
	int rc;

	*was_at = 0;
	rc = bs_begin(s, KP_DB_TXN_WRITE);
	if (rc == KP_BE_OK)
		rc = bs_query_int(s, 0, &known, "SELECT (SELECT count(*) FROM terminal_registry"
		                  " WHERE id = ?1) + (SELECT count(*) FROM terminals WHERE id = ?1)",
		                  BS_TEXT(terminal));
	if (rc == KP_BE_OK && known == 0)
		rc = bs_refuse(s, KP_BE_E_NOTFOUND, "terminal %s is not known to this backend",
		               terminal);
	if (rc == KP_BE_OK)
		rc = bs_query(s, &st, "SELECT id, revoked_at FROM terminal_certs WHERE terminal = ?1"
		              " AND fingerprint = ?2", BS_TEXT(terminal), BS_TEXT(fp));
	if (rc == KP_BE_OK) {
		if (kp_db_step(st) != KP_DB_ROW)
			rc = bs_refuse(s, KP_BE_E_NOTFOUND, "terminal %s has no certificate with "
			               "fingerprint %s (kippuctl backend cert list shows its "
			               "certificates)", terminal, fp);
		else if (kp_db_column_type(st, 1) != KP_DB_NULL)
			*was_at = kp_db_column_int64(st, 1);
		kp_db_finalize(st);
	}
	if (rc == KP_BE_OK && *was_at == 0)
		rc = bs_run(s, "revoke", "UPDATE terminal_certs SET revoked_at = ?3,"
		            " revoked_recorded = ?4 WHERE terminal = ?1 AND fingerprint = ?2",
		            BS_TEXT(terminal), BS_TEXT(fp), BS_INT(at_ms), BS_INT(now_ms));
	return bs_end(s, rc, 0);
}
