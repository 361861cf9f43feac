/* SPDX-License-Identifier: Apache-2.0 */
/* A GTFS feed as agencies publish it, a .zip, for `kippuctl fares import`: its .txt members
 * are written into a private folder (mkdtemp, 0700) that the importer reads like any feed
 * folder, and which is removed after. The zip is untrusted: a member name with '/', '\' or
 * "..", or one starting with '.', is refused (nothing is written outside the folder), and so
 * is a member larger than KP_GTFS_ZIP_MEMBER_MAX uncompressed or members together larger
 * than KP_GTFS_ZIP_TOTAL_MAX (zip bombs), counted on the bytes actually inflated, not only on
 * the sizes the zip declares. The only file that includes <zip.h>. */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include <zip.h>

#include "kp_tools.h"

static int bad_name(const char *name)
{
	size_t n = strlen(name);

	return n == 0 || name[0] == '.' || strchr(name, '/') != NULL ||
	       strchr(name, '\\') != NULL || strstr(name, "..") != NULL;
}

static int is_txt(const char *name)
{
	size_t n = strlen(name);

	return n > 4 && strcmp(name + n - 4, ".txt") == 0;
}

/* One member into dir/name, at most `left` bytes (the member and the total caps). */
static int extract(zip_t *z, zip_uint64_t i, const char *name, const char *dir,
                   zip_uint64_t *total, char *err, size_t cap)
{
	char path[4200], buf[65536];
	zip_uint64_t got = 0;
	zip_int64_t n;
	zip_file_t *zf;
	int fd, rc = 0;

	zf = zip_fopen_index(z, i, 0);
	if (zf == NULL) {
		snprintf(err, cap, "member %s: %s", name, zip_strerror(z));
		return -1;
	}
	snprintf(path, sizeof(path), "%s/%s", dir, name);
	fd = open(path, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0600);
	if (fd < 0) {
		snprintf(err, cap, "member %s: %s", name, strerror(errno));
		zip_fclose(zf);
		return -1;
	}
	while (rc == 0 && (n = zip_fread(zf, buf, sizeof(buf))) > 0) {
		got += (zip_uint64_t)n;
		*total += (zip_uint64_t)n;
		if (got > KP_GTFS_ZIP_MEMBER_MAX || *total > KP_GTFS_ZIP_TOTAL_MAX) {
			snprintf(err, cap, "member %s: larger than %d MiB uncompressed (%s); refused",
			         name, got > KP_GTFS_ZIP_MEMBER_MAX ? KP_GTFS_ZIP_MEMBER_MAX >> 20 :
			         KP_GTFS_ZIP_TOTAL_MAX >> 20, got > KP_GTFS_ZIP_MEMBER_MAX ?
			         "one member" : "all members together");
			rc = -1;
		} else if (write(fd, buf, (size_t)n) != n) {
			snprintf(err, cap, "member %s: %s", name, strerror(errno));
			rc = -1;
		}
	}
	if (rc == 0 && n < 0) {
		snprintf(err, cap, "member %s: %s", name, zip_file_strerror(zf));
		rc = -1;
	}
	if (close(fd) != 0 && rc == 0) {
		snprintf(err, cap, "member %s: %s", name, strerror(errno));
		rc = -1;
	}
	zip_fclose(zf);
	return rc;
}

/* Every member's name and declared size checked before anything is written. */
static int check_members(zip_t *z, zip_int64_t n, char *err, size_t cap)
{
	zip_uint64_t total = 0;
	zip_stat_t st;

	for (zip_int64_t i = 0; i < n; i++) {
		if (zip_stat_index(z, (zip_uint64_t)i, 0, &st) != 0 || !(st.valid & ZIP_STAT_NAME)) {
			snprintf(err, cap, "member %lld: %s", (long long)i, zip_strerror(z));
			return -1;
		}
		if (bad_name(st.name)) {
			snprintf(err, cap, "member \"%.200s\": a name with '/', '\\' or \"..\" (or starting "
			         "with '.') is refused: a feed's files are at the top of its zip", st.name);
			return -1;
		}
		if (!is_txt(st.name) || !(st.valid & ZIP_STAT_SIZE))
			continue;
		total += st.size;
		if (st.size > KP_GTFS_ZIP_MEMBER_MAX || total > KP_GTFS_ZIP_TOTAL_MAX) {
			snprintf(err, cap, "member %s: larger than %d MiB uncompressed (%s); refused",
			         st.name, st.size > KP_GTFS_ZIP_MEMBER_MAX ? KP_GTFS_ZIP_MEMBER_MAX >> 20 :
			         KP_GTFS_ZIP_TOTAL_MAX >> 20, st.size > KP_GTFS_ZIP_MEMBER_MAX ?
			         "one member" : "all members together");
			return -1;
		}
	}
	return 0;
}

int kp_gtfs_zip_open(const char *zip_path, char *dir, size_t dir_cap, char *err, size_t cap)
{
	const char *tmp = getenv("TMPDIR");
	zip_uint64_t total = 0;
	zip_int64_t n;
	zip_error_t ze;
	zip_t *z;
	int zerr = 0, rc = -1;

	dir[0] = '\0';
	z = zip_open(zip_path, ZIP_RDONLY, &zerr);
	if (z == NULL) {
		zip_error_init_with_code(&ze, zerr);
		snprintf(err, cap, "%s: not a zip file we can read (%s)", zip_path,
		         zip_error_strerror(&ze));
		zip_error_fini(&ze);
		return -1;
	}
	n = zip_get_num_entries(z, 0);
	if (n < 0 || check_members(z, n, err, cap) != 0)
		goto out;
	snprintf(dir, dir_cap, "%s/kippu-gtfs-XXXXXX", tmp != NULL && tmp[0] ? tmp : "/tmp");
	if (mkdtemp(dir) == NULL) {
		snprintf(err, cap, "scratch folder %s: %s", dir, strerror(errno));
		dir[0] = '\0';
		goto out;
	}
	for (zip_int64_t i = 0; i < n; i++) {
		const char *name = zip_get_name(z, (zip_uint64_t)i, 0);

		if (name != NULL && is_txt(name) &&
		    extract(z, (zip_uint64_t)i, name, dir, &total, err, cap) != 0)
			goto out;
	}
	rc = 0;
out:
	zip_discard(z);
	if (rc != 0) {
		kp_gtfs_zip_close(dir);
		dir[0] = '\0';
	}
	return rc;
}

void kp_gtfs_zip_close(const char *dir)
{
	struct dirent *de;
	char path[4200];
	DIR *d;

	if (dir == NULL || dir[0] == '\0' || (d = opendir(dir)) == NULL)
		return;
	while ((de = readdir(d)) != NULL) {
		if (strcmp(de->d_name, ".") == 0 || strcmp(de->d_name, "..") == 0)
			continue;
		snprintf(path, sizeof(path), "%s/%s", dir, de->d_name);
		unlink(path);
	}
	closedir(d);
	rmdir(dir);
}
