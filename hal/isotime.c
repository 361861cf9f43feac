/* SPDX-License-Identifier: Apache-2.0 */
/* The one parser of times written by people for kippu (scenarios, load files, kippuctl):
 * strict ISO 8601 with an offset, or Unix seconds. It lives with the clock, in hal/, so that
 * every folder above may use it. */
#include <errno.h>
#include <stddef.h>
#include <stdint.h>
#include <time.h>

#include "kp_hal.h"

#define ISOTIME_MAX_S INT64_C(253402300799)      /* 9999-12-31T23:59:59Z */

/* Exactly n digits. */
static int digits(const char **pp, int n, int *v)
{
	int acc = 0;

	for (int i = 0; i < n; i++) {
		char ch = (*pp)[i];

		if (ch < '0' || ch > '9')
			return -1;
		acc = acc * 10 + (ch - '0');
	}
	*pp += n;
	*v = acc;
	return 0;
}

static int leap(int y)
{
	return (y % 4 == 0 && y % 100 != 0) || y % 400 == 0;
}

static int mdays(int y, int m)
{
	static const int days[12] = { 31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31 };

	return days[m - 1] + (m == 2 && leap(y));
}

/* Days from 1970-01-01 to y-m-d (y >= 1970), by the proleptic Gregorian calendar. */
static int64_t days_since_epoch(int y, int m, int d)
{
	int64_t yy = y - (m <= 2), era = yy / 400, yoe = yy - era * 400;
	int64_t doy = (153 * (m + (m > 2 ? -3 : 9)) + 2) / 5 + d - 1;
	int64_t doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;

	return era * 146097 + doe - 719468;
}

int kp_time_parse(const char *s, int64_t *ms, int *offset_s)
{
	const char *p = s;
	int y, mo, d, h, mi, sec, oh = 0, om = 0, sign = 0, off;
	int64_t frac = 0, v = 0, t;

	if (s == NULL || *s == '\0')
		return -1;
	/* Unix seconds: digits only */
	for (p = s; *p >= '0' && *p <= '9'; p++) {
		if (v > ISOTIME_MAX_S / 10)
			return -1;
		v = v * 10 + (*p - '0');
	}
	if (*p == '\0') {
		if (v > ISOTIME_MAX_S)
			return -1;
		*ms = v * 1000;
		*offset_s = 0;
		return 0;
	}
	p = s;
	if (digits(&p, 4, &y) || *p++ != '-' || digits(&p, 2, &mo) || *p++ != '-' ||
	    digits(&p, 2, &d) || *p++ != 'T' || digits(&p, 2, &h) || *p++ != ':' ||
	    digits(&p, 2, &mi) || *p++ != ':' || digits(&p, 2, &sec))
		return -1;
	if (*p == '.') {
		int nd = 0;

		for (p++; *p >= '0' && *p <= '9'; p++, nd++)
			if (nd < 3)
				frac = frac * 10 + (*p - '0');
		if (nd == 0)
			return -1;
		for (; nd < 3; nd++)
			frac *= 10;
	}
	if (*p == 'Z') {
		p++;
	} else if (*p == '+' || *p == '-') {
		sign = *p++ == '-' ? -1 : 1;
		if (digits(&p, 2, &oh))
			return -1;
		if (*p == ':')
			p++;
		if (digits(&p, 2, &om))
			return -1;
	} else {
		return -1;
	}
	if (*p != '\0')
		return -1;
	if (y < 1970 || mo < 1 || mo > 12 || d < 1 || d > mdays(y, mo) || h > 23 || mi > 59 ||
	    sec > 59 || oh > 14 || om > 59 || (oh == 14 && om > 0))
		return -1;
	off = sign * (oh * 3600 + om * 60);
	t = (days_since_epoch(y, mo, d) * 86400 + h * 3600 + mi * 60 + sec - off) * 1000 + frac;
	if (t < 0 || t > ISOTIME_MAX_S * 1000 + 999)
		return -1;
	*ms = t;
	*offset_s = off;
	return 0;
}

int64_t kp_hal_mono_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

void kp_hal_sleep_ms(int64_t ms)
{
	struct timespec ts;

	if (ms <= 0)
		return;
	ts.tv_sec = (time_t)(ms / 1000);
	ts.tv_nsec = (long)(ms % 1000) * 1000000L;
	while (nanosleep(&ts, &ts) != 0 && errno == EINTR)
		continue;
}
