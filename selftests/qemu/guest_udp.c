// SPDX-License-Identifier: GPL-2.0
/*
 * guest_udp: the nested guest's sender for the stalled-queue scenario of vnzc_qemu.py.
 * Built static and put in the guest's initramfs.
 *
 *   guest_udp DST_IP PORT WARMUP COUNT SIZE
 *
 * Sends WARMUP datagrams of 16 bytes, then COUNT datagrams of SIZE bytes whose payload
 * the host checks byte for byte: a 4-byte big-endian index, then byte i (from the start of
 * the payload) = (index * 37 + i) & 0xff. The short ones make the vhost device's zero-copy
 * heuristic start a new window (it starts one every 1024 packets) so that the long ones go
 * zero-copy whatever came before.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

static unsigned char buf[65536];

int main(int argc, char **argv)
{
	struct sockaddr_in dst = { .sin_family = AF_INET };
	unsigned long warmup, count, size, n, i;
	int fd;

	if (argc != 6 || inet_pton(AF_INET, argv[1], &dst.sin_addr) != 1) {
		fprintf(stderr, "usage: %s DST_IP PORT WARMUP COUNT SIZE\n", argv[0]);
		return 2;
	}
	dst.sin_port = htons(strtoul(argv[2], NULL, 10));
	warmup = strtoul(argv[3], NULL, 10);
	count = strtoul(argv[4], NULL, 10);
	size = strtoul(argv[5], NULL, 10);
	if (size < 4 || size > sizeof(buf)) {
		fprintf(stderr, "SIZE: 4 to %zu\n", sizeof(buf));
		return 2;
	}
	fd = socket(AF_INET, SOCK_DGRAM, 0);
	if (fd < 0) {
		perror("socket");
		return 1;
	}
	memset(buf, 0xee, 16);
	for (n = 0; n < warmup; n++) {
		if (sendto(fd, buf, 16, 0, (struct sockaddr *)&dst, sizeof(dst)) < 0) {
			perror("sendto (warm-up)");
			return 1;
		}
	}
	for (n = 0; n < count; n++) {
		for (i = 0; i < size; i++)
			buf[i] = (n * 37 + i) & 0xff;
		buf[0] = n >> 24;
		buf[1] = n >> 16;
		buf[2] = n >> 8;
		buf[3] = n;
		if (sendto(fd, buf, size, 0, (struct sockaddr *)&dst, sizeof(dst)) < 0) {
			perror("sendto");
			return 1;
		}
	}
	printf("VNZC_STALL_SENT %lu %lu\n", count, size);
	return 0;
}
