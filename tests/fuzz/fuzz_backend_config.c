/* SPDX-License-Identifier: Apache-2.0 */
/* The backend's configuration file (kippu-backend --config, README "Backend"):
 * backend-sync/backend/main.c's load_config, that file included here with its main
 * renamed, on defaults as main sets them. Its messages go to the log (stderr). */
#include "fuzzutil.h"

#define main kp_backend_main
#include "../../backend-sync/backend/main.c"
#undef main

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	static struct settings cfg;
	char path[512];

	fuzz_write("backend.conf", data, size, path, sizeof(path));
	memset(&cfg, 0, sizeof(cfg));
	kp_server_cfg_defaults(&cfg.srv);
	snprintf(cfg.srv.db, sizeof(cfg.srv.db), "backend.db");
	(void)load_config(&cfg, path);
	return 0;
}
