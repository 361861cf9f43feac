/* SPDX-License-Identifier: Apache-2.0 */
/* Unit tests of crypto/: published vectors (FIPS 180-2, RFC 4231, RFC 6979), keys, certificates.
 * Vectors marked "computed" were produced at development time with Python's standard library
 * and the `cryptography` package, independently of mbedTLS (see the comment at each). */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "kp_crypto.h"
#include "testutil.h"

/* ---- helpers ---- */

static void assert_hex(const uint8_t *got, size_t len, const char *hex)
{
	uint8_t want[256];
	size_t n = tu_hex(hex, want, sizeof(want));

	assert_int_equal(n, len);
	assert_memory_equal(got, want, n);
}

/* RFC 6979 appendix A.2.5 private key. */
static const char *RFC6979_X = "C9AFA9D845BA75166B5C215767B1D6934E50C3DB36E89B127B8A622B120F6721";

static kp_key *rfc_key(void)
{
	uint8_t d[32];
	kp_key *k = NULL;

	tu_hex(RFC6979_X, d, sizeof(d));
	assert_int_equal(kp_key_from_raw(&k, d), KP_CRYPTO_OK);
	return k;
}

static void sha(const char *s, uint8_t h[32])
{
	assert_int_equal(kp_sha256(s, strlen(s), h), KP_CRYPTO_OK);
}

/* ---- hashes ---- */

static void test_sha256_vectors(void **state)
{
	static const struct { const char *msg, *hex; } v[] = {
		/* FIPS 180-2 appendix B.1 and B.2, and the empty message */
		{ "abc", "BA7816BF8F01CFEA414140DE5DAE2223B00361A396177A9CB410FF61F20015AD" },
		{ "abcdbcdecdefdefgefghfghighijhijkijkljklmklmnlmnomnopnopq",
		  "248D6A61D20638B8E5C026930C3E6039A33CE45964FF2167F6ECEDD419DB06C1" },
		{ "", "E3B0C44298FC1C149AFBF4C8996FB92427AE41E4649B934CA495991B7852B855" },
	};
	uint8_t h[32];
	size_t i;

	(void)state;
	for (i = 0; i < sizeof(v) / sizeof(v[0]); i++) {
		sha(v[i].msg, h);
		assert_hex(h, 32, v[i].hex);
	}
	assert_int_equal(kp_sha256(NULL, 0, h), KP_CRYPTO_OK);
	assert_hex(h, 32, v[2].hex);
	assert_int_equal(kp_sha256(NULL, 1, h), KP_CRYPTO_E_INVAL);
	assert_int_equal(kp_sha256("a", 1, NULL), KP_CRYPTO_E_INVAL);
}

static void test_hmac_rfc4231(void **state)
{
	uint8_t key[131], h[32];
	const char *m;

	(void)state;
	/* Test case 1 */
	memset(key, 0x0b, 20);
	m = "Hi There";
	assert_int_equal(kp_hmac_sha256(key, 20, m, strlen(m), h), KP_CRYPTO_OK);
	assert_hex(h, 32, "b0344c61d8db38535ca8afceaf0bf12b881dc200c9833da726e9376c2e32cff7");
	/* Test case 2 */
	m = "what do ya want for nothing?";
	assert_int_equal(kp_hmac_sha256((const uint8_t *)"Jefe", 4, m, strlen(m), h), KP_CRYPTO_OK);
	assert_hex(h, 32, "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843");
	/* Test case 6: key longer than the block */
	memset(key, 0xaa, 131);
	m = "Test Using Larger Than Block-Size Key - Hash Key First";
	assert_int_equal(kp_hmac_sha256(key, 131, m, strlen(m), h), KP_CRYPTO_OK);
	assert_hex(h, 32, "60e431591ee0b67f0d8a26aacbf5b77f8e0bc6213728c5140546040f0ee37f54");

	assert_int_equal(kp_hmac_sha256(NULL, 1, "a", 1, h), KP_CRYPTO_E_INVAL);
	assert_int_equal(kp_hmac_sha256(key, 1, NULL, 1, h), KP_CRYPTO_E_INVAL);
}

/* ---- random, zeroize, compare ---- */

static void test_random(void **state)
{
	static uint8_t big[5000];
	uint8_t a[32], b[32], zero[32] = { 0 };
	size_t i, zeros = 0;

	(void)state;
	assert_int_equal(kp_random(NULL, 0), KP_CRYPTO_OK);
	assert_int_equal(kp_random(NULL, 1), KP_CRYPTO_E_INVAL);
	assert_int_equal(kp_random(a, sizeof(a)), KP_CRYPTO_OK);
	assert_int_equal(kp_random(b, sizeof(b)), KP_CRYPTO_OK);
	assert_memory_not_equal(a, b, sizeof(a));
	assert_memory_not_equal(a, zero, sizeof(a));
	/* more than one CTR_DRBG request (1024 bytes) */
	assert_int_equal(kp_random(big, sizeof(big)), KP_CRYPTO_OK);
	for (i = 0; i < sizeof(big); i++)
		zeros += big[i] == 0;
	assert_true(zeros < 100);       /* expected about 20 */
	assert_memory_not_equal(big + 4000, zero, sizeof(zero));
}

/* A forked child must not repeat the parent's random stream. */
static void test_random_fork(void **state)
{
	uint8_t mine[32], child[32];
	int fds[2], status;
	pid_t pid;

	(void)state;
	assert_int_equal(kp_random(mine, 1), KP_CRYPTO_OK);   /* seeded before the fork */
	assert_int_equal(pipe(fds), 0);
	pid = fork();
	assert_true(pid >= 0);
	if (pid == 0) {
		uint8_t r[32];

		close(fds[0]);
		if (kp_random(r, sizeof(r)) != KP_CRYPTO_OK || write(fds[1], r, sizeof(r)) != 32)
			_exit(1);
		_exit(0);
	}
	close(fds[1]);
	assert_int_equal(kp_random(mine, sizeof(mine)), KP_CRYPTO_OK);
	assert_int_equal(read(fds[0], child, sizeof(child)), 32);
	close(fds[0]);
	assert_int_equal(waitpid(pid, &status, 0), pid);
	assert_true(WIFEXITED(status) && WEXITSTATUS(status) == 0);
	assert_memory_not_equal(mine, child, sizeof(mine));
}

static void *random_worker(void *arg)
{
	uint8_t buf[48];
	int i;

	for (i = 0; i < 500; i++)
		if (kp_random(buf, sizeof(buf)) != KP_CRYPTO_OK)
			*(int *)arg = 1;
	return NULL;
}

static void test_random_threads(void **state)
{
	pthread_t t[8];
	int bad = 0;
	size_t i;

	(void)state;
	for (i = 0; i < 8; i++)
		assert_int_equal(pthread_create(&t[i], NULL, random_worker, &bad), 0);
	for (i = 0; i < 8; i++)
		pthread_join(t[i], NULL);
	assert_int_equal(bad, 0);
}

static void test_zeroize_memcmp(void **state)
{
	uint8_t a[16], b[16];

	(void)state;
	memset(a, 0x5a, sizeof(a));
	memcpy(b, a, sizeof(b));
	assert_int_equal(kp_memcmp_ct(a, b, sizeof(a)), 0);
	b[15] ^= 1;
	assert_int_not_equal(kp_memcmp_ct(a, b, sizeof(a)), 0);
	assert_int_equal(kp_memcmp_ct(a, b, 0), 0);
	kp_zeroize(a, sizeof(a));
	memset(b, 0, sizeof(b));
	assert_memory_equal(a, b, sizeof(a));
	kp_zeroize(NULL, 10);
}

static void test_strerror(void **state)
{
	int rc;

	(void)state;
	for (rc = KP_CRYPTO_E_INTERNAL; rc <= KP_CRYPTO_E_INVAL; rc++)
		assert_string_not_equal(kp_crypto_strerror(rc), kp_crypto_strerror(KP_CRYPTO_OK));
	assert_non_null(kp_crypto_strerror(12345));
	assert_non_null(kp_crypto_last_error());
}

/* ---- ECDSA ---- */

static void test_ecdsa_rfc6979(void **state)
{
	/* RFC 6979 A.2.5, ECDSA P-256 with SHA-256 */
	static const struct { const char *msg, *rs; } v[] = {
		{ "sample", "EFD48B2AACB6A8FD1140DD9CD45E81D69D2C877B56AAF991C34D0EA84EAF3716"
		            "F7CB1C942D657C41D436C7A1B6E29F65F3E900DBB9AFF4064DC4AB2F843ACDA8" },
		{ "test",   "F1ABB023518351CD71D881567B1EA663ED3EFCF6C5132B354F28D3B0B7D38367"
		            "019F4113742A2B14BD25926B49C649155F267E60D3814B4C0CC84250E46F0083" },
		/* computed: the RFC 6979 procedure in pure Python (checked against the two vectors
		 * above); "pad-200" is the first such message whose r is below 2^248, so this checks
		 * the left padding of r. */
		{ "pad-200", "0068CCBEDB38A1BEFD9FD5B37A287182DD72233A5BCCED7D54B79678D651833D"
		             "49A50840D2A1654235BFD33260C23F6728AC2AE93F524A802FFAADD792DA55E8" },
	};
	uint8_t h[32], sig[64];
	kp_key *k = rfc_key();
	size_t i;

	(void)state;
	for (i = 0; i < sizeof(v) / sizeof(v[0]); i++) {
		sha(v[i].msg, h);
		assert_int_equal(kp_key_sign(k, h, sig), KP_CRYPTO_OK);
		assert_hex(sig, 64, v[i].rs);
		assert_int_equal(kp_key_sign(k, h, sig), KP_CRYPTO_OK);   /* deterministic */
		assert_hex(sig, 64, v[i].rs);
		assert_int_equal(kp_key_verify(k, h, sig), KP_CRYPTO_OK);
		sig[5] ^= 0x10;
		assert_int_equal(kp_key_verify(k, h, sig), KP_CRYPTO_E_VERIFY);
		sig[5] ^= 0x10;
		h[31] ^= 1;
		assert_int_equal(kp_key_verify(k, h, sig), KP_CRYPTO_E_VERIFY);
	}
	/* r = 0 and s = n are out of range, not a crash */
	memset(sig, 0, sizeof(sig));
	assert_int_equal(kp_key_verify(k, h, sig), KP_CRYPTO_E_VERIFY);
	memset(sig, 0xff, sizeof(sig));
	assert_int_equal(kp_key_verify(k, h, sig), KP_CRYPTO_E_VERIFY);
	assert_int_equal(kp_key_sign(NULL, h, sig), KP_CRYPTO_E_INVAL);
	assert_int_equal(kp_key_sign(k, NULL, sig), KP_CRYPTO_E_INVAL);
	assert_int_equal(kp_key_sign(k, h, NULL), KP_CRYPTO_E_INVAL);
	kp_key_free(k);
}

static void test_key_from_raw_range(void **state)
{
	uint8_t d[32];
	kp_key *k = (kp_key *)1;

	(void)state;
	memset(d, 0, sizeof(d));
	assert_int_equal(kp_key_from_raw(&k, d), KP_CRYPTO_E_INVAL);
	assert_null(k);
	/* n, the group order */
	tu_hex("FFFFFFFF00000000FFFFFFFFFFFFFFFFBCE6FAADA7179E84F3B9CAC2FC632551", d, 32);
	assert_int_equal(kp_key_from_raw(&k, d), KP_CRYPTO_E_INVAL);
	memset(d, 0xff, sizeof(d));
	assert_int_equal(kp_key_from_raw(&k, d), KP_CRYPTO_E_INVAL);
	d[0] = 0;
	d[31] = 1;
	memset(d, 0, 31);
	assert_int_equal(kp_key_from_raw(&k, d), KP_CRYPTO_OK);    /* d = 1 */
	kp_key_free(k);
	kp_key_free(NULL);
}

/* computed: the RFC 6979 key's SubjectPublicKeyInfo PEM from Python `cryptography`. */
static const char RFC_PUB_PEM[] =
	"-----BEGIN PUBLIC KEY-----\n"
	"MFkwEwYHKoZIzj0CAQYIKoZIzj0DAQcDQgAEYP7UuiVanTHJYet0xjVtaMBJuJI7\n"
	"Yfps5mliLmDyn7Z5A/4QCLi8maQa6elWKLxk8vGyDC1+n1F3o8KU1EYimQ==\n"
	"-----END PUBLIC KEY-----\n";

static void test_key_save_public(void **state)
{
	kp_key *k = rfc_key();
	char buf[1024];

	(void)state;
	assert_int_equal(kp_key_save_public(k, tu_tmp("rfc.pub")), KP_CRYPTO_OK);
	tu_read_bytes(tu_tmp("rfc.pub"), buf, sizeof(buf));
	assert_string_equal(buf, RFC_PUB_PEM);
	/* public files may be replaced */
	assert_int_equal(kp_key_save_public(k, tu_tmp("rfc.pub")), KP_CRYPTO_OK);
	kp_key_free(k);
}

static void test_key_generate_sign_verify(void **state)
{
	kp_key *a = NULL, *b = NULL;
	uint8_t h[32], sig[64], sig2[64];

	(void)state;
	assert_int_equal(kp_key_generate(&a), KP_CRYPTO_OK);
	assert_int_equal(kp_key_generate(&b), KP_CRYPTO_OK);
	assert_int_equal(kp_random(h, sizeof(h)), KP_CRYPTO_OK);
	assert_int_equal(kp_key_sign(a, h, sig), KP_CRYPTO_OK);
	assert_int_equal(kp_key_sign(a, h, sig2), KP_CRYPTO_OK);
	assert_memory_equal(sig, sig2, 64);
	assert_int_equal(kp_key_verify(a, h, sig), KP_CRYPTO_OK);
	assert_int_equal(kp_key_verify(b, h, sig), KP_CRYPTO_E_VERIFY);
	kp_key_free(a);
	kp_key_free(b);
}

static void test_key_save_load(void **state)
{
	kp_key *a = NULL, *b = NULL;
	uint8_t h[32], s1[64], s2[64];
	char before[2048], after[2048];
	struct stat st;
	mode_t old;

	(void)state;
	assert_int_equal(kp_key_generate(&a), KP_CRYPTO_OK);
	old = umask(0);     /* a permissive umask must not widen the mode */
	assert_int_equal(kp_key_save(a, tu_tmp("a.key")), KP_CRYPTO_OK);
	umask(old);
	assert_int_equal(stat(tu_tmp("a.key"), &st), 0);
	assert_int_equal(st.st_mode & 07777, 0600);
	tu_read_bytes(tu_tmp("a.key"), before, sizeof(before));
	assert_non_null(strstr(before, "-----BEGIN EC PRIVATE KEY-----\n"));

	assert_int_equal(kp_key_load(&b, tu_tmp("a.key")), KP_CRYPTO_OK);
	/* deterministic signatures: same key, same signature */
	sha("round trip", h);
	assert_int_equal(kp_key_sign(a, h, s1), KP_CRYPTO_OK);
	assert_int_equal(kp_key_sign(b, h, s2), KP_CRYPTO_OK);
	assert_memory_equal(s1, s2, 64);

	/* refuses to overwrite, and leaves the file alone */
	kp_key_free(b);
	assert_int_equal(kp_key_generate(&b), KP_CRYPTO_OK);
	assert_int_equal(kp_key_save(b, tu_tmp("a.key")), KP_CRYPTO_E_EXISTS);
	tu_read_bytes(tu_tmp("a.key"), after, sizeof(after));
	assert_string_equal(before, after);
	/* ... also through a symlink */
	assert_int_equal(symlink(tu_tmp("nowhere.key"), tu_tmp("link.key")), 0);
	assert_int_equal(kp_key_save(b, tu_tmp("link.key")), KP_CRYPTO_E_EXISTS);
	assert_int_equal(access(tu_tmp("nowhere.key"), F_OK), -1);

	assert_int_equal(kp_key_save(b, tu_tmp("no/such/dir.key")), KP_CRYPTO_E_IO);
	assert_string_not_equal(kp_crypto_last_error(), "");
	assert_int_equal(kp_key_save(NULL, tu_tmp("x.key")), KP_CRYPTO_E_INVAL);
	kp_key_free(a);
	kp_key_free(b);
}

static const char RSA_KEY_PEM[] =
	"-----BEGIN PRIVATE KEY-----\n"
	"MIICdQIBADANBgkqhkiG9w0BAQEFAASCAl8wggJbAgEAAoGBALok/52JuYa6QM7F\n"
	"L/2Ln6vKictshdOWgQ+NOH5hFJWPjTVbxi6L6fjlqpPa1KqFoC0fnHKtOC2B0Dl0\n"
	"7x08DskUw4oF6DzTITCGAn0eOufz9BVreWq1AvtP6YsgRJfmEYTul45Z4bP6MLJr\n"
	"dtwSYPELeBXBl3/+sBTMWo7bNHZvAgMBAAECgYAbqhwDQdC84Tl4gX3cZL/aPEO2\n"
	"Y+6Pv7J2qTpYLf1tLOSDpZwSluCzCQ8M4lzw6uMfUa9iq7PJr51OrL5Mzfw0TWe1\n"
	"8DXr45E5uWuj5Xm3rUxKT968Jb2/vGNRpt27apRt7bRjbNtGVtOWdrMUJqtYYT6l\n"
	"JViSpIi6XSLmYSExYQJBAN6E2EIUFpWmXqUmdm6J9GwLy3JNMjyHZgnu6YmnctJL\n"
	"p5pzbFUB03OaJsKm4UXnF1qaCnYkBtRFo5ZtImf4tcMCQQDWJw5+p5H2fEH8eUVr\n"
	"8V4pf5YV86iHyEqtdIhMgs0tbfWp3oE8vAw0vltyu7gZIasZ69vhOJlOtBCLQzmr\n"
	"fbXlAkAzbcq5wwDRR6l6TCB1PedDDZrQ6SyiNr0LsK9DRHNSTXAIT4MLRqfDgS5S\n"
	"MNXCHT4Vj6K5WWxGpW3At6qLEz2XAkBw1eViQKK8z93ozHESnfuyO+J1sIuU96i5\n"
	"WhRS0/yNuklddrp7qM15oO8INfabb0z6/HY/ZhYJDQFGj2Y8gKEtAkBad3dcl7XQ\n"
	"ZLZU7YBcZDnJzjO6AurpRM11UBqtJrTdqCm9g8YlRDZZYSv3qBOx6HH9vfHBQ7Od\n"
	"7NHE3hzBArrd\n"
	"-----END PRIVATE KEY-----\n";

static const char P384_KEY_PEM[] =
	"-----BEGIN EC PRIVATE KEY-----\n"
	"MIGkAgEBBDBPQr7c2eJzk8ChMXZsBsJLI87y4MJiGp9ohEB5F8or1xu4tfwRwwfR\n"
	"NA+Bh0vpQR+gBwYFK4EEACKhZANiAAQzHxiHjd67UHTbd2Tld7bmXgn7VgdmLSjH\n"
	"gXy9ClyQuzqnwfW3+17y6uvfX0nsh03QKUtDDMqeMByBPAUmKguL/cAj69t0yEaL\n"
	"G26/a+/sXuMTGpRRAoGX0qgYWU1kbc4=\n"
	"-----END EC PRIVATE KEY-----\n";

/* computed: the RFC 6979 key as PKCS#8 PEM and as SEC1 DER, from Python `cryptography`. */
static const char RFC_PKCS8_PEM[] =
	"-----BEGIN PRIVATE KEY-----\n"
	"MIGHAgEAMBMGByqGSM49AgEGCCqGSM49AwEHBG0wawIBAQQgya+p2EW6dRZrXCFX\n"
	"Z7HWk05Qw9s26JsSe4piKxIPZyGhRANCAARg/tS6JVqdMclh63TGNW1owEm4kjth\n"
	"+mzmaWIuYPKftnkD/hAIuLyZpBrp6VYovGTy8bIMLX6fUXejwpTURiKZ\n"
	"-----END PRIVATE KEY-----\n";
static const char RFC_SEC1_DER_HEX[] =
	"30770201010420C9AFA9D845BA75166B5C215767B1D6934E50C3DB36E89B127B8A622B120F6721A00A0608"
	"2A8648CE3D030107A1440342000460FED4BA255A9D31C961EB74C6356D68C049B8923B61FA6CE669622E60"
	"F29FB67903FE1008B8BC99A41AE9E95628BC64F2F1B20C2D7E9F5177A3C294D4462299";

static void assert_signs_sample(const kp_key *k)
{
	uint8_t h[32], sig[64];

	sha("sample", h);
	assert_int_equal(kp_key_sign(k, h, sig), KP_CRYPTO_OK);
	assert_hex(sig, 64, "EFD48B2AACB6A8FD1140DD9CD45E81D69D2C877B56AAF991C34D0EA84EAF3716"
	                    "F7CB1C942D657C41D436C7A1B6E29F65F3E900DBB9AFF4064DC4AB2F843ACDA8");
}

static void test_key_load_forms_and_errors(void **state)
{
	uint8_t der[200], garbage[300];
	kp_key *k = (kp_key *)1;
	size_t n;

	(void)state;
	/* accepted: SEC1 DER, PKCS#8 PEM */
	n = tu_hex(RFC_SEC1_DER_HEX, der, sizeof(der));
	tu_write_bytes(tu_tmp("rfc.der"), der, n);
	assert_int_equal(kp_key_load(&k, tu_tmp("rfc.der")), KP_CRYPTO_OK);
	assert_signs_sample(k);
	kp_key_free(k);
	tu_write_bytes(tu_tmp("rfc8.pem"), RFC_PKCS8_PEM, strlen(RFC_PKCS8_PEM));
	assert_int_equal(kp_key_load(&k, tu_tmp("rfc8.pem")), KP_CRYPTO_OK);
	assert_signs_sample(k);
	kp_key_free(k);

	/* errors */
	assert_int_equal(kp_key_load(&k, tu_tmp("missing.key")), KP_CRYPTO_E_IO);
	assert_null(k);
	assert_string_not_equal(kp_crypto_last_error(), "");
	assert_int_equal(kp_key_load(&k, tu_scratch), KP_CRYPTO_E_IO);          /* a directory */
	tu_write_bytes(tu_tmp("empty.key"), "", 0);
	assert_int_equal(kp_key_load(&k, tu_tmp("empty.key")), KP_CRYPTO_E_PARSE);
	assert_int_equal(kp_random(garbage, sizeof(garbage)), KP_CRYPTO_OK);
	tu_write_bytes(tu_tmp("garbage.key"), garbage, sizeof(garbage));
	assert_int_equal(kp_key_load(&k, tu_tmp("garbage.key")), KP_CRYPTO_E_PARSE);
	tu_write_bytes(tu_tmp("trunc.key"), RFC_PKCS8_PEM, 100);
	assert_int_equal(kp_key_load(&k, tu_tmp("trunc.key")), KP_CRYPTO_E_PARSE);
	tu_write_bytes(tu_tmp("trunc.der"), der, n - 10);
	assert_int_equal(kp_key_load(&k, tu_tmp("trunc.der")), KP_CRYPTO_E_PARSE);
	tu_write_bytes(tu_tmp("pub.key"), RFC_PUB_PEM, strlen(RFC_PUB_PEM));
	assert_int_equal(kp_key_load(&k, tu_tmp("pub.key")), KP_CRYPTO_E_PARSE);
	tu_write_bytes(tu_tmp("rsa.key"), RSA_KEY_PEM, strlen(RSA_KEY_PEM));
	assert_int_equal(kp_key_load(&k, tu_tmp("rsa.key")), KP_CRYPTO_E_KEYTYPE);
	tu_write_bytes(tu_tmp("p384.key"), P384_KEY_PEM, strlen(P384_KEY_PEM));
	assert_int_equal(kp_key_load(&k, tu_tmp("p384.key")), KP_CRYPTO_E_KEYTYPE);
	/* a public point that is not d·G */
	der[n - 1] ^= 1;
	tu_write_bytes(tu_tmp("badpub.der"), der, n);
	assert_int_not_equal(kp_key_load(&k, tu_tmp("badpub.der")), KP_CRYPTO_OK);
	assert_null(k);
	assert_int_equal(kp_key_load(NULL, tu_tmp("rfc.der")), KP_CRYPTO_E_INVAL);
}

/* ---- certificates ---- */

static const char RSA_CERT_PEM[] =
	"-----BEGIN CERTIFICATE-----\n"
	"MIICBDCCAW2gAwIBAgIUUqdbo7qIWJr6d3GZgEJCxvPCV2cwDQYJKoZIhvcNAQEL\n"
	"BQAwEzERMA8GA1UEAwwIcnNhLXRlc3QwIBcNMjYxMTI2MDEyMDU4WhgPMjEyNjEx\n"
	"MDIwMTIwNThaMBMxETAPBgNVBAMMCHJzYS10ZXN0MIGfMA0GCSqGSIb3DQEBAQUA\n"
	"A4GNADCBiQKBgQC6JP+dibmGukDOxS/9i5+ryonLbIXTloEPjTh+YRSVj401W8Yu\n"
	"i+n45aqT2tSqhaAtH5xyrTgtgdA5dO8dPA7JFMOKBeg80yEwhgJ9Hjrn8/QVa3lq\n"
	"tQL7T+mLIESX5hGE7peOWeGz+jCya3bcEmDxC3gVwZd//rAUzFqO2zR2bwIDAQAB\n"
	"o1MwUTAdBgNVHQ4EFgQUarljfe8emFg3wMO2J69zbiiMv2swHwYDVR0jBBgwFoAU\n"
	"arljfe8emFg3wMO2J69zbiiMv2swDwYDVR0TAQH/BAUwAwEB/zANBgkqhkiG9w0B\n"
	"AQsFAAOBgQC06sziNJvqb7OhmdqjK8rQNOn1HHuQFDmtQGKIkU8thW1AEh9DI5X+\n"
	"h9+eGB36HfsAWFrIukYpdYUNOUNBUAPwh1HHlZzY4zP0oer3t7Ihiske/YXu8A2b\n"
	"RvnaxezSH3gm8IFZjExdlp+oUPeCGnhyRnhULQC63YXKTCV8uCqQ5A==\n"
	"-----END CERTIFICATE-----\n";

struct pki {
	kp_key *ca_key, *term_key, *other_key;
	kp_cert *ca, *term, *other_ca;
};
static struct pki pki;

static int pki_setup(void **state)
{
	(void)state;
	if (kp_key_generate(&pki.ca_key) || kp_key_generate(&pki.term_key) ||
	    kp_key_generate(&pki.other_key))
		return -1;
	if (kp_cert_create_ca(pki.ca_key, "Kippu Test CA", 3650, tu_tmp("ca.pem")) ||
	    kp_cert_load(&pki.ca, tu_tmp("ca.pem")))
		return -1;
	if (kp_cert_issue(pki.ca_key, pki.ca, pki.term_key, "term-0001", 365, tu_tmp("term.pem")) ||
	    kp_cert_load(&pki.term, tu_tmp("term.pem")))
		return -1;
	if (kp_cert_create_ca(pki.other_key, "Kippu Test CA", 3650, tu_tmp("other.pem")) ||
	    kp_cert_load(&pki.other_ca, tu_tmp("other.pem")))
		return -1;
	return 0;
}

static int pki_teardown(void **state)
{
	(void)state;
	kp_key_free(pki.ca_key);
	kp_key_free(pki.term_key);
	kp_key_free(pki.other_key);
	kp_cert_free(pki.ca);
	kp_cert_free(pki.term);
	kp_cert_free(pki.other_ca);
	memset(&pki, 0, sizeof(pki));
	return 0;
}

static void test_cert_ca_and_issue(void **state)
{
	char cn[80], err[256];
	uint8_t h[32], sig[64];

	(void)state;
	assert_int_equal(kp_cert_subject_cn(pki.ca, cn, sizeof(cn)), KP_CRYPTO_OK);
	assert_string_equal(cn, "Kippu Test CA");
	assert_int_equal(kp_cert_subject_cn(pki.term, cn, sizeof(cn)), KP_CRYPTO_OK);
	assert_string_equal(cn, "term-0001");
	assert_int_equal(kp_cert_subject_cn(pki.term, cn, 9), KP_CRYPTO_E_INVAL);   /* no room */

	assert_int_equal(kp_cert_matches_key(pki.ca, pki.ca_key), KP_CRYPTO_OK);
	assert_int_equal(kp_cert_matches_key(pki.term, pki.term_key), KP_CRYPTO_OK);
	assert_int_equal(kp_cert_matches_key(pki.term, pki.ca_key), KP_CRYPTO_E_VERIFY);

	strcpy(err, "junk");
	assert_int_equal(kp_cert_check_issued_by(pki.term, pki.ca, err, sizeof(err)), KP_CRYPTO_OK);
	assert_string_equal(err, "");
	assert_int_equal(kp_cert_check_issued_by(pki.ca, pki.ca, err, sizeof(err)), KP_CRYPTO_OK);
	/* same CA name, other key */
	assert_int_equal(kp_cert_check_issued_by(pki.term, pki.other_ca, err, sizeof(err)),
	                 KP_CRYPTO_E_CHAIN);
	assert_string_not_equal(err, "");
	/* an end-entity certificate is no trust anchor for itself or others */
	assert_int_equal(kp_cert_check_issued_by(pki.term, pki.term, err, sizeof(err)),
	                 KP_CRYPTO_E_CHAIN);
	assert_int_equal(kp_cert_check_issued_by(pki.term, pki.ca, NULL, 0), KP_CRYPTO_OK);

	sha("a journal record", h);
	assert_int_equal(kp_key_sign(pki.term_key, h, sig), KP_CRYPTO_OK);
	assert_int_equal(kp_cert_verify(pki.term, h, sig), KP_CRYPTO_OK);
	assert_int_equal(kp_cert_verify(pki.ca, h, sig), KP_CRYPTO_E_VERIFY);
	sig[63] ^= 0x01;
	assert_int_equal(kp_cert_verify(pki.term, h, sig), KP_CRYPTO_E_VERIFY);
	sig[63] ^= 0x01;
	sig[0] ^= 0x80;
	assert_int_equal(kp_cert_verify(pki.term, h, sig), KP_CRYPTO_E_VERIFY);
}

static void test_cert_validity(void **state)
{
	int64_t now = (int64_t)time(NULL);
	kp_cert *c = NULL, *expired_ca = NULL;
	char err[256];

	(void)state;
	/* expired an hour ago */
	assert_int_equal(kp_cert_issue_validity(pki.ca_key, pki.ca, pki.term_key, "term-old",
	                                        now - 2 * 86400, now - 3600, tu_tmp("old.pem")),
	                 KP_CRYPTO_OK);
	assert_int_equal(kp_cert_load(&c, tu_tmp("old.pem")), KP_CRYPTO_OK);
	assert_int_equal(kp_cert_check_issued_by(c, pki.ca, err, sizeof(err)), KP_CRYPTO_E_CHAIN);
	assert_non_null(strstr(err, "expired"));
	kp_cert_free(c);
	/* valid from tomorrow */
	assert_int_equal(kp_cert_issue_validity(pki.ca_key, pki.ca, pki.term_key, "term-new",
	                                        now + 86400, now + 2 * 86400, tu_tmp("new.pem")),
	                 KP_CRYPTO_OK);
	assert_int_equal(kp_cert_load(&c, tu_tmp("new.pem")), KP_CRYPTO_OK);
	assert_int_equal(kp_cert_check_issued_by(c, pki.ca, err, sizeof(err)), KP_CRYPTO_E_CHAIN);
	assert_non_null(strstr(err, "future"));
	kp_cert_free(c);
	/* a valid certificate under an expired CA */
	assert_int_equal(kp_cert_create_ca_validity(pki.ca_key, "Kippu Test CA", now - 2 * 86400,
	                                            now - 60, tu_tmp("oldca.pem")), KP_CRYPTO_OK);
	assert_int_equal(kp_cert_load(&expired_ca, tu_tmp("oldca.pem")), KP_CRYPTO_OK);
	assert_int_equal(kp_cert_check_issued_by(pki.term, expired_ca, err, sizeof(err)),
	                 KP_CRYPTO_E_CHAIN);
	assert_non_null(strstr(err, "expired"));
	kp_cert_free(expired_ca);

	/* the days variants take 1..36500 */
	assert_int_equal(kp_cert_issue(pki.ca_key, pki.ca, pki.term_key, "t", 0, tu_tmp("x.pem")),
	                 KP_CRYPTO_E_INVAL);
	assert_int_equal(kp_cert_issue(pki.ca_key, pki.ca, pki.term_key, "t", -1, tu_tmp("x.pem")),
	                 KP_CRYPTO_E_INVAL);
	assert_int_equal(kp_cert_create_ca(pki.ca_key, "t", 36501, tu_tmp("x.pem")),
	                 KP_CRYPTO_E_INVAL);
	assert_int_equal(kp_cert_issue_validity(pki.ca_key, pki.ca, pki.term_key, "t", now, now - 1,
	                                        tu_tmp("x.pem")), KP_CRYPTO_E_INVAL);
	assert_int_equal(access(tu_tmp("x.pem"), F_OK), -1);
}

static void test_cert_bad_arguments(void **state)
{
	static const char *bad_cn[] = {
		"", "a,O=evil", "a=b", "a+b", "back\\slash", "quote\"", "tab\t",
		"12345678901234567890123456789012345678901234567890123456789012345", /* 65 */
	};
	size_t i;

	(void)state;
	for (i = 0; i < sizeof(bad_cn) / sizeof(bad_cn[0]); i++)
		assert_int_equal(kp_cert_issue(pki.ca_key, pki.ca, pki.term_key, bad_cn[i], 10,
		                               tu_tmp("x.pem")), KP_CRYPTO_E_INVAL);
	assert_int_equal(kp_cert_issue(pki.ca_key, pki.ca, pki.term_key, NULL, 10, tu_tmp("x.pem")),
	                 KP_CRYPTO_E_INVAL);
	/* an end-entity certificate cannot issue, and the CA key must match the CA */
	assert_int_equal(kp_cert_issue(pki.term_key, pki.term, pki.other_key, "t", 10,
	                               tu_tmp("x.pem")), KP_CRYPTO_E_INVAL);
	assert_int_equal(kp_cert_issue(pki.other_key, pki.ca, pki.term_key, "t", 10,
	                               tu_tmp("x.pem")), KP_CRYPTO_E_INVAL);
	assert_int_equal(kp_cert_issue(pki.ca_key, NULL, pki.term_key, "t", 10, tu_tmp("x.pem")),
	                 KP_CRYPTO_E_INVAL);
	assert_int_equal(access(tu_tmp("x.pem"), F_OK), -1);
	/* a UTF-8 CN is fine */
	assert_int_equal(kp_cert_issue(pki.ca_key, pki.ca, pki.term_key, "関西バス 42", 10,
	                               tu_tmp("utf8.pem")), KP_CRYPTO_OK);
}

static size_t b64_decode(const char *in, uint8_t *out, size_t cap)
{
	static const char tab[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
	uint32_t acc = 0;
	size_t n = 0;
	int bits = 0;

	for (; *in != '\0' && *in != '='; in++) {
		const char *p = strchr(tab, *in);

		if (p == NULL || *in == '\0')
			continue;
		acc = acc << 6 | (uint32_t)(p - tab);
		bits += 6;
		if (bits >= 8) {
			bits -= 8;
			assert_true(n < cap);
			out[n++] = (uint8_t)(acc >> bits);
		}
	}
	return n;
}

static void test_cert_parse_forms(void **state)
{
	char pem[4096], pem2[4096], body[4096];
	uint8_t der[2048];
	char cn[80];
	kp_cert *c = NULL;
	size_t n, dn;
	char *b, *e;

	(void)state;
	n = tu_read_bytes(tu_tmp("term.pem"), pem, sizeof(pem));
	/* PEM with and without the NUL */
	assert_int_equal(kp_cert_parse(&c, (const uint8_t *)pem, n), KP_CRYPTO_OK);
	kp_cert_free(c);
	assert_int_equal(kp_cert_parse(&c, (const uint8_t *)pem, n + 1), KP_CRYPTO_OK);
	/* write_pem gives the same text back */
	assert_int_equal(kp_cert_write_pem(c, tu_tmp("term2.pem")), KP_CRYPTO_OK);
	tu_read_bytes(tu_tmp("term2.pem"), pem2, sizeof(pem2));
	assert_string_equal(pem, pem2);
	kp_cert_free(c);
	/* DER */
	b = strchr(pem, '\n') + 1;
	e = strstr(pem, "-----END");
	memcpy(body, b, (size_t)(e - b));
	body[e - b] = '\0';
	dn = b64_decode(body, der, sizeof(der));
	assert_int_equal(kp_cert_parse(&c, der, dn), KP_CRYPTO_OK);
	assert_int_equal(kp_cert_subject_cn(c, cn, sizeof(cn)), KP_CRYPTO_OK);
	assert_string_equal(cn, "term-0001");
	kp_cert_free(c);
	tu_write_bytes(tu_tmp("term.der"), der, dn);
	assert_int_equal(kp_cert_load(&c, tu_tmp("term.der")), KP_CRYPTO_OK);
	kp_cert_free(c);
	c = NULL;
	/* errors */
	assert_int_equal(kp_cert_parse(&c, der, dn - 1), KP_CRYPTO_E_PARSE);
	assert_null(c);
	assert_int_equal(kp_cert_parse(&c, (const uint8_t *)pem, n / 2), KP_CRYPTO_E_PARSE);
	assert_int_equal(kp_cert_parse(&c, (const uint8_t *)"x", 1), KP_CRYPTO_E_PARSE);
	assert_int_equal(kp_cert_parse(&c, NULL, 5), KP_CRYPTO_E_INVAL);
	assert_int_equal(kp_cert_load(&c, tu_tmp("missing.pem")), KP_CRYPTO_E_IO);
	/* two certificates in one file are not one certificate */
	memcpy(pem2, pem, n);
	memcpy(pem2 + n, pem, n + 1);
	assert_int_equal(kp_cert_parse(&c, (const uint8_t *)pem2, 2 * n), KP_CRYPTO_E_PARSE);
	assert_null(c);
}

static void test_cert_rsa(void **state)
{
	uint8_t h[32] = { 0 }, sig[64] = { 0 };
	char cn[32];
	kp_cert *c = NULL;

	(void)state;
	assert_int_equal(kp_cert_parse(&c, (const uint8_t *)RSA_CERT_PEM, strlen(RSA_CERT_PEM)),
	                 KP_CRYPTO_OK);
	assert_int_equal(kp_cert_subject_cn(c, cn, sizeof(cn)), KP_CRYPTO_OK);
	assert_string_equal(cn, "rsa-test");
	assert_int_equal(kp_cert_verify(c, h, sig), KP_CRYPTO_E_KEYTYPE);
	assert_int_equal(kp_cert_matches_key(c, pki.term_key), KP_CRYPTO_E_KEYTYPE);
	assert_int_equal(kp_cert_issue(pki.ca_key, c, pki.term_key, "t", 10, tu_tmp("x.pem")),
	                 KP_CRYPTO_E_INVAL);
	kp_cert_free(c);
}

/* OpenSSL, an independent X.509 implementation, must accept our chain and see the
 * extensions the design asks for. Skipped when the openssl command is missing. */
static void test_cert_openssl_view(void **state)
{
	(void)state;
	if (system("command -v openssl >/dev/null 2>&1") != 0)
		skip();
	assert_int_equal(tu_sh("openssl verify -CAfile %s %s >/dev/null", tu_tmp("ca.pem"),
	                       tu_tmp("term.pem")), 0);
	/* each certificate's text, then what it must (and must not) say, in the scratch folder */
	assert_int_equal(tu_sh("cd %s && openssl x509 -in ca.pem -noout -text > ca.txt && "
	                       "openssl x509 -in term.pem -noout -text > term.txt", tu_scratch), 0);
	assert_int_equal(tu_sh("cd %s && grep -q 'CA:TRUE, pathlen:0' ca.txt && "
	                       "grep -q 'Certificate Sign, CRL Sign' ca.txt && "
	                       "grep -q 'Subject: CN = Kippu Test CA, O = kippu' ca.txt && "
	                       "grep -q 'ecdsa-with-SHA256' ca.txt", tu_scratch), 0);
	assert_int_equal(tu_sh("cd %s && grep -q 'CA:FALSE' term.txt && "
	                       "grep -q 'Digital Signature' term.txt && "
	                       "grep -q 'Subject: CN = term-0001, O = kippu' term.txt && "
	                       "grep -q 'Issuer: CN = Kippu Test CA, O = kippu' term.txt && "
	                       "{ grep -q 'Certificate Sign' term.txt; test $? -eq 1; }",
	                       tu_scratch), 0);
}

struct verify_job {
	uint8_t h[32], sig[64];
	int bad;
};

static void *verify_worker(void *arg)
{
	struct verify_job *j = arg;
	int i;

	for (i = 0; i < 50; i++)
		if (kp_cert_verify(pki.term, j->h, j->sig) != KP_CRYPTO_OK ||
		    kp_cert_check_issued_by(pki.term, pki.ca, NULL, 0) != KP_CRYPTO_OK)
			j->bad = 1;
	return NULL;
}

/* A cert is only read after loading, so threads may share it. */
static void test_cert_shared_by_threads(void **state)
{
	struct verify_job jobs[4];
	pthread_t t[4];
	kp_cert *fresh = NULL;
	struct kp_cert *saved = pki.term;
	size_t i;

	(void)state;
	/* a freshly loaded cert, never used before the threads start */
	assert_int_equal(kp_cert_load(&fresh, tu_tmp("term.pem")), KP_CRYPTO_OK);
	pki.term = fresh;
	for (i = 0; i < 4; i++) {
		jobs[i].bad = 0;
		sha(i % 2 ? "odd" : "even", jobs[i].h);
		assert_int_equal(kp_key_sign(pki.term_key, jobs[i].h, jobs[i].sig), KP_CRYPTO_OK);
	}
	for (i = 0; i < 4; i++)
		assert_int_equal(pthread_create(&t[i], NULL, verify_worker, &jobs[i]), 0);
	for (i = 0; i < 4; i++) {
		pthread_join(t[i], NULL);
		assert_int_equal(jobs[i].bad, 0);
	}
	pki.term = saved;
	kp_cert_free(fresh);
}

/* The tests below run between pki_setup and pki_teardown unless their row names others. */
#define FX_TEST(test) cmocka_unit_test_setup_teardown(test, pki_setup, pki_teardown)

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_sha256_vectors),
		cmocka_unit_test(test_hmac_rfc4231),
		cmocka_unit_test(test_random),
		cmocka_unit_test(test_random_fork),
		cmocka_unit_test(test_random_threads),
		cmocka_unit_test(test_zeroize_memcmp),
		cmocka_unit_test(test_strerror),
		cmocka_unit_test(test_ecdsa_rfc6979),
		cmocka_unit_test(test_key_from_raw_range),
		cmocka_unit_test(test_key_save_public),
		cmocka_unit_test(test_key_generate_sign_verify),
		cmocka_unit_test(test_key_save_load),
		cmocka_unit_test(test_key_load_forms_and_errors),
		FX_TEST(test_cert_ca_and_issue),
		FX_TEST(test_cert_validity),
		FX_TEST(test_cert_bad_arguments),
		FX_TEST(test_cert_parse_forms),
		FX_TEST(test_cert_rsa),
		FX_TEST(test_cert_openssl_view),
		FX_TEST(test_cert_shared_by_threads),
	};

	return cmocka_run_group_tests(tests, tu_scratch_setup, tu_scratch_teardown);
}
