/* SPDX-License-Identifier: Apache-2.0 */
/* The spy reader ("spy:CONFIG"), a test facility: it wraps a mock reader, writes one line
 * per frame to a log and can answer chosen APDUs in the card's place (hal/SCENARIO.md,
 * "The spy reader"). It wraps mock: readers only, so it can never stand between a real
 * card and the terminal. The log names no card: card sessions are numbered, reply data
 * is counted, not shown, and the data of a VERIFY (a PIN) is masked. */
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "kp_hal.h"

#define SPY_RULES     32
#define SPY_HEX_MAX   300      /* bytes of a match or a reply */
#define SPY_LINE_MAX  1024

struct spy_rule {
	uint8_t match[SPY_HEX_MAX];
	size_t match_len;
	int prefix;                      /* MATCH ended in '*' */
	uint8_t reply[SPY_HEX_MAX];
	size_t reply_len;
	int silent;                      /* the card stays silent: KP_HAL_E_TIMEOUT */
	unsigned long card;              /* only in this card session (1-based), 0 any */
	long times;                      /* matches left, -1 unlimited */
};

struct kp_spy_reader {
	struct kp_reader base;           /* first: kp_reader_* find the ops here */
	struct kp_reader *inner;
	FILE *log;
	struct spy_rule rules[SPY_RULES];
	size_t n_rules;
	unsigned long session;           /* card sessions so far (wait_card successes) */
	enum kp_card_tech tech;          /* of the card in this session */
	unsigned long session_verifies;  /* VERIFYs with a PIN in this session */
	struct kp_spy_stats st;
	char *err;                       /* while opening: the caller's buffer for what is wrong */
	size_t err_cap;
};

/* While opening: what is wrong, into the caller's buffer; KP_HAL_E_CONFIG. */
static int spy_fail(struct kp_spy_reader *s, const char *fmt, ...)
	__attribute__((format(printf, 2, 3)));
static int spy_fail(struct kp_spy_reader *s, const char *fmt, ...)
{
	va_list ap;

	if (s->err_cap > 0) {
		va_start(ap, fmt);
		vsnprintf(s->err, s->err_cap, fmt, ap);
		va_end(ap);
	}
	return KP_HAL_E_CONFIG;
}

static void spy_close(struct kp_reader *r)
{
	struct kp_spy_reader *s = (struct kp_spy_reader *)r;

	if (s == NULL)
		return;
	kp_reader_close(s->inner);
	if (s->log != NULL)
		fclose(s->log);
	free(s);
}

static int spy_hex(const char *in, uint8_t *out, size_t cap, size_t *n)
{
	size_t k = 0, len = strlen(in);

	if (len % 2 != 0 || len / 2 > cap)
		return -1;
	for (size_t i = 0; i < len; i += 2) {
		unsigned v;

		if (sscanf(in + i, "%2x", &v) != 1 || strchr("0123456789abcdefABCDEF", in[i]) == NULL ||
		    strchr("0123456789abcdefABCDEF", in[i + 1]) == NULL)
			return -1;
		out[k++] = (uint8_t)v;
	}
	*n = k;
	return 0;
}

/* "reply MATCH REPLY [card=N] [times=K]" (the word "reply" already read). */
static int spy_parse_rule(struct kp_spy_reader *s, char *rest, const char *cfg, int line)
{
	struct spy_rule *ru;
	char *tok, *save = NULL;
	int field = 0;

	if (s->n_rules == SPY_RULES) {
		return spy_fail(s, "%s:%d: at most %d reply rules", cfg, line, SPY_RULES);
	}
	ru = &s->rules[s->n_rules];
	memset(ru, 0, sizeof(*ru));
	ru->times = -1;
	for (tok = strtok_r(rest, " \t", &save); tok != NULL; tok = strtok_r(NULL, " \t", &save)) {
		char *end = NULL;

		if (field == 0) {
			size_t len = strlen(tok);

			ru->prefix = len > 0 && tok[len - 1] == '*';
			if (ru->prefix)
				tok[len - 1] = '\0';
			if (spy_hex(tok, ru->match, sizeof(ru->match), &ru->match_len) != 0 ||
			    ru->match_len == 0)
				goto bad;
		} else if (field == 1) {
			if (strcmp(tok, "silent") == 0)
				ru->silent = 1;
			else if (spy_hex(tok, ru->reply, sizeof(ru->reply), &ru->reply_len) != 0 ||
			         ru->reply_len < 2)
				goto bad;
		} else if (strncmp(tok, "card=", 5) == 0) {
			errno = 0;
			ru->card = strtoul(tok + 5, &end, 10);
			if (errno != 0 || *end != '\0' || ru->card == 0)
				goto bad;
		} else if (strncmp(tok, "times=", 6) == 0) {
			errno = 0;
			ru->times = strtol(tok + 6, &end, 10);
			if (errno != 0 || *end != '\0' || ru->times <= 0)
				goto bad;
		} else {
			goto bad;
		}
		field++;
	}
	if (field < 2)
		goto bad;
	s->n_rules++;
	return KP_HAL_OK;
bad:
	return spy_fail(s, "%s:%d: want \"reply HEX[*] HEX|silent [card=N] [times=K]\" (hex of "
	                "whole bytes; a reply of 2 bytes or more)", cfg, line);
}

static int spy_load(struct kp_spy_reader *s, const char *cfg)
{
	char line[SPY_LINE_MAX], inner[SPY_LINE_MAX] = "", dir[SPY_LINE_MAX] = "";
	const char *slash = strrchr(cfg, '/');
	FILE *fp = fopen(cfg, "r");
	int n = 0, rc = KP_HAL_OK;

	if (fp == NULL) {
		return spy_fail(s, "spy reader: %s: %s", cfg, strerror(errno));
	}
	if (slash != NULL)
		snprintf(dir, sizeof(dir), "%.*s/", (int)(slash - cfg), cfg);
	while (rc == KP_HAL_OK && fgets(line, sizeof(line), fp) != NULL) {
		char *p = line, *hash = strchr(line, '#');
		size_t len;

		n++;
		if (hash != NULL)
			*hash = '\0';
		len = strlen(p);
		while (len > 0 && (p[len - 1] == '\n' || p[len - 1] == '\r' || p[len - 1] == ' ' ||
		                   p[len - 1] == '\t'))
			p[--len] = '\0';
		while (*p == ' ' || *p == '\t')
			p++;
		if (*p == '\0')
			continue;
		if (strncmp(p, "inner ", 6) == 0) {
			p += 6;
			if (strncmp(p, "mock:", 5) != 0) {
				rc = spy_fail(s, "%s:%d: the spy wraps mock: readers only", cfg, n);
			} else if (p[5] == '/' || dir[0] == '\0') {
				snprintf(inner, sizeof(inner), "%s", p);
			} else if ((size_t)snprintf(inner, sizeof(inner), "mock:%s%s", dir, p + 5) >=
			           sizeof(inner)) {
				rc = KP_HAL_E_CONFIG;
			}
		} else if (strncmp(p, "log ", 4) == 0) {
			char path[2 * SPY_LINE_MAX];

			p += 4;
			snprintf(path, sizeof(path), "%s%s", p[0] == '/' ? "" : dir, p);
			if (s->log != NULL || (s->log = kp_hal_open_log(path)) == NULL) {
				rc = spy_fail(s, "%s:%d: log %s: %s", cfg, n, p,
				              s->log != NULL ? "given twice" : strerror(errno));
			}
		} else if (strncmp(p, "reply ", 6) == 0) {
			rc = spy_parse_rule(s, p + 6, cfg, n);
		} else {
			rc = spy_fail(s, "%s:%d: unknown line (inner, log, reply)", cfg, n);
		}
	}
	fclose(fp);
	if (rc == KP_HAL_OK && inner[0] == '\0') {
		rc = spy_fail(s, "spy reader: %s: no \"inner mock:SCENARIO\" line", cfg);
	}
	if (rc == KP_HAL_OK)
		rc = kp_reader_open_err(&s->inner, inner, s->err, s->err_cap);
	return rc;
}

static int spy_open_err(struct kp_reader **out, const char *conn, char *err, size_t err_cap)
{
	struct kp_spy_reader *s;
	int rc;

	if (out == NULL || conn == NULL)
		return KP_HAL_E_INVAL;
	*out = NULL;
	if (conn[0] == '\0') {
		if (err_cap > 0)
			snprintf(err, err_cap, "spy reader: no configuration file (use spy:PATH)");
		return KP_HAL_E_CONFIG;
	}
	s = calloc(1, sizeof(*s));
	if (s == NULL)
		return KP_HAL_E_NOMEM;
	s->base.ops = &kp_spy_reader_ops;
	s->err = err;
	s->err_cap = err_cap;
	rc = spy_load(s, conn);
	s->err = NULL;
	s->err_cap = 0;
	if (rc != KP_HAL_OK) {
		spy_close(&s->base);
		return rc;
	}
	*out = &s->base;
	return KP_HAL_OK;
}

static int spy_open(struct kp_reader **out, const char *conn)
{
	char err[2 * SPY_LINE_MAX];

	return spy_open_err(out, conn, err, sizeof(err));
}

static void spy_logf(struct kp_spy_reader *s, const char *fmt, ...)
	__attribute__((format(printf, 2, 3)));
static void spy_logf(struct kp_spy_reader *s, const char *fmt, ...)
{
	va_list ap;

	if (s->log == NULL)
		return;
	va_start(ap, fmt);
	vfprintf(s->log, fmt, ap);
	va_end(ap);
	fflush(s->log);
}

static int spy_wait(struct kp_reader *r, const struct kp_poll *poll, struct kp_card_info *info,
                    int timeout_ms)
{
	struct kp_spy_reader *s = (struct kp_spy_reader *)r;
	int rc = kp_reader_wait_card(s->inner, poll, info, timeout_ms);

	if (rc == KP_HAL_OK) {
		s->session++;
		s->session_verifies = 0;
		s->tech = info->tech;
		s->st.sessions = s->session;
		spy_logf(s, "card %lu %s\n", s->session,
		         info->tech == KP_TECH_FELICA ? "felica" :
		         info->tech == KP_TECH_ISO14443B ? "typeb" : "typea");
	}
	return rc;
}

static int spy_is_verify_with_data(const uint8_t *tx, size_t n)
{
	return n > 5 && tx[0] == 0x00 && tx[1] == 0x20;
}

/* The frame as the log shows it: an APDU in hex (a VERIFY's data as '*'); a FeliCa frame
 * by its command code and length only (it carries the IDm). */
static void spy_log_tx(struct kp_spy_reader *s, const uint8_t *tx, size_t n)
{
	char line[2 * SPY_HEX_MAX + 64];
	size_t k = 0;

	if (s->log == NULL)
		return;
	if (s->tech == KP_TECH_FELICA) {
		spy_logf(s, "> felica %02X (%zu bytes)\n", n > 1 ? tx[1] : 0, n);
		return;
	}
	for (size_t i = 0; i < n && k + 4 < sizeof(line); i++) {
		if (i == 5 && spy_is_verify_with_data(tx, n)) {
			line[k++] = ' ';
			for (; i < n && k + 4 < sizeof(line); i++) {
				line[k++] = '*';
				line[k++] = '*';
			}
			break;
		}
		k += (size_t)snprintf(line + k, sizeof(line) - k, "%s%02X", i == 5 ? " " : "", tx[i]);
	}
	line[k] = '\0';
	spy_logf(s, "> %s\n", line);
}

static void spy_log_rx(struct kp_spy_reader *s, int rc, const uint8_t *rx, size_t n, int faked)
{
	if (rc != KP_HAL_OK)
		spy_logf(s, "< %s (%s)%s\n", rc == KP_HAL_E_TIMEOUT ? "silent" : "error",
		         kp_hal_strerror(rc), faked ? " [spy]" : "");
	else if (s->tech == KP_TECH_FELICA)         /* no status word, and it repeats the IDm */
		spy_logf(s, "< %zu bytes%s\n", n, faked ? " [spy]" : "");
	else if (n < 2)
		spy_logf(s, "< %zu bytes, no status word%s\n", n, faked ? " [spy]" : "");
	else if (n == 2)
		spy_logf(s, "< %02X%02X%s\n", rx[0], rx[1], faked ? " [spy]" : "");
	else
		spy_logf(s, "< %zu bytes %02X%02X%s\n", n - 2, rx[n - 2], rx[n - 1],
		         faked ? " [spy]" : "");
}

static struct spy_rule *spy_find_rule(struct kp_spy_reader *s, const uint8_t *tx, size_t n)
{
	for (size_t i = 0; i < s->n_rules; i++) {
		struct spy_rule *ru = &s->rules[i];

		if (ru->times == 0 || (ru->card != 0 && ru->card != s->session))
			continue;
		if (ru->prefix ? n < ru->match_len : n != ru->match_len)
			continue;
		if (memcmp(tx, ru->match, ru->match_len) == 0)
			return ru;
	}
	return NULL;
}

static int spy_transceive(struct kp_reader *r, const uint8_t *tx, size_t tx_len, uint8_t *rx,
                          size_t rx_cap, size_t *rx_len, int timeout_ms)
{
	struct kp_spy_reader *s = (struct kp_spy_reader *)r;
	struct spy_rule *ru = tx != NULL ? spy_find_rule(s, tx, tx_len) : NULL;
	int rc;

	s->st.frames++;
	if (tx != NULL && spy_is_verify_with_data(tx, tx_len) && s->tech == KP_TECH_ISO14443B) {
		s->st.verify_with_pin++;
		s->st.verify_sessions += s->session_verifies == 0;
		s->session_verifies++;
		if (s->session_verifies > s->st.max_verify_per_session)
			s->st.max_verify_per_session = s->session_verifies;
	}
	if (tx != NULL)
		spy_log_tx(s, tx, tx_len);
	if (ru == NULL) {
		rc = kp_reader_transceive(s->inner, tx, tx_len, rx, rx_cap, rx_len, timeout_ms);
		spy_log_rx(s, rc, rx, rc == KP_HAL_OK ? *rx_len : 0, 0);
		return rc;
	}
	s->st.overridden++;
	if (ru->times > 0)
		ru->times--;
	*rx_len = 0;
	if (ru->silent) {
		rc = KP_HAL_E_TIMEOUT;
	} else if (ru->reply_len > rx_cap) {
		*rx_len = ru->reply_len;
		rc = KP_HAL_E_OVERFLOW;
	} else {
		memcpy(rx, ru->reply, ru->reply_len);
		*rx_len = ru->reply_len;
		rc = KP_HAL_OK;
	}
	spy_log_rx(s, rc, rx, rc == KP_HAL_OK ? *rx_len : 0, 1);
	return rc;
}

static int spy_release(struct kp_reader *r, int wait_removed, int timeout_ms)
{
	struct kp_spy_reader *s = (struct kp_spy_reader *)r;

	spy_logf(s, "release\n");
	return kp_reader_release(s->inner, wait_removed, timeout_ms);
}

static int spy_now(struct kp_reader *r, int64_t *ms)
{
	struct kp_spy_reader *s = (struct kp_spy_reader *)r;

	if (s->inner->ops->now_ms == NULL)
		return KP_HAL_E_NOTSUP;
	return s->inner->ops->now_ms(s->inner, ms);
}

static int spy_describe(struct kp_reader *r, char *buf, size_t cap)
{
	char in[200];
	int rc = kp_reader_describe(((struct kp_spy_reader *)r)->inner, in, sizeof(in));

	snprintf(buf, cap, "spy around %s", rc == KP_HAL_OK ? in : "a mock reader");
	return KP_HAL_OK;
}

struct kp_reader *kp_spy_inner(struct kp_reader *r)
{
	if (r == NULL || r->ops != &kp_spy_reader_ops)
		return r;
	return ((struct kp_spy_reader *)r)->inner;
}

int kp_spy_stats(struct kp_reader *r, struct kp_spy_stats *out)
{
	if (r == NULL || out == NULL)
		return KP_HAL_E_INVAL;
	if (r->ops != &kp_spy_reader_ops)
		return KP_HAL_E_NOTSUP;
	*out = ((struct kp_spy_reader *)r)->st;
	return KP_HAL_OK;
}

const struct kp_reader_ops kp_spy_reader_ops = {
	.scheme = "spy",
	.open = spy_open,
	.open_err = spy_open_err,
	.wait_card = spy_wait,
	.transceive = spy_transceive,
	.release = spy_release,
	.now_ms = spy_now,
	.describe = spy_describe,
	.close = spy_close,
};
