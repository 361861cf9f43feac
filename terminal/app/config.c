/* SPDX-License-Identifier: Apache-2.0 */
/* The terminal's configuration file: `key = value` lines, `#` comments. Unknown keys
 * and bad values are errors naming file and line: a terminal must not start on a
 * configuration it half understood. */
#include <ctype.h>
#include <errno.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "kp_terminal.h"
#include "kp_console.h"
#include "kp_sys.h"

/* "HH:MM" (h <= max_h) in seconds, -1 if malformed. */
static int parse_hhmm(const char *v, int max_h)
{
	int h, m;

	if (strlen(v) != 5 || !isdigit((unsigned char)v[0]) || !isdigit((unsigned char)v[1]) ||
	    v[2] != ':' || !isdigit((unsigned char)v[3]) || !isdigit((unsigned char)v[4]))
		return -1;
	h = (v[0] - '0') * 10 + (v[1] - '0');
	m = (v[3] - '0') * 10 + (v[4] - '0');
	if (h > max_h || m > 59)
		return -1;
	return h * 3600 + m * 60;
}

static char *trim(char *s)
{
	char *end;

	while (isspace((unsigned char)*s))
		s++;
	end = s + strlen(s);
	while (end > s && isspace((unsigned char)end[-1]))
		*--end = '\0';
	return s;
}

static int set_str(char *dst, size_t cap, const char *v)
{
	if (strlen(v) >= cap)
		return -1;
	memcpy(dst, v, strlen(v) + 1);
	return 0;
}

/* The configuration file being read (NULL: the command line or a default): relative paths
 * in it are relative to its folder. */
static const char *cfg_file;

static int set_path(char *dst, size_t cap, const char *v)
{
	if (cfg_file == NULL || *v == '\0')
		return set_str(dst, cap, v);
	return kp_sys_path_relative(dst, cap, cfg_file, v);
}

/* PREFIX:PATH (mock:PATH, json:PATH) with PATH through set_path; "-" and anything else
 * as it is. */
static int set_prefixed_path(char *dst, size_t cap, const char *prefix, const char *v)
{
	size_t pl = strlen(prefix);

	if (strncmp(v, prefix, pl) != 0 || v[pl] == '\0' || strcmp(v + pl, "-") == 0 ||
	    cap <= pl)
		return set_str(dst, cap, v);
	memcpy(dst, prefix, pl);
	return set_path(dst + pl, cap - pl, v + pl);
}

/* A comma-separated list of paths, each through set_path. */
static int set_paths(char *dst, size_t cap, const char *v)
{
	char one[1024];
	size_t n = 0;

	dst[0] = '\0';
	for (const char *p = v; ; ) {
		size_t len = strcspn(p, ",");

		if (len >= sizeof(one))
			return -1;
		memcpy(one, p, len);
		one[len] = '\0';
		if (n > 0 && n + 1 < cap)
			dst[n++] = ',';
		if (n + 1 >= cap || set_path(dst + n, cap - n, one) != 0)
			return -1;
		n += strlen(dst + n);
		if (p[len] == '\0')
			return 0;
		p += len + 1;
	}
}

static int set_id(char *dst, size_t cap, const char *v)
{
	for (const char *p = v; *p != '\0'; p++) {
		if (!isalnum((unsigned char)*p) && *p != '-' && *p != '_' && *p != '.')
			return -1;
	}
	return set_str(dst, cap, v);
}

static int set_int(int64_t *dst, const char *v, int64_t min, int64_t max)
{
	char *end;
	long long n;

	errno = 0;
	n = strtoll(v, &end, 10);
	if (errno != 0 || end == v || *end != '\0' || n < min || n > max)
		return -1;
	*dst = n;
	return 0;
}

/* How a key's value is read. */
enum cfg_type {
	CFG_ID,          /* up to 32 of A-Z a-z 0-9 - _ . */
	CFG_ID_SET,      /* the same, not empty */
	CFG_STR,         /* any text that fits */
	CFG_PATH_SET,    /* any text that fits, not empty */
	CFG_PATH,        /* a path: in a file, relative to the file's folder */
	CFG_PATHS,       /* comma-separated paths, each as CFG_PATH */
	CFG_MOCKABLE,    /* a connection string; the PATH of mock:PATH as CFG_PATH */
	CFG_INT,         /* min to max, times scale */
	CFG_CHOICE,      /* one of choices: its index */
	CFG_HOSTPORT,    /* HOST:PORT[, HOST:PORT ...] into backends and n_backends */
	CFG_UTC_OFFSET,  /* +HH:MM or -HH:MM in seconds */
	CFG_HHMM,        /* HH:MM in seconds */
	CFG_AGE,         /* a number with s, m, h or d, in seconds */
	CFG_EVENTS,      /* json, json:- or json:PATH */
};

/* One configuration key: a row of cfg_keys. console: a struct kp_console_cfg key (else a
 * struct kp_terminal_cfg one); why: what a bad value is told (NULL: "value too long");
 * def: the default as the file would write it (NULL: none). */
struct cfg_key {
	const char *name;
	enum cfg_type type;
	int console;
	size_t field, size;
	int64_t min, max, scale;
	const char *const *choices;
	const char *why, *def, *doc;
};

static const char *const fare_modes[] = { "flat", "distance", NULL };
static const char *const gates[] = { "both", "entry", "exit", NULL };
static const char *const logs[] = { "stderr", "syslog", NULL };
static const char *const languages[] = { "en", "ja", NULL };
static const char *const modes[] = { "charge", "confirm", "validate", NULL };
static const char *const on_off[] = { "off", "on", NULL };
static const char *const auto_off[] = { "off", "auto", NULL };

#define T(f) offsetof(struct kp_terminal_cfg, f), sizeof(((struct kp_terminal_cfg *)0)->f)
#define C(f) offsetof(struct kp_console_cfg, f), sizeof(((struct kp_console_cfg *)0)->f)
#define ID_WHY(k) k ": 1-32 characters of A-Z a-z 0-9 - _ ."
#define ID_OPT_WHY(k) k ": up to 32 characters of A-Z a-z 0-9 - _ ."
static const struct cfg_key cfg_keys[] = {
	{ "terminal_id", CFG_ID_SET, 0, T(terminal_id), 0, 0, 0, NULL, ID_WHY("terminal_id"), NULL,
	  "this terminal's id; must equal the CN of its certificate (required)" },
	{ "operator", CFG_ID_SET, 0, T(operator_id), 0, 0, 0, NULL, ID_WHY("operator"), NULL,
	  "the operator whose vehicle or gate this is (required)" },
	{ "route", CFG_ID, 0, T(route), 0, 0, 0, NULL, ID_OPT_WHY("route"), NULL,
	  "where the terminal is; recorded in every journal record" },
	{ "stop", CFG_ID, 0, T(stop), 0, 0, 0, NULL, ID_OPT_WHY("stop"), NULL,
	  "where the terminal is; recorded in every journal record" },
	{ "fare_feed", CFG_ID, 0, T(fare_feed), 0, 0, 0, NULL, ID_OPT_WHY("fare_feed"), NULL,
	  "imported GTFS feed id that prices stored value" },
	{ "reader", CFG_MOCKABLE, 0, T(reader), 0, 0, 0, NULL, NULL, NULL,
	  "reader connection string: mock:SCENARIO, libnfc or libnfc:CONNSTRING (required)" },
	{ "hmi", CFG_MOCKABLE, 0, T(hmi), 0, 0, 0, NULL, NULL, "mock:-",
	  "HMI: mock:- (events on stdout), mock:PATH (appended to PATH), mock (memory only)" },
	{ "database", CFG_PATH, 0, T(database), 0, 0, 0, NULL, NULL, "terminal.db",
	  "the SQLite store; created and migrated on start ($STATE_DIRECTORY/terminal.db when "
	  "that is set)" },
	{ "key", CFG_PATH, 0, T(key_path), 0, 0, 0, NULL, NULL, "terminal.key",
	  "the terminal's ECDSA P-256 key (PEM)" },
	{ "cert", CFG_PATH, 0, T(cert_path), 0, 0, 0, NULL, NULL, "terminal.crt",
	  "the terminal's certificate (PEM)" },
	{ "token_key", CFG_PATH, 0, T(token_key_path), 0, 0, 0, NULL, NULL, "token.key",
	  "the card-token HMAC key (64 hex digits), shared with the backend" },
	{ "double_tap_window", CFG_INT, 0, T(double_tap_window_ms), 0, 86400, 1000, NULL,
	  "double_tap_window: seconds, 0 to 86400", "60",
	  "seconds after an accepted tap during which the same card is not charged again" },
	{ "poll_timeout_ms", CFG_INT, 0, T(poll_timeout_ms), 10, 60000, 1, NULL,
	  "poll_timeout_ms: 10 to 60000", "500", "how long one wait for a card lasts" },
	{ "card_timeout_ms", CFG_INT, 0, T(card_timeout_ms), 2, 5000, 1, NULL,
	  "card_timeout_ms: 2 to 5000", "100", "per-frame card timeout" },
	{ "sign_pool", CFG_INT, 0, T(sign_pool), 0, 4096, 1, NULL, "sign_pool: 0 to 4096", "64",
	  "records' ES256 nonces computed ahead while idle, in memory only, each used once (0: "
	  "every record signed with RFC 6979 inside the tap)" },
	{ "checkpoint_idle_ms", CFG_INT, 0, T(checkpoint_idle_ms), 0, 600000, 1, NULL,
	  "checkpoint_idle_ms: 0 to 600000", "1000",
	  "idle time after a tap before the WAL is checkpointed" },
	{ "backend", CFG_HOSTPORT, 0, T(backends), 0, 0, 0, NULL,
	  "backend: HOST:PORT (port 1 to 65535)", NULL,
	  "HOST:PORT of kippu-backend, or up to 8 of them separated by commas: the terminal "
	  "tries them in turn, from the last one that answered, when one cannot be reached; "
	  "without it the terminal never syncs" },
	{ "backend_ca", CFG_PATH, 0, T(backend_ca), 0, 0, 0, NULL, NULL, "ca.crt",
	  "the operator CA the backend's certificate must chain to" },
	{ "backend_cert", CFG_PATH, 0, T(backend_cert), 0, 0, 0, NULL, NULL, "backend.crt",
	  "the backend's certificate: config bundles must verify with it" },
	{ "backend_name", CFG_ID_SET, 0, T(backend_name), 0, 0, 0, NULL, ID_WHY("backend_name"),
	  "backend", "the CN the backend's TLS certificate must carry" },
	{ "sync_interval", CFG_INT, 0, T(sync_interval_s), 5, 86400, 1, NULL,
	  "sync_interval: seconds, 5 to 86400", "60", "seconds between syncs" },
	{ "sync_timeout_ms", CFG_INT, 0, T(sync_timeout_ms), 100, 600000, 1, NULL,
	  "sync_timeout_ms: 100 to 600000", "30000",
	  "deadline for connect, handshake and each message" },
	{ "jpki_ca", CFG_PATHS, 0, T(jpki_ca), 0, 0, 0, NULL, NULL, NULL,
	  "JPKI authentication CA certificate(s), comma-separated" },
	{ "reenrol_warn_days", CFG_INT, 0, T(reenrol_warn_days), 0, 365, 1, NULL,
	  "reenrol_warn_days: 0 to 365", "30",
	  "warn a rider this many days before a rider category ends" },
	{ "utc_offset", CFG_UTC_OFFSET, 0, T(utc_offset_s), 0, 0, 0, NULL,
	  "utc_offset: +HH:MM or -HH:MM, at most 14:00 (JST is +09:00)", "+09:00",
	  "local time = UTC + this; used for service days" },
	{ "service_day_end", CFG_HHMM, 0, T(service_day_end_s), 0, 0, 0, NULL,
	  "service_day_end: HH:MM local time, 00:00 to 23:59", "04:00",
	  "local time a service day ends: a tap at 01:30 belongs to the day before" },
	{ "place_file", CFG_PATH, 0, T(place_file), 0, 0, 0, NULL, NULL, NULL,
	  "a file holding ROUTE STOP, written by the vehicle's onboard system" },
	{ "fare_mode", CFG_CHOICE, 0, T(fare_distance), 0, 0, 0, fare_modes,
	  "fare_mode: flat or distance", "flat",
	  "with fare_feed: one tap per ride, or tap-on and tap-off priced by stop" },
	{ "gate", CFG_CHOICE, 0, T(gate), 0, 0, 0, gates, "gate: both, entry or exit", "both",
	  "both: a tap with a journey open is its tap-off; entry: tap-on; exit: tap-off" },
	{ "metrics_file", CFG_STR, 0, T(metrics_file), 0, 0, 0, NULL, NULL, NULL,
	  "node_exporter textfile (e.g. /var/lib/node_exporter/textfile/kippu.prom) the terminal "
	  "writes its figures to; none by default" },
	{ "log", CFG_CHOICE, 0, T(use_syslog), 0, 0, 0, logs, "log: stderr or syslog", "stderr",
	  "where the terminal logs" },
	{ "console_language", CFG_CHOICE, 1, C(lang_ja), 0, 0, 0, languages,
	  "console_language: ja or en", "ja", "primary language of the driver console" },
	{ "console_mode", CFG_CHOICE, 1, C(mode), 0, 0, 0, modes,
	  "console_mode: charge, confirm or validate", "charge",
	  "charge at once, confirm (the driver's B charges) or validate (no charge)" },
	{ "denylist_max_age", CFG_AGE, 1, C(denylist_max_age_s), 0, 0, 0, NULL,
	  "denylist_max_age: a number with s, m, h or d (e.g. 24h), at most 400d", "24h",
	  "the console warns when the denylist is older" },
	{ "events", CFG_EVENTS, 1, C(events), 0, 0, 0, NULL,
	  "events: json (stdout), json:- or json:PATH (file or FIFO)", NULL,
	  "one JSON object per line for every tap, driver action, reader and sync change" },
	{ "console_log", CFG_PATH_SET, 1, C(log_path), 0, 0, 0, NULL,
	  "console_log: a path of at most 511 bytes", NULL,
	  "where logs go while the console has the screen (default: the database's path + .log)" },
	{ "console_beep", CFG_CHOICE, 1, C(beep), 0, 0, 0, on_off, "console_beep: on or off", "on",
	  "the console beeps on a refusal" },
	{ "console_colour", CFG_CHOICE, 1, C(colour), 0, 0, 0, auto_off,
	  "console_colour: auto or off", "auto", "colours on the console" },
	{ "console_color", CFG_CHOICE, 1, C(colour), 0, 0, 0, auto_off,
	  "console_colour: auto or off", NULL, "the same as console_colour" },
};
#undef T
#undef C
#undef ID_WHY
#undef ID_OPT_WHY
#define N_CFG_KEYS (sizeof(cfg_keys) / sizeof(cfg_keys[0]))

static const struct cfg_key *cfg_key_find(const char *name)
{
	for (size_t i = 0; i < N_CFG_KEYS; i++) {
		if (strcmp(cfg_keys[i].name, name) == 0)
			return &cfg_keys[i];
	}
	return NULL;
}

static int set_number(void *dst, size_t size, int64_t v)
{
	if (size == sizeof(int64_t))
		*(int64_t *)dst = v;
	else
		*(int *)dst = (int)v;
	return 0;
}

/* What was wrong with the last `backend` value set_hostports refused (the config is read by
 * one thread at a time). */
static _Thread_local char hostport_why[200];

/* One HOST:PORT (len bytes at v) into a. */
static int set_hostport(struct kp_backend_addr *a, const char *v, size_t len)
{
	const char *colon = memrchr(v, ':', len);
	size_t port_len = colon != NULL ? len - (size_t)(colon - v) - 1 : 0;
	char port[8];

	if (colon == NULL || colon == v || port_len == 0 || port_len >= sizeof(port) ||
	    (size_t)(colon - v) >= sizeof(a->host) || memchr(v, ' ', len) != NULL ||
	    memchr(v, '\t', len) != NULL)
		return -1;
	memcpy(port, colon + 1, port_len);
	port[port_len] = '\0';
	if (strspn(port, "0123456789") != port_len || strtol(port, NULL, 10) < 1 ||
	    strtol(port, NULL, 10) > 65535)
		return -1;
	memcpy(a->host, v, (size_t)(colon - v));
	a->host[colon - v] = '\0';
	snprintf(a->port, sizeof(a->port), "%s", port);
	return 0;
}

/* HOST:PORT[, HOST:PORT ...]: every address checked, the bad one named in hostport_why;
 * nothing changes unless all are good. */
static int set_hostports(struct kp_terminal_cfg *cfg, const char *v)
{
	struct kp_backend_addr a[KP_BACKENDS_MAX];
	int n = 0;

	for (const char *p = v;;) {
		const char *end;
		size_t len;

		p += strspn(p, " \t");
		end = strchr(p, ',');
		len = end != NULL ? (size_t)(end - p) : strlen(p);
		while (len > 0 && (p[len - 1] == ' ' || p[len - 1] == '\t'))
			len--;
		if (n == KP_BACKENDS_MAX) {
			snprintf(hostport_why, sizeof(hostport_why), "at most %d addresses",
			         KP_BACKENDS_MAX);
			return -1;
		}
		if (set_hostport(&a[n], p, len) != 0) {
			snprintf(hostport_why, sizeof(hostport_why), "'%.*s' is not HOST:PORT "
			         "(port 1 to 65535)%s", (int)(len > 80 ? 80 : len), p,
			         len == 0 ? ": an empty address" : "");
			return -1;
		}
		for (int i = 0; i < n; i++) {
			if (strcmp(a[i].host, a[n].host) == 0 && strcmp(a[i].port, a[n].port) == 0) {
				snprintf(hostport_why, sizeof(hostport_why), "%.100s:%.8s is listed "
				         "twice", a[n].host, a[n].port);
				return -1;
			}
		}
		n++;
		if (end == NULL)
			break;
		p = end + 1;
	}
	memcpy(cfg->backends, a, sizeof(a));
	cfg->n_backends = n;
	return 0;
}

/* The value v of key k into base (the struct k belongs to); nonzero when it is bad. */
static int cfg_key_set(const struct cfg_key *k, void *base, const char *v)
{
	char *dst = (char *)base + k->field;
	int64_t n = 0;
	int secs;

	switch (k->type) {
	case CFG_ID_SET:
		return *v == '\0' || set_id(dst, k->size, v);
	case CFG_ID:
		return set_id(dst, k->size, v);
	case CFG_PATH_SET:
		return *v == '\0' || set_path(dst, k->size, v);
	case CFG_STR:
		return set_str(dst, k->size, v);
	case CFG_PATH:
		return set_path(dst, k->size, v);
	case CFG_PATHS:
		return set_paths(dst, k->size, v);
	case CFG_MOCKABLE:
		return set_prefixed_path(dst, k->size, "mock:", v);
	case CFG_INT:
		return set_int(&n, v, k->min, k->max) || set_number(dst, k->size, n * k->scale);
	case CFG_CHOICE:
		for (n = 0; k->choices[n] != NULL && strcmp(k->choices[n], v) != 0; n++)
			;
		return k->choices[n] == NULL || set_number(dst, k->size, n);
	case CFG_HOSTPORT:
		return set_hostports(base, v);
	case CFG_UTC_OFFSET:
		secs = (*v == '+' || *v == '-') ? parse_hhmm(v + 1, 14) : -1;
		return secs < 0 || secs > 14 * 3600 || set_number(dst, k->size, *v == '-' ? -secs : secs);
	case CFG_HHMM:
		secs = parse_hhmm(v, 23);
		return secs < 0 || set_number(dst, k->size, secs);
	case CFG_AGE:
		n = kp_console_parse_age(v);
		return n <= 0 || set_number(dst, k->size, n);
	case CFG_EVENTS:
		return (strcmp(v, "json") != 0 && (strncmp(v, "json:", 5) != 0 || v[5] == '\0')) ||
		       set_prefixed_path(dst, k->size, "json:", v);
	}
	return -1;
}

static int apply(struct kp_terminal_cfg *cfg, const char *key, const char *v, const char **why)
{
	const struct cfg_key *k = cfg_key_find(key);

	if (k == NULL || k->console) {
		*why = "unknown key";
		return -1;
	}
	*why = k->why != NULL ? k->why : "value too long";
	if (cfg_key_set(k, cfg, v) == 0)
		return 0;
	if (k->type == CFG_HOSTPORT)
		*why = hostport_why;
	return -1;
}

/* Every key of one struct (console or not) to its default. */
static void cfg_defaults(void *base, size_t size, int console)
{
	memset(base, 0, size);
	for (size_t i = 0; i < N_CFG_KEYS; i++) {
		if (cfg_keys[i].console == console && cfg_keys[i].def != NULL)
			cfg_key_set(&cfg_keys[i], base, cfg_keys[i].def);
	}
}

int kp_terminal_cfg_key_info(size_t i, struct kp_cfg_key_info *out)
{
	if (i >= N_CFG_KEYS)
		return -1;
	out->name = cfg_keys[i].name;
	out->def = cfg_keys[i].def;
	out->doc = cfg_keys[i].doc;
	out->has_range = cfg_keys[i].type == CFG_INT;
	out->min = cfg_keys[i].min;
	out->max = cfg_keys[i].max;
	out->choices = cfg_keys[i].choices;
	return 0;
}

void kp_terminal_cfg_defaults(struct kp_terminal_cfg *cfg)
{
	cfg_defaults(cfg, sizeof(*cfg), 0);
	/* As a service ($STATE_DIRECTORY set by systemd): the database lives there. */
	if (kp_sys_state_path(cfg->database, sizeof(cfg->database), "terminal.db") != 0)
		snprintf(cfg->database, sizeof(cfg->database), "terminal.db");
}

int kp_place_parse(const char *line, char route[KP_ID_MAX + 1], char stop[KP_ID_MAX + 1])
{
	char r[KP_ID_MAX + 2], st[KP_ID_MAX + 2], extra[2];
	int n;

	if (line == NULL)
		return KP_E_CONFIG;
	/* one more than an id holds, to tell a long one from a fitting one */
	n = sscanf(line, "%33s %33s %1s", r, st, extra);
	if (n != 2 || r[0] == '\0' || st[0] == '\0' || set_id(route, KP_ID_MAX + 1, r) != 0 ||
	    set_id(stop, KP_ID_MAX + 1, st) != 0)
		return KP_E_CONFIG;
	return KP_OK;
}

int kp_terminal_cfg_set(struct kp_terminal_cfg *cfg, const char *key, const char *value,
                        char *err, size_t err_cap)
{
	const char *why = NULL;

	if (apply(cfg, key, value, &why) != 0) {
		snprintf(err, err_cap, "%s: %s", key, why);
		return KP_E_CONFIG;
	}
	return KP_OK;
}

void kp_console_cfg_defaults(struct kp_console_cfg *c)
{
	cfg_defaults(c, sizeof(*c), 1);
}

int64_t kp_console_parse_age(const char *v)
{
	char *end;
	long long n;
	int64_t unit = 1;

	errno = 0;
	if (!isdigit((unsigned char)*v))
		return -1;
	n = strtoll(v, &end, 10);
	if (errno != 0 || end == v)
		return -1;
	if (strcmp(end, "") == 0 || strcmp(end, "s") == 0)
		unit = 1;
	else if (strcmp(end, "m") == 0)
		unit = 60;
	else if (strcmp(end, "h") == 0)
		unit = 3600;
	else if (strcmp(end, "d") == 0)
		unit = 86400;
	else
		return -1;
	if (n < 0 || n > 400LL * 86400 / unit)
		return -1;
	return (int64_t)n * unit;
}

/* The console's keys; a scratch struct takes them when the caller keeps none. */
int kp_console_cfg_set(struct kp_console_cfg *c, const char *key, const char *v, char *err,
                       size_t err_cap)
{
	const struct cfg_key *k = cfg_key_find(key);
	struct kp_console_cfg scratch;

	if (k == NULL || !k->console)
		return KP_E_INVAL;
	if (c == NULL) {
		kp_console_cfg_defaults(&scratch);
		c = &scratch;
	}
	if (cfg_key_set(k, c, v) != 0) {
		snprintf(err, err_cap, "%s", k->why);
		return KP_E_CONFIG;
	}
	return KP_OK;
}

int kp_terminal_cfg_load(struct kp_terminal_cfg *cfg, const char *path, char *err, size_t err_cap)
{
	return kp_terminal_cfg_load_console(cfg, NULL, path, err, err_cap);
}

int kp_terminal_cfg_load_console(struct kp_terminal_cfg *cfg, struct kp_console_cfg *console,
                                 const char *path, char *err, size_t err_cap)
{
	char line[1024];
	/* Each key once: a second setting of the same key is a mistake, not an override. */
	struct { char key[40]; int line; } seen[96];
	size_t n_seen = 0;
	int lineno = 0, rc = KP_OK;
	FILE *fp = fopen(path, "r");

	if (fp == NULL) {
		snprintf(err, err_cap, "%s: %s", path, strerror(errno));
		return KP_E_CONFIG;
	}
	cfg_file = path;                 /* relative paths in it: relative to its folder */
	while (fgets(line, sizeof(line), fp) != NULL) {
		char *p, *eq, *key, *val, cerr[200];
		const char *why = NULL;
		int crc;

		lineno++;
		if (strchr(line, '\n') == NULL && !feof(fp)) {
			snprintf(err, err_cap, "%s:%d: line too long", path, lineno);
			rc = KP_E_CONFIG;
			break;
		}
		p = trim(line);
		if (*p == '\0' || *p == '#')
			continue;
		eq = strchr(p, '=');
		if (eq == NULL) {
			snprintf(err, err_cap, "%s:%d: expected key = value", path, lineno);
			rc = KP_E_CONFIG;
			break;
		}
		*eq = '\0';
		key = trim(p);
		val = trim(eq + 1);
		for (size_t i = 0; i < n_seen && rc == KP_OK; i++) {
			if (strcmp(seen[i].key, key) == 0) {
				snprintf(err, err_cap, "%s:%d: %s: already set on line %d", path, lineno,
				         key, seen[i].line);
				rc = KP_E_CONFIG;
			}
		}
		if (rc != KP_OK)
			break;
		if (n_seen < sizeof(seen) / sizeof(seen[0]) && strlen(key) < sizeof(seen[0].key)) {
			snprintf(seen[n_seen].key, sizeof(seen[n_seen].key), "%s", key);
			seen[n_seen++].line = lineno;
		}
		/* A console key goes to the console's settings; any other to apply(). */
		crc = kp_console_cfg_set(console, key, val, cerr, sizeof(cerr));
		if (crc == KP_OK)
			continue;
		if (crc == KP_E_CONFIG) {
			snprintf(err, err_cap, "%s:%d: %s", path, lineno, cerr);
			rc = KP_E_CONFIG;
			break;
		}
		if (apply(cfg, key, val, &why) != 0) {
			snprintf(err, err_cap, "%s:%d: %s: %s", path, lineno, key, why);
			rc = KP_E_CONFIG;
			break;
		}
	}
	cfg_file = NULL;
	fclose(fp);
	return rc;
}
