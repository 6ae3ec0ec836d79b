// SPDX-License-Identifier: GPL-2.0
/*
 * vhost-net-zc-info: print what a vhost-net device offers.
 *
 *   vhost-net-zc-info [DEVICE...]      (default: /dev/vhost-net-zc)
 *
 * Opens each device, reads its virtio and backend feature bits through the vhost-net ioctl
 * ABI and prints them by name. A minimal example of a VMM's first contact with the device.
 */
#include <errno.h>
#include <fcntl.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <sys/ioctl.h>
#include <unistd.h>
#include <linux/vhost.h>
#include <linux/virtio_config.h>
#include <linux/virtio_net.h>
#include <linux/virtio_ring.h>

#define ARRAY_SIZE(a) (sizeof(a) / sizeof((a)[0]))

static const struct {
	unsigned int bit;
	const char *name;
} names[] = {
	{ VIRTIO_NET_F_MRG_RXBUF, "MRG_RXBUF" },
	{ VIRTIO_F_NOTIFY_ON_EMPTY, "NOTIFY_ON_EMPTY" },
	{ VIRTIO_F_ANY_LAYOUT, "ANY_LAYOUT" },
	{ VIRTIO_RING_F_INDIRECT_DESC, "RING_INDIRECT_DESC" },
	{ VIRTIO_RING_F_EVENT_IDX, "RING_EVENT_IDX" },
	{ VHOST_F_LOG_ALL, "VHOST_LOG_ALL" },
	{ VHOST_NET_F_VIRTIO_NET_HDR, "VHOST_NET_VIRTIO_NET_HDR" },
	{ VIRTIO_F_VERSION_1, "VERSION_1" },
	{ VIRTIO_F_ACCESS_PLATFORM, "ACCESS_PLATFORM" },
	{ VIRTIO_F_RING_RESET, "RING_RESET" },
	{ VIRTIO_F_IN_ORDER, "IN_ORDER" },
};

static int show(const char *dev)
{
	uint64_t f, bf, known = 0;
	int fd = open(dev, O_RDWR | O_CLOEXEC);

	if (fd < 0) {
		fprintf(stderr, "%s: %s\n", dev, strerror(errno));
		return 1;
	}
	if (ioctl(fd, VHOST_GET_FEATURES, &f) < 0 ||
	    ioctl(fd, VHOST_GET_BACKEND_FEATURES, &bf) < 0) {
		fprintf(stderr, "%s: feature ioctls: %s\n", dev, strerror(errno));
		close(fd);
		return 1;
	}
	printf("%s: features %#018llx, backend features %#llx\n", dev,
	       (unsigned long long)f, (unsigned long long)bf);
	/* Bit 27 has two names: ANY_LAYOUT and, for vhost-net, VIRTIO_NET_HDR. */
	for (unsigned int i = 0; i < ARRAY_SIZE(names); i++) {
		uint64_t b = 1ULL << names[i].bit;

		printf("  %-26s %s\n", names[i].name, (f & b) ? "offered" : "-");
		known |= b;
	}
	if (f & ~known)
		printf("  other bits                 %#llx\n", (unsigned long long)(f & ~known));
	close(fd);
	return 0;
}

int main(int argc, char **argv)
{
	int rc = 0;

	if (argc < 2)
		return show("/dev/vhost-net-zc");
	for (int i = 1; i < argc; i++)
		rc |= show(argv[i]);
	return rc;
}
