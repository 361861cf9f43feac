/* SPDX-License-Identifier: Apache-2.0 */
/* `kippuctl jpki ca create` and `kippuctl jpki card create` (the real program), and the
 * card folder they make played by the mock reader with a crypto-backed signer: the
 * certificate read in chunks chains to the CA, the card's signature of a DigestInfo verifies
 * with it (here and with OpenSSL), and refusals (overwrites, bad arguments, a key that is not
 * the CA's) leave nothing half made. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <limits.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <cmocka.h>

#include "kp_crypto.h"
#include "kp_hal.h"
#include "testutil.h"

#define KU_DIGITAL_SIGNATURE 0x80
#define NB_2026_04_01 INT64_C(1774969200)   /* 2026-04-01T00:00:00+09:00 */
#define NA_2031_03_31 INT64_C(1932735600)   /* 2031-04-01T00:00:00+09:00 */

static char dir[256];
static int64_t t_now;                       /* when the cards were made */
static char bin[4096];                      /* absolute: the commands run in dir */

static const char *p(const char *name)
{
	return tu_path(dir, name);
}

static int ctl(const char *args)
{
	return tu_sh("cd %s && %s/kippuctl %s >out.txt 2>err.txt", dir, bin, args);
}

static int crypto_signer(void *ctx, const uint8_t *key, size_t key_len, const uint8_t *di,
                         size_t di_len, uint8_t *sig, size_t sig_cap, size_t *sig_len)
{
	kp_rsa *k = NULL;
	int rc = kp_rsa_parse(&k, key, key_len);

	(void)ctx;
	if (rc == KP_CRYPTO_OK)
		rc = kp_rsa_sign_digestinfo(k, di, di_len, sig, sig_cap, sig_len);
	kp_rsa_free(k);
	return rc;
}

static int group_setup(void **state)
{
	char args[512];

	(void)state;
	if (realpath(tu_bin(), bin) == NULL)
		return -1;
	tu_tmpdir(dir, sizeof(dir));
	t_now = (int64_t)time(NULL);
	if (ctl("jpki ca create --key CA.key --cert CA.crt --days 3650") != 0)
		return -1;
	/* card1 valid now (the CA is valid from a day ago); card2 at fixed times */
	snprintf(args, sizeof(args), "jpki card create --ca-key CA.key --ca-cert CA.crt "
	         "--dir card1 --serial 42 --not-before %lld", (long long)(t_now - 3600));
	if (ctl(args) != 0)
		return -1;
	return ctl("jpki card create --ca-key CA.key --ca-cert CA.crt --dir card2 --serial 128 "
	           "--cn 'test card two' --not-before 2026-04-01T00:00:00+09:00 "
	           "--not-after 1932735600") == 0 ? 0 : -1;
}

static int group_teardown(void **state)
{
	(void)state;
	kp_mock_set_rsa_signer(NULL, NULL);
	tu_rmdir(dir);
	return 0;
}

static void test_files(void **state)
{
	kp_cert *ca = NULL, *ca_der = NULL, *auth = NULL;
	const uint8_t *a, *b;
	size_t na, nb;
	int64_t from, to;
	struct stat st;
	char cn[80], err[256], *out;

	(void)state;
	out = tu_read(p("out.txt"));
	assert_non_null(strstr(out, "card2: auth.key (mode 0600), auth.der (serial 128), ca.der"));
	free(out);
	assert_int_equal(stat(p("CA.key"), &st), 0);
	assert_int_equal(st.st_mode & 0777, 0600);
	assert_int_equal(stat(p("card1/auth.key"), &st), 0);
	assert_int_equal(st.st_mode & 0777, 0600);
	assert_int_equal(stat(p("card1"), &st), 0);
	assert_int_equal(st.st_mode & 0777, 0700);

	assert_int_equal(kp_cert_load(&ca, p("CA.crt")), 0);
	assert_int_equal(kp_cert_load(&ca_der, p("card1/ca.der")), 0);
	assert_int_equal(kp_cert_load(&auth, p("card1/auth.der")), 0);
	/* ca.der is the CA certificate, in DER */
	assert_int_equal(kp_cert_der(ca, &a, &na), 0);
	assert_int_equal(kp_cert_der(ca_der, &b, &nb), 0);
	assert_int_equal(na, nb);
	assert_memory_equal(a, b, na);
	assert_int_equal(kp_cert_subject_cn(ca, cn, sizeof(cn)), 0);
	assert_string_equal(cn, "JPKI test authentication CA");
	assert_int_equal(kp_cert_subject_cn(auth, cn, sizeof(cn)), 0);
	assert_string_equal(cn, "JPKI test card 42");
	assert_int_equal(kp_cert_serial_raw(auth, &a, &na), 0);
	assert_int_equal(na, 1);
	assert_int_equal(a[0], 42);
	/* valid from the given time for 5 years; issued by the CA, usable for authentication */
	assert_int_equal(kp_cert_validity(auth, &from, &to), 0);
	assert_int_equal(from, t_now - 3600);
	assert_int_equal(to, t_now - 3600 + 5 * 365 * INT64_C(86400));
	assert_int_equal(kp_cert_check_at(auth, ca_der, t_now * 1000, KU_DIGITAL_SIGNATURE, err,
	                                  sizeof(err)), KP_CRYPTO_OK);
	assert_int_equal(kp_cert_check_at(auth, ca, (from - 1) * 1000, 0, err, sizeof(err)),
	                 KP_CRYPTO_E_CHAIN);
	kp_cert_free(auth);
	auth = NULL;
	/* card2: times as ISO 8601 with an offset and as Unix seconds; serial 128 is 00 80 */
	assert_int_equal(kp_cert_load(&auth, p("card2/auth.der")), 0);
	assert_int_equal(kp_cert_validity(auth, &from, &to), 0);
	assert_int_equal(from, NB_2026_04_01);
	assert_int_equal(to, NA_2031_03_31);
	assert_int_equal(kp_cert_serial_raw(auth, &a, &na), 0);
	assert_int_equal(na, 2);
	assert_memory_equal(a, "\x00\x80", 2);
	assert_int_equal(kp_cert_subject_cn(auth, cn, sizeof(cn)), 0);
	assert_string_equal(cn, "test card two");
	kp_cert_free(auth);
	auth = NULL;
	assert_int_equal(kp_cert_load(&auth, p("card1/auth.der")), 0);
	/* OpenSSL agrees */
	assert_int_equal(tu_sh("cd %s && openssl x509 -inform DER -in card1/auth.der -out a.pem && "
	                       "openssl verify -CAfile CA.crt a.pem >/dev/null", dir), 0);
	kp_cert_free(ca);
	kp_cert_free(ca_der);
	kp_cert_free(auth);
}

/* The window of the certificate at name (PEM or DER). */
static void assert_window(const char *name, int64_t want_from, int64_t want_to)
{
	kp_cert *c = NULL;
	int64_t from, to;

	assert_int_equal(kp_cert_load(&c, p(name)), 0);
	assert_int_equal(kp_cert_validity(c, &from, &to), 0);
	assert_int_equal(from, want_from);
	assert_int_equal(to, want_to);
	kp_cert_free(c);
}

/* Every certificate command takes its window from --not-before and --days, so tests and demos
 * make certificates for their own clock rather than for today. */
static void test_validity_window(void **state)
{
	const int64_t t2030 = INT64_C(1893456000);          /* 2030-01-01T00:00:00Z */
	const int64_t t2031 = INT64_C(1935846000);          /* 2031-05-07T00:00:00+09:00 */
	const int64_t day = 86400;
	char *err;

	(void)state;
	assert_int_equal(ctl("jpki ca create --key W.key --cert W.crt "
	                     "--not-before 2030-01-01T00:00:00Z --days 10"), 0);
	assert_window("W.crt", t2030, t2030 + 10 * day);
	assert_int_equal(ctl("jpki card create --ca-key W.key --ca-cert W.crt --dir w1 "
	                     "--serial 5 --not-before 1893542400 --days 3"), 0);
	assert_window("w1/auth.der", t2030 + day, t2030 + 4 * day);
	/* the operator CA, a terminal's and the backend's certificates */
	assert_int_equal(ctl("ca create --key O.key --cert O.crt "
	                     "--not-before 2031-05-07T00:00:00+09:00 --days 100"), 0);
	assert_window("O.crt", t2031, t2031 + 100 * day);
	assert_int_equal(ctl("terminal create --ca-key O.key --ca-cert O.crt --id T-1 "
	                     "--key T.key --cert T.crt --not-before 2031-05-07T00:00:00+09:00 "
	                     "--days 30"), 0);
	assert_window("T.crt", t2031, t2031 + 30 * day);
	assert_int_equal(ctl("backend create --ca-key O.key --ca-cert O.crt --key B.key "
	                     "--cert B.crt --not-before 2031-05-08T00:00:00+09:00"), 0);
	assert_window("B.crt", t2031 + day, t2031 + day + 825 * day);
	/* bad windows: refused before any key is written */
	assert_int_equal(ctl("ca create --key X.key --cert X.crt --not-before tomorrow"), 2);
	err = tu_read(p("err.txt"));
	assert_non_null(strstr(err, "--not-before: use 2026-04-01T00:00:00+09:00"));
	free(err);
	assert_int_equal(access(p("X.key"), F_OK), -1);
	assert_int_equal(ctl("jpki ca create --key X.key --cert X.crt "
	                     "--not-before 9999-12-01T00:00:00Z --days 3650"), 2);
	assert_int_equal(access(p("X.key"), F_OK), -1);
	assert_int_equal(ctl("terminal create --ca-key O.key --ca-cert O.crt --id T-2 "
	                     "--key X.key --cert X.crt --not-before 2031-13-01T00:00:00Z"), 2);
	assert_int_equal(access(p("X.key"), F_OK), -1);
	assert_int_equal(ctl("jpki card create --ca-key W.key --ca-cert W.crt --dir w2 "
	                     "--serial 6 --not-before 2030-01-01T00:00:00+25:00"), 2);
	assert_int_equal(access(p("w2/auth.key"), F_OK), -1);
}

/* One APDU through the reader; returns the reply length, SW in *sw. */
static size_t xfer(struct kp_reader *r, const uint8_t *tx, size_t tx_len, uint8_t *rx,
                   uint16_t *sw)
{
	size_t n = 0;

	assert_int_equal(kp_reader_transceive(r, tx, tx_len, rx, 300, &n, 1000), KP_HAL_OK);
	assert_true(n >= 2);
	*sw = (uint16_t)(rx[n - 2] << 8 | rx[n - 1]);
	return n;
}

static void send_hex(struct kp_reader *r, const char *hex, uint16_t want_sw)
{
	uint8_t tx[300], rx[300];
	uint16_t sw = 0;
	size_t n = tu_hex(hex, tx, sizeof(tx));

	xfer(r, tx, n, rx, &sw);
	assert_int_equal(sw, want_sw);
}

/* The card the tool made, as a terminal would use it (PROTOCOLS.md section 3). */
static void test_mock_card(void **state)
{
	static const char di_prefix[] = "3031300D060960864801650304020105000420";
	struct kp_reader *r = NULL;
	struct kp_card_info info;
	struct kp_poll poll = { KP_TECH_ISO14443B, 0, 0 };
	struct kp_mock_jpki_stats st;
	uint8_t cert[4096], rx[300], tx[300], hash[KP_SHA256_LEN];
	size_t total, off, n;
	uint16_t sw = 0;
	kp_cert *auth = NULL, *ca = NULL;
	char conn[600], err[256];
	FILE *fp;

	(void)state;
	kp_mock_set_rsa_signer(crypto_signer, NULL);
	snprintf(conn, sizeof(conn), "start %lld\ncard hanako mynumber dir=card1 pin=2580\n"
	         "tap +0 hanako\n", (long long)t_now);
	tu_write(p("scn.txt"), conn);
	snprintf(conn, sizeof(conn), "mock:%s", p("scn.txt"));
	assert_int_equal(kp_reader_open(&r, conn), KP_HAL_OK);
	assert_int_equal(kp_reader_wait_card(r, &poll, &info, 1000), KP_HAL_OK);
	send_hex(r, "00A4040C0A D392F000260100000001", 0x9000);
	send_hex(r, "00A4020C02 000A", 0x9000);
	/* the header, then chunks of at most 255 */
	n = xfer(r, (const uint8_t *)"\x00\xB0\x00\x00\x07", 5, rx, &sw);
	assert_int_equal(sw, 0x9000);
	assert_int_equal(n, 9);
	assert_int_equal(rx[1], 0x82);
	total = 4 + ((size_t)rx[2] << 8 | rx[3]);
	assert_true(total < sizeof(cert));
	memcpy(cert, rx, 7);
	for (off = 7; off < total; off += n - 2) {
		uint8_t rb[5] = { 0x00, 0xB0, (uint8_t)(off >> 8), (uint8_t)off,
		                  (uint8_t)(total - off < 255 ? total - off : 255) };

		n = xfer(r, rb, 5, rx, &sw);
		assert_int_equal(sw, 0x9000);
		memcpy(cert + off, rx, n - 2);
	}
	assert_int_equal(kp_cert_parse(&auth, cert, total), KP_CRYPTO_OK);
	assert_int_equal(kp_cert_load(&ca, p("CA.crt")), 0);
	assert_int_equal(kp_cert_check_at(auth, ca, kp_reader_now_ms(r), KU_DIGITAL_SIGNATURE,
	                                  err, sizeof(err)), KP_CRYPTO_OK);
	/* PIN, then the signature over a SHA-256 DigestInfo */
	send_hex(r, "00A4020C02 0018", 0x9000);
	send_hex(r, "00200080", 0x63C3);
	send_hex(r, "0020008004 32353830", 0x9000);
	send_hex(r, "00A4020C02 0017", 0x9000);
	assert_int_equal(kp_sha256("terminal challenge", 18, hash), 0);
	n = 0;
	memcpy(tx, "\x80\x2A\x00\x80\x33", 5);
	n = 5 + tu_hex(di_prefix, tx + 5, 19);
	memcpy(tx + n, hash, KP_SHA256_LEN);
	n += KP_SHA256_LEN;
	tx[n++] = 0x00;
	n = xfer(r, tx, n, rx, &sw);
	assert_int_equal(sw, 0x9000);
	assert_int_equal(n, 258);
	assert_int_equal(kp_cert_verify_rsa_sha256(auth, hash, rx, 256), KP_CRYPTO_OK);
	/* and OpenSSL checks the same signature of the same message */
	fp = fopen(p("sig.bin"), "wb");
	assert_non_null(fp);
	assert_int_equal(fwrite(rx, 1, 256, fp), 256);
	fclose(fp);
	tu_write(p("msg.txt"), "terminal challenge");
	assert_int_equal(tu_sh("cd %s && openssl x509 -inform DER -in card1/auth.der -pubkey "
	                       "-noout >pub.pem && openssl dgst -sha256 -verify pub.pem "
	                       "-signature sig.bin msg.txt >/dev/null", dir), 0);
	assert_int_equal(kp_mock_jpki_stats(r, "hanako", &st), KP_HAL_OK);
	assert_int_equal(st.signatures, 1);
	assert_int_equal(st.select_input_support + st.select_card_face, 0);
	kp_cert_free(auth);
	kp_cert_free(ca);
	kp_reader_close(r);
}

static void test_refusals(void **state)
{
	char *err;
	struct stat st;

	(void)state;
	/* nothing is overwritten */
	assert_int_equal(ctl("jpki ca create --key CA.key --cert CA2.crt"), 1);
	assert_int_equal(access(p("CA2.crt"), F_OK), -1);
	assert_int_equal(ctl("jpki card create --ca-key CA.key --ca-cert CA.crt --dir card1 "
	                     "--serial 43"), 1);
	err = tu_read(p("err.txt"));
	assert_non_null(strstr(err, "exists: refusing to overwrite a card"));
	free(err);
	/* a key that is not the CA's: no card left behind */
	assert_int_equal(ctl("jpki card create --ca-key card1/auth.key --ca-cert CA.crt "
	                     "--dir bad --serial 7"), 1);
	err = tu_read(p("err.txt"));
	assert_non_null(strstr(err, "not the CA key"));
	free(err);
	assert_int_equal(access(p("bad/auth.key"), F_OK), -1);
	assert_int_equal(access(p("bad/auth.der"), F_OK), -1);
	/* arguments */
	assert_int_equal(ctl("jpki card create --ca-key CA.key --ca-cert CA.crt --dir x"), 2);
	assert_int_equal(ctl("jpki card create --ca-key CA.key --ca-cert CA.crt --dir x "
	                     "--serial 0"), 2);
	assert_int_equal(ctl("jpki card create --ca-key CA.key --ca-cert CA.crt --dir x "
	                     "--serial 12ab"), 2);
	assert_int_equal(ctl("jpki card create --ca-key CA.key --ca-cert CA.crt --dir x "
	                     "--serial 1 --not-before 2030-01-01T00:00:00Z "
	                     "--not-after 2029-01-01T00:00:00Z"), 2);
	assert_int_equal(ctl("jpki card create --ca-key CA.key --ca-cert CA.crt --dir x "
	                     "--serial 1 --not-before yesterday"), 2);
	assert_int_equal(ctl("jpki card create --ca-key CA.key --ca-cert CA.crt --dir x "
	                     "--serial 1 --cn 'a,O=b'"), 1);
	assert_int_equal(ctl("jpki card create --ca-key CA.key --ca-cert CA.crt --dir x "
	                     "--serial 1 --days 3 --not-after 2029-01-01T00:00:00Z"), 2);
	assert_int_equal(ctl("jpki card create --ca-key CA.key --ca-cert CA.crt --dir x "
	                     "--serial 1 --days 0"), 2);
	assert_int_equal(ctl("jpki ca create --key y.key"), 2);
	assert_int_equal(ctl("jpki ca create --key y.key --cert y.crt --serial 3"), 2);
	assert_int_equal(ctl("jpki ca make --key y.key --cert y.crt"), 2);
	assert_int_equal(ctl("jpki"), 2);
	assert_int_equal(stat(p("y.key"), &st), -1);
	/* the help says what this authority is */
	assert_int_equal(ctl("--help"), 0);
	assert_int_equal(tu_sh("grep -q 'TEST authority standing in for J-LIS' %s", p("out.txt")), 0);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_files),
		cmocka_unit_test(test_mock_card),
		cmocka_unit_test(test_refusals),
		cmocka_unit_test(test_validity_window),
	};

	return cmocka_run_group_tests(tests, group_setup, group_teardown);
}
