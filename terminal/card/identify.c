/* SPDX-License-Identifier: Apache-2.0 */
/* Card identification: one place that knows which frames tell a card apart and how its
 * token is derived. The tap, the console, link mode and --inspect all come here. */
#include <stdio.h>
#include <string.h>

#include "kp_card.h"

/* What a failed My Number card read means for the rider. */
static enum kp_reason jpki_reason(int rc)
{
	if (rc == KP_HAL_E_TIMEOUT || rc == KP_HAL_E_NOCARD)
		return KP_R_CARD_REMOVED;
	if (rc == KP_E_CERT_EXPIRED)
		return KP_R_CARD_EXPIRED;
	if (rc == KP_E_CERT_NOT_YET)
		return KP_R_CARD_NOT_YET_VALID;
	if (rc == KP_E_CERT)
		return KP_R_CARD_INVALID;
	return KP_R_CARD_ERROR;
}

static int identify_mynumber(struct kp_reader *r, const struct kp_card_id_cfg *cfg,
                             struct kp_card_id *out)
{
	struct kp_jpki j;
	char err[256] = "";                 /* stays empty when SELECT itself fails */
	int rc;

	kp_jpki_init(&j, r, cfg->timeout_ms);
	rc = kp_jpki_select_app(&j);
	if (rc == KP_E_SW_NOTFOUND || rc == KP_E_SW_OTHER || rc == KP_E_SW_LENGTH ||
	    cfg->n_jpki_cas == 0) {
		/* A Type B card without JPKI (or a terminal not set up for it): one quiet
		 * refusal, not an error storm. */
		out->reason = KP_R_UNSUPPORTED_CARD;
		return rc != KP_OK ? rc : KP_E_CONFIG;
	}
	out->kind = KP_CARD_MYNUMBER;
	if (rc == KP_OK)
		rc = kp_jpki_identify(&j, cfg->jpki_cas, cfg->n_jpki_cas, cfg->now_ms, cfg->token_key,
		                      out->token, (cfg->flags & KP_CARD_ID_CERT) ? &out->cert : NULL,
		                      err, sizeof(err));
	if (rc != KP_OK) {
		out->reason = jpki_reason(rc);
		snprintf(out->detail, sizeof(out->detail), "%s", err[0] ? err : kp_strerror(rc));
		return rc;
	}
	out->has_token = 1;
	return KP_OK;
}

static int identify_transit(struct kp_reader *r, const struct kp_card_info *info,
                            const struct kp_card_id_cfg *cfg, struct kp_card_id *out)
{
	struct kp_felica f;
	int rc;

	out->kind = KP_CARD_TRANSIT_IC;
	rc = kp_token_derive(cfg->token_key, "felica", info->u.felica.idm, 8, out->token);
	if (rc != 0) {
		out->reason = KP_R_CARD_ERROR;
		return rc;
	}
	out->has_token = 1;
	if (!(cfg->flags & KP_CARD_ID_BALANCE))
		return KP_OK;
	kp_felica_init(&f, r, info, cfg->timeout_ms);
	rc = kp_transit_read_balance(&f, &out->balance);
	if (rc == KP_HAL_E_TIMEOUT || rc == KP_HAL_E_NOCARD) {
		out->reason = KP_R_CARD_REMOVED;
		return rc;
	}
	if (rc != KP_OK) {
		out->reason = KP_R_CARD_ERROR;
		return rc;
	}
	out->has_balance = 1;
	return KP_OK;
}

int kp_card_identify(struct kp_reader *r, const struct kp_card_info *info,
                     const struct kp_card_id_cfg *cfg, struct kp_card_id *out)
{
	memset(out, 0, sizeof(*out));
	out->reason = KP_R_OK;
	if (r == NULL || info == NULL || cfg == NULL || cfg->token_key == NULL) {
		out->reason = KP_R_CARD_ERROR;
		return KP_E_INVAL;
	}
	if (info->tech == KP_TECH_ISO14443B)
		return identify_mynumber(r, cfg, out);
	if (info->tech == KP_TECH_FELICA)
		return identify_transit(r, info, cfg, out);
	out->reason = KP_R_UNSUPPORTED_CARD;
	return KP_E_INVAL;
}

void kp_card_id_wipe(struct kp_card_id *id)
{
	if (id == NULL)
		return;
	kp_cert_free(id->cert);
	id->cert = NULL;
	kp_zeroize(id->token, sizeof(id->token));
}
