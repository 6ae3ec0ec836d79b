// SPDX-License-Identifier: GPL-2.0
/*
 * A userspace guest for vhost-net devices: see vhost_guest.h.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <glob.h>
#include <net/if.h>
#include <poll.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <unistd.h>
#include <linux/if_tun.h>
#include <linux/if_packet.h>
#include <arpa/inet.h>
#include <sys/time.h>

#include "vhost_guest.h"

static int vg_ioctl(int fd, unsigned long req, void *arg)
{
	return ioctl(fd, req, arg) < 0 ? -errno : 0;
}

int vg_open(struct vg_guest *g, const char *dev, size_t mem_size)
{
	return vg_open_mem(g, dev, mem_size, 0);
}

/* @mem_size bytes of anonymous memory aligned to 2 MiB, in transparent huge pages. */
static void *thp_memory(size_t mem_size)
{
	size_t huge = 2UL << 20;
	uint8_t *p = mmap(NULL, mem_size + huge, PROT_READ | PROT_WRITE,
			  MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	uint8_t *aligned;

	if (p == MAP_FAILED)
		return p;
	aligned = (uint8_t *)(((uintptr_t)p + huge - 1) & ~(huge - 1));
	if (aligned > p)
		munmap(p, aligned - p);
	munmap(aligned + mem_size, p + huge - aligned);
	madvise(aligned, mem_size, MADV_HUGEPAGE);
	/* Touch it: the faults allocate the huge pages. */
	memset(aligned, 0, mem_size);
	return aligned;
}

int vg_open_mem(struct vg_guest *g, const char *dev, size_t mem_size, int flags)
{
	bool shared = flags & VG_MEM_SHARED;
	int memfd = -1;

	memset(g, 0, sizeof(*g));
	for (int i = 0; i < VG_NVQS; i++)
		g->vq[i].kick_fd = g->vq[i].call_fd = g->vq[i].err_fd = -1;
	g->fd = open(dev, O_RDWR | O_CLOEXEC);
	if (g->fd < 0)
		return -errno;
	if (shared) {
		memfd = memfd_create("vg-guest-memory", MFD_CLOEXEC);
		if (memfd < 0 || ftruncate(memfd, mem_size) < 0) {
			int e = -errno;

			if (memfd >= 0)
				close(memfd);
			close(g->fd);
			g->fd = -1;
			return e;
		}
	}
	if (flags & VG_MEM_THP)
		g->mem = thp_memory(mem_size);
	else
		g->mem = mmap(NULL, mem_size, PROT_READ | PROT_WRITE,
			      shared ? MAP_SHARED : MAP_PRIVATE | MAP_ANONYMOUS |
			      (flags & VG_MEM_HUGETLB ? MAP_HUGETLB : 0), memfd, 0);
	if (memfd >= 0)
		close(memfd);
	if (g->mem == MAP_FAILED) {
		int e = -errno;

		close(g->fd);
		g->fd = -1;
		g->mem = NULL;
		return e;
	}
	g->mem_size = mem_size;
	return 0;
}

void vg_close(struct vg_guest *g)
{
	vg_iotlb_stop(g);
	for (int i = 0; i < VG_NVQS; i++) {
		if (g->vq[i].kick_fd >= 0)
			close(g->vq[i].kick_fd);
		if (g->vq[i].call_fd >= 0)
			close(g->vq[i].call_fd);
		if (g->vq[i].err_fd >= 0)
			close(g->vq[i].err_fd);
	}
	if (g->fd >= 0)
		close(g->fd);
	if (g->mem)
		munmap(g->mem, g->mem_size);
	memset(g, 0, sizeof(*g));
	g->fd = -1;
	for (int i = 0; i < VG_NVQS; i++)
		g->vq[i].kick_fd = g->vq[i].call_fd = g->vq[i].err_fd = -1;
}

void *vg_alloc(struct vg_guest *g, size_t size, size_t align)
{
	size_t off = (g->mem_used + align - 1) & ~(align - 1);

	if (off > g->mem_size || size > g->mem_size - off)
		return NULL;
	g->mem_used = off + size;
	return g->mem + off;
}

uint64_t vg_gpa(const struct vg_guest *g, const void *hva)
{
	return (g->iotlb ? VG_IOVA_BASE : VG_GPA_BASE) + (uint64_t)((const uint8_t *)hva - g->mem);
}

uint64_t vg_ring_addr(const struct vg_guest *g, const void *hva)
{
	return g->iotlb ? vg_gpa(g, hva) : (uint64_t)(uintptr_t)hva;
}

uint64_t vg_phys(const struct vg_guest *g, const void *hva)
{
	return VG_GPA_BASE + (uint64_t)((const uint8_t *)hva - g->mem);
}

bool vg_logged(const uint8_t *bitmap, uint64_t gpa)
{
	uint64_t page = gpa / 4096;

	return bitmap[page / 8] & (1 << (page % 8));
}

int vg_get_features(struct vg_guest *g, uint64_t *features)
{
	return vg_ioctl(g->fd, VHOST_GET_FEATURES, features);
}

int vg_set_owner(struct vg_guest *g)
{
	return vg_ioctl(g->fd, VHOST_SET_OWNER, NULL);
}

int vg_set_features(struct vg_guest *g, uint64_t features)
{
	int r = vg_ioctl(g->fd, VHOST_SET_FEATURES, &features);

	if (!r)
		g->iotlb = features & (1ULL << VIRTIO_F_ACCESS_PLATFORM);
	return r;
}

int vg_set_features_array(struct vg_guest *g, const uint64_t *words, unsigned int n)
{
	uint64_t arg[1 + VG_FEATURE_WORDS] = { n };
	int r;

	if (n > VG_FEATURE_WORDS)
		return -EINVAL;
	memcpy(&arg[1], words, n * sizeof(*words));
	r = vg_ioctl(g->fd, VHOST_SET_FEATURES_ARRAY, arg);
	if (!r)
		g->iotlb = n && (words[0] & (1ULL << VIRTIO_F_ACCESS_PLATFORM));
	return r;
}

int vg_set_mem_table(struct vg_guest *g)
{
	struct {
		struct vhost_memory hdr;
		struct vhost_memory_region region;
	} m;

	memset(&m, 0, sizeof(m));
	m.hdr.nregions = 1;
	m.region.guest_phys_addr = VG_GPA_BASE;
	m.region.memory_size = g->mem_size;
	m.region.userspace_addr = (uint64_t)(uintptr_t)g->mem;
	return vg_ioctl(g->fd, VHOST_SET_MEM_TABLE, &m);
}

int vg_setup_vq(struct vg_guest *g, unsigned int idx, unsigned int num)
{
	struct vg_vq *vq = &g->vq[idx];
	struct vhost_vring_state state = { .index = idx };
	struct vhost_vring_addr addr = { .index = idx };
	struct vhost_vring_file file = { .index = idx };
	int r;

	vq->num = num;
	vq->desc = vg_alloc(g, sizeof(*vq->desc) * num, 16);
	vq->avail = vg_alloc(g, sizeof(*vq->avail) + sizeof(uint16_t) * (num + 1), 2);
	vq->used = vg_alloc(g, sizeof(*vq->used) + sizeof(struct vring_used_elem) * num +
				sizeof(uint16_t), 4);
	if (!vq->desc || !vq->avail || !vq->used)
		return -ENOMEM;

	state.num = num;
	r = vg_ioctl(g->fd, VHOST_SET_VRING_NUM, &state);
	if (r)
		return r;
	state.num = 0;
	r = vg_ioctl(g->fd, VHOST_SET_VRING_BASE, &state);
	if (r)
		return r;
	/* The vring addresses are the VMM's virtual addresses, or IOVAs with an IOTLB. */
	addr.desc_user_addr = vg_ring_addr(g, vq->desc);
	addr.avail_user_addr = vg_ring_addr(g, vq->avail);
	addr.used_user_addr = vg_ring_addr(g, vq->used);
	r = vg_ioctl(g->fd, VHOST_SET_VRING_ADDR, &addr);
	if (r)
		return r;

	vq->kick_fd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
	vq->call_fd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
	vq->err_fd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
	if (vq->kick_fd < 0 || vq->call_fd < 0 || vq->err_fd < 0)
		return -errno;
	file.fd = vq->kick_fd;
	r = vg_ioctl(g->fd, VHOST_SET_VRING_KICK, &file);
	if (r)
		return r;
	file.fd = vq->call_fd;
	r = vg_ioctl(g->fd, VHOST_SET_VRING_CALL, &file);
	if (r)
		return r;
	file.fd = vq->err_fd;
	r = vg_ioctl(g->fd, VHOST_SET_VRING_ERR, &file);
	if (r || !g->iotlb)
		return r;
	/*
	 * Attaching a backend writes the used ring's flags, from the ioctl, which cannot wait
	 * for a miss to be answered: like QEMU, map the used ring before.
	 */
	return vg_iotlb_map(g, vq->used, sizeof(*vq->used) + sizeof(struct vring_used_elem) * num +
				sizeof(uint16_t));
}

int vg_iotlb_map(struct vg_guest *g, const void *hva, size_t len)
{
	uint64_t start = vg_gpa(g, hva) & ~4095ULL, end = vg_gpa(g, hva) + len;

	return vg_iotlb_msg(g, VHOST_IOTLB_UPDATE, start, end - start,
			    g->mem + (start - VG_IOVA_BASE), VHOST_ACCESS_RW);
}

int vg_reset_vq(struct vg_guest *g, unsigned int idx)
{
	struct vg_vq *vq = &g->vq[idx];
	struct vhost_vring_state state = { .index = idx };
	int r = vg_ioctl(g->fd, VHOST_GET_VRING_BASE, &state);

	if (r)
		return r;
	close(vq->kick_fd);
	close(vq->call_fd);
	close(vq->err_fd);
	vq->kick_fd = vq->call_fd = vq->err_fd = -1;
	vq->avail_idx = vq->last_used = vq->next_desc = 0;
	return vg_setup_vq(g, idx, vq->num);
}

int vg_set_backend(struct vg_guest *g, unsigned int idx, int fd)
{
	struct vhost_vring_file file = { .index = idx, .fd = fd };

	return vg_ioctl(g->fd, VHOST_NET_SET_BACKEND, &file);
}

int vg_setup(struct vg_guest *g, uint64_t features, unsigned int num)
{
	uint64_t backend = 1ULL << VHOST_BACKEND_F_IOTLB_MSG_V2;
	int r = vg_set_owner(g);

	if (!r && (features & (1ULL << VIRTIO_F_ACCESS_PLATFORM)) && !g->iotlb_v1)
		r = vg_ioctl(g->fd, VHOST_SET_BACKEND_FEATURES, &backend);
	if (!r)
		r = vg_set_features(g, features);
	if (!r)
		r = vg_set_mem_table(g);
	for (unsigned int i = 0; !r && i < VG_NVQS; i++)
		r = vg_setup_vq(g, i, num);
	return r;
}

int vg_post(struct vg_guest *g, unsigned int idx, void *const *bufs, const uint32_t *lens,
	    unsigned int n, bool writable)
{
	struct vg_vq *vq = &g->vq[idx];
	uint16_t head = vq->next_desc % vq->num;
	int r;

	if (n == 0 || n > vq->num)
		return -EINVAL;
	for (unsigned int i = 0; i < n; i++) {
		uint16_t d = (head + i) % vq->num;

		vq->desc[d].addr = vg_gpa(g, bufs[i]);
		vq->desc[d].len = lens[i];
		vq->desc[d].flags = (writable ? VRING_DESC_F_WRITE : 0) |
				    (i + 1 < n ? VRING_DESC_F_NEXT : 0);
		vq->desc[d].next = (d + 1) % vq->num;
	}
	vq->next_desc = (head + n) % vq->num;
	r = vg_publish(g, idx, head);
	return r ? r : head;
}

/*
 * As vg_post(), but through one descriptor pointing at an indirect table of @n entries
 * (VIRTIO_RING_F_INDIRECT_DESC), allocated in guest memory.
 */
int vg_post_indirect(struct vg_guest *g, unsigned int idx, void *const *bufs,
		     const uint32_t *lens, unsigned int n, bool writable)
{
	struct vg_vq *vq = &g->vq[idx];
	struct vring_desc *table = vg_alloc(g, sizeof(*table) * n, 16);
	uint16_t head = vq->next_desc % vq->num;
	int r;

	if (!table || n == 0)
		return -ENOMEM;
	for (unsigned int i = 0; i < n; i++) {
		table[i].addr = vg_gpa(g, bufs[i]);
		table[i].len = lens[i];
		table[i].flags = (writable ? VRING_DESC_F_WRITE : 0) |
				 (i + 1 < n ? VRING_DESC_F_NEXT : 0);
		table[i].next = i + 1;
	}
	vq->desc[head].addr = vg_gpa(g, table);
	vq->desc[head].len = sizeof(*table) * n;
	vq->desc[head].flags = VRING_DESC_F_INDIRECT;
	vq->desc[head].next = 0;
	vq->next_desc = (head + 1) % vq->num;
	r = vg_publish(g, idx, head);
	return r ? r : head;
}

int vg_reap(struct vg_guest *g, unsigned int idx, uint32_t *id, uint32_t *len)
{
	struct vg_vq *vq = &g->vq[idx];
	uint16_t used_idx = __atomic_load_n(&vq->used->idx, __ATOMIC_ACQUIRE);
	struct vring_used_elem *e;

	if (used_idx == vq->last_used)
		return 0;
	e = &vq->used->ring[vq->last_used % vq->num];
	*id = e->id;
	*len = e->len;
	vq->last_used++;
	/* used_event (VIRTIO_RING_F_EVENT_IDX): interrupt us for the next entry. */
	__atomic_store_n(&vq->avail->ring[vq->num], vq->last_used, __ATOMIC_RELEASE);
	return 1;
}

int vg_reap_in_order(struct vg_guest *g, unsigned int idx, const int *posted, int n, int *next,
		     int want, uint32_t *len, int timeout_ms)
{
	struct vg_vq *vq = &g->vq[idx];
	int got = 0;

	for (int waited = 0;;) {
		uint16_t used_idx = __atomic_load_n(&vq->used->idx, __ATOMIC_ACQUIRE);

		while (vq->last_used != used_idx) {
			struct vring_used_elem *e = &vq->used->ring[vq->last_used % vq->num];
			int p = *next;

			while (p < n && (uint32_t)posted[p] != e->id)
				p++;
			if (p == n)
				return -EPROTO;
			if (len)
				*len = e->len;
			vq->last_used += p - *next + 1;
			got += p - *next + 1;
			*next = p + 1;
		}
		__atomic_store_n(&vq->avail->ring[vq->num], vq->last_used, __ATOMIC_RELEASE);
		if (*next >= want || waited >= timeout_ms)
			return got;
		if (vg_wait_call(g, idx, 50) < 0)
			return got;
		waited += 50;
	}
}

static int wait_fd(int fd, int timeout_ms)
{
	struct pollfd p = { .fd = fd, .events = POLLIN };
	uint64_t v;
	int r = poll(&p, 1, timeout_ms);

	if (r < 0)
		return -errno;
	if (r == 0)
		return 0;
	if (read(p.fd, &v, sizeof(v)) != sizeof(v))
		return -errno;
	return 1;
}

int vg_wait_call(struct vg_guest *g, unsigned int idx, int timeout_ms)
{
	return wait_fd(g->vq[idx].call_fd, timeout_ms);
}

int vg_wait_err(struct vg_guest *g, unsigned int idx, int timeout_ms)
{
	return wait_fd(g->vq[idx].err_fd, timeout_ms);
}

int vg_publish(struct vg_guest *g, unsigned int idx, uint16_t head)
{
	struct vg_vq *vq = &g->vq[idx];
	uint64_t one = 1;

	vq->avail->ring[vq->avail_idx % vq->num] = head;
	/* The ring entry must be visible before the index that publishes it. */
	atomic_thread_fence(memory_order_release);
	vq->avail->idx = ++vq->avail_idx;
	atomic_thread_fence(memory_order_seq_cst);
	if (write(vq->kick_fd, &one, sizeof(one)) != sizeof(one))
		return -errno;
	return 0;
}

int vg_tap_open(char *name, size_t name_len)
{
	int fd = vg_tap_attach(NULL);
	struct ifreq ifr;

	if (fd < 0)
		return fd;
	memset(&ifr, 0, sizeof(ifr));
	if (ioctl(fd, TUNGETIFF, &ifr) < 0) {
		int e = -errno;

		close(fd);
		return e;
	}
	snprintf(name, name_len, "%s", ifr.ifr_name);
	return fd;
}

int vg_tap_attach(const char *name)
{
	struct ifreq ifr;
	int fd = open("/dev/net/tun", O_RDWR | O_CLOEXEC);
	int hdr = sizeof(struct virtio_net_hdr_mrg_rxbuf);

	if (fd < 0)
		return -errno;
	memset(&ifr, 0, sizeof(ifr));
	if (name)
		snprintf(ifr.ifr_name, sizeof(ifr.ifr_name), "%s", name);
	ifr.ifr_flags = IFF_TAP | IFF_NO_PI | IFF_VNET_HDR;
	if (ioctl(fd, TUNSETIFF, &ifr) < 0 || ioctl(fd, TUNSETVNETHDRSZ, &hdr) < 0) {
		int e = -errno;

		close(fd);
		return e;
	}
	return fd;
}

int vg_link_up(const char *name)
{
	struct ifreq ifr;
	int s = socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
	int r = 0;

	if (s < 0)
		return -errno;
	memset(&ifr, 0, sizeof(ifr));
	snprintf(ifr.ifr_name, sizeof(ifr.ifr_name), "%s", name);
	if (ioctl(s, SIOCGIFFLAGS, &ifr) < 0)
		r = -errno;
	ifr.ifr_flags |= IFF_UP;
	if (!r && ioctl(s, SIOCSIFFLAGS, &ifr) < 0)
		r = -errno;
	close(s);
	return r;
}

long vg_zc_stat(const char *name)
{
	size_t n = strlen(name);
	char line[128];
	long value = -1;
	glob_t paths;
	FILE *f;

	if (glob("/sys/kernel/debug/vhost-net-zc/*-*/stats", 0, NULL, &paths))
		return -1;
	f = paths.gl_pathc == 1 ? fopen(paths.gl_pathv[0], "r") : NULL;
	globfree(&paths);
	if (!f)
		return -1;
	while (fgets(line, sizeof(line), f))
		if (!strncmp(line, name, n) && line[n] == ':')
			value = atol(line + n + 1);
	fclose(f);
	return value;
}

int vg_iotlb_msg(struct vg_guest *g, uint8_t type, uint64_t iova, uint64_t size, void *hva,
		 uint8_t perm)
{
	struct vhost_iotlb_msg m = {
		.iova = iova,
		.size = size,
		.uaddr = (uint64_t)(uintptr_t)hva,
		.perm = perm,
		.type = type,
	};
	struct vhost_msg v1 = { .type = VHOST_IOTLB_MSG, .iotlb = m };
	struct vhost_msg_v2 v2 = { .type = VHOST_IOTLB_MSG_V2, .iotlb = m };
	ssize_t n, want = g->iotlb_v1 ? (ssize_t)sizeof(v1) : (ssize_t)sizeof(v2);

	n = g->iotlb_v1 ? write(g->fd, &v1, sizeof(v1)) : write(g->fd, &v2, sizeof(v2));
	if (n < 0)
		return -errno;
	return n == want ? 0 : -EIO;
}

int vg_iotlb_miss(struct vg_guest *g, struct vhost_iotlb_msg *miss, int timeout_ms)
{
	struct pollfd p = { .fd = g->fd, .events = POLLIN };
	union {
		struct vhost_msg v1;
		struct vhost_msg_v2 v2;
	} m;
	ssize_t n;
	int r = poll(&p, 1, timeout_ms);

	if (r <= 0)
		return r < 0 ? -errno : 0;
	n = read(g->fd, &m, sizeof(m));
	if (n < 0)
		return -errno;
	if (g->iotlb_v1 && n == sizeof(m.v1) && m.v1.type == VHOST_IOTLB_MSG)
		*miss = m.v1.iotlb;
	else if (!g->iotlb_v1 && n == sizeof(m.v2) && m.v2.type == VHOST_IOTLB_MSG_V2)
		*miss = m.v2.iotlb;
	else
		return -EPROTO;
	return miss->type == VHOST_IOTLB_MISS ? 1 : -EPROTO;
}

struct vg_iotlb {
	pthread_t thread;
	struct vg_guest *g;
	size_t grain;
	atomic_bool stop;
	atomic_long served;
	atomic_bool bad;
};

static void *iotlb_server(void *arg)
{
	struct vg_iotlb *s = arg;
	struct vg_guest *g = s->g;

	while (!atomic_load(&s->stop)) {
		struct vhost_iotlb_msg miss;
		uint64_t start;
		int r = vg_iotlb_miss(g, &miss, 50);

		if (r == 0 || r == -EINTR)
			continue;
		if (r < 0) {
			atomic_store(&s->bad, true);
			break;
		}
		start = miss.iova & ~(uint64_t)(s->grain - 1);
		if (start < VG_IOVA_BASE || start + s->grain > VG_IOVA_BASE + g->mem_size ||
		    vg_iotlb_msg(g, VHOST_IOTLB_UPDATE, start, s->grain,
				 g->mem + (start - VG_IOVA_BASE), VHOST_ACCESS_RW)) {
			atomic_store(&s->bad, true);
			continue;
		}
		atomic_fetch_add(&s->served, 1);
	}
	return NULL;
}

int vg_iotlb_serve(struct vg_guest *g, size_t grain)
{
	struct vg_iotlb *s = calloc(1, sizeof(*s));
	int r;

	if (!s)
		return -ENOMEM;
	s->g = g;
	s->grain = grain;
	r = pthread_create(&s->thread, NULL, iotlb_server, s);
	if (r) {
		free(s);
		return -r;
	}
	g->server = s;
	return 0;
}

long vg_iotlb_served(const struct vg_guest *g)
{
	return g->server ? atomic_load(&g->server->served) : 0;
}

long vg_iotlb_stop(struct vg_guest *g)
{
	struct vg_iotlb *s = g->server;
	long served;

	if (!s)
		return 0;
	atomic_store(&s->stop, true);
	pthread_join(s->thread, NULL);
	served = atomic_load(&s->bad) ? -1 : atomic_load(&s->served);
	free(s);
	g->server = NULL;
	return served;
}

int vg_packet_socket(const char *ifname, uint16_t ethertype, int *ifindex)
{
	struct sockaddr_ll sll = {
		.sll_family = AF_PACKET,
		.sll_protocol = htons(ethertype),
		.sll_ifindex = (int)if_nametoindex(ifname),
	};
	struct timeval tv = { .tv_sec = 5 };
	int fd;

	if (!sll.sll_ifindex)
		return -ENODEV;
	fd = socket(AF_PACKET, SOCK_RAW | SOCK_CLOEXEC, htons(ethertype));
	if (fd < 0)
		return -errno;
	if (bind(fd, (struct sockaddr *)&sll, sizeof(sll)) ||
	    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv))) {
		int e = errno;

		close(fd);
		return -e;
	}
	*ifindex = sll.sll_ifindex;
	return fd;
}
