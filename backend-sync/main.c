/* kippu-backend: serves terminal syncs over mutual TLS until SIGINT/SIGTERM. */
#include <getopt.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "kp_backend.h"

static volatile sig_atomic_t stop;

static void on_signal(int sig)
{
	(void)sig;
	stop = 1;
}

static void usage(FILE *fp)
{
	fputs("usage: kippu-backend [options]\n"
	      "  --listen HOST:PORT  address to listen on (default 127.0.0.1:7800; port 0 = any)\n"
	      "  --db PATH           backend database (default backend.db)\n"
	      "  --ca PATH           operator CA certificate that terminals' certificates chain to\n"
	      "  --cert PATH         the backend's certificate (CN backend)\n"
	      "  --key PATH          the backend's key; also signs config bundles\n"
	      "  --max-conns N       connections served at once (default 256)\n"
	      "  --timeout-ms N      deadline per handshake and per message (default 10000)\n", fp);
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

int main(int argc, char **argv)
{
	static const struct option opts[] = {
		{ "listen", required_argument, NULL, 'l' },
		{ "db", required_argument, NULL, 'd' },
		{ "ca", required_argument, NULL, 'a' },
		{ "cert", required_argument, NULL, 'c' },
		{ "key", required_argument, NULL, 'k' },
		{ "max-conns", required_argument, NULL, 'm' },
		{ "timeout-ms", required_argument, NULL, 't' },
		{ "help", no_argument, NULL, 'h' },
		{ NULL, 0, NULL, 0 },
	};
	struct kp_server_cfg cfg;
	struct sigaction sa;
	kp_server *srv = NULL;
	char err[512];
	int c, bad = 0;

	kp_server_cfg_defaults(&cfg);
	while ((c = getopt_long(argc, argv, "", opts, NULL)) != -1) {
		char *colon, *end;
		long v;

		switch (c) {
		case 'l':
			colon = strrchr(optarg, ':');
			if (colon == NULL || colon == optarg || colon[1] == '\0') {
				fprintf(stderr, "kippu-backend: --listen wants HOST:PORT\n");
				return 2;
			}
			*colon = '\0';
			bad |= copy_opt(cfg.host, sizeof(cfg.host), optarg, "--listen");
			bad |= copy_opt(cfg.port, sizeof(cfg.port), colon + 1, "--listen");
			break;
		case 'd': bad |= copy_opt(cfg.db, sizeof(cfg.db), optarg, "--db"); break;
		case 'a': bad |= copy_opt(cfg.ca, sizeof(cfg.ca), optarg, "--ca"); break;
		case 'c': bad |= copy_opt(cfg.cert, sizeof(cfg.cert), optarg, "--cert"); break;
		case 'k': bad |= copy_opt(cfg.key, sizeof(cfg.key), optarg, "--key"); break;
		case 'm':
		case 't':
			v = strtol(optarg, &end, 10);
			if (*end != '\0' || v < 1 || v > (c == 'm' ? 4096 : 600000)) {
				fprintf(stderr, "kippu-backend: --%s out of range\n",
				        c == 'm' ? "max-conns" : "timeout-ms");
				return 2;
			}
			if (c == 'm')
				cfg.max_conns = (int)v;
			else
				cfg.timeout_ms = (int)v;
			break;
		case 'h': usage(stdout); return 0;
		default: usage(stderr); return 2;
		}
	}
	if (bad || optind != argc) {
		usage(stderr);
		return 2;
	}
	signal(SIGPIPE, SIG_IGN);
	memset(&sa, 0, sizeof(sa));
	sa.sa_handler = on_signal;
	sigemptyset(&sa.sa_mask);
	sigaction(SIGINT, &sa, NULL);
	sigaction(SIGTERM, &sa, NULL);
	if (kp_server_start(&srv, &cfg, err, sizeof(err)) != KP_BE_OK) {
		fprintf(stderr, "kippu-backend: %s\n", err);
		return 1;
	}
	/* Tests and scripts wait for this line to learn the port. */
	printf("kippu-backend: listening on %s:%d\n", cfg.host, kp_server_port(srv));
	fflush(stdout);
	while (!stop)
		pause();
	fprintf(stderr, "kippu-backend: stopping\n");
	kp_server_stop(srv);
	return 0;
}
