/* SPDX-License-Identifier: Apache-2.0 */
/* kippu TLS: the one TLS set-up both ends share, behind a small wrapper so that only
 * crypto/ includes mbedTLS. TLS 1.2 only, ECDHE-ECDSA-AES128-GCM-SHA256 only, mutual
 * authentication required on both ends against the pinned operator CA, no renegotiation,
 * no compression, no session tickets. Every read and write has a deadline. */
#ifndef KP_TLS_H
#define KP_TLS_H

#include <stddef.h>
#include <stdint.h>
#include "kp_crypto.h"

enum kp_tls_rc {
	KP_TLS_OK          = 0,
	KP_TLS_E_INVAL     = -0x281,
	KP_TLS_E_NOMEM     = -0x282,
	KP_TLS_E_CONFIG    = -0x283, /* CA, certificate or key file unusable */
	KP_TLS_E_HANDSHAKE = -0x284, /* handshake failed (detail in err) */
	KP_TLS_E_PEER      = -0x285, /* peer certificate missing, not from the CA, or wrong name */
	KP_TLS_E_TIMEOUT   = -0x286, /* deadline passed */
	KP_TLS_E_CLOSED    = -0x287, /* peer closed the connection */
	KP_TLS_E_IO        = -0x288, /* socket error */
	KP_TLS_E_NET       = -0x289, /* cannot resolve, connect, bind or listen */
};
const char *kp_tls_strerror(int rc);

enum kp_tls_role { KP_TLS_SERVER = 1, KP_TLS_CLIENT = 2 };

typedef struct kp_tls_conf kp_tls_conf;   /* shared by many connections, read-only after new */
typedef struct kp_tls kp_tls;             /* one connection */

/* ca_path: the operator CA (PEM) that the peer's certificate must chain to.
 * cert_path/key_path: our own certificate (PEM) and ECDSA P-256 key. */
int  kp_tls_conf_new(kp_tls_conf **out, enum kp_tls_role role, const char *ca_path,
                     const char *cert_path, const char *key_path, char *err, size_t err_cap);
void kp_tls_conf_free(kp_tls_conf *conf);

/* Runs the handshake on a connected socket; the connection owns fd from here on (also on
 * failure: fd is closed). A client checks that the server certificate's CN equals
 * server_cn (NULL: any CN from the CA). */
int  kp_tls_handshake(kp_tls **out, const kp_tls_conf *conf, int fd, const char *server_cn,
                      int timeout_ms, char *err, size_t err_cap);
/* Added: the same, and a client also requires the server certificate's public key to be
 * server_cert's (the backend certificate the terminal was configured with), so a
 * certificate the CA issued to someone else cannot stand in for the backend. server_cert
 * NULL: no pin; with a server conf: KP_TLS_E_INVAL. Both functions, both roles: the peer's
 * certificate must carry its side's extendedKeyUsage (a server wants clientAuth, a client
 * serverAuth; kp_cert_check_profile), else KP_TLS_E_PEER and err says which check failed
 * ("peer certificate rejected: server certificate has no extendedKeyUsage ..."). */
int  kp_tls_handshake_pinned(kp_tls **out, const kp_tls_conf *conf, int fd,
                             const char *server_cn, const kp_cert *server_cert, int timeout_ms,
                             char *err, size_t err_cap);
/* The peer certificate's subject CN, and its DER bytes (pointer valid until close). */
int  kp_tls_peer_cn(const kp_tls *t, char *out, size_t cap);
int  kp_tls_peer_cert_der(const kp_tls *t, const uint8_t **der, size_t *len);
/* Writes all of buf / reads exactly len bytes, or fails; timeout_ms bounds the whole call. */
int  kp_tls_write_all(kp_tls *t, const void *buf, size_t len, int timeout_ms);
int  kp_tls_read_exact(kp_tls *t, void *buf, size_t len, int timeout_ms);
/* Sends close_notify (best effort), closes the socket and frees. Accepts NULL. */
void kp_tls_close(kp_tls *t);

/* TCP helpers (the TLS layer never opens sockets itself). host may be a name or an
 * address; port a number. kp_tcp_listen binds (port "0": any free port, reported in
 * bound_port) and listens; kp_tcp_accept waits up to timeout_ms (-1 forever). */
int  kp_tcp_connect(const char *host, const char *port, int timeout_ms, int *fd);
int  kp_tcp_listen(const char *host, const char *port, int *fd, int *bound_port);
int  kp_tcp_accept(int listen_fd, int timeout_ms, int *fd);

/* Added notes on the behaviour of the functions above (no declaration changed):
 * - kp_tls_handshake, kp_tls_write_all and kp_tls_read_exact need timeout_ms >= 0
 *   (KP_TLS_E_INVAL otherwise): TLS I/O has no "forever". A server_cn passed with a server
 *   conf is KP_TLS_E_INVAL (it would look like a check of the client's name).
 *   kp_tcp_connect takes -1 for no deadline of its own; name resolution is never bounded.
 * - After an error from kp_tls_write_all, or from kp_tls_read_exact once part of the data
 *   was read, the connection returns that error again at once: close it. A read timeout
 *   before the first byte leaves the connection usable (an idle wait may be retried).
 *   A fatal alert from the peer reads as KP_TLS_E_CLOSED.
 * - Threads: one kp_tls_conf may serve any number of threads at once (its random
 *   generator is locked) and must outlive its connections; a kp_tls is used by one
 *   thread at a time.
 * - kp_tls_conf_new: the CA file holds exactly one CA certificate; our certificate must be
 *   issued by it, valid now and match the key (else KP_TLS_E_CONFIG, detail in err). A
 *   random generator that cannot be seeded is also KP_TLS_E_CONFIG.
 * - kp_tcp_listen: host NULL listens on every address; the socket is non-blocking (so
 *   several threads may kp_tcp_accept on it) and close-on-exec. Sockets from
 *   kp_tcp_connect and kp_tcp_accept are blocking, close-on-exec and TCP_NODELAY. */

#endif
