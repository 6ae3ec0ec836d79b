// SPDX-License-Identifier: GPL-2.0
/*
 * vhost-net-zc-counters: the smallest use of vhost-net-zc's own ioctls.
 *
 *   vhost-net-zc-counters [TIMEOUT_MS]
 *
 * Opens /dev/vhost-net-zc, sets the deadline of its zero-copy TX buffers
 * (VHOST_NET_ZC_SET_TIMEOUT) if TIMEOUT_MS is given, reads it back, and prints the device's
 * counters (VHOST_NET_ZC_GET_STATS). A VMM would do the same on the file descriptor it
 * hands to the guest's virtio-net device.
 */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <unistd.h>

#include <linux/vhost_net_zc.h>

int main(int argc, char **argv)
{
	struct vhost_net_zc_stats s;
	__u32 timeout;
	int fd = open("/dev/vhost-net-zc", O_RDWR | O_CLOEXEC);

	if (fd < 0) {
		perror("/dev/vhost-net-zc");
		return 1;
	}
	if (argc > 1) {
		timeout = strtoul(argv[1], NULL, 0);
		if (ioctl(fd, VHOST_NET_ZC_SET_TIMEOUT, &timeout)) {
			fprintf(stderr, "VHOST_NET_ZC_SET_TIMEOUT %u: %s\n", timeout, strerror(errno));
			return 1;
		}
	}
	if (ioctl(fd, VHOST_NET_ZC_GET_TIMEOUT, &timeout) ||
	    ioctl(fd, VHOST_NET_ZC_GET_STATS, &s)) {
		perror("vhost-net-zc ioctl");
		return 1;
	}
	printf("timeout_ms          %u\n", timeout);
	printf("reclaim             %u\n", s.reclaim);
	printf("sent_zerocopy       %llu\n", s.sent_zerocopy);
	printf("sent_copy           %llu\n", s.sent_copy);
	printf("completed           %llu (copied by the stack: %llu)\n", s.completed,
	       s.completed_copied);
	printf("in_flight           %llu (expired: %llu)\n", s.in_flight, s.in_flight_expired);
	printf("expired             %llu\n", s.expired);
	printf("offlined            %llu (%llu pages, %llu still held by skbs)\n", s.offlined,
	       s.offlined_pages, s.held_pages);
	printf("offline_refused     %llu\n", s.offline_refused);
	printf("abandoned           %llu\n", s.abandoned);
	printf("reset wait, ns      last %llu, max %llu\n", s.last_reset_wait_ns,
	       s.max_reset_wait_ns);
	close(fd);
	return 0;
}
