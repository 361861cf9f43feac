/* SPDX-License-Identifier: Apache-2.0 */
/* kippu terminal, app/: reading the terminal's settings (terminal/app/config.c). */
#ifndef KP_APP_H
#define KP_APP_H

#include "kp_settings.h"
#include <stddef.h>

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

#endif
