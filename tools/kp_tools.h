/* SPDX-License-Identifier: Apache-2.0 */
/* kippu tools library: what kippuctl and the bench share. */
#ifndef KP_TOOLS_H
#define KP_TOOLS_H

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include "kp_terminal.h"

/* "2026-11-26T08:00:00+09:00", "...Z", or Unix seconds → milliseconds since the epoch. */
int kp_parse_time(const char *s, int64_t *ms);
/* The same, also giving the time's UTC offset in seconds (0 for Z and Unix seconds). */
int kp_parse_time_offset(const char *s, int64_t *ms, int *offset_s);

/* The validity window of a certificate kippuctl makes, in Unix seconds: from not_before (a
 * TIME as above; NULL: one day before now, absorbing clock skew between the issuing machine
 * and its readers) until days (default_days when 0) after not_before (NULL: after now).
 * Tests and demos pass not_before so that the window follows their own clock. */
int kp_parse_validity(const char *not_before, int days, int default_days, int64_t *nb_s,
                      int64_t *na_s);

/* kp_parse_validity for kippuctl's certificate commands, then --not-after (NULL: none) in
 * place of --days; 0, or 2 after telling stderr what is wrong. */
int kp_ctl_validity(const char *not_before, const char *not_after, int days, int default_days,
                    int64_t *nb, int64_t *na);

/* A card as written in load files: "felica:<16 hex IDm>" or "token:<32 hex>". */
int kp_parse_card(const char *s, const uint8_t token_key[KP_TOKEN_KEY_LEN],
                  uint8_t token[KP_TOKEN_LEN]);

/* kp_store_open that tells stderr why the store did not open ("kippuctl: store PATH: ..."). */
int kp_ctl_store_open(kp_store **s, const char *path);
/* The same with kp_store_open_mode's mode: the read-only commands never create a database
 * ("kippuctl: no such database: PATH"). */
int kp_ctl_store_open_mode(kp_store **s, const char *path, int mode);
/* kp_bstore_open_mode that tells stderr why the backend's database did not open. */
struct kp_bstore;
int kp_ctl_bstore_open(struct kp_bstore **s, const char *path, int mode);

/* Loads a load file (operators, products, entitlements, denylist) into the store in one
 * transaction: on any error nothing changes, and err names the line. */
int kp_load_file(kp_store *s, const char *path, const uint8_t token_key[KP_TOKEN_KEY_LEN],
                 char *err, size_t err_cap, size_t *n_lines);

/* The backend's default certificate name: no terminal may carry it (a terminal told to
 * trust a backend by this name would otherwise meet certificates it cannot tell apart). */
#define KP_BACKEND_DEFAULT_ID "backend"
/* A terminal id as kippuctl takes it (terminal create --id, backend terminal add): its
 * certificate's CN, 1-32 characters of A-Z a-z 0-9 - _ ., never the backend's name. 0, or 2
 * after telling stderr what is wrong with `what` (the argument's name). */
int kp_ctl_terminal_id(const char *id, const char *what);

/* One option of a kippuctl subcommand, a row of its table (ended by a row with name NULL):
 * --name, what it takes, where the value goes (offsetof in the subcommand's struct), and
 * what it is for. */
enum kp_ctl_kind {
	KP_CTL_STR,      /* --name VALUE: a const char * */
	KP_CTL_FLAG,     /* --name: an int set to 1 */
	KP_CTL_INT,      /* --name N: an int from min to max */
	KP_CTL_LIST,     /* --name VALUE, repeated: a const char *[max], its count at count_field */
};
struct kp_ctl_opt {
	const char *name;
	enum kp_ctl_kind kind;
	size_t field;
	long min, max;
	size_t count_field;
	const char *help;
};
/* The arguments that are not options, into v[0..max-1]; extra: the first one past max. */
struct kp_ctl_pos {
	const char **v;
	int max, n;
	const char *extra;
};
/* getopt_long over argv (argv[0] stands for the program's name) by the table: 0, or -1 after
 * getopt or the option's row told stderr what is wrong (or with pos->extra set, which the
 * caller reports as it sees fit). */
/* The program kp_ctl_parse's messages name ("kippuctl" unless a program sets its own). */
extern const char *kp_ctl_prog;
int kp_ctl_parse(int argc, char **argv, const struct kp_ctl_opt *opts, void *args,
                 struct kp_ctl_pos *pos);
/* -1 after "kippuctl: cannot read WHAT PATH: WHY" (kp_file_unreadable) when the file at path
 * does not open for reading; 0 when it does (its loader then says what else is wrong). */
int kp_ctl_readable(const char *what, const char *path);
/* -1 after "kippuctl: NAME is required" when v is NULL. */
int kp_ctl_need(const char *v, const char *name);
/* Loads the token key at path (--token-key) to turn `what` into a token: 0, or -1 with the
 * reason on stderr (no --token-key given, or a key file that does not load). */
int kp_ctl_token_key(const char *path, const char *what, uint8_t key[KP_TOKEN_KEY_LEN]);

/* kippuctl's listings (ctl_out.c): a listing declares its columns once and emits rows of
 * text; the layer prints the human table (or the listing's own human line), JSON lines or CSV
 * (README, "Listings as JSON and CSV"). */
enum kp_ctl_col_type {
	KP_COL_TEXT,       /* a JSON string */
	KP_COL_INT,        /* a JSON number */
	KP_COL_AMOUNT,     /* a JSON number: money in minor units */
	KP_COL_TIME,       /* a JSON string, ISO 8601 as the table prints it */
};
struct kp_ctl_col {
	const char *name;              /* the table's header, the JSON key, the CSV header */
	enum kp_ctl_col_type type;
	const char *none;              /* the text that stands for no value ("-", "never"): JSON
	                                  null, an empty CSV field; NULL: only a NULL value */
};
enum kp_ctl_format { KP_OUT_HUMAN, KP_OUT_JSON, KP_OUT_CSV };
/* --json and --csv, as every listing's option table carries them (KP_CTL_OUT_OPTS). */
struct kp_ctl_fmt {
	int json, csv;
};
#define KP_CTL_OUT_OPTS(type, field) \
	{ "json", KP_CTL_FLAG, offsetof(type, field.json), 0, 0, 0, \
	  "a listing as JSON lines, one object per row" }, \
	{ "csv", KP_CTL_FLAG, offsetof(type, field.csv), 0, 0, 0, \
	  "a listing as CSV (RFC 4180, a header row)" }
struct kp_ctl_out {
	enum kp_ctl_format format;
	const struct kp_ctl_col *cols;
	int ncol, rows, failed;
	int (*width)(const char *name);        /* the table's column widths (NULL: the name's, 8+) */
	/* the listing's own human line in place of the table (NULL: the table) */
	void (*human)(const struct kp_ctl_out *o, const char *const *vals);
	void *human_arg;
	FILE *fp;
};
/* The format --json/--csv ask for: 0, or 2 after telling stderr both were given. */
int kp_ctl_out_format(const struct kp_ctl_fmt *f, enum kp_ctl_format *format);
void kp_ctl_out_begin(struct kp_ctl_out *o, enum kp_ctl_format format,
                      const struct kp_ctl_col *cols, int ncol, int (*width)(const char *name));
/* One row, a value per column (NULL: none): 0, or -1 after telling stderr why it cannot be
 * printed (a number column that holds no number). */
int kp_ctl_out_row(struct kp_ctl_out *o, const char *const *vals);
/* kp_bstore_report's row callback (arg: the kp_ctl_out): the row's column names must be the
 * declared ones, in order. */
int kp_ctl_out_report(void *arg, int ncol, const char *const *cols, const char *const *names);
/* After the last row: the human `none` line when there was no row (NULL: nothing), CSV's
 * header alone; -1 if a row failed. */
int kp_ctl_out_end(struct kp_ctl_out *o, const char *none);

/* kippuctl backend ...: argv[0] is "backend". */
int kp_ctl_backend(int argc, char **argv);
void kp_ctl_backend_usage(FILE *fp);

/* kippuctl jpki ...: argv[0] is "jpki" (a TEST JPKI CA and mock My Number card folders). */
int kp_ctl_jpki(int argc, char **argv);
void kp_ctl_jpki_usage(FILE *fp);
/* A GTFS .zip (tools/gtfs_zip.c): its .txt members into a fresh private folder, dir (cap
 * bytes), for kp_fares_import; 0, or -1 with err naming the member and why (a name with '/'
 * or "..", a member over the caps uncompressed, not a zip) and nothing left behind.
 * kp_gtfs_zip_close removes the folder and what is in it. */
#define KP_GTFS_ZIP_MEMBER_MAX (256 << 20)
#define KP_GTFS_ZIP_TOTAL_MAX  (1024 << 20)
int kp_gtfs_zip_open(const char *zip_path, char *dir, size_t cap, char *err, size_t err_cap);
void kp_gtfs_zip_close(const char *dir);

/* fares import's GTFS_DIR or GTFS.zip: 0 with the folder to import from in dir (a zip's
 * private copy when *tmp, for kp_gtfs_zip_close), or 1 after telling stderr why not ("no such
 * file or directory: PATH"); feed: a zip's name without .zip, the default feed id. */
int kp_ctl_gtfs_source(const char *path, char *dir, size_t cap, int *tmp, char *feed,
                       size_t feed_cap);

/* kippuctl fares ...: argv[0] is "fares". */
int kp_ctl_fares(int argc, char **argv);
void kp_ctl_fares_usage(FILE *fp);

/* Prices the taps of a journeys CSV (terminal/fare/FARES.md) with the terminal's decision code on
 * a scratch copy of the database at db_path (never changed); one row per journal record to out
 * (begun by kp_fares_quote_out: CSV, or JSON lines). err: "FILE:LINE: field: why". */
int kp_fares_quote(const char *db_path, const char *journeys,
                   const uint8_t token_key[KP_TOKEN_KEY_LEN], struct kp_ctl_out *out, char *err,
                   size_t cap);
/* Begins out with the quote's columns: its human form is its CSV. */
void kp_fares_quote_out(struct kp_ctl_out *o, enum kp_ctl_format format);

/* kippuctl linkage ...: argv[0] is "linkage". */
int kp_ctl_linkage(int argc, char **argv);
void kp_ctl_linkage_usage(FILE *fp);

/* kippuctl report ridership ...: argv[0] is "report" (tools/ctl_report.c). */
int kp_ctl_report(int argc, char **argv);
void kp_ctl_report_usage(FILE *fp);

#endif
