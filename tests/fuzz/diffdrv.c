/* SPDX-License-Identifier: Apache-2.0 */
/* The differential checks' driver (tests/fuzz/diff_check.py): the project's CBOR reader and
 * COSE_Sign1 verifier on files, one line of result per file.
 *   kippu-diffdrv cbor FILE...       "ok VALUE", "refuse", or "unsupported" (floats, simple
 *                                    values, indefinite lengths, nesting beyond 64)
 *   kippu-diffdrv cose CERT FILE...  "valid" or "invalid"
 * VALUE: integers in decimal, h'HEX' byte strings, t'HEX' text strings (UTF-8 bytes),
 * [a,b] arrays, {N|k:v,k:v} maps (N pairs, in input order), T<tag>(v) tags, null. */
#include "kp_cbor.h"
#include "kp_cert.h"
#include "kp_record.h"

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

enum { OK, REFUSE, UNSUPPORTED };

static int item(struct kp_cbor_reader *r, FILE *o, int depth)
{
	struct kp_cbor_item it;
	int rc;

	if (depth > 64)
		return UNSUPPORTED;
	if (kp_cbor_next(r, &it) != KP_RECORD_OK)
		return REFUSE;
	switch (it.type) {
	case KP_CBOR_UINT:
		fprintf(o, "%" PRIu64, it.arg);
		return OK;
	case KP_CBOR_NEGINT:
		if (it.arg == UINT64_MAX)
			fputs("-18446744073709551616", o);
		else
			fprintf(o, "-%" PRIu64, it.arg + 1);
		return OK;
	case KP_CBOR_BSTR:
	case KP_CBOR_TSTR:
		if (it.type == KP_CBOR_TSTR && !kp_cbor_utf8_valid(it.data, (size_t)it.arg))
			return REFUSE;
		fputs(it.type == KP_CBOR_BSTR ? "h'" : "t'", o);
		for (uint64_t i = 0; i < it.arg; i++)
			fprintf(o, "%02x", it.data[i]);
		fputc('\'', o);
		return OK;
	case KP_CBOR_ARRAY:
	case KP_CBOR_MAP:
		if (it.type == KP_CBOR_ARRAY)
			fputc('[', o);
		else
			fprintf(o, "{%" PRIu64 "|", it.arg);
		for (uint64_t i = 0; i < it.arg; i++) {
			if (i > 0)
				fputc(',', o);
			if ((rc = item(r, o, depth + 1)) != OK)
				return rc;
			if (it.type == KP_CBOR_MAP) {
				fputc(':', o);
				if ((rc = item(r, o, depth + 1)) != OK)
					return rc;
			}
		}
		fputc(it.type == KP_CBOR_ARRAY ? ']' : '}', o);
		return OK;
	case KP_CBOR_TAG:
		fprintf(o, "T%" PRIu64 "(", it.arg);
		if ((rc = item(r, o, depth + 1)) != OK)
			return rc;
		fputc(')', o);
		return OK;
	case KP_CBOR_NULL:
		fputs("null", o);
		return OK;
	default:
		return UNSUPPORTED;
	}
}

static uint8_t *slurp(const char *path, size_t *len)
{
	FILE *f = fopen(path, "rb");
	uint8_t *buf = NULL;
	size_t cap = 0, n = 0, got;

	if (f == NULL)
		return NULL;
	do {
		if (n == cap) {
			uint8_t *nb = realloc(buf, cap = cap * 2 + 4096);

			if (nb == NULL) {
				free(buf);
				fclose(f);
				return NULL;
			}
			buf = nb;
		}
		got = fread(buf + n, 1, cap - n, f);
		n += got;
	} while (got > 0);
	fclose(f);
	*len = n;
	return buf;
}

static int cbor_one(const uint8_t *buf, size_t len)
{
	struct kp_cbor_reader r = { .buf = buf, .len = len };
	char *val = NULL;
	size_t val_len = 0;
	FILE *o = open_memstream(&val, &val_len);
	int rc;

	if (o == NULL)
		return -1;
	rc = item(&r, o, 0);
	fclose(o);
	if (rc == OK && r.pos != len)
		rc = REFUSE;            /* trailing bytes */
	if (rc == OK)
		printf("ok %s\n", val);
	else
		puts(rc == REFUSE ? "refuse" : "unsupported");
	free(val);
	return 0;
}

int main(int argc, char **argv)
{
	kp_cert *cert = NULL;
	int first;

	if (argc >= 2 && strcmp(argv[1], "cbor") == 0) {
		first = 2;
	} else if (argc >= 3 && strcmp(argv[1], "cose") == 0) {
		if (kp_cert_load(&cert, argv[2]) != 0) {
			fprintf(stderr, "kippu-diffdrv: cannot read the certificate %s\n", argv[2]);
			return 2;
		}
		first = 3;
	} else {
		fputs("usage: kippu-diffdrv cbor FILE... | cose CERT FILE...\n", stderr);
		return 2;
	}
	for (int i = first; i < argc; i++) {
		size_t len = 0;
		uint8_t *buf = slurp(argv[i], &len);
		const uint8_t *p;
		size_t n;

		if (buf == NULL) {
			fprintf(stderr, "kippu-diffdrv: cannot read %s\n", argv[i]);
			return 2;
		}
		if (cert == NULL)
			cbor_one(buf, len);
		else
			puts(kp_cose_verify1(cert, buf, len, &p, &n, NULL, 0) == KP_RECORD_OK ?
			     "valid" : "invalid");
		free(buf);
	}
	kp_cert_free(cert);
	return 0;
}
