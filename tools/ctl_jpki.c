/* SPDX-License-Identifier: Apache-2.0 */
/* kippuctl jpki ...: a TEST JPKI authentication authority standing in for J-LIS, and the
 * folders of mock My Number cards it issues (auth.key, auth.der, ca.der: what a scenario's
 * "card NAME mynumber dir=DIR" reads, hal/SCENARIO.md). Nothing it makes is worth anything
 * outside tests, and no real name or number goes into its certificates. */
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "kp_tools.h"

#define JPKI_BITS        2048
#define JPKI_CA_CN       "JPKI test authentication CA"
#define JPKI_CA_DAYS     3650
#define JPKI_CARD_DAYS   (5 * 365)     /* a user-authentication certificate lasts about 5 years */

static const char usage_text[] =
	"  kippuctl jpki ca create --key JPKI-CA.key --cert JPKI-CA.crt [--cn NAME]\n"
	"                          [--not-before TIME] [--days N (3650)]\n"
	"      an RSA-2048 TEST authority standing in for J-LIS (mock My Number cards only)\n"
	"  kippuctl jpki card create --ca-key JPKI-CA.key --ca-cert JPKI-CA.crt --dir DIR\n"
	"                            --serial N [--cn NAME] [--not-before TIME]\n"
	"                            [--days N (1825) | --not-after TIME]\n"
	"      a mock card: DIR/auth.key (RSA-2048, 0600), DIR/auth.der, DIR/ca.der\n"
	"      --not-before defaults to a day before now; a test or demo passes its own clock's\n";

void kp_ctl_jpki_usage(FILE *fp)
{
	fputs(usage_text, fp);
}

struct jargs {
	const char *key, *cert, *ca_key, *ca_cert, *dir, *cn, *serial, *not_before, *not_after;
	int days;
};

#define OPT(name, field, help) { name, KP_CTL_STR, offsetof(struct jargs, field), 0, 0, 0, help }
static const struct kp_ctl_opt jpki_opts[] = {
	OPT("key", key, "the CA key to make"),
	OPT("cert", cert, "the CA certificate to make"),
	OPT("ca-key", ca_key, "the CA key that signs a card"),
	OPT("ca-cert", ca_cert, "the CA certificate"),
	OPT("dir", dir, "the mock card's folder"),
	OPT("cn", cn, "the certificate's common name"),
	{ "days", KP_CTL_INT, offsetof(struct jargs, days), 1, 36500, 0, "validity in days" },
	OPT("serial", serial, "the card certificate's serial number"),
	OPT("not-before", not_before, "validity start (TIME)"),
	OPT("not-after", not_after, "validity end (TIME), in place of --days"),
	{ NULL, 0, 0, 0, 0, 0, NULL },
};
#undef OPT

static int jpki_parse(int argc, char **argv, struct jargs *a)
{
	struct kp_ctl_pos pos = { NULL, 0, 0, NULL };

	memset(a, 0, sizeof(*a));
	if (kp_ctl_parse(argc, argv, jpki_opts, a, &pos) != 0) {
		if (pos.extra != NULL)
			fprintf(stderr, "kippuctl: unexpected argument '%s'\n", pos.extra);
		return -1;
	}
	return 0;
}

static int crypto_fail(const char *what, int rc)
{
	const char *detail = kp_crypto_last_error();

	fprintf(stderr, "kippuctl: %s: %s%s%s\n", what, kp_crypto_strerror(rc),
	        detail[0] != '\0' ? ": " : "", detail);
	return 1;
}

/* TIME as kp_parse_time reads it, in whole seconds. */
static int jpki_time(const char *s, const char *name, int64_t *out)
{
	int64_t ms;

	if (kp_parse_time(s, &ms) != KP_OK) {
		fprintf(stderr, "kippuctl: %s: use 2026-04-01T00:00:00+09:00, ...Z or Unix seconds\n",
		        name);
		return -1;
	}
	*out = ms / 1000;
	return 0;
}

int kp_ctl_validity(const char *not_before, const char *not_after, int days, int default_days,
                    int64_t *nb, int64_t *na)
{
	if (kp_parse_validity(not_before, days, default_days, nb, na) != KP_OK) {
		fprintf(stderr, "kippuctl: --not-before: use 2026-04-01T00:00:00+09:00, ...Z or Unix "
		        "seconds (with --days, ending by 9999-12-31)\n");
		return 2;
	}
	if (not_after != NULL && jpki_time(not_after, "--not-after", na) != 0)
		return 2;
	if (*nb > *na) {
		fprintf(stderr, "kippuctl: --not-before is after --not-after\n");
		return 2;
	}
	return 0;
}

static int cmd_jpki_ca_create(const struct jargs *a)
{
	kp_rsa *key = NULL;
	int64_t nb, na;
	int rc;

	if (kp_ctl_need(a->key, "--key") || kp_ctl_need(a->cert, "--cert"))
		return 2;
	if (kp_ctl_validity(a->not_before, NULL, a->days, JPKI_CA_DAYS, &nb, &na) != 0)
		return 2;
	rc = kp_rsa_generate(&key, JPKI_BITS);
	if (rc == KP_CRYPTO_OK)
		rc = kp_rsa_save(key, a->key);
	if (rc != KP_CRYPTO_OK) {
		rc = crypto_fail(a->key, rc);
		goto out;
	}
	rc = kp_cert_create_ca_rsa(key, a->cn != NULL ? a->cn : JPKI_CA_CN, nb, na, a->cert);
	if (rc != KP_CRYPTO_OK) {
		rc = crypto_fail(a->cert, rc);
		goto out;
	}
	printf("JPKI TEST CA (not J-LIS): key %s (RSA-2048, mode 0600), certificate %s\n", a->key,
	       a->cert);
out:
	kp_rsa_free(key);
	return rc;
}

/* DIR is made (0700), or may exist without any of the card's files in it. */
static int jpki_card_dir(const char *dir, char paths[3][PATH_MAX])
{
	static const char *const names[3] = { "auth.key", "auth.der", "ca.der" };
	struct stat st;

	for (int i = 0; i < 3; i++) {
		int n = snprintf(paths[i], PATH_MAX, "%s/%s", dir, names[i]);

		if (n < 0 || n >= PATH_MAX) {
			fprintf(stderr, "kippuctl: --dir: path too long\n");
			return -1;
		}
	}
	if (mkdir(dir, 0700) != 0) {
		if (errno != EEXIST || stat(dir, &st) != 0 || !S_ISDIR(st.st_mode)) {
			fprintf(stderr, "kippuctl: %s: cannot create the folder: %s\n", dir,
			        strerror(errno == EEXIST ? ENOTDIR : errno));
			return -1;
		}
		for (int i = 0; i < 3; i++) {
			if (lstat(paths[i], &st) == 0) {
				fprintf(stderr, "kippuctl: %s exists: refusing to overwrite a card\n",
				        paths[i]);
				return -1;
			}
		}
	}
	return 0;
}

/* The CA certificate as the card's EF 000B holds it: DER, public, never overwritten. */
static int jpki_write_der(const char *path, const kp_cert *cert)
{
	const uint8_t *der;
	size_t len, off = 0;
	int fd, rc = 0;

	if (kp_cert_der(cert, &der, &len) != KP_CRYPTO_OK)
		return -1;
	fd = open(path, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0644);
	if (fd < 0) {
		fprintf(stderr, "kippuctl: %s: %s\n", path, strerror(errno));
		return -1;
	}
	while (off < len) {
		ssize_t n = write(fd, der + off, len - off);

		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0) {
			rc = -1;
			break;
		}
		off += (size_t)n;
	}
	if (rc == 0 && fsync(fd) != 0)
		rc = -1;
	if (close(fd) != 0)
		rc = -1;
	if (rc != 0) {
		fprintf(stderr, "kippuctl: %s: %s\n", path, strerror(errno));
		unlink(path);
	}
	return rc;
}

static int cmd_jpki_card_create(const struct jargs *a)
{
	char paths[3][PATH_MAX];      /* auth.key, auth.der, ca.der */
	char cn_buf[64];
	const char *cn = a->cn;
	int64_t nb, na;
	long long serial;
	kp_rsa *ca_key = NULL, *key = NULL;
	kp_cert *ca = NULL;
	char *end;
	int rc;

	if (kp_ctl_need(a->ca_key, "--ca-key") || kp_ctl_need(a->ca_cert, "--ca-cert") ||
	    kp_ctl_need(a->dir, "--dir") || kp_ctl_need(a->serial, "--serial"))
		return 2;
	errno = 0;
	serial = strtoll(a->serial, &end, 10);
	if (errno != 0 || end == a->serial || *end != '\0' || serial < 1) {
		fprintf(stderr, "kippuctl: --serial must be a number from 1 to %lld\n", LLONG_MAX);
		return 2;
	}
	if (a->days != 0 && a->not_after != NULL) {
		fprintf(stderr, "kippuctl: give --days or --not-after, not both\n");
		return 2;
	}
	if (kp_ctl_validity(a->not_before, a->not_after, a->days, JPKI_CARD_DAYS, &nb, &na) != 0)
		return 2;
	if (cn == NULL) {
		snprintf(cn_buf, sizeof(cn_buf), "JPKI test card %lld", serial);
		cn = cn_buf;
	}
	if (kp_ctl_readable("JPKI CA key", a->ca_key) != 0 ||
	    kp_ctl_readable("JPKI CA certificate", a->ca_cert) != 0)
		return 1;
	rc = kp_rsa_load(&ca_key, a->ca_key);
	if (rc != KP_CRYPTO_OK) {
		rc = crypto_fail(a->ca_key, rc);
		goto out;
	}
	rc = kp_cert_load(&ca, a->ca_cert);
	if (rc != KP_CRYPTO_OK) {
		rc = crypto_fail(a->ca_cert, rc);
		goto out;
	}
	if (jpki_card_dir(a->dir, paths) != 0) {
		rc = 1;
		goto out;
	}
	rc = kp_rsa_generate(&key, JPKI_BITS);
	if (rc == KP_CRYPTO_OK)
		rc = kp_rsa_save(key, paths[0]);
	if (rc != KP_CRYPTO_OK) {
		rc = crypto_fail(paths[0], rc);
		goto out;
	}
	rc = kp_cert_issue_rsa(ca_key, ca, key, cn, serial, nb, na, paths[1]);
	if (rc != KP_CRYPTO_OK) {
		unlink(paths[0]);      /* a key without its certificate is no card */
		rc = crypto_fail(paths[1], rc);
		goto out;
	}
	if (jpki_write_der(paths[2], ca) != 0) {
		unlink(paths[0]);
		unlink(paths[1]);
		rc = 1;
		goto out;
	}
	printf("mock My Number card %s: auth.key (mode 0600), auth.der (serial %lld), ca.der\n",
	       a->dir, serial);
out:
	kp_rsa_free(ca_key);
	kp_rsa_free(key);
	kp_cert_free(ca);
	return rc;
}

int kp_ctl_jpki(int argc, char **argv)
{
	struct jargs a;

	if (argc < 3 || strcmp(argv[2], "create") != 0 ||
	    (strcmp(argv[1], "ca") != 0 && strcmp(argv[1], "card") != 0)) {
		fputs("usage:\n", stderr);
		kp_ctl_jpki_usage(stderr);
		return 2;
	}
	/* getopt sees "create" as the program name */
	if (jpki_parse(argc - 2, argv + 2, &a) != 0) {
		fputs("usage:\n", stderr);
		kp_ctl_jpki_usage(stderr);
		return 2;
	}
	if (strcmp(argv[1], "ca") == 0) {
		if (a.ca_key != NULL || a.ca_cert != NULL || a.dir != NULL || a.serial != NULL ||
		    a.not_after != NULL) {
			fprintf(stderr, "kippuctl: jpki ca create takes --key --cert [--cn] "
			        "[--not-before] [--days]\n");
			return 2;
		}
		return cmd_jpki_ca_create(&a);
	}
	if (a.key != NULL || a.cert != NULL) {
		fprintf(stderr, "kippuctl: jpki card create takes --ca-key --ca-cert --dir --serial "
		        "[--cn] [--not-before] [--days | --not-after]\n");
		return 2;
	}
	return cmd_jpki_card_create(&a);
}
