/* SPDX-License-Identifier: Apache-2.0 */
/* kippu TLS on mbedTLS 2.28: one fixed TLS 1.2 profile (ECDHE-ECDSA-AES128-GCM-SHA256,
 * P-256, SHA-256, mutual authentication against the pinned operator CA) and TCP helpers.
 * Sockets are non-blocking under mbedTLS; every call waits in poll() for what is left of
 * its own deadline, so a slow or silent peer cannot hold a thread longer than asked. */
#include "kp_tls.h"
#include "crypto_int.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/types.h>
#include <time.h>
#include <unistd.h>

#include <mbedtls/ctr_drbg.h>
#include <mbedtls/ecp.h>
#include <mbedtls/error.h>
#include <mbedtls/net_sockets.h>
#include <mbedtls/pk.h>
#include <mbedtls/platform_util.h>
#include <mbedtls/ssl.h>
#include <mbedtls/x509_crt.h>

#if !defined(MBEDTLS_SSL_KEEP_PEER_CERTIFICATE)
#error "kp_tls_peer_cn needs MBEDTLS_SSL_KEEP_PEER_CERTIFICATE"
#endif
#if !defined(MBEDTLS_SSL_RENEGOTIATION)
#error "mbedtls_ssl_conf_renegotiation is needed to switch renegotiation off explicitly"
#endif

struct kp_tls_conf {
	mbedtls_ssl_config ssl;
	mbedtls_x509_crt ca;
	mbedtls_x509_crt own;
	mbedtls_pk_context key;
	/* One DRBG for all connections of this conf: draws and reseeds under rng_lock. */
	struct kp_crypto_drbg rng;
	pthread_mutex_t rng_lock;
	int lock_ready;
	enum kp_tls_role role;
};

/* What the verify callback checks on the peer's leaf certificate, and why it refused it. */
struct peer_check {
	enum kp_tls_role role;                  /* ours: the peer has the other one */
	const char *cn;                         /* client: the server's CN, or NULL */
	const mbedtls_x509_crt *pin;            /* client: the server's key must be this one's */
	char why[200];                          /* the first refusal, for err */
};

struct kp_tls {
	mbedtls_ssl_context ssl;
	struct peer_check check;
	int fd;
	int failed;             /* sticky error: the record stream is out of step, only close */
	int established;        /* handshake done: a close_notify makes sense */
	int sys_errno;          /* errno of the last failed send/recv, for err texts */
};

static const int suites[] = { MBEDTLS_TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256, 0 };
static const mbedtls_ecp_group_id curves[] = { MBEDTLS_ECP_DP_SECP256R1, MBEDTLS_ECP_DP_NONE };
static const int sig_hashes[] = { MBEDTLS_MD_SHA256, MBEDTLS_MD_NONE };

/* Certificates in the chain: SHA-256 signatures, P-256 keys only. ECDSA is the
 * signature algorithm, ECKEY the key type of a parsed certificate: both are needed. */
static const mbedtls_x509_crt_profile profile = {
	MBEDTLS_X509_ID_FLAG(MBEDTLS_MD_SHA256),
	MBEDTLS_X509_ID_FLAG(MBEDTLS_PK_ECKEY) | MBEDTLS_X509_ID_FLAG(MBEDTLS_PK_ECDSA),
	MBEDTLS_X509_ID_FLAG(MBEDTLS_ECP_DP_SECP256R1),
	2048,
};

/* ---- errors ---- */

const char *kp_tls_strerror(int rc)
{
	switch (rc) {
	case KP_TLS_OK:          return "ok";
	case KP_TLS_E_INVAL:     return "invalid argument";
	case KP_TLS_E_NOMEM:     return "out of memory";
	case KP_TLS_E_CONFIG:    return "CA, certificate or key file unusable";
	case KP_TLS_E_HANDSHAKE: return "TLS handshake failed";
	case KP_TLS_E_PEER:      return "peer certificate missing, not from the CA, or wrong name";
	case KP_TLS_E_TIMEOUT:   return "deadline passed";
	case KP_TLS_E_CLOSED:    return "peer closed the connection";
	case KP_TLS_E_IO:        return "socket error";
	case KP_TLS_E_NET:       return "cannot resolve, connect, bind or listen";
	default:                 return "unknown TLS error";
	}
}

static void err_set(char *err, size_t cap, const char *fmt, ...)
	__attribute__((format(printf, 3, 4)));

static void err_set(char *err, size_t cap, const char *fmt, ...)
{
	va_list ap;

	if (err == NULL || cap == 0)
		return;
	va_start(ap, fmt);
	if (vsnprintf(err, cap, fmt, ap) < 0)
		err[0] = '\0';
	va_end(ap);
}

static void err_mbed(char *err, size_t cap, const char *what, int ret)
{
	char text[160];

	mbedtls_strerror(ret, text, sizeof(text));
	err_set(err, cap, "%s: %s (-0x%04x)", what, text, (unsigned)-ret);
}

static void err_verify(char *err, size_t cap, const char *what, uint32_t flags)
{
	char info[512];

	kp_crypto_verify_text(info, sizeof(info), flags);
	err_set(err, cap, "%s: %s", what, info);
}

static int is_alloc_error(int ret)
{
	return ret == MBEDTLS_ERR_SSL_ALLOC_FAILED || ret == MBEDTLS_ERR_X509_ALLOC_FAILED ||
	       ret == MBEDTLS_ERR_PK_ALLOC_FAILED || ret == MBEDTLS_ERR_MPI_ALLOC_FAILED ||
	       ret == MBEDTLS_ERR_ECP_ALLOC_FAILED;
}

/* A failure of mbedTLS while setting up: out of memory, or else the configuration is
 * unusable; err says what failed. */
static int fail_config(char *err, size_t cap, const char *what, int ret)
{
	err_mbed(err, cap, what, ret);
	return is_alloc_error(ret) ? KP_TLS_E_NOMEM : KP_TLS_E_CONFIG;
}

/* ---- time ---- */

static int64_t now_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* Waits until fd is readable (want_write 0) or writable, or the deadline passes.
 * Error and hang-up states count as ready: the next send/recv reports them. */
static int wait_fd(int fd, int want_write, int64_t deadline)
{
	struct pollfd pfd;
	int64_t left;
	int n;

	for (;;) {
		left = deadline - now_ms();
		if (left <= 0)
			return KP_TLS_E_TIMEOUT;
		pfd.fd = fd;
		pfd.events = want_write ? POLLOUT : POLLIN;
		pfd.revents = 0;
		n = poll(&pfd, 1, left > INT_MAX ? INT_MAX : (int)left);
		if (n > 0)
			return KP_TLS_OK;
		if (n < 0 && errno != EINTR)
			return KP_TLS_E_IO;
		/* n == 0 or EINTR: the loop head decides whether time is left */
	}
}

/* ---- random numbers ---- */

/* mbedTLS's RNG callback: p is the conf. Connections of one conf run in many threads. */
static int conf_rng(void *p, unsigned char *buf, size_t len)
{
	struct kp_tls_conf *conf = p;
	int ret;

	if (pthread_mutex_lock(&conf->rng_lock) != 0)
		return MBEDTLS_ERR_CTR_DRBG_ENTROPY_SOURCE_FAILED;
	ret = kp_crypto_drbg_draw(&conf->rng, buf, len);
	pthread_mutex_unlock(&conf->rng_lock);
	return ret;
}

/* ---- configuration ---- */

/* The one certificate file at path into crt; what names the file in err ("CA file"). */
static int load_crt(mbedtls_x509_crt *crt, const char *what, const char *path, char *err,
                    size_t cap)
{
	int ret;

	/* mbedTLS says only "Read/write of file failed": name the cause first. */
	if (kp_file_unreadable(what, path, err, cap) != 0)
		return KP_TLS_E_CONFIG;
	ret = mbedtls_x509_crt_parse_file(crt, path);
	if (ret > 0) {
		err_set(err, cap, "%s %s: %d certificate(s) do not parse", what, path, ret);
		return KP_TLS_E_CONFIG;
	}
	if (ret != 0)
		return fail_config(err, cap, path, ret);
	return KP_TLS_OK;
}

static int load_ca(struct kp_tls_conf *conf, const char *path, char *err, size_t cap)
{
	int rc = load_crt(&conf->ca, "CA file", path, err, cap);

	if (rc != KP_TLS_OK)
		return rc;
	/* Pinned: exactly the operator CA. A bundle would silently widen who is trusted. */
	if (conf->ca.next != NULL && conf->ca.next->raw.len > 0) {
		err_set(err, cap, "CA file %s: more than one certificate", path);
		return KP_TLS_E_CONFIG;
	}
	if (!conf->ca.ca_istrue || kp_crypto_pk_p256(&conf->ca.pk) == NULL) {
		err_set(err, cap, "CA file %s: not a CA certificate with a P-256 key", path);
		return KP_TLS_E_CONFIG;
	}
	return KP_TLS_OK;
}

/* Our certificate and key: P-256, a matching pair, and issued by the CA now. Checking
 * here names the bad file at start-up instead of failing every handshake later. */
static int load_own(struct kp_tls_conf *conf, const char *cert_path, const char *key_path,
                    char *err, size_t cap)
{
	uint32_t flags = 0;
	int rc;
	int ret;

	rc = load_crt(&conf->own, "certificate file", cert_path, err, cap);
	if (rc != KP_TLS_OK)
		return rc;
	if (kp_crypto_pk_p256(&conf->own.pk) == NULL) {
		err_set(err, cap, "certificate file %s: not a P-256 key", cert_path);
		return KP_TLS_E_CONFIG;
	}
	if (kp_file_unreadable("key file", key_path, err, cap) != 0)
		return KP_TLS_E_CONFIG;
	ret = mbedtls_pk_parse_keyfile(&conf->key, key_path, NULL);
	if (ret != 0)
		return fail_config(err, cap, key_path, ret);
	if (kp_crypto_pk_p256(&conf->key) == NULL) {
		err_set(err, cap, "key file %s: not an ECDSA P-256 key", key_path);
		return KP_TLS_E_CONFIG;
	}
	ret = mbedtls_pk_check_pair(&conf->own.pk, &conf->key);
	if (ret != 0) {
		err_set(err, cap, "key file %s does not belong to certificate %s", key_path, cert_path);
		return is_alloc_error(ret) ? KP_TLS_E_NOMEM : KP_TLS_E_CONFIG;
	}
	ret = mbedtls_x509_crt_verify_with_profile(&conf->own, &conf->ca, NULL, &profile, NULL,
	                                           &flags, NULL, NULL);
	if (ret == MBEDTLS_ERR_X509_CERT_VERIFY_FAILED) {
		err_verify(err, cap, cert_path, flags);
		return KP_TLS_E_CONFIG;
	}
	if (ret != 0)
		return fail_config(err, cap, cert_path, ret);
	return KP_TLS_OK;
}

void kp_tls_conf_free(kp_tls_conf *conf)
{
	if (conf == NULL)
		return;
	mbedtls_ssl_config_free(&conf->ssl);
	mbedtls_x509_crt_free(&conf->ca);
	mbedtls_x509_crt_free(&conf->own);
	mbedtls_pk_free(&conf->key);                /* zeroizes the private scalar */
	kp_crypto_drbg_free(&conf->rng);            /* zeroizes the DRBG state */
	if (conf->lock_ready)
		pthread_mutex_destroy(&conf->rng_lock);
	mbedtls_platform_zeroize(conf, sizeof(*conf));
	free(conf);
}

/* The fixed TLS profile on conf->ssl, with the loaded CA, certificate and key. */
static int conf_setup_ssl(struct kp_tls_conf *conf, char *err, size_t cap)
{
	int ret;

	ret = mbedtls_ssl_config_defaults(&conf->ssl,
	                                  conf->role == KP_TLS_SERVER ? MBEDTLS_SSL_IS_SERVER
	                                                              : MBEDTLS_SSL_IS_CLIENT,
	                                  MBEDTLS_SSL_TRANSPORT_STREAM, MBEDTLS_SSL_PRESET_DEFAULT);
	if (ret != 0)
		return fail_config(err, cap, "TLS defaults", ret);
	mbedtls_ssl_conf_min_version(&conf->ssl, MBEDTLS_SSL_MAJOR_VERSION_3,
	                             MBEDTLS_SSL_MINOR_VERSION_3);
	mbedtls_ssl_conf_max_version(&conf->ssl, MBEDTLS_SSL_MAJOR_VERSION_3,
	                             MBEDTLS_SSL_MINOR_VERSION_3);
	mbedtls_ssl_conf_ciphersuites(&conf->ssl, suites);
	mbedtls_ssl_conf_curves(&conf->ssl, curves);
	mbedtls_ssl_conf_sig_hashes(&conf->ssl, sig_hashes);
	mbedtls_ssl_conf_cert_profile(&conf->ssl, &profile);
	/* Both ends: a peer without a valid certificate from the CA fails the handshake. */
	mbedtls_ssl_conf_authmode(&conf->ssl, MBEDTLS_SSL_VERIFY_REQUIRED);
	mbedtls_ssl_conf_ca_chain(&conf->ssl, &conf->ca, NULL);
	ret = mbedtls_ssl_conf_own_cert(&conf->ssl, &conf->own, &conf->key);
	if (ret != 0)
		return fail_config(err, cap, "own certificate", ret);
	mbedtls_ssl_conf_rng(&conf->ssl, conf_rng, conf);
	mbedtls_ssl_conf_renegotiation(&conf->ssl, MBEDTLS_SSL_RENEGOTIATION_DISABLED);
	mbedtls_ssl_conf_legacy_renegotiation(&conf->ssl, MBEDTLS_SSL_LEGACY_NO_RENEGOTIATION);
	/* Tickets: client side off here; a server only issues them with a ticket callback,
	 * and none is set (nor a session cache), so no session is ever resumed. Compression:
	 * MBEDTLS_ZLIB_SUPPORT is not compiled in, so only the null method is offered. */
	mbedtls_ssl_conf_session_tickets(&conf->ssl, MBEDTLS_SSL_SESSION_TICKETS_DISABLED);
	return KP_TLS_OK;
}

int kp_tls_conf_new(kp_tls_conf **out, enum kp_tls_role role, const char *ca_path,
                    const char *cert_path, const char *key_path, char *err, size_t err_cap)
{
	struct kp_tls_conf *conf = NULL;
	int rc = KP_TLS_OK;
	int ret;

	err_set(err, err_cap, "%s", "");
	if (out != NULL)
		*out = NULL;
	if (out == NULL || (role != KP_TLS_SERVER && role != KP_TLS_CLIENT) || ca_path == NULL ||
	    cert_path == NULL || key_path == NULL || (err == NULL && err_cap > 0)) {
		rc = KP_TLS_E_INVAL;
		goto out;
	}
	conf = calloc(1, sizeof(*conf));
	if (conf == NULL) {
		rc = KP_TLS_E_NOMEM;
		goto out;
	}
	mbedtls_ssl_config_init(&conf->ssl);
	mbedtls_x509_crt_init(&conf->ca);
	mbedtls_x509_crt_init(&conf->own);
	mbedtls_pk_init(&conf->key);
	kp_crypto_drbg_init(&conf->rng);
	conf->role = role;
	if (pthread_mutex_init(&conf->rng_lock, NULL) != 0) {
		rc = KP_TLS_E_NOMEM;
		goto out;
	}
	conf->lock_ready = 1;
	ret = kp_crypto_drbg_seed(&conf->rng, "kippu kp_tls_conf");
	if (ret != 0) {
		err_mbed(err, err_cap, "random generator", ret);
		rc = KP_TLS_E_CONFIG;
		goto out;
	}

	rc = load_ca(conf, ca_path, err, err_cap);
	if (rc != KP_TLS_OK)
		goto out;
	rc = load_own(conf, cert_path, key_path, err, err_cap);
	if (rc != KP_TLS_OK)
		goto out;
	/* mbedTLS stores its table of base-point multiples in the group on first use. Filling
	 * it now, while the conf is private to this thread, means concurrent handshakes only
	 * read the shared keys' groups (2.28's ECKEY wrappers work on copies, but nothing
	 * promises that). */
	ret = kp_crypto_ec_warm(kp_crypto_pk_p256(&conf->key), conf_rng, conf);
	if (ret == 0)
		ret = kp_crypto_ec_warm(kp_crypto_pk_p256(&conf->ca.pk), conf_rng, conf);
	if (ret != 0) {
		rc = fail_config(err, err_cap, "key set-up", ret);
		goto out;
	}
	rc = conf_setup_ssl(conf, err, err_cap);
	if (rc != KP_TLS_OK)
		goto out;
	*out = conf;
	conf = NULL;
out:
	kp_tls_conf_free(conf);
	return rc;
}

/* ---- connections ---- */

static int bio_send(void *ctx, const unsigned char *buf, size_t len)
{
	struct kp_tls *t = ctx;
	ssize_t n;

	for (;;) {
		/* MSG_NOSIGNAL: a peer gone away is an error code, not a SIGPIPE for the process. */
		n = send(t->fd, buf, len, MSG_NOSIGNAL);
		if (n >= 0)
			return (int)n;      /* len is at most one record */
		if (errno == EINTR)
			continue;
		if (errno == EAGAIN || errno == EWOULDBLOCK)
			return MBEDTLS_ERR_SSL_WANT_WRITE;
		t->sys_errno = errno;
		if (errno == EPIPE || errno == ECONNRESET)
			return MBEDTLS_ERR_NET_CONN_RESET;
		return MBEDTLS_ERR_NET_SEND_FAILED;
	}
}

static int bio_recv(void *ctx, unsigned char *buf, size_t len)
{
	struct kp_tls *t = ctx;
	ssize_t n;

	for (;;) {
		n = recv(t->fd, buf, len, 0);
		if (n >= 0)
			return (int)n;      /* 0: end of stream, mbedTLS reports CONN_EOF */
		if (errno == EINTR)
			continue;
		if (errno == EAGAIN || errno == EWOULDBLOCK)
			return MBEDTLS_ERR_SSL_WANT_READ;
		t->sys_errno = errno;
		if (errno == ECONNRESET)
			return MBEDTLS_ERR_NET_CONN_RESET;
		return MBEDTLS_ERR_NET_RECV_FAILED;
	}
}

static void conn_free(struct kp_tls *t)
{
	if (t == NULL)
		return;
	if (t->fd >= 0)
		close(t->fd);
	mbedtls_ssl_free(&t->ssl);                  /* zeroizes keys and record buffers */
	mbedtls_platform_zeroize(t, sizeof(*t));
	free(t);
}

/* Errors of mbedtls_ssl_read/write after the handshake. */
static int io_error(int ret)
{
	switch (ret) {
	case 0:                                     /* read: end of stream */
	case MBEDTLS_ERR_SSL_PEER_CLOSE_NOTIFY:
	case MBEDTLS_ERR_SSL_CONN_EOF:
	case MBEDTLS_ERR_NET_CONN_RESET:
	case MBEDTLS_ERR_SSL_FATAL_ALERT_MESSAGE:   /* the peer gave up on the connection */
		return KP_TLS_E_CLOSED;
	case MBEDTLS_ERR_SSL_ALLOC_FAILED:
		return KP_TLS_E_NOMEM;
	default:
		return KP_TLS_E_IO;
	}
}

/* Errors of mbedtls_ssl_handshake, with the detail in err. */
static int handshake_error(struct kp_tls *t, int ret, char *err, size_t cap)
{
	uint32_t flags = mbedtls_ssl_get_verify_result(&t->ssl);

	/* mbedTLS sends no alert for a missing client certificate: tell the client why. */
	if (ret == MBEDTLS_ERR_SSL_NO_CLIENT_CERTIFICATE) {
		(void)mbedtls_ssl_send_alert_message(&t->ssl, MBEDTLS_SSL_ALERT_LEVEL_FATAL,
		                                     MBEDTLS_SSL_ALERT_MSG_HANDSHAKE_FAILURE);
		err_set(err, cap, "peer sent no certificate");
		return KP_TLS_E_PEER;
	}
	/* Flags are 0 until the peer's certificate was checked, -1 before the handshake. */
	if (flags != 0 && flags != (uint32_t)-1) {
		if (t->check.why[0] != '\0')
			err_set(err, cap, "peer certificate rejected: %s", t->check.why);
		else
			err_verify(err, cap, "peer certificate rejected", flags);
		return KP_TLS_E_PEER;
	}
	switch (ret) {
	case MBEDTLS_ERR_SSL_CONN_EOF:
	case MBEDTLS_ERR_NET_CONN_RESET:
		err_set(err, cap, "peer closed the connection during the handshake");
		return KP_TLS_E_CLOSED;
	case MBEDTLS_ERR_NET_SEND_FAILED:
	case MBEDTLS_ERR_NET_RECV_FAILED:
		err_set(err, cap, "socket: %s", strerror(t->sys_errno));
		return KP_TLS_E_IO;
	default:
		err_mbed(err, cap, "handshake", ret);
		return is_alloc_error(ret) ? KP_TLS_E_NOMEM : KP_TLS_E_HANDSHAKE;
	}
}

/* The subject CN of crt into out (NUL-terminated). */
static int crt_cn(const mbedtls_x509_crt *crt, char *out, size_t cap)
{
	int rc = kp_crypto_crt_cn(crt, out, cap);

	if (rc == KP_CRYPTO_OK)
		return KP_TLS_OK;
	return rc == KP_CRYPTO_E_INVAL ? KP_TLS_E_INVAL : KP_TLS_E_PEER;
}

static void check_refuse(struct peer_check *c, uint32_t *flags, uint32_t flag)
{
	*flags |= flag;
	if (c->why[0] == '\0')
		snprintf(c->why, sizeof(c->why), "certificate refused");
}

/* Runs inside the handshake for each certificate of the peer's chain, leaf at depth 0:
 * a flag set here fails the handshake with an alert, so the peer learns of it too. The
 * leaf must carry the peer's purpose (a server wants clientAuth, a client serverAuth);
 * a client also wants the configured name (exactly: mbedTLS's match is case-insensitive
 * and takes wildcards) and, when pinned, the configured backend certificate's key. */
static int verify_peer(void *p, mbedtls_x509_crt *crt, int depth, uint32_t *flags)
{
	struct peer_check *c = p;
	int server = c->role == KP_TLS_SERVER;
	char cn[KP_CRYPTO_CN_MAX + 1];

	if (depth != 0)
		return 0;
	if (kp_crypto_crt_check_profile(crt, server ? KP_CERT_TERMINAL : KP_CERT_BACKEND,
	                                server ? "client certificate" : "server certificate",
	                                c->why, sizeof(c->why)) != KP_CRYPTO_OK)
		check_refuse(c, flags, MBEDTLS_X509_BADCERT_EXT_KEY_USAGE);
	if (c->cn != NULL && (crt_cn(crt, cn, sizeof(cn)) != KP_TLS_OK || strcmp(cn, c->cn) != 0)) {
		if (c->why[0] == '\0')
			snprintf(c->why, sizeof(c->why), "server certificate's CN is not \"%s\"", c->cn);
		check_refuse(c, flags, MBEDTLS_X509_BADCERT_CN_MISMATCH);
	}
	if (c->pin != NULL && (crt->pk_raw.len != c->pin->pk_raw.len ||
	                       memcmp(crt->pk_raw.p, c->pin->pk_raw.p, crt->pk_raw.len) != 0)) {
		if (c->why[0] == '\0')
			snprintf(c->why, sizeof(c->why), "server certificate's key is not the one of "
			         "the configured backend certificate");
		check_refuse(c, flags, MBEDTLS_X509_BADCERT_NOT_TRUSTED);
	}
	return 0;
}

int kp_tls_handshake(kp_tls **out, const kp_tls_conf *conf, int fd, const char *server_cn,
                     int timeout_ms, char *err, size_t err_cap)
{
	return kp_tls_handshake_pinned(out, conf, fd, server_cn, NULL, timeout_ms, err, err_cap);
}

int kp_tls_handshake_pinned(kp_tls **out, const kp_tls_conf *conf, int fd,
                            const char *server_cn, const kp_cert *server_cert, int timeout_ms,
                            char *err, size_t err_cap)
{
	struct kp_tls *t = NULL;
	const mbedtls_x509_crt *peer;
	int64_t deadline;
	int rc = KP_TLS_OK;
	int ret, fl;

	err_set(err, err_cap, "%s", "");
	if (out != NULL)
		*out = NULL;
	/* server_cn on a server would read as a check of the client's name that never happens. */
	if (out == NULL || conf == NULL || fd < 0 || timeout_ms < 0 ||
	    (err == NULL && err_cap > 0) || (server_cn != NULL && conf->role != KP_TLS_CLIENT) ||
	    (server_cert != NULL && conf->role != KP_TLS_CLIENT) ||
	    (server_cn != NULL && (server_cn[0] == '\0' || strlen(server_cn) > KP_CRYPTO_CN_MAX))) {
		rc = KP_TLS_E_INVAL;
		goto out;
	}
	deadline = now_ms() + timeout_ms;
	t = calloc(1, sizeof(*t));
	if (t == NULL) {
		rc = KP_TLS_E_NOMEM;
		goto out;
	}
	mbedtls_ssl_init(&t->ssl);
	t->fd = fd;
	fd = -1;
	fl = fcntl(t->fd, F_GETFL);
	if (fl < 0 || fcntl(t->fd, F_SETFL, fl | O_NONBLOCK) < 0) {
		err_set(err, err_cap, "socket: %s", strerror(errno));
		rc = KP_TLS_E_IO;
		goto out;
	}
	ret = mbedtls_ssl_setup(&t->ssl, &conf->ssl);
	/* The client checks the server certificate's CN (no SAN in kippu's certificates). */
	if (ret == 0 && server_cn != NULL)
		ret = mbedtls_ssl_set_hostname(&t->ssl, server_cn);
	t->check.role = conf->role;
	t->check.cn = server_cn;
	t->check.pin = kp_crypto_cert_crt(server_cert);
	mbedtls_ssl_set_verify(&t->ssl, verify_peer, &t->check);
	if (ret != 0) {
		err_mbed(err, err_cap, "TLS set-up", ret);
		rc = is_alloc_error(ret) ? KP_TLS_E_NOMEM : KP_TLS_E_HANDSHAKE;
		goto out;
	}
	mbedtls_ssl_set_bio(&t->ssl, t, bio_send, bio_recv, NULL);

	for (;;) {
		ret = mbedtls_ssl_handshake(&t->ssl);
		if (ret == 0)
			break;
		if (ret == MBEDTLS_ERR_SSL_WANT_READ || ret == MBEDTLS_ERR_SSL_WANT_WRITE) {
			rc = wait_fd(t->fd, ret == MBEDTLS_ERR_SSL_WANT_WRITE, deadline);
			if (rc == KP_TLS_E_TIMEOUT)
				err_set(err, err_cap, "handshake not done after %d ms", timeout_ms);
			else if (rc != KP_TLS_OK)
				err_set(err, err_cap, "poll: %s", strerror(errno));
			if (rc != KP_TLS_OK)
				goto out;
			continue;
		}
		rc = handshake_error(t, ret, err, err_cap);
		goto out;
	}

	/* VERIFY_REQUIRED already guarantees both; checked again because the layers above
	 * (the terminal id from the CN) rest on them. */
	peer = mbedtls_ssl_get_peer_cert(&t->ssl);
	if (peer == NULL || mbedtls_ssl_get_verify_result(&t->ssl) != 0) {
		err_set(err, err_cap, "no verified peer certificate");
		rc = KP_TLS_E_PEER;
		goto out;
	}
	t->established = 1;
	*out = t;
	t = NULL;
out:
	conn_free(t);
	if (fd >= 0)
		close(fd);
	return rc;
}

int kp_tls_peer_cn(const kp_tls *t, char *out, size_t cap)
{
	const mbedtls_x509_crt *peer;

	if (t == NULL || out == NULL || cap == 0)
		return KP_TLS_E_INVAL;
	out[0] = '\0';
	peer = mbedtls_ssl_get_peer_cert(&t->ssl);
	if (peer == NULL)
		return KP_TLS_E_PEER;
	return crt_cn(peer, out, cap);
}

int kp_tls_peer_cert_der(const kp_tls *t, const uint8_t **der, size_t *len)
{
	const mbedtls_x509_crt *peer;

	if (t == NULL || der == NULL || len == NULL)
		return KP_TLS_E_INVAL;
	*der = NULL;
	*len = 0;
	peer = mbedtls_ssl_get_peer_cert(&t->ssl);
	if (peer == NULL || peer->raw.len == 0)
		return KP_TLS_E_PEER;
	*der = peer->raw.p;
	*len = peer->raw.len;
	return KP_TLS_OK;
}

/* kp_tls_write_all (wbuf to send) and kp_tls_read_exact (rbuf to fill, wbuf NULL): len
 * bytes through the record layer within the deadline, and which errors stick. */
static int transfer(struct kp_tls *t, const unsigned char *wbuf, unsigned char *rbuf,
                    size_t len, int timeout_ms)
{
	int64_t deadline;
	size_t done = 0;
	int rc = KP_TLS_OK;
	int ret;

	if (t == NULL || (wbuf == NULL && rbuf == NULL && len > 0) || timeout_ms < 0)
		return KP_TLS_E_INVAL;
	if (t->failed != 0)
		return t->failed;
	deadline = now_ms() + timeout_ms;
	while (done < len) {
		/* After WANT_*, mbedTLS wants the same data again: wbuf + done has not moved. */
		if (wbuf != NULL)
			ret = mbedtls_ssl_write(&t->ssl, wbuf + done, len - done);
		else
			ret = mbedtls_ssl_read(&t->ssl, rbuf + done, len - done);
		if (ret > 0) {
			done += (size_t)ret;
			continue;
		}
		if (ret == MBEDTLS_ERR_SSL_WANT_READ || ret == MBEDTLS_ERR_SSL_WANT_WRITE) {
			rc = wait_fd(t->fd, ret == MBEDTLS_ERR_SSL_WANT_WRITE, deadline);
			if (rc != KP_TLS_OK)
				goto out;
			continue;
		}
		/* A write that moves nothing is a socket error, a read of nothing the end. */
		rc = wbuf != NULL && ret == 0 ? KP_TLS_E_IO : io_error(ret);
		goto out;
	}
out:
	/* A write may leave a record half sent: nothing can follow it. A read timeout before
	 * the first byte leaves the stream in step (an idle wait may be retried); after part
	 * of the data was consumed the caller's framing is lost. */
	if (rc != KP_TLS_OK && (wbuf != NULL || !(rc == KP_TLS_E_TIMEOUT && done == 0)))
		t->failed = rc;
	return rc;
}

int kp_tls_write_all(kp_tls *t, const void *buf, size_t len, int timeout_ms)
{
	return transfer(t, buf, NULL, len, timeout_ms);
}

int kp_tls_read_exact(kp_tls *t, void *buf, size_t len, int timeout_ms)
{
	return transfer(t, NULL, buf, len, timeout_ms);
}

void kp_tls_close(kp_tls *t)
{
	if (t == NULL)
		return;
	/* One non-blocking try: a peer that does not read must not hold us here. */
	if (t->established)
		(void)mbedtls_ssl_close_notify(&t->ssl);
	conn_free(t);
}

/* ---- TCP ---- */

static void set_nodelay(int fd)
{
	int one = 1;

	/* Latency only: requests are small and each waits for its answer. */
	(void)setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
}

static int set_blocking(int fd, int blocking)
{
	int fl = fcntl(fd, F_GETFL);

	if (fl < 0)
		return -1;
	fl = blocking ? fl & ~O_NONBLOCK : fl | O_NONBLOCK;
	return fcntl(fd, F_SETFL, fl);
}

/* TCP addresses for host (NULL: every local address with AI_PASSIVE) and a numeric port. */
static int resolve(const char *host, const char *port, int flags, struct addrinfo **res)
{
	struct addrinfo hints;

	memset(&hints, 0, sizeof(hints));
	hints.ai_family = AF_UNSPEC;
	hints.ai_socktype = SOCK_STREAM;
	hints.ai_flags = flags | AI_NUMERICSERV;
	return getaddrinfo(host, port, &hints, res);
}

/* Connects s (non-blocking) to ai within the deadline (< 0: none). */
static int connect_one(int s, const struct addrinfo *ai, int64_t deadline)
{
	struct pollfd pfd;
	socklen_t sl = sizeof(int);
	int64_t left;
	int soerr = 0;
	int n;

	if (connect(s, ai->ai_addr, ai->ai_addrlen) == 0)
		return KP_TLS_OK;
	/* EINTR: the connection goes on in the background, as with EINPROGRESS. */
	if (errno != EINPROGRESS && errno != EINTR)
		return KP_TLS_E_NET;
	for (;;) {
		left = deadline < 0 ? -1 : deadline - now_ms();
		if (deadline >= 0 && left <= 0)
			return KP_TLS_E_TIMEOUT;
		pfd.fd = s;
		pfd.events = POLLOUT;
		pfd.revents = 0;
		n = poll(&pfd, 1, left > INT_MAX ? INT_MAX : (int)left);
		if (n > 0)
			break;
		if (n < 0 && errno != EINTR)
			return KP_TLS_E_NET;
	}
	if (getsockopt(s, SOL_SOCKET, SO_ERROR, &soerr, &sl) != 0)
		return KP_TLS_E_NET;
	if (soerr != 0) {
		errno = soerr;           /* callers report it: "Connection refused" */
		return KP_TLS_E_NET;
	}
	return KP_TLS_OK;
}

int kp_tcp_connect(const char *host, const char *port, int timeout_ms, int *fd)
{
	struct addrinfo *res = NULL, *ai;
	int64_t deadline = timeout_ms < 0 ? -1 : now_ms() + timeout_ms;
	int rc = KP_TLS_E_NET;
	int s = -1;

	if (fd != NULL)
		*fd = -1;
	if (host == NULL || port == NULL || fd == NULL)
		return KP_TLS_E_INVAL;
	/* Name resolution itself is not bounded by timeout_ms (getaddrinfo cannot be). */
	if (resolve(host, port, 0, &res) != 0) {
		rc = KP_TLS_E_NET;
		goto out;
	}
	for (ai = res; ai != NULL; ai = ai->ai_next) {
		s = socket(ai->ai_family, ai->ai_socktype | SOCK_CLOEXEC | SOCK_NONBLOCK,
		           ai->ai_protocol);
		if (s < 0)
			continue;
		rc = connect_one(s, ai, deadline);
		if (rc == KP_TLS_OK)
			break;
		close(s);
		s = -1;
		if (rc == KP_TLS_E_TIMEOUT)
			goto out;               /* the time is spent for the other addresses too */
	}
	if (s < 0) {
		rc = KP_TLS_E_NET;
		goto out;
	}
	/* Callers may use the socket directly; kp_tls_handshake makes it non-blocking again. */
	if (set_blocking(s, 1) != 0) {
		rc = KP_TLS_E_IO;
		goto out;
	}
	set_nodelay(s);
	*fd = s;
	s = -1;
	rc = KP_TLS_OK;
out:
	if (s >= 0)
		close(s);
	if (res != NULL)
		freeaddrinfo(res);
	return rc;
}

int kp_tcp_listen(const char *host, const char *port, int *fd, int *bound_port)
{
	struct addrinfo *res = NULL, *ai;
	struct sockaddr_storage ss;
	socklen_t sl = sizeof(ss);
	int rc = KP_TLS_E_NET;
	int one = 1;
	int s = -1;

	if (fd != NULL)
		*fd = -1;
	if (bound_port != NULL)
		*bound_port = 0;
	if (port == NULL || fd == NULL)
		return KP_TLS_E_INVAL;
	if (resolve(host, port, AI_PASSIVE, &res) != 0)      /* host NULL: every address */
		goto out;
	for (ai = res; ai != NULL; ai = ai->ai_next) {
		/* Non-blocking so that kp_tcp_accept never blocks when a connection it was woken
		 * for is gone (aborted, or taken by another thread) before accept. */
		s = socket(ai->ai_family, ai->ai_socktype | SOCK_CLOEXEC | SOCK_NONBLOCK,
		           ai->ai_protocol);
		if (s < 0)
			continue;
		/* A restarted backend must not wait for TIME_WAIT of its old connections. */
		if (setsockopt(s, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one)) == 0 &&
		    bind(s, ai->ai_addr, ai->ai_addrlen) == 0 && listen(s, SOMAXCONN) == 0)
			break;
		close(s);
		s = -1;
	}
	if (s < 0)
		goto out;
	if (bound_port != NULL) {
		if (getsockname(s, (struct sockaddr *)&ss, &sl) != 0)
			goto out;
		if (ss.ss_family == AF_INET)
			*bound_port = ntohs(((struct sockaddr_in *)&ss)->sin_port);
		else if (ss.ss_family == AF_INET6)
			*bound_port = ntohs(((struct sockaddr_in6 *)&ss)->sin6_port);
	}
	*fd = s;
	s = -1;
	rc = KP_TLS_OK;
out:
	if (s >= 0)
		close(s);
	if (res != NULL)
		freeaddrinfo(res);
	return rc;
}

int kp_tcp_accept(int listen_fd, int timeout_ms, int *fd)
{
	int64_t deadline = timeout_ms < 0 ? -1 : now_ms() + timeout_ms;
	struct pollfd pfd;
	int64_t left;
	int n, s;

	if (fd != NULL)
		*fd = -1;
	if (listen_fd < 0 || fd == NULL)
		return KP_TLS_E_INVAL;
	for (;;) {
		left = deadline < 0 ? -1 : deadline - now_ms();
		if (deadline >= 0 && left < 0)
			return KP_TLS_E_TIMEOUT;
		pfd.fd = listen_fd;
		pfd.events = POLLIN;
		pfd.revents = 0;
		n = poll(&pfd, 1, left > INT_MAX ? INT_MAX : (int)left);
		if (n < 0 && errno != EINTR)
			return KP_TLS_E_IO;
		if (n == 0 && deadline >= 0)
			return KP_TLS_E_TIMEOUT;
		if (n <= 0)
			continue;
		s = accept4(listen_fd, NULL, NULL, SOCK_CLOEXEC);
		if (s >= 0)
			break;
		/* Gone before we took it, or taken by another thread: wait for the next one. */
		if (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR ||
		    errno == ECONNABORTED || errno == EPROTO)
			continue;
		return KP_TLS_E_IO;
	}
	set_nodelay(s);
	*fd = s;
	return KP_TLS_OK;
}
