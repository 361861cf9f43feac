/* Helpers shared by the test programs (header-only: each test is its own program). */
#ifndef KP_TESTUTIL_H
#define KP_TESTUTIL_H

#include <errno.h>
#include <limits.h>
#include <signal.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#define TU_UNUSED __attribute__((unused))

/* How long a test waits for an event (a file, a log line, a process's exit) before it fails:
 * generous, because a loaded machine is slow, and only a broken program ever waits it out. */
#define TU_WAIT_S 60

/* A fresh directory under $TMPDIR (or /tmp). */
static TU_UNUSED void tu_tmpdir(char *out, size_t cap)
{
	const char *base = getenv("TMPDIR");

	snprintf(out, cap, "%s/kippu-test-XXXXXX", base != NULL ? base : "/tmp");
	if (mkdtemp(out) == NULL) {
		perror("mkdtemp");
		abort();
	}
}

static TU_UNUSED void tu_rmdir(const char *dir)
{
	char cmd[4200];

	if (dir[0] == '\0' || getenv("KP_KEEP_TMP") != NULL)
		return;
	snprintf(cmd, sizeof(cmd), "rm -rf '%s'", dir);
	if (system(cmd) != 0)
		fprintf(stderr, "could not remove %s\n", dir);
}

static TU_UNUSED void tu_write(const char *path, const char *text)
{
	FILE *fp = fopen(path, "w");

	if (fp == NULL || fputs(text, fp) < 0 || fclose(fp) != 0) {
		perror(path);
		abort();
	}
}

/* dir/name, in one of eight buffers used in turn so that one call can take several paths;
 * one that does not fit fails the test. */
static TU_UNUSED const char *tu_path(const char *dir, const char *name)
{
	static char buf[8][PATH_MAX];
	static int slot;
	char *p = buf[slot++ % 8];
	int n = snprintf(p, PATH_MAX, "%s/%s", dir, name);

	if (n < 0 || n >= PATH_MAX)
		fail_msg("path %s/%s does not fit", dir, name);
	return p;
}

static TU_UNUSED void tu_write_bytes(const char *path, const void *data, size_t len)
{
	FILE *fp = fopen(path, "wb");

	assert_non_null(fp);
	assert_int_equal(fwrite(data, 1, len, fp), len);
	assert_int_equal(fclose(fp), 0);
}

/* Reads the file at path into buf, NUL-terminated; the file must exist and fit in cap - 1
 * bytes. Its length. */
static TU_UNUSED size_t tu_read_bytes(const char *path, void *buf, size_t cap)
{
	FILE *fp = fopen(path, "rb");
	size_t n;

	assert_non_null(fp);
	n = fread(buf, 1, cap, fp);
	fclose(fp);
	assert_true(n < cap);
	((char *)buf)[n] = '\0';
	return n;
}

/* Reads a whole file into a malloc'd NUL-terminated buffer (NULL if missing). */
static TU_UNUSED char *tu_read(const char *path)
{
	FILE *fp = fopen(path, "r");
	char *buf;
	long n;

	if (fp == NULL)
		return NULL;
	fseek(fp, 0, SEEK_END);
	n = ftell(fp);
	fseek(fp, 0, SEEK_SET);
	buf = calloc(1, (size_t)n + 1);
	if (buf != NULL && fread(buf, 1, (size_t)n, fp) != (size_t)n) {
		free(buf);
		buf = NULL;
	}
	fclose(fp);
	return buf;
}

/* A shell command from fmt into cmd; one that does not fit fails the test rather than
 * running cut short. */
static TU_UNUSED void tu_vcmd(char *cmd, size_t cap, const char *fmt, va_list ap)
{
	int n = vsnprintf(cmd, cap, fmt, ap);

	if (n < 0 || (size_t)n >= cap)
		fail_msg("shell command of %d bytes does not fit %zu: %.60s...", n, cap, cmd);
}

/* Runs a shell command; returns its exit status (or -1 if it did not exit). */
static TU_UNUSED int tu_sh(const char *fmt, ...)
{
	char cmd[8192];
	va_list ap;
	int st;

	va_start(ap, fmt);
	tu_vcmd(cmd, sizeof(cmd), fmt, ap);
	va_end(ap);
	st = system(cmd);
	if (st == -1 || !WIFEXITED(st))
		return -1;
	return WEXITSTATUS(st);
}

/* Runs a shell command in dir with the programs in bin at hand: $CTL is kippuctl, $TERM_BIN
 * kippu-terminal, $DB backend.db; its exit status as tu_sh's. */
static TU_UNUSED int tu_sh_in(const char *dir, const char *bin, const char *fmt, ...)
{
	char cmd[6000];
	va_list ap;

	va_start(ap, fmt);
	tu_vcmd(cmd, sizeof(cmd), fmt, ap);
	va_end(ap);
	return tu_sh("cd '%s' && CTL='%s/kippuctl' && TERM_BIN='%s/kippu-terminal' && DB=backend.db "
	             "&& %s", dir, bin, bin, cmd);
}

/* Where the built programs are (the Makefile sets KP_BIN). */
static TU_UNUSED const char *tu_bin(void)
{
	const char *b = getenv("KP_BIN");

	return b != NULL ? b : "build/bin";
}

/* Counts the lines of text that contain needle. */
static TU_UNUSED int tu_count(const char *text, const char *needle)
{
	int n = 0;

	for (const char *p = text; p != NULL && (p = strstr(p, needle)) != NULL; p += strlen(needle))
		n++;
	return n;
}

/* The project's root: the working directory the Makefile runs tests from, or the nearest
 * folder above it that holds tests/testutil.h (a test run from inside its build folder). */
static TU_UNUSED const char *tu_root(void)
{
	static char root[PATH_MAX];
	char probe[PATH_MAX + 32];
	struct stat sb;
	char *slash;

	if (root[0] != '\0')
		return root;
	if (getcwd(root, sizeof(root) - 1) == NULL)
		fail_msg("getcwd: %s", strerror(errno));
	for (;;) {
		snprintf(probe, sizeof(probe), "%s/tests/testutil.h", root);
		if (stat(probe, &sb) == 0)
			return root;
		slash = strrchr(root, '/');
		if (slash == NULL || slash == root)
			break;
		*slash = '\0';
	}
	if (getcwd(root, sizeof(root) - 1) == NULL)
		fail_msg("getcwd: %s", strerror(errno));
	return root;                      /* not in the tree: relative paths stay as they were */
}

/* The real GTFS feeds shared beside the project: $KP_GTFS_DIR (relative to the working
 * directory) or ../shared/data/gtfs from the project's root, as an absolute path. The test
 * fails, naming the path, when it is not a folder. */
static TU_UNUSED const char *tu_gtfs_dir(void)
{
	static char dir[PATH_MAX + 64];
	const char *env = getenv("KP_GTFS_DIR");
	char cwd[PATH_MAX];
	struct stat sb;

	if (env != NULL && env[0] == '/')
		snprintf(dir, sizeof(dir), "%s", env);
	else if (env != NULL && env[0] != '\0' && getcwd(cwd, sizeof(cwd)) != NULL)
		snprintf(dir, sizeof(dir), "%s/%s", cwd, env);
	else
		snprintf(dir, sizeof(dir), "%s/../shared/data/gtfs", tu_root());
	if (stat(dir, &sb) != 0 || !S_ISDIR(sb.st_mode))
		fail_msg("the real GTFS feeds are not at %s (keep shared/ beside the project, or set "
		         "KP_GTFS_DIR)", dir);
	return dir;
}

static TU_UNUSED int64_t tu_mono_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static TU_UNUSED void tu_sleep_ms(int64_t ms)
{
	struct timespec ts = { (time_t)(ms / 1000), (long)(ms % 1000) * 1000000L };

	if (ms > 0)
		while (nanosleep(&ts, &ts) != 0 && errno == EINTR)
			continue;
}

/* How many times needle is in the file at path (0 if there is no such file yet). */
static TU_UNUSED int tu_file_count(const char *path, const char *needle)
{
	char *text = tu_read(path);
	int n = text != NULL ? tu_count(text, needle) : 0;

	free(text);
	return n;
}

/* 1 once the file at path holds needle at least n times (a log line, an HMI line), 0 if it
 * does not within timeout_s seconds. */
static TU_UNUSED int tu_poll_text(const char *path, const char *needle, int n, int timeout_s)
{
	int64_t deadline = tu_mono_ms() + (int64_t)timeout_s * 1000;

	while (tu_file_count(path, needle) < n) {
		if (tu_mono_ms() > deadline)
			return 0;
		tu_sleep_ms(20);
	}
	return 1;
}

/* tu_poll_text, failing the test with what did not appear. */
static TU_UNUSED void tu_wait_text(const char *path, const char *needle, int n, int timeout_s)
{
	if (!tu_poll_text(path, needle, n, timeout_s))
		fail_msg("after %d s, %s holds \"%s\" %d time(s), not %d", timeout_s, path, needle,
		         tu_file_count(path, needle), n);
}

/* Starts a shell command beside the test; its pid, for tu_wait_pid. Write `exec` before the
 * program ("cd DIR && exec PROGRAM ...") so that the pid, and the signals sent to it, are
 * the program's. */
static TU_UNUSED pid_t tu_spawn(const char *fmt, ...)
{
	char cmd[8192];
	va_list ap;
	pid_t pid;

	va_start(ap, fmt);
	tu_vcmd(cmd, sizeof(cmd), fmt, ap);
	va_end(ap);
	pid = fork();
	if (pid < 0)
		fail_msg("fork: %s", strerror(errno));
	if (pid == 0) {
		execl("/bin/sh", "sh", "-c", cmd, (char *)NULL);
		_exit(127);
	}
	return pid;
}

/* Waits up to timeout_s seconds for a child to exit; its exit status (-1 if a signal ended
 * it). One that does not exit is killed, and the test fails naming it (what). */
static TU_UNUSED int tu_wait_pid(pid_t pid, int timeout_s, const char *what)
{
	int64_t deadline = tu_mono_ms() + (int64_t)timeout_s * 1000;
	int st = 0;
	pid_t r;

	while ((r = waitpid(pid, &st, WNOHANG)) == 0) {
		if (tu_mono_ms() > deadline) {
			kill(pid, SIGKILL);
			waitpid(pid, NULL, 0);
			fail_msg("%s did not exit within %d s (killed)", what, timeout_s);
		}
		tu_sleep_ms(20);
	}
	if (r != pid)
		fail_msg("waitpid for %s: %s", what, strerror(errno));
	return WIFEXITED(st) ? WEXITSTATUS(st) : -1;
}

/* Test vectors written as hex: whitespace is skipped, anything else but hex digits fails. */
static TU_UNUSED size_t tu_hex(const char *s, uint8_t *out, size_t cap)
{
	size_t n = 0;
	int hi = -1;

	for (; *s != '\0'; s++) {
		int v = 0;

		if (*s == ' ' || *s == '\n' || *s == '\t')
			continue;
		if (*s >= '0' && *s <= '9')
			v = *s - '0';
		else if (*s >= 'a' && *s <= 'f')
			v = *s - 'a' + 10;
		else if (*s >= 'A' && *s <= 'F')
			v = *s - 'A' + 10;
		else
			fail_msg("bad hex in test vector: %s", s);
		if (hi < 0) {
			hi = v;
			continue;
		}
		assert_true(n < cap);
		out[n++] = (uint8_t)(hi << 4 | v);
		hi = -1;
	}
	assert_int_equal(hi, -1);
	return n;
}

/* Starts kippu-backend (programs in bin) in dir on 127.0.0.1:port (0: any free port) with
 * the fixture's ca.crt, backend.crt and backend.key and a client deadline of deadline_ms,
 * and waits until it listens; its pid (a child of the test), and the port in *port_out.
 * Its stdout goes to backend.out, its log to backend.log. */
static TU_UNUSED pid_t tu_backend_start(const char *dir, const char *bin, int port,
                                        int deadline_ms, int *port_out)
{
	char out[1024];
	FILE *fp;
	pid_t pid;

	snprintf(out, sizeof(out), "%s/backend.out", dir);
	remove(out);                      /* a previous run's "listening" line is not this one's */
	pid = tu_spawn("cd '%s' && exec '%s/kippu-backend' --listen 127.0.0.1:%d --db backend.db "
	               "--ca ca.crt --cert backend.crt --key backend.key --timeout-ms %d "
	               "> backend.out 2>> backend.log", dir, bin, port, deadline_ms);
	tu_wait_text(out, "listening", 1, TU_WAIT_S);
	fp = fopen(out, "r");
	if (fp == NULL || fscanf(fp, "kippu-backend: listening on 127.0.0.1:%d", port_out) != 1)
		fail_msg("%s: no port in kippu-backend's first line", out);
	fclose(fp);
	return pid;
}

#endif
