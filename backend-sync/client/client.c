/* SPDX-License-Identifier: Apache-2.0 */
/* kippu sync client: the exchange a terminal runs against the backend (PROTOCOL.md,
 * "State machine"). Strict lockstep: every message we send but bye gets exactly one answer
 * before we send the next, and every wait is bounded by timeout_ms.
 *
 * Failures come in two kinds. A transport or protocol failure ends the exchange at once
 * (the connection cannot be trusted to carry a bye). A refused record, a bundle that does
 * not open and a store callback that fails leave the connection sound: the client stops
 * that part, still says bye, and returns the first failure. */
#include "kp_client.h"

#include <errno.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "kp_cbor.h"

#define COSE_SIGN1_HEAD 0xD2            /* tag 18 in one byte */

struct session {
	const struct kp_sync_io *io;
	const struct kp_sync_source *src;
	const char *terminal;
	int timeout_ms;
	int rc;                             /* the first failure */
	char *err;
	size_t err_cap;
};

/* Text for any code the exchange can meet; store callbacks use ranges of their own. */
static const char *rc_text(int rc)
{
	if (rc <= -0x340 && rc > -0x360)
		return kp_sync_strerror(rc);
	if (rc <= -0x300 && rc > -0x340)
		return kp_record_strerror(rc);
	if (rc <= -0x280 && rc > -0x300)
		return kp_tls_strerror(rc);
	if (rc <= -0x200 && rc > -0x280)
		return kp_crypto_strerror(rc);
	return "error";
}

/* Records a failure: the first one sets rc and err, later ones are appended to err. */
static int fail(struct session *s, int rc, const char *fmt, ...)
	__attribute__((format(printf, 3, 4)));

static int fail(struct session *s, int rc, const char *fmt, ...)
{
	size_t used = 0;
	va_list ap;

	if (s->rc == KP_SYNC_OK)
		s->rc = rc;
	if (s->err == NULL || s->err_cap == 0)
		return rc;
	used = strlen(s->err);
	if (used > 0 && used + 2 < s->err_cap) {
		memcpy(s->err + used, "; ", 3);
		used += 2;
	}
	if (used + 1 < s->err_cap) {
		va_start(ap, fmt);
		vsnprintf(s->err + used, s->err_cap - used, fmt, ap);
		va_end(ap);
	}
	return rc;
}

/* A reason from the backend, fit for a log line. */
static const char *shown(char *dst, size_t cap, const char *reason)
{
	kp_cbor_text_printable(dst, cap, reason, strlen(reason));
	return dst;
}

/* Sends out and waits for the answer into *in (which points into *buf). An error message
 * from the backend becomes KP_SYNC_E_PROTOCOL with its reason. */
static int roundtrip(struct session *s, const struct kp_msg *out, struct kp_msg *in,
                     uint8_t **buf)
{
	const char *name = kp_msg_type_name(out->type);
	char why[sizeof(in->reason)];
	int rc;

	memset(in, 0, sizeof(*in));
	rc = kp_msg_send_io(s->io, out, s->timeout_ms);
	if (rc != KP_SYNC_OK)
		return fail(s, rc, "sending %s: %s", name, rc_text(rc));
	rc = kp_msg_recv_io(s->io, in, buf, s->timeout_ms);
	if (rc != KP_SYNC_OK)
		return fail(s, rc, "waiting for the answer to %s: %s", name, rc_text(rc));
	if (in->type == KP_MSG_ERROR)
		return fail(s, KP_SYNC_E_PROTOCOL, "backend error: %s",
		            shown(why, sizeof(why), in->reason));
	return KP_SYNC_OK;
}

static int unexpected(struct session *s, const struct kp_msg *in, const char *want)
{
	return fail(s, KP_SYNC_E_PROTOCOL, "expected %s, got %s", want,
	            kp_msg_type_name(in->type));
}

static void done_with(struct kp_msg *in, uint8_t **buf)
{
	kp_msg_clear(in);
	free(*buf);
	*buf = NULL;
}

static int set_acked(struct session *s, uint64_t acked, struct kp_sync_stats *st)
{
	int rc = s->src->set_acked(s->src->ctx, acked);

	if (rc != 0)
		return fail(s, rc, "terminal store: recording acked %llu failed (%s)",
		            (unsigned long long)acked, rc_text(rc));
	st->acked = acked;
	return KP_SYNC_OK;
}

/* The payload inside a record's COSE_Sign1 and its seq, read without verifying it (the
 * backend does); 0 if it does not parse. */
static uint64_t record_payload(const struct kp_bytes *item, const uint8_t **payload,
                               size_t *payload_len)
{
	struct kp_cbor_reader r = { .buf = item->p, .len = item->n, .pos = 1 };
	struct kp_cbor_item it;
	const uint8_t *p;
	size_t n;
	uint64_t count;
	struct kp_record rec;

	if (item->n < 1 || item->p[0] != COSE_SIGN1_HEAD)
		return 0;
	if (kp_cbor_read_array(&r, &count) != KP_RECORD_OK || count != 4 ||
	    kp_cbor_read_bstr(&r, &p, &n) != KP_RECORD_OK ||          /* protected */
	    kp_cbor_read_map(&r, &count) != KP_RECORD_OK || count != 1 ||
	    kp_cbor_next(&r, &it) != KP_RECORD_OK || kp_cbor_next(&r, &it) != KP_RECORD_OK ||
	    kp_cbor_read_bstr(&r, &p, &n) != KP_RECORD_OK ||          /* payload */
	    kp_record_decode(p, n, &rec) != KP_RECORD_OK)
		return 0;
	if (payload != NULL) {
		*payload = p;
		*payload_len = n;
	}
	return rec.seq;
}

static uint64_t record_seq(const struct kp_bytes *item)
{
	return record_payload(item, NULL, NULL);
}

/* The backend's acked counts for us only if it is our journal's: we hold record acked and,
 * when the backend sends its hash, it is that record. Anything else is another journal
 * under our terminal id (the database was replaced, or restored from an older backup), and
 * believing it would mark our records delivered and drop our pending uses. Returns
 * KP_SYNC_E_JOURNAL for another journal, a store code if we could not look. */
static int check_journal(struct session *s, const struct kp_msg *welcome)
{
	struct kp_bytes item = { 0 };
	const uint8_t *p = NULL;
	uint8_t h[KP_SHA256_LEN];
	size_t n = 0, plen = 0;
	uint64_t seq = 0;
	int rc;

	if (welcome->acked == 0)
		return KP_SYNC_OK;
	rc = s->src->records_after(s->src->ctx, welcome->acked - 1, 1, &item, &n);
	if (rc != 0)
		return fail(s, rc, "terminal store: reading record %llu failed (%s)",
		            (unsigned long long)welcome->acked, rc_text(rc));
	if (n == 1)
		seq = record_payload(&item, &p, &plen);
	if (seq != welcome->acked)
		rc = fail(s, KP_SYNC_E_JOURNAL, "the backend holds records 1..%llu of terminal %s "
		          "but this database's journal has no record %llu: another journal (the "
		          "database was replaced or restored from an older backup); nothing sent, "
		          "nothing marked delivered or deleted",
		          (unsigned long long)welcome->acked, s->terminal,
		          (unsigned long long)welcome->acked);
	else if (welcome->has_head &&
	         (kp_sha256(p, plen, h) != 0 || memcmp(h, welcome->head, sizeof(h)) != 0))
		rc = fail(s, KP_SYNC_E_JOURNAL, "the backend holds records 1..%llu of terminal %s "
		          "from another journal (its record %llu is not this database's): the "
		          "database was replaced or restored; nothing sent, nothing marked "
		          "delivered or deleted", (unsigned long long)welcome->acked, s->terminal,
		          (unsigned long long)welcome->acked);
	if (n > 0)
		free((void *)item.p);
	return rc;
}

static void free_items(struct kp_bytes *items, size_t n)
{
	for (size_t i = 0; i < n; i++) {
		free((void *)items[i].p);
		items[i].p = NULL;
	}
}

/* Uploads batches until the store has no more, the backend refuses a record, or something
 * fails. Returns nonzero only when the exchange cannot go on. */
static int upload(struct session *s, uint64_t acked, struct kp_sync_stats *st)
{
	struct kp_bytes items[KP_SYNC_BATCH_MAX];
	struct kp_msg out, in;
	uint8_t *buf = NULL;
	char why[sizeof(in.reason)];
	int rc = KP_SYNC_OK;

	memset(&in, 0, sizeof(in));
	for (;;) {
		uint64_t first = acked + 1, last, seq;
		size_t n = 0, i;

		memset(items, 0, sizeof(items));
		rc = s->src->records_after(s->src->ctx, acked, KP_SYNC_BATCH_MAX, items, &n);
		if (rc != 0) {
			fail(s, rc, "terminal store: reading records after %llu failed (%s)",
			     (unsigned long long)acked, rc_text(rc));
			return KP_SYNC_OK;      /* the connection is fine: go on to config */
		}
		if (n == 0)
			return KP_SYNC_OK;
		if (n > KP_SYNC_BATCH_MAX) {
			free_items(items, KP_SYNC_BATCH_MAX);
			fail(s, KP_SYNC_E_INVAL, "terminal store returned %zu records for at most %d",
			     n, KP_SYNC_BATCH_MAX);
			return KP_SYNC_OK;
		}
		for (i = 0; i < n; i++) {
			if (items[i].p == NULL || items[i].n == 0)
				break;
		}
		if (i < n) {
			free_items(items, n);
			fail(s, KP_SYNC_E_INVAL, "terminal store returned an empty record after %llu",
			     (unsigned long long)acked);
			return KP_SYNC_OK;
		}
		/* The highest seq the backend may acknowledge now: the last record's own, and at
		 * least acked + n (seqs are above acked and ascending). */
		last = acked + n < acked ? UINT64_MAX : acked + n;
		seq = record_seq(&items[n - 1]);
		if (seq > last)
			last = seq;

		memset(&out, 0, sizeof(out));
		out.type = KP_MSG_RECORDS;
		out.items = items;
		out.n_items = n;
		rc = kp_msg_send_io(s->io, &out, s->timeout_ms);
		free_items(items, n);
		if (rc != KP_SYNC_OK)
			return fail(s, rc, "sending records %llu..%llu: %s", (unsigned long long)first,
			            (unsigned long long)last, rc_text(rc));
		st->sent += n;
		rc = kp_msg_recv_io(s->io, &in, &buf, s->timeout_ms);
		if (rc != KP_SYNC_OK)
			return fail(s, rc, "waiting for the answer to records %llu..%llu: %s",
			            (unsigned long long)first, (unsigned long long)last, rc_text(rc));
		if (in.type == KP_MSG_ERROR) {
			rc = fail(s, KP_SYNC_E_PROTOCOL, "backend error: %s",
			          shown(why, sizeof(why), in.reason));
			break;
		}
		if (in.type != KP_MSG_ACK && in.type != KP_MSG_REFUSED) {
			rc = unexpected(s, &in, "ack or refused");
			break;
		}
		if (in.acked < acked || in.acked > last) {
			rc = fail(s, KP_SYNC_E_PROTOCOL, "backend acknowledged %llu after records "
			          "%llu..%llu", (unsigned long long)in.acked,
			          (unsigned long long)first, (unsigned long long)last);
			break;
		}
		/* an ack that takes nothing would have us send the same batch forever */
		if (in.type == KP_MSG_ACK && in.acked == acked) {
			rc = fail(s, KP_SYNC_E_PROTOCOL, "backend acknowledged none of records "
			          "%llu..%llu", (unsigned long long)first, (unsigned long long)last);
			break;
		}
		acked = in.acked;
		if (set_acked(s, acked, st) != KP_SYNC_OK) {
			rc = KP_SYNC_OK;        /* a local failure: still fetch config and say bye */
			break;
		}
		if (in.type == KP_MSG_REFUSED) {
			st->refused_seq = in.seq;
			shown(st->refused_reason, sizeof(st->refused_reason), in.reason);
			fail(s, KP_SYNC_E_REFUSED, "backend refused record %llu: %s",
			     (unsigned long long)in.seq, st->refused_reason);
			break;
		}
		done_with(&in, &buf);
	}
	done_with(&in, &buf);
	return rc;
}

/* A store callback failed: its code, and why in err. */
static void store_failed(struct session *s, int rc, const char *what, uint64_t version)
{
	const char *why_not = s->src->errmsg != NULL ? s->src->errmsg(s->src->ctx) : NULL;

	fail(s, rc, "terminal store: applying %s version %llu failed (%s%s%s)", what,
	     (unsigned long long)version, rc_text(rc),
	     why_not != NULL && why_not[0] != '\0' ? ": " : "", why_not != NULL ? why_not : "");
}

/* A full bundle (the answer config): checked and handed to the store. */
static void take_bundle(struct session *s, const kp_cert *backend_cert, uint64_t have,
                        const struct kp_msg *in, struct kp_sync_stats *st)
{
	struct kp_bundle b;
	char why[256];
	int rc;

	memset(&b, 0, sizeof(b));
	rc = kp_bundle_open_err(backend_cert, in->bundle.p, in->bundle.n, s->terminal, have, &b,
	                        why, sizeof(why));
	if (rc != KP_SYNC_OK) {
		fail(s, rc, "config: %s", why);
		return;
	}
	rc = s->src->apply_bundle(s->src->ctx, &b);
	if (rc != 0) {
		store_failed(s, rc, "bundle", b.version);
	} else {
		st->bundle_version = b.version;
		st->bundle_applied = 1;
	}
	kp_bundle_free(&b);
}

/* A delta: checked (signature, for us, base = the version we hold) and handed to the store.
 * KP_SYNC_E_STALE when its base is not our version (nothing applied: ask again). */
static int take_delta(struct session *s, const kp_cert *backend_cert, uint64_t have,
                      const struct kp_msg *in, struct kp_sync_stats *st)
{
	struct kp_delta d;
	char why[256];
	int rc = kp_delta_open(backend_cert, in->bundle.p, in->bundle.n, s->terminal, have, &d,
	                       why, sizeof(why));

	if (rc == KP_SYNC_E_STALE)
		return rc;
	if (rc != KP_SYNC_OK) {
		fail(s, rc, "delta: %s", why);
		return KP_SYNC_OK;
	}
	rc = s->src->apply_delta(s->src->ctx, &d);
	if (rc == KP_SYNC_E_STALE) {
		kp_delta_free(&d);
		return rc;
	}
	if (rc != 0) {
		store_failed(s, rc, "delta to", d.version);
	} else {
		st->bundle_version = d.version;
		st->bundle_applied = 1;
		st->delta_applied = 1;
	}
	kp_delta_free(&d);
	return KP_SYNC_OK;
}

/* Fetches what is newer than the version we hold: a delta when the store can apply one and
 * holds a version (getdelta; the answer may be a delta, a full bundle or none), else a full
 * bundle (getconfig). A delta whose base is not our version is refused and asked for again,
 * once, with the version the store holds then. Returns nonzero only when the exchange cannot
 * go on. */
static int fetch_config(struct session *s, const kp_cert *backend_cert, uint64_t have,
                        struct kp_sync_stats *st)
{
	struct kp_msg out, in;
	uint8_t *buf = NULL;
	int rc = KP_SYNC_OK, delta = s->src->apply_delta != NULL && have > 0;

	for (int attempt = 0; attempt < 2; attempt++) {
		memset(&out, 0, sizeof(out));
		memset(&in, 0, sizeof(in));
		out.type = delta ? KP_MSG_GETDELTA : KP_MSG_GETCONFIG;
		out.config = have;
		rc = roundtrip(s, &out, &in, &buf);
		if (rc != KP_SYNC_OK)
			break;
		if (in.type == KP_MSG_CONFIG) {
			if (in.has_bundle)
				take_bundle(s, backend_cert, have, &in, st);
			break;
		}
		if (in.type != KP_MSG_DELTA || !delta || !in.has_bundle) {
			rc = unexpected(s, &in, "config");
			break;
		}
		if (take_delta(s, backend_cert, have, &in, st) != KP_SYNC_E_STALE)
			break;
		st->delta_refused++;
		done_with(&in, &buf);
		rc = s->src->config_version(s->src->ctx, &have);
		if (rc != 0) {
			fail(s, rc, "terminal store: reading the config version failed (%s)",
			     rc_text(rc));
			rc = KP_SYNC_OK;
			break;
		}
		if (attempt == 1)
			fail(s, KP_SYNC_E_STALE, "delta: its base is still not version %llu",
			     (unsigned long long)have);
	}
	done_with(&in, &buf);
	return rc;
}

int kp_sync_exchange(const struct kp_sync_io *io, const char *terminal_id,
                     const kp_cert *backend_cert, const struct kp_sync_source *src,
                     int timeout_ms, struct kp_sync_stats *st, char *err, size_t err_cap)
{
	struct session s = { .io = io, .src = src, .terminal = terminal_id,
	                     .timeout_ms = timeout_ms, .err = err, .err_cap = err_cap };
	struct kp_sync_stats local;
	struct kp_msg out, in;
	uint8_t *buf = NULL;
	uint64_t have = 0;
	int rc;

	if (st == NULL)
		st = &local;
	memset(st, 0, sizeof(*st));
	memset(&in, 0, sizeof(in));
	if (err != NULL && err_cap > 0)
		err[0] = '\0';
	if (io == NULL || io->read_exact == NULL || io->write_all == NULL ||
	    !kp_cbor_id_valid(terminal_id, false) || backend_cert == NULL || src == NULL ||
	    src->records_after == NULL || src->set_acked == NULL || src->config_version == NULL ||
	    src->apply_bundle == NULL)
		return fail(&s, KP_SYNC_E_INVAL, "invalid argument");

	rc = src->config_version(src->ctx, &have);
	if (rc != 0)
		return fail(&s, rc, "terminal store: reading the config version failed (%s)",
		            rc_text(rc));
	st->bundle_version = have;

	/* hello -> welcome */
	memset(&out, 0, sizeof(out));
	out.type = KP_MSG_HELLO;
	snprintf(out.terminal, sizeof(out.terminal), "%s", terminal_id);
	out.config = have;
	out.chain = 1;
	if (src->journal_id != NULL) {
		rc = src->journal_id(src->ctx, out.journal);
		if (rc != 0)
			return fail(&s, rc, "terminal store: reading the journal id failed (%s)",
			            rc_text(rc));
		out.has_journal = !kp_journal_id_is_legacy(out.journal);
	}
	if (src->last_seq != NULL) {
		rc = src->last_seq(src->ctx, &out.last);
		if (rc != 0)
			return fail(&s, rc, "terminal store: reading the newest seq failed (%s)",
			            rc_text(rc));
		out.has_last = 1;
	}
	rc = roundtrip(&s, &out, &in, &buf);
	if (rc == KP_SYNC_OK && in.type != KP_MSG_WELCOME)
		rc = unexpected(&s, &in, "welcome");
	if (rc != KP_SYNC_OK)
		goto out;
	rc = check_journal(&s, &in);
	if (rc == KP_SYNC_OK)
		rc = set_acked(&s, in.acked, st);
	done_with(&in, &buf);

	/* Another journal: no records (the backend would quarantine us), no bundle (it counts
	 * the other journal's uses and would make ours count twice or vanish). A store that
	 * can start a new journal does: the next exchange sends every record under the new
	 * id, and the backend keeps once each record it holds already. */
	if (s.rc == KP_SYNC_E_JOURNAL) {
		memset(&out, 0, sizeof(out));
		out.type = KP_MSG_BYE;
		(void)kp_msg_send_io(io, &out, timeout_ms);
		if (src->new_journal != NULL) {
			snprintf(st->journal_note, sizeof(st->journal_note), "%s",
			         err != NULL ? err : "another journal");
			rc = src->new_journal(src->ctx, st->journal);
			if (rc != 0)
				fail(&s, rc, "; terminal store: starting a new journal failed (%s)",
				     rc_text(rc));
			else
				st->journal_started = 1;
		}
		goto out;
	}

	/* records -> ack | refused, getconfig -> config */
	if (rc == KP_SYNC_OK)
		rc = upload(&s, st->acked, st);
	else
		rc = KP_SYNC_OK;                /* a local failure: the connection is fine */
	if (rc == KP_SYNC_OK)
		rc = fetch_config(&s, backend_cert, have, st);

	/* bye: no answer; the backend closes */
	if (rc == KP_SYNC_OK) {
		memset(&out, 0, sizeof(out));
		out.type = KP_MSG_BYE;
		(void)kp_msg_send_io(io, &out, timeout_ms);
	}
out:
	done_with(&in, &buf);
	return s.rc;
}

/* ---- over TCP and TLS ---- */

static int tls_read(void *ctx, void *buf, size_t len, int timeout_ms)
{
	return kp_tls_read_exact(ctx, buf, len, timeout_ms);
}

static int tls_write(void *ctx, const void *buf, size_t len, int timeout_ms)
{
	return kp_tls_write_all(ctx, buf, len, timeout_ms);
}

/* errno values that say why a connection failed ("Connection refused"). kp_tcp_connect
 * may leave errno from an earlier step (EINPROGRESS), which would mislead: only these are
 * shown, anything else gets the TLS layer's text. */
static bool connect_errno(int e)
{
	switch (e) {
	case ECONNREFUSED: case ENETUNREACH: case EHOSTUNREACH: case ETIMEDOUT:
	case ECONNRESET: case ENETDOWN: case EHOSTDOWN: case EADDRNOTAVAIL: case EACCES:
		return true;
	default:
		return false;
	}
}

static int run_once(const kp_tls_conf *conf, const char *host, const char *port,
                    const char *server_cn, const char *terminal_id, const kp_cert *backend_cert,
                    const struct kp_sync_source *src, int timeout_ms, struct kp_sync_stats *st,
                    char *err, size_t err_cap);

int kp_sync_run(const kp_tls_conf *conf, const char *host, const char *port,
                const char *server_cn, const char *terminal_id, const kp_cert *backend_cert,
                const struct kp_sync_source *src, int timeout_ms, struct kp_sync_stats *st,
                char *err, size_t err_cap)
{
	struct kp_sync_stats first, again;
	int rc = run_once(conf, host, port, server_cn, terminal_id, backend_cert, src, timeout_ms,
	                  &first, err, err_cap);

	/* The store started a new journal: once more at once, under the new id. */
	if (rc == KP_SYNC_E_JOURNAL && first.journal_started) {
		rc = run_once(conf, host, port, server_cn, terminal_id, backend_cert, src,
		              timeout_ms, &again, err, err_cap);
		again.journal_started = 1;
		memcpy(again.journal, first.journal, sizeof(again.journal));
		memcpy(again.journal_note, first.journal_note, sizeof(again.journal_note));
		first = again;
	}
	if (st != NULL)
		*st = first;
	return rc;
}

static int run_once(const kp_tls_conf *conf, const char *host, const char *port,
                    const char *server_cn, const char *terminal_id, const kp_cert *backend_cert,
                    const struct kp_sync_source *src, int timeout_ms, struct kp_sync_stats *st,
                    char *err, size_t err_cap)
{
	struct kp_sync_io io = { .read_exact = tls_read, .write_all = tls_write };
	char why[256], ebuf[128];
	kp_tls *t = NULL;
	int fd = -1, rc, e;

	if (st != NULL)
		memset(st, 0, sizeof(*st));
	if (err != NULL && err_cap > 0)
		err[0] = '\0';
	if (conf == NULL || host == NULL || port == NULL) {
		if (err != NULL && err_cap > 0)
			snprintf(err, err_cap, "invalid argument");
		return KP_SYNC_E_INVAL;
	}
	errno = 0;
	rc = kp_tcp_connect(host, port, timeout_ms, &fd);
	if (rc != KP_TLS_OK) {
		e = errno;
		if (err != NULL && err_cap > 0)
			snprintf(err, err_cap, "connect %s:%s: %s", host, port,
			         connect_errno(e) ? strerror_r(e, ebuf, sizeof(ebuf)) :
			         kp_tls_strerror(rc));
		return rc;
	}
	why[0] = '\0';
	/* Pinned to the backend certificate the bundles are checked with, not only its name. */
	rc = kp_tls_handshake_pinned(&t, conf, fd, server_cn, backend_cert, timeout_ms, why,
	                             sizeof(why));
	if (rc != KP_TLS_OK) {
		if (err != NULL && err_cap > 0)
			snprintf(err, err_cap, "TLS with %s:%s: %s", host, port,
			         why[0] != '\0' ? why : kp_tls_strerror(rc));
		return rc;
	}
	io.ctx = t;
	rc = kp_sync_exchange(&io, terminal_id, backend_cert, src, timeout_ms, st, err, err_cap);
	kp_tls_close(t);
	return rc;
}
