/* SPDX-License-Identifier: Apache-2.0 */
/* kippu crypto: X.509 certificates: loading, checks (chain, validity, purpose), and
 * issuing ECDSA P-256 certificates under kippu's profiles. */
#ifndef KP_CERT_H
#define KP_CERT_H

#include <stddef.h>
#include <stdint.h>
#include "kp_crypto_err.h"
#include "kp_hash.h"
#include "kp_key.h"

typedef struct kp_cert kp_cert;
int  kp_cert_load(kp_cert **out, const char *path);      /* PEM or DER file */
int  kp_cert_parse(kp_cert **out, const uint8_t *buf, size_t len); /* PEM (NUL-terminated) or DER */
/* Verifies an ES256 r||s signature with the certificate's public key (must be P-256). */
int  kp_cert_verify(const kp_cert *cert, const uint8_t hash[KP_SHA256_LEN],
                    const uint8_t sig[KP_ES256_SIG_LEN]);
/* Checks that cert was signed by ca and that both are valid now; err gets the detail. */
int  kp_cert_check_issued_by(const kp_cert *cert, const kp_cert *ca, char *err, size_t err_cap);
/* The subject's commonName. */
int  kp_cert_subject_cn(const kp_cert *cert, char *out, size_t cap);
/* 0 when the certificate's public key is the public half of key. */
int  kp_cert_matches_key(const kp_cert *cert, const kp_key *key);
/* Writes the certificate as PEM. */
int  kp_cert_write_pem(const kp_cert *cert, const char *path);
void kp_cert_free(kp_cert *cert);

/* A self-signed CA certificate (basicConstraints CA:true, keyCertSign|cRLSign). */
int  kp_cert_create_ca(const kp_key *ca_key, const char *cn, int days, const char *out_pem);
/* An end-entity certificate for subject_key, CN=cn, signed by the CA
 * (basicConstraints CA:false, digitalSignature). */
int  kp_cert_issue(const kp_key *ca_key, const kp_cert *ca_cert, const kp_key *subject_key,
                   const char *cn, int days, const char *out_pem);

/* Added: the same with an explicit validity window (Unix seconds, UTC, 0 <= not_before <=
 * not_after <= 9999-12-31), e.g. to make expired or not-yet-valid certificates in tests.
 * The days variants above take 1 <= days <= 36500 (KP_CRYPTO_E_INVAL otherwise) and give
 * notBefore = now - 1 day, notAfter = now + days. cn may not contain , = + \ " < > ; # or
 * control characters and is at most 64 bytes. Output files are replaced atomically. */
int  kp_cert_create_ca_validity(const kp_key *ca_key, const char *cn, int64_t not_before,
                                int64_t not_after, const char *out_pem);
int  kp_cert_issue_validity(const kp_key *ca_key, const kp_cert *ca_cert,
                            const kp_key *subject_key, const char *cn, int64_t not_before,
                            int64_t not_after, const char *out_pem);
/* Threads: a kp_cert is only read after kp_cert_load/kp_cert_parse, so one cert may be
 * shared by threads that verify with it or check chains against it. */

/* Certificate profiles: what a certificate is for is in its extendedKeyUsage, never in its
 * name. A terminal's certificate says clientAuth, the backend's serverAuth; the TLS layer
 * refuses a peer whose certificate lacks its side's purpose or carries both (kp_tls.h).
 * kp_cert_issue and kp_cert_issue_validity above issue KP_CERT_TERMINAL. */
enum kp_cert_profile {
	KP_CERT_TERMINAL = 1,   /* TLS client: extendedKeyUsage clientAuth */
	KP_CERT_BACKEND  = 2,   /* TLS server: extendedKeyUsage serverAuth */
	KP_CERT_NO_EKU   = 3,   /* no extendedKeyUsage, as before profiles: only for tests */
};
int  kp_cert_issue_profile(const kp_key *ca_key, const kp_cert *ca_cert,
                           const kp_key *subject_key, const char *cn,
                           enum kp_cert_profile profile, int64_t not_before, int64_t not_after,
                           const char *out_pem);
/* 0 when cert carries extendedKeyUsage with the profile's purpose and not the other side's
 * (KP_CERT_TERMINAL or KP_CERT_BACKEND); else KP_CRYPTO_E_CHAIN, and err says why. */
int  kp_cert_check_profile(const kp_cert *cert, enum kp_cert_profile profile, char *err,
                           size_t err_cap);
/* The same for the certificate file at path; err: "PATH: why" (also when it does not load). */
int  kp_cert_file_check_profile(const char *path, enum kp_cert_profile profile, char *err,
                                size_t err_cap);

/* ---- Certificates of any key type (ECDSA, and RSA for the My Number card, JPKI) ---- */

/* Chain check against ca at a given time (ms since the epoch, e.g. the tap's), not "now";
 * key_usage: required keyUsage bits (MBEDTLS_X509_KU_* values; 0x80 digitalSignature) or 0.
 * Works for RSA and ECDSA certificates. err says what failed (signature, expired, not yet
 * valid, key usage). */
int  kp_cert_check_at(const kp_cert *cert, const kp_cert *ca, int64_t at_ms, unsigned key_usage,
                      char *err, size_t err_cap);
/* ca's signature on cert verifies (ca the only trust anchor); neither validity window is
 * looked at: for telling "expired" from "never issued by ca". */
int  kp_cert_check_signature(const kp_cert *cert, const kp_cert *ca, char *err, size_t err_cap);
/* SHA-256 of the certificate's SubjectPublicKeyInfo (its DER, tag and length included):
 * names a key whatever the name or re-encoding of the certificate around it. */
int  kp_cert_spki_sha256(const kp_cert *cert, uint8_t out[KP_SHA256_LEN]);
/* What the certificate says of itself: basicConstraints CA:TRUE (*is_ca), whether it has
 * a keyUsage extension at all (mbedTLS reads "absent" as "any use") and its bits. */
int  kp_cert_constraints(const kp_cert *cert, int *is_ca, int *has_key_usage, unsigned *key_usage);
/* Verifies an RSA PKCS#1 v1.5 SHA-256 signature with the certificate's (RSA) public key. */
int  kp_cert_verify_rsa_sha256(const kp_cert *cert, const uint8_t hash[KP_SHA256_LEN],
                               const uint8_t *sig, size_t sig_len);
/* The raw DER of the issuer Name and the serial number's bytes (pointers into the cert). */
int  kp_cert_issuer_raw(const kp_cert *cert, const uint8_t **p, size_t *n);
int  kp_cert_serial_raw(const kp_cert *cert, const uint8_t **p, size_t *n);
/* The whole certificate's DER. */
int  kp_cert_der(const kp_cert *cert, const uint8_t **p, size_t *n);
/* notBefore / notAfter in Unix seconds. */
int  kp_cert_validity(const kp_cert *cert, int64_t *not_before, int64_t *not_after);

#endif
