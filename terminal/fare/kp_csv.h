/* SPDX-License-Identifier: Apache-2.0 */
/* Internal to terminal/: an RFC 4180 reader for GTFS files. The whole file is read into
 * memory; records may span lines (newlines inside quotes), end in LF or CRLF, and the file
 * may start with a UTF-8 BOM and lack a final newline. */
#ifndef KP_TERMINAL_GTFS_CSV_H
#define KP_TERMINAL_GTFS_CSV_H

#include <stddef.h>

#define KP_CSV_MAX_FIELDS 64

struct kp_csv {
	char name[64];               /* the file's name, for messages ("fare_rules.txt") */
	char *buf;                   /* the file, NUL-terminated */
	size_t len, pos;
	int line;                    /* line where the next record starts (1-based) */
	int had_bom;
	size_t n_cols;
	char *cols[KP_CSV_MAX_FIELDS];    /* header names (point into hdr) */
	char *hdr;
	size_t n_fields;             /* the current record */
	char *fields[KP_CSV_MAX_FIELDS];
	int rec_line;                /* line where the current record starts */
	char *rec;                   /* unquoted copy of the current record's fields */
	size_t rec_cap;
};

/* Opens dir/name: KP_OK, KP_E_IO if it does not exist (*missing = 1) or cannot be read,
 * KP_E_FEED (err set) if the header is malformed. On failure there is nothing to close. */
int kp_csv_open(struct kp_csv *c, const char *dir, const char *name, int *missing,
                char *err, size_t err_cap);
/* The next record: 1 if one was read, 0 at the end, KP_E_FEED (err set) if malformed.
 * Blank lines are skipped. */
int kp_csv_next(struct kp_csv *c, char *err, size_t err_cap);
/* Index of a header column, or -1. */
int kp_csv_col(const struct kp_csv *c, const char *name);
/* Field of the current record at column index i ("" when i < 0). */
const char *kp_csv_get(const struct kp_csv *c, int i);
void kp_csv_close(struct kp_csv *c);

#endif
