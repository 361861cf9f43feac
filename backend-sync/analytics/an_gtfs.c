/* SPDX-License-Identifier: Apache-2.0 */
/* The GTFS feed's stops.txt (names, coordinates) and routes.txt (names), read by their
 * headers' column names (GTFS-JP feeds included: UTF-8 with or without a BOM, quoted fields). */
#include <errno.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "an_int.h"

#define LINE_MAX_B 8192
#define COLS_MAX 64

/* Splits a CSV line in place (quotes as RFC 4180, one physical line); the number of fields. */
static int csv_split(char *line, char **f, int max)
{
	int n = 0;
	char *p = line;

	line[strcspn(line, "\r\n")] = '\0';
	while (n < max) {
		char *w = p;

		f[n++] = w;
		if (*p == '"') {
			p++;
			for (;;) {
				if (*p == '\0')
					break;
				if (*p == '"' && p[1] == '"') {
					*w++ = '"';
					p += 2;
				} else if (*p == '"') {
					p++;
					break;
				} else {
					*w++ = *p++;
				}
			}
			while (*p != ',' && *p != '\0')
				p++;
		} else {
			while (*p != ',' && *p != '\0')
				w = ++p;
		}
		if (*p == '\0') {
			*w = '\0';
			break;
		}
		*w = '\0';
		p++;
	}
	return n;
}

static int col_of(char **h, int n, const char *name)
{
	for (int i = 0; i < n; i++) {
		if (strcmp(h[i], name) == 0)
			return i;
	}
	return -1;
}

struct gtfs_file {
	FILE *fp;
	char path[4096];
	char head[LINE_MAX_B];
	char *h[COLS_MAX];
	int nh;
};

/* Opens DIR/NAME and reads its header; -1 with err. */
static int gtfs_open(struct gtfs_file *g, const char *dir, const char *name, char *err, size_t cap)
{
	char *p;

	snprintf(g->path, sizeof(g->path), "%s/%s", dir, name);
	g->fp = fopen(g->path, "r");
	if (g->fp == NULL) {
		snprintf(err, cap, "cannot read GTFS %s: %s", g->path, strerror(errno));
		return -1;
	}
	if (fgets(g->head, sizeof(g->head), g->fp) == NULL) {
		snprintf(err, cap, "GTFS %s: empty file (no header)", g->path);
		fclose(g->fp);
		return -1;
	}
	p = g->head;
	if ((unsigned char)p[0] == 0xEF && (unsigned char)p[1] == 0xBB && (unsigned char)p[2] == 0xBF)
		p += 3;
	g->nh = csv_split(p, g->h, COLS_MAX);
	return 0;
}

static int by_stop(const void *a, const void *b)
{
	return strcmp(((const struct an_stop *)a)->id, ((const struct an_stop *)b)->id);
}

static int by_route(const void *a, const void *b)
{
	return strcmp(((const struct an_route *)a)->id, ((const struct an_route *)b)->id);
}

static int load_stops(struct an_gtfs *gt, const char *dir, char *err, size_t cap)
{
	struct gtfs_file g;
	char line[LINE_MAX_B], *f[COLS_MAX];
	int ci, cn, cla, clo;
	size_t alloc = 0;

	if (gtfs_open(&g, dir, "stops.txt", err, cap) != 0)
		return KP_AN_E_IO;
	ci = col_of(g.h, g.nh, "stop_id");
	cn = col_of(g.h, g.nh, "stop_name");
	cla = col_of(g.h, g.nh, "stop_lat");
	clo = col_of(g.h, g.nh, "stop_lon");
	if (ci < 0) {
		snprintf(err, cap, "GTFS %s: no stop_id column", g.path);
		fclose(g.fp);
		return KP_AN_E_INVAL;
	}
	while (fgets(line, sizeof(line), g.fp) != NULL) {
		int n = csv_split(line, f, COLS_MAX);
		struct an_stop *s;

		if (n <= ci || f[ci][0] == '\0')
			continue;
		if (gt->n_stops == alloc) {
			void *p = realloc(gt->stops, (alloc = alloc ? alloc * 2 : 256) * sizeof(*s));

			if (p == NULL)
				break;
			gt->stops = p;
		}
		s = &gt->stops[gt->n_stops++];
		memset(s, 0, sizeof(*s));
		s->id = strdup(f[ci]);
		s->name = strdup(cn >= 0 && cn < n ? f[cn] : "");
		if (cla >= 0 && clo >= 0 && cla < n && clo < n && f[cla][0] && f[clo][0]) {
			s->lat = strtod(f[cla], NULL);
			s->lon = strtod(f[clo], NULL);
			s->has_pos = 1;
		}
	}
	fclose(g.fp);
	qsort(gt->stops, gt->n_stops, sizeof(*gt->stops), by_stop);
	return KP_AN_OK;
}

static int load_routes(struct an_gtfs *gt, const char *dir, char *err, size_t cap)
{
	struct gtfs_file g;
	char line[LINE_MAX_B], *f[COLS_MAX];
	int ci, cs, cl;
	size_t alloc = 0;

	if (gtfs_open(&g, dir, "routes.txt", err, cap) != 0)
		return KP_AN_E_IO;
	ci = col_of(g.h, g.nh, "route_id");
	cs = col_of(g.h, g.nh, "route_short_name");
	cl = col_of(g.h, g.nh, "route_long_name");
	if (ci < 0) {
		snprintf(err, cap, "GTFS %s: no route_id column", g.path);
		fclose(g.fp);
		return KP_AN_E_INVAL;
	}
	while (fgets(line, sizeof(line), g.fp) != NULL) {
		int n = csv_split(line, f, COLS_MAX);
		struct an_route *r;
		const char *name = "";

		if (n <= ci || f[ci][0] == '\0')
			continue;
		if (gt->n_routes == alloc) {
			void *p = realloc(gt->routes, (alloc = alloc ? alloc * 2 : 64) * sizeof(*r));

			if (p == NULL)
				break;
			gt->routes = p;
		}
		if (cl >= 0 && cl < n && f[cl][0] != '\0')
			name = f[cl];
		if (cs >= 0 && cs < n && f[cs][0] != '\0')
			name = f[cs];
		r = &gt->routes[gt->n_routes++];
		r->id = strdup(f[ci]);
		r->name = strdup(name);
	}
	fclose(g.fp);
	qsort(gt->routes, gt->n_routes, sizeof(*gt->routes), by_route);
	return KP_AN_OK;
}

int an_gtfs_load(struct an_gtfs *g, const char *dir, char *err, size_t cap)
{
	int rc;

	memset(g, 0, sizeof(*g));
	char path[4096];

	rc = load_stops(g, dir, err, cap);
	if (rc == KP_AN_OK)
		rc = load_routes(g, dir, err, cap);
	/* trips and stop times are optional: without them, no load profiles */
	snprintf(path, sizeof(path), "%s/trips.txt", dir);
	if (rc == KP_AN_OK && access(path, F_OK) == 0)
		rc = an_patterns_load(g, dir, err, cap);
	for (size_t i = 0; rc == KP_AN_OK && i < g->n_stops; i++) {
		if (g->stops[i].id == NULL || g->stops[i].name == NULL)
			rc = KP_AN_E_NOMEM;
	}
	for (size_t i = 0; rc == KP_AN_OK && i < g->n_routes; i++) {
		if (g->routes[i].id == NULL || g->routes[i].name == NULL)
			rc = KP_AN_E_NOMEM;
	}
	if (rc == KP_AN_E_NOMEM)
		snprintf(err, cap, "out of memory reading GTFS %s", dir);
	if (rc != KP_AN_OK)
		an_gtfs_free(g);
	return rc;
}

void an_gtfs_free(struct an_gtfs *g)
{
	for (size_t i = 0; i < g->n_stops; i++) {
		free(g->stops[i].id);
		free(g->stops[i].name);
	}
	for (size_t i = 0; i < g->n_routes; i++) {
		free(g->routes[i].id);
		free(g->routes[i].name);
	}
	free(g->stops);
	free(g->routes);
	an_patterns_free(g);
	memset(g, 0, sizeof(*g));
}

const struct an_stop *an_gtfs_stop(const struct an_gtfs *g, const char *id)
{
	struct an_stop key = { .id = (char *)id };

	if (g->n_stops == 0)
		return NULL;
	return bsearch(&key, g->stops, g->n_stops, sizeof(key), by_stop);
}

const char *an_gtfs_route_name(const struct an_gtfs *g, const char *id)
{
	struct an_route key = { .id = (char *)id }, *r;

	if (g->n_routes == 0)
		return "";
	r = bsearch(&key, g->routes, g->n_routes, sizeof(key), by_route);
	return r != NULL ? r->name : "";
}

double an_distance_m(const struct an_stop *a, const struct an_stop *b)
{
	const double rad = M_PI / 180.0, earth = 6371008.8;
	double dlat, dlon, h;

	if (a == NULL || b == NULL || !a->has_pos || !b->has_pos)
		return -1;
	dlat = (b->lat - a->lat) * rad;
	dlon = (b->lon - a->lon) * rad;
	h = sin(dlat / 2) * sin(dlat / 2) +
	    cos(a->lat * rad) * cos(b->lat * rad) * sin(dlon / 2) * sin(dlon / 2);
	return 2 * earth * asin(sqrt(h));
}

/* ---- route patterns: stop_times.txt read twice (the longest trip of each route and
 * direction, then its stops), memory by trips, not by stop times ---- */

struct pat_load {
	struct an_table trips;     /* trip_id: v[0] its route-direction + 1, v[1] its stop count */
	struct an_table rds;       /* route \x1f dir: v[0] its index + 1 */
	char **best;               /* per route-direction: the longest trip's id (in trips) */
	int64_t *best_n;
	size_t n_rd;
};

static int read_trips(struct pat_load *pl, struct an_gtfs *g, const char *dir, char *err,
                      size_t cap)
{
	struct gtfs_file f;
	char line[LINE_MAX_B], *v[COLS_MAX], key[256];
	int ct, cr, cd;

	if (gtfs_open(&f, dir, "trips.txt", err, cap) != 0)
		return KP_AN_E_IO;
	ct = col_of(f.h, f.nh, "trip_id");
	cr = col_of(f.h, f.nh, "route_id");
	cd = col_of(f.h, f.nh, "direction_id");
	while (ct >= 0 && cr >= 0 && fgets(line, sizeof(line), f.fp) != NULL) {
		int n = csv_split(line, v, COLS_MAX);
		struct an_cell *rd, *t;

		if (n <= ct || n <= cr)
			continue;
		snprintf(key, sizeof(key), "%s\x1f%s", v[cr], cd >= 0 && cd < n ? v[cd] : "0");
		rd = an_add(&pl->rds, key, 0);
		t = an_add(&pl->trips, v[ct], 0);
		if (rd == NULL || t == NULL)
			goto nomem;
		if (rd->v[0] == 0) {
			void *p = realloc(g->pat, (pl->n_rd + 1) * sizeof(*g->pat));

			if (p == NULL)
				goto nomem;
			g->pat = p;
			memset(&g->pat[pl->n_rd], 0, sizeof(*g->pat));
			g->pat[pl->n_rd].route = strdup(v[cr]);
			g->pat[pl->n_rd].dir = atoi(cd >= 0 && cd < n ? v[cd] : "0");
			rd->v[0] = (int64_t)++pl->n_rd;
			g->n_pat = pl->n_rd;
			if (g->pat[pl->n_rd - 1].route == NULL)
				goto nomem;
		}
		t->v[0] = rd->v[0];
	}
	fclose(f.fp);
	return KP_AN_OK;
nomem:
	fclose(f.fp);
	snprintf(err, cap, "out of memory reading %s", f.path);
	return KP_AN_E_NOMEM;
}

/* Pass 1 (collect 0): each trip's stop count; pass 2 (collect 1): the chosen trips' stops,
 * their sequence in v[2] of a scratch cell (sorted after). */
static int read_stop_times(struct pat_load *pl, struct an_gtfs *g, const char *dir, int collect,
                           char *err, size_t cap)
{
	struct gtfs_file f;
	char line[LINE_MAX_B], *v[COLS_MAX];
	int ct, cs, cq;

	if (gtfs_open(&f, dir, "stop_times.txt", err, cap) != 0)
		return KP_AN_E_IO;
	ct = col_of(f.h, f.nh, "trip_id");
	cs = col_of(f.h, f.nh, "stop_id");
	cq = col_of(f.h, f.nh, "stop_sequence");
	while (ct >= 0 && cs >= 0 && cq >= 0 && fgets(line, sizeof(line), f.fp) != NULL) {
		int n = csv_split(line, v, COLS_MAX);
		struct an_cell *t;
		struct an_pattern *p;
		char **s;

		if (n <= ct || n <= cs || n <= cq || (t = an_find(&pl->trips, v[ct])) == NULL ||
		    t->v[0] == 0)
			continue;
		if (!collect) {
			t->v[1]++;
			continue;
		}
		if (strcmp(pl->best[t->v[0] - 1], t->key) != 0)
			continue;
		p = &g->pat[t->v[0] - 1];
		s = realloc(p->stops, (p->n + 1) * sizeof(*s));
		if (s == NULL)
			break;
		p->stops = s;
		/* "sequence (9 digits) \x1f stop": sorted as text, then the prefix dropped */
		if (asprintf(&p->stops[p->n], "%09ld\x1f%s", strtol(v[cq], NULL, 10), v[cs]) < 0)
			break;
		p->n++;
	}
	fclose(f.fp);
	return KP_AN_OK;
}

static int cmp_text(const void *a, const void *b)
{
	return strcmp(*(char *const *)a, *(char *const *)b);
}

static int cmp_pat(const void *a, const void *b)
{
	const struct an_pattern *x = a, *y = b;
	int c = strcmp(x->route, y->route);

	return c != 0 ? c : x->dir - y->dir;
}

static void choose_longest(struct pat_load *pl)
{
	for (size_t i = 0; i < pl->trips.cap; i++) {
		struct an_cell *t = &pl->trips.cells[i];

		if (t->key == NULL || t->v[0] == 0)
			continue;
		if (pl->best[t->v[0] - 1] == NULL || t->v[1] > pl->best_n[t->v[0] - 1] ||
		    (t->v[1] == pl->best_n[t->v[0] - 1] && strcmp(t->key, pl->best[t->v[0] - 1]) < 0)) {
			pl->best[t->v[0] - 1] = t->key;
			pl->best_n[t->v[0] - 1] = t->v[1];
		}
	}
}

int an_patterns_load(struct an_gtfs *g, const char *dir, char *err, size_t cap)
{
	struct pat_load pl;
	int rc;

	memset(&pl, 0, sizeof(pl));
	rc = read_trips(&pl, g, dir, err, cap);
	if (rc == KP_AN_OK && pl.n_rd > 0) {
		pl.best = calloc(pl.n_rd, sizeof(*pl.best));
		pl.best_n = calloc(pl.n_rd, sizeof(*pl.best_n));
		rc = pl.best == NULL || pl.best_n == NULL ? KP_AN_E_NOMEM :
		     read_stop_times(&pl, g, dir, 0, err, cap);
		if (rc == KP_AN_OK) {
			choose_longest(&pl);
			rc = read_stop_times(&pl, g, dir, 1, err, cap);
		}
	}
	for (size_t i = 0; rc == KP_AN_OK && i < g->n_pat; i++) {
		struct an_pattern *p = &g->pat[i];

		qsort(p->stops, p->n, sizeof(*p->stops), cmp_text);
		for (size_t j = 0; j < p->n; j++)        /* drop the sequence prefix */
			memmove(p->stops[j], p->stops[j] + 10, strlen(p->stops[j] + 10) + 1);
	}
	if (rc == KP_AN_OK && g->n_pat > 0)
		qsort(g->pat, g->n_pat, sizeof(*g->pat), cmp_pat);
	if (rc == KP_AN_E_NOMEM)
		snprintf(err, cap, "out of memory reading GTFS trips in %s", dir);
	an_table_free(&pl.trips);
	an_table_free(&pl.rds);
	free(pl.best);
	free(pl.best_n);
	return rc;
}

void an_patterns_free(struct an_gtfs *g)
{
	for (size_t i = 0; i < g->n_pat; i++) {
		for (size_t j = 0; j < g->pat[i].n; j++)
			free(g->pat[i].stops[j]);
		free(g->pat[i].stops);
		free(g->pat[i].route);
	}
	free(g->pat);
	g->pat = NULL;
	g->n_pat = 0;
}

const struct an_pattern *an_gtfs_patterns(const struct an_gtfs *g, const char *route, size_t *n)
{
	size_t lo = 0, hi = g->n_pat, i;

	while (lo < hi) {
		size_t mid = (lo + hi) / 2;

		if (strcmp(g->pat[mid].route, route) < 0)
			lo = mid + 1;
		else
			hi = mid;
	}
	for (i = lo; i < g->n_pat && strcmp(g->pat[i].route, route) == 0; i++)
		;
	*n = i - lo;
	return *n > 0 ? &g->pat[lo] : NULL;
}
