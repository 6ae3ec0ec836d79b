/* SPDX-License-Identifier: GPL-2.0 WITH Linux-syscall-note */
/**
 * DOC: vhost-net-zc ioctls
 *
 * The ioctls a VMM may use on /dev/vhost-net-zc besides the vhost-net ABI of
 * <linux/vhost.h>, which the device speaks unchanged.
 *
 * They have their own ioctl type (VHOST_NET_ZC_IOC_TYPE), distinct from vhost's
 * VHOST_VIRTIO, so no number here can be mistaken for a vhost command. All of them act on
 * the TX virtqueue's zero-copy buffers and may be issued at any time; only
 * VHOST_NET_ZC_VM_RESET needs the caller to be the owner (EPERM). A bad pointer gives
 * EFAULT; a device that is not vhost-net-zc answers them with ENOTTY.
 *
 * A zero-copy TX buffer stays in the guest's pages until the network stack frees the skb
 * that holds them. Each buffer gets a deadline when it is sent (the device's timeout). A
 * buffer past its deadline is "expired". When the device is reset (VHOST_NET_SET_BACKEND on
 * the TX queue, VHOST_RESET_OWNER, close), buffers not yet expired are waited for until
 * their deadline, and expired ones are "offlined": the guest pages that hold them are
 * detached from the VMM's address space (the skb keeps the old pages) and their heads are
 * written to the used ring. See Documentation/admin-guide.rst of the vhost-net-zc project.
 *
 * The ioctl type 0xBE is not assigned in Linux's
 * Documentation/userspace-api/ioctl/ioctl-number.rst (checked by the project's lint).
 */
#ifndef _UAPI_LINUX_VHOST_NET_ZC_H
#define _UAPI_LINUX_VHOST_NET_ZC_H

#include <linux/ioctl.h>
#include <linux/types.h>

/**
 * define VHOST_NET_ZC_IOC_TYPE - the ioctl type of the commands below
 */
#define VHOST_NET_ZC_IOC_TYPE	0xBE

/**
 * define VHOST_NET_ZC_SET_TIMEOUT - set the deadline of zero-copy TX buffers
 *
 * The deadline, in milliseconds (1..600000), of the zero-copy buffers sent from now on.
 * Buffers already in flight keep theirs. Default: the module parameter timeout_ms.
 * EINVAL out of range.
 */
#define VHOST_NET_ZC_SET_TIMEOUT	_IOW(VHOST_NET_ZC_IOC_TYPE, 0x00, __u32)

/**
 * define VHOST_NET_ZC_GET_TIMEOUT - read the deadline of zero-copy TX buffers, in ms
 */
#define VHOST_NET_ZC_GET_TIMEOUT	_IOR(VHOST_NET_ZC_IOC_TYPE, 0x01, __u32)

/**
 * define VHOST_NET_ZC_SET_RECLAIM - return expired buffers when they expire, or at resets
 *
 * Reclaim on expiry: 1 returns every expired buffer at once, offlined in preserve mode, so
 * the TX queue never stalls longer than the timeout; 0 (the default) returns expired
 * buffers only on a reset. EINVAL for any other value.
 */
#define VHOST_NET_ZC_SET_RECLAIM	_IOW(VHOST_NET_ZC_IOC_TYPE, 0x02, __u32)

/**
 * define VHOST_NET_ZC_VM_RESET - offline and return every buffer in flight
 *
 * The VMM resets the VM: every zero-copy buffer in flight, expired or not, is offlined at
 * once in discard mode (the guest sees zeroed pages where the buffers were) and its head
 * written to the used ring. The argument is a mask of flags; none is defined yet (EINVAL
 * for any bit). EPERM: the caller is not the owner. Some buffers could not be offlined
 * and stay in flight: EOPNOTSUPP, they are in memory that cannot be offlined (see the
 * documentation); EBUSY, a page may be pinned for DMA; ENOMEM, memory ran short (the call
 * may be repeated).
 */
#define VHOST_NET_ZC_VM_RESET		_IOW(VHOST_NET_ZC_IOC_TYPE, 0x03, __u32)

/**
 * struct vhost_net_zc_stats - the device's counters since it was opened
 * @sent_zerocopy: TX buffers sent zero-copy
 * @sent_copy: TX buffers sent by copy
 * @completed: zero-copy buffers the stack released
 * @completed_copied: of those, copied by the stack after all
 * @expired: buffers found in flight past their deadline
 * @offlined: buffers whose pages were offlined
 * @offlined_pages: pages offlined (of the base page size)
 * @held_pages: offlined pages still held by skbs in flight
 * @offline_refused: buffers that could not be offlined
 * @abandoned: heads dropped: ring reset with the buffer in flight
 * @in_flight: buffers the stack holds now
 * @in_flight_expired: of those, expired
 * @last_reset_wait_ns: time the last reset spent on zero-copy buffers
 * @max_reset_wait_ns: the longest such time
 * @timeout_ms: the current timeout
 * @reclaim: reclaim on expiry: 0 or 1
 * @offline_pinned: of the buffers refused, those with a page maybe pinned for DMA
 * @offline_skipped_pages: pages not offlined: remapped since the send
 *
 * The struct only grows at its end, and the command number encodes its size: a device
 * answers the command of every earlier version of this header with that version's part
 * of the struct.
 */
struct vhost_net_zc_stats {
	__u64 sent_zerocopy;
	__u64 sent_copy;
	__u64 completed;
	__u64 completed_copied;
	__u64 expired;
	__u64 offlined;
	__u64 offlined_pages;
	__u64 held_pages;
	__u64 offline_refused;
	__u64 abandoned;
	__u64 in_flight;
	__u64 in_flight_expired;
	__u64 last_reset_wait_ns;
	__u64 max_reset_wait_ns;
	__u32 timeout_ms;
	__u32 reclaim;
	__u64 offline_pinned;
	__u64 offline_skipped_pages;
};

/**
 * define VHOST_NET_ZC_GET_STATS - read the device's counters (struct vhost_net_zc_stats)
 */
#define VHOST_NET_ZC_GET_STATS		_IOR(VHOST_NET_ZC_IOC_TYPE, 0x04, struct vhost_net_zc_stats)

#endif /* _UAPI_LINUX_VHOST_NET_ZC_H */
