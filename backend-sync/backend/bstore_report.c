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

/* The reports' SQL, once for both engines: what differs is how each writes a time
 * (ISO: seconds, ISOM: minutes, UTC), a blob in hex (HEX: upper case, '' for NULL; HEX_OR:
 * '-' for NULL or empty; LHEX: lower case) and a list joined by commas (CONCAT). */
#define REPORTS(ISO, ISOM, HEX, HEX_OR, LHEX, CONCAT) {                                            \
	[KP_REPORT_RECORDS] =                                                                      \
		"SELECT terminal, seq, " ISO("time_ms")                                            \
		" AS time, result, reason, operator, coalesce(product, '-') AS product,"           \
		" coalesce(CAST(ent_id AS text), '-') AS ent, rides,"                              \
		" coalesce(CAST(left_after AS text), '-') AS left,"                                \
		" kind, " HEX_OR("via") " AS via, coalesce(category, '-') AS category"             \
		" FROM records r WHERE CAST(?1 AS text) IS NULL OR terminal = ?1 ORDER BY terminal,"             \
		" (SELECT epoch FROM journals j WHERE j.terminal = r.terminal AND"                 \
		" j.journal = r.journal), seq",                                                    \
	[KP_REPORT_LEDGER] =                                                                       \
		"SELECT operator, sum(CASE WHEN result = 'accepted' THEN 1 ELSE 0 END) AS accepted," \
		" sum(CASE WHEN result = 'refused' THEN 1 ELSE 0 END) AS refused,"                 \
		" sum(CASE WHEN result = 'already' THEN 1 ELSE 0 END) AS already,"                 \
		" sum(rides) AS rides, sum(amount) AS amount FROM records"                         \
		" WHERE CAST(?1 AS text) IS NULL OR terminal = ?1 GROUP BY operator ORDER BY operator",          \
	[KP_REPORT_QUARANTINE] =                                                                   \
		"SELECT terminal, seq, reason, " ISO("at")                                         \
		" AS at, CASE WHEN cleared IS NULL THEN 'open' ELSE 'cleared' END"                 \
		" AS state FROM quarantine WHERE CAST(?1 AS text) IS NULL OR terminal = ?1 ORDER BY id",         \
	[KP_REPORT_OVERDRAFTS] =                                                                   \
		"SELECT id AS ent, " HEX("token") " AS token, product_id AS product, bought, used" \
		" FROM entitlements WHERE used > bought"                                           \
		" ORDER BY id",                                                                    \
	[KP_REPORT_TERMINALS] =                                                                    \
		"SELECT ids.id AS terminal, coalesce(j.acked, 0) AS acked,"                        \
		" coalesce(" ISO("t.last_seen") ","                                                \
		" 'never') AS last_seen, coalesce(t.quarantined, 0) AS quarantined,"               \
		" coalesce(CAST(j.epoch AS text), '-') AS epoch,"                                  \
		" (SELECT count(*) FROM terminal_certs c WHERE c.terminal = ids.id) AS certs,"     \
		" coalesce(g.status, 'unregistered') AS status, g.operator AS operator,"           \
		" " ISO("g.registered") " AS registered,"                                          \
		" " ISO("g.retired") " AS retired,"                                                \
		" CASE WHEN t.hello_last IS NOT NULL THEN"                                         \
		" " BS_GREATER("t.hello_last - coalesce(h.acked, 0)", "0")                         \
		" END AS unsent"                                                                   \
		" FROM (SELECT id FROM terminal_registry UNION SELECT id FROM terminals) ids"      \
		" LEFT JOIN terminals t ON t.id = ids.id"                                          \
		" LEFT JOIN terminal_registry g ON g.id = ids.id"                                  \
		" LEFT JOIN journals h ON h.terminal = ids.id AND h.journal = t.hello_journal"     \
		" LEFT JOIN journals j ON j.terminal = ids.id AND j.epoch ="                       \
		" (SELECT max(epoch) FROM journals k WHERE k.terminal = ids.id)"                   \
		" WHERE CAST(?1 AS text) IS NULL OR ids.id = ?1 ORDER BY ids.id",                                \
	[KP_REPORT_JOURNALS] =                                                                     \
		"SELECT terminal, epoch, " LHEX("journal") " AS journal, acked,"                   \
		" (SELECT count(*) FROM records r WHERE r.terminal = j.terminal AND"               \
		" r.journal = j.journal) AS records,"                                              \
		" (SELECT count(*) FROM record_aliases a WHERE a.terminal = j.terminal AND"        \
		" a.journal = j.journal) AS held_before,"                                          \
		" " ISO("first_seen") " AS first_seen,"                                            \
		" " ISO("last_seen") " AS last_seen"                                               \
		" FROM journals j WHERE CAST(?1 AS text) IS NULL OR terminal = ?1 ORDER BY terminal, epoch",     \
	[KP_REPORT_CERTS] =                                                                        \
		"SELECT terminal, id AS cert, fingerprint,"                                        \
		" " ISO("not_before") " AS not_before,"                                            \
		" " ISO("not_after") " AS not_after,"                                              \
		" " ISO("first_seen") " AS first_seen,"                                            \
		" " ISO("last_seen") " AS last_seen,"                                              \
		" " ISO("revoked_at") " AS revoked,"                                               \
		" (SELECT count(*) FROM records r LEFT JOIN record_signers g"                      \
		"  ON g.terminal = r.terminal AND g.journal = r.journal AND g.seq = r.seq"         \
		"  WHERE r.terminal = c.terminal AND coalesce(g.cert_id, r.cert_id) = c.id)"       \
		" AS records"                                                                      \
		" FROM terminal_certs c WHERE CAST(?1 AS text) IS NULL OR terminal = ?1 ORDER BY terminal, id",  \
	[KP_REPORT_ENTITLEMENTS] =                                                                 \
		"SELECT id AS ent, " HEX("token") " AS token, product_id AS product, bought, used," \
		" " BS_GREATER("bought - used", "0") " AS remaining,"                              \
		" " ISOM("valid_from") " AS valid_from,"                                           \
		" " ISOM("valid_until") " AS valid_until"                                          \
		" FROM entitlements"                                                               \
		" ORDER BY id",                                                                    \
	[KP_REPORT_LINKAGES] =                                                                     \
		"SELECT " HEX("token") " AS token, category,"                                      \
		" " ISOM("valid_from") " AS valid_from,"                                           \
		" " ISOM("valid_until") " AS valid_until,"                                         \
		" CASE WHEN status = 'revoked' THEN 'revoked'"                                     \
		"  WHEN valid_until <= ?2 THEN 'expired' WHEN valid_from > ?2 THEN 'not yet'"      \
		"  ELSE 'active' END AS status,"                                                   \
		" (SELECT count(*) FROM linkage_cards c WHERE c.linkage = l.token) AS cards"       \
		" FROM linkages l ORDER BY category, token",                                       \
	[KP_REPORT_LINKAGE_CARDS] =                                                                \
		"SELECT " HEX("linkage") " AS linkage, " HEX("card") " AS card,"                   \
		" " ISO("linked") " AS linked, source"                                             \
		" FROM linkage_cards ORDER BY linkage, card",                                      \
	[KP_REPORT_LINK_REQUESTS] =                                                                \
		"SELECT terminal, seq, " HEX_OR("linkage") " AS linkage,"                          \
		" " HEX_OR("card") " AS card, result, reason,"                                     \
		" " ISO("at") " AS at"                                                             \
		" FROM link_requests WHERE CAST(?1 AS text) IS NULL OR terminal = ?1 ORDER BY id",               \
	[KP_REPORT_FEEDS] =                                                                        \
		"SELECT feed_id AS feed, rows, length(package) AS bytes,"                          \
		" substr(" HEX("digest") ", 1, 16) AS digest, source,"                             \
		" " ISO("imported") " AS imported"                                                 \
		" FROM fare_packages ORDER BY feed_id",                                            \
	[KP_REPORT_PRODUCTS] =                                                                     \
		"SELECT id AS product, product_kind AS kind, name,"                                \
		" CASE WHEN product_kind = 'nride' THEN CAST(rides AS text) ELSE '-' END AS rides," \
		" coalesce(CAST(days AS text), '-') AS days, coalesce(route, '-') AS route,"       \
		" coalesce(category, '-') AS category,"                                            \
		" (SELECT " CONCAT("operator_id") " FROM (SELECT operator_id FROM"                 \
		"  product_operators po WHERE po.product_id = p.id ORDER BY operator_id) AS o)"    \
		" AS operators"                                                                    \
		" FROM products p ORDER BY id",                                                    \
	[KP_REPORT_FARES] =                                                                        \
		"SELECT 'discount' AS what, operator_id || ' ' || category || ' ' || percent || '% '" \
		" || CASE rounding WHEN 0 THEN 'down' WHEN 1 THEN 'up' ELSE 'nearest' END"         \
		" || ' ' || unit AS rule FROM discounts"                                           \
		" UNION ALL SELECT 'cap', CASE WHEN category = '' THEN '-' ELSE category END"      \
		" || ' ' || CASE period WHEN 0 THEN 'day' ELSE 'month' END || ' ' || amount"       \
		" FROM fare_caps"                                                                  \
		" UNION ALL SELECT 'transfer', from_operator || ' ' || to_operator || ' '"         \
		" || (within_s / 60) || ' ' || max_transfers || ' '"                               \
		" || CASE WHEN off < 0 THEN 'free' ELSE 'off ' || off END FROM transfer_rules"     \
		" UNION ALL SELECT 'fares', operator_id || ' ' || feed_id || ' '"                  \
		" || CASE distance WHEN 1 THEN 'distance' ELSE 'flat' END FROM operator_fares",    \
	[KP_REPORT_OPERATORS] = "SELECT id AS operator, name FROM operators ORDER BY id",          \
	[KP_REPORT_CLONES] =                                                                       \
		"SELECT " HEX("linkage") " AS linkage, kind, terminal_a || ':' || seq_a AS first," \
		" terminal_b || ':' || seq_b AS second, detail,"                                   \
		" " ISO("at") " AS flagged,"                                                       \
		" CASE WHEN cleared IS NOT NULL THEN 'cleared' WHEN suspended = 1 THEN 'suspended'" \
		" ELSE 'reported' END AS state FROM clone_flags"                                   \
		" WHERE CAST(?1 AS text) IS NULL OR terminal_a = ?1 OR terminal_b = ?1 ORDER BY id",             \
}

#define SQ_ISO(c) "strftime('%Y-%m-%dT%H:%M:%SZ', " c " / 1000, 'unixepoch')"
#define SQ_ISOM(c) "strftime('%Y-%m-%dT%H:%MZ', " c " / 1000, 'unixepoch')"
#define SQ_HEX(c) "hex(" c ")"
#define SQ_HEX_OR(c) "coalesce(nullif(hex(" c "), ''), '-')"
#define SQ_LHEX(c) "lower(hex(" c "))"
#define SQ_CONCAT(c) "group_concat(" c ", ',')"
#define PG_ISO(c) "to_char(to_timestamp(" c " / 1000) AT TIME ZONE 'UTC'," \
	" 'YYYY-MM-DD\"T\"HH24:MI:SS\"Z\"')"
#define PG_ISOM(c) "to_char(to_timestamp(" c " / 1000) AT TIME ZONE 'UTC'," \
	" 'YYYY-MM-DD\"T\"HH24:MI\"Z\"')"
#define PG_HEX(c) "coalesce(upper(encode(" c ", 'hex')), '')"
#define PG_HEX_OR(c) "coalesce(nullif(upper(encode(" c ", 'hex')), ''), '-')"
#define PG_LHEX(c) "encode(" c ", 'hex')"
#define PG_CONCAT(c) "string_agg(" c ", ',' ORDER BY " c ")"

int kp_bstore_report_at(kp_bstore *s, enum kp_report which, const char *terminal_filter,
                        int64_t at_ms, int (*fn)(void *arg, int ncol, const char *const *cols,
                                                 const char *const *names), void *arg)
{
	static const char *const sql_sqlite[] =
		REPORTS(SQ_ISO, SQ_ISOM, SQ_HEX, SQ_HEX_OR, SQ_LHEX, SQ_CONCAT);
	static const char *const sql_pg[] =
		REPORTS(PG_ISO, PG_ISOM, PG_HEX, PG_HEX_OR, PG_LHEX, PG_CONCAT);
	const char *const *sql = bs_is_pg(s) ? sql_pg : sql_sqlite;
	kp_db_stmt *st = NULL;
	int rc, step = KP_DB_DONE;

	if ((int)which < KP_REPORT_RECORDS || (int)which > KP_REPORT_CLONES)
		return KP_BE_E_INVAL;
	rc = bs_prep(s, &st, sql[which]);
	if (rc != KP_BE_OK)
		return rc;
	if (terminal_filter != NULL)
		kp_db_bind_text(st, 1, terminal_filter, SIZE_MAX);
	if (kp_db_param_count(st) >= 2)
		kp_db_bind_int64(st, 2, (int64_t)at_ms);
	while ((step = kp_db_step(st)) == KP_DB_ROW) {
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
	rc = step < 0 ? bs_fail(s, "report") : KP_BE_OK;
	kp_db_finalize(st);
	return rc;
}

/* A terminal's records for export, each with the certificate that verified it: the
 * connection's, unless record_signers names another of the history (PROTOCOL.md 4.3). */
#define EXPORT_SQL(LHEX)                                                                   \
	"SELECT j.epoch, " LHEX("j.journal") ", x.seq, r.cose,"                              \
	" coalesce(g.cert_id, r.cert_id, 0), c.cert, x.alias FROM journals j"                 \
	" JOIN (SELECT terminal, journal, seq, journal AS src, 0 AS alias"                     \
	"  FROM records UNION ALL SELECT terminal, journal, seq, of_journal,"                  \
	"  1 FROM record_aliases) x"                                                           \
	"  ON x.terminal = j.terminal AND x.journal = j.journal"                               \
	" JOIN records r ON r.terminal = x.terminal AND r.journal = x.src"                     \
	"  AND r.seq = x.seq"                                                                  \
	" LEFT JOIN record_signers g ON g.terminal = r.terminal"                               \
	"  AND g.journal = r.journal AND g.seq = r.seq"                                        \
	" LEFT JOIN terminal_certs c ON c.id = coalesce(g.cert_id, r.cert_id)"                 \
	" WHERE j.terminal = ?1 ORDER BY j.epoch, x.seq"

int kp_bstore_export_walk(kp_bstore *s, const char *terminal,
                          int (*fn)(void *arg, const struct kp_export_row *row), void *arg)
{
	kp_db_stmt *st = NULL;
	int rc = bs_prep(s, &st, bs_is_pg(s) ? EXPORT_SQL(PG_LHEX) : EXPORT_SQL(SQ_LHEX));
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
