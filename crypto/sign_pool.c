/* SPDX-License-Identifier: Apache-2.0 */
/* kippu crypto: the ES256 signing pool (kp_sign_pool.h).
 *
 * ECDSA: s = k^-1 (e + r·d) mod n, r = (k·G).x mod n. mbedTLS's bignum arithmetic
 * (mbedtls_mpi_mod_mpi, _inv_mod) is not constant-time: the time of a reduction depends
 * on the value reduced. So no value that is reduced or inverted is a secret by itself;
 * each is a secret multiplied by a fresh uniformly random factor:
 *
 * Refill (idle; per entry, all factors fresh from kp_random, each in [1, n-1]):
 *   k, R = k·G        mbedtls_ecp_mul with the RNG: mbedTLS's comb method, which is
 *                     constant-time and randomises the point's coordinates
 *   r  = R.x mod n    public (it is half of the signature)
 *   kinv = (k·t)^-1 · t            the inversion sees k·t, uniform whatever k is
 *   ub = kinv · b                  the entry's k^-1, masked by b
 *   vb = ub·r·d1 + ub·r·d2 = k^-1·r·d·b
 *                                  d is held as two additive shares d1 + d2 = d mod n,
 *                                  re-randomised (d1 += m, d2 -= m) for every entry, so
 *                                  the reductions see products with random shares, not d
 *   binv = (b·u)^-1 · u            b^-1, the inversion seeing b·u
 * The entry keeps r, ub, vb, binv (128 bytes); k, kinv, b and the factors are wiped
 * (mbedtls_mpi_free zeroizes).
 *
 * Sign (the tap): the entry is copied out and wiped in the pool first, then
 *   s = ((ub·e + vb) mod n) · binv mod n  =  k^-1 (e + r·d) · b · b^-1
 * Two multiplications and two reductions. ub, vb and binv are each uniform and
 * independent of k and d (b is uniform and used once), and ub·e + vb = b·(e + r·d)/k is
 * b·s, s being public; the values reduced here tell nothing about d or k^-1 without b,
 * which is never reduced at this point. The integer products (mbedtls_mpi_mul_mpi) take
 * a time fixed by the operands' limb counts (4 limbs, unless the top 64 bits happen to
 * be zero). What is not claimed: the refill's arithmetic is mbedTLS's variable-time
 * bignum code on blinded values, like mbedTLS's own ECDSA signing (ecdsa.c blinds the
 * inversion the same way); a power or EM probe on the device is out of scope. */
#include "kp_sign_pool.h"
#include "kp_rng.h"
#include "crypto_int.h"

#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include <mbedtls/bignum.h>
#include <mbedtls/platform_util.h>

#define N_LEN 32

struct entry {
	uint8_t r[N_LEN];
	uint8_t ub[N_LEN];                   /* k^-1 · b */
	uint8_t vb[N_LEN];                   /* k^-1 · r · d · b */
	uint8_t binv[N_LEN];                 /* b^-1 */
};

struct kp_sign_pool {
	mbedtls_ecp_group grp;               /* the pool's own copy: k·G never touches the key's */
	mbedtls_mpi d1, d2;                  /* additive shares of d, re-randomised per entry */
	struct entry *slots;                 /* the mapping: capacity entries */
	size_t map_len;
	size_t capacity, count;
	int locked;
	pid_t pid;                           /* the process the mapping belongs to */
	uint64_t computed, pooled, fallback;
};

_Static_assert(sizeof(struct entry) == KP_SIGN_POOL_ENTRY, "entry layout");

static int pool_fail(int ret)
{
	return ret == 0 ? KP_CRYPTO_OK : kp_crypto_fail_map(ret);
}

/* A uniformly random scalar in [1, n-1]. */
static int rand_scalar(const kp_sign_pool *p, mbedtls_mpi *x)
{
	return mbedtls_ecp_gen_privkey(&p->grp, x, kp_crypto_rng, NULL);
}

/* x = a·b mod n */
static int mulmod(const kp_sign_pool *p, mbedtls_mpi *x, const mbedtls_mpi *a,
                  const mbedtls_mpi *b)
{
	int ret = mbedtls_mpi_mul_mpi(x, a, b);

	if (ret == 0)
		ret = mbedtls_mpi_mod_mpi(x, x, &p->grp.N);
	return ret;
}

/* x = a^-1 mod n, the inversion blinded by a fresh random factor: (a·t)^-1 · t. */
static int invmod_blind(const kp_sign_pool *p, mbedtls_mpi *x, const mbedtls_mpi *a)
{
	mbedtls_mpi t, at;
	int ret;

	mbedtls_mpi_init(&t);
	mbedtls_mpi_init(&at);
	ret = rand_scalar(p, &t);
	if (ret == 0)
		ret = mulmod(p, &at, a, &t);
	if (ret == 0)
		ret = mbedtls_mpi_inv_mod(x, &at, &p->grp.N);
	if (ret == 0)
		ret = mulmod(p, x, x, &t);
	mbedtls_mpi_free(&t);
	mbedtls_mpi_free(&at);
	return ret;
}

/* d1 += m, d2 -= m (mod n) for a fresh m: the shares change, their sum stays d. */
static int shares_rotate(kp_sign_pool *p)
{
	mbedtls_mpi m;
	int ret;

	mbedtls_mpi_init(&m);
	ret = rand_scalar(p, &m);
	if (ret == 0)
		ret = mbedtls_mpi_add_mpi(&p->d1, &p->d1, &m);
	if (ret == 0)
		ret = mbedtls_mpi_mod_mpi(&p->d1, &p->d1, &p->grp.N);
	if (ret == 0)
		ret = mbedtls_mpi_sub_mpi(&p->d2, &p->d2, &m);
	if (ret == 0)
		ret = mbedtls_mpi_mod_mpi(&p->d2, &p->d2, &p->grp.N);
	mbedtls_mpi_free(&m);
	return ret;
}

/* vb = c·d1 + c·d2 mod n (= c·d) */
static int times_d(kp_sign_pool *p, mbedtls_mpi *vb, const mbedtls_mpi *c)
{
	mbedtls_mpi x;
	int ret;

	mbedtls_mpi_init(&x);
	ret = shares_rotate(p);
	if (ret == 0)
		ret = mulmod(p, vb, c, &p->d1);
	if (ret == 0)
		ret = mulmod(p, &x, c, &p->d2);
	if (ret == 0)
		ret = mbedtls_mpi_add_mpi(vb, vb, &x);
	if (ret == 0)
		ret = mbedtls_mpi_mod_mpi(vb, vb, &p->grp.N);
	mbedtls_mpi_free(&x);
	return ret;
}

/* One entry into *out; *skip when r came out 0 (probability about 2^-256: draw again). */
static int entry_make(kp_sign_pool *p, struct entry *out, int *skip)
{
	mbedtls_mpi k, r, b, kinv, ub, c, vb, binv;
	mbedtls_ecp_point R;
	int ret;

	*skip = 0;
	mbedtls_mpi_init(&k);
	mbedtls_mpi_init(&r);
	mbedtls_mpi_init(&b);
	mbedtls_mpi_init(&kinv);
	mbedtls_mpi_init(&ub);
	mbedtls_mpi_init(&c);
	mbedtls_mpi_init(&vb);
	mbedtls_mpi_init(&binv);
	mbedtls_ecp_point_init(&R);
	ret = rand_scalar(p, &k);
	if (ret == 0)
		ret = mbedtls_ecp_mul(&p->grp, &R, &k, &p->grp.G, kp_crypto_rng, NULL);
	if (ret == 0)
		ret = mbedtls_mpi_mod_mpi(&r, &R.X, &p->grp.N);
	if (ret == 0 && mbedtls_mpi_cmp_int(&r, 0) == 0) {
		*skip = 1;
		goto out;
	}
	if (ret == 0)
		ret = rand_scalar(p, &b);
	if (ret == 0)
		ret = invmod_blind(p, &kinv, &k);
	if (ret == 0)
		ret = mulmod(p, &ub, &kinv, &b);
	if (ret == 0)
		ret = mulmod(p, &c, &ub, &r);
	if (ret == 0)
		ret = times_d(p, &vb, &c);
	if (ret == 0)
		ret = invmod_blind(p, &binv, &b);
	if (ret == 0)
		ret = mbedtls_mpi_write_binary(&r, out->r, N_LEN);
	if (ret == 0)
		ret = mbedtls_mpi_write_binary(&ub, out->ub, N_LEN);
	if (ret == 0)
		ret = mbedtls_mpi_write_binary(&vb, out->vb, N_LEN);
	if (ret == 0)
		ret = mbedtls_mpi_write_binary(&binv, out->binv, N_LEN);
out:
	mbedtls_ecp_point_free(&R);
	mbedtls_mpi_free(&k);
	mbedtls_mpi_free(&r);
	mbedtls_mpi_free(&b);
	mbedtls_mpi_free(&kinv);
	mbedtls_mpi_free(&ub);
	mbedtls_mpi_free(&c);
	mbedtls_mpi_free(&vb);
	mbedtls_mpi_free(&binv);
	return ret;
}

/* The entries' memory: anonymous pages, locked when allowed (RLIMIT_MEMLOCK), out of core
 * dumps and not mapped in a forked child. */
static int pool_map(kp_sign_pool *p)
{
	long page = sysconf(_SC_PAGESIZE);
	size_t pg = page > 0 ? (size_t)page : 4096;
	void *m;

	p->map_len = (p->capacity * sizeof(struct entry) + pg - 1) / pg * pg;
	m = mmap(NULL, p->map_len, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	if (m == MAP_FAILED) {
		p->map_len = 0;
		return KP_CRYPTO_E_NOMEM;
	}
	p->slots = m;
	p->locked = mlock(m, p->map_len) == 0;
	(void)madvise(m, p->map_len, MADV_DONTDUMP);
	(void)madvise(m, p->map_len, MADV_DONTFORK);
	return KP_CRYPTO_OK;
}

void kp_sign_pool_free(kp_sign_pool *p)
{
	if (p == NULL)
		return;
	/* In a forked child the mapping is not there (MADV_DONTFORK): nothing to wipe. */
	if (p->slots != NULL && p->pid == getpid()) {
		mbedtls_platform_zeroize(p->slots, p->map_len);
		if (p->locked)
			munlock(p->slots, p->map_len);
		munmap(p->slots, p->map_len);
	}
	mbedtls_mpi_free(&p->d1);
	mbedtls_mpi_free(&p->d2);
	mbedtls_ecp_group_free(&p->grp);
	mbedtls_platform_zeroize(p, sizeof(*p));
	free(p);
}

int kp_sign_pool_open(kp_sign_pool **out, const kp_key *key, size_t capacity)
{
	mbedtls_ecp_keypair *ec;
	kp_sign_pool *p;
	int rc = KP_CRYPTO_OK;
	int ret;

	if (out == NULL)
		return KP_CRYPTO_E_INVAL;
	*out = NULL;
	if (key == NULL || capacity == 0 || capacity > KP_SIGN_POOL_MAX)
		return KP_CRYPTO_E_INVAL;
	ec = kp_crypto_pk_p256(kp_crypto_key_pk(key));
	if (ec == NULL)
		return KP_CRYPTO_E_KEYTYPE;
	p = calloc(1, sizeof(*p));
	if (p == NULL)
		return KP_CRYPTO_E_NOMEM;
	mbedtls_ecp_group_init(&p->grp);
	mbedtls_mpi_init(&p->d1);
	mbedtls_mpi_init(&p->d2);
	p->capacity = capacity;
	p->pid = getpid();
	rc = pool_map(p);
	if (rc != KP_CRYPTO_OK)
		goto out;
	ret = mbedtls_ecp_group_load(&p->grp, MBEDTLS_ECP_DP_SECP256R1);
	/* d = d1 + d2: d1 random, d2 = d - d1 mod n */
	if (ret == 0)
		ret = rand_scalar(p, &p->d1);
	if (ret == 0)
		ret = mbedtls_mpi_sub_mpi(&p->d2, &ec->d, &p->d1);
	if (ret == 0)
		ret = mbedtls_mpi_mod_mpi(&p->d2, &p->d2, &p->grp.N);
	rc = pool_fail(ret);
out:
	if (rc != KP_CRYPTO_OK) {
		kp_sign_pool_free(p);
		return rc;
	}
	*out = p;
	return KP_CRYPTO_OK;
}

int kp_sign_pool_refill(kp_sign_pool *p, size_t max, size_t *added)
{
	size_t n = 0;
	int ret = 0;

	if (added != NULL)
		*added = 0;
	if (p == NULL)
		return KP_CRYPTO_E_INVAL;
	if (p->pid != getpid())
		return KP_CRYPTO_OK;            /* a forked child has no pool */
	while (n < max && p->count < p->capacity) {
		int skip = 0;

		ret = entry_make(p, &p->slots[p->count], &skip);
		if (ret != 0) {
			mbedtls_platform_zeroize(&p->slots[p->count], sizeof(struct entry));
			break;
		}
		if (skip)
			continue;
		p->count++;
		p->computed++;
		n++;
	}
	if (added != NULL)
		*added = n;
	return pool_fail(ret);
}

/* s = ((ub·e + vb) mod n) · binv mod n, from an entry already out of the pool. */
static int sign_with(const kp_sign_pool *p, const struct entry *en,
                     const uint8_t hash[KP_SHA256_LEN], uint8_t sig[KP_ES256_SIG_LEN])
{
	mbedtls_mpi e, ub, vb, binv, x;
	int ret;

	mbedtls_mpi_init(&e);
	mbedtls_mpi_init(&ub);
	mbedtls_mpi_init(&vb);
	mbedtls_mpi_init(&binv);
	mbedtls_mpi_init(&x);
	/* e: the hash as an integer; P-256's n has 256 bits, so no truncation (SEC 1 4.1.3). */
	ret = mbedtls_mpi_read_binary(&e, hash, KP_SHA256_LEN);
	if (ret == 0)
		ret = mbedtls_mpi_read_binary(&ub, en->ub, N_LEN);
	if (ret == 0)
		ret = mbedtls_mpi_read_binary(&vb, en->vb, N_LEN);
	if (ret == 0)
		ret = mbedtls_mpi_read_binary(&binv, en->binv, N_LEN);
	if (ret == 0)
		ret = mbedtls_mpi_mul_mpi(&x, &ub, &e);
	if (ret == 0)
		ret = mbedtls_mpi_add_mpi(&x, &x, &vb);
	if (ret == 0)
		ret = mbedtls_mpi_mod_mpi(&x, &x, &p->grp.N);
	if (ret == 0)
		ret = mulmod(p, &x, &x, &binv);
	if (ret == 0 && mbedtls_mpi_cmp_int(&x, 0) == 0)
		ret = MBEDTLS_ERR_ECP_RANDOM_FAILED;        /* s = 0: never with a valid entry */
	if (ret == 0) {
		memcpy(sig, en->r, N_LEN);
		ret = mbedtls_mpi_write_binary(&x, sig + N_LEN, N_LEN);
	}
	mbedtls_mpi_free(&e);
	mbedtls_mpi_free(&ub);
	mbedtls_mpi_free(&vb);
	mbedtls_mpi_free(&binv);
	mbedtls_mpi_free(&x);
	return ret;
}

int kp_sign_pool_sign(kp_sign_pool *p, const kp_key *key, const uint8_t hash[KP_SHA256_LEN],
                      uint8_t sig[KP_ES256_SIG_LEN], int *pooled)
{
	struct entry en;
	int ret;

	if (pooled != NULL)
		*pooled = 0;
	if (key == NULL || hash == NULL || sig == NULL)
		return KP_CRYPTO_E_INVAL;
	if (p == NULL || p->count == 0 || p->pid != getpid()) {
		if (p != NULL)
			p->fallback++;
		return kp_key_sign(key, hash, sig);
	}
	/* Out of the pool before it is used: whatever happens next, it is gone. */
	p->count--;
	memcpy(&en, &p->slots[p->count], sizeof(en));
	mbedtls_platform_zeroize(&p->slots[p->count], sizeof(en));
	ret = sign_with(p, &en, hash, sig);
	mbedtls_platform_zeroize(&en, sizeof(en));
	if (ret != 0) {
		memset(sig, 0, KP_ES256_SIG_LEN);
		return pool_fail(ret);
	}
	p->pooled++;
	if (pooled != NULL)
		*pooled = 1;
	return KP_CRYPTO_OK;
}

size_t kp_sign_pool_count(const kp_sign_pool *p)
{
	return p == NULL ? 0 : p->count;
}

void kp_sign_pool_stats(const kp_sign_pool *p, struct kp_sign_pool_stats *st)
{
	memset(st, 0, sizeof(*st));
	if (p == NULL)
		return;
	st->count = p->count;
	st->capacity = p->capacity;
	st->bytes = p->map_len;
	st->locked = p->locked;
	st->computed = p->computed;
	st->pooled = p->pooled;
	st->fallback = p->fallback;
}

const uint8_t *kp_sign_pool_memory(const kp_sign_pool *p, size_t *len)
{
	*len = p == NULL ? 0 : p->capacity * sizeof(struct entry);
	return p == NULL ? NULL : (const uint8_t *)p->slots;
}
