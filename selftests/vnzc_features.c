// SPDX-License-Identifier: GPL-2.0
/*
 * Feature discovery on /dev/vhost-net-zc, and the same calls on stock /dev/vhost-net where
 * the two must agree (errnos) or differ in a documented way (what is offered).
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <stdint.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <unistd.h>
#include <linux/vhost.h>
#include <linux/virtio_config.h>
#include <linux/virtio_net.h>
#include <linux/virtio_ring.h>

#include "kselftest_harness.h"

#define ZC_DEV		"/dev/vhost-net-zc"
#define STOCK_DEV	"/dev/vhost-net"
#define B(x)		(1ULL << (x))

/* What /dev/vhost-net-zc offers (Documentation/admin-guide.rst, "Features"). */
static const uint64_t zc_features =
	B(VIRTIO_F_NOTIFY_ON_EMPTY) | B(VIRTIO_RING_F_INDIRECT_DESC) |
	B(VIRTIO_RING_F_EVENT_IDX) | B(VHOST_F_LOG_ALL) | B(VIRTIO_F_ANY_LAYOUT) |
	B(VIRTIO_F_VERSION_1) | B(VHOST_NET_F_VIRTIO_NET_HDR) | B(VIRTIO_NET_F_MRG_RXBUF) |
	B(VIRTIO_F_RING_RESET) | B(VIRTIO_F_IN_ORDER) | B(VIRTIO_F_ACCESS_PLATFORM);

/* Feature word 1: the UDP tunnel GSO offloads, as stock 7.3 offers them. */
static const uint64_t zc_features_word1 =
	B(VIRTIO_NET_F_GUEST_UDP_TUNNEL_GSO - 64) | B(VIRTIO_NET_F_HOST_UDP_TUNNEL_GSO - 64);

/* The backend features: the device IOTLB's second message format, as stock offers it. */
static const uint64_t zc_backend = B(VHOST_BACKEND_F_IOTLB_MSG_V2);

FIXTURE(dev) {
	int zc;
	int stock;
};

FIXTURE_SETUP(dev)
{
	self->zc = open(ZC_DEV, O_RDWR | O_CLOEXEC);
	ASSERT_LE(0, self->zc) TH_LOG("open %s: %s", ZC_DEV, strerror(errno));
	self->stock = open(STOCK_DEV, O_RDWR | O_CLOEXEC);
	ASSERT_LE(0, self->stock) TH_LOG("open %s: %s", STOCK_DEV, strerror(errno));
}

FIXTURE_TEARDOWN(dev)
{
	close(self->zc);
	close(self->stock);
}

/* Returns the errno of an ioctl, 0 on success. */
static int ioctl_errno(int fd, unsigned long req, void *arg)
{
	return ioctl(fd, req, arg) < 0 ? errno : 0;
}

TEST_F(dev, get_features)
{
	uint64_t zc = 0, stock = 0;

	ASSERT_EQ(0, ioctl_errno(self->zc, VHOST_GET_FEATURES, &zc));
	ASSERT_EQ(0, ioctl_errno(self->stock, VHOST_GET_FEATURES, &stock));
	TH_LOG("features: vhost-net-zc %#llx, stock vhost-net %#llx",
	       (unsigned long long)zc, (unsigned long long)stock);
	EXPECT_EQ(zc_features, zc);
	/* The same word as stock's: a drop-in neither invents nor drops features. */
	EXPECT_EQ(stock, zc);
}

TEST_F(dev, get_features_array)
{
	uint64_t buf[1 + 4];
	uint64_t plain;

	ASSERT_EQ(0, ioctl_errno(self->zc, VHOST_GET_FEATURES, &plain));

	/* count 0: nothing but the count is touched. */
	memset(buf, 0xa5, sizeof(buf));
	buf[0] = 0;
	ASSERT_EQ(0, ioctl_errno(self->zc, VHOST_GET_FEATURES_ARRAY, buf));
	EXPECT_EQ(0xa5a5a5a5a5a5a5a5ULL, buf[1]);

	/* count 1: word 0 is the plain feature set. */
	memset(buf, 0xa5, sizeof(buf));
	buf[0] = 1;
	ASSERT_EQ(0, ioctl_errno(self->zc, VHOST_GET_FEATURES_ARRAY, buf));
	EXPECT_EQ(plain, buf[1]);
	EXPECT_EQ(0xa5a5a5a5a5a5a5a5ULL, buf[2]);

	/* count 4: word 1, then words past the kernel's are zeroed, as stock does. */
	memset(buf, 0xa5, sizeof(buf));
	buf[0] = 4;
	ASSERT_EQ(0, ioctl_errno(self->zc, VHOST_GET_FEATURES_ARRAY, buf));
	EXPECT_EQ(plain, buf[1]);
	EXPECT_EQ(zc_features_word1, buf[2]);
	for (int i = 3; i < 5; i++)
		EXPECT_EQ(0ULL, buf[i]);
}

/*
 * Every feature word and the backend features, against stock 7.3's: the same sets, bit
 * for bit (Documentation/admin-guide.rst, "Features").
 */
TEST_F(dev, offered_sets)
{
	const uint64_t missing[2] = { 0, 0 };
	uint64_t zc[1 + 2] = { 2 }, stock[1 + 2] = { 2 }, zb = ~0ULL, sb = ~0ULL;

	ASSERT_EQ(0, ioctl_errno(self->zc, VHOST_GET_FEATURES_ARRAY, zc));
	ASSERT_EQ(0, ioctl_errno(self->stock, VHOST_GET_FEATURES_ARRAY, stock));
	for (int w = 0; w < 2; w++) {
		TH_LOG("word %d: vhost-net-zc %#llx, stock vhost-net %#llx", w,
		       (unsigned long long)zc[1 + w], (unsigned long long)stock[1 + w]);
		EXPECT_EQ(0ULL, zc[1 + w] & ~stock[1 + w]);
		EXPECT_EQ(missing[w], stock[1 + w] & ~zc[1 + w]);
	}
	EXPECT_EQ(zc_features, zc[1]);
	EXPECT_EQ(zc_features_word1, zc[2]);

	ASSERT_EQ(0, ioctl_errno(self->zc, VHOST_GET_BACKEND_FEATURES, &zb));
	ASSERT_EQ(0, ioctl_errno(self->stock, VHOST_GET_BACKEND_FEATURES, &sb));
	EXPECT_EQ(sb, zb);
	EXPECT_EQ(zc_backend, zb);
}

TEST_F(dev, get_features_array_faults)
{
	/*
	 * The array starts on its own page followed by a hole, so a device that writes past
	 * the mapping faults there instead of scribbling over this test's stack.
	 */
	long psz = sysconf(_SC_PAGESIZE);
	uint8_t *p = mmap(NULL, 2 * psz, PROT_READ | PROT_WRITE,
			  MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	uint64_t *count = (uint64_t *)p;
	int fds[2] = { self->zc, self->stock };

	ASSERT_NE(MAP_FAILED, p);
	ASSERT_EQ(0, munmap(p + psz, psz));
	for (int i = 0; i < 2; i++) {
		/* A count whose byte size overflows, and one far past the mapping. */
		*count = UINT64_MAX;
		EXPECT_EQ(EFAULT, ioctl_errno(fds[i], VHOST_GET_FEATURES_ARRAY, count));
		*count = 1ULL << 40;
		EXPECT_EQ(EFAULT, ioctl_errno(fds[i], VHOST_GET_FEATURES_ARRAY, count));
		EXPECT_EQ(EFAULT, ioctl_errno(fds[i], VHOST_GET_FEATURES_ARRAY, NULL));
	}
	munmap(p, psz);
}

TEST_F(dev, get_features_array_partial_page)
{
	/* The count fits on a page whose successor is unmapped: the words do not. */
	long psz = sysconf(_SC_PAGESIZE);
	uint8_t *p = mmap(NULL, 2 * psz, PROT_READ | PROT_WRITE,
			  MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	uint64_t *count;

	ASSERT_NE(MAP_FAILED, p);
	ASSERT_EQ(0, munmap(p + psz, psz));
	count = (uint64_t *)(p + psz - sizeof(uint64_t));
	*count = 2;
	EXPECT_EQ(EFAULT, ioctl_errno(self->zc, VHOST_GET_FEATURES_ARRAY, count));
	EXPECT_EQ(EFAULT, ioctl_errno(self->stock, VHOST_GET_FEATURES_ARRAY, count));
	munmap(p, psz);
}

TEST_F(dev, get_backend_features)
{
	uint64_t f = ~0ULL;

	ASSERT_EQ(0, ioctl_errno(self->zc, VHOST_GET_BACKEND_FEATURES, &f));
	EXPECT_EQ(zc_backend, f);
}

TEST_F(dev, bad_pointers)
{
	void *bad = (void *)16;

	EXPECT_EQ(EFAULT, ioctl_errno(self->zc, VHOST_GET_FEATURES, bad));
	EXPECT_EQ(EFAULT, ioctl_errno(self->stock, VHOST_GET_FEATURES, bad));
	EXPECT_EQ(EFAULT, ioctl_errno(self->zc, VHOST_GET_BACKEND_FEATURES, NULL));
	EXPECT_EQ(EFAULT, ioctl_errno(self->stock, VHOST_GET_BACKEND_FEATURES, NULL));
}

TEST_F(dev, unknown_ioctl)
{
	uint64_t v = 0;

	/* Before an owner is set, any command the device does not know is EPERM, as in stock. */
	EXPECT_EQ(EPERM, ioctl_errno(self->zc, _IOR(VHOST_VIRTIO, 0xfe, uint64_t), &v));
	EXPECT_EQ(EPERM, ioctl_errno(self->stock, _IOR(VHOST_VIRTIO, 0xfe, uint64_t), &v));
	EXPECT_EQ(EPERM, ioctl_errno(self->zc, _IO('x', 0), NULL));
	EXPECT_EQ(EPERM, ioctl_errno(self->stock, _IO('x', 0), NULL));
}

TEST(many_opens)
{
	int fds[64];

	for (int i = 0; i < 64; i++) {
		fds[i] = open(ZC_DEV, O_RDWR | O_CLOEXEC);
		ASSERT_LE(0, fds[i]);
	}
	for (int i = 0; i < 64; i++)
		EXPECT_EQ(0, close(fds[i]));
}

TEST_HARNESS_MAIN
