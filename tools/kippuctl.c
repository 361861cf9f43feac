/* SPDX-License-Identifier: Apache-2.0 */
/* kippuctl: keys and certificates, loading a terminal's store, and the journal's audit
 * (verify, export for independent checking, list). */
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "kp_tools.h"
#include "kp_version.h"

/* The one usage text: the general usage prints it all, `kippuctl WORDS... --help` the lines
 * of the commands WORDS names (command_help). A line "  kippuctl NAME ARGS..." starts a
 * command's entry, NAME being its leading words of a-z 0-9 - and | ("a|b": either); lines
 * indented deeper continue it. */
static void usage(FILE *fp)
{
	fputs("usage:\n"
	      "  kippuctl --help | -h | --version\n"
	      "  kippuctl COMMAND... --help   (that command's usage, e.g. kippuctl journal list -h)\n"
	      "  kippuctl ca create --key CA.key --cert CA.crt [--cn NAME] [--not-before TIME]\n"
	      "                     [--days N]\n"
	      "  kippuctl terminal create --ca-key CA.key --ca-cert CA.crt --id TERMINAL_ID\n"
	      "                           --key T.key --cert T.crt [--not-before TIME] [--days N]\n"
	      "  kippuctl token-key create PATH\n"
	      "  kippuctl token --token-key PATH CARD          (CARD = felica:<IDm hex>)\n"
	      "  kippuctl load DB FILE --token-key PATH\n"
	      "  kippuctl journal verify DB [--cert T.crt] [--ca CA.crt]\n"
	      "  kippuctl journal export DB DIR\n"
	      "  kippuctl journal list DB [--json|--csv]\n"
	      "  kippuctl backend create --ca-key CA.key --ca-cert CA.crt --key B.key --cert B.crt\n"
	      "                          [--id NAME (default backend)] [--not-before TIME] [--days N]\n"
	      "      certificates are valid from --not-before (default: a day before now) for\n"
	      "      --days (CA 3650, terminal and backend 825) days\n", fp);
	kp_ctl_backend_usage(fp);
	kp_ctl_linkage_usage(fp);
	kp_ctl_jpki_usage(fp);
	kp_ctl_fares_usage(fp);
	kp_ctl_report_usage(fp);
}

struct args {
	const char *key, *cert, *ca_key, *ca_cert, *ca, *id, *cn, *token_key, *not_before;
	int days;
	struct kp_ctl_fmt fmt;
	enum kp_ctl_format format;
	int npos;
	const char *pos[4];
};

#define OPT(name, field, help) { name, KP_CTL_STR, offsetof(struct args, field), 0, 0, 0, help }
static const struct kp_ctl_opt opts[] = {
	OPT("key", key, "the key to make"),
	OPT("cert", cert, "the certificate to make, or to check a journal with"),
	OPT("ca-key", ca_key, "the CA's key that signs"),
	OPT("ca-cert", ca_cert, "the CA's certificate"),
	OPT("ca", ca, "the CA a journal's terminal certificate must chain to"),
	OPT("id", id, "the terminal's (or backend's) name, its certificate's CN"),
	OPT("cn", cn, "the CA's common name"),
	{ "days", KP_CTL_INT, offsetof(struct args, days), 1, 36500, 0, "validity in days" },
	OPT("not-before", not_before, "validity start (TIME)"),
	OPT("token-key", token_key, "the card token key"),
	KP_CTL_OUT_OPTS(struct args, fmt),
	{ NULL, 0, 0, 0, 0, 0, NULL },
};
#undef OPT

static int parse_args(int argc, char **argv, struct args *a)
{
	struct kp_ctl_pos pos = { a->pos, 4, 0, NULL };

	memset(a, 0, sizeof(*a));
	if (kp_ctl_parse(argc, argv, opts, a, &pos) != 0) {
		if (pos.extra != NULL)
			fprintf(stderr, "kippuctl: too many arguments\n");
		return -1;
	}
	a->npos = pos.n;
	return 0;
}

static int cmd_ca_create(struct args *a)
{
	kp_key *key = NULL;
	int64_t nb, na;
	int rc;

	if (kp_ctl_need(a->key, "--key") || kp_ctl_need(a->cert, "--cert"))
		return 2;
	if (kp_ctl_validity(a->not_before, NULL, a->days, 3650, &nb, &na) != 0)
		return 2;
	rc = kp_key_generate(&key);
	if (rc == 0)
		rc = kp_key_save(key, a->key);
	if (rc != 0) {
		fprintf(stderr, "kippuctl: %s: %s\n", a->key, kp_strerror(rc));
		goto out;
	}
	rc = kp_cert_create_ca_validity(key, a->cn != NULL ? a->cn : "kippu operator CA", nb, na,
	                                a->cert);
	if (rc != 0)
		fprintf(stderr, "kippuctl: %s: %s\n", a->cert, kp_strerror(rc));
	else
		printf("CA key %s (mode 0600), certificate %s\n", a->key, a->cert);
out:
	kp_key_free(key);
	return rc == 0 ? 0 : 1;
}

/* A terminal's certificate (clientAuth) or the backend's (serverAuth): the two profiles
 * differ in extendedKeyUsage, which is what the TLS ends check, not in how they are made. */
static int cert_create(struct args *a, enum kp_cert_profile profile)
{
	kp_key *ca_key = NULL, *key = NULL;
	kp_cert *ca = NULL;
	int64_t nb, na;
	int rc;

	if (kp_ctl_need(a->ca_key, "--ca-key") || kp_ctl_need(a->ca_cert, "--ca-cert") ||
	    kp_ctl_need(a->id, "--id") || kp_ctl_need(a->key, "--key") ||
	    kp_ctl_need(a->cert, "--cert"))
		return 2;
	if (kp_ctl_validity(a->not_before, NULL, a->days, 825, &nb, &na) != 0)
		return 2;
	if (profile == KP_CERT_TERMINAL && kp_ctl_terminal_id(a->id, "--id") != 0)
		return 2;
	if (!kp_valid_id(a->id)) {
		fprintf(stderr, "kippuctl: --id: 1-32 characters of A-Z a-z 0-9 - _ .\n");
		return 2;
	}
	if (kp_ctl_readable("CA key", a->ca_key) != 0 ||
	    kp_ctl_readable("CA certificate", a->ca_cert) != 0)
		return 1;
	rc = kp_key_load(&ca_key, a->ca_key);
	if (rc != 0) {
		fprintf(stderr, "kippuctl: %s: %s\n", a->ca_key, kp_strerror(rc));
		goto out;
	}
	rc = kp_cert_load(&ca, a->ca_cert);
	if (rc != 0 || kp_cert_matches_key(ca, ca_key) != 0) {
		fprintf(stderr, "kippuctl: %s: %s\n", a->ca_cert,
		        rc != 0 ? kp_strerror(rc) : "does not match the CA key");
		rc = rc != 0 ? rc : KP_E_INVAL;
		goto out;
	}
	rc = kp_key_generate(&key);
	if (rc == 0)
		rc = kp_key_save(key, a->key);
	if (rc != 0) {
		fprintf(stderr, "kippuctl: %s: %s\n", a->key, kp_strerror(rc));
		goto out;
	}
	rc = kp_cert_issue_profile(ca_key, ca, key, a->id, profile, nb, na, a->cert);
	if (rc != 0)
		fprintf(stderr, "kippuctl: %s: %s\n", a->cert, kp_strerror(rc));
	else
		printf("%s: key %s (mode 0600), certificate %s\n", a->id, a->key, a->cert);
out:
	kp_key_free(ca_key);
	kp_key_free(key);
	kp_cert_free(ca);
	return rc == 0 ? 0 : 1;
}

static int cmd_token_key_create(struct args *a)
{
	int rc;

	if (a->npos != 1) {
		usage(stderr);
		return 2;
	}
	rc = kp_token_key_create(a->pos[0]);
	if (rc != KP_OK) {
		fprintf(stderr, "kippuctl: %s: %s\n", a->pos[0], kp_strerror(rc));
		return 1;
	}
	printf("token key %s (mode 0600)\n", a->pos[0]);
	return 0;
}

/* --token-key and npos arguments: 0 with the key loaded, 2 (usage) or 1. */
static int token_key_arg(const struct args *a, int npos, uint8_t key[KP_TOKEN_KEY_LEN])
{
	int rc;

	if (kp_ctl_need(a->token_key, "--token-key") || a->npos != npos) {
		usage(stderr);
		return 2;
	}
	if (kp_ctl_readable("token key", a->token_key) != 0)
		return 1;
	rc = kp_token_key_load(a->token_key, key);
	if (rc != KP_OK) {
		fprintf(stderr, "kippuctl: %s: %s\n", a->token_key, kp_strerror(rc));
		return 1;
	}
	return 0;
}

static int cmd_token(struct args *a)
{
	uint8_t key[KP_TOKEN_KEY_LEN], token[KP_TOKEN_LEN];
	char hex[2 * KP_TOKEN_LEN + 1];
	int rc;

	rc = token_key_arg(a, 1, key);
	if (rc != 0)
		return rc;
	rc = kp_parse_card(a->pos[0], key, token);
	kp_zeroize(key, sizeof(key));
	if (rc != KP_OK) {
		fprintf(stderr, "kippuctl: card must be felica:<16 hex digits>\n");
		return 2;
	}
	kp_hex(token, KP_TOKEN_LEN, hex);
	printf("%s\n", hex);
	return 0;
}

static int cmd_load(struct args *a)
{
	uint8_t key[KP_TOKEN_KEY_LEN];
	kp_store *s = NULL;
	char err[1024];
	size_t n = 0;
	int rc;

	rc = token_key_arg(a, 2, key);
	if (rc != 0)
		return rc;
	rc = kp_ctl_store_open(&s, a->pos[0]);
	if (rc == KP_OK) {
		err[0] = '\0';
		rc = kp_load_file(s, a->pos[1], key, err, sizeof(err), &n);
		if (rc != KP_OK)
			fprintf(stderr, "kippuctl: %s (nothing was loaded)\n", err);
		else
			printf("loaded %zu lines from %s into %s\n", n, a->pos[1], a->pos[0]);
	}
	kp_zeroize(key, sizeof(key));
	kp_store_close(s);
	return rc == KP_OK ? 0 : 1;
}

static int cmd_journal_verify(struct args *a)
{
	kp_store *s = NULL;
	kp_cert *cert = NULL, *ca = NULL;
	uint64_t n = 0, bad = 0;
	char err[512];
	int rc;

	if (a->npos != 1) {
		usage(stderr);
		return 2;
	}
	if ((a->cert != NULL && kp_ctl_readable("terminal certificate", a->cert) != 0) ||
	    (a->ca != NULL && kp_ctl_readable("CA certificate", a->ca) != 0))
		return 1;
	if (a->cert != NULL && (rc = kp_cert_load(&cert, a->cert)) != 0) {
		fprintf(stderr, "kippuctl: %s: %s\n", a->cert, kp_strerror(rc));
		return 1;
	}
	rc = kp_ctl_store_open_mode(&s, a->pos[0], KP_STORE_READONLY);
	if (rc != KP_OK)
		goto out;
	if (a->ca != NULL) {
		kp_cert *check = cert;
		char pem[8192];

		rc = kp_cert_load(&ca, a->ca);
		if (rc == 0 && check == NULL) {
			rc = kp_store_meta_get(s, "terminal_cert", pem, sizeof(pem));
			if (rc == KP_OK)
				rc = kp_cert_parse(&cert, (const uint8_t *)pem, strlen(pem) + 1);
			check = cert;
		}
		if (rc == 0)
			rc = kp_cert_check_issued_by(check, ca, err, sizeof(err));
		if (rc != 0) {
			fprintf(stderr, "kippuctl: terminal certificate not issued by %s: %s\n", a->ca,
			        kp_strerror(rc));
			goto out;
		}
	}
	rc = kp_journal_verify(s, cert, &n, &bad, err, sizeof(err));
	if (rc != 0)
		fprintf(stderr, "kippuctl: journal %s: FAILED at record %llu: %s (%llu records "
		        "before it verified)\n", a->pos[0], (unsigned long long)bad, err,
		        (unsigned long long)n);
	else
		printf("journal %s: %llu records verified (signatures, sequence, hash chain)\n",
		       a->pos[0], (unsigned long long)n);
out:
	kp_cert_free(cert);
	kp_cert_free(ca);
	kp_store_close(s);
	return rc == 0 ? 0 : 1;
}

static int cmd_journal_export(struct args *a)
{
	kp_store *s = NULL;
	uint64_t n = 0;
	char err[512];
	int rc;

	if (a->npos != 2) {
		usage(stderr);
		return 2;
	}
	rc = kp_ctl_store_open_mode(&s, a->pos[0], KP_STORE_READONLY);
	if (rc == KP_OK) {
		rc = kp_journal_export(s, a->pos[1], &n, err, sizeof(err));
		if (rc != KP_OK)
			fprintf(stderr, "kippuctl: export: %s\n", err[0] ? err : kp_strerror(rc));
		else
			printf("exported %llu records and terminal.crt to %s\n", (unsigned long long)n,
			       a->pos[1]);
	}
	kp_store_close(s);
	return rc == KP_OK ? 0 : 1;
}

/* journal list's columns (README, "Listings as JSON and CSV"); card is the whole token, of
 * which the human line shows a prefix (enough to tell cards apart). */
enum { J_SEQ, J_TIME, J_RESULT, J_REASON, J_OPERATOR, J_CARD, J_PRODUCT, J_LEFT, J_STOP, J_EVENT,
       J_AMOUNT, J_FARE, J_ERROR, J_NCOL };
static const struct kp_ctl_col journal_cols[J_NCOL] = {
	{ "seq", KP_COL_INT, NULL }, { "time", KP_COL_TIME, NULL },
	{ "result", KP_COL_TEXT, NULL }, { "reason", KP_COL_TEXT, NULL },
	{ "operator", KP_COL_TEXT, NULL }, { "card", KP_COL_TEXT, NULL },
	{ "product", KP_COL_TEXT, NULL }, { "left", KP_COL_INT, NULL },
	{ "stop", KP_COL_TEXT, NULL }, { "event", KP_COL_TEXT, NULL },
	{ "amount", KP_COL_AMOUNT, NULL }, { "fare", KP_COL_TEXT, NULL },
	{ "error", KP_COL_TEXT, NULL },
};

static const char *dash(const char *v)
{
	return v != NULL ? v : "-";
}

static void journal_line(const struct kp_ctl_out *o, const char *const *v)
{
	char tok[16] = "-";

	if (v[J_ERROR] != NULL) {
		fprintf(o->fp, "%6s  (%s)\n", v[J_SEQ], v[J_ERROR]);
		return;
	}
	if (v[J_CARD] != NULL)
		snprintf(tok, sizeof(tok), "%.8s..", v[J_CARD]);
	fprintf(o->fp, "%6s  %s  %-8s %-16s %-10s card %-10s product %-8s left %s", v[J_SEQ],
	        v[J_TIME], v[J_RESULT], v[J_REASON], v[J_OPERATOR], tok, dash(v[J_PRODUCT]),
	        dash(v[J_LEFT]));
	/* the fare engine's fields, after the older columns */
	fprintf(o->fp, "  stop %s event %s amount %s%s%s\n", dash(v[J_STOP]), dash(v[J_EVENT]),
	        v[J_AMOUNT], v[J_FARE] != NULL ? "  fare " : "", v[J_FARE] != NULL ? v[J_FARE] : "");
}

static const char *text_or_null(const char *v)
{
	return v[0] != '\0' ? v : NULL;
}

static int list_row(const struct kp_journal_row *row, void *arg)
{
	struct kp_record r;
	char seq[24], tok[2 * KP_TOKEN_LEN + 1], when[32], left[24], amount[24];
	const char *v[J_NCOL] = { seq };
	time_t t;
	struct tm tm;

	snprintf(seq, sizeof(seq), "%llu", (unsigned long long)row->seq);
	if (kp_record_decode(row->payload, row->payload_len, &r) != 0) {
		v[J_ERROR] = "payload does not decode";
		return kp_ctl_out_row(arg, v);
	}
	snprintf(seq, sizeof(seq), "%llu", (unsigned long long)r.seq);
	t = (time_t)(r.time_ms / 1000);
	gmtime_r(&t, &tm);
	strftime(when, sizeof(when), "%Y-%m-%dT%H:%M:%SZ", &tm);
	snprintf(left, sizeof(left), "%lld", (long long)r.left);
	snprintf(amount, sizeof(amount), "%lld", (long long)r.amount);
	if (r.has_token)
		kp_hex(r.token, KP_TOKEN_LEN, tok);
	v[J_TIME] = when;
	v[J_RESULT] = r.result;
	v[J_REASON] = r.reason;
	v[J_OPERATOR] = r.operator_id;
	v[J_CARD] = r.has_token ? tok : NULL;
	v[J_PRODUCT] = text_or_null(r.product);
	v[J_LEFT] = r.has_left ? left : NULL;
	v[J_STOP] = text_or_null(r.stop);
	v[J_EVENT] = text_or_null(r.event);
	v[J_AMOUNT] = amount;
	v[J_FARE] = text_or_null(r.fare);
	return kp_ctl_out_row(arg, v);
}

static int cmd_journal_list(struct args *a)
{
	kp_store *s = NULL;
	int rc;

	if (a->npos != 1) {
		usage(stderr);
		return 2;
	}
	rc = kp_ctl_store_open_mode(&s, a->pos[0], KP_STORE_READONLY);
	if (rc == KP_OK) {
		struct kp_ctl_out o;

		kp_ctl_out_begin(&o, a->format, journal_cols, J_NCOL, NULL);
		o.human = journal_line;
		rc = kp_journal_foreach(s, list_row, &o);
		if (rc == KP_OK && kp_ctl_out_end(&o, NULL) != 0)
			rc = KP_E_INVAL;
	}
	kp_store_close(s);
	return rc == KP_OK ? 0 : 1;
}

static int cmd_terminal_create(struct args *a)
{
	return cert_create(a, KP_CERT_TERMINAL);
}

static int cmd_backend_create(struct args *a)
{
	if (a->id == NULL)
		a->id = KP_BACKEND_DEFAULT_ID;
	return cert_create(a, KP_CERT_BACKEND);
}

/* The commands that take the options above; sub NULL: a command without a subcommand. */
static const struct command {
	const char *cmd, *sub;
	int (*run)(struct args *a);
} commands[] = {
	{ "ca", "create", cmd_ca_create },
	{ "terminal", "create", cmd_terminal_create },
	{ "backend", "create", cmd_backend_create },
	{ "token-key", "create", cmd_token_key_create },
	{ "token", NULL, cmd_token },
	{ "load", NULL, cmd_load },
	{ "journal", "verify", cmd_journal_verify },
	{ "journal", "export", cmd_journal_export },
	{ "journal", "list", cmd_journal_list },
};
#define N_COMMANDS (sizeof(commands) / sizeof(commands[0]))

#define MAX_WORDS 4
#define KIPPUCTL  "  kippuctl "

/* Whether q is the name word [w, w + len) or one of its "a|b" alternatives. */
static int word_is(const char *w, size_t len, const char *q)
{
	const char *end = w + len;
	size_t qlen = strlen(q);

	while (w <= end) {
		const char *bar = memchr(w, '|', (size_t)(end - w));
		const char *alt_end = bar != NULL ? bar : end;

		if ((size_t)(alt_end - w) == qlen && strncmp(w, q, qlen) == 0)
			return 1;
		w = alt_end + 1;
	}
	return 0;
}

/* How a usage line fits the query words q[0..k-1]: the number of them its NAME takes when
 * they all start NAME or NAME is all of their first ones; 0 when it does not fit. */
static size_t line_fit(const char *line, char *const *q, size_t k)
{
	static const char word_chars[] = "abcdefghijklmnopqrstuvwxyz0123456789-|";
	const char *p;
	size_t i;

	if (strncmp(line, KIPPUCTL, strlen(KIPPUCTL)) != 0)
		return 0;
	p = line + strlen(KIPPUCTL);
	for (i = 0; i < k; i++) {
		size_t len = strspn(p, word_chars);

		if (len == 0 || *p < 'a' || *p > 'z' || (p[len] != ' ' && p[len] != '\n'))
			return i;                  /* NAME ends: the rest of q are its arguments */
		if (!word_is(p, len, q[i]))
			return 0;
		p += len;
		p += strspn(p, " ");
	}
	return i;
}

/* The usage lines whose fit is best, each with its continuation lines; or all (best 0). */
static void print_entries(const char *text, char *const *q, size_t k, size_t best)
{
	int on = 0;

	for (const char *line = text; *line != '\0';) {
		const char *nl = strchr(line, '\n');
		size_t len = nl != NULL ? (size_t)(nl - line) + 1 : strlen(line);

		if (strncmp(line, KIPPUCTL, strlen(KIPPUCTL)) == 0)
			on = line_fit(line, q, k) == best;
		else if (strncmp(line, "   ", 3) != 0)
			on = 0;
		if (on || best == 0 || line == text)
			fwrite(line, 1, len, stdout);
		line += len;
	}
}

/* kippuctl [WORDS...] ... --help (or -h): the usage of the commands WORDS name, on stdout,
 * touching no file: 0; 2 when no command has that name. */
static int command_help(int argc, char **argv)
{
	char *text = NULL;
	size_t size = 0, k = 0, best = 0;
	FILE *fp = open_memstream(&text, &size);

	if (fp == NULL) {
		perror("kippuctl");
		return 1;
	}
	usage(fp);
	fclose(fp);
	while (k < MAX_WORDS && (int)k + 1 < argc && argv[k + 1][0] != '-')
		k++;
	for (const char *line = text; k > 0 && line != NULL; line = strchr(line + 1, '\n')) {
		size_t fit = line_fit(line[0] == '\n' ? line + 1 : line, argv + 1, k);

		best = fit > best ? fit : best;
	}
	if (k > 0 && best == 0) {
		fprintf(stderr, "kippuctl: no command '%s' (kippuctl --help lists them)\n", argv[1]);
		free(text);
		return 2;
	}
	print_entries(text, argv + 1, k, best);
	free(text);
	return 0;
}

/* The index of --help or -h among the arguments (before a "--"), or 0. */
static int help_asked(int argc, char **argv)
{
	for (int i = 1; i < argc && strcmp(argv[i], "--") != 0; i++) {
		if (strcmp(argv[i], "--help") == 0 || strcmp(argv[i], "-h") == 0)
			return i;
	}
	return 0;
}

/* The command groups with parsers of their own: argv[0] is the group's name. */
static const struct group {
	const char *name;
	int (*run)(int argc, char **argv);
} groups[] = {
	{ "linkage", kp_ctl_linkage },
	{ "jpki", kp_ctl_jpki },
	{ "fares", kp_ctl_fares },
	{ "report", kp_ctl_report },
	{ "backend", kp_ctl_backend },      /* after backend create, which is a command above */
};

static int has_subcommands(const char *cmd)
{
	for (size_t i = 0; i < N_COMMANDS; i++) {
		if (strcmp(commands[i].cmd, cmd) == 0 && commands[i].sub != NULL)
			return 1;
	}
	return 0;
}

static const struct command *find_command(const char *cmd, const char *sub)
{
	for (size_t i = 0; i < N_COMMANDS; i++) {
		if (strcmp(commands[i].cmd, cmd) == 0 &&
		    strcmp(commands[i].sub != NULL ? commands[i].sub : "", sub) == 0)
			return &commands[i];
	}
	return NULL;
}

int main(int argc, char **argv)
{
	const struct command *c;
	struct args a;
	const char *cmd, *sub = "";

	if (argc < 2) {
		usage(stderr);
		return 2;
	}
	if (strcmp(argv[1], "help") == 0 || help_asked(argc, argv))
		return command_help(strcmp(argv[1], "help") == 0 ? argc - 1 : argc,
		                    strcmp(argv[1], "help") == 0 ? argv + 1 : argv);
	if (strcmp(argv[1], "--version") == 0) {
		printf("kippuctl (kippu) %s\n", KP_VERSION);
		return 0;
	}
	if (argv[1][0] == '-') {
		fprintf(stderr, "kippuctl: unrecognized option '%s' (kippuctl --help lists the "
		        "commands)\n", argv[1]);
		return 2;
	}
	cmd = argv[1];
	for (size_t i = 0; i < sizeof(groups) / sizeof(groups[0]); i++) {
		if (strcmp(cmd, groups[i].name) == 0 &&
		    (strcmp(cmd, "backend") != 0 || argc < 3 || strcmp(argv[2], "create") != 0))
			return groups[i].run(argc - 1, argv + 1);
	}
	if (has_subcommands(cmd)) {
		if (argc < 3) {
			usage(stderr);
			return 2;
		}
		sub = argv[2];
		argc -= 2;
		argv += 2;
	} else {
		argc -= 1;
		argv += 1;
	}
	if (parse_args(argc, argv, &a) != 0) {
		usage(stderr);
		return 2;
	}
	if (kp_ctl_out_format(&a.fmt, &a.format) != 0)
		return 2;
	c = find_command(cmd, sub);
	if (a.format != KP_OUT_HUMAN && c != NULL && c->run != cmd_journal_list) {
		fprintf(stderr, "kippuctl: %s%s%s: --json and --csv are for listings\n", cmd,
		        sub[0] ? " " : "", sub);
		return 2;
	}
	if (c != NULL)
		return c->run(&a);
	fprintf(stderr, "kippuctl: unknown command '%s %s'\n", cmd, sub);
	usage(stderr);
	return 2;
}
