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

static volatile sig_atomic_t stop;

static void on_signal(int sig)
{
	(void)sig;
	stop = 1;
}

/* The numeric options: name, range, where the value goes. */
static const struct num_opt {
	const char *name;
	long min, max;
	size_t field;
} num_opts[] = {
	{ "max-conns", 1, 4096, offsetof(struct kp_server_cfg, max_conns) },
	{ "max-unauth", 1, 4096, offsetof(struct kp_server_cfg, max_unauth) },
	{ "max-per-addr", 1, 4096, offsetof(struct kp_server_cfg, max_per_addr) },
	{ "timeout-ms", 1, 600000, offsetof(struct kp_server_cfg, timeout_ms) },
};
#define NUM_OPT_BASE 1000                /* getopt value of num_opts[0] */

static void usage(FILE *fp)
{
	fputs("usage: kippu-backend [options]\n"
	      "  --listen HOST:PORT  address to listen on (default 127.0.0.1:7800; port 0 = any)\n"
	      "  --db PATH           backend database (default backend.db)\n"
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
	      "Refused connections are logged as one count per 10 s.\n", fp);
}

static int copy_opt(char *dst, size_t cap, const char *v, const char *name)
{
	if (strlen(v) >= cap) {
		fprintf(stderr, "kippu-backend: %s: too long\n", name);
		return -1;
	}
	memcpy(dst, v, strlen(v) + 1);
	return 0;
}

/* --listen HOST:PORT into cfg: 0, 1 (too long, said) or 2 (malformed, said). */
static int listen_opt(struct kp_server_cfg *cfg, char *v)
{
	char *colon = strrchr(v, ':');
	int bad = 0;

	if (colon == NULL || colon == v || colon[1] == '\0') {
		fprintf(stderr, "kippu-backend: --listen wants HOST:PORT\n");
		return 2;
	}
	*colon = '\0';
	bad |= copy_opt(cfg->host, sizeof(cfg->host), v, "--listen");
	bad |= copy_opt(cfg->port, sizeof(cfg->port), colon + 1, "--listen");
	return bad ? 1 : 0;
}

/* A numeric option (num_opts) into cfg: 0, or 2 after saying what it wants. */
static int num_opt_take(struct kp_server_cfg *cfg, const struct num_opt *no, const char *v)
{
	char *end;
	long n;

	errno = 0;
	n = strtol(v, &end, 10);
	if (errno != 0 || end == v || *end != '\0' || n < no->min || n > no->max) {
		fprintf(stderr, "kippu-backend: --%s wants a whole number from %ld to %ld, "
		        "not '%s'\n", no->name, no->min, no->max, v);
		return 2;
	}
	*(int *)((char *)cfg + no->field) = (int)n;
	return 0;
}

/* The command line into cfg: -1 to go on, or the exit status (--help, a bad option). */
static int parse_args(int argc, char **argv, struct kp_server_cfg *cfg)
{
	static const struct option opts[] = {
		{ "listen", required_argument, NULL, 'l' },
		{ "db", required_argument, NULL, 'd' },
		{ "ca", required_argument, NULL, 'a' },
		{ "cert", required_argument, NULL, 'c' },
		{ "key", required_argument, NULL, 'k' },
		{ "max-conns", required_argument, NULL, NUM_OPT_BASE + 0 },
		{ "max-unauth", required_argument, NULL, NUM_OPT_BASE + 1 },
		{ "max-per-addr", required_argument, NULL, NUM_OPT_BASE + 2 },
		{ "timeout-ms", required_argument, NULL, NUM_OPT_BASE + 3 },
		{ "help", no_argument, NULL, 'h' },
		{ NULL, 0, NULL, 0 },
	};
	int c, rc, bad = 0;

	while ((c = getopt_long(argc, argv, "", opts, NULL)) != -1) {
		switch (c) {
		case 'l':
			rc = listen_opt(cfg, optarg);
			if (rc == 2)
				return 2;
			bad |= rc;
			break;
		case 'd': bad |= copy_opt(cfg->db, sizeof(cfg->db), optarg, "--db"); break;
		case 'a': bad |= copy_opt(cfg->ca, sizeof(cfg->ca), optarg, "--ca"); break;
		case 'c': bad |= copy_opt(cfg->cert, sizeof(cfg->cert), optarg, "--cert"); break;
		case 'k': bad |= copy_opt(cfg->key, sizeof(cfg->key), optarg, "--key"); break;
		case 'h': usage(stdout); return 0;
		default:
			if (c < NUM_OPT_BASE ||
			    c >= NUM_OPT_BASE + (int)(sizeof(num_opts) / sizeof(num_opts[0]))) {
				usage(stderr);
				return 2;
			}
			if (num_opt_take(cfg, &num_opts[c - NUM_OPT_BASE], optarg) != 0)
				return 2;
			break;
		}
	}
	if (bad || optind != argc) {
		usage(stderr);
		return 2;
	}
	return -1;
}

/* Serves until SIGINT or SIGTERM. */
static int serve(const struct kp_server_cfg *cfg)
{
	struct sigaction sa;
	kp_server *srv = NULL;
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
	/* Tests and scripts wait for this line to learn the port. */
	printf("kippu-backend: listening on %s:%d\n", cfg->host, kp_server_port(srv));
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
	kp_server_stop(srv);
	return 0;
}

int main(int argc, char **argv)
{
	struct kp_server_cfg cfg;
	int rc;

	kp_sys_init("kippu-backend");
	kp_server_cfg_defaults(&cfg);
	rc = parse_args(argc, argv, &cfg);
	if (rc >= 0)
		return rc;
	return serve(&cfg);
}
