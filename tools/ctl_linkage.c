/* SPDX-License-Identifier: Apache-2.0 */
/* kippuctl linkage ...: My Number linkage at the backend (GunMaaS-style resident categories).
 * A linkage is known only by its linkage token, kp_linkage_token of the card's
 * user-authentication certificate and the JPKI CA that issued it: this tool reads such a
 * certificate to compute the token and never prints, stores or logs the serial or a name. */
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "kp_backend.h"
#include "kp_tools.h"

static const char usage_text[] =
	"  kippuctl linkage add DB LINKAGE CATEGORY FROM UNTIL [--card CARD]... --token-key PATH\n"
	"                   [--jpki-ca CA[,CA...]]\n"
	"  kippuctl linkage revoke DB LINKAGE [--token-key PATH] [--jpki-ca CA[,CA...]]\n"
	"  kippuctl linkage link DB LINKAGE CARD --token-key PATH [--jpki-ca CA[,CA...]]\n"
	"  kippuctl linkage list DB [--at TIME] [--json|--csv]   (status as of TIME, default now)\n"
	"  kippuctl linkage cards DB [--json|--csv]\n"
	"  kippuctl linkage requests DB [--terminal ID] [--json|--csv]\n"
	"  kippuctl linkage token --token-key PATH --cert AUTH.der --jpki-ca CA[,CA...]\n"
	"      (LINKAGE = token:<32 hex> or jpki:<user-authentication certificate, DER or PEM>;\n"
	"       jpki: needs --jpki-ca, the JPKI CA certificate(s) the terminals' jpki_ca names)\n";

void kp_ctl_linkage_usage(FILE *fp)
{
	fputs(usage_text, fp);
}

#define MAX_CARDS 16
#define MAX_POS   8

struct largs {
	const char *token_key, *cert, *terminal, *at, *jpki_ca;
	const char *cards[MAX_CARDS];
	int n_cards;
	struct kp_ctl_fmt fmt;
	int n;
	const char *pos[MAX_POS];
};

#define OPT(name, field, help) { name, KP_CTL_STR, offsetof(struct largs, field), 0, 0, 0, help }
static const struct kp_ctl_opt linkage_opts[] = {
	OPT("token-key", token_key, "the card token key"),
	OPT("cert", cert, "a card's user-authentication certificate (token)"),
	OPT("jpki-ca", jpki_ca, "the JPKI CA certificate(s), comma-separated"),
	{ "card", KP_CTL_LIST, offsetof(struct largs, cards), 0, MAX_CARDS,
	  offsetof(struct largs, n_cards), "a card to link (add), repeated" },
	OPT("terminal", terminal, "one terminal's requests only"),
	OPT("at", at, "status as of TIME (list)"),
	KP_CTL_OUT_OPTS(struct largs, fmt),
	{ NULL, 0, 0, 0, 0, 0, NULL },
};
#undef OPT

static int parse(int argc, char **argv, struct largs *a)
{
	struct kp_ctl_pos pos = { a->pos, MAX_POS, 0, NULL };

	memset(a, 0, sizeof(*a));
	if (kp_ctl_parse(argc, argv, linkage_opts, a, &pos) != 0)
		return -1;
	a->n = pos.n;
	return 0;
}

/* The token key, loaded once; the caller wipes it. */
static int need_key(const struct largs *a, const char *what, uint8_t key[KP_TOKEN_KEY_LEN],
                    int *have)
{
	if (*have)
		return 0;
	if (kp_ctl_token_key(a->token_key, what, key) != 0)
		return -1;
	*have = 1;
	return 0;
}

#define MAX_JPKI_CAS 8

/* The linkage token of a user-authentication certificate (kp_linkage_token): bound to the
 * configured CA that signed it, so the certificate must be a card's and chain to one of
 * --jpki-ca (its dates are not looked at: an expired card still names its linkage). */
static int cert_linkage_token(const uint8_t key[KP_TOKEN_KEY_LEN], const char *path,
                              const char *ca_list, uint8_t token[KP_TOKEN_LEN])
{
	kp_cert *cert = NULL, *cas[MAX_JPKI_CAS] = { NULL };
	char list[1024], err[256], *save = NULL;
	size_t n_cas = 0, issuer = 0;
	int rc = -1;

	if (ca_list == NULL || ca_list[0] == '\0') {
		fprintf(stderr, "kippuctl: a certificate's linkage token needs --jpki-ca CA[,CA...]: "
		        "the token is bound to the JPKI CA that issued the card\n");
		return -1;
	}
	if ((size_t)snprintf(list, sizeof(list), "%s", ca_list) >= sizeof(list)) {
		fprintf(stderr, "kippuctl: --jpki-ca: list too long\n");
		return -1;
	}
	for (char *p = strtok_r(list, ",", &save); p != NULL; p = strtok_r(NULL, ",", &save)) {
		if (n_cas == MAX_JPKI_CAS) {
			fprintf(stderr, "kippuctl: --jpki-ca: at most %d certificates\n", MAX_JPKI_CAS);
			goto out;
		}
		if (kp_ctl_readable("JPKI CA certificate", p) != 0)
			goto out;
		if (kp_cert_load(&cas[n_cas], p) != 0) {
			fprintf(stderr, "kippuctl: --jpki-ca %s: cannot load the certificate\n", p);
			goto out;
		}
		n_cas++;
	}
	if (kp_ctl_readable("card certificate", path) != 0)
		goto out;
	if (kp_cert_load(&cert, path) != 0) {
		fprintf(stderr, "kippuctl: %s: not a certificate (DER or PEM)\n", path);
		goto out;
	}
	if (kp_jpki_check_card(cert, (const kp_cert *const *)cas, n_cas, INT64_MIN, &issuer, err,
	                       sizeof(err)) != KP_OK) {
		fprintf(stderr, "kippuctl: %s: not a My Number card's certificate from --jpki-ca: %s\n",
		        path, err);
		goto out;
	}
	if (kp_linkage_token(key, cas[issuer], cert, token) != KP_OK) {
		fprintf(stderr, "kippuctl: %s: no usable serial number\n", path);
		goto out;
	}
	rc = 0;
out:
	kp_cert_free(cert);
	for (size_t i = 0; i < n_cas; i++)
		kp_cert_free(cas[i]);
	return rc;
}

/* LINKAGE: token:<32 hex> or jpki:<certificate file>. */
static int linkage_arg(const struct largs *a, const char *s, uint8_t key[KP_TOKEN_KEY_LEN],
                       int *have_key, uint8_t token[KP_TOKEN_LEN])
{
	if (strncmp(s, "token:", 6) == 0) {
		if (kp_unhex(s + 6, token, KP_TOKEN_LEN) != KP_OK) {
			fprintf(stderr, "kippuctl: LINKAGE token: must be 32 hex digits\n");
			return -1;
		}
		return 0;
	}
	if (strncmp(s, "jpki:", 5) == 0 && s[5] != '\0') {
		if (need_key(a, "a certificate", key, have_key) != 0)
			return -1;
		return cert_linkage_token(key, s + 5, a->jpki_ca, token);
	}
	fprintf(stderr, "kippuctl: LINKAGE must be token:<32 hex digits> or jpki:<AUTH.der>\n");
	return -1;
}

/* CARD: felica:<IDm> or token:<32 hex>, as everywhere else. */
static int card_arg(const struct largs *a, const char *s, uint8_t key[KP_TOKEN_KEY_LEN],
                    int *have_key, uint8_t token[KP_TOKEN_LEN])
{
	if (strncmp(s, "token:", 6) != 0 && need_key(a, s, key, have_key) != 0)
		return -1;
	if (kp_parse_card(s, key, token) != KP_OK) {
		fprintf(stderr, "kippuctl: card must be felica:<16 hex digits> or token:<32 hex digits>\n");
		return -1;
	}
	return 0;
}

static int64_t now_ms(void)
{
	return (int64_t)time(NULL) * 1000;
}

static int col_width(const char *name)
{
	if (strcmp(name, "token") == 0 || strcmp(name, "linkage") == 0 || strcmp(name, "card") == 0)
		return 32;
	if (strcmp(name, "valid_from") == 0 || strcmp(name, "valid_until") == 0 ||
	    strcmp(name, "linked") == 0 || strcmp(name, "at") == 0)
		return 20;
	if (strcmp(name, "reason") == 0 || strcmp(name, "source") == 0)
		return 16;
	return strlen(name) > 8 ? (int)strlen(name) : 8;
}

/* The listings' columns (README, "Listings as JSON and CSV"), as the store names them. */
static const struct kp_ctl_col list_cols[] = {
	{ "token", KP_COL_TEXT, NULL }, { "category", KP_COL_TEXT, NULL },
	{ "valid_from", KP_COL_TIME, NULL }, { "valid_until", KP_COL_TIME, NULL },
	{ "status", KP_COL_TEXT, NULL }, { "cards", KP_COL_INT, NULL },
};
static const struct kp_ctl_col cards_cols[] = {
	{ "linkage", KP_COL_TEXT, NULL }, { "card", KP_COL_TEXT, NULL },
	{ "linked", KP_COL_TIME, NULL }, { "source", KP_COL_TEXT, NULL },
};
static const struct kp_ctl_col requests_cols[] = {
	{ "terminal", KP_COL_TEXT, NULL }, { "seq", KP_COL_INT, NULL },
	{ "linkage", KP_COL_TEXT, "-" }, { "card", KP_COL_TEXT, "-" },
	{ "result", KP_COL_TEXT, NULL }, { "reason", KP_COL_TEXT, NULL },
	{ "at", KP_COL_TIME, NULL },
};
#define NCOL(a) ((int)(sizeof(a) / sizeof(a[0])))

/* linkage list|cards|requests DB: the report through the listing layer; 0, 1 or 2. */
static int cmd_list(const struct largs *a, const char *cmd)
{
	enum kp_report r = strcmp(cmd, "list") == 0 ? KP_REPORT_LINKAGES :
	                   strcmp(cmd, "cards") == 0 ? KP_REPORT_LINKAGE_CARDS :
	                   KP_REPORT_LINK_REQUESTS;
	enum kp_ctl_format format;
	struct kp_ctl_out o;
	kp_bstore *s = NULL;
	int64_t at = now_ms();
	int rc;

	if (kp_ctl_out_format(&a->fmt, &format) != 0)
		return 2;
	if (a->at != NULL && (r != KP_REPORT_LINKAGES || kp_parse_time(a->at, &at) != KP_OK)) {
		fprintf(stderr, "kippuctl: --at: linkage list only, a TIME such as "
		        "2026-11-26T15:00:00+09:00\n");
		return 2;
	}
	if (kp_ctl_bstore_open(&s, a->pos[0], KP_BSTORE_READONLY) != KP_BE_OK)
		return 1;
	if (r == KP_REPORT_LINKAGES)
		kp_ctl_out_begin(&o, format, list_cols, NCOL(list_cols), col_width);
	else if (r == KP_REPORT_LINKAGE_CARDS)
		kp_ctl_out_begin(&o, format, cards_cols, NCOL(cards_cols), col_width);
	else
		kp_ctl_out_begin(&o, format, requests_cols, NCOL(requests_cols), col_width);
	rc = kp_bstore_report_at(s, r, a->terminal, at, kp_ctl_out_report, &o);
	if (rc != KP_BE_OK)
		fprintf(stderr, "kippuctl: linkage %s: %s\n", cmd, kp_bstore_errmsg(s));
	else if (kp_ctl_out_end(&o, "(none)") != 0)
		rc = KP_BE_E_INVAL;
	kp_bstore_close(s);
	return rc == KP_BE_OK ? 0 : 1;
}

static int cmd_token(const struct largs *a)
{
	uint8_t key[KP_TOKEN_KEY_LEN], token[KP_TOKEN_LEN];
	char hex[2 * KP_TOKEN_LEN + 1];
	int have = 0, rc;

	if (a->n != 0 || a->cert == NULL || a->token_key == NULL || a->jpki_ca == NULL) {
		kp_ctl_linkage_usage(stderr);
		return 2;
	}
	if (need_key(a, "a certificate", key, &have) != 0)
		return 1;
	rc = cert_linkage_token(key, a->cert, a->jpki_ca, token);
	kp_zeroize(key, sizeof(key));
	if (rc != 0)
		return 1;
	kp_hex(token, KP_TOKEN_LEN, hex);
	printf("%s\n", hex);
	return 0;
}

int kp_ctl_linkage(int argc, char **argv)
{
	uint8_t key[KP_TOKEN_KEY_LEN] = { 0 }, linkage[KP_TOKEN_LEN], cards[MAX_CARDS][KP_TOKEN_LEN];
	char hex[2 * KP_TOKEN_LEN + 1];
	struct largs a;
	const char *cmd;
	kp_bstore *s = NULL;
	int have_key = 0, rc = KP_BE_OK, exit_code = 1;

	if (argc < 2 || parse(argc - 1, argv + 1, &a) != 0) {
		kp_ctl_linkage_usage(stderr);
		return 2;
	}
	cmd = argv[1];
	if ((a.fmt.json || a.fmt.csv) && strcmp(cmd, "list") != 0 && strcmp(cmd, "cards") != 0 &&
	    strcmp(cmd, "requests") != 0) {
		fprintf(stderr, "kippuctl: linkage %s: --json and --csv are for listings (list, cards, "
		        "requests)\n", cmd);
		return 2;
	}
	if (strcmp(cmd, "token") == 0)
		return cmd_token(&a);
	/* Everything is checked and turned into tokens before the database is touched. */
	if (strcmp(cmd, "add") == 0 && a.n == 5) {
		int64_t from, until;

		if (!kp_valid_id(a.pos[2])) {
			fprintf(stderr, "kippuctl: CATEGORY: 1-32 characters of A-Z a-z 0-9 - _ .\n");
			exit_code = 2;
			goto out;
		}
		if (kp_parse_time(a.pos[3], &from) != KP_OK || kp_parse_time(a.pos[4], &until) != KP_OK ||
		    until <= from) {
			fprintf(stderr, "kippuctl: FROM and UNTIL: ISO 8601 with Z or an offset, "
			        "UNTIL after FROM\n");
			exit_code = 2;
			goto out;
		}
		if (linkage_arg(&a, a.pos[1], key, &have_key, linkage) != 0)
			goto out;
		for (int i = 0; i < a.n_cards; i++) {
			if (card_arg(&a, a.cards[i], key, &have_key, cards[i]) != 0)
				goto out;
		}
		if (kp_ctl_bstore_open(&s, a.pos[0], KP_BSTORE_CREATE) != KP_BE_OK)
			goto out;
		rc = kp_bstore_linkage_add(s, linkage, a.pos[2], from, until, now_ms());
		for (int i = 0; rc == KP_BE_OK && i < a.n_cards; i++)
			rc = kp_bstore_linkage_link(s, linkage, cards[i], now_ms(), "backend");
		if (rc == KP_BE_OK) {
			kp_hex(linkage, KP_TOKEN_LEN, hex);
			printf("linkage %s: %s, %d card%s linked\n", hex, a.pos[2], a.n_cards,
			       a.n_cards == 1 ? "" : "s");
		}
	} else if (strcmp(cmd, "revoke") == 0 && a.n == 2 && a.n_cards == 0) {
		if (linkage_arg(&a, a.pos[1], key, &have_key, linkage) != 0)
			goto out;
		if (kp_ctl_bstore_open(&s, a.pos[0], KP_BSTORE_EXISTING) != KP_BE_OK)
			goto out;
		rc = kp_bstore_linkage_revoke(s, linkage, now_ms());
		if (rc == KP_BE_OK) {
			kp_hex(linkage, KP_TOKEN_LEN, hex);
			printf("linkage %s revoked: terminals drop it and its cards on their next sync\n",
			       hex);
		}
	} else if (strcmp(cmd, "link") == 0 && a.n == 3 && a.n_cards == 0) {
		if (linkage_arg(&a, a.pos[1], key, &have_key, linkage) != 0 ||
		    card_arg(&a, a.pos[2], key, &have_key, cards[0]) != 0)
			goto out;
		if (kp_ctl_bstore_open(&s, a.pos[0], KP_BSTORE_EXISTING) != KP_BE_OK)
			goto out;
		rc = kp_bstore_linkage_link(s, linkage, cards[0], now_ms(), "backend");
		if (rc == KP_BE_OK) {
			kp_hex(cards[0], KP_TOKEN_LEN, hex);
			printf("card %s linked\n", hex);
		}
	} else if ((strcmp(cmd, "list") == 0 || strcmp(cmd, "cards") == 0 ||
	            strcmp(cmd, "requests") == 0) && a.n == 1 && a.n_cards == 0) {
		exit_code = cmd_list(&a, cmd);
		goto out;
	} else {
		kp_ctl_linkage_usage(stderr);
		exit_code = 2;
		goto out;
	}
	if (rc != KP_BE_OK)
		fprintf(stderr, "kippuctl: linkage %s: %s\n", cmd, kp_bstore_errmsg(s));
	else
		exit_code = 0;
out:
	kp_zeroize(key, sizeof(key));
	kp_bstore_close(s);
	return exit_code;
}
