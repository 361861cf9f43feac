/* SPDX-License-Identifier: Apache-2.0 */
/* The chunked snapshot (PROTOCOL.md section 5.5): a full bundle, signed as always, cut into
 * chunks of at most 1 MiB, and the signed manifest that names it: the terminal and the
 * version it brings, its length, its SHA-256 and the SHA-256 of every chunk, so that a
 * terminal refuses a chunk that does not belong the moment it arrives and checks the whole
 * before it decodes it. */
#include "kp_bundle.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "bundle_fields.h"
#include "kp_cbor.h"
#include "kp_hash.h"

#define MANIFEST_FORMAT 1

#define serr kp_bundle_set_err

void kp_snap_manifest_free(struct kp_snap_manifest *m)
{
	if (m == NULL)
		return;
	free(m->hashes);
	memset(m, 0, sizeof(*m));
}

size_t kp_snap_chunk_len(const struct kp_snap_manifest *m, uint64_t index)
{
	uint64_t off = index * m->chunk;

	if (index >= m->n_chunks || off >= m->size)
		return 0;
	return (size_t)(m->size - off < m->chunk ? m->size - off : m->chunk);
}

int kp_snap_manifest_make(const uint8_t *whole, size_t len, uint32_t chunk, const char *terminal,
                          uint64_t version, struct kp_snap_manifest *m)
{
	memset(m, 0, sizeof(*m));
	if (whole == NULL || len == 0 || chunk == 0 || chunk > KP_SNAP_CHUNK_MAX ||
	    terminal == NULL || !kp_cbor_id_valid(terminal, false))
		return KP_SYNC_E_INVAL;
	if ((len + chunk - 1) / chunk > KP_SNAP_CHUNKS_MAX)
		return KP_SYNC_E_TOOBIG;
	m->size = len;
	m->chunk = chunk;
	m->n_chunks = (uint32_t)((len + chunk - 1) / chunk);
	m->version = version;
	snprintf(m->terminal, sizeof(m->terminal), "%s", terminal);
	m->hashes = calloc(m->n_chunks, sizeof(*m->hashes));
	if (m->hashes == NULL)
		return KP_SYNC_E_NOMEM;
	kp_sha256(whole, len, m->sha256);
	for (uint32_t i = 0; i < m->n_chunks; i++)
		kp_sha256(whole + (size_t)i * chunk, kp_snap_chunk_len(m, i), m->hashes[i]);
	return KP_SYNC_OK;
}

/* Keys in canonical order: by length, then bytewise. */
int kp_snap_manifest_sign(const struct kp_snap_manifest *m, const kp_key *key, uint8_t **out,
                          size_t *out_len)
{
	struct kp_cbor_writer w = { 0 };
	uint8_t *payload = NULL;
	size_t payload_len = 0;
	int rc;

	if (m == NULL || key == NULL || out == NULL || out_len == NULL || m->n_chunks == 0 ||
	    m->n_chunks > KP_SNAP_CHUNKS_MAX || m->hashes == NULL)
		return KP_SYNC_E_INVAL;
	*out = NULL;
	*out_len = 0;
	kp_cbor_put_map(&w, 7);
	kp_cbor_put_tstr(&w, "v");
	kp_cbor_put_uint(&w, MANIFEST_FORMAT);
	kp_cbor_put_tstr(&w, "size");
	kp_cbor_put_uint(&w, m->size);
	kp_cbor_put_tstr(&w, "chunk");
	kp_cbor_put_uint(&w, m->chunk);
	kp_cbor_put_tstr(&w, "hashes");
	kp_cbor_put_array(&w, m->n_chunks);
	for (uint32_t i = 0; i < m->n_chunks; i++)
		kp_cbor_put_bstr(&w, m->hashes[i], KP_SHA256_LEN);
	kp_cbor_put_tstr(&w, "sha256");
	kp_cbor_put_bstr(&w, m->sha256, KP_SHA256_LEN);
	kp_cbor_put_tstr(&w, "version");
	kp_cbor_put_uint(&w, m->version);
	kp_cbor_put_tstr(&w, "terminal");
	kp_cbor_put_tstr(&w, m->terminal);
	rc = kp_cbor_sync_rc(kp_cbor_writer_finish(&w, &payload, &payload_len));
	if (rc != KP_SYNC_OK)
		return rc;
	return kp_bundle_cose_sign(key, payload, payload_len, out, out_len);
}

static int manifest_decode(const uint8_t *buf, size_t len, struct kp_snap_manifest *m,
                           char *err, size_t cap)
{
	struct kp_cbor_reader r = { .buf = buf, .len = len };
	uint64_t n = 0, v = 0, chunk = 0, count = 0;
	int rc;

	rc = kp_cbor_read_map(&r, &n);
	if (rc == KP_RECORD_OK)
		rc = kp_cbor_read_key(&r, "v");
	if (rc == KP_RECORD_OK)
		rc = kp_cbor_read_uint(&r, &v);
	if (rc == KP_RECORD_OK && v != MANIFEST_FORMAT) {
		serr(err, cap, "manifest format %llu", (unsigned long long)v);
		return KP_SYNC_E_VERSION;
	}
	if (rc == KP_RECORD_OK && n != 7)
		rc = KP_RECORD_E_MALFORMED;
	if (rc == KP_RECORD_OK && (rc = kp_cbor_read_key(&r, "size")) == KP_RECORD_OK)
		rc = kp_cbor_read_uint(&r, &m->size);
	if (rc == KP_RECORD_OK && (rc = kp_cbor_read_key(&r, "chunk")) == KP_RECORD_OK)
		rc = kp_cbor_read_uint(&r, &chunk);
	if (rc == KP_RECORD_OK && (rc = kp_cbor_read_key(&r, "hashes")) == KP_RECORD_OK)
		rc = kp_cbor_read_array(&r, &count);
	if (rc == KP_RECORD_OK && (chunk == 0 || chunk > KP_SNAP_CHUNK_MAX || count == 0 ||
	                           count > KP_SNAP_CHUNKS_MAX || m->size == 0 ||
	                           (m->size + chunk - 1) / chunk != count)) {
		serr(err, cap, "manifest: %llu chunk(s) of %llu bytes cannot hold %llu bytes, or "
		     "break the limits (1 MiB, 4096 chunks)", (unsigned long long)count,
		     (unsigned long long)chunk, (unsigned long long)m->size);
		return KP_SYNC_E_MALFORMED;
	}
	if (rc == KP_RECORD_OK) {
		m->chunk = (uint32_t)chunk;
		m->n_chunks = (uint32_t)count;
		m->hashes = calloc((size_t)count, sizeof(*m->hashes));
		if (m->hashes == NULL)
			return KP_SYNC_E_NOMEM;
	}
	for (uint64_t i = 0; rc == KP_RECORD_OK && i < count; i++)
		rc = kp_cbor_read_bstr_exact(&r, m->hashes[i], KP_SHA256_LEN);
	if (rc == KP_RECORD_OK && (rc = kp_cbor_read_key(&r, "sha256")) == KP_RECORD_OK)
		rc = kp_cbor_read_bstr_exact(&r, m->sha256, KP_SHA256_LEN);
	if (rc == KP_RECORD_OK && (rc = kp_cbor_read_key(&r, "version")) == KP_RECORD_OK)
		rc = kp_cbor_read_uint(&r, &m->version);
	if (rc == KP_RECORD_OK && (rc = kp_cbor_read_key(&r, "terminal")) == KP_RECORD_OK)
		rc = kp_cbor_read_id(&r, m->terminal);
	if (rc == KP_RECORD_OK && (r.pos != r.len || r.noncanonical || m->version == 0))
		rc = KP_RECORD_E_MALFORMED;
	if (rc != KP_RECORD_OK)
		serr(err, cap, "manifest payload: %s", kp_sync_strerror(kp_cbor_sync_rc(rc)));
	return kp_cbor_sync_rc(rc);
}

int kp_snap_manifest_open(const kp_cert *backend_cert, const uint8_t *cose, size_t len,
                          const char *terminal, uint64_t have_version,
                          struct kp_snap_manifest *m, char *err, size_t err_cap)
{
	const uint8_t *payload = NULL;
	size_t payload_len = 0;
	int rc;

	if (err != NULL && err_cap > 0)
		err[0] = '\0';
	if (m != NULL)
		memset(m, 0, sizeof(*m));
	if (backend_cert == NULL || cose == NULL || terminal == NULL || m == NULL)
		return KP_SYNC_E_INVAL;
	rc = kp_bundle_cose_payload(backend_cert, cose, len, &payload, &payload_len, err, err_cap);
	if (rc == KP_SYNC_OK)
		rc = manifest_decode(payload, payload_len, m, err, err_cap);
	if (rc == KP_SYNC_OK)
		rc = kp_bundle_for_us("snapshot", m->terminal, m->version, terminal, have_version,
		                      err, err_cap);
	if (rc != KP_SYNC_OK)
		kp_snap_manifest_free(m);
	return rc;
}

int kp_snap_chunk_check(const struct kp_snap_manifest *m, uint64_t index, const uint8_t *data,
                        size_t len, char *err, size_t err_cap)
{
	uint8_t h[KP_SHA256_LEN];

	if (index >= m->n_chunks) {
		serr(err, err_cap, "chunk %llu of a snapshot of %u chunk(s)",
		     (unsigned long long)index, m->n_chunks);
		return KP_SYNC_E_MALFORMED;
	}
	if (len != kp_snap_chunk_len(m, index)) {
		serr(err, err_cap, "chunk %llu holds %zu bytes, the manifest says %zu",
		     (unsigned long long)index, len, kp_snap_chunk_len(m, index));
		return KP_SYNC_E_MALFORMED;
	}
	kp_sha256(data, len, h);
	if (memcmp(h, m->hashes[index], sizeof(h)) != 0) {
		serr(err, err_cap, "chunk %llu is not the one the manifest names (SHA-256 differs)",
		     (unsigned long long)index);
		return KP_SYNC_E_SIGNATURE;
	}
	return KP_SYNC_OK;
}
