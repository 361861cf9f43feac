/* SPDX-License-Identifier: Apache-2.0 */
/* The server's chunked snapshots, one per terminal at most, bounded in bytes and entries
 * (least recently used out first), behind one mutex. A chunk is copied out under the mutex
 * (at most 1 MiB), so an eviction never frees bytes being sent. */
#include "snapcache.h"

#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

struct entry {
	char terminal[KP_ID_MAX + 1];    /* "": free */
	uint64_t version;
	uint8_t sha[KP_SHA256_LEN];
	uint8_t *whole, *manifest;
	size_t len, manifest_len;
	int64_t built_ms;
	uint64_t used;                   /* c->clock at the last use */
};

struct kp_snapcache {
	pthread_mutex_t m;
	size_t cap, held;
	uint32_t chunk;
	uint64_t clock;
	struct entry e[KP_SNAPCACHE_ENTRIES];
};

int kp_snapcache_new(struct kp_snapcache **out, size_t cap_bytes, uint32_t chunk)
{
	struct kp_snapcache *c = calloc(1, sizeof(*c));

	*out = NULL;
	if (c == NULL)
		return KP_SYNC_E_NOMEM;
	pthread_mutex_init(&c->m, NULL);
	c->cap = cap_bytes;
	c->chunk = chunk >= 1 && chunk <= KP_SNAP_CHUNK_MAX ? chunk : KP_SNAP_CHUNK_MAX;
	*out = c;
	return KP_SYNC_OK;
}

static void drop(struct kp_snapcache *c, struct entry *e)
{
	c->held -= e->len + e->manifest_len;
	free(e->whole);
	free(e->manifest);
	memset(e, 0, sizeof(*e));
}

void kp_snapcache_free(struct kp_snapcache *c)
{
	if (c == NULL)
		return;
	for (int i = 0; i < KP_SNAPCACHE_ENTRIES; i++) {
		if (c->e[i].terminal[0] != '\0')
			drop(c, &c->e[i]);
	}
	pthread_mutex_destroy(&c->m);
	free(c);
}

uint32_t kp_snapcache_chunk_size(const struct kp_snapcache *c)
{
	return c->chunk;
}

static struct entry *find(struct kp_snapcache *c, const char *terminal)
{
	for (int i = 0; i < KP_SNAPCACHE_ENTRIES; i++) {
		if (strcmp(c->e[i].terminal, terminal) == 0)
			return &c->e[i];
	}
	return NULL;
}

int kp_snapcache_manifest(struct kp_snapcache *c, const char *terminal, uint64_t have,
                          const uint8_t *snap, uint64_t current, int64_t now_ms,
                          uint8_t **cose, size_t *len)
{
	struct entry *e;
	int found = 0;

	*cose = NULL;
	*len = 0;
	pthread_mutex_lock(&c->m);
	e = find(c, terminal);
	if (e != NULL && e->version > have && now_ms - e->built_ms < KP_SNAPCACHE_REUSE_MS &&
	    now_ms >= e->built_ms &&
	    (e->version == current || (snap != NULL && memcmp(snap, e->sha, KP_SHA256_LEN) == 0)) &&
	    (*cose = malloc(e->manifest_len)) != NULL) {
		memcpy(*cose, e->manifest, e->manifest_len);
		*len = e->manifest_len;
		e->used = ++c->clock;
		found = 1;
	}
	pthread_mutex_unlock(&c->m);
	return found;
}

/* The least recently used entry other than keep, or NULL if there is none. */
static struct entry *oldest(struct kp_snapcache *c, const struct entry *keep)
{
	struct entry *o = NULL;

	for (int i = 0; i < KP_SNAPCACHE_ENTRIES; i++) {
		struct entry *e = &c->e[i];

		if (e != keep && e->terminal[0] != '\0' && (o == NULL || e->used < o->used))
			o = e;
	}
	return o;
}

void kp_snapcache_put(struct kp_snapcache *c, const char *terminal, uint64_t version,
                      const uint8_t sha[KP_SHA256_LEN], uint8_t *whole, size_t len,
                      uint8_t *manifest, size_t manifest_len, int64_t now_ms)
{
	struct entry *e, *o;

	pthread_mutex_lock(&c->m);
	e = find(c, terminal);
	if (e != NULL)
		drop(c, e);
	e = find(c, "");
	if (e == NULL) {
		e = oldest(c, NULL);
		drop(c, e);
	}
	snprintf(e->terminal, sizeof(e->terminal), "%s", terminal);
	e->version = version;
	memcpy(e->sha, sha, KP_SHA256_LEN);
	e->whole = whole;
	e->len = len;
	e->manifest = manifest;
	e->manifest_len = manifest_len;
	e->built_ms = now_ms;
	e->used = ++c->clock;
	c->held += len + manifest_len;
	while (c->held > c->cap && (o = oldest(c, e)) != NULL)
		drop(c, o);
	pthread_mutex_unlock(&c->m);
}

int kp_snapcache_chunk(struct kp_snapcache *c, const char *terminal,
                       const uint8_t sha[KP_SHA256_LEN], uint64_t index, uint8_t **data,
                       size_t *len)
{
	struct entry *e;
	int rc = 0;

	*data = NULL;
	*len = 0;
	pthread_mutex_lock(&c->m);
	e = find(c, terminal);
	if (e != NULL && memcmp(e->sha, sha, KP_SHA256_LEN) == 0) {
		uint64_t off = index * c->chunk;

		rc = -1;
		if (index < KP_SNAP_CHUNKS_MAX && off < e->len) {
			size_t n = e->len - off < c->chunk ? (size_t)(e->len - off) : c->chunk;

			if ((*data = malloc(n)) != NULL) {
				memcpy(*data, e->whole + off, n);
				*len = n;
				e->used = ++c->clock;
				rc = 1;
			}
		}
	}
	pthread_mutex_unlock(&c->m);
	return rc;
}
