/* SPDX-License-Identifier: Apache-2.0 */
/* kippu-backend --metrics-listen: GET /metrics over plain HTTP (libmicrohttpd, one
 * internal thread), apart from the terminals' TLS port. Other paths get 404, other
 * methods 405. Only kippu-backend's main links this file (and libmicrohttpd). */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <netdb.h>
#include <sys/socket.h>

#include <microhttpd.h>

#include "kp_backend.h"

struct kp_metrics_http {
	struct MHD_Daemon *d;
	char db[512];
	int port;
};

static enum MHD_Result reply(struct MHD_Connection *c, unsigned int status, const char *type,
                             char *body, size_t len, enum MHD_ResponseMemoryMode mode)
{
	struct MHD_Response *r = MHD_create_response_from_buffer(len, body, mode);
	enum MHD_Result rc;

	if (r == NULL)
		return MHD_NO;
	MHD_add_response_header(r, MHD_HTTP_HEADER_CONTENT_TYPE, type);
	if (status == MHD_HTTP_METHOD_NOT_ALLOWED)
		MHD_add_response_header(r, MHD_HTTP_HEADER_ALLOW, "GET, HEAD");
	rc = MHD_queue_response(c, status, r);
	MHD_destroy_response(r);
	return rc;
}

static enum MHD_Result on_request(void *cls, struct MHD_Connection *c, const char *url,
                                  const char *method, const char *version,
                                  const char *upload_data, size_t *upload_size, void **con_cls)
{
	static const char text[] = "text/plain; charset=utf-8";
	struct kp_metrics_http *h = cls;
	char *body;
	size_t len = 0;

	if (strcmp(method, "GET") != 0 && strcmp(method, "HEAD") != 0)
		return reply(c, MHD_HTTP_METHOD_NOT_ALLOWED, text, "method not allowed: GET only\n",
		             29, MHD_RESPMEM_PERSISTENT);
	if (strcmp(url, "/metrics") != 0)
		return reply(c, MHD_HTTP_NOT_FOUND, text, "not found: the metrics are at /metrics\n",
		             39, MHD_RESPMEM_PERSISTENT);
	body = kp_metrics_render(h->db, &len);
	if (body == NULL)
		return reply(c, MHD_HTTP_INTERNAL_SERVER_ERROR, text, "out of memory\n", 14,
		             MHD_RESPMEM_PERSISTENT);
	return reply(c, MHD_HTTP_OK, "text/plain; version=0.0.4; charset=utf-8", body, len,
	             MHD_RESPMEM_MUST_FREE);
}

int kp_metrics_http_start(struct kp_metrics_http **out, const char *host, const char *port,
                          const char *db, char *err, size_t err_cap)
{
	struct kp_metrics_http *h = calloc(1, sizeof(*h));
	struct addrinfo hints, *ai = NULL;
	const union MHD_DaemonInfo *info;
	int gai;

	*out = NULL;
	if (h == NULL) {
		snprintf(err, err_cap, "out of memory");
		return KP_BE_E_NOMEM;
	}
	snprintf(h->db, sizeof(h->db), "%s", db);
	memset(&hints, 0, sizeof(hints));
	hints.ai_family = AF_UNSPEC;
	hints.ai_socktype = SOCK_STREAM;
	hints.ai_flags = AI_PASSIVE | AI_NUMERICSERV;
	gai = getaddrinfo(host, port, &hints, &ai);
	if (gai != 0) {
		snprintf(err, err_cap, "metrics listen on %s:%s: %s", host, port, gai_strerror(gai));
		free(h);
		return KP_BE_E_INVAL;
	}
	h->d = MHD_start_daemon(MHD_USE_INTERNAL_POLLING_THREAD | MHD_USE_ERROR_LOG |
	                        (ai->ai_family == AF_INET6 ? MHD_USE_IPv6 : 0), 0, NULL, NULL,
	                        on_request, h, MHD_OPTION_SOCK_ADDR, ai->ai_addr,
	                        MHD_OPTION_CONNECTION_LIMIT, 16u, MHD_OPTION_CONNECTION_TIMEOUT, 10u,
	                        MHD_OPTION_END);
	freeaddrinfo(ai);
	if (h->d == NULL) {
		snprintf(err, err_cap, "metrics listen on %s:%s: cannot bind or start (%s)", host,
		         port, strerror(errno));
		free(h);
		return KP_BE_E_INVAL;
	}
	info = MHD_get_daemon_info(h->d, MHD_DAEMON_INFO_BIND_PORT);
	h->port = info != NULL ? info->port : 0;
	*out = h;
	return KP_BE_OK;
}

int kp_metrics_http_port(const struct kp_metrics_http *h)
{
	return h->port;
}

void kp_metrics_http_stop(struct kp_metrics_http *h)
{
	if (h == NULL)
		return;
	MHD_stop_daemon(h->d);
	free(h);
}
