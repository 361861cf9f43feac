/* SPDX-License-Identifier: Apache-2.0 */
/* Calendar arithmetic in integers (kp_civil.h). */
#include <stddef.h>

#include "kp_civil.h"

int64_t kp_floor_div(int64_t a, int64_t b)
{
	return a / b - (a % b != 0 && (a < 0) != (b < 0));
}

void kp_civil_from_days(int64_t z, int *y, int *m, int *d)
{
	int64_t era, doe, yoe, doy, mp;

	z += 719468;
	era = kp_floor_div(z, 146097);
	doe = z - era * 146097;
	yoe = (doe - doe / 1460 + doe / 36524 - doe / 146096) / 365;
	doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
	mp = (5 * doy + 2) / 153;
	*d = (int)(doy - (153 * mp + 2) / 5 + 1);
	*m = (int)(mp < 10 ? mp + 3 : mp - 9);
	*y = (int)(yoe + era * 400 + (*m <= 2));
}

int64_t kp_days_from_civil(int y, int m, int d)
{
	int64_t era, yoe, doy, doe;

	y -= m <= 2;
	era = (y >= 0 ? y : y - 399) / 400;
	yoe = y - era * 400;
	doy = (153 * (m + (m > 2 ? -3 : 9)) + 2) / 5 + d - 1;
	doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
	return era * 146097 + doe - 719468;
}

void kp_civil_local(int64_t ms, int offset_s, struct kp_civil *c)
{
	int64_t local = kp_floor_div(ms, 1000) + offset_s;
	int64_t day = kp_floor_div(local, 86400), sod = local - day * 86400;

	kp_civil_from_days(day, &c->y, &c->m, &c->d);
	c->hh = (int)(sod / 3600);
	c->mm = (int)(sod % 3600 / 60);
	c->ss = (int)(sod % 60);
}

void kp_service_day(int64_t ms, int offset_s, int day_end_s, int64_t *day_id, int64_t *month_id)
{
	int y, m, d;

	*day_id = kp_floor_div(kp_floor_div(ms, 1000) + offset_s - day_end_s, 86400);
	if (month_id != NULL) {
		kp_civil_from_days(*day_id, &y, &m, &d);
		*month_id = (int64_t)y * 100 + m;
	}
}
