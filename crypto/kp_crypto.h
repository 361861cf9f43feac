/* kippu crypto: the only place that calls mbedTLS for primitives.
 * Contexts follow mbedTLS's life: load/generate returns an error code, free accepts NULL
 * and wipes secrets. */
#ifndef KP_CRYPTO_H
#define KP_CRYPTO_H

#include <stddef.h>
#include <stdint.h>

enum kp_crypto_rc {
	KP_CRYPTO_OK          = 0,
	KP_CRYPTO_E_INVAL     = -0x201, /* bad argument */
	KP_CRYPTO_E_NOMEM     = -0x202,
	KP_CRYPTO_E_IO        = -0x203, /* file could not be read or written */
	KP_CRYPTO_E_PARSE     = -0x204, /* key or certificate does not parse */
	KP_CRYPTO_E_VERIFY    = -0x205, /* signature does not verify */
	KP_CRYPTO_E_CHAIN     = -0x206, /* certificate not issued by the given CA, or expired */
	KP_CRYPTO_E_KEYTYPE   = -0x207, /* not an ECDSA P-256 key (RSA functions: not RSA) */
	KP_CRYPTO_E_RNG       = -0x208,
	KP_CRYPTO_E_EXISTS    = -0x209, /* refusing to overwrite an existing key file */
	KP_CRYPTO_E_INTERNAL  = -0x20A, /* mbedTLS failed; detail in kp_crypto_last_error() */
};

const char *kp_crypto_strerror(int rc);

#define KP_SHA256_LEN 32
#define KP_ES256_SIG_LEN 64             /* r || s, 32 bytes each (COSE form) */

int kp_sha256(const void *data, size_t len, uint8_t out[KP_SHA256_LEN]);
int kp_hmac_sha256(const uint8_t *key, size_t key_len, const void *msg, size_t msg_len,
                   uint8_t out[KP_SHA256_LEN]);
/* CSPRNG (mbedTLS CTR_DRBG seeded from the OS entropy source). */
int kp_random(void *buf, size_t len);
/* Wipes memory in a way the compiler cannot drop. */
void kp_zeroize(void *p, size_t len);
/* Constant-time comparison: 0 when equal. */
int kp_memcmp_ct(const void *a, const void *b, size_t len);

/* ---- ECDSA P-256 keys ---- */
typedef struct kp_key kp_key;
int  kp_key_generate(kp_key **out);
int  kp_key_load(kp_key **out, const char *path);        /* PEM or DER private key */
/* Writes the private key as PEM with mode 0600; refuses to overwrite (KP_CRYPTO_E_EXISTS). */
int  kp_key_save(const kp_key *key, const char *path);
/* Writes the public key as PEM (SubjectPublicKeyInfo). */
int  kp_key_save_public(const kp_key *key, const char *path);
/* ES256 over a SHA-256 hash, deterministic (RFC 6979), signature as r || s. */
int  kp_key_sign(const kp_key *key, const uint8_t hash[KP_SHA256_LEN],
                 uint8_t sig[KP_ES256_SIG_LEN]);
/* Verifies with the key's own public half. */
int  kp_key_verify(const kp_key *key, const uint8_t hash[KP_SHA256_LEN],
                   const uint8_t sig[KP_ES256_SIG_LEN]);
void kp_key_free(kp_key *key);
/* Added: a key from its raw private scalar d (big-endian, 1 <= d < n), e.g. for test
 * vectors. KP_CRYPTO_E_INVAL if d is out of range. */
int  kp_key_from_raw(kp_key **out, const uint8_t d[32]);
/* Threads: kp_key_sign / kp_key_verify may be called from one thread at a time per key;
 * different keys are independent. */

/* ---- X.509 certificates ---- */
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

/* ---- RSA-2048 and certificates of any key type (My Number card, JPKI) ---- */

/* An RSA private key (the JPKI test CA's, or a mock card's authentication key). */
typedef struct kp_rsa kp_rsa;
int  kp_rsa_generate(kp_rsa **out, unsigned bits);             /* 2048 for JPKI */
int  kp_rsa_load(kp_rsa **out, const char *path);              /* PEM or DER private key */
/* Added: the same from memory, PEM (NUL-terminated or not) or DER, e.g. a mock card's
 * auth.key as the HAL hands it to its RSA signer. Keys of 2048-4096 bits only. */
int  kp_rsa_parse(kp_rsa **out, const uint8_t *buf, size_t len);
int  kp_rsa_save(const kp_rsa *key, const char *path);         /* PEM, 0600, no overwrite */
/* RSA PKCS#1 v1.5 signature (RSASSA, block type 1) over the given DigestInfo bytes, as the
 * card's COMPUTE DIGITAL SIGNATURE (80 2A 00 80) does; sig gets the modulus size (256). */
int  kp_rsa_sign_digestinfo(const kp_rsa *key, const uint8_t *digest_info, size_t di_len,
                            uint8_t *sig, size_t sig_cap, size_t *sig_len);
void kp_rsa_free(kp_rsa *key);

/* A self-signed RSA CA and an RSA end-entity certificate (keyUsage digitalSignature), with
 * explicit validity (Unix seconds); written as DER when out_path ends in ".der", else PEM. */
int  kp_cert_create_ca_rsa(const kp_rsa *ca_key, const char *cn, int64_t not_before,
                           int64_t not_after, const char *out_path);
int  kp_cert_issue_rsa(const kp_rsa *ca_key, const kp_cert *ca_cert, const kp_rsa *subject_key,
                       const char *cn, int64_t serial, int64_t not_before, int64_t not_after,
                       const char *out_path);
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

/* The last mbedTLS error text of this thread (for logs), "" when none. */
const char *kp_crypto_last_error(void);

#endif
