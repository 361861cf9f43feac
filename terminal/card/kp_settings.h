/* SPDX-License-Identifier: Apache-2.0 */
/* kippu terminal: the terminal's settings, one plain struct that every terminal folder reads
 * (the tap, the fare engine's service days, the console). terminal/app/config.c fills it
 * from the configuration file and the command line (kp_app.h). */
#ifndef KP_SETTINGS_H
#define KP_SETTINGS_H

#include <stdint.h>
#include "kp_record.h"

#define KP_BACKENDS_MAX 8                /* addresses in `backend` */

struct kp_terminal_cfg {
	char terminal_id[KP_ID_MAX + 1];
	char operator_id[KP_ID_MAX + 1];
	char route[KP_ID_MAX + 1];
	char stop[KP_ID_MAX + 1];
	char fare_feed[KP_ID_MAX + 1];   /* imported GTFS feed that prices stored value ("" none) */
	char reader[512];
	char hmi[512];
	char database[512];
	char key_path[512];
	char cert_path[512];
	char token_key_path[512];
	int64_t double_tap_window_ms;
	int poll_timeout_ms;             /* wait_card timeout per loop turn */
	int card_timeout_ms;             /* per frame */
	int checkpoint_idle_ms;          /* idle time before a WAL checkpoint */
	int sign_pool;                   /* entries of the signing pool (0: none) */
	int use_syslog;
	struct kp_backend_addr {         /* backend = HOST:PORT[, HOST:PORT ...] */
		char host[128];
		char port[16];
	} backends[KP_BACKENDS_MAX];     /* tried in turn (the terminal fails over) */
	int n_backends;                  /* 0 = no backend configured */
	char backend_ca[512];            /* the operator CA both ends pin */
	char backend_cert[512];          /* the backend's certificate: verifies bundles */
	char backend_name[KP_ID_MAX + 1];/* CN the backend's TLS certificate must carry */
	int sync_interval_s;
	int sync_timeout_ms;
	char jpki_ca[1024];              /* JPKI authentication CA certificate(s), comma-separated */
	int reenrol_warn_days;           /* warn riders this many days before a category ends */
	int utc_offset_s;                /* local time = UTC + this (default +09:00, JST) */
	int service_day_end_s;           /* local time a service day ends (default 04:00) */
	int fare_distance;               /* fare_mode = distance: tap-on/tap-off, charged at
	                                  * tap-off by boarding and alighting stop; 0 = flat */
	enum kp_gate { KP_GATE_BOTH = 0, KP_GATE_ENTRY, KP_GATE_EXIT } gate;
	char place_file[512];            /* "" or a file holding "ROUTE STOP": where a moving
	                                  * vehicle is now (written by its onboard system) */
	                                 /* gate = both (a bus reader: a tap with an open
	                                  * journey on this operator is its tap-off), entry, exit */
	char metrics_file[512];          /* "" or the node_exporter textfile the terminal writes */
};

#endif
