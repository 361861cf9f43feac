/* SPDX-License-Identifier: Apache-2.0 */
/* Card tokens and the error text table. The terminal never keeps a raw card id: it keeps
 * HMAC-SHA256(token_key, kind || id) cut to 16 bytes, which the backend derives too. */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "kp_card.h"
#include "kp_proto.h"

const char *kp_strerror(int rc)
{
	if (rc <= -0x100 && rc > -0x200)
		return kp_hal_strerror(rc);
	if (rc <= -0x200 && rc > -0x400)
		return kp_sync_error_text(rc);
	switch (rc) {
	case KP_OK:             return "ok";
	case KP_E_INVAL:        return "invalid argument or value";
	case KP_E_NOMEM:        return "out of memory";
	case KP_E_IO:           return "input/output error";
	case KP_E_DB:           return "database error";
	case KP_E_SCHEMA:       return "database schema is newer than this program or damaged";
	case KP_E_FRAME_SHORT:  return "card reply too short";
	case KP_E_FRAME_LONG:   return "card reply too long";
	case KP_E_FRAME_LEN:    return "card reply length byte disagrees with its length";
	case KP_E_FRAME_CODE:   return "card reply has the wrong response code";
	case KP_E_FRAME_IDM:    return "card reply comes from another card (IDm differs)";
	case KP_E_CARD_STATUS:  return "card answered with error status flags";
	case KP_E_FRAME_FORMAT: return "card reply fields are inconsistent";
	case KP_E_CONFIG:       return "configuration error";
	case KP_E_PARSE:        return "parse error";
	case KP_E_CHAIN:        return "journal hash chain broken";
	case KP_E_SEQ:          return "journal sequence has a gap";
	case KP_E_JOURNAL:      return "journal record does not match its signed payload";
	case KP_E_SW_NOTFOUND:  return "card: file or application not found (6A82)";
	case KP_E_SW_SECURITY:  return "card: security status not satisfied (6982)";
	case KP_E_SW_LENGTH:    return "card: wrong length (6700/6Cxx)";
	case KP_E_SW_BLOCKED:   return "card: PIN blocked";
	case KP_E_SW_PIN:       return "card: wrong PIN";
	case KP_E_SW_OTHER:     return "card: error status word";
	case KP_E_CERT:         return "card certificate not valid for JPKI authentication";
	case KP_E_CERT_EXPIRED: return "card certificate expired";
	case KP_E_CERT_NOT_YET: return "card certificate not yet valid";
	case KP_E_PIN_LAST_TRY: return "only one PIN try left: not attempted";
	case KP_E_PIN_FORMAT:   return "PIN input is not exactly 4 digits";
	case KP_E_PIN_NONE:     return "no PIN entered for this card";
	case KP_E_PIN_COUNTER:  return "card: malformed PIN counter answer";
	case KP_E_CARD_SIGNATURE: return "card signature does not verify with its certificate";
	case KP_E_FEED:         return "GTFS feed violates the spec";
	case KP_E_NOFARE:       return "no fare matches this journey";
	default:                return "unknown error";
	}
}

int kp_valid_id(const char *s)
{
	if (s == NULL || *s == '\0' || strlen(s) > KP_ID_MAX)
		return 0;
	for (; *s != '\0'; s++) {
		if (!(*s >= 'a' && *s <= 'z') && !(*s >= 'A' && *s <= 'Z') &&
		    !(*s >= '0' && *s <= '9') && *s != '-' && *s != '_' && *s != '.')
			return 0;
	}
	return 1;
}

void kp_hex(const uint8_t *b, size_t n, char *out)
{
	static const char digits[] = "0123456789abcdef";

	for (size_t i = 0; i < n; i++) {
		out[2 * i] = digits[b[i] >> 4];
		out[2 * i + 1] = digits[b[i] & 0x0F];
	}
	out[2 * n] = '\0';
}

static int hexval(char c)
{
	if (c >= '0' && c <= '9')
		return c - '0';
	if (c >= 'a' && c <= 'f')
		return c - 'a' + 10;
	if (c >= 'A' && c <= 'F')
		return c - 'A' + 10;
	return -1;
}

int kp_unhex(const char *s, uint8_t *out, size_t n)
{
	if (s == NULL || strlen(s) != 2 * n)
		return KP_E_INVAL;
	for (size_t i = 0; i < n; i++) {
		int hi = hexval(s[2 * i]), lo = hexval(s[2 * i + 1]);

		if (hi < 0 || lo < 0)
			return KP_E_INVAL;
		out[i] = (uint8_t)(hi << 4 | lo);
	}
	return KP_OK;
}

int kp_token_derive(const uint8_t key[KP_TOKEN_KEY_LEN], const char *kind,
                    const uint8_t *id, size_t id_len, uint8_t token[KP_TOKEN_LEN])
{
	uint8_t msg[640], mac[KP_SHA256_LEN];   /* JPKI: "jpki" + issuer Name (~130 B) + serial */
	size_t kind_len;
	int rc;

	if (key == NULL || kind == NULL || id == NULL || token == NULL)
		return KP_E_INVAL;
	kind_len = strlen(kind);
	if (kind_len == 0 || kind_len + id_len > sizeof(msg))
		return KP_E_INVAL;
	memcpy(msg, kind, kind_len);
	memcpy(msg + kind_len, id, id_len);
	rc = kp_hmac_sha256(key, KP_TOKEN_KEY_LEN, msg, kind_len + id_len, mac);
	if (rc == 0)
		memcpy(token, mac, KP_TOKEN_LEN);
	kp_zeroize(msg, sizeof(msg));
	kp_zeroize(mac, sizeof(mac));
	return rc;
}

int kp_token_key_load(const char *path, uint8_t key[KP_TOKEN_KEY_LEN])
{
	char buf[2 * KP_TOKEN_KEY_LEN + 8];
	size_t n;
	int rc = KP_E_IO;
	FILE *fp = fopen(path, "r");

	if (fp == NULL)
		return KP_E_IO;
	n = fread(buf, 1, sizeof(buf) - 1, fp);
	buf[n] = '\0';
	while (n > 0 && (buf[n - 1] == '\n' || buf[n - 1] == '\r' || buf[n - 1] == ' '))
		buf[--n] = '\0';
	rc = kp_unhex(buf, key, KP_TOKEN_KEY_LEN) == KP_OK ? KP_OK : KP_E_PARSE;
	kp_zeroize(buf, sizeof(buf));
	fclose(fp);
	return rc;
}

int kp_token_key_create(const char *path)
{
	uint8_t key[KP_TOKEN_KEY_LEN];
	char hex[2 * KP_TOKEN_KEY_LEN + 2];
	int fd = -1, rc;

	rc = kp_random(key, sizeof(key));
	if (rc != 0)
		goto out;
	kp_hex(key, sizeof(key), hex);
	strcat(hex, "\n");
	fd = open(path, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
	if (fd < 0) {
		rc = errno == EEXIST ? KP_CRYPTO_E_EXISTS : KP_E_IO;
		goto out;
	}
	/* exactly 0600 whatever the umask (a umask only takes bits away) */
	rc = fchmod(fd, 0600) == 0 && write(fd, hex, strlen(hex)) == (ssize_t)strlen(hex) &&
	     fsync(fd) == 0 ? KP_OK : KP_E_IO;
out:
	if (fd >= 0)
		close(fd);
	kp_zeroize(key, sizeof(key));
	kp_zeroize(hex, sizeof(hex));
	return rc;
}
