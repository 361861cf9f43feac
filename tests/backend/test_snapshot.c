/* SPDX-License-Identifier: Apache-2.0 */
/* The chunked snapshot (PROTOCOL.md section 5.5), end to end over loopback: the real
 * kippu-backend (chunks of 2 KiB here, KIPPU_BACKEND_SNAPSHOT_CHUNK) and the terminal's
 * client and store, through a proxy that cuts or tampers with the backend's frames. A
 * snapshot in chunks leaves the state a single-frame bundle leaves; a fetch cut after any
 * chunk resumes at the next sync from the first chunk missing; a chunk repeated, out of
 * order, truncated, altered or of another snapshot, and a manifest signed by another key,
 * are refused with the staged chunks and the applied state unchanged. */
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cmocka.h>
#include <sqlite3.h>

#include "kp_backend.h"
#include "kp_client.h"
#include "kp_terminal.h"
#include "testutil.h"
#include "testutil_db.h"

#define CHUNK   2048
#define N_DENY  400                  /* with the entitlements: a snapshot of some 14 chunks */
#define N_ENT   60

/* What the proxy does to the backend's frames. */
enum tamper { T_NONE, T_CUT, T_REPEAT, T_NEXT_INDEX, T_TRUNCATE, T_FLIP, T_OTHER_SNAP,
              T_MANIFEST_OTHER_KEY };

struct fx {
	char dir[256];
	char bin[4200];
	pid_t backend;
	int port;
	kp_cert *backend_cert;
	kp_key *other;                   /* a key that is not the backend's */
	kp_tls_conf *conf;
};

static struct fx *F;

/* The proxy: reads one whole frame from the backend, changes it as told, hands it to the
 * client byte by byte. */
struct proxy {
	kp_tls *t;
	enum tamper how;
	int at;                          /* the chunk (counted from 0 in this exchange) to hit */
	int chunks;                      /* chunk frames seen */
	uint8_t *pend, *prev;            /* the frame being read; the previous chunk frame */
	size_t pend_len, pend_pos, prev_len;
};

#define sh(...) tu_sh_in(F->dir, F->bin, __VA_ARGS__)

/* The frame handed to the client: body with its length before it. */
static void frame_of(struct proxy *p, const uint8_t *body, size_t n)
{
	free(p->pend);
	p->pend = malloc(n + 4);
	assert_non_null(p->pend);
	p->pend[0] = (uint8_t)(n >> 24);
	p->pend[1] = (uint8_t)(n >> 16);
	p->pend[2] = (uint8_t)(n >> 8);
	p->pend[3] = (uint8_t)n;
	memcpy(p->pend + 4, body, n);
	p->pend_len = n + 4;
	p->pend_pos = 0;
}

static void frame_set(struct proxy *p, const struct kp_msg *m)
{
	uint8_t *body = NULL;
	size_t n = 0;

	assert_int_equal(kp_msg_encode(m, &body, &n), KP_SYNC_OK);
	frame_of(p, body, n);
	free(body);
}

/* The manifest re-signed by another key. */
static void manifest_other_key(struct proxy *p, struct kp_msg *m)
{
	struct kp_snap_manifest man;
	uint8_t *cose = NULL;
	size_t n = 0;
	char err[256];

	assert_int_equal(kp_snap_manifest_open(F->backend_cert, m->bundle.p, m->bundle.n, "T-A", 0,
	                                       &man, err, sizeof(err)), KP_SYNC_OK);
	assert_int_equal(kp_snap_manifest_sign(&man, F->other, &cose, &n), KP_SYNC_OK);
	m->bundle.p = cose;
	m->bundle.n = n;
	frame_set(p, m);
	free(cose);
	kp_snap_manifest_free(&man);
}

/* A chunk frame, changed as told; returns nonzero to cut the connection instead. */
static int chunk_tamper(struct proxy *p, struct kp_msg *m)
{
	uint8_t *copy = NULL;
	int hit = p->chunks++ == p->at, rc = 0;

	if (!hit || p->how == T_NONE)
		goto keep;
	switch (p->how) {
	case T_CUT:
		rc = KP_TLS_E_CLOSED;
		break;
	case T_REPEAT:                   /* the chunk before, again */
		assert_non_null(p->prev);
		free(p->pend);
		p->pend = malloc(p->prev_len);
		memcpy(p->pend, p->prev, p->prev_len);
		p->pend_len = p->prev_len;
		return 0;
	case T_NEXT_INDEX:               /* out of order: labelled as the next one */
		m->index++;
		frame_set(p, m);
		break;
	case T_TRUNCATE:
		m->data.n--;
		frame_set(p, m);
		break;
	case T_FLIP:
		copy = malloc(m->data.n);
		memcpy(copy, m->data.p, m->data.n);
		copy[m->data.n / 2] ^= 0x01;
		m->data.p = copy;
		frame_set(p, m);
		free(copy);
		break;
	case T_OTHER_SNAP:
		m->snap[0] ^= 0xFF;
		frame_set(p, m);
		break;
	default:
		break;
	}
keep:
	free(p->prev);
	p->prev = malloc(p->pend_len);
	memcpy(p->prev, p->pend, p->pend_len);
	p->prev_len = p->pend_len;
	return rc;
}

static int proxy_fill(struct proxy *p, int timeout_ms)
{
	uint8_t *body = NULL;
	size_t n = 0;
	struct kp_msg m;
	int rc = kp_frame_read(p->t, &body, &n, timeout_ms);

	if (rc != 0)
		return rc;
	frame_of(p, body, n);
	if (kp_msg_decode(body, n, &m) == KP_SYNC_OK) {
		if (m.type == KP_MSG_CHUNK)
			rc = chunk_tamper(p, &m);
		else if (m.type == KP_MSG_MANIFEST && p->how == T_MANIFEST_OTHER_KEY)
			manifest_other_key(p, &m);
		kp_msg_clear(&m);
	}
	free(body);
	return rc;
}

static int proxy_read(void *ctx, void *buf, size_t len, int timeout_ms)
{
	struct proxy *p = ctx;

	if (p->pend_pos == p->pend_len) {
		int rc = proxy_fill(p, timeout_ms);

		if (rc != 0)
			return rc;
	}
	if (len > p->pend_len - p->pend_pos)
		return KP_SYNC_E_PROTOCOL;
	memcpy(buf, p->pend + p->pend_pos, len);
	p->pend_pos += len;
	return 0;
}

static int proxy_write(void *ctx, const void *buf, size_t len, int timeout_ms)
{
	struct proxy *p = ctx;

	return kp_tls_write_all(p->t, buf, len, timeout_ms);
}

/* One exchange of terminal `id` (store db) with the backend through the proxy. */
static int sync_via(const char *id, const char *db, int chunked, enum tamper how, int at,
                    struct kp_sync_stats *st)
{
	struct proxy p = { .how = how, .at = at };
	struct kp_sync_io io = { &p, proxy_read, proxy_write };
	struct kp_sync_source src;
	kp_store *s = NULL;
	kp_tls_conf *conf = NULL;
	char path[600], cert[600], key[600], ca[600], err[512], port[16];
	int fd = -1, rc;

	snprintf(path, sizeof(path), "%s/%s", F->dir, db);
	snprintf(cert, sizeof(cert), "%s/%s.crt", F->dir, id);
	snprintf(key, sizeof(key), "%s/%s.key", F->dir, id);
	snprintf(ca, sizeof(ca), "%s/ca.crt", F->dir);
	snprintf(port, sizeof(port), "%d", F->port);
	assert_int_equal(kp_tls_conf_new(&conf, KP_TLS_CLIENT, ca, cert, key, err, sizeof(err)), 0);
	assert_int_equal(kp_store_open(&s, path), KP_OK);
	kp_store_sync_source(s, &src);
	if (!chunked) {                  /* a terminal that predates chunked snapshots */
		src.snap_stage = NULL;
		src.snap_put = NULL;
		src.snap_read = NULL;
		src.snap_clear = NULL;
	}
	assert_int_equal(kp_tcp_connect("127.0.0.1", port, 3000, &fd), 0);
	assert_int_equal(kp_tls_handshake(&p.t, conf, fd, "backend", 3000, err, sizeof(err)), 0);
	rc = kp_sync_exchange(&io, id, F->backend_cert, &src, 3000, st, err, sizeof(err));
	if (rc != KP_SYNC_OK)
		print_message("sync %s (%s): %s\n", id, db, err);
	kp_tls_close(p.t);
	kp_store_close(s);
	kp_tls_conf_free(conf);
	free(p.pend);
	free(p.prev);
	return rc;
}

static uint64_t version_in(const char *db)
{
	char path[600];
	kp_store *s = NULL;
	uint64_t acked = 0, v = 0;

	snprintf(path, sizeof(path), "%s/%s", F->dir, db);
	assert_int_equal(kp_store_open(&s, path), KP_OK);
	assert_int_equal(kp_store_sync_state(s, &acked, &v, NULL), KP_OK);
	kp_store_close(s);
	return v;
}

static uint32_t staged_in(const char *db, uint32_t *n_chunks)
{
	char path[600];
	kp_store *s = NULL;
	uint8_t snap[KP_SHA256_LEN];
	uint32_t n = 0, staged = 0;

	snprintf(path, sizeof(path), "%s/%s", F->dir, db);
	assert_int_equal(kp_store_open(&s, path), KP_OK);
	assert_int_equal(kp_store_snapshot_staged(s, snap, &n, &staged), KP_OK);
	kp_store_close(s);
	if (n_chunks != NULL)
		*n_chunks = n;
	return staged;
}

/* The rows a bundle carries, as text, one line per row, for comparing two terminals. */
static char *rows_in(const char *db)
{
	static const char *const q[] = {
		"SELECT 'deny', hex(token), reason FROM denylist ORDER BY token",
		"SELECT 'ent', id, hex(token), product_id, rides_left, valid_from, valid_until"
		" FROM entitlements ORDER BY id",
		"SELECT 'op', id, name FROM operators ORDER BY id",
		"SELECT 'product', id, name FROM products ORDER BY id",
	};
	char path[600], *out = NULL;
	size_t len = 0;
	FILE *mem = open_memstream(&out, &len);
	sqlite3 *h = NULL;

	snprintf(path, sizeof(path), "%s/%s", F->dir, db);
	assert_int_equal(sqlite3_open(path, &h), SQLITE_OK);
	for (size_t i = 0; i < sizeof(q) / sizeof(q[0]); i++) {
		sqlite3_stmt *st = NULL;

		assert_int_equal(sqlite3_prepare_v2(h, q[i], -1, &st, NULL), SQLITE_OK);
		while (sqlite3_step(st) == SQLITE_ROW) {
			for (int c = 0; c < sqlite3_column_count(st); c++)
				fprintf(mem, "%s|", (const char *)sqlite3_column_text(st, c));
			fputc('\n', mem);
		}
		sqlite3_finalize(st);
	}
	sqlite3_close(h);
	fclose(mem);
	return out;
}

static void backend_change(const char *op_name)
{
	char path[600];
	kp_bstore *s = NULL;

	snprintf(path, sizeof(path), "%s/backend.db", F->dir);
	assert_int_equal(kp_bstore_open(&s, path), KP_BE_OK);
	/* the catalogue: a change a delta cannot say, so a full snapshot is due */
	assert_int_equal(kp_bstore_put_operator(s, "OP-C", op_name), KP_BE_OK);
	kp_bstore_close(s);
}

static void fill_backend(void)
{
	const char *ops[] = { "OP-A" };
	char path[600];
	kp_bstore *s = NULL;
	uint8_t t[KP_TOKEN_LEN];
	int64_t ent = 0;

	snprintf(path, sizeof(path), "%s/backend.db", F->dir);
	assert_int_equal(kp_bstore_open(&s, path), KP_BE_OK);
	assert_int_equal(kp_bstore_put_operator(s, "OP-A", "Operator A"), KP_BE_OK);
	assert_int_equal(kp_bstore_put_operator(s, "OP-B", "Operator B"), KP_BE_OK);
	assert_int_equal(kp_bstore_put_product(s, "R10", "Ten rides", 10, ops, 1), KP_BE_OK);
	for (int i = 0; i < N_DENY; i++) {
		memset(t, 0, sizeof(t));
		t[0] = 0xD0;
		t[1] = (uint8_t)(i >> 8);
		t[2] = (uint8_t)i;
		assert_int_equal(kp_bstore_register_card(s, t, "card", 1795662000000LL), KP_BE_OK);
		assert_int_equal(kp_bstore_denylist(s, t, "lost", 1), KP_BE_OK);
	}
	for (int i = 0; i < N_ENT; i++) {
		memset(t, 0, sizeof(t));
		t[0] = 0xE0;
		t[1] = (uint8_t)i;
		assert_int_equal(kp_bstore_register_card(s, t, "card", 1795662000000LL), KP_BE_OK);
		assert_int_equal(kp_bstore_sell(s, t, "R10", 0, 4102444800000LL, 1795662000000LL,
		                                &ent), KP_BE_OK);
	}
	kp_bstore_close(s);
}

static void start_backend(void)
{
	F->backend = tu_backend_start(F->dir, F->bin, 0, 3000, &F->port);
}

static void stop_backend(void)
{
	kill(F->backend, SIGTERM);
	waitpid(F->backend, NULL, 0);
	F->backend = 0;
}

static int setup(void **state)
{
	char path[600];

	F = calloc(1, sizeof(*F));
	tu_tmpdir(F->dir, sizeof(F->dir));
	snprintf(F->bin, sizeof(F->bin), "%s", tu_bin_abs());
	if (sh("\"$CTL\" ca create --key ca.key --cert ca.crt >/dev/null && "
	       "\"$CTL\" backend create --ca-key ca.key --ca-cert ca.crt --key backend.key "
	       "--cert backend.crt >/dev/null && "
	       "\"$CTL\" terminal create --ca-key ca.key --ca-cert ca.crt --id T-A --key T-A.key "
	       "--cert T-A.crt >/dev/null && "
	       "\"$CTL\" terminal create --ca-key ca.key --ca-cert ca.crt --id T-B --key T-B.key "
	       "--cert T-B.crt >/dev/null") != 0)
		return -1;
	fill_backend();
	if (sh("\"$CTL\" backend terminal add backend.db T-A --operator OP-A >/dev/null && "
	       "\"$CTL\" backend terminal add backend.db T-B --operator OP-B >/dev/null") != 0)
		return -1;
	snprintf(path, sizeof(path), "%s/backend.crt", F->dir);
	if (kp_cert_load(&F->backend_cert, path) != 0 || kp_key_generate(&F->other) != 0)
		return -1;
	setenv("KIPPU_BACKEND_SNAPSHOT_CHUNK", "2048", 1);
	setenv("KIPPU_BACKEND_AUDITOR", "0", 1);
	start_backend();
	*state = F;
	return 0;
}

static int teardown(void **state)
{
	(void)state;
	stop_backend();
	kp_cert_free(F->backend_cert);
	kp_key_free(F->other);
	tu_rmdir(F->dir);
	free(F);
	F = NULL;
	return 0;
}

/* A new terminal takes the snapshot in chunks; a terminal that predates them takes the
 * single-frame bundle; both hold the same rows. The staging area is empty afterwards. */
static void test_snapshot_in_chunks_equals_bundle(void **state)
{
	struct kp_sync_stats st;
	uint32_t n = 0;
	char *a, *b;

	(void)state;
	assert_int_equal(sync_via("T-A", "chunked.db", 1, T_NONE, 0, &st), KP_SYNC_OK);
	assert_true(st.snapshot_applied);
	assert_true(st.snapshot_chunks >= 8);
	assert_int_equal(st.snapshot_resumed, 0);
	assert_int_equal(staged_in("chunked.db", &n), 0);
	assert_int_equal(n, 0);
	assert_int_equal(sync_via("T-B", "old.db", 0, T_NONE, 0, &st), KP_SYNC_OK);
	assert_true(st.bundle_applied);
	assert_false(st.snapshot_applied);
	assert_int_equal(version_in("old.db"), version_in("chunked.db"));
	a = rows_in("chunked.db");
	b = rows_in("old.db");
	assert_true(tu_count(a, "\n") > N_DENY + N_ENT);
	assert_string_equal(a, b);
	free(a);
	free(b);
	/* up to date: nothing more */
	assert_int_equal(sync_via("T-A", "chunked.db", 1, T_NONE, 0, &st), KP_SYNC_OK);
	assert_false(st.bundle_applied);
	/* a change since: a fetch from nothing gets the state now, not the snapshot held */
	backend_change("Operator C fresh");
	assert_int_equal(sync_via("T-A", "fresh.db", 1, T_NONE, 0, &st), KP_SYNC_OK);
	assert_true(st.snapshot_applied);
	assert_true(version_in("fresh.db") > version_in("chunked.db"));
}

/* Cut after k chunks: nothing applied, k chunks staged; the next sync fetches the rest only
 * and applies the whole. */
static void test_cut_after_k_chunks_resumes(void **state)
{
	static const int ks[] = { 0, 1, 5 };
	struct kp_sync_stats st;
	uint32_t n = 0;
	char name[32];

	(void)state;
	assert_int_equal(sync_via("T-A", "cut.db", 1, T_NONE, 0, &st), KP_SYNC_OK);
	for (size_t i = 0; i < sizeof(ks) / sizeof(ks[0]); i++) {
		uint64_t before = version_in("cut.db");

		snprintf(name, sizeof(name), "Operator C %zu", i);
		backend_change(name);
		assert_int_not_equal(sync_via("T-A", "cut.db", 1, T_CUT, ks[i], &st), KP_SYNC_OK);
		assert_false(st.bundle_applied);
		assert_int_equal(version_in("cut.db"), before);
		assert_int_equal(staged_in("cut.db", &n), (uint32_t)ks[i]);
		assert_true(n > (uint32_t)ks[i]);
		assert_int_equal(sync_via("T-A", "cut.db", 1, T_NONE, 0, &st), KP_SYNC_OK);
		assert_true(st.snapshot_applied);
		assert_int_equal(st.snapshot_resumed, (uint32_t)ks[i]);
		assert_int_equal(st.snapshot_chunks, n - (uint32_t)ks[i]);
		assert_true(version_in("cut.db") > before);
		assert_int_equal(staged_in("cut.db", NULL), 0);
	}
}

/* A chunk repeated, out of order, truncated, altered or of another snapshot, and a
 * manifest signed by another key: refused, the staged chunks and the state unchanged; a
 * clean sync then completes. */
static void test_bad_chunks_refused_state_unchanged(void **state)
{
	static const enum tamper hows[] = { T_REPEAT, T_NEXT_INDEX, T_TRUNCATE, T_FLIP,
	                                    T_OTHER_SNAP, T_MANIFEST_OTHER_KEY };
	struct kp_sync_stats st;
	char name[32], *rows;

	(void)state;
	assert_int_equal(sync_via("T-A", "bad.db", 1, T_NONE, 0, &st), KP_SYNC_OK);
	for (size_t i = 0; i < sizeof(hows) / sizeof(hows[0]); i++) {
		uint64_t before = version_in("bad.db");
		uint32_t good = hows[i] == T_MANIFEST_OTHER_KEY ? 2 : 3;

		snprintf(name, sizeof(name), "Operator C bad %zu", i);
		backend_change(name);
		rows = rows_in("bad.db");
		/* two chunks staged first, so "unchanged" is not merely "empty" */
		assert_int_not_equal(sync_via("T-A", "bad.db", 1, T_CUT, 2, &st), KP_SYNC_OK);
		assert_int_equal(staged_in("bad.db", NULL), 2);
		/* chunk 2 passes, chunk 3 is the bad one (the manifest: nothing fetched) */
		assert_int_not_equal(sync_via("T-A", "bad.db", 1, hows[i], 1, &st), KP_SYNC_OK);
		assert_false(st.bundle_applied);
		assert_int_equal(version_in("bad.db"), before);
		assert_int_equal(staged_in("bad.db", NULL), good);
		{
			char *now = rows_in("bad.db");

			assert_string_equal(now, rows);
			free(now);
		}
		free(rows);
		assert_int_equal(sync_via("T-A", "bad.db", 1, T_NONE, 0, &st), KP_SYNC_OK);
		assert_true(st.snapshot_applied);
		assert_int_equal(st.snapshot_resumed, good);
	}
}

/* A newer snapshot (the backend restarted after a change: its cache is gone) replaces the
 * staged one whole: the fetch starts again at chunk 0. */
static void test_newer_manifest_replaces_staging(void **state)
{
	struct kp_sync_stats st;
	uint8_t snap[KP_SHA256_LEN], snap2[KP_SHA256_LEN];
	uint32_t n = 0, staged = 0;
	char path[600];
	kp_store *s = NULL;

	(void)state;
	assert_int_equal(sync_via("T-A", "newer.db", 1, T_NONE, 0, &st), KP_SYNC_OK);
	backend_change("Operator C newer 1");
	assert_int_not_equal(sync_via("T-A", "newer.db", 1, T_CUT, 3, &st), KP_SYNC_OK);
	snprintf(path, sizeof(path), "%s/newer.db", F->dir);
	assert_int_equal(kp_store_open(&s, path), KP_OK);
	assert_int_equal(kp_store_snapshot_staged(s, snap, &n, &staged), KP_OK);
	kp_store_close(s);
	assert_int_equal(staged, 3);
	stop_backend();
	backend_change("Operator C newer 2");
	start_backend();
	assert_int_not_equal(sync_via("T-A", "newer.db", 1, T_CUT, 1, &st), KP_SYNC_OK);
	assert_int_equal(st.snapshot_resumed, 0);
	assert_int_equal(kp_store_open(&s, path), KP_OK);
	assert_int_equal(kp_store_snapshot_staged(s, snap2, &n, &staged), KP_OK);
	kp_store_close(s);
	assert_int_equal(staged, 1);
	assert_memory_not_equal(snap, snap2, sizeof(snap));
	assert_int_equal(sync_via("T-A", "newer.db", 1, T_NONE, 0, &st), KP_SYNC_OK);
	assert_true(st.snapshot_applied);
	assert_int_equal(staged_in("newer.db", NULL), 0);
}

/* The store's staging area on its own: chunks in order, each once, for the snapshot staged. */
static void test_staging_refuses_what_does_not_belong(void **state)
{
	struct kp_sync_source src;
	uint8_t a[KP_SHA256_LEN], b[KP_SHA256_LEN], data[16] = { 1 }, *whole = NULL;
	uint32_t next = 9, n = 0;
	size_t len = 0;
	char path[600];
	kp_store *s = NULL;

	(void)state;
	memset(a, 0xA1, sizeof(a));
	memset(b, 0xB2, sizeof(b));
	snprintf(path, sizeof(path), "%s/stage.db", F->dir);
	assert_int_equal(kp_store_open(&s, path), KP_OK);
	kp_store_sync_source(s, &src);
	assert_int_equal(src.snap_stage(s, a, 3, &next), KP_OK);
	assert_int_equal(next, 0);
	assert_int_equal(src.snap_put(s, a, 1, data, sizeof(data)), KP_SYNC_E_PROTOCOL);
	assert_int_equal(src.snap_put(s, a, 0, data, sizeof(data)), KP_OK);
	assert_int_equal(src.snap_put(s, a, 0, data, sizeof(data)), KP_SYNC_E_PROTOCOL);
	assert_int_equal(src.snap_put(s, b, 1, data, sizeof(data)), KP_SYNC_E_PROTOCOL);
	assert_int_equal(src.snap_put(s, a, 3, data, sizeof(data)), KP_SYNC_E_PROTOCOL);
	assert_int_equal(src.snap_read(s, a, &whole, &len), KP_SYNC_E_PROTOCOL);
	assert_int_equal(src.snap_put(s, a, 1, data, sizeof(data)), KP_OK);
	assert_int_equal(src.snap_put(s, a, 2, data, 5), KP_OK);
	assert_int_equal(src.snap_read(s, a, &whole, &len), KP_OK);
	assert_int_equal(len, 2 * sizeof(data) + 5);
	free(whole);
	/* the same snapshot again: resumed where it is */
	assert_int_equal(src.snap_stage(s, a, 3, &next), KP_OK);
	assert_int_equal(next, 3);
	/* another one: the staged chunks are dropped */
	assert_int_equal(src.snap_stage(s, b, 2, &next), KP_OK);
	assert_int_equal(next, 0);
	assert_int_equal(kp_store_snapshot_staged(s, a, &n, &next), KP_OK);
	assert_int_equal(n, 2);
	assert_int_equal(next, 0);
	assert_int_equal(src.snap_clear(s), KP_OK);
	assert_int_equal(kp_store_snapshot_staged(s, a, &n, &next), KP_OK);
	assert_int_equal(n, 0);
	kp_store_close(s);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_snapshot_in_chunks_equals_bundle),
		cmocka_unit_test(test_cut_after_k_chunks_resumes),
		cmocka_unit_test(test_bad_chunks_refused_state_unchanged),
		cmocka_unit_test(test_newer_manifest_replaces_staging),
		cmocka_unit_test(test_staging_refuses_what_does_not_belong),
	};

	return cmocka_run_group_tests(tests, setup, teardown);
}
