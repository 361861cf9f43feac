/* SPDX-License-Identifier: Apache-2.0 */
/* Tests of the ES256 signing pool (crypto/sign_pool.c): every pooled signature verifies with
 * kp_key_verify and, independently of mbedTLS, with python3-cryptography; an empty pool
 * falls back to the deterministic signature; no entry signs twice; a removed entry is wiped. */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "kp_crypto.h"
#include "testutil.h"

#define N_SIGS 40

static kp_key *key;

static int setup(void **state)
{
	(void)state;
	return kp_key_generate(&key) == KP_CRYPTO_OK ? 0 : -1;
}

static int teardown(void **state)
{
	(void)state;
	kp_key_free(key);
	return 0;
}

static void hash_of(unsigned i, uint8_t h[KP_SHA256_LEN])
{
	char msg[32];

	snprintf(msg, sizeof(msg), "record %u", i);
	assert_int_equal(kp_sha256(msg, strlen(msg), h), KP_CRYPTO_OK);
}

static int all_zero(const uint8_t *p, size_t n)
{
	for (size_t i = 0; i < n; i++)
		if (p[i] != 0)
			return 0;
	return 1;
}

static void test_pool_open_args(void **state)
{
	kp_sign_pool *p = (kp_sign_pool *)1;
	struct kp_sign_pool_stats st;

	(void)state;
	assert_int_equal(kp_sign_pool_open(&p, NULL, 8), KP_CRYPTO_E_INVAL);
	assert_null(p);
	assert_int_equal(kp_sign_pool_open(&p, key, 0), KP_CRYPTO_E_INVAL);
	assert_int_equal(kp_sign_pool_open(&p, key, KP_SIGN_POOL_MAX + 1), KP_CRYPTO_E_INVAL);
	assert_int_equal(kp_sign_pool_open(&p, key, 8), KP_CRYPTO_OK);
	assert_int_equal(kp_sign_pool_count(p), 0);
	kp_sign_pool_stats(p, &st);
	assert_int_equal(st.capacity, 8);
	assert_true(st.bytes >= 8 * KP_SIGN_POOL_ENTRY);
	assert_int_equal(kp_sign_pool_refill(NULL, 1, NULL), KP_CRYPTO_E_INVAL);
	kp_sign_pool_free(p);
	kp_sign_pool_free(NULL);
}

/* Refill is bounded by max and by the capacity. */
static void test_pool_refill_bounded(void **state)
{
	kp_sign_pool *p = NULL;
	size_t added = 99;

	(void)state;
	assert_int_equal(kp_sign_pool_open(&p, key, 5), KP_CRYPTO_OK);
	assert_int_equal(kp_sign_pool_refill(p, 2, &added), KP_CRYPTO_OK);
	assert_int_equal(added, 2);
	assert_int_equal(kp_sign_pool_count(p), 2);
	assert_int_equal(kp_sign_pool_refill(p, 10, &added), KP_CRYPTO_OK);
	assert_int_equal(added, 3);
	assert_int_equal(kp_sign_pool_refill(p, 10, &added), KP_CRYPTO_OK);
	assert_int_equal(added, 0);
	assert_int_equal(kp_sign_pool_count(p), 5);
	kp_sign_pool_free(p);
}

/* Every pooled signature verifies; each takes one entry out; all r differ; the slot it
 * came from is zero afterwards; then the empty pool falls back to RFC 6979 (the same
 * bytes as kp_key_sign). The pairs go to python3-cryptography too. */
static void test_pool_sign_verify(void **state)
{
	char dir[256], path[300], cmd[1200];
	uint8_t h[KP_SHA256_LEN], sig[KP_ES256_SIG_LEN], det[KP_ES256_SIG_LEN];
	uint8_t rs[N_SIGS][32];
	struct kp_sign_pool_stats st;
	kp_sign_pool *p = NULL;
	const uint8_t *mem;
	size_t mem_len;
	FILE *fp;
	int pooled;

	(void)state;
	tu_tmpdir(dir, sizeof(dir));
	snprintf(path, sizeof(path), "%s/pub.pem", dir);
	assert_int_equal(kp_key_save_public(key, path), KP_CRYPTO_OK);
	snprintf(path, sizeof(path), "%s/sigs.txt", dir);
	fp = fopen(path, "w");
	assert_non_null(fp);
	assert_int_equal(kp_sign_pool_open(&p, key, N_SIGS), KP_CRYPTO_OK);
	assert_int_equal(kp_sign_pool_refill(p, N_SIGS, NULL), KP_CRYPTO_OK);
	mem = kp_sign_pool_memory(p, &mem_len);
	assert_int_equal(mem_len, N_SIGS * KP_SIGN_POOL_ENTRY);
	for (unsigned i = 0; i < N_SIGS; i++) {
		size_t left = N_SIGS - 1 - i;

		assert_false(all_zero(mem + left * KP_SIGN_POOL_ENTRY, KP_SIGN_POOL_ENTRY));
		hash_of(i, h);
		assert_int_equal(kp_sign_pool_sign(p, key, h, sig, &pooled), KP_CRYPTO_OK);
		assert_int_equal(pooled, 1);
		assert_int_equal(kp_sign_pool_count(p), left);
		/* the entry used is wiped in the pool */
		assert_true(all_zero(mem + left * KP_SIGN_POOL_ENTRY, KP_SIGN_POOL_ENTRY));
		assert_int_equal(kp_key_verify(key, h, sig), KP_CRYPTO_OK);
		/* random k: not the deterministic signature */
		assert_int_equal(kp_key_sign(key, h, det), KP_CRYPTO_OK);
		assert_memory_not_equal(sig, det, sizeof(sig));
		for (unsigned j = 0; j < i; j++)
			assert_memory_not_equal(rs[j], sig, 32);
		memcpy(rs[i], sig, 32);
		for (size_t b = 0; b < KP_SHA256_LEN; b++)
			fprintf(fp, "%02x", h[b]);
		fputc(' ', fp);
		for (size_t b = 0; b < sizeof(sig); b++)
			fprintf(fp, "%02x", sig[b]);
		fputc('\n', fp);
		/* a signature over another hash does not verify */
		h[0] ^= 1;
		assert_int_equal(kp_key_verify(key, h, sig), KP_CRYPTO_E_VERIFY);
	}
	assert_true(all_zero(mem, mem_len));
	/* empty: the ordinary deterministic signature */
	hash_of(999, h);
	assert_int_equal(kp_sign_pool_sign(p, key, h, sig, &pooled), KP_CRYPTO_OK);
	assert_int_equal(pooled, 0);
	assert_int_equal(kp_key_sign(key, h, det), KP_CRYPTO_OK);
	assert_memory_equal(sig, det, sizeof(sig));
	kp_sign_pool_stats(p, &st);
	assert_int_equal(st.pooled, N_SIGS);
	assert_int_equal(st.fallback, 1);
	assert_int_equal(st.computed, N_SIGS);
	assert_int_equal(st.count, 0);
	assert_int_equal(fclose(fp), 0);
	kp_sign_pool_free(p);

	/* independently of mbedTLS */
	snprintf(cmd, sizeof(cmd),
	         "cd '%s' && python3 - <<'EOF'\n"
	         "from cryptography.hazmat.primitives import hashes, serialization\n"
	         "from cryptography.hazmat.primitives.asymmetric import ec, utils\n"
	         "pub = serialization.load_pem_public_key(open('pub.pem', 'rb').read())\n"
	         "n = 0\n"
	         "for line in open('sigs.txt'):\n"
	         "    h, s = (bytes.fromhex(x) for x in line.split())\n"
	         "    der = utils.encode_dss_signature(int.from_bytes(s[:32], 'big'),\n"
	         "                                     int.from_bytes(s[32:], 'big'))\n"
	         "    pub.verify(der, h, ec.ECDSA(utils.Prehashed(hashes.SHA256())))\n"
	         "    n += 1\n"
	         "assert n == %d, n\n"
	         "EOF\n", dir, N_SIGS);
	assert_int_equal(system(cmd), 0);
	tu_rmdir(dir);
}

/* Without a pool (NULL) it is kp_key_sign; bad arguments are refused. */
static void test_pool_null(void **state)
{
	uint8_t h[KP_SHA256_LEN], sig[KP_ES256_SIG_LEN], det[KP_ES256_SIG_LEN];
	int pooled = 7;

	(void)state;
	hash_of(1, h);
	assert_int_equal(kp_sign_pool_sign(NULL, key, h, sig, &pooled), KP_CRYPTO_OK);
	assert_int_equal(pooled, 0);
	assert_int_equal(kp_key_sign(key, h, det), KP_CRYPTO_OK);
	assert_memory_equal(sig, det, sizeof(sig));
	assert_int_equal(kp_sign_pool_sign(NULL, NULL, h, sig, NULL), KP_CRYPTO_E_INVAL);
}

/* A forked child neither signs from nor touches its parent's pool (the mapping is not
 * inherited): it falls back, and the parent's entries are untouched. */
static void test_pool_fork(void **state)
{
	uint8_t h[KP_SHA256_LEN], sig[KP_ES256_SIG_LEN];
	kp_sign_pool *p = NULL;
	int status, pooled;
	pid_t pid;

	(void)state;
	hash_of(2, h);
	assert_int_equal(kp_sign_pool_open(&p, key, 4), KP_CRYPTO_OK);
	assert_int_equal(kp_sign_pool_refill(p, 4, NULL), KP_CRYPTO_OK);
	pid = fork();
	assert_true(pid >= 0);
	if (pid == 0) {
		int ok = kp_sign_pool_sign(p, key, h, sig, &pooled) == KP_CRYPTO_OK && pooled == 0 &&
		         kp_key_verify(key, h, sig) == KP_CRYPTO_OK;

		kp_sign_pool_free(p);
		_exit(ok ? 0 : 1);
	}
	assert_int_equal(waitpid(pid, &status, 0), pid);
	assert_true(WIFEXITED(status) && WEXITSTATUS(status) == 0);
	assert_int_equal(kp_sign_pool_count(p), 4);
	assert_int_equal(kp_sign_pool_sign(p, key, h, sig, &pooled), KP_CRYPTO_OK);
	assert_int_equal(pooled, 1);
	kp_sign_pool_free(p);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_pool_open_args),
		cmocka_unit_test(test_pool_refill_bounded),
		cmocka_unit_test(test_pool_sign_verify),
		cmocka_unit_test(test_pool_null),
		cmocka_unit_test(test_pool_fork),
	};

	return cmocka_run_group_tests(tests, setup, teardown);
}
