/* SPDX-License-Identifier: Apache-2.0 */
/* kippu journal records: canonical CBOR encoding, strict decoding, COSE_Sign1 (ES256).
 *
 * Encoding builds libcbor items and lets libcbor serialize them; canonical form is ours to
 * keep (libcbor writes integers in the width it is given, so we pick the smallest).
 * Decoding never builds a libcbor tree: cbor_load() allocates what a header claims
 * (a map "of 2^40 pairs" asks for terabytes), so input is walked one item at a time with
 * cbor_stream_decode(), which only reports what is in the buffer. The builders and that
 * reader live in cbor_util.c, shared with the wire protocol and the config bundle. */
#include "kp_record.h"

#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

#include <cbor.h>

#include "kp_cbor.h"

#define COSE_TAG_SIGN1   18
#define COSE_HDR_ALG     1
#define COSE_HDR_KID     4
#define RECORD_KEY_MAX   22

/* {1: -7}: alg ES256, the only protected header we write or accept. */
static const uint8_t PROTECTED_ES256[] = { 0xA1, 0x01, 0x26 };

enum rkey {
	K_V = 1, K_TERMINAL, K_SEQ, K_TIME, K_KIND, K_TOKEN, K_OPERATOR, K_ROUTE, K_STOP,
	K_PRODUCT, K_ENT, K_RIDES, K_AMOUNT, K_LEFT, K_RESULT, K_REASON, K_PREV, K_VIA, K_CATEGORY,
	K_EVENT, K_FARE, K_DRIVER,
};

#define BIT(k) (1u << (k))
#define REQUIRED_KEYS (BIT(K_V) | BIT(K_TERMINAL) | BIT(K_SEQ) | BIT(K_TIME) | BIT(K_KIND) | \
                       BIT(K_OPERATOR) | BIT(K_RIDES) | BIT(K_AMOUNT) | BIT(K_RESULT) |      \
                       BIT(K_REASON) | BIT(K_PREV))

const char *kp_record_strerror(int rc)
{
	switch (rc) {
	case KP_RECORD_OK:          return "ok";
	case KP_RECORD_E_INVAL:     return "record field out of range or too long";
	case KP_RECORD_E_NOMEM:     return "out of memory";
	case KP_RECORD_E_MALFORMED: return "not a record or COSE_Sign1";
	case KP_RECORD_E_CANONICAL: return "not the canonical CBOR encoding";
	case KP_RECORD_E_VERSION:   return "unknown record version or algorithm";
	case KP_RECORD_E_SIGNATURE: return "signature does not verify";
	case KP_RECORD_E_CRYPTO:    return "crypto failure";
	default:                    return "unknown record error";
	}
}

/* ---- encoding ---- */

/* The kinds this format version has (kp_record.h); another kind is another format. */
static bool kind_known(const char *kind)
{
	return strcmp(kind, "tap") == 0 || strcmp(kind, "link") == 0 ||
	       strcmp(kind, "shift") == 0;
}

static int record_check(const struct kp_record *r)
{
	if (r->seq < 1 || r->time_ms < 0 || r->entitlement < 0)
		return KP_RECORD_E_INVAL;
	if (!kp_cbor_id_valid(r->terminal, false) || !kp_cbor_id_valid(r->kind, false) ||
	    !kp_cbor_id_valid(r->operator_id, false) || !kp_cbor_id_valid(r->result, false) ||
	    !kp_cbor_id_valid(r->reason, false) || !kp_cbor_id_valid(r->route, true) ||
	    !kp_cbor_id_valid(r->stop, true) || !kp_cbor_id_valid(r->product, true) ||
	    !kp_cbor_id_valid(r->category, true) || !kp_cbor_id_valid(r->event, true) ||
	    !kp_cbor_id_valid(r->driver, true) ||
	    !kp_cbor_text_valid(r->fare, sizeof(r->fare), true))
		return KP_RECORD_E_INVAL;
	if (!kind_known(r->kind))
		return KP_RECORD_E_INVAL;
	return KP_RECORD_OK;
}

int kp_record_encode(const struct kp_record *rec, uint8_t **out, size_t *out_len)
{
	cbor_item_t *map = NULL;
	size_t n = 11;                  /* required fields */
	int rc;

	if (out != NULL)
		*out = NULL;
	if (out_len != NULL)
		*out_len = 0;
	if (rec == NULL || out == NULL || out_len == NULL)
		return KP_RECORD_E_INVAL;
	rc = record_check(rec);
	if (rc != KP_RECORD_OK)
		return rc;
	n += (rec->has_token != 0) + (rec->route[0] != '\0') + (rec->stop[0] != '\0') +
	     (rec->product[0] != '\0') + (rec->entitlement != 0) + (rec->has_left != 0) +
	     (rec->has_via != 0) + (rec->category[0] != '\0') + (rec->event[0] != '\0') +
	     (rec->fare[0] != '\0') + (rec->driver[0] != '\0');
	map = cbor_new_definite_map(n);
	if (map == NULL)
		return KP_RECORD_E_NOMEM;
	/* Keys in ascending order: all are below 24, so that is also bytewise order. */
	rc = kp_cbor_map_put(map, K_V, kp_cbor_build_uint(KP_RECORD_VERSION));
	if (rc == KP_RECORD_OK)
		rc = kp_cbor_map_put(map, K_TERMINAL, kp_cbor_build_tstr(rec->terminal));
	if (rc == KP_RECORD_OK)
		rc = kp_cbor_map_put(map, K_SEQ, kp_cbor_build_uint(rec->seq));
	if (rc == KP_RECORD_OK)
		rc = kp_cbor_map_put(map, K_TIME, kp_cbor_build_uint((uint64_t)rec->time_ms));
	if (rc == KP_RECORD_OK)
		rc = kp_cbor_map_put(map, K_KIND, kp_cbor_build_tstr(rec->kind));
	if (rc == KP_RECORD_OK && rec->has_token)
		rc = kp_cbor_map_put(map, K_TOKEN, kp_cbor_build_bstr(rec->token, KP_TOKEN_LEN));
	if (rc == KP_RECORD_OK)
		rc = kp_cbor_map_put(map, K_OPERATOR, kp_cbor_build_tstr(rec->operator_id));
	if (rc == KP_RECORD_OK && rec->route[0] != '\0')
		rc = kp_cbor_map_put(map, K_ROUTE, kp_cbor_build_tstr(rec->route));
	if (rc == KP_RECORD_OK && rec->stop[0] != '\0')
		rc = kp_cbor_map_put(map, K_STOP, kp_cbor_build_tstr(rec->stop));
	if (rc == KP_RECORD_OK && rec->product[0] != '\0')
		rc = kp_cbor_map_put(map, K_PRODUCT, kp_cbor_build_tstr(rec->product));
	if (rc == KP_RECORD_OK && rec->entitlement != 0)
		rc = kp_cbor_map_put(map, K_ENT, kp_cbor_build_uint((uint64_t)rec->entitlement));
	if (rc == KP_RECORD_OK)
		rc = kp_cbor_map_put(map, K_RIDES, kp_cbor_build_int(rec->rides));
	if (rc == KP_RECORD_OK)
		rc = kp_cbor_map_put(map, K_AMOUNT, kp_cbor_build_int(rec->amount));
	if (rc == KP_RECORD_OK && rec->has_left)
		rc = kp_cbor_map_put(map, K_LEFT, kp_cbor_build_int(rec->left));
	if (rc == KP_RECORD_OK)
		rc = kp_cbor_map_put(map, K_RESULT, kp_cbor_build_tstr(rec->result));
	if (rc == KP_RECORD_OK)
		rc = kp_cbor_map_put(map, K_REASON, kp_cbor_build_tstr(rec->reason));
	if (rc == KP_RECORD_OK)
		rc = kp_cbor_map_put(map, K_PREV, kp_cbor_build_bstr(rec->prev, KP_SHA256_LEN));
	if (rc == KP_RECORD_OK && rec->has_via)
		rc = kp_cbor_map_put(map, K_VIA, kp_cbor_build_bstr(rec->via, KP_TOKEN_LEN));
	if (rc == KP_RECORD_OK && rec->category[0] != '\0')
		rc = kp_cbor_map_put(map, K_CATEGORY, kp_cbor_build_tstr(rec->category));
	if (rc == KP_RECORD_OK && rec->event[0] != '\0')
		rc = kp_cbor_map_put(map, K_EVENT, kp_cbor_build_tstr(rec->event));
	if (rc == KP_RECORD_OK && rec->fare[0] != '\0')
		rc = kp_cbor_map_put(map, K_FARE, kp_cbor_build_tstr(rec->fare));
	if (rc == KP_RECORD_OK && rec->driver[0] != '\0')
		rc = kp_cbor_map_put(map, K_DRIVER, kp_cbor_build_tstr(rec->driver));
	if (rc != KP_RECORD_OK)
		goto out;
	rc = kp_cbor_serialize(map, out, out_len);
out:
	cbor_decref(&map);
	return rc;
}

/* ---- decoding: one item at a time (cbor_util.c) ---- */

static int decode_field(struct kp_cbor_reader *r, unsigned key, struct kp_record *rec)
{
	uint64_t u;
	int rc;

	switch (key) {
	case K_V:
		rc = kp_cbor_read_uint(r, &u);
		if (rc == KP_RECORD_OK && u != KP_RECORD_VERSION)
			rc = KP_RECORD_E_VERSION;
		return rc;
	case K_TERMINAL: return kp_cbor_read_id(r, rec->terminal);
	case K_SEQ:
		rc = kp_cbor_read_uint(r, &rec->seq);
		if (rc == KP_RECORD_OK && rec->seq == 0)
			rc = KP_RECORD_E_INVAL;
		return rc;
	case K_TIME:     return kp_cbor_read_uint63(r, &rec->time_ms);
	case K_KIND:     return kp_cbor_read_id(r, rec->kind);
	case K_TOKEN:
		rec->has_token = 1;
		return kp_cbor_read_bstr_exact(r, rec->token, KP_TOKEN_LEN);
	case K_OPERATOR: return kp_cbor_read_id(r, rec->operator_id);
	case K_ROUTE:    return kp_cbor_read_id(r, rec->route);
	case K_STOP:     return kp_cbor_read_id(r, rec->stop);
	case K_PRODUCT:  return kp_cbor_read_id(r, rec->product);
	case K_ENT:
		rc = kp_cbor_read_uint63(r, &rec->entitlement);
		if (rc == KP_RECORD_OK && rec->entitlement == 0)
			rc = KP_RECORD_E_INVAL;         /* 0 means absent: it is never sent */
		return rc;
	case K_RIDES:    return kp_cbor_read_int(r, &rec->rides);
	case K_AMOUNT:   return kp_cbor_read_int(r, &rec->amount);
	case K_LEFT:
		rec->has_left = 1;
		return kp_cbor_read_int(r, &rec->left);
	case K_RESULT:   return kp_cbor_read_id(r, rec->result);
	case K_REASON:   return kp_cbor_read_id(r, rec->reason);
	case K_PREV:     return kp_cbor_read_bstr_exact(r, rec->prev, KP_SHA256_LEN);
	case K_VIA:
		rec->has_via = 1;
		return kp_cbor_read_bstr_exact(r, rec->via, KP_TOKEN_LEN);
	case K_CATEGORY: return kp_cbor_read_id(r, rec->category);
	case K_EVENT:    return kp_cbor_read_id(r, rec->event);
	case K_FARE:     return kp_cbor_read_text(r, rec->fare, sizeof(rec->fare), false);
	case K_DRIVER:   return kp_cbor_read_id(r, rec->driver);
	default:         return KP_RECORD_E_MALFORMED;
	}
}

int kp_record_decode(const uint8_t *buf, size_t len, struct kp_record *rec)
{
	struct kp_cbor_reader r = { .buf = buf, .len = len };
	struct kp_cbor_item it;
	uint8_t *again = NULL;
	size_t again_len = 0;
	uint32_t seen = 0;
	uint64_t i, last_key = 0;
	bool out_of_order = false;
	int rc;

	if (rec == NULL || (buf == NULL && len > 0))
		return KP_RECORD_E_INVAL;
	memset(rec, 0, sizeof(*rec));
	rc = kp_cbor_next(&r, &it);
	if (rc != KP_RECORD_OK)
		goto out;
	if (it.type != KP_CBOR_MAP || it.arg > RECORD_KEY_MAX) {     /* 22 keys at most, each once */
		rc = KP_RECORD_E_MALFORMED;
		goto out;
	}
	for (i = 0; i < it.arg; i++) {
		struct kp_cbor_item key;

		rc = kp_cbor_next(&r, &key);
		if (rc != KP_RECORD_OK)
			goto out;
		if (key.type != KP_CBOR_UINT || key.arg < K_V || key.arg > K_DRIVER ||
		    (seen & BIT(key.arg)) != 0) {
			rc = KP_RECORD_E_MALFORMED;
			goto out;
		}
		seen |= BIT(key.arg);
		if (key.arg < last_key)
			out_of_order = true;
		last_key = key.arg;
		rc = decode_field(&r, (unsigned)key.arg, rec);
		if (rc != KP_RECORD_OK)
			goto out;
	}
	if (r.pos != r.len || (seen & REQUIRED_KEYS) != REQUIRED_KEYS) {
		rc = KP_RECORD_E_MALFORMED;
		goto out;
	}
	if (out_of_order || r.noncanonical) {
		rc = KP_RECORD_E_CANONICAL;
		goto out;
	}
	/* The checks above should leave nothing but the canonical form; re-encoding proves it,
	 * so that a record is stored and hashed only in the bytes it was signed in. */
	rc = kp_record_encode(rec, &again, &again_len);
	if (rc != KP_RECORD_OK)
		goto out;
	if (again_len != len || memcmp(again, buf, len) != 0) {
		rc = KP_RECORD_E_CANONICAL;
		goto out;
	}
out:
	free(again);
	if (rc != KP_RECORD_OK)
		memset(rec, 0, sizeof(*rec));
	return rc;
}

/* ---- COSE_Sign1 ---- */

int kp_cose_sig_structure(const uint8_t *payload, size_t payload_len, uint8_t **out,
                          size_t *out_len)
{
	static const char context[] = "Signature1";
	cbor_item_t *arr = NULL;
	int rc;

	if (out != NULL)
		*out = NULL;
	if (out_len != NULL)
		*out_len = 0;
	if ((payload == NULL && payload_len > 0) || out == NULL || out_len == NULL)
		return KP_RECORD_E_INVAL;
	arr = cbor_new_definite_array(4);
	if (arr == NULL)
		return KP_RECORD_E_NOMEM;
	rc = kp_cbor_array_put(arr, cbor_build_stringn(context, sizeof(context) - 1));
	if (rc == KP_RECORD_OK)
		rc = kp_cbor_array_put(arr, kp_cbor_build_bstr(PROTECTED_ES256, sizeof(PROTECTED_ES256)));
	if (rc == KP_RECORD_OK)
		rc = kp_cbor_array_put(arr, kp_cbor_build_bstr(NULL, 0));   /* external_aad: none */
	if (rc == KP_RECORD_OK)
		rc = kp_cbor_array_put(arr, kp_cbor_build_bstr(payload, payload_len));
	if (rc == KP_RECORD_OK)
		rc = kp_cbor_serialize(arr, out, out_len);
	cbor_decref(&arr);
	return rc;
}

static int sig_hash(const uint8_t *payload, size_t payload_len, uint8_t hash[KP_SHA256_LEN])
{
	uint8_t *tbs = NULL;
	size_t tbs_len = 0;
	int rc;

	rc = kp_cose_sig_structure(payload, payload_len, &tbs, &tbs_len);
	if (rc != KP_RECORD_OK)
		goto out;
	if (kp_sha256(tbs, tbs_len, hash) != KP_CRYPTO_OK)
		rc = KP_RECORD_E_CRYPTO;
out:
	free(tbs);
	return rc;
}

int kp_cose_sign1(const kp_key *key, const char *kid, const uint8_t *payload, size_t payload_len,
                  uint8_t **out, size_t *out_len)
{
	return kp_cose_sign1_pooled(NULL, key, kid, payload, payload_len, out, out_len, NULL);
}

int kp_cose_sign1_pooled(kp_sign_pool *pool, const kp_key *key, const char *kid,
                         const uint8_t *payload, size_t payload_len, uint8_t **out,
                         size_t *out_len, int *pooled)
{
	uint8_t hash[KP_SHA256_LEN], sig[KP_ES256_SIG_LEN];
	cbor_item_t *arr = NULL, *hdr = NULL, *tagged = NULL;
	size_t kid_len;
	int rc;

	if (out != NULL)
		*out = NULL;
	if (out_len != NULL)
		*out_len = 0;
	if (pooled != NULL)
		*pooled = 0;
	if (key == NULL || kid == NULL || (payload == NULL && payload_len > 0) || out == NULL ||
	    out_len == NULL)
		return KP_RECORD_E_INVAL;
	kid_len = strnlen(kid, KP_ID_MAX + 1);
	if (kid_len == 0 || kid_len > KP_ID_MAX)
		return KP_RECORD_E_INVAL;
	rc = sig_hash(payload, payload_len, hash);
	if (rc != KP_RECORD_OK)
		goto out;
	rc = kp_sign_pool_sign(pool, key, hash, sig, pooled);
	if (rc != KP_CRYPTO_OK) {
		rc = rc == KP_CRYPTO_E_NOMEM ? KP_RECORD_E_NOMEM : KP_RECORD_E_CRYPTO;
		goto out;
	}
	arr = cbor_new_definite_array(4);
	hdr = cbor_new_definite_map(1);
	if (arr == NULL || hdr == NULL) {
		rc = KP_RECORD_E_NOMEM;
		goto out;
	}
	rc = kp_cbor_map_put(hdr, COSE_HDR_KID, kp_cbor_build_bstr((const uint8_t *)kid, kid_len));
	if (rc == KP_RECORD_OK)
		rc = kp_cbor_array_put(arr, kp_cbor_build_bstr(PROTECTED_ES256, sizeof(PROTECTED_ES256)));
	if (rc == KP_RECORD_OK) {
		rc = kp_cbor_array_put(arr, hdr);       /* array_put drops our reference */
		hdr = NULL;
	}
	if (rc == KP_RECORD_OK)
		rc = kp_cbor_array_put(arr, kp_cbor_build_bstr(payload, payload_len));
	if (rc == KP_RECORD_OK)
		rc = kp_cbor_array_put(arr, kp_cbor_build_bstr(sig, sizeof(sig)));
	if (rc != KP_RECORD_OK)
		goto out;
	tagged = cbor_build_tag(COSE_TAG_SIGN1, arr);
	if (tagged == NULL) {
		rc = KP_RECORD_E_NOMEM;
		goto out;
	}
	rc = kp_cbor_serialize(tagged, out, out_len);
out:
	if (tagged != NULL)
		cbor_decref(&tagged);
	if (hdr != NULL)
		cbor_decref(&hdr);
	if (arr != NULL)
		cbor_decref(&arr);
	return rc;
}

/* kp_cose_verify1, or with verify 0 every check but the signature's (kp_cose_open1). */
static int cose_check(const kp_cert *cert, int verify, const uint8_t *cose, size_t cose_len,
                      const uint8_t **payload, size_t *payload_len, char *kid, size_t kid_cap)
{
	struct kp_cbor_reader r = { .buf = cose, .len = cose_len };
	struct kp_cbor_item it, prot, key, kid_it, body, sig;
	uint8_t hash[KP_SHA256_LEN];
	int rc;

	if (payload != NULL)
		*payload = NULL;
	if (payload_len != NULL)
		*payload_len = 0;
	if (kid != NULL && kid_cap > 0)
		kid[0] = '\0';
	if ((verify && cert == NULL) || (cose == NULL && cose_len > 0) || payload == NULL ||
	    payload_len == NULL || (kid != NULL && kid_cap == 0))
		return KP_RECORD_E_INVAL;
	/* tag 18 in a longer head is still COSE_Sign1, just not canonical */
	rc = kp_cbor_next(&r, &it);
	if (rc != KP_RECORD_OK)
		return rc;
	if (it.type != KP_CBOR_TAG || it.arg != COSE_TAG_SIGN1)
		return KP_RECORD_E_MALFORMED;
	rc = kp_cbor_next(&r, &it);
	if (rc != KP_RECORD_OK)
		return rc;
	if (it.type != KP_CBOR_ARRAY || it.arg != 4)
		return KP_RECORD_E_MALFORMED;
	/* protected: exactly {1: -7} */
	rc = kp_cbor_next(&r, &prot);
	if (rc != KP_RECORD_OK)
		return rc;
	if (prot.type != KP_CBOR_BSTR)
		return KP_RECORD_E_MALFORMED;
	if (prot.arg != sizeof(PROTECTED_ES256) ||
	    memcmp(prot.data, PROTECTED_ES256, sizeof(PROTECTED_ES256)) != 0)
		return KP_RECORD_E_VERSION;
	/* unprotected: exactly {4: kid} */
	rc = kp_cbor_next(&r, &it);
	if (rc != KP_RECORD_OK)
		return rc;
	if (it.type != KP_CBOR_MAP || it.arg != 1)
		return KP_RECORD_E_MALFORMED;
	rc = kp_cbor_next(&r, &key);
	if (rc == KP_RECORD_OK)
		rc = kp_cbor_next(&r, &kid_it);
	if (rc != KP_RECORD_OK)
		return rc;
	if (key.type != KP_CBOR_UINT || key.arg != COSE_HDR_KID || kid_it.type != KP_CBOR_BSTR ||
	    kid_it.arg == 0 || kid_it.arg > KP_ID_MAX ||
	    memchr(kid_it.data, '\0', (size_t)kid_it.arg) != NULL)
		return KP_RECORD_E_MALFORMED;
	/* payload (attached) and signature */
	rc = kp_cbor_next(&r, &body);
	if (rc == KP_RECORD_OK)
		rc = kp_cbor_next(&r, &sig);
	if (rc != KP_RECORD_OK)
		return rc;
	if (body.type != KP_CBOR_BSTR || sig.type != KP_CBOR_BSTR || sig.arg != KP_ES256_SIG_LEN)
		return KP_RECORD_E_MALFORMED;
	if (r.pos != r.len)
		return KP_RECORD_E_MALFORMED;
	/* One encoding per record, so stored copies can be compared byte for byte. */
	if (r.noncanonical || cose[0] != 0xC0 + COSE_TAG_SIGN1)
		return KP_RECORD_E_CANONICAL;

	rc = verify ? sig_hash(body.data, (size_t)body.arg, hash) : KP_RECORD_OK;
	if (rc != KP_RECORD_OK)
		return rc;
	rc = verify ? kp_cert_verify(cert, hash, sig.data) : KP_CRYPTO_OK;
	if (rc == KP_CRYPTO_E_VERIFY)
		return KP_RECORD_E_SIGNATURE;
	if (rc == KP_CRYPTO_E_NOMEM)
		return KP_RECORD_E_NOMEM;
	if (rc != KP_CRYPTO_OK)
		return KP_RECORD_E_CRYPTO;
	if (kid != NULL) {
		if (kid_it.arg >= kid_cap)
			return KP_RECORD_E_INVAL;
		memcpy(kid, kid_it.data, (size_t)kid_it.arg);
		kid[kid_it.arg] = '\0';
	}
	*payload = body.data;
	*payload_len = (size_t)body.arg;
	return KP_RECORD_OK;
}

int kp_cose_verify1(const kp_cert *cert, const uint8_t *cose, size_t cose_len,
                    const uint8_t **payload, size_t *payload_len, char *kid, size_t kid_cap)
{
	return cose_check(cert, 1, cose, cose_len, payload, payload_len, kid, kid_cap);
}

int kp_cose_open1(const uint8_t *cose, size_t cose_len, const uint8_t **payload,
                  size_t *payload_len)
{
	return cose_check(NULL, 0, cose, cose_len, payload, payload_len, NULL, 0);
}
