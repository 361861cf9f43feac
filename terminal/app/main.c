/* SPDX-License-Identifier: Apache-2.0 */
/* kippu-terminal: the reader loop. Waits for a card, decides, commits the signed record,
 * and only then tells the rider. SIGINT/SIGTERM end the loop between taps. A reader that
 * fails is closed and reopened with backoff while the terminal keeps running. */
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <pthread.h>
#include <signal.h>
#include <stdarg.h>
#include <stddef.h>
#include <sys/stat.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <syslog.h>
#include <time.h>
#include <unistd.h>

#include "kp_terminal.h"
#include "kp_console.h"
#include "kp_sys.h"
#include "kp_version.h"

static volatile sig_atomic_t stop_requested;
static volatile int sync_stop;
static int use_syslog;
/* The driver console, while it owns the screen: warnings also go to its message line. */
static kp_console *the_console;
/* The last error logged while the console had the screen, repeated on stderr after it. */
static char console_error[300];
/* Guards the two above: the sync and event threads log too. */
static pthread_mutex_t console_mu = PTHREAD_MUTEX_INITIALIZER;

static void on_signal(int sig)
{
	(void)sig;
	stop_requested = 1;
}

static void logmsg(int prio, const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	pthread_mutex_lock(&console_mu);
	if (the_console != NULL && prio <= LOG_WARNING) {
		char msg[300];
		va_list cp;

		va_copy(cp, ap);
		vsnprintf(msg, sizeof(msg), fmt, cp);
		va_end(cp);
		kp_console_log(the_console, msg);
		if (prio <= LOG_ERR)
			snprintf(console_error, sizeof(console_error), "%s", msg);
	}
	pthread_mutex_unlock(&console_mu);
	if (use_syslog)
		vsyslog(prio, fmt, ap);
	else
		kp_logv(prio, NULL, fmt, ap);    /* the journal, or "kippu-terminal: ..." lines */
	va_end(ap);
}

static void usage(FILE *fp)
{
	fputs("usage: kippu-terminal [--config FILE] [options]\n"
	      "  --config FILE      configuration file (key = value; see README)\n"
	      "  --reader CONN      reader connection string, e.g. mock:scenario.txt\n"
	      "  --hmi CONN         HMI connection string (default mock:-)\n"
	      "  --db PATH          terminal database\n"
	      "  --terminal-id ID   --operator ID  --route ID  --stop ID\n"
	      "  --key PATH --cert PATH --token-key PATH\n"
	      "  --backend HOST:PORT[,HOST:PORT...]  sync with this backend, failing over to the\n"
	      "                       next address listed (timer thread, or --sync-once)\n"
	      "  --inspect          read and print each card's balance and history; no decision\n"
	      "  --describe         print the reader's description and exit\n"
	      "  --list-readers     print the readers libnfc finds (connection string, name)\n"
	      "  --sync-once        sync with the backend once (upload, fetch config) and exit\n"
	      "  --offline          decide taps without the background sync thread\n"
	      "  --link-mode        registration counter: My Number card + PIN, then the transit\n"
	      "                     IC card to link; journals a link request\n"
	      "  --pin-file PATH    where the PIN pad leaves the 4-digit PIN (link mode); taken\n"
	      "                     (removed) for the next My Number card, used once\n"
	      "  --console          the driver console: full-screen UI on this terminal\n"
	      "  --console-mode M   charge (default), confirm (B charges) or validate (no charge)\n"
	      "  --console-language ja|en   primary language of the console (default ja)\n"
	      "  --denylist-max-age AGE     warn when the denylist is older (e.g. 24h, 2d)\n"
	      "  --events json[:PATH]       one JSON object per line for every tap, driver\n"
	      "                     action, reader and sync change: stdout, a file or a FIFO\n"
	      "  --config-keys      print the configuration file's keys (a markdown table) and exit\n"
	      "  -h, --help         print this help and exit\n"
	      "  --version          print the version and exit\n"
	      "Exit status: 0 ok, 1 failure, 2 usage or configuration error.\n", fp);
}

/* Journeys left open (no tap-off) whose service day is over, or whose card has tapped at
 * another terminal since, are charged now: at start, when idle, and every 64 taps. */
static void sweep(kp_tap_engine *engine, int64_t now)
{
	size_t closed = 0, total = 0;
	int rc, rounds = 0;

	do {
		rc = kp_tap_sweep(engine, now, &closed);
		total += closed;
	} while (rc == KP_OK && closed > 0 && ++rounds < 16);
	if (rc != KP_OK)
		logmsg(LOG_ERR, "closing open journeys: %s", kp_strerror(rc));
	else if (total > 0)
		logmsg(LOG_INFO, "closed %zu journeys without tap-off", total);
}

/* The vehicle's place from place_file ("ROUTE STOP"), read again when the file changes; a
 * bad or missing file keeps the last good place. */
struct place {
	struct timespec mtime;
	off_t size;
	int have;
};

static void place_update(kp_tap_engine *engine, const struct kp_terminal_cfg *cfg,
                         struct place *pl)
{
	char buf[200], route[KP_ID_MAX + 1], stop[KP_ID_MAX + 1];
	struct stat st;
	FILE *fp;

	if (cfg->place_file[0] == '\0' || engine == NULL)
		return;
	if (stat(cfg->place_file, &st) != 0) {
		if (pl->have != -1)
			logmsg(LOG_ERR, "place_file %s: %s (keeping the last place)", cfg->place_file,
			       strerror(errno));
		pl->have = -1;
		return;
	}
	if (pl->have == 1 && st.st_mtim.tv_sec == pl->mtime.tv_sec &&
	    st.st_mtim.tv_nsec == pl->mtime.tv_nsec && st.st_size == pl->size)
		return;
	pl->mtime = st.st_mtim;
	pl->size = st.st_size;
	pl->have = 1;
	fp = fopen(cfg->place_file, "r");
	if (fp == NULL || fgets(buf, sizeof(buf), fp) == NULL) {
		if (fp != NULL)
			fclose(fp);
		logmsg(LOG_ERR, "place_file %s: cannot read it (keeping the last place)",
		       cfg->place_file);
		return;
	}
	fclose(fp);
	if (kp_place_parse(buf, route, stop) != KP_OK ||
	    kp_tap_engine_set_place(engine, cfg->operator_id, route, stop, cfg->utc_offset_s,
	                            NULL) != KP_OK) {
		logmsg(LOG_ERR, "place_file %s: want \"ROUTE STOP\" (ids of 1-32 of A-Z a-z 0-9 - _ .);"
		       " keeping the last place", cfg->place_file);
		return;
	}
	logmsg(LOG_INFO, "now at route %s stop %s", route, stop);
}

static void show(struct kp_hmi *hmi, const struct kp_tap_outcome *o, int64_t now)
{
	struct kp_hmi_msg msg;
	char text[128];

	memset(&msg, 0, sizeof(msg));
	msg.reason = o->reason;
	msg.product = o->product[0] != '\0' ? o->product : NULL;
	msg.rides_left = o->rides_left;
	msg.time_ms = now;
	if (o->kind == KP_TAP_ACCEPTED) {
		int n;

		msg.result = KP_HMI_ACCEPTED;
		if (o->valid_until_ms != 0)
			n = snprintf(text, sizeof(text), "OK: %s, valid until %s", o->product,
			             o->until_text);
		else if (o->balance && strcmp(o->event, "tap_on") == 0)
			n = snprintf(text, sizeof(text), "OK: tapped on, balance %lld",
			             (long long)o->rides_left);
		else if (o->balance)
			n = snprintf(text, sizeof(text), "OK: %lld charged, balance %lld",
			             (long long)o->amount, (long long)o->rides_left);
		else if (o->rides_left < 0)
			n = snprintf(text, sizeof(text), "OK: %s", o->product);
		else
			n = snprintf(text, sizeof(text), "OK: %lld ride%s left", (long long)o->rides_left,
			             o->rides_left == 1 ? "" : "s");
		if (o->category[0] != '\0' && n > 0 && (size_t)n < sizeof(text))
			n += snprintf(text + n, sizeof(text) - (size_t)n, " (%s%s)", o->category,
			              o->linked ? ", My Number linked" : "");
		/* The re-enrolment window: tell the rider before the category lapses. */
		if (o->warn_days == 0 && n > 0 && (size_t)n < sizeof(text))
			snprintf(text + n, sizeof(text) - (size_t)n, "; %s status ends today: renew",
			         o->category);
		else if (o->warn_days > 0 && n > 0 && (size_t)n < sizeof(text))
			snprintf(text + n, sizeof(text) - (size_t)n, "; %s status ends in %d day%s: renew",
			         o->category, o->warn_days, o->warn_days == 1 ? "" : "s");
	} else {
		msg.result = o->kind == KP_TAP_ALREADY ? KP_HMI_ALREADY : KP_HMI_REFUSED;
		snprintf(text, sizeof(text), "%s", kp_tap_reason_text(o->reason));
	}
	msg.text = text;
	kp_hmi_show(hmi, &msg);
	kp_hmi_led(hmi, o->kind == KP_TAP_ACCEPTED ? KP_LED_GREEN :
	                o->kind == KP_TAP_ALREADY ? KP_LED_AMBER : KP_LED_RED);
	kp_hmi_beep(hmi, o->kind == KP_TAP_REFUSED ? KP_BEEP_ERROR :
	                 o->kind == KP_TAP_ALREADY ? KP_BEEP_NOTICE : KP_BEEP_OK);
}

static void show_info(struct kp_hmi *hmi, const char *reason, const char *text, int64_t now,
                      enum kp_led led, enum kp_beep beep)
{
	struct kp_hmi_msg msg = { KP_HMI_INFO, reason, text, NULL, -1, now };

	kp_hmi_show(hmi, &msg);
	kp_hmi_led(hmi, led);
	kp_hmi_beep(hmi, beep);
}

/* Link mode, at a registration counter with a PIN pad: a My Number card proves itself
 * (PIN + signature over a fresh challenge), then the rider taps the transit IC card to
 * link; the terminal journals a signed link request the backend decides on. */
struct link_state {
	int have_linkage;
	uint8_t linkage[KP_TOKEN_LEN];
	int64_t until_ms;                /* the transit IC card must come before this */
};

static void show_reason(struct kp_hmi *hmi, enum kp_reason reason, int64_t now, enum kp_led led,
                        enum kp_beep beep)
{
	show_info(hmi, kp_reason_code(reason), kp_reason_text(kp_reason_code(reason), 0), now, led,
	          beep);
}

/* Link mode's system-error: the rider tries again at the counter. */
static void show_link_not_recorded(struct kp_hmi *hmi, int64_t now)
{
	show_info(hmi, kp_reason_code(KP_R_SYSTEM_ERROR), "Not recorded: try again", now, KP_LED_RED,
	          KP_BEEP_ERROR);
}

/* A My Number card at the counter. Its PIN is taken for it before any APDU (and consumed,
 * so no later card can be sent it), used at most once, and wiped. */
static void link_mode_mynumber(kp_tap_engine *engine, struct kp_reader *r,
                               const struct kp_card_info *info, struct kp_hmi *hmi,
                               const char *pin_file, struct link_state *ls, int64_t now)
{
	struct kp_card_id id;
	struct kp_pin pin;
	struct kp_jpki j;
	char err[256] = "", text[128];
	int tries = -1, rc;

	ls->have_linkage = 0;
	memset(&pin, 0, sizeof(pin));
	rc = pin_file != NULL ? kp_pin_take_file(&pin, pin_file, err, sizeof(err)) : KP_E_PIN_NONE;
	if (rc == KP_E_PIN_NONE) {
		show_reason(hmi, KP_R_PIN_MISSING, now, KP_LED_AMBER, KP_BEEP_NOTICE);
		return;
	}
	if (rc != KP_OK) {
		logmsg(LOG_WARNING, "link mode: PIN refused before the card was asked anything: %s", err);
		if (rc == KP_E_PIN_FORMAT)
			show_reason(hmi, KP_R_PIN_INVALID, now, KP_LED_RED, KP_BEEP_ERROR);
		else
			show_link_not_recorded(hmi, now);
		return;
	}
	rc = kp_tap_engine_identify(engine, r, info, now, KP_CARD_ID_CERT, &id);
	if (rc != KP_OK) {
		kp_pin_wipe(&pin);
		show_reason(hmi, id.reason, now, KP_LED_RED, KP_BEEP_ERROR);
		return;
	}
	memcpy(ls->linkage, id.token, KP_TOKEN_LEN);
	kp_jpki_init(&j, r, 500);
	rc = kp_jpki_prove(&j, id.cert, &pin, &tries, err, sizeof(err));
	kp_pin_wipe(&pin);
	kp_card_id_wipe(&id);
	if (rc == KP_OK) {
		ls->have_linkage = 1;
		ls->until_ms = now + 60000;
		show_reason(hmi, KP_R_LINK_READY, now, KP_LED_BLUE, KP_BEEP_NOTICE);
		return;
	}
	if (rc != KP_E_SW_PIN || tries > 0)
		logmsg(LOG_WARNING, "link mode: %s", err);
	if (rc == KP_E_PIN_LAST_TRY) {
		show_reason(hmi, KP_R_PIN_LOW, now, KP_LED_RED, KP_BEEP_ERROR);
	} else if (rc == KP_E_SW_BLOCKED || (rc == KP_E_SW_PIN && tries == 0)) {
		show_reason(hmi, KP_R_PIN_BLOCKED, now, KP_LED_RED, KP_BEEP_ERROR);
	} else if (rc == KP_E_SW_PIN) {
		snprintf(text, sizeof(text), "Wrong PIN: %d tr%s left", tries, tries == 1 ? "y" : "ies");
		show_info(hmi, kp_reason_code(KP_R_PIN_WRONG), text, now, KP_LED_RED, KP_BEEP_ERROR);
	} else if (rc == KP_E_PIN_COUNTER) {
		show_reason(hmi, KP_R_PIN_UNREADABLE, now, KP_LED_RED, KP_BEEP_ERROR);
	} else if (rc == KP_E_CARD_SIGNATURE) {
		show_reason(hmi, KP_R_CARD_NOT_GENUINE, now, KP_LED_RED, KP_BEEP_ERROR);
	} else {
		show_reason(hmi, KP_R_CARD_ERROR, now, KP_LED_RED, KP_BEEP_ERROR);
	}
}

static void link_mode_tap(kp_tap_engine *engine, struct kp_reader *r,
                          const struct kp_card_info *info, struct kp_hmi *hmi,
                          const char *pin_file, struct link_state *ls, int64_t now)
{
	struct kp_tap_outcome o;

	if (info->tech == KP_TECH_ISO14443B) {
		link_mode_mynumber(engine, r, info, hmi, pin_file, ls, now);
		return;
	}
	if (info->tech == KP_TECH_FELICA && ls->have_linkage && now < ls->until_ms) {
		struct kp_card_id id;
		int rc;

		ls->have_linkage = 0;
		/* the token only: a link request reads nothing of the card */
		rc = kp_tap_engine_identify(engine, r, info, now, 0, &id);
		if (rc == KP_OK)
			rc = kp_tap_link(engine, id.token, ls->linkage, now, &o);
		kp_card_id_wipe(&id);
		if (rc != KP_OK) {
			show_link_not_recorded(hmi, now);
			return;
		}
		show_reason(hmi, KP_R_LINK_REQUEST, now, KP_LED_GREEN, KP_BEEP_OK);
		return;
	}
	show_reason(hmi, KP_R_LINK_FIRST, now, KP_LED_AMBER, KP_BEEP_NOTICE);
}

static void show_out_of_service(struct kp_hmi *hmi, int64_t now)
{
	struct kp_hmi_msg msg = { KP_HMI_REFUSED, kp_reason_code(KP_R_SYSTEM_ERROR),
	                          kp_reason_text(kp_reason_code(KP_R_SYSTEM_ERROR), 0), NULL, -1, now };

	kp_hmi_show(hmi, &msg);
	kp_hmi_led(hmi, KP_LED_RED);
	kp_hmi_beep(hmi, KP_BEEP_ERROR);
}

static void inspect(struct kp_reader *r, const struct kp_card_info *info,
                    const uint8_t token_key[KP_TOKEN_KEY_LEN], int timeout_ms)
{
	const struct kp_card_id_cfg cfg = { token_key, NULL, 0, timeout_ms, 0, KP_CARD_ID_BALANCE };
	struct kp_card_id id;
	struct kp_felica f;
	struct kp_transit_history h[KP_FELICA_HISTORY_BLOCKS];
	char hex[2 * KP_TOKEN_LEN + 1];
	int rc;

	if (info->tech != KP_TECH_FELICA) {
		printf("card: not a FeliCa card (technology %d)\n", (int)info->tech);
		return;
	}
	rc = kp_card_identify(r, info, &cfg, &id);
	kp_hex(id.token, KP_TOKEN_LEN, hex);
	kp_card_id_wipe(&id);
	if (rc != KP_OK) {
		printf("card token %s: balance unreadable: %s\n", hex, kp_strerror(rc));
		return;
	}
	printf("card token %s: type %u region %u balance %u yen\n", hex, id.balance.card_type,
	       id.balance.region, id.balance.balance);
	kp_felica_init(&f, r, info, timeout_ms);
	rc = kp_transit_read_history(&f, h);
	if (rc != KP_OK) {
		printf("  history unreadable: %s\n", kp_strerror(rc));
		return;
	}
	for (int i = 0; i < KP_FELICA_HISTORY_BLOCKS; i++) {
		if (h[i].empty)
			continue;
		printf("  %2d %04u-%02u-%02u terminal %02X process %02X in %04X out %04X "
		       "balance %u seq %u\n", i, h[i].year, h[i].month, h[i].day, h[i].terminal_type,
		       h[i].process_type, h[i].entry, h[i].exit_, h[i].balance, (unsigned)h[i].seq);
	}
}

/* 1 after a log line "cannot read WHAT PATH: WHY" when the file does not open for reading. */
static int unreadable_logged(const char *what, const char *path)
{
	char err[600];

	if (kp_file_unreadable(what, path, err, sizeof(err)) == 0)
		return 0;
	logmsg(LOG_ERR, "%s", err);
	return 1;
}

/* Binds the database to this terminal's identity: one database, one terminal. */
static int bind_identity(kp_store *s, const struct kp_terminal_cfg *cfg, const kp_key *key)
{
	kp_cert *cert = NULL;
	char cn[KP_ID_MAX + 1], have[KP_ID_MAX + 1];
	char *pem = NULL;
	FILE *fp = NULL;
	size_t n;
	int rc;

	if (unreadable_logged("terminal certificate", cfg->cert_path)) {
		rc = KP_E_CONFIG;
		goto out;
	}
	rc = kp_cert_load(&cert, cfg->cert_path);
	if (rc != 0) {
		logmsg(LOG_ERR, "certificate %s: %s", cfg->cert_path, kp_strerror(rc));
		goto out;
	}
	rc = kp_cert_subject_cn(cert, cn, sizeof(cn));
	if (rc != 0 || strcmp(cn, cfg->terminal_id) != 0) {
		logmsg(LOG_ERR, "certificate %s is for terminal '%s', not '%s'", cfg->cert_path,
		       rc == 0 ? cn : "?", cfg->terminal_id);
		rc = KP_E_CONFIG;
		goto out;
	}
	if (kp_cert_matches_key(cert, key) != 0) {
		logmsg(LOG_ERR, "certificate %s does not match key %s", cfg->cert_path, cfg->key_path);
		rc = KP_E_CONFIG;
		goto out;
	}
	if (kp_store_meta_get(s, "terminal_id", have, sizeof(have)) == KP_OK &&
	    strcmp(have, cfg->terminal_id) != 0) {
		logmsg(LOG_ERR, "database %s belongs to terminal '%s', not '%s'", cfg->database,
		       have, cfg->terminal_id);
		rc = KP_E_CONFIG;
		goto out;
	}
	pem = calloc(1, 8192);
	fp = fopen(cfg->cert_path, "r");
	if (pem == NULL || fp == NULL) {
		rc = KP_E_IO;
		goto out;
	}
	n = fread(pem, 1, 8191, fp);
	if (n == 0 || strstr(pem, "-----BEGIN CERTIFICATE-----") == NULL) {
		logmsg(LOG_ERR, "certificate %s must be PEM", cfg->cert_path);
		rc = KP_E_CONFIG;
		goto out;
	}
	rc = kp_store_meta_set(s, "terminal_id", cfg->terminal_id);
	if (rc == KP_OK)
		rc = kp_store_meta_set(s, "terminal_cert", pem);
out:
	if (fp != NULL)
		fclose(fp);
	free(pem);
	kp_cert_free(cert);
	return rc;
}

static int64_t mono_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* The reader connection. A reader whose operations fail LINK_MAX_FAILURES times in a row
 * (or that cannot be opened) is closed and reopened after 0.5 s, then 1, 2, 4, 8 and 10 s
 * between attempts; the rider sees "reader offline" once and "reader online" when it is
 * back. A tap is decided only after its card has been read whole, so a reader lost
 * mid-tap gives a refusal, never half a tap. */
#define LINK_MAX_FAILURES   3
#define LINK_BACKOFF_MIN_MS 500
#define LINK_BACKOFF_MAX_MS 10000

struct link {
	const char *conn;
	struct kp_reader *r;
	struct kp_hmi *hmi;
	int failures;                    /* consecutive reader failures */
	int backoff_ms;
	int64_t retry_at;                /* CLOCK_MONOTONIC ms of the next open attempt */
	int offline;                     /* "reader offline" is on the display */
	kp_session *ss;                  /* the console's session, or NULL */
	kp_events *ev;                   /* the event stream, or NULL */
};

static void link_show(struct link *l, const char *reason, const char *text)
{
	struct kp_hmi_msg msg = { KP_HMI_INFO, reason, text, NULL, -1, kp_reader_now_ms(NULL) };

	if (l->hmi != NULL)
		kp_hmi_show(l->hmi, &msg);
	if (l->ss != NULL)
		kp_session_reader(l->ss, strcmp(reason, "reader-online") == 0, text, msg.time_ms);
	else
		kp_events_reader(l->ev, msg.time_ms, strcmp(reason, "reader-online") == 0, text);
}

/* Logs a reader failure with the backend's own account of it, if it has one. */
static void log_reader(struct link *l, const char *what, int rc)
{
	char detail[256] = "";

	if (l->r != NULL)
		kp_reader_last_error(l->r, detail, sizeof(detail));
	logmsg(LOG_WARNING, "reader: %s: %s%s%s%s", what, kp_strerror(rc),
	       detail[0] != '\0' ? " (" : "", detail, detail[0] != '\0' ? ")" : "");
}

/* Gives the reader up; the next open is attempted after the current backoff. */
static void link_down(struct link *l, const char *why)
{
	kp_reader_close(l->r);
	l->r = NULL;
	l->failures = 0;
	l->retry_at = mono_ms() + l->backoff_ms;
	if (!l->offline) {
		logmsg(LOG_ERR, "reader %s offline: %s; reopening in %d ms", l->conn, why,
		       l->backoff_ms);
		link_show(l, "reader-offline", "Reader offline");
		kp_sys_status("reader %s offline: %s", l->conn, why);
		l->offline = 1;
	}
}

/* Reopens the reader when its time has come; returns it, or NULL while it is offline. */
static struct kp_reader *link_up(struct link *l)
{
	char err[256];
	int rc;

	if (l->r != NULL)
		return l->r;
	if (mono_ms() < l->retry_at)
		return NULL;
	rc = kp_reader_open_err(&l->r, l->conn, err, sizeof(err));
	if (rc != KP_HAL_OK) {
		l->r = NULL;
		l->backoff_ms = l->backoff_ms * 2 > LINK_BACKOFF_MAX_MS ? LINK_BACKOFF_MAX_MS :
		                l->backoff_ms * 2;
		l->retry_at = mono_ms() + l->backoff_ms;
		logmsg(LOG_WARNING, "reader %s: %s; next attempt in %d ms%s%s%s", l->conn,
		       kp_strerror(rc), l->backoff_ms, err[0] != '\0' ? " (" : "", err,
		       err[0] != '\0' ? ")" : "");
		return NULL;
	}
	l->backoff_ms = LINK_BACKOFF_MIN_MS;
	l->failures = 0;
	if (l->offline) {
		char desc[256] = "";

		kp_reader_describe(l->r, desc, sizeof(desc));
		logmsg(LOG_INFO, "reader online: %s", desc);
		link_show(l, "reader-online", "Reader online");
		kp_sys_status("serving; reader online: %s", desc);
		l->offline = 0;
	}
	return l->r;
}

/* Counts a reader failure; after LINK_MAX_FAILURES in a row the reader is given up. */
static void link_failed(struct link *l, const char *what, int rc)
{
	log_reader(l, what, rc);
	if (rc == KP_HAL_E_IO && ++l->failures >= LINK_MAX_FAILURES)
		link_down(l, "it keeps failing");
}

static void sleep_ms(int ms)
{
	for (int i = 0; i < ms / 50 && !stop_requested; i++)
		usleep(50 * 1000);
}

struct syncer {
	const struct kp_terminal_cfg *cfg;
	kp_session *ss;                  /* told of each attempt, or NULL */
	kp_events *ev;
	kp_tls_conf *tls;
	kp_cert *backend_cert;
	pthread_t thread;
	int started;
	int metrics;                     /* reports to metrics_file (not --sync-once) */
	int current;                     /* the backend address tried first: the last that
	                                  * answered */
};

static int syncer_setup(struct syncer *y, const struct kp_terminal_cfg *cfg)
{
	char err[512];
	int rc;

	memset(y, 0, sizeof(*y));
	y->cfg = cfg;
	rc = kp_tls_conf_new(&y->tls, KP_TLS_CLIENT, cfg->backend_ca, cfg->cert_path,
	                     cfg->key_path, err, sizeof(err));
	if (rc != 0) {
		logmsg(LOG_ERR, "sync: TLS set-up: %s", err);
		return rc;
	}
	if (unreadable_logged("backend certificate", cfg->backend_cert))
		return KP_E_CONFIG;
	rc = kp_cert_load(&y->backend_cert, cfg->backend_cert);
	if (rc != 0) {
		logmsg(LOG_ERR, "sync: backend certificate %s: %s", cfg->backend_cert,
		       kp_strerror(rc));
		return rc;
	}
	/* A certificate from before profiles: the backend would refuse it at every sync. (A
	 * backend_cert of the wrong profile is refused at the handshake: it pins the server.) */
	rc = kp_cert_file_check_profile(cfg->cert_path, KP_CERT_TERMINAL, err, sizeof(err));
	if (rc != 0)
		logmsg(LOG_ERR, "sync: %s", err);
	return rc;
}

static void syncer_free(struct syncer *y)
{
	kp_tls_conf_free(y->tls);
	kp_cert_free(y->backend_cert);
}

/* 1 if rc says the backend at an address could not be reached or the connection to it
 * failed (connect, TLS, a deadline, a cut): another address may serve. An answer of the
 * backend's protocol (an error message, a refused record, another journal, a bundle that
 * does not open) is not: every instance serves the same database and would answer the
 * same, and trying them all would only multiply the load a refused terminal makes. */
static int unreachable(int rc)
{
	return rc == KP_TLS_E_NET || rc == KP_TLS_E_TIMEOUT || rc == KP_TLS_E_HANDSHAKE ||
	       rc == KP_TLS_E_PEER || rc == KP_TLS_E_CLOSED || rc == KP_TLS_E_IO;
}

/* kp_sync_run with the configured backends in turn, from the last one that answered,
 * moving on while one cannot be reached; logs each address given up and the one synced
 * with. */
static int sync_failover(struct syncer *y, const struct kp_sync_source *src,
                         struct kp_sync_stats *st, char *err, size_t err_cap)
{
	const struct kp_terminal_cfg *cfg = y->cfg;
	int n = cfg->n_backends, rc = KP_SYNC_E_INVAL;

	for (int k = 0; k < n; k++) {
		int i = (y->current + k) % n;
		const struct kp_backend_addr *a = &cfg->backends[i];

		rc = kp_sync_run(y->tls, a->host, a->port, cfg->backend_name, cfg->terminal_id,
		                 y->backend_cert, src, cfg->sync_timeout_ms, st, err, err_cap);
		if (!unreachable(rc)) {
			y->current = i;
			if (n > 1 || rc == 0)
				logmsg(LOG_INFO, "sync: with backend %s:%s%s", a->host, a->port,
				       rc == 0 ? "" : " (it answered; no other address is tried)");
			return rc;
		}
		if (k + 1 < n)
			logmsg(LOG_WARNING, "sync: %s; trying backend %s:%s", err,
			       cfg->backends[(i + 1) % n].host, cfg->backends[(i + 1) % n].port);
	}
	if (n > 1) {
		char last[512];

		snprintf(last, sizeof(last), "%s", err);
		snprintf(err, err_cap, "none of the %d backend addresses could be reached; the "
		         "last: %.400s", n, last);
	}
	return rc;
}

/* One exchange on a database connection of its own; logs the outcome. */
static int sync_once(struct syncer *y)
{
	const struct kp_terminal_cfg *cfg = y->cfg;
	struct kp_sync_source src;
	struct kp_sync_stats st;
	kp_store *s = NULL;
	char err[512];
	int rc;

	memset(&st, 0, sizeof(st));
	rc = kp_store_open_err(&s, cfg->database, err, sizeof(err));
	if (rc != KP_OK) {
		logmsg(LOG_WARNING, "sync: %s", err);
		return rc;
	}
	kp_store_sync_source(s, &src);
	rc = sync_failover(y, &src, &st, err, sizeof(err));
	{
		uint64_t acked = 0, version = 0, head = 0;
		struct timespec now;

		clock_gettime(CLOCK_REALTIME, &now);
		kp_store_sync_state(s, &acked, &version, &head);
		if (y->metrics) {
			kp_tmetrics_sync(rc == 0, head > acked ? head - acked : 0,
			                 (int64_t)now.tv_sec * 1000 + now.tv_nsec / 1000000);
			if (kp_tmetrics_write(cfg->metrics_file, cfg->database, 1, err, sizeof(err)) < 0)
				logmsg(LOG_WARNING, "%s", err);
		}
		kp_session_sync(y->ss, rc == 0, (int64_t)now.tv_sec * 1000 + now.tv_nsec / 1000000);
		kp_events_sync(y->ev, (int64_t)now.tv_sec * 1000 + now.tv_nsec / 1000000, rc == 0,
		               acked, head, version, rc == 0 ? NULL : err);
	}
	/* Loud even when the exchange under the new journal went well: a technician should
	 * know that this database was not the journal the backend held. */
	if (st.journal_started)
		logmsg(LOG_WARNING, "sync: NEW JOURNAL %02x%02x%02x%02x: %s; this database now sends "
		       "all its records under a new journal id (a new epoch of this terminal at the "
		       "backend, which keeps each record it holds already once)", st.journal[0],
		       st.journal[1], st.journal[2], st.journal[3], st.journal_note);
	if (rc == 0)
		logmsg(LOG_INFO, "sync: sent %llu records, backend holds up to %llu, config %s%llu",
		       (unsigned long long)st.sent, (unsigned long long)st.acked,
		       st.bundle_applied ? "applied version " : "unchanged at version ",
		       (unsigned long long)st.bundle_version);
	else if (rc == KP_SYNC_E_JOURNAL)
		/* not a passing fault: nothing is sent while it lasts */
		logmsg(LOG_ERR, "sync REFUSED, database is not this terminal's journal: %s", err);
	else
		logmsg(LOG_WARNING, "sync: %s (sent %llu, backend holds up to %llu)", err,
		       (unsigned long long)st.sent, (unsigned long long)st.acked);
	kp_store_close(s);
	return rc;
}

/* Syncs on a timer, retrying sooner after a failure so a terminal that regains
 * connectivity catches up quickly; never touches the tap path's connection. */
static void *sync_main(void *arg)
{
	struct syncer *y = arg;
	int backoff = 5;

	while (!sync_stop && !stop_requested) {
		int wait_s = sync_once(y) == 0 ? y->cfg->sync_interval_s : backoff;

		backoff = backoff * 2 > y->cfg->sync_interval_s ? y->cfg->sync_interval_s : backoff * 2;
		for (int i = 0; i < wait_s * 10 && !sync_stop && !stop_requested; i++)
			usleep(100 * 1000);
	}
	return NULL;
}

/* Journaled records to the event stream (without the console). */
static void events_observe(void *arg, const struct kp_record *rec)
{
	kp_events_record(arg, rec);
}

static void events_log(void *arg, const char *msg)
{
	(void)arg;
	logmsg(LOG_WARNING, "%s", msg);
}

static void session_log(int warn, const char *msg)
{
	logmsg(warn ? LOG_WARNING : LOG_INFO, "%s", msg);
}

/* The tap engine's log: why a card, a fare or a commit failed (never on the console's
 * message line, which says it in the driver's words). */
static void engine_log(void *arg, const char *msg)
{
	(void)arg;
	logmsg(LOG_NOTICE, "%s", msg);
}

/* While the console draws on the terminal, stderr (ours and the library's) goes to
 * console_log (default: the database's path + ".log"). Returns the old stderr, or -1. */
static int console_stderr(const struct kp_console_cfg *cc, const struct kp_terminal_cfg *cfg)
{
	char path[600];
	int fd, saved;

	if (use_syslog)
		snprintf(path, sizeof(path), "/dev/null");
	else if (cc->log_path[0] != '\0')
		snprintf(path, sizeof(path), "%s", cc->log_path);
	else
		snprintf(path, sizeof(path), "%s.log", cfg->database);
	fd = use_syslog ? open(path, O_WRONLY | O_CLOEXEC) : kp_sys_open_private(path, O_APPEND);
	if (fd < 0) {
		logmsg(LOG_WARNING, "console_log %s: %s; log messages are dropped", path,
		       strerror(errno));
		fd = open("/dev/null", O_WRONLY | O_CLOEXEC);
		if (fd < 0)
			return -1;
	}
	saved = dup(STDERR_FILENO);
	dup2(fd, STDERR_FILENO);
	close(fd);
	return saved;
}

/* ---- the command line ---- */

/* What the command line asks for: actions, and settings that win over the file. */
struct cli {
	const char *config, *pin_file;
	int inspect, describe, list_readers, sync_once, offline, link_mode, console, config_keys;
	struct { const char *key, *val; } set[32], console_set[16];
	size_t n_set, n_console_set;
};

enum cli_kind {
	CLI_FLAG,        /* an int in struct cli set to 1 */
	CLI_VALUE,       /* a const char * in struct cli */
	CLI_KEY,         /* a setting of the terminal's configuration (key) */
	CLI_CONSOLE_KEY, /* a setting of the console's configuration (key) */
	CLI_HELP,
};

/* The options: --name, what it is, and where it goes (field in struct cli, or the file's key). */
static const struct cli_opt {
	const char *name;
	enum cli_kind kind;
	size_t field;
	const char *key;
} cli_opts[] = {
	{ "config", CLI_VALUE, offsetof(struct cli, config), NULL },
	{ "reader", CLI_KEY, 0, "reader" },
	{ "hmi", CLI_KEY, 0, "hmi" },
	{ "db", CLI_KEY, 0, "database" },
	{ "terminal-id", CLI_KEY, 0, "terminal_id" },
	{ "operator", CLI_KEY, 0, "operator" },
	{ "route", CLI_KEY, 0, "route" },
	{ "stop", CLI_KEY, 0, "stop" },
	{ "key", CLI_KEY, 0, "key" },
	{ "cert", CLI_KEY, 0, "cert" },
	{ "token-key", CLI_KEY, 0, "token_key" },
	{ "inspect", CLI_FLAG, offsetof(struct cli, inspect), NULL },
	{ "describe", CLI_FLAG, offsetof(struct cli, describe), NULL },
	{ "list-readers", CLI_FLAG, offsetof(struct cli, list_readers), NULL },
	{ "sync-once", CLI_FLAG, offsetof(struct cli, sync_once), NULL },
	{ "backend", CLI_KEY, 0, "backend" },
	{ "offline", CLI_FLAG, offsetof(struct cli, offline), NULL },
	{ "link-mode", CLI_FLAG, offsetof(struct cli, link_mode), NULL },
	{ "pin-file", CLI_VALUE, offsetof(struct cli, pin_file), NULL },
	{ "console", CLI_FLAG, offsetof(struct cli, console), NULL },
	{ "console-mode", CLI_CONSOLE_KEY, 0, "console_mode" },
	{ "console-language", CLI_CONSOLE_KEY, 0, "console_language" },
	{ "denylist-max-age", CLI_CONSOLE_KEY, 0, "denylist_max_age" },
	{ "events", CLI_CONSOLE_KEY, 0, "events" },
	{ "config-keys", CLI_FLAG, offsetof(struct cli, config_keys), NULL },
	{ "help", CLI_HELP, 0, NULL },
	{ "version", CLI_HELP, 0, NULL },
};
#define N_CLI_OPTS (sizeof(cli_opts) / sizeof(cli_opts[0]))

/* One option into cli; a setting beyond what cli holds is dropped, as it always was. */
static void cli_take(struct cli *cli, const struct cli_opt *o, const char *v)
{
	char *field = (char *)cli + o->field;

	switch (o->kind) {
	case CLI_FLAG:
		*(int *)(void *)field = 1;
		break;
	case CLI_VALUE:
		*(const char **)(void *)field = v;
		break;
	case CLI_KEY:
		if (cli->n_set < sizeof(cli->set) / sizeof(cli->set[0])) {
			cli->set[cli->n_set].key = o->key;
			cli->set[cli->n_set++].val = v;
		}
		break;
	case CLI_CONSOLE_KEY:
		if (cli->n_console_set < sizeof(cli->console_set) / sizeof(cli->console_set[0])) {
			cli->console_set[cli->n_console_set].key = o->key;
			cli->console_set[cli->n_console_set++].val = v;
		}
		break;
	case CLI_HELP:
		break;
	}
}

/* The command line into cli: -1 to go on, or the exit status (--help, a bad option). */
static int cli_parse(int argc, char **argv, struct cli *cli)
{
	static char prog[] = "kippu-terminal";
	struct option lo[N_CLI_OPTS + 1];
	int c;

	memset(cli, 0, sizeof(*cli));
	memset(lo, 0, sizeof(lo));
	for (size_t i = 0; i < N_CLI_OPTS; i++) {
		lo[i].name = cli_opts[i].name;
		lo[i].has_arg = cli_opts[i].kind == CLI_FLAG || cli_opts[i].kind == CLI_HELP ?
		                no_argument : required_argument;
		lo[i].val = 256 + (int)i;
	}
	argv[0] = prog;                  /* getopt's messages say "kippu-terminal: ..." */
	while ((c = getopt_long(argc, argv, "h", lo, NULL)) != -1) {
		if (c == 'h' || (c >= 256 && c < 256 + (int)N_CLI_OPTS &&
		                 cli_opts[c - 256].kind == CLI_HELP)) {
			if (c != 'h' && strcmp(cli_opts[c - 256].name, "version") == 0)
				printf("kippu-terminal (kippu) %s\n", KP_VERSION);
			else
				usage(stdout);
			return 0;
		}
		if (c < 256 || c >= 256 + (int)N_CLI_OPTS) {
			usage(stderr);
			return 2;
		}
		cli_take(cli, &cli_opts[c - 256], optarg);
	}
	if (optind != argc) {
		fprintf(stderr, "kippu-terminal: unexpected argument '%s'\n", argv[optind]);
		usage(stderr);
		return 2;
	}
	return -1;
}

/* --config-keys: the configuration file's keys as a markdown table. */
static int print_config_keys(void)
{
	struct kp_cfg_key_info k;

	printf("| key | default | meaning |\n| --- | --- | --- |\n");
	for (size_t i = 0; kp_terminal_cfg_key_info(i, &k) == 0; i++) {
		printf("| `%s` | %s%s%s | %s", k.name, k.def != NULL ? "`" : "",
		       k.def != NULL ? k.def : "none", k.def != NULL ? "`" : "", k.doc);
		if (k.has_range)
			printf(" (%lld to %lld)", (long long)k.min, (long long)k.max);
		for (size_t j = 0; k.choices != NULL && k.choices[j] != NULL; j++)
			printf("%s`%s`%s", j == 0 ? " (" : ", ", k.choices[j],
			       k.choices[j + 1] == NULL ? ")" : "");
		printf(" |\n");
	}
	return 0;
}

static int list_readers(void)
{
	char list[8192];
	size_t n = 0;
	int rc = kp_libnfc_list(list, sizeof(list), &n);

	if (rc != KP_HAL_OK && rc != KP_HAL_E_OVERFLOW) {
		fprintf(stderr, "kippu-terminal: listing readers: %s\n", kp_strerror(rc));
		return 1;
	}
	fputs(n > 0 ? list : "no readers found\n", stdout);
	return 0;
}

/* The file, then the command line's settings (which win, through the same checks), then
 * what does not combine: 0, or the exit status after saying why. */
static int cli_settings(const struct cli *cli, struct kp_terminal_cfg *cfg,
                        struct kp_console_cfg *ccfg)
{
	char err[600];

	if (cli->config != NULL &&
	    kp_terminal_cfg_load_console(cfg, ccfg, cli->config, err, sizeof(err)) != KP_OK) {
		fprintf(stderr, "kippu-terminal: %s\n", err);
		return 2;
	}
	for (size_t i = 0; i < cli->n_set; i++) {
		if (kp_terminal_cfg_set(cfg, cli->set[i].key, cli->set[i].val, err, sizeof(err)) !=
		    KP_OK) {
			fprintf(stderr, "kippu-terminal: --%s\n", err);
			return 2;
		}
	}
	for (size_t i = 0; i < cli->n_console_set; i++) {
		if (kp_console_cfg_set(ccfg, cli->console_set[i].key, cli->console_set[i].val, err,
		                       sizeof(err)) != KP_OK) {
			fprintf(stderr, "kippu-terminal: --%s\n", err);
			return 2;
		}
	}
	if (cli->console && (strcmp(ccfg->events, "json") == 0 ||
	                     strcmp(ccfg->events, "json:-") == 0)) {
		fprintf(stderr, "kippu-terminal: --events json writes to stdout, which the console "
		        "draws on: use --events json:PATH (a file or a FIFO)\n");
		return 2;
	}
	if (cli->console && (cli->link_mode || cli->inspect)) {
		fprintf(stderr, "kippu-terminal: --console does not combine with --link-mode or "
		        "--inspect\n");
		return 2;
	}
	/* The console owns stdout: the rider-facing mock HMI keeps its events in memory. */
	if (cli->console && strcmp(cfg->hmi, "mock:-") == 0)
		snprintf(cfg->hmi, sizeof(cfg->hmi), "mock:");
	return 0;
}

/* --sync-once: one exchange with the backend. */
static int run_sync_once(const struct kp_terminal_cfg *cfg)
{
	struct syncer syncer;
	int rc;

	memset(&syncer, 0, sizeof(syncer));
	if (cfg->n_backends == 0 || cfg->terminal_id[0] == '\0') {
		logmsg(LOG_ERR, "--sync-once needs terminal_id and backend = HOST:PORT");
		return 2;
	}
	rc = syncer_setup(&syncer, cfg);
	if (rc == 0)
		rc = sync_once(&syncer);
	syncer_free(&syncer);
	return rc == 0 ? 0 : 1;
}

/* ---- the terminal: what it opens, its loop, and its end ---- */

struct app {
	const struct cli *cli;
	struct kp_terminal_cfg cfg;
	struct kp_console_cfg ccfg;
	struct link link;
	struct syncer syncer;
	struct link_state ls;
	kp_store *store;
	kp_key *key;
	kp_tap_engine *engine;
	kp_sign_pool *pool;              /* the records' nonces, computed ahead (NULL: none) */
	struct kp_reader *reader;        /* until the link owns it */
	struct kp_hmi *hmi;
	kp_console *console;
	kp_events *events;
	kp_session *session;
	int saved_stderr;
	uint8_t token_key[KP_TOKEN_KEY_LEN];
	unsigned long taps, accepted, refused;
};

/* The reader (a missing or silent one is waited for), --describe, and the token key:
 * -1 to go on, or the exit status. */
static int app_open_reader(struct app *a)
{
	char err[256];
	int rc;

	a->link.conn = a->cfg.reader;
	a->link.backoff_ms = LINK_BACKOFF_MIN_MS;
	rc = kp_reader_open_err(&a->reader, a->cfg.reader, err, sizeof(err));
	if (rc != KP_HAL_OK) {
		logmsg(LOG_ERR, "reader %s: %s%s%s%s", a->cfg.reader, kp_strerror(rc),
		       err[0] != '\0' ? " (" : "", err, err[0] != '\0' ? ")" : "");
		/* A reader that is missing or silent may come back: wait for it. A wrong
		 * connection string or scenario will not. */
		if (rc != KP_HAL_E_IO || a->cli->describe)
			return 1;
		a->reader = NULL;
	}
	if (a->cli->describe) {
		char desc[256];

		if (kp_reader_describe(a->reader, desc, sizeof(desc)) == KP_HAL_OK)
			printf("%s\n", desc);
		return 0;
	}
	if (unreadable_logged("token key", a->cfg.token_key_path))
		return 1;
	rc = kp_token_key_load(a->cfg.token_key_path, a->token_key);
	if (rc != KP_OK) {
		logmsg(LOG_ERR, "token key %s: %s", a->cfg.token_key_path, kp_strerror(rc));
		return 1;
	}
	return -1;
}

/* The signing pool (sign_pool entries; kp_sign_pool.h): the records' ES256 nonces are
 * computed ahead, so that a tap's signature costs a few modular multiplications instead
 * of a scalar multiplication. Filled here up to POOL_START entries, then while idle
 * (loop_idle). Without it (0, or no memory) records are signed with RFC 6979 as before. */
#define POOL_START   64

static void app_open_pool(struct app *a)
{
	size_t cap = (size_t)a->cfg.sign_pool;
	int rc;

	if (cap == 0)
		return;
	rc = kp_sign_pool_open(&a->pool, a->key, cap);
	if (rc == KP_CRYPTO_OK)
		rc = kp_sign_pool_refill(a->pool, cap < POOL_START ? cap : POOL_START, NULL);
	if (rc != KP_CRYPTO_OK) {
		logmsg(LOG_WARNING, "signing pool: %s; records are signed without it",
		       kp_crypto_strerror(rc));
		kp_sign_pool_free(a->pool);
		a->pool = NULL;
		return;
	}
	kp_tap_engine_set_pool(a->engine, a->pool);
}

/* The key, the store bound to this terminal, and the tap engine (not for --inspect). */
static int app_open_engine(struct app *a)
{
	const struct kp_terminal_cfg *cfg = &a->cfg;
	char err[600];
	int rc;

	if (cfg->terminal_id[0] == '\0' || cfg->operator_id[0] == '\0') {
		logmsg(LOG_ERR, "terminal_id and operator must be configured");
		return 2;
	}
	if (unreadable_logged("terminal key", cfg->key_path))
		return 1;
	rc = kp_key_load(&a->key, cfg->key_path);
	if (rc != 0) {
		logmsg(LOG_ERR, "key %s: %s", cfg->key_path, kp_strerror(rc));
		return 1;
	}
	rc = kp_store_open_err(&a->store, cfg->database, err, sizeof(err));
	if (rc != KP_OK) {
		logmsg(LOG_ERR, "%s", err);
		return 1;
	}
	rc = bind_identity(a->store, cfg, a->key);
	if (rc != KP_OK)
		return 1;
	rc = kp_tap_engine_open_err(&a->engine, a->store, cfg, a->key, a->token_key, err,
	                            sizeof(err));
	if (rc != KP_OK) {
		logmsg(LOG_ERR, "tap engine: %s%s%s", kp_strerror(rc), err[0] != '\0' ? ": " : "",
		       err);
		return 1;
	}
	kp_tap_engine_log(a->engine, engine_log, NULL);
	app_open_pool(a);
	return -1;
}

/* The event stream and the driver console, with a tap engine only. */
static int app_open_console(struct app *a)
{
	struct kp_session_io io;
	char err[600];
	int rc;

	if (a->ccfg.events[0] != '\0' && a->engine != NULL) {
		/* A target that cannot be written is logged and retried: taps go on. */
		rc = kp_events_open(&a->events, a->ccfg.events, events_log, NULL);
		if (rc != KP_OK) {
			logmsg(LOG_ERR, "events %s: %s", a->ccfg.events, kp_strerror(rc));
			return 2;
		}
		a->link.ev = a->events;
		a->syncer.ev = a->events;
	}
	if (!a->cli->console || a->engine == NULL) {
		if (a->events != NULL)
			kp_tap_engine_observe(a->engine, events_observe, a->events);
		return -1;
	}
	rc = kp_console_open(&a->console, &a->ccfg, &a->cfg, err, sizeof(err));
	if (rc != KP_OK) {
		logmsg(LOG_ERR, "console: %s", err);
		return 2;
	}
	/* The screen is the console's now: logs go to console_log (and warnings to the
	 * console's message line). */
	a->saved_stderr = console_stderr(&a->ccfg, &a->cfg);
	pthread_mutex_lock(&console_mu);
	the_console = a->console;
	pthread_mutex_unlock(&console_mu);
	memset(&io, 0, sizeof(io));
	io.store = a->store;
	io.engine = a->engine;
	io.console = a->console;
	io.events = a->events;
	io.cc = &a->ccfg;
	io.have_backend = a->cfg.n_backends > 0 && !a->cli->offline;
	io.log = session_log;
	rc = kp_session_open(&a->session, &io);
	if (rc != KP_OK) {
		logmsg(LOG_ERR, "console: reading the journal: %s", kp_strerror(rc));
		return 1;
	}
	a->link.ss = a->session;
	a->syncer.ss = a->session;
	kp_session_tick(a->session, a->link.r,
	                a->link.r != NULL ? kp_reader_now_ms(a->link.r) : 0, 1);
	return -1;
}

/* Everything the loop needs, in order: -1 to run the loop, or the exit status. */
static int app_open(struct app *a)
{
	struct sigaction sa;
	char err[600];
	int rc;

	rc = app_open_reader(a);
	if (rc < 0 && !a->cli->inspect)
		rc = app_open_engine(a);
	if (rc >= 0)
		return rc;
	rc = kp_hmi_open_err(&a->hmi, a->cfg.hmi, err, sizeof(err));
	if (rc != KP_HAL_OK) {
		if (err[0] != '\0')
			logmsg(LOG_ERR, "%s", err);
		logmsg(LOG_ERR, "hmi %s: %s", a->cfg.hmi, kp_strerror(rc));
		return 1;
	}
	a->link.hmi = a->hmi;
	a->link.r = a->reader;
	a->reader = NULL;                /* the link owns it now */
	memset(&sa, 0, sizeof(sa));
	sa.sa_handler = on_signal;
	sigemptyset(&sa.sa_mask);
	sigaction(SIGINT, &sa, NULL);
	sigaction(SIGTERM, &sa, NULL);
	rc = app_open_console(a);
	if (rc >= 0)
		return rc;
	if (a->link.r == NULL)
		link_down(&a->link, "it cannot be opened");
	if (!a->cli->inspect && !a->cli->offline && a->cfg.n_backends > 0) {
		kp_session *keep_ss = a->syncer.ss;
		kp_events *keep_ev = a->syncer.ev;

		if (syncer_setup(&a->syncer, &a->cfg) != 0)
			return 1;
		a->syncer.ss = keep_ss;
		a->syncer.ev = keep_ev;
		a->syncer.metrics = 1;
		if (pthread_create(&a->syncer.thread, NULL, sync_main, &a->syncer) == 0)
			a->syncer.started = 1;
	}
	return -1;
}

/* The loop's own state between polls. */
struct loop {
	struct kp_poll poll;
	int64_t last_activity, last_sweep;
	int dirty, scenario_done, wait_ms;
	struct place pl;
};

/* The figures for metrics_file, written now (force) or when due (kp_tmetrics_write); a
 * failure is logged once until a write succeeds again. */
static void metrics_update(struct app *a, int force)
{
	static int failing;
	uint64_t acked = 0, version = 0, head = 0;
	char err[700];
	int rc;

	if (a->cfg.metrics_file[0] == '\0' || a->store == NULL)
		return;
	kp_store_sync_state(a->store, &acked, &version, &head);
	kp_tmetrics_state(head > acked ? head - acked : 0, a->link.r != NULL);
	rc = kp_tmetrics_write(a->cfg.metrics_file, a->cfg.database, force, err, sizeof(err));
	if (rc < 0 && !failing)
		logmsg(LOG_WARNING, "%s", err);
	if (rc <= 0)
		failing = rc < 0;
}

/* No card this poll: fold the WAL into the database when idle (never during a tap), and
 * close journeys left open now and then. */
static void loop_idle(struct app *a, struct loop *lp, struct kp_reader *r)
{
	a->link.failures = 0;
	if (lp->dirty && a->store != NULL &&
	    mono_ms() - lp->last_activity >= a->cfg.checkpoint_idle_ms) {
		kp_store_idle(a->store);
		lp->dirty = 0;
	}
	if (a->engine != NULL && !a->cli->inspect && !a->cli->link_mode &&
	    mono_ms() - lp->last_sweep >= 10000) {
		sweep(a->engine, kp_reader_now_ms(r));
		lp->last_sweep = mono_ms();
	}
	/* Bounded work, so that a card presented now waits for a few scalar multiplications
	 * at most; a failure leaves the pool as it was and signing falls back. */
	if (a->pool != NULL)
		(void)kp_sign_pool_refill(a->pool, KP_SIGN_POOL_IDLE_BATCH, NULL);
	metrics_update(a, 0);
}

/* A card was found: inspect it, link it, or decide its tap and tell the rider. */
static void loop_card(struct app *a, struct loop *lp, struct kp_reader *r,
                      const struct kp_card_info *info)
{
	struct kp_tap_outcome o;
	int64_t now, t0;
	int decided = 0, rc;

	a->link.failures = 0;
	now = kp_reader_now_ms(r);
	if (a->cli->inspect) {
		inspect(r, info, a->token_key, a->cfg.card_timeout_ms);
		kp_reader_release(r, 1, a->cfg.poll_timeout_ms);
		return;
	}
	if (a->cli->link_mode) {
		link_mode_tap(a->engine, r, info, a->hmi, a->cli->pin_file, &a->ls, now);
		kp_reader_release(r, 1, a->cfg.poll_timeout_ms);
		return;
	}
	/* The card is read whole before anything is decided: a reader or card lost
	 * mid-read is a refusal (card-removed, card-error), never half a tap. */
	t0 = mono_ms();
	if (a->session != NULL) {
		rc = kp_session_tap(a->session, r, info, now, &o, &decided);
	} else {
		rc = kp_tap_card(a->engine, r, info, now, &o);
		decided = rc == KP_OK;
	}
	a->taps++;
	if (rc == KP_OK && decided)
		kp_tmetrics_tap(o.kind == KP_TAP_ACCEPTED ? "accepted" : o.kind == KP_TAP_ALREADY ?
		                "already" : "refused", o.reason, (double)(mono_ms() - t0) / 1000.0);
	else if (rc != KP_OK)
		kp_tmetrics_tap("error", kp_reason_code(KP_R_SYSTEM_ERROR),
		                (double)(mono_ms() - t0) / 1000.0);
	if (rc == KP_OK && !decided) {
		/* validation only / waiting for the driver: nothing decided */
	} else if (rc == KP_OK) {
		show(a->hmi, &o, now);
		if (kp_sys_journal() && !use_syslog) {
			/* A structured entry per tap, for the journal only (never a card id). */
			struct kp_log_tap lt = { a->cfg.terminal_id, (long long)o.seq,
			                         o.kind == KP_TAP_ACCEPTED ? "accepted" :
			                         o.kind == KP_TAP_REFUSED ? "refused" : "already",
			                         o.reason };

			kp_log_tap(LOG_INFO, &lt, "tap %llu: %s (%s)", (unsigned long long)o.seq,
			           lt.result, o.reason);
		}
		if (o.kind == KP_TAP_ACCEPTED)
			a->accepted++;
		else if (o.kind == KP_TAP_REFUSED)
			a->refused++;
	} else {
		logmsg(LOG_ERR, "tap not recorded: %s", kp_strerror(rc));
		show_out_of_service(a->hmi, now);
	}
	/* The driver's screen after the rider's display. */
	if (a->session != NULL && (decided || rc != KP_OK))
		kp_session_result(a->session, r, rc, &o, now);
	rc = kp_reader_release(r, 1, a->cfg.poll_timeout_ms);
	if (rc == KP_HAL_E_IO)
		link_failed(&a->link, "releasing the card", rc);
	lp->last_activity = mono_ms();
	lp->dirty = 1;
	/* A mock scenario in virtual time never idles: checkpoint every 64 taps. */
	if (a->store != NULL && a->taps % 64 == 0) {
		kp_store_idle(a->store);
		if (a->engine != NULL && !a->cli->inspect && !a->cli->link_mode)
			sweep(a->engine, now);
	}
	metrics_update(a, 0);
}

/* One turn of the loop: 0 to go on, 1 to stop. */
static int loop_turn(struct app *a, struct loop *lp)
{
	struct kp_card_info info;
	struct kp_reader *r;
	int rc, wait_ms;

	if (a->session != NULL) {
		/* Driver actions run here, on the thread that owns the engine. */
		int64_t at = a->link.r != NULL ? kp_reader_now_ms(a->link.r) : kp_reader_now_ms(NULL);

		if (kp_session_actions(a->session, at))
			return 1;
		kp_session_tick(a->session, a->link.r, at, 0);
	}
	if (lp->scenario_done) {
		/* The console stays up after a mock scenario's last tap until the driver
		 * quits, so the shift can be ended and its summary read. */
		sleep_ms(50);
		return 0;
	}
	r = link_up(&a->link);
	if (r == NULL) {
		sleep_ms(100);
		return 0;
	}
	place_update(a->engine, &a->cfg, &lp->pl);
	memset(&info, 0, sizeof(info));
	/* While the pool is not full the turns are short, so that it refills within a
	 * fraction of a second of idle after a burst of taps. */
	wait_ms = lp->wait_ms;
	if (a->pool != NULL && kp_sign_pool_count(a->pool) < (size_t)a->cfg.sign_pool &&
	    wait_ms > KP_SIGN_POOL_IDLE_WAIT_MS)
		wait_ms = KP_SIGN_POOL_IDLE_WAIT_MS;
	rc = kp_reader_wait_card(r, &lp->poll, &info, wait_ms);
	if (rc == KP_HAL_E_END && a->session != NULL) {
		lp->scenario_done = 1;
		kp_console_message(a->console, 0, "Scenario ended: no more taps (Q quits)");
		return 0;
	}
	if (rc == KP_HAL_E_END)
		return 1;
	if (rc == KP_HAL_E_NOCARD || rc == KP_HAL_E_TIMEOUT) {
		loop_idle(a, lp, r);
		return 0;
	}
	if (rc != KP_HAL_OK) {
		link_failed(&a->link, "waiting for a card", rc);
		if (a->link.r != NULL)
			sleep_ms(200);
		return 0;
	}
	loop_card(a, lp, r, &info);
	return 0;
}

static void app_run(struct app *a)
{
	struct loop lp = { { KP_TECH_FELICA | KP_TECH_ISO14443B, 0x0003, 1 }, 0, 0, 0, 0, 0,
	                   { { 0, 0 }, 0, 0 } };

	lp.last_activity = mono_ms();
	lp.last_sweep = mono_ms();
	if (a->engine != NULL && !a->cli->inspect && !a->cli->link_mode)
		sweep(a->engine,
		      a->link.r != NULL ? kp_reader_now_ms(a->link.r) : kp_reader_now_ms(NULL));
	/* With the console, the driver's keys are answered between polls: poll briefly. */
	lp.wait_ms = a->session != NULL && a->cfg.poll_timeout_ms > 100 ? 100 :
	             a->cfg.poll_timeout_ms;
	metrics_update(a, 1);
	kp_sys_ready(a->link.r != NULL ? "serving" : "serving; reader offline");
	while (!stop_requested && loop_turn(a, &lp) == 0)
		kp_sys_watchdog();            /* fed only while the loop turns */
	kp_sys_stopping();
	metrics_update(a, 1);
}

static void app_close(struct app *a)
{
	if (a->syncer.started) {
		sync_stop = 1;
		pthread_join(a->syncer.thread, NULL);
	}
	syncer_free(&a->syncer);
	pthread_mutex_lock(&console_mu);
	the_console = NULL;
	pthread_mutex_unlock(&console_mu);
	kp_console_close(a->console);    /* the screen back to the shell */
	if (a->saved_stderr >= 0) {
		dup2(a->saved_stderr, STDERR_FILENO);
		close(a->saved_stderr);
		if (console_error[0] != '\0')
			fprintf(stderr, "kippu-terminal: %s\n", console_error);
	}
	/* The end of a shift prints its summary where the driver can keep it. */
	if (a->session != NULL && kp_session_last_summary(a->session)[0] != '\0')
		printf("%s", kp_session_last_summary(a->session));
	kp_session_close(a->session);
	if (a->engine != NULL)
		kp_tap_engine_observe(a->engine, NULL, NULL);
	kp_events_close(a->events);
	kp_zeroize(a->token_key, sizeof(a->token_key));
	kp_tap_engine_close(a->engine);
	kp_sign_pool_free(a->pool);      /* wipes the nonces left */
	kp_hmi_close(a->hmi);
	kp_reader_close(a->link.r);
	kp_reader_close(a->reader);
	kp_store_close(a->store);
	kp_key_free(a->key);
	if (use_syslog)
		closelog();
}

int main(int argc, char **argv)
{
	static struct app a;             /* large; and the signal handler outlives no frame */
	struct cli cli;
	int rc;

	kp_sys_init("kippu-terminal");
	kp_terminal_cfg_defaults(&a.cfg);
	kp_console_cfg_defaults(&a.ccfg);
	kp_terminal_register_mock_signer();
	rc = cli_parse(argc, argv, &cli);
	if (rc >= 0)
		return rc;
	if (cli.list_readers)
		return list_readers();
	if (cli.config_keys)
		return print_config_keys();
	rc = cli_settings(&cli, &a.cfg, &a.ccfg);
	if (rc != 0)
		return rc;
	a.cli = &cli;
	a.saved_stderr = -1;
	use_syslog = a.cfg.use_syslog;
	if (use_syslog)
		openlog("kippu-terminal", LOG_PID, LOG_DAEMON);
	signal(SIGPIPE, SIG_IGN);
	if (cli.sync_once)
		return run_sync_once(&a.cfg);
	if (a.cfg.reader[0] == '\0') {
		logmsg(LOG_ERR, "no reader: set reader = CONN in the config or pass --reader");
		return 2;
	}
	rc = app_open(&a);
	if (rc < 0) {
		logmsg(LOG_INFO, "terminal %s operator %s ready on %s", a.cfg.terminal_id,
		       a.cfg.operator_id, a.cfg.reader);
		app_run(&a);
		logmsg(LOG_INFO, "stopping: %lu taps, %lu accepted, %lu refused", a.taps, a.accepted,
		       a.refused);
		rc = 0;
	}
	app_close(&a);
	return rc;
}
