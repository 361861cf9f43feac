/* SPDX-License-Identifier: Apache-2.0 */
/* Privacy by construction: the rotating pseudonym, the opt-out list and the secret file. */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "an_int.h"
#include "kp_hash.h"

int an_period_key(const uint8_t *secret, size_t secret_len, const char *period,
                  uint8_t key[KP_SHA256_LEN])
{
	char label[96];
	int n = snprintf(label, sizeof(label), "kippu ridership pseudonym %s", period);

	if (n < 0 || (size_t)n >= sizeof(label) ||
	    kp_hmac_sha256(secret, secret_len, label, (size_t)n, key) != 0)
		return KP_AN_E_INVAL;
	return KP_AN_OK;
}

int an_pseudonym_with(const uint8_t key[KP_SHA256_LEN], const uint8_t token[16], char out[33])
{
	uint8_t mac[KP_SHA256_LEN];

	if (kp_hmac_sha256(key, KP_SHA256_LEN, token, 16, mac) != 0)
		return KP_AN_E_INVAL;
	for (int i = 0; i < 16; i++)
		snprintf(out + 2 * i, 3, "%02x", mac[i]);
	return KP_AN_OK;
}

int kp_an_pseudonym(const uint8_t *secret, size_t secret_len, const char *period,
                    const uint8_t token[16], char out[33])
{
	uint8_t key[KP_SHA256_LEN];
	int rc = an_period_key(secret, secret_len, period, key);

	if (rc == KP_AN_OK)
		rc = an_pseudonym_with(key, token, out);
	kp_zeroize(key, sizeof(key));
	return rc;
}

static int hexval(int c)
{
	if (c >= '0' && c <= '9')
		return c - '0';
	if (c >= 'a' && c <= 'f')
		return c - 'a' + 10;
	if (c >= 'A' && c <= 'F')
		return c - 'A' + 10;
	return -1;
}

static int cmp_token(const void *a, const void *b)
{
	return memcmp(a, b, 16);
}

/* One line of the list: 32 hex digits, optionally after "token:"; blank lines and lines
 * starting with '#' are skipped (1). 0 with the token, -1 for anything else. */
static int parse_line(char *line, uint8_t t[16])
{
	char *p = line + strspn(line, " \t");

	p[strcspn(p, "\r\n")] = '\0';
	for (size_t n = strlen(p); n > 0 && (p[n - 1] == ' ' || p[n - 1] == '\t'); n--)
		p[n - 1] = '\0';
	if (*p == '\0' || *p == '#')
		return 1;
	if (strncmp(p, "token:", 6) == 0)
		p += 6;
	if (strlen(p) != 32)
		return -1;
	for (int i = 0; i < 16; i++) {
		int hi = hexval(p[2 * i]), lo = hexval(p[2 * i + 1]);

		if (hi < 0 || lo < 0)
			return -1;
		t[i] = (uint8_t)(hi << 4 | lo);
	}
	return 0;
}

int an_optout_load(struct an_optout *o, const char *path, char *err, size_t cap)
{
	char line[256];
	size_t alloc = 0, lineno = 0;
	FILE *fp;

	memset(o, 0, sizeof(*o));
	fp = fopen(path, "r");
	if (fp == NULL) {
		snprintf(err, cap, "cannot read the opt-out list %s: %s", path, strerror(errno));
		return KP_AN_E_IO;
	}
	while (fgets(line, sizeof(line), fp) != NULL) {
		uint8_t t[16];
		int r = parse_line(line, t);

		lineno++;
		if (r == 1)
			continue;
		if (r < 0) {
			snprintf(err, cap, "opt-out list %s:%zu: not a card token (32 hex digits,"
			         " optionally after token:)", path, lineno);
			goto fail;
		}
		if (o->n == alloc) {
			void *p = realloc(o->t, (alloc = alloc ? alloc * 2 : 64) * 16);

			if (p == NULL) {
				snprintf(err, cap, "out of memory reading %s", path);
				goto fail;
			}
			o->t = p;
		}
		memcpy(o->t[o->n++], t, 16);
	}
	fclose(fp);
	if (o->n > 0)
		qsort(o->t, o->n, 16, cmp_token);
	return KP_AN_OK;
fail:
	fclose(fp);
	an_optout_free(o);
	return KP_AN_E_INVAL;
}

int an_optout_has(const struct an_optout *o, const uint8_t token[16])
{
	return o->n > 0 && bsearch(token, o->t, o->n, 16, cmp_token) != NULL;
}

void an_optout_free(struct an_optout *o)
{
	free(o->t);
	memset(o, 0, sizeof(*o));
}

int an_secret_load(const char *path, uint8_t *buf, size_t cap, size_t *len, char *err,
                   size_t errcap)
{
	FILE *fp = fopen(path, "rb");
	size_t n;

	if (fp == NULL) {
		snprintf(err, errcap, "cannot read the pseudonym secret %s: %s", path, strerror(errno));
		return KP_AN_E_IO;
	}
	n = fread(buf, 1, cap, fp);
	fclose(fp);
	if (n < KP_AN_SECRET_MIN) {
		snprintf(err, errcap, "pseudonym secret %s: %zu bytes, at least %d needed (e.g. head -c 32"
		         " /dev/urandom > %s)", path, n, KP_AN_SECRET_MIN, path);
		kp_zeroize(buf, cap);
		return KP_AN_E_INVAL;
	}
	*len = n;
	return KP_AN_OK;
}
