// SPDX-License-Identifier: GPL-2.0
/*
 * Out-of-line wrappers for the vhost core's static inlines and macros (see helpers.h), the
 * module's parameters, and the definitions of its tracepoints (vnzc_trace.h).
 */

#include <linux/fs.h>
#include <linux/falloc.h>
#include <linux/highmem.h>
#include <linux/hugetlb.h>
#include <linux/mm.h>
#include <linux/mmap_lock.h>
#include <linux/moduleparam.h>
#include <linux/net.h>
#include <linux/page_frag_cache.h>
#include <linux/skbuff.h>
#include <linux/slab.h>
#include <linux/uio.h>
#include <linux/virtio_net.h>
#include <linux/if_vlan.h>
#include <linux/if_tap.h>
#include <linux/if_tun.h>
#include <linux/ptr_ring.h>
#include <linux/skb_array.h>
#include <linux/userfaultfd_k.h>
#include <linux/vhost_iotlb.h>
#include <net/xdp.h>
#include <net/sock.h>

#include "vhost.h"

#include "helpers.h"

#define CREATE_TRACE_POINTS
/* And the functions the Rust side calls to fire them (rust/trace.rs). */
#define CREATE_RUST_TRACE_POINTS
#include "vnzc_trace.h"

void *vnzc_vq_get_backend(struct vhost_virtqueue *vq)
{
	return vhost_vq_get_backend(vq);
}

void vnzc_vq_set_backend(struct vhost_virtqueue *vq, void *private_data)
{
	vhost_vq_set_backend(vq, private_data);
}

bool vnzc_vq_has_feature(struct vhost_virtqueue *vq, int bit)
{
	return vhost_has_feature(vq, bit);
}

bool vnzc_vq_backend_has_feature(struct vhost_virtqueue *vq, int bit)
{
	return vhost_backend_has_feature(vq, bit);
}

/* @features has VIRTIO_FEATURES_U64S words; the caller holds vq->mutex. */
void vnzc_vq_set_acked_features(struct vhost_virtqueue *vq, const u64 *features)
{
	virtio_features_copy(vq->acked_features_array, features);
}

/*
 * vq_err(): a guest's mistake is a debug line (dynamic debug, so a guest cannot flood the
 * host log) plus a signal on the virtqueue's error eventfd.
 */
void vnzc_vq_err(struct vhost_virtqueue *vq, const char *msg)
{
	vq_err(vq, "vhost_net_zc: %s\n", msg);
}

/* The ring's byte order: little endian for VERSION_1 devices, else the legacy native one. */
u32 vnzc_cpu_to_vhost32(struct vhost_virtqueue *vq, u32 v)
{
	return (__force u32)cpu_to_vhost32(vq, v);
}

u32 vnzc_vhost32_to_cpu(struct vhost_virtqueue *vq, u32 v)
{
	return vhost32_to_cpu(vq, (__force __virtio32)v);
}

u16 vnzc_cpu_to_vhost16(struct vhost_virtqueue *vq, u16 v)
{
	return (__force u16)cpu_to_vhost16(vq, v);
}

/*
 * The owner's address of the @size bytes at ring address @addr of @vq: @addr itself, or,
 * with a device IOTLB, its translation if one entry maps all of them; 0 if none does. The
 * caller holds @vq's mutex, under which the core changes the IOTLB.
 */
static unsigned long vnzc_ring_uaddr(struct vhost_virtqueue *vq, u64 addr, u64 size)
{
	struct vhost_iotlb_map *map;

	if (!vq->iotlb)
		return addr;
	if (!size || addr + size - 1 < addr)
		return 0;
	map = vhost_iotlb_itree_first(vq->iotlb, addr, addr + size - 1);
	/* Read-only or write-only: the core reads the used ring through either. */
	if (!map || map->start > addr || map->last < addr + size - 1 ||
	    !(map->perm & VHOST_ACCESS_RW))
		return 0;
	return map->addr + (addr - map->start);
}

/*
 * The used index the guest's memory holds now (the caller's address space must be the
 * owner's), in CPU order: 0 and @idx set; -EAGAIN if a device IOTLB has no entry for it
 * yet; -EFAULT if the ring cannot be read. (Under an IOTLB, address 0 is a valid IOVA.)
 */
int vnzc_vq_guest_used_idx(struct vhost_virtqueue *vq, u16 *idx)
{
	unsigned long uaddr;
	__virtio16 v;

	if (!vq->iotlb && !vq->used)
		return -EFAULT;
	uaddr = vnzc_ring_uaddr(vq, (u64)(uintptr_t)&vq->used->idx, sizeof(v));
	if (!uaddr)
		return -EAGAIN;
	if (get_user(v, (__virtio16 __user *)uaddr))
		return -EFAULT;
	*idx = vhost16_to_cpu(vq, v);
	return 0;
}

/*
 * Length of the packet at the head of a backend socket's queue, 0 if empty: tun and tap
 * peek their rings (->peek_len); a packet socket's queue is peeked under its lock, with the
 * VLAN tag the copy to the guest will insert.
 */
int vnzc_sock_peek_len(struct socket *sock)
{
	struct sock *sk = sock->sk;
	struct sk_buff *head;
	unsigned long flags;
	int len = 0;

	if (sock->ops->peek_len)
		return sock->ops->peek_len(sock);
	spin_lock_irqsave(&sk->sk_receive_queue.lock, flags);
	head = skb_peek(&sk->sk_receive_queue);
	if (head) {
		len = head->len;
		if (skb_vlan_tag_present(head))
			len += VLAN_HLEN;
	}
	spin_unlock_irqrestore(&sk->sk_receive_queue.lock, flags);
	return len;
}

/* pr_debug() is dynamic debug: silent unless enabled, so guests cannot flood the log. */
void vnzc_debug(const char *what, s64 a, s64 b)
{
	pr_debug("vhost_net_zc: %s: %lld %lld\n", what, a, b);
}

/* Fields of struct sock, which Rust sees only as an opaque type. */
int vnzc_sock_type(struct socket *sock)
{
	return sock->sk->sk_type;
}

int vnzc_sock_family(struct socket *sock)
{
	return sock->sk->sk_family;
}

/* Whether the socket takes zero-copy buffers (tun and macvtap set SOCK_ZEROCOPY). */
bool vnzc_sock_zerocopy(struct socket *sock)
{
	return sock_flag(sock->sk, SOCK_ZEROCOPY);
}

bool vnzc_sock_sndbuf_unlimited(struct socket *sock)
{
	return READ_ONCE(sock->sk->sk_sndbuf) == INT_MAX;
}

bool vnzc_sock_xdp(struct socket *sock)
{
	return sock_flag(sock->sk, SOCK_XDP);
}

/*
 * The TX copy batch: frames copied out of the guest into page fragments, handed to a tap
 * or macvtap up to VNZC_TXBATCH_MAX at a time with one sendmsg(TUN_MSG_PTR), which builds
 * each skb around its fragment (build_skb()) instead of allocating and copying again.
 * Used only by the TX handler, under the TX virtqueue's mutex.
 */
struct vnzc_txbatch {
	struct page_frag_cache frags;
	unsigned int len;
	struct xdp_buff frames[VNZC_TXBATCH_MAX];
};

struct vnzc_txbatch *vnzc_txbatch_new(void)
{
	struct vnzc_txbatch *b = kzalloc(sizeof(*b), GFP_KERNEL);

	if (b)
		page_frag_cache_init(&b->frags);
	return b;
}

/* Frees the frames never handed over. */
void vnzc_txbatch_clear(struct vnzc_txbatch *b)
{
	for (unsigned int i = 0; i < b->len; i++)
		page_frag_free(b->frames[i].data_hard_start);
	b->len = 0;
}

void vnzc_txbatch_free(struct vnzc_txbatch *b)
{
	if (!b)
		return;
	vnzc_txbatch_clear(b);
	page_frag_cache_drain(&b->frags);
	kfree(b);
}

unsigned int vnzc_txbatch_len(const struct vnzc_txbatch *b)
{
	return b->len;
}

/*
 * Appends the packet of @len bytes at @iov (@nr_segs segments) past its first @skip bytes,
 * whose first @sock_hlen bytes are the backend's virtio-net header, to @b, which must have
 * room. The fragment holds, in this order: the header, where tun and tap read it; room
 * for the stack (NET_SKB_PAD, NET_IP_ALIGN, and XDP_PACKET_HEADROOM when the socket runs
 * an XDP program); the frame; struct skb_shared_info, as build_skb() expects.
 *
 * Returns 0; -ENOSPC if the packet does not fit in one page (to be sent on its own);
 * -ENOMEM; -EFAULT if the guest's memory cannot be read; -EINVAL if the header is too
 * short or asks for a checksum past the packet.
 */
int vnzc_txbatch_add(struct vnzc_txbatch *b, struct vhost_virtqueue *vq, const struct iovec *iov,
		     unsigned long nr_segs, size_t skip, size_t len, size_t sock_hlen,
		     bool xdp_headroom)
{
	size_t room = NET_SKB_PAD + NET_IP_ALIGN + sock_hlen +
		      (xdp_headroom ? XDP_PACKET_HEADROOM : 0);
	size_t front = SKB_DATA_ALIGN(room);
	size_t size = SKB_DATA_ALIGN(front + len) +
		      SKB_DATA_ALIGN(sizeof(struct skb_shared_info));
	struct virtio_net_hdr *hdr;
	struct iov_iter from;
	u8 *buf;

	if (b->len >= VNZC_TXBATCH_MAX)
		return -ENOSPC;
	if (len < sock_hlen)
		return -EINVAL;
	if (size > PAGE_SIZE)
		return -ENOSPC;
	buf = page_frag_alloc_align(&b->frags, size, GFP_KERNEL, SMP_CACHE_BYTES);
	if (!buf)
		return -ENOMEM;
	iov_iter_init(&from, ITER_SOURCE, iov, nr_segs, skip + len);
	iov_iter_advance(&from, skip);
	/* The frame lands at @front; its header, if the backend takes one, right before. */
	if (copy_from_iter(buf + front - sock_hlen, len, &from) != len) {
		page_frag_free(buf);
		return -EFAULT;
	}
	if (sock_hlen) {
		memcpy(buf, buf + front - sock_hlen, sock_hlen);
	} else {
		/* No header from the guest: the backend reads one of zeroes (no offloads). */
		memset(buf, 0, front);
	}
	hdr = (struct virtio_net_hdr *)buf;
	if (sock_hlen && (hdr->flags & VIRTIO_NET_HDR_F_NEEDS_CSUM)) {
		/* The checksum's two bytes must be inside the linear part tun builds. */
		u32 need = (u32)vhost16_to_cpu(vq, hdr->csum_start) +
			   vhost16_to_cpu(vq, hdr->csum_offset) + 2;

		if (need > len) {
			page_frag_free(buf);
			return -EINVAL;
		}
		if (need > vhost16_to_cpu(vq, hdr->hdr_len))
			hdr->hdr_len = cpu_to_vhost16(vq, need);
	}
	xdp_init_buff(&b->frames[b->len], size, NULL);
	xdp_prepare_buff(&b->frames[b->len], buf, front, len - sock_hlen, true);
	b->len++;
	return 0;
}

/*
 * Hands every frame of @b to the tap or macvtap @sock, which owns them from then on, and
 * empties @b. Returns what sendmsg() returned; on an error the frames are freed here.
 */
int vnzc_txbatch_send(struct vnzc_txbatch *b, struct socket *sock)
{
	struct tun_msg_ctl ctl = {
		.type = TUN_MSG_PTR,
		.num = b->len,
		.ptr = b->frames,
	};
	struct msghdr msg = {
		.msg_control = &ctl,
		.msg_controllen = sizeof(ctl),
		.msg_flags = MSG_DONTWAIT,
	};
	int r;

	if (!b->len)
		return 0;
	r = sock->ops->sendmsg(sock, &msg, 0);
	if (r < 0)
		vnzc_txbatch_clear(b);
	b->len = 0;
	return r;
}

/*
 * Whether every bit of @want (@n words) is set in @done or in @reaped: the owner sets a
 * slot's @reaped bit before it takes its @done bit, with a full barrier between.
 */
static bool vnzc_all_done(const u64 *done, const u64 *reaped, const u64 *want, int n)
{
	for (int i = 0; i < n; i++) {
		u64 seen = READ_ONCE(done[i]);

		/* Paired with the full barrier of the owner's clear of @done. */
		smp_rmb();
		seen |= READ_ONCE(reaped[i]);
		if ((seen & want[i]) != want[i])
			return false;
	}
	return true;
}

/*
 * Waits killably, for at most @timeout_ms (< 0: no bound), until every slot of @want has
 * completed: its bit set in @done, which completions set before they wake @wq, or, once
 * the owner reaped it, in @reaped. Timed by an hrtimer: jiffies lag far behind real time
 * where ticks are lost (an emulated guest), and a reset deadline is real time. Returns 1
 * when they have, 0 on timeout, -ERESTARTSYS if a fatal signal came.
 */
long vnzc_wait_done_killable(struct wait_queue_head *wq, const u64 *done, const u64 *reaped,
			     const u64 *want, int n, s64 timeout_ms)
{
	ktime_t timeout = timeout_ms < 0 ? KTIME_MAX : ms_to_ktime(timeout_ms);
	int r;

	r = __wait_event_hrtimeout(*wq, vnzc_all_done(done, reaped, want, n), timeout,
				   TASK_KILLABLE);
	if (r == -ETIME)
		return 0;
	return r ? r : 1;
}

/* Wakes @wq if anyone waits on it (cheap when no one does). */
void vnzc_wake_waiters(struct wait_queue_head *wq)
{
	if (wq_has_sleeper(wq))
		wake_up(wq);
}

/* The ptr_ring a tap or macvtap file queues its packets for the reader in, or NULL. */
struct ptr_ring *vnzc_tap_ring(struct file *file)
{
	struct ptr_ring *ring = tun_get_tx_ring(file);

	if (IS_ERR(ring))
		ring = tap_get_ptr_ring(file);
	return IS_ERR(ring) ? NULL : ring;
}

/* Takes up to @n packets off @ring into @batch; lets the tap queue packets again. */
int vnzc_ring_consume_batched(struct ptr_ring *ring, struct file *file, void **batch, int n)
{
	int got;

	spin_lock(&ring->consumer_lock);
	got = __ptr_ring_consume_batched(ring, batch, n);
	if (got)
		tun_wake_queue(file, got);
	spin_unlock(&ring->consumer_lock);
	return got;
}

/* Puts @n packets taken by vnzc_ring_consume_batched() back at the ring's head. */
void vnzc_ring_unconsume(struct ptr_ring *ring, void **batch, int n)
{
	ptr_ring_unconsume(ring, batch, n, tun_ptr_free);
}

/* Length of a packet in a tap's ring: an skb, or an XDP frame (tagged pointer). */
int vnzc_ring_entry_len(void *ptr)
{
	if (tun_is_xdp_frame(ptr))
		return tun_ptr_to_xdp(ptr)->len;
	return __skb_array_len_with_tag(ptr);
}

/* The clock of busy polling, in roughly microseconds (ns >> 10, as vhost-net). */
u64 vnzc_busy_clock(void)
{
	return local_clock() >> 10;
}

/* Whether a busy poll ending at @endtime (vnzc_busy_clock()) may go on. */
bool vnzc_can_busy_poll(u64 endtime)
{
	return !need_resched() && !signal_pending(current) && vnzc_busy_clock() <= endtime;
}

void vnzc_mmap_write_lock(struct mm_struct *mm)
{
	mmap_write_lock(mm);
}

/* 0, or -EINTR if a fatal signal came first. */
int vnzc_mmap_write_lock_killable(struct mm_struct *mm)
{
	return mmap_write_lock_killable(mm);
}

void vnzc_mmap_write_unlock(struct mm_struct *mm)
{
	mmap_write_unlock(mm);
}

/* Makes page faults on @vma wait for the mmap lock, which the caller holds for write. */
void vnzc_vma_start_write(struct vm_area_struct *vma)
{
	vma_start_write(vma);
}

/* The size of the pages mapping @vma: huge for hugetlb, the base size otherwise. */
unsigned long vnzc_vma_pagesize(struct vm_area_struct *vma)
{
	return vma_kernel_pagesize(vma);
}

/*
 * The page mapped at @addr in @mm, faulted in (for write if @write), with a reference; NULL
 * and *@err on failure. The caller holds the mmap lock (for read or write); it is never
 * dropped here, as no @locked is passed.
 */
struct page *vnzc_get_user_page_locked(struct mm_struct *mm, unsigned long addr, bool write,
				       int *err)
{
	struct page *page;
	long got;

	got = get_user_pages_remote(mm, addr, 1, write ? FOLL_WRITE : 0, &page, NULL);
	if (got == 1)
		return page;
	*err = got < 0 ? (int)got : -EFAULT;
	return NULL;
}

void vnzc_put_page(struct page *page)
{
	put_page(page);
}

void vnzc_copy_page(struct page *to, struct page *from)
{
	copy_highpage(to, from);
}

void vnzc_clear_page(struct page *page)
{
	clear_highpage(page);
}

/* The file @vma maps, with a reference, or NULL for anonymous memory. */
struct file *vnzc_vma_get_file(struct vm_area_struct *vma)
{
	return vma->vm_file ? get_file(vma->vm_file) : NULL;
}

/* Frees the backing of @len bytes at @offset of @file; later reads see zeros. */
int vnzc_punch_hole(struct file *file, s64 offset, s64 len)
{
	return vfs_fallocate(file, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, offset, len);
}

bool vnzc_current_mm_is(struct mm_struct *mm)
{
	return current->mm == mm;
}

bool vnzc_current_exiting(void)
{
	return current->flags & PF_EXITING;
}

/*
 * Whether this kernel has vma_share_anon_pages() (patches/ of this project): Kbuild defines
 * VNZC_HAVE_SHARE_ANON_PAGES when include/linux/mm.h declares it.
 */
bool vnzc_have_share_anon_pages(void)
{
	return IS_ENABLED(VNZC_HAVE_SHARE_ANON_PAGES);
}

/* vma_share_anon_pages(), or -ENOSYS on a kernel without it. */
int vnzc_share_anon_pages(struct vm_area_struct *vma, const unsigned long *addrs,
			  struct page *const *expected, int *errs, unsigned int nr)
{
#ifdef VNZC_HAVE_SHARE_ANON_PAGES
	return vma_share_anon_pages(vma, addrs, expected, errs, nr);
#else
	return -ENOSYS;
#endif
}

/*
 * The pages mapped at the @nr pages from @start in the current mm, into @pages (without
 * references: the caller only compares them later, while another holder keeps them).
 * Returns how many of the first pages could be looked up without faulting or sleeping.
 */
int vnzc_lookup_pages(unsigned long start, int nr, struct page **pages)
{
	int got = get_user_pages_fast_only(start, nr, 0, pages);

	for (int i = 0; i < got; i++)
		put_page(pages[i]);
	return got;
}

/* Free huge pages of @vma's size not promised to a reservation. */
long vnzc_hugetlb_available(struct vm_area_struct *vma)
{
#ifdef CONFIG_HUGETLB_PAGE
	struct hstate *h = hstate_vma(vma);

	return (long)READ_ONCE(h->free_huge_pages) - (long)READ_ONCE(h->resv_huge_pages);
#else
	return 0;
#endif
}

/* Whether userfaultfd handles faults on @vma (the caller holds the mmap lock). */
bool vnzc_vma_uffd_armed(struct vm_area_struct *vma)
{
	return userfaultfd_armed(vma);
}

/* Whether @page's folio may be pinned for DMA (FOLL_PIN: VFIO, io_uring, RDMA, O_DIRECT). */
bool vnzc_page_maybe_dma_pinned(struct page *page)
{
	return folio_maybe_dma_pinned(page_folio(page));
}

/*
 * Marks in @vq's dirty log the guest pages that map the @len bytes at @hva of the owner's
 * address space: the out-of-line equivalent, for this module, of the vhost core's static
 * log_write_hva(), for memory whose content changed without a descriptor saying so. Every
 * region of the memory table that maps part of the range is logged (one host page may back
 * several guest addresses). The caller holds @vq's mutex and runs in the owner's mm.
 */
int vnzc_log_hva(struct vhost_virtqueue *vq, u64 hva, u64 len)
{
	struct vhost_iotlb_map *map;
	int r;

	if (!vq->umem || !len)
		return 0;
	if (vq->iotlb) {
		/* With a device IOTLB the core logs by host address: give it one. */
		struct iovec iov = {
			.iov_base = (void __user *)(uintptr_t)hva,
			.iov_len = len,
		};

		r = vhost_log_write(vq, NULL, 0, len, &iov, 1);
		/* The core's IOTLB path does not signal the log; the VMM waits for it. */
		if (r >= 0 && vq->log_ctx)
			eventfd_signal(vq->log_ctx);
		return r;
	}
	list_for_each_entry(map, &vq->umem->list, link) {
		struct vhost_log log;
		u64 start, end;

		if (map->addr > hva + len - 1 || map->addr + map->size - 1 < hva)
			continue;
		start = max(map->addr, hva);
		end = min(map->addr + map->size - 1, hva + len - 1);
		log.addr = map->start + (start - map->addr);
		log.len = end - start + 1;
		r = vhost_log_write(vq, &log, 1, log.len, NULL, 0);
		if (r < 0)
			return r;
	}
	return 0;
}

/*
 * The module parameters. The Rust module! macro of Linux 7.3 registers parameters without
 * sysfs files; declared here, they are readable (mode 0444) under
 * /sys/module/vhost_net_zc/parameters/, as a C driver's are. Their ranges are checked by
 * the module's init (rust/vhost_net_zc.rs); read-only, they cannot change after the load.
 */
static bool zcopy_tx = true;
module_param(zcopy_tx, bool, 0444);
MODULE_PARM_DESC(zcopy_tx, "Send TX buffers at or above copy_threshold zero-copy (default: true)");

static unsigned int copy_threshold = 256;
module_param(copy_threshold, uint, 0444);
MODULE_PARM_DESC(copy_threshold,
		 "Smallest TX buffer in bytes sent zero-copy (64..=65536, default: 256)");

static unsigned int timeout_ms = 1000;
module_param(timeout_ms, uint, 0444);
MODULE_PARM_DESC(timeout_ms,
		 "Default deadline in ms of a zero-copy TX buffer (1..=600000, default: 1000)");

bool vnzc_param_zcopy_tx(void)
{
	return READ_ONCE(zcopy_tx);
}

u32 vnzc_param_copy_threshold(void)
{
	return READ_ONCE(copy_threshold);
}

u32 vnzc_param_timeout_ms(void)
{
	return READ_ONCE(timeout_ms);
}
