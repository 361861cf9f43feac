/* SPDX-License-Identifier: Apache-2.0 */
/* The texts the console and the event stream show in Japanese and English: reasons from
 * the one table (card/reasons.def), with a text for the result when a reason has none;
 * rider categories, the driver's override reasons. Calls nothing else of the console. */
#include <string.h>

#include "kp_console.h"

static const struct {
	const char *code, *ja, *en;
} category_texts[] = {
	{ "",         "大人",     "adult" },
	{ "adult",    "大人",     "adult" },
	{ "child",    "小児",     "child" },
	{ "senior",   "高齢者",   "senior" },
	{ "resident", "住民",     "resident" },
	{ "student",  "学生",     "student" },
	{ "disabled", "障がい者", "disabled" },
};

const char *kp_console_reason_text(const char *reason, const char *result, int ja)
{
	const char *en;

	/* A reason with its Japanese text has both. */
	if (kp_reason_text(reason, 1) != NULL)
		return kp_reason_text(reason, ja);
	/* A reason the fare engine learnt after the Japanese texts: its English text if it
	 * has one, else a text for the result alone. */
	en = kp_reason_text(reason, 0);
	if (result != NULL && strcmp(result, "accepted") == 0)
		return ja ? kp_reason_text(kp_reason_code(KP_R_OK), 1) : en != NULL ? en : "OK";
	if (result != NULL && strcmp(result, "already") == 0)
		return kp_reason_text(kp_reason_code(KP_R_ALREADY), ja);
	/* Only a refusal reads as one: a request, an inspection or a driver's note does not. */
	if (result != NULL && strcmp(result, "refused") != 0)
		return ja ? "記録しました" : en != NULL ? en : "Recorded";
	if (ja)
		return "ご乗車いただけません（運転士へ）";
	return en != NULL ? en : "Refused: please see the driver";
}

const char *kp_console_category_text(const char *category, int ja)
{
	if (category == NULL)
		category = "";
	for (size_t i = 0; i < sizeof(category_texts) / sizeof(category_texts[0]); i++) {
		if (strcmp(category_texts[i].code, category) == 0)
			return ja ? category_texts[i].ja : category_texts[i].en;
	}
	return category;                 /* an operator's own category id */
}

const char *kp_driver_override_reason(int digit)
{
	static const enum kp_reason reasons[KP_DRIVER_OVERRIDES] = {
		KP_R_OVERRIDE_UNREADABLE, KP_R_OVERRIDE_PAPER_PASS, KP_R_OVERRIDE_READER_DOWN,
		KP_R_OVERRIDE_DISCRETION,
	};

	if (digit < 1 || digit > KP_DRIVER_OVERRIDES)
		return NULL;
	return kp_reason_code(reasons[digit - 1]);
}
