/* SPDX-License-Identifier: Apache-2.0 */
/* kp_sys (hal/sys): log lines on stderr ("PROG: message", one per line); the journal mode
 * chosen only when $JOURNAL_STREAM names stderr's own device and inode; the journal fields
 * of an entry (MESSAGE, PRIORITY, SYSLOG_IDENTIFIER, KIPPU_*; read from kp_log_fields, as
 * sd_journal_send itself cannot be observed without a journald); files created 0600 under
 * umask 000 and 022; config-relative and $STATE_DIRECTORY paths; notification calls are
 * no-ops without NOTIFY_SOCKET. (The programs' notify and watchdog: tests/sys/test_service.sh.) */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cmocka.h>

#include "kp_sys.h"

static char dir[64];

static int setup(void **state)
{
	(void)state;
	snprintf(dir, sizeof(dir), "/tmp/kippu-sys.XXXXXX");
	return mkdtemp(dir) != NULL ? 0 : -1;
}

static int teardown(void **state)
{
	char cmd[128];

	(void)state;
	snprintf(cmd, sizeof(cmd), "rm -rf '%s'", dir);
	return system(cmd) == 0 ? 0 : -1;
}

/* Runs kp_log calls with stderr on a file; returns what was written. */
static void capture(char *out, size_t cap, void (*fn)(void))
{
	char path[128];
	int fd, saved;
	ssize_t n;

	snprintf(path, sizeof(path), "%s/stderr", dir);
	fd = open(path, O_RDWR | O_CREAT | O_TRUNC, 0600);
	assert_true(fd >= 0);
	saved = dup(STDERR_FILENO);
	dup2(fd, STDERR_FILENO);
	fn();
	dup2(saved, STDERR_FILENO);
	close(saved);
	n = pread(fd, out, cap - 1, 0);
	assert_true(n >= 0);
	out[n] = '\0';
	close(fd);
}

static void log_two(void)
{
	struct kp_log_tap t = { "T1", 7, "refused", "no-entitlement" };

	kp_log(LOG_WARNING, "reader %s: %s", "libnfc", "gone");
	kp_log_tap(LOG_INFO, &t, "tap %d", 7);
}

static void stderr_lines_prefixed(void **state)
{
	char out[512];

	(void)state;
	unsetenv("JOURNAL_STREAM");
	kp_sys_init("kippu-backend");
	assert_int_equal(kp_sys_journal(), 0);
	capture(out, sizeof(out), log_two);
	assert_string_equal(out, "kippu-backend: reader libnfc: gone\nkippu-backend: tap 7\n");
}

static void journal_only_when_stderr_is_the_stream(void **state)
{
	char path[128], js[64];
	struct stat st;
	int fd, saved;

	(void)state;
	snprintf(path, sizeof(path), "%s/journal", dir);
	fd = open(path, O_RDWR | O_CREAT | O_TRUNC, 0600);
	assert_true(fd >= 0);
	assert_int_equal(fstat(fd, &st), 0);
	saved = dup(STDERR_FILENO);
	dup2(fd, STDERR_FILENO);
	snprintf(js, sizeof(js), "%llu:%llu", (unsigned long long)st.st_dev,
	         (unsigned long long)st.st_ino);
	setenv("JOURNAL_STREAM", js, 1);
	kp_sys_init("kippu-terminal");
	int on = kp_sys_journal();
	/* another inode: a redirected stderr is not the journal */
	snprintf(js, sizeof(js), "%llu:%llu", (unsigned long long)st.st_dev,
	         (unsigned long long)st.st_ino + 1);
	setenv("JOURNAL_STREAM", js, 1);
	kp_sys_init("kippu-terminal");
	int off = kp_sys_journal();
	setenv("JOURNAL_STREAM", "garbage", 1);
	kp_sys_init("kippu-terminal");
	int bad = kp_sys_journal();
	dup2(saved, STDERR_FILENO);
	close(saved);
	close(fd);
	unsetenv("JOURNAL_STREAM");
	assert_int_equal(on, 1);
	assert_int_equal(off, 0);
	assert_int_equal(bad, 0);
}

static void journal_fields(void **state)
{
	char f[KP_LOG_FIELDS][KP_LOG_FIELD_CAP];
	struct kp_log_tap t = { "BUS-A-01", 42, "accepted", "ok" };
	struct kp_log_tap part = { NULL, -1, "refused", NULL };
	size_t n;

	(void)state;
	kp_sys_init("kippu-terminal");
	n = kp_log_fields(f, LOG_INFO, &t, "tap 42: accepted\nFORGED=1");
	assert_int_equal(n, 7);
	/* a newline in a message cannot start a field of its own */
	assert_string_equal(f[0], "MESSAGE=tap 42: accepted FORGED=1");
	assert_string_equal(f[1], "PRIORITY=6");
	assert_string_equal(f[2], "SYSLOG_IDENTIFIER=kippu-terminal");
	assert_string_equal(f[3], "KIPPU_TERMINAL_ID=BUS-A-01");
	assert_string_equal(f[4], "KIPPU_SEQ=42");
	assert_string_equal(f[5], "KIPPU_RESULT=accepted");
	assert_string_equal(f[6], "KIPPU_REASON=ok");
	n = kp_log_fields(f, LOG_WARNING, &part, "x");
	assert_int_equal(n, 4);
	assert_string_equal(f[3], "KIPPU_RESULT=refused");
	n = kp_log_fields(f, LOG_ERR, NULL, "plain");
	assert_int_equal(n, 3);
	assert_string_equal(f[1], "PRIORITY=3");
	/* The entry has no field a card id could go in: its only fields are these. */
	for (size_t i = 0; i < 7; i++)
		assert_null(strstr(f[i], "CARD"));
}

static void private_files_0600(void **state)
{
	char path[128];
	struct stat st;
	mode_t masks[] = { 000, 022 };

	(void)state;
	for (size_t i = 0; i < 2; i++) {
		mode_t old = umask(masks[i]);
		int fd;

		snprintf(path, sizeof(path), "%s/db%zu", dir, i);
		assert_int_equal(kp_sys_private_file(path), 0);
		assert_int_equal(stat(path, &st), 0);
		assert_int_equal(st.st_mode & 0777, 0600);
		snprintf(path, sizeof(path), "%s/log%zu", dir, i);
		fd = kp_sys_open_private(path, O_APPEND);
		assert_true(fd >= 0);
		close(fd);
		assert_int_equal(stat(path, &st), 0);
		assert_int_equal(st.st_mode & 0777, 0600);
		umask(old);
	}
	/* a missing folder is an error, not a silent success */
	snprintf(path, sizeof(path), "%s/none/db", dir);
	assert_int_equal(kp_sys_private_file(path), -1);
}

static void paths(void **state)
{
	char out[64];

	(void)state;
	assert_int_equal(kp_sys_path_relative(out, sizeof(out), "/etc/kippu/t.conf", "t.key"), 0);
	assert_string_equal(out, "/etc/kippu/t.key");
	assert_int_equal(kp_sys_path_relative(out, sizeof(out), "conf/t.conf", "../t.db"), 0);
	assert_string_equal(out, "conf/../t.db");
	assert_int_equal(kp_sys_path_relative(out, sizeof(out), "t.conf", "t.db"), 0);
	assert_string_equal(out, "t.db");
	assert_int_equal(kp_sys_path_relative(out, sizeof(out), "/etc/t.conf", "/var/t.db"), 0);
	assert_string_equal(out, "/var/t.db");
	assert_int_equal(kp_sys_path_relative(out, 8, "/etc/kippu/t.conf", "t.key"), -1);
	unsetenv("STATE_DIRECTORY");
	assert_int_equal(kp_sys_state_path(out, sizeof(out), "backend.db"), 0);
	assert_string_equal(out, "backend.db");
	setenv("STATE_DIRECTORY", "/var/lib/kippu:/var/lib/other", 1);
	assert_int_equal(kp_sys_state_path(out, sizeof(out), "backend.db"), 0);
	assert_string_equal(out, "/var/lib/kippu/backend.db");
	unsetenv("STATE_DIRECTORY");
}

static void notify_without_socket_is_silent(void **state)
{
	(void)state;
	unsetenv("NOTIFY_SOCKET");
	setenv("WATCHDOG_USEC", "1000", 1);
	kp_sys_init("kippu-backend");
	/* WATCHDOG_PID unset: sd_watchdog_enabled takes it as ours */
	kp_sys_ready("x");
	kp_sys_watchdog();
	kp_sys_status("y %d", 1);
	kp_sys_stopping();
	setenv("WATCHDOG_PID", "1", 1);
	kp_sys_init("kippu-backend");
	assert_int_equal(kp_sys_watchdog_usec(), 0);     /* another process's watchdog */
	unsetenv("WATCHDOG_USEC");
	unsetenv("WATCHDOG_PID");
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(stderr_lines_prefixed),
		cmocka_unit_test(journal_only_when_stderr_is_the_stream),
		cmocka_unit_test(journal_fields),
		cmocka_unit_test(private_files_0600),
		cmocka_unit_test(paths),
		cmocka_unit_test(notify_without_socket_is_silent),
	};

	return cmocka_run_group_tests(tests, setup, teardown);
}
