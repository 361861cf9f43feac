/* SPDX-License-Identifier: Apache-2.0 */
/* kippu ridership analytics (README, "Ridership analytics"): boardings and alightings per stop,
 * route, hour, service day, rider category and product kind; transfers; origin-destination
 * matrices per route and across operators; alightings inferred by trip chaining where riders
 * only tap on, with the inference's accuracy measured on services that do have tap-off; and
 * TIDES exports. Read from the backend's database through kp_db.h (SQLite or PostgreSQL),
 * read-only, one card's records at a time in time order (memory bounded by the number of
 * cells, never by the number of records).
 *
 * Privacy by construction: a card token never leaves as stored (the TIDES token_id is an HMAC
 * of it under a key that rotates each export period, derived from the operator's secret
 * file), linkage tokens (My Number) never appear, cells with fewer than k riders are
 * suppressed with complementary suppression, and the opt-out list's cards are left out of
 * everything. Library code: nothing here prints. */
#ifndef KP_ANALYTICS_H
#define KP_ANALYTICS_H

#include <stddef.h>
#include <stdint.h>

enum kp_an_rc {
	KP_AN_OK       = 0,
	KP_AN_E_INVAL  = -0x5A1,   /* a bad argument (dates, k, a file's content) */
	KP_AN_E_NOMEM  = -0x5A2,
	KP_AN_E_DB     = -0x5A3,   /* the database did not open or a query failed */
	KP_AN_E_IO     = -0x5A4,   /* a file could not be read or written */
};

#define KP_AN_K_DEFAULT        10
#define KP_AN_WALK_M_DEFAULT   800     /* walking distance for inferred alightings */
#define KP_AN_TRANSFER_MIN     90      /* a boarding this soon after the last is a transfer */
#define KP_AN_SECRET_MIN       16      /* bytes of the pseudonym secret file, at least */

struct kp_an_opts {
	const char *db;               /* connection string (kp_db_open): a path or postgresql:// */
	int from_day, to_day;         /* service days, days since 1970-01-01, both included */
	const char *operator_id;      /* NULL: every operator */
	const char *gtfs_dir;         /* NULL: no names or coordinates (no inference) */
	int k;                        /* cells with fewer riders are suppressed (>= 1) */
	const char *secret_path;      /* the pseudonym secret (>= KP_AN_SECRET_MIN bytes) */
	const char *opt_out_path;     /* NULL: none; else lines of 32 hex digits (card tokens) */
	const char *out_dir;          /* made if missing; tides/ under it */
	int walk_m;                   /* 0: KP_AN_WALK_M_DEFAULT */
	int transfer_min;             /* 0: KP_AN_TRANSFER_MIN */
	const char *chartjs;          /* Chart.js for report.html (NULL: KP_AN_CHARTJS) */
};

/* Debian's libjs-chart.js */
#define KP_AN_CHARTJS "/usr/share/javascript/chart.js/chart.min.js"

/* What a run found (also in OUT/summary.json). */
struct kp_an_summary {
	int64_t records, opted_out, boardings, alightings, cards;
	int64_t tap_on_only;          /* boardings with no tap-off (flat fares, demand buses) */
	int64_t inferred, unlinked;   /* of those: alighting inferred, or not */
	/* accuracy: on boardings with an observed tap-off, the tap-off hidden and inferred */
	int64_t acc_tested, acc_inferred, acc_correct;
	int64_t cells, suppressed;    /* cells written, cells suppressed (k and complementary) */
};

/* "YYYY-MM-DD" -> days since 1970-01-01; KP_AN_E_INVAL for anything else (a date that does
 * not exist, e.g. 2026-02-30, included). */
int kp_an_parse_date(const char *s, int *day);

/* The pseudonym of token for the export period (e.g. "2026-11"): the first 16 bytes of
 * HMAC(HMAC(secret, "kippu ridership pseudonym " period), token), 32 hex digits + NUL. */
int kp_an_pseudonym(const uint8_t *secret, size_t secret_len, const char *period,
                    const uint8_t token[16], char out[33]);

/* The whole run: CSV and JSON of every measure (ridership.json), TIDES CSVs and report.html
 * into opts->out_dir.
 * err (cap bytes) names what went wrong in plain words. */
int kp_an_run(const struct kp_an_opts *opts, struct kp_an_summary *sum, char *err, size_t cap);

#endif
