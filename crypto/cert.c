/* SPDX-License-Identifier: Apache-2.0 */
/* kippu crypto: X.509 certificates on mbedTLS 2.28: loading, the chain, validity and
 * purpose checks, and the one certificate writer (ECDSA P-256 here, RSA in rsa.c). */
#include "kp_cert.h"
#include "crypto_int.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <mbedtls/asn1write.h>
#include <mbedtls/base64.h>
#include <mbedtls/bignum.h>
#include <mbedtls/oid.h>
#include <mbedtls/pem.h>
#include <mbedtls/rsa.h>
#include <mbedtls/x509_crt.h>

#define PEM_BUF_SIZE   4096             /* any certificate we write fits */
#define SECONDS_PER_DAY 86400
#define DAYS_MAX       36500
#define X509_TIME_MAX  INT64_C(253402300799) /* 9999-12-31 23:59:59, GeneralizedTime's end */

struct kp_cert {
	mbedtls_x509_crt crt;
};

/* mbedTLS 2.28 takes non-const contexts even where it only reads them. */
static mbedtls_x509_crt *cert_crt(const kp_cert *cert)
{
	return (mbedtls_x509_crt *)&cert->crt;
}

const mbedtls_x509_crt *kp_crypto_cert_crt(const kp_cert *cert)
{
	return cert == NULL ? NULL : &cert->crt;
}

static kp_cert *cert_new(void)
{
	kp_cert *cert = calloc(1, sizeof(*cert));

	if (cert != NULL)
		mbedtls_x509_crt_init(&cert->crt);
	return cert;
}

void kp_cert_free(kp_cert *cert)
{
	if (cert == NULL)
		return;
	mbedtls_x509_crt_free(&cert->crt);
	free(cert);
}

/* A parsed kp_cert is one certificate (a bundle would silently widen the trust anchors),
 * and a P-256 key's base-point table is filled while the cert is private to its creator. */
static int cert_check_loaded(kp_cert *cert)
{
	mbedtls_ecp_keypair *ec;
	int ret;

	if (cert->crt.next != NULL && cert->crt.next->raw.len > 0)
		return kp_crypto_fail_text(KP_CRYPTO_E_PARSE, "more than one certificate");
	ec = kp_crypto_pk_p256(&cert->crt.pk);
	if (ec == NULL)
		return KP_CRYPTO_OK;
	ret = kp_crypto_ec_warm(ec, kp_crypto_rng, NULL);
	if (ret != 0)
		return kp_crypto_fail_map(ret);
	return KP_CRYPTO_OK;
}

/* kp_crypto_parse_fn for certificates: out is a kp_cert **. */
static int cert_parse_buf(void *out, const unsigned char *buf, size_t buf_len)
{
	kp_cert *cert = cert_new();
	int rc = KP_CRYPTO_E_NOMEM;
	int ret;

	if (cert != NULL) {
		ret = mbedtls_x509_crt_parse(&cert->crt, buf, buf_len);
		rc = ret != 0 ? kp_crypto_fail_parse(ret, MBEDTLS_ERR_X509_ALLOC_FAILED)
		              : cert_check_loaded(cert);
	}
	if (rc == KP_CRYPTO_OK) {
		*(kp_cert **)out = cert;
		cert = NULL;
	}
	kp_cert_free(cert);
	return rc;
}

int kp_cert_load(kp_cert **out, const char *path)
{
	if (out == NULL || path == NULL)
		return KP_CRYPTO_E_INVAL;
	*out = NULL;
	return kp_crypto_load_file(path, cert_parse_buf, out);
}

int kp_cert_parse(kp_cert **out, const uint8_t *buf, size_t len)
{
	if (out == NULL || buf == NULL || len == 0)
		return KP_CRYPTO_E_INVAL;
	*out = NULL;
	return kp_crypto_parse_mem(buf, len, cert_parse_buf, out);
}

int kp_cert_verify(const kp_cert *cert, const uint8_t hash[KP_SHA256_LEN],
                   const uint8_t sig[KP_ES256_SIG_LEN])
{
	mbedtls_ecp_keypair *ec;

	if (cert == NULL || hash == NULL || sig == NULL)
		return KP_CRYPTO_E_INVAL;
	ec = kp_crypto_pk_p256(&cert->crt.pk);
	if (ec == NULL)
		return kp_crypto_fail_mbed(KP_CRYPTO_E_KEYTYPE, 0);
	return kp_crypto_ec_verify(ec, hash, sig);
}

/* mbedTLS's chain check with ca the only trust anchor: *flags says what failed. Any other
 * failure of mbedTLS is the return code, its text in err too. */
static int crt_verify(const kp_cert *cert, const kp_cert *ca, uint32_t *flags, char *err,
                      size_t err_cap)
{
	int rc;
	int ret;

	*flags = 0;
	if (err != NULL && err_cap > 0)
		err[0] = '\0';
	if (cert == NULL || ca == NULL || (err == NULL && err_cap > 0))
		return KP_CRYPTO_E_INVAL;
	ret = mbedtls_x509_crt_verify(cert_crt(cert), cert_crt(ca), NULL, NULL, flags, NULL, NULL);
	if (ret == 0 || ret == MBEDTLS_ERR_X509_CERT_VERIFY_FAILED)
		return KP_CRYPTO_OK;
	rc = kp_crypto_fail_map(ret);
	if (err != NULL && err_cap > 0)
		snprintf(err, err_cap, "%s", kp_crypto_last_error());
	return rc;
}

int kp_cert_check_issued_by(const kp_cert *cert, const kp_cert *ca, char *err, size_t err_cap)
{
	uint32_t flags;
	int rc = crt_verify(cert, ca, &flags, err, err_cap);

	/* mbedTLS checks validity times of both. */
	if (rc != KP_CRYPTO_OK || flags == 0)
		return rc;
	if (err != NULL && err_cap > 0)
		kp_crypto_verify_text(err, err_cap, flags);
	return kp_crypto_fail_text(KP_CRYPTO_E_CHAIN, "%s", err != NULL ? err : "chain check failed");
}

int kp_crypto_crt_cn(const mbedtls_x509_crt *crt, char *out, size_t cap)
{
	const mbedtls_x509_name *n;

	for (n = &crt->subject; n != NULL; n = n->next) {
		if (n->oid.p == NULL || MBEDTLS_OID_CMP(MBEDTLS_OID_AT_CN, &n->oid) != 0)
			continue;
		if (n->val.len >= cap)
			return KP_CRYPTO_E_INVAL;
		if (memchr(n->val.p, '\0', n->val.len) != NULL)
			return KP_CRYPTO_E_PARSE;   /* would be cut short as a C string */
		memcpy(out, n->val.p, n->val.len);
		out[n->val.len] = '\0';
		return KP_CRYPTO_OK;
	}
	return KP_CRYPTO_E_PARSE;
}

int kp_cert_subject_cn(const kp_cert *cert, char *out, size_t cap)
{
	if (cert == NULL || out == NULL || cap == 0)
		return KP_CRYPTO_E_INVAL;
	out[0] = '\0';
	return kp_crypto_crt_cn(&cert->crt, out, cap);
}

int kp_cert_matches_key(const kp_cert *cert, const kp_key *key)
{
	mbedtls_ecp_keypair *cec, *kec;

	if (cert == NULL || key == NULL)
		return KP_CRYPTO_E_INVAL;
	cec = kp_crypto_pk_p256(&cert->crt.pk);
	kec = kp_crypto_pk_p256(kp_crypto_key_pk(key));
	if (cec == NULL || kec == NULL)
		return KP_CRYPTO_E_KEYTYPE;
	/* Both are P-256 and both points were checked on load: comparing Q is enough. */
	if (mbedtls_ecp_point_cmp(&cec->Q, &kec->Q) != 0)
		return KP_CRYPTO_E_VERIFY;
	return KP_CRYPTO_OK;
}

int kp_cert_write_pem(const kp_cert *cert, const char *path)
{
	static const char header[] = "-----BEGIN CERTIFICATE-----\n";
	static const char footer[] = "-----END CERTIFICATE-----\n";
	unsigned char *pem = NULL;
	size_t need = 0;
	int rc;
	int ret;

	if (cert == NULL || path == NULL)
		return KP_CRYPTO_E_INVAL;
	/* First call with no room only reports the size needed. */
	ret = mbedtls_pem_write_buffer(header, footer, cert->crt.raw.p, cert->crt.raw.len,
	                               NULL, 0, &need);
	if (ret != MBEDTLS_ERR_BASE64_BUFFER_TOO_SMALL || need == 0) {
		rc = kp_crypto_fail_map(ret);
		goto out;
	}
	pem = malloc(need);
	if (pem == NULL) {
		rc = KP_CRYPTO_E_NOMEM;
		goto out;
	}
	ret = mbedtls_pem_write_buffer(header, footer, cert->crt.raw.p, cert->crt.raw.len,
	                               pem, need, &need);
	if (ret != 0) {
		rc = kp_crypto_fail_map(ret);
		goto out;
	}
	rc = kp_crypto_file_write_public(path, pem, strlen((const char *)pem));
out:
	free(pem);
	return rc;
}

/* ---- writing certificates ---- */

/* The CN goes into mbedTLS's "CN=..,O=.." string form: characters that the string form
 * treats as syntax would let a CN smuggle in other name parts, so they are refused. */
static int cn_valid(const char *cn)
{
	size_t n;

	if (cn == NULL)
		return 0;
	n = strnlen(cn, KP_CRYPTO_CN_MAX + 1);
	if (n == 0 || n > KP_CRYPTO_CN_MAX)
		return 0;
	for (; *cn != '\0'; cn++) {
		unsigned char c = (unsigned char)*cn;

		if (c < 0x20 || c == 0x7f || strchr(",=+\\\"<>;#", c) != NULL)
			return 0;
	}
	return 1;
}

static int validity_ok(int64_t not_before, int64_t not_after)
{
	return not_before >= 0 && not_after <= X509_TIME_MAX && not_before <= not_after;
}

/* "YYYYMMDDhhmmss" in UTC, the form mbedtls_x509write_crt_set_validity takes. */
static int x509_time(char out[16], int64_t t)
{
	time_t tt = (time_t)t;
	struct tm tm;

	if (gmtime_r(&tt, &tm) == NULL || tm.tm_year + 1900 > 9999)
		return -1;
	if (snprintf(out, 16, "%04d%02d%02d%02d%02d%02d", tm.tm_year + 1900, tm.tm_mon + 1,
	             tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec) != 14)
		return -1;
	return 0;
}

/* Positive 127-bit serial with the top bit of 126 set: never zero, fixed DER length. */
static int random_serial(unsigned char serial[16])
{
	int rc = kp_random(serial, 16);

	if (rc == KP_CRYPTO_OK)
		serial[0] = (unsigned char)((serial[0] & 0x7f) | 0x40);
	return rc;
}

/* Whether key is the private half of the CA certificate's public key. */
static int issuer_key_matches(const kp_cert *ca, mbedtls_pk_context *key)
{
	mbedtls_ecp_keypair *cec = kp_crypto_pk_p256(&ca->crt.pk);
	mbedtls_ecp_keypair *kec = kp_crypto_pk_p256(key);

	/* P-256: both points were checked on load, comparing Q is enough (kp_cert_matches_key). */
	if (cec != NULL && kec != NULL)
		return mbedtls_ecp_point_cmp(&cec->Q, &kec->Q) == 0;
	return mbedtls_pk_check_pair(&ca->crt.pk, key) == 0;
}

/* Issuer = the CA's subject, name by name with its string types, so the issued
 * certificate's issuer bytes equal the CA's subject bytes (checked after writing). */
static int copy_issuer(mbedtls_x509write_cert *w, const mbedtls_x509_crt *ca)
{
	const mbedtls_x509_name *n;
	mbedtls_asn1_named_data *d;

	for (n = &ca->subject; n != NULL; n = n->next) {
		if (n->oid.p == NULL)
			continue;
		d = mbedtls_asn1_store_named_data(&w->issuer, (const char *)n->oid.p, n->oid.len,
		                                  n->val.p, n->val.len);
		if (d == NULL)
			return MBEDTLS_ERR_X509_ALLOC_FAILED;
		d->val.tag = n->val.tag;
	}
	return 0;
}

/* extendedKeyUsage values: SEQUENCE { id-kp-clientAuth } and SEQUENCE { id-kp-serverAuth }. */
static const unsigned char eku_client[] = { 0x30, 0x0a, 0x06, 0x08, 0x2b, 0x06, 0x01, 0x05,
                                            0x05, 0x07, 0x03, 0x02 };
static const unsigned char eku_server[] = { 0x30, 0x0a, 0x06, 0x08, 0x2b, 0x06, 0x01, 0x05,
                                            0x05, 0x07, 0x03, 0x01 };

/* The extendedKeyUsage a profile writes (non-critical, as is usual), if any. */
static int set_profile_eku(mbedtls_x509write_cert *w, enum kp_cert_profile profile)
{
	const unsigned char *v = profile == KP_CERT_TERMINAL ? eku_client :
	                         profile == KP_CERT_BACKEND ? eku_server : NULL;

	if (v == NULL)
		return 0;
	return mbedtls_x509write_crt_set_extension(w, MBEDTLS_OID_EXTENDED_KEY_USAGE,
	                                           MBEDTLS_OID_SIZE(MBEDTLS_OID_EXTENDED_KEY_USAGE),
	                                           0, v, sizeof(eku_client));
}

/* Everything but the signature: names, serial, validity, extensions. mbedTLS's code. */
static int crt_fill(mbedtls_x509write_cert *w, const struct kp_crypto_cert_spec *c,
                    const char *subject, const mbedtls_mpi *serial, const char *nb,
                    const char *na)
{
	int is_ca = c->issuer_cert == NULL;
	int ret;

	mbedtls_x509write_crt_set_version(w, MBEDTLS_X509_CRT_VERSION_3);
	mbedtls_x509write_crt_set_md_alg(w, MBEDTLS_MD_SHA256);
	mbedtls_x509write_crt_set_subject_key(w, c->subject_pk);
	mbedtls_x509write_crt_set_issuer_key(w, c->issuer_pk);
	ret = mbedtls_x509write_crt_set_serial(w, serial);
	if (ret == 0)
		ret = mbedtls_x509write_crt_set_subject_name(w, subject);
	if (ret == 0)
		ret = is_ca ? mbedtls_x509write_crt_set_issuer_name(w, subject)
		            : copy_issuer(w, &c->issuer_cert->crt);
	if (ret == 0)
		ret = mbedtls_x509write_crt_set_validity(w, nb, na);
	if (ret == 0)
		ret = mbedtls_x509write_crt_set_basic_constraints(w, is_ca, is_ca ? 0 : -1);
	if (ret == 0)
		ret = mbedtls_x509write_crt_set_key_usage(w, is_ca ?
		          MBEDTLS_X509_KU_KEY_CERT_SIGN | MBEDTLS_X509_KU_CRL_SIGN :
		          MBEDTLS_X509_KU_DIGITAL_SIGNATURE);
	if (ret == 0)
		ret = set_profile_eku(w, c->profile);
	if (ret == 0)
		ret = mbedtls_x509write_crt_set_subject_key_identifier(w);
	if (ret == 0)
		ret = mbedtls_x509write_crt_set_authority_key_identifier(w);
	return ret;
}

/* Signs and encodes into buf: *out and *out_len say where the DER or PEM (no NUL) is. */
static int crt_encode(mbedtls_x509write_cert *w, int der, unsigned char *buf, size_t cap,
                      const unsigned char **out, size_t *out_len)
{
	int ret;

	*out = buf;
	*out_len = 0;
	if (!der) {
		ret = mbedtls_x509write_crt_pem(w, buf, cap, kp_crypto_rng, NULL);
		if (ret == 0)
			*out_len = strlen((const char *)buf);
		return ret;
	}
	/* mbedtls_x509write_crt_der writes at the end of the buffer. */
	ret = mbedtls_x509write_crt_der(w, buf, cap, kp_crypto_rng, NULL);
	if (ret <= 0)
		return ret;
	*out_len = (size_t)ret;
	*out = buf + cap - *out_len;
	return 0;
}

/* Name types or multi-valued names mbedTLS cannot reproduce would break chains. */
static int check_issuer_copied(const struct kp_crypto_cert_spec *c, const unsigned char *out,
                               size_t out_len)
{
	kp_cert *back = NULL;
	int rc = kp_cert_parse(&back, out, c->der ? out_len : out_len + 1);

	if (rc != KP_CRYPTO_OK)
		return rc;
	if (back->crt.issuer_raw.len != c->issuer_cert->crt.subject_raw.len ||
	    memcmp(back->crt.issuer_raw.p, c->issuer_cert->crt.subject_raw.p,
	           back->crt.issuer_raw.len) != 0)
		rc = kp_crypto_fail_text(KP_CRYPTO_E_INVAL, "CA subject cannot be copied exactly");
	kp_cert_free(back);
	return rc;
}

/* Writes the certificate of a checked spec with the given serial. */
static int cert_write_spec(const struct kp_crypto_cert_spec *c, const unsigned char *serial,
                           size_t serial_len)
{
	mbedtls_x509write_cert w;
	mbedtls_mpi mpi;
	unsigned char buf[PEM_BUF_SIZE];
	const unsigned char *out = buf;
	size_t out_len = 0;
	char subject[KP_CRYPTO_CN_MAX + 64];
	char nb[16], na[16];
	int rc = KP_CRYPTO_OK;
	int ret;

	mbedtls_x509write_crt_init(&w);
	mbedtls_mpi_init(&mpi);
	if (x509_time(nb, c->not_before) != 0 || x509_time(na, c->not_after) != 0) {
		rc = KP_CRYPTO_E_INVAL;
		goto out;
	}
	snprintf(subject, sizeof(subject), "CN=%s,O=%s", c->cn, c->org);
	ret = mbedtls_mpi_read_binary(&mpi, serial, serial_len);
	if (ret == 0)
		ret = crt_fill(&w, c, subject, &mpi, nb, na);
	if (ret == 0)
		ret = crt_encode(&w, c->der, buf, sizeof(buf), &out, &out_len);
	if (ret != 0) {
		rc = kp_crypto_fail_map(ret);
		goto out;
	}
	if (c->issuer_cert != NULL) {
		rc = check_issuer_copied(c, out, out_len);
		if (rc != KP_CRYPTO_OK)
			goto out;
	}
	rc = kp_crypto_file_write_public(c->out_path, out, out_len);
out:
	mbedtls_mpi_free(&mpi);
	mbedtls_x509write_crt_free(&w);
	return rc;
}

int kp_crypto_cert_write(const struct kp_crypto_cert_spec *c)
{
	unsigned char serial[16];
	int rc;

	if (c->issuer_pk == NULL || c->subject_pk == NULL || c->out_path == NULL ||
	    !cn_valid(c->cn) || !validity_ok(c->not_before, c->not_after))
		return KP_CRYPTO_E_INVAL;
	if (c->p256 && (kp_crypto_pk_p256(c->issuer_pk) == NULL ||
	                kp_crypto_pk_p256(c->subject_pk) == NULL))
		return KP_CRYPTO_E_KEYTYPE;
	/* A certificate signed with a key other than the CA's would never verify. */
	if (c->issuer_cert != NULL && (!c->issuer_cert->crt.ca_istrue ||
	                               !issuer_key_matches(c->issuer_cert, c->issuer_pk)))
		return kp_crypto_fail_text(KP_CRYPTO_E_INVAL, "not a CA certificate, or not the CA key");
	if (c->serial != NULL)
		return cert_write_spec(c, c->serial, c->serial_len);
	rc = random_serial(serial);
	if (rc != KP_CRYPTO_OK)
		return rc;
	return cert_write_spec(c, serial, sizeof(serial));
}

/* Writes a P-256 certificate for subject_key (CA when issuer_cert is NULL: self-signed). */
static int cert_write(const kp_key *issuer_key, const kp_cert *issuer_cert,
                      const kp_key *subject_key, const char *cn,
                      enum kp_cert_profile profile, int64_t not_before, int64_t not_after,
                      const char *out_pem)
{
	struct kp_crypto_cert_spec c = {
		.issuer_pk = kp_crypto_key_pk(issuer_key),
		.issuer_cert = issuer_cert,
		.subject_pk = kp_crypto_key_pk(subject_key),
		.p256 = 1,
		.cn = cn,
		.org = "kippu",
		.not_before = not_before,
		.not_after = not_after,
		.out_path = out_pem,
		.profile = profile,
	};

	return kp_crypto_cert_write(&c);
}

int kp_cert_create_ca_validity(const kp_key *ca_key, const char *cn, int64_t not_before,
                               int64_t not_after, const char *out_pem)
{
	return cert_write(ca_key, NULL, ca_key, cn, 0, not_before, not_after, out_pem);
}

int kp_cert_issue_profile(const kp_key *ca_key, const kp_cert *ca_cert,
                          const kp_key *subject_key, const char *cn,
                          enum kp_cert_profile profile, int64_t not_before, int64_t not_after,
                          const char *out_pem)
{
	if (ca_cert == NULL || (profile != KP_CERT_TERMINAL && profile != KP_CERT_BACKEND &&
	                        profile != KP_CERT_NO_EKU))
		return KP_CRYPTO_E_INVAL;
	return cert_write(ca_key, ca_cert, subject_key, cn, profile, not_before, not_after,
	                  out_pem);
}

int kp_cert_issue_validity(const kp_key *ca_key, const kp_cert *ca_cert,
                           const kp_key *subject_key, const char *cn, int64_t not_before,
                           int64_t not_after, const char *out_pem)
{
	return kp_cert_issue_profile(ca_key, ca_cert, subject_key, cn, KP_CERT_TERMINAL,
	                             not_before, not_after, out_pem);
}

/* notBefore one day back absorbs clock skew between the issuing machine and terminals. */
static int days_window(int days, int64_t *nb, int64_t *na)
{
	int64_t now = (int64_t)time(NULL);

	if (days < 1 || days > DAYS_MAX || now < SECONDS_PER_DAY)
		return KP_CRYPTO_E_INVAL;
	*nb = now - SECONDS_PER_DAY;
	*na = now + (int64_t)days * SECONDS_PER_DAY;
	return KP_CRYPTO_OK;
}

int kp_cert_create_ca(const kp_key *ca_key, const char *cn, int days, const char *out_pem)
{
	int64_t nb, na;
	int rc = days_window(days, &nb, &na);

	if (rc != KP_CRYPTO_OK)
		return rc;
	return kp_cert_create_ca_validity(ca_key, cn, nb, na, out_pem);
}

int kp_cert_issue(const kp_key *ca_key, const kp_cert *ca_cert, const kp_key *subject_key,
                  const char *cn, int days, const char *out_pem)
{
	int64_t nb, na;
	int rc = days_window(days, &nb, &na);

	if (rc != KP_CRYPTO_OK)
		return rc;
	return kp_cert_issue_profile(ca_key, ca_cert, subject_key, cn, KP_CERT_TERMINAL, nb, na,
	                             out_pem);
}

/* ---- profiles ---- */

static int eku_has(const mbedtls_x509_crt *crt, const char *oid, size_t oid_len)
{
	const mbedtls_x509_sequence *cur;

	for (cur = &crt->ext_key_usage; cur != NULL && cur->buf.p != NULL; cur = cur->next)
		if (cur->buf.len == oid_len && memcmp(cur->buf.p, oid, oid_len) == 0)
			return 1;
	return 0;
}

/* mbedtls_x509_crt_check_extended_key_usage passes a certificate without the extension
 * (and one with anyExtendedKeyUsage): here the extension and the exact purpose are needed,
 * and the other side's purpose must be absent, so no certificate can play both roles. */
int kp_crypto_crt_check_profile(const mbedtls_x509_crt *crt, enum kp_cert_profile profile,
                                const char *who, char *err, size_t err_cap)
{
	static const char client[] = MBEDTLS_OID_CLIENT_AUTH, server[] = MBEDTLS_OID_SERVER_AUTH;
	int terminal = profile == KP_CERT_TERMINAL;
	const char *role = terminal ? "terminal" : "backend";
	const char *want = terminal ? "clientAuth" : "serverAuth";

	if (err != NULL && err_cap > 0)
		err[0] = '\0';
	if (crt == NULL || who == NULL || (profile != KP_CERT_TERMINAL && profile != KP_CERT_BACKEND))
		return KP_CRYPTO_E_INVAL;
	if ((crt->ext_types & MBEDTLS_X509_EXT_EXTENDED_KEY_USAGE) == 0) {
		if (err != NULL && err_cap > 0)
			snprintf(err, err_cap, "%s has no extendedKeyUsage: not a %s certificate "
			         "(%s); reissue it with kippuctl %s create", who, role, want, role);
		return KP_CRYPTO_E_CHAIN;
	}
	if (!eku_has(crt, terminal ? client : server, sizeof(client) - 1)) {
		if (err != NULL && err_cap > 0)
			snprintf(err, err_cap, "%s is not a %s certificate (extendedKeyUsage lacks %s)",
			         who, role, want);
		return KP_CRYPTO_E_CHAIN;
	}
	if (eku_has(crt, terminal ? server : client, sizeof(client) - 1)) {
		if (err != NULL && err_cap > 0)
			snprintf(err, err_cap, "%s carries both clientAuth and serverAuth: one "
			         "certificate may not be both a terminal's and the backend's", who);
		return KP_CRYPTO_E_CHAIN;
	}
	return KP_CRYPTO_OK;
}

int kp_cert_check_profile(const kp_cert *cert, enum kp_cert_profile profile, char *err,
                          size_t err_cap)
{
	return kp_crypto_crt_check_profile(kp_crypto_cert_crt(cert), profile, "certificate", err,
	                                   err_cap);
}

int kp_cert_file_check_profile(const char *path, enum kp_cert_profile profile, char *err,
                               size_t err_cap)
{
	kp_cert *cert = NULL;
	char why[200] = "";
	int rc = path != NULL ? kp_cert_load(&cert, path) : KP_CRYPTO_E_INVAL;

	if (rc == KP_CRYPTO_OK)
		rc = kp_cert_check_profile(cert, profile, why, sizeof(why));
	kp_cert_free(cert);
	if (rc != KP_CRYPTO_OK && err != NULL && err_cap > 0)
		snprintf(err, err_cap, "%s: %s", path != NULL ? path : "(null)",
		         why[0] != '\0' ? why : kp_crypto_strerror(rc));
	return rc;
}

/* ---- checks for certificates of any key type ---- */

/* Days from 1970-01-01 to the given civil date (proleptic Gregorian; H. Hinnant's). */
static int64_t days_from_civil(int64_t y, int m, int d)
{
	int64_t era, yoe, doy, doe;

	y -= m <= 2;
	era = (y >= 0 ? y : y - 399) / 400;
	yoe = y - era * 400;
	doy = (153 * (m > 2 ? m - 3 : m + 9) + 2) / 5 + d - 1;
	doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
	return era * 146097 + doe - 719468;
}

static int64_t x509_time_unix(const mbedtls_x509_time *t)
{
	return days_from_civil(t->year, t->mon, t->day) * SECONDS_PER_DAY +
	       (int64_t)t->hour * 3600 + t->min * 60 + t->sec;
}

static void x509_time_text(char out[32], const mbedtls_x509_time *t)
{
	snprintf(out, 32, "%04d-%02d-%02dT%02d:%02d:%02dZ", t->year % 10000, t->mon % 100,
	         t->day % 100, t->hour % 100, t->min % 100, t->sec % 100);
}

/* Puts the reason into err (when there is room) and the thread's last error. */
__attribute__((format(printf, 3, 4)))
static int chain_fail(char *err, size_t err_cap, const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	kp_crypto_fail_vtext(KP_CRYPTO_E_CHAIN, fmt, ap);
	va_end(ap);
	if (err != NULL && err_cap > 0)
		snprintf(err, err_cap, "%s", kp_crypto_last_error());
	return KP_CRYPTO_E_CHAIN;
}

/* at_s within [notBefore, notAfter] (X.509 times have whole seconds, both ends included). */
static int time_check(const mbedtls_x509_crt *crt, const char *what, int64_t at_s, char *err,
                      size_t err_cap)
{
	char t[32];

	if (at_s < x509_time_unix(&crt->valid_from)) {
		x509_time_text(t, &crt->valid_from);
		return chain_fail(err, err_cap, "%s not yet valid (notBefore %s)", what, t);
	}
	if (at_s > x509_time_unix(&crt->valid_to)) {
		x509_time_text(t, &crt->valid_to);
		return chain_fail(err, err_cap, "%s expired (notAfter %s)", what, t);
	}
	return KP_CRYPTO_OK;
}

int kp_cert_check_signature(const kp_cert *cert, const kp_cert *ca, char *err, size_t err_cap)
{
	const uint32_t time_flags = MBEDTLS_X509_BADCERT_EXPIRED | MBEDTLS_X509_BADCERT_FUTURE;
	uint32_t flags;
	char info[160];
	int rc = crt_verify(cert, ca, &flags, err, err_cap);

	if (rc != KP_CRYPTO_OK)
		return rc;
	flags &= ~time_flags;
	if (flags == 0)
		return KP_CRYPTO_OK;
	kp_crypto_verify_text(info, sizeof(info), flags);
	return chain_fail(err, err_cap, "signature chain: %s", info);
}

int kp_cert_check_at(const kp_cert *cert, const kp_cert *ca, int64_t at_ms, unsigned key_usage,
                     char *err, size_t err_cap)
{
	int64_t at_s = at_ms / 1000 - (at_ms % 1000 < 0);   /* floor, also before 1970 */
	int rc;

	/* mbedTLS judges validity by the system clock: kp_cert_check_signature ignores it, and
	 * both certificates' windows are compared with at_ms here instead. */
	rc = kp_cert_check_signature(cert, ca, err, err_cap);
	if (rc != KP_CRYPTO_OK)
		return rc;
	rc = time_check(cert_crt(cert), "certificate", at_s, err, err_cap);
	if (rc == KP_CRYPTO_OK)
		rc = time_check(cert_crt(ca), "CA certificate", at_s, err, err_cap);
	if (rc != KP_CRYPTO_OK)
		return rc;
	/* mbedTLS (like RFC 5280) allows every usage when the extension is absent. */
	if (key_usage != 0 && mbedtls_x509_crt_check_key_usage(cert_crt(cert), key_usage) != 0)
		return chain_fail(err, err_cap, "key usage 0x%02x not allowed (certificate has 0x%02x)",
		                  key_usage, cert->crt.key_usage);
	return KP_CRYPTO_OK;
}

int kp_cert_spki_sha256(const kp_cert *cert, uint8_t out[KP_SHA256_LEN])
{
	if (cert == NULL || out == NULL || cert->crt.pk_raw.p == NULL || cert->crt.pk_raw.len == 0)
		return KP_CRYPTO_E_INVAL;
	return kp_sha256(cert->crt.pk_raw.p, cert->crt.pk_raw.len, out);
}

int kp_cert_constraints(const kp_cert *cert, int *is_ca, int *has_key_usage, unsigned *key_usage)
{
	if (cert == NULL || is_ca == NULL || has_key_usage == NULL || key_usage == NULL)
		return KP_CRYPTO_E_INVAL;
	*is_ca = cert->crt.ca_istrue != 0;
	*has_key_usage = (cert->crt.ext_types & MBEDTLS_X509_EXT_KEY_USAGE) != 0;
	*key_usage = *has_key_usage ? cert->crt.key_usage : 0;
	return KP_CRYPTO_OK;
}

int kp_cert_verify_rsa_sha256(const kp_cert *cert, const uint8_t hash[KP_SHA256_LEN],
                              const uint8_t *sig, size_t sig_len)
{
	mbedtls_rsa_context *rsa;
	int ret;

	if (cert == NULL || hash == NULL || sig == NULL)
		return KP_CRYPTO_E_INVAL;
	if (mbedtls_pk_get_type(&cert->crt.pk) != MBEDTLS_PK_RSA)
		return kp_crypto_fail_mbed(KP_CRYPTO_E_KEYTYPE, 0);
	rsa = mbedtls_pk_rsa(cert->crt.pk);
	if (sig_len != mbedtls_rsa_get_len(rsa))
		return kp_crypto_fail_mbed(KP_CRYPTO_E_VERIFY, 0);
	ret = mbedtls_rsa_rsassa_pkcs1_v15_verify(rsa, NULL, NULL, MBEDTLS_RSA_PUBLIC,
	                                          MBEDTLS_MD_SHA256, KP_SHA256_LEN, hash, sig);
	if (ret == 0)
		return KP_CRYPTO_OK;
	/* The low-level part of a combined code says whether memory ran out. */
	if (((-ret) & 0x7F) == -MBEDTLS_ERR_MPI_ALLOC_FAILED)
		return kp_crypto_fail_mbed(KP_CRYPTO_E_NOMEM, ret);
	return kp_crypto_fail_mbed(KP_CRYPTO_E_VERIFY, ret);   /* bad padding, s >= n, wrong hash */
}

int kp_cert_issuer_raw(const kp_cert *cert, const uint8_t **p, size_t *n)
{
	if (cert == NULL || p == NULL || n == NULL)
		return KP_CRYPTO_E_INVAL;
	*p = cert->crt.issuer_raw.p;
	*n = cert->crt.issuer_raw.len;
	return KP_CRYPTO_OK;
}

int kp_cert_serial_raw(const kp_cert *cert, const uint8_t **p, size_t *n)
{
	if (cert == NULL || p == NULL || n == NULL)
		return KP_CRYPTO_E_INVAL;
	*p = cert->crt.serial.p;
	*n = cert->crt.serial.len;
	return KP_CRYPTO_OK;
}

int kp_cert_der(const kp_cert *cert, const uint8_t **p, size_t *n)
{
	if (cert == NULL || p == NULL || n == NULL)
		return KP_CRYPTO_E_INVAL;
	*p = cert->crt.raw.p;
	*n = cert->crt.raw.len;
	return KP_CRYPTO_OK;
}

int kp_cert_validity(const kp_cert *cert, int64_t *not_before, int64_t *not_after)
{
	if (cert == NULL || not_before == NULL || not_after == NULL)
		return KP_CRYPTO_E_INVAL;
	*not_before = x509_time_unix(&cert->crt.valid_from);
	*not_after = x509_time_unix(&cert->crt.valid_to);
	return KP_CRYPTO_OK;
}
