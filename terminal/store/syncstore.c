/* SPDX-License-Identifier: Apache-2.0 */
/* The terminal's side of sync, as a store module: which records to send, what the backend
 * acknowledged, and applying a verified config bundle in one transaction. The sync runs
 * on its own database connection, so it never holds the tap path's statements. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "kp_bundle.h"
#include "kp_proto.h"
#include "kp_store.h"
#include "kp_store_sql.h"

static int sync_value(kp_store *s, const char *key, uint64_t *v)
{
	sqlite3_stmt *st = NULL;
	int rc = KP_OK;

	if (sqlite3_prepare_v2(s->db, "SELECT value FROM sync_state WHERE key = ?1", -1, &st,
	                       NULL) != SQLITE_OK)
		return kp_store_fail(s, "sync state");
	sqlite3_bind_text(st, 1, key, -1, SQLITE_STATIC);
	*v = sqlite3_step(st) == SQLITE_ROW ? (uint64_t)sqlite3_column_int64(st, 0) : 0;
	sqlite3_finalize(st);
	return rc;
}

/* One statement with up to two integer parameters (bindings a statement lacks are
 * ignored by SQLite). */
static int run(kp_store *s, const char *sql, int64_t a, int64_t b, const char *what)
{
	sqlite3_stmt *st = NULL;
	int rc = KP_OK;

	if (sqlite3_prepare_v2(s->db, sql, -1, &st, NULL) != SQLITE_OK)
		return kp_store_fail(s, what);
	sqlite3_bind_int64(st, 1, a);
	sqlite3_bind_int64(st, 2, b);
	if (sqlite3_step(st) != SQLITE_DONE)
		rc = kp_store_fail(s, what);
	sqlite3_finalize(st);
	return rc;
}

int kp_store_sync_state(kp_store *s, uint64_t *acked, uint64_t *config_version, uint64_t *head)
{
	uint8_t hash[KP_SHA256_LEN];
	int rc = sync_value(s, "acked_seq", acked);

	if (rc == KP_OK)
		rc = sync_value(s, "config_version", config_version);
	if (rc == KP_OK && head != NULL)
		rc = kp_store_journal_head(s, head, hash);
	return rc;
}

static int src_records_after(void *ctx, uint64_t after, size_t max, struct kp_bytes *items,
                             size_t *n)
{
	kp_store *s = ctx;
	sqlite3_stmt *st = NULL;
	int rc = KP_OK;

	*n = 0;
	if (sqlite3_prepare_v2(s->db, "SELECT cose FROM journal WHERE seq > ?1 ORDER BY seq"
	                       " LIMIT ?2", -1, &st, NULL) != SQLITE_OK)
		return kp_store_fail(s, "records to send");
	sqlite3_bind_int64(st, 1, (sqlite3_int64)after);
	sqlite3_bind_int64(st, 2, (sqlite3_int64)max);
	while (sqlite3_step(st) == SQLITE_ROW) {
		size_t len = (size_t)sqlite3_column_bytes(st, 0);
		uint8_t *copy = malloc(len + 1);

		if (copy == NULL) {
			rc = KP_E_NOMEM;
			break;
		}
		memcpy(copy, sqlite3_column_blob(st, 0), len);
		items[*n].p = copy;
		items[*n].n = len;
		(*n)++;
	}
	sqlite3_finalize(st);
	if (rc != KP_OK) {
		for (size_t i = 0; i < *n; i++)
			free((void *)items[i].p);
		*n = 0;
	}
	return rc;
}

static int src_set_acked(void *ctx, uint64_t acked)
{
	kp_store *s = ctx;
	int rc = kp_store_begin(s);

	/* Never move backwards: a backend restored from an old backup must not make us
	 * forget that we already delivered records. */
	if (rc == KP_OK)
		rc = run(s, "UPDATE sync_state SET value = max(value, ?1) WHERE key = 'acked_seq'", (int64_t)acked, 0, "acked");
	if (rc == KP_OK)
		rc = run(s, "DELETE FROM pending_uses WHERE seq <= ?1", (int64_t)acked, 0,
		         "pending uses");
	if (rc == KP_OK)
		rc = kp_store_commit(s);
	if (rc != KP_OK) {
		kp_store_rollback(s);
		return rc;
	}
	/* Fold the WAL back after each acknowledged batch: deleting a batch's pending uses
	 * rewrites index pages all over the table, so a week's backlog (400 batches) grew the
	 * WAL past 100 MB in one sync. A failed checkpoint leaves the WAL as it was. */
	(void)kp_store_idle(s);
	return KP_OK;
}

static int src_config_version(void *ctx, uint64_t *version)
{
	return sync_value(ctx, "config_version", version);
}

/* A first-use pass this terminal started whose tap the backend has not acknowledged: the
 * bundle still says "first use", and must not undo the start. */
struct started { uint8_t token[KP_TOKEN_LEN]; int64_t id, from, until; };

static int started_passes(kp_store *s, uint64_t acked, struct started **out, size_t *n)
{
	sqlite3_stmt *st = NULL;
	size_t cap = 0;
	int rc = KP_OK;

	*out = NULL;
	*n = 0;
	if (sqlite3_prepare_v2(s->db, "SELECT token, id, valid_from, valid_until FROM entitlements"
	                       " WHERE first_use = 0 AND id IN (SELECT ent_id FROM pending_uses"
	                       " WHERE seq > ?1)", -1, &st, NULL) != SQLITE_OK)
		return kp_store_fail(s, "started passes");
	sqlite3_bind_int64(st, 1, (int64_t)acked);
	while (sqlite3_step(st) == SQLITE_ROW) {
		struct started *p;

		if (sqlite3_column_bytes(st, 0) != KP_TOKEN_LEN)
			continue;
		if (*n == cap) {
			p = realloc(*out, (cap = cap ? cap * 2 : 16) * sizeof(*p));
			if (p == NULL) {
				rc = KP_E_NOMEM;
				break;
			}
			*out = p;
		}
		p = &(*out)[(*n)++];
		memcpy(p->token, sqlite3_column_blob(st, 0), KP_TOKEN_LEN);
		p->id = sqlite3_column_int64(st, 1);
		p->from = sqlite3_column_int64(st, 2);
		p->until = sqlite3_column_int64(st, 3);
	}
	sqlite3_finalize(st);
	return rc;
}

static int keep_started(kp_store *s, const struct started *p, size_t n)
{
	sqlite3_stmt *st = NULL;
	int rc = KP_OK;

	if (n == 0)
		return KP_OK;
	if (sqlite3_prepare_v2(s->db, "UPDATE entitlements SET valid_from = ?3, valid_until = ?4,"
	                       " first_use = 0 WHERE token = ?1 AND id = ?2 AND first_use = 1",
	                       -1, &st, NULL) != SQLITE_OK)
		return kp_store_fail(s, "started passes");
	for (size_t i = 0; rc == KP_OK && i < n; i++) {
		sqlite3_reset(st);
		sqlite3_bind_blob(st, 1, p[i].token, KP_TOKEN_LEN, SQLITE_STATIC);
		sqlite3_bind_int64(st, 2, p[i].id);
		sqlite3_bind_int64(st, 3, p[i].from);
		sqlite3_bind_int64(st, 4, p[i].until);
		if (sqlite3_step(st) != SQLITE_DONE)
			rc = kp_store_fail(s, "started passes");
	}
	sqlite3_finalize(st);
	return rc;
}

static int put_product(kp_store *s, const struct kp_bundle_product *p)
{
	const char *ops[KP_BUNDLE_PRODUCT_OPS_MAX], *stops[KP_BUNDLE_PRODUCT_STOPS_MAX];
	size_t n_ops = p->n_operators < KP_BUNDLE_PRODUCT_OPS_MAX ? p->n_operators :
	               KP_BUNDLE_PRODUCT_OPS_MAX;
	int rc;

	for (size_t j = 0; j < n_ops; j++)
		ops[j] = p->operators[j];
	switch (p->kind) {
	case KP_PRODUCT_STORED:
		rc = kp_store_put_product_stored(s, p->id, p->name, ops, n_ops);
		break;
	case KP_PRODUCT_PERIOD:
		rc = kp_store_put_product_period(s, p->id, p->name, p->days, ops, n_ops);
		break;
	case KP_PRODUCT_COMMUTER:
		if (p->stops == NULL || p->n_stops > KP_BUNDLE_PRODUCT_STOPS_MAX)
			return KP_E_INVAL;
		for (size_t j = 0; j < p->n_stops; j++)
			stops[j] = p->stops[j];
		rc = kp_store_put_product_commuter(s, p->id, p->name, p->route, stops, p->n_stops,
		                                   ops, n_ops);
		break;
	default:
		return kp_store_put_product_cat(s, p->id, p->name, (int)p->rides, p->category, ops,
		                                n_ops);
	}
	if (rc == KP_OK && p->category[0] != '\0')
		rc = kp_store_run_product_category(s, p->id, p->category);
	return rc;
}

/* Format 2: the fare engine's configuration and the feeds replace what earlier bundles
 * brought. A format 1 bundle cannot say them and leaves them alone. */
static int apply_fares(kp_store *s, const struct kp_bundle *b, size_t *feeds_applied)
{
	const char **keep = NULL;
	int rc, applied = 0;

	*feeds_applied = 0;
	rc = run(s, "DELETE FROM discounts", 0, 0, "clear");
	if (rc == KP_OK)
		rc = run(s, "DELETE FROM fare_caps", 0, 0, "clear");
	if (rc == KP_OK)
		rc = run(s, "DELETE FROM transfer_rules", 0, 0, "clear");
	if (rc == KP_OK)
		rc = run(s, "DELETE FROM operator_fares", 0, 0, "clear");
	for (size_t i = 0; rc == KP_OK && i < b->n_discounts; i++) {
		const struct kp_bundle_discount *d = &b->discounts[i];
		struct kp_discount k = { d->percent, (enum kp_rounding)d->rounding, d->unit };

		rc = kp_store_put_discount(s, d->operator_id, d->category, &k);
	}
	for (size_t i = 0; rc == KP_OK && i < b->n_caps; i++)
		rc = kp_store_put_fare_cap(s, b->caps[i].category,
		                           b->caps[i].period ? KP_CAP_MONTH : KP_CAP_DAY,
		                           b->caps[i].amount);
	for (size_t i = 0; rc == KP_OK && i < b->n_transfers; i++) {
		const struct kp_bundle_transfer *t = &b->transfers[i];
		struct kp_transfer_rule r;

		memset(&r, 0, sizeof(r));
		snprintf(r.from_operator, sizeof(r.from_operator), "%s", t->from_operator);
		snprintf(r.to_operator, sizeof(r.to_operator), "%s", t->to_operator);
		r.within_s = t->within_s;
		r.max_transfers = t->max_transfers;
		r.off = t->off;
		rc = kp_store_put_transfer_rule(s, &r);
	}
	for (size_t i = 0; rc == KP_OK && i < b->n_operator_fares; i++)
		rc = kp_store_put_operator_fare(s, b->operator_fares[i].operator_id,
		                                b->operator_fares[i].feed_id,
		                                b->operator_fares[i].distance);
	if (rc != KP_OK) {
		if (s->err[0] == '\0')
			snprintf(s->err, sizeof(s->err), "a discount, cap, transfer rule or operator "
			         "fare this terminal cannot take");
		return rc;
	}
	keep = calloc(b->n_feeds + 1, sizeof(*keep));
	if (keep == NULL)
		return KP_E_NOMEM;
	for (size_t i = 0; i < b->n_feeds; i++)
		keep[i] = b->feeds[i].id;
	rc = kp_store_withdraw_feeds(s, keep, b->n_feeds);
	free(keep);
	for (size_t i = 0; rc == KP_OK && i < b->n_feeds; i++) {
		const struct kp_bundle_feed *f = &b->feeds[i];

		rc = kp_store_apply_feed(s, f->id, f->digest, f->package, f->package_len, &applied);
		*feeds_applied += applied != 0;
	}
	return rc;
}

/* Format 3: what the backend knows of the cards from the other terminals replaces what an
 * earlier bundle said. A bundle of an older format says nothing of them, and a backend that
 * writes those has none: the table is emptied either way, so no stale journey or spending
 * outlives the bundle that brought it. */
static int apply_remote(kp_store *s, const struct kp_bundle *b)
{
	int rc = kp_store_clear_fare_remote(s);

	for (size_t i = 0; rc == KP_OK && i < b->n_remote; i++)
		rc = kp_store_put_fare_remote(s, &b->remote[i]);
	if (rc != KP_OK && s->err[0] == '\0')
		snprintf(s->err, sizeof(s->err), "a card's fare state this terminal cannot take");
	return rc;
}

/* Every product came with the bundle (the old ones, and their scopes, went with DELETE FROM
 * products): its scopes are the bundle's. */
static int apply_scopes(kp_store *s, const struct kp_bundle *b)
{
	int rc = KP_OK;

	for (size_t i = 0; rc == KP_OK && i < b->n_scopes; i++) {
		rc = kp_store_put_product_scope(s, b->scopes[i].product,
		                                b->scopes[i].network ? "network" : "route",
		                                b->scopes[i].scope_id);
		if (rc != KP_OK && s->err[0] == '\0')
			snprintf(s->err, sizeof(s->err), "product scope of %s: not valid here",
			         b->scopes[i].product);
	}
	return rc;
}

/* The scheme's My Number policy as the tap engine reads it (terminal/tap/policy.c,
 * tap_policy_load), with when the bundle was issued and the journal's head then:
 * "4 DIRECT RIDES VALUE MAX_AGE_S ISSUED_MS SEQ PRODUCTS CATEGORIES" (lists comma-separated,
 * "-" when empty). */
static void ids_join(char *out, size_t cap, const char (*ids)[KP_ID_MAX + 1], size_t n)
{
	size_t used = 0;

	snprintf(out, cap, "-");
	for (size_t i = 0; i < n && used < cap; i++)
		used += (size_t)snprintf(out + used, cap - used, "%s%s", i ? "," : "", ids[i]);
}

static int put_policy(kp_store *s, const struct kp_bundle *b)
{
	const struct kp_bundle_policy *p = &b->policy;
	char prods[KP_POLICY_LIST_MAX * (KP_ID_MAX + 1) + 2];
	char cats[KP_POLICY_LIST_MAX * (KP_ID_MAX + 1) + 2];
	char text[2 * sizeof(prods) + 160];
	uint8_t hash[KP_SHA256_LEN];
	uint64_t head = 0;
	int rc = kp_store_journal_head(s, &head, hash);

	if (rc != KP_OK)
		return rc;
	ids_join(prods, sizeof(prods), (const char (*)[KP_ID_MAX + 1])p->products, p->n_products);
	ids_join(cats, sizeof(cats), (const char (*)[KP_ID_MAX + 1])p->categories,
	         p->n_categories);
	snprintf(text, sizeof(text), "4 %d %lld %lld %lld %lld %llu %s %s", p->direct ? 1 : 0,
	         (long long)p->direct_rides, (long long)p->direct_value,
	         (long long)(p->max_age_s > 0 ? p->max_age_s : KP_POLICY_MAX_AGE_DEFAULT),
	         (long long)b->issued_ms, (unsigned long long)head, prods, cats);
	return kp_store_meta_set(s, "mynumber_policy", text);
}

/* The rows of a bundle or a delta that are keyed by card or entitlement; remote: the cards'
 * fare state too (a bundle puts those in apply_remote, after emptying the table). */
static int put_card_rows(kp_store *s, const struct kp_bundle *b, int remote)
{
	int rc = KP_OK;

	for (size_t i = 0; rc == KP_OK && i < b->n_entitlements; i++) {
		const struct kp_bundle_entitlement *be = &b->entitlements[i];
		struct kp_entitlement e;

		memset(&e, 0, sizeof(e));
		e.id = be->id;
		memcpy(e.token, be->token, KP_TOKEN_LEN);
		snprintf(e.product, sizeof(e.product), "%s", be->product);
		e.rides_left = be->remaining;
		e.valid_from_ms = be->valid_from_ms;
		e.valid_until_ms = be->valid_until_ms;
		e.first_use = be->first_use;
		rc = kp_store_put_entitlement(s, &e);
	}
	for (size_t i = 0; rc == KP_OK && i < b->n_eligibility; i++) {
		const struct kp_bundle_eligibility *g = &b->eligibility[i];

		rc = kp_store_put_eligibility(s, g->token, g->category, g->valid_from_ms,
		                              g->valid_until_ms, g->has_via ? g->via : NULL);
	}
	for (size_t i = 0; rc == KP_OK && i < b->n_denylist; i++)
		rc = kp_store_put_denylist(s, b->denylist[i].token, b->denylist[i].reason, b->issued_ms);
	for (size_t i = 0; rc == KP_OK && remote && i < b->n_remote; i++)
		rc = kp_store_put_fare_remote(s, &b->remote[i]);
	return rc;
}

/* Merge, not overwrite: take off the rides (stored value: the amounts) this terminal took
 * that the backend's rows do not include yet (records after acked), from every entitlement
 * (a bundle), or those of one card (token: a delta's). */
static int merge_uses(kp_store *s, uint64_t acked, const uint8_t *token)
{
	sqlite3_stmt *st = NULL;
	int rc = KP_OK;

	if (sqlite3_prepare_v2(s->db, "UPDATE entitlements SET rides_left = max(0, rides_left -"
	                       " (SELECT coalesce(sum(rides), 0) FROM pending_uses p"
	                       "  WHERE p.ent_id = entitlements.id AND p.seq > ?1))"
	                       " WHERE ?2 IS NULL OR token = ?2", -1, &st, NULL) != SQLITE_OK)
		return kp_store_fail(s, "merge uses");
	sqlite3_bind_int64(st, 1, (int64_t)acked);
	if (token != NULL)
		sqlite3_bind_blob(st, 2, token, KP_TOKEN_LEN, SQLITE_STATIC);
	if (sqlite3_step(st) != SQLITE_DONE)
		rc = kp_store_fail(s, "merge uses");
	sqlite3_finalize(st);
	return rc;
}

/* Commits, or rolls back keeping what went wrong in s->err: the client asks for it
 * (src_errmsg) and puts it in its error text. */
static int apply_end(kp_store *s, int rc)
{
	char why[sizeof(s->err)];

	if (rc == KP_OK)
		rc = kp_store_commit(s);
	if (rc != KP_OK) {
		snprintf(why, sizeof(why), "%s", kp_store_errmsg(s));
		kp_store_rollback(s);
		snprintf(s->err, sizeof(s->err), "%s", why);
	}
	return rc;
}

static int src_apply_bundle(void *ctx, const struct kp_bundle *b)
{
	static const char *const cleared[] = {
		"DELETE FROM entitlements", "DELETE FROM product_scope",
		"DELETE FROM product_operators", "DELETE FROM products", "DELETE FROM operators",
		"DELETE FROM denylist", "DELETE FROM eligibility",
	};
	kp_store *s = ctx;
	struct started *started = NULL;
	size_t n_started = 0, feeds_applied = 0;
	uint64_t have = 0;
	int rc;

	rc = kp_store_begin(s);
	if (rc != KP_OK)
		return rc;
	s->err[0] = '\0';
	/* Checked again inside the transaction: two syncs must not apply out of order. */
	rc = sync_value(s, "config_version", &have);
	if (rc == KP_OK && b->version <= have) {
		snprintf(s->err, sizeof(s->err), "bundle %llu is not newer than %llu",
		         (unsigned long long)b->version, (unsigned long long)have);
		rc = KP_E_INVAL;
	}
	if (rc == KP_OK)
		rc = started_passes(s, b->acked, &started, &n_started);
	/* The snapshot replaces what the terminal had: the backend is the truth. */
	for (size_t i = 0; rc == KP_OK && i < sizeof(cleared) / sizeof(cleared[0]); i++)
		rc = run(s, cleared[i], 0, 0, "clear");
	for (size_t i = 0; rc == KP_OK && i < b->n_operators; i++)
		rc = kp_store_put_operator(s, b->operators[i].id, b->operators[i].name);
	for (size_t i = 0; rc == KP_OK && i < b->n_products; i++) {
		rc = put_product(s, &b->products[i]);
		if (rc != KP_OK && s->err[0] == '\0')
			snprintf(s->err, sizeof(s->err), "product %s: not valid here", b->products[i].id);
	}
	if (rc == KP_OK)
		rc = apply_scopes(s, b);
	if (rc == KP_OK)
		rc = put_card_rows(s, b, 0);
	if (rc == KP_OK && (b->format >= 2 || b->n_discounts > 0 || b->n_caps > 0 ||
	                    b->n_transfers > 0 || b->n_operator_fares > 0 || b->n_feeds > 0))
		rc = apply_fares(s, b, &feeds_applied);
	if (rc == KP_OK)
		rc = apply_remote(s, b);
	if (rc == KP_OK)
		rc = merge_uses(s, b->acked, NULL);
	if (rc == KP_OK)
		rc = keep_started(s, started, n_started);
	if (rc == KP_OK)
		rc = put_policy(s, b);
	if (rc == KP_OK)
		rc = run(s, "UPDATE sync_state SET value = ?1 WHERE key = 'config_version'",
		         (int64_t)b->version, 0, "config version");
	free(started);
	return apply_end(s, rc);
}

/* The rows of a delta's keys go, then its rows are put (a key without a row is gone). */
static int delta_delete(kp_store *s, const struct kp_delta *d)
{
	static const struct { enum kp_bundle_array_id id; const char *sql; } del[] = {
		{ KP_BA_DENYLIST, "DELETE FROM denylist WHERE token = ?1" },
		{ KP_BA_ENTITLEMENTS, "DELETE FROM entitlements WHERE token = ?1" },
		{ KP_BA_ELIGIBILITY, "DELETE FROM eligibility WHERE token = ?1" },
		{ KP_BA_REMOTE, "DELETE FROM fare_remote WHERE token = ?1" },
	};
	int rc = KP_OK;

	for (size_t i = 0; rc == KP_OK && i < sizeof(del) / sizeof(del[0]); i++) {
		const struct kp_delta_keys *k = &d->keys[del[i].id];
		sqlite3_stmt *st = NULL;

		if (k->n == 0)
			continue;
		if (sqlite3_prepare_v2(s->db, del[i].sql, -1, &st, NULL) != SQLITE_OK)
			return kp_store_fail(s, "delta");
		for (size_t j = 0; rc == KP_OK && j < k->n; j++) {
			sqlite3_reset(st);
			sqlite3_bind_blob(st, 1, k->tokens[j], KP_TOKEN_LEN, SQLITE_STATIC);
			if (sqlite3_step(st) != SQLITE_DONE)
				rc = kp_store_fail(s, "delta");
		}
		sqlite3_finalize(st);
	}
	return rc;
}

/* A delta (PROTOCOL.md section 5.4) in one transaction: refused with KP_SYNC_E_STALE and
 * nothing changed when its base is not the version applied. */
static int src_apply_delta(void *ctx, const struct kp_delta *d)
{
	kp_store *s = ctx;
	struct started *started = NULL;
	struct kp_bundle pol;
	size_t n_started = 0;
	uint64_t have = 0;
	int rc = kp_store_begin(s);

	if (rc != KP_OK)
		return rc;
	s->err[0] = '\0';
	rc = sync_value(s, "config_version", &have);
	if (rc == KP_OK && d->base != have) {
		snprintf(s->err, sizeof(s->err), "delta applies to version %llu, not %llu",
		         (unsigned long long)d->base, (unsigned long long)have);
		rc = KP_SYNC_E_STALE;
	}
	if (rc == KP_OK)
		rc = started_passes(s, d->acked, &started, &n_started);
	if (rc == KP_OK)
		rc = delta_delete(s, d);
	if (rc == KP_OK)
		rc = put_card_rows(s, &d->rows, 1);
	if (rc != KP_OK && s->err[0] == '\0')
		snprintf(s->err, sizeof(s->err), "a row of the delta this terminal cannot take");
	for (size_t i = 0; rc == KP_OK && i < d->keys[KP_BA_ENTITLEMENTS].n; i++)
		rc = merge_uses(s, d->acked, d->keys[KP_BA_ENTITLEMENTS].tokens[i]);
	if (rc == KP_OK)
		rc = keep_started(s, started, n_started);
	memset(&pol, 0, sizeof(pol));
	pol.policy = d->policy;
	pol.issued_ms = d->issued_ms;
	if (rc == KP_OK)
		rc = put_policy(s, &pol);
	if (rc == KP_OK)
		rc = run(s, "UPDATE sync_state SET value = ?1 WHERE key = 'config_version'",
		         (int64_t)d->version, 0, "config version");
	free(started);
	return apply_end(s, rc);
}

int kp_store_journal_id(kp_store *s, uint8_t id[KP_JOURNAL_ID_LEN])
{
	char hex[2 * KP_JOURNAL_ID_LEN + 1];
	int rc = kp_store_meta_get(s, "journal_id", hex, sizeof(hex));

	if (rc != KP_OK)
		return rc;
	if (kp_unhex(hex, id, KP_JOURNAL_ID_LEN) != 0) {
		snprintf(s->err, sizeof(s->err), "the journal id in meta is not 32 hex digits");
		return KP_E_JOURNAL;
	}
	return KP_OK;
}

/* A new journal from the next record on the backend's side: the records stay, numbered as
 * they are; the backend takes them again under the new id and keeps each ride once
 * (PROTOCOL.md section 4.1). */
static int src_new_journal(void *ctx, uint8_t id[KP_JOURNAL_ID_LEN])
{
	kp_store *s = ctx;
	int rc = kp_store_begin(s);

	if (rc == KP_OK)
		rc = run(s, "UPDATE meta SET value = lower(hex(randomblob(16)))"
		            " WHERE key = 'journal_id'", 0, 0, "new journal id");
	if (rc == KP_OK && sqlite3_changes(s->db) != 1) {
		snprintf(s->err, sizeof(s->err), "the database has no journal id to replace");
		rc = KP_E_JOURNAL;
	}
	if (rc == KP_OK)
		rc = kp_store_commit(s);
	if (rc != KP_OK) {
		kp_store_rollback(s);
		return rc;
	}
	return kp_store_journal_id(s, id);
}

static int src_journal_id(void *ctx, uint8_t id[KP_JOURNAL_ID_LEN])
{
	return kp_store_journal_id(ctx, id);
}

static int src_last_seq(void *ctx, uint64_t *seq)
{
	uint8_t hash[KP_SHA256_LEN];

	return kp_store_journal_head(ctx, seq, hash);
}

static const char *src_errmsg(void *ctx)
{
	return kp_store_errmsg(ctx);
}

void kp_store_sync_source(kp_store *s, struct kp_sync_source *src)
{
	memset(src, 0, sizeof(*src));
	src->ctx = s;
	src->records_after = src_records_after;
	src->set_acked = src_set_acked;
	src->config_version = src_config_version;
	src->apply_bundle = src_apply_bundle;
	src->apply_delta = src_apply_delta;
	src->journal_id = src_journal_id;
	src->new_journal = src_new_journal;
	src->last_seq = src_last_seq;
	src->errmsg = src_errmsg;
	kp_store_snap_source(src);
}
