/* SPDX-License-Identifier: GPL-2.0 */
/*
 * A userspace "guest" for driving a vhost-net device through its ioctl ABI.
 *
 * The guest owns an anonymous memory region, lays split virtqueues out in it, and plays the
 * virtio-net driver: it posts descriptor chains, kicks, and reaps the used ring. Guest
 * physical addresses are offset from host virtual ones (gpa = VG_GPA_BASE + offset) so a
 * device that confuses the two fails visibly. The same code drives stock /dev/vhost-net and
 * /dev/vhost-net-zc, which is what the differential tests rely on.
 */
#ifndef VHOST_GUEST_H
#define VHOST_GUEST_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <linux/vhost.h>
#include <linux/virtio_ring.h>
#include <linux/virtio_net.h>

#define VG_GPA_BASE	0x40000000ULL
/*
 * With VIRTIO_F_ACCESS_PLATFORM acknowledged (a device IOTLB), ring and buffer addresses
 * are I/O virtual addresses: iova = VG_IOVA_BASE + offset, neither the host virtual nor the
 * guest physical address, so a device that translates with the wrong table fails visibly.
 */
#define VG_IOVA_BASE	0x80000000ULL
#define VG_RX		0
#define VG_TX		1
#define VG_NVQS		2

struct vg_vq {
	unsigned int num;		/* ring size, a power of two */
	struct vring_desc *desc;
	struct vring_avail *avail;
	struct vring_used *used;
	int kick_fd;			/* eventfd: guest -> device */
	int call_fd;			/* eventfd: device -> guest */
	int err_fd;			/* eventfd: device reports a ring error */
	uint16_t avail_idx;		/* next avail index the guest publishes */
	uint16_t last_used;		/* next used index the guest reads */
	uint16_t next_desc;		/* descriptor slots are used round robin */
};

struct vg_iotlb;

struct vg_guest {
	int fd;				/* the vhost device */
	uint8_t *mem;			/* guest memory (host virtual address) */
	size_t mem_size;
	size_t mem_used;		/* bump allocator */
	struct vg_vq vq[VG_NVQS];
	bool iotlb;			/* VIRTIO_F_ACCESS_PLATFORM: addresses are IOVAs */
	bool iotlb_v1;			/* IOTLB messages as struct vhost_msg (not _v2) */
	struct vg_iotlb *server;	/* vg_iotlb_serve()'s thread, if running */
};

/* Open @dev and map @mem_size bytes of guest memory. Returns 0 or -errno. */
int vg_open(struct vg_guest *g, const char *dev, size_t mem_size);
/* Kinds of guest memory for vg_open_mem(); 0 is private anonymous memory. */
#define VG_MEM_SHARED	1	/* a memfd mapped shared (QEMU's share=on) */
#define VG_MEM_HUGETLB	2	/* private hugetlb pages (MAP_HUGETLB) */
#define VG_MEM_THP	4	/* private anonymous, 2 MiB aligned, MADV_HUGEPAGE */
int vg_open_mem(struct vg_guest *g, const char *dev, size_t mem_size, int flags);
void vg_close(struct vg_guest *g);

/* Bump-allocate guest memory. Returns NULL when the region is exhausted. */
void *vg_alloc(struct vg_guest *g, size_t size, size_t align);
/* The address a descriptor gives for @hva: its guest physical address, or its IOVA. */
uint64_t vg_gpa(const struct vg_guest *g, const void *hva);
/* The address VHOST_SET_VRING_ADDR gives for a ring part at @hva: @hva, or its IOVA. */
uint64_t vg_ring_addr(const struct vg_guest *g, const void *hva);
/* The guest physical address of @hva, as the dirty log counts it. */
uint64_t vg_phys(const struct vg_guest *g, const void *hva);
/* Whether the dirty log @bitmap (VHOST_SET_LOG_BASE: a bit per 4 KiB page) marks @gpa. */
bool vg_logged(const uint8_t *bitmap, uint64_t gpa);

/* The setup sequence a VMM performs; each returns 0 or -errno of the failing ioctl. */
int vg_get_features(struct vg_guest *g, uint64_t *features);
int vg_set_owner(struct vg_guest *g);
int vg_set_features(struct vg_guest *g, uint64_t features);
/* VHOST_SET_FEATURES_ARRAY with the @n (at most VG_FEATURE_WORDS) words @words. */
#define VG_FEATURE_WORDS 2
int vg_set_features_array(struct vg_guest *g, const uint64_t *words, unsigned int n);
int vg_set_mem_table(struct vg_guest *g);
int vg_setup_vq(struct vg_guest *g, unsigned int idx, unsigned int num);
/*
 * A per-queue reset as a VMM does it for VIRTIO_F_RING_RESET, with the queue's backend
 * already detached: reads the ring base, then lays out a new, empty ring of the same size
 * in fresh guest memory with new eventfds. Returns 0 or -errno.
 */
int vg_reset_vq(struct vg_guest *g, unsigned int idx);
int vg_set_backend(struct vg_guest *g, unsigned int idx, int fd);
/* Owner, features, mem table and both virtqueues. */
int vg_setup(struct vg_guest *g, uint64_t features, unsigned int num);

/*
 * The device IOTLB, as a VMM with a vIOMMU serves it. vg_setup() with
 * VIRTIO_F_ACCESS_PLATFORM first acknowledges VHOST_BACKEND_F_IOTLB_MSG_V2 (unless
 * g->iotlb_v1), and from then on gives the device IOVAs.
 *
 * vg_iotlb_msg() writes one message (VHOST_IOTLB_UPDATE or _INVALIDATE) in the format the
 * guest negotiated: 0 or -errno of the write. vg_iotlb_miss() waits up to @timeout_ms
 * with poll() for a message and reads it: 1 with *@miss set, 0 on timeout, -errno (-EPROTO
 * for a message that is not a miss in the negotiated format).
 */
int vg_iotlb_msg(struct vg_guest *g, uint8_t type, uint64_t iova, uint64_t size, void *hva,
		 uint8_t perm);
int vg_iotlb_miss(struct vg_guest *g, struct vhost_iotlb_msg *miss, int timeout_ms);
/*
 * Maps the pages of the @len bytes at @hva (read-write), as QEMU maps a used ring before it
 * attaches a backend (vg_setup_vq() does it): 0 or -errno.
 */
int vg_iotlb_map(struct vg_guest *g, const void *hva, size_t len);
/*
 * A thread that answers every miss with an update of the @grain bytes (a power of two)
 * around it, read-write, as long as the IOVA is guest memory; vg_iotlb_stop() (also run by
 * vg_close()) ends it and returns how many misses it served, or -1 if it saw a miss outside
 * guest memory or a message it did not expect.
 */
int vg_iotlb_serve(struct vg_guest *g, size_t grain);
long vg_iotlb_stop(struct vg_guest *g);
/* Misses the server has answered so far. */
long vg_iotlb_served(const struct vg_guest *g);

/* Post one chain of @n buffers (device-readable unless @writable), then kick. */
int vg_post(struct vg_guest *g, unsigned int idx, void *const *bufs, const uint32_t *lens,
	    unsigned int n, bool writable);
/* Reap one used element if there is one: 1 with *id and *len set, 0 if none. */
int vg_post_indirect(struct vg_guest *g, unsigned int idx, void *const *bufs,
		     const uint32_t *lens, unsigned int n, bool writable);
int vg_reap(struct vg_guest *g, unsigned int idx, uint32_t *id, uint32_t *len);
/*
 * Reaping under VIRTIO_F_IN_ORDER, as a driver does: one used entry may return a batch,
 * naming its last buffer, the used index moved past all of them. @posted holds the n heads
 * in the order they were made available, *@next the first not returned yet; every entry
 * must name one of posted[*next..n-1], and returns the buffers up to it (*@len: the
 * entry's length). Waits up to @timeout_ms for *@next to reach @want. Returns how many
 * buffers came back, or -EPROTO for an entry naming a head out of order.
 */
int vg_reap_in_order(struct vg_guest *g, unsigned int idx, const int *posted, int n, int *next,
		     int want, uint32_t *len, int timeout_ms);

/*
 * Counter @name of the open /dev/vhost-net-zc device, from debugfs
 * (vhost-net-zc/<tgid>-<n>/stats; the opener may be a parent of the caller, so the device
 * must be the only one open); -1 if there is none.
 */
long vg_zc_stat(const char *name);
/* Wait for the call eventfd; returns 1 if signalled, 0 on timeout, -errno on error. */
int vg_wait_call(struct vg_guest *g, unsigned int idx, int timeout_ms);
/* Wait for the error eventfd, the same way. */
int vg_wait_err(struct vg_guest *g, unsigned int idx, int timeout_ms);
/* Publish avail entry @head without touching descriptors, then kick. */
int vg_publish(struct vg_guest *g, unsigned int idx, uint16_t head);

/* A tap device with IFF_VNET_HDR; returns its fd and writes its name, or -errno. */
int vg_tap_open(char *name, size_t name_len);
/* The tap device @name (created if it does not exist) with IFF_VNET_HDR: fd or -errno. */
int vg_tap_attach(const char *name);
int vg_link_up(const char *name);
/*
 * An AF_PACKET socket bound to interface @ifname for @ethertype, with a 5 s receive
 * timeout: the test's end of the wire. Returns it (and the interface's index in *@ifindex)
 * or -errno.
 */
int vg_packet_socket(const char *ifname, uint16_t ethertype, int *ifindex);

#endif /* VHOST_GUEST_H */
