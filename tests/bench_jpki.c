/* SPDX-License-Identifier: Apache-2.0 */
/* make bench, the My Number part: the time from a My Number card's arrival (the mock reader
 * has activated it) to the decision, committed: SELECT JPKI, the user-authentication
 * certificate read (the DER header, then chunks of at most 255 bytes), the chain check
 * against the JPKI CA (one RSA-2048 verification), the linkage token, the lookup, the
 * signed journal record and the durable commit. The mock HAL answers in memory, so RF and
 * reader time are not in these figures.
 *
 * Certificates: a JPKI-sized one (about 1.5 KB: the extensions a real user-authentication
 * certificate carries, issued with OpenSSL by a test CA) and, for comparison, the smaller
 * one `kippuctl jpki card create` makes. A small store of its own (N_FILL entitlements and
 * denylist entries besides the cards'), in a folder removed afterwards. */
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "kp_loadgen.h"
#include "bench_util.h"
#include "jpki_ext.h"
#include "kp_terminal.h"

#define N_CARDS  20                 /* consecutive taps are different cards */
#define N_FILL   100000
#define DEF_TAPS 500

static const uint8_t token_key[KP_TOKEN_KEY_LEN] = { 0x6A, 0x70, 0x6B, 0x69 };
static char run[1100];              /* the run's own folder, removed at the end */

static void die(const char *what, int rc)
{
	fprintf(stderr, "bench-jpki: %s: %s\n", what, kp_strerror(rc));
	exit(1);
}

static const char *path(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static const char *path(const char *fmt, ...)
{
	static char buf[4][1400];
	static int slot;
	char *out = buf[slot++ % 4], name[256];
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(name, sizeof(name), fmt, ap);
	va_end(ap);
	snprintf(out, sizeof(buf[0]), "%s/%s", run, name);
	return out;
}

static void write_file(const char *p, const void *data, size_t len)
{
	FILE *fp = fopen(p, "wb");

	if (fp == NULL || fwrite(data, 1, len, fp) != len || fclose(fp) != 0) {
		perror(p);
		exit(1);
	}
}

static uint8_t *read_file(const char *p, size_t *len)
{
	FILE *fp = fopen(p, "rb");
	uint8_t *buf;
	long n;

	if (fp == NULL) {
		perror(p);
		exit(1);
	}
	fseek(fp, 0, SEEK_END);
	n = ftell(fp);
	fseek(fp, 0, SEEK_SET);
	buf = malloc((size_t)n + 1);
	if (buf == NULL || fread(buf, 1, (size_t)n, fp) != (size_t)n)
		exit(1);
	fclose(fp);
	*len = (size_t)n;
	return buf;
}

/* The CA, and N_CARDS card folders of each kind sharing one RSA key: jN (JPKI-sized, by
 * OpenSSL) and kN (kippu's own). Returns the CA certificate. */
static kp_cert *make_cards(int64_t t0, size_t *big_len, size_t *small_len)
{
	kp_rsa *ca = NULL, *card = NULL;
	kp_cert *ca_cert = NULL;
	const uint8_t *ca_der;
	uint8_t *key;
	size_t ca_der_len, key_len;
	int rc;

	if ((rc = kp_rsa_generate(&ca, 2048)) != 0 || (rc = kp_rsa_save(ca, path("CA.key"))) != 0 ||
	    (rc = kp_cert_create_ca_rsa(ca, "JPKI test authentication CA", t0 - 86400,
	                                t0 + 3650 * 86400LL, path("CA.crt"))) != 0 ||
	    (rc = kp_cert_load(&ca_cert, path("CA.crt"))) != 0 ||
	    (rc = kp_cert_der(ca_cert, &ca_der, &ca_der_len)) != 0 ||
	    (rc = kp_rsa_generate(&card, 2048)) != 0 || (rc = kp_rsa_save(card, path("card.key"))) != 0)
		die("JPKI test CA and card key", rc);
	key = read_file(path("card.key"), &key_len);
	write_file(path("ext.cnf"), jpki_ext, strlen(jpki_ext));
	{
		char cmd[3000];

		snprintf(cmd, sizeof(cmd), "cd '%s' && openssl req -new -key card.key -subj "
		         "'/C=JP/L=Test City/CN=0123456789ABCDEF0123456789ABCDEF' -out card.csr", run);
		if (system(cmd) != 0) {
			fprintf(stderr, "bench-jpki: openssl req failed\n");
			exit(1);
		}
		for (int i = 0; i < N_CARDS; i++) {
			snprintf(cmd, sizeof(cmd), "cd '%s' && mkdir j%d k%d && openssl x509 -req -in card.csr "
			         "-CA CA.crt -CAkey CA.key -set_serial %d -days 1825 -extfile ext.cnf "
			         "-extensions v3 -outform DER -out j%d/auth.der 2>/dev/null", run, i, i,
			         1000 + i, i);
			if (system(cmd) != 0) {
				fprintf(stderr, "bench-jpki: openssl x509 failed\n");
				exit(1);
			}
			write_file(path("j%d/auth.key", i), key, key_len);
			write_file(path("j%d/ca.der", i), ca_der, ca_der_len);
			write_file(path("k%d/auth.key", i), key, key_len);
			write_file(path("k%d/ca.der", i), ca_der, ca_der_len);
			if ((rc = kp_cert_issue_rsa(ca, ca_cert, card, "JPKI test card", 2000 + i,
			                            t0 - 86400, t0 + 5 * 365 * 86400LL,
			                            path("k%d/auth.der", i))) != 0)
				die("card certificate", rc);
		}
	}
	free(read_file(path("j0/auth.der"), big_len));
	free(read_file(path("k0/auth.der"), small_len));
	kp_rsa_free(ca);
	kp_rsa_free(card);
	free(key);
	return ca_cert;
}

static void linkage_of(const kp_cert *ca, const char *card_dir, uint8_t token[KP_TOKEN_LEN])
{
	kp_cert *cert = NULL;
	int rc;

	if ((rc = kp_cert_load(&cert, path("%s/auth.der", card_dir))) != 0 ||
	    (rc = kp_linkage_token(token_key, ca, cert, token)) != 0)
		die("linkage token", rc);
	kp_cert_free(cert);
}

/* Each card's linkage holds a resident pass and the resident category; the filler is
 * entitlements and denylist entries of other tokens. */
static void build_store(const kp_cert *ca, const char *db, int64_t now_ms)
{
	const char *ops[] = { "OP-A" };
	uint64_t x = 0x9E3779B97F4A7C15ULL;
	kp_store *s = NULL;
	int rc;

	if ((rc = kp_store_open(&s, db)) != KP_OK || (rc = kp_store_begin(s)) != KP_OK ||
	    (rc = kp_store_put_operator(s, "OP-A", "A")) != KP_OK ||
	    (rc = kp_store_put_product_cat(s, "RES", "resident pass", 1000000, "resident", ops, 1))
	        != KP_OK ||
	    (rc = kp_store_put_product(s, "P10", "10 rides", 10, ops, 1)) != KP_OK)
		die("store", rc);
	for (int k = 0; k < 2; k++) {
		for (int i = 0; i < N_CARDS; i++) {
			struct kp_entitlement e;
			char name[16];

			memset(&e, 0, sizeof(e));
			snprintf(name, sizeof(name), "%c%d", k ? 'k' : 'j', i);
			linkage_of(ca, name, e.token);
			e.id = 1 + k * N_CARDS + i;
			snprintf(e.product, sizeof(e.product), "RES");
			e.rides_left = 1000000;
			e.valid_from_ms = now_ms - 86400000LL;
			e.valid_until_ms = now_ms + 365 * 86400000LL;
			if ((rc = kp_store_put_entitlement(s, &e)) != KP_OK ||
			    (rc = kp_store_put_eligibility(s, e.token, "resident", e.valid_from_ms,
			                                   e.valid_until_ms, NULL)) != KP_OK)
				die("card entitlement", rc);
		}
	}
	for (int i = 0; i < N_FILL; i++) {
		struct kp_entitlement e;
		uint8_t t[KP_TOKEN_LEN];

		memset(&e, 0, sizeof(e));
		for (int b = 0; b < KP_TOKEN_LEN; b++) {
			x ^= x << 13; x ^= x >> 7; x ^= x << 17;
			e.token[b] = (uint8_t)x;
			t[b] = (uint8_t)(x >> 8);
		}
		e.id = 1000 + i;
		snprintf(e.product, sizeof(e.product), "P10");
		e.rides_left = 10;
		e.valid_from_ms = 0;
		e.valid_until_ms = now_ms + 365 * 86400000LL;
		if ((rc = kp_store_put_entitlement(s, &e)) != KP_OK ||
		    (rc = kp_store_put_denylist(s, t, "", 0)) != KP_OK)
			die("filler", rc);
	}
	if ((rc = kp_store_commit(s)) != KP_OK)
		die("commit", rc);
	kp_store_close(s);
}

static void write_scenario(const char *file, char kind, int64_t start_s, int taps)
{
	FILE *fp = fopen(file, "w");

	if (fp == NULL) {
		perror(file);
		exit(1);
	}
	fprintf(fp, "start %lld\npace virtual\n", (long long)start_s);
	for (int i = 0; i < N_CARDS; i++)
		fprintf(fp, "card c%d mynumber dir=%c%d\n", i, kind, i);
	for (int t = 0; t < taps; t++)
		fprintf(fp, "tap +%d c%d\n", t * 2, t % N_CARDS);
	fclose(fp);
}

struct lat {
	double *v;
	size_t n;
};

static void summary(struct lat *l, double out[3])
{
	qsort(l->v, l->n, sizeof(double), cmp_double);
	out[0] = pct(l->v, l->n, 50) / 1e3;
	out[1] = pct(l->v, l->n, 99) / 1e3;
	out[2] = l->v[l->n - 1] / 1e3;
}

/* Whole taps through kp_tap_card: card activated -> decided and committed. */
static void whole_taps(kp_tap_engine *e, kp_store *s, const char *scn, int taps, struct lat *l)
{
	struct kp_poll poll = { KP_TECH_FELICA | KP_TECH_ISO14443B, 0x0003, 1 };
	struct kp_reader *r = NULL;
	char conn[1300];
	int rc;

	snprintf(conn, sizeof(conn), "mock:%s", scn);
	if ((rc = kp_reader_open(&r, conn)) != KP_HAL_OK)
		die("reader", rc);
	l->n = 0;
	while (l->n < (size_t)taps) {
		struct kp_card_info info;
		struct kp_tap_outcome o;
		double t0;

		if ((rc = kp_reader_wait_card(r, &poll, &info, 100)) != KP_HAL_OK)
			die("wait_card", rc);
		t0 = now_us();
		rc = kp_tap_card(e, r, &info, kp_reader_now_ms(r), &o);
		l->v[l->n++] = now_us() - t0;
		if (rc != KP_OK)
			die("tap", rc);
		if (o.kind != KP_TAP_ACCEPTED) {
			fprintf(stderr, "bench-jpki: tap %zu %s\n", l->n, o.reason);
			exit(1);
		}
		kp_reader_release(r, 0, 0);
		if (l->n % 16 == 0)
			kp_store_idle(s);      /* riders come seconds apart */
	}
	kp_reader_close(r);
}

/* The same path in its parts: read, parse + chain check, token, decide + commit. */
static void parts(kp_tap_engine *e, kp_store *s, const kp_cert *ca, const char *scn, int taps,
                  struct lat p[4])
{
	static uint8_t der[KP_JPKI_CERT_MAX];
	struct kp_poll poll = { KP_TECH_FELICA | KP_TECH_ISO14443B, 0x0003, 1 };
	struct kp_reader *r = NULL;
	char conn[1300], err[256];
	int rc;

	snprintf(conn, sizeof(conn), "mock:%s", scn);
	if ((rc = kp_reader_open(&r, conn)) != KP_HAL_OK)
		die("reader", rc);
	for (int t = 0; t < taps; t++) {
		struct kp_card_info info;
		struct kp_tap_outcome o;
		struct kp_jpki j;
		uint8_t token[KP_TOKEN_LEN];
		kp_cert *cert = NULL;
		size_t len = 0;
		int64_t now;
		double t0, t1, t2, t3, t4;

		if ((rc = kp_reader_wait_card(r, &poll, &info, 100)) != KP_HAL_OK)
			die("wait_card", rc);
		now = kp_reader_now_ms(r);
		t0 = now_us();
		kp_jpki_init(&j, r, 100);
		rc = kp_jpki_read_auth_cert(&j, der, sizeof(der), &len);
		t1 = now_us();
		if (rc != KP_OK)
			die("read", rc);
		if ((rc = kp_cert_parse(&cert, der, len)) != 0 ||
		    (rc = kp_cert_check_at(cert, ca, now, 0x80, err, sizeof(err))) != 0)
			die("chain", rc);
		t2 = now_us();
		if ((rc = kp_linkage_token(token_key, ca, cert, token)) != 0)
			die("token", rc);
		t3 = now_us();
		if ((rc = kp_tap_decide(e, token, now, &o)) != KP_OK || o.kind != KP_TAP_ACCEPTED)
			die("decide", rc);
		t4 = now_us();
		p[0].v[p[0].n++] = t1 - t0;
		p[1].v[p[1].n++] = t2 - t1;
		p[2].v[p[2].n++] = t3 - t2;
		p[3].v[p[3].n++] = t4 - t3;
		kp_cert_free(cert);
		kp_reader_release(r, 0, 0);
		if ((t + 1) % 16 == 0)
			kp_store_idle(s);
	}
	kp_reader_close(r);
}

int main(int argc, char **argv)
{
	char dir[900] = "build/bench-jpki", cmd[1300];
	const char *json = NULL;
	struct kp_terminal_cfg cfg;
	kp_store *s = NULL;
	kp_key *key = NULL;
	kp_tap_engine *e = NULL;
	kp_cert *ca;
	struct lat big, small, part[4];
	double rb[3], rs[3], rp[4][3];
	size_t big_len = 0, small_len = 0;
	int64_t t0 = (int64_t)time(NULL);
	int taps = DEF_TAPS, rc;
	const struct bench_opt opts[] = {
		{ "dir", BENCH_OPT_PATH, dir, sizeof(dir) },
		{ "taps", BENCH_OPT_INT, &taps, 0 },
		{ "json-append", BENCH_OPT_STR, &json, 0 },
	};

	if (bench_opts(argc, argv, opts, sizeof(opts) / sizeof(opts[0])) != 0)
		return 2;
	if (taps < 10 || taps > 100000) {
		fprintf(stderr, "bench-jpki: --taps 10 to 100000\n");
		return 2;
	}
	if (mkdir(dir, 0700) != 0 && errno != EEXIST) {
		perror(dir);
		return 1;
	}
	snprintf(run, sizeof(run), "%s/run-XXXXXX", dir);
	if (mkdtemp(run) == NULL) {
		perror(run);
		return 1;
	}
	big.v = calloc((size_t)taps, sizeof(double));
	small.v = calloc((size_t)taps, sizeof(double));
	for (int i = 0; i < 4; i++) {
		part[i].v = calloc((size_t)taps, sizeof(double));
		part[i].n = 0;
		if (part[i].v == NULL)
			return 1;
	}
	if (big.v == NULL || small.v == NULL)
		return 1;
	kp_terminal_register_mock_signer();
	ca = make_cards(t0, &big_len, &small_len);
	/* the scenario's clock starts after OpenSSL's certificates do */
	build_store(ca, path("jpki.db"), (t0 + 60) * 1000);
	write_scenario(path("big.txt"), 'j', t0 + 60, taps);
	write_scenario(path("small.txt"), 'k', t0 + 60, taps);
	write_scenario(path("parts.txt"), 'j', t0 + 60 + 2 * taps, taps);

	kp_terminal_cfg_defaults(&cfg);
	snprintf(cfg.terminal_id, sizeof(cfg.terminal_id), "BENCH-JPKI");
	snprintf(cfg.operator_id, sizeof(cfg.operator_id), "OP-A");
	snprintf(cfg.jpki_ca, sizeof(cfg.jpki_ca), "%s", path("CA.crt"));
	cfg.double_tap_window_ms = 0;        /* a card comes back every 40 s: always a ride */
	if ((rc = kp_store_open(&s, path("jpki.db"))) != KP_OK || (rc = kp_key_generate(&key)) != 0 ||
	    (rc = kp_tap_engine_open(&e, s, &cfg, key, token_key)) != KP_OK)
		die("set-up", rc);
	whole_taps(e, s, path("big.txt"), taps, &big);
	whole_taps(e, s, path("small.txt"), taps, &small);
	parts(e, s, ca, path("parts.txt"), taps, part);
	kp_tap_engine_close(e);
	kp_store_close(s);
	kp_key_free(key);
	kp_cert_free(ca);
	summary(&big, rb);
	summary(&small, rs);
	for (int i = 0; i < 4; i++)
		summary(&part[i], rp[i]);

	printf("\nkippu bench, My Number: %d taps by %d mock My Number cards each, through the mock\n"
	       "HAL (in memory: no RF or reader time), the JPKI client and the decision; store of\n"
	       "%d entitlements + %d denylist entries besides the cards'\n\n",
	       taps, N_CARDS, N_FILL, N_FILL);
	printf("| metric (ms)                                               |     p50 |     p99 |     max | target  |\n");
	printf("|-----------------------------------------------------------|---------|---------|---------|---------|\n");
	printf("| tap: card activated -> decided+committed (%4zu-byte cert) | %7.3f | %7.3f | %7.3f | p99<=20 |\n",
	       big_len, rb[0], rb[1], rb[2]);
	printf("| the same, kippuctl's smaller certificate (%4zu bytes)     | %7.3f | %7.3f | %7.3f |         |\n",
	       small_len, rs[0], rs[1], rs[2]);
	printf("| part: SELECTs + certificate read (%2zu READ BINARY)         | %7.3f | %7.3f | %7.3f |         |\n",
	       1 + (big_len - 7 + 254) / 255, rp[0][0], rp[0][1], rp[0][2]);
	printf("| part: parse + chain check (one RSA-2048 verification)     | %7.3f | %7.3f | %7.3f |         |\n",
	       rp[1][0], rp[1][1], rp[1][2]);
	printf("| part: linkage token (HMAC-SHA256)                         | %7.3f | %7.3f | %7.3f |         |\n",
	       rp[2][0], rp[2][1], rp[2][2]);
	printf("| part: lookup, ES256 record, durable commit                | %7.3f | %7.3f | %7.3f |         |\n",
	       rp[3][0], rp[3][1], rp[3][2]);
	printf("\nall %d + %d + %d taps accepted\n", taps, taps, taps);
	if (json != NULL) {
		const struct kp_metric m[] = {
			{ "mynumber_tap_decision_p50", "ms", rb[0] },
			{ "mynumber_tap_decision_p99", "ms", rb[1] },
			{ "mynumber_tap_decision_max", "ms", rb[2] },
			{ "mynumber_tap_decision_small_cert_p99", "ms", rs[1] },
			{ "mynumber_cert_bytes", "bytes", (double)big_len },
		};

		if (kp_metrics_json(json, 1, m, sizeof(m) / sizeof(m[0])) != 0)
			return 1;
	}
	snprintf(cmd, sizeof(cmd), "rm -rf '%s'", run);
	if (system(cmd) != 0)
		fprintf(stderr, "bench-jpki: could not remove %s\n", run);
	rmdir(dir);                          /* if nothing else is in it */
	free(big.v);
	free(small.v);
	for (int i = 0; i < 4; i++)
		free(part[i].v);
	return 0;
}
