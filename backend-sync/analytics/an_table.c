/* SPDX-License-Identifier: Apache-2.0 */
/* Cells keyed by text, k and complementary suppression, and the CSV and JSON they are
 * written as. */
#include <errno.h>
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>

#include "an_int.h"

static uint64_t hash(const char *s)
{
	uint64_t h = 1469598103934665603ULL;          /* FNV-1a */

	for (; *s != '\0'; s++)
		h = (h ^ (unsigned char)*s) * 1099511628211ULL;
	return h;
}

static int grow(struct an_table *t)
{
	size_t cap = t->cap ? t->cap * 2 : 64;
	struct an_cell *c = calloc(cap, sizeof(*c));

	if (c == NULL)
		return -1;
	for (size_t i = 0; i < t->cap; i++) {
		size_t j;

		if (t->cells[i].key == NULL)
			continue;
		for (j = t->cells[i].hash & (cap - 1); c[j].key != NULL; j = (j + 1) & (cap - 1))
			;
		c[j] = t->cells[i];
	}
	free(t->cells);
	t->cells = c;
	t->cap = cap;
	return 0;
}

struct an_cell *an_add(struct an_table *t, const char *key, uint64_t card)
{
	struct an_cell *c;
	uint64_t h = hash(key);
	size_t j;

	if ((t->n + 1) * 2 > t->cap && grow(t) != 0)
		return NULL;
	for (j = h & (t->cap - 1); t->cells[j].key != NULL; j = (j + 1) & (t->cap - 1)) {
		if (t->cells[j].hash == h && strcmp(t->cells[j].key, key) == 0)
			break;
	}
	c = &t->cells[j];
	if (c->key == NULL) {
		c->key = strdup(key);
		if (c->key == NULL)
			return NULL;
		c->hash = h;
		t->n++;
	}
	if (c->last_card != card) {
		c->last_card = card;
		c->riders++;
	}
	return c;
}

struct an_cell *an_find(const struct an_table *t, const char *key)
{
	uint64_t h = hash(key);

	if (t->cap == 0)
		return NULL;
	for (size_t j = h & (t->cap - 1); t->cells[j].key != NULL; j = (j + 1) & (t->cap - 1)) {
		if (t->cells[j].hash == h && strcmp(t->cells[j].key, key) == 0)
			return &t->cells[j];
	}
	return NULL;
}

void an_table_free(struct an_table *t)
{
	for (size_t i = 0; i < t->cap; i++)
		free(t->cells[i].key);
	free(t->cells);
	t->cells = NULL;
	t->n = t->cap = 0;
}

static int by_key(const void *a, const void *b)
{
	const struct an_cell *x = *(const struct an_cell *const *)a;
	const struct an_cell *y = *(const struct an_cell *const *)b;

	return strcmp(x->key, y->key);
}

/* The cells in use, sorted by key (NULL when there are none or no memory). */
struct an_cell **an_sorted(const struct an_table *t)
{
	struct an_cell **v = malloc((t->n ? t->n : 1) * sizeof(*v));
	size_t n = 0;

	if (v == NULL)
		return NULL;
	for (size_t i = 0; i < t->cap; i++) {
		if (t->cells[i].key != NULL)
			v[n++] = &t->cells[i];
	}
	qsort(v, n, sizeof(*v), by_key);
	return v;
}

/* Complementary suppression, not rounding: published figures stay exact (a planner adds them
 * up), and the table's total minus its published cells gives only the sum of the suppressed
 * ones, which then hold k riders or more and are two cells or more, so no cell below k can be
 * recovered by subtraction. */
size_t an_suppress(struct an_table *t, int k)
{
	size_t n = 0, low;
	int64_t sum = 0;

	for (size_t i = 0; i < t->cap; i++) {
		struct an_cell *c = &t->cells[i];

		if (c->key != NULL && c->riders < k) {
			c->suppressed = 1;
			sum += c->riders;
			n++;
		}
	}
	while (n > 0 && n < t->n && (sum < k || n < 2)) {
		struct an_cell *min = NULL;

		for (size_t i = 0; i < t->cap; i++) {
			struct an_cell *c = &t->cells[i];

			if (c->key == NULL || c->suppressed)
				continue;
			/* smallest riders, then key: the same data suppresses the same cells */
			if (min == NULL || c->riders < min->riders ||
			    (c->riders == min->riders && strcmp(c->key, min->key) < 0))
				min = c;
		}
		min->suppressed = 1;
		sum += min->riders;
		n++;
	}
	low = n;
	return low;
}

void an_csv_field(FILE *fp, const char *s)
{
	if (strpbrk(s, ",\"\r\n") == NULL) {
		fputs(s, fp);
		return;
	}
	fputc('"', fp);
	for (; *s != '\0'; s++) {
		if (*s == '"')
			fputc('"', fp);
		fputc(*s, fp);
	}
	fputc('"', fp);
}

void an_json_str(FILE *fp, const char *s)
{
	fputc('"', fp);
	for (; *s != '\0'; s++) {
		unsigned char ch = (unsigned char)*s;

		if (ch == '"' || ch == '\\')
			fprintf(fp, "\\%c", ch);
		else if (ch < 0x20 || ch == '<' || ch == '>' || ch == '&')   /* safe in HTML too */
			fprintf(fp, "\\u%04x", ch);
		else
			fputc(ch, fp);
	}
	fputc('"', fp);
}

/* The key's fields of c into f[] (pointers into buf). */
static void split(const char *key, char *buf, size_t cap, const char **f, int n)
{
	char *p = buf;

	snprintf(buf, cap, "%s", key);
	for (int i = 0; i < n; i++) {
		char *sep = p != NULL ? strchr(p, '\x1f') : NULL;

		f[i] = p != NULL ? p : "";
		if (sep != NULL)
			*sep = '\0';
		p = sep != NULL ? sep + 1 : NULL;
	}
}

static void write_cell(const struct an_table *t, const struct an_cell *c, FILE *csv, FILE *js,
                       int first)
{
	const char *f[8];
	char buf[512];

	split(c->key, buf, sizeof(buf), f, t->nkey);
	fputs(first ? "\n  {" : ",\n  {", js);
	for (int i = 0; i < t->nkey; i++) {
		an_csv_field(csv, f[i]);
		fputc(',', csv);
		an_json_str(js, t->cols[i]);
		fputc(':', js);
		an_json_str(js, f[i]);
		fputc(',', js);
	}
	for (int i = 0; i < t->nv; i++) {
		an_json_str(js, t->cols[t->nkey + i]);
		if (c->suppressed) {
			fputs(":null,", js);
			fputc(',', csv);
		} else {
			fprintf(js, ":%" PRId64 ",", c->v[i]);
			fprintf(csv, "%" PRId64 ",", c->v[i]);
		}
	}
	if (c->suppressed) {
		fputs("\"riders\":null,\"suppressed\":true}", js);
		fputs(",1\n", csv);
	} else {
		fprintf(js, "\"riders\":%" PRId64 ",\"suppressed\":false}", c->riders);
		fprintf(csv, "%" PRId64 ",0\n", c->riders);
	}
}

int an_write(const struct an_table *t, const char *dir, FILE *js, int first, char *err,
             size_t cap)
{
	char path[4096];
	struct an_cell **v = an_sorted(t);
	int64_t total[AN_NV] = { 0 };
	FILE *csv;

	if (v == NULL) {
		snprintf(err, cap, "out of memory");
		return KP_AN_E_NOMEM;
	}
	snprintf(path, sizeof(path), "%s/%s.csv", dir, t->name);
	csv = fopen(path, "w");
	if (csv == NULL) {
		snprintf(err, cap, "cannot write %s: %s", path, strerror(errno));
		free(v);
		return KP_AN_E_IO;
	}
	for (int i = 0; i < t->nkey + t->nv; i++)
		fprintf(csv, "%s,", t->cols[i]);
	fputs("riders,suppressed\n", csv);
	fprintf(js, "%s", first ? "\n\"" : ",\n\"");
	fprintf(js, "%s\":{\"cells\":[", t->name);
	for (size_t i = 0; i < t->n; i++) {
		write_cell(t, v[i], csv, js, i == 0);
		for (int j = 0; j < t->nv; j++)
			total[j] += v[i]->v[j];
	}
	fputs("],\"total\":{", js);
	for (int j = 0; j < t->nv; j++)
		fprintf(js, "%s\"%s\":%" PRId64, j ? "," : "", t->cols[t->nkey + j], total[j]);
	fputs("}}", js);
	free(v);
	if (fclose(csv) != 0) {
		snprintf(err, cap, "cannot write %s: %s", path, strerror(errno));
		return KP_AN_E_IO;
	}
	return KP_AN_OK;
}
