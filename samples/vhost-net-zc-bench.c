// SPDX-License-Identifier: GPL-2.0
/*
 * vhost-net-zc-bench: the workloads of `make bench` (samples/bench_vm.sh), on stock
 * /dev/vhost-net or /dev/vhost-net-zc alike. A userspace guest (selftests/vhost_guest.c)
 * drives the device; each run prints one line starting with "BENCH".
 *
 *   vhost-net-zc-bench tx DEVICE TAP SIZE SECONDS
 *	TX as fast as the device takes it: frames of SIZE bytes (Ethernet, no vnet header) to
 *	02:00:00:00:00:b0, which the caller's bridge forwards to a dummy device (freed at
 *	once, never delivered to a local socket). Up to 1514 bytes a UDP datagram; above, one
 *	TCP segment of SIZE bytes marked for GSO (TSO4, MSS 1448), which the dummy takes whole.
 *   vhost-net-zc-bench rx DEVICE TAP SIZE SECONDS
 *	RX: a thread writes frames of SIZE bytes into TAP's queue with a packet socket as fast
 *	as it can; the guest keeps its RX ring full and counts what it receives.
 *   vhost-net-zc-bench reset DEVICE TAP FRAMES TIMEOUT_MS ROUNDS
 *	The stalled-queue reset: per round, FRAMES datagrams of 1000 bytes to
 *	02:00:00:00:00:d0 (held in a plugged qdisc by the caller), then at once - the queue
 *	idle, no buffer past its deadline yet - VHOST_NET_SET_BACKEND with fd -1, timed; the
 *	plug is released between rounds with the command in $VNZC_RELEASE. On vhost-net-zc
 *	the timeout is set with VHOST_NET_ZC_SET_TIMEOUT. Stock vhost-net blocks until the
 *	plug is released: a watchdog thread runs $VNZC_RELEASE after $VNZC_WATCHDOG_MS.
 *
 * CPU time per packet is the vhost worker thread's (the "vhost-<pid>" thread of this
 * process), from the kernel's accounting in /proc/self/task/<tid>/stat.
 */
#include <arpa/inet.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <linux/if_packet.h>
#include <linux/if_tun.h>
#include <linux/virtio_config.h>
#include <net/if.h>
#include <poll.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include <linux/vhost_net_zc.h>
#include "../selftests/vhost_guest.h"

#define HDR		sizeof(struct virtio_net_hdr_mrg_rxbuf)
#define MAX_FRAME	65535
#define MSS		1448
#define STALL_LEN	1000

static const uint8_t bench_mac[6] = { 0x02, 0, 0, 0, 0, 0xb0 };
static const uint8_t stall_mac[6] = { 0x02, 0, 0, 0, 0, 0xd0 };
static const uint8_t guest_mac[6] = { 0x02, 0, 0, 0, 0, 0x01 };

static double now_s(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return ts.tv_sec + ts.tv_nsec / 1e9;
}

static int fail(const char *what, int err)
{
	fprintf(stderr, "vhost-net-zc-bench: %s: %s\n", what, strerror(err));
	return 1;
}

/*
 * The CPU time of this process's vhost worker so far, in nanoseconds: the thread the vhost
 * core names "vhost-<tgid>" (a vhost_task of this process), and that one only. Matching a
 * prefix counted this program's own threads too, whose name "vhost-net-zc-bench" is cut to
 * "vhost-net-zc-be". The time is the scheduler's (schedstat's first field, in ns), not
 * utime + stime in clock ticks.
 */
static double worker_cpu_ns(void)
{
	char path[300], want[32], comm[64];
	unsigned long long run_ns;
	double total = 0;
	struct dirent *e;
	DIR *d = opendir("/proc/self/task");

	if (!d)
		return -1;
	snprintf(want, sizeof(want), "vhost-%d\n", (int)getpid());
	while ((e = readdir(d))) {
		FILE *f;
		int ok;

		if (e->d_name[0] == '.')
			continue;
		snprintf(path, sizeof(path), "/proc/self/task/%s/comm", e->d_name);
		f = fopen(path, "r");
		if (!f)
			continue;
		ok = fgets(comm, sizeof(comm), f) && !strcmp(comm, want);
		fclose(f);
		if (!ok)
			continue;
		snprintf(path, sizeof(path), "/proc/self/task/%s/schedstat", e->d_name);
		f = fopen(path, "r");
		if (!f)
			continue;
		if (fscanf(f, "%llu", &run_ns) == 1)
			total += (double)run_ns;
		fclose(f);
	}
	closedir(d);
	return total;
}

static uint16_t ip_checksum(const uint8_t *p, size_t len)
{
	uint32_t sum = 0;

	for (size_t i = 0; i + 1 < len; i += 2)
		sum += (p[i] << 8) | p[i + 1];
	while (sum >> 16)
		sum = (sum & 0xffff) + (sum >> 16);
	return ~sum;
}

/*
 * Writes a vnet header and a frame of @size bytes to @dst at @buf: a UDP datagram, or a
 * TCP segment for GSO if it is longer than an MTU of 1500 allows.
 */
static void make_frame(uint8_t *buf, size_t size, const uint8_t *dst, uint32_t seq)
{
	struct virtio_net_hdr_mrg_rxbuf *h = (void *)buf;
	uint8_t *f = buf + HDR, *ip = f + 14, *l4 = ip + 20;
	bool gso = size > 1514;

	memset(buf, 0, HDR + size);
	memcpy(f, dst, 6);
	memcpy(f + 6, guest_mac, 6);
	f[12] = 0x08;
	ip[0] = 0x45;
	ip[2] = (size - 14) >> 8;
	ip[3] = (size - 14) & 0xff;
	ip[8] = 64;
	ip[9] = gso ? 6 : 17;
	memcpy(ip + 12, (uint8_t[]){ 10, 78, 0, 2 }, 4);
	memcpy(ip + 16, (uint8_t[]){ 10, 78, 0, 99 }, 4);
	*(uint16_t *)(ip + 10) = htons(ip_checksum(ip, 20));
	l4[0] = 0x30;
	l4[1] = 0x39;
	l4[2] = 0x00;
	l4[3] = 0x09;
	if (gso) {
		*(uint32_t *)(l4 + 4) = htonl(seq);
		l4[12] = 5 << 4;
		l4[13] = 0x18;			/* PSH, ACK */
		l4[14] = 0xff;
		l4[15] = 0xff;
		h->hdr.flags = VIRTIO_NET_HDR_F_NEEDS_CSUM;
		h->hdr.csum_start = 34;
		h->hdr.csum_offset = 16;
		h->hdr.gso_type = VIRTIO_NET_HDR_GSO_TCPV4;
		h->hdr.gso_size = MSS;
		h->hdr.hdr_len = 54;
		for (size_t i = 54; i < size; i++)
			f[i] = i;
	} else {
		l4[4] = (size - 34) >> 8;
		l4[5] = (size - 34) & 0xff;
		for (size_t i = 42; i < size; i++)
			f[i] = i;
	}
}

struct bench {
	struct vg_guest g;
	int tap;
	unsigned int num;
	size_t slot;		/* bytes per buffer */
	uint8_t *bufs;
	uint16_t *free_ids;
	unsigned int nfree;
};

/* Opens DEVICE with TAP as the backend of both queues, a ring of @num. */
static int bench_open(struct bench *b, const char *dev, const char *tap, unsigned int num,
		      size_t slot)
{
	unsigned int off = TUN_F_CSUM | TUN_F_TSO4;
	int r;

	memset(b, 0, sizeof(*b));
	b->num = num;
	b->slot = (slot + 4095) & ~(size_t)4095;
	r = vg_open(&b->g, dev, b->slot * num + (1 << 20));
	if (r)
		return fail(dev, -r);
	b->tap = vg_tap_attach(tap);
	if (b->tap < 0)
		return fail(tap, -b->tap);
	if (ioctl(b->tap, TUNSETOFFLOAD, off) < 0)
		return fail("TUNSETOFFLOAD", errno);
	r = vg_setup(&b->g, (1ULL << VIRTIO_F_VERSION_1) | (1ULL << VIRTIO_NET_F_MRG_RXBUF), num);
	if (r)
		return fail("device setup", -r);
	b->bufs = vg_alloc(&b->g, b->slot * num, 4096);
	b->free_ids = calloc(num, sizeof(*b->free_ids));
	if (!b->bufs || !b->free_ids)
		return fail("guest memory", ENOMEM);
	for (unsigned int i = 0; i < num; i++)
		b->free_ids[b->nfree++] = i;
	return 0;
}

static uint8_t *bench_buf(struct bench *b, unsigned int id)
{
	return b->bufs + (size_t)id * b->slot;
}

/* Publishes up to @count free buffers on queue @idx with length @len, then kicks once. */
static int bench_post(struct bench *b, unsigned int idx, unsigned int count, uint32_t len,
		      bool writable)
{
	struct vg_vq *vq = &b->g.vq[idx];
	uint64_t one = 1;

	if (!b->nfree || !count)
		return 0;
	while (b->nfree && count--) {
		uint16_t id = b->free_ids[--b->nfree];

		vq->desc[id].addr = vg_gpa(&b->g, bench_buf(b, id));
		vq->desc[id].len = len;
		vq->desc[id].flags = writable ? VRING_DESC_F_WRITE : 0;
		vq->desc[id].next = 0;
		vq->avail->ring[vq->avail_idx++ % vq->num] = id;
	}
	atomic_thread_fence(memory_order_release);
	vq->avail->idx = vq->avail_idx;
	atomic_thread_fence(memory_order_seq_cst);
	if (write(vq->kick_fd, &one, sizeof(one)) != sizeof(one))
		return -errno;
	return 0;
}

/* Reaps used entries of queue @idx into the free list; returns how many, bytes in *bytes. */
static unsigned int bench_reap(struct bench *b, unsigned int idx, uint64_t *bytes)
{
	uint32_t id, len;
	unsigned int n = 0;

	while (vg_reap(&b->g, idx, &id, &len) == 1) {
		if (id < b->num)
			b->free_ids[b->nfree++] = id;
		if (bytes && len > HDR)
			*bytes += len - HDR;
		n++;
	}
	return n;
}

static void report(const char *mode, const char *dev, size_t size, uint64_t packets,
		   uint64_t bytes, double secs, double cpu_ns, const struct bench *b)
{
	struct vhost_net_zc_stats st;
	bool zc = ioctl(b->g.fd, VHOST_NET_ZC_GET_STATS, &st) == 0;

	printf("BENCH mode=%s dev=%s size=%zu packets=%llu seconds=%.3f pps=%.0f gbit=%.4f "
	       "worker_ns_per_packet=%.0f zerocopy=%lld copy=%lld\n",
	       mode, dev, size, (unsigned long long)packets, secs, packets / secs,
	       bytes * 8 / secs / 1e9, packets ? cpu_ns / packets : 0,
	       zc ? (long long)st.sent_zerocopy : -1, zc ? (long long)st.sent_copy : -1);
}

static int run_tx(const char *dev, const char *tap, size_t size, double secs)
{
	uint64_t packets = 0, bytes = 0;
	struct bench b;
	double t0, cpu0, end;
	int r;

	if (bench_open(&b, dev, tap, 256, HDR + size))
		return 1;
	for (unsigned int i = 0; i < b.num; i++)
		make_frame(bench_buf(&b, i), size, bench_mac, i);
	r = vg_set_backend(&b.g, VG_TX, b.tap);
	if (r)
		return fail("VHOST_NET_SET_BACKEND", -r);
	cpu0 = worker_cpu_ns();
	t0 = now_s();
	end = t0 + secs;
	while (now_s() < end) {
		unsigned int n;

		r = bench_post(&b, VG_TX, b.num, HDR + size, false);
		if (r)
			return fail("kick", -r);
		n = bench_reap(&b, VG_TX, NULL);
		if (!n) {
			vg_wait_call(&b.g, VG_TX, 100);
			continue;
		}
		packets += n;
		bytes += (uint64_t)n * size;
	}
	secs = now_s() - t0;
	report("tx", dev, size, packets, bytes, secs, worker_cpu_ns() - cpu0, &b);
	vg_set_backend(&b.g, VG_TX, -1);
	vg_close(&b.g);
	close(b.tap);
	return 0;
}

struct injector {
	const char *tap;
	size_t size;
	atomic_bool stop;
	uint64_t sent, dropped;
	int err;
};

static void *inject(void *arg)
{
	struct injector *in = arg;
	struct sockaddr_ll sll = { .sll_family = AF_PACKET, .sll_protocol = htons(ETH_P_ALL) };
	uint8_t *frame = malloc(HDR + in->size);
	int one = 1, s = socket(AF_PACKET, SOCK_RAW, 0);

	if (s < 0 || !frame) {
		in->err = errno;
		return NULL;
	}
	sll.sll_ifindex = if_nametoindex(in->tap);
	setsockopt(s, SOL_PACKET, PACKET_QDISC_BYPASS, &one, sizeof(one));
	make_frame(frame, in->size, guest_mac, 0);
	if (in->size > 1514) {
		/* One long UDP datagram, not a GSO segment: the tap queues it whole. */
		uint8_t *ip = frame + HDR + 14;

		ip[9] = 17;
		ip[10] = ip[11] = 0;
		*(uint16_t *)(ip + 10) = htons(ip_checksum(ip, 20));
	}
	while (!atomic_load(&in->stop)) {
		if (sendto(s, frame + HDR, in->size, MSG_DONTWAIT, (struct sockaddr *)&sll,
			   sizeof(sll)) < 0) {
			if (errno != ENOBUFS && errno != EAGAIN) {
				in->err = errno;
				break;
			}
			in->dropped++;
			sched_yield();
		} else {
			in->sent++;
		}
	}
	close(s);
	free(frame);
	return NULL;
}

static int set_mtu(const char *name, int mtu)
{
	struct ifreq ifr = { .ifr_mtu = mtu };
	int s = socket(AF_INET, SOCK_DGRAM, 0), r = 0;

	snprintf(ifr.ifr_name, sizeof(ifr.ifr_name), "%s", name);
	if (s < 0 || ioctl(s, SIOCSIFMTU, &ifr) < 0)
		r = errno;
	if (s >= 0)
		close(s);
	return r;
}

static int run_rx(const char *dev, const char *tap, size_t size, double secs)
{
	struct injector in = { .tap = tap, .size = size };
	uint64_t packets = 0, bytes = 0;
	struct bench b;
	double t0, cpu0, end;
	pthread_t th;
	int r;

	if (bench_open(&b, dev, tap, 256, HDR + size))
		return 1;
	r = set_mtu(tap, size > 1514 ? (int)size - 14 : 1500);
	if (r)
		return fail("MTU", r);
	r = vg_link_up(tap);
	if (r)
		return fail(tap, -r);
	bench_post(&b, VG_RX, b.num, HDR + size, true);
	r = vg_set_backend(&b.g, VG_RX, b.tap);
	if (r)
		return fail("VHOST_NET_SET_BACKEND", -r);
	if (pthread_create(&th, NULL, inject, &in))
		return fail("thread", errno);
	cpu0 = worker_cpu_ns();
	t0 = now_s();
	end = t0 + secs;
	while (now_s() < end) {
		unsigned int n = bench_reap(&b, VG_RX, &bytes);

		if (!n) {
			vg_wait_call(&b.g, VG_RX, 100);
			continue;
		}
		packets += n;
		r = bench_post(&b, VG_RX, b.num, HDR + size, true);
		if (r)
			return fail("kick", -r);
	}
	secs = now_s() - t0;
	atomic_store(&in.stop, true);
	pthread_join(th, NULL);
	if (in.err)
		return fail("packet socket", in.err);
	report("rx", dev, size, packets, bytes, secs, worker_cpu_ns() - cpu0, &b);
	printf("# injected %llu, refused by a full queue %llu\n", (unsigned long long)in.sent,
	       (unsigned long long)in.dropped);
	vg_set_backend(&b.g, VG_RX, -1);
	vg_close(&b.g);
	close(b.tap);
	return 0;
}

struct watchdog {
	long ms;
	atomic_bool armed;
	atomic_bool fired;
};

static void *watchdog(void *arg)
{
	struct watchdog *w = arg;

	usleep(w->ms * 1000);
	if (atomic_load(&w->armed)) {
		atomic_store(&w->fired, true);
		if (system(getenv("VNZC_RELEASE")) != 0)
			fprintf(stderr, "vhost-net-zc-bench: the release command failed\n");
	}
	return NULL;
}

static int cmp_double(const void *a, const void *b)
{
	double x = *(const double *)a, y = *(const double *)b;

	return (x > y) - (x < y);
}

static int run_reset(const char *dev, const char *tap, unsigned int frames, uint32_t timeout,
		     unsigned int rounds)
{
	const char *release = getenv("VNZC_RELEASE"), *block = getenv("VNZC_BLOCK");
	long wd_ms = getenv("VNZC_WATCHDOG_MS") ? atol(getenv("VNZC_WATCHDOG_MS")) : 2000;
	double *ms = calloc(rounds, sizeof(*ms));
	unsigned int num = 256, done = 0, blocked = 0;
	struct vhost_net_zc_stats st = { 0 };
	struct bench b;
	bool zc;
	int r;

	if (!release || !block || !ms)
		return fail("VNZC_RELEASE and VNZC_BLOCK (shell commands) are needed", EINVAL);
	while (num / 4 < frames)
		num *= 2;
	if (bench_open(&b, dev, tap, num, HDR + STALL_LEN))
		return 1;
	zc = ioctl(b.g.fd, VHOST_NET_ZC_SET_TIMEOUT, &timeout) == 0;
	for (unsigned int round = 0; round < rounds; round++) {
		struct watchdog w = { .ms = wd_ms, .armed = true };
		unsigned int back = 0;
		pthread_t th;
		double t0;

		if (system(block) != 0)
			return fail("the block command", EIO);
		r = vg_set_backend(&b.g, VG_TX, b.tap);
		if (r)
			return fail("VHOST_NET_SET_BACKEND", -r);
		for (unsigned int i = 0; i < frames; i++)
			make_frame(bench_buf(&b, b.free_ids[b.nfree - 1 - i]), STALL_LEN, stall_mac,
				   i);
		r = bench_post(&b, VG_TX, frames, HDR + STALL_LEN, false);
		if (r)
			return fail("kick", -r);
		/*
		 * Until the device took every frame: vhost-net-zc counts them in flight; stock
		 * vhost-net shows nothing, it gets 300 ms.
		 */
		for (int i = 0; i < 5000; i++) {
			if (!zc && i >= 300)
				break;
			if (zc && ioctl(b.g.fd, VHOST_NET_ZC_GET_STATS, &st) == 0 &&
			    st.in_flight >= frames)
				break;
			usleep(1000);
		}
		if (zc && st.in_flight < frames)
			fprintf(stderr, "round %u: %llu of %u frames in flight\n", round,
				(unsigned long long)st.in_flight, frames);
		if (!zc)
			pthread_create(&th, NULL, watchdog, &w);
		t0 = now_s();
		r = vg_set_backend(&b.g, VG_TX, -1);
		ms[done] = (now_s() - t0) * 1000;
		atomic_store(&w.armed, false);
		if (r)
			return fail("VHOST_NET_SET_BACKEND -1", -r);
		if (!zc) {
			pthread_join(th, NULL);
			blocked += atomic_load(&w.fired);
		}
		back = bench_reap(&b, VG_TX, NULL);
		if (back != frames)
			fprintf(stderr, "round %u: %u of %u heads back\n", round, back, frames);
		done++;
		if (system(release) != 0)
			return fail("the release command", EIO);
		/* Let the released skbs go before the next round. */
		for (int i = 0; zc && i < 5000; i++) {
			if (ioctl(b.g.fd, VHOST_NET_ZC_GET_STATS, &st) == 0 && !st.in_flight &&
			    !st.held_pages)
				break;
			usleep(1000);
		}
		bench_reap(&b, VG_TX, NULL);
		if (b.nfree < frames)
			return fail("buffers never came back", EIO);
	}
	qsort(ms, done, sizeof(*ms), cmp_double);
	printf("BENCH mode=reset dev=%s frames=%u timeout_ms=%u rounds=%u p50_ms=%.2f "
	       "p99_ms=%.2f max_ms=%.2f blocked_by_plug=%u zerocopy_device=%d\n",
	       dev, frames, timeout, done, ms[done / 2], ms[(done * 99) / 100],
	       ms[done - 1], blocked, zc);
	vg_close(&b.g);
	close(b.tap);
	free(ms);
	return 0;
}

int main(int argc, char **argv)
{
	if (argc == 6 && (!strcmp(argv[1], "tx") || !strcmp(argv[1], "rx"))) {
		unsigned long size = strtoul(argv[4], NULL, 10);

		if (size < 60 || size > MAX_FRAME) {
			fprintf(stderr, "SIZE: 60 to %d bytes\n", MAX_FRAME);
			return 2;
		}
	}
	if (argc == 6 && !strcmp(argv[1], "tx"))
		return run_tx(argv[2], argv[3], strtoul(argv[4], NULL, 10), atof(argv[5]));
	if (argc == 6 && !strcmp(argv[1], "rx"))
		return run_rx(argv[2], argv[3], strtoul(argv[4], NULL, 10), atof(argv[5]));
	if (argc == 7 && !strcmp(argv[1], "reset"))
		return run_reset(argv[2], argv[3], strtoul(argv[4], NULL, 10),
				 strtoul(argv[5], NULL, 10), strtoul(argv[6], NULL, 10));
	fprintf(stderr,
		"usage: %s tx|rx DEVICE TAP SIZE SECONDS\n"
		"       %s reset DEVICE TAP FRAMES TIMEOUT_MS ROUNDS\n",
		argv[0], argv[0]);
	return 2;
}
