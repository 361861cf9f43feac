/* SPDX-License-Identifier: Apache-2.0 */
/* Driver actions, shifts and shift summaries. Everything a driver does is a journal record
 * signed like a tap, so the summary of a shift is computed from the journal alone and
 * survives a restart. */
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "kp_console.h"

int kp_driver_journal(kp_tap_engine *e, const char *kind, const char *result,
                      const char *reason, const char *driver, const uint8_t *token,
                      const char *note, int64_t now_ms, uint64_t *seq)
{
	struct kp_record rec;
	int rc;

	if (e == NULL || kind == NULL || result == NULL || reason == NULL || driver == NULL ||
	    !kp_valid_id(driver) || !kp_valid_id(result) || !kp_valid_id(reason))
		return KP_E_INVAL;
	memset(&rec, 0, sizeof(rec));
	rec.time_ms = now_ms;
	snprintf(rec.result, sizeof(rec.result), "%s", result);
	snprintf(rec.reason, sizeof(rec.reason), "%s", reason);
	snprintf(rec.driver, sizeof(rec.driver), "%s", driver);
	if (token != NULL) {
		rec.has_token = 1;
		memcpy(rec.token, token, KP_TOKEN_LEN);
	}
	if (note != NULL)
		snprintf(rec.fare, sizeof(rec.fare), "%s", note);
	rc = kp_tap_journal(e, &rec, kind);
	if (rc == KP_OK && seq != NULL)
		*seq = rec.seq;
	return rc;
}

static void table_add(struct kp_summary_table *t, const char *key, long n)
{
	for (size_t i = 0; i < t->n; i++) {
		if (strcmp(t->c[i].key, key) == 0) {
			t->c[i].n += n;
			return;
		}
	}
	if (t->n == KP_SUMMARY_KEYS) {
		t->other += n;
		return;
	}
	snprintf(t->c[t->n].key, sizeof(t->c[t->n].key), "%s", key);
	t->c[t->n].n = n;
	t->n++;
}

void kp_shift_summary_add(struct kp_shift_summary *sum, const struct kp_record *rec)
{
	int override = strncmp(rec->reason, "override-", 9) == 0;

	if (strcmp(rec->kind, "shift") == 0) {
		if (strcmp(rec->result, "start") == 0) {
			snprintf(sum->driver, sizeof(sum->driver), "%s", rec->driver);
			sum->start_seq = rec->seq;
			sum->start_ms = rec->time_ms;
		} else if (strcmp(rec->result, "end") == 0) {
			sum->end_seq = rec->seq;
			sum->end_ms = rec->time_ms;
		}
		return;
	}
	if (strcmp(rec->kind, "tap") != 0)
		return;
	/* A driver's confirmation of a boarding follows the decision it confirms: the
	 * decision counted the rider. */
	if (strcmp(rec->result, "confirmed") == 0)
		return;
	if (rec->driver[0] == '\0')
		sum->taps++;
	if (strcmp(rec->result, "accepted") == 0) {
		sum->riders++;
		table_add(&sum->by_category, rec->category[0] != '\0' ? rec->category : "adult", 1);
		table_add(&sum->by_product, rec->product[0] != '\0' ? rec->product :
		          override ? "override" : "-", 1);
		if (rec->amount > 0) {
			sum->fares += rec->amount;
			sum->fares_n++;
		}
		if (override)
			table_add(&sum->overrides, rec->reason, 1);
	} else if (strcmp(rec->result, "already") == 0) {
		sum->already++;
	} else {
		sum->refused++;
		table_add(&sum->refusals, rec->reason, 1);
		if (override)
			table_add(&sum->overrides, rec->reason, 1);
	}
}

struct scan {
	uint64_t from;
	struct kp_shift_summary *sum;
	int open;                        /* find_open: the last shift record seen was a start */
	int done;
};

static int decode_row(const struct kp_journal_row *row, struct kp_record *rec)
{
	return kp_record_decode(row->payload, row->payload_len, rec) == 0 ? 0 : -1;
}

static int scan_shift(const struct kp_journal_row *row, void *arg)
{
	struct scan *sc = arg;
	struct kp_record rec;

	if (row->seq < sc->from)
		return 0;
	if (decode_row(row, &rec) != 0)
		return 0;                    /* kp_journal_verify's business, not the summary's */
	if (row->seq == sc->from && (strcmp(rec.kind, "shift") != 0 ||
	                             strcmp(rec.result, "start") != 0))
		return 1;
	if (row->seq > sc->from && strcmp(rec.kind, "shift") == 0 &&
	    strcmp(rec.result, "start") == 0)
		return 2;                    /* a start without an end: the shift ended there */
	kp_shift_summary_add(sc->sum, &rec);
	if (strcmp(rec.kind, "shift") == 0 && strcmp(rec.result, "end") == 0)
		return 2;
	return 0;
}

int kp_shift_summary_compute(kp_store *s, uint64_t start_seq, struct kp_shift_summary *out)
{
	struct scan sc = { start_seq, out, 0, 0 };
	int rc;

	memset(out, 0, sizeof(*out));
	rc = kp_journal_foreach(s, scan_shift, &sc);
	if (rc == 1 || out->start_seq == 0)
		return KP_E_INVAL;           /* start_seq is no shift start */
	return rc < 0 ? rc : KP_OK;
}

static int scan_open(const struct kp_journal_row *row, void *arg)
{
	struct scan *sc = arg;
	struct kp_record rec;

	if (decode_row(row, &rec) != 0)
		return 0;
	if (strcmp(rec.kind, "shift") == 0 && strcmp(rec.result, "start") == 0) {
		memset(sc->sum, 0, sizeof(*sc->sum));
		sc->open = 1;
	} else if (strcmp(rec.kind, "shift") == 0 && strcmp(rec.result, "end") == 0) {
		sc->open = 0;
	}
	if (sc->open)
		kp_shift_summary_add(sc->sum, &rec);
	return 0;
}

int kp_shift_find_open(kp_store *s, struct kp_shift_summary *sum, int *found)
{
	struct scan sc = { 0, sum, 0, 0 };
	int rc;

	memset(sum, 0, sizeof(*sum));
	*found = 0;
	rc = kp_journal_foreach(s, scan_open, &sc);
	if (rc < 0)
		return rc;
	*found = sc.open;
	if (!sc.open)
		memset(sum, 0, sizeof(*sum));
	return KP_OK;
}

/* Appends printf output to out at *len, never past cap. */
static void put(char *out, size_t cap, size_t *len, const char *fmt, ...)
	__attribute__((format(printf, 4, 5)));

static void put(char *out, size_t cap, size_t *len, const char *fmt, ...)
{
	va_list ap;
	int n;

	if (*len >= cap)
		return;
	va_start(ap, fmt);
	n = vsnprintf(out + *len, cap - *len, fmt, ap);
	va_end(ap);
	if (n < 0)
		return;
	*len = (size_t)n >= cap - *len ? cap - 1 : *len + (size_t)n;
}

static void put_table(char *out, size_t cap, size_t *len, const struct kp_summary_table *t,
                      int categories, int ja)
{
	if (t->n == 0 && t->other == 0)
		put(out, cap, len, " -");
	for (size_t i = 0; i < t->n; i++) {
		if (categories)
			put(out, cap, len, " %s(%s) %ld", t->c[i].key,
			    kp_console_category_text(t->c[i].key, ja), t->c[i].n);
		else
			put(out, cap, len, " %s %ld", t->c[i].key, t->c[i].n);
	}
	if (t->other > 0)
		put(out, cap, len, " other %ld", t->other);
	put(out, cap, len, "\n");
}

static void hhmm(int64_t ms, int utc_offset_s, char out[6])
{
	int64_t local = ms / 1000 + utc_offset_s;
	int64_t sod = ((local % 86400) + 86400) % 86400;

	snprintf(out, 6, "%02d:%02d", (int)(sod / 3600), (int)(sod % 3600 / 60));
}

void kp_shift_summary_format(const struct kp_shift_summary *sum, int ja, int utc_offset_s,
                             char *out, size_t cap)
{
	char from[6], to[6];
	size_t len = 0;
	long overrides = 0;

	if (cap == 0)
		return;
	out[0] = '\0';
	hhmm(sum->start_ms, utc_offset_s, from);
	if (sum->end_seq != 0)
		hhmm(sum->end_ms, utc_offset_s, to);
	else
		snprintf(to, sizeof(to), "--:--");
	for (size_t i = 0; i < sum->overrides.n; i++)
		overrides += sum->overrides.c[i].n;
	overrides += sum->overrides.other;
	put(out, cap, &len, "%s  driver %s  %s-%s  records %llu-%llu\n",
	    ja ? "乗務終了 SHIFT SUMMARY" : "SHIFT SUMMARY 乗務終了", sum->driver, from, to,
	    (unsigned long long)sum->start_seq,
	    (unsigned long long)(sum->end_seq != 0 ? sum->end_seq : sum->start_seq));
	put(out, cap, &len, "Riders 乗車: %ld   taps %ld, already %ld, refused %ld\n",
	    sum->riders, sum->taps, sum->already, sum->refused);
	put(out, cap, &len, "By category 区分別:");
	put_table(out, cap, &len, &sum->by_category, 1, ja);
	put(out, cap, &len, "By product 券種別:");
	put_table(out, cap, &len, &sum->by_product, 0, ja);
	put(out, cap, &len, "Fares charged 運賃: %lld (%ld fare%s)\n", (long long)sum->fares,
	    sum->fares_n, sum->fares_n == 1 ? "" : "s");
	put(out, cap, &len, "Refusals 乗車拒否:");
	put_table(out, cap, &len, &sum->refusals, 0, ja);
	put(out, cap, &len, "Overrides 運転士判断: %ld", overrides);
	if (overrides > 0) {
		put(out, cap, &len, " ");
		put_table(out, cap, &len, &sum->overrides, 0, ja);
	} else {
		put(out, cap, &len, "\n");
	}
}

/* ---- the console session (the tap thread's side of the console) ---- */

#include <pthread.h>
#include <sys/timex.h>
#include <time.h>

#include "kp_store.h"

#define RING_MAX        1024         /* recent records kept for "already on this trip" */
#define LAST_CARD_MS    120000       /* a refusal or override refers to a card this recent */
#define LAST_RECS       8            /* taps a restarted console lists as recent */

struct ring_ent {
	uint8_t token[KP_TOKEN_LEN];
	uint64_t seq;
	int64_t time_ms;
	int accepted;
};

struct kp_session {
	struct kp_session_io io;
	enum kp_console_mode mode;
	int lang_ja;

	struct ring_ent ring[RING_MAX];
	size_t ring_head, ring_n;

	int shift_open;
	struct kp_shift_summary shift;   /* live counts of the open shift */
	int64_t trip_start_ms;
	char summary[4096];

	int has_last;                    /* the last card tapped */
	uint8_t last_token[KP_TOKEN_LEN];
	int64_t last_ms;
	int last_refused;                /* and it was refused */

	int pending;                     /* confirm mode: a card waits for B or R */
	uint8_t pending_token[KP_TOKEN_LEN];
	int pending_mynumber;            /* ... a My Number card tapped directly */
	int64_t pending_ms;

	/* what the observer saw of the last record */
	struct kp_record obs;
	int obs_valid, obs_trip_seen;
	int64_t obs_trip_seen_ms;

	pthread_mutex_t mu;              /* the sync thread's news */
	int64_t sync_ms;                 /* last successful sync */
	int sync_failed;
	int64_t saved_sync_ms;           /* what meta holds */

	int reader_online;
	char clock[48];                  /* the clock source, as the status line says it */
	struct kp_record last_recs[LAST_RECS];  /* the journal's last taps, at start */
	size_t n_last_recs;
	int64_t last_tick_mono;
	int64_t now_ms;
};

static void ss_log(kp_session *ss, int warn, const char *fmt, ...)
	__attribute__((format(printf, 3, 4)));
static void ss_log(kp_session *ss, int warn, const char *fmt, ...)
{
	char msg[512];
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(msg, sizeof(msg), fmt, ap);
	va_end(ap);
	if (ss->io.log != NULL)
		ss->io.log(warn, msg);
}

static int64_t ss_mono_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* The latest accepted tap of token at or after since (0 none). */
static int64_t ring_seen(const kp_session *ss, const uint8_t token[KP_TOKEN_LEN], int64_t since,
                         uint64_t before_seq)
{
	for (size_t i = 0; i < ss->ring_n; i++) {
		const struct ring_ent *r = &ss->ring[(ss->ring_head + RING_MAX - 1 - i) % RING_MAX];

		if (r->seq < before_seq && r->accepted && r->time_ms >= since &&
		    memcmp(r->token, token, KP_TOKEN_LEN) == 0)
			return r->time_ms;
	}
	return 0;
}

static void ring_add(kp_session *ss, const struct kp_record *rec)
{
	struct ring_ent *r = &ss->ring[ss->ring_head];

	memcpy(r->token, rec->token, KP_TOKEN_LEN);
	r->seq = rec->seq;
	r->time_ms = rec->time_ms;
	r->accepted = strcmp(rec->result, "accepted") == 0 || strcmp(rec->result, "already") == 0;
	ss->ring_head = (ss->ring_head + 1) % RING_MAX;
	if (ss->ring_n < RING_MAX)
		ss->ring_n++;
}

/* Every committed record, in order, from the deciding thread. */
static void ss_observe(void *arg, const struct kp_record *rec)
{
	kp_session *ss = arg;

	kp_events_record(ss->io.events, rec);
	ss->obs = *rec;
	ss->obs_valid = 1;
	ss->obs_trip_seen = 0;
	if (strcmp(rec->kind, "shift") == 0 && strcmp(rec->result, "start") == 0) {
		memset(&ss->shift, 0, sizeof(ss->shift));
		ss->shift_open = 1;
		ss->trip_start_ms = rec->time_ms;
	}
	if (ss->shift_open)
		kp_shift_summary_add(&ss->shift, rec);
	if (strcmp(rec->kind, "shift") == 0 && strcmp(rec->result, "end") == 0)
		ss->shift_open = 0;
	if (strcmp(rec->kind, "tap") == 0 && rec->has_token && rec->driver[0] == '\0') {
		int64_t seen = ring_seen(ss, rec->token, ss->trip_start_ms, rec->seq);

		ss->obs_trip_seen = seen != 0;
		ss->obs_trip_seen_ms = seen;
		ring_add(ss, rec);
		ss->has_last = 1;
		memcpy(ss->last_token, rec->token, KP_TOKEN_LEN);
		ss->last_ms = rec->time_ms;
		ss->last_refused = strcmp(rec->result, "refused") == 0;
	}
}

static void tap_from_record(kp_session *ss, const struct kp_record *rec,
                            struct kp_console_tap *t);

static int ss_load_row(const struct kp_journal_row *row, void *arg)
{
	kp_session *ss = arg;
	struct kp_record rec;

	if (kp_record_decode(row->payload, row->payload_len, &rec) != 0)
		return 0;
	if (strcmp(rec.kind, "tap") == 0 && rec.has_token && rec.driver[0] == '\0')
		ring_add(ss, &rec);
	if (strcmp(rec.kind, "tap") == 0 && strcmp(rec.result, "confirmed") != 0) {
		ss->last_recs[ss->n_last_recs % LAST_RECS] = rec;
		ss->n_last_recs++;
	}
	return 0;
}

int kp_session_open(kp_session **out, const struct kp_session_io *io)
{
	kp_session *ss;
	char v[32];
	int found = 0, rc;

	*out = NULL;
	ss = calloc(1, sizeof(*ss));
	if (ss == NULL)
		return KP_E_NOMEM;
	ss->io = *io;
	ss->mode = io->cc->mode;
	ss->lang_ja = io->cc->lang_ja;
	ss->reader_online = 1;
	pthread_mutex_init(&ss->mu, NULL);
	rc = kp_shift_find_open(io->store, &ss->shift, &found);
	if (rc == KP_OK && found) {
		ss->shift_open = 1;
		ss->trip_start_ms = ss->shift.start_ms;
	}
	if (rc == KP_OK)
		rc = kp_journal_foreach(io->store, ss_load_row, ss);
	if (rc != KP_OK) {
		kp_session_close(ss);
		return rc;
	}
	if (kp_store_meta_get(io->store, "console_last_sync_ms", v, sizeof(v)) == KP_OK)
		ss->sync_ms = ss->saved_sync_ms = strtoll(v, NULL, 10);
	for (size_t i = ss->n_last_recs > LAST_RECS ? ss->n_last_recs - LAST_RECS : 0;
	     i < ss->n_last_recs; i++) {
		struct kp_console_tap t;

		tap_from_record(ss, &ss->last_recs[i % LAST_RECS], &t);
		kp_console_recent(io->console, &t);
	}
	kp_tap_engine_observe(io->engine, ss_observe, ss);
	if (ss->shift_open)
		kp_console_message(io->console, 0, "Shift of %s continues (since seq %llu)",
		                   ss->shift.driver, (unsigned long long)ss->shift.start_seq);
	*out = ss;
	return KP_OK;
}

void kp_session_close(kp_session *ss)
{
	if (ss == NULL)
		return;
	if (ss->io.engine != NULL)
		kp_tap_engine_observe(ss->io.engine, NULL, NULL);
	pthread_mutex_destroy(&ss->mu);
	kp_zeroize(ss, sizeof(*ss));     /* card tokens */
	free(ss);
}

const char *kp_session_last_summary(const kp_session *ss)
{
	return ss != NULL ? ss->summary : "";
}

static void local_date(int64_t ms, int utc_offset_s, char *out, size_t cap)
{
	time_t t = (time_t)(ms / 1000 + utc_offset_s);
	struct tm tm;

	gmtime_r(&t, &tm);
	snprintf(out, cap, "%04d-%02d-%02d %02d:%02d", tm.tm_year + 1900, tm.tm_mon + 1,
	         tm.tm_mday, tm.tm_hour, tm.tm_min);
}

static void tap_from_record(kp_session *ss, const struct kp_record *rec,
                            struct kp_console_tap *t)
{
	memset(t, 0, sizeof(*t));
	t->result = strcmp(rec->result, "accepted") == 0 ? KP_HMI_ACCEPTED :
	            strcmp(rec->result, "already") == 0 ? KP_HMI_ALREADY :
	            strcmp(rec->result, "refused") == 0 ? KP_HMI_REFUSED : KP_HMI_INFO;
	snprintf(t->reason, sizeof(t->reason), "%s", rec->reason);
	snprintf(t->rec_result, sizeof(t->rec_result), "%s", rec->result);
	snprintf(t->product, sizeof(t->product), "%s", rec->product);
	t->rides_left = rec->has_left ? rec->left : -1;
	t->amount = rec->amount;
	snprintf(t->category, sizeof(t->category), "%s", rec->category);
	t->linked = rec->has_via;
	t->warn_days = -1;
	if (rec->has_token)
		kp_events_card_ref(rec->token, t->card);
	t->seq = rec->seq;
	t->time_ms = rec->time_ms;
	snprintf(t->driver, sizeof(t->driver), "%s", rec->driver);
}



static void show_outcome(kp_session *ss, const struct kp_tap_outcome *o, int64_t now)
{
	struct kp_console_tap t;
	int stored = 0;

	if (ss->obs_valid && ss->obs.seq == o->seq) {
		tap_from_record(ss, &ss->obs, &t);
		t.trip_seen = ss->obs_trip_seen;
		t.trip_seen_ms = ss->obs_trip_seen_ms;
	} else {
		memset(&t, 0, sizeof(t));
		t.seq = o->seq;
		t.time_ms = now;
	}
	t.result = o->kind == KP_TAP_ACCEPTED ? KP_HMI_ACCEPTED :
	           o->kind == KP_TAP_ALREADY ? KP_HMI_ALREADY : KP_HMI_REFUSED;
	snprintf(t.reason, sizeof(t.reason), "%s", o->reason);
	snprintf(t.product, sizeof(t.product), "%s", o->product);
	t.rides_left = o->rides_left;
	t.amount = o->amount;
	snprintf(t.category, sizeof(t.category), "%s", o->category);
	t.linked = o->linked;
	t.warn_days = o->warn_days;
	snprintf(t.until_text, sizeof(t.until_text), "%s", o->until_text);
	if (o->kind == KP_TAP_ALREADY && !t.trip_seen) {
		t.trip_seen = 1;
		t.trip_seen_ms = now;
	}
	if (o->product[0] != '\0' && kp_store_product_stored(ss->io.store, o->product, &stored) == KP_OK)
		t.stored = stored;
	kp_console_show(ss->io.console, &t);
}

static void show_record(kp_session *ss)
{
	struct kp_console_tap t;

	if (!ss->obs_valid)
		return;
	tap_from_record(ss, &ss->obs, &t);
	kp_console_show(ss->io.console, &t);
}

void kp_session_tap_failed(kp_session *ss, int64_t now_ms)
{
	struct kp_console_tap t;

	memset(&t, 0, sizeof(t));
	t.result = KP_HMI_REFUSED;
	snprintf(t.reason, sizeof(t.reason), "%s", kp_reason_code(KP_R_SYSTEM_ERROR));
	snprintf(t.rec_result, sizeof(t.rec_result), "refused");
	t.rides_left = -1;
	t.warn_days = -1;
	t.time_ms = now_ms;
	kp_console_show(ss->io.console, &t);
	kp_console_message(ss->io.console, 1, "Tap NOT recorded: the store failed (see the log)");
}

/* What the card holds, as up to six lines for the screen. */
static void card_view(kp_session *ss, const uint8_t token[KP_TOKEN_LEN], long ic_balance,
                      int64_t now, struct kp_console_tap *t, int *listed_out, size_t *n_ent,
                      size_t *n_cat)
{
	const struct kp_terminal_cfg *cfg = kp_tap_engine_cfg(ss->io.engine);
	struct kp_ent_view ev[KP_MAX_CARD_ENTITLEMENTS];
	struct kp_elig_view el[KP_MAX_CARD_ELIGIBILITY];
	size_t n = 0, n_el = 0, shown = 0;
	int listed = 0, found = 0, ja = ss->lang_ja;
	int64_t last = 0;
	char when[48], ref[9], line[160];

	kp_events_card_ref(token, ref);
	kp_store_is_denylisted(ss->io.store, token, &listed);
	kp_store_last_tap(ss->io.store, token, &last, &found);
	if (kp_store_card_entitlements(ss->io.store, token, cfg->operator_id, ev,
	                               KP_MAX_CARD_ENTITLEMENTS, &n) != KP_OK)
		n = 0;
	if (kp_store_card_eligibility(ss->io.store, token, el, KP_MAX_CARD_ELIGIBILITY, &n_el) != KP_OK)
		n_el = 0;
	*listed_out = listed;
	*n_ent = n;
	*n_cat = n_el;
	if (found)
		local_date(last, cfg->utc_offset_s, when, sizeof(when));
	snprintf(t->detail[t->n_detail++], sizeof(t->detail[0]),
	         "card #%s  %s %s  %s %s", ref, ja ? "停止 blocked:" : "blocked 停止:",
	         listed ? "YES" : "no", ja ? "前回 last here:" : "last here 前回:",
	         found ? when : "-");
	if (ic_balance >= 0) {
		size_t k = strlen(t->detail[0]);

		snprintf(t->detail[0] + k, sizeof(t->detail[0]) - k, "  IC %ld", ic_balance);
	}
	/* Three entitlements, "+N more", the category: six lines, what 80x24 has room for. */
	for (size_t i = 0; i < n && t->n_detail < 4; i++, shown++) {
		const struct kp_ent_view *v = &ev[i];
		char from[48], until[48];

		local_date(v->e.valid_from_ms, cfg->utc_offset_s, from, sizeof(from));
		local_date(v->e.valid_until_ms, cfg->utc_offset_s, until, sizeof(until));
		if (v->stored)
			snprintf(line, sizeof(line), "%s: balance %lld", v->e.product,
			         (long long)v->e.rides_left);
		else if (v->period_days > 0 && v->first_use)
			snprintf(line, sizeof(line), "%s: %d-day pass, not started (first use by %s)",
			         v->e.product, v->period_days, until);
		else if (v->period_days > 0)
			snprintf(line, sizeof(line), "%s: %d-day pass %s - %s", v->e.product,
			         v->period_days, from, until);
		else
			snprintf(line, sizeof(line), "%s: %lld rides, %s - %s", v->e.product,
			         (long long)v->e.rides_left, from, until);
		snprintf(t->detail[t->n_detail++], sizeof(t->detail[0]), "%.70s%s%s%s%s", line,
		         v->valid_here ? "" : " [other operator]",
		         !v->first_use && now >= v->e.valid_until_ms ? " [expired]" :
		         !v->first_use && now < v->e.valid_from_ms ? " [not yet valid]" : "",
		         v->category[0] != '\0' ? " [" : "", v->category[0] != '\0' ? v->category : "");
		if (v->category[0] != '\0') {
			size_t k = strlen(t->detail[t->n_detail - 1]);

			snprintf(t->detail[t->n_detail - 1] + k, sizeof(t->detail[0]) - k, " only]");
		}
	}
	if (n == 0)
		snprintf(t->detail[t->n_detail++], sizeof(t->detail[0]), "%s",
		         ja ? "乗車券なし No tickets on this card" : "No tickets on this card 乗車券なし");
	else if (shown < n)
		snprintf(t->detail[t->n_detail++], sizeof(t->detail[0]), "+%zu more", n - shown);
	if (t->n_detail < 6) {
		if (n_el == 0) {
			snprintf(t->detail[t->n_detail++], sizeof(t->detail[0]), "%s adult (%s)",
			         ja ? "区分 Category:" : "Category 区分:", ja ? "大人" : "no category");
		} else {
			char until[48];

			local_date(el[0].valid_until_ms, cfg->utc_offset_s, until, sizeof(until));
			snprintf(t->detail[t->n_detail++], sizeof(t->detail[0]), "%s %s (%s) until %s%s%s",
			         ja ? "区分 Category:" : "Category 区分:", el[0].category,
			         kp_console_category_text(el[0].category, 1), until,
			         el[0].has_via ? ", My Number linked" : "",
			         n_el > 1 ? " +more" : "");
		}
	}
}

int kp_session_tap(kp_session *ss, struct kp_reader *r, const struct kp_card_info *info,
                   int64_t now_ms, struct kp_tap_outcome *o, int *decided)
{
	struct kp_console_tap t;
	struct kp_card_id id;
	int listed = 0, rc;
	size_t n_ent = 0, n_cat = 0;

	*decided = 0;
	ss->now_ms = now_ms;
	if (ss->mode == KP_CONSOLE_CHARGE) {
		/* Nothing of the console's here: the rider sees the result first, then
		 * kp_session_result tells the driver. */
		ss->obs_valid = 0;
		rc = kp_tap_card(ss->io.engine, r, info, now_ms, o);
		*decided = rc == KP_OK;
		return rc;
	}
	memset(&t, 0, sizeof(t));
	t.time_ms = now_ms;
	t.rides_left = -1;
	t.warn_days = -1;
	/* The card's token without deciding anything. */
	rc = kp_tap_engine_identify(ss->io.engine, r, info, now_ms, KP_CARD_ID_BALANCE, &id);
	if (rc != KP_OK) {
		t.result = KP_HMI_REFUSED;
		snprintf(t.reason, sizeof(t.reason), "%s", kp_reason_code(id.reason));
		snprintf(t.rec_result, sizeof(t.rec_result), "refused");
		snprintf(t.detail[t.n_detail++], sizeof(t.detail[0]), "%s",
		         ss->mode == KP_CONSOLE_VALIDATE ? "Validation only: nothing recorded"
		                                         : "Nothing charged: tap again");
		kp_console_show(ss->io.console, &t);
		kp_card_id_wipe(&id);
		return KP_OK;
	}
	card_view(ss, id.token, id.has_balance ? (long)id.balance.balance : -1, now_ms, &t, &listed,
	          &n_ent, &n_cat);
	kp_events_card_ref(id.token, t.card);
	t.result = KP_HMI_INFO;
	snprintf(t.reason, sizeof(t.reason), "%s",
	         kp_reason_code(ss->mode == KP_CONSOLE_VALIDATE ? KP_R_INSPECT : KP_R_CONFIRM));
	snprintf(t.rec_result, sizeof(t.rec_result), "inspect");
	if (ss->mode == KP_CONSOLE_CONFIRM) {
		t.pending = 1;
		ss->pending = 1;
		memcpy(ss->pending_token, id.token, KP_TOKEN_LEN);
		ss->pending_mynumber = info->tech == KP_TECH_ISO14443B;
		ss->pending_ms = now_ms;
	}
	ss->has_last = 1;
	memcpy(ss->last_token, id.token, KP_TOKEN_LEN);
	ss->last_ms = now_ms;
	ss->last_refused = listed;       /* a denylisted card shown may be overridden */
	kp_events_inspect(ss->io.events, now_ms, id.token, ss->mode == KP_CONSOLE_VALIDATE ?
	                  "validate" : "confirm", listed, n_ent, n_cat);
	kp_console_show(ss->io.console, &t);
	kp_card_id_wipe(&id);
	return KP_OK;
}

void kp_session_result(kp_session *ss, struct kp_reader *r, int rc,
                       const struct kp_tap_outcome *o, int64_t now_ms)
{
	if (ss == NULL)
		return;
	if (rc != KP_OK)
		kp_session_tap_failed(ss, now_ms);
	else
		show_outcome(ss, o, now_ms);
	kp_session_tick(ss, r, now_ms, 1);
}

static const char *mode_id(enum kp_console_mode m)
{
	return m == KP_CONSOLE_CONFIRM ? "confirm" : m == KP_CONSOLE_VALIDATE ? "validate" : "charge";
}

static int need_shift(kp_session *ss, const char *what)
{
	if (ss->shift_open)
		return 1;
	kp_console_message(ss->io.console, 1, "%s: %s", what,
	                   ss->lang_ja ? "先に乗務開始 (S) Start a shift first (S)"
	                               : "start a shift first (S)");
	return 0;
}

/* The card a refusal or override refers to: the one waiting in confirm mode, else the
 * last one tapped in the last two minutes; an override only overrides a refusal, so after
 * an accepted card it refers to no card (e.g. a rider whose card cannot be read at all). */
static const uint8_t *recent_card(kp_session *ss, int64_t now, int override)
{
	if (ss->pending)
		return ss->pending_token;
	if (ss->has_last && now - ss->last_ms <= LAST_CARD_MS && now >= ss->last_ms &&
	    (!override || ss->last_refused))
		return ss->last_token;
	return NULL;
}

static void act_shift_end(kp_session *ss, int64_t now)
{
	struct kp_shift_summary sum;
	uint64_t start = ss->shift.start_seq, seq = 0;
	int rc;

	rc = kp_driver_journal(ss->io.engine, "shift", "end", kp_reason_code(KP_R_SHIFT),
	                       ss->shift.driver, NULL, NULL, now, &seq);
	if (rc != KP_OK) {
		kp_console_message(ss->io.console, 1, "Shift end NOT recorded: %s", kp_strerror(rc));
		return;
	}
	show_record(ss);
	/* The summary comes from the journal, not from the counts kept on the way. */
	rc = kp_shift_summary_compute(ss->io.store, start, &sum);
	if (rc != KP_OK) {
		kp_console_message(ss->io.console, 1, "Shift summary: %s", kp_strerror(rc));
		return;
	}
	kp_shift_summary_format(&sum, ss->lang_ja, kp_tap_engine_cfg(ss->io.engine)->utc_offset_s,
	                        ss->summary, sizeof(ss->summary));
	kp_console_summary(ss->io.console, ss->summary);
	kp_events_summary(ss->io.events, now, &sum);
	ss_log(ss, 0, "shift of %s ended (records %llu-%llu): %ld riders, %ld refused",
	       sum.driver, (unsigned long long)sum.start_seq, (unsigned long long)seq, sum.riders,
	       sum.refused);
	ss->pending = 0;
}

static int act(kp_session *ss, const struct kp_console_action *a, int64_t now)
{
	struct kp_tap_outcome o;
	const uint8_t *card;
	uint64_t seq = 0;
	int rc;

	switch (a->kind) {
	case KP_ACT_SHIFT_START:
		if (ss->shift_open) {
			kp_console_message(ss->io.console, 1, "Shift of %s is open: E ends it first",
			                   ss->shift.driver);
			return 0;
		}
		rc = kp_driver_journal(ss->io.engine, "shift", "start", kp_reason_code(KP_R_SHIFT),
		                       a->arg, NULL, NULL, now, NULL);
		if (rc != KP_OK) {
			kp_console_message(ss->io.console, 1, "Shift start NOT recorded: %s",
			                   kp_strerror(rc));
			return 0;
		}
		show_record(ss);
		kp_console_message(ss->io.console, 0, "%s %s", ss->lang_ja ?
		                   "乗務開始 Shift started:" : "Shift started 乗務開始:", a->arg);
		ss_log(ss, 0, "shift of %s started", a->arg);
		return 0;
	case KP_ACT_SHIFT_END:
		if (need_shift(ss, "E"))
			act_shift_end(ss, now);
		return 0;
	case KP_ACT_BOARD:
		if (!ss->pending) {
			kp_console_message(ss->io.console, 1, "%s", ss->mode == KP_CONSOLE_CONFIRM ?
			                   "B: no card is waiting: the rider taps first" :
			                   "B boards a card shown in confirm mode (M changes the mode)");
			return 0;
		}
		if (!need_shift(ss, "B"))
			return 0;
		ss->pending = 0;
		ss->obs_valid = 0;
		/* a My Number card boards under the scheme's policy for direct taps */
		rc = ss->pending_mynumber ?
		     kp_tap_decide_mynumber(ss->io.engine, ss->pending_token, now, &o) :
		     kp_tap_decide(ss->io.engine, ss->pending_token, now, &o);
		if (rc != KP_OK) {
			kp_session_tap_failed(ss, now);
			return 0;
		}
		show_outcome(ss, &o, now);
		if (o.kind == KP_TAP_ACCEPTED) {
			char note[64];

			snprintf(note, sizeof(note), "boarding of record %llu", (unsigned long long)o.seq);
			rc = kp_driver_journal(ss->io.engine, "tap", "confirmed",
			                       kp_reason_code(KP_R_DRIVER_BOARD), ss->shift.driver,
			                       ss->pending_token, note, now, NULL);
			if (rc != KP_OK)
				kp_console_message(ss->io.console, 1, "Confirmation NOT recorded: %s",
				                   kp_strerror(rc));
			else
				kp_console_message(ss->io.console, 0, "Boarded: record %llu, confirmed by %s",
				                   (unsigned long long)o.seq, ss->shift.driver);
		}
		return 0;
	case KP_ACT_REFUSE:
	case KP_ACT_OVERRIDE:
		if (!need_shift(ss, a->kind == KP_ACT_REFUSE ? "R" : "O"))
			return 0;
		card = recent_card(ss, now, a->kind == KP_ACT_OVERRIDE);
		rc = kp_driver_journal(ss->io.engine, "tap",
		                       a->kind == KP_ACT_REFUSE ? "refused" : "accepted", a->arg,
		                       ss->shift.driver, card, NULL, now, &seq);
		ss->pending = 0;
		if (rc != KP_OK) {
			kp_console_message(ss->io.console, 1, "%s NOT recorded: %s",
			                   a->kind == KP_ACT_REFUSE ? "Refusal" : "Override",
			                   kp_strerror(rc));
			return 0;
		}
		show_record(ss);
		kp_console_message(ss->io.console, 0, "%s: %s (record %llu, %s)",
		                   a->kind == KP_ACT_REFUSE ? "Refused" : "Override", a->arg,
		                   (unsigned long long)seq, card != NULL ? "last card" : "no card");
		return 0;
	case KP_ACT_MODE:
		if (a->value == KP_CONSOLE_VALIDATE)
			ss->mode = ss->mode == KP_CONSOLE_VALIDATE ? ss->io.cc->mode == KP_CONSOLE_VALIDATE ?
			           KP_CONSOLE_CHARGE : ss->io.cc->mode : KP_CONSOLE_VALIDATE;
		else
			ss->mode = (enum kp_console_mode)((ss->mode + 1) % 3);
		ss->pending = 0;
		kp_console_message(ss->io.console, 0, "Mode: %s%s", mode_id(ss->mode),
		                   ss->mode == KP_CONSOLE_VALIDATE ? " (nothing is charged)" : "");
		kp_events_console(ss->io.events, now, "mode", mode_id(ss->mode));
		return 0;
	case KP_ACT_TRIP:
		ss->trip_start_ms = now;
		kp_console_message(ss->io.console, 0, "%s", ss->lang_ja ? "新しい便 New trip"
		                                                        : "New trip 新しい便");
		kp_events_console(ss->io.events, now, "trip", NULL);
		return 0;
	case KP_ACT_LANG:
		ss->lang_ja = a->value;
		kp_events_console(ss->io.events, now, "language", a->value ? "ja" : "en");
		return 0;
	case KP_ACT_BADKEY:
		ss_log(ss, 0, "console: unknown key '%s' ignored", a->arg);
		kp_events_console(ss->io.events, now, "bad-key", a->arg);
		return 0;
	case KP_ACT_QUIT:
		return 1;
	}
	return 0;
}

int kp_session_actions(kp_session *ss, int64_t now_ms)
{
	struct kp_console_action a;
	int quit = 0, any = 0;

	while (kp_console_next_action(ss->io.console, &a)) {
		quit |= act(ss, &a, now_ms);
		any = 1;
	}
	if (any)
		kp_session_tick(ss, NULL, now_ms, 1);
	return quit;
}

void kp_session_reader(kp_session *ss, int online, const char *detail, int64_t now_ms)
{
	if (ss == NULL)
		return;
	ss->reader_online = online;
	kp_events_reader(ss->io.events, now_ms, online, detail);
	kp_console_message(ss->io.console, !online, "%s", online ? "Reader online / リーダー接続"
	                                                          : "Reader OFFLINE / リーダー切断");
	kp_session_tick(ss, NULL, now_ms, 1);
}

void kp_session_sync(kp_session *ss, int ok, int64_t now_ms)
{
	if (ss == NULL)
		return;
	pthread_mutex_lock(&ss->mu);
	if (ok)
		ss->sync_ms = now_ms;
	ss->sync_failed = !ok;
	pthread_mutex_unlock(&ss->mu);
}

static void clock_source(struct kp_reader *r, char *out, size_t cap)
{
	struct timex tx;
	int64_t ms;

	if (r != NULL && r->ops != NULL && r->ops->now_ms != NULL &&
	    r->ops->now_ms(r, &ms) == KP_HAL_OK) {
		snprintf(out, cap, "reader");
		return;
	}
	memset(&tx, 0, sizeof(tx));
	if (adjtimex(&tx) < 0 || (tx.status & STA_UNSYNC))
		snprintf(out, cap, "sys/no-NTP");
	else
		snprintf(out, cap, "sys/NTP");
}

void kp_session_tick(kp_session *ss, struct kp_reader *r, int64_t now_ms, int force)
{
	struct kp_console_status st;
	uint64_t acked = 0, cv = 0, head = 0;
	int64_t mono = ss_mono_ms();

	if (ss == NULL || (!force && mono - ss->last_tick_mono < 1000))
		return;
	ss->last_tick_mono = mono;
	if (now_ms > 0)
		ss->now_ms = now_ms;
	if (r != NULL || ss->clock[0] == '\0')
		clock_source(r, ss->clock, sizeof(ss->clock));
	memset(&st, 0, sizeof(st));
	st.reader_online = ss->reader_online;
	st.have_sync = ss->io.have_backend;
	pthread_mutex_lock(&ss->mu);
	st.last_sync_ms = ss->sync_ms;
	st.sync_failed = ss->sync_failed;
	pthread_mutex_unlock(&ss->mu);
	/* The denylist is as fresh as the last sync that fetched the config bundle. */
	st.denylist_ms = st.last_sync_ms;
	if (st.last_sync_ms != ss->saved_sync_ms) {
		char v[32];

		snprintf(v, sizeof(v), "%lld", (long long)st.last_sync_ms);
		if (kp_store_meta_set(ss->io.store, "console_last_sync_ms", v) == KP_OK)
			ss->saved_sync_ms = st.last_sync_ms;
	}
	if (kp_store_sync_state(ss->io.store, &acked, &cv, &head) == KP_OK)
		st.waiting = head > acked ? head - acked : 0;
	st.now_ms = ss->now_ms;
	snprintf(st.clock, sizeof(st.clock), "%s", ss->clock);
	if (ss->shift_open) {
		snprintf(st.driver, sizeof(st.driver), "%s", ss->shift.driver);
		st.shift_start_ms = ss->shift.start_ms;
		st.shift_riders = ss->shift.riders;
	}
	st.mode = ss->mode;
	kp_console_status(ss->io.console, &st);
}
