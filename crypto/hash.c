/* SPDX-License-Identifier: Apache-2.0 */
/* kippu crypto: SHA-256, HMAC-SHA-256, wiping and constant-time comparison. */
#include "kp_hash.h"
#include "crypto_int.h"

#include <mbedtls/constant_time.h>
#include <mbedtls/md.h>
#include <mbedtls/platform_util.h>
#include <mbedtls/sha256.h>

void kp_zeroize(void *p, size_t len)
{
	if (p != NULL && len > 0)
		mbedtls_platform_zeroize(p, len);
}

int kp_memcmp_ct(const void *a, const void *b, size_t len)
{
	if (len == 0)
		return 0;
	return mbedtls_ct_memcmp(a, b, len) != 0;
}

int kp_sha256(const void *data, size_t len, uint8_t out[KP_SHA256_LEN])
{
	static const unsigned char empty[1];
	int ret;

	if ((data == NULL && len > 0) || out == NULL)
		return KP_CRYPTO_E_INVAL;
	ret = mbedtls_sha256_ret(len > 0 ? data : empty, len, out, 0);
	if (ret != 0)
		return kp_crypto_fail_map(ret);
	return KP_CRYPTO_OK;
}

int kp_hmac_sha256(const uint8_t *key, size_t key_len, const void *msg, size_t msg_len,
                   uint8_t out[KP_SHA256_LEN])
{
	static const unsigned char empty[1];
	int ret;

	if ((key == NULL && key_len > 0) || (msg == NULL && msg_len > 0) || out == NULL)
		return KP_CRYPTO_E_INVAL;
	ret = mbedtls_md_hmac(mbedtls_md_info_from_type(MBEDTLS_MD_SHA256),
	                      key_len > 0 ? key : empty, key_len,
	                      msg_len > 0 ? msg : empty, msg_len, out);
	if (ret != 0)
		return kp_crypto_fail_map(ret);
	return KP_CRYPTO_OK;
}
