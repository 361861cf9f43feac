/* SPDX-License-Identifier: Apache-2.0 */
/* The terminal's SQLite store: WAL with synchronous=FULL so a committed tap survives a
 * power cut, foreign keys on, numbered migrations tracked in PRAGMA user_version, and
 * prepared statements only. Tables keyed by 16-byte card tokens are WITHOUT ROWID: half
 * the size of a rowid table plus index, with a tighter latency tail. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <sys/stat.h>
#include <sqlite3.h>

#include "kp_store.h"
#include "kp_store_sql.h"
#include "kp_sys.h"

/* Each migration takes the schema from version i to i+1, inside one transaction.
 * Never edit a migration that has shipped: add the next one. */
static const char *const migrations[KP_SCHEMA_VERSION] = {
	/* 0 -> 1: the base schema */
	"CREATE TABLE meta(key TEXT PRIMARY KEY, value TEXT NOT NULL) WITHOUT ROWID;"
	"CREATE TABLE operators(id TEXT PRIMARY KEY, name TEXT NOT NULL) WITHOUT ROWID;"
	"CREATE TABLE products(id TEXT PRIMARY KEY, name TEXT NOT NULL,"
	"  kind TEXT NOT NULL CHECK (kind IN ('nride')),"
	"  rides INTEGER NOT NULL CHECK (rides > 0)) WITHOUT ROWID;"
	"CREATE TABLE product_operators("
	"  product_id TEXT NOT NULL REFERENCES products(id) ON DELETE CASCADE,"
	"  operator_id TEXT NOT NULL REFERENCES operators(id),"
	"  PRIMARY KEY (product_id, operator_id)) WITHOUT ROWID;"
	"CREATE TABLE entitlements("
	"  token BLOB NOT NULL CHECK (length(token) = 16),"
	"  id INTEGER NOT NULL CHECK (id > 0),"
	"  product_id TEXT NOT NULL REFERENCES products(id),"
	"  rides_left INTEGER NOT NULL CHECK (rides_left >= 0),"
	"  valid_from INTEGER NOT NULL, valid_until INTEGER NOT NULL,"
	"  PRIMARY KEY (token, id)) WITHOUT ROWID;"
	"CREATE TABLE denylist(token BLOB PRIMARY KEY CHECK (length(token) = 16),"
	"  reason TEXT NOT NULL, added INTEGER NOT NULL) WITHOUT ROWID;"
	"CREATE TABLE journal("
	"  seq INTEGER PRIMARY KEY CHECK (seq > 0),"
	"  time_ms INTEGER NOT NULL,"
	"  token BLOB,"
	"  result TEXT NOT NULL, reason TEXT NOT NULL,"
	"  payload BLOB NOT NULL, cose BLOB NOT NULL,"
	"  hash BLOB NOT NULL CHECK (length(hash) = 32));"
	"CREATE TABLE sync_state(key TEXT PRIMARY KEY, value INTEGER NOT NULL) WITHOUT ROWID;"
	"INSERT INTO sync_state(key, value) VALUES ('acked_seq', 0), ('config_version', 0);",

	/* 1 -> 2: the double-tap window, and a journal that cannot be edited in place */
	"CREATE TABLE recent_taps(token BLOB PRIMARY KEY CHECK (length(token) = 16),"
	"  time_ms INTEGER NOT NULL, seq INTEGER NOT NULL) WITHOUT ROWID;"
	"CREATE TRIGGER journal_immutable BEFORE UPDATE ON journal"
	"  BEGIN SELECT RAISE(ABORT, 'journal records are immutable'); END;"
	"CREATE TRIGGER journal_append_only BEFORE DELETE ON journal"
	"  BEGIN SELECT RAISE(ABORT, 'journal records cannot be deleted'); END;",

	/* 2 -> 3: rides taken here that the backend has not acknowledged yet; a bundle's
	 * snapshot minus these is what a card has left on this terminal */
	"CREATE TABLE pending_uses(seq INTEGER PRIMARY KEY, ent_id INTEGER NOT NULL,"
	"  rides INTEGER NOT NULL);"
	"CREATE INDEX pending_uses_ent ON pending_uses(ent_id);",

	/* 3 -> 4: rider categories (My Number linkage): products only riders of a category
	 * may use, and the categories cards and linkages hold */
	"ALTER TABLE products ADD COLUMN category TEXT;"
	"CREATE TABLE eligibility(token BLOB NOT NULL CHECK (length(token) = 16),"
	"  category TEXT NOT NULL, valid_from INTEGER NOT NULL, valid_until INTEGER NOT NULL,"
	"  via BLOB CHECK (via IS NULL OR length(via) = 16),"
	"  PRIMARY KEY (token, category)) WITHOUT ROWID;",

	/* 4 -> 5: fares imported from GTFS feeds (kippuctl fares import). Every row belongs to
	 * one feed, so re-importing a feed is a cascade delete and fresh inserts. Money is in
	 * the currency's minor unit; empty optional ids are '' so they compare as wildcards;
	 * `line` is the row's line in its file, shown as the rule that matched. */
	"CREATE TABLE fare_feeds(feed_id TEXT PRIMARY KEY, source TEXT NOT NULL,"
	"  has_leg_rules INTEGER NOT NULL, has_rule_priority INTEGER NOT NULL,"
	"  default_category TEXT NOT NULL) WITHOUT ROWID;"
	"CREATE TABLE fare_stops(feed_id TEXT NOT NULL REFERENCES fare_feeds ON DELETE CASCADE,"
	"  stop_id TEXT NOT NULL, zone_id TEXT NOT NULL,"
	"  PRIMARY KEY (feed_id, stop_id)) WITHOUT ROWID;"
	"CREATE INDEX fare_stops_zone ON fare_stops(feed_id, zone_id);"
	"CREATE TABLE fare_routes(feed_id TEXT NOT NULL REFERENCES fare_feeds ON DELETE CASCADE,"
	"  route_id TEXT NOT NULL, agency_id TEXT NOT NULL, network_id TEXT NOT NULL,"
	"  PRIMARY KEY (feed_id, route_id)) WITHOUT ROWID;"
	"CREATE TABLE fare_calendar(feed_id TEXT NOT NULL REFERENCES fare_feeds ON DELETE CASCADE,"
	"  service_id TEXT NOT NULL, days INTEGER NOT NULL,"     /* bit 0 = Monday .. bit 6 = Sunday */
	"  start_date INTEGER NOT NULL, end_date INTEGER NOT NULL,"
	"  PRIMARY KEY (feed_id, service_id)) WITHOUT ROWID;"
	"CREATE TABLE fare_calendar_dates(feed_id TEXT NOT NULL REFERENCES fare_feeds ON DELETE CASCADE,"
	"  service_id TEXT NOT NULL, date INTEGER NOT NULL,"
	"  exception_type INTEGER NOT NULL CHECK (exception_type IN (1, 2)),"
	"  PRIMARY KEY (feed_id, service_id, date)) WITHOUT ROWID;"
	"CREATE TABLE fare_attributes(feed_id TEXT NOT NULL REFERENCES fare_feeds ON DELETE CASCADE,"
	"  fare_id TEXT NOT NULL, price INTEGER NOT NULL CHECK (price >= 0),"
	"  currency TEXT NOT NULL, payment_method INTEGER NOT NULL CHECK (payment_method IN (0, 1)),"
	"  transfers INTEGER,"                                 /* NULL: unlimited */
	"  transfer_duration INTEGER, agency_id TEXT NOT NULL, line INTEGER NOT NULL,"
	"  PRIMARY KEY (feed_id, fare_id)) WITHOUT ROWID;"
	"CREATE TABLE fare_rules(feed_id TEXT NOT NULL REFERENCES fare_feeds ON DELETE CASCADE,"
	"  fare_id TEXT NOT NULL, route_id TEXT NOT NULL, origin_id TEXT NOT NULL,"
	"  destination_id TEXT NOT NULL, contains_id TEXT NOT NULL, line INTEGER NOT NULL);"
	"CREATE INDEX fare_rules_od ON fare_rules(feed_id, origin_id, destination_id, route_id);"
	"CREATE INDEX fare_rules_fare ON fare_rules(feed_id, fare_id);"
	"CREATE TABLE fare_rider_prices(feed_id TEXT NOT NULL REFERENCES fare_feeds ON DELETE CASCADE,"
	"  fare_id TEXT NOT NULL, rider_category_id TEXT NOT NULL, price INTEGER NOT NULL,"
	"  currency TEXT NOT NULL, line INTEGER NOT NULL,"
	"  PRIMARY KEY (feed_id, fare_id, rider_category_id)) WITHOUT ROWID;"
	"CREATE TABLE fare_media(feed_id TEXT NOT NULL REFERENCES fare_feeds ON DELETE CASCADE,"
	"  fare_media_id TEXT NOT NULL, name TEXT NOT NULL, type INTEGER NOT NULL,"
	"  PRIMARY KEY (feed_id, fare_media_id)) WITHOUT ROWID;"
	"CREATE TABLE fare_rider_categories(feed_id TEXT NOT NULL REFERENCES fare_feeds"
	"  ON DELETE CASCADE, rider_category_id TEXT NOT NULL, name TEXT NOT NULL,"
	"  is_default INTEGER NOT NULL, PRIMARY KEY (feed_id, rider_category_id)) WITHOUT ROWID;"
	"CREATE TABLE fare_products(feed_id TEXT NOT NULL REFERENCES fare_feeds ON DELETE CASCADE,"
	"  fare_product_id TEXT NOT NULL, rider_category_id TEXT NOT NULL,"
	"  fare_media_id TEXT NOT NULL, name TEXT NOT NULL, amount INTEGER NOT NULL,"
	"  currency TEXT NOT NULL, line INTEGER NOT NULL,"
	"  PRIMARY KEY (feed_id, fare_product_id, rider_category_id, fare_media_id)) WITHOUT ROWID;"
	"CREATE TABLE fare_areas(feed_id TEXT NOT NULL REFERENCES fare_feeds ON DELETE CASCADE,"
	"  area_id TEXT NOT NULL, name TEXT NOT NULL,"
	"  PRIMARY KEY (feed_id, area_id)) WITHOUT ROWID;"
	"CREATE TABLE fare_stop_areas(feed_id TEXT NOT NULL REFERENCES fare_feeds ON DELETE CASCADE,"
	"  area_id TEXT NOT NULL, stop_id TEXT NOT NULL,"
	"  PRIMARY KEY (feed_id, stop_id, area_id)) WITHOUT ROWID;"
	"CREATE TABLE fare_networks(feed_id TEXT NOT NULL REFERENCES fare_feeds ON DELETE CASCADE,"
	"  network_id TEXT NOT NULL, name TEXT NOT NULL,"
	"  PRIMARY KEY (feed_id, network_id)) WITHOUT ROWID;"
	"CREATE TABLE fare_route_networks(feed_id TEXT NOT NULL REFERENCES fare_feeds"
	"  ON DELETE CASCADE, network_id TEXT NOT NULL, route_id TEXT NOT NULL,"
	"  PRIMARY KEY (feed_id, route_id)) WITHOUT ROWID;"
	"CREATE TABLE fare_timeframes(feed_id TEXT NOT NULL REFERENCES fare_feeds ON DELETE CASCADE,"
	"  timeframe_group_id TEXT NOT NULL, start_s INTEGER NOT NULL, end_s INTEGER NOT NULL,"
	"  service_id TEXT NOT NULL,"
	"  PRIMARY KEY (feed_id, timeframe_group_id, start_s, end_s, service_id)) WITHOUT ROWID;"
	"CREATE TABLE fare_leg_rules(feed_id TEXT NOT NULL REFERENCES fare_feeds ON DELETE CASCADE,"
	"  leg_group_id TEXT NOT NULL, network_id TEXT NOT NULL, from_area_id TEXT NOT NULL,"
	"  to_area_id TEXT NOT NULL, from_timeframe_group_id TEXT NOT NULL,"
	"  to_timeframe_group_id TEXT NOT NULL, fare_product_id TEXT NOT NULL,"
	"  rule_priority INTEGER NOT NULL, line INTEGER NOT NULL);"
	"CREATE INDEX fare_leg_rules_feed ON fare_leg_rules(feed_id);"
	"CREATE TABLE fare_transfer_rules(feed_id TEXT NOT NULL REFERENCES fare_feeds"
	"  ON DELETE CASCADE, from_leg_group_id TEXT NOT NULL, to_leg_group_id TEXT NOT NULL,"
	"  transfer_count INTEGER, duration_limit INTEGER, duration_limit_type INTEGER,"
	"  fare_transfer_type INTEGER NOT NULL, fare_product_id TEXT NOT NULL,"
	"  line INTEGER NOT NULL);"
	"CREATE INDEX fare_transfer_rules_feed ON fare_transfer_rules(feed_id);",

	/* 5 -> 6: stored value held by the scheme. The base schema's CHECK pins kind to
	 * 'nride' and changing it means rebuilding products, which two tables reference with
	 * foreign keys on; so a flag says a product is stored value (its rides is a dummy 1),
	 * and its entitlements' rides_left is the balance in the minor unit. */
	"ALTER TABLE products ADD COLUMN stored INTEGER NOT NULL DEFAULT 0"
	"  CHECK (stored IN (0, 1));",

	/* 6 -> 7: period passes (1-day, multi-day, monthly = 30 days), like 5 -> 6 a column
	 * rather than a new kind. A first-use entitlement's valid_from/valid_until is its
	 * activation window until its first tap sets them to the pass's service days. */
	"ALTER TABLE products ADD COLUMN period_days INTEGER"
	"  CHECK (period_days IS NULL OR period_days BETWEEN 1 AND 366);"
	"ALTER TABLE entitlements ADD COLUMN first_use INTEGER NOT NULL DEFAULT 0"
	"  CHECK (first_use IN (0, 1));",

	/* 7 -> 8: each operator's discount for a rider category the fare feed does not price
	 * itself: the share of the adult fare paid (percent), rounded down, up or to the
	 * nearest `unit` minor units. No foreign key: a sync replaces the operators. */
	"CREATE TABLE discounts(operator_id TEXT NOT NULL, category TEXT NOT NULL,"
	"  percent INTEGER NOT NULL CHECK (percent BETWEEN 0 AND 100),"
	"  rounding INTEGER NOT NULL CHECK (rounding IN (0, 1, 2)),"
	"  unit INTEGER NOT NULL CHECK (unit BETWEEN 1 AND 100000),"
	"  PRIMARY KEY (operator_id, category)) WITHOUT ROWID;",

	/* 8 -> 9: the fare engine (terminal/fare/FARES.md). Configuration: each operator's fare
	 * feed and mode, commuter passes (a route and its stops in order), caps per rider
	 * category ('' = adult) and period (0 day, 1 month), scheme transfer rules ('*' =
	 * any operator; off -1 = free). Rider state, one row per card: the open journey, the
	 * last stored-value leg and its transfer chain, and the cap spending of the current
	 * service day and month. */
	"CREATE TABLE operator_fares(operator_id TEXT PRIMARY KEY, feed_id TEXT NOT NULL,"
	"  distance INTEGER NOT NULL CHECK (distance IN (0, 1))) WITHOUT ROWID;"
	"ALTER TABLE products ADD COLUMN commuter_route TEXT;"
	"CREATE TABLE product_stops(product_id TEXT NOT NULL REFERENCES products(id)"
	"  ON DELETE CASCADE, pos INTEGER NOT NULL, stop_id TEXT NOT NULL,"
	"  PRIMARY KEY (product_id, pos)) WITHOUT ROWID;"
	"CREATE TABLE fare_caps(category TEXT NOT NULL, period INTEGER NOT NULL"
	"  CHECK (period IN (0, 1)), amount INTEGER NOT NULL CHECK (amount >= 0),"
	"  PRIMARY KEY (category, period)) WITHOUT ROWID;"
	"CREATE TABLE transfer_rules(from_operator TEXT NOT NULL, to_operator TEXT NOT NULL,"
	"  within_s INTEGER NOT NULL CHECK (within_s BETWEEN 60 AND 86400),"
	"  max_transfers INTEGER NOT NULL CHECK (max_transfers BETWEEN 1 AND 100),"
	"  off INTEGER NOT NULL CHECK (off >= -1),"
	"  PRIMARY KEY (from_operator, to_operator)) WITHOUT ROWID;"
	"CREATE TABLE fare_state(token BLOB PRIMARY KEY CHECK (length(token) = 16),"
	"  open_ms INTEGER, open_seq INTEGER, open_operator TEXT, open_route TEXT,"
	"  open_stop TEXT, open_ent INTEGER, open_product TEXT, open_paid INTEGER,"
	"  leg_on_ms INTEGER, leg_off_ms INTEGER, leg_operator TEXT, leg_feed TEXT,"
	"  leg_group TEXT, leg_paid INTEGER, chain_start_ms INTEGER, chain_fare TEXT,"
	"  last_operator TEXT, last_stop TEXT,"
	"  chain_transfers INTEGER NOT NULL DEFAULT 0,"
	"  day_id INTEGER NOT NULL DEFAULT 0, day_spent INTEGER NOT NULL DEFAULT 0,"
	"  month_id INTEGER NOT NULL DEFAULT 0, month_spent INTEGER NOT NULL DEFAULT 0"
	") WITHOUT ROWID;"
	"CREATE INDEX fare_state_open ON fare_state(open_ms) WHERE open_ms IS NOT NULL;"
	/* Routes and networks a product is limited to, beyond its operators (none: all). */
	"CREATE TABLE product_scope(product_id TEXT NOT NULL REFERENCES products(id)"
	"  ON DELETE CASCADE, kind TEXT NOT NULL CHECK (kind IN ('route', 'network')),"
	"  scope_id TEXT NOT NULL, PRIMARY KEY (product_id, kind, scope_id)) WITHOUT ROWID;"
	/* What the backend knows of a card from the other terminals (bundle): its latest
	 * record there, a journey open there, a journey of ours it closed (closed_ms = our
	 * tap-on's time), its last stored-value leg, its spending this day and month. */
	"CREATE TABLE fare_remote(token BLOB PRIMARY KEY CHECK (length(token) = 16),"
	"  last_ms INTEGER NOT NULL, open_ms INTEGER, open_operator TEXT, open_route TEXT,"
	"  open_stop TEXT, open_paid INTEGER, open_product TEXT, open_ent INTEGER,"
	"  closed_ms INTEGER, leg_operator TEXT, leg_on_ms INTEGER, leg_off_ms INTEGER,"
	"  leg_paid INTEGER, day_id INTEGER NOT NULL DEFAULT 0,"
	"  day_spent INTEGER NOT NULL DEFAULT 0, month_id INTEGER NOT NULL DEFAULT 0,"
	"  month_spent INTEGER NOT NULL DEFAULT 0) WITHOUT ROWID;",

	/* 9 -> 10: a product limited to networks looks up the tap's route in every feed's
	 * route networks at each tap: by route, not by a scan. */
	"CREATE INDEX fare_route_networks_route ON fare_route_networks(route_id);"
	"CREATE INDEX fare_routes_route ON fare_routes(route_id);",

	/* 10 -> 11: the run of fares v2 transfers under one (from, to) leg group pair that
	 * reached the card's last leg, whose rules measure duration_limit from the run's first
	 * leg (terminal/fare/FARES.md); run_on_ms NULL: none. A chain under way when the terminal is
	 * upgraded has no run yet: its next transfer is measured from the previous leg. */
	"ALTER TABLE fare_state ADD COLUMN run_from TEXT;"
	"ALTER TABLE fare_state ADD COLUMN run_to TEXT;"
	"ALTER TABLE fare_state ADD COLUMN run_on_ms INTEGER;"
	"ALTER TABLE fare_state ADD COLUMN run_off_ms INTEGER;",

	/* 11 -> 12: the journal's identity (backend-sync/PROTOCOL.md section 4.1), 32 hex
	 * digits: random for a database whose journal is empty, so the backend takes a rebuilt
	 * database as a new journal of the same terminal; all zeros (the legacy journal, which
	 * the backend holds this terminal's records under already) for one that has records. */
	"INSERT OR IGNORE INTO meta(key, value) SELECT 'journal_id', CASE WHEN EXISTS"
	"  (SELECT 1 FROM journal) THEN '00000000000000000000000000000000'"
	"  ELSE lower(hex(randomblob(16))) END;",

	/* 12 -> 13: direct My Number taps per linkage in the current service day (the
	 * scheme's limits, bundle format 4): one row per linkage, reset when the day moves. */
	"CREATE TABLE direct_use(token BLOB PRIMARY KEY CHECK (length(token) = 16),"
	"  day_id INTEGER NOT NULL, rides INTEGER NOT NULL, value INTEGER NOT NULL) WITHOUT ROWID;",

	/* 13 -> 14: the staging area of a chunked snapshot (PROTOCOL.md section 5.5,
	 * snapstage.c): the one snapshot being fetched (its SHA-256 and chunk count) and the
	 * chunks received so far, kept across a cut connection or a restart. */
	"CREATE TABLE snapshot_stage(id INTEGER PRIMARY KEY CHECK (id = 1),"
	"  snap BLOB NOT NULL CHECK (length(snap) = 32), n_chunks INTEGER NOT NULL);"
	"CREATE TABLE snapshot_chunks(idx INTEGER PRIMARY KEY, data BLOB NOT NULL);",
};

static const char *const stmt_sql[KP_STMT_COUNT] = {
	[KP_STMT_FARE_STATE_GET] = "SELECT open_ms, open_seq, open_operator, open_route, open_stop,"
	                           " open_ent, open_product, open_paid, leg_on_ms, leg_off_ms,"
	                           " leg_operator, leg_feed, leg_group, leg_paid, chain_start_ms,"
	                           " chain_fare, chain_transfers, day_id, day_spent, month_id,"
	                           " month_spent, last_operator, last_stop, run_from, run_to,"
	                           " run_on_ms, run_off_ms FROM fare_state WHERE token = ?1",
	[KP_STMT_FARE_STATE_PUT] = "INSERT OR REPLACE INTO fare_state(token, open_ms, open_seq,"
	                           " open_operator, open_route, open_stop, open_ent, open_product,"
	                           " open_paid, leg_on_ms, leg_off_ms, leg_operator, leg_feed,"
	                           " leg_group, leg_paid, chain_start_ms, chain_fare,"
	                           " chain_transfers, day_id, day_spent, month_id, month_spent,"
	                           " last_operator, last_stop, run_from, run_to, run_on_ms,"
	                           " run_off_ms)"
	                           " VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13,"
	                           " ?14, ?15, ?16, ?17, ?18, ?19, ?20, ?21, ?22, ?23, ?24, ?25,"
	                           " ?26, ?27, ?28)",
	[KP_STMT_OPERATOR_FARE] = "SELECT feed_id, distance FROM operator_fares WHERE operator_id = ?1",
	[KP_STMT_FARE_CAP] = "SELECT amount FROM fare_caps WHERE category = ?1 AND period = ?2",
	[KP_STMT_TRANSFER_RULE] = "SELECT from_operator, to_operator, within_s, max_transfers, off"
	                          " FROM transfer_rules WHERE from_operator IN (?1, '*')"
	                          " AND to_operator IN (?2, '*')"
	                          " ORDER BY from_operator = '*', to_operator = '*' LIMIT 1",
	[KP_STMT_PRODUCT_STOPS] = "SELECT p.commuter_route, s.stop_id FROM products p"
	                          " LEFT JOIN product_stops s ON s.product_id = p.id"
	                          " WHERE p.id = ?1 ORDER BY s.pos",
	[KP_STMT_META_GET] = "SELECT value FROM meta WHERE key = ?1",
	[KP_STMT_META_SET] = "INSERT INTO meta(key, value) VALUES (?1, ?2)"
	                     " ON CONFLICT(key) DO UPDATE SET value = excluded.value",
	[KP_STMT_DENY_GET] = "SELECT 1 FROM denylist WHERE token = ?1",
	[KP_STMT_RECENT_GET] = "SELECT time_ms FROM recent_taps WHERE token = ?1",
	[KP_STMT_RECENT_SET] = "INSERT INTO recent_taps(token, time_ms, seq) VALUES (?1, ?2, ?3)"
	                       " ON CONFLICT(token) DO UPDATE SET time_ms = excluded.time_ms,"
	                       " seq = excluded.seq",
	[KP_STMT_CARD_ENTS] = "SELECT e.id, e.product_id, e.rides_left, e.valid_from, e.valid_until,"
	                      " EXISTS (SELECT 1 FROM product_operators po"
	                      "  WHERE po.product_id = e.product_id AND po.operator_id = ?2),"
	                      " coalesce(p.category, ''), p.stored, coalesce(p.period_days, 0),"
	                      " e.first_use, p.commuter_route IS NOT NULL,"
	                      " ?3 IS NULL OR NOT EXISTS (SELECT 1 FROM product_scope ps"
	                      "  WHERE ps.product_id = e.product_id) OR EXISTS (SELECT 1"
	                      "  FROM product_scope ps WHERE ps.product_id = e.product_id AND"
	                      "  ((ps.kind = 'route' AND ps.scope_id = ?3) OR (ps.kind = 'network'"
	                      "  AND ps.scope_id IN (SELECT network_id FROM fare_route_networks"
	                      "  WHERE route_id = ?3 UNION SELECT network_id FROM fare_routes"
	                      "  WHERE route_id = ?3 AND network_id <> ''))))"
	                      " FROM entitlements e JOIN products p ON p.id = e.product_id"
	                      " WHERE e.token = ?1 ORDER BY e.id",
	[KP_STMT_CARD_ELIG] = "SELECT category, valid_from, valid_until, via FROM eligibility"
	                      " WHERE token = ?1 ORDER BY category",
	[KP_STMT_TAKE_RIDE] = "UPDATE entitlements SET rides_left = rides_left - 1"
	                      " WHERE token = ?1 AND id = ?2 AND rides_left = ?3 AND rides_left > 0",
	[KP_STMT_ACTIVATE] = "UPDATE entitlements SET valid_from = ?3, valid_until = ?4, first_use = 0"
	                     " WHERE token = ?1 AND id = ?2 AND first_use = 1",
	[KP_STMT_CHARGE] = "UPDATE entitlements SET rides_left = rides_left - ?4"
	                   " WHERE token = ?1 AND id = ?2 AND rides_left = ?3 AND rides_left >= ?4",
	[KP_STMT_JOURNAL_HEAD] = "SELECT seq, hash FROM journal ORDER BY seq DESC LIMIT 1",
	[KP_STMT_JOURNAL_APPEND] = "INSERT INTO journal(seq, time_ms, token, result, reason,"
	                           " payload, cose, hash) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
	[KP_STMT_PENDING_USE] = "INSERT INTO pending_uses(seq, ent_id, rides) VALUES (?1, ?2, ?3)",
	[KP_STMT_DISCOUNT] = "SELECT percent, rounding, unit FROM discounts"
	                     " WHERE operator_id = ?1 AND category = ?2",
	[KP_STMT_ENT_GET] = "SELECT product_id, rides_left, valid_from, valid_until, first_use"
	                    " FROM entitlements WHERE token = ?1 AND id = ?2",
};

const char *kp_store_errmsg(const kp_store *s)
{
	if (s == NULL)
		return "no store";
	if (s->err[0] != '\0')
		return s->err;
	return s->db != NULL ? sqlite3_errmsg(s->db) : "no database";
}

int kp_store_fail(kp_store *s, const char *what)
{
	snprintf(s->err, sizeof(s->err), "%s: %s", what,
	         s->db != NULL ? sqlite3_errmsg(s->db) : "no database");
	return KP_E_DB;
}

void kp_store_col_text(sqlite3_stmt *st, int i, char *out, size_t cap)
{
	const unsigned char *t = sqlite3_column_text(st, i);

	snprintf(out, cap, "%s", t != NULL ? (const char *)t : "");
}

void kp_store_bind_opt(sqlite3_stmt *st, int i, const char *s)
{
	if (s != NULL && s[0] != '\0')
		sqlite3_bind_text(st, i, s, -1, SQLITE_STATIC);
	else
		sqlite3_bind_null(st, i);
}

sqlite3_stmt *kp_store_stmt(kp_store *s, enum kp_stmt id)
{
	return kp_store_stmt_sql(s, id, stmt_sql[id]);
}

sqlite3_stmt *kp_store_stmt_sql(kp_store *s, enum kp_stmt id, const char *sql)
{
	if (s->stmts[id] == NULL) {
		if (sql == NULL || sqlite3_prepare_v3(s->db, sql, -1, SQLITE_PREPARE_PERSISTENT,
		                       &s->stmts[id], NULL) != SQLITE_OK) {
			kp_store_fail(s, "prepare");
			return NULL;
		}
	}
	sqlite3_reset(s->stmts[id]);
	sqlite3_clear_bindings(s->stmts[id]);
	return s->stmts[id];
}

static int exec(kp_store *s, const char *sql)
{
	char *msg = NULL;

	if (sqlite3_exec(s->db, sql, NULL, NULL, &msg) != SQLITE_OK) {
		snprintf(s->err, sizeof(s->err), "%s", msg != NULL ? msg : "sqlite3_exec failed");
		sqlite3_free(msg);
		return KP_E_DB;
	}
	return KP_OK;
}

int kp_store_schema_version(kp_store *s, int *version)
{
	sqlite3_stmt *st = NULL;
	int rc = KP_E_DB;

	if (sqlite3_prepare_v2(s->db, "PRAGMA user_version", -1, &st, NULL) != SQLITE_OK)
		return kp_store_fail(s, "user_version");
	if (sqlite3_step(st) == SQLITE_ROW) {
		*version = sqlite3_column_int(st, 0);
		rc = KP_OK;
	}
	sqlite3_finalize(st);
	return rc;
}

/* A read-only open migrates nothing: the schema must be this program's already. */
static int check_version(kp_store *s, int target)
{
	int version = 0, rc = kp_store_schema_version(s, &version);

	if (rc == KP_OK && version != target) {
		snprintf(s->err, sizeof(s->err), "database schema version %d is %s than this "
		         "program's %d%s", version, version > target ? "newer" : "older", target,
		         version > target ? "" : " (kippu-terminal, or a command that writes to it, "
		         "migrates it)");
		rc = KP_E_SCHEMA;
	}
	return rc;
}

static int migrate(kp_store *s, int target)
{
	int version = 0, rc;
	char sql[64];

	rc = kp_store_schema_version(s, &version);
	if (rc != KP_OK)
		return rc;
	if (version > KP_SCHEMA_VERSION) {
		snprintf(s->err, sizeof(s->err),
		         "database schema version %d is newer than this program's %d", version,
		         KP_SCHEMA_VERSION);
		return KP_E_SCHEMA;
	}
	while (version < target) {
		rc = exec(s, "BEGIN IMMEDIATE");
		if (rc != KP_OK)
			return rc;
		snprintf(sql, sizeof(sql), "PRAGMA user_version = %d", version + 1);
		rc = exec(s, migrations[version]);
		if (rc == KP_OK)
			rc = exec(s, sql);
		if (rc == KP_OK)
			rc = exec(s, "COMMIT");
		if (rc != KP_OK) {
			char keep[sizeof(s->err)];

			memcpy(keep, s->err, sizeof(keep));
			exec(s, "ROLLBACK");
			snprintf(s->err, sizeof(s->err), "migration %d -> %d: %.400s", version,
			         version + 1, keep);
			return KP_E_SCHEMA;
		}
		version++;
	}
	return KP_OK;
}

/* A database with tables must be a terminal's: the journal table is in every schema since
 * the first; the backend's has records and terminals instead. */
static int check_kind(kp_store *s, const char *path, int *empty)
{
	sqlite3_stmt *st = NULL;
	int journal = 0, backend = 0, tables = 0;

	if (sqlite3_prepare_v2(s->db, "SELECT name FROM sqlite_master WHERE type = 'table'", -1,
	                       &st, NULL) != SQLITE_OK)
		return kp_store_fail(s, "schema");
	while (sqlite3_step(st) == SQLITE_ROW) {
		const char *name = (const char *)sqlite3_column_text(st, 0);

		tables++;
		journal |= name != NULL && strcmp(name, "journal") == 0;
		backend |= name != NULL && (strcmp(name, "records") == 0 ||
		                            strcmp(name, "terminals") == 0);
	}
	if (sqlite3_finalize(st) != SQLITE_OK)
		return kp_store_fail(s, "schema");
	*empty = tables == 0;
	if (tables == 0 || journal)
		return KP_OK;
	snprintf(s->err, sizeof(s->err), "%.400s is %s, not a terminal database", path,
	         backend ? "a backend database" : "some other SQLite database");
	return KP_E_SCHEMA;
}

/* Before opening without KP_STORE_CREATE: a missing file is named so, and never made. */
static int check_exists(kp_store *s, const char *path)
{
	struct stat sb;

	if (stat(path, &sb) == 0 && S_ISREG(sb.st_mode))
		return KP_OK;
	if (errno == ENOENT)
		snprintf(s->err, sizeof(s->err), "no such database: %.400s", path);
	else
		snprintf(s->err, sizeof(s->err), "cannot open database %.400s: %s", path,
		         S_ISDIR(sb.st_mode) ? "it is a folder" : strerror(errno));
	return KP_E_IO;
}

static int open_at(kp_store **out, const char *path, int version, int mode, char *err,
                   size_t err_cap)
{
	kp_store *s;
	int rc, empty = 1, flags = SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE;

	*out = NULL;
	if (err_cap > 0)
		err[0] = '\0';
	if (path == NULL || version < 0 || version > KP_SCHEMA_VERSION)
		return KP_E_INVAL;
	s = calloc(1, sizeof(*s));
	if (s == NULL)
		return KP_E_NOMEM;
	if (mode != KP_STORE_CREATE) {
		flags = mode == KP_STORE_READONLY ? SQLITE_OPEN_READONLY : SQLITE_OPEN_READWRITE;
		rc = check_exists(s, path);
		if (rc != KP_OK)
			goto fail_named;
	} else if (kp_sys_private_file(path) != 0) {
		/* created 0600 whatever the umask; SQLite gives -wal and -shm the same mode */
		snprintf(s->err, sizeof(s->err), "database %.400s: %s", path, strerror(errno));
		rc = KP_E_IO;
		goto fail_named;
	}
	if (sqlite3_open_v2(path, &s->db, flags | SQLITE_OPEN_NOMUTEX, NULL) != SQLITE_OK) {
		rc = kp_store_fail(s, path);
		goto fail;
	}
	sqlite3_extended_result_codes(s->db, 1);
	sqlite3_busy_timeout(s->db, 5000);
	rc = check_kind(s, path, &empty);
	if (rc == KP_E_SCHEMA || (rc == KP_OK && empty && mode == KP_STORE_READONLY)) {
		if (rc == KP_OK)
			snprintf(s->err, sizeof(s->err), "%.400s is an empty database, not a "
			         "terminal database", path);
		rc = KP_E_SCHEMA;
		goto fail_named;
	}
	/* Checkpoints run when the terminal is idle (kp_store_idle), never inside a tap. */
	if (rc == KP_OK && mode != KP_STORE_READONLY)
		rc = exec(s, "PRAGMA journal_mode = WAL;"
		             "PRAGMA synchronous = FULL;"
		             "PRAGMA wal_autocheckpoint = 0;");
	if (rc == KP_OK)
		rc = exec(s, "PRAGMA foreign_keys = ON; PRAGMA cache_size = -2048;");
	if (rc != KP_OK)
		goto fail;
	rc = mode == KP_STORE_READONLY ? check_version(s, version) : migrate(s, version);
	if (rc != KP_OK)
		goto fail;
	*out = s;
	return KP_OK;
fail:
	if (err_cap > 0)
		snprintf(err, err_cap, "store %s: %s", path, kp_store_errmsg(s));
	kp_store_close(s);
	return rc;
fail_named:
	if (err_cap > 0)
		snprintf(err, err_cap, "%s", kp_store_errmsg(s));
	kp_store_close(s);
	return rc;
}

int kp_store_open_at(kp_store **out, const char *path, int version)
{
	return open_at(out, path, version, KP_STORE_CREATE, NULL, 0);
}

int kp_store_open(kp_store **out, const char *path)
{
	return open_at(out, path, KP_SCHEMA_VERSION, KP_STORE_CREATE, NULL, 0);
}

int kp_store_open_err(kp_store **out, const char *path, char *err, size_t err_cap)
{
	return open_at(out, path, KP_SCHEMA_VERSION, KP_STORE_CREATE, err, err_cap);
}

int kp_store_open_mode(kp_store **out, const char *path, int mode, char *err, size_t err_cap)
{
	return open_at(out, path, KP_SCHEMA_VERSION, mode, err, err_cap);
}

void kp_store_close(kp_store *s)
{
	if (s == NULL)
		return;
	for (int i = 0; i < KP_STMT_COUNT; i++)
		sqlite3_finalize(s->stmts[i]);
	if (s->db != NULL) {
		/* Fold the WAL back into the database on a clean exit. */
		sqlite3_wal_checkpoint_v2(s->db, NULL, SQLITE_CHECKPOINT_TRUNCATE, NULL, NULL);
		sqlite3_close(s->db);
	}
	free(s);
}

void kp_store_set_busy_timeout(kp_store *s, int ms)
{
	sqlite3_busy_timeout(s->db, ms);
}

int kp_store_idle(kp_store *s)
{
	int log = 0, done = 0;

	if (sqlite3_wal_checkpoint_v2(s->db, NULL, SQLITE_CHECKPOINT_PASSIVE, &log, &done) !=
	    SQLITE_OK)
		return kp_store_fail(s, "checkpoint");
	return KP_OK;
}

int kp_store_pragmas(kp_store *s, char *journal_mode, size_t cap, int *synchronous,
                     int *foreign_keys)
{
	sqlite3_stmt *st = NULL;
	int rc = KP_OK;

	if (sqlite3_prepare_v2(s->db, "SELECT * FROM pragma_journal_mode, pragma_synchronous,"
	                       " pragma_foreign_keys", -1, &st, NULL) != SQLITE_OK)
		return kp_store_fail(s, "pragmas");
	if (sqlite3_step(st) == SQLITE_ROW) {
		kp_store_col_text(st, 0, journal_mode, cap);
		*synchronous = sqlite3_column_int(st, 1);
		*foreign_keys = sqlite3_column_int(st, 2);
	} else {
		rc = kp_store_fail(s, "pragmas");
	}
	sqlite3_finalize(st);
	return rc;
}

int kp_store_begin(kp_store *s)
{
	return exec(s, "BEGIN IMMEDIATE");
}

int kp_store_commit(kp_store *s)
{
	return exec(s, "COMMIT");
}

void kp_store_rollback(kp_store *s)
{
	if (!sqlite3_get_autocommit(s->db))
		exec(s, "ROLLBACK");
}

void kp_store_bind_vals(sqlite3_stmt *st, const struct kp_sql_val *v, size_t n)
{
	for (size_t i = 0; i < n; i++) {
		int at = (int)i + 1;

		if (v[i].kind == 'i')
			sqlite3_bind_int64(st, at, v[i].i);
		else if (v[i].kind == 'b')
			sqlite3_bind_blob(st, at, v[i].p, (int)v[i].i, SQLITE_TRANSIENT);
		else if (v[i].kind == 'o')
			kp_store_bind_opt(st, at, v[i].p);
		else if (v[i].kind == 't')
			sqlite3_bind_text(st, at, v[i].p, -1, SQLITE_TRANSIENT);
	}
}

sqlite3_stmt *kp_store_row_vals(kp_store *s, enum kp_stmt id, const char *what, int *row,
                                const struct kp_sql_val *v, size_t n)
{
	sqlite3_stmt *st = kp_store_stmt(s, id);
	int rc;

	*row = 0;
	if (st == NULL)
		return NULL;
	kp_store_bind_vals(st, v, n);
	rc = sqlite3_step(st);
	if (rc != SQLITE_ROW && rc != SQLITE_DONE) {
		kp_store_fail(s, what);
		sqlite3_reset(st);
		return NULL;
	}
	*row = rc == SQLITE_ROW;
	return st;
}

int kp_store_prep_vals(kp_store *s, sqlite3_stmt **st, const char *sql, const char *what,
                       const struct kp_sql_val *v, size_t n)
{
	*st = NULL;
	if (sqlite3_prepare_v2(s->db, sql, -1, st, NULL) != SQLITE_OK)
		return kp_store_fail(s, what);
	kp_store_bind_vals(*st, v, n);
	return KP_OK;
}

int kp_store_run_vals(kp_store *s, const char *what, const char *sql,
                      const struct kp_sql_val *v, size_t n)
{
	sqlite3_stmt *st = NULL;
	int rc = kp_store_prep_vals(s, &st, sql, what, v, n);

	if (rc == KP_OK)
		rc = kp_store_step_done(s, st, what);
	sqlite3_finalize(st);
	return rc;
}

int kp_store_step_done(kp_store *s, sqlite3_stmt *st, const char *what)
{
	int rc = sqlite3_step(st);

	if (rc != SQLITE_DONE)
		rc = kp_store_fail(s, what);
	else
		rc = KP_OK;
	sqlite3_reset(st);
	return rc;
}

/* Runs a cached statement that returns no rows with the values bound; changed: when set,
 * the statement must change exactly one row, else "what: changed under the tap". */
static int cached_run_vals(kp_store *s, enum kp_stmt id, const char *what, const char *changed,
                           const struct kp_sql_val *v, size_t n)
{
	int row = 0;
	sqlite3_stmt *st = kp_store_row_vals(s, id, what, &row, v, n);

	if (st == NULL)
		return KP_E_DB;
	sqlite3_reset(st);
	if (changed != NULL && sqlite3_changes(s->db) != 1) {
		snprintf(s->err, sizeof(s->err), "%s: %s changed under the tap", what, changed);
		return KP_E_DB;
	}
	return KP_OK;
}
#define cached_run(s, id, what, changed, ...) \
	cached_run_vals((s), (id), (what), (changed), KP_SQL_VALS(__VA_ARGS__))

/* A product's integer column (SQL with ?1 the product id); "no product ID" if none. */
static int product_int(kp_store *s, const char *sql, const char *what, const char *id, int *v)
{
	sqlite3_stmt *st = NULL;
	int rc = kp_store_prep(s, &st, sql, what, KP_SQL_TEXT(id));

	*v = 0;
	if (rc != KP_OK)
		return rc;
	rc = sqlite3_step(st);
	if (rc == SQLITE_ROW) {
		*v = sqlite3_column_int(st, 0);
		rc = KP_OK;
	} else if (rc == SQLITE_DONE) {
		snprintf(s->err, sizeof(s->err), "no product %s", id);
		rc = KP_E_INVAL;
	} else {
		rc = kp_store_fail(s, what);
	}
	sqlite3_finalize(st);
	return rc;
}

int kp_store_defined(kp_store *s, int product, const char *id, int *found)
{
	int rc = product_int(s, product ? "SELECT 1 FROM products WHERE id = ?1" :
	                     "SELECT 1 FROM operators WHERE id = ?1", "defined", id, found);

	return rc == KP_E_INVAL ? KP_OK : rc;
}

int kp_store_meta_set(kp_store *s, const char *key, const char *value)
{
	return cached_run(s, KP_STMT_META_SET, "meta set", NULL, KP_SQL_TEXT(key),
	                  KP_SQL_TEXT(value));
}

int kp_store_direct_use(kp_store *s, const uint8_t token[KP_TOKEN_LEN], int64_t day_id,
                        int64_t *rides, int64_t *value)
{
	sqlite3_stmt *st = NULL;
	int rc = KP_OK;

	*rides = *value = 0;
	if (sqlite3_prepare_v2(s->db, "SELECT rides, value FROM direct_use WHERE token = ?1"
	                       " AND day_id = ?2", -1, &st, NULL) != SQLITE_OK)
		return kp_store_fail(s, "direct use");
	sqlite3_bind_blob(st, 1, token, KP_TOKEN_LEN, SQLITE_STATIC);
	sqlite3_bind_int64(st, 2, day_id);
	rc = sqlite3_step(st);
	if (rc == SQLITE_ROW) {
		*rides = sqlite3_column_int64(st, 0);
		*value = sqlite3_column_int64(st, 1);
	}
	rc = rc == SQLITE_ROW || rc == SQLITE_DONE ? KP_OK : kp_store_fail(s, "direct use");
	sqlite3_finalize(st);
	return rc;
}

int kp_store_add_direct_use(kp_store *s, const uint8_t token[KP_TOKEN_LEN], int64_t day_id,
                            int64_t rides, int64_t value)
{
	sqlite3_stmt *st = NULL;
	int rc;

	if (sqlite3_prepare_v2(s->db, "INSERT INTO direct_use(token, day_id, rides, value)"
	                       " VALUES (?1, ?2, ?3, ?4) ON CONFLICT(token) DO UPDATE SET"
	                       " rides = CASE WHEN day_id = ?2 THEN rides + ?3 ELSE ?3 END,"
	                       " value = CASE WHEN day_id = ?2 THEN value + ?4 ELSE ?4 END,"
	                       " day_id = ?2", -1, &st, NULL) != SQLITE_OK)
		return kp_store_fail(s, "direct use");
	sqlite3_bind_blob(st, 1, token, KP_TOKEN_LEN, SQLITE_STATIC);
	sqlite3_bind_int64(st, 2, day_id);
	sqlite3_bind_int64(st, 3, rides);
	sqlite3_bind_int64(st, 4, value);
	/* step_done resets (for the statement cache); this statement is our own */
	rc = kp_store_step_done(s, st, "direct use");
	sqlite3_finalize(st);
	return rc;
}

int kp_store_journal_latest_after(kp_store *s, uint64_t after_seq, int64_t *time_ms)
{
	sqlite3_stmt *st = NULL;
	int rc;

	*time_ms = 0;
	if (sqlite3_prepare_v2(s->db, "SELECT coalesce(max(time_ms), 0) FROM journal"
	                       " WHERE seq > ?1", -1, &st, NULL) != SQLITE_OK)
		return kp_store_fail(s, "journal time");
	sqlite3_bind_int64(st, 1, (sqlite3_int64)after_seq);
	rc = sqlite3_step(st);
	if (rc == SQLITE_ROW)
		*time_ms = sqlite3_column_int64(st, 0);
	rc = rc == SQLITE_ROW ? KP_OK : kp_store_fail(s, "journal time");
	sqlite3_finalize(st);
	return rc;
}

int kp_store_meta_get(kp_store *s, const char *key, char *out, size_t cap)
{
	sqlite3_stmt *st = kp_store_stmt(s, KP_STMT_META_GET);
	int rc;

	if (st == NULL)
		return KP_E_DB;
	sqlite3_bind_text(st, 1, key, -1, SQLITE_STATIC);
	rc = sqlite3_step(st);
	if (rc == SQLITE_ROW) {
		const char *v = (const char *)sqlite3_column_text(st, 0);

		rc = KP_E_INVAL;
		if (v != NULL && strlen(v) < cap) {
			memcpy(out, v, strlen(v) + 1);
			rc = KP_OK;
		}
	} else {
		rc = rc == SQLITE_DONE ? KP_E_INVAL : kp_store_fail(s, "meta get");
	}
	/* Reset at once: a statement left on a row holds a read snapshot open, which
	 * blocks checkpoints and makes our next write fail with a stale snapshot. */
	sqlite3_reset(st);
	return rc;
}

static int run_bound(kp_store *s, const char *sql, const char *what,
                     int (*bind)(sqlite3_stmt *st, const void *arg), const void *arg)
{
	sqlite3_stmt *st = NULL;
	int rc;

	if (sqlite3_prepare_v2(s->db, sql, -1, &st, NULL) != SQLITE_OK)
		return kp_store_fail(s, what);
	rc = bind(st, arg);
	if (rc == KP_OK)
		rc = kp_store_step_done(s, st, what);
	sqlite3_finalize(st);
	return rc;
}

struct text2 { const char *a, *b; int n; };

static int bind_text2(sqlite3_stmt *st, const void *arg)
{
	const struct text2 *t = arg;

	sqlite3_bind_text(st, 1, t->a, -1, SQLITE_STATIC);
	sqlite3_bind_text(st, 2, t->b, -1, SQLITE_STATIC);
	if (t->n > 0)
		sqlite3_bind_int(st, 3, t->n);
	return KP_OK;
}

int kp_store_put_operator(kp_store *s, const char *id, const char *name)
{
	struct text2 t = { id, name, 0 };

	if (id == NULL || *id == '\0' || strlen(id) > KP_ID_MAX || name == NULL)
		return KP_E_INVAL;
	return run_bound(s, "INSERT INTO operators(id, name) VALUES (?1, ?2)"
	                    " ON CONFLICT(id) DO UPDATE SET name = excluded.name",
	                 "operator", bind_text2, &t);
}

int kp_store_put_product(kp_store *s, const char *id, const char *name, int rides,
                         const char *const *operators, size_t n_operators)
{
	return kp_store_put_product_cat(s, id, name, rides, NULL, operators, n_operators);
}

static int bind_category(sqlite3_stmt *st, const void *arg)
{
	const struct text2 *t = arg;

	sqlite3_bind_text(st, 1, t->a, -1, SQLITE_STATIC);
	if (t->b != NULL && *t->b != '\0')
		sqlite3_bind_text(st, 2, t->b, -1, SQLITE_STATIC);
	return KP_OK;
}

int kp_store_put_product_cat(kp_store *s, const char *id, const char *name, int rides,
                             const char *category, const char *const *operators,
                             size_t n_operators)
{
	struct text2 t = { id, name, rides };
	int rc;

	if (id == NULL || *id == '\0' || strlen(id) > KP_ID_MAX || name == NULL || rides <= 0 ||
	    n_operators == 0 || (category != NULL && strlen(category) > KP_ID_MAX))
		return KP_E_INVAL;
	rc = run_bound(s, "INSERT INTO products(id, name, kind, rides) VALUES (?1, ?2, 'nride', ?3)"
	                  " ON CONFLICT(id) DO UPDATE SET name = excluded.name, rides = excluded.rides",
	               "product", bind_text2, &t);
	if (rc != KP_OK)
		return rc;
	t.n = 0;
	t.a = id;
	rc = run_bound(s, "DELETE FROM product_operators WHERE product_id = ?1 AND ?2 IS NOT NULL",
	               "product operators", bind_text2, &t);
	for (size_t i = 0; rc == KP_OK && i < n_operators; i++) {
		t.b = operators[i];
		rc = run_bound(s, "INSERT INTO product_operators(product_id, operator_id)"
		                  " VALUES (?1, ?2)", "product operator", bind_text2, &t);
	}
	if (rc == KP_OK) {
		t.b = category;
		rc = run_bound(s, "UPDATE products SET category = ?2 WHERE id = ?1", "product category",
		               bind_category, &t);
	}
	return rc;
}

struct elig_arg {
	const uint8_t *token, *via;
	const char *category;
	int64_t from, until;
};

static int bind_elig(sqlite3_stmt *st, const void *arg)
{
	const struct elig_arg *e = arg;

	sqlite3_bind_blob(st, 1, e->token, KP_TOKEN_LEN, SQLITE_STATIC);
	sqlite3_bind_text(st, 2, e->category, -1, SQLITE_STATIC);
	sqlite3_bind_int64(st, 3, e->from);
	sqlite3_bind_int64(st, 4, e->until);
	if (e->via != NULL)
		sqlite3_bind_blob(st, 5, e->via, KP_TOKEN_LEN, SQLITE_STATIC);
	return KP_OK;
}

int kp_store_put_eligibility(kp_store *s, const uint8_t token[KP_TOKEN_LEN], const char *category,
                             int64_t from_ms, int64_t until_ms, const uint8_t *via)
{
	struct elig_arg e = { token, via, category, from_ms, until_ms };

	if (category == NULL || *category == '\0' || strlen(category) > KP_ID_MAX ||
	    until_ms <= from_ms)
		return KP_E_INVAL;
	return run_bound(s, "INSERT INTO eligibility(token, category, valid_from, valid_until, via)"
	                    " VALUES (?1, ?2, ?3, ?4, ?5) ON CONFLICT(token, category) DO UPDATE SET"
	                    " valid_from = excluded.valid_from, valid_until = excluded.valid_until,"
	                    " via = excluded.via", "eligibility", bind_elig, &e);
}

/* Steps a cached query into out, cap elements of size bytes (each zeroed, then filled by
 * read), and resets it; *n: how many. */
static int cached_rows(kp_store *s, sqlite3_stmt *st, const char *what, void *out, size_t size,
                       size_t cap, size_t *n,
                       void (*read)(sqlite3_stmt *st, void *el, const void *arg), const void *arg)
{
	int rc;

	while ((rc = sqlite3_step(st)) == SQLITE_ROW && *n < cap) {
		void *el = (char *)out + *n * size;

		memset(el, 0, size);
		read(st, el, arg);
		(*n)++;
	}
	rc = rc == SQLITE_ROW || rc == SQLITE_DONE ? KP_OK : kp_store_fail(s, what);
	sqlite3_reset(st);
	return rc;
}

static void read_elig(sqlite3_stmt *st, void *el, const void *arg)
{
	struct kp_elig_view *v = el;

	snprintf(v->category, sizeof(v->category), "%s", (const char *)sqlite3_column_text(st, 0));
	v->valid_from_ms = sqlite3_column_int64(st, 1);
	v->valid_until_ms = sqlite3_column_int64(st, 2);
	if (sqlite3_column_bytes(st, 3) == KP_TOKEN_LEN) {
		v->has_via = 1;
		memcpy(v->via, sqlite3_column_blob(st, 3), KP_TOKEN_LEN);
	}
}

int kp_store_card_eligibility(kp_store *s, const uint8_t token[KP_TOKEN_LEN],
                              struct kp_elig_view *out, size_t cap, size_t *n)
{
	sqlite3_stmt *st = kp_store_stmt(s, KP_STMT_CARD_ELIG);

	*n = 0;
	if (st == NULL)
		return KP_E_DB;
	kp_store_bind(st, KP_SQL_TOKEN(token));
	return cached_rows(s, st, "eligibility lookup", out, sizeof(*out), cap, n, read_elig, NULL);
}

static int bind_ent(sqlite3_stmt *st, const void *arg)
{
	const struct kp_entitlement *e = arg;

	sqlite3_bind_blob(st, 1, e->token, KP_TOKEN_LEN, SQLITE_STATIC);
	sqlite3_bind_int64(st, 2, e->id);
	sqlite3_bind_text(st, 3, e->product, -1, SQLITE_STATIC);
	sqlite3_bind_int64(st, 4, e->rides_left);
	sqlite3_bind_int64(st, 5, e->valid_from_ms);
	sqlite3_bind_int64(st, 6, e->valid_until_ms);
	sqlite3_bind_int(st, 7, e->first_use != 0);
	return KP_OK;
}

int kp_store_put_entitlement(kp_store *s, const struct kp_entitlement *e)
{
	if (e->id <= 0 || e->rides_left < 0 || e->valid_until_ms <= e->valid_from_ms ||
	    e->product[0] == '\0')
		return KP_E_INVAL;
	return run_bound(s, "INSERT INTO entitlements(token, id, product_id, rides_left,"
	                    " valid_from, valid_until, first_use) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)"
	                    " ON CONFLICT(token, id) DO UPDATE SET product_id = excluded.product_id,"
	                    " rides_left = excluded.rides_left, valid_from = excluded.valid_from,"
	                    " valid_until = excluded.valid_until, first_use = excluded.first_use",
	                 "entitlement", bind_ent, e);
}

struct deny_arg { const uint8_t *token; const char *reason; int64_t added; };

static int bind_deny(sqlite3_stmt *st, const void *arg)
{
	const struct deny_arg *d = arg;

	sqlite3_bind_blob(st, 1, d->token, KP_TOKEN_LEN, SQLITE_STATIC);
	sqlite3_bind_text(st, 2, d->reason, -1, SQLITE_STATIC);
	sqlite3_bind_int64(st, 3, d->added);
	return KP_OK;
}

int kp_store_put_denylist(kp_store *s, const uint8_t token[KP_TOKEN_LEN], const char *reason,
                          int64_t added_ms)
{
	struct deny_arg d = { token, reason != NULL ? reason : "", added_ms };

	return run_bound(s, "INSERT INTO denylist(token, reason, added) VALUES (?1, ?2, ?3)"
	                    " ON CONFLICT(token) DO UPDATE SET reason = excluded.reason",
	                 "denylist", bind_deny, &d);
}

int kp_store_entitlement_id_taken(kp_store *s, int64_t id, const uint8_t token[KP_TOKEN_LEN],
                                  int *taken)
{
	sqlite3_stmt *st = NULL;
	int rc;

	*taken = 0;
	if (sqlite3_prepare_v2(s->db, "SELECT 1 FROM entitlements WHERE id = ?1 AND token <> ?2"
	                       " LIMIT 1", -1, &st, NULL) != SQLITE_OK)
		return kp_store_fail(s, "entitlement id");
	sqlite3_bind_int64(st, 1, id);
	sqlite3_bind_blob(st, 2, token, KP_TOKEN_LEN, SQLITE_STATIC);
	rc = sqlite3_step(st);
	*taken = rc == SQLITE_ROW;
	rc = rc == SQLITE_ROW || rc == SQLITE_DONE ? KP_OK : kp_store_fail(s, "entitlement id");
	sqlite3_finalize(st);
	return rc;
}

int kp_store_get_entitlement(kp_store *s, const uint8_t token[KP_TOKEN_LEN], int64_t id,
                             struct kp_entitlement *e)
{
	sqlite3_stmt *st = kp_store_stmt(s, KP_STMT_ENT_GET);
	int rc;

	if (st == NULL)
		return KP_E_DB;
	sqlite3_bind_blob(st, 1, token, KP_TOKEN_LEN, SQLITE_STATIC);
	sqlite3_bind_int64(st, 2, id);
	rc = sqlite3_step(st);
	if (rc != SQLITE_ROW) {
		rc = rc == SQLITE_DONE ? KP_E_INVAL : kp_store_fail(s, "entitlement get");
		sqlite3_reset(st);
		return rc;
	}
	memset(e, 0, sizeof(*e));
	e->id = id;
	memcpy(e->token, token, KP_TOKEN_LEN);
	snprintf(e->product, sizeof(e->product), "%s", (const char *)sqlite3_column_text(st, 0));
	e->rides_left = sqlite3_column_int64(st, 1);
	e->valid_from_ms = sqlite3_column_int64(st, 2);
	e->valid_until_ms = sqlite3_column_int64(st, 3);
	e->first_use = sqlite3_column_int(st, 4);
	sqlite3_reset(st);
	return KP_OK;
}

int kp_store_count(kp_store *s, const char *table, int64_t *n)
{
	static const char *const allowed[] = { "operators", "products", "entitlements",
	                                       "denylist", "journal", "recent_taps",
	                                       "pending_uses", "eligibility", "fare_feeds",
	                                       "fare_attributes", "fare_rules", "fare_products",
	                                       "fare_leg_rules", "fare_transfer_rules" };
	char sql[64];
	sqlite3_stmt *st = NULL;
	int rc = KP_E_INVAL;

	for (size_t i = 0; i < sizeof(allowed) / sizeof(allowed[0]); i++) {
		if (strcmp(table, allowed[i]) == 0)
			rc = KP_OK;
	}
	if (rc != KP_OK)
		return rc;
	snprintf(sql, sizeof(sql), "SELECT count(*) FROM %s", table);
	if (sqlite3_prepare_v2(s->db, sql, -1, &st, NULL) != SQLITE_OK)
		return kp_store_fail(s, "count");
	rc = sqlite3_step(st) == SQLITE_ROW ? KP_OK : kp_store_fail(s, "count");
	if (rc == KP_OK)
		*n = sqlite3_column_int64(st, 0);
	sqlite3_finalize(st);
	return rc;
}

/* ---- the tap path ---- */

int kp_store_is_denylisted(kp_store *s, const uint8_t token[KP_TOKEN_LEN], int *listed)
{
	sqlite3_stmt *st = kp_store_row(s, KP_STMT_DENY_GET, "denylist lookup", listed,
	                                KP_SQL_TOKEN(token));

	if (st == NULL)
		return KP_E_DB;
	sqlite3_reset(st);
	return KP_OK;
}

int kp_store_last_tap(kp_store *s, const uint8_t token[KP_TOKEN_LEN], int64_t *time_ms,
                      int *found)
{
	sqlite3_stmt *st = kp_store_row(s, KP_STMT_RECENT_GET, "recent tap lookup", found,
	                                KP_SQL_TOKEN(token));

	if (st == NULL)
		return KP_E_DB;
	if (*found)
		*time_ms = sqlite3_column_int64(st, 0);
	sqlite3_reset(st);
	return KP_OK;
}

int kp_store_set_last_tap(kp_store *s, const uint8_t token[KP_TOKEN_LEN], int64_t time_ms,
                          uint64_t seq)
{
	return cached_run(s, KP_STMT_RECENT_SET, "recent tap", NULL, KP_SQL_TOKEN(token),
	                  KP_SQL_INT(time_ms), KP_SQL_INT(seq));
}

int kp_store_card_entitlements(kp_store *s, const uint8_t token[KP_TOKEN_LEN],
                               const char *operator_id, struct kp_ent_view *out, size_t cap,
                               size_t *n)
{
	return kp_store_card_entitlements_at(s, token, operator_id, NULL, out, cap, n);
}

static void read_ent(sqlite3_stmt *st, void *el, const void *token)
{
	struct kp_ent_view *v = el;

	memcpy(v->e.token, token, KP_TOKEN_LEN);
	v->e.id = sqlite3_column_int64(st, 0);
	kp_store_col_text(st, 1, v->e.product, sizeof(v->e.product));
	v->e.rides_left = sqlite3_column_int64(st, 2);
	v->e.valid_from_ms = sqlite3_column_int64(st, 3);
	v->e.valid_until_ms = sqlite3_column_int64(st, 4);
	v->valid_here = sqlite3_column_int(st, 5);
	snprintf(v->category, sizeof(v->category), "%s",
	         (const char *)sqlite3_column_text(st, 6));
	v->stored = sqlite3_column_int(st, 7);
	v->period_days = sqlite3_column_int(st, 8);
	v->first_use = sqlite3_column_int(st, 9);
	v->commuter = sqlite3_column_int(st, 10);
	v->route_ok = sqlite3_column_int(st, 11);
}

int kp_store_card_entitlements_at(kp_store *s, const uint8_t token[KP_TOKEN_LEN],
                                  const char *operator_id, const char *route,
                                  struct kp_ent_view *out, size_t cap, size_t *n)
{
	sqlite3_stmt *st = kp_store_stmt(s, KP_STMT_CARD_ENTS);

	*n = 0;
	if (st == NULL)
		return KP_E_DB;
	/* a NULL route binds NULL */
	kp_store_bind(st, KP_SQL_TOKEN(token), KP_SQL_TEXT(operator_id), KP_SQL_TEXT(route));
	return cached_rows(s, st, "entitlements lookup", out, sizeof(*out), cap, n, read_ent,
	                   token);
}

int kp_store_pending_use(kp_store *s, uint64_t seq, int64_t ent_id, int64_t rides)
{
	return cached_run(s, KP_STMT_PENDING_USE, "pending use", NULL, KP_SQL_INT(seq),
	                  KP_SQL_INT(ent_id), KP_SQL_INT(rides));
}

int kp_store_take_ride(kp_store *s, const uint8_t token[KP_TOKEN_LEN], int64_t id,
                       int64_t expect)
{
	return cached_run(s, KP_STMT_TAKE_RIDE, "take ride", "entitlement", KP_SQL_TOKEN(token),
	                  KP_SQL_INT(id), KP_SQL_INT(expect));
}

int kp_store_run_product_category(kp_store *s, const char *product, const char *category)
{
	struct text2 t = { product, category, 0 };
	int rc = run_bound(s, "UPDATE products SET category = ?2 WHERE id = ?1", "product category",
	                   bind_category, &t);

	if (rc == KP_OK && sqlite3_changes(s->db) == 0) {
		snprintf(s->err, sizeof(s->err), "no product %s", product);
		return KP_E_INVAL;
	}
	return rc;
}

struct discount_arg { const char *op, *cat; const struct kp_discount *d; };

static int bind_discount(sqlite3_stmt *st, const void *arg)
{
	const struct discount_arg *a = arg;

	sqlite3_bind_text(st, 1, a->op, -1, SQLITE_STATIC);
	sqlite3_bind_text(st, 2, a->cat, -1, SQLITE_STATIC);
	sqlite3_bind_int(st, 3, a->d->percent);
	sqlite3_bind_int(st, 4, (int)a->d->rounding);
	sqlite3_bind_int64(st, 5, a->d->unit);
	return KP_OK;
}

int kp_store_put_discount(kp_store *s, const char *operator_id, const char *category,
                          const struct kp_discount *d)
{
	struct discount_arg a = { operator_id, category, d };

	if (!kp_valid_id(operator_id) || !kp_valid_id(category) || d->percent < 0 ||
	    d->percent > 100 || d->rounding < KP_ROUND_DOWN || d->rounding > KP_ROUND_NEAREST ||
	    d->unit < 1 || d->unit > 100000)
		return KP_E_INVAL;
	return run_bound(s, "INSERT INTO discounts(operator_id, category, percent, rounding, unit)"
	                    " VALUES (?1, ?2, ?3, ?4, ?5) ON CONFLICT(operator_id, category)"
	                    " DO UPDATE SET percent = excluded.percent,"
	                    " rounding = excluded.rounding, unit = excluded.unit",
	                 "discount", bind_discount, &a);
}

int kp_store_discount(kp_store *s, const char *operator_id, const char *category,
                      struct kp_discount *d, int *found)
{
	sqlite3_stmt *st = kp_store_row(s, KP_STMT_DISCOUNT, "discount", found,
	                                KP_SQL_TEXT(operator_id), KP_SQL_TEXT(category));

	if (st == NULL)
		return KP_E_DB;
	if (*found) {
		d->percent = sqlite3_column_int(st, 0);
		d->rounding = (enum kp_rounding)sqlite3_column_int(st, 1);
		d->unit = sqlite3_column_int64(st, 2);
	}
	sqlite3_reset(st);
	return KP_OK;
}

int64_t kp_discount_apply(int64_t adult, const struct kp_discount *d)
{
	/* The exact share is adult*percent/100; in units of `unit` that is num/den. */
	int64_t num, den, q;

	if (adult < 0 || adult > 1000000000000LL || d->percent < 0 || d->percent > 100 ||
	    d->unit < 1 || d->unit > 100000)
		return -1;
	num = adult * d->percent;
	den = 100 * d->unit;
	switch (d->rounding) {
	case KP_ROUND_DOWN:
		q = num / den;
		break;
	case KP_ROUND_UP:
		q = (num + den - 1) / den;
		break;
	case KP_ROUND_NEAREST:
		q = (2 * num + den) / (2 * den);        /* a half rounds up */
		break;
	default:
		return -1;
	}
	return q * d->unit < adult ? q * d->unit : adult;
}

int kp_store_charge(kp_store *s, const uint8_t token[KP_TOKEN_LEN], int64_t id, int64_t expect,
                    int64_t amount)
{
	if (amount < 0)
		return KP_E_INVAL;
	return cached_run(s, KP_STMT_CHARGE, "charge", "balance", KP_SQL_TOKEN(token),
	                  KP_SQL_INT(id), KP_SQL_INT(expect), KP_SQL_INT(amount));
}

int kp_store_put_product_stored(kp_store *s, const char *id, const char *name,
                                const char *const *operators, size_t n_operators)
{
	struct text2 t = { id, NULL, 0 };
	int rc = kp_store_put_product_cat(s, id, name, 1, NULL, operators, n_operators);

	if (rc == KP_OK)
		rc = run_bound(s, "UPDATE products SET stored = 1 WHERE id = ?1 AND ?2 IS NULL",
		               "stored product", bind_text2, &t);
	return rc;
}

int kp_store_product_stored(kp_store *s, const char *id, int *stored)
{
	return product_int(s, "SELECT stored FROM products WHERE id = ?1", "product kind", id,
	                   stored);
}

int kp_store_activate(kp_store *s, const uint8_t token[KP_TOKEN_LEN], int64_t id,
                      int64_t from_ms, int64_t until_ms)
{
	return cached_run(s, KP_STMT_ACTIVATE, "activate", "pass", KP_SQL_TOKEN(token),
	                  KP_SQL_INT(id), KP_SQL_INT(from_ms), KP_SQL_INT(until_ms));
}

struct period_arg { const char *id; int days; };

static int bind_period(sqlite3_stmt *st, const void *arg)
{
	const struct period_arg *p = arg;

	sqlite3_bind_text(st, 1, p->id, -1, SQLITE_STATIC);
	sqlite3_bind_int(st, 2, p->days);
	return KP_OK;
}

int kp_store_put_product_period(kp_store *s, const char *id, const char *name, int days,
                                const char *const *operators, size_t n_operators)
{
	struct period_arg p = { id, days };
	int rc;

	if (days < 1 || days > 366)
		return KP_E_INVAL;
	rc = kp_store_put_product_cat(s, id, name, 1, NULL, operators, n_operators);
	if (rc == KP_OK)
		rc = run_bound(s, "UPDATE products SET period_days = ?2 WHERE id = ?1",
		               "period product", bind_period, &p);
	return rc;
}

int kp_store_product_period(kp_store *s, const char *id, int *days)
{
	return product_int(s, "SELECT coalesce(period_days, 0) FROM products WHERE id = ?1",
	                   "product period", id, days);
}
