/* SPDX-License-Identifier: Apache-2.0 */
/* A value for an SQL statement's parameter, as both ends' SQLite stores bind them: a
 * statement's values are a table of these, bound at ?1, ?2, ... in turn (kp_store_bind on a
 * terminal, bs_query in the backend). No SQLite here: only what the two binders share. */
#ifndef KP_SQLVAL_H
#define KP_SQLVAL_H

#include <stddef.h>
#include <stdint.h>

struct kp_sql_val {
	char kind;                       /* 't' text, 'o' text or NULL if "", 'b' blob of i
	                                    bytes, 'i' integer, 'n' NULL; a NULL p binds NULL */
	const void *p;
	int64_t i;
};
#define KP_SQL_TEXT(x)      { 't', (x), 0 }
#define KP_SQL_OPT(x)       { 'o', (x), 0 }
#define KP_SQL_BLOB(x, n)   { 'b', (x), (int64_t)(n) }
#define KP_SQL_INT(x)       { 'i', NULL, (int64_t)(x) }
#define KP_SQL_INT_IF(c, x) { (c) ? 'i' : 'n', NULL, (int64_t)(x) }
/* The table and its length, for a function taking (const struct kp_sql_val *v, size_t n). */
#define KP_SQL_VALS(...) (const struct kp_sql_val[]){ __VA_ARGS__ }, \
	sizeof((const struct kp_sql_val[]){ __VA_ARGS__ }) / sizeof(struct kp_sql_val)

#endif
