/* SPDX-License-Identifier: Apache-2.0 */
/* kippu crypto: RSA keys and RSA certificates for JPKI (the test CA's and the mock
 * card's), on mbedTLS 2.28. Certificates are written by cert.c's one writer. */
#include "kp_rsa.h"
#include "crypto_int.h"

#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include <mbedtls/rsa.h>

#define RSA_BITS_MIN   2048
#define RSA_BITS_MAX   4096
#define RSA_EXPONENT   65537
#define PKCS1_V15_OVERHEAD 11           /* 00 01 FF..FF (8 at least) 00 */

struct kp_rsa {
	mbedtls_pk_context pk;
};

/* mbedTLS 2.28 takes non-const contexts even where it only reads them. */
static mbedtls_pk_context *rsa_pk(const kp_rsa *key)
{
	return key == NULL ? NULL : (mbedtls_pk_context *)&key->pk;
}

static kp_rsa *rsa_new(void)
{
	kp_rsa *key = calloc(1, sizeof(*key));

	if (key != NULL)
		mbedtls_pk_init(&key->pk);
	return key;
}

void kp_rsa_free(kp_rsa *key)
{
	if (key == NULL)
		return;
	mbedtls_pk_free(&key->pk);     /* mbedTLS zeroizes the private parts' limbs */
	kp_zeroize(key, sizeof(*key));
	free(key);
}

int kp_rsa_generate(kp_rsa **out, unsigned bits)
{
	kp_rsa *key = NULL;
	int rc = KP_CRYPTO_OK;
	int ret;

	if (out == NULL)
		return KP_CRYPTO_E_INVAL;
	*out = NULL;
	if (bits != 2048 && bits != 3072 && bits != 4096)
		return KP_CRYPTO_E_INVAL;
	key = rsa_new();
	if (key == NULL) {
		rc = KP_CRYPTO_E_NOMEM;
		goto out;
	}
	ret = mbedtls_pk_setup(&key->pk, mbedtls_pk_info_from_type(MBEDTLS_PK_RSA));
	if (ret == 0)
		ret = mbedtls_rsa_gen_key(mbedtls_pk_rsa(key->pk), kp_crypto_rng, NULL, bits,
		                          RSA_EXPONENT);
	if (ret != 0) {
		rc = kp_crypto_fail_map(ret);
		goto out;
	}
	*out = key;
	key = NULL;
out:
	kp_rsa_free(key);
	return rc;
}

/* A parsed key must be RSA of a size we accept, with private parts that belong together
 * (else it would sign garbage). */
static int rsa_check_loaded(kp_rsa *key)
{
	size_t bits = mbedtls_pk_get_bitlen(&key->pk);
	int ret;

	if (mbedtls_pk_get_type(&key->pk) != MBEDTLS_PK_RSA || bits < RSA_BITS_MIN ||
	    bits > RSA_BITS_MAX)
		return kp_crypto_fail_text(KP_CRYPTO_E_KEYTYPE, "not an RSA key of %d to %d bits",
		                           RSA_BITS_MIN, RSA_BITS_MAX);
	ret = mbedtls_rsa_check_privkey(mbedtls_pk_rsa(key->pk));
	if (ret != 0)
		return kp_crypto_fail_mbed(KP_CRYPTO_E_PARSE, ret);
	return KP_CRYPTO_OK;
}

/* kp_crypto_parse_fn for RSA keys: out is a kp_rsa **. */
static int rsa_parse_buf(void *out, const unsigned char *buf, size_t buf_len)
{
	kp_rsa *key = rsa_new();
	int rc = key != NULL ? kp_crypto_pk_parse(&key->pk, buf, buf_len) : KP_CRYPTO_E_NOMEM;

	if (rc == KP_CRYPTO_OK)
		rc = rsa_check_loaded(key);
	if (rc == KP_CRYPTO_OK) {
		*(kp_rsa **)out = key;
		key = NULL;
	}
	kp_rsa_free(key);
	return rc;
}

int kp_rsa_load(kp_rsa **out, const char *path)
{
	if (out == NULL || path == NULL)
		return KP_CRYPTO_E_INVAL;
	*out = NULL;
	return kp_crypto_load_file(path, rsa_parse_buf, out);
}

int kp_rsa_parse(kp_rsa **out, const uint8_t *buf, size_t len)
{
	if (out == NULL || buf == NULL || len == 0)
		return KP_CRYPTO_E_INVAL;
	*out = NULL;
	return kp_crypto_parse_mem(buf, len, rsa_parse_buf, out);
}

int kp_rsa_save(const kp_rsa *key, const char *path)
{
	if (key == NULL || path == NULL)
		return KP_CRYPTO_E_INVAL;
	return kp_crypto_pk_save_private(rsa_pk(key), "-----BEGIN RSA PRIVATE KEY-----\n",
	                                 "-----END RSA PRIVATE KEY-----\n", path);
}

/* RSASSA-PKCS1-v1_5 with the DigestInfo given as is: mbedTLS's MD_NONE mode pads
 * 00 01 FF.. 00 || data, exactly what a JPKI card's COMPUTE DIGITAL SIGNATURE does. It also
 * checks the result with the public key before returning it (a CRT fault would leak the key). */
int kp_rsa_sign_digestinfo(const kp_rsa *key, const uint8_t *digest_info, size_t di_len,
                           uint8_t *sig, size_t sig_cap, size_t *sig_len)
{
	mbedtls_rsa_context *rsa;
	size_t n;
	int ret;

	if (sig_len != NULL)
		*sig_len = 0;
	if (key == NULL || digest_info == NULL || di_len == 0 || sig == NULL || sig_len == NULL)
		return KP_CRYPTO_E_INVAL;
	rsa = mbedtls_pk_rsa(key->pk);
	n = mbedtls_rsa_get_len(rsa);
	if (sig_cap < n || di_len > n - PKCS1_V15_OVERHEAD)
		return KP_CRYPTO_E_INVAL;
	ret = mbedtls_rsa_rsassa_pkcs1_v15_sign(rsa, kp_crypto_rng, NULL, MBEDTLS_RSA_PRIVATE,
	                                        MBEDTLS_MD_NONE, (unsigned)di_len, digest_info,
	                                        sig);
	if (ret != 0) {
		kp_zeroize(sig, n);
		return kp_crypto_fail_map(ret);
	}
	*sig_len = n;
	return KP_CRYPTO_OK;
}

/* ---- RSA certificates ---- */

static int path_is_der(const char *path)
{
	size_t n = strlen(path);

	return n >= 4 && strcasecmp(path + n - 4, ".der") == 0;
}

/* serial NULL: a random one. */
static int cert_write_rsa(const kp_rsa *issuer_key, const kp_cert *issuer_cert,
                          const kp_rsa *subject_key, const char *cn,
                          const unsigned char *serial, size_t serial_len, int64_t not_before,
                          int64_t not_after, const char *out_path)
{
	struct kp_crypto_cert_spec c = {
		.issuer_pk = rsa_pk(issuer_key),
		.issuer_cert = issuer_cert,
		.subject_pk = rsa_pk(subject_key),
		.cn = cn,
		.org = "JPKI test",
		.serial = serial,
		.serial_len = serial_len,
		.not_before = not_before,
		.not_after = not_after,
		.out_path = out_path,
		.der = out_path != NULL && path_is_der(out_path),
	};

	return kp_crypto_cert_write(&c);
}

int kp_cert_create_ca_rsa(const kp_rsa *ca_key, const char *cn, int64_t not_before,
                          int64_t not_after, const char *out_path)
{
	return cert_write_rsa(ca_key, NULL, ca_key, cn, NULL, 0, not_before, not_after, out_path);
}

int kp_cert_issue_rsa(const kp_rsa *ca_key, const kp_cert *ca_cert, const kp_rsa *subject_key,
                      const char *cn, int64_t serial, int64_t not_before, int64_t not_after,
                      const char *out_path)
{
	unsigned char be[8];

	if (ca_cert == NULL || serial < 1)  /* RFC 5280: a positive integer */
		return KP_CRYPTO_E_INVAL;
	for (int i = 7; i >= 0; i--) {
		be[i] = (unsigned char)(serial & 0xff);
		serial >>= 8;
	}
	return cert_write_rsa(ca_key, ca_cert, subject_key, cn, be, sizeof(be), not_before,
	                      not_after, out_path);
}
