/* SPDX-License-Identifier: Apache-2.0 */
/* The mock HMI: keeps every event in memory for tests and, opened as "mock:PATH" or
 * "mock:-", appends one line per event to PATH or stdout. Each line is written whole and
 * flushed at once, so a process killed mid-run leaves only complete lines behind. With an
 * output the lines are the record: only the last HMI_KEEP events stay in memory, so that a
 * terminal running on the mock HMI for days (a week offline: 300,000 events) keeps a flat
 * memory. */
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "kp_hal.h"

#define HMI_LINE_MAX 512
#define HMI_KEEP 1024                 /* events kept in memory when lines go to an output */

struct kp_mock_hmi {
	struct kp_hmi base;               /* first: kp_hmi_* find the ops here */
	struct kp_hmi_event *ev;
	size_t n, cap;
	FILE *out;                        /* NULL: memory only */
	int own_out;                      /* out is ours to close */
};

/* Copies at most cap-1 bytes, never cutting a UTF-8 sequence in two (rider texts are
 * Japanese). */
static void hmi_copy(char *dst, size_t cap, const char *src)
{
	size_t n = 0;

	if (src != NULL) {
		n = strlen(src);
		if (n > cap - 1) {
			n = cap - 1;
			while (n > 0 && ((unsigned char)src[n] & 0xC0) == 0x80)
				n--;
		}
		memcpy(dst, src, n);
	}
	dst[n] = '\0';
}

/* Makes a field safe for a one-line, space-separated record: in a token (reason, product)
 * every control character or space becomes '_', in the free text (last on the line)
 * every control character becomes a space. */
static void hmi_sanitize(char *s, int token)
{
	for (; *s != '\0'; s++) {
		unsigned char ch = (unsigned char)*s;

		if (ch < 0x20 || ch == 0x7F || (token && ch == ' '))
			*s = token ? '_' : ' ';
	}
}

static int hmi_record(struct kp_mock_hmi *h, const struct kp_hmi_event *ev)
{
	if (h->out != NULL && h->n >= HMI_KEEP) {  /* a ring of the last HMI_KEEP */
		h->ev[h->n++ % HMI_KEEP] = *ev;
		return KP_HAL_OK;
	}
	if (h->n == h->cap) {
		size_t ncap = h->cap != 0 ? h->cap * 2 : 16;
		struct kp_hmi_event *p;

		if (ncap < h->cap || ncap > SIZE_MAX / sizeof(*p))
			return KP_HAL_E_NOMEM;
		p = realloc(h->ev, ncap * sizeof(*p));
		if (p == NULL)
			return KP_HAL_E_NOMEM;
		h->ev = p;
		h->cap = ncap;
	}
	h->ev[h->n++] = *ev;
	return KP_HAL_OK;
}

static int hmi_write_line(struct kp_mock_hmi *h, const char *line)
{
	if (h->out == NULL)
		return KP_HAL_OK;
	if (fputs(line, h->out) == EOF || fflush(h->out) != 0)
		return KP_HAL_E_IO;
	return KP_HAL_OK;
}

/* Formats the event's line into buf (HMI_LINE_MAX bytes). */
static void hmi_format(const struct kp_hmi_event *ev, char *buf)
{
	char reason[sizeof(ev->reason)], product[sizeof(ev->product)], text[sizeof(ev->text)];

	if (strcmp(ev->kind, "show") == 0) {
		memcpy(reason, ev->reason, sizeof(reason));
		memcpy(product, ev->product, sizeof(product));
		memcpy(text, ev->text, sizeof(text));
		hmi_sanitize(reason, 1);
		hmi_sanitize(product, 1);
		hmi_sanitize(text, 0);
		snprintf(buf, HMI_LINE_MAX, "show %" PRId64 " %s %s %s %" PRId64 " %s\n", ev->time_ms,
		         kp_hmi_result_name(ev->result), reason[0] != '\0' ? reason : "-",
		         product[0] != '\0' ? product : "-", ev->rides_left, text);
	} else if (strcmp(ev->kind, "beep") == 0) {
		snprintf(buf, HMI_LINE_MAX, "beep %s\n", kp_beep_name((enum kp_beep)ev->value));
	} else {
		snprintf(buf, HMI_LINE_MAX, "led %s\n", kp_led_name((enum kp_led)ev->value));
	}
}

static int hmi_event(struct kp_mock_hmi *h, const struct kp_hmi_event *ev)
{
	char line[HMI_LINE_MAX];
	int rc = hmi_record(h, ev);

	if (rc != KP_HAL_OK)
		return rc;
	hmi_format(ev, line);
	return hmi_write_line(h, line);
}

static void hmi_close(struct kp_hmi *hmi)
{
	struct kp_mock_hmi *h = (struct kp_mock_hmi *)hmi;

	if (h == NULL)
		return;
	if (h->out != NULL && h->own_out)
		fclose(h->out);
	free(h->ev);
	free(h);
}

static int hmi_open_err(struct kp_hmi **out, const char *conn, char *err, size_t err_cap)
{
	struct kp_mock_hmi *h = NULL;
	int rc = KP_HAL_OK;

	if (out == NULL || conn == NULL)
		return KP_HAL_E_INVAL;
	*out = NULL;
	h = calloc(1, sizeof(*h));
	if (h == NULL) {
		rc = KP_HAL_E_NOMEM;
		goto out;
	}
	h->base.ops = &kp_mock_hmi_ops;
	if (strcmp(conn, "-") == 0) {
		h->out = stdout;
	} else if (conn[0] != '\0') {
		h->out = kp_hal_open_log(conn);
		if (h->out == NULL) {
			if (err_cap > 0)
				snprintf(err, err_cap, "mock hmi: cannot open %s: %s", conn,
				         strerror(errno));
			rc = KP_HAL_E_CONFIG;
			goto out;
		}
		h->own_out = 1;
	}
	*out = &h->base;
	h = NULL;
out:
	hmi_close(h ? &h->base : NULL);
	return rc;
}

static int hmi_open(struct kp_hmi **out, const char *conn)
{
	char err[600];

	return hmi_open_err(out, conn, err, sizeof(err));
}

static int hmi_show(struct kp_hmi *hmi, const struct kp_hmi_msg *msg)
{
	struct kp_hmi_event ev;

	if (hmi == NULL || msg == NULL || (int)msg->result < KP_HMI_ACCEPTED ||
	    (int)msg->result > KP_HMI_INFO)
		return KP_HAL_E_INVAL;
	memset(&ev, 0, sizeof(ev));
	memcpy(ev.kind, "show", 5);
	ev.result = msg->result;
	hmi_copy(ev.reason, sizeof(ev.reason), msg->reason);
	hmi_copy(ev.product, sizeof(ev.product), msg->product);
	hmi_copy(ev.text, sizeof(ev.text), msg->text);
	ev.rides_left = msg->rides_left;
	ev.time_ms = msg->time_ms;
	return hmi_event((struct kp_mock_hmi *)hmi, &ev);
}

/* A beep or an LED: an event of kind with value, which must lie in lo..hi. */
static int hmi_signal(struct kp_hmi *hmi, const char *kind, int value, int lo, int hi)
{
	struct kp_hmi_event ev;

	if (hmi == NULL || value < lo || value > hi)
		return KP_HAL_E_INVAL;
	memset(&ev, 0, sizeof(ev));
	snprintf(ev.kind, sizeof(ev.kind), "%s", kind);
	ev.rides_left = -1;
	ev.value = value;
	return hmi_event((struct kp_mock_hmi *)hmi, &ev);
}

static int hmi_beep(struct kp_hmi *hmi, enum kp_beep pattern)
{
	return hmi_signal(hmi, "beep", (int)pattern, KP_BEEP_OK, KP_BEEP_NOTICE);
}

static int hmi_led(struct kp_hmi *hmi, enum kp_led colour)
{
	return hmi_signal(hmi, "led", (int)colour, KP_LED_OFF, KP_LED_BLUE);
}

const struct kp_hmi_ops kp_mock_hmi_ops = {
	.scheme = "mock",
	.open = hmi_open,
	.open_err = hmi_open_err,
	.show = hmi_show,
	.beep = hmi_beep,
	.led = hmi_led,
	.close = hmi_close,
};

size_t kp_mock_hmi_count(const struct kp_hmi *hmi)
{
	if (hmi == NULL || hmi->ops != &kp_mock_hmi_ops)
		return 0;
	return ((const struct kp_mock_hmi *)hmi)->n;
}

const struct kp_hmi_event *kp_mock_hmi_event(const struct kp_hmi *hmi, size_t i)
{
	const struct kp_mock_hmi *h = (const struct kp_mock_hmi *)hmi;

	if (hmi == NULL || hmi->ops != &kp_mock_hmi_ops || i >= h->n)
		return NULL;
	if (h->out != NULL && h->n > HMI_KEEP)    /* a ring: the last HMI_KEEP only */
		return i < h->n - HMI_KEEP ? NULL : &h->ev[i % HMI_KEEP];
	return &h->ev[i];
}
