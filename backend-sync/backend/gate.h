/* SPDX-License-Identifier: Apache-2.0 */
/* The server's first-come first-served gates (gate.c; why they exist: server.c's opening
 * comment). Private to backend-sync/backend/ and its tests. */
#ifndef KP_GATE_H
#define KP_GATE_H

#include <pthread.h>

/* Lets `slots` threads through at once, in about the order they arrived (ticket order:
 * strictly with one slot; with more, a thread woken late may go after a later one). */
struct kp_gate {
	pthread_mutex_t m;
	pthread_cond_t c;
	unsigned long next, done, slots;
};

void kp_gate_init(struct kp_gate *g, unsigned long slots);
void kp_gate_destroy(struct kp_gate *g);
/* kp_gate_wait(g, kp_gate_ticket(g)): blocks until the caller may go through. */
void kp_gate_enter(struct kp_gate *g);
/* The two halves of kp_gate_enter: a ticket in arrival order, then the wait for its turn
 * (apart so that a test can take a ticket and wait for it later, as a thread woken late
 * does). */
unsigned long kp_gate_ticket(struct kp_gate *g);
void kp_gate_wait(struct kp_gate *g, unsigned long ticket);
void kp_gate_leave(struct kp_gate *g);
/* 1 while a thread is in the gate or waits for it. */
int kp_gate_busy(struct kp_gate *g);

#endif
