/* SPDX-License-Identifier: Apache-2.0 */
/* The engine-neutral half of kp_db.h: choosing the engine by connection string, the calls
 * that go through the ops table (a missing op answers KP_DB_E_NOTSUP), the statement
 * cache, the placeholder translation and migrations. */
#include <ctype.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>

#include "kp_db.h"

const char *kp_db_strerror(int rc)
{
	switch (rc) {
	case KP_DB_OK:           return "ok";
	case KP_DB_ROW:          return "a row";
	case KP_DB_DONE:         return "no more rows";
	case KP_DB_E_INVAL:      return "invalid argument or misuse of the database interface";
	case KP_DB_E_NOMEM:      return "out of memory";
	case KP_DB_E_OPEN:       return "cannot open the database";
	case KP_DB_E_SQL:        return "database statement failed";
	case KP_DB_E_CONSTRAINT: return "a database constraint refused the change";
	case KP_DB_E_BUSY:       return "database busy (lock, deadlock or serialization "
	                                "failure): try the transaction again";
	case KP_DB_E_LOST:       return "connection to the database lost";
	case KP_DB_E_NOTSUP:     return "not supported by this database engine";
	case KP_DB_E_SCHEMA:     return "database schema is newer than this program";
	default:                 return "unknown database error";
	}
}

int kp_db_fail(kp_db *db, int rc, const char *fmt, ...)
{
	va_list ap;

	if (db == NULL)
		return rc;
	va_start(ap, fmt);
	vsnprintf(db->err, sizeof(db->err), fmt, ap);
	va_end(ap);
	db->err_rc = rc;
	return rc;
}

int kp_db_errclass(const kp_db *db)
{
	return db != NULL ? db->err_rc : KP_DB_E_INVAL;
}

/* libpq's keyword form starts with `keyword=` (letters and '_'), possibly after spaces. */
static int looks_like_keywords(const char *s)
{
	size_t n = 0;

	while (*s == ' ')
		s++;
	while (islower((unsigned char)s[n]) || s[n] == '_')
		n++;
	return n > 0 && (s[n] == '=' || (s[n] == ' ' && strchr(s + n, '=') != NULL &&
	                                 s[n + strspn(s + n, " ")] == '='));
}

const struct kp_db_ops *kp_db_engine_of(const char *conn)
{
	if (conn == NULL)
		return NULL;
	if (strncmp(conn, "postgresql://", 13) == 0 || strncmp(conn, "postgres://", 11) == 0 ||
	    looks_like_keywords(conn))
		return &kp_db_pg_ops;
	return &kp_db_sqlite_ops;
}

int kp_db_open(kp_db **out, const char *conn, int flags, char *err, size_t err_cap)
{
	const struct kp_db_ops *ops = kp_db_engine_of(conn);

	*out = NULL;
	if (err_cap > 0)
		err[0] = '\0';
	if (ops == NULL || conn[0] == '\0') {
		snprintf(err, err_cap, "no database named (a file path or a postgresql:// URI)");
		return KP_DB_E_INVAL;
	}
	return ops->open(out, conn, flags, err, err_cap);
}

void kp_db_close(kp_db *db)
{
	if (db == NULL)
		return;
	for (unsigned i = 0; i < KP_DB_CACHE; i++) {
		if (db->cache[i].st != NULL) {
			db->cache[i].st->cached = 0;
			db->ops->finalize(db->cache[i].st);
			db->cache[i].st = NULL;
		}
	}
	db->ops->close(db);
}

const char *kp_db_engine(const kp_db *db)
{
	return db != NULL ? db->ops->scheme : "none";
}

const char *kp_db_errmsg(const kp_db *db)
{
	if (db == NULL)
		return "no database";
	return db->err[0] != '\0' ? db->err : "no error";
}

/* The op of db's table, or a NOTSUP answer with its name in db->err. */
#define DB_CALL(db, op, ...) \
	((db)->ops->op != NULL ? (db)->ops->op(__VA_ARGS__) : \
	 kp_db_fail((db), KP_DB_E_NOTSUP, "%s: %s is not supported", (db)->ops->scheme, #op))
#define ST_CALL(st, op, ...) DB_CALL((st)->db, op, (st), __VA_ARGS__)

int kp_db_exec(kp_db *db, const char *sql)
{
	return DB_CALL(db, exec, db, sql);
}

int kp_db_prepare(kp_db *db, kp_db_stmt **out, const char *sql)
{
	*out = NULL;
	return DB_CALL(db, prepare, db, out, sql);
}

int kp_db_prepare_cached(kp_db *db, kp_db_stmt **out, const char *sql)
{
	unsigned slot;
	int rc;

	for (unsigned i = 0; i < KP_DB_CACHE; i++) {
		if (db->cache[i].sql == sql && db->cache[i].st != NULL) {
			*out = db->cache[i].st;
			rc = kp_db_reset(*out);
			return rc == KP_DB_OK ? kp_db_clear_bindings(*out) : rc;
		}
	}
	rc = kp_db_prepare(db, out, sql);
	if (rc != KP_DB_OK)
		return rc;
	slot = db->cache_next++ % KP_DB_CACHE;
	if (db->cache[slot].st != NULL) {
		db->cache[slot].st->cached = 0;
		db->ops->finalize(db->cache[slot].st);
	}
	db->cache[slot].sql = sql;
	db->cache[slot].st = *out;
	(*out)->cached = 1;
	return KP_DB_OK;
}

int kp_db_bind_int64(kp_db_stmt *st, int i, int64_t v)
{
	return ST_CALL(st, bind_int64, i, v);
}

int kp_db_bind_text(kp_db_stmt *st, int i, const char *s, size_t len)
{
	if (s == NULL)
		return kp_db_bind_null(st, i);
	return ST_CALL(st, bind_text, i, s, len == SIZE_MAX ? strlen(s) : len);
}

int kp_db_bind_blob(kp_db_stmt *st, int i, const void *p, size_t len)
{
	if (p == NULL && len > 0)
		return kp_db_fail(st->db, KP_DB_E_INVAL, "parameter %d: a blob of %zu bytes at NULL",
		                  i, len);
	return ST_CALL(st, bind_blob, i, p != NULL ? p : "", len);
}

int kp_db_bind_null(kp_db_stmt *st, int i)
{
	return ST_CALL(st, bind_null, i);
}

int kp_db_clear_bindings(kp_db_stmt *st)
{
	return DB_CALL(st->db, clear_bindings, st);
}

int kp_db_step(kp_db_stmt *st)
{
	return DB_CALL(st->db, step, st);
}

int kp_db_param_count(kp_db_stmt *st)
{
	return st->db->ops->param_count(st);
}

int kp_db_column_count(kp_db_stmt *st)
{
	return st->db->ops->column_count(st);
}

const char *kp_db_column_name(kp_db_stmt *st, int col)
{
	return st->db->ops->column_name(st, col);
}

int kp_db_column_type(kp_db_stmt *st, int col)
{
	return st->db->ops->column_type(st, col);
}

int kp_db_column_is_null(kp_db_stmt *st, int col)
{
	return st->db->ops->column_is_null(st, col);
}

int64_t kp_db_column_int64(kp_db_stmt *st, int col)
{
	return st->db->ops->column_int64(st, col);
}

const char *kp_db_column_text(kp_db_stmt *st, int col)
{
	return st->db->ops->column_text(st, col);
}

const void *kp_db_column_blob(kp_db_stmt *st, int col)
{
	return st->db->ops->column_blob(st, col);
}

size_t kp_db_column_bytes(kp_db_stmt *st, int col)
{
	return st->db->ops->column_bytes(st, col);
}

int kp_db_reset(kp_db_stmt *st)
{
	return DB_CALL(st->db, reset, st);
}

void kp_db_finalize(kp_db_stmt *st)
{
	if (st == NULL)
		return;
	if (st->cached)
		kp_db_reset(st);
	else
		st->db->ops->finalize(st);
}

int kp_db_begin(kp_db *db, enum kp_db_txn mode)
{
	if (mode != KP_DB_TXN_WRITE && mode != KP_DB_TXN_SNAPSHOT)
		return kp_db_fail(db, KP_DB_E_INVAL, "begin: no such transaction mode %d", (int)mode);
	return DB_CALL(db, begin, db, mode);
}

int kp_db_commit(kp_db *db)
{
	/* PostgreSQL answers a COMMIT outside a transaction with a mere warning */
	if (!kp_db_in_txn(db))
		return kp_db_fail(db, KP_DB_E_INVAL, "commit: no transaction is open");
	return DB_CALL(db, commit, db);
}

int kp_db_rollback(kp_db *db)
{
	return DB_CALL(db, rollback, db);
}

int kp_db_in_txn(kp_db *db)
{
	return db->ops->in_txn(db);
}

int64_t kp_db_changes(kp_db *db)
{
	return db->ops->changes(db);
}

int kp_db_last_id(kp_db *db, int64_t *id)
{
	return DB_CALL(db, last_id, db, id);
}

int kp_db_lock(kp_db *db, enum kp_db_lock_ns ns, const char *key)
{
	if (key == NULL || ns < KP_DB_LOCK_TERMINAL || ns > KP_DB_LOCK_SCHEMA)
		return kp_db_fail(db, KP_DB_E_INVAL, "lock: a namespace and a key");
	if (!kp_db_in_txn(db))
		return kp_db_fail(db, KP_DB_E_INVAL, "lock %s: only inside a write transaction", key);
	return DB_CALL(db, lock, db, ns, key);
}

int kp_db_schema_version(kp_db *db, int *version)
{
	return DB_CALL(db, version_get, db, version);
}

/* One migration in a transaction of its own: skipped if another program ran it first. */
static int migrate_one(kp_db *db, const struct kp_db_migration *m, int *version)
{
	int rc = kp_db_begin(db, KP_DB_TXN_WRITE);

	if (rc == KP_DB_OK)
		rc = kp_db_lock(db, KP_DB_LOCK_SCHEMA, "schema");
	if (rc == KP_DB_OK)
		rc = kp_db_schema_version(db, version);
	if (rc == KP_DB_OK && *version < m->version) {
		char what[sizeof(db->err)];

		rc = kp_db_exec(db, m->sql);
		if (rc != KP_DB_OK) {
			snprintf(what, sizeof(what), "%s", db->err);
			kp_db_fail(db, rc, "migration to version %d: %.450s", m->version, what);
		} else {
			rc = DB_CALL(db, version_set, db, m->version);
		}
		if (rc == KP_DB_OK)
			*version = m->version;
	}
	if (rc == KP_DB_OK)
		rc = kp_db_commit(db);
	if (rc != KP_DB_OK)
		kp_db_rollback(db);
	return rc;
}

int kp_db_migrate(kp_db *db, const struct kp_db_migration *m, size_t n, int *from, int *to)
{
	int version = 0, rc;

	for (size_t i = 1; i < n; i++)
		if (m[i].version <= m[i - 1].version)
			return kp_db_fail(db, KP_DB_E_INVAL, "migrations out of order at %d",
			                  m[i].version);
	rc = kp_db_schema_version(db, &version);
	if (rc != KP_DB_OK)
		return rc;
	if (from != NULL)
		*from = version;
	if (n > 0 && version > m[n - 1].version)
		return kp_db_fail(db, KP_DB_E_SCHEMA, "database schema %d is newer than %d", version,
		                  m[n - 1].version);
	for (size_t i = 0; i < n && rc == KP_DB_OK; i++)
		if (version < m[i].version)
			rc = migrate_one(db, &m[i], &version);
	if (to != NULL)
		*to = version;
	return rc;
}

/* Where a quoted run ('...', "...") or a comment starting at sql[i] ends (i if none
 * starts there). */
static size_t skip_quoted(const char *sql, size_t i)
{
	char q = sql[i];

	if (q == '\'' || q == '"') {
		for (i++; sql[i] != '\0'; i++)
			if (sql[i] == q && sql[i + 1] != q)
				return i + 1;
			else if (sql[i] == q)
				i++;              /* a doubled quote stays inside */
		return i;
	}
	if (q == '-' && sql[i + 1] == '-') {
		while (sql[i] != '\0' && sql[i] != '\n')
			i++;
		return i;
	}
	if (q == '/' && sql[i + 1] == '*') {
		const char *end = strstr(sql + i + 2, "*/");

		return end != NULL ? (size_t)(end - sql) + 2 : strlen(sql);
	}
	return i;
}

int kp_db_placeholders(const char *sql, char *out, size_t cap, int *n_params)
{
	size_t o = 0, i = 0;
	int max = 0;

	*n_params = 0;
	while (sql[i] != '\0') {
		size_t end = skip_quoted(sql, i);
		int num;

		if (end > i) {
			if (o + (end - i) >= cap)
				return KP_DB_E_INVAL;
			memcpy(out + o, sql + i, end - i);
			o += end - i;
			i = end;
			continue;
		}
		if (sql[i] != '?') {
			if (o + 1 >= cap)
				return KP_DB_E_INVAL;
			out[o++] = sql[i++];
			continue;
		}
		i++;
		if (isdigit((unsigned char)sql[i])) {
			num = 0;
			while (isdigit((unsigned char)sql[i]) && num <= 32767)
				num = num * 10 + (sql[i++] - '0');
			if (num == 0 || num > 32767)
				return KP_DB_E_INVAL;
		} else {
			num = max + 1;
			if (num > 32767)
				return KP_DB_E_INVAL;
		}
		if (num > max)
			max = num;
		{
			int w = snprintf(out + o, cap - o, "$%d", num);

			if (w < 0 || (size_t)w >= cap - o)
				return KP_DB_E_INVAL;
			o += (size_t)w;
		}
	}
	if (o >= cap)
		return KP_DB_E_INVAL;
	out[o] = '\0';
	*n_params = max;
	return KP_DB_OK;
}
