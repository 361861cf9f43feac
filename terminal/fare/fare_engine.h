/* Internal to terminal/: pricing one leg charged to stored value (terminal/fare/FARES.md): the
 * leg's fare for the rider's category, the transfer from the card's previous leg, the caps.
 * The tap decision (tap.c) and through it `kippuctl fares quote` use these. */
#ifndef KP_TERMINAL_FARE_ENGINE_H
#define KP_TERMINAL_FARE_ENGINE_H

#include "store.h"

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
