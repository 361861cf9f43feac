/* SPDX-License-Identifier: Apache-2.0 */
/* A load file (operators, products, entitlements, denylist: README "Load files") through
 * kp_load_file into a fresh in-memory store. Its fare lines name feed folders relative to
 * the file: the file sits in the target's temporary folder, which holds none. */
#include "fuzzutil.h"
#include "kp_store.h"
#include "kp_tools.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	static const uint8_t key[KP_TOKEN_KEY_LEN] = { 1, 2, 3 };
	char path[512], err[512];
	size_t n = 0;

	fuzz_write("load.txt", data, size, path, sizeof(path));
	(void)kp_load_file(fuzz_fresh_store(), path, key, err, sizeof(err), &n);
	return 0;
}
