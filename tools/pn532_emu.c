/* SPDX-License-Identifier: Apache-2.0 */
/* kippu-pn532-emu: a PN532 reader chip on a pseudo-terminal. It speaks the chip's host
 * protocol over UART (PROTOCOLS.md section 5) well enough that Debian's unmodified libnfc
 * 1.8 opens the slave side as pn532_uart:<path>, and the cards it finds are the mock HAL's
 * card models driven by a scenario file (hal/SCENARIO.md), reached only through the public
 * HAL API: InListPassiveTarget is kp_reader_wait_card, InDataExchange is
 * kp_reader_transceive, InRelease/InDeselect are kp_reader_release.
 *
 * Frames: the host's `00 00 FF LEN LCS D4 CMD data DCS 00` (or the extended form with
 * `FF FF LENh LENl LCS`) is found by its `00 00 FF`, so the wake-up preamble and any junk
 * before a frame are skipped. A frame whose LCS or DCS is wrong is ignored without an ACK,
 * as the chip does: the host sees its ACK timeout. A good frame is answered with the ACK
 * and then the reply; a command the emulator does not know, or whose parameters it cannot
 * make sense of, gets the chip's syntax-error frame `00 00 FF 01 FF 7F 81 00`. The host's
 * ACK frame aborts a command still running (a blocking InListPassiveTarget or InAutoPoll);
 * its NACK frame asks for the last reply again. Nothing is ever sent unasked.
 *
 * Usage: kippu-pn532-emu --scenario FILE [--link PATH] [--fault MODE] [--fault-after N]
 *                        [--slow-ms N] [--log FILE]
 * SIGUSR1 takes the card out of the field, SIGUSR2 toggles "vanished" (nothing is
 * answered, as if the reader were unplugged), SIGTERM/SIGINT end it (the link removed). */
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <limits.h>
#include <poll.h>
#include <signal.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <termios.h>
#include <time.h>
#include <unistd.h>

#include "kp_hal.h"
#include "kp_terminal.h"     /* the mock My Number card signs with our crypto */
#include "kp_version.h"

#define EMU_DATA_MAX      264  /* TFI + command + parameters: the PN53x frame limit */
#define EMU_WIRE_MAX      (EMU_DATA_MAX + 10)
#define EMU_IN_MAX        4096 /* host bytes not parsed yet */
#define EMU_REGS_MAX      128  /* registers remembered */
#define EMU_PARTIAL_MS    250  /* a frame cut short by the host is dropped after this */
#define EMU_WAIT_STEP_MS  50   /* a blocking poll checks for an abort this often */
#define EMU_WRITE_MS      1000 /* give up on a host that does not read its replies */
#define EMU_GARBAGE_LEN   11
#define EMU_RNG_SEED      0x706E3533u
#define EMU_RX_MAX        (EMU_DATA_MAX - 3) /* card reply after D5 41 status */

/* PN53x status bytes (first byte of an InDataExchange reply). */
#define PN_ST_OK          0x00
#define PN_ST_TIMEOUT     0x01 /* the card did not answer */
#define PN_ST_SMALLBUF    0x07
#define PN_ST_CONTEXT     0x27 /* not acceptable now (no such target) */

enum emu_fault { EMU_FAULT_NONE = 0, EMU_FAULT_TRUNCATE, EMU_FAULT_CHECKSUM, EMU_FAULT_GARBAGE,
                 EMU_FAULT_NOACK };
enum emu_frame_kind { EMU_FR_NONE = 0, EMU_FR_CMD, EMU_FR_ACK, EMU_FR_NACK };
/* What a command handler leaves for the wire. */
enum emu_outcome { EMU_OUT_REPLY = 0, EMU_OUT_ERROR, EMU_OUT_NONE };

struct emu_frame {
	enum emu_frame_kind kind;
	uint8_t data[EMU_DATA_MAX];      /* command code and parameters (TFI stripped) */
	size_t len;
};

struct emu_reg {
	uint16_t addr;
	uint8_t val;
};

struct emu {
	struct kp_reader *reader;
	int master, slave;               /* the slave stays open here, so reads never see EIO */
	char pty[128];
	uint8_t in[EMU_IN_MAX];
	size_t in_len;
	int64_t in_last_ms;              /* when the last host byte came */
	struct emu_frame pending;        /* a command that arrived while another was running */
	uint8_t last[EMU_WIRE_MAX];      /* the last reply sent, for a NACK */
	size_t last_len;
	struct emu_reg regs[EMU_REGS_MAX];
	size_t n_regs;
	uint8_t mx_rty_passive;          /* RFConfiguration item 05: FF = poll until a card comes */
	int rf_on;
	int target;                      /* an activated target (Tg 1) the chip knows of */
	int card_gone;                   /* SIGUSR1 took it away */
	uint8_t target_brty;             /* how it was activated: 0 A, 1/2 FeliCa, 3 B */
	enum emu_fault fault;
	unsigned long fault_after;       /* the fault hits command N and later (1-based) */
	unsigned long n_cmds;
	int slow_ms;
	int vanished;
	uint32_t rng;
	FILE *log;
	int64_t t0_ms;
};

/* The chip's answer to a frame it cannot act on (syntax error). */
static const uint8_t emu_error_frame[] = { 0x00, 0x00, 0xFF, 0x01, 0xFF, 0x7F, 0x81, 0x00 };

static volatile sig_atomic_t emu_stop;
static volatile sig_atomic_t emu_remove;
static volatile sig_atomic_t emu_vanish_flips;

static void emu_on_signal(int sig)
{
	if (sig == SIGUSR1)
		emu_remove = 1;
	else if (sig == SIGUSR2)
		emu_vanish_flips++;
	else
		emu_stop = 1;
}

static int64_t emu_mono_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* Log lines name commands, lengths and statuses; never a card's IDm, PUPI or UID. */
static void emu_log(struct emu *e, const char *fmt, ...)
{
	va_list ap;

	if (e->log == NULL)
		return;
	fprintf(e->log, "%8.3f ", (double)(emu_mono_ms() - e->t0_ms) / 1000.0);
	va_start(ap, fmt);
	vfprintf(e->log, fmt, ap);
	va_end(ap);
	fputc('\n', e->log);
	fflush(e->log);
}

static uint32_t emu_rand(struct emu *e)
{
	uint32_t x = e->rng;

	x ^= x << 13;
	x ^= x >> 17;
	x ^= x << 5;
	e->rng = x;
	return x;
}

/* ---- signals and the host side of the pty ---- */

/* Acts on the signals that came in since last time. Returns 1 when the emulator must
 * stop what it is doing (exit asked for, or the reader has just vanished). */
static int emu_signals(struct emu *e)
{
	int flips = (int)emu_vanish_flips;

	if (emu_remove) {
		emu_remove = 0;
		kp_reader_release(e->reader, 1, 0);
		e->card_gone = 1;
		emu_log(e, "SIGUSR1: card taken out of the field");
	}
	if (flips != 0) {
		emu_vanish_flips = 0;
		if (flips % 2 != 0) {
			e->vanished = !e->vanished;
			e->in_len = 0;
			e->pending.kind = EMU_FR_NONE;
			emu_log(e, "SIGUSR2: %s", e->vanished ? "vanished" : "back");
		}
	}
	return emu_stop || e->vanished;
}

/* Waits up to ms for host bytes or a signal, then reads what there is. Signals are
 * blocked everywhere else, so one that comes in while we work is seen here. */
static void emu_wait_input(struct emu *e, int ms, const sigset_t *unblocked)
{
	struct pollfd pfd = { .fd = e->master, .events = POLLIN };
	struct timespec ts = { .tv_sec = ms / 1000, .tv_nsec = (long)(ms % 1000) * 1000000L };
	ssize_t n;

	if (ppoll(&pfd, 1, ms < 0 ? NULL : &ts, unblocked) <= 0)
		return;
	for (;;) {
		uint8_t junk[256];
		uint8_t *dst = e->in + e->in_len;
		size_t room = sizeof(e->in) - e->in_len;

		if (e->vanished || room == 0) {
			dst = junk;                   /* an unplugged reader hears nothing */
			room = sizeof(junk);
		}
		n = read(e->master, dst, room);
		if (n <= 0)
			break;
		if (dst != junk)
			e->in_len += (size_t)n;
		e->in_last_ms = emu_mono_ms();
	}
}

static void emu_write(struct emu *e, const uint8_t *buf, size_t n)
{
	int64_t deadline = emu_mono_ms() + EMU_WRITE_MS;

	while (n > 0) {
		ssize_t w = write(e->master, buf, n);
		struct pollfd pfd = { .fd = e->master, .events = POLLOUT };

		if (w > 0) {
			buf += w;
			n -= (size_t)w;
			continue;
		}
		if (w < 0 && errno != EAGAIN && errno != EINTR)
			break;
		if (emu_mono_ms() >= deadline)
			break;
		poll(&pfd, 1, 10);
	}
	if (n > 0)
		emu_log(e, "write failed: %zu bytes not sent", n);
}

/* ---- frames ---- */

static void emu_consume(struct emu *e, size_t n)
{
	if (n > e->in_len)
		n = e->in_len;
	memmove(e->in, e->in + n, e->in_len - n);
	e->in_len -= n;
}

/* Finds the next whole frame in the input. Returns its kind (EMU_FR_NONE when more bytes
 * are needed); bytes that cannot start a frame are dropped, and so are frames with a bad
 * length or data checksum (the search resumes one byte later, so a good frame right
 * behind a broken one is still found). */
static enum emu_frame_kind emu_parse(struct emu *e, struct emu_frame *fr)
{
	for (;;) {
		size_t i = 0, hdr, len, total;
		const uint8_t *p;
		uint8_t sum = 0;

		while (i + 3 <= e->in_len &&
		       !(e->in[i] == 0x00 && e->in[i + 1] == 0x00 && e->in[i + 2] == 0xFF))
			i++;
		if (i + 3 > e->in_len) {
			/* keep a tail that may be the start of 00 00 FF */
			emu_consume(e, e->in_len > 2 ? e->in_len - 2 : 0);
			return EMU_FR_NONE;
		}
		emu_consume(e, i);
		if (e->in_len < 5)
			return EMU_FR_NONE;
		p = e->in;
		if (p[3] == 0x00 && p[4] == 0xFF) {
			emu_consume(e, 5);
			return EMU_FR_ACK;
		}
		if (p[3] == 0xFF && p[4] == 0x00) {
			emu_consume(e, 5);
			return EMU_FR_NACK;
		}
		if (p[3] == 0xFF && p[4] == 0xFF) {
			if (e->in_len < 8)
				return EMU_FR_NONE;
			len = (size_t)p[5] << 8 | p[6];
			hdr = 8;
			if ((uint8_t)(p[5] + p[6] + p[7]) != 0 || len == 0 || len > EMU_DATA_MAX) {
				emu_log(e, "extended frame with a bad length ignored");
				emu_consume(e, 1);
				continue;
			}
		} else {
			len = p[3];
			hdr = 5;
			if ((uint8_t)(p[3] + p[4]) != 0 || len == 0) {
				emu_log(e, "frame with a bad length checksum ignored");
				emu_consume(e, 1);
				continue;
			}
		}
		total = hdr + len + 2;
		if (e->in_len < total)
			return EMU_FR_NONE;
		for (size_t k = 0; k <= len; k++)
			sum = (uint8_t)(sum + p[hdr + k]);
		if (sum != 0) {
			emu_log(e, "frame with a bad data checksum ignored");
			emu_consume(e, 1);
			continue;
		}
		if (p[hdr] != 0xD4) {
			emu_log(e, "frame with TFI %02X ignored", p[hdr]);
			emu_consume(e, total);
			continue;
		}
		fr->len = len - 1;
		memcpy(fr->data, p + hdr + 1, fr->len);
		emu_consume(e, total);
		return EMU_FR_CMD;
	}
}

static int emu_faulty(const struct emu *e)
{
	return e->fault != EMU_FAULT_NONE && e->n_cmds >= e->fault_after;
}

static void emu_send_ack(struct emu *e)
{
	static const uint8_t ack[] = { 0x00, 0x00, 0xFF, 0x00, 0xFF, 0x00 };

	if (emu_faulty(e) && e->fault == EMU_FAULT_NOACK)
		return;
	emu_write(e, ack, sizeof(ack));
}

/* Sends a whole frame as the chip would, or as the fault mode spoils it. */
static void emu_send_wire(struct emu *e, const uint8_t *frame, size_t n)
{
	uint8_t buf[EMU_WIRE_MAX];

	memcpy(buf, frame, n);
	if (emu_faulty(e)) {
		switch (e->fault) {
		case EMU_FAULT_TRUNCATE:
			n /= 2;
			break;
		case EMU_FAULT_CHECKSUM:
			buf[n - 2] = (uint8_t)(buf[n - 2] + 1);
			break;
		case EMU_FAULT_GARBAGE:
			n = EMU_GARBAGE_LEN;
			for (size_t i = 0; i < n; i++)
				buf[i] = (uint8_t)(emu_rand(e) >> 24);
			buf[0] |= 0x80; /* never the start of a frame */
			break;
		default:
			break;
		}
	}
	memcpy(e->last, buf, n);
	e->last_len = n;
	emu_write(e, buf, n);
}

/* data starts with the command code + 1; D5 is put in front. */
static void emu_send_reply(struct emu *e, const uint8_t *data, size_t n)
{
	uint8_t frame[EMU_WIRE_MAX];
	size_t k = 0, len = n + 1;
	uint8_t sum = 0xD5;

	if (len > EMU_DATA_MAX) {
		emu_log(e, "reply of %zu bytes does not fit a frame", len);
		emu_send_wire(e, emu_error_frame, sizeof(emu_error_frame));
		return;
	}
	frame[k++] = 0x00;
	frame[k++] = 0x00;
	frame[k++] = 0xFF;
	if (len <= 0xFF) {
		frame[k++] = (uint8_t)len;
		frame[k++] = (uint8_t)(0x100 - len);
	} else {
		frame[k++] = 0xFF;
		frame[k++] = 0xFF;
		frame[k++] = (uint8_t)(len >> 8);
		frame[k++] = (uint8_t)len;
		frame[k++] = (uint8_t)(0x100 - ((len >> 8) + (len & 0xFF)));
	}
	frame[k++] = 0xD5;
	memcpy(frame + k, data, n);
	k += n;
	for (size_t i = 0; i < n; i++)
		sum = (uint8_t)(sum + data[i]);
	frame[k++] = (uint8_t)(0x100 - sum);
	frame[k++] = 0x00;
	emu_send_wire(e, frame, k);
}

static void emu_send_error(struct emu *e)
{
	emu_send_wire(e, emu_error_frame, sizeof(emu_error_frame));
}

/* While a command runs: 1 when the host aborted it (its ACK frame, or a new command,
 * which is kept for later), a signal ended it, or the reader vanished. */
static int emu_interrupted(struct emu *e, int wait_ms, const sigset_t *unblocked)
{
	enum emu_frame_kind k;

	emu_wait_input(e, wait_ms, unblocked);
	if (emu_signals(e))
		return 1;
	k = emu_parse(e, &e->pending);
	if (k == EMU_FR_ACK) {
		emu_log(e, "aborted by the host");
		return 1;
	}
	if (k == EMU_FR_CMD) {
		e->pending.kind = EMU_FR_CMD;
		emu_log(e, "a new command aborts the running one");
		return 1;
	}
	return 0;
}

/* Sleeps ms unless interrupted (then 1). */
static int emu_delay(struct emu *e, int ms, const sigset_t *unblocked)
{
	int64_t end = emu_mono_ms() + ms;

	for (;;) {
		int64_t left = end - emu_mono_ms();

		if (left <= 0)
			return 0;
		if (emu_interrupted(e, left < EMU_WAIT_STEP_MS ? (int)left : EMU_WAIT_STEP_MS,
		                    unblocked))
			return 1;
	}
}

/* ---- registers ---- */

/* Reset values of the CIU registers libnfc touches (PN532 user manual, PN512 data). */
static const struct emu_reg emu_reg_defaults[] = {
	{ 0x6301, 0x3F }, { 0x6302, 0x00 }, { 0x6303, 0x00 }, { 0x6304, 0x80 },
	{ 0x6305, 0x00 }, { 0x6306, 0x10 }, { 0x6307, 0x84 }, { 0x6308, 0x84 },
	{ 0x6309, 0x4D }, { 0x630A, 0x00 }, { 0x630B, 0x00 }, { 0x630C, 0x62 },
	{ 0x630D, 0x00 }, { 0x630E, 0x00 }, { 0x630F, 0xEB }, { 0x6311, 0xFF },
	{ 0x6312, 0xFF }, { 0x6313, 0x88 }, { 0x6314, 0x26 }, { 0x6315, 0x87 },
	{ 0x6316, 0x48 }, { 0x6317, 0x88 }, { 0x6318, 0x20 }, { 0x6319, 0x20 },
	{ 0x631A, 0x00 }, { 0x631B, 0x00 }, { 0x631C, 0x00 }, { 0x631D, 0x00 },
	{ 0x631E, 0x00 }, { 0x631F, 0x00 }, { 0x6331, 0x20 }, { 0x6332, 0x80 },
	{ 0x6333, 0x00 }, { 0x6334, 0x14 }, { 0x6335, 0x00 }, { 0x6336, 0x00 },
	{ 0x6337, 0x21 }, { 0x6338, 0x00 }, { 0x633A, 0x00 }, { 0x633B, 0x08 },
	{ 0x633C, 0x10 }, { 0x633D, 0x00 }, { 0x633E, 0x80 },
	{ 0xFFB0, 0xFF }, { 0xFFF7, 0xFF }, /* P3, P7 */
};

static struct emu_reg *emu_reg_find(struct emu *e, uint16_t addr)
{
	for (size_t i = 0; i < e->n_regs; i++)
		if (e->regs[i].addr == addr)
			return &e->regs[i];
	return NULL;
}

static uint8_t emu_reg_read(struct emu *e, uint16_t addr)
{
	const struct emu_reg *r = emu_reg_find(e, addr);

	return r != NULL ? r->val : 0x00;
}

static void emu_reg_write(struct emu *e, uint16_t addr, uint8_t val)
{
	struct emu_reg *r = emu_reg_find(e, addr);

	if (r == NULL && e->n_regs < EMU_REGS_MAX) {
		r = &e->regs[e->n_regs++];
		r->addr = addr;
	}
	if (r == NULL) {
		emu_log(e, "register file full: write to %04X forgotten", addr);
		return;
	}
	r->val = val;
}

/* ---- card activation ---- */

/* What a poll for BrTy finds: fills the target data as InListPassiveTarget reports it
 * (Tg first). Returns 1 with a target, 0 without, -1 when the host aborted. */
static int emu_activate(struct emu *e, uint8_t brty, const struct kp_poll *poll, int forever,
                        uint8_t *tg, size_t *tg_len, const sigset_t *unblocked)
{
	struct kp_card_info info;
	size_t k = 0;
	int rc;

	for (;;) {
		if (poll->techs == KP_TECH_NONE)
			rc = KP_HAL_E_NOCARD;
		else
			rc = kp_reader_wait_card(e->reader, poll, &info, forever ? EMU_WAIT_STEP_MS : 0);
		if (rc == KP_HAL_OK)
			break;
		if (rc != KP_HAL_E_NOCARD && rc != KP_HAL_E_END && rc != KP_HAL_E_TIMEOUT)
			emu_log(e, "wait_card: %s", kp_hal_strerror(rc));
		if (!forever)
			return 0;
		/* The chip keeps polling until a card comes or the host aborts. */
		if (emu_interrupted(e, rc == KP_HAL_E_NOCARD ? 0 : EMU_WAIT_STEP_MS, unblocked))
			return -1;
	}
	tg[k++] = 0x01;
	switch (info.tech) {
	case KP_TECH_FELICA:
		tg[k++] = info.u.felica.has_sys_code ? 0x14 : 0x12;
		tg[k++] = 0x01;
		memcpy(tg + k, info.u.felica.idm, 8);
		k += 8;
		memcpy(tg + k, info.u.felica.pmm, 8);
		k += 8;
		if (info.u.felica.has_sys_code) {
			memcpy(tg + k, info.u.felica.sys_code, 2);
			k += 2;
		}
		break;
	case KP_TECH_ISO14443B:
		memcpy(tg + k, info.u.b.atqb, 12);
		k += 12;
		tg[k++] = 0x01;               /* ATTRIB_RES: one byte, MBLI 0 CID 0 */
		tg[k++] = 0x00;
		break;
	case KP_TECH_ISO14443A:
		tg[k++] = info.u.a.atqa[0];
		tg[k++] = info.u.a.atqa[1];
		tg[k++] = info.u.a.sak;
		tg[k++] = (uint8_t)info.u.a.uid_len;
		memcpy(tg + k, info.u.a.uid, info.u.a.uid_len);
		k += info.u.a.uid_len;
		break;
	default:
		return 0;
	}
	*tg_len = k;
	e->target = 1;
	e->card_gone = 0;
	e->target_brty = brty;
	return 1;
}

/* The HAL poll for an InListPassiveTarget BrTy and its initiator data; -1 when the
 * parameters are not what the chip accepts. */
static int emu_poll_for(uint8_t brty, const uint8_t *init, size_t n, struct kp_poll *poll)
{
	memset(poll, 0, sizeof(*poll));
	switch (brty) {
	case 0x00:
		if (n != 0 && n != 4 && n != 7 && n != 10)
			return -1;
		poll->techs = KP_TECH_ISO14443A;
		return 0;
	case 0x01:
	case 0x02:
		/* FeliCa: the 5-byte Polling payload 00 SCh SCl RC TSN */
		if (n != 5 || init[0] != 0x00)
			return -1;
		poll->techs = KP_TECH_FELICA;
		poll->felica_sys_code = (uint16_t)(init[1] << 8 | init[2]);
		poll->felica_request_code = init[3];
		return 0;
	case 0x03:
		if (n > 2)
			return -1;
		poll->techs = KP_TECH_ISO14443B;
		return 0;
	case 0x04:
		poll->techs = KP_TECH_NONE;   /* Jewel: no such card model */
		return 0;
	default:
		return -1;
	}
}

static const char *emu_brty_name(uint8_t brty)
{
	switch (brty) {
	case 0x00:
		return "106A";
	case 0x01:
		return "FeliCa 212";
	case 0x02:
		return "FeliCa 424";
	case 0x03:
		return "106B";
	case 0x04:
		return "Jewel";
	default:
		return "?";
	}
}

/* ---- commands ---- */

static enum emu_outcome emu_in_list(struct emu *e, const uint8_t *p, size_t n, uint8_t *out,
                                    size_t *out_len, const sigset_t *unblocked)
{
	struct kp_poll poll;
	size_t tg_len = 0;
	int found;

	if (n < 2 || p[0] < 1 || p[0] > 2 || emu_poll_for(p[1], p + 2, n - 2, &poll) < 0)
		return EMU_OUT_ERROR;
	e->target = 0;
	found = emu_activate(e, p[1], &poll, e->mx_rty_passive == 0xFF, out + 2, &tg_len,
	                     unblocked);
	emu_log(e, "InListPassiveTarget %s: %s", emu_brty_name(p[1]),
	        found > 0 ? "1 target" : found == 0 ? "no target" : "aborted");
	if (found < 0)
		return EMU_OUT_NONE;
	out[1] = found > 0 ? 0x01 : 0x00;
	*out_len = 2 + tg_len;
	return EMU_OUT_REPLY;
}

/* InAutoPoll types mapped onto what a poll looks for. */
static int emu_autopoll_type(uint8_t type, uint8_t *brty, struct kp_poll *poll)
{
	static const uint8_t felica_wildcard[] = { 0x00, 0xFF, 0xFF, 0x00, 0x00 };

	switch (type) {
	case 0x00:
	case 0x10:
	case 0x20:
		*brty = 0x00;
		return emu_poll_for(0x00, NULL, 0, poll);
	case 0x01:
	case 0x02:
	case 0x11:
	case 0x12:
		*brty = (uint8_t)((type & 0x0F) == 0x02 ? 0x02 : 0x01);
		return emu_poll_for(*brty, felica_wildcard, sizeof(felica_wildcard), poll);
	case 0x03:
	case 0x23:
		*brty = 0x03;
		return emu_poll_for(0x03, NULL, 0, poll);
	default:
		*brty = 0x04;                 /* Jewel, DEP: nothing answers */
		return emu_poll_for(0x04, NULL, 0, poll);
	}
}

static enum emu_outcome emu_autopoll(struct emu *e, const uint8_t *p, size_t n, uint8_t *out,
                                     size_t *out_len, const sigset_t *unblocked)
{
	size_t n_types;

	if (n < 3 || n > 17 || p[0] == 0x00 || p[1] == 0x00)
		return EMU_OUT_ERROR;
	n_types = n - 2;
	e->target = 0;
	for (unsigned round = 0; p[0] == 0xFF || round < p[0]; round++) {
		for (size_t t = 0; t < n_types; t++) {
			struct kp_poll poll;
			uint8_t brty;
			size_t tg_len = 0;
			int found;

			emu_autopoll_type(p[2 + t], &brty, &poll);
			found = emu_activate(e, brty, &poll, 0, out + 4, &tg_len, unblocked);
			if (found > 0) {
				out[1] = 0x01;
				out[2] = p[2 + t];
				out[3] = (uint8_t)tg_len;
				*out_len = 4 + tg_len;
				emu_log(e, "InAutoPoll: type %02X found", p[2 + t]);
				return EMU_OUT_REPLY;
			}
		}
		/* Period is in units of 150 ms between rounds. */
		if ((p[0] == 0xFF || round + 1 < p[0]) && emu_delay(e, p[1] * 150, unblocked)) {
			emu_log(e, "InAutoPoll: aborted");
			return EMU_OUT_NONE;
		}
	}
	out[1] = 0x00;
	*out_len = 2;
	emu_log(e, "InAutoPoll: nothing");
	return EMU_OUT_REPLY;
}

static enum emu_outcome emu_data_exchange(struct emu *e, const uint8_t *p, size_t n,
                                          uint8_t *out, size_t *out_len,
                                          const sigset_t *unblocked)
{
	size_t rx_len = 0;
	int rc;

	if (n < 1)
		return EMU_OUT_ERROR;
	*out_len = 2;
	if (!e->target || (p[0] & 0x3F) != 0x01) {
		out[1] = PN_ST_CONTEXT;
		emu_log(e, "InDataExchange: no target");
		return EMU_OUT_REPLY;
	}
	rc = kp_reader_transceive(e->reader, p + 1, n - 1, out + 2, EMU_RX_MAX, &rx_len, 100);
	if (rc == KP_HAL_OK) {
		out[1] = PN_ST_OK;
		*out_len = 2 + rx_len;
	} else if (rc == KP_HAL_E_OVERFLOW) {
		out[1] = PN_ST_SMALLBUF;
	} else {
		out[1] = PN_ST_TIMEOUT;       /* silent card, card gone, reader trouble */
	}
	emu_log(e, "InDataExchange: %zu bytes out, status %02X, %zu bytes back", n - 1, out[1],
	        rx_len);
	if (e->slow_ms > 0 && emu_delay(e, e->slow_ms, unblocked)) {
		emu_log(e, "InDataExchange: slow reply abandoned");
		return EMU_OUT_NONE;
	}
	return EMU_OUT_REPLY;
}

static enum emu_outcome emu_diagnose(struct emu *e, const uint8_t *p, size_t n, uint8_t *out,
                                     size_t *out_len)
{
	if (n < 1)
		return EMU_OUT_ERROR;
	switch (p[0]) {
	case 0x00:                        /* communication line test: echo */
		memcpy(out + 1, p, n);
		*out_len = 1 + n;
		return EMU_OUT_REPLY;
	case 0x01:                        /* ROM test */
	case 0x02:                        /* RAM test */
	case 0x07:                        /* antenna test */
		out[1] = 0x00;
		*out_len = 2;
		return EMU_OUT_REPLY;
	case 0x06:                        /* card presence */
		out[1] = e->target && !e->card_gone ? PN_ST_OK : PN_ST_TIMEOUT;
		*out_len = 2;
		return EMU_OUT_REPLY;
	default:
		return EMU_OUT_ERROR;
	}
}

static enum emu_outcome emu_rf_config(struct emu *e, const uint8_t *p, size_t n)
{
	static const struct { uint8_t item; uint8_t len; } items[] = {
		{ 0x01, 1 }, { 0x02, 3 }, { 0x04, 1 }, { 0x05, 3 },
		{ 0x0A, 11 }, { 0x0B, 8 }, { 0x0C, 3 }, { 0x0D, 9 },
	};
	size_t i;

	if (n < 1)
		return EMU_OUT_ERROR;
	for (i = 0; i < sizeof(items) / sizeof(items[0]); i++)
		if (items[i].item == p[0])
			break;
	if (i == sizeof(items) / sizeof(items[0]) || n - 1 != items[i].len)
		return EMU_OUT_ERROR;
	if (p[0] == 0x01)
		e->rf_on = p[1] & 0x01;
	if (p[0] == 0x05)
		e->mx_rty_passive = p[3];
	emu_log(e, "RFConfiguration item %02X%s", p[0],
	        p[0] == 0x05 ? (p[3] == 0xFF ? ": poll until a card comes" : ": poll once") :
	        p[0] == 0x01 ? (p[1] & 0x01 ? ": field on" : ": field off") : "");
	return EMU_OUT_REPLY;
}

static enum emu_outcome emu_general_status(struct emu *e, uint8_t *out, size_t *out_len)
{
	size_t k = 1;

	out[k++] = 0x00;                  /* last error */
	out[k++] = (uint8_t)(e->rf_on != 0);
	out[k++] = (uint8_t)(e->target ? 1 : 0);
	if (e->target) {
		uint8_t br = e->target_brty == 0x02 ? 0x02 : e->target_brty == 0x01 ? 0x01 : 0x00;

		out[k++] = 0x01;
		out[k++] = br;
		out[k++] = br;
		out[k++] = (uint8_t)(e->target_brty == 0x01 || e->target_brty == 0x02 ? 0x10 : 0x00);
	}
	out[k++] = 0x00;                  /* SAM status */
	*out_len = k;
	return EMU_OUT_REPLY;
}

/* Runs one command: out[0] is set to the reply code, the rest by the handler. */
static enum emu_outcome emu_command(struct emu *e, const uint8_t *cmd, size_t n, uint8_t *out,
                                    size_t *out_len, const sigset_t *unblocked)
{
	const uint8_t *p = cmd + 1;
	size_t np = n - 1;

	if (n < 1)
		return EMU_OUT_ERROR;
	out[0] = (uint8_t)(cmd[0] + 1);
	*out_len = 1;
	switch (cmd[0]) {
	case 0x00:
		return emu_diagnose(e, p, np, out, out_len);
	case 0x02:                        /* GetFirmwareVersion: PN532 v1.6, A, B and 18092 */
		out[1] = 0x32;
		out[2] = 0x01;
		out[3] = 0x06;
		out[4] = 0x07;
		*out_len = 5;
		return EMU_OUT_REPLY;
	case 0x04:
		return emu_general_status(e, out, out_len);
	case 0x06:                        /* ReadRegister: ADRh ADRl ... */
		if (np < 2 || np % 2 != 0)
			return EMU_OUT_ERROR;
		for (size_t i = 0; i < np; i += 2)
			out[(*out_len)++] = emu_reg_read(e, (uint16_t)(p[i] << 8 | p[i + 1]));
		return EMU_OUT_REPLY;
	case 0x08:                        /* WriteRegister: ADRh ADRl value ... */
		if (np < 3 || np % 3 != 0)
			return EMU_OUT_ERROR;
		for (size_t i = 0; i < np; i += 3)
			emu_reg_write(e, (uint16_t)(p[i] << 8 | p[i + 1]), p[i + 2]);
		return EMU_OUT_REPLY;
	case 0x0C:                        /* ReadGPIO */
		out[1] = emu_reg_read(e, 0xFFB0);
		out[2] = emu_reg_read(e, 0xFFF7);
		out[3] = 0x00;
		*out_len = 4;
		return EMU_OUT_REPLY;
	case 0x0E:                        /* WriteGPIO */
		return np == 2 ? EMU_OUT_REPLY : EMU_OUT_ERROR;
	case 0x10:                        /* SetSerialBaudRate: a pty has no baud rate */
		return np == 1 && p[0] <= 0x08 ? EMU_OUT_REPLY : EMU_OUT_ERROR;
	case 0x12:                        /* SetParameters */
		return np == 1 ? EMU_OUT_REPLY : EMU_OUT_ERROR;
	case 0x14:                        /* SAMConfiguration: mode 1-4 [timeout [IRQ]] */
		return np >= 1 && np <= 3 && p[0] >= 1 && p[0] <= 4 ? EMU_OUT_REPLY : EMU_OUT_ERROR;
	case 0x16:                        /* PowerDown: WakeUpEnable [GenerateIRQ] */
		if (np < 1 || np > 2)
			return EMU_OUT_ERROR;
		out[1] = 0x00;
		*out_len = 2;
		return EMU_OUT_REPLY;
	case 0x32:
		return emu_rf_config(e, p, np);
	case 0x40:
		return emu_data_exchange(e, p, np, out, out_len, unblocked);
	case 0x42:                        /* InCommunicateThru: no raw-frame card here */
		out[1] = PN_ST_TIMEOUT;
		*out_len = 2;
		return EMU_OUT_REPLY;
	case 0x44:                        /* InDeselect */
	case 0x52:                        /* InRelease */
		if (np != 1)
			return EMU_OUT_ERROR;
		if (e->target)
			kp_reader_release(e->reader, 0, 0);
		e->target = 0;
		out[1] = 0x00;
		*out_len = 2;
		return EMU_OUT_REPLY;
	case 0x4A:
		return emu_in_list(e, p, np, out, out_len, unblocked);
	case 0x54:                        /* InSelect */
		if (np != 1)
			return EMU_OUT_ERROR;
		out[1] = e->target && p[0] == 0x01 ? PN_ST_OK : PN_ST_CONTEXT;
		*out_len = 2;
		return EMU_OUT_REPLY;
	case 0x60:
		return emu_autopoll(e, p, np, out, out_len, unblocked);
	default:
		return EMU_OUT_ERROR;
	}
}

static const char *emu_cmd_name(uint8_t c)
{
	switch (c) {
	case 0x00: return "Diagnose";
	case 0x02: return "GetFirmwareVersion";
	case 0x04: return "GetGeneralStatus";
	case 0x06: return "ReadRegister";
	case 0x08: return "WriteRegister";
	case 0x0C: return "ReadGPIO";
	case 0x0E: return "WriteGPIO";
	case 0x10: return "SetSerialBaudRate";
	case 0x12: return "SetParameters";
	case 0x14: return "SAMConfiguration";
	case 0x16: return "PowerDown";
	case 0x32: return "RFConfiguration";
	case 0x40: return "InDataExchange";
	case 0x42: return "InCommunicateThru";
	case 0x44: return "InDeselect";
	case 0x4A: return "InListPassiveTarget";
	case 0x52: return "InRelease";
	case 0x54: return "InSelect";
	case 0x60: return "InAutoPoll";
	default: return "unknown";
	}
}

static void emu_handle(struct emu *e, const struct emu_frame *fr, const sigset_t *unblocked)
{
	uint8_t out[EMU_DATA_MAX];
	size_t out_len = 0;
	enum emu_outcome o;

	e->n_cmds++;
	if (fr->len == 0) {
		emu_log(e, "#%lu frame without a command: error frame", e->n_cmds);
		emu_send_ack(e);
		emu_send_error(e);
		return;
	}
	if (e->log != NULL) {
		char regs[96] = "";

		/* Register and configuration traffic is shown byte by byte (no card data). */
		if (fr->data[0] == 0x06 || fr->data[0] == 0x08 || fr->data[0] == 0x32 ||
		    fr->data[0] == 0x12 || fr->data[0] == 0x14 || fr->data[0] == 0x16 ||
		    fr->data[0] == 0x4A) {
			size_t k = 0;

			for (size_t i = 1; i < fr->len && k + 4 < sizeof(regs); i++)
				k += (size_t)snprintf(regs + k, sizeof(regs) - k, " %02X", fr->data[i]);
		}
		emu_log(e, "#%lu %02X %s (%zu bytes)%s%s", e->n_cmds, fr->data[0],
		        emu_cmd_name(fr->data[0]), fr->len, regs[0] ? ":" : "", regs);
	}
	emu_send_ack(e);
	o = emu_command(e, fr->data, fr->len, out, &out_len, unblocked);
	if (o == EMU_OUT_ERROR) {
		emu_log(e, "#%lu %02X: error frame", e->n_cmds, fr->data[0]);
		emu_send_error(e);
	} else if (o == EMU_OUT_REPLY && !emu_stop && !e->vanished) {
		emu_send_reply(e, out, out_len);
	}
}

/* ---- setup ---- */

static int emu_open_pty(struct emu *e)
{
	struct termios tio;
	const char *name;
	int flags;

	e->master = posix_openpt(O_RDWR | O_NOCTTY);
	if (e->master < 0 || grantpt(e->master) != 0 || unlockpt(e->master) != 0) {
		perror("kippu-pn532-emu: posix_openpt");
		return -1;
	}
	name = ptsname(e->master);
	if (name == NULL || strlen(name) >= sizeof(e->pty)) {
		fprintf(stderr, "kippu-pn532-emu: ptsname failed\n");
		return -1;
	}
	snprintf(e->pty, sizeof(e->pty), "%s", name);
	/* Our own slave descriptor keeps the pair alive between clients (without it the
	 * master reads EIO whenever no client has the pty open). */
	e->slave = open(e->pty, O_RDWR | O_NOCTTY);
	if (e->slave < 0 || tcgetattr(e->slave, &tio) != 0) {
		perror("kippu-pn532-emu: slave");
		return -1;
	}
	cfmakeraw(&tio);
	if (tcsetattr(e->slave, TCSANOW, &tio) != 0) {
		perror("kippu-pn532-emu: tcsetattr");
		return -1;
	}
	flags = fcntl(e->master, F_GETFL);
	if (flags < 0 || fcntl(e->master, F_SETFL, flags | O_NONBLOCK) != 0) {
		perror("kippu-pn532-emu: fcntl");
		return -1;
	}
	return 0;
}

static int emu_make_link(const char *link, const char *target)
{
	struct stat st;

	if (lstat(link, &st) == 0) {
		if (!S_ISLNK(st.st_mode)) {
			fprintf(stderr, "kippu-pn532-emu: %s exists and is not a symlink\n", link);
			return -1;
		}
		unlink(link);                 /* a stale link from an emulator that died */
	}
	if (symlink(target, link) != 0) {
		fprintf(stderr, "kippu-pn532-emu: symlink %s: %s\n", link, strerror(errno));
		return -1;
	}
	return 0;
}

/* Removes the link only while it still points at our pty. */
static void emu_remove_link(const char *link, const char *target)
{
	char buf[PATH_MAX];
	ssize_t n;

	if (link == NULL)
		return;
	n = readlink(link, buf, sizeof(buf) - 1);
	if (n < 0)
		return;
	buf[n] = '\0';
	if (strcmp(buf, target) == 0)
		unlink(link);
}

static int emu_parse_long(const char *s, long lo, long hi, long *out)
{
	char *end;
	long v;

	errno = 0;
	v = strtol(s, &end, 10);
	if (errno != 0 || end == s || *end != '\0' || v < lo || v > hi)
		return -1;
	*out = v;
	return 0;
}

static void emu_usage(FILE *fp)
{
	fprintf(fp,
	        "usage: kippu-pn532-emu --scenario FILE [--link PATH] [--fault MODE]\n"
	        "                       [--fault-after N] [--slow-ms N] [--log FILE]\n"
	        "       kippu-pn532-emu -h | --help | --version\n"
	        "  MODE: truncate | checksum | garbage | noack\n"
	        "  SIGUSR1 takes the card away, SIGUSR2 toggles 'vanished', SIGTERM ends\n");
}

/* What the command line asks for. */
struct emu_opts {
	const char *scenario, *link, *log_path;
	enum emu_fault fault;
	unsigned long fault_after;
	int slow_ms;
};

static const struct {
	const char *name;
	enum emu_fault fault;
} emu_faults[] = {
	{ "truncate", EMU_FAULT_TRUNCATE },
	{ "checksum", EMU_FAULT_CHECKSUM },
	{ "garbage", EMU_FAULT_GARBAGE },
	{ "noack", EMU_FAULT_NOACK },
	{ "none", EMU_FAULT_NONE },
};

/* One option into o: 0, or -1 for a bad value. */
static int emu_take_opt(struct emu_opts *o, int c, const char *v)
{
	long n;

	switch (c) {
	case 's': o->scenario = v; return 0;
	case 'l': o->link = v; return 0;
	case 'g': o->log_path = v; return 0;
	case 'f':
		for (size_t i = 0; i < sizeof(emu_faults) / sizeof(emu_faults[0]); i++) {
			if (strcmp(v, emu_faults[i].name) == 0) {
				o->fault = emu_faults[i].fault;
				return 0;
			}
		}
		return -1;
	case 'a':
		if (emu_parse_long(v, 1, LONG_MAX, &n) != 0)
			return -1;
		o->fault_after = (unsigned long)n;
		return 0;
	case 'w':
		if (emu_parse_long(v, 0, 600000, &n) != 0)
			return -1;
		o->slow_ms = (int)n;
		return 0;
	}
	return -1;
}

/* The command line into o: -1 to go on, or the exit status after the usage (--help: 0). */
static int emu_parse_args(int argc, char **argv, struct emu_opts *o)
{
	static const struct option opts[] = {
		{ "scenario", required_argument, NULL, 's' },
		{ "link", required_argument, NULL, 'l' },
		{ "fault", required_argument, NULL, 'f' },
		{ "fault-after", required_argument, NULL, 'a' },
		{ "slow-ms", required_argument, NULL, 'w' },
		{ "log", required_argument, NULL, 'g' },
		{ "help", no_argument, NULL, 'h' },
		{ "version", no_argument, NULL, 'V' },
		{ NULL, 0, NULL, 0 },
	};
	static char prog[] = "kippu-pn532-emu";
	int c, li = 0;

	memset(o, 0, sizeof(*o));
	o->fault_after = 1;
	argv[0] = prog;                  /* getopt's messages say "kippu-pn532-emu: ..." */
	while ((c = getopt_long(argc, argv, "h", opts, &li)) != -1) {
		if (c == 'h') {
			emu_usage(stdout);
			return 0;
		}
		if (c == 'V') {
			printf("kippu-pn532-emu (kippu) %s\n", KP_VERSION);
			return 0;
		}
		if (emu_take_opt(o, c, optarg) != 0) {
			if (c != '?')
				fprintf(stderr, "kippu-pn532-emu: --%s: bad value '%s'\n", opts[li].name,
				        optarg);
			emu_usage(stderr);
			return 2;
		}
	}
	if (o->scenario == NULL || optind != argc || strchr(o->scenario, '\n') != NULL ||
	    strlen(o->scenario) > PATH_MAX) {
		fprintf(stderr, "kippu-pn532-emu: %s\n",
		        o->scenario == NULL ? "--scenario FILE is required" :
		        optind != argc ? "unexpected argument" : "--scenario: bad file name");
		emu_usage(stderr);
		return 2;
	}
	return -1;
}

/* Signals are only let in while waiting in ppoll, so none is lost between a check and the
 * wait: blocked here, unblocked holds the mask to wait with. */
static void emu_setup_signals(sigset_t *unblocked)
{
	static const int sigs[] = { SIGTERM, SIGINT, SIGHUP, SIGUSR1, SIGUSR2 };
	struct sigaction sa;
	sigset_t block;

	sigemptyset(&block);
	for (size_t i = 0; i < sizeof(sigs) / sizeof(sigs[0]); i++)
		sigaddset(&block, sigs[i]);
	sigprocmask(SIG_BLOCK, &block, unblocked);
	for (size_t i = 0; i < sizeof(sigs) / sizeof(sigs[0]); i++)
		sigdelset(unblocked, sigs[i]);
	memset(&sa, 0, sizeof(sa));
	sa.sa_handler = emu_on_signal;
	sigemptyset(&sa.sa_mask);
	for (size_t i = 0; i < sizeof(sigs) / sizeof(sigs[0]); i++)
		sigaction(sigs[i], &sa, NULL);
	signal(SIGPIPE, SIG_IGN);
}

/* The log, the scenario's reader and the pty: 0, or -1 after saying why. */
static int emu_open(struct emu *e, const struct emu_opts *o)
{
	char conn[PATH_MAX + 8], err[600];
	int rc;

	if (o->log_path != NULL) {
		e->log = strcmp(o->log_path, "-") == 0 ? stderr : kp_hal_open_log(o->log_path);
		if (e->log == NULL) {
			fprintf(stderr, "kippu-pn532-emu: %s: %s\n", o->log_path, strerror(errno));
			return -1;
		}
	}
	snprintf(conn, sizeof(conn), "mock:%s", o->scenario);
	rc = kp_reader_open_err(&e->reader, conn, err, sizeof(err));
	if (rc != KP_HAL_OK) {
		if (err[0] != '\0')
			fprintf(stderr, "%s\n", err);
		fprintf(stderr, "kippu-pn532-emu: %s: %s\n", o->scenario, kp_hal_strerror(rc));
		return -1;
	}
	return emu_open_pty(e);
}

/* Answers the host's frames until a signal ends it. */
static void emu_serve(struct emu *e, const sigset_t *unblocked)
{
	while (!emu_stop) {
		struct emu_frame fr;
		enum emu_frame_kind k;
		int wait_ms = -1;

		if (e->pending.kind == EMU_FR_CMD) {
			fr = e->pending;
			e->pending.kind = EMU_FR_NONE;
			emu_handle(e, &fr, unblocked);
			continue;
		}
		k = e->vanished ? EMU_FR_NONE : emu_parse(e, &fr);
		if (k == EMU_FR_CMD) {
			emu_handle(e, &fr, unblocked);
			continue;
		}
		if (k == EMU_FR_NACK) {
			emu_log(e, "NACK: last reply again");
			emu_write(e, e->last, e->last_len);
			continue;
		}
		if (k == EMU_FR_ACK)
			continue;             /* nothing running to abort */
		if (e->in_len > 0) {
			/* A frame cut short: drop it once the host has gone quiet. */
			int64_t idle = emu_mono_ms() - e->in_last_ms;

			if (idle >= EMU_PARTIAL_MS) {
				emu_log(e, "incomplete frame dropped");
				emu_consume(e, 1);
				continue;
			}
			wait_ms = (int)(EMU_PARTIAL_MS - idle);
		}
		emu_wait_input(e, wait_ms, unblocked);
		emu_signals(e);
	}
}

int main(int argc, char **argv)
{
	struct emu_opts o;
	struct emu *e = NULL;
	sigset_t unblocked;
	int linked = 0, status = 1;

	kp_terminal_register_mock_signer();

	e = calloc(1, sizeof(*e));
	if (e == NULL) {
		fprintf(stderr, "kippu-pn532-emu: out of memory\n");
		return 1;
	}
	e->master = e->slave = -1;
	e->mx_rty_passive = 0xFF;         /* the chip's power-on default */
	e->rng = EMU_RNG_SEED;
	e->t0_ms = emu_mono_ms();
	status = emu_parse_args(argc, argv, &o);
	if (status >= 0)
		goto out;
	status = 1;
	e->fault = o.fault;
	e->fault_after = o.fault_after;
	e->slow_ms = o.slow_ms;
	if (emu_open(e, &o) != 0)
		goto out;
	emu_setup_signals(&unblocked);
	if (o.link != NULL) {
		if (emu_make_link(o.link, e->pty) != 0)
			goto out;
		linked = 1;
	}
	for (size_t i = 0; i < sizeof(emu_reg_defaults) / sizeof(emu_reg_defaults[0]); i++)
		emu_reg_write(e, emu_reg_defaults[i].addr, emu_reg_defaults[i].val);
	printf("kippu-pn532-emu: pty %s\n", e->pty);
	fflush(stdout);
	emu_log(e, "pty %s, scenario %s", e->pty, o.scenario);
	emu_serve(e, &unblocked);
	emu_log(e, "exit");
	status = 0;
out:
	if (linked)
		emu_remove_link(o.link, e->pty);
	if (e->slave >= 0)
		close(e->slave);
	if (e->master >= 0)
		close(e->master);
	kp_reader_close(e->reader);
	if (e->log != NULL && e->log != stderr)
		fclose(e->log);
	free(e);
	return status;
}
