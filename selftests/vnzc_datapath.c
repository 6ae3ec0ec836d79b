// SPDX-License-Identifier: GPL-2.0
/*
 * TX and RX through a tap backend, driven by the userspace guest (vhost_guest.c), on stock
 * /dev/vhost-net and on /dev/vhost-net-zc: every frame must arrive byte-exact and the used
 * ring and call eventfd must say so.
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <linux/if_tun.h>
#include <net/if.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <unistd.h>
#include <linux/if_ether.h>
#include <linux/if_packet.h>
#include <linux/virtio_config.h>

#include "kselftest_harness.h"
#include "vhost_guest.h"

#define TEST_ETHERTYPE	0x88b5	/* IEEE local experimental: nothing else sends it */
#define HDR_LEN		sizeof(struct virtio_net_hdr_mrg_rxbuf)
#define RING		256

/*
 * The backend is a tap, or a macvtap on one end of a veth pair. The test's packet socket
 * sits where the backend's frames leave and where frames for it enter: on the tap itself,
 * or on the veth's other end.
 */
FIXTURE(net) {
	struct vg_guest g;
	char tap[IFNAMSIZ];
	int tap_fd;		/* the backend: a tap, or a macvtap's /dev/tapN */
	int pkt;		/* AF_PACKET socket on the wire side */
	int ifindex;		/* the wire side's interface */
};

FIXTURE_VARIANT(net) {
	const char *dev;
	bool macvtap;
};

FIXTURE_VARIANT_ADD(net, stock) {
	.dev = "/dev/vhost-net",
};

FIXTURE_VARIANT_ADD(net, zc) {
	.dev = "/dev/vhost-net-zc",
};

FIXTURE_VARIANT_ADD(net, stock_macvtap) {
	.dev = "/dev/vhost-net",
	.macvtap = true,
};

FIXTURE_VARIANT_ADD(net, zc_macvtap) {
	.dev = "/dev/vhost-net-zc",
	.macvtap = true,
};

/* A macvtap (MAC 02:00:00:00:00:01, the test frames' destination) on vnzcv0, whose veth
 * peer vnzcv1 is the wire; returns the macvtap's character device, open. */
static int macvtap_open(struct __test_metadata *_metadata)
{
	int hdr = HDR_LEN, sndbuf = INT_MAX, fd, ifindex;
	char path[32];

	ASSERT_EQ(0, system("ip link del vnzcv0 2>/dev/null; "
			    "ip link add vnzcv0 type veth peer name vnzcv1 && "
			    "ip link add link vnzcv0 name vnzcm0 address 02:00:00:00:00:01 "
			    "type macvtap mode bridge && "
			    "ip link set vnzcv0 up && ip link set vnzcv1 up && "
			    "ip link set vnzcm0 up")) TH_LOG("could not create the macvtap");
	ifindex = if_nametoindex("vnzcm0");
	ASSERT_NE(0, ifindex);
	snprintf(path, sizeof(path), "/dev/tap%d", ifindex);
	fd = open(path, O_RDWR | O_CLOEXEC);
	ASSERT_LE(0, fd) TH_LOG("%s: %s", path, strerror(errno));
	ASSERT_EQ(0, ioctl(fd, TUNSETVNETHDRSZ, &hdr));
	/* As QEMU sets it: an unlimited send buffer, which lets vhost batch (TUN_MSG_PTR). */
	ASSERT_EQ(0, ioctl(fd, TUNSETSNDBUF, &sndbuf));
	return fd;
}

FIXTURE_SETUP(net)
{
	int r;

	self->pkt = -1;
	if (variant->macvtap) {
		self->tap_fd = macvtap_open(_metadata);
		snprintf(self->tap, sizeof(self->tap), "vnzcv1");
	} else {
		self->tap_fd = vg_tap_open(self->tap, sizeof(self->tap));
		ASSERT_LE(0, self->tap_fd) TH_LOG("tap: %s", strerror(-self->tap_fd));
		ASSERT_EQ(0, vg_link_up(self->tap));
	}
	self->pkt = vg_packet_socket(self->tap, TEST_ETHERTYPE, &self->ifindex);
	ASSERT_LE(0, self->pkt) TH_LOG("packet socket: %s", strerror(-self->pkt));

	ASSERT_EQ(0, vg_open(&self->g, variant->dev, 1 << 20));
	r = vg_setup(&self->g, 1ULL << VIRTIO_F_VERSION_1, RING);
	ASSERT_EQ(0, r) TH_LOG("setup: %s", strerror(-r));
}

/* Attaches the tap to virtqueue @idx. */
#define ATTACH(idx) do {							\
	int __r = vg_set_backend(&self->g, (idx), self->tap_fd);		\
	ASSERT_EQ(0, __r) TH_LOG("SET_BACKEND: %s", strerror(-__r));		\
} while (0)

FIXTURE_TEARDOWN(net)
{
	vg_close(&self->g);
	if (self->pkt >= 0)
		close(self->pkt);
	close(self->tap_fd);
	if (variant->macvtap && system("ip link del vnzcv0"))
		TH_LOG("could not remove the veth pair");
}

/* An Ethernet frame of @len bytes whose payload is a pattern seeded by @seed. */
static void make_frame(uint8_t *f, size_t len, unsigned int seed)
{
	static const uint8_t dst[6] = { 0x02, 0, 0, 0, 0, 0x01 };
	static const uint8_t src[6] = { 0x02, 0, 0, 0, 0, 0x02 };

	memcpy(f, dst, 6);
	memcpy(f + 6, src, 6);
	f[12] = TEST_ETHERTYPE >> 8;
	f[13] = TEST_ETHERTYPE & 0xff;
	for (size_t i = 14; i < len; i++)
		f[i] = (uint8_t)(i * 7 + seed);
}

/* Waits for one used element on @idx. */
static int wait_used(struct vg_guest *g, unsigned int idx, uint32_t *id, uint32_t *len)
{
	for (int tries = 0; tries < 50; tries++) {
		int r = vg_reap(g, idx, id, len);

		if (r)
			return r;
		r = vg_wait_call(g, idx, 100);
		if (r < 0)
			return r;
	}
	return 0;
}

TEST_F(net, tx_byte_exact)
{
	static const size_t sizes[] = { 60, 255, 256, 1514 };

	ATTACH(VG_TX);
	for (unsigned int s = 0; s < ARRAY_SIZE(sizes); s++) {
		uint8_t *hdr = vg_alloc(&self->g, HDR_LEN, 8);
		uint8_t *frame = vg_alloc(&self->g, sizes[s], 8);
		void *bufs[2] = { hdr, frame };
		uint32_t lens[2] = { HDR_LEN, sizes[s] };
		uint8_t got[2048];
		uint32_t id, len;
		int head;
		ssize_t n;

		ASSERT_NE(NULL, hdr);
		ASSERT_NE(NULL, frame);
		memset(hdr, 0, HDR_LEN);
		make_frame(frame, sizes[s], s);
		/* Not to the macvtap's own address, which bridge mode would loop back to it. */
		frame[5] = 0x03;
		head = vg_post(&self->g, VG_TX, bufs, lens, 2, false);
		ASSERT_LE(0, head);
		/*
		 * First the packet: sent zero-copy, its skb is the one queued on the packet
		 * socket (the last receiver gets it without a copy), and the head comes back
		 * only once it is read and freed.
		 */
		n = recv(self->pkt, got, sizeof(got), 0);
		ASSERT_EQ((ssize_t)sizes[s], n) TH_LOG("recv: %s", strerror(errno));
		EXPECT_EQ(0, memcmp(got, frame, sizes[s]));
		ASSERT_EQ(1, wait_used(&self->g, VG_TX, &id, &len))
			TH_LOG("no used entry for a %zu byte frame", sizes[s]);
		EXPECT_EQ((uint32_t)head, id);
	}
	/*
	 * 255, 256 and 1514 bytes plus the 12-byte header reach copy_threshold (256): at
	 * least the first went zero-copy. (Through the veth of the macvtap variant the frags
	 * are copied, and the heuristic then stops zero copy for the rest of its window.)
	 */
	if (!strcmp(variant->dev, "/dev/vhost-net-zc"))
		EXPECT_LE(1, vg_zc_stat("sent_zerocopy"));
}

TEST_F(net, rx_byte_exact)
{
	static const size_t sizes[] = { 60, 1000, 1514 };
	struct sockaddr_ll to = {
		.sll_family = AF_PACKET,
		.sll_protocol = htons(TEST_ETHERTYPE),
		.sll_halen = 6,
	};

	to.sll_ifindex = self->ifindex;
	ATTACH(VG_RX);
	for (unsigned int s = 0; s < ARRAY_SIZE(sizes); s++) {
		uint8_t *buf = vg_alloc(&self->g, HDR_LEN + 1514, 8);
		void *bufs[1] = { buf };
		uint32_t lens[1] = { HDR_LEN + 1514 };
		uint8_t frame[1514];
		uint32_t id, len;
		int head;

		ASSERT_NE(NULL, buf);
		memset(buf, 0xee, HDR_LEN + 1514);
		head = vg_post(&self->g, VG_RX, bufs, lens, 1, true);
		ASSERT_LE(0, head);
		make_frame(frame, sizes[s], 100 + s);
		ASSERT_EQ((ssize_t)sizes[s], sendto(self->pkt, frame, sizes[s], 0,
						    (struct sockaddr *)&to, sizeof(to)));
		ASSERT_EQ(1, wait_used(&self->g, VG_RX, &id, &len))
			TH_LOG("no used entry for a %zu byte frame", sizes[s]);
		EXPECT_EQ((uint32_t)head, id);
		EXPECT_EQ(HDR_LEN + sizes[s], len);
		EXPECT_EQ(0, memcmp(buf + HDR_LEN, frame, sizes[s]));
		/*
		 * VERSION_1 without mergeable buffers: the header's num_buffers is 1 (the
		 * virtio spec; a tap writes 0 there, as in a legacy header).
		 */
		EXPECT_EQ(1, buf[10] | buf[11] << 8) TH_LOG("num_buffers %#x", buf[10] | buf[11] << 8);
	}
}

/*
 * With the feature words @words (mergeable RX buffers among them): a frame of @flen bytes
 * behind the backend's @hdr_len byte header is spread over three 512-byte buffers, with
 * num_buffers set in the header.
 */
static void rx_mergeable_hdr(struct __test_metadata *_metadata, struct _test_data_net *self,
			     const uint64_t *words, size_t hdr_len, size_t flen)
{
	struct sockaddr_ll to = {
		.sll_family = AF_PACKET,
		.sll_protocol = htons(TEST_ETHERTYPE),
		.sll_halen = 6,
	};
	const size_t blen = 512;
	uint8_t *buf[4], frame[1514], got[4 * 512];
	int heads[4], r;
	size_t off = 0;

	ASSERT_LT(2 * blen, hdr_len + flen);
	ASSERT_GE(3 * blen, hdr_len + flen);
	r = vg_set_features_array(&self->g, words, VG_FEATURE_WORDS);
	ASSERT_EQ(0, r) TH_LOG("features: %s", strerror(-r));
	to.sll_ifindex = self->ifindex;
	ATTACH(VG_RX);
	for (int i = 0; i < 4; i++) {
		void *bufs[1];
		uint32_t lens[1] = { blen };

		buf[i] = vg_alloc(&self->g, blen, 8);
		ASSERT_NE(NULL, buf[i]);
		memset(buf[i], 0xee, blen);
		bufs[0] = buf[i];
		heads[i] = vg_post(&self->g, VG_RX, bufs, lens, 1, true);
		ASSERT_LE(0, heads[i]);
	}
	make_frame(frame, flen, 7);
	ASSERT_EQ((ssize_t)flen, sendto(self->pkt, frame, flen, 0, (struct sockaddr *)&to,
					sizeof(to)));
	/* Two full buffers and the rest in the third, in order. */
	for (int i = 0; i < 3; i++) {
		uint32_t id, len;

		ASSERT_EQ(1, wait_used(&self->g, VG_RX, &id, &len)) TH_LOG("buffer %d", i);
		EXPECT_EQ((uint32_t)heads[i], id);
		EXPECT_EQ(i < 2 ? blen : hdr_len + flen - 2 * blen, len);
		memcpy(got + off, buf[i], len);
		off += len;
	}
	EXPECT_EQ(hdr_len + flen, off);
	/* num_buffers, little endian for a VERSION_1 device. */
	EXPECT_EQ(3, got[10] | got[11] << 8);
	EXPECT_EQ(0, memcmp(got + hdr_len, frame, flen));
}

TEST_F(net, rx_mergeable)
{
	const uint64_t words[VG_FEATURE_WORDS] = {
		(1ULL << VIRTIO_F_VERSION_1) | (1ULL << VIRTIO_NET_F_MRG_RXBUF),
	};

	rx_mergeable_hdr(_metadata, self, words, HDR_LEN, 1514);
}

/* With VHOST_F_LOG_ALL, what RX writes into guest memory is marked in the dirty log. */
TEST_F(net, rx_dirty_log)
{
	const uint64_t features = (1ULL << VIRTIO_F_VERSION_1) | (1ULL << VHOST_F_LOG_ALL);
	const size_t map_len = ((VG_GPA_BASE + (1 << 20)) / 4096 / 8 + 4095) & ~4095ULL;
	struct vg_vq *vq = &self->g.vq[VG_RX];
	struct vhost_vring_addr addr = {
		.index = VG_RX,
		.flags = 1 << VHOST_VRING_F_LOG,
		.desc_user_addr = (uint64_t)(uintptr_t)vq->desc,
		.avail_user_addr = (uint64_t)(uintptr_t)vq->avail,
		.used_user_addr = (uint64_t)(uintptr_t)vq->used,
		.log_guest_addr = vg_gpa(&self->g, vq->used),
	};
	struct sockaddr_ll to = {
		.sll_family = AF_PACKET,
		.sll_protocol = htons(TEST_ETHERTYPE),
		.sll_halen = 6,
	};
	uint8_t *bitmap, *buf, *untouched, frame[1000];
	uint64_t base;
	uint32_t id, len;
	void *bufs[1];
	uint32_t lens[1] = { 4096 };

	bitmap = mmap(NULL, map_len, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	ASSERT_NE(MAP_FAILED, bitmap);
	base = (uint64_t)(uintptr_t)bitmap;
	ASSERT_EQ(0, ioctl(self->g.fd, VHOST_SET_LOG_BASE, &base));
	ASSERT_EQ(0, vg_set_features(&self->g, features));
	ASSERT_EQ(0, ioctl(self->g.fd, VHOST_SET_VRING_ADDR, &addr));
	to.sll_ifindex = self->ifindex;
	ATTACH(VG_RX);

	buf = vg_alloc(&self->g, 4096, 4096);
	untouched = vg_alloc(&self->g, 4096, 4096);
	ASSERT_NE(NULL, buf);
	ASSERT_NE(NULL, untouched);
	bufs[0] = buf;
	ASSERT_LE(0, vg_post(&self->g, VG_RX, bufs, lens, 1, true));
	make_frame(frame, sizeof(frame), 9);
	ASSERT_EQ((ssize_t)sizeof(frame), sendto(self->pkt, frame, sizeof(frame), 0,
						 (struct sockaddr *)&to, sizeof(to)));
	ASSERT_EQ(1, wait_used(&self->g, VG_RX, &id, &len));
	EXPECT_EQ(HDR_LEN + sizeof(frame), len);
	EXPECT_TRUE(vg_logged(bitmap, vg_gpa(&self->g, buf))) TH_LOG("RX buffer not logged");
	EXPECT_TRUE(vg_logged(bitmap, vg_gpa(&self->g, vq->used))) TH_LOG("used ring not logged");
	EXPECT_FALSE(vg_logged(bitmap, vg_gpa(&self->g, untouched))) TH_LOG("spurious log bit");
	munmap(bitmap, map_len);
}

/* Sends @n frames of @len bytes (seeds @seed..) to the backend's RX side; stores them. */
static int send_rx_frames(struct _test_data_net *self, uint8_t (*frames)[1514], int n, size_t len,
			  unsigned int seed)
{
	struct sockaddr_ll to = {
		.sll_family = AF_PACKET,
		.sll_protocol = htons(TEST_ETHERTYPE),
		.sll_halen = 6,
	};

	to.sll_ifindex = self->ifindex;
	for (int i = 0; i < n; i++) {
		make_frame(frames[i], len, seed + i);
		if (sendto(self->pkt, frames[i], len, 0, (struct sockaddr *)&to, sizeof(to)) !=
		    (ssize_t)len)
			return -errno;
	}
	return 0;
}

/* Posts one RX buffer and checks that the next frame lands in it, byte-exact. */
static void expect_rx(struct __test_metadata *_metadata, struct _test_data_net *self,
		      const uint8_t *frame, size_t len)
{
	uint8_t *buf = vg_alloc(&self->g, HDR_LEN + 1514, 8);
	void *bufs[1] = { buf };
	uint32_t lens[1] = { HDR_LEN + 1514 }, id, got;
	int head;

	ASSERT_NE(NULL, buf);
	head = vg_post(&self->g, VG_RX, bufs, lens, 1, true);
	ASSERT_LE(0, head);
	ASSERT_EQ(1, wait_used(&self->g, VG_RX, &id, &got));
	EXPECT_EQ((uint32_t)head, id);
	EXPECT_EQ(HDR_LEN + len, got);
	EXPECT_EQ(0, memcmp(buf + HDR_LEN, frame, len));
}

/*
 * Frames queued before the guest has buffers are taken off the tap's ring in a batch; when
 * the backend is detached with part of the batch unread, those frames go back to the ring
 * and arrive, in order, after the backend is attached again.
 */
TEST_F(net, rx_batch_kept_across_backend_change)
{
	enum { FRAMES = 10 };
	static uint8_t frames[FRAMES][1514];

	ATTACH(VG_RX);
	ASSERT_EQ(0, send_rx_frames(self, frames, FRAMES, 300, 40));
	usleep(100 * 1000);
	expect_rx(_metadata, self, frames[0], 300);
	ASSERT_EQ(0, vg_set_backend(&self->g, VG_RX, -1));
	ATTACH(VG_RX);
	for (int i = 1; i < FRAMES; i++)
		expect_rx(_metadata, self, frames[i], 300);
}

/* Sends one @len byte frame from the guest and checks it on the wire, byte-exact. */
static void expect_tx(struct __test_metadata *_metadata, struct _test_data_net *self,
		      size_t len, unsigned int seed)
{
	uint8_t *hdr = vg_alloc(&self->g, HDR_LEN, 8);
	uint8_t *frame = vg_alloc(&self->g, len, 8);
	void *bufs[2] = { hdr, frame };
	uint32_t lens[2] = { HDR_LEN, len }, id, used_len;
	uint8_t got[2048];
	int head;

	ASSERT_NE(NULL, frame);
	memset(hdr, 0, HDR_LEN);
	make_frame(frame, len, seed);
	/* Not to the macvtap's own address, which bridge mode would loop back to it. */
	frame[5] = 0x03;
	head = vg_post(&self->g, VG_TX, bufs, lens, 2, false);
	ASSERT_LE(0, head);
	ASSERT_EQ((ssize_t)len, recv(self->pkt, got, sizeof(got), 0));
	EXPECT_EQ(0, memcmp(got, frame, len));
	ASSERT_EQ(1, wait_used(&self->g, VG_TX, &id, &used_len));
	EXPECT_EQ((uint32_t)head, id);
}

enum { TX_FRAMES = 120 };	/* two descriptors each: 240 of the ring's 256 */

/*
 * Queues TX_FRAMES frames of the sizes @sizes (in turn) with no backend attached, then
 * attaches it and kicks, so that one handler run sends them all; their heads go to
 * @heads. Reads them on the wire side: they must leave in order, byte-exact.
 */
static void send_queued(struct __test_metadata *_metadata, struct _test_data_net *self,
			const size_t sizes[6], int heads[TX_FRAMES])
{
	static uint8_t *frames[TX_FRAMES];
	const uint64_t kick = 1;
	int rcvbuf = 8 << 20;
	uint8_t got[2048];

	/* Room for all of them on the wire side's socket, which reads them only afterwards. */
	ASSERT_EQ(0, setsockopt(self->pkt, SOL_SOCKET, SO_RCVBUFFORCE, &rcvbuf, sizeof(rcvbuf)));
	for (int i = 0; i < TX_FRAMES; i++) {
		size_t len = sizes[i % 6];
		uint8_t *hdr = vg_alloc(&self->g, HDR_LEN, 8);
		void *bufs[2] = { hdr, NULL };
		uint32_t lens[2] = { HDR_LEN, len };

		frames[i] = vg_alloc(&self->g, len, 8);
		ASSERT_NE(NULL, frames[i]);
		memset(hdr, 0, HDR_LEN);
		make_frame(frames[i], len, i);
		frames[i][5] = 0x03;	/* not the macvtap's own address */
		bufs[1] = frames[i];
		heads[i] = vg_post(&self->g, VG_TX, bufs, lens, 2, false);
		ASSERT_LE(0, heads[i]);
	}
	ATTACH(VG_TX);
	ASSERT_EQ(8, write(self->g.vq[VG_TX].kick_fd, &kick, 8));
	for (int i = 0; i < TX_FRAMES; i++) {
		size_t len = sizes[i % 6];
		ssize_t n = recv(self->pkt, got, sizeof(got), 0);

		ASSERT_EQ((ssize_t)len, n) TH_LOG("frame %d: %zd bytes: %s", i, n, strerror(errno));
		ASSERT_EQ(0, memcmp(got, frames[i], len)) TH_LOG("frame %d out of order or changed", i);
	}
}

/*
 * 120 frames queued at once (the backend attached only then, so one handler run sends them
 * all), of sizes that go zero-copy (1000 B on the tap) and by copy, which a tap takes in
 * batches of up to 64 frames: they leave in the order the guest queued them, byte-exact,
 * and every head comes back exactly once.
 */
TEST_F(net, tx_batch_order)
{
	static const size_t sizes[6] = { 60, 1000, 300, 1514, 61, 62 };
	int heads[TX_FRAMES], seen[RING] = { 0 };

	send_queued(_metadata, self, sizes, heads);
	for (int i = 0; i < TX_FRAMES; i++) {
		uint32_t id, len;

		ASSERT_EQ(1, wait_used(&self->g, VG_TX, &id, &len)) TH_LOG("%d heads back", i);
		ASSERT_GT((uint32_t)RING, id);
		seen[id]++;
	}
	for (int i = 0; i < TX_FRAMES; i++) {
		int h = heads[i];

		EXPECT_EQ(1, seen[h]) TH_LOG("head %d returned %d times", h, seen[h]);
	}
	/* Copied frames went to the socket in batches (its send buffer is unlimited). */
	if (!strcmp(variant->dev, "/dev/vhost-net-zc")) {
		long batched = vg_zc_stat("sent_batched");

		TH_LOG("%ld of %d frames sent in batches", batched, TX_FRAMES);
		EXPECT_LE(TX_FRAMES / 2, batched);
	}
}

/*
 * VIRTIO_F_IN_ORDER: buffers are used in the order the guest made them available, a
 * batch of them possibly returned with one used entry naming its last buffer (the
 * driver's view, vg_reap_in_order). TX: 120 frames queued at once, of sizes that go
 * zero-copy (1000 B, whose skbs the wire side's socket holds until it reads them) and by
 * copy, leave in order, byte-exact, and every head comes back in order. RX: 16 frames
 * land in 16 buffers, in order, byte-exact. Stock runs as the suite loads it, with zero
 * copy off: with experimental_zcopytx=1 it returns a copied frame's head before an
 * earlier zero-copy one's (seen here as -EPROTO on the tap), which IN_ORDER forbids.
 */
TEST_F(net, in_order)
{
	enum { RX_FRAMES = 16 };
	static const size_t sizes[6] = { 60, 1000, 300, 1514, 61, 1000 };
	static uint8_t rx_frames[RX_FRAMES][1514];
	int heads[TX_FRAMES], rx_heads[RX_FRAMES], next = 0, r;
	uint8_t *rx_bufs[RX_FRAMES];
	uint32_t len = 0;

	r = vg_set_features(&self->g, (1ULL << VIRTIO_F_VERSION_1) | (1ULL << VIRTIO_F_IN_ORDER));
	ASSERT_EQ(0, r) TH_LOG("SET_FEATURES with IN_ORDER: %s", strerror(-r));
	send_queued(_metadata, self, sizes, heads);
	r = vg_reap_in_order(&self->g, VG_TX, heads, TX_FRAMES, &next, TX_FRAMES, &len, 5000);
	ASSERT_EQ(TX_FRAMES, r) TH_LOG("%d TX heads back in order of %d (-EPROTO: out of order)", r,
				      TX_FRAMES);

	ATTACH(VG_RX);
	for (int i = 0; i < RX_FRAMES; i++) {
		uint32_t blen = HDR_LEN + 1514;

		rx_bufs[i] = vg_alloc(&self->g, blen, 8);
		ASSERT_NE(NULL, rx_bufs[i]);
		rx_heads[i] = vg_post(&self->g, VG_RX, (void **)&rx_bufs[i], &blen, 1, true);
		ASSERT_LE(0, rx_heads[i]);
	}
	ASSERT_EQ(0, send_rx_frames(self, rx_frames, RX_FRAMES, 700, 200));
	next = 0;
	r = vg_reap_in_order(&self->g, VG_RX, rx_heads, RX_FRAMES, &next, RX_FRAMES, &len, 5000);
	ASSERT_EQ(RX_FRAMES, r) TH_LOG("%d RX buffers back in order (-EPROTO: out of order)", r);
	EXPECT_EQ(HDR_LEN + 700, len);
	for (int i = 0; i < RX_FRAMES; i++) {
		EXPECT_EQ(0, memcmp(rx_bufs[i] + HDR_LEN, rx_frames[i], 700))
			TH_LOG("RX frame %d out of order or changed", i);
	}
}

/* With VHOST_SET_VRING_BUSYLOOP_TIMEOUT on both queues, TX and RX still move every byte. */
TEST_F(net, busy_poll)
{
	struct vhost_vring_state poll = { .num = 200 };
	static uint8_t frames[4][1514];

	for (poll.index = 0; poll.index < 2; poll.index++)
		ASSERT_EQ(0, ioctl(self->g.fd, VHOST_SET_VRING_BUSYLOOP_TIMEOUT, &poll));
	ATTACH(VG_RX);
	ATTACH(VG_TX);
	for (int round = 0; round < 4; round++) {
		expect_tx(_metadata, self, 1000, 60 + round);
		ASSERT_EQ(0, send_rx_frames(self, &frames[round], 1, 700, 80 + round));
		expect_rx(_metadata, self, frames[round], 700);
	}
}

/*
 * VIRTIO_F_RING_RESET: each queue in turn is reset the way QEMU resets one queue (backend
 * detached, ring base read, a new ring laid out in new memory, backend attached again)
 * while the other queue carries traffic. Afterwards both move frames byte-exact, with
 * heads of the new ring, and a frame that reached the tap while the RX queue was down
 * arrives in the new RX ring.
 */
TEST_F(net, ring_reset)
{
	const uint64_t features = (1ULL << VIRTIO_F_VERSION_1) | (1ULL << VIRTIO_F_RING_RESET);
	static uint8_t frames[2][1514];
	int r = vg_set_features(&self->g, features);

	ASSERT_EQ(0, r) TH_LOG("VIRTIO_F_RING_RESET refused: %s", strerror(-r));
	ATTACH(VG_RX);
	ATTACH(VG_TX);
	for (unsigned int round = 0; round < 6; round++) {
		unsigned int q = round % 2 ? VG_RX : VG_TX;

		expect_tx(_metadata, self, 1000, 10 * round);
		ASSERT_EQ(0, send_rx_frames(self, &frames[0], 1, 700, 10 * round + 1));
		expect_rx(_metadata, self, frames[0], 700);

		ASSERT_EQ(0, vg_set_backend(&self->g, q, -1));
		/* The other queue runs while this one is down. */
		if (q == VG_TX) {
			ASSERT_EQ(0, send_rx_frames(self, &frames[0], 1, 600, 10 * round + 2));
			expect_rx(_metadata, self, frames[0], 600);
		} else {
			expect_tx(_metadata, self, 900, 10 * round + 2);
			/* Kept by the tap until the new ring has buffers. */
			ASSERT_EQ(0, send_rx_frames(self, &frames[1], 1, 500, 10 * round + 3));
		}
		r = vg_reset_vq(&self->g, q);
		ASSERT_EQ(0, r) TH_LOG("reset of queue %u: %s", q, strerror(-r));
		ATTACH(q);
		if (q == VG_RX)
			expect_rx(_metadata, self, frames[1], 500);

		expect_tx(_metadata, self, 1200, 10 * round + 4);
		ASSERT_EQ(0, send_rx_frames(self, &frames[0], 1, 800, 10 * round + 5));
		expect_rx(_metadata, self, frames[0], 800);
	}
}

/*
 * VHOST_NET_F_VIRTIO_NET_HDR with a tap that has no vnet header, and the feature words
 * @words: vhost drops the guest's @hdr_len byte header on TX and writes one of zeroes (no
 * offloads) on RX.
 */
static void vhost_hdr_roundtrip(struct __test_metadata *_metadata, struct _test_data_net *self,
				const struct _fixture_variant_net *variant,
				const uint64_t *words, size_t hdr_len)
{
	struct sockaddr_ll sll = { .sll_family = AF_PACKET };
	struct ifreq ifr = { .ifr_flags = IFF_TAP | IFF_NO_PI };
	uint8_t *hdr, *frame, *buf, got[2048], zero[sizeof(struct virtio_net_hdr)] = { 0 };
	uint32_t id, len, lens[2];
	int tap, pkt, head, r;
	void *bufs[2];

	if (variant->macvtap) {
		/* A macvtap queue may drop its vnet header; the wire is the fixture's. */
		ASSERT_EQ(0, ioctl(self->tap_fd, TUNSETIFF, &ifr));
		tap = self->tap_fd;
		pkt = self->pkt;
		sll.sll_ifindex = self->ifindex;
	} else {
		tap = open("/dev/net/tun", O_RDWR | O_CLOEXEC);
		ASSERT_LE(0, tap);
		ASSERT_EQ(0, ioctl(tap, TUNSETIFF, &ifr));
		ASSERT_EQ(0, vg_link_up(ifr.ifr_name));
		pkt = socket(AF_PACKET, SOCK_RAW | SOCK_CLOEXEC, htons(TEST_ETHERTYPE));
		ASSERT_LE(0, pkt);
		sll.sll_protocol = htons(TEST_ETHERTYPE);
		sll.sll_ifindex = if_nametoindex(ifr.ifr_name);
		ASSERT_EQ(0, bind(pkt, (struct sockaddr *)&sll, sizeof(sll)));
	}
	r = vg_set_features_array(&self->g, words, VG_FEATURE_WORDS);
	ASSERT_EQ(0, r) TH_LOG("features %#llx %#llx: %s", (unsigned long long)words[0],
			       (unsigned long long)words[1], strerror(-r));
	ASSERT_EQ(0, vg_set_backend(&self->g, VG_TX, tap));
	ASSERT_EQ(0, vg_set_backend(&self->g, VG_RX, tap));

	/* TX: the guest's header does not reach the tap. */
	hdr = vg_alloc(&self->g, hdr_len, 8);
	frame = vg_alloc(&self->g, 600, 8);
	ASSERT_NE(NULL, frame);
	memset(hdr, 0x5a, hdr_len);	/* garbage: vhost must not pass it on */
	make_frame(frame, 600, 90);
	frame[5] = 0x03;
	bufs[0] = hdr;
	bufs[1] = frame;
	lens[0] = hdr_len;
	lens[1] = 600;
	head = vg_post(&self->g, VG_TX, bufs, lens, 2, false);
	ASSERT_LE(0, head);
	ASSERT_EQ(600, recv(pkt, got, sizeof(got), 0));
	EXPECT_EQ(0, memcmp(got, frame, 600));
	ASSERT_EQ(1, wait_used(&self->g, VG_TX, &id, &len));
	EXPECT_EQ((uint32_t)head, id);

	/* RX: vhost writes a header of zeroes before the frame. */
	buf = vg_alloc(&self->g, hdr_len + 1514, 8);
	ASSERT_NE(NULL, buf);
	memset(buf, 0xee, hdr_len + 1514);
	bufs[0] = buf;
	lens[0] = hdr_len + 1514;
	head = vg_post(&self->g, VG_RX, bufs, lens, 1, true);
	ASSERT_LE(0, head);
	make_frame(got, 500, 91);
	sll.sll_halen = 6;
	ASSERT_EQ(500, sendto(pkt, got, 500, 0, (struct sockaddr *)&sll, sizeof(sll)));
	ASSERT_EQ(1, wait_used(&self->g, VG_RX, &id, &len));
	EXPECT_EQ((uint32_t)head, id);
	EXPECT_EQ(hdr_len + 500, len);
	/*
	 * struct virtio_net_hdr, then, as in stock, num_buffers (1: one buffer) with
	 * VERSION_1 or mergeable buffers; the rest of a longer header is left as the guest
	 * had it.
	 */
	EXPECT_EQ(0, memcmp(buf, zero, sizeof(struct virtio_net_hdr)));
	if (hdr_len >= sizeof(struct virtio_net_hdr_mrg_rxbuf))
		EXPECT_EQ(1, buf[10] | buf[11] << 8) TH_LOG("num_buffers %#x",
							     buf[10] | buf[11] << 8);
	EXPECT_EQ(0, memcmp(buf + hdr_len, got, 500));

	EXPECT_EQ(0, vg_set_backend(&self->g, VG_TX, -1));
	EXPECT_EQ(0, vg_set_backend(&self->g, VG_RX, -1));
	if (!variant->macvtap) {
		close(pkt);
		close(tap);
	}
}

TEST_F(net, vhost_supplies_net_hdr)
{
	const uint64_t words[VG_FEATURE_WORDS] = {
		(1ULL << VIRTIO_F_VERSION_1) | (1ULL << VHOST_NET_F_VIRTIO_NET_HDR),
	};

	vhost_hdr_roundtrip(_metadata, self, variant, words, HDR_LEN);
}

/*
 * With a UDP tunnel GSO feature of word 1, the header is struct
 * virtio_net_hdr_v1_hash_tunnel (24 bytes, as in stock 7.3): vhost strips and writes that
 * many bytes, for the guest's (GUEST_) and the host's (HOST_) direction alike.
 */
TEST_F(net, udp_tunnel_hdr_vhost)
{
	static const unsigned int bits[] = {
		VIRTIO_NET_F_HOST_UDP_TUNNEL_GSO, VIRTIO_NET_F_GUEST_UDP_TUNNEL_GSO,
	};

	for (unsigned int i = 0; i < ARRAY_SIZE(bits); i++) {
		uint64_t words[VG_FEATURE_WORDS] = {
			(1ULL << VIRTIO_F_VERSION_1) | (1ULL << VHOST_NET_F_VIRTIO_NET_HDR),
		};

		words[bits[i] / 64] |= 1ULL << (bits[i] % 64);
		vhost_hdr_roundtrip(_metadata, self, variant, words,
				    sizeof(struct virtio_net_hdr_v1_hash_tunnel));
	}
}

/*
 * The same with the header from the backend (a tap or macvtap with a 24-byte vnet header):
 * vhost sizes the guest's mergeable buffers for it. A frame whose 24 + 1006 bytes need a
 * third 512-byte buffer (where 12 + 1006 would fit in two) arrives whole.
 */
TEST_F(net, udp_tunnel_hdr_backend)
{
	int hdr = sizeof(struct virtio_net_hdr_v1_hash_tunnel);
	uint64_t words[VG_FEATURE_WORDS] = {
		(1ULL << VIRTIO_F_VERSION_1) | (1ULL << VIRTIO_NET_F_MRG_RXBUF),
	};

	words[VIRTIO_NET_F_GUEST_UDP_TUNNEL_GSO / 64] |=
		1ULL << (VIRTIO_NET_F_GUEST_UDP_TUNNEL_GSO % 64);
	ASSERT_EQ(0, ioctl(self->tap_fd, TUNSETVNETHDRSZ, &hdr));
	rx_mergeable_hdr(_metadata, self, words, hdr, 1006);
}

TEST_HARNESS_MAIN
