/* SPDX-License-Identifier: Apache-2.0 */
/* My Number linkage at the backend: linkages and linked cards in the bundle's eligibility,
 * revocation, link requests from terminals (records of kind "link") accepted or refused on
 * ingest, product categories, the migration of a version-1 database, and kippuctl linkage
 * against the real kippu-backend over loopback. */
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <cmocka.h>

#include "kp_backend.h"
#include "kp_terminal.h"
#include "testutil.h"
#include "testutil_db.h"

#define T_FROM   1700000000000LL          /* 2023-11-14 */
#define T_UNTIL  4102444800000LL          /* 2100-01-01 */
#define T_PAST   1700000001000LL          /* an until that has passed */
#define T_REC    1800000000000LL          /* when the link requests below were made */
#define T_LATER  1900000000000LL

struct fx {
	char dir[256];
	char db[300];
	char bin[1024];
	char src[1024];
	kp_bstore *s;
	pid_t backend;
	int port;
};

static struct fx *F;

static void tok(uint8_t t[KP_TOKEN_LEN], uint8_t v)
{
	memset(t, v, KP_TOKEN_LEN);
}

/* A shell command in the fixture's directory, with $CTL, $TERM_BIN and $DB (tu_sh_in). */
#define sh(...) tu_sh_in(F->dir, F->bin, __VA_ARGS__)

static int setup(void **state)
{
	char cwd[700];

	F = calloc(1, sizeof(*F));
	if (F == NULL || getcwd(cwd, sizeof(cwd)) == NULL)
		return -1;
	tu_tmpdir(F->dir, sizeof(F->dir));
	tu_store_conn(F->db, sizeof(F->db), F->dir);
	snprintf(F->src, sizeof(F->src), "%s/tools", cwd);
	if (tu_bin()[0] == '/')
		snprintf(F->bin, sizeof(F->bin), "%s", tu_bin());
	else
		snprintf(F->bin, sizeof(F->bin), "%s/%s", cwd, tu_bin());
	*state = F;
	return 0;
}

static int teardown(void **state)
{
	(void)state;
	if (F->backend > 0) {
		kill(F->backend, SIGTERM);
		waitpid(F->backend, NULL, 0);
	}
	kp_bstore_close(F->s);
	tu_rmdir(F->dir);
	free(F);
	F = NULL;
	return 0;
}

static kp_bstore *store(void)
{
	if (F->s == NULL)
		assert_int_equal(kp_bstore_open(&F->s, F->db), KP_BE_OK);
	return F->s;
}

static uint64_t version(void)
{
	uint64_t v = 0;

	assert_int_equal(kp_bstore_state_version(store(), &v), KP_BE_OK);
	return v;
}

/* The bundle for T-A as the backend would send it now; it must also encode and decode. */
static void bundle(struct kp_bundle *b, int64_t now_ms)
{
	struct kp_bundle d;
	uint8_t *out = NULL;
	size_t n = 0;
	int has = 0;

	assert_int_equal(kp_bstore_bundle(store(), "T-A", 0, now_ms, b, &has), KP_BE_OK);
	assert_int_equal(has, 1);
	assert_int_equal(kp_bundle_encode(b, &out, &n), KP_SYNC_OK);
	assert_int_equal(kp_bundle_decode(out, n, &d), KP_SYNC_OK);
	assert_int_equal(d.n_eligibility, b->n_eligibility);
	if (d.n_eligibility > 0)
		assert_memory_equal(d.eligibility, b->eligibility,
		                    d.n_eligibility * sizeof(*d.eligibility));
	kp_bundle_free(&d);
	free(out);
}

static const struct kp_bundle_eligibility *elig_find(const struct kp_bundle *b, uint8_t token,
                                                     const char *category)
{
	uint8_t t[KP_TOKEN_LEN];

	tok(t, token);
	for (size_t i = 0; i < b->n_eligibility; i++) {
		if (memcmp(b->eligibility[i].token, t, KP_TOKEN_LEN) == 0 &&
		    strcmp(b->eligibility[i].category, category) == 0)
			return &b->eligibility[i];
	}
	return NULL;
}

static void assert_row(const struct kp_bundle *b, uint8_t token, const char *category,
                       int has_via, uint8_t via, int64_t from, int64_t until)
{
	const struct kp_bundle_eligibility *e = elig_find(b, token, category);
	uint8_t v[KP_TOKEN_LEN];

	if (e == NULL)
		fail_msg("no eligibility row for token %02x, category %s", token, category);
	assert_int_equal(e->has_via, has_via);
	if (has_via) {
		tok(v, via);
		assert_memory_equal(e->via, v, KP_TOKEN_LEN);
	}
	assert_true(e->valid_from_ms == from);
	assert_true(e->valid_until_ms == until);
}

/* Report rows as "col|col|...\n" lines. */
struct text {
	char buf[8192];
	size_t n;
};

static int collect_row(void *arg, int ncol, const char *const *cols, const char *const *names)
{
	struct text *t = arg;

	(void)names;
	for (int i = 0; i < ncol; i++) {
		int w = snprintf(t->buf + t->n, sizeof(t->buf) - t->n, "%s%s", cols[i] ? cols[i] : "NULL",
		                 i + 1 < ncol ? "|" : "\n");

		if (w < 0 || (size_t)w >= sizeof(t->buf) - t->n)
			return 1;
		t->n += (size_t)w;
	}
	return 0;
}

static const char *report(enum kp_report which, const char *terminal)
{
	static struct text t;

	memset(&t, 0, sizeof(t));
	assert_int_equal(kp_bstore_report(store(), which, terminal, collect_row, &t), KP_BE_OK);
	return t.buf;
}

static const char *hex16(uint8_t v)
{
	static char h[4][2 * KP_TOKEN_LEN + 1];
	static int slot;
	uint8_t t[KP_TOKEN_LEN];
	char *p = h[slot++ % 4];

	tok(t, v);
	kp_hex(t, KP_TOKEN_LEN, p);
	for (char *c = p; *c != '\0'; c++)
		if (*c >= 'a' && *c <= 'f')
			*c = (char)(*c - 'a' + 'A');         /* SQLite's hex() is upper case */
	return p;
}

/* ---- linkages, links and the bundle ---- */

static void test_linkage_bundle_and_revocation(void **state)
{
	const char *ops[] = { "OP-G" };
	uint8_t l1[KP_TOKEN_LEN], l2[KP_TOKEN_LEN], l3[KP_TOKEN_LEN], old[KP_TOKEN_LEN];
	uint8_t c1[KP_TOKEN_LEN], c2[KP_TOKEN_LEN], c3[KP_TOKEN_LEN], none[KP_TOKEN_LEN];
	struct kp_bundle b;
	uint64_t v0, v;
	int64_t now = 1750000000000LL;

	(void)state;
	tok(l1, 0xA1); tok(l2, 0xA2); tok(l3, 0xA3); tok(old, 0xA0); tok(none, 0xAF);
	tok(c1, 0x11); tok(c2, 0x12); tok(c3, 0x13);
	assert_int_equal(kp_bstore_put_operator(store(), "OP-G", "Gunma Bus"), KP_BE_OK);
	assert_int_equal(kp_bstore_put_product_cat(store(), "RES10", "10 resident rides", 10, ops, 1,
	                                           "resident"), KP_BE_OK);
	assert_int_equal(kp_bstore_put_product(store(), "ANY10", "10 rides", 10, ops, 1), KP_BE_OK);
	assert_int_equal(kp_bstore_put_product_cat(store(), "X", "x", 10, ops, 1,
	                                           "012345678901234567890123456789012"),
	                 KP_BE_E_INVAL);                     /* a category of 33 bytes */

	/* no linkage yet: no eligibility; the products carry their categories */
	bundle(&b, now);
	assert_int_equal(b.n_eligibility, 0);
	assert_int_equal(b.n_products, 2);
	assert_string_equal(b.products[0].id, "ANY10");
	assert_string_equal(b.products[0].category, "");
	assert_string_equal(b.products[1].category, "resident");
	kp_bundle_free(&b);

	v0 = version();
	assert_int_equal(kp_bstore_linkage_add(store(), l1, "resident", T_FROM, T_UNTIL, now), KP_BE_OK);
	assert_true(version() > v0);
	assert_int_equal(kp_bstore_linkage_add(store(), l2, "senior", T_FROM, T_LATER, now), KP_BE_OK);
	assert_int_equal(kp_bstore_linkage_add(store(), l3, "resident", T_FROM, T_LATER, now), KP_BE_OK);
	assert_int_equal(kp_bstore_linkage_add(store(), old, "resident", T_FROM, T_PAST, now), KP_BE_OK);
	/* bad values change nothing */
	v0 = version();
	assert_int_equal(kp_bstore_linkage_add(store(), none, "", T_FROM, T_UNTIL, now), KP_BE_E_INVAL);
	assert_int_equal(kp_bstore_linkage_add(store(), none, "resident", T_UNTIL, T_FROM, now),
	                 KP_BE_E_INVAL);
	assert_int_equal(kp_bstore_linkage_add(store(), none, "\xC3\x28", T_FROM, T_UNTIL, now),
	                 KP_BE_E_INVAL);
	assert_int_equal(version(), v0);

	/* cards: c1 and c2 through l1, c3 through l2 and (the same category twice) l1 and l3 */
	assert_int_equal(kp_bstore_linkage_link(store(), l1, c1, now, NULL), KP_BE_OK);
	assert_int_equal(kp_bstore_linkage_link(store(), l1, c2, now, "backend"), KP_BE_OK);
	assert_int_equal(kp_bstore_linkage_link(store(), l2, c3, now, NULL), KP_BE_OK);
	assert_int_equal(kp_bstore_linkage_link(store(), l3, c3, now, NULL), KP_BE_OK);
	assert_int_equal(kp_bstore_linkage_link(store(), l1, c3, now, NULL), KP_BE_OK);
	v0 = version();
	assert_int_equal(kp_bstore_linkage_link(store(), l1, c1, now, NULL), KP_BE_OK);   /* again */
	assert_int_equal(version(), v0);                       /* nothing changed */
	assert_int_equal(kp_bstore_linkage_link(store(), none, c1, now, NULL), KP_BE_E_NOTFOUND);
	assert_non_null(strstr(kp_bstore_errmsg(store()), "unknown linkage"));
	assert_int_equal(kp_bstore_linkage_link(store(), old, c1, now, NULL), KP_BE_E_INVAL);
	assert_non_null(strstr(kp_bstore_errmsg(store()), "expired"));
	assert_int_equal(kp_bstore_linkage_link(store(), l1, c1, now, "somewhere"), KP_BE_E_INVAL);
	assert_int_equal(version(), v0);

	bundle(&b, now);
	/* l1 l2 l3, c1 c2 (resident via l1), c3 resident (one row for l1 and l3), c3 senior;
	 * not the expired linkage */
	assert_int_equal(b.n_eligibility, 7);
	assert_row(&b, 0xA1, "resident", 0, 0, T_FROM, T_UNTIL);
	assert_row(&b, 0xA2, "senior", 0, 0, T_FROM, T_LATER);
	assert_row(&b, 0xA3, "resident", 0, 0, T_FROM, T_LATER);
	assert_row(&b, 0x11, "resident", 1, 0xA1, T_FROM, T_UNTIL);
	assert_row(&b, 0x12, "resident", 1, 0xA1, T_FROM, T_UNTIL);
	assert_row(&b, 0x13, "resident", 1, 0xA1, T_FROM, T_UNTIL);   /* the longer of l1, l3 */
	assert_row(&b, 0x13, "senior", 1, 0xA2, T_FROM, T_LATER);
	assert_null(elig_find(&b, 0xA0, "resident"));
	for (size_t i = 1; i < b.n_eligibility; i++) {
		int c = memcmp(b.eligibility[i - 1].token, b.eligibility[i].token, KP_TOKEN_LEN);

		assert_true(c < 0 || (c == 0 && strcmp(b.eligibility[i - 1].category,
		                                       b.eligibility[i].category) < 0));
	}
	kp_bundle_free(&b);
	/* the day the validity ends, its rows go (the terminal would refuse them anyway) */
	bundle(&b, T_LATER);
	assert_int_equal(b.n_eligibility, 4);                   /* l1, c1, c2, c3 resident */
	kp_bundle_free(&b);

	/* reports */
	{
		char want[256];
		const char *r = report(KP_REPORT_LINKAGES, NULL);

		snprintf(want, sizeof(want), "%s|resident|2023-11-14T22:13Z|2100-01-01T00:00Z|active|3\n",
		         hex16(0xA1));
		assert_non_null(strstr(r, want));
		snprintf(want, sizeof(want), "%s|resident|", hex16(0xA0));
		assert_non_null(strstr(r, want));
		assert_non_null(strstr(strstr(r, want), "|expired|0\n"));
		r = report(KP_REPORT_LINKAGE_CARDS, NULL);
		assert_int_equal(tu_count(r, "\n"), 5);
		snprintf(want, sizeof(want), "%s|%s|", hex16(0xA1), hex16(0x11));
		assert_non_null(strstr(r, want));
		assert_non_null(strstr(strstr(r, want), "|backend\n"));
	}

	/* revoke l1: it and its cards leave the next bundle; c3 stays resident through l3 */
	v0 = version();
	assert_int_equal(kp_bstore_linkage_revoke(store(), l1, now), KP_BE_OK);
	v = version();
	assert_true(v > v0);
	bundle(&b, now);
	assert_int_equal(b.version, v);
	assert_int_equal(b.n_eligibility, 4);
	assert_null(elig_find(&b, 0xA1, "resident"));
	assert_null(elig_find(&b, 0x11, "resident"));
	assert_null(elig_find(&b, 0x12, "resident"));
	assert_row(&b, 0x13, "resident", 1, 0xA3, T_FROM, T_LATER);
	kp_bundle_free(&b);
	assert_non_null(strstr(report(KP_REPORT_LINKAGES, NULL), "|revoked|3\n"));
	/* a revoked linkage stays revoked and takes no links */
	assert_int_equal(kp_bstore_linkage_revoke(store(), l1, now), KP_BE_E_NOTFOUND);
	assert_int_equal(kp_bstore_linkage_revoke(store(), none, now), KP_BE_E_NOTFOUND);
	assert_int_equal(kp_bstore_linkage_add(store(), l1, "resident", T_FROM, T_UNTIL, now),
	                 KP_BE_E_INVAL);
	assert_non_null(strstr(kp_bstore_errmsg(store()), "revoked"));
	assert_int_equal(kp_bstore_linkage_link(store(), l1, c1, now, NULL), KP_BE_E_INVAL);
	assert_non_null(strstr(kp_bstore_errmsg(store()), "revoked"));
	assert_int_equal(version(), v);
	/* an active linkage takes a new category and validity */
	assert_int_equal(kp_bstore_linkage_add(store(), l2, "senior-resident", T_FROM, T_UNTIL, now),
	                 KP_BE_OK);
	bundle(&b, now);
	assert_row(&b, 0x13, "senior-resident", 1, 0xA2, T_FROM, T_UNTIL);
	assert_null(elig_find(&b, 0x13, "senior"));
	kp_bundle_free(&b);
	/* a linkage whose validity has not begun takes links online */
	assert_int_equal(kp_bstore_linkage_add(store(), none, "resident", T_LATER, T_UNTIL, now),
	                 KP_BE_OK);
	assert_int_equal(kp_bstore_linkage_link(store(), none, c1, now, NULL), KP_BE_OK);
	bundle(&b, now);
	assert_row(&b, 0x11, "resident", 1, 0xAF, T_LATER, T_UNTIL);
	kp_bundle_free(&b);
}

/* ---- link requests from terminals ---- */

struct chain {
	uint8_t prev[KP_SHA256_LEN];
	uint64_t seq;
	struct kp_ingest in[16];
	size_t n;
};

static struct kp_record link_rec(struct chain *c, uint8_t card, uint8_t via, int64_t at)
{
	struct kp_record r;

	memset(&r, 0, sizeof(r));
	strcpy(r.terminal, "T-A");
	r.seq = ++c->seq;
	r.time_ms = at;
	strcpy(r.kind, "link");
	strcpy(r.operator_id, "OP-G");
	strcpy(r.result, "requested");
	strcpy(r.reason, "link-request");
	if (card != 0) {
		r.has_token = 1;
		tok(r.token, card);
	}
	if (via != 0) {
		r.has_via = 1;
		tok(r.via, via);
	}
	return r;
}

static void chain_add(struct chain *c, struct kp_record *r)
{
	struct kp_ingest *in = &c->in[c->n++];
	uint8_t *payload = NULL;
	size_t len = 0;

	memcpy(r->prev, c->prev, KP_SHA256_LEN);
	assert_int_equal(kp_record_encode(r, &payload, &len), KP_RECORD_OK);
	memset(in, 0, sizeof(*in));
	in->payload = payload;
	in->payload_len = len;
	in->cose = payload;              /* the store keeps the bytes; signatures are server.c's */
	in->cose_len = len;
	in->sig_ok = 1;
	in->rec = *r;
	assert_int_equal(kp_sha256(payload, len, in->hash), 0);
	memcpy(c->prev, in->hash, KP_SHA256_LEN);
}

static void chain_free(struct chain *c)
{
	for (size_t i = 0; i < c->n; i++)
		free((void *)c->in[i].payload);
}

static void test_link_requests_ingested(void **state)
{
	struct chain c;
	struct kp_record r;
	struct kp_bundle b;
	uint8_t t[KP_TOKEN_LEN];
	uint64_t acked = 0, refused = 0, v0;
	char reason[256], want[256];
	const char *rep;

	(void)state;
	memset(&c, 0, sizeof(c));
	tok(t, 0xB1);
	assert_int_equal(kp_bstore_linkage_add(store(), t, "resident", T_FROM, T_UNTIL, 1), KP_BE_OK);
	tok(t, 0xB2);
	assert_int_equal(kp_bstore_linkage_add(store(), t, "resident", T_FROM, T_UNTIL, 1), KP_BE_OK);
	assert_int_equal(kp_bstore_linkage_revoke(store(), t, 2), KP_BE_OK);
	tok(t, 0xB3);
	assert_int_equal(kp_bstore_linkage_add(store(), t, "resident", T_FROM, T_FROM + 1000, 1),
	                 KP_BE_OK);
	tok(t, 0xB4);
	assert_int_equal(kp_bstore_linkage_add(store(), t, "resident", T_LATER, T_UNTIL, 1), KP_BE_OK);
	assert_int_equal(kp_bstore_terminal_add(store(), "T-A", NULL, 3, NULL), KP_BE_OK);
	assert_int_equal(kp_bstore_terminal_seen(store(), "T-A", (const uint8_t *)"x", 1, 3, &acked),
	                 KP_BE_OK);

	/* 1: a tap that applied a resident category through a linkage */
	memset(&r, 0, sizeof(r));
	strcpy(r.terminal, "T-A");
	r.seq = ++c.seq;
	r.time_ms = T_REC;
	strcpy(r.kind, "tap");
	r.has_token = 1;
	tok(r.token, 0x21);
	strcpy(r.operator_id, "OP-G");
	r.rides = 1;
	r.amount = 100;
	strcpy(r.result, "accepted");
	strcpy(r.reason, "ok");
	r.has_via = 1;
	tok(r.via, 0xB1);
	strcpy(r.category, "resident");
	chain_add(&c, &r);
	r = link_rec(&c, 0x22, 0xB1, T_REC);       /* 2: accepted */
	chain_add(&c, &r);
	r = link_rec(&c, 0x23, 0xBF, T_REC);       /* 3: unknown linkage */
	chain_add(&c, &r);
	r = link_rec(&c, 0x23, 0xB2, T_REC);       /* 4: revoked */
	chain_add(&c, &r);
	r = link_rec(&c, 0x23, 0xB3, T_REC);       /* 5: expired at the record's time */
	chain_add(&c, &r);
	r = link_rec(&c, 0x23, 0xB4, T_REC);       /* 6: not yet valid at the record's time */
	chain_add(&c, &r);
	r = link_rec(&c, 0x22, 0xB1, T_REC + 1);   /* 7: the same link again */
	chain_add(&c, &r);
	r = link_rec(&c, 0x23, 0xB1, T_REC);       /* 8: refused at the terminal already */
	strcpy(r.result, "refused");
	strcpy(r.reason, "card-expired");
	chain_add(&c, &r);
	r = link_rec(&c, 0x23, 0, T_REC);          /* 9: no via */
	chain_add(&c, &r);
	r = link_rec(&c, 0x24, 0xB4, T_LATER);     /* 10: valid by then */
	chain_add(&c, &r);

	v0 = version();
	assert_int_equal(kp_bstore_ingest(store(), "T-A", c.in, c.n, 5, &acked, &refused, reason,
	                                  sizeof(reason)), KP_BE_OK);
	assert_int_equal(refused, 0);
	assert_int_equal(acked, 10);
	assert_true(version() > v0);
	/* every record is stored like any record, with kind, via and category */
	rep = report(KP_REPORT_RECORDS, "T-A");
	assert_int_equal(tu_count(rep, "\n"), 10);
	snprintf(want, sizeof(want), "|tap|%s|resident\n", hex16(0xB1));
	assert_non_null(strstr(rep, want));
	snprintf(want, sizeof(want), "|link|%s|-\n", hex16(0xB1));
	assert_non_null(strstr(rep, want));
	assert_int_equal(tu_count(rep, "|link|"), 9);
	assert_int_equal(tu_count(report(KP_REPORT_QUARANTINE, NULL), "\n"), 0);

	rep = report(KP_REPORT_LINK_REQUESTS, "T-A");
	assert_int_equal(tu_count(rep, "\n"), 9);
	snprintf(want, sizeof(want), "T-A|2|%s|%s|accepted|linked|", hex16(0xB1), hex16(0x22));
	assert_non_null(strstr(rep, want));
	assert_non_null(strstr(rep, "T-A|3|"));
	assert_non_null(strstr(strstr(rep, "T-A|3|"), "|refused|unknown linkage|"));
	assert_non_null(strstr(rep, "|refused|revoked|"));
	assert_non_null(strstr(rep, "|refused|expired|"));
	assert_non_null(strstr(rep, "|refused|not yet valid|"));
	assert_non_null(strstr(rep, "T-A|7|"));
	assert_non_null(strstr(strstr(rep, "T-A|7|"), "|accepted|already linked|"));
	assert_non_null(strstr(rep, "T-A|10|"));
	assert_non_null(strstr(rep, "|refused|not a request: refused at the terminal (card-expired)|"));
	snprintf(want, sizeof(want), "T-A|9|-|%s|refused|no linkage token (via)|", hex16(0x23));
	assert_non_null(strstr(rep, want));
	assert_non_null(strstr(strstr(rep, "T-A|10|"), "|accepted|linked|"));

	rep = report(KP_REPORT_LINKAGE_CARDS, NULL);
	assert_int_equal(tu_count(rep, "\n"), 2);
	snprintf(want, sizeof(want), "%s|%s|2027-01-15T08:00:00Z|terminal:T-A:2\n", hex16(0xB1),
	         hex16(0x22));
	assert_non_null(strstr(rep, want));
	assert_non_null(strstr(rep, "|terminal:T-A:10\n"));

	/* the next bundle has the linked card */
	bundle(&b, T_REC);
	assert_row(&b, 0x22, "resident", 1, 0xB1, T_FROM, T_UNTIL);
	assert_row(&b, 0x24, "resident", 1, 0xB4, T_LATER, T_UNTIL);
	assert_null(elig_find(&b, 0x23, "resident"));
	kp_bundle_free(&b);

	/* the batch sent again changes nothing: each record, hence each request, once */
	v0 = version();
	assert_int_equal(kp_bstore_ingest(store(), "T-A", c.in, c.n, 6, &acked, &refused, reason,
	                                  sizeof(reason)), KP_BE_OK);
	assert_int_equal(acked, 10);
	assert_int_equal(version(), v0);
	assert_int_equal(tu_count(report(KP_REPORT_LINK_REQUESTS, NULL), "\n"), 9);
	chain_free(&c);
}

/* ---- clone detection (issue 13) ---- */

/* A tap at terminal `term` (its own chain): by a card linked through `via`, or directly by
 * a linkage (via 0, token = the linkage), at stop (NULL: none). */
static void clone_tap(struct chain *c, const char *term, uint8_t card, uint8_t via,
                      const char *stop, int64_t at)
{
	struct kp_record r;

	memset(&r, 0, sizeof(r));
	snprintf(r.terminal, sizeof(r.terminal), "%s", term);
	r.seq = ++c->seq;
	r.time_ms = at;
	strcpy(r.kind, "tap");
	strcpy(r.event, "tap");
	r.has_token = 1;
	tok(r.token, card);
	strcpy(r.operator_id, "OP-G");
	if (stop != NULL)
		snprintf(r.stop, sizeof(r.stop), "%s", stop);
	r.rides = 1;
	strcpy(r.result, "accepted");
	strcpy(r.reason, "ok");
	if (via != 0) {
		r.has_via = 1;
		tok(r.via, via);
	}
	strcpy(r.category, "resident");
	chain_add(c, &r);
}

static void ingest(const char *term, struct chain *c, uint64_t want_acked)
{
	uint64_t acked = 0, refused = 0;
	char reason[256] = "";

	assert_int_equal(kp_bstore_ingest(store(), term, c->in, c->n, T_REC, &acked, &refused,
	                                  reason, sizeof(reason)), KP_BE_OK);
	assert_int_equal(refused, 0);
	assert_int_equal(acked, want_acked);
}

static void chain_reset(struct chain *c)
{
	chain_free(c);
	c->n = 0;
}

static int deny_has(const struct kp_bundle *b, uint8_t token, const char *reason)
{
	for (size_t i = 0; i < b->n_denylist; i++) {
		if (b->denylist[i].token[0] == token && strcmp(b->denylist[i].reason, reason) == 0)
			return 1;
	}
	return 0;
}

/* One linkage used at two terminals: 100 km in 30 minutes is flagged (reported only by
 * default); with the suspend policy, two terminals 20 s apart (a stop without a place)
 * suspend the linkage in the next bundle (its eligibility and its card's withheld, the
 * linkage denylisted) until an operator clears it; direct taps beyond the policy's rides a
 * day are flagged too. Records go through the store's ingest, batches sent twice add
 * nothing. */
static void test_clone_detection(void **state)
{
	static const struct kp_stop_place places[] = {
		{ "S1", 36389500, 139063400 },       /* ~100 km from S2 */
		{ "S2", 35681200, 139767100 },
		{ "S3", 36393000, 139066000 },       /* ~450 m from S1 */
	};
	struct chain a, b2, a2, b3;
	struct kp_bundle_policy pol;
	struct kp_bundle b;
	uint8_t l[KP_TOKEN_LEN], card[KP_TOKEN_LEN];
	uint64_t acked = 0, v0;
	const char *rep;
	const int64_t min = 60000;
	char want[128];

	(void)state;
	memset(&a, 0, sizeof(a));
	memset(&b2, 0, sizeof(b2));
	tok(l, 0xC1);
	tok(card, 0xC2);
	assert_int_equal(kp_bstore_linkage_add(store(), l, "resident", T_FROM, T_UNTIL, 1), KP_BE_OK);
	assert_int_equal(kp_bstore_linkage_link(store(), l, card, 1, "backend"), KP_BE_OK);
	assert_int_equal(kp_bstore_put_stop_places(store(), "F", places, 3), KP_BE_OK);
	assert_int_equal(kp_bstore_terminal_add(store(), "T-A", NULL, 3, NULL), KP_BE_OK);
	assert_int_equal(kp_bstore_terminal_add(store(), "T-B", NULL, 3, NULL), KP_BE_OK);
	assert_int_equal(kp_bstore_terminal_seen(store(), "T-A", (const uint8_t *)"x", 1, 3, &acked),
	                 KP_BE_OK);
	assert_int_equal(kp_bstore_terminal_seen(store(), "T-B", (const uint8_t *)"y", 1, 3, &acked),
	                 KP_BE_OK);

	/* the linked card at S1, then the linkage itself (a direct tap) at S2 half an hour
	 * later, and at S3 (near S1) an hour after the first: one impossible pair */
	clone_tap(&a, "T-A", 0xC2, 0xC1, "S1", T_REC);
	clone_tap(&b2, "T-B", 0xC1, 0, "S2", T_REC + 30 * min);
	clone_tap(&b2, "T-B", 0xC1, 0, "S3", T_REC + 3 * 60 * min);
	ingest("T-A", &a, 1);
	ingest("T-B", &b2, 2);
	rep = report(KP_REPORT_CLONES, NULL);
	assert_int_equal(tu_count(rep, "\n"), 1);
	snprintf(want, sizeof(want), "%s|travel|T-A:1|T-B:1|", hex16(0xC1));
	assert_non_null(strstr(rep, want));
	assert_non_null(strstr(rep, "101.0 km in 1800 s (more than 120 km/h)"));
	assert_non_null(strstr(rep, "|reported\n"));
	/* reported only: the bundle still carries the linkage and its card */
	bundle(&b, T_REC);
	assert_row(&b, 0xC1, "resident", 0, 0, T_FROM, T_UNTIL);
	assert_row(&b, 0xC2, "resident", 1, 0xC1, T_FROM, T_UNTIL);
	assert_int_equal(b.n_denylist, 0);
	kp_bundle_free(&b);
	/* sent again: nothing new */
	ingest("T-A", &a, 1);
	ingest("T-B", &b2, 2);
	assert_int_equal(tu_count(report(KP_REPORT_CLONES, NULL), "\n"), 1);

	/* the scheme suspends: two terminals 20 s apart, one stop without a place */
	assert_int_equal(kp_bstore_set_clone_policy(store(), 2, 120, 60), KP_BE_OK);
	a2 = a;
	a2.n = 0;                            /* the same chain, on from where a ended */
	clone_tap(&a2, "T-A", 0xC2, 0xC1, "S1", T_REC + 600 * min);
	clone_tap(&a2, "T-A", 0xC2, 0xC1, "S1", T_REC + 601 * min);
	b3 = b2;
	b3.n = 0;
	clone_tap(&b3, "T-B", 0xC1, 0, NULL, T_REC + 600 * min + 20000);
	v0 = version();
	ingest("T-A", &a2, 3);
	ingest("T-B", &b3, 3);
	assert_true(version() > v0);
	rep = report(KP_REPORT_CLONES, "T-B");
	assert_int_equal(tu_count(rep, "\n"), 3);
	assert_non_null(strstr(rep, "|travel|T-A:2|T-B:3|two terminals 20 s apart"));
	assert_non_null(strstr(rep, "|travel|T-B:3|T-A:3|two terminals 40 s apart"));
	assert_int_equal(tu_count(rep, "|suspended\n"), 2);
	bundle(&b, T_REC);
	assert_null(elig_find(&b, 0xC1, "resident"));
	assert_null(elig_find(&b, 0xC2, "resident"));
	assert_true(deny_has(&b, 0xC1, "suspended: possible copied My Number card"));
	assert_false(deny_has(&b, 0xC2, "suspended: possible copied My Number card"));
	kp_bundle_free(&b);
	/* kippuctl shows the report */
	assert_int_equal(sh("\"$CTL\" backend clones '%s' > clones.txt && "
	                    "grep -q 'suspended' clones.txt && grep -q 'reported' clones.txt",
	                    F->db), 0);

	/* an operator who has looked into it clears the linkage: the next bundle has it again */
	assert_int_equal(kp_bstore_clone_clear(store(), l, T_REC), KP_BE_OK);
	assert_int_equal(kp_bstore_clone_clear(store(), l, T_REC), KP_BE_E_NOTFOUND);
	bundle(&b, T_REC);
	assert_row(&b, 0xC1, "resident", 0, 0, T_FROM, T_UNTIL);
	assert_row(&b, 0xC2, "resident", 1, 0xC1, T_FROM, T_UNTIL);
	assert_int_equal(b.n_denylist, 0);
	kp_bundle_free(&b);

	/* more direct taps in a service day than the policy allows, at one terminal */
	memset(&pol, 0, sizeof(pol));
	pol.direct = 1;
	pol.direct_rides = 2;
	pol.max_age_s = KP_POLICY_MAX_AGE_DEFAULT;
	snprintf(pol.categories[0], sizeof(pol.categories[0]), "resident");
	pol.n_categories = 1;
	assert_int_equal(kp_bstore_set_policy(store(), &pol), KP_BE_OK);
	chain_reset(&b3);
	clone_tap(&b3, "T-B", 0xC1, 0, "S2", T_REC + 1440 * min);
	clone_tap(&b3, "T-B", 0xC1, 0, "S2", T_REC + 1500 * min);
	ingest("T-B", &b3, 5);
	assert_int_equal(tu_count(report(KP_REPORT_CLONES, NULL), "|limit|"), 0);
	chain_reset(&b3);
	clone_tap(&b3, "T-B", 0xC1, 0, "S2", T_REC + 1560 * min);
	ingest("T-B", &b3, 6);
	rep = report(KP_REPORT_CLONES, NULL);
	assert_int_equal(tu_count(rep, "|limit|T-B:6|T-B:6|3 direct taps in one service day, the "
	                          "policy allows 2|"), 1);
	bundle(&b, T_REC);
	assert_null(elig_find(&b, 0xC1, "resident"));
	kp_bundle_free(&b);
	chain_free(&a);
	chain_free(&b2);
	chain_free(&a2);
	chain_free(&b3);
}

/* ---- a version-1 database (before linkages) is migrated in place ---- */

/* Migration 1 exactly as released (backend-sync/backend/bstore.c), frozen here. */
static const char V1_SCHEMA[] =
	"CREATE TABLE meta(key TEXT PRIMARY KEY, value INTEGER NOT NULL) WITHOUT ROWID;"
	"INSERT INTO meta(key, value) VALUES ('state_version', 1);"
	"CREATE TABLE terminals(id TEXT PRIMARY KEY, cert BLOB,"
	"  first_seen INTEGER NOT NULL, last_seen INTEGER NOT NULL,"
	"  acked INTEGER NOT NULL DEFAULT 0,"
	"  last_hash BLOB NOT NULL DEFAULT (zeroblob(32)),"
	"  quarantined INTEGER NOT NULL DEFAULT 0) WITHOUT ROWID;"
	"CREATE TABLE records(terminal TEXT NOT NULL REFERENCES terminals(id),"
	"  seq INTEGER NOT NULL CHECK (seq > 0), time_ms INTEGER NOT NULL, token BLOB,"
	"  operator TEXT NOT NULL, route TEXT, stop TEXT, product TEXT, ent_id INTEGER,"
	"  rides INTEGER NOT NULL, amount INTEGER NOT NULL, left_after INTEGER,"
	"  result TEXT NOT NULL, reason TEXT NOT NULL,"
	"  cose BLOB NOT NULL, payload BLOB NOT NULL, hash BLOB NOT NULL,"
	"  received_ms INTEGER NOT NULL,"
	"  PRIMARY KEY (terminal, seq)) WITHOUT ROWID;"
	"CREATE INDEX records_operator ON records(operator);"
	"CREATE TRIGGER records_immutable BEFORE UPDATE ON records"
	"  BEGIN SELECT RAISE(ABORT, 'records are immutable'); END;"
	"CREATE TRIGGER records_append_only BEFORE DELETE ON records"
	"  BEGIN SELECT RAISE(ABORT, 'records cannot be deleted'); END;"
	"CREATE TABLE quarantine(id INTEGER PRIMARY KEY, terminal TEXT NOT NULL,"
	"  seq INTEGER NOT NULL, reason TEXT NOT NULL, cose BLOB, at INTEGER NOT NULL,"
	"  cleared INTEGER);"
	"CREATE TABLE operators(id TEXT PRIMARY KEY, name TEXT NOT NULL) WITHOUT ROWID;"
	"CREATE TABLE products(id TEXT PRIMARY KEY, name TEXT NOT NULL,"
	"  kind TEXT NOT NULL DEFAULT 'nride' CHECK (kind IN ('nride')),"
	"  rides INTEGER NOT NULL CHECK (rides > 0)) WITHOUT ROWID;"
	"CREATE TABLE product_operators("
	"  product_id TEXT NOT NULL REFERENCES products(id) ON DELETE CASCADE,"
	"  operator_id TEXT NOT NULL REFERENCES operators(id),"
	"  PRIMARY KEY (product_id, operator_id)) WITHOUT ROWID;"
	"CREATE TABLE cards(token BLOB PRIMARY KEY CHECK (length(token) = 16),"
	"  label TEXT NOT NULL, registered INTEGER NOT NULL) WITHOUT ROWID;"
	"CREATE TABLE entitlements(id INTEGER PRIMARY KEY,"
	"  token BLOB NOT NULL REFERENCES cards(token),"
	"  product_id TEXT NOT NULL REFERENCES products(id),"
	"  bought INTEGER NOT NULL CHECK (bought > 0), used INTEGER NOT NULL DEFAULT 0,"
	"  valid_from INTEGER NOT NULL, valid_until INTEGER NOT NULL, sold INTEGER NOT NULL);"
	"CREATE INDEX entitlements_token ON entitlements(token);"
	"CREATE TABLE denylist(token BLOB PRIMARY KEY CHECK (length(token) = 16),"
	"  reason TEXT NOT NULL, added INTEGER NOT NULL) WITHOUT ROWID;"
	/* what a version-1 backend held */
	"INSERT INTO terminals(id, first_seen, last_seen, acked) VALUES ('T-A', 1, 1, 1);"
	"INSERT INTO records VALUES ('T-A', 1, 1700000000000, NULL, 'OP-G', NULL, NULL, NULL,"
	"  NULL, 0, 0, NULL, 'refused', 'no-entitlement', x'00', x'00', x'00', 1);"
	"INSERT INTO operators VALUES ('OP-G', 'Gunma Bus');"
	"INSERT INTO products(id, name, rides) VALUES ('P10', '10 rides', 10);"
	"INSERT INTO product_operators VALUES ('P10', 'OP-G');"
	"UPDATE meta SET value = 7;"
	"PRAGMA user_version = 1;";

static void test_migration_from_version_1(void **state)
{
	char path[400];
	struct kp_bundle b;
	const char *ops[] = { "OP-G" };
	uint8_t l[KP_TOKEN_LEN];

	(void)state;
	snprintf(path, sizeof(path), "%s/v1.sql", F->dir);
	tu_write(path, V1_SCHEMA);
	assert_int_equal(sh("python3 -c \"import sqlite3; c = sqlite3.connect('backend.db'); "
	                    "c.executescript(open('v1.sql').read()); c.commit()\""), 0);
	assert_int_equal(version(), 7);                     /* opened: migrated to 2 */
	assert_int_equal(sh("python3 -c \"import sqlite3; c = sqlite3.connect('backend.db'); "
	                    "assert c.execute('PRAGMA user_version').fetchone()[0] == %d\"",
	                    KP_BSTORE_SCHEMA_VERSION), 0);
	/* a terminal the old backend knew is registered: upgrading does not cut it off */
	assert_non_null(strstr(report(KP_REPORT_TERMINALS, "T-A"), "|active|NULL|1970-01-01T00:00:00Z|NULL|NULL\n"));
	/* the old record reads as a tap without via or category */
	assert_non_null(strstr(report(KP_REPORT_RECORDS, NULL), "|refused|no-entitlement|OP-G|-|-|0|-|tap|-|-\n"));
	bundle(&b, 1);
	assert_int_equal(b.n_products, 1);
	assert_string_equal(b.products[0].category, "");
	assert_int_equal(b.n_eligibility, 0);
	kp_bundle_free(&b);
	/* and the new tables work */
	tok(l, 0xC1);
	assert_int_equal(kp_bstore_linkage_add(store(), l, "resident", T_FROM, T_UNTIL, 1), KP_BE_OK);
	assert_int_equal(kp_bstore_put_product_cat(store(), "P10", "10 rides", 10, ops, 1, "resident"),
	                 KP_BE_OK);
	bundle(&b, 1);
	assert_string_equal(b.products[0].category, "resident");
	assert_int_equal(b.n_eligibility, 1);
	kp_bundle_free(&b);
	/* reopening finds nothing to migrate; a newer schema is refused */
	kp_bstore_close(F->s);
	F->s = NULL;
	assert_true(version() > 7);     /* two changes: the version clock (ms), never back */
	kp_bstore_close(F->s);
	F->s = NULL;
	assert_int_equal(sh("python3 -c \"import sqlite3; c = sqlite3.connect('backend.db'); "
	                    "c.execute('PRAGMA user_version = %d'); c.commit()\" && "
	                    "\"$CTL\" linkage list backend.db 2>err.txt; test $? -eq 1 && "
	                    "grep -q 'newer' err.txt", KP_BSTORE_SCHEMA_VERSION + 1), 0);
}

/* ---- kippuctl linkage, end to end against the real kippu-backend ---- */

static void start_backend(void)
{
	F->backend = tu_backend_start(F->dir, F->bin, 0, 3000, &F->port);
}

struct conn {
	kp_tls_conf *conf;
	kp_tls *t;
	kp_cert *backend_cert;
	struct kp_msg m;
	uint8_t *buf;
};

static void conn_open(struct conn *c)
{
	char ca[512], cert[512], key[512], err[256], port[16];
	int fd = -1;

	memset(c, 0, sizeof(*c));
	snprintf(ca, sizeof(ca), "%s/ca.crt", F->dir);
	snprintf(cert, sizeof(cert), "%s/T-A.crt", F->dir);
	snprintf(key, sizeof(key), "%s/T-A.key", F->dir);
	snprintf(port, sizeof(port), "%d", F->port);
	assert_int_equal(kp_tls_conf_new(&c->conf, KP_TLS_CLIENT, ca, cert, key, err, sizeof(err)), 0);
	assert_int_equal(kp_tcp_connect("127.0.0.1", port, 3000, &fd), 0);
	assert_int_equal(kp_tls_handshake(&c->t, c->conf, fd, "backend", 3000, err, sizeof(err)), 0);
	snprintf(cert, sizeof(cert), "%s/backend.crt", F->dir);
	assert_int_equal(kp_cert_load(&c->backend_cert, cert), 0);
}

static void conn_ask(struct conn *c, const struct kp_msg *out, enum kp_msg_type want)
{
	kp_msg_clear(&c->m);
	free(c->buf);
	c->buf = NULL;
	assert_int_equal(kp_msg_send(c->t, out, 3000), 0);
	assert_int_equal(kp_msg_recv(c->t, &c->m, &c->buf, 3000), 0);
	if (c->m.type != want)
		fail_msg("expected %s, got %s (%s)", kp_msg_type_name(want),
		         kp_msg_type_name(c->m.type), c->m.reason);
}

static void conn_close(struct conn *c)
{
	struct kp_msg out;

	memset(&out, 0, sizeof(out));
	out.type = KP_MSG_BYE;
	kp_msg_send(c->t, &out, 3000);
	kp_msg_clear(&c->m);
	free(c->buf);
	kp_tls_close(c->t);
	kp_tls_conf_free(c->conf);
	kp_cert_free(c->backend_cert);
}

/* Opens a connection and says hello as T-A; out is left zeroed but for the hello. */
static void conn_hello(struct conn *c, struct kp_msg *out)
{
	conn_open(c);
	memset(out, 0, sizeof(*out));
	out->type = KP_MSG_HELLO;
	strcpy(out->terminal, "T-A");
	conn_ask(c, out, KP_MSG_WELCOME);
}

/* hello, then the bundle newer than version 0 (opened and checked like a terminal does). */
static void fetch_bundle(struct kp_bundle *b)
{
	struct conn c;
	struct kp_msg out;

	conn_hello(&c, &out);
	out.type = KP_MSG_GETCONFIG;
	conn_ask(&c, &out, KP_MSG_CONFIG);
	assert_int_equal(c.m.has_bundle, 1);
	assert_int_equal(kp_bundle_open(c.backend_cert, c.m.bundle.p, c.m.bundle.n, "T-A", 0, b),
	                 KP_SYNC_OK);
	conn_close(&c);
}

/* Uploads signed records 1..n of T-A (a link request among them) as a terminal would. */
static void upload(const struct kp_record *recs, size_t n)
{
	uint8_t prev[KP_SHA256_LEN] = { 0 };
	struct kp_bytes items[8];
	struct conn c;
	struct kp_msg out;
	kp_key *key = NULL;
	char path[512];

	assert_true(n <= 8);
	snprintf(path, sizeof(path), "%s/T-A.key", F->dir);
	assert_int_equal(kp_key_load(&key, path), 0);
	for (size_t i = 0; i < n; i++) {
		struct kp_record r = recs[i];
		uint8_t *payload = NULL, *cose = NULL;
		size_t len = 0, cose_len = 0;

		memcpy(r.prev, prev, KP_SHA256_LEN);
		assert_int_equal(kp_record_encode(&r, &payload, &len), KP_RECORD_OK);
		assert_int_equal(kp_sha256(payload, len, prev), 0);
		assert_int_equal(kp_cose_sign1(key, "T-A", payload, len, &cose, &cose_len), KP_RECORD_OK);
		items[i].p = cose;
		items[i].n = cose_len;
		free(payload);
	}
	kp_key_free(key);
	conn_hello(&c, &out);
	out.type = KP_MSG_RECORDS;
	out.items = items;
	out.n_items = n;
	conn_ask(&c, &out, KP_MSG_ACK);
	assert_int_equal(c.m.acked, n);
	conn_close(&c);
	for (size_t i = 0; i < n; i++)
		free((void *)items[i].p);
}

/* kippuctl linkage add calls that change nothing: the token is 0xD1's unless a row names one. */
struct bad_add {
	const char *name;
	const char *token;
	const char *rest;
	int rc;
};

static const struct bad_add bad_adds[] = {
	{ "token:00", "00", "resident 2026-01-01T00:00:00Z 2030-01-01T00:00:00Z", 1 },
	{ "until before from", NULL, "resident 2030-01-01T00:00:00Z 2026-01-01T00:00:00Z", 2 },
	{ "empty category", NULL, "'' 2026-01-01T00:00:00Z 2030-01-01T00:00:00Z", 2 },
	{ "--card felica:0101", NULL, "resident 2026-01-01T00:00:00Z 2030-01-01T00:00:00Z "
	  "--card felica:0101 --token-key token.key", 1 },
};

/* What linkage list says of the 2025-01-01Z to 2099-01-01+09:00 linkage at a chosen time. */
static const char *const list_at[][2] = {     /* --at, status */
	{ "2024-06-01T00:00:00Z", "not yet" },
	{ "2098-12-31T15:00:00Z", "expired" },
	{ "2098-12-31T14:59:59Z", "active" },
};

static void test_kippuctl_linkage_end_to_end(void **state)
{
	struct kp_bundle b;
	struct kp_record recs[2];
	uint8_t key[KP_TOKEN_KEY_LEN], idm[8] = { 1, 1, 2, 3, 4, 5, 6, 7 }, alice[KP_TOKEN_LEN];
	uint8_t bob[KP_TOKEN_LEN], l[KP_TOKEN_LEN];
	char path[512];

	(void)state;
	assert_int_equal(sh("\"$CTL\" ca create --key ca.key --cert ca.crt >/dev/null && "
	                    "\"$CTL\" backend create --ca-key ca.key --ca-cert ca.crt --key backend.key "
	                    "--cert backend.crt >/dev/null && "
	                    "\"$CTL\" terminal create --ca-key ca.key --ca-cert ca.crt --id T-A "
	                    "--key T-A.key --cert T-A.crt >/dev/null && "
	                    "\"$CTL\" token-key create token.key >/dev/null && "
	                    "\"$CTL\" backend operator backend.db OP-G 'Gunma Demo Bus' && "
	                    "\"$CTL\" backend product backend.db RES5 5 OP-G '5 resident rides' "
	                    "--category resident && "
	                    "\"$CTL\" backend product backend.db ANY5 5 OP-G '5 rides' && "
	                    "\"$CTL\" backend terminal add backend.db T-A --operator OP-G >/dev/null"),
	                 0);
	/* usage errors change nothing */
	assert_int_equal(sh("\"$CTL\" backend product backend.db BAD 5 OP-G bad --category 'a b' "
	                    "2>/dev/null"), 2);
	for (size_t i = 0; i < sizeof(bad_adds) / sizeof(bad_adds[0]); i++) {
		const struct bad_add *c = &bad_adds[i];
		int rc = sh("\"$CTL\" linkage add backend.db token:%s %s 2>/dev/null",
		            c->token != NULL ? c->token : hex16(0xD1), c->rest);

		if (rc != c->rc)
			fail_msg("linkage add, %s: exit status %d, expected %d", c->name, rc, c->rc);
	}
	assert_int_equal(sh("\"$CTL\" linkage frobnicate backend.db 2>/dev/null"), 2);
	assert_int_equal(sh("\"$CTL\" linkage list backend.db > list.txt && grep -qx '(none)' list.txt"),
	                 0);

	/* a resident links alice's card at the counter (online) */
	assert_int_equal(sh("\"$CTL\" linkage add backend.db token:%s resident 2025-01-01T00:00:00Z "
	                    "2099-01-01T00:00:00+09:00 --card felica:0101020304050607 "
	                    "--token-key token.key > add.txt && grep -q '1 card linked' add.txt",
	                    hex16(0xD1)), 0);
	assert_int_equal(sh("\"$CTL\" linkage list backend.db > list.txt && "
	                    "grep -q '%s .*resident .*active .*1' list.txt", hex16(0xD1)), 0);
	assert_int_equal(sh("\"$CTL\" linkage cards backend.db > cards.txt && "
	                    "grep -q 'backend' cards.txt"), 0);
	/* the status as of a chosen time (an audit's or a demo's day), not only now */
	for (size_t i = 0; i < sizeof(list_at) / sizeof(list_at[0]); i++)
		if (sh("\"$CTL\" linkage list backend.db --at %s >at.txt && "
		       "grep -q '%s .*resident .*%s .*1' at.txt", list_at[i][0], hex16(0xD1),
		       list_at[i][1]) != 0)
			fail_msg("linkage list --at %s: not '%s'", list_at[i][0], list_at[i][1]);
	assert_int_equal(sh("\"$CTL\" linkage list backend.db --at tomorrow 2>/dev/null"), 2);
	assert_int_equal(sh("\"$CTL\" linkage cards backend.db --at 2030-01-01T00:00:00Z "
	                    "2>/dev/null"), 2);
	start_backend();
	fetch_bundle(&b);
	snprintf(path, sizeof(path), "%s/token.key", F->dir);
	assert_int_equal(kp_token_key_load(path, key), 0);
	assert_int_equal(kp_token_derive(key, "felica", idm, sizeof(idm), alice), 0);
	tok(l, 0xD1);
	assert_int_equal(b.n_eligibility, 2);
	for (size_t i = 0; i < 2; i++) {
		const struct kp_bundle_eligibility *e = &b.eligibility[i];

		assert_string_equal(e->category, "resident");
		assert_true(e->valid_from_ms == 1735689600000LL);          /* 2025-01-01Z */
		assert_true(e->valid_until_ms == 4070876400000LL);         /* 2099-01-01+09:00 */
		if (e->has_via) {
			assert_memory_equal(e->token, alice, KP_TOKEN_LEN);
			assert_memory_equal(e->via, l, KP_TOKEN_LEN);
		} else {
			assert_memory_equal(e->token, l, KP_TOKEN_LEN);
		}
	}
	assert_string_equal(b.products[1].id, "RES5");
	assert_string_equal(b.products[1].category, "resident");
	assert_string_equal(b.products[0].category, "");
	kp_bundle_free(&b);

	/* bob links his card at a terminal in link mode: the link record goes up with the
	 * next sync and the backend accepts it */
	idm[7] = 0xA0;
	assert_int_equal(kp_token_derive(key, "felica", idm, sizeof(idm), bob), 0);
	kp_zeroize(key, sizeof(key));
	memset(recs, 0, sizeof(recs));
	for (int i = 0; i < 2; i++) {
		strcpy(recs[i].terminal, "T-A");
		recs[i].seq = (uint64_t)i + 1;
		recs[i].time_ms = 1767225600000LL + i * 60000;              /* 2026-01-01 */
		strcpy(recs[i].operator_id, "OP-G");
		recs[i].has_token = 1;
		recs[i].has_via = 1;
		tok(recs[i].via, 0xD1);
	}
	strcpy(recs[0].kind, "link");
	memcpy(recs[0].token, bob, KP_TOKEN_LEN);
	strcpy(recs[0].result, "requested");
	strcpy(recs[0].reason, "link-request");
	strcpy(recs[1].kind, "tap");                 /* alice rides at the resident fare */
	memcpy(recs[1].token, alice, KP_TOKEN_LEN);
	strcpy(recs[1].category, "resident");
	recs[1].rides = 1;
	recs[1].amount = 100;
	strcpy(recs[1].result, "accepted");
	strcpy(recs[1].reason, "ok");
	upload(recs, 2);
	assert_int_equal(sh("\"$CTL\" linkage requests backend.db --terminal T-A > req.txt && "
	                    "grep -q '^T-A .* 1 .*accepted .*linked' req.txt"), 0);
	assert_int_equal(sh("\"$CTL\" linkage cards backend.db > cards.txt && "
	                    "grep -q 'terminal:T-A:1' cards.txt"), 0);
	assert_int_equal(sh("\"$CTL\" backend records backend.db > rec.txt && "
	                    "grep -q ' link .*%s' rec.txt && grep -q ' tap .*%s .*resident' rec.txt",
	                    hex16(0xD1), hex16(0xD1)), 0);
	/* the independent verifier reads keys 18 and 19 */
	assert_int_equal(sh("\"$CTL\" backend export backend.db T-A exp >/dev/null && "
	                    "python3 %s/cose_verify.py exp > verify.txt && "
	                    "grep -q 'verified 2 records' verify.txt", F->src), 0);
	fetch_bundle(&b);
	assert_int_equal(b.n_eligibility, 3);
	kp_bundle_free(&b);

	/* revoked: the next bundle withdraws the linkage and both cards */
	assert_int_equal(sh("\"$CTL\" linkage revoke backend.db token:%s > rev.txt && "
	                    "grep -q revoked rev.txt",
	                    hex16(0xD1)), 0);
	assert_int_equal(sh("\"$CTL\" linkage revoke backend.db token:%s 2>/dev/null", hex16(0xD1)), 1);
	assert_int_equal(sh("\"$CTL\" linkage link backend.db token:%s felica:01010203040506B0 "
	                    "--token-key token.key > link.txt 2>&1; test $? -eq 1 && "
	                    "grep -q revoked link.txt", hex16(0xD1)), 0);
	assert_int_equal(sh("\"$CTL\" linkage list backend.db > list.txt && "
	                    "grep -q 'revoked .*2' list.txt"), 0);
	fetch_bundle(&b);
	assert_int_equal(b.n_eligibility, 0);
	kp_bundle_free(&b);
}

/* The linkage token of a My Number card's user-authentication certificate (an RSA-2048
 * certificate from a test JPKI CA here), computed three ways that must agree: kippuctl, an
 * independent Python (standard library: DER walked by hand, hmac), and the terminal's
 * kp_linkage_token. */
static void test_linkage_token_from_certificate(void **state)
{
	kp_rsa *ca = NULL, *card = NULL;
	kp_cert *ca_cert = NULL, *auth = NULL;
	uint8_t key[KP_TOKEN_KEY_LEN], t[KP_TOKEN_LEN];
	char path[512], ca_path[512], hex[2 * KP_TOKEN_LEN + 1], *out;

	(void)state;
	assert_int_equal(sh("\"$CTL\" token-key create token.key >/dev/null"), 0);
	snprintf(ca_path, sizeof(ca_path), "%s/jpki-ca.der", F->dir);
	snprintf(path, sizeof(path), "%s/auth.der", F->dir);
	assert_int_equal(kp_rsa_generate(&ca, 2048), 0);
	assert_int_equal(kp_rsa_generate(&card, 2048), 0);
	assert_int_equal(kp_cert_create_ca_rsa(ca, "JPKI for user authentication test CA",
	                                       1700000000, 2000000000, ca_path), 0);
	assert_int_equal(kp_cert_load(&ca_cert, ca_path), 0);
	/* a serial with the top bit set: its DER INTEGER has a leading 00 */
	assert_int_equal(kp_cert_issue_rsa(ca, ca_cert, card, "auth", 0x00A1B2C3D4E5F607LL,
	                                   1700000000, 2000000000, path), 0);

	assert_int_equal(sh("\"$CTL\" linkage token --token-key token.key --cert auth.der "
	                    "--jpki-ca jpki-ca.der > ctl.txt"), 0);
	assert_int_equal(sh("python3 - > py.txt <<'EOF'\n"
	                    "import hmac, hashlib\n"
	                    "def tlv(b, i):\n"
	                    "    tag, n = b[i], b[i + 1]; i += 2\n"
	                    "    if n & 0x80:\n"
	                    "        k = n & 0x7f; n = int.from_bytes(b[i:i + k], 'big'); i += k\n"
	                    "    return tag, i, i + n      # tag, content start, end\n"
	                    "def fields(der):\n"
	                    "    _, c, _ = tlv(der, 0)              # Certificate\n"
	                    "    _, i, _ = tlv(der, c)              # tbsCertificate\n"
	                    "    tag, s, e = tlv(der, i)\n"
	                    "    if tag == 0xa0: tag, s, e = tlv(der, e)   # [0] version\n"
	                    "    serial = der[s:e]\n"
	                    "    for _ in range(4): _, _, e = tlv(der, e)  # sig alg, issuer, validity, subject\n"
	                    "    start = e; _, _, e = tlv(der, e)   # subjectPublicKeyInfo, whole\n"
	                    "    return serial, der[start:e]\n"
	                    "serial, _ = fields(open('auth.der', 'rb').read())\n"
	                    "_, ca_spki = fields(open('jpki-ca.der', 'rb').read())\n"
	                    "v = int.from_bytes(serial, 'big', signed=True)\n"
	                    "canon = v.to_bytes(((v if v >= 0 else ~v).bit_length() + 8) // 8, 'big', signed=True)\n"
	                    "key = bytes.fromhex(open('token.key').read().strip())\n"
	                    "print(hmac.new(key, b'jpki2' + hashlib.sha256(ca_spki).digest() + canon,"
	                    " hashlib.sha256).hexdigest()[:32])\n"
	                    "EOF"), 0);
	assert_int_equal(sh("cmp -s ctl.txt py.txt"), 0);
	/* the terminal derives the same token from the same certificate */
	snprintf(path, sizeof(path), "%s/token.key", F->dir);
	assert_int_equal(kp_token_key_load(path, key), 0);
	snprintf(path, sizeof(path), "%s/auth.der", F->dir);
	assert_int_equal(kp_cert_load(&auth, path), 0);
	assert_int_equal(kp_linkage_token(key, ca_cert, auth, t), 0);
	kp_zeroize(key, sizeof(key));
	kp_hex(t, KP_TOKEN_LEN, hex);
	snprintf(path, sizeof(path), "%s/ctl.txt", F->dir);
	out = tu_read(path);
	assert_non_null(out);
	assert_int_equal(strlen(out), 33);
	assert_memory_equal(out, hex, 32);
	/* nothing of the certificate is printed: exactly one line, the token */
	assert_int_equal(out[32], '\n');
	free(out);

	/* jpki:<certificate> names the same linkage as token:<hex> */
	assert_int_equal(sh("\"$CTL\" linkage add backend.db jpki:auth.der resident "
	                    "2025-01-01T00:00:00Z 2099-01-01T00:00:00Z --token-key token.key "
	                    "--jpki-ca jpki-ca.der "
	                    ">/dev/null && \"$CTL\" linkage list backend.db > list.txt && "
	                    "grep -qi \"^$(cat ctl.txt) \" list.txt"),
	                 0);
	assert_int_equal(sh("\"$CTL\" linkage revoke backend.db token:$(cat ctl.txt) >/dev/null"), 0);
	assert_int_equal(sh("\"$CTL\" linkage list backend.db > list.txt && grep -q revoked list.txt"),
	                 0);
	/* without the token key, or with no certificate, nothing happens */
	assert_int_equal(sh("\"$CTL\" linkage add backend.db jpki:auth.der resident 2025-01-01T00:00:00Z "
	                    "2099-01-01T00:00:00Z 2>/dev/null"), 1);
	assert_int_equal(sh("\"$CTL\" linkage token --token-key token.key --cert nothing.der "
	                    "--jpki-ca jpki-ca.der 2>/dev/null"), 1);
	/* without the CA that issued it, no token: it is bound to that CA's key */
	assert_int_equal(sh("\"$CTL\" linkage token --token-key token.key --cert auth.der "
	                    "2>/dev/null"), 2);
	assert_int_equal(sh("\"$CTL\" linkage token --token-key token.key --cert auth.der "
	                    "--jpki-ca auth.der 2>err.txt; test $? -eq 1 && grep -q 'not a My Number' err.txt"),
	                 0);
	assert_int_equal(sh("\"$CTL\" linkage add backend.db jpki:auth.der resident "
	                    "2025-01-01T00:00:00Z 2099-01-01T00:00:00Z --token-key token.key "
	                    "2>err.txt; test $? -eq 1 && grep -q -- '--jpki-ca' err.txt"), 0);
	assert_int_equal(sh("\"$CTL\" linkage token --token-key token.key 2>/dev/null"), 2);
	kp_cert_free(auth);
	kp_cert_free(ca_cert);
	kp_rsa_free(ca);
	kp_rsa_free(card);
}

/* The tests below run between setup and teardown unless their row names others. */
#define FX_TEST(test) cmocka_unit_test_setup_teardown(test, setup, teardown)

int main(void)
{
	const struct CMUnitTest tests[] = {
		FX_TEST(test_linkage_bundle_and_revocation),
		FX_TEST(test_link_requests_ingested),
		FX_TEST(test_clone_detection),
		FX_TEST(test_migration_from_version_1),
		FX_TEST(test_kippuctl_linkage_end_to_end),
		FX_TEST(test_linkage_token_from_certificate),
	};

	/* the store's cases on PostgreSQL (KIPPU_TEST_PG, tests/backend/test_store_pg.sh) */
	const struct CMUnitTest on_pg[] = {
		FX_TEST(test_linkage_bundle_and_revocation),
		FX_TEST(test_link_requests_ingested),
		FX_TEST(test_clone_detection),
	};
	const char *pg = getenv("KIPPU_TEST_PG");

	signal(SIGPIPE, SIG_IGN);
	if (pg != NULL && pg[0] != '\0')
		return cmocka_run_group_tests_name("linkage_pg", on_pg, NULL, NULL);
	return cmocka_run_group_tests_name("linkage", tests, NULL, NULL);
}
