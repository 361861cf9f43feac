/* SPDX-License-Identifier: Apache-2.0 */
/* kippuctl fares ...: import a GTFS feed's fares into a terminal's store, and price one leg
 * with the same lookup the terminal uses. */
#include <errno.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "kp_tools.h"

static const char usage_text[] =
	"  kippuctl fares import GTFS_DIR|GTFS.zip DB [--feed-id ID (default: the folder's or\n"
	"                 the zip's name)]\n"
	"      fares v1 (fare_attributes, fare_rules) and v2 (fare_products, fare_leg_rules...)\n"
	"  kippuctl fares lookup DB --feed-id ID [--route R] [--from STOP] [--to STOP]\n"
	"                 [--from-zone Z] [--to-zone Z] [--date YYYYMMDD] [--time HH:MM:SS]\n"
	"                 [--category C] [--media M] [--payment 0|1] [--model 1|2]\n"
	"                 [--json|--csv]\n"
	"  kippuctl fares quote DB JOURNEYS.csv [--token-key FILE] [--json|--csv]\n"
	"      prices taps (time,card,operator,route,stop,event,rider_category[,entitlements])\n"
	"      with the terminal's decision code on a copy of DB; CSV out (terminal/fare/FARES.md)\n";

void kp_ctl_fares_usage(FILE *fp)
{
	fputs(usage_text, fp);
}

struct fargs {
	struct kp_fare_query q;
	const char *time, *date, *payment, *model;
	const char *token_key;
	struct kp_ctl_fmt fmt;
	enum kp_ctl_format format;
	int npos;
	const char *pos[3];
};

#define OPT(name, field, help) { name, KP_CTL_STR, offsetof(struct fargs, field), 0, 0, 0, help }
static const struct kp_ctl_opt fares_opts[] = {
	OPT("feed-id", q.feed_id, "the feed's id"),
	OPT("route", q.route_id, "the leg's route"),
	OPT("from", q.from_stop, "the stop tapped on at"),
	OPT("to", q.to_stop, "the stop tapped off at"),
	OPT("from-zone", q.from_zone, "the zone tapped on in"),
	OPT("to-zone", q.to_zone, "the zone tapped off in"),
	OPT("date", date, "the service date, YYYYMMDD"),
	OPT("time", time, "the time of day, HH:MM:SS"),
	OPT("category", q.rider_category, "the rider category"),
	OPT("media", q.fare_media, "the fare media"),
	OPT("payment", payment, "the payment method, 0 or 1"),
	OPT("model", model, "the fares model, 1 or 2"),
	OPT("token-key", token_key, "the card token key (quote)"),
	KP_CTL_OUT_OPTS(struct fargs, fmt),
	{ NULL, 0, 0, 0, 0, 0, NULL },
};
#undef OPT

static int fares_parse(int argc, char **argv, struct fargs *a)
{
	struct kp_ctl_pos pos = { a->pos, 3, 0, NULL };
	int h, m, s, n = 0;

	memset(a, 0, sizeof(*a));
	if (kp_ctl_parse(argc, argv, fares_opts, a, &pos) != 0)
		return -1;
	a->npos = pos.n;
	a->q.payment_method = a->payment != NULL ? atoi(a->payment) : -1;
	if (a->date != NULL)
		a->q.date = (int32_t)strtol(a->date, NULL, 10);
	if (a->model != NULL)
		a->q.model = (enum kp_fare_model)atoi(a->model);
	if (a->time != NULL) {
		if (sscanf(a->time, "%d:%d:%d%n", &h, &m, &s, &n) != 3 || a->time[n] != '\0')
			return -1;
		a->q.time_s = h * 3600 + m * 60 + s;
	}
	return 0;
}

static void print_warning(void *arg, const char *msg)
{
	(void)arg;
	fprintf(stderr, "kippuctl: warning: %s\n", msg);
}

int kp_ctl_gtfs_source(const char *path, char *dir, size_t cap, int *tmp, char *feed,
                         size_t feed_cap)
{
	struct stat sb;
	char err[600];
	size_t n = strlen(path);

	*tmp = 0;
	if (stat(path, &sb) != 0) {
		if (errno == ENOENT)
			fprintf(stderr, "kippuctl: no such file or directory: %s\n", path);
		else
			fprintf(stderr, "kippuctl: %s: %s\n", path, strerror(errno));
		return 1;
	}
	if (S_ISDIR(sb.st_mode)) {
		snprintf(dir, cap, "%s", path);
		return 0;
	}
	if (kp_gtfs_zip_open(path, dir, cap, err, sizeof(err)) != 0) {
		fprintf(stderr, "kippuctl: fares import: %s\n", err);
		return 1;
	}
	*tmp = 1;
	{
		const char *base = strrchr(path, '/') != NULL ? strrchr(path, '/') + 1 : path;

		n = strlen(base);
		if (n > 4 && strcmp(base + n - 4, ".zip") == 0)
			n -= 4;
		snprintf(feed, feed_cap, "%.*s", (int)n, base);
	}
	return 0;
}

static int cmd_import(struct fargs *a)
{
	struct kp_fare_import_opts opts = { a->q.feed_id, print_warning, NULL };
	struct kp_fare_import_stats st;
	kp_store *s = NULL;
	char err[KP_FARE_MSG_MAX], dir[4200], feed[256] = "";
	int rc, tmp = 0;

	if (kp_ctl_gtfs_source(a->pos[0], dir, sizeof(dir), &tmp, feed, sizeof(feed)) != 0)
		return 1;
	if (opts.feed_id == NULL && tmp)
		opts.feed_id = feed;
	rc = kp_ctl_store_open(&s, a->pos[1]);
	if (rc == KP_OK) {
		rc = kp_fares_import(s, dir, &opts, &st, err, sizeof(err));
		if (rc != KP_OK)
			fprintf(stderr, "kippuctl: fares import: %s\n", err[0] ? err : kp_strerror(rc));
		else
			printf("imported %s: %lld fares, %lld fare rules, %lld rider prices (v1); "
			       "%lld products, %lld leg rules, %lld transfer rules (v2); %lld warnings\n",
			       a->pos[0], (long long)st.fares, (long long)st.fare_rules,
			       (long long)st.rider_prices, (long long)st.products,
			       (long long)st.leg_rules, (long long)st.transfer_rules,
			       (long long)st.warnings);
	}
	kp_store_close(s);
	if (tmp)
		kp_gtfs_zip_close(dir);
	return rc == KP_OK ? 0 : 1;
}

/* fares lookup's one row (README, "Listings as JSON and CSV"): amount in minor units, as
 * many minor digits as the currency has. */
enum { L_AMOUNT, L_CURRENCY, L_DIGITS, L_KIND, L_FARE, L_LEG_GROUP, L_RULE, L_CATEGORY, L_NCOL };
static const struct kp_ctl_col lookup_cols[L_NCOL] = {
	{ "amount", KP_COL_AMOUNT, NULL }, { "currency", KP_COL_TEXT, NULL },
	{ "minor_digits", KP_COL_INT, NULL }, { "kind", KP_COL_TEXT, NULL },
	{ "fare", KP_COL_TEXT, NULL }, { "leg_group", KP_COL_TEXT, "" },
	{ "rule", KP_COL_TEXT, NULL }, { "rider_category", KP_COL_TEXT, "" },
};

static void lookup_line(const struct kp_ctl_out *o, const char *const *v)
{
	long long amount = strtoll(v[L_AMOUNT], NULL, 10), unit = 1;
	int digits = atoi(v[L_DIGITS]);

	for (int i = 0; i < digits; i++)
		unit *= 10;
	if (digits > 0)
		fprintf(o->fp, "%lld.%0*lld %s", amount / unit, digits, llabs(amount % unit),
		        v[L_CURRENCY]);
	else
		fprintf(o->fp, "%lld %s", amount, v[L_CURRENCY]);
	fprintf(o->fp, "  %s %s%s%s  rule %s%s%s\n", v[L_KIND], v[L_FARE],
	        v[L_LEG_GROUP][0] ? "  leg group " : "", v[L_LEG_GROUP], v[L_RULE],
	        v[L_CATEGORY][0] ? "  category " : "", v[L_CATEGORY]);
}

static int print_lookup(const struct fargs *a, const struct kp_fare_result *r)
{
	char amount[24], digits[8];
	const char *v[L_NCOL] = {
		amount, r->currency, digits, r->model == KP_FARE_V2 ? "product" : "fare", r->fare_id,
		r->leg_group_id, r->rule, r->rider_category,
	};
	struct kp_ctl_out o;

	snprintf(amount, sizeof(amount), "%lld", (long long)r->amount);
	snprintf(digits, sizeof(digits), "%d", r->minor_digits);
	kp_ctl_out_begin(&o, a->format, lookup_cols, L_NCOL, NULL);
	o.human = lookup_line;
	if (kp_ctl_out_row(&o, v) != 0 || kp_ctl_out_end(&o, NULL) != 0)
		return KP_E_INVAL;
	return KP_OK;
}

/* No fare matched: which of the journey's fields were not given (a rule may need them). */
static void nofare_why(const struct kp_fare_query *q)
{
	char missing[200] = "";
	size_t n = 0;

#define MISSING(cond, name) \
	if (cond) \
		n += (size_t)snprintf(missing + n, sizeof(missing) - n, "%s%s", n ? ", " : "", name)
	MISSING(q->route_id == NULL, "--route");
	MISSING(q->from_stop == NULL && q->from_zone == NULL, "--from or --from-zone");
	MISSING(q->to_stop == NULL && q->to_zone == NULL, "--to or --to-zone");
	MISSING(q->date == 0, "--date");
	MISSING(q->date != 0 && q->time_s == 0, "--time");
#undef MISSING
	if (n > 0)
		fprintf(stderr, "kippuctl: fares lookup: no fare rule matches the journey; it has no "
		        "%s (a rule may need it)\n", missing);
	else
		fprintf(stderr, "kippuctl: fares lookup: no fare rule matches the journey (route, "
		        "from, to, date and time were all given)\n");
}

static int cmd_lookup(struct fargs *a)
{
	struct kp_fare_result r;
	kp_store *s = NULL;
	int rc;

	rc = kp_ctl_store_open_mode(&s, a->pos[0], KP_STORE_READONLY);
	if (rc == KP_OK) {
		rc = kp_fare_lookup(s, &a->q, &r);
		if (rc == KP_OK) {
			rc = print_lookup(a, &r);
		} else {
			if (rc == KP_E_NOFARE)
				nofare_why(&a->q);
			else
				fprintf(stderr, "kippuctl: fares lookup: %s: %s\n", kp_strerror(rc),
				        kp_store_errmsg(s));
		}
	}
	kp_store_close(s);
	return rc == KP_OK ? 0 : 1;
}

static int cmd_quote(struct fargs *a)
{
	uint8_t key[KP_TOKEN_KEY_LEN] = { 0 };
	char err[KP_FARE_MSG_MAX], buf[8192];
	struct kp_ctl_out o;
	FILE *out;
	size_t n;
	int rc;

	/* Without a key, labels and felica: cards get tokens under an all-zero key: fine for
	 * pricing, and load files for the same database must then use it too. */
	if (a->token_key != NULL && kp_ctl_readable("token key", a->token_key) != 0)
		return 1;
	if (a->token_key != NULL && kp_token_key_load(a->token_key, key) != KP_OK) {
		fprintf(stderr, "kippuctl: fares quote: cannot read token key %s\n", a->token_key);
		return 1;
	}
	/* The CSV goes to stdout only once the whole quote succeeded: a failure prints nothing
	 * there (a half CSV would read as a short, valid one). */
	out = tmpfile();
	if (out == NULL) {
		fprintf(stderr, "kippuctl: fares quote: temporary file: %s\n", strerror(errno));
		kp_zeroize(key, sizeof(key));
		return 1;
	}
	kp_fares_quote_out(&o, a->format);
	o.fp = out;
	rc = kp_fares_quote(a->pos[0], a->pos[1], key, &o, err, sizeof(err));
	kp_zeroize(key, sizeof(key));
	if (rc == KP_OK && (fflush(out) != 0 || fseek(out, 0, SEEK_SET) != 0)) {
		snprintf(err, sizeof(err), "temporary file: %s", strerror(errno));
		rc = KP_E_IO;
	}
	while (rc == KP_OK && (n = fread(buf, 1, sizeof(buf), out)) > 0)
		fwrite(buf, 1, n, stdout);
	fclose(out);
	if (rc != KP_OK || fflush(stdout) != 0) {
		fprintf(stderr, "kippuctl: fares quote: %s\n", rc == KP_OK ? strerror(errno) :
		        err[0] ? err : kp_strerror(rc));
		return 1;
	}
	return 0;
}

int kp_ctl_fares(int argc, char **argv)
{
	struct fargs a;

	/* getopt sees the subcommand as the program name */
	if (argc < 2 || fares_parse(argc - 1, argv + 1, &a) != 0) {
		fputs("usage:\n", stderr);
		kp_ctl_fares_usage(stderr);
		return 2;
	}
	if (kp_ctl_out_format(&a.fmt, &a.format) != 0)
		return 2;
	if (a.format != KP_OUT_HUMAN && strcmp(argv[1], "import") == 0) {
		fprintf(stderr, "kippuctl: fares import: --json and --csv are for listings (lookup, "
		        "quote)\n");
		return 2;
	}
	if (strcmp(argv[1], "import") == 0 && a.npos == 2)
		return cmd_import(&a);
	if (strcmp(argv[1], "lookup") == 0 && a.npos == 1 && a.q.feed_id != NULL)
		return cmd_lookup(&a);
	if (strcmp(argv[1], "quote") == 0 && a.npos == 2)
		return cmd_quote(&a);
	fputs("usage:\n", stderr);
	kp_ctl_fares_usage(stderr);
	return 2;
}
