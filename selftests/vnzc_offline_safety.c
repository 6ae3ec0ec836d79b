// SPDX-License-Identifier: GPL-2.0
/*
 * Offlining and reset under concurrency and failure (DESIGN S12-S15, issue 14): what must
 * hold when the guest's memory is busy, when completions race the reset, when the VMM
 * tears the device down or reprograms the ring, and when a page cannot be offlined.
 *
 * - VMM threads read and write the rest of each buffer's page while it is offlined in
 *   preserve mode (through the page tables, through GUP with /proc/self/mem, and by
 *   O_DIRECT reads from a loop device, which pin the page): no write is lost, no read
 *   sees anything but the last write;
 * - the buffers of one reset are offlined with one TLB flush, not one per page;
 * - the qdisc is released and plugged again by a thread (rtnetlink, no fork) while resets
 *   offline the same buffers: every head is used exactly once, over 10000 rounds;
 * - close and RESET_OWNER race completions and 1 ms deadlines, with the worker freed;
 * - a ring reprogrammed after a reset that left buffers in flight never receives their
 *   heads, nor does one reset in place at the index's wrap;
 * - a page pinned for DMA (an io_uring fixed buffer), a userfaultfd-registered range, an
 *   exhausted hugetlb pool: refused, memory intact; a page remapped since the send:
 *   skipped, its new content intact;
 * - a reset waits only for the buffers still the guest's, and a VMM killed while it waits
 *   is reaped at once;
 * - with dirty logging on (a migration), what a VM reset zeroes is marked in the log.
 */
#define _GNU_SOURCE
#include <fcntl.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <sys/uio.h>
#include <sys/wait.h>
#include <linux/capability.h>
#include <linux/io_uring.h>
#include <linux/loop.h>
#include <linux/netlink.h>
#include <linux/pkt_sched.h>
#include <linux/rtnetlink.h>
#include <linux/userfaultfd.h>
#include <linux/virtio_config.h>

#include "../include/uapi/linux/vhost_net_zc.h"
#include "zc_env.h"

#define PAGE		4096
/* Where the VMM threads work on a buffer's page: past the frame (ZC_LEN bytes). */
#define SENTINEL_OFF	1024
#define SENTINEL_LEN	1024
#define COUNTER_OFF	2048	/* a plain store and load, through the page tables */
#define GUP_OFF		3072	/* pread()/pwrite() of /proc/self/mem: through GUP */

/* Posts a frame of ZC_LEN bytes at @frame (its header at @hdr) to @dst; returns its head. */
static int post_at(struct vg_guest *g, uint8_t *hdr, uint8_t *frame, const uint8_t *dst,
		   unsigned int seed)
{
	void *bufs[2] = { hdr, frame };
	uint32_t lens[2] = { HDR_LEN, ZC_LEN };

	memset(hdr, 0, HDR_LEN);
	memcpy(frame, dst, 6);
	memcpy(frame + 6, mac_src, 6);
	frame[12] = TEST_ETHERTYPE >> 8;
	frame[13] = TEST_ETHERTYPE & 0xff;
	for (size_t i = 14; i < ZC_LEN; i++)
		frame[i] = (uint8_t)(i * 7 + seed);
	return vg_post(g, VG_TX, bufs, lens, 2, false);
}

static int netlink_open(void)
{
	struct sockaddr_nl sa = { .nl_family = AF_NETLINK };
	int fd = socket(AF_NETLINK, SOCK_RAW | SOCK_CLOEXEC, NETLINK_ROUTE);

	if (fd >= 0 && bind(fd, (struct sockaddr *)&sa, sizeof(sa))) {
		close(fd);
		return -1;
	}
	return fd;
}

/* A thread that releases and plugs the qdisc again, at random intervals, until told. */
struct toggler {
	pthread_t thread;
	atomic_bool stop;
	int nl, ifindex;
	long toggles, errors;
};

static void *toggle_loop(void *arg)
{
	struct toggler *t = arg;
	unsigned int seed = 1;

	while (!atomic_load(&t->stop)) {
		t->errors += plug_nl(t->nl, t->ifindex, TCQ_PLUG_RELEASE_INDEFINITE) != 0;
		usleep(rand_r(&seed) % 300);
		t->errors += plug_nl(t->nl, t->ifindex, TCQ_PLUG_BUFFER) != 0;
		usleep(rand_r(&seed) % 2000);
		t->toggles++;
	}
	t->errors += plug_nl(t->nl, t->ifindex, TCQ_PLUG_RELEASE_INDEFINITE) != 0;
	return NULL;
}

static int toggler_start(struct toggler *t)
{
	memset(t, 0, sizeof(*t));
	t->ifindex = if_nametoindex("vnzcd0");
	t->nl = netlink_open();
	if (t->nl < 0 || !t->ifindex)
		return -1;
	/* Check the message once before relying on it. */
	if (plug_nl(t->nl, t->ifindex, TCQ_PLUG_BUFFER))
		return -1;
	return pthread_create(&t->thread, NULL, toggle_loop, t) ? -1 : 0;
}

static void toggler_stop(struct toggler *t)
{
	atomic_store(&t->stop, true);
	pthread_join(t->thread, NULL);
	close(t->nl);
}

/* The zero-copy heuristic stops zero copy when packet sockets on the ports copy frames. */
static void no_captures(struct zc_env *e)
{
	if (e->cap_held >= 0)
		close(e->cap_held);
	if (e->cap_free >= 0)
		close(e->cap_free);
	e->cap_held = e->cap_free = -1;
}

FIXTURE(safe) {
	struct zc_env e;
};

FIXTURE_SETUP(safe)
{
	env_setup(_metadata, &self->e, 1ULL << VIRTIO_F_VERSION_1);
	no_captures(&self->e);
}

FIXTURE_TEARDOWN(safe)
{
	env_teardown(_metadata, &self->e);
}

/*
 * S12: the VMM's threads work on the rest of each buffer's page while it is offlined.
 * K frames, each at the start of a page of its own, are sent into the plugged port,
 * expire (1 ms) and are offlined by SET_BACKEND -1, ROUNDS times over the same pages.
 * Meanwhile a writer increments a counter in each page and checks that the counter still
 * holds what it last wrote (a lost write shows as an older value), a reader checks a
 * sentinel region (a stale read shows as zeros), and a third thread does the same as the
 * writer through /proc/self/mem, whose reads and writes reach the page through GUP.
 */
enum { K = 8, ROUNDS = 150 };

/*
 * The first half of an offline round: posts K frames from @page[i] (their bytes kept in
 * @orig, their heads in @heads), waits until every one went zero-copy into the plugged
 * qdisc, lets their 1 ms deadline pass and takes the TX backend away, the reset that
 * offlines them.
 */
static void send_expire_reset(struct __test_metadata *_metadata, struct vg_guest *g,
			      uint8_t *hdrs, uint8_t *const page[K], uint8_t orig[K][ZC_LEN],
			      int r, int heads[K])
{
	struct vhost_net_zc_stats s;
	uint64_t base;

	ASSERT_EQ(0, zc_stats(g, &s));
	base = s.sent_zerocopy;
	for (int i = 0; i < K; i++) {
		heads[i] = post_at(g, hdrs + i * 64, page[i], mac_held, r * K + i);
		ASSERT_LE(0, heads[i]);
		memcpy(orig[i], page[i], ZC_LEN);
	}
	ASSERT_TRUE(ZC_WAIT_FOR(g, s, s.sent_zerocopy + s.sent_copy >= base + K, 5000));
	ASSERT_EQ(base + K, s.sent_zerocopy) TH_LOG("round %d: some frames were copied", r);
	usleep(2000);	/* past the 1 ms deadline */
	ASSERT_EQ(0, vg_set_backend(g, VG_TX, -1));
}

/* How many of the @n used ids in @ids are among the K heads in @heads. */
static int heads_seen(const uint32_t *ids, int n, const int heads[K])
{
	int seen = 0;

	for (int i = 0; i < K; i++)
		for (int j = 0; j < n; j++)
			seen += ids[j] == (uint32_t)heads[i];
	return seen;
}

struct pages_work {
	uint8_t *page[K];
	atomic_bool stop;
	long lost, stale, gup_lost, passes, gup_passes, gup_errors;
};

static void *writer_loop(void *arg)
{
	struct pages_work *w = arg;
	uint64_t last[K] = { 0 };

	while (!atomic_load(&w->stop)) {
		for (int i = 0; i < K; i++) {
			volatile uint64_t *c = (volatile uint64_t *)(w->page[i] + COUNTER_OFF);
			uint64_t v = *c;

			if (v != last[i]) {
				w->lost++;
				last[i] = v;
			}
			*c = ++last[i];
		}
		w->passes++;
	}
	return NULL;
}

static void *reader_loop(void *arg)
{
	struct pages_work *w = arg;

	while (!atomic_load(&w->stop)) {
		for (int i = 0; i < K; i++) {
			volatile uint64_t *s = (volatile uint64_t *)(w->page[i] + SENTINEL_OFF);

			for (int j = 0; j < SENTINEL_LEN / 8; j += 8)
				if (s[j] != 0xa5a5a5a5a5a5a5a5ULL)
					w->stale++;
		}
	}
	return NULL;
}

static void *gup_loop(void *arg)
{
	struct pages_work *w = arg;
	uint64_t last[K] = { 0 };
	int mem = open("/proc/self/mem", O_RDWR | O_CLOEXEC);

	if (mem < 0) {
		w->gup_errors++;
		return NULL;
	}
	while (!atomic_load(&w->stop)) {
		for (int i = 0; i < K; i++) {
			off_t at = (off_t)(uintptr_t)(w->page[i] + GUP_OFF);
			uint64_t v = 0;

			if (pread(mem, &v, sizeof(v), at) != sizeof(v)) {
				w->gup_errors++;
				continue;
			}
			if (v != last[i]) {
				w->gup_lost++;
				last[i] = v;
			}
			v = ++last[i];
			if (pwrite(mem, &v, sizeof(v), at) != sizeof(v))
				w->gup_errors++;
		}
		w->gup_passes++;
	}
	close(mem);
	return NULL;
}

TEST_F_TIMEOUT(safe, preserve_concurrent_access, 600)
{
	struct vg_guest *g = &self->e.g;
	struct vhost_net_zc_stats s;
	struct pages_work w = { 0 };
	pthread_t th[3];
	uint8_t *hdrs, *mem, orig[K][ZC_LEN];
	long offlined0, rounds_done = 0;

	ASSERT_EQ(0, zc_set(g, VHOST_NET_ZC_SET_TIMEOUT, 1));
	hdrs = vg_alloc(g, PAGE, PAGE);
	mem = vg_alloc(g, K * PAGE, PAGE);
	ASSERT_NE(NULL, hdrs);
	ASSERT_NE(NULL, mem);
	for (int i = 0; i < K; i++) {
		w.page[i] = mem + i * PAGE;
		memset(w.page[i], 0, PAGE);
		memset(w.page[i] + SENTINEL_OFF, 0xa5, SENTINEL_LEN);
	}
	ASSERT_EQ(0, zc_stats(g, &s));
	offlined0 = s.offlined;
	ASSERT_EQ(0, pthread_create(&th[0], NULL, writer_loop, &w));
	ASSERT_EQ(0, pthread_create(&th[1], NULL, reader_loop, &w));
	ASSERT_EQ(0, pthread_create(&th[2], NULL, gup_loop, &w));
	for (int r = 0; r < ROUNDS; r++) {
		uint32_t ids[2 * K];
		int heads[K], n;

		send_expire_reset(_metadata, g, hdrs, w.page, orig, r, heads);
		n = reap_all(g, ids, K, 2000);
		n += reap_all(g, ids + n, 2 * K - n, 20);
		ASSERT_EQ(K, n) TH_LOG("round %d: %d heads returned", r, n);
		ASSERT_EQ(K, heads_seen(ids, n, heads));
		for (int i = 0; i < K; i++) {
			ASSERT_EQ(0, memcmp(w.page[i], orig[i], ZC_LEN))
				TH_LOG("round %d: frame %d changed", r, i);
		}
		ASSERT_EQ(0, vg_set_backend(g, VG_TX, self->e.tap_fd));
		/* Free the held skbs now and then: a queue holds 128 at most. */
		if (r % 8 == 7) {
			plug(false);
			ASSERT_TRUE(ZC_WAIT_FOR(g, s, s.in_flight == 0, 5000));
			plug(true);
		}
		rounds_done++;
	}
	atomic_store(&w.stop, true);
	for (int i = 0; i < 3; i++)
		pthread_join(th[i], NULL);
	ASSERT_EQ(0, zc_stats(g, &s));
	TH_LOG("%ld rounds, %llu buffers offlined, %llu pages; writer %ld passes, %ld lost writes, %ld stale reads; GUP writer %ld passes, %ld lost writes, %ld errors",
	       rounds_done, s.offlined - offlined0, s.offlined_pages, w.passes, w.lost, w.stale,
	       w.gup_passes, w.gup_lost, w.gup_errors);
	EXPECT_LE(1000, (long)(s.offlined - offlined0));
	EXPECT_EQ(0, w.lost);
	EXPECT_EQ(0, w.stale);
	EXPECT_EQ(0, w.gup_lost);
	EXPECT_EQ(0, w.gup_errors);
	plug(false);
	EXPECT_TRUE(ZC_WAIT_FOR(g, s, s.in_flight == 0 && s.held_pages == 0, 5000));
}

/*
 * S13: completions racing the offline of the same buffers. A thread releases and plugs
 * the qdisc at random intervals; each round sends two frames into it, lets them expire
 * (1 ms) and resets. Whether a buffer completes before the reset looks, while it offlines
 * it, or after, its head is used exactly once.
 */
TEST_F_TIMEOUT(safe, completion_races_offline, 1500)
{
	enum { RACE_ROUNDS = 10000, PER = 2 };
	struct vg_guest *g = &self->e.g;
	struct vhost_net_zc_stats s;
	struct toggler t;
	long total = 0, extra = 0;
	uint64_t offlined0;

	ASSERT_EQ(0, zc_set(g, VHOST_NET_ZC_SET_TIMEOUT, 1));
	ASSERT_EQ(0, toggler_start(&t)) TH_LOG("rtnetlink plug control failed");
	ASSERT_EQ(0, zc_stats(g, &s));
	offlined0 = s.offlined;
	for (int r = 0; r < RACE_ROUNDS; r++) {
		uint32_t ids[4 * PER];
		int heads[PER], n;

		for (int i = 0; i < PER; i++) {
			heads[i] = send_frame(g, mac_held, ZC_LEN, r + i, NULL);
			ASSERT_LE(0, heads[i]);
		}
		total += PER;
		ASSERT_TRUE(ZC_WAIT_FOR(g, s, (long)(s.sent_zerocopy + s.sent_copy) >= total, 5000));
		usleep((r % 4) * 700);
		ASSERT_EQ(0, vg_set_backend(g, VG_TX, -1));
		n = reap_all(g, ids, PER, 2000);
		n += reap_all(g, ids + n, 4 * PER - n, 0);
		for (int i = 0; i < PER; i++) {
			int seen = 0;

			for (int j = 0; j < n; j++)
				seen += ids[j] == (uint32_t)heads[i];
			ASSERT_EQ(1, seen) TH_LOG("round %d: head %d used %d times", r, heads[i], seen);
		}
		extra += n - PER;
		ASSERT_EQ(0, vg_set_backend(g, VG_TX, self->e.tap_fd));
		g->mem_used = 2 * PAGE * 4;
	}
	toggler_stop(&t);
	EXPECT_TRUE(ZC_WAIT_FOR(g, s, s.in_flight == 0 && s.held_pages == 0, 5000));
	TH_LOG("%d rounds, %ld frames: %llu zero-copy, %llu offlined, %llu completed; %ld plug toggles (%ld errors)",
	       RACE_ROUNDS, total, s.sent_zerocopy, s.offlined - offlined0, s.completed,
	       t.toggles, t.errors);
	EXPECT_EQ(0, extra);
	EXPECT_EQ(0, t.errors);
	EXPECT_EQ(s.sent_zerocopy, s.completed);
	/* Both sides of the race happened many times. */
	EXPECT_LE(RACE_ROUNDS / 10, (long)(s.offlined - offlined0));
	EXPECT_LE(RACE_ROUNDS / 10, (long)(s.completed - (s.offlined - offlined0)));
}

/*
 * close and RESET_OWNER racing completions and 1 ms deadlines: each round sets a device up
 * on the tap, sends frames to both ports and tears it down at once, while the qdisc is
 * toggled. The device's worker is freed each time; nothing may reach it afterwards
 * (KASAN, lockdep and the kernel log check judge).
 */
TEST_F_TIMEOUT(safe, teardown_races, 900)
{
	enum { TD_ROUNDS = 600 };
	struct toggler t;
	long zc = 0;

	vg_close(&self->e.g);
	ASSERT_EQ(0, toggler_start(&t));
	for (int r = 0; r < TD_ROUNDS; r++) {
		struct vhost_net_zc_stats s;
		struct vg_guest g;

		ASSERT_EQ(0, vg_open(&g, "/dev/vhost-net-zc", 1 << 20));
		ASSERT_EQ(0, vg_setup(&g, 1ULL << VIRTIO_F_VERSION_1, RING));
		ASSERT_EQ(0, zc_set(&g, VHOST_NET_ZC_SET_TIMEOUT, 1));
		ASSERT_EQ(0, vg_set_backend(&g, VG_TX, self->e.tap_fd));
		for (int i = 0; i < 4; i++)
			ASSERT_LE(0, send_frame(&g, i & 1 ? mac_free : mac_held, ZC_LEN, r + i, NULL));
		usleep((r % 5) * 400);
		if (zc_stats(&g, &s) == 0)
			zc += s.sent_zerocopy;
		if (r % 2) {
			ASSERT_EQ(0, ioctl(g.fd, VHOST_RESET_OWNER));
			/* A new owner can set the device up again. */
			ASSERT_EQ(0, vg_set_owner(&g));
		}
		vg_close(&g);
	}
	toggler_stop(&t);
	TH_LOG("%d devices torn down, %ld frames seen sent zero-copy, %ld plug toggles", TD_ROUNDS,
	       zc, t.toggles);
	EXPECT_LE(TD_ROUNDS / 4, zc);
	/* Keep the fixture's teardown happy. */
	ASSERT_EQ(0, vg_open(&self->e.g, "/dev/vhost-net-zc", 1 << 16));
}

/*
 * S14: the ring reprogrammed after a reset that left buffers in flight (refused: guest
 * memory shared with a file, preserve mode), as QEMU does when the guest reboots. When
 * the qdisc is released, none of their heads may appear in the new used ring.
 */
FIXTURE(shared) {
	struct zc_env e;
};

FIXTURE_SETUP(shared)
{
	self->e.mem_flags = VG_MEM_SHARED;
	env_setup(_metadata, &self->e, 1ULL << VIRTIO_F_VERSION_1);
	no_captures(&self->e);
}

FIXTURE_TEARDOWN(shared)
{
	env_teardown(_metadata, &self->e);
}

/*
 * Sends 4 frames into the plugged port with a 20 ms deadline, waits past it and detaches
 * the TX backend: the reset's offlines are refused (shared memory), the 4 stay in flight.
 * Their heads go to @old.
 */
static void hold_four_refused(struct __test_metadata *_metadata, struct vg_guest *g, int old[4])
{
	struct vhost_net_zc_stats s;

	ASSERT_EQ(0, zc_set(g, VHOST_NET_ZC_SET_TIMEOUT, 20));
	for (int i = 0; i < 4; i++) {
		old[i] = send_frame(g, mac_held, ZC_LEN, i, NULL);
		ASSERT_LE(0, old[i]);
	}
	ASSERT_TRUE(ZC_WAIT_FOR(g, s, s.in_flight == 4, 3000));
	usleep(30 * 1000);
	ASSERT_EQ(0, vg_set_backend(g, VG_TX, -1));
	ASSERT_EQ(0, zc_stats(g, &s));
	EXPECT_EQ(4, (long)s.offline_refused);
}

/* Sets the TX ring's size, index @base and addresses to those it has, as QEMU does. */
static void set_same_ring(struct __test_metadata *_metadata, struct vg_guest *g, uint32_t base)
{
	struct vg_vq *vq = &g->vq[VG_TX];
	struct vhost_vring_state st = { .index = VG_TX, .num = RING };
	struct vhost_vring_addr addr = {
		.index = VG_TX,
		.desc_user_addr = vg_ring_addr(g, vq->desc),
		.avail_user_addr = vg_ring_addr(g, vq->avail),
		.used_user_addr = vg_ring_addr(g, vq->used),
	};

	ASSERT_EQ(0, ioctl(g->fd, VHOST_SET_VRING_NUM, &st));
	st.num = base;
	ASSERT_EQ(0, ioctl(g->fd, VHOST_SET_VRING_BASE, &st));
	ASSERT_EQ(0, ioctl(g->fd, VHOST_SET_VRING_ADDR, &addr));
}

/*
 * The TX ring set again as QEMU's vhost start sets it (@restart): the features first
 * (with ACCESS_PLATFORM, a new and empty device IOTLB, in which the used index has no
 * translation when the ring is set), the ring, then the used ring's translation;
 * otherwise the ring alone, as after a stop.
 */
static void set_ring_again(struct __test_metadata *_metadata, struct zc_env *e, uint32_t base,
			   bool restart)
{
	struct vg_vq *vq = &e->g.vq[VG_TX];

	if (restart)
		ASSERT_EQ(0, vg_set_features(&e->g, e->features));
	set_same_ring(_metadata, &e->g, base);
	if (restart && e->g.iotlb)
		ASSERT_EQ(0, vg_iotlb_map(&e->g, vq->used, sizeof(*vq->used) +
					  sizeof(struct vring_used_elem) * vq->num));
}

/*
 * After the TX ring was set up anew with the 4 buffers of hold_four_refused() in flight:
 * they were abandoned; with @tap_fd attached again, 2 fresh frames are sent and the qdisc
 * released, and the ring receives exactly the 2 fresh heads.
 */
static void only_fresh_heads(struct __test_metadata *_metadata, struct vg_guest *g, int tap_fd)
{
	struct vhost_net_zc_stats s;
	uint32_t ids[16];
	int fresh[2], n;

	ASSERT_EQ(0, vg_set_backend(g, VG_TX, tap_fd));
	for (int i = 0; i < 2; i++) {
		fresh[i] = send_frame(g, mac_free, ZC_LEN, 10 + i, NULL);
		ASSERT_LE(0, fresh[i]);
	}
	plug(false);
	ASSERT_TRUE(ZC_WAIT_FOR(g, s, s.in_flight == 0, 3000));
	n = reap_all(g, ids, 2, 2000);
	n += reap_all(g, ids + n, 16 - n, 300);
	EXPECT_EQ(2, n) TH_LOG("%d heads in the new ring, 2 expected", n);
	for (int j = 0; j < n; j++) {
		EXPECT_TRUE(ids[j] == (uint32_t)fresh[0] || ids[j] == (uint32_t)fresh[1])
			TH_LOG("head %u in the new ring is not one sent on it", ids[j]);
	}
	/* When the ring was set, or (IOTLB) before the first head written to it. */
	ASSERT_EQ(0, zc_stats(g, &s));
	EXPECT_EQ(4, (long)s.abandoned);
}

TEST_F_TIMEOUT(shared, ring_reprogrammed, 120)
{
	struct vg_guest *g = &self->e.g;
	struct vg_vq *vq = &g->vq[VG_TX];
	uint32_t ids[16];
	int old[4];

	hold_four_refused(_metadata, g, old);
	EXPECT_EQ(0, reap_all(g, ids, 16, 100)) TH_LOG("a refused buffer's head came back");
	/* The guest reboots: new rings, somewhere else, starting at index 0. */
	close(vq->kick_fd);
	close(vq->call_fd);
	close(vq->err_fd);
	ASSERT_EQ(0, vg_setup_vq(g, VG_TX, RING));
	vq->avail_idx = vq->last_used = vq->next_desc = 0;
	only_fresh_heads(_metadata, g, self->e.tap_fd);
}

/*
 * Reclaim on expiry does not retry a refused buffer on every run of the TX handler (each
 * retry took the mmap lock and logged): refused once, it waits for the stack or a reset.
 */
TEST_F_TIMEOUT(shared, reclaim_refused_once, 120)
{
	struct vg_guest *g = &self->e.g;
	struct vhost_net_zc_stats s;

	ASSERT_EQ(0, zc_set(g, VHOST_NET_ZC_SET_TIMEOUT, 20));
	ASSERT_EQ(0, zc_set(g, VHOST_NET_ZC_SET_RECLAIM, 1));
	for (int i = 0; i < 2; i++)
		ASSERT_LE(0, send_frame(g, mac_held, ZC_LEN, i, NULL));
	ASSERT_TRUE(ZC_WAIT_FOR(g, s, s.offline_refused >= 2, 3000));
	/* Each frame is a kick, a run of the handler with the refused buffers expired. */
	for (int i = 0; i < 8; i++) {
		ASSERT_LE(0, send_frame(g, mac_free, ZC_LEN, 10 + i, NULL));
		usleep(30 * 1000);
	}
	ASSERT_EQ(0, zc_stats(g, &s));
	TH_LOG("refused %llu times after 8 more handler runs", s.offline_refused);
	EXPECT_EQ(2, (long)s.offline_refused);
	plug(false);
	EXPECT_TRUE(ZC_WAIT_FOR(g, s, s.in_flight == 0, 3000));
}

/*
 * The same ring set again after such a reset (QEMU's stop then cont: GET_VRING_BASE, then
 * the same size, index and addresses) is not a new ring: the buffers stay, and their heads
 * come back to it, each once, when the stack frees them.
 */
static void ring_restored(struct __test_metadata *_metadata, struct zc_env *e, bool restart)
{
	struct vg_guest *g = &e->g;
	struct vhost_net_zc_stats s;
	struct vhost_vring_state st = { .index = VG_TX };
	uint32_t ids[16];
	int old[4], n;

	hold_four_refused(_metadata, g, old);
	ASSERT_EQ(0, ioctl(g->fd, VHOST_GET_VRING_BASE, &st));
	ASSERT_EQ(4U, st.num);
	set_ring_again(_metadata, e, st.num, restart);
	ASSERT_EQ(0, zc_stats(g, &s));
	EXPECT_EQ(0, (long)s.abandoned);
	ASSERT_EQ(0, vg_set_backend(g, VG_TX, e->tap_fd));
	plug(false);
	ASSERT_TRUE(ZC_WAIT_FOR(g, s, s.in_flight == 0, 3000));
	n = reap_all(g, ids, 4, 2000);
	n += reap_all(g, ids + n, 16 - n, 300);
	EXPECT_EQ(4, n);
	for (int i = 0; i < 4; i++) {
		int seen = 0;

		for (int j = 0; j < n; j++)
			seen += ids[j] == (uint32_t)old[i];
		EXPECT_EQ(1, seen) TH_LOG("head %d used %d times", old[i], seen);
	}
}

TEST_F_TIMEOUT(shared, ring_restored, 120)
{
	ring_restored(_metadata, &self->e, false);
}

/*
 * A queue reset in place (VIRTIO_F_RING_RESET: Linux's virtqueue_reset keeps the ring's
 * memory and zeroes it; QEMU detaches the backend, reads the base, then sets the same size,
 * index 0 and the same addresses) after a reset that left buffers in flight (refused).
 * When the guest had made 65536 buffers available, the ring's index is 0 again, so size,
 * index and addresses all match the old ring's: the guest's used index, zeroed, tells the
 * ring was reset. None of the old heads may appear in the reset ring.
 */
static void ring_reset_at_index_wrap(struct __test_metadata *_metadata, struct zc_env *e,
				     bool restart)
{
	struct vg_guest *g = &e->g;
	struct vg_vq *vq = &g->vq[VG_TX];
	struct vhost_vring_state st = { .index = VG_TX, .num = 65532 };
	int old[4];

	/* The ring 4 buffers short of 65536 made available, and as many used. */
	ASSERT_EQ(0, vg_set_backend(g, VG_TX, -1));
	ASSERT_EQ(0, ioctl(g->fd, VHOST_SET_VRING_BASE, &st));
	vq->avail_idx = vq->last_used = 65532;
	vq->avail->idx = vq->used->idx = 65532;
	ASSERT_EQ(0, vg_set_backend(g, VG_TX, e->tap_fd));
	hold_four_refused(_metadata, g, old);
	ASSERT_EQ(0, ioctl(g->fd, VHOST_GET_VRING_BASE, &st));
	ASSERT_EQ(0U, st.num) TH_LOG("the index did not wrap to 0");
	/* The guest resets the queue in place: same memory, zeroed, index 0. */
	memset(vq->desc, 0, sizeof(*vq->desc) * vq->num);
	memset(vq->avail, 0, sizeof(*vq->avail) + sizeof(uint16_t) * (vq->num + 1));
	memset(vq->used, 0, sizeof(*vq->used) + sizeof(struct vring_used_elem) * vq->num +
	       sizeof(uint16_t));
	vq->avail_idx = vq->last_used = vq->next_desc = 0;
	set_ring_again(_metadata, e, 0, restart);
	only_fresh_heads(_metadata, g, e->tap_fd);
	EXPECT_EQ(2, vq->used->idx) TH_LOG("used index %u after 2 buffers", vq->used->idx);
}

TEST_F_TIMEOUT(shared, ring_reset_at_index_wrap, 120)
{
	ring_reset_at_index_wrap(_metadata, &self->e, false);
}

/*
 * The two ring tests above with a device IOTLB (VIRTIO_F_ACCESS_PLATFORM, QEMU with a
 * vIOMMU): the ring addresses are IOVAs, so the device reads the guest's used index
 * through the IOTLB to tell the same ring from one reset in place. A device that read it
 * at the IOVA as if it were the VMM's address would see no ring, and abandon the heads of
 * the restored one.
 */
FIXTURE(shared_iotlb) {
	struct zc_env e;
};

FIXTURE_SETUP(shared_iotlb)
{
	self->e.mem_flags = VG_MEM_SHARED;
	env_setup(_metadata, &self->e,
		  (1ULL << VIRTIO_F_VERSION_1) | (1ULL << VIRTIO_F_ACCESS_PLATFORM));
	ASSERT_EQ(0, vg_iotlb_serve(&self->e.g, PAGE));
	no_captures(&self->e);
}

FIXTURE_TEARDOWN(shared_iotlb)
{
	EXPECT_LT(0, vg_iotlb_stop(&self->e.g))
		TH_LOG("no miss served, or a miss outside guest memory (-1)");
	env_teardown(_metadata, &self->e);
}

TEST_F_TIMEOUT(shared_iotlb, ring_restored, 120)
{
	ring_restored(_metadata, &self->e, false);
}

TEST_F_TIMEOUT(shared_iotlb, ring_reset_at_index_wrap, 120)
{
	ring_reset_at_index_wrap(_metadata, &self->e, false);
}

/*
 * The same with the features set again before the ring, as QEMU's vhost start does: the
 * new IOTLB cannot translate the used index when the ring is set, so the device tells the
 * restored ring from the reset one later, before it writes a head, once the ring's
 * translations came. A device that gave up (abandoned the heads) would leak the restored
 * ring's 4 descriptors.
 */
TEST_F_TIMEOUT(shared_iotlb, ring_restored_at_vmm_start, 120)
{
	ring_restored(_metadata, &self->e, true);
}

TEST_F_TIMEOUT(shared_iotlb, ring_reset_at_index_wrap_at_vmm_start, 120)
{
	ring_reset_at_index_wrap(_metadata, &self->e, true);
}

/* The frames of a refusal test, and a check that they stayed in guest memory. */
struct held {
	int head[4];
	uint8_t *at[4];
	uint8_t orig[4][ZC_LEN];
};

static void send_four(struct __test_metadata *_metadata, struct vg_guest *g, struct held *h,
		      uint8_t *pages)
{
	struct vhost_net_zc_stats s;
	uint8_t *hdrs = vg_alloc(g, PAGE, PAGE);

	ASSERT_NE(NULL, hdrs);
	for (int i = 0; i < 4; i++) {
		h->at[i] = pages + i * PAGE;
		h->head[i] = post_at(g, hdrs + i * 64, h->at[i], mac_held, 40 + i);
		ASSERT_LE(0, h->head[i]);
		memcpy(h->orig[i], h->at[i], ZC_LEN);
	}
	ASSERT_TRUE(ZC_WAIT_FOR(g, s, s.in_flight == 4, 3000));
	usleep(30 * 1000);	/* past the 20 ms deadline */
}

static void expect_intact(struct __test_metadata *_metadata, const struct held *h)
{
	for (int i = 0; i < 4; i++) {
		EXPECT_EQ(0, memcmp(h->at[i], h->orig[i], ZC_LEN)) TH_LOG("frame %d changed", i);
	}
}

/* A reset refuses all four buffers (@pinned of them for a DMA pin); memory stays intact. */
static void reset_expect_refused(struct __test_metadata *_metadata, struct vg_guest *g,
				 const struct held *h, long pinned)
{
	struct vhost_net_zc_stats s;
	uint32_t ids[8];

	ASSERT_EQ(0, vg_set_backend(g, VG_TX, -1));
	ASSERT_EQ(0, zc_stats(g, &s));
	TH_LOG("refused %llu (pinned %llu), offlined %llu", s.offline_refused, s.offline_pinned,
	       s.offlined);
	EXPECT_EQ(4, (long)s.offline_refused);
	EXPECT_EQ(pinned, (long)s.offline_pinned);
	EXPECT_EQ(0, (long)s.offlined);
	EXPECT_EQ(0, reap_all(g, ids, 8, 100)) TH_LOG("a refused buffer's head came back");
	expect_intact(_metadata, h);
}

/* Released: the packets leave, the refused heads come back then, exactly once each. */
static void release_and_reap(struct __test_metadata *_metadata, struct vg_guest *g,
			     struct held *h, int expect)
{
	struct vhost_net_zc_stats s;
	uint32_t ids[16];
	int n;

	plug(false);
	EXPECT_TRUE(ZC_WAIT_FOR(g, s, s.in_flight == 0, 3000));
	n = reap_all(g, ids, expect, 2000);
	n += reap_all(g, ids + n, 16 - n, 200);
	EXPECT_EQ(expect, n);
}

/* S15: a page pinned for DMA (io_uring fixed buffers pin with FOLL_LONGTERM) is refused. */
TEST_F_TIMEOUT(safe, refuse_dma_pinned, 120)
{
	struct vg_guest *g = &self->e.g;
	struct io_uring_params p = { 0 };
	struct held h;
	struct iovec iov;
	uint8_t *pages;
	int ring;

	ASSERT_EQ(0, zc_set(g, VHOST_NET_ZC_SET_TIMEOUT, 20));
	pages = vg_alloc(g, 4 * PAGE, PAGE);
	ASSERT_NE(NULL, pages);
	memset(pages, 1, 4 * PAGE);
	ring = syscall(__NR_io_uring_setup, 4, &p);
	ASSERT_LE(0, ring) TH_LOG("io_uring_setup: %s", strerror(errno));
	iov = (struct iovec){ pages, 4 * PAGE };
	ASSERT_EQ(0, syscall(__NR_io_uring_register, ring, IORING_REGISTER_BUFFERS, &iov, 1))
		TH_LOG("IORING_REGISTER_BUFFERS: %s", strerror(errno));
	send_four(_metadata, g, &h, pages);
	reset_expect_refused(_metadata, g, &h, 4);
	/* The VM reset refuses them too, and says why. */
	EXPECT_EQ(-EBUSY, zc_set(g, VHOST_NET_ZC_VM_RESET, 0));
	expect_intact(_metadata, &h);
	close(ring);
	release_and_reap(_metadata, g, &h, 4);
}

/* S15: a range registered with userfaultfd: refused, memory intact. */
TEST_F_TIMEOUT(safe, refuse_userfaultfd, 120)
{
	struct vg_guest *g = &self->e.g;
	struct uffdio_api api = { .api = UFFD_API };
	struct uffdio_register reg = { .mode = UFFDIO_REGISTER_MODE_MISSING };
	struct held h;
	uint8_t *pages;
	int uffd;

	ASSERT_EQ(0, zc_set(g, VHOST_NET_ZC_SET_TIMEOUT, 20));
	pages = vg_alloc(g, 4 * PAGE, PAGE);
	ASSERT_NE(NULL, pages);
	memset(pages, 1, 4 * PAGE);
	uffd = syscall(__NR_userfaultfd, O_CLOEXEC | O_NONBLOCK);
	ASSERT_LE(0, uffd) TH_LOG("userfaultfd: %s", strerror(errno));
	ASSERT_EQ(0, ioctl(uffd, UFFDIO_API, &api));
	reg.range.start = (uintptr_t)pages;
	reg.range.len = 4 * PAGE;
	ASSERT_EQ(0, ioctl(uffd, UFFDIO_REGISTER, &reg)) TH_LOG("UFFDIO_REGISTER: %s",
								 strerror(errno));
	send_four(_metadata, g, &h, pages);
	reset_expect_refused(_metadata, g, &h, 0);
	EXPECT_EQ(-EOPNOTSUPP, zc_set(g, VHOST_NET_ZC_VM_RESET, 0));
	expect_intact(_metadata, &h);
	close(uffd);
	release_and_reap(_metadata, g, &h, 4);
}

/*
 * S15: a memory cgroup at its limit. Preserve mode allocates no page at reset time (the copy
 * is the guest's next write's), so a VMM whose cgroup has no room left still gets its
 * buffers offlined and returned, its memory intact, and nothing is OOM-killed. The VMM is a
 * child in a cgroup of its own whose memory.max is set to what it uses, right before the
 * reset.
 */
static long read_long(const char *path)
{
	FILE *f = fopen(path, "r");
	long v = -1;

	if (!f)
		return -1;
	if (fscanf(f, "%ld", &v) != 1)
		v = -1;
	fclose(f);
	return v;
}

/* The value of "@key N" in the flat-keyed file @path, or -1. */
static long read_key(const char *path, const char *key)
{
	char name[64];
	long v, found = -1;
	FILE *f = fopen(path, "r");

	if (!f)
		return -1;
	while (fscanf(f, "%63s %ld", name, &v) == 2)
		if (!strcmp(name, key))
			found = v;
	fclose(f);
	return found;
}

#define CG "/sys/fs/cgroup/vnzc-memcg"

TEST_F_TIMEOUT(safe, memcg_at_limit, 120)
{
	int go[2], done[2], status = 0;
	char buf[64];
	pid_t pid;
	long cur;

	if (access("/sys/fs/cgroup/cgroup.controllers", F_OK) &&
	    system("mount -t cgroup2 none /sys/fs/cgroup"))
		SKIP(return, "no cgroup2");
	ASSERT_EQ(0, write_text("/sys/fs/cgroup/cgroup.subtree_control", "+memory"));
	rmdir(CG);
	ASSERT_EQ(0, mkdir(CG, 0755));
	vg_close(&self->e.g);
	ASSERT_EQ(0, pipe(go));
	ASSERT_EQ(0, pipe(done));
	pid = fork();
	ASSERT_LE(0, pid);
	if (pid == 0) {
		struct vhost_net_zc_stats st;
		struct vg_guest g;
		uint8_t *at[4], orig[4][64];
		uint32_t ids[8];
		char c;

		if (child_vmm(&g, self->e.tap_fd, 20, 0))
			_exit(1);
		for (int i = 0; i < 4; i++) {
			uint8_t *page = vg_alloc(&g, PAGE, PAGE);

			if (!page || send_frame(&g, mac_held, ZC_LEN, i, &at[i]) < 0)
				_exit(2);
			(void)page;
			memcpy(orig[i], at[i] + 14, sizeof(orig[i]));
		}
		usleep(300 * 1000);
		/* In the cgroup, at its limit: the parent writes memory.max, then says go. */
		if (write(done[1], "r", 1) != 1 || read(go[0], &c, 1) != 1)
			_exit(3);
		if (vg_set_backend(&g, VG_TX, -1))
			_exit(4);
		if (reap_all(&g, ids, 4, 1000) != 4)
			_exit(5);
		for (int i = 0; i < 4; i++)
			if (memcmp(orig[i], at[i] + 14, sizeof(orig[i])))
				_exit(6);
		if (zc_stats(&g, &st) || st.offlined != 4)
			_exit(7);
		if (write(done[1], "d", 1) != 1 || read(go[0], &c, 1) != 1)
			_exit(8);
		_exit(0);
	}
	/* Only the child writes done and reads go: a dead child ends the parent's reads. */
	close(done[1]);
	close(go[0]);
	ASSERT_EQ(1, read(done[0], buf, 1));
	snprintf(buf, sizeof(buf), "%d", pid);
	ASSERT_EQ(0, write_text(CG "/cgroup.procs", buf));
	/*
	 * Its pages stay charged where it faulted them (a move does not carry charges): the
	 * limit is what the cgroup holds now, so any page it would need now fails to charge.
	 */
	cur = read_long(CG "/memory.current");
	snprintf(buf, sizeof(buf), "%ld", cur > 0 ? cur : 4096);
	ASSERT_EQ(0, write_text(CG "/memory.max", buf));
	TH_LOG("the VMM's cgroup: memory.max = memory.current = %ld bytes", cur);
	ASSERT_EQ(1, write(go[1], "g", 1));
	EXPECT_EQ(1, read(done[0], buf, 1)) TH_LOG("the VMM died in the reset");
	TH_LOG("memory.events: max %ld, oom_kill %ld", read_key(CG "/memory.events", "max"),
	       read_key(CG "/memory.events", "oom_kill"));
	EXPECT_EQ(0, read_key(CG "/memory.events", "oom_kill"));
	ASSERT_EQ(0, write_text(CG "/memory.max", "max"));
	signal(SIGPIPE, SIG_IGN);
	write(go[1], "g", 1);
	ASSERT_EQ(pid, waitpid(pid, &status, 0));
	EXPECT_TRUE(WIFEXITED(status)) TH_LOG("the VMM was killed (signal %d)", WTERMSIG(status));
	if (WIFEXITED(status))
		EXPECT_EQ(0, WEXITSTATUS(status)) TH_LOG("step %d failed", WEXITSTATUS(status));
	rmdir(CG);
	plug(false);
	ASSERT_EQ(0, vg_open(&self->e.g, "/dev/vhost-net-zc", 1 << 16));
}

/*
 * S15: memory remapped since the send (the VMM unplugged and replugged it): the pages
 * mapped there now are not the skb's, so they are skipped (counted), their content
 * untouched, and the heads returned.
 */
TEST_F_TIMEOUT(safe, skip_remapped, 120)
{
	struct vg_guest *g = &self->e.g;
	struct vhost_net_zc_stats s;
	struct held h;
	uint8_t *pages;
	uint32_t ids[8];
	int n;

	ASSERT_EQ(0, zc_set(g, VHOST_NET_ZC_SET_TIMEOUT, 20));
	pages = vg_alloc(g, 4 * PAGE, PAGE);
	ASSERT_NE(NULL, pages);
	send_four(_metadata, g, &h, pages);
	ASSERT_EQ(pages, mmap(pages, 4 * PAGE, PROT_READ | PROT_WRITE,
			      MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED, -1, 0));
	memset(pages, 0x3c, 4 * PAGE);
	ASSERT_EQ(0, vg_set_backend(g, VG_TX, -1));
	n = reap_all(g, ids, 4, 1000);
	ASSERT_EQ(0, zc_stats(g, &s));
	TH_LOG("skipped %llu pages, offlined %llu buffers (%llu pages)", s.offline_skipped_pages,
	       s.offlined, s.offlined_pages);
	EXPECT_EQ(4, n);
	EXPECT_EQ(4, (long)s.offlined);
	/* The frames' pages; their headers' page was not remapped and is offlined. */
	EXPECT_EQ(4, (long)s.offline_skipped_pages);
	for (int i = 0; i < 4 * PAGE; i++) {
		if (pages[i] != 0x3c) {
			EXPECT_EQ(0x3c, pages[i]) TH_LOG("remapped memory changed at byte %d", i);
			break;
		}
	}
	plug(false);
	EXPECT_TRUE(ZC_WAIT_FOR(g, s, s.in_flight == 0, 3000));
}

/*
 * A reset waits only for the buffers whose heads the guest has not had back. Buffer A is
 * offlined by a first reset, its skb left in vnzcd0's plug; buffer B, sent with a 5 s
 * deadline into a second plug on vnzcd1, is released 300 ms into the second reset: the
 * reset returns then, not at B's deadline, although A is still in flight.
 */
static void *release_d1_later(void *arg)
{
	usleep(300 * 1000);
	if (system("tc qdisc change dev vnzcd1 root plug release_indefinite"))
		fprintf(stderr, "# could not release vnzcd1\n");
	return NULL;
}

TEST_F_TIMEOUT(safe, reset_waits_only_live, 120)
{
	struct vg_guest *g = &self->e.g;
	struct vhost_net_zc_stats s;
	pthread_t th;
	uint32_t ids[8];
	long t0, took;

	ASSERT_EQ(0, zc_set(g, VHOST_NET_ZC_SET_TIMEOUT, 20));
	ASSERT_LE(0, send_frame(g, mac_held, ZC_LEN, 1, NULL));
	ASSERT_TRUE(ZC_WAIT_FOR(g, s, s.in_flight == 1, 3000));
	usleep(30 * 1000);
	ASSERT_EQ(0, vg_set_backend(g, VG_TX, -1));
	ASSERT_EQ(1, reap_all(g, ids, 1, 500));
	ASSERT_EQ(0, zc_stats(g, &s));
	ASSERT_EQ(1, (long)s.offlined);	/* A, its skb still held */
	ASSERT_EQ(0, vg_set_backend(g, VG_TX, self->e.tap_fd));
	ASSERT_EQ(0, system("tc qdisc add dev vnzcd1 root plug limit 100000000"));
	ASSERT_EQ(0, zc_set(g, VHOST_NET_ZC_SET_TIMEOUT, 5000));
	ASSERT_LE(0, send_frame(g, mac_free, ZC_LEN, 2, NULL));
	ASSERT_TRUE(ZC_WAIT_FOR(g, s, s.in_flight == 2, 3000));
	ASSERT_EQ(0, pthread_create(&th, NULL, release_d1_later, NULL));
	t0 = now_ms();
	ASSERT_EQ(0, vg_set_backend(g, VG_TX, -1));
	took = now_ms() - t0;
	pthread_join(th, NULL);
	TH_LOG("SET_BACKEND -1 took %ld ms: B released after 300 ms, A still held (5 s deadline)",
	       took);
	EXPECT_LE(250, took);
	EXPECT_GT(2000, took);
	ASSERT_EQ(1, reap_all(g, ids, 1, 500));
	ASSERT_EQ(0, zc_stats(g, &s));
	EXPECT_EQ(1, (long)s.in_flight);
	plug(false);
	EXPECT_TRUE(ZC_WAIT_FOR(g, s, s.in_flight == 0, 3000));
}

/*
 * The same wait, raced: the completion that ends a reset's wait also wakes the TX handler,
 * which reaps the slot (clears its done bit) at once. Whichever of the two looks first,
 * the reset must see the buffer finished and return, not sleep to the deadline. ROUNDS
 * resets each wait for one buffer whose skb is released 10-60 ms into the wait.
 */
struct release_later {
	int nl, ifindex;
	unsigned int delay_us;
};

static void *release_nl_later(void *arg)
{
	struct release_later *r = arg;

	usleep(r->delay_us);
	if (plug_nl(r->nl, r->ifindex, TCQ_PLUG_RELEASE_INDEFINITE))
		fprintf(stderr, "# could not release vnzcd1\n");
	return NULL;
}

TEST_F_TIMEOUT(safe, reset_wait_races_reap, 300)
{
	enum { RACE_ROUNDS = 40, DEADLINE_MS = 3000 };
	struct vg_guest *g = &self->e.g;
	struct vhost_net_zc_stats s;
	struct release_later r;
	unsigned int seed = 7;
	long slow = 0, longest = 0;

	r.nl = netlink_open();
	r.ifindex = if_nametoindex("vnzcd1");
	ASSERT_LE(0, r.nl);
	ASSERT_NE(0, r.ifindex);
	ASSERT_EQ(0, system("tc qdisc add dev vnzcd1 root plug limit 100000000"));
	ASSERT_EQ(0, zc_set(g, VHOST_NET_ZC_SET_TIMEOUT, DEADLINE_MS));
	for (int round = 0; round < RACE_ROUNDS; round++) {
		uint32_t ids[4];
		pthread_t th;
		long t0, took;
		int head, n;

		ASSERT_EQ(0, plug_nl(r.nl, r.ifindex, TCQ_PLUG_BUFFER));
		head = send_frame(g, mac_free, ZC_LEN, round, NULL);
		ASSERT_LE(0, head);
		ASSERT_TRUE(ZC_WAIT_FOR(g, s, s.in_flight == 1, 3000));
		r.delay_us = 10000 + rand_r(&seed) % 50000;
		ASSERT_EQ(0, pthread_create(&th, NULL, release_nl_later, &r));
		t0 = now_ms();
		ASSERT_EQ(0, vg_set_backend(g, VG_TX, -1));
		took = now_ms() - t0;
		pthread_join(th, NULL);
		slow += took > DEADLINE_MS / 2;
		longest = took > longest ? took : longest;
		n = reap_all(g, ids, 4, 1000);
		ASSERT_EQ(1, n) TH_LOG("round %d: %d heads", round, n);
		ASSERT_EQ((uint32_t)head, ids[0]);
		ASSERT_EQ(0, vg_set_backend(g, VG_TX, self->e.tap_fd));
	}
	close(r.nl);
	TH_LOG("%d resets raced the reap of their buffer: %ld waited to the deadline, longest %ld ms",
	       RACE_ROUNDS, slow, longest);
	EXPECT_EQ(0, slow);
}

/* A VMM blocked in a reset (a 60 s deadline) is reaped as soon as it is killed. */
TEST_F_TIMEOUT(safe, kill_in_reset, 120)
{
	int ready[2], status = 0;
	long t0, gone = -1;
	char state = '?';
	pid_t pid;
	char c;

	vg_close(&self->e.g);
	ASSERT_EQ(0, pipe(ready));
	pid = fork();
	ASSERT_LE(0, pid);
	if (pid == 0) {
		struct vg_guest g;

		if (child_vmm(&g, self->e.tap_fd, 60000, 3))
			_exit(1);
		usleep(300 * 1000);
		if (write(ready[1], "r", 1) != 1)
			_exit(1);
		vg_set_backend(&g, VG_TX, -1);	/* waits up to the deadline */
		_exit(2);
	}
	close(ready[1]);
	ASSERT_EQ(1, read(ready[0], &c, 1));
	usleep(500 * 1000);
	state = task_state(pid);
	/* A killable sleep (TASK_KILLABLE) shows as D; the hung-task detector skips it. */
	TH_LOG("the VMM waits in the reset in state %c", state);
	EXPECT_TRUE(state == 'D' || state == 'S');
	t0 = now_ms();
	kill(pid, SIGKILL);
	while (now_ms() - t0 < 5000) {
		if (waitpid(pid, &status, WNOHANG) == pid) {
			gone = now_ms() - t0;
			break;
		}
		usleep(5 * 1000);
	}
	TH_LOG("reaped %ld ms after SIGKILL", gone);
	ASSERT_LE(0, gone);
	EXPECT_GT(1000, gone);
	EXPECT_TRUE(WIFSIGNALED(status));
	close(ready[0]);
	ASSERT_EQ(0, vg_open(&self->e.g, "/dev/vhost-net-zc", 1 << 16));
}

/*
 * S15: private hugetlb memory with the pool exactly sized (no free page for a copy):
 * the offline is refused before anything is zapped; the guest's bytes stay.
 */
FIXTURE(hpool) {
	struct zc_env e;
};

FIXTURE_SETUP(hpool)
{
	/* Exactly the guest's 4 MiB: nothing left for a copy. */
	if (system("echo 0 > /proc/sys/vm/nr_hugepages && echo 2 > /proc/sys/vm/nr_hugepages"))
		SKIP(return, "cannot size the hugetlb pool");
	self->e.mem_flags = VG_MEM_HUGETLB;
	env_setup(_metadata, &self->e, 1ULL << VIRTIO_F_VERSION_1);
	no_captures(&self->e);
}

FIXTURE_TEARDOWN(hpool)
{
	env_teardown(_metadata, &self->e);
	if (system("echo 0 > /proc/sys/vm/nr_hugepages"))
		TH_LOG("could not empty the hugetlb pool");
}

TEST_F_TIMEOUT(hpool, refuse_pool_exhausted, 120)
{
	struct vg_guest *g = &self->e.g;
	struct held h;
	uint8_t *pages;

	ASSERT_EQ(0, zc_set(g, VHOST_NET_ZC_SET_TIMEOUT, 20));
	/* Touch all of guest memory: both huge pages taken from the pool. */
	memset(g->mem + g->mem_used, 0, g->mem_size - g->mem_used);
	pages = vg_alloc(g, 4 * PAGE, PAGE);
	ASSERT_NE(NULL, pages);
	send_four(_metadata, g, &h, pages);
	reset_expect_refused(_metadata, g, &h, 0);
	release_and_reap(_metadata, g, &h, 4);
}

/*
 * Migration-safe: with VHOST_F_LOG_ALL (a live migration in progress), the pages a VM
 * reset zeroes (discard mode) are marked in the dirty log, so the destination gets them
 * again; a page it did not touch is not.
 */
TEST_F_TIMEOUT(safe, vm_reset_logs_dirty, 120)
{
	const size_t map_len = ((VG_GPA_BASE + (1 << 20)) / PAGE / 8 + PAGE - 1) & ~(PAGE - 1ULL);
	struct vg_guest *g = &self->e.g;
	struct vhost_net_zc_stats s;
	uint8_t *bitmap, *pages, *untouched;
	uint32_t ids[8];
	struct held h;
	uint64_t base;

	ASSERT_EQ(0, zc_set(g, VHOST_NET_ZC_SET_TIMEOUT, 20));
	bitmap = mmap(NULL, map_len, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	ASSERT_NE(MAP_FAILED, bitmap);
	base = (uint64_t)(uintptr_t)bitmap;
	ASSERT_EQ(0, ioctl(g->fd, VHOST_SET_LOG_BASE, &base));
	ASSERT_EQ(0, vg_set_features(g, (1ULL << VIRTIO_F_VERSION_1) | (1ULL << VHOST_F_LOG_ALL)));
	pages = vg_alloc(g, 4 * PAGE, PAGE);
	untouched = vg_alloc(g, PAGE, PAGE);
	ASSERT_NE(NULL, pages);
	ASSERT_NE(NULL, untouched);
	memset(untouched, 7, PAGE);
	send_four(_metadata, g, &h, pages);
	memset(bitmap, 0, map_len);
	ASSERT_EQ(0, zc_set(g, VHOST_NET_ZC_VM_RESET, 0));
	ASSERT_EQ(4, reap_all(g, ids, 4, 1000));
	ASSERT_EQ(0, zc_stats(g, &s));
	EXPECT_EQ(4, (long)s.offlined);
	for (int i = 0; i < 4; i++) {
		EXPECT_TRUE(vg_logged(bitmap, vg_gpa(g, h.at[i])))
			TH_LOG("zeroed frame page %d not in the dirty log", i);
		EXPECT_EQ(0, h.at[i][20]) TH_LOG("frame %d not zeroed", i);
	}
	EXPECT_FALSE(vg_logged(bitmap, vg_gpa(g, untouched))) TH_LOG("spurious log bit");
	plug(false);
	EXPECT_TRUE(ZC_WAIT_FOR(g, s, s.in_flight == 0, 3000));
	munmap(bitmap, map_len);
}

/*
 * S12 again, with a writer that pins: O_DIRECT reads from a loop device into the rest of
 * each buffer's page while it is offlined. A read pins the page for its duration
 * (FOLL_PIN, as a device's DMA would); an offline that finds the pin refuses the buffer,
 * which stays in flight and comes back when its skb is freed, and one that does not must
 * leave the read's data where the VMM sees it. Each read brings a block of its own
 * pattern, checked as soon as it returns: a read that went to the skb's old page shows as
 * the previous block's pattern.
 */
#define DIO_OFF		2048
#define DIO_LEN		512
#define DIO_BLOCKS	64

struct dio_work {
	uint8_t *page[K];
	int fd;
	atomic_bool stop;
	long passes, lost, errors;
};

static void dio_block(uint8_t *out, int j)
{
	for (int b = 0; b < DIO_LEN; b++)
		out[b] = (uint8_t)(j * 31 + b + 1);
}

static void *dio_loop(void *arg)
{
	struct dio_work *w = arg;
	uint8_t want[DIO_LEN];
	long k = 0;

	while (!atomic_load(&w->stop)) {
		for (int i = 0; i < K; i++, k++) {
			int j = (int)(k % DIO_BLOCKS);

			if (pread(w->fd, w->page[i] + DIO_OFF, DIO_LEN, (off_t)j * DIO_LEN) !=
			    DIO_LEN) {
				w->errors++;
				continue;
			}
			dio_block(want, j);
			if (memcmp(w->page[i] + DIO_OFF, want, DIO_LEN))
				w->lost++;
		}
		w->passes++;
	}
	return NULL;
}

/* A loop device over a file of DIO_BLOCKS patterned blocks; its O_DIRECT fd, or -errno. */
static int loop_open(const char *backing, char *dev, size_t size)
{
	uint8_t blk[DIO_LEN];
	int ctl, nr, bfd, lfd, fd, e;

	bfd = open(backing, O_RDWR | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
	if (bfd < 0)
		return -errno;
	for (int j = 0; j < DIO_BLOCKS; j++) {
		dio_block(blk, j);
		if (write(bfd, blk, DIO_LEN) != DIO_LEN)
			goto fail_bfd;
	}
	ctl = open("/dev/loop-control", O_RDWR | O_CLOEXEC);
	if (ctl < 0)
		goto fail_bfd;
	nr = ioctl(ctl, LOOP_CTL_GET_FREE);
	close(ctl);
	if (nr < 0)
		goto fail_bfd;
	snprintf(dev, size, "/dev/loop%d", nr);
	lfd = open(dev, O_RDWR | O_CLOEXEC);
	if (lfd < 0)
		goto fail_bfd;
	if (ioctl(lfd, LOOP_SET_FD, bfd)) {
		e = -errno;
		close(lfd);
		close(bfd);
		return e;
	}
	close(bfd);
	fd = open(dev, O_RDONLY | O_DIRECT | O_CLOEXEC);
	e = -errno;
	if (fd < 0)
		ioctl(lfd, LOOP_CLR_FD);
	close(lfd);
	return fd < 0 ? e : fd;
fail_bfd:
	e = -errno;
	close(bfd);
	return e ? e : -EIO;
}

static void loop_close(const char *dev, int fd)
{
	int lfd = open(dev, O_RDWR | O_CLOEXEC);

	close(fd);
	if (lfd >= 0) {
		ioctl(lfd, LOOP_CLR_FD);
		close(lfd);
	}
}

TEST_F_TIMEOUT(safe, preserve_odirect_reads, 600)
{
	enum { DIO_ROUNDS = 80 };
	struct vg_guest *g = &self->e.g;
	struct vhost_net_zc_stats s;
	struct dio_work w = { 0 };
	uint8_t *hdrs, *mem, orig[K][ZC_LEN];
	uint64_t offlined0, pinned0;
	long returned = 0, completed = 0;
	char dev[32];
	pthread_t th;
	int nl, ifindex;

	w.fd = loop_open("/tmp/vnzc-odirect", dev, sizeof(dev));
	ASSERT_LE(0, w.fd) TH_LOG("loop device: %s", strerror(-w.fd));
	nl = netlink_open();
	ifindex = if_nametoindex("vnzcd0");
	ASSERT_LE(0, nl);
	ASSERT_NE(0, ifindex);
	ASSERT_EQ(0, zc_set(g, VHOST_NET_ZC_SET_TIMEOUT, 1));
	hdrs = vg_alloc(g, PAGE, PAGE);
	mem = vg_alloc(g, K * PAGE, PAGE);
	ASSERT_NE(NULL, hdrs);
	ASSERT_NE(NULL, mem);
	for (int i = 0; i < K; i++) {
		w.page[i] = mem + i * PAGE;
		memset(w.page[i], 0, PAGE);
	}
	ASSERT_EQ(0, zc_stats(g, &s));
	offlined0 = s.offlined;
	pinned0 = s.offline_pinned;
	ASSERT_EQ(0, pthread_create(&th, NULL, dio_loop, &w));
	for (int r = 0; r < DIO_ROUNDS; r++) {
		uint32_t ids[2 * K];
		int heads[K], n, m;

		send_expire_reset(_metadata, g, hdrs, w.page, orig, r, heads);
		n = reap_all(g, ids, K, 500);
		for (int i = 0; i < K; i++) {
			ASSERT_EQ(0, memcmp(w.page[i], orig[i], ZC_LEN))
				TH_LOG("round %d: frame %d changed", r, i);
		}
		ASSERT_EQ(0, vg_set_backend(g, VG_TX, self->e.tap_fd));
		/* The refused ones come back when their skbs are freed. */
		ASSERT_EQ(0, plug_nl(nl, ifindex, TCQ_PLUG_RELEASE_INDEFINITE));
		ASSERT_TRUE(ZC_WAIT_FOR(g, s, s.in_flight == 0, 5000));
		m = reap_all(g, ids + n, 2 * K - n, K - n ? 2000 : 20);
		m += reap_all(g, ids + n + m, 2 * K - n - m, 20);
		ASSERT_EQ(0, plug_nl(nl, ifindex, TCQ_PLUG_BUFFER));
		ASSERT_EQ(K, n + m) TH_LOG("round %d: %d + %d heads returned", r, n, m);
		ASSERT_EQ(K, heads_seen(ids, n + m, heads));
		returned += n;
		completed += m;
	}
	atomic_store(&w.stop, true);
	pthread_join(th, NULL);
	close(nl);
	loop_close(dev, w.fd);
	unlink("/tmp/vnzc-odirect");
	ASSERT_EQ(0, zc_stats(g, &s));
	TH_LOG("%d rounds: %llu buffers offlined, %llu refused for a pin; %ld heads returned by the reset, %ld at completion; O_DIRECT reader %ld passes, %ld lost reads, %ld errors",
	       DIO_ROUNDS, s.offlined - offlined0, s.offline_pinned - pinned0, returned,
	       completed, w.passes, w.lost, w.errors);
	EXPECT_LE(DIO_ROUNDS * K / 4, (long)(s.offlined - offlined0));
	EXPECT_EQ(0, w.lost);
	EXPECT_EQ(0, w.errors);
	EXPECT_LT(0, w.passes);
}

/* TLB flushes done so far, all kinds (CONFIG_DEBUG_TLBFLUSH's /proc/vmstat counters), or -1. */
static long tlb_flushes(void)
{
	static const char *const keys[] = {
		"nr_tlb_remote_flush", "nr_tlb_local_flush_all", "nr_tlb_local_flush_one",
	};
	long sum = 0;

	for (size_t i = 0; i < sizeof(keys) / sizeof(keys[0]); i++) {
		long v = read_key("/proc/vmstat", keys[i]);

		if (v < 0)
			return -1;
		sum += v;
	}
	return sum;
}

/*
 * Issue 14 item 6: the victims of one reset are offlined under one lock and one TLB
 * flush. N frames, each in a page of its own with a page between them (a span the kernel
 * flushes whole rather than page by page), expire and are offlined by one SET_BACKEND -1;
 * the TLB flushes counted meanwhile stay far below one per page.
 */
TEST_F_TIMEOUT(safe, one_flush_per_reset, 120)
{
	enum { N = 32 };
	struct vg_guest *g = &self->e.g;
	struct vhost_net_zc_stats s;
	uint64_t base, offlined0, pages0;
	long before, after, t0, t1;
	uint32_t ids[2 * N];
	uint8_t *hdrs, *mem;
	int n;

	before = tlb_flushes();
	ASSERT_LE(0, before) TH_LOG("no nr_tlb_* in /proc/vmstat: CONFIG_DEBUG_TLBFLUSH is off");
	ASSERT_EQ(0, zc_set(g, VHOST_NET_ZC_SET_TIMEOUT, 1));
	hdrs = vg_alloc(g, PAGE, PAGE);
	mem = vg_alloc(g, 2 * N * PAGE, PAGE);
	ASSERT_NE(NULL, hdrs);
	ASSERT_NE(NULL, mem);
	/* Base pages: a huge page's split would add flushes of its own. */
	madvise(mem, 2 * N * PAGE, MADV_NOHUGEPAGE);
	memset(mem, 0, 2 * N * PAGE);
	ASSERT_EQ(0, zc_stats(g, &s));
	base = s.sent_zerocopy;
	offlined0 = s.offlined;
	pages0 = s.offlined_pages;
	for (int i = 0; i < N; i++)
		ASSERT_LE(0, post_at(g, hdrs + i * 64, mem + 2 * i * PAGE, mac_held, i));
	ASSERT_TRUE(ZC_WAIT_FOR(g, s, s.sent_zerocopy + s.sent_copy >= base + N, 5000));
	ASSERT_EQ(base + N, s.sent_zerocopy);
	usleep(2000);	/* past the 1 ms deadline */
	before = tlb_flushes();
	t0 = now_us();
	ASSERT_EQ(0, vg_set_backend(g, VG_TX, -1));
	t1 = now_us();
	after = tlb_flushes();
	n = reap_all(g, ids, 2 * N, 2000);
	ASSERT_EQ(0, zc_stats(g, &s));
	TH_LOG("%llu buffers (%llu pages) offlined by one reset in %ld us: %ld TLB flushes",
	       s.offlined - offlined0, s.offlined_pages - pages0, t1 - t0, after - before);
	EXPECT_EQ(N, n);
	EXPECT_EQ(N, (long)(s.offlined - offlined0));
	/* Each buffer counts its frame's page and the page of all the headers. */
	EXPECT_EQ(2 * N, (long)(s.offlined_pages - pages0));
	EXPECT_GT(N / 4, after - before) TH_LOG("about one flush per page");
	ASSERT_EQ(0, vg_set_backend(g, VG_TX, self->e.tap_fd));
	plug(false);
	EXPECT_TRUE(ZC_WAIT_FOR(g, s, s.in_flight == 0, 5000));
}

/*
 * Reclaim on expiry offlines guest memory without a reset: the owner may set it, or a
 * launcher with CAP_NET_ADMIN; any other holder of the file gets EPERM.
 */
TEST(reclaim_needs_owner)
{
	int status = 0;
	pid_t pid = fork();

	ASSERT_LE(0, pid);
	if (pid == 0) {
		struct __user_cap_header_struct h = { .version = _LINUX_CAPABILITY_VERSION_3 };
		struct __user_cap_data_struct d[2];
		struct vg_guest g;

		if (syscall(__NR_capget, &h, d))
			_exit(10);
		d[CAP_NET_ADMIN / 32].effective &= ~(1U << (CAP_NET_ADMIN % 32));
		if (syscall(__NR_capset, &h, d))
			_exit(11);
		if (vg_open(&g, "/dev/vhost-net-zc", 1 << 16))
			_exit(12);
		if (zc_set(&g, VHOST_NET_ZC_SET_RECLAIM, 1) != -EPERM)
			_exit(13);
		if (vg_set_owner(&g) || zc_set(&g, VHOST_NET_ZC_SET_RECLAIM, 1))
			_exit(14);
		_exit(0);
	}
	ASSERT_EQ(pid, waitpid(pid, &status, 0));
	ASSERT_TRUE(WIFEXITED(status));
	EXPECT_EQ(0, WEXITSTATUS(status)) TH_LOG("step %d failed (13: not EPERM without owner)",
						 WEXITSTATUS(status));
}

/* The first version's GET_STATS command still answers, with that version's bytes only. */
TEST(stats_v1_command)
{
	struct vhost_net_zc_stats s;
	struct vg_guest g;

	ASSERT_EQ(0, vg_open(&g, "/dev/vhost-net-zc", 1 << 16));
	ASSERT_EQ(0, zc_set(&g, VHOST_NET_ZC_SET_TIMEOUT, 321));
	memset(&s, 0xee, sizeof(s));
	ASSERT_EQ(0, ioctl(g.fd, ZC_GET_STATS_V1, &s));
	EXPECT_EQ(321U, s.timeout_ms);
	EXPECT_EQ(0xeeeeeeeeeeeeeeeeULL, s.offline_pinned);
	EXPECT_EQ(0xeeeeeeeeeeeeeeeeULL, s.offline_skipped_pages);
	ASSERT_EQ(0, ioctl(g.fd, VHOST_NET_ZC_GET_STATS, &s));
	EXPECT_EQ(0ULL, s.offline_pinned);
	vg_close(&g);
}

TEST_HARNESS_MAIN
