/* SPDX-License-Identifier: Apache-2.0 */
/* The server's first-come first-served gates (gate.h). */
#include "gate.h"

void kp_gate_init(struct kp_gate *g, unsigned long slots)
{
	pthread_mutex_init(&g->m, NULL);
	pthread_cond_init(&g->c, NULL);
	g->next = g->done = 0;
	g->slots = slots > 0 ? slots : 1;
}

void kp_gate_destroy(struct kp_gate *g)
{
	pthread_mutex_destroy(&g->m);
	pthread_cond_destroy(&g->c);
}

unsigned long kp_gate_ticket(struct kp_gate *g)
{
	unsigned long ticket;

	pthread_mutex_lock(&g->m);
	ticket = g->next++;
	pthread_mutex_unlock(&g->m);
	return ticket;
}

void kp_gate_wait(struct kp_gate *g, unsigned long ticket)
{
	pthread_mutex_lock(&g->m);
	/* At most `slots` inside: the tickets below done + slots, less the done ones. With
	 * more than one slot a later ticket may leave before an earlier one has woken up, so
	 * done can pass a waiting ticket: `ticket - done >= slots`, as it was, then wrapped
	 * around and that thread waited for ever (kippu-loadgen, 50 terminals on 2 cores: next
	 * 394, done 393, 2 slots, one batch's thread asleep until its terminal gave up, then
	 * SIGTERM hung; tests/backend/test_gate.c). */
	while (ticket >= g->done + g->slots)
		pthread_cond_wait(&g->c, &g->m);
	pthread_mutex_unlock(&g->m);
}

void kp_gate_enter(struct kp_gate *g)
{
	kp_gate_wait(g, kp_gate_ticket(g));
}

void kp_gate_leave(struct kp_gate *g)
{
	pthread_mutex_lock(&g->m);
	g->done++;
	pthread_cond_broadcast(&g->c);
	pthread_mutex_unlock(&g->m);
}

int kp_gate_busy(struct kp_gate *g)
{
	int busy;

	pthread_mutex_lock(&g->m);
	busy = g->next != g->done;
	pthread_mutex_unlock(&g->m);
	return busy;
}
