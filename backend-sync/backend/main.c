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

#include "kp_backend.h"
#include "kp_version.h"

static volatile sig_atomic_t stop;
/* --metrics-listen HOST:PORT: off when host is empty. */
static char metrics_host[128], metrics_port[16];

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
	      "  --metrics-listen HOST:PORT  serve Prometheus metrics at http://HOST:PORT/metrics\n"
	      "                      (default off; port 0 = any)\n"
	      "  -h, --help          print this help and exit\n"
	      "  --version           print the version and exit\n"
	      "Refused connections are logged as one count per 10 s.\n"
	      "Exit status: 0 stopped by SIGINT/SIGTERM, 1 failure, 2 usage error.\n", fp);
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

/* --listen or --metrics-listen HOST:PORT into host and port: 0, 1 (too long, said) or 2
 * (malformed, said). */
static int listen_opt(const char *name, char *host, size_t host_cap, char *port,
                      size_t port_cap, char *v)
{
	char *colon = strrchr(v, ':');
	int bad = 0;

	if (colon == NULL || colon == v || colon[1] == '\0') {
		fprintf(stderr, "kippu-backend: %s wants HOST:PORT\n", name);
		return 2;
	}
	*colon = '\0';
	bad |= copy_opt(host, host_cap, v, name);
	bad |= copy_opt(port, port_cap, colon + 1, name);
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
		{ "metrics-listen", required_argument, NULL, 'm' },
		{ "help", no_argument, NULL, 'h' },
		{ "version", no_argument, NULL, 'V' },
		{ NULL, 0, NULL, 0 },
	};
	static char prog[] = "kippu-backend";
	int c, rc, bad = 0;

	argv[0] = prog;                  /* getopt's messages say "kippu-backend: ..." */
	while ((c = getopt_long(argc, argv, "h", opts, NULL)) != -1) {
		switch (c) {
		case 'l':
		case 'm':
			rc = c == 'l' ? listen_opt("--listen", cfg->host, sizeof(cfg->host), cfg->port,
			                           sizeof(cfg->port), optarg)
			              : listen_opt("--metrics-listen", metrics_host, sizeof(metrics_host),
			                           metrics_port, sizeof(metrics_port), optarg);
			if (rc == 0 && c == 'm' && (strspn(metrics_port, "0123456789") !=
			    strlen(metrics_port) || strtol(metrics_port, NULL, 10) > 65535)) {
				fprintf(stderr, "kippu-backend: --metrics-listen wants a port from 0 to "
				        "65535, not '%s'\n", metrics_port);
				return 2;
			}
			if (rc == 2)
				return 2;
			bad |= rc;
			break;
		case 'd': bad |= copy_opt(cfg->db, sizeof(cfg->db), optarg, "--db"); break;
		case 'a': bad |= copy_opt(cfg->ca, sizeof(cfg->ca), optarg, "--ca"); break;
		case 'c': bad |= copy_opt(cfg->cert, sizeof(cfg->cert), optarg, "--cert"); break;
		case 'k': bad |= copy_opt(cfg->key, sizeof(cfg->key), optarg, "--key"); break;
		case 'h': usage(stdout); return 0;
		case 'V': printf("kippu-backend (kippu) %s\n", KP_VERSION); return 0;
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
		if (optind != argc)
			fprintf(stderr, "kippu-backend: unexpected argument '%s'\n", argv[optind]);
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
	kp_metrics_http *mh = NULL;
	char err[512];

	signal(SIGPIPE, SIG_IGN);
	memset(&sa, 0, sizeof(sa));
	sa.sa_handler = on_signal;
	sigemptyset(&sa.sa_mask);
	sigaction(SIGINT, &sa, NULL);
	sigaction(SIGTERM, &sa, NULL);
	if (kp_server_start(&srv, cfg, err, sizeof(err)) != KP_BE_OK) {
		fprintf(stderr, "kippu-backend: %s\n", err);
		return 1;
	}
	if (metrics_host[0] != '\0' && kp_metrics_http_start(&mh, metrics_host, metrics_port,
	                                                       cfg->db, err, sizeof(err)) != KP_BE_OK) {
		fprintf(stderr, "kippu-backend: %s\n", err);
		kp_server_stop(srv);
		return 1;
	}
	/* Tests and scripts wait for these lines to learn the ports (both written at once). */
	printf("kippu-backend: listening on %s:%d\n", cfg->host, kp_server_port(srv));
	if (mh != NULL)
		printf("kippu-backend: metrics on %s:%d\n", metrics_host, kp_metrics_http_port(mh));
	fflush(stdout);
	while (!stop)
		pause();
	fprintf(stderr, "kippu-backend: stopping\n");
	kp_metrics_http_stop(mh);
	kp_server_stop(srv);
	return 0;
}

int main(int argc, char **argv)
{
	struct kp_server_cfg cfg;
	int rc;

	kp_server_cfg_defaults(&cfg);
	rc = parse_args(argc, argv, &cfg);
	if (rc >= 0)
		return rc;
	return serve(&cfg);
}
