/* SPDX-License-Identifier: Apache-2.0 */
/* Scenario file parser for the mock reader (format: hal/SCENARIO.md). Everything is
 * validated while reading, so a scenario that loads can be played without further
 * checks; the first bad line stops the load with "NAME:LINE: message". Messages name
 * cards by their scenario names and never quote an IDm, PUPI or UID. */
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "mock_scenario.h"

#define SCN_MAX_FIELDS 40
#define SCN_MAX_UID    10

enum scn_line_status { SCN_LINE_OK, SCN_LINE_EOF, SCN_LINE_LONG, SCN_LINE_NUL, SCN_LINE_ERR };
enum scn_num_status { SCN_NUM_OK, SCN_NUM_BAD, SCN_NUM_RANGE };

struct scn_parser {
	struct kp_scenario *s;
	const char *name;
	unsigned line;
	char *err;
	size_t err_cap;
	unsigned start_line, pace_line;   /* nonzero once seen */
	char base[PATH_MAX];              /* the folder a relative dir= is in */
};

static const char *const scn_fault_names[] = {
	[KP_SCN_FAULT_NONE] = "none",     [KP_SCN_FAULT_SHORT] = "short",
	[KP_SCN_FAULT_LONG] = "long",     [KP_SCN_FAULT_LEN] = "len",
	[KP_SCN_FAULT_CODE] = "code",     [KP_SCN_FAULT_IDM] = "idm",
	[KP_SCN_FAULT_STATUS] = "status", [KP_SCN_FAULT_GARBAGE] = "garbage",
	[KP_SCN_FAULT_SILENT] = "silent",
};
#define SCN_N_FAULTS (sizeof(scn_fault_names) / sizeof(scn_fault_names[0]))

const char *kp_scn_fault_name(enum kp_scn_fault f)
{
	if ((size_t)f >= SCN_N_FAULTS)
		return "unknown";
	return scn_fault_names[f];
}

__attribute__((format(printf, 2, 3)))
static int scn_fail(struct scn_parser *p, const char *fmt, ...)
{
	va_list ap;
	int n;

	if (p->err == NULL || p->err_cap == 0)
		return KP_HAL_E_CONFIG;
	n = snprintf(p->err, p->err_cap, "%s:%u: ", p->name, p->line);
	if (n >= 0 && (size_t)n < p->err_cap) {
		va_start(ap, fmt);
		vsnprintf(p->err + n, p->err_cap - (size_t)n, fmt, ap);
		va_end(ap);
	}
	return KP_HAL_E_CONFIG;
}

static int scn_hexval(char ch)
{
	if (ch >= '0' && ch <= '9')
		return ch - '0';
	if (ch >= 'a' && ch <= 'f')
		return ch - 'a' + 10;
	if (ch >= 'A' && ch <= 'F')
		return ch - 'A' + 10;
	return -1;
}

/* Decodes a whole string of hex digit pairs. SCN_NUM_BAD for a non-hex character or an
 * odd count, SCN_NUM_RANGE when it holds more than cap bytes. */
static int scn_hex(const char *s, uint8_t *out, size_t cap, size_t *n)
{
	size_t len = strlen(s);

	*n = 0;
	if (len == 0 || len % 2 != 0)
		return SCN_NUM_BAD;
	for (size_t i = 0; i < len; i++)
		if (scn_hexval(s[i]) < 0)
			return SCN_NUM_BAD;
	if (len / 2 > cap)
		return SCN_NUM_RANGE;
	for (size_t i = 0; i < len; i += 2)
		out[i / 2] = (uint8_t)(scn_hexval(s[i]) << 4 | scn_hexval(s[i + 1]));
	*n = len / 2;
	return SCN_NUM_OK;
}

/* Decimal digits only; a minus sign before digits reads as out of range. */
static int scn_uint(const char *s, unsigned long long max, unsigned long long *v)
{
	unsigned long long acc = 0;
	int neg = 0, big = 0;

	if (*s == '-') {
		neg = 1;
		s++;
	}
	if (*s == '\0')
		return SCN_NUM_BAD;
	for (; *s != '\0'; s++) {
		unsigned d;

		if (*s < '0' || *s > '9')
			return SCN_NUM_BAD;
		d = (unsigned)(*s - '0');
		if (acc > (ULLONG_MAX - d) / 10)
			big = 1;
		else
			acc = acc * 10 + d;
	}
	if (neg || big || acc > max)
		return SCN_NUM_RANGE;
	*v = acc;
	return SCN_NUM_OK;
}

/* ISO 8601 with an offset, or Unix seconds (kp_time_parse). */
static int scn_parse_time(const char *s, int64_t *ms)
{
	int offset_s;

	return kp_time_parse(s, ms, &offset_s);
}

/* "+SECONDS" or "+SECONDS.m" .. "+SECONDS.mmm". */
static int scn_parse_offset(const char *s, int64_t *ms)
{
	int64_t sec = 0, frac = 0;
	int nd = 0;

	if (*s++ != '+' || *s < '0' || *s > '9')
		return -1;
	for (; *s >= '0' && *s <= '9'; s++) {
		sec = sec * 10 + (*s - '0');
		if (sec > KP_SCN_TAP_SEC_MAX)
			return -1;
	}
	if (*s == '.') {
		for (s++; *s >= '0' && *s <= '9' && nd < 3; s++, nd++)
			frac = frac * 10 + (*s - '0');
		if (nd == 0)
			return -1;
		for (int i = nd; i < 3; i++)
			frac *= 10;
	}
	if (*s != '\0')
		return -1;
	*ms = sec * 1000 + frac;
	return 0;
}

static int scn_name_ok(const char *s)
{
	size_t n = strlen(s);

	if (n == 0 || n > KP_SCN_NAME_MAX)
		return 0;
	for (; *s != '\0'; s++) {
		char ch = *s;

		if (!((ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') ||
		      (ch >= '0' && ch <= '9') || ch == '_' || ch == '-' || ch == '.'))
			return 0;
	}
	return 1;
}

/* Grows a dynamic array so that index n fits; NULL when out of memory (arr untouched). */
static void *scn_grow(void *arr, size_t *cap, size_t n, size_t size)
{
	size_t ncap;
	void *p;

	if (n < *cap)
		return arr;
	ncap = *cap != 0 ? *cap * 2 : 8;
	if (ncap < *cap || ncap > SIZE_MAX / size)
		return NULL;
	p = realloc(arr, ncap * size);
	if (p == NULL)
		return NULL;
	*cap = ncap;
	return p;
}

long kp_scenario_find_card(const struct kp_scenario *s, const char *name)
{
	for (size_t i = 0; i < s->n_cards; i++)
		if (strcmp(s->cards[i].name, name) == 0)
			return (long)i;
	return -1;
}

/* Splits "key=value", finds key in keys[] and refuses repeats. */
static int scn_option(struct scn_parser *p, char *field, const char *const *keys,
                      size_t n_keys, unsigned *seen, const char *what, size_t *idx,
                      const char **value)
{
	char *eq = strchr(field, '=');

	if (eq == NULL)
		return scn_fail(p, "unknown option '%.40s' for %s (options are key=value)", field,
		                what);
	*eq = '\0';
	for (size_t i = 0; i < n_keys; i++) {
		if (strcmp(field, keys[i]) != 0)
			continue;
		if (*seen & (1u << i))
			return scn_fail(p, "duplicate option '%s'", keys[i]);
		if (eq[1] == '\0')
			return scn_fail(p, "empty value for '%s='", keys[i]);
		*seen |= 1u << i;
		*idx = i;
		*value = eq + 1;
		return KP_HAL_OK;
	}
	return scn_fail(p, "unknown option '%.40s' for %s", field, what);
}

/* A fixed-size hex option such as pmm=, pupi=, atqa=. */
static int scn_hex_opt(struct scn_parser *p, const char *key, const char *val, uint8_t *out,
                       size_t want)
{
	uint8_t buf[32];
	size_t n;
	int st = scn_hex(val, buf, sizeof(buf), &n);

	if (st == SCN_NUM_BAD)
		return scn_fail(p, "bad hex in %s=", key);
	if (st != SCN_NUM_OK || n != want)
		return scn_fail(p, "%s= must be %zu bytes (%zu hex digits)", key, want, want * 2);
	memcpy(out, buf, want);
	return KP_HAL_OK;
}

static int scn_num_opt(struct scn_parser *p, const char *key, const char *val,
                       unsigned long long max, unsigned long long *v)
{
	int st = scn_uint(val, max, v);

	if (st == SCN_NUM_BAD)
		return scn_fail(p, "%s= is not a number", key);
	if (st == SCN_NUM_RANGE)
		return scn_fail(p, "%s= out of range 0..%llu", key, max);
	return KP_HAL_OK;
}

static int scn_sys_opt(struct scn_parser *p, const char *val, uint16_t *codes, size_t *n)
{
	const char *s = val;

	*n = 0;
	for (;;) {
		const char *end = strchr(s, ',');
		size_t len = end != NULL ? (size_t)(end - s) : strlen(s);
		uint16_t code = 0;

		if (len != 4)
			return scn_fail(p, "sys= takes system codes of 4 hex digits, comma-separated");
		for (size_t i = 0; i < 4; i++) {
			int v = scn_hexval(s[i]);

			if (v < 0)
				return scn_fail(p, "bad hex in sys=");
			code = (uint16_t)(code << 4 | (unsigned)v);
		}
		if ((code >> 8) == 0xFF || (code & 0xFF) == 0xFF)
			return scn_fail(p, "sys=: %04X is a wildcard, not a system code", code);
		for (size_t i = 0; i < *n; i++)
			if (codes[i] == code)
				return scn_fail(p, "sys=: %04X given twice", code);
		if (*n >= KP_CARD_FELICA_MAX_SYS)
			return scn_fail(p, "sys=: more than %d system codes", KP_CARD_FELICA_MAX_SYS);
		codes[(*n)++] = code;
		if (end == NULL)
			return KP_HAL_OK;
		s = end + 1;
	}
}

static int scn_card_felica(struct scn_parser *p, struct kp_scn_card *card, char **f, size_t nf)
{
	static const char *const keys[] = { "idm", "pmm", "sys", "balance", "cardtype", "region" };
	uint8_t idm[8] = { 0 }, pmm[8] = { 0 };
	uint16_t sys[KP_CARD_FELICA_MAX_SYS] = { 0 };
	size_t n_sys = 0;
	unsigned seen = 0;
	unsigned long long v = 0;
	int rc = KP_HAL_OK;

	for (size_t i = 3; i < nf; i++) {
		const char *val;
		size_t k;

		rc = scn_option(p, f[i], keys, sizeof(keys) / sizeof(keys[0]), &seen,
		                "a felica card", &k, &val);
		if (rc != KP_HAL_OK)
			return rc;
		switch (k) {
		case 0:
			rc = scn_hex_opt(p, "idm", val, idm, sizeof(idm));
			break;
		case 1:
			rc = scn_hex_opt(p, "pmm", val, pmm, sizeof(pmm));
			break;
		case 2:
			rc = scn_sys_opt(p, val, sys, &n_sys);
			break;
		case 3:
			rc = scn_num_opt(p, "balance", val, 65535, &v);
			card->balance = (uint16_t)v;
			break;
		case 4:
			rc = scn_num_opt(p, "cardtype", val, 15, &v);
			card->card_type = (unsigned)v;
			break;
		default:
			rc = scn_num_opt(p, "region", val, 15, &v);
			card->region = (unsigned)v;
			break;
		}
		if (rc != KP_HAL_OK)
			return rc;
	}
	if (!(seen & 1u))
		return scn_fail(p, "felica card '%s' needs idm=", card->name);
	kp_card_felica_init(&card->u.felica, idm);
	if (seen & 2u)
		memcpy(card->u.felica.pmm, pmm, sizeof(pmm));
	if ((seen & 4u) && kp_card_felica_set_sys_codes(&card->u.felica, sys, n_sys) != KP_HAL_OK)
		return scn_fail(p, "bad sys=");
	return KP_HAL_OK;
}

static int scn_card_typeb(struct scn_parser *p, struct kp_scn_card *card, char **f, size_t nf)
{
	static const char *const keys[] = { "pupi", "app", "proto" };
	struct kp_card_typeb *b = &card->u.b;
	unsigned seen = 0;
	int rc;

	b->proto_info[1] = 0x81;
	b->proto_info[2] = 0x71;
	for (size_t i = 3; i < nf; i++) {
		const char *val;
		size_t k;

		rc = scn_option(p, f[i], keys, sizeof(keys) / sizeof(keys[0]), &seen,
		                "a typeb card", &k, &val);
		if (rc != KP_HAL_OK)
			return rc;
		if (k == 0)
			rc = scn_hex_opt(p, "pupi", val, b->pupi, sizeof(b->pupi));
		else if (k == 1)
			rc = scn_hex_opt(p, "app", val, b->app_data, sizeof(b->app_data));
		else
			rc = scn_hex_opt(p, "proto", val, b->proto_info, sizeof(b->proto_info));
		if (rc != KP_HAL_OK)
			return rc;
	}
	if (!(seen & 1u))
		return scn_fail(p, "typeb card '%s' needs pupi=", card->name);
	return KP_HAL_OK;
}

static int scn_card_typea(struct scn_parser *p, struct kp_scn_card *card, char **f, size_t nf)
{
	static const char *const keys[] = { "uid", "atqa", "sak" };
	struct kp_card_typea *a = &card->u.a;
	unsigned seen = 0;
	int rc;

	a->atqa[1] = 0x44;
	for (size_t i = 3; i < nf; i++) {
		const char *val;
		size_t k, n;
		int st;

		rc = scn_option(p, f[i], keys, sizeof(keys) / sizeof(keys[0]), &seen,
		                "a typea card", &k, &val);
		if (rc != KP_HAL_OK)
			return rc;
		if (k == 0) {
			st = scn_hex(val, a->uid, sizeof(a->uid), &n);
			if (st == SCN_NUM_BAD)
				return scn_fail(p, "bad hex in uid=");
			if (st != SCN_NUM_OK || (n != 4 && n != 7 && n != 10))
				return scn_fail(p, "uid= must be 4, 7 or 10 bytes");
			a->uid_len = n;
			rc = KP_HAL_OK;
		} else if (k == 1) {
			rc = scn_hex_opt(p, "atqa", val, a->atqa, sizeof(a->atqa));
		} else {
			rc = scn_hex_opt(p, "sak", val, &a->sak, 1);
		}
		if (rc != KP_HAL_OK)
			return rc;
	}
	if (!(seen & 1u))
		return scn_fail(p, "typea card '%s' needs uid=", card->name);
	return KP_HAL_OK;
}

/* ---- mynumber cards: files from dir= ---- */

enum scn_certfault { SCN_CERTFAULT_NONE, SCN_CERTFAULT_TRUNCATE, SCN_CERTFAULT_GARBLE };

/* Reads a whole regular file of 1..max bytes into a fresh buffer with a NUL after the data. */
static int scn_read_file(struct scn_parser *p, const char *card, const char *path, size_t max,
                         uint8_t **out, size_t *out_len)
{
	struct stat st;
	uint8_t *buf = NULL;
	size_t got = 0;
	int fd, rc = KP_HAL_OK;

	*out = NULL;
	*out_len = 0;
	fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		return scn_fail(p, "card '%s': cannot read %s: %s", card, path, strerror(errno));
	if (fstat(fd, &st) != 0 || !S_ISREG(st.st_mode)) {
		rc = scn_fail(p, "card '%s': %s is not a regular file", card, path);
		goto out;
	}
	if (st.st_size <= 0 || (unsigned long long)st.st_size > max) {
		rc = scn_fail(p, "card '%s': %s must hold 1 to %zu bytes", card, path, max);
		goto out;
	}
	buf = calloc(1, (size_t)st.st_size + 1);
	if (buf == NULL) {
		rc = KP_HAL_E_NOMEM;
		goto out;
	}
	while (got < (size_t)st.st_size) {
		ssize_t n = read(fd, buf + got, (size_t)st.st_size - got);

		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0) {
			rc = scn_fail(p, "card '%s': cannot read %s: %s", card, path,
			              n < 0 ? strerror(errno) : "file shrank");
			goto out;
		}
		got += (size_t)n;
	}
	*out = buf;
	*out_len = got;
	buf = NULL;
out:
	if (buf != NULL) {
		explicit_bzero(buf, (size_t)st.st_size + 1);
		free(buf);
	}
	close(fd);
	return rc;
}

/* The size of the DER element at buf (header and contents) and of its header; 0 when it
 * does not fit in len or uses a length form no certificate of ours needs (> 65535). */
static size_t scn_der_elem(const uint8_t *buf, size_t len, size_t *hdr)
{
	size_t n, h;

	if (len < 2)
		return 0;
	if (buf[1] < 0x80) {
		n = buf[1];
		h = 2;
	} else if (buf[1] == 0x81 && len >= 3) {
		n = buf[2];
		h = 3;
	} else if (buf[1] == 0x82 && len >= 4) {
		n = (size_t)buf[2] << 8 | buf[3];
		h = 4;
	} else {
		return 0;
	}
	if (n > len - h)
		return 0;
	*hdr = h;
	return h + n;
}

/* One DER SEQUENCE filling the whole file: what a reader reading "header first, then the
 * length it states" relies on. */
static int scn_der_cert_ok(const uint8_t *buf, size_t len)
{
	size_t h;

	return len >= 2 && buf[0] == 0x30 && scn_der_elem(buf, len, &h) == len;
}

/* certfault=garble: flips 4 bytes in the middle of the signatureValue BIT STRING
 * (Certificate ::= SEQUENCE { tbsCertificate, signatureAlgorithm, signatureValue }). */
static int scn_garble_signature(uint8_t *buf, size_t len)
{
	size_t h, e, off, rem;

	if (scn_der_elem(buf, len, &h) != len)
		return -1;
	off = h;
	for (int i = 0; i < 2; i++) {          /* skip tbsCertificate and signatureAlgorithm */
		rem = len - off;
		e = scn_der_elem(buf + off, rem, &h);
		if (e == 0 || buf[off] != 0x30)
			return -1;
		off += e;
	}
	rem = len - off;
	e = scn_der_elem(buf + off, rem, &h);
	if (e == 0 || buf[off] != 0x03 || e < h + 1 + 8)
		return -1;
	off += h + 1;                          /* the unused-bits byte */
	off += (e - h - 1) / 2 - 2;
	for (size_t i = 0; i < 4; i++)
		buf[off + i] ^= 0xFF;
	return 0;
}

/* dir/name, dir relative to the scenario's folder unless it starts with '/'. */
static int scn_card_path(struct scn_parser *p, const char *card, const char *dir,
                         const char *name, char *out, size_t cap)
{
	int n;

	if (dir[0] == '/')
		n = snprintf(out, cap, "%s/%s", dir, name);
	else
		n = snprintf(out, cap, "%s/%s/%s", p->base, dir, name);
	if (n < 0 || (size_t)n >= cap)
		return scn_fail(p, "card '%s': dir= path too long", card);
	return KP_HAL_OK;
}

/* Default PUPI: 4 bytes of FNV-1a over the card's name, so cards differ and runs agree. */
static void scn_name_pupi(const char *name, uint8_t pupi[4])
{
	uint32_t h = 2166136261u;

	for (; *name != '\0'; name++)
		h = (h ^ (uint8_t)*name) * 16777619u;
	pupi[0] = (uint8_t)(h >> 24);
	pupi[1] = (uint8_t)(h >> 16);
	pupi[2] = (uint8_t)(h >> 8);
	pupi[3] = (uint8_t)h;
}

static int scn_card_mynumber_files(struct scn_parser *p, struct kp_card_jpki *c,
                                   const char *card, const char *dir, enum scn_certfault fault)
{
	char path[PATH_MAX];
	int rc;

	rc = scn_card_path(p, card, dir, "auth.der", path, sizeof(path));
	if (rc == KP_HAL_OK)
		rc = scn_read_file(p, card, path, KP_CARD_JPKI_EF_MAX, &c->auth_cert,
		                   &c->auth_cert_len);
	if (rc != KP_HAL_OK)
		return rc;
	if (!scn_der_cert_ok(c->auth_cert, c->auth_cert_len))
		return scn_fail(p, "card '%s': %s is not one DER certificate", card, path);
	rc = scn_card_path(p, card, dir, "ca.der", path, sizeof(path));
	if (rc == KP_HAL_OK)
		rc = scn_read_file(p, card, path, KP_CARD_JPKI_EF_MAX, &c->ca_cert, &c->ca_cert_len);
	if (rc != KP_HAL_OK)
		return rc;
	if (!scn_der_cert_ok(c->ca_cert, c->ca_cert_len))
		return scn_fail(p, "card '%s': %s is not one DER certificate", card, path);
	rc = scn_card_path(p, card, dir, "auth.key", path, sizeof(path));
	if (rc == KP_HAL_OK)
		rc = scn_read_file(p, card, path, KP_SCN_KEY_FILE_MAX, &c->key, &c->key_len);
	if (rc != KP_HAL_OK)
		return rc;
	/* The header still states the whole length: a reader gets 6B 00 past the half. */
	if (fault == SCN_CERTFAULT_TRUNCATE)
		c->auth_cert_len /= 2;
	if (fault == SCN_CERTFAULT_GARBLE && scn_garble_signature(c->auth_cert,
	                                                           c->auth_cert_len) != 0)
		return scn_fail(p, "card '%s': certfault=garble: no signature found in auth.der",
		                card);
	return KP_HAL_OK;
}

static int scn_card_mynumber(struct scn_parser *p, struct kp_scn_card *card, char **f, size_t nf)
{
	static const char *const keys[] = { "dir", "pin", "tries", "pupi", "certfault" };
	struct kp_card_jpki *c = &card->u.jpki;
	enum scn_certfault fault = SCN_CERTFAULT_NONE;
	const char *dir = NULL;
	uint8_t pupi[4];
	unsigned seen = 0;
	unsigned long long v = 0;
	int rc = KP_HAL_OK;

	scn_name_pupi(card->name, pupi);
	kp_card_jpki_init(c, pupi);
	for (size_t i = 3; i < nf; i++) {
		const char *val;
		size_t k;

		rc = scn_option(p, f[i], keys, sizeof(keys) / sizeof(keys[0]), &seen,
		                "a mynumber card", &k, &val);
		if (rc != KP_HAL_OK)
			return rc;
		switch (k) {
		case 0:
			dir = val;
			break;
		case 1:
			if (strlen(val) != 4 || strspn(val, "0123456789") != 4)
				return scn_fail(p, "pin= must be 4 digits");
			memcpy(c->pin, val, 4);
			break;
		case 2:
			rc = scn_num_opt(p, "tries", val, KP_CARD_JPKI_TRIES_MAX, &v);
			/* 0: a card blocked before the scenario starts */
			c->tries_max = v > 0 ? (unsigned)v : KP_CARD_JPKI_TRIES_DEFAULT;
			c->tries_left = (unsigned)v;
			break;
		case 3:
			rc = scn_hex_opt(p, "pupi", val, c->b.pupi, sizeof(c->b.pupi));
			break;
		default:
			if (strcmp(val, "truncate") == 0)
				fault = SCN_CERTFAULT_TRUNCATE;
			else if (strcmp(val, "garble") == 0)
				fault = SCN_CERTFAULT_GARBLE;
			else
				return scn_fail(p, "unknown certfault '%.40s' (truncate or garble)", val);
			break;
		}
		if (rc != KP_HAL_OK)
			return rc;
	}
	if (dir == NULL)
		return scn_fail(p, "mynumber card '%s' needs dir=", card->name);
	rc = scn_card_mynumber_files(p, c, card->name, dir, fault);
	if (rc != KP_HAL_OK)
		kp_card_jpki_free(c);
	return rc;
}

static int scn_card(struct scn_parser *p, char **f, size_t nf)
{
	struct kp_scenario *s = p->s;
	struct kp_scn_card card;
	struct kp_scn_card *arr;
	long dup;
	int rc;

	if (nf < 3)
		return scn_fail(p, "card: expected 'card NAME TYPE [key=value]...'");
	if (!scn_name_ok(f[1]))
		return scn_fail(p, "card: bad name '%.40s' (1-%d characters of A-Z a-z 0-9 _ . -)",
		                f[1], KP_SCN_NAME_MAX);
	dup = kp_scenario_find_card(s, f[1]);
	if (dup >= 0)
		return scn_fail(p, "duplicate card name '%s' (first declared on line %u)", f[1],
		                s->cards[dup].line);
	memset(&card, 0, sizeof(card));
	memcpy(card.name, f[1], strlen(f[1]) + 1);
	card.line = p->line;
	if (strcmp(f[2], "felica") == 0) {
		card.tech = KP_TECH_FELICA;
		rc = scn_card_felica(p, &card, f, nf);
	} else if (strcmp(f[2], "typeb") == 0) {
		card.tech = KP_TECH_ISO14443B;
		rc = scn_card_typeb(p, &card, f, nf);
	} else if (strcmp(f[2], "typea") == 0) {
		card.tech = KP_TECH_ISO14443A;
		rc = scn_card_typea(p, &card, f, nf);
	} else if (strcmp(f[2], "mynumber") == 0) {
		card.tech = KP_TECH_ISO14443B;
		card.mynumber = 1;
		rc = scn_card_mynumber(p, &card, f, nf);   /* frees what it read when it fails */
	} else {
		return scn_fail(p, "card: unknown type '%.40s' (felica, typeb, typea or mynumber)",
		                f[2]);
	}
	if (rc != KP_HAL_OK)
		return rc;
	arr = scn_grow(s->cards, &s->cap_cards, s->n_cards, sizeof(*s->cards));
	if (arr == NULL) {
		if (card.mynumber)
			kp_card_jpki_free(&card.u.jpki);
		return KP_HAL_E_NOMEM;
	}
	s->cards = arr;
	s->cards[s->n_cards++] = card;
	return KP_HAL_OK;
}

static int scn_history(struct scn_parser *p, char **f, size_t nf)
{
	char hex[2 * KP_CARD_FELICA_BLOCK + 1];
	uint8_t block[KP_CARD_FELICA_BLOCK];
	struct kp_scn_card *card;
	size_t digits = 0, n;
	long idx;

	if (nf < 3)
		return scn_fail(p, "history: expected 'history CARD HEX...'");
	idx = kp_scenario_find_card(p->s, f[1]);
	if (idx < 0)
		return scn_fail(p, "history for unknown card '%.40s' (declare the card first)", f[1]);
	card = &p->s->cards[idx];
	if (card->tech != KP_TECH_FELICA)
		return scn_fail(p, "history: card '%s' is not a felica card", card->name);
	if (card->u.felica.n_history >= KP_CARD_FELICA_HISTORY_BLOCKS)
		return scn_fail(p, "more than %d history lines for card '%s'",
		                KP_CARD_FELICA_HISTORY_BLOCKS, card->name);
	for (size_t i = 2; i < nf; i++) {
		for (const char *c = f[i]; *c != '\0'; c++) {
			if (scn_hexval(*c) < 0)
				return scn_fail(p, "history: bad hex '%.40s'", f[i]);
			if (digits < sizeof(hex) - 1)
				hex[digits] = *c;
			digits++;
		}
	}
	if (digits != sizeof(hex) - 1)
		return scn_fail(p, "history: need 16 bytes (32 hex digits), got %zu digits", digits);
	hex[digits] = '\0';
	if (scn_hex(hex, block, sizeof(block), &n) != SCN_NUM_OK || n != sizeof(block))
		return scn_fail(p, "history: bad hex");
	return kp_card_felica_push_history(&card->u.felica, block) == KP_HAL_OK
	           ? KP_HAL_OK : scn_fail(p, "history: no room");
}

static int scn_tap(struct scn_parser *p, char **f, size_t nf)
{
	static const char *const keys[] = { "remove-after", "fault" };
	struct kp_scenario *s = p->s;
	struct kp_scn_tap tap;
	struct kp_scn_tap *arr;
	unsigned seen = 0;
	long idx;
	int rc;

	if (nf < 3)
		return scn_fail(p, "tap: expected 'tap +SECONDS CARD [remove-after=N] [fault=KIND]'");
	memset(&tap, 0, sizeof(tap));
	tap.remove_after = -1;
	tap.line = p->line;
	if (scn_parse_offset(f[1], &tap.offset_ms) != 0)
		return scn_fail(p, "tap: bad time '%.40s' (use +SECONDS or +SECONDS.mmm)", f[1]);
	idx = kp_scenario_find_card(s, f[2]);
	if (idx < 0)
		return scn_fail(p, "tap of unknown card '%.40s'", f[2]);
	tap.card = (size_t)idx;
	if (s->n_taps > 0 && tap.offset_ms < s->taps[s->n_taps - 1].offset_ms)
		return scn_fail(p, "taps out of time order: %s comes before the tap on line %u",
		                f[1], s->taps[s->n_taps - 1].line);
	for (size_t i = 3; i < nf; i++) {
		const char *val;
		unsigned long long v = 0;
		size_t k, fi;

		rc = scn_option(p, f[i], keys, 2, &seen, "a tap", &k, &val);
		if (rc != KP_HAL_OK)
			return rc;
		if (k == 0) {
			rc = scn_num_opt(p, "remove-after", val, KP_SCN_REMOVE_MAX, &v);
			if (rc != KP_HAL_OK)
				return rc;
			tap.remove_after = (long)v;
			continue;
		}
		for (fi = 0; fi < SCN_N_FAULTS; fi++)
			if (strcmp(val, scn_fault_names[fi]) == 0)
				break;
		if (fi == SCN_N_FAULTS)
			return scn_fail(p, "unknown fault '%.40s' (none, short, long, len, code, idm, "
			                "status, garbage, silent)", val);
		tap.fault = (enum kp_scn_fault)fi;
	}
	arr = scn_grow(s->taps, &s->cap_taps, s->n_taps, sizeof(*s->taps));
	if (arr == NULL)
		return KP_HAL_E_NOMEM;
	s->taps = arr;
	s->taps[s->n_taps++] = tap;
	return KP_HAL_OK;
}

static int scn_start(struct scn_parser *p, char **f, size_t nf)
{
	if (nf != 2)
		return scn_fail(p, "start: expected 'start TIME'");
	if (p->start_line != 0)
		return scn_fail(p, "duplicate start (first on line %u)", p->start_line);
	if (scn_parse_time(f[1], &p->s->start_ms) != 0)
		return scn_fail(p, "start: bad time '%.40s' (ISO 8601 with Z or an offset, "
		                "or Unix seconds)", f[1]);
	p->start_line = p->line;
	return KP_HAL_OK;
}

static int scn_pace(struct scn_parser *p, char **f, size_t nf)
{
	if (nf != 2 || (strcmp(f[1], "virtual") != 0 && strcmp(f[1], "real") != 0))
		return scn_fail(p, "pace: expected 'pace virtual' or 'pace real'");
	if (p->pace_line != 0)
		return scn_fail(p, "duplicate pace (first on line %u)", p->pace_line);
	p->s->pace = strcmp(f[1], "real") == 0 ? KP_SCN_PACE_REAL : KP_SCN_PACE_VIRTUAL;
	p->pace_line = p->line;
	return KP_HAL_OK;
}

static int scn_line(struct scn_parser *p, char *line)
{
	char *f[SCN_MAX_FIELDS];
	size_t nf = 0;
	char *hash = strchr(line, '#');
	char *c = line;

	if (hash != NULL)
		*hash = '\0';
	for (;;) {
		while (*c == ' ' || *c == '\t')
			c++;
		if (*c == '\0')
			break;
		if (nf == SCN_MAX_FIELDS)
			return scn_fail(p, "more than %d fields", SCN_MAX_FIELDS);
		f[nf++] = c;
		while (*c != '\0' && *c != ' ' && *c != '\t')
			c++;
		if (*c != '\0')
			*c++ = '\0';
	}
	if (nf == 0)
		return KP_HAL_OK;
	if (strcmp(f[0], "card") == 0)
		return scn_card(p, f, nf);
	if (strcmp(f[0], "history") == 0)
		return scn_history(p, f, nf);
	if (strcmp(f[0], "tap") == 0)
		return scn_tap(p, f, nf);
	if (strcmp(f[0], "start") == 0)
		return scn_start(p, f, nf);
	if (strcmp(f[0], "pace") == 0)
		return scn_pace(p, f, nf);
	return scn_fail(p, "unknown directive '%.40s'", f[0]);
}

/* One line without its newline (and without a trailing CR). buf holds cap bytes. */
static int scn_getline(FILE *f, char *buf, size_t cap)
{
	size_t n = 0;
	int ch, nul = 0;

	for (;;) {
		ch = getc(f);
		if (ch == EOF) {
			if (ferror(f))
				return SCN_LINE_ERR;
			if (n == 0 && !nul)
				return SCN_LINE_EOF;
			break;
		}
		if (ch == '\n')
			break;
		if (ch == '\0') {
			nul = 1;
			continue;
		}
		if (n + 1 >= cap)
			return SCN_LINE_LONG;
		buf[n++] = (char)ch;
	}
	if (n > 0 && buf[n - 1] == '\r')
		n--;
	buf[n] = '\0';
	if (nul)
		return SCN_LINE_NUL;
	return n > KP_SCN_LINE_MAX ? SCN_LINE_LONG : SCN_LINE_OK;
}

/* The folder of path ("." when it has none); a folder too long to keep is left as "." and
 * a relative dir= then fails to open, with its path in the message. */
static void scn_base_dir(const char *path, char *out, size_t cap)
{
	const char *slash = strrchr(path, '/');
	size_t n = slash == NULL ? 0 : slash == path ? 1 : (size_t)(slash - path);

	if (n == 0 || n >= cap) {
		snprintf(out, cap, ".");
		return;
	}
	memcpy(out, path, n);
	out[n] = '\0';
}

void kp_scenario_free(struct kp_scenario *s)
{
	if (s == NULL)
		return;
	for (size_t i = 0; i < s->n_cards; i++)
		if (s->cards[i].mynumber)
			kp_card_jpki_free(&s->cards[i].u.jpki);
	free(s->cards);
	free(s->taps);
	free(s);
}

int kp_scenario_parse(struct kp_scenario **out, const char *name, FILE *f,
                      char *err, size_t err_cap)
{
	/* LINE_MAX characters, a CR and the terminating NUL. */
	char buf[KP_SCN_LINE_MAX + 2];
	struct scn_parser p;
	int rc = KP_HAL_OK, st;

	if (out == NULL || name == NULL || f == NULL)
		return KP_HAL_E_INVAL;
	*out = NULL;
	if (err != NULL && err_cap > 0)
		err[0] = '\0';
	memset(&p, 0, sizeof(p));
	p.name = name;
	p.err = err;
	p.err_cap = err_cap;
	scn_base_dir(name, p.base, sizeof(p.base));
	p.s = calloc(1, sizeof(*p.s));
	if (p.s == NULL) {
		rc = KP_HAL_E_NOMEM;
		goto out;
	}
	p.s->start_ms = KP_SCN_START_DEFAULT_MS;
	p.s->pace = KP_SCN_PACE_VIRTUAL;
	for (;;) {
		p.line++;
		st = scn_getline(f, buf, sizeof(buf));
		if (st == SCN_LINE_EOF)
			break;
		if (st == SCN_LINE_LONG)
			rc = scn_fail(&p, "line longer than %d characters", KP_SCN_LINE_MAX);
		else if (st == SCN_LINE_NUL)
			rc = scn_fail(&p, "NUL byte in line");
		else if (st == SCN_LINE_ERR)
			rc = scn_fail(&p, "read error");
		else if (p.line == 1 && memcmp(buf, "\xEF\xBB\xBF", 3) == 0)
			rc = scn_line(&p, buf + 3); /* editors may start a file with a UTF-8 BOM */
		else
			rc = scn_line(&p, buf);
		if (rc != KP_HAL_OK)
			goto out;
	}
	/* The counter in 008B follows the history the file gave the card. */
	for (size_t i = 0; i < p.s->n_cards; i++) {
		struct kp_scn_card *c = &p.s->cards[i];

		if (c->tech == KP_TECH_FELICA)
			kp_card_felica_set_balance(&c->u.felica, c->card_type, c->region, c->balance,
			                           (uint16_t)c->u.felica.n_history);
	}
	*out = p.s;
	p.s = NULL;
out:
	kp_scenario_free(p.s);
	return rc;
}

int kp_scenario_load(struct kp_scenario **out, const char *path, char *err, size_t err_cap)
{
	FILE *f;
	int rc;

	if (out == NULL || path == NULL)
		return KP_HAL_E_INVAL;
	*out = NULL;
	f = fopen(path, "r");
	if (f == NULL) {
		if (err != NULL && err_cap > 0)
			snprintf(err, err_cap, "%s: cannot open: %s", path, strerror(errno));
		return KP_HAL_E_CONFIG;
	}
	rc = kp_scenario_parse(out, path, f, err, err_cap);
	fclose(f);
	return rc;
}
