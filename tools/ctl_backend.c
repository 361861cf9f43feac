/* SPDX-License-Identifier: Apache-2.0 */
/* kippuctl backend ...: operating the backend's database (operators, products, cards,
 * sales, denylist, the registry of terminals, records, ledger, quarantines, the fare engine's configuration and fare
 * feeds) and exporting stored records for audit. */
#include <errno.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "kp_backend.h"
#include "kp_tools.h"

static const char usage_text[] =
	"  kippuctl backend operator DB ID NAME\n"
	"  kippuctl backend product DB ID RIDES OPERATOR[,OPERATOR...] NAME [--category C]\n"
	"  kippuctl backend card DB CARD --token-key PATH [--label TEXT]\n"
	"  kippuctl backend sell DB CARD PRODUCT FROM UNTIL --token-key PATH\n"
	"                          [--balance MINOR_UNITS (stored value)] [--first-use (period pass)]\n"
	"  kippuctl backend load DB FILE   (load-file directives: operator, product (nride, stored,\n"
	"                          period, commuter), product-category, product-scope, discount, fares,\n"
	"                          cap, transfer)\n"
	"  kippuctl backend set DB DIRECTIVE ARGS...   (one load-file line)\n"
	"  kippuctl backend fares import GTFS_DIR|.zip DB [--feed-id ID]\n"
	"  kippuctl backend fares list DB [--json|--csv]\n"
	"  kippuctl backend fares remove DB FEED\n"
	"  kippuctl backend products|fare-rules DB [--json|--csv]\n"
	"  kippuctl backend service-day DB HH:MM [+HH:MM]   (default 04:00 +09:00)\n"
	"  kippuctl backend policy DB   (the scheme's My Number policy, as the bundle carries it)\n"
	"  kippuctl backend policy DB direct off | direct on [products=ID,...] [categories=C,...]\n"
	"                          [rides-per-day=N] [value-per-day=MINOR_UNITS]   (0: no limit)\n"
	"  kippuctl backend policy DB eligibility-max-age HOURS   (1-8784, default 72)\n"
	"  kippuctl backend policy DB clones off|report|suspend [speed-kmh=N] [gap-s=N]\n"
	"                          (default report, 120 km/h, 60 s)\n"
	"  kippuctl backend clones DB [--terminal ID] [--json|--csv]\n"
	"  kippuctl backend clones clear DB token:LINKAGE\n"
	"  kippuctl backend deny DB CARD REASON --token-key PATH\n"
	"  kippuctl backend undeny DB CARD --token-key PATH\n"
	"  kippuctl backend terminal add DB ID [--operator OP]\n"
	"  kippuctl backend terminal retire DB ID\n"
	"                  (only registered terminals sync; a retired one is refused, its records kept)\n"
	"  kippuctl backend records|ledger|terminals|journals|certificates|entitlements|overdrafts DB\n"
	"                  [--terminal ID] [--json|--csv]\n"
	"  kippuctl backend quarantine list DB [--json|--csv]\n"
	"  kippuctl backend quarantine clear DB TERMINAL\n"
	"  kippuctl backend cert list DB [TERMINAL] [--json|--csv]\n"
	"                  (every certificate each terminal has used: fingerprint, validity, revoked)\n"
	"  kippuctl backend cert revoke DB TERMINAL FINGERPRINT [--at TIME]   (default: now)\n"
	"                  (its key's records of TIME or later are refused, its hello too)\n"
	"  kippuctl backend export DB TERMINAL DIR   (DIR/EPOCH/SEQ.cose + the certificates)\n"
	"  kippuctl backend audit DB   (verify every record's own signature not verified yet)\n";

void kp_ctl_backend_usage(FILE *fp)
{
	fputs(usage_text, fp);
}

static int64_t now_ms(void)
{
	return (int64_t)time(NULL) * 1000;
}

/* "A,B,C" into ids (sorted, unique, each 1-32 of A-Z a-z 0-9 - _ .); -1 with the reason. */
static int id_list(const char *what, const char *list, char (*ids)[KP_ID_MAX + 1], size_t *n)
{
	char buf[1024], *save = NULL;

	*n = 0;
	if (strlen(list) >= sizeof(buf)) {
		fprintf(stderr, "kippuctl: policy: %s: list too long\n", what);
		return -1;
	}
	snprintf(buf, sizeof(buf), "%s", list);
	for (char *t = strtok_r(buf, ",", &save); t != NULL; t = strtok_r(NULL, ",", &save)) {
		size_t k = *n;

		if (!kp_valid_id(t)) {
			fprintf(stderr, "kippuctl: policy: %s: '%.40s' is not 1-32 characters of "
			        "A-Z a-z 0-9 - _ .\n", what, t);
			return -1;
		}
		if (*n == KP_POLICY_LIST_MAX) {
			fprintf(stderr, "kippuctl: policy: %s: at most %d\n", what, KP_POLICY_LIST_MAX);
			return -1;
		}
		/* insertion in order; a duplicate is one entry */
		while (k > 0 && strcmp(ids[k - 1], t) > 0)
			k--;
		if (k > 0 && strcmp(ids[k - 1], t) == 0)
			continue;
		memmove(ids[k + 1], ids[k], (*n - k) * sizeof(ids[0]));
		snprintf(ids[k], KP_ID_MAX + 1, "%s", t);
		(*n)++;
	}
	return 0;
}

static int policy_number(const char *what, const char *v, int64_t max, int64_t *out)
{
	char *end = NULL;

	errno = 0;
	*out = strtoll(v, &end, 10);
	if (errno != 0 || end == v || *end != '\0' || *out < 0 || *out > max) {
		fprintf(stderr, "kippuctl: policy: %s: a whole number from 0 to %lld, not '%.40s'\n",
		        what, (long long)max, v);
		return -1;
	}
	return 0;
}

static void policy_show(const struct kp_bundle_policy *p)
{
	printf("direct My Number taps: %s\n", p->direct ? "on" : "off");
	if (p->direct) {
		printf("  products:");
		for (size_t i = 0; i < p->n_products; i++)
			printf("%s%s", i ? "," : " ", p->products[i]);
		printf("%s\n  categories:", p->n_products ? "" : " (none)");
		for (size_t i = 0; i < p->n_categories; i++)
			printf("%s%s", i ? "," : " ", p->categories[i]);
		printf("%s\n", p->n_categories ? "" : " (none)");
		printf("  rides per linkage and day: ");
		p->direct_rides ? printf("%lld\n", (long long)p->direct_rides) : printf("no limit\n");
		printf("  value per linkage and day: ");
		p->direct_value ? printf("%lld\n", (long long)p->direct_value) : printf("no limit\n");
	}
	printf("eligibility max age: %lld hours\n", (long long)(p->max_age_s / 3600));
}

static const char *const CLONE_ACTIONS[] = { "off", "report", "suspend" };

static int clone_policy_show(kp_bstore *s)
{
	int64_t speed = 0, gap = 0;
	int action = 0;

	if (kp_bstore_get_clone_policy(s, &action, &speed, &gap) != KP_BE_OK)
		return -1;
	printf("clone detection: %s (faster than %lld km/h between two terminals' stops, or two "
	       "terminals less than %lld s apart where a stop's place is not known)\n",
	       CLONE_ACTIONS[action], (long long)speed, (long long)gap);
	return 0;
}

/* kippuctl backend policy DB clones off|report|suspend [speed-kmh=N] [gap-s=N] */
static int clone_policy_set(kp_bstore *s, char **args, int n)
{
	int64_t speed = 0, gap = 0;
	int action = -1, cur = 0;

	if (kp_bstore_get_clone_policy(s, &cur, &speed, &gap) != KP_BE_OK) {
		fprintf(stderr, "kippuctl: backend policy: %s\n", kp_bstore_errmsg(s));
		return 1;
	}
	for (int i = 0; i < 3; i++) {
		if (n >= 2 && strcmp(args[1], CLONE_ACTIONS[i]) == 0)
			action = i;
	}
	if (action < 0) {
		fprintf(stderr, "kippuctl: policy: clones: off, report or suspend\n");
		return 2;
	}
	for (int i = 2; i < n; i++) {
		int bad;

		if (strncmp(args[i], "speed-kmh=", 10) == 0)
			bad = policy_number("speed-kmh", args[i] + 10, 2000, &speed) != 0 || speed < 1;
		else if (strncmp(args[i], "gap-s=", 6) == 0)
			bad = policy_number("gap-s", args[i] + 6, 86400, &gap) != 0;
		else {
			fprintf(stderr, "kippuctl: policy: clones: unknown setting '%.40s' (speed-kmh=, "
			        "gap-s=)\n", args[i]);
			return 2;
		}
		if (bad) {
			fprintf(stderr, "kippuctl: policy: clones: speed-kmh 1 to 2000, gap-s 0 to "
			        "86400\n");
			return 2;
		}
	}
	if (kp_bstore_set_clone_policy(s, action, speed, gap) != KP_BE_OK) {
		fprintf(stderr, "kippuctl: backend policy: %s\n", kp_bstore_errmsg(s));
		return 2;
	}
	return clone_policy_show(s) == 0 ? 0 : 1;
}

/* kippuctl backend policy DB [direct off | direct on KEY=VALUE... | eligibility-max-age H] */
static int backend_policy(kp_bstore *s, char **args, int n)
{
	struct kp_bundle_policy p;
	int64_t v = 0;
	int rc = kp_bstore_get_policy(s, &p);

	if (rc != KP_BE_OK) {
		fprintf(stderr, "kippuctl: backend policy: %s\n", kp_bstore_errmsg(s));
		return 1;
	}
	if (n == 0) {
		policy_show(&p);
		return clone_policy_show(s) == 0 ? 0 : 1;
	}
	if (strcmp(args[0], "clones") == 0)
		return clone_policy_set(s, args, n);
	if (strcmp(args[0], "eligibility-max-age") == 0 && n == 2) {
		if (policy_number("eligibility-max-age (hours)", args[1],
		                  KP_POLICY_MAX_AGE_MAX / 3600, &v) != 0)
			return 2;
		if (v < KP_POLICY_MAX_AGE_MIN / 3600) {
			fprintf(stderr, "kippuctl: policy: eligibility-max-age: at least 1 hour\n");
			return 2;
		}
		p.max_age_s = v * 3600;
	} else if (strcmp(args[0], "direct") == 0 && n == 2 && strcmp(args[1], "off") == 0) {
		p.direct = 0;
		p.direct_rides = p.direct_value = 0;
		p.n_products = p.n_categories = 0;
	} else if (strcmp(args[0], "direct") == 0 && n >= 2 && strcmp(args[1], "on") == 0) {
		memset(p.products, 0, sizeof(p.products));
		memset(p.categories, 0, sizeof(p.categories));
		p.direct = 1;
		p.direct_rides = p.direct_value = 0;
		p.n_products = p.n_categories = 0;
		for (int i = 2; i < n; i++) {
			const char *eq = strchr(args[i], '=');
			size_t klen = eq != NULL ? (size_t)(eq - args[i]) : 0;
			int bad;

			if (eq != NULL && klen == 8 && strncmp(args[i], "products", 8) == 0)
				bad = id_list("products", eq + 1, p.products, &p.n_products);
			else if (eq != NULL && klen == 10 && strncmp(args[i], "categories", 10) == 0)
				bad = id_list("categories", eq + 1, p.categories, &p.n_categories);
			else if (eq != NULL && klen == 13 && strncmp(args[i], "rides-per-day", 13) == 0)
				bad = policy_number("rides-per-day", eq + 1, KP_POLICY_RIDES_MAX,
				                    &p.direct_rides);
			else if (eq != NULL && klen == 13 && strncmp(args[i], "value-per-day", 13) == 0)
				bad = policy_number("value-per-day", eq + 1, KP_POLICY_VALUE_MAX,
				                    &p.direct_value);
			else {
				fprintf(stderr, "kippuctl: policy: direct on: unknown setting '%.40s' "
				        "(products=, categories=, rides-per-day=, value-per-day=)\n",
				        args[i]);
				return 2;
			}
			if (bad)
				return 2;
		}
		if (p.n_products + p.n_categories == 0) {
			fprintf(stderr, "kippuctl: policy: direct on: name the products= and/or "
			        "categories= a My Number card may use when tapped directly\n");
			return 2;
		}
	} else {
		kp_ctl_backend_usage(stderr);
		return 2;
	}
	rc = kp_bstore_set_policy(s, &p);
	if (rc != KP_BE_OK) {
		fprintf(stderr, "kippuctl: backend policy: %s\n", kp_bstore_errmsg(s));
		return rc == KP_BE_E_INVAL || rc == KP_BE_E_NOTFOUND ? 2 : 1;
	}
	policy_show(&p);
	return 0;
}

struct bargs {
	const char *token_key, *label, *terminal, *category, *feed_id, *balance, *operator_id, *at;
	int first_use;
	struct kp_ctl_fmt fmt;
	enum kp_ctl_format format;
	int n;
	const char *pos[64];
};

#define OPT(name, field, help) { name, KP_CTL_STR, offsetof(struct bargs, field), 0, 0, 0, help }
static const struct kp_ctl_opt backend_opts[] = {
	OPT("token-key", token_key, "the card token key"),
	OPT("label", label, "a card's label (card)"),
	OPT("terminal", terminal, "one terminal's rows only (reports)"),
	OPT("category", category, "the rider category a product is for (product)"),
	OPT("feed-id", feed_id, "the feed's id (fares import)"),
	OPT("balance", balance, "stored value in minor units (sell)"),
	{ "first-use", KP_CTL_FLAG, offsetof(struct bargs, first_use), 0, 0, 0,
	  "a period pass that starts at its first tap (sell)" },
	OPT("operator", operator_id, "the terminal's operator (terminal add)"),
	OPT("at", at, "when a certificate's revocation takes effect (cert revoke; TIME)"),
	KP_CTL_OUT_OPTS(struct bargs, fmt),
	{ NULL, 0, 0, 0, 0, 0, NULL },
};
#undef OPT

static int parse(int argc, char **argv, struct bargs *a)
{
	struct kp_ctl_pos pos = { a->pos, 64, 0, NULL };

	memset(a, 0, sizeof(*a));
	if (kp_ctl_parse(argc, argv, backend_opts, a, &pos) != 0)
		return -1;
	a->n = pos.n;
	return 0;
}

static int card_token(const struct bargs *a, const char *card, uint8_t token[KP_TOKEN_LEN])
{
	uint8_t key[KP_TOKEN_KEY_LEN] = { 0 };
	int rc;

	if (strncmp(card, "token:", 6) == 0)
		return kp_parse_card(card, key, token);
	if (kp_ctl_token_key(a->token_key, card, key) != 0)
		return -1;
	rc = kp_parse_card(card, key, token);
	kp_zeroize(key, sizeof(key));
	if (rc != KP_OK) {
		fprintf(stderr, "kippuctl: card must be felica:<16 hex digits> or token:<32 hex digits>\n");
		return -1;
	}
	return 0;
}

static int col_width(const char *name)
{
	if (strcmp(name, "token") == 0 || strcmp(name, "via") == 0)
		return 32;
	if (strcmp(name, "fingerprint") == 0)
		return 64;
	if (strcmp(name, "time") == 0 || strcmp(name, "at") == 0 || strcmp(name, "last_seen") == 0 ||
	    strcmp(name, "valid_from") == 0 || strcmp(name, "valid_until") == 0 ||
	    strcmp(name, "registered") == 0 || strcmp(name, "retired") == 0 ||
	    strcmp(name, "not_before") == 0 || strcmp(name, "not_after") == 0 ||
	    strcmp(name, "first_seen") == 0 || strcmp(name, "revoked") == 0)
		return 20;
	if (strcmp(name, "status") == 0)
		return 12;
	if (strcmp(name, "reason") == 0)
		return 16;
	if (strcmp(name, "terminal") == 0)
		return 10;
	return strlen(name) > 8 ? (int)strlen(name) : 8;
}

/* The reports' columns (README, "Listings as JSON and CSV"), named as the store's reports name
 * them; "-" or "never" where the store has no value. */
#define COLS(a) a, (int)(sizeof(a) / sizeof(a[0]))
#define T(name) { name, KP_COL_TEXT, NULL }
#define T_(name) { name, KP_COL_TEXT, "-" }
#define I(name) { name, KP_COL_INT, NULL }
#define I_(name) { name, KP_COL_INT, "-" }
#define W(name) { name, KP_COL_TIME, NULL }
static const struct kp_ctl_col record_cols[] = {
	T("terminal"), I("seq"), W("time"), T("result"), T("reason"), T("operator"), T_("product"),
	I_("ent"), I("rides"), I_("left"), T("kind"), T_("via"), T_("category"),
};
static const struct kp_ctl_col ledger_cols[] = {
	T("operator"), I("accepted"), I("refused"), I("already"), I("rides"),
	{ "amount", KP_COL_AMOUNT, NULL },
};
static const struct kp_ctl_col terminal_cols[] = {
	T("terminal"), I("acked"), { "last_seen", KP_COL_TIME, "never" }, I("quarantined"),
	I_("epoch"), I("certs"), T("status"), T("operator"), W("registered"), W("retired"),
	I_("unsent"),
};
static const struct kp_ctl_col overdraft_cols[] = {
	I("ent"), T("token"), T("product"), I("bought"), I("used"),
};
static const struct kp_ctl_col entitlement_cols[] = {
	I("ent"), T("token"), T("product"), I("bought"), I("used"), I("remaining"), W("valid_from"),
	W("valid_until"),
};
static const struct kp_ctl_col journal_cols[] = {
	T("terminal"), I("epoch"), T("journal"), I("acked"), I("records"), I("held_before"),
	W("first_seen"), W("last_seen"),
};
static const struct kp_ctl_col cert_cols[] = {
	T("terminal"), I("cert"), T("fingerprint"), W("not_before"), W("not_after"),
	W("first_seen"), W("last_seen"), { "revoked", KP_COL_TIME, "-" }, I("records"),
};
static const struct kp_ctl_col clone_cols[] = {
	T("linkage"), T("kind"), T("first"), T("second"), T("detail"), W("flagged"), T("state"),
};
static const struct kp_ctl_col product_cols[] = {
	T("product"), T("kind"), T("name"), I_("rides"), I_("days"), T_("route"), T_("category"),
	T("operators"),
};
static const struct kp_ctl_col fare_rule_cols[] = { T("what"), T("rule") };
static const struct kp_ctl_col feed_cols[] = {
	T("feed"), I("rows"), I("bytes"), T("digest"), T("source"), W("imported"),
};
static const struct kp_ctl_col quarantine_cols[] = {
	T("terminal"), I("seq"), T("reason"), W("at"), T("state"),
};
#undef T
#undef T_
#undef I
#undef I_
#undef W

/* print_report's answer when a row could not be printed (the layer told stderr why). */
#define OUT_FAILED (-1000)

/* A report's rows through the listing layer (table, JSON lines or CSV): 0, or the store's
 * error code, or OUT_FAILED when a row could not be printed (told on stderr). */
static int print_report(kp_bstore *s, const struct bargs *a, enum kp_report which,
                        const char *terminal, const struct kp_ctl_col *cols, int ncol,
                        const char *none)
{
	struct kp_ctl_out o;
	int rc;

	/* Fixed columns a person can read; tokens and times are the wide ones. */
	kp_ctl_out_begin(&o, a->format, cols, ncol, col_width);
	rc = kp_bstore_report(s, which, terminal, kp_ctl_out_report, &o);
	if (rc == KP_BE_OK && kp_ctl_out_end(&o, none) != 0)
		rc = OUT_FAILED;
	return rc;
}

/* The export being written: one folder per epoch, each a whole chain with the certificates
 * that signed it. */
struct export {
	const char *dir;
	char epoch_dir[4096];
	int64_t epoch, cert_id;            /* current epoch (0: none yet), current range's cert */
	uint64_t first, last, n_epoch, n_all;
	int n_certs;                       /* certificates written into this epoch's folder */
	int64_t certs[64];
	uint8_t *one_cert;                 /* DER of the epoch's only certificate so far */
	size_t one_cert_len;
	FILE *ranges, *journals;
	int failed;
};

static int write_pem(const uint8_t *der, size_t len, const char *path)
{
	kp_cert *cert = NULL;
	int rc = kp_cert_parse(&cert, der, len);

	if (rc == 0)
		rc = kp_cert_write_pem(cert, path);
	kp_cert_free(cert);
	if (rc != 0)
		fprintf(stderr, "kippuctl: %s: %s\n", path, kp_strerror(rc));
	return rc;
}

static void range_end(struct export *x)
{
	if (x->ranges != NULL && x->n_epoch > 0)
		fprintf(x->ranges, "%llu %llu cert-%lld.crt\n", (unsigned long long)x->first,
		        (unsigned long long)x->last, (long long)x->cert_id);
}

static int epoch_end(struct export *x)
{
	char path[4200];
	int rc = 0;

	range_end(x);
	if (x->ranges != NULL && fclose(x->ranges) != 0)
		rc = -1;
	x->ranges = NULL;
	/* one certificate signed the whole epoch: also as terminal.crt, what the verifiers of
	 * a terminal's own export read */
	if (x->epoch > 0 && x->n_certs == 1 && x->one_cert != NULL) {
		snprintf(path, sizeof(path), "%s/terminal.crt", x->epoch_dir);
		rc |= write_pem(x->one_cert, x->one_cert_len, path);
	}
	if (x->epoch > 0 && x->journals != NULL)
		fprintf(x->journals, "%lld %llu\n", (long long)x->epoch,
		        (unsigned long long)x->n_epoch);
	free(x->one_cert);
	x->one_cert = NULL;
	return rc;
}

static int export_row(void *arg, const struct kp_export_row *row)
{
	struct export *x = arg;
	char path[4200];
	FILE *fp;
	int seen = 0;

	if (row->epoch != x->epoch) {
		if (epoch_end(x) != 0)
			return x->failed = 1;
		x->epoch = row->epoch;
		x->n_epoch = 0;
		x->n_certs = 0;
		x->cert_id = -1;
		snprintf(x->epoch_dir, sizeof(x->epoch_dir), "%s/%lld", x->dir, (long long)row->epoch);
		if (mkdir(x->epoch_dir, 0755) != 0 && errno != EEXIST) {
			fprintf(stderr, "kippuctl: %s: %s\n", x->epoch_dir, strerror(errno));
			return x->failed = 1;
		}
		snprintf(path, sizeof(path), "%s/certificates.txt", x->epoch_dir);
		x->ranges = fopen(path, "w");
		if (x->ranges == NULL) {
			fprintf(stderr, "kippuctl: %s: %s\n", path, strerror(errno));
			return x->failed = 1;
		}
		if (x->journals != NULL)
			fprintf(x->journals, "# epoch %lld: journal %s\n", (long long)row->epoch,
			        row->journal);
	}
	if (row->cert_id <= 0 || row->cert == NULL) {
		fprintf(stderr, "kippuctl: record %llu of epoch %lld: no certificate stored\n",
		        (unsigned long long)row->seq, (long long)row->epoch);
		return x->failed = 1;
	}
	if (row->cert_id != x->cert_id) {
		range_end(x);
		x->cert_id = row->cert_id;
		x->first = row->seq;
		for (int i = 0; i < x->n_certs; i++)
			seen |= x->certs[i] == row->cert_id;
		if (!seen) {
			snprintf(path, sizeof(path), "%s/cert-%lld.crt", x->epoch_dir,
			         (long long)row->cert_id);
			if (write_pem(row->cert, row->cert_len, path) != 0 || x->n_certs == 64)
				return x->failed = 1;
			x->certs[x->n_certs++] = row->cert_id;
			if (x->n_certs == 1) {
				x->one_cert = malloc(row->cert_len);
				if (x->one_cert == NULL)
					return x->failed = 1;
				memcpy(x->one_cert, row->cert, row->cert_len);
				x->one_cert_len = row->cert_len;
			}
		}
	}
	x->last = row->seq;
	snprintf(path, sizeof(path), "%s/%llu.cose", x->epoch_dir, (unsigned long long)row->seq);
	fp = fopen(path, "wb");
	if (fp == NULL || fwrite(row->cose, 1, row->cose_len, fp) != row->cose_len) {
		fprintf(stderr, "kippuctl: %s: %s\n", path, strerror(errno));
		if (fp != NULL)
			fclose(fp);
		return x->failed = 1;
	}
	if (fclose(fp) != 0)
		return x->failed = 1;
	x->n_epoch++;
	x->n_all++;
	return 0;
}

/* DIR/journals.txt names each epoch (its journal id, its record count); DIR/EPOCH/ holds
 * SEQ.cose for every record of that epoch from 1 (records an earlier epoch holds too are
 * written again there, so each folder is a whole chain), cert-ID.crt for each certificate
 * that signed some of them, certificates.txt ("FIRST LAST cert-ID.crt" ranges), and
 * terminal.crt when one certificate signed them all. */
static int export_records(kp_bstore *s, const char *terminal, const char *dir)
{
	struct export x;
	char path[4200];
	int rc;

	memset(&x, 0, sizeof(x));
	x.dir = dir;
	if (mkdir(dir, 0755) != 0 && errno != EEXIST) {
		fprintf(stderr, "kippuctl: %s: %s\n", dir, strerror(errno));
		return 1;
	}
	snprintf(path, sizeof(path), "%s/journals.txt", dir);
	x.journals = fopen(path, "w");
	if (x.journals == NULL) {
		fprintf(stderr, "kippuctl: %s: %s\n", path, strerror(errno));
		return 1;
	}
	fprintf(x.journals, "# terminal %s: epoch records\n", terminal);
	rc = kp_bstore_export_walk(s, terminal, export_row, &x);
	if (epoch_end(&x) != 0)
		x.failed = 1;
	if (fclose(x.journals) != 0)
		x.failed = 1;
	if (rc != KP_BE_OK && !x.failed)
		fprintf(stderr, "kippuctl: export: %s\n", kp_bstore_errmsg(s));
	if (rc != KP_BE_OK || x.failed)
		return 1;
	if (x.n_all == 0) {
		fprintf(stderr, "kippuctl: the backend holds no records of terminal %s\n", terminal);
		return 1;
	}
	printf("exported %llu records of terminal %s in %lld epoch(s), with the certificates "
	       "that signed them, to %s\n", (unsigned long long)x.n_all, terminal,
	       (long long)x.epoch, dir);
	return 0;
}

/* ---- the registry of terminals ---- */

int kp_ctl_terminal_id(const char *id, const char *what)
{
	size_t n = strlen(id);
	char why[64];

	if (!kp_valid_id(id)) {
		if (n == 0)
			snprintf(why, sizeof(why), "this one is empty");
		else if (n > KP_ID_MAX)
			snprintf(why, sizeof(why), "this one is %zu bytes long", n);
		else
			snprintf(why, sizeof(why), "this one has another character");
		fprintf(stderr, "kippuctl: %s: a terminal id is 1-32 characters of A-Z a-z 0-9 - _ . "
		        "(its certificate's CN); %s\n", what, why);
		return 2;
	}
	if (strcasecmp(id, KP_BACKEND_DEFAULT_ID) == 0) {
		fprintf(stderr, "kippuctl: %s %s is reserved for the backend's certificate "
		        "(kippuctl backend create)\n", what, id);
		return 2;
	}
	return 0;
}

/* terminal add DB ID [--operator OP] | terminal retire DB ID. The database must exist: a
 * mistyped path would otherwise make a new backend database holding one terminal. */
static int backend_terminal(const struct bargs *a)
{
	const char *verb = a->n > 0 ? a->pos[0] : "", *db, *id;
	kp_bstore *s = NULL;
	struct stat sb = { 0 };
	int rc, again = 0;

	if (a->n != 3 || (strcmp(verb, "add") != 0 && strcmp(verb, "retire") != 0) ||
	    (strcmp(verb, "retire") == 0 && a->operator_id != NULL)) {
		kp_ctl_backend_usage(stderr);
		return 2;
	}
	db = a->pos[1];
	id = a->pos[2];
	if (kp_ctl_terminal_id(id, strcmp(verb, "add") == 0 ? "backend terminal add: ID" :
	                       "backend terminal retire: ID") != 0)
		return 2;
	if (a->operator_id != NULL && !kp_valid_id(a->operator_id)) {
		fprintf(stderr, "kippuctl: backend terminal add: --operator: 1-32 characters of A-Z a-z "
		        "0-9 - _ .; nothing changed\n");
		return 2;
	}
	if (!kp_bstore_is_pg(db) && (stat(db, &sb) != 0 || !S_ISREG(sb.st_mode))) {
		fprintf(stderr, "kippuctl: backend terminal %s: no backend database at %s (%s); nothing "
		        "changed\n", verb, db, S_ISDIR(sb.st_mode) ? "a folder" : strerror(errno));
		return 1;
	}
	if (kp_ctl_bstore_open(&s, db, KP_BSTORE_EXISTING) != KP_BE_OK)
		return 1;
	if (strcmp(verb, "add") == 0)
		rc = kp_bstore_terminal_add(s, id, a->operator_id, now_ms(), &again);
	else
		rc = kp_bstore_terminal_retire(s, id, now_ms(), &again);
	if (rc != KP_BE_OK) {
		fprintf(stderr, "kippuctl: backend terminal %s: %s; nothing changed\n", verb,
		        kp_bstore_errmsg(s));
	} else if (strcmp(verb, "retire") == 0) {
		printf(again ? "terminal %s was retired already; nothing changed\n" :
		       "terminal %s retired: refused from its next sync on; its records, journals and "
		       "certificates are kept\n", id);
	} else if (again) {
		printf("terminal %s was registered already%s%s\n", id,
		       a->operator_id != NULL ? "; operator now " : "; nothing changed",
		       a->operator_id != NULL ? a->operator_id : "");
	} else {
		printf("terminal %s registered%s%s%s: it may sync from now on\n", id,
		       a->operator_id != NULL ? " (operator " : "",
		       a->operator_id != NULL ? a->operator_id : "", a->operator_id != NULL ? ")" : "");
	}
	kp_bstore_close(s);
	return rc == KP_BE_OK ? 0 : 1;
}

/* ---- the fare engine's configuration and fare feeds ---- */

static int seed_operator(void *arg, int ncol, const char *const *cols, const char *const *names)
{
	(void)names;
	if (ncol < 2 || cols[0] == NULL)
		return 0;
	return kp_store_put_operator(arg, cols[0], cols[1] != NULL ? cols[1] : "") != KP_OK;
}

/* Load-file lines for the backend: the terminal's own parser (kp_load_file) reads them into
 * a scratch store seeded with the backend's operators, and what it holds then goes to the
 * backend in one transaction. Card lines (entitlement, eligibility, denylist) are refused:
 * at the backend, cards are registered and sold to. */
static int backend_load(kp_bstore *s, const char *path, const char *label)
{
	static const char *const card_tables[] = { "entitlements", "eligibility", "denylist" };
	static const uint8_t no_key[KP_TOKEN_KEY_LEN];
	kp_store *scratch = NULL;
	struct kp_bundle b;
	char err[1024] = "";
	size_t lines = 0;
	int rc;

	memset(&b, 0, sizeof(b));
	rc = kp_ctl_store_open(&scratch, ":memory:");
	if (rc != KP_OK)
		return 1;
	if (kp_bstore_report(s, KP_REPORT_OPERATORS, NULL, seed_operator, scratch) != KP_BE_OK) {
		fprintf(stderr, "kippuctl: backend operators: %s\n", kp_bstore_errmsg(s));
		goto fail;
	}
	rc = kp_load_file(scratch, path, no_key, err, sizeof(err), &lines);
	if (rc != KP_OK) {
		fprintf(stderr, "kippuctl: %s\n", err);
		kp_store_close(scratch);
		return rc == KP_E_PARSE ? 2 : 1;
	}
	for (size_t i = 0; i < sizeof(card_tables) / sizeof(card_tables[0]); i++) {
		int64_t n = 0;

		if (kp_store_count(scratch, card_tables[i], &n) != KP_OK || n > 0) {
			fprintf(stderr, "kippuctl: %s: entitlement, eligibility and denylist lines are for "
			        "terminals; at the backend use backend card/sell, linkage, deny\n", path);
			goto fail;
		}
	}
	if (kp_store_export_config(scratch, &b) != KP_OK) {
		fprintf(stderr, "kippuctl: %s: %s\n", path, kp_store_errmsg(scratch));
		goto fail;
	}
	if (kp_bstore_put_config(s, &b) != KP_BE_OK) {
		fprintf(stderr, "kippuctl: backend load %s: %s\n", path, kp_bstore_errmsg(s));
		goto fail;
	}
	printf("%s: %zu lines: %zu operators, %zu products, %zu product scopes, %zu discounts, "
	       "%zu caps, %zu transfer rules, %zu operator fares now at the backend\n", label,
	       lines, b.n_operators, b.n_products, b.n_scopes, b.n_discounts, b.n_caps,
	       b.n_transfers, b.n_operator_fares);
	kp_bundle_free(&b);
	kp_store_close(scratch);
	return 0;
fail:
	kp_bundle_free(&b);
	kp_store_close(scratch);
	return 1;
}

/* One load-file line from the command line's words. */
static int backend_set(kp_bstore *s, const char *const *words, int n)
{
	char path[] = "/tmp/kippuctl-set-XXXXXX";
	int fd = mkstemp(path), code = 1;
	FILE *fp = fd >= 0 ? fdopen(fd, "w") : NULL;

	if (fp == NULL) {
		fprintf(stderr, "kippuctl: temporary file: %s\n", strerror(errno));
		if (fd >= 0)
			close(fd);
		unlink(path);
		return 1;
	}
	for (int i = 0; i < n; i++) {
		if (strpbrk(words[i], "\n\r#") != NULL) {
			fprintf(stderr, "kippuctl: set: no newlines or # in the words\n");
			fclose(fp);
			unlink(path);
			return 2;
		}
		fprintf(fp, "%s%s", i > 0 ? " " : "", words[i]);
	}
	fputc('\n', fp);
	if (fclose(fp) == 0)
		code = backend_load(s, path, "set");
	unlink(path);
	return code;
}

static void import_warn(void *arg, const char *msg)
{
	(void)arg;
	fprintf(stderr, "kippuctl: warning: %s\n", msg);
}

struct places {
	struct kp_stop_place *p;
	size_t n, cap;
};

static int place_add(void *arg, const char *stop_id, int64_t lat_e6, int64_t lon_e6)
{
	struct places *pl = arg;

	if (pl->n == pl->cap) {
		size_t cap = pl->cap ? pl->cap * 2 : 256;
		struct kp_stop_place *p = realloc(pl->p, cap * sizeof(*p));

		if (p == NULL)
			return KP_E_NOMEM;
		pl->p = p;
		pl->cap = cap;
	}
	snprintf(pl->p[pl->n].stop_id, sizeof(pl->p[pl->n].stop_id), "%s", stop_id);
	pl->p[pl->n].lat_e6 = lat_e6;
	pl->p[pl->n].lon_e6 = lon_e6;
	pl->n++;
	return KP_OK;
}

/* The feed's stop places, for clone detection ("a time or distance no rider could cover");
 * a feed without stops.txt places nothing. */
static int backend_stop_places(kp_bstore *s, const char *dir, const char *feed)
{
	struct places pl = { NULL, 0, 0 };
	char err[512] = "";
	int rc = kp_gtfs_stop_places(dir, place_add, &pl, err, sizeof(err));

	if (rc == KP_E_IO)
		rc = KP_OK;
	else if (rc != KP_OK)
		fprintf(stderr, "kippuctl: feed %s: %s\n", feed, err[0] ? err : kp_strerror(rc));
	if (rc == KP_OK && kp_bstore_put_stop_places(s, feed, pl.p, pl.n) != KP_BE_OK) {
		fprintf(stderr, "kippuctl: feed %s: stop places: %s\n", feed, kp_bstore_errmsg(s));
		rc = KP_E_DB;
	}
	if (rc == KP_OK)
		printf("feed %s: %zu stop places for clone detection\n", feed, pl.n);
	free(pl.p);
	return rc;
}

/* The terminal's importer into a scratch store, then the feed as one package: the backend
 * changes only when the whole feed imported. */
static int backend_fares_import(const char *dir, const char *source, const char *db,
                                const char *feed_arg)
{
	struct kp_fare_import_opts opts = { feed_arg, import_warn, NULL };
	struct kp_fare_import_stats st;
	char err[1024] = "", feed[KP_ID_MAX + 2];
	kp_store *scratch = NULL;
	kp_bstore *s = NULL;
	uint8_t *pkg = NULL;
	size_t len = 0, rows = 0;
	struct timespec t0, t1;
	int code = 1;

	if (feed_arg != NULL) {
		snprintf(feed, sizeof(feed), "%s", feed_arg);
	} else {
		size_t n = strlen(dir);
		const char *base;

		while (n > 1 && dir[n - 1] == '/')
			n--;
		base = dir + n;
		while (base > dir && base[-1] != '/')
			base--;
		snprintf(feed, sizeof(feed), "%.*s", (int)(dir + n - base), base);
	}
	if (!kp_valid_id(feed)) {
		fprintf(stderr, "kippuctl: feed id \"%s\": the bundle takes 1-32 characters of "
		        "A-Z a-z 0-9 - _ . (use --feed-id)\n", feed);
		return 2;
	}
	opts.feed_id = feed;
	clock_gettime(CLOCK_MONOTONIC, &t0);
	if (kp_ctl_store_open(&scratch, ":memory:") != KP_OK)
		return 1;
	if (kp_fares_import(scratch, dir, &opts, &st, err, sizeof(err)) != KP_OK) {
		fprintf(stderr, "kippuctl: %s\n", err);
		goto out;
	}
	if (kp_store_export_feed(scratch, feed, &pkg, &len, &rows, err, sizeof(err)) != KP_OK) {
		fprintf(stderr, "kippuctl: feed %s: %s\n", feed, err);
		goto out;
	}
	if (kp_ctl_bstore_open(&s, db, KP_BSTORE_CREATE) != KP_BE_OK)
		goto out;
	if (kp_bstore_put_feed(s, feed, source, pkg, len, now_ms()) != KP_BE_OK) {
		fprintf(stderr, "kippuctl: backend fares import: %s\n", kp_bstore_errmsg(s));
		goto out;
	}
	clock_gettime(CLOCK_MONOTONIC, &t1);
	printf("feed %s: %lld fares, %lld fare rules, %lld rider prices, %lld products, %lld leg "
	       "rules, %lld transfer rules, %lld warnings; package %zu rows, %zu bytes, in %.0f ms; "
	       "terminals get it with their next bundle\n", feed, (long long)st.fares,
	       (long long)st.fare_rules, (long long)st.rider_prices, (long long)st.products,
	       (long long)st.leg_rules, (long long)st.transfer_rules, (long long)st.warnings, rows,
	       len, (double)(t1.tv_sec - t0.tv_sec) * 1e3 + (double)(t1.tv_nsec - t0.tv_nsec) / 1e6);
	if (backend_stop_places(s, dir, feed) != KP_OK)
		goto out;
	code = 0;
out:
	free(pkg);
	kp_bstore_close(s);
	kp_store_close(scratch);
	return code;
}

static int parse_hhmm(const char *t, int sign_needed, int *secs)
{
	int h = 0, m = 0, n = 0, sign = 1;

	if (sign_needed) {
		if (t[0] != '+' && t[0] != '-')
			return -1;
		sign = t[0] == '-' ? -1 : 1;
		t++;
	}
	if (sscanf(t, "%2d:%2d%n", &h, &m, &n) != 2 || t[n] != '\0' || h > (sign_needed ? 14 : 23) ||
	    h < 0 || m < 0 || m > 59)
		return -1;
	*secs = sign * (h * 3600 + m * 60);
	return 0;
}

/* Names and reasons the bundle could not carry are refused here, before the database is
 * opened: a row every terminal's bundle would have to leave out. */
static bool text_arg_bad(const char *cmd, const struct bargs *a)
{
	static const struct { const char *cmd; int n, pos; const char *field; } texts[] = {
		{ "operator", 3, 2, "NAME" }, { "product", 5, 4, "NAME" }, { "deny", 3, 2, "REASON" },
	};
	char err[200];

	for (size_t i = 0; i < sizeof(texts) / sizeof(texts[0]); i++) {
		if (strcmp(cmd, texts[i].cmd) == 0 && a->n == texts[i].n &&
		    kp_bundle_text_check(texts[i].field, a->pos[texts[i].pos], err, sizeof(err)) !=
		    KP_SYNC_OK) {
			fprintf(stderr, "kippuctl: backend %s: %s; nothing changed\n", cmd, err);
			return true;
		}
	}
	return false;
}

/* A store call's outcome: 0, or 1 after telling stderr the store's account of it. */
static int be_result(kp_bstore *s, const char *cmd, int rc)
{
	if (rc == KP_BE_OK)
		return 0;
	if (rc != OUT_FAILED)
		fprintf(stderr, "kippuctl: backend %s: %s\n", cmd, kp_bstore_errmsg(s));
	return 1;
}

int kp_ctl_bstore_open(kp_bstore **s, const char *path, int mode)
{
	char err[600];
	int rc = kp_bstore_open_mode(s, path, mode, err, sizeof(err));

	if (rc != KP_BE_OK)
		fprintf(stderr, "kippuctl: %s\n", err);
	return rc;
}

static int be_usage(void)
{
	kp_ctl_backend_usage(stderr);
	return 2;
}

/* ---- the subcommands: those that open the database themselves ---- */

/* backend fares import GTFS_DIR|GTFS.zip DB: a zip through a private folder, as fares import. */
static int be_fares_import(const char *path, const char *db, const char *feed_arg)
{
	char dir[4200], feed[KP_ID_MAX + 2];
	int tmp = 0, code;

	if (kp_ctl_gtfs_source(path, dir, sizeof(dir), &tmp, feed, sizeof(feed)) != 0)
		return 1;
	code = backend_fares_import(dir, path, db, feed_arg != NULL ? feed_arg : tmp ? feed : NULL);
	if (tmp)
		kp_gtfs_zip_close(dir);
	return code;
}

static int be_fares(kp_bstore *unused, const struct bargs *a, const char *cmd)
{
	kp_bstore *s = NULL;
	int rc;

	if (a->n == 3 && strcmp(a->pos[0], "import") == 0)
		return be_fares_import(a->pos[1], a->pos[2], a->feed_id);
	if ((a->n != 2 || strcmp(a->pos[0], "list") != 0) &&
	    (a->n != 3 || strcmp(a->pos[0], "remove") != 0))
		return be_usage();
	if (kp_ctl_bstore_open(&s, a->pos[1], strcmp(a->pos[0], "list") == 0 ?
	                       KP_BSTORE_READONLY : KP_BSTORE_EXISTING) != KP_BE_OK)
		return 1;
	if (strcmp(a->pos[0], "remove") == 0) {
		rc = kp_bstore_delete_feed(s, a->pos[2]);
	} else {
		rc = print_report(s, a, KP_REPORT_FEEDS, NULL, COLS(feed_cols), "(no fare feeds)");
	}
	rc = be_result(s, cmd, rc);
	kp_bstore_close(s);
	return rc;
}

static int be_quarantine(kp_bstore *unused, const struct bargs *a, const char *cmd)
{
	kp_bstore *s = NULL;
	int rc;

	if (a->n < 2 || (strcmp(a->pos[0], "list") != 0 && strcmp(a->pos[0], "clear") != 0) ||
	    (strcmp(a->pos[0], "clear") == 0 && a->n != 3))
		return be_usage();
	if (kp_ctl_bstore_open(&s, a->pos[1], strcmp(a->pos[0], "list") == 0 ?
	                       KP_BSTORE_READONLY : KP_BSTORE_EXISTING) != KP_BE_OK)
		return 1;
	if (strcmp(a->pos[0], "list") == 0) {
		rc = print_report(s, a, KP_REPORT_QUARANTINE, a->terminal, COLS(quarantine_cols),
		                  "no quarantines");
	} else {
		rc = kp_bstore_quarantine_clear(s, a->pos[2]);
		if (rc == KP_BE_OK)
			printf("terminal %s released from quarantine: its next sync resends from "
			       "the last record held\n", a->pos[2]);
	}
	rc = be_result(s, cmd, rc);
	kp_bstore_close(s);
	return rc;
}

static int be_clones_clear(kp_bstore *unused, const struct bargs *a, const char *cmd)
{
	static const uint8_t no_key[KP_TOKEN_KEY_LEN];
	uint8_t token[KP_TOKEN_LEN];
	kp_bstore *s = NULL;
	int rc;

	if (a->n != 3 || strncmp(a->pos[2], "token:", 6) != 0 ||
	    kp_parse_card(a->pos[2], no_key, token) != KP_OK) {
		fprintf(stderr, "kippuctl: backend clones clear DB token:<32 hex digits> (the "
		        "linkage as the clones report shows it)\n");
		return 2;
	}
	if (kp_ctl_bstore_open(&s, a->pos[1], KP_BSTORE_EXISTING) != KP_BE_OK)
		return 1;
	rc = kp_bstore_clone_clear(s, token, now_ms());
	if (rc == KP_BE_OK)
		printf("linkage cleared: the next bundle carries its eligibility again\n");
	rc = be_result(s, cmd, rc);
	kp_bstore_close(s);
	return rc;
}

static int be_terminal(kp_bstore *unused, const struct bargs *a, const char *cmd)
{
	return backend_terminal(a);
}

/* A certificate's fingerprint as cert list shows it: 64 hex digits (SHA-256 of the DER), any
 * case, colons between bytes allowed; out gets them in lowercase. -1 if it is not one. */
static int fingerprint_arg(const char *in, char out[2 * KP_SHA256_LEN + 1])
{
	size_t n = 0;

	for (const char *p = in; *p != '\0'; p++) {
		if (*p == ':' && n > 0 && n % 2 == 0 && p[1] != '\0' && p[1] != ':')
			continue;
		if (n == 2 * KP_SHA256_LEN || strchr("0123456789abcdefABCDEF", *p) == NULL)
			return -1;
		out[n++] = (char)(*p >= 'A' && *p <= 'F' ? *p - 'A' + 'a' : *p);
	}
	out[n] = '\0';
	return n == 2 * KP_SHA256_LEN ? 0 : -1;
}

static void time_text(int64_t ms, char *out, size_t cap)
{
	time_t t = (time_t)(ms / 1000);
	struct tm tm;

	if (gmtime_r(&t, &tm) == NULL || strftime(out, cap, "%Y-%m-%dT%H:%M:%SZ", &tm) == 0)
		snprintf(out, cap, "%lld ms", (long long)ms);
}

/* cert list DB [TERMINAL] | cert revoke DB TERMINAL FINGERPRINT [--at TIME] */
static int be_cert(kp_bstore *unused, const struct bargs *a, const char *cmd)
{
	const char *verb = a->n > 0 ? a->pos[0] : "";
	char fp[2 * KP_SHA256_LEN + 1], when[32];
	int64_t at = now_ms(), was = 0;
	kp_bstore *s = NULL;
	int rc;

	if ((strcmp(verb, "list") == 0 && (a->n < 2 || a->n > 3 || a->at != NULL)) ||
	    (strcmp(verb, "revoke") == 0 && a->n != 4) ||
	    (strcmp(verb, "list") != 0 && strcmp(verb, "revoke") != 0))
		return be_usage();
	if (a->n > 2 && kp_ctl_terminal_id(a->pos[2], strcmp(verb, "list") == 0 ?
	                                   "backend cert list: TERMINAL" :
	                                   "backend cert revoke: TERMINAL") != 0)
		return 2;
	if (strcmp(verb, "revoke") == 0 && fingerprint_arg(a->pos[3], fp) != 0) {
		fprintf(stderr, "kippuctl: backend cert revoke: '%.80s' is not a fingerprint: 64 hex "
		        "digits, the SHA-256 of the certificate as kippuctl backend cert list shows "
		        "it; nothing changed\n", a->pos[3]);
		return 2;
	}
	if (a->at != NULL && kp_parse_time(a->at, &at) != KP_OK) {
		fprintf(stderr, "kippuctl: backend cert revoke: --at: '%.40s' is not a time "
		        "(YYYY-MM-DDThh:mm:ssZ, or with +hh:mm, or Unix seconds); nothing changed\n", a->at);
		return 2;
	}
	if (kp_ctl_bstore_open(&s, a->pos[1], strcmp(verb, "list") == 0 ? KP_BSTORE_READONLY :
	                       KP_BSTORE_EXISTING) != KP_BE_OK)
		return 1;
	if (strcmp(verb, "list") == 0) {
		rc = be_result(s, cmd, print_report(s, a, KP_REPORT_CERTS, a->n == 3 ? a->pos[2] :
		                                    NULL, COLS(cert_cols), "(none)"));
		kp_bstore_close(s);
		return rc;
	}
	rc = kp_bstore_cert_revoke(s, a->pos[2], fp, at, now_ms(), &was);
	if (rc != KP_BE_OK) {
		fprintf(stderr, "kippuctl: backend cert revoke: %s; nothing changed\n",
		        kp_bstore_errmsg(s));
	} else {
		time_text(was != 0 ? was : at, when, sizeof(when));
		printf(was != 0 ? "certificate %.16s of terminal %s was revoked already (at %s); "
		       "nothing changed\n" : "certificate %.16s of terminal %s revoked as of %s: "
		       "records its key signed from then on are refused, and so is its hello\n",
		       fp, a->pos[2], when);
	}
	kp_bstore_close(s);
	return rc == KP_BE_OK ? 0 : rc == KP_BE_E_NOTFOUND ? 2 : 1;
}

/* ---- the subcommands on an open database (a->pos[0] is DB) ---- */

static int be_operator(kp_bstore *s, const struct bargs *a, const char *cmd)
{
	if (!kp_valid_id(a->pos[1]))
		return be_usage();
	return be_result(s, cmd, kp_bstore_put_operator(s, a->pos[1], a->pos[2]));
}

static int be_product(kp_bstore *s, const struct bargs *a, const char *cmd)
{
	const char *ops[16];
	size_t n_ops = 0;
	char *list, *save = NULL;
	long rides;
	int rc;

	if (!kp_valid_id(a->pos[1]))
		return be_usage();
	list = strdup(a->pos[3]);
	rides = strtol(a->pos[2], NULL, 10);
	for (char *t = strtok_r(list, ",", &save); t != NULL && n_ops < 16;
	     t = strtok_r(NULL, ",", &save))
		ops[n_ops++] = t;
	if (rides < 1 || rides > 10000 || n_ops == 0 ||
	    (a->category != NULL && !kp_valid_id(a->category))) {
		fprintf(stderr, "kippuctl: rides 1-10000, at least one operator, and --category "
		        "1-32 characters of A-Z a-z 0-9 - _ .\n");
		free(list);
		return 2;
	}
	rc = kp_bstore_put_product_cat(s, a->pos[1], a->pos[4], rides, ops, n_ops, a->category);
	free(list);
	return be_result(s, cmd, rc);
}

static int be_card(kp_bstore *s, const struct bargs *a, const char *cmd)
{
	uint8_t token[KP_TOKEN_LEN];

	if (card_token(a, a->pos[1], token) != 0)
		return 1;
	return be_result(s, cmd, kp_bstore_register_card(s, token, a->label != NULL ? a->label : "",
	                                                 now_ms()));
}

static int be_sell(kp_bstore *s, const struct bargs *a, const char *cmd)
{
	uint8_t token[KP_TOKEN_LEN];
	int64_t from, until, ent = 0, balance = 0;
	char *end = NULL;
	int rc;

	if (card_token(a, a->pos[1], token) != 0)
		return 1;
	if (kp_parse_time(a->pos[3], &from) != KP_OK || kp_parse_time(a->pos[4], &until) != KP_OK ||
	    until <= from) {
		fprintf(stderr, "kippuctl: FROM and UNTIL: ISO 8601 with Z or an offset, "
		        "UNTIL after FROM\n");
		return 2;
	}
	if (a->balance != NULL) {
		errno = 0;
		balance = strtoll(a->balance, &end, 10);
		if (errno != 0 || end == a->balance || *end != '\0' || balance < 1 ||
		    balance > 1000000000000LL) {
			fprintf(stderr, "kippuctl: --balance: 1 to 10^12 minor units\n");
			return 2;
		}
	}
	rc = kp_bstore_sell_ex(s, token, a->pos[2], from, until, balance, a->first_use, now_ms(),
	                       &ent);
	if (rc == KP_BE_OK)
		printf("entitlement %lld: %s sold\n", (long long)ent, a->pos[2]);
	return be_result(s, cmd, rc);
}

static int be_deny(kp_bstore *s, const struct bargs *a, const char *cmd)
{
	uint8_t token[KP_TOKEN_LEN];

	if (card_token(a, a->pos[1], token) != 0)
		return 1;
	if (strcmp(cmd, "undeny") == 0)
		return be_result(s, cmd, kp_bstore_undeny(s, token));
	return be_result(s, cmd, kp_bstore_denylist(s, token, a->pos[2], now_ms()));
}

static int be_load(kp_bstore *s, const struct bargs *a, const char *cmd)
{
	return backend_load(s, a->pos[1], a->pos[1]);
}

static int be_policy(kp_bstore *s, const struct bargs *a, const char *cmd)
{
	return backend_policy(s, (char **)a->pos + 1, a->n - 1);
}

static int be_set(kp_bstore *s, const struct bargs *a, const char *cmd)
{
	return backend_set(s, a->pos + 1, a->n - 1);
}

static int be_service_day(kp_bstore *s, const struct bargs *a, const char *cmd)
{
	int end_s = 0, offset_s = 9 * 3600;

	if (parse_hhmm(a->pos[1], 0, &end_s) != 0 ||
	    (a->n == 3 && parse_hhmm(a->pos[2], 1, &offset_s) != 0)) {
		fprintf(stderr, "kippuctl: service-day DB HH:MM [+HH:MM]\n");
		return 2;
	}
	return be_result(s, cmd, kp_bstore_set_service_day(s, end_s, offset_s));
}

static int be_export(kp_bstore *s, const struct bargs *a, const char *cmd)
{
	return export_records(s, a->pos[1], a->pos[2]);
}

/* The auditor run to completion (PROTOCOL.md section 4.2): exit 1 if a record failed. */
static int be_audit(kp_bstore *s, const struct bargs *a, const char *cmd)
{
	uint64_t audited = 0, failed = 0, n = 0, bad = 0;
	int rc;

	do {
		rc = kp_bstore_audit(s, 256, now_ms(), &n, &bad);
		audited += n;
		failed += bad;
	} while (rc == KP_BE_OK && n > 0);
	if (rc != KP_BE_OK)
		return be_result(s, cmd, rc);
	printf("audited %llu, failed %llu\n", (unsigned long long)audited,
	       (unsigned long long)failed);
	if (failed > 0)
		fprintf(stderr, "kippuctl: %llu record(s) with a bad signature (or a revoked "
		        "certificate's): their terminals are quarantined (kippuctl backend quarantine "
		        "list)\n",
		        (unsigned long long)failed);
	return failed > 0 ? 1 : 0;
}

/* The reports: kippuctl backend NAME DB [--terminal ID] prints a table (or JSON, CSV). */
static const struct report {
	const char *name;
	enum kp_report report;
	int by_terminal;                     /* --terminal narrows it */
	const char *none;                    /* what an empty one prints */
	const struct kp_ctl_col *cols;       /* its columns, as the store names them */
	int ncol;
} reports[] = {
	{ "records", KP_REPORT_RECORDS, 1, "(none)", COLS(record_cols) },
	{ "ledger", KP_REPORT_LEDGER, 1, "(none)", COLS(ledger_cols) },
	{ "terminals", KP_REPORT_TERMINALS, 1, "(none)", COLS(terminal_cols) },
	{ "overdrafts", KP_REPORT_OVERDRAFTS, 1, "(none)", COLS(overdraft_cols) },
	{ "entitlements", KP_REPORT_ENTITLEMENTS, 1, "(none)", COLS(entitlement_cols) },
	{ "journals", KP_REPORT_JOURNALS, 1, "(none)", COLS(journal_cols) },
	{ "certificates", KP_REPORT_CERTS, 1, "(none)", COLS(cert_cols) },
	{ "clones", KP_REPORT_CLONES, 1, "(no possible copies flagged)", COLS(clone_cols) },
	{ "products", KP_REPORT_PRODUCTS, 0, "(none)", COLS(product_cols) },
	{ "fare-rules", KP_REPORT_FARES, 0, "(none)", COLS(fare_rule_cols) },
};

static int be_report(kp_bstore *s, const struct bargs *a, const char *cmd)
{
	for (size_t i = 0; i < sizeof(reports) / sizeof(reports[0]); i++) {
		const struct report *r = &reports[i];

		if (strcmp(cmd, r->name) != 0)
			continue;
		return be_result(s, cmd, print_report(s, a, r->report, r->by_terminal ? a->terminal :
		                                      NULL, r->cols, r->ncol, r->none));
	}
	return be_usage();      /* not reached: backend_cmd_find found cmd in reports[] */
}

/* The subcommands: NAME [SUB], how many arguments follow NAME (DB included), and whether the
 * handler opens the database itself (then it also checks its own arguments). Others get
 * the database a->pos[0], opened after the names and reasons they carry were checked. */
static const struct backend_cmd {
	const char *name, *sub;
	int min, max;
	int own_db;
	int db_mode;                         /* kp_bstore_open_mode's, when not own_db */
	int (*run)(kp_bstore *s, const struct bargs *a, const char *cmd);
} backend_cmds[] = {
	{ "fares", NULL, 1, 64, 1, 0, be_fares },
	{ "quarantine", NULL, 1, 64, 1, 0, be_quarantine },
	{ "clones", "clear", 1, 64, 1, 0, be_clones_clear },
	{ "terminal", NULL, 1, 64, 1, 0, be_terminal },
	{ "cert", NULL, 1, 64, 1, 0, be_cert },
	{ "operator", NULL, 3, 3, 0, KP_BSTORE_CREATE, be_operator },
	{ "product", NULL, 5, 5, 0, KP_BSTORE_CREATE, be_product },
	{ "card", NULL, 2, 2, 0, KP_BSTORE_CREATE, be_card },
	{ "sell", NULL, 5, 5, 0, KP_BSTORE_CREATE, be_sell },
	{ "deny", NULL, 3, 3, 0, KP_BSTORE_CREATE, be_deny },
	{ "undeny", NULL, 2, 2, 0, KP_BSTORE_EXISTING, be_deny },
	{ "load", NULL, 2, 2, 0, KP_BSTORE_CREATE, be_load },
	{ "policy", NULL, 1, 64, 0, KP_BSTORE_CREATE, be_policy },
	{ "set", NULL, 3, 64, 0, KP_BSTORE_CREATE, be_set },
	{ "service-day", NULL, 2, 3, 0, KP_BSTORE_CREATE, be_service_day },
	{ "export", NULL, 3, 3, 0, KP_BSTORE_READONLY, be_export },
	{ "audit", NULL, 1, 1, 0, KP_BSTORE_EXISTING, be_audit },
};

/* The row of a report (reports[]): every report takes DB alone. */
static const struct backend_cmd report_cmd = { "", NULL, 1, 1, 0, KP_BSTORE_READONLY,
                                                 be_report };

static const struct backend_cmd *backend_cmd_find(const char *name, const struct bargs *a)
{
	for (size_t i = 0; i < sizeof(backend_cmds) / sizeof(backend_cmds[0]); i++) {
		const struct backend_cmd *c = &backend_cmds[i];

		if (strcmp(name, c->name) == 0 && (c->sub == NULL || strcmp(a->pos[0], c->sub) == 0))
			return c;
	}
	for (size_t i = 0; i < sizeof(reports) / sizeof(reports[0]); i++) {
		if (strcmp(name, reports[i].name) == 0)
			return &report_cmd;
	}
	return NULL;
}

int kp_ctl_backend(int argc, char **argv)
{
	const struct backend_cmd *c;
	struct bargs a;
	kp_bstore *s = NULL;
	int exit_code;

	if (argc < 2 || parse(argc - 1, argv + 1, &a) != 0 || a.n < 1)
		return be_usage();
	if (kp_ctl_out_format(&a.fmt, &a.format) != 0)
		return 2;
	c = backend_cmd_find(argv[1], &a);
	if (a.format != KP_OUT_HUMAN && c != &report_cmd &&
	    (c == NULL || (c->run != be_fares && c->run != be_quarantine && c->run != be_cert) ||
	     strcmp(a.pos[0], "list") != 0)) {
		fprintf(stderr, "kippuctl: backend %s: --json and --csv are for listings (reports, "
		        "fares list, quarantine list, cert list)\n", argv[1]);
		return 2;
	}
	if (c != NULL && c->own_db)
		return c->run(NULL, &a, argv[1]);
	if (text_arg_bad(argv[1], &a))
		return 2;
	/* An unknown subcommand, or one with the wrong number of arguments, is told so only
	 * once DB opened (as it always was); only the commands that add to a database make
	 * one, the reports and export never do. */
	if (kp_ctl_bstore_open(&s, a.pos[0], c == NULL ? KP_BSTORE_EXISTING :
	                       c->run == be_policy && a.n == 1 ? KP_BSTORE_READONLY : c->db_mode) !=
	    KP_BE_OK)
		return 1;
	if (c == NULL || a.n < c->min || a.n > c->max)
		exit_code = be_usage();
	else
		exit_code = c->run(s, &a, argv[1]);
	kp_bstore_close(s);
	return exit_code;
}
