/* SPDX-License-Identifier: Apache-2.0 */
/* kippu crypto: key and certificate files. Reads are bounded and wiped; private keys are
 * created 0600 and never replace anything, public files are replaced atomically. */
#include "crypto_int.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#define KEY_FILE_MAX   (64 * 1024)      /* no key or certificate file we accept is larger */

static int fail_errno(int rc, const char *what, const char *path, int err)
{
	return kp_crypto_fail_text(rc, "%s %s: %s", what, path, strerror(err));
}

int kp_file_unreadable(const char *what, const char *path, char *err, size_t cap)
{
	struct stat st;
	const char *why = NULL;
	int fd = path != NULL ? open(path, O_RDONLY | O_CLOEXEC | O_NONBLOCK) : -1;

	if (fd < 0)
		why = path != NULL ? strerror(errno) : "no file given";
	else if (fstat(fd, &st) != 0)
		why = strerror(errno);
	else if (S_ISDIR(st.st_mode))
		why = "it is a folder";
	else if (!S_ISREG(st.st_mode))
		why = "not a regular file";
	if (fd >= 0)
		close(fd);
	if (why == NULL)
		return 0;
	snprintf(err, cap, "cannot read %s %s: %s", what, path != NULL ? path : "", why);
	return -1;
}

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

int kp_crypto_load_file(const char *path, kp_crypto_parse_fn *parse, void *out)
{
	unsigned char *buf = NULL;
	size_t len = 0;
	int rc = file_read(path, &buf, &len);

	if (rc == KP_CRYPTO_OK)
		rc = parse(out, buf, pem_or_der_len(buf, len));
	if (buf != NULL) {
		kp_zeroize(buf, len + 1);
		free(buf);
	}
	return rc;
}

int kp_crypto_parse_mem(const uint8_t *buf, size_t len, kp_crypto_parse_fn *parse, void *out)
{
	unsigned char *copy;
	int rc;

	if (pem_or_der_len(buf, len) == len || buf[len - 1] == '\0')
		return parse(out, buf, len);        /* DER, or PEM with its NUL counted */
	copy = malloc(len + 1);                 /* PEM without its NUL: add one */
	if (copy == NULL)
		return KP_CRYPTO_E_NOMEM;
	memcpy(copy, buf, len);
	copy[len] = '\0';
	rc = parse(out, copy, len + 1);
	kp_zeroize(copy, len + 1);
	free(copy);
	return rc;
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

/* O_EXCL also refuses a symlink planted at path. */
int kp_crypto_file_write_secret(const char *path, const void *buf, size_t len)
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

/* Temporary file + rename. */
int kp_crypto_file_write_public(const char *path, const void *buf, size_t len)
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
