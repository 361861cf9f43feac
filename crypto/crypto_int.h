/* SPDX-License-Identifier: Apache-2.0 */
/* What the files of crypto/ lend each other: error recording (errors.c), key and
 * certificate files (files.c), the DRBG (rng.c), P-256 helpers (key.c) and the parsed
 * certificate, its profile check and the certificate writer (cert.c), so that TLS and
 * RSA judge and write by the same rules. Internal to crypto/ (it includes mbedTLS): no
 * other folder may include it. */
#ifndef KP_CRYPTO_INT_H
#define KP_CRYPTO_INT_H

#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include <mbedtls/ctr_drbg.h>
#include <mbedtls/ecp.h>
#include <mbedtls/entropy.h>
#include <mbedtls/pk.h>
#include <mbedtls/x509_crt.h>

#include "kp_crypto.h"

#define KP_CRYPTO_CN_MAX 64             /* X.509 ub-common-name */

/* ---- errors.c: the thread's last error (kp_crypto_last_error) ---- */

/* Records mbedTLS's text for ret (when non-zero, else rc's text) and returns rc. */
int kp_crypto_fail_mbed(int rc, int ret);
/* The same, rc chosen from ret: out of memory, random generator, or internal. */
int kp_crypto_fail_map(int ret);
/* For a key or certificate that does not parse: KP_CRYPTO_E_NOMEM when ret is alloc_ret
 * (the parsing module's allocation failure), else KP_CRYPTO_E_PARSE. */
int kp_crypto_fail_parse(int ret, int alloc_ret);
/* Records a text of our own and returns rc. */
int kp_crypto_fail_text(int rc, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
int kp_crypto_fail_vtext(int rc, const char *fmt, va_list ap)
	__attribute__((format(printf, 2, 0)));
/* mbedtls_x509_crt_verify_info's lines for flags, joined by ';' into out. */
void kp_crypto_verify_text(char *out, size_t cap, uint32_t flags);

/* ---- files.c ---- */

/* Parses buf (buf_len counts the NUL of PEM) into *out, a pointer to the caller's handle. */
typedef int kp_crypto_parse_fn(void *out, const unsigned char *buf, size_t buf_len);
/* Reads the key or certificate file at path and parses it; the copy read is wiped. */
int kp_crypto_load_file(const char *path, kp_crypto_parse_fn *parse, void *out);
/* Parses DER or PEM (NUL-terminated or not, len > 0) from memory. */
int kp_crypto_parse_mem(const uint8_t *buf, size_t len, kp_crypto_parse_fn *parse, void *out);
/* Creates path with mode 0600 and buf in it; KP_CRYPTO_E_EXISTS if anything is there. */
int kp_crypto_file_write_secret(const char *path, const void *buf, size_t len);
/* Replaces path atomically with buf, mode 0644: public data only. */
int kp_crypto_file_write_public(const char *path, const void *buf, size_t len);

/* ---- rng.c: CTR_DRBG seeded from the OS, reseeded in a forked child ---- */

struct kp_crypto_drbg {
	mbedtls_entropy_context entropy;
	mbedtls_ctr_drbg_context ctr;
	pid_t pid;                            /* the process that last drew */
};
void kp_crypto_drbg_init(struct kp_crypto_drbg *d);
void kp_crypto_drbg_free(struct kp_crypto_drbg *d);       /* wipes the state */
/* mbedTLS's code on failure; the context is then as after init. */
int  kp_crypto_drbg_seed(struct kp_crypto_drbg *d, const char *pers);
/* Fills buf from a seeded d; the caller holds the lock that guards d. mbedTLS's code. */
int  kp_crypto_drbg_draw(struct kp_crypto_drbg *d, unsigned char *buf, size_t len);
/* kp_random in mbedTLS's RNG callback shape (ctx unused). */
int  kp_crypto_rng(void *ctx, unsigned char *buf, size_t len);

/* ---- key.c ---- */

/* The key's pk (NULL for NULL); mbedTLS 2.28 takes non-const contexts even to read. */
mbedtls_pk_context *kp_crypto_key_pk(const kp_key *key);
/* The pk's EC key pair if it is an ECDSA-capable P-256 key, else NULL. */
mbedtls_ecp_keypair *kp_crypto_pk_p256(const mbedtls_pk_context *pk);
/* Fills the group's table of base-point multiples (see key.c); mbedTLS's code. */
int kp_crypto_ec_warm(mbedtls_ecp_keypair *ec, int (*f_rng)(void *, unsigned char *, size_t),
                      void *p_rng);
/* Verifies an ES256 r||s signature with ec's public point. */
int kp_crypto_ec_verify(mbedtls_ecp_keypair *ec, const uint8_t hash[KP_SHA256_LEN],
                        const uint8_t sig[KP_ES256_SIG_LEN]);
/* Parses a private key (PEM with its NUL counted, or DER) into a pk fresh from init. */
int kp_crypto_pk_parse(mbedtls_pk_context *pk, const unsigned char *buf, size_t buf_len);
/* Writes pk's private key as PEM (mode 0600, no overwrite) between header and footer. */
int kp_crypto_pk_save_private(mbedtls_pk_context *pk, const char *header, const char *footer,
                              const char *path);

/* ---- cert.c ---- */

const mbedtls_x509_crt *kp_crypto_cert_crt(const kp_cert *cert);
/* kp_cert_check_profile on a parsed certificate; who names it in err ("server certificate"). */
int kp_crypto_crt_check_profile(const mbedtls_x509_crt *crt, enum kp_cert_profile profile,
                                const char *who, char *err, size_t err_cap);
/* The subject's commonName into out: KP_CRYPTO_E_INVAL when it does not fit, and
 * KP_CRYPTO_E_PARSE when there is none or it holds a NUL. */
int kp_crypto_crt_cn(const mbedtls_x509_crt *crt, char *out, size_t cap);

/* What one certificate is made of. */
struct kp_crypto_cert_spec {
	mbedtls_pk_context *issuer_pk;
	const kp_cert *issuer_cert;           /* NULL: a self-signed CA */
	mbedtls_pk_context *subject_pk;
	int p256;                             /* both keys must be ECDSA P-256 */
	const char *cn;                       /* subject "CN=cn,O=org" */
	const char *org;
	const unsigned char *serial;          /* big-endian, positive; NULL: a random one */
	size_t serial_len;
	int64_t not_before, not_after;        /* Unix seconds */
	const char *out_path;
	int der;                              /* DER file, else PEM */
	enum kp_cert_profile profile;         /* 0 (CA, JPKI) or KP_CERT_NO_EKU: no extendedKeyUsage */
};
/* Checks the spec (KP_CRYPTO_E_INVAL for a missing key or path, a bad CN or window, or an
 * issuer that is not a CA or not the issuer key's; KP_CRYPTO_E_KEYTYPE) and writes the
 * certificate; the issuer is the CA's subject, byte for byte. */
int kp_crypto_cert_write(const struct kp_crypto_cert_spec *c);

#endif
