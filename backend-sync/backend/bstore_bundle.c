/* The backend's SQLite store: terminals, every record once (terminal + seq is the key,
 * the full COSE bytes kept for audit), quarantines, operators, products, cards,
 * entitlements with their merged uses, the denylist, My Number linkages and the cards linked
 * to them, and a state version that tells terminals when a new config bundle is due. One
 * connection per server thread; every change is one transaction. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <sqlite3.h>

#include "kp_backend.h"
#include "kp_civil.h"

#include "kp_cbor.h"

struct kp_bstore {
	sqlite3 *db;
	char err[512];
	size_t n_left_out;               /* rows the last bundle left out, the first one noted */
	char left_out[384];
};

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
	default:               return "unknown backend error";
	}
}

const char *kp_bstore_errmsg(const kp_bstore *s)
{
	if (s == NULL)
		return "no store";
	return s->err[0] != '\0' ? s->err : sqlite3_errmsg(s->db);
}

static int fail(kp_bstore *s, const char *what)
{
	snprintf(s->err, sizeof(s->err), "%s: %s", what, sqlite3_errmsg(s->db));
	return KP_BE_E_DB;
}

static int exec(kp_bstore *s, const char *sql)
{
	char *msg = NULL;

	if (sqlite3_exec(s->db, sql, NULL, NULL, &msg) != SQLITE_OK) {
		snprintf(s->err, sizeof(s->err), "%s", msg != NULL ? msg : "exec failed");
		sqlite3_free(msg);
		return KP_BE_E_DB;
	}
	return KP_BE_OK;
}

static void rollback(kp_bstore *s)
{
	if (!sqlite3_get_autocommit(s->db))
		sqlite3_exec(s->db, "ROLLBACK", NULL, NULL, NULL);
}

static int prep(kp_bstore *s, sqlite3_stmt **st, const char *sql)
{
	if (sqlite3_prepare_v2(s->db, sql, -1, st, NULL) != SQLITE_OK)
		return fail(s, "prepare");
	return KP_BE_OK;
}

static int step_done(kp_bstore *s, sqlite3_stmt *st, const char *what)
{
	int rc = sqlite3_step(st) == SQLITE_DONE ? KP_BE_OK : fail(s, what);

	sqlite3_finalize(st);
	return rc;
}

int kp_bstore_open(kp_bstore **out, const char *path)
{
	kp_bstore *s = calloc(1, sizeof(*s));
	sqlite3_stmt *st = NULL;
	int version = 0, rc;

	*out = NULL;
	if (s == NULL)
		return KP_BE_E_NOMEM;
	if (sqlite3_open_v2(path, &s->db, SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE |
	                    SQLITE_OPEN_NOMUTEX, NULL) != SQLITE_OK) {
		rc = fail(s, path);
		goto fail;
	}
	sqlite3_busy_timeout(s->db, 10000);
	rc = exec(s, "PRAGMA journal_mode = WAL; PRAGMA synchronous = FULL;"
	             "PRAGMA foreign_keys = ON;");
	if (rc != KP_BE_OK)
		goto fail;
	/* Every server connection opens the store: check the schema without the write lock
	 * and take it only when there is something to migrate. */
	for (int attempt = 0; attempt < 2; attempt++) {
		if (sqlite3_prepare_v2(s->db, "PRAGMA user_version", -1, &st, NULL) != SQLITE_OK ||
		    sqlite3_step(st) != SQLITE_ROW) {
			rc = fail(s, "user_version");
			goto fail;
		}
		version = sqlite3_column_int(st, 0);
		sqlite3_finalize(st);
		st = NULL;
		if (version > KP_BSTORE_SCHEMA_VERSION) {
			snprintf(s->err, sizeof(s->err), "backend database schema %d is newer than %d",
			         version, KP_BSTORE_SCHEMA_VERSION);
			rc = KP_BE_E_SCHEMA;
			goto fail;
		}
		if (version == KP_BSTORE_SCHEMA_VERSION)
			break;
		if (attempt == 0) {
			/* Re-read under the lock: another connection may have migrated. */
			rc = exec(s, "BEGIN IMMEDIATE");
			if (rc != KP_BE_OK)
				goto fail;
			continue;
		}
		while (version < KP_BSTORE_SCHEMA_VERSION) {
			char sql[64];

			rc = exec(s, migrations[version]);
			snprintf(sql, sizeof(sql), "PRAGMA user_version = %d", version + 1);
			if (rc == KP_BE_OK)
				rc = exec(s, sql);
			if (rc != KP_BE_OK)
				goto fail;
			version++;
		}
	}
	if (!sqlite3_get_autocommit(s->db)) {
		rc = exec(s, "COMMIT");
		if (rc != KP_BE_OK)
			goto fail;
	}
	*out = s;
	return KP_BE_OK;
fail:
	sqlite3_finalize(st);
	fprintf(stderr, "kippu-backend: store %s: %s\n", path, kp_bstore_errmsg(s));
	kp_bstore_close(s);
	return rc;
}

void kp_bstore_close(kp_bstore *s)
{
	if (s == NULL)
		return;
	if (s->db != NULL) {
		rollback(s);
		sqlite3_close(s->db);
	}
	free(s);
}

int kp_bstore_pragmas(kp_bstore *s, char *journal_mode, size_t cap, int *synchronous,
                      int *foreign_keys)
{
	sqlite3_stmt *st = NULL;
	int rc = prep(s, &st, "SELECT * FROM pragma_journal_mode, pragma_synchronous,"
	                      " pragma_foreign_keys");

	if (rc != KP_BE_OK)
		return rc;
	if (sqlite3_step(st) == SQLITE_ROW) {
		snprintf(journal_mode, cap, "%s", (const char *)sqlite3_column_text(st, 0));
		*synchronous = sqlite3_column_int(st, 1);
		*foreign_keys = sqlite3_column_int(st, 2);
	} else {
		rc = fail(s, "pragmas");
	}
	sqlite3_finalize(st);
	return rc;
}

/* The state version never goes back, even across a restore from a backup: it is the
 * wall clock in milliseconds, or one above the last version if that is ahead (several
 * changes in a millisecond). A backend restored to an older state makes its next version
 * above every version its lost history gave out (made earlier), so terminals take it;
 * kp_bstore_state_at_least covers a restored backend that has not changed yet. */
static uint64_t version_clock_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_REALTIME, &ts);
	return ts.tv_sec < 0 ? 0 : (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

static int bump_version(kp_bstore *s)
{
	sqlite3_stmt *st = NULL;
	int rc = prep(s, &st, "UPDATE meta SET value = max(value + 1, ?1)"
	                      " WHERE key = 'state_version'");

	if (rc != KP_BE_OK)
		return rc;
	sqlite3_bind_int64(st, 1, (sqlite3_int64)version_clock_ms());
	return step_done(s, st, "state version");
}

/* Ends an operator's change: bump the state version (terminals get a new bundle) and
 * commit, or roll everything back. */
static int commit_change(kp_bstore *s, int rc)
{
	if (rc == KP_BE_OK)
		rc = bump_version(s);
	if (rc == KP_BE_OK)
		rc = exec(s, "COMMIT");
	if (rc != KP_BE_OK)
		rollback(s);
	return rc;
}

int kp_bstore_state_version(kp_bstore *s, uint64_t *version)
{
	sqlite3_stmt *st = NULL;
	int rc = prep(s, &st, "SELECT value FROM meta WHERE key = 'state_version'");

	if (rc != KP_BE_OK)
		return rc;
	if (sqlite3_step(st) == SQLITE_ROW)
		*version = (uint64_t)sqlite3_column_int64(st, 0);
	else
		rc = fail(s, "state version");
	sqlite3_finalize(st);
	return rc;
}

static const uint8_t legacy_journal[KP_JOURNAL_ID_LEN];

/* A session for terminal and journal (NULL: the legacy journal), nothing found yet. */
static int session_init(struct kp_bsession *ses, const char *terminal, const uint8_t *journal)
{
	memset(ses, 0, sizeof(*ses));
	if (terminal == NULL || strlen(terminal) > KP_ID_MAX)
		return KP_BE_E_INVAL;
	snprintf(ses->terminal, sizeof(ses->terminal), "%s", terminal);
	memcpy(ses->journal, journal != NULL ? journal : legacy_journal, KP_JOURNAL_ID_LEN);
	return KP_BE_OK;
}

/* Steps st, whose first columns are a journal's epoch, acked and last_hash, into ses. */
static bool journal_fields(sqlite3_stmt *st, struct kp_bsession *ses)
{
	if (sqlite3_step(st) != SQLITE_ROW || sqlite3_column_bytes(st, 2) != KP_SHA256_LEN)
		return false;
	ses->epoch = sqlite3_column_int64(st, 0);
	ses->acked = (uint64_t)sqlite3_column_int64(st, 1);
	memcpy(ses->head, sqlite3_column_blob(st, 2), KP_SHA256_LEN);
	return true;
}

/* The row of this certificate in the terminal's history, made on first sight. */
static int cert_row(kp_bstore *s, struct kp_bsession *ses, const uint8_t *der, size_t len,
                    int64_t now_ms)
{
	sqlite3_stmt *st = NULL;
	int rc = prep(s, &st, "INSERT INTO terminal_certs(terminal, cert, first_seen, last_seen)"
	                      " VALUES (?1, ?2, ?3, ?3) ON CONFLICT(terminal, cert) DO UPDATE SET"
	                      " last_seen = max(last_seen, excluded.last_seen)"
	                      " RETURNING id, first_seen = ?3 AND last_seen = ?3");

	if (rc != KP_BE_OK)
		return rc;
	sqlite3_bind_text(st, 1, ses->terminal, -1, SQLITE_STATIC);
	sqlite3_bind_blob(st, 2, der, (int)len, SQLITE_STATIC);
	sqlite3_bind_int64(st, 3, now_ms);
	if (sqlite3_step(st) == SQLITE_ROW) {
		ses->cert_id = sqlite3_column_int64(st, 0);
		ses->new_cert = sqlite3_column_int(st, 1);
	} else {
		rc = fail(s, "terminal certificate");
	}
	sqlite3_finalize(st);
	return rc;
}

/* The session's journal row: found, or made as the terminal's next epoch. */
static int journal_row(kp_bstore *s, struct kp_bsession *ses, int64_t now_ms)
{
	sqlite3_stmt *st = NULL;
	int rc = prep(s, &st, "INSERT INTO journals(terminal, journal, epoch, first_seen, last_seen)"
	                      " VALUES (?1, ?2, (SELECT coalesce(max(epoch), 0) + 1 FROM journals"
	                      " WHERE terminal = ?1), ?3, ?3) ON CONFLICT(terminal, journal) DO NOTHING");

	if (rc != KP_BE_OK)
		return rc;
	sqlite3_bind_text(st, 1, ses->terminal, -1, SQLITE_STATIC);
	sqlite3_bind_blob(st, 2, ses->journal, KP_JOURNAL_ID_LEN, SQLITE_STATIC);
	sqlite3_bind_int64(st, 3, now_ms);
	rc = step_done(s, st, "journal");
	if (rc != KP_BE_OK)
		return rc;
	ses->new_journal = sqlite3_changes(s->db) == 1;
	rc = prep(s, &st, "UPDATE journals SET last_seen = max(last_seen, ?3)"
	                  " WHERE terminal = ?1 AND journal = ?2"
	                  " RETURNING epoch, acked, last_hash");
	if (rc != KP_BE_OK)
		return rc;
	sqlite3_bind_text(st, 1, ses->terminal, -1, SQLITE_STATIC);
	sqlite3_bind_blob(st, 2, ses->journal, KP_JOURNAL_ID_LEN, SQLITE_STATIC);
	sqlite3_bind_int64(st, 3, now_ms);
	if (!journal_fields(st, ses))
		rc = fail(s, "journal head");
	sqlite3_finalize(st);
	return rc;
}

/* With the hello's transaction open: KP_BE_OK if terminal is registered and not retired,
 * else KP_BE_E_UNREGISTERED and why in s->err. */
static int registered_check(kp_bstore *s, const char *terminal)
{
	sqlite3_stmt *st = NULL;
	int rc = prep(s, &st, "SELECT status FROM terminal_registry WHERE id = ?1");

	if (rc != KP_BE_OK)
		return rc;
	sqlite3_bind_text(st, 1, terminal, -1, SQLITE_STATIC);
	switch (sqlite3_step(st)) {
	case SQLITE_ROW:
		if (strcmp((const char *)sqlite3_column_text(st, 0), "active") != 0) {
			snprintf(s->err, sizeof(s->err), "retired at this backend");
			rc = KP_BE_E_UNREGISTERED;
		}
		break;
	case SQLITE_DONE:
		snprintf(s->err, sizeof(s->err), "not registered at this backend");
		rc = KP_BE_E_UNREGISTERED;
		break;
	default:
		rc = fail(s, "terminal registry");
	}
	sqlite3_finalize(st);
	return rc;
}

int kp_bstore_hello(kp_bstore *s, struct kp_bsession *ses, const char *terminal,
                    const uint8_t *journal, const uint8_t *cert_der, size_t cert_len,
                    int64_t now_ms)
{
	sqlite3_stmt *st = NULL;
	int rc;

	if (session_init(ses, terminal, journal) != KP_BE_OK || cert_der == NULL || cert_len == 0)
		return KP_BE_E_INVAL;
	rc = exec(s, "BEGIN IMMEDIATE");
	if (rc != KP_BE_OK)
		return rc;
	/* in the same transaction as what it guards: a retire is never half seen */
	rc = registered_check(s, terminal);
	if (rc != KP_BE_OK) {
		rollback(s);
		return rc;
	}
	/* terminals.cert: the certificate of the last connection; the history has them all */
	rc = prep(s, &st, "INSERT INTO terminals(id, cert, first_seen, last_seen)"
	                  " VALUES (?1, ?2, ?3, ?3) ON CONFLICT(id) DO UPDATE SET"
	                  " cert = excluded.cert, last_seen = excluded.last_seen");
	if (rc == KP_BE_OK) {
		sqlite3_bind_text(st, 1, terminal, -1, SQLITE_STATIC);
		sqlite3_bind_blob(st, 2, cert_der, (int)cert_len, SQLITE_STATIC);
		sqlite3_bind_int64(st, 3, now_ms);
		rc = step_done(s, st, "terminal");
	}
	if (rc == KP_BE_OK)
		rc = cert_row(s, ses, cert_der, cert_len, now_ms);
	if (rc == KP_BE_OK)
		rc = journal_row(s, ses, now_ms);
	if (rc == KP_BE_OK)
		rc = exec(s, "COMMIT");
	if (rc != KP_BE_OK)
		rollback(s);
	return rc;
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
static int session_of(kp_bstore *s, struct kp_bsession *ses, const char *terminal,
                      const uint8_t *journal)
{
	sqlite3_stmt *st = NULL;
	int rc;

	if (session_init(ses, terminal, journal) != KP_BE_OK)
		return KP_BE_E_INVAL;
	rc = prep(s, &st, "SELECT j.epoch, j.acked, j.last_hash, (SELECT max(c.id) FROM"
	                  " terminal_certs c WHERE c.terminal = j.terminal) FROM journals j"
	                  " WHERE j.terminal = ?1 AND j.journal = ?2");
	if (rc != KP_BE_OK)
		return rc;
	sqlite3_bind_text(st, 1, terminal, -1, SQLITE_STATIC);
	sqlite3_bind_blob(st, 2, ses->journal, KP_JOURNAL_ID_LEN, SQLITE_STATIC);
	if (journal_fields(st, ses)) {
		ses->cert_id = sqlite3_column_int64(st, 3);
	} else {
		snprintf(s->err, sizeof(s->err), "unknown terminal or journal: %s", terminal);
		rc = KP_BE_E_NOTFOUND;
	}
	sqlite3_finalize(st);
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
	rc = exec(s, "BEGIN IMMEDIATE");
	if (rc != KP_BE_OK)
		return rc;
	rc = kp_bstore_state_version(s, &v);
	if (rc == KP_BE_OK && have > v) {
		sqlite3_stmt *st = NULL;

		rc = prep(s, &st, "UPDATE meta SET value = max(?1, ?2) WHERE key = 'state_version'");
		if (rc == KP_BE_OK) {
			sqlite3_bind_int64(st, 1, (sqlite3_int64)(have + 1));
			sqlite3_bind_int64(st, 2, (sqlite3_int64)version_clock_ms());
			rc = step_done(s, st, "state version");
		}
		*raised = rc == KP_BE_OK;
		*was = v;
	}
	if (rc == KP_BE_OK)
		rc = exec(s, "COMMIT");
	if (rc != KP_BE_OK) {
		rollback(s);
		*raised = 0;
	}
	return rc;
}

static int quarantine(kp_bstore *s, const char *terminal, uint64_t seq, const char *reason,
                      const struct kp_ingest *r, int64_t now_ms)
{
	sqlite3_stmt *st = NULL;
	int rc = prep(s, &st, "INSERT INTO quarantine(terminal, seq, reason, cose, at)"
	                      " VALUES (?1, ?2, ?3, ?4, ?5)");

	if (rc != KP_BE_OK)
		return rc;
	sqlite3_bind_text(st, 1, terminal, -1, SQLITE_STATIC);
	sqlite3_bind_int64(st, 2, (sqlite3_int64)seq);
	sqlite3_bind_text(st, 3, reason, -1, SQLITE_STATIC);
	if (r != NULL)
		sqlite3_bind_blob(st, 4, r->cose, (int)r->cose_len, SQLITE_STATIC);
	sqlite3_bind_int64(st, 5, now_ms);
	rc = step_done(s, st, "quarantine");
	if (rc != KP_BE_OK)
		return rc;
	rc = prep(s, &st, "UPDATE terminals SET quarantined = 1 WHERE id = ?1");
	if (rc != KP_BE_OK)
		return rc;
	sqlite3_bind_text(st, 1, terminal, -1, SQLITE_STATIC);
	return step_done(s, st, "quarantine flag");
}

/* 1 if the journal holds this record under its seq (stored, or an alias of another
 * epoch's), judged by the payload's hash; 0 if another. */
static int same_as_stored(kp_bstore *s, const struct kp_bsession *ses, const struct kp_ingest *r,
                          int *same)
{
	sqlite3_stmt *st = NULL;
	int rc = prep(s, &st, "SELECT hash FROM records WHERE terminal = ?1 AND seq = ?3 AND"
	                      " journal = coalesce((SELECT of_journal FROM record_aliases a WHERE"
	                      " a.terminal = ?1 AND a.journal = ?2 AND a.seq = ?3), ?2)");

	if (rc != KP_BE_OK)
		return rc;
	sqlite3_bind_text(st, 1, ses->terminal, -1, SQLITE_STATIC);
	sqlite3_bind_blob(st, 2, ses->journal, KP_JOURNAL_ID_LEN, SQLITE_STATIC);
	sqlite3_bind_int64(st, 3, (sqlite3_int64)r->rec.seq);
	*same = 0;
	if (sqlite3_step(st) == SQLITE_ROW)
		*same = sqlite3_column_bytes(st, 0) == KP_SHA256_LEN &&
		        memcmp(sqlite3_column_blob(st, 0), r->hash, KP_SHA256_LEN) == 0;
	sqlite3_finalize(st);
	return KP_BE_OK;
}

/* The record another epoch of the terminal holds under this seq with this payload hash
 * (the same history up to it): *found = 1 and the alias made. */
static int alias_of_held(kp_bstore *s, const struct kp_bsession *ses, const struct kp_ingest *r,
                         int64_t now_ms, int *found)
{
	sqlite3_stmt *st = NULL;
	int rc = prep(s, &st, "INSERT INTO record_aliases(terminal, journal, seq, of_journal,"
	                      " received_ms) SELECT terminal, ?2, seq, journal, ?5 FROM records"
	                      " INDEXED BY records_seq"   /* not the PK's (terminal): a scan */
	                      " WHERE terminal = ?1 AND seq = ?3 AND hash = ?4 AND journal <> ?2"
	                      " LIMIT 1");

	*found = 0;
	if (rc != KP_BE_OK)
		return rc;
	sqlite3_bind_text(st, 1, ses->terminal, -1, SQLITE_STATIC);
	sqlite3_bind_blob(st, 2, ses->journal, KP_JOURNAL_ID_LEN, SQLITE_STATIC);
	sqlite3_bind_int64(st, 3, (sqlite3_int64)r->rec.seq);
	sqlite3_bind_blob(st, 4, r->hash, KP_SHA256_LEN, SQLITE_STATIC);
	sqlite3_bind_int64(st, 5, now_ms);
	rc = step_done(s, st, "record alias");
	if (rc == KP_BE_OK)
		*found = sqlite3_changes(s->db) == 1;
	return rc;
}

/* ---- My Number linkage ---- */

/* Whether a linkage may take a new link at time at_ms: KP_BE_OK, else KP_BE_E_NOTFOUND
 * ("unknown linkage") or KP_BE_E_INVAL ("revoked", "expired", "not yet valid"), the word in
 * *why. early: a linkage whose validity has not begun takes links too. */
static int linkage_usable(kp_bstore *s, const uint8_t linkage[KP_TOKEN_LEN], int64_t at_ms,
                          int early, const char **why)
{
	sqlite3_stmt *st = NULL;
	int rc = prep(s, &st, "SELECT status, valid_from, valid_until FROM linkages WHERE token = ?1");
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
		rc = fail(s, "linkage");
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
	int rc = prep(s, &st, "INSERT INTO linkage_cards(linkage, card, linked, source)"
	                      " VALUES (?1, ?2, ?3, ?4) ON CONFLICT(linkage, card) DO NOTHING");

	if (rc != KP_BE_OK)
		return rc;
	sqlite3_bind_blob(st, 1, linkage, KP_TOKEN_LEN, SQLITE_STATIC);
	sqlite3_bind_blob(st, 2, card, KP_TOKEN_LEN, SQLITE_STATIC);
	sqlite3_bind_int64(st, 3, linked_ms);
	sqlite3_bind_text(st, 4, source, -1, SQLITE_STATIC);
	rc = step_done(s, st, "link");
	*added = rc == KP_BE_OK && sqlite3_changes(s->db) > 0;
	return rc;
}

/* A link record from a terminal (inside the ingest transaction): link if the linkage allows
 * it at the record's time, and note the outcome either way. The record itself is already
 * stored, so a refusal here refuses the link, never the record. */
static int link_request(kp_bstore *s, const struct kp_bsession *ses,
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
	rc = prep(s, &st, "INSERT INTO link_requests(terminal, seq, linkage, card, result, reason,"
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
	return step_done(s, st, "link request");
}

static int meta_int(kp_bstore *s, const char *key, int64_t def, int64_t *v)
{
	sqlite3_stmt *st = NULL;
	int rc = prep(s, &st, "SELECT value FROM meta WHERE key = ?1");

	if (rc != KP_BE_OK)
		return rc;
	sqlite3_bind_text(st, 1, key, -1, SQLITE_STATIC);
	*v = sqlite3_step(st) == SQLITE_ROW ? sqlite3_column_int64(st, 0) : def;
	sqlite3_finalize(st);
	return KP_BE_OK;
}

/* The stop places of a feed go with it (inside the caller's transaction). */
static int change_feed_places(kp_bstore *s, const char *feed_id)
{
	sqlite3_stmt *st = NULL;
	int rc = prep(s, &st, "DELETE FROM stop_places WHERE feed_id = ?1");

	if (rc != KP_BE_OK)
		return rc;
	sqlite3_bind_text(st, 1, feed_id, -1, SQLITE_STATIC);
	return step_done(s, st, "stop places");
}

/* ---- the scheme's My Number policy (bundle format 4) ---- */

static int allow_list(kp_bstore *s, const char *kind, char (*ids)[KP_ID_MAX + 1], size_t *n)
{
	sqlite3_stmt *st = NULL;
	int rc = prep(s, &st, "SELECT id FROM direct_tap_allow WHERE kind = ?1 ORDER BY id");

	*n = 0;
	if (rc != KP_BE_OK)
		return rc;
	sqlite3_bind_text(st, 1, kind, -1, SQLITE_STATIC);
	while (sqlite3_step(st) == SQLITE_ROW && *n < KP_POLICY_LIST_MAX) {
		const char *id = (const char *)sqlite3_column_text(st, 0);

		/* a row put in by hand that no terminal could hold is left out */
		if (id != NULL && kp_cbor_id_valid(id, false))
			snprintf(ids[(*n)++], KP_ID_MAX + 1, "%s", id);
	}
	sqlite3_finalize(st);
	return KP_BE_OK;
}

int kp_bstore_get_policy(kp_bstore *s, struct kp_bundle_policy *p)
{
	int64_t direct = 0;
	int rc;

	memset(p, 0, sizeof(*p));
	rc = meta_int(s, "direct_taps", 0, &direct);
	if (rc == KP_BE_OK)
		rc = meta_int(s, "direct_rides", 0, &p->direct_rides);
	if (rc == KP_BE_OK)
		rc = meta_int(s, "direct_value", 0, &p->direct_value);
	if (rc == KP_BE_OK)
		rc = meta_int(s, "elig_max_age_s", KP_POLICY_MAX_AGE_DEFAULT, &p->max_age_s);
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

static int meta_put(kp_bstore *s, const char *key, int64_t v);

static int allow_put(kp_bstore *s, const char *kind, const char (*ids)[KP_ID_MAX + 1], size_t n)
{
	int rc = KP_BE_OK;

	for (size_t i = 0; rc == KP_BE_OK && i < n; i++) {
		sqlite3_stmt *st = NULL;

		rc = prep(s, &st, "INSERT OR IGNORE INTO direct_tap_allow(kind, id) VALUES (?1, ?2)");
		if (rc != KP_BE_OK)
			break;
		sqlite3_bind_text(st, 1, kind, -1, SQLITE_STATIC);
		sqlite3_bind_text(st, 2, ids[i], -1, SQLITE_TRANSIENT);
		rc = step_done(s, st, "direct tap allow");
	}
	return rc;
}

int kp_bstore_set_policy(kp_bstore *s, const struct kp_bundle_policy *p)
{
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

		if (!kp_cbor_id_valid(id, false)) {
			snprintf(s->err, sizeof(s->err), "'%.40s': ids are 1-32 characters of "
			         "A-Z a-z 0-9 - _ .", id);
			return KP_BE_E_INVAL;
		}
	}
	rc = exec(s, "BEGIN IMMEDIATE");
	if (rc != KP_BE_OK)
		return rc;
	for (size_t i = 0; rc == KP_BE_OK && i < p->n_products; i++) {
		sqlite3_stmt *st = NULL;

		rc = prep(s, &st, "SELECT 1 FROM products WHERE id = ?1");
		if (rc != KP_BE_OK)
			break;
		sqlite3_bind_text(st, 1, p->products[i], -1, SQLITE_TRANSIENT);
		if (sqlite3_step(st) != SQLITE_ROW) {
			snprintf(s->err, sizeof(s->err), "no product %s", p->products[i]);
			rc = KP_BE_E_NOTFOUND;
		}
		sqlite3_finalize(st);
	}
	if (rc == KP_BE_OK)
		rc = exec(s, "DELETE FROM direct_tap_allow");
	if (rc == KP_BE_OK && p->direct)
		rc = allow_put(s, "product", (const char (*)[KP_ID_MAX + 1])p->products, p->n_products);
	if (rc == KP_BE_OK && p->direct)
		rc = allow_put(s, "category", (const char (*)[KP_ID_MAX + 1])p->categories,
		               p->n_categories);
	if (rc == KP_BE_OK)
		rc = meta_put(s, "direct_taps", p->direct ? 1 : 0);
	if (rc == KP_BE_OK)
		rc = meta_put(s, "direct_rides", p->direct ? p->direct_rides : 0);
	if (rc == KP_BE_OK)
		rc = meta_put(s, "direct_value", p->direct ? p->direct_value : 0);
	if (rc == KP_BE_OK)
		rc = meta_put(s, "elig_max_age_s", p->max_age_s);
	return commit_change(s, rc);
}

int kp_bstore_get_clone_policy(kp_bstore *s, int *action, int64_t *speed_kmh, int64_t *gap_s)
{
	int64_t a = 1;
	int rc = meta_int(s, "clone_action", 1, &a);

	if (rc == KP_BE_OK)
		rc = meta_int(s, "clone_speed_kmh", 120, speed_kmh);
	if (rc == KP_BE_OK)
		rc = meta_int(s, "clone_gap_s", 60, gap_s);
	*action = a >= 0 && a <= 2 ? (int)a : 1;
	return rc;
}

int kp_bstore_set_clone_policy(kp_bstore *s, int action, int64_t speed_kmh, int64_t gap_s)
{
	int rc;

	s->err[0] = '\0';
	if (action < 0 || action > 2 || speed_kmh < 1 || speed_kmh > 2000 || gap_s < 0 ||
	    gap_s > 86400) {
		snprintf(s->err, sizeof(s->err), "clones: off, report or suspend; speed 1 to 2000 "
		         "km/h; gap 0 to 86400 s");
		return KP_BE_E_INVAL;
	}
	rc = exec(s, "BEGIN IMMEDIATE");
	if (rc == KP_BE_OK)
		rc = meta_put(s, "clone_action", action);
	if (rc == KP_BE_OK)
		rc = meta_put(s, "clone_speed_kmh", speed_kmh);
	if (rc == KP_BE_OK)
		rc = meta_put(s, "clone_gap_s", gap_s);
	return commit_change(s, rc);
}

int kp_bstore_clone_clear(kp_bstore *s, const uint8_t linkage[KP_TOKEN_LEN], int64_t now_ms)
{
	sqlite3_stmt *st = NULL;
	int rc = exec(s, "BEGIN IMMEDIATE");

	s->err[0] = '\0';
	if (rc == KP_BE_OK)
		rc = prep(s, &st, "UPDATE clone_flags SET cleared = ?2 WHERE linkage = ?1"
		                  " AND cleared IS NULL");
	if (rc == KP_BE_OK) {
		sqlite3_bind_blob(st, 1, linkage, KP_TOKEN_LEN, SQLITE_STATIC);
		sqlite3_bind_int64(st, 2, now_ms);
		rc = step_done(s, st, "clone clear");
	}
	if (rc == KP_BE_OK && sqlite3_changes(s->db) == 0) {
		snprintf(s->err, sizeof(s->err), "no open flag for that linkage");
		rc = KP_BE_E_NOTFOUND;
	}
	return commit_change(s, rc);
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
	rc = exec(s, "BEGIN IMMEDIATE");
	if (rc == KP_BE_OK)
		rc = change_feed_places(s, feed_id);
	for (size_t i = 0; rc == KP_BE_OK && i < n; i++) {
		sqlite3_stmt *st = NULL;

		rc = prep(s, &st, "INSERT OR REPLACE INTO stop_places(feed_id, stop_id, lat_e6, lon_e6)"
		                  " VALUES (?1, ?2, ?3, ?4)");
		if (rc != KP_BE_OK)
			break;
		sqlite3_bind_text(st, 1, feed_id, -1, SQLITE_STATIC);
		sqlite3_bind_text(st, 2, places[i].stop_id, -1, SQLITE_STATIC);
		sqlite3_bind_int64(st, 3, places[i].lat_e6);
		sqlite3_bind_int64(st, 4, places[i].lon_e6);
		rc = step_done(s, st, "stop place");
	}
	if (rc == KP_BE_OK)
		rc = exec(s, "COMMIT");
	if (rc != KP_BE_OK)
		rollback(s);
	return rc;
}

/* A terminal judges the age of its eligibility data by the bundle's `issued` time, so a
 * backend whose state does not change still sends a fresh bundle at least every quarter of
 * the maximum age: the state version moves on when the last refresh is that old. */
static int bundle_refresh(kp_bstore *s, int64_t now_ms)
{
	int64_t max_age = KP_POLICY_MAX_AGE_DEFAULT, last = -1;
	int rc = meta_int(s, "elig_max_age_s", KP_POLICY_MAX_AGE_DEFAULT, &max_age);

	if (rc == KP_BE_OK)
		rc = meta_int(s, "elig_refreshed_ms", -1, &last);
	if (rc != KP_BE_OK || (last >= 0 && now_ms - last < max_age * 1000 / 4 && now_ms >= last))
		return rc;
	rc = exec(s, "BEGIN IMMEDIATE");
	if (rc == KP_BE_OK)
		rc = meta_put(s, "elig_refreshed_ms", now_ms);
	/* the first call only starts the clock */
	if (rc == KP_BE_OK && last >= 0 && now_ms > last)
		rc = bump_version(s);
	if (rc == KP_BE_OK)
		rc = exec(s, "COMMIT");
	if (rc != KP_BE_OK)
		rollback(s);
	return rc;
}

/* The service days of a pass first used at at_ms, as a terminal computes them
 * (kp_service_days): from the start of that service day, days * 24 h. */
static int service_days(kp_bstore *s, int64_t at_ms, int days, int64_t *from_ms,
                        int64_t *until_ms)
{
	int64_t end_s = 14400, offset_s = 32400, day;
	int rc = meta_int(s, "service_day_end_s", 14400, &end_s);

	if (rc == KP_BE_OK)
		rc = meta_int(s, "utc_offset_s", 32400, &offset_s);
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
	sqlite3_stmt *st = NULL;
	char kind[16] = "";
	int64_t use = 0, from = 0, until = 0;
	int first_use = 0, days = 0, rc;

	rc = prep(s, &st, "SELECT e.first_use, p.product_kind, coalesce(p.days, 0)"
	                  " FROM entitlements e JOIN products p ON p.id = e.product_id"
	                  " WHERE e.id = ?1");
	if (rc != KP_BE_OK)
		return rc;
	sqlite3_bind_int64(st, 1, c->entitlement);
	if (sqlite3_step(st) == SQLITE_ROW) {
		first_use = sqlite3_column_int(st, 0);
		snprintf(kind, sizeof(kind), "%s", (const char *)sqlite3_column_text(st, 1));
		days = sqlite3_column_int(st, 2);
	}
	sqlite3_finalize(st);
	if (strcmp(kind, "stored") == 0)
		use = c->amount;
	else if (strcmp(kind, "nride") == 0)
		use = c->rides;
	if (first_use && strcmp(kind, "period") == 0 && days > 0) {
		rc = service_days(s, c->time_ms, days, &from, &until);
		if (rc == KP_BE_OK)
			rc = prep(s, &st, "UPDATE entitlements SET first_use = 0, valid_from = ?2,"
			                  " valid_until = ?3 WHERE id = ?1 AND first_use = 1");
		if (rc != KP_BE_OK)
			return rc;
		sqlite3_bind_int64(st, 1, c->entitlement);
		sqlite3_bind_int64(st, 2, from);
		sqlite3_bind_int64(st, 3, until);
		rc = step_done(s, st, "activate");
		if (rc != KP_BE_OK)
			return rc;
	}
	if (use <= 0)
		return KP_BE_OK;
	/* Merge the use: the backend's truth is bought minus every terminal's uses. */
	rc = prep(s, &st, "UPDATE entitlements SET used = used + ?2 WHERE id = ?1");
	if (rc != KP_BE_OK)
		return rc;
	sqlite3_bind_int64(st, 1, c->entitlement);
	sqlite3_bind_int64(st, 2, use);
	rc = step_done(s, st, "use");
	if (rc != KP_BE_OK)
		return rc;
	/* Overdrawn across terminals: deny the card until an operator looks at it. */
	rc = prep(s, &st, "INSERT INTO denylist(token, reason, added)"
	                  " SELECT token, 'overdraft of entitlement ' || id, ?2 FROM entitlements"
	                  " WHERE id = ?1 AND used > bought ON CONFLICT(token) DO NOTHING");
	if (rc != KP_BE_OK)
		return rc;
	sqlite3_bind_int64(st, 1, c->entitlement);
	sqlite3_bind_int64(st, 2, now_ms);
	return step_done(s, st, "overdraft");
}

/* ---- clone detection (issue 13) ---- */

#define CLONE_WINDOW_MS (12LL * 3600 * 1000)    /* pairs further apart are never impossible */

/* Where a record was made: its stop's coordinates in the operator's fare feed, else in any
 * feed that has the stop. 0: not known. */
static int stop_place(kp_bstore *s, const char *operator_id, const char *stop, int64_t *lat,
                      int64_t *lon, int *known)
{
	sqlite3_stmt *st = NULL;
	int rc;

	*known = 0;
	if (stop == NULL || stop[0] == '\0')
		return KP_BE_OK;
	rc = prep(s, &st, "SELECT p.lat_e6, p.lon_e6 FROM stop_places p WHERE p.stop_id = ?2"
	                  " ORDER BY p.feed_id <> coalesce((SELECT feed_id FROM operator_fares"
	                  " WHERE operator_id = ?1), ''), p.feed_id LIMIT 1");
	if (rc != KP_BE_OK)
		return rc;
	sqlite3_bind_text(st, 1, operator_id, -1, SQLITE_TRANSIENT);
	sqlite3_bind_text(st, 2, stop, -1, SQLITE_TRANSIENT);
	if (sqlite3_step(st) == SQLITE_ROW) {
		*lat = sqlite3_column_int64(st, 0);
		*lon = sqlite3_column_int64(st, 1);
		*known = 1;
	}
	sqlite3_finalize(st);
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
	sqlite3_stmt *st = NULL;
	int rc = prep(s, &st, "INSERT OR IGNORE INTO clone_flags(linkage, kind, terminal_a, seq_a,"
	                      " terminal_b, seq_b, detail, at, suspended) VALUES"
	                      " (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)");

	if (rc != KP_BE_OK)
		return rc;
	sqlite3_bind_blob(st, 1, linkage, KP_TOKEN_LEN, SQLITE_STATIC);
	sqlite3_bind_text(st, 2, kind, -1, SQLITE_STATIC);
	sqlite3_bind_text(st, 3, ta, -1, SQLITE_TRANSIENT);
	sqlite3_bind_int64(st, 4, sa);
	sqlite3_bind_text(st, 5, tb, -1, SQLITE_TRANSIENT);
	sqlite3_bind_int64(st, 6, sb);
	sqlite3_bind_text(st, 7, detail, -1, SQLITE_TRANSIENT);
	sqlite3_bind_int64(st, 8, now_ms);
	sqlite3_bind_int(st, 9, suspend);
	rc = step_done(s, st, "clone flag");
	if (rc == KP_BE_OK && sqlite3_changes(s->db) > 0)
		fprintf(stderr, "kippu-backend: possible copied My Number card: %s (%s %lld, %s "
		        "%lld)%s\n", detail, ta, (long long)sa, tb, (long long)sb,
		        suspend ? "; linkage suspended" : "");
	return rc;
}

/* The linkage a record used: its via, or its token when that is a linkage (a direct tap). */
static int record_linkage(kp_bstore *s, const struct kp_record *c, uint8_t out[KP_TOKEN_LEN],
                          int *found)
{
	sqlite3_stmt *st = NULL;
	int rc;

	*found = 0;
	if (c->has_via) {
		memcpy(out, c->via, KP_TOKEN_LEN);
		*found = 1;
		return KP_BE_OK;
	}
	if (!c->has_token)
		return KP_BE_OK;
	rc = prep(s, &st, "SELECT 1 FROM linkages WHERE token = ?1");
	if (rc != KP_BE_OK)
		return rc;
	sqlite3_bind_blob(st, 1, c->token, KP_TOKEN_LEN, SQLITE_STATIC);
	if (sqlite3_step(st) == SQLITE_ROW) {
		memcpy(out, c->token, KP_TOKEN_LEN);
		*found = 1;
	}
	sqlite3_finalize(st);
	return KP_BE_OK;
}

/* Direct taps of the linkage in the record's service day, at every terminal, against the
 * scheme's rides per day. */
static int clone_limit(kp_bstore *s, const char *terminal, const struct kp_record *c,
                       const uint8_t linkage[KP_TOKEN_LEN], int suspend, int64_t now_ms)
{
	sqlite3_stmt *st = NULL;
	int64_t limit = 0, direct = 0, from = 0, until = 0, n = 0;
	char detail[128];
	int rc = meta_int(s, "direct_taps", 0, &direct);

	if (rc == KP_BE_OK)
		rc = meta_int(s, "direct_rides", 0, &limit);
	if (rc != KP_BE_OK || !direct || limit <= 0 || !c->has_token ||
	    memcmp(c->token, linkage, KP_TOKEN_LEN) != 0 || strcmp(c->result, "accepted") != 0 ||
	    strcmp(c->event, "tap_off") == 0)
		return rc;
	rc = service_days(s, c->time_ms, 1, &from, &until);
	if (rc == KP_BE_OK)
		rc = prep(s, &st, "SELECT count(*) FROM records WHERE token = ?1 AND kind = 'tap'"
		                  " AND result = 'accepted' AND coalesce(event, 'tap') <> 'tap_off'"
		                  " AND time_ms >= ?2 AND time_ms < ?3");
	if (rc != KP_BE_OK)
		return rc;
	sqlite3_bind_blob(st, 1, linkage, KP_TOKEN_LEN, SQLITE_STATIC);
	sqlite3_bind_int64(st, 2, from);
	sqlite3_bind_int64(st, 3, until);
	n = sqlite3_step(st) == SQLITE_ROW ? sqlite3_column_int64(st, 0) : 0;
	sqlite3_finalize(st);
	if (n <= limit)
		return KP_BE_OK;
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
	sqlite3_stmt *st = NULL;
	uint8_t linkage[KP_TOKEN_LEN];
	int64_t action = 1, speed_kmh = 120, gap_s = 60, lat = 0, lon = 0;
	int found = 0, here = 0, rc;

	if (strcmp(c->kind, "tap") != 0 ||
	    (strcmp(c->result, "accepted") != 0 && strcmp(c->result, "refused") != 0))
		return KP_BE_OK;
	rc = meta_int(s, "clone_action", 1, &action);
	if (rc == KP_BE_OK && action > 0)
		rc = record_linkage(s, c, linkage, &found);
	if (rc != KP_BE_OK || action <= 0 || !found)
		return rc;
	rc = meta_int(s, "clone_speed_kmh", 120, &speed_kmh);
	if (rc == KP_BE_OK)
		rc = meta_int(s, "clone_gap_s", 60, &gap_s);
	if (rc == KP_BE_OK)
		rc = stop_place(s, c->operator_id, c->stop, &lat, &lon, &here);
	if (rc == KP_BE_OK)
		rc = clone_limit(s, terminal, c, linkage, action == 2, now_ms);
	if (rc == KP_BE_OK)
		rc = prep(s, &st, "SELECT terminal, seq, time_ms, operator, stop FROM records"
		                  " WHERE (via = ?1 OR token = ?1) AND terminal <> ?2 AND kind = 'tap'"
		                  " AND result IN ('accepted', 'refused')"
		                  " AND time_ms BETWEEN ?3 AND ?4 ORDER BY abs(time_ms - ?5) LIMIT 16");
	if (rc != KP_BE_OK)
		return rc;
	sqlite3_bind_blob(st, 1, linkage, KP_TOKEN_LEN, SQLITE_STATIC);
	sqlite3_bind_text(st, 2, terminal, -1, SQLITE_STATIC);
	sqlite3_bind_int64(st, 3, c->time_ms - CLONE_WINDOW_MS);
	sqlite3_bind_int64(st, 4, c->time_ms + CLONE_WINDOW_MS);
	sqlite3_bind_int64(st, 5, c->time_ms);
	while (rc == KP_BE_OK && sqlite3_step(st) == SQLITE_ROW) {
		const char *other = (const char *)sqlite3_column_text(st, 0);
		int64_t seq = sqlite3_column_int64(st, 1), t = sqlite3_column_int64(st, 2);
		int64_t dt_ms = t > c->time_ms ? t - c->time_ms : c->time_ms - t, lat2 = 0, lon2 = 0;
		int there = 0, impossible = 0;
		char detail[160];

		rc = stop_place(s, (const char *)sqlite3_column_text(st, 3),
		                (const char *)sqlite3_column_text(st, 4), &lat2, &lon2, &there);
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
	sqlite3_finalize(st);
	return rc;
}

static int store_record(kp_bstore *s, const struct kp_bsession *ses, const struct kp_ingest *r,
                        int64_t now_ms)
{
	const struct kp_record *c = &r->rec;
	sqlite3_stmt *st = NULL;
	int rc = prep(s, &st, "INSERT INTO records(terminal, seq, time_ms, token, operator, route,"
	                      " stop, product, ent_id, rides, amount, left_after, result, reason,"
	                      " cose, payload, hash, received_ms, kind, via, category, event,"
	                      " journal, cert_id) VALUES"
	                      " (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15,"
	                      " ?16, ?17, ?18, ?19, ?20, ?21, ?22, ?23, ?24)");

	if (rc != KP_BE_OK)
		return rc;
	sqlite3_bind_text(st, 1, ses->terminal, -1, SQLITE_STATIC);
	sqlite3_bind_int64(st, 2, (sqlite3_int64)c->seq);
	sqlite3_bind_int64(st, 3, c->time_ms);
	if (c->has_token)
		sqlite3_bind_blob(st, 4, c->token, KP_TOKEN_LEN, SQLITE_STATIC);
	sqlite3_bind_text(st, 5, c->operator_id, -1, SQLITE_STATIC);
	if (c->route[0] != '\0')
		sqlite3_bind_text(st, 6, c->route, -1, SQLITE_STATIC);
	if (c->stop[0] != '\0')
		sqlite3_bind_text(st, 7, c->stop, -1, SQLITE_STATIC);
	if (c->product[0] != '\0')
		sqlite3_bind_text(st, 8, c->product, -1, SQLITE_STATIC);
	if (c->entitlement != 0)
		sqlite3_bind_int64(st, 9, c->entitlement);
	sqlite3_bind_int64(st, 10, c->rides);
	sqlite3_bind_int64(st, 11, c->amount);
	if (c->has_left)
		sqlite3_bind_int64(st, 12, c->left);
	sqlite3_bind_text(st, 13, c->result, -1, SQLITE_STATIC);
	sqlite3_bind_text(st, 14, c->reason, -1, SQLITE_STATIC);
	sqlite3_bind_blob(st, 15, r->cose, (int)r->cose_len, SQLITE_STATIC);
	sqlite3_bind_blob(st, 16, r->payload, (int)r->payload_len, SQLITE_STATIC);
	sqlite3_bind_blob(st, 17, r->hash, KP_SHA256_LEN, SQLITE_STATIC);
	sqlite3_bind_int64(st, 18, now_ms);
	sqlite3_bind_text(st, 19, c->kind, -1, SQLITE_STATIC);
	if (c->has_via)
		sqlite3_bind_blob(st, 20, c->via, KP_TOKEN_LEN, SQLITE_STATIC);
	if (c->category[0] != '\0')
		sqlite3_bind_text(st, 21, c->category, -1, SQLITE_STATIC);
	if (c->event[0] != '\0')
		sqlite3_bind_text(st, 22, c->event, -1, SQLITE_STATIC);
	sqlite3_bind_blob(st, 23, ses->journal, KP_JOURNAL_ID_LEN, SQLITE_STATIC);
	if (ses->cert_id > 0)
		sqlite3_bind_int64(st, 24, ses->cert_id);
	rc = step_done(s, st, "record");
	if (rc == KP_BE_OK && strcmp(c->kind, "link") == 0)
		return link_request(s, ses, c, now_ms);
	if (rc != KP_BE_OK || strcmp(c->result, "accepted") != 0 || c->entitlement == 0)
		return rc;
	return merge_use(s, c, now_ms);
}

int kp_bstore_ingest(kp_bstore *s, const char *terminal, const struct kp_ingest *recs, size_t n,
                     int64_t now_ms, uint64_t *acked, uint64_t *refused_seq, char *reason,
                     size_t reason_cap)
{
	struct kp_bsession ses;
	int rc = session_of(s, &ses, terminal, NULL);

	*refused_seq = 0;
	*acked = 0;
	reason[0] = '\0';
	if (rc != KP_BE_OK)
		return rc == KP_BE_E_NOTFOUND ? fail(s, "unknown terminal") : rc;
	return kp_bstore_ingest_session(s, &ses, recs, n, now_ms, acked, refused_seq, reason,
	                                reason_cap);
}

int kp_bstore_ingest_session(kp_bstore *s, const struct kp_bsession *ses,
                             const struct kp_ingest *recs, size_t n, int64_t now_ms,
                             uint64_t *acked, uint64_t *refused_seq, char *reason,
                             size_t reason_cap)
{
	const char *terminal = ses->terminal;
	sqlite3_stmt *st = NULL;
	uint8_t last_hash[KP_SHA256_LEN];
	uint64_t held = 0, held_before = 0;
	int quarantined = 0, epochs = 0, moved = 0, rc;

	*refused_seq = 0;
	*acked = 0;
	reason[0] = '\0';
	rc = exec(s, "BEGIN IMMEDIATE");
	if (rc != KP_BE_OK)
		return rc;
	rc = prep(s, &st, "SELECT j.acked, j.last_hash, t.quarantined, (SELECT count(*) > 1 FROM"
	                  " journals k WHERE k.terminal = j.terminal) FROM journals j"
	                  " JOIN terminals t ON t.id = j.terminal"
	                  " WHERE j.terminal = ?1 AND j.journal = ?2");
	if (rc != KP_BE_OK)
		goto out;
	sqlite3_bind_text(st, 1, terminal, -1, SQLITE_STATIC);
	sqlite3_bind_blob(st, 2, ses->journal, KP_JOURNAL_ID_LEN, SQLITE_STATIC);
	if (sqlite3_step(st) != SQLITE_ROW || sqlite3_column_bytes(st, 1) != KP_SHA256_LEN) {
		sqlite3_finalize(st);
		rc = fail(s, "unknown terminal");
		goto out;
	}
	held = (uint64_t)sqlite3_column_int64(st, 0);
	held_before = held;
	memcpy(last_hash, sqlite3_column_blob(st, 1), KP_SHA256_LEN);
	quarantined = sqlite3_column_int(st, 2);
	epochs = sqlite3_column_int(st, 3);   /* another epoch could hold these records */
	sqlite3_finalize(st);

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

			rc = same_as_stored(s, ses, r, &same);
			if (rc != KP_BE_OK)
				goto out;
			if (same)
				continue;            /* sent twice: changes nothing */
			why = "a different record under a sequence number already held";
		} else if (!r->sig_ok) {
			why = "bad signature";
		} else if (r->decode_rc != 0) {
			why = "payload is not a valid record";
		} else if (strcmp(r->rec.terminal, terminal) != 0) {
			why = "terminal id in the record differs from the certificate's";
		} else if (r->rec.seq != held + 1) {
			/* A gap is the sender's mistake, not evidence of tampering: refuse the
			 * batch from here and let the client resend from what we hold. */
			*refused_seq = r->rec.seq;
			snprintf(reason, reason_cap, "sequence gap: expected %llu, got %llu",
			         (unsigned long long)(held + 1), (unsigned long long)r->rec.seq);
			break;
		} else if (memcmp(r->rec.prev, last_hash, KP_SHA256_LEN) != 0) {
			why = "hash chain broken: prev does not match the last record held";
		}
		if (why != NULL) {
			uint64_t seq = r->decode_rc == 0 ? r->rec.seq : held + 1;

			*refused_seq = seq;
			snprintf(reason, reason_cap, "record %llu: %s", (unsigned long long)seq, why);
			fprintf(stderr, "kippu-backend: terminal %s quarantined: %s\n", terminal, reason);
			rc = quarantine(s, terminal, seq, reason, r, now_ms);
			if (rc != KP_BE_OK)
				goto out;
			break;
		}
		/* Another epoch holds this very record (a database restored from a backup sends
		 * its records again under a new journal): held once, no second use, no second
		 * clone check. */
		if (epochs)
			rc = alias_of_held(s, ses, r, now_ms, &alias);
		if (rc == KP_BE_OK && !alias)
			rc = store_record(s, ses, r, now_ms);
		if (rc == KP_BE_OK && !alias)
			rc = clone_check(s, terminal, &r->rec, now_ms);
		if (rc != KP_BE_OK)
			goto out;
		held = r->rec.seq;
		memcpy(last_hash, r->hash, KP_SHA256_LEN);
		moved++;
	}
	if (moved > 0) {
		rc = prep(s, &st, "UPDATE journals SET acked = ?3, last_hash = ?4"
		                  " WHERE terminal = ?1 AND journal = ?2");
		if (rc != KP_BE_OK)
			goto out;
		sqlite3_bind_text(st, 1, terminal, -1, SQLITE_STATIC);
		sqlite3_bind_blob(st, 2, ses->journal, KP_JOURNAL_ID_LEN, SQLITE_STATIC);
		sqlite3_bind_int64(st, 3, (sqlite3_int64)held);
		sqlite3_bind_blob(st, 4, last_hash, KP_SHA256_LEN, SQLITE_STATIC);
		rc = step_done(s, st, "journal head");
		if (rc == KP_BE_OK)
			rc = bump_version(s);
		if (rc != KP_BE_OK)
			goto out;
	}
done:
	rc = exec(s, "COMMIT");
out:
	if (rc != KP_BE_OK)
		rollback(s);
	/* A batch whose COMMIT failed is not held: it must never be acknowledged. */
	*acked = rc == KP_BE_OK ? held : held_before;
	return rc;
}

int kp_bstore_quarantine_clear(kp_bstore *s, const char *terminal)
{
	sqlite3_stmt *st = NULL;
	int rc = prep(s, &st, "UPDATE terminals SET quarantined = 0 WHERE id = ?1 AND quarantined = 1");

	if (rc != KP_BE_OK)
		return rc;
	sqlite3_bind_text(st, 1, terminal, -1, SQLITE_STATIC);
	rc = step_done(s, st, "quarantine clear");
	if (rc != KP_BE_OK)
		return rc;
	if (sqlite3_changes(s->db) == 0) {
		snprintf(s->err, sizeof(s->err), "terminal %s is not quarantined", terminal);
		return KP_BE_E_NOTFOUND;
	}
	rc = prep(s, &st, "UPDATE quarantine SET cleared = strftime('%s','now') * 1000"
	                  " WHERE terminal = ?1 AND cleared IS NULL");
	if (rc != KP_BE_OK)
		return rc;
	sqlite3_bind_text(st, 1, terminal, -1, SQLITE_STATIC);
	return step_done(s, st, "quarantine clear");
}

/* ---- the terminal registry ---- */

static bool plain_id(const char *s);
static void copy_text(char *dst, size_t cap, const unsigned char *src);

/* A terminal's row in the registry: status "" (none), "active" or "retired". */
struct registry_row {
	char status[16];
	char retired_at[32];             /* ISO 8601, "-" if not retired */
};

/* Checks id, opens a write transaction and reads id's row in the registry (rolled back on
 * failure). */
static int registry_begin(kp_bstore *s, const char *id, struct registry_row *r)
{
	sqlite3_stmt *st = NULL;
	int rc;

	memset(r, 0, sizeof(*r));
	if (id == NULL || strlen(id) > KP_ID_MAX || !plain_id(id)) {
		snprintf(s->err, sizeof(s->err), "terminal id: 1 to %d characters of A-Z a-z 0-9 - _ . "
		         "(its certificate's CN)", KP_ID_MAX);
		return KP_BE_E_INVAL;
	}
	rc = exec(s, "BEGIN IMMEDIATE");
	if (rc == KP_BE_OK)
		rc = prep(s, &st, "SELECT status, coalesce(strftime('%Y-%m-%dT%H:%M:%SZ',"
		                  " retired / 1000, 'unixepoch'), '-') FROM terminal_registry"
		                  " WHERE id = ?1");
	if (rc != KP_BE_OK) {
		rollback(s);
		return rc;
	}
	sqlite3_bind_text(st, 1, id, -1, SQLITE_STATIC);
	switch (sqlite3_step(st)) {
	case SQLITE_ROW:
		copy_text(r->status, sizeof(r->status), sqlite3_column_text(st, 0));
		copy_text(r->retired_at, sizeof(r->retired_at), sqlite3_column_text(st, 1));
		break;
	case SQLITE_DONE:
		break;
	default:
		rc = fail(s, "terminal registry");
		rollback(s);
	}
	sqlite3_finalize(st);
	return rc;
}

/* Ends registry_begin's transaction: committed if rc is KP_BE_OK, else rolled back. */
static int registry_end(kp_bstore *s, int rc)
{
	if (rc == KP_BE_OK)
		rc = exec(s, "COMMIT");
	if (rc != KP_BE_OK)
		rollback(s);
	return rc;
}

int kp_bstore_terminal_add(kp_bstore *s, const char *id, const char *operator_id, int64_t now_ms,
                           int *was_registered)
{
	sqlite3_stmt *st = NULL;
	struct registry_row r;
	int rc;

	if (was_registered != NULL)
		*was_registered = 0;
	if (operator_id != NULL && (strlen(operator_id) > KP_ID_MAX || !plain_id(operator_id))) {
		snprintf(s->err, sizeof(s->err), "operator id: 1 to %d characters of A-Z a-z 0-9 - _ .",
		         KP_ID_MAX);
		return KP_BE_E_INVAL;
	}
	rc = registry_begin(s, id, &r);
	if (rc != KP_BE_OK)
		return rc;
	if (operator_id != NULL) {
		rc = prep(s, &st, "SELECT 1 FROM operators WHERE id = ?1");
		if (rc != KP_BE_OK)
			goto out;
		sqlite3_bind_text(st, 1, operator_id, -1, SQLITE_STATIC);
		if (sqlite3_step(st) != SQLITE_ROW) {
			snprintf(s->err, sizeof(s->err), "no operator %s at this backend (kippuctl backend "
			         "operator DB %s NAME first)", operator_id, operator_id);
			rc = KP_BE_E_NOTFOUND;
		}
		sqlite3_finalize(st);
		if (rc != KP_BE_OK)
			goto out;
	}
	/* A retired id stays retired: its certificates may be out of anyone's control. */
	if (strcmp(r.status, "retired") == 0) {
		snprintf(s->err, sizeof(s->err), "terminal %s was retired at %s; a retired id is not "
		         "registered again (give the replacement terminal an id of its own)", id,
		         r.retired_at);
		rc = KP_BE_E_INVAL;
		goto out;
	}
	if (was_registered != NULL)
		*was_registered = r.status[0] != '\0';
	rc = prep(s, &st, "INSERT INTO terminal_registry(id, operator, registered) VALUES (?1, ?2, ?3)"
	                  " ON CONFLICT(id) DO UPDATE SET operator = coalesce(excluded.operator,"
	                  " operator)");
	if (rc != KP_BE_OK)
		goto out;
	sqlite3_bind_text(st, 1, id, -1, SQLITE_STATIC);
	if (operator_id != NULL)
		sqlite3_bind_text(st, 2, operator_id, -1, SQLITE_STATIC);
	sqlite3_bind_int64(st, 3, now_ms);
	rc = step_done(s, st, "terminal registry");
out:
	return registry_end(s, rc);
}

int kp_bstore_terminal_retire(kp_bstore *s, const char *id, int64_t now_ms, int *was_retired)
{
	sqlite3_stmt *st = NULL;
	struct registry_row r;
	int rc;

	if (was_retired != NULL)
		*was_retired = 0;
	rc = registry_begin(s, id, &r);
	if (rc != KP_BE_OK)
		return rc;
	if (r.status[0] == '\0') {
		snprintf(s->err, sizeof(s->err), "terminal %s is not registered at this backend", id);
		rc = KP_BE_E_NOTFOUND;
		goto out;
	}
	if (strcmp(r.status, "retired") == 0) {
		if (was_retired != NULL)
			*was_retired = 1;
		goto out;
	}
	rc = prep(s, &st, "UPDATE terminal_registry SET status = 'retired', retired = ?2"
	                  " WHERE id = ?1");
	if (rc != KP_BE_OK)
		goto out;
	sqlite3_bind_text(st, 1, id, -1, SQLITE_STATIC);
	sqlite3_bind_int64(st, 2, now_ms);
	rc = step_done(s, st, "terminal retire");
out:
	return registry_end(s, rc);
}

/* Runs one statement (?1 text or token, ?2 text, ?3 and ?4 integers; parameters a
 * statement lacks are ignored), then bumps the state version; one transaction. */
static int change(kp_bstore *s, const char *sql, const char *what, const char *t1,
                  const char *t2, const uint8_t *blob, int64_t i3, int64_t i4)
{
	sqlite3_stmt *st = NULL;
	int rc = exec(s, "BEGIN IMMEDIATE");

	if (rc != KP_BE_OK)
		return rc;
	rc = prep(s, &st, sql);
	if (rc == KP_BE_OK) {
		if (blob != NULL)
			sqlite3_bind_blob(st, 1, blob, KP_TOKEN_LEN, SQLITE_STATIC);
		else
			sqlite3_bind_text(st, 1, t1, -1, SQLITE_STATIC);
		if (t2 != NULL)
			sqlite3_bind_text(st, 2, t2, -1, SQLITE_STATIC);
		sqlite3_bind_int64(st, 3, i3);
		sqlite3_bind_int64(st, 4, i4);
		rc = step_done(s, st, what);
	}
	if (rc == KP_BE_OK && sqlite3_changes(s->db) == 0) {
		snprintf(s->err, sizeof(s->err), "%s: nothing matched", what);
		rc = KP_BE_E_NOTFOUND;
	}
	return commit_change(s, rc);
}

int kp_bstore_put_operator(kp_bstore *s, const char *id, const char *name)
{
	return change(s, "INSERT INTO operators(id, name) VALUES (?1, ?2) ON CONFLICT(id)"
	                 " DO UPDATE SET name = excluded.name",
	              "operator", id, name, NULL, 0, 0);
}

int kp_bstore_put_product(kp_bstore *s, const char *id, const char *name, int64_t rides,
                          const char *const *operators, size_t n_operators)
{
	return kp_bstore_put_product_cat(s, id, name, rides, operators, n_operators, NULL);
}

int kp_bstore_put_product_cat(kp_bstore *s, const char *id, const char *name, int64_t rides,
                              const char *const *operators, size_t n_operators,
                              const char *category)
{
	sqlite3_stmt *st = NULL;
	int rc;

	if (category != NULL && category[0] == '\0')
		category = NULL;
	if (rides <= 0 || n_operators == 0 ||
	    (category != NULL && !kp_cbor_id_valid(category, false))) {
		snprintf(s->err, sizeof(s->err), "product: rides above 0, an operator, and a category "
		         "of 1 to %d bytes of UTF-8 if any", KP_ID_MAX);
		return KP_BE_E_INVAL;
	}
	rc = exec(s, "BEGIN IMMEDIATE");
	if (rc != KP_BE_OK)
		return rc;
	/* An N-ride product; one sold as another kind keeps its kind (its units differ). */
	rc = prep(s, &st, "SELECT 1 FROM products WHERE id = ?1 AND product_kind <> 'nride'"
	                  " AND EXISTS (SELECT 1 FROM entitlements WHERE product_id = ?1)");
	if (rc == KP_BE_OK) {
		sqlite3_bind_text(st, 1, id, -1, SQLITE_STATIC);
		if (sqlite3_step(st) == SQLITE_ROW) {
			snprintf(s->err, sizeof(s->err), "product %s has entitlements: its kind cannot "
			         "change", id);
			rc = KP_BE_E_INVAL;
		}
		sqlite3_finalize(st);
	}
	if (rc == KP_BE_OK)
		rc = prep(s, &st, "INSERT INTO products(id, name, rides, category) VALUES (?1, ?2, ?3, ?4)"
		                  " ON CONFLICT(id) DO UPDATE SET name = excluded.name,"
		                  " rides = excluded.rides, category = excluded.category,"
		                  " product_kind = 'nride', days = NULL, route = NULL");
	if (rc == KP_BE_OK) {
		sqlite3_bind_text(st, 1, id, -1, SQLITE_STATIC);
		sqlite3_bind_text(st, 2, name, -1, SQLITE_STATIC);
		sqlite3_bind_int64(st, 3, rides);
		if (category != NULL)
			sqlite3_bind_text(st, 4, category, -1, SQLITE_STATIC);
		rc = step_done(s, st, "product");
	}
	if (rc == KP_BE_OK)
		rc = prep(s, &st, "DELETE FROM product_operators WHERE product_id = ?1");
	if (rc == KP_BE_OK) {
		sqlite3_bind_text(st, 1, id, -1, SQLITE_STATIC);
		rc = step_done(s, st, "product operators");
	}
	for (size_t i = 0; rc == KP_BE_OK && i < n_operators; i++) {
		rc = prep(s, &st, "INSERT INTO product_operators(product_id, operator_id) VALUES (?1, ?2)");
		if (rc == KP_BE_OK) {
			sqlite3_bind_text(st, 1, id, -1, SQLITE_STATIC);
			sqlite3_bind_text(st, 2, operators[i], -1, SQLITE_STATIC);
			rc = step_done(s, st, "product operator");
		}
	}
	return commit_change(s, rc);
}

int kp_bstore_register_card(kp_bstore *s, const uint8_t token[KP_TOKEN_LEN], const char *label,
                            int64_t now_ms)
{
	return change(s, "INSERT INTO cards(token, label, registered) VALUES (?1, ?2, ?3)"
	                 " ON CONFLICT(token) DO UPDATE SET label = excluded.label",
	              "card", NULL, label, token, now_ms, 0);
}

int kp_bstore_sell(kp_bstore *s, const uint8_t token[KP_TOKEN_LEN], const char *product,
                   int64_t valid_from_ms, int64_t valid_until_ms, int64_t now_ms, int64_t *ent_id)
{
	return kp_bstore_sell_ex(s, token, product, valid_from_ms, valid_until_ms, 0, 0, now_ms,
	                         ent_id);
}

int kp_bstore_sell_ex(kp_bstore *s, const uint8_t token[KP_TOKEN_LEN], const char *product,
                      int64_t valid_from_ms, int64_t valid_until_ms, int64_t balance,
                      int first_use, int64_t now_ms, int64_t *ent_id)
{
	sqlite3_stmt *st = NULL;
	char kind[16] = "";
	int64_t rides = 0;
	int rc;

	s->err[0] = '\0';
	if (valid_until_ms <= valid_from_ms || valid_from_ms < 0 || balance < 0 ||
	    balance > 1000000000000LL || (first_use != 0 && first_use != 1)) {
		snprintf(s->err, sizeof(s->err), "sell: UNTIL after FROM, a balance of 0 to 10^12");
		return KP_BE_E_INVAL;
	}
	rc = exec(s, "BEGIN IMMEDIATE");
	if (rc != KP_BE_OK)
		return rc;
	rc = prep(s, &st, "SELECT product_kind, rides FROM products WHERE id = ?1");
	if (rc == KP_BE_OK) {
		sqlite3_bind_text(st, 1, product, -1, SQLITE_STATIC);
		if (sqlite3_step(st) == SQLITE_ROW) {
			snprintf(kind, sizeof(kind), "%s", (const char *)sqlite3_column_text(st, 0));
			rides = sqlite3_column_int64(st, 1);
		}
		sqlite3_finalize(st);
	}
	/* What was bought: rides, minor units of stored value, or one pass. */
	if (rc == KP_BE_OK && kind[0] == '\0') {
		snprintf(s->err, sizeof(s->err), "no product %s", product);
		rc = KP_BE_E_NOTFOUND;
	} else if (rc == KP_BE_OK && strcmp(kind, "stored") == 0) {
		if (balance < 1) {
			snprintf(s->err, sizeof(s->err), "%s is stored value: sell it with a balance "
			         "(--balance MINOR_UNITS)", product);
			rc = KP_BE_E_INVAL;
		}
		rides = balance;
	} else if (rc == KP_BE_OK && balance != 0) {
		snprintf(s->err, sizeof(s->err), "%s is no stored-value product: no balance", product);
		rc = KP_BE_E_INVAL;
	} else if (rc == KP_BE_OK && strcmp(kind, "nride") != 0) {
		rides = 1;
	}
	if (rc == KP_BE_OK && first_use && strcmp(kind, "period") != 0) {
		snprintf(s->err, sizeof(s->err), "first use: %s is no period pass", product);
		rc = KP_BE_E_INVAL;
	}
	if (rc == KP_BE_OK)
		rc = prep(s, &st, "INSERT INTO entitlements(token, product_id, bought, valid_from,"
		                  " valid_until, sold, first_use) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)"
		                  " RETURNING id");
	if (rc == KP_BE_OK) {
		sqlite3_bind_blob(st, 1, token, KP_TOKEN_LEN, SQLITE_STATIC);
		sqlite3_bind_text(st, 2, product, -1, SQLITE_STATIC);
		sqlite3_bind_int64(st, 3, rides);
		sqlite3_bind_int64(st, 4, valid_from_ms);
		sqlite3_bind_int64(st, 5, valid_until_ms);
		sqlite3_bind_int64(st, 6, now_ms);
		sqlite3_bind_int(st, 7, first_use);
		if (sqlite3_step(st) == SQLITE_ROW)
			*ent_id = sqlite3_column_int64(st, 0);
		else
			rc = fail(s, "sell (is the card registered?)");
		sqlite3_finalize(st);
	}
	return commit_change(s, rc);
}

static int meta_put(kp_bstore *s, const char *key, int64_t v)
{
	sqlite3_stmt *st = NULL;
	int rc = prep(s, &st, "INSERT INTO meta(key, value) VALUES (?1, ?2)"
	                      " ON CONFLICT(key) DO UPDATE SET value = excluded.value");

	if (rc != KP_BE_OK)
		return rc;
	sqlite3_bind_text(st, 1, key, -1, SQLITE_STATIC);
	sqlite3_bind_int64(st, 2, v);
	return step_done(s, st, key);
}

int kp_bstore_set_service_day(kp_bstore *s, int end_s, int utc_offset_s)
{
	int rc;

	if (end_s < 0 || end_s >= 86400 || utc_offset_s < -14 * 3600 || utc_offset_s > 14 * 3600) {
		snprintf(s->err, sizeof(s->err), "service day end 00:00-23:59, offset -14:00..+14:00");
		return KP_BE_E_INVAL;
	}
	rc = exec(s, "BEGIN IMMEDIATE");
	if (rc == KP_BE_OK)
		rc = meta_put(s, "service_day_end_s", end_s);
	if (rc == KP_BE_OK)
		rc = meta_put(s, "utc_offset_s", utc_offset_s);
	if (rc == KP_BE_OK)
		rc = exec(s, "COMMIT");
	if (rc != KP_BE_OK)
		rollback(s);
	return rc;
}

/* ---- the fare engine's configuration (bundle format 2) ---- */

static const char *const KIND_SQL[] = { "nride", "stored", "period", "commuter" };

static int put_one_product(kp_bstore *s, const struct kp_bundle_product *p)
{
	sqlite3_stmt *st = NULL;
	const char *category = p->category[0] != '\0' ? p->category : NULL;
	int rc;

	if (!kp_cbor_id_valid(p->id, false) || !kp_cbor_text_valid(p->name, sizeof(p->name), true) ||
	    (int)p->kind < 0 || p->kind > KP_PRODUCT_COMMUTER || p->n_operators == 0 ||
	    p->n_operators > KP_BUNDLE_PRODUCT_OPS_MAX ||
	    (p->kind == KP_PRODUCT_NRIDE && (p->rides < 1 || p->rides > INT32_MAX)) ||
	    (p->kind == KP_PRODUCT_PERIOD && (p->days < 1 || p->days > 366)) ||
	    (p->kind == KP_PRODUCT_COMMUTER && (p->stops == NULL || p->n_stops < 2 ||
	                                        p->n_stops > KP_BUNDLE_PRODUCT_STOPS_MAX ||
	                                        !kp_cbor_id_valid(p->route, false)))) {
		snprintf(s->err, sizeof(s->err), "product %.32s: an id, 1 to 16 operators, and rides "
		         "(N-ride), days 1-366 (period) or a route and 2-64 stops (commuter)", p->id);
		return KP_BE_E_INVAL;
	}
	/* A product's entitlements count in its kind's unit: the kind of a sold product stays. */
	rc = prep(s, &st, "SELECT 1 FROM products WHERE id = ?1 AND product_kind <> ?2"
	                  " AND EXISTS (SELECT 1 FROM entitlements WHERE product_id = ?1)");
	if (rc != KP_BE_OK)
		return rc;
	sqlite3_bind_text(st, 1, p->id, -1, SQLITE_STATIC);
	sqlite3_bind_text(st, 2, KIND_SQL[p->kind], -1, SQLITE_STATIC);
	if (sqlite3_step(st) == SQLITE_ROW) {
		snprintf(s->err, sizeof(s->err), "product %s has entitlements: its kind cannot change",
		         p->id);
		rc = KP_BE_E_INVAL;
	}
	sqlite3_finalize(st);
	if (rc == KP_BE_OK)
		rc = prep(s, &st, "INSERT INTO products(id, name, rides, category, product_kind, days,"
		                  " route) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7) ON CONFLICT(id) DO UPDATE"
		                  " SET name = excluded.name, rides = excluded.rides,"
		                  " category = excluded.category, product_kind = excluded.product_kind,"
		                  " days = excluded.days, route = excluded.route");
	if (rc != KP_BE_OK)
		return rc;
	sqlite3_bind_text(st, 1, p->id, -1, SQLITE_STATIC);
	sqlite3_bind_text(st, 2, p->name, -1, SQLITE_STATIC);
	sqlite3_bind_int64(st, 3, p->kind == KP_PRODUCT_NRIDE ? p->rides : 1);
	if (category != NULL)
		sqlite3_bind_text(st, 4, category, -1, SQLITE_STATIC);
	sqlite3_bind_text(st, 5, KIND_SQL[p->kind], -1, SQLITE_STATIC);
	if (p->kind == KP_PRODUCT_PERIOD)
		sqlite3_bind_int(st, 6, p->days);
	if (p->kind == KP_PRODUCT_COMMUTER)
		sqlite3_bind_text(st, 7, p->route, -1, SQLITE_STATIC);
	rc = step_done(s, st, "product");
	if (rc == KP_BE_OK)
		rc = prep(s, &st, "DELETE FROM product_operators WHERE product_id = ?1");
	if (rc == KP_BE_OK) {
		sqlite3_bind_text(st, 1, p->id, -1, SQLITE_STATIC);
		rc = step_done(s, st, "product operators");
	}
	if (rc == KP_BE_OK)
		rc = prep(s, &st, "DELETE FROM product_stops WHERE product_id = ?1");
	if (rc == KP_BE_OK) {
		sqlite3_bind_text(st, 1, p->id, -1, SQLITE_STATIC);
		rc = step_done(s, st, "product stops");
	}
	for (size_t i = 0; rc == KP_BE_OK && i < p->n_operators; i++) {
		rc = prep(s, &st, "INSERT INTO product_operators(product_id, operator_id) VALUES (?1, ?2)");
		if (rc == KP_BE_OK) {
			sqlite3_bind_text(st, 1, p->id, -1, SQLITE_STATIC);
			sqlite3_bind_text(st, 2, p->operators[i], -1, SQLITE_STATIC);
			rc = step_done(s, st, "product operator (is the operator known?)");
		}
	}
	for (size_t i = 0; rc == KP_BE_OK && p->kind == KP_PRODUCT_COMMUTER && i < p->n_stops; i++) {
		rc = prep(s, &st, "INSERT INTO product_stops(product_id, pos, stop_id) VALUES (?1, ?2, ?3)");
		if (rc == KP_BE_OK) {
			sqlite3_bind_text(st, 1, p->id, -1, SQLITE_STATIC);
			sqlite3_bind_int64(st, 2, (int64_t)i);
			sqlite3_bind_text(st, 3, p->stops[i], -1, SQLITE_STATIC);
			rc = step_done(s, st, "commuter stop (a stop twice?)");
		}
	}
	return rc;
}

/* One upsert with up to five bound values: texts where t[i] is set, else integers. */
static int upsert(kp_bstore *s, const char *sql, const char *what, const char *const t[5],
                  const int64_t v[5])
{
	sqlite3_stmt *st = NULL;
	int rc = prep(s, &st, sql);

	if (rc != KP_BE_OK)
		return rc;
	for (int i = 0; i < 5; i++) {
		if (t[i] != NULL)
			sqlite3_bind_text(st, i + 1, t[i], -1, SQLITE_STATIC);
		else
			sqlite3_bind_int64(st, i + 1, v[i]);
	}
	return step_done(s, st, what);
}

/* Once the fare engine is configured, every bundle is format 2, so that terminals also
 * learn when the last discount, cap or feed is withdrawn. */
static int mark_format2(kp_bstore *s)
{
	return exec(s, "INSERT INTO meta(key, value) VALUES ('format2', 1)"
	               " ON CONFLICT(key) DO NOTHING");
}

int kp_bstore_put_config(kp_bstore *s, const struct kp_bundle *b)
{
	size_t i;
	int rc;

	s->err[0] = '\0';
	if (b == NULL || b->n_entitlements > 0 || b->n_denylist > 0 || b->n_eligibility > 0 ||
	    b->n_feeds > 0 || b->n_remote > 0) {
		snprintf(s->err, sizeof(s->err), "configuration: operators, products, product "
		         "scopes, discounts, caps, transfer rules and operator fares only");
		return KP_BE_E_INVAL;
	}
	for (i = 0; i < b->n_scopes; i++) {
		const struct kp_bundle_scope *c = &b->scopes[i];
		size_t j;

		for (j = 0; j < b->n_products && strcmp(b->products[j].id, c->product) != 0; j++)
			;
		if (j == b->n_products || !kp_cbor_id_valid(c->scope_id, false) ||
		    (c->network != 0 && c->network != 1)) {
			snprintf(s->err, sizeof(s->err), "product scope of %.32s: a product of the same "
			         "configuration, route or network, an id of 1-32 bytes", c->product);
			return KP_BE_E_INVAL;
		}
	}
	rc = exec(s, "BEGIN IMMEDIATE");
	if (rc != KP_BE_OK)
		return rc;
	for (i = 0; rc == KP_BE_OK && i < b->n_operators; i++) {
		const char *t[5] = { b->operators[i].id, b->operators[i].name };
		const int64_t v[5] = { 0 };

		rc = upsert(s, "INSERT INTO operators(id, name) VALUES (?1, ?2) ON CONFLICT(id)"
		               " DO UPDATE SET name = excluded.name", "operator", t, v);
	}
	for (i = 0; rc == KP_BE_OK && i < b->n_products; i++)
		rc = put_one_product(s, &b->products[i]);
	/* a product's scopes are replaced with the product */
	for (i = 0; rc == KP_BE_OK && i < b->n_products; i++) {
		const char *t[5] = { b->products[i].id };
		const int64_t v[5] = { 0 };

		rc = upsert(s, "DELETE FROM product_scope WHERE product_id = ?1", "product scopes",
		            t, v);
	}
	for (i = 0; rc == KP_BE_OK && i < b->n_scopes; i++) {
		const struct kp_bundle_scope *c = &b->scopes[i];
		const char *t[5] = { c->product, c->network ? "network" : "route", c->scope_id };
		const int64_t v[5] = { 0 };

		rc = upsert(s, "INSERT INTO product_scope(product_id, kind, scope_id)"
		               " VALUES (?1, ?2, ?3) ON CONFLICT DO NOTHING", "product scope", t, v);
	}
	for (i = 0; rc == KP_BE_OK && i < b->n_discounts; i++) {
		const struct kp_bundle_discount *d = &b->discounts[i];
		const char *t[5] = { d->operator_id, d->category };
		const int64_t v[5] = { 0, 0, d->percent, d->rounding, d->unit };

		rc = upsert(s, "INSERT INTO discounts(operator_id, category, percent, rounding, unit)"
		               " VALUES (?1, ?2, ?3, ?4, ?5) ON CONFLICT(operator_id, category) DO"
		               " UPDATE SET percent = excluded.percent, rounding = excluded.rounding,"
		               " unit = excluded.unit", "discount (is the operator known?)", t, v);
	}
	for (i = 0; rc == KP_BE_OK && i < b->n_caps; i++) {
		const struct kp_bundle_cap *c = &b->caps[i];
		const char *t[5] = { c->category };
		const int64_t v[5] = { 0, c->period, c->amount };

		rc = upsert(s, "INSERT INTO fare_caps(category, period, amount) VALUES (?1, ?2, ?3)"
		               " ON CONFLICT(category, period) DO UPDATE SET amount = excluded.amount",
		            "fare cap", t, v);
	}
	for (i = 0; rc == KP_BE_OK && i < b->n_transfers; i++) {
		const struct kp_bundle_transfer *x = &b->transfers[i];
		const char *t[5] = { x->from_operator, x->to_operator };
		const int64_t v[5] = { 0, 0, x->within_s, x->max_transfers, x->off };

		rc = upsert(s, "INSERT INTO transfer_rules(from_operator, to_operator, within_s,"
		               " max_transfers, off) VALUES (?1, ?2, ?3, ?4, ?5)"
		               " ON CONFLICT(from_operator, to_operator) DO UPDATE SET"
		               " within_s = excluded.within_s, max_transfers = excluded.max_transfers,"
		               " off = excluded.off", "transfer rule", t, v);
	}
	for (i = 0; rc == KP_BE_OK && i < b->n_operator_fares; i++) {
		const struct kp_bundle_operator_fare *f = &b->operator_fares[i];
		const char *t[5] = { f->operator_id, f->feed_id };
		const int64_t v[5] = { 0, 0, f->distance };

		rc = upsert(s, "INSERT INTO operator_fares(operator_id, feed_id, distance)"
		               " VALUES (?1, ?2, ?3) ON CONFLICT(operator_id) DO UPDATE SET"
		               " feed_id = excluded.feed_id, distance = excluded.distance",
		            "operator fare (is the operator known?)", t, v);
	}
	if (rc == KP_BE_OK)
		rc = mark_format2(s);
	return commit_change(s, rc);
}

int kp_bstore_put_feed(kp_bstore *s, const char *feed_id, const char *source,
                       const uint8_t *package, size_t len, int64_t now_ms)
{
	sqlite3_stmt *st = NULL;
	uint8_t digest[KP_SHA256_LEN];
	char why[256];
	size_t rows = 0;
	int rc;

	s->err[0] = '\0';
	if (feed_id == NULL || !kp_cbor_id_valid(feed_id, false) || source == NULL) {
		snprintf(s->err, sizeof(s->err), "feed id: 1 to %d bytes of UTF-8", KP_ID_MAX);
		return KP_BE_E_INVAL;
	}
	if (kp_fare_pkg_walk(package, len, -1, NULL, NULL, &rows, why, sizeof(why)) != KP_SYNC_OK) {
		snprintf(s->err, sizeof(s->err), "%s", why);
		return KP_BE_E_INVAL;
	}
	if (kp_sha256(package, len, digest) != 0)
		return KP_BE_E_INVAL;
	rc = exec(s, "BEGIN IMMEDIATE");
	if (rc == KP_BE_OK)
		rc = prep(s, &st, "INSERT INTO fare_packages(feed_id, digest, package, rows, source,"
		                  " imported) VALUES (?1, ?2, ?3, ?4, ?5, ?6) ON CONFLICT(feed_id) DO"
		                  " UPDATE SET digest = excluded.digest, package = excluded.package,"
		                  " rows = excluded.rows, source = excluded.source,"
		                  " imported = excluded.imported");
	if (rc == KP_BE_OK) {
		sqlite3_bind_text(st, 1, feed_id, -1, SQLITE_STATIC);
		sqlite3_bind_blob(st, 2, digest, KP_SHA256_LEN, SQLITE_STATIC);
		sqlite3_bind_blob64(st, 3, package, len, SQLITE_STATIC);
		sqlite3_bind_int64(st, 4, (int64_t)rows);
		sqlite3_bind_text(st, 5, source, -1, SQLITE_STATIC);
		sqlite3_bind_int64(st, 6, now_ms);
		rc = step_done(s, st, "fare feed");
	}
	if (rc == KP_BE_OK)
		rc = mark_format2(s);
	return commit_change(s, rc);
}

int kp_bstore_delete_feed(kp_bstore *s, const char *feed_id)
{
	return change(s, "DELETE FROM fare_packages WHERE feed_id = ?1", "fare feed", feed_id,
	              NULL, NULL, 0, 0);
}

int kp_bstore_denylist(kp_bstore *s, const uint8_t token[KP_TOKEN_LEN], const char *reason,
                       int64_t now_ms)
{
	return change(s, "INSERT INTO denylist(token, reason, added) VALUES (?1, ?2, ?3)"
	                 " ON CONFLICT(token) DO UPDATE SET reason = excluded.reason",
	              "denylist", NULL, reason, token, now_ms, 0);
}

int kp_bstore_undeny(kp_bstore *s, const uint8_t token[KP_TOKEN_LEN])
{
	return change(s, "DELETE FROM denylist WHERE token = ?1", "undeny", NULL, NULL,
	              token, 0, 0);
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
	rc = exec(s, "BEGIN IMMEDIATE");
	if (rc != KP_BE_OK)
		return rc;
	/* An active linkage takes the new category and validity; a revoked one is left alone. */
	rc = prep(s, &st, "INSERT INTO linkages(token, category, valid_from, valid_until, created)"
	                  " VALUES (?1, ?2, ?3, ?4, ?5) ON CONFLICT(token) DO UPDATE SET"
	                  " category = excluded.category, valid_from = excluded.valid_from,"
	                  " valid_until = excluded.valid_until WHERE linkages.status = 'active'");
	if (rc == KP_BE_OK) {
		sqlite3_bind_blob(st, 1, token, KP_TOKEN_LEN, SQLITE_STATIC);
		sqlite3_bind_text(st, 2, category, -1, SQLITE_STATIC);
		sqlite3_bind_int64(st, 3, valid_from_ms);
		sqlite3_bind_int64(st, 4, valid_until_ms);
		sqlite3_bind_int64(st, 5, now_ms);
		rc = step_done(s, st, "linkage");
	}
	if (rc == KP_BE_OK && sqlite3_changes(s->db) == 0) {
		snprintf(s->err, sizeof(s->err), "this linkage was revoked and stays revoked "
		         "(a renewed My Number card has a new certificate, so a new linkage token)");
		rc = KP_BE_E_INVAL;
	}
	return commit_change(s, rc);
}

int kp_bstore_linkage_revoke(kp_bstore *s, const uint8_t token[KP_TOKEN_LEN], int64_t now_ms)
{
	int rc;

	if (token == NULL)
		return KP_BE_E_INVAL;
	rc = change(s, "UPDATE linkages SET status = 'revoked', revoked = ?3"
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
	rc = exec(s, "BEGIN IMMEDIATE");
	if (rc != KP_BE_OK)
		return rc;
	rc = linkage_usable(s, linkage, now_ms, 1, &why);
	if (rc == KP_BE_E_NOTFOUND || rc == KP_BE_E_INVAL)
		snprintf(s->err, sizeof(s->err), "cannot link to this linkage: %s", why);
	if (rc == KP_BE_OK)
		rc = link_insert(s, linkage, card_token, now_ms, source, &added);
	if (rc == KP_BE_OK && added)
		rc = bump_version(s);
	if (rc == KP_BE_OK)
		rc = exec(s, "COMMIT");
	if (rc != KP_BE_OK)
		rollback(s);
	return rc;
}

/* ---- the bundle ---- */

/* Copies text, cutting an over-long value at a UTF-8 character boundary. */
static void copy_text(char *dst, size_t cap, const unsigned char *src)
{
	size_t n;

	snprintf(dst, cap, "%s", src != NULL ? (const char *)src : "");
	n = strlen(dst);
	if (src != NULL && n < strlen((const char *)src)) {
		while (n > 0 && ((unsigned char)dst[n] & 0xC0) == 0x80)
			n--;
		dst[n] = '\0';
	}
}

/* Eligibility: every active, unexpired linkage (token = the linkage, no via) and every card
 * linked to one (token = the card, via = the linkage), with the linkage's category and
 * validity. A card linked through several linkages of one category gets one row: the
 * linkage valid the longest. Grouping all rows by (token, category) also keeps the bundle
 * valid should a card token ever equal a linkage token. */
#define SUSPENDED(col) " AND NOT EXISTS (SELECT 1 FROM clone_flags f WHERE f.linkage = " \
	col " AND f.suspended = 1 AND f.cleared IS NULL)"
#define ELIGIBILITY_SQL                                                                    \
	" FROM (SELECT token, category, valid_from, valid_until, NULL AS via FROM linkages"  \
	"   WHERE status = 'active' AND valid_until > ?1" SUSPENDED("linkages.token")         \
	" UNION ALL SELECT lc.card, l.category, l.valid_from, l.valid_until, lc.linkage"       \
	"   FROM linkage_cards lc JOIN linkages l ON l.token = lc.linkage"                      \
	"   WHERE l.status = 'active' AND l.valid_until > ?1" SUSPENDED("lc.linkage") ")"      \
	" GROUP BY token, category"
/* The denylist, and every linkage suspended as a possible copy (its eligibility is
 * withheld above, and a direct tap of it is refused as denylisted). */
#define DENYLIST_SQL                                                                       \
	" FROM (SELECT token, reason, added FROM denylist UNION ALL"                           \
	"  SELECT linkage, 'suspended: possible copied My Number card', min(at) FROM clone_flags" \
	"  WHERE suspended = 1 AND cleared IS NULL"                                            \
	"  AND linkage NOT IN (SELECT token FROM denylist) GROUP BY linkage)"

static enum kp_product_kind kind_of(const char *k)
{
	for (int i = 0; k != NULL && i < 4; i++) {
		if (strcmp(k, KIND_SQL[i]) == 0)
			return (enum kp_product_kind)i;
	}
	return KP_PRODUCT_NRIDE;
}

/* A commuter pass's stops, in route order (malloc'd, freed by kp_bundle_free). */
static int fill_stops(kp_bstore *s, struct kp_bundle_product *p)
{
	sqlite3_stmt *st = NULL;
	int rc;

	p->stops = calloc(KP_BUNDLE_PRODUCT_STOPS_MAX, sizeof(*p->stops));
	if (p->stops == NULL)
		return KP_BE_E_NOMEM;
	rc = prep(s, &st, "SELECT stop_id FROM product_stops WHERE product_id = ?1 ORDER BY pos");
	if (rc != KP_BE_OK)
		return rc;
	sqlite3_bind_text(st, 1, p->id, -1, SQLITE_STATIC);
	while (sqlite3_step(st) == SQLITE_ROW && p->n_stops < KP_BUNDLE_PRODUCT_STOPS_MAX)
		copy_text(p->stops[p->n_stops++], KP_ID_MAX + 1, sqlite3_column_text(st, 0));
	sqlite3_finalize(st);
	return KP_BE_OK;
}

/* ---- fares across terminals (terminal/fare/FARES.md, "Across terminals") ---- */

#define REMOTE_WINDOW_MS (32LL * 86400000LL)
#define REMOTE_SPENT_MAX 1000000000000000LL     /* the bundle's bound: 10^15 minor units */

/* YYYYMM of a day count from 1970-01-01, as the terminal's kp_service_period computes a
 * service day's month. */
static int64_t month_of_day(int64_t z)
{
	int y, m, d;

	kp_civil_from_days(z, &y, &m, &d);
	return (int64_t)y * 100 + m;
}

/* The latest accepted tap_on of the card at one other terminal (a tap_off's leg starts
 * there). */
struct remote_on {
	char terminal[KP_ID_MAX + 1];
	int64_t ms;
};

/* One card's records in time order, folded into its remote row. */
struct remote_acc {
	struct kp_bundle_remote r;
	int others;                          /* records at other terminals seen */
	int own_on, own_closed;              /* the receiving terminal's latest accepted tap_on */
	int64_t own_on_ms;
	char own_on_op[KP_ID_MAX + 1], own_on_stop[KP_ID_MAX + 1];
	struct remote_on *ons;
	size_t n_ons, cap_ons;
};

static void text_col(sqlite3_stmt *st, int i, char *dst, size_t cap)
{
	copy_text(dst, cap, sqlite3_column_text(st, i));
	if (!kp_cbor_id_valid(dst, true))
		dst[0] = '\0';
}

/* An operator id as terminals write them (their config's A-Z a-z 0-9 - _ .): a terminal
 * refuses a remote row with any other, and with it the whole bundle, so a record that says
 * otherwise opens no journey and makes no leg here. */
static bool plain_id(const char *s)
{
	if (*s == '\0')
		return false;
	for (; *s != '\0'; s++) {
		if (!(*s >= 'a' && *s <= 'z') && !(*s >= 'A' && *s <= 'Z') &&
		    !(*s >= '0' && *s <= '9') && *s != '-' && *s != '_' && *s != '.')
			return false;
	}
	return true;
}

static int remote_on_set(struct remote_acc *a, const char *terminal, int64_t ms)
{
	size_t i;

	for (i = 0; i < a->n_ons && strcmp(a->ons[i].terminal, terminal) != 0; i++)
		;
	if (i == a->n_ons) {
		if (a->n_ons == a->cap_ons) {
			size_t cap = a->cap_ons ? a->cap_ons * 2 : 8;
			void *p = realloc(a->ons, cap * sizeof(*a->ons));

			if (p == NULL)
				return KP_BE_E_NOMEM;
			a->ons = p;
			a->cap_ons = cap;
		}
		snprintf(a->ons[a->n_ons++].terminal, KP_ID_MAX + 1, "%s", terminal);
	}
	a->ons[i].ms = ms;
	return KP_BE_OK;
}

static int64_t remote_on_get(const struct remote_acc *a, const char *terminal, int64_t dflt)
{
	for (size_t i = 0; i < a->n_ons; i++) {
		if (strcmp(a->ons[i].terminal, terminal) == 0)
			return a->ons[i].ms;
	}
	return dflt;
}

/* Columns of REMOTE_SQL. */
enum { RC_TOKEN, RC_OWN, RC_TERMINAL, RC_TIME, RC_EVENT, RC_ACCEPTED, RC_OPERATOR, RC_ROUTE,
       RC_STOP, RC_PRODUCT, RC_ENT, RC_RIDES, RC_AMOUNT, RC_KIND };

/* Every card's fare decisions of the last 32 days, at every terminal, in one pass grouped by
 * card and in time order (records_recent gives the window; the sort is SQLite's). Refusals
 * count (a card refused elsewhere has left a journey open here); "already" answers decide
 * nothing and are left out, so a double tap does not hide the tap-on it repeats. Records
 * stored before the event column existed and not filled from their payload read as "tap". */
#define REMOTE_SQL                                                                        \
	"SELECT r.token, r.terminal = ?1, r.terminal, r.time_ms, coalesce(r.event, 'tap'),"   \
	" r.result = 'accepted', r.operator, r.route, r.stop, r.product, coalesce(r.ent_id, 0),"\
	" r.rides, r.amount, p.product_kind"                                                  \
	" FROM records r LEFT JOIN products p ON p.id = r.product"                            \
	" WHERE r.token IS NOT NULL AND r.time_ms >= ?2 AND r.kind = 'tap'"                  \
	" AND r.result <> 'already' ORDER BY r.token, r.time_ms, r.terminal, r.seq"

static void remote_fold(struct remote_acc *a, sqlite3_stmt *st, int64_t day_now,
                        int64_t month_now, int64_t day_shift_s, int *nomem)
{
	const char *event = (const char *)sqlite3_column_text(st, RC_EVENT);
	const char *kind = (const char *)sqlite3_column_text(st, RC_KIND);
	const char *terminal = (const char *)sqlite3_column_text(st, RC_TERMINAL);
	int64_t t = sqlite3_column_int64(st, RC_TIME), amount = sqlite3_column_int64(st, RC_AMOUNT);
	int accepted = sqlite3_column_int(st, RC_ACCEPTED);
	int tap_on = strcmp(event, "tap_on") == 0, tap_off = strcmp(event, "tap_off") == 0;
	char op[KP_ID_MAX + 1], stop[KP_ID_MAX + 1];
	struct kp_bundle_remote *r = &a->r;

	text_col(st, RC_OPERATOR, op, sizeof(op));
	text_col(st, RC_STOP, stop, sizeof(stop));
	if (sqlite3_column_int(st, RC_OWN)) {
		if (accepted && tap_on) {
			a->own_on = 1;
			a->own_closed = 0;
			a->own_on_ms = t;
			snprintf(a->own_on_op, sizeof(a->own_on_op), "%s", op);
			snprintf(a->own_on_stop, sizeof(a->own_on_stop), "%s", stop);
		}
		return;
	}
	a->others = 1;
	r->last_ms = t;
	/* the latest record there decides whether a journey is open there */
	r->open = accepted && tap_on && t > 0 && plain_id(op);
	if (r->open) {
		int64_t rides = sqlite3_column_int64(st, RC_RIDES);

		r->open_ms = t;
		snprintf(r->open_operator, sizeof(r->open_operator), "%s", op);
		text_col(st, RC_ROUTE, r->open_route, sizeof(r->open_route));
		snprintf(r->open_stop, sizeof(r->open_stop), "%s", stop);
		text_col(st, RC_PRODUCT, r->open_product, sizeof(r->open_product));
		r->open_ent = sqlite3_column_int64(st, RC_ENT);
		if (r->open_ent < 0)
			r->open_ent = 0;
		r->open_paid = rides > 0 || (kind != NULL && strcmp(kind, "period") == 0);
		if (remote_on_set(a, terminal, t) != KP_BE_OK)
			*nomem = 1;
	}
	if (!accepted)
		return;
	/* a journey of the receiving terminal that this terminal closed and charged */
	if (a->own_on && t > a->own_on_ms && strcmp(op, a->own_on_op) == 0 &&
	    (tap_off || (strcmp(event, "no_tap_off") == 0 && strcmp(stop, a->own_on_stop) == 0)))
		a->own_closed = 1;
	if (amount <= 0)
		return;
	if (amount > REMOTE_SPENT_MAX)
		amount = REMOTE_SPENT_MAX;
	if ((tap_off || strcmp(event, "tap") == 0) && kind != NULL && strcmp(kind, "stored") == 0 &&
	    plain_id(op)) {
		r->has_leg = 1;
		snprintf(r->leg_operator, sizeof(r->leg_operator), "%s", op);
		r->leg_off_ms = t;
		r->leg_on_ms = tap_off ? remote_on_get(a, terminal, t) : t;
		r->leg_paid = amount;
	}
	{
		int64_t day = kp_floor_div(kp_floor_div(t, 1000) + day_shift_s, 86400);

		if (day == day_now)
			r->day_spent = r->day_spent + amount > REMOTE_SPENT_MAX ? REMOTE_SPENT_MAX :
			               r->day_spent + amount;
		if (month_of_day(day) == month_now)
			r->month_spent = r->month_spent + amount > REMOTE_SPENT_MAX ? REMOTE_SPENT_MAX :
			                 r->month_spent + amount;
	}
}

/* The card's row, if it has records at other terminals. */
static int remote_emit(struct remote_acc *a, struct kp_bundle *b, size_t *cap)
{
	if (!a->others)
		return KP_BE_OK;
	if (b->n_remote == *cap) {
		size_t n = *cap ? *cap * 2 : 256;
		void *p = realloc(b->remote, n * sizeof(*b->remote));

		if (p == NULL)
			return KP_BE_E_NOMEM;
		b->remote = p;
		*cap = n;
	}
	if (a->own_on && a->own_closed)
		a->r.closed_ms = a->own_on_ms;
	b->remote[b->n_remote++] = a->r;
	return KP_BE_OK;
}

/* For a bundle made for `terminal` at now_ms: one row per card with records at other
 * terminals in the last 32 days, from those records only (closed_ms aside, which names the
 * receiving terminal's own tap-on), spending by the backend's service-day setting. */
static int fill_remote(kp_bstore *s, const char *terminal, int64_t now_ms, struct kp_bundle *b)
{
	struct remote_acc a;
	sqlite3_stmt *st = NULL;
	uint8_t token[KP_TOKEN_LEN];
	int64_t end_s = 14400, offset_s = 32400, day_now, month_now;
	size_t cap = 0;
	int have = 0, nomem = 0, step = SQLITE_DONE, rc;

	memset(&a, 0, sizeof(a));
	rc = meta_int(s, "service_day_end_s", 14400, &end_s);
	if (rc == KP_BE_OK)
		rc = meta_int(s, "utc_offset_s", 32400, &offset_s);
	if (rc == KP_BE_OK)
		rc = prep(s, &st, REMOTE_SQL);
	if (rc != KP_BE_OK)
		return rc;
	day_now = kp_floor_div(kp_floor_div(now_ms, 1000) + offset_s - end_s, 86400);
	month_now = month_of_day(day_now);
	sqlite3_bind_text(st, 1, terminal, -1, SQLITE_STATIC);
	sqlite3_bind_int64(st, 2, now_ms - REMOTE_WINDOW_MS);
	while (rc == KP_BE_OK && !nomem && (step = sqlite3_step(st)) == SQLITE_ROW) {
		if (sqlite3_column_bytes(st, RC_TOKEN) != KP_TOKEN_LEN)
			continue;
		if (!have || memcmp(token, sqlite3_column_blob(st, RC_TOKEN), KP_TOKEN_LEN) != 0) {
			if (have)
				rc = remote_emit(&a, b, &cap);
			memcpy(token, sqlite3_column_blob(st, RC_TOKEN), KP_TOKEN_LEN);
			have = 1;
			{
				struct remote_on *ons = a.ons;
				size_t cap_ons = a.cap_ons;

				memset(&a, 0, sizeof(a));
				a.ons = ons;
				a.cap_ons = cap_ons;
			}
			memcpy(a.r.token, token, KP_TOKEN_LEN);
			a.r.day_id = day_now;
			a.r.month_id = month_now;
		}
		remote_fold(&a, st, day_now, month_now, offset_s - end_s, &nomem);
	}
	if (rc == KP_BE_OK && nomem)
		rc = KP_BE_E_NOMEM;
	if (rc == KP_BE_OK && step != SQLITE_DONE)
		rc = fail(s, "fare state across terminals");
	if (rc == KP_BE_OK && have)
		rc = remote_emit(&a, b, &cap);
	sqlite3_finalize(st);
	free(a.ons);
	return rc;
}

static int fill_scopes(kp_bstore *s, struct kp_bundle *b)
{
	sqlite3_stmt *st = NULL;
	int64_t count = 0;
	int rc = prep(s, &st, "SELECT count(*) FROM product_scope");

	if (rc != KP_BE_OK)
		return rc;
	count = sqlite3_step(st) == SQLITE_ROW ? sqlite3_column_int64(st, 0) : 0;
	sqlite3_finalize(st);
	b->scopes = calloc((size_t)count + 1, sizeof(*b->scopes));
	if (b->scopes == NULL)
		return KP_BE_E_NOMEM;
	/* BINARY order: "network" before "route", as the bundle's canonical order */
	rc = prep(s, &st, "SELECT product_id, kind, scope_id FROM product_scope"
	                  " ORDER BY product_id, kind, scope_id");
	if (rc != KP_BE_OK)
		return rc;
	while (sqlite3_step(st) == SQLITE_ROW && b->n_scopes < (size_t)count) {
		struct kp_bundle_scope *c = &b->scopes[b->n_scopes++];
		const char *kind = (const char *)sqlite3_column_text(st, 1);

		copy_text(c->product, sizeof(c->product), sqlite3_column_text(st, 0));
		c->network = kind != NULL && strcmp(kind, "network") == 0;
		copy_text(c->scope_id, sizeof(c->scope_id), sqlite3_column_text(st, 2));
	}
	sqlite3_finalize(st);
	return KP_BE_OK;
}

/* A row whose text the bundle cannot carry (put there by hand: every entry point checks
 * the same rule) is left out, and only that row: one bad name must not keep the denylist
 * from every terminal. The first is noted for the log. */
static bool left_out(kp_bstore *s, const char *table, const char *row, const char *field,
                     const unsigned char *text)
{
	char why[200];

	if (kp_bundle_text_check(field, (const char *)text, why, sizeof(why)) == KP_SYNC_OK)
		return false;
	if (s->n_left_out++ == 0)
		snprintf(s->left_out, sizeof(s->left_out), "%s row %s: %s", table, row, why);
	return true;
}

/* An id the bundle cannot carry (longer than KP_ID_MAX bytes, not UTF-8, a control
 * character: put into the database by hand) leaves its row out, as left_out does, instead of
 * being cut short into another id or failing the whole bundle. */
static bool left_out_id(kp_bstore *s, const char *table, const unsigned char *id,
                        const char *field, bool may_be_empty)
{
	const char *t = id != NULL ? (const char *)id : "";
	char shown[KP_ID_MAX + 8];

	bool control = false;

	for (const char *c = t; *c != '\0'; c++)
		control |= (unsigned char)*c < 0x20 || *c == 0x7F;
	if (!control && strlen(t) <= KP_ID_MAX && kp_cbor_id_valid(t, may_be_empty))
		return false;
	kp_cbor_text_printable(shown, sizeof(shown), t, strlen(t));
	if (s->n_left_out++ == 0)
		snprintf(s->left_out, sizeof(s->left_out), "%s row %s%s: %s: not an id the bundle "
		         "can carry (1 to %d bytes of UTF-8, no control characters)", table, shown,
		         strlen(t) > KP_ID_MAX ? "..." : "", field, KP_ID_MAX);
	return true;
}

static int cmp_operator_id(const void *key, const void *elem)
{
	return strcmp(key, ((const struct kp_bundle_operator *)elem)->id);
}

static int cmp_product_id(const void *key, const void *elem)
{
	return strcmp(key, ((const struct kp_bundle_product *)elem)->id);
}

/* Operators and products are read in id order (BINARY collation = strcmp order). */
static bool has_operator(const struct kp_bundle *b, const char *id)
{
	return bsearch(id, b->operators, b->n_operators, sizeof(*b->operators),
	               cmp_operator_id) != NULL;
}

static bool has_product(const struct kp_bundle *b, const char *id)
{
	return bsearch(id, b->products, b->n_products, sizeof(*b->products),
	               cmp_product_id) != NULL;
}

/* After rows were left out: what names them goes too, so the rest still encodes. */
#define DROP_ORPHANS(arr, n, keep)                                              \
	do {                                                                    \
		size_t kept_ = 0;                                               \
		for (size_t i_ = 0; i_ < (n); i_++) {                           \
			if (keep(&(arr)[i_]))                                   \
				(arr)[kept_++] = (arr)[i_];                     \
			else                                                    \
				s->n_left_out++;                                \
		}                                                               \
		(n) = kept_;                                                    \
	} while (0)

static void drop_orphans(kp_bstore *s, struct kp_bundle *b)
{
#define ENT_KEEP(e)   has_product(b, (e)->product)
#define SCOPE_KEEP(c) has_product(b, (c)->product)
#define DISC_KEEP(d)  has_operator(b, (d)->operator_id)
#define OFARE_KEEP(f) has_operator(b, (f)->operator_id)
	DROP_ORPHANS(b->entitlements, b->n_entitlements, ENT_KEEP);
	DROP_ORPHANS(b->scopes, b->n_scopes, SCOPE_KEEP);
	DROP_ORPHANS(b->discounts, b->n_discounts, DISC_KEEP);
	DROP_ORPHANS(b->operator_fares, b->n_operator_fares, OFARE_KEEP);
#undef ENT_KEEP
#undef SCOPE_KEEP
#undef DISC_KEEP
#undef OFARE_KEEP
}

static int fill_bundle(kp_bstore *s, const char *terminal, const uint8_t *journal, int64_t now_ms,
                       struct kp_bundle *b)
{
	sqlite3_stmt *st = NULL;
	char skipped[KP_ID_MAX + 1] = "";
	int64_t count;
	int rc;

#define COUNT_INTO(sql, var)                                                      \
	do {                                                                      \
		rc = prep(s, &st, sql);                                           \
		if (rc != KP_BE_OK)                                               \
			return rc;                                                \
		count = sqlite3_step(st) == SQLITE_ROW ? sqlite3_column_int64(st, 0) : 0; \
		sqlite3_finalize(st);                                             \
		var = calloc((size_t)count + 1, sizeof(*var));                    \
		if (var == NULL)                                                  \
			return KP_BE_E_NOMEM;                                     \
	} while (0)

	COUNT_INTO("SELECT count(*) FROM operators", b->operators);
	rc = prep(s, &st, "SELECT id, name FROM operators ORDER BY id");
	if (rc != KP_BE_OK)
		return rc;
	while (sqlite3_step(st) == SQLITE_ROW && b->n_operators < (size_t)count) {
		struct kp_bundle_operator *o = &b->operators[b->n_operators];

		if (left_out_id(s, "operators", sqlite3_column_text(st, 0), "id", false))
			continue;
		copy_text(o->id, sizeof(o->id), sqlite3_column_text(st, 0));
		if (left_out(s, "operators", o->id, "name", sqlite3_column_text(st, 1)))
			continue;
		copy_text(o->name, sizeof(o->name), sqlite3_column_text(st, 1));
		b->n_operators++;
	}
	sqlite3_finalize(st);

	COUNT_INTO("SELECT count(*) FROM products", b->products);
	rc = prep(s, &st, "SELECT p.id, p.name, p.rides, po.operator_id, p.category,"
	                  " p.product_kind, coalesce(p.days, 0), coalesce(p.route, '') FROM products p"
	                  " LEFT JOIN product_operators po ON po.product_id = p.id"
	                  " ORDER BY p.id, po.operator_id");
	if (rc != KP_BE_OK)
		return rc;
	while (sqlite3_step(st) == SQLITE_ROW) {
		const char *id = (const char *)sqlite3_column_text(st, 0);
		struct kp_bundle_product *p = b->n_products > 0 ? &b->products[b->n_products - 1] : NULL;

		if (skipped[0] != '\0' && strcmp(skipped, id) == 0)
			continue;
		if (p == NULL || strcmp(p->id, id) != 0) {
			if (b->n_products == (size_t)count)
				break;
			if (left_out_id(s, "products", (const unsigned char *)id, "id", false) ||
			    left_out_id(s, "products", sqlite3_column_text(st, 4), "category", true) ||
			    left_out(s, "products", id, "name", sqlite3_column_text(st, 1))) {
				copy_text(skipped, sizeof(skipped), (const unsigned char *)id);
				continue;
			}
			p = &b->products[b->n_products++];
			copy_text(p->id, sizeof(p->id), sqlite3_column_text(st, 0));
			copy_text(p->name, sizeof(p->name), sqlite3_column_text(st, 1));
			p->rides = sqlite3_column_int64(st, 2);
			copy_text(p->category, sizeof(p->category), sqlite3_column_text(st, 4));
			p->kind = kind_of((const char *)sqlite3_column_text(st, 5));
			p->days = sqlite3_column_int(st, 6);
			copy_text(p->route, sizeof(p->route), sqlite3_column_text(st, 7));
		}
		/* an operator left out takes its products' rows on it along */
		if (p->n_operators < 16 && sqlite3_column_type(st, 3) != SQLITE_NULL &&
		    has_operator(b, (const char *)sqlite3_column_text(st, 3)))
			copy_text(p->operators[p->n_operators++], KP_ID_MAX + 1, sqlite3_column_text(st, 3));
	}
	sqlite3_finalize(st);
	st = NULL;
	for (size_t i = 0; i < b->n_products; i++) {
		if (b->products[i].kind == KP_PRODUCT_COMMUTER) {
			rc = fill_stops(s, &b->products[i]);
			if (rc != KP_BE_OK)
				return rc;
		}
	}

	COUNT_INTO("SELECT count(*) FROM entitlements", b->entitlements);
	rc = prep(s, &st, "SELECT id, token, product_id, max(bought - used, 0), valid_from,"
	                  " valid_until, first_use FROM entitlements ORDER BY token, id");
	if (rc != KP_BE_OK)
		return rc;
	while (sqlite3_step(st) == SQLITE_ROW && b->n_entitlements < (size_t)count) {
		struct kp_bundle_entitlement *e = &b->entitlements[b->n_entitlements++];

		e->id = sqlite3_column_int64(st, 0);
		if (sqlite3_column_bytes(st, 1) == KP_TOKEN_LEN)
			memcpy(e->token, sqlite3_column_blob(st, 1), KP_TOKEN_LEN);
		copy_text(e->product, sizeof(e->product), sqlite3_column_text(st, 2));
		e->remaining = sqlite3_column_int64(st, 3);
		e->valid_from_ms = sqlite3_column_int64(st, 4);
		e->valid_until_ms = sqlite3_column_int64(st, 5);
		e->first_use = sqlite3_column_int(st, 6);
	}
	sqlite3_finalize(st);

	COUNT_INTO("SELECT count(*)" DENYLIST_SQL, b->denylist);
	rc = prep(s, &st, "SELECT token, reason, added" DENYLIST_SQL " ORDER BY token");
	if (rc != KP_BE_OK)
		return rc;
	while (sqlite3_step(st) == SQLITE_ROW && b->n_denylist < (size_t)count) {
		struct kp_bundle_deny *d = &b->denylist[b->n_denylist];
		char row[40];

		const unsigned char *reason = sqlite3_column_text(st, 1);

		/* named by when it was added: a card's token stays out of the log. A reason the
		 * bundle cannot carry never frees a denied card: the card goes with a stand-in. */
		snprintf(row, sizeof(row), "added %lld (card kept denied)",
		         (long long)sqlite3_column_int64(st, 2));
		if (left_out(s, "denylist", row, "reason", reason))
			reason = (const unsigned char *)"(reason unreadable: see the backend)";
		b->n_denylist++;
		if (sqlite3_column_bytes(st, 0) == KP_TOKEN_LEN)
			memcpy(d->token, sqlite3_column_blob(st, 0), KP_TOKEN_LEN);
		copy_text(d->reason, sizeof(d->reason), reason);
	}
	sqlite3_finalize(st);

	rc = prep(s, &st, "SELECT count(*) FROM (SELECT 1" ELIGIBILITY_SQL ")");
	if (rc != KP_BE_OK)
		return rc;
	sqlite3_bind_int64(st, 1, now_ms);
	count = sqlite3_step(st) == SQLITE_ROW ? sqlite3_column_int64(st, 0) : 0;
	sqlite3_finalize(st);
	b->eligibility = calloc((size_t)count + 1, sizeof(*b->eligibility));
	if (b->eligibility == NULL)
		return KP_BE_E_NOMEM;
	/* max() picks the row whose other columns SQLite returns (its bare-column rule). */
	rc = prep(s, &st, "SELECT token, category, valid_from, max(valid_until), via"
	                  ELIGIBILITY_SQL " ORDER BY token, category");
	if (rc != KP_BE_OK)
		return rc;
	sqlite3_bind_int64(st, 1, now_ms);
	while (sqlite3_step(st) == SQLITE_ROW && b->n_eligibility < (size_t)count) {
		struct kp_bundle_eligibility *e = &b->eligibility[b->n_eligibility++];

		if (sqlite3_column_bytes(st, 0) == KP_TOKEN_LEN)
			memcpy(e->token, sqlite3_column_blob(st, 0), KP_TOKEN_LEN);
		copy_text(e->category, sizeof(e->category), sqlite3_column_text(st, 1));
		e->valid_from_ms = sqlite3_column_int64(st, 2);
		e->valid_until_ms = sqlite3_column_int64(st, 3);
		if (sqlite3_column_bytes(st, 4) == KP_TOKEN_LEN) {
			e->has_via = 1;
			memcpy(e->via, sqlite3_column_blob(st, 4), KP_TOKEN_LEN);
		}
	}
	sqlite3_finalize(st);

	COUNT_INTO("SELECT count(*) FROM discounts", b->discounts);
	rc = prep(s, &st, "SELECT operator_id, category, percent, rounding, unit FROM discounts"
	                  " ORDER BY operator_id, category");
	if (rc != KP_BE_OK)
		return rc;
	while (sqlite3_step(st) == SQLITE_ROW && b->n_discounts < (size_t)count) {
		struct kp_bundle_discount *d = &b->discounts[b->n_discounts++];

		copy_text(d->operator_id, sizeof(d->operator_id), sqlite3_column_text(st, 0));
		copy_text(d->category, sizeof(d->category), sqlite3_column_text(st, 1));
		d->percent = sqlite3_column_int(st, 2);
		d->rounding = sqlite3_column_int(st, 3);
		d->unit = sqlite3_column_int64(st, 4);
	}
	sqlite3_finalize(st);

	COUNT_INTO("SELECT count(*) FROM fare_caps", b->caps);
	rc = prep(s, &st, "SELECT category, period, amount FROM fare_caps ORDER BY category, period");
	if (rc != KP_BE_OK)
		return rc;
	while (sqlite3_step(st) == SQLITE_ROW && b->n_caps < (size_t)count) {
		struct kp_bundle_cap *c = &b->caps[b->n_caps++];

		copy_text(c->category, sizeof(c->category), sqlite3_column_text(st, 0));
		c->period = sqlite3_column_int(st, 1);
		c->amount = sqlite3_column_int64(st, 2);
	}
	sqlite3_finalize(st);

	COUNT_INTO("SELECT count(*) FROM transfer_rules", b->transfers);
	rc = prep(s, &st, "SELECT from_operator, to_operator, within_s, max_transfers, off"
	                  " FROM transfer_rules ORDER BY from_operator, to_operator");
	if (rc != KP_BE_OK)
		return rc;
	while (sqlite3_step(st) == SQLITE_ROW && b->n_transfers < (size_t)count) {
		struct kp_bundle_transfer *t = &b->transfers[b->n_transfers++];

		copy_text(t->from_operator, sizeof(t->from_operator), sqlite3_column_text(st, 0));
		copy_text(t->to_operator, sizeof(t->to_operator), sqlite3_column_text(st, 1));
		t->within_s = sqlite3_column_int(st, 2);
		t->max_transfers = sqlite3_column_int(st, 3);
		t->off = sqlite3_column_int64(st, 4);
	}
	sqlite3_finalize(st);

	COUNT_INTO("SELECT count(*) FROM operator_fares", b->operator_fares);
	rc = prep(s, &st, "SELECT operator_id, feed_id, distance FROM operator_fares"
	                  " ORDER BY operator_id");
	if (rc != KP_BE_OK)
		return rc;
	while (sqlite3_step(st) == SQLITE_ROW && b->n_operator_fares < (size_t)count) {
		struct kp_bundle_operator_fare *f = &b->operator_fares[b->n_operator_fares++];

		copy_text(f->operator_id, sizeof(f->operator_id), sqlite3_column_text(st, 0));
		copy_text(f->feed_id, sizeof(f->feed_id), sqlite3_column_text(st, 1));
		f->distance = sqlite3_column_int(st, 2);
	}
	sqlite3_finalize(st);

	COUNT_INTO("SELECT count(*) FROM fare_packages", b->feeds);
	rc = prep(s, &st, "SELECT feed_id, digest, package FROM fare_packages ORDER BY feed_id");
	if (rc != KP_BE_OK)
		return rc;
	while (sqlite3_step(st) == SQLITE_ROW && b->n_feeds < (size_t)count) {
		struct kp_bundle_feed *f = &b->feeds[b->n_feeds];
		size_t len = (size_t)sqlite3_column_bytes(st, 2);

		copy_text(f->id, sizeof(f->id), sqlite3_column_text(st, 0));
		if (sqlite3_column_bytes(st, 1) == KP_SHA256_LEN)
			memcpy(f->digest, sqlite3_column_blob(st, 1), KP_SHA256_LEN);
		f->package = malloc(len > 0 ? len : 1);
		if (f->package == NULL) {
			sqlite3_finalize(st);
			return KP_BE_E_NOMEM;
		}
		memcpy(f->package, sqlite3_column_blob(st, 2), len);
		f->package_len = len;
		b->n_feeds++;
	}
	sqlite3_finalize(st);
#undef COUNT_INTO

	{
		int64_t fmt2 = 0;

		rc = meta_int(s, "format2", 0, &fmt2);
		if (rc != KP_BE_OK)
			return rc;
		b->format = fmt2 ? 2 : 0;
	}
	/* Cards' state across terminals is the fare engine's: a backend that sells N-ride
	 * tickets only keeps sending format 1, byte for byte. */
	rc = fill_scopes(s, b);
	if (rc == KP_BE_OK)
		rc = kp_bstore_get_policy(s, &b->policy);
	if (rc == KP_BE_OK && b->format == 2)
		rc = fill_remote(s, terminal, now_ms, b);
	if (rc != KP_BE_OK)
		return rc;
	if (s->n_left_out > 0)
		drop_orphans(s, b);
	rc = prep(s, &st, "SELECT acked FROM journals WHERE terminal = ?1 AND journal = ?2");
	if (rc != KP_BE_OK)
		return rc;
	sqlite3_bind_text(st, 1, terminal, -1, SQLITE_STATIC);
	sqlite3_bind_blob(st, 2, journal, KP_JOURNAL_ID_LEN, SQLITE_STATIC);
	b->acked = sqlite3_step(st) == SQLITE_ROW ? (uint64_t)sqlite3_column_int64(st, 0) : 0;
	sqlite3_finalize(st);
	snprintf(b->terminal, sizeof(b->terminal), "%s", terminal);
	return KP_BE_OK;
}

static int bundle_for(kp_bstore *s, const char *terminal, const uint8_t *journal,
                      uint64_t have_version, int64_t now_ms, struct kp_bundle *b, int *has)
{
	int rc;

	memset(b, 0, sizeof(*b));
	*has = 0;
	s->n_left_out = 0;
	s->left_out[0] = '\0';
	rc = bundle_refresh(s, now_ms);
	if (rc != KP_BE_OK)
		return rc;
	/* One read transaction: the snapshot and its version agree. */
	rc = exec(s, "BEGIN");
	if (rc != KP_BE_OK)
		return rc;
	rc = kp_bstore_state_version(s, &b->version);
	if (rc == KP_BE_OK && b->version > have_version) {
		b->issued_ms = now_ms;
		rc = fill_bundle(s, terminal, journal, now_ms, b);
		*has = rc == KP_BE_OK;
	}
	rollback(s);
	if (rc != KP_BE_OK || !*has)
		kp_bundle_free(b);
	return rc;
}

int kp_bstore_bundle(kp_bstore *s, const char *terminal, uint64_t have_version, int64_t now_ms,
                     struct kp_bundle *b, int *has)
{
	return bundle_for(s, terminal, legacy_journal, have_version, now_ms, b, has);
}

int kp_bstore_bundle_session(kp_bstore *s, const struct kp_bsession *ses,
                             uint64_t have_version, int64_t now_ms, struct kp_bundle *b,
                             int *has)
{
	return bundle_for(s, ses->terminal, ses->journal, have_version, now_ms, b, has);
}

const char *kp_bstore_bundle_left_out(const kp_bstore *s, size_t *n)
{
	*n = s->n_left_out;
	return s->left_out;
}

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
			" strftime('%Y-%m-%dT%H:%M:%SZ', g.retired / 1000, 'unixepoch') AS retired"
			" FROM (SELECT id FROM terminal_registry UNION SELECT id FROM terminals) ids"
			" LEFT JOIN terminals t ON t.id = ids.id"
			" LEFT JOIN terminal_registry g ON g.id = ids.id"
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
			"SELECT terminal, id AS cert,"
			" strftime('%Y-%m-%dT%H:%M:%SZ', first_seen / 1000, 'unixepoch') AS first_seen,"
			" strftime('%Y-%m-%dT%H:%M:%SZ', last_seen / 1000, 'unixepoch') AS last_seen,"
			" (SELECT count(*) FROM records r WHERE r.cert_id = c.id) AS records"
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
			"  product_operators po WHERE po.product_id = p.id ORDER BY operator_id)) AS operators"
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
	sqlite3_stmt *st = NULL;
	int rc;

	if ((int)which < KP_REPORT_RECORDS || (int)which > KP_REPORT_CLONES)
		return KP_BE_E_INVAL;
	rc = prep(s, &st, sql[which]);
	if (rc != KP_BE_OK)
		return rc;
	if (terminal_filter != NULL)
		sqlite3_bind_text(st, 1, terminal_filter, -1, SQLITE_STATIC);
	if (sqlite3_bind_parameter_count(st) >= 2)
		sqlite3_bind_int64(st, 2, (sqlite3_int64)at_ms);
	while (sqlite3_step(st) == SQLITE_ROW) {
		const char *cols[16], *names[16];
		int n = sqlite3_column_count(st);

		if (n > 16)
			n = 16;
		for (int i = 0; i < n; i++) {
			cols[i] = (const char *)sqlite3_column_text(st, i);
			names[i] = sqlite3_column_name(st, i);
		}
		if (fn(arg, n, cols, names) != 0)
			break;
	}
	sqlite3_finalize(st);
	return KP_BE_OK;
}

int kp_bstore_export_walk(kp_bstore *s, const char *terminal,
                          int (*fn)(void *arg, const struct kp_export_row *row), void *arg)
{
	sqlite3_stmt *st = NULL;
	int rc = prep(s, &st, "SELECT j.epoch, lower(hex(j.journal)), x.seq, r.cose,"
	                      " coalesce(r.cert_id, 0), c.cert, x.alias FROM journals j"
	                      " JOIN (SELECT terminal, journal, seq, journal AS src, 0 AS alias"
	                      "  FROM records UNION ALL SELECT terminal, journal, seq, of_journal,"
	                      "  1 FROM record_aliases) x"
	                      "  ON x.terminal = j.terminal AND x.journal = j.journal"
	                      " JOIN records r ON r.terminal = x.terminal AND r.journal = x.src"
	                      "  AND r.seq = x.seq"
	                      " LEFT JOIN terminal_certs c ON c.id = r.cert_id"
	                      " WHERE j.terminal = ?1 ORDER BY j.epoch, x.seq");
	int step;

	if (rc != KP_BE_OK)
		return rc;
	sqlite3_bind_text(st, 1, terminal, -1, SQLITE_STATIC);
	while ((step = sqlite3_step(st)) == SQLITE_ROW) {
		struct kp_export_row row;

		memset(&row, 0, sizeof(row));
		row.epoch = sqlite3_column_int64(st, 0);
		copy_text(row.journal, sizeof(row.journal), sqlite3_column_text(st, 1));
		row.seq = (uint64_t)sqlite3_column_int64(st, 2);
		row.cose = sqlite3_column_blob(st, 3);
		row.cose_len = (size_t)sqlite3_column_bytes(st, 3);
		row.cert_id = sqlite3_column_int64(st, 4);
		row.cert = sqlite3_column_blob(st, 5);
		row.cert_len = (size_t)sqlite3_column_bytes(st, 5);
		row.alias = sqlite3_column_int(st, 6);
		if (fn(arg, &row) != 0) {
			step = SQLITE_DONE;
			rc = KP_BE_E_INVAL;
			break;
		}
	}
	if (step != SQLITE_DONE)
		rc = fail(s, "export");
	sqlite3_finalize(st);
	return rc;
}

int kp_bstore_record_cose(kp_bstore *s, const char *terminal, uint64_t seq, uint8_t **out,
                          size_t *len)
{
	sqlite3_stmt *st = NULL;
	int rc = prep(s, &st, "SELECT cose FROM records WHERE terminal = ?1 AND seq = ?2"
	                      " AND journal = zeroblob(16)");

	if (rc != KP_BE_OK)
		return rc;
	sqlite3_bind_text(st, 1, terminal, -1, SQLITE_STATIC);
	sqlite3_bind_int64(st, 2, (sqlite3_int64)seq);
	if (sqlite3_step(st) == SQLITE_ROW) {
		*len = (size_t)sqlite3_column_bytes(st, 0);
		*out = malloc(*len + 1);
		if (*out == NULL)
			rc = KP_BE_E_NOMEM;
		else
			memcpy(*out, sqlite3_column_blob(st, 0), *len);
	} else {
		rc = KP_BE_E_NOTFOUND;
	}
	sqlite3_finalize(st);
	return rc;
}
