/* SPDX-License-Identifier: Apache-2.0 */
/* The fare engine's tables (terminal/fare/FARES.md): each operator's fare feed and mode, commuter
 * passes, caps, scheme transfer rules, and each card's fare state. */
#include <stdio.h>
#include <string.h>

#include "kp_store.h"
#include "kp_store_sql.h"

/* Runs one statement to completion; KP_E_DB with SQLite's message on failure. */
static int exec_done(kp_store *s, sqlite3_stmt *st, const char *what)
{
	int rc = sqlite3_step(st);

	rc = rc == SQLITE_DONE ? KP_OK : kp_store_fail(s, what);
	sqlite3_finalize(st);
	return rc;
}

static sqlite3_stmt *prepare(kp_store *s, const char *sql, const char *what)
{
	sqlite3_stmt *st = NULL;

	if (sqlite3_prepare_v2(s->db, sql, -1, &st, NULL) != SQLITE_OK) {
		kp_store_fail(s, what);
		return NULL;
	}
	return st;
}

int kp_store_put_operator_fare(kp_store *s, const char *operator_id, const char *feed_id,
                               int distance)
{
	if (!kp_valid_id(operator_id) || feed_id == NULL || feed_id[0] == '\0' ||
	    strlen(feed_id) > KP_ID_MAX || (distance != 0 && distance != 1))
		return KP_E_INVAL;
	return kp_store_run(s, "operator fare", "INSERT INTO operator_fares(operator_id, feed_id,"
	                    " distance) VALUES (?1, ?2, ?3) ON CONFLICT(operator_id) DO UPDATE SET"
	                    " feed_id = excluded.feed_id, distance = excluded.distance",
	                    KP_SQL_TEXT(operator_id), KP_SQL_TEXT(feed_id), KP_SQL_INT(distance));
}

int kp_store_operator_fare(kp_store *s, const char *operator_id, char *feed, size_t cap,
                           int *distance, int *found)
{
	sqlite3_stmt *st = kp_store_row(s, KP_STMT_OPERATOR_FARE, "operator fare", found,
	                                KP_SQL_TEXT(operator_id));

	if (st == NULL)
		return KP_E_DB;
	if (*found) {
		kp_store_col_text(st, 0, feed, cap);
		*distance = sqlite3_column_int(st, 1);
	}
	sqlite3_reset(st);
	return KP_OK;
}

int kp_store_put_fare_cap(kp_store *s, const char *category, enum kp_cap_period period,
                          int64_t amount)
{
	if (category == NULL || (category[0] != '\0' && !kp_valid_id(category)) ||
	    (period != KP_CAP_DAY && period != KP_CAP_MONTH) || amount < 0 ||
	    amount > 1000000000000LL)
		return KP_E_INVAL;
	return kp_store_run(s, "fare cap", "INSERT INTO fare_caps(category, period, amount)"
	                    " VALUES (?1, ?2, ?3) ON CONFLICT(category, period) DO UPDATE SET"
	                    " amount = excluded.amount", KP_SQL_TEXT(category), KP_SQL_INT(period),
	                    KP_SQL_INT(amount));
}

int kp_store_fare_cap(kp_store *s, const char *category, enum kp_cap_period period,
                      int64_t *amount, int *found)
{
	sqlite3_stmt *st = kp_store_row(s, KP_STMT_FARE_CAP, "fare cap", found,
	                                KP_SQL_TEXT(category != NULL ? category : ""),
	                                KP_SQL_INT(period));

	if (st == NULL)
		return KP_E_DB;
	if (*found)
		*amount = sqlite3_column_int64(st, 0);
	sqlite3_reset(st);
	return KP_OK;
}

static int op_or_any(const char *s)
{
	return strcmp(s, "*") == 0 || kp_valid_id(s);
}

int kp_store_put_transfer_rule(kp_store *s, const struct kp_transfer_rule *r)
{
	if (!op_or_any(r->from_operator) || !op_or_any(r->to_operator) || r->within_s < 60 ||
	    r->within_s > 86400 || r->max_transfers < 1 || r->max_transfers > 100 || r->off < -1 ||
	    r->off > 1000000000000LL)
		return KP_E_INVAL;
	return kp_store_run(s, "transfer rule", "INSERT INTO transfer_rules(from_operator,"
	                    " to_operator, within_s, max_transfers, off) VALUES (?1, ?2, ?3, ?4, ?5)"
	                    " ON CONFLICT(from_operator, to_operator) DO UPDATE SET"
	                    " within_s = excluded.within_s, max_transfers = excluded.max_transfers,"
	                    " off = excluded.off", KP_SQL_TEXT(r->from_operator),
	                    KP_SQL_TEXT(r->to_operator), KP_SQL_INT(r->within_s),
	                    KP_SQL_INT(r->max_transfers), KP_SQL_INT(r->off));
}

int kp_store_transfer_rule(kp_store *s, const char *from_operator, const char *to_operator,
                           struct kp_transfer_rule *r, int *found)
{
	sqlite3_stmt *st = kp_store_row(s, KP_STMT_TRANSFER_RULE, "transfer rule", found,
	                                KP_SQL_TEXT(from_operator), KP_SQL_TEXT(to_operator));

	if (st == NULL)
		return KP_E_DB;
	if (*found) {
		kp_store_col_text(st, 0, r->from_operator, sizeof(r->from_operator));
		kp_store_col_text(st, 1, r->to_operator, sizeof(r->to_operator));
		r->within_s = sqlite3_column_int(st, 2);
		r->max_transfers = sqlite3_column_int(st, 3);
		r->off = sqlite3_column_int64(st, 4);
	}
	sqlite3_reset(st);
	return KP_OK;
}

int kp_store_put_product_commuter(kp_store *s, const char *id, const char *name,
                                  const char *route, const char *const *stops, size_t n_stops,
                                  const char *const *operators, size_t n_operators)
{
	int rc;

	if (route == NULL || (strcmp(route, "*") != 0 && (route[0] == '\0' ||
	    strlen(route) > KP_ID_MAX)) || n_stops < 2 || n_stops > KP_COMMUTER_MAX_STOPS)
		return KP_E_INVAL;
	for (size_t i = 0; i < n_stops; i++) {
		if (stops[i] == NULL || stops[i][0] == '\0' || strlen(stops[i]) > KP_ID_MAX)
			return KP_E_INVAL;
		for (size_t j = 0; j < i; j++) {
			if (strcmp(stops[i], stops[j]) == 0) {
				snprintf(s->err, sizeof(s->err), "commuter pass %s lists stop %s twice",
				         id, stops[i]);
				return KP_E_INVAL;
			}
		}
	}
	rc = kp_store_put_product_cat(s, id, name, 1, NULL, operators, n_operators);
	if (rc != KP_OK)
		return rc;
	rc = kp_store_run(s, "commuter pass", "UPDATE products SET commuter_route = ?2"
	                  " WHERE id = ?1", KP_SQL_TEXT(id), KP_SQL_TEXT(route));
	if (rc == KP_OK)
		rc = kp_store_run(s, "commuter stops", "DELETE FROM product_stops WHERE product_id = ?1",
		                  KP_SQL_TEXT(id));
	for (size_t i = 0; rc == KP_OK && i < n_stops; i++)
		rc = kp_store_run(s, "commuter stop", "INSERT INTO product_stops(product_id, pos,"
		                  " stop_id) VALUES (?1, ?2, ?3)", KP_SQL_TEXT(id), KP_SQL_INT(i),
		                  KP_SQL_TEXT(stops[i]));
	return rc;
}

int kp_store_product_commuter(kp_store *s, const char *id, char route[KP_ID_MAX + 1],
                              char stops[][KP_ID_MAX + 1], size_t cap, size_t *n)
{
	sqlite3_stmt *st = kp_store_stmt(s, KP_STMT_PRODUCT_STOPS);
	int rc;

	*n = 0;
	route[0] = '\0';
	if (st == NULL)
		return KP_E_DB;
	sqlite3_bind_text(st, 1, id, -1, SQLITE_STATIC);
	while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
		if (sqlite3_column_type(st, 0) == SQLITE_NULL || sqlite3_column_type(st, 1) == SQLITE_NULL)
			continue;
		kp_store_col_text(st, 0, route, KP_ID_MAX + 1);
		if (*n < cap)
			kp_store_col_text(st, 1, stops[(*n)++], KP_ID_MAX + 1);
	}
	sqlite3_reset(st);
	return rc == SQLITE_DONE ? KP_OK : kp_store_fail(s, "commuter stops");
}

int kp_store_fare_state(kp_store *s, const uint8_t token[KP_TOKEN_LEN], struct kp_fare_state *f,
                        int *found)
{
	sqlite3_stmt *st = kp_store_stmt(s, KP_STMT_FARE_STATE_GET);
	int rc;

	memset(f, 0, sizeof(*f));
	*found = 0;
	if (st == NULL)
		return KP_E_DB;
	sqlite3_bind_blob(st, 1, token, KP_TOKEN_LEN, SQLITE_STATIC);
	rc = sqlite3_step(st);
	if (rc == SQLITE_ROW) {
		f->open = sqlite3_column_type(st, 0) != SQLITE_NULL;
		f->open_ms = sqlite3_column_int64(st, 0);
		f->open_seq = (uint64_t)sqlite3_column_int64(st, 1);
		kp_store_col_text(st, 2, f->open_operator, sizeof(f->open_operator));
		kp_store_col_text(st, 3, f->open_route, sizeof(f->open_route));
		kp_store_col_text(st, 4, f->open_stop, sizeof(f->open_stop));
		f->open_ent = sqlite3_column_int64(st, 5);
		kp_store_col_text(st, 6, f->open_product, sizeof(f->open_product));
		f->open_paid = sqlite3_column_int(st, 7);
		f->has_leg = sqlite3_column_type(st, 8) != SQLITE_NULL;
		f->leg_on_ms = sqlite3_column_int64(st, 8);
		f->leg_off_ms = sqlite3_column_int64(st, 9);
		kp_store_col_text(st, 10, f->leg_operator, sizeof(f->leg_operator));
		kp_store_col_text(st, 11, f->leg_feed, sizeof(f->leg_feed));
		kp_store_col_text(st, 12, f->leg_group, sizeof(f->leg_group));
		f->leg_paid = sqlite3_column_int64(st, 13);
		f->chain_start_ms = sqlite3_column_int64(st, 14);
		kp_store_col_text(st, 15, f->chain_fare, sizeof(f->chain_fare));
		f->chain_transfers = sqlite3_column_int(st, 16);
		f->day_id = sqlite3_column_int64(st, 17);
		f->day_spent = sqlite3_column_int64(st, 18);
		f->month_id = sqlite3_column_int64(st, 19);
		f->month_spent = sqlite3_column_int64(st, 20);
		kp_store_col_text(st, 21, f->last_operator, sizeof(f->last_operator));
		kp_store_col_text(st, 22, f->last_stop, sizeof(f->last_stop));
		f->has_run = sqlite3_column_type(st, 25) != SQLITE_NULL;
		kp_store_col_text(st, 23, f->run.from_group, sizeof(f->run.from_group));
		kp_store_col_text(st, 24, f->run.to_group, sizeof(f->run.to_group));
		f->run.on_ms = sqlite3_column_int64(st, 25);
		f->run.off_ms = sqlite3_column_int64(st, 26);
		*found = 1;
		rc = SQLITE_DONE;
	}
	sqlite3_reset(st);
	return rc == SQLITE_DONE ? KP_OK : kp_store_fail(s, "fare state");
}

int kp_store_put_fare_state(kp_store *s, const uint8_t token[KP_TOKEN_LEN],
                            const struct kp_fare_state *f)
{
	/* the open journey, the last leg and its run are NULL where the card has none */
	const int o = f->open != 0, l = f->has_leg != 0, r = f->has_leg && f->has_run;
	const struct kp_sql_val v[] = {
		KP_SQL_TOKEN(token), KP_SQL_INT_IF(o, f->open_ms), KP_SQL_INT_IF(o, f->open_seq),
		KP_SQL_TEXT(o ? f->open_operator : NULL), KP_SQL_OPT(o ? f->open_route : NULL),
		KP_SQL_OPT(o ? f->open_stop : NULL), KP_SQL_INT_IF(o, f->open_ent),
		KP_SQL_OPT(o ? f->open_product : NULL), KP_SQL_INT_IF(o, f->open_paid),
		KP_SQL_INT_IF(l, f->leg_on_ms), KP_SQL_INT_IF(l, f->leg_off_ms),
		KP_SQL_TEXT(l ? f->leg_operator : NULL), KP_SQL_OPT(l ? f->leg_feed : NULL),
		KP_SQL_OPT(l ? f->leg_group : NULL), KP_SQL_INT_IF(l, f->leg_paid),
		KP_SQL_INT_IF(l, f->chain_start_ms), KP_SQL_OPT(l ? f->chain_fare : NULL),
		KP_SQL_INT(f->chain_transfers), KP_SQL_INT(f->day_id), KP_SQL_INT(f->day_spent),
		KP_SQL_INT(f->month_id), KP_SQL_INT(f->month_spent), KP_SQL_OPT(f->last_operator),
		KP_SQL_OPT(f->last_stop), KP_SQL_OPT(r ? f->run.from_group : NULL),
		KP_SQL_OPT(r ? f->run.to_group : NULL), KP_SQL_INT_IF(r, f->run.on_ms),
		KP_SQL_INT_IF(r, f->run.off_ms),
	};
	sqlite3_stmt *st = kp_store_stmt(s, KP_STMT_FARE_STATE_PUT);
	int rc;

	if (st == NULL)
		return KP_E_DB;
	kp_store_bind_vals(st, v, sizeof(v) / sizeof(v[0]));
	rc = sqlite3_step(st);
	sqlite3_reset(st);
	return rc == SQLITE_DONE ? KP_OK : kp_store_fail(s, "fare state");
}

/* Steps st, whose first column is a card token, into tokens, and finalizes it. */
static int token_list(kp_store *s, sqlite3_stmt *st, const char *what,
                      uint8_t (*tokens)[KP_TOKEN_LEN], size_t cap, size_t *n)
{
	int rc;

	while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
		if (sqlite3_column_bytes(st, 0) == KP_TOKEN_LEN && *n < cap)
			memcpy(tokens[(*n)++], sqlite3_column_blob(st, 0), KP_TOKEN_LEN);
	}
	rc = rc == SQLITE_DONE ? KP_OK : kp_store_fail(s, what);
	sqlite3_finalize(st);
	return rc;
}

int kp_store_open_journeys(kp_store *s, int64_t before_ms, uint8_t (*tokens)[KP_TOKEN_LEN],
                           size_t cap, size_t *n)
{
	sqlite3_stmt *st = NULL;
	int rc = kp_store_prep(s, &st, "SELECT token FROM fare_state WHERE open_ms IS NOT NULL"
	                       " AND open_ms < ?1 ORDER BY open_ms LIMIT ?2", "open journeys",
	                       KP_SQL_INT(before_ms), KP_SQL_INT(cap));

	*n = 0;
	return rc == KP_OK ? token_list(s, st, "open journeys", tokens, cap, n) : rc;
}

int kp_store_snapshot(const char *src_path, const char *dst_path, char *err, size_t err_cap)
{
	sqlite3 *db = NULL;
	sqlite3_stmt *st = NULL;
	int rc;

	/* Read-only: the source is never migrated or written, even by a WAL checkpoint. */
	rc = sqlite3_open_v2(src_path, &db, SQLITE_OPEN_READONLY, NULL);
	if (rc == SQLITE_OK)
		rc = sqlite3_prepare_v2(db, "VACUUM INTO ?1", -1, &st, NULL);
	if (rc == SQLITE_OK) {
		sqlite3_bind_text(st, 1, dst_path, -1, SQLITE_STATIC);
		rc = sqlite3_step(st);
		rc = rc == SQLITE_DONE ? SQLITE_OK : rc;
	}
	if (rc != SQLITE_OK)
		snprintf(err, err_cap, "%s: %s", src_path, db != NULL ? sqlite3_errmsg(db) :
		         sqlite3_errstr(rc));
	sqlite3_finalize(st);
	sqlite3_close(db);
	return rc == SQLITE_OK ? KP_OK : KP_E_DB;
}

int kp_store_scratch(kp_store *s)
{
	if (sqlite3_exec(s->db, "PRAGMA synchronous = OFF", NULL, NULL, NULL) != SQLITE_OK)
		return kp_store_fail(s, "scratch");
	return KP_OK;
}

int kp_store_clear_fare_remote(kp_store *s)
{
	return kp_store_run_vals(s, "remote fare state", "DELETE FROM fare_remote", NULL, 0);
}

int kp_store_put_fare_remote(kp_store *s, const struct kp_fare_remote *r)
{
	sqlite3_stmt *st;
	char sql[1024];

	if (r->last_ms < 0 || r->day_spent < 0 || r->month_spent < 0 || r->leg_paid < 0 ||
	    (r->open && (!kp_valid_id(r->open_operator) || r->open_ms <= 0)) ||
	    (r->has_leg && !kp_valid_id(r->leg_operator)))
		return KP_E_INVAL;
	if (kp_bundle_row_sql(KP_BA_REMOTE, 1, sql, sizeof(sql)) != KP_SYNC_OK)
		return KP_E_INVAL;
	st = prepare(s, sql, "remote fare state");
	if (st == NULL)
		return KP_E_DB;
	/* the parts the row does not have are NULL, as the bundle leaves them out */
	kp_store_bind_row(st, KP_BA_REMOTE, r);
	return exec_done(s, st, "remote fare state");
}

int kp_store_fare_remote(kp_store *s, const uint8_t token[KP_TOKEN_LEN],
                         struct kp_fare_remote *r, int *found)
{
	char sql[1024];
	sqlite3_stmt *st = NULL;
	int rc = kp_bundle_row_sql(KP_BA_REMOTE, 0, sql, sizeof(sql)) == KP_SYNC_OK ? KP_OK : KP_E_INVAL;

	memset(r, 0, sizeof(*r));
	*found = 0;
	/* "SELECT columns FROM fare_remote ORDER BY token" -> one card's row */
	if (rc == KP_OK && strlen(sql) + 20 < sizeof(sql))
		snprintf(strstr(sql, " ORDER BY"), 20, " WHERE token = ?1");
	st = rc == KP_OK ? kp_store_stmt_sql(s, KP_STMT_FARE_REMOTE, sql) : NULL;
	if (st == NULL)
		return KP_E_DB;
	sqlite3_bind_blob(st, 1, token, KP_TOKEN_LEN, SQLITE_STATIC);
	rc = sqlite3_step(st);
	if (rc == SQLITE_ROW) {
		rc = kp_store_read_row(st, KP_BA_REMOTE, r) == KP_OK ? SQLITE_DONE : SQLITE_NOMEM;
		*found = rc == SQLITE_DONE;
	}
	sqlite3_reset(st);
	return rc == SQLITE_DONE ? KP_OK : kp_store_fail(s, "remote fare state");
}

int kp_store_superseded_journeys(kp_store *s, uint8_t (*tokens)[KP_TOKEN_LEN], size_t cap,
                                 size_t *n)
{
	sqlite3_stmt *st = NULL;
	int rc = kp_store_prep(s, &st, "SELECT f.token FROM fare_state f JOIN fare_remote r"
	                       " ON r.token = f.token WHERE f.open_ms IS NOT NULL"
	                       " AND r.last_ms > f.open_ms ORDER BY f.open_ms LIMIT ?1",
	                       "superseded journeys", KP_SQL_INT(cap));

	*n = 0;
	return rc == KP_OK ? token_list(s, st, "superseded journeys", tokens, cap, n) : rc;
}

int kp_store_put_product_scope(kp_store *s, const char *product, const char *kind,
                               const char *scope_id)
{
	if (!kp_valid_id(product) || kind == NULL ||
	    (strcmp(kind, "route") != 0 && strcmp(kind, "network") != 0) || scope_id == NULL ||
	    scope_id[0] == '\0' || strlen(scope_id) > KP_ID_MAX)
		return KP_E_INVAL;
	return kp_store_run(s, "product scope", "INSERT OR IGNORE INTO product_scope(product_id,"
	                    " kind, scope_id) VALUES (?1, ?2, ?3)", KP_SQL_TEXT(product),
	                    KP_SQL_TEXT(kind), KP_SQL_TEXT(scope_id));
}
