/* kippu crypto: hashes, the process CSPRNG, ECDSA P-256 keys, RSA keys (JPKI) and X.509
 * certificates on mbedTLS 2.28. The only file that includes mbedTLS headers for primitives. */
#include "kp_crypto.h"
#include "crypto_int.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <mbedtls/asn1write.h>
#include <mbedtls/base64.h>
#include <mbedtls/bignum.h>
#include <mbedtls/constant_time.h>
#include <mbedtls/ctr_drbg.h>
#include <mbedtls/ecdsa.h>
#include <mbedtls/ecp.h>
#include <mbedtls/entropy.h>
#include <mbedtls/error.h>
#include <mbedtls/md.h>
#include <mbedtls/oid.h>
#include <mbedtls/pem.h>
#include <mbedtls/pk.h>
#include <mbedtls/platform_util.h>
#include <mbedtls/rsa.h>
#include <mbedtls/sha256.h>
#include <mbedtls/x509_crt.h>

#define KEY_FILE_MAX   (64 * 1024)      /* no key or certificate file we accept is larger */
#define PEM_BUF_SIZE   4096             /* a P-256 key, or any certificate we write, fits */
#define CN_MAX         64               /* X.509 ub-common-name */
#define SECONDS_PER_DAY 86400
#define DAYS_MAX       36500
#define X509_TIME_MAX  INT64_C(253402300799) /* 9999-12-31 23:59:59, GeneralizedTime's end */

struct kp_key {
	mbedtls_pk_context pk;
};

struct kp_cert {
	mbedtls_x509_crt crt;
};

/* ---- errors ---- */

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

/* Records mbedTLS's text for ret (when non-zero) and returns rc. */
static int fail_mbed(int rc, int ret)
{
	if (ret != 0)
		mbedtls_strerror(ret, last_error, sizeof(last_error));
	else
		snprintf(last_error, sizeof(last_error), "%s", kp_crypto_strerror(rc));
	return rc;
}

static int fail_errno(int rc, const char *what, const char *path, int err)
{
	/* A long path is cut short: the message is for logs only. */
	if (snprintf(last_error, sizeof(last_error), "%s %s: %s", what, path, strerror(err)) < 0)
		last_error[0] = '\0';
	return rc;
}

/* Allocation failures keep their own code so callers can tell them from bugs. */
static int fail_mbed_map(int ret)
{
	switch (ret) {
	case MBEDTLS_ERR_MPI_ALLOC_FAILED:
	case MBEDTLS_ERR_ECP_ALLOC_FAILED:
	case MBEDTLS_ERR_PK_ALLOC_FAILED:
	case MBEDTLS_ERR_X509_ALLOC_FAILED:
	case MBEDTLS_ERR_ASN1_ALLOC_FAILED:
	case MBEDTLS_ERR_PEM_ALLOC_FAILED:
	case MBEDTLS_ERR_MD_ALLOC_FAILED:
		return fail_mbed(KP_CRYPTO_E_NOMEM, ret);
	case MBEDTLS_ERR_CTR_DRBG_ENTROPY_SOURCE_FAILED:
	case MBEDTLS_ERR_ENTROPY_SOURCE_FAILED:
		return fail_mbed(KP_CRYPTO_E_RNG, ret);
	default:
		return fail_mbed(KP_CRYPTO_E_INTERNAL, ret);
	}
}

/* ---- small helpers ---- */

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
		return fail_mbed_map(ret);
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
		return fail_mbed_map(ret);
	return KP_CRYPTO_OK;
}

/* ---- CSPRNG ----
 * One CTR_DRBG for the process: contexts set up once (pthread_once), seeding and every
 * draw under rng_lock. Seeding happens on first use and is retried after a failure, so a
 * momentary entropy failure at start-up does not disable signing for the life of the process.
 * A forked child reseeds before its first draw, so parent and child never share output. */
static pthread_once_t rng_once = PTHREAD_ONCE_INIT;
static pthread_mutex_t rng_lock = PTHREAD_MUTEX_INITIALIZER;
static mbedtls_entropy_context rng_entropy;
static mbedtls_ctr_drbg_context rng_drbg;
static int rng_seeded;
static pid_t rng_pid;

static void rng_init_once(void)
{
	mbedtls_entropy_init(&rng_entropy);
	mbedtls_ctr_drbg_init(&rng_drbg);
}

/* Called with rng_lock held. */
static int rng_ready(void)
{
	static const unsigned char pers[] = "kippu kp_random";
	pid_t pid = getpid();
	int ret;

	if (!rng_seeded) {
		ret = mbedtls_ctr_drbg_seed(&rng_drbg, mbedtls_entropy_func, &rng_entropy,
		                            pers, sizeof(pers) - 1);
		if (ret != 0) {
			/* A failed seed leaves the context half set up: start it over next time. */
			mbedtls_ctr_drbg_free(&rng_drbg);
			mbedtls_ctr_drbg_init(&rng_drbg);
			return fail_mbed(KP_CRYPTO_E_RNG, ret);
		}
		rng_seeded = 1;
		rng_pid = pid;
	} else if (pid != rng_pid) {
		ret = mbedtls_ctr_drbg_reseed(&rng_drbg, (const unsigned char *)&pid, sizeof(pid));
		if (ret != 0)
			return fail_mbed(KP_CRYPTO_E_RNG, ret);
		rng_pid = pid;
	}
	return KP_CRYPTO_OK;
}

int kp_random(void *buf, size_t len)
{
	unsigned char *p = buf;
	int rc = KP_CRYPTO_OK;
	int ret;

	if (buf == NULL && len > 0)
		return KP_CRYPTO_E_INVAL;
	if (len == 0)
		return KP_CRYPTO_OK;
	if (pthread_once(&rng_once, rng_init_once) != 0)
		return KP_CRYPTO_E_RNG;
	if (pthread_mutex_lock(&rng_lock) != 0)
		return KP_CRYPTO_E_RNG;
	rc = rng_ready();
	if (rc != KP_CRYPTO_OK)
		goto out;
	while (len > 0) {
		size_t chunk = len < MBEDTLS_CTR_DRBG_MAX_REQUEST ? len : MBEDTLS_CTR_DRBG_MAX_REQUEST;

		ret = mbedtls_ctr_drbg_random(&rng_drbg, p, chunk);
		if (ret != 0) {
			rc = fail_mbed(KP_CRYPTO_E_RNG, ret);
			goto out;
		}
		p += chunk;
		len -= chunk;
	}
out:
	pthread_mutex_unlock(&rng_lock);
	if (rc != KP_CRYPTO_OK)
		kp_zeroize(buf, (size_t)(p - (unsigned char *)buf));
	return rc;
}

/* mbedTLS's RNG callback shape. */
static int rng_cb(void *ctx, unsigned char *buf, size_t len)
{
	(void)ctx;
	return kp_random(buf, len) == KP_CRYPTO_OK ? 0 : MBEDTLS_ERR_CTR_DRBG_ENTROPY_SOURCE_FAILED;
}

/* ---- files ---- */

/* Reads a whole regular file into a fresh buffer with a NUL after the data (mbedTLS wants
 * PEM NUL-terminated). The buffer is zeroized by the caller with kp_zeroize + free. */
static int file_read(const char *path, unsigned char **out, size_t *out_len)
{
	unsigned char *buf = NULL;
	struct stat st = { 0 };
	size_t got = 0;
	int fd = -1;
	int rc = KP_CRYPTO_OK;

	*out = NULL;
	*out_len = 0;
	fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0) {
		rc = fail_errno(KP_CRYPTO_E_IO, "open", path, errno);
		goto out;
	}
	if (fstat(fd, &st) != 0) {
		rc = fail_errno(KP_CRYPTO_E_IO, "stat", path, errno);
		goto out;
	}
	/* A directory or device would make mbedTLS's own loader ask for absurd buffers. */
	if (!S_ISREG(st.st_mode) || st.st_size < 0 || st.st_size > KEY_FILE_MAX) {
		rc = fail_errno(KP_CRYPTO_E_IO, "read", path, S_ISREG(st.st_mode) ? EFBIG : EINVAL);
		goto out;
	}
	buf = calloc(1, (size_t)st.st_size + 1);
	if (buf == NULL) {
		rc = KP_CRYPTO_E_NOMEM;
		goto out;
	}
	while (got < (size_t)st.st_size) {
		ssize_t n = read(fd, buf + got, (size_t)st.st_size - got);

		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0) {
			rc = fail_errno(KP_CRYPTO_E_IO, "read", path, errno);
			goto out;
		}
		if (n == 0)
			break;          /* the file shrank: parse what is there */
		got += (size_t)n;
	}
	buf[got] = '\0';
	*out = buf;
	*out_len = got;
	buf = NULL;
out:
	if (buf != NULL) {
		kp_zeroize(buf, (size_t)st.st_size + 1);
		free(buf);
	}
	if (fd >= 0)
		close(fd);
	return rc;
}

/* PEM if it has a BEGIN line; mbedTLS then needs the length to include the NUL. */
static size_t pem_or_der_len(const unsigned char *buf, size_t len)
{
	static const char begin[] = "-----BEGIN";

	if (memmem(buf, len, begin, sizeof(begin) - 1) != NULL)
		return len + 1;
	return len;
}

static int write_all(int fd, const void *buf, size_t len)
{
	const unsigned char *p = buf;

	while (len > 0) {
		ssize_t n = write(fd, p, len);

		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0)
			return -1;
		p += n;
		len -= (size_t)n;
	}
	return 0;
}

/* Makes a rename or create in path's folder durable. */
static int fsync_parent(const char *path)
{
	char dir[PATH_MAX];
	const char *slash = strrchr(path, '/');
	size_t n;
	int fd, r;

	if (slash == NULL) {
		strcpy(dir, ".");
	} else {
		n = slash == path ? 1 : (size_t)(slash - path);
		if (n >= sizeof(dir))
			return -1;
		memcpy(dir, path, n);
		dir[n] = '\0';
	}
	fd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (fd < 0)
		return -1;
	r = fsync(fd);
	close(fd);
	return r;
}

/* Creates path with mode 0600; fails with KP_CRYPTO_E_EXISTS if anything is there
 * (O_EXCL also refuses a symlink planted at path). */
static int file_write_secret(const char *path, const void *buf, size_t len)
{
	int fd, rc = KP_CRYPTO_OK;

	fd = open(path, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
	if (fd < 0) {
		if (errno == EEXIST)
			return fail_errno(KP_CRYPTO_E_EXISTS, "create", path, errno);
		return fail_errno(KP_CRYPTO_E_IO, "create", path, errno);
	}
	/* The umask may only take bits away, but the contract is exactly 0600. */
	if (fchmod(fd, 0600) != 0 || write_all(fd, buf, len) != 0 || fsync(fd) != 0) {
		rc = fail_errno(KP_CRYPTO_E_IO, "write", path, errno);
		goto out;
	}
out:
	if (close(fd) != 0 && rc == KP_CRYPTO_OK)
		rc = fail_errno(KP_CRYPTO_E_IO, "close", path, errno);
	if (rc != KP_CRYPTO_OK)
		unlink(path);   /* we created it: leave no half-written key behind */
	else if (fsync_parent(path) != 0)
		rc = fail_errno(KP_CRYPTO_E_IO, "fsync folder of", path, errno);
	return rc;
}

/* Replaces path atomically (temporary file + rename), mode 0644: public data only. */
static int file_write_public(const char *path, const void *buf, size_t len)
{
	char tmp[PATH_MAX];
	int fd = -1, rc = KP_CRYPTO_OK;

	if (snprintf(tmp, sizeof(tmp), "%s.tmpXXXXXX", path) >= (int)sizeof(tmp))
		return KP_CRYPTO_E_INVAL;
	fd = mkstemp(tmp);
	if (fd < 0)
		return fail_errno(KP_CRYPTO_E_IO, "create", tmp, errno);
	if (fchmod(fd, 0644) != 0 || write_all(fd, buf, len) != 0 || fsync(fd) != 0) {
		rc = fail_errno(KP_CRYPTO_E_IO, "write", tmp, errno);
		goto out;
	}
	if (close(fd) != 0) {
		fd = -1;
		rc = fail_errno(KP_CRYPTO_E_IO, "close", tmp, errno);
		goto out;
	}
	fd = -1;
	if (rename(tmp, path) != 0) {
		rc = fail_errno(KP_CRYPTO_E_IO, "rename to", path, errno);
		goto out;
	}
	if (fsync_parent(path) != 0)
		rc = fail_errno(KP_CRYPTO_E_IO, "fsync folder of", path, errno);
	return rc;
out:
	if (fd >= 0)
		close(fd);
	unlink(tmp);
	return rc;
}

/* ---- ECDSA P-256 ---- */

/* mbedTLS 2.28 takes non-const contexts even where it only reads them. */
static mbedtls_pk_context *key_pk(const kp_key *key)
{
	return (mbedtls_pk_context *)&key->pk;
}

static mbedtls_x509_crt *cert_crt(const kp_cert *cert)
{
	return (mbedtls_x509_crt *)&cert->crt;
}

/* The pk's EC key pair if it is an ECDSA-capable P-256 key, else NULL. */
static mbedtls_ecp_keypair *pk_p256(const mbedtls_pk_context *pk)
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
 * signs and verifies only read the group. */
static int ec_warm(mbedtls_ecp_keypair *ec)
{
	mbedtls_ecp_point r;
	mbedtls_mpi one;
	int ret;

	mbedtls_ecp_point_init(&r);
	mbedtls_mpi_init(&one);
	ret = mbedtls_mpi_lset(&one, 1);
	if (ret == 0)
		ret = mbedtls_ecp_mul(&ec->grp, &r, &one, &ec->grp.G, rng_cb, NULL);
	mbedtls_mpi_free(&one);
	mbedtls_ecp_point_free(&r);
	return ret;
}

/* Checks a freshly parsed private key: P-256, and the stored public point is d·G
 * (which also fills the base-point table, see ec_warm). */
static int key_check_loaded(kp_key *key)
{
	mbedtls_ecp_keypair *ec = pk_p256(&key->pk);
	mbedtls_ecp_point q;
	int rc = KP_CRYPTO_OK;
	int ret;

	mbedtls_ecp_point_init(&q);
	if (ec == NULL) {
		rc = fail_mbed(KP_CRYPTO_E_KEYTYPE, 0);
		goto out;
	}
	ret = mbedtls_ecp_mul(&ec->grp, &q, &ec->d, &ec->grp.G, rng_cb, NULL);
	if (ret != 0) {
		rc = fail_mbed_map(ret);
		goto out;
	}
	if (mbedtls_ecp_point_cmp(&q, &ec->Q) != 0) {
		rc = fail_mbed(KP_CRYPTO_E_PARSE, 0);
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

int kp_key_generate(kp_key **out)
{
	kp_key *key = NULL;
	int rc = KP_CRYPTO_OK;
	int ret;

	if (out == NULL)
		return KP_CRYPTO_E_INVAL;
	*out = NULL;
	key = key_new();
	if (key == NULL) {
		rc = KP_CRYPTO_E_NOMEM;
		goto out;
	}
	ret = mbedtls_pk_setup(&key->pk, mbedtls_pk_info_from_type(MBEDTLS_PK_ECKEY));
	if (ret == 0)   /* computing Q = d·G fills the base-point table too */
		ret = mbedtls_ecp_gen_key(MBEDTLS_ECP_DP_SECP256R1, mbedtls_pk_ec(key->pk), rng_cb, NULL);
	if (ret != 0) {
		rc = fail_mbed_map(ret);
		goto out;
	}
	*out = key;
	key = NULL;
out:
	kp_key_free(key);
	return rc;
}

int kp_key_from_raw(kp_key **out, const uint8_t d[32])
{
	mbedtls_ecp_keypair *ec;
	kp_key *key = NULL;
	int rc = KP_CRYPTO_OK;
	int ret;

	if (out == NULL || d == NULL)
		return KP_CRYPTO_E_INVAL;
	*out = NULL;
	key = key_new();
	if (key == NULL) {
		rc = KP_CRYPTO_E_NOMEM;
		goto out;
	}
	ret = mbedtls_pk_setup(&key->pk, mbedtls_pk_info_from_type(MBEDTLS_PK_ECKEY));
	if (ret != 0) {
		rc = fail_mbed_map(ret);
		goto out;
	}
	ec = mbedtls_pk_ec(key->pk);
	ret = mbedtls_ecp_group_load(&ec->grp, MBEDTLS_ECP_DP_SECP256R1);
	if (ret == 0)
		ret = mbedtls_mpi_read_binary(&ec->d, d, 32);
	if (ret != 0) {
		rc = fail_mbed_map(ret);
		goto out;
	}
	ret = mbedtls_ecp_check_privkey(&ec->grp, &ec->d);   /* 1 <= d < n */
	if (ret != 0) {
		rc = fail_mbed(KP_CRYPTO_E_INVAL, ret);
		goto out;
	}
	ret = mbedtls_ecp_mul(&ec->grp, &ec->Q, &ec->d, &ec->grp.G, rng_cb, NULL);
	if (ret != 0) {
		rc = fail_mbed_map(ret);
		goto out;
	}
	*out = key;
	key = NULL;
out:
	kp_key_free(key);
	return rc;
}

int kp_key_load(kp_key **out, const char *path)
{
	unsigned char *buf = NULL;
	size_t len = 0;
	kp_key *key = NULL;
	int rc;
	int ret;

	if (out == NULL || path == NULL)
		return KP_CRYPTO_E_INVAL;
	*out = NULL;
	rc = file_read(path, &buf, &len);
	if (rc != KP_CRYPTO_OK)
		goto out;
	key = key_new();
	if (key == NULL) {
		rc = KP_CRYPTO_E_NOMEM;
		goto out;
	}
	ret = mbedtls_pk_parse_key(&key->pk, buf, pem_or_der_len(buf, len), NULL, 0);
	if (ret != 0) {
		rc = ret == MBEDTLS_ERR_PK_ALLOC_FAILED ? fail_mbed(KP_CRYPTO_E_NOMEM, ret)
		                                        : fail_mbed(KP_CRYPTO_E_PARSE, ret);
		goto out;
	}
	rc = key_check_loaded(key);
	if (rc != KP_CRYPTO_OK)
		goto out;
	*out = key;
	key = NULL;
out:
	if (buf != NULL) {
		kp_zeroize(buf, len + 1);
		free(buf);
	}
	kp_key_free(key);
	return rc;
}

/* Writes a private key as PEM with mode 0600. DER and PEM are built here rather than by
 * mbedtls_pk_write_key_pem, so that both copies of the key are in buffers we wipe. Sized
 * for RSA-4096, the largest key we write. */
static int pk_save_private(mbedtls_pk_context *pk, const char *header, const char *footer,
                           const char *path)
{
	unsigned char der[2600];
	unsigned char pem[3800];
	size_t pem_len = 0;
	int rc = KP_CRYPTO_OK;
	int ret;

	ret = mbedtls_pk_write_key_der(pk, der, sizeof(der));
	if (ret < 0) {
		rc = fail_mbed_map(ret);
		goto out;
	}
	/* mbedtls_pk_write_key_der writes at the end of the buffer. */
	ret = mbedtls_pem_write_buffer(header, footer, der + sizeof(der) - (size_t)ret, (size_t)ret,
	                               pem, sizeof(pem), &pem_len);
	if (ret != 0) {
		rc = fail_mbed_map(ret);
		goto out;
	}
	/* pem_len counts the NUL that mbedTLS appends. */
	rc = file_write_secret(path, pem, pem_len > 0 ? pem_len - 1 : 0);
out:
	kp_zeroize(der, sizeof(der));
	kp_zeroize(pem, sizeof(pem));
	return rc;
}

int kp_key_save(const kp_key *key, const char *path)
{
	if (key == NULL || path == NULL)
		return KP_CRYPTO_E_INVAL;
	return pk_save_private(key_pk(key), "-----BEGIN EC PRIVATE KEY-----\n",
	                       "-----END EC PRIVATE KEY-----\n", path);
}

int kp_key_save_public(const kp_key *key, const char *path)
{
	unsigned char pem[PEM_BUF_SIZE];
	int ret;

	if (key == NULL || path == NULL)
		return KP_CRYPTO_E_INVAL;
	ret = mbedtls_pk_write_pubkey_pem(key_pk(key), pem, sizeof(pem));
	if (ret != 0)
		return fail_mbed_map(ret);
	return file_write_public(path, pem, strlen((const char *)pem));
}

/* Hot path of every tap: no allocation besides the two result integers. Reads the key
 * only (ec_warm), but the contract is one thread at a time per key. */
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
	ec = pk_p256(&key->pk);
	if (ec == NULL) {
		rc = KP_CRYPTO_E_KEYTYPE;
		goto out;
	}
	/* k from RFC 6979; the RNG only blinds the scalar multiplication. */
	ret = mbedtls_ecdsa_sign_det_ext(&ec->grp, &r, &s, &ec->d, hash, KP_SHA256_LEN,
	                                 MBEDTLS_MD_SHA256, rng_cb, NULL);
	if (ret == 0)
		ret = mbedtls_mpi_write_binary(&r, sig, 32);        /* left-pads with zeros */
	if (ret == 0)
		ret = mbedtls_mpi_write_binary(&s, sig + 32, 32);
	if (ret != 0) {
		rc = fail_mbed_map(ret);
		goto out;
	}
out:
	if (rc != KP_CRYPTO_OK)
		memset(sig, 0, KP_ES256_SIG_LEN);
	mbedtls_mpi_free(&r);
	mbedtls_mpi_free(&s);
	return rc;
}

static int ec_verify_rs(mbedtls_ecp_keypair *ec, const uint8_t hash[KP_SHA256_LEN],
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
		rc = fail_mbed_map(ret);
		goto out;
	}
	ret = mbedtls_ecdsa_verify(&ec->grp, hash, KP_SHA256_LEN, &ec->Q, &r, &s);
	if (ret == MBEDTLS_ERR_ECP_VERIFY_FAILED || ret == MBEDTLS_ERR_ECP_BAD_INPUT_DATA) {
		rc = fail_mbed(KP_CRYPTO_E_VERIFY, ret);   /* r or s out of range is a bad signature */
		goto out;
	}
	if (ret != 0) {
		rc = fail_mbed_map(ret);
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
	ec = pk_p256(&key->pk);
	if (ec == NULL)
		return KP_CRYPTO_E_KEYTYPE;
	return ec_verify_rs(ec, hash, sig);
}

/* ---- certificates ---- */

static kp_cert *cert_new(void)
{
	kp_cert *cert = calloc(1, sizeof(*cert));

	if (cert != NULL)
		mbedtls_x509_crt_init(&cert->crt);
	return cert;
}

void kp_cert_free(kp_cert *cert)
{
	if (cert == NULL)
		return;
	mbedtls_x509_crt_free(&cert->crt);
	free(cert);
}

/* buf_len includes the NUL for PEM (see pem_or_der_len). */
static int cert_parse_buf(kp_cert **out, const unsigned char *buf, size_t buf_len)
{
	mbedtls_ecp_keypair *ec;
	kp_cert *cert = NULL;
	int rc = KP_CRYPTO_OK;
	int ret;

	cert = cert_new();
	if (cert == NULL) {
		rc = KP_CRYPTO_E_NOMEM;
		goto out;
	}
	ret = mbedtls_x509_crt_parse(&cert->crt, buf, buf_len);
	if (ret != 0) {
		/* > 0: some certificates of a PEM bundle did not parse */
		rc = ret == MBEDTLS_ERR_X509_ALLOC_FAILED ? fail_mbed(KP_CRYPTO_E_NOMEM, ret)
		                                         : fail_mbed(KP_CRYPTO_E_PARSE, ret > 0 ? 0 : ret);
		goto out;
	}
	/* A kp_cert is one certificate; a bundle would silently widen the trust anchors. */
	if (cert->crt.next != NULL && cert->crt.next->raw.len > 0) {
		snprintf(last_error, sizeof(last_error), "more than one certificate");
		rc = KP_CRYPTO_E_PARSE;
		goto out;
	}
	ec = pk_p256(&cert->crt.pk);
	if (ec != NULL) {
		ret = ec_warm(ec);
		if (ret != 0) {
			rc = fail_mbed_map(ret);
			goto out;
		}
	}
	*out = cert;
	cert = NULL;
out:
	kp_cert_free(cert);
	return rc;
}

int kp_cert_load(kp_cert **out, const char *path)
{
	unsigned char *buf = NULL;
	size_t len = 0;
	int rc;

	if (out == NULL || path == NULL)
		return KP_CRYPTO_E_INVAL;
	*out = NULL;
	rc = file_read(path, &buf, &len);
	if (rc != KP_CRYPTO_OK)
		goto out;
	rc = cert_parse_buf(out, buf, pem_or_der_len(buf, len));
out:
	free(buf);
	return rc;
}

int kp_cert_parse(kp_cert **out, const uint8_t *buf, size_t len)
{
	unsigned char *copy = NULL;
	size_t n;
	int rc;

	if (out == NULL || buf == NULL || len == 0)
		return KP_CRYPTO_E_INVAL;
	*out = NULL;
	n = pem_or_der_len(buf, len);
	if (n == len) {
		rc = cert_parse_buf(out, buf, len);
		goto out;
	}
	if (buf[len - 1] == '\0') {                 /* PEM, NUL already counted by the caller */
		rc = cert_parse_buf(out, buf, len);
		goto out;
	}
	copy = malloc(len + 1);                     /* PEM without its NUL: add one */
	if (copy == NULL) {
		rc = KP_CRYPTO_E_NOMEM;
		goto out;
	}
	memcpy(copy, buf, len);
	copy[len] = '\0';
	rc = cert_parse_buf(out, copy, len + 1);
out:
	free(copy);
	return rc;
}

int kp_cert_verify(const kp_cert *cert, const uint8_t hash[KP_SHA256_LEN],
                   const uint8_t sig[KP_ES256_SIG_LEN])
{
	mbedtls_ecp_keypair *ec;

	if (cert == NULL || hash == NULL || sig == NULL)
		return KP_CRYPTO_E_INVAL;
	ec = pk_p256(&cert->crt.pk);
	if (ec == NULL)
		return fail_mbed(KP_CRYPTO_E_KEYTYPE, 0);
	return ec_verify_rs(ec, hash, sig);
}

/* mbedtls_x509_crt_verify_info ends each line with '\n': one line per problem, joined. */
static void verify_info_text(char *err, size_t cap, uint32_t flags)
{
	size_t n;
	char *p;

	/* On overflow mbedTLS leaves the lines that fit: keep them. */
	if (mbedtls_x509_crt_verify_info(err, cap, "", flags) < 0 && err[0] == '\0')
		snprintf(err, cap, "certificate verification failed (flags 0x%08x)", (unsigned)flags);
	n = strlen(err);
	while (n > 0 && err[n - 1] == '\n')
		err[--n] = '\0';
	for (p = err; *p != '\0'; p++)
		if (*p == '\n')
			*p = ';';
}

int kp_cert_check_issued_by(const kp_cert *cert, const kp_cert *ca, char *err, size_t err_cap)
{
	uint32_t flags = 0;
	int rc = KP_CRYPTO_OK;
	int ret;

	if (err != NULL && err_cap > 0)
		err[0] = '\0';
	if (cert == NULL || ca == NULL || (err == NULL && err_cap > 0))
		return KP_CRYPTO_E_INVAL;
	/* ca is the only trust anchor; mbedTLS checks validity times of both. */
	ret = mbedtls_x509_crt_verify(cert_crt(cert), cert_crt(ca), NULL, NULL, &flags, NULL, NULL);
	if (ret == MBEDTLS_ERR_X509_CERT_VERIFY_FAILED) {
		rc = KP_CRYPTO_E_CHAIN;
		if (err != NULL && err_cap > 0)
			verify_info_text(err, err_cap, flags);
		snprintf(last_error, sizeof(last_error), "%s", err != NULL ? err : "chain check failed");
		goto out;
	}
	if (ret != 0) {
		rc = fail_mbed_map(ret);
		if (err != NULL && err_cap > 0)
			snprintf(err, err_cap, "%s", last_error);
		goto out;
	}
out:
	return rc;
}

int kp_cert_subject_cn(const kp_cert *cert, char *out, size_t cap)
{
	const mbedtls_x509_name *n;

	if (cert == NULL || out == NULL || cap == 0)
		return KP_CRYPTO_E_INVAL;
	out[0] = '\0';
	for (n = &cert->crt.subject; n != NULL; n = n->next) {
		if (MBEDTLS_OID_CMP(MBEDTLS_OID_AT_CN, &n->oid) != 0)
			continue;
		if (n->val.len >= cap)
			return KP_CRYPTO_E_INVAL;
		if (memchr(n->val.p, '\0', n->val.len) != NULL)
			return KP_CRYPTO_E_PARSE;   /* would be cut short as a C string */
		memcpy(out, n->val.p, n->val.len);
		out[n->val.len] = '\0';
		return KP_CRYPTO_OK;
	}
	return KP_CRYPTO_E_PARSE;
}

int kp_cert_matches_key(const kp_cert *cert, const kp_key *key)
{
	mbedtls_ecp_keypair *cec, *kec;

	if (cert == NULL || key == NULL)
		return KP_CRYPTO_E_INVAL;
	cec = pk_p256(&cert->crt.pk);
	kec = pk_p256(&key->pk);
	if (cec == NULL || kec == NULL)
		return KP_CRYPTO_E_KEYTYPE;
	/* Both are P-256 and both points were checked on load: comparing Q is enough. */
	if (mbedtls_ecp_point_cmp(&cec->Q, &kec->Q) != 0)
		return KP_CRYPTO_E_VERIFY;
	return KP_CRYPTO_OK;
}

int kp_cert_write_pem(const kp_cert *cert, const char *path)
{
	static const char header[] = "-----BEGIN CERTIFICATE-----\n";
	static const char footer[] = "-----END CERTIFICATE-----\n";
	unsigned char *pem = NULL;
	size_t need = 0;
	int rc;
	int ret;

	if (cert == NULL || path == NULL)
		return KP_CRYPTO_E_INVAL;
	/* First call with no room only reports the size needed. */
	ret = mbedtls_pem_write_buffer(header, footer, cert->crt.raw.p, cert->crt.raw.len,
	                               NULL, 0, &need);
	if (ret != MBEDTLS_ERR_BASE64_BUFFER_TOO_SMALL || need == 0) {
		rc = fail_mbed_map(ret);
		goto out;
	}
	pem = malloc(need);
	if (pem == NULL) {
		rc = KP_CRYPTO_E_NOMEM;
		goto out;
	}
	ret = mbedtls_pem_write_buffer(header, footer, cert->crt.raw.p, cert->crt.raw.len,
	                               pem, need, &need);
	if (ret != 0) {
		rc = fail_mbed_map(ret);
		goto out;
	}
	rc = file_write_public(path, pem, strlen((const char *)pem));
out:
	free(pem);
	return rc;
}

/* The CN goes into mbedTLS's "CN=..,O=.." string form: characters that the string form
 * treats as syntax would let a CN smuggle in other name parts, so they are refused. */
static int cn_valid(const char *cn)
{
	size_t n;

	if (cn == NULL)
		return 0;
	n = strnlen(cn, CN_MAX + 1);
	if (n == 0 || n > CN_MAX)
		return 0;
	for (; *cn != '\0'; cn++) {
		unsigned char c = (unsigned char)*cn;

		if (c < 0x20 || c == 0x7f || strchr(",=+\\\"<>;#", c) != NULL)
			return 0;
	}
	return 1;
}

/* "YYYYMMDDhhmmss" in UTC, the form mbedtls_x509write_crt_set_validity takes. */
static int x509_time(char out[16], int64_t t)
{
	time_t tt = (time_t)t;
	struct tm tm;

	if (gmtime_r(&tt, &tm) == NULL || tm.tm_year + 1900 > 9999)
		return -1;
	if (snprintf(out, 16, "%04d%02d%02d%02d%02d%02d", tm.tm_year + 1900, tm.tm_mon + 1,
	             tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec) != 14)
		return -1;
	return 0;
}

/* Issuer = the CA's subject, name by name with its string types, so the issued
 * certificate's issuer bytes equal the CA's subject bytes (checked after writing). */
static int copy_issuer(mbedtls_x509write_cert *w, const mbedtls_x509_crt *ca)
{
	const mbedtls_x509_name *n;
	mbedtls_asn1_named_data *d;

	for (n = &ca->subject; n != NULL; n = n->next) {
		if (n->oid.p == NULL)
			continue;
		d = mbedtls_asn1_store_named_data(&w->issuer, (const char *)n->oid.p, n->oid.len,
		                                  n->val.p, n->val.len);
		if (d == NULL)
			return MBEDTLS_ERR_X509_ALLOC_FAILED;
		d->val.tag = n->val.tag;
	}
	return 0;
}

/* What one certificate is made of; the caller has checked the keys' types and that
 * issuer_pk belongs to issuer_cert. */
struct cert_spec {
	mbedtls_pk_context *issuer_pk;
	const kp_cert *issuer_cert;           /* NULL: a self-signed CA */
	mbedtls_pk_context *subject_pk;
	const char *subject;                  /* "CN=..,O=.." */
	const unsigned char *serial;          /* big-endian, positive */
	size_t serial_len;
	int64_t not_before, not_after;
	const char *out_path;
	int der;                              /* DER file, else PEM */
	enum kp_cert_profile profile;         /* 0 (CA, JPKI) or KP_CERT_NO_EKU: no extendedKeyUsage */
};

/* extendedKeyUsage values: SEQUENCE { id-kp-clientAuth } and SEQUENCE { id-kp-serverAuth }. */
static const unsigned char eku_client[] = { 0x30, 0x0a, 0x06, 0x08, 0x2b, 0x06, 0x01, 0x05,
                                            0x05, 0x07, 0x03, 0x02 };
static const unsigned char eku_server[] = { 0x30, 0x0a, 0x06, 0x08, 0x2b, 0x06, 0x01, 0x05,
                                            0x05, 0x07, 0x03, 0x01 };

/* The extendedKeyUsage a profile writes (non-critical, as is usual), if any. */
static int set_profile_eku(mbedtls_x509write_cert *w, enum kp_cert_profile profile)
{
	const unsigned char *v = profile == KP_CERT_TERMINAL ? eku_client :
	                         profile == KP_CERT_BACKEND ? eku_server : NULL;

	if (v == NULL)
		return 0;
	return mbedtls_x509write_crt_set_extension(w, MBEDTLS_OID_EXTENDED_KEY_USAGE,
	                                           MBEDTLS_OID_SIZE(MBEDTLS_OID_EXTENDED_KEY_USAGE),
	                                           0, v, sizeof(eku_client));
}

/* Writes the certificate a spec describes; the issuer is the CA's subject, byte for byte. */
static int cert_write_spec(const struct cert_spec *c)
{
	mbedtls_x509write_cert w;
	mbedtls_mpi serial;
	unsigned char buf[PEM_BUF_SIZE];
	const unsigned char *out = buf;
	size_t out_len = 0;
	char nb[16], na[16];
	kp_cert *back = NULL;
	int is_ca = c->issuer_cert == NULL;
	int rc = KP_CRYPTO_OK;
	int ret;

	mbedtls_x509write_crt_init(&w);
	mbedtls_mpi_init(&serial);
	if (x509_time(nb, c->not_before) != 0 || x509_time(na, c->not_after) != 0) {
		rc = KP_CRYPTO_E_INVAL;
		goto out;
	}
	mbedtls_x509write_crt_set_version(&w, MBEDTLS_X509_CRT_VERSION_3);
	mbedtls_x509write_crt_set_md_alg(&w, MBEDTLS_MD_SHA256);
	mbedtls_x509write_crt_set_subject_key(&w, c->subject_pk);
	mbedtls_x509write_crt_set_issuer_key(&w, c->issuer_pk);
	ret = mbedtls_mpi_read_binary(&serial, c->serial, c->serial_len);
	if (ret == 0)
		ret = mbedtls_x509write_crt_set_serial(&w, &serial);
	if (ret == 0)
		ret = mbedtls_x509write_crt_set_subject_name(&w, c->subject);
	if (ret == 0)
		ret = is_ca ? mbedtls_x509write_crt_set_issuer_name(&w, c->subject)
		            : copy_issuer(&w, &c->issuer_cert->crt);
	if (ret == 0)
		ret = mbedtls_x509write_crt_set_validity(&w, nb, na);
	if (ret == 0)
		ret = mbedtls_x509write_crt_set_basic_constraints(&w, is_ca, is_ca ? 0 : -1);
	if (ret == 0)
		ret = mbedtls_x509write_crt_set_key_usage(&w, is_ca ?
		          MBEDTLS_X509_KU_KEY_CERT_SIGN | MBEDTLS_X509_KU_CRL_SIGN :
		          MBEDTLS_X509_KU_DIGITAL_SIGNATURE);
	if (ret == 0)
		ret = set_profile_eku(&w, c->profile);
	if (ret == 0)
		ret = mbedtls_x509write_crt_set_subject_key_identifier(&w);
	if (ret == 0)
		ret = mbedtls_x509write_crt_set_authority_key_identifier(&w);
	if (ret == 0 && c->der) {
		/* mbedtls_x509write_crt_der writes at the end of the buffer. */
		ret = mbedtls_x509write_crt_der(&w, buf, sizeof(buf), rng_cb, NULL);
		if (ret > 0) {
			out_len = (size_t)ret;
			out = buf + sizeof(buf) - out_len;
			ret = 0;
		}
	} else if (ret == 0) {
		ret = mbedtls_x509write_crt_pem(&w, buf, sizeof(buf), rng_cb, NULL);
		out_len = strlen((const char *)buf);
	}
	if (ret != 0) {
		rc = fail_mbed_map(ret);
		goto out;
	}
	if (!is_ca) {
		/* Name types or multi-valued names mbedTLS cannot reproduce would break chains. */
		rc = kp_cert_parse(&back, out, c->der ? out_len : out_len + 1);
		if (rc != KP_CRYPTO_OK)
			goto out;
		if (back->crt.issuer_raw.len != c->issuer_cert->crt.subject_raw.len ||
		    memcmp(back->crt.issuer_raw.p, c->issuer_cert->crt.subject_raw.p,
		           back->crt.issuer_raw.len) != 0) {
			snprintf(last_error, sizeof(last_error), "CA subject cannot be copied exactly");
			rc = KP_CRYPTO_E_INVAL;
			goto out;
		}
	}
	rc = file_write_public(c->out_path, out, out_len);
out:
	kp_cert_free(back);
	mbedtls_mpi_free(&serial);
	mbedtls_x509write_crt_free(&w);
	return rc;
}

static int validity_ok(int64_t not_before, int64_t not_after)
{
	return not_before >= 0 && not_after <= X509_TIME_MAX && not_before <= not_after;
}

/* Positive 127-bit serial with the top bit of 126 set: never zero, fixed DER length. */
static int random_serial(unsigned char serial[16])
{
	int rc = kp_random(serial, 16);

	if (rc == KP_CRYPTO_OK)
		serial[0] = (unsigned char)((serial[0] & 0x7f) | 0x40);
	return rc;
}

/* Writes a P-256 certificate for subject_key (CA when issuer_cert is NULL: self-signed). */
static int cert_write(const kp_key *issuer_key, const kp_cert *issuer_cert,
                      const kp_key *subject_key, const char *cn,
                      enum kp_cert_profile profile, int64_t not_before, int64_t not_after,
                      const char *out_pem)
{
	unsigned char serial[16];
	char subject[CN_MAX + 16];
	struct cert_spec c;
	int rc;

	if (issuer_key == NULL || subject_key == NULL || out_pem == NULL || !cn_valid(cn) ||
	    !validity_ok(not_before, not_after))
		return KP_CRYPTO_E_INVAL;
	if (pk_p256(&issuer_key->pk) == NULL || pk_p256(&subject_key->pk) == NULL)
		return KP_CRYPTO_E_KEYTYPE;
	if (issuer_cert != NULL) {
		/* A certificate signed with a key other than the CA's would never verify. */
		if (!issuer_cert->crt.ca_istrue || kp_cert_matches_key(issuer_cert, issuer_key) != 0) {
			snprintf(last_error, sizeof(last_error), "not a CA certificate, or not the CA key");
			return KP_CRYPTO_E_INVAL;
		}
	}
	snprintf(subject, sizeof(subject), "CN=%s,O=kippu", cn);
	rc = random_serial(serial);
	if (rc != KP_CRYPTO_OK)
		return rc;
	memset(&c, 0, sizeof(c));
	c.issuer_pk = key_pk(issuer_key);
	c.issuer_cert = issuer_cert;
	c.subject_pk = key_pk(subject_key);
	c.subject = subject;
	c.serial = serial;
	c.serial_len = sizeof(serial);
	c.not_before = not_before;
	c.not_after = not_after;
	c.out_path = out_pem;
	c.profile = profile;
	return cert_write_spec(&c);
}

int kp_cert_create_ca_validity(const kp_key *ca_key, const char *cn, int64_t not_before,
                               int64_t not_after, const char *out_pem)
{
	return cert_write(ca_key, NULL, ca_key, cn, 0, not_before, not_after, out_pem);
}

int kp_cert_issue_profile(const kp_key *ca_key, const kp_cert *ca_cert,
                          const kp_key *subject_key, const char *cn,
                          enum kp_cert_profile profile, int64_t not_before, int64_t not_after,
                          const char *out_pem)
{
	if (ca_cert == NULL || (profile != KP_CERT_TERMINAL && profile != KP_CERT_BACKEND &&
	                        profile != KP_CERT_NO_EKU))
		return KP_CRYPTO_E_INVAL;
	return cert_write(ca_key, ca_cert, subject_key, cn, profile, not_before, not_after,
	                  out_pem);
}

int kp_cert_issue_validity(const kp_key *ca_key, const kp_cert *ca_cert,
                           const kp_key *subject_key, const char *cn, int64_t not_before,
                           int64_t not_after, const char *out_pem)
{
	return kp_cert_issue_profile(ca_key, ca_cert, subject_key, cn, KP_CERT_TERMINAL,
	                             not_before, not_after, out_pem);
}

const mbedtls_x509_crt *kp_crypto_cert_crt(const kp_cert *cert)
{
	return cert == NULL ? NULL : &cert->crt;
}

static int eku_has(const mbedtls_x509_crt *crt, const char *oid, size_t oid_len)
{
	const mbedtls_x509_sequence *cur;

	for (cur = &crt->ext_key_usage; cur != NULL && cur->buf.p != NULL; cur = cur->next)
		if (cur->buf.len == oid_len && memcmp(cur->buf.p, oid, oid_len) == 0)
			return 1;
	return 0;
}

/* mbedtls_x509_crt_check_extended_key_usage passes a certificate without the extension
 * (and one with anyExtendedKeyUsage): here the extension and the exact purpose are needed,
 * and the other side's purpose must be absent, so no certificate can play both roles. */
int kp_crypto_crt_check_profile(const mbedtls_x509_crt *crt, enum kp_cert_profile profile,
                                const char *who, char *err, size_t err_cap)
{
	static const char client[] = MBEDTLS_OID_CLIENT_AUTH, server[] = MBEDTLS_OID_SERVER_AUTH;
	int terminal = profile == KP_CERT_TERMINAL;
	const char *role = terminal ? "terminal" : "backend";
	const char *want = terminal ? "clientAuth" : "serverAuth";

	if (err != NULL && err_cap > 0)
		err[0] = '\0';
	if (crt == NULL || who == NULL || (profile != KP_CERT_TERMINAL && profile != KP_CERT_BACKEND))
		return KP_CRYPTO_E_INVAL;
	if ((crt->ext_types & MBEDTLS_X509_EXT_EXTENDED_KEY_USAGE) == 0) {
		if (err != NULL && err_cap > 0)
			snprintf(err, err_cap, "%s has no extendedKeyUsage: not a %s certificate "
			         "(%s); reissue it with kippuctl %s create", who, role, want, role);
		return KP_CRYPTO_E_CHAIN;
	}
	if (!eku_has(crt, terminal ? client : server, sizeof(client) - 1)) {
		if (err != NULL && err_cap > 0)
			snprintf(err, err_cap, "%s is not a %s certificate (extendedKeyUsage lacks %s)",
			         who, role, want);
		return KP_CRYPTO_E_CHAIN;
	}
	if (eku_has(crt, terminal ? server : client, sizeof(client) - 1)) {
		if (err != NULL && err_cap > 0)
			snprintf(err, err_cap, "%s carries both clientAuth and serverAuth: one "
			         "certificate may not be both a terminal's and the backend's", who);
		return KP_CRYPTO_E_CHAIN;
	}
	return KP_CRYPTO_OK;
}

int kp_cert_check_profile(const kp_cert *cert, enum kp_cert_profile profile, char *err,
                          size_t err_cap)
{
	return kp_crypto_crt_check_profile(kp_crypto_cert_crt(cert), profile, "certificate", err,
	                                   err_cap);
}

int kp_cert_file_check_profile(const char *path, enum kp_cert_profile profile, char *err,
                               size_t err_cap)
{
	kp_cert *cert = NULL;
	char why[200] = "";
	int rc = path != NULL ? kp_cert_load(&cert, path) : KP_CRYPTO_E_INVAL;

	if (rc == KP_CRYPTO_OK)
		rc = kp_cert_check_profile(cert, profile, why, sizeof(why));
	kp_cert_free(cert);
	if (rc != KP_CRYPTO_OK && err != NULL && err_cap > 0)
		snprintf(err, err_cap, "%s: %s", path != NULL ? path : "(null)",
		         why[0] != '\0' ? why : kp_crypto_strerror(rc));
	return rc;
}

/* notBefore one day back absorbs clock skew between the issuing machine and terminals. */
static int days_window(int days, int64_t *nb, int64_t *na)
{
	int64_t now = (int64_t)time(NULL);

	if (days < 1 || days > DAYS_MAX || now < SECONDS_PER_DAY)
		return KP_CRYPTO_E_INVAL;
	*nb = now - SECONDS_PER_DAY;
	*na = now + (int64_t)days * SECONDS_PER_DAY;
	return KP_CRYPTO_OK;
}

int kp_cert_create_ca(const kp_key *ca_key, const char *cn, int days, const char *out_pem)
{
	int64_t nb, na;
	int rc = days_window(days, &nb, &na);

	if (rc != KP_CRYPTO_OK)
		return rc;
	return kp_cert_create_ca_validity(ca_key, cn, nb, na, out_pem);
}

int kp_cert_issue(const kp_key *ca_key, const kp_cert *ca_cert, const kp_key *subject_key,
                  const char *cn, int days, const char *out_pem)
{
	int64_t nb, na;
	int rc = days_window(days, &nb, &na);

	if (rc != KP_CRYPTO_OK)
		return rc;
	return kp_cert_issue_profile(ca_key, ca_cert, subject_key, cn, KP_CERT_TERMINAL, nb, na,
	                             out_pem);
}

/* ---- RSA keys (JPKI: the test CA's and the mock card's) ---- */

#define RSA_BITS_MIN   2048
#define RSA_BITS_MAX   4096
#define RSA_EXPONENT   65537
#define RSA_DER_MAX    2600             /* an RSA-4096 RSAPrivateKey is about 2350 bytes */
#define RSA_PEM_MAX    3800
#define PKCS1_V15_OVERHEAD 11           /* 00 01 FF..FF (8 at least) 00 */

struct kp_rsa {
	mbedtls_pk_context pk;
};

static mbedtls_pk_context *rsa_pk(const kp_rsa *key)
{
	return (mbedtls_pk_context *)&key->pk;
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
		ret = mbedtls_rsa_gen_key(mbedtls_pk_rsa(key->pk), rng_cb, NULL, bits, RSA_EXPONENT);
	if (ret != 0) {
		rc = fail_mbed_map(ret);
		goto out;
	}
	*out = key;
	key = NULL;
out:
	kp_rsa_free(key);
	return rc;
}

/* buf_len includes the NUL for PEM (see pem_or_der_len). */
static int rsa_parse_buf(kp_rsa **out, const unsigned char *buf, size_t buf_len)
{
	kp_rsa *key = NULL;
	size_t bits;
	int rc = KP_CRYPTO_OK;
	int ret;

	key = rsa_new();
	if (key == NULL) {
		rc = KP_CRYPTO_E_NOMEM;
		goto out;
	}
	ret = mbedtls_pk_parse_key(&key->pk, buf, buf_len, NULL, 0);
	if (ret != 0) {
		rc = ret == MBEDTLS_ERR_PK_ALLOC_FAILED ? fail_mbed(KP_CRYPTO_E_NOMEM, ret)
		                                        : fail_mbed(KP_CRYPTO_E_PARSE, ret);
		goto out;
	}
	bits = mbedtls_pk_get_bitlen(&key->pk);
	if (mbedtls_pk_get_type(&key->pk) != MBEDTLS_PK_RSA || bits < RSA_BITS_MIN ||
	    bits > RSA_BITS_MAX) {
		snprintf(last_error, sizeof(last_error), "not an RSA key of %d to %d bits",
		         RSA_BITS_MIN, RSA_BITS_MAX);
		rc = KP_CRYPTO_E_KEYTYPE;
		goto out;
	}
	/* A file whose private parts do not belong together would sign garbage. */
	ret = mbedtls_rsa_check_privkey(mbedtls_pk_rsa(key->pk));
	if (ret != 0) {
		rc = fail_mbed(KP_CRYPTO_E_PARSE, ret);
		goto out;
	}
	*out = key;
	key = NULL;
out:
	kp_rsa_free(key);
	return rc;
}

int kp_rsa_load(kp_rsa **out, const char *path)
{
	unsigned char *buf = NULL;
	size_t len = 0;
	int rc;

	if (out == NULL || path == NULL)
		return KP_CRYPTO_E_INVAL;
	*out = NULL;
	rc = file_read(path, &buf, &len);
	if (rc != KP_CRYPTO_OK)
		goto out;
	rc = rsa_parse_buf(out, buf, pem_or_der_len(buf, len));
out:
	if (buf != NULL) {
		kp_zeroize(buf, len + 1);
		free(buf);
	}
	return rc;
}

int kp_rsa_parse(kp_rsa **out, const uint8_t *buf, size_t len)
{
	unsigned char *copy = NULL;
	int rc;

	if (out == NULL || buf == NULL || len == 0)
		return KP_CRYPTO_E_INVAL;
	*out = NULL;
	if (pem_or_der_len(buf, len) == len || buf[len - 1] == '\0')
		return rsa_parse_buf(out, buf, len);   /* DER, or PEM with its NUL counted */
	copy = malloc(len + 1);                    /* PEM without its NUL: add one */
	if (copy == NULL)
		return KP_CRYPTO_E_NOMEM;
	memcpy(copy, buf, len);
	copy[len] = '\0';
	rc = rsa_parse_buf(out, copy, len + 1);
	kp_zeroize(copy, len + 1);
	free(copy);
	return rc;
}

int kp_rsa_save(const kp_rsa *key, const char *path)
{
	if (key == NULL || path == NULL)
		return KP_CRYPTO_E_INVAL;
	return pk_save_private(rsa_pk(key), "-----BEGIN RSA PRIVATE KEY-----\n",
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
	ret = mbedtls_rsa_rsassa_pkcs1_v15_sign(rsa, rng_cb, NULL, MBEDTLS_RSA_PRIVATE,
	                                        MBEDTLS_MD_NONE, (unsigned)di_len, digest_info,
	                                        sig);
	if (ret != 0) {
		kp_zeroize(sig, n);
		return fail_mbed_map(ret);
	}
	*sig_len = n;
	return KP_CRYPTO_OK;
}

/* ---- RSA certificates, and checks for certificates of any key type ---- */

static int path_is_der(const char *path)
{
	size_t n = strlen(path);

	return n >= 4 && strcasecmp(path + n - 4, ".der") == 0;
}

static int cert_write_rsa(const kp_rsa *issuer_key, const kp_cert *issuer_cert,
                          const kp_rsa *subject_key, const char *cn,
                          const unsigned char *serial, size_t serial_len, int64_t not_before,
                          int64_t not_after, const char *out_path)
{
	char subject[CN_MAX + 20];
	struct cert_spec c;

	if (issuer_key == NULL || subject_key == NULL || out_path == NULL || !cn_valid(cn) ||
	    !validity_ok(not_before, not_after))
		return KP_CRYPTO_E_INVAL;
	if (issuer_cert != NULL && (!issuer_cert->crt.ca_istrue ||
	                            mbedtls_pk_check_pair(&issuer_cert->crt.pk, &issuer_key->pk) != 0)) {
		snprintf(last_error, sizeof(last_error), "not a CA certificate, or not the CA key");
		return KP_CRYPTO_E_INVAL;
	}
	snprintf(subject, sizeof(subject), "CN=%s,O=JPKI test", cn);
	memset(&c, 0, sizeof(c));
	c.issuer_pk = rsa_pk(issuer_key);
	c.issuer_cert = issuer_cert;
	c.subject_pk = rsa_pk(subject_key);
	c.subject = subject;
	c.serial = serial;
	c.serial_len = serial_len;
	c.not_before = not_before;
	c.not_after = not_after;
	c.out_path = out_path;
	c.der = path_is_der(out_path);
	return cert_write_spec(&c);
}

int kp_cert_create_ca_rsa(const kp_rsa *ca_key, const char *cn, int64_t not_before,
                          int64_t not_after, const char *out_path)
{
	unsigned char serial[16];
	int rc = random_serial(serial);

	if (rc != KP_CRYPTO_OK)
		return rc;
	return cert_write_rsa(ca_key, NULL, ca_key, cn, serial, sizeof(serial), not_before,
	                      not_after, out_path);
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

/* Days from 1970-01-01 to the given civil date (proleptic Gregorian; H. Hinnant's). */
static int64_t days_from_civil(int64_t y, int m, int d)
{
	int64_t era, yoe, doy, doe;

	y -= m <= 2;
	era = (y >= 0 ? y : y - 399) / 400;
	yoe = y - era * 400;
	doy = (153 * (m > 2 ? m - 3 : m + 9) + 2) / 5 + d - 1;
	doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
	return era * 146097 + doe - 719468;
}

static int64_t x509_time_unix(const mbedtls_x509_time *t)
{
	return days_from_civil(t->year, t->mon, t->day) * SECONDS_PER_DAY +
	       (int64_t)t->hour * 3600 + t->min * 60 + t->sec;
}

static void x509_time_text(char out[32], const mbedtls_x509_time *t)
{
	snprintf(out, 32, "%04d-%02d-%02dT%02d:%02d:%02dZ", t->year % 10000, t->mon % 100,
	         t->day % 100, t->hour % 100, t->min % 100, t->sec % 100);
}

/* Puts the reason into err (when there is room) and the thread's last error. */
__attribute__((format(printf, 3, 4)))
static int chain_fail(char *err, size_t err_cap, const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(last_error, sizeof(last_error), fmt, ap);
	va_end(ap);
	if (err != NULL && err_cap > 0)
		snprintf(err, err_cap, "%s", last_error);
	return KP_CRYPTO_E_CHAIN;
}

/* at_s within [notBefore, notAfter] (X.509 times have whole seconds, both ends included). */
static int time_check(const mbedtls_x509_crt *crt, const char *what, int64_t at_s, char *err,
                      size_t err_cap)
{
	char t[32];

	if (at_s < x509_time_unix(&crt->valid_from)) {
		x509_time_text(t, &crt->valid_from);
		return chain_fail(err, err_cap, "%s not yet valid (notBefore %s)", what, t);
	}
	if (at_s > x509_time_unix(&crt->valid_to)) {
		x509_time_text(t, &crt->valid_to);
		return chain_fail(err, err_cap, "%s expired (notAfter %s)", what, t);
	}
	return KP_CRYPTO_OK;
}

int kp_cert_check_signature(const kp_cert *cert, const kp_cert *ca, char *err, size_t err_cap)
{
	/* ca is the only trust anchor. */
	const uint32_t time_flags = MBEDTLS_X509_BADCERT_EXPIRED | MBEDTLS_X509_BADCERT_FUTURE;
	uint32_t flags = 0;
	int ret;

	if (err != NULL && err_cap > 0)
		err[0] = '\0';
	if (cert == NULL || ca == NULL || (err == NULL && err_cap > 0))
		return KP_CRYPTO_E_INVAL;
	ret = mbedtls_x509_crt_verify(cert_crt(cert), cert_crt(ca), NULL, NULL, &flags, NULL, NULL);
	if (ret != 0 && ret != MBEDTLS_ERR_X509_CERT_VERIFY_FAILED) {
		int rc = fail_mbed_map(ret);

		if (err != NULL && err_cap > 0)
			snprintf(err, err_cap, "%s", last_error);
		return rc;
	}
	flags &= ~time_flags;
	if (flags != 0) {
		char info[160];

		verify_info_text(info, sizeof(info), flags);
		return chain_fail(err, err_cap, "signature chain: %s", info);
	}
	return KP_CRYPTO_OK;
}

int kp_cert_check_at(const kp_cert *cert, const kp_cert *ca, int64_t at_ms, unsigned key_usage,
                     char *err, size_t err_cap)
{
	int64_t at_s = at_ms / 1000 - (at_ms % 1000 < 0);   /* floor, also before 1970 */
	int rc;

	/* mbedTLS judges validity by the system clock: kp_cert_check_signature ignores it, and
	 * both certificates' windows are compared with at_ms here instead. */
	rc = kp_cert_check_signature(cert, ca, err, err_cap);
	if (rc != KP_CRYPTO_OK)
		return rc;
	rc = time_check(cert_crt(cert), "certificate", at_s, err, err_cap);
	if (rc == KP_CRYPTO_OK)
		rc = time_check(cert_crt(ca), "CA certificate", at_s, err, err_cap);
	if (rc != KP_CRYPTO_OK)
		return rc;
	/* mbedTLS (like RFC 5280) allows every usage when the extension is absent. */
	if (key_usage != 0 && mbedtls_x509_crt_check_key_usage(cert_crt(cert), key_usage) != 0)
		return chain_fail(err, err_cap, "key usage 0x%02x not allowed (certificate has 0x%02x)",
		                  key_usage, cert->crt.key_usage);
	return KP_CRYPTO_OK;
}

int kp_cert_spki_sha256(const kp_cert *cert, uint8_t out[KP_SHA256_LEN])
{
	if (cert == NULL || out == NULL || cert->crt.pk_raw.p == NULL || cert->crt.pk_raw.len == 0)
		return KP_CRYPTO_E_INVAL;
	return kp_sha256(cert->crt.pk_raw.p, cert->crt.pk_raw.len, out);
}

int kp_cert_constraints(const kp_cert *cert, int *is_ca, int *has_key_usage, unsigned *key_usage)
{
	if (cert == NULL || is_ca == NULL || has_key_usage == NULL || key_usage == NULL)
		return KP_CRYPTO_E_INVAL;
	*is_ca = cert->crt.ca_istrue != 0;
	*has_key_usage = (cert->crt.ext_types & MBEDTLS_X509_EXT_KEY_USAGE) != 0;
	*key_usage = *has_key_usage ? cert->crt.key_usage : 0;
	return KP_CRYPTO_OK;
}

int kp_cert_verify_rsa_sha256(const kp_cert *cert, const uint8_t hash[KP_SHA256_LEN],
                              const uint8_t *sig, size_t sig_len)
{
	mbedtls_rsa_context *rsa;
	int ret;

	if (cert == NULL || hash == NULL || sig == NULL)
		return KP_CRYPTO_E_INVAL;
	if (mbedtls_pk_get_type(&cert->crt.pk) != MBEDTLS_PK_RSA)
		return fail_mbed(KP_CRYPTO_E_KEYTYPE, 0);
	rsa = mbedtls_pk_rsa(cert->crt.pk);
	if (sig_len != mbedtls_rsa_get_len(rsa))
		return fail_mbed(KP_CRYPTO_E_VERIFY, 0);
	ret = mbedtls_rsa_rsassa_pkcs1_v15_verify(rsa, NULL, NULL, MBEDTLS_RSA_PUBLIC,
	                                          MBEDTLS_MD_SHA256, KP_SHA256_LEN, hash, sig);
	if (ret == 0)
		return KP_CRYPTO_OK;
	/* The low-level part of a combined code says whether memory ran out. */
	if (((-ret) & 0x7F) == -MBEDTLS_ERR_MPI_ALLOC_FAILED)
		return fail_mbed(KP_CRYPTO_E_NOMEM, ret);
	return fail_mbed(KP_CRYPTO_E_VERIFY, ret);   /* bad padding, s >= n, wrong hash */
}

int kp_cert_issuer_raw(const kp_cert *cert, const uint8_t **p, size_t *n)
{
	if (cert == NULL || p == NULL || n == NULL)
		return KP_CRYPTO_E_INVAL;
	*p = cert->crt.issuer_raw.p;
	*n = cert->crt.issuer_raw.len;
	return KP_CRYPTO_OK;
}

int kp_cert_serial_raw(const kp_cert *cert, const uint8_t **p, size_t *n)
{
	if (cert == NULL || p == NULL || n == NULL)
		return KP_CRYPTO_E_INVAL;
	*p = cert->crt.serial.p;
	*n = cert->crt.serial.len;
	return KP_CRYPTO_OK;
}

int kp_cert_der(const kp_cert *cert, const uint8_t **p, size_t *n)
{
	if (cert == NULL || p == NULL || n == NULL)
		return KP_CRYPTO_E_INVAL;
	*p = cert->crt.raw.p;
	*n = cert->crt.raw.len;
	return KP_CRYPTO_OK;
}

int kp_cert_validity(const kp_cert *cert, int64_t *not_before, int64_t *not_after)
{
	if (cert == NULL || not_before == NULL || not_after == NULL)
		return KP_CRYPTO_E_INVAL;
	*not_before = x509_time_unix(&cert->crt.valid_from);
	*not_after = x509_time_unix(&cert->crt.valid_to);
	return KP_CRYPTO_OK;
}
