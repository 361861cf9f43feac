/* SPDX-License-Identifier: Apache-2.0 */
/* kp_sys: running as a service. The lowest layer (uses no folder; libsystemd outside), used
 * by kippu-terminal and kippu-backend alike:
 *   - systemd notification (sd_notify): READY=1, STOPPING=1, STATUS=..., WATCHDOG=1 at half
 *     of sd_watchdog_enabled()'s interval; without NOTIFY_SOCKET every call is a no-op;
 *   - logs: structured journal entries (sd_journal_send) when stderr is the journal
 *     ($JOURNAL_STREAM names stderr's device:inode), else one line on stderr per message,
 *     prefixed with the program's name;
 *   - files holding secrets created 0600 whatever the umask;
 *   - paths: relative to a configuration file's folder, defaults under $STATE_DIRECTORY. */
#ifndef KP_SYS_H
#define KP_SYS_H

#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <syslog.h>              /* LOG_ERR ... LOG_DEBUG priorities */

/* Names the program (for log lines and SYSLOG_IDENTIFIER) and reads the environment:
 * journal stream, watchdog interval. Call once, first thing in main. */
void kp_sys_init(const char *prog);
/* 1 when stderr is the journal (log entries go through sd_journal_send). */
int  kp_sys_journal(void);

/* sd_notify: READY=1 with a STATUS line, STOPPING=1, a STATUS line alone. */
void kp_sys_ready(const char *status);
void kp_sys_stopping(void);
void kp_sys_status(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
/* Called from the main loop at each turn: sends WATCHDOG=1 when half of the watchdog
 * interval has passed since the last one. */
void kp_sys_watchdog(void);
/* The watchdog interval in microseconds, 0 when systemd asks for none. */
uint64_t kp_sys_watchdog_usec(void);

/* Fields of a log entry about a tap or a record. Never a card id nor a card token. */
struct kp_log_tap {
	const char *terminal_id;     /* NULL: left out */
	long long seq;               /* < 0: left out */
	const char *result;          /* NULL: left out */
	const char *reason;          /* NULL: left out */
};
/* One log message at a syslog priority; tap (may be NULL) adds the KIPPU_ fields. */
void kp_log(int prio, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
void kp_logv(int prio, const struct kp_log_tap *tap, const char *fmt, va_list ap);
void kp_log_tap(int prio, const struct kp_log_tap *tap, const char *fmt, ...)
	__attribute__((format(printf, 3, 4)));

#define KP_LOG_FIELDS 7
#define KP_LOG_FIELD_CAP 320
/* The journal fields of one entry into f (KP_LOG_FIELDS strings of KP_LOG_FIELD_CAP):
 * MESSAGE, PRIORITY, SYSLOG_IDENTIFIER, then KIPPU_TERMINAL_ID, KIPPU_SEQ, KIPPU_RESULT,
 * KIPPU_REASON when tap gives them. Returns how many were filled. (What sd_journal_send
 * receives; exposed so that the tests can read it without a journald.) */
size_t kp_log_fields(char f[][KP_LOG_FIELD_CAP], int prio, const struct kp_log_tap *tap,
                     const char *msg);

/* Creates (or opens) path for writing with mode 0600 whatever the umask, and makes an
 * existing file 0600 too; returns the descriptor or -1 (errno). flags: extra O_ flags
 * (O_TRUNC, O_APPEND, O_EXCL). */
int  kp_sys_open_private(const char *path, int flags);
/* Makes sure path exists as a 0600 file before SQLite opens it (SQLite then creates the
 * -wal and -shm files with the same mode). 0, or -1 (errno). */
int  kp_sys_private_file(const char *path);

/* A path in a configuration file: relative ones are relative to the file's folder.
 * out gets base_file's folder + "/" + path (path itself when absolute or when base_file
 * has no folder part). 0, or -1 when it does not fit. */
int  kp_sys_path_relative(char *out, size_t cap, const char *base_file, const char *path);
/* A default state file: "$STATE_DIRECTORY/name" when that variable is set (the first of
 * its colon-separated folders), else name. 0, or -1 when it does not fit. */
int  kp_sys_state_path(char *out, size_t cap, const char *name);

#endif
