/* What the benches measure with: a monotonic clock in microseconds and the percentiles of
 * sorted samples (their JSON output is bench_json.h). Header-only, as each bench is one
 * program of its own. */
#ifndef KP_BENCH_UTIL_H
#define KP_BENCH_UTIL_H

#include <stddef.h>
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

#endif
