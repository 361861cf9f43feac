/* SPDX-License-Identifier: Apache-2.0 */
/* The fault proxy of the tests (faultproxy.h). */
#include "faultproxy.h"

#include <errno.h>
#include <poll.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "kp_tls.h"

#define POLL_MS 50                      /* how often a connection looks at the stop flag */

struct faultproxy {
	struct fp_opts o;
	int listen_fd, port;
	volatile int stop;
	unsigned long next;                 /* connection number */
	int live;                           /* connection threads running */
	struct fp_stats st;
	pthread_mutex_t m;
	pthread_cond_t done;
	pthread_t th;
};

struct fp_conn {
	struct faultproxy *p;
	int fd[2];                          /* 0: the client's, 1: upstream */
	enum fp_fault f;
	int dir;                            /* the faulted direction: 0 client -> upstream */
	size_t at;                          /* N */
	size_t moved[2];
	int applied, held;
	uint64_t rng;
};

static const char *const names[FP_KINDS] = {
	"pass", "drop", "delay", "duplicate", "reorder", "cut", "halfopen",
};

const char *fp_fault_name(enum fp_fault f)
{
	return (unsigned)f < FP_KINDS ? names[f] : "?";
}

static uint64_t splitmix64(uint64_t *x)
{
	uint64_t z = (*x += 0x9e3779b97f4a7c15ull);

	z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
	z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
	return z ^ (z >> 31);
}

static void nap_ms(int ms)
{
	struct timespec ts = { ms / 1000, (long)(ms % 1000) * 1000000L };

	while (nanosleep(&ts, &ts) != 0 && errno == EINTR)
		;
}

static int64_t mono_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static int send_all(int fd, const char *buf, size_t n)
{
	while (n > 0) {
		ssize_t w = send(fd, buf, n, MSG_NOSIGNAL);

		if (w < 0 && errno == EINTR)
			continue;
		if (w <= 0)
			return -1;
		buf += w;
		n -= (size_t)w;
	}
	return 0;
}

static void note_applied(struct fp_conn *c)
{
	c->applied = 1;
	pthread_mutex_lock(&c->p->m);
	c->p->st.bit[c->f]++;
	pthread_mutex_unlock(&c->p->m);
}

/* Forwards a chunk read from side s, applying the connection's fault. 0: go on, 1: the
 * connection ends here (cut, half-open), -1: a write failed. */
static int forward(struct fp_conn *c, int s, const char *buf, size_t n)
{
	int out = c->fd[1 - s];
	size_t k;

	if (c->f == FP_DELAY) {
		if (!c->applied)
			note_applied(c);
		nap_ms(1 + (int)(splitmix64(&c->rng) % (uint64_t)c->p->o.delay_max_ms));
	}
	if (c->f == FP_PASS || c->f == FP_DELAY || s != c->dir || c->applied ||
	    c->moved[s] + n <= c->at || (c->f == FP_REORDER && n < 2)) {
		c->moved[s] += n;
		return send_all(out, buf, n);
	}
	k = c->at - c->moved[s];
	c->moved[s] += n;
	note_applied(c);
	switch (c->f) {
	case FP_DROP:
		return 0;
	case FP_DUP:
		return send_all(out, buf, n) != 0 ? -1 : send_all(out, buf, n);
	case FP_REORDER:
		return send_all(out, buf + n / 2, n - n / 2) != 0 ? -1 : send_all(out, buf, n / 2);
	case FP_HALFOPEN:
		c->held = 1;
		/* fall through */
	default:                             /* FP_CUT */
		return send_all(out, buf, k) != 0 ? -1 : 1;
	}
}

static void *conn_main(void *arg)
{
	struct fp_conn *c = arg;
	struct faultproxy *p = c->p;
	char buf[4096];
	int end = 0;

	while (!p->stop && !end) {
		struct pollfd pf[2] = { { c->fd[0], POLLIN, 0 }, { c->fd[1], POLLIN, 0 } };

		if (poll(pf, 2, POLL_MS) <= 0)
			continue;
		for (int s = 0; s < 2 && !end; s++) {
			ssize_t n;

			if (pf[s].revents == 0)
				continue;
			n = read(c->fd[s], buf, sizeof(buf));
			end = n <= 0 || forward(c, s, buf, (size_t)n) != 0;
		}
	}
	if (c->held) {                       /* silent, both sockets open */
		int64_t until = mono_ms() + p->o.hold_ms;

		while (!p->stop && mono_ms() < until)
			nap_ms(POLL_MS);
	}
	close(c->fd[0]);
	close(c->fd[1]);
	pthread_mutex_lock(&p->m);
	if (--p->live == 0)
		pthread_cond_broadcast(&p->done);
	pthread_mutex_unlock(&p->m);
	free(c);
	return NULL;
}

static struct fp_conn *conn_new(struct faultproxy *p, int fd)
{
	struct fp_conn *c = calloc(1, sizeof(*c));
	char port[16];
	uint64_t r;

	if (c == NULL)
		return NULL;
	snprintf(port, sizeof(port), "%d", p->o.upstream_port);
	if (kp_tcp_connect("127.0.0.1", port, 2000, &c->fd[1]) != 0) {
		free(c);
		return NULL;
	}
	c->p = p;
	c->fd[0] = fd;
	pthread_mutex_lock(&p->m);
	c->rng = p->next++;
	pthread_mutex_unlock(&p->m);
	/* the seed mixed first: seeds n and n + 1 must not give the same faults shifted by one */
	r = p->o.seed;
	c->rng += splitmix64(&r);
	r = splitmix64(&c->rng);
	c->f = (int)(r % 100) < p->o.fault_pct ? (enum fp_fault)(1 + (r >> 8) % (FP_KINDS - 1))
	                                         : FP_PASS;
	c->dir = (int)((r >> 16) & 1);
	c->at = (size_t)((r >> 20) % (uint64_t)p->o.max_byte);
	return c;
}

static void *accept_main(void *arg)
{
	struct faultproxy *p = arg;

	while (!p->stop) {
		struct fp_conn *c;
		pthread_t th;
		pthread_attr_t attr;
		int fd = -1;

		if (kp_tcp_accept(p->listen_fd, POLL_MS, &fd) != 0)
			continue;
		if ((c = conn_new(p, fd)) == NULL) {
			close(fd);
			continue;
		}
		pthread_mutex_lock(&p->m);
		p->st.conns++;
		p->st.faults[c->f]++;
		p->live++;
		pthread_mutex_unlock(&p->m);
		pthread_attr_init(&attr);
		pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
		pthread_attr_setstacksize(&attr, 128 * 1024);
		if (pthread_create(&th, &attr, conn_main, c) != 0) {
			close(c->fd[0]);
			close(c->fd[1]);
			free(c);
			pthread_mutex_lock(&p->m);
			p->live--;
			pthread_mutex_unlock(&p->m);
		}
		pthread_attr_destroy(&attr);
	}
	return NULL;
}

struct faultproxy *fp_start(const struct fp_opts *o)
{
	struct faultproxy *p = calloc(1, sizeof(*p));

	if (p == NULL)
		return NULL;
	p->o = *o;
	if (p->o.max_byte <= 0)
		p->o.max_byte = 1;
	if (p->o.delay_max_ms <= 0)
		p->o.delay_max_ms = 1;
	pthread_mutex_init(&p->m, NULL);
	pthread_cond_init(&p->done, NULL);
	if (kp_tcp_listen("127.0.0.1", "0", &p->listen_fd, &p->port) != 0 ||
	    pthread_create(&p->th, NULL, accept_main, p) != 0) {
		free(p);
		return NULL;
	}
	return p;
}

int fp_port(const struct faultproxy *p)
{
	return p->port;
}

void fp_stats(struct faultproxy *p, struct fp_stats *out)
{
	pthread_mutex_lock(&p->m);
	*out = p->st;
	pthread_mutex_unlock(&p->m);
}

void fp_stop(struct faultproxy *p)
{
	if (p == NULL)
		return;
	p->stop = 1;
	pthread_join(p->th, NULL);
	pthread_mutex_lock(&p->m);
	while (p->live > 0)
		pthread_cond_wait(&p->done, &p->m);
	pthread_mutex_unlock(&p->m);
	close(p->listen_fd);
	pthread_mutex_destroy(&p->m);
	pthread_cond_destroy(&p->done);
	free(p);
}
