/* SPDX-License-Identifier: Apache-2.0 */
/* Unit tests of crypto/'s RSA half (My Number card, JPKI): RSA-2048 key files, PKCS#1 v1.5
 * signatures over a DigestInfo checked against OpenSSL (`openssl dgst`, `pkeyutl
 * -verifyrecover`, and OpenSSL's own signature of the same message, which must be the same
 * bytes), RSA CA and end-entity certificates read back by `openssl x509` and `openssl verify`,
 * chain checks at a given time, key usage, and the raw issuer / serial / DER accessors.
 * The two RSA keys are generated once for the whole program (about a second each). */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "kp_crypto.h"
#include "testutil.h"

#define T0        INT64_C(1767225600)             /* 2026-01-01T00:00:00Z */
#define DAY       INT64_C(86400)
#define CA_NB     T0
#define CA_NA     (T0 + 3650 * DAY)
#define EE_NB     (T0 + DAY)
#define EE_NA     (T0 + 5 * 365 * DAY)
#define EE_SERIAL INT64_C(0x01020304)
#define KU_DIGITAL_SIGNATURE 0x80                 /* MBEDTLS_X509_KU_* values */
#define KU_KEY_CERT_SIGN     0x04
#define SHA256_DI_PREFIX "3031300D060960864801650304020105000420"

static kp_rsa *ca_key, *ee_key;
static kp_cert *ca_cert, *ee_cert;

/* ---- helpers ---- */

/* The output of a shell command (at most cap - 1 bytes), NUL-terminated. */
static void sh_out(char *out, size_t cap, const char *fmt, ...)
{
	char cmd[2048];
	va_list ap;
	FILE *p;
	size_t n;

	va_start(ap, fmt);
	vsnprintf(cmd, sizeof(cmd), fmt, ap);
	va_end(ap);
	p = popen(cmd, "r");
	assert_non_null(p);
	n = fread(out, 1, cap - 1, p);
	out[n] = '\0';
	assert_int_equal(pclose(p), 0);
}

/* SHA-256 DigestInfo of msg. */
static size_t digest_info(const char *msg, uint8_t di[51], uint8_t hash[KP_SHA256_LEN])
{
	size_t n = tu_hex(SHA256_DI_PREFIX, di, 19);

	assert_int_equal(kp_sha256(msg, strlen(msg), hash), KP_CRYPTO_OK);
	memcpy(di + n, hash, KP_SHA256_LEN);
	return n + KP_SHA256_LEN;
}

static int group_setup(void **state)
{
	tu_scratch_setup(state);
	if (kp_rsa_generate(&ca_key, 2048) != KP_CRYPTO_OK ||
	    kp_rsa_generate(&ee_key, 2048) != KP_CRYPTO_OK)
		return -1;
	if (kp_cert_create_ca_rsa(ca_key, "JPKI test CA", CA_NB, CA_NA, tu_tmp("ca.pem")) != 0 ||
	    kp_cert_load(&ca_cert, tu_tmp("ca.pem")) != 0)
		return -1;
	if (kp_cert_issue_rsa(ca_key, ca_cert, ee_key, "test card 1", EE_SERIAL, EE_NB, EE_NA,
	                      tu_tmp("ee.der")) != 0 ||
	    kp_cert_load(&ee_cert, tu_tmp("ee.der")) != 0)
		return -1;
	return 0;
}

static int group_teardown(void **state)
{
	kp_cert_free(ee_cert);
	kp_cert_free(ca_cert);
	kp_rsa_free(ee_key);
	kp_rsa_free(ca_key);
	return tu_scratch_teardown(state);
}

/* ---- keys ---- */

static void test_rsa_generate_args(void **state)
{
	kp_rsa *k = (kp_rsa *)1;

	(void)state;
	assert_int_equal(kp_rsa_generate(NULL, 2048), KP_CRYPTO_E_INVAL);
	assert_int_equal(kp_rsa_generate(&k, 1024), KP_CRYPTO_E_INVAL);
	assert_null(k);
	assert_int_equal(kp_rsa_generate(&k, 2047), KP_CRYPTO_E_INVAL);
	assert_int_equal(kp_rsa_generate(&k, 8192), KP_CRYPTO_E_INVAL);
	kp_rsa_free(NULL);
}

static void test_rsa_save_load(void **state)
{
	uint8_t di[51], hash[KP_SHA256_LEN], s1[256], s2[256], buf[4096];
	size_t di_len = digest_info("save and load", di, hash), n1 = 0, n2 = 0, len;
	const char *path = tu_tmp("ee.key");
	kp_rsa *k = NULL;
	struct stat st;

	(void)state;
	assert_int_equal(kp_rsa_save(ee_key, path), KP_CRYPTO_OK);
	assert_int_equal(stat(path, &st), 0);
	assert_int_equal(st.st_mode & 0777, 0600);
	len = tu_read_bytes(path, buf, sizeof(buf));
	assert_true(len > 32 && memcmp(buf, "-----BEGIN RSA PRIVATE KEY-----\n", 32) == 0);
	/* never overwritten, not even by the same key */
	assert_int_equal(kp_rsa_save(ee_key, path), KP_CRYPTO_E_EXISTS);
	assert_int_equal(kp_rsa_save(NULL, tu_tmp("x.key")), KP_CRYPTO_E_INVAL);

	/* PKCS#1 v1.5 is deterministic: the loaded key signs the same bytes */
	assert_int_equal(kp_rsa_sign_digestinfo(ee_key, di, di_len, s1, sizeof(s1), &n1), 0);
	assert_int_equal(kp_rsa_load(&k, path), KP_CRYPTO_OK);
	assert_int_equal(kp_rsa_sign_digestinfo(k, di, di_len, s2, sizeof(s2), &n2), 0);
	assert_int_equal(n1, 256);
	assert_int_equal(n2, 256);
	assert_memory_equal(s1, s2, 256);
	kp_rsa_free(k);
	k = NULL;

	/* from memory: PEM without and with its NUL, and DER */
	assert_int_equal(kp_rsa_parse(&k, buf, len), KP_CRYPTO_OK);
	kp_rsa_free(k);
	buf[len] = '\0';
	assert_int_equal(kp_rsa_parse(&k, buf, len + 1), KP_CRYPTO_OK);
	kp_rsa_free(k);
	assert_int_equal(tu_sh("openssl rsa -in %s -outform DER -out %s 2>/dev/null", path,
	                       tu_tmp("ee.key.der")), 0);
	len = tu_read_bytes(tu_tmp("ee.key.der"), buf, sizeof(buf));
	assert_int_equal(buf[0], 0x30);
	assert_int_equal(kp_rsa_parse(&k, buf, len), KP_CRYPTO_OK);
	assert_int_equal(kp_rsa_sign_digestinfo(k, di, di_len, s2, sizeof(s2), &n2), 0);
	assert_memory_equal(s1, s2, 256);
	kp_rsa_free(k);
	k = NULL;
	assert_int_equal(kp_rsa_load(&k, tu_tmp("ee.key.der")), KP_CRYPTO_OK);
	kp_rsa_free(k);
	k = NULL;
	assert_int_equal(kp_rsa_parse(&k, buf, len / 2), KP_CRYPTO_E_PARSE);
	assert_null(k);
	assert_int_equal(kp_rsa_parse(&k, NULL, 10), KP_CRYPTO_E_INVAL);
	assert_int_equal(kp_rsa_parse(&k, buf, 0), KP_CRYPTO_E_INVAL);
}

static void test_rsa_load_refuses(void **state)
{
	kp_key *ec = NULL;
	kp_rsa *k = (kp_rsa *)1;

	(void)state;
	assert_int_equal(kp_rsa_load(&k, tu_tmp("missing.key")), KP_CRYPTO_E_IO);
	assert_null(k);
	assert_int_equal(kp_rsa_load(&k, tu_scratch), KP_CRYPTO_E_IO);        /* a folder */
	tu_write_bytes(tu_tmp("junk.key"), "-----BEGIN RSA PRIVATE KEY-----\nAAAA\n", 37);
	assert_int_equal(kp_rsa_load(&k, tu_tmp("junk.key")), KP_CRYPTO_E_PARSE);
	/* a P-256 key is not an RSA key, and an RSA key is not a P-256 key */
	assert_int_equal(kp_key_generate(&ec), KP_CRYPTO_OK);
	assert_int_equal(kp_key_save(ec, tu_tmp("ec.key")), KP_CRYPTO_OK);
	kp_key_free(ec);
	ec = NULL;
	assert_int_equal(kp_rsa_load(&k, tu_tmp("ec.key")), KP_CRYPTO_E_KEYTYPE);
	assert_int_equal(kp_rsa_save(ca_key, tu_tmp("ca.key")), KP_CRYPTO_OK);
	assert_int_equal(kp_key_load(&ec, tu_tmp("ca.key")), KP_CRYPTO_E_KEYTYPE);
	/* too short for JPKI */
	assert_int_equal(tu_sh("openssl genrsa -traditional -out %s 1024 2>/dev/null",
	                       tu_tmp("small.key")), 0);
	assert_int_equal(kp_rsa_load(&k, tu_tmp("small.key")), KP_CRYPTO_E_KEYTYPE);
	assert_null(k);
}

/* ---- signatures ---- */

static void test_rsa_sign_verify(void **state)
{
	uint8_t di[64], hash[KP_SHA256_LEN], other[KP_SHA256_LEN], sig[300], big[246];
	size_t di_len = digest_info("challenge from the terminal", di, hash), n = 0;
	kp_key *ec = NULL;

	(void)state;
	assert_int_equal(kp_rsa_sign_digestinfo(ee_key, di, di_len, sig, sizeof(sig), &n), 0);
	assert_int_equal(n, 256);
	assert_int_equal(kp_cert_verify_rsa_sha256(ee_cert, hash, sig, n), KP_CRYPTO_OK);
	/* another hash, a flipped bit, a short or long signature, another key */
	assert_int_equal(kp_sha256("other", 5, other), 0);
	assert_int_equal(kp_cert_verify_rsa_sha256(ee_cert, other, sig, n), KP_CRYPTO_E_VERIFY);
	assert_int_equal(kp_cert_verify_rsa_sha256(ee_cert, hash, sig, n - 1), KP_CRYPTO_E_VERIFY);
	assert_int_equal(kp_cert_verify_rsa_sha256(ee_cert, hash, sig, n + 1), KP_CRYPTO_E_VERIFY);
	sig[100] ^= 0x01;
	assert_int_equal(kp_cert_verify_rsa_sha256(ee_cert, hash, sig, n), KP_CRYPTO_E_VERIFY);
	sig[100] ^= 0x01;
	assert_int_equal(kp_cert_verify_rsa_sha256(ca_cert, hash, sig, n), KP_CRYPTO_E_VERIFY);
	memset(sig, 0xFF, 256);                               /* larger than the modulus */
	assert_int_equal(kp_cert_verify_rsa_sha256(ee_cert, hash, sig, n), KP_CRYPTO_E_VERIFY);
	assert_int_equal(kp_cert_verify_rsa_sha256(ee_cert, NULL, sig, n), KP_CRYPTO_E_INVAL);
	assert_int_equal(kp_cert_verify_rsa_sha256(NULL, hash, sig, n), KP_CRYPTO_E_INVAL);

	/* a DigestInfo of another hash is signed as given: the signature proves the bytes */
	memcpy(di, "\x30\x21\x30\x09\x06\x05\x2b\x0e\x03\x02\x1a\x05\x00\x04\x14", 15);
	assert_int_equal(kp_rsa_sign_digestinfo(ee_key, di, 35, sig, sizeof(sig), &n), 0);
	assert_int_equal(kp_cert_verify_rsa_sha256(ee_cert, hash, sig, n), KP_CRYPTO_E_VERIFY);

	/* length limits: 256 - 11 bytes at most, room for 256 */
	memset(big, 0x5A, sizeof(big));
	assert_int_equal(kp_rsa_sign_digestinfo(ee_key, big, 245, sig, 256, &n), KP_CRYPTO_OK);
	assert_int_equal(kp_rsa_sign_digestinfo(ee_key, big, 246, sig, 256, &n), KP_CRYPTO_E_INVAL);
	assert_int_equal(n, 0);
	assert_int_equal(kp_rsa_sign_digestinfo(ee_key, di, 51, sig, 255, &n), KP_CRYPTO_E_INVAL);
	assert_int_equal(kp_rsa_sign_digestinfo(ee_key, di, 0, sig, 256, &n), KP_CRYPTO_E_INVAL);
	assert_int_equal(kp_rsa_sign_digestinfo(NULL, di, 51, sig, 256, &n), KP_CRYPTO_E_INVAL);
	assert_int_equal(kp_rsa_sign_digestinfo(ee_key, di, 51, sig, 256, NULL), KP_CRYPTO_E_INVAL);

	/* ES256 with an RSA certificate, RSA with a P-256 certificate: wrong key type */
	assert_int_equal(kp_cert_verify(ee_cert, hash, sig), KP_CRYPTO_E_KEYTYPE);
	{
		kp_cert *ecc = NULL;

		assert_int_equal(kp_key_generate(&ec), 0);
		assert_int_equal(kp_cert_create_ca_validity(ec, "p256", T0, CA_NA, tu_tmp("ec.pem")),
		                 0);
		assert_int_equal(kp_cert_load(&ecc, tu_tmp("ec.pem")), 0);
		assert_int_equal(kp_cert_verify_rsa_sha256(ecc, hash, sig, 256), KP_CRYPTO_E_KEYTYPE);
		kp_cert_free(ecc);
		kp_key_free(ec);
	}
}

/* OpenSSL checks our signature, recovers the DigestInfo from it, and makes the same one. */
static void test_rsa_sign_openssl(void **state)
{
	const char *msg = "JPKI authentication challenge 0001";
	uint8_t di[51], hash[KP_SHA256_LEN], sig[256], other[512];
	size_t di_len = digest_info(msg, di, hash), n = 0;

	(void)state;
	tu_write_bytes(tu_tmp("msg.txt"), msg, strlen(msg));
	assert_int_equal(kp_rsa_sign_digestinfo(ee_key, di, di_len, sig, sizeof(sig), &n), 0);
	tu_write_bytes(tu_tmp("msg.sig"), sig, n);
	assert_int_equal(tu_sh("openssl x509 -inform DER -in %s -pubkey -noout > %s",
	                       tu_tmp("ee.der"), tu_tmp("ee.pub")), 0);
	assert_int_equal(tu_sh("openssl dgst -sha256 -verify %s -signature %s %s >/dev/null",
	                       tu_tmp("ee.pub"), tu_tmp("msg.sig"), tu_tmp("msg.txt")), 0);
	assert_int_equal(tu_sh("openssl pkeyutl -verifyrecover -pubin -inkey %s -in %s -out %s",
	                       tu_tmp("ee.pub"), tu_tmp("msg.sig"), tu_tmp("msg.rec")), 0);
	assert_int_equal(tu_read_bytes(tu_tmp("msg.rec"), other, sizeof(other)), di_len);
	assert_memory_equal(other, di, di_len);
	/* OpenSSL's own RSASSA-PKCS1-v1_5 signature of the message: the same 256 bytes */
	if (access(tu_tmp("ee.key"), F_OK) != 0)
		assert_int_equal(kp_rsa_save(ee_key, tu_tmp("ee.key")), 0);
	assert_int_equal(tu_sh("openssl dgst -sha256 -sign %s -out %s %s", tu_tmp("ee.key"),
	                       tu_tmp("ossl.sig"), tu_tmp("msg.txt")), 0);
	assert_int_equal(tu_read_bytes(tu_tmp("ossl.sig"), other, sizeof(other)), 256);
	assert_memory_equal(other, sig, 256);
	/* and a tampered signature fails there too */
	sig[0] ^= 0x40;
	tu_write_bytes(tu_tmp("bad.sig"), sig, n);
	assert_int_not_equal(tu_sh("openssl dgst -sha256 -verify %s -signature %s %s "
	                           ">/dev/null 2>&1", tu_tmp("ee.pub"), tu_tmp("bad.sig"),
	                           tu_tmp("msg.txt")), 0);
}

/* ---- certificates ---- */

static void test_rsa_certs_openssl(void **state)
{
	char out[8192];
	uint8_t buf[4096];

	(void)state;
	/* the CA as PEM, the card's certificate as DER (by the file name) */
	assert_int_equal(tu_read_bytes(tu_tmp("ca.pem"), buf, sizeof(buf)) > 27, 1);
	assert_memory_equal(buf, "-----BEGIN CERTIFICATE-----", 27);
	assert_int_equal(tu_read_bytes(tu_tmp("ee.der"), buf, sizeof(buf)) > 100, 1);
	assert_int_equal(buf[0], 0x30);

	sh_out(out, sizeof(out), "openssl x509 -in %s -noout -text -nameopt oneline",
	       tu_tmp("ca.pem"));
	assert_non_null(strstr(out, "sha256WithRSAEncryption"));
	assert_non_null(strstr(out, "Public-Key: (2048 bit)"));
	assert_non_null(strstr(out, "CA:TRUE"));
	assert_non_null(strstr(out, "Certificate Sign, CRL Sign"));
	assert_non_null(strstr(out, "CN = JPKI test CA, O = JPKI test"));
	assert_non_null(strstr(out, "Not Before: Jan  1 00:00:00 2026 GMT"));

	sh_out(out, sizeof(out), "openssl x509 -inform DER -in %s -noout -text -serial "
	       "-nameopt oneline", tu_tmp("ee.der"));
	assert_non_null(strstr(out, "sha256WithRSAEncryption"));
	assert_non_null(strstr(out, "Issuer: CN = JPKI test CA, O = JPKI test"));
	assert_non_null(strstr(out, "Subject: CN = test card 1, O = JPKI test"));
	assert_non_null(strstr(out, "CA:FALSE"));
	assert_non_null(strstr(out, "Digital Signature"));
	assert_null(strstr(out, "Certificate Sign"));
	assert_non_null(strstr(out, "serial=01020304"));
	assert_non_null(strstr(out, "Not Before: Jan  2 00:00:00 2026 GMT"));

	/* OpenSSL builds the chain too, inside the window and not before it */
	assert_int_equal(tu_sh("openssl x509 -inform DER -in %s -out %s", tu_tmp("ee.der"),
	                       tu_tmp("ee.pem")), 0);
	assert_int_equal(tu_sh("openssl verify -attime %lld -CAfile %s %s >/dev/null",
	                       (long long)(EE_NB + 100), tu_tmp("ca.pem"), tu_tmp("ee.pem")), 0);
	assert_int_not_equal(tu_sh("openssl verify -attime %lld -CAfile %s %s >/dev/null 2>&1",
	                           (long long)(EE_NB - 100), tu_tmp("ca.pem"), tu_tmp("ee.pem")), 0);
	/* ".DER" in capitals is DER as well; anything else PEM */
	assert_int_equal(kp_cert_create_ca_rsa(ca_key, "JPKI test CA", CA_NB, CA_NA,
	                                       tu_tmp("ca2.DER")), 0);
	assert_int_equal(tu_read_bytes(tu_tmp("ca2.DER"), buf, sizeof(buf)) > 100, 1);
	assert_int_equal(buf[0], 0x30);
	assert_int_equal(kp_cert_create_ca_rsa(ca_key, "JPKI test CA", CA_NB, CA_NA,
	                                       tu_tmp("ca2.crt")), 0);
	assert_int_equal(tu_read_bytes(tu_tmp("ca2.crt"), buf, sizeof(buf)) > 27, 1);
	assert_memory_equal(buf, "-----BEGIN CERTIFICATE-----", 27);
}

static void test_rsa_cert_args(void **state)
{
	const char *p = tu_tmp("bad.der");

	(void)state;
	assert_int_equal(kp_cert_issue_rsa(ca_key, ca_cert, ee_key, "x", 0, EE_NB, EE_NA, p),
	                 KP_CRYPTO_E_INVAL);
	assert_int_equal(kp_cert_issue_rsa(ca_key, ca_cert, ee_key, "x", -5, EE_NB, EE_NA, p),
	                 KP_CRYPTO_E_INVAL);
	assert_int_equal(kp_cert_issue_rsa(ca_key, ca_cert, ee_key, "x", 1, EE_NA, EE_NB, p),
	                 KP_CRYPTO_E_INVAL);
	assert_int_equal(kp_cert_issue_rsa(ca_key, ca_cert, ee_key, "a,O=evil", 1, EE_NB, EE_NA, p),
	                 KP_CRYPTO_E_INVAL);
	assert_int_equal(kp_cert_issue_rsa(ca_key, ca_cert, ee_key, "", 1, EE_NB, EE_NA, p),
	                 KP_CRYPTO_E_INVAL);
	assert_int_equal(kp_cert_issue_rsa(ca_key, NULL, ee_key, "x", 1, EE_NB, EE_NA, p),
	                 KP_CRYPTO_E_INVAL);
	/* the issuer must be a CA, and the key must be the CA's */
	assert_int_equal(kp_cert_issue_rsa(ee_key, ee_cert, ee_key, "x", 1, EE_NB, EE_NA, p),
	                 KP_CRYPTO_E_INVAL);
	assert_int_equal(kp_cert_issue_rsa(ee_key, ca_cert, ee_key, "x", 1, EE_NB, EE_NA, p),
	                 KP_CRYPTO_E_INVAL);
	assert_int_equal(kp_cert_create_ca_rsa(NULL, "x", CA_NB, CA_NA, p), KP_CRYPTO_E_INVAL);
	assert_int_equal(kp_cert_create_ca_rsa(ca_key, "x", -1, CA_NA, p), KP_CRYPTO_E_INVAL);
	assert_int_equal(access(p, F_OK), -1);
}

static void test_check_at_window(void **state)
{
	char err[256];

	(void)state;
	assert_int_equal(kp_cert_check_at(ee_cert, ca_cert, (EE_NB + 3600) * 1000,
	                                  KU_DIGITAL_SIGNATURE, err, sizeof(err)), KP_CRYPTO_OK);
	assert_string_equal(err, "");
	/* both ends are inside, to the millisecond */
	assert_int_equal(kp_cert_check_at(ee_cert, ca_cert, EE_NB * 1000, 0, err, sizeof(err)), 0);
	assert_int_equal(kp_cert_check_at(ee_cert, ca_cert, EE_NA * 1000 + 999, 0, err,
	                                  sizeof(err)), 0);
	assert_int_equal(kp_cert_check_at(ee_cert, ca_cert, EE_NB * 1000 - 1, 0, err, sizeof(err)),
	                 KP_CRYPTO_E_CHAIN);
	assert_string_equal(err, "certificate not yet valid (notBefore 2026-01-02T00:00:00Z)");
	assert_string_equal(kp_crypto_last_error(), err);
	assert_int_equal(kp_cert_check_at(ee_cert, ca_cert, (EE_NA + 1) * 1000, 0, err,
	                                  sizeof(err)), KP_CRYPTO_E_CHAIN);
	assert_non_null(strstr(err, "certificate expired (notAfter 2030-12-31T00:00:00Z)"));
	/* the system clock plays no part: long before 1970 and far in the future */
	assert_int_equal(kp_cert_check_at(ee_cert, ca_cert, -1, 0, err, sizeof(err)),
	                 KP_CRYPTO_E_CHAIN);
	assert_non_null(strstr(err, "not yet valid"));
	/* no room for the text is fine */
	assert_int_equal(kp_cert_check_at(ee_cert, ca_cert, 0, 0, NULL, 0), KP_CRYPTO_E_CHAIN);
	assert_int_equal(kp_cert_check_at(ee_cert, ca_cert, 0, 0, err, 8), KP_CRYPTO_E_CHAIN);
	assert_int_equal(strlen(err), 7);
	assert_int_equal(kp_cert_check_at(ee_cert, ca_cert, 0, 0, NULL, 8), KP_CRYPTO_E_INVAL);
	assert_int_equal(kp_cert_check_at(NULL, ca_cert, 0, 0, err, sizeof(err)), KP_CRYPTO_E_INVAL);
	assert_int_equal(kp_cert_check_at(ee_cert, NULL, 0, 0, err, sizeof(err)), KP_CRYPTO_E_INVAL);
}

static void test_check_at_ca_window(void **state)
{
	kp_cert *late = NULL;
	char err[256];

	(void)state;
	/* a card certificate that outlives its CA: fine while the CA is, not after */
	assert_int_equal(kp_cert_issue_rsa(ca_key, ca_cert, ee_key, "test card 2", 2, CA_NB,
	                                   CA_NA + 365 * DAY, tu_tmp("late.der")), 0);
	assert_int_equal(kp_cert_load(&late, tu_tmp("late.der")), 0);
	assert_int_equal(kp_cert_check_at(late, ca_cert, CA_NA * 1000, 0, err, sizeof(err)), 0);
	assert_int_equal(kp_cert_check_at(late, ca_cert, (CA_NA + DAY) * 1000, 0, err, sizeof(err)),
	                 KP_CRYPTO_E_CHAIN);
	assert_string_equal(err, "CA certificate expired (notAfter 2035-12-30T00:00:00Z)");
	/* the CA checked against itself */
	assert_int_equal(kp_cert_check_at(ca_cert, ca_cert, T0 * 1000, 0, err, sizeof(err)), 0);
	kp_cert_free(late);
}

static void test_check_at_wrong_ca(void **state)
{
	kp_cert *other = NULL, *same_name = NULL;
	char err[256];

	(void)state;
	/* another CA, and one with the very same name but another key */
	assert_int_equal(kp_cert_create_ca_rsa(ee_key, "other CA", CA_NB, CA_NA,
	                                       tu_tmp("other.der")), 0);
	assert_int_equal(kp_cert_load(&other, tu_tmp("other.der")), 0);
	assert_int_equal(kp_cert_check_at(ee_cert, other, EE_NB * 1000, 0, err, sizeof(err)),
	                 KP_CRYPTO_E_CHAIN);
	assert_non_null(strstr(err, "signature chain: "));
	assert_non_null(strstr(err, "not correctly signed by the trusted CA"));
	assert_int_equal(kp_cert_create_ca_rsa(ee_key, "JPKI test CA", CA_NB, CA_NA,
	                                       tu_tmp("same.der")), 0);
	assert_int_equal(kp_cert_load(&same_name, tu_tmp("same.der")), 0);
	assert_int_equal(kp_cert_check_at(ee_cert, same_name, EE_NB * 1000, 0, err, sizeof(err)),
	                 KP_CRYPTO_E_CHAIN);
	assert_non_null(strstr(err, "signature chain: "));
	/* a wrong CA is reported as such even when the time is wrong too */
	assert_int_equal(kp_cert_check_at(ee_cert, other, 0, 0, err, sizeof(err)),
	                 KP_CRYPTO_E_CHAIN);
	assert_non_null(strstr(err, "signature chain: "));
	kp_cert_free(other);
	kp_cert_free(same_name);
}

static void test_check_at_key_usage(void **state)
{
	char err[256];

	(void)state;
	assert_int_equal(kp_cert_check_at(ee_cert, ca_cert, EE_NB * 1000, KU_DIGITAL_SIGNATURE,
	                                  err, sizeof(err)), 0);
	assert_int_equal(kp_cert_check_at(ee_cert, ca_cert, EE_NB * 1000, KU_KEY_CERT_SIGN, err,
	                                  sizeof(err)), KP_CRYPTO_E_CHAIN);
	assert_string_equal(err, "key usage 0x04 not allowed (certificate has 0x80)");
	assert_int_equal(kp_cert_check_at(ee_cert, ca_cert, EE_NB * 1000,
	                                  KU_DIGITAL_SIGNATURE | KU_KEY_CERT_SIGN, err,
	                                  sizeof(err)), KP_CRYPTO_E_CHAIN);
	assert_int_equal(kp_cert_check_at(ca_cert, ca_cert, EE_NB * 1000, KU_DIGITAL_SIGNATURE,
	                                  err, sizeof(err)), KP_CRYPTO_E_CHAIN);
	assert_int_equal(kp_cert_check_at(ca_cert, ca_cert, EE_NB * 1000, KU_KEY_CERT_SIGN, err,
	                                  sizeof(err)), 0);
}

/* kp_cert_check_at is not RSA-only: the operator's P-256 certificates work the same way. */
static void test_check_at_p256(void **state)
{
	kp_key *ca = NULL, *t = NULL;
	kp_cert *cac = NULL, *tc = NULL;
	char err[256];

	(void)state;
	assert_int_equal(kp_key_generate(&ca), 0);
	assert_int_equal(kp_key_generate(&t), 0);
	assert_int_equal(kp_cert_create_ca_validity(ca, "op CA", CA_NB, CA_NA, tu_tmp("opca.pem")),
	                 0);
	assert_int_equal(kp_cert_load(&cac, tu_tmp("opca.pem")), 0);
	assert_int_equal(kp_cert_issue_validity(ca, cac, t, "BUS-1", EE_NB, EE_NA, tu_tmp("t.pem")),
	                 0);
	assert_int_equal(kp_cert_load(&tc, tu_tmp("t.pem")), 0);
	assert_int_equal(kp_cert_check_at(tc, cac, EE_NB * 1000, KU_DIGITAL_SIGNATURE, err,
	                                  sizeof(err)), 0);
	assert_int_equal(kp_cert_check_at(tc, cac, (EE_NA + 1) * 1000, 0, err, sizeof(err)),
	                 KP_CRYPTO_E_CHAIN);
	assert_non_null(strstr(err, "certificate expired"));
	assert_int_equal(kp_cert_check_at(tc, ca_cert, EE_NB * 1000, 0, err, sizeof(err)),
	                 KP_CRYPTO_E_CHAIN);
	kp_cert_free(tc);
	kp_cert_free(cac);
	kp_key_free(t);
	kp_key_free(ca);
}

static void test_raw_accessors(void **state)
{
	static const struct { int64_t serial; const char *hex; } serials[] = {
		{ 1, "01" },
		{ 0x7F, "7F" },
		{ 0x80, "0080" },                           /* DER keeps INTEGERs positive */
		{ 0x01020304, "01020304" },
		{ INT64_MAX, "7FFFFFFFFFFFFFFF" },
	};
	const uint8_t *p = NULL, *q = NULL;
	size_t n = 0, m = 0;
	uint8_t want[16], file[4096];
	int64_t nb = 0, na = 0;
	char cn[80];

	(void)state;
	/* the card's issuer is the CA's subject, byte for byte (self-signed: its issuer) */
	assert_int_equal(kp_cert_issuer_raw(ee_cert, &p, &n), 0);
	assert_int_equal(kp_cert_issuer_raw(ca_cert, &q, &m), 0);
	assert_int_equal(n, m);
	assert_memory_equal(p, q, n);
	assert_int_equal(p[0], 0x30);
	assert_non_null(memmem(p, n, "JPKI test CA", 12));
	assert_int_equal(kp_cert_subject_cn(ee_cert, cn, sizeof(cn)), 0);
	assert_string_equal(cn, "test card 1");

	for (size_t i = 0; i < sizeof(serials) / sizeof(serials[0]); i++) {
		kp_cert *c = NULL;

		assert_int_equal(kp_cert_issue_rsa(ca_key, ca_cert, ee_key, "serial", serials[i].serial,
		                                   EE_NB, EE_NA, tu_tmp("serial.der")), 0);
		assert_int_equal(kp_cert_load(&c, tu_tmp("serial.der")), 0);
		assert_int_equal(kp_cert_serial_raw(c, &p, &n), 0);
		m = tu_hex(serials[i].hex, want, sizeof(want));
		assert_int_equal(n, m);
		assert_memory_equal(p, want, m);
		kp_cert_free(c);
	}
	/* DER of the whole certificate: the file as written */
	assert_int_equal(kp_cert_der(ee_cert, &p, &n), 0);
	assert_int_equal(tu_read_bytes(tu_tmp("ee.der"), file, sizeof(file)), n);
	assert_memory_equal(p, file, n);
	assert_int_equal(kp_cert_validity(ee_cert, &nb, &na), 0);
	assert_int_equal(nb, EE_NB);
	assert_int_equal(na, EE_NA);
	assert_int_equal(kp_cert_validity(ca_cert, &nb, &na), 0);
	assert_int_equal(nb, CA_NB);
	assert_int_equal(na, CA_NA);

	assert_int_equal(kp_cert_der(NULL, &p, &n), KP_CRYPTO_E_INVAL);
	assert_int_equal(kp_cert_serial_raw(ee_cert, NULL, &n), KP_CRYPTO_E_INVAL);
	assert_int_equal(kp_cert_issuer_raw(ee_cert, &p, NULL), KP_CRYPTO_E_INVAL);
	assert_int_equal(kp_cert_validity(ee_cert, NULL, &na), KP_CRYPTO_E_INVAL);
}

/* An RSA certificate parses from memory as PEM or DER (kp_cert_parse is not P-256-only). */
static void test_cert_parse_rsa(void **state)
{
	uint8_t buf[4096];
	size_t n;
	kp_cert *c = NULL;
	const uint8_t *p;
	size_t len;

	(void)state;
	n = tu_read_bytes(tu_tmp("ca.pem"), buf, sizeof(buf));
	assert_int_equal(kp_cert_parse(&c, buf, n), 0);
	kp_cert_free(c);
	c = NULL;
	assert_int_equal(kp_cert_der(ee_cert, &p, &len), 0);
	assert_int_equal(kp_cert_parse(&c, p, len), 0);
	kp_cert_free(c);
	c = NULL;
	assert_int_equal(kp_cert_parse(&c, p, len / 2), KP_CRYPTO_E_PARSE);
	assert_null(c);
	assert_int_equal(kp_cert_write_pem(ee_cert, tu_tmp("ee2.pem")), 0);
	assert_int_equal(kp_cert_load(&c, tu_tmp("ee2.pem")), 0);
	assert_int_equal(kp_cert_der(c, &p, &n), 0);
	assert_int_equal(kp_cert_der(ee_cert, &p, &len), 0);
	assert_int_equal(n, len);
	kp_cert_free(c);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_rsa_generate_args),
		cmocka_unit_test(test_rsa_save_load),
		cmocka_unit_test(test_rsa_load_refuses),
		cmocka_unit_test(test_rsa_sign_verify),
		cmocka_unit_test(test_rsa_sign_openssl),
		cmocka_unit_test(test_rsa_certs_openssl),
		cmocka_unit_test(test_rsa_cert_args),
		cmocka_unit_test(test_check_at_window),
		cmocka_unit_test(test_check_at_ca_window),
		cmocka_unit_test(test_check_at_wrong_ca),
		cmocka_unit_test(test_check_at_key_usage),
		cmocka_unit_test(test_check_at_p256),
		cmocka_unit_test(test_raw_accessors),
		cmocka_unit_test(test_cert_parse_rsa),
	};

	return cmocka_run_group_tests(tests, group_setup, group_teardown);
}
