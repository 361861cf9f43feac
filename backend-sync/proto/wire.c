/* SPDX-License-Identifier: Apache-2.0 */
/* kippu sync wire format: messages as canonical CBOR maps with text keys, and frames
 * (4-byte big-endian length + one message) over TLS or any byte stream. PROTOCOL.md is the
 * description; this file and it must agree.
 *
 * Decoding is strict and canonical-only: the keys of each type in their one RFC 8949 order,
 * shortest heads, no trailing bytes. So a message that decodes re-encodes to the same bytes,
 * and a peer that sends anything else learns about it at once. */
#include "kp_proto.h"

#include <stdlib.h>
#include <string.h>

#include "kp_cbor.h"

const char *kp_sync_strerror(int rc)
{
	switch (rc) {
	case KP_SYNC_OK:          return "ok";
	case KP_SYNC_E_INVAL:     return "invalid argument or message field";
	case KP_SYNC_E_NOMEM:     return "out of memory";
	case KP_SYNC_E_MALFORMED: return "malformed message or bundle";
	case KP_SYNC_E_VERSION:   return "protocol or bundle version not supported";
	case KP_SYNC_E_TOOBIG:    return "frame or bundle above the limit";
	case KP_SYNC_E_REFUSED:   return "the backend refused a record";
	case KP_SYNC_E_STALE:     return "bundle is not newer than the one applied";
	case KP_SYNC_E_SIGNATURE: return "bundle signature does not verify";
	case KP_SYNC_E_PROTOCOL:  return "unexpected message";
	case KP_SYNC_E_JOURNAL:   return "the backend holds another journal for this terminal";
	default:                  return "unknown sync error";
	}
}

/* ---- message layouts ---- */

enum field { F_TERMINAL, F_CONFIG, F_ACKED, F_SEQ, F_REASON, F_ITEMS, F_BUNDLE, F_CHAIN,
             F_HEAD, F_JOURNAL, F_LAST };

static const char *const field_key[] = {
	[F_TERMINAL] = "terminal", [F_CONFIG] = "config", [F_ACKED] = "acked", [F_SEQ] = "seq",
	[F_REASON] = "reason", [F_ITEMS] = "items", [F_BUNDLE] = "bundle", [F_CHAIN] = "chain",
	[F_HEAD] = "head", [F_JOURNAL] = "journal", [F_LAST] = "last",
};
#define OPT(f) (1u << (f))

#define FIELDS_MAX 5

/* The fields after "t" and "v" (which sort first: one-byte keys, "t" < "v"), in canonical
 * order: shorter keys first, then bytewise. Fields in `opt` may be left out (hello's last,
 * chain and journal, welcome's head: an older peer neither sends nor expects them); all others are
 * required. */
static const struct layout {
	const char *name;
	size_t n;
	enum field f[FIELDS_MAX];
	unsigned opt;
} layouts[] = {
	[KP_MSG_HELLO]     = { "hello",     5, { F_LAST, F_CHAIN, F_CONFIG, F_JOURNAL, F_TERMINAL },
	                       OPT(F_LAST) | OPT(F_CHAIN) | OPT(F_JOURNAL) },
	[KP_MSG_WELCOME]   = { "welcome",   2, { F_HEAD, F_ACKED }, OPT(F_HEAD) },
	[KP_MSG_RECORDS]   = { "records",   1, { F_ITEMS } },
	[KP_MSG_ACK]       = { "ack",       1, { F_ACKED } },
	[KP_MSG_REFUSED]   = { "refused",   3, { F_SEQ, F_ACKED, F_REASON } },
	[KP_MSG_GETCONFIG] = { "getconfig", 1, { F_CONFIG } },
	[KP_MSG_CONFIG]    = { "config",    1, { F_BUNDLE } },
	[KP_MSG_BYE]       = { "bye",       0, { 0 } },
	[KP_MSG_ERROR]     = { "error",     1, { F_REASON } },
	[KP_MSG_GETDELTA]  = { "getdelta",  1, { F_CONFIG } },
	[KP_MSG_DELTA]     = { "delta",     1, { F_BUNDLE } },
};

static const struct layout *layout_of(enum kp_msg_type t)
{
	if ((int)t < KP_MSG_HELLO || (int)t > KP_MSG_LAST)
		return NULL;
	return &layouts[t];
}

const char *kp_msg_type_name(enum kp_msg_type t)
{
	const struct layout *l = layout_of(t);

	return l != NULL ? l->name : "unknown";
}

/* ---- encoding ---- */

static bool field_present(const struct layout *l, const struct kp_msg *m, enum field f)
{
	if ((l->opt & OPT(f)) == 0)
		return true;
	if (f == F_CHAIN)
		return m->chain != 0;
	if (f == F_HEAD)
		return m->has_head != 0;
	if (f == F_JOURNAL)
		return m->has_journal != 0;
	if (f == F_LAST)
		return m->has_last != 0;
	return true;
}

static int field_check(const struct kp_msg *m, enum field f)
{
	size_t i;

	switch (f) {
	case F_TERMINAL:
		return kp_cbor_id_valid(m->terminal, false) ? KP_SYNC_OK : KP_SYNC_E_INVAL;
	case F_REASON:
		return kp_cbor_text_valid(m->reason, sizeof(m->reason), true) ? KP_SYNC_OK :
		       KP_SYNC_E_INVAL;
	case F_ITEMS:
		if (m->n_items < 1 || m->n_items > KP_SYNC_BATCH_MAX || m->items == NULL)
			return KP_SYNC_E_INVAL;
		for (i = 0; i < m->n_items; i++) {
			if (m->items[i].p == NULL || m->items[i].n == 0)
				return KP_SYNC_E_INVAL;
		}
		return KP_SYNC_OK;
	case F_BUNDLE:
		if (m->has_bundle && (m->bundle.p == NULL || m->bundle.n == 0))
			return KP_SYNC_E_INVAL;
		return KP_SYNC_OK;
	case F_JOURNAL:
		/* all zeros is the journal of a terminal that sends none: one encoding, absent */
		return m->has_journal && kp_journal_id_is_legacy(m->journal) ? KP_SYNC_E_INVAL :
		       KP_SYNC_OK;
	case F_LAST:
		return m->has_last && m->last > INT64_MAX ? KP_SYNC_E_INVAL : KP_SYNC_OK;
	default:
		return KP_SYNC_OK;      /* integers: any uint64 */
	}
}

static void field_write(struct kp_cbor_writer *w, const struct kp_msg *m, enum field f)
{
	size_t i;

	kp_cbor_put_tstr(w, field_key[f]);
	switch (f) {
	case F_TERMINAL: kp_cbor_put_tstr(w, m->terminal); break;
	case F_CONFIG:   kp_cbor_put_uint(w, m->config); break;
	case F_ACKED:    kp_cbor_put_uint(w, m->acked); break;
	case F_SEQ:      kp_cbor_put_uint(w, m->seq); break;
	case F_REASON:   kp_cbor_put_tstr(w, m->reason); break;
	case F_ITEMS:
		kp_cbor_put_array(w, m->n_items);
		for (i = 0; i < m->n_items; i++)
			kp_cbor_put_bstr(w, m->items[i].p, m->items[i].n);
		break;
	case F_BUNDLE:
		if (m->has_bundle)
			kp_cbor_put_bstr(w, m->bundle.p, m->bundle.n);
		else
			kp_cbor_put_null(w);
		break;
	case F_CHAIN:    kp_cbor_put_uint(w, 1); break;
	case F_HEAD:     kp_cbor_put_bstr(w, m->head, sizeof(m->head)); break;
	case F_JOURNAL:  kp_cbor_put_bstr(w, m->journal, sizeof(m->journal)); break;
	case F_LAST:     kp_cbor_put_uint(w, m->last); break;
	}
}

/* Checks m and appends its encoding to w. */
static int msg_write(struct kp_cbor_writer *w, const struct kp_msg *m)
{
	const struct layout *l = layout_of(m->type);
	size_t i, n = 0;
	int rc;

	if (l == NULL)
		return KP_SYNC_E_INVAL;
	for (i = 0; i < l->n; i++) {
		rc = field_check(m, l->f[i]);
		if (rc != KP_SYNC_OK)
			return rc;
		if (field_present(l, m, l->f[i]))
			n++;
	}
	kp_cbor_put_map(w, 2 + n);
	kp_cbor_put_tstr(w, "t");
	kp_cbor_put_tstr(w, l->name);
	kp_cbor_put_tstr(w, "v");
	kp_cbor_put_uint(w, KP_SYNC_VERSION);
	for (i = 0; i < l->n; i++) {
		if (field_present(l, m, l->f[i]))
			field_write(w, m, l->f[i]);
	}
	return kp_cbor_sync_rc(w->rc);
}

int kp_msg_encode(const struct kp_msg *m, uint8_t **out, size_t *out_len)
{
	struct kp_cbor_writer w = { 0 };
	int rc;

	if (out != NULL)
		*out = NULL;
	if (out_len != NULL)
		*out_len = 0;
	if (m == NULL || out == NULL || out_len == NULL)
		return KP_SYNC_E_INVAL;
	rc = msg_write(&w, m);
	if (rc != KP_SYNC_OK) {
		kp_cbor_writer_free(&w);
		return rc;
	}
	return kp_cbor_sync_rc(kp_cbor_writer_finish(&w, out, out_len));
}

/* ---- decoding ---- */

static int field_read(struct kp_cbor_reader *r, struct kp_msg *m, enum field f)
{
	struct kp_cbor_item it;
	uint64_t n, i;
	int rc;

	rc = kp_cbor_read_key(r, field_key[f]);
	if (rc != KP_RECORD_OK)
		return rc;
	switch (f) {
	case F_TERMINAL: return kp_cbor_read_id(r, m->terminal);
	case F_CONFIG:   return kp_cbor_read_uint(r, &m->config);
	case F_ACKED:    return kp_cbor_read_uint(r, &m->acked);
	case F_SEQ:      return kp_cbor_read_uint(r, &m->seq);
	case F_LAST:
		rc = kp_cbor_read_uint(r, &m->last);
		if (rc == KP_RECORD_OK && m->last > INT64_MAX)  /* a seq SQLite can hold */
			rc = KP_RECORD_E_MALFORMED;
		m->has_last = 1;
		return rc;
	case F_REASON:   return kp_cbor_read_text(r, m->reason, sizeof(m->reason), true);
	case F_ITEMS:
		rc = kp_cbor_read_array(r, &n);
		if (rc != KP_RECORD_OK)
			return rc;
		if (n < 1 || n > KP_SYNC_BATCH_MAX)
			return KP_RECORD_E_MALFORMED;
		m->items = calloc((size_t)n, sizeof(*m->items));
		if (m->items == NULL)
			return KP_RECORD_E_NOMEM;
		for (i = 0; i < n; i++) {
			rc = kp_cbor_read_bstr(r, &m->items[i].p, &m->items[i].n);
			if (rc != KP_RECORD_OK)
				return rc;
			if (m->items[i].n == 0)
				return KP_RECORD_E_MALFORMED;
			m->n_items++;
		}
		return KP_RECORD_OK;
	case F_BUNDLE:
		rc = kp_cbor_next(r, &it);
		if (rc != KP_RECORD_OK)
			return rc;
		if (it.type == KP_CBOR_NULL)
			return KP_RECORD_OK;
		if (it.type != KP_CBOR_BSTR || it.arg == 0)
			return KP_RECORD_E_MALFORMED;
		m->has_bundle = 1;
		m->bundle.p = it.data;
		m->bundle.n = (size_t)it.arg;
		return KP_RECORD_OK;
	case F_CHAIN:
		rc = kp_cbor_read_uint(r, &n);
		if (rc == KP_RECORD_OK && n != 1)       /* one encoding: absent, or 1 */
			rc = KP_RECORD_E_MALFORMED;
		m->chain = 1;
		return rc;
	case F_HEAD: {
		const uint8_t *p;
		size_t len;

		rc = kp_cbor_read_bstr(r, &p, &len);
		if (rc == KP_RECORD_OK && len != sizeof(m->head))
			rc = KP_RECORD_E_MALFORMED;
		if (rc == KP_RECORD_OK)
			memcpy(m->head, p, len);
		m->has_head = 1;
		return rc;
	}
	case F_JOURNAL: {
		const uint8_t *p;
		size_t len;

		rc = kp_cbor_read_bstr(r, &p, &len);
		if (rc == KP_RECORD_OK && len != sizeof(m->journal))
			rc = KP_RECORD_E_MALFORMED;
		if (rc == KP_RECORD_OK) {
			memcpy(m->journal, p, len);
			if (kp_journal_id_is_legacy(m->journal))
				rc = KP_RECORD_E_MALFORMED;
		}
		m->has_journal = 1;
		return rc;
	}
	}
	return KP_RECORD_E_MALFORMED;
}

int kp_msg_decode(const uint8_t *buf, size_t len, struct kp_msg *m)
{
	struct kp_cbor_reader r = { .buf = buf, .len = len };
	struct kp_cbor_item name;
	const struct layout *l = NULL;
	uint64_t n, v;
	size_t i, read = 0;
	int rc;

	if (m == NULL || (buf == NULL && len > 0))
		return KP_SYNC_E_INVAL;
	memset(m, 0, sizeof(*m));
	/* "t" and "v" first; the version is judged before the rest, which a later version may
	 * shape differently. */
	rc = kp_cbor_read_map(&r, &n);
	if (rc == KP_RECORD_OK)
		rc = kp_cbor_read_key(&r, "t");
	if (rc == KP_RECORD_OK)
		rc = kp_cbor_next(&r, &name);
	if (rc == KP_RECORD_OK && name.type != KP_CBOR_TSTR)
		rc = KP_RECORD_E_MALFORMED;
	if (rc == KP_RECORD_OK)
		rc = kp_cbor_read_key(&r, "v");
	if (rc == KP_RECORD_OK)
		rc = kp_cbor_read_uint(&r, &v);
	if (rc != KP_RECORD_OK)
		goto out;
	if (v != KP_SYNC_VERSION) {
		rc = KP_RECORD_E_VERSION;
		goto out;
	}
	for (i = KP_MSG_HELLO; i <= KP_MSG_LAST; i++) {
		if (strlen(layouts[i].name) == name.arg &&
		    memcmp(layouts[i].name, name.data, (size_t)name.arg) == 0) {
			l = &layouts[i];
			m->type = (enum kp_msg_type)i;
		}
	}
	if (l == NULL || n > 2 + l->n) {
		rc = KP_RECORD_E_MALFORMED;
		goto out;
	}
	for (i = 0; i < l->n && rc == KP_RECORD_OK; i++) {
		/* an optional field is there only if its key comes next */
		if ((l->opt & OPT(l->f[i])) != 0) {
			struct kp_cbor_reader peek = r;

			if (kp_cbor_read_key(&peek, field_key[l->f[i]]) != KP_RECORD_OK)
				continue;
		}
		rc = field_read(&r, m, l->f[i]);
		read++;
	}
	if (rc == KP_RECORD_OK && n != 2 + read)
		rc = KP_RECORD_E_MALFORMED;
	if (rc == KP_RECORD_OK && (r.pos != r.len || r.noncanonical))
		rc = KP_RECORD_E_MALFORMED;
out:
	if (rc != KP_RECORD_OK)
		kp_msg_clear(m);
	return kp_cbor_sync_rc(rc);
}

void kp_msg_clear(struct kp_msg *m)
{
	if (m == NULL)
		return;
	free(m->items);
	memset(m, 0, sizeof(*m));
}

/* ---- frames ---- */

static void put_be32(uint8_t *p, uint32_t v)
{
	p[0] = (uint8_t)(v >> 24);
	p[1] = (uint8_t)(v >> 16);
	p[2] = (uint8_t)(v >> 8);
	p[3] = (uint8_t)v;
}

static bool io_valid(const struct kp_sync_io *io)
{
	return io != NULL && io->read_exact != NULL && io->write_all != NULL;
}

int kp_frame_write_io(const struct kp_sync_io *io, const uint8_t *buf, size_t len,
                      int timeout_ms)
{
	uint8_t hdr[4];
	int rc;

	if (!io_valid(io) || buf == NULL || len == 0)
		return KP_SYNC_E_INVAL;
	if (len > KP_SYNC_FRAME_MAX)
		return KP_SYNC_E_TOOBIG;
	put_be32(hdr, (uint32_t)len);
	rc = io->write_all(io->ctx, hdr, sizeof(hdr), timeout_ms);
	if (rc == 0)
		rc = io->write_all(io->ctx, buf, len, timeout_ms);
	return rc;
}

/* The length is checked before anything is allocated, so a peer can make us hold at most
 * KP_SYNC_FRAME_MAX bytes per connection. Each of the two reads has timeout_ms. */
int kp_frame_read_io(const struct kp_sync_io *io, uint8_t **buf, size_t *len, int timeout_ms)
{
	uint8_t hdr[4], *p = NULL;
	uint32_t n;
	int rc;

	if (buf != NULL)
		*buf = NULL;
	if (len != NULL)
		*len = 0;
	if (!io_valid(io) || buf == NULL || len == NULL)
		return KP_SYNC_E_INVAL;
	rc = io->read_exact(io->ctx, hdr, sizeof(hdr), timeout_ms);
	if (rc != 0)
		return rc;
	n = (uint32_t)hdr[0] << 24 | (uint32_t)hdr[1] << 16 | (uint32_t)hdr[2] << 8 | hdr[3];
	if (n == 0 || n > KP_SYNC_FRAME_MAX)
		return KP_SYNC_E_TOOBIG;
	p = malloc(n);
	if (p == NULL)
		return KP_SYNC_E_NOMEM;
	rc = io->read_exact(io->ctx, p, n, timeout_ms);
	if (rc != 0) {
		free(p);
		return rc;
	}
	*buf = p;
	*len = n;
	return KP_SYNC_OK;
}

/* Header and message go out in one write (one TLS record for small messages). */
int kp_msg_send_io(const struct kp_sync_io *io, const struct kp_msg *m, int timeout_ms)
{
	static const uint8_t hdr_space[4];
	struct kp_cbor_writer w = { 0 };
	size_t n;
	int rc;

	if (!io_valid(io) || m == NULL)
		return KP_SYNC_E_INVAL;
	kp_cbor_put_raw(&w, hdr_space, sizeof(hdr_space));
	rc = msg_write(&w, m);
	if (rc != KP_SYNC_OK)
		goto out;
	n = w.len - sizeof(hdr_space);
	if (n > KP_SYNC_FRAME_MAX) {
		rc = KP_SYNC_E_TOOBIG;
		goto out;
	}
	put_be32(w.buf, (uint32_t)n);
	rc = io->write_all(io->ctx, w.buf, w.len, timeout_ms);
out:
	kp_cbor_writer_free(&w);
	return rc;
}

int kp_msg_recv_io(const struct kp_sync_io *io, struct kp_msg *m, uint8_t **buf, int timeout_ms)
{
	size_t len = 0;
	int rc;

	if (buf != NULL)
		*buf = NULL;
	if (m != NULL)
		memset(m, 0, sizeof(*m));
	if (!io_valid(io) || m == NULL || buf == NULL)
		return KP_SYNC_E_INVAL;
	rc = kp_frame_read_io(io, buf, &len, timeout_ms);
	if (rc != KP_SYNC_OK)
		return rc;
	rc = kp_msg_decode(*buf, len, m);
	if (rc != KP_SYNC_OK) {
		free(*buf);
		*buf = NULL;
	}
	return rc;
}

/* ---- the same over TLS ---- */

static int tls_read(void *ctx, void *buf, size_t len, int timeout_ms)
{
	return ctx != NULL ? kp_tls_read_exact(ctx, buf, len, timeout_ms) : KP_SYNC_E_INVAL;
}

static int tls_write(void *ctx, const void *buf, size_t len, int timeout_ms)
{
	return ctx != NULL ? kp_tls_write_all(ctx, buf, len, timeout_ms) : KP_SYNC_E_INVAL;
}

#define TLS_IO(t) { .ctx = (t), .read_exact = tls_read, .write_all = tls_write }

int kp_frame_write(kp_tls *t, const uint8_t *buf, size_t len, int timeout_ms)
{
	const struct kp_sync_io io = TLS_IO(t);

	return kp_frame_write_io(&io, buf, len, timeout_ms);
}

int kp_frame_read(kp_tls *t, uint8_t **buf, size_t *len, int timeout_ms)
{
	const struct kp_sync_io io = TLS_IO(t);

	return kp_frame_read_io(&io, buf, len, timeout_ms);
}

int kp_msg_send(kp_tls *t, const struct kp_msg *m, int timeout_ms)
{
	const struct kp_sync_io io = TLS_IO(t);

	return kp_msg_send_io(&io, m, timeout_ms);
}

int kp_msg_recv(kp_tls *t, struct kp_msg *m, uint8_t **buf, int timeout_ms)
{
	const struct kp_sync_io io = TLS_IO(t);

	return kp_msg_recv_io(&io, m, buf, timeout_ms);
}
