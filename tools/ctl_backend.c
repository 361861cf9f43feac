/* kippuctl backend ...: operating the backend's database (operators, products, cards,
 * sales, denylist, records, ledger, quarantines) and exporting stored records for audit. */
#include <errno.h>
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
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
	"  kippuctl backend deny DB CARD REASON --token-key PATH\n"
	"  kippuctl backend undeny DB CARD --token-key PATH\n"
	"  kippuctl backend records|ledger|terminals|entitlements|overdrafts DB [--terminal ID]\n"
	"  kippuctl backend quarantine list DB | quarantine clear DB TERMINAL\n"
	"  kippuctl backend export DB TERMINAL DIR   (DIR/SEQ.cose + DIR/terminal.crt)\n";

void kp_ctl_backend_usage(FILE *fp)
{
	fputs(usage_text, fp);
}

static int64_t now_ms(void)
{
	return (int64_t)time(NULL) * 1000;
}

struct bargs {
	const char *token_key, *label, *terminal, *category;
	int n;
	const char *pos[8];
};

static int parse(int argc, char **argv, struct bargs *a)
{
	static const struct option opts[] = {
		{ "token-key", required_argument, NULL, 't' },
		{ "label", required_argument, NULL, 'l' },
		{ "terminal", required_argument, NULL, 'T' },
		{ "category", required_argument, NULL, 'c' },
		{ NULL, 0, NULL, 0 },
	};
	int c;

	memset(a, 0, sizeof(*a));
	optind = 1;
	while ((c = getopt_long(argc, argv, "", opts, NULL)) != -1) {
		if (c == 't')
			a->token_key = optarg;
		else if (c == 'l')
			a->label = optarg;
		else if (c == 'T')
			a->terminal = optarg;
		else if (c == 'c')
			a->category = optarg;
		else
			return -1;
	}
	for (; optind < argc; optind++) {
		if (a->n == 8)
			return -1;
		a->pos[a->n++] = argv[optind];
	}
	return 0;
}

static int card_token(const struct bargs *a, const char *card, uint8_t token[KP_TOKEN_LEN])
{
	uint8_t key[KP_TOKEN_KEY_LEN] = { 0 };
	int rc;

	if (strncmp(card, "token:", 6) == 0)
		return kp_parse_card(card, key, token);
	if (a->token_key == NULL) {
		fprintf(stderr, "kippuctl: --token-key is needed to turn %s into a token\n", card);
		return -1;
	}
	rc = kp_token_key_load(a->token_key, key);
	if (rc != KP_OK) {
		fprintf(stderr, "kippuctl: %s: %s\n", a->token_key, kp_strerror(rc));
		return -1;
	}
	rc = kp_parse_card(card, key, token);
	kp_zeroize(key, sizeof(key));
	if (rc != KP_OK) {
		fprintf(stderr, "kippuctl: card must be felica:<16 hex digits> or token:<32 hex digits>\n");
		return -1;
	}
	return 0;
}

struct table {
	int rows;
};

static int col_width(const char *name)
{
	if (strcmp(name, "token") == 0 || strcmp(name, "via") == 0)
		return 32;
	if (strcmp(name, "time") == 0 || strcmp(name, "at") == 0 || strcmp(name, "last_seen") == 0 ||
	    strcmp(name, "valid_from") == 0 || strcmp(name, "valid_until") == 0)
		return 20;
	if (strcmp(name, "reason") == 0)
		return 16;
	if (strcmp(name, "terminal") == 0)
		return 10;
	return strlen(name) > 8 ? (int)strlen(name) : 8;
}

static int print_row(void *arg, int ncol, const char *const *cols, const char *const *names)
{
	struct table *t = arg;

	/* Fixed columns a person can read; tokens and times are the wide ones. */
	if (t->rows++ == 0) {
		for (int i = 0; i < ncol; i++)
			printf("%-*s ", col_width(names[i]), names[i]);
		printf("\n");
	}
	for (int i = 0; i < ncol; i++)
		printf("%-*s ", col_width(names[i]), cols[i] != NULL ? cols[i] : "-");
	printf("\n");
	return 0;
}

static int export_records(kp_bstore *s, const char *terminal, const char *dir)
{
	uint8_t *cose = NULL;
	size_t len = 0;
	uint64_t seq = 1;
	char path[4096];
	kp_cert *cert = NULL;
	int rc;

	if (mkdir(dir, 0755) != 0 && errno != EEXIST) {
		fprintf(stderr, "kippuctl: %s: %s\n", dir, strerror(errno));
		return 1;
	}
	/* The certificate the terminal last authenticated with: it signed the records. */
	{
		uint8_t *der = NULL;
		size_t der_len = 0;

		rc = kp_bstore_terminal_cert(s, terminal, &der, &der_len);
		if (rc == KP_BE_OK)
			rc = kp_cert_parse(&cert, der, der_len);
		free(der);
		if (rc != 0) {
			fprintf(stderr, "kippuctl: no certificate stored for terminal %s\n", terminal);
			return 1;
		}
	}
	snprintf(path, sizeof(path), "%s/terminal.crt", dir);
	rc = kp_cert_write_pem(cert, path);
	kp_cert_free(cert);
	if (rc != 0) {
		fprintf(stderr, "kippuctl: %s: %s\n", path, kp_strerror(rc));
		return 1;
	}
	for (;; seq++) {
		FILE *fp;

		rc = kp_bstore_record_cose(s, terminal, seq, &cose, &len);
		if (rc == KP_BE_E_NOTFOUND)
			break;
		if (rc != KP_BE_OK) {
			fprintf(stderr, "kippuctl: record %llu: %s\n", (unsigned long long)seq,
			        kp_bstore_errmsg(s));
			return 1;
		}
		snprintf(path, sizeof(path), "%s/%llu.cose", dir, (unsigned long long)seq);
		fp = fopen(path, "wb");
		if (fp == NULL || fwrite(cose, 1, len, fp) != len) {
			fprintf(stderr, "kippuctl: %s: %s\n", path, strerror(errno));
			if (fp != NULL)
				fclose(fp);
			free(cose);
			return 1;
		}
		fclose(fp);
		free(cose);
		cose = NULL;
	}
	printf("exported %llu records of terminal %s and its certificate to %s\n",
	       (unsigned long long)(seq - 1), terminal, dir);
	return 0;
}

int kp_ctl_backend(int argc, char **argv)
{
	struct bargs a;
	const char *cmd;
	kp_bstore *s = NULL;
	uint8_t token[KP_TOKEN_LEN];
	int rc = KP_BE_OK, exit_code = 1;

	if (argc < 2 || parse(argc - 1, argv + 1, &a) != 0 || a.n < 1) {
		kp_ctl_backend_usage(stderr);
		return 2;
	}
	cmd = argv[1];
	if (strcmp(cmd, "quarantine") == 0) {
		if (a.n < 2 || (strcmp(a.pos[0], "list") != 0 && strcmp(a.pos[0], "clear") != 0) ||
		    (strcmp(a.pos[0], "clear") == 0 && a.n != 3)) {
			kp_ctl_backend_usage(stderr);
			return 2;
		}
		rc = kp_bstore_open(&s, a.pos[1]);
		if (rc != KP_BE_OK)
			return 1;
		if (strcmp(a.pos[0], "list") == 0) {
			struct table t = { 0 };

			rc = kp_bstore_report(s, KP_REPORT_QUARANTINE, a.terminal, print_row, &t);
			if (t.rows == 0)
				printf("no quarantines\n");
		} else {
			rc = kp_bstore_quarantine_clear(s, a.pos[2]);
			if (rc == KP_BE_OK)
				printf("terminal %s released from quarantine: its next sync resends from "
				       "the last record held\n", a.pos[2]);
		}
		goto done;
	}
	rc = kp_bstore_open(&s, a.pos[0]);
	if (rc != KP_BE_OK)
		return 1;
	if (strcmp(cmd, "operator") == 0 && a.n == 3 && kp_valid_id(a.pos[1])) {
		rc = kp_bstore_put_operator(s, a.pos[1], a.pos[2]);
	} else if (strcmp(cmd, "product") == 0 && a.n == 5 && kp_valid_id(a.pos[1])) {
		const char *ops[16];
		size_t n_ops = 0;
		char *list = strdup(a.pos[3]), *save = NULL;
		long rides = strtol(a.pos[2], NULL, 10);

		for (char *t = strtok_r(list, ",", &save); t != NULL && n_ops < 16;
		     t = strtok_r(NULL, ",", &save))
			ops[n_ops++] = t;
		if (rides < 1 || rides > 10000 || n_ops == 0 ||
		    (a.category != NULL && !kp_valid_id(a.category))) {
			fprintf(stderr, "kippuctl: rides 1-10000, at least one operator, and --category "
			        "1-32 characters of A-Z a-z 0-9 - _ .\n");
			free(list);
			exit_code = 2;
			goto out;
		}
		rc = kp_bstore_put_product_cat(s, a.pos[1], a.pos[4], rides, ops, n_ops, a.category);
		free(list);
	} else if (strcmp(cmd, "card") == 0 && a.n == 2) {
		if (card_token(&a, a.pos[1], token) != 0)
			goto out;
		rc = kp_bstore_register_card(s, token, a.label != NULL ? a.label : "", now_ms());
	} else if (strcmp(cmd, "sell") == 0 && a.n == 5) {
		int64_t from, until, ent = 0;

		if (card_token(&a, a.pos[1], token) != 0)
			goto out;
		if (kp_parse_time(a.pos[3], &from) != KP_OK || kp_parse_time(a.pos[4], &until) != KP_OK ||
		    until <= from) {
			fprintf(stderr, "kippuctl: FROM and UNTIL: ISO 8601 with Z or an offset, "
			        "UNTIL after FROM\n");
			exit_code = 2;
			goto out;
		}
		rc = kp_bstore_sell(s, token, a.pos[2], from, until, now_ms(), &ent);
		if (rc == KP_BE_OK)
			printf("entitlement %lld: %s sold\n", (long long)ent, a.pos[2]);
	} else if (strcmp(cmd, "deny") == 0 && a.n == 3) {
		if (card_token(&a, a.pos[1], token) != 0)
			goto out;
		rc = kp_bstore_denylist(s, token, a.pos[2], now_ms());
	} else if (strcmp(cmd, "undeny") == 0 && a.n == 2) {
		if (card_token(&a, a.pos[1], token) != 0)
			goto out;
		rc = kp_bstore_undeny(s, token);
	} else if (a.n == 1 && (strcmp(cmd, "records") == 0 || strcmp(cmd, "ledger") == 0 ||
	                        strcmp(cmd, "terminals") == 0 || strcmp(cmd, "overdrafts") == 0 ||
	                        strcmp(cmd, "entitlements") == 0)) {
		struct table t = { 0 };
		enum kp_report r = strcmp(cmd, "records") == 0 ? KP_REPORT_RECORDS :
		                   strcmp(cmd, "ledger") == 0 ? KP_REPORT_LEDGER :
		                   strcmp(cmd, "terminals") == 0 ? KP_REPORT_TERMINALS :
		                   strcmp(cmd, "overdrafts") == 0 ? KP_REPORT_OVERDRAFTS :
		                   KP_REPORT_ENTITLEMENTS;

		rc = kp_bstore_report(s, r, a.terminal, print_row, &t);
		if (rc == KP_BE_OK && t.rows == 0)
			printf("(none)\n");
	} else if (strcmp(cmd, "export") == 0 && a.n == 3) {
		exit_code = export_records(s, a.pos[1], a.pos[2]);
		goto out;
	} else {
		kp_ctl_backend_usage(stderr);
		exit_code = 2;
		goto out;
	}
done:
	if (rc != KP_BE_OK)
		fprintf(stderr, "kippuctl: backend %s: %s\n", cmd, kp_bstore_errmsg(s));
	else
		exit_code = 0;
out:
	kp_bstore_close(s);
	return exit_code;
}
