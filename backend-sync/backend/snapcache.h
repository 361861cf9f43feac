/* SPDX-License-Identifier: Apache-2.0 */
/* The server's chunked snapshots (PROTOCOL.md section 5.5), kept in memory so that a
 * terminal's chunks are served from one build, and a cut fetch resumes without a rebuild. */
#ifndef KP_SNAPCACHE_H
#define KP_SNAPCACHE_H

#include <stddef.h>
#include <stdint.h>

#include "kp_proto.h"

/* A snapshot is offered again to its terminal for this long after it was built (the
 * changes since come as a delta); after it, or when the terminal holds its version, a new
 * one is built. */
#define KP_SNAPCACHE_REUSE_MS (10 * 60 * 1000)
/* What the snapshots held take at most, unless one alone is larger (then it is the only
 * one held): the least recently used go first. */
#define KP_SNAPCACHE_BYTES    ((size_t)1024 * 1024 * 1024)
#define KP_SNAPCACHE_ENTRIES  64

struct kp_snapcache;
/* chunk: the chunk size of the snapshots made (1 .. KP_SNAP_CHUNK_MAX). */
int  kp_snapcache_new(struct kp_snapcache **out, size_t cap_bytes, uint32_t chunk);
void kp_snapcache_free(struct kp_snapcache *c);
uint32_t kp_snapcache_chunk_size(const struct kp_snapcache *c);
/* The signed manifest (a malloc'd copy) of the snapshot held for terminal, if its version
 * is above have, it is younger than KP_SNAPCACHE_REUSE_MS, and it is either the one the
 * terminal has chunks of (resumed: snap, may be NULL) or of the backend's current state
 * version: 1; else 0 (a new one is due). */
int  kp_snapcache_manifest(struct kp_snapcache *c, const char *terminal, uint64_t have,
                           const uint8_t *snap, uint64_t current, int64_t now_ms,
                           uint8_t **cose, size_t *len);
/* Holds a snapshot (takes whole and manifest, malloc'd), replacing the terminal's older one;
 * evicts the least recently used beyond the bound. */
void kp_snapcache_put(struct kp_snapcache *c, const char *terminal, uint64_t version,
                      const uint8_t sha[KP_SHA256_LEN], uint8_t *whole, size_t len,
                      uint8_t *manifest, size_t manifest_len, int64_t now_ms);
/* A malloc'd copy of chunk `index` of snapshot sha held for terminal: 1; 0: no such
 * snapshot held (evicted, replaced, another terminal's); -1: no such chunk in it. */
int  kp_snapcache_chunk(struct kp_snapcache *c, const char *terminal,
                        const uint8_t sha[KP_SHA256_LEN], uint64_t index, uint8_t **data,
                        size_t *len);

#endif
