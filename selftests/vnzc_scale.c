// SPDX-License-Identifier: GPL-2.0
/*
 * Scale and endurance (issue 15, part 3): many devices at once, the in-flight cap, and the
 * module loaded and unloaded a thousand times.
 *
 * - many_devices: 1,024 devices open in one process, each with its owner's worker and a
 *   memory table; 64 of them on queues of one multi-queue tap in the bridge fixture, each
 *   with zero-copy buffers held by the plugged qdisc past their deadlines. All 64 reset at
 *   once (SET_BACKEND -1 from 64 threads, one mm): each returns in bounded time, every head
 *   comes back exactly once, and once the qdisc lets go every held page is released.
 * - cap_reached: a ring of 1,024 entries, so the pool's in-flight cap (128, stock's
 *   VHOST_MAX_PEND), not a quarter of the ring, limits: the buffers past the cap are sent
 *   by copy and returned at once; a reset then offlines a full pool.
 * - load_unload_cycles: 100 loads and unloads (VNZC_CYCLES; make soak does 1,000); every
 *   tenth with a device closed while its skbs are still in the plugged qdisc: the module
 *   must refuse to go (EWOULDBLOCK) until the stack has released them, then go.
 * - unload_right_after_close: a device used and closed, the module unloaded at once, 20
 *   times: nothing of a closed device outlives its close() unless an skb holds it.
 *
 * Bounds are for the 2-CPU TCG virtual machine under the debug kernel (KASAN, lockdep),
 * where one reset of a few buffers takes milliseconds: a reset may take 5 s, a drain 20 s.
 */
#define _GNU_SOURCE
#include <fcntl.h>
#include <pthread.h>
#include <sys/ioctl.h>
#include <sys/resource.h>
#include <sys/syscall.h>
#include <linux/if_tun.h>
#include <linux/virtio_config.h>

#include "../include/uapi/linux/vhost_net_zc.h"
#include "zc_env.h"

#define FEATURES	(1ULL << VIRTIO_F_VERSION_1)
#define RESET_BOUND_MS	5000
#define DRAIN_MS	20000

FIXTURE(scale) {
	struct zc_env e;
};

FIXTURE_SETUP(scale)
{
	env_setup(_metadata, &self->e, FEATURES);
	/* The fixture's own device is not used (and would keep the module in use). */
	vg_close(&self->e.g);
}

static int ko_load_path(const char *ko);

#define KUNIT_GLOB "/sys/module/kunit/parameters/filter_glob"

FIXTURE_TEARDOWN(scale)
{
	const char *ko = getenv("VNZC_KO");

	env_teardown(_metadata, &self->e);
	/* A cycle test that stopped half-way leaves the module as it found it. */
	if (ko && access("/dev/vhost-net-zc", F_OK)) {
		write_text(KUNIT_GLOB, "*.*");
		if (ko_load_path(ko))
			TH_LOG("could not load %s again", ko);
	}
}

/* One queue of the multi-queue tap @name (created by its first queue): fd or -errno. */
static int mq_tap_queue(const char *name)
{
	int fd = open("/dev/net/tun", O_RDWR | O_CLOEXEC);
	int hdr = sizeof(struct virtio_net_hdr_mrg_rxbuf);
	struct ifreq ifr;

	if (fd < 0)
		return -errno;
	memset(&ifr, 0, sizeof(ifr));
	snprintf(ifr.ifr_name, sizeof(ifr.ifr_name), "%s", name);
	ifr.ifr_flags = IFF_TAP | IFF_NO_PI | IFF_VNET_HDR | IFF_MULTI_QUEUE;
	if (ioctl(fd, TUNSETIFF, &ifr) < 0 || ioctl(fd, TUNSETVNETHDRSZ, &hdr) < 0) {
		int e = -errno;

		close(fd);
		return e;
	}
	return fd;
}

/* Whether each head of @heads is among the @n used ids exactly once. */
static bool each_once(const int *heads, int nheads, const uint32_t *ids, int n)
{
	if (n != nheads)
		return false;
	for (int i = 0; i < nheads; i++) {
		int seen = 0;

		for (int j = 0; j < n; j++)
			seen += ids[j] == (uint32_t)heads[i];
		if (seen != 1)
			return false;
	}
	return true;
}

enum { NDEV = 1024, NZC = 64, PER = 4 };

struct resetter {
	struct vg_guest *g;
	pthread_barrier_t *go;
	long ms;
	int r;
};

static void *reset_one(void *arg)
{
	struct resetter *t = arg;
	long t0;

	pthread_barrier_wait(t->go);
	t0 = now_ms();
	t->r = vg_set_backend(t->g, VG_TX, -1);
	t->ms = now_ms() - t0;
	return NULL;
}

TEST_F_TIMEOUT(scale, many_devices, 900)
{
	struct rlimit nofile = { .rlim_cur = 16384, .rlim_max = 16384 };
	static struct vg_guest g[NDEV];
	static int heads[NZC][PER], mq[NZC];
	static struct resetter t[NZC];
	static pthread_t th[NZC];
	struct vhost_net_zc_stats s;
	pthread_barrier_t go;
	long t0, slowest = 0, offlined = 0, opened_ms, close_ms;
	int r;

	ASSERT_EQ(0, setrlimit(RLIMIT_NOFILE, &nofile)) TH_LOG("RLIMIT_NOFILE: %m");
	for (int i = 0; i < NZC; i++) {
		mq[i] = mq_tap_queue("vnzcmq");
		ASSERT_LE(0, mq[i]) TH_LOG("tap queue %d: %s", i, strerror(-mq[i]));
	}
	ASSERT_EQ(0, system("ip link set vnzcmq master vnzcbr && ip link set vnzcmq up"));
	for (long end = now_ms() + 10000; now_ms() < end && !forwarding("vnzcmq"); )
		usleep(20 * 1000);
	ASSERT_TRUE(forwarding("vnzcmq"));

	t0 = now_ms();
	for (int i = 0; i < NDEV; i++) {
		struct vg_guest *d = &g[i];

		r = vg_open(d, "/dev/vhost-net-zc", i < NZC ? 1 << 20 : 1 << 16);
		ASSERT_EQ(0, r) TH_LOG("device %d: %s", i, strerror(-r));
		if (i < NZC) {
			r = vg_setup(d, FEATURES, RING);
			ASSERT_EQ(0, r) TH_LOG("device %d: setup: %s", i, strerror(-r));
			ASSERT_EQ(0, zc_set(d, VHOST_NET_ZC_SET_TIMEOUT, 20));
			ASSERT_EQ(0, vg_set_backend(d, VG_TX, mq[i]));
			for (int k = 0; k < PER; k++) {
				heads[i][k] = send_frame(d, mac_held, ZC_LEN, i * PER + k, NULL);
				ASSERT_LE(0, heads[i][k]);
			}
		} else {
			r = vg_set_owner(d);
			if (!r)
				r = vg_set_features(d, FEATURES);
			if (!r)
				r = vg_set_mem_table(d);
			ASSERT_EQ(0, r) TH_LOG("device %d: %s", i, strerror(-r));
		}
	}
	opened_ms = now_ms() - t0;
	for (int i = 0; i < NZC; i++) {
		ASSERT_TRUE(ZC_WAIT_FOR(&g[i], s, s.in_flight == PER, 10000))
			TH_LOG("device %d: %llu of %d in flight", i, s.in_flight, PER);
	}
	usleep(50 * 1000);	/* past every deadline */

	/* All 64 reset at once, each from its own thread. */
	ASSERT_EQ(0, pthread_barrier_init(&go, NULL, NZC));
	for (int i = 0; i < NZC; i++) {
		t[i] = (struct resetter){ .g = &g[i], .go = &go };
		ASSERT_EQ(0, pthread_create(&th[i], NULL, reset_one, &t[i]));
	}
	for (int i = 0; i < NZC; i++) {
		pthread_join(th[i], NULL);
		EXPECT_EQ(0, t[i].r) TH_LOG("device %d: reset: %s", i, strerror(-t[i].r));
		if (t[i].ms > slowest)
			slowest = t[i].ms;
	}
	pthread_barrier_destroy(&go);
	EXPECT_GT(RESET_BOUND_MS, slowest) TH_LOG("slowest of %d resets: %ld ms", NZC, slowest);

	for (int i = 0; i < NZC; i++) {
		uint32_t ids[2 * PER];
		int n = reap_all(&g[i], ids, PER, 5000);

		n += reap_all(&g[i], ids + n, 2 * PER - n, 0);
		EXPECT_TRUE(each_once(heads[i], PER, ids, n))
			TH_LOG("device %d: %d used entries for %d heads", i, n, PER);
		ASSERT_EQ(0, zc_stats(&g[i], &s));
		offlined += s.offlined;
	}
	plug(false);
	for (int i = 0; i < NZC; i++) {
		EXPECT_TRUE(ZC_WAIT_FOR(&g[i], s, s.in_flight == 0 && s.held_pages == 0, DRAIN_MS))
			TH_LOG("device %d: %llu in flight, %llu pages held", i, s.in_flight,
			       s.held_pages);
	}
	t0 = now_ms();
	for (int i = 0; i < NDEV; i++)
		vg_close(&g[i]);
	close_ms = now_ms() - t0;
	for (int i = 0; i < NZC; i++)
		close(mq[i]);
	plug(true);
	TH_LOG("%d devices opened in %ld ms and closed in %ld ms; %d reset at once, slowest %ld ms, %ld buffers offlined",
	       NDEV, opened_ms, close_ms, NZC, slowest, offlined);
	/* The buffers were expired and the memory plain anonymous: the resets offlined them. */
	EXPECT_EQ((long)NZC * PER, offlined);
}

TEST_F_TIMEOUT(scale, cap_reached, 300)
{
	enum { NUM = 1024, N = 300, TIMEOUT_MS = 1000 };
	const uint64_t CAP = 128;
	static int heads[N];
	static uint32_t ids[2 * N];
	struct vhost_net_zc_stats s;
	struct vg_guest g;
	int n, r;

	r = vg_open(&g, "/dev/vhost-net-zc", 2 << 20);
	ASSERT_EQ(0, r);
	r = vg_setup(&g, FEATURES, NUM);
	ASSERT_EQ(0, r) TH_LOG("setup: %s", strerror(-r));
	ASSERT_EQ(0, zc_set(&g, VHOST_NET_ZC_SET_TIMEOUT, TIMEOUT_MS));
	ASSERT_EQ(0, vg_set_backend(&g, VG_TX, self->e.tap_fd));
	for (int i = 0; i < N; i++) {
		heads[i] = send_frame(&g, mac_held, ZC_LEN, i, NULL);
		ASSERT_LE(0, heads[i]) TH_LOG("frame %d", i);
	}
	ASSERT_TRUE(ZC_WAIT_FOR(&g, s, (long)(s.sent_zerocopy + s.sent_copy) >= N, 20000));
	/* The cap is reached, a quarter of the ring (256) is not: the rest went by copy. */
	EXPECT_EQ(CAP, s.in_flight);
	EXPECT_EQ(CAP, s.sent_zerocopy);
	EXPECT_EQ(N - CAP, s.sent_copy);
	n = reap_all(&g, ids, N - CAP, 5000);
	EXPECT_EQ((int)(N - CAP), n) TH_LOG("copied heads back while the qdisc holds the rest");
	/* Past the deadlines, a reset offlines the full pool and returns its heads. */
	usleep((TIMEOUT_MS + 200) * 1000);
	ASSERT_EQ(0, vg_set_backend(&g, VG_TX, -1));
	n += reap_all(&g, ids + n, CAP, 5000);
	n += reap_all(&g, ids + n, 2 * N - n, 0);
	EXPECT_TRUE(each_once(heads, N, ids, n)) TH_LOG("%d used entries for %d heads", n, N);
	ASSERT_EQ(0, zc_stats(&g, &s));
	EXPECT_EQ(CAP, s.offlined);
	plug(false);
	EXPECT_TRUE(ZC_WAIT_FOR(&g, s, s.in_flight == 0 && s.held_pages == 0, DRAIN_MS));
	vg_close(&g);
	plug(true);
}

/* The kernel's module syscalls, without kmod: 0 or -errno. */
static int ko_load(int fd)
{
	return syscall(SYS_finit_module, fd, "", 0) ? -errno : 0;
}

static int ko_unload(void)
{
	return syscall(SYS_delete_module, "vhost_net_zc", O_NONBLOCK) ? -errno : 0;
}

static int ko_load_path(const char *ko)
{
	int fd = open(ko, O_RDONLY | O_CLOEXEC), r;

	if (fd < 0)
		return -errno;
	r = ko_load(fd);
	close(fd);
	return r;
}

/*
 * The module file VNZC_KO names, open for finit_module(), with the module's KUnit suites
 * kept from running at each load (they ran at its first); -errno if it cannot be opened.
 */
static int ko_open(const char *ko)
{
	int fd = open(ko, O_RDONLY | O_CLOEXEC);

	if (fd < 0)
		return -errno;
	if (write_text(KUNIT_GLOB, "vhost_net_zc_none")) {
		close(fd);
		return -EIO;
	}
	return fd;
}

/* Loads the module from @fd once more, its KUnit suites on again, as the suite found it. */
static void ko_restore(struct __test_metadata *_metadata, int fd)
{
	EXPECT_EQ(0, write_text(KUNIT_GLOB, "*.*"));
	EXPECT_EQ(0, ko_load(fd)) TH_LOG("the module could not be loaded again");
	close(fd);
}

/* A device set up as a VMM sets one up: owner, memory, rings, TX on @tap. */
static void vmm_device(struct __test_metadata *_metadata, struct vg_guest *g, int tap)
{
	ASSERT_EQ(0, vg_open(g, "/dev/vhost-net-zc", 1 << 20));
	ASSERT_EQ(0, vg_setup(g, FEATURES, RING));
	ASSERT_EQ(0, vg_set_backend(g, VG_TX, tap));
}

TEST_F_TIMEOUT(scale, load_unload_cycles, 1800)
{
	/* make soak: 1,000 (about 0.5 s each under TCG); the suite: 100. */
	const int CYCLES = getenv("VNZC_CYCLES") ? atoi(getenv("VNZC_CYCLES")) : 100;
	enum { HELD_EVERY = 10 };
	const char *ko = getenv("VNZC_KO");
	long t0, busy = 0, longest_drain = 0;
	struct vhost_net_zc_stats s;
	int fd, r;

	if (!ko)
		SKIP(return, "VNZC_KO (the module's path, to load it) is not set");
	fd = ko_open(ko);
	ASSERT_LE(0, fd) TH_LOG("%s: %s", ko, strerror(-fd));
	ASSERT_EQ(0, ko_unload()) TH_LOG("the module could not be unloaded to begin");
	t0 = now_ms();
	for (int c = 0; c < CYCLES; c++) {
		struct vg_guest g;

		r = ko_load(fd);
		ASSERT_EQ(0, r) TH_LOG("cycle %d: load: %s", c, strerror(-r));
		if (c % HELD_EVERY) {
			r = ko_unload();
			ASSERT_EQ(0, r) TH_LOG("cycle %d: unload: %s", c, strerror(-r));
			continue;
		}
		/* A device closed with its buffers still held by the plugged qdisc. */
		vmm_device(_metadata, &g, self->e.tap_fd);
		for (int k = 0; k < 2; k++)
			ASSERT_LE(0, send_frame(&g, mac_held, ZC_LEN, c + k, NULL));
		ASSERT_TRUE(ZC_WAIT_FOR(&g, s, s.in_flight == 2, 5000));
		vg_close(&g);
		r = ko_unload();
		EXPECT_EQ(-EWOULDBLOCK, r) TH_LOG("cycle %d: unload with skbs in flight: %s", c,
						  r ? strerror(-r) : "succeeded");
		busy += r == -EWOULDBLOCK;
		plug(false);
		for (long start = now_ms(), end = start + DRAIN_MS; ; usleep(2000)) {
			r = ko_unload();
			if (r != -EWOULDBLOCK || now_ms() > end) {
				if (now_ms() - start > longest_drain)
					longest_drain = now_ms() - start;
				break;
			}
		}
		ASSERT_EQ(0, r) TH_LOG("cycle %d: unload after the release: %s", c, strerror(-r));
		plug(true);
	}
	TH_LOG("%d load/unload cycles in %ld ms; %ld refused while skbs were held, longest wait for their release %ld ms",
	       CYCLES, now_ms() - t0, busy, longest_drain);
	ko_restore(_metadata, fd);
	EXPECT_EQ((CYCLES + HELD_EVERY - 1) / HELD_EVERY, busy);
}

/*
 * The module unloads as soon as the VMM's last device is closed, as stock vhost-net's
 * does: close() returns with every reference of the device's dropped (not an RCU grace
 * period later), when no skb holds a buffer. Each round uses a device as a VMM does (worker,
 * memory table, backend, a frame sent zero-copy to the free port and completed), closes
 * it and unloads at once, without retrying.
 */
TEST_F_TIMEOUT(scale, unload_right_after_close, 600)
{
	enum { ROUNDS = 20 };
	const char *ko = getenv("VNZC_KO");
	struct vhost_net_zc_stats s;
	int fd, r;

	if (!ko)
		SKIP(return, "VNZC_KO (the module's path, to load it) is not set");
	fd = ko_open(ko);
	ASSERT_LE(0, fd) TH_LOG("%s: %s", ko, strerror(-fd));
	/* The fixture has just closed a device of its own. */
	r = ko_unload();
	ASSERT_EQ(0, r) TH_LOG("the module could not be unloaded to begin: %s", strerror(-r));
	for (int i = 0; i < ROUNDS; i++) {
		struct vg_guest g;

		r = ko_load(fd);
		ASSERT_EQ(0, r) TH_LOG("round %d: load: %s", i, strerror(-r));
		vmm_device(_metadata, &g, self->e.tap_fd);
		ASSERT_LE(0, send_frame(&g, mac_free, ZC_LEN, i, NULL));
		ASSERT_TRUE(ZC_WAIT_FOR(&g, s, s.sent_zerocopy == 1 && s.completed == 1, 5000));
		vg_close(&g);
		r = ko_unload();
		ASSERT_EQ(0, r) TH_LOG("round %d: unload right after close: %s", i, strerror(-r));
	}
	ko_restore(_metadata, fd);
}

TEST_HARNESS_MAIN
