/* SPDX-License-Identifier: Apache-2.0 */
/* The libnfc reader ("libnfc", "libnfc:<libnfc connection string>"): real PN53x readers
 * through Debian's libnfc 1.8. The only file that includes <nfc/nfc.h>.
 *
 * Every libnfc call made here has a deadline: transceive gets the caller's, the rest use
 * libnfc's (350 ms a command; Debian's 1.8.0 also hard-wires 300 ms into a selection, so
 * a silent reader makes polling fail rather than hang; libnfc's git sources pass 0 there,
 * "wait forever", which this backend would need a watchdog for). */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <nfc/nfc.h>

#include "kp_hal.h"

#define LN_POLL_GAP_MS        10   /* sleep between polling rounds */
#define LN_PRESENT_GAP_MS     20   /* between presence checks while waiting for removal */
#define LN_TX_MAX             262  /* PN53x extended frame (264) minus InDataExchange, Tg */
#define LN_ERR_MAX            192
#define LN_LIST_MAX           16
#define LN_NAME_MAX           256  /* libnfc's DEVICE_NAME_LENGTH, not in its public headers */

struct ln_reader {
	struct kp_reader base;            /* first: kp_reader_* find the ops here */
	nfc_context *ctx;
	nfc_device *dev;
	unsigned techs;                   /* what the device can poll for */
	nfc_target target;                /* the selected card, when have_target */
	int have_target;
	/* A card still in the field when its session ended is not a new tap: polling skips it
	 * until a round finds it gone. */
	unsigned linger_tech;             /* KP_TECH_NONE: none */
	uint8_t linger_id[10];
	size_t linger_len;
	char conn[NFC_BUFSIZE_CONNSTRING];
	char name[LN_NAME_MAX];
	char err[LN_ERR_MAX];             /* libnfc's account of the last failure */
};

/* libnfc 1.8's drivers, and "usb" for any of its USB drivers. */
static const char *const ln_drivers[] = {
	"pn532_uart", "pn532_spi", "pn532_i2c", "pn53x_usb", "acr122_usb", "acr122_pcsc",
	"acr122s", "arygon", "pn71xx", "usb",
};

static int ln_driver_is(const char *conn, size_t drv_len, const char *name)
{
	return strlen(name) == drv_len && memcmp(conn, name, drv_len) == 0;
}

int kp_libnfc_parse_conn(const char *conn, char *out, size_t cap)
{
	const char *colon, *speed;
	size_t n, drv_len;
	int known = 0, serial;

	if (conn == NULL || out == NULL || cap == 0)
		return KP_HAL_E_INVAL;
	out[0] = '\0';
	n = strlen(conn);
	if (n == 0)
		return KP_HAL_OK; /* libnfc's default device */
	if (n >= cap || n >= NFC_BUFSIZE_CONNSTRING)
		return KP_HAL_E_CONFIG;
	for (const char *p = conn; *p != '\0'; p++) {
		unsigned char ch = (unsigned char)*p;

		if (ch <= 0x20 || ch == 0x7F)
			return KP_HAL_E_CONFIG;
	}
	colon = strchr(conn, ':');
	drv_len = colon != NULL ? (size_t)(colon - conn) : n;
	for (size_t i = 0; i < sizeof(ln_drivers) / sizeof(ln_drivers[0]); i++)
		known |= ln_driver_is(conn, drv_len, ln_drivers[i]);
	if (!known || (colon != NULL && colon[1] == '\0'))
		return KP_HAL_E_CONFIG;
	/* Serial drivers need "driver:port[:speed]"; libnfc would not say why it failed. */
	serial = ln_driver_is(conn, drv_len, "pn532_uart") || ln_driver_is(conn, drv_len, "arygon") ||
	         ln_driver_is(conn, drv_len, "acr122s");
	if (serial && (colon == NULL || colon[1] == ':'))
		return KP_HAL_E_CONFIG;
	speed = serial ? strchr(colon + 1, ':') : NULL;
	if (speed != NULL) {
		if (speed[1] == '\0' || strlen(speed + 1) > 9)
			return KP_HAL_E_CONFIG;
		for (const char *p = speed + 1; *p != '\0'; p++)
			if (*p < '0' || *p > '9')
				return KP_HAL_E_CONFIG;
	}
	memcpy(out, conn, n + 1);
	return KP_HAL_OK;
}

int kp_libnfc_map_error(int nfc_error, int card_exchange)
{
	if (nfc_error >= 0)
		return KP_HAL_OK;
	switch (nfc_error) {
	case NFC_ETIMEOUT:
		/* In an exchange the card (or the chip on its behalf) was too slow; anywhere
		 * else the reader itself did not answer. */
		return card_exchange ? KP_HAL_E_TIMEOUT : KP_HAL_E_IO;
	case NFC_ERFTRANS:
		/* PN53x chips report "the card did not answer" (status 01) as an RF error. */
		return card_exchange ? KP_HAL_E_TIMEOUT : KP_HAL_E_NOCARD;
	case NFC_ETGRELEASED:
		return KP_HAL_E_NOCARD;
	case NFC_EOVFLOW:
		return KP_HAL_E_OVERFLOW;
	case NFC_EDEVNOTSUPP:
	case NFC_ENOTIMPL:
		return KP_HAL_E_NOTSUP;
	case NFC_EINVARG:
		return KP_HAL_E_INVAL;
	default:
		/* NFC_EIO, NFC_ECHIP, NFC_ESOFT, NFC_ENOTSUCHDEV, NFC_EOPABORTED, ... */
		return KP_HAL_E_IO;
	}
}

static void ln_set_err(struct ln_reader *r, const char *what, int nfc_error)
{
	snprintf(r->err, sizeof(r->err), "%s: %s (libnfc %d)", what,
	         r->dev != NULL ? nfc_strerror(r->dev) : "no device", nfc_error);
}

/* libnfc's dispatch macro returns 0 (success) when a driver lacks an operation and only
 * records NFC_EDEVNOTSUPP as the device's last error; read that back so a missing
 * operation is never taken for success. */
static int ln_result(struct ln_reader *r, int res)
{
	if (res >= 0 && nfc_device_get_last_error(r->dev) == NFC_EDEVNOTSUPP)
		return NFC_EDEVNOTSUPP;
	return res;
}

static int ln_select(struct ln_reader *r, nfc_modulation nm, const uint8_t *init,
                     size_t init_len, nfc_target *nt)
{
	memset(nt, 0, sizeof(*nt));
	return ln_result(r, nfc_initiator_select_passive_target(r->dev, nm, init, init_len, nt));
}

static void ln_close(struct kp_reader *base)
{
	struct ln_reader *r = (struct ln_reader *)base;

	if (r == NULL)
		return;
	/* Even a reader that stopped answering is closed: the UART driver then restores the
	 * port's settings, without which libnfc refuses it as "already claimed" next time. */
	if (r->dev != NULL)
		nfc_close(r->dev);
	if (r->ctx != NULL)
		nfc_exit(r->ctx);
	free(r);
}

static unsigned ln_device_techs(nfc_device *dev)
{
	const nfc_modulation_type *mt = NULL;
	unsigned techs = 0;

	if (nfc_device_get_supported_modulation(dev, N_INITIATOR, &mt) < 0 || mt == NULL)
		return KP_TECH_FELICA | KP_TECH_ISO14443A | KP_TECH_ISO14443B;
	for (; *mt != 0; mt++) {
		if (*mt == NMT_FELICA)
			techs |= KP_TECH_FELICA;
		else if (*mt == NMT_ISO14443A)
			techs |= KP_TECH_ISO14443A;
		else if (*mt == NMT_ISO14443B)
			techs |= KP_TECH_ISO14443B;
	}
	return techs;
}

static int ln_open_err(struct kp_reader **out, const char *conn, char *err, size_t err_cap)
{
	char cs[NFC_BUFSIZE_CONNSTRING];
	struct ln_reader *r = NULL;
	int rc, res;

	if (out == NULL || conn == NULL || err == NULL || err_cap == 0)
		return KP_HAL_E_INVAL;
	*out = NULL;
	err[0] = '\0';
	rc = kp_libnfc_parse_conn(conn, cs, sizeof(cs));
	if (rc != KP_HAL_OK) {
		snprintf(err, err_cap, "libnfc reader: bad connection string '%s' (use libnfc or "
		         "libnfc:DRIVER:PORT, e.g. libnfc:pn532_uart:/dev/ttyUSB0)", conn);
		return rc;
	}
	r = calloc(1, sizeof(*r));
	if (r == NULL)
		return KP_HAL_E_NOMEM;
	r->base.ops = &kp_libnfc_reader_ops;
	nfc_init(&r->ctx);
	if (r->ctx == NULL) {
		rc = KP_HAL_E_NOMEM;
		goto out;
	}
	r->dev = nfc_open(r->ctx, cs[0] != '\0' ? cs : NULL);
	if (r->dev == NULL) {
		/* libnfc says no more than "could not": missing, busy or silent. */
		snprintf(err, err_cap, "libnfc reader: cannot open %s",
		         cs[0] != '\0' ? cs : "libnfc's default device");
		rc = KP_HAL_E_IO;
		goto out;
	}
	res = nfc_initiator_init(r->dev);
	if (res >= 0)
		res = nfc_device_set_property_bool(r->dev, NP_INFINITE_SELECT, false);
	if (res >= 0)
		res = nfc_device_set_property_bool(r->dev, NP_AUTO_ISO14443_4, true);
	if (res < 0) {
		ln_set_err(r, "initiator set-up", res);
		snprintf(err, err_cap, "libnfc reader: %s", r->err);
		rc = KP_HAL_E_IO;
		goto out;
	}
	r->techs = ln_device_techs(r->dev);
	snprintf(r->conn, sizeof(r->conn), "%s", nfc_device_get_connstring(r->dev));
	snprintf(r->name, sizeof(r->name), "%s", nfc_device_get_name(r->dev));
	*out = &r->base;
	r = NULL;
out:
	ln_close(r != NULL ? &r->base : NULL);
	return rc;
}

static int ln_open(struct kp_reader **out, const char *conn)
{
	char err[LN_ERR_MAX + 64];

	return ln_open_err(out, conn, err, sizeof(err));
}

static void ln_fill_info(const nfc_target *nt, unsigned baud, const struct kp_poll *poll,
                         struct kp_card_info *info)
{
	memset(info, 0, sizeof(*info));
	info->baud_kbps = baud;
	switch (nt->nm.nmt) {
	case NMT_FELICA:
		info->tech = KP_TECH_FELICA;
		memcpy(info->u.felica.idm, nt->nti.nfi.abtId, 8);
		memcpy(info->u.felica.pmm, nt->nti.nfi.abtPad, 8);
		/* The system code is there only when polled with RC 01 (a 20-byte reply). */
		if (poll->felica_request_code == 0x01 && nt->nti.nfi.szLen >= 20) {
			memcpy(info->u.felica.sys_code, nt->nti.nfi.abtSysCode, 2);
			info->u.felica.has_sys_code = 1;
		}
		break;
	case NMT_ISO14443B:
		info->tech = KP_TECH_ISO14443B;
		memcpy(info->u.b.pupi, nt->nti.nbi.abtPupi, 4);
		memcpy(info->u.b.app_data, nt->nti.nbi.abtApplicationData, 4);
		memcpy(info->u.b.proto_info, nt->nti.nbi.abtProtocolInfo, 3);
		info->u.b.atqb[0] = 0x50;
		memcpy(info->u.b.atqb + 1, info->u.b.pupi, 4);
		memcpy(info->u.b.atqb + 5, info->u.b.app_data, 4);
		memcpy(info->u.b.atqb + 9, info->u.b.proto_info, 3);
		break;
	case NMT_ISO14443A:
		info->tech = KP_TECH_ISO14443A;
		info->u.a.uid_len = nt->nti.nai.szUidLen <= sizeof(info->u.a.uid) ?
		                    nt->nti.nai.szUidLen : sizeof(info->u.a.uid);
		memcpy(info->u.a.uid, nt->nti.nai.abtUid, info->u.a.uid_len);
		memcpy(info->u.a.atqa, nt->nti.nai.abtAtqa, 2);
		info->u.a.sak = nt->nti.nai.btSak;
		break;
	default:
		break;
	}
}

/* A card's identity: IDm, UID or PUPI. */
static size_t ln_card_id(const nfc_target *nt, unsigned *tech, uint8_t id[10])
{
	switch (nt->nm.nmt) {
	case NMT_FELICA:
		*tech = KP_TECH_FELICA;
		memcpy(id, nt->nti.nfi.abtId, 8);
		return 8;
	case NMT_ISO14443B:
		*tech = KP_TECH_ISO14443B;
		memcpy(id, nt->nti.nbi.abtPupi, 4);
		return 4;
	case NMT_ISO14443A: {
		size_t n = nt->nti.nai.szUidLen <= 10 ? nt->nti.nai.szUidLen : 10;

		*tech = KP_TECH_ISO14443A;
		memcpy(id, nt->nti.nai.abtUid, n);
		return n;
	}
	default:
		*tech = KP_TECH_NONE;
		return 0;
	}
}

static int ln_is_lingering(const struct ln_reader *r, const nfc_target *nt)
{
	uint8_t id[10];
	unsigned tech;
	size_t n = ln_card_id(nt, &tech, id);

	return r->linger_tech != KP_TECH_NONE && tech == r->linger_tech &&
	       n == r->linger_len && memcmp(id, r->linger_id, n) == 0;
}

/* Ends the session with the selected card, if any; errors only reported. */
static int ln_deselect(struct ln_reader *r)
{
	int res;

	if (!r->have_target)
		return KP_HAL_OK;
	r->have_target = 0;
	res = nfc_initiator_deselect_target(r->dev);
	if (res < 0) {
		ln_set_err(r, "deselect", res);
		return kp_libnfc_map_error(res, 0);
	}
	return KP_HAL_OK;
}

static int ln_wait_card(struct kp_reader *base, const struct kp_poll *poll,
                        struct kp_card_info *info, int timeout_ms)
{
	struct ln_reader *r = (struct ln_reader *)base;
	struct {
		unsigned tech;
		nfc_modulation nm;
		unsigned baud;
	} order[] = {
		{ KP_TECH_FELICA, { NMT_FELICA, NBR_212 }, 212 },
		{ KP_TECH_FELICA, { NMT_FELICA, NBR_424 }, 424 },
		{ KP_TECH_ISO14443B, { NMT_ISO14443B, NBR_106 }, 106 },
		{ KP_TECH_ISO14443A, { NMT_ISO14443A, NBR_106 }, 106 },
	};
	const uint8_t felica_init[5] = { 0x00, (uint8_t)(poll->felica_sys_code >> 8),
	                                 (uint8_t)poll->felica_sys_code,
	                                 poll->felica_request_code, 0x00 };
	int64_t deadline = timeout_ms >= 0 ? kp_hal_mono_ms() + timeout_ms : 0;
	unsigned techs;

	if (r == NULL || poll == NULL || info == NULL)
		return KP_HAL_E_INVAL;
	memset(info, 0, sizeof(*info));
	if ((poll->techs & (KP_TECH_FELICA | KP_TECH_ISO14443A | KP_TECH_ISO14443B)) == 0)
		return KP_HAL_E_INVAL;
	techs = poll->techs & r->techs;
	if (techs == 0) {
		snprintf(r->err, sizeof(r->err), "the device cannot poll for these technologies");
		return KP_HAL_E_NOTSUP;
	}
	ln_deselect(r); /* polling again ends any session */
	for (;;) {
		int lingering = 0;

		for (size_t i = 0; i < sizeof(order) / sizeof(order[0]); i++) {
			nfc_target nt;
			int res, rc;

			if (!(techs & order[i].tech))
				continue;
			memset(&nt, 0, sizeof(nt));
			if (order[i].tech == KP_TECH_FELICA)
				res = ln_select(r, order[i].nm, felica_init, sizeof(felica_init), &nt);
			else
				res = ln_select(r, order[i].nm, NULL, 0, &nt);
			if (res > 0 && ln_is_lingering(r, &nt)) {
				lingering = 1;   /* the card of the last tap, never taken away */
				r->have_target = 1;
				if (ln_deselect(r) == KP_HAL_E_IO)
					return KP_HAL_E_IO;
				continue;
			}
			if (res > 0) {
				r->target = nt;
				r->have_target = 1;
				r->linger_tech = KP_TECH_NONE;
				ln_fill_info(&nt, order[i].baud, poll, info);
				return KP_HAL_OK;
			}
			if (res == 0)
				continue;
			ln_set_err(r, "select", res);
			rc = kp_libnfc_map_error(res, 0);
			if (rc == KP_HAL_E_NOCARD)
				continue;        /* an RF error while polling: nobody answered well */
			if (rc == KP_HAL_E_NOTSUP) {
				techs &= ~order[i].tech;
				if (techs == 0)
					return KP_HAL_E_NOTSUP;
				continue;
			}
			return rc;
		}
		if (!lingering)
			r->linger_tech = KP_TECH_NONE;  /* a round without it: it has left */
		if (timeout_ms >= 0) {
			int64_t left = deadline - kp_hal_mono_ms();

			if (left <= 0)
				return KP_HAL_E_NOCARD;
			kp_hal_sleep_ms(left < LN_POLL_GAP_MS ? left : LN_POLL_GAP_MS);
		} else {
			kp_hal_sleep_ms(LN_POLL_GAP_MS);
		}
	}
}

static int ln_transceive(struct kp_reader *base, const uint8_t *tx, size_t tx_len,
                         uint8_t *rx, size_t rx_cap, size_t *rx_len, int timeout_ms)
{
	struct ln_reader *r = (struct ln_reader *)base;
	int res;

	if (r == NULL || rx_len == NULL || tx == NULL || (rx == NULL && rx_cap > 0))
		return KP_HAL_E_INVAL;
	*rx_len = 0;
	if (tx_len == 0 || tx_len > LN_TX_MAX)
		return KP_HAL_E_INVAL;
	if (!r->have_target)
		return KP_HAL_E_NOCARD;
	/* libnfc reads timeout 0 as "forever": never pass it. */
	res = nfc_initiator_transceive_bytes(r->dev, tx, tx_len, rx_cap > 0 ? rx : NULL, rx_cap,
	                                     timeout_ms > 0 ? timeout_ms : -1);
	res = ln_result(r, res);
	if (res < 0) {
		ln_set_err(r, "transceive", res);
		return kp_libnfc_map_error(res, 1);
	}
	if ((size_t)res > rx_cap)
		return KP_HAL_E_OVERFLOW;
	*rx_len = (size_t)res;
	return KP_HAL_OK;
}

static int ln_release(struct kp_reader *base, int wait_removed, int timeout_ms)
{
	struct ln_reader *r = (struct ln_reader *)base;
	int64_t deadline;
	int rc = KP_HAL_OK, rc2, res;

	if (r == NULL)
		return KP_HAL_E_INVAL;
	if (!r->have_target)
		return KP_HAL_OK;
	/* libnfc forgets the target when it deselects, and can then no longer tell whether
	 * it is present: wait for the card to leave first, then deselect. A card not seen to
	 * leave is remembered, so that polling does not take it for a new tap. */
	r->linger_len = ln_card_id(&r->target, &r->linger_tech, r->linger_id);
	deadline = kp_hal_mono_ms() + (timeout_ms > 0 ? timeout_ms : 0);
	while (wait_removed) {
		res = ln_result(r, nfc_initiator_target_is_present(r->dev, &r->target));
		if (res == NFC_ETGRELEASED || res == NFC_ERFTRANS) {
			r->linger_tech = KP_TECH_NONE;            /* the card has left */
			break;
		}
		if (res < 0) {
			ln_set_err(r, "presence check", res);
			rc = kp_libnfc_map_error(res, 0);
			break;
		}
		if (kp_hal_mono_ms() >= deadline) {
			rc = KP_HAL_E_TIMEOUT;                    /* still there */
			break;
		}
		kp_hal_sleep_ms(LN_PRESENT_GAP_MS);
	}
	rc2 = ln_deselect(r);
	if (rc == KP_HAL_OK)
		rc = rc2;
	return rc;
}

static int ln_describe(struct kp_reader *base, char *buf, size_t cap)
{
	struct ln_reader *r = (struct ln_reader *)base;
	int n;

	if (r == NULL || buf == NULL || cap == 0)
		return KP_HAL_E_INVAL;
	n = snprintf(buf, cap, "libnfc %s: %s (%s)", nfc_version(), r->name, r->conn);
	if (n < 0)
		return KP_HAL_E_IO;
	return (size_t)n < cap ? KP_HAL_OK : KP_HAL_E_OVERFLOW;
}

static int ln_last_error(struct kp_reader *base, char *buf, size_t cap)
{
	struct ln_reader *r = (struct ln_reader *)base;
	int n;

	if (r == NULL || buf == NULL || cap == 0)
		return KP_HAL_E_INVAL;
	n = snprintf(buf, cap, "%s", r->err);
	return (size_t)n < cap ? KP_HAL_OK : KP_HAL_E_OVERFLOW;
}

int kp_libnfc_list(char *buf, size_t cap, size_t *n_found)
{
	nfc_connstring *cs = NULL;
	nfc_context *ctx = NULL;
	size_t n, used = 0;
	int rc = KP_HAL_OK;

	if (buf == NULL || cap == 0 || n_found == NULL)
		return KP_HAL_E_INVAL;
	buf[0] = '\0';
	*n_found = 0;
	cs = calloc(LN_LIST_MAX, sizeof(*cs));
	if (cs == NULL)
		return KP_HAL_E_NOMEM;
	nfc_init(&ctx);
	if (ctx == NULL) {
		rc = KP_HAL_E_NOMEM;
		goto out;
	}
	n = nfc_list_devices(ctx, cs, LN_LIST_MAX);
	for (size_t i = 0; i < n && rc == KP_HAL_OK; i++) {
		/* Devices named in the configuration are listed unchecked: open each one, which
		 * also gives its name. */
		nfc_device *dev = nfc_open(ctx, cs[i]);
		int w;

		cs[i][sizeof(cs[i]) - 1] = '\0';
		w = snprintf(buf + used, cap - used, "%s\t%s\n", cs[i],
		             dev != NULL ? nfc_device_get_name(dev) : "(does not answer)");
		if (dev != NULL)
			nfc_close(dev);
		if (w < 0 || (size_t)w >= cap - used) {
			buf[used] = '\0';
			rc = KP_HAL_E_OVERFLOW;
			break;
		}
		used += (size_t)w;
		(*n_found)++;
	}
out:
	if (ctx != NULL)
		nfc_exit(ctx);
	free(cs);
	return rc;
}

const struct kp_reader_ops kp_libnfc_reader_ops = {
	.scheme = "libnfc",
	.open = ln_open,
	.open_err = ln_open_err,
	.wait_card = ln_wait_card,
	.transceive = ln_transceive,
	.release = ln_release,
	.describe = ln_describe,
	.last_error = ln_last_error,
	.close = ln_close,
};
