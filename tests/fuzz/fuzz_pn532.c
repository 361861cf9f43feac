/* SPDX-License-Identifier: Apache-2.0 */
/* The PN532 host frames kippu-pn532-emu reads (tools/pn532_emu.c, included here with its
 * main renamed): the input is the byte stream a host sends, parsed into frames (emu_parse)
 * and answered as the emulator's serving loop does (emu_handle: ACK/NACK, InListPassive-
 * Target, InDataExchange to the scenario's cards, registers, RF configuration, InAutoPoll,
 * diagnose ...), over a socket pair whose other end this target drains. Every wait of the
 * emulator (a poll until a card comes, InAutoPoll's period) is cut short at once by ACKs
 * the target queues before each command, as a host aborting it: no wall-clock sleep. The
 * reader is a fresh mock reader on tests/fuzz/data/pn532-scenario.txt for each input. */
#include "fuzzutil.h"

#include <sys/socket.h>

#define main kp_pn532_emu_main
#include "../../tools/pn532_emu.c"
#undef main

static void drain(int fd)
{
	uint8_t junk[1024];

	while (recv(fd, junk, sizeof(junk), MSG_DONTWAIT) > 0)
		;
}

/* ACKs enough to complete any frame cut short at the end of the input (a frame holds at
 * most EMU_WIRE_MAX bytes), so that one of them is read as an ACK. */
static void queue_abort(int fd)
{
	static const uint8_t ack[] = { 0x00, 0x00, 0xFF, 0x00, 0xFF, 0x00 };
	uint8_t acks[sizeof(ack) * (EMU_WIRE_MAX / sizeof(ack) + 2)];

	for (size_t i = 0; i + sizeof(ack) <= sizeof(acks); i += sizeof(ack))
		memcpy(acks + i, ack, sizeof(ack));
	(void)!write(fd, acks, sizeof(acks));
}

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
	kp_terminal_register_mock_signer();
	return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	static struct emu e;
	struct emu_frame fr;
	sigset_t unblocked;
	int sv[2];
	int guard = 0;

	if (size > EMU_IN_MAX)
		return 0;
	memset(&e, 0, sizeof(e));
	e.mx_rty_passive = 0xFF;
	e.rng = EMU_RNG_SEED;
	if (kp_reader_open(&e.reader, "mock:tests/fuzz/data/pn532-scenario.txt") != KP_HAL_OK)
		return 0;               /* run from elsewhere than the top of the tree */
	if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK, 0, sv) != 0)
		abort();
	e.master = sv[0];
	e.slave = -1;
	sigemptyset(&unblocked);
	memcpy(e.in, data, size);
	e.in_len = size;
	while (guard++ < 1000) {
		enum emu_frame_kind k;

		if (e.pending.kind == EMU_FR_CMD) {
			fr = e.pending;
			e.pending.kind = EMU_FR_NONE;
		} else {
			k = emu_parse(&e, &fr);
			if (k == EMU_FR_NACK)
				emu_write(&e, e.last, e.last_len);
			if (k == EMU_FR_NONE)
				break;
			if (k != EMU_FR_CMD)
				continue;
		}
		queue_abort(sv[1]);
		emu_handle(&e, &fr, &unblocked);
		drain(sv[1]);
	}
	kp_reader_close(e.reader);
	close(sv[0]);
	close(sv[1]);
	return 0;
}
