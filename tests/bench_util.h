/* SPDX-License-Identifier: Apache-2.0 */
/* What the benches measure with: a monotonic clock in microseconds and the percentiles of
 * sorted samples (their JSON output is kp_metrics_json, tools/kp_loadgen.h). Header-only, as each bench is one
 * program of its own. */
#ifndef KP_BENCH_UTIL_H
#define KP_BENCH_UTIL_H

#include <getopt.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

static __attribute__((unused)) double now_us(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return ts.tv_sec * 1e6 + ts.tv_nsec / 1e3;
}

/* qsort's comparison for doubles, ascending. */
static __attribute__((unused)) int cmp_double(const void *a, const void *b)
{
	double x = *(const double *)a, y = *(const double *)b;

	return x < y ? -1 : x > y;
}

/* The p-th percentile of n sorted samples (nearest rank, rounded). */
static __attribute__((unused)) double pct(const double *v, size_t n, double p)
{
	size_t i = (size_t)(p / 100.0 * (double)(n - 1) + 0.5);

	return v[i < n ? i : n - 1];
}

/* Where a bench writes its figures: a JSON array of its own, or added to one (kp_metrics_json). */
struct bench_json { const char *path; int append; };

enum bench_opt_kind {
	BENCH_OPT_PATH,                   /* copied into char dst[cap] */
	BENCH_OPT_STR,                    /* const char *dst = the argument */
	BENCH_OPT_INT,                    /* int dst */
	BENCH_OPT_DOUBLE,                 /* double dst */
	BENCH_OPT_FLAG,                   /* int dst = 1; takes no argument */
	BENCH_OPT_JSON,                   /* struct bench_json dst: a new array */
	BENCH_OPT_JSON_APPEND,            /* struct bench_json dst: added to the array */
};

/* One option of a bench, --name, and where its value goes: each option written once. */
struct bench_opt {
	const char *name;
	enum bench_opt_kind kind;
	void *dst;
	size_t cap;                       /* BENCH_OPT_PATH only */
};

#define BENCH_OPTS_MAX 16

/* Reads the options of argv by the table (n rows; a later option wins); 0, or -1 at an
 * option the table does not hold or one without its argument. optind is left at the
 * first argument that is no option. */
static __attribute__((unused)) int bench_opts(int argc, char **argv,
                                              const struct bench_opt *opts, size_t n)
{
	struct option lo[BENCH_OPTS_MAX + 1];
	int c;

	if (n > BENCH_OPTS_MAX)
		return -1;
	for (size_t i = 0; i < n; i++) {
		lo[i].name = opts[i].name;
		lo[i].has_arg = opts[i].kind == BENCH_OPT_FLAG ? no_argument : required_argument;
		lo[i].flag = NULL;
		lo[i].val = (int)i + 1;
	}
	memset(&lo[n], 0, sizeof(lo[n]));
	while ((c = getopt_long(argc, argv, "", lo, NULL)) != -1) {
		const struct bench_opt *o;

		if (c < 1 || (size_t)c > n)
			return -1;
		o = &opts[c - 1];
		switch (o->kind) {
		case BENCH_OPT_PATH: snprintf(o->dst, o->cap, "%s", optarg); break;
		case BENCH_OPT_STR: *(const char **)o->dst = optarg; break;
		case BENCH_OPT_INT: *(int *)o->dst = atoi(optarg); break;
		case BENCH_OPT_DOUBLE: *(double *)o->dst = atof(optarg); break;
		case BENCH_OPT_FLAG: *(int *)o->dst = 1; break;
		case BENCH_OPT_JSON:
		case BENCH_OPT_JSON_APPEND:
			((struct bench_json *)o->dst)->path = optarg;
			((struct bench_json *)o->dst)->append = o->kind == BENCH_OPT_JSON_APPEND;
			break;
		}
	}
	return 0;
}

#endif
