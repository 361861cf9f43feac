/* SPDX-License-Identifier: Apache-2.0 */
/* kippuctl's listings: each declares its columns once (struct kp_ctl_col) and emits rows of
 * text; this layer prints them as the human table (or the listing's own human line), as JSON
 * lines (jansson) or as CSV (RFC 4180, LF line ends). */
#include <errno.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "kp_tools.h"

int kp_ctl_out_format(const struct kp_ctl_fmt *f, enum kp_ctl_format *format)
{
	if (f->json && f->csv) {
		fprintf(stderr, "kippuctl: --json and --csv: give one of them, not both\n");
		return 2;
	}
	*format = f->json ? KP_OUT_JSON : f->csv ? KP_OUT_CSV : KP_OUT_HUMAN;
	return 0;
}

void kp_ctl_out_begin(struct kp_ctl_out *o, enum kp_ctl_format format,
                      const struct kp_ctl_col *cols, int ncol, int (*width)(const char *name))
{
	memset(o, 0, sizeof(*o));
	o->format = format;
	o->cols = cols;
	o->ncol = ncol;
	o->width = width;
	o->fp = stdout;
}

static int default_width(const char *name)
{
	return strlen(name) > 8 ? (int)strlen(name) : 8;
}

/* A value that stands for "none": SQL NULL, or the column's none text ("-", "never"). */
static int absent(const struct kp_ctl_col *c, const char *v)
{
	return v == NULL || (c->none != NULL && strcmp(v, c->none) == 0);
}

static void csv_field(FILE *fp, const char *v)
{
	if (strpbrk(v, ",\"\r\n") == NULL) {
		fputs(v, fp);
		return;
	}
	fputc('"', fp);
	for (; *v != '\0'; v++) {
		if (*v == '"')
			fputc('"', fp);
		fputc(*v, fp);
	}
	fputc('"', fp);
}

static void csv_line(const struct kp_ctl_out *o, const char *const *vals, int header)
{
	for (int i = 0; i < o->ncol; i++) {
		const char *v = header ? o->cols[i].name : vals[i];

		if (i > 0)
			fputc(',', o->fp);
		if (header || !absent(&o->cols[i], v))
			csv_field(o->fp, v);
	}
	fputc('\n', o->fp);
}

static void table_line(const struct kp_ctl_out *o, const char *const *vals, int header)
{
	int (*width)(const char *) = o->width != NULL ? o->width : default_width;

	for (int i = 0; i < o->ncol; i++) {
		const char *n = o->cols[i].name;
		const char *v = header ? n : vals[i] != NULL ? vals[i] : "-";

		fprintf(o->fp, "%-*s ", width(n), v);
	}
	fputc('\n', o->fp);
}

/* One column's value as JSON: NULL (with the reason on stderr) when it cannot be one. */
static json_t *json_value(const struct kp_ctl_col *c, const char *v)
{
	json_t *j;

	if (absent(c, v))
		return json_null();
	if (c->type == KP_COL_INT || c->type == KP_COL_AMOUNT) {
		char *end = NULL;
		long long n;

		errno = 0;
		n = strtoll(v, &end, 10);
		if (errno != 0 || end == v || *end != '\0') {
			fprintf(stderr, "kippuctl: column %s: '%.40s' is not a whole number\n", c->name, v);
			return NULL;
		}
		return json_integer((json_int_t)n);
	}
	j = json_string(v);
	if (j == NULL)
		fprintf(stderr, "kippuctl: column %s: not UTF-8 text\n", c->name);
	return j;
}

static int json_line(const struct kp_ctl_out *o, const char *const *vals)
{
	json_t *row = json_object();
	char *text = NULL;
	int rc = -1;

	if (row == NULL)
		return -1;
	for (int i = 0; i < o->ncol; i++) {
		json_t *v = json_value(&o->cols[i], vals[i]);

		if (v == NULL || json_object_set_new(row, o->cols[i].name, v) != 0)
			goto out;
	}
	text = json_dumps(row, JSON_COMPACT);
	if (text != NULL) {
		fprintf(o->fp, "%s\n", text);
		rc = 0;
	}
out:
	free(text);
	json_decref(row);
	return rc;
}

int kp_ctl_out_row(struct kp_ctl_out *o, const char *const *vals)
{
	if (o->failed)
		return -1;
	switch (o->format) {
	case KP_OUT_JSON:
		if (json_line(o, vals) != 0)
			o->failed = 1;
		break;
	case KP_OUT_CSV:
		if (o->rows == 0)
			csv_line(o, NULL, 1);
		csv_line(o, vals, 0);
		break;
	case KP_OUT_HUMAN:
		if (o->human != NULL) {
			o->human(o, vals);
			break;
		}
		if (o->rows == 0)
			table_line(o, NULL, 1);
		table_line(o, vals, 0);
		break;
	}
	o->rows++;
	return o->failed ? -1 : 0;
}

int kp_ctl_out_report(void *arg, int ncol, const char *const *cols, const char *const *names)
{
	struct kp_ctl_out *o = arg;

	/* The report's columns must be the ones declared: the JSON keys are a promise. */
	for (int i = 0; i < ncol || i < o->ncol; i++) {
		if (i >= ncol || i >= o->ncol || strcmp(names[i], o->cols[i].name) != 0) {
			fprintf(stderr, "kippuctl: internal error: report column %d is %s, declared %s\n",
			        i, i < ncol ? names[i] : "(none)", i < o->ncol ? o->cols[i].name : "(none)");
			o->failed = 1;
			return -1;
		}
	}
	return kp_ctl_out_row(o, cols);
}

int kp_ctl_out_end(struct kp_ctl_out *o, const char *none)
{
	if (o->failed)
		return -1;
	if (o->rows == 0 && o->format == KP_OUT_CSV)
		csv_line(o, NULL, 1);
	else if (o->rows == 0 && o->format == KP_OUT_HUMAN && none != NULL)
		fprintf(o->fp, "%s\n", none);
	return 0;
}
