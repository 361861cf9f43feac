/* SPDX-License-Identifier: Apache-2.0 */
/* kippu terminal, app/: reading the terminal's settings (terminal/app/config.c). */
#ifndef KP_APP_H
#define KP_APP_H

#include "kp_settings.h"
#include <stddef.h>
#include <stdint.h>

void kp_terminal_cfg_defaults(struct kp_terminal_cfg *cfg);
/* One setting by its file key (the command line uses this too). */
int  kp_terminal_cfg_set(struct kp_terminal_cfg *cfg, const char *key, const char *value,
                         char *err, size_t err_cap);
/* One key of the configuration file (the console's included), for documentation: the
 * default as the file would write it (NULL: none), a range (integers) or the choices. */
struct kp_cfg_key_info {
	const char *name, *def, *doc;
	int has_range;
	int64_t min, max;
	const char *const *choices;      /* NULL-ended, or NULL */
};
/* The i-th key: 0, or -1 past the last. */
int  kp_terminal_cfg_key_info(size_t i, struct kp_cfg_key_info *out);
/* A place_file's line: "ROUTE STOP" (ids as the `route` and `stop` settings take);
 * KP_E_CONFIG for anything else. */
int  kp_place_parse(const char *line, char route[KP_ID_MAX + 1], char stop[KP_ID_MAX + 1]);
/* key = value lines; err gets "FILE:LINE: message". */
int  kp_terminal_cfg_load(struct kp_terminal_cfg *cfg, const char *path, char *err, size_t err_cap);

/* ---- metrics: a node_exporter textfile (terminal/app/metrics.c, README "Monitoring") ---- */
/* A decided tap (result, reason code) and how long it took. */
void kp_tmetrics_tap(const char *result, const char *reason, double seconds);
/* The journal records not yet acknowledged, and whether the reader is up. */
void kp_tmetrics_state(uint64_t unsent, int reader_online);
/* A sync attempt at now_ms (Unix ms), ok or not, and what is unsent after it. */
void kp_tmetrics_sync(int ok, uint64_t unsent, int64_t now_ms);
/* Writes path (path.tmp, then rename) when force, or when something changed and 2 s have
 * passed since the last write; "" or NULL path: nothing. 0 written, 1 nothing to do (yet),
 * or -1 with err said. */
int  kp_tmetrics_write(const char *path, const char *db_path, int force, char *err,
                       size_t err_cap);

#endif
