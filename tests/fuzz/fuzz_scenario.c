/* SPDX-License-Identifier: Apache-2.0 */
/* A mock reader's scenario file (hal/SCENARIO.md) through kp_scenario_parse, as
 * kippu-terminal --reader mock:FILE and kippu-pn532-emu read it. */
#include "fuzzutil.h"
#include "mock_scenario.h"

#include <stdio.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct kp_scenario *s = NULL;
	char path[512], err[256];
	FILE *f;

	fuzz_write("scenario.txt", data, size, path, sizeof(path));
	f = fopen(path, "r");
	if (f == NULL)
		return 0;
	if (kp_scenario_parse(&s, path, f, err, sizeof(err)) == 0) {
		(void)kp_scenario_find_card(s, "alice");
		kp_scenario_free(s);
	}
	fclose(f);
	return 0;
}
