/* SPDX-License-Identifier: Apache-2.0 */
/* kippu crypto: the fork-safe CTR_DRBG, and the process's one instance behind kp_random.
 * Each TLS configuration (tls.c) has a DRBG of its own and draws from it the same way. */
#include "kp_rng.h"
#include "crypto_int.h"

#include <pthread.h>
#include <string.h>
#include <unistd.h>

void kp_crypto_drbg_init(struct kp_crypto_drbg *d)
{
	mbedtls_entropy_init(&d->entropy);
	mbedtls_ctr_drbg_init(&d->ctr);
	d->pid = 0;
}

void kp_crypto_drbg_free(struct kp_crypto_drbg *d)
{
	mbedtls_ctr_drbg_free(&d->ctr);             /* zeroizes the DRBG state */
	mbedtls_entropy_free(&d->entropy);
}

int kp_crypto_drbg_seed(struct kp_crypto_drbg *d, const char *pers)
{
	int ret = mbedtls_ctr_drbg_seed(&d->ctr, mbedtls_entropy_func, &d->entropy,
	                                (const unsigned char *)pers, strlen(pers));

	if (ret != 0) {
		/* A failed seed leaves the context half set up: start it over next time. */
		mbedtls_ctr_drbg_free(&d->ctr);
		mbedtls_ctr_drbg_init(&d->ctr);
		return ret;
	}
	d->pid = getpid();
	return 0;
}

int kp_crypto_drbg_draw(struct kp_crypto_drbg *d, unsigned char *buf, size_t len)
{
	pid_t pid = getpid();
	int ret;

	/* A forked child must not repeat its parent's output (nor its ECDHE keys). */
	if (pid != d->pid) {
		ret = mbedtls_ctr_drbg_reseed(&d->ctr, (const unsigned char *)&pid, sizeof(pid));
		if (ret != 0)
			return ret;
		d->pid = pid;
	}
	while (len > 0) {
		size_t chunk = len < MBEDTLS_CTR_DRBG_MAX_REQUEST ? len : MBEDTLS_CTR_DRBG_MAX_REQUEST;

		/* _with_add: the lock is the caller's, mbedtls_ctr_drbg_random would take a second one. */
		ret = mbedtls_ctr_drbg_random_with_add(&d->ctr, buf, chunk, NULL, 0);
		if (ret != 0)
			return ret;
		buf += chunk;
		len -= chunk;
	}
	return 0;
}

/* ---- kp_random ----
 * One DRBG for the process: set up once (pthread_once), seeding and every draw under
 * rng_lock. Seeding happens on first use and is retried after a failure, so a momentary
 * entropy failure at start-up does not disable signing for the life of the process. */
static pthread_once_t rng_once = PTHREAD_ONCE_INIT;
static pthread_mutex_t rng_lock = PTHREAD_MUTEX_INITIALIZER;
static struct kp_crypto_drbg rng;
static int rng_seeded;

static void rng_init_once(void)
{
	kp_crypto_drbg_init(&rng);
}

int kp_random(void *buf, size_t len)
{
	int rc = KP_CRYPTO_OK;
	int ret = 0;

	if (buf == NULL && len > 0)
		return KP_CRYPTO_E_INVAL;
	if (len == 0)
		return KP_CRYPTO_OK;
	if (pthread_once(&rng_once, rng_init_once) != 0)
		return KP_CRYPTO_E_RNG;
	if (pthread_mutex_lock(&rng_lock) != 0)
		return KP_CRYPTO_E_RNG;
	if (!rng_seeded) {
		ret = kp_crypto_drbg_seed(&rng, "kippu kp_random");
		rng_seeded = ret == 0;
	}
	if (ret == 0)
		ret = kp_crypto_drbg_draw(&rng, buf, len);
	if (ret != 0)
		rc = kp_crypto_fail_mbed(KP_CRYPTO_E_RNG, ret);
	pthread_mutex_unlock(&rng_lock);
	if (rc != KP_CRYPTO_OK)
		kp_zeroize(buf, len);       /* no partial output */
	return rc;
}

int kp_crypto_rng(void *ctx, unsigned char *buf, size_t len)
{
	(void)ctx;
	return kp_random(buf, len) == KP_CRYPTO_OK ? 0 : MBEDTLS_ERR_CTR_DRBG_ENTROPY_SOURCE_FAILED;
}
