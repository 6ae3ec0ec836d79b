// SPDX-License-Identifier: GPL-2.0
/*
 * Deadlines and offlining (DESIGN S3-S7): zero-copy TX buffers stuck in a plugged qdisc,
 * and every way a VMM resets the device while they are: VHOST_NET_SET_BACKEND to -1,
 * VHOST_RESET_OWNER, close, kill -9 of the VMM, and the project's VM reset ioctl. Each
 * returns within the timeout plus a bound, returns every head exactly once, leaves the
 * guest's memory as the mode says (preserve: the same bytes, on pages the skb no longer
 * shares; discard: zeros), and the packets leave byte-exact when the qdisc is released,
 * whatever the guest wrote meanwhile. The same stall on stock vhost-net with
 * experimental_zcopytx=1 blocks, which the comparison test shows.
 *
 * The counters come from the project's own ioctl (VHOST_NET_ZC_GET_STATS).
 */
#define _GNU_SOURCE
#include <fcntl.h>
#include <signal.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/wait.h>
#include <linux/virtio_config.h>

#include "../include/uapi/linux/vhost_net_zc.h"
#include "zc_env.h"

#define TIMEOUT_MS	500
/* What a reset may take beyond the deadline: generous, for the emulated VM. */
#define BOUND_MS	700
#define PAGE		4096

static int get_stats(struct vg_guest *g, struct vhost_net_zc_stats *s)
{
	return ioctl(g->fd, VHOST_NET_ZC_GET_STATS, s) ? -errno : 0;
}

static long stat_of(struct vg_guest *g, size_t offset)
{
	struct vhost_net_zc_stats s;

	if (get_stats(g, &s))
		return -1;
	if (offset == offsetof(struct vhost_net_zc_stats, timeout_ms))
		return s.timeout_ms;
	return (long)*(uint64_t *)((char *)&s + offset);
}

#define STAT(g, field) stat_of(g, offsetof(struct vhost_net_zc_stats, field))

static int set_u32(struct vg_guest *g, unsigned long cmd, uint32_t v)
{
	return ioctl(g->fd, cmd, &v) ? -errno : 0;
}

/* Waits up to @ms for counter @offset to reach @want; returns the last value read. */
static long wait_stat(struct vg_guest *g, size_t offset, long want, int ms)
{
	long v = stat_of(g, offset);

	for (long end = now_ms() + ms; v != want && now_ms() < end; usleep(20 * 1000))
		v = stat_of(g, offset);
	return v;
}

#define WAIT_STAT(g, field, want, ms) \
	wait_stat(g, offsetof(struct vhost_net_zc_stats, field), want, ms)

/* The frames of a test: their heads, where they are in guest memory, and what they were. */
struct frames {
	int n;
	int head[8];
	uint8_t *at[8];
	uint8_t orig[8][ZC_LEN];
};

/*
 * Sends @n frames to the plugged port. They start on a page of their own, so offlining
 * them never touches the rings, which a real guest would not share with packet buffers
 * either.
 */
static void send_held(struct __test_metadata *_metadata, struct vg_guest *g, struct frames *f,
		      int n, unsigned int seed)
{
	/* -1 on stock vhost-net, which has no counters: give its worker time instead. */
	long base = STAT(g, in_flight);

	ASSERT_NE(NULL, vg_alloc(g, PAGE, PAGE));
	f->n = n;
	for (int i = 0; i < n; i++) {
		f->head[i] = send_frame(g, mac_held, ZC_LEN, seed + i, &f->at[i]);
		ASSERT_LE(0, f->head[i]);
		memcpy(f->orig[i], f->at[i], ZC_LEN);
	}
	/* Sent by the worker (not just queued), zero-copy. */
	if (base >= 0) {
		ASSERT_EQ(base + n, WAIT_STAT(g, in_flight, base + n, 2000));
	} else {
		usleep(300 * 1000);
	}
}

/* Every head of @f is in the used ring within @ms, exactly once, and nothing else. */
static void expect_all_heads(struct __test_metadata *_metadata, struct vg_guest *g,
			     const struct frames *f, int ms)
{
	uint32_t ids[16];
	int n = reap_all(g, ids, f->n, ms);

	n += reap_all(g, ids + n, 16 - n, 100);
	ASSERT_EQ(f->n, n) TH_LOG("%d heads in the used ring, %d expected", n, f->n);
	for (int i = 0; i < f->n; i++) {
		int seen = 0;

		for (int j = 0; j < n; j++)
			seen += ids[j] == (uint32_t)f->head[i];
		EXPECT_EQ(1, seen) TH_LOG("head %d used %d times", f->head[i], seen);
	}
}

/* The guest still reads what it queued. */
static void expect_preserved(struct __test_metadata *_metadata, const struct frames *f)
{
	for (int i = 0; i < f->n; i++) {
		EXPECT_EQ(0, memcmp(f->at[i], f->orig[i], ZC_LEN))
			TH_LOG("frame %d changed in guest memory", i);
	}
}

/*
 * The guest writes over its buffers, then the qdisc is released: the packets leave with
 * the bytes queued before, the skbs are freed (held pages back to 0) and no head comes
 * back a second time.
 */
static void scribble_release_check(struct __test_metadata *_metadata, struct zc_env *e,
				   const struct frames *f)
{
	uint32_t id;

	for (int i = 0; i < f->n; i++)
		memset(f->at[i] + 14, 0xee, ZC_LEN - 14);
	plug(false);
	for (int i = 0; i < f->n; i++)
		expect_frame(_metadata, e->cap_held, f->orig[i], ZC_LEN);
	EXPECT_EQ(0, WAIT_STAT(&e->g, held_pages, 0, 3000));
	EXPECT_EQ(0, WAIT_STAT(&e->g, in_flight, 0, 3000));
	EXPECT_EQ(0, reap_all(&e->g, &id, 1, 200)) TH_LOG("head %u came back twice", id);
}

FIXTURE(off) {
	struct zc_env e;
};

FIXTURE_SETUP(off)
{
	env_setup(_metadata, &self->e, 1ULL << VIRTIO_F_VERSION_1);
	ASSERT_EQ(0, set_u32(&self->e.g, VHOST_NET_ZC_SET_TIMEOUT, TIMEOUT_MS));
}

FIXTURE_TEARDOWN(off)
{
	env_teardown(_metadata, &self->e);
}

/* The project's ioctls check their arguments. No fixture: no buffers are needed. */
TEST(uapi_arguments)
{
	struct vhost_net_zc_stats s;
	struct vg_guest g;
	uint32_t v = 0;

	ASSERT_EQ(0, vg_open(&g, "/dev/vhost-net-zc", 1 << 16));
	EXPECT_EQ(0, ioctl(g.fd, VHOST_NET_ZC_GET_TIMEOUT, &v));
	EXPECT_LT(0U, v);
	EXPECT_EQ(-EINVAL, set_u32(&g, VHOST_NET_ZC_SET_TIMEOUT, 0));
	EXPECT_EQ(-EINVAL, set_u32(&g, VHOST_NET_ZC_SET_TIMEOUT, 600001));
	EXPECT_EQ(0, set_u32(&g, VHOST_NET_ZC_SET_TIMEOUT, 250));
	EXPECT_EQ(0, ioctl(g.fd, VHOST_NET_ZC_GET_TIMEOUT, &v));
	EXPECT_EQ(250U, v);
	EXPECT_EQ(-EINVAL, set_u32(&g, VHOST_NET_ZC_SET_RECLAIM, 2));
	EXPECT_EQ(0, set_u32(&g, VHOST_NET_ZC_SET_RECLAIM, 1));
	EXPECT_EQ(0, get_stats(&g, &s));
	EXPECT_EQ(250U, s.timeout_ms);
	EXPECT_EQ(1U, s.reclaim);
	EXPECT_EQ(0ULL, s.in_flight);
	/* The VM reset acts on guest memory: the owner's only. */
	EXPECT_EQ(-EPERM, set_u32(&g, VHOST_NET_ZC_VM_RESET, 0));
	EXPECT_EQ(0, vg_set_owner(&g));
	EXPECT_EQ(-EINVAL, set_u32(&g, VHOST_NET_ZC_VM_RESET, 1));
	EXPECT_EQ(0, set_u32(&g, VHOST_NET_ZC_VM_RESET, 0));
	/* Bad pointers. */
	EXPECT_EQ(-1, ioctl(g.fd, VHOST_NET_ZC_GET_STATS, (void *)8));
	EXPECT_EQ(EFAULT, errno);
	EXPECT_EQ(-1, ioctl(g.fd, VHOST_NET_ZC_SET_TIMEOUT, (void *)8));
	EXPECT_EQ(EFAULT, errno);
	vg_close(&g);
}

/*
 * S4/S7, preserve: SET_BACKEND -1 with expired buffers returns at once, with their heads
 * used; the guest reads its bytes; its later writes do not reach the packets.
 */
TEST_F_TIMEOUT(off, set_backend_preserves, 120)
{
	struct frames f;
	long t0, waited;

	send_held(_metadata, &self->e.g, &f, 4, 40);
	EXPECT_EQ(4, WAIT_STAT(&self->e.g, in_flight_expired, 4, TIMEOUT_MS + 3000));
	t0 = now_ms();
	ASSERT_EQ(0, vg_set_backend(&self->e.g, VG_TX, -1));
	waited = now_ms() - t0;
	TH_LOG("SET_BACKEND -1 with 4 expired buffers took %ld ms", waited);
	EXPECT_GT(TIMEOUT_MS + BOUND_MS, waited);
	expect_all_heads(_metadata, &self->e.g, &f, 100);
	expect_preserved(_metadata, &f);
	EXPECT_EQ(4, STAT(&self->e.g, offlined));
	EXPECT_LE(4, STAT(&self->e.g, held_pages));
	EXPECT_EQ(STAT(&self->e.g, offlined_pages), STAT(&self->e.g, held_pages));
	scribble_release_check(_metadata, &self->e, &f);
	EXPECT_EQ(4, STAT(&self->e.g, completed));
}

/*
 * The same device with a device IOTLB (VIRTIO_F_ACCESS_PLATFORM, as under QEMU with a
 * vIOMMU): ring and buffer addresses are IOVAs, translated page by page by a server thread
 * that answers the device's misses.
 */
FIXTURE(off_iotlb) {
	struct zc_env e;
};

FIXTURE_SETUP(off_iotlb)
{
	env_setup(_metadata, &self->e,
		  (1ULL << VIRTIO_F_VERSION_1) | (1ULL << VIRTIO_F_ACCESS_PLATFORM));
	ASSERT_EQ(0, vg_iotlb_serve(&self->e.g, PAGE));
	ASSERT_EQ(0, set_u32(&self->e.g, VHOST_NET_ZC_SET_TIMEOUT, TIMEOUT_MS));
}

FIXTURE_TEARDOWN(off_iotlb)
{
	EXPECT_LT(0, vg_iotlb_stop(&self->e.g))
		TH_LOG("no miss served, or a miss outside guest memory (-1)");
	env_teardown(_metadata, &self->e);
}

/*
 * Buffers sent zero-copy through the IOTLB, whose translations the VMM then invalidates
 * while the skbs are still held: the reset still offlines them (by the addresses the
 * device found at send time, not by a new translation) and returns their heads in bounded
 * time; the guest reads its bytes, and its later writes do not reach the packets.
 */
TEST_F_TIMEOUT(off_iotlb, invalidated_then_reset_preserves, 120)
{
	struct vg_guest *g = &self->e.g;
	struct frames f;
	long t0, waited;

	send_held(_metadata, g, &f, 4, 60);
	for (int i = 0; i < f.n; i++)
		ASSERT_EQ(0, vg_iotlb_msg(g, VHOST_IOTLB_INVALIDATE, vg_gpa(g, f.at[i]), ZC_LEN,
					  NULL, 0));
	EXPECT_EQ(4, WAIT_STAT(g, in_flight_expired, 4, TIMEOUT_MS + 3000));
	t0 = now_ms();
	ASSERT_EQ(0, vg_set_backend(g, VG_TX, -1));
	waited = now_ms() - t0;
	TH_LOG("SET_BACKEND -1 with 4 expired, invalidated buffers took %ld ms", waited);
	EXPECT_GT(TIMEOUT_MS + BOUND_MS, waited);
	expect_all_heads(_metadata, g, &f, 100);
	expect_preserved(_metadata, &f);
	EXPECT_EQ(4, STAT(g, offlined));
	scribble_release_check(_metadata, &self->e, &f);
	EXPECT_EQ(4, STAT(g, completed));
}

/*
 * QEMU's system_reset with a vIOMMU: the vIOMMU's reset takes every mapping back, the TX
 * ring's too, before vhost is stopped. The reset cannot write the heads then (the VMM
 * that would answer the miss is the caller), but it must still offline the buffers: the
 * guest reuses their memory next. Its writes must not reach the held packets.
 */
TEST_F_TIMEOUT(off_iotlb, ring_invalidated_then_reset_preserves, 120)
{
	struct vg_guest *g = &self->e.g;
	struct frames f;
	long t0, waited;

	send_held(_metadata, g, &f, 4, 90);
	EXPECT_EQ(4, WAIT_STAT(g, in_flight_expired, 4, TIMEOUT_MS + 3000));
	ASSERT_EQ(0, vg_iotlb_msg(g, VHOST_IOTLB_INVALIDATE, VG_IOVA_BASE, g->mem_size, NULL, 0));
	t0 = now_ms();
	ASSERT_EQ(0, vg_set_backend(g, VG_TX, -1));
	waited = now_ms() - t0;
	TH_LOG("SET_BACKEND -1 with the ring untranslated took %ld ms", waited);
	EXPECT_GT(TIMEOUT_MS + BOUND_MS, waited);
	EXPECT_EQ(4, STAT(g, offlined)) TH_LOG("buffers left in guest memory the guest reuses");
	expect_preserved(_metadata, &f);
	scribble_release_check(_metadata, &self->e, &f);
}

/*
 * A VM reset (discard mode) during a migration (VHOST_F_LOG_ALL), with a device IOTLB: the
 * pages it zeroed changed without a descriptor saying so and must reach the dirty log,
 * which the vhost core writes by the VMM's address under an IOTLB, not the guest's (as
 * safe.vm_reset_logs_dirty checks without one); a page nobody wrote is not logged.
 */
TEST_F_TIMEOUT(off_iotlb, vm_reset_logs_zeroed, 120)
{
	const uint64_t features = (1ULL << VIRTIO_F_VERSION_1) |
				  (1ULL << VIRTIO_F_ACCESS_PLATFORM);
	struct vg_guest *g = &self->e.g;
	struct vg_vq *vq = &g->vq[VG_TX];
	const size_t map_len = ((VG_GPA_BASE + g->mem_size) / PAGE / 8 + PAGE - 1) & ~(PAGE - 1);
	uint8_t *bitmap, *untouched;
	struct frames f;
	uint64_t base;

	bitmap = mmap(NULL, map_len, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	ASSERT_NE(MAP_FAILED, bitmap);
	base = (uint64_t)(uintptr_t)bitmap;
	ASSERT_EQ(0, ioctl(g->fd, VHOST_SET_LOG_BASE, &base));
	ASSERT_EQ(0, vg_set_features(g, features | (1ULL << VHOST_F_LOG_ALL)));
	/* Features with the IOTLB give the device a new, empty one: map the used ring again. */
	ASSERT_EQ(0, vg_iotlb_map(g, vq->used,
				  sizeof(*vq->used) + sizeof(struct vring_used_elem) * vq->num));
	send_held(_metadata, g, &f, 4, 80);
	untouched = vg_alloc(g, PAGE, PAGE);
	ASSERT_NE(NULL, untouched);
	ASSERT_EQ(0, set_u32(g, VHOST_NET_ZC_VM_RESET, 0));
	expect_all_heads(_metadata, g, &f, 100);
	EXPECT_EQ(4, STAT(g, offlined));
	for (int i = 0; i < f.n; i++) {
		EXPECT_EQ(0, f.at[i][100]) TH_LOG("frame %d not zeroed: not discarded", i);
		EXPECT_TRUE(vg_logged(bitmap, vg_phys(g, f.at[i])))
			TH_LOG("the zeroed page of frame %d is not in the dirty log", i);
	}
	EXPECT_FALSE(vg_logged(bitmap, vg_phys(g, untouched))) TH_LOG("spurious log bit");
	plug(false);
	for (int i = 0; i < f.n; i++)
		expect_frame(_metadata, self->e.cap_held, f.orig[i], ZC_LEN);
	munmap(bitmap, map_len);
}

/*
 * Reads /proc/@pid/fdinfo/@fd: the value of its line "vnzc-@name:\t..." into @value (up
 * to @size bytes), and how many vnzc- lines it has; -1 if it cannot be read.
 */
static int fdinfo_line(pid_t pid, int fd, const char *name, char *value, size_t size)
{
	char path[64], line[256], key[64];
	int lines = 0;
	FILE *f;

	snprintf(path, sizeof(path), "/proc/%d/fdinfo/%d", (int)pid, fd);
	snprintf(key, sizeof(key), "vnzc-%s:\t", name);
	f = fopen(path, "r");
	if (!f)
		return -1;
	value[0] = 0;
	while (fgets(line, sizeof(line), f)) {
		if (strncmp(line, "vnzc-", 5))
			continue;
		lines++;
		if (!strncmp(line, key, strlen(key))) {
			snprintf(value, size, "%s", line + strlen(key));
			value[strcspn(value, "\n")] = 0;
		}
	}
	fclose(f);
	return lines;
}

static long fdinfo_counter(pid_t pid, int fd, const char *name)
{
	char v[64];

	if (fdinfo_line(pid, fd, name, v, sizeof(v)) < 0 || !v[0])
		return -1;
	return strtol(v, NULL, 10);
}

/*
 * The VMM's /proc/<pid>/fdinfo/<fd> of the device shows its name (its debugfs directory)
 * and the counters GET_STATS gives, read by the VMM itself and by another process.
 */
TEST_F_TIMEOUT(off, fdinfo_counters, 120)
{
	struct vg_guest *g = &self->e.g;
	struct vhost_net_zc_stats s;
	char name[64], path[160];
	struct frames f;
	pid_t child;
	int status;

	send_held(_metadata, g, &f, 3, 60);
	ASSERT_EQ(0, get_stats(g, &s));
	/* Every counter, and the device line. */
	ASSERT_EQ(20, fdinfo_line(getpid(), g->fd, "device", name, sizeof(name)));
	snprintf(path, sizeof(path), "/sys/kernel/debug/vhost-net-zc/%s/stats", name);
	EXPECT_EQ(0, access(path, R_OK)) TH_LOG("vnzc-device: %s, no %s", name, path);
	EXPECT_EQ((long)s.sent_zerocopy, fdinfo_counter(getpid(), g->fd, "sent_zerocopy"));
	EXPECT_EQ(3, fdinfo_counter(getpid(), g->fd, "in_flight"));
	EXPECT_EQ((long)s.sent_copy, fdinfo_counter(getpid(), g->fd, "sent_copy"));
	EXPECT_LE(0, fdinfo_counter(getpid(), g->fd, "sent_batched"));
	EXPECT_EQ(TIMEOUT_MS, fdinfo_counter(getpid(), g->fd, "timeout_ms"));
	EXPECT_EQ(0, fdinfo_counter(getpid(), g->fd, "offlined"));
	/* An administrator's tool reads it by the VMM's PID. */
	child = fork();
	ASSERT_LE(0, child);
	if (child == 0)
		_exit(fdinfo_counter(getppid(), g->fd, "in_flight") == 3 ? 0 : 1);
	ASSERT_EQ(child, waitpid(child, &status, 0));
	EXPECT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0);
	/* After the reset, what it did. */
	ASSERT_EQ(0, vg_set_backend(g, VG_TX, -1));
	expect_all_heads(_metadata, g, &f, 100);
	EXPECT_EQ(STAT(g, offlined), fdinfo_counter(getpid(), g->fd, "offlined"));
	EXPECT_EQ(3, fdinfo_counter(getpid(), g->fd, "offlined"));
}

/* A reset waits for buffers not yet expired, until their deadline, then offlines them. */
TEST_F_TIMEOUT(off, set_backend_waits_until_deadline, 120)
{
	struct frames f;
	long sent, waited;

	sent = now_ms();
	send_held(_metadata, &self->e.g, &f, 2, 50);
	ASSERT_EQ(0, vg_set_backend(&self->e.g, VG_TX, -1));
	waited = now_ms() - sent;
	TH_LOG("SET_BACKEND -1 right after the send returned %ld ms after it", waited);
	EXPECT_LE(TIMEOUT_MS - 50, waited);
	EXPECT_GT(TIMEOUT_MS + BOUND_MS, waited);
	expect_all_heads(_metadata, &self->e.g, &f, 100);
	expect_preserved(_metadata, &f);
	EXPECT_EQ(2, STAT(&self->e.g, offlined));
	scribble_release_check(_metadata, &self->e, &f);
}

/* S5: RESET_OWNER with expired buffers: prompt, heads used before the rings go. */
TEST_F_TIMEOUT(off, reset_owner_preserves, 120)
{
	struct frames f;
	long t0, waited;

	send_held(_metadata, &self->e.g, &f, 3, 60);
	EXPECT_EQ(3, WAIT_STAT(&self->e.g, in_flight_expired, 3, TIMEOUT_MS + 3000));
	t0 = now_ms();
	ASSERT_EQ(0, ioctl(self->e.g.fd, VHOST_RESET_OWNER));
	waited = now_ms() - t0;
	TH_LOG("RESET_OWNER with 3 expired buffers took %ld ms", waited);
	EXPECT_GT(BOUND_MS, waited);
	expect_all_heads(_metadata, &self->e.g, &f, 100);
	expect_preserved(_metadata, &f);
	EXPECT_EQ(3, STAT(&self->e.g, offlined));
	scribble_release_check(_metadata, &self->e, &f);
}

/* S5: close with expired buffers: prompt, heads used, memory preserved. */
TEST_F_TIMEOUT(off, close_preserves, 120)
{
	struct vg_guest *g = &self->e.g;
	struct frames f;
	long t0, waited;
	uint32_t id;
	int n;

	send_held(_metadata, g, &f, 2, 70);
	EXPECT_EQ(2, WAIT_STAT(g, in_flight_expired, 2, TIMEOUT_MS + 3000));
	t0 = now_ms();
	close(g->fd);
	g->fd = -1;
	waited = now_ms() - t0;
	TH_LOG("close with 2 expired buffers took %ld ms", waited);
	EXPECT_GT(BOUND_MS, waited);
	/* The used ring is guest memory, still mapped here. */
	n = 0;
	while (vg_reap(g, VG_TX, &id, &(uint32_t){0}))
		n += id == (uint32_t)f.head[0] || id == (uint32_t)f.head[1];
	EXPECT_EQ(2, n);
	expect_preserved(_metadata, &f);
	for (int i = 0; i < f.n; i++)
		memset(f.at[i] + 14, 0xee, ZC_LEN - 14);
	plug(false);
	for (int i = 0; i < f.n; i++)
		expect_frame(_metadata, self->e.cap_held, f.orig[i], ZC_LEN);
}

/*
 * S5: the VMM is killed while its buffers are stuck: it is gone at once (no wait: its
 * address space, the guest, went with it), never in D state.
 */
TEST_F_TIMEOUT(off, kill_vmm, 120)
{
	int ready[2], status = 0;
	long t0, gone = -1;
	bool d_state = false;
	pid_t pid;
	char c;

	/* The child is the only VMM: the fixture's device goes. */
	vg_close(&self->e.g);
	ASSERT_EQ(0, pipe(ready));
	pid = fork();
	ASSERT_LE(0, pid);
	if (pid == 0) {
		struct vg_guest g;
		struct frames f;

		if (vg_open(&g, "/dev/vhost-net-zc", 1 << 20) ||
		    vg_setup(&g, 1ULL << VIRTIO_F_VERSION_1, RING) ||
		    set_u32(&g, VHOST_NET_ZC_SET_TIMEOUT, 60000) ||
		    vg_set_backend(&g, VG_TX, self->e.tap_fd))
			_exit(1);
		send_held(_metadata, &g, &f, 3, 80);
		if (write(ready[1], "r", 1) != 1)
			_exit(1);
		pause();
		_exit(0);
	}
	close(ready[1]);
	ASSERT_EQ(1, read(ready[0], &c, 1));
	/* The buffers are in flight (60 s deadline: killing must not wait for it). */
	usleep(300 * 1000);
	t0 = now_ms();
	kill(pid, SIGKILL);
	while (now_ms() - t0 < 5000) {
		if (waitpid(pid, &status, WNOHANG) == pid) {
			gone = now_ms() - t0;
			break;
		}
		if (task_state(pid) == 'D' && now_ms() - t0 > BOUND_MS)
			d_state = true;
		usleep(10 * 1000);
	}
	TH_LOG("the killed VMM was reaped %ld ms after SIGKILL", gone);
	ASSERT_LE(0, gone) TH_LOG("the killed VMM is still there after 5 s");
	EXPECT_GT(BOUND_MS, gone);
	EXPECT_FALSE(d_state);
	EXPECT_TRUE(WIFSIGNALED(status));
	close(ready[0]);
}

/*
 * Discard (VM reset): every buffer in flight, expired or not, is returned at once; the
 * guest reads zeros where they were; the packets still leave byte-exact.
 */
TEST_F_TIMEOUT(off, vm_reset_discards, 120)
{
	struct vg_guest *g = &self->e.g;
	struct frames f;
	long t0, waited;

	send_held(_metadata, g, &f, 3, 90);
	t0 = now_ms();
	ASSERT_EQ(0, set_u32(g, VHOST_NET_ZC_VM_RESET, 0));
	waited = now_ms() - t0;
	TH_LOG("VM reset with 3 buffers in flight took %ld ms", waited);
	EXPECT_GT(BOUND_MS, waited);
	expect_all_heads(_metadata, g, &f, 100);
	for (int i = 0; i < f.n; i++) {
		static const uint8_t zeros[ZC_LEN];

		EXPECT_EQ(0, memcmp(f.at[i], zeros, ZC_LEN)) TH_LOG("frame %d not zeroed", i);
	}
	EXPECT_EQ(3, STAT(g, offlined));
	plug(false);
	for (int i = 0; i < f.n; i++)
		expect_frame(_metadata, self->e.cap_held, f.orig[i], ZC_LEN);
	EXPECT_EQ(0, WAIT_STAT(g, held_pages, 0, 3000));
}

/*
 * Reclaim on expiry: expired buffers come back without any reset, within the timeout plus
 * a bound, preserved; the TX queue is not stalled longer than that.
 */
TEST_F_TIMEOUT(off, reclaim_on_expiry, 120)
{
	struct vg_guest *g = &self->e.g;
	struct frames f;
	long sent, back;

	ASSERT_EQ(0, set_u32(g, VHOST_NET_ZC_SET_RECLAIM, 1));
	sent = now_ms();
	send_held(_metadata, g, &f, 3, 100);
	expect_all_heads(_metadata, g, &f, TIMEOUT_MS + 3000);
	back = now_ms() - sent;
	TH_LOG("expired buffers reclaimed %ld ms after the send", back);
	EXPECT_LE(TIMEOUT_MS - 50, back);
	EXPECT_GT(TIMEOUT_MS + BOUND_MS, back);
	expect_preserved(_metadata, &f);
	EXPECT_EQ(3, STAT(g, offlined));
	scribble_release_check(_metadata, &self->e, &f);
}

/*
 * Races: resets against completions against expiry, with a 1 ms deadline. Each round
 * sends frames to both ports (the free port completes at once, the plugged one expires),
 * and resets the backend after a varying delay. Every head must come back exactly once.
 */
TEST_F_TIMEOUT(off, reset_races, 240)
{
	enum { ROUNDS = 40, PER = 6 };
	struct vg_guest *g = &self->e.g;
	struct vhost_net_zc_stats s;
	int seen[RING];
	long total = 0;

	/*
	 * No packet sockets on the ports: a tap on the way out copies the frags, and stock's
	 * heuristic, which this device keeps, then stops zero copy for a while.
	 */
	close(self->e.cap_held);
	close(self->e.cap_free);
	self->e.cap_held = self->e.cap_free = -1;
	ASSERT_EQ(0, set_u32(g, VHOST_NET_ZC_SET_TIMEOUT, 1));
	for (int r = 0; r < ROUNDS; r++) {
		int heads[PER], n = 0;
		uint32_t ids[2 * PER];

		memset(seen, 0, sizeof(seen));
		for (int i = 0; i < PER; i++) {
			heads[i] = send_frame(g, i & 1 ? mac_free : mac_held, ZC_LEN, r * PER + i,
					      NULL);
			ASSERT_LE(0, heads[i]);
		}
		/* Every frame taken by the worker: what a reset leaves in the avail ring is not
		 * returned, rightly, and would make this test lose heads.
		 */
		total += PER;
		for (long end = now_ms() + 2000; now_ms() < end; usleep(1000)) {
			if (get_stats(g, &s) == 0 && (long)(s.sent_zerocopy + s.sent_copy) >= total)
				break;
		}
		usleep((r % 5) * 500);
		ASSERT_EQ(0, vg_set_backend(g, VG_TX, -1));
		n = reap_all(g, ids, 2 * PER, 300);
		for (int i = 0; i < n; i++)
			seen[ids[i] % RING]++;
		for (int i = 0; i < PER; i++) {
			ASSERT_EQ(1, seen[heads[i]]) TH_LOG("round %d: head %d used %d times", r,
							     heads[i], seen[heads[i]]);
		}
		ASSERT_EQ(PER, n);
		ASSERT_EQ(0, vg_set_backend(g, VG_TX, self->e.tap_fd));
		/* Guest memory is a bump allocator: start over each round. */
		g->mem_used = 2 * PAGE * 4;
	}
	plug(false);
	EXPECT_EQ(0, WAIT_STAT(g, in_flight, 0, 5000));
	EXPECT_EQ(0, WAIT_STAT(g, held_pages, 0, 1000));
	ASSERT_EQ(0, get_stats(g, &s));
	TH_LOG("%llu sent zero-copy, %llu offlined, %llu completed", s.sent_zerocopy, s.offlined,
	       s.completed);
	EXPECT_EQ(s.sent_zerocopy, s.completed);
	/* The races were raced: most frames went zero-copy, the held ones were offlined. */
	EXPECT_LE(ROUNDS * PER / 2, (long)s.sent_zerocopy);
	EXPECT_LE(ROUNDS, (long)s.offlined);
}

/*
 * Guest memory shared with a file (memfd, as QEMU's share=on): the page cache holds the
 * skb's very pages, so preserve mode has no fresh page to give. A reset refuses (counted,
 * logged) and the buffers stay in flight, returned when the stack frees them; a VM reset
 * punches a hole instead: the guest reads zeros, the packets leave intact.
 */
FIXTURE(shm) {
	struct zc_env e;
};

FIXTURE_SETUP(shm)
{
	self->e.mem_flags = VG_MEM_SHARED;
	env_setup(_metadata, &self->e, 1ULL << VIRTIO_F_VERSION_1);
	ASSERT_EQ(0, set_u32(&self->e.g, VHOST_NET_ZC_SET_TIMEOUT, TIMEOUT_MS));
}

FIXTURE_TEARDOWN(shm)
{
	env_teardown(_metadata, &self->e);
}

TEST_F_TIMEOUT(shm, preserve_refused, 120)
{
	struct vg_guest *g = &self->e.g;
	struct frames f;
	long t0, waited;
	uint32_t id;

	send_held(_metadata, g, &f, 2, 120);
	EXPECT_EQ(2, WAIT_STAT(g, in_flight_expired, 2, TIMEOUT_MS + 3000));
	t0 = now_ms();
	ASSERT_EQ(0, vg_set_backend(g, VG_TX, -1));
	waited = now_ms() - t0;
	EXPECT_GT(BOUND_MS, waited);
	EXPECT_EQ(2, STAT(g, offline_refused));
	EXPECT_EQ(0, STAT(g, offlined));
	EXPECT_EQ(0, reap_all(g, &id, 1, 200)) TH_LOG("head %u returned, not offlined", id);
	/* The errno as a user looks it up: positive, with its name's meaning. */
	EXPECT_EQ(0, system("dmesg | grep -q 'could not be offlined in preserve mode (errno 95: '"));
	plug(false);
	expect_all_heads(_metadata, g, &f, 3000);
	for (int i = 0; i < f.n; i++)
		expect_frame(_metadata, self->e.cap_held, f.orig[i], ZC_LEN);
}

TEST_F_TIMEOUT(shm, vm_reset_punches_hole, 120)
{
	struct vg_guest *g = &self->e.g;
	static const uint8_t zeros[ZC_LEN];
	struct frames f;

	send_held(_metadata, g, &f, 2, 130);
	ASSERT_EQ(0, set_u32(g, VHOST_NET_ZC_VM_RESET, 0));
	expect_all_heads(_metadata, g, &f, 100);
	for (int i = 0; i < f.n; i++) {
		EXPECT_EQ(0, memcmp(f.at[i], zeros, ZC_LEN)) TH_LOG("frame %d not zeroed", i);
	}
	EXPECT_EQ(2, STAT(g, offlined));
	plug(false);
	for (int i = 0; i < f.n; i++)
		expect_frame(_metadata, self->e.cap_held, f.orig[i], ZC_LEN);
	EXPECT_EQ(0, WAIT_STAT(g, held_pages, 0, 3000));
}

/*
 * Huge pages: a transparent huge page is split by the zap and only the buffer's base pages
 * are replaced; a hugetlb page is offlined whole (and copied whole in preserve mode). The
 * guest reads its bytes, the packets leave intact.
 */
FIXTURE(huge) {
	struct zc_env e;
};

FIXTURE_VARIANT(huge) {
	int mem_flags;
	long min_pages;		/* base pages offlined for the 3 buffers, at least */
	long skipped;		/* base pages skipped (offlined with another buffer), at least */
};

FIXTURE_VARIANT_ADD(huge, thp) {
	.mem_flags = VG_MEM_THP,
	.min_pages = 3,
	.skipped = 0,
};

FIXTURE_VARIANT_ADD(huge, hugetlb) {
	.mem_flags = VG_MEM_HUGETLB,
	/*
	 * The three buffers are in one 2 MiB page: the first offline copies it whole, the
	 * other two find the copy mapped, not their skb's page, and skip.
	 */
	.min_pages = 512,
	.skipped = 2,
};

/* Kibibytes of AnonHugePages in this process. */
static long anon_huge_kb(void)
{
	char line[256];
	long kb = -1;
	FILE *f = fopen("/proc/self/smaps_rollup", "r");

	if (!f)
		return -1;
	while (fgets(line, sizeof(line), f))
		if (sscanf(line, "AnonHugePages: %ld kB", &kb) == 1)
			break;
	fclose(f);
	return kb;
}

FIXTURE_SETUP(huge)
{
	if (variant->mem_flags & VG_MEM_HUGETLB) {
		/* The guest's 2 pages, a fresh one per offlined page, the skbs' old ones. */
		if (system("echo 8 > /proc/sys/vm/nr_hugepages"))
			SKIP(return, "cannot reserve hugetlb pages");
	}
	self->e.mem_flags = variant->mem_flags;
	env_setup(_metadata, &self->e, 1ULL << VIRTIO_F_VERSION_1);
	ASSERT_EQ(0, set_u32(&self->e.g, VHOST_NET_ZC_SET_TIMEOUT, TIMEOUT_MS));
}

FIXTURE_TEARDOWN(huge)
{
	env_teardown(_metadata, &self->e);
}

TEST_F_TIMEOUT(huge, set_backend_preserves, 120)
{
	struct vg_guest *g = &self->e.g;
	struct frames f;
	long t0, waited;

	if (variant->mem_flags & VG_MEM_THP) {
		long kb = anon_huge_kb();

		TH_LOG("AnonHugePages before: %ld kB", kb);
		/* Else this case would only repeat the base-page one. */
		ASSERT_LE(2048, kb) TH_LOG("the guest memory is not in transparent huge pages");
	}
	send_held(_metadata, g, &f, 3, 140);
	EXPECT_EQ(3, WAIT_STAT(g, in_flight_expired, 3, TIMEOUT_MS + 3000));
	t0 = now_ms();
	ASSERT_EQ(0, vg_set_backend(g, VG_TX, -1));
	waited = now_ms() - t0;
	TH_LOG("SET_BACKEND -1 with 3 expired buffers took %ld ms, %ld pages offlined", waited,
	       STAT(g, offlined_pages));
	EXPECT_GT(BOUND_MS, waited);
	expect_all_heads(_metadata, g, &f, 100);
	expect_preserved(_metadata, &f);
	EXPECT_EQ(3, STAT(g, offlined));
	EXPECT_LE(variant->min_pages, STAT(g, offlined_pages));
	EXPECT_LE(variant->skipped, STAT(g, offline_skipped_pages));
	scribble_release_check(_metadata, &self->e, &f);
}

/*
 * S6, the comparison: the same stall on stock vhost-net with experimental_zcopytx=1.
 * SET_BACKEND -1 blocks in D state until the qdisc is released; a watchdog child sees
 * the D state after TIMEOUT_MS + BOUND_MS, then releases the qdisc.
 */
FIXTURE(stock) {
	struct zc_env e;
};

FIXTURE_SETUP(stock)
{
	char v = 0;
	FILE *fp = fopen("/sys/module/vhost_net/parameters/experimental_zcopytx", "r");

	if (fp) {
		v = fgetc(fp);
		fclose(fp);
	}
	if (v != '1')
		SKIP(return, "stock vhost_net is not loaded with experimental_zcopytx=1");
	env_setup_dev(_metadata, &self->e, "/dev/vhost-net", 1ULL << VIRTIO_F_VERSION_1);
}

FIXTURE_TEARDOWN(stock)
{
	if (self->e.tap[0])
		env_teardown(_metadata, &self->e);
}

TEST_F_TIMEOUT(stock, set_backend_blocks, 120)
{
	int seen[2];
	long t0, waited;
	pid_t parent = getpid(), pid;
	char state = '?';
	struct frames f;

	send_held(_metadata, &self->e.g, &f, 2, 110);
	ASSERT_EQ(0, pipe(seen));
	pid = fork();
	ASSERT_LE(0, pid);
	if (pid == 0) {
		char path[64], stat[256] = "", s = '?';
		FILE *fp;

		usleep((TIMEOUT_MS + BOUND_MS) * 1000);
		snprintf(path, sizeof(path), "/proc/%d/stat", parent);
		fp = fopen(path, "r");
		if (fp && fgets(stat, sizeof(stat), fp) && strrchr(stat, ')'))
			s = strrchr(stat, ')')[2];
		if (fp)
			fclose(fp);
		if (write(seen[1], &s, 1) != 1)
			_exit(1);
		plug(false);
		_exit(0);
	}
	t0 = now_ms();
	EXPECT_EQ(0, vg_set_backend(&self->e.g, VG_TX, -1));
	waited = now_ms() - t0;
	EXPECT_EQ(1, read(seen[0], &state, 1));
	waitpid(pid, NULL, 0);
	TH_LOG("stock vhost-net: SET_BACKEND -1 blocked %ld ms (state '%c' after %d ms), until the qdisc was released",
	       waited, state, TIMEOUT_MS + BOUND_MS);
	EXPECT_LE(TIMEOUT_MS + BOUND_MS, waited);
	EXPECT_EQ('D', state);
	close(seen[0]);
	close(seen[1]);
}

TEST_HARNESS_MAIN
