/* SPDX-License-Identifier: Apache-2.0 */
/* Helpers shared by the libFuzzer targets (tests/fuzz/fuzz_*.c). A target writes only into
 * its own temporary folder (fuzz_dir), removed when the process exits, and reads no clock. */
#ifndef KP_FUZZUTIL_H
#define KP_FUZZUTIL_H

#include <stddef.h>
#include <stdint.h>

#include <stdio.h>
#include <stdlib.h>

/* The key and certificate the seeds are signed with and the targets verify with:
 * made by `make fuzz` in $KP_FUZZ_DATA (BUILD/fuzz/data), never kept in the tree. */
static inline const char *fuzz_data_file(const char *name)
{
	static char path[2][512];
	static int k;
	const char *dir = getenv("KP_FUZZ_DATA");

	if (dir == NULL || *dir == '\0') {
		fputs("fuzz: KP_FUZZ_DATA is not set (make fuzz sets it)\n", stderr);
		exit(2);
	}
	k ^= 1;
	snprintf(path[k], sizeof(path[k]), "%s/%s", dir, name);
	return path[k];
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

/* The process's temporary folder (made on first use under $TMPDIR or /tmp). */
const char *fuzz_dir(void);
/* Writes n bytes to fuzz_dir()/name; the full path into path[cap]. Aborts on failure. */
void fuzz_write(const char *name, const void *p, size_t n, char *path, size_t cap);
/* Removes the regular files in fuzz_dir()/sub ("" for the folder itself). */
void fuzz_clear(const char *sub);

/* A fresh in-memory terminal store: the first call opens one and keeps an image of it; each
 * call after puts that image back (sqlite3_deserialize), which is much faster than opening
 * a store (its schema) again. Never close it. */
struct kp_store;
struct kp_store *fuzz_fresh_store(void);

/* Splits the input into pieces: each is a 1-byte length (0-254; 255 means the rest of the
 * input) then the bytes. */
struct fuzz_split {
	const uint8_t *p;
	size_t n;
};
/* The next piece into *out and *len: 1, or 0 when the input is used up. */
int fuzz_next(struct fuzz_split *s, const uint8_t **out, size_t *len);

#endif
