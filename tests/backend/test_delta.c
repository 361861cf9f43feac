/* SPDX-License-Identifier: Apache-2.0 */
/* Delta bundles (PROTOCOL.md section 5.4): the backend's change log (schema 10), the delta
 * it builds from it, the delta's strict encoding, and the terminal applying it in one
 * transaction. A terminal that takes deltas ends in the state a terminal that takes full
 * bundles reaches; a delta that is cut, repeated, reordered, for another terminal or signed
 * by another key is refused with the terminal's state unchanged; a terminal behind the
 * retained log, or behind a change a delta cannot say, gets a full bundle. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <cmocka.h>

#include "kp_backend.h"
#include "kp_terminal.h"
#include "testutil.h"
#include "testutil_db.h"

#define NOW   1795662000000LL        /* 2026-11-26T12:00+09:00 */
#define YEAR  (365LL * 86400000LL)

struct term {
	kp_store *st;
	struct kp_sync_source src;
	char path[512];
};

struct fx {
	char dir[256];
	char conn[700];                      /* the store: a file, or a PostgreSQL schema */
	kp_bstore *s;
	kp_key *key, *other;
	kp_cert *cert, *other_cert;
	struct term td, tf;                  /* takes deltas; takes full bundles only */
};

static void token(uint8_t t[KP_TOKEN_LEN], int c)
{
	memset(t, c, KP_TOKEN_LEN);
}

static void term_open(struct fx *f, struct term *t, const char *name)
{
	snprintf(t->path, sizeof(t->path), "%s/%s.db", f->dir, name);
	assert_int_equal(kp_store_open(&t->st, t->path), KP_OK);
	kp_store_sync_source(t->st, &t->src);
}

static void key_cert(struct fx *f, const char *name, kp_key **key, kp_cert **cert)
{
	char path[600];

	snprintf(path, sizeof(path), "%s/%s.crt", f->dir, name);
	assert_int_equal(kp_key_generate(key), 0);
	assert_int_equal(kp_cert_create_ca(*key, "backend", 1, path), 0);
	assert_int_equal(kp_cert_load(cert, path), 0);
}

static int setup(void **state)
{
	struct fx *f = calloc(1, sizeof(*f));
	const char *ops[] = { "OP" };
	uint8_t t[KP_TOKEN_LEN];

	assert_non_null(f);
	tu_tmpdir(f->dir, sizeof(f->dir));
	tu_store_conn(f->conn, sizeof(f->conn), f->dir);
	assert_int_equal(kp_bstore_open(&f->s, f->conn), KP_BE_OK);
	key_cert(f, "backend", &f->key, &f->cert);
	key_cert(f, "other", &f->other, &f->other_cert);
	term_open(f, &f->td, "td");
	term_open(f, &f->tf, "tf");
	assert_int_equal(kp_bstore_put_operator(f->s, "OP", "Operator"), KP_BE_OK);
	assert_int_equal(kp_bstore_put_product(f->s, "R10", "Ten rides", 10, ops, 1), KP_BE_OK);
	for (int c = 1; c <= 6; c++) {
		token(t, c);
		assert_int_equal(kp_bstore_register_card(f->s, t, "card", NOW), KP_BE_OK);
	}
	*state = f;
	return 0;
}

static int teardown(void **state)
{
	struct fx *f = *state;

	kp_store_close(f->td.st);
	kp_store_close(f->tf.st);
	kp_bstore_close(f->s);
	kp_key_free(f->key);
	kp_key_free(f->other);
	kp_cert_free(f->cert);
	kp_cert_free(f->other_cert);
	tu_rmdir(f->dir);
	free(f);
	return 0;
}

static uint64_t version_of(struct term *t)
{
	uint64_t v = 0;

	assert_int_equal(t->src.config_version(t->src.ctx, &v), KP_OK);
	return v;
}

/* What a terminal holds of what bundles and deltas carry, as one text ("added" is the
 * bundle's issued time, which two syncs never share). */
static char *state_of(struct term *t)
{
	static const char *const q[] = {
		"SELECT group_concat(x, ';') FROM (SELECT hex(token) || ',' || reason AS x"
		" FROM denylist ORDER BY token)",
		"SELECT group_concat(x, ';') FROM (SELECT hex(token) || ',' || id || ',' ||"
		" product_id || ',' || rides_left || ',' || valid_from || ',' || valid_until || ','"
		" || first_use AS x FROM entitlements ORDER BY id)",
		"SELECT group_concat(x, ';') FROM (SELECT hex(token) || ',' || category || ',' ||"
		" valid_from || ',' || valid_until || ',' || coalesce(hex(via), '-') AS x"
		" FROM eligibility ORDER BY token, category)",
		"SELECT group_concat(x, ';') FROM (SELECT hex(token) || ',' || last_ms AS x"
		" FROM fare_remote ORDER BY token)",
		"SELECT value FROM meta WHERE key = 'mynumber_policy'",
	};
	char *out = calloc(1, 1);
	size_t len = 0;
	sqlite3 *db = NULL;

	assert_int_equal(sqlite3_open_v2(t->path, &db, SQLITE_OPEN_READONLY, NULL), SQLITE_OK);
	for (size_t i = 0; i < sizeof(q) / sizeof(q[0]); i++) {
		sqlite3_stmt *st = NULL;
		const char *v = "";
		char *p;

		assert_int_equal(sqlite3_prepare_v2(db, q[i], -1, &st, NULL), SQLITE_OK);
		if (sqlite3_step(st) == SQLITE_ROW && sqlite3_column_text(st, 0) != NULL)
			v = (const char *)sqlite3_column_text(st, 0);
		/* the policy line ends with when the bundle was issued and the journal head */
		p = realloc(out, len + strlen(v) + 2);
		assert_non_null(p);
		out = p;
		len += (size_t)sprintf(out + len, "%s|", v);
		sqlite3_finalize(st);
	}
	sqlite3_close(db);
	return out;
}

static void full_sync(struct fx *f, struct term *t, int64_t now)
{
	struct kp_bundle b, got;
	uint8_t *cose = NULL;
	size_t n = 0;
	int has = 0;
	char err[256];

	assert_int_equal(kp_bstore_bundle(f->s, "T-A", version_of(t), now, &b, &has), KP_BE_OK);
	if (!has)
		return;
	assert_int_equal(kp_bundle_sign(&b, f->key, &cose, &n), KP_SYNC_OK);
	assert_int_equal(kp_bundle_open_err(f->cert, cose, n, "T-A", version_of(t), &got, err,
	                                    sizeof(err)), KP_SYNC_OK);
	assert_int_equal(t->src.apply_bundle(t->src.ctx, &got), KP_OK);
	kp_bundle_free(&b);
	kp_bundle_free(&got);
	free(cose);
}

static struct kp_bsession session(void)
{
	struct kp_bsession ses;

	memset(&ses, 0, sizeof(ses));
	snprintf(ses.terminal, sizeof(ses.terminal), "T-A");
	return ses;
}

/* The backend's delta from version have, signed by key (NULL: none to build); its kind. */
static int signed_delta(struct fx *f, uint64_t have, kp_key *key, uint8_t **cose, size_t *n)
{
	struct kp_bsession ses = session();
	struct kp_delta d;
	int kind = -1;

	*cose = NULL;
	*n = 0;
	assert_int_equal(kp_bstore_delta_session(f->s, &ses, have, NOW, &d, &kind), KP_BE_OK);
	if (kind == KP_BSTORE_DELTA_DELTA) {
		assert_int_equal(kp_delta_sign(&d, key, cose, n), KP_SYNC_OK);
		kp_delta_free(&d);
	}
	return kind;
}

/* Opens and applies a signed delta as the client does; its code. */
static int take(struct fx *f, struct term *t, const uint8_t *cose, size_t n)
{
	struct kp_delta d;
	char err[256];
	int rc = kp_delta_open(f->cert, cose, n, "T-A", version_of(t), &d, err, sizeof(err));

	if (rc != KP_SYNC_OK)
		return rc;
	rc = t->src.apply_delta(t->src.ctx, &d);
	kp_delta_free(&d);
	return rc;
}

/* Syncs t by delta (or a full bundle when the backend says so); the kind it got. */
static int delta_sync(struct fx *f, struct term *t)
{
	uint8_t *cose = NULL;
	size_t n = 0;
	int kind = signed_delta(f, version_of(t), f->key, &cose, &n);

	if (kind == KP_BSTORE_DELTA_DELTA)
		assert_int_equal(take(f, t, cose, n), KP_OK);
	else if (kind == KP_BSTORE_DELTA_FULL)
		full_sync(f, t, NOW);
	free(cose);
	return kind;
}

static void same_state(struct fx *f)
{
	char *a = state_of(&f->td), *b = state_of(&f->tf);

	/* the policy line holds the issued time: compare up to it */
	assert_string_equal(a, b);
	assert_int_equal(version_of(&f->td), version_of(&f->tf));
	free(a);
	free(b);
}

static void sell(struct fx *f, int c)
{
	uint8_t t[KP_TOKEN_LEN];
	int64_t id = 0;

	token(t, c);
	assert_int_equal(kp_bstore_sell(f->s, t, "R10", NOW - YEAR, NOW + YEAR, NOW, &id), KP_BE_OK);
}

static void test_delta_equals_full_bundle(void **state)
{
	struct fx *f = *state;
	struct kp_bundle_policy pol;
	uint8_t t[6][KP_TOKEN_LEN], link1[KP_TOKEN_LEN], link2[KP_TOKEN_LEN];
	uint8_t *cose = NULL;
	size_t n = 0;

	for (int c = 0; c < 6; c++)
		token(t[c], c + 1);
	token(link1, 0xA1);
	token(link2, 0xA2);
	sell(f, 1);
	sell(f, 2);
	assert_int_equal(kp_bstore_denylist(f->s, t[2], "stolen", NOW), KP_BE_OK);
	assert_int_equal(kp_bstore_linkage_add(f->s, link1, "resident", NOW - YEAR, NOW + YEAR,
	                                       NOW), KP_BE_OK);
	assert_int_equal(kp_bstore_linkage_link(f->s, link1, t[3], NOW, NULL), KP_BE_OK);
	/* a terminal with nothing gets a full bundle */
	assert_int_equal(delta_sync(f, &f->td), KP_BSTORE_DELTA_FULL);
	/* and one that is up to date, nothing */
	assert_int_equal(delta_sync(f, &f->td), KP_BSTORE_DELTA_NONE);

	/* a change of every kind a delta carries */
	assert_int_equal(kp_bstore_denylist(f->s, t[0], "lost", NOW), KP_BE_OK);
	assert_int_equal(kp_bstore_undeny(f->s, t[2]), KP_BE_OK);
	sell(f, 2);
	sell(f, 5);
	assert_int_equal(kp_bstore_linkage_add(f->s, link2, "student", NOW - YEAR, NOW + YEAR,
	                                       NOW), KP_BE_OK);
	assert_int_equal(kp_bstore_linkage_link(f->s, link2, t[0], NOW, NULL), KP_BE_OK);
	assert_int_equal(kp_bstore_linkage_revoke(f->s, link1, NOW), KP_BE_OK);
	assert_int_equal(kp_bstore_get_policy(f->s, &pol), KP_BE_OK);
	pol.max_age_s = 7200;
	assert_int_equal(kp_bstore_set_policy(f->s, &pol), KP_BE_OK);

	/* the delta is small: it names the changed keys only */
	assert_int_equal(signed_delta(f, version_of(&f->td), f->key, &cose, &n),
	                 KP_BSTORE_DELTA_DELTA);
	assert_true(n < 2000);
	assert_int_equal(take(f, &f->td, cose, n), KP_OK);
	free(cose);
	full_sync(f, &f->tf, NOW);
	same_state(f);
	{
		char *s = state_of(&f->td);

		/* card 1 denied, card 3 no more, card 4's linkage revoked, card 1 a student */
		assert_non_null(strstr(s, "01010101010101010101010101010101,lost"));
		assert_null(strstr(s, "03030303030303030303030303030303,stolen"));
		assert_null(strstr(s, "04040404040404040404040404040404,resident"));
		assert_non_null(strstr(s, "01010101010101010101010101010101,student"));
		assert_non_null(strstr(s, "4 0 0 0 7200 "));
		free(s);
	}

	/* a change a delta cannot say (the catalogue): a full bundle, and the same state */
	assert_int_equal(kp_bstore_put_operator(f->s, "OP2", "Another"), KP_BE_OK);
	assert_int_equal(kp_bstore_denylist(f->s, t[4], "fraud", NOW), KP_BE_OK);
	assert_int_equal(delta_sync(f, &f->td), KP_BSTORE_DELTA_FULL);
	/* after which deltas go on */
	assert_int_equal(kp_bstore_undeny(f->s, t[4]), KP_BE_OK);
	assert_int_equal(delta_sync(f, &f->td), KP_BSTORE_DELTA_DELTA);
	full_sync(f, &f->tf, NOW);
	same_state(f);
}

/* Every way a delta can be wrong leaves the terminal as it was. */
static void unchanged_after(struct fx *f, const uint8_t *cose, size_t n, int want_rc)
{
	char *before = state_of(&f->td), *after;
	uint64_t v = version_of(&f->td);

	assert_int_equal(take(f, &f->td, cose, n), want_rc);
	after = state_of(&f->td);
	assert_string_equal(before, after);
	assert_int_equal(version_of(&f->td), v);
	free(before);
	free(after);
}

static void test_bad_deltas_refused_state_unchanged(void **state)
{
	struct fx *f = *state;
	uint8_t t1[KP_TOKEN_LEN], t2[KP_TOKEN_LEN], *d12 = NULL, *d23 = NULL, *foreign = NULL;
	uint8_t *cut;
	size_t n12 = 0, n23 = 0, nf = 0;
	uint64_t v1, v2;

	token(t1, 1);
	token(t2, 2);
	sell(f, 1);
	assert_int_equal(delta_sync(f, &f->td), KP_BSTORE_DELTA_FULL);
	v1 = version_of(&f->td);
	assert_int_equal(kp_bstore_denylist(f->s, t1, "lost", NOW), KP_BE_OK);
	assert_int_equal(kp_bstore_state_version(f->s, &v2), KP_BE_OK);
	assert_int_equal(signed_delta(f, v1, f->key, &d12, &n12), KP_BSTORE_DELTA_DELTA);
	assert_int_equal(signed_delta(f, v1, f->other, &foreign, &nf), KP_BSTORE_DELTA_DELTA);
	assert_int_equal(kp_bstore_denylist(f->s, t2, "stolen", NOW), KP_BE_OK);
	assert_int_equal(signed_delta(f, v2, f->key, &d23, &n23), KP_BSTORE_DELTA_DELTA);

	/* reordered: the later delta first (its base is not ours) */
	unchanged_after(f, d23, n23, KP_SYNC_E_STALE);
	/* signed by another key */
	unchanged_after(f, foreign, nf, KP_SYNC_E_SIGNATURE);
	/* cut anywhere */
	cut = malloc(n12);
	assert_non_null(cut);
	for (size_t len = 0; len < n12; len += 7) {
		memcpy(cut, d12, len);
		{
			char *before = state_of(&f->td), *after;

			assert_int_not_equal(take(f, &f->td, cut, len), KP_SYNC_OK);
			after = state_of(&f->td);
			assert_string_equal(before, after);
			free(before);
			free(after);
		}
	}
	free(cut);
	/* in order: taken */
	assert_int_equal(take(f, &f->td, d12, n12), KP_OK);
	assert_int_equal(version_of(&f->td), v2);
	/* repeated: its base is no longer ours */
	unchanged_after(f, d12, n12, KP_SYNC_E_STALE);
	/* the store itself refuses a wrong base (two syncs racing), whatever the client did */
	{
		struct kp_delta d;
		char err[256];

		assert_int_equal(kp_delta_open(f->cert, d12, n12, "T-A", v1, &d, err, sizeof(err)),
		                 KP_SYNC_OK);
		assert_int_equal(f->td.src.apply_delta(f->td.src.ctx, &d), KP_SYNC_E_STALE);
		assert_non_null(strstr(f->td.src.errmsg(f->td.src.ctx), "delta applies to version"));
		kp_delta_free(&d);
		/* for another terminal */
		assert_int_equal(kp_delta_open(f->cert, d12, n12, "T-B", v1, &d, err, sizeof(err)),
		                 KP_SYNC_E_MALFORMED);
		assert_string_equal(err, "delta is for terminal T-A, not T-B");
	}
	/* then asks again from its version, and gets there */
	assert_int_equal(take(f, &f->td, d23, n23), KP_OK);
	full_sync(f, &f->tf, NOW);
	same_state(f);
	free(d12);
	free(d23);
	free(foreign);
}

/* A bundle is never taken for a delta, nor a delta for a bundle. */
static void test_bundle_and_delta_never_confused(void **state)
{
	struct fx *f = *state;
	struct kp_bundle b, got;
	struct kp_delta d;
	uint8_t *bcose = NULL, *dcose = NULL;
	size_t bn = 0, dn = 0;
	int has = 0;
	char err[256];
	uint8_t t1[KP_TOKEN_LEN];

	token(t1, 1);
	assert_int_equal(delta_sync(f, &f->td), KP_BSTORE_DELTA_FULL);
	assert_int_equal(kp_bstore_denylist(f->s, t1, "lost", NOW), KP_BE_OK);
	assert_int_equal(signed_delta(f, version_of(&f->td), f->key, &dcose, &dn),
	                 KP_BSTORE_DELTA_DELTA);
	assert_int_equal(kp_bstore_bundle(f->s, "T-A", 0, NOW, &b, &has), KP_BE_OK);
	assert_int_equal(kp_bundle_sign(&b, f->key, &bcose, &bn), KP_SYNC_OK);
	assert_int_equal(kp_delta_open(f->cert, bcose, bn, "T-A", version_of(&f->td), &d, err,
	                               sizeof(err)), KP_SYNC_E_MALFORMED);
	assert_int_equal(kp_bundle_open_err(f->cert, dcose, dn, "T-A", 0, &got, err, sizeof(err)),
	                 KP_SYNC_E_MALFORMED);
	kp_bundle_free(&b);
	free(bcose);
	free(dcose);
}

static int64_t wall_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_REALTIME, &ts);
	return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* A terminal behind the retained log gets a full bundle; the log is pruned. */
static void test_behind_the_log_gets_full(void **state)
{
	struct fx *f = *state;
	uint8_t t1[KP_TOKEN_LEN];
	uint64_t v = 0;

	token(t1, 1);
	assert_int_equal(delta_sync(f, &f->td), KP_BSTORE_DELTA_FULL);
	assert_int_equal(kp_bstore_set_change_keep(f->s, -1), KP_BE_E_INVAL);
	assert_int_equal(kp_bstore_set_change_keep(f->s, 0), KP_BE_OK);
	/* versions are the wall clock in ms, ahead of it after several changes in one ms:
	 * wait until the terminal's version is in the past, which a log kept 0 s drops */
	while (wall_ms() <= (int64_t)version_of(&f->td))
		tu_sleep_ms(1);
	assert_int_equal(kp_bstore_denylist(f->s, t1, "lost", NOW), KP_BE_OK);
	/* and the denylist's version too, before the next change (else both in one ms) */
	assert_int_equal(kp_bstore_state_version(f->s, &v), KP_BE_OK);
	while (wall_ms() <= (int64_t)v)
		tu_sleep_ms(1);
	assert_int_equal(kp_bstore_undeny(f->s, t1), KP_BE_OK);
	assert_int_equal(delta_sync(f, &f->td), KP_BSTORE_DELTA_FULL);
	assert_int_equal(tu_db_value(f->conn, "SELECT count(*) FROM change_versions"), 1);
	assert_int_equal(tu_db_value(f->conn, "SELECT count(*) FROM changes"), 0);
	/* with the log kept again, deltas resume from the next version */
	assert_int_equal(kp_bstore_set_change_keep(f->s, 3600), KP_BE_OK);
	assert_int_equal(kp_bstore_denylist(f->s, t1, "lost", NOW), KP_BE_OK);
	assert_int_equal(delta_sync(f, &f->td), KP_BSTORE_DELTA_DELTA);
	full_sync(f, &f->tf, NOW);
	same_state(f);
}

/* The encoding: one per delta, strict, and the encoder refuses what is not canonical. */
static void test_delta_codec(void **state)
{
	struct kp_delta d, got;
	struct kp_bundle_deny deny[2];
	uint8_t (*keys)[KP_TOKEN_LEN] = calloc(2, KP_TOKEN_LEN);
	uint8_t (*ekeys)[KP_TOKEN_LEN] = calloc(1, KP_TOKEN_LEN);
	uint8_t *out = NULL, *again = NULL;
	size_t n = 0, n2 = 0;
	char err[256];

	(void)state;
	assert_non_null(keys);
	memset(&d, 0, sizeof(d));
	memset(deny, 0, sizeof(deny));
	d.base = 5;
	d.version = 9;
	d.issued_ms = NOW;
	d.acked = 3;
	strcpy(d.terminal, "T-A");
	memset(keys[0], 1, KP_TOKEN_LEN);
	memset(keys[1], 2, KP_TOKEN_LEN);
	d.keys[KP_BA_DENYLIST].tokens = keys;
	d.keys[KP_BA_DENYLIST].n = 2;
	memset(ekeys[0], 7, KP_TOKEN_LEN);
	d.keys[KP_BA_ENTITLEMENTS].tokens = ekeys;
	d.keys[KP_BA_ENTITLEMENTS].n = 1;      /* card 7's entitlements are gone */
	memset(deny[0].token, 2, KP_TOKEN_LEN);
	strcpy(deny[0].reason, "lost");
	d.rows.denylist = deny;
	d.rows.n_denylist = 1;                 /* card 1 undenied, card 2 denied */
	assert_int_equal(kp_delta_encode(&d, &out, &n), KP_SYNC_OK);
	assert_int_equal(kp_delta_decode(out, n, &got, err, sizeof(err)), KP_SYNC_OK);
	assert_int_equal(got.base, 5);
	assert_int_equal(got.version, 9);
	assert_int_equal(got.keys[KP_BA_DENYLIST].n, 2);
	assert_int_equal(got.keys[KP_BA_ENTITLEMENTS].tokens[0][0], 7);
	assert_int_equal(got.rows.n_denylist, 1);
	assert_string_equal(got.rows.denylist[0].reason, "lost");
	assert_int_equal(kp_delta_encode(&got, &again, &n2), KP_SYNC_OK);
	assert_int_equal(n2, n);
	assert_memory_equal(again, out, n);
	kp_delta_free(&got);
	free(again);
	/* every truncation and every single bit flip: refused or another valid delta */
	for (size_t len = 0; len < n; len++)
		assert_int_not_equal(kp_delta_decode(out, len, &got, NULL, 0), KP_SYNC_OK);
	for (size_t i = 0; i < n * 8; i++) {
		out[i / 8] ^= (uint8_t)(1u << (i % 8));
		if (kp_delta_decode(out, n, &got, NULL, 0) == KP_SYNC_OK) {
			assert_int_equal(kp_delta_encode(&got, &again, &n2), KP_SYNC_OK);
			assert_int_equal(n2, n);
			assert_memory_equal(again, out, n);
			free(again);
			kp_delta_free(&got);
		}
		out[i / 8] ^= (uint8_t)(1u << (i % 8));
	}
	free(out);
	/* a row whose key is not listed, keys out of order, a version not after the base */
	memset(deny[0].token, 3, KP_TOKEN_LEN);
	assert_int_equal(kp_delta_encode(&d, &out, &n), KP_SYNC_E_INVAL);
	memset(deny[0].token, 2, KP_TOKEN_LEN);
	memset(keys[0], 9, KP_TOKEN_LEN);
	assert_int_equal(kp_delta_encode(&d, &out, &n), KP_SYNC_E_INVAL);
	memset(keys[0], 1, KP_TOKEN_LEN);
	d.version = 5;
	assert_int_equal(kp_delta_encode(&d, &out, &n), KP_SYNC_E_INVAL);
	d.version = 9;
	d.rows.n_operators = 1;                /* not an array a delta carries */
	assert_int_equal(kp_delta_encode(&d, &out, &n), KP_SYNC_E_INVAL);
	free(keys);
	free(ekeys);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test_setup_teardown(test_delta_equals_full_bundle, setup, teardown),
		cmocka_unit_test_setup_teardown(test_bad_deltas_refused_state_unchanged, setup,
		                                teardown),
		cmocka_unit_test_setup_teardown(test_bundle_and_delta_never_confused, setup, teardown),
		cmocka_unit_test_setup_teardown(test_behind_the_log_gets_full, setup, teardown),
		cmocka_unit_test(test_delta_codec),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
