/* SPDX-License-Identifier: Apache-2.0 */
/* The backend store: reports, the export walk, a record's COSE bytes. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "bstore_int.h"

/* ---- reports ---- */

int kp_bstore_report(kp_bstore *s, enum kp_report which, const char *terminal_filter,
                     int (*fn)(void *arg, int ncol, const char *const *cols,
                               const char *const *names), void *arg)
{
	struct timespec ts;

	clock_gettime(CLOCK_REALTIME, &ts);
	return kp_bstore_report_at(s, which, terminal_filter,
	                           (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000, fn, arg);
}

int kp_bstore_report_at(kp_bstore *s, enum kp_report which, const char *terminal_filter,
                        int64_t at_ms, int (*fn)(void *arg, int ncol, const char *const *cols,
                                                 const char *const *names), void *arg)
{
	static const char *const sql[] = {
		[KP_REPORT_RECORDS] =
			"SELECT terminal, seq, strftime('%Y-%m-%dT%H:%M:%SZ', time_ms / 1000, 'unixepoch')"
			" AS time, result, reason, operator, coalesce(product, '-') AS product,"
			" coalesce(ent_id, '-') AS ent, rides, coalesce(left_after, '-') AS left,"
			" kind, coalesce(nullif(hex(via), ''), '-') AS via, coalesce(category, '-') AS category"
			" FROM records r WHERE ?1 IS NULL OR terminal = ?1 ORDER BY terminal,"
			" (SELECT epoch FROM journals j WHERE j.terminal = r.terminal AND"
			" j.journal = r.journal), seq",
		[KP_REPORT_LEDGER] =
			"SELECT operator, sum(result = 'accepted') AS accepted,"
			" sum(result = 'refused') AS refused, sum(result = 'already') AS already,"
			" sum(rides) AS rides, sum(amount) AS amount FROM records"
			" WHERE ?1 IS NULL OR terminal = ?1 GROUP BY operator ORDER BY operator",
		[KP_REPORT_QUARANTINE] =
			"SELECT terminal, seq, reason, strftime('%Y-%m-%dT%H:%M:%SZ', at / 1000,"
			" 'unixepoch') AS at, CASE WHEN cleared IS NULL THEN 'open' ELSE 'cleared' END"
			" AS state FROM quarantine WHERE ?1 IS NULL OR terminal = ?1 ORDER BY id",
		[KP_REPORT_OVERDRAFTS] =
			"SELECT id AS ent, hex(token) AS token, product_id AS product, bought, used"
			" FROM entitlements WHERE used > bought"
			" ORDER BY id",
		[KP_REPORT_TERMINALS] =
			"SELECT ids.id AS terminal, coalesce(j.acked, 0) AS acked,"
			" coalesce(strftime('%Y-%m-%dT%H:%M:%SZ', t.last_seen / 1000, 'unixepoch'),"
			" 'never') AS last_seen, coalesce(t.quarantined, 0) AS quarantined,"
			" coalesce(j.epoch, '-') AS epoch,"
			" (SELECT count(*) FROM terminal_certs c WHERE c.terminal = ids.id) AS certs,"
			" coalesce(g.status, 'unregistered') AS status, g.operator AS operator,"
			" strftime('%Y-%m-%dT%H:%M:%SZ', g.registered / 1000, 'unixepoch') AS registered,"
			" strftime('%Y-%m-%dT%H:%M:%SZ', g.retired / 1000, 'unixepoch') AS retired,"
			" CASE WHEN t.hello_last IS NOT NULL THEN max(t.hello_last - coalesce(h.acked, 0),"
			" 0) END AS unsent"
			" FROM (SELECT id FROM terminal_registry UNION SELECT id FROM terminals) ids"
			" LEFT JOIN terminals t ON t.id = ids.id"
			" LEFT JOIN terminal_registry g ON g.id = ids.id"
			" LEFT JOIN journals h ON h.terminal = ids.id AND h.journal = t.hello_journal"
			" LEFT JOIN journals j ON j.terminal = ids.id AND j.epoch ="
			" (SELECT max(epoch) FROM journals k WHERE k.terminal = ids.id)"
			" WHERE ?1 IS NULL OR ids.id = ?1 ORDER BY ids.id",
		[KP_REPORT_JOURNALS] =
			"SELECT terminal, epoch, lower(hex(journal)) AS journal, acked,"
			" (SELECT count(*) FROM records r WHERE r.terminal = j.terminal AND"
			" r.journal = j.journal) AS records,"
			" (SELECT count(*) FROM record_aliases a WHERE a.terminal = j.terminal AND"
			" a.journal = j.journal) AS held_before,"
			" strftime('%Y-%m-%dT%H:%M:%SZ', first_seen / 1000, 'unixepoch') AS first_seen,"
			" strftime('%Y-%m-%dT%H:%M:%SZ', last_seen / 1000, 'unixepoch') AS last_seen"
			" FROM journals j WHERE ?1 IS NULL OR terminal = ?1 ORDER BY terminal, epoch",
		[KP_REPORT_CERTS] =
			"SELECT terminal, id AS cert, fingerprint,"
			" strftime('%Y-%m-%dT%H:%M:%SZ', not_before / 1000, 'unixepoch') AS not_before,"
			" strftime('%Y-%m-%dT%H:%M:%SZ', not_after / 1000, 'unixepoch') AS not_after,"
			" strftime('%Y-%m-%dT%H:%M:%SZ', first_seen / 1000, 'unixepoch') AS first_seen,"
			" strftime('%Y-%m-%dT%H:%M:%SZ', last_seen / 1000, 'unixepoch') AS last_seen,"
			" strftime('%Y-%m-%dT%H:%M:%SZ', revoked_at / 1000, 'unixepoch') AS revoked,"
			" (SELECT count(*) FROM records r LEFT JOIN record_signers g"
			"  ON g.terminal = r.terminal AND g.journal = r.journal AND g.seq = r.seq"
			"  WHERE r.terminal = c.terminal AND coalesce(g.cert_id, r.cert_id) = c.id)"
			" AS records"
			" FROM terminal_certs c WHERE ?1 IS NULL OR terminal = ?1 ORDER BY terminal, id",
		[KP_REPORT_ENTITLEMENTS] =
			"SELECT id AS ent, hex(token) AS token, product_id AS product, bought, used,"
			" max(bought - used, 0) AS remaining,"
			" strftime('%Y-%m-%dT%H:%MZ', valid_from / 1000, 'unixepoch') AS valid_from,"
			" strftime('%Y-%m-%dT%H:%MZ', valid_until / 1000, 'unixepoch') AS valid_until"
			" FROM entitlements"
			" ORDER BY id",
		[KP_REPORT_LINKAGES] =
			"SELECT hex(token) AS token, category,"
			" strftime('%Y-%m-%dT%H:%MZ', valid_from / 1000, 'unixepoch') AS valid_from,"
			" strftime('%Y-%m-%dT%H:%MZ', valid_until / 1000, 'unixepoch') AS valid_until,"
			" CASE WHEN status = 'revoked' THEN 'revoked'"
			"  WHEN valid_until <= ?2 THEN 'expired' WHEN valid_from > ?2 THEN 'not yet'"
			"  ELSE 'active' END AS status,"
			" (SELECT count(*) FROM linkage_cards c WHERE c.linkage = l.token) AS cards"
			" FROM linkages l ORDER BY category, token",
		[KP_REPORT_LINKAGE_CARDS] =
			"SELECT hex(linkage) AS linkage, hex(card) AS card,"
			" strftime('%Y-%m-%dT%H:%M:%SZ', linked / 1000, 'unixepoch') AS linked, source"
			" FROM linkage_cards ORDER BY linkage, card",
		[KP_REPORT_LINK_REQUESTS] =
			"SELECT terminal, seq, coalesce(nullif(hex(linkage), ''), '-') AS linkage,"
			" coalesce(nullif(hex(card), ''), '-') AS card, result, reason,"
			" strftime('%Y-%m-%dT%H:%M:%SZ', at / 1000, 'unixepoch') AS at"
			" FROM link_requests WHERE ?1 IS NULL OR terminal = ?1 ORDER BY id",
		[KP_REPORT_FEEDS] =
			"SELECT feed_id AS feed, rows, length(package) AS bytes,"
			" substr(hex(digest), 1, 16) AS digest, source,"
			" strftime('%Y-%m-%dT%H:%M:%SZ', imported / 1000, 'unixepoch') AS imported"
			" FROM fare_packages ORDER BY feed_id",
		[KP_REPORT_PRODUCTS] =
			"SELECT id AS product, product_kind AS kind, name,"
			" CASE WHEN product_kind = 'nride' THEN rides ELSE '-' END AS rides,"
			" coalesce(days, '-') AS days, coalesce(route, '-') AS route,"
			" coalesce(category, '-') AS category,"
			" (SELECT group_concat(operator_id, ',') FROM (SELECT operator_id FROM"
			"  product_operators po WHERE po.product_id = p.id ORDER BY operator_id) AS o) AS operators"
			" FROM products p ORDER BY id",
		[KP_REPORT_FARES] =
			"SELECT 'discount' AS what, operator_id || ' ' || category || ' ' || percent || '% '"
			" || CASE rounding WHEN 0 THEN 'down' WHEN 1 THEN 'up' ELSE 'nearest' END"
			" || ' ' || unit AS rule FROM discounts"
			" UNION ALL SELECT 'cap', CASE WHEN category = '' THEN '-' ELSE category END"
			" || ' ' || CASE period WHEN 0 THEN 'day' ELSE 'month' END || ' ' || amount"
			" FROM fare_caps"
			" UNION ALL SELECT 'transfer', from_operator || ' ' || to_operator || ' '"
			" || (within_s / 60) || ' ' || max_transfers || ' '"
			" || CASE WHEN off < 0 THEN 'free' ELSE 'off ' || off END FROM transfer_rules"
			" UNION ALL SELECT 'fares', operator_id || ' ' || feed_id || ' '"
			" || CASE distance WHEN 1 THEN 'distance' ELSE 'flat' END FROM operator_fares",
		[KP_REPORT_OPERATORS] = "SELECT id AS operator, name FROM operators ORDER BY id",
		[KP_REPORT_CLONES] =
			"SELECT hex(linkage) AS linkage, kind, terminal_a || ':' || seq_a AS first,"
			" terminal_b || ':' || seq_b AS second, detail,"
			" strftime('%Y-%m-%dT%H:%M:%SZ', at / 1000, 'unixepoch') AS flagged,"
			" CASE WHEN cleared IS NOT NULL THEN 'cleared' WHEN suspended = 1 THEN 'suspended'"
			" ELSE 'reported' END AS state FROM clone_flags"
			" WHERE ?1 IS NULL OR terminal_a = ?1 OR terminal_b = ?1 ORDER BY id",
	};
	kp_db_stmt *st = NULL;
	int rc;

	if ((int)which < KP_REPORT_RECORDS || (int)which > KP_REPORT_CLONES)
		return KP_BE_E_INVAL;
	rc = bs_prep(s, &st, sql[which]);
	if (rc != KP_BE_OK)
		return rc;
	if (terminal_filter != NULL)
		kp_db_bind_text(st, 1, terminal_filter, SIZE_MAX);
	if (kp_db_param_count(st) >= 2)
		kp_db_bind_int64(st, 2, (int64_t)at_ms);
	while (kp_db_step(st) == KP_DB_ROW) {
		const char *cols[16], *names[16];
		int n = kp_db_column_count(st);

		if (n > 16)
			n = 16;
		for (int i = 0; i < n; i++) {
			cols[i] = kp_db_column_text(st, i);
			names[i] = kp_db_column_name(st, i);
		}
		if (fn(arg, n, cols, names) != 0)
			break;
	}
	kp_db_finalize(st);
	return KP_BE_OK;
}

int kp_bstore_export_walk(kp_bstore *s, const char *terminal,
                          int (*fn)(void *arg, const struct kp_export_row *row), void *arg)
{
	kp_db_stmt *st = NULL;
	/* the certificate that verified each record: the connection's, unless record_signers
	 * names another of the history (PROTOCOL.md section 4.3) */
	int rc = bs_prep(s, &st, "SELECT j.epoch, lower(hex(j.journal)), x.seq, r.cose,"
	                      " coalesce(g.cert_id, r.cert_id, 0), c.cert, x.alias FROM journals j"
	                      " JOIN (SELECT terminal, journal, seq, journal AS src, 0 AS alias"
	                      "  FROM records UNION ALL SELECT terminal, journal, seq, of_journal,"
	                      "  1 FROM record_aliases) x"
	                      "  ON x.terminal = j.terminal AND x.journal = j.journal"
	                      " JOIN records r ON r.terminal = x.terminal AND r.journal = x.src"
	                      "  AND r.seq = x.seq"
	                      " LEFT JOIN record_signers g ON g.terminal = r.terminal"
	                      "  AND g.journal = r.journal AND g.seq = r.seq"
	                      " LEFT JOIN terminal_certs c ON c.id = coalesce(g.cert_id, r.cert_id)"
	                      " WHERE j.terminal = ?1 ORDER BY j.epoch, x.seq");
	int step;

	if (rc != KP_BE_OK)
		return rc;
	kp_db_bind_text(st, 1, terminal, SIZE_MAX);
	while ((step = kp_db_step(st)) == KP_DB_ROW) {
		struct kp_export_row row;

		memset(&row, 0, sizeof(row));
		row.epoch = kp_db_column_int64(st, 0);
		bs_copy_text(row.journal, sizeof(row.journal), kp_db_column_text(st, 1));
		row.seq = (uint64_t)kp_db_column_int64(st, 2);
		row.cose = kp_db_column_blob(st, 3);
		row.cose_len = (size_t)kp_db_column_bytes(st, 3);
		row.cert_id = kp_db_column_int64(st, 4);
		row.cert = kp_db_column_blob(st, 5);
		row.cert_len = (size_t)kp_db_column_bytes(st, 5);
		row.alias = (int)kp_db_column_int64(st, 6);
		if (fn(arg, &row) != 0) {
			step = KP_DB_DONE;
			rc = KP_BE_E_INVAL;
			break;
		}
	}
	if (step != KP_DB_DONE)
		rc = bs_fail(s, "export");
	kp_db_finalize(st);
	return rc;
}

int kp_bstore_record_cose(kp_bstore *s, const char *terminal, uint64_t seq, uint8_t **out,
                          size_t *len)
{
	kp_db_stmt *st = NULL;
	int rc = bs_query(s, &st, "SELECT cose FROM records WHERE terminal = ?1 AND seq = ?2"
	                  " AND journal = ?3", BS_TEXT(terminal), BS_INT(seq),
	                  BS_JOURNAL(bs_legacy_journal));

	if (rc != KP_BE_OK)
		return rc;
	if (kp_db_step(st) == KP_DB_ROW) {
		*len = (size_t)kp_db_column_bytes(st, 0);
		*out = malloc(*len + 1);
		if (*out == NULL)
			rc = KP_BE_E_NOMEM;
		else
			memcpy(*out, kp_db_column_blob(st, 0), *len);
	} else {
		rc = KP_BE_E_NOTFOUND;
	}
	kp_db_finalize(st);
	return rc;
}
