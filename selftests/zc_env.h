/* SPDX-License-Identifier: GPL-2.0 */
/*
 * The bridge fixture of the zero-copy tests (vnzc_zerocopy, vnzc_offline): a tap in a
 * bridge whose two other ports are dummies; frames for 02:00:00:00:00:d0 leave through
 * vnzcd0, whose root qdisc is plug (it holds every skb until released), frames for ...:d1
 * through vnzcd1, which frees them at once. Packet sockets (ETH_P_ALL) on the dummies see
 * what leaves. Included once by each test program (static functions: each program uses
 * its own subset of them).
 */
#ifndef ZC_ENV_H
#define ZC_ENV_H

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>
#include <sys/ioctl.h>
#include <net/if.h>
#include <linux/if_ether.h>
#include <linux/if_packet.h>
#include <linux/netlink.h>
#include <linux/pkt_sched.h>
#include <linux/rtnetlink.h>

#include "kselftest_harness.h"
#include "vhost_guest.h"

#define TEST_ETHERTYPE	0x88b5
#define HDR_LEN		sizeof(struct virtio_net_hdr_mrg_rxbuf)
#define RING		256
#define ZC_LEN		1000	/* above the default copy_threshold (256) */

static const uint8_t mac_held[6] = { 0x02, 0, 0, 0, 0, 0xd0 };
static const uint8_t mac_free[6] = { 0x02, 0, 0, 0, 0, 0xd1 };
static const uint8_t mac_src[6] = { 0x02, 0, 0, 0, 0, 0x02 };

/* The bridge fixture and the device on it. */
struct zc_env {
	struct vg_guest g;
	char tap[IFNAMSIZ];
	int tap_fd;
	int cap_held;	/* ETH_P_ALL on vnzcd0 */
	int cap_free;	/* ETH_P_ALL on vnzcd1 */
	int mem_flags;	/* VG_MEM_*: the kind of guest memory */
	uint64_t features;	/* what env_setup() acknowledged */
};

static inline int capture(struct __test_metadata *_metadata, const char *ifname)
{
	struct sockaddr_ll sll = {
		.sll_family = AF_PACKET,
		.sll_protocol = htons(ETH_P_ALL),
	};
	int fd;

	sll.sll_ifindex = if_nametoindex(ifname);
	EXPECT_NE(0, sll.sll_ifindex);
	fd = socket(AF_PACKET, SOCK_RAW | SOCK_CLOEXEC | SOCK_NONBLOCK, htons(ETH_P_ALL));
	EXPECT_LE(0, fd);
	EXPECT_EQ(0, bind(fd, (struct sockaddr *)&sll, sizeof(sll)));
	return fd;
}

static inline long now_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static inline long now_us(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return ts.tv_sec * 1000000 + ts.tv_nsec / 1000;
}

/* The state letter of task @pid in /proc/<pid>/stat (R, S, D, Z...), or '?'. */
static inline char task_state(pid_t pid)
{
	char path[64], stat[256] = "", state = '?';
	FILE *fp;

	snprintf(path, sizeof(path), "/proc/%d/stat", pid);
	fp = fopen(path, "r");
	if (!fp)
		return state;
	if (fgets(stat, sizeof(stat), fp)) {
		char *p = strrchr(stat, ')');

		if (p && p[1] == ' ' && p[2])
			state = p[2];
	}
	fclose(fp);
	return state;
}

/* Whether bridge port @port forwards (STP is off, but a port starts out blocking). */
static inline bool forwarding(const char *port)
{
	char path[128], state[8] = "";
	FILE *f;

	snprintf(path, sizeof(path), "/sys/class/net/%s/brport/state", port);
	f = fopen(path, "r");
	if (!f)
		return false;
	if (!fgets(state, sizeof(state), f))
		state[0] = 0;
	fclose(f);
	return atoi(state) == 3;	/* BR_STATE_FORWARDING */
}

static inline void plug(bool on)
{
	if (system(on ? "tc qdisc change dev vnzcd0 root plug block" :
			"tc qdisc change dev vnzcd0 root plug release_indefinite"))
		fprintf(stderr, "# tc plug %s failed\n", on ? "block" : "release");
}

/*
 * Sets the plug qdisc of interface @ifindex to @action (TCQ_PLUG_*) over the rtnetlink
 * socket @nl: cheap enough to toggle in a loop, where tc costs a second a call under TCG.
 * Returns 0 or -errno.
 */
static inline int plug_nl(int nl, int ifindex, int action)
{
	struct {
		struct nlmsghdr n;
		struct tcmsg t;
		char attrs[64];
	} req = {
		.n.nlmsg_len = NLMSG_LENGTH(sizeof(struct tcmsg)),
		.n.nlmsg_type = RTM_NEWQDISC,
		.n.nlmsg_flags = NLM_F_REQUEST | NLM_F_ACK,
		.t.tcm_family = AF_UNSPEC,
		.t.tcm_ifindex = ifindex,
		.t.tcm_parent = TC_H_ROOT,
	};
	struct tc_plug_qopt opt = { .action = action };
	struct rtattr *rta;
	char ack[256];

	rta = (struct rtattr *)((char *)&req + NLMSG_ALIGN(req.n.nlmsg_len));
	rta->rta_type = TCA_KIND;
	rta->rta_len = RTA_LENGTH(5);
	memcpy(RTA_DATA(rta), "plug", 5);
	req.n.nlmsg_len = NLMSG_ALIGN(req.n.nlmsg_len) + RTA_ALIGN(rta->rta_len);
	rta = (struct rtattr *)((char *)&req + NLMSG_ALIGN(req.n.nlmsg_len));
	rta->rta_type = TCA_OPTIONS;
	rta->rta_len = RTA_LENGTH(sizeof(opt));
	memcpy(RTA_DATA(rta), &opt, sizeof(opt));
	req.n.nlmsg_len = NLMSG_ALIGN(req.n.nlmsg_len) + RTA_ALIGN(rta->rta_len);
	if (send(nl, &req, req.n.nlmsg_len, 0) < 0)
		return -errno;
	if (recv(nl, ack, sizeof(ack), 0) < 0)
		return -errno;
	if (((struct nlmsghdr *)ack)->nlmsg_type == NLMSG_ERROR)
		return ((struct nlmsgerr *)NLMSG_DATA((struct nlmsghdr *)ack))->error;
	return 0;
}

/* Builds the fixture and opens @dev on it, TX backend the tap; @dev NULL: /dev/vhost-net-zc. */
static inline void env_setup_dev(struct __test_metadata *_metadata, struct zc_env *env, const char *dev,
			  uint64_t features)
{
	char cmd[1024];
	int r;

	env->cap_held = env->cap_free = -1;
	env->tap_fd = vg_tap_open(env->tap, sizeof(env->tap));
	ASSERT_LE(0, env->tap_fd) TH_LOG("tap: %s", strerror(-env->tap_fd));
	snprintf(cmd, sizeof(cmd),
		 "ip link del vnzcbr 2>/dev/null; ip link del vnzcd0 2>/dev/null; "
		 "ip link del vnzcd1 2>/dev/null; "
		 "ip link add vnzcbr type bridge && "
		 "ip link add vnzcd0 type dummy && ip link add vnzcd1 type dummy && "
		 "tc qdisc add dev vnzcd0 root plug limit 100000000 && "
		 "ip link set vnzcd0 master vnzcbr && ip link set vnzcd1 master vnzcbr && "
		 "ip link set %s master vnzcbr && "
		 "ip link set vnzcd0 up && ip link set vnzcd1 up && ip link set vnzcbr up && "
		 "ip link set %s up && "
		 "bridge fdb add 02:00:00:00:00:d0 dev vnzcd0 master static && "
		 "bridge fdb add 02:00:00:00:00:d1 dev vnzcd1 master static",
		 env->tap, env->tap);
	ASSERT_EQ(0, system(cmd)) TH_LOG("could not build the bridge fixture");
	env->cap_held = capture(_metadata, "vnzcd0");
	env->cap_free = capture(_metadata, "vnzcd1");
	/* Frames sent before the ports forward would be dropped by the bridge. */
	for (long end = now_ms() + 10000; now_ms() < end; usleep(20 * 1000))
		if (forwarding(env->tap) && forwarding("vnzcd0") && forwarding("vnzcd1"))
			break;
	ASSERT_TRUE(forwarding(env->tap) && forwarding("vnzcd0") && forwarding("vnzcd1"))
		TH_LOG("bridge ports not forwarding after 10 s");

	r = vg_open_mem(&env->g, dev ? dev : "/dev/vhost-net-zc",
			env->mem_flags & (VG_MEM_HUGETLB | VG_MEM_THP) ? 4 << 20 : 1 << 20,
			env->mem_flags);
	ASSERT_EQ(0, r) TH_LOG("guest memory: %s", strerror(-r));
	env->features = features;
	r = vg_setup(&env->g, features, RING);
	ASSERT_EQ(0, r) TH_LOG("setup: %s", strerror(-r));
	r = vg_set_backend(&env->g, VG_TX, env->tap_fd);
	ASSERT_EQ(0, r) TH_LOG("SET_BACKEND: %s", strerror(-r));
}

static inline void env_setup(struct __test_metadata *_metadata, struct zc_env *env,
			     uint64_t features)
{
	env_setup_dev(_metadata, env, NULL, features);
}

static inline void env_teardown(struct __test_metadata *_metadata, struct zc_env *env)
{
	/* Let held skbs go first, so closing the device does not wait for them. */
	plug(false);
	vg_close(&env->g);
	if (env->cap_held >= 0)
		close(env->cap_held);
	if (env->cap_free >= 0)
		close(env->cap_free);
	close(env->tap_fd);
	if (system("ip link del vnzcbr; ip link del vnzcd0; ip link del vnzcd1"))
		TH_LOG("could not remove the bridge fixture");
}

/* Posts a frame of @len bytes to @dst with a header descriptor; returns its head. */
static inline int post_frame(struct vg_guest *g, const uint8_t *dst, size_t len, unsigned int seed,
		      uint8_t **frame_out, bool indirect)
{
	uint8_t *hdr = vg_alloc(g, HDR_LEN, 8);
	uint8_t *frame = vg_alloc(g, len, 64);
	void *bufs[2] = { hdr, frame };
	uint32_t lens[2] = { HDR_LEN, len };

	if (!hdr || !frame)
		return -ENOMEM;
	memset(hdr, 0, HDR_LEN);
	memcpy(frame, dst, 6);
	memcpy(frame + 6, mac_src, 6);
	frame[12] = TEST_ETHERTYPE >> 8;
	frame[13] = TEST_ETHERTYPE & 0xff;
	for (size_t i = 14; i < len; i++)
		frame[i] = (uint8_t)(i * 13 + seed);
	if (frame_out)
		*frame_out = frame;
	if (indirect)
		return vg_post_indirect(g, VG_TX, bufs, lens, 2, false);
	return vg_post(g, VG_TX, bufs, lens, 2, false);
}

static inline int send_frame(struct vg_guest *g, const uint8_t *dst, size_t len, unsigned int seed,
		      uint8_t **frame_out)
{
	return post_frame(g, dst, len, seed, frame_out, false);
}

/* Reaps what is in the used ring, waiting up to @ms for the first entry; returns count. */
static inline int reap_all(struct vg_guest *g, uint32_t *ids, int max, int ms)
{
	uint32_t len;
	int n = 0;

	for (int waited = 0; n < max; ) {
		if (vg_reap(g, VG_TX, &ids[n], &len)) {
			n++;
			continue;
		}
		if (waited >= ms)
			break;
		vg_wait_call(g, VG_TX, 50);
		waited += 50;
	}
	return n;
}

/* Expects each of the @nheads heads @heads exactly once among the @n used ids @ids. */
static inline void expect_heads_once(struct __test_metadata *_metadata, const uint32_t *ids,
				     int n, const int *heads, int nheads)
{
	int seen[RING] = { 0 };

	for (int i = 0; i < n; i++) {
		ASSERT_GT((uint32_t)RING, ids[i]) TH_LOG("used id %u is no head", ids[i]);
		seen[ids[i]]++;
	}
	for (int i = 0; i < nheads; i++) {
		int h = heads[i];

		EXPECT_EQ(1, seen[h]) TH_LOG("head %d returned %d times", h, seen[h]);
	}
}

/*
 * Receives our next frame (by ethertype) from @fd into @buf within 5 s; returns its length
 * or -1. Timed with poll(), whose timeouts are hrtimers: socket timeouts count jiffies,
 * which lag far behind real time in an emulated VM.
 */
static inline ssize_t recv_ours(int fd, uint8_t *buf, size_t size)
{
	for (long end = now_ms() + 5000; now_ms() < end; ) {
		struct pollfd p = { .fd = fd, .events = POLLIN };
		ssize_t n;

		if (poll(&p, 1, 100) <= 0)
			continue;
		n = recv(fd, buf, size, 0);
		if (n >= 14 && buf[12] == (TEST_ETHERTYPE >> 8) && buf[13] == (TEST_ETHERTYPE & 0xff))
			return n;
	}
	return -1;
}

/* The next used entry, within @ms, is @head. */
static inline void expect_head(struct __test_metadata *_metadata, struct vg_guest *g, int head, int ms)
{
	uint32_t id;

	ASSERT_EQ(1, reap_all(g, &id, 1, ms)) TH_LOG("head %d not returned", head);
	EXPECT_EQ((uint32_t)head, id);
}

/* The next frame of ours leaving through @fd's port is @frame, byte for byte. */
static inline void expect_frame(struct __test_metadata *_metadata, int fd, const uint8_t *frame,
			 size_t len)
{
	uint8_t got[2048];

	ASSERT_EQ((ssize_t)len, recv_ours(fd, got, sizeof(got)));
	EXPECT_EQ(0, memcmp(got, frame, len));
}

/* Writes @text to the file @path (a sysfs or debugfs knob): 0 or -errno. */
static inline int write_text(const char *path, const char *text)
{
	int fd = open(path, O_WRONLY | O_CLOEXEC), r;

	if (fd < 0)
		return -errno;
	r = write(fd, text, strlen(text)) == (ssize_t)strlen(text) ? 0 : -errno;
	close(fd);
	return r;
}

#ifdef VHOST_NET_ZC_GET_STATS
/* The counters up to reclaim: the first version of the struct (older modules). */
#define ZC_GET_STATS_V1 _IOC(_IOC_READ, VHOST_NET_ZC_IOC_TYPE, 0x04, \
			     offsetof(struct vhost_net_zc_stats, offline_pinned))

/* The device's counters (of an older module, what it has): 0 or -errno. */
static inline int zc_stats(const struct vg_guest *g, struct vhost_net_zc_stats *s)
{
	memset(s, 0, sizeof(*s));
	if (ioctl(g->fd, VHOST_NET_ZC_GET_STATS, s) == 0)
		return 0;
	if (errno == ENOTTY && ioctl(g->fd, ZC_GET_STATS_V1, s) == 0)
		return 0;
	return -errno;
}

/* One of the device's u32 settings (VHOST_NET_ZC_SET_*): 0 or -errno. */
static inline int zc_set(const struct vg_guest *g, unsigned long cmd, uint32_t v)
{
	return ioctl(g->fd, cmd, &v) ? -errno : 0;
}

/*
 * Waits up to @ms until @cond holds of the counters @s of @g; whether it did. Polls every
 * 200 us (about 650 us in the emulated test VM, where a sleep costs some 450 us more).
 */
#define ZC_WAIT_FOR(g, s, cond, ms) ({						\
	bool __ok = false;							\
	for (long __end = now_ms() + (ms); ; usleep(200)) {			\
		if (zc_stats(g, &(s)) == 0 && (cond)) {				\
			__ok = true;						\
			break;							\
		}								\
		if (now_ms() > __end)						\
			break;							\
	}									\
	__ok;									\
})
#endif

#ifdef VHOST_NET_ZC_SET_TIMEOUT
/*
 * A VMM child for the kill tests: opens the device, sets it up on @tap_fd with a @timeout_ms
 * deadline and sends @n frames into the plugged port. Returns 0 or -1.
 */
static inline int child_vmm(struct vg_guest *g, int tap_fd, uint32_t timeout_ms, int n)
{
	if (vg_open(g, "/dev/vhost-net-zc", 1 << 20) ||
	    vg_setup(g, 1ULL << VIRTIO_F_VERSION_1, RING) ||
	    ioctl(g->fd, VHOST_NET_ZC_SET_TIMEOUT, &timeout_ms) ||
	    vg_set_backend(g, VG_TX, tap_fd))
		return -1;
	for (int i = 0; i < n; i++)
		if (send_frame(g, mac_held, ZC_LEN, i, NULL) < 0)
			return -1;
	return 0;
}
#endif

#endif /* ZC_ENV_H */
