/* SPDX-License-Identifier: GPL-2.0 */
/*
 * C helpers for vhost-net-zc: out-of-line versions of the vhost core's static inlines and
 * macros, which Rust cannot call directly. Nothing here holds logic of its own, but for
 * the memory layout of the TX copy batch's frames (vnzc_txbatch_*), which is tun's and
 * tap's build_skb() contract.
 */
#ifndef _VNZC_HELPERS_H
#define _VNZC_HELPERS_H

#include <linux/types.h>

struct vhost_virtqueue;
struct socket;
struct wait_queue_head;
struct ptr_ring;
struct file;
struct mm_struct;
struct vm_area_struct;
struct page;
struct iovec;
struct vnzc_txbatch;

void *vnzc_vq_get_backend(struct vhost_virtqueue *vq);
void vnzc_vq_set_backend(struct vhost_virtqueue *vq, void *private_data);
bool vnzc_vq_has_feature(struct vhost_virtqueue *vq, int bit);
bool vnzc_vq_backend_has_feature(struct vhost_virtqueue *vq, int bit);
void vnzc_vq_set_acked_features(struct vhost_virtqueue *vq, const u64 *features);
u32 vnzc_cpu_to_vhost32(struct vhost_virtqueue *vq, u32 v);
u32 vnzc_vhost32_to_cpu(struct vhost_virtqueue *vq, u32 v);
u16 vnzc_cpu_to_vhost16(struct vhost_virtqueue *vq, u16 v);
int vnzc_vq_guest_used_idx(struct vhost_virtqueue *vq, u16 *idx);
int vnzc_sock_peek_len(struct socket *sock);
int vnzc_sock_type(struct socket *sock);
int vnzc_sock_family(struct socket *sock);
void vnzc_debug(const char *what, s64 a, s64 b);
void vnzc_vq_err(struct vhost_virtqueue *vq, const char *msg);
bool vnzc_sock_zerocopy(struct socket *sock);
long vnzc_wait_done_killable(struct wait_queue_head *wq, const u64 *done, const u64 *reaped,
			     const u64 *want, int n, s64 timeout_ms);
void vnzc_wake_waiters(struct wait_queue_head *wq);
struct ptr_ring *vnzc_tap_ring(struct file *file);
int vnzc_ring_consume_batched(struct ptr_ring *ring, struct file *file, void **batch, int n);
void vnzc_ring_unconsume(struct ptr_ring *ring, void **batch, int n);
int vnzc_ring_entry_len(void *ptr);
u64 vnzc_busy_clock(void);
bool vnzc_can_busy_poll(u64 endtime);
void vnzc_mmap_write_lock(struct mm_struct *mm);
int vnzc_mmap_write_lock_killable(struct mm_struct *mm);
void vnzc_mmap_write_unlock(struct mm_struct *mm);
void vnzc_vma_start_write(struct vm_area_struct *vma);
unsigned long vnzc_vma_pagesize(struct vm_area_struct *vma);
struct page *vnzc_get_user_page_locked(struct mm_struct *mm, unsigned long addr, bool write,
				       int *err);
void vnzc_put_page(struct page *page);
void vnzc_copy_page(struct page *to, struct page *from);
void vnzc_clear_page(struct page *page);
struct file *vnzc_vma_get_file(struct vm_area_struct *vma);
int vnzc_punch_hole(struct file *file, s64 offset, s64 len);
bool vnzc_current_mm_is(struct mm_struct *mm);
bool vnzc_current_exiting(void);
bool vnzc_have_share_anon_pages(void);
int vnzc_share_anon_pages(struct vm_area_struct *vma, const unsigned long *addrs,
			   struct page *const *expected, int *errs, unsigned int nr);
int vnzc_lookup_pages(unsigned long start, int nr, struct page **pages);
long vnzc_hugetlb_available(struct vm_area_struct *vma);
bool vnzc_vma_uffd_armed(struct vm_area_struct *vma);
bool vnzc_page_maybe_dma_pinned(struct page *page);
int vnzc_log_hva(struct vhost_virtqueue *vq, u64 hva, u64 len);

/* Most frames in one TX copy batch (one sendmsg(TUN_MSG_PTR)). */
#define VNZC_TXBATCH_MAX 64
struct vnzc_txbatch *vnzc_txbatch_new(void);
void vnzc_txbatch_free(struct vnzc_txbatch *b);
void vnzc_txbatch_clear(struct vnzc_txbatch *b);
unsigned int vnzc_txbatch_len(const struct vnzc_txbatch *b);
int vnzc_txbatch_add(struct vnzc_txbatch *b, struct vhost_virtqueue *vq, const struct iovec *iov,
		     unsigned long nr_segs, size_t skip, size_t len, size_t sock_hlen,
		     bool xdp_headroom);
int vnzc_txbatch_send(struct vnzc_txbatch *b, struct socket *sock);
bool vnzc_sock_sndbuf_unlimited(struct socket *sock);
bool vnzc_sock_xdp(struct socket *sock);

/* The module parameters, declared in helpers.c (see there). */
bool vnzc_param_zcopy_tx(void);
u32 vnzc_param_copy_threshold(void);
u32 vnzc_param_timeout_ms(void);

#endif /* _VNZC_HELPERS_H */
