// SPDX-License-Identifier: GPL-2.0
/*
 * Differential ABI test: the same ioctl sequences, valid and invalid, against stock
 * /dev/vhost-net and /dev/vhost-net-zc. Every step must give both devices the same result
 * (return value and errno), except the documented differences listed in EXPECT_DIFF().
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <arpa/inet.h>
#include <linux/if_ether.h>
#include <net/if.h>
#include <unistd.h>
#include <linux/virtio_config.h>

#include "kselftest_harness.h"
#include "vhost_guest.h"

#define NDEV 2
static const char *const devs[NDEV] = { "/dev/vhost-net", "/dev/vhost-net-zc" };

FIXTURE(abi) {
	struct vg_guest g[NDEV];	/* [0] stock, [1] vhost-net-zc */
};

FIXTURE_SETUP(abi)
{
	for (int i = 0; i < NDEV; i++) {
		ASSERT_EQ(0, vg_open(&self->g[i], devs[i], 1 << 20))
			TH_LOG("open %s", devs[i]);
	}
}

FIXTURE_TEARDOWN(abi)
{
	for (int i = 0; i < NDEV; i++)
		vg_close(&self->g[i]);
}

static int errno_of(int fd, unsigned long req, void *arg)
{
	return ioctl(fd, req, arg) < 0 ? errno : 0;
}

/*
 * Runs `req` with the argument built by `argexpr` (which may use `g`, the guest of the
 * device at hand) on both devices, and expects the same errno from both, and `want`.
 */
#define SAME(want, req, argexpr) do {						\
	int __e[NDEV];								\
	for (int __i = 0; __i < NDEV; __i++) {					\
		struct vg_guest *g = &self->g[__i];				\
		(void)g;							\
		__e[__i] = errno_of(g->fd, (req), (argexpr));			\
	}									\
	EXPECT_EQ(__e[0], __e[1])						\
		TH_LOG("%s: stock %s, vhost-net-zc %s", #req, strerror(__e[0]),	\
		       strerror(__e[1]));					\
	EXPECT_EQ((want), __e[1]) TH_LOG("%s: %s", #req, strerror(__e[1]));	\
} while (0)

TEST_F(abi, before_owner)
{
	struct vhost_vring_state st = { .index = 0, .num = 256 };
	struct vhost_vring_file f = { .index = 0, .fd = -1 };
	uint64_t v = 0;

	/* Every command but features and owner needs an owner. */
	SAME(EPERM, VHOST_SET_VRING_NUM, &st);
	SAME(EPERM, VHOST_GET_VRING_BASE, &st);
	SAME(EPERM, VHOST_SET_VRING_KICK, &f);
	SAME(EPERM, VHOST_SET_MEM_TABLE, &v);
	SAME(EPERM, VHOST_SET_LOG_BASE, &v);
	SAME(EPERM, VHOST_NET_SET_BACKEND, &f);
	SAME(EPERM, VHOST_RESET_OWNER, NULL);
	SAME(EPERM, _IOR(VHOST_VIRTIO, 0xfe, uint64_t), &v);
	SAME(0, VHOST_GET_FEATURES, &v);
}

TEST_F(abi, owner)
{
	uint64_t v = 0;

	SAME(0, VHOST_SET_OWNER, NULL);
	SAME(EBUSY, VHOST_SET_OWNER, NULL);
	/* Unknown commands, once owned, are the VFS's ENOTTY. */
	SAME(ENOTTY, _IOR(VHOST_VIRTIO, 0xfe, uint64_t), &v);
	SAME(0, VHOST_RESET_OWNER, NULL);
	SAME(EPERM, VHOST_RESET_OWNER, NULL);
	SAME(0, VHOST_SET_OWNER, NULL);
}

TEST_F(abi, owner_is_per_process)
{
	SAME(0, VHOST_SET_OWNER, NULL);
	for (int i = 0; i < NDEV; i++) {
		pid_t pid = fork();
		int status;

		ASSERT_LE(0, pid);
		if (pid == 0) {
			uint64_t v = 0;

			/* A child has another mm: it is not the owner. */
			_exit(errno_of(self->g[i].fd, VHOST_SET_MEM_TABLE, &v) == EPERM &&
			      errno_of(self->g[i].fd, VHOST_RESET_OWNER, NULL) == EPERM ? 0 : 1);
		}
		ASSERT_EQ(pid, waitpid(pid, &status, 0));
		EXPECT_EQ(0, WEXITSTATUS(status)) TH_LOG("%s", devs[i]);
	}
}

TEST_F(abi, features)
{
	uint64_t f;

	SAME(0, VHOST_SET_OWNER, NULL);
	f = 1ULL << VIRTIO_F_VERSION_1;
	SAME(0, VHOST_SET_FEATURES, &f);
	f = 1ULL << 63;
	SAME(EOPNOTSUPP, VHOST_SET_FEATURES, &f);
	SAME(EFAULT, VHOST_SET_FEATURES, NULL);
	/* LOG_ALL without a log base that covers memory: both refuse. */
	ASSERT_EQ(0, vg_set_mem_table(&self->g[0]));
	ASSERT_EQ(0, vg_set_mem_table(&self->g[1]));
	f = 1ULL << VHOST_F_LOG_ALL;
	SAME(0, VHOST_SET_FEATURES, &f);
	{
		uint64_t arr[3] = { 2, 1ULL << VIRTIO_F_VERSION_1, 0 };
		uint64_t bad[4] = { 3, 0, 0, 1 };

		SAME(0, VHOST_SET_FEATURES_ARRAY, arr);
		SAME(EOPNOTSUPP, VHOST_SET_FEATURES_ARRAY, bad);
	}
	SAME(0, VHOST_SET_BACKEND_FEATURES, &(uint64_t){ 0 });
}

/*
 * The device IOTLB and in-order use of buffers, which stock 7.3 offers: accepted by both,
 * and the backend feature bits neither offers refused by both.
 */
TEST_F(abi, iotlb_and_in_order_accepted)
{
	uint64_t f = 1ULL << VIRTIO_F_ACCESS_PLATFORM;
	uint64_t bf = 1ULL << VHOST_BACKEND_F_IOTLB_MSG_V2;
	uint64_t batch = 1ULL << VHOST_BACKEND_F_IOTLB_BATCH;

	ASSERT_EQ(0, vg_set_owner(&self->g[0]));
	ASSERT_EQ(0, vg_set_owner(&self->g[1]));
	SAME(0, VHOST_SET_BACKEND_FEATURES, &bf);
	SAME(EOPNOTSUPP, VHOST_SET_BACKEND_FEATURES, &batch);
	SAME(0, VHOST_SET_FEATURES, &f);
	f = 1ULL << VIRTIO_F_IN_ORDER;
	SAME(0, VHOST_SET_FEATURES, &f);
}

TEST_F(abi, mem_table)
{
	struct {
		struct vhost_memory hdr;
		struct vhost_memory_region r[2];
	} m;

	SAME(0, VHOST_SET_OWNER, NULL);
	memset(&m, 0, sizeof(m));
	SAME(EFAULT, VHOST_SET_MEM_TABLE, NULL);
	m.hdr.nregions = 100000;
	SAME(E2BIG, VHOST_SET_MEM_TABLE, &m);
	/* A region whose guest range wraps around the address space. */
	m.hdr.nregions = 1;
	m.r[0].guest_phys_addr = ~0ULL - 4095;
	m.r[0].memory_size = 8192;
	m.r[0].userspace_addr = 0x10000;
	SAME(EFAULT, VHOST_SET_MEM_TABLE, &m);
	m.hdr.nregions = 1;
	m.r[0].guest_phys_addr = VG_GPA_BASE;
	m.r[0].memory_size = 1 << 20;
	for (int i = 0; i < NDEV; i++) {
		ASSERT_EQ(0, vg_set_mem_table(&self->g[i]));
	}
}

TEST_F(abi, vrings)
{
	struct vhost_vring_state st;
	struct vhost_vring_addr a;
	struct vhost_vring_file f;

	SAME(0, VHOST_SET_OWNER, NULL);
	st = (struct vhost_vring_state){ .index = 2, .num = 256 };
	SAME(ENOBUFS, VHOST_SET_VRING_NUM, &st);
	st = (struct vhost_vring_state){ .index = 0, .num = 0 };
	SAME(EINVAL, VHOST_SET_VRING_NUM, &st);
	st.num = 100;
	SAME(EINVAL, VHOST_SET_VRING_NUM, &st);
	st.num = 65536;
	SAME(EINVAL, VHOST_SET_VRING_NUM, &st);
	st.num = 256;
	SAME(0, VHOST_SET_VRING_NUM, &st);
	st = (struct vhost_vring_state){ .index = 0, .num = 0x10000 };
	SAME(EINVAL, VHOST_SET_VRING_BASE, &st);
	st.num = 7;
	SAME(0, VHOST_SET_VRING_BASE, &st);
	st = (struct vhost_vring_state){ .index = 0 };
	SAME(0, VHOST_GET_VRING_BASE, &st);
	EXPECT_EQ(7U, st.num);

	/* A misaligned avail ring, then a misaligned used ring. */
	a = (struct vhost_vring_addr){ .index = 0, .desc_user_addr = 0x1000,
				       .avail_user_addr = 0x2001, .used_user_addr = 0x3000 };
	SAME(EINVAL, VHOST_SET_VRING_ADDR, &a);
	a.avail_user_addr = 0x2000;
	a.used_user_addr = 0x3002;
	SAME(EINVAL, VHOST_SET_VRING_ADDR, &a);
	a.index = 5;
	SAME(ENOBUFS, VHOST_SET_VRING_ADDR, &a);

	f = (struct vhost_vring_file){ .index = 0, .fd = 1000 };
	SAME(EBADF, VHOST_SET_VRING_KICK, &f);
	SAME(EBADF, VHOST_SET_VRING_CALL, &f);
	SAME(EBADF, VHOST_SET_VRING_ERR, &f);
	f.index = 9;
	SAME(ENOBUFS, VHOST_SET_VRING_KICK, &f);

	st = (struct vhost_vring_state){ .index = 0, .num = 1000 };
	SAME(0, VHOST_SET_VRING_BUSYLOOP_TIMEOUT, &st);
	st.num = 0;
	SAME(0, VHOST_GET_VRING_BUSYLOOP_TIMEOUT, &st);
	EXPECT_EQ(1000U, st.num);
}

TEST_F(abi, backend_checks)
{
	struct vhost_vring_file f = { .index = 7, .fd = -1 };

	SAME(0, VHOST_SET_OWNER, NULL);
	SAME(ENOBUFS, VHOST_NET_SET_BACKEND, &f);
	f.index = 1;
	/* The ring is not set up yet. */
	SAME(EFAULT, VHOST_NET_SET_BACKEND, &f);
	SAME(EFAULT, VHOST_NET_SET_BACKEND, NULL);
	for (int i = 0; i < NDEV; i++) {
		ASSERT_EQ(0, vg_set_mem_table(&self->g[i]));
		ASSERT_EQ(0, vg_setup_vq(&self->g[i], VG_TX, 256));
	}
	/* Detaching when nothing is attached succeeds. */
	SAME(0, VHOST_NET_SET_BACKEND, &f);
}

/* What SET_BACKEND accepts on TX, and detaching, replacing, resetting and closing with it. */
TEST_F(abi, backend_attach)
{
	char name[2][IFNAMSIZ];
	int tap[2], efd, udp, pkt;
	struct vhost_vring_file f = { .index = VG_TX };

	for (int i = 0; i < NDEV; i++) {
		ASSERT_EQ(0, vg_setup(&self->g[i], 1ULL << VIRTIO_F_VERSION_1, 256));
		tap[i] = vg_tap_open(name[i], sizeof(name[i]));
		ASSERT_LE(0, tap[i]);
	}
	efd = eventfd(0, EFD_CLOEXEC);
	udp = socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
	pkt = socket(AF_PACKET, SOCK_RAW | SOCK_CLOEXEC, htons(ETH_P_ALL));
	ASSERT_LE(0, efd);
	ASSERT_LE(0, udp);
	ASSERT_LE(0, pkt);

	/* Not a tap, macvtap or raw packet socket. */
	f.fd = efd;
	SAME(ENOTSOCK, VHOST_NET_SET_BACKEND, &f);
	f.fd = udp;
	SAME(ENOTSOCK, VHOST_NET_SET_BACKEND, &f);
	f.fd = 1000;
	SAME(ENOTSOCK, VHOST_NET_SET_BACKEND, &f);
	/* A raw packet socket, then a tap in its place, the same tap again, then detached. */
	f.fd = pkt;
	SAME(0, VHOST_NET_SET_BACKEND, &f);
	SAME(0, VHOST_NET_SET_BACKEND, (f.fd = tap[g - self->g], &f));
	SAME(0, VHOST_NET_SET_BACKEND, (f.fd = tap[g - self->g], &f));
	/* While a backend is attached the ring cannot be resized. */
	SAME(EBUSY, VHOST_SET_VRING_NUM, (&(struct vhost_vring_state){ .index = VG_TX, .num = 128 }));
	f.fd = -1;
	SAME(0, VHOST_NET_SET_BACKEND, &f);
	SAME(0, VHOST_SET_VRING_NUM, (&(struct vhost_vring_state){ .index = VG_TX, .num = 128 }));
	SAME(0, VHOST_SET_VRING_NUM, (&(struct vhost_vring_state){ .index = VG_TX, .num = 256 }));
	/* Attached at RESET_OWNER: the reset detaches it. */
	SAME(0, VHOST_NET_SET_BACKEND, (f.fd = tap[g - self->g], &f));
	SAME(0, VHOST_RESET_OWNER, NULL);
	/* Attached at close: teardown releases it (checked by kmemleak and the log). */
	for (int i = 0; i < NDEV; i++) {
		self->g[i].mem_used = 0;
		ASSERT_EQ(0, vg_setup(&self->g[i], 1ULL << VIRTIO_F_VERSION_1, 256));
	}
	SAME(0, VHOST_NET_SET_BACKEND, (f.fd = tap[g - self->g], &f));
	close(efd);
	close(udp);
	close(pkt);
	for (int i = 0; i < NDEV; i++)
		close(tap[i]);
}

TEST_F(abi, full_setup_and_reset)
{
	for (int i = 0; i < NDEV; i++) {
		ASSERT_EQ(0, vg_setup(&self->g[i], 1ULL << VIRTIO_F_VERSION_1, 256))
			TH_LOG("%s", devs[i]);
	}
	SAME(0, VHOST_RESET_OWNER, NULL);
	/* After a reset the device is as new: rings are gone, so the setup runs again. */
	for (int i = 0; i < NDEV; i++) {
		struct vg_guest *g = &self->g[i];

		g->mem_used = 0;
		ASSERT_EQ(0, vg_setup(g, 1ULL << VIRTIO_F_VERSION_1, 256)) TH_LOG("%s", devs[i]);
	}
}

TEST_HARNESS_MAIN
