// SPDX-License-Identifier: GPL-2.0
/*
 * Fault injection (issue 15, part 2): every allocation a VMM's use of /dev/vhost-net-zc
 * reaches from its own thread, failed in turn with fail-nth (/proc/thread-self/fail-nth,
 * failslab and fail_page_alloc without their "ignore GFP_KERNEL" defaults).
 *
 * A VMM's life with the device is a list of steps: open, SET_OWNER, SET_FEATURES,
 * SET_MEM_TABLE, each virtqueue's SET_VRING_*, SET_BACKEND (which creates the zero-copy
 * pool), a zero-copy send into a plugged qdisc, the reset that offlines the expired
 * buffers (SET_BACKEND -1), VHOST_NET_ZC_VM_RESET, close. For each step and each N, the
 * steps before it run unharmed, then the step runs with its N-th fault point failing;
 * N grows until the step completes without reaching an N-th point. The fault points of a
 * step are those of the thread that does its work: the caller's for the ioctls, the
 * device's worker thread (vhost-<pid>, whose fail-nth /proc/<pid>/task/<tid>/fail-nth
 * sets) for the send, which the caller only kicks. An injected failure
 * must give a clean errno (ENOMEM, or EINTR/EFAULT where the kernel maps it so) or none,
 * the step must then succeed when retried, and the rest of the life must go on: every
 * head sent comes back exactly once, and closing the device never hangs. The kernel log
 * (no splat) and kmemleak (no leak) are checked by the suite afterwards.
 */
#define _GNU_SOURCE
#include <fcntl.h>
#include <sys/ioctl.h>
#include <linux/virtio_config.h>

#include "../include/uapi/linux/vhost_net_zc.h"
#include "zc_env.h"

#define TIMEOUT_MS	2	/* deadlines: the reset finds its buffers expired */
#define FRAMES		2
#define MAX_N		2000	/* more fault points than any step has */

/* The steps of a VMM's life with the device. */
enum step {
	S_OPEN, S_OWNER, S_FEATURES, S_MEM, S_VQ_RX, S_VQ_TX, S_TIMEOUT, S_BACKEND, S_SEND,
	S_RESET, S_RESEND, S_VM_RESET, S_CLOSE, NSTEPS,
};

static const char *const step_name[NSTEPS] = {
	"open", "SET_OWNER", "SET_FEATURES", "SET_MEM_TABLE", "SET_VRING_* (RX)",
	"SET_VRING_* (TX)", "SET_TIMEOUT", "SET_BACKEND", "zero-copy send",
	"reset (SET_BACKEND -1)", "SET_BACKEND again", "VM_RESET", "close",
};

struct life {
	struct vg_guest g;
	int tap_fd;
	int heads[8 * FRAMES];	/* posted, in order */
	int posted;
};

/* Posts FRAMES frames into the plugged port and waits until they are in flight. */
static int send_frames(struct life *l)
{
	if (l->posted + FRAMES > (int)(sizeof(l->heads) / sizeof(l->heads[0])))
		return -ENOSPC;
	for (int i = 0; i < FRAMES; i++) {
		int h = send_frame(&l->g, mac_held, ZC_LEN, l->posted, NULL);

		if (h < 0)
			return h;
		l->heads[l->posted++] = h;
	}
	return 0;
}

static long stat_sent(int fd)
{
	struct vhost_net_zc_stats st;

	if (ioctl(fd, VHOST_NET_ZC_GET_STATS, &st))
		return -1;
	return st.sent_zerocopy + st.sent_copy;
}

/* Waits until the worker has sent @n buffers since the device was opened: 0, or -ETIME. */
static int wait_sent(int fd, long n)
{
	for (long end = now_ms() + 3000; now_ms() < end; usleep(5000))
		if (stat_sent(fd) >= n)
			return 0;
	return -ETIME;
}

/* Runs step @s of @l; returns 0 or -errno. */
static int run_step(struct life *l, enum step s)
{
	struct vg_guest *g = &l->g;
	uint32_t v;

	switch (s) {
	case S_OPEN:
		return vg_open(g, "/dev/vhost-net-zc", 1 << 20);
	case S_OWNER:
		return vg_set_owner(g);
	case S_FEATURES:
		return vg_set_features(g, 1ULL << VIRTIO_F_VERSION_1);
	case S_MEM:
		return vg_set_mem_table(g);
	case S_VQ_RX:
		return vg_setup_vq(g, VG_RX, RING);
	case S_VQ_TX:
		return vg_setup_vq(g, VG_TX, RING);
	case S_TIMEOUT:
		v = TIMEOUT_MS;
		return ioctl(g->fd, VHOST_NET_ZC_SET_TIMEOUT, &v) ? -errno : 0;
	case S_BACKEND:
	case S_RESEND:
		return vg_set_backend(g, VG_TX, l->tap_fd);
	case S_SEND:
		return send_frames(l);
	case S_RESET:
		usleep(2 * TIMEOUT_MS * 1000);	/* past the deadlines */
		return vg_set_backend(g, VG_TX, -1);
	case S_VM_RESET:
		/* Buffers in flight and past their deadlines, for the reset to offline. */
		if (send_frames(l) || wait_sent(g->fd, l->posted))
			return -EIO;
		usleep(2 * TIMEOUT_MS * 1000);
		v = 0;
		return ioctl(g->fd, VHOST_NET_ZC_VM_RESET, &v) ? -errno : 0;
	case S_CLOSE:
		vg_close(g);
		return 0;
	default:
		return -EINVAL;
	}
}

/*
 * fail-nth of a thread: arms its N-th fault point, or reads what is left of N (0: the
 * fault fired). This thread's, or the device worker's for the send.
 */
static int nth_fd = -1;

static void nth_arm_fd(int fd, unsigned int n)
{
	char buf[16];
	int len = snprintf(buf, sizeof(buf), "%u", n);

	if (pwrite(fd, buf, len, 0) != len)
		abort();
}

static long nth_left_fd(int fd)
{
	char buf[16] = "";

	if (pread(fd, buf, sizeof(buf) - 1, 0) <= 0)
		return -1;
	return atol(buf);
}

static void nth_arm(unsigned int n)
{
	nth_arm_fd(nth_fd, n);
}

static long nth_left(void)
{
	return nth_left_fd(nth_fd);
}

/* The fail-nth file of this process's vhost worker thread (vhost-<pid>), or -1. */
static int worker_nth_open(void)
{
	char want[32], path[96], comm[32];
	int fd = -1;

	snprintf(want, sizeof(want), "vhost-%d\n", getpid());
	for (int tid = getpid(); tid < getpid() + 4096 && fd < 0; tid++) {
		FILE *f;

		snprintf(path, sizeof(path), "/proc/%d/task/%d/comm", getpid(), tid);
		f = fopen(path, "r");
		if (!f)
			continue;
		if (fgets(comm, sizeof(comm), f) && !strcmp(comm, want)) {
			snprintf(path, sizeof(path), "/proc/%d/task/%d/fail-nth", getpid(), tid);
			fd = open(path, O_RDWR | O_CLOEXEC);
		}
		fclose(f);
	}
	return fd;
}

/*
 * The send, with the worker's N-th fault point armed: kicks FRAMES frames and waits until
 * the worker has sent them (a failed allocation makes it retry or drop one: either way the
 * head must come back once). Returns what is left of N, or -1.
 */
static long send_faulted(struct life *l, unsigned int n)
{
	int wfd = worker_nth_open();
	long before, left;

	if (wfd < 0)
		return -1;
	before = stat_sent(l->g.fd);
	nth_arm_fd(wfd, n);
	if (send_frames(l)) {
		nth_arm_fd(wfd, 0);
		close(wfd);
		return -1;
	}
	wait_sent(l->g.fd, before + FRAMES);
	usleep(20000);	/* a dropped frame is not counted as sent: let the worker settle */
	left = nth_left_fd(wfd);
	nth_arm_fd(wfd, 0);
	close(wfd);
	return left;
}

/* An errno a failed allocation may surface as. */
static bool clean_errno(int e)
{
	return e == -ENOMEM || e == -EINTR || e == -EFAULT || e == -EAGAIN;
}

FIXTURE(faults) {
	struct zc_env e;
};

FIXTURE_SETUP(faults)
{
	static const char *const knobs[][2] = {
		/* GFP_KERNEL allocations too, order 0 pages too; one line per fault, no stack. */
		{ "/sys/kernel/debug/failslab/ignore-gfp-wait", "N" },
		{ "/sys/kernel/debug/fail_page_alloc/ignore-gfp-wait", "N" },
		{ "/sys/kernel/debug/fail_page_alloc/min-order", "0" },
		{ "/sys/kernel/debug/failslab/verbose", "1" },
		{ "/sys/kernel/debug/fail_page_alloc/verbose", "1" },
	};

	if (access("/proc/thread-self/fail-nth", W_OK))
		SKIP(return, "no fail-nth: CONFIG_FAULT_INJECTION is off");
	for (size_t i = 0; i < sizeof(knobs) / sizeof(knobs[0]); i++) {
		ASSERT_EQ(0, write_text(knobs[i][0], knobs[i][1])) TH_LOG("%s", knobs[i][0]);
	}
	/*
	 * A failed page allocation may print its warning with a stack trace (warn_alloc());
	 * the suite's kernel-log check lets such reports pass between these two lines only.
	 */
	write_text("/dev/kmsg", "vnzc_faults: fault injection begins\n");
	/* The bridge with the plugged port; its own device is not used. */
	env_setup(_metadata, &self->e, 1ULL << VIRTIO_F_VERSION_1);
	vg_close(&self->e.g);
	nth_fd = open("/proc/thread-self/fail-nth", O_RDWR | O_CLOEXEC);
	ASSERT_LE(0, nth_fd);
}

FIXTURE_TEARDOWN(faults)
{
	if (nth_fd >= 0)
		close(nth_fd);
	write_text("/sys/kernel/debug/failslab/ignore-gfp-wait", "Y");
	write_text("/sys/kernel/debug/fail_page_alloc/ignore-gfp-wait", "Y");
	write_text("/sys/kernel/debug/fail_page_alloc/min-order", "1");
	write_text("/dev/kmsg", "vnzc_faults: fault injection ends\n");
	env_teardown(_metadata, &self->e);
}

/* Releases the plug, reaps until every posted head is back, plugs again. */
static void heads_back(struct __test_metadata *_metadata, struct life *l, const char *when)
{
	uint32_t ids[64];
	int n = 0;

	plug(false);
	for (long end = now_ms() + 5000; n < l->posted && now_ms() < end; )
		n += reap_all(&l->g, ids + n, 64 - n, 100);
	n += reap_all(&l->g, ids + n, 64 - n, 50);
	plug(true);
	EXPECT_EQ(l->posted, n) TH_LOG("%s: %d of %d heads back", when, n, l->posted);
	for (int i = 0; i < l->posted; i++) {
		int seen = 0;

		for (int j = 0; j < n; j++)
			seen += ids[j] == (uint32_t)l->heads[i];
		EXPECT_EQ(1, seen) TH_LOG("%s: head %d returned %d times", when, l->heads[i], seen);
	}
}

TEST_F_TIMEOUT(faults, sweep, 1800)
{
	long points[NSTEPS] = { 0 }, failed[NSTEPS] = { 0 }, total = 0;
	bool swept[NSTEPS] = { false };
	int odd = 0, findings = 0;

	for (int s = 0; s < NSTEPS; s++) {
		for (unsigned int n = 1; n <= MAX_N; n++) {
			struct life l = { .tap_fd = self->e.tap_fd };
			long left;
			int r;

			memset(&l.g, 0, sizeof(l.g));
			l.g.fd = -1;
			for (int p = 0; p < s; p++) {
				ASSERT_EQ(0, run_step(&l, p)) TH_LOG("%s, unharmed", step_name[p]);
			}
			if (s == S_SEND) {
				left = send_faulted(&l, n);
				ASSERT_LE(0, left) TH_LOG("no vhost worker thread to inject into");
				r = 0;
			} else {
				nth_arm(n);
				r = run_step(&l, s);
				left = nth_left();
				nth_arm(0);
			}
			if (left != 0) {
				/* No N-th point: the step is swept. */
				ASSERT_EQ(0, r) TH_LOG("%s failed with no fault injected: %s",
						       step_name[s], strerror(-r));
				if (s != S_CLOSE) {
					for (int p = s + 1; p < S_CLOSE; p++) {
						ASSERT_EQ(0, run_step(&l, p));
					}
					if (l.posted)
						heads_back(_metadata, &l, step_name[s]);
					vg_close(&l.g);
				}
				swept[s] = true;
				break;
			}
			points[s]++;
			total++;
			if (r) {
				failed[s]++;
				if (!clean_errno(r) && odd++ < 10)
					TH_LOG("%s, fault %u: errno %d (%s)", step_name[s], n, -r,
					       strerror(-r));
				EXPECT_TRUE(clean_errno(r));
			}
			/* The device still works: the step again, unharmed, and the rest. */
			if (s == S_OPEN && r) {
				ASSERT_EQ(0, run_step(&l, s));
			} else if (r && s != S_CLOSE && s != S_SEND) {
				r = run_step(&l, s);
				EXPECT_EQ(0, r) TH_LOG("%s again, fault %u before: %s", step_name[s],
						       n, strerror(-r));
			}
			if (s == S_CLOSE)
				continue;
			for (int p = s + 1; p < S_CLOSE; p++) {
				r = run_step(&l, p);
				EXPECT_EQ(0, r) TH_LOG("%s after a fault in %s: %s", step_name[p],
						       step_name[s], strerror(-r));
			}
			if (l.posted)
				heads_back(_metadata, &l, step_name[s]);
			vg_close(&l.g);
			/* Go on past a finding, to report them all; not past a cascade of them. */
			if (_metadata->exit_code && ++findings > 20)
				return;
		}
	}
	for (int s = 0; s < NSTEPS; s++) {
		TH_LOG("%-24s %4ld fault points, %4ld made the step fail", step_name[s], points[s],
		       failed[s]);
		EXPECT_TRUE(swept[s]) TH_LOG("%s: more than %d fault points", step_name[s], MAX_N);
	}
	TH_LOG("%ld fault points swept", total);
	/* Each step that allocates has points; a sweep that reached none injected nothing. */
	EXPECT_LT(0, points[S_OPEN]);
	EXPECT_LT(0, points[S_OWNER]);
	EXPECT_LT(0, points[S_MEM]);
	EXPECT_LT(0, points[S_BACKEND]);
	EXPECT_LT(0, points[S_SEND]);
}

TEST_HARNESS_MAIN
