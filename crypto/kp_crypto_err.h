/* SPDX-License-Identifier: Apache-2.0 */
/* kippu crypto: the error codes that every crypto function returns, and their texts. */
#ifndef KP_CRYPTO_ERR_H
#define KP_CRYPTO_ERR_H

#include <stddef.h>

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

/* The last mbedTLS error text of this thread (for logs), "" when none. */
const char *kp_crypto_last_error(void);

/* Whether the file a person named can be read, asked before a loader (or mbedTLS) sees it:
 * 0 when path opens for reading as a regular file; else -1 with "cannot read WHAT PATH: WHY"
 * in err, WHY in plain words ("No such file or directory", "Permission denied", "it is a
 * folder"). what names the file's role ("terminal key", "CA certificate"). */
int kp_file_unreadable(const char *what, const char *path, char *err, size_t cap);

#endif
