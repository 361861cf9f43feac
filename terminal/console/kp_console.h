/* SPDX-License-Identifier: Apache-2.0 */
/* The driver console of kippu-terminal (--console) and its event stream (--events json).
 * The public header of terminal/console/: terminal/app/ and the tests include it.
 *   console.c  the ncurses face (its own thread; never touches the tap engine)
 *   driver.c   driver actions, shifts and their summaries (no ncurses); feeds console.c
 *              and events.c through this header
 *   events.c   one JSON object per line for onboard systems (jansson, own writer thread)
 *   texts.c    the JA/EN texts: reasons from card/reasons.def, rider categories, the
 *              driver's override reasons
 * Only console.c includes <curses.h>, only events.c <jansson.h>. */
#ifndef KP_CONSOLE_H
#define KP_CONSOLE_H

#include <stddef.h>
#include <stdint.h>
#include "kp_tap.h"

/* ---- settings (config file keys, see the README's "Settings" of the driver console) ---- */

enum kp_console_mode {
	KP_CONSOLE_CHARGE = 0,           /* a tap is decided and charged at once */
	KP_CONSOLE_CONFIRM,              /* a tap shows the card; the driver's B charges it */
	KP_CONSOLE_VALIDATE,             /* validation only: show what the card holds, no charge */
};

struct kp_console_cfg {
	int lang_ja;                     /* console_language = ja (default) | en: primary text */
	enum kp_console_mode mode;       /* console_mode = charge | confirm | validate */
	int64_t denylist_max_age_s;      /* denylist_max_age: warn past this (default 24 h) */
	char events[520];                /* events = json | json:PATH ("" none) */
	char log_path[512];              /* console_log: where logs go while the screen is ours */
	int beep;                        /* console_beep = on | off */
	int colour;                      /* console_colour = auto | off */
};

void kp_console_cfg_defaults(struct kp_console_cfg *c);
/* One console setting by its file key: KP_OK, KP_E_CONFIG (bad value, err says why) or
 * KP_E_INVAL (not a console key; err untouched). */
int  kp_console_cfg_set(struct kp_console_cfg *c, const char *key, const char *value,
                        char *err, size_t err_cap);
/* kp_terminal_cfg_load that also takes the console keys into c (c may be NULL: they are
 * checked, then ignored). */
int  kp_terminal_cfg_load_console(struct kp_terminal_cfg *cfg, struct kp_console_cfg *c,
                                  const char *path, char *err, size_t err_cap);
/* "90", "90s", "15m", "24h", "7d" -> seconds; -1 if malformed or over 400 days. */
int64_t kp_console_parse_age(const char *v);

/* ---- texts (texts.c) ---- */

/* What the driver and rider read for a reason, in Japanese (ja != 0) or English. An
 * unknown reason gets a generic text for its result ("accepted", "refused", ...). */
const char *kp_console_reason_text(const char *reason, const char *result, int ja);
/* A rider category in Japanese or English ("" = adult). */
const char *kp_console_category_text(const char *category, int ja);
#define KP_DRIVER_OVERRIDES 4
/* Override reason codes by the digit the driver presses (1..KP_DRIVER_OVERRIDES), NULL
 * for another digit: "override-unreadable", "override-paper-pass", ... */
const char *kp_driver_override_reason(int digit);

/* ---- driver actions and shifts (driver.c) ---- */

/* Journals a driver's action, signed like any decision: kind "tap" or "shift", result
 * ("accepted", "refused", "confirmed", "start", "end"), reason, the driver's id, the
 * card's token if known (NULL: none) and a note (NULL: none). */
int kp_driver_journal(kp_tap_engine *e, const char *kind, const char *result,
                      const char *reason, const char *driver, const uint8_t *token,
                      const char *note, int64_t now_ms, uint64_t *seq);

#define KP_SUMMARY_KEYS 16
struct kp_summary_count {
	char key[KP_ID_MAX + 1];
	long n;
};
struct kp_summary_table {
	struct kp_summary_count c[KP_SUMMARY_KEYS];
	size_t n;
	long other;                      /* counts whose key did not fit */
};
struct kp_shift_summary {
	char driver[KP_ID_MAX + 1];
	uint64_t start_seq, end_seq;     /* end_seq 0: the shift is still open */
	int64_t start_ms, end_ms;
	long riders;                     /* accepted boardings, overrides included */
	long already, refused, taps;
	int64_t fares;                   /* money charged (minor unit) */
	long fares_n;                    /* taps that charged money */
	struct kp_summary_table by_category; /* "adult" when none */
	struct kp_summary_table by_product;  /* "-" when none (an override) */
	struct kp_summary_table refusals;    /* by reason */
	struct kp_summary_table overrides;   /* by reason */
};

/* Adds one journal record to a summary (records outside a shift are the caller's to
 * skip). */
void kp_shift_summary_add(struct kp_shift_summary *sum, const struct kp_record *rec);
/* Computes the summary of the shift that record start_seq opened, from the journal:
 * every record from start_seq to the shift's end record (or the journal's end). */
int  kp_shift_summary_compute(kp_store *s, uint64_t start_seq, struct kp_shift_summary *out);
/* The shift open at the journal's end: *found = 1 and sum filled (driver, start, counts so
 * far) if the last shift record is a start. */
int  kp_shift_find_open(kp_store *s, struct kp_shift_summary *sum, int *found);
/* The summary as text lines, "\n"-separated, for the screen, the log and stdout. */
void kp_shift_summary_format(const struct kp_shift_summary *sum, int ja, int utc_offset_s,
                             char *out, size_t cap);

/* ---- the event stream (events.c) ---- */

typedef struct kp_events kp_events;

/* spec: "json" (stdout), "json:-" (stdout) or "json:PATH" (a file, appended, or a FIFO).
 * KP_E_CONFIG for another format. A target that cannot be opened is not an error here: the
 * writer logs why through log_fn and tries again every 2 s, keeping up to 4096 events. */
int  kp_events_open(kp_events **out, const char *spec,
                    void (*log_fn)(void *arg, const char *msg), void *log_arg);
/* Writes what is queued (waiting at most 2 s for a slow reader), then closes. */
void kp_events_close(kp_events *ev);
/* A journaled record: type "tap", "driver", "shift" or "link". */
void kp_events_record(kp_events *ev, const struct kp_record *rec);
/* The reader went offline or came back. */
void kp_events_reader(kp_events *ev, int64_t time_ms, int online, const char *detail);
/* A sync attempt ended. */
void kp_events_sync(kp_events *ev, int64_t time_ms, int ok, uint64_t acked, uint64_t head,
                    uint64_t config_version, const char *error);
/* A card shown in validation-only or confirm mode (nothing journaled). */
void kp_events_inspect(kp_events *ev, int64_t time_ms, const uint8_t token[KP_TOKEN_LEN],
                       const char *mode, int denylisted, size_t n_entitlements,
                       size_t n_categories);
/* The summary that ended a shift. */
void kp_events_summary(kp_events *ev, int64_t time_ms, const struct kp_shift_summary *sum);
/* A console state change not journaled (mode, trip, language, bad key): name + detail. */
void kp_events_console(kp_events *ev, int64_t time_ms, const char *what, const char *detail);
/* The short card reference events and the screen show: the token's first 8 hex digits
 * (the token is an HMAC of the card id; `kippuctl journal list` shows the same). */
void kp_events_card_ref(const uint8_t token[KP_TOKEN_LEN], char out[9]);

/* ---- the console (console.c) ---- */

typedef struct kp_console kp_console;

/* What the tap thread tells the screen. Copied in; never blocks for long. */
struct kp_console_tap {
	enum kp_hmi_result result;       /* accepted, refused, already, info */
	char reason[KP_ID_MAX + 1];
	char rec_result[KP_ID_MAX + 1];  /* the record's result ("accepted", "confirmed", ...) */
	char product[KP_ID_MAX + 1];
	int64_t rides_left;              /* -1 n/a */
	int stored;                      /* rides_left is a balance */
	int64_t amount;
	char until_text[24];             /* a period pass's end, "" none */
	char category[KP_ID_MAX + 1];
	int linked;
	int warn_days;
	int trip_seen;                   /* validated earlier on this trip */
	int64_t trip_seen_ms;
	char card[9];                    /* short card reference, "" none */
	uint64_t seq;                    /* journal record, 0 none */
	int64_t time_ms;
	char driver[KP_ID_MAX + 1];      /* a driver action's driver */
	char detail[6][200];              /* validation view / confirm view lines */
	int n_detail;
	int pending;                     /* confirm mode: waiting for B or R */
};

struct kp_console_status {
	int reader_online;
	int have_sync;                   /* a backend is configured */
	int64_t last_sync_ms;            /* 0 never */
	int sync_failed;                 /* the last attempt failed */
	uint64_t waiting;                /* records the backend has not acknowledged */
	int64_t denylist_ms;             /* when the denylist was last current, 0 unknown */
	int64_t now_ms;
	char clock[48];                  /* "reader", "sys/NTP", "sys/no-NTP" */
	char driver[KP_ID_MAX + 1];      /* "" no shift */
	int64_t shift_start_ms;
	enum kp_console_mode mode;
	long shift_riders;
};

enum kp_console_action_kind {
	KP_ACT_SHIFT_START = 1, KP_ACT_SHIFT_END, KP_ACT_BOARD, KP_ACT_REFUSE, KP_ACT_OVERRIDE,
	KP_ACT_MODE, KP_ACT_TRIP, KP_ACT_QUIT, KP_ACT_BADKEY, KP_ACT_LANG,
};
struct kp_console_action {
	enum kp_console_action_kind kind;
	char arg[KP_ID_MAX + 1];         /* driver id, override reason, bad key name */
	int value;                       /* mode */
};

/* Starts the screen on its own thread (initscr there). KP_E_IO when stdin/stdout is not a
 * terminal or curses cannot start; err says why. */
int  kp_console_open(kp_console **out, const struct kp_console_cfg *cc,
                     const struct kp_terminal_cfg *cfg, char *err, size_t err_cap);
/* Ends the screen (endwin) and its thread. NULL is fine. */
void kp_console_close(kp_console *c);
void kp_console_show(kp_console *c, const struct kp_console_tap *t);
/* Adds to the "Recent" list only (a restarted console shows the journal's last taps). */
void kp_console_recent(kp_console *c, const struct kp_console_tap *t);
void kp_console_status(kp_console *c, const struct kp_console_status *st);
/* A one-line message for the driver (errors, confirmations). */
void kp_console_message(kp_console *c, int warn, const char *fmt, ...)
	__attribute__((format(printf, 3, 4)));
/* A log line for the message line: it does not hide a message for the driver that is
 * younger than 4 s. */
void kp_console_log(kp_console *c, const char *msg);
/* Shows a shift summary until the driver presses a key. */
void kp_console_summary(kp_console *c, const char *text);
/* Takes the driver's next action, if any: 1 taken, 0 none. */
int  kp_console_next_action(kp_console *c, struct kp_console_action *a);

/* ---- the console session: the tap thread's side of the console (driver.c) ----
 * Owns what the driver's actions need (the open shift, the trip, the last card, the card
 * shown in confirm mode), feeds the screen and the event stream, and runs the driver's
 * actions on the tap thread, between taps, with the engine that decides them. */

typedef struct kp_session kp_session;

struct kp_session_io {
	kp_store *store;                 /* the tap thread's connection */
	kp_tap_engine *engine;
	kp_console *console;             /* NULL: events only */
	kp_events *events;               /* NULL: none */
	const struct kp_console_cfg *cc;
	int have_backend;
	void (*log)(int warn, const char *msg);
};

/* Finds an open shift and the recent taps in the journal, and observes the engine. */
int  kp_session_open(kp_session **out, const struct kp_session_io *io);
void kp_session_close(kp_session *ss);
/* One card, in the console's mode: decided and charged (*decided = 1, o filled: the
 * caller shows the rider, then calls kp_session_result), or only shown to the driver. */
int  kp_session_tap(kp_session *ss, struct kp_reader *r, const struct kp_card_info *info,
                    int64_t now_ms, struct kp_tap_outcome *o, int *decided);
/* Tells the driver what a decided tap gave (rc: kp_session_tap's). */
void kp_session_result(kp_session *ss, struct kp_reader *r, int rc,
                       const struct kp_tap_outcome *o, int64_t now_ms);
/* A tap that could not be recorded (the store failed). */
void kp_session_tap_failed(kp_session *ss, int64_t now_ms);
/* Runs the driver's queued actions; 1 when the driver asked to quit. */
int  kp_session_actions(kp_session *ss, int64_t now_ms);
void kp_session_reader(kp_session *ss, int online, const char *detail, int64_t now_ms);
/* A sync attempt ended (any thread). */
void kp_session_sync(kp_session *ss, int ok, int64_t now_ms);
/* Refreshes the status line (reader clock, records waiting, denylist age) once a second,
 * or at once with force. r may be NULL (reader offline). */
void kp_session_tick(kp_session *ss, struct kp_reader *r, int64_t now_ms, int force);
/* The text of the last shift summary ("" none), for stdout when the console ends. */
const char *kp_session_last_summary(const kp_session *ss);

#endif
