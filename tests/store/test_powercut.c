/* SPDX-License-Identifier: Apache-2.0 */
/* Power cuts and I/O faults under the terminal's and the backend's stores, with the crash
 * VFS (tests/store/crashvfs.h) in the manner of SQLite's own crash tests.
 *
 * Power cuts: a dry run counts the VFS ops (writes, syncs, truncates of the database and
 * its -wal) of a fixed workload: real taps through the tap engine, with checkpoints as at
 * a stop and a clean close; and, for the backend, real batches through its ingest over
 * several connections. Then, for every op of that run (and again with other random
 * subsets until there are at least 200 cuts), a child runs the same workload from the same
 * database over the crash VFS, which cuts the power at that op (every unsynced sector lost,
 * or a seeded random subset kept) and ends the child. The child reports each result the moment the HMI would show it (each batch the
 * moment the server would acknowledge it) on a pipe, and the parent reopens the files with
 * the normal VFS and holds the store to it.
 *
 * Faults: the same VFS fails one chosen op (or every write, as a full disk) inside a tap's
 * COMMIT, a checkpoint, or an ingest's COMMIT. The operation must fail whole with a clear
 * error, and the next one after the fault clears must succeed and chain on.
 *
 * KP_POWERCUT_SEED=n picks another seed for the random subsets (the seed is printed). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>
#include <time.h>

#include <cmocka.h>
#include <sqlite3.h>

#include "kp_backend.h"
#include "kp_terminal.h"
#include "crashvfs.h"
#include "testutil.h"

#define T0 1795000000000LL            /* 2026-11-18, a fixed "now" */
#define TID "CUT-1"
#define CARDS 6                       /* card CARDS (the 7th) holds nothing */
#define RIDES 1000
#define TAPS 20                       /* taps per terminal run */
#define IDLE_EVERY 5                  /* a checkpoint every this many taps, as at a stop */
#define MIN_CUTS 200
#define CUT_EXIT 77                   /* the child's exit status after a power cut */

enum phase { PH_OPEN = 1, PH_TAP, PH_IDLE, PH_CLOSE, PH_SEEN, PH_INGEST };
static const char *const phase_names[] = {
	"?", "open", "tap", "checkpoint", "close", "terminal seen", "ingest",
};

static char dir[256], term_db[300], be_db[300];
static uint8_t token_key[KP_TOKEN_KEY_LEN];
static kp_key *key;
static kp_cert *cert;
static unsigned seed = 1;
static char ctx[256];                 /* what a failed check names: cut point, mode, seed */

/* The pristine databases every run starts from. */
static uint8_t *term_image, *be_image;
static size_t term_image_len, be_image_len;

/* The terminal's records (from a reference run), as the backend's server hands them to
 * its store: signature checked and payload decoded once here, since that happens before
 * the store and the store is what a power cut tests. */
static uint8_t *rec_cose[TAPS];
static struct kp_ingest ing[TAPS];
static size_t n_recs;

/* What the HMI showed for one tap. */
struct shown {
	uint64_t seq;
	int32_t kind;
	int32_t pad;
	int64_t entitlement;
	int64_t left;
};

#define check(cond) \
	do { if (!(cond)) fail_msg("%s: check failed: %s", ctx, #cond); } while (0)

static void card_token(int i, uint8_t token[KP_TOKEN_LEN])
{
	uint8_t idm[8] = { 0x01, 0x2E, 0x50, 0x43, 0, 0, 0, (uint8_t)i };

	kp_token_derive(token_key, "felica", idm, 8, token);
}

static void terminal_cfg(struct kp_terminal_cfg *cfg)
{
	kp_terminal_cfg_defaults(cfg);
	snprintf(cfg->terminal_id, sizeof(cfg->terminal_id), TID);
	snprintf(cfg->operator_id, sizeof(cfg->operator_id), "OP-A");
	cfg->double_tap_window_ms = 60000;
}

static uint8_t *slurp(const char *path, size_t *len)
{
	FILE *fp = fopen(path, "rb");
	uint8_t *buf = NULL;
	long n;

	assert_non_null(fp);
	assert_int_equal(fseek(fp, 0, SEEK_END), 0);
	n = ftell(fp);
	assert_true(n > 0);
	rewind(fp);
	buf = malloc((size_t)n);
	assert_non_null(buf);
	assert_int_equal(fread(buf, 1, (size_t)n, fp), (size_t)n);
	fclose(fp);
	*len = (size_t)n;
	return buf;
}

/* The database back to its pristine bytes, with no -wal or -shm beside it. */
static void restore(const char *db, const uint8_t *image, size_t len)
{
	char side[320];
	FILE *fp = fopen(db, "wb");

	assert_non_null(fp);
	assert_int_equal(fwrite(image, 1, len, fp), len);
	assert_int_equal(fclose(fp), 0);
	snprintf(side, sizeof(side), "%s-wal", db);
	unlink(side);
	snprintf(side, sizeof(side), "%s-shm", db);
	unlink(side);
}

/* ---- the workloads (run in children: no cmocka here, only exit codes) ---- */

/* Tap i: cards in turn, a rider who taps twice now and then (the double-tap window), and
 * a card that holds nothing. */
static void tap_of(int i, int *card, int64_t *now)
{
	*card = i % 6 == 5 ? ((i - 1) * 3) % (CARDS + 1) : (i * 3) % (CARDS + 1);
	*now = T0 + (int64_t)i * 20000;
}

static void term_run(const char *db, int report_fd)
{
	kp_store *s = NULL;
	kp_tap_engine *e = NULL;
	struct kp_terminal_cfg cfg;

	terminal_cfg(&cfg);
	crashvfs_phase(PH_OPEN);
	if (kp_store_open(&s, db) != KP_OK || kp_tap_engine_open(&e, s, &cfg, key, token_key) != KP_OK)
		_exit(3);
	for (int i = 0; i < TAPS; i++) {
		uint8_t token[KP_TOKEN_LEN];
		struct kp_tap_outcome o;
		struct shown sh;
		int64_t now;
		int card;

		tap_of(i, &card, &now);
		card_token(card, token);
		crashvfs_phase(PH_TAP);
		if (kp_tap_decide(e, token, now, &o) != KP_OK)
			_exit(4);
		/* The HMI shows the result now: from here on it must survive. */
		memset(&sh, 0, sizeof(sh));
		sh.seq = o.seq;
		sh.kind = (int32_t)o.kind;
		sh.entitlement = o.entitlement;
		sh.left = o.rides_left;
		if (report_fd >= 0 && write(report_fd, &sh, sizeof(sh)) != sizeof(sh))
			_exit(5);
		crashvfs_phase(PH_IDLE);
		if (i % IDLE_EVERY == IDLE_EVERY - 1 && kp_store_idle(s) != KP_OK)
			_exit(6);
	}
	crashvfs_phase(PH_CLOSE);
	kp_tap_engine_close(e);
	kp_store_close(s);
}

/* Batches of 1 to 3 records, three to a connection (each connection opens the store, as
 * the server's do), and one batch sent twice. */
static const size_t batch_sizes[] = { 1, 2, 1, 3 };
#define BATCHES_PER_CONN 3
#define RESENT_BATCH 2

static int be_ingest(kp_bstore *b, size_t from, size_t n, uint64_t *acked)
{
	uint64_t refused = 0;
	char reason[128];
	int rc = kp_bstore_ingest(b, TID, &ing[from], n, T0 + 86400000, acked, &refused, reason,
	                          sizeof(reason));

	return rc == KP_BE_OK && refused != 0 ? KP_BE_E_INVAL : rc;
}

static void be_run(const char *db, int report_fd)
{
	const uint8_t *der = NULL;
	size_t der_len = 0, next = 0;
	int batch = 0;

	if (kp_cert_der(cert, &der, &der_len) != 0)
		_exit(3);
	while (next < n_recs) {
		kp_bstore *b = NULL;
		uint64_t acked = 0;

		crashvfs_phase(PH_OPEN);
		if (kp_bstore_open(&b, db) != KP_BE_OK)
			_exit(3);
		crashvfs_phase(PH_SEEN);
		if (kp_bstore_terminal_seen(b, TID, der, der_len, T0, &acked) != KP_BE_OK ||
		    acked != next)
			_exit(4);
		for (int k = 0; k < BATCHES_PER_CONN && next < n_recs; k++, batch++) {
			size_t n = batch_sizes[batch % 4];

			if (n > n_recs - next)
				n = n_recs - next;
			crashvfs_phase(PH_INGEST);
			for (int again = 0; again <= (batch == RESENT_BATCH); again++) {
				if (be_ingest(b, next, n, &acked) != KP_BE_OK || acked != next + n)
					_exit(5);
				/* The server sends the ACK now: from here on the records must survive. */
				if (report_fd >= 0 && write(report_fd, &acked, sizeof(acked)) != sizeof(acked))
					_exit(6);
			}
			next += n;
		}
		crashvfs_phase(PH_CLOSE);
		kp_bstore_close(b);
	}
}

/* ---- fixtures ---- */

static int rec_collect(const struct kp_journal_row *row, void *arg)
{
	(void)arg;
	if (n_recs == TAPS)
		return -1;
	rec_cose[n_recs] = malloc(row->cose_len);
	if (rec_cose[n_recs] == NULL)
		return -1;
	memcpy(rec_cose[n_recs], row->cose, row->cose_len);
	ing[n_recs].cose = rec_cose[n_recs];
	ing[n_recs].cose_len = row->cose_len;
	n_recs++;
	return 0;
}

/* The records a real terminal journaled, checked as the backend's server checks them. */
static void make_records(void)
{
	kp_store *s = NULL;

	restore(term_db, term_image, term_image_len);
	term_run(term_db, -1);
	assert_int_equal(kp_store_open(&s, term_db), KP_OK);
	assert_int_equal(kp_journal_foreach(s, rec_collect, NULL), 0);
	kp_store_close(s);
	assert_int_equal(n_recs, TAPS);
	for (size_t i = 0; i < n_recs; i++) {
		struct kp_ingest *in = &ing[i];

		assert_int_equal(kp_cose_verify1(cert, in->cose, in->cose_len, &in->payload,
		                                 &in->payload_len, NULL, 0), 0);
		in->sig_ok = 1;
		in->decode_rc = kp_record_decode(in->payload, in->payload_len, &in->rec);
		assert_int_equal(in->decode_rc, 0);
		assert_int_equal(kp_sha256(in->payload, in->payload_len, in->hash), 0);
	}
}

static void make_terminal_store(void)
{
	kp_store *s = NULL;
	const char *ops[] = { "OP-A" };
	char *pem;
	char path[300];

	snprintf(path, sizeof(path), "%s/t.crt", dir);
	pem = tu_read(path);
	assert_non_null(pem);
	assert_int_equal(kp_store_open(&s, term_db), KP_OK);
	assert_int_equal(kp_store_begin(s), KP_OK);
	assert_int_equal(kp_store_put_operator(s, "OP-A", "A"), KP_OK);
	assert_int_equal(kp_store_put_product(s, "P", "many rides", RIDES, ops, 1), KP_OK);
	assert_int_equal(kp_store_meta_set(s, "terminal_cert", pem), KP_OK);
	assert_int_equal(kp_store_meta_set(s, "terminal_id", TID), KP_OK);
	for (int i = 0; i < CARDS; i++) {
		struct kp_entitlement e = { .id = 1 + i, .rides_left = RIDES,
		                            .valid_from_ms = 0, .valid_until_ms = T0 * 2 };

		card_token(i, e.token);
		snprintf(e.product, sizeof(e.product), "P");
		assert_int_equal(kp_store_put_entitlement(s, &e), KP_OK);
	}
	assert_int_equal(kp_store_commit(s), KP_OK);
	kp_store_close(s);
	free(pem);
	term_image = slurp(term_db, &term_image_len);
}

/* The same cards and rides sold at the backend: entitlement i + 1 on both ends. */
static void make_backend_store(void)
{
	kp_bstore *b = NULL;
	const char *ops[] = { "OP-A" };

	assert_int_equal(kp_bstore_open(&b, be_db), KP_BE_OK);
	assert_int_equal(kp_bstore_put_operator(b, "OP-A", "A"), KP_BE_OK);
	assert_int_equal(kp_bstore_put_product(b, "P", "many rides", RIDES, ops, 1), KP_BE_OK);
	assert_int_equal(kp_bstore_terminal_add(b, TID, "OP-A", T0, NULL), KP_BE_OK);
	for (int i = 0; i < CARDS; i++) {
		uint8_t token[KP_TOKEN_LEN];
		int64_t id = 0;

		card_token(i, token);
		assert_int_equal(kp_bstore_register_card(b, token, "rider", T0), KP_BE_OK);
		assert_int_equal(kp_bstore_sell(b, token, "P", 0, T0 * 2, T0, &id), KP_BE_OK);
		assert_int_equal(id, 1 + i);
	}
	kp_bstore_close(b);
	be_image = slurp(be_db, &be_image_len);
}

static int setup(void **state)
{
	kp_key *ca = NULL;
	kp_cert *ca_cert = NULL;
	char ca_path[300], cert_path[300];
	const char *env = getenv("KP_POWERCUT_SEED");
	int64_t t0_s = T0 / 1000;

	(void)state;
	if (env != NULL)
		seed = (unsigned)strtoul(env, NULL, 10);
	/* What survives a cut is the crash VFS's decision, not the disk's: on tmpfs the
	 * parent's own fsyncs (reopening, the tap after power is back) cost nothing. */
	if (getenv("TMPDIR") == NULL && access("/dev/shm", W_OK) == 0)
		setenv("TMPDIR", "/dev/shm", 0);
	tu_tmpdir(dir, sizeof(dir));
	snprintf(term_db, sizeof(term_db), "%s/terminal.db", dir);
	snprintf(be_db, sizeof(be_db), "%s/backend.db", dir);
	snprintf(ca_path, sizeof(ca_path), "%s/ca.crt", dir);
	snprintf(cert_path, sizeof(cert_path), "%s/t.crt", dir);
	memset(token_key, 0x5C, sizeof(token_key));
	if (kp_key_generate(&key) || kp_key_generate(&ca) ||
	    kp_cert_create_ca_validity(ca, "powercut CA", t0_s - 86400, t0_s + 86400 * 365,
	                               ca_path) || kp_cert_load(&ca_cert, ca_path) ||
	    kp_cert_issue_validity(ca, ca_cert, key, TID, t0_s - 86400, t0_s + 86400 * 365,
	                           cert_path) || kp_cert_load(&cert, cert_path))
		return -1;
	kp_key_free(ca);
	kp_cert_free(ca_cert);
	make_terminal_store();
	make_backend_store();
	make_records();
	print_message("power-cut seed %u (KP_POWERCUT_SEED)\n", seed);
	return 0;
}

static int teardown(void **state)
{
	(void)state;
	crashvfs_unregister();
	for (size_t i = 0; i < n_recs; i++)
		free(rec_cose[i]);
	free(term_image);
	free(be_image);
	kp_key_free(key);
	kp_cert_free(cert);
	tu_rmdir(dir);
	return 0;
}

/* Each test has files of its own, so that one that fails (and leaves a handle open) does
 * not disturb the next. */
static int own_files(void **state)
{
	static int n;

	(void)state;
	n++;
	snprintf(term_db, sizeof(term_db), "%s/terminal-%d.db", dir, n);
	snprintf(be_db, sizeof(be_db), "%s/backend-%d.db", dir, n);
	return 0;
}

/* The fault tests run the stores in this process over the crash VFS. */
static int over_crashvfs(void **state)
{
	own_files(state);
	return crashvfs_register(1) == SQLITE_OK ? 0 : -1;
}

static int back_to_unix(void **state)
{
	(void)state;
	crashvfs_unregister();
	return 0;
}

/* ---- power cuts ---- */

struct cut_run {
	const char *store;
	const char *db;
	const uint8_t *image;
	size_t image_len;
	void (*run)(const char *db, int report_fd);
	size_t report_size;              /* bytes per report */
	void (*verify)(const void *reports, size_t n);
};

/* Forks the workload over the crash VFS: a dry run (at 0) sends back its trace; a cut
 * run returns the reports the child made before the power failed. */
static void *fork_run(const struct cut_run *cr, uint64_t at, int keep_random, unsigned s,
                      size_t *n_bytes, int *status)
{
	int fds[2];
	uint8_t *buf = NULL;
	size_t len = 0, cap = 0;
	ssize_t got;
	pid_t pid;

	restore(cr->db, cr->image, cr->image_len);
	assert_int_equal(pipe(fds), 0);
	pid = fork();
	assert_true(pid >= 0);
	if (pid == 0) {
		close(fds[0]);
		if (crashvfs_register(1) != SQLITE_OK)
			_exit(2);
		if (at != 0)
			crashvfs_cut_at(at, keep_random, s, CUT_EXIT);
		cr->run(cr->db, at != 0 ? fds[1] : -1);
		if (at == 0) {
			size_t n = 0;
			const struct crashvfs_trace *t = crashvfs_trace(&n);

			if (write(fds[1], t, n * sizeof(*t)) != (ssize_t)(n * sizeof(*t)))
				_exit(7);
		}
		_exit(0);
	}
	close(fds[1]);
	do {
		if (cap - len < 4096) {
			cap = cap * 2 + 8192;
			buf = realloc(buf, cap);
			assert_non_null(buf);
		}
		got = read(fds[0], buf + len, cap - len);
		if (got > 0)
			len += (size_t)got;
	} while (got > 0);
	close(fds[0]);
	assert_int_equal(waitpid(pid, status, 0), pid);
	*n_bytes = len;
	return buf;
}

static const char *op_name(const struct crashvfs_trace *t)
{
	static const char *const names[4][4] = {
		[CRASHVFS_DB] = { NULL, "db write", "db sync", "db truncate" },
		[CRASHVFS_WAL] = { NULL, "wal write", "wal sync", "wal truncate" },
		[CRASHVFS_JOURNAL] = { NULL, "journal write", "journal sync", "journal truncate" },
	};

	return names[t->role & 3][t->op & 3] != NULL ? names[t->role & 3][t->op & 3] : "?";
}

static void cut_everywhere(const struct cut_run *cr)
{
	struct crashvfs_trace *trace;
	size_t len = 0, n_ops, n_points, in_commit = 0, commit_syncs = 0, random_kept = 0;
	int st = 0;
	struct timespec t0, t1;

	clock_gettime(CLOCK_MONOTONIC, &t0);
	trace = fork_run(cr, 0, 0, 0, &len, &st);
	assert_true(WIFEXITED(st) && WEXITSTATUS(st) == 0);
	n_ops = len / sizeof(*trace);
	assert_true(n_ops > 0);
	/* Every op once, and more passes with random subsets kept until there are enough. */
	n_points = n_ops;
	while (n_points < MIN_CUTS)
		n_points += n_ops;
	for (size_t k = 0; k < n_points; k++) {
		uint64_t at = 1 + k % n_ops;
		int keep_random = (int)((k / n_ops + k) & 1);
		unsigned s = seed * 1000003u + (unsigned)k;
		const struct crashvfs_trace *t = &trace[at - 1];
		void *reports;
		size_t n_bytes = 0;

		snprintf(ctx, sizeof(ctx), "%s: cut %zu of %zu at op %llu/%zu (%s in %s), %s, "
		         "seed %u", cr->store, k + 1, n_points, (unsigned long long)at, n_ops,
		         op_name(t), phase_names[t->phase % 7],
		         keep_random ? "random sectors kept" : "all unsynced lost", s);
		reports = fork_run(cr, at, keep_random, s, &n_bytes, &st);
		check(WIFEXITED(st) && WEXITSTATUS(st) == CUT_EXIT);
		check(n_bytes % cr->report_size == 0);
		cr->verify(reports, n_bytes / cr->report_size);
		free(reports);
		in_commit += t->phase == PH_TAP || t->phase == PH_INGEST || t->phase == PH_SEEN;
		commit_syncs += (t->phase == PH_TAP || t->phase == PH_INGEST) && t->op == CRASHVFS_SYNC;
		random_kept += (size_t)keep_random;
	}
	clock_gettime(CLOCK_MONOTONIC, &t1);
	print_message("%s: %zu power cuts over %zu ops (%zu inside COMMITs, %zu of them at the "
	              "commit's WAL sync; %zu with a random subset of sectors kept) in %.1f s\n",
	              cr->store, n_points, n_ops, in_commit, commit_syncs, random_kept,
	              (double)(t1.tv_sec - t0.tv_sec) + (t1.tv_nsec - t0.tv_nsec) / 1e9);
	free(trace);
}

struct tally {
	int64_t used[CARDS + 1];
	const struct shown *shown;
	size_t n_shown;
	uint64_t n;
};

/* The HMI showed it so: the same result, entitlement and rides left. */
static int as_shown(const struct kp_record *r, const struct shown *sh)
{
	const char *result = sh->kind == KP_TAP_ACCEPTED ? "accepted" :
	                     sh->kind == KP_TAP_ALREADY ? "already" : "refused";

	return strcmp(r->result, result) == 0 && r->entitlement == sh->entitlement &&
	       (sh->left < 0 || (r->has_left && r->left == sh->left));
}

/* Each record in turn: as shown if it was, and its rides counted to its entitlement. */
static int tally_row(const struct kp_journal_row *row, void *arg)
{
	struct tally *t = arg;
	struct kp_record r;

	if (kp_record_decode(row->payload, row->payload_len, &r) != 0 || r.seq != ++t->n)
		return -1;
	if (r.seq <= t->n_shown && !as_shown(&r, &t->shown[r.seq - 1]))
		return -2;
	if (strcmp(r.result, "accepted") != 0)
		return 0;
	if (r.entitlement < 1 || r.entitlement > CARDS)
		return -3;
	t->used[r.entitlement] += r.rides;
	return 0;
}

static void term_check(const void *reports, size_t n_shown)
{
	const struct shown *sh = reports;
	struct kp_terminal_cfg cfg;
	kp_store *s = NULL;
	kp_tap_engine *e = NULL;
	struct kp_tap_outcome o;
	struct tally t;
	uint64_t acked = 0, version = 0, head = 0, n_ok = 0, bad = 0;
	uint8_t token[KP_TOKEN_LEN];
	char err[256];

	for (size_t i = 0; i < n_shown; i++)
		check(sh[i].seq == i + 1);
	check(kp_store_open(&s, term_db) == KP_OK);
	check(kp_store_sync_state(s, &acked, &version, &head) == KP_OK);
	/* Every shown tap is there; at most the one being decided at the cut is too. */
	check(head >= n_shown && head <= n_shown + 1);
	/* Power is back: the terminal serves on, chained to what survived. */
	terminal_cfg(&cfg);
	check(kp_tap_engine_open(&e, s, &cfg, key, token_key) == KP_OK);
	card_token(0, token);
	check(kp_tap_decide(e, token, T0 + 86400000, &o) == KP_OK);
	check(o.seq == head + 1 && o.kind == KP_TAP_ACCEPTED);
	kp_tap_engine_close(e);
	check(kp_journal_verify(s, NULL, &n_ok, &bad, err, sizeof(err)) == 0);
	check(n_ok == head + 1);
	memset(&t, 0, sizeof(t));
	t.shown = sh;
	t.n_shown = n_shown;
	check(kp_journal_foreach(s, tally_row, &t) == 0);
	check(t.n == n_ok);
	for (int i = 0; i < CARDS; i++) {
		struct kp_entitlement ent;

		card_token(i, token);
		check(kp_store_get_entitlement(s, token, 1 + i, &ent) == KP_OK);
		check(ent.rides_left == RIDES - t.used[1 + i]);
	}
	kp_store_close(s);
}

static void test_terminal_power_cuts(void **state)
{
	struct cut_run cr = { "terminal", term_db, NULL, 0, term_run, sizeof(struct shown),
	                      term_check };

	(void)state;
	cr.image = term_image;
	cr.image_len = term_image_len;
	cut_everywhere(&cr);
}

/* One row of a backend report, by column. */
struct rows {
	size_t n;
	int64_t v[TAPS + 8][4];
	char result[TAPS + 8][16];
	const int *cols;                 /* the report's columns to keep as integers */
	int result_col;                  /* -1: none */
};

static int row_keep(void *arg, int ncol, const char *const *cols, const char *const *names)
{
	struct rows *r = arg;

	(void)names;
	if (r->n == sizeof(r->v) / sizeof(r->v[0]))
		return -1;
	for (int i = 0; i < 4 && r->cols[i] >= 0; i++)
		r->v[r->n][i] = r->cols[i] < ncol && cols[r->cols[i]] != NULL ?
		                strtoll(cols[r->cols[i]], NULL, 10) : -1;
	if (r->result_col >= 0)
		snprintf(r->result[r->n], sizeof(r->result[0]), "%s", cols[r->result_col]);
	r->n++;
	return 0;
}

static void be_report(kp_bstore *b, enum kp_report which, const int *cols, int result_col,
                      struct rows *r)
{
	memset(r, 0, sizeof(*r));
	r->cols = cols;
	r->result_col = result_col;
	/* at T0: nothing here may depend on today's date */
	check(kp_bstore_report_at(b, which, which == KP_REPORT_ENTITLEMENTS ? NULL : TID, T0,
	                          row_keep, r) == KP_BE_OK);
}

static void be_check(const void *reports, size_t n_acks)
{
	static const int terminal_cols[] = { 1, -1 };                 /* acked */
	static const int record_cols[] = { 1, 7, 8, -1 };             /* seq ent rides */
	static const int ent_cols[] = { 0, 3, 4, -1 };                /* ent bought used */
	const uint64_t *acks = reports;
	uint64_t last_ack = n_acks > 0 ? acks[n_acks - 1] : 0, held, acked = 0;
	int64_t used[CARDS + 1] = { 0 };
	const uint8_t *der = NULL;
	size_t der_len = 0;
	kp_bstore *b = NULL;
	struct rows *r = calloc(1, sizeof(*r));

	check(r != NULL);
	check(kp_bstore_open(&b, be_db) == KP_BE_OK);
	be_report(b, KP_REPORT_TERMINALS, terminal_cols, -1, r);
	held = r->n == 1 ? (uint64_t)r->v[0][0] : 0;
	/* Every acknowledged record is held, and the backend holds no gap. */
	check(held >= last_ack && held <= n_recs);
	be_report(b, KP_REPORT_RECORDS, record_cols, 3, r);
	check(r->n == held);
	for (size_t i = 0; i < r->n; i++) {
		const struct kp_record *c = &ing[i].rec;
		uint8_t *cose = NULL;
		size_t len = 0;

		check(r->v[i][0] == (int64_t)i + 1);
		check(strcmp(r->result[i], c->result) == 0);
		check(r->v[i][1] == c->entitlement);             /* "-" reads as 0 */
		check(r->v[i][2] == c->rides);
		check(kp_bstore_record_cose(b, TID, i + 1, &cose, &len) == KP_BE_OK);
		check(len == ing[i].cose_len && memcmp(cose, ing[i].cose, len) == 0);
		free(cose);
		if (strcmp(c->result, "accepted") == 0)
			used[c->entitlement] += c->rides;
	}
	/* Every entitlement's uses are the sum of the records held, no more, no less. */
	be_report(b, KP_REPORT_ENTITLEMENTS, ent_cols, -1, r);
	check(r->n == CARDS);
	for (size_t i = 0; i < r->n; i++)
		check(r->v[i][0] == (int64_t)i + 1 && r->v[i][1] == RIDES && r->v[i][2] == used[i + 1]);
	/* Power is back: the terminal connects, resends from what the backend holds, and the
	 * chain goes on. */
	check(kp_cert_der(cert, &der, &der_len) == 0);
	check(kp_bstore_terminal_seen(b, TID, der, der_len, T0, &acked) == KP_BE_OK);
	check(acked == held);
	if (held < n_recs) {
		check(be_ingest(b, held, n_recs - held, &acked) == KP_BE_OK);
		check(acked == n_recs);
	}
	kp_bstore_close(b);
	free(r);
}

static void test_backend_power_cuts(void **state)
{
	struct cut_run cr = { "backend", be_db, NULL, 0, be_run, sizeof(uint64_t), be_check };

	(void)state;
	cr.image = be_image;
	cr.image_len = be_image_len;
	cut_everywhere(&cr);
}

/* ---- faults ---- */

struct fault {
	const char *what;
	enum crashvfs_op op;
	enum crashvfs_role role;
	unsigned nth;                    /* of that op in the step, 1-based; 0 = the last */
	int rc;
	unsigned count;                  /* 0: every such op until cleared (a full disk) */
};

/* Inside the COMMIT of a tap (terminal) or of a batch (backend). */
static const struct fault commit_faults[] = {
	{ "first WAL write of the COMMIT", CRASHVFS_WRITE, CRASHVFS_WAL, 1, SQLITE_IOERR_WRITE, 1 },
	{ "third WAL write of the COMMIT", CRASHVFS_WRITE, CRASHVFS_WAL, 3, SQLITE_IOERR_WRITE, 1 },
	{ "last WAL write (the commit frame)", CRASHVFS_WRITE, CRASHVFS_WAL, 0, SQLITE_IOERR_WRITE, 1 },
	{ "WAL sync of the COMMIT", CRASHVFS_SYNC, CRASHVFS_WAL, 1, SQLITE_IOERR_FSYNC, 1 },
	{ "disk full from the COMMIT's second WAL write", CRASHVFS_WRITE, CRASHVFS_WAL, 2,
	  SQLITE_FULL, 0 },
};

/* Inside the terminal's checkpoint while idle. */
static const struct fault checkpoint_faults[] = {
	{ "checkpoint's WAL sync", CRASHVFS_SYNC, CRASHVFS_WAL, 1, SQLITE_IOERR_FSYNC, 1 },
	{ "checkpoint's second database write", CRASHVFS_WRITE, CRASHVFS_DB, 2, SQLITE_IOERR_WRITE, 1 },
	{ "checkpoint's database truncate", CRASHVFS_TRUNCATE, CRASHVFS_DB, 1, SQLITE_IOERR_TRUNCATE, 1 },
	{ "checkpoint's database sync", CRASHVFS_SYNC, CRASHVFS_DB, 1, SQLITE_IOERR_FSYNC, 1 },
	{ "database full at the checkpoint", CRASHVFS_WRITE, CRASHVFS_DB, 1, SQLITE_FULL, 0 },
};

#define N_OF(a) (sizeof(a) / sizeof((a)[0]))

/* f's op among ops from+1..to of the dry run just done. */
static uint64_t fault_op(const struct fault *f, uint64_t from, uint64_t to)
{
	uint64_t at = crashvfs_find(from, to, f->op, f->role, f->nth);

	check(at != 0);
	return at;
}

static void arm(const struct fault *f, uint64_t at)
{
	crashvfs_fail_at(at, f->count == 0 ? f->op : 0, f->rc, f->count);
}

/* The error the operator reads names the fault. */
static void check_reason(const struct fault *f, const char *msg)
{
	check(crashvfs_failed() >= 1);
	check(strstr(msg, f->rc == SQLITE_FULL ? "database or disk is full" : "disk I/O error") != NULL);
}

#define WARM_TAPS 4                   /* taps before the step a fault hits */

/* What a failed step must leave as it was. */
struct term_state {
	uint64_t head;
	uint8_t head_hash[KP_SHA256_LEN];
	int64_t journal, left, pending, recent;
};

static int last_hash(const struct kp_journal_row *row, void *arg)
{
	memcpy(arg, row->hash, KP_SHA256_LEN);
	return 0;
}

static void term_state(kp_store *s, struct term_state *ts)
{
	uint64_t acked = 0, version = 0;
	struct kp_entitlement ent;
	uint8_t token[KP_TOKEN_LEN];

	memset(ts, 0, sizeof(*ts));
	card_token(0, token);
	assert_int_equal(kp_store_sync_state(s, &acked, &version, &ts->head), KP_OK);
	assert_int_equal(kp_journal_foreach(s, last_hash, ts->head_hash), 0);
	assert_int_equal(kp_store_count(s, "journal", &ts->journal), KP_OK);
	assert_int_equal(kp_store_count(s, "pending_uses", &ts->pending), KP_OK);
	assert_int_equal(kp_store_count(s, "recent_taps", &ts->recent), KP_OK);
	assert_int_equal(kp_store_get_entitlement(s, token, 1, &ent), KP_OK);
	ts->left = ent.rides_left;
}

/* Card 0 taps once a minute (outside the double-tap window). */
static int tap_card0(kp_tap_engine *e, int i, struct kp_tap_outcome *o)
{
	uint8_t token[KP_TOKEN_LEN];

	card_token(0, token);
	return kp_tap_decide(e, token, T0 + (int64_t)i * 61000, o);
}

/* Opens the pristine terminal store over the crash VFS and taps WARM_TAPS times; returns
 * the op count before the step a fault is aimed at. */
static uint64_t term_warm(kp_store **s, kp_tap_engine **e)
{
	struct kp_terminal_cfg cfg;
	struct kp_tap_outcome o;

	restore(term_db, term_image, term_image_len);
	crashvfs_reset();
	terminal_cfg(&cfg);
	assert_int_equal(kp_store_open(s, term_db), KP_OK);
	assert_int_equal(kp_tap_engine_open(e, *s, &cfg, key, token_key), KP_OK);
	for (int i = 0; i < WARM_TAPS; i++) {
		assert_int_equal(tap_card0(*e, i, &o), KP_OK);
		assert_int_equal(o.kind, KP_TAP_ACCEPTED);
	}
	return crashvfs_ops();
}

/* The step: a tap, or a checkpoint while idle. */
static int term_step(kp_store *s, kp_tap_engine *e, enum phase step, struct kp_tap_outcome *o)
{
	return step == PH_TAP ? tap_card0(e, WARM_TAPS, o) : kp_store_idle(s);
}

static void term_fault(const struct fault *f, enum phase step)
{
	kp_store *s = NULL;
	kp_tap_engine *e = NULL;
	struct kp_tap_outcome o;
	struct term_state before, after;
	uint64_t from, at, n_ok = 0, bad = 0;
	char err[256];

	snprintf(ctx, sizeof(ctx), "terminal fault in a %s: %s", phase_names[step], f->what);
	/* A dry run finds the op: the same steps from the same bytes do the same ops. */
	from = term_warm(&s, &e);
	assert_int_equal(term_step(s, e, step, &o), KP_OK);
	at = fault_op(f, from, crashvfs_ops());
	kp_tap_engine_close(e);
	kp_store_close(s);

	assert_int_equal(term_warm(&s, &e), from);
	term_state(s, &before);
	arm(f, at);
	/* Refused with a reason (the HMI shows "not recorded"), and whole: nothing stays. */
	check(term_step(s, e, step, &o) == KP_E_DB);
	check_reason(f, kp_store_errmsg(s));
	term_state(s, &after);
	check(memcmp(&before, &after, sizeof(before)) == 0);
	crashvfs_fail_clear();
	/* The fault clears: the next tap is taken (a failed one opened no double-tap window)
	 * and chains on the head from before the fault. */
	assert_int_equal(tap_card0(e, WARM_TAPS + 1, &o), KP_OK);
	check(o.kind == KP_TAP_ACCEPTED && o.seq == before.head + 1 &&
	      o.rides_left == before.left - 1);
	check(kp_store_idle(s) == KP_OK);
	kp_tap_engine_close(e);
	kp_store_close(s);
	/* and so it stays after a restart */
	assert_int_equal(kp_store_open(&s, term_db), KP_OK);
	check(kp_journal_verify(s, NULL, &n_ok, &bad, err, sizeof(err)) == 0);
	check(n_ok == before.head + 1);
	term_state(s, &after);
	check(after.left == before.left - 1 && after.pending == before.pending + 1);
	kp_store_close(s);
}

static void test_terminal_faults(void **state)
{
	(void)state;
	for (size_t k = 0; k < N_OF(commit_faults); k++)
		term_fault(&commit_faults[k], PH_TAP);
	for (size_t k = 0; k < N_OF(checkpoint_faults); k++)
		term_fault(&checkpoint_faults[k], PH_IDLE);
}

/* Opens the pristine backend store over the crash VFS and ingests records 1..3. */
static uint64_t be_warm(kp_bstore **b)
{
	const uint8_t *der = NULL;
	size_t der_len = 0;
	uint64_t acked = 0;

	restore(be_db, be_image, be_image_len);
	crashvfs_reset();
	assert_int_equal(kp_cert_der(cert, &der, &der_len), 0);
	assert_int_equal(kp_bstore_open(b, be_db), KP_BE_OK);
	assert_int_equal(kp_bstore_terminal_seen(*b, TID, der, der_len, T0, &acked), KP_BE_OK);
	assert_int_equal(be_ingest(*b, 0, 3, &acked), KP_BE_OK);
	assert_int_equal(acked, 3);
	return crashvfs_ops();
}

/* Records held, and the uses merged into the entitlements. */
static void be_counts(kp_bstore *b, struct rows *r, int64_t *records, int64_t *used)
{
	static const int record_cols[] = { 1, -1 };
	static const int ent_cols[] = { 4, -1 };

	be_report(b, KP_REPORT_RECORDS, record_cols, -1, r);
	*records = (int64_t)r->n;
	be_report(b, KP_REPORT_ENTITLEMENTS, ent_cols, -1, r);
	*used = 0;
	for (size_t i = 0; i < r->n; i++)
		*used += r->v[i][0];
}

static void be_fault(const struct fault *f, struct rows *r)
{
	kp_bstore *b = NULL;
	uint64_t from, at, acked = 0;
	int64_t records0 = 0, used0 = 0, records = 0, used = 0;

	snprintf(ctx, sizeof(ctx), "backend fault in a batch: %s", f->what);
	from = be_warm(&b);
	assert_int_equal(be_ingest(b, 3, 4, &acked), KP_BE_OK);
	at = fault_op(f, from, crashvfs_ops());
	kp_bstore_close(b);

	assert_int_equal(be_warm(&b), from);
	be_counts(b, r, &records0, &used0);
	arm(f, at);
	acked = 99;
	check(be_ingest(b, 3, 4, &acked) == KP_BE_E_DB);
	check_reason(f, kp_bstore_errmsg(b));
	/* Not stored, so not acknowledged: what the backend holds is still record 3. */
	check(acked == 3);
	crashvfs_fail_clear();
	be_counts(b, r, &records, &used);
	check(records == records0 && used == used0);
	/* The terminal sends the batch again and it is taken, chained on record 3. */
	check(be_ingest(b, 3, 4, &acked) == KP_BE_OK && acked == 7);
	kp_bstore_close(b);
	assert_int_equal(kp_bstore_open(&b, be_db), KP_BE_OK);
	be_counts(b, r, &records, &used);
	check(records == 7);
	kp_bstore_close(b);
}

static void test_backend_faults(void **state)
{
	struct rows *r = calloc(1, sizeof(*r));

	(void)state;
	assert_non_null(r);
	for (size_t k = 0; k < N_OF(commit_faults); k++)
		be_fault(&commit_faults[k], r);
	free(r);
}

/* ---- what the durability claim rests on ---- */

static void test_durability_pragmas(void **state)
{
	kp_store *s = NULL;
	kp_bstore *b = NULL;
	char mode[16];
	int sync = -1, fk = -1;

	(void)state;
	restore(term_db, term_image, term_image_len);
	assert_int_equal(kp_store_open(&s, term_db), KP_OK);
	assert_int_equal(kp_store_pragmas(s, mode, sizeof(mode), &sync, &fk), KP_OK);
	assert_string_equal(mode, "wal");
	assert_int_equal(sync, 2);                        /* FULL */
	assert_int_equal(fk, 1);
	kp_store_close(s);
	restore(be_db, be_image, be_image_len);
	assert_int_equal(kp_bstore_open(&b, be_db), KP_BE_OK);
	sync = fk = -1;
	assert_int_equal(kp_bstore_pragmas(b, mode, sizeof(mode), &sync, &fk), KP_BE_OK);
	assert_string_equal(mode, "wal");
	assert_int_equal(sync, 2);
	assert_int_equal(fk, 1);
	kp_bstore_close(b);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test_setup(test_durability_pragmas, own_files),
		cmocka_unit_test_setup(test_terminal_power_cuts, own_files),
		cmocka_unit_test_setup(test_backend_power_cuts, own_files),
		cmocka_unit_test_setup_teardown(test_terminal_faults, over_crashvfs, back_to_unix),
		cmocka_unit_test_setup_teardown(test_backend_faults, over_crashvfs, back_to_unix),
	};

	return cmocka_run_group_tests_name("powercut", tests, setup, teardown);
}
