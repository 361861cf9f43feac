/* SPDX-License-Identifier: Apache-2.0 */
/* Calendar arithmetic in integers, shared by the terminal, the backend and the tools: days
 * since 1970-01-01 <-> proleptic Gregorian dates (Howard Hinnant's algorithms), local time
 * at a fixed UTC offset, and service days that end at a local hour rather than midnight. */
#ifndef KP_CIVIL_H
#define KP_CIVIL_H

#include <stdint.h>

struct kp_civil {
	int y, m, d;                 /* date */
	int hh, mm, ss;              /* time of day */
};

/* a / b rounded toward minus infinity (b > 0). */
int64_t kp_floor_div(int64_t a, int64_t b);
/* The date of a day count from 1970-01-01, and back. */
void kp_civil_from_days(int64_t days, int *y, int *m, int *d);
int64_t kp_days_from_civil(int y, int m, int d);
/* Local date and time of the instant ms (UTC milliseconds) at UTC + offset_s. */
void kp_civil_local(int64_t ms, int offset_s, struct kp_civil *c);
/* The service day of ms (days from 1970-01-01 of local time minus day_end_s: 01:30 with
 * day_end 04:00 belongs to the day before) and the month (YYYYMM) that day lies in. */
void kp_service_day(int64_t ms, int offset_s, int day_end_s, int64_t *day_id, int64_t *month_id);

#endif
