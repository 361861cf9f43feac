/* SPDX-License-Identifier: Apache-2.0 */
/* The server's gates (backend-sync/backend/gate.c): at most `slots` threads inside, and a
 * thread whose ticket came up while it was not running still goes through when it runs.
 * kippu-loadgen found the second one missing: with two slots a later batch passed the gate
 * before an earlier one's thread had woken up, `done` passed that ticket, `ticket - done`
 * wrapped around and the thread waited for ever. The test plays that order with tickets
 * taken and waited for apart (kp_gate_ticket, kp_gate_wait); the late waiter runs in a
 * thread of its own, which must get through (a bounded join, so the old code fails the test
 * instead of hanging it). */
#include <errno.h>
#include <pthread.h>
#include <sched.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <time.h>

#include <cmocka.h>

#include "gate.h"

struct late { struct kp_gate *g; unsigned long ticket; };

static void *late_main(void *arg)
{
	struct late *l = arg;

	kp_gate_wait(l->g, l->ticket);
	kp_gate_leave(l->g);
	return NULL;
}

/* Joins th within 10 s: 0, or ETIMEDOUT while it is still waiting (then it is abandoned). */
static int join_within(pthread_t th)
{
	struct timespec ts;

	clock_gettime(CLOCK_REALTIME, &ts);
	ts.tv_sec += 10;
	return pthread_timedjoin_np(th, NULL, &ts);
}

static void test_late_waiter_goes_through(void **state)
{
	static struct kp_gate g;        /* static: an abandoned thread may still use it */
	static struct late l;
	unsigned long t0, t1, t3;
	pthread_t th;

	(void)state;
	kp_gate_init(&g, 2);
	t0 = kp_gate_ticket(&g);
	kp_gate_wait(&g, t0);
	t1 = kp_gate_ticket(&g);
	kp_gate_wait(&g, t1);
	/* ticket 2 is taken, but its thread does not run yet */
	l.g = &g;
	l.ticket = kp_gate_ticket(&g);
	assert_int_equal(l.ticket, 2);
	t3 = kp_gate_ticket(&g);
	kp_gate_leave(&g);              /* t0 out: ticket 2's turn, it sleeps on */
	kp_gate_leave(&g);              /* t1 out: ticket 3's turn too */
	kp_gate_wait(&g, t3);           /* ticket 3 goes through and out before ticket 2 */
	kp_gate_leave(&g);
	assert_int_equal(g.done, 3);
	assert_true(kp_gate_busy(&g));  /* ticket 2 is still to come */
	assert_int_equal(pthread_create(&th, NULL, late_main, &l), 0);
	assert_int_equal(join_within(th), 0);
	assert_false(kp_gate_busy(&g));
	kp_gate_destroy(&g);
}

/* Many threads through a gate of 2: never more than 2 inside, all get through. */
static struct kp_gate many_g;
static pthread_mutex_t many_m = PTHREAD_MUTEX_INITIALIZER;
static int inside, most;

static void *many_main(void *arg)
{
	(void)arg;
	for (int i = 0; i < 200; i++) {
		kp_gate_enter(&many_g);
		pthread_mutex_lock(&many_m);
		if (++inside > most)
			most = inside;
		pthread_mutex_unlock(&many_m);
		sched_yield();
		pthread_mutex_lock(&many_m);
		inside--;
		pthread_mutex_unlock(&many_m);
		kp_gate_leave(&many_g);
	}
	return NULL;
}

static void test_at_most_slots_inside(void **state)
{
	pthread_t th[16];

	(void)state;
	kp_gate_init(&many_g, 2);
	for (int i = 0; i < 16; i++)
		assert_int_equal(pthread_create(&th[i], NULL, many_main, NULL), 0);
	for (int i = 0; i < 16; i++)
		assert_int_equal(join_within(th[i]), 0);
	assert_true(most >= 1 && most <= 2);
	assert_int_equal(many_g.done, 16 * 200);
	assert_false(kp_gate_busy(&many_g));
	kp_gate_destroy(&many_g);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_late_waiter_goes_through),
		cmocka_unit_test(test_at_most_slots_inside),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
