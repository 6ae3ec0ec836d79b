// SPDX-License-Identifier: GPL-2.0
/*
 * Zero-copy TX on /dev/vhost-net-zc, observed where the skbs go: the backend is a port of a
 * bridge whose two other ports are dummies; frames for 02:00:00:00:00:d0 leave through
 * vnzcd0, whose root qdisc is plug (it holds every skb until released), frames for
 * ...:d1 through vnzcd1, which frees them at once. A frame sent zero-copy is returned
 * to the guest only when its skb is freed: held while plugged, in the order the stack frees
 * them. Packet sockets (ETH_P_ALL) on the dummies see what leaves, to compare bytes.
 *
 * Building the fixture runs a dozen ip/tc/bridge commands, which take 15 s or more in the
 * emulated test VM: each test gets 120 s rather than the harness's default 30.
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <sys/time.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>
#include <net/if.h>
#include <linux/if_ether.h>
#include <linux/if_packet.h>
#include <linux/if_tun.h>
#include <linux/virtio_config.h>

#include "../include/uapi/linux/vhost_net_zc.h"
#include "zc_env.h"

FIXTURE(zc) {
	struct zc_env e;
};

FIXTURE_SETUP(zc)
{
	env_setup(_metadata, &self->e, 1ULL << VIRTIO_F_VERSION_1);
}

FIXTURE_TEARDOWN(zc)
{
	env_teardown(_metadata, &self->e);
}

/* The same device with ring features a guest driver may negotiate. */
FIXTURE(zc_ring) {
	struct zc_env e;
};

FIXTURE_VARIANT(zc_ring) {
	uint64_t features;
	bool indirect;
};

FIXTURE_VARIANT_ADD(zc_ring, event_idx) {
	.features = (1ULL << VIRTIO_F_VERSION_1) | (1ULL << VIRTIO_RING_F_EVENT_IDX),
};

FIXTURE_VARIANT_ADD(zc_ring, indirect) {
	.features = (1ULL << VIRTIO_F_VERSION_1) | (1ULL << VIRTIO_RING_F_INDIRECT_DESC),
	.indirect = true,
};

FIXTURE_SETUP(zc_ring)
{
	env_setup(_metadata, &self->e, variant->features);
}

FIXTURE_TEARDOWN(zc_ring)
{
	env_teardown(_metadata, &self->e);
}

/* A frame to the free port comes back once the dummy has freed it, byte-exact. */
TEST_F_TIMEOUT(zc, completes_when_freed, 120)
{
	uint8_t *frame;
	int head;

	head = send_frame(&self->e.g, mac_free, ZC_LEN, 1, &frame);
	ASSERT_LE(0, head);
	expect_head(_metadata, &self->e.g, head, 3000);
	expect_frame(_metadata, self->e.cap_free, frame, ZC_LEN);
}

/* Zero copy: the head stays with the device while the skb sits in the plugged qdisc. */
TEST_F_TIMEOUT(zc, held_until_freed, 120)
{
	uint8_t *frame;
	uint32_t id;
	int head;

	head = send_frame(&self->e.g, mac_held, ZC_LEN, 2, &frame);
	ASSERT_LE(0, head);
	EXPECT_EQ(0, reap_all(&self->e.g, &id, 1, 500))
		TH_LOG("head %u returned while its skb is held: not zero-copy", id);
	plug(false);
	expect_head(_metadata, &self->e.g, head, 3000);
	expect_frame(_metadata, self->e.cap_held, frame, ZC_LEN);
}

/* Below copy_threshold the frame is copied: returned at once even though it is held. */
TEST_F_TIMEOUT(zc, short_frames_copied, 120)
{
	uint8_t *frame;
	int head;

	head = send_frame(&self->e.g, mac_held, 100, 3, &frame);
	ASSERT_LE(0, head);
	expect_head(_metadata, &self->e.g, head, 3000);
	plug(false);
	expect_frame(_metadata, self->e.cap_held, frame, 100);
	EXPECT_EQ(0, vg_zc_stat("sent_zerocopy"));
}

/* No head-of-line blocking: a later frame freed first is returned first. */
TEST_F_TIMEOUT(zc, out_of_order, 120)
{
	uint32_t ids[2];
	int held, freed;

	held = send_frame(&self->e.g, mac_held, ZC_LEN, 4, NULL);
	ASSERT_LE(0, held);
	freed = send_frame(&self->e.g, mac_free, ZC_LEN, 5, NULL);
	ASSERT_LE(0, freed);
	ASSERT_EQ(1, reap_all(&self->e.g, ids, 2, 1000));
	EXPECT_EQ((uint32_t)freed, ids[0]);
	plug(false);
	ASSERT_EQ(1, reap_all(&self->e.g, ids, 1, 3000));
	EXPECT_EQ((uint32_t)held, ids[0]);
}

/*
 * With event-idx (interrupts as the guest's used_event asks) or an indirect table, a frame
 * held is still returned when freed, after a later one that was freed first.
 */
TEST_F_TIMEOUT(zc_ring, held_then_out_of_order, 120)
{
	uint8_t *frame;
	uint32_t ids[2];
	int held, freed;

	held = post_frame(&self->e.g, mac_held, ZC_LEN, 30, &frame, variant->indirect);
	ASSERT_LE(0, held);
	freed = post_frame(&self->e.g, mac_free, ZC_LEN, 31, NULL, variant->indirect);
	ASSERT_LE(0, freed);
	ASSERT_EQ(1, reap_all(&self->e.g, ids, 2, 1000));
	EXPECT_EQ((uint32_t)freed, ids[0]);
	plug(false);
	expect_head(_metadata, &self->e.g, held, 3000);
	expect_frame(_metadata, self->e.cap_held, frame, ZC_LEN);
	EXPECT_EQ(2, vg_zc_stat("sent_zerocopy"));
}

/*
 * VIRTIO_F_IN_ORDER: heads go back in the order the guest made the buffers available, so
 * a frame freed at once, and a short one copied, wait for a zero-copy frame taken before
 * them; a stuck one holds them no longer than its deadline.
 */
FIXTURE(zc_in_order) {
	struct zc_env e;
};

FIXTURE_SETUP(zc_in_order)
{
	env_setup(_metadata, &self->e, (1ULL << VIRTIO_F_VERSION_1) | (1ULL << VIRTIO_F_IN_ORDER));
}

FIXTURE_TEARDOWN(zc_in_order)
{
	env_teardown(_metadata, &self->e);
}

/* Sends a held zero-copy frame, a freed zero-copy one and a copied one; their heads. */
static void send_three(struct __test_metadata *_metadata, struct vg_guest *g, int heads[3],
		       uint8_t **held, unsigned int seed)
{
	heads[0] = send_frame(g, mac_held, ZC_LEN, seed, held);
	ASSERT_LE(0, heads[0]);
	heads[1] = send_frame(g, mac_free, ZC_LEN, seed + 1, NULL);
	ASSERT_LE(0, heads[1]);
	heads[2] = send_frame(g, mac_free, 100, seed + 2, NULL);
	ASSERT_LE(0, heads[2]);
}

/* Nothing comes back while the first frame is held; all three, in order, once freed. */
TEST_F_TIMEOUT(zc_in_order, held_then_in_order, 120)
{
	struct vg_guest *g = &self->e.g;
	struct vhost_net_zc_stats s;
	int heads[3], next = 0, n;
	uint8_t *frame;

	/* A deadline far beyond the test's waits. */
	ASSERT_EQ(0, zc_set(g, VHOST_NET_ZC_SET_TIMEOUT, 60000));
	send_three(_metadata, g, heads, &frame, 30);
	/* The freed frame's completion came, and the copy: both wait for the held one. */
	ASSERT_TRUE(ZC_WAIT_FOR(g, s, s.sent_zerocopy == 2 && s.completed == 1, 3000))
		TH_LOG("%llu sent zero-copy, %llu completed", s.sent_zerocopy, s.completed);
	n = vg_reap_in_order(g, VG_TX, heads, 3, &next, 3, NULL, 500);
	EXPECT_EQ(0, n) TH_LOG("%d heads back while the first is held (-EPROTO: out of order)", n);
	plug(false);
	n = vg_reap_in_order(g, VG_TX, heads, 3, &next, 3, NULL, 3000);
	EXPECT_EQ(3, n) TH_LOG("%d heads back in order of 3 (-EPROTO: out of order)", n);
	expect_frame(_metadata, self->e.cap_held, frame, ZC_LEN);
}

/*
 * The held frame's deadline (50 ms) passes with the qdisc still plugged: its pages are
 * offlined and the three heads come back in order without a reset, and without reclaim
 * on expiry turned on; the frame leaves byte-exact when the qdisc is released.
 */
TEST_F_TIMEOUT(zc_in_order, stuck_head_offlined_at_deadline, 120)
{
	struct vg_guest *g = &self->e.g;
	struct vhost_net_zc_stats s;
	int heads[3], next = 0, n;
	uint8_t *frame;
	long start;

	ASSERT_EQ(0, zc_set(g, VHOST_NET_ZC_SET_TIMEOUT, 50));
	start = now_ms();
	send_three(_metadata, g, heads, &frame, 40);
	n = vg_reap_in_order(g, VG_TX, heads, 3, &next, 3, NULL, 3000);
	ASSERT_EQ(3, n) TH_LOG("%d heads back in order of 3 (-EPROTO: out of order)", n);
	TH_LOG("the three heads back %ld ms after the first send", now_ms() - start);
	ASSERT_EQ(0, zc_stats(g, &s));
	EXPECT_EQ(0U, s.reclaim);
	EXPECT_EQ(1ULL, s.offlined);
	EXPECT_LT(0ULL, s.held_pages);
	EXPECT_EQ(1ULL, s.in_flight);
	plug(false);
	expect_frame(_metadata, self->e.cap_held, frame, ZC_LEN);
	EXPECT_TRUE(ZC_WAIT_FOR(g, s, s.in_flight == 0 && s.held_pages == 0, 3000));
}

/*
 * The same in private hugetlb memory, whose pages cannot be made copy-on-write in place
 * (they would be zapped and refilled from the pool, with a window in which the running
 * guest's own accesses can see zeros or lose a write): the stuck head's offline at its
 * deadline is refused, though the pool has pages to spare, and the three heads wait for
 * the skb, then come back in order, the frame intact.
 */
FIXTURE(zc_in_order_huge) {
	struct zc_env e;
};

FIXTURE_SETUP(zc_in_order_huge)
{
	if (system("echo 8 > /proc/sys/vm/nr_hugepages"))
		TH_LOG("could not size the hugetlb pool");
	self->e.mem_flags = VG_MEM_HUGETLB;
	env_setup(_metadata, &self->e, (1ULL << VIRTIO_F_VERSION_1) | (1ULL << VIRTIO_F_IN_ORDER));
}

FIXTURE_TEARDOWN(zc_in_order_huge)
{
	env_teardown(_metadata, &self->e);
	if (system("echo 0 > /proc/sys/vm/nr_hugepages"))
		TH_LOG("could not empty the hugetlb pool");
}

TEST_F_TIMEOUT(zc_in_order_huge, stuck_head_not_zapped, 120)
{
	struct vg_guest *g = &self->e.g;
	struct vhost_net_zc_stats s;
	int heads[3], next = 0, n;
	uint8_t *frame;

	ASSERT_EQ(0, zc_set(g, VHOST_NET_ZC_SET_TIMEOUT, 50));
	send_three(_metadata, g, heads, &frame, 50);
	ASSERT_TRUE(ZC_WAIT_FOR(g, s, s.offline_refused == 1, 3000))
		TH_LOG("%llu expired, %llu offlined, %llu refused", s.expired, s.offlined,
		       s.offline_refused);
	n = vg_reap_in_order(g, VG_TX, heads, 3, &next, 3, NULL, 300);
	EXPECT_EQ(0, n) TH_LOG("%d heads back while the first is stuck", n);
	ASSERT_EQ(0, zc_stats(g, &s));
	EXPECT_EQ(0ULL, s.offlined);
	plug(false);
	n = vg_reap_in_order(g, VG_TX, heads, 3, &next, 3, NULL, 3000);
	EXPECT_EQ(3, n) TH_LOG("%d heads back in order of 3 (-EPROTO: out of order)", n);
	expect_frame(_metadata, self->e.cap_held, frame, ZC_LEN);
}

/*
 * At most a quarter of the ring is in flight (64 of 256): the frames beyond are copied and
 * returned at once; after the release every head comes back exactly once.
 */
TEST_F_TIMEOUT(zc, in_flight_limit, 120)
{
	enum { FRAMES = 80, LIMIT = RING / 4 };
	uint32_t ids[FRAMES];
	int heads[FRAMES], n;

	for (int i = 0; i < FRAMES; i++) {
		heads[i] = send_frame(&self->e.g, mac_held, ZC_LEN, 10 + i, NULL);
		ASSERT_LE(0, heads[i]);
	}
	n = reap_all(&self->e.g, ids, FRAMES, 1000);
	EXPECT_EQ(FRAMES - LIMIT, n) TH_LOG("%d heads returned while plugged", n);
	plug(false);
	n += reap_all(&self->e.g, ids + n, FRAMES - n, 3000);
	ASSERT_EQ(FRAMES, n);
	expect_heads_once(_metadata, ids, n, heads, FRAMES);
}

/*
 * Buffers the stack has released are reaped inside the send loop, so the in-flight limit
 * (a quarter of the ring) counts only what is really outstanding: 120 frames queued at
 * once, to the port that frees them at once, go zero-copy in one handler run (at least
 * 95%), and every head comes back exactly once.
 */
TEST_F_TIMEOUT(zc, reaped_in_send_loop, 120)
{
	enum { FRAMES = 120 };	/* two descriptors each: 240 of the ring's 256 */
	const uint64_t kick = 1;
	uint32_t ids[FRAMES];
	int heads[FRAMES], n;
	long zc;

	/* Nobody captures what leaves: delivery to a packet socket copies a frame's pages. */
	close(self->e.cap_free);
	close(self->e.cap_held);
	self->e.cap_free = self->e.cap_held = -1;
	/* Queued with no backend, so that the first handler run after the attach sends all. */
	ASSERT_EQ(0, vg_set_backend(&self->e.g, VG_TX, -1));
	for (int i = 0; i < FRAMES; i++) {
		heads[i] = send_frame(&self->e.g, mac_free, ZC_LEN, 40 + i, NULL);
		ASSERT_LE(0, heads[i]);
	}
	ASSERT_EQ(0, vg_set_backend(&self->e.g, VG_TX, self->e.tap_fd));
	ASSERT_EQ(8, write(self->e.g.vq[VG_TX].kick_fd, &kick, 8));
	n = reap_all(&self->e.g, ids, FRAMES, 5000);
	ASSERT_EQ(FRAMES, n);
	expect_heads_once(_metadata, ids, n, heads, FRAMES);
	zc = vg_zc_stat("sent_zerocopy");
	TH_LOG("%ld of %d frames sent zero-copy", zc, FRAMES);
	EXPECT_LE(FRAMES * 95 / 100, zc);
}

/* SET_BACKEND to another tap waits for the old backend's buffers, and returns them. */
TEST_F_TIMEOUT(zc, backend_change_returns_heads, 120)
{
	char other[IFNAMSIZ];
	uint32_t id;
	int head, fd, r;

	head = send_frame(&self->e.g, mac_held, ZC_LEN, 6, NULL);
	ASSERT_LE(0, head);
	EXPECT_EQ(0, reap_all(&self->e.g, &id, 1, 300));
	fd = vg_tap_open(other, sizeof(other));
	ASSERT_LE(0, fd);
	/* Released meanwhile by a child, as a NIC would finish its DMA. */
	if (fork() == 0) {
		usleep(200 * 1000);
		plug(false);
		_exit(0);
	}
	r = vg_set_backend(&self->e.g, VG_TX, fd);
	EXPECT_EQ(0, r);
	wait(NULL);
	ASSERT_EQ(1, reap_all(&self->e.g, &id, 1, 100)) TH_LOG("head not returned by SET_BACKEND");
	EXPECT_EQ((uint32_t)head, id);
	EXPECT_EQ(0, vg_set_backend(&self->e.g, VG_TX, -1));
	close(fd);
}


/*
 * S3: buffers held past the timeout (timeout_ms, 1000 by default) are counted expired and
 * stay with the device; once the stack frees them they come back and the counters of what
 * is in flight return to zero.
 */
TEST_F_TIMEOUT(zc, expired_after_timeout, 120)
{
	enum { FRAMES = 3 };
	uint32_t ids[FRAMES];
	long sent, expired_early;

	sent = now_ms();
	for (int i = 0; i < FRAMES; i++)
		ASSERT_LE(0, send_frame(&self->e.g, mac_held, ZC_LEN, 20 + i, NULL));
	EXPECT_EQ(0, reap_all(&self->e.g, ids, FRAMES, 300));
	EXPECT_EQ(FRAMES, vg_zc_stat("in_flight"));
	/* Reading debugfs takes a while in the VM: only meaningful well before the timeout. */
	expired_early = vg_zc_stat("in_flight_expired");
	if (now_ms() - sent < 800) {
		EXPECT_EQ(0, expired_early);
	} else {
		TH_LOG("too slow to see the buffers before their deadline (%ld ms)",
		       now_ms() - sent);
	}
	usleep(1500 * 1000);
	EXPECT_EQ(FRAMES, vg_zc_stat("in_flight_expired"));
	EXPECT_EQ(FRAMES, vg_zc_stat("expired"));
	EXPECT_EQ(FRAMES, vg_zc_stat("sent_zerocopy"));
	EXPECT_EQ(0, reap_all(&self->e.g, ids, FRAMES, 100)) TH_LOG("expired buffers returned");
	plug(false);
	EXPECT_EQ(FRAMES, reap_all(&self->e.g, ids, FRAMES, 3000));
	EXPECT_EQ(0, vg_zc_stat("in_flight"));
	EXPECT_EQ(0, vg_zc_stat("in_flight_expired"));
	EXPECT_EQ(FRAMES, vg_zc_stat("completed"));
	EXPECT_EQ(FRAMES, vg_zc_stat("expired"));
}

/*
 * S8: after the device is closed with skbs still in flight, the module cannot be unloaded
 * (the skbs point at its completion); once they are freed it can. Reloads it after.
 */
TEST_F_TIMEOUT(zc, rmmod_refused_while_in_flight, 120)
{
	const char *ko = getenv("VNZC_KO");
	long sent, left, t0, waited;
	uint32_t id;
	int r, fd;

	if (!ko)
		SKIP(return, "VNZC_KO (the module's path, to reload it) is not set");
	sent = now_ms();
	ASSERT_LE(0, send_frame(&self->e.g, mac_held, ZC_LEN, 7, NULL));
	EXPECT_EQ(0, reap_all(&self->e.g, &id, 1, 300));
	/* Close 800 ms after the send: 200 ms before the buffer's deadline (timeout_ms=1000). */
	left = 800 - (now_ms() - sent);
	if (left > 0)
		usleep(left * 1000);
	t0 = now_ms();
	vg_close(&self->e.g);
	waited = now_ms() - t0;
	TH_LOG("close %ld ms after the send, with the buffer in flight, took %ld ms",
	       t0 - sent, waited);
	/* The close waits until the buffer's deadline, not a whole timeout from the close. */
	EXPECT_GT(700, waited);

	r = syscall(SYS_delete_module, "vhost_net_zc", O_NONBLOCK);
	EXPECT_EQ(-1, r);
	EXPECT_TRUE(errno == EWOULDBLOCK || errno == EBUSY) TH_LOG("delete_module: %s",
								  strerror(errno));
	EXPECT_EQ(0, system("dmesg | grep -q 'zero-copy buffers in flight'"));

	plug(false);
	for (int tries = 0; tries < 100; tries++) {
		r = syscall(SYS_delete_module, "vhost_net_zc", O_NONBLOCK);
		if (r == 0 || errno != EWOULDBLOCK)
			break;
		usleep(50 * 1000);
	}
	ASSERT_EQ(0, r) TH_LOG("unload after the release: %s", strerror(errno));

	fd = open(ko, O_RDONLY | O_CLOEXEC);
	ASSERT_LE(0, fd) TH_LOG("%s: %s", ko, strerror(errno));
	ASSERT_EQ(0, syscall(SYS_finit_module, fd, "", 0)) TH_LOG("reload: %s", strerror(errno));
	close(fd);
}

TEST_HARNESS_MAIN
