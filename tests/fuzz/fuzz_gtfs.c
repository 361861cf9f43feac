/* SPDX-License-Identifier: Apache-2.0 */
/* A GTFS feed's files as `kippuctl fares import` reads them (terminal/fare/gtfs_csv.c,
 * fares_import.c): the input is split into files at lines "@@ NAME" (NAME one of the GTFS
 * files below), written into a folder, imported into a fresh in-memory store, and its stops
 * read by kp_gtfs_stop_places. */
#include "fuzzutil.h"
#include "kp_fare.h"
#include "kp_store.h"

#include <stdio.h>
#include <string.h>
#include <sys/stat.h>

static const char *const files[] = {
	"agency.txt", "stops.txt", "routes.txt", "fare_attributes.txt", "fare_rules.txt",
	"fare_products.txt", "fare_leg_rules.txt", "fare_transfer_rules.txt", "fare_media.txt",
	"rider_categories.txt", "areas.txt", "stop_areas.txt", "feed_info.txt",
	"calendar.txt", "trips.txt", "stop_times.txt",
};

static int known(const char *name, size_t n)
{
	for (size_t i = 0; i < sizeof(files) / sizeof(files[0]); i++)
		if (strlen(files[i]) == n && memcmp(files[i], name, n) == 0)
			return (int)i;
	return -1;
}

static int stop_place(void *arg, const char *stop_id, int64_t lat_e6, int64_t lon_e6)
{
	return 0;
}

static void write_files(const char *dir, const uint8_t *data, size_t size)
{
	const uint8_t *p = data, *end = data + size;
	int cur = -1;
	const uint8_t *start = NULL;
	char path[512];

	for (;;) {
		const uint8_t *eol = memchr(p, '\n', (size_t)(end - p));
		const uint8_t *next = eol != NULL ? eol + 1 : end;
		int f = -1;

		if (p < end && end - p > 3 && memcmp(p, "@@ ", 3) == 0)
			f = known((const char *)p + 3, (size_t)((eol != NULL ? eol : end) - p - 3));
		if (f >= 0 || p >= end) {
			if (cur >= 0) {
				FILE *fp;

				snprintf(path, sizeof(path), "%s/%s", dir, files[cur]);
				fp = fopen(path, "wb");
				if (fp != NULL) {
					fwrite(start, 1, (size_t)(p - start), fp);
					fclose(fp);
				}
			}
			cur = f;
			start = next;
		}
		if (p >= end)
			break;
		p = next;
	}
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	char dir[512], err[512];
	struct kp_fare_import_stats st;
	struct kp_fare_import_opts opts = { .feed_id = "fuzz" };

	snprintf(dir, sizeof(dir), "%s/feed", fuzz_dir());
	mkdir(dir, 0700);
	fuzz_clear("feed");
	write_files(dir, data, size);
	memset(&st, 0, sizeof(st));
	(void)kp_fares_import(fuzz_fresh_store(), dir, &opts, &st, err, sizeof(err));
	(void)kp_gtfs_stop_places(dir, stop_place, NULL, err, sizeof(err));
	return 0;
}
