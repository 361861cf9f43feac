/* SPDX-License-Identifier: Apache-2.0 */
/* My Number card, JPKI application only (ISO 7816 APDUs over the HAL's Type B path).
 * kippu reads the user-authentication certificate, which needs no PIN, and in strong mode
 * has the card sign a fresh challenge after the holder's PIN. It never selects the
 * card-info input-support or card-face applications: the only AID this file can send is
 * JPKI's, and the individual number is never read. */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "kp_card.h"

static const uint8_t JPKI_AID[10] = { 0xD3, 0x92, 0xF0, 0x00, 0x26, 0x01, 0x00, 0x00, 0x00, 0x01 };

#define EF_AUTH_CERT 0x000A
#define EF_AUTH_PIN  0x0018
#define EF_AUTH_KEY  0x0017

/* SHA-256 DigestInfo prefix (RFC 8017 section 9.2, note 1). */
static const uint8_t DIGESTINFO_SHA256[19] = { 0x30, 0x31, 0x30, 0x0D, 0x06, 0x09, 0x60, 0x86,
                                               0x48, 0x01, 0x65, 0x03, 0x04, 0x02, 0x01, 0x05,
                                               0x00, 0x04, 0x20 };

void kp_jpki_init(struct kp_jpki *j, struct kp_reader *r, int timeout_ms)
{
	memset(j, 0, sizeof(*j));
	j->reader = r;
	j->timeout_ms = timeout_ms > 0 ? timeout_ms : 200;
}

/* Status word to error: every SW the card can give gets its own meaning. */
static int sw_error(uint16_t sw)
{
	if (sw == 0x9000)
		return KP_OK;
	if (sw == 0x6A82)
		return KP_E_SW_NOTFOUND;
	if (sw == 0x6982)
		return KP_E_SW_SECURITY;
	if (sw == 0x6700)
		return KP_E_SW_LENGTH;
	if (sw == 0x6984 || sw == 0x6983)
		return KP_E_SW_BLOCKED;
	if ((sw & 0xFFF0) == 0x63C0)
		return KP_E_SW_PIN;
	if ((sw & 0xFF00) == 0x6C00)
		return KP_E_SW_LENGTH;
	return KP_E_SW_OTHER;
}

/* One APDU; the reply's data (without SW) goes to out. */
static int apdu(struct kp_jpki *j, const uint8_t *tx, size_t tx_len, uint8_t *out, size_t cap,
                size_t *out_len)
{
	uint8_t rx[300];
	size_t rx_len = 0;
	int rc = kp_reader_transceive(j->reader, tx, tx_len, rx, sizeof(rx), &rx_len, j->timeout_ms);

	if (out_len != NULL)
		*out_len = 0;
	if (rc != KP_HAL_OK)
		return rc;
	if (rx_len < 2)
		return KP_E_FRAME_SHORT;
	j->sw = (uint16_t)(rx[rx_len - 2] << 8 | rx[rx_len - 1]);
	rx_len -= 2;
	if (j->sw != 0x9000) {
		if (rx_len != 0 && (j->sw & 0xFF00) != 0x6200 && (j->sw & 0xFF00) != 0x6300)
			return KP_E_FRAME_LONG;          /* error SWs carry no data */
		return sw_error(j->sw);
	}
	if (rx_len > cap)
		return KP_E_FRAME_LONG;
	if (out != NULL && rx_len > 0)
		memcpy(out, rx, rx_len);
	if (out_len != NULL)
		*out_len = rx_len;
	return KP_OK;
}

int kp_jpki_select_app(struct kp_jpki *j)
{
	uint8_t tx[5 + sizeof(JPKI_AID)] = { 0x00, 0xA4, 0x04, 0x0C, sizeof(JPKI_AID) };

	memcpy(tx + 5, JPKI_AID, sizeof(JPKI_AID));
	return apdu(j, tx, sizeof(tx), NULL, 0, NULL);
}

static int select_ef(struct kp_jpki *j, uint16_t fid)
{
	uint8_t tx[7] = { 0x00, 0xA4, 0x02, 0x0C, 0x02, (uint8_t)(fid >> 8), (uint8_t)fid };

	return apdu(j, tx, sizeof(tx), NULL, 0, NULL);
}

static int read_binary(struct kp_jpki *j, size_t off, size_t n, uint8_t *out, size_t *got)
{
	uint8_t tx[5] = { 0x00, 0xB0, (uint8_t)(off >> 8), (uint8_t)off, (uint8_t)n };
	int rc;

	if (off > 0x7FFF || n == 0 || n > 255)
		return KP_E_INVAL;
	rc = apdu(j, tx, sizeof(tx), out, n, got);
	/* 6Cxx: "Le should be xx": ask once more with exactly that many. */
	if (rc == KP_E_SW_LENGTH && (j->sw & 0xFF00) == 0x6C00 && (j->sw & 0xFF) != 0 &&
	    (j->sw & 0xFF) < n) {
		tx[4] = (uint8_t)(j->sw & 0xFF);
		rc = apdu(j, tx, sizeof(tx), out, tx[4], got);
	}
	return rc;
}

/* Length of a DER object from its header: tag, then short or long form length. */
static int der_total_len(const uint8_t *h, size_t n, size_t *total)
{
	size_t len = 0, hdr;

	if (n < 2 || h[0] != 0x30)
		return KP_E_CERT;
	if (h[1] < 0x80) {
		*total = 2 + h[1];
		return KP_OK;
	}
	hdr = 2 + (h[1] & 0x7F);
	if ((h[1] & 0x7F) == 0 || (h[1] & 0x7F) > 3 || n < hdr)
		return KP_E_CERT;
	for (size_t i = 2; i < hdr; i++)
		len = len << 8 | h[i];
	*total = hdr + len;
	return KP_OK;
}

int kp_jpki_read_auth_cert(struct kp_jpki *j, uint8_t *der, size_t cap, size_t *len)
{
	size_t total = 0, got = 0, have;
	int rc;

	*len = 0;
	rc = kp_jpki_select_app(j);
	if (rc == KP_OK)
		rc = select_ef(j, EF_AUTH_CERT);
	/* The DER header first (7 bytes cover tag + 4-byte length), then the rest. */
	if (rc == KP_OK)
		rc = read_binary(j, 0, 7, der, &got);
	if (rc != KP_OK)
		return rc;
	rc = der_total_len(der, got, &total);
	if (rc != KP_OK)
		return rc;
	if (total > cap || total > KP_JPKI_CERT_MAX)
		return KP_E_CERT;
	have = got;
	while (have < total) {
		size_t want = total - have > 255 ? 255 : total - have;

		rc = read_binary(j, have, want, der + have, &got);
		if (rc != KP_OK)
			return rc;
		if (got == 0)
			return KP_E_FRAME_SHORT;
		have += got;
	}
	*len = total;
	return KP_OK;
}

/* The PIN counter: VERIFY without data must be answered with exactly 63 Cx, x at most
 * JPKI's 3 tries, or 69 84 (blocked, PROTOCOLS.md 3). Anything else (90 00, data before
 * the status word, 63 C5, another status) fails closed: the card is not asked for a PIN. */
int kp_jpki_pin_tries(struct kp_jpki *j, int *tries)
{
	uint8_t tx[4] = { 0x00, 0x20, 0x00, 0x80 }, rx[300];
	size_t rx_len = 0;
	int rc;

	*tries = -1;
	rc = kp_jpki_select_app(j);
	if (rc == KP_OK)
		rc = select_ef(j, EF_AUTH_PIN);
	if (rc != KP_OK)
		return rc;
	rc = kp_reader_transceive(j->reader, tx, sizeof(tx), rx, sizeof(rx), &rx_len, j->timeout_ms);
	if (rc != KP_HAL_OK)
		return rc;
	j->sw = rx_len >= 2 ? (uint16_t)(rx[rx_len - 2] << 8 | rx[rx_len - 1]) : 0;
	if (rx_len != 2)
		return KP_E_PIN_COUNTER;
	if ((j->sw & 0xFFF0) == 0x63C0 && (j->sw & 0x0F) <= KP_JPKI_PIN_TRIES) {
		*tries = j->sw & 0x0F;
		return KP_OK;
	}
	if (j->sw == 0x6984) {
		*tries = 0;
		return KP_OK;
	}
	return KP_E_PIN_COUNTER;
}

int kp_jpki_verify_pin(struct kp_jpki *j, const char *pin, int *tries_left)
{
	uint8_t tx[9] = { 0x00, 0x20, 0x00, 0x80, 0x04 };
	int rc;

	*tries_left = -1;
	if (pin == NULL || strlen(pin) != 4 || strspn(pin, "0123456789") != 4)
		return KP_E_INVAL;
	memcpy(tx + 5, pin, 4);
	rc = apdu(j, tx, sizeof(tx), NULL, 0, NULL);
	kp_zeroize(tx, sizeof(tx));
	if (rc == KP_E_SW_PIN)
		*tries_left = j->sw & 0x0F;
	else if (rc == KP_E_SW_BLOCKED)
		*tries_left = 0;
	return rc;
}

int kp_jpki_sign(struct kp_jpki *j, const uint8_t hash[KP_SHA256_LEN], uint8_t *sig, size_t cap,
                 size_t *sig_len)
{
	uint8_t tx[5 + sizeof(DIGESTINFO_SHA256) + KP_SHA256_LEN + 1];
	size_t n = 0;
	int rc;

	rc = select_ef(j, EF_AUTH_KEY);
	if (rc != KP_OK)
		return rc;
	tx[n++] = 0x80;
	tx[n++] = 0x2A;
	tx[n++] = 0x00;
	tx[n++] = 0x80;
	tx[n++] = sizeof(DIGESTINFO_SHA256) + KP_SHA256_LEN;
	memcpy(tx + n, DIGESTINFO_SHA256, sizeof(DIGESTINFO_SHA256));
	n += sizeof(DIGESTINFO_SHA256);
	memcpy(tx + n, hash, KP_SHA256_LEN);
	n += KP_SHA256_LEN;
	tx[n++] = 0x00;                      /* Le: 256 */
	return apdu(j, tx, n, sig, cap, sig_len);
}

/* The serial number's INTEGER content in its canonical (minimal two's complement) form:
 * a card whose DER pads its serial with 00 (or FF) bytes is the same card. */
static void canonical_serial(const uint8_t **p, size_t *n)
{
	while (*n > 1 && (((*p)[0] == 0x00 && !((*p)[1] & 0x80)) ||
	                  ((*p)[0] == 0xFF && ((*p)[1] & 0x80)))) {
		(*p)++;
		(*n)--;
	}
}

int kp_linkage_token(const uint8_t key[KP_TOKEN_KEY_LEN], const kp_cert *ca, const kp_cert *cert,
                     uint8_t token[KP_TOKEN_LEN])
{
	const uint8_t *serial = NULL;
	size_t serial_len = 0;
	uint8_t id[KP_SHA256_LEN + KP_JPKI_SERIAL_MAX];
	int rc;

	if (ca == NULL || cert == NULL)
		return KP_E_INVAL;
	rc = kp_cert_serial_raw(cert, &serial, &serial_len);
	if (rc != 0)
		return rc;
	canonical_serial(&serial, &serial_len);
	if (serial_len == 0 || serial_len > KP_JPKI_SERIAL_MAX)
		return KP_E_CERT;
	/* The issuing CA by its key, not its name: another CA of the same name is another
	 * issuer, and a re-encoded name is the same one. */
	rc = kp_cert_spki_sha256(ca, id);
	if (rc != 0)
		return rc;
	memcpy(id + KP_SHA256_LEN, serial, serial_len);
	rc = kp_token_derive(key, KP_LINKAGE_KIND, id, KP_SHA256_LEN + serial_len, token);
	kp_zeroize(id, sizeof(id));
	return rc;
}

/* What no card's certificate may be, whoever signed it: a configured CA (every card carries
 * its CA's certificate in EF 000B), a CA certificate, a certificate whose use is not
 * written in it, or one not for signatures. */
static int check_card_profile(const kp_cert *cert, const kp_cert *const *cas, size_t n_cas,
                              char *err, size_t err_cap)
{
	const uint8_t *der = NULL, *ca_der = NULL;
	size_t der_len = 0, ca_der_len = 0;
	uint8_t key[KP_SHA256_LEN], ca_key[KP_SHA256_LEN];
	unsigned ku = 0;
	int is_ca = 0, has_ku = 0;

	if (kp_cert_der(cert, &der, &der_len) != 0 || kp_cert_spki_sha256(cert, key) != 0 ||
	    kp_cert_constraints(cert, &is_ca, &has_ku, &ku) != 0) {
		snprintf(err, err_cap, "certificate cannot be examined");
		return KP_E_CERT;
	}
	for (size_t i = 0; i < n_cas; i++) {
		if (kp_cert_der(cas[i], &ca_der, &ca_der_len) == 0 && ca_der_len == der_len &&
		    memcmp(ca_der, der, der_len) == 0) {
			snprintf(err, err_cap, "this is a configured JPKI CA's certificate, not a card's");
			return KP_E_CERT;
		}
		if (kp_cert_spki_sha256(cas[i], ca_key) == 0 && memcmp(ca_key, key, sizeof(key)) == 0) {
			snprintf(err, err_cap, "the certificate holds a configured JPKI CA's key, not a "
			         "card's");
			return KP_E_CERT;
		}
	}
	if (is_ca) {
		snprintf(err, err_cap, "basicConstraints CA:TRUE: a CA certificate, not a card's");
		return KP_E_CERT;
	}
	if (!has_ku) {
		snprintf(err, err_cap, "no keyUsage extension (a card's says digitalSignature)");
		return KP_E_CERT;
	}
	if (!(ku & KP_KU_DIGITAL_SIGNATURE)) {
		snprintf(err, err_cap, "keyUsage 0x%02x without digitalSignature", ku);
		return KP_E_CERT;
	}
	return KP_OK;
}

int kp_jpki_check_card(const kp_cert *cert, const kp_cert *const *cas, size_t n_cas,
                       int64_t at_ms, size_t *issuer, char *err, size_t err_cap)
{
	char why[200] = "";
	int64_t nb = 0, na = 0;
	int signer = -1, rc;

	err[0] = '\0';
	if (n_cas == 0) {
		snprintf(err, err_cap, "no JPKI authentication CA configured (jpki_ca)");
		return KP_E_CERT;
	}
	rc = check_card_profile(cert, cas, n_cas, err, err_cap);
	if (rc != KP_OK)
		return rc;
	/* The issuer is the configured CA whose signature verifies, whatever the dates; J-LIS
	 * renews its CA, so several may be configured, and the log names the issuer's reason. */
	for (size_t i = 0; i < n_cas; i++) {
		char e[200];

		if (kp_cert_check_signature(cert, cas[i], NULL, 0) != 0)
			continue;
		if (at_ms == INT64_MIN ||
		    kp_cert_check_at(cert, cas[i], at_ms, KP_KU_DIGITAL_SIGNATURE, e, sizeof(e)) == 0) {
			if (issuer != NULL)
				*issuer = i;
			return KP_OK;
		}
		if (signer < 0) {
			signer = (int)i;
			snprintf(why, sizeof(why), "%s", e);
		}
	}
	if (signer < 0) {
		snprintf(err, err_cap, "not signed by %s configured JPKI CA", n_cas == 1 ? "the" : "any");
		return KP_E_CERT;
	}
	if (issuer != NULL)
		*issuer = (size_t)signer;
	snprintf(err, err_cap, "%s", why);
	/* Issued by a JPKI CA: out of its own dates it is expired or not valid yet (even if its
	 * CA has been renewed since); anything else wrong at this time is card-invalid. */
	if (kp_cert_validity(cert, &nb, &na) == 0 && at_ms / 1000 > na)
		return KP_E_CERT_EXPIRED;
	if (kp_cert_validity(cert, &nb, &na) == 0 && at_ms / 1000 < nb)
		return KP_E_CERT_NOT_YET;
	return KP_E_CERT;
}

int kp_jpki_identify(struct kp_jpki *j, const kp_cert *const *cas, size_t n_cas, int64_t at_ms,
                     const uint8_t token_key[KP_TOKEN_KEY_LEN], uint8_t token[KP_TOKEN_LEN],
                     kp_cert **cert_out, char *err, size_t err_cap)
{
	static uint8_t der[KP_JPKI_CERT_MAX];   /* the tap path is single-threaded */
	kp_cert *cert = NULL;
	size_t len = 0, issuer = 0;
	int rc;

	err[0] = '\0';
	if (cert_out != NULL)
		*cert_out = NULL;
	rc = kp_jpki_read_auth_cert(j, der, sizeof(der), &len);
	if (rc != KP_OK) {
		snprintf(err, err_cap, "certificate read: %s", kp_strerror(rc));
		return rc;
	}
	rc = kp_cert_parse(&cert, der, len);
	if (rc != 0) {
		snprintf(err, err_cap, "certificate does not parse");
		rc = KP_E_CERT;
		goto out;
	}
	rc = kp_jpki_check_card(cert, cas, n_cas, at_ms, &issuer, err, err_cap);
	if (rc == KP_OK)
		rc = kp_linkage_token(token_key, cas[issuer], cert, token);
out:
	kp_zeroize(der, sizeof(der));
	if (rc == KP_OK && cert_out != NULL)
		*cert_out = cert;
	else
		kp_cert_free(cert);
	return rc;
}

int kp_jpki_prove(struct kp_jpki *j, const kp_cert *cert, struct kp_pin *pin, int *tries_left,
                  char *err, size_t err_cap)
{
	uint8_t challenge[32], hash[KP_SHA256_LEN], sig[300];
	size_t sig_len = 0;
	int tries = -1, rc;

	err[0] = '\0';
	*tries_left = -1;
	/* The PIN is looked at before any APDU: a card never sees a malformed one. */
	if (pin == NULL || !pin->have) {
		snprintf(err, err_cap, "no PIN entered for this card");
		return KP_E_PIN_NONE;
	}
	if (kp_pin_check(pin->digits) != KP_OK) {
		kp_pin_wipe(pin);
		snprintf(err, err_cap, "the PIN is not 4 digits");
		return KP_E_PIN_FORMAT;
	}
	rc = kp_jpki_pin_tries(j, &tries);
	if (rc != KP_OK) {
		kp_pin_wipe(pin);
		if (rc == KP_E_PIN_COUNTER)
			snprintf(err, err_cap, "PIN counter: malformed answer (SW %04X): no PIN sent", j->sw);
		else
			snprintf(err, err_cap, "PIN counter: %s", kp_strerror(rc));
		return rc;
	}
	*tries_left = tries;
	/* Never be the terminal that blocks a rider's card. */
	if (tries <= 1) {
		kp_pin_wipe(pin);
		snprintf(err, err_cap, "%d PIN tries left: not attempting here", tries);
		return tries == 0 ? KP_E_SW_BLOCKED : KP_E_PIN_LAST_TRY;
	}
	/* Used once, then gone: the PIN was entered for this card session only. */
	rc = kp_jpki_verify_pin(j, pin->digits, tries_left);
	kp_pin_wipe(pin);
	if (rc != KP_OK) {
		snprintf(err, err_cap, "PIN: %s (%d tries left)", kp_strerror(rc), *tries_left);
		return rc;
	}
	*tries_left = tries;
	/* A fresh challenge: the signature proves the card is here now and its holder knows
	 * the PIN. */
	rc = kp_random(challenge, sizeof(challenge));
	if (rc == 0)
		rc = kp_sha256(challenge, sizeof(challenge), hash);
	if (rc == 0)
		rc = kp_jpki_sign(j, hash, sig, sizeof(sig), &sig_len);
	if (rc != 0) {
		snprintf(err, err_cap, "signature: %s (SW %04X)", kp_strerror(rc), j->sw);
		return rc;
	}
	rc = kp_cert_verify_rsa_sha256(cert, hash, sig, sig_len);
	if (rc != 0) {
		/* The certificate's key did not sign: a copied certificate, not its card. */
		snprintf(err, err_cap, "the card's signature does not verify with its certificate");
		return KP_E_CARD_SIGNATURE;
	}
	return KP_OK;
}

/* ---- the PIN of one card session ---- */

int kp_pin_check(const char *digits)
{
	if (digits == NULL || strlen(digits) != KP_PIN_LEN ||
	    strspn(digits, "0123456789") != KP_PIN_LEN)
		return KP_E_PIN_FORMAT;
	return KP_OK;
}

void kp_pin_wipe(struct kp_pin *pin)
{
	if (pin != NULL)
		kp_zeroize(pin, sizeof(*pin));
}

int kp_pin_parse(struct kp_pin *pin, const char *buf, size_t n, char *err, size_t err_cap)
{
	size_t digits = 0;

	kp_pin_wipe(pin);
	err[0] = '\0';
	while (digits < n && buf[digits] >= '0' && buf[digits] <= '9')
		digits++;
	if (digits == KP_PIN_LEN && (n == KP_PIN_LEN || (n == KP_PIN_LEN + 1 && buf[4] == '\n'))) {
		memcpy(pin->digits, buf, KP_PIN_LEN);
		pin->digits[KP_PIN_LEN] = '\0';
		pin->have = 1;
		return KP_OK;
	}
	/* Say what is wrong, never what was typed. */
	if (n == 0)
		snprintf(err, err_cap, "the PIN input is empty");
	else if (digits == n || (digits + 1 == n && buf[digits] == '\n'))
		snprintf(err, err_cap, "the PIN has %zu digits, not %d", digits, KP_PIN_LEN);
	else
		snprintf(err, err_cap, "the PIN input holds something other than digits "
		         "(%d digits and one newline at most)", KP_PIN_LEN);
	return KP_E_PIN_FORMAT;
}

int kp_pin_take_file(struct kp_pin *pin, const char *path, char *err, size_t err_cap)
{
	char taken[4200], buf[KP_PIN_FILE_MAX + 1];
	struct stat st;
	ssize_t n = 0;
	int fd = -1, rc;

	kp_pin_wipe(pin);
	err[0] = '\0';
	/* Renamed away first: rename is atomic, so whatever this session takes, no later
	 * session can see, and a file the pad writes after this is the next one's. */
	if ((size_t)snprintf(taken, sizeof(taken), "%s.taken", path) >= sizeof(taken)) {
		snprintf(err, err_cap, "PIN file path too long");
		return KP_E_INVAL;
	}
	if (rename(path, taken) != 0) {
		if (errno == ENOENT) {
			snprintf(err, err_cap, "no PIN entered");
			return KP_E_PIN_NONE;
		}
		snprintf(err, err_cap, "PIN file %s: %s", path, strerror(errno));
		return KP_E_IO;
	}
	fd = open(taken, O_RDWR | O_NOFOLLOW | O_NONBLOCK | O_CLOEXEC);
	if (fd < 0 || fstat(fd, &st) != 0 || !S_ISREG(st.st_mode)) {
		snprintf(err, err_cap, "PIN file %s: not a regular file", path);
		rc = KP_E_PIN_FORMAT;
		goto out;
	}
	if (st.st_size > KP_PIN_FILE_MAX) {
		snprintf(err, err_cap, "the PIN input is %lld bytes long: not 4 digits",
		         (long long)st.st_size);
		rc = KP_E_PIN_FORMAT;
		goto out;
	}
	n = read(fd, buf, sizeof(buf));
	if (n < 0) {
		snprintf(err, err_cap, "PIN file %s: %s", path, strerror(errno));
		rc = KP_E_IO;
		goto out;
	}
	rc = kp_pin_parse(pin, buf, (size_t)n, err, err_cap);
	/* The digits are overwritten on disk too before the name goes. */
	if (n > 0 && pwrite(fd, "\0\0\0\0\0\0\0\0", (size_t)n, 0) == n)
		fsync(fd);
out:
	kp_zeroize(buf, sizeof(buf));
	if (fd >= 0)
		close(fd);
	if (unlink(taken) != 0 && rc == KP_OK) {
		kp_pin_wipe(pin);
		snprintf(err, err_cap, "PIN file %s: cannot remove it: %s", path, strerror(errno));
		rc = KP_E_IO;
	}
	return rc;
}
