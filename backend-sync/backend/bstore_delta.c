/* SPDX-License-Identifier: Apache-2.0 */
/* The backend store: a terminal's delta, from the change log (migration 9, PROTOCOL.md
 * section 5.4). The log names what changed (a card token, a linkage);
 * the delta carries those keys and the rows they have now, read by primary key or an index,
 * so building one costs in proportion to the changes, never to the state. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "bstore_int.h"

/* A growing array of card tokens. */
static int key_add(struct kp_delta_keys *k, size_t *cap, const void *key)
{
	if (k->n == *cap) {
		size_t n = *cap ? *cap * 2 : 64;
		void *p = realloc(k->tokens, n * sizeof(*k->tokens));

		if (p == NULL)
			return KP_BE_E_NOMEM;
		k->tokens = p;
		*cap = n;
	}
	memcpy(k->tokens[k->n++], key, KP_TOKEN_LEN);
	return KP_BE_OK;
}

static int token_cmp(const void *a, const void *b)
{
	return memcmp(a, b, KP_TOKEN_LEN);
}

/* Sorted, each once (the log lists a key as often as it changed; linkages add cards). */
static void tokens_unique(struct kp_delta_keys *k)
{
	size_t kept = 0;

	if (k->n == 0)
		return;
	qsort(k->tokens, k->n, KP_TOKEN_LEN, token_cmp);
	for (size_t i = 1; i < k->n; i++) {
		if (memcmp(k->tokens[kept], k->tokens[i], KP_TOKEN_LEN) != 0)
			memcpy(k->tokens[++kept], k->tokens[i], KP_TOKEN_LEN);
	}
	k->n = kept + 1;
}

/* A linkage changed: its own eligibility row and those of the cards linked through it. */
static int linkage_cards(kp_bstore *s, const uint8_t *linkage, struct kp_delta_keys *k,
                         size_t *cap)
{
	kp_db_stmt *st = NULL;
	int rc = key_add(k, cap, linkage);

	if (rc == KP_BE_OK)
		rc = bs_query(s, &st, "SELECT card FROM linkage_cards WHERE linkage = ?1",
		              BS_TOKEN(linkage));
	while (rc == KP_BE_OK && kp_db_step(st) == KP_DB_ROW) {
		if (kp_db_column_bytes(st, 0) == KP_TOKEN_LEN)
			rc = key_add(k, cap, kp_db_column_blob(st, 0));
	}
	kp_db_finalize(st);
	return rc;
}

/* The keys changed after change `from`; *full when a delta cannot say them. */
static int delta_keys(kp_bstore *s, int64_t from, struct kp_delta *d, int *full)
{
	static const struct { const char *kind; enum kp_bundle_array_id id; } kinds[] = {
		{ "deny", KP_BA_DENYLIST }, { "ent", KP_BA_ENTITLEMENTS },
		{ "elig", KP_BA_ELIGIBILITY }, { "linkage", KP_BA_ELIGIBILITY },
		{ "remote", KP_BA_REMOTE },
	};
	size_t cap[KP_BA_COUNT] = { 0 };
	kp_db_stmt *st = NULL;
	int64_t count = 0;
	int rc = bs_query_int(s, 0, &count, "SELECT count(*) FROM (SELECT 1 FROM changes"
	                      " WHERE n > ?1 LIMIT ?2) AS c", BS_INT(from),
	                      BS_INT(KP_BSTORE_DELTA_CHANGES_MAX + 1));

	if (rc == KP_BE_OK && count > KP_BSTORE_DELTA_CHANGES_MAX)
		*full = 1;
	if (rc != KP_BE_OK || *full)
		return rc;
	rc = bs_query(s, &st, "SELECT kind, key FROM changes WHERE n > ?1", BS_INT(from));
	while (rc == KP_BE_OK && !*full && kp_db_step(st) == KP_DB_ROW) {
		const char *kind = kp_db_column_text(st, 0);
		size_t i;

		for (i = 0; i < sizeof(kinds) / sizeof(kinds[0]) && strcmp(kinds[i].kind, kind); i++)
			;
		if (i == sizeof(kinds) / sizeof(kinds[0])) {
			*full = 1;                              /* 'config' */
		} else if (kp_db_column_bytes(st, 1) == KP_TOKEN_LEN) {
			const void *key = kp_db_column_blob(st, 1);
			enum kp_bundle_array_id id = kinds[i].id;

			rc = strcmp(kind, "linkage") == 0 ? linkage_cards(s, key, &d->keys[id], &cap[id]) :
			     key_add(&d->keys[id], &cap[id], key);
		}
	}
	kp_db_finalize(st);
	for (int id = 0; id < KP_BA_COUNT; id++)
		tokens_unique(&d->keys[id]);
	return rc;
}

/* Appends the rows st yields to the array id of d->rows. */
static int rows_append(kp_bstore *s, struct kp_delta *d, enum kp_bundle_array_id id,
                       kp_db_stmt *st, size_t *cap)
{
	const struct kp_bundle_array *a = kp_bundle_array(id);
	void **arr = (void **)((uint8_t *)&d->rows + a->arr_offset);
	size_t *n = (size_t *)((uint8_t *)&d->rows + a->count_offset);
	struct kp_fare_value vals[KP_BUNDLE_ROW_MAX];
	const char *cols[KP_BUNDLE_ROW_MAX];
	size_t n_cols = kp_bundle_row_columns(id, cols, NULL);
	int step;

	while ((step = kp_db_step(st)) == KP_DB_ROW) {
		if (*n == *cap) {
			size_t c = *cap ? *cap * 2 : 64;
			void *p = realloc(*arr, c * a->elem_size);

			if (p == NULL)
				return KP_BE_E_NOMEM;
			*arr = p;
			*cap = c;
		}
		bs_row_values(st, n_cols, vals);
		memset((uint8_t *)*arr + *n * a->elem_size, 0, a->elem_size);
		if (kp_bundle_row_set(id, (uint8_t *)*arr + *n * a->elem_size, vals) != KP_SYNC_OK)
			return KP_BE_E_NOMEM;
		(*n)++;
	}
	return step == KP_DB_DONE ? KP_BE_OK : bs_fail(s, "delta rows");
}

/* A denied card's reason the bundle cannot carry goes with the bundle's stand-in. */
static void deny_reasons(struct kp_bundle *b)
{
	char why[160];

	for (size_t i = 0; i < b->n_denylist; i++) {
		if (kp_bundle_text_check("reason", b->denylist[i].reason, why, sizeof(why)) != KP_SYNC_OK)
			snprintf(b->denylist[i].reason, sizeof(b->denylist[i].reason), "%s",
			         "(reason unreadable: see the backend)");
	}
}

/* The rows of every changed key, now. */
static int delta_rows(kp_bstore *s, const char *terminal, int64_t now_ms, struct kp_delta *d)
{
	static const struct { enum kp_bundle_array_id id; const char *sql; } q[] = {
		{ KP_BA_DENYLIST, "SELECT token, reason FROM (SELECT token, reason" DENYLIST_SQL
		  ") AS d WHERE token = ?2" },
		{ KP_BA_ENTITLEMENTS, ENTITLEMENT_COLS " WHERE token = ?2" },
		{ KP_BA_ELIGIBILITY, ELIGIBILITY_COLS ELIGIBILITY_OF " ORDER BY token, category" },
	};
	int rc = KP_BE_OK;

	for (size_t i = 0; rc == KP_BE_OK && i < sizeof(q) / sizeof(q[0]); i++) {
		const struct kp_delta_keys *k = &d->keys[q[i].id];
		kp_db_stmt *st = NULL;
		size_t cap = 0;

		if (k->n == 0)
			continue;
		rc = bs_prep(s, &st, q[i].sql);
		for (size_t j = 0; rc == KP_BE_OK && j < k->n; j++) {
			kp_db_reset(st);
			kp_db_bind_int64(st, 1, now_ms);
			kp_db_bind_blob(st, 2, k->tokens[j], KP_TOKEN_LEN);
			rc = rows_append(s, d, q[i].id, st, &cap);
		}
		kp_db_finalize(st);
	}
	deny_reasons(&d->rows);
	for (size_t j = 0; rc == KP_BE_OK && j < d->keys[KP_BA_REMOTE].n; j++)
		rc = bs_fill_remote(s, terminal, now_ms, &d->rows, d->keys[KP_BA_REMOTE].tokens[j]);
	return rc;
}

static int delta_fill(kp_bstore *s, const struct kp_bsession *ses, int64_t from, int64_t now_ms,
                      struct kp_delta *d, int *full)
{
	int64_t acked = 0;
	int rc = delta_keys(s, from, d, full);

	if (rc != KP_BE_OK || *full)
		return rc;
	rc = delta_rows(s, ses->terminal, now_ms, d);
	if (rc == KP_BE_OK)
		rc = kp_bstore_get_policy(s, &d->policy);
	if (rc == KP_BE_OK)
		rc = bs_query_int(s, 0, &acked, "SELECT acked FROM journals WHERE terminal = ?1"
		                  " AND journal = ?2", BS_TEXT(ses->terminal),
		                  BS_JOURNAL(ses->journal));
	d->acked = (uint64_t)acked;
	d->issued_ms = now_ms;
	snprintf(d->terminal, sizeof(d->terminal), "%s", ses->terminal);
	return rc;
}

int kp_bstore_delta_session(kp_bstore *s, const struct kp_bsession *ses, uint64_t have_version,
                            int64_t now_ms, struct kp_delta *d, int *kind)
{
	int64_t from = -1;
	int full = 0, rc;

	memset(d, 0, sizeof(*d));
	*kind = KP_BSTORE_DELTA_FULL;
	rc = bs_bundle_refresh(s, now_ms);
	if (rc != KP_BE_OK)
		return rc;
	/* one read transaction: the rows and the version agree */
	rc = bs_begin(s, KP_DB_TXN_SNAPSHOT);
	if (rc != KP_BE_OK)
		return rc;
	rc = kp_bstore_state_version(s, &d->version);
	if (rc == KP_BE_OK && d->version <= have_version) {
		*kind = KP_BSTORE_DELTA_NONE;
		goto out;
	}
	if (rc == KP_BE_OK && have_version > 0 && have_version <= INT64_MAX)
		rc = bs_query_int(s, -1, &from, "SELECT last_change FROM change_versions"
		                  " WHERE version = ?1", BS_INT((int64_t)have_version));
	if (rc != KP_BE_OK || from < 0)
		goto out;
	d->base = have_version;
	rc = delta_fill(s, ses, from, now_ms, d, &full);
	if (rc == KP_BE_OK && !full)
		*kind = KP_BSTORE_DELTA_DELTA;
out:
	bs_rollback(s);
	if (rc != KP_BE_OK || *kind != KP_BSTORE_DELTA_DELTA) {
		uint64_t v = d->version;

		kp_delta_free(d);
		d->version = v;
	}
	return rc;
}

int kp_bstore_set_change_keep(kp_bstore *s, int64_t keep_s)
{
	int rc;

	if (keep_s < 0)
		return bs_refuse(s, KP_BE_E_INVAL, "change log retention: 0 or more seconds");
	rc = bs_begin(s, KP_DB_TXN_WRITE);
	if (rc == KP_BE_OK)
		rc = bs_meta_put(s, "change_keep_s", keep_s);
	if (rc == KP_BE_OK)
		rc = bs_version_mark(s);
	return bs_end(s, rc, 0);
}
