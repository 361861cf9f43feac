/* SPDX-License-Identifier: Apache-2.0 */
/* kippu-bench-delta: delta bundles (PROTOCOL.md section 5.4) on a backend holding a large
 * state. Builds a backend store with --denylist N entries and --entitlements M (written in
 * one transaction with SQL, not through the API: the bench is about the deltas, not about
 * filling a store) and a terminal store holding the same state, then measures in-process,
 * on the real store code (no TLS, no network):
 *   - a delta of --changes K changes (denylist entries added): built, signed, verified,
 *     decoded and applied at the terminal in one transaction; its time and its size on the
 *     wire (the COSE_Sign1 in a `delta` message and its frame);
 *   - K times an empty delta (the terminal up to date): what the backend spends per terminal.
 * The sizes are --denylist 10000000 --entitlements 1000000; the default is smaller
 * (1,000,000 and 100,000) so that `make bench` stays short. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <sqlite3.h>

#include "bench_util.h"
#include "kp_backend.h"
#include "kp_loadgen.h"
#include "kp_terminal.h"

static struct { int denylist, entitlements, changes, keep; } opt = { 1000000, 100000, 1000, 0 };
static char dir[400];

static double now_s(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static void die(const char *what, int rc)
{
	fprintf(stderr, "kippu-bench-delta: %s failed (%d)\n", what, rc);
	exit(1);
}

static void sql(const char *path, const char *text)
{
	sqlite3 *db = NULL;
	char *msg = NULL;

	if (sqlite3_open(path, &db) != SQLITE_OK ||
	    sqlite3_exec(db, text, NULL, NULL, &msg) != SQLITE_OK) {
		fprintf(stderr, "kippu-bench-delta: %s: %s\n", path, msg ? msg : sqlite3_errmsg(db));
		exit(1);
	}
	sqlite3_close(db);
}

/* A card's token (random: SQLite 3.40 has no unhex; foreign keys are off on this
 * connection, so the entitlements need not name the cards). */
#define TOKEN_SQL(v) "randomblob(16)"

static void fill(const char *backend, const char *terminal)
{
	char text[2048];

	snprintf(text, sizeof(text),
	         "BEGIN;"
	         "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < %d)"
	         " INSERT INTO entitlements(id, token, product_id, bought, used, valid_from,"
	         " valid_until, sold) SELECT i, " TOKEN_SQL("i") ", 'R10', 10, 0, 0,"
	         " 4102444800000, 1 FROM n;"
	         "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < %d)"
	         " INSERT INTO denylist(token, reason, added) SELECT " TOKEN_SQL("i + 1000000000")
	         ", 'lost', 1 FROM n;"
	         "DELETE FROM changes; DELETE FROM change_versions; COMMIT;",
	         opt.entitlements, opt.denylist);
	sql(backend, text);
	snprintf(text, sizeof(text),
	         "BEGIN; INSERT INTO operators(id, name) VALUES ('OP', 'Operator');"
	         "INSERT INTO products(id, name, kind, rides) VALUES ('R10', 'Ten rides', 'nride', 10);"
	         "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < %d)"
	         " INSERT INTO entitlements(token, id, product_id, rides_left, valid_from,"
	         " valid_until) SELECT " TOKEN_SQL("i") ", i, 'R10', 10, 0, 4102444800000 FROM n;"
	         "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < %d)"
	         " INSERT INTO denylist(token, reason, added) SELECT " TOKEN_SQL("i + 1000000000")
	         ", 'lost', 1 FROM n; COMMIT;", opt.entitlements, opt.denylist);
	sql(terminal, text);
}

static void row(const char *label, const char *fmt, double value, const char *target)
{
	char v[32];

	snprintf(v, sizeof(v), fmt, value);
	printf("| %-53s | %10s | %-17s |\n", label, v, target);
}

static void cleanup(void)
{
	char cmd[600];

	if (dir[0] != '\0' && !opt.keep) {
		snprintf(cmd, sizeof(cmd), "rm -rf '%s'", dir);
		if (system(cmd) != 0)
			fprintf(stderr, "kippu-bench-delta: could not remove %s\n", dir);
	}
}

int main(int argc, char **argv)
{
	struct bench_json out = { NULL, 0 };
	const char *base = getenv("TMPDIR");
	const struct bench_opt opts[] = {
		{ "dir", BENCH_OPT_STR, &base, 0 },
		{ "json", BENCH_OPT_JSON, &out, 0 },
		{ "json-append", BENCH_OPT_JSON_APPEND, &out, 0 },
		{ "keep", BENCH_OPT_FLAG, &opt.keep, 0 },
		{ "denylist", BENCH_OPT_INT, &opt.denylist, 0 },
		{ "entitlements", BENCH_OPT_INT, &opt.entitlements, 0 },
		{ "changes", BENCH_OPT_INT, &opt.changes, 0 },
	};
	char backend[512], terminal[512], crt[512], label[96], err[256];
	kp_bstore *bs = NULL;
	kp_store *ts = NULL;
	struct kp_sync_source src;
	struct kp_bsession ses;
	struct kp_delta d, got;
	kp_key *key = NULL;
	kp_cert *cert = NULL;
	uint8_t *cose = NULL, tok[KP_TOKEN_LEN];
	size_t cose_len = 0, wire;
	uint64_t v0 = 0, v1 = 0;
	double t0, t_fill, t_build, t_apply, t_empty;
	int kind = 0, rc;

	if (base == NULL || base[0] == '\0')
		base = "/tmp";
	if (bench_opts(argc, argv, opts, sizeof(opts) / sizeof(opts[0])) != 0 || optind != argc ||
	    opt.denylist < 1 || opt.entitlements < 1 || opt.changes < 1 || opt.changes > 100000) {
		fputs("usage: kippu-bench-delta [--dir DIR] [--json PATH | --json-append PATH] "
		      "[--keep]\n       [--denylist N] [--entitlements M] [--changes K]\n", stderr);
		return 2;
	}
	mkdir(base, 0755);
	snprintf(dir, sizeof(dir), "%s/kippu-bench-delta-XXXXXX", base);
	if (mkdtemp(dir) == NULL) {
		perror(dir);
		return 1;
	}
	atexit(cleanup);
	snprintf(backend, sizeof(backend), "%s/backend.db", dir);
	snprintf(terminal, sizeof(terminal), "%s/terminal.db", dir);
	snprintf(crt, sizeof(crt), "%s/backend.crt", dir);
	if ((rc = kp_key_generate(&key)) != 0 || (rc = kp_cert_create_ca(key, "backend", 1, crt)) ||
	    (rc = kp_cert_load(&cert, crt)) != 0)
		die("backend key", rc);
	if ((rc = kp_bstore_open(&bs, backend)) != KP_BE_OK ||
	    (rc = kp_bstore_put_operator(bs, "OP", "Operator")) != KP_BE_OK ||
	    (rc = kp_bstore_put_product(bs, "R10", "Ten rides", 10,
	                                (const char *const[]){ "OP" }, 1)) != KP_BE_OK)
		die("backend store", rc);
	kp_bstore_close(bs);
	if ((rc = kp_store_open(&ts, terminal)) != KP_OK)
		die("terminal store", rc);
	kp_store_close(ts);
	fprintf(stderr, "kippu-bench-delta: filling %d denylist entries, %d entitlements\n",
	        opt.denylist, opt.entitlements);
	t0 = now_s();
	fill(backend, terminal);
	t_fill = now_s() - t0;

	/* the terminal holds version v0; then K changes */
	if ((rc = kp_bstore_open(&bs, backend)) != KP_BE_OK)
		die("backend store", rc);
	memset(tok, 0xEE, sizeof(tok));
	if ((rc = kp_bstore_denylist(bs, tok, "bench", 1)) != KP_BE_OK ||
	    (rc = kp_bstore_state_version(bs, &v0)) != KP_BE_OK)
		die("first change", rc);
	snprintf(crt, sizeof(crt), "UPDATE sync_state SET value = %llu WHERE key ="
	         " 'config_version'", (unsigned long long)v0);
	sql(terminal, crt);
	for (int i = 0; i < opt.changes; i++) {
		memset(tok, 0xDD, sizeof(tok));
		memcpy(tok, &i, sizeof(i));
		if ((rc = kp_bstore_denylist(bs, tok, "stolen", 2)) != KP_BE_OK)
			die("change", rc);
	}
	if ((rc = kp_store_open(&ts, terminal)) != KP_OK)
		die("terminal store", rc);
	kp_store_sync_source(ts, &src);
	memset(&ses, 0, sizeof(ses));
	snprintf(ses.terminal, sizeof(ses.terminal), "T-A");

	/* the delta: built and signed at the backend, verified and applied at the terminal */
	t0 = now_s();
	if ((rc = kp_bstore_delta_session(bs, &ses, v0, 1795662000000LL, &d, &kind)) != KP_BE_OK ||
	    kind != KP_BSTORE_DELTA_DELTA)
		die("delta", rc != KP_BE_OK ? rc : kind);
	if ((rc = kp_delta_sign(&d, key, &cose, &cose_len)) != KP_SYNC_OK)
		die("delta sign", rc);
	t_build = now_s() - t0;
	t0 = now_s();
	if ((rc = kp_delta_open(cert, cose, cose_len, "T-A", v0, &got, err, sizeof(err))) !=
	    KP_SYNC_OK || (rc = src.apply_delta(src.ctx, &got)) != KP_OK)
		die(err[0] != '\0' ? err : "delta apply", rc);
	t_apply = now_s() - t0;
	if ((rc = src.config_version(src.ctx, &v1)) != KP_OK || v1 != d.version)
		die("version after the delta", rc);
	/* a delta message: {"t": "delta", "v": 1, "bundle": bstr} and its 4-byte frame */
	wire = cose_len + 4 + 20;
	kp_delta_free(&got);
	kp_delta_free(&d);
	free(cose);

	/* empty deltas: the terminal is up to date */
	t0 = now_s();
	for (int i = 0; i < opt.changes; i++) {
		if ((rc = kp_bstore_delta_session(bs, &ses, v1, 1795662000000LL, &d, &kind)) !=
		    KP_BE_OK || kind != KP_BSTORE_DELTA_NONE)
			die("empty delta", rc != KP_BE_OK ? rc : kind);
	}
	t_empty = now_s() - t0;
	kp_store_close(ts);
	kp_bstore_close(bs);
	kp_key_free(key);
	kp_cert_free(cert);

	printf("\nkippu-bench-delta: %d denylist entries, %d entitlements (filled in %.0f s)\n\n",
	       opt.denylist, opt.entitlements, t_fill);
	printf("| %-53s | %10s | %-17s |\n", "delta bundles (in-process, no TLS)", "value",
	       "target");
	printf("|%s|%s|%s|\n", "-------------------------------------------------------",
	       "------------", "-------------------");
	snprintf(label, sizeof(label), "delta of %d changes: build + sign (ms)", opt.changes);
	row(label, "%.1f", t_build * 1000, "");
	snprintf(label, sizeof(label), "delta of %d changes: verify + apply (ms)", opt.changes);
	row(label, "%.1f", t_apply * 1000, "");
	snprintf(label, sizeof(label), "delta of %d changes: total (ms)", opt.changes);
	row(label, "%.1f", (t_build + t_apply) * 1000, "<= 1000 (1,000)");
	snprintf(label, sizeof(label), "delta of %d changes: on the wire (KB)", opt.changes);
	row(label, "%.1f", (double)wire / 1000, "<= 100 (1,000)");
	snprintf(label, sizeof(label), "%d empty deltas, one store connection (s)", opt.changes);
	row(label, "%.3f", t_empty, "<= 10 (1,000)");
	if (out.path != NULL) {
		struct kp_metric m[] = {
			{ "delta_1000_ms", "ms", (t_build + t_apply) * 1000 },
			{ "delta_1000_kb", "KB", (double)wire / 1000 },
			{ "empty_deltas_1000_s", "s", t_empty },
		};

		if (kp_metrics_json(out.path, out.append, m, sizeof(m) / sizeof(m[0])) != 0)
			return 1;
	}
	return 0;
}
