/* SPDX-License-Identifier: Apache-2.0 */
/* The backend's store (SQLite or PostgreSQL, through kp_db.h): its schema and migrations
 * (SQLite's here, PostgreSQL's in schema_pg.c), opening, errors and the state version that
 * tells terminals when a new config bundle is due. The store is split by subject over the
 * bstore*.c files; bstore_int.h is what they share. */
#include <errno.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <sys/stat.h>

#include "bstore_int.h"
#include "kp_sys.h"
#include "schema_pg.h"

/* The change log's triggers (migration 9): a row's key, old and new (an update may move
 * it), or for the tables a delta does not carry, one 'config' change. */
#define LOG_ROW(t, kind, col)                                                              \
	"CREATE TRIGGER " #t "_log_" #kind "_i AFTER INSERT ON " #t                         \
	"  BEGIN INSERT INTO changes(kind, key) VALUES ('" #kind "', new." #col "); END;"  \
	"CREATE TRIGGER " #t "_log_" #kind "_d AFTER DELETE ON " #t                         \
	"  BEGIN INSERT INTO changes(kind, key) VALUES ('" #kind "', old." #col "); END;"  \
	"CREATE TRIGGER " #t "_log_" #kind "_u AFTER UPDATE ON " #t                         \
	"  BEGIN INSERT INTO changes(kind, key) VALUES ('" #kind "', new." #col ");"       \
	"  INSERT INTO changes(kind, key) SELECT '" #kind "', old." #col                   \
	"  WHERE old." #col " IS NOT new." #col "; END;"
#define LOG_CONFIG(t)                                                                      \
	"CREATE TRIGGER " #t "_log_i AFTER INSERT ON " #t                                   \
	"  BEGIN INSERT INTO changes(kind) VALUES ('config'); END;"                          \
	"CREATE TRIGGER " #t "_log_d AFTER DELETE ON " #t                                   \
	"  BEGIN INSERT INTO changes(kind) VALUES ('config'); END;"                          \
	"CREATE TRIGGER " #t "_log_u AFTER UPDATE ON " #t                                   \
	"  BEGIN INSERT INTO changes(kind) VALUES ('config'); END;"

static const char *const migrations[KP_BSTORE_SCHEMA_VERSION] = {
	"CREATE TABLE meta(key TEXT PRIMARY KEY, value INTEGER NOT NULL) WITHOUT ROWID;"
	"INSERT INTO meta(key, value) VALUES ('state_version', 1);"
	"CREATE TABLE terminals(id TEXT PRIMARY KEY, cert BLOB,"
	"  first_seen INTEGER NOT NULL, last_seen INTEGER NOT NULL,"
	"  acked INTEGER NOT NULL DEFAULT 0,"
	"  last_hash BLOB NOT NULL DEFAULT (zeroblob(32)),"
	"  quarantined INTEGER NOT NULL DEFAULT 0) WITHOUT ROWID;"
	"CREATE TABLE records(terminal TEXT NOT NULL REFERENCES terminals(id),"
	"  seq INTEGER NOT NULL CHECK (seq > 0), time_ms INTEGER NOT NULL, token BLOB,"
	"  operator TEXT NOT NULL, route TEXT, stop TEXT, product TEXT, ent_id INTEGER,"
	"  rides INTEGER NOT NULL, amount INTEGER NOT NULL, left_after INTEGER,"
	"  result TEXT NOT NULL, reason TEXT NOT NULL,"
	"  cose BLOB NOT NULL, payload BLOB NOT NULL, hash BLOB NOT NULL,"
	"  received_ms INTEGER NOT NULL,"
	"  PRIMARY KEY (terminal, seq)) WITHOUT ROWID;"
	"CREATE INDEX records_operator ON records(operator);"
	"CREATE TRIGGER records_immutable BEFORE UPDATE ON records"
	"  BEGIN SELECT RAISE(ABORT, 'records are immutable'); END;"
	"CREATE TRIGGER records_append_only BEFORE DELETE ON records"
	"  BEGIN SELECT RAISE(ABORT, 'records cannot be deleted'); END;"
	"CREATE TABLE quarantine(id INTEGER PRIMARY KEY, terminal TEXT NOT NULL,"
	"  seq INTEGER NOT NULL, reason TEXT NOT NULL, cose BLOB, at INTEGER NOT NULL,"
	"  cleared INTEGER);"
	"CREATE TABLE operators(id TEXT PRIMARY KEY, name TEXT NOT NULL) WITHOUT ROWID;"
	"CREATE TABLE products(id TEXT PRIMARY KEY, name TEXT NOT NULL,"
	"  kind TEXT NOT NULL DEFAULT 'nride' CHECK (kind IN ('nride')),"
	"  rides INTEGER NOT NULL CHECK (rides > 0)) WITHOUT ROWID;"
	"CREATE TABLE product_operators("
	"  product_id TEXT NOT NULL REFERENCES products(id) ON DELETE CASCADE,"
	"  operator_id TEXT NOT NULL REFERENCES operators(id),"
	"  PRIMARY KEY (product_id, operator_id)) WITHOUT ROWID;"
	"CREATE TABLE cards(token BLOB PRIMARY KEY CHECK (length(token) = 16),"
	"  label TEXT NOT NULL, registered INTEGER NOT NULL) WITHOUT ROWID;"
	"CREATE TABLE entitlements(id INTEGER PRIMARY KEY,"
	"  token BLOB NOT NULL REFERENCES cards(token),"
	"  product_id TEXT NOT NULL REFERENCES products(id),"
	"  bought INTEGER NOT NULL CHECK (bought > 0), used INTEGER NOT NULL DEFAULT 0,"
	"  valid_from INTEGER NOT NULL, valid_until INTEGER NOT NULL, sold INTEGER NOT NULL);"
	"CREATE INDEX entitlements_token ON entitlements(token);"
	"CREATE TABLE denylist(token BLOB PRIMARY KEY CHECK (length(token) = 16),"
	"  reason TEXT NOT NULL, added INTEGER NOT NULL) WITHOUT ROWID;",

	/* 2: My Number linkage (rider categories), product categories, records' new fields.
	 * Records written before this were all taps, hence the default kind. */
	"ALTER TABLE products ADD COLUMN category TEXT"
	"  CHECK (category IS NULL OR length(CAST(category AS BLOB)) BETWEEN 1 AND 32);"
	"ALTER TABLE records ADD COLUMN via BLOB;"
	"ALTER TABLE records ADD COLUMN category TEXT;"
	"ALTER TABLE records ADD COLUMN kind TEXT NOT NULL DEFAULT 'tap';"
	"CREATE TABLE linkages(token BLOB PRIMARY KEY CHECK (length(token) = 16),"
	"  category TEXT NOT NULL CHECK (length(CAST(category AS BLOB)) BETWEEN 1 AND 32),"
	"  valid_from INTEGER NOT NULL CHECK (valid_from >= 0),"
	"  valid_until INTEGER NOT NULL CHECK (valid_until > valid_from),"
	"  status TEXT NOT NULL DEFAULT 'active' CHECK (status IN ('active', 'revoked')),"
	"  created INTEGER NOT NULL, revoked INTEGER) WITHOUT ROWID;"
	"CREATE TABLE linkage_cards(linkage BLOB NOT NULL REFERENCES linkages(token),"
	"  card BLOB NOT NULL CHECK (length(card) = 16), linked INTEGER NOT NULL,"
	"  source TEXT NOT NULL CHECK (source = 'backend' OR source LIKE 'terminal:%'),"
	"  PRIMARY KEY (linkage, card)) WITHOUT ROWID;"
	"CREATE INDEX linkage_cards_card ON linkage_cards(card);"
	"CREATE TABLE link_requests(id INTEGER PRIMARY KEY, terminal TEXT NOT NULL,"
	"  seq INTEGER NOT NULL, linkage BLOB, card BLOB,"
	"  result TEXT NOT NULL CHECK (result IN ('accepted', 'refused')),"
	"  reason TEXT NOT NULL, at INTEGER NOT NULL, UNIQUE (terminal, seq));",

	/* 3: the fare engine (bundle format 2). The base schema pins products.kind to 'nride'
	 * and rebuilding products would cascade through its foreign keys, so product_kind says
	 * what a product is and `kind` stays 'nride'; products other than N-ride keep rides 1.
	 * A stored-value entitlement's bought/used are minor units; a first-use pass waits for
	 * its first accepted tap, which fixes its service days (meta: service_day_end_s,
	 * utc_offset_s, as the terminals' config). Fare feeds are packages (PROTOCOL.md). */
	"ALTER TABLE products ADD COLUMN product_kind TEXT NOT NULL DEFAULT 'nride'"
	"  CHECK (product_kind IN ('nride', 'stored', 'period', 'commuter'));"
	"ALTER TABLE products ADD COLUMN days INTEGER CHECK (days IS NULL OR days BETWEEN 1 AND 366);"
	"ALTER TABLE products ADD COLUMN route TEXT;"
	"CREATE TABLE product_stops(product_id TEXT NOT NULL REFERENCES products(id)"
	"  ON DELETE CASCADE, pos INTEGER NOT NULL, stop_id TEXT NOT NULL,"
	"  PRIMARY KEY (product_id, pos)) WITHOUT ROWID;"
	"ALTER TABLE entitlements ADD COLUMN first_use INTEGER NOT NULL DEFAULT 0"
	"  CHECK (first_use IN (0, 1));"
	"CREATE TABLE discounts(operator_id TEXT NOT NULL REFERENCES operators(id),"
	"  category TEXT NOT NULL, percent INTEGER NOT NULL CHECK (percent BETWEEN 0 AND 100),"
	"  rounding INTEGER NOT NULL CHECK (rounding IN (0, 1, 2)),"
	"  unit INTEGER NOT NULL CHECK (unit BETWEEN 1 AND 100000),"
	"  PRIMARY KEY (operator_id, category)) WITHOUT ROWID;"
	"CREATE TABLE fare_caps(category TEXT NOT NULL, period INTEGER NOT NULL"
	"  CHECK (period IN (0, 1)), amount INTEGER NOT NULL"
	"  CHECK (amount BETWEEN 0 AND 1000000000000), PRIMARY KEY (category, period)) WITHOUT ROWID;"
	"CREATE TABLE transfer_rules(from_operator TEXT NOT NULL, to_operator TEXT NOT NULL,"
	"  within_s INTEGER NOT NULL CHECK (within_s BETWEEN 60 AND 86400),"
	"  max_transfers INTEGER NOT NULL CHECK (max_transfers BETWEEN 1 AND 100),"
	"  off INTEGER NOT NULL CHECK (off BETWEEN -1 AND 1000000000000),"
	"  PRIMARY KEY (from_operator, to_operator)) WITHOUT ROWID;"
	"CREATE TABLE operator_fares(operator_id TEXT PRIMARY KEY REFERENCES operators(id),"
	"  feed_id TEXT NOT NULL, distance INTEGER NOT NULL CHECK (distance IN (0, 1))) WITHOUT ROWID;"
	"CREATE TABLE fare_packages(feed_id TEXT PRIMARY KEY,"
	"  digest BLOB NOT NULL CHECK (length(digest) = 32), package BLOB NOT NULL,"
	"  rows INTEGER NOT NULL, source TEXT NOT NULL, imported INTEGER NOT NULL) WITHOUT ROWID;"
	"INSERT INTO meta(key, value) VALUES ('service_day_end_s', 14400), ('utc_offset_s', 32400);",

	/* 4: fares across terminals (terminal/fare/FARES.md). A record's fare event (key 20) gets a
	 * column. Stored rows are never written: records from before it carry no event (the
	 * key did not exist when released backends stored them) and read as "tap". Recent
	 * card records are indexed by time for the bundle's one pass. Product scopes as the
	 * terminal's (load-file product-scope). */
	"ALTER TABLE records ADD COLUMN event TEXT;"
	"CREATE INDEX records_recent ON records(time_ms) WHERE token IS NOT NULL;"
	"CREATE TABLE product_scope(product_id TEXT NOT NULL REFERENCES products(id)"
	"  ON DELETE CASCADE, kind TEXT NOT NULL CHECK (kind IN ('route', 'network')),"
	"  scope_id TEXT NOT NULL CHECK (length(CAST(scope_id AS BLOB)) BETWEEN 1 AND 32),"
	"  PRIMARY KEY (product_id, kind, scope_id)) WITHOUT ROWID;",

	/* 5: journals and certificates (PROTOCOL.md section 4.1). A terminal id names a
	 * certificate holder, not a journal: a rebuilt or restored database sends its records
	 * under a journal id of its own, an epoch of the terminal, and the backend keeps every
	 * epoch. Records and link requests are keyed by (terminal, journal, seq); what came
	 * before is the legacy journal (16 zero bytes), epoch 1. A record an epoch holds that
	 * is byte for byte one of another epoch's (same seq, same payload hash) is kept once:
	 * record_aliases says where. Every certificate a terminal has authenticated with is
	 * kept, and each record names the one of the connection it came in on. The tables are
	 * rebuilt (DROP TABLE fires no trigger), the triggers made again. */
	"CREATE TABLE terminal_certs(id INTEGER PRIMARY KEY,"
	"  terminal TEXT NOT NULL REFERENCES terminals(id), cert BLOB NOT NULL,"
	"  first_seen INTEGER NOT NULL, last_seen INTEGER NOT NULL, UNIQUE (terminal, cert));"
	"INSERT INTO terminal_certs(terminal, cert, first_seen, last_seen)"
	"  SELECT id, cert, first_seen, last_seen FROM terminals WHERE cert IS NOT NULL;"
	"CREATE TABLE journals(terminal TEXT NOT NULL REFERENCES terminals(id),"
	"  journal BLOB NOT NULL CHECK (length(journal) = 16),"
	"  epoch INTEGER NOT NULL CHECK (epoch > 0),"
	"  acked INTEGER NOT NULL DEFAULT 0,"
	"  last_hash BLOB NOT NULL DEFAULT (zeroblob(32)) CHECK (length(last_hash) = 32),"
	"  first_seen INTEGER NOT NULL, last_seen INTEGER NOT NULL,"
	"  PRIMARY KEY (terminal, journal), UNIQUE (terminal, epoch)) WITHOUT ROWID;"
	"INSERT INTO journals(terminal, journal, epoch, acked, last_hash, first_seen, last_seen)"
	"  SELECT id, zeroblob(16), 1, acked, last_hash, first_seen, last_seen FROM terminals;"
	"CREATE TABLE records_v5(terminal TEXT NOT NULL REFERENCES terminals(id),"
	"  journal BLOB NOT NULL CHECK (length(journal) = 16),"
	"  seq INTEGER NOT NULL CHECK (seq > 0), time_ms INTEGER NOT NULL, token BLOB,"
	"  operator TEXT NOT NULL, route TEXT, stop TEXT, product TEXT, ent_id INTEGER,"
	"  rides INTEGER NOT NULL, amount INTEGER NOT NULL, left_after INTEGER,"
	"  result TEXT NOT NULL, reason TEXT NOT NULL,"
	"  cose BLOB NOT NULL, payload BLOB NOT NULL, hash BLOB NOT NULL,"
	"  received_ms INTEGER NOT NULL, via BLOB, category TEXT,"
	"  kind TEXT NOT NULL DEFAULT 'tap', event TEXT,"
	"  cert_id INTEGER REFERENCES terminal_certs(id),"
	"  PRIMARY KEY (terminal, journal, seq)) WITHOUT ROWID;"
	"INSERT INTO records_v5 SELECT r.terminal, zeroblob(16), r.seq, r.time_ms, r.token,"
	"  r.operator, r.route, r.stop, r.product, r.ent_id, r.rides, r.amount, r.left_after,"
	"  r.result, r.reason, r.cose, r.payload, r.hash, r.received_ms, r.via, r.category,"
	"  r.kind, r.event, (SELECT c.id FROM terminal_certs c WHERE c.terminal = r.terminal)"
	"  FROM records r;"
	"DROP TABLE records;"
	"ALTER TABLE records_v5 RENAME TO records;"
	"CREATE INDEX records_operator ON records(operator);"
	"CREATE INDEX records_recent ON records(time_ms) WHERE token IS NOT NULL;"
	"CREATE INDEX records_seq ON records(terminal, seq);"
	"CREATE TRIGGER records_immutable BEFORE UPDATE ON records"
	"  BEGIN SELECT RAISE(ABORT, 'records are immutable'); END;"
	"CREATE TRIGGER records_append_only BEFORE DELETE ON records"
	"  BEGIN SELECT RAISE(ABORT, 'records cannot be deleted'); END;"
	"CREATE TABLE record_aliases(terminal TEXT NOT NULL, journal BLOB NOT NULL,"
	"  seq INTEGER NOT NULL, of_journal BLOB NOT NULL, received_ms INTEGER NOT NULL,"
	"  PRIMARY KEY (terminal, journal, seq)) WITHOUT ROWID;"
	"CREATE TABLE link_requests_v5(id INTEGER PRIMARY KEY, terminal TEXT NOT NULL,"
	"  journal BLOB NOT NULL DEFAULT (zeroblob(16)), seq INTEGER NOT NULL, linkage BLOB,"
	"  card BLOB, result TEXT NOT NULL CHECK (result IN ('accepted', 'refused')),"
	"  reason TEXT NOT NULL, at INTEGER NOT NULL, UNIQUE (terminal, journal, seq));"
	"INSERT INTO link_requests_v5(id, terminal, seq, linkage, card, result, reason, at)"
	"  SELECT id, terminal, seq, linkage, card, result, reason, at FROM link_requests;"
	"DROP TABLE link_requests;"
	"ALTER TABLE link_requests_v5 RENAME TO link_requests;"
	/* The registry (PROTOCOL.md section 4): only a registered terminal gets past its hello.
	 * A terminal the backend knows already counts as registered, so that upgrading a
	 * backend does not cut off its fleet. A retired terminal keeps its row (and its
	 * records), and its id is not registered again. */
	"CREATE TABLE terminal_registry(id TEXT PRIMARY KEY"
	"  CHECK (length(CAST(id AS BLOB)) BETWEEN 1 AND 32),"
	"  operator TEXT REFERENCES operators(id),"
	"  status TEXT NOT NULL DEFAULT 'active' CHECK (status IN ('active', 'retired')),"
	"  registered INTEGER NOT NULL, retired INTEGER) WITHOUT ROWID;"
	"INSERT INTO terminal_registry(id, registered) SELECT id, first_seen FROM terminals;",

	/* 6 (issue 13, the scheme's My Number policy, bundle format 4; self-contained so that
	 * it can be renumbered): which products and product categories a My Number card may
	 * use when tapped directly (none: direct taps are off). The policy's numbers live in
	 * meta: direct_taps (0/1), direct_rides, direct_value (per linkage and service day, 0 =
	 * no limit), elig_max_age_s (default 72 h) and elig_refreshed_ms (see bundle_refresh). */
	"CREATE TABLE direct_tap_allow(kind TEXT NOT NULL CHECK (kind IN ('product', 'category')),"
	"  id TEXT NOT NULL CHECK (length(CAST(id AS BLOB)) BETWEEN 1 AND 32),"
	"  PRIMARY KEY (kind, id)) WITHOUT ROWID;"
	/* Clone detection: one linkage used at two terminals in a time or distance no rider
	 * covers, or directly more often than the policy allows (kind 'travel' / 'limit'),
	 * found on ingest; suspended = the scheme suspends such a linkage (meta clone_action:
	 * 0 off, 1 report, 2 suspend; clone_speed_kmh, clone_gap_s) until an operator clears
	 * it. Stop coordinates come from the GTFS feeds imported at the backend. */
	"CREATE TABLE clone_flags(id INTEGER PRIMARY KEY,"
	"  linkage BLOB NOT NULL CHECK (length(linkage) = 16),"
	"  kind TEXT NOT NULL CHECK (kind IN ('travel', 'limit')),"
	"  terminal_a TEXT NOT NULL, seq_a INTEGER NOT NULL,"
	"  terminal_b TEXT NOT NULL, seq_b INTEGER NOT NULL, detail TEXT NOT NULL,"
	"  at INTEGER NOT NULL, suspended INTEGER NOT NULL CHECK (suspended IN (0, 1)),"
	"  cleared INTEGER, UNIQUE (linkage, kind, terminal_a, seq_a, terminal_b, seq_b));"
	"CREATE INDEX clone_flags_linkage ON clone_flags(linkage);"
	"CREATE INDEX records_via ON records(via) WHERE via IS NOT NULL;"
	"CREATE INDEX records_token ON records(token) WHERE token IS NOT NULL;"
	"CREATE TABLE stop_places(feed_id TEXT NOT NULL, stop_id TEXT NOT NULL,"
	"  lat_e6 INTEGER NOT NULL CHECK (lat_e6 BETWEEN -90000000 AND 90000000),"
	"  lon_e6 INTEGER NOT NULL CHECK (lon_e6 BETWEEN -180000000 AND 180000000),"
	"  PRIMARY KEY (feed_id, stop_id)) WITHOUT ROWID;"
	"CREATE TRIGGER fare_packages_places AFTER DELETE ON fare_packages"
	"  BEGIN DELETE FROM stop_places WHERE feed_id = old.feed_id; END;",

	/* 7: what a terminal's last hello reported (PROTOCOL.md section 3, hello's `last`): the
	 * journal it named and the newest seq it holds there (NULL: not reported, a terminal
	 * that predates `last`), for the unsent-records metric and `backend terminals`. */
	"ALTER TABLE terminals ADD COLUMN hello_journal BLOB;"
	"ALTER TABLE terminals ADD COLUMN hello_last INTEGER;",

	/* 8 (issue 16, ingest by chain, PROTOCOL.md section 4.2): the records whose own
	 * signature was not verified at ingest (a later verified record vouched for them through
	 * the hash chain), until the auditor has verified it (records stay immutable). */
	"CREATE TABLE audit_pending(terminal TEXT NOT NULL, journal BLOB NOT NULL,"
	"  seq INTEGER NOT NULL, PRIMARY KEY (terminal, journal, seq)) WITHOUT ROWID;",

	/* 9 (issue 16, certificates over time, PROTOCOL.md section 4.3): each certificate of a
	 * terminal's history with its SHA-256 fingerprint (of the DER), its validity (ms) and
	 * an operator's revocation (revoked_at: from then on records its key signed are
	 * refused; revoked_recorded: when the operator said so), read from the DER by the
	 * connection's own functions (bs_cert_functions). A record verified with a certificate
	 * other than the one of the connection it came in on (records.cert_id) names it in
	 * record_signers (records stay immutable). */
	"ALTER TABLE terminal_certs ADD COLUMN fingerprint TEXT;"
	"ALTER TABLE terminal_certs ADD COLUMN not_before INTEGER;"
	"ALTER TABLE terminal_certs ADD COLUMN not_after INTEGER;"
	"ALTER TABLE terminal_certs ADD COLUMN revoked_at INTEGER;"
	"ALTER TABLE terminal_certs ADD COLUMN revoked_recorded INTEGER;"
	"UPDATE terminal_certs SET fingerprint = kp_cert_fingerprint(cert),"
	"  not_before = kp_cert_not_before(cert), not_after = kp_cert_not_after(cert);"
	"CREATE INDEX terminal_certs_fingerprint ON terminal_certs(terminal, fingerprint);"
	"CREATE TABLE record_signers(terminal TEXT NOT NULL, journal BLOB NOT NULL,"
	"  seq INTEGER NOT NULL, cert_id INTEGER NOT NULL REFERENCES terminal_certs(id),"
	"  PRIMARY KEY (terminal, journal, seq)) WITHOUT ROWID;",

	/* 10 (issue 16, delta bundles, PROTOCOL.md section 5.4): the change log. Triggers write it, so no code path can change what a
	 * bundle carries and forget to log it: a change names what a delta must send again
	 * (kind + key: a card token, a linkage), 'config' that a delta cannot
	 * say it (the next answer is a full bundle). change_versions maps each state version to
	 * the last change it includes; a terminal's version not in it (older than the retained
	 * log, or from before this schema) gets a full bundle. */
	"CREATE TABLE changes(n INTEGER PRIMARY KEY AUTOINCREMENT,"
	"  kind TEXT NOT NULL CHECK (kind IN ('deny', 'ent', 'elig', 'linkage', 'remote',"
	"  'config')), key BLOB);"
	"CREATE TABLE change_versions(version INTEGER PRIMARY KEY,"
	"  last_change INTEGER NOT NULL) WITHOUT ROWID;"
	BS_LOGGED_TABLES(LOG_ROW, LOG_CONFIG)
	/* what the per-card fare state (format 3) is computed from, once fares are on; and
	 * the settings it and the format depend on */
	"CREATE TRIGGER records_log AFTER INSERT ON records WHEN new.token IS NOT NULL"
	"  AND new.kind = 'tap' AND EXISTS (SELECT 1 FROM meta WHERE key = 'format2'"
	"  AND value <> 0) BEGIN INSERT INTO changes(kind, key) VALUES ('remote', new.token); END;"
	"CREATE TRIGGER meta_log_u AFTER UPDATE ON meta WHEN new.key IN ('format2',"
	"  'service_day_end_s', 'utc_offset_s') AND new.value IS NOT old.value"
	"  BEGIN INSERT INTO changes(kind) VALUES ('config'); END;"
	"CREATE TRIGGER meta_log_i AFTER INSERT ON meta WHEN new.key IN ('format2',"
	"  'service_day_end_s', 'utc_offset_s')"
	"  BEGIN INSERT INTO changes(kind) VALUES ('config'); END;",
};

const char *kp_backend_strerror(int rc)
{
	if (rc > -0x360 || rc <= -0x380)
		return kp_sync_error_text(rc);
	switch (rc) {
	case KP_BE_OK:         return "ok";
	case KP_BE_E_INVAL:    return "invalid argument or value";
	case KP_BE_E_NOMEM:    return "out of memory";
	case KP_BE_E_DB:       return "backend database error";
	case KP_BE_E_SCHEMA:   return "backend database is newer than this program";
	case KP_BE_E_NOTFOUND: return "not found";
	case KP_BE_E_UNREGISTERED: return "terminal not registered at this backend";
	case KP_BE_E_REVOKED:  return "certificate revoked at this backend";
	default:               return "unknown backend error";
	}
}

const char *kp_bstore_errmsg(const kp_bstore *s)
{
	if (s == NULL)
		return "no store";
	if (s->err[0] != '\0' || s->db == NULL)
		return s->err;
	return kp_db_errmsg(s->db);
}

int bs_fail(kp_bstore *s, const char *what)
{
	snprintf(s->err, sizeof(s->err), "%s: %s", what, kp_db_errmsg(s->db));
	return KP_BE_E_DB;
}

int bs_refuse(kp_bstore *s, int rc, const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(s->err, sizeof(s->err), fmt, ap);
	va_end(ap);
	return rc;
}

int bs_exec(kp_bstore *s, const char *sql)
{
	if (kp_db_exec(s->db, sql) != KP_DB_OK) {
		snprintf(s->err, sizeof(s->err), "%s", kp_db_errmsg(s->db));
		return KP_BE_E_DB;
	}
	return KP_BE_OK;
}

bool bs_retry(kp_bstore *s, int rc, int attempt)
{
	if (rc != KP_BE_E_DB || attempt >= BS_ATTEMPTS || !bs_is_pg(s) ||
	    kp_db_errclass(s->db) != KP_DB_E_BUSY)
		return false;
	s->err[0] = '\0';
	s->db->err_rc = KP_DB_OK;            /* the next attempt's failure is its own */
	return true;
}

void bs_partitions(kp_bstore *s, int64_t now_ms)
{
	int64_t day = now_ms / 86400000, made = 0;
	int rc;

	if (!bs_is_pg(s) || day == s->partitions_day || kp_db_in_txn(s->db))
		return;
	/* one at a time across instances (two would race to create one month) */
	rc = bs_begin(s, KP_DB_TXN_WRITE);
	if (rc == KP_BE_OK && kp_db_lock(s->db, KP_DB_LOCK_SCHEMA, "partitions") != KP_DB_OK)
		rc = bs_fail(s, "partitions");
	if (rc == KP_BE_OK)
		rc = bs_query_int(s, 0, &made, "SELECT kippu_record_partitions(?1, 3)",
		                  BS_INT(now_ms));
	rc = bs_end(s, rc, 0);
	/* a failure only means records land in records_default: tried again next time */
	if (rc == KP_BE_OK)
		s->partitions_day = day;
	s->err[0] = '\0';
}

int kp_bstore_is_pg(const char *path)
{
	return path != NULL && kp_db_engine_of(path) == &kp_db_pg_ops;
}

bool bs_is_pg(const kp_bstore *s)
{
	return s->db != NULL && strcmp(kp_db_engine(s->db), "postgresql") == 0;
}

int bs_begin(kp_bstore *s, enum kp_db_txn mode)
{
	return kp_db_begin(s->db, mode) == KP_DB_OK ? KP_BE_OK : bs_fail(s, "begin");
}

int bs_commit(kp_bstore *s)
{
	return kp_db_commit(s->db) == KP_DB_OK ? KP_BE_OK : bs_fail(s, "commit");
}

void bs_rollback(kp_bstore *s)
{
	kp_db_rollback(s->db);
}

int bs_prep(kp_bstore *s, kp_db_stmt **st, const char *sql)
{
	if (kp_db_prepare(s->db, st, sql) != KP_DB_OK)
		return bs_fail(s, "prepare");
	return KP_BE_OK;
}

/* Values beyond the statement's parameters are not bound (bs_change passes the same four
 * to statements that use fewer). */
static int bind_vals(kp_bstore *s, kp_db_stmt *st, const struct kp_sql_val *v, size_t n)
{
	int rc = KP_DB_OK, params = kp_db_param_count(st);

	if (params >= 0 && n > (size_t)params)
		n = (size_t)params;
	for (size_t i = 0; i < n && rc == KP_DB_OK; i++) {
		int at = (int)i + 1;

		if (v[i].kind == 'i')
			rc = kp_db_bind_int64(st, at, v[i].i);
		else if (v[i].kind == 'b' && v[i].p == NULL)
			rc = kp_db_bind_null(st, at);       /* an absent token */
		else if (v[i].kind == 'b')
			rc = kp_db_bind_blob(st, at, v[i].p, (size_t)v[i].i);
		else if (v[i].kind == 't' || (v[i].kind == 'o' && v[i].p != NULL &&
		                              *(const char *)v[i].p != '\0'))
			rc = kp_db_bind_text(st, at, v[i].p, SIZE_MAX);
	}
	return rc == KP_DB_OK ? KP_BE_OK : bs_fail(s, "bind");
}

int bs_prep_bind(kp_bstore *s, kp_db_stmt **st, const char *sql, const struct kp_sql_val *v,
                 size_t n)
{
	int rc = bs_prep(s, st, sql);

	if (rc == KP_BE_OK)
		rc = bind_vals(s, *st, v, n);
	if (rc != KP_BE_OK && *st != NULL) {
		kp_db_finalize(*st);
		*st = NULL;
	}
	return rc;
}

/* The connection's cached statement for sql (a literal), bound to v; give it back with
 * kp_db_reset. */
int bs_cached_bind(kp_bstore *s, kp_db_stmt **st, const char *sql,
                   const struct kp_sql_val *v, size_t n)
{
	if (kp_db_prepare_cached(s->db, st, sql) != KP_DB_OK)
		return bs_fail(s, "prepare");
	return bind_vals(s, *st, v, n);
}

int bs_run_vals(kp_bstore *s, const char *what, const char *sql, const struct kp_sql_val *v,
                size_t n)
{
	kp_db_stmt *st = NULL;
	int rc = bs_cached_bind(s, &st, sql, v, n);

	if (rc == KP_BE_OK)
		rc = kp_db_step(st) == KP_DB_DONE ? KP_BE_OK : bs_fail(s, what);
	if (st != NULL)
		kp_db_reset(st);
	return rc;
}

int bs_int_vals(kp_bstore *s, int64_t def, int64_t *out, const char *sql,
                const struct kp_sql_val *v, size_t n)
{
	kp_db_stmt *st = NULL;
	int rc = bs_cached_bind(s, &st, sql, v, n);

	if (rc == KP_BE_OK) {
		int step = kp_db_step(st);

		*out = step == KP_DB_ROW ? kp_db_column_int64(st, 0) : def;
		if (step < 0)
			rc = bs_fail(s, "query");
	}
	if (st != NULL)
		kp_db_reset(st);
	return rc;
}

int bs_step_done(kp_bstore *s, kp_db_stmt *st, const char *what)
{
	int rc = kp_db_step(st) == KP_DB_DONE ? KP_BE_OK : bs_fail(s, what);

	kp_db_finalize(st);
	return rc;
}

/* A database with tables must be the backend's (records, terminals); a terminal's has a
 * journal table instead. With mode other than KP_BSTORE_CREATE the file must exist. */
static int bs_check_file(kp_bstore *s, const char *path, int mode)
{
	kp_db_stmt *st = NULL;
	int journal = 0, backend = 0, tables = 0, step;

	if (kp_db_prepare(s->db, &st, "SELECT name FROM sqlite_master WHERE type = 'table'") !=
	    KP_DB_OK)
		return bs_fail(s, "schema");
	while ((step = kp_db_step(st)) == KP_DB_ROW) {
		const char *name = kp_db_column_text(st, 0);

		tables++;
		journal |= name != NULL && strcmp(name, "journal") == 0;
		backend |= name != NULL && strcmp(name, "records") == 0;
	}
	kp_db_finalize(st);
	if (step != KP_DB_DONE)
		return bs_fail(s, "schema");
	if ((tables == 0 && mode != KP_BSTORE_READONLY) || backend)
		return KP_BE_OK;
	snprintf(s->err, sizeof(s->err), "%.400s is %s, not a backend database", path,
	         tables == 0 ? "an empty database" : journal ? "a terminal database" :
	         "some other SQLite database");
	return KP_BE_E_SCHEMA;
}

/* A PostgreSQL database (a URI or libpq keywords): empty, or the backend's (a records
 * table). Nothing of SQLite's file checks applies. */
static int bs_open_pg(kp_bstore *s, const char *conn, int mode)
{
	int64_t backend = 0, tables = 0;
	int rc;

	if (kp_db_open(&s->db, conn, mode == KP_BSTORE_READONLY ? KP_DB_READONLY : 0, s->err,
	               sizeof(s->err)) != KP_DB_OK)
		return KP_BE_E_DB;
	rc = bs_query_int(s, 0, &backend, "SELECT count(*) FROM pg_tables"
	                  " WHERE schemaname = current_schema() AND tablename = 'records'");
	if (rc == KP_BE_OK)
		rc = bs_query_int(s, 0, &tables, "SELECT count(*) FROM pg_tables"
		                  " WHERE schemaname = current_schema()");
	if (rc != KP_BE_OK || backend > 0 || (tables == 0 && mode != KP_BSTORE_READONLY))
		return rc;
	return bs_refuse(s, KP_BE_E_SCHEMA, "the PostgreSQL database is %s, not a backend "
	                 "database", tables == 0 ? "empty" : "some other database");
}

static int bs_open_file(kp_bstore *s, const char *path, int mode)
{
	if (kp_bstore_is_pg(path))
		return bs_open_pg(s, path, mode);
	int flags = mode == KP_BSTORE_READONLY ? KP_DB_READONLY :
	            mode == KP_BSTORE_CREATE ? KP_DB_CREATE : 0;
	struct stat sb;

	if (mode != KP_BSTORE_CREATE) {
		if (stat(path, &sb) != 0 || !S_ISREG(sb.st_mode)) {
			if (errno == ENOENT)
				snprintf(s->err, sizeof(s->err), "no such database: %.400s", path);
			else
				snprintf(s->err, sizeof(s->err), "cannot open database %.400s: %s", path,
				         S_ISDIR(sb.st_mode) ? "it is a folder" : strerror(errno));
			return KP_BE_E_NOTFOUND;
		}
	} else if (kp_sys_private_file(path) != 0) {
		/* created 0600 whatever the umask; SQLite gives -wal and -shm the same mode */
		snprintf(s->err, sizeof(s->err), "database %.400s: %s", path, strerror(errno));
		return KP_BE_E_DB;
	}
	if (kp_db_open(&s->db, path, flags, s->err, sizeof(s->err)) != KP_DB_OK)
		return KP_BE_E_DB;
	if (bs_cert_functions(s->db) != KP_BE_OK)
		return bs_fail(s, "certificate functions");
	return bs_check_file(s, path, mode);
}

int kp_bstore_open(kp_bstore **out, const char *path)
{
	char err[600];
	int rc = kp_bstore_open_mode(out, path, KP_BSTORE_CREATE, err, sizeof(err));

	if (rc != KP_BE_OK)
		fprintf(stderr, "kippu-backend: %s\n", err);
	return rc;
}

/* The schema: checked without a lock (every server connection opens the store), migrated
 * (kp_db_migrate takes the lock) only when older. */
static int bs_migrate(kp_bstore *s, int mode)
{
	struct kp_db_migration m[KP_BSTORE_SCHEMA_VERSION];
	int version = 0, rc;

	if (kp_db_schema_version(s->db, &version) != KP_DB_OK)
		return bs_fail(s, "schema version");
	if (version > KP_BSTORE_SCHEMA_VERSION)
		return bs_refuse(s, KP_BE_E_SCHEMA, "backend database schema %d is newer than %d",
		                 version, KP_BSTORE_SCHEMA_VERSION);
	if (version == KP_BSTORE_SCHEMA_VERSION)
		return KP_BE_OK;
	if (mode == KP_BSTORE_READONLY)
		return bs_refuse(s, KP_BE_E_SCHEMA, "backend database schema %d is older than %d "
		                 "(kippu-backend, or a command that writes to it, migrates it)",
		                 version, KP_BSTORE_SCHEMA_VERSION);
	for (int i = 0; i < KP_BSTORE_SCHEMA_VERSION; i++)
		m[i] = (struct kp_db_migration){ i + 1, migrations[i] };
	if (bs_is_pg(s)) {
		size_t n;
		const struct kp_db_migration *pg = kp_bstore_pg_migrations(&n);

		rc = kp_db_migrate(s->db, pg, n, NULL, NULL);
	} else {
		rc = kp_db_migrate(s->db, m, KP_BSTORE_SCHEMA_VERSION, NULL, NULL);
	}
	if (rc == KP_DB_E_SCHEMA)
		return bs_refuse(s, KP_BE_E_SCHEMA, "backend %s", kp_db_errmsg(s->db));
	return rc == KP_DB_OK ? KP_BE_OK : bs_fail(s, "migration");
}

int kp_bstore_open_mode(kp_bstore **out, const char *path, int mode, char *err, size_t cap)
{
	kp_bstore *s = calloc(1, sizeof(*s));
	int rc;

	*out = NULL;
	if (s == NULL)
		return KP_BE_E_NOMEM;
	rc = bs_open_file(s, path, mode);
	if (rc != KP_BE_OK)
		goto fail_named;
	if (mode != KP_BSTORE_READONLY && !bs_is_pg(s))
		rc = bs_exec(s, "PRAGMA journal_mode = WAL; PRAGMA synchronous = FULL;"
		             /* Reads through a memory map: a connection's own page cache starts
		             * cold after another connection's commit (every batch, with many
		             * terminals); the OS's does not. Writes still go through the WAL. */
		             "PRAGMA mmap_size = 268435456;");
	if (rc == KP_BE_OK)
		rc = bs_migrate(s, mode);
	if (rc != KP_BE_OK)
		goto fail;
	if (mode != KP_BSTORE_READONLY)
		bs_partitions(s, (int64_t)bs_version_clock_ms());
	*out = s;
	return KP_BE_OK;
fail:
	snprintf(err, cap, "store %s: %s", path, kp_bstore_errmsg(s));
	kp_bstore_close(s);
	return rc;
fail_named:
	snprintf(err, cap, "%s", kp_bstore_errmsg(s));
	kp_bstore_close(s);
	return rc;
}

void kp_bstore_close(kp_bstore *s)
{
	if (s == NULL)
		return;
	kp_db_close(s->db);
	free(s);
}

int kp_bstore_pragmas(kp_bstore *s, char *journal_mode, size_t cap, int *synchronous,
                      int *foreign_keys)
{
	kp_db_stmt *st = NULL;
	int rc = bs_prep(s, &st, "SELECT * FROM pragma_journal_mode, pragma_synchronous,"
	                      " pragma_foreign_keys");

	if (rc != KP_BE_OK)
		return rc;
	if (kp_db_step(st) == KP_DB_ROW) {
		snprintf(journal_mode, cap, "%s", kp_db_column_text(st, 0));
		*synchronous = (int)kp_db_column_int64(st, 1);
		*foreign_keys = (int)kp_db_column_int64(st, 2);
	} else {
		rc = bs_fail(s, "pragmas");
	}
	kp_db_finalize(st);
	return rc;
}

/* The state version never goes back, even across a restore from a backup: it is the
 * wall clock in milliseconds, or one above the last version if that is ahead (several
 * changes in a millisecond). A backend restored to an older state makes its next version
 * above every version its lost history gave out (made earlier), so terminals take it;
 * kp_bstore_state_at_least covers a restored backend that has not changed yet. */
uint64_t bs_version_clock_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_REALTIME, &ts);
	return ts.tv_sec < 0 ? 0 : (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

/* The new version names the last change it includes (a delta from it starts after), and
 * what is older than the log's retention goes: versions (wall-clock ms) older than it, and
 * the changes every retained version already includes. Both deletes are range scans of a
 * primary key: nothing to delete costs nothing. Every ingested batch runs these, so they are
 * bs_run's cached statements (the parameters a statement needs only to be one). */
int bs_version_mark(kp_bstore *s)
{
	int64_t keep_s = KP_BSTORE_CHANGE_KEEP_S, locked = 0;
	int rc = bs_meta_int(s, "change_keep_s", KP_BSTORE_CHANGE_KEEP_S, &keep_s);

	/* the last change number: SQLite's AUTOINCREMENT counter; PostgreSQL's identity, read
	 * under the change log's lock (schema_pg.c: numbers in commit order) */
	if (rc == KP_BE_OK && bs_is_pg(s))
		rc = bs_query_int(s, 0, &locked, "SELECT 1 FROM pg_advisory_xact_lock(1802502154,"
		                  " CAST(?1 AS integer))", BS_INT(0));
	if (rc == KP_BE_OK && bs_is_pg(s))
		rc = bs_run(s, "change log", "INSERT INTO change_versions(version, last_change)"
		            " SELECT value, (SELECT CASE WHEN is_called THEN last_value ELSE ?1 END"
		            " FROM changes_n_seq) FROM meta WHERE key = 'state_version'"
		            " ON CONFLICT(version) DO UPDATE SET last_change = excluded.last_change",
		            BS_INT(0));
	else if (rc == KP_BE_OK)
		rc = bs_run(s, "change log", "INSERT OR REPLACE INTO change_versions(version,"
		            " last_change) SELECT value, coalesce((SELECT seq FROM sqlite_sequence"
		            " WHERE name = ?1), 0) FROM meta WHERE key = 'state_version'",
		            BS_TEXT("changes"));
	if (rc == KP_BE_OK)
		rc = bs_run(s, "change log", "DELETE FROM change_versions WHERE version < ?1"
		            " AND version < (SELECT max(version) FROM change_versions)",
		            BS_INT((int64_t)bs_version_clock_ms() - keep_s * 1000));
	if (rc == KP_BE_OK)
		rc = bs_run(s, "change log", "DELETE FROM changes WHERE n <= ?1 + (SELECT"
		            " min(last_change) FROM change_versions)", BS_INT(0));
	return rc;
}

int bs_bump_version(kp_bstore *s)
{
	int rc = bs_run(s, "state version", "UPDATE meta SET value = " BS_GREATER("value + 1", "?1")
	                " WHERE key = 'state_version'", BS_INT(bs_version_clock_ms()));

	return rc == KP_BE_OK ? bs_version_mark(s) : rc;
}

/* Ends an operator's change: bump the state version (terminals get a new bundle) and
 * commit, or roll everything back. */
int bs_commit_change(kp_bstore *s, int rc)
{
	return bs_end(s, rc, 1);
}

/* Ends a transaction: bumps the state version if bump, commits if rc is KP_BE_OK, else (or
 * if that fails) rolls back. */
int bs_end(kp_bstore *s, int rc, int bump)
{
	if (rc == KP_BE_OK && bump)
		rc = bs_bump_version(s);
	if (rc == KP_BE_OK)
		rc = bs_commit(s);
	if (rc != KP_BE_OK)
		bs_rollback(s);
	return rc;
}

int kp_bstore_state_version(kp_bstore *s, uint64_t *version)
{
	kp_db_stmt *st = NULL;
	int rc = bs_prep(s, &st, "SELECT value FROM meta WHERE key = 'state_version'");

	if (rc != KP_BE_OK)
		return rc;
	if (kp_db_step(st) == KP_DB_ROW)
		*version = (uint64_t)kp_db_column_int64(st, 0);
	else
		rc = bs_fail(s, "state version");
	kp_db_finalize(st);
	return rc;
}
