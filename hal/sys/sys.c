/* SPDX-License-Identifier: Apache-2.0 */
/* kp_sys: systemd notification, journal or stderr logs, private files, service paths. */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/uio.h>
#include <time.h>
#include <unistd.h>
#include <systemd/sd-daemon.h>
#include <systemd/sd-journal.h>

#include "kp_sys.h"

static char prog_name[64] = "kippu";
static int to_journal;
static uint64_t wd_usec;          /* watchdog interval; 0: none */
static uint64_t wd_last;          /* monotonic µs of the last WATCHDOG=1 */

static uint64_t mono_usec(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000u + (uint64_t)ts.tv_nsec / 1000u;
}

/* $JOURNAL_STREAM is "DEVICE:INODE" of the journal's stream; stderr is the journal when
 * its own device and inode are those (a redirected stderr is not). */
static int stderr_is_journal(void)
{
	const char *js = getenv("JOURNAL_STREAM");
	unsigned long long dev, ino;
	struct stat st;
	int n = 0;

	if (js == NULL || sscanf(js, "%llu:%llu%n", &dev, &ino, &n) != 2 || js[n] != '\0')
		return 0;
	if (fstat(STDERR_FILENO, &st) != 0)
		return 0;
	return (unsigned long long)st.st_dev == dev && (unsigned long long)st.st_ino == ino;
}

void kp_sys_init(const char *prog)
{
	uint64_t usec = 0;

	snprintf(prog_name, sizeof(prog_name), "%s", prog != NULL ? prog : "kippu");
	to_journal = stderr_is_journal();
	wd_usec = sd_watchdog_enabled(0, &usec) > 0 ? usec : 0;
	wd_last = 0;
}

int kp_sys_journal(void)
{
	return to_journal;
}

uint64_t kp_sys_watchdog_usec(void)
{
	return wd_usec;
}

void kp_sys_ready(const char *status)
{
	if (status != NULL)
		sd_notifyf(0, "READY=1\nSTATUS=%s", status);
	else
		sd_notify(0, "READY=1");
}

void kp_sys_stopping(void)
{
	sd_notify(0, "STOPPING=1\nSTATUS=stopping");
}

void kp_sys_status(const char *fmt, ...)
{
	char line[256];
	va_list ap;

	if (getenv("NOTIFY_SOCKET") == NULL)
		return;
	va_start(ap, fmt);
	vsnprintf(line, sizeof(line), fmt, ap);
	va_end(ap);
	sd_notifyf(0, "STATUS=%s", line);
}

void kp_sys_watchdog(void)
{
	uint64_t now;

	if (wd_usec == 0)
		return;
	now = mono_usec();
	if (wd_last != 0 && now - wd_last < wd_usec / 2)
		return;
	wd_last = now;
	sd_notify(0, "WATCHDOG=1");
}

/* Copies s into a field "KEY=value", control characters (a newline would start another
 * field) as spaces. */
static void field_put(char *dst, const char *key, const char *s)
{
	size_t n = (size_t)snprintf(dst, KP_LOG_FIELD_CAP, "%s=", key);

	for (; *s != '\0' && n + 1 < KP_LOG_FIELD_CAP; s++)
		dst[n++] = (unsigned char)*s < 0x20 || *s == 0x7f ? ' ' : *s;
	dst[n] = '\0';
}

size_t kp_log_fields(char f[][KP_LOG_FIELD_CAP], int prio, const struct kp_log_tap *tap,
                     const char *msg)
{
	size_t n = 0;

	field_put(f[n++], "MESSAGE", msg);
	snprintf(f[n++], KP_LOG_FIELD_CAP, "PRIORITY=%d", prio & 7);
	field_put(f[n++], "SYSLOG_IDENTIFIER", prog_name);
	if (tap == NULL)
		return n;
	if (tap->terminal_id != NULL)
		field_put(f[n++], "KIPPU_TERMINAL_ID", tap->terminal_id);
	if (tap->seq >= 0)
		snprintf(f[n++], KP_LOG_FIELD_CAP, "KIPPU_SEQ=%lld", tap->seq);
	if (tap->result != NULL)
		field_put(f[n++], "KIPPU_RESULT", tap->result);
	if (tap->reason != NULL)
		field_put(f[n++], "KIPPU_REASON", tap->reason);
	return n;
}

void kp_logv(int prio, const struct kp_log_tap *tap, const char *fmt, va_list ap)
{
	char msg[KP_LOG_FIELD_CAP - 16];
	int saved = errno;

	vsnprintf(msg, sizeof(msg), fmt, ap);
	if (to_journal) {
		char f[KP_LOG_FIELDS][KP_LOG_FIELD_CAP];
		struct iovec iov[KP_LOG_FIELDS];
		size_t n = kp_log_fields(f, prio, tap, msg);

		for (size_t i = 0; i < n; i++) {
			iov[i].iov_base = f[i];
			iov[i].iov_len = strlen(f[i]);
		}
		if (sd_journal_sendv(iov, (int)n) == 0) {
			errno = saved;
			return;
		}
	}
	/* One line, one write: lines of threads do not mix. */
	char line[sizeof(msg) + sizeof(prog_name) + 4];
	int len = snprintf(line, sizeof(line), "%s: %s\n", prog_name, msg);

	if (len > 0) {
		size_t l = (size_t)len < sizeof(line) ? (size_t)len : sizeof(line) - 1;

		line[l - 1] = '\n';
		fflush(stderr);
		if (write(STDERR_FILENO, line, l) < 0) {
			/* nowhere left to say it */
		}
	}
	errno = saved;
}

void kp_log(int prio, const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	kp_logv(prio, NULL, fmt, ap);
	va_end(ap);
}

void kp_log_tap(int prio, const struct kp_log_tap *tap, const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	kp_logv(prio, tap, fmt, ap);
	va_end(ap);
}

int kp_sys_open_private(const char *path, int flags)
{
	int fd = open(path, O_WRONLY | O_CREAT | O_CLOEXEC | flags, 0600);

	if (fd < 0)
		return -1;
	if (fchmod(fd, 0600) != 0) {
		int e = errno;

		close(fd);
		errno = e;
		return -1;
	}
	return fd;
}

int kp_sys_private_file(const char *path)
{
	int fd;
	struct stat st;

	/* An existing database keeps the mode its owner gave it. */
	if (stat(path, &st) == 0)
		return 0;
	if (strcmp(path, ":memory:") == 0 || path[0] == '\0')
		return 0;
	fd = open(path, O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
	if (fd < 0)
		return errno == EEXIST ? 0 : -1;
	if (fchmod(fd, 0600) != 0) {
		int e = errno;

		close(fd);
		errno = e;
		return -1;
	}
	close(fd);
	return 0;
}

int kp_sys_path_relative(char *out, size_t cap, const char *base_file, const char *path)
{
	const char *slash = base_file != NULL ? strrchr(base_file, '/') : NULL;
	int n;

	if (path[0] == '/' || slash == NULL)
		n = snprintf(out, cap, "%s", path);
	else
		n = snprintf(out, cap, "%.*s/%s", (int)(slash - base_file), base_file, path);
	return n >= 0 && (size_t)n < cap ? 0 : -1;
}

int kp_sys_state_path(char *out, size_t cap, const char *name)
{
	const char *sd = getenv("STATE_DIRECTORY");
	size_t dl;
	int n;

	if (sd == NULL || sd[0] == '\0' || name[0] == '/') {
		n = snprintf(out, cap, "%s", name);
	} else {
		dl = strcspn(sd, ":");
		n = snprintf(out, cap, "%.*s/%s", (int)dl, sd, name);
	}
	return n >= 0 && (size_t)n < cap ? 0 : -1;
}
