/* SPDX-License-Identifier: Apache-2.0 */
/* The backend store: the terminal registry, operators, products, cards and sales, the fare
 * engine's configuration, fare feeds, the denylist. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "bstore_int.h"

/* ---- the terminal registry ---- */


/* A terminal's row in the registry: status "" (none), "active" or "retired". */
struct registry_row {
	char status[16];
	char retired_at[32];             /* ISO 8601, "-" if not retired */
};

/* Checks id, opens a write transaction and reads id's row in the registry (rolled back on
 * failure). */
static int registry_begin(kp_bstore *s, const char *id, struct registry_row *r)
{
	kp_db_stmt *st = NULL;
	int rc;

	memset(r, 0, sizeof(*r));
	if (id == NULL || strlen(id) > KP_ID_MAX || !bs_plain_id(id)) {
		snprintf(s->err, sizeof(s->err), "terminal id: 1 to %d characters of A-Z a-z 0-9 - _ . "
		         "(its certificate's CN)", KP_ID_MAX);
		return KP_BE_E_INVAL;
	}
	rc = bs_begin(s, KP_DB_TXN_WRITE);
	if (rc == KP_BE_OK)
		rc = bs_query(s, &st, "SELECT status, retired FROM terminal_registry"
		              " WHERE id = ?1", BS_TEXT(id));
	if (rc != KP_BE_OK) {
		bs_rollback(s);
		return rc;
	}
	switch (kp_db_step(st)) {
	case KP_DB_ROW:
		bs_copy_text(r->status, sizeof(r->status), kp_db_column_text(st, 0));
		if (kp_db_column_is_null(st, 1))
			bs_copy_text(r->retired_at, sizeof(r->retired_at), "-");
		else
			bs_iso_time(r->retired_at, sizeof(r->retired_at), kp_db_column_int64(st, 1));
		break;
	case KP_DB_DONE:
		break;
	default:
		rc = bs_fail(s, "terminal registry");
		bs_rollback(s);
	}
	kp_db_finalize(st);
	return rc;
}

/* Ends registry_begin's transaction: committed if rc is KP_BE_OK, else rolled back. */
static int registry_end(kp_bstore *s, int rc)
{
	return bs_end(s, rc, 0);
}

int kp_bstore_terminal_add(kp_bstore *s, const char *id, const char *operator_id, int64_t now_ms,
                           int *was_registered)
{
	struct registry_row r;
	int64_t known = 0;
	int rc;

	if (was_registered != NULL)
		*was_registered = 0;
	if (operator_id != NULL && (strlen(operator_id) > KP_ID_MAX || !bs_plain_id(operator_id))) {
		snprintf(s->err, sizeof(s->err), "operator id: 1 to %d characters of A-Z a-z 0-9 - _ .",
		         KP_ID_MAX);
		return KP_BE_E_INVAL;
	}
	rc = registry_begin(s, id, &r);
	if (rc != KP_BE_OK)
		return rc;
	if (operator_id != NULL) {
		rc = bs_query_int(s, 0, &known, "SELECT 1 FROM operators WHERE id = ?1",
		                  BS_TEXT(operator_id));
		if (rc == KP_BE_OK && !known) {
			snprintf(s->err, sizeof(s->err), "no operator %s at this backend (kippuctl backend "
			         "operator DB %s NAME first)", operator_id, operator_id);
			rc = KP_BE_E_NOTFOUND;
		}
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
	rc = bs_run(s, "terminal registry", "INSERT INTO terminal_registry(id, operator, registered)"
	            " VALUES (?1, ?2, ?3) ON CONFLICT(id) DO UPDATE SET"
	            " operator = coalesce(excluded.operator, terminal_registry.operator)",
	            BS_TEXT(id), BS_TEXT(operator_id), BS_INT(now_ms));
out:
	return registry_end(s, rc);
}

int kp_bstore_terminal_retire(kp_bstore *s, const char *id, int64_t now_ms, int *was_retired)
{
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
	rc = bs_run(s, "terminal retire", "UPDATE terminal_registry SET status = 'retired',"
	            " retired = ?2 WHERE id = ?1", BS_TEXT(id), BS_INT(now_ms));
out:
	return registry_end(s, rc);
}

/* Runs one statement (?1 text or token, ?2 text, ?3 and ?4 integers; parameters a
 * statement lacks are ignored), then bumps the state version; one transaction. */
int bs_change(kp_bstore *s, const char *sql, const char *what, const char *t1,
              const char *t2, const uint8_t *blob, int64_t i3, int64_t i4)
{
	struct kp_sql_val v[4] = { BS_TEXT(t1), BS_TEXT(t2), BS_INT(i3), BS_INT(i4) };
	int rc = bs_begin(s, KP_DB_TXN_WRITE);

	if (rc != KP_BE_OK)
		return rc;
	if (blob != NULL)
		v[0] = (struct kp_sql_val)BS_TOKEN(blob);
	rc = bs_run_vals(s, what, sql, v, 4);
	if (rc == KP_BE_OK && kp_db_changes(s->db) == 0) {
		snprintf(s->err, sizeof(s->err), "%s: nothing matched", what);
		rc = KP_BE_E_NOTFOUND;
	}
	return bs_commit_change(s, rc);
}

int kp_bstore_put_operator(kp_bstore *s, const char *id, const char *name)
{
	return bs_change(s, "INSERT INTO operators(id, name) VALUES (?1, ?2) ON CONFLICT(id)"
	                 " DO UPDATE SET name = excluded.name",
	              "operator", id, name, NULL, 0, 0);
}

int kp_bstore_put_product(kp_bstore *s, const char *id, const char *name, int64_t rides,
                          const char *const *operators, size_t n_operators)
{
	return kp_bstore_put_product_cat(s, id, name, rides, operators, n_operators, NULL);
}

/* A product's entitlements count in its kind's unit: the kind of a sold product stays. */
static int kind_kept(kp_bstore *s, const char *id, const char *kind, int64_t *sold)
{
	int rc = bs_query_int(s, 0, sold, "SELECT 1 FROM products WHERE id = ?1"
	                      " AND product_kind <> ?2"
	                      " AND EXISTS (SELECT 1 FROM entitlements WHERE product_id = ?1)",
	                      BS_TEXT(id), BS_TEXT(kind));

	if (rc == KP_BE_OK && *sold) {
		snprintf(s->err, sizeof(s->err), "product %s has entitlements: its kind cannot change",
		         id);
		rc = KP_BE_E_INVAL;
	}
	return rc;
}

/* The product's operators, all replaced; what: the message of a refused one. */
static int product_operators(kp_bstore *s, const char *id, const char *const *operators,
                             size_t n, const char *what)
{
	int rc = bs_run(s, "product operators", "DELETE FROM product_operators"
	                " WHERE product_id = ?1", BS_TEXT(id));

	for (size_t i = 0; rc == KP_BE_OK && i < n; i++)
		rc = bs_run(s, what, "INSERT INTO product_operators(product_id, operator_id)"
		            " VALUES (?1, ?2)", BS_TEXT(id), BS_TEXT(operators[i]));
	return rc;
}

int kp_bstore_put_product_cat(kp_bstore *s, const char *id, const char *name, int64_t rides,
                              const char *const *operators, size_t n_operators,
                              const char *category)
{
	int64_t sold = 0;
	int rc;

	if (category != NULL && category[0] == '\0')
		category = NULL;
	if (rides <= 0 || n_operators == 0 ||
	    (category != NULL && !kp_cbor_id_valid(category, false)))
		return bs_refuse(s, KP_BE_E_INVAL, "product: rides above 0, an operator, and a "
		                 "category of 1 to %d bytes of UTF-8 if any", KP_ID_MAX);
	rc = bs_begin(s, KP_DB_TXN_WRITE);
	if (rc != KP_BE_OK)
		return rc;
	/* An N-ride product; one sold as another kind keeps its kind (its units differ). */
	rc = kind_kept(s, id, "nride", &sold);
	if (rc == KP_BE_OK)
		rc = bs_run(s, "product", "INSERT INTO products(id, name, rides, category)"
		            " VALUES (?1, ?2, ?3, ?4) ON CONFLICT(id) DO UPDATE SET"
		            " name = excluded.name, rides = excluded.rides, category = excluded.category,"
		            " product_kind = 'nride', days = NULL, route = NULL",
		            BS_TEXT(id), BS_TEXT(name), BS_INT(rides), BS_TEXT(category));
	if (rc == KP_BE_OK)
		rc = product_operators(s, id, operators, n_operators, "product operator");
	return bs_commit_change(s, rc);
}

int kp_bstore_register_card(kp_bstore *s, const uint8_t token[KP_TOKEN_LEN], const char *label,
                            int64_t now_ms)
{
	return bs_change(s, "INSERT INTO cards(token, label, registered) VALUES (?1, ?2, ?3)"
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
	kp_db_stmt *st = NULL;
	char kind[16] = "";
	int64_t rides = 0;
	int rc;

	s->err[0] = '\0';
	if (valid_until_ms <= valid_from_ms || valid_from_ms < 0 || balance < 0 ||
	    balance > 1000000000000LL || (first_use != 0 && first_use != 1)) {
		snprintf(s->err, sizeof(s->err), "sell: UNTIL after FROM, a balance of 0 to 10^12");
		return KP_BE_E_INVAL;
	}
	rc = bs_begin(s, KP_DB_TXN_WRITE);
	if (rc != KP_BE_OK)
		return rc;
	rc = bs_query(s, &st, "SELECT product_kind, rides FROM products WHERE id = ?1",
	              BS_TEXT(product));
	if (rc == KP_BE_OK) {
		if (kp_db_step(st) == KP_DB_ROW) {
			snprintf(kind, sizeof(kind), "%s", kp_db_column_text(st, 0));
			rides = kp_db_column_int64(st, 1);
		}
		kp_db_finalize(st);
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
		rc = bs_query(s, &st, "INSERT INTO entitlements(token, product_id, bought,"
		              " valid_from, valid_until, sold, first_use)"
		              " VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7) RETURNING id",
		              BS_TOKEN(token), BS_TEXT(product), BS_INT(rides), BS_INT(valid_from_ms),
		              BS_INT(valid_until_ms), BS_INT(now_ms), BS_INT(first_use));
	if (rc == KP_BE_OK) {
		if (kp_db_step(st) == KP_DB_ROW)
			*ent_id = kp_db_column_int64(st, 0);
		else
			rc = bs_fail(s, "sell (is the card registered?)");
		kp_db_finalize(st);
	}
	return bs_commit_change(s, rc);
}

int bs_meta_put(kp_bstore *s, const char *key, int64_t v)
{
	return bs_run(s, key, "INSERT INTO meta(key, value) VALUES (?1, ?2)"
	              " ON CONFLICT(key) DO UPDATE SET value = excluded.value", BS_TEXT(key),
	              BS_INT(v));
}

int bs_meta_puts(kp_bstore *s, const char *const *keys, const int64_t *v, size_t n)
{
	int rc = KP_BE_OK;

	for (size_t i = 0; rc == KP_BE_OK && i < n; i++)
		rc = bs_meta_put(s, keys[i], v[i]);
	return rc;
}

int kp_bstore_set_service_day(kp_bstore *s, int end_s, int utc_offset_s)
{
	static const char *const keys[] = { "service_day_end_s", "utc_offset_s" };
	const int64_t v[] = { end_s, utc_offset_s };
	int rc;

	if (end_s < 0 || end_s >= 86400 || utc_offset_s < -14 * 3600 || utc_offset_s > 14 * 3600) {
		snprintf(s->err, sizeof(s->err), "service day end 00:00-23:59, offset -14:00..+14:00");
		return KP_BE_E_INVAL;
	}
	rc = bs_begin(s, KP_DB_TXN_WRITE);
	if (rc == KP_BE_OK)
		rc = bs_meta_puts(s, keys, v, 2);
	return bs_end(s, rc, 0);
}

/* ---- the fare engine's configuration (bundle format 2) ---- */

const char *const bs_kind_sql[4] = { "nride", "stored", "period", "commuter" };

static int put_one_product(kp_bstore *s, const struct kp_bundle_product *p)
{
	const char *ops[KP_BUNDLE_PRODUCT_OPS_MAX];
	int64_t sold = 0;
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
	for (size_t i = 0; i < p->n_operators; i++)
		ops[i] = p->operators[i];
	rc = kind_kept(s, p->id, bs_kind_sql[p->kind], &sold);
	if (rc == KP_BE_OK)
		rc = bs_run(s, "product", "INSERT INTO products(id, name, rides, category,"
		            " product_kind, days, route) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)"
		            " ON CONFLICT(id) DO UPDATE SET name = excluded.name,"
		            " rides = excluded.rides, category = excluded.category,"
		            " product_kind = excluded.product_kind, days = excluded.days,"
		            " route = excluded.route", BS_TEXT(p->id), BS_TEXT(p->name),
		            BS_INT(p->kind == KP_PRODUCT_NRIDE ? p->rides : 1), BS_OPT(p->category),
		            BS_TEXT(bs_kind_sql[p->kind]),
		            BS_INT_IF(p->kind == KP_PRODUCT_PERIOD, p->days),
		            BS_TEXT(p->kind == KP_PRODUCT_COMMUTER ? p->route : NULL));
	if (rc == KP_BE_OK)
		rc = bs_run(s, "product stops", "DELETE FROM product_stops WHERE product_id = ?1",
		            BS_TEXT(p->id));
	if (rc == KP_BE_OK)
		rc = product_operators(s, p->id, ops, p->n_operators,
		                       "product operator (is the operator known?)");
	for (size_t i = 0; rc == KP_BE_OK && p->kind == KP_PRODUCT_COMMUTER && i < p->n_stops; i++)
		rc = bs_run(s, "commuter stop (a stop twice?)", "INSERT INTO product_stops(product_id,"
		            " pos, stop_id) VALUES (?1, ?2, ?3)", BS_TEXT(p->id), BS_INT(i),
		            BS_TEXT(p->stops[i]));
	return rc;
}

/* One upsert with up to five bound values: texts where t[i] is set, else integers. */
static int upsert(kp_bstore *s, const char *sql, const char *what, const char *const t[5],
                  const int64_t v[5])
{
	struct kp_sql_val b[5];

	for (int i = 0; i < 5; i++)
		b[i] = t[i] != NULL ? (struct kp_sql_val)BS_TEXT(t[i]) : (struct kp_sql_val)BS_INT(v[i]);
	return bs_run_vals(s, what, sql, b, 5);
}

/* Once the fare engine is configured, every bundle is format 2, so that terminals also
 * learn when the last discount, cap or feed is withdrawn. */
static int mark_format2(kp_bstore *s)
{
	return bs_exec(s, "INSERT INTO meta(key, value) VALUES ('format2', 1)"
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
	rc = bs_begin(s, KP_DB_TXN_WRITE);
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
	return bs_commit_change(s, rc);
}

int kp_bstore_put_feed(kp_bstore *s, const char *feed_id, const char *source,
                       const uint8_t *package, size_t len, int64_t now_ms)
{
	kp_db_stmt *st = NULL;
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
	rc = bs_begin(s, KP_DB_TXN_WRITE);
	if (rc == KP_BE_OK)
		rc = bs_prep(s, &st, "INSERT INTO fare_packages(feed_id, digest, package, rows, source,"
		                  " imported) VALUES (?1, ?2, ?3, ?4, ?5, ?6) ON CONFLICT(feed_id) DO"
		                  " UPDATE SET digest = excluded.digest, package = excluded.package,"
		                  " rows = excluded.rows, source = excluded.source,"
		                  " imported = excluded.imported");
	if (rc == KP_BE_OK) {
		kp_db_bind_text(st, 1, feed_id, SIZE_MAX);
		kp_db_bind_blob(st, 2, digest, KP_SHA256_LEN);
		kp_db_bind_blob(st, 3, package, len);
		kp_db_bind_int64(st, 4, (int64_t)rows);
		kp_db_bind_text(st, 5, source, SIZE_MAX);
		kp_db_bind_int64(st, 6, now_ms);
		rc = bs_step_done(s, st, "fare feed");
	}
	if (rc == KP_BE_OK)
		rc = mark_format2(s);
	return bs_commit_change(s, rc);
}

int kp_bstore_delete_feed(kp_bstore *s, const char *feed_id)
{
	return bs_change(s, "DELETE FROM fare_packages WHERE feed_id = ?1", "fare feed", feed_id,
	              NULL, NULL, 0, 0);
}

int kp_bstore_denylist(kp_bstore *s, const uint8_t token[KP_TOKEN_LEN], const char *reason,
                       int64_t now_ms)
{
	return bs_change(s, "INSERT INTO denylist(token, reason, added) VALUES (?1, ?2, ?3)"
	                 " ON CONFLICT(token) DO UPDATE SET reason = excluded.reason",
	              "denylist", NULL, reason, token, now_ms, 0);
}

int kp_bstore_undeny(kp_bstore *s, const uint8_t token[KP_TOKEN_LEN])
{
	return bs_change(s, "DELETE FROM denylist WHERE token = ?1", "undeny", NULL, NULL,
	              token, 0, 0);
}
