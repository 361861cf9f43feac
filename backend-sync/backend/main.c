/* SPDX-License-Identifier: Apache-2.0 */
/* kippu-backend: serves terminal syncs over mutual TLS until SIGINT/SIGTERM. */
#include <errno.h>
#include <getopt.h>
#include <stddef.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <time.h>

#include "kp_backend.h"
#include "kp_sys.h"
#include "kp_version.h"

static volatile sig_atomic_t stop;

static void on_signal(int sig)
{
	(void)sig;
	stop = 1;
}

/* The settings, as options and as configuration file keys (the same names): kind, where
 * the value goes, the numbers' range, what it means. Table-driven: a new option is a row. */
/* KEY_DB: a path (SQLite), or a PostgreSQL connection string (kp_db.h), kept as it is */
enum key_kind { KEY_LISTEN, KEY_PATH, KEY_NUM, KEY_DB };
/* The server's settings and those of main's own: the metrics listener (off: no host). */
struct settings {
	struct kp_server_cfg srv;
	char metrics_host[128], metrics_port[16];
};
#define F(f) offsetof(struct settings, f), sizeof(((struct settings *)0)->f)
static const struct key {
	const char *name;
	enum key_kind kind;
	size_t field, size;
	long min, max;
	const char *doc;
	size_t field2, size2;            /* KEY_LISTEN: the port (field, size: the host) */
} keys[] = {
	{ "listen", KEY_LISTEN, F(srv.host), 0, 0, "address to listen on, HOST:PORT (port 0 = any)",
	  F(srv.port) },
	{ "db", KEY_DB, F(srv.db), 0, 0, "backend database: a SQLite file "
	  "($STATE_DIRECTORY/backend.db when set), or postgresql://... (libpq's URI)",
	  0, 0 },
	{ "ca", KEY_PATH, F(srv.ca), 0, 0, "operator CA certificate that terminals' certificates "
	  "chain to", 0, 0 },
	{ "cert", KEY_PATH, F(srv.cert), 0, 0, "the backend's certificate (CN backend)", 0, 0 },
	{ "key", KEY_PATH, F(srv.key), 0, 0, "the backend's key; also signs config bundles", 0, 0 },
	{ "max-conns", KEY_NUM, F(srv.max_conns), 1, 4096, "authenticated terminals served at once",
	  0, 0 },
	{ "max-unauth", KEY_NUM, F(srv.max_unauth), 1, 4096, "connections in the TLS handshake at "
	  "once", 0, 0 },
	{ "max-per-addr", KEY_NUM, F(srv.max_per_addr), 1, 4096, "handshakes at once from one "
	  "source address while more than half of max-unauth are taken", 0, 0 },
	{ "timeout-ms", KEY_NUM, F(srv.timeout_ms), 1, 600000, "deadline per handshake and per "
	  "message", 0, 0 },
	{ "change-log-days", KEY_NUM, F(srv.change_log_days), 1, 3650, "days the change log is "
	  "kept for deltas; a terminal further behind gets a full bundle", 0, 0 },
	{ "metrics-listen", KEY_LISTEN, F(metrics_host), 0, 0, "serve Prometheus metrics at "
	  "http://HOST:PORT/metrics (port 0 = any); off by default", F(metrics_port) },
};
#undef F
#define N_KEYS (sizeof(keys) / sizeof(keys[0]))
#define KEY_BASE 1000                    /* getopt value of keys[0] */

static void usage(FILE *fp)
{
	fputs("usage: kippu-backend [--config FILE] [options]\n"
	      "  --config FILE       settings file: `key = value` lines, keys named as these\n"
	      "                      options; the command line wins over it\n"
	      "  --config-keys       print the file's keys with their defaults and exit\n"
	      "  --listen HOST:PORT  address to listen on (default 127.0.0.1:7800; port 0 = any)\n"
	      "  --db PATH|URI       backend database (default backend.db, or\n"
	      "                      $STATE_DIRECTORY/backend.db when that is set), or a\n"
	      "                      PostgreSQL database: postgresql://USER@HOST/DBNAME\n"
	      "  --ca PATH           operator CA certificate that terminals' certificates chain to\n"
	      "  --cert PATH         the backend's certificate (CN backend)\n"
	      "  --key PATH          the backend's key; also signs config bundles\n"
	      "  --max-conns N       authenticated terminals served at once (default 256; more\n"
	      "                      are told to try later)\n"
	      "  --max-unauth N      connections in the TLS handshake at once (default 256; more\n"
	      "                      are closed at once)\n"
	      "  --max-per-addr N    handshakes at once from one source address while more than\n"
	      "                      half of --max-unauth are taken (default 16); handshakes\n"
	      "                      begun then get a fifth of --timeout-ms, at least 1 s\n"
	      "  --timeout-ms N      deadline per handshake and per message (default 10000)\n"
	      "  --change-log-days N days the change log is kept for deltas (default 7); a\n"
	      "                      terminal further behind gets a full bundle\n"
	      "  --metrics-listen HOST:PORT  serve Prometheus metrics at http://HOST:PORT/metrics\n"
	      "                      (default off; port 0 = any)\n"
	      "  -h, --help          print this help and exit\n"
	      "  --version           print the version and exit\n"
	      "Refused connections are logged as one count per 10 s.\n"
	      "Exit status: 0 stopped by SIGINT/SIGTERM, 1 failure, 2 usage error.\n", fp);
}

/* Value v of key k into cfg; base: the configuration file it came from (relative paths
 * are relative to its folder), NULL for the command line. NULL, or why v is bad. */
static const char *key_set(struct settings *cfg, const struct key *k, const char *v,
                           const char *base, char *why, size_t why_cap)
{
	char *dst = (char *)cfg + k->field;
	const char *colon;
	char *end;
	long n;

	switch (k->kind) {
	case KEY_LISTEN:
		colon = strrchr(v, ':');
		if (colon == NULL || colon == v || colon[1] == '\0')
			return "wants HOST:PORT";
		if ((size_t)(colon - v) >= k->size || strlen(colon + 1) >= k->size2)
			return "too long";
		errno = 0;
		n = strtol(colon + 1, &end, 10);
		if (strspn(colon + 1, "0123456789") != strlen(colon + 1) || n > 65535 || errno != 0) {
			snprintf(why, why_cap, "wants a port from 0 to 65535, not '%s'", colon + 1);
			return why;
		}
		snprintf(dst, k->size, "%.*s", (int)(colon - v), v);
		snprintf((char *)cfg + k->field2, k->size2, "%s", colon + 1);
		return NULL;
	case KEY_DB:
		if (kp_bstore_is_pg(v))
			return strlen(v) < k->size && snprintf(dst, k->size, "%s", v) >= 0 ? NULL :
			       "too long";
		/* a file: */
		/* fall through */
	case KEY_PATH:
		if (*v == '\0')
			return "wants a path";
		return kp_sys_path_relative(dst, k->size, base, v) == 0 ? NULL : "too long";
	case KEY_NUM:
		errno = 0;
		n = strtol(v, &end, 10);
		if (errno != 0 || end == v || *end != '\0' || n < k->min || n > k->max) {
			snprintf(why, why_cap, "wants a whole number from %ld to %ld, not '%s'",
			         k->min, k->max, v);
			return why;
		}
		*(int *)dst = (int)n;
		return NULL;
	}
	return "unknown kind";
}

static const struct key *key_find(const char *name)
{
	for (size_t i = 0; i < N_KEYS; i++) {
		if (strcmp(keys[i].name, name) == 0)
			return &keys[i];
	}
	return NULL;
}

static char *trim(char *p)
{
	char *e;

	while (*p == ' ' || *p == '\t')
		p++;
	e = p + strlen(p);
	while (e > p && (e[-1] == ' ' || e[-1] == '\t' || e[-1] == '\n' || e[-1] == '\r'))
		*--e = '\0';
	return p;
}

/* The configuration file into cfg: 0, or 2 after naming file:line and the problem. */
static int load_config(struct settings *cfg, const char *path)
{
	char line[1024], why[160];
	unsigned seen = 0;
	int lineno = 0, rc = 0;
	FILE *fp = fopen(path, "r");

	if (fp == NULL) {
		kp_log(LOG_ERR, "%s: %s", path, strerror(errno));
		return 2;
	}
	while (rc == 0 && fgets(line, sizeof(line), fp) != NULL) {
		char *p = trim(line), *eq, *key;
		const struct key *k;
		const char *bad;

		lineno++;
		if (strchr(line, '\n') == NULL && !feof(fp) && strlen(line) == sizeof(line) - 1) {
			kp_log(LOG_ERR, "%s:%d: line too long", path, lineno);
			rc = 2;
		} else if (*p == '\0' || *p == '#') {
			continue;
		} else if ((eq = strchr(p, '=')) == NULL) {
			kp_log(LOG_ERR, "%s:%d: expected key = value", path, lineno);
			rc = 2;
		} else {
			*eq = '\0';
			key = trim(p);
			if ((k = key_find(key)) == NULL) {
				kp_log(LOG_ERR, "%s:%d: %s: unknown key (kippu-backend --config-keys "
				       "lists them)", path, lineno, key);
				rc = 2;
			} else if (seen & (1u << (k - keys))) {
				kp_log(LOG_ERR, "%s:%d: %s: set twice", path, lineno, key);
				rc = 2;
			} else if ((bad = key_set(cfg, k, trim(eq + 1), path, why, sizeof(why))) != NULL) {
				kp_log(LOG_ERR, "%s:%d: %s %s", path, lineno, key, bad);
				rc = 2;
			}
			if (k != NULL)
				seen |= 1u << (k - keys);
		}
	}
	fclose(fp);
	return rc;
}

/* --config-keys: the file's keys with their defaults, a markdown table. */
static int print_config_keys(void)
{
	struct settings d;

	memset(&d, 0, sizeof(d));
	kp_server_cfg_defaults(&d.srv);
	printf("| key | default | meaning |\n| --- | --- | --- |\n");
	for (size_t i = 0; i < N_KEYS; i++) {
		const struct key *k = &keys[i];

		printf("| `%s` | ", k->name);
		if (k->kind == KEY_LISTEN && *((char *)&d + k->field) == '\0')
			printf("none");         /* off (as kippu-terminal --config-keys says it) */
		else if (k->kind == KEY_LISTEN)
			printf("`%s:%s`", (char *)&d + k->field, (char *)&d + k->field2);
		else if (k->kind == KEY_PATH || k->kind == KEY_DB)
			printf("`%s`", (char *)&d + k->field);
		else
			printf("`%d`", *(int *)((char *)&d + k->field));
		printf(" | %s%s", k->doc, k->kind == KEY_PATH ?
		       "; relative to the file's folder" : k->kind == KEY_DB ?
		       "; a file is relative to the file's folder" : "");
		if (k->kind == KEY_NUM)
			printf(" (%ld to %ld)", k->min, k->max);
		printf(" |\n");
	}
	return 0;
}

/* The command line (and the file it names) into cfg: -1 to go on, or the exit status
 * (--help, --config-keys, a bad option or file). The file first, then the options, which
 * win. */
static int parse_args(int argc, char **argv, struct settings *cfg)
{
	struct option opts[N_KEYS + 5];
	static char prog[] = "kippu-backend";
	struct opt_set { int c; const char *v; } *set;
	const char *config = NULL;
	char why[160];
	size_t n_set = 0;
	int c, rc = -1;

	for (size_t i = 0; i < N_KEYS; i++)
		opts[i] = (struct option){ keys[i].name, required_argument, NULL, KEY_BASE + (int)i };
	opts[N_KEYS] = (struct option){ "config", required_argument, NULL, 'f' };
	opts[N_KEYS + 1] = (struct option){ "config-keys", no_argument, NULL, 'K' };
	opts[N_KEYS + 2] = (struct option){ "help", no_argument, NULL, 'h' };
	opts[N_KEYS + 3] = (struct option){ "version", no_argument, NULL, 'V' };
	opts[N_KEYS + 4] = (struct option){ NULL, 0, NULL, 0 };
	set = calloc((size_t)argc + 1, sizeof(*set));
	if (set == NULL)
		return 1;
	argv[0] = prog;                  /* getopt's messages say "kippu-backend: ..." */
	while (rc < 0 && (c = getopt_long(argc, argv, "h", opts, NULL)) != -1) {
		if (c == 'h' || c == 'K')
			rc = c == 'h' ? (usage(stdout), 0) : print_config_keys();
		else if (c == 'V')
			rc = (printf("kippu-backend (kippu) %s\n", KP_VERSION), 0);
		else if (c == 'f')
			config = optarg;
		else if (c >= KEY_BASE && c < KEY_BASE + (int)N_KEYS)
			set[n_set++] = (struct opt_set){ c - KEY_BASE, optarg };
		else
			rc = 2;
	}
	if (rc < 0 && optind != argc) {
		fprintf(stderr, "kippu-backend: unexpected argument '%s'\n", argv[optind]);
		rc = 2;
	}
	if (rc == 2)
		usage(stderr);
	if (rc < 0 && config != NULL)
		rc = load_config(cfg, config) == 0 ? -1 : 2;
	for (size_t i = 0; rc < 0 && i < n_set; i++) {
		const char *bad = key_set(cfg, &keys[set[i].c], set[i].v, NULL, why, sizeof(why));

		if (bad != NULL) {
			fprintf(stderr, "kippu-backend: --%s %s\n", keys[set[i].c].name, bad);
			rc = 2;
		}
	}
	free(set);
	return rc;
}

/* Serves until SIGINT or SIGTERM. */
static int serve(const struct settings *set)
{
	const struct kp_server_cfg *cfg = &set->srv;
	struct sigaction sa;
	kp_server *srv = NULL;
	kp_metrics_http *mh = NULL;
	char err[512];

	signal(SIGPIPE, SIG_IGN);
	memset(&sa, 0, sizeof(sa));
	sa.sa_handler = on_signal;
	sigemptyset(&sa.sa_mask);
	sigaction(SIGINT, &sa, NULL);
	sigaction(SIGTERM, &sa, NULL);
	if (kp_server_start(&srv, cfg, err, sizeof(err)) != KP_BE_OK) {
		kp_log(LOG_ERR, "%s", err);
		return 1;
	}
	if (set->metrics_host[0] != '\0' &&
	    kp_metrics_http_start(&mh, set->metrics_host, set->metrics_port, cfg->db, err,
	                          sizeof(err)) != KP_BE_OK) {
		kp_log(LOG_ERR, "%s", err);
		kp_server_stop(srv);
		return 1;
	}
	/* Tests and scripts wait for these lines to learn the ports (both written at once). */
	printf("kippu-backend: listening on %s:%d\n", cfg->host, kp_server_port(srv));
	if (mh != NULL)
		printf("kippu-backend: metrics on %s:%d\n", set->metrics_host,
		       kp_metrics_http_port(mh));
	fflush(stdout);
	kp_sys_ready("listening");
	kp_sys_status("listening on %s:%d", cfg->host, kp_server_port(srv));
	/* The watchdog is fed while the accept loop turns (kp_server_turns moves); a signal
	 * ends the nap at once. */
	for (unsigned long turns = kp_server_turns(srv); !stop;) {
		struct timespec nap = { 0, 100 * 1000000L };

		nanosleep(&nap, NULL);
		if (kp_server_turns(srv) != turns) {
			turns = kp_server_turns(srv);
			kp_sys_watchdog();
		}
	}
	kp_sys_stopping();
	kp_log(LOG_INFO, "stopping");
	kp_metrics_http_stop(mh);
	kp_server_stop(srv);
	return 0;
}

int main(int argc, char **argv)
{
	struct settings cfg;
	int rc;

	kp_sys_init("kippu-backend");
	memset(&cfg, 0, sizeof(cfg));
	kp_server_cfg_defaults(&cfg.srv);
	/* As a service ($STATE_DIRECTORY set by systemd): the database lives there. */
	if (kp_sys_state_path(cfg.srv.db, sizeof(cfg.srv.db), "backend.db") != 0)
		snprintf(cfg.srv.db, sizeof(cfg.srv.db), "backend.db");
	rc = parse_args(argc, argv, &cfg);
	if (rc >= 0)
		return rc;
	return serve(&cfg);
}
