// SPDX-License-Identifier: GPL-2.0
/*
 * vhost-net-zc-stall: a VMM's device reset while its zero-copy TX buffers are stuck.
 *
 *   vhost-net-zc-stall DEVICE TAP [FRAMES]
 *
 * Plays a guest on DEVICE (/dev/vhost-net-zc or /dev/vhost-net) with TAP as its TX backend,
 * sends FRAMES (default 8) 1000-byte frames to 02:00:00:00:00:d0 (the caller arranges for
 * them to be held, e.g. in a plugged qdisc), waits past the deadline (on vhost-net-zc,
 * whose timeout it sets to 500 ms), then detaches the backend as a VMM does on a reset
 * (VHOST_NET_SET_BACKEND with fd -1) and reports how long that took, how many heads came
 * back, and whether the guest still reads its bytes. Prints "RESULT <device> <ms> <heads>
 * <intact>" last.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <time.h>
#include <unistd.h>
#include <linux/virtio_config.h>

#include <linux/vhost_net_zc.h>
#include "../selftests/vhost_guest.h"

#define LEN		1000
#define MAX_FRAMES	32
#define TIMEOUT_MS	500

static long now_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static int die(const char *what, int err)
{
	fprintf(stderr, "vhost-net-zc-stall: %s: %s\n", what, strerror(err));
	return 1;
}

int main(int argc, char **argv)
{
	static const uint8_t dst[6] = { 0x02, 0, 0, 0, 0, 0xd0 };
	static const uint8_t src[6] = { 0x02, 0, 0, 0, 0, 0x02 };
	static uint8_t orig[MAX_FRAMES][LEN];
	uint8_t *frame[MAX_FRAMES];
	struct vhost_net_zc_stats st;
	int frames = 8, tap, r, heads = 0, intact = 1;
	uint32_t ms = TIMEOUT_MS, id, len;
	bool zc;
	struct vg_guest g;
	long t0, took;

	if (argc < 3)
		return fprintf(stderr, "usage: %s DEVICE TAP [FRAMES]\n", argv[0]), 2;
	if (argc > 3)
		frames = atoi(argv[3]);
	if (frames < 1 || frames > MAX_FRAMES)
		return die("FRAMES", EINVAL);
	r = vg_open(&g, argv[1], 1 << 20);
	if (r)
		return die(argv[1], -r);
	tap = vg_tap_attach(argv[2]);
	if (tap < 0)
		return die(argv[2], -tap);
	r = vg_setup(&g, 1ULL << VIRTIO_F_VERSION_1, 256);
	if (r)
		return die("setup", -r);
	zc = ioctl(g.fd, VHOST_NET_ZC_SET_TIMEOUT, &ms) == 0;
	r = vg_set_backend(&g, VG_TX, tap);
	if (r)
		return die("VHOST_NET_SET_BACKEND", -r);
	vg_alloc(&g, 4096, 4096);
	for (int i = 0; i < frames; i++) {
		uint8_t *hdr = vg_alloc(&g, sizeof(struct virtio_net_hdr_mrg_rxbuf), 8);
		void *bufs[2];
		uint32_t lens[2] = { sizeof(struct virtio_net_hdr_mrg_rxbuf), LEN };

		frame[i] = vg_alloc(&g, LEN, 64);
		memset(hdr, 0, lens[0]);
		memcpy(frame[i], dst, 6);
		memcpy(frame[i] + 6, src, 6);
		frame[i][12] = 0x88;
		frame[i][13] = 0xb5;
		for (int j = 14; j < LEN; j++)
			frame[i][j] = (uint8_t)(j * 7 + i);
		memcpy(orig[i], frame[i], LEN);
		bufs[0] = hdr;
		bufs[1] = frame[i];
		if (vg_post(&g, VG_TX, bufs, lens, 2, false) < 0)
			return die("post", ENOSPC);
	}
	printf("%s: %d frames of %d bytes queued, held in the plugged qdisc\n", argv[1], frames,
	       LEN);
	usleep((TIMEOUT_MS + 300) * 1000);
	if (zc && ioctl(g.fd, VHOST_NET_ZC_GET_STATS, &st) == 0)
		printf("%s: after %d ms: %llu sent zero-copy, %llu in flight, %llu expired\n",
		       argv[1], TIMEOUT_MS + 300, st.sent_zerocopy, st.in_flight,
		       st.in_flight_expired);
	printf("%s: VHOST_NET_SET_BACKEND fd -1 (the VMM resets the device)...\n", argv[1]);
	fflush(stdout);
	t0 = now_ms();
	r = vg_set_backend(&g, VG_TX, -1);
	took = now_ms() - t0;
	if (r)
		return die("VHOST_NET_SET_BACKEND -1", -r);
	while (vg_reap(&g, VG_TX, &id, &len))
		heads++;
	for (int i = 0; i < frames; i++)
		intact &= memcmp(frame[i], orig[i], LEN) == 0;
	printf("%s: returned after %ld ms; %d of %d heads in the used ring; guest bytes %s\n",
	       argv[1], took, heads, frames, intact ? "intact" : "CHANGED");
	if (zc && ioctl(g.fd, VHOST_NET_ZC_GET_STATS, &st) == 0)
		printf("%s: %llu buffers offlined (%llu pages), %llu pages still held by skbs\n",
		       argv[1], st.offlined, st.offlined_pages, st.held_pages);
	printf("RESULT %s %ld %d %d\n", argv[1], took, heads, intact);
	vg_close(&g);
	close(tap);
	return 0;
}
