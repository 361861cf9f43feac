/* SPDX-License-Identifier: Apache-2.0 */
/* The terminal's My Number (JPKI) path end to end: cards made by the real `kippuctl jpki`
 * (a test CA, a valid card, an expired one, one from another CA, a second valid one, a
 * JPKI-sized 1.5 KB certificate made with OpenSSL), played by the mock reader through the
 * terminal's JPKI client and tap engine. The linkage token (against kippuctl, kp_linkage_token
 * and an independent Python computation), a direct tap accepted with nothing of the
 * certificate stored, every refusal, a revoked linkage, status words through a fake reader,
 * strong mode (PIN and signature; the terminal never blocks a card), link mode with the real
 * kippu-terminal, and over all of it: the input-support and card-face APs never selected. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <limits.h>
#include <fcntl.h>
#include <sys/stat.h>
#include <strings.h>
#include <time.h>
#include <unistd.h>

#include <cmocka.h>

#include "kp_terminal.h"
#include "jpki_ext.h"
#include "testutil.h"

#define DAY_MS        (86400LL * 1000)
#define HANAKO_SERIAL "99058066526772"      /* 0x5A17C0DE1234 */
#define HANAKO_CN     "Hanako Test Resident"
#define TARO_SERIAL   "134257124920927"     /* 0x7A1B2C3D4E5F */
#define TERMINAL_ID   "JPKI-T1"

static const uint8_t AID_JPKI[10]  = { 0xD3, 0x92, 0xF0, 0x00, 0x26, 0x01, 0x00, 0x00, 0x00, 0x01 };
static const uint8_t AID_INPUT[10] = { 0xD3, 0x92, 0x10, 0x00, 0x31, 0x00, 0x01, 0x01, 0x04, 0x08 };
static const uint8_t AID_FACE[10]  = { 0xD3, 0x92, 0x10, 0x00, 0x31, 0x00, 0x01, 0x01, 0x04, 0x02 };
static const uint8_t ALICE_IDM[8]  = { 0x01, 0x01, 0x02, 0x03, 0x04, 0x05, 0x06, 0x07 };

static char dir[256];
static char bin[PATH_MAX];
static int64_t t_now;                       /* when the cards were made (s) */
static uint8_t token_key[KP_TOKEN_KEY_LEN];
static uint8_t lk_hanako[KP_TOKEN_LEN], lk_taro[KP_TOKEN_LEN], lk_big[KP_TOKEN_LEN];

/* Scenarios start an hour after the cards were made (OpenSSL's card starts "now"). */
#define T_START (t_now + 3600)

static const char *p(const char *name)
{
	return tu_path(dir, name);
}

static int ctl(const char *fmt, ...)
{
	char args[2048];
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(args, sizeof(args), fmt, ap);
	va_end(ap);
	return tu_sh("cd %s && %s/kippuctl %s >>ctl.out 2>>ctl.err", dir, bin, args);
}

static int has_aid(const uint8_t *tx, size_t n, const uint8_t aid[10])
{
	for (size_t i = 0; i + 10 <= n; i++)
		if (memcmp(tx + i, aid, 10) == 0)
			return 1;
	return 0;
}

/* ---- totals over every flow: what was sent, what the cards saw ---- */

static struct {
	unsigned long apdus, reads, read_le_max, read_le0, forbidden, other_select;
	unsigned long select_jpki, select_input, select_face, forbidden_apdus, cards, readers;
} tally;

/* ---- the tally: our HAL ops table around the mock reader, counts every APDU (the
 * built-in spy reader, hal/spy_reader.c, logs and overrides them: see the issue-13 tests) ---- */

struct spy {
	struct kp_reader base;
	struct kp_reader *inner;
	char cards[16][32];                     /* the scenario's mynumber cards */
	size_t n_cards;
	int control;                            /* the positive control: not tallied */
	unsigned long apdus, reads, read_le_max, read_le0, forbidden, other_select;
};
static const struct kp_reader_ops spy_ops;

static int spy_open(struct kp_reader **out, const char *conn)
{
	struct spy *s = calloc(1, sizeof(*s));
	int rc;

	if (s == NULL)
		return KP_HAL_E_NOMEM;
	rc = kp_reader_open(&s->inner, conn);
	if (rc != KP_HAL_OK) {
		free(s);
		return rc;
	}
	s->base.ops = &spy_ops;
	*out = &s->base;
	return KP_HAL_OK;
}

static int spy_wait(struct kp_reader *r, const struct kp_poll *poll, struct kp_card_info *info,
                    int timeout_ms)
{
	return kp_reader_wait_card(((struct spy *)r)->inner, poll, info, timeout_ms);
}

static int spy_transceive(struct kp_reader *r, const uint8_t *tx, size_t tx_len, uint8_t *rx,
                          size_t rx_cap, size_t *rx_len, int timeout_ms)
{
	struct spy *s = (struct spy *)r;

	s->apdus++;
	if (has_aid(tx, tx_len, AID_INPUT) || has_aid(tx, tx_len, AID_FACE))
		s->forbidden++;
	/* Every SELECT by DF name names JPKI, and nothing else. */
	if (tx_len >= 3 && tx[1] == 0xA4 && tx[2] == 0x04 &&
	    (tx_len != 15 || memcmp(tx + 5, AID_JPKI, 10) != 0))
		s->other_select++;
	if (tx_len == 5 && tx[0] == 0x00 && tx[1] == 0xB0) {
		s->reads++;
		if (tx[4] == 0)
			s->read_le0++;                  /* Le 00 would be 256 */
		if (tx[4] > s->read_le_max)
			s->read_le_max = tx[4];
	}
	return kp_reader_transceive(s->inner, tx, tx_len, rx, rx_cap, rx_len, timeout_ms);
}

static int spy_release(struct kp_reader *r, int wait_removed, int timeout_ms)
{
	return kp_reader_release(((struct spy *)r)->inner, wait_removed, timeout_ms);
}

static int spy_now(struct kp_reader *r, int64_t *ms)
{
	*ms = kp_reader_now_ms(((struct spy *)r)->inner);
	return KP_HAL_OK;
}

static int spy_describe(struct kp_reader *r, char *buf, size_t cap)
{
	return kp_reader_describe(((struct spy *)r)->inner, buf, cap);
}

static void spy_close(struct kp_reader *r)
{
	struct spy *s = (struct spy *)r;

	kp_reader_close(s->inner);
	free(s);
}

static const struct kp_reader_ops spy_ops = {
	.scheme = "tally", .open = spy_open, .wait_card = spy_wait, .transceive = spy_transceive,
	.release = spy_release, .now_ms = spy_now, .describe = spy_describe, .close = spy_close,
};

static struct spy *spy_of(struct kp_reader *r)
{
	assert_ptr_equal(r->ops, &spy_ops);
	return (struct spy *)r;
}

static struct kp_mock_jpki_stats stats(struct kp_reader *r, const char *card)
{
	struct kp_mock_jpki_stats st;

	memset(&st, 0, sizeof(st));
	assert_int_equal(kp_mock_jpki_stats(spy_of(r)->inner, card, &st), KP_HAL_OK);
	return st;
}

/* A scenario (start and pace added) through the spy around the mock reader. */
static struct kp_reader *open_scn(const char *body)
{
	static int n;
	char path[600], conn[700], *text;
	struct kp_reader *r = NULL;
	struct spy *s;
	const char *line;
	size_t cap = strlen(body) + 100;

	text = malloc(cap);
	assert_non_null(text);
	snprintf(text, cap, "start %lld\npace virtual\n%s", (long long)T_START, body);
	snprintf(path, sizeof(path), "%s/scn-%d.txt", dir, n++);
	tu_write(path, text);
	free(text);
	snprintf(conn, sizeof(conn), "tally:mock:%s", path);
	assert_int_equal(kp_reader_open(&r, conn), KP_HAL_OK);
	s = spy_of(r);
	for (line = body; line != NULL; line = strchr(line, '\n')) {
		char name[32], type[16];

		line += *line == '\n';
		if (sscanf(line, "card %31s %15s", name, type) == 2 && strcmp(type, "mynumber") == 0) {
			assert_true(s->n_cards < 16);
			snprintf(s->cards[s->n_cards++], sizeof(s->cards[0]), "%s", name);
		}
	}
	return r;
}

/* Adds what this reader saw to the totals; nothing forbidden may have been asked. */
static void close_scn(struct kp_reader *r)
{
	struct spy *s = spy_of(r);

	if (!s->control) {
		assert_int_equal(s->forbidden, 0);
		assert_int_equal(s->other_select, 0);
		for (size_t i = 0; i < s->n_cards; i++) {
			struct kp_mock_jpki_stats st = stats(r, s->cards[i]);

			assert_int_equal(st.select_input_support, 0);
			assert_int_equal(st.select_card_face, 0);
			assert_int_equal(st.forbidden_apdus, 0);
			tally.select_jpki += st.select_jpki;
			tally.select_input += st.select_input_support;
			tally.select_face += st.select_card_face;
			tally.forbidden_apdus += st.forbidden_apdus;
			tally.cards++;
		}
		tally.apdus += s->apdus;
		tally.reads += s->reads;
		tally.read_le0 += s->read_le0;
		if (s->read_le_max > tally.read_le_max)
			tally.read_le_max = s->read_le_max;
		tally.forbidden += s->forbidden;
		tally.other_select += s->other_select;
		tally.readers++;
	}
	kp_reader_close(r);
}

/* ---- the fake reader: scripted replies, records what the client sent ---- */

static struct fake {
	struct kp_reader base;
	const char *const *replies;             /* hex, "!timeout"; NULL ends (then silence) */
	size_t next;
	const uint8_t *file;                    /* file mode: SELECTs 90 00, READ BINARY served */
	size_t file_len, max_chunk;             /* max_chunk: at most this many per reply */
	uint8_t sent[32][300];
	size_t sent_len[32], n_sent;
} fk;

static int fake_open(struct kp_reader **out, const char *conn)
{
	(void)conn;
	*out = &fk.base;
	return KP_HAL_OK;
}

static int fake_transceive(struct kp_reader *r, const uint8_t *tx, size_t tx_len, uint8_t *rx,
                           size_t rx_cap, size_t *rx_len, int timeout_ms)
{
	const char *reply;
	uint8_t buf[600];
	size_t n;

	(void)r;
	(void)timeout_ms;
	*rx_len = 0;
	if (has_aid(tx, tx_len, AID_INPUT) || has_aid(tx, tx_len, AID_FACE))
		tally.forbidden++;
	tally.apdus++;
	if (fk.n_sent < 32) {
		memcpy(fk.sent[fk.n_sent], tx, tx_len);
		fk.sent_len[fk.n_sent++] = tx_len;
	}
	if (fk.file != NULL) {
		if (tx[1] == 0xA4) {
			n = tu_hex("9000", buf, sizeof(buf));
		} else if (tx[1] == 0xB0 && tx_len == 5) {
			size_t off = (size_t)tx[2] << 8 | tx[3], le = tx[4] ? tx[4] : 256;

			if (off >= fk.file_len) {
				n = tu_hex("6B00", buf, sizeof(buf));
			} else {
				n = le < fk.file_len - off ? le : fk.file_len - off;
				if (fk.max_chunk != 0 && n > fk.max_chunk)
					n = fk.max_chunk;
				memcpy(buf, fk.file + off, n);
				buf[n++] = 0x90;
				buf[n++] = 0x00;
			}
		} else {
			n = tu_hex("6D00", buf, sizeof(buf));
		}
	} else {
		if (fk.replies == NULL || fk.replies[fk.next] == NULL)
			return KP_HAL_E_TIMEOUT;
		reply = fk.replies[fk.next++];
		if (strcmp(reply, "!timeout") == 0)
			return KP_HAL_E_TIMEOUT;
		n = tu_hex(reply, buf, sizeof(buf));
	}
	if (n > rx_cap)
		return KP_HAL_E_OVERFLOW;
	memcpy(rx, buf, n);
	*rx_len = n;
	return KP_HAL_OK;
}

static void fake_close(struct kp_reader *r)
{
	(void)r;
}

static const struct kp_reader_ops fake_ops = {
	.scheme = "fakejpki", .open = fake_open, .transceive = fake_transceive, .close = fake_close,
};

static struct kp_jpki fake_client(const char *const *replies)
{
	struct kp_reader *r = NULL;
	struct kp_jpki j;

	memset(&fk, 0, sizeof(fk));
	fk.base.ops = &fake_ops;
	fk.replies = replies;
	assert_int_equal(kp_reader_open(&r, "fakejpki:"), KP_HAL_OK);
	kp_jpki_init(&j, r, 50);
	return j;
}

static void sent_is(size_t i, const char *hex)
{
	uint8_t want[300];
	size_t n = tu_hex(hex, want, sizeof(want));

	assert_true(i < fk.n_sent);
	assert_int_equal(fk.sent_len[i], n);
	assert_memory_equal(fk.sent[i], want, n);
}

/* ---- the terminal fixture: a store, an engine that trusts the test JPKI CA ---- */

struct fx {
	char db[600];
	kp_store *s;
	kp_key *key;
	kp_tap_engine *e;
	struct kp_terminal_cfg cfg;
};

static int64_t ms_at(int64_t offset_s)
{
	return (T_START + offset_s) * 1000;
}

/* The tap engine's log lines on this process's stderr, as the terminal logs them. */
static void log_stderr(void *arg, const char *msg)
{
	(void)arg;
	fprintf(stderr, "kippu: %s\n", msg);
}

static int fx_setup(void **state)
{
	static int n;
	struct fx *f = calloc(1, sizeof(*f));
	const char *ops[] = { "OP-A" };

	if (f == NULL)
		return -1;
	snprintf(f->db, sizeof(f->db), "%s/t%d.db", dir, n++);
	if (kp_store_open(&f->s, f->db) != KP_OK || kp_key_generate(&f->key) != 0)
		return -1;
	kp_terminal_cfg_defaults(&f->cfg);
	snprintf(f->cfg.terminal_id, sizeof(f->cfg.terminal_id), TERMINAL_ID);
	snprintf(f->cfg.operator_id, sizeof(f->cfg.operator_id), "OP-A");
	snprintf(f->cfg.jpki_ca, sizeof(f->cfg.jpki_ca), "%s/CA.crt", dir);
	f->cfg.double_tap_window_ms = 60000;
	if (kp_store_begin(f->s) != KP_OK || kp_store_put_operator(f->s, "OP-A", "A") != KP_OK ||
	    kp_store_put_product_cat(f->s, "RES", "resident 10 rides", 10, "resident", ops, 1) != KP_OK ||
	    kp_store_commit(f->s) != KP_OK)
		return -1;
	if (kp_tap_engine_open(&f->e, f->s, &f->cfg, f->key, token_key) != KP_OK)
		return -1;
	kp_tap_engine_log(f->e, log_stderr, NULL);
	*state = f;
	return 0;
}

static int fx_teardown(void **state)
{
	struct fx *f = *state;

	kp_tap_engine_close(f->e);
	kp_store_close(f->s);
	kp_key_free(f->key);
	free(f);
	return 0;
}

static int64_t journal_count(kp_store *s)
{
	int64_t n = -1;

	assert_int_equal(kp_store_count(s, "journal", &n), KP_OK);
	return n;
}

struct find {
	uint64_t seq;
	struct kp_record rec;
	int found;
};

static int find_row(const struct kp_journal_row *row, void *arg)
{
	struct find *fd = arg;

	if (row->seq != fd->seq)
		return 0;
	assert_int_equal(kp_record_decode(row->payload, row->payload_len, &fd->rec), 0);
	fd->found = 1;
	return 1;
}

static struct kp_record record(kp_store *s, uint64_t seq)
{
	struct find fd;

	memset(&fd, 0, sizeof(fd));
	fd.seq = seq;
	kp_journal_foreach(s, find_row, &fd);
	assert_true(fd.found);
	return fd.rec;
}

/* The next tap of the scenario through kp_tap_card; *apdus: what it sent. */
static int tap_next(struct fx *f, struct kp_reader *r, struct kp_tap_outcome *o,
                    unsigned long *apdus)
{
	struct kp_poll poll = { KP_TECH_FELICA | KP_TECH_ISO14443B, 0x0003, 1 };
	struct kp_card_info info;
	unsigned long before = spy_of(r)->apdus;
	int rc;

	memset(&info, 0, sizeof(info));
	assert_int_equal(kp_reader_wait_card(r, &poll, &info, 1000), KP_HAL_OK);
	rc = kp_tap_card(f->e, r, &info, kp_reader_now_ms(r), o);
	if (apdus != NULL)
		*apdus = spy_of(r)->apdus - before;
	kp_reader_release(r, 0, 0);
	return rc;
}

static void wait_typeb(struct kp_reader *r)
{
	struct kp_poll poll = { KP_TECH_FELICA | KP_TECH_ISO14443B, 0x0003, 1 };
	struct kp_card_info info;

	assert_int_equal(kp_reader_wait_card(r, &poll, &info, 1000), KP_HAL_OK);
	assert_int_equal(info.tech, KP_TECH_ISO14443B);
}

static size_t file_size(const char *path)
{
	FILE *fp = fopen(path, "rb");
	long n;

	assert_non_null(fp);
	fseek(fp, 0, SEEK_END);
	n = ftell(fp);
	fclose(fp);
	return (size_t)n;
}

static uint8_t *read_bin(const char *path, size_t *len)
{
	FILE *fp = fopen(path, "rb");
	uint8_t *buf;

	assert_non_null(fp);
	*len = file_size(path);
	buf = malloc(*len + 1);
	assert_non_null(buf);
	assert_int_equal(fread(buf, 1, *len, fp), *len);
	fclose(fp);
	return buf;
}

static void hex_of(const uint8_t *b, size_t n, char *out)
{
	for (size_t i = 0; i < n; i++)
		sprintf(out + 2 * i, "%02x", b[i]);
	out[2 * n] = '\0';
}

/* Nothing of the card's certificate is in the database: not the serial, not the subject's
 * or issuer's name, not any piece of the DER, in the SQL dump or the raw files. */
static void assert_no_certificate_in(const char *db, const char *card_dir, const char *cn,
                                     const uint8_t *must_have)
{
	static const char *const files[] = { "", "-wal" };
	char path[700], hex[2 * 64 + 1], *dump;
	const uint8_t *serial;
	size_t der_len, serial_len;
	uint8_t *der;
	kp_cert *cert = NULL;

	snprintf(path, sizeof(path), "%s/%s/auth.der", dir, card_dir);
	der = read_bin(path, &der_len);
	assert_int_equal(kp_cert_parse(&cert, der, der_len), 0);
	assert_int_equal(kp_cert_serial_raw(cert, &serial, &serial_len), 0);
	assert_true(tu_sh("sqlite3 '%s' .dump > '%s/dump.sql'", db, dir) == 0);
	snprintf(path, sizeof(path), "%s/dump.sql", dir);
	dump = tu_read(path);
	assert_non_null(dump);
	assert_true(strlen(dump) > 1000);
	assert_true(serial_len >= 6);           /* long enough to be searched for */
	hex_of(serial, serial_len, hex);
	assert_null(strcasestr(dump, hex));
	assert_null(strstr(dump, cn));
	hex_of((const uint8_t *)cn, strlen(cn), hex);
	assert_null(strcasestr(dump, hex));
	assert_null(strstr(dump, "JPKI test authentication CA"));
	hex_of((const uint8_t *)"JPKI test", 9, hex);
	assert_null(strcasestr(dump, hex));
	for (size_t off = 16; off + 24 <= der_len; off += 24) {
		hex_of(der + off, 24, hex);
		assert_null(strcasestr(dump, hex));
	}
	if (must_have != NULL) {                /* the search does see into blobs */
		hex_of(must_have, KP_TOKEN_LEN, hex);
		assert_non_null(strcasestr(dump, hex));
	}
	free(dump);
	for (size_t i = 0; i < 2; i++) {
		uint8_t *raw;
		size_t raw_len;

		snprintf(path, sizeof(path), "%s%s", db, files[i]);
		if (access(path, F_OK) != 0)
			continue;
		raw = read_bin(path, &raw_len);
		assert_null(memmem(raw, raw_len, serial, serial_len));
		assert_null(memmem(raw, raw_len, cn, strlen(cn)));
		assert_null(memmem(raw, raw_len, "JPKI test", 9));
		for (size_t off = 16; off + 24 <= der_len; off += 24)
			assert_null(memmem(raw, raw_len, der + off, 24));
		free(raw);
	}
	kp_cert_free(cert);
	free(der);
}

static void load_linkage_ca(const char *card_dir, const char *ca_file, uint8_t out[KP_TOKEN_LEN])
{
	kp_cert *cert = NULL, *ca = NULL;
	char path[600];

	snprintf(path, sizeof(path), "%s/%s/auth.der", dir, card_dir);
	assert_int_equal(kp_cert_load(&cert, path), 0);
	snprintf(path, sizeof(path), "%s/%s", dir, ca_file);
	assert_int_equal(kp_cert_load(&ca, path), 0);
	assert_int_equal(kp_linkage_token(token_key, ca, cert, out), 0);
	kp_cert_free(cert);
	kp_cert_free(ca);
}

static void load_linkage(const char *card_dir, uint8_t out[KP_TOKEN_LEN])
{
	load_linkage_ca(card_dir, "CA.crt", out);
}

/* A resident pass (10 rides) sold to hanako's linkage and the resident category until
 * elig_until_ms, in store s. */
static void put_hanako_pass(kp_store *s, int64_t id, int64_t elig_until_ms)
{
	struct kp_entitlement e;

	memset(&e, 0, sizeof(e));
	memcpy(e.token, lk_hanako, KP_TOKEN_LEN);
	e.id = id;
	snprintf(e.product, sizeof(e.product), "RES");
	e.rides_left = 10;
	e.valid_from_ms = ms_at(0) - DAY_MS;
	e.valid_until_ms = ms_at(0) + 90 * DAY_MS;
	assert_int_equal(kp_store_put_entitlement(s, &e), KP_OK);
	assert_int_equal(kp_store_put_eligibility(s, lk_hanako, "resident", ms_at(0) - DAY_MS,
	                                          elig_until_ms, NULL), KP_OK);
}

/* Sends this process's stderr (the terminal library's log lines) to path, appending;
 * returns what end_log_to needs. */
static int log_to(const char *path)
{
	int saved, fd;

	fflush(stderr);
	saved = dup(2);
	fd = open(path, O_WRONLY | O_CREAT | O_APPEND, 0600);
	assert_true(saved >= 0 && fd >= 0);
	dup2(fd, 2);
	close(fd);
	return saved;
}

static void end_log_to(int saved)
{
	fflush(stderr);
	dup2(saved, 2);
	close(saved);
}

/* Python (standard library only) that computes the linkage token of the certificate
 * sys.argv[1] issued by the CA sys.argv[2] (both DER) with token.key: serial, token. */
#define PY_TOKEN \
	"import hmac, hashlib, subprocess, sys\n" \
	"def tlv(b, i):\n" \
	"    tag, n = b[i], b[i + 1]; i += 2\n" \
	"    if n & 0x80:\n" \
	"        k = n & 0x7f; n = int.from_bytes(b[i:i + k], 'big'); i += k\n" \
	"    return tag, i, i + n\n" \
	"def fields(der):\n" \
	"    _, c, _ = tlv(der, 0)\n" \
	"    _, i, _ = tlv(der, c)\n" \
	"    tag, s, e = tlv(der, i)\n" \
	"    if tag == 0xa0: tag, s, e = tlv(der, e)\n" \
	"    serial = der[s:e]\n" \
	"    for _ in range(4): _, _, e = tlv(der, e)\n" \
	"    start = e; _, _, e = tlv(der, e)\n" \
	"    return serial, der[start:e]\n" \
	"serial, _ = fields(open(sys.argv[1], 'rb').read())\n" \
	"_, spki = fields(open(sys.argv[2], 'rb').read())\n" \
	"v = int.from_bytes(serial, 'big', signed=True)\n" \
	"canon = v.to_bytes(((v if v >= 0 else ~v).bit_length() + 8) // 8, 'big', signed=True)\n" \
	"key = bytes.fromhex(open('token.key').read().strip())\n" \
	"token = hmac.new(key, b'jpki2' + hashlib.sha256(spki).digest() + canon, " \
	"hashlib.sha256).hexdigest()[:32]\n"

/* ---- group set-up: the JPKI CAs and cards, made once (RSA key generation) ---- */

static int group_setup(void **state)
{
	long long past_nb, past_na, future_nb;

	(void)state;
	if (realpath(tu_bin(), bin) == NULL)
		return -1;
	tu_tmpdir(dir, sizeof(dir));
	t_now = (int64_t)time(NULL);
	past_nb = (long long)t_now - 80000;
	past_na = (long long)t_now - 3600;
	future_nb = (long long)t_now + 30 * 86400;
	if (ctl("token-key create token.key") != 0 ||
	    ctl("jpki ca create --key CA.key --cert CA.crt") != 0 ||
	    ctl("jpki ca create --key OTHER.key --cert OTHER.crt --cn 'Another authority'") != 0 ||
	    ctl("jpki card create --ca-key CA.key --ca-cert CA.crt --dir hanako --serial "
	        HANAKO_SERIAL " --cn '" HANAKO_CN "'") != 0 ||
	    ctl("jpki card create --ca-key CA.key --ca-cert CA.crt --dir taro --serial " TARO_SERIAL " "
	        "--cn 'Taro Test'") != 0 ||
	    ctl("jpki card create --ca-key CA.key --ca-cert CA.crt --dir expired --serial 43 "
	        "--not-before %lld --not-after %lld", past_nb, past_na) != 0 ||
	    ctl("jpki card create --ca-key CA.key --ca-cert CA.crt --dir future --serial 47 "
	        "--not-before %lld", future_nb) != 0 ||
	    ctl("jpki card create --ca-key OTHER.key --ca-cert OTHER.crt --dir foreign --serial 44")
	        != 0 ||
	    ctl("jpki card create --ca-key OTHER.key --ca-cert OTHER.crt --dir foreign_expired "
	        "--serial 46 --not-before %lld --not-after %lld", past_nb, past_na) != 0)
		return -1;
	/* The operator's CA and the link-mode terminal's identity. */
	if (ctl("ca create --key op.key --cert op.crt") != 0 ||
	    ctl("terminal create --ca-key op.key --ca-cert op.crt --id LINK-01 "
	        "--key terminal.key --cert terminal.crt") != 0)
		return -1;
	/* clone: hanako's certificate with another key (a copied certificate, no card). big: a
	 * certificate the size of a real one (extensions), issued with OpenSSL by the test CA. */
	tu_write(p("jpki-ext.cnf"), jpki_ext);
	if (tu_sh("cd %s && mkdir clone big && cp hanako/auth.der hanako/ca.der clone/ && "
	          "cp taro/auth.key clone/ && cp taro/auth.key hanako/ca.der big/ && "
	          "openssl req -new -key big/auth.key -subj '/C=JP/L=Test City/"
	          "CN=0123456789ABCDEF0123456789ABCDEF' -out big.csr && "
	          "openssl x509 -req -in big.csr -CA CA.crt -CAkey CA.key -set_serial 77 -days 1825 "
	          "-extfile jpki-ext.cnf -extensions v3 -outform DER -out big/auth.der "
	          ">/dev/null 2>>ctl.err", dir) != 0)
		return -1;
	/* Issue 13's cards. twin: a second CA with the test CA's very name issues hanako's
	 * serial. padded: hanako's certificate with its serial padded with 00 bytes and the
	 * issuer's CN re-encoded as a PrintableString, re-signed by the test CA. catrue, noku,
	 * kuenc: issued by the test CA as CA:TRUE, without keyUsage, for keyEncipherment only.
	 * cacard: a card whose EF 000A holds the CA's own certificate. */
	tu_write(p("i13-ext.cnf"), "[catrue]\nbasicConstraints = critical, CA:TRUE\n"
	         "keyUsage = critical, digitalSignature, keyCertSign\n"
	         "[noku]\nbasicConstraints = critical, CA:FALSE\n"
	         "[kuenc]\nkeyUsage = critical, keyEncipherment\n");
	if (ctl("jpki ca create --key TWIN.key --cert TWIN.crt") != 0 ||
	    ctl("jpki card create --ca-key TWIN.key --ca-cert TWIN.crt --dir twin --serial "
	        HANAKO_SERIAL " --cn '" HANAKO_CN "'") != 0 ||
	    tu_sh("cd %s && for k in catrue noku kuenc; do mkdir $k && cp taro/auth.key hanako/ca.der $k/ "
	          "&& openssl req -new -key $k/auth.key -subj /CN=JPKI-test-$k -out $k.csr && "
	          "openssl x509 -req -in $k.csr -CA CA.crt -CAkey CA.key -set_serial 91 -days 1825 "
	          "-extfile i13-ext.cnf -extensions $k -outform DER -out $k/auth.der || exit 1; done "
	          ">/dev/null 2>>ctl.err && mkdir cacard && cp hanako/ca.der hanako/ca.der cacard/ && "
	          "cp hanako/ca.der cacard/auth.der && cp CA.key cacard/auth.key", dir) != 0 ||
	    tu_sh("cd %s && mkdir padded && cp hanako/ca.der hanako/auth.key padded/ && "
	          "python3 - >>ctl.err 2>&1 <<'EOF'\n"
	          "import subprocess\n"
	          "def tlv(b, i):\n"
	          "    tag, n = b[i], b[i + 1]; h = 2\n"
	          "    if n & 0x80:\n"
	          "        k = n & 0x7f; n = int.from_bytes(b[i + 2:i + 2 + k], 'big'); h += k\n"
	          "    return b[i:i + h + n], i + h + n\n"
	          "def enc(tag, body):\n"
	          "    n = len(body)\n"
	          "    if n < 128: return bytes([tag, n]) + body\n"
	          "    l = n.to_bytes((n.bit_length() + 7) // 8, 'big')\n"
	          "    return bytes([tag, 0x80 | len(l)]) + l + body\n"
	          "def kids(t):\n"
	          "    _, i = t[1], 2 + (t[1] & 0x7f if t[1] & 0x80 else 0)\n"
	          "    out = []\n"
	          "    while i < len(t): x, i = tlv(t, i); out.append(x)\n"
	          "    return out\n"
	          "der = open('hanako/auth.der', 'rb').read()\n"
	          "cert = kids(der)\n"
	          "tbs = kids(cert[0])\n"
	          "k = 1 if tbs[0][0] == 0xa0 else 0\n"
	          "serial = tbs[k][2:]\n"
	          "tbs[k] = enc(0x02, b'\\x00\\x00' + serial)\n"
	          "iss = bytearray(tbs[k + 2]); p = bytes(iss).find(b'\\x06\\x03\\x55\\x04\\x03')\n"
	          "assert p > 0 and iss[p + 5] == 0x0c\n"
	          "iss[p + 5] = 0x13\n"
	          "tbs[k + 2] = bytes(iss)\n"
	          "t = enc(0x30, b''.join(tbs))\n"
	          "open('padded.tbs', 'wb').write(t)\n"
	          "sig = subprocess.run(['openssl', 'dgst', '-sha256', '-sign', 'CA.key', 'padded.tbs'],"
	          " capture_output=True, check=True).stdout\n"
	          "open('padded/auth.der', 'wb').write(enc(0x30, t + cert[1] + enc(0x03, b'\\x00' + sig)))\n"
	          "EOF", dir) != 0)
		return -1;
	{
		char path[600];

		snprintf(path, sizeof(path), "%s/token.key", dir);
		if (kp_token_key_load(path, token_key) != KP_OK)
			return -1;
	}
	load_linkage("hanako", lk_hanako);
	load_linkage("taro", lk_taro);
	load_linkage("big", lk_big);
	kp_terminal_register_mock_signer();
	kp_reader_register(&spy_ops);
	kp_reader_register(&fake_ops);
	return 0;
}

static int group_teardown(void **state)
{
	(void)state;
	kp_mock_set_rsa_signer(NULL, NULL);
	kp_zeroize(token_key, sizeof(token_key));
	tu_rmdir(dir);
	return 0;
}

/* ---- identify: the linkage token ---- */

static void test_identify_linkage_token(void **state)
{
	struct fx *f = *state;
	static const char *const names[3] = { "hanako", "taro", "big" };
	const uint8_t *want[3] = { lk_hanako, lk_taro, lk_big };
	struct kp_reader *r;
	char hex[2 * KP_TOKEN_LEN + 1], *out;
	size_t sizes[3];

	r = open_scn("card hanako mynumber dir=hanako\n"
	             "card taro mynumber dir=taro\n"
	             "card big mynumber dir=big\n"
	             "tap +0 hanako\ntap +1 taro\ntap +2 big\ntap +3 hanako\n");
	for (int i = 0; i < 4; i++) {
		const char *name = names[i % 3];
		uint8_t lk[KP_TOKEN_LEN];
		const uint8_t *der;
		uint8_t *file;
		size_t der_len, file_len, chunks;
		kp_cert *cert = NULL;
		const char *reason = "unset";
		struct kp_mock_jpki_stats before = stats(r, name), after;
		unsigned long reads = spy_of(r)->reads;
		char path[600];

		wait_typeb(r);
		assert_int_equal(kp_tap_identify_mynumber(f->e, r, kp_reader_now_ms(r), lk, &cert,
		                                          &reason), KP_OK);
		assert_null(reason);
		assert_memory_equal(lk, want[i % 3], KP_TOKEN_LEN);
		/* the certificate kept for strong mode is the card's auth.der, byte for byte */
		snprintf(path, sizeof(path), "%s/%s/auth.der", dir, name);
		file = read_bin(path, &file_len);
		assert_int_equal(kp_cert_der(cert, &der, &der_len), 0);
		assert_int_equal(der_len, file_len);
		assert_memory_equal(der, file, der_len);
		sizes[i % 3] = file_len;
		/* read as the DER header (7 bytes) then chunks of at most 255 */
		after = stats(r, name);
		chunks = 1 + (file_len - 7 + 254) / 255;
		assert_int_equal(after.read_binary - before.read_binary, chunks);
		assert_int_equal(spy_of(r)->reads - reads, chunks);
		free(file);
		kp_cert_free(cert);
		kp_reader_release(r, 0, 0);
	}
	assert_true(spy_of(r)->read_le_max <= 255);
	assert_int_equal(spy_of(r)->read_le0, 0);
	close_scn(r);
	/* kippuctl's test certificates are 838 bytes or so; the OpenSSL one is JPKI-sized */
	print_message("auth.der: hanako %zu, taro %zu, big %zu bytes\n", sizes[0], sizes[1], sizes[2]);
	assert_true(sizes[0] > 3 * 255 && sizes[0] < 1024);
	assert_true(sizes[2] > 1400 && sizes[2] < 1600);
	assert_memory_not_equal(lk_hanako, lk_taro, KP_TOKEN_LEN);

	/* kippuctl linkage token prints the same token */
	assert_int_equal(tu_sh("cd %s && %s/kippuctl linkage token --token-key token.key "
	                       "--cert hanako/auth.der --jpki-ca CA.crt >lt.txt", dir, bin), 0);
	out = tu_read(p("lt.txt"));
	assert_non_null(out);
	kp_hex(lk_hanako, KP_TOKEN_LEN, hex);
	assert_int_equal(strlen(out), 33);
	assert_memory_equal(out, hex, 32);
	free(out);
	/* and so does an independent computation: HMAC-SHA256(key, "jpki2" || SHA-256(the CA's
	 * SubjectPublicKeyInfo) || serial), over the files, with the serial cross-checked against
	 * OpenSSL's reading */
	assert_int_equal(tu_sh("cd %s && openssl x509 -in CA.crt -outform DER -out CA.der && "
	                       "python3 - hanako/auth.der CA.der > py.txt <<'EOF'\n" PY_TOKEN
	                       "o = subprocess.run(['openssl', 'x509', '-inform', 'DER', '-in', sys.argv[1],"
	                       " '-noout', '-serial'], capture_output=True, text=True).stdout\n"
	                       "assert int(o.strip().split('=')[1], 16) == int.from_bytes(serial, 'big')"
	                       " == " HANAKO_SERIAL "\n"
	                       "print(token)\n"
	                       "EOF", dir), 0);
	assert_int_equal(tu_sh("cd %s && cmp -s lt.txt py.txt", dir), 0);
}

/* ---- a My Number card tapped directly ---- */

static void test_direct_tap_accepted_nothing_stored(void **state)
{
	struct fx *f = *state;
	struct kp_entitlement e;
	struct kp_tap_outcome o;
	struct kp_record rec;
	struct kp_reader *r;
	unsigned long apdus = 0;

	put_hanako_pass(f->s, 7001, ms_at(0) + 365 * DAY_MS);
	r = open_scn("card hanako mynumber dir=hanako\n"
	             "card taro mynumber dir=taro\n"
	             "tap +0 hanako\ntap +10 hanako\ntap +20 taro\n");
	assert_int_equal(tap_next(f, r, &o, &apdus), KP_OK);
	assert_int_equal(o.kind, KP_TAP_ACCEPTED);
	assert_string_equal(o.reason, "ok");
	assert_string_equal(o.product, "RES");
	assert_string_equal(o.category, "resident");
	assert_int_equal(o.entitlement, 7001);
	assert_int_equal(o.rides_left, 9);
	assert_int_equal(o.linked, 0);
	rec = record(f->s, o.seq);
	assert_string_equal(rec.kind, "tap");
	assert_string_equal(rec.result, "accepted");
	assert_int_equal(rec.has_token, 1);
	assert_memory_equal(rec.token, lk_hanako, KP_TOKEN_LEN);
	assert_string_equal(rec.category, "resident");
	assert_int_equal(rec.has_via, 0);
	assert_int_equal(rec.time_ms, ms_at(0));
	/* the same card again inside the double-tap window: not charged */
	assert_int_equal(tap_next(f, r, &o, NULL), KP_OK);
	assert_int_equal(o.kind, KP_TAP_ALREADY);
	/* another card of the same CA holds nothing: a My Number card nothing is known of is
	 * told to link it (a renewed card has a new certificate, so a new linkage token) */
	assert_int_equal(tap_next(f, r, &o, NULL), KP_OK);
	assert_string_equal(o.reason, "card-not-linked");
	assert_string_equal(kp_tap_reason_text(o.reason),
	                    "No ticket for this card: new card? Link it again at the city office");
	rec = record(f->s, o.seq);
	assert_memory_equal(rec.token, lk_taro, KP_TOKEN_LEN);
	assert_int_equal(journal_count(f->s), 3);
	assert_int_equal(kp_store_get_entitlement(f->s, lk_hanako, 7001, &e), KP_OK);
	assert_int_equal(e.rides_left, 9);
	close_scn(r);
	assert_no_certificate_in(f->db, "hanako", HANAKO_CN, lk_hanako);
	assert_no_certificate_in(f->db, "taro", "Taro Test", lk_taro);
}

/* ---- refusals ---- */

static void test_refusals(void **state)
{
	static const struct {
		const char *card, *reason;
	} want[] = {
		{ "expired", "card-expired" },
		{ "foreign", "card-invalid" },
		{ "foreignexp", "card-invalid" },   /* not "expired": the CA never issued it */
		{ "torn", "card-error" },           /* certfault=truncate: 6B 00 past the half */
		{ "garbled", "card-invalid" },      /* certfault=garble: the signature fails */
		{ "hanako", "card-removed" },       /* remove-after=4: gone after the first read */
		{ "hanako", "card-removed" },       /* remove-after=0: gone before SELECT */
		{ "plain", "unsupported-card" },    /* Type B without JPKI: SELECT gets 6A 82 */
		{ "future", "card-not-yet-valid" }, /* issued by the CA, valid from next month */
	};
	struct fx *f = *state;
	struct kp_tap_outcome o;
	struct kp_reader *r;
	struct kp_mock_jpki_stats st;
	char *log;
	int saved, rc;

	r = open_scn("card expired mynumber dir=expired\n"
	             "card foreign mynumber dir=foreign\n"
	             "card foreignexp mynumber dir=foreign_expired\n"
	             "card torn mynumber dir=hanako certfault=truncate\n"
	             "card garbled mynumber dir=hanako certfault=garble\n"
	             "card hanako mynumber dir=hanako\n"
	             "card plain typeb pupi=A1B2C3D4\n"
	             "card future mynumber dir=future\n"
	             "tap +0 expired\ntap +70 foreign\ntap +140 foreignexp\ntap +210 torn\n"
	             "tap +280 garbled\ntap +350 hanako remove-after=4\n"
	             "tap +420 hanako remove-after=0\ntap +490 plain\ntap +560 future\n");
	for (size_t i = 0; i < sizeof(want) / sizeof(want[0]); i++) {
		unsigned long apdus = 0;
		struct kp_record rec;

		/* the terminal's log of this tap goes to refusals.log */
		saved = log_to(p("refusals.log"));
		rc = tap_next(f, r, &o, &apdus);
		end_log_to(saved);
		assert_int_equal(rc, KP_OK);
		if (strcmp(o.reason, want[i].reason) != 0)
			fail_msg("%s: want %s, got %s", want[i].card, want[i].reason, o.reason);
		assert_int_equal(o.kind, KP_TAP_REFUSED);
		/* one record per tap, without a token: nothing of the card is known */
		assert_int_equal(journal_count(f->s), (int64_t)i + 1);
		rec = record(f->s, o.seq);
		assert_string_equal(rec.reason, want[i].reason);
		assert_string_equal(rec.result, "refused");
		assert_int_equal(rec.has_token, 0);
		if (strcmp(want[i].card, "plain") == 0)
			assert_int_equal(apdus, 1);     /* one SELECT, no retries */
		if (i == 6)
			assert_int_equal(apdus, 1);     /* the SELECT that found no card */
	}
	/* the torn certificate was read up to its half, the removed card once */
	st = stats(r, "hanako");
	assert_int_equal(st.read_binary, 1);
	st = stats(r, "torn");
	assert_true(st.read_binary >= 2);
	close_scn(r);
	/* each My Number refusal logs one readable line, naming no one; the plain card none */
	log = tu_read(p("refusals.log"));
	assert_non_null(log);
	assert_int_equal(tu_count(log, "kippu: My Number card refused: "), 8);
	assert_non_null(strstr(log, "certificate expired"));
	assert_non_null(strstr(log, "certificate not yet valid"));
	for (const char *c = log; *c != '\0'; c++)
		assert_true(*c == '\n' || (*c >= 0x20 && *c < 0x7F));
	for (const char *l = log; (l = strstr(l, "refused: ")) != NULL; l++)
		assert_true(l[9] != '\n' && l[9] != '\0');
	assert_null(strstr(log, "Hanako"));
	assert_null(strcasestr(log, "5a17c0de1234"));
	free(log);
	assert_no_certificate_in(f->db, "hanako", HANAKO_CN, NULL);
}

/* A terminal without jpki_ca cannot judge a My Number card: one quiet refusal. */
static void test_no_jpki_ca_configured(void **state)
{
	struct fx *f = *state;
	struct kp_terminal_cfg cfg = f->cfg;
	kp_tap_engine *e = NULL;
	struct kp_tap_outcome o;
	struct kp_reader *r;

	cfg.jpki_ca[0] = '\0';
	kp_tap_engine_close(f->e);
	assert_int_equal(kp_tap_engine_open(&e, f->s, &cfg, f->key, token_key), KP_OK);
	f->e = e;
	r = open_scn("card hanako mynumber dir=hanako\ntap +0 hanako\n");
	assert_int_equal(tap_next(f, r, &o, NULL), KP_OK);
	assert_string_equal(o.reason, "unsupported-card");
	assert_int_equal(stats(r, "hanako").read_binary, 0);
	close_scn(r);
	/* a jpki_ca that is not there stops the engine */
	snprintf(cfg.jpki_ca, sizeof(cfg.jpki_ca), "%s/nothing.crt", dir);
	assert_int_equal(kp_tap_engine_open(&e, f->s, &cfg, f->key, token_key), KP_E_CONFIG);
	/* two CAs: a card of either is accepted */
	snprintf(cfg.jpki_ca, sizeof(cfg.jpki_ca), "%s/OTHER.crt,%s/CA.crt", dir, dir);
	assert_int_equal(kp_tap_engine_open(&e, f->s, &cfg, f->key, token_key), KP_OK);
	kp_tap_engine_close(f->e);
	f->e = e;
	r = open_scn("card foreign mynumber dir=foreign\ncard hanako mynumber dir=hanako\n"
	             "tap +0 foreign\ntap +70 hanako\n");
	assert_int_equal(tap_next(f, r, &o, NULL), KP_OK);
	assert_string_equal(o.reason, "card-not-linked");
	assert_int_equal(tap_next(f, r, &o, NULL), KP_OK);
	assert_string_equal(o.reason, "card-not-linked");
	close_scn(r);
}

/* ---- a linkage revoked at the backend: the next bundle withdraws it ---- */

static void test_revoked_linkage(void **state)
{
	struct fx *f = *state;
	struct kp_sync_source src;
	struct kp_bundle b;
	struct kp_bundle_operator op = { "OP-A", "A" };
	struct kp_bundle_product prod;
	struct kp_bundle_entitlement ent;
	struct kp_bundle_eligibility el[2];
	struct kp_tap_outcome o;
	struct kp_record rec;
	struct kp_reader *r;
	uint8_t alice[KP_TOKEN_LEN];
	char scn[400], idm[17];

	assert_int_equal(kp_token_derive(token_key, "felica", ALICE_IDM, 8, alice), 0);
	memset(&b, 0, sizeof(b));
	memset(&prod, 0, sizeof(prod));
	memset(&ent, 0, sizeof(ent));
	memset(el, 0, sizeof(el));
	snprintf(prod.id, sizeof(prod.id), "RES");
	snprintf(prod.name, sizeof(prod.name), "resident 10 rides");
	prod.rides = 10;
	snprintf(prod.category, sizeof(prod.category), "resident");
	snprintf(prod.operators[0], sizeof(prod.operators[0]), "OP-A");
	prod.n_operators = 1;
	/* a pass sold to hanako's linkage; alice's FeliCa card is linked to it */
	ent.id = 7100;
	memcpy(ent.token, lk_hanako, KP_TOKEN_LEN);
	snprintf(ent.product, sizeof(ent.product), "RES");
	ent.remaining = 10;
	ent.valid_from_ms = ms_at(0) - DAY_MS;
	ent.valid_until_ms = ms_at(0) + 90 * DAY_MS;
	memcpy(el[0].token, lk_hanako, KP_TOKEN_LEN);
	memcpy(el[1].token, alice, KP_TOKEN_LEN);
	for (int i = 0; i < 2; i++) {
		snprintf(el[i].category, sizeof(el[i].category), "resident");
		el[i].valid_from_ms = ms_at(0) - DAY_MS;
		el[i].valid_until_ms = ms_at(0) + 365 * DAY_MS;
	}
	el[1].has_via = 1;
	memcpy(el[1].via, lk_hanako, KP_TOKEN_LEN);
	b.version = 1;
	b.issued_ms = ms_at(0) - 1000;
	snprintf(b.terminal, sizeof(b.terminal), TERMINAL_ID);
	b.operators = &op;
	b.n_operators = 1;
	b.products = &prod;
	b.n_products = 1;
	b.entitlements = &ent;
	b.n_entitlements = 1;
	b.eligibility = el;
	b.n_eligibility = 2;
	/* the scheme lets her card be tapped directly for its resident passes */
	b.policy.direct = 1;
	snprintf(b.policy.categories[0], sizeof(b.policy.categories[0]), "resident");
	b.policy.n_categories = 1;
	kp_store_sync_source(f->s, &src);
	assert_int_equal(src.apply_bundle(src.ctx, &b), KP_OK);

	kp_hex(ALICE_IDM, 8, idm);
	snprintf(scn, sizeof(scn), "card hanako mynumber dir=hanako\ncard alice felica idm=%s\n"
	         "tap +0 hanako\ntap +70 alice\ntap +140 hanako\ntap +210 alice\n", idm);
	r = open_scn(scn);
	assert_int_equal(tap_next(f, r, &o, NULL), KP_OK);
	assert_int_equal(o.kind, KP_TAP_ACCEPTED);
	assert_string_equal(o.category, "resident");
	assert_int_equal(o.rides_left, 9);
	assert_int_equal(tap_next(f, r, &o, NULL), KP_OK);
	assert_int_equal(o.kind, KP_TAP_ACCEPTED);
	assert_int_equal(o.rides_left, 8);
	assert_int_equal(o.linked, 1);
	rec = record(f->s, o.seq);
	assert_memory_equal(rec.token, alice, KP_TOKEN_LEN);
	assert_int_equal(rec.has_via, 1);
	assert_memory_equal(rec.via, lk_hanako, KP_TOKEN_LEN);
	/* revoked: the next bundle has no eligibility for the linkage or the card linked to it */
	b.version = 2;
	b.n_eligibility = 0;
	b.eligibility = NULL;
	assert_int_equal(src.apply_bundle(src.ctx, &b), KP_OK);
	assert_int_equal(tap_next(f, r, &o, NULL), KP_OK);
	assert_int_equal(o.kind, KP_TAP_REFUSED);
	assert_string_equal(o.reason, "not-eligible");
	assert_int_equal(tap_next(f, r, &o, NULL), KP_OK);
	assert_int_equal(o.kind, KP_TAP_REFUSED);
	assert_string_equal(o.reason, "no-entitlement");
	close_scn(r);
}

/* ---- the scheme's My Number policy (issue 13) ---- */

/* A bundle for the fixture's terminal: a resident 10-ride pass (7200) sold to hanako's
 * linkage, her linkage resident and alice's FeliCa card linked to it, and an ordinary
 * 10-ride ticket (7201) of alice's own. */
static void policy_bundle(struct kp_bundle *b, uint64_t version, int64_t issued_ms,
                          const struct kp_bundle_policy *pol)
{
	static struct kp_bundle_operator op = { "OP-A", "A" };
	static struct kp_bundle_product prod[2];
	static struct kp_bundle_entitlement ent[2];
	static struct kp_bundle_eligibility el[2];
	uint8_t alice[KP_TOKEN_LEN];

	assert_int_equal(kp_token_derive(token_key, "felica", ALICE_IDM, 8, alice), 0);
	memset(b, 0, sizeof(*b));
	memset(prod, 0, sizeof(prod));
	memset(ent, 0, sizeof(ent));
	memset(el, 0, sizeof(el));
	for (int i = 0; i < 2; i++) {
		snprintf(prod[i].id, sizeof(prod[i].id), i == 0 ? "RES" : "T10");
		prod[i].rides = 10;
		snprintf(prod[i].operators[0], sizeof(prod[i].operators[0]), "OP-A");
		prod[i].n_operators = 1;
		ent[i].id = 7200 + i;
		memcpy(ent[i].token, i == 0 ? lk_hanako : alice, KP_TOKEN_LEN);
		snprintf(ent[i].product, sizeof(ent[i].product), i == 0 ? "RES" : "T10");
		ent[i].remaining = 10;
		ent[i].valid_from_ms = ms_at(0) - DAY_MS;
		/* the resident pass ends first, so it is the one chosen when usable */
		ent[i].valid_until_ms = ms_at(0) + (i == 0 ? 60 : 90) * DAY_MS;
		memcpy(el[i].token, i == 0 ? lk_hanako : alice, KP_TOKEN_LEN);
		snprintf(el[i].category, sizeof(el[i].category), "resident");
		el[i].valid_from_ms = ms_at(0) - DAY_MS;
		el[i].valid_until_ms = ms_at(0) + 365 * DAY_MS;
	}
	snprintf(prod[0].category, sizeof(prod[0].category), "resident");
	el[1].has_via = 1;
	memcpy(el[1].via, lk_hanako, KP_TOKEN_LEN);
	b->version = version;
	b->issued_ms = issued_ms;
	snprintf(b->terminal, sizeof(b->terminal), TERMINAL_ID);
	b->operators = &op;
	b->n_operators = 1;
	b->products = prod;
	b->n_products = 2;
	b->entitlements = ent;
	b->n_entitlements = 2;
	b->eligibility = el;
	b->n_eligibility = 2;
	if (pol != NULL)
		b->policy = *pol;
}

/* Applies a bundle the way a terminal does: encoded, decoded, then applied. */
static void policy_apply(struct fx *f, struct kp_bundle *b)
{
	struct kp_sync_source src;
	struct kp_bundle d;
	uint8_t *out = NULL;
	size_t n = 0;

	assert_int_equal(kp_bundle_encode(b, &out, &n), KP_SYNC_OK);
	assert_int_equal(kp_bundle_decode(out, n, &d), KP_SYNC_OK);
	free(out);
	kp_store_sync_source(f->s, &src);
	assert_int_equal(src.apply_bundle(src.ctx, &d), KP_OK);
	kp_bundle_free(&d);
}

static void expect_tap(struct fx *f, struct kp_reader *r, enum kp_tap_kind kind,
                       const char *reason)
{
	struct kp_tap_outcome o;

	assert_int_equal(tap_next(f, r, &o, NULL), KP_OK);
	if (o.kind != kind || strcmp(o.reason, reason) != 0)
		fail_msg("want %d %s, got %d %s", kind, reason, o.kind, o.reason);
}

/* A copied certificate (hanako's bytes, another key) tapped directly: refused under the
 * default policy, while her linked card rides; allowed for the listed category within the
 * rides-per-day limit and refused beyond it; a product not listed is not used. */
static void test_direct_tap_policy(void **state)
{
	struct fx *f = *state;
	struct kp_bundle_policy pol;
	struct kp_bundle b;
	struct kp_entitlement e;
	struct kp_reader *r;
	char scn[600], idm[17];

	policy_bundle(&b, 1, ms_at(0) - 1000, NULL);
	policy_apply(f, &b);
	kp_hex(ALICE_IDM, 8, idm);
	snprintf(scn, sizeof(scn), "card clone mynumber dir=clone\ncard alice felica idm=%s\n"
	         "tap +0 clone\ntap +70 alice\ntap +140 clone\ntap +210 clone\ntap +280 clone\n"
	         "tap +350 clone\n", idm);
	r = open_scn(scn);
	expect_tap(f, r, KP_TAP_REFUSED, "direct-not-allowed");
	expect_tap(f, r, KP_TAP_ACCEPTED, "ok");            /* the linked Suica: the pass */
	assert_int_equal(kp_store_get_entitlement(f->s, lk_hanako, 7200, &e), KP_OK);
	assert_int_equal(e.rides_left, 9);
	/* the scheme allows direct taps for resident products, two a day per linkage */
	memset(&pol, 0, sizeof(pol));
	pol.direct = 1;
	pol.direct_rides = 2;
	snprintf(pol.categories[0], sizeof(pol.categories[0]), "resident");
	pol.n_categories = 1;
	policy_bundle(&b, 2, ms_at(100), &pol);
	policy_apply(f, &b);
	expect_tap(f, r, KP_TAP_ACCEPTED, "ok");
	expect_tap(f, r, KP_TAP_ACCEPTED, "ok");
	expect_tap(f, r, KP_TAP_REFUSED, "direct-limit");
	/* listed by product only, another product: nothing usable */
	memset(&pol, 0, sizeof(pol));
	pol.direct = 1;
	snprintf(pol.products[0], sizeof(pol.products[0]), "T10");
	pol.n_products = 1;
	policy_bundle(&b, 3, ms_at(300), &pol);
	policy_apply(f, &b);
	expect_tap(f, r, KP_TAP_REFUSED, "direct-not-allowed");
	close_scn(r);
	/* the two accepted direct taps and the Suica's: 10 - 3 */
	assert_int_equal(kp_store_get_entitlement(f->s, lk_hanako, 7200, &e), KP_OK);
	assert_int_equal(e.rides_left, 7);
	assert_string_equal(kp_tap_reason_text("direct-not-allowed"),
	                    "My Number card not accepted here: use your linked IC card");
	assert_string_equal(kp_tap_reason_text("eligibility-stale"),
	                    "Resident status cannot be checked: terminal must sync");
}

/* Value per day: a direct tap whose fare would pass the day's value is refused and
 * charges nothing (the decision is rolled back); the first, within it, is charged. */
static void test_direct_tap_value_limit(void **state)
{
	struct fx *f = *state;
	struct kp_fare_import_opts io = { "f210", NULL, NULL };
	struct kp_bundle_operator op = { "OP-A", "A" };
	struct kp_bundle_product prod;
	struct kp_bundle_entitlement ent;
	struct kp_bundle b;
	struct kp_entitlement e;
	struct kp_tap_outcome o;
	struct kp_reader *r;
	char path[400], err[KP_FARE_MSG_MAX] = "";
	int64_t records;

	TU_WRITE_FILES(tu_path(dir, "f210"),
		{ "stops.txt", "stop_id,stop_name,stop_lat,stop_lon,zone_id\n"
		  "S1,One,36.1,139.3,S1\n" },
		{ "fare_attributes.txt", "fare_id,price,currency_type,payment_method,transfers\n"
		  "F210,210,JPY,0,0\n" },
		{ "fare_rules.txt", "fare_id,route_id,origin_id,destination_id\nF210,,,\n" });
	snprintf(path, sizeof(path), "%s/f210", dir);
	if (kp_fares_import(f->s, path, &io, NULL, err, sizeof(err)) != KP_OK)
		fail_msg("import: %s", err);
	snprintf(f->cfg.fare_feed, sizeof(f->cfg.fare_feed), "f210");
	snprintf(f->cfg.stop, sizeof(f->cfg.stop), "S1");
	kp_tap_engine_close(f->e);
	assert_int_equal(kp_tap_engine_open(&f->e, f->s, &f->cfg, f->key, token_key), KP_OK);
	kp_tap_engine_log(f->e, log_stderr, NULL);

	/* stored value held by hanako's linkage; direct taps may use it, 300 yen a day */
	memset(&b, 0, sizeof(b));
	memset(&prod, 0, sizeof(prod));
	memset(&ent, 0, sizeof(ent));
	snprintf(prod.id, sizeof(prod.id), "SVR");
	prod.kind = KP_PRODUCT_STORED;
	snprintf(prod.operators[0], sizeof(prod.operators[0]), "OP-A");
	prod.n_operators = 1;
	ent.id = 7300;
	memcpy(ent.token, lk_hanako, KP_TOKEN_LEN);
	snprintf(ent.product, sizeof(ent.product), "SVR");
	ent.remaining = 1000;
	ent.valid_from_ms = ms_at(0) - DAY_MS;
	ent.valid_until_ms = ms_at(0) + 90 * DAY_MS;
	b.version = 1;
	b.issued_ms = ms_at(0) - 1000;
	snprintf(b.terminal, sizeof(b.terminal), TERMINAL_ID);
	b.operators = &op;
	b.n_operators = 1;
	b.products = &prod;
	b.n_products = 1;
	b.entitlements = &ent;
	b.n_entitlements = 1;
	b.policy.direct = 1;
	b.policy.direct_value = 300;
	snprintf(b.policy.products[0], sizeof(b.policy.products[0]), "SVR");
	b.policy.n_products = 1;
	policy_apply(f, &b);

	r = open_scn("card clone mynumber dir=clone\ntap +0 clone\ntap +70 clone\n");
	assert_int_equal(tap_next(f, r, &o, NULL), KP_OK);
	assert_int_equal(o.kind, KP_TAP_ACCEPTED);
	assert_int_equal(o.amount, 210);
	records = journal_count(f->s);
	/* 210 + 210 would pass 300: refused, nothing charged, one refusal journaled */
	assert_int_equal(tap_next(f, r, &o, NULL), KP_OK);
	assert_int_equal(o.kind, KP_TAP_REFUSED);
	assert_string_equal(o.reason, "direct-limit");
	assert_int_equal(journal_count(f->s), records + 1);
	assert_string_equal(record(f->s, o.seq).reason, "direct-limit");
	close_scn(r);
	assert_int_equal(kp_store_get_entitlement(f->s, lk_hanako, 7300, &e), KP_OK);
	assert_int_equal(e.rides_left, 790);
}

/* Eligibility data older than the scheme's maximum age: the linked card's resident pass
 * and the linkage's category are refused eligibility-stale, alice's own ticket still
 * rides, and a newer bundle lifts it. A clock set back after a tap gains nothing. */
static void test_eligibility_stale(void **state)
{
	struct fx *f = *state;
	struct kp_bundle_policy pol;
	struct kp_bundle b;
	struct kp_tap_outcome o;
	struct kp_reader *r;
	char scn[600], idm[17];
	int64_t h = 3600;

	memset(&pol, 0, sizeof(pol));
	pol.max_age_s = 24 * h;
	/* issued 23 hours before the first tap */
	policy_bundle(&b, 1, ms_at(-23 * h), &pol);
	policy_apply(f, &b);
	kp_hex(ALICE_IDM, 8, idm);
	snprintf(scn, sizeof(scn), "card alice felica idm=%s\n"
	         "tap +0 alice\ntap +%lld alice\ntap +%lld alice\ntap +%lld alice\n"
	         "tap +%lld alice\n", idm, (long long)(2 * h), (long long)(2 * h + 70),
	         (long long)(2 * h + 140), (long long)(2 * h + 210));
	r = open_scn(scn);
	assert_int_equal(tap_next(f, r, &o, NULL), KP_OK);
	assert_int_equal(o.kind, KP_TAP_ACCEPTED);
	assert_string_equal(o.product, "RES");              /* the linkage's pass */
	/* 25 hours after the bundle: the resident pass is refused, her own ticket rides */
	assert_int_equal(tap_next(f, r, &o, NULL), KP_OK);
	assert_int_equal(o.kind, KP_TAP_ACCEPTED);
	assert_string_equal(o.product, "T10");
	assert_string_equal(o.category, "");
	assert_int_equal(o.linked, 0);
	/* with her own ticket used up there is nothing else: stale, not "no ticket" */
	{
		struct kp_entitlement e;
		uint8_t alice[KP_TOKEN_LEN];

		assert_int_equal(kp_token_derive(token_key, "felica", ALICE_IDM, 8, alice), 0);
		assert_int_equal(kp_store_get_entitlement(f->s, alice, 7201, &e), KP_OK);
		e.rides_left = 0;
		assert_int_equal(kp_store_put_entitlement(f->s, &e), KP_OK);
	}
	assert_int_equal(tap_next(f, r, &o, NULL), KP_OK);
	assert_int_equal(o.kind, KP_TAP_REFUSED);
	assert_string_equal(o.reason, "eligibility-stale");
	/* a newer bundle (the terminal synced) lifts it */
	policy_bundle(&b, 2, ms_at(2 * h + 100), &pol);
	policy_apply(f, &b);
	assert_int_equal(tap_next(f, r, &o, NULL), KP_OK);
	assert_int_equal(o.kind, KP_TAP_ACCEPTED);
	assert_string_equal(o.product, "RES");
	close_scn(r);
	/* a clock set back to within the age after a tap 25 hours on gains nothing */
	policy_bundle(&b, 3, ms_at(2 * h + 300), &pol);
	policy_apply(f, &b);
	snprintf(scn, sizeof(scn), "card alice felica idm=%s\ntap +%lld alice\n", idm,
	         (long long)(27 * h + 400));
	r = open_scn(scn);
	assert_int_equal(tap_next(f, r, &o, NULL), KP_OK);
	assert_string_equal(o.product, "T10");              /* stale: her own ticket */
	close_scn(r);
	snprintf(scn, sizeof(scn), "card alice felica idm=%s\ntap +%lld alice\n", idm,
	         (long long)(2 * h + 500));
	r = open_scn(scn);
	assert_int_equal(tap_next(f, r, &o, NULL), KP_OK);
	assert_int_equal(o.kind, KP_TAP_ACCEPTED);
	assert_string_equal(o.product, "T10");              /* still stale, not RES */
	close_scn(r);
}

/* ---- status words, through the fake reader ---- */

#define SEL_JPKI "00A4040C0A D392F000260100000001"

static void test_sw_select(void **state)
{
	static const struct {
		const char *reply;
		int rc;
	} cases[] = {
		{ "6A82", KP_E_SW_NOTFOUND }, { "6982", KP_E_SW_SECURITY }, { "6700", KP_E_SW_LENGTH },
		{ "6D00", KP_E_SW_OTHER },    { "6984", KP_E_SW_BLOCKED },  { "6983", KP_E_SW_BLOCKED },
		{ "63C2", KP_E_SW_PIN },      { "6C05", KP_E_SW_LENGTH },   { "6F00", KP_E_SW_OTHER },
		{ "016A82", KP_E_FRAME_LONG },       /* an error SW carrying data */
		{ "AABBCC6982", KP_E_FRAME_LONG },
		{ "019000", KP_E_FRAME_LONG },       /* SELECT asked for no data */
		{ "90", KP_E_FRAME_SHORT },          /* short replies */
		{ "", KP_E_FRAME_SHORT },
		{ "!timeout", KP_HAL_E_TIMEOUT },
		{ "9000", KP_OK },
	};

	(void)state;
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		const char *script[2] = { cases[i].reply, NULL };
		struct kp_jpki j = fake_client(script);

		assert_int_equal(kp_jpki_select_app(&j), cases[i].rc);
		assert_int_equal(fk.n_sent, 1);
		sent_is(0, SEL_JPKI);
		if (strlen(cases[i].reply) == 4)
			assert_int_equal(j.sw, strtol(cases[i].reply, NULL, 16));
	}
}

static void test_sw_read_certificate(void **state)
{
	uint8_t der[KP_JPKI_CERT_MAX], file[1500];
	size_t len = 0;
	struct kp_jpki j;

	(void)state;
	/* 6C xx: asked again once with exactly xx, at every step */
	{
		const char *script[] = { "9000", "9000", "6C05", "3082000A01 9000",
		                         "6C04", "02030405 9000", "0607080910 9000", NULL };

		j = fake_client(script);
		assert_int_equal(kp_jpki_read_auth_cert(&j, der, sizeof(der), &len), KP_OK);
		assert_int_equal(len, 14);
		assert_memory_equal(der, "\x30\x82\x00\x0A\x01\x02\x03\x04\x05\x06\x07\x08\x09\x10", 14);
		sent_is(0, SEL_JPKI);
		sent_is(1, "00A4020C02 000A");
		sent_is(2, "00B0000007");
		sent_is(3, "00B0000005");
		sent_is(4, "00B0000509");
		sent_is(5, "00B0000504");
		sent_is(6, "00B0000905");
		assert_int_equal(fk.n_sent, 7);
	}
	/* 6C xx twice, 6C with xx not below Le, 6C 00: no third try, no storm */
	{
		const char *a[] = { "9000", "9000", "6C05", "6C03", NULL };
		const char *b[] = { "9000", "9000", "6C09", NULL };
		const char *c[] = { "9000", "9000", "6C00", NULL };

		j = fake_client(a);
		assert_int_equal(kp_jpki_read_auth_cert(&j, der, sizeof(der), &len), KP_E_SW_LENGTH);
		assert_int_equal(fk.n_sent, 4);
		assert_int_equal(len, 0);
		j = fake_client(b);
		assert_int_equal(kp_jpki_read_auth_cert(&j, der, sizeof(der), &len), KP_E_SW_LENGTH);
		assert_int_equal(fk.n_sent, 3);
		j = fake_client(c);
		assert_int_equal(kp_jpki_read_auth_cert(&j, der, sizeof(der), &len), KP_E_SW_LENGTH);
		assert_int_equal(fk.n_sent, 3);
	}
	/* the EF or the application missing, a security condition, the card gone */
	{
		const char *a[] = { "6A82", NULL };
		const char *b[] = { "9000", "6A82", NULL };
		const char *c[] = { "9000", "9000", "6982", NULL };
		const char *d[] = { "9000", "9000", "3082000A010203 9000", "!timeout", NULL };
		const char *e[] = { "9000", "9000", "3082000A010203 9000", "6B00", NULL };
		const char *g[] = { "9000", "9000", "3082000A010203 9000", "9000", NULL };
		const char *h[] = { "9000", "9000", "3082000A010203 9000", "0405060708091011 9000",
		                    NULL };
		const char *k[] = { "9000", "9000", "3082000A01020304", NULL };

		j = fake_client(a);
		assert_int_equal(kp_jpki_read_auth_cert(&j, der, sizeof(der), &len), KP_E_SW_NOTFOUND);
		assert_int_equal(fk.n_sent, 1);
		j = fake_client(b);
		assert_int_equal(kp_jpki_read_auth_cert(&j, der, sizeof(der), &len), KP_E_SW_NOTFOUND);
		j = fake_client(c);
		assert_int_equal(kp_jpki_read_auth_cert(&j, der, sizeof(der), &len), KP_E_SW_SECURITY);
		assert_int_equal(j.sw, 0x6982);
		j = fake_client(d);
		assert_int_equal(kp_jpki_read_auth_cert(&j, der, sizeof(der), &len), KP_HAL_E_TIMEOUT);
		j = fake_client(e);
		assert_int_equal(kp_jpki_read_auth_cert(&j, der, sizeof(der), &len), KP_E_SW_OTHER);
		assert_int_equal(j.sw, 0x6B00);
		j = fake_client(g);                 /* 90 00 and no byte: no endless loop */
		assert_int_equal(kp_jpki_read_auth_cert(&j, der, sizeof(der), &len), KP_E_FRAME_SHORT);
		assert_int_equal(fk.n_sent, 4);
		j = fake_client(h);                 /* 8 bytes where 7 were asked */
		assert_int_equal(kp_jpki_read_auth_cert(&j, der, sizeof(der), &len), KP_E_FRAME_LONG);
		j = fake_client(k);                 /* data without a status word: "03 04" + data */
		assert_int_equal(kp_jpki_read_auth_cert(&j, der, sizeof(der), &len), KP_E_FRAME_LONG);
	}
	/* chunks from a 1000-byte file: 7, then 255, 255, 255, 228 */
	{
		size_t want_le[] = { 7, 255, 255, 255, 228 };

		memset(file, 0x5C, sizeof(file));
		memcpy(file, "\x30\x82\x03\xE4", 4);
		j = fake_client(NULL);
		fk.file = file;
		fk.file_len = 1000;
		assert_int_equal(kp_jpki_read_auth_cert(&j, der, sizeof(der), &len), KP_OK);
		assert_int_equal(len, 1000);
		assert_memory_equal(der, file, 1000);
		assert_int_equal(fk.n_sent, 2 + 5);
		for (size_t i = 0, off = 0; i < 5; off += want_le[i], i++) {
			assert_int_equal(fk.sent[2 + i][1], 0xB0);
			assert_int_equal((size_t)fk.sent[2 + i][2] << 8 | fk.sent[2 + i][3], off);
			assert_int_equal(fk.sent[2 + i][4], want_le[i]);
		}
		/* a card that gives fewer bytes than asked is read on where it stopped */
		j = fake_client(NULL);
		fk.file = file;
		fk.file_len = 1000;
		fk.max_chunk = 100;
		assert_int_equal(kp_jpki_read_auth_cert(&j, der, sizeof(der), &len), KP_OK);
		assert_int_equal(len, 1000);
		assert_memory_equal(der, file, 1000);
	}
	/* headers: not a SEQUENCE, a length form it does not take, longer than a certificate */
	{
		static const char *const bad[] = { "\x31\x82\x03\xE4", "\x30\x84\x00\x00",
		                                   "\x30\x80\x00\x00", "\x30\x82\x10\x00" };

		for (size_t i = 0; i < 4; i++) {
			memcpy(file, bad[i], 4);
			j = fake_client(NULL);
			fk.file = file;
			fk.file_len = sizeof(file);
			assert_int_equal(kp_jpki_read_auth_cert(&j, der, sizeof(der), &len), KP_E_CERT);
			assert_int_equal(fk.n_sent, 3);     /* nothing read past the header */
		}
		/* a certificate larger than the caller's buffer */
		memcpy(file, "\x30\x82\x03\xE4", 4);
		j = fake_client(NULL);
		fk.file = file;
		fk.file_len = 1000;
		assert_int_equal(kp_jpki_read_auth_cert(&j, der, 999, &len), KP_E_CERT);
	}
}

static void test_sw_pin(void **state)
{
	int tries = 99;
	struct kp_jpki j;

	(void)state;
	{
		const char *a[] = { "9000", "9000", "63C2", NULL };
		const char *b[] = { "9000", "9000", "63C0", NULL };
		const char *c[] = { "9000", "9000", "6984", NULL };
		const char *g[] = { "9000", "6A82", NULL };

		j = fake_client(a);
		assert_int_equal(kp_jpki_pin_tries(&j, &tries), KP_OK);
		assert_int_equal(tries, 2);
		sent_is(1, "00A4020C02 0018");
		sent_is(2, "00200080");
		j = fake_client(b);
		assert_int_equal(kp_jpki_pin_tries(&j, &tries), KP_OK);
		assert_int_equal(tries, 0);
		j = fake_client(c);
		assert_int_equal(kp_jpki_pin_tries(&j, &tries), KP_OK);
		assert_int_equal(tries, 0);
		j = fake_client(g);
		assert_int_equal(kp_jpki_pin_tries(&j, &tries), KP_E_SW_NOTFOUND);
		assert_int_equal(tries, -1);
	}
	/* anything but exactly 63 Cx (x <= 3) or 69 84 fails closed (issue 13): 90 00 is not
	 * "3 tries", data before 63 C3 is no counter, a card claiming 5 tries is no JPKI card */
	{
		static const char *const odd[] = { "9000", "0163C3", "AABB63C3", "63C5", "63C4", "63CF",
		                                   "6983", "6986", "63", "6300", "63D3", "6A82",
		                                   "63C3 00", "019000" };

		for (size_t i = 0; i < sizeof(odd) / sizeof(odd[0]); i++) {
			const char *script[] = { "9000", "9000", odd[i], NULL };

			j = fake_client(script);
			tries = 99;
			if (kp_jpki_pin_tries(&j, &tries) != KP_E_PIN_COUNTER)
				fail_msg("PIN counter answer %s: not refused", odd[i]);
			assert_int_equal(tries, -1);
			assert_int_equal(fk.n_sent, 3);
		}
	}
	{
		const char *a[] = { "63C1", NULL };
		const char *b[] = { "9000", NULL };
		const char *c[] = { "6984", NULL };
		const char *d[] = { "6700", NULL };
		const char *e[] = { "0163C1", NULL };  /* 63xx may carry data */
		const char *g[] = { "6983", NULL };

		j = fake_client(a);
		assert_int_equal(kp_jpki_verify_pin(&j, "1234", &tries), KP_E_SW_PIN);
		assert_int_equal(tries, 1);
		sent_is(0, "0020008004 31323334");
		j = fake_client(b);
		assert_int_equal(kp_jpki_verify_pin(&j, "0000", &tries), KP_OK);
		j = fake_client(c);
		assert_int_equal(kp_jpki_verify_pin(&j, "1234", &tries), KP_E_SW_BLOCKED);
		assert_int_equal(tries, 0);
		j = fake_client(g);
		assert_int_equal(kp_jpki_verify_pin(&j, "1234", &tries), KP_E_SW_BLOCKED);
		assert_int_equal(tries, 0);
		j = fake_client(d);
		assert_int_equal(kp_jpki_verify_pin(&j, "1234", &tries), KP_E_SW_LENGTH);
		assert_int_equal(tries, -1);
		j = fake_client(e);
		assert_int_equal(kp_jpki_verify_pin(&j, "1234", &tries), KP_E_SW_PIN);
		assert_int_equal(tries, 1);
		/* PINs that are not 4 digits never reach the card */
		static const char *const bad[] = { "123", "12345", "12a4", "", " 123" };

		for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
			j = fake_client(b);
			assert_int_equal(kp_jpki_verify_pin(&j, bad[i], &tries), KP_E_INVAL);
			assert_int_equal(fk.n_sent, 0);
		}
		j = fake_client(b);
		assert_int_equal(kp_jpki_verify_pin(&j, NULL, &tries), KP_E_INVAL);
		assert_int_equal(fk.n_sent, 0);
	}
}

static struct kp_pin pin_of(const char *digits)
{
	struct kp_pin pin;
	char err[128];

	assert_int_equal(kp_pin_parse(&pin, digits, strlen(digits), err, sizeof(err)), KP_OK);
	return pin;
}

static int sent_verify_with_pin(void)
{
	for (size_t i = 0; i < fk.n_sent; i++)
		if (fk.sent_len[i] == 9 && fk.sent[i][1] == 0x20)
			return 1;
	return 0;
}

static void test_sw_prove(void **state)
{
	char sigreply[2 * 256 + 8], err[256];
	kp_cert *cert = NULL;
	int tries = 99;
	struct kp_jpki j;
	struct kp_pin pin;

	(void)state;
	assert_int_equal(kp_cert_load(&cert, p("hanako/auth.der")), 0);
	/* one try left, none left: no VERIFY with a PIN is ever sent */
	{
		const char *a[] = { "9000", "9000", "63C1", NULL };
		const char *b[] = { "9000", "9000", "63C0", NULL };
		const char *c[] = { "9000", "9000", "6984", NULL };

		pin = pin_of("1234");
		j = fake_client(a);
		assert_int_equal(kp_jpki_prove(&j, cert, &pin, &tries, err, sizeof(err)),
		                 KP_E_PIN_LAST_TRY);
		assert_int_equal(tries, 1);
		assert_int_equal(fk.n_sent, 3);
		assert_false(sent_verify_with_pin());
		pin = pin_of("1234");
		j = fake_client(b);
		assert_int_equal(kp_jpki_prove(&j, cert, &pin, &tries, err, sizeof(err)),
		                 KP_E_SW_BLOCKED);
		assert_int_equal(tries, 0);
		assert_false(sent_verify_with_pin());
		pin = pin_of("1234");
		j = fake_client(c);
		assert_int_equal(kp_jpki_prove(&j, cert, &pin, &tries, err, sizeof(err)),
		                 KP_E_SW_BLOCKED);
		assert_int_equal(tries, 0);
		assert_false(sent_verify_with_pin());
	}
	/* wrong PIN: the tries left the card reports */
	{
		const char *a[] = { "9000", "9000", "63C3", "63C2", NULL };

		pin = pin_of("1234");
		j = fake_client(a);
		assert_int_equal(kp_jpki_prove(&j, cert, &pin, &tries, err, sizeof(err)), KP_E_SW_PIN);
		assert_int_equal(tries, 2);
		assert_non_null(strstr(err, "2 tries left"));
		assert_null(strstr(err, "1234"));
	}
	/* the signature refused, or one that does not verify with the certificate */
	{
		const char *a[] = { "9000", "9000", "63C3", "9000", "9000", "6982", NULL };
		const char *b[] = { "9000", "9000", "63C3", "9000", "9000", sigreply, NULL };
		const char *c[] = { "9000", "9000", "63C3", "9000", "9000", "00112233 9000", NULL };
		uint8_t want[5 + 19];

		pin = pin_of("1234");
		j = fake_client(a);
		assert_int_equal(kp_jpki_prove(&j, cert, &pin, &tries, err, sizeof(err)),
		                 KP_E_SW_SECURITY);
		for (int i = 0; i < 256; i++)
			sprintf(sigreply + 2 * i, "%02X", (i * 37 + 11) & 0xFF);
		strcpy(sigreply + 512, "9000");
		pin = pin_of("1234");
		j = fake_client(b);
		assert_int_equal(kp_jpki_prove(&j, cert, &pin, &tries, err, sizeof(err)),
		                 KP_E_CARD_SIGNATURE);
		assert_non_null(strstr(err, "does not verify"));
		sent_is(3, "0020008004 31323334");
		sent_is(4, "00A4020C02 0017");
		/* 80 2A 00 80 33 <SHA-256 DigestInfo of a fresh challenge> 00 */
		tu_hex("802A008033 3031300D060960864801650304020105000420", want, sizeof(want));
		assert_int_equal(fk.sent_len[5], 5 + 19 + 32 + 1);
		assert_memory_equal(fk.sent[5], want, sizeof(want));
		assert_int_equal(fk.sent[5][56], 0x00);
		pin = pin_of("1234");
		j = fake_client(c);
		assert_int_equal(kp_jpki_prove(&j, cert, &pin, &tries, err, sizeof(err)),
		                 KP_E_CARD_SIGNATURE);
	}
	/* the PIN is used once and wiped on every path: after any of these it is gone */
	assert_int_equal(pin.have, 0);
	assert_int_equal(pin.digits[0], '\0');
	/* a PIN that is not 4 digits, or none, is refused before any APDU */
	{
		const char *a[] = { "9000", "9000", "63C3", "9000", NULL };
		struct kp_pin bad;

		memset(&bad, 0, sizeof(bad));
		j = fake_client(a);
		assert_int_equal(kp_jpki_prove(&j, cert, &bad, &tries, err, sizeof(err)), KP_E_PIN_NONE);
		assert_int_equal(fk.n_sent, 0);
		assert_int_equal(kp_jpki_prove(&j, cert, NULL, &tries, err, sizeof(err)), KP_E_PIN_NONE);
		bad.have = 1;
		memcpy(bad.digits, "12a4", 5);
		assert_int_equal(kp_jpki_prove(&j, cert, &bad, &tries, err, sizeof(err)), KP_E_PIN_FORMAT);
		assert_int_equal(fk.n_sent, 0);
		assert_int_equal(bad.have, 0);
	}
	/* an odd PIN counter answer: no VERIFY, the PIN wiped */
	{
		const char *a[] = { "9000", "9000", "9000", "9000", NULL };

		pin = pin_of("1234");
		j = fake_client(a);
		assert_int_equal(kp_jpki_prove(&j, cert, &pin, &tries, err, sizeof(err)), KP_E_PIN_COUNTER);
		assert_false(sent_verify_with_pin());
		assert_int_equal(fk.n_sent, 3);
		assert_non_null(strstr(err, "SW 9000"));
		assert_int_equal(pin.have, 0);
	}
	kp_cert_free(cert);
}

/* ---- strong mode with the mock cards: PIN, signature, and never the last try ---- */

static int prove_next(struct fx *f, struct kp_reader *r, const char *pin, int *tries)
{
	struct kp_pin p_in;
	kp_cert *cert = NULL;
	const char *reason = NULL;
	uint8_t lk[KP_TOKEN_LEN];
	struct kp_jpki j;
	char err[256];
	int rc;

	wait_typeb(r);
	assert_int_equal(kp_tap_identify_mynumber(f->e, r, kp_reader_now_ms(r), lk, &cert, &reason),
	                 KP_OK);
	kp_jpki_init(&j, r, 500);
	p_in = pin_of(pin);
	rc = kp_jpki_prove(&j, cert, &p_in, tries, err, sizeof(err));
	assert_int_equal(p_in.have, 0);
	kp_cert_free(cert);
	kp_reader_release(r, 0, 0);
	return rc;
}

static void test_strong_mode(void **state)
{
	struct fx *f = *state;
	struct kp_mock_jpki_stats st;
	struct kp_reader *r;
	kp_cert *cert = NULL;
	uint8_t hash[KP_SHA256_LEN], sig[300];
	size_t sig_len = 0;
	int tries = 99;
	struct kp_jpki j;

	r = open_scn("card hanako mynumber dir=hanako pin=2580\n"
	             "card last mynumber dir=taro pin=1111 tries=1\n"
	             "card blocked mynumber dir=taro pin=1111 tries=0\n"
	             "card fresh mynumber dir=taro pin=1111\n"
	             "card clone mynumber dir=clone pin=2580\n"
	             "tap +0 hanako\ntap +10 hanako\ntap +20 hanako\ntap +30 last\ntap +40 blocked\n"
	             "tap +50 fresh\ntap +60 fresh\ntap +70 fresh\ntap +80 clone\ntap +90 hanako\n");
	/* right PIN: the card signs a fresh challenge that verifies with its certificate */
	assert_int_equal(prove_next(f, r, "2580", &tries), KP_OK);
	assert_int_equal(tries, 3);
	st = stats(r, "hanako");
	assert_int_equal(st.verify_ok, 1);
	assert_int_equal(st.signatures, 1);
	/* wrong PIN: KP_E_SW_PIN, the tries the card has left */
	assert_int_equal(prove_next(f, r, "0000", &tries), KP_E_SW_PIN);
	assert_int_equal(tries, 2);
	st = stats(r, "hanako");
	assert_int_equal(st.verify_wrong, 1);
	assert_int_equal(st.tries_left, 2);
	assert_int_equal(st.signatures, 1);
	/* the right one again restores the counter */
	assert_int_equal(prove_next(f, r, "2580", &tries), KP_OK);
	assert_int_equal(stats(r, "hanako").tries_left, 3);
	/* one try left: not attempted; the card's counter stays 1 */
	assert_int_equal(prove_next(f, r, "1111", &tries), KP_E_PIN_LAST_TRY);
	assert_int_equal(tries, 1);
	st = stats(r, "last");
	assert_int_equal(st.tries_left, 1);
	assert_int_equal(st.verify_ok + st.verify_wrong, 0);
	assert_int_equal(st.signatures, 0);
	/* blocked */
	assert_int_equal(prove_next(f, r, "1111", &tries), KP_E_SW_BLOCKED);
	assert_int_equal(tries, 0);
	assert_int_equal(stats(r, "blocked").verify_ok + stats(r, "blocked").verify_wrong, 0);
	/* two wrong PINs take a card from 3 to 1; the third attempt is never made */
	assert_int_equal(prove_next(f, r, "9999", &tries), KP_E_SW_PIN);
	assert_int_equal(tries, 2);
	assert_int_equal(prove_next(f, r, "9999", &tries), KP_E_SW_PIN);
	assert_int_equal(tries, 1);
	assert_int_equal(prove_next(f, r, "1111", &tries), KP_E_PIN_LAST_TRY);
	st = stats(r, "fresh");
	assert_int_equal(st.tries_left, 1);
	assert_int_equal(st.verify_wrong, 2);
	assert_int_equal(st.verify_ok, 0);
	/* a copied certificate without its card's key: the signature gives it away */
	assert_int_equal(prove_next(f, r, "2580", &tries), KP_E_CARD_SIGNATURE);
	assert_int_equal(stats(r, "clone").signatures, 1);
	/* the signature checked here, with the certificate from the card's folder */
	wait_typeb(r);
	kp_jpki_init(&j, r, 500);
	assert_int_equal(kp_jpki_pin_tries(&j, &tries), KP_OK);
	assert_int_equal(tries, 3);
	assert_int_equal(kp_jpki_verify_pin(&j, "2580", &tries), KP_OK);
	assert_int_equal(kp_sha256("kippu strong mode", 17, hash), 0);
	assert_int_equal(kp_jpki_sign(&j, hash, sig, sizeof(sig), &sig_len), KP_OK);
	assert_int_equal(sig_len, 256);
	assert_int_equal(kp_cert_load(&cert, p("hanako/auth.der")), 0);
	assert_int_equal(kp_cert_verify_rsa_sha256(cert, hash, sig, sig_len), 0);
	hash[0] ^= 1;
	assert_int_not_equal(kp_cert_verify_rsa_sha256(cert, hash, sig, sig_len), 0);
	kp_cert_free(cert);
	kp_reader_release(r, 0, 0);
	close_scn(r);
}

/* ---- link mode: the real kippu-terminal at a registration counter ---- */

struct link_fx {
	struct kp_record rec;
	int n;
};

static int link_row(const struct kp_journal_row *row, void *arg)
{
	struct link_fx *l = arg;

	assert_int_equal(kp_record_decode(row->payload, row->payload_len, &l->rec), 0);
	l->n++;
	return 0;
}

static void test_link_mode(void **state)
{
	struct link_fx l;
	kp_store *s = NULL;
	uint8_t alice[KP_TOKEN_LEN];
	char text[800], idm[17], *hmi, *log, *a, *b;
	int64_t n = -1;

	(void)state;
	kp_hex(ALICE_IDM, 8, idm);
	assert_int_equal(kp_token_derive(token_key, "felica", ALICE_IDM, 8, alice), 0);
	snprintf(text, sizeof(text),
	         "terminal_id = LINK-01\noperator = OP-A\nreader = mock:link.txt\n"
	         "hmi = mock:hmi.log\ndatabase = link.db\nkey = terminal.key\n"
	         "cert = terminal.crt\ntoken_key = token.key\njpki_ca = %s/CA.crt\n", dir);
	tu_write(p("link.conf"), text);
	snprintf(text, sizeof(text), "start %lld\npace virtual\n"
	         "card hanako mynumber dir=hanako pin=2580\ncard alice felica idm=%s\n"
	         "card low mynumber dir=taro tries=1\n"
	         "tap +0 hanako\ntap +5 alice\n", (long long)T_START, idm);
	tu_write(p("link.txt"), text);
	tu_write(p("pin.txt"), "2580\n");
	assert_int_equal(tu_sh("cd %s && %s/kippu-terminal --config link.conf --link-mode "
	                       "--pin-file pin.txt --offline >link.out 2>link.err", dir, bin), 0);
	hmi = tu_read(p("hmi.log"));
	assert_non_null(hmi);
	a = strstr(hmi, " info link-ready ");
	b = strstr(hmi, " info link-request ");
	assert_non_null(a);
	assert_non_null(b);
	assert_true(a < b);
	assert_int_equal(tu_count(hmi, "show "), 2);
	free(hmi);
	assert_int_equal(kp_store_open(&s, p("link.db")), KP_OK);
	memset(&l, 0, sizeof(l));
	assert_int_equal(kp_journal_foreach(s, link_row, &l), 0);
	assert_int_equal(l.n, 1);
	assert_string_equal(l.rec.kind, "link");
	assert_string_equal(l.rec.terminal, "LINK-01");
	assert_int_equal(l.rec.has_token, 1);
	assert_memory_equal(l.rec.token, alice, KP_TOKEN_LEN);
	assert_int_equal(l.rec.has_via, 1);
	assert_memory_equal(l.rec.via, lk_hanako, KP_TOKEN_LEN);
	assert_int_equal(l.rec.time_ms, ms_at(5));
	kp_store_close(s);
	assert_int_equal(ctl("journal verify %s/link.db --ca op.crt", dir), 0);
	assert_no_certificate_in(p("link.db"), "hanako", HANAKO_CN, lk_hanako);
	log = tu_read(p("link.err"));
	assert_non_null(log);
	assert_null(strstr(log, "Hanako"));
	assert_null(strstr(log, "2580"));
	free(log);

	/* a wrong PIN: pin-wrong, then the FeliCa card links nothing; the next My Number card
	 * gets no PIN (the one entered was consumed by the first) */
	snprintf(text, sizeof(text), "start %lld\npace virtual\n"
	         "card hanako mynumber dir=hanako pin=2580\ncard alice felica idm=%s\n"
	         "card low mynumber dir=taro pin=0000 tries=1\n"
	         "tap +0 hanako\ntap +5 alice\ntap +10 low\ntap +15 alice\n", (long long)T_START, idm);
	tu_write(p("link2.txt"), text);
	tu_write(p("pin0.txt"), "0000\n");
	assert_int_equal(tu_sh("cd %s && %s/kippu-terminal --config link.conf --link-mode "
	                       "--pin-file pin0.txt --offline --reader mock:link2.txt --db link2.db "
	                       "--hmi mock:hmi2.log >link2.out 2>link2.err", dir, bin), 0);
	hmi = tu_read(p("hmi2.log"));
	assert_non_null(hmi);
	a = strstr(hmi, " info pin-wrong - -1 Wrong PIN: 2 tries left");
	assert_non_null(a);
	b = strstr(a, " info link-first ");
	assert_non_null(b);
	a = strstr(b, " info pin-missing - -1 Enter your 4-digit PIN on the pad");
	assert_non_null(a);
	assert_non_null(strstr(a, " info link-first "));
	assert_null(strstr(hmi, "link-ready"));
	assert_null(strstr(hmi, "link-request"));
	free(hmi);
	assert_int_equal(access(p("pin0.txt"), F_OK), -1);
	assert_int_equal(kp_store_open(&s, p("link2.db")), KP_OK);
	assert_int_equal(kp_store_count(s, "journal", &n), KP_OK);
	assert_int_equal(n, 0);
	kp_store_close(s);
	/* a card with one try left, with a PIN of its own: not tried at all */
	snprintf(text, sizeof(text), "start %lld\npace virtual\n"
	         "card low mynumber dir=taro pin=0000 tries=1\ntap +0 low\n", (long long)T_START);
	tu_write(p("link3.txt"), text);
	tu_write(p("pin0.txt"), "0000\n");
	assert_int_equal(tu_sh("cd %s && %s/kippu-terminal --config link.conf --link-mode "
	                       "--pin-file pin0.txt --offline --reader mock:link3.txt --db link3.db "
	                       "--hmi mock:hmi3.log >link3.out 2>link3.err", dir, bin), 0);
	hmi = tu_read(p("hmi3.log"));
	assert_non_null(hmi);
	assert_non_null(strstr(hmi, " info pin-low "));
	free(hmi);
}

/* ---- issue 13: the spy reader (hal/spy_reader.c) around mock:, and the real terminal ---- */

/* Lines of a spy log that start with prefix, in card session n (0: in all). */
static int spy_count(const char *log, int session, const char *prefix)
{
	int cur = 0, count = 0;

	for (const char *l = log; l != NULL && *l != '\0';) {
		const char *nl = strchr(l, '\n');
		int k;

		if (sscanf(l, "card %d ", &k) == 1)
			cur = k;
		else if ((session == 0 || cur == session) && strncmp(l, prefix, strlen(prefix)) == 0)
			count++;
		l = nl != NULL ? nl + 1 : NULL;
	}
	return count;
}

#define SPY_APDU   "> "
#define SPY_VERIFY "> 0020008004 "            /* a VERIFY carrying a PIN (masked) */

struct run {
	char *hmi, *apdus, *err;
};

static void run_free(struct run *r)
{
	free(r->hmi);
	free(r->apdus);
	free(r->err);
}

/* The real kippu-terminal in link mode, its reader the spy around the scenario body (start
 * and pace added) with the spy's reply rules, and a PIN file holding pin (NULL: none). */
static struct run run_link(const char *name, const char *body, const char *rules, const char *pin)
{
	char text[4096], path[700];
	struct run out;

	snprintf(text, sizeof(text), "terminal_id = LINK-01\noperator = OP-A\nreader = mock:link.txt\n"
	         "hmi = mock:hmi.log\ndatabase = link.db\nkey = terminal.key\n"
	         "cert = terminal.crt\ntoken_key = token.key\njpki_ca = %s/CA.crt\n", dir);
	tu_write(p("link.conf"), text);
	snprintf(text, sizeof(text), "start %lld\npace virtual\n%s", (long long)T_START, body);
	snprintf(path, sizeof(path), "%s/%s.txt", dir, name);
	tu_write(path, text);
	snprintf(text, sizeof(text), "inner mock:%s.txt\nlog %s.apdus\n%s", name, name,
	         rules != NULL ? rules : "");
	snprintf(path, sizeof(path), "%s/%s.spy", dir, name);
	tu_write(path, text);
	snprintf(path, sizeof(path), "%s/%s.apdus", dir, name);
	unlink(path);                            /* the spy appends to its log */
	snprintf(path, sizeof(path), "%s/%s.pin", dir, name);
	unlink(path);
	if (pin != NULL)
		tu_write(path, pin);
	assert_int_equal(tu_sh("cd %s && %s/kippu-terminal --config link.conf --link-mode "
	                       "--pin-file %s.pin --offline --reader spy:%s.spy --db %s.db "
	                       "--hmi mock:%s.hmi >%s.out 2>%s.err", dir, bin, name, name, name, name,
	                       name, name), 0);
	/* whatever it held, the PIN file is gone: no later card can be sent it */
	assert_int_equal(access(path, F_OK), -1);
	snprintf(path, sizeof(path), "%s/%s.hmi", dir, name);
	out.hmi = tu_read(path);
	snprintf(path, sizeof(path), "%s/%s.apdus", dir, name);
	out.apdus = tu_read(path);
	snprintf(path, sizeof(path), "%s/%s.err", dir, name);
	out.err = tu_read(path);
	assert_non_null(out.hmi);
	assert_non_null(out.apdus);
	assert_non_null(out.err);
	return out;
}

/* The PIN input: exactly 4 ASCII digits and at most one newline; the file taken once. */
static void test_pin_input(void **state)
{
	static const struct {
		const char *in;
		int rc;
	} cases[] = {
		{ "4321", KP_OK }, { "4321\n", KP_OK }, { "0000\n", KP_OK },
		{ "43219999", KP_E_PIN_FORMAT }, { "43219999\n", KP_E_PIN_FORMAT },
		{ "432", KP_E_PIN_FORMAT }, { "432\n", KP_E_PIN_FORMAT }, { "", KP_E_PIN_FORMAT },
		{ "\n", KP_E_PIN_FORMAT }, { "4321\n\n", KP_E_PIN_FORMAT },
		{ "4321\r\n", KP_E_PIN_FORMAT }, { " 4321", KP_E_PIN_FORMAT },
		{ "4321 ", KP_E_PIN_FORMAT }, { "43a1", KP_E_PIN_FORMAT },
		{ "4321\n5678\n", KP_E_PIN_FORMAT },
		{ "\xef\xbc\x94\xef\xbc\x93\xef\xbc\x92\xef\xbc\x91", KP_E_PIN_FORMAT }, /* ４３２１ */
	};
	struct kp_pin pin;
	char err[160], *text;
	int fd;

	(void)state;
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		memset(&pin, 0x55, sizeof(pin));
		assert_int_equal(kp_pin_parse(&pin, cases[i].in, strlen(cases[i].in), err, sizeof(err)),
		                 cases[i].rc);
		if (cases[i].rc == KP_OK) {
			assert_int_equal(pin.have, 1);
			assert_memory_equal(pin.digits, cases[i].in, 4);
			assert_int_equal(pin.digits[4], '\0');
			kp_pin_wipe(&pin);
			assert_int_equal(pin.have, 0);
			assert_int_equal(pin.digits[0], '\0');
		} else {
			assert_int_equal(pin.have, 0);
			assert_true(err[0] != '\0');
			assert_null(strstr(err, "432"));       /* says what is wrong, not what was typed */
			assert_null(strstr(err, "999"));
		}
	}
	assert_int_equal(kp_pin_parse(&pin, "43219999", 8, err, sizeof(err)), KP_E_PIN_FORMAT);
	assert_non_null(strstr(err, "8 digits"));
	/* the file: taken for one card, then gone; a second take finds nothing */
	tu_write(p("pin-t.txt"), "2580\n");
	assert_int_equal(kp_pin_take_file(&pin, p("pin-t.txt"), err, sizeof(err)), KP_OK);
	assert_string_equal(pin.digits, "2580");
	assert_int_equal(access(p("pin-t.txt"), F_OK), -1);
	assert_int_equal(access(p("pin-t.txt.taken"), F_OK), -1);
	kp_pin_wipe(&pin);
	assert_int_equal(kp_pin_take_file(&pin, p("pin-t.txt"), err, sizeof(err)), KP_E_PIN_NONE);
	assert_int_equal(pin.have, 0);
	/* over-long, short, far too long, not a file: refused, and consumed all the same */
	tu_write(p("pin-t.txt"), "43219999");
	assert_int_equal(kp_pin_take_file(&pin, p("pin-t.txt"), err, sizeof(err)), KP_E_PIN_FORMAT);
	assert_int_equal(pin.have, 0);
	assert_int_equal(access(p("pin-t.txt"), F_OK), -1);
	tu_write(p("pin-t.txt"), "432\n");
	assert_int_equal(kp_pin_take_file(&pin, p("pin-t.txt"), err, sizeof(err)), KP_E_PIN_FORMAT);
	text = calloc(1, 200);
	assert_non_null(text);
	memset(text, '7', 199);
	tu_write(p("pin-t.txt"), text);
	free(text);
	assert_int_equal(kp_pin_take_file(&pin, p("pin-t.txt"), err, sizeof(err)), KP_E_PIN_FORMAT);
	assert_non_null(strstr(err, "199 bytes"));
	assert_int_equal(access(p("pin-t.txt"), F_OK), -1);
	assert_int_equal(mkfifo(p("pin-t.txt"), 0600), 0);
	assert_int_equal(kp_pin_take_file(&pin, p("pin-t.txt"), err, sizeof(err)), KP_E_PIN_FORMAT);
	assert_non_null(strstr(err, "not a regular file"));
	assert_int_equal(access(p("pin-t.txt"), F_OK), -1);
	/* an empty file is a PIN pad that wrote nothing yet: refused, gone */
	fd = open(p("pin-t.txt"), O_WRONLY | O_CREAT | O_EXCL, 0600);
	assert_true(fd >= 0);
	close(fd);
	assert_int_equal(kp_pin_take_file(&pin, p("pin-t.txt"), err, sizeof(err)), KP_E_PIN_FORMAT);
	assert_int_equal(access(p("pin-t.txt"), F_OK), -1);
}

/* Two riders, one PIN written once: the first card takes it, the second gets no VERIFY
 * (the issue's stale-PIN sequence sent 4321 to the next card twice: 63C3 -> 63C1). */
static void test_link_stale_pin(void **state)
{
	char body[800], idm[17];
	struct run r;
	kp_store *s = NULL;
	int64_t n = -1;
	const char *a;

	(void)state;
	kp_hex(ALICE_IDM, 8, idm);
	/* hanako's PIN is not 4321: a wrong PIN for her card, and taro (whose PIN 4321 is)
	 * taps next, twice: his card is never sent the PIN entered for hers */
	snprintf(body, sizeof(body), "card hanako mynumber dir=hanako pin=2580\n"
	         "card alice felica idm=%s\ncard taro mynumber dir=taro pin=4321\n"
	         "tap +0 hanako\ntap +5 alice\ntap +10 taro\ntap +15 taro\n", idm);
	r = run_link("stale", body, NULL, "4321\n");
	a = strstr(r.hmi, " info pin-wrong - -1 Wrong PIN: 2 tries left");
	assert_non_null(a);
	a = strstr(a, " info link-first ");
	assert_non_null(a);
	a = strstr(a, " info pin-missing - -1 Enter your 4-digit PIN on the pad");
	assert_non_null(a);
	assert_non_null(strstr(a + 1, " info pin-missing "));
	assert_int_equal(tu_count(r.hmi, "show "), 4);
	/* the spy: one VERIFY in all, in the first card's session; the later cards were sent
	 * nothing at all (the PIN is taken before any APDU) */
	assert_int_equal(spy_count(r.apdus, 0, SPY_VERIFY), 1);
	assert_int_equal(spy_count(r.apdus, 1, SPY_VERIFY), 1);
	assert_int_equal(spy_count(r.apdus, 3, SPY_APDU), 0);
	assert_int_equal(spy_count(r.apdus, 4, SPY_APDU), 0);
	assert_int_equal(tu_count(r.apdus, "card "), 4);
	assert_null(strstr(r.apdus, "4321"));       /* the spy masks a PIN */
	assert_null(strstr(r.err, "4321"));
	run_free(&r);
	/* the right PIN: hanako links alice's card; taro after her gets no PIN either */
	snprintf(body, sizeof(body), "card hanako mynumber dir=hanako pin=4321\n"
	         "card alice felica idm=%s\ncard taro mynumber dir=taro pin=4321\n"
	         "tap +0 hanako\ntap +5 alice\ntap +10 taro\n", idm);
	r = run_link("fresh", body, NULL, "4321\n");
	a = strstr(r.hmi, " info link-ready ");
	assert_non_null(a);
	a = strstr(a, " info link-request - -1 Link requested: active after the next sync");
	assert_non_null(a);
	assert_non_null(strstr(a, " info pin-missing "));
	assert_int_equal(spy_count(r.apdus, 0, SPY_VERIFY), 1);
	assert_int_equal(spy_count(r.apdus, 1, SPY_VERIFY), 1);
	assert_int_equal(spy_count(r.apdus, 3, SPY_APDU), 0);
	run_free(&r);
	assert_int_equal(kp_store_open(&s, p("fresh.db")), KP_OK);
	assert_int_equal(kp_store_count(s, "journal", &n), KP_OK);
	assert_int_equal(n, 1);
	kp_store_close(s);
}

/* A PIN that is not exactly 4 digits is refused before the card is asked anything. */
static void test_link_pin_refused_before_apdu(void **state)
{
	static const char *const bad[] = { "43219999", "43219999\n", "432\n", "432", "", "\n",
	                                   "43a1\n", "4321\n\n", " 4321\n", "4321\r\n" };

	(void)state;
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		struct run r = run_link("badpin", "card taro mynumber dir=taro pin=4321\ntap +0 taro\n",
		                        NULL, bad[i]);

		if (strstr(r.hmi, " info pin-invalid - -1 PIN must be 4 digits: please enter it again")
		    == NULL)
			fail_msg("PIN input #%zu: %s", i, r.hmi);
		assert_int_equal(tu_count(r.apdus, "card 1 typeb\n"), 1);
		assert_int_equal(spy_count(r.apdus, 0, SPY_APDU), 0);
		assert_non_null(strstr(r.err, "PIN refused before the card was asked anything"));
		assert_null(strstr(r.err, "4321"));
		assert_null(strstr(r.err, "9999"));
		run_free(&r);
	}
}

/* Odd answers to the PIN counter query, from the spy in the card's place: each stops the PIN
 * step, no VERIFY is sent, the card's counter stays where it was. */
static void test_pin_counter_fails_closed(void **state)
{
	static const struct {
		const char *reply;
		int rc;
	} odd[] = {
		{ "9000", KP_E_PIN_COUNTER },           /* read as "3 tries left" before issue 13 */
		{ "0163C3", KP_E_PIN_COUNTER },         /* data before 63 C3 */
		{ "AABBCC63C1", KP_E_PIN_COUNTER },
		{ "63C5", KP_E_PIN_COUNTER },           /* more tries than JPKI's 3 */
		{ "63C4", KP_E_PIN_COUNTER },
		{ "63CF", KP_E_PIN_COUNTER },
		{ "6983", KP_E_PIN_COUNTER },           /* not the documented 69 84 */
		{ "6A82", KP_E_PIN_COUNTER },
		{ "6F00", KP_E_PIN_COUNTER },
		{ "6300", KP_E_PIN_COUNTER },
		{ "silent", KP_HAL_E_TIMEOUT },
	};
	struct fx *f = *state;
	struct kp_spy_stats ss;
	struct kp_mock_jpki_stats st;
	struct kp_reader *r = NULL;
	char scn[4096], cfg[4096], err[256];
	size_t n = 0, m = 0;
	const size_t k = sizeof(odd) / sizeof(odd[0]);

	n += (size_t)snprintf(scn, sizeof(scn), "start %lld\npace virtual\n"
	                      "card fresh mynumber dir=taro pin=1111\n", (long long)T_START);
	m += (size_t)snprintf(cfg, sizeof(cfg), "inner mock:counter.txt\nlog counter.apdus\n");
	for (size_t i = 0; i < k; i++) {
		n += (size_t)snprintf(scn + n, sizeof(scn) - n, "tap +%zu fresh\n", i * 10);
		m += (size_t)snprintf(cfg + m, sizeof(cfg) - m, "reply 00200080 %s card=%zu\n",
		                      odd[i].reply, i + 1);
	}
	tu_write(p("counter.txt"), scn);
	tu_write(p("counter.spy"), cfg);
	snprintf(cfg, sizeof(cfg), "spy:%s", p("counter.spy"));
	assert_int_equal(kp_reader_open(&r, cfg), KP_HAL_OK);
	for (size_t i = 0; i < k; i++) {
		struct kp_poll poll = { KP_TECH_ISO14443B, 0x0003, 1 };
		struct kp_card_info info;
		const char *reason = NULL;
		kp_cert *cert = NULL;
		uint8_t lk[KP_TOKEN_LEN];
		struct kp_pin pin = pin_of("1111");
		struct kp_jpki j;
		int tries = 99, rc;

		assert_int_equal(kp_reader_wait_card(r, &poll, &info, 1000), KP_HAL_OK);
		assert_int_equal(kp_tap_identify_mynumber(f->e, r, kp_reader_now_ms(r), lk, &cert,
		                                          &reason), KP_OK);
		kp_jpki_init(&j, r, 100);
		rc = kp_jpki_prove(&j, cert, &pin, &tries, err, sizeof(err));
		if (rc != odd[i].rc)
			fail_msg("counter answer %s: %s", odd[i].reply, kp_strerror(rc));
		assert_int_equal(pin.have, 0);
		assert_null(strstr(err, "5 tries"));
		kp_cert_free(cert);
		kp_reader_release(r, 0, 0);
	}
	assert_int_equal(kp_spy_stats(r, &ss), KP_HAL_OK);
	assert_int_equal(ss.sessions, k);
	assert_int_equal(ss.overridden, k);
	assert_int_equal(ss.verify_with_pin, 0);
	assert_int_equal(kp_mock_jpki_stats(r, "fresh", &st), KP_HAL_OK);
	assert_int_equal(st.verify_ok + st.verify_wrong, 0);
	assert_int_equal(st.tries_left, 3);
	kp_reader_close(r);
}

/* What the rider reads at the counter: a card claiming 5 tries, a PIN blocked by the VERIFY
 * itself (63 C0), a copied certificate. */
static void test_link_texts(void **state)
{
	struct run r;

	(void)state;
	r = run_link("five", "card taro mynumber dir=taro pin=4321\ntap +0 taro\n",
	             "reply 00200080 63C5\n", "4321\n");
	assert_non_null(strstr(r.hmi, " info pin-unreadable - -1 PIN counter could not be read: "
	                              "please see staff"));
	assert_null(strstr(r.hmi, "5 tries"));
	assert_int_equal(spy_count(r.apdus, 0, SPY_VERIFY), 0);
	assert_int_equal(spy_count(r.apdus, 0, "< 63C5 [spy]"), 1);
	assert_non_null(strstr(r.err, "SW 63C5"));
	run_free(&r);
	r = run_link("zero", "card taro mynumber dir=taro pin=4321\ntap +0 taro\n",
	             "reply 0020008004* 63C0\n", "9999\n");
	assert_non_null(strstr(r.hmi, " info pin-blocked - -1 PIN blocked: please go to the city "
	                              "office"));
	assert_null(strstr(r.hmi, "0 tries"));
	assert_int_equal(spy_count(r.apdus, 0, SPY_VERIFY), 1);
	run_free(&r);
	r = run_link("clone", "card clone mynumber dir=clone pin=2580\ntap +0 clone\n", NULL, "2580\n");
	assert_non_null(strstr(r.hmi, " info card-not-genuine - -1 Card failed its check: please "
	                              "see staff"));
	assert_null(strstr(r.hmi, "could not be read"));
	assert_non_null(strstr(r.err, "does not verify"));
	run_free(&r);
}

/* A second CA with the test CA's very name issues a card with hanako's serial: another
 * token (the old derivation, issuer name || serial, gave hanako's). */
static void test_token_bound_to_ca(void **state)
{
	struct fx *f = *state;
	struct kp_terminal_cfg cfg = f->cfg;
	struct kp_tap_outcome o;
	struct kp_reader *r;
	kp_cert *twin = NULL, *han = NULL, *ca = NULL, *twin_ca = NULL;
	const uint8_t *a, *b;
	size_t na, nb;
	uint8_t lk_twin[KP_TOKEN_LEN];
	char cn1[80], cn2[80];

	assert_int_equal(kp_cert_load(&twin, p("twin/auth.der")), 0);
	assert_int_equal(kp_cert_load(&han, p("hanako/auth.der")), 0);
	assert_int_equal(kp_cert_load(&ca, p("CA.crt")), 0);
	assert_int_equal(kp_cert_load(&twin_ca, p("TWIN.crt")), 0);
	/* the same issuer name and serial, byte for byte */
	assert_int_equal(kp_cert_issuer_raw(twin, &a, &na), 0);
	assert_int_equal(kp_cert_issuer_raw(han, &b, &nb), 0);
	assert_int_equal(na, nb);
	assert_memory_equal(a, b, na);
	assert_int_equal(kp_cert_serial_raw(twin, &a, &na), 0);
	assert_int_equal(kp_cert_serial_raw(han, &b, &nb), 0);
	assert_int_equal(na, nb);
	assert_memory_equal(a, b, na);
	assert_int_equal(kp_cert_subject_cn(ca, cn1, sizeof(cn1)), 0);
	assert_int_equal(kp_cert_subject_cn(twin_ca, cn2, sizeof(cn2)), 0);
	assert_string_equal(cn1, cn2);
	load_linkage_ca("twin", "TWIN.crt", lk_twin);
	assert_memory_not_equal(lk_twin, lk_hanako, KP_TOKEN_LEN);
	/* and a key it was not issued by gives no token */
	{
		const kp_cert *cas[1] = { ca };
		char err[200];

		assert_int_equal(kp_jpki_check_card(twin, cas, 1, INT64_MIN, NULL, err, sizeof(err)),
		                 KP_E_CERT);
		assert_non_null(strstr(err, "not signed"));
	}
	kp_cert_free(twin);
	kp_cert_free(han);
	kp_cert_free(ca);
	kp_cert_free(twin_ca);
	/* both CAs configured (as when J-LIS renews its CA): the twin does not ride hanako's pass */
	put_hanako_pass(f->s, 7301, ms_at(0) + 365 * DAY_MS);
	snprintf(cfg.jpki_ca, sizeof(cfg.jpki_ca), "%s/CA.crt,%s/TWIN.crt", dir, dir);
	kp_tap_engine_close(f->e);
	assert_int_equal(kp_tap_engine_open(&f->e, f->s, &cfg, f->key, token_key), KP_OK);
	kp_tap_engine_log(f->e, log_stderr, NULL);
	r = open_scn("card twin mynumber dir=twin\ncard hanako mynumber dir=hanako\n"
	             "tap +0 twin\ntap +70 hanako\n");
	assert_int_equal(tap_next(f, r, &o, NULL), KP_OK);
	assert_int_equal(o.kind, KP_TAP_REFUSED);
	assert_string_equal(o.reason, "card-not-linked");
	assert_memory_equal(record(f->s, o.seq).token, lk_twin, KP_TOKEN_LEN);
	assert_int_equal(tap_next(f, r, &o, NULL), KP_OK);
	assert_int_equal(o.kind, KP_TAP_ACCEPTED);
	assert_int_equal(o.rides_left, 9);
	close_scn(r);
}

/* hanako's certificate with its serial padded (00 00 ..) and the issuer's name re-encoded
 * (PrintableString for UTF8String), re-signed by the CA: the same card, the same token. */
static void test_token_canonical_serial(void **state)
{
	struct fx *f = *state;
	kp_cert *pad = NULL, *han = NULL, *ca = NULL;
	const uint8_t *a, *b;
	size_t na, nb;
	uint8_t lk[KP_TOKEN_LEN];
	const char *reason = NULL;
	struct kp_reader *r;
	char hex[2 * KP_TOKEN_LEN + 1], *out;

	assert_int_equal(kp_cert_load(&pad, p("padded/auth.der")), 0);
	assert_int_equal(kp_cert_load(&han, p("hanako/auth.der")), 0);
	assert_int_equal(kp_cert_load(&ca, p("CA.crt")), 0);
	assert_int_equal(kp_cert_serial_raw(pad, &a, &na), 0);
	assert_int_equal(kp_cert_serial_raw(han, &b, &nb), 0);
	assert_int_equal(na, nb + 2);                   /* 00 00 before hanako's serial */
	assert_int_equal(a[0] | a[1], 0);
	assert_memory_equal(a + 2, b, nb);
	assert_int_equal(kp_cert_issuer_raw(pad, &a, &na), 0);
	assert_int_equal(kp_cert_issuer_raw(han, &b, &nb), 0);
	assert_true(na == nb && memcmp(a, b, na) != 0);  /* the name's bytes differ */
	assert_int_equal(kp_linkage_token(token_key, ca, pad, lk), 0);
	assert_memory_equal(lk, lk_hanako, KP_TOKEN_LEN);
	kp_cert_free(pad);
	kp_cert_free(han);
	kp_cert_free(ca);
	/* read from a card and checked by the terminal: the same token */
	r = open_scn("card padded mynumber dir=padded\ntap +0 padded\n");
	wait_typeb(r);
	assert_int_equal(kp_tap_identify_mynumber(f->e, r, kp_reader_now_ms(r), lk, NULL, &reason),
	                 KP_OK);
	assert_memory_equal(lk, lk_hanako, KP_TOKEN_LEN);
	kp_reader_release(r, 0, 0);
	close_scn(r);
	/* kippuctl and the independent Python agree */
	assert_int_equal(tu_sh("cd %s && %s/kippuctl linkage token --token-key token.key "
	                       "--cert padded/auth.der --jpki-ca CA.crt >lt-pad.txt && "
	                       "openssl x509 -in CA.crt -outform DER -out CA.der && "
	                       "python3 - padded/auth.der CA.der > py-pad.txt <<'EOF'\n" PY_TOKEN
	                       "print(token)\nEOF", dir, bin), 0);
	out = tu_read(p("lt-pad.txt"));
	assert_non_null(out);
	kp_hex(lk_hanako, KP_TOKEN_LEN, hex);
	assert_memory_equal(out, hex, 32);
	free(out);
	assert_int_equal(tu_sh("cd %s && cmp -s lt-pad.txt py-pad.txt", dir), 0);
}

/* The chain check: an end-entity certificate (no CA:TRUE), keyUsage present with
 * digitalSignature, never a configured CA's own certificate; through the spy reader. */
static void test_chain_end_entity(void **state)
{
	static const struct {
		const char *card, *log;
	} want[] = {
		{ "catrue", "CA:TRUE" },
		{ "noku", "no keyUsage" },
		{ "kuenc", "without digitalSignature" },
		{ "cacard", "configured JPKI CA's certificate" },
	};
	struct fx *f = *state;
	struct kp_spy_stats ss;
	struct kp_reader *r = NULL;
	char conn[700], *log;
	const size_t k = sizeof(want) / sizeof(want[0]);
	int saved;

	tu_write(p("ee.txt"), "start 0\n");      /* replaced below: the clock of the cards */
	{
		char scn[1024];
		size_t n = (size_t)snprintf(scn, sizeof(scn), "start %lld\npace virtual\n",
		                            (long long)T_START);

		for (size_t i = 0; i < k; i++)
			n += (size_t)snprintf(scn + n, sizeof(scn) - n, "card %s mynumber dir=%s\n",
			                      want[i].card, want[i].card);
		for (size_t i = 0; i < k; i++)
			n += (size_t)snprintf(scn + n, sizeof(scn) - n, "tap +%zu %s\n", i * 70,
			                      want[i].card);
		tu_write(p("ee.txt"), scn);
	}
	tu_write(p("ee.spy"), "inner mock:ee.txt\nlog ee.apdus\n");
	snprintf(conn, sizeof(conn), "spy:%s", p("ee.spy"));
	assert_int_equal(kp_reader_open(&r, conn), KP_HAL_OK);
	saved = log_to(p("ee.log"));
	for (size_t i = 0; i < k; i++) {
		struct kp_poll poll = { KP_TECH_FELICA | KP_TECH_ISO14443B, 0x0003, 1 };
		struct kp_card_info info;
		struct kp_tap_outcome o;

		assert_int_equal(kp_reader_wait_card(r, &poll, &info, 1000), KP_HAL_OK);
		assert_int_equal(kp_tap_card(f->e, r, &info, kp_reader_now_ms(r), &o), KP_OK);
		kp_reader_release(r, 0, 0);
		if (strcmp(o.reason, "card-invalid") != 0)
			fail_msg("%s: %s", want[i].card, o.reason);
		assert_int_equal(record(f->s, o.seq).has_token, 0);
	}
	end_log_to(saved);
	assert_int_equal(kp_spy_stats(r, &ss), KP_HAL_OK);
	assert_int_equal(ss.sessions, k);
	assert_int_equal(ss.verify_with_pin, 0);
	assert_true(ss.frames > 4 * k);          /* each certificate was read whole */
	kp_reader_close(r);
	log = tu_read(p("ee.log"));
	assert_non_null(log);
	for (size_t i = 0; i < k; i++)
		if (strstr(log, want[i].log) == NULL)
			fail_msg("no \"%s\" in the log:\n%s", want[i].log, log);
	free(log);
}

/* Texts of a direct tap: a card expired after its CA was renewed, the log's reason with two
 * CAs, a category that ends today. */
static void test_mynumber_texts(void **state)
{
	struct fx *f = *state;
	struct kp_terminal_cfg cfg = f->cfg;
	struct kp_tap_outcome o;
	struct kp_reader *r;
	kp_rsa *key = NULL;
	kp_store *s = NULL;
	char text[1200], *log, *hmi;
	int saved;

	/* J-LIS renews its CA: the same key, a certificate valid only after the card expired;
	 * the old CA certificate is no longer configured */
	assert_int_equal(kp_rsa_load(&key, p("CA.key")), 0);
	assert_int_equal(kp_cert_create_ca_rsa(key, "JPKI test authentication CA", t_now - 1800,
	                                       t_now + 3650 * 86400LL, p("RENEWED.der")), 0);
	kp_rsa_free(key);
	snprintf(cfg.jpki_ca, sizeof(cfg.jpki_ca), "%s/RENEWED.der", dir);
	kp_tap_engine_close(f->e);
	assert_int_equal(kp_tap_engine_open(&f->e, f->s, &cfg, f->key, token_key), KP_OK);
	kp_tap_engine_log(f->e, log_stderr, NULL);
	r = open_scn("card expired mynumber dir=expired\ncard foreignexp mynumber dir=foreign_expired\n"
	             "tap +0 expired\ntap +70 foreignexp\n");
	assert_int_equal(tap_next(f, r, &o, NULL), KP_OK);
	assert_string_equal(o.reason, "card-expired");
	assert_int_equal(tap_next(f, r, &o, NULL), KP_OK);
	assert_string_equal(o.reason, "card-invalid");
	close_scn(r);
	/* two CAs, the card's issuer second: the log says why the issuer's check failed */
	snprintf(cfg.jpki_ca, sizeof(cfg.jpki_ca), "%s/OTHER.crt,%s/CA.crt", dir, dir);
	kp_tap_engine_close(f->e);
	assert_int_equal(kp_tap_engine_open(&f->e, f->s, &cfg, f->key, token_key), KP_OK);
	kp_tap_engine_log(f->e, log_stderr, NULL);
	r = open_scn("card expired mynumber dir=expired\ncard future mynumber dir=future\n"
	             "card foreign2 mynumber dir=foreign_expired\n"
	             "tap +0 expired\ntap +70 future\ntap +140 foreign2\n");
	saved = log_to(p("twoca.log"));
	assert_int_equal(tap_next(f, r, &o, NULL), KP_OK);
	assert_string_equal(o.reason, "card-expired");
	assert_int_equal(tap_next(f, r, &o, NULL), KP_OK);
	assert_string_equal(o.reason, "card-not-yet-valid");
	assert_null(strstr(kp_tap_reason_text(o.reason), "xpired"));
	assert_int_equal(tap_next(f, r, &o, NULL), KP_OK);
	assert_string_equal(o.reason, "card-expired");  /* OTHER did issue it: expired, not invalid */
	end_log_to(saved);
	close_scn(r);
	log = tu_read(p("twoca.log"));
	assert_non_null(log);
	assert_int_equal(tu_count(log, "My Number card refused: certificate expired"), 2);
	assert_int_equal(tu_count(log, "My Number card refused: certificate not yet valid"), 1);
	assert_null(strstr(log, "signature"));
	assert_null(strstr(log, "not correctly signed"));
	free(log);

	/* a category that ends within the day: "ends today", not "ends in 0 days" (the real
	 * terminal over a store made here) */
	assert_int_equal(kp_store_open(&s, p("today.db")), KP_OK);
	{
		const char *ops[] = { "OP-A" };

		assert_int_equal(kp_store_begin(s), KP_OK);
		assert_int_equal(kp_store_put_operator(s, "OP-A", "A"), KP_OK);
		assert_int_equal(kp_store_put_product_cat(s, "RES", "resident 10 rides", 10, "resident",
		                                          ops, 1), KP_OK);
		assert_int_equal(kp_store_commit(s), KP_OK);
	}
	put_hanako_pass(s, 7401, ms_at(0) + DAY_MS / 2);
	kp_store_close(s);
	snprintf(text, sizeof(text), "start %lld\npace virtual\ncard hanako mynumber dir=hanako\n"
	         "tap +0 hanako\n", (long long)T_START);
	tu_write(p("today.txt"), text);
	snprintf(text, sizeof(text), "terminal_id = LINK-01\noperator = OP-A\nreader = mock:today.txt\n"
	         "hmi = mock:today.hmi\ndatabase = today.db\nkey = terminal.key\n"
	         "cert = terminal.crt\ntoken_key = token.key\njpki_ca = %s/CA.crt\n", dir);
	tu_write(p("today.conf"), text);
	assert_int_equal(tu_sh("cd %s && %s/kippu-terminal --config today.conf --offline "
	                       ">today.out 2>today.err", dir, bin), 0);
	hmi = tu_read(p("today.hmi"));
	assert_non_null(hmi);
	assert_non_null(strstr(hmi, " accepted ok RES 9 OK: 9 rides left (resident); resident "
	                            "status ends today: renew"));
	assert_null(strstr(hmi, "0 days"));
	free(hmi);
}

/* ---- over every flow above: the forbidden APs were never asked for ---- */

static void test_forbidden_aps_never_selected(void **state)
{
	struct kp_reader *r;
	uint8_t tx[15], rx[64];
	size_t n = 0;

	(void)state;
	print_message("%lu readers, %lu mynumber cards, %lu APDUs (%lu READ BINARY, largest Le %lu), "
	              "%lu SELECT JPKI\n", tally.readers, tally.cards, tally.apdus, tally.reads,
	              tally.read_le_max, tally.select_jpki);
	assert_true(tally.readers >= 7);
	assert_true(tally.apdus > 200);
	assert_true(tally.select_jpki > 20);
	assert_true(tally.reads > 30);
	assert_true(tally.read_le_max <= 255);
	tu_expect_row("read_le0 forbidden other_select select_input select_face forbidden_apdus",
	              TU_INTS(tally.read_le0, tally.forbidden, tally.other_select, tally.select_input,
	                      tally.select_face, tally.forbidden_apdus),
	              TU_INTS(0, 0, 0, 0, 0, 0));
	/* the positive control: both detectors see such a SELECT when one is sent */
	r = open_scn("card hanako mynumber dir=hanako\ntap +0 hanako\n");
	spy_of(r)->control = 1;
	wait_typeb(r);
	memcpy(tx, "\x00\xA4\x04\x0C\x0A", 5);
	memcpy(tx + 5, AID_INPUT, 10);
	assert_int_equal(kp_reader_transceive(r, tx, sizeof(tx), rx, sizeof(rx), &n, 100), KP_HAL_OK);
	tx[14] = 0x02;                          /* the card-face AP */
	assert_int_equal(kp_reader_transceive(r, tx, sizeof(tx), rx, sizeof(rx), &n, 100), KP_HAL_OK);
	assert_int_equal(spy_of(r)->forbidden, 2);
	assert_int_equal(stats(r, "hanako").select_input_support, 1);
	assert_int_equal(stats(r, "hanako").select_card_face, 1);
	close_scn(r);
}

/* The tests below run between fx_setup and fx_teardown unless their row names others. */
#define FX_TEST(test) cmocka_unit_test_setup_teardown(test, fx_setup, fx_teardown)

int main(void)
{
	const struct CMUnitTest tests[] = {
		FX_TEST(test_identify_linkage_token),
		FX_TEST(test_direct_tap_policy),
		FX_TEST(test_direct_tap_value_limit),
		FX_TEST(test_eligibility_stale),
		FX_TEST(test_direct_tap_accepted_nothing_stored),
		FX_TEST(test_refusals),
		FX_TEST(test_no_jpki_ca_configured),
		FX_TEST(test_revoked_linkage),
		cmocka_unit_test(test_sw_select),
		cmocka_unit_test(test_sw_read_certificate),
		cmocka_unit_test(test_sw_pin),
		cmocka_unit_test(test_sw_prove),
		FX_TEST(test_strong_mode),
		cmocka_unit_test(test_link_mode),
		cmocka_unit_test(test_pin_input),
		cmocka_unit_test(test_link_stale_pin),
		cmocka_unit_test(test_link_pin_refused_before_apdu),
		FX_TEST(test_pin_counter_fails_closed),
		cmocka_unit_test(test_link_texts),
		FX_TEST(test_token_bound_to_ca),
		FX_TEST(test_token_canonical_serial),
		FX_TEST(test_chain_end_entity),
		FX_TEST(test_mynumber_texts),
		cmocka_unit_test(test_forbidden_aps_never_selected),
	};

	return cmocka_run_group_tests_name("jpki", tests, group_setup, group_teardown);
}
