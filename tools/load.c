/* SPDX-License-Identifier: Apache-2.0 */
/* Load files: operators, products, entitlements and denylist entries for a terminal's
 * store, as text an operator can write and review. The whole file is one transaction. */
#include <ctype.h>
#include <errno.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "kp_civil.h"
#include "kp_tools.h"

int kp_parse_time(const char *s, int64_t *ms)
{
	int offset_s;

	return kp_parse_time_offset(s, ms, &offset_s);
}

int kp_parse_validity(const char *not_before, int days, int default_days, int64_t *nb_s,
                      int64_t *na_s)
{
	int64_t from = (int64_t)time(NULL), ms;

	if (not_before != NULL) {
		if (kp_parse_time(not_before, &ms) != KP_OK)
			return KP_E_INVAL;
		from = ms / 1000;
	}
	*nb_s = not_before != NULL ? from : from - 86400;
	*na_s = from + (int64_t)(days != 0 ? days : default_days) * 86400;
	return *na_s <= 253402300799LL ? KP_OK : KP_E_INVAL;     /* X.509 ends at 9999-12-31 */
}

int kp_parse_time_offset(const char *s, int64_t *ms, int *offset_s)
{
	return kp_time_parse(s, ms, offset_s) == 0 ? KP_OK : KP_E_INVAL;
}

int kp_parse_card(const char *s, const uint8_t token_key[KP_TOKEN_KEY_LEN],
                  uint8_t token[KP_TOKEN_LEN])
{
	uint8_t idm[8];

	if (strncmp(s, "token:", 6) == 0)
		return kp_unhex(s + 6, token, KP_TOKEN_LEN);
	if (strncmp(s, "felica:", 7) == 0) {
		if (kp_unhex(s + 7, idm, sizeof(idm)) != KP_OK)
			return KP_E_INVAL;
		return kp_token_derive(token_key, "felica", idm, sizeof(idm), token) == 0 ?
		       KP_OK : KP_E_INVAL;
	}
	return KP_E_INVAL;
}

#define MAX_FIELDS 8

/* Splits on blanks into at most max-1 fields; the last field takes the rest of the line. */
static size_t split(char *line, char **f, size_t max)
{
	size_t n = 0;
	char *p = line;

	while (n < max) {
		while (*p == ' ' || *p == '\t')
			p++;
		if (*p == '\0')
			break;
		if (n == max - 1) {
			char *end = p + strlen(p);

			while (end > p && isspace((unsigned char)end[-1]))
				*--end = '\0';
			f[n++] = p;
			break;
		}
		f[n++] = p;
		while (*p != '\0' && *p != ' ' && *p != '\t')
			p++;
		if (*p != '\0')
			*p++ = '\0';
	}
	return n;
}

static int parse_int(const char *s, int64_t min, int64_t max, int64_t *out)
{
	char *end;
	long long v;

	errno = 0;
	v = strtoll(s, &end, 10);
	if (errno != 0 || end == s || *end != '\0' || v < min || v > max)
		return KP_E_INVAL;
	*out = v;
	return KP_OK;
}

/* A name or reason as the bundle carries it (kp_bundle_text_check: one rule for the
 * backend, its bundle and load files). */
static bool text_bad(const char *field, const char *text, char *msg, size_t msg_cap,
                     const char **why)
{
	if (kp_bundle_text_check(field, text, msg, msg_cap) == KP_SYNC_OK)
		return false;
	*why = msg;
	return true;
}

/* What a directive's handler gets: the store, the token key for cards, and where to put
 * the reason a line is refused (msg is scratch space for a reason built on the spot). */
struct load_ctx {
	kp_store *s;
	const uint8_t *token_key;
	const char **why;
	char *msg;
	size_t msg_cap;
};

/* The store's answer to a line, with its own message as the reason. */
static int stored(const struct load_ctx *c, int rc)
{
	*c->why = kp_store_errmsg(c->s);
	return rc;
}

/* KP_E_PARSE with "operator OP-A is not defined above" when the store has no such operator
 * (product: 0) or product (1): a line above, or an earlier load, defines it. */
static int need_defined(const struct load_ctx *c, int product, const char *id)
{
	int found = 0, rc = kp_store_defined(c->s, product, id, &found);

	if (rc != KP_OK)
		return stored(c, rc);
	if (found)
		return KP_OK;
	snprintf(c->msg, c->msg_cap, "%s %s is not defined above", product ? "product" : "operator",
	         id);
	*c->why = c->msg;
	return KP_E_PARSE;
}

/* need_defined for each of a product's operators. */
static int ops_defined(const struct load_ctx *c, const char *const *ops, size_t n_ops)
{
	for (size_t i = 0; i < n_ops; i++) {
		if (need_defined(c, 0, ops[i]) != KP_OK)
			return KP_E_PARSE;
	}
	return KP_OK;
}

/* OPERATOR[,OPERATOR...] into ops (1 to 16 ids); KP_E_PARSE with the reason. */
static int operator_list(const struct load_ctx *c, char *list, const char *ops[16],
                         size_t *n_ops)
{
	char *save = NULL;

	*c->why = "operators: 1 to 16 comma-separated ids";
	*n_ops = 0;
	for (char *tok = strtok_r(list, ",", &save); tok != NULL; tok = strtok_r(NULL, ",", &save)) {
		if (*n_ops == 16 || !kp_valid_id(tok))
			return KP_E_PARSE;
		ops[(*n_ops)++] = tok;
	}
	return *n_ops == 0 ? KP_E_PARSE : KP_OK;
}

static int line_operator(const struct load_ctx *c, char **f)
{
	size_t n = split(f[1], f + 1, 2) + 1;

	*c->why = "usage: operator ID NAME";
	if (n != 3 || !kp_valid_id(f[1]))
		return KP_E_PARSE;
	if (text_bad("NAME", f[2], c->msg, c->msg_cap, c->why))
		return KP_E_PARSE;
	return stored(c, kp_store_put_operator(c->s, f[1], f[2]));
}

/* product ID commuter OPERATOR[,OPERATOR...] ROUTE|* STOP,STOP[,STOP...] NAME: f[3] holds
 * what follows the kind. */
static int product_commuter(const struct load_ctx *c, char **f)
{
	const char *stops[KP_COMMUTER_MAX_STOPS], *ops[16];
	size_t n_stops = 0, n_ops = 0;
	char *save = NULL;

	*c->why = "usage: product ID commuter OPERATOR[,OPERATOR...] ROUTE|* STOP,STOP[,STOP...] NAME";
	if (split(f[3], f + 3, 4) != 4)
		return KP_E_PARSE;
	*c->why = "commuter: 2 to 64 comma-separated stops, in route order";
	for (char *tok = strtok_r(f[5], ",", &save); tok != NULL; tok = strtok_r(NULL, ",", &save)) {
		if (n_stops == KP_COMMUTER_MAX_STOPS || strlen(tok) > KP_ID_MAX)
			return KP_E_PARSE;
		stops[n_stops++] = tok;
	}
	if (n_stops < 2)
		return KP_E_PARSE;
	if (operator_list(c, f[3], ops, &n_ops) != KP_OK ||
	    text_bad("NAME", f[6], c->msg, c->msg_cap, c->why) || ops_defined(c, ops, n_ops) != KP_OK)
		return KP_E_PARSE;
	return stored(c, kp_store_put_product_commuter(c->s, f[1], f[6], f[4], stops, n_stops, ops,
	                                               n_ops));
}

static int line_product(const struct load_ctx *c, char **f)
{
	const char *ops[16];
	size_t n, n_ops = 0;
	int64_t rides = 0, days = 0;
	int is_stored;

	*c->why = "usage: product ID nride RIDES OPERATOR[,OPERATOR...] NAME"
	          " | product ID period DAYS OPERATOR[,OPERATOR...] NAME"
	          " | product ID stored OPERATOR[,OPERATOR...] NAME"
	          " | product ID commuter OPERATOR[,OPERATOR...] ROUTE|* STOP,STOP[,STOP...] NAME";
	/* ID KIND, then the rest by the kind's rule (stored value has no RIDES). */
	n = split(f[1], f + 1, 3) + 1;
	if (n != 4 || !kp_valid_id(f[1]))
		return KP_E_PARSE;
	if (strcmp(f[2], "commuter") == 0)
		return product_commuter(c, f);
	is_stored = strcmp(f[2], "stored") == 0;
	if (is_stored) {
		if (split(f[3], f + 4, 2) != 2)
			return KP_E_PARSE;
	} else if (strcmp(f[2], "period") == 0) {
		if (split(f[3], f + 3, 3) != 3)
			return KP_E_PARSE;
		*c->why = "period days must be 1 to 366 (a monthly pass is 30)";
		if (parse_int(f[3], 1, 366, &days) != KP_OK)
			return KP_E_PARSE;
	} else {
		if (strcmp(f[2], "nride") != 0 || split(f[3], f + 3, 3) != 3)
			return KP_E_PARSE;
		*c->why = "rides must be 1 to 10000";
		if (parse_int(f[3], 1, 10000, &rides) != KP_OK)
			return KP_E_PARSE;
	}
	if (operator_list(c, f[4], ops, &n_ops) != KP_OK ||
	    text_bad("NAME", f[5], c->msg, c->msg_cap, c->why) || ops_defined(c, ops, n_ops) != KP_OK)
		return KP_E_PARSE;
	if (is_stored)
		return stored(c, kp_store_put_product_stored(c->s, f[1], f[5], ops, n_ops));
	if (days > 0)
		return stored(c, kp_store_put_product_period(c->s, f[1], f[5], (int)days, ops, n_ops));
	return stored(c, kp_store_put_product(c->s, f[1], f[5], (int)rides, ops, n_ops));
}

static int line_entitlement(const struct load_ctx *c, char **f)
{
	struct kp_entitlement e;
	size_t n;
	int taken = 0, rc;

	memset(&e, 0, sizeof(e));
	*c->why = "usage: entitlement ID CARD PRODUCT RIDES_LEFT|BALANCE|first-use VALID_FROM"
	          " VALID_UNTIL";
	n = split(f[1], f + 1, 7) + 1;
	if (n != 7 || strpbrk(f[6], " \t") != NULL)
		return KP_E_PARSE;
	*c->why = "entitlement id must be 1 to 2^53";
	if (parse_int(f[1], 1, 9007199254740992LL, &e.id) != KP_OK)
		return KP_E_PARSE;
	*c->why = "card must be felica:<16 hex digits> or token:<32 hex digits>";
	if (kp_parse_card(f[2], c->token_key, e.token) != KP_OK)
		return KP_E_PARSE;
	rc = kp_store_entitlement_id_taken(c->s, e.id, e.token, &taken);
	*c->why = rc != KP_OK ? kp_store_errmsg(c->s) :
	          "entitlement id is already another card's (an id names one entitlement)";
	if (rc != KP_OK || taken)
		return rc != KP_OK ? rc : KP_E_PARSE;
	*c->why = "bad product id";
	if (!kp_valid_id(f[3]))
		return KP_E_PARSE;
	snprintf(e.product, sizeof(e.product), "%s", f[3]);
	if (need_defined(c, 1, e.product) != KP_OK)
		return KP_E_PARSE;
	if (strcmp(f[4], "first-use") == 0) {
		int days = 0;

		/* A period pass that starts at its first tap between the two times. */
		*c->why = "first-use: the product must be a period pass";
		if (kp_store_product_period(c->s, e.product, &days) != KP_OK || days == 0)
			return KP_E_PARSE;
		e.first_use = 1;
	} else {
		*c->why = "rides left must be 0 to 10000 (a stored-value balance: 0 to 10^12 minor units)";
		if (parse_int(f[4], 0, 1000000000000LL, &e.rides_left) != KP_OK)
			return KP_E_PARSE;
	}
	if (e.rides_left > 10000) {
		int is_stored = 0;

		if (kp_store_product_stored(c->s, e.product, &is_stored) != KP_OK || !is_stored)
			return KP_E_PARSE;
	}
	*c->why = "times must be ISO 8601 with Z or an offset (2026-11-26T04:00:00+09:00), "
	          "or Unix seconds";
	if (kp_parse_time(f[5], &e.valid_from_ms) != KP_OK ||
	    kp_parse_time(f[6], &e.valid_until_ms) != KP_OK)
		return KP_E_PARSE;
	*c->why = "valid_until must be after valid_from";
	if (e.valid_until_ms <= e.valid_from_ms)
		return KP_E_PARSE;
	return stored(c, kp_store_put_entitlement(c->s, &e));
}

static int line_denylist(const struct load_ctx *c, char **f)
{
	uint8_t token[KP_TOKEN_LEN];
	size_t n;

	*c->why = "usage: denylist CARD REASON";
	n = split(f[1], f + 1, 2) + 1;
	if (n != 3)
		return KP_E_PARSE;
	*c->why = "card must be felica:<16 hex digits> or token:<32 hex digits>";
	if (kp_parse_card(f[1], c->token_key, token) != KP_OK ||
	    text_bad("REASON", f[2], c->msg, c->msg_cap, c->why))
		return KP_E_PARSE;
	return stored(c, kp_store_put_denylist(c->s, token, f[2], (int64_t)time(NULL) * 1000));
}

static int line_product_category(const struct load_ctx *c, char **f)
{
	size_t n;

	*c->why = "usage: product-category PRODUCT CATEGORY (the product is for that rider category only)";
	n = split(f[1], f + 1, 3) + 1;
	if (n != 3 || !kp_valid_id(f[1]) || !kp_valid_id(f[2]))
		return KP_E_PARSE;
	return stored(c, kp_store_run_product_category(c->s, f[1], f[2]));
}

static int line_eligibility(const struct load_ctx *c, char **f)
{
	uint8_t token[KP_TOKEN_LEN], via[KP_TOKEN_LEN];
	int64_t from, until;
	size_t n;

	*c->why = "usage: eligibility CARD CATEGORY FROM UNTIL [via:CARD]";
	n = split(f[1], f + 1, 6) + 1;
	if (n < 5 || n > 6)
		return KP_E_PARSE;
	*c->why = "card must be felica:<16 hex digits> or token:<32 hex digits>";
	if (kp_parse_card(f[1], c->token_key, token) != KP_OK ||
	    (n == 6 && (strncmp(f[5], "via:", 4) != 0 ||
	                kp_parse_card(f[5] + 4, c->token_key, via) != KP_OK)))
		return KP_E_PARSE;
	*c->why = "category: 1-32 of A-Z a-z 0-9 - _ .";
	if (!kp_valid_id(f[2]))
		return KP_E_PARSE;
	*c->why = "times must be ISO 8601 with Z or an offset, UNTIL after FROM";
	if (kp_parse_time(f[3], &from) != KP_OK || kp_parse_time(f[4], &until) != KP_OK ||
	    until <= from)
		return KP_E_PARSE;
	return stored(c, kp_store_put_eligibility(c->s, token, f[2], from, until,
	                                          n == 6 ? via : NULL));
}

static int line_discount(const struct load_ctx *c, char **f)
{
	static const char *const roundings[] = { "down", "up", "nearest" };
	struct kp_discount d = { 0, KP_ROUND_DOWN, 1 };
	int64_t v = 0;
	size_t n, r;

	*c->why = "usage: discount OPERATOR CATEGORY PERCENT down|up|nearest UNIT";
	n = split(f[1], f + 1, 6) + 1;
	if (n != 6 || strpbrk(f[5], " \t") != NULL)
		return KP_E_PARSE;
	*c->why = "operator and category: 1-32 of A-Z a-z 0-9 - _ .";
	if (!kp_valid_id(f[1]) || !kp_valid_id(f[2]))
		return KP_E_PARSE;
	*c->why = "percent (the share of the adult fare paid) must be 0 to 100";
	if (parse_int(f[3], 0, 100, &v) != KP_OK)
		return KP_E_PARSE;
	d.percent = (int)v;
	*c->why = "rounding must be down, up or nearest";
	for (r = 0; r < 3 && strcmp(f[4], roundings[r]) != 0; r++)
		;
	if (r == 3)
		return KP_E_PARSE;
	d.rounding = (enum kp_rounding)r;
	*c->why = "unit (the step in minor units) must be 1 to 100000";
	if (parse_int(f[5], 1, 100000, &d.unit) != KP_OK)
		return KP_E_PARSE;
	return stored(c, kp_store_put_discount(c->s, f[1], f[2], &d));
}

static int line_product_scope(const struct load_ctx *c, char **f)
{
	char *tok, *save = NULL;
	size_t n;
	int rc = KP_OK;

	*c->why = "usage: product-scope PRODUCT route|network ID[,ID...] (GTFS route or network ids)";
	n = split(f[1], f + 1, 4) + 1;
	if (n != 4 || !kp_valid_id(f[1]) ||
	    (strcmp(f[2], "route") != 0 && strcmp(f[2], "network") != 0))
		return KP_E_PARSE;
	if (need_defined(c, 1, f[1]) != KP_OK)
		return KP_E_PARSE;
	for (tok = strtok_r(f[3], ",", &save); rc == KP_OK && tok != NULL;
	     tok = strtok_r(NULL, ",", &save)) {
		rc = kp_store_put_product_scope(c->s, f[1], f[2], tok);
		*c->why = rc == KP_E_INVAL ? "route and network ids: 1-32 bytes" :
		          kp_store_errmsg(c->s);
	}
	return rc;
}

static int line_fares(const struct load_ctx *c, char **f)
{
	size_t n;

	*c->why = "usage: fares OPERATOR FEED flat|distance";
	n = split(f[1], f + 1, 4) + 1;
	if (n != 4 || !kp_valid_id(f[1]) || !kp_valid_id(f[2]) ||
	    (strcmp(f[3], "flat") != 0 && strcmp(f[3], "distance") != 0))
		return KP_E_PARSE;
	return stored(c, kp_store_put_operator_fare(c->s, f[1], f[2],
	                                            strcmp(f[3], "distance") == 0));
}

static int line_cap(const struct load_ctx *c, char **f)
{
	int64_t amount = 0;
	size_t n;

	*c->why = "usage: cap CATEGORY|- day|month AMOUNT (minor units, 0 to 10^12)";
	n = split(f[1], f + 1, 4) + 1;
	if (n != 4 || (strcmp(f[1], "-") != 0 && !kp_valid_id(f[1])) ||
	    (strcmp(f[2], "day") != 0 && strcmp(f[2], "month") != 0) ||
	    parse_int(f[3], 0, 1000000000000LL, &amount) != KP_OK)
		return KP_E_PARSE;
	return stored(c, kp_store_put_fare_cap(c->s, strcmp(f[1], "-") == 0 ? "" : f[1],
	                                       strcmp(f[2], "day") == 0 ? KP_CAP_DAY : KP_CAP_MONTH,
	                                       amount));
}

static int line_transfer(const struct load_ctx *c, char **f)
{
	struct kp_transfer_rule r;
	int64_t minutes = 0, max = 0, off = 0;
	size_t n;

	memset(&r, 0, sizeof(r));
	*c->why = "usage: transfer FROM_OPERATOR|* TO_OPERATOR|* MINUTES MAX free|off AMOUNT";
	n = split(f[1], f + 1, 7) + 1;
	if (n < 6 || n > 7 || (strcmp(f[1], "*") != 0 && !kp_valid_id(f[1])) ||
	    (strcmp(f[2], "*") != 0 && !kp_valid_id(f[2])))
		return KP_E_PARSE;
	*c->why = "transfer: MINUTES 1 to 1440, MAX transfers in a row 1 to 100";
	if (parse_int(f[3], 1, 1440, &minutes) != KP_OK || parse_int(f[4], 1, 100, &max) != KP_OK)
		return KP_E_PARSE;
	*c->why = "transfer: free, or off AMOUNT (minor units, 0 to 10^12)";
	if (strcmp(f[5], "free") == 0 && n == 6)
		off = -1;
	else if (strcmp(f[5], "off") != 0 || n != 7 ||
	         parse_int(f[6], 0, 1000000000000LL, &off) != KP_OK)
		return KP_E_PARSE;
	snprintf(r.from_operator, sizeof(r.from_operator), "%s", f[1]);
	snprintf(r.to_operator, sizeof(r.to_operator), "%s", f[2]);
	r.within_s = (int)minutes * 60;
	r.max_transfers = (int)max;
	r.off = off;
	return stored(c, kp_store_put_transfer_rule(c->s, &r));
}

/* The kinds of line: a new directive is a row here and a handler above. */
static const struct line_kind {
	const char *directive;
	int (*handle)(const struct load_ctx *c, char **f);
} line_kinds[] = {
	{ "operator", line_operator },
	{ "product", line_product },
	{ "entitlement", line_entitlement },
	{ "denylist", line_denylist },
	{ "product-category", line_product_category },
	{ "eligibility", line_eligibility },
	{ "discount", line_discount },
	{ "product-scope", line_product_scope },
	{ "fares", line_fares },
	{ "cap", line_cap },
	{ "transfer", line_transfer },
};

static int load_line(kp_store *s, char *line, const uint8_t token_key[KP_TOKEN_KEY_LEN],
                     const char **why, char *msg, size_t msg_cap)
{
	const struct load_ctx c = { s, token_key, why, msg, msg_cap };
	char *f[MAX_FIELDS];
	size_t n = split(line, f, 2);        /* directive, then the rest by its own rule */

	if (n == 0)
		return KP_OK;
	if (n == 1)
		f[1] = f[0] + strlen(f[0]);  /* empty rest */
	for (size_t i = 0; i < sizeof(line_kinds) / sizeof(line_kinds[0]); i++) {
		if (strcmp(f[0], line_kinds[i].directive) == 0)
			return line_kinds[i].handle(&c, f);
	}
	*why = "unknown directive (operator, product, product-category, entitlement, eligibility, "
	       "discount, fares, cap, transfer, product-scope, denylist)";
	return KP_E_PARSE;
}

int kp_load_file(kp_store *s, const char *path, const uint8_t token_key[KP_TOKEN_KEY_LEN],
                 char *err, size_t err_cap, size_t *n_lines)
{
	char line[2048];
	int lineno = 0, rc;
	FILE *fp = fopen(path, "r");

	*n_lines = 0;
	if (fp == NULL) {
		snprintf(err, err_cap, "%s: %s", path, strerror(errno));
		return KP_E_IO;
	}
	rc = kp_store_begin(s);
	if (rc != KP_OK) {
		snprintf(err, err_cap, "%s: %s", path, kp_store_errmsg(s));
		fclose(fp);
		return rc;
	}
	while (fgets(line, sizeof(line), fp) != NULL) {
		const char *why = "";
		char msg[200], *hash;

		lineno++;
		if (strchr(line, '\n') == NULL && !feof(fp)) {
			snprintf(err, err_cap, "%s:%d: line too long", path, lineno);
			rc = KP_E_PARSE;
			break;
		}
		hash = strchr(line, '#');
		if (hash != NULL)
			*hash = '\0';
		line[strcspn(line, "\r\n")] = '\0';
		rc = load_line(s, line, token_key, &why, msg, sizeof(msg));
		if (rc != KP_OK) {
			snprintf(err, err_cap, "%s:%d: %s", path, lineno, why);
			break;
		}
		(*n_lines)++;
	}
	fclose(fp);
	if (rc == KP_OK)
		rc = kp_store_commit(s);
	if (rc != KP_OK) {
		kp_store_rollback(s);
		*n_lines = 0;
		if (err[0] == '\0')
			snprintf(err, err_cap, "%s: %s", path, kp_store_errmsg(s));
	}
	return rc;
}

int kp_ctl_store_open(kp_store **s, const char *path)
{
	return kp_ctl_store_open_mode(s, path, KP_STORE_CREATE);
}

int kp_ctl_store_open_mode(kp_store **s, const char *path, int mode)
{
	char err[600];
	int rc = kp_store_open_mode(s, path, mode, err, sizeof(err));

	if (rc != KP_OK)
		fprintf(stderr, "kippuctl: %s\n", err);
	return rc;
}
