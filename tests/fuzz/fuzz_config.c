/* SPDX-License-Identifier: Apache-2.0 */
/* The terminal's configuration file (kp_terminal_cfg_load, README "Configuration") and a
 * place file's line (kp_place_parse). */
#include "fuzzutil.h"
#include "kp_app.h"
#include "kp_settings.h"

#include <stdlib.h>
#include <string.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct kp_terminal_cfg cfg;
	char path[512], err[512], route[KP_ID_MAX + 1], stop[KP_ID_MAX + 1];
	char *line;

	fuzz_write("terminal.conf", data, size, path, sizeof(path));
	kp_terminal_cfg_defaults(&cfg);
	(void)kp_terminal_cfg_load(&cfg, path, err, sizeof(err));
	line = malloc(size + 1);
	if (line == NULL)
		return 0;
	memcpy(line, data, size);
	line[size] = '\0';
	(void)kp_place_parse(line, route, stop);
	free(line);
	return 0;
}
