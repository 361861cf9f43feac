/* SPDX-License-Identifier: Apache-2.0 */
/* kippu crypto: error texts and the thread's last error, which every file of crypto/
 * records its failures in (for logs: library code never prints). */
#include "kp_crypto_err.h"
#include "crypto_int.h"

#include <stdarg.h>
#include <stdio.h>
#include <string.h>

#include <mbedtls/asn1.h>
#include <mbedtls/bignum.h>
#include <mbedtls/ctr_drbg.h>
#include <mbedtls/ecp.h>
#include <mbedtls/entropy.h>
#include <mbedtls/error.h>
#include <mbedtls/md.h>
#include <mbedtls/pem.h>
#include <mbedtls/pk.h>
#include <mbedtls/x509.h>
#include <mbedtls/x509_crt.h>

static _Thread_local char last_error[200];

const char *kp_crypto_strerror(int rc)
{
	switch (rc) {
	case KP_CRYPTO_OK:         return "ok";
	case KP_CRYPTO_E_INVAL:    return "invalid argument";
	case KP_CRYPTO_E_NOMEM:    return "out of memory";
	case KP_CRYPTO_E_IO:       return "file could not be read or written";
	case KP_CRYPTO_E_PARSE:    return "key or certificate does not parse";
	case KP_CRYPTO_E_VERIFY:   return "signature does not verify";
	case KP_CRYPTO_E_CHAIN:    return "certificate not issued by the CA, or not valid now";
	case KP_CRYPTO_E_KEYTYPE:  return "wrong key type (not ECDSA P-256, or not RSA)";
	case KP_CRYPTO_E_RNG:      return "random generator failed";
	case KP_CRYPTO_E_EXISTS:   return "refusing to overwrite an existing key file";
	case KP_CRYPTO_E_INTERNAL: return "mbedTLS failed";
	default:                   return "unknown crypto error";
	}
}

const char *kp_crypto_last_error(void)
{
	return last_error;
}

int kp_crypto_fail_mbed(int rc, int ret)
{
	if (ret != 0)
		mbedtls_strerror(ret, last_error, sizeof(last_error));
	else
		snprintf(last_error, sizeof(last_error), "%s", kp_crypto_strerror(rc));
	return rc;
}

/* Allocation failures keep their own code so callers can tell them from bugs. */
int kp_crypto_fail_map(int ret)
{
	switch (ret) {
	case MBEDTLS_ERR_MPI_ALLOC_FAILED:
	case MBEDTLS_ERR_ECP_ALLOC_FAILED:
	case MBEDTLS_ERR_PK_ALLOC_FAILED:
	case MBEDTLS_ERR_X509_ALLOC_FAILED:
	case MBEDTLS_ERR_ASN1_ALLOC_FAILED:
	case MBEDTLS_ERR_PEM_ALLOC_FAILED:
	case MBEDTLS_ERR_MD_ALLOC_FAILED:
		return kp_crypto_fail_mbed(KP_CRYPTO_E_NOMEM, ret);
	case MBEDTLS_ERR_CTR_DRBG_ENTROPY_SOURCE_FAILED:
	case MBEDTLS_ERR_ENTROPY_SOURCE_FAILED:
		return kp_crypto_fail_mbed(KP_CRYPTO_E_RNG, ret);
	default:
		return kp_crypto_fail_mbed(KP_CRYPTO_E_INTERNAL, ret);
	}
}

int kp_crypto_fail_parse(int ret, int alloc_ret)
{
	if (ret == alloc_ret)
		return kp_crypto_fail_mbed(KP_CRYPTO_E_NOMEM, ret);
	/* > 0: some certificates of a PEM bundle did not parse */
	return kp_crypto_fail_mbed(KP_CRYPTO_E_PARSE, ret > 0 ? 0 : ret);
}

int kp_crypto_fail_vtext(int rc, const char *fmt, va_list ap)
{
	/* A long text (a path) is cut short: the message is for logs only. */
	if (vsnprintf(last_error, sizeof(last_error), fmt, ap) < 0)
		last_error[0] = '\0';
	return rc;
}

int kp_crypto_fail_text(int rc, const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	kp_crypto_fail_vtext(rc, fmt, ap);
	va_end(ap);
	return rc;
}

/* mbedtls_x509_crt_verify_info ends each line with '\n': one line per problem, joined. */
void kp_crypto_verify_text(char *out, size_t cap, uint32_t flags)
{
	size_t n;
	char *p;

	/* On overflow mbedTLS leaves the lines that fit: keep them. */
	if (mbedtls_x509_crt_verify_info(out, cap, "", flags) < 0 && out[0] == '\0')
		snprintf(out, cap, "certificate verification failed (flags 0x%08x)", (unsigned)flags);
	n = strlen(out);
	while (n > 0 && out[n - 1] == '\n')
		out[--n] = '\0';
	for (p = out; *p != '\0'; p++)
		if (*p == '\n')
			*p = ';';
}
