// SPDX-License-Identifier: GPL-2.0
/*
 * Zero-copy TX on /dev/vhost-net-zc, observed where the skbs go: the backend is a port of a
 * bridge whose two other ports are dummies; frames for 02:00:00:00:00:d0 leave through
 * vnzcd0, whose root qdisc is plug (it holds every skb until released), frames for
 * ...:d1 through vnzcd1, which frees them at once. A frame sent zero-copy is returned
 * to the guest only when its skb is freed: held while plugged, in the order the stack frees
 * them. Packet sockets (ETH_P_ALL) on the dummies see what leaves, to compare bytes.
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

FIXTURE(zc) {
	struct vg_guest g;
	char tap[IFNAMSIZ];
	int tap_fd;
	int cap_held;	/* ETH_P_ALL on vnzcd0 */
	int cap_free;	/* ETH_P_ALL on vnzcd1 */
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

FIXTURE_SETUP(zc)
{
	char cmd[1024];
	int r;

	self->cap_held = self->cap_free = -1;
	self->tap_fd = vg_tap_open(self->tap, sizeof(self->tap));
	ASSERT_LE(0, self->tap_fd) TH_LOG("tap: %s", strerror(-self->tap_fd));
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
		 self->tap, self->tap);
	ASSERT_EQ(0, system(cmd)) TH_LOG("could not build the bridge fixture");
	self->cap_held = capture(_metadata, "vnzcd0");
	self->cap_free = capture(_metadata, "vnzcd1");
	/* Frames sent before the ports forward would be dropped by the bridge. */
	for (long end = now_ms() + 10000; now_ms() < end; usleep(20 * 1000))
		if (forwarding(self->tap) && forwarding("vnzcd0") && forwarding("vnzcd1"))
			break;
	ASSERT_TRUE(forwarding(self->tap) && forwarding("vnzcd0") && forwarding("vnzcd1"))
		TH_LOG("bridge ports not forwarding after 10 s");

	ASSERT_EQ(0, vg_open(&self->g, "/dev/vhost-net-zc", 1 << 20));
	r = vg_setup(&self->g, 1ULL << VIRTIO_F_VERSION_1, RING);
	ASSERT_EQ(0, r) TH_LOG("setup: %s", strerror(-r));
	r = vg_set_backend(&self->g, VG_TX, self->tap_fd);
	ASSERT_EQ(0, r) TH_LOG("SET_BACKEND: %s", strerror(-r));
}

FIXTURE_TEARDOWN(zc)
{
	/* Let held skbs go first, so closing the device does not wait for them. */
	plug(false);
	vg_close(&self->g);
	if (self->cap_held >= 0)
		close(self->cap_held);
	if (self->cap_free >= 0)
		close(self->cap_free);
	close(self->tap_fd);
	if (system("ip link del vnzcbr; ip link del vnzcd0; ip link del vnzcd1"))
		TH_LOG("could not remove the bridge fixture");
}

/* Posts a frame of @len bytes to @dst with a header descriptor; returns its head. */
static int send_frame(struct vg_guest *g, const uint8_t *dst, size_t len, unsigned int seed,
		      uint8_t **frame_out)
{
	uint8_t *hdr = vg_alloc(g, HDR_LEN, 8);
	uint8_t *frame = vg_alloc(g, len, 64);
	void *bufs[2] = { hdr, frame };
	uint32_t lens[2] = { HDR_LEN, len };

	if (!hdr || !frame)
		return -ENOMEM;
	memset(hdr, 0, HDR_LEN);
	memcpy(frame, dst, 6);
	memcpy(frame + 6, (uint8_t[6]){ 0x02, 0, 0, 0, 0, 0x02 }, 6);
	frame[12] = TEST_ETHERTYPE >> 8;
	frame[13] = TEST_ETHERTYPE & 0xff;
	for (size_t i = 14; i < len; i++)
		frame[i] = (uint8_t)(i * 13 + seed);
	if (frame_out)
		*frame_out = frame;
	return vg_post(g, VG_TX, bufs, lens, 2, false);
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

/* A frame to the free port comes back once the dummy has freed it, byte-exact. */
TEST_F(zc, completes_when_freed)
{
	uint8_t *frame, got[2048];
	uint32_t id;
	int head;

	head = send_frame(&self->g, mac_free, ZC_LEN, 1, &frame);
	ASSERT_LE(0, head);
	ASSERT_EQ(1, reap_all(&self->g, &id, 1, 3000)) TH_LOG("no used entry");
	EXPECT_EQ((uint32_t)head, id);
	ASSERT_EQ(ZC_LEN, recv_ours(self->cap_free, got, sizeof(got)));
	EXPECT_EQ(0, memcmp(got, frame, ZC_LEN));
}

/* Zero copy: the head stays with the device while the skb sits in the plugged qdisc. */
TEST_F(zc, held_until_freed)
{
	uint8_t *frame, got[2048];
	uint32_t id;
	int head;

	head = send_frame(&self->g, mac_held, ZC_LEN, 2, &frame);
	ASSERT_LE(0, head);
	EXPECT_EQ(0, reap_all(&self->g, &id, 1, 500))
		TH_LOG("head %u returned while its skb is held: not zero-copy", id);
	plug(false);
	ASSERT_EQ(1, reap_all(&self->g, &id, 1, 3000)) TH_LOG("not returned after release");
	EXPECT_EQ((uint32_t)head, id);
	ASSERT_EQ(ZC_LEN, recv_ours(self->cap_held, got, sizeof(got)));
	EXPECT_EQ(0, memcmp(got, frame, ZC_LEN));
}

/* Below copy_threshold the frame is copied: returned at once even though it is held. */
TEST_F(zc, short_frames_copied)
{
	uint8_t *frame, got[2048];
	uint32_t id;
	int head;

	head = send_frame(&self->g, mac_held, 100, 3, &frame);
	ASSERT_LE(0, head);
	ASSERT_EQ(1, reap_all(&self->g, &id, 1, 3000)) TH_LOG("copied frame not returned");
	EXPECT_EQ((uint32_t)head, id);
	plug(false);
	ASSERT_EQ(100, recv_ours(self->cap_held, got, sizeof(got)));
	EXPECT_EQ(0, memcmp(got, frame, 100));
}

/* No head-of-line blocking: a later frame freed first is returned first. */
TEST_F(zc, out_of_order)
{
	uint32_t ids[2];
	int held, freed;

	held = send_frame(&self->g, mac_held, ZC_LEN, 4, NULL);
	ASSERT_LE(0, held);
	freed = send_frame(&self->g, mac_free, ZC_LEN, 5, NULL);
	ASSERT_LE(0, freed);
	ASSERT_EQ(1, reap_all(&self->g, ids, 2, 1000));
	EXPECT_EQ((uint32_t)freed, ids[0]);
	plug(false);
	ASSERT_EQ(1, reap_all(&self->g, ids, 1, 3000));
	EXPECT_EQ((uint32_t)held, ids[0]);
}

/*
 * At most a quarter of the ring is in flight (64 of 256): the frames beyond are copied and
 * returned at once; after the release every head comes back exactly once.
 */
TEST_F(zc, in_flight_limit)
{
	enum { FRAMES = 80, LIMIT = RING / 4 };
	uint32_t ids[FRAMES];
	int heads[FRAMES], n, seen[RING] = { 0 };

	for (int i = 0; i < FRAMES; i++) {
		heads[i] = send_frame(&self->g, mac_held, ZC_LEN, 10 + i, NULL);
		ASSERT_LE(0, heads[i]);
	}
	n = reap_all(&self->g, ids, FRAMES, 1000);
	EXPECT_EQ(FRAMES - LIMIT, n) TH_LOG("%d heads returned while plugged", n);
	plug(false);
	n += reap_all(&self->g, ids + n, FRAMES - n, 3000);
	ASSERT_EQ(FRAMES, n);
	for (int i = 0; i < n; i++)
		seen[ids[i] % RING]++;
	for (int i = 0; i < FRAMES; i++) {
		int h = heads[i];

		EXPECT_EQ(1, seen[h]) TH_LOG("head %d returned %d times", h, seen[h]);
	}
}

/* SET_BACKEND to another tap waits for the old backend's buffers, and returns them. */
TEST_F(zc, backend_change_returns_heads)
{
	char other[IFNAMSIZ];
	uint32_t id;
	int head, fd, r;

	head = send_frame(&self->g, mac_held, ZC_LEN, 6, NULL);
	ASSERT_LE(0, head);
	EXPECT_EQ(0, reap_all(&self->g, &id, 1, 300));
	fd = vg_tap_open(other, sizeof(other));
	ASSERT_LE(0, fd);
	/* Released meanwhile by a child, as a NIC would finish its DMA. */
	if (fork() == 0) {
		usleep(200 * 1000);
		plug(false);
		_exit(0);
	}
	r = vg_set_backend(&self->g, VG_TX, fd);
	EXPECT_EQ(0, r);
	wait(NULL);
	ASSERT_EQ(1, reap_all(&self->g, &id, 1, 100)) TH_LOG("head not returned by SET_BACKEND");
	EXPECT_EQ((uint32_t)head, id);
	EXPECT_EQ(0, vg_set_backend(&self->g, VG_TX, -1));
	close(fd);
}

/*
 * S8: after the device is closed with skbs still in flight, the module cannot be unloaded
 * (the skbs point at its completion); once they are freed it can. Reloads it after.
 */
TEST_F(zc, rmmod_refused_while_in_flight)
{
	const char *ko = getenv("VNZC_KO");
	long t0, waited;
	uint32_t id;
	int r, fd;

	if (!ko)
		SKIP(return, "VNZC_KO (the module's path, to reload it) is not set");
	ASSERT_LE(0, send_frame(&self->g, mac_held, ZC_LEN, 7, NULL));
	EXPECT_EQ(0, reap_all(&self->g, &id, 1, 300));
	t0 = now_ms();
	vg_close(&self->g);
	waited = now_ms() - t0;
	TH_LOG("close with a buffer in flight took %ld ms", waited);
	/* Bounded by the timeout (timeout_ms, 1000 by default) plus scheduling. */
	EXPECT_GT(3000, waited);

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
