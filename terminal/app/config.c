/* The terminal's configuration file: `key = value` lines, `#` comments. Unknown keys
 * and bad values are errors naming file and line: a terminal must not start on a
 * configuration it half understood. */
#include <ctype.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "kp_terminal.h"
#include "kp_console.h"

void kp_terminal_cfg_defaults(struct kp_terminal_cfg *cfg)
{
	memset(cfg, 0, sizeof(*cfg));
	snprintf(cfg->hmi, sizeof(cfg->hmi), "mock:-");
	snprintf(cfg->database, sizeof(cfg->database), "terminal.db");
	snprintf(cfg->key_path, sizeof(cfg->key_path), "terminal.key");
	snprintf(cfg->cert_path, sizeof(cfg->cert_path), "terminal.crt");
	snprintf(cfg->token_key_path, sizeof(cfg->token_key_path), "token.key");
	cfg->double_tap_window_ms = 60 * 1000;
	cfg->poll_timeout_ms = 500;
	cfg->card_timeout_ms = 100;
	cfg->checkpoint_idle_ms = 1000;
	snprintf(cfg->backend_ca, sizeof(cfg->backend_ca), "ca.crt");
	snprintf(cfg->backend_cert, sizeof(cfg->backend_cert), "backend.crt");
	snprintf(cfg->backend_name, sizeof(cfg->backend_name), "backend");
	cfg->sync_interval_s = 60;
	cfg->sync_timeout_ms = 30000;
	cfg->reenrol_warn_days = 30;
	cfg->utc_offset_s = 9 * 3600;
	cfg->service_day_end_s = 4 * 3600;
}

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

static int apply(struct kp_terminal_cfg *cfg, const char *key, const char *v, const char **why)
{
	int64_t n = 0;
	int bad;

	*why = "bad value";
	if (strcmp(key, "terminal_id") == 0) {
		*why = "terminal_id: 1-32 characters of A-Z a-z 0-9 - _ .";
		return *v == '\0' || set_id(cfg->terminal_id, sizeof(cfg->terminal_id), v);
	}
	if (strcmp(key, "operator") == 0) {
		*why = "operator: 1-32 characters of A-Z a-z 0-9 - _ .";
		return *v == '\0' || set_id(cfg->operator_id, sizeof(cfg->operator_id), v);
	}
	if (strcmp(key, "route") == 0) {
		*why = "route: up to 32 characters of A-Z a-z 0-9 - _ .";
		return set_id(cfg->route, sizeof(cfg->route), v);
	}
	if (strcmp(key, "stop") == 0) {
		*why = "stop: up to 32 characters of A-Z a-z 0-9 - _ .";
		return set_id(cfg->stop, sizeof(cfg->stop), v);
	}
	if (strcmp(key, "fare_feed") == 0) {
		*why = "fare_feed: up to 32 characters of A-Z a-z 0-9 - _ .";
		return set_id(cfg->fare_feed, sizeof(cfg->fare_feed), v);
	}
	*why = "value too long";
	if (strcmp(key, "reader") == 0)
		return set_str(cfg->reader, sizeof(cfg->reader), v);
	if (strcmp(key, "hmi") == 0)
		return set_str(cfg->hmi, sizeof(cfg->hmi), v);
	if (strcmp(key, "database") == 0)
		return set_str(cfg->database, sizeof(cfg->database), v);
	if (strcmp(key, "key") == 0)
		return set_str(cfg->key_path, sizeof(cfg->key_path), v);
	if (strcmp(key, "cert") == 0)
		return set_str(cfg->cert_path, sizeof(cfg->cert_path), v);
	if (strcmp(key, "token_key") == 0)
		return set_str(cfg->token_key_path, sizeof(cfg->token_key_path), v);
	if (strcmp(key, "double_tap_window") == 0) {
		*why = "double_tap_window: seconds, 0 to 86400";
		bad = set_int(&n, v, 0, 86400);
		cfg->double_tap_window_ms = n * 1000;
		return bad;
	}
	if (strcmp(key, "poll_timeout_ms") == 0) {
		*why = "poll_timeout_ms: 10 to 60000";
		bad = set_int(&n, v, 10, 60000);
		cfg->poll_timeout_ms = (int)n;
		return bad;
	}
	if (strcmp(key, "card_timeout_ms") == 0) {
		*why = "card_timeout_ms: 2 to 5000";
		bad = set_int(&n, v, 2, 5000);
		cfg->card_timeout_ms = (int)n;
		return bad;
	}
	if (strcmp(key, "checkpoint_idle_ms") == 0) {
		*why = "checkpoint_idle_ms: 0 to 600000";
		bad = set_int(&n, v, 0, 600000);
		cfg->checkpoint_idle_ms = (int)n;
		return bad;
	}
	if (strcmp(key, "backend") == 0) {
		const char *colon = strrchr(v, ':');

		*why = "backend: HOST:PORT (port 1 to 65535)";
		if (colon == NULL || colon == v || colon[1] == '\0' ||
		    (size_t)(colon - v) >= sizeof(cfg->backend_host) ||
		    strlen(colon + 1) >= sizeof(cfg->backend_port) ||
		    strspn(colon + 1, "0123456789") != strlen(colon + 1) ||
		    strtol(colon + 1, NULL, 10) < 1 || strtol(colon + 1, NULL, 10) > 65535)
			return -1;
		memcpy(cfg->backend_host, v, (size_t)(colon - v));
		cfg->backend_host[colon - v] = '\0';
		snprintf(cfg->backend_port, sizeof(cfg->backend_port), "%s", colon + 1);
		return 0;
	}
	if (strcmp(key, "backend_ca") == 0)
		return set_str(cfg->backend_ca, sizeof(cfg->backend_ca), v);
	if (strcmp(key, "backend_cert") == 0)
		return set_str(cfg->backend_cert, sizeof(cfg->backend_cert), v);
	if (strcmp(key, "backend_name") == 0) {
		*why = "backend_name: 1-32 characters of A-Z a-z 0-9 - _ .";
		return *v == '\0' || set_id(cfg->backend_name, sizeof(cfg->backend_name), v);
	}
	if (strcmp(key, "sync_interval") == 0) {
		*why = "sync_interval: seconds, 5 to 86400";
		bad = set_int(&n, v, 5, 86400);
		cfg->sync_interval_s = (int)n;
		return bad;
	}
	if (strcmp(key, "sync_timeout_ms") == 0) {
		*why = "sync_timeout_ms: 100 to 600000";
		bad = set_int(&n, v, 100, 600000);
		cfg->sync_timeout_ms = (int)n;
		return bad;
	}
	if (strcmp(key, "jpki_ca") == 0)
		return set_str(cfg->jpki_ca, sizeof(cfg->jpki_ca), v);
	if (strcmp(key, "reenrol_warn_days") == 0) {
		*why = "reenrol_warn_days: 0 to 365";
		bad = set_int(&n, v, 0, 365);
		cfg->reenrol_warn_days = (int)n;
		return bad;
	}
	if (strcmp(key, "utc_offset") == 0) {
		int secs = (*v == '+' || *v == '-') ? parse_hhmm(v + 1, 14) : -1;

		*why = "utc_offset: +HH:MM or -HH:MM, at most 14:00 (JST is +09:00)";
		if (secs < 0 || secs > 14 * 3600)
			return -1;
		cfg->utc_offset_s = *v == '-' ? -secs : secs;
		return 0;
	}
	if (strcmp(key, "service_day_end") == 0) {
		int secs = parse_hhmm(v, 23);

		*why = "service_day_end: HH:MM local time, 00:00 to 23:59";
		if (secs < 0)
			return -1;
		cfg->service_day_end_s = secs;
		return 0;
	}
	if (strcmp(key, "place_file") == 0)
		return set_str(cfg->place_file, sizeof(cfg->place_file), v);
	if (strcmp(key, "fare_mode") == 0) {
		*why = "fare_mode: flat or distance";
		if (strcmp(v, "flat") == 0)
			cfg->fare_distance = 0;
		else if (strcmp(v, "distance") == 0)
			cfg->fare_distance = 1;
		else
			return -1;
		return 0;
	}
	if (strcmp(key, "gate") == 0) {
		*why = "gate: both, entry or exit";
		if (strcmp(v, "both") == 0)
			cfg->gate = KP_GATE_BOTH;
		else if (strcmp(v, "entry") == 0)
			cfg->gate = KP_GATE_ENTRY;
		else if (strcmp(v, "exit") == 0)
			cfg->gate = KP_GATE_EXIT;
		else
			return -1;
		return 0;
	}
	if (strcmp(key, "log") == 0) {
		*why = "log: stderr or syslog";
		if (strcmp(v, "stderr") == 0)
			cfg->use_syslog = 0;
		else if (strcmp(v, "syslog") == 0)
			cfg->use_syslog = 1;
		else
			return -1;
		return 0;
	}
	*why = "unknown key";
	return -1;
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
	memset(c, 0, sizeof(*c));
	c->lang_ja = 1;
	c->mode = KP_CONSOLE_CHARGE;
	c->denylist_max_age_s = 24 * 3600;
	c->beep = 1;
	c->colour = 1;
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
	struct kp_console_cfg scratch;
	const char *why = NULL;

	if (c == NULL) {
		kp_console_cfg_defaults(&scratch);
		c = &scratch;
	}
	if (strcmp(key, "console_language") == 0) {
		why = "console_language: ja or en";
		if (strcmp(v, "ja") == 0 || strcmp(v, "en") == 0) {
			c->lang_ja = v[0] == 'j';
			why = NULL;
		}
	} else if (strcmp(key, "console_mode") == 0) {
		why = "console_mode: charge, confirm or validate";
		if (strcmp(v, "charge") == 0)
			c->mode = KP_CONSOLE_CHARGE, why = NULL;
		else if (strcmp(v, "confirm") == 0)
			c->mode = KP_CONSOLE_CONFIRM, why = NULL;
		else if (strcmp(v, "validate") == 0)
			c->mode = KP_CONSOLE_VALIDATE, why = NULL;
	} else if (strcmp(key, "denylist_max_age") == 0) {
		int64_t s = kp_console_parse_age(v);

		why = "denylist_max_age: a number with s, m, h or d (e.g. 24h), at most 400d";
		if (s > 0) {
			c->denylist_max_age_s = s;
			why = NULL;
		}
	} else if (strcmp(key, "events") == 0) {
		why = "events: json (stdout), json:- or json:PATH (file or FIFO)";
		if ((strcmp(v, "json") == 0 || (strncmp(v, "json:", 5) == 0 && v[5] != '\0')) &&
		    set_str(c->events, sizeof(c->events), v) == 0)
			why = NULL;
	} else if (strcmp(key, "console_log") == 0) {
		why = "console_log: a path of at most 511 bytes";
		if (*v != '\0' && set_str(c->log_path, sizeof(c->log_path), v) == 0)
			why = NULL;
	} else if (strcmp(key, "console_beep") == 0) {
		why = "console_beep: on or off";
		if (strcmp(v, "on") == 0 || strcmp(v, "off") == 0)
			c->beep = v[1] == 'n', why = NULL;
	} else if (strcmp(key, "console_colour") == 0 || strcmp(key, "console_color") == 0) {
		why = "console_colour: auto or off";
		if (strcmp(v, "auto") == 0 || strcmp(v, "off") == 0)
			c->colour = v[0] == 'a', why = NULL;
	} else {
		return KP_E_INVAL;
	}
	if (why != NULL) {
		snprintf(err, err_cap, "%s", why);
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
	while (fgets(line, sizeof(line), fp) != NULL) {
		char *p, *eq, *key, *val;
		const char *why = NULL;

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
		if (strncmp(key, "console_", 8) == 0 || strcmp(key, "events") == 0 ||
		    strcmp(key, "denylist_max_age") == 0) {
			char cerr[200];
			int crc = kp_console_cfg_set(console, key, val, cerr, sizeof(cerr));

			if (crc == KP_OK)
				continue;
			if (crc == KP_E_CONFIG) {
				snprintf(err, err_cap, "%s:%d: %s", path, lineno, cerr);
				rc = KP_E_CONFIG;
				break;
			}
		}
		if (apply(cfg, key, val, &why) != 0) {
			snprintf(err, err_cap, "%s:%d: %s: %s", path, lineno, key, why);
			rc = KP_E_CONFIG;
			break;
		}
	}
	fclose(fp);
	return rc;
}
