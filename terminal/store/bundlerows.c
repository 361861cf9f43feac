/* SPDX-License-Identifier: Apache-2.0 */
/* The bundle's arrays as rows of the terminal's tables, through their field tables
 * (kp_bundle.h): the SQL, the bindings and the columns come from the same rows the bundle's
 * encoder reads, so a new field is not written again here. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "kp_store.h"
#include "kp_store_sql.h"

void kp_store_bind_row(sqlite3_stmt *st, enum kp_bundle_array_id id, const void *el)
{
	struct kp_fare_value vals[KP_BUNDLE_ROW_MAX];
	const char *cols[KP_BUNDLE_ROW_MAX];
	int blob[KP_BUNDLE_ROW_MAX];
	size_t n = kp_bundle_row_columns(id, cols, blob);

	kp_bundle_row_get(id, el, vals);
	for (size_t i = 0; i < n; i++) {
		if (vals[i].is_null)
			sqlite3_bind_null(st, (int)i + 1);
		else if (blob[i])
			sqlite3_bind_blob(st, (int)i + 1, vals[i].s, (int)vals[i].n, SQLITE_STATIC);
		else if (vals[i].s != NULL)
			sqlite3_bind_text(st, (int)i + 1, vals[i].s, (int)vals[i].n, SQLITE_STATIC);
		else
			sqlite3_bind_int64(st, (int)i + 1, vals[i].i);
	}
}

int kp_store_read_row(sqlite3_stmt *st, enum kp_bundle_array_id id, void *el)
{
	struct kp_fare_value vals[KP_BUNDLE_ROW_MAX];
	const char *cols[KP_BUNDLE_ROW_MAX];
	size_t n = kp_bundle_row_columns(id, cols, NULL);

	memset(vals, 0, sizeof(vals));
	for (size_t i = 0; i < n; i++) {
		switch (sqlite3_column_type(st, (int)i)) {
		case SQLITE_NULL:
			vals[i].is_null = 1;
			break;
		case SQLITE_INTEGER:
			vals[i].i = sqlite3_column_int64(st, (int)i);
			break;
		default:
			vals[i].s = sqlite3_column_blob(st, (int)i);
			vals[i].n = (size_t)sqlite3_column_bytes(st, (int)i);
			break;
		}
	}
	return kp_bundle_row_set(id, el, vals) == KP_SYNC_OK ? KP_OK : KP_E_NOMEM;
}

int kp_store_get_rows(kp_store *s, enum kp_bundle_array_id id, struct kp_bundle *b)
{
	const struct kp_bundle_array *a = kp_bundle_array(id);
	void **arr = (void **)((uint8_t *)b + a->arr_offset);
	size_t *count = (size_t *)((uint8_t *)b + a->count_offset), n = 0;
	sqlite3_stmt *st = NULL;
	char sql[1024];
	int rc;

	snprintf(sql, sizeof(sql), "SELECT count(*) FROM %s", a->table);
	if (sqlite3_prepare_v2(s->db, sql, -1, &st, NULL) != SQLITE_OK)
		return kp_store_fail(s, "count");
	rc = sqlite3_step(st) == SQLITE_ROW ? KP_OK : kp_store_fail(s, "count");
	n = rc == KP_OK ? (size_t)sqlite3_column_int64(st, 0) : 0;
	sqlite3_finalize(st);
	st = NULL;
	if (rc == KP_OK)
		rc = kp_bundle_row_sql(id, 0, sql, sizeof(sql)) == KP_SYNC_OK ? KP_OK : KP_E_INVAL;
	if (rc != KP_OK)
		return rc;
	/* room for n elements, at least one, so an empty table is not an error */
	*arr = calloc(n + 1, a->elem_size);
	if (*arr == NULL)
		return KP_E_NOMEM;
	if (sqlite3_prepare_v2(s->db, sql, -1, &st, NULL) != SQLITE_OK)
		return kp_store_fail(s, a->table);
	while (rc == KP_OK && *count < n && sqlite3_step(st) == SQLITE_ROW)
		rc = kp_store_read_row(st, id, (uint8_t *)*arr + (*count)++ * a->elem_size);
	sqlite3_finalize(st);
	return rc;
}
