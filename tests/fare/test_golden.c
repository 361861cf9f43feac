/* SPDX-License-Identifier: Apache-2.0 */
/* The fare engine's golden table (terminal/fare/FARES.md, issue 6): tests/data/fares/golden.csv
 * holds priced journeys with the expected result worked out by hand in its `why` column.
 * The real kippuctl builds a database from the feeds in tests/data/fares and two real
 * GTFS-JP feeds read in place from ../shared/data/gtfs (KP_GTFS_DIR overrides), loads
 * tests/data/fares/load.txt, and `kippuctl fares quote` prices the table's taps; every
 * output line is compared with the table and each mismatch is printed with its `why`.
 * Also: quote never changes the database, malformed journey files are refused naming line
 * and field, and a journey file with only its header gives only the output header. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>
#include <sys/stat.h>

#include <cmocka.h>

#include "testutil.h"

#define REAL_FEED     "jp-minakami-community-od"
#define REAL_FEED2    "jp-donanbus-muroran-zone"
#define DATA_DIR      "tests/data/fares"
#define MIN_PRICED    60
#define OUT_HEADER    "time,card,operator,route,stop,event,result,reason,amount,product,left,rules"

static const char *const input_cols[] = {
	"time", "card", "operator", "route", "stop", "event", "rider_category", "entitlements",
};
#define N_INPUT (sizeof(input_cols) / sizeof(input_cols[0]))

struct fx {
	char dir[256];
	const char *bin;                 /* absolute: the programs run inside dir */
	char data[1024];                 /* absolute tests/data/fares */
	const char *gtfs;                /* tu_gtfs_dir() */
};

/* ---- RFC 4180 CSV, enough for golden.csv and quote's output ---- */

struct row {
	char **f;
	size_t n;
	int line;                        /* the file's line where the record starts */
};

struct csv {
	struct row *rows;                /* rows[0] is the header */
	size_t n;
};

static void csv_free(struct csv *c)
{
	for (size_t i = 0; i < c->n; i++) {
		for (size_t k = 0; k < c->rows[i].n; k++)
			free(c->rows[i].f[k]);
		free(c->rows[i].f);
	}
	free(c->rows);
	memset(c, 0, sizeof(*c));
}

static void push_field(struct row *r, const char *s, size_t len)
{
	r->f = realloc(r->f, (r->n + 1) * sizeof(*r->f));
	assert_non_null(r->f);
	r->f[r->n] = strndup(s, len);
	assert_non_null(r->f[r->n]);
	r->n++;
}

/* Parses text; returns 0, or -1 with a message in err (unclosed quote, text after one). */
static int csv_parse(const char *text, struct csv *c, char *err, size_t err_cap)
{
	const char *p = text;
	int line = 1;
	size_t cap = 4096, len;
	char *buf = malloc(cap);

	memset(c, 0, sizeof(*c));
	assert_non_null(buf);
	while (*p != '\0') {
		struct row r = { NULL, 0, line };

		for (;;) {
			len = 0;
			if (*p == '"') {
				p++;
				for (;;) {
					if (*p == '\0') {
						snprintf(err, err_cap, "line %d: quote not closed", r.line);
						free(buf);
						csv_free(c);
						return -1;
					}
					if (*p == '"' && p[1] == '"') {
						p++;
					} else if (*p == '"') {
						p++;
						break;
					}
					if (*p == '\n')
						line++;
					if (len + 1 >= cap) {
						cap *= 2;
						buf = realloc(buf, cap);
						assert_non_null(buf);
					}
					buf[len++] = *p++;
				}
				if (*p != ',' && *p != '\n' && *p != '\r' && *p != '\0') {
					snprintf(err, err_cap, "line %d: text after a closing quote", line);
					free(buf);
					csv_free(c);
					return -1;
				}
				push_field(&r, buf, len);
			} else {
				const char *s = p;

				while (*p != ',' && *p != '\n' && *p != '\r' && *p != '\0')
					p++;
				push_field(&r, s, (size_t)(p - s));
			}
			if (*p == ',') {
				p++;
				continue;
			}
			if (*p == '\r')
				p++;
			if (*p == '\n') {
				p++;
				line++;
			}
			break;
		}
		c->rows = realloc(c->rows, (c->n + 1) * sizeof(*c->rows));
		assert_non_null(c->rows);
		c->rows[c->n++] = r;
	}
	free(buf);
	return 0;
}

static int csv_col(const struct csv *c, const char *name)
{
	if (c->n == 0)
		return -1;
	for (size_t i = 0; i < c->rows[0].n; i++) {
		if (strcmp(c->rows[0].f[i], name) == 0)
			return (int)i;
	}
	return -1;
}

static int must_col(const struct csv *c, const char *file, const char *name)
{
	int i = csv_col(c, name);

	if (i < 0)
		fail_msg("%s: no column \"%s\"", file, name);
	return i;
}

static const char *cell(const struct row *r, int col)
{
	return col >= 0 && (size_t)col < r->n ? r->f[col] : "";
}

static void put_field(FILE *fp, const char *s)
{
	if (strpbrk(s, ",\"\r\n") == NULL) {
		fputs(s, fp);
		return;
	}
	fputc('"', fp);
	for (; *s != '\0'; s++) {
		if (*s == '"')
			fputc('"', fp);
		fputc(*s, fp);
	}
	fputc('"', fp);
}

/* ---- time: ISO 8601 with an offset, to Unix seconds (compared as instants) ---- */

static long long days_from_civil(int y, int m, int d)
{
	y -= m <= 2;
	long long era = (y >= 0 ? y : y - 399) / 400;
	long long yoe = y - era * 400;
	long long doy = (153 * (m + (m > 2 ? -3 : 9)) + 2) / 5 + d - 1;

	return era * 146097 + yoe * 365 + yoe / 4 - yoe / 100 + doy - 719468;
}

static int iso_seconds(const char *s, long long *out)
{
	int y, mo, d, h, mi, sec, n = 0, oh = 0, om = 0, k = 0;
	const char *tz;

	if (sscanf(s, "%4d-%2d-%2dT%2d:%2d:%2d%n", &y, &mo, &d, &h, &mi, &sec, &n) != 6 || n != 19)
		return -1;
	tz = s + n;
	*out = days_from_civil(y, mo, d) * 86400 + h * 3600 + mi * 60 + sec;
	if (strcmp(tz, "Z") == 0)
		return 0;
	if ((tz[0] != '+' && tz[0] != '-') || sscanf(tz + 1, "%2d:%2d%n", &oh, &om, &k) != 2 ||
	    k != 5 || tz[6] != '\0')
		return -1;
	*out -= (tz[0] == '-' ? -1 : 1) * (oh * 3600 + om * 60);
	return 0;
}

static int same_time(const char *a, const char *b)
{
	long long x, y;

	if (iso_seconds(a, &x) == 0 && iso_seconds(b, &y) == 0)
		return x == y;
	return strcmp(a, b) == 0;
}

/* ---- fixture: the database built with the real kippuctl ---- */

static int group_setup(void **state)
{
	struct fx *f = calloc(1, sizeof(*f));
	char cwd[768];

	if (f == NULL || getcwd(cwd, sizeof(cwd)) == NULL)
		return -1;
	tu_tmpdir(f->dir, sizeof(f->dir));
	f->bin = tu_bin_abs();
	snprintf(f->data, sizeof(f->data), "%s/" DATA_DIR, cwd);
	f->gtfs = tu_gtfs_dir();
	if (tu_sh("cd %s && %s/kippuctl token-key create token.key >setup.log 2>&1 && "
	          "%s/kippuctl fares import %s/golden-flat t.db --feed-id golden-flat >>setup.log 2>&1 && "
	          "%s/kippuctl fares import %s/golden-zone t.db --feed-id golden-zone >>setup.log 2>&1 && "
	          "%s/kippuctl fares import %s/golden-v2 t.db --feed-id golden-v2 >>setup.log 2>&1 && "
	          "%s/kippuctl fares import %s/golden-chain t.db --feed-id golden-chain >>setup.log 2>&1 && "
	          "%s/kippuctl fares import %s/" REAL_FEED " t.db >>setup.log 2>&1 && "
	          "%s/kippuctl fares import %s/" REAL_FEED2 " t.db >>setup.log 2>&1 && "
	          "%s/kippuctl load t.db %s/load.txt --token-key token.key >>setup.log 2>&1",
	          f->dir, f->bin, f->bin, f->data, f->bin, f->data, f->bin, f->data, f->bin, f->data,
	          f->bin, f->gtfs, f->bin, f->gtfs, f->bin, f->data) != 0) {
		fprintf(stderr, "building the golden database failed; see %s/setup.log\n", f->dir);
		tu_sh("cat %s/setup.log >&2", f->dir);
		return -1;
	}
	*state = f;
	return 0;
}

/* SHA-256 of the database and of any journal content beside it (a WAL holding frames
 * would be a change even while t.db itself is untouched; an empty one is not). */
static char *db_sum(struct fx *f)
{
	char path[512];

	snprintf(path, sizeof(path), "%s/sum.txt", f->dir);
	assert_int_equal(tu_sh("cd %s && cat t.db $(ls t.db-wal t.db-journal 2>/dev/null) | "
	                       "sha256sum > sum.txt", f->dir), 0);
	return tu_read(path);
}

static char *read_in(struct fx *f, const char *name)
{
	char path[512];
	char *t;

	snprintf(path, sizeof(path), "%s/%s", f->dir, name);
	t = tu_read(path);
	if (t == NULL)
		fail_msg("%s: missing", path);
	return t;
}

static int quote(struct fx *f, const char *journeys)
{
	return tu_sh("cd %s && %s/kippuctl fares quote t.db %s >out.csv 2>quote.err", f->dir, f->bin,
	             journeys);
}

/* golden.csv minus its no_tap_off rows, with the input columns only. */
static void write_journeys(struct fx *f, const struct csv *g, const char *name)
{
	char path[512];
	int col[N_INPUT], ev = csv_col(g, "event");
	FILE *fp;

	snprintf(path, sizeof(path), "%s/%s", f->dir, name);
	fp = fopen(path, "w");
	assert_non_null(fp);
	for (size_t k = 0; k < N_INPUT; k++) {
		col[k] = must_col(g, "golden.csv", input_cols[k]);
		fprintf(fp, "%s%s", k ? "," : "", input_cols[k]);
	}
	fputc('\n', fp);
	for (size_t i = 1; i < g->n; i++) {
		if (strcmp(cell(&g->rows[i], ev), "no_tap_off") == 0)
			continue;
		for (size_t k = 0; k < N_INPUT; k++) {
			if (k)
				fputc(',', fp);
			put_field(fp, cell(&g->rows[i], col[k]));
		}
		fputc('\n', fp);
	}
	assert_int_equal(fclose(fp), 0);
}

static void load_golden(struct fx *f, struct csv *g)
{
	char path[1200], err[128];
	char *text;

	snprintf(path, sizeof(path), "%s/golden.csv", f->data);
	text = tu_read(path);
	if (text == NULL)
		fail_msg("%s: missing", path);
	if (csv_parse(text, g, err, sizeof(err)) != 0)
		fail_msg("golden.csv: %s", err);
	free(text);
}

/* ---- the golden table ---- */

struct cmp { const char *name, *want_col; int out_col; };

static void test_golden_table(void **state)
{
	struct fx *f = *state;
	struct csv g, o;
	char err[128], *text, *before, *after;
	int mismatches = 0, priced = 0;
	size_t i, j;
	int g_time, g_card, g_event, g_xevent, g_result, g_why, o_time, o_card, o_event;
	struct cmp cmp[] = {
		{ "result", "expect_result", 0 }, { "reason", "expect_reason", 0 },
		{ "amount", "expect_amount", 0 }, { "product", "expect_product", 0 },
		{ "left", "expect_left", 0 },
	};
	int g_cmp[5];

	load_golden(f, &g);
	g_time = must_col(&g, "golden.csv", "time");
	g_card = must_col(&g, "golden.csv", "card");
	g_event = must_col(&g, "golden.csv", "event");
	g_xevent = must_col(&g, "golden.csv", "expect_event");
	g_result = must_col(&g, "golden.csv", "expect_result");
	g_why = must_col(&g, "golden.csv", "why");
	for (size_t k = 0; k < 5; k++)
		g_cmp[k] = must_col(&g, "golden.csv", cmp[k].want_col);
	for (i = 1; i < g.n; i++)
		priced += strcmp(cell(&g.rows[i], g_result), "accepted") == 0;
	if (priced < MIN_PRICED)
		fail_msg("golden.csv has %d priced (accepted) rows, the issue asks for %d", priced,
		         MIN_PRICED);

	write_journeys(f, &g, "journeys.csv");
	before = db_sum(f);
	if (quote(f, "journeys.csv") != 0) {
		tu_sh("cat %s/quote.err >&2", f->dir);
		fail_msg("kippuctl fares quote failed");
	}
	after = db_sum(f);
	assert_string_equal(before, after);
	free(before);
	free(after);

	text = read_in(f, "out.csv");
	if (csv_parse(text, &o, err, sizeof(err)) != 0)
		fail_msg("quote output: %s", err);
	free(text);
	assert_true(o.n >= 1);
	o_time = must_col(&o, "output", "time");
	o_card = must_col(&o, "output", "card");
	o_event = must_col(&o, "output", "event");
	for (size_t k = 0; k < 5; k++)
		cmp[k].out_col = must_col(&o, "output", cmp[k].name);

	/* Row by row; a missing or extra no_tap_off line is reported once, not as a shift of
	 * every later row. */
	for (i = 1, j = 1; i < g.n || j < o.n;) {
		const struct row *w = i < g.n ? &g.rows[i] : NULL, *got = j < o.n ? &o.rows[j] : NULL;
		const char *want_ev;

		if (w == NULL) {
			print_message("output line %d (%s %s %s): not in golden.csv\n", got->line,
			              cell(got, o_time), cell(got, o_card), cell(got, o_event));
			mismatches++;
			j++;
			continue;
		}
		want_ev = cell(w, g_xevent)[0] != '\0' ? cell(w, g_xevent) : cell(w, g_event);
		if (got == NULL) {
			print_message("golden.csv:%d (%s %s %s): no output line -- %s\n", w->line,
			              cell(w, g_time), cell(w, g_card), want_ev, cell(w, g_why));
			mismatches++;
			i++;
			continue;
		}
		if (strcmp(want_ev, "no_tap_off") == 0 && strcmp(cell(got, o_event), "no_tap_off") != 0) {
			print_message("golden.csv:%d (%s %s): expected a no_tap_off line here, got %s %s "
			              "-- %s\n", w->line, cell(w, g_time), cell(w, g_card),
			              cell(got, o_card), cell(got, o_event), cell(w, g_why));
			mismatches++;
			i++;
			continue;
		}
		if (strcmp(want_ev, "no_tap_off") != 0 && strcmp(cell(got, o_event), "no_tap_off") == 0) {
			print_message("output line %d: unexpected no_tap_off (%s %s amount %s) before "
			              "golden.csv:%d\n", got->line, cell(got, o_time), cell(got, o_card),
			              cell(got, cmp[2].out_col), w->line);
			mismatches++;
			j++;
			continue;
		}
		if (!same_time(cell(w, g_time), cell(got, o_time))) {
			print_message("golden.csv:%d %s: time: expected %s, got %s\n", w->line,
			              cell(w, g_card), cell(w, g_time), cell(got, o_time));
			mismatches++;
		}
		if (strcmp(cell(w, g_card), cell(got, o_card)) != 0) {
			print_message("golden.csv:%d %s: card: expected %s, got %s\n", w->line,
			              cell(w, g_time), cell(w, g_card), cell(got, o_card));
			mismatches++;
		}
		if (strcmp(want_ev, cell(got, o_event)) != 0) {
			print_message("golden.csv:%d %s %s: event: expected %s, got %s -- %s\n", w->line,
			              cell(w, g_time), cell(w, g_card), want_ev, cell(got, o_event),
			              cell(w, g_why));
			mismatches++;
		}
		for (size_t k = 0; k < 5; k++) {
			if (strcmp(cell(w, g_cmp[k]), cell(got, cmp[k].out_col)) == 0)
				continue;
			print_message("golden.csv:%d %s %s %s: %s: expected \"%s\", got \"%s\" -- %s\n",
			              w->line, cell(w, g_time), cell(w, g_card), want_ev, cmp[k].name,
			              cell(w, g_cmp[k]), cell(got, cmp[k].out_col), cell(w, g_why));
			mismatches++;
		}
		i++;
		j++;
	}
	print_message("golden table: %zu rows (%d priced), %d mismatches\n", g.n - 1, priced,
	              mismatches);
	csv_free(&g);
	csv_free(&o);
	if (mismatches > 0)
		fail_msg("%d mismatches between golden.csv and kippuctl fares quote", mismatches);
}

/* quote works on a copy: the database is byte for byte the same, twice over. */
static void test_quote_leaves_db(void **state)
{
	struct fx *f = *state;
	struct csv g;
	char *before, *mid, *after, *a, *b;

	load_golden(f, &g);
	write_journeys(f, &g, "journeys2.csv");
	csv_free(&g);
	before = db_sum(f);
	assert_int_equal(quote(f, "journeys2.csv"), 0);
	a = read_in(f, "out.csv");
	mid = db_sum(f);
	assert_int_equal(quote(f, "journeys2.csv"), 0);
	b = read_in(f, "out.csv");
	after = db_sum(f);
	assert_string_equal(before, mid);
	assert_string_equal(before, after);
	/* Same database, same input: the same answer (nothing carried over from the first run). */
	assert_string_equal(a, b);
	free(before);
	free(mid);
	free(after);
	free(a);
	free(b);
}

/* A malformed journeys file: exit status != 0, an error naming the line and the field,
 * and the database unchanged. */
static void expect_refused(struct fx *f, const char *text, int line, const char *field)
{
	char path[512], n1[16], n2[24], n3[16];
	char *before, *after, *err;
	int st;

	snprintf(path, sizeof(path), "%s/bad.csv", f->dir);
	tu_write(path, text);
	before = db_sum(f);
	st = quote(f, "bad.csv");
	after = db_sum(f);
	err = read_in(f, "quote.err");
	if (err == NULL)
		err = strdup("");
	print_message("malformed (line %d, %s): exit %d: %s", line, field, st,
	              err != NULL ? err : "");
	if (st <= 0)
		fail_msg("quote accepted a malformed file (exit %d) -- line %d, %s", st, line, field);
	snprintf(n1, sizeof(n1), ":%d:", line);
	snprintf(n2, sizeof(n2), "line %d", line);
	snprintf(n3, sizeof(n3), ":%d ", line);
	if (strstr(err, n1) == NULL && strstr(err, n2) == NULL && strstr(err, n3) == NULL)
		fail_msg("error does not name line %d: %s", line, err);
	if (strstr(err, field) == NULL)
		fail_msg("error does not name field %s: %s", field, err);
	assert_string_equal(before, after);
	free(before);
	free(after);
	free(err);
}

static void test_malformed(void **state)
{
	struct fx *f = *state;

	expect_refused(f, "time,card,operator,route,stop,event,rider_category,entitlements\n"
	               "2026-13-01T08:00:00+09:00,x,A,A1,A01,tap,,SV:1000\n", 2, "time");
	expect_refused(f, "time,card,operator,route,stop,event,rider_category,entitlements\n"
	               "2026-12-01T08:00:00+09:00,x,A,A1,A01,tap,,SV:1000\n"
	               "2026-12-01 08:10,x,A,A1,A01,tap,,\n", 3, "time");
	expect_refused(f, "time,card,operator,route,stop,event,rider_category,entitlements\n"
	               "2026-12-01T08:00:00+09:00,x,A,A1,A01,tap,,SV:1000\n"
	               "2026-12-01T09:00:00+09:00,x,A,A1,A01,tap_sideways,,\n", 3, "event");
	expect_refused(f, "time,card,operator,route,event,rider_category,entitlements\n"
	               "2026-12-01T08:00:00+09:00,x,A,A1,tap,,SV:1000\n", 1, "stop");
	/* the rows' other fields */
#define HDR "time,card,operator,route,stop,event,rider_category,entitlements\n"
	expect_refused(f, HDR "2026-12-01T09:00:00+09:00,x,A,A1,A01,tap,,SV:1000\n"
	               "2026-12-01T08:00:00+09:00,x,A,A1,A01,tap,,\n", 3, "time");  /* backwards */
	expect_refused(f, HDR "2026-12-01T08:00:00+09:00,x,A,A1,A01,tap,,NOPE:5\n", 2,
	               "entitlements");
	expect_refused(f, HDR "2026-12-01T08:00:00+09:00,x,A,A1,A01,tap,,R5:5x\n", 2,
	               "entitlements");
	expect_refused(f, HDR "2026-12-01T08:00:00+09:00,x,A,A1,A01,tap,,R5:20000\n", 2,
	               "entitlements");
	expect_refused(f, HDR "2026-12-01T08:00:00+09:00,x,A,A1,A01,tap,,SV\n", 2, "entitlements");
	expect_refused(f, HDR "2026-12-01T08:00:00+09:00,,A,A1,A01,tap,,SV:100\n", 2, "card");
	expect_refused(f, HDR "2026-12-01T08:00:00+09:00,felica:01,A,A1,A01,tap,,SV:100\n", 2,
	               "card");
	expect_refused(f, HDR "2026-12-01T08:00:00+09:00,x,,A1,A01,tap,,SV:100\n", 2, "operator");
	expect_refused(f, HDR "2026-12-01T08:00:00+09:00,x,A B,A1,A01,tap,,SV:100\n", 2,
	               "operator");
	expect_refused(f, HDR "2026-12-01T08:00:00+09:00,x,A,A1,A01,tap,a child,SV:100\n", 2,
	               "rider_category");
	expect_refused(f, HDR "2026-12-01T08:00:00+09:00,x,A,A1,A01,tap,,SV:100\n"
	               "\"2026-12-01T09:00:00+09:00,x\n", 3, "quote not closed");
#undef HDR
	/* no such database, and the wrong number of arguments */
	assert_int_equal(tu_sh("cd %s && %s/kippuctl fares quote nope.db bad.csv 2>err.txt; "
	                       "test $? -eq 1 && grep -q nope.db err.txt", f->dir, f->bin), 0);
	assert_int_equal(tu_sh("cd %s && %s/kippuctl fares quote t.db 2>/dev/null; test $? -eq 2",
	                       f->dir, f->bin), 0);
}

static void test_header_only(void **state)
{
	struct fx *f = *state;
	char path[512];
	char *out;

	snprintf(path, sizeof(path), "%s/empty.csv", f->dir);
	tu_write(path, "time,card,operator,route,stop,event,rider_category,entitlements\n");
	assert_int_equal(quote(f, "empty.csv"), 0);
	out = read_in(f, "out.csv");
	assert_string_equal(out, OUT_HEADER "\n");
	free(out);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_golden_table),
		cmocka_unit_test(test_quote_leaves_db),
		cmocka_unit_test(test_malformed),
		cmocka_unit_test(test_header_only),
	};

	return cmocka_run_group_tests(tests, group_setup, tu_dir_fx_teardown);
}
