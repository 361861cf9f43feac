/* SPDX-License-Identifier: Apache-2.0 */
/* kippuctl report ridership: the ridership analytics (backend-sync/analytics) over the
 * backend's database, read-only, into a folder of CSV, JSON and TIDES files. */
#include <stddef.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>

#include "kp_analytics.h"
#include "kp_tools.h"

static const char usage_text[] =
	"  kippuctl report ridership DB --from YYYY-MM-DD --to YYYY-MM-DD --secret FILE\n"
	"                 --out DIR [--operator ID] [--gtfs DIR] [--k N (default 10)]\n"
	"                 [--opt-out FILE] [--walk-m METRES (default 800)]\n"
	"      boardings, alightings (observed; inferred by trip chaining), transfers, OD\n"
	"      matrices and TIDES exports of the service days FROM..TO; cells with fewer than\n"
	"      k riders suppressed; cards as pseudonyms from FILE's secret, rotating monthly\n";

void kp_ctl_report_usage(FILE *fp)
{
	fputs(usage_text, fp);
}

struct rargs {
	const char *from, *to, *op, *gtfs, *secret, *opt_out, *out;
	int k, walk_m;
	int npos;
	const char *pos[3];
};

#define OPT(name, field, help) { name, KP_CTL_STR, offsetof(struct rargs, field), 0, 0, 0, help }
static const struct kp_ctl_opt report_opts[] = {
	OPT("from", from, "the first service day, YYYY-MM-DD"),
	OPT("to", to, "the last service day, YYYY-MM-DD"),
	OPT("operator", op, "only this operator's records"),
	OPT("gtfs", gtfs, "the GTFS feed's folder (stops.txt, routes.txt)"),
	OPT("secret", secret, "the pseudonym secret file (16 bytes or more)"),
	OPT("opt-out", opt_out, "card tokens left out of everything, one per line"),
	OPT("out", out, "the folder to write into"),
	{ "k", KP_CTL_INT, offsetof(struct rargs, k), 1, 1000000, 0,
	  "cells with fewer riders are suppressed" },
	{ "walk-m", KP_CTL_INT, offsetof(struct rargs, walk_m), 1, 5000, 0,
	  "walking distance for an inferred alighting, metres" },
	{ NULL, 0, 0, 0, 0, 0, NULL },
};
#undef OPT

static int date_arg(const char *v, const char *name, int *day)
{
	if (kp_ctl_need(v, name) != 0)
		return -1;
	if (kp_an_parse_date(v, day) != KP_AN_OK) {
		fprintf(stderr, "kippuctl: %s %s: not a date (YYYY-MM-DD)\n", name, v);
		return -1;
	}
	return 0;
}

static int ridership(struct rargs *a)
{
	struct kp_an_opts o;
	struct kp_an_summary s;
	struct stat st;
	char err[600];

	memset(&o, 0, sizeof(o));
	if (date_arg(a->from, "--from", &o.from_day) != 0 || date_arg(a->to, "--to", &o.to_day) != 0 ||
	    kp_ctl_need(a->secret, "--secret") != 0 || kp_ctl_need(a->out, "--out") != 0)
		return 2;
	if (o.to_day < o.from_day) {
		fprintf(stderr, "kippuctl: --to %s is before --from %s\n", a->to, a->from);
		return 2;
	}
	/* never create the database: a path that is not there is a mistake */
	if (strstr(a->pos[0], "://") == NULL && strchr(a->pos[0], '=') == NULL &&
	    stat(a->pos[0], &st) != 0) {
		fprintf(stderr, "kippuctl: no such database: %s\n", a->pos[0]);
		return 1;
	}
	if (a->gtfs != NULL && (stat(a->gtfs, &st) != 0 || !S_ISDIR(st.st_mode))) {
		fprintf(stderr, "kippuctl: --gtfs %s: not a folder\n", a->gtfs);
		return 2;
	}
	o.db = a->pos[0];
	o.operator_id = a->op;
	o.gtfs_dir = a->gtfs;
	o.k = a->k ? a->k : KP_AN_K_DEFAULT;
	o.secret_path = a->secret;
	o.opt_out_path = a->opt_out;
	o.out_dir = a->out;
	o.walk_m = a->walk_m;
	if (kp_an_run(&o, &s, err, sizeof(err)) != KP_AN_OK) {
		fprintf(stderr, "kippuctl: report ridership: %s\n", err);
		return 1;
	}
	printf("%lld boardings (%lld cards), %lld alightings observed, %lld inferred, %lld "
	       "unlinked; inference on hidden tap-offs: %lld of %lld inferred, %lld correct; "
	       "%lld of %lld cells suppressed (k=%d); written to %s\n",
	       (long long)s.boardings, (long long)s.cards, (long long)s.alightings,
	       (long long)s.inferred, (long long)s.unlinked, (long long)s.acc_inferred,
	       (long long)s.acc_tested, (long long)s.acc_correct, (long long)s.suppressed,
	       (long long)s.cells, o.k, a->out);
	return 0;
}

int kp_ctl_report(int argc, char **argv)
{
	struct rargs a;
	struct kp_ctl_pos pos;

	memset(&a, 0, sizeof(a));
	pos = (struct kp_ctl_pos){ a.pos, 3, 0, NULL };
	if (argc < 2 || kp_ctl_parse(argc - 1, argv + 1, report_opts, &a, &pos) != 0 ||
	    pos.extra != NULL || strcmp(argv[1], "ridership") != 0 || pos.n != 1) {
		fputs("usage:\n", stderr);
		kp_ctl_report_usage(stderr);
		return 2;
	}
	a.npos = pos.n;
	return ridership(&a);
}
