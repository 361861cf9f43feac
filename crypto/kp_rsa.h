/* SPDX-License-Identifier: Apache-2.0 */
/* kippu crypto: RSA-2048 keys and RSA certificates (My Number card, JPKI). */
#ifndef KP_RSA_H
#define KP_RSA_H

#include <stddef.h>
#include <stdint.h>
#include "kp_crypto_err.h"
#include "kp_cert.h"

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

#endif
