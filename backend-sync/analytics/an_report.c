/* SPDX-License-Identifier: Apache-2.0 */
/* The HTML report: one self-contained page, Chart.js (Debian's libjs-chart.js) put inside it,
 * the figures as a JSON object, and a fixed script that turns them into charts. Only
 * published cells go in: a suppressed cell is left out of every chart and sum. After drawing,
 * the script marks each canvas with the share of its pixels that carry ink (data-ink), which
 * the screenshot test reads. */
#include <errno.h>
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>

#include "an_int.h"

#define TOP_ROUTES 12
#define TOP_OD 150

static const char page_head[] =
	"<!DOCTYPE html>\n<html lang=\"ja\"><head><meta charset=\"utf-8\">\n"
	"<title>kippu ridership report</title>\n<style>\n"
	"body{font-family:\"Noto Sans CJK JP\",\"Noto Sans JP\",sans-serif;margin:2em;color:#222}\n"
	"section{margin:2em 0}canvas{max-width:1100px}\n"
	"table{border-collapse:collapse}td,th{border:1px solid #bbb;padding:.2em .6em;"
	"text-align:right}th{text-align:left}\n.note{color:#555;font-size:.9em}\n"
	"</style>\n";

/* The renderer: DATA -> one section per chart, a title (h2) and a canvas each. */
static const char page_script[] =
	"<script>\n(function(){\n"
	"Chart.defaults.animation=false;Chart.defaults.font.family="
	"'\"Noto Sans CJK JP\",\"Noto Sans JP\",sans-serif';\n"
	"var main=document.getElementById('charts');\n"
	"function section(id,title,note){var s=document.createElement('section');"
	"var h=document.createElement('h2');h.textContent=title;s.appendChild(h);"
	"if(note){var p=document.createElement('p');p.className='note';p.textContent=note;"
	"s.appendChild(p);}var c=document.createElement('canvas');c.id=id;c.width=1100;"
	"c.height=420;s.appendChild(c);main.appendChild(s);return c;}\n"
	"function chart(id,title,note,cfg){cfg.options=cfg.options||{};"
	"cfg.options.responsive=false;var any=cfg.data.datasets.some(function(d){"
	"return d.data.some(function(v){return v&&(v.v||v>0);});});"
	"if(!any)note=(note?note+' ':'')+'No published figures: every cell is below k riders"
	" (suppressed) or empty.';new Chart(section(id,title,note),cfg);}\n"
	"var D=DATA;\n"
	"chart('hours','Boardings by hour','All routes; suppressed cells left out.',{type:'bar',"
	"data:{labels:D.hours.labels,datasets:[{label:'boardings',data:D.hours.boardings,"
	"backgroundColor:'#3572b0'}]}});\n"
	"chart('days','Daily totals','Boardings and observed alightings per service day.',"
	"{type:'line',data:{labels:D.days.labels,datasets:[{label:'boardings',data:D.days.b,"
	"borderColor:'#3572b0'},{label:'alightings (observed)',data:D.days.a,"
	"borderColor:'#d9822b'}]}});\n"
	"D.routes.forEach(function(r,i){chart('route'+i,'Boardings and alightings along '+r.name,"
	"'Stops in the order of the route; inferred alightings apart from observed ones.',"
	"{type:'bar',data:{labels:r.stops,datasets:[{label:'boardings',data:r.b,"
	"backgroundColor:'#3572b0'},{label:'alightings (observed)',data:r.a,"
	"backgroundColor:'#d9822b'},{label:'alightings (inferred)',data:r.i,"
	"backgroundColor:'#a0a0a0'}]}});});\n"
	"D.loads.forEach(function(r,i){chart('load'+i,'Load profile: '+r.name,"
	"'Riders on board between consecutive stops (trips with tap-on and tap-off).',"
	"{type:'line',data:{labels:r.segments,datasets:[{label:'on board',data:r.on,"
	"borderColor:'#2b8a3e',fill:true,backgroundColor:'rgba(43,138,62,.2)',stepped:true}]}});});\n"
	"chart('od','Origin-destination (journeys across operators)',"
	"'Bubble area by journeys; inferred destinations included, unlinked ones not.',"
	"{type:'bubble',data:{datasets:[{label:'journeys',data:D.od.points,"
	"backgroundColor:'rgba(53,114,176,.6)'}]},options:{scales:{x:{type:'linear',"
	"ticks:{stepSize:1,autoSkip:false,callback:function(v){return D.od.labels[v]||'';}},"
	"title:{display:true,text:'origin'}},y:{type:'linear',ticks:{stepSize:1,autoSkip:false,"
	"callback:function(v){return D.od.labels[v]||'';}},title:{display:true,"
	"text:'destination'}}}}});\n"
	"chart('categories','Rider categories','Boardings by the category applied.',"
	"{type:'doughnut',data:{labels:D.categories.labels,datasets:[{data:D.categories.values,"
	"backgroundColor:['#3572b0','#d9822b','#2b8a3e','#a23b72','#f2c14e','#6c757d']}]}});\n"
	"chart('resident','Resident share (My Number linked cards)','Boardings.',"
	"{type:'doughnut',data:{labels:['resident','other'],datasets:[{data:[D.resident.yes,"
	"D.resident.no],backgroundColor:['#2b8a3e','#bbbbbb']}]}});\n"
	"document.querySelectorAll('canvas').forEach(function(c){var x=c.getContext('2d');"
	"var d=x.getImageData(0,0,c.width,c.height).data,n=0;"
	"for(var i=3;i<d.length;i+=4)if(d[i]>0)n++;c.dataset.ink=(n/(c.width*c.height)).toFixed(4);"
	"var b=c.getBoundingClientRect();c.dataset.box=[Math.round(b.left+scrollX),"
	"Math.round(b.top+scrollY),Math.round(b.width),Math.round(b.height)].join(',');});\n"
	"document.body.dataset.drawn='yes';\n})();\n</script>\n";

static void json_labels_counts(FILE *fp, const char *name, const char *const *labels,
                               const int64_t *v, size_t n)
{
	fprintf(fp, "\"%s\":{\"labels\":[", name);
	for (size_t i = 0; i < n; i++) {
		fputs(i ? "," : "", fp);
		an_json_str(fp, labels[i]);
	}
	fputs("],\"values\":[", fp);
	for (size_t i = 0; i < n; i++)
		fprintf(fp, "%s%" PRId64, i ? "," : "", v[i]);
	fputs("]}", fp);
}

/* field i of a cell's key (into buf) */
static const char *field(const struct an_cell *c, int i, char *buf, size_t cap)
{
	const char *p = c->key;

	for (int j = 0; j < i && p != NULL; j++) {
		p = strchr(p, '\x1f');
		if (p != NULL)
			p++;
	}
	if (p == NULL)
		p = "";
	snprintf(buf, cap, "%.*s", (int)strcspn(p, "\x1f"), p);
	return buf;
}

static void hours_days(FILE *fp, const struct an_table *t)
{
	int64_t h[24] = { 0 };
	struct an_cell **v = an_sorted(&t[T_DAY]);
	char buf[64];

	for (size_t i = 0; i < t[T_HOUR].cap; i++) {
		const struct an_cell *c = &t[T_HOUR].cells[i];
		int hr;

		if (c->key != NULL && !c->suppressed && (hr = atoi(field(c, 2, buf, sizeof(buf)))) >= 0 &&
		    hr < 24)
			h[hr] += c->v[0];
	}
	fputs("\"hours\":{\"labels\":[", fp);
	for (int i = 0; i < 24; i++)
		fprintf(fp, "%s\"%02d\"", i ? "," : "", i);
	fputs("],\"boardings\":[", fp);
	for (int i = 0; i < 24; i++)
		fprintf(fp, "%s%" PRId64, i ? "," : "", h[i]);
	fputs("]},\n\"days\":{\"labels\":[", fp);
	for (size_t i = 0; v != NULL && i < t[T_DAY].n; i++)
		fprintf(fp, "%s\"%s\"", i ? "," : "", v[i]->key);
	for (int k = 0; k < 2; k++) {
		fputs(k == 0 ? "],\"b\":[" : "],\"a\":[", fp);
		for (size_t i = 0; v != NULL && i < t[T_DAY].n; i++) {
			if (v[i]->suppressed)
				fprintf(fp, "%snull", i ? "," : "");
			else
				fprintf(fp, "%s%" PRId64, i ? "," : "", v[i]->v[k]);
		}
	}
	fputs("]}", fp);
	free(v);
}

struct group { size_t from, n; int64_t total; };

static int by_total(const void *a, const void *b)
{
	const struct group *x = a, *y = b;

	return x->total < y->total ? 1 : x->total > y->total ? -1 : 0;
}

/* The cells of v (sorted by key) in groups of equal first `nkey` fields; the largest first. */
static struct group *groups(struct an_cell **v, size_t n, int nkey, size_t *ng)
{
	struct group *g = calloc(n ? n : 1, sizeof(*g));
	char a[256], b[256];

	*ng = 0;
	for (size_t i = 0; g != NULL && i < n; i++) {
		int same = *ng > 0;

		for (int f = 0; same && f < nkey; f++)
			same = strcmp(field(v[i], f, a, sizeof(a)), field(v[g[*ng - 1].from], f, b,
			              sizeof(b))) == 0;
		if (!same)
			g[(*ng)++] = (struct group){ i, 0, 0 };
		g[*ng - 1].n++;
		if (!v[i]->suppressed)
			g[*ng - 1].total += v[i]->v[0] + v[i]->v[1];
	}
	if (g != NULL)
		qsort(g, *ng, sizeof(*g), by_total);
	return g;
}

/* Boardings and alightings along each of the busiest routes (stops in the order of the
 * route's first pattern, the others after them by id). */
static int routes(FILE *fp, const struct an_table *t, const struct an_gtfs *g)
{
	struct an_cell **v = an_sorted(&t[T_STOP]);
	size_t ng = 0;
	struct group *gr = v != NULL ? groups(v, t[T_STOP].n, 2, &ng) : NULL;
	char b1[256], b2[256];

	if (gr == NULL) {
		free(v);
		return KP_AN_E_NOMEM;
	}
	fputs("\"routes\":[", fp);
	for (size_t k = 0; k < ng && k < TOP_ROUTES; k++) {
		struct an_cell **c = v + gr[k].from;
		size_t np = 0;
		char op[64], rid[64], rn[128];
		const struct an_pattern *p = an_gtfs_patterns(g, field(c[0], 1, rid, sizeof(rid)), &np);

		field(c[0], 0, op, sizeof(op));
		field(c[0], 2, rn, sizeof(rn));

		/* order by the pattern: a stable pass of insertion by position */
		for (size_t i = 1; p != NULL && i < gr[k].n; i++) {
			for (size_t j = i; j > 0; j--) {
				size_t pa = p->n, pb = p->n;
				char s1[64], s2[64];

				field(c[j - 1], 3, s1, sizeof(s1));
				field(c[j], 3, s2, sizeof(s2));
				for (size_t q = 0; q < p->n; q++) {
					pa = pa == p->n && strcmp(p->stops[q], s1) == 0 ? q : pa;
					pb = pb == p->n && strcmp(p->stops[q], s2) == 0 ? q : pb;
				}
				if (pa <= pb)
					break;
				struct an_cell *tmp = c[j];
				c[j] = c[j - 1];
				c[j - 1] = tmp;
			}
		}
		fputs(k ? ",\n{\"name\":" : "\n{\"name\":", fp);
		snprintf(b1, sizeof(b1), "%s %s", op, rn[0] ? rn : rid);
		an_json_str(fp, b1);
		fputs(",\"stops\":[", fp);
		for (size_t i = 0; i < gr[k].n; i++) {
			const char *nm = field(c[i], 4, b1, sizeof(b1));

			fputs(i ? "," : "", fp);
			an_json_str(fp, nm[0] ? nm : field(c[i], 3, b2, sizeof(b2)));
		}
		for (int x = 0; x < 3; x++) {
			fprintf(fp, "],\"%c\":[", "bai"[x]);
			for (size_t i = 0; i < gr[k].n; i++) {
				if (c[i]->suppressed)
					fprintf(fp, "%snull", i ? "," : "");
				else
					fprintf(fp, "%s%" PRId64, i ? "," : "", c[i]->v[x]);
			}
		}
		fputs("]}", fp);
	}
	fputs("]", fp);
	free(gr);
	free(v);
	return KP_AN_OK;
}

static int loads(FILE *fp, const struct an_table *t, const struct an_gtfs *g)
{
	struct an_cell **v = an_sorted(&t[T_LOAD]);
	size_t ng = 0;
	struct group *gr = v != NULL ? groups(v, t[T_LOAD].n, 3, &ng) : NULL;
	char b1[256], b2[256], b3[600];

	if (gr == NULL) {
		free(v);
		return KP_AN_E_NOMEM;
	}
	fputs("\"loads\":[", fp);
	for (size_t k = 0; k < ng && k < TOP_ROUTES; k++) {
		struct an_cell **c = v + gr[k].from;
		const char *route = field(c[0], 1, b1, sizeof(b1));
		const char *rn = an_gtfs_route_name(g, route);

		snprintf(b3, sizeof(b3), "%s %s, direction %s", field(c[0], 0, b2, sizeof(b2)),
		         rn[0] ? rn : route, field(c[0], 2, b1, sizeof(b1)));
		fputs(k ? ",\n{\"name\":" : "\n{\"name\":", fp);
		an_json_str(fp, b3);
		fputs(",\"segments\":[", fp);
		for (size_t i = 0; i < gr[k].n; i++) {
			const struct an_stop *a = an_gtfs_stop(g, field(c[i], 4, b1, sizeof(b1)));
			const struct an_stop *b = an_gtfs_stop(g, field(c[i], 5, b2, sizeof(b2)));

			snprintf(b3, sizeof(b3), "%s - %s", a != NULL ? a->name : b1,
			         b != NULL ? b->name : b2);
			fputs(i ? "," : "", fp);
			an_json_str(fp, b3);
		}
		fputs("],\"on\":[", fp);
		for (size_t i = 0; i < gr[k].n; i++) {
			if (c[i]->suppressed)
				fprintf(fp, "%snull", i ? "," : "");
			else
				fprintf(fp, "%s%" PRId64, i ? "," : "", c[i]->v[0]);
		}
		fputs("]}", fp);
	}
	fputs("]", fp);
	free(gr);
	free(v);
	return KP_AN_OK;
}

static int by_count(const void *a, const void *b)
{
	const struct an_cell *x = *(const struct an_cell *const *)a;
	const struct an_cell *y = *(const struct an_cell *const *)b;

	return x->v[0] < y->v[0] ? 1 : x->v[0] > y->v[0] ? -1 : strcmp(x->key, y->key);
}

/* The busiest journeys' origins and destinations as bubbles on one axis of stops. */
static int od(FILE *fp, const struct an_table *t, const struct an_gtfs *g)
{
	struct an_cell **v = an_sorted(&t[T_JOURNEY]);
	char (*lab)[130] = calloc(2 * TOP_OD + 1, sizeof(*lab));
	size_t n = 0, nl = 0;
	char o[128], d[128];

	if (v == NULL || lab == NULL) {
		free(v);
		free(lab);
		return KP_AN_E_NOMEM;
	}
	for (size_t i = 0; i < t[T_JOURNEY].n; i++) {   /* published, with a destination */
		if (!v[i]->suppressed && field(v[i], 1, d, sizeof(d))[0] != '\0')
			v[n++] = v[i];
	}
	qsort(v, n, sizeof(*v), by_count);
	fputs("\"od\":{\"points\":[", fp);
	for (size_t i = 0; i < n && i < TOP_OD; i++) {
		size_t xy[2];

		field(v[i], 0, o, sizeof(o));
		field(v[i], 1, d, sizeof(d));
		for (int k = 0; k < 2; k++) {
			const char *s = k == 0 ? o : d;

			for (xy[k] = 0; xy[k] < nl && strcmp(lab[xy[k]], s) != 0; xy[k]++)
				;
			if (xy[k] == nl)
				snprintf(lab[nl++], sizeof(lab[0]), "%s", s);
		}
		fprintf(fp, "%s{\"x\":%zu,\"y\":%zu,\"r\":%.1f,\"v\":%" PRId64 "}", i ? "," : "", xy[0],
		        xy[1], 3.0 + 2.0 * (double)(v[i]->v[0] > 400 ? 20 : v[i]->v[0] / 20.0 + 1),
		        v[i]->v[0]);
	}
	fputs("],\"labels\":[", fp);
	for (size_t i = 0; i < nl; i++) {          /* "OP:stop" named by the feed */
		const char *colon = strchr(lab[i], ':');
		const struct an_stop *s = colon != NULL ? an_gtfs_stop(g, colon + 1) : NULL;

		fputs(i ? "," : "", fp);
		an_json_str(fp, s != NULL && s->name[0] ? s->name : lab[i]);
	}
	fputs("]}", fp);
	free(lab);
	free(v);
	return KP_AN_OK;
}

static void categories(FILE *fp, const struct an_table *t)
{
	const char *labels[16];
	int64_t v[16], yes = 0, no = 0;
	size_t n = 0;
	char buf[16][64], r[8];

	for (size_t i = 0; i < t[T_CAT].cap; i++) {
		const struct an_cell *c = &t[T_CAT].cells[i];
		size_t j;

		if (c->key == NULL || c->suppressed)
			continue;
		field(c, 0, buf[n < 16 ? n : 15], sizeof(buf[0]));
		for (j = 0; j < n && strcmp(labels[j], buf[n < 16 ? n : 15]) != 0; j++)
			;
		if (j == n && n < 15) {
			labels[n] = buf[n];
			v[n++] = 0;
		}
		if (j < n)
			v[j] += c->v[0];
		if (strcmp(field(c, 1, r, sizeof(r)), "yes") == 0)
			yes += c->v[0];
		else
			no += c->v[0];
	}
	json_labels_counts(fp, "categories", labels, v, n);
	fprintf(fp, ",\n\"resident\":{\"yes\":%" PRId64 ",\"no\":%" PRId64 "}", yes, no);
}

static void summary_table(FILE *fp, const struct kp_an_summary *s, const char *period, int k)
{
	fprintf(fp, "<h1>Ridership %s</h1>\n<table>\n"
	        "<tr><th>boardings</th><td>%" PRId64 "</td></tr>\n"
	        "<tr><th>alightings observed (tap-off)</th><td>%" PRId64 "</td></tr>\n"
	        "<tr><th>trips with tap-on only</th><td>%" PRId64 "</td></tr>\n"
	        "<tr><th>of those, alighting inferred</th><td>%" PRId64 "</td></tr>\n"
	        "<tr><th>of those, unlinked</th><td>%" PRId64 "</td></tr>\n"
	        "<tr><th>cells suppressed (fewer than k = %d riders, and complementary)</th>"
	        "<td>%" PRId64 " of %" PRId64 "</td></tr>\n</table>\n",
	        period, s->boardings, s->alightings, s->tap_on_only, s->inferred, s->unlinked, k,
	        s->suppressed, s->cells);
	fprintf(fp, "<h2>Inferred-alighting accuracy</h2>\n<p class=\"note\">Measured on trips "
	        "that have a tap-off: the tap-off hidden, the alighting inferred by trip chaining, "
	        "then compared. Inferred alightings are never shown as observed.</p>\n<table>\n"
	        "<tr><th>trips tested</th><td>%" PRId64 "</td></tr>\n"
	        "<tr><th>inferred</th><td>%" PRId64 " (%.1f%%)</td></tr>\n"
	        "<tr><th>correct</th><td>%" PRId64 " (%.1f%% of inferred)</td></tr>\n</table>\n",
	        s->acc_tested, s->acc_inferred,
	        s->acc_tested ? 100.0 * (double)s->acc_inferred / (double)s->acc_tested : 0.0,
	        s->acc_correct,
	        s->acc_inferred ? 100.0 * (double)s->acc_correct / (double)s->acc_inferred : 0.0);
}

/* Chart.js's own file, copied into the page (it must not hold "</script"). */
static int put_chartjs(FILE *out, const char *path, char *err, size_t cap)
{
	FILE *in = fopen(path, "r");
	char buf[65536];
	size_t n;

	if (in == NULL) {
		snprintf(err, cap, "cannot read Chart.js %s: %s (Debian: apt install libjs-chart.js)",
		         path, strerror(errno));
		return KP_AN_E_IO;
	}
	fputs("<script>\n", out);
	while ((n = fread(buf, 1, sizeof(buf), in)) > 0)
		fwrite(buf, 1, n, out);
	fputs("\n</script>\n", out);
	fclose(in);
	return KP_AN_OK;
}

int an_report_html(const char *path, const char *chartjs, const struct an_table *t,
                   const struct an_gtfs *g, const struct kp_an_summary *s, const char *period,
                   int k, char *err, size_t cap)
{
	FILE *fp = fopen(path, "w");
	int rc;

	if (fp == NULL) {
		snprintf(err, cap, "cannot write %s: %s", path, strerror(errno));
		return KP_AN_E_IO;
	}
	fputs(page_head, fp);
	rc = put_chartjs(fp, chartjs, err, cap);
	fputs("</head><body>\n", fp);
	summary_table(fp, s, period, k);
	fputs("<div id=\"charts\"></div>\n<script>\nvar DATA={\n", fp);
	hours_days(fp, t);
	fputs(",\n", fp);
	if (rc == KP_AN_OK)
		rc = routes(fp, t, g);
	fputs(",\n", fp);
	if (rc == KP_AN_OK)
		rc = loads(fp, t, g);
	fputs(",\n", fp);
	if (rc == KP_AN_OK)
		rc = od(fp, t, g);
	fputs(",\n", fp);
	categories(fp, t);
	fputs("};\n</script>\n", fp);
	fputs(page_script, fp);
	fputs("</body></html>\n", fp);
	if (fclose(fp) != 0 && rc == KP_AN_OK) {
		snprintf(err, cap, "cannot write %s: %s", path, strerror(errno));
		rc = KP_AN_E_IO;
	}
	if (rc == KP_AN_E_NOMEM)
		snprintf(err, cap, "out of memory writing the report");
	return rc;
}
