/* SPDX-License-Identifier: Apache-2.0 */
/* The table of reasons (reasons.def) and its look-ups. */
#include <string.h>

#include "kp_card.h"

static const struct {
	const char *code, *en, *ja;
} reasons[KP_R_COUNT] = {
#define KP_REASON(id, code, en, ja) [KP_R_##id] = { code, en, ja },
#include "reasons.def"
#undef KP_REASON
};

const char *kp_reason_code(enum kp_reason r)
{
	if ((unsigned)r >= KP_R_COUNT)
		return "";
	return reasons[r].code;
}

const char *kp_reason_text(const char *code, int ja)
{
	if (code == NULL)
		return NULL;
	for (size_t i = 0; i < KP_R_COUNT; i++) {
		if (strcmp(reasons[i].code, code) == 0)
			return ja ? reasons[i].ja : reasons[i].en;
	}
	return NULL;
}
