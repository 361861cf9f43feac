/* SPDX-License-Identifier: Apache-2.0 */
/* kippu terminal, fare/: GTFS fare feeds (fares v1 / GTFS-JP and fares v2): import, lookup
 * and money parsing. Depends on store/. */
#ifndef KP_FARE_H
#define KP_FARE_H

#include "kp_store.h"
#include "kp_settings.h"

/* ---- fares from GTFS (fares v1 / GTFS-JP and fares v2) ---- */


struct kp_fare_import_opts {
	const char *feed_id;        /* NULL: the folder's last path component */
	/* Called once per tolerated deviation (unknown column, BOM, missing optional file...). */
	void (*warn)(void *arg, const char *msg);
	void *warn_arg;
};
struct kp_fare_import_stats {
	int64_t fares, fare_rules, rider_prices;             /* fares v1 */
	int64_t products, leg_rules, transfer_rules;         /* fares v2 */
	int64_t warnings;
};
/* Imports the fare files of the GTFS feed in dir as one feed, replacing that feed's rows,
 * in one transaction: on any error nothing changes and err says "file:line: field: why". */
/* The place of every stop of the GTFS feed in dir that has one (stops.txt stop_lat,
 * stop_lon, in micro-degrees), for the backend's clone detection; fn returning other than
 * KP_OK stops the walk with its code. Stops without a place, or a place out of range, are
 * skipped. KP_E_IO when there is no stops.txt. */
int kp_gtfs_stop_places(const char *dir,
                        int (*fn)(void *arg, const char *stop_id, int64_t lat_e6, int64_t lon_e6),
                        void *arg, char *err, size_t err_cap);
int kp_fares_import(kp_store *s, const char *dir, const struct kp_fare_import_opts *opts,
                    struct kp_fare_import_stats *stats, char *err, size_t err_cap);

enum kp_fare_model { KP_FARE_AUTO = 0, KP_FARE_V1 = 1, KP_FARE_V2 = 2 };

/* One leg. Stops give zones (v1, stops.txt zone_id) and areas (v2, stop_areas.txt); a zone
 * or area given directly is used instead. NULL or "" = not known. */
struct kp_fare_query {
	const char *feed_id;
	const char *route_id;
	const char *from_stop, *to_stop;
	const char *from_zone, *to_zone;    /* v1 zone_id / v2 area_id */
	int32_t date;                       /* service date YYYYMMDD (agency local), 0 = unknown */
	int32_t time_s;                     /* seconds after that date's midnight (may pass 24 h) */
	const char *rider_category;         /* NULL: the feed's default category */
	const char *fare_media;             /* v2 fare_media_id, NULL: any */
	int payment_method;                 /* v1: -1 any, 0 on board, 1 before boarding */
	enum kp_fare_model model;           /* AUTO: v2 if the feed has fare_leg_rules */
	int max_to;                         /* 1: the highest fare from from_stop to any stop
	                                     * (what a journey without tap-off is charged) */
};
struct kp_fare_result {
	int64_t amount;                     /* in the currency's minor unit (JPY 1, USD 0.01) */
	char currency[4];
	int minor_digits;
	enum kp_fare_model model;
	char fare_id[KP_FARE_ID_MAX + 1];   /* v1 fare_id, v2 fare_product_id */
	char leg_group_id[KP_FARE_ID_MAX + 1];  /* v2 */
	char rider_category[KP_FARE_ID_MAX + 1]; /* the category priced ("" = none) */
	char rule[KP_FARE_MSG_MAX];         /* the rule that matched, e.g. "fare_rules.txt:12" */
};
/* Prices one leg: KP_OK, KP_E_NOFARE (nothing matches), KP_E_INVAL (unknown feed), KP_E_DB. */
int kp_fare_lookup(kp_store *s, const struct kp_fare_query *q, struct kp_fare_result *r);
/* A transfer from the previous leg (prev_*) to this one within one feed. */
struct kp_fare_transfer_query {
	const char *feed_id;
	const char *from_group, *to_group;  /* v2 leg_group_id of each leg */
	const char *rider_category;         /* NULL: the feed's default */
	int64_t prev_on_ms, prev_off_ms;    /* the previous leg's departure and arrival taps */
	int64_t on_ms, off_ms;              /* this leg's */
	int transfers_so_far;               /* in the current chain */
	int64_t prev_paid;                  /* what the previous leg cost (A) */
	int64_t fare;                       /* this leg's own fare (B) */
	const struct kp_fare_run *run;      /* the run that reached the previous leg, NULL: none */
};
struct kp_fare_transfer_result {
	int64_t cost;                       /* this leg's cost under the rule */
	char rule[64];                      /* e.g. "fare_transfer_rules.txt:3 type 1" */
	struct kp_fare_run run;             /* the run this transfer continues, or starts at the
	                                     * previous leg */
};
/* fares v2 fare_transfer_rules: the cheapest cost of this leg under a rule that applies
 * (type 0: AB, 1: AB + B, 2: AB - A, never below 0); *found = 0 when none applies. */
int kp_fare_transfer_v2(kp_store *s, const struct kp_fare_transfer_query *q,
                        struct kp_fare_transfer_result *r, int *found);
/* fares v1: fare_attributes transfers (-1 = unlimited) and transfer_duration in seconds
 * (-1 = none given) of fare_id; *found = 0 if the feed has no such fare. */
int kp_fare_v1_transfers(kp_store *s, const char *feed_id, const char *fare_id, int *transfers,
                         int64_t *duration_s, int *found);
/* ISO 4217 minor-unit digits of a currency code, or -1 if unknown. */
int kp_currency_digits(const char *code);
/* Parses a decimal amount ("2.50", "3", "0.5") into minor units without floating point;
 * KP_E_PARSE if malformed, negative (unless allowed) or with more decimals than digits. */
int kp_money_parse(const char *s, int digits, int allow_negative, int64_t *out);

/* ---- the fare engine: pricing one leg charged to stored value (FARES.md); the tap
 * decision and through it `kippuctl fares quote` use these ---- */

struct kp_leg {
	const char *feed;                /* the operator's fare feed */
	const char *operator_id, *route;
	const char *from_stop, *to_stop; /* to_stop NULL: flat fare (boarding stop only) */
	int max_to;                      /* the highest fare from from_stop (no tap-off) */
	int64_t on_ms, off_ms;           /* departure and arrival taps (flat: both the tap) */
};

struct kp_leg_price {
	int64_t fare;                    /* the leg's fare for the rider's category */
	int64_t after_transfer;          /* what it costs after a transfer from the last leg */
	int64_t amount;                  /* what is charged, after the caps */
	const struct kp_elig_view *cat;  /* the category that priced it, NULL: adult */
	char fare_id[KP_FARE_ID_MAX + 1];
	char group[KP_FARE_ID_MAX + 1];  /* v2 leg group, v1 fare id */
	int transfer;                    /* 1: a transfer applied */
	int cap_hit;                     /* 1: a cap lowered the amount */
	char note[KP_RECORD_FARE_MAX + 1];
};

/* Appends "; text" (or text when empty) to note, cut at a UTF-8 boundary. */
void kp_note_add(char *note, size_t cap, const char *fmt, ...)
	__attribute__((format(printf, 3, 4)));

/* Local calendar date (YYYYMMDD) and seconds after local midnight of ms. */
void kp_local_date_time(int utc_offset_s, int64_t ms, int32_t *date, int32_t *time_s);
/* Service day number and the month (YYYYMM) that service day lies in. */
void kp_service_period(const struct kp_terminal_cfg *cfg, int64_t ms, int64_t *day_id,
                       int64_t *month_id);

/* The operator's fare feed and mode: its `fares` row, else the terminal's configured feed.
 * *have = 0 when neither exists. */
int kp_operator_fare(kp_store *s, const struct kp_terminal_cfg *cfg, const char *operator_id,
                     char feed[KP_ID_MAX + 1], int *distance, int *have);

/* Step 1: the leg's fare, the cheapest over the categories the card holds now. */
int kp_leg_fare(kp_store *s, const struct kp_terminal_cfg *cfg, const struct kp_leg *leg,
                const struct kp_elig_view *el, size_t n_el, int64_t now, struct kp_leg_price *p);
/* Step 2: the transfer from the card's previous leg; with apply, fs records this leg. */
int kp_leg_transfer(kp_store *s, const struct kp_leg *leg, struct kp_fare_state *fs,
                    struct kp_leg_price *p, int apply);
/* Step 3: the day and month caps of the category at the leg's start; with apply, the
 * amount is added to fs's spending. */
int kp_leg_caps(kp_store *s, const struct kp_terminal_cfg *cfg, int64_t at_ms,
                struct kp_fare_state *fs, struct kp_leg_price *p, int apply);

#endif
