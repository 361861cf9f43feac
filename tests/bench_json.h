/* SPDX-License-Identifier: Apache-2.0 */
/* The benches' JSON output: an array of {"metric", "unit", "value"}; `make bench
 * BENCH_JSON=path` has kippu-bench write it and the others add to it (--json-append). */
#ifndef KP_BENCH_JSON_H
#define KP_BENCH_JSON_H

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

struct metric { const char *name, *unit; double value; };

/* Writes the metrics as a JSON array, or adds them to the array already in path. */
static __attribute__((unused)) int write_json(const char *path, int append, const struct metric *m, size_t n)
{
	char *old = NULL;
	size_t old_len = 0;
	FILE *fp;

	if (append && (fp = fopen(path, "r")) != NULL) {
		long len;

		fseek(fp, 0, SEEK_END);
		len = ftell(fp);
		fseek(fp, 0, SEEK_SET);
		old = calloc(1, (size_t)len + 1);
		if (old == NULL || fread(old, 1, (size_t)len, fp) != (size_t)len) {
			fclose(fp);
			free(old);
			return -1;
		}
		fclose(fp);
		old_len = (size_t)len;
		/* Cut at the closing bracket; an empty array adds no comma. */
		while (old_len > 0 && old[old_len - 1] != ']')
			old_len--;
		if (old_len == 0 || strchr(old, '[') == NULL) {
			fprintf(stderr, "bench: %s does not hold a JSON array\n", path);
			free(old);
			return -1;
		}
		old_len--;
		while (old_len > 0 && (old[old_len - 1] == ' ' || old[old_len - 1] == '\n'))
			old_len--;
	}
	fp = fopen(path, "w");
	if (fp == NULL) {
		perror(path);
		free(old);
		return -1;
	}
	if (old != NULL) {
		fwrite(old, 1, old_len, fp);
		if (old[old_len - 1] != '[')
			fputc(',', fp);
		fputc('\n', fp);
	} else {
		fputs("[\n", fp);
	}
	for (size_t i = 0; i < n; i++)
		fprintf(fp, "  {\"metric\": \"%s\", \"unit\": \"%s\", \"value\": %.4f}%s\n", m[i].name,
		        m[i].unit, m[i].value, i + 1 < n ? "," : "");
	fputs("]\n", fp);
	free(old);
	return fclose(fp) == 0 ? 0 : -1;
}

#endif
