/* What crypto.c lends tls.c: the parsed certificate behind a kp_cert and the profile
 * check on a parsed certificate, so both ends of TLS judge purposes by the one rule.
 * Internal to crypto/ (it includes mbedTLS): no other folder may include it. */
#ifndef KP_CRYPTO_INT_H
#define KP_CRYPTO_INT_H

#include <stddef.h>
#include <mbedtls/x509_crt.h>
#include "kp_crypto.h"

const mbedtls_x509_crt *kp_crypto_cert_crt(const kp_cert *cert);
/* kp_cert_check_profile on a parsed certificate; who names it in err ("server certificate"). */
int kp_crypto_crt_check_profile(const mbedtls_x509_crt *crt, enum kp_cert_profile profile,
                                const char *who, char *err, size_t err_cap);

#endif
