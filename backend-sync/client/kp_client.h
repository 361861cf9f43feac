/* SPDX-License-Identifier: Apache-2.0 */
/* kippu sync, client/: the exchange a terminal runs with the backend (PROTOCOL.md
 * section 4). */
#ifndef KP_CLIENT_H
#define KP_CLIENT_H

#include "kp_proto.h"
#include "kp_bundle.h"

/* ---- the client a terminal runs ---- */


struct kp_sync_stats {
	uint64_t sent, acked, bundle_version;
	int bundle_applied;
	int delta_applied;               /* what was applied was a delta (PROTOCOL.md 5.4) */
	int delta_refused;               /* deltas whose base was not our version (asked again) */
	char refused_reason[128];
	uint64_t refused_seq;
	/* The backend held another journal under this id and the store started a new one
	 * (kp_sync_run then ran the exchange again under it): what was found, the new id. */
	int journal_started;
	char journal_note[320];
	uint8_t journal[KP_JOURNAL_ID_LEN];
};

/* One exchange: connect, hello, upload what the backend lacks in batches, fetch and apply a
 * newer bundle, bye. err gets a readable reason on failure. */
int kp_sync_run(const kp_tls_conf *conf, const char *host, const char *port,
                const char *server_cn, const char *terminal_id, const kp_cert *backend_cert,
                const struct kp_sync_source *src, int timeout_ms, struct kp_sync_stats *st,
                char *err, size_t err_cap);

/* Added: the exchange of kp_sync_run (hello .. bye) over a connection that is already
 * established; kp_sync_run is connect + TLS handshake + this + close. Returns KP_SYNC_OK,
 * a KP_SYNC_E_* code, a transport code passed through from io (KP_TLS_E_* over TLS), or
 * what a source callback returned. */
int kp_sync_exchange(const struct kp_sync_io *io, const char *terminal_id,
                     const kp_cert *backend_cert, const struct kp_sync_source *src,
                     int timeout_ms, struct kp_sync_stats *st, char *err, size_t err_cap);

#endif
