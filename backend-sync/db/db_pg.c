/* SPDX-License-Identifier: Apache-2.0 */
/* kp_db.h on PostgreSQL through libpq (the only file that includes libpq-fe.h).
 * - Parameters: `?N` becomes $N (kp_db_placeholders); integers go as text with type int8,
 *   blobs in binary format as bytea, texts as text of a type the server infers (like a
 *   quoted literal), NULLs untyped. Values never enter the SQL text.
 * - A statement of its own runs with PQexecParams (one round trip); a cached one is
 *   prepared once per connection (PQprepare, named kp_<n>) with the types of its first
 *   bindings, and prepared again if later bindings bring other types.
 * - Results come in text format and are read whole at the first step (so statements may
 *   nest, as SQLite's do); bytea arrives as hex (bytea_output is set) and is decoded on
 *   demand. A result of millions of rows needs a cursor in the caller's SQL.
 * - Errors: the SQLSTATE decides the class (23: constraint; 40001, 40P01, 55P03: busy;
 *   08, 57P0x or a broken connection: lost); the text is the primary message, the
 *   constraint's name and the SQLSTATE, never the DETAIL (it can quote a card token). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <libpq-fe.h>

#include "kp_db.h"

#define PG_INT8OID  20
#define PG_BYTEAOID 17
#define PG_BOOLOID  16
#define PG_INT2OID  21
#define PG_INT4OID  23
#define PG_TEXTOID  25
#define PG_FLOAT4OID 700
#define PG_FLOAT8OID 701
#define PG_NUMERICOID 1700
/* The class of kippu's advisory locks: "kp" in the high half, the namespace in the low. */
#define PG_LOCK_CLASS 0x6B700000

struct pg_db {
	struct kp_db base;
	PGconn *conn;
	int64_t changes;
	unsigned next_name;
};

struct pg_param {
	char kind;                       /* 0 unbound (NULL), 'n' NULL, 'i', 't', 'b' */
	char num[24];
	char *p;                         /* text or blob, owned */
	size_t len;
};

struct pg_col {                      /* a bytea column of the current row, decoded */
	unsigned char *p;
	size_t len, cap;
	int row;
};

struct pg_stmt {
	struct kp_db_stmt base;
	char *sql;                       /* PostgreSQL's spelling */
	int n_params;
	struct pg_param *params;
	char *kinds;                     /* cached: the kinds it was prepared with */
	char *absent;                    /* numbers below the highest the SQL never names:
	                                    sent as a NULL text (the server cannot infer a
	                                    type for them) */
	char name[24];                   /* cached: its server-side name once prepared */
	PGresult *res;
	int row, n_rows, done;
	struct pg_col *cols;
	int n_cols;
};

static PGconn *pgc(kp_db *db)
{
	return ((struct pg_db *)db)->conn;
}

/* A libpq text on one line (its messages end with "\n" and may continue after tabs). */
static void one_line(char *s)
{
	size_t n = strlen(s);

	while (n > 0 && (s[n - 1] == '\n' || s[n - 1] == ' '))
		s[--n] = '\0';
	for (char *c = s; *c != '\0'; c++)
		if (*c == '\n' || *c == '\t')
			*c = ' ';
}

static int pg_class(const char *state, PGconn *conn)
{
	if (PQstatus(conn) == CONNECTION_BAD)
		return KP_DB_E_LOST;
	if (state == NULL)
		return KP_DB_E_SQL;
	if (strncmp(state, "23", 2) == 0)
		return KP_DB_E_CONSTRAINT;
	if (strcmp(state, "40001") == 0 || strcmp(state, "40P01") == 0 ||
	    strcmp(state, "55P03") == 0)
		return KP_DB_E_BUSY;
	if (strncmp(state, "08", 2) == 0 || strncmp(state, "57P0", 4) == 0)
		return KP_DB_E_LOST;
	if (strcmp(state, "53200") == 0)
		return KP_DB_E_NOMEM;
	return KP_DB_E_SQL;
}

/* The class of a failed result (res may be NULL: libpq could not even send), its words in
 * db->err; res is cleared. */
static int pg_fail(kp_db *db, PGresult *res, const char *what)
{
	const char *state = res != NULL ? PQresultErrorField(res, PG_DIAG_SQLSTATE) : NULL;
	const char *primary = res != NULL ? PQresultErrorField(res, PG_DIAG_MESSAGE_PRIMARY) : NULL;
	const char *constraint = res != NULL ? PQresultErrorField(res, PG_DIAG_CONSTRAINT_NAME) :
	                         NULL;
	int rc = pg_class(state, pgc(db));

	if (primary != NULL)
		kp_db_fail(db, rc, "%s: %s%s%s [%s]", what, primary,
		           constraint != NULL ? ", constraint " : "",
		           constraint != NULL ? constraint : "", state != NULL ? state : "?");
	else
		kp_db_fail(db, rc, "%s: %s", what, PQerrorMessage(pgc(db)));
	one_line(db->err);
	PQclear(res);
	return rc;
}

/* Server notices (a NOTICE of CREATE TABLE IF NOT EXISTS...) are not printed. */
static void pg_notice(void *arg, const char *message)
{
}

static int pg_exec(kp_db *db, const char *sql)
{
	PGresult *res = PQexec(pgc(db), sql);
	ExecStatusType s = PQresultStatus(res);

	if (res == NULL || (s != PGRES_COMMAND_OK && s != PGRES_TUPLES_OK))
		return pg_fail(db, res, "exec");
	((struct pg_db *)db)->changes = strtoll(PQcmdTuples(res), NULL, 10);
	PQclear(res);
	return KP_DB_OK;
}

static int pg_open(kp_db **out, const char *conn, int flags, char *err, size_t err_cap)
{
	static const char *const keys[] = { "connect_timeout", "application_name",
	                                    "client_encoding", "dbname", NULL };
	const char *vals[] = { "10", "kippu", "UTF8", conn, NULL };
	struct pg_db *d = calloc(1, sizeof(*d));
	int rc;

	if (d == NULL)
		return KP_DB_E_NOMEM;
	d->base.ops = &kp_db_pg_ops;
	/* expand_dbname: conn is a URI or keywords, and overrides the defaults before it */
	d->conn = PQconnectdbParams(keys, vals, 1);
	if (d->conn == NULL || PQstatus(d->conn) != CONNECTION_OK) {
		snprintf(err, err_cap, "cannot connect to PostgreSQL: %s",
		         d->conn != NULL ? PQerrorMessage(d->conn) : "out of memory");
		one_line(err);
		PQfinish(d->conn);
		free(d);
		return KP_DB_E_OPEN;
	}
	PQsetNoticeProcessor(d->conn, pg_notice, NULL);
	rc = pg_exec(&d->base, (flags & KP_DB_READONLY) ?
	             "SET bytea_output = 'hex'; SET TIME ZONE 'UTC';"
	             " SET default_transaction_read_only = on" :
	             "SET bytea_output = 'hex'; SET TIME ZONE 'UTC'");
	if (rc != KP_DB_OK) {
		snprintf(err, err_cap, "PostgreSQL session: %s", d->base.err);
		PQfinish(d->conn);
		free(d);
		return KP_DB_E_OPEN;
	}
	*out = &d->base;
	return KP_DB_OK;
}

static void pg_close(kp_db *db)
{
	struct pg_db *d = (struct pg_db *)db;

	PQfinish(d->conn);
	free(d);
}

/* Whether sql (PostgreSQL's spelling) holds $n. */
static int pg_names(const char *sql, int n)
{
	char tag[16];
	size_t len = (size_t)snprintf(tag, sizeof(tag), "$%d", n);

	for (const char *p = strstr(sql, tag); p != NULL; p = strstr(p + 1, tag))
		if (p[len] < '0' || p[len] > '9')
			return 1;
	return 0;
}

static int pg_prepare(kp_db *db, kp_db_stmt **out, const char *sql)
{
	struct pg_stmt *s = calloc(1, sizeof(*s));
	size_t cap = strlen(sql) * 6 + 1;    /* "?" becomes "$32767" at most: 6 for 1 */
	int rc = KP_DB_E_NOMEM;

	if (s == NULL)
		return KP_DB_E_NOMEM;
	s->base.db = db;
	s->row = -1;
	s->sql = malloc(cap);
	if (s->sql == NULL)
		goto fail;
	rc = kp_db_placeholders(sql, s->sql, cap, &s->n_params);
	if (rc != KP_DB_OK) {
		kp_db_fail(db, rc, "prepare: a parameter number above 32767");
		goto fail;
	}
	if (s->n_params > 0) {
		s->params = calloc((size_t)s->n_params, sizeof(*s->params));
		s->kinds = calloc((size_t)s->n_params, sizeof(*s->kinds));
		s->absent = calloc((size_t)s->n_params, sizeof(*s->absent));
		if (s->params == NULL || s->kinds == NULL || s->absent == NULL) {
			rc = KP_DB_E_NOMEM;
			goto fail;
		}
	}
	for (int i = 0; i < s->n_params; i++)
		s->absent[i] = !pg_names(s->sql, i + 1);
	*out = &s->base;
	return KP_DB_OK;
fail:
	free(s->absent);
	free(s->kinds);
	free(s->params);
	free(s->sql);
	free(s);
	return rc;
}

static struct pg_param *pg_param(kp_db_stmt *st, int i)
{
	struct pg_stmt *s = (struct pg_stmt *)st;

	if (i < 1 || i > s->n_params) {
		kp_db_fail(st->db, KP_DB_E_INVAL, "bind: parameter %d is not one of 1..%d", i,
		           s->n_params);
		return NULL;
	}
	free(s->params[i - 1].p);
	memset(&s->params[i - 1], 0, sizeof(s->params[i - 1]));
	return &s->params[i - 1];
}

static int pg_bind_int64(kp_db_stmt *st, int i, int64_t v)
{
	struct pg_param *p = pg_param(st, i);

	if (p == NULL)
		return KP_DB_E_INVAL;
	p->kind = 'i';
	snprintf(p->num, sizeof(p->num), "%lld", (long long)v);
	return KP_DB_OK;
}

/* A copy of len bytes and a NUL (texts are sent NUL-terminated). */
static int pg_bind_bytes(kp_db_stmt *st, int i, char kind, const void *v, size_t len)
{
	struct pg_param *p = pg_param(st, i);

	if (p == NULL)
		return KP_DB_E_INVAL;
	if (len > 0x3fffffff)
		return kp_db_fail(st->db, KP_DB_E_INVAL, "bind: parameter %d of %zu bytes", i, len);
	if (kind == 't' && memchr(v, '\0', len) != NULL)
		return kp_db_fail(st->db, KP_DB_E_INVAL, "bind: text parameter %d holds a NUL", i);
	p->p = malloc(len + 1);
	if (p->p == NULL)
		return KP_DB_E_NOMEM;
	memcpy(p->p, v, len);
	p->p[len] = '\0';
	p->len = len;
	p->kind = kind;
	return KP_DB_OK;
}

static int pg_bind_text(kp_db_stmt *st, int i, const char *s, size_t len)
{
	return pg_bind_bytes(st, i, 't', s, len);
}

static int pg_bind_blob(kp_db_stmt *st, int i, const void *p, size_t len)
{
	return pg_bind_bytes(st, i, 'b', p, len);
}

static int pg_bind_null(kp_db_stmt *st, int i)
{
	struct pg_param *p = pg_param(st, i);

	if (p == NULL)
		return KP_DB_E_INVAL;
	p->kind = 'n';
	return KP_DB_OK;
}

static void pg_result_clear(struct pg_stmt *s)
{
	PQclear(s->res);
	s->res = NULL;
	s->row = -1;
	s->n_rows = 0;
	s->done = 0;
	for (int c = 0; c < s->n_cols; c++)
		s->cols[c].row = -1;
}

static int pg_reset(kp_db_stmt *st)
{
	pg_result_clear((struct pg_stmt *)st);
	return KP_DB_OK;
}

static int pg_clear_bindings(kp_db_stmt *st)
{
	struct pg_stmt *s = (struct pg_stmt *)st;

	for (int i = 0; i < s->n_params; i++) {
		free(s->params[i].p);
		memset(&s->params[i], 0, sizeof(s->params[i]));
	}
	return KP_DB_OK;
}

static unsigned pg_type_of(char kind)
{
	return kind == 'i' ? PG_INT8OID : kind == 'b' ? PG_BYTEAOID : 0;
}

/* A cached statement's server-side twin, made (again) if it does not fit the bindings:
 * each parameter bound as it was at the prepare, or NULL now or then (the server then
 * inferred its type, and a text-format value is read as that type). */
static int pg_prepared(struct pg_stmt *s, const Oid *want)
{
	struct pg_db *d = (struct pg_db *)s->base.db;
	PGresult *res;
	int fits = s->name[0] != '\0';

	for (int i = 0; i < s->n_params && fits; i++) {
		char was = s->kinds[i] != 0 ? s->kinds[i] : 'n';
		char now = s->params[i].kind != 0 ? s->params[i].kind : 'n';

		fits = was == 'n' || now == 'n' || was == now;
	}
	if (fits)
		return KP_DB_OK;
	if (s->name[0] != '\0') {
		char sql[48];

		snprintf(sql, sizeof(sql), "DEALLOCATE %s", s->name);
		if (pg_exec(&d->base, sql) != KP_DB_OK)
			return KP_DB_E_SQL;
		s->name[0] = '\0';
	}
	snprintf(s->name, sizeof(s->name), "kp_%u", d->next_name++);
	res = PQprepare(d->conn, s->name, s->sql, s->n_params, want);
	if (PQresultStatus(res) != PGRES_COMMAND_OK) {
		s->name[0] = '\0';
		return pg_fail(&d->base, res, "prepare");
	}
	PQclear(res);
	for (int i = 0; i < s->n_params; i++)
		s->kinds[i] = s->params[i].kind;
	return KP_DB_OK;
}

static int pg_columns(struct pg_stmt *s)
{
	int n = PQnfields(s->res);

	if (n > s->n_cols) {
		struct pg_col *c = realloc(s->cols, (size_t)n * sizeof(*c));

		if (c == NULL)
			return KP_DB_E_NOMEM;
		memset(c + s->n_cols, 0, (size_t)(n - s->n_cols) * sizeof(*c));
		s->cols = c;
		s->n_cols = n;
	}
	for (int i = 0; i < s->n_cols; i++)
		s->cols[i].row = -1;
	return KP_DB_OK;
}

/* Runs the statement with its bindings; the rows wait in s->res. */
static int pg_run(struct pg_stmt *s)
{
	struct pg_db *d = (struct pg_db *)s->base.db;
	int n = s->n_params, rc = KP_DB_OK;
	const char **vals = NULL;
	int *lens = NULL, *fmts = NULL;
	Oid *types = NULL;
	ExecStatusType status;

	if (n > 0) {
		vals = calloc((size_t)n, sizeof(*vals));
		lens = calloc((size_t)n, sizeof(*lens));
		fmts = calloc((size_t)n, sizeof(*fmts));
		types = calloc((size_t)n, sizeof(*types));
		if (vals == NULL || lens == NULL || fmts == NULL || types == NULL) {
			rc = KP_DB_E_NOMEM;
			goto out;
		}
	}
	for (int i = 0; i < n; i++) {
		const struct pg_param *p = &s->params[i];

		types[i] = s->absent[i] ? PG_TEXTOID : pg_type_of(p->kind);
		vals[i] = s->absent[i] ? NULL : p->kind == 'i' ? p->num :
		          (p->kind == 't' || p->kind == 'b') ? p->p : NULL;
		lens[i] = (int)p->len;
		fmts[i] = p->kind == 'b';
	}
	if (s->base.cached) {
		rc = pg_prepared(s, types);
		if (rc != KP_DB_OK)
			goto out;
		s->res = PQexecPrepared(d->conn, s->name, n, vals, lens, fmts, 0);
	} else {
		s->res = PQexecParams(d->conn, s->sql, n, types, vals, lens, fmts, 0);
	}
	status = PQresultStatus(s->res);
	if (s->res == NULL || (status != PGRES_COMMAND_OK && status != PGRES_TUPLES_OK)) {
		rc = pg_fail(&d->base, s->res, "step");
		s->res = NULL;
		goto out;
	}
	d->changes = strtoll(PQcmdTuples(s->res), NULL, 10);
	s->n_rows = PQntuples(s->res);
	rc = pg_columns(s);
out:
	free(vals);
	free(lens);
	free(fmts);
	free(types);
	return rc;
}

static int pg_step(kp_db_stmt *st)
{
	struct pg_stmt *s = (struct pg_stmt *)st;
	int rc;

	if (s->done)
		return KP_DB_DONE;
	if (s->res == NULL) {
		rc = pg_run(s);
		if (rc != KP_DB_OK)
			return rc;
	}
	if (s->row + 1 < s->n_rows) {
		s->row++;
		return KP_DB_ROW;
	}
	s->done = 1;
	return KP_DB_DONE;
}

static int pg_column_count(kp_db_stmt *st)
{
	struct pg_stmt *s = (struct pg_stmt *)st;

	return s->res != NULL && s->row >= 0 && !s->done ? PQnfields(s->res) : 0;
}

/* The current row's value in col, or NULL (no row, no such column, SQL NULL). */
static const char *pg_value(struct pg_stmt *s, int col)
{
	if (s->res == NULL || s->row < 0 || s->done || col < 0 || col >= PQnfields(s->res) ||
	    PQgetisnull(s->res, s->row, col))
		return NULL;
	return PQgetvalue(s->res, s->row, col);
}

static int pg_column_is_null(kp_db_stmt *st, int col)
{
	return pg_value((struct pg_stmt *)st, col) == NULL;
}

static int pg_param_count(kp_db_stmt *st)
{
	return ((struct pg_stmt *)st)->n_params;
}

static const char *pg_column_name(kp_db_stmt *st, int col)
{
	struct pg_stmt *s = (struct pg_stmt *)st;

	return s->res != NULL && s->row >= 0 && !s->done && col >= 0 && col < PQnfields(s->res) ?
	       PQfname(s->res, col) : NULL;
}

static int pg_column_type(kp_db_stmt *st, int col)
{
	struct pg_stmt *s = (struct pg_stmt *)st;

	if (pg_value(s, col) == NULL)
		return KP_DB_NULL;
	switch (PQftype(s->res, col)) {
	case PG_BOOLOID: case PG_INT8OID: case PG_INT2OID: case PG_INT4OID:
		return KP_DB_INTEGER;
	case PG_FLOAT4OID: case PG_FLOAT8OID: case PG_NUMERICOID:
		return KP_DB_FLOAT;
	case PG_BYTEAOID:
		return KP_DB_BLOB;
	default:
		return KP_DB_TEXT;
	}
}

static int64_t pg_column_int64(kp_db_stmt *st, int col)
{
	struct pg_stmt *s = (struct pg_stmt *)st;
	const char *v = pg_value(s, col);
	char *end = NULL;
	long long n;

	if (v == NULL)
		return 0;
	if (PQftype(s->res, col) == PG_BOOLOID)
		return v[0] == 't';
	n = strtoll(v, &end, 10);
	if (end != NULL && (*end == '.' || *end == 'e' || *end == 'E'))
		return (int64_t)strtod(v, NULL);   /* SQLite's cast of a real: truncated */
	return n;
}

static int hexval(char c)
{
	return c >= '0' && c <= '9' ? c - '0' : c >= 'a' && c <= 'f' ? c - 'a' + 10 :
	       c >= 'A' && c <= 'F' ? c - 'A' + 10 : -1;
}

/* A bytea column's bytes (hex output "\x..."), decoded once per row, NUL after them. */
static struct pg_col *pg_bytea(struct pg_stmt *s, int col, const char *v)
{
	struct pg_col *c = &s->cols[col];
	size_t n;

	if (c->row == s->row)
		return c;
	if (v[0] != '\\' || v[1] != 'x')
		return NULL;
	n = (strlen(v) - 2) / 2;
	if (n + 1 > c->cap) {
		unsigned char *p = realloc(c->p, n + 1);

		if (p == NULL)
			return NULL;
		c->p = p;
		c->cap = n + 1;
	}
	for (size_t i = 0; i < n; i++) {
		int hi = hexval(v[2 + 2 * i]), lo = hexval(v[3 + 2 * i]);

		if (hi < 0 || lo < 0)
			return NULL;
		c->p[i] = (unsigned char)(hi << 4 | lo);
	}
	c->p[n] = 0;
	c->len = n;
	c->row = s->row;
	return c;
}

static const void *pg_column_blob(kp_db_stmt *st, int col)
{
	struct pg_stmt *s = (struct pg_stmt *)st;
	const char *v = pg_value(s, col);
	struct pg_col *c;

	if (v == NULL)
		return NULL;
	if (PQftype(s->res, col) != PG_BYTEAOID)
		return PQgetlength(s->res, s->row, col) > 0 ? v : NULL;
	c = pg_bytea(s, col, v);
	return c != NULL && c->len > 0 ? c->p : NULL;
}

static const char *pg_column_text(kp_db_stmt *st, int col)
{
	struct pg_stmt *s = (struct pg_stmt *)st;
	const char *v = pg_value(s, col);
	struct pg_col *c;

	if (v == NULL || PQftype(s->res, col) != PG_BYTEAOID)
		return v;
	c = pg_bytea(s, col, v);
	return c != NULL ? (const char *)c->p : NULL;
}

static size_t pg_column_bytes(kp_db_stmt *st, int col)
{
	struct pg_stmt *s = (struct pg_stmt *)st;
	const char *v = pg_value(s, col);
	struct pg_col *c;

	if (v == NULL)
		return 0;
	if (PQftype(s->res, col) != PG_BYTEAOID)
		return (size_t)PQgetlength(s->res, s->row, col);
	c = pg_bytea(s, col, v);
	return c != NULL ? c->len : 0;
}

static void pg_finalize(kp_db_stmt *st)
{
	struct pg_stmt *s = (struct pg_stmt *)st;

	pg_result_clear(s);
	/* The server-side statement goes too, unless a failed transaction refuses every
	 * command but ROLLBACK (it then lives until the connection ends, harmlessly). */
	if (s->name[0] != '\0' &&
	    PQtransactionStatus(pgc(st->db)) != PQTRANS_INERROR &&
	    PQstatus(pgc(st->db)) == CONNECTION_OK) {
		char sql[48];

		snprintf(sql, sizeof(sql), "DEALLOCATE %s", s->name);
		PQclear(PQexec(pgc(st->db), sql));
	}
	pg_clear_bindings(st);
	for (int c = 0; c < s->n_cols; c++)
		free(s->cols[c].p);
	free(s->cols);
	free(s->params);
	free(s->absent);
	free(s->kinds);
	free(s->sql);
	free(s);
}

static int pg_begin(kp_db *db, enum kp_db_txn mode)
{
	return pg_exec(db, mode == KP_DB_TXN_WRITE ? "BEGIN ISOLATION LEVEL READ COMMITTED" :
	               "BEGIN ISOLATION LEVEL REPEATABLE READ");
}

static int pg_commit(kp_db *db)
{
	PGresult *res;

	/* COMMIT of a failed transaction "succeeds" as a ROLLBACK: say it did not commit. */
	if (PQtransactionStatus(pgc(db)) == PQTRANS_INERROR) {
		pg_exec(db, "ROLLBACK");
		return kp_db_fail(db, KP_DB_E_INVAL, "commit: the transaction had failed and "
		                  "was rolled back");
	}
	res = PQexec(pgc(db), "COMMIT");
	if (PQresultStatus(res) != PGRES_COMMAND_OK)
		return pg_fail(db, res, "commit");
	PQclear(res);
	return KP_DB_OK;
}

static int pg_in_txn(kp_db *db)
{
	PGTransactionStatusType t = PQtransactionStatus(pgc(db));

	return t == PQTRANS_INTRANS || t == PQTRANS_INERROR || t == PQTRANS_ACTIVE;
}

static int pg_rollback(kp_db *db)
{
	return pg_in_txn(db) ? pg_exec(db, "ROLLBACK") : KP_DB_OK;
}

static int64_t pg_changes(kp_db *db)
{
	return ((struct pg_db *)db)->changes;
}

/* The first column of sql's first row as an integer (params: texts, may be NULL). */
static int pg_int(kp_db *db, const char *what, const char *sql, int n,
                  const char *const *params, int64_t *v)
{
	PGresult *res = PQexecParams(pgc(db), sql, n, NULL, params, NULL, NULL, 0);

	if (PQresultStatus(res) != PGRES_TUPLES_OK)
		return pg_fail(db, res, what);
	*v = PQntuples(res) > 0 && !PQgetisnull(res, 0, 0) ?
	     strtoll(PQgetvalue(res, 0, 0), NULL, 10) : 0;
	PQclear(res);
	return KP_DB_OK;
}

static int pg_last_id(kp_db *db, int64_t *id)
{
	return pg_int(db, "last id (lastval)", "SELECT lastval()", 0, NULL, id);
}

/* FNV-1a, 32 bits: two keys of one hash only wait for each other, nothing worse. */
static int32_t pg_key_hash(const char *key)
{
	uint32_t h = 2166136261u;

	for (const unsigned char *p = (const unsigned char *)key; *p != '\0'; p++)
		h = (h ^ *p) * 16777619u;
	return (int32_t)h;
}

static int pg_lock(kp_db *db, enum kp_db_lock_ns ns, const char *key)
{
	char cls[16], obj[16];
	const char *params[2] = { cls, obj };
	int64_t v;

	if (PQtransactionStatus(pgc(db)) != PQTRANS_INTRANS)
		return kp_db_fail(db, KP_DB_E_INVAL, "lock %s: only inside a transaction", key);
	snprintf(cls, sizeof(cls), "%d", (int)(PG_LOCK_CLASS | (int)ns));
	snprintf(obj, sizeof(obj), "%d", (int)pg_key_hash(key));
	return pg_int(db, "lock", "SELECT 1 FROM pg_advisory_xact_lock($1::int4, $2::int4)", 2,
	              params, &v);
}

static int pg_version_get(kp_db *db, int *version)
{
	int64_t have = 0, v = 0;
	int rc = pg_int(db, "schema version", "SELECT count(*) FROM pg_catalog.pg_tables"
	                " WHERE schemaname = current_schema() AND tablename = 'schema_version'",
	                0, NULL, &have);

	if (rc == KP_DB_OK && have > 0)
		rc = pg_int(db, "schema version", "SELECT max(version) FROM schema_version", 0,
		            NULL, &v);
	*version = (int)v;
	return rc;
}

static int pg_version_set(kp_db *db, int version)
{
	char num[16];
	const char *params[1] = { num };
	int64_t v;
	int rc = pg_exec(db, "CREATE TABLE IF NOT EXISTS schema_version(version integer PRIMARY"
	                 " KEY, applied timestamptz NOT NULL DEFAULT now())");

	snprintf(num, sizeof(num), "%d", version);
	if (rc == KP_DB_OK)
		rc = pg_int(db, "schema version", "INSERT INTO schema_version(version) VALUES"
		            " ($1::integer) RETURNING version", 1, params, &v);
	return rc;
}

const struct kp_db_ops kp_db_pg_ops = {
	.scheme = "postgresql",
	.open = pg_open,
	.close = pg_close,
	.exec = pg_exec,
	.prepare = pg_prepare,
	.bind_int64 = pg_bind_int64,
	.bind_text = pg_bind_text,
	.bind_blob = pg_bind_blob,
	.bind_null = pg_bind_null,
	.clear_bindings = pg_clear_bindings,
	.step = pg_step,
	.param_count = pg_param_count,
	.column_count = pg_column_count,
	.column_name = pg_column_name,
	.column_type = pg_column_type,
	.column_is_null = pg_column_is_null,
	.column_int64 = pg_column_int64,
	.column_text = pg_column_text,
	.column_blob = pg_column_blob,
	.column_bytes = pg_column_bytes,
	.reset = pg_reset,
	.finalize = pg_finalize,
	.begin = pg_begin,
	.commit = pg_commit,
	.rollback = pg_rollback,
	.in_txn = pg_in_txn,
	.changes = pg_changes,
	.last_id = pg_last_id,
	.lock = pg_lock,
	.version_get = pg_version_get,
	.version_set = pg_version_set,
};
