/* SPDX-License-Identifier: Apache-2.0 */
/* RFC 4180 records from a GTFS file held in memory (see kp_csv.h). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "kp_fare.h"
#include "kp_csv.h"

/* GTFS files are small (the largest real fare_rules.txt is under 2 MB); refuse absurd ones. */
#define CSV_MAX_BYTES (256u * 1024 * 1024)

static int read_all(const char *path, char **out, size_t *len)
{
	FILE *fp = fopen(path, "rb");
	char *buf = NULL;
	long n;
	int rc = KP_E_IO;

	if (fp == NULL)
		return KP_E_IO;
	if (fseek(fp, 0, SEEK_END) != 0 || (n = ftell(fp)) < 0 || (unsigned long)n > CSV_MAX_BYTES ||
	    fseek(fp, 0, SEEK_SET) != 0)
		goto out;
	buf = malloc((size_t)n + 1);
	if (buf == NULL) {
		rc = KP_E_NOMEM;
		goto out;
	}
	if (fread(buf, 1, (size_t)n, fp) != (size_t)n)
		goto out;
	buf[n] = '\0';
	*out = buf;
	*len = (size_t)n;
	buf = NULL;
	rc = KP_OK;
out:
	free(buf);
	fclose(fp);
	return rc;
}

static int at_eol(const struct kp_csv *c, size_t *eol_len)
{
	if (c->pos >= c->len) {
		*eol_len = 0;
		return 1;
	}
	if (c->buf[c->pos] == '\n') {
		*eol_len = 1;
		return 1;
	}
	if (c->buf[c->pos] == '\r' && (c->pos + 1 >= c->len || c->buf[c->pos + 1] == '\n')) {
		*eol_len = c->pos + 1 < c->len ? 2 : 1;
		return 1;
	}
	return 0;
}

/* A NUL byte would silently cut the field where C strings end: the file is refused. */
static int nul_field(const struct kp_csv *c, char *err, size_t err_cap)
{
	snprintf(err, err_cap, "%s:%d: field %zu: a NUL byte (0x00) inside the field", c->name,
	         c->line, c->n_fields);
	return KP_E_FEED;
}

/* One record into c->fields (unquoted into c->rec); 0 at the end of the file. */
static int parse_record(struct kp_csv *c, char *err, size_t err_cap)
{
	char *out = c->rec;
	size_t eol = 0;

	c->n_fields = 0;
	c->rec_line = c->line;
	if (c->pos >= c->len)
		return 0;
	for (;;) {
		if (c->n_fields == KP_CSV_MAX_FIELDS) {
			snprintf(err, err_cap, "%s:%d: more than %d fields", c->name, c->rec_line,
			         KP_CSV_MAX_FIELDS);
			return KP_E_FEED;
		}
		c->fields[c->n_fields++] = out;
		if (c->pos < c->len && c->buf[c->pos] == '"') {
			int open_line = c->line;

			c->pos++;
			for (;;) {
				if (c->pos >= c->len) {
					snprintf(err, err_cap, "%s:%d: field %zu: quote not closed",
					         c->name, open_line, c->n_fields);
					return KP_E_FEED;
				}
				if (c->buf[c->pos] == '"') {
					if (c->pos + 1 < c->len && c->buf[c->pos + 1] == '"') {
						*out++ = '"';
						c->pos += 2;
						continue;
					}
					c->pos++;
					break;
				}
				if (c->buf[c->pos] == '\n')
					c->line++;
				if (c->buf[c->pos] == '\0')
					return nul_field(c, err, err_cap);
				*out++ = c->buf[c->pos++];
			}
			if (!at_eol(c, &eol) && c->buf[c->pos] != ',') {
				snprintf(err, err_cap, "%s:%d: field %zu: text after a closing quote",
				         c->name, c->line, c->n_fields);
				return KP_E_FEED;
			}
		} else {
			while (!at_eol(c, &eol) && c->buf[c->pos] != ',') {
				if (c->buf[c->pos] == '\0')
					return nul_field(c, err, err_cap);
				*out++ = c->buf[c->pos++];
			}
		}
		*out++ = '\0';
		if (at_eol(c, &eol)) {
			c->pos += eol;
			if (eol > 0)
				c->line++;
			return 1;
		}
		c->pos++;       /* the comma */
	}
}

static int csv_open(struct kp_csv *c, const char *dir, const char *name, int *missing,
                    char *err, size_t err_cap)
{
	char path[4096];
	size_t hdr_len = 0;
	int rc;

	memset(c, 0, sizeof(*c));
	*missing = 0;
	snprintf(c->name, sizeof(c->name), "%s", name);
	if ((size_t)snprintf(path, sizeof(path), "%s/%s", dir, name) >= sizeof(path))
		return KP_E_INVAL;
	rc = read_all(path, &c->buf, &c->len);
	if (rc != KP_OK) {
		FILE *fp = fopen(path, "rb");

		if (fp == NULL)
			*missing = 1;
		else
			fclose(fp);
		if (!*missing)
			snprintf(err, err_cap, "%s: cannot be read", name);
		return rc;
	}
	c->line = 1;
	if (c->len >= 3 && memcmp(c->buf, "\xEF\xBB\xBF", 3) == 0) {
		c->pos = 3;
		c->had_bom = 1;
	}
	c->rec_cap = c->len + 1;
	c->rec = malloc(c->rec_cap);
	if (c->rec == NULL)
		return KP_E_NOMEM;
	rc = parse_record(c, err, err_cap);
	if (rc < 0)
		return rc;
	if (rc == 0 || (c->n_fields == 1 && c->fields[0][0] == '\0')) {
		snprintf(err, err_cap, "%s:1: no header line", name);
		return KP_E_FEED;
	}
	for (size_t i = 0; i < c->n_fields; i++)
		hdr_len += strlen(c->fields[i]) + 1;
	c->hdr = malloc(hdr_len);
	if (c->hdr == NULL)
		return KP_E_NOMEM;
	hdr_len = 0;
	for (size_t i = 0; i < c->n_fields; i++) {
		char *f = c->fields[i], *e;

		/* Column names are ids: a stray space around one is a tolerable slip. */
		while (*f == ' ' || *f == '\t')
			f++;
		e = f + strlen(f);
		while (e > f && (e[-1] == ' ' || e[-1] == '\t'))
			e--;
		c->cols[i] = c->hdr + hdr_len;
		memcpy(c->cols[i], f, (size_t)(e - f));
		c->cols[i][e - f] = '\0';
		hdr_len += (size_t)(e - f) + 1;
		for (size_t j = 0; j < i; j++) {
			if (strcmp(c->cols[j], c->cols[i]) == 0 && c->cols[i][0] != '\0') {
				snprintf(err, err_cap, "%s:1: %s: column appears twice", name, c->cols[i]);
				return KP_E_FEED;
			}
		}
	}
	c->n_cols = c->n_fields;
	c->n_fields = 0;
	return KP_OK;
}

/* On failure nothing stays allocated (found by tests/fuzz/fuzz_gtfs: a header refused
 * after the file was read leaked the file's copies, as kp_gtfs_stop_places does not close
 * what it could not open). */
int kp_csv_open(struct kp_csv *c, const char *dir, const char *name, int *missing,
                char *err, size_t err_cap)
{
	int rc = csv_open(c, dir, name, missing, err, err_cap);

	if (rc != KP_OK) {
		free(c->buf);
		free(c->rec);
		free(c->hdr);
		c->buf = NULL;
		c->rec = NULL;
		c->hdr = NULL;
	}
	return rc;
}

int kp_csv_next(struct kp_csv *c, char *err, size_t err_cap)
{
	int rc;

	do {
		rc = parse_record(c, err, err_cap);
		if (rc <= 0)
			return rc;
	} while (c->n_fields == 1 && c->fields[0][0] == '\0' && c->n_cols > 1);
	if (c->n_fields != c->n_cols) {
		snprintf(err, err_cap, "%s:%d: %zu fields, the header has %zu", c->name, c->rec_line,
		         c->n_fields, c->n_cols);
		return KP_E_FEED;
	}
	return 1;
}

int kp_csv_col(const struct kp_csv *c, const char *name)
{
	for (size_t i = 0; i < c->n_cols; i++) {
		if (strcmp(c->cols[i], name) == 0)
			return (int)i;
	}
	return -1;
}

const char *kp_csv_get(const struct kp_csv *c, int i)
{
	if (i < 0 || (size_t)i >= c->n_fields)
		return "";
	return c->fields[i];
}

void kp_csv_close(struct kp_csv *c)
{
	if (c == NULL)
		return;
	free(c->buf);
	free(c->rec);
	free(c->hdr);
	memset(c, 0, sizeof(*c));
}
