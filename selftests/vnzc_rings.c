// SPDX-License-Identifier: GPL-2.0
/*
 * Malformed rings: descriptor loops, heads and addresses out of range, avail index jumps,
 * chains too long for the iovec array, nested indirect tables, buffers of the wrong
 * direction; and the 65535 -> 0 wrap of the ring indices, which is not an error. Each case
 * runs on stock /dev/vhost-net and on /dev/vhost-net-zc: a mistake must be reported on the
 * error eventfd, never completed, and never splat (the suite checks the kernel log).
 */
#define _GNU_SOURCE
#include <errno.h>
#include <net/if.h>
#include <string.h>
#include <arpa/inet.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <unistd.h>
#include <linux/if_packet.h>
#include <linux/virtio_config.h>

#include "kselftest_harness.h"
#include "vhost_guest.h"

#define RING 16

FIXTURE(ring) {
	struct vg_guest g;
	char tap[IFNAMSIZ];
	int tap_fd;
	uint8_t *buf;		/* a valid 256-byte guest buffer */
};

FIXTURE_VARIANT(ring) {
	const char *dev;
};

FIXTURE_VARIANT_ADD(ring, stock) {
	.dev = "/dev/vhost-net",
};

FIXTURE_VARIANT_ADD(ring, zc) {
	.dev = "/dev/vhost-net-zc",
};

FIXTURE_SETUP(ring)
{
	const uint64_t features = (1ULL << VIRTIO_F_VERSION_1) |
				  (1ULL << VIRTIO_RING_F_INDIRECT_DESC);

	self->tap_fd = vg_tap_open(self->tap, sizeof(self->tap));
	ASSERT_LE(0, self->tap_fd);
	ASSERT_EQ(0, vg_link_up(self->tap));
	ASSERT_EQ(0, vg_open(&self->g, variant->dev, 1 << 20));
	ASSERT_EQ(0, vg_setup(&self->g, features, RING));
	self->buf = vg_alloc(&self->g, 256, 16);
	ASSERT_NE(NULL, self->buf);
	memset(self->buf, 0, 256);
}

FIXTURE_TEARDOWN(ring)
{
	vg_close(&self->g);
	close(self->tap_fd);
}

/* The device reported an error and completed nothing. */
static void expect_rejected(struct __test_metadata *_metadata, struct vg_guest *g, int idx)
{
	uint32_t id, len;

	EXPECT_EQ(1, vg_wait_err(g, idx, 5000)) TH_LOG("no error signalled");
	EXPECT_EQ(0, vg_reap(g, idx, &id, &len)) TH_LOG("a malformed chain was completed");
}

TEST_F(ring, desc_loop)
{
	struct vring_desc *d = self->g.vq[VG_TX].desc;

	ASSERT_EQ(0, vg_set_backend(&self->g, VG_TX, self->tap_fd));
	d[0] = (struct vring_desc){ vg_gpa(&self->g, self->buf), 64, VRING_DESC_F_NEXT, 1 };
	d[1] = (struct vring_desc){ vg_gpa(&self->g, self->buf), 64, VRING_DESC_F_NEXT, 0 };
	ASSERT_EQ(0, vg_publish(&self->g, VG_TX, 0));
	expect_rejected(_metadata, &self->g, VG_TX);
}

TEST_F(ring, head_out_of_range)
{
	ASSERT_EQ(0, vg_set_backend(&self->g, VG_TX, self->tap_fd));
	ASSERT_EQ(0, vg_publish(&self->g, VG_TX, RING + 3));
	expect_rejected(_metadata, &self->g, VG_TX);
}

TEST_F(ring, address_outside_memory)
{
	struct vring_desc *d = self->g.vq[VG_TX].desc;

	ASSERT_EQ(0, vg_set_backend(&self->g, VG_TX, self->tap_fd));
	d[0] = (struct vring_desc){ VG_GPA_BASE + (2 << 20), 64, 0, 0 };
	ASSERT_EQ(0, vg_publish(&self->g, VG_TX, 0));
	expect_rejected(_metadata, &self->g, VG_TX);
}

TEST_F(ring, address_wraps)
{
	struct vring_desc *d = self->g.vq[VG_TX].desc;

	ASSERT_EQ(0, vg_set_backend(&self->g, VG_TX, self->tap_fd));
	d[0] = (struct vring_desc){ ~0ULL - 16, 64, 0, 0 };
	ASSERT_EQ(0, vg_publish(&self->g, VG_TX, 0));
	expect_rejected(_metadata, &self->g, VG_TX);
}

TEST_F(ring, avail_index_jump)
{
	struct vg_vq *vq = &self->g.vq[VG_TX];
	uint64_t one = 1;

	ASSERT_EQ(0, vg_set_backend(&self->g, VG_TX, self->tap_fd));
	/* More entries made available than the ring has. */
	vq->avail->idx = RING + 5;
	ASSERT_EQ((ssize_t)sizeof(one), write(vq->kick_fd, &one, sizeof(one)));
	expect_rejected(_metadata, &self->g, VG_TX);
}

TEST_F(ring, nested_indirect)
{
	struct vring_desc *d = self->g.vq[VG_TX].desc;
	struct vring_desc *table = vg_alloc(&self->g, 2 * sizeof(*table), 16);

	ASSERT_NE(NULL, table);
	ASSERT_EQ(0, vg_set_backend(&self->g, VG_TX, self->tap_fd));
	table[0] = (struct vring_desc){ vg_gpa(&self->g, table), 2 * sizeof(*table),
					VRING_DESC_F_INDIRECT, 0 };
	d[0] = (struct vring_desc){ vg_gpa(&self->g, table), 2 * sizeof(*table),
				    VRING_DESC_F_INDIRECT, 0 };
	ASSERT_EQ(0, vg_publish(&self->g, VG_TX, 0));
	expect_rejected(_metadata, &self->g, VG_TX);
}

TEST_F(ring, chain_longer_than_iov_array)
{
	/* An indirect table of 1100 one-byte buffers: more than UIO_MAXIOV iovecs. */
	const unsigned int n = 1100;
	struct vring_desc *d = self->g.vq[VG_TX].desc;
	struct vring_desc *table = vg_alloc(&self->g, n * sizeof(*table), 16);
	uint8_t *bytes = vg_alloc(&self->g, 2 * n, 2);

	ASSERT_NE(NULL, table);
	ASSERT_NE(NULL, bytes);
	ASSERT_EQ(0, vg_set_backend(&self->g, VG_TX, self->tap_fd));
	/* Every other byte, so that no two buffers merge into one iovec. */
	for (unsigned int i = 0; i < n; i++)
		table[i] = (struct vring_desc){ vg_gpa(&self->g, bytes + 2 * i), 1,
						i + 1 < n ? VRING_DESC_F_NEXT : 0, i + 1 };
	d[0] = (struct vring_desc){ vg_gpa(&self->g, table), n * sizeof(*table),
				    VRING_DESC_F_INDIRECT, 0 };
	ASSERT_EQ(0, vg_publish(&self->g, VG_TX, 0));
	expect_rejected(_metadata, &self->g, VG_TX);
}

TEST_F(ring, tx_writable_buffer)
{
	void *bufs[2] = { self->buf, self->buf + 128 };
	uint32_t lens[2] = { 64, 64 };
	struct vring_desc *d = self->g.vq[VG_TX].desc;

	ASSERT_EQ(0, vg_set_backend(&self->g, VG_TX, self->tap_fd));
	/* A device-writable buffer has no place in a TX chain. */
	d[0] = (struct vring_desc){ vg_gpa(&self->g, bufs[0]), lens[0], VRING_DESC_F_NEXT, 1 };
	d[1] = (struct vring_desc){ vg_gpa(&self->g, bufs[1]), lens[1], VRING_DESC_F_WRITE, 0 };
	ASSERT_EQ(0, vg_publish(&self->g, VG_TX, 0));
	expect_rejected(_metadata, &self->g, VG_TX);
}

TEST_F(ring, rx_readable_buffer)
{
	struct vring_desc *d = self->g.vq[VG_RX].desc;
	uint8_t frame[60] = { 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 2, 0, 0, 0, 0, 2, 0x88, 0xb5 };
	struct sockaddr_ll to = {
		.sll_family = AF_PACKET,
		.sll_protocol = htons(0x88b5),
		.sll_halen = 6,
	};
	int pkt = socket(AF_PACKET, SOCK_RAW | SOCK_CLOEXEC, htons(0x88b5));

	ASSERT_EQ(0, vg_set_backend(&self->g, VG_RX, self->tap_fd));
	/* A device-readable buffer has no place in an RX chain. */
	d[0] = (struct vring_desc){ vg_gpa(&self->g, self->buf), 256, 0, 0 };
	ASSERT_EQ(0, vg_publish(&self->g, VG_RX, 0));
	/* A packet for the guest: sent out of the tap interface. */
	ASSERT_LE(0, pkt);
	to.sll_ifindex = if_nametoindex(self->tap);
	ASSERT_EQ((ssize_t)sizeof(frame), sendto(pkt, frame, sizeof(frame), 0,
						 (struct sockaddr *)&to, sizeof(to)));
	expect_rejected(_metadata, &self->g, VG_RX);
	close(pkt);
}

/* The avail and used indices wrap from 65535 to 0: not an error. */
TEST_F(ring, index_wrap)
{
	struct vhost_vring_state base = { .index = VG_TX, .num = 65530 };
	struct vg_vq *vq = &self->g.vq[VG_TX];
	unsigned int done = 0;

	ASSERT_EQ(0, ioctl(self->g.fd, VHOST_SET_VRING_BASE, &base));
	vq->avail_idx = vq->last_used = 65530;
	vq->avail->idx = 65530;
	vq->used->idx = 65530;
	ASSERT_EQ(0, vg_set_backend(&self->g, VG_TX, self->tap_fd));
	for (unsigned int i = 0; i < 12; i++) {
		void *bufs[1] = { self->buf };
		uint32_t lens[1] = { 12 + 60 };
		int head = vg_post(&self->g, VG_TX, bufs, lens, 1, false);

		ASSERT_LE(0, head);
		for (int tries = 0; tries < 50; tries++) {
			uint32_t id, len;

			if (vg_reap(&self->g, VG_TX, &id, &len)) {
				EXPECT_EQ((uint32_t)head, id);
				done++;
				break;
			}
			vg_wait_call(&self->g, VG_TX, 100);
		}
	}
	EXPECT_EQ(12U, done);
	EXPECT_EQ((uint16_t)(65530 + 12), vq->used->idx);
	EXPECT_EQ(0, vg_wait_err(&self->g, VG_TX, 0));
}

TEST_HARNESS_MAIN
