/* SPDX-License-Identifier: Apache-2.0 */
#include "fuzzutil.h"
#include "kp_store_sql.h"

#include <dirent.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static char dir[256];

static void remove_tree(const char *path)
{
	DIR *d = opendir(path);
	struct dirent *e;
	char p[512];

	if (d == NULL)
		return;
	while ((e = readdir(d)) != NULL) {
		if (strcmp(e->d_name, ".") == 0 || strcmp(e->d_name, "..") == 0)
			continue;
		snprintf(p, sizeof(p), "%s/%s", path, e->d_name);
		if (unlink(p) != 0)
			remove_tree(p);
	}
	closedir(d);
	rmdir(path);
}

static void remove_dir(void)
{
	if (dir[0] != '\0')
		remove_tree(dir);
}

const char *fuzz_dir(void)
{
	if (dir[0] == '\0') {
		const char *t = getenv("TMPDIR");

		snprintf(dir, sizeof(dir), "%s/kippu-fuzz-XXXXXX", t != NULL && t[0] != '\0' ? t : "/tmp");
		if (mkdtemp(dir) == NULL) {
			perror("fuzz: mkdtemp");
			abort();
		}
		atexit(remove_dir);
	}
	return dir;
}

void fuzz_write(const char *name, const void *p, size_t n, char *path, size_t cap)
{
	FILE *f;

	snprintf(path, cap, "%s/%s", fuzz_dir(), name);
	f = fopen(path, "wb");
	if (f == NULL || (n > 0 && fwrite(p, 1, n, f) != n) || fclose(f) != 0) {
		perror("fuzz: write");
		abort();
	}
}

void fuzz_clear(const char *sub)
{
	char p[512];
	DIR *d;
	struct dirent *e;

	snprintf(p, sizeof(p), "%s/%s", fuzz_dir(), sub);
	d = opendir(p);
	if (d == NULL)
		return;
	while ((e = readdir(d)) != NULL) {
		char f[800];

		if (e->d_name[0] == '.')
			continue;
		snprintf(f, sizeof(f), "%s/%s", p, e->d_name);
		unlink(f);
	}
	closedir(d);
}

int fuzz_next(struct fuzz_split *s, const uint8_t **out, size_t *len)
{
	size_t n;

	if (s->n == 0)
		return 0;
	n = s->p[0];
	s->p++;
	s->n--;
	if (n == 255 || n > s->n)
		n = s->n;
	*out = s->p;
	*len = n;
	s->p += n;
	s->n -= n;
	return 1;
}

struct kp_store *fuzz_fresh_store(void)
{
	static kp_store *s;
	static unsigned char *image;
	static sqlite3_int64 image_len;
	unsigned char *copy;

	if (s == NULL) {
		if (kp_store_open(&s, ":memory:") != 0)
			abort();
		image = sqlite3_serialize(s->db, "main", &image_len, 0);
		if (image == NULL)
			abort();
		return s;
	}
	copy = sqlite3_malloc64((sqlite3_uint64)image_len);
	if (copy == NULL)
		abort();
	memcpy(copy, image, (size_t)image_len);
	if (sqlite3_deserialize(s->db, "main", copy, image_len, image_len,
	                        SQLITE_DESERIALIZE_FREEONCLOSE | SQLITE_DESERIALIZE_RESIZEABLE) !=
	    SQLITE_OK)
		abort();
	return s;
}
