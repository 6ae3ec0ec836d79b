// SPDX-License-Identifier: GPL-2.0
/*
 * vhost-net-zc-exec: open a vhost-net device, configure it through vhost-net-zc's UAPI,
 * and run a VMM with it as an inherited file descriptor.
 *
 *   vhost-net-zc-exec [-d DEVICE] [-t TIMEOUT_MS] [-r] FD PROGRAM [ARG...]
 *
 * QEMU takes an open vhost device as `-netdev tap,...,vhost=on,vhostfd=FD` and drives it
 * with the vhost-net ioctls only; the settings vhost-net-zc adds (the deadline of zero-copy
 * TX buffers, reclaim on expiry) are made here, before QEMU owns the device:
 *
 *   vhost-net-zc-exec -t 200 3 qemu-system-x86_64 ... \
 *       -netdev tap,id=n0,ifname=tap0,script=no,downscript=no,vhost=on,vhostfd=3
 *
 * DEVICE is /dev/vhost-net-zc unless given; with -d /dev/vhost-net (stock) neither -t nor
 * -r may be given. A multiqueue NIC takes one device per queue pair: chain the command,
 * each one opening a device on its own descriptor,
 *
 *   vhost-net-zc-exec -t 200 3 vhost-net-zc-exec -t 200 4 qemu-system-x86_64 ... \
 *       -netdev tap,id=n0,ifname=tap0,queues=2,vhost=on,vhostfds=3:4
 */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <unistd.h>

#include <linux/vhost_net_zc.h>

static int usage(const char *argv0)
{
	fprintf(stderr,
		"usage: %s [-d DEVICE] [-t TIMEOUT_MS] [-r] FD PROGRAM [ARG...]\n"
		"  -d DEVICE      the vhost device to open (default /dev/vhost-net-zc)\n"
		"  -t TIMEOUT_MS  VHOST_NET_ZC_SET_TIMEOUT: the zero-copy TX deadline\n"
		"  -r             VHOST_NET_ZC_SET_RECLAIM: reclaim buffers when they expire\n"
		"  FD             the descriptor number PROGRAM finds the device on\n",
		argv0);
	return 2;
}

/* Parses a decimal number in [min, max]; -1 if it is not one. */
static long parse_number(const char *s, long min, long max)
{
	char *end;
	long v;

	errno = 0;
	v = strtol(s, &end, 10);
	if (errno || end == s || *end || v < min || v > max)
		return -1;
	return v;
}

int main(int argc, char **argv)
{
	const char *dev = "/dev/vhost-net-zc";
	long timeout = -1, target;
	int reclaim = 0, opt, fd;
	__u32 arg;

	while ((opt = getopt(argc, argv, "+d:t:r")) != -1) {
		switch (opt) {
		case 'd':
			dev = optarg;
			break;
		case 't':
			timeout = parse_number(optarg, 1, 600000);
			if (timeout < 0) {
				fprintf(stderr, "-t %s: a timeout is 1 to 600000 ms\n", optarg);
				return 2;
			}
			break;
		case 'r':
			reclaim = 1;
			break;
		default:
			return usage(argv[0]);
		}
	}
	if (argc - optind < 2)
		return usage(argv[0]);
	target = parse_number(argv[optind], 3, 1023);
	if (target < 0) {
		fprintf(stderr, "FD %s: a descriptor number from 3 to 1023\n", argv[optind]);
		return 2;
	}

	fd = open(dev, O_RDWR);
	if (fd < 0) {
		fprintf(stderr, "%s: %s\n", dev, strerror(errno));
		return 1;
	}
	if (timeout > 0) {
		arg = timeout;
		if (ioctl(fd, VHOST_NET_ZC_SET_TIMEOUT, &arg)) {
			fprintf(stderr, "%s: VHOST_NET_ZC_SET_TIMEOUT %ld: %s\n", dev, timeout,
				strerror(errno));
			return 1;
		}
	}
	if (reclaim) {
		arg = 1;
		if (ioctl(fd, VHOST_NET_ZC_SET_RECLAIM, &arg)) {
			fprintf(stderr, "%s: VHOST_NET_ZC_SET_RECLAIM: %s\n", dev, strerror(errno));
			return 1;
		}
	}
	if (fd != target) {
		if (dup2(fd, target) < 0) {
			fprintf(stderr, "dup2 to %ld: %s\n", target, strerror(errno));
			return 1;
		}
		close(fd);
	}
	execvp(argv[optind + 1], &argv[optind + 1]);
	fprintf(stderr, "%s: %s\n", argv[optind + 1], strerror(errno));
	return 127;
}
