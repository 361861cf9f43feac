/* SPDX-License-Identifier: Apache-2.0 */
/* What the analytics' files share: a table of cells keyed by text (a hash table whose size
 * grows with the cells, never with the records), the GTFS names and coordinates, the output. */
#ifndef KP_AN_INT_H
#define KP_AN_INT_H

#include <stdio.h>
#include "kp_analytics.h"

#define AN_NV 3                       /* counters per cell */

/* The run's tables, in this order (analytics.c). */
enum { T_STOP, T_HOUR, T_DAY, T_CAT, T_KIND, T_XFER, T_OD, T_JOURNEY, T_STATION, T_LOAD,
       T_N };

struct an_cell {
	char *key;                        /* fields joined by '\x1f' */
	uint64_t hash;                    /* of key */
	int64_t v[AN_NV];
	int64_t riders;                   /* distinct cards that added to it */
	uint64_t last_card;               /* the card that last added (riders counts each once) */
	int suppressed;
};
struct an_table {
	const char *name;                 /* file name without .csv */
	const char *cols[8];              /* the key's columns, then the counters' */
	int nkey, nv;
	struct an_cell *cells;
	size_t n, cap;                    /* cells in use, slots (a power of two) */
};

/* The cell of key (made with zero counters if new), its rider counted once per card; NULL
 * when out of memory. */
struct an_cell *an_add(struct an_table *t, const char *key, uint64_t card);
/* The cell of key, or NULL. */
struct an_cell *an_find(const struct an_table *t, const char *key);
void an_table_free(struct an_table *t);
/* The cells in use sorted by key (free() the array; NULL: out of memory). */
struct an_cell **an_sorted(const struct an_table *t);
/* k and complementary suppression (README): cells with fewer than k riders, then the smallest
 * others until the suppressed ones hold k riders or more together and number two or more (or
 * every cell is suppressed). Returns the number suppressed. */
size_t an_suppress(struct an_table *t, int k);
/* OUT/NAME.csv and the table as a JSON member ("name": [...]) on js. */
int an_write(const struct an_table *t, const char *dir, FILE *js, int first, char *err,
             size_t cap);
/* Text as a CSV field / JSON string onto fp. */
void an_csv_field(FILE *fp, const char *s);
void an_json_str(FILE *fp, const char *s);

/* GTFS: stops (name, lat/lon) and routes (name) by id. */
struct an_stop { char *id, *name; double lat, lon; int has_pos; };
struct an_route { char *id, *name; };
/* A route's stops in order, one direction: its trip with the most stops (stop_times.txt). */
struct an_pattern { char *route; int dir; char **stops; size_t n; };
struct an_gtfs {
	struct an_stop *stops; size_t n_stops;     /* sorted by id */
	struct an_route *routes; size_t n_routes;  /* sorted by id */
	struct an_pattern *pat; size_t n_pat;      /* sorted by route (none without trips.txt) */
};
int an_gtfs_load(struct an_gtfs *g, const char *dir, char *err, size_t cap);
void an_gtfs_free(struct an_gtfs *g);
const struct an_stop *an_gtfs_stop(const struct an_gtfs *g, const char *id);
const char *an_gtfs_route_name(const struct an_gtfs *g, const char *id);
/* metres between two stops (haversine); -1 when either has no coordinates */
double an_distance_m(const struct an_stop *a, const struct an_stop *b);
/* The patterns of a route: the first (sorted) and their number in *n. */
const struct an_pattern *an_gtfs_patterns(const struct an_gtfs *g, const char *route, size_t *n);
/* stop_times.txt and trips.txt: the patterns (none, and 0, when the feed has no trips). */
int an_patterns_load(struct an_gtfs *g, const char *dir, char *err, size_t cap);
void an_patterns_free(struct an_gtfs *g);

/* The opt-out list: sorted tokens. */
struct an_optout { uint8_t (*t)[16]; size_t n; };
int an_optout_load(struct an_optout *o, const char *path, char *err, size_t cap);
int an_optout_has(const struct an_optout *o, const uint8_t token[16]);
void an_optout_free(struct an_optout *o);
/* kp_an_pseudonym in two steps: the period's key (once a period), then a token's pseudonym. */
int an_period_key(const uint8_t *secret, size_t secret_len, const char *period,
                  uint8_t key[32]);
int an_pseudonym_with(const uint8_t key[32], const uint8_t token[16], char out[33]);
/* The secret file (>= KP_AN_SECRET_MIN bytes, at most 4096). */
int an_secret_load(const char *path, uint8_t *buf, size_t cap, size_t *len, char *err,
                   size_t errcap);

/* OUT/report.html: the figures as charts drawn by Chart.js (the file at chartjs, put inside
 * the page so that it opens without a network), from the published cells only. */
int an_report_html(const char *path, const char *chartjs, const struct an_table *t,
                   const struct an_gtfs *g, const struct kp_an_summary *s, const char *period,
                   int k, char *err, size_t cap);

#endif
