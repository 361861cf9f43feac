/* SPDX-License-Identifier: Apache-2.0 */
/* Crash between taps: a child process taps as fast as it can (checkpointing now and then)
 * and is killed with SIGKILL at a random moment, several times over the same database.
 * After each kill the journal must verify (gapless, chained, signed) and every
 * entitlement must equal what was bought minus the accepted rides the journal holds.
 * The child signs from a signing pool (kp_sign_pool.h) refilled now and then, as the
 * terminal does when idle, so that its records are signed both from the pool and, when it
 * runs dry, with RFC 6979: across all the kills no nonce is used twice (every record's r
 * differs), and the journal verifies independently (tools/cose_verify.py). */
#include <poll.h>
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>
#include <time.h>

#include <cmocka.h>

#include "kp_terminal.h"
#include "testutil.h"

#define CARDS 20
#define RIDES 100000
#define T0 1795000000000LL
#define POOL 16
#define MAX_RECORDS 200000

static char db[300], key_path[300];
static uint8_t token_key[KP_TOKEN_KEY_LEN];

static void card_token(int i, uint8_t token[KP_TOKEN_LEN])
{
	uint8_t idm[8] = { 0x01, 0x2E, 0, 0, 0, 0, 0, (uint8_t)i };

	kp_token_derive(token_key, "felica", idm, 8, token);
}

static void terminal_cfg(struct kp_terminal_cfg *cfg)
{
	kp_terminal_cfg_defaults(cfg);
	snprintf(cfg->terminal_id, sizeof(cfg->terminal_id), "CRASH-1");
	snprintf(cfg->operator_id, sizeof(cfg->operator_id), "OP-A");
	cfg->double_tap_window_ms = 1000;
}

static int setup(void **state)
{
	kp_store *s = NULL;
	kp_key *key = NULL, *ca = NULL;
	kp_cert *ca_cert = NULL;
	const char *ops[] = { "OP-A" };
	char ca_path[300], cert_path[300], *pem;

	tu_scratch_setup(state);
	snprintf(db, sizeof(db), "%s/crash.db", tu_scratch);
	snprintf(key_path, sizeof(key_path), "%s/t.key", tu_scratch);
	snprintf(ca_path, sizeof(ca_path), "%s/ca.crt", tu_scratch);
	snprintf(cert_path, sizeof(cert_path), "%s/t.crt", tu_scratch);
	memset(token_key, 0x33, sizeof(token_key));
	if (kp_key_generate(&key) || kp_key_save(key, key_path) || kp_key_generate(&ca) ||
	    kp_cert_create_ca(ca, "crash CA", 5, ca_path) || kp_cert_load(&ca_cert, ca_path) ||
	    kp_cert_issue(ca, ca_cert, key, "CRASH-1", 5, cert_path))
		return -1;
	pem = tu_read(cert_path);
	if (kp_store_open(&s, db) != KP_OK || kp_store_begin(s) != KP_OK ||
	    kp_store_put_operator(s, "OP-A", "A") != KP_OK ||
	    kp_store_put_product(s, "P", "many rides", RIDES, ops, 1) != KP_OK ||
	    kp_store_meta_set(s, "terminal_cert", pem) != KP_OK ||
	    kp_store_meta_set(s, "terminal_id", "CRASH-1") != KP_OK)
		return -1;
	for (int i = 0; i < CARDS; i++) {
		struct kp_entitlement e = { .id = 1 + i, .rides_left = RIDES,
		                            .valid_from_ms = 0, .valid_until_ms = T0 * 2 };

		card_token(i, e.token);
		snprintf(e.product, sizeof(e.product), "P");
		if (kp_store_put_entitlement(s, &e) != KP_OK)
			return -1;
	}
	if (kp_store_commit(s) != KP_OK)
		return -1;
	free(pem);
	kp_store_close(s);
	kp_key_free(key);
	kp_key_free(ca);
	kp_cert_free(ca_cert);
	return 0;
}

/* The child: taps until killed. */
static void tapper(unsigned seed, int report_fd)
{
	kp_store *s = NULL;
	kp_key *key = NULL;
	kp_tap_engine *e = NULL;
	kp_sign_pool *pool = NULL;
	struct kp_terminal_cfg cfg;
	int64_t now = T0 + (int64_t)seed * 100000000LL;
	uint64_t report[2] = { 0, 0 };            /* seq, records signed from the pool */

	terminal_cfg(&cfg);
	if (kp_store_open(&s, db) != KP_OK || kp_key_load(&key, key_path) != 0 ||
	    kp_tap_engine_open(&e, s, &cfg, key, token_key) != KP_OK ||
	    kp_sign_pool_open(&pool, key, POOL) != 0 || kp_sign_pool_refill(pool, POOL, NULL) != 0)
		_exit(3);
	kp_tap_engine_set_pool(e, pool);
	srand(seed);
	for (unsigned long i = 0;; i++) {
		uint8_t token[KP_TOKEN_LEN];
		struct kp_tap_outcome o;
		struct kp_tap_timing tm;

		card_token(rand() % (CARDS + 2), token);   /* two cards hold nothing */
		now += rand() % 1500;
		if (kp_tap_decide(e, token, now, &o) != KP_OK)
			_exit(4);
		kp_tap_engine_timing(e, &tm);
		report[0] = o.seq;
		report[1] += (uint64_t)tm.pooled;
		/* What the HMI would now show as done: the parent holds us to it. */
		if (write(report_fd, report, sizeof(report)) != sizeof(report))
			_exit(5);
		if (i % 64 == 63)
			kp_store_idle(s);
		/* "idle" now and then: one entry every other tap, so the pool runs dry at times */
		if (i % 2 == 1 && kp_sign_pool_refill(pool, 1, NULL) != 0)
			_exit(6);
	}
}

struct tally {
	int64_t used[CARDS + 1];
	uint64_t records;
};

static int count_row(const struct kp_journal_row *row, void *arg)
{
	struct tally *t = arg;
	struct kp_record r;

	if (kp_record_decode(row->payload, row->payload_len, &r) != 0)
		return -1;
	if (strcmp(r.result, "accepted") == 0) {
		if (r.entitlement < 1 || r.entitlement > CARDS)
			return -1;
		t->used[r.entitlement] += r.rides;
	}
	t->records++;
	return 0;
}

/* The r of every record's signature (the COSE ends with bstr(64) r || s). */
struct nonces {
	uint8_t (*r)[32];
	size_t n;
};

static int collect_r(const struct kp_journal_row *row, void *arg)
{
	struct nonces *nc = arg;

	if (row->cose_len < 66 || row->cose[row->cose_len - 66] != 0x58 ||
	    row->cose[row->cose_len - 65] != 0x40 || nc->n == MAX_RECORDS)
		return -1;
	memcpy(nc->r[nc->n++], row->cose + row->cose_len - 64, 32);
	return 0;
}

static int cmp_r(const void *a, const void *b)
{
	return memcmp(a, b, 32);
}

/* No two records share r: no nonce signed twice, across every kill and restart. */
static void check_nonces(uint64_t records)
{
	struct nonces nc = { malloc(sizeof(*nc.r) * MAX_RECORDS), 0 };
	kp_store *s = NULL;

	assert_non_null(nc.r);
	assert_int_equal(kp_store_open(&s, db), KP_OK);
	assert_int_equal(kp_journal_foreach(s, collect_r, &nc), 0);
	kp_store_close(s);
	assert_int_equal(nc.n, records);
	qsort(nc.r, nc.n, sizeof(*nc.r), cmp_r);
	for (size_t i = 1; i < nc.n; i++)
		if (memcmp(nc.r[i - 1], nc.r[i], 32) == 0)
			fail_msg("records %zu and %zu of %zu (sorted by r) share a nonce", i - 1, i,
			         nc.n);
	free(nc.r);
}

static void check_consistent(uint64_t *records)
{
	kp_store *s = NULL;
	struct tally t;
	uint64_t n = 0, bad = 0;
	char err[256];

	memset(&t, 0, sizeof(t));
	assert_int_equal(kp_store_open(&s, db), KP_OK);
	assert_int_equal(kp_journal_verify(s, NULL, &n, &bad, err, sizeof(err)), 0);
	assert_int_equal(kp_journal_foreach(s, count_row, &t), 0);
	assert_int_equal(t.records, n);
	for (int i = 0; i < CARDS; i++) {
		struct kp_entitlement e;
		uint8_t token[KP_TOKEN_LEN];

		card_token(i, token);
		assert_int_equal(kp_store_get_entitlement(s, token, 1 + i, &e), KP_OK);
		assert_int_equal(e.rides_left, RIDES - t.used[1 + i]);
	}
	kp_store_close(s);
	*records = n;
}

/* The child's first report: it has committed a tap this round. */
static uint64_t first_report(int fd)
{
	struct pollfd pfd = { .fd = fd, .events = POLLIN };
	uint64_t report[2] = { 0, 0 };

	if (poll(&pfd, 1, TU_WAIT_S * 1000) != 1 || read(fd, report, sizeof(report)) != sizeof(report))
		fail_msg("the tapping child committed no tap within %d s", TU_WAIT_S);
	return report[0];
}

static void test_kill_during_taps(void **state)
{
	uint64_t before = 0, after = 0, pooled = 0;

	(void)state;
	srand((unsigned)time(NULL));
	for (unsigned round = 1; round <= 6; round++) {
		int fds[2], st = 0;
		pid_t pid;
		uint64_t report[2] = { 0, 0 }, shown = 0, round_pooled = 0;

		assert_int_equal(pipe(fds), 0);
		pid = fork();
		assert_true(pid >= 0);
		if (pid == 0) {
			close(fds[0]);
			tapper(round, fds[1]);
		}
		close(fds[1]);
		/* Once it has committed a tap, kill it wherever it is a moment later. */
		shown = first_report(fds[0]);
		tu_sleep_ms(rand() % 250);
		kill(pid, SIGKILL);
		assert_int_equal(waitpid(pid, &st, 0), pid);
		assert_true(WIFSIGNALED(st));
		while (read(fds[0], report, sizeof(report)) == sizeof(report)) {
			shown = report[0];
			round_pooled = report[1];
		}
		pooled += round_pooled;
		close(fds[0]);
		check_consistent(&after);
		assert_true(after >= shown);     /* every tap reported committed is there */
		print_message("round %u: killed after %llu records in total\n", round,
		              (unsigned long long)after);
		assert_true(after > before);     /* each round made progress */
		before = after;
		check_nonces(after);
	}
	/* both ways of signing were exercised */
	print_message("%llu of %llu records signed from the pool\n", (unsigned long long)pooled,
	              (unsigned long long)after);
	assert_true(pooled > 0 && pooled < after);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_kill_during_taps),
	};

	return cmocka_run_group_tests_name("crash", tests, setup, tu_scratch_teardown);
}
