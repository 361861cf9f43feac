/* SPDX-License-Identifier: Apache-2.0 */
/* kippu crypto: ECDSA P-256 keys and ES256 signatures (r || s, deterministic k). */
#include "kp_key.h"
#include "crypto_int.h"

#include <stdlib.h>
#include <string.h>

#include <mbedtls/bignum.h>
#include <mbedtls/ecdsa.h>
#include <mbedtls/pem.h>

#define PEM_BUF_SIZE   4096             /* a P-256 public key fits */
/* Private keys: sized for RSA-4096, the largest key we write. */
#define PRIV_DER_MAX   2600             /* an RSA-4096 RSAPrivateKey is about 2350 bytes */
#define PRIV_PEM_MAX   3800

struct kp_key {
	mbedtls_pk_context pk;
};

mbedtls_pk_context *kp_crypto_key_pk(const kp_key *key)
{
	return key == NULL ? NULL : (mbedtls_pk_context *)&key->pk;
}

mbedtls_ecp_keypair *kp_crypto_pk_p256(const mbedtls_pk_context *pk)
{
	mbedtls_pk_type_t t = mbedtls_pk_get_type(pk);
	mbedtls_ecp_keypair *ec;

	if (t != MBEDTLS_PK_ECKEY && t != MBEDTLS_PK_ECDSA)
		return NULL;
	ec = mbedtls_pk_ec(*pk);
	if (ec == NULL || ec->grp.id != MBEDTLS_ECP_DP_SECP256R1)
		return NULL;
	return ec;
}

/* mbedTLS caches a table of multiples of the base point in the group on first use.
 * Filling it now, while the object is still private to its creator, means later
 * signs, verifies and handshakes only read the group. */
int kp_crypto_ec_warm(mbedtls_ecp_keypair *ec, int (*f_rng)(void *, unsigned char *, size_t),
                      void *p_rng)
{
	mbedtls_ecp_point r;
	mbedtls_mpi one;
	int ret;

	mbedtls_ecp_point_init(&r);
	mbedtls_mpi_init(&one);
	ret = mbedtls_mpi_lset(&one, 1);
	if (ret == 0)
		ret = mbedtls_ecp_mul(&ec->grp, &r, &one, &ec->grp.G, f_rng, p_rng);
	mbedtls_mpi_free(&one);
	mbedtls_ecp_point_free(&r);
	return ret;
}

/* Checks a freshly parsed private key: P-256, and the stored public point is d·G
 * (which also fills the base-point table, see kp_crypto_ec_warm). */
static int key_check_loaded(kp_key *key)
{
	mbedtls_ecp_keypair *ec = kp_crypto_pk_p256(&key->pk);
	mbedtls_ecp_point q;
	int rc = KP_CRYPTO_OK;
	int ret;

	mbedtls_ecp_point_init(&q);
	if (ec == NULL) {
		rc = kp_crypto_fail_mbed(KP_CRYPTO_E_KEYTYPE, 0);
		goto out;
	}
	ret = mbedtls_ecp_mul(&ec->grp, &q, &ec->d, &ec->grp.G, kp_crypto_rng, NULL);
	if (ret != 0) {
		rc = kp_crypto_fail_map(ret);
		goto out;
	}
	if (mbedtls_ecp_point_cmp(&q, &ec->Q) != 0) {
		rc = kp_crypto_fail_mbed(KP_CRYPTO_E_PARSE, 0);
		goto out;
	}
out:
	mbedtls_ecp_point_free(&q);
	return rc;
}

static kp_key *key_new(void)
{
	kp_key *key = calloc(1, sizeof(*key));

	if (key != NULL)
		mbedtls_pk_init(&key->pk);
	return key;
}

void kp_key_free(kp_key *key)
{
	if (key == NULL)
		return;
	mbedtls_pk_free(&key->pk);     /* mbedTLS zeroizes the private scalar's limbs */
	kp_zeroize(key, sizeof(*key));
	free(key);
}

/* A key set up for an EC key pair, to be filled. */
static int key_new_ec(kp_key **out)
{
	kp_key *key = key_new();
	int ret;

	*out = NULL;
	if (key == NULL)
		return KP_CRYPTO_E_NOMEM;
	ret = mbedtls_pk_setup(&key->pk, mbedtls_pk_info_from_type(MBEDTLS_PK_ECKEY));
	if (ret != 0) {
		kp_key_free(key);
		return kp_crypto_fail_map(ret);
	}
	*out = key;
	return KP_CRYPTO_OK;
}

int kp_key_generate(kp_key **out)
{
	kp_key *key = NULL;
	int rc;
	int ret;

	if (out == NULL)
		return KP_CRYPTO_E_INVAL;
	*out = NULL;
	rc = key_new_ec(&key);
	if (rc != KP_CRYPTO_OK)
		return rc;
	/* computing Q = d·G fills the base-point table too */
	ret = mbedtls_ecp_gen_key(MBEDTLS_ECP_DP_SECP256R1, mbedtls_pk_ec(key->pk), kp_crypto_rng,
	                          NULL);
	if (ret != 0) {
		kp_key_free(key);
		return kp_crypto_fail_map(ret);
	}
	*out = key;
	return KP_CRYPTO_OK;
}

int kp_key_from_raw(kp_key **out, const uint8_t d[32])
{
	mbedtls_ecp_keypair *ec;
	kp_key *key = NULL;
	int rc;
	int ret;

	if (out == NULL || d == NULL)
		return KP_CRYPTO_E_INVAL;
	*out = NULL;
	rc = key_new_ec(&key);
	if (rc != KP_CRYPTO_OK)
		goto out;
	ec = mbedtls_pk_ec(key->pk);
	ret = mbedtls_ecp_group_load(&ec->grp, MBEDTLS_ECP_DP_SECP256R1);
	if (ret == 0)
		ret = mbedtls_mpi_read_binary(&ec->d, d, 32);
	if (ret != 0) {
		rc = kp_crypto_fail_map(ret);
		goto out;
	}
	ret = mbedtls_ecp_check_privkey(&ec->grp, &ec->d);   /* 1 <= d < n */
	if (ret != 0) {
		rc = kp_crypto_fail_mbed(KP_CRYPTO_E_INVAL, ret);
		goto out;
	}
	ret = mbedtls_ecp_mul(&ec->grp, &ec->Q, &ec->d, &ec->grp.G, kp_crypto_rng, NULL);
	if (ret != 0) {
		rc = kp_crypto_fail_map(ret);
		goto out;
	}
	*out = key;
	key = NULL;
out:
	kp_key_free(key);
	return rc;
}

int kp_crypto_pk_parse(mbedtls_pk_context *pk, const unsigned char *buf, size_t buf_len)
{
	int ret = mbedtls_pk_parse_key(pk, buf, buf_len, NULL, 0);

	if (ret != 0)
		return kp_crypto_fail_parse(ret, MBEDTLS_ERR_PK_ALLOC_FAILED);
	return KP_CRYPTO_OK;
}

/* kp_crypto_parse_fn for kp_key_load: out is a kp_key **. */
static int key_parse_buf(void *out, const unsigned char *buf, size_t buf_len)
{
	kp_key *key = key_new();
	int rc = key != NULL ? kp_crypto_pk_parse(&key->pk, buf, buf_len) : KP_CRYPTO_E_NOMEM;

	if (rc == KP_CRYPTO_OK)
		rc = key_check_loaded(key);
	if (rc == KP_CRYPTO_OK) {
		*(kp_key **)out = key;
		key = NULL;
	}
	kp_key_free(key);
	return rc;
}

int kp_key_load(kp_key **out, const char *path)
{
	if (out == NULL || path == NULL)
		return KP_CRYPTO_E_INVAL;
	*out = NULL;
	return kp_crypto_load_file(path, key_parse_buf, out);
}

/* DER and PEM are built here rather than by mbedtls_pk_write_key_pem, so that both copies
 * of the key are in buffers we wipe. */
int kp_crypto_pk_save_private(mbedtls_pk_context *pk, const char *header, const char *footer,
                              const char *path)
{
	unsigned char der[PRIV_DER_MAX];
	unsigned char pem[PRIV_PEM_MAX];
	size_t pem_len = 0;
	int rc = KP_CRYPTO_OK;
	int ret;

	ret = mbedtls_pk_write_key_der(pk, der, sizeof(der));
	if (ret < 0) {
		rc = kp_crypto_fail_map(ret);
		goto out;
	}
	/* mbedtls_pk_write_key_der writes at the end of the buffer. */
	ret = mbedtls_pem_write_buffer(header, footer, der + sizeof(der) - (size_t)ret, (size_t)ret,
	                               pem, sizeof(pem), &pem_len);
	if (ret != 0) {
		rc = kp_crypto_fail_map(ret);
		goto out;
	}
	/* pem_len counts the NUL that mbedTLS appends. */
	rc = kp_crypto_file_write_secret(path, pem, pem_len > 0 ? pem_len - 1 : 0);
out:
	kp_zeroize(der, sizeof(der));
	kp_zeroize(pem, sizeof(pem));
	return rc;
}

int kp_key_save(const kp_key *key, const char *path)
{
	if (key == NULL || path == NULL)
		return KP_CRYPTO_E_INVAL;
	return kp_crypto_pk_save_private(kp_crypto_key_pk(key), "-----BEGIN EC PRIVATE KEY-----\n",
	                                 "-----END EC PRIVATE KEY-----\n", path);
}

int kp_key_save_public(const kp_key *key, const char *path)
{
	unsigned char pem[PEM_BUF_SIZE];
	int ret;

	if (key == NULL || path == NULL)
		return KP_CRYPTO_E_INVAL;
	ret = mbedtls_pk_write_pubkey_pem(kp_crypto_key_pk(key), pem, sizeof(pem));
	if (ret != 0)
		return kp_crypto_fail_map(ret);
	return kp_crypto_file_write_public(path, pem, strlen((const char *)pem));
}

/* Hot path of every tap: no allocation besides the two result integers. Reads the key
 * only (kp_crypto_ec_warm), but the contract is one thread at a time per key. */
int kp_key_sign(const kp_key *key, const uint8_t hash[KP_SHA256_LEN],
                uint8_t sig[KP_ES256_SIG_LEN])
{
	mbedtls_ecp_keypair *ec;
	mbedtls_mpi r, s;
	int rc = KP_CRYPTO_OK;
	int ret;

	if (key == NULL || hash == NULL || sig == NULL)
		return KP_CRYPTO_E_INVAL;
	mbedtls_mpi_init(&r);
	mbedtls_mpi_init(&s);
	ec = kp_crypto_pk_p256(&key->pk);
	if (ec == NULL) {
		rc = KP_CRYPTO_E_KEYTYPE;
		goto out;
	}
	/* k from RFC 6979; the RNG only blinds the scalar multiplication. */
	ret = mbedtls_ecdsa_sign_det_ext(&ec->grp, &r, &s, &ec->d, hash, KP_SHA256_LEN,
	                                 MBEDTLS_MD_SHA256, kp_crypto_rng, NULL);
	if (ret == 0)
		ret = mbedtls_mpi_write_binary(&r, sig, 32);        /* left-pads with zeros */
	if (ret == 0)
		ret = mbedtls_mpi_write_binary(&s, sig + 32, 32);
	if (ret != 0) {
		rc = kp_crypto_fail_map(ret);
		goto out;
	}
out:
	if (rc != KP_CRYPTO_OK)
		memset(sig, 0, KP_ES256_SIG_LEN);
	mbedtls_mpi_free(&r);
	mbedtls_mpi_free(&s);
	return rc;
}

int kp_crypto_ec_verify(mbedtls_ecp_keypair *ec, const uint8_t hash[KP_SHA256_LEN],
                        const uint8_t sig[KP_ES256_SIG_LEN])
{
	mbedtls_mpi r, s;
	int rc = KP_CRYPTO_OK;
	int ret;

	mbedtls_mpi_init(&r);
	mbedtls_mpi_init(&s);
	ret = mbedtls_mpi_read_binary(&r, sig, 32);
	if (ret == 0)
		ret = mbedtls_mpi_read_binary(&s, sig + 32, 32);
	if (ret != 0) {
		rc = kp_crypto_fail_map(ret);
		goto out;
	}
	ret = mbedtls_ecdsa_verify(&ec->grp, hash, KP_SHA256_LEN, &ec->Q, &r, &s);
	if (ret == MBEDTLS_ERR_ECP_VERIFY_FAILED || ret == MBEDTLS_ERR_ECP_BAD_INPUT_DATA) {
		/* r or s out of range is a bad signature */
		rc = kp_crypto_fail_mbed(KP_CRYPTO_E_VERIFY, ret);
		goto out;
	}
	if (ret != 0) {
		rc = kp_crypto_fail_map(ret);
		goto out;
	}
out:
	mbedtls_mpi_free(&r);
	mbedtls_mpi_free(&s);
	return rc;
}

int kp_key_verify(const kp_key *key, const uint8_t hash[KP_SHA256_LEN],
                  const uint8_t sig[KP_ES256_SIG_LEN])
{
	mbedtls_ecp_keypair *ec;

	if (key == NULL || hash == NULL || sig == NULL)
		return KP_CRYPTO_E_INVAL;
	ec = kp_crypto_pk_p256(&key->pk);
	if (ec == NULL)
		return KP_CRYPTO_E_KEYTYPE;
	return kp_crypto_ec_verify(ec, hash, sig);
}
