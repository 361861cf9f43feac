/* SPDX-License-Identifier: Apache-2.0 */
/* Helpers shared by the test programs (header-only: each test is its own program). */
#ifndef KP_TESTUTIL_H
#define KP_TESTUTIL_H

#include <errno.h>
#include <limits.h>
#include <poll.h>
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

/* Removes dir and all in it (kept when KP_KEEP_TMP is set); -1 if it could not. */
static TU_UNUSED int tu_rmdir(const char *dir)
{
	char cmd[4200];

	if (dir[0] == '\0' || getenv("KP_KEEP_TMP") != NULL)
		return 0;
	snprintf(cmd, sizeof(cmd), "rm -rf '%s'", dir);
	if (system(cmd) != 0) {
		fprintf(stderr, "could not remove %s\n", dir);
		return -1;
	}
	return 0;
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

/* The test program's scratch folder for its group fixtures: tu_scratch_setup makes it,
 * tu_tmp names a file in it (as tu_path), tu_scratch_teardown removes it. */
static TU_UNUSED char tu_scratch[256];

static TU_UNUSED const char *tu_tmp(const char *name)
{
	return tu_path(tu_scratch, name);
}

static TU_UNUSED int tu_scratch_setup(void **state)
{
	(void)state;
	tu_tmpdir(tu_scratch, sizeof(tu_scratch));
	return 0;
}

/* Fails the group when the folder could not be removed. */
static TU_UNUSED int tu_scratch_teardown(void **state)
{
	(void)state;
	return tu_rmdir(tu_scratch);
}

/* Files to write: a GTFS feed, a configuration; TU_WRITE_FILES(dir, { "stops.txt", "..." }, ...)
 * makes dir (its parent must exist) and writes each one into it. */
struct tu_file {
	const char *name;
	const char *text;
};

static TU_UNUSED void tu_write_files_n(const char *dir, const struct tu_file *files, size_t n)
{
	if (mkdir(dir, 0755) != 0 && errno != EEXIST)
		fail_msg("mkdir %s: %s", dir, strerror(errno));
	for (size_t i = 0; i < n; i++)
		tu_write(tu_path(dir, files[i].name), files[i].text);
}
#define TU_WRITE_FILES(dir, ...) \
	tu_write_files_n(dir, (const struct tu_file[]){ __VA_ARGS__ }, \
	                 sizeof((const struct tu_file[]){ __VA_ARGS__ }) / sizeof(struct tu_file))

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

/* Formats the arguments of a variadic function after its last named one, fmt, into the
 * array cmd (as tu_vcmd). */
#define TU_FMT(cmd, fmt) do { \
		va_list ap_; \
		va_start(ap_, fmt); \
		tu_vcmd(cmd, sizeof(cmd), fmt, ap_); \
		va_end(ap_); \
	} while (0)

/* Runs a shell command; returns its exit status (or -1 if it did not exit). */
static TU_UNUSED int tu_sh(const char *fmt, ...)
{
	char cmd[8192];
	int st;

	TU_FMT(cmd, fmt);
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

	TU_FMT(cmd, fmt);
	return tu_sh("cd '%s' && CTL='%s/kippuctl' && TERM_BIN='%s/kippu-terminal' && DB=backend.db "
	             "&& %s", dir, bin, bin, cmd);
}

/* Where the built programs are (the Makefile sets KP_BIN). */
static TU_UNUSED const char *tu_bin(void)
{
	const char *b = getenv("KP_BIN");

	return b != NULL ? b : "build/bin";
}

/* tu_bin() as an absolute path, for programs run from inside a test's own folder. */
static TU_UNUSED const char *tu_bin_abs(void)
{
	static char abs_bin[PATH_MAX + 64];
	char cwd[PATH_MAX];
	const char *bin = tu_bin();

	if (bin[0] == '/')
		return bin;
	if (getcwd(cwd, sizeof(cwd)) == NULL)
		fail_msg("getcwd: %s", strerror(errno));
	snprintf(abs_bin, sizeof(abs_bin), "%s/%s", cwd, bin);
	return abs_bin;
}

/* The cmocka teardown of a malloc'd fixture whose first member is its folder's path
 * (char dir[]): removes the folder, frees the fixture. */
static TU_UNUSED int tu_dir_fx_teardown(void **state)
{
	char *dir = *state;

	if (dir != NULL)
		tu_rmdir(dir);
	free(dir);
	return 0;
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

/* Starts a shell command beside the test; its pid, for tu_wait_pid. With out_fd, the
 * command's stdout goes to a pipe whose read end is left in *out_fd. Write `exec` before the
 * program ("cd DIR && exec PROGRAM ...") so that the pid, and the signals sent to it, are
 * the program's. */
static TU_UNUSED pid_t tu_spawn_piped(int *out_fd, const char *fmt, ...)
{
	char cmd[8192];
	int p[2] = { -1, -1 };
	pid_t pid;

	TU_FMT(cmd, fmt);
	if (out_fd != NULL && pipe(p) != 0)
		fail_msg("pipe: %s", strerror(errno));
	pid = fork();
	if (pid < 0)
		fail_msg("fork: %s", strerror(errno));
	if (pid == 0) {
		if (out_fd != NULL) {
			dup2(p[1], 1);
			close(p[0]);
			close(p[1]);
		}
		execl("/bin/sh", "sh", "-c", cmd, (char *)NULL);
		_exit(127);
	}
	if (out_fd != NULL) {
		close(p[1]);
		*out_fd = p[0];
	}
	return pid;
}

#define tu_spawn(...) tu_spawn_piped(NULL, __VA_ARGS__)

/* Reads one line from fd into line (without its newline), waiting for it until deadline_ms
 * (tu_mono_ms); the test fails, naming what, if the line does not come or fd closes first. */
static TU_UNUSED void tu_read_line(int fd, char *line, size_t cap, int64_t deadline_ms,
                                   const char *what)
{
	size_t n = 0;

	while (n < cap - 1 && (n == 0 || line[n - 1] != '\n')) {
		struct pollfd pfd = { .fd = fd, .events = POLLIN };

		if (poll(&pfd, 1, (int)(deadline_ms - tu_mono_ms())) <= 0)
			fail_msg("%s did not print its first line", what);
		if (read(fd, line + n, 1) != 1)
			fail_msg("%s exited before its first line", what);
		n++;
	}
	if (n > 0 && line[n - 1] == '\n')
		n--;
	line[n] = '\0';
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

/* A row of numbers (TU_INTS) or strings (TU_STRS) to compare with tu_expect_row / _strs. */
#define TU_INTS(...) ((const int64_t[]){ __VA_ARGS__ })
#define TU_STRS(...) ((const char *const[]){ __VA_ARGS__ })
#define TU_LEN(row) (sizeof(row) / sizeof((row)[0]))

/* Checks that a row has one value per name (names separated by spaces). */
static TU_UNUSED void tu_row_len(const char *names, size_t n_got, size_t n_want)
{
	size_t n = 0;

	for (const char *p = names; *p != '\0'; p++)
		if (*p != ' ' && (p == names || p[-1] == ' '))
			n++;
	assert_int_equal(n_got, n);
	assert_int_equal(n_want, n);
}

/* Prints which field of a row differs and how; 1, to count it. */
static TU_UNUSED int tu_row_differs(size_t i, const char *names, const char *fmt, ...)
{
	va_list ap;

	print_error("field %zu of \"%s\": ", i + 1, names);
	va_start(ap, fmt);
	vfprintf(stderr, fmt, ap);
	va_end(ap);
	fputc('\n', stderr);
	return 1;
}

/* Compares a whole row of values with the one wanted, field by field, naming every field
 * that differs before the test fails. */
#define tu_expect_row(names, got, want) tu_expect_ints_n(names, got, want, TU_LEN(got), TU_LEN(want))
static TU_UNUSED void tu_expect_ints_n(const char *names, const int64_t *got,
                                       const int64_t *want, size_t n_got, size_t n_want)
{
	size_t bad = 0;

	tu_row_len(names, n_got, n_want);
	for (size_t i = 0; i < n_got; i++)
		if (got[i] != want[i])
			bad += tu_row_differs(i, names, "%lld, want %lld", (long long)got[i],
			                      (long long)want[i]);
	if (bad != 0)
		fail_msg("%zu of %zu fields differ", bad, n_got);
}

#define tu_expect_strs(names, got, want) tu_expect_strs_n(names, got, want, TU_LEN(got), TU_LEN(want))
static TU_UNUSED void tu_expect_strs_n(const char *names, const char *const *got,
                                       const char *const *want, size_t n_got, size_t n_want)
{
	size_t bad = 0;

	tu_row_len(names, n_got, n_want);
	for (size_t i = 0; i < n_got; i++)
		if (strcmp(got[i], want[i]) != 0)
			bad += tu_row_differs(i, names, "\"%s\", want \"%s\"", got[i], want[i]);
	if (bad != 0)
		fail_msg("%zu of %zu string fields differ", bad, n_got);
}

/* A decoder's answer to any input (fuzzing): an error among bad (ending with 0, which is every
 * module's OK), or an object that encodes back to exactly the input. Returns the decoder's code
 * so that the caller can check what a refused decode leaves behind. */
static TU_UNUSED int tu_expect_reencodes(const uint8_t *p, size_t n, void *obj,
                                         int (*decode)(const uint8_t *, size_t, void *),
                                         int (*encode)(const void *, uint8_t **, size_t *),
                                         void (*clear)(void *), const int64_t *bad)
{
	uint8_t *out = NULL;
	size_t k = 0;
	int rc = decode(p, n, obj);

	if (rc != 0) {
		while (*bad != 0 && *bad != rc)
			bad++;
		if (*bad == 0)
			fail_msg("the decoder answered %d, not one of its refusals", rc);
		return rc;
	}
	assert_int_equal(encode(obj, &out, &k), 0);
	assert_int_equal(k, n);
	assert_memory_equal(out, p, n);
	free(out);
	if (clear != NULL)
		clear(obj);
	return rc;
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

/* Fails the test, naming what and printing both, unless got holds the bytes of want_hex. */
static TU_UNUSED void tu_expect_hex(const char *what, const uint8_t *got, size_t got_len,
                                    const char *want_hex)
{
	uint8_t want[600];
	size_t n = tu_hex(want_hex, want, sizeof(want));

	if (got_len != n || memcmp(got, want, n) != 0) {
		fprintf(stderr, "%s: want (%zu): %s\ngot  (%zu):", what, n, want_hex, got_len);
		for (size_t i = 0; i < got_len; i++)
			fprintf(stderr, " %02X", got[i]);
		fprintf(stderr, "\n");
		fail_msg("%s: bytes differ", what);
	}
}

/* Writes a mock reader scenario to path: head, then n taps, per_s a second from +0, taking
 * turns between cards a (the even ones) and b, then tail. */
static TU_UNUSED void tu_write_taps(const char *path, const char *head, int n, int per_s,
                                    const char *a, const char *b, const char *tail)
{
	FILE *fp = fopen(path, "w");

	assert_non_null(fp);
	fputs(head, fp);
	for (int i = 0; i < n; i++)
		fprintf(fp, "tap +%d.%03d %s\n", i / per_s, i % per_s * (1000 / per_s), i % 2 ? b : a);
	fputs(tail, fp);
	assert_int_equal(fclose(fp), 0);
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
