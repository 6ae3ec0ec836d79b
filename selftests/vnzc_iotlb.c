// SPDX-License-Identifier: GPL-2.0
/*
 * The device IOTLB (VIRTIO_F_ACCESS_PLATFORM), on stock /dev/vhost-net and on
 * /dev/vhost-net-zc, played as a VMM with a vIOMMU plays it: ring and buffer addresses are
 * I/O virtual addresses (VG_IOVA_BASE + offset), which the device cannot use until the VMM
 * answers its miss messages (read from the device file, announced by poll()) with updates
 * written to it. Both message formats: struct vhost_msg_v2 (VHOST_BACKEND_F_IOTLB_MSG_V2,
 * what QEMU negotiates) and the original struct vhost_msg.
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <sys/wait.h>
#include <unistd.h>
#include <net/if.h>
#include <linux/if_ether.h>
#include <linux/if_packet.h>
#include <linux/virtio_config.h>

#include "kselftest_harness.h"
#include "vhost_guest.h"

#define TEST_ETHERTYPE	0x88b5
#define HDR_LEN		sizeof(struct virtio_net_hdr_mrg_rxbuf)
#define RING		64
#define MEM_SIZE	(1 << 20)
#define FEATURES	((1ULL << VIRTIO_F_VERSION_1) | (1ULL << VIRTIO_F_ACCESS_PLATFORM))

FIXTURE(iotlb) {
	struct vg_guest g;
	char tap[IFNAMSIZ];
	int tap_fd;
	int pkt;		/* AF_PACKET socket on the tap */
	int ifindex;
};

FIXTURE_VARIANT(iotlb) {
	const char *dev;
	bool v1;		/* struct vhost_msg: VHOST_BACKEND_F_IOTLB_MSG_V2 not acked */
};

FIXTURE_VARIANT_ADD(iotlb, stock) {
	.dev = "/dev/vhost-net",
};

FIXTURE_VARIANT_ADD(iotlb, zc) {
	.dev = "/dev/vhost-net-zc",
};

FIXTURE_VARIANT_ADD(iotlb, stock_v1) {
	.dev = "/dev/vhost-net",
	.v1 = true,
};

FIXTURE_VARIANT_ADD(iotlb, zc_v1) {
	.dev = "/dev/vhost-net-zc",
	.v1 = true,
};

/* The tap, a packet socket on it, and the device opened (not set up: each test does). */
FIXTURE_SETUP(iotlb)
{
	self->pkt = -1;
	self->tap_fd = vg_tap_open(self->tap, sizeof(self->tap));
	ASSERT_LE(0, self->tap_fd) TH_LOG("tap: %s", strerror(-self->tap_fd));
	ASSERT_EQ(0, vg_link_up(self->tap));
	self->pkt = vg_packet_socket(self->tap, TEST_ETHERTYPE, &self->ifindex);
	ASSERT_LE(0, self->pkt) TH_LOG("packet socket: %s", strerror(-self->pkt));
	ASSERT_EQ(0, vg_open(&self->g, variant->dev, MEM_SIZE));
	self->g.iotlb_v1 = variant->v1;
}

FIXTURE_TEARDOWN(iotlb)
{
	vg_close(&self->g);
	if (self->pkt >= 0)
		close(self->pkt);
	close(self->tap_fd);
}

/* Owner, features (with the device IOTLB), memory table and rings; both queues on the tap. */
static void setup_attached(struct __test_metadata *_metadata, struct vg_guest *g, int tap_fd)
{
	int r = vg_setup(g, FEATURES, RING);

	ASSERT_EQ(0, r) TH_LOG("setup: %s", strerror(-r));
	ASSERT_EQ(0, vg_set_backend(g, VG_TX, tap_fd));
	ASSERT_EQ(0, vg_set_backend(g, VG_RX, tap_fd));
}

/* An Ethernet frame of @len bytes whose payload is a pattern seeded by @seed. */
static void make_frame(uint8_t *f, size_t len, unsigned int seed)
{
	static const uint8_t dst[6] = { 0x02, 0, 0, 0, 0, 0x03 };
	static const uint8_t src[6] = { 0x02, 0, 0, 0, 0, 0x02 };

	memcpy(f, dst, 6);
	memcpy(f + 6, src, 6);
	f[12] = TEST_ETHERTYPE >> 8;
	f[13] = TEST_ETHERTYPE & 0xff;
	for (size_t i = 14; i < len; i++)
		f[i] = (uint8_t)(i * 11 + seed);
}

/*
 * Posts a TX frame of @len bytes at @offset into a fresh page-aligned area (so that it may
 * straddle a page, and with it two IOTLB entries); returns its head, the frame in *@frame.
 */
static int post_tx(struct vg_guest *g, size_t len, size_t offset, unsigned int seed,
		   uint8_t **frame)
{
	uint8_t *hdr = vg_alloc(g, HDR_LEN, 8);
	uint8_t *area = vg_alloc(g, offset + len, 4096);
	void *bufs[2] = { hdr, area + offset };
	uint32_t lens[2] = { HDR_LEN, len };

	if (!hdr || !area)
		return -ENOMEM;
	memset(hdr, 0, HDR_LEN);
	make_frame(area + offset, len, seed);
	*frame = area + offset;
	return vg_post(g, VG_TX, bufs, lens, 2, false);
}

/* Waits up to @timeout_ms for one used element on @idx: 1 with *@id and *@len set, or 0. */
static int wait_used(struct vg_guest *g, unsigned int idx, uint32_t *id, uint32_t *len,
		     int timeout_ms)
{
	for (int waited = 0; waited <= timeout_ms; waited += 50) {
		int r = vg_reap(g, idx, id, len);

		if (r)
			return r;
		vg_wait_call(g, idx, 50);
	}
	return 0;
}

/* Expects the next frame on the tap to be @frame, and the head @head back on TX. */
static void expect_tx(struct __test_metadata *_metadata, struct _test_data_iotlb *self, int head,
		      const uint8_t *frame, size_t len)
{
	uint8_t got[8192];
	uint32_t id, ulen;
	ssize_t n = recv(self->pkt, got, sizeof(got), 0);

	ASSERT_EQ((ssize_t)len, n) TH_LOG("recv: %s", n < 0 ? strerror(errno) : "short");
	EXPECT_EQ(0, memcmp(got, frame, len)) TH_LOG("a %zu-byte frame changed on its way", len);
	ASSERT_EQ(1, wait_used(&self->g, VG_TX, &id, &ulen, 3000));
	EXPECT_EQ((uint32_t)head, id);
}

/*
 * The protocol step by step, with nobody else answering: a kick makes the device ask for a
 * translation; poll() says so, read() gives the miss (an IOVA of guest memory), and a
 * read with nothing pending on a non-blocking file is EAGAIN. Each update written lets the
 * device go on; the frame leaves byte-exact once every address it needed was answered.
 */
TEST_F(iotlb, miss_poll_read_update)
{
	struct vg_guest *g = &self->g;
	struct pollfd p = { .fd = g->fd, .events = POLLIN };
	struct vhost_iotlb_msg miss;
	uint8_t *frame, got[2048];
	int head, misses = 0, flags;
	uint8_t buf[128];
	ssize_t n = -1;

	setup_attached(_metadata, g, self->tap_fd);
	EXPECT_EQ(0, poll(&p, 1, 0)) TH_LOG("readable before any access");
	flags = fcntl(g->fd, F_GETFL);
	ASSERT_EQ(0, fcntl(g->fd, F_SETFL, flags | O_NONBLOCK));
	EXPECT_EQ(-1, read(g->fd, buf, sizeof(buf)));
	EXPECT_EQ(EAGAIN, errno);
	ASSERT_EQ(0, fcntl(g->fd, F_SETFL, flags));

	head = post_tx(g, 1500, 4096 - 700, 1, &frame);
	ASSERT_LE(0, head);
	while (misses < 32) {
		int r = vg_iotlb_miss(g, &miss, 1000);

		if (r == 0) {
			n = recv(self->pkt, got, sizeof(got), MSG_DONTWAIT);
			break;
		}
		ASSERT_EQ(1, r) TH_LOG("miss: %s", strerror(-r));
		ASSERT_LE(VG_IOVA_BASE, miss.iova) TH_LOG("miss at %#llx", (unsigned long long)miss.iova);
		ASSERT_GT(VG_IOVA_BASE + MEM_SIZE, miss.iova);
		EXPECT_NE(0, miss.perm & VHOST_ACCESS_RW);
		misses++;
		/* One page per answer: the ring parts and both pages of the frame ask apart. */
		ASSERT_EQ(0, vg_iotlb_msg(g, VHOST_IOTLB_UPDATE, miss.iova & ~4095ULL, 4096,
					  g->mem + ((miss.iova & ~4095ULL) - VG_IOVA_BASE),
					  VHOST_ACCESS_RW));
	}
	TH_LOG("%d misses answered", misses);
	/*
	 * The used ring was mapped before the backend was attached (as QEMU does); the page
	 * of the descriptors and avail ring, and both pages of the frame, were not.
	 */
	EXPECT_LE(3, misses);
	if (n < 0)
		n = recv(self->pkt, got, sizeof(got), 0);
	ASSERT_EQ(1500, n);
	EXPECT_EQ(0, memcmp(got, frame, 1500));
}

/*
 * Traffic both ways through the IOTLB, answered page by page by a server thread: TX frames
 * of sizes that cross pages, RX frames into buffers that do; all byte-exact.
 */
TEST_F(iotlb, tx_rx_byte_exact)
{
	static const size_t sizes[] = { 60, 1000, 1514, 4000, 7000 };
	struct vg_guest *g = &self->g;
	struct sockaddr_ll to = {
		.sll_family = AF_PACKET,
		.sll_protocol = htons(TEST_ETHERTYPE),
		.sll_halen = 6,
		.sll_ifindex = self->ifindex,
	};
	long served;

	setup_attached(_metadata, g, self->tap_fd);
	ASSERT_EQ(0, vg_iotlb_serve(g, 4096));
	for (unsigned int i = 0; i < ARRAY_SIZE(sizes); i++) {
		uint8_t *frame;
		int head = post_tx(g, sizes[i], 4096 - 100, 10 + i, &frame);

		ASSERT_LE(0, head);
		expect_tx(_metadata, self, head, frame, sizes[i]);
	}
	for (unsigned int i = 0; i < 4; i++) {
		uint8_t *area = vg_alloc(g, 4096 + 2048, 4096), frame[1514];
		void *bufs[1] = { area + 4096 - 300 };
		uint32_t lens[1] = { HDR_LEN + 1514 }, id, len;
		int head;

		ASSERT_NE(NULL, area);
		head = vg_post(g, VG_RX, bufs, lens, 1, true);
		ASSERT_LE(0, head);
		make_frame(frame, sizeof(frame), 20 + i);
		ASSERT_EQ((ssize_t)sizeof(frame),
			  sendto(self->pkt, frame, sizeof(frame), 0, (struct sockaddr *)&to,
				 sizeof(to)));
		ASSERT_EQ(1, wait_used(g, VG_RX, &id, &len, 3000));
		EXPECT_EQ((uint32_t)head, id);
		EXPECT_EQ(HDR_LEN + sizeof(frame), len);
		EXPECT_EQ(0, memcmp((uint8_t *)bufs[0] + HDR_LEN, frame, sizeof(frame)));
	}
	served = vg_iotlb_stop(g);
	TH_LOG("%ld misses served", served);
	EXPECT_LT(8, served) TH_LOG("-1: a miss outside guest memory or an unexpected message");
}

/*
 * An invalidation removes the translations: the next frame makes the device ask again
 * (it must not keep using an address the VMM took back), and still leaves byte-exact.
 */
TEST_F(iotlb, invalidate_asks_again)
{
	struct vg_guest *g = &self->g;
	uint8_t *frame;
	long before, after;
	int head;

	setup_attached(_metadata, g, self->tap_fd);
	ASSERT_EQ(0, vg_iotlb_serve(g, 4096));
	head = post_tx(g, 1000, 0, 30, &frame);
	ASSERT_LE(0, head);
	expect_tx(_metadata, self, head, frame, 1000);
	before = vg_iotlb_served(g);
	ASSERT_EQ(0, vg_iotlb_msg(g, VHOST_IOTLB_INVALIDATE, VG_IOVA_BASE, MEM_SIZE, NULL, 0));
	head = post_tx(g, 1000, 0, 31, &frame);
	ASSERT_LE(0, head);
	expect_tx(_metadata, self, head, frame, 1000);
	after = vg_iotlb_stop(g);
	TH_LOG("%ld misses before the invalidation, %ld in all", before, after);
	EXPECT_LT(before + 2, after) TH_LOG("the device did not ask again");
}

/*
 * Malformed messages get the errnos stock vhost-net gives: a short write or an unknown
 * message type EINVAL, an update of size 0 EINVAL; an update of memory the VMM cannot
 * access (a kernel address), an unknown IOTLB operation or an invalidation of size 0
 * EFAULT (the vhost core's one errno for a message it refuses). None is applied: a frame
 * still needs real translations, and leaves byte-exact.
 */
TEST_F(iotlb, bad_messages)
{
	struct vg_guest *g = &self->g;
	struct vhost_msg_v2 bad_type = { .type = 99 };
	uint32_t short_msg = VHOST_IOTLB_MSG_V2;
	uint8_t *frame;
	int head;

	setup_attached(_metadata, g, self->tap_fd);
	EXPECT_EQ(-1, write(g->fd, &short_msg, sizeof(short_msg)));
	EXPECT_EQ(EINVAL, errno);
	EXPECT_EQ(-1, write(g->fd, &bad_type, sizeof(bad_type)));
	EXPECT_EQ(EINVAL, errno);
	EXPECT_EQ(-EINVAL, vg_iotlb_msg(g, VHOST_IOTLB_UPDATE, VG_IOVA_BASE, 0, g->mem,
					VHOST_ACCESS_RW));
	EXPECT_EQ(-EFAULT, vg_iotlb_msg(g, VHOST_IOTLB_UPDATE, VG_IOVA_BASE, MEM_SIZE,
					(void *)(uintptr_t)0xffff888000000000ULL,
					VHOST_ACCESS_RW));
	EXPECT_EQ(-EFAULT, vg_iotlb_msg(g, 42, VG_IOVA_BASE, MEM_SIZE, g->mem, VHOST_ACCESS_RW));
	EXPECT_EQ(-EFAULT, vg_iotlb_msg(g, VHOST_IOTLB_INVALIDATE, VG_IOVA_BASE, 0, NULL, 0));
	ASSERT_EQ(0, vg_iotlb_serve(g, 4096));
	head = post_tx(g, 1200, 0, 40, &frame);
	ASSERT_LE(0, head);
	expect_tx(_metadata, self, head, frame, 1200);
	EXPECT_LT(0, vg_iotlb_stop(g));
}

/*
 * Without VIRTIO_F_ACCESS_PLATFORM there is no IOTLB: poll() shows nothing, a blocking
 * read() fails with EBADFD at once, and an update is refused (EFAULT).
 */
TEST_F(iotlb, without_access_platform)
{
	struct vg_guest *g = &self->g;
	struct pollfd p = { .fd = g->fd, .events = POLLIN };
	uint8_t buf[128];
	int r = vg_setup(g, 1ULL << VIRTIO_F_VERSION_1, RING);

	ASSERT_EQ(0, r) TH_LOG("setup: %s", strerror(-r));
	EXPECT_EQ(0, poll(&p, 1, 0));
	EXPECT_EQ(-1, read(g->fd, buf, sizeof(buf)));
	EXPECT_EQ(EBADFD, errno);
	EXPECT_EQ(-EFAULT, vg_iotlb_msg(g, VHOST_IOTLB_UPDATE, VG_IOVA_BASE, MEM_SIZE, g->mem,
					VHOST_ACCESS_RW));
}

/*
 * The device IOTLB is torn down with the feature: a reader blocked for a miss is woken
 * (EBADFD) when the VMM sets features without VIRTIO_F_ACCESS_PLATFORM, as on a guest
 * reset with the IOMMU off.
 */
TEST_F(iotlb, blocked_reader_woken)
{
	struct vg_guest *g = &self->g;
	uint8_t buf[128];
	int status = 0;
	pid_t child;

	ASSERT_EQ(0, vg_setup(g, FEATURES, RING));
	child = fork();
	ASSERT_LE(0, child);
	if (child == 0) {
		ssize_t n = read(g->fd, buf, sizeof(buf));

		_exit(n == -1 && errno == EBADFD ? 0 : 1);
	}
	usleep(300 * 1000);
	ASSERT_EQ(0, vg_set_features(g, 1ULL << VIRTIO_F_VERSION_1));
	for (int i = 0; i < 50 && waitpid(child, &status, WNOHANG) == 0; i++)
		usleep(100 * 1000);
	if (waitpid(child, &status, WNOHANG) == 0) {
		kill(child, SIGKILL);
		waitpid(child, &status, 0);
		ASSERT_TRUE(false) TH_LOG("reader still blocked 5 s after the IOTLB went");
	}
	EXPECT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0)
		TH_LOG("the reader did not get EBADFD");
}

TEST_HARNESS_MAIN
