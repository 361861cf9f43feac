/* SPDX-License-Identifier: Apache-2.0 */
/* The driver console: a full-screen ncurses (wide-character) face for kippu-terminal.
 * Everything curses does happens on the console's own thread; the tap thread only copies
 * what it decided into the model below (a short mutex) and takes the driver's actions
 * from a queue, so a tap is decided and committed whether or not the screen has caught
 * up. Works at 80x24, on resize and without colour (the banner is then reverse video). */
#include <ctype.h>
#include <curses.h>
#include <langinfo.h>
#include <locale.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>
#include <wchar.h>

#include "kp_console.h"

#define ACT_MAX    32
#define RECENT_MAX 8

enum input { IN_NONE = 0, IN_DRIVER, IN_OVERRIDE, IN_QUIT, IN_HELP, IN_SUMMARY };

enum pair { P_OK = 1, P_NG, P_ALREADY, P_INFO, P_WARN, P_PENDING, P_TITLE };

struct kp_console {
	struct kp_console_cfg cc;
	int utc_offset_s;
	char terminal_id[KP_ID_MAX + 1], operator_id[KP_ID_MAX + 1];
	char route[KP_ID_MAX + 1], stop_id[KP_ID_MAX + 1];

	pthread_t thread;
	pthread_mutex_t mu;
	pthread_cond_t cv;
	int started;                     /* 1 running, -1 failed to start */
	int stop;
	char err[200];

	/* the model, under mu */
	struct kp_console_tap tap;
	unsigned tap_gen;
	struct kp_console_tap recent[RECENT_MAX];
	size_t n_recent;
	struct kp_console_status st;
	char msg[200];
	int msg_warn;
	int64_t msg_mono;                /* when a message for the driver was set */
	char summary[4096];
	unsigned summary_gen;
	struct kp_console_action q[ACT_MAX];
	size_t qh, qn;

	/* the screen thread's own */
	SCREEN *scr;
	int colours, utf8, lang_ja;
	enum input input;
	char inbuf[KP_ID_MAX + 1];
	size_t inlen;
	unsigned seen_tap_gen, seen_summary_gen;
	char shown_summary[4096];
};

static void push_action(kp_console *c, enum kp_console_action_kind kind, const char *arg,
                        int value)
{
	struct kp_console_action *a;

	pthread_mutex_lock(&c->mu);
	if (c->qn < ACT_MAX) {
		a = &c->q[(c->qh + c->qn) % ACT_MAX];
		memset(a, 0, sizeof(*a));
		a->kind = kind;
		snprintf(a->arg, sizeof(a->arg), "%s", arg != NULL ? arg : "");
		a->value = value;
		c->qn++;
	}
	pthread_mutex_unlock(&c->mu);
}

int kp_console_next_action(kp_console *c, struct kp_console_action *a)
{
	int got = 0;

	if (c == NULL)
		return 0;
	pthread_mutex_lock(&c->mu);
	if (c->qn > 0) {
		*a = c->q[c->qh];
		c->qh = (c->qh + 1) % ACT_MAX;
		c->qn--;
		got = 1;
	}
	pthread_mutex_unlock(&c->mu);
	return got;
}

/* Puts t first in the recent taps; the caller holds c->mu. */
static void recent_push(kp_console *c, const struct kp_console_tap *t)
{
	memmove(&c->recent[1], &c->recent[0], sizeof(c->recent[0]) * (RECENT_MAX - 1));
	c->recent[0] = *t;
	if (c->n_recent < RECENT_MAX)
		c->n_recent++;
}

void kp_console_show(kp_console *c, const struct kp_console_tap *t)
{
	if (c == NULL)
		return;
	pthread_mutex_lock(&c->mu);
	c->tap = *t;
	c->tap_gen++;
	if (!t->pending && t->result != KP_HMI_INFO)
		recent_push(c, t);
	pthread_mutex_unlock(&c->mu);
}

void kp_console_recent(kp_console *c, const struct kp_console_tap *t)
{
	if (c == NULL)
		return;
	pthread_mutex_lock(&c->mu);
	recent_push(c, t);
	pthread_mutex_unlock(&c->mu);
}

void kp_console_status(kp_console *c, const struct kp_console_status *st)
{
	if (c == NULL)
		return;
	pthread_mutex_lock(&c->mu);
	c->st = *st;
	pthread_mutex_unlock(&c->mu);
}

static int64_t mono_now(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

void kp_console_message(kp_console *c, int warn, const char *fmt, ...)
{
	va_list ap;

	if (c == NULL)
		return;
	pthread_mutex_lock(&c->mu);
	va_start(ap, fmt);
	vsnprintf(c->msg, sizeof(c->msg), fmt, ap);
	va_end(ap);
	c->msg_warn = warn;
	c->msg_mono = mono_now();
	pthread_mutex_unlock(&c->mu);
}

void kp_console_log(kp_console *c, const char *msg)
{
	if (c == NULL)
		return;
	pthread_mutex_lock(&c->mu);
	if (c->msg_mono == 0 || mono_now() - c->msg_mono >= 4000) {
		snprintf(c->msg, sizeof(c->msg), "%s", msg);
		c->msg_warn = 1;
		c->msg_mono = 0;
	}
	pthread_mutex_unlock(&c->mu);
}

void kp_console_summary(kp_console *c, const char *text)
{
	if (c == NULL)
		return;
	pthread_mutex_lock(&c->mu);
	snprintf(c->summary, sizeof(c->summary), "%s", text);
	c->summary_gen++;
	pthread_mutex_unlock(&c->mu);
}

/* ---- drawing helpers ---- */

/* Writes s at (y, x), at most maxw columns wide; returns the columns used. Outside a
 * UTF-8 locale, non-ASCII bytes are left out. */
static int put(kp_console *c, int y, int x, const char *s, int maxw)
{
	wchar_t w[512];
	int used = 0, rows, cols;
	size_t n = 0;
	mbstate_t ps;
	const char *p = s;

	getmaxyx(stdscr, rows, cols);
	if (y < 0 || y >= rows || x >= cols || maxw <= 0)
		return 0;
	if (x + maxw > cols)
		maxw = cols - x;
	if (!c->utf8) {
		char a[512];
		size_t k = 0;

		for (; *p != '\0' && k < sizeof(a) - 1 && (int)k < maxw; p++) {
			if ((unsigned char)*p < 0x80)
				a[k++] = *p;
		}
		a[k] = '\0';
		mvaddnstr(y, x, a, (int)k);
		return (int)k;
	}
	memset(&ps, 0, sizeof(ps));
	while (*p != '\0' && n < sizeof(w) / sizeof(w[0]) - 1) {
		wchar_t wc;
		size_t r = mbrtowc(&wc, p, strlen(p), &ps);
		int cw;

		if (r == (size_t)-1 || r == (size_t)-2 || r == 0)
			break;
		cw = wcwidth(wc);
		if (cw < 0)
			cw = 0;
		if (used + cw > maxw)
			break;
		w[n++] = wc;
		used += cw;
		p += r;
	}
	w[n] = L'\0';
	if (n > 0)
		mvaddnwstr(y, x, w, (int)n);
	return used;
}

/* Display width of s (its ASCII bytes only outside a UTF-8 locale). */
static int width(kp_console *c, const char *s)
{
	wchar_t w[512];
	size_t n;
	int wd;

	if (!c->utf8) {
		int k = 0;

		for (; *s != '\0'; s++)
			k += (unsigned char)*s < 0x80;
		return k;
	}
	n = mbstowcs(w, s, sizeof(w) / sizeof(w[0]) - 1);
	if (n == (size_t)-1)
		return (int)strlen(s);
	w[n] = L'\0';
	wd = wcswidth(w, n);
	return wd < 0 ? (int)n : wd;
}

static void put_centre(kp_console *c, int y, const char *s)
{
	int cols = getmaxx(stdscr), w = width(c, s);

	put(c, y, w < cols ? (cols - w) / 2 : 0, s, cols);
}

static void fill_row(int y, int cols)
{
	move(y, 0);
	for (int i = 0; i < cols; i++)
		addch(' ');
}

static void on(kp_console *c, int pair, attr_t fallback)
{
	if (c->colours)
		attron(COLOR_PAIR(pair));
	else
		attron(fallback);
}

static void off(kp_console *c, int pair, attr_t fallback)
{
	if (c->colours)
		attroff(COLOR_PAIR(pair));
	else
		attroff(fallback);
}

static void local_hms(int64_t ms, int utc_offset_s, char *out, size_t cap, int secs)
{
	int64_t local = (ms >= 0 ? ms / 1000 : 0) + utc_offset_s;
	int64_t sod = ((local % 86400) + 86400) % 86400;

	if (secs)
		snprintf(out, cap, "%02d:%02d:%02d", (int)(sod / 3600), (int)(sod % 3600 / 60),
		         (int)(sod % 60));
	else
		snprintf(out, cap, "%02d:%02d", (int)(sod / 3600), (int)(sod % 3600 / 60));
}

static const char *mode_name(enum kp_console_mode m, int ja)
{
	switch (m) {
	case KP_CONSOLE_CONFIRM:  return ja ? "確認 confirm" : "confirm";
	case KP_CONSOLE_VALIDATE: return ja ? "確認のみ validate" : "validate only";
	default:                  return ja ? "通常 charge" : "charge";
	}
}

static void draw_title(kp_console *c, const struct kp_console_status *st, int cols)
{
	char buf[256], now[16], from[8];

	local_hms(st->now_ms, c->utc_offset_s, now, sizeof(now), 1);
	attron(A_REVERSE | A_BOLD);
	fill_row(0, cols);
	if (st->driver[0] != '\0') {
		local_hms(st->shift_start_ms, c->utc_offset_s, from, sizeof(from), 0);
		snprintf(buf, sizeof(buf), " kippu %s %s | %s %s %s~ | %s %ld | %s",
		         c->terminal_id, c->route, c->lang_ja ? "運転士" : "Driver", st->driver, from,
		         c->lang_ja ? "乗車" : "riders", st->shift_riders, mode_name(st->mode, 0));
	} else {
		snprintf(buf, sizeof(buf), " kippu %s %s | %s | %s", c->terminal_id, c->route,
		         c->lang_ja ? "乗務前 no shift (S)" : "no shift (S to start)",
		         mode_name(st->mode, 0));
	}
	put(c, 0, 0, buf, cols - 9);
	put(c, 0, cols - 9, now, 9);
	attroff(A_REVERSE | A_BOLD);
}

static void banner_words(const struct kp_console_tap *t, const char **ja, const char **en,
                         int *pair)
{
	if (t->pending) {
		*ja = "確認待ち";
		*en = "WAITING FOR DRIVER";
		*pair = P_PENDING;
	} else if (t->result == KP_HMI_ACCEPTED) {
		*ja = "◯ 乗車OK";
		*en = "ACCEPTED";
		*pair = P_OK;
	} else if (t->result == KP_HMI_ALREADY) {
		*ja = "△ 乗車済";
		*en = "ALREADY VALIDATED";
		*pair = P_ALREADY;
	} else if (t->result == KP_HMI_INFO) {
		int start = strcmp(t->rec_result, "start") == 0, end = strcmp(t->rec_result, "end") == 0;

		*ja = start ? "ⓘ 乗務開始" : end ? "ⓘ 乗務終了" : "ⓘ カード内容";
		*en = start ? "SHIFT STARTED" : end ? "SHIFT ENDED" : "CARD CONTENTS";
		*pair = P_INFO;
	} else {
		*ja = "✕ 乗車不可";
		*en = "REFUSED";
		*pair = P_NG;
	}
}

static void draw_banner(kp_console *c, const struct kp_console_tap *t, int have, int y0,
                        int rows, int cols)
{
	const char *ja, *en;
	char buf[256];
	int pair;

	if (!have) {
		put_centre(c, y0 + rows / 2, c->lang_ja ? "カードをタッチしてください  Please tap a card"
		                                         : "Please tap a card  カードをタッチしてください");
		return;
	}
	banner_words(t, &ja, &en, &pair);
	on(c, pair, A_REVERSE);
	attron(A_BOLD);
	for (int y = y0; y < y0 + rows; y++)
		fill_row(y, cols);
	if (!c->utf8)
		snprintf(buf, sizeof(buf), "*** %s ***", en);
	else if (c->lang_ja)
		snprintf(buf, sizeof(buf), "%s   %s", ja, en);
	else
		snprintf(buf, sizeof(buf), "%s   %s", en, ja);
	put_centre(c, y0 + (rows > 3 ? 1 : 0), buf);
	attroff(A_BOLD);
	{
		const char *r1 = kp_console_reason_text(t->reason, t->rec_result, c->lang_ja);
		const char *r2 = kp_console_reason_text(t->reason, t->rec_result, !c->lang_ja);

		char s1[160], s2[160];

		if (t->pending) {
			r1 = kp_reason_text(kp_reason_code(KP_R_CONFIRM), c->lang_ja);
			r2 = kp_reason_text(kp_reason_code(KP_R_CONFIRM), !c->lang_ja);
		} else if (strcmp(t->rec_result, "start") == 0 || strcmp(t->rec_result, "end") == 0) {
			int start = t->rec_result[0] == 's';

			snprintf(s1, sizeof(s1), "%s %s", c->lang_ja ? (start ? "乗務開始" : "乗務終了") :
			         (start ? "Shift started:" : "Shift ended:"), t->driver);
			snprintf(s2, sizeof(s2), "%s %s", !c->lang_ja ? (start ? "乗務開始" : "乗務終了") :
			         (start ? "Shift started:" : "Shift ended:"), t->driver);
			r1 = s1;
			r2 = s2;
		}
		if (rows > 2)
			put_centre(c, y0 + (rows > 3 ? 2 : 1), r1);
		if (rows > 3 && c->utf8)
			put_centre(c, y0 + 3, r2);
	}
	off(c, pair, A_REVERSE);
}

static void draw_details(kp_console *c, const struct kp_console_tap *t, int y, int rows,
                         int cols)
{
	char buf[256], when[16];
	int line = 0;

	if (t->n_detail > 0) {
		for (int i = 0; i < t->n_detail && line < rows; i++)
			put(c, y + line++, 2, t->detail[i], cols - 4);
		return;
	}
	if (t->product[0] != '\0' || t->rides_left >= 0) {
		char left[96] = "";

		if (t->until_text[0] != '\0')
			snprintf(left, sizeof(left), "%s %s", c->lang_ja ? "有効期限" : "valid until",
			         t->until_text);
		else if (t->stored)
			snprintf(left, sizeof(left), "%s %lld", c->lang_ja ? "残高 balance" : "balance 残高",
			         (long long)t->rides_left);
		else if (t->rides_left >= 0)
			snprintf(left, sizeof(left), "%s %lld %s", c->lang_ja ? "残り" : "left",
			         (long long)t->rides_left, c->lang_ja ? "回 rides" : "rides 回");
		snprintf(buf, sizeof(buf), "%s %-12s %s", c->lang_ja ? "券種 Product:" : "Product 券種:",
		         t->product[0] != '\0' ? t->product : "-", left);
		if (t->amount > 0) {
			size_t n = strlen(buf);

			snprintf(buf + n, sizeof(buf) - n, "  %s %lld", c->lang_ja ? "運賃 fare" : "fare 運賃",
			         (long long)t->amount);
		}
		put(c, y + line++, 2, buf, cols - 4);
	}
	if (line < rows && (t->result == KP_HMI_ACCEPTED || t->category[0] != '\0')) {
		snprintf(buf, sizeof(buf), "%s %s (%s)%s", c->lang_ja ? "区分 Category:" : "Category 区分:",
		         kp_console_category_text(t->category, c->lang_ja),
		         kp_console_category_text(t->category, !c->lang_ja),
		         t->linked ? (c->lang_ja ? "  マイナンバー連携 My Number linked"
		                                 : "  My Number linked マイナンバー連携") : "");
		put(c, y + line++, 2, buf, cols - 4);
	}
	if (line < rows && t->warn_days == 0) {
		snprintf(buf, sizeof(buf), "%s", c->lang_ja ? "区分の期限は今日まで category ends today: renew"
		                                           : "category ends today: renew 区分の期限は今日まで");
		put(c, y + line++, 2, buf, cols - 4);
	} else if (line < rows && t->warn_days > 0) {
		snprintf(buf, sizeof(buf), "%s %d %s", c->lang_ja ? "区分の期限まで" : "category ends in",
		         t->warn_days, c->lang_ja ? "日 days: renew" : "days: renew");
		put(c, y + line++, 2, buf, cols - 4);
	}
	if (line < rows && t->card[0] != '\0' && t->driver[0] == '\0' &&
	    (t->result == KP_HMI_ACCEPTED || t->result == KP_HMI_ALREADY || t->trip_seen)) {
		if (t->trip_seen) {
			local_hms(t->trip_seen_ms, c->utc_offset_s, when, sizeof(when), 1);
			snprintf(buf, sizeof(buf), "%s %s", c->lang_ja ?
			         "この便で乗車済 Already validated on this trip at" :
			         "Already validated on this trip at 乗車済", when);
			on(c, P_WARN, A_BOLD);
			put(c, y + line++, 2, buf, cols - 4);
			off(c, P_WARN, A_BOLD);
		} else {
			put(c, y + line++, 2, c->lang_ja ? "この便で初回 First validation on this trip"
			                                 : "First validation on this trip 初回", cols - 4);
		}
	}
	if (line < rows) {
		local_hms(t->time_ms, c->utc_offset_s, when, sizeof(when), 1);
		snprintf(buf, sizeof(buf), "%s %s%s%s  seq %llu  %s%s", when,
		         t->card[0] != '\0' ? "card #" : "", t->card, t->card[0] != '\0' ? "" : "no card",
		         (unsigned long long)t->seq, t->driver[0] != '\0' ? "driver " : "", t->driver);
		put(c, y + line++, 2, buf, cols - 4);
	}
}

static void draw_recent(kp_console *c, int y, int rows, int cols)
{
	char buf[200], when[16];

	attron(A_BOLD);
	put(c, y, 0, c->lang_ja ? "最近 Recent" : "Recent 最近", cols);
	attroff(A_BOLD);
	for (size_t i = 0; i < c->n_recent && (int)i < rows - 1; i++) {
		const struct kp_console_tap *t = &c->recent[i];
		const char *mark = t->result == KP_HMI_ACCEPTED ? "OK" :
		                   t->result == KP_HMI_ALREADY ? "==" : "NG";

		local_hms(t->time_ms, c->utc_offset_s, when, sizeof(when), 1);
		snprintf(buf, sizeof(buf), " %s %s %-20s %-10s %s%s%s", when, mark, t->reason,
		         t->product[0] != '\0' ? t->product : "-", t->category,
		         t->driver[0] != '\0' ? " driver " : "", t->driver);
		put(c, y + 1 + (int)i, 0, buf, cols);
	}
}

static void draw_status(kp_console *c, const struct kp_console_status *st, int y, int cols)
{
	char buf[256], when[16];
	int x = 0;
	int64_t age = st->denylist_ms > 0 ? (st->now_ms - st->denylist_ms) / 1000 : -1;
	int stale = age < 0 || age > c->cc.denylist_max_age_s;

	move(y, 0);
	clrtoeol();
	snprintf(buf, sizeof(buf), "Reader %s", st->reader_online ? "online" : "OFFLINE");
	if (!st->reader_online)
		on(c, P_WARN, A_REVERSE);
	x += put(c, y, x, buf, cols - x);
	if (!st->reader_online)
		off(c, P_WARN, A_REVERSE);
	if (!st->have_sync)
		snprintf(buf, sizeof(buf), " | Sync -, %llu unsent",
		         (unsigned long long)st->waiting);
	else if (st->last_sync_ms == 0)
		snprintf(buf, sizeof(buf), " | Sync never%s, %llu unsent",
		         st->sync_failed ? " FAIL" : "", (unsigned long long)st->waiting);
	else {
		local_hms(st->last_sync_ms, c->utc_offset_s, when, sizeof(when), 0);
		snprintf(buf, sizeof(buf), " | Sync %s%s, %llu unsent", when,
		         st->sync_failed ? " FAIL" : "", (unsigned long long)st->waiting);
	}
	x += put(c, y, x, buf, cols - x);
	x += put(c, y, x, " | ", cols - x);
	if (age < 0)
		snprintf(buf, sizeof(buf), "Denylist no sync!");
	else if (age < 3600)
		snprintf(buf, sizeof(buf), "Denylist %lldm%s", (long long)(age / 60), stale ? " OLD!" : "");
	else
		snprintf(buf, sizeof(buf), "Denylist %lldh%s", (long long)(age / 3600),
		         stale ? " OLD!" : "");
	if (stale)
		on(c, P_WARN, A_REVERSE);
	x += put(c, y, x, buf, cols - x);
	if (stale)
		off(c, P_WARN, A_REVERSE);
	snprintf(buf, sizeof(buf), " | Clock %s", st->clock);
	put(c, y, x, buf, cols - x);
}

static void draw_keys(kp_console *c, int y, int cols)
{
	char buf[256];

	move(y, 0);
	clrtoeol();
	attron(A_REVERSE);
	switch (c->input) {
	case IN_DRIVER:
		snprintf(buf, sizeof(buf), " %s: %s_   (Enter OK, Esc cancel)",
		         c->lang_ja ? "運転士ID Driver id" : "Driver id 運転士ID", c->inbuf);
		break;
	case IN_OVERRIDE:
		snprintf(buf, sizeof(buf), " Override: 1 unreadable 2 paper-pass 3 reader-down "
		         "4 discretion  Esc");
		break;
	case IN_QUIT:
		snprintf(buf, sizeof(buf), " %s (y/n)", c->lang_ja ? "終了しますか Quit?" : "Quit? 終了");
		break;
	default:
		snprintf(buf, sizeof(buf), " S shift E end B board R refuse O override M mode "
		         "V validate T trip L lang ? Q");
	}
	fill_row(y, cols);
	put(c, y, 0, buf, cols);
	attroff(A_REVERSE);
}

static void draw_overlay(kp_console *c, const char *title, const char *text, int top,
                         int bottom, int cols)
{
	int y = top;
	const char *p = text;

	for (int r = top; r <= bottom; r++) {
		move(r, 0);
		clrtoeol();
	}
	attron(A_BOLD);
	put(c, y++, 1, title, cols - 2);
	attroff(A_BOLD);
	/* One text line per row, wrapped at spaces to the width. */
	while (*p != '\0' && y < bottom) {
		char line[512];
		const char *nl = strchr(p, '\n');
		size_t n = nl != NULL ? (size_t)(nl - p) : strlen(p);

		if (n >= sizeof(line))
			n = sizeof(line) - 1;
		memcpy(line, p, n);
		line[n] = '\0';
		p = nl != NULL ? nl + 1 : p + strlen(p);
		{
			char *s = line;

			while (*s != '\0' && y < bottom) {
				int w = width(c, s);
				char *cut = NULL;

				if (w <= cols - 3) {
					put(c, y++, 2, s, cols - 3);
					break;
				}
				/* The last space that keeps the line inside the width. */
				for (char *q = s; *q != '\0'; q++) {
					if (*q == ' ') {
						char keep = *q;

						*q = '\0';
						if (width(c, s) <= cols - 3)
							cut = q;
						*q = keep;
					}
				}
				if (cut == NULL) {
					put(c, y++, 2, s, cols - 3);
					break;
				}
				*cut = '\0';
				put(c, y++, 2, s, cols - 3);
				s = cut + 1;
				while (*s == ' ')
					s++;
				if (y < bottom)
					put(c, y, 2, "  ", 2);
			}
		}
	}
}

static const char help_text[] =
	"S  shift start (driver id, Enter) / 乗務開始\n"
	"E  shift end: summary / 乗務終了と集計\n"
	"B  board: charge the card shown (confirm mode) / 乗車確定\n"
	"R  refuse the last card / 乗車拒否\n"
	"O  override with a reason 1-4 / 運転士判断で乗車\n"
	"M  mode: charge, confirm, validate / モード切替\n"
	"V  validation only on/off (nothing charged) / 確認のみ\n"
	"T  new trip / 新しい便\n"
	"L  language 日本語/English\n"
	"Q  quit / 終了";

static void draw(kp_console *c)
{
	struct kp_console_status st;
	struct kp_console_tap t;
	char msg[200];
	int have, warn, rows, cols, banner_rows, detail_y, recent_y;

	pthread_mutex_lock(&c->mu);
	st = c->st;
	t = c->tap;
	have = c->tap_gen > 0;
	snprintf(msg, sizeof(msg), "%s", c->msg);
	warn = c->msg_warn;
	pthread_mutex_unlock(&c->mu);

	getmaxyx(stdscr, rows, cols);
	erase();
	if (rows < 8 || cols < 30) {
		put(c, 0, 0, "kippu: window too small", cols);
		refresh();
		return;
	}
	draw_title(c, &st, cols);
	banner_rows = rows >= 24 ? 5 : 3;
	draw_banner(c, &t, have, 2, banner_rows, cols);
	detail_y = 2 + banner_rows + 1;
	recent_y = detail_y + 7;
	if (have)
		draw_details(c, &t, detail_y, (recent_y < rows - 4 ? recent_y : rows - 4) - detail_y,
		             cols);
	if (rows - 4 - recent_y >= 2) {
		pthread_mutex_lock(&c->mu);
		draw_recent(c, recent_y, rows - 4 - recent_y, cols);
		pthread_mutex_unlock(&c->mu);
	}
	if (c->input == IN_HELP)
		draw_overlay(c, c->lang_ja ? "キー操作 Keys (any key closes)" : "Keys キー操作 (any key closes)",
		             help_text, 2, rows - 3, cols);
	if (c->input == IN_SUMMARY)
		draw_overlay(c, c->lang_ja ? "乗務集計 (何かキーで閉じる / any key closes)"
		                           : "Shift summary (any key closes / 何かキーで閉じる)",
		             c->shown_summary, 2, rows - 3, cols);
	move(rows - 3, 0);
	clrtoeol();
	if (msg[0] != '\0') {
		if (warn)
			on(c, P_WARN, A_BOLD);
		put(c, rows - 3, 0, msg, cols);
		if (warn)
			off(c, P_WARN, A_BOLD);
	}
	draw_keys(c, rows - 2, cols);
	draw_status(c, &st, rows - 1, cols);
	refresh();
}

/* A distinct pattern per result, so the driver need not read: one beep accepted, two
 * already validated, three refused. */
static void play(kp_console *c, const struct kp_console_tap *t)
{
	int n = t->pending ? 1 : t->result == KP_HMI_ACCEPTED ? 1 :
	        t->result == KP_HMI_ALREADY ? 2 : t->result == KP_HMI_REFUSED ? 3 : 0;

	if (!c->cc.beep)
		return;
	for (int i = 0; i < n; i++) {
		beep();
		if (i + 1 < n)
			napms(120);
	}
	if (t->result == KP_HMI_REFUSED && !c->colours)
		flash();
}

static void keyname_of(wint_t ch, int is_key, char *out, size_t cap)
{
	if (is_key)
		snprintf(out, cap, "%s", keyname((int)ch) != NULL ? keyname((int)ch) : "key");
	else if (ch < 0x20 || ch == 0x7f)
		snprintf(out, cap, "^%c", (char)((ch + 0x40) & 0x7f));
	else if (ch < 0x80)
		snprintf(out, cap, "%c", (char)ch);
	else
		snprintf(out, cap, "U+%04X", (unsigned)ch);
}

static void set_msg(kp_console *c, int warn, const char *fmt, ...)
	__attribute__((format(printf, 3, 4)));
static void set_msg(kp_console *c, int warn, const char *fmt, ...)
{
	va_list ap;

	pthread_mutex_lock(&c->mu);
	va_start(ap, fmt);
	vsnprintf(c->msg, sizeof(c->msg), fmt, ap);
	va_end(ap);
	c->msg_warn = warn;
	c->msg_mono = mono_now();
	pthread_mutex_unlock(&c->mu);
}

static void on_key(kp_console *c, wint_t ch, int is_key)
{
	char name[32];

	if (is_key && ch == KEY_RESIZE)
		return;
	switch (c->input) {
	case IN_HELP:
	case IN_SUMMARY:
		c->input = IN_NONE;
		return;
	case IN_QUIT:
		c->input = IN_NONE;
		if (!is_key && (ch == 'y' || ch == 'Y'))
			push_action(c, KP_ACT_QUIT, NULL, 0);
		else
			set_msg(c, 0, "%s", c->lang_ja ? "続行します Not quitting" : "Not quitting");
		return;
	case IN_OVERRIDE:
		c->input = IN_NONE;
		if (!is_key && ch >= '1' && ch <= '0' + KP_DRIVER_OVERRIDES)
			push_action(c, KP_ACT_OVERRIDE, kp_driver_override_reason((int)(ch - '0')), 0);
		else
			set_msg(c, 1, "%s", c->lang_ja ? "取消 Override cancelled" : "Override cancelled");
		return;
	case IN_DRIVER:
		if (!is_key && (ch == '\n' || ch == '\r')) {
			c->input = IN_NONE;
			if (kp_valid_id(c->inbuf))
				push_action(c, KP_ACT_SHIFT_START, c->inbuf, 0);
			else
				set_msg(c, 1, "Driver id: 1-32 of A-Z a-z 0-9 - _ . / 運転士IDが正しくありません");
		} else if (!is_key && ch == 27) {
			c->input = IN_NONE;
			set_msg(c, 0, "Shift start cancelled");
		} else if ((is_key && ch == KEY_BACKSPACE) || (!is_key && (ch == 127 || ch == 8))) {
			if (c->inlen > 0)
				c->inbuf[--c->inlen] = '\0';
		} else if (!is_key && ch < 0x80 && (isalnum((int)ch) || ch == '-' || ch == '_' ||
		                                    ch == '.') && c->inlen < KP_ID_MAX) {
			c->inbuf[c->inlen++] = (char)ch;
			c->inbuf[c->inlen] = '\0';
		} else {
			keyname_of(ch, is_key, name, sizeof(name));
			set_msg(c, 1, "'%s' cannot be part of a driver id (A-Z a-z 0-9 - _ .)", name);
		}
		return;
	default:
		break;
	}
	if (!is_key && ch < 0x80) {
		switch (ch) {
		case 's': case 'S':
			c->input = IN_DRIVER;
			c->inbuf[0] = '\0';
			c->inlen = 0;
			return;
		case 'e': case 'E': push_action(c, KP_ACT_SHIFT_END, NULL, 0); return;
		case 'b': case 'B': push_action(c, KP_ACT_BOARD, NULL, 0); return;
		case 'r': case 'R':
			push_action(c, KP_ACT_REFUSE, kp_reason_code(KP_R_DRIVER_REFUSED), 0);
			return;
		case 'o': case 'O': c->input = IN_OVERRIDE; return;
		case 'm': case 'M': push_action(c, KP_ACT_MODE, NULL, -1); return;
		case 'v': case 'V': push_action(c, KP_ACT_MODE, NULL, KP_CONSOLE_VALIDATE); return;
		case 't': case 'T': push_action(c, KP_ACT_TRIP, NULL, 0); return;
		case 'l': case 'L':
			c->lang_ja = !c->lang_ja;
			push_action(c, KP_ACT_LANG, NULL, c->lang_ja);
			return;
		case '?': case 'h': case 'H': c->input = IN_HELP; return;
		case 'q': case 'Q': c->input = IN_QUIT; return;
		case 12: clearok(stdscr, TRUE); return;          /* Ctrl-L redraws */
		default: break;
		}
	}
	keyname_of(ch, is_key, name, sizeof(name));
	set_msg(c, 1, "%s '%s': ? %s", c->lang_ja ? "不明なキー Unknown key" : "Unknown key",
	        name, c->lang_ja ? "でキー一覧 for the keys" : "for the keys");
	push_action(c, KP_ACT_BADKEY, name, 0);
}

static int start_screen(kp_console *c)
{
	c->scr = newterm(NULL, stdout, stdin);
	if (c->scr == NULL) {
		snprintf(c->err, sizeof(c->err), "curses cannot start on TERM=%s",
		         getenv("TERM") != NULL ? getenv("TERM") : "(unset)");
		return -1;
	}
	set_term(c->scr);
	cbreak();
	noecho();
	nonl();
	keypad(stdscr, TRUE);
	set_escdelay(50);
	curs_set(0);
	wtimeout(stdscr, 100);
	c->colours = 0;
	if (c->cc.colour && has_colors() && start_color() == OK) {
		use_default_colors();
		init_pair(P_OK, COLOR_BLACK, COLOR_GREEN);
		init_pair(P_NG, COLOR_WHITE, COLOR_RED);
		init_pair(P_ALREADY, COLOR_BLACK, COLOR_YELLOW);
		init_pair(P_INFO, COLOR_WHITE, COLOR_BLUE);
		init_pair(P_WARN, COLOR_RED, -1);
		init_pair(P_PENDING, COLOR_BLACK, COLOR_CYAN);
		init_pair(P_TITLE, COLOR_WHITE, COLOR_BLUE);
		c->colours = 1;
	}
	return 0;
}

static void *console_main(void *arg)
{
	kp_console *c = arg;
	int64_t last_draw = 0;

	pthread_mutex_lock(&c->mu);
	c->started = start_screen(c) == 0 ? 1 : -1;
	pthread_cond_signal(&c->cv);
	pthread_mutex_unlock(&c->mu);
	if (c->started != 1)
		return NULL;
	for (;;) {
		wint_t ch;
		int rc, stop, dirty = 0;
		unsigned gen, sgen;
		struct kp_console_tap t;
		struct timespec ts;
		int64_t now;

		pthread_mutex_lock(&c->mu);
		stop = c->stop;
		gen = c->tap_gen;
		sgen = c->summary_gen;
		t = c->tap;
		if (sgen != c->seen_summary_gen)
			snprintf(c->shown_summary, sizeof(c->shown_summary), "%s", c->summary);
		pthread_mutex_unlock(&c->mu);
		if (stop)
			break;
		if (sgen != c->seen_summary_gen) {
			c->seen_summary_gen = sgen;
			c->input = IN_SUMMARY;
			dirty = 1;
		}
		if (gen != c->seen_tap_gen) {
			c->seen_tap_gen = gen;
			draw(c);
			play(c, &t);
			dirty = 0;
			last_draw = 0;
		}
		rc = wget_wch(stdscr, &ch);
		if (rc != ERR) {
			on_key(c, ch, rc == KEY_CODE_YES);
			dirty = 1;
		}
		clock_gettime(CLOCK_MONOTONIC, &ts);
		now = (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
		if (dirty || now - last_draw >= 250) {
			draw(c);
			last_draw = now;
		}
	}
	endwin();
	delscreen(c->scr);
	c->scr = NULL;
	return NULL;
}

int kp_console_open(kp_console **out, const struct kp_console_cfg *cc,
                    const struct kp_terminal_cfg *cfg, char *err, size_t err_cap)
{
	kp_console *c;
	const char *cs;

	*out = NULL;
	if (!isatty(STDIN_FILENO) || !isatty(STDOUT_FILENO)) {
		snprintf(err, err_cap, "--console needs a terminal on stdin and stdout");
		return KP_E_IO;
	}
	c = calloc(1, sizeof(*c));
	if (c == NULL)
		return KP_E_NOMEM;
	c->cc = *cc;
	c->lang_ja = cc->lang_ja;
	c->utc_offset_s = cfg->utc_offset_s;
	snprintf(c->terminal_id, sizeof(c->terminal_id), "%s", cfg->terminal_id);
	snprintf(c->operator_id, sizeof(c->operator_id), "%s", cfg->operator_id);
	snprintf(c->route, sizeof(c->route), "%s", cfg->route[0] ? cfg->route : "-");
	snprintf(c->stop_id, sizeof(c->stop_id), "%s", cfg->stop[0] ? cfg->stop : "-");
	c->st.reader_online = 1;
	c->st.mode = cc->mode;
	snprintf(c->st.clock, sizeof(c->st.clock), "?");
	/* The wide-character screen needs the user's locale; Japanese needs it to be UTF-8. */
	setlocale(LC_ALL, "");
	cs = nl_langinfo(CODESET);
	c->utf8 = cs != NULL && strcmp(cs, "UTF-8") == 0;
	if (!c->utf8)
		c->lang_ja = 0;
	pthread_mutex_init(&c->mu, NULL);
	pthread_cond_init(&c->cv, NULL);
	if (pthread_create(&c->thread, NULL, console_main, c) != 0) {
		snprintf(err, err_cap, "cannot start the console thread");
		pthread_mutex_destroy(&c->mu);
		pthread_cond_destroy(&c->cv);
		free(c);
		return KP_E_NOMEM;
	}
	pthread_mutex_lock(&c->mu);
	while (c->started == 0)
		pthread_cond_wait(&c->cv, &c->mu);
	pthread_mutex_unlock(&c->mu);
	if (c->started != 1) {
		snprintf(err, err_cap, "%s", c->err);
		pthread_join(c->thread, NULL);
		pthread_mutex_destroy(&c->mu);
		pthread_cond_destroy(&c->cv);
		free(c);
		return KP_E_IO;
	}
	*out = c;
	return KP_OK;
}

void kp_console_close(kp_console *c)
{
	if (c == NULL)
		return;
	pthread_mutex_lock(&c->mu);
	c->stop = 1;
	pthread_mutex_unlock(&c->mu);
	pthread_join(c->thread, NULL);
	pthread_mutex_destroy(&c->mu);
	pthread_cond_destroy(&c->cv);
	free(c);
}
