/* SPDX-License-Identifier: Apache-2.0 */
/* The journal's rows: append inside the tap's transaction, walk, verify, export. Every row
 * keeps the canonical CBOR payload, its COSE_Sign1 and the payload's SHA-256, which the
 * next record names as `prev`. */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "kp_store.h"
#include "kp_store_sql.h"

int kp_store_journal_head(kp_store *s, uint64_t *seq, uint8_t hash[KP_SHA256_LEN])
{
	sqlite3_stmt *st = kp_store_stmt(s, KP_STMT_JOURNAL_HEAD);
	int rc;

	if (st == NULL)
		return KP_E_DB;
	rc = sqlite3_step(st);
	if (rc == SQLITE_DONE) {
		*seq = 0;
		memset(hash, 0, KP_SHA256_LEN);
		return KP_OK;
	}
	if (rc != SQLITE_ROW) {
		rc = kp_store_fail(s, "journal head");
		sqlite3_reset(st);
		return rc;
	}
	if (sqlite3_column_bytes(st, 1) != KP_SHA256_LEN) {
		sqlite3_reset(st);
		return KP_E_JOURNAL;
	}
	*seq = (uint64_t)sqlite3_column_int64(st, 0);
	memcpy(hash, sqlite3_column_blob(st, 1), KP_SHA256_LEN);
	sqlite3_reset(st);
	return KP_OK;
}

int kp_store_journal_append(kp_store *s, const struct kp_record *rec,
                            const uint8_t *payload, size_t payload_len,
                            const uint8_t *cose, size_t cose_len,
                            const uint8_t hash[KP_SHA256_LEN])
{
	sqlite3_stmt *st = kp_store_stmt(s, KP_STMT_JOURNAL_APPEND);

	if (st == NULL)
		return KP_E_DB;
	sqlite3_bind_int64(st, 1, (sqlite3_int64)rec->seq);
	sqlite3_bind_int64(st, 2, rec->time_ms);
	if (rec->has_token)
		sqlite3_bind_blob(st, 3, rec->token, KP_TOKEN_LEN, SQLITE_STATIC);
	sqlite3_bind_text(st, 4, rec->result, -1, SQLITE_STATIC);
	sqlite3_bind_text(st, 5, rec->reason, -1, SQLITE_STATIC);
	sqlite3_bind_blob(st, 6, payload, (int)payload_len, SQLITE_STATIC);
	sqlite3_bind_blob(st, 7, cose, (int)cose_len, SQLITE_STATIC);
	sqlite3_bind_blob(st, 8, hash, KP_SHA256_LEN, SQLITE_STATIC);
	if (sqlite3_step(st) != SQLITE_DONE) {
		int rc = kp_store_fail(s, "journal append");

		sqlite3_reset(st);
		return rc;
	}
	sqlite3_reset(st);
	return KP_OK;
}

int kp_journal_foreach(kp_store *s, int (*fn)(const struct kp_journal_row *row, void *arg),
                       void *arg)
{
	sqlite3_stmt *st = NULL;
	int rc = KP_OK, step;

	if (sqlite3_prepare_v2(s->db, "SELECT seq, time_ms, payload, cose, hash FROM journal"
	                       " ORDER BY seq", -1, &st, NULL) != SQLITE_OK)
		return kp_store_fail(s, "journal walk");
	while ((step = sqlite3_step(st)) == SQLITE_ROW) {
		struct kp_journal_row row;

		memset(&row, 0, sizeof(row));
		row.seq = (uint64_t)sqlite3_column_int64(st, 0);
		row.time_ms = sqlite3_column_int64(st, 1);
		row.payload = (uint8_t *)sqlite3_column_blob(st, 2);
		row.payload_len = (size_t)sqlite3_column_bytes(st, 2);
		row.cose = (uint8_t *)sqlite3_column_blob(st, 3);
		row.cose_len = (size_t)sqlite3_column_bytes(st, 3);
		if (sqlite3_column_bytes(st, 4) == KP_SHA256_LEN)
			memcpy(row.hash, sqlite3_column_blob(st, 4), KP_SHA256_LEN);
		rc = fn(&row, arg);
		if (rc != 0)
			break;
	}
	if (rc == 0 && step != SQLITE_DONE)
		rc = kp_store_fail(s, "journal walk");
	sqlite3_finalize(st);
	return rc;
}

/* Loads the terminal certificate the store keeps in its meta table. */
static int load_store_cert(kp_store *s, kp_cert **cert)
{
	char *pem = malloc(8192);
	int rc;

	if (pem == NULL)
		return KP_E_NOMEM;
	rc = kp_store_meta_get(s, "terminal_cert", pem, 8192);
	if (rc == KP_OK)
		rc = kp_cert_parse(cert, (const uint8_t *)pem, strlen(pem) + 1);
	free(pem);
	return rc;
}

struct verify_ctx {
	kp_store *s;
	const kp_cert *cert;
	char terminal[KP_ID_MAX + 1];
	uint64_t expect_seq;
	uint8_t prev[KP_SHA256_LEN];
	uint64_t *bad_seq;
	char *err;
	size_t err_cap;
};

static int verify_row(const struct kp_journal_row *row, void *arg)
{
	struct verify_ctx *v = arg;
	struct kp_record rec;
	uint8_t hash[KP_SHA256_LEN];
	const uint8_t *signed_payload = NULL;
	size_t signed_len = 0;
	char kid[KP_ID_MAX + 1];
	int rc;

	*v->bad_seq = row->seq;
	if (row->seq != v->expect_seq) {
		snprintf(v->err, v->err_cap, "sequence %llu follows %llu: gap or reorder",
		         (unsigned long long)row->seq, (unsigned long long)(v->expect_seq - 1));
		return KP_E_SEQ;
	}
	rc = kp_cose_verify1(v->cert, row->cose, row->cose_len, &signed_payload, &signed_len,
	                     kid, sizeof(kid));
	if (rc != 0) {
		snprintf(v->err, v->err_cap, "record %llu: COSE_Sign1: %s",
		         (unsigned long long)row->seq, kp_strerror(rc));
		return rc;
	}
	if (signed_len != row->payload_len || memcmp(signed_payload, row->payload, signed_len) != 0) {
		snprintf(v->err, v->err_cap, "record %llu: stored payload differs from the signed one",
		         (unsigned long long)row->seq);
		return KP_E_JOURNAL;
	}
	rc = kp_record_decode(row->payload, row->payload_len, &rec);
	if (rc != 0) {
		snprintf(v->err, v->err_cap, "record %llu: payload: %s", (unsigned long long)row->seq,
		         kp_strerror(rc));
		return rc;
	}
	if (rec.seq != row->seq || rec.time_ms != row->time_ms || strcmp(kid, rec.terminal) != 0 ||
	    (v->terminal[0] != '\0' && strcmp(rec.terminal, v->terminal) != 0)) {
		snprintf(v->err, v->err_cap, "record %llu: seq, time or terminal id disagree with "
		         "the signed payload", (unsigned long long)row->seq);
		return KP_E_JOURNAL;
	}
	if (memcmp(rec.prev, v->prev, KP_SHA256_LEN) != 0) {
		snprintf(v->err, v->err_cap, "record %llu: prev hash does not match record %llu",
		         (unsigned long long)row->seq, (unsigned long long)(row->seq - 1));
		return KP_E_CHAIN;
	}
	kp_sha256(row->payload, row->payload_len, hash);
	if (memcmp(hash, row->hash, KP_SHA256_LEN) != 0) {
		snprintf(v->err, v->err_cap, "record %llu: stored hash is not the payload's",
		         (unsigned long long)row->seq);
		return KP_E_CHAIN;
	}
	memcpy(v->prev, hash, KP_SHA256_LEN);
	v->expect_seq++;
	return 0;
}

int kp_journal_verify(kp_store *s, const kp_cert *cert, uint64_t *n_ok, uint64_t *bad_seq,
                      char *err, size_t err_cap)
{
	struct verify_ctx v;
	kp_cert *own = NULL;
	int rc;

	memset(&v, 0, sizeof(v));
	*n_ok = 0;
	*bad_seq = 0;
	err[0] = '\0';
	if (cert == NULL) {
		rc = load_store_cert(s, &own);
		if (rc != KP_OK) {
			snprintf(err, err_cap, "no terminal certificate in the store: %s", kp_strerror(rc));
			return rc;
		}
		cert = own;
	}
	if (kp_store_meta_get(s, "terminal_id", v.terminal, sizeof(v.terminal)) != KP_OK)
		v.terminal[0] = '\0';
	v.s = s;
	v.cert = cert;
	v.expect_seq = 1;
	v.bad_seq = bad_seq;
	v.err = err;
	v.err_cap = err_cap;
	rc = kp_journal_foreach(s, verify_row, &v);
	*n_ok = v.expect_seq - 1;
	if (rc == 0)
		*bad_seq = 0;
	kp_cert_free(own);
	return rc;
}

static int write_file(const char *path, const uint8_t *data, size_t len)
{
	int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
	int rc = KP_OK;

	if (fd < 0)
		return KP_E_IO;
	if (write(fd, data, len) != (ssize_t)len)
		rc = KP_E_IO;
	if (close(fd) != 0)
		rc = KP_E_IO;
	return rc;
}

struct export_ctx {
	const char *dir;
	uint64_t n;
	char *err;
	size_t err_cap;
};

static int export_row(const struct kp_journal_row *row, void *arg)
{
	struct export_ctx *x = arg;
	char path[4096];

	snprintf(path, sizeof(path), "%s/%llu.cose", x->dir, (unsigned long long)row->seq);
	if (write_file(path, row->cose, row->cose_len) != KP_OK) {
		snprintf(x->err, x->err_cap, "%s: %s", path, strerror(errno));
		return KP_E_IO;
	}
	x->n++;
	return 0;
}

int kp_journal_export(kp_store *s, const char *dir, uint64_t *n, char *err, size_t err_cap)
{
	struct export_ctx x = { dir, 0, err, err_cap };
	char path[4096];
	char *pem = malloc(8192);
	int rc;

	*n = 0;
	err[0] = '\0';
	if (pem == NULL)
		return KP_E_NOMEM;
	if (mkdir(dir, 0755) != 0 && errno != EEXIST) {
		snprintf(err, err_cap, "%s: %s", dir, strerror(errno));
		rc = KP_E_IO;
		goto out;
	}
	rc = kp_store_meta_get(s, "terminal_cert", pem, 8192);
	if (rc != KP_OK) {
		snprintf(err, err_cap, "no terminal certificate in the store");
		goto out;
	}
	snprintf(path, sizeof(path), "%s/terminal.crt", dir);
	rc = write_file(path, (const uint8_t *)pem, strlen(pem));
	if (rc != KP_OK) {
		snprintf(err, err_cap, "%s: %s", path, strerror(errno));
		goto out;
	}
	rc = kp_journal_foreach(s, export_row, &x);
	*n = x.n;
out:
	free(pem);
	return rc;
}
