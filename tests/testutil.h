/* Helpers shared by the test programs (header-only: each test is its own program). */
#ifndef KP_TESTUTIL_H
#define KP_TESTUTIL_H

#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#define TU_UNUSED __attribute__((unused))

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

/* Runs a shell command; returns its exit status (or -1 if it did not exit). */
static TU_UNUSED int tu_sh(const char *fmt, ...)
{
	char cmd[8192];
	va_list ap;
	int st;

	va_start(ap, fmt);
	vsnprintf(cmd, sizeof(cmd), fmt, ap);
	va_end(ap);
	st = system(cmd);
	if (st == -1 || !WIFEXITED(st))
		return -1;
	return WEXITSTATUS(st);
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

#endif
