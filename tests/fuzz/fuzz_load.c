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
	kp_store *s = NULL;
	char path[512], err[512];
	size_t n = 0;

	fuzz_write("load.txt", data, size, path, sizeof(path));
	if (kp_store_open(&s, ":memory:") != 0)
		__builtin_trap();
	(void)kp_load_file(s, path, key, err, sizeof(err), &n);
	kp_store_close(s);
	return 0;
}
