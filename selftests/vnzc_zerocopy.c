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

#include "kselftest_harness.h"
#include "vhost_guest.h"

#define TEST_ETHERTYPE	0x88b5
#define HDR_LEN		sizeof(struct virtio_net_hdr_mrg_rxbuf)
#define RING		256
#define ZC_LEN		1000	/* above the default copy_threshold (256) */

static const uint8_t mac_held[6] = { 0x02, 0, 0, 0, 0, 0xd0 };
static const uint8_t mac_free[6] = { 0x02, 0, 0, 0, 0, 0xd1 };
static const uint8_t mac_src[6] = { 0x02, 0, 0, 0, 0, 0x02 };

/* The bridge fixture and the device on it; the same for every FIXTURE below. */
struct zc_env {
	struct vg_guest g;
	char tap[IFNAMSIZ];
	int tap_fd;
	int cap_held;	/* ETH_P_ALL on vnzcd0 */
	int cap_free;	/* ETH_P_ALL on vnzcd1 */
};

FIXTURE(zc) {
	struct zc_env e;
};

static int capture(struct __test_metadata *_metadata, const char *ifname)
{
	struct sockaddr_ll sll = {
		.sll_family = AF_PACKET,
		.sll_protocol = htons(ETH_P_ALL),
	};
	int fd;

	sll.sll_ifindex = if_nametoindex(ifname);
	EXPECT_NE(0, sll.sll_ifindex);
	fd = socket(AF_PACKET, SOCK_RAW | SOCK_CLOEXEC | SOCK_NONBLOCK, htons(ETH_P_ALL));
	EXPECT_LE(0, fd);
	EXPECT_EQ(0, bind(fd, (struct sockaddr *)&sll, sizeof(sll)));
	return fd;
}

static long now_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* Whether bridge port @port forwards (STP is off, but a port starts out blocking). */
static bool forwarding(const char *port)
{
	char path[128], state[8] = "";
	FILE *f;

	snprintf(path, sizeof(path), "/sys/class/net/%s/brport/state", port);
	f = fopen(path, "r");
	if (!f)
		return false;
	if (!fgets(state, sizeof(state), f))
		state[0] = 0;
	fclose(f);
	return atoi(state) == 3;	/* BR_STATE_FORWARDING */
}

static void plug(bool on)
{
	if (system(on ? "tc qdisc change dev vnzcd0 root plug block" :
			"tc qdisc change dev vnzcd0 root plug release_indefinite"))
		fprintf(stderr, "# tc plug %s failed\n", on ? "block" : "release");
}

static void env_setup(struct __test_metadata *_metadata, struct zc_env *env, uint64_t features)
{
	char cmd[1024];
	int r;

	env->cap_held = env->cap_free = -1;
	env->tap_fd = vg_tap_open(env->tap, sizeof(env->tap));
	ASSERT_LE(0, env->tap_fd) TH_LOG("tap: %s", strerror(-env->tap_fd));
	snprintf(cmd, sizeof(cmd),
		 "ip link del vnzcbr 2>/dev/null; ip link del vnzcd0 2>/dev/null; "
		 "ip link del vnzcd1 2>/dev/null; "
		 "ip link add vnzcbr type bridge && "
		 "ip link add vnzcd0 type dummy && ip link add vnzcd1 type dummy && "
		 "tc qdisc add dev vnzcd0 root plug limit 100000000 && "
		 "ip link set vnzcd0 master vnzcbr && ip link set vnzcd1 master vnzcbr && "
		 "ip link set %s master vnzcbr && "
		 "ip link set vnzcd0 up && ip link set vnzcd1 up && ip link set vnzcbr up && "
		 "ip link set %s up && "
		 "bridge fdb add 02:00:00:00:00:d0 dev vnzcd0 master static && "
		 "bridge fdb add 02:00:00:00:00:d1 dev vnzcd1 master static",
		 env->tap, env->tap);
	ASSERT_EQ(0, system(cmd)) TH_LOG("could not build the bridge fixture");
	env->cap_held = capture(_metadata, "vnzcd0");
	env->cap_free = capture(_metadata, "vnzcd1");
	/* Frames sent before the ports forward would be dropped by the bridge. */
	for (long end = now_ms() + 10000; now_ms() < end; usleep(20 * 1000))
		if (forwarding(env->tap) && forwarding("vnzcd0") && forwarding("vnzcd1"))
			break;
	ASSERT_TRUE(forwarding(env->tap) && forwarding("vnzcd0") && forwarding("vnzcd1"))
		TH_LOG("bridge ports not forwarding after 10 s");

	ASSERT_EQ(0, vg_open(&env->g, "/dev/vhost-net-zc", 1 << 20));
	r = vg_setup(&env->g, features, RING);
	ASSERT_EQ(0, r) TH_LOG("setup: %s", strerror(-r));
	r = vg_set_backend(&env->g, VG_TX, env->tap_fd);
	ASSERT_EQ(0, r) TH_LOG("SET_BACKEND: %s", strerror(-r));
}

static void env_teardown(struct __test_metadata *_metadata, struct zc_env *env)
{
	/* Let held skbs go first, so closing the device does not wait for them. */
	plug(false);
	vg_close(&env->g);
	if (env->cap_held >= 0)
		close(env->cap_held);
	if (env->cap_free >= 0)
		close(env->cap_free);
	close(env->tap_fd);
	if (system("ip link del vnzcbr; ip link del vnzcd0; ip link del vnzcd1"))
		TH_LOG("could not remove the bridge fixture");
}

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

/* Posts a frame of @len bytes to @dst with a header descriptor; returns its head. */
static int post_frame(struct vg_guest *g, const uint8_t *dst, size_t len, unsigned int seed,
		      uint8_t **frame_out, bool indirect)
{
	uint8_t *hdr = vg_alloc(g, HDR_LEN, 8);
	uint8_t *frame = vg_alloc(g, len, 64);
	void *bufs[2] = { hdr, frame };
	uint32_t lens[2] = { HDR_LEN, len };

	if (!hdr || !frame)
		return -ENOMEM;
	memset(hdr, 0, HDR_LEN);
	memcpy(frame, dst, 6);
	memcpy(frame + 6, mac_src, 6);
	frame[12] = TEST_ETHERTYPE >> 8;
	frame[13] = TEST_ETHERTYPE & 0xff;
	for (size_t i = 14; i < len; i++)
		frame[i] = (uint8_t)(i * 13 + seed);
	if (frame_out)
		*frame_out = frame;
	if (indirect)
		return vg_post_indirect(g, VG_TX, bufs, lens, 2, false);
	return vg_post(g, VG_TX, bufs, lens, 2, false);
}

static int send_frame(struct vg_guest *g, const uint8_t *dst, size_t len, unsigned int seed,
		      uint8_t **frame_out)
{
	return post_frame(g, dst, len, seed, frame_out, false);
}

/* Reaps what is in the used ring, waiting up to @ms for the first entry; returns count. */
static int reap_all(struct vg_guest *g, uint32_t *ids, int max, int ms)
{
	uint32_t len;
	int n = 0;

	for (int waited = 0; n < max; ) {
		if (vg_reap(g, VG_TX, &ids[n], &len)) {
			n++;
			continue;
		}
		if (waited >= ms)
			break;
		vg_wait_call(g, VG_TX, 50);
		waited += 50;
	}
	return n;
}

/*
 * Receives our next frame (by ethertype) from @fd into @buf within 5 s; returns its length
 * or -1. Timed with poll(), whose timeouts are hrtimers: socket timeouts count jiffies,
 * which lag far behind real time in an emulated VM.
 */
static ssize_t recv_ours(int fd, uint8_t *buf, size_t size)
{
	for (long end = now_ms() + 5000; now_ms() < end; ) {
		struct pollfd p = { .fd = fd, .events = POLLIN };
		ssize_t n;

		if (poll(&p, 1, 100) <= 0)
			continue;
		n = recv(fd, buf, size, 0);
		if (n >= 14 && buf[12] == (TEST_ETHERTYPE >> 8) && buf[13] == (TEST_ETHERTYPE & 0xff))
			return n;
	}
	return -1;
}

/* The next used entry, within @ms, is @head. */
static void expect_head(struct __test_metadata *_metadata, struct vg_guest *g, int head, int ms)
{
	uint32_t id;

	ASSERT_EQ(1, reap_all(g, &id, 1, ms)) TH_LOG("head %d not returned", head);
	EXPECT_EQ((uint32_t)head, id);
}

/* The next frame of ours leaving through @fd's port is @frame, byte for byte. */
static void expect_frame(struct __test_metadata *_metadata, int fd, const uint8_t *frame,
			 size_t len)
{
	uint8_t got[2048];

	ASSERT_EQ((ssize_t)len, recv_ours(fd, got, sizeof(got)));
	EXPECT_EQ(0, memcmp(got, frame, len));
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
 * At most a quarter of the ring is in flight (64 of 256): the frames beyond are copied and
 * returned at once; after the release every head comes back exactly once.
 */
TEST_F_TIMEOUT(zc, in_flight_limit, 120)
{
	enum { FRAMES = 80, LIMIT = RING / 4 };
	uint32_t ids[FRAMES];
	int heads[FRAMES], n, seen[RING] = { 0 };

	for (int i = 0; i < FRAMES; i++) {
		heads[i] = send_frame(&self->e.g, mac_held, ZC_LEN, 10 + i, NULL);
		ASSERT_LE(0, heads[i]);
	}
	n = reap_all(&self->e.g, ids, FRAMES, 1000);
	EXPECT_EQ(FRAMES - LIMIT, n) TH_LOG("%d heads returned while plugged", n);
	plug(false);
	n += reap_all(&self->e.g, ids + n, FRAMES - n, 3000);
	ASSERT_EQ(FRAMES, n);
	for (int i = 0; i < n; i++)
		seen[ids[i] % RING]++;
	for (int i = 0; i < FRAMES; i++) {
		int h = heads[i];

		EXPECT_EQ(1, seen[h]) TH_LOG("head %d returned %d times", h, seen[h]);
	}
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
