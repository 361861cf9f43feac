/* SPDX-License-Identifier: Apache-2.0 */
/* The event stream (--events json): one JSON object per line, built with jansson, for an
 * onboard display or a vehicle's data logger. The tap thread only formats and queues a
 * line; a writer thread of its own opens the target (file, FIFO or stdout), writes with
 * poll() so a slow or absent reader never stalls anything, and reopens after a failure.
 * No raw card id ever appears: a card is named by the first 8 hex digits of its token
 * (itself an HMAC of the card id), as `kippuctl journal list` shows it. */
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <jansson.h>

#include "kp_console.h"

#define EV_QUEUE_MAX   4096          /* lines kept while the target cannot take them */
#define EV_RETRY_MS    2000
#define EV_DRAIN_MS    2000          /* what close waits for a slow reader */

struct line {
	struct line *next;
	size_t len;
	char text[];                     /* with its '\n' */
};

struct kp_events {
	char path[512];                  /* "" = stdout */
	pthread_t thread;
	pthread_mutex_t mu;
	pthread_cond_t cv;
	struct line *head, *tail;
	size_t queued;
	unsigned long dropped;           /* lines lost to a full queue since the last report */
	int stopping;
	int fd;                          /* -1 closed */
	void (*log_fn)(void *arg, const char *msg);
	void *log_arg;
	int logged_failure;              /* the current failure has been logged once */
};

static void ev_log(kp_events *ev, const char *fmt, const char *a, const char *b)
{
	char msg[700];

	snprintf(msg, sizeof(msg), fmt, a, b);
	if (ev->log_fn != NULL)
		ev->log_fn(ev->log_arg, msg);
}

static int64_t mono_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* Opens the target; a FIFO without a reader is ENXIO (no one to follow yet). */
static int ev_open_target(kp_events *ev)
{
	struct stat st;
	int fd;

	if (ev->path[0] == '\0') {
		ev->fd = STDOUT_FILENO;
		return 0;
	}
	if (stat(ev->path, &st) == 0 && S_ISFIFO(st.st_mode))
		fd = open(ev->path, O_WRONLY | O_NONBLOCK | O_CLOEXEC);
	else
		fd = open(ev->path, O_WRONLY | O_CREAT | O_APPEND | O_NONBLOCK | O_CLOEXEC, 0640);
	if (fd < 0) {
		if (!ev->logged_failure)
			ev_log(ev, "events: cannot open %s: %s; the terminal keeps serving and "
			       "tries again every 2 s", ev->path,
			       errno == ENXIO ? "FIFO has no reader yet" : strerror(errno));
		ev->logged_failure = 1;
		return -1;
	}
	if (ev->logged_failure)
		ev_log(ev, "events: writing to %s%s", ev->path, "");
	ev->logged_failure = 0;
	ev->fd = fd;
	return 0;
}

static void ev_close_target(kp_events *ev)
{
	if (ev->fd >= 0 && ev->fd != STDOUT_FILENO)
		close(ev->fd);
	ev->fd = -1;
}

/* Writes all of buf, waiting in poll() (never in write) so stopping can interrupt it.
 * 0 done, -1 the target failed (reopen), 1 gave up because we are stopping. */
static int ev_write_all(kp_events *ev, const char *buf, size_t len, int64_t deadline)
{
	size_t off = 0;

	while (off < len) {
		ssize_t n = write(ev->fd, buf + off, len - off);

		if (n > 0) {
			off += (size_t)n;
			continue;
		}
		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
			struct pollfd p = { ev->fd, POLLOUT, 0 };
			int stopping;

			pthread_mutex_lock(&ev->mu);
			stopping = ev->stopping;
			pthread_mutex_unlock(&ev->mu);
			if (stopping && mono_ms() > deadline)
				return 1;
			poll(&p, 1, 100);
			continue;
		}
		if (!ev->logged_failure)
			ev_log(ev, "events: writing to %s: %s; reopening", ev->path[0] ? ev->path :
			       "stdout", n < 0 ? strerror(errno) : "nothing written");
		ev->logged_failure = 1;
		return -1;
	}
	return 0;
}

static void *ev_main(void *arg)
{
	kp_events *ev = arg;
	int64_t retry_at = 0, deadline = 0;

	for (;;) {
		struct line *l;
		int rc;

		pthread_mutex_lock(&ev->mu);
		while (ev->head == NULL && !ev->stopping)
			pthread_cond_wait(&ev->cv, &ev->mu);
		if (ev->stopping && deadline == 0)
			deadline = mono_ms() + EV_DRAIN_MS;
		if (ev->head == NULL || (ev->stopping && mono_ms() > deadline)) {
			pthread_mutex_unlock(&ev->mu);
			break;
		}
		l = ev->head;                /* stays queued until written */
		pthread_mutex_unlock(&ev->mu);

		if (ev->fd < 0) {
			if (mono_ms() < retry_at || ev_open_target(ev) != 0) {
				if (retry_at <= mono_ms())
					retry_at = mono_ms() + EV_RETRY_MS;
				usleep(100 * 1000);
				continue;
			}
		}
		rc = ev_write_all(ev, l->text, l->len, deadline != 0 ? deadline : INT64_MAX);
		if (rc < 0) {
			ev_close_target(ev);
			retry_at = mono_ms() + EV_RETRY_MS;
			continue;
		}
		if (rc > 0)
			break;
		pthread_mutex_lock(&ev->mu);
		ev->head = l->next;
		if (ev->head == NULL)
			ev->tail = NULL;
		ev->queued--;
		pthread_mutex_unlock(&ev->mu);
		free(l);
	}
	ev_close_target(ev);
	return NULL;
}

int kp_events_open(kp_events **out, const char *spec,
                   void (*log_fn)(void *arg, const char *msg), void *log_arg)
{
	kp_events *ev;
	const char *path;

	*out = NULL;
	if (spec == NULL || strncmp(spec, "json", 4) != 0 || (spec[4] != '\0' && spec[4] != ':'))
		return KP_E_CONFIG;
	path = spec[4] == ':' ? spec + 5 : "";
	if (strcmp(path, "-") == 0)
		path = "";
	if (spec[4] == ':' && *path == '\0' && strcmp(spec + 5, "-") != 0)
		return KP_E_CONFIG;          /* "json:" names nothing */
	ev = calloc(1, sizeof(*ev));
	if (ev == NULL)
		return KP_E_NOMEM;
	if (strlen(path) >= sizeof(ev->path)) {
		free(ev);
		return KP_E_CONFIG;
	}
	memcpy(ev->path, path, strlen(path) + 1);
	ev->fd = -1;
	ev->log_fn = log_fn;
	ev->log_arg = log_arg;
	pthread_mutex_init(&ev->mu, NULL);
	pthread_cond_init(&ev->cv, NULL);
	/* Say at once if the target is wrong, so the operator sees it at start. */
	if (ev_open_target(ev) != 0)
		ev->fd = -1;
	if (pthread_create(&ev->thread, NULL, ev_main, ev) != 0) {
		ev_close_target(ev);
		pthread_mutex_destroy(&ev->mu);
		pthread_cond_destroy(&ev->cv);
		free(ev);
		return KP_E_NOMEM;
	}
	*out = ev;
	return KP_OK;
}

void kp_events_close(kp_events *ev)
{
	struct line *l;

	if (ev == NULL)
		return;
	pthread_mutex_lock(&ev->mu);
	ev->stopping = 1;
	pthread_cond_signal(&ev->cv);
	pthread_mutex_unlock(&ev->mu);
	pthread_join(ev->thread, NULL);
	if (ev->head != NULL && ev->log_fn != NULL) {
		char msg[128];

		snprintf(msg, sizeof(msg), "events: %zu events not written (no reader)", ev->queued);
		ev->log_fn(ev->log_arg, msg);
	}
	while ((l = ev->head) != NULL) {
		ev->head = l->next;
		free(l);
	}
	pthread_mutex_destroy(&ev->mu);
	pthread_cond_destroy(&ev->cv);
	free(ev);
}

static void ev_time(json_t *o, int64_t ms)
{
	time_t t = (time_t)(ms >= 0 ? ms / 1000 : (ms - 999) / 1000);
	struct tm tm;
	char buf[96];

	gmtime_r(&t, &tm);
	snprintf(buf, sizeof(buf), "%04d-%02d-%02dT%02d:%02d:%02d.%03dZ", tm.tm_year + 1900,
	         tm.tm_mon + 1, tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec,
	         (int)(((ms % 1000) + 1000) % 1000));
	json_object_set_new(o, "time", json_string(buf));
	json_object_set_new(o, "time_ms", json_integer(ms));
}

static struct line *ev_line(const char *text)
{
	size_t n = strlen(text);
	struct line *l = malloc(sizeof(*l) + n + 2);

	if (l == NULL)
		return NULL;
	memcpy(l->text, text, n);
	l->text[n] = '\n';
	l->text[n + 1] = '\0';
	l->len = n + 1;
	l->next = NULL;
	return l;
}

static void ev_push_locked(kp_events *ev, struct line *l)
{
	if (ev->tail != NULL)
		ev->tail->next = l;
	else
		ev->head = l;
	ev->tail = l;
	ev->queued++;
}

/* Queues o (and takes its reference). A full queue drops the event and counts it; the
 * count goes out as a "dropped" event once there is room again. */
static void ev_emit(kp_events *ev, json_t *o)
{
	char *text;
	struct line *l;

	if (ev == NULL || o == NULL) {
		json_decref(o);
		return;
	}
	text = json_dumps(o, JSON_COMPACT | JSON_PRESERVE_ORDER);
	json_decref(o);
	if (text == NULL)
		return;
	l = ev_line(text);
	free(text);
	if (l == NULL)
		return;
	pthread_mutex_lock(&ev->mu);
	if (ev->queued >= EV_QUEUE_MAX) {
		ev->dropped++;
		pthread_mutex_unlock(&ev->mu);
		free(l);
		return;
	}
	if (ev->dropped > 0 && ev->queued + 1 < EV_QUEUE_MAX) {
		char note[80];
		struct line *d;

		snprintf(note, sizeof(note), "{\"type\":\"dropped\",\"count\":%lu}", ev->dropped);
		d = ev_line(note);
		if (d != NULL) {
			ev_push_locked(ev, d);
			ev->dropped = 0;
		}
	}
	ev_push_locked(ev, l);
	pthread_cond_signal(&ev->cv);
	pthread_mutex_unlock(&ev->mu);
}

void kp_events_card_ref(const uint8_t token[KP_TOKEN_LEN], char out[9])
{
	/* The token is already an HMAC of the card id; its first 4 bytes are what
	 * `kippuctl journal list` shows, so a reference can be followed into the journal. */
	kp_hex(token, 4, out);
}

static json_t *ev_new(const char *type, int64_t time_ms)
{
	json_t *o = json_object();

	if (o == NULL)
		return NULL;
	json_object_set_new(o, "type", json_string(type));
	ev_time(o, time_ms);
	return o;
}

static void set_str(json_t *o, const char *key, const char *v)
{
	if (v != NULL && v[0] != '\0')
		json_object_set_new(o, key, json_string(v));
}

void kp_events_record(kp_events *ev, const struct kp_record *rec)
{
	const char *type = strcmp(rec->kind, "shift") == 0 ? "shift" :
	                   strcmp(rec->kind, "link") == 0 ? "link" :
	                   rec->driver[0] != '\0' ? "driver" : "tap";
	json_t *o;

	if (ev == NULL)
		return;
	o = ev_new(type, rec->time_ms);
	if (o == NULL)
		return;
	json_object_set_new(o, "seq", json_integer((json_int_t)rec->seq));
	set_str(o, "terminal", rec->terminal);
	set_str(o, "operator", rec->operator_id);
	set_str(o, "route", rec->route);
	set_str(o, "stop", rec->stop);
	set_str(o, "kind", rec->kind);
	set_str(o, "result", rec->result);
	set_str(o, "reason", rec->reason);
	set_str(o, "text_en", kp_console_reason_text(rec->reason, rec->result, 0));
	set_str(o, "text_ja", kp_console_reason_text(rec->reason, rec->result, 1));
	set_str(o, "product", rec->product);
	json_object_set_new(o, "rides", json_integer(rec->rides));
	json_object_set_new(o, "amount", json_integer(rec->amount));
	if (rec->has_left)
		json_object_set_new(o, "left", json_integer(rec->left));
	set_str(o, "category", rec->category);
	json_object_set_new(o, "linked", json_boolean(rec->has_via));
	set_str(o, "fare_event", rec->event);
	set_str(o, "fare_note", rec->fare);
	set_str(o, "driver", rec->driver);
	if (rec->has_token) {
		char ref[9];

		kp_events_card_ref(rec->token, ref);
		json_object_set_new(o, "card", json_string(ref));
	}
	ev_emit(ev, o);
}

void kp_events_reader(kp_events *ev, int64_t time_ms, int online, const char *detail)
{
	json_t *o;

	if (ev == NULL || (o = ev_new("reader", time_ms)) == NULL)
		return;
	json_object_set_new(o, "state", json_string(online ? "online" : "offline"));
	set_str(o, "detail", detail);
	ev_emit(ev, o);
}

void kp_events_sync(kp_events *ev, int64_t time_ms, int ok, uint64_t acked, uint64_t head,
                    uint64_t config_version, const char *error)
{
	json_t *o;

	if (ev == NULL || (o = ev_new("sync", time_ms)) == NULL)
		return;
	json_object_set_new(o, "state", json_string(ok ? "ok" : "failed"));
	json_object_set_new(o, "acked", json_integer((json_int_t)acked));
	json_object_set_new(o, "head", json_integer((json_int_t)head));
	json_object_set_new(o, "waiting", json_integer((json_int_t)(head > acked ? head - acked : 0)));
	json_object_set_new(o, "config_version", json_integer((json_int_t)config_version));
	set_str(o, "error", error);
	ev_emit(ev, o);
}

void kp_events_inspect(kp_events *ev, int64_t time_ms, const uint8_t token[KP_TOKEN_LEN],
                       const char *mode, int denylisted, size_t n_entitlements,
                       size_t n_categories)
{
	json_t *o;
	char ref[9];

	if (ev == NULL || (o = ev_new("inspect", time_ms)) == NULL)
		return;
	set_str(o, "mode", mode);
	if (token != NULL) {
		kp_events_card_ref(token, ref);
		json_object_set_new(o, "card", json_string(ref));
	}
	json_object_set_new(o, "denylisted", json_boolean(denylisted));
	json_object_set_new(o, "entitlements", json_integer((json_int_t)n_entitlements));
	json_object_set_new(o, "categories", json_integer((json_int_t)n_categories));
	ev_emit(ev, o);
}

static json_t *ev_table(const struct kp_summary_table *t)
{
	json_t *o = json_object();

	for (size_t i = 0; o != NULL && i < t->n; i++)
		json_object_set_new(o, t->c[i].key, json_integer(t->c[i].n));
	if (o != NULL && t->other > 0)
		json_object_set_new(o, "other", json_integer(t->other));
	return o;
}

void kp_events_summary(kp_events *ev, int64_t time_ms, const struct kp_shift_summary *sum)
{
	json_t *o;

	if (ev == NULL || (o = ev_new("summary", time_ms)) == NULL)
		return;
	set_str(o, "driver", sum->driver);
	json_object_set_new(o, "start_seq", json_integer((json_int_t)sum->start_seq));
	json_object_set_new(o, "end_seq", json_integer((json_int_t)sum->end_seq));
	json_object_set_new(o, "riders", json_integer(sum->riders));
	json_object_set_new(o, "taps", json_integer(sum->taps));
	json_object_set_new(o, "already", json_integer(sum->already));
	json_object_set_new(o, "refused", json_integer(sum->refused));
	json_object_set_new(o, "fares", json_integer(sum->fares));
	json_object_set_new(o, "by_category", ev_table(&sum->by_category));
	json_object_set_new(o, "by_product", ev_table(&sum->by_product));
	json_object_set_new(o, "refusals", ev_table(&sum->refusals));
	json_object_set_new(o, "overrides", ev_table(&sum->overrides));
	ev_emit(ev, o);
}

void kp_events_console(kp_events *ev, int64_t time_ms, const char *what, const char *detail)
{
	json_t *o;

	if (ev == NULL || (o = ev_new("console", time_ms)) == NULL)
		return;
	set_str(o, "what", what);
	set_str(o, "detail", detail);
	ev_emit(ev, o);
}
