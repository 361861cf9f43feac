/* SPDX-License-Identifier: Apache-2.0 */
/* Unit tests of crypto/tls.c: a server and a client thread over a loopback listener, and
 * openssl s_client as an independent peer for what an mbedTLS client of ours cannot do
 * (no certificate, a certificate from another CA, other versions, suites and curves). */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <semaphore.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "kp_crypto.h"
#include "kp_tls.h"
#include "testutil.h"

#define CN_CAP 65
#define MIB (1024 * 1024)

static struct {
	char dir[200];
	char ca[256], srv_crt[256], srv_key[256], cli_crt[256], cli_key[256];
	char wrongcn_crt[256], evil_ca[256], evil_crt[256], evil_key[256];
	/* Certificates of the wrong profile: CN backend without extendedKeyUsage (what kippuctl
	 * issued before profiles), a terminal's named backend, a second backend key, and a
	 * terminal's without extendedKeyUsage. */
	char noeku_srv_crt[256], termcn_srv_crt[256], other_srv_crt[256], other_srv_key[256];
	char noeku_cli_crt[256];
	kp_key *cli_key_obj;
	kp_cert *srv_cert;
	kp_tls_conf *srv, *cli, *srv_wrongcn;
	kp_tls_conf *srv_noeku, *srv_termcn, *srv_other, *cli_noeku, *cli_backend;
	int lfd, port;
	int have_openssl;
} g;

static int64_t ms_now(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* ---- fixtures ---- */

static void fpath(char *out, const char *name)
{
	snprintf(out, 256, "%s/%s", g.dir, name);
}

static int issue(const kp_key *ca_key, const char *ca_pem, const char *cn,
                 enum kp_cert_profile profile, kp_key *subject, const char *crt, const char *key)
{
	kp_cert *ca = NULL;
	int64_t now = (int64_t)time(NULL);
	int rc = kp_cert_load(&ca, ca_pem);

	if (rc == 0)
		rc = kp_cert_issue_profile(ca_key, ca, subject, cn, profile, now - 86400,
		                           now + 30 * 86400, crt);
	if (rc == 0 && key != NULL)
		rc = kp_key_save(subject, key);
	kp_cert_free(ca);
	return rc;
}

static int group_setup(void **state)
{
	kp_key *ca = NULL, *srv = NULL, *evil_ca = NULL, *evil = NULL, *other = NULL;
	char err[256];
	int rc;

	(void)state;
	tu_tmpdir(g.dir, sizeof(g.dir));
	fpath(g.ca, "ca.pem");
	fpath(g.srv_crt, "backend.pem");
	fpath(g.srv_key, "backend.key");
	fpath(g.cli_crt, "t1.pem");
	fpath(g.cli_key, "t1.key");
	fpath(g.wrongcn_crt, "wrongcn.pem");
	fpath(g.evil_ca, "evil-ca.pem");
	fpath(g.evil_crt, "evil-t1.pem");
	fpath(g.evil_key, "evil-t1.key");
	fpath(g.noeku_srv_crt, "noeku-backend.pem");
	fpath(g.termcn_srv_crt, "terminal-named-backend.pem");
	fpath(g.other_srv_crt, "other-backend.pem");
	fpath(g.other_srv_key, "other-backend.key");
	fpath(g.noeku_cli_crt, "noeku-t1.pem");
	rc = kp_key_generate(&ca);
	if (rc == 0)
		rc = kp_key_generate(&other);
	if (rc == 0)
		rc = kp_key_generate(&srv);
	if (rc == 0)
		rc = kp_key_generate(&g.cli_key_obj);
	if (rc == 0)
		rc = kp_key_generate(&evil_ca);
	if (rc == 0)
		rc = kp_key_generate(&evil);
	if (rc == 0)
		rc = kp_cert_create_ca(ca, "kippu operator CA", 30, g.ca);
	if (rc == 0)
		rc = kp_cert_create_ca(evil_ca, "kippu operator CA", 30, g.evil_ca);
	if (rc == 0)
		rc = issue(ca, g.ca, "backend", KP_CERT_BACKEND, srv, g.srv_crt, g.srv_key);
	if (rc == 0)
		rc = issue(ca, g.ca, "not-backend", KP_CERT_BACKEND, srv, g.wrongcn_crt, NULL);
	if (rc == 0)
		rc = issue(ca, g.ca, "T-1", KP_CERT_TERMINAL, g.cli_key_obj, g.cli_crt, g.cli_key);
	/* Same CN and same CA name as the real one: only the signature tells them apart. */
	if (rc == 0)
		rc = issue(evil_ca, g.evil_ca, "T-1", KP_CERT_TERMINAL, evil, g.evil_crt, g.evil_key);
	if (rc == 0)
		rc = issue(ca, g.ca, "backend", KP_CERT_NO_EKU, srv, g.noeku_srv_crt, NULL);
	if (rc == 0)
		rc = issue(ca, g.ca, "backend", KP_CERT_TERMINAL, srv, g.termcn_srv_crt, NULL);
	if (rc == 0)
		rc = issue(ca, g.ca, "backend", KP_CERT_BACKEND, other, g.other_srv_crt,
		           g.other_srv_key);
	if (rc == 0)
		rc = issue(ca, g.ca, "T-1", KP_CERT_NO_EKU, g.cli_key_obj, g.noeku_cli_crt, NULL);
	if (rc == 0)
		rc = kp_cert_load(&g.srv_cert, g.srv_crt);
	if (rc == 0)
		rc = kp_tls_conf_new(&g.srv, KP_TLS_SERVER, g.ca, g.srv_crt, g.srv_key, err, sizeof(err));
	if (rc == 0)
		rc = kp_tls_conf_new(&g.cli, KP_TLS_CLIENT, g.ca, g.cli_crt, g.cli_key, err, sizeof(err));
	if (rc == 0)
		rc = kp_tls_conf_new(&g.srv_wrongcn, KP_TLS_SERVER, g.ca, g.wrongcn_crt, g.srv_key,
		                     err, sizeof(err));
	if (rc == 0)
		rc = kp_tls_conf_new(&g.srv_noeku, KP_TLS_SERVER, g.ca, g.noeku_srv_crt, g.srv_key,
		                     err, sizeof(err));
	if (rc == 0)
		rc = kp_tls_conf_new(&g.srv_termcn, KP_TLS_SERVER, g.ca, g.termcn_srv_crt, g.srv_key,
		                     err, sizeof(err));
	if (rc == 0)
		rc = kp_tls_conf_new(&g.srv_other, KP_TLS_SERVER, g.ca, g.other_srv_crt,
		                     g.other_srv_key, err, sizeof(err));
	if (rc == 0)
		rc = kp_tls_conf_new(&g.cli_noeku, KP_TLS_CLIENT, g.ca, g.noeku_cli_crt, g.cli_key,
		                     err, sizeof(err));
	if (rc == 0)
		rc = kp_tls_conf_new(&g.cli_backend, KP_TLS_CLIENT, g.ca, g.srv_crt, g.srv_key, err,
		                     sizeof(err));
	if (rc == 0)
		rc = kp_tcp_listen("127.0.0.1", "0", &g.lfd, &g.port);
	if (rc != 0)
		fprintf(stderr, "setup: rc %d (%s)\n", rc, err);
	g.have_openssl = tu_sh("command -v openssl >/dev/null 2>&1") == 0;
	kp_key_free(ca);
	kp_key_free(srv);
	kp_key_free(evil_ca);
	kp_key_free(evil);
	kp_key_free(other);
	return rc == 0 ? 0 : -1;
}

static int group_teardown(void **state)
{
	(void)state;
	kp_tls_conf_free(g.srv);
	kp_tls_conf_free(g.cli);
	kp_tls_conf_free(g.srv_wrongcn);
	kp_tls_conf_free(g.srv_noeku);
	kp_tls_conf_free(g.srv_termcn);
	kp_tls_conf_free(g.srv_other);
	kp_tls_conf_free(g.cli_noeku);
	kp_tls_conf_free(g.cli_backend);
	kp_cert_free(g.srv_cert);
	kp_key_free(g.cli_key_obj);
	if (g.lfd >= 0)
		close(g.lfd);
	tu_rmdir(g.dir);
	return 0;
}

/* ---- two ends in two threads ---- */

struct side {
	const kp_tls_conf *conf;
	const char *server_cn;
	const kp_cert *pin;                 /* client: the backend certificate pinned */
	int timeout_ms;
	int (*act)(kp_tls *t, void *arg);   /* after a good handshake, before close */
	void *arg;
	int keep_dup;                       /* client: keep a dup of the socket in dup_fd */
	int dup_fd;
	int rc, act_rc;
	char err[256];
	char cn[CN_CAP];
	int64_t ms;                         /* handshake time */
	atomic_int done;
};

static void side_init(struct side *s, const kp_tls_conf *conf)
{
	memset(s, 0, sizeof(*s));
	s->conf = conf;
	s->timeout_ms = 3000;
	s->dup_fd = -1;
	s->rc = -1;
}

static void side_handshake(struct side *s, int fd)
{
	kp_tls *t = NULL;
	int64_t t0 = ms_now();

	s->rc = kp_tls_handshake_pinned(&t, s->conf, fd, s->server_cn, s->pin, s->timeout_ms,
	                                s->err, sizeof(s->err));
	s->ms = ms_now() - t0;
	if (s->rc == KP_TLS_OK) {
		if (kp_tls_peer_cn(t, s->cn, sizeof(s->cn)) != KP_TLS_OK)
			s->cn[0] = '?';
		if (s->act != NULL)
			s->act_rc = s->act(t, s->arg);
	}
	kp_tls_close(t);
}

static void *server_main(void *p)
{
	struct side *s = p;
	int fd = -1;

	s->rc = kp_tcp_accept(g.lfd, 3000, &fd);
	if (s->rc == KP_TLS_OK)
		side_handshake(s, fd);
	atomic_store(&s->done, 1);
	return NULL;
}

static void *client_main(void *p)
{
	struct side *s = p;
	char port[16];
	int fd = -1;

	snprintf(port, sizeof(port), "%d", g.port);
	s->rc = kp_tcp_connect("127.0.0.1", port, 2000, &fd);
	if (s->rc == KP_TLS_OK) {
		if (s->keep_dup)
			s->dup_fd = dup(fd);
		side_handshake(s, fd);
	}
	atomic_store(&s->done, 1);
	return NULL;
}

static void run_pair(struct side *srv, struct side *cli)
{
	pthread_t ts, tc;

	assert_int_equal(pthread_create(&ts, NULL, server_main, srv), 0);
	assert_int_equal(pthread_create(&tc, NULL, client_main, cli), 0);
	assert_int_equal(pthread_join(tc, NULL), 0);
	assert_int_equal(pthread_join(ts, NULL), 0);
	if (cli->dup_fd >= 0)
		close(cli->dup_fd);
}

/* Runs openssl s_client against a server thread with stdin from the file in (NULL: empty);
 * returns its exit status, output in out. */
static int s_client_in(struct side *srv, const char *args, const char *in, char *out, size_t cap)
{
	char cmd[2048];
	pthread_t ts;
	size_t n = 0;
	FILE *p;
	int st;

	snprintf(cmd, sizeof(cmd), "timeout 10 openssl s_client -connect 127.0.0.1:%d -CAfile %s "
	         "%s <%s 2>&1", g.port, g.ca, args, in != NULL ? in : "/dev/null");
	assert_int_equal(pthread_create(&ts, NULL, server_main, srv), 0);
	p = popen(cmd, "r");
	assert_non_null(p);
	while (n + 1 < cap && fgets(out + n, (int)(cap - n), p) != NULL)
		n += strlen(out + n);
	out[n] = '\0';
	while (fgetc(p) != EOF)
		;
	st = pclose(p);
	assert_int_equal(pthread_join(ts, NULL), 0);
	return WIFEXITED(st) ? WEXITSTATUS(st) : -1;
}

static int s_client(struct side *srv, const char *args, char *out, size_t cap)
{
	return s_client_in(srv, args, NULL, out, cap);
}

/* ---- handshake ---- */

struct der_check {
	int cn_rc, match_rc;
	char cn[CN_CAP];
};

static int act_check_der(kp_tls *t, void *arg)
{
	struct der_check *d = arg;
	const uint8_t *der = NULL;
	size_t len = 0;
	kp_cert *c = NULL;
	int rc = kp_tls_peer_cert_der(t, &der, &len);

	if (rc == 0)
		rc = kp_cert_parse(&c, der, len);
	if (rc == 0) {
		d->cn_rc = kp_cert_subject_cn(c, d->cn, sizeof(d->cn));
		d->match_rc = kp_cert_matches_key(c, g.cli_key_obj);
	}
	kp_cert_free(c);
	return rc;
}

static void test_handshake_peer_names(void **state)
{
	struct side srv, cli;
	struct der_check d = { -1, -1, "" };

	(void)state;
	side_init(&srv, g.srv);
	side_init(&cli, g.cli);
	cli.server_cn = "backend";
	srv.act = act_check_der;
	srv.arg = &d;
	run_pair(&srv, &cli);
	assert_int_equal(srv.rc, KP_TLS_OK);
	assert_int_equal(cli.rc, KP_TLS_OK);
	assert_string_equal(srv.cn, "T-1");         /* the terminal id */
	assert_string_equal(cli.cn, "backend");
	assert_int_equal(srv.act_rc, 0);
	assert_int_equal(d.cn_rc, 0);
	assert_string_equal(d.cn, "T-1");
	assert_int_equal(d.match_rc, 0);            /* the DER is the client's own certificate */

	/* NULL server_cn: any certificate from the CA will do. */
	side_init(&srv, g.srv);
	side_init(&cli, g.cli);
	run_pair(&srv, &cli);
	assert_int_equal(srv.rc, KP_TLS_OK);
	assert_int_equal(cli.rc, KP_TLS_OK);
}

/* ---- data ---- */

struct echo {
	uint8_t *big;       /* MIB bytes */
	int ok;
};

static int act_echo_server(kp_tls *t, void *arg)
{
	struct echo *e = arg;
	uint8_t small[4];
	uint8_t *buf = malloc(MIB);
	int rc;

	if (buf == NULL)
		return KP_TLS_E_NOMEM;
	rc = kp_tls_read_exact(t, small, sizeof(small), 2000);
	if (rc == 0 && memcmp(small, "ping", 4) != 0)
		rc = -1;
	if (rc == 0)
		rc = kp_tls_write_all(t, "pong", 4, 2000);
	if (rc == 0)
		rc = kp_tls_read_exact(t, buf, MIB, 5000);
	if (rc == 0 && memcmp(buf, e->big, MIB) != 0)
		rc = -1;
	if (rc == 0)
		rc = kp_tls_write_all(t, buf, MIB, 5000);
	free(buf);
	return rc;
}

static int act_echo_client(kp_tls *t, void *arg)
{
	struct echo *e = arg;
	uint8_t small[4];
	uint8_t *buf = malloc(MIB);
	int rc;

	if (buf == NULL)
		return KP_TLS_E_NOMEM;
	rc = kp_tls_write_all(t, "ping", 4, 2000);
	if (rc == 0)
		rc = kp_tls_read_exact(t, small, sizeof(small), 2000);
	if (rc == 0 && memcmp(small, "pong", 4) != 0)
		rc = -1;
	if (rc == 0)
		rc = kp_tls_write_all(t, e->big, MIB, 5000);
	if (rc == 0)
		rc = kp_tls_read_exact(t, buf, MIB, 5000);
	if (rc == 0 && memcmp(buf, e->big, MIB) == 0)
		e->ok = 1;
	/* Zero lengths are no-ops. */
	if (rc == 0)
		rc = kp_tls_write_all(t, NULL, 0, 0);
	if (rc == 0)
		rc = kp_tls_read_exact(t, NULL, 0, 0);
	free(buf);
	return rc;
}

static void test_round_trip_1mib(void **state)
{
	struct side srv, cli;
	struct echo e = { NULL, 0 };

	(void)state;
	e.big = malloc(MIB);
	assert_non_null(e.big);
	assert_int_equal(kp_random(e.big, MIB), 0);
	side_init(&srv, g.srv);
	side_init(&cli, g.cli);
	cli.server_cn = "backend";
	srv.act = act_echo_server;
	srv.arg = &e;
	cli.act = act_echo_client;
	cli.arg = &e;
	run_pair(&srv, &cli);
	free(e.big);
	tu_expect_row("srv.rc cli.rc srv.act_rc cli.act_rc ok",
	              TU_INTS(srv.rc, cli.rc, srv.act_rc, cli.act_rc, e.ok), TU_INTS(0, 0, 0, 0, 1));
}

/* ---- refused peers ---- */

static void test_openssl_without_client_cert_refused(void **state)
{
	struct side srv;
	char out[16384];
	int st;

	(void)state;
	if (!g.have_openssl)
		skip();
	side_init(&srv, g.srv);
	st = s_client(&srv, "", out, sizeof(out));
	assert_int_not_equal(st, 0);
	assert_int_equal(srv.rc, KP_TLS_E_PEER);
	assert_non_null(strstr(srv.err, "no certificate"));
	/* s_client prints the half-made session even so; the alert is ours (see tls.c). */
	assert_non_null(strstr(out, "alert handshake failure"));
}

static void test_openssl_client_cert_from_other_ca_refused(void **state)
{
	struct side srv;
	char args[600], out[16384];
	int st;

	(void)state;
	if (!g.have_openssl)
		skip();
	side_init(&srv, g.srv);
	snprintf(args, sizeof(args), "-cert %s -key %s", g.evil_crt, g.evil_key);
	st = s_client(&srv, args, out, sizeof(out));
	assert_int_not_equal(st, 0);
	assert_int_equal(srv.rc, KP_TLS_E_PEER);
	assert_non_null(strstr(srv.err, "rejected"));
	assert_string_equal(srv.cn, "");
}

static int act_read_until_closed(kp_tls *t, void *arg)
{
	uint8_t b;

	(void)arg;
	return kp_tls_read_exact(t, &b, 1, 3000);
}

/* The one negotiable result, checked from the other side with an independent stack. */
static void test_openssl_with_cert_gets_the_one_suite(void **state)
{
	struct side srv;
	char args[600], out[16384];
	int st;

	(void)state;
	if (!g.have_openssl)
		skip();
	side_init(&srv, g.srv);
	srv.act = act_read_until_closed;
	/* No version option: openssl offers TLS 1.3 and must settle on 1.2. */
	snprintf(args, sizeof(args), "-cert %s -key %s -verify_return_error", g.cli_crt, g.cli_key);
	st = s_client(&srv, args, out, sizeof(out));
	if (st != 0 || srv.rc != 0)
		fprintf(stderr, "s_client %d, server %d (%s):\n%s\n", st, srv.rc, srv.err, out);
	assert_int_equal(st, 0);
	assert_int_equal(srv.rc, KP_TLS_OK);
	assert_string_equal(srv.cn, "T-1");
	assert_non_null(strstr(out, "Protocol  : TLSv1.2"));
	assert_non_null(strstr(out, "Cipher    : ECDHE-ECDSA-AES128-GCM-SHA256"));
	assert_non_null(strstr(out, "Verify return code: 0 (ok)"));
	assert_non_null(strstr(out, "Server Temp Key: ECDH, prime256v1"));
	assert_null(strstr(out, "TLS session ticket:"));
	assert_non_null(strstr(out, "Compression: NONE"));
	assert_int_equal(srv.act_rc, KP_TLS_E_CLOSED);      /* s_client closes at end of stdin */
}

static void test_openssl_other_versions_suites_curves_refused(void **state)
{
	static const char *const variants[] = {
		"-tls1_3",
		"-no_tls1_2",
		"-tls1_2 -cipher ECDHE-ECDSA-AES256-GCM-SHA384",
		"-tls1_2 -cipher ECDHE-ECDSA-CHACHA20-POLY1305",
		"-tls1_2 -cipher ECDHE-ECDSA-AES128-SHA256",
		"-tls1_2 -cipher ECDHE-RSA-AES128-GCM-SHA256",
		"-tls1_2 -curves X25519:secp384r1",
		"-tls1_2 -sigalgs ECDSA+SHA384:ECDSA+SHA512",
	};
	struct side srv;
	char args[700], out[16384];
	size_t i;
	int st;

	(void)state;
	if (!g.have_openssl)
		skip();
	for (i = 0; i < sizeof(variants) / sizeof(variants[0]); i++) {
		side_init(&srv, g.srv);
		snprintf(args, sizeof(args), "-cert %s -key %s %s", g.cli_crt, g.cli_key, variants[i]);
		st = s_client(&srv, args, out, sizeof(out));
		if (st == 0 || srv.rc == KP_TLS_OK)
			fail_msg("%s was accepted (s_client %d, server %d)", variants[i], st, srv.rc);
		/* refused by the server at the ClientHello, not by s_client */
		assert_int_equal(srv.rc, KP_TLS_E_HANDSHAKE);
	}
}

/* A client asking to renegotiate gets a no_renegotiation alert and no new handshake. */
static void test_openssl_renegotiation_refused(void **state)
{
	struct side srv;
	char args[600], in[256], out[16384];
	int st;

	(void)state;
	if (!g.have_openssl)
		skip();
	side_init(&srv, g.srv);
	srv.act = act_read_until_closed;
	snprintf(args, sizeof(args), "-cert %s -key %s", g.cli_crt, g.cli_key);
	fpath(in, "renegotiate.txt");
	tu_write(in, "R\n");       /* s_client's command to renegotiate */
	st = s_client_in(&srv, args, in, out, sizeof(out));
	assert_int_not_equal(st, 0);
	assert_non_null(strstr(out, "RENEGOTIATING"));
	assert_non_null(strstr(out, "no renegotiation"));
	assert_int_equal(srv.rc, KP_TLS_OK);
	assert_int_equal(srv.act_rc, KP_TLS_E_CLOSED);     /* s_client gave up with an alert */
}

static void test_server_with_wrong_cn_refused(void **state)
{
	struct side srv, cli;

	(void)state;
	side_init(&srv, g.srv_wrongcn);
	side_init(&cli, g.cli);
	cli.server_cn = "backend";
	run_pair(&srv, &cli);
	assert_int_equal(cli.rc, KP_TLS_E_PEER);
	assert_non_null(strstr(cli.err, "CN"));
	assert_int_not_equal(srv.rc, KP_TLS_OK);

	/* Equality, not mbedTLS's case-insensitive match. */
	side_init(&srv, g.srv);
	side_init(&cli, g.cli);
	cli.server_cn = "BACKEND";
	run_pair(&srv, &cli);
	assert_int_equal(cli.rc, KP_TLS_E_PEER);
	assert_int_not_equal(srv.rc, KP_TLS_OK);

	/* Without server_cn the same certificate is fine: it is from the CA. */
	side_init(&srv, g.srv_wrongcn);
	side_init(&cli, g.cli);
	run_pair(&srv, &cli);
	assert_int_equal(cli.rc, KP_TLS_OK);
	assert_string_equal(cli.cn, "not-backend");
}

/* ---- certificate profiles: purposes in extendedKeyUsage, the backend pinned ---- */

/* One handshake of a client (server_cn "backend", pinned when pin) against a server. */
static void run_profiles(struct side *srv, struct side *cli, const kp_tls_conf *s_conf,
                         const kp_tls_conf *c_conf, const kp_cert *pin)
{
	side_init(srv, s_conf);
	side_init(cli, c_conf);
	cli->server_cn = "backend";
	cli->pin = pin;
	run_pair(srv, cli);
	print_message("client: %s | server: %s\n", cli->err, srv->err);
}

static void test_server_needs_server_auth_and_the_pinned_key(void **state)
{
	struct side srv, cli;

	(void)state;
	/* CN backend, from the CA, no extendedKeyUsage: a name alone makes no backend. */
	run_profiles(&srv, &cli, g.srv_noeku, g.cli, NULL);
	assert_int_equal(cli.rc, KP_TLS_E_PEER);
	assert_non_null(strstr(cli.err, "server certificate has no extendedKeyUsage"));
	assert_int_not_equal(srv.rc, KP_TLS_OK);
	/* A terminal's certificate named backend: an mbedTLS server does not even offer it (the
	 * client's own refusal of it is kp_cert_check_profile's, in test_issued_profiles). */
	run_profiles(&srv, &cli, g.srv_termcn, g.cli, NULL);
	assert_int_not_equal(cli.rc, KP_TLS_OK);
	assert_int_not_equal(srv.rc, KP_TLS_OK);
	/* A backend certificate with another key: fine by name and purpose, refused when pinned. */
	run_profiles(&srv, &cli, g.srv_other, g.cli, NULL);
	assert_int_equal(cli.rc, KP_TLS_OK);
	run_profiles(&srv, &cli, g.srv_other, g.cli, g.srv_cert);
	assert_int_equal(cli.rc, KP_TLS_E_PEER);
	assert_non_null(strstr(cli.err, "not the one of the configured backend certificate"));
	assert_int_not_equal(srv.rc, KP_TLS_OK);
	/* the configured backend itself */
	run_profiles(&srv, &cli, g.srv, g.cli, g.srv_cert);
	assert_int_equal(cli.rc, KP_TLS_OK);
	assert_int_equal(srv.rc, KP_TLS_OK);
}

static void test_client_needs_client_auth(void **state)
{
	struct side srv, cli;

	(void)state;
	/* The backend's own certificate as a client: never registered as a terminal. */
	run_profiles(&srv, &cli, g.srv, g.cli_backend, NULL);
	assert_int_equal(srv.rc, KP_TLS_E_PEER);
	assert_non_null(strstr(srv.err, "client certificate is not a terminal certificate "
	                                "(extendedKeyUsage lacks clientAuth)"));
	assert_int_not_equal(cli.rc, KP_TLS_OK);
	/* a terminal's certificate from before profiles */
	run_profiles(&srv, &cli, g.srv, g.cli_noeku, NULL);
	assert_int_equal(srv.rc, KP_TLS_E_PEER);
	assert_non_null(strstr(srv.err, "client certificate has no extendedKeyUsage"));
	assert_int_not_equal(cli.rc, KP_TLS_OK);
}

/* What the API writes, read by an independent parser, and read back by kp_cert_check_profile. */
static void test_issued_profiles(void **state)
{
	const struct {
		const char *path;
		const char *openssl, *not;              /* in -ext extendedKeyUsage, and not */
		int terminal_rc, backend_rc;
	} rows[] = {
		{ g.cli_crt, "TLS Web Client Authentication", "Server", 0, KP_CRYPTO_E_CHAIN },
		{ g.srv_crt, "TLS Web Server Authentication", "Client", KP_CRYPTO_E_CHAIN, 0 },
		{ g.noeku_srv_crt, NULL, "Extended Key Usage", KP_CRYPTO_E_CHAIN, KP_CRYPTO_E_CHAIN },
	};
	char out[256], err[256];
	kp_cert *c = NULL;

	(void)state;
	fpath(out, "eku.txt");
	for (size_t i = 0; i < sizeof(rows) / sizeof(rows[0]); i++) {
		const char *path = rows[i].path;

		assert_int_equal(kp_cert_load(&c, path), 0);
		assert_int_equal(kp_cert_check_profile(c, KP_CERT_TERMINAL, err, sizeof(err)),
		                 rows[i].terminal_rc);
		assert_int_equal(kp_cert_check_profile(c, KP_CERT_BACKEND, err, sizeof(err)),
		                 rows[i].backend_rc);
		assert_int_equal(kp_cert_check_profile(c, KP_CERT_NO_EKU, err, sizeof(err)),
		                 KP_CRYPTO_E_INVAL);
		kp_cert_free(c);
		c = NULL;
		if (!g.have_openssl)
			continue;
		assert_int_equal(tu_sh("openssl x509 -in %s -noout -ext extendedKeyUsage >%s 2>&1",
		                       path, out), 0);
		if (rows[i].openssl != NULL)
			assert_int_equal(tu_file_count(out, rows[i].openssl), 1);
		assert_int_equal(tu_file_count(out, rows[i].not), 0);
	}
}

/* ---- deadlines ---- */

/* A slow or silent peer holds a server thread no longer than the deadline. */
static void test_silent_peer_times_out(void **state)
{
	struct side srv;
	char port[16];
	pthread_t ts;
	int fd = -1;

	(void)state;
	side_init(&srv, g.srv);
	srv.timeout_ms = 300;
	snprintf(port, sizeof(port), "%d", g.port);
	assert_int_equal(pthread_create(&ts, NULL, server_main, &srv), 0);
	assert_int_equal(kp_tcp_connect("127.0.0.1", port, 1000, &fd), KP_TLS_OK);
	assert_int_equal(pthread_join(ts, NULL), 0);
	close(fd);
	/* Times are checked as "not before": the deadline is shown by the result (without it
	 * the thread would wait for ever), never by a ceiling a loaded machine can miss. */
	assert_int_equal(srv.rc, KP_TLS_E_TIMEOUT);
	assert_true(srv.ms >= 290);
	assert_non_null(strstr(srv.err, "300 ms"));

	/* and one that hangs up at once */
	side_init(&srv, g.srv);
	assert_int_equal(pthread_create(&ts, NULL, server_main, &srv), 0);
	assert_int_equal(kp_tcp_connect("127.0.0.1", port, 1000, &fd), KP_TLS_OK);
	close(fd);
	assert_int_equal(pthread_join(ts, NULL), 0);
	assert_int_equal(srv.rc, KP_TLS_E_CLOSED);        /* not a timeout: it did not wait */
}

/* A peer that sends a byte now and then still cannot stretch the deadline: the whole
 * record (512 bytes, 20 s at this pace) would be needed before it, and far fewer came. */
static void test_dribbling_peer_times_out(void **state)
{
	static const uint8_t hello[5 + 0x200] = { 0x16, 0x03, 0x01, 0x02, 0x00, 0x01, 0x00, 0x01,
	                                          0xfc, 0x03, 0x03 };
	struct side srv;
	char port[16];
	pthread_t ts;
	size_t i = 0;
	int fd = -1;

	(void)state;
	side_init(&srv, g.srv);
	srv.timeout_ms = 300;
	snprintf(port, sizeof(port), "%d", g.port);
	assert_int_equal(pthread_create(&ts, NULL, server_main, &srv), 0);
	assert_int_equal(kp_tcp_connect("127.0.0.1", port, 1000, &fd), KP_TLS_OK);
	while (!atomic_load(&srv.done) && i < sizeof(hello)) {
		assert_int_equal(send(fd, &hello[i++], 1, MSG_NOSIGNAL), 1);
		usleep(40 * 1000);
	}
	assert_int_equal(pthread_join(ts, NULL), 0);
	close(fd);
	assert_true(i >= 4 && i < sizeof(hello));
	assert_int_equal(srv.rc, KP_TLS_E_TIMEOUT);
	assert_true(srv.ms >= 290);
}

struct steps {
	sem_t go, finished;
	int rc[4];
	int64_t ms[4];
};

static int act_reads_with_timeouts(kp_tls *t, void *arg)
{
	struct steps *s = arg;
	uint8_t buf[16];
	int64_t t0;

	/* 1: nothing comes: a clean timeout, the connection stays usable */
	t0 = ms_now();
	s->rc[0] = kp_tls_read_exact(t, buf, 4, 150);
	s->ms[0] = ms_now() - t0;
	sem_post(&s->go);
	/* 2: the 4 bytes come */
	s->rc[1] = kp_tls_read_exact(t, buf, 4, 2000);
	if (s->rc[1] == 0 && memcmp(buf, "abcd", 4) != 0)
		s->rc[1] = -1;
	/* 3: only 3 of 10 bytes come: timeout after a partial read */
	t0 = ms_now();
	s->rc[2] = kp_tls_read_exact(t, buf, 10, 200);
	s->ms[2] = ms_now() - t0;
	/* 4: the stream is out of step now: the error sticks, without waiting out the
	 * (long) timeout */
	t0 = ms_now();
	s->rc[3] = kp_tls_read_exact(t, buf, 1, TU_WAIT_S * 1000);
	s->ms[3] = ms_now() - t0;
	sem_post(&s->finished);
	return 0;
}

static int act_writes_late(kp_tls *t, void *arg)
{
	struct steps *s = arg;
	int rc;

	sem_wait(&s->go);
	rc = kp_tls_write_all(t, "abcd", 4, 1000);
	if (rc == 0)
		rc = kp_tls_write_all(t, "efg", 3, 1000);
	sem_wait(&s->finished);
	return rc;
}

static void test_read_exact_timeout(void **state)
{
	struct side srv, cli;
	struct steps s;

	(void)state;
	memset(&s, 0, sizeof(s));
	assert_int_equal(sem_init(&s.go, 0, 0), 0);
	assert_int_equal(sem_init(&s.finished, 0, 0), 0);
	side_init(&srv, g.srv);
	side_init(&cli, g.cli);
	srv.act = act_reads_with_timeouts;
	srv.arg = &s;
	cli.act = act_writes_late;
	cli.arg = &s;
	run_pair(&srv, &cli);
	sem_destroy(&s.go);
	sem_destroy(&s.finished);
	assert_int_equal(srv.rc, 0);
	assert_int_equal(cli.rc, 0);
	assert_int_equal(cli.act_rc, 0);
	assert_int_equal(s.rc[0], KP_TLS_E_TIMEOUT);
	assert_true(s.ms[0] >= 140);
	assert_int_equal(s.rc[1], KP_TLS_OK);
	assert_int_equal(s.rc[2], KP_TLS_E_TIMEOUT);
	assert_true(s.ms[2] >= 190);
	assert_int_equal(s.rc[3], KP_TLS_E_TIMEOUT);
	assert_true(s.ms[3] < TU_WAIT_S * 1000);
}

/* ---- closing ---- */

struct closing {
	int rc[3];
};

static int act_read_bye_then_closed(kp_tls *t, void *arg)
{
	struct closing *c = arg;
	uint8_t buf[3];

	c->rc[0] = kp_tls_read_exact(t, buf, 3, 2000);
	if (c->rc[0] == 0 && memcmp(buf, "bye", 3) != 0)
		c->rc[0] = -1;
	c->rc[1] = kp_tls_read_exact(t, buf, 1, 2000);
	c->rc[2] = kp_tls_read_exact(t, buf, 1, 2000);     /* and stays closed */
	return 0;
}

static int act_say_bye(kp_tls *t, void *arg)
{
	(void)arg;
	return kp_tls_write_all(t, "bye", 3, 1000);
}

static int act_write_until_error(kp_tls *t, void *arg)
{
	static uint8_t chunk[64 * 1024];
	int rc = 0;
	int i;

	(void)arg;
	usleep(50 * 1000);      /* the client is gone by now */
	for (i = 0; i < 200 && rc == 0; i++)
		rc = kp_tls_write_all(t, chunk, sizeof(chunk), 1000);
	return rc;
}

static int act_shutdown_without_notify(kp_tls *t, void *arg)
{
	struct side *self = arg;

	(void)t;
	/* EOF without close_notify, as when the peer's process dies. */
	shutdown(self->dup_fd, SHUT_WR);
	usleep(100 * 1000);
	return 0;
}

static void test_peer_close(void **state)
{
	struct side srv, cli;
	struct closing c;

	(void)state;
	/* close_notify */
	memset(&c, 0, sizeof(c));
	side_init(&srv, g.srv);
	side_init(&cli, g.cli);
	srv.act = act_read_bye_then_closed;
	srv.arg = &c;
	cli.act = act_say_bye;
	run_pair(&srv, &cli);
	assert_int_equal(srv.rc, 0);
	assert_int_equal(cli.act_rc, 0);
	assert_int_equal(c.rc[0], KP_TLS_OK);
	assert_int_equal(c.rc[1], KP_TLS_E_CLOSED);
	assert_int_equal(c.rc[2], KP_TLS_E_CLOSED);

	/* plain end of stream */
	memset(&c, 0, sizeof(c));
	side_init(&srv, g.srv);
	side_init(&cli, g.cli);
	srv.act = act_read_bye_then_closed;
	srv.arg = &c;
	cli.keep_dup = 1;
	cli.act = act_shutdown_without_notify;
	cli.arg = &cli;
	run_pair(&srv, &cli);
	assert_int_equal(srv.rc, 0);
	assert_int_equal(c.rc[0], KP_TLS_E_CLOSED);

	/* writing to a closed peer: an error code, not SIGPIPE (its default kills us) */
	side_init(&srv, g.srv);
	side_init(&cli, g.cli);
	srv.act = act_write_until_error;
	run_pair(&srv, &cli);
	assert_int_equal(srv.rc, 0);
	assert_int_equal(srv.act_rc, KP_TLS_E_CLOSED);
}

/* ---- configuration and arguments ---- */

static void test_conf_errors(void **state)
{
	kp_tls_conf *c = (kp_tls_conf *)1;
	kp_tls *t = (kp_tls *)1;
	char err[256], missing[256];
	int fds[2];

	(void)state;
	fpath(missing, "missing.pem");
	assert_int_equal(kp_tls_conf_new(&c, KP_TLS_SERVER, missing, g.srv_crt, g.srv_key,
	                                 err, sizeof(err)), KP_TLS_E_CONFIG);
	assert_null(c);
	assert_non_null(strstr(err, "missing.pem"));
	assert_int_equal(kp_tls_conf_new(&c, KP_TLS_SERVER, g.ca, missing, g.srv_key,
	                                 err, sizeof(err)), KP_TLS_E_CONFIG);
	assert_int_equal(kp_tls_conf_new(&c, KP_TLS_SERVER, g.ca, g.srv_crt, missing,
	                                 err, sizeof(err)), KP_TLS_E_CONFIG);
	/* a key that is not the certificate's */
	assert_int_equal(kp_tls_conf_new(&c, KP_TLS_CLIENT, g.ca, g.cli_crt, g.srv_key,
	                                 err, sizeof(err)), KP_TLS_E_CONFIG);
	assert_non_null(strstr(err, "does not belong"));
	/* our own certificate from another CA, and a CA file that is not a CA */
	assert_int_equal(kp_tls_conf_new(&c, KP_TLS_CLIENT, g.ca, g.evil_crt, g.evil_key,
	                                 err, sizeof(err)), KP_TLS_E_CONFIG);
	assert_int_equal(kp_tls_conf_new(&c, KP_TLS_CLIENT, g.cli_crt, g.cli_crt, g.cli_key,
	                                 err, sizeof(err)), KP_TLS_E_CONFIG);
	assert_int_equal(kp_tls_conf_new(&c, 3, g.ca, g.cli_crt, g.cli_key, err, sizeof(err)),
	                 KP_TLS_E_INVAL);
	assert_int_equal(kp_tls_conf_new(NULL, KP_TLS_CLIENT, g.ca, g.cli_crt, g.cli_key, NULL, 0),
	                 KP_TLS_E_INVAL);
	/* err may be left out */
	assert_int_equal(kp_tls_conf_new(&c, KP_TLS_CLIENT, g.ca, g.cli_crt, g.cli_key, NULL, 0),
	                 KP_TLS_OK);
	kp_tls_conf_free(c);
	kp_tls_conf_free(NULL);
	kp_tls_close(NULL);

	/* the handshake owns fd even when it refuses the arguments */
	assert_int_equal(socketpair(AF_UNIX, SOCK_STREAM, 0, fds), 0);
	assert_int_equal(kp_tls_handshake(&t, g.srv, fds[0], "backend", 1000, err, sizeof(err)),
	                 KP_TLS_E_INVAL);           /* server_cn is for clients */
	assert_null(t);
	assert_int_equal(fcntl(fds[0], F_GETFD), -1);
	assert_int_equal(kp_tls_handshake(&t, g.cli, fds[1], NULL, -1, err, sizeof(err)),
	                 KP_TLS_E_INVAL);           /* every handshake has a deadline */
	assert_int_equal(fcntl(fds[1], F_GETFD), -1);
	assert_int_equal(socketpair(AF_UNIX, SOCK_STREAM, 0, fds), 0);
	assert_int_equal(kp_tls_handshake_pinned(&t, g.srv, fds[0], NULL, g.srv_cert, 1000, err,
	                                         sizeof(err)), KP_TLS_E_INVAL); /* clients pin */
	assert_int_equal(fcntl(fds[0], F_GETFD), -1);
	close(fds[1]);

	assert_string_equal(kp_tls_strerror(KP_TLS_OK), "ok");
	assert_string_equal(kp_tls_strerror(12345), "unknown TLS error");
	for (int rc = KP_TLS_E_NET; rc <= KP_TLS_E_INVAL; rc++)
		assert_string_not_equal(kp_tls_strerror(rc), "unknown TLS error");
}

static void test_tcp_helpers(void **state)
{
	char port[16];
	int64_t t0;
	int fd = -1, lfd = -1, p = 0;

	(void)state;
	t0 = ms_now();
	assert_int_equal(kp_tcp_accept(g.lfd, 100, &fd), KP_TLS_E_TIMEOUT);
	assert_true(ms_now() - t0 >= 95);
	assert_int_equal(fd, -1);
	/* the listener and accepted sockets are close-on-exec */
	assert_true(fcntl(g.lfd, F_GETFD) & FD_CLOEXEC);

	/* a port nobody listens on any more */
	assert_int_equal(kp_tcp_listen("127.0.0.1", "0", &lfd, &p), KP_TLS_OK);
	assert_true(p > 0);
	close(lfd);
	snprintf(port, sizeof(port), "%d", p);
	assert_int_equal(kp_tcp_connect("127.0.0.1", port, 1000, &fd), KP_TLS_E_NET);
	assert_int_equal(fd, -1);

	assert_int_equal(kp_tcp_listen("256.1.1.1", "0", &lfd, &p), KP_TLS_E_NET);
	assert_int_equal(kp_tcp_listen("127.0.0.1", "not-a-port", &lfd, &p), KP_TLS_E_NET);
	assert_int_equal(kp_tcp_connect(NULL, "1", 100, &fd), KP_TLS_E_INVAL);
	assert_int_equal(kp_tcp_accept(-1, 100, &fd), KP_TLS_E_INVAL);

	/* connected sockets come back blocking, close-on-exec */
	snprintf(port, sizeof(port), "%d", g.port);
	assert_int_equal(kp_tcp_connect("127.0.0.1", port, 1000, &fd), KP_TLS_OK);
	assert_true(fcntl(fd, F_GETFD) & FD_CLOEXEC);
	assert_false(fcntl(fd, F_GETFL) & O_NONBLOCK);
	assert_int_equal(kp_tcp_accept(g.lfd, 1000, &lfd), KP_TLS_OK);
	assert_true(fcntl(lfd, F_GETFD) & FD_CLOEXEC);
	close(lfd);
	close(fd);
}

/* ---- threads and speed ---- */

#define NPAIRS 16

static void test_concurrent_handshakes_share_confs(void **state)
{
	static struct side srv[NPAIRS], cli[NPAIRS];
	pthread_t ts[NPAIRS], tc[NPAIRS];
	int i;

	(void)state;
	for (i = 0; i < NPAIRS; i++) {
		side_init(&srv[i], g.srv);
		side_init(&cli[i], g.cli);
		cli[i].server_cn = "backend";
		assert_int_equal(pthread_create(&ts[i], NULL, server_main, &srv[i]), 0);
		assert_int_equal(pthread_create(&tc[i], NULL, client_main, &cli[i]), 0);
	}
	for (i = 0; i < NPAIRS; i++) {
		assert_int_equal(pthread_join(tc[i], NULL), 0);
		assert_int_equal(pthread_join(ts[i], NULL), 0);
	}
	for (i = 0; i < NPAIRS; i++) {
		assert_int_equal(srv[i].rc, KP_TLS_OK);
		assert_int_equal(cli[i].rc, KP_TLS_OK);
		assert_string_equal(srv[i].cn, "T-1");
		assert_string_equal(cli[i].cn, "backend");
	}
}

static void test_handshake_loop_50(void **state)
{
	struct side srv, cli;
	int64_t t0 = ms_now(), total, hs = 0;
	int i;

	(void)state;
	for (i = 0; i < 50; i++) {
		side_init(&srv, g.srv);
		side_init(&cli, g.cli);
		cli.server_cn = "backend";
		run_pair(&srv, &cli);
		assert_int_equal(srv.rc, KP_TLS_OK);
		assert_int_equal(cli.rc, KP_TLS_OK);
		hs += cli.ms;
	}
	total = ms_now() - t0;
	/* Both ends share one machine here: a real handshake costs each end about half. */
	print_message("50 handshakes over loopback: %lld ms in all, %.1f ms each "
	              "(client's kp_tls_handshake call %.1f ms)\n", (long long)total,
	              (double)total / 50.0, (double)hs / 50.0);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_handshake_peer_names),
		cmocka_unit_test(test_round_trip_1mib),
		cmocka_unit_test(test_openssl_without_client_cert_refused),
		cmocka_unit_test(test_openssl_client_cert_from_other_ca_refused),
		cmocka_unit_test(test_openssl_with_cert_gets_the_one_suite),
		cmocka_unit_test(test_openssl_other_versions_suites_curves_refused),
		cmocka_unit_test(test_openssl_renegotiation_refused),
		cmocka_unit_test(test_server_with_wrong_cn_refused),
		cmocka_unit_test(test_server_needs_server_auth_and_the_pinned_key),
		cmocka_unit_test(test_client_needs_client_auth),
		cmocka_unit_test(test_issued_profiles),
		cmocka_unit_test(test_silent_peer_times_out),
		cmocka_unit_test(test_dribbling_peer_times_out),
		cmocka_unit_test(test_read_exact_timeout),
		cmocka_unit_test(test_peer_close),
		cmocka_unit_test(test_conf_errors),
		cmocka_unit_test(test_tcp_helpers),
		cmocka_unit_test(test_concurrent_handshakes_share_confs),
		cmocka_unit_test(test_handshake_loop_50),
	};

	g.lfd = -1;
	return cmocka_run_group_tests(tests, group_setup, group_teardown);
}
