/* SPDX-License-Identifier: Apache-2.0 */
/* The staging area of a chunked snapshot (PROTOCOL.md section 5.5): the chunks received so
 * far, in two tables of the terminal's database (schema 14), so that a fetch cut by a lost
 * connection or a restart goes on at the next sync from the first chunk missing. Chunks go in
 * strictly in order, each once, for the one snapshot staged; a newer snapshot replaces the
 * staged one whole. Nothing here touches what the terminal applied: the snapshot is applied
 * by src_apply_bundle only when every chunk is there and the whole is verified. */
#include "kp_store_sql.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* The staged snapshot's name and chunk count, and how many chunks are there (0 0 0: none). */
int kp_store_snapshot_staged(kp_store *s, uint8_t snap[KP_SHA256_LEN], uint32_t *n_chunks,
                             uint32_t *staged)
{
	sqlite3_stmt *st = NULL;
	int rc = KP_OK, step;

	memset(snap, 0, KP_SHA256_LEN);
	*n_chunks = *staged = 0;
	if (sqlite3_prepare_v2(s->db, "SELECT snap, n_chunks, (SELECT count(*) FROM"
	                       " snapshot_chunks) FROM snapshot_stage WHERE id = 1", -1, &st,
	                       NULL) != SQLITE_OK)
		return kp_store_fail(s, "snapshot staged");
	step = sqlite3_step(st);
	if (step == SQLITE_ROW && sqlite3_column_bytes(st, 0) == KP_SHA256_LEN) {
		memcpy(snap, sqlite3_column_blob(st, 0), KP_SHA256_LEN);
		*n_chunks = (uint32_t)sqlite3_column_int64(st, 1);
		*staged = (uint32_t)sqlite3_column_int64(st, 2);
	} else if (step != SQLITE_DONE && step != SQLITE_ROW) {
		rc = kp_store_fail(s, "snapshot staged");
	}
	sqlite3_finalize(st);
	return rc;
}

static int snap_clear_tx(kp_store *s)
{
	int rc = kp_store_run_vals(s, "snapshot chunks", "DELETE FROM snapshot_chunks", NULL, 0);

	if (rc == KP_OK)
		rc = kp_store_run_vals(s, "snapshot stage", "DELETE FROM snapshot_stage", NULL, 0);
	return rc;
}

static int finish(kp_store *s, int rc)
{
	if (rc == KP_OK)
		rc = kp_store_commit(s);
	if (rc != KP_OK)
		kp_store_rollback(s);
	return rc;
}

/* Begins a transaction and reads what is staged. */
static int begin_staged(kp_store *s, uint8_t held[KP_SHA256_LEN], uint32_t *n,
                        uint32_t *staged)
{
	int rc = kp_store_begin(s);

	if (rc == KP_OK)
		rc = kp_store_snapshot_staged(s, held, n, staged);
	return rc;
}

static int src_snap_stage(void *ctx, const uint8_t snap[KP_SHA256_LEN], uint32_t n_chunks,
                          uint32_t *next)
{
	kp_store *s = ctx;
	uint8_t held[KP_SHA256_LEN];
	uint32_t n = 0, staged = 0;
	int rc = begin_staged(s, held, &n, &staged);

	if (rc == KP_OK && n == n_chunks && memcmp(held, snap, KP_SHA256_LEN) == 0) {
		*next = staged;
		return finish(s, rc);
	}
	/* none, or another snapshot: a newer one replaces it whole */
	if (rc == KP_OK)
		rc = snap_clear_tx(s);
	if (rc == KP_OK) {
		struct kp_sql_val v[] = { KP_SQL_BLOB(snap, KP_SHA256_LEN), KP_SQL_INT(n_chunks) };

		rc = kp_store_run_vals(s, "snapshot stage", "INSERT INTO snapshot_stage(id, snap,"
		                       " n_chunks) VALUES (1, ?1, ?2)", v, 2);
	}
	*next = 0;
	return finish(s, rc);
}

static int src_snap_put(void *ctx, const uint8_t snap[KP_SHA256_LEN], uint32_t index,
                        const uint8_t *data, size_t len)
{
	kp_store *s = ctx;
	uint8_t held[KP_SHA256_LEN];
	uint32_t n = 0, staged = 0;
	int rc = begin_staged(s, held, &n, &staged);

	if (rc == KP_OK && (memcmp(held, snap, KP_SHA256_LEN) != 0 || index != staged ||
	                    index >= n || len == 0)) {
		snprintf(s->err, sizeof(s->err), "chunk %u does not belong: the staging area holds "
		         "%u of %u chunk(s)%s", index, staged, n,
		         memcmp(held, snap, KP_SHA256_LEN) != 0 ? " of another snapshot" : "");
		kp_store_rollback(s);
		return KP_SYNC_E_PROTOCOL;
	}
	if (rc == KP_OK) {
		struct kp_sql_val v[] = { KP_SQL_INT(index), KP_SQL_BLOB(data, len) };

		rc = kp_store_run_vals(s, "snapshot chunk", "INSERT INTO snapshot_chunks(idx, data)"
		                       " VALUES (?1, ?2)", v, 2);
	}
	return finish(s, rc);
}

static int src_snap_read(void *ctx, const uint8_t snap[KP_SHA256_LEN], uint8_t **whole,
                         size_t *len)
{
	kp_store *s = ctx;
	sqlite3_stmt *st = NULL;
	uint8_t held[KP_SHA256_LEN], *buf = NULL;
	uint32_t n = 0, staged = 0, i = 0;
	size_t total = 0, off = 0;
	int rc = kp_store_snapshot_staged(s, held, &n, &staged);

	*whole = NULL;
	*len = 0;
	if (rc == KP_OK && (memcmp(held, snap, KP_SHA256_LEN) != 0 || staged != n || n == 0)) {
		snprintf(s->err, sizeof(s->err), "the staging area holds %u of %u chunk(s)", staged,
		         n);
		return KP_SYNC_E_PROTOCOL;
	}
	if (rc == KP_OK && sqlite3_prepare_v2(s->db, "SELECT idx, data FROM snapshot_chunks"
	                                      " ORDER BY idx", -1, &st, NULL) != SQLITE_OK)
		rc = kp_store_fail(s, "snapshot chunks");
	/* two passes: the length, then the bytes, so the whole is allocated once */
	for (int pass = 0; rc == KP_OK && pass < 2; pass++) {
		if (pass == 1 && (buf = malloc(total > 0 ? total : 1)) == NULL)
			rc = KP_E_NOMEM;
		for (i = 0; rc == KP_OK && sqlite3_step(st) == SQLITE_ROW; i++) {
			size_t n_bytes = (size_t)sqlite3_column_bytes(st, 1);

			if (sqlite3_column_int64(st, 0) != i) {
				snprintf(s->err, sizeof(s->err), "snapshot chunk %u is missing", i);
				rc = KP_SYNC_E_PROTOCOL;
			} else if (pass == 0) {
				total += n_bytes;
			} else {
				memcpy(buf + off, sqlite3_column_blob(st, 1), n_bytes);
				off += n_bytes;
			}
		}
		sqlite3_reset(st);
	}
	sqlite3_finalize(st);
	if (rc != KP_OK) {
		free(buf);
		return rc;
	}
	*whole = buf;
	*len = total;
	return KP_OK;
}

static int src_snap_clear(void *ctx)
{
	kp_store *s = ctx;
	int rc = kp_store_begin(s);

	if (rc == KP_OK)
		rc = snap_clear_tx(s);
	return finish(s, rc);
}

static int src_snap_held(void *ctx, uint8_t snap[KP_SHA256_LEN], int *held)
{
	uint32_t n = 0, staged = 0;
	int rc = kp_store_snapshot_staged(ctx, snap, &n, &staged);

	*held = rc == KP_OK && n > 0;
	return rc;
}

void kp_store_snap_source(struct kp_sync_source *src)
{
	src->snap_held = src_snap_held;
	src->snap_stage = src_snap_stage;
	src->snap_put = src_snap_put;
	src->snap_read = src_snap_read;
	src->snap_clear = src_snap_clear;
}
