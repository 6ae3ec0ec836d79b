// SPDX-License-Identifier: GPL-2.0
/*
 * A seeded, reproducible fuzzer of /dev/vhost-net-zc (DESIGN S16, issue 15 part 1).
 *
 * The program plays a VMM that does everything wrong, at random but from a seed: ioctls
 * in any state with valid and invalid arguments (wrong sizes, NULL, unmapped, read-only
 * and kernel pointers, huge indexes, ring sizes 0, 100 and 65536), memory tables of 0 to
 * 70 regions with holes and overlaps, guest memory unmapped or replaced while zero-copy
 * buffers are in flight, TX chains valid (through the bridge of zc_env.h, so that frames
 * for mac_held stay in the plugged qdisc) and malformed, RX buffers, kicks, resets,
 * closes, VM resets, reclaim and plug releases at random moments, from several threads at
 * once and from a forked child that inherited the device.
 *
 * The work is cut into episodes: open a device, run K random operations, close it. The
 * seed of episode i of a case is a hash of (VNZC_FUZZ_SEED, case, i), and an operation's
 * kind and arguments depend only on the seeds (never on what the kernel answered), so
 *   VNZC_FUZZ_SEED=<s> VNZC_FUZZ_EPISODE=<i> ./vnzc_fuzz -t <case>
 * replays exactly the operations of a failing episode. What the kernel's worker does in
 * between (which completions arrived before a reap) is timing; a failure that depends on
 * it may need the replay to be run a few times.
 *
 * The oracle, each check a harness EXPECT naming the seed and episode:
 * - every ioctl returns 0 or an errno of allowed_errno() below;
 * - nothing hangs: a reset (SET_BACKEND, RESET_OWNER, VM_RESET, close) returns within the
 *   largest deadline its buffers can have plus RESET_BOUND_MS, the product's promise; a
 *   watchdog thread reports any operation blocked for longer than HANG_MS;
 * - the used rings never return a head the guest did not make available, or one already
 *   returned (the guest tracks the heads it published, per ring, and reuses descriptors
 *   least recently freed first, so that a head used twice is seen as such);
 * - in "clean" episodes (valid operations only), every TX head comes back once the plug
 *   is released;
 * - at the end of an episode, with the plug released, in_flight and held_pages of the
 *   device drop to 0 (VHOST_NET_ZC_GET_STATS), and at the end of a case the module's
 *   reference count is back where it was (no skb references it any more);
 * - differential case: the same ioctl sequence on stock /dev/vhost-net and on
 *   /dev/vhost-net-zc gives the same errno at every step, except the documented
 *   differences (none today);
 * - device-IOTLB messages written to the file get the same errnos on both devices, and a
 *   read of the file returns a message, nothing (EAGAIN) or EBADFD (no IOTLB).
 * Kernel splats (KASAN, lockdep, UBSAN, hung tasks, Rust panics) and kmemleak reports are
 * judged by the suite from the kernel log afterwards.
 *
 * Parameters (environment): VNZC_FUZZ_SEED (default 0x5eed0f0015, fixed so that make
 * check is reproducible), VNZC_FUZZ_OPS (operations per case, default DEFAULT_OPS),
 * VNZC_FUZZ_SECONDS (run each case that long instead: make fuzz), VNZC_FUZZ_EPISODE (run
 * only that episode of each case).
 */
#define _GNU_SOURCE
#include <execinfo.h>
#include <fcntl.h>
#include <inttypes.h>
#include <pthread.h>
#include <sched.h>
#include <signal.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <sys/eventfd.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <netinet/in.h>
#include <linux/netlink.h>
#include <linux/pkt_sched.h>
#include <linux/rtnetlink.h>
#include <linux/virtio_config.h>

#include "../include/uapi/linux/vhost_net_zc.h"
#include "zc_env.h"

#define PAGE		4096UL
/* Guest memory: ring slots first, then data (frames, indirect tables). */
#define MEM_SIZE	(2UL << 20)
#define SLOT_SIZE	(32UL << 10)	/* one ring of up to MAXNUM entries */
#define NSLOTS		4		/* per virtqueue: a reprogram always moves the ring */
#define RING_AREA	(2 * NSLOTS * SLOT_SIZE)
#define MAXNUM		1024
#define AVAIL_OFF	(16UL << 10)
#define USED_OFF	(20UL << 10)
/* A second region the fuzzer unmaps, replaces and write-protects under the device. */
#define EXTRA_SIZE	(64UL << 10)
#define EXTRA_GPA	(VG_GPA_BASE + MEM_SIZE + (1UL << 20))
#define LOG_SIZE	(64UL << 10)	/* covers the dirty log of every GPA above */
#define KERNEL_PTR	0xffffffff81000000UL
#define MAX_THREADS	4
#define LOG_N		32
/* The product's promise: a reset returns within the deadline plus this. */
#define RESET_BOUND_MS	10000
#define HANG_MS		60000
/* The zero-copy range limit of the module (MAX_RANGES in rust/zerocopy.rs). */
#define ZC_MAX_RANGES	20
#define DEFAULT_SEED	0x5eed0f0015ULL
#define DEFAULT_OPS	30000

/* ---- PRNG: splitmix64, one stream per episode and thread -------------------------- */

struct rng {
	uint64_t s;
};

static uint64_t mix64(uint64_t z)
{
	z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
	z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
	return z ^ (z >> 31);
}

static uint64_t rnd(struct rng *r)
{
	r->s += 0x9e3779b97f4a7c15ULL;
	return mix64(r->s);
}

static uint32_t below(struct rng *r, uint32_t n)
{
	return n ? (uint32_t)(rnd(r) % n) : 0;
}

static bool chance(struct rng *r, unsigned int pct)
{
	return below(r, 100) < pct;
}

static uint32_t pick_u32(struct rng *r, const uint32_t *v, size_t n)
{
	return v[below(r, n)];
}
#define PICK(r, ...) ({ static const uint32_t __v[] = { __VA_ARGS__ };	\
			pick_u32((r), __v, sizeof(__v) / sizeof(__v[0])); })

/* ---- the fuzzer's state ---------------------------------------------------------- */

/* What the guest knows of one virtqueue it laid out. */
struct vq_shadow {
	unsigned int num;		/* ring size of the layout (0: none) */
	int slot;			/* ring slot of the layout */
	struct vring_desc *desc;
	struct vring_avail *avail;
	struct vring_used *used;
	uint16_t avail_idx, last_used;
	/*
	 * Whether the device's ring is this layout: only then do the used entries mean
	 * something. Lost by any successful SET_VRING_NUM/BASE/ADDR with random arguments,
	 * RESET_OWNER, an avail index the guest scribbled; regained by setup_vq().
	 */
	bool coherent;
	uint8_t out[MAXNUM];		/* head published and not used yet */
	unsigned int n_out;
	uint16_t owner[MAXNUM];		/* head of the chain a descriptor is in, or FREE */
	uint16_t fifo[MAXNUM];		/* free descriptors, least recently freed first */
	unsigned int fifo_head, fifo_len;
	int kick, call, err;		/* eventfds */
	unsigned long errors;		/* times the device signalled err */
};
#define FREE_DESC	0xffff

struct dev {
	const char *path;
	bool zc;
	int fd;
	uint8_t *mem;			/* guest memory at VG_GPA_BASE */
	uint8_t *extra;			/* EXTRA_SIZE at EXTRA_GPA */
	int extra_state;		/* 0 mapped rw, 1 read-only, 2 unmapped */
	uint8_t *log;
	/* The case's: */
	int tap_fd;			/* its backend (the bridge's tap for zc cases) */
	int tap2_fd;			/* another tap, down */
	int pkt_fd, udp_fd, efd;	/* a packet socket, and things that are not taps */
	struct vq_shadow vq[VG_NVQS];
	size_t data_cur;
	uint64_t features;
	unsigned int hdr_len;
	uint32_t tmax;			/* the largest deadline a buffer may have, ms */
	uint32_t worker_ids[8];
	int nworkers;
};

struct fuzz_case;

struct oplog {
	pthread_mutex_t lock;
	char e[LOG_N][200];
	unsigned long n;
};

struct episode {
	struct fuzz_case *fc;
	uint64_t seed;
	long index;
	int ndev;
	struct dev dev[2];		/* [0] the device fuzzed; differential: [0] stock, [1] zc */
	bool diff, chaos, clean, forked;
	pthread_mutex_t lock;		/* the guest: rings, memory, shadows */
	struct oplog log;
	atomic_long ops;
	atomic_int failures;
	bool diverged;			/* differential: stop comparing after a first mismatch */
	pid_t child[4];
	int nchild;
	int nthreads;
};

/* One thread's view: its random stream and its argument buffer. */
struct ctx {
	struct episode *ep;
	struct rng r;
	int tid;
	uint8_t *arg;			/* a read-write page followed by a PROT_NONE page */
	bool child;			/* in a forked child: no harness, no plug */
	int child_failures;
};

struct fuzz_case {
	struct __test_metadata *md;
	const char *name;
	unsigned int id;
	uint64_t seed;
	long ops_target, seconds, only_episode;
	struct zc_env *env;		/* NULL: the differential case, no bridge */
	int nl, plug_ifindex, tap_ifindex;
	pthread_mutex_t nl_lock;
	bool plugged;
	uint8_t *argbuf[MAX_THREADS + 1];
	uint8_t *ro;			/* a read-only page */
	/* Files for the devices' arguments, made once: a netdev per episode costs. */
	int tap_diff[2], tap2, pkt, udp, efd;
	atomic_long ops, episodes, failures;
	int printed;			/* failures printed in full, capped */
	/* The watchdog: what each thread is blocked in, since when. */
	atomic_long busy_since[MAX_THREADS + 1];
	const char *busy_what[MAX_THREADS + 1];
	atomic_bool stop;
	pthread_t watchdog;
	/* Differential findings, each signature reported once. */
	char diffs[32][160];
	int ndiffs;
	long mismatches;
	/* What was exercised, for the summary. */
	atomic_long heads_checked, sent_zc, sent_copy, expired, offlined, abandoned, children;
};

/* ---- reporting ------------------------------------------------------------------- */

static void oplog_add(struct oplog *l, const char *fmt, ...)
{
	va_list ap;

	pthread_mutex_lock(&l->lock);
	va_start(ap, fmt);
	vsnprintf(l->e[l->n % LOG_N], sizeof(l->e[0]), fmt, ap);
	va_end(ap);
	l->n++;
	pthread_mutex_unlock(&l->lock);
}

static void oplog_dump(struct oplog *l, FILE *f)
{
	pthread_mutex_lock(&l->lock);
	fprintf(f, "# the last %lu operations:\n", l->n < LOG_N ? l->n : LOG_N);
	for (unsigned long i = l->n > LOG_N ? l->n - LOG_N : 0; i < l->n; i++)
		fprintf(f, "#   %6lu %s\n", i, l->e[i % LOG_N]);
	pthread_mutex_unlock(&l->lock);
}

/*
 * A broken oracle: fails the case through the harness, with the line that replays the
 * episode and, the first time in an episode, the operations that led there.
 */
static void fuzz_fail(struct ctx *c, const char *fmt, ...)
{
	struct episode *ep = c->ep;
	struct fuzz_case *fc = ep->fc;
	char msg[512];
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(msg, sizeof(msg), fmt, ap);
	va_end(ap);
	if (c->child) {
		/* No harness in a forked child: the parent counts its exit status. */
		char line[700];
		int n = snprintf(line, sizeof(line),
				 "# FAIL (forked child): %s [VNZC_FUZZ_SEED=0x%" PRIx64
				 " VNZC_FUZZ_EPISODE=%ld -t %s]\n", msg, fc->seed, ep->index,
				 fc->name);

		if (write(2, line, n) < 0)
			(void)0;
		c->child_failures++;
		return;
	}
	atomic_fetch_add(&ep->failures, 1);
	if (atomic_fetch_add(&fc->failures, 1) >= 20)
		return;		/* enough said; the count is in the summary */
	{
		struct __test_metadata *_metadata = fc->md;

		EXPECT_TRUE(false) TH_LOG("%s [replay: VNZC_FUZZ_SEED=0x%" PRIx64
					  " VNZC_FUZZ_EPISODE=%ld ./vnzc_fuzz -t %s]",
					  msg, fc->seed, ep->index, fc->name);
	}
	if (atomic_load(&ep->failures) == 1)
		oplog_dump(&ep->log, stderr);
}

/*
 * The errnos an ioctl of the vhost-net ABI or of vhost_net_zc.h may return here, and why:
 * EINVAL	bad values (ring size, base, alignment, flags, timeout, reclaim, endian);
 * EFAULT	bad pointers, unreadable rings and logs, memory tables whose ranges wrap;
 * EPERM	not the owner (every command but features and SET_OWNER needs one);
 * EBUSY	SET_OWNER twice, ring changes while a backend is attached, workers in use,
 *		offlining refused because a page may be DMA-pinned;
 * ENOBUFS	a virtqueue index out of range;
 * ENOMEM	allocations (64 regions), a hugetlb pool without a page for the copy;
 * E2BIG	more regions than max_mem_regions;
 * ENOTTY	unknown commands, wrong sizes (another command number), cross-endian off;
 * EOPNOTSUPP	features not offered, memory-table padding, VM_RESET with a refused buffer;
 * EBADF	eventfd arguments that are not open files, and the device fd after a close;
 * ENOTSOCK	backends that are not tap, macvtap or packet sockets;
 * ENODEV	worker ids that do not exist;
 * ENXIO	VHOST_*_WORKER on a device whose owner is gone;
 * ESOCKTNOSUPPORT, EPFNOSUPPORT  packet sockets of the wrong type (vhost-net's checks).
 * Not allowed, among others: EINTR and ERESTARTSYS (no signal is sent to the caller),
 * EAGAIN, EIO, ENOSPC, and any errno of a reset that should not fail.
 */
static bool allowed_errno(int e)
{
	switch (e) {
	case 0: case EINVAL: case EFAULT: case EPERM: case EBUSY: case ENOBUFS: case ENOMEM:
	case E2BIG: case ENOTTY: case EOPNOTSUPP: case EBADF: case ENOTSOCK: case ENODEV:
	case ENXIO: case ESOCKTNOSUPPORT: case EPFNOSUPPORT:
		return true;
	}
	return false;
}

static const char *ename(int e)
{
	const char *s = e ? strerrorname_np(e) : "0";

	return s ? s : "E?";
}

/*
 * A crash of the fuzzer itself (the kernel may have changed its memory under it: that is
 * a finding too): where, what the mappings were there, and the episode to replay.
 */
static struct episode *volatile current_ep;

static void crash_handler(int sig, siginfo_t *si, void *uc)
{
	struct episode *ep = current_ep;
	void *bt[32];
	char line[256];
	FILE *maps;
	int n;

	fprintf(stderr, "# CRASH: signal %d (code %d) at address %p\n", sig, si->si_code,
		si->si_addr);
	if (ep)
		fprintf(stderr, "# in episode %ld of %s: VNZC_FUZZ_SEED=0x%" PRIx64
			" VNZC_FUZZ_EPISODE=%ld ./vnzc_fuzz -t %s\n", ep->index, ep->fc->name,
			ep->fc->seed, ep->index, ep->fc->name);
	n = backtrace(bt, 32);
	backtrace_symbols_fd(bt, n, 2);
	maps = fopen("/proc/self/maps", "r");
	while (maps && fgets(line, sizeof(line), maps)) {
		unsigned long lo, hi;

		if (sscanf(line, "%lx-%lx", &lo, &hi) == 2 &&
		    (strstr(line, "vnzc_fuzz") || strstr(line, "[stack]") ||
		     ((uintptr_t)si->si_addr + (1UL << 20) >= lo &&
		      (uintptr_t)si->si_addr < hi + (1UL << 20))))
			fprintf(stderr, "# map %s", line);
	}
	if (ep)
		oplog_dump(&ep->log, stderr);
	signal(sig, SIG_DFL);
	raise(sig);
}

/* ---- the watchdog ---------------------------------------------------------------- */

static void busy(struct ctx *c, const char *what)
{
	struct fuzz_case *fc = c->ep->fc;

	if (c->child)
		return;
	fc->busy_what[c->tid] = what;
	atomic_store(&fc->busy_since[c->tid], now_ms());
}

static void idle(struct ctx *c)
{
	if (!c->child)
		atomic_store(&c->ep->fc->busy_since[c->tid], 0);
}

/*
 * Once a second: a thread blocked in one call for more than HANG_MS is a hang. It is
 * reported once (the case fails) and the plug is released, so that a call waiting for
 * held skbs returns and the case can end; the suite's hung-task check sees the rest.
 */
static void *watchdog_loop(void *arg)
{
	struct fuzz_case *fc = arg;
	bool reported[MAX_THREADS + 1] = { false };

	while (!atomic_load(&fc->stop)) {
		long now = now_ms();

		for (int t = 0; t <= MAX_THREADS; t++) {
			long since = atomic_load(&fc->busy_since[t]);

			if (!since || now - since <= HANG_MS) {
				reported[t] = false;
				continue;
			}
			if (reported[t])
				continue;
			reported[t] = true;
			atomic_fetch_add(&fc->failures, 1);
			fc->md->exit_code = KSFT_FAIL;
			fprintf(stderr, "# HANG: thread %d blocked in %s for %ld ms [VNZC_FUZZ_SEED=0x%" PRIx64 " -t %s]\n",
				t, fc->busy_what[t] ? fc->busy_what[t] : "?", now - since, fc->seed,
				fc->name);
			if (fc->nl >= 0) {
				pthread_mutex_lock(&fc->nl_lock);
				plug_nl(fc->nl, fc->plug_ifindex, TCQ_PLUG_RELEASE_INDEFINITE);
				pthread_mutex_unlock(&fc->nl_lock);
			}
		}
		poll(NULL, 0, 1000);
	}
	return NULL;
}

/* ---- the plug, over rtnetlink (plug_nl(): tc would cost a second a call) --------- */

static void set_plug(struct ctx *c, bool on)
{
	struct fuzz_case *fc = c->ep->fc;
	int r;

	if (fc->nl < 0 || c->child)
		return;
	pthread_mutex_lock(&fc->nl_lock);
	r = plug_nl(fc->nl, fc->plug_ifindex, on ? TCQ_PLUG_BUFFER : TCQ_PLUG_RELEASE_INDEFINITE);
	fc->plugged = on && !r;
	pthread_mutex_unlock(&fc->nl_lock);
	oplog_add(&c->ep->log, "plug %s -> %d", on ? "block" : "release", r);
	if (r)
		fuzz_fail(c, "plug %s over rtnetlink: %s", on ? "block" : "release", strerror(-r));
}

/* ---- arguments ------------------------------------------------------------------- */

enum { P_OK, P_NULL, P_NONE, P_KERNEL, P_STRADDLE, P_RO, P_KINDS };

/*
 * The user pointer of an ioctl argument of @len bytes with the content @src: usually
 * valid (in the thread's argument page), else, @bad_pct percent of the time, NULL, an
 * unmapped page, a kernel address, a buffer that runs into an unmapped page, or a
 * read-only page.
 */
static void *mkptr(struct ctx *c, const void *src, size_t len, unsigned int bad_pct, int *kindp)
{
	int kind = chance(&c->r, bad_pct) ? 1 + (int)below(&c->r, P_KINDS - 1) : P_OK;
	size_t k;

	if (len > PAGE)
		len = PAGE;
	if (kindp)
		*kindp = kind;
	switch (kind) {
	case P_NULL:
		return NULL;
	case P_NONE:
		return c->arg + PAGE;
	case P_KERNEL:
		return (void *)KERNEL_PTR;
	case P_STRADDLE:
		if (len < 2)
			return c->arg + PAGE;
		k = 1 + below(&c->r, len - 1);
		memcpy(c->arg + PAGE - k, src, k);
		return c->arg + PAGE - k;
	case P_RO:
		return c->ep->fc->ro;
	}
	memcpy(c->arg, src, len);
	return c->arg;
}

/* ---- ioctls ---------------------------------------------------------------------- */

/* The bound of a call that may reset the device: the largest deadline plus a margin. */
static long reset_bound(struct dev *d)
{
	return (long)d->tmax + RESET_BOUND_MS;
}

/* @cmd on device @d: checks the errno and the time it took; returns the errno. */
static int xioctl(struct ctx *c, struct dev *d, const char *what, unsigned long cmd, void *arg)
{
	long t0 = now_ms(), dt;
	int e;

	busy(c, what);
	e = ioctl(d->fd, cmd, arg) < 0 ? errno : 0;
	idle(c);
	dt = now_ms() - t0;
	oplog_add(&c->ep->log, "t%d %s %s -> %s%s", c->tid, d->zc ? "zc" : "stock", what,
		  ename(e), dt > 100 ? " (slow)" : "");
	if (!allowed_errno(e))
		fuzz_fail(c, "%s %s: unexpected errno %s (%s)", d->path, what, ename(e), strerror(e));
	if (dt > reset_bound(d))
		fuzz_fail(c, "%s %s took %ld ms (bound %ld)", d->path, what, dt, reset_bound(d));
	atomic_fetch_add(&c->ep->ops, 1);
	return e;
}

/*
 * Runs one ioctl on every device of the episode, the argument built for each by @build
 * (the content may name the device's own memory or files), and in the differential case
 * compares the errnos.
 */
#define ALL_DEVS(c, what, cmd, build) do {					\
	struct episode *__ep = (c)->ep;						\
	int __e[2] = { 0, 0 };							\
	struct rng __save = (c)->r;						\
	for (int __i = 0; __i < __ep->ndev; __i++) {				\
		struct dev *d = &__ep->dev[__i];				\
		void *arg;							\
		(void)d;							\
		(c)->r = __save;	/* the same draws for every device */	\
		build;								\
		__e[__i] = xioctl((c), d, (what), (cmd), arg);			\
	}									\
	if (__ep->ndev == 2)							\
		diff_check((c), (what), __e[0], __e[1]);			\
	__last_e = __e[__ep->ndev - 1];						\
} while (0)

static void diff_check(struct ctx *c, const char *what, int stock, int zc)
{
	struct episode *ep = c->ep;
	struct fuzz_case *fc = ep->fc;
	char sig[160];

	if (stock == zc || ep->diverged)
		return;
	ep->diverged = true;
	fc->mismatches++;
	snprintf(sig, sizeof(sig), "%s: stock %s, zc %s", what, ename(stock), ename(zc));
	for (int i = 0; i < fc->ndiffs; i++)
		if (!strcmp(fc->diffs[i], sig))
			return;
	if (fc->ndiffs < 32)
		snprintf(fc->diffs[fc->ndiffs++], sizeof(fc->diffs[0]), "%s", sig);
	fuzz_fail(c, "differential: %s", sig);
}

/* ---- guest memory and rings ------------------------------------------------------ */

static uint64_t gpa_of(struct dev *d, const void *hva)
{
	const uint8_t *p = hva;

	if (p >= d->extra && p < d->extra + EXTRA_SIZE)
		return EXTRA_GPA + (uint64_t)(p - d->extra);
	return VG_GPA_BASE + (uint64_t)(p - d->mem);
}

/* Data space, round robin: buffers still in flight may be overwritten (a bad guest). */
static uint8_t *data_alloc(struct dev *d, size_t size, size_t align)
{
	size_t off = (d->data_cur + align - 1) & ~(align - 1);

	if (off + size > MEM_SIZE)
		off = RING_AREA;
	d->data_cur = off + size;
	return d->mem + off;
}

static void vq_forget(struct vq_shadow *q)
{
	memset(q->out, 0, sizeof(q->out));
	q->n_out = 0;
	q->fifo_head = 0;
	q->fifo_len = q->num;
	for (unsigned int i = 0; i < MAXNUM; i++) {
		q->owner[i] = FREE_DESC;
		q->fifo[i] = i;
	}
}

/* The guest lays out ring @vq of @num entries in slot @slot (the device not told yet). */
static void vq_layout(struct dev *d, int vq, int slot, unsigned int num, uint16_t base)
{
	struct vq_shadow *q = &d->vq[vq];
	uint8_t *p = d->mem + (vq * NSLOTS + slot) * SLOT_SIZE;

	memset(p, 0, SLOT_SIZE);
	q->slot = slot;
	q->num = num;
	q->desc = (void *)p;
	q->avail = (void *)(p + AVAIL_OFF);
	q->used = (void *)(p + USED_OFF);
	q->avail_idx = q->last_used = base;
	q->avail->idx = base;
	q->used->idx = base;
	vq_forget(q);
}

static void free_chain(struct vq_shadow *q, uint16_t head)
{
	for (unsigned int i = 0; i < q->num; i++)
		if (q->owner[i] == head) {
			q->owner[i] = FREE_DESC;
			q->fifo[(q->fifo_head + q->fifo_len++) % q->num] = i;
		}
}

/* Reads the used ring of @vq and checks every head. The guest lock is held. */
static int reap_vq(struct ctx *c, struct dev *d, int vq)
{
	struct vq_shadow *q = &d->vq[vq];
	uint16_t used_idx;
	int n = 0;

	if (!q->num)
		return 0;
	used_idx = __atomic_load_n(&q->used->idx, __ATOMIC_ACQUIRE);
	if (!q->coherent || c->ep->chaos) {
		q->last_used = used_idx;
		return 0;
	}
	if ((uint16_t)(used_idx - q->last_used) > q->n_out) {
		char ids[256] = "";
		size_t at = 0;

		for (uint16_t i = q->last_used; i != used_idx && at < sizeof(ids) - 24; i++)
			at += snprintf(ids + at, sizeof(ids) - at, " %u",
				       q->used->ring[i % q->num].id);
		fuzz_fail(c, "%s vq %d: used index moved by %u (from %u) with %u heads outstanding; used ids:%s",
			  d->path, vq, (uint16_t)(used_idx - q->last_used), q->last_used, q->n_out,
			  ids);
		q->coherent = false;
		return 0;
	}
	while (q->last_used != used_idx) {
		struct vring_used_elem *e = &q->used->ring[q->last_used % q->num];
		uint32_t id = e->id;

		q->last_used++;
		n++;
		if (id >= q->num || !q->out[id]) {
			fuzz_fail(c, "%s vq %d: used head %u (len %u) at used index %u: %s",
				  d->path, vq, id, e->len, (uint16_t)(q->last_used - 1),
				  id >= q->num ? "out of range" : "not outstanding (never posted or returned twice)");
			continue;
		}
		q->out[id] = 0;
		q->n_out--;
		free_chain(q, id);
		atomic_fetch_add(&c->ep->fc->heads_checked, 1);
	}
	/* used_event (VIRTIO_RING_F_EVENT_IDX): interrupt us for the next entry. */
	__atomic_store_n(&q->avail->ring[q->num], q->last_used, __ATOMIC_RELEASE);
	return n;
}

static void reap_all_vqs(struct ctx *c, struct dev *d)
{
	uint64_t v;

	pthread_mutex_lock(&c->ep->lock);	/* recursive: callers may hold it */

	for (int i = 0; i < VG_NVQS; i++) {
		reap_vq(c, d, i);
		if (d->vq[i].call >= 0 && read(d->vq[i].call, &v, sizeof(v)) < 0)
			(void)0;	/* nonblocking: nothing signalled */
		if (d->vq[i].err >= 0 && read(d->vq[i].err, &v, sizeof(v)) == sizeof(v))
			d->vq[i].errors += v;
	}
	pthread_mutex_unlock(&c->ep->lock);
}

static void kick(struct dev *d, int vq)
{
	uint64_t one = 1;

	if (d->vq[vq].kick >= 0 && write(d->vq[vq].kick, &one, sizeof(one)) < 0)
		(void)0;	/* an eventfd counter cannot overflow here */
}

static void publish(struct dev *d, int vq, uint16_t head, bool track)
{
	struct vq_shadow *q = &d->vq[vq];

	q->avail->ring[q->avail_idx % q->num] = head;
	/* The ring entry must be visible before the index that publishes it. */
	atomic_thread_fence(memory_order_release);
	q->avail->idx = ++q->avail_idx;
	atomic_thread_fence(memory_order_seq_cst);
	if (track && head < q->num && !q->out[head]) {
		q->out[head] = 1;
		q->n_out++;
	}
}

/* Takes @n free descriptors for a chain whose head is the first; false if too few. */
static bool take_descs(struct vq_shadow *q, unsigned int n, uint16_t *idx)
{
	if (!q->num || n > q->fifo_len)
		return false;
	for (unsigned int i = 0; i < n; i++) {
		idx[i] = q->fifo[q->fifo_head];
		q->fifo_head = (q->fifo_head + 1) % q->num;
		q->fifo_len--;
	}
	for (unsigned int i = 0; i < n; i++)
		q->owner[idx[i]] = idx[0];
	return true;
}

struct seg {
	uint64_t addr;
	uint32_t len;
	uint16_t flags;
};

/*
 * Puts a chain of @n segments on @vq, direct or through an indirect table, publishes and
 * kicks it. @bad: the malformation (0 none) applied while building. Returns the head or -1.
 */
enum {
	B_NONE, B_LOOP, B_NEXT_RANGE, B_IND_MISALIGNED, B_IND_LEN, B_IND_EMPTY, B_IND_RANGE,
	B_IND_NEXT, B_IND_NESTED, B_IND_LOOP, B_IND_HUGE, B_HEAD_RANGE, B_AVAIL_JUMP, B_KINDS
};

static int put_chain(struct ctx *c, struct dev *d, int vq, struct seg *s, unsigned int n,
		     bool indirect, int bad)
{
	struct vq_shadow *q = &d->vq[vq];
	uint16_t idx[MAXNUM];
	bool track = true;

	if (!q->num)
		return -1;
	if (!q->coherent && q->fifo_len < n + 1)
		vq_forget(q);	/* nothing means anything on this ring: start over */
	if (bad == B_HEAD_RANGE) {
		/* A head the ring does not have: the device must reject it, never use it. */
		publish(d, vq, (uint16_t)(q->num + below(&c->r, 1000)), false);
		/*
		 * Its avail slot holds no descriptor the guest tracks: later publishes can
		 * overrun the avail ring, and the device then rightly uses a head twice
		 * (seed 0x1234abcd episode 226 of zc_single_thread). Stop judging the ring.
		 */
		q->coherent = false;
		kick(d, vq);
		return -1;
	}
	if (bad == B_AVAIL_JUMP) {
		q->avail->idx = q->avail_idx + (uint16_t)(q->num + 1 + below(&c->r, 60000));
		q->coherent = false;	/* the device may take garbage heads: ignore them */
		kick(d, vq);
		return -1;
	}
	if (indirect || bad >= B_IND_MISALIGNED) {
		unsigned int tn = bad == B_IND_HUGE ? 1100 : n;
		struct vring_desc *t = (void *)data_alloc(d, tn * 16 + 16, 16);
		uint32_t len = tn * 16;

		if (!take_descs(q, bad == B_IND_NEXT ? 2 : 1, idx))
			return -1;
		if (bad == B_IND_MISALIGNED)
			t = (void *)((uint8_t *)t + 8);
		for (unsigned int i = 0; i < tn; i++) {
			const struct seg *g = &s[i % n];

			t[i].addr = g->addr;
			t[i].len = bad == B_IND_HUGE ? 1 : g->len;
			t[i].flags = g->flags | (i + 1 < tn ? VRING_DESC_F_NEXT : 0);
			t[i].next = i + 1;
		}
		if (bad == B_IND_NESTED)
			t[0].flags |= VRING_DESC_F_INDIRECT;
		if (bad == B_IND_LOOP) {
			t[tn - 1].flags |= VRING_DESC_F_NEXT;
			t[tn - 1].next = below(&c->r, 2) ? 0 : tn + below(&c->r, 100);
		}
		if (bad == B_IND_LEN)
			len = tn * 16 + 1 + below(&c->r, 15);
		if (bad == B_IND_EMPTY)
			len = 0;
		q->desc[idx[0]].addr = bad == B_IND_RANGE ? PICK(&c->r, 0, 0x1000, 0xfffffff0) |
				       (chance(&c->r, 50) ? 0xffffffff00000000ULL : 0) : gpa_of(d, t);
		q->desc[idx[0]].len = len;
		q->desc[idx[0]].flags = VRING_DESC_F_INDIRECT;
		q->desc[idx[0]].next = 0;
		if (bad == B_IND_NEXT) {
			/* An indirect head that goes on to a direct descriptor. */
			q->desc[idx[0]].flags |= VRING_DESC_F_NEXT;
			q->desc[idx[0]].next = idx[1];
			q->desc[idx[1]].addr = s[0].addr;
			q->desc[idx[1]].len = s[0].len;
			q->desc[idx[1]].flags = s[0].flags;
			q->desc[idx[1]].next = 0;
		}
	} else {
		if (n > q->num && bad != B_LOOP) {
			/* Longer than the ring: the device must see the loop or the length. */
			n = q->num;
		}
		if (!take_descs(q, n, idx))
			return -1;
		for (unsigned int i = 0; i < n; i++) {
			q->desc[idx[i]].addr = s[i].addr;
			q->desc[idx[i]].len = s[i].len;
			q->desc[idx[i]].flags = s[i].flags | (i + 1 < n ? VRING_DESC_F_NEXT : 0);
			q->desc[idx[i]].next = i + 1 < n ? idx[i + 1] : 0;
		}
		if (bad == B_LOOP) {
			q->desc[idx[n - 1]].flags |= VRING_DESC_F_NEXT;
			q->desc[idx[n - 1]].next = idx[below(&c->r, n)];
		}
		if (bad == B_NEXT_RANGE) {
			q->desc[idx[n - 1]].flags |= VRING_DESC_F_NEXT;
			q->desc[idx[n - 1]].next = q->num + below(&c->r, 65536 - q->num);
		}
	}
	publish(d, vq, idx[0], track);
	if (!chance(&c->r, 5))
		kick(d, vq);
	return idx[0];
}

/* ---- operations ------------------------------------------------------------------ */

/*
 * A device-IOTLB message written to every device's file (the same bytes, but for the
 * host address of an update, which names each device's own guest memory): either format,
 * any operation, sizes and addresses good and bad, sometimes cut short or garbage. Then a
 * message the device has pending (a miss: SET_BACKEND writes the used ring through the
 * IOTLB) is read without blocking. The writes' errnos are compared.
 */
static void op_iotlb_msg(struct ctx *c)
{
	struct episode *ep = c->ep;
	union {
		struct vhost_msg v1;
		struct vhost_msg_v2 v2;
		uint8_t raw[sizeof(struct vhost_msg) + 8];
	} m;
	struct vhost_iotlb_msg *im = &m.v2.iotlb;
	int e[2] = { 0, 0 }, where = (int)below(&c->r, 4);
	size_t len = sizeof(m.v2);
	char what[128];

	memset(&m, 0, sizeof(m));
	if (chance(&c->r, 10)) {
		for (size_t i = 0; i < sizeof(m.raw); i++)
			m.raw[i] = (uint8_t)rnd(&c->r);
		len = below(&c->r, sizeof(m.raw) + 1);
	} else {
		if (chance(&c->r, 50)) {
			m.v2.type = VHOST_IOTLB_MSG_V2;
			m.v2.asid = chance(&c->r, 90) ? 0 : (uint32_t)rnd(&c->r);
		} else {
			m.v1.type = VHOST_IOTLB_MSG;
			im = &m.v1.iotlb;
			len = sizeof(m.v1);
		}
		im->type = PICK(&c->r, VHOST_IOTLB_UPDATE, VHOST_IOTLB_UPDATE, VHOST_IOTLB_INVALIDATE,
				VHOST_IOTLB_MISS, VHOST_IOTLB_ACCESS_FAIL, VHOST_IOTLB_BATCH_BEGIN,
				VHOST_IOTLB_BATCH_END, 0, 99);
		im->iova = chance(&c->r, 50) ? VG_GPA_BASE : rnd(&c->r);
		im->size = PICK(&c->r, 0, 1, 4096, 1 << 20, 1 << 30, 0xffffffff);
		im->perm = PICK(&c->r, VHOST_ACCESS_RO, VHOST_ACCESS_WO, VHOST_ACCESS_RW, 0, 0xff);
		if (chance(&c->r, 10))
			len = below(&c->r, len);
	}
	snprintf(what, sizeof(what), "write{iotlb %zu bytes, type %u, size %#llx, where %d}", len,
		 im->type, (unsigned long long)im->size, where);
	for (int i = 0; i < ep->ndev; i++) {
		struct dev *d = &ep->dev[i];
		ssize_t n;

		/* Its guest memory, its own address space's top page, a kernel address, NULL. */
		im->uaddr = where == 0 ? (uint64_t)(uintptr_t)d->mem :
			    where == 1 ? 0x7ffffffff000ULL : where == 2 ? 0xffff888000000000ULL : 0;
		busy(c, what);
		n = write(d->fd, &m, len);
		e[i] = n < 0 ? errno : 0;
		idle(c);
		oplog_add(&ep->log, "t%d %s %s -> %s", c->tid, d->zc ? "zc" : "stock", what,
			  ename(e[i]));
		if (!allowed_errno(e[i]))
			fuzz_fail(c, "%s %s: unexpected errno %s", d->path, what, ename(e[i]));
		atomic_fetch_add(&ep->ops, 1);
	}
	if (ep->ndev == 2)
		diff_check(c, what, e[0], e[1]);
	for (int i = 0; i < ep->ndev; i++) {
		struct dev *d = &ep->dev[i];
		uint8_t buf[sizeof(struct vhost_msg_v2)];
		ssize_t n;
		int err;

		/* Never blocks: no reader of this file waits for a miss. */
		fcntl(d->fd, F_SETFL, fcntl(d->fd, F_GETFL) | O_NONBLOCK);
		n = read(d->fd, buf, sizeof(buf));
		err = n < 0 ? errno : 0;
		oplog_add(&ep->log, "t%d %s read{iotlb} -> %zd %s", c->tid, d->zc ? "zc" : "stock",
			  n, ename(err));
		/* EBADF: another thread closed and reopened the device meanwhile. */
		if (n < 0 && err != EAGAIN && err != EBADFD && err != EBADF)
			fuzz_fail(c, "%s read of the device file: unexpected errno %s", d->path,
				  ename(err));
		atomic_fetch_add(&ep->ops, 1);
	}
}


enum op {
	OP_TX, OP_TX_BAD, OP_RX, OP_RX_BAD, OP_INJECT, OP_REAP, OP_KICK, OP_PLUG, OP_SLEEP,
	OP_GET_FEATURES, OP_SET_FEATURES, OP_FEATURES_ARRAY, OP_BACKEND_FEATURES,
	OP_SET_OWNER, OP_RESET_OWNER, OP_MEM_TABLE, OP_LOG, OP_VRING_RAW, OP_GET_VRING_BASE,
	OP_VRING_FD, OP_BUSYLOOP, OP_ENDIAN, OP_WORKER, OP_FORK_OWNER, OP_SET_BACKEND,
	OP_SETUP, OP_SETUP_VQ, OP_BADCMD, OP_TIMEOUT, OP_RECLAIM, OP_VM_RESET, OP_STATS,
	OP_EXTRA, OP_CLOSE_REOPEN, OP_IOTLB_MSG, OP_FORK, OP_N
};

/* Where an operation may run. */
#define OPF_DIFF	1	/* comparable on both devices: ioctls, no data, no zc ioctls */
#define OPF_CLEAN	2	/* valid operations only: every TX head must come back */
#define OPF_CHILD	4	/* in a forked child, on the inherited fd */
#define OPF_LOCK	8	/* changes what the guest's ring shadow means: serialized */

static const struct {
	const char *name;
	unsigned int weight, diff_weight, flags;
} ops[OP_N] = {
	[OP_TX]			= { "tx",		180, 0,  OPF_CLEAN | OPF_CHILD },
	[OP_TX_BAD]		= { "tx_bad",		 25, 0,  OPF_CHILD },
	[OP_RX]			= { "rx",		 50, 0,  OPF_CLEAN | OPF_CHILD },
	[OP_RX_BAD]		= { "rx_bad",		 10, 0,  OPF_CHILD },
	[OP_INJECT]		= { "inject",		 40, 0,  OPF_CLEAN },
	[OP_REAP]		= { "reap",		100, 0,  OPF_CLEAN | OPF_CHILD },
	[OP_KICK]		= { "kick",		 30, 0,  OPF_CLEAN | OPF_CHILD },
	[OP_PLUG]		= { "plug",		 30, 0,  OPF_CLEAN },
	[OP_SLEEP]		= { "sleep",		 15, 0,  OPF_CLEAN },
	[OP_GET_FEATURES]	= { "get_features",	 10, 20, OPF_CLEAN | OPF_CHILD | OPF_DIFF },
	[OP_SET_FEATURES]	= { "set_features",	 15, 40, OPF_CHILD | OPF_DIFF },
	[OP_FEATURES_ARRAY]	= { "features_array",	 10, 30, OPF_CHILD | OPF_DIFF },
	[OP_BACKEND_FEATURES]	= { "backend_features",	 10, 20, OPF_CHILD | OPF_DIFF },
	[OP_SET_OWNER]		= { "set_owner",	 10, 30, OPF_CHILD | OPF_DIFF | OPF_LOCK },
	[OP_RESET_OWNER]	= { "reset_owner",	 10, 20, OPF_CHILD | OPF_DIFF | OPF_LOCK },
	[OP_MEM_TABLE]		= { "mem_table",	 30, 60, OPF_CHILD | OPF_DIFF },
	[OP_LOG]		= { "log",		 10, 30, OPF_CHILD | OPF_DIFF },
	[OP_VRING_RAW]		= { "vring_raw",	 20, 80, OPF_CHILD | OPF_DIFF | OPF_LOCK },
	[OP_GET_VRING_BASE]	= { "get_vring_base",	 10, 20, OPF_CLEAN | OPF_CHILD | OPF_DIFF },
	[OP_VRING_FD]		= { "vring_fd",		 20, 50, OPF_CHILD | OPF_DIFF },
	[OP_BUSYLOOP]		= { "busyloop",		 10, 20, OPF_CHILD | OPF_DIFF },
	[OP_ENDIAN]		= { "endian",		  5, 15, OPF_CHILD | OPF_DIFF },
	[OP_WORKER]		= { "worker",		 10, 30, OPF_CHILD | OPF_DIFF },
	[OP_FORK_OWNER]		= { "fork_owner",	  5, 15, OPF_CHILD | OPF_DIFF },
	[OP_SET_BACKEND]	= { "set_backend",	 50, 60, OPF_CLEAN | OPF_CHILD | OPF_DIFF | OPF_LOCK },
	[OP_SETUP]		= { "setup",		 10, 30, OPF_DIFF | OPF_LOCK },
	[OP_SETUP_VQ]		= { "setup_vq",		 20, 50, OPF_DIFF | OPF_LOCK },
	[OP_BADCMD]		= { "badcmd",		 30, 60, OPF_CHILD | OPF_DIFF },
	[OP_TIMEOUT]		= { "timeout",		 30, 0,  OPF_CLEAN | OPF_CHILD },
	[OP_RECLAIM]		= { "reclaim",		 20, 0,  OPF_CLEAN | OPF_CHILD },
	[OP_VM_RESET]		= { "vm_reset",		 20, 0,  OPF_CLEAN | OPF_CHILD },
	[OP_STATS]		= { "stats",		 20, 0,  OPF_CLEAN | OPF_CHILD },
	[OP_EXTRA]		= { "extra_memory",	 20, 0,  0 },
	[OP_CLOSE_REOPEN]	= { "close_reopen",	 10, 0,  OPF_LOCK },
	[OP_IOTLB_MSG]		= { "iotlb_msg",	 10, 40, OPF_CHILD | OPF_DIFF },
	[OP_FORK]		= { "fork",		  0, 0,  0 },	/* the fork case's own */
};

static void tx_bound_update(struct dev *d, uint32_t ms)
{
	if (ms > d->tmax)
		d->tmax = ms;
}

/* The features the episode's guest negotiates in a valid setup. */
static uint64_t pick_features(struct ctx *c)
{
	uint64_t f = 1ULL << VIRTIO_F_VERSION_1;

	if (chance(&c->r, 70))
		f |= 1ULL << VIRTIO_RING_F_INDIRECT_DESC;
	if (chance(&c->r, 40))
		f |= 1ULL << VIRTIO_RING_F_EVENT_IDX;
	if (chance(&c->r, 40))
		f |= 1ULL << VIRTIO_NET_F_MRG_RXBUF;
	if (chance(&c->r, 10))
		f |= 1ULL << VHOST_NET_F_VIRTIO_NET_HDR;
	if (chance(&c->r, 10))
		f &= ~(1ULL << VIRTIO_F_VERSION_1);
	return f;
}

static unsigned int hdr_len_of(uint64_t f)
{
	if (f & (1ULL << VHOST_NET_F_VIRTIO_NET_HDR))
		return 0;
	return f & ((1ULL << VIRTIO_F_VERSION_1) | (1ULL << VIRTIO_NET_F_MRG_RXBUF)) ? 12 : 10;
}

/*
 * Never set where the guest moves data: VIRTIO_F_ACCESS_PLATFORM, which both devices
 * offer. With it, ring and buffer addresses are IOVAs that only the VMM's answers to the
 * device's IOTLB misses translate, and this guest answers none, so no chain would move
 * (vnzc_iotlb drives that protocol). The differential case moves no data: there, random
 * features may turn the device IOTLB on, and its messages are fuzzed (OP_IOTLB_MSG).
 */
static uint64_t diff_feature_mask(const struct ctx *c)
{
	return c->ep->ndev == 2 ? 0 : 1ULL << VIRTIO_F_ACCESS_PLATFORM;
}

/* Random feature bits: mostly offered ones, sometimes bits nobody offers. */
static uint64_t random_features(struct ctx *c)
{
	uint64_t f = pick_features(c);

	if (chance(&c->r, 20))
		f |= 1ULL << VHOST_F_LOG_ALL;
	if (chance(&c->r, 10))
		f |= 1ULL << PICK(&c->r, 50, 55, 63, 1, 2, 5);
	if (chance(&c->r, 5))
		f = rnd(&c->r);
	if (c->ep->ndev == 2 && chance(&c->r, 30))
		f |= 1ULL << VIRTIO_F_ACCESS_PLATFORM;
	/*
	 * Nor VIRTIO_F_IN_ORDER, offered by both: this guest places chains anywhere in the
	 * descriptor table, which that feature forbids (the device then takes descriptors in
	 * table order, not the heads posted), so the oracle would not hold.
	 */
	return f & ~(diff_feature_mask(c) | (1ULL << VIRTIO_F_IN_ORDER));
}

struct mt {
	struct vhost_memory hdr;
	struct vhost_memory_region r[80];
};

/*
 * A random memory table for device @d from the random numbers @p (so that both devices
 * of the differential case get the same shape in their own memory).
 */
static size_t build_mem_table(struct dev *d, const uint64_t *p, struct mt *m)
{
	unsigned int kind = p[0] % 10, n = 0;
	unsigned int pieces = 1 + p[1] % 63;
	uint64_t cut[72];

	memset(m, 0, sizeof(*m));
	if (kind <= 1 || kind >= 8) {
		/* The standard table: guest memory and the extra region. */
		m->r[n++] = (struct vhost_memory_region){ VG_GPA_BASE, MEM_SIZE,
							  (uintptr_t)d->mem, 0 };
		m->r[n++] = (struct vhost_memory_region){ EXTRA_GPA, EXTRA_SIZE,
							  (uintptr_t)d->extra, 0 };
		goto done;
	}
	if (kind == 6) {
		/* No region at all, or more than max_mem_regions (64). */
		n = p[2] % 2 ? 0 : 65 + p[2] % 6;
		for (unsigned int i = 0; i < n; i++)
			m->r[i] = (struct vhost_memory_region){ VG_GPA_BASE + i * PAGE, PAGE,
								(uintptr_t)d->mem + i * PAGE, 0 };
		goto done;
	}
	/* Guest memory cut in pieces at random page boundaries, the same translation. */
	cut[0] = 0;
	for (unsigned int i = 1; i < pieces; i++)
		cut[i] = (mix64(p[3] + i) % (MEM_SIZE / PAGE)) * PAGE;
	cut[pieces] = MEM_SIZE;
	for (unsigned int i = 1; i < pieces; i++)	/* insertion sort: small */
		for (unsigned int j = i; j > 0 && cut[j - 1] > cut[j]; j--) {
			uint64_t t = cut[j];

			cut[j] = cut[j - 1];
			cut[j - 1] = t;
		}
	for (unsigned int i = 0; i < pieces; i++) {
		uint64_t at = cut[i], size = cut[i + 1] - cut[i];

		if (!size)
			continue;
		/* kind 3: holes; the guest's buffers there fail to translate. */
		if (kind == 3 && mix64(p[4] + i) % 4 == 0 && at >= RING_AREA)
			continue;
		m->r[n++] = (struct vhost_memory_region){ VG_GPA_BASE + at, size,
							  (uintptr_t)d->mem + at, 0 };
	}
	if (n < 64)
		m->r[n++] = (struct vhost_memory_region){ EXTRA_GPA, EXTRA_SIZE,
							  (uintptr_t)d->extra, 0 };
	if (kind == 4 && n < 64) {
		/* An overlap: a data range of guest memory also backed by the extra region. */
		uint64_t at = RING_AREA + (p[5] % ((MEM_SIZE - RING_AREA) / PAGE)) * PAGE;

		m->r[n++] = (struct vhost_memory_region){ VG_GPA_BASE + at,
			EXTRA_SIZE < MEM_SIZE - at ? EXTRA_SIZE : MEM_SIZE - at,
			(uintptr_t)d->extra, 0 };
	}
	if (kind == 5 && n < 64) {
		/* A region nobody can use: size 0, a wrapping range, kernel or odd addresses. */
		struct vhost_memory_region *b = &m->r[n++];

		switch (p[6] % 6) {
		case 0:
			*b = (struct vhost_memory_region){ EXTRA_GPA + (1 << 24), 0,
							   (uintptr_t)d->extra, 0 };
			break;
		case 1:
			*b = (struct vhost_memory_region){ ~0ULL - 4095, 8192, 0x10000, 0 };
			break;
		case 2:
			*b = (struct vhost_memory_region){ EXTRA_GPA + (1 << 24), PAGE,
							   KERNEL_PTR, 0 };
			break;
		case 3:
			*b = (struct vhost_memory_region){ EXTRA_GPA + (1 << 24), PAGE,
							   (uintptr_t)d->mem + 1, 0 };
			break;
		case 4:
			*b = (struct vhost_memory_region){ EXTRA_GPA + (1 << 24), 1ULL << 40,
							   ~0ULL - PAGE, 0 };
			break;
		default:
			*b = (struct vhost_memory_region){ 0, PAGE, (uintptr_t)d->mem, p[7] };
			break;
		}
	}
	if (kind == 7)
		m->hdr.padding = 1 + p[7] % 7;		/* EOPNOTSUPP */
done:
	m->hdr.nregions = n;
	return sizeof(m->hdr) + n * sizeof(m->r[0]);
}

static int set_mem_table(struct ctx *c, const uint64_t *p, unsigned int bad_pct)
{
	int __last_e;
	struct mt *m = malloc(sizeof(*m));
	char what[64];

	snprintf(what, sizeof(what), "SET_MEM_TABLE{kind %u}", (unsigned int)(p[0] % 10));
	ALL_DEVS(c, what, VHOST_SET_MEM_TABLE, ({
		size_t len = build_mem_table(d, p, m);

		arg = mkptr(c, m, len, bad_pct, NULL);
	}));
	free(m);
	return __last_e;
}

/* Lays out a new ring for @vq and programs the device with it (the ioctls a VMM issues). */
static void setup_vq(struct ctx *c, int vq, unsigned int num, uint16_t base)
{
	struct episode *ep = c->ep;
	int e_num, e_base, e_addr, __last_e;
	char what[64];

	pthread_mutex_lock(&ep->lock);
	for (int i = 0; i < ep->ndev; i++) {
		struct dev *d = &ep->dev[i];
		/* A slot other than the current one: the device's ring always moves. */
		int slot = (d->vq[vq].slot + 1 + (int)(rnd(&c->r) % (NSLOTS - 1))) % NSLOTS;

		if (i)	/* the same slot on both devices: same addresses relative to memory */
			slot = ep->dev[0].vq[vq].slot;
		vq_layout(d, vq, slot, num, base);
		d->vq[vq].coherent = false;
	}
	pthread_mutex_unlock(&ep->lock);
	snprintf(what, sizeof(what), "SET_VRING_NUM{%d,%u}", vq, num);
	ALL_DEVS(c, what, VHOST_SET_VRING_NUM, ({
		struct vhost_vring_state s = { vq, num };
		arg = mkptr(c, &s, sizeof(s), 0, NULL);
	}));
	e_num = __last_e;
	snprintf(what, sizeof(what), "SET_VRING_BASE{%d,%u}", vq, base);
	ALL_DEVS(c, what, VHOST_SET_VRING_BASE, ({
		struct vhost_vring_state s = { vq, base };
		arg = mkptr(c, &s, sizeof(s), 0, NULL);
	}));
	e_base = __last_e;
	snprintf(what, sizeof(what), "SET_VRING_ADDR{%d,slot}", vq);
	ALL_DEVS(c, what, VHOST_SET_VRING_ADDR, ({
		struct vhost_vring_addr a = {
			.index = vq,
			.desc_user_addr = (uintptr_t)d->vq[vq].desc,
			.avail_user_addr = (uintptr_t)d->vq[vq].avail,
			.used_user_addr = (uintptr_t)d->vq[vq].used,
		};
		arg = mkptr(c, &a, sizeof(a), 0, NULL);
	}));
	e_addr = __last_e;
	snprintf(what, sizeof(what), "SET_VRING_KICK/CALL/ERR{%d}", vq);
	ALL_DEVS(c, what, VHOST_SET_VRING_KICK, ({
		struct vhost_vring_file f = { vq, d->vq[vq].kick };
		arg = mkptr(c, &f, sizeof(f), 0, NULL);
	}));
	ALL_DEVS(c, what, VHOST_SET_VRING_CALL, ({
		struct vhost_vring_file f = { vq, d->vq[vq].call };
		arg = mkptr(c, &f, sizeof(f), 0, NULL);
	}));
	ALL_DEVS(c, what, VHOST_SET_VRING_ERR, ({
		struct vhost_vring_file f = { vq, d->vq[vq].err };
		arg = mkptr(c, &f, sizeof(f), 0, NULL);
	}));
	/* Coherent only if the device took all of it; differential: per device anyway. */
	pthread_mutex_lock(&ep->lock);
	for (int i = 0; i < ep->ndev; i++)
		ep->dev[i].vq[vq].coherent = !e_num && !e_base && !e_addr && ep->ndev == 1 &&
					     !ep->chaos;
	pthread_mutex_unlock(&ep->lock);
}

static unsigned int pick_num(struct ctx *c)
{
	return PICK(&c->r, 1, 2, 4, 8, 16, 32, 64, 64, 128, 128, 256, 256, 256, 512, 1024);
}

static int set_backend(struct ctx *c, int vq, int which)
{
	int __last_e;
	static const char *const names[] = {
		"tap", "-1", "tap2", "eventfd", "badfd", "packet", "udp",
	};
	char what[64];

	snprintf(what, sizeof(what), "SET_BACKEND{%d,%s}", vq, names[which]);
	ALL_DEVS(c, what, VHOST_NET_SET_BACKEND, ({
		int fds[] = { d->tap_fd, -1, d->tap2_fd, d->efd, 1000 + c->tid, d->pkt_fd,
			      d->udp_fd };
		struct vhost_vring_file f = { vq, fds[which] };
		arg = mkptr(c, &f, sizeof(f), 0, NULL);
	}));
	return __last_e;
}

/* The setup sequence of a VMM, each step checked like any other operation. */
static void full_setup(struct ctx *c)
{
	struct episode *ep = c->ep;
	uint64_t f = pick_features(c) & ~(1ULL << VIRTIO_F_ACCESS_PLATFORM);
	uint64_t p[8];
	int __last_e;

	ALL_DEVS(c, "SET_OWNER", VHOST_SET_OWNER, arg = NULL);
	ALL_DEVS(c, "SET_FEATURES{setup}", VHOST_SET_FEATURES, arg = mkptr(c, &f, 8, 0, NULL));
	if (!__last_e)
		for (int i = 0; i < ep->ndev; i++) {
			ep->dev[i].features = f;
			ep->dev[i].hdr_len = hdr_len_of(f);
		}
	memset(p, 0, sizeof(p));
	p[0] = chance(&c->r, 70) ? 0 : 2;	/* standard or cut in pieces */
	p[1] = rnd(&c->r);
	p[3] = rnd(&c->r);
	set_mem_table(c, p, 0);
	for (int vq = 0; vq < VG_NVQS; vq++)
		setup_vq(c, vq, chance(&c->r, 80) ? PICK(&c->r, 64, 128, 256) : pick_num(c),
			 chance(&c->r, 90) ? 0 : (uint16_t)PICK(&c->r, 65530, 32768, 1));
	set_backend(c, VG_TX, 0);
	if (chance(&c->r, 60))
		set_backend(c, VG_RX, 0);
}

/*
 * A frame from the guest: header, Ethernet header, payload, cut in segments (at most
 * @max). Long chains leave a byte between pieces so that no two iovecs merge.
 */
static unsigned int build_frame(struct ctx *c, struct dev *d, struct seg *s, unsigned int max,
				bool from_extra)
{
	uint32_t len = chance(&c->r, 50) ? ZC_LEN + below(&c->r, 500) :
		       chance(&c->r, 50) ? 60 + below(&c->r, 196) : 14 + below(&c->r, 1501);
	unsigned int hl = d->hdr_len, total = hl + len, n, at = 0;
	static const uint8_t bcast[6] = { 0xff, 0xff, 0xff, 0xff, 0xff, 0xff };
	const uint8_t *dst = chance(&c->r, 50) ? mac_held : chance(&c->r, 80) ? mac_free : bcast;
	uint8_t bytes[12 + 2048], *p;
	size_t gap;

	/* Pieces: one, header and frame, a few, or more than the zero-copy range limit. */
	n = PICK(&c->r, 1, 2, 2, 2, 3, 4, 6, 0);
	if (!n)
		n = 2 + ZC_MAX_RANGES + below(&c->r, 10);
	if (n > max)
		n = max;
	if (n > total)
		n = total;
	gap = n > 8;
	memset(bytes, 0, hl);
	memcpy(bytes + hl, dst, 6);
	memcpy(bytes + hl + 6, mac_src, 6);
	bytes[hl + 12] = TEST_ETHERTYPE >> 8;
	bytes[hl + 13] = TEST_ETHERTYPE & 0xff;
	for (uint32_t i = 14; i < len; i++)
		bytes[hl + i] = (uint8_t)(i * 13 + c->tid);
	if (from_extra && d->extra_state == 0) {
		p = d->extra + below(&c->r, EXTRA_SIZE - total - n * gap - 1);
	} else {
		p = data_alloc(d, total + n * gap + PAGE + 128, 1);
		/* Often across a page boundary (inside what was allocated). */
		if (chance(&c->r, 50))
			p = (uint8_t *)(((uintptr_t)p + 65 + PAGE - 1) & ~(PAGE - 1)) -
			    below(&c->r, 64) - 1;
	}
	for (unsigned int i = 0; i < n; i++) {
		/* At least a byte for each piece still to come. */
		unsigned int left = total - at, most = left - (n - i - 1), l;

		if (i + 1 == n)
			l = left;
		else if (i == 0 && hl)
			l = hl < most ? hl : most;
		else
			l = 1 + below(&c->r, most);
		memcpy(p + at + i * gap, bytes + at, l);
		s[i].addr = gpa_of(d, p + at + i * gap);
		s[i].len = l;
		s[i].flags = 0;
		at += l;
	}
	return n;
}

static void op_tx(struct ctx *c, struct dev *d, bool bad)
{
	struct seg s[40];
	bool indirect = (d->features & (1ULL << VIRTIO_RING_F_INDIRECT_DESC)) && chance(&c->r, 30);
	int kind = bad ? 1 + (int)below(&c->r, B_KINDS + 4) : B_NONE;
	unsigned int n = build_frame(c, d, s, 40, chance(&c->r, 15));
	int head;

	if (kind >= B_KINDS) {
		/* Malformed segments in a direct or indirect chain. */
		struct seg *g = &s[below(&c->r, n)];

		switch (kind - B_KINDS) {
		case 0:
			g->len = 0;
			break;
		case 1:
			g->len = 0xffffffff;
			break;
		case 2:
			g->addr = PICK(&c->r, 0, 0x1000, 0x3fffffff) |
				  (chance(&c->r, 30) ? 0xfffffffffffff000ULL : 0);
			break;
		default:
			g->flags |= VRING_DESC_F_WRITE;
			break;
		}
		kind = B_NONE;
	}
	if (kind == B_IND_HUGE)
		indirect = true;
	head = put_chain(c, d, VG_TX, s, n, indirect, kind);
	oplog_add(&c->ep->log, "t%d tx%s kind %d: %u segs%s len0 %u -> head %d", c->tid,
		  bad ? "_bad" : "", kind, n, indirect ? " indirect" : "", s[0].len, head);
	atomic_fetch_add(&c->ep->ops, 1);
}

static void op_rx(struct ctx *c, struct dev *d, bool bad)
{
	unsigned int k = 1 + below(&c->r, 8);
	bool mrg = d->features & (1ULL << VIRTIO_NET_F_MRG_RXBUF);

	for (unsigned int i = 0; i < k; i++) {
		struct seg s[3];
		unsigned int n = mrg ? 1 : 1 + below(&c->r, 2);
		uint32_t len = mrg ? PICK(&c->r, 64, 256, 1024, 1536, 2048) : 1536 + 12;

		for (unsigned int j = 0; j < n; j++) {
			uint32_t l = n == 1 ? len : j == 0 ? 12 : len;

			s[j].addr = gpa_of(d, data_alloc(d, l, 8));
			s[j].len = l;
			s[j].flags = VRING_DESC_F_WRITE;
		}
		if (bad) {
			/* Malformed (mergeable) RX: tiny, empty, huge, device-readable buffers. */
			switch (below(&c->r, 5)) {
			case 0:
				s[0].len = below(&c->r, 12);
				break;
			case 1:
				s[0].len = 0;
				break;
			case 2:
				s[0].len = 0xffffffff;
				break;
			case 3:
				s[0].flags = 0;
				break;
			default:
				s[0].addr = 0xfffffffffffff000ULL;
				break;
			}
		}
		put_chain(c, d, VG_RX, s, n, false, B_NONE);
	}
	oplog_add(&c->ep->log, "t%d rx%s %u buffers", c->tid, bad ? "_bad" : "", k);
	atomic_fetch_add(&c->ep->ops, 1);
}

/* A frame for the guest: sent out of the tap, which hands it to the device's RX. */
static void op_inject(struct ctx *c)
{
	struct fuzz_case *fc = c->ep->fc;
	struct dev *d = &c->ep->dev[0];
	struct sockaddr_ll to = {
		.sll_family = AF_PACKET,
		.sll_protocol = htons(TEST_ETHERTYPE),
		.sll_halen = 6,
		.sll_ifindex = fc->tap_ifindex,
	};
	uint8_t frame[1514];
	uint32_t len = 14 + below(&c->r, sizeof(frame) - 14 + 1);
	ssize_t r;

	memset(frame, 0xff, 6);
	memcpy(frame + 6, mac_src, 6);
	frame[12] = TEST_ETHERTYPE >> 8;
	frame[13] = TEST_ETHERTYPE & 0xff;
	for (uint32_t i = 14; i < len; i++)
		frame[i] = (uint8_t)i;
	r = sendto(d->pkt_fd, frame, len, MSG_DONTWAIT, (struct sockaddr *)&to, sizeof(to));
	oplog_add(&c->ep->log, "t%d inject %u -> %zd", c->tid, len, r);
	atomic_fetch_add(&c->ep->ops, 1);
}

static void op_extra(struct ctx *c, struct dev *d)
{
	int what = below(&c->r, 5);
	void *p;

	switch (what) {
	case 0:	/* unmapped under buffers in flight */
		if (d->extra_state != 2)
			munmap(d->extra, EXTRA_SIZE);
		d->extra_state = 2;
		break;
	case 1:	/* replaced by fresh pages */
	case 2:	/* back, if unmapped (nothing else may have taken the range) */
		p = mmap(d->extra, EXTRA_SIZE, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS |
			 (d->extra_state == 2 ? MAP_FIXED_NOREPLACE : MAP_FIXED), -1, 0);
		if (p == d->extra)
			d->extra_state = 0;
		else if (p != MAP_FAILED)
			munmap(p, EXTRA_SIZE);
		break;
	case 3:	/* write-protected */
		if (d->extra_state == 0 && !mprotect(d->extra, EXTRA_SIZE, PROT_READ))
			d->extra_state = 1;
		else if (d->extra_state == 1 && !mprotect(d->extra, EXTRA_SIZE, PROT_READ | PROT_WRITE))
			d->extra_state = 0;
		break;
	default: /* data pages dropped (a balloon), maybe under buffers in flight */
		madvise(d->mem + RING_AREA + below(&c->r, (MEM_SIZE - RING_AREA) / PAGE - 16) * PAGE,
			PAGE * (1 + below(&c->r, 16)), MADV_DONTNEED);
		break;
	}
	oplog_add(&c->ep->log, "t%d extra memory op %d -> state %d", c->tid, what, d->extra_state);
	atomic_fetch_add(&c->ep->ops, 1);
}

/* An index: mostly the two virtqueues, sometimes out of range. */
static unsigned int pick_index(struct ctx *c)
{
	return chance(&c->r, 85) ? below(&c->r, 2) : PICK(&c->r, 2, 3, 255, 65535, 0x80000000u,
							   0xffffffffu);
}

static uint64_t pick_addr(struct ctx *c, struct dev *d, int vq, int which)
{
	struct vq_shadow *q = &d->vq[vq < 2 ? vq : 0];
	uintptr_t slot = (uintptr_t)d->mem + ((vq & 1) * NSLOTS + below(&c->r, NSLOTS)) * SLOT_SIZE;
	uintptr_t mine = which == 0 ? slot : slot + (which == 1 ? AVAIL_OFF : USED_OFF);

	(void)q;
	switch (below(&c->r, 10)) {
	case 0: return mine + PICK(&c->r, 1, 2, 3, 8);	/* misaligned */
	case 1:
		return 0;
	case 2: return (uintptr_t)(c->arg + PAGE);	/* unmapped */
	case 3: return (uintptr_t)c->ep->fc->ro;		/* read-only */
	case 4:
		return KERNEL_PTR;
	case 5:
		return ~0ULL - PICK(&c->r, 0, 15, 4095);
	default:
		return mine;
	}
}

static void op_ioctl(struct ctx *c, enum op op)
{
	struct episode *ep = c->ep;
	char what[96];
	int __last_e;

	switch (op) {
	case OP_GET_FEATURES: {
		bool back = chance(&c->r, 30);

		ALL_DEVS(c, back ? "GET_BACKEND_FEATURES" : "GET_FEATURES",
			 back ? VHOST_GET_BACKEND_FEATURES : VHOST_GET_FEATURES,
			 arg = mkptr(c, &(uint64_t){ 0 }, 8, 20, NULL));
		break;
	}
	case OP_SET_FEATURES: {
		uint64_t f = random_features(c);

		snprintf(what, sizeof(what), "SET_FEATURES{%#" PRIx64 "}", f);
		ALL_DEVS(c, what, VHOST_SET_FEATURES, arg = mkptr(c, &f, 8, 10, NULL));
		if (!__last_e)
			for (int i = 0; i < ep->ndev; i++) {
				ep->dev[i].features = f;
				ep->dev[i].hdr_len = hdr_len_of(f);
			}
		break;
	}
	case OP_FEATURES_ARRAY: {
		uint64_t a[6] = { PICK(&c->r, 0, 1, 2, 3, 4), random_features(c),
				  chance(&c->r, 80) ? 0 : 1ULL << 40, 0, 0, 0 };
		bool set = chance(&c->r, 50);

		if (chance(&c->r, 10))
			a[0] = PICK(&c->r, 5, 1000, 0x7fffffff) |
			       (chance(&c->r, 50) ? 0x2000000000000000ULL : 0);
		snprintf(what, sizeof(what), "%s_FEATURES_ARRAY{count %" PRIu64 "}",
			 set ? "SET" : "GET", a[0]);
		ALL_DEVS(c, what, set ? VHOST_SET_FEATURES_ARRAY : VHOST_GET_FEATURES_ARRAY,
			 arg = mkptr(c, a, sizeof(a), 10, NULL));
		break;
	}
	case OP_BACKEND_FEATURES: {
		uint64_t f = chance(&c->r, 70) ? 0 : 1ULL << PICK(&c->r, 0, 3, 5, 20, 63);

		snprintf(what, sizeof(what), "SET_BACKEND_FEATURES{%#" PRIx64 "}", f);
		ALL_DEVS(c, what, VHOST_SET_BACKEND_FEATURES, arg = mkptr(c, &f, 8, 10, NULL));
		break;
	}
	case OP_SET_OWNER:
		ALL_DEVS(c, "SET_OWNER", VHOST_SET_OWNER, arg = NULL);
		break;
	case OP_RESET_OWNER:
		ALL_DEVS(c, "RESET_OWNER", VHOST_RESET_OWNER, arg = NULL);
		if (!__last_e)
			for (int i = 0; i < ep->ndev; i++) {
				/* What the reset returned is in the old rings: check it. */
				reap_all_vqs(c, &ep->dev[i]);
				ep->dev[i].vq[0].coherent = ep->dev[i].vq[1].coherent = false;
				ep->dev[i].nworkers = 0;
			}
		break;
	case OP_MEM_TABLE: {
		uint64_t p[8];

		for (int i = 0; i < 8; i++)
			p[i] = rnd(&c->r);
		set_mem_table(c, p, 10);
		break;
	}
	case OP_LOG: {
		bool fd = chance(&c->r, 40);
		int k = below(&c->r, 5);

		if (fd) {
			snprintf(what, sizeof(what), "SET_LOG_FD{%d}", k);
			ALL_DEVS(c, what, VHOST_SET_LOG_FD, ({
				int fds[] = { d->efd, -1, 1000, d->tap2_fd, d->udp_fd };
				int v = fds[k];

				arg = mkptr(c, &v, sizeof(v), 10, NULL);
			}));
		} else {
			snprintf(what, sizeof(what), "SET_LOG_BASE{%d}", k);
			ALL_DEVS(c, what, VHOST_SET_LOG_BASE, ({
				uint64_t bases[] = { (uintptr_t)d->log, 0, KERNEL_PTR,
						     (uintptr_t)d->log + 1, 1ULL << 63 };
				uint64_t v = bases[k];

				arg = mkptr(c, &v, sizeof(v), 10, NULL);
			}));
		}
		break;
	}
	case OP_VRING_RAW: {
		unsigned int idx = pick_index(c), which = below(&c->r, 3);
		uint32_t num = PICK(&c->r, 0, 1, 3, 100, 256, 1024, 32768, 65535, 65536, 0xffffffff);
		uint32_t flags = chance(&c->r, 80) ? 0 : PICK(&c->r, 1, 2, 0x80000000u);
		uint64_t r0 = rnd(&c->r);

		if (which == 0) {
			snprintf(what, sizeof(what), "SET_VRING_NUM{%u,%u}", idx, num);
			ALL_DEVS(c, what, VHOST_SET_VRING_NUM, ({
				struct vhost_vring_state s = { idx, num };
				arg = mkptr(c, &s, sizeof(s), 10, NULL);
			}));
		} else if (which == 1) {
			num = PICK(&c->r, 0, 1, 255, 65535, 65536, 0x10000 | 5, 0xffffffff);
			snprintf(what, sizeof(what), "SET_VRING_BASE{%u,%u}", idx, num);
			ALL_DEVS(c, what, VHOST_SET_VRING_BASE, ({
				struct vhost_vring_state s = { idx, num };
				arg = mkptr(c, &s, sizeof(s), 10, NULL);
			}));
		} else {
			snprintf(what, sizeof(what), "SET_VRING_ADDR{%u,flags %#x}", idx, flags);
			ALL_DEVS(c, what, VHOST_SET_VRING_ADDR, ({
				struct vhost_vring_addr a = { .index = idx, .flags = flags,
							      .log_guest_addr = r0 % (8 << 20) };
				a.desc_user_addr = pick_addr(c, d, idx, 0);
				a.avail_user_addr = pick_addr(c, d, idx, 1);
				a.used_user_addr = pick_addr(c, d, idx, 2);
				arg = mkptr(c, &a, sizeof(a), 10, NULL);
			}));
		}
		if (!__last_e && idx < VG_NVQS)
			for (int i = 0; i < ep->ndev; i++) {
				/* What was returned before the change is still in the ring. */
				reap_vq(c, &ep->dev[i], idx);
				ep->dev[i].vq[idx].coherent = false;
			}
		break;
	}
	case OP_GET_VRING_BASE: {
		unsigned int idx = pick_index(c);

		snprintf(what, sizeof(what), "GET_VRING_BASE{%u}", idx);
		ALL_DEVS(c, what, VHOST_GET_VRING_BASE, ({
			struct vhost_vring_state s = { idx, 0 };
			arg = mkptr(c, &s, sizeof(s), 10, NULL);
		}));
		break;
	}
	case OP_VRING_FD: {
		unsigned int idx = pick_index(c), which = below(&c->r, 3), k = below(&c->r, 6);
		static const unsigned long cmds[3] = { VHOST_SET_VRING_KICK, VHOST_SET_VRING_CALL,
						       VHOST_SET_VRING_ERR };

		static const char *const names[3] = { "KICK", "CALL", "ERR" };

		snprintf(what, sizeof(what), "SET_VRING_%s{%u,%d}", names[which], idx, k);
		ALL_DEVS(c, what, cmds[which], ({
			int ownfds[3] = { -1, -1, -1 }, own, fds[6];
			struct vhost_vring_file f = { idx, -1 };

			if (idx < 2) {
				ownfds[0] = d->vq[idx].kick;
				ownfds[1] = d->vq[idx].call;
				ownfds[2] = d->vq[idx].err;
			}
			own = idx < 2 ? ownfds[which] : d->efd;
			fds[0] = own;
			fds[1] = own;
			fds[2] = -1;
			fds[3] = d->efd;
			fds[4] = 1000;
			fds[5] = d->udp_fd;
			f.fd = fds[k];
			arg = mkptr(c, &f, sizeof(f), 10, NULL);
		}));
		break;
	}
	case OP_BUSYLOOP: {
		/* Short spins only: a long busy loop would only burn the emulated CPU. */
		unsigned int idx = pick_index(c), us = PICK(&c->r, 0, 0, 1, 10, 50);
		bool get = chance(&c->r, 40);

		snprintf(what, sizeof(what), "%s_VRING_BUSYLOOP_TIMEOUT{%u,%u}", get ? "GET" : "SET",
			 idx, us);
		ALL_DEVS(c, what, get ? VHOST_GET_VRING_BUSYLOOP_TIMEOUT :
				  VHOST_SET_VRING_BUSYLOOP_TIMEOUT, ({
			struct vhost_vring_state s = { idx, us };
			arg = mkptr(c, &s, sizeof(s), 10, NULL);
		}));
		break;
	}
	case OP_ENDIAN: {
		unsigned int idx = pick_index(c), v = PICK(&c->r, 0, 1, 2);
		bool get = chance(&c->r, 50);

		snprintf(what, sizeof(what), "%s_VRING_ENDIAN{%u,%u}", get ? "GET" : "SET", idx, v);
		ALL_DEVS(c, what, get ? VHOST_GET_VRING_ENDIAN : VHOST_SET_VRING_ENDIAN, ({
			struct vhost_vring_state s = { idx, v };
			arg = mkptr(c, &s, sizeof(s), 10, NULL);
		}));
		break;
	}
	case OP_WORKER: {
		unsigned int k = below(&c->r, 4), idx = pick_index(c), pos = below(&c->r, 8);
		uint32_t junk = PICK(&c->r, 7, 1000, 0xffffffff);

		switch (k) {
		case 0:
			/* At most a few workers per device: each is a task. */
			if (ep->dev[0].nworkers >= 4)
				break;
		{
			/* Each device's own worker id: kept from its own answer. */
			struct vhost_worker_state w[2] = { { 0 }, { 0 } };
			int e[2] = { 0, 0 };

			for (int i = 0; i < ep->ndev; i++) {
				e[i] = xioctl(c, &ep->dev[i], "NEW_WORKER", VHOST_NEW_WORKER, &w[i]);
				if (!e[i] && ep->dev[i].nworkers < 8)
					ep->dev[i].worker_ids[ep->dev[i].nworkers++] = w[i].worker_id;
			}
			if (ep->ndev == 2)
				diff_check(c, "NEW_WORKER", e[0], e[1]);
			break;
		}
		case 1:
		case 2:
			snprintf(what, sizeof(what), "%s{%u,#%u}",
				 k == 1 ? "FREE_WORKER" : "ATTACH_VRING_WORKER", idx, pos);
			ALL_DEVS(c, what, k == 1 ? VHOST_FREE_WORKER : VHOST_ATTACH_VRING_WORKER, ({
				uint32_t id = pos < (unsigned int)d->nworkers ? d->worker_ids[pos] : junk;
				struct vhost_vring_worker w = { idx, id };
				struct vhost_worker_state ws = { id };
				arg = k == 1 ? mkptr(c, &ws, sizeof(ws), 5, NULL) :
					       mkptr(c, &w, sizeof(w), 5, NULL);
			}));
			break;
		default:
			snprintf(what, sizeof(what), "GET_VRING_WORKER{%u}", idx);
			ALL_DEVS(c, what, VHOST_GET_VRING_WORKER, ({
				struct vhost_vring_worker w = { idx, 0 };
				arg = mkptr(c, &w, sizeof(w), 5, NULL);
			}));
			break;
		}
		break;
	}
	case OP_FORK_OWNER: {
		uint8_t v = PICK(&c->r, 0, 1, 1, 2, 255);
		bool get = chance(&c->r, 40);

		snprintf(what, sizeof(what), "%s_FORK_FROM_OWNER{%u}", get ? "GET" : "SET", v);
		ALL_DEVS(c, what, get ? VHOST_GET_FORK_FROM_OWNER : VHOST_SET_FORK_FROM_OWNER,
			 arg = mkptr(c, &v, 1, 10, NULL));
		break;
	}
	case OP_SET_BACKEND: {
		int vq = chance(&c->r, 90) ? (chance(&c->r, 65) ? VG_TX : VG_RX) : (int)pick_index(c);
		int which = chance(&c->r, 80) ? (int)below(&c->r, 2) : (int)below(&c->r, 7);

		if (ep->clean)
			vq = VG_TX, which = below(&c->r, 2);
		set_backend(c, vq, which);
		break;
	}
	case OP_SETUP:
		full_setup(c);
		break;
	case OP_SETUP_VQ:
		setup_vq(c, below(&c->r, 2), pick_num(c),
			 chance(&c->r, 80) ? 0 : (uint16_t)PICK(&c->r, 65530, 32768, 1, 65535));
		break;
	case OP_BADCMD: {
		/*
		 * A command of vhost's or the project's type with a size or direction no
		 * command has, or a number nobody defined.
		 */
		unsigned int type = chance(&c->r, 70) ? VHOST_VIRTIO : VHOST_NET_ZC_IOC_TYPE;
		unsigned int nr = PICK(&c->r, 0x00, 0x01, 0x03, 0x10, 0x12, 0x20, 0x30, 0x83,
				       0x04, 0x02, 0x7f, 0xff, 0x05);
		unsigned int dir = below(&c->r, 4);
		unsigned int size = PICK(&c->r, 0, 1, 2, 4, 7, 12, 16, 64, 4095, 16383);
		unsigned long cmd = _IOC(dir, type, nr, size);
		uint8_t junk[64];

		if (type == VHOST_NET_ZC_IOC_TYPE && ep->ndev == 2)
			type = VHOST_VIRTIO, cmd = _IOC(dir, type, nr, size);
		for (unsigned int i = 0; i < sizeof(junk); i++)
			junk[i] = (uint8_t)rnd(&c->r);
		/* Never a valid deadline by chance: a reset could wait for up to 10 minutes. */
		if (type == VHOST_NET_ZC_IOC_TYPE)
			memset(junk, 0, 4);
		snprintf(what, sizeof(what), "ioctl{_IOC(%u,%#x,%#x,%u)}", dir, type, nr, size);
		ALL_DEVS(c, what, cmd, arg = mkptr(c, junk, sizeof(junk), 20, NULL));
		/* A number that is a ring-changing command after all. */
		if (!__last_e && (cmd == VHOST_RESET_OWNER || cmd == VHOST_SET_VRING_NUM ||
				  cmd == VHOST_SET_VRING_BASE))
			for (int i = 0; i < ep->ndev; i++) {
				reap_all_vqs(c, &ep->dev[i]);
				ep->dev[i].vq[0].coherent = ep->dev[i].vq[1].coherent = false;
			}
		break;
	}
	default:
		break;
	}
}

/* The project's ioctls (zc devices only). */
static void op_zc(struct ctx *c, struct dev *d, enum op op)
{
	struct episode *ep = c->ep;
	char what[96];
	int e;

	switch (op) {
	case OP_TIMEOUT: {
		uint32_t ms = chance(&c->r, 70) ? 1 + below(&c->r, 5) :
			      ep->clean ? PICK(&c->r, 10, 50, 200) :
			      PICK(&c->r, 10, 50, 200, 1000, 0, 600001, 0xffffffff);
		bool get = chance(&c->r, 20);
		int k;

		if (get) {
			e = xioctl(c, d, "GET_TIMEOUT", VHOST_NET_ZC_GET_TIMEOUT,
				   mkptr(c, &ms, 4, ep->clean ? 0 : 10, NULL));
			break;
		}
		/* Before the call: buffers sent while it runs may take the new deadline. */
		tx_bound_update(d, ms <= 600000 ? ms : 0);
		snprintf(what, sizeof(what), "SET_TIMEOUT{%u}", ms);
		e = xioctl(c, d, what, VHOST_NET_ZC_SET_TIMEOUT,
			   mkptr(c, &ms, 4, ep->clean ? 0 : 10, &k));
		/* EBADF: the fd was closed under us (a chaos thread, a child's own copy). */
		if (k == P_OK && e != EBADF && !e != (ms >= 1 && ms <= 600000))
			fuzz_fail(c, "SET_TIMEOUT{%u}: %s", ms, ename(e));
		break;
	}
	case OP_RECLAIM: {
		uint32_t v = chance(&c->r, 90) || ep->clean ? below(&c->r, 2) : PICK(&c->r, 2, 0xffffffff);
		int k;

		snprintf(what, sizeof(what), "SET_RECLAIM{%u}", v);
		e = xioctl(c, d, what, VHOST_NET_ZC_SET_RECLAIM, mkptr(c, &v, 4, ep->clean ? 0 : 10, &k));
		/* EPERM is right after a RESET_OWNER; anything else for 0 or 1 is not. */
		if (k == P_OK && v <= 1 && e && e != EPERM && e != EBADF)
			fuzz_fail(c, "SET_RECLAIM{%u}: %s", v, ename(e));
		break;
	}
	case OP_VM_RESET: {
		uint32_t flags = chance(&c->r, 85) || ep->clean ? 0 : 1u << below(&c->r, 32);

		snprintf(what, sizeof(what), "VM_RESET{%#x}", flags);
		e = xioctl(c, d, what, VHOST_NET_ZC_VM_RESET, mkptr(c, &flags, 4, ep->clean ? 0 : 10, NULL));
		break;
	}
	case OP_STATS: {
		struct vhost_net_zc_stats s;
		int k = P_OK;
		unsigned int size = chance(&c->r, 80) || ep->clean ? sizeof(s) :
				    PICK(&c->r, 0, 8, 112, 120, 128, 144, 4096);
		unsigned long cmd = size == sizeof(s) ? VHOST_NET_ZC_GET_STATS :
				    _IOC(_IOC_READ, VHOST_NET_ZC_IOC_TYPE, 0x04, size);

		memset(&s, 0xa5, sizeof(s));
		snprintf(what, sizeof(what), "GET_STATS{size %u}", size);
		e = xioctl(c, d, what, cmd, size == sizeof(s) ? (void *)&s :
			   mkptr(c, &s, sizeof(s), 30, &k));
		if (!e && size == sizeof(s)) {
			/* Invariants of the counters at any moment. */
			if (s.in_flight_expired > s.in_flight || s.completed > s.sent_zerocopy ||
			    s.expired > s.sent_zerocopy || s.offlined > s.sent_zerocopy ||
			    s.in_flight > s.sent_zerocopy || s.reclaim > 1 ||
			    s.timeout_ms < 1 || s.timeout_ms > 600000)
				fuzz_fail(c, "GET_STATS: inconsistent counters: sent_zerocopy %llu completed %llu expired %llu offlined %llu in_flight %llu in_flight_expired %llu reclaim %u timeout %u",
					  s.sent_zerocopy, s.completed, s.expired, s.offlined,
					  s.in_flight, s.in_flight_expired, s.reclaim, s.timeout_ms);
		}
		break;
	}
	default:
		break;
	}
}

static void op_close_reopen(struct ctx *c, struct dev *d);
static void op_fork(struct ctx *c);

static void run_op(struct ctx *c, enum op op)
{
	struct episode *ep = c->ep;
	struct dev *d = &ep->dev[0];
	/*
	 * The guest's own data (rings, shadows, memory) is always serialized; the ioctls
	 * that change what the device's ring is are serialized with it except in chaos
	 * episodes, where they race everything and the head oracle is off.
	 */
	bool lock = op < OP_GET_FEATURES || op == OP_EXTRA || op == OP_CLOSE_REOPEN ||
		    (!ep->chaos && (ops[op].flags & OPF_LOCK));

	if (lock)
		pthread_mutex_lock(&ep->lock);
	switch (op) {
	case OP_TX:
		op_tx(c, d, false);
		break;
	case OP_TX_BAD:
		op_tx(c, d, true);
		break;
	case OP_RX:
		op_rx(c, d, false);
		break;
	case OP_RX_BAD:
		op_rx(c, d, true);
		break;
	case OP_INJECT:
		op_inject(c);
		break;
	case OP_REAP:
		reap_all_vqs(c, d);
		atomic_fetch_add(&ep->ops, 1);
		break;
	case OP_KICK:
		kick(d, below(&c->r, 2));
		atomic_fetch_add(&ep->ops, 1);
		break;
	case OP_PLUG:
		set_plug(c, chance(&c->r, 50));
		atomic_fetch_add(&ep->ops, 1);
		break;
	case OP_SLEEP: {
		/* Long enough for 1-5 ms deadlines to pass. */
		unsigned int ms = 1 + below(&c->r, 6);

		if (lock)
			pthread_mutex_unlock(&ep->lock), lock = false;
		poll(NULL, 0, ms);
		atomic_fetch_add(&ep->ops, 1);
		break;
	}
	case OP_TIMEOUT: case OP_RECLAIM: case OP_VM_RESET: case OP_STATS:
		op_zc(c, d, op);
		break;
	case OP_EXTRA:
		op_extra(c, d);
		break;
	case OP_CLOSE_REOPEN:
		op_close_reopen(c, d);
		break;
	case OP_IOTLB_MSG:
		op_iotlb_msg(c);
		break;
	case OP_FORK:
		op_fork(c);
		break;
	default:
		op_ioctl(c, op);
		break;
	}
	if (lock)
		pthread_mutex_unlock(&ep->lock);
}

static enum op pick_op(struct ctx *c)
{
	struct episode *ep = c->ep;
	unsigned int total = 0, w[OP_N], x;

	for (int i = 0; i < OP_N; i++) {
		w[i] = ep->diff ? ops[i].diff_weight : ops[i].weight;
		if (ep->clean && !(ops[i].flags & OPF_CLEAN))
			w[i] = 0;
		if (c->child && !(ops[i].flags & OPF_CHILD))
			w[i] = 0;
		if (i == OP_FORK && ep->forked && !c->child && ep->nchild < 4)
			w[i] = 4;
		/* Threads: closing the fd under the others belongs to chaos episodes. */
		if (i == OP_CLOSE_REOPEN && ep->nthreads > 1 && !ep->chaos)
			w[i] = 0;
		total += w[i];
	}
	x = below(&c->r, total);
	for (int i = 0; i < OP_N; i++) {
		if (x < w[i])
			return i;
		x -= w[i];
	}
	return OP_REAP;
}

/* ---- devices --------------------------------------------------------------------- */

static int dev_open(struct ctx *c, struct dev *d)
{
	long t0 = now_ms();

	d->fd = open(d->path, O_RDWR | O_CLOEXEC);
	if (d->fd < 0) {
		fuzz_fail(c, "open %s: %s", d->path, strerror(errno));
		return -1;
	}
	d->tmax = 1000;		/* the module's default timeout_ms */
	d->features = 0;
	d->hdr_len = 10;
	d->nworkers = 0;
	for (int i = 0; i < VG_NVQS; i++) {
		d->vq[i].coherent = false;
		d->vq[i].num = 0;
	}
	oplog_add(&c->ep->log, "open %s -> fd %d (%ld ms)", d->path, d->fd, now_ms() - t0);
	return 0;
}

/* Closes the device within the bound, then checks what it returned on the way. */
static void dev_close(struct ctx *c, struct dev *d)
{
	long t0, dt;

	if (d->fd < 0)
		return;
	busy(c, "close");
	t0 = now_ms();
	close(d->fd);
	dt = now_ms() - t0;
	idle(c);
	oplog_add(&c->ep->log, "t%d close %s (%ld ms)", c->tid, d->path, dt);
	d->fd = -1;
	if (dt > reset_bound(d))
		fuzz_fail(c, "close of %s took %ld ms (bound %ld)", d->path, dt, reset_bound(d));
	reap_all_vqs(c, d);
	for (int i = 0; i < VG_NVQS; i++)
		d->vq[i].coherent = false;
}

static uint8_t *map_or_die(size_t size, int prot)
{
	uint8_t *p = mmap(NULL, size, prot, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);

	return p == MAP_FAILED ? NULL : p;
}

static int dev_init(struct ctx *c, struct dev *d, const char *path, int tap_fd)
{
	struct fuzz_case *fc = c->ep->fc;

	memset(d, 0, sizeof(*d));
	d->path = path;
	d->zc = strstr(path, "-zc") != NULL;
	d->fd = -1;
	d->tap_fd = tap_fd;
	d->mem = map_or_die(MEM_SIZE, PROT_READ | PROT_WRITE);
	d->extra = map_or_die(EXTRA_SIZE, PROT_READ | PROT_WRITE);
	d->log = map_or_die(LOG_SIZE, PROT_READ | PROT_WRITE);
	if (!d->mem || !d->extra || !d->log)
		return -1;
	d->data_cur = RING_AREA;
	d->efd = fc->efd;
	d->udp_fd = fc->udp;
	d->pkt_fd = fc->pkt;
	d->tap2_fd = fc->tap2;
	for (int i = 0; i < VG_NVQS; i++) {
		d->vq[i].kick = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
		d->vq[i].call = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
		d->vq[i].err = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
		d->vq[i].slot = 0;
	}
	return 0;
}

static void dev_fini(struct dev *d)
{
	munmap(d->mem, MEM_SIZE);
	if (d->extra_state != 2)
		munmap(d->extra, EXTRA_SIZE);
	munmap(d->log, LOG_SIZE);
	for (int i = 0; i < VG_NVQS; i++) {
		close(d->vq[i].kick);
		close(d->vq[i].call);
		close(d->vq[i].err);
	}
}

/* The episode's device opened and, usually, set up as a VMM does. */
static void ep_start_dev(struct ctx *c)
{
	struct episode *ep = c->ep;

	for (int i = 0; i < ep->ndev; i++)
		if (dev_open(c, &ep->dev[i]))
			return;
	if (ep->ndev == 1 && ep->dev[0].zc && chance(&c->r, 90)) {
		uint32_t ms = chance(&c->r, 85) ? 1 + below(&c->r, 5) : PICK(&c->r, 20, 100, 1000);

		tx_bound_update(&ep->dev[0], ms);
		xioctl(c, &ep->dev[0], "SET_TIMEOUT{open}", VHOST_NET_ZC_SET_TIMEOUT, &ms);
	}
	if (ep->clean || chance(&c->r, 85))
		full_setup(c);
}

static void wait_children(struct ctx *c);

static void count_stats(struct fuzz_case *fc, const struct vhost_net_zc_stats *s);

static void op_close_reopen(struct ctx *c, struct dev *d)
{
	struct vhost_net_zc_stats s;

	wait_children(c);
	if (chance(&c->r, 30))
		set_plug(c, false);
	if (d->fd >= 0 && ioctl(d->fd, VHOST_NET_ZC_GET_STATS, &s) == 0)
		count_stats(c->ep->fc, &s);
	dev_close(c, d);
	ep_start_dev(c);
	atomic_fetch_add(&c->ep->ops, 1);
}

/* ---- fork: a process that inherited the device, not its owner -------------------- */

static void op_fork(struct ctx *c)
{
	struct episode *ep = c->ep;
	uint64_t cseed = mix64(ep->seed ^ (0xf0f0ULL + ep->nchild));
	int pipefd[2];
	pid_t pid;
	char b;

	if (ep->nchild >= 4 || pipe2(pipefd, O_CLOEXEC))
		return;
	pid = fork();
	if (pid < 0) {
		close(pipefd[0]);
		close(pipefd[1]);
		return;
	}
	if (pid == 0) {
		struct ctx cc = { .ep = ep, .r = { cseed }, .tid = MAX_THREADS, .child = true,
				  .arg = c->arg };
		struct dev *d = &ep->dev[0];
		uint64_t v = 0;
		int n = 20 + below(&cc.r, 80), e;

		close(pipefd[0]);
		/*
		 * Another mm: never the owner. Whatever the parent is doing, these need an
		 * owner and the child is not one (or the device has none: EPERM too).
		 */
		e = ioctl(d->fd, VHOST_RESET_OWNER) < 0 ? errno : 0;
		if (e != EPERM)
			fuzz_fail(&cc, "child RESET_OWNER: %s, not EPERM", ename(e));
		e = ioctl(d->fd, VHOST_NET_ZC_VM_RESET, &(uint32_t){ 0 }) < 0 ? errno : 0;
		if (e != EPERM)
			fuzz_fail(&cc, "child VM_RESET: %s, not EPERM", ename(e));
		e = ioctl(d->fd, VHOST_SET_MEM_TABLE, &v) < 0 ? errno : 0;
		if (e != EPERM)
			fuzz_fail(&cc, "child SET_MEM_TABLE: %s, not EPERM", ename(e));
		if (write(pipefd[1], "x", 1) < 0)
			(void)0;
		close(pipefd[1]);
		for (int i = 0; i < n; i++) {
			enum op op = pick_op(&cc);

			if (chance(&cc.r, 2)) {
				/* Its copy of the fd closed: the rest answer EBADF. */
				close(d->fd);
				continue;
			}
			switch (op) {
			case OP_TX:
				op_tx(&cc, d, false);
				break;
			case OP_TX_BAD:
				op_tx(&cc, d, true);
				break;
			case OP_RX:
				op_rx(&cc, d, false);
				break;
			case OP_RX_BAD:
				op_rx(&cc, d, true);
				break;
			case OP_REAP:	/* its copy of the rings: nothing comes back there */
				break;
			case OP_KICK:
				kick(d, below(&cc.r, 2));
				break;
			case OP_TIMEOUT: case OP_RECLAIM: case OP_VM_RESET: case OP_STATS:
				op_zc(&cc, d, op);
				break;
			case OP_SETUP:
			case OP_SETUP_VQ:
				break;
			default:
				op_ioctl(&cc, op);
				break;
			}
		}
		_exit(cc.child_failures > 100 ? 100 : cc.child_failures);
	}
	close(pipefd[1]);
	/* The child's first checks run while the parent waits: the owner is known then. */
	if (read(pipefd[0], &b, 1) < 0)
		(void)0;
	close(pipefd[0]);
	ep->child[ep->nchild++] = pid;
	atomic_fetch_add(&ep->fc->children, 1);
	oplog_add(&ep->log, "fork child %d (seed %#" PRIx64 ")", pid, cseed);
	atomic_fetch_add(&ep->ops, 1);
}

static void wait_children(struct ctx *c)
{
	struct episode *ep = c->ep;

	for (int i = 0; i < ep->nchild; i++) {
		long end = now_ms() + 30000;
		int status = 0;
		pid_t r;

		while ((r = waitpid(ep->child[i], &status, WNOHANG)) == 0 && now_ms() < end)
			poll(NULL, 0, 5);
		if (r == 0) {
			fuzz_fail(c, "forked child %d did not exit within 30 s (state %c)",
				  ep->child[i], task_state(ep->child[i]));
			kill(ep->child[i], SIGKILL);
			waitpid(ep->child[i], &status, 0);
		} else if (!WIFEXITED(status) || WEXITSTATUS(status)) {
			fuzz_fail(c, "forked child %d: %s %d", ep->child[i],
				  WIFEXITED(status) ? "failures" : "signal",
				  WIFEXITED(status) ? WEXITSTATUS(status) : WTERMSIG(status));
		}
	}
	ep->nchild = 0;
}

/* ---- episodes -------------------------------------------------------------------- */

static uint64_t episode_seed(struct fuzz_case *fc, long i)
{
	return mix64(mix64(fc->seed ^ ((uint64_t)fc->id << 56)) + (uint64_t)i * 0x9e3779b97f4a7c15ULL);
}

struct thread_arg {
	struct ctx c;
	long n;
	pthread_t th;
};

static void *thread_loop(void *p)
{
	struct thread_arg *t = p;

	for (long i = 0; i < t->n; i++)
		run_op(&t->c, pick_op(&t->c));
	return NULL;
}

/* The chain the device stopped at: what a clean episode's failure is about. */
static void dump_chain(struct dev *d, int vq, uint16_t at)
{
	struct vq_shadow *q = &d->vq[vq];
	uint16_t head = q->avail->ring[at % q->num], i = head;

	fprintf(stderr, "# features %#" PRIx64 ", header %u; chain at avail %u: head %u\n",
		d->features, d->hdr_len, at, head);
	for (int k = 0; k < 64 && i < q->num; k++) {
		struct vring_desc *e = &q->desc[i];

		fprintf(stderr, "#   desc %u: addr %#llx len %u flags %#x next %u\n", i,
			(unsigned long long)e->addr, e->len, e->flags, e->next);
		if (e->flags & VRING_DESC_F_INDIRECT) {
			uint64_t off = e->addr - VG_GPA_BASE;
			struct vring_desc *t = (void *)(d->mem + off);

			for (unsigned int j = 0; off < MEM_SIZE && j < e->len / 16 && j < 40; j++)
				fprintf(stderr, "#     indirect %u: addr %#llx len %u flags %#x next %u\n",
					j, (unsigned long long)t[j].addr, t[j].len, t[j].flags,
					t[j].next);
		}
		if (!(e->flags & VRING_DESC_F_NEXT))
			break;
		i = e->next;
	}
}

static void count_stats(struct fuzz_case *fc, const struct vhost_net_zc_stats *s)
{
	atomic_fetch_add(&fc->sent_zc, s->sent_zerocopy);
	atomic_fetch_add(&fc->sent_copy, s->sent_copy);
	atomic_fetch_add(&fc->expired, s->expired);
	atomic_fetch_add(&fc->offlined, s->offlined);
	atomic_fetch_add(&fc->abandoned, s->abandoned);
}

static bool in_flight_drained(struct ctx *c, struct dev *d, struct vhost_net_zc_stats *s)
{
	memset(s, 0, sizeof(*s));
	return ioctl(d->fd, VHOST_NET_ZC_GET_STATS, s) == 0 && s->in_flight == 0 &&
	       s->held_pages == 0;
}

/*
 * The end of an episode: the plug released (or not yet: a close under stall is the
 * product's promise), the heads of a clean episode all back, the device's buffers all
 * released, and the device closed within the bound.
 */
static void ep_end(struct ctx *c)
{
	struct episode *ep = c->ep;
	struct dev *d = &ep->dev[0];
	struct vhost_net_zc_stats s;
	bool release_first = ep->clean || chance(&c->r, 50);

	wait_children(c);
	if (d->zc && ep->ndev == 1 && d->fd >= 0 && release_first) {
		long end;

		set_plug(c, false);
		if (ep->clean) {
			/* Every TX head comes back, zero-copy or copied, once the plug is open. */
			pthread_mutex_lock(&ep->lock);
			set_backend(c, VG_TX, 0);
			kick(d, VG_TX);
			end = now_ms() + 10000;
			while (d->vq[VG_TX].coherent && d->vq[VG_TX].n_out && now_ms() < end) {
				reap_vq(c, d, VG_TX);
				poll(NULL, 0, 5);
				kick(d, VG_TX);
			}
			reap_all_vqs(c, d);
			if (d->vq[VG_TX].coherent && d->vq[VG_TX].n_out) {
				struct vhost_vring_state b = { VG_TX, 0 };

				memset(&s, 0, sizeof(s));
				ioctl(d->fd, VHOST_NET_ZC_GET_STATS, &s);
				ioctl(d->fd, VHOST_GET_VRING_BASE, &b);
				fuzz_fail(c, "clean episode: %u TX heads never returned (ring %u, avail %u, used %u, device last_avail %u, TX errors signalled %lu; sent_zerocopy %llu sent_copy %llu in_flight %llu expired %llu offlined %llu)",
					  d->vq[VG_TX].n_out, d->vq[VG_TX].num,
					  d->vq[VG_TX].avail_idx, d->vq[VG_TX].last_used, b.num,
					  d->vq[VG_TX].errors, s.sent_zerocopy, s.sent_copy,
					  s.in_flight, s.expired, s.offlined);
				dump_chain(d, VG_TX, b.num);
			}
			pthread_mutex_unlock(&ep->lock);
		}
		end = now_ms() + 10000;
		while (!in_flight_drained(c, d, &s) && now_ms() < end)
			poll(NULL, 0, 10);
		if (!in_flight_drained(c, d, &s))
			fuzz_fail(c, "plug released: in_flight %llu, held_pages %llu after 10 s",
				  s.in_flight, s.held_pages);
	}
	if (d->zc && d->fd >= 0 && ioctl(d->fd, VHOST_NET_ZC_GET_STATS, &s) == 0)
		count_stats(ep->fc, &s);
	for (int i = 0; i < ep->ndev; i++)
		dev_close(c, &ep->dev[i]);
	if (!release_first)
		set_plug(c, false);
}

static void run_episode(struct fuzz_case *fc, long index, long budget, int nthreads, bool forked)
{
	struct episode *ep = calloc(1, sizeof(*ep));
	struct thread_arg *ta = calloc(MAX_THREADS, sizeof(*ta));
	struct ctx c = { .ep = ep, .tid = 0, .arg = fc->argbuf[0] };

	ep->fc = fc;
	ep->index = index;
	ep->seed = episode_seed(fc, index);
	c.r.s = ep->seed;
	{
		pthread_mutexattr_t a;

		pthread_mutexattr_init(&a);
		pthread_mutexattr_settype(&a, PTHREAD_MUTEX_RECURSIVE);
		pthread_mutex_init(&ep->lock, &a);
		pthread_mutexattr_destroy(&a);
	}
	pthread_mutex_init(&ep->log.lock, NULL);
	ep->diff = !fc->env;
	ep->ndev = ep->diff ? 2 : 1;
	ep->forked = forked;
	ep->nthreads = nthreads;
	ep->clean = !ep->diff && nthreads == 1 && !forked && chance(&c.r, 20);
	ep->chaos = nthreads > 1 && chance(&c.r, 30);
	oplog_add(&ep->log, "episode %ld seed %#" PRIx64 "%s%s", index, ep->seed,
		  ep->clean ? " clean" : "", ep->chaos ? " chaos" : "");
	if (ep->diff) {
		if (dev_init(&c, &ep->dev[0], "/dev/vhost-net", fc->tap_diff[0]) ||
		    dev_init(&c, &ep->dev[1], "/dev/vhost-net-zc", fc->tap_diff[1]))
			fuzz_fail(&c, "no memory for the episode");
	} else if (dev_init(&c, &ep->dev[0], "/dev/vhost-net-zc", fc->env->tap_fd)) {
		fuzz_fail(&c, "no memory for the episode");
	}
	if (!ep->diff && chance(&c.r, 80))
		set_plug(&c, true);
	current_ep = ep;
	ep_start_dev(&c);
	if (nthreads == 1) {
		while (atomic_load(&ep->ops) < budget)
			run_op(&c, pick_op(&c));
	} else {
		for (int t = 0; t < nthreads; t++) {
			ta[t].c = (struct ctx){ .ep = ep, .tid = t, .arg = fc->argbuf[t],
						.r = { mix64(ep->seed + t + 1) } };
			ta[t].n = budget / nthreads;
			pthread_create(&ta[t].th, NULL, thread_loop, &ta[t]);
		}
		for (int t = 0; t < nthreads; t++)
			pthread_join(ta[t].th, NULL);
	}
	ep_end(&c);
	for (int i = 0; i < ep->ndev; i++)
		dev_fini(&ep->dev[i]);
	current_ep = NULL;
	atomic_fetch_add(&fc->ops, atomic_load(&ep->ops));
	atomic_fetch_add(&fc->episodes, 1);
	free(ta);
	free(ep);
}

/* ---- cases ----------------------------------------------------------------------- */

static long env_long(const char *name, long def)
{
	const char *v = getenv(name);

	return v && *v ? strtol(v, NULL, 0) : def;
}

/* The reference count of the module: skbs in flight hold it. -1 if unknown. */
static long module_refcnt(void)
{
	FILE *f = fopen("/sys/module/vhost_net_zc/refcnt", "r");
	long v = -1;

	if (f) {
		if (fscanf(f, "%ld", &v) != 1)
			v = -1;
		fclose(f);
	}
	return v;
}

static void run_case(struct __test_metadata *_metadata, struct zc_env *env, const char *name,
		     unsigned int id, int nthreads, bool forked)
{
	struct fuzz_case *fc = calloc(1, sizeof(*fc));
	long t0 = now_ms(), dt, refcnt0 = module_refcnt();

	ASSERT_NE(NULL, fc);
	fc->md = _metadata;
	fc->name = name;
	fc->id = id;
	fc->env = env;
	fc->nl = -1;
	fc->seed = getenv("VNZC_FUZZ_SEED") && *getenv("VNZC_FUZZ_SEED") ?
		   strtoull(getenv("VNZC_FUZZ_SEED"), NULL, 0) : DEFAULT_SEED;
	fc->ops_target = env_long("VNZC_FUZZ_OPS", DEFAULT_OPS);
	fc->seconds = env_long("VNZC_FUZZ_SECONDS", 0);
	fc->only_episode = env_long("VNZC_FUZZ_EPISODE", -1);
	pthread_mutex_init(&fc->nl_lock, NULL);
	for (int i = 0; i <= MAX_THREADS; i++) {
		fc->argbuf[i] = map_or_die(2 * PAGE, PROT_READ | PROT_WRITE);
		ASSERT_NE(NULL, fc->argbuf[i]);
		ASSERT_EQ(0, mprotect(fc->argbuf[i] + PAGE, PAGE, PROT_NONE));
	}
	fc->ro = map_or_die(PAGE, PROT_READ | PROT_WRITE);
	ASSERT_NE(NULL, fc->ro);
	memset(fc->ro, 0x5a, PAGE);
	ASSERT_EQ(0, mprotect(fc->ro, PAGE, PROT_READ));
	/*
	 * A packet socket of protocol 0 receives nothing: one of ETH_P_ALL would copy
	 * every frame, which stops zero copy.
	 */
	fc->pkt = socket(AF_PACKET, SOCK_RAW | SOCK_CLOEXEC, 0);
	fc->udp = socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
	fc->efd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
	fc->tap2 = vg_tap_attach(NULL);
	fc->tap_diff[0] = env ? -1 : vg_tap_attach(NULL);
	fc->tap_diff[1] = env ? -1 : vg_tap_attach(NULL);
	ASSERT_LE(0, fc->pkt);
	ASSERT_LE(0, fc->udp);
	ASSERT_LE(0, fc->efd);
	ASSERT_LE(0, fc->tap2);
	if (!env) {
		ASSERT_LE(0, fc->tap_diff[0]);
		ASSERT_LE(0, fc->tap_diff[1]);
	}
	if (env) {
		struct sockaddr_nl sa = { .nl_family = AF_NETLINK };

		fc->plug_ifindex = if_nametoindex("vnzcd0");
		fc->tap_ifindex = if_nametoindex(env->tap);
		fc->nl = socket(AF_NETLINK, SOCK_RAW | SOCK_CLOEXEC, NETLINK_ROUTE);
		ASSERT_LE(0, fc->nl);
		ASSERT_EQ(0, bind(fc->nl, (struct sockaddr *)&sa, sizeof(sa)));
		ASSERT_EQ(0, plug_nl(fc->nl, fc->plug_ifindex, TCQ_PLUG_BUFFER))
			TH_LOG("rtnetlink plug control failed");
	}
	ASSERT_EQ(0, pthread_create(&fc->watchdog, NULL, watchdog_loop, fc));
	if (true) {
		struct sigaction sa = { .sa_sigaction = crash_handler,
					.sa_flags = SA_SIGINFO | SA_ONSTACK };
		static uint8_t altstack[64 << 10];
		stack_t ss = { .ss_sp = altstack, .ss_size = sizeof(altstack) };

		sigaltstack(&ss, NULL);
		sigaction(SIGSEGV, &sa, NULL);
		sigaction(SIGBUS, &sa, NULL);
	}
	TH_LOG("%s: VNZC_FUZZ_SEED=0x%" PRIx64 ", %s %ld", name, fc->seed,
	       fc->seconds ? "seconds" : "operations", fc->seconds ? fc->seconds : fc->ops_target);
	for (long i = 0; ; i++) {
		struct rng r = { episode_seed(fc, i) ^ 0x55 };
		long budget = 50 + below(&r, 350);

		if (fc->only_episode >= 0) {
			if (i < fc->only_episode)
				continue;
			if (i > fc->only_episode)
				break;
		} else if (fc->seconds ? now_ms() - t0 >= fc->seconds * 1000 :
			   atomic_load(&fc->ops) >= fc->ops_target) {
			break;
		}
		run_episode(fc, i, budget, nthreads, forked);
	}
	atomic_store(&fc->stop, true);
	pthread_join(fc->watchdog, NULL);
	if (fc->nl >= 0) {
		plug_nl(fc->nl, fc->plug_ifindex, TCQ_PLUG_RELEASE_INDEFINITE);
		close(fc->nl);
	}
	/* No skb of ours left anywhere: the module's reference count is back. */
	if (refcnt0 >= 0) {
		long end = now_ms() + 10000, rc;

		while ((rc = module_refcnt()) > refcnt0 && now_ms() < end)
			poll(NULL, 0, 20);
		EXPECT_EQ(refcnt0, rc) TH_LOG("module reference count %ld, was %ld: skbs of closed devices still in flight [seed 0x%" PRIx64 "]",
					      rc, refcnt0, fc->seed);
	}
	dt = now_ms() - t0;
	TH_LOG("%s: %ld used heads checked; last devices' counters: %ld sent zero-copy, %ld copied, %ld expired, %ld offlined, %ld abandoned; %ld forked children",
	       name, atomic_load(&fc->heads_checked), atomic_load(&fc->sent_zc),
	       atomic_load(&fc->sent_copy), atomic_load(&fc->expired), atomic_load(&fc->offlined),
	       atomic_load(&fc->abandoned), atomic_load(&fc->children));
	for (int i = 0; i < fc->ndiffs; i++)
		TH_LOG("errno difference stock vs zc: %s", fc->diffs[i]);
	TH_LOG("%s: %ld operations in %ld episodes, %.1f s, %.0f ops/s, %ld failures%s, VNZC_FUZZ_SEED=0x%" PRIx64,
	       name, atomic_load(&fc->ops), atomic_load(&fc->episodes), dt / 1000.0,
	       dt ? atomic_load(&fc->ops) * 1000.0 / dt : 0.0, atomic_load(&fc->failures),
	       fc->mismatches ? " (differential mismatches included)" : "", fc->seed);
	close(fc->pkt);
	close(fc->udp);
	close(fc->efd);
	close(fc->tap2);
	for (int i = 0; i < 2; i++)
		if (fc->tap_diff[i] >= 0)
			close(fc->tap_diff[i]);
	for (int i = 0; i <= MAX_THREADS; i++)
		munmap(fc->argbuf[i], 2 * PAGE);
	munmap(fc->ro, PAGE);
	free(fc);
}

FIXTURE(fuzz) {
	struct zc_env e;
	bool bridge;
};

FIXTURE_SETUP(fuzz)
{
	/* Sockets of packets copied by the captures would stop zero copy: none here. */
	self->bridge = !strstr(_metadata->name, "differential");
	if (!self->bridge)
		return;
	env_setup(_metadata, &self->e, 1ULL << VIRTIO_F_VERSION_1);
	/* The fixture's own device: closed, the fuzzer opens its own. */
	vg_close(&self->e.g);
	close(self->e.cap_held);
	close(self->e.cap_free);
	self->e.cap_held = self->e.cap_free = -1;
}

FIXTURE_TEARDOWN(fuzz)
{
	if (self->bridge)
		env_teardown(_metadata, &self->e);
}

/* The harness's timeout is fixed when built: make fuzz's runs are bounded by SECONDS. */
#define CASE_TIMEOUT	(30 * 24 * 3600)

TEST_F_TIMEOUT(fuzz, zc_single_thread, CASE_TIMEOUT)
{
	run_case(_metadata, &self->e, "zc_single_thread", 1, 1, false);
}

TEST_F_TIMEOUT(fuzz, zc_threads, CASE_TIMEOUT)
{
	run_case(_metadata, &self->e, "zc_threads", 2, 3, false);
}

TEST_F_TIMEOUT(fuzz, zc_fork, CASE_TIMEOUT)
{
	run_case(_metadata, &self->e, "zc_fork", 3, 1, true);
}

TEST_F_TIMEOUT(fuzz, differential, CASE_TIMEOUT)
{
	run_case(_metadata, NULL, "differential", 4, 1, false);
}

TEST_HARNESS_MAIN
