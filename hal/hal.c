/* SPDX-License-Identifier: Apache-2.0 */
/* The HAL's generic half: backend registries, the kp_reader_* and kp_hmi_* wrappers,
 * error strings and name helpers. A wrapper whose backend lacks an operation returns
 * KP_HAL_E_NOTSUP, never 0, so a missing op can never read as success. */
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stddef.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "kp_hal.h"

#define HAL_MAX_BACKENDS 16
#define HAL_SCHEME_MAX   32

/* Both op tables start with `const char *scheme`, and a pointer to a struct may be read
 * as a pointer to its first member, so one registry serves readers and HMIs. */
struct hal_registry {
	const void *ops[HAL_MAX_BACKENDS];
	size_t n;
};
_Static_assert(offsetof(struct kp_reader_ops, scheme) == 0, "scheme must come first");
_Static_assert(offsetof(struct kp_hmi_ops, scheme) == 0, "scheme must come first");

static pthread_mutex_t hal_lock = PTHREAD_MUTEX_INITIALIZER;
/* The mock, libnfc and spy (a test facility around mock) backends are built in: "mock:...",
 * "libnfc:..." and "spy:..." open with no
 * registration call, and naming them here also pulls their objects out of libkphal.a. */
static struct hal_registry hal_readers = {
	{ &kp_mock_reader_ops, &kp_libnfc_reader_ops, &kp_spy_reader_ops }, 3
};
static struct hal_registry hal_hmis = { { &kp_mock_hmi_ops }, 1 };

static const char *hal_scheme_of(const void *ops)
{
	return *(const char *const *)ops;
}

static int hal_scheme_ok(const char *s)
{
	size_t n;

	if (s == NULL)
		return 0;
	n = strlen(s);
	if (n == 0 || n >= HAL_SCHEME_MAX)
		return 0;
	for (; *s != '\0'; s++) {
		char ch = *s;

		if (!((ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') ||
		      (ch >= '0' && ch <= '9') || ch == '_' || ch == '-' || ch == '.' || ch == '+'))
			return 0;
	}
	return 1;
}

/* Caller holds hal_lock. */
static const void *hal_find(const struct hal_registry *reg, const char *scheme)
{
	for (size_t i = 0; i < reg->n; i++)
		if (strcmp(hal_scheme_of(reg->ops[i]), scheme) == 0)
			return reg->ops[i];
	return NULL;
}

static int hal_register(struct hal_registry *reg, const void *ops)
{
	const void *have;
	int rc = KP_HAL_OK;

	if (!hal_scheme_ok(hal_scheme_of(ops)))
		return KP_HAL_E_INVAL;
	pthread_mutex_lock(&hal_lock);
	have = hal_find(reg, hal_scheme_of(ops));
	if (have == ops)
		goto out; /* registering the same table twice is harmless */
	if (have != NULL) {
		rc = KP_HAL_E_INVAL;
		goto out;
	}
	if (reg->n == HAL_MAX_BACKENDS) {
		rc = KP_HAL_E_NOMEM;
		goto out;
	}
	reg->ops[reg->n++] = ops;
out:
	pthread_mutex_unlock(&hal_lock);
	return rc;
}

/* Splits "scheme:rest" (or a bare "scheme", whose rest is "") and finds the backend. */
static const void *hal_lookup(struct hal_registry *reg, const char *conn, const char **rest)
{
	char scheme[HAL_SCHEME_MAX];
	const char *colon = strchr(conn, ':');
	size_t n = colon != NULL ? (size_t)(colon - conn) : strlen(conn);
	const void *ops;

	if (n == 0 || n >= sizeof(scheme))
		return NULL;
	memcpy(scheme, conn, n);
	scheme[n] = '\0';
	*rest = colon != NULL ? colon + 1 : conn + n;
	pthread_mutex_lock(&hal_lock);
	ops = hal_find(reg, scheme);
	pthread_mutex_unlock(&hal_lock);
	return ops;
}

const char *kp_hal_strerror(int rc)
{
	switch (rc) {
	case KP_HAL_OK:
		return "success";
	case KP_HAL_E_IO:
		return "reader failure";
	case KP_HAL_E_TIMEOUT:
		return "no reply from the card in time";
	case KP_HAL_E_NOCARD:
		return "no card in the field";
	case KP_HAL_E_NOTSUP:
		return "not supported by this backend";
	case KP_HAL_E_INVAL:
		return "invalid argument";
	case KP_HAL_E_NOMEM:
		return "out of memory";
	case KP_HAL_E_CONFIG:
		return "bad connection string or scenario";
	case KP_HAL_E_OVERFLOW:
		return "reply does not fit the buffer";
	case KP_HAL_E_END:
		return "mock scenario has no more taps";
	default:
		return "unknown HAL error";
	}
}

/* ---- readers ---- */

int kp_reader_register(const struct kp_reader_ops *ops)
{
	if (ops == NULL || ops->open == NULL)
		return KP_HAL_E_INVAL;
	return hal_register(&hal_readers, ops);
}

/* Opening a reader or an HMI: the ops of conn's scheme (KP_HAL_E_CONFIG if none), its open
 * (`call`, which sees rest_: what follows the scheme), and the object given its ops when it
 * left them unset. The two differ only in types, hence a macro. */
#define HAL_OPEN(reg, out, conn, call)                                        \
	do {                                                                      \
		const char *rest_ = NULL;                                             \
		int rc_;                                                              \
		if ((out) == NULL)                                                    \
			return KP_HAL_E_INVAL;                                            \
		*(out) = NULL;                                                        \
		ops = (conn) != NULL ? hal_lookup((reg), (conn), &rest_) : NULL;      \
		if (ops == NULL)                                                      \
			return (conn) == NULL ? KP_HAL_E_INVAL : KP_HAL_E_CONFIG;         \
		rc_ = (call);                                                         \
		if (rc_ == KP_HAL_OK && *(out) == NULL)                               \
			return KP_HAL_E_IO;                                               \
		if (rc_ != KP_HAL_OK) {                                               \
			*(out) = NULL;                                                    \
			return rc_;                                                       \
		}                                                                     \
		if ((*(out))->ops == NULL)                                            \
			(*(out))->ops = ops;                                              \
		return KP_HAL_OK;                                                     \
	} while (0)

int kp_reader_open(struct kp_reader **out, const char *conn)
{
	return kp_reader_open_err(out, conn, NULL, 0);
}

int kp_reader_open_err(struct kp_reader **out, const char *conn, char *err, size_t err_cap)
{
	const struct kp_reader_ops *ops;

	if (err_cap > 0)
		err[0] = '\0';
	HAL_OPEN(&hal_readers, out, conn,
	         ops->open_err != NULL && err_cap > 0 ? ops->open_err(out, rest_, err, err_cap)
	                                              : ops->open(out, rest_));
}

int kp_reader_wait_card(struct kp_reader *r, const struct kp_poll *poll,
                        struct kp_card_info *info, int timeout_ms)
{
	if (r == NULL || r->ops == NULL || poll == NULL || info == NULL)
		return KP_HAL_E_INVAL;
	if (r->ops->wait_card == NULL)
		return KP_HAL_E_NOTSUP;
	return r->ops->wait_card(r, poll, info, timeout_ms);
}

int kp_reader_transceive(struct kp_reader *r, const uint8_t *tx, size_t tx_len,
                         uint8_t *rx, size_t rx_cap, size_t *rx_len, int timeout_ms)
{
	if (r == NULL || r->ops == NULL || rx_len == NULL || (tx == NULL && tx_len > 0) ||
	    (rx == NULL && rx_cap > 0))
		return KP_HAL_E_INVAL;
	*rx_len = 0;
	if (r->ops->transceive == NULL)
		return KP_HAL_E_NOTSUP;
	return r->ops->transceive(r, tx, tx_len, rx, rx_cap, rx_len, timeout_ms);
}

int kp_reader_release(struct kp_reader *r, int wait_removed, int timeout_ms)
{
	if (r == NULL || r->ops == NULL)
		return KP_HAL_E_INVAL;
	if (r->ops->release == NULL)
		return KP_HAL_E_NOTSUP;
	return r->ops->release(r, wait_removed, timeout_ms);
}

int kp_reader_describe(struct kp_reader *r, char *buf, size_t cap)
{
	if (r == NULL || r->ops == NULL || buf == NULL || cap == 0)
		return KP_HAL_E_INVAL;
	buf[0] = '\0';
	if (r->ops->describe == NULL)
		return KP_HAL_E_NOTSUP;
	return r->ops->describe(r, buf, cap);
}

int kp_reader_last_error(struct kp_reader *r, char *buf, size_t cap)
{
	if (r == NULL || r->ops == NULL || buf == NULL || cap == 0)
		return KP_HAL_E_INVAL;
	buf[0] = '\0';
	if (r->ops->last_error == NULL)
		return KP_HAL_E_NOTSUP;
	return r->ops->last_error(r, buf, cap);
}

int64_t kp_reader_now_ms(struct kp_reader *r)
{
	struct timespec ts;
	int64_t ms = 0;

	/* Any failure of the backend's clock means "use the system's": callers need a time. */
	if (r != NULL && r->ops != NULL && r->ops->now_ms != NULL &&
	    r->ops->now_ms(r, &ms) == KP_HAL_OK)
		return ms;
	clock_gettime(CLOCK_REALTIME, &ts);
	return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

void kp_reader_close(struct kp_reader *r)
{
	if (r != NULL && r->ops != NULL && r->ops->close != NULL)
		r->ops->close(r);
}

/* ---- HMI ---- */

int kp_hmi_register(const struct kp_hmi_ops *ops)
{
	if (ops == NULL || ops->open == NULL)
		return KP_HAL_E_INVAL;
	return hal_register(&hal_hmis, ops);
}

int kp_hmi_open(struct kp_hmi **out, const char *conn)
{
	return kp_hmi_open_err(out, conn, NULL, 0);
}

int kp_hmi_open_err(struct kp_hmi **out, const char *conn, char *err, size_t err_cap)
{
	const struct kp_hmi_ops *ops;

	if (err_cap > 0)
		err[0] = '\0';
	HAL_OPEN(&hal_hmis, out, conn,
	         ops->open_err != NULL && err_cap > 0 ? ops->open_err(out, rest_, err, err_cap)
	                                              : ops->open(out, rest_));
}

int kp_hmi_show(struct kp_hmi *h, const struct kp_hmi_msg *msg)
{
	if (h == NULL || h->ops == NULL || msg == NULL)
		return KP_HAL_E_INVAL;
	if (h->ops->show == NULL)
		return KP_HAL_E_NOTSUP;
	return h->ops->show(h, msg);
}

int kp_hmi_beep(struct kp_hmi *h, enum kp_beep pattern)
{
	if (h == NULL || h->ops == NULL)
		return KP_HAL_E_INVAL;
	if (h->ops->beep == NULL)
		return KP_HAL_E_NOTSUP;
	return h->ops->beep(h, pattern);
}

int kp_hmi_led(struct kp_hmi *h, enum kp_led colour)
{
	if (h == NULL || h->ops == NULL)
		return KP_HAL_E_INVAL;
	if (h->ops->led == NULL)
		return KP_HAL_E_NOTSUP;
	return h->ops->led(h, colour);
}

void kp_hmi_close(struct kp_hmi *h)
{
	if (h != NULL && h->ops != NULL && h->ops->close != NULL)
		h->ops->close(h);
}

/* ---- names ---- */

static const char *name_of(const char *const *names, size_t n, int v)
{
	return v >= 0 && (size_t)v < n && names[v] != NULL ? names[v] : "unknown";
}
#define NAME_OF(names, v) name_of((names), sizeof(names) / sizeof((names)[0]), (int)(v))

const char *kp_hmi_result_name(enum kp_hmi_result r)
{
	static const char *const names[] = {
		[KP_HMI_ACCEPTED] = "accepted", [KP_HMI_REFUSED] = "refused",
		[KP_HMI_ALREADY] = "already", [KP_HMI_INFO] = "info",
	};

	return NAME_OF(names, r);
}

const char *kp_led_name(enum kp_led l)
{
	static const char *const names[] = {
		[KP_LED_OFF] = "off", [KP_LED_GREEN] = "green", [KP_LED_RED] = "red",
		[KP_LED_AMBER] = "amber", [KP_LED_BLUE] = "blue",
	};

	return NAME_OF(names, l);
}

const char *kp_beep_name(enum kp_beep b)
{
	static const char *const names[] = {
		[KP_BEEP_OK] = "ok", [KP_BEEP_ERROR] = "error", [KP_BEEP_NOTICE] = "notice",
	};

	return NAME_OF(names, b);
}

FILE *kp_hal_open_log(const char *path)
{
	int fd = open(path, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0600);
	FILE *fp;
	int e;

	if (fd < 0)
		return NULL;
	fp = fdopen(fd, "a");
	if (fp == NULL) {
		e = errno;
		close(fd);
		errno = e;
	}
	return fp;
}
