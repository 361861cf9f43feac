/* SPDX-License-Identifier: Apache-2.0 */
/* The tap engine: its life, the journal (one SQLite transaction holds the entitlement change
 * and the signed record; it commits before the caller may show anything), the card's
 * identity, refusals and link requests. */
#include "tap_int.h"

void tap_log(const kp_tap_engine *e, const char *fmt, ...)
{
	char msg[512];
	va_list ap;

	if (e->log == NULL)
		return;
	va_start(ap, fmt);
	vsnprintf(msg, sizeof(msg), fmt, ap);
	va_end(ap);
	e->log(e->log_arg, msg);
}

/* jpki_ca: comma-separated certificate files (PEM or DER). */
static int load_jpki_cas(kp_tap_engine *e, const char *list, char *err, size_t err_cap)
{
	char buf[sizeof(((struct kp_terminal_cfg *)0)->jpki_ca)], *save = NULL;
	int rc;

	snprintf(buf, sizeof(buf), "%s", list);
	for (char *p = strtok_r(buf, ",", &save); p != NULL; p = strtok_r(NULL, ",", &save)) {
		if (e->n_jpki_cas == KP_MAX_JPKI_CAS) {
			snprintf(err, err_cap, "jpki_ca: at most %d certificates", KP_MAX_JPKI_CAS);
			return KP_E_CONFIG;
		}
		rc = kp_cert_load(&e->jpki_cas[e->n_jpki_cas], p);
		if (rc != 0) {
			snprintf(err, err_cap, "jpki_ca %s: %s", p, kp_strerror(rc));
			return KP_E_CONFIG;
		}
		e->n_jpki_cas++;
	}
	return KP_OK;
}

int kp_tap_engine_open(kp_tap_engine **out, kp_store *s, const struct kp_terminal_cfg *cfg,
                       const kp_key *key, const uint8_t token_key[KP_TOKEN_KEY_LEN])
{
	char err[256];

	return kp_tap_engine_open_err(out, s, cfg, key, token_key, err, sizeof(err));
}

int kp_tap_engine_open_err(kp_tap_engine **out, kp_store *s, const struct kp_terminal_cfg *cfg,
                           const kp_key *key, const uint8_t token_key[KP_TOKEN_KEY_LEN],
                           char *err, size_t err_cap)
{
	kp_tap_engine *e;
	int rc;

	*out = NULL;
	if (err == NULL || err_cap == 0)
		return KP_E_INVAL;
	err[0] = '\0';
	if (s == NULL || cfg == NULL || key == NULL || token_key == NULL ||
	    cfg->terminal_id[0] == '\0' || cfg->operator_id[0] == '\0')
		return KP_E_INVAL;
	e = calloc(1, sizeof(*e));
	if (e == NULL)
		return KP_E_NOMEM;
	e->s = s;
	e->cfg = *cfg;
	e->key = key;
	memcpy(e->token_key, token_key, KP_TOKEN_KEY_LEN);
	rc = kp_store_journal_head(s, &e->seq, e->prev);
	if (rc == KP_OK)
		rc = load_jpki_cas(e, cfg->jpki_ca, err, err_cap);
	if (rc != KP_OK) {
		kp_tap_engine_close(e);
		return rc;
	}
	*out = e;
	return KP_OK;
}

void kp_tap_engine_close(kp_tap_engine *e)
{
	if (e == NULL)
		return;
	kp_zeroize(e->token_key, sizeof(e->token_key));
	for (size_t i = 0; i < e->n_jpki_cas; i++)
		kp_cert_free(e->jpki_cas[i]);
	free(e);
}

const char *kp_tap_reason_text(const char *reason)
{
	const char *text = kp_reason_text(reason, 0);

	return text != NULL ? text : "Refused";
}

/* Nanoseconds since t0 on the monotonic clock (kp_tap_engine_timing). */
static int64_t elapsed_ns(const struct timespec *t0)
{
	struct timespec t1;

	clock_gettime(CLOCK_MONOTONIC, &t1);
	return (int64_t)(t1.tv_sec - t0->tv_sec) * 1000000000 + (t1.tv_nsec - t0->tv_nsec);
}

/* Builds, signs and appends the record inside the open transaction. */
static int tap_journal_kind(kp_tap_engine *e, struct kp_record *rec, const char *kind)
{
	uint8_t *payload = NULL, *cose = NULL;
	size_t payload_len = 0, cose_len = 0;
	uint8_t hash[KP_SHA256_LEN];
	struct timespec t0;
	int rc;

	if (e->n_pending >= 2)
		return KP_E_INVAL;
	rec->seq = e->seq + 1 + (uint64_t)e->n_pending;
	snprintf(rec->terminal, sizeof(rec->terminal), "%s", e->cfg.terminal_id);
	snprintf(rec->kind, sizeof(rec->kind), "%s", kind);
	/* A record about an earlier journey (no tap-off) names where it began. */
	if (rec->operator_id[0] == '\0') {
		snprintf(rec->operator_id, sizeof(rec->operator_id), "%s", e->cfg.operator_id);
		snprintf(rec->route, sizeof(rec->route), "%s", e->cfg.route);
		snprintf(rec->stop, sizeof(rec->stop), "%s", e->cfg.stop);
	}
	memcpy(rec->prev, e->prev, KP_SHA256_LEN);
	rc = kp_record_encode(rec, &payload, &payload_len);
	if (rc != 0)
		goto out;
	rc = kp_sha256(payload, payload_len, hash);
	if (rc != 0)
		goto out;
	clock_gettime(CLOCK_MONOTONIC, &t0);
	rc = kp_cose_sign1_pooled(e->pool, e->key, e->cfg.terminal_id, payload, payload_len, &cose,
	                          &cose_len, &e->timing.pooled);
	e->timing.sign_ns = elapsed_ns(&t0);
	if (rc != 0)
		goto out;
	rc = kp_store_journal_append(e->s, rec, payload, payload_len, cose, cose_len, hash);
	if (rc == KP_OK) {
		memcpy(e->prev, hash, KP_SHA256_LEN);  /* provisional until commit, see tap_finish() */
		e->pending[e->n_pending++] = *rec;
	}
out:
	free(payload);
	free(cose);
	return rc;
}

int tap_journal(kp_tap_engine *e, struct kp_record *rec)
{
	return tap_journal_kind(e, rec, "tap");
}

void tap_set_reason(struct kp_record *rec, enum kp_reason reason)
{
	snprintf(rec->reason, sizeof(rec->reason), "%s", kp_reason_code(reason));
}

void tap_outcome_from(struct kp_tap_outcome *out, const struct kp_record *rec,
                      enum kp_tap_kind kind)
{
	memset(out, 0, sizeof(*out));
	out->kind = kind;
	snprintf(out->reason, sizeof(out->reason), "%s", rec->reason);
	snprintf(out->product, sizeof(out->product), "%s", rec->product);
	out->entitlement = rec->entitlement;
	out->rides_left = rec->has_left ? rec->left : -1;
	out->amount = rec->amount;
	out->seq = rec->seq;
	snprintf(out->category, sizeof(out->category), "%s", rec->category);
	out->linked = rec->has_via;
	out->warn_days = -1;
}

/* Commits, or rolls back and forgets the provisional journal head. */
int tap_finish(kp_tap_engine *e, int rc, const uint8_t prev_before[KP_SHA256_LEN])
{
	int n = e->n_pending;
	struct timespec t0;

	e->n_pending = 0;
	e->timing.commit_ns = 0;
	if (rc == KP_OK) {
		clock_gettime(CLOCK_MONOTONIC, &t0);
		rc = kp_store_commit(e->s);
		e->timing.commit_ns = elapsed_ns(&t0);
	}
	if (rc != KP_OK) {
		kp_store_rollback(e->s);
		memcpy(e->prev, prev_before, KP_SHA256_LEN);
		/* Re-read the head, in case the failure came from a journal that moved. */
		if (kp_store_journal_head(e->s, &e->seq, e->prev) != KP_OK)
			memcpy(e->prev, prev_before, KP_SHA256_LEN);
		tap_log(e, "tap not recorded: %s (%s)", kp_strerror(rc), kp_store_errmsg(e->s));
		return rc;
	}
	e->seq += (uint64_t)n;
	for (int i = 0; i < n && e->observer != NULL; i++)
		e->observer(e->observer_arg, &e->pending[i]);
	return KP_OK;
}

void kp_tap_engine_log(kp_tap_engine *e, void (*fn)(void *arg, const char *msg), void *arg)
{
	e->log = fn;
	e->log_arg = arg;
}

void kp_tap_engine_observe(kp_tap_engine *e, void (*fn)(void *arg, const struct kp_record *rec),
                           void *arg)
{
	e->observer = fn;
	e->observer_arg = arg;
}

int kp_tap_engine_set_place(kp_tap_engine *e, const char *operator_id, const char *route,
                            const char *stop, int utc_offset_s, const char *event)
{
	if (!kp_valid_id(operator_id) || (route != NULL && route[0] != '\0' && strlen(route) > KP_ID_MAX) ||
	    (stop != NULL && stop[0] != '\0' && strlen(stop) > KP_ID_MAX) ||
	    utc_offset_s < -14 * 3600 || utc_offset_s > 14 * 3600 ||
	    (event != NULL && event[0] != '\0' && strcmp(event, "tap") != 0 &&
	     strcmp(event, "tap_on") != 0 && strcmp(event, "tap_off") != 0))
		return KP_E_INVAL;
	snprintf(e->cfg.operator_id, sizeof(e->cfg.operator_id), "%s", operator_id);
	snprintf(e->cfg.route, sizeof(e->cfg.route), "%s", route != NULL ? route : "");
	snprintf(e->cfg.stop, sizeof(e->cfg.stop), "%s", stop != NULL ? stop : "");
	e->cfg.utc_offset_s = utc_offset_s;
	snprintf(e->force_event, sizeof(e->force_event), "%s", event != NULL ? event : "");
	return KP_OK;
}

int kp_tap_refuse(kp_tap_engine *e, const uint8_t *token, const char *reason, int64_t now_ms,
                  struct kp_tap_outcome *out)
{
	struct kp_record rec;
	int rc;

	memset(&rec, 0, sizeof(rec));
	rec.time_ms = now_ms;
	if (token != NULL) {
		rec.has_token = 1;
		memcpy(rec.token, token, KP_TOKEN_LEN);
	}
	snprintf(rec.result, sizeof(rec.result), "refused");
	snprintf(rec.reason, sizeof(rec.reason), "%s", reason);
	rc = kp_tap_journal(e, &rec, "tap");
	if (rc == KP_OK)
		tap_outcome_from(out, &rec, KP_TAP_REFUSED);
	return rc;
}

int kp_tap_journal(kp_tap_engine *e, struct kp_record *rec, const char *kind)
{
	uint8_t prev_before[KP_SHA256_LEN];
	int rc;

	if (e == NULL || rec == NULL || kind == NULL)
		return KP_E_INVAL;
	memcpy(prev_before, e->prev, KP_SHA256_LEN);
	rc = kp_store_begin(e->s);
	if (rc == KP_OK)
		rc = tap_journal_kind(e, rec, kind);
	return tap_finish(e, rc, prev_before);
}

void kp_tap_engine_set_pool(kp_tap_engine *e, kp_sign_pool *pool)
{
	e->pool = pool;
}

void kp_tap_engine_timing(const kp_tap_engine *e, struct kp_tap_timing *out)
{
	*out = e->timing;
}

const struct kp_terminal_cfg *kp_tap_engine_cfg(const kp_tap_engine *e)
{
	return &e->cfg;
}

int kp_tap_engine_identify(kp_tap_engine *e, struct kp_reader *r, const struct kp_card_info *info,
                           int64_t now_ms, unsigned flags, struct kp_card_id *out)
{
	struct kp_card_id_cfg cfg = {
		e->token_key, (const kp_cert *const *)e->jpki_cas, e->n_jpki_cas,
		e->cfg.card_timeout_ms, now_ms, flags,
	};
	int rc = kp_card_identify(r, info, &cfg, out);

	if (rc != KP_OK && out->detail[0] != '\0')
		tap_log(e, "My Number card refused: %s", out->detail);
	return rc;
}

int kp_tap_identify_mynumber(kp_tap_engine *e, struct kp_reader *r, int64_t now_ms,
                             uint8_t linkage[KP_TOKEN_LEN], kp_cert **cert, const char **reason)
{
	struct kp_card_info info;
	struct kp_card_id id;
	int rc;

	memset(&info, 0, sizeof(info));
	info.tech = KP_TECH_ISO14443B;
	*reason = NULL;
	rc = kp_tap_engine_identify(e, r, &info, now_ms, cert != NULL ? KP_CARD_ID_CERT : 0, &id);
	if (rc != KP_OK) {
		*reason = kp_reason_code(id.reason);
		return rc;
	}
	memcpy(linkage, id.token, KP_TOKEN_LEN);
	if (cert != NULL)
		*cert = id.cert;
	kp_zeroize(id.token, sizeof(id.token));
	return KP_OK;
}

int kp_tap_link(kp_tap_engine *e, const uint8_t card[KP_TOKEN_LEN],
                const uint8_t linkage[KP_TOKEN_LEN], int64_t now_ms, struct kp_tap_outcome *out)
{
	struct kp_record rec;
	int rc;

	memset(&rec, 0, sizeof(rec));
	rec.time_ms = now_ms;
	rec.has_token = 1;
	memcpy(rec.token, card, KP_TOKEN_LEN);
	rec.has_via = 1;
	memcpy(rec.via, linkage, KP_TOKEN_LEN);
	snprintf(rec.result, sizeof(rec.result), "requested");
	tap_set_reason(&rec, KP_R_LINK_REQUEST);
	rc = kp_tap_journal(e, &rec, "link");
	if (rc == KP_OK) {
		tap_outcome_from(out, &rec, KP_TAP_ACCEPTED);
		out->linked = 1;
	}
	return rc;
}

int kp_tap_card(kp_tap_engine *e, struct kp_reader *r, const struct kp_card_info *info,
                int64_t now_ms, struct kp_tap_outcome *out)
{
	struct kp_card_id id;
	int rc;

	/* Reading the balance block proves a transit IC card is still in the field; a card
	 * pulled away before the decision is refused, never charged. */
	rc = kp_tap_engine_identify(e, r, info, now_ms, KP_CARD_ID_BALANCE, &id);
	if (rc == KP_OK && id.kind == KP_CARD_MYNUMBER)
		/* A My Number card tapped directly: its linkage token is the card's token. It
		 * proves only that somebody presented these certificate bytes: the scheme's
		 * policy says what, if anything, such a tap may use. */
		return kp_tap_decide_mynumber(e, id.token, now_ms, out);
	if (rc == KP_OK)
		return kp_tap_decide(e, id.token, now_ms, out);
	if (id.kind == KP_CARD_TRANSIT_IC && !id.has_token)
		return rc;
	if (id.kind == KP_CARD_TRANSIT_IC)
		tap_log(e, "card read%s: %s", id.reason == KP_R_CARD_REMOVED ? "" : " refused",
		        kp_strerror(rc));
	return kp_tap_refuse(e, id.has_token ? id.token : NULL, kp_reason_code(id.reason), now_ms,
	                     out);
}
