/* SPDX-License-Identifier: GPL-2.0 */
/*
 * The tracepoints of vhost-net-zc, events/vhost_net_zc/ in tracefs: the life of each
 * zero-copy TX buffer (send, completion, expiry, offline or refusal) and each reset's wait.
 * Defined in helpers.c; called from Rust through rust/trace.rs. @dev is the device's
 * number, the <n> of its debugfs directory <tgid>-<n>; @slot its buffer's slot in the pool;
 * @vq_head the head of its descriptor chain.
 */
#undef TRACE_SYSTEM
#define TRACE_SYSTEM vhost_net_zc

#if !defined(_VNZC_TRACE_H) || defined(TRACE_HEADER_MULTI_READ)
#define _VNZC_TRACE_H

#include <linux/tracepoint.h>

TRACE_EVENT(vnzc_zc_send,
	TP_PROTO(u64 dev, u32 slot, u16 vq_head, u32 pages),
	TP_ARGS(dev, slot, vq_head, pages),
	TP_STRUCT__entry(
		__field(u64, dev)
		__field(u32, slot)
		__field(u16, vq_head)
		__field(u32, pages)
	),
	TP_fast_assign(
		__entry->dev = dev;
		__entry->slot = slot;
		__entry->vq_head = vq_head;
		__entry->pages = pages;
	),
	TP_printk("dev=%llu slot=%u head=%u pages=%u", __entry->dev, __entry->slot,
		  __entry->vq_head, __entry->pages)
);

TRACE_EVENT(vnzc_zc_complete,
	TP_PROTO(u64 dev, u32 slot, bool copied),
	TP_ARGS(dev, slot, copied),
	TP_STRUCT__entry(
		__field(u64, dev)
		__field(u32, slot)
		__field(bool, copied)
	),
	TP_fast_assign(
		__entry->dev = dev;
		__entry->slot = slot;
		__entry->copied = copied;
	),
	TP_printk("dev=%llu slot=%u copied=%d", __entry->dev, __entry->slot, __entry->copied)
);

TRACE_EVENT(vnzc_zc_expire,
	TP_PROTO(u64 dev, u32 slot, u16 vq_head),
	TP_ARGS(dev, slot, vq_head),
	TP_STRUCT__entry(
		__field(u64, dev)
		__field(u32, slot)
		__field(u16, vq_head)
	),
	TP_fast_assign(
		__entry->dev = dev;
		__entry->slot = slot;
		__entry->vq_head = vq_head;
	),
	TP_printk("dev=%llu slot=%u head=%u", __entry->dev, __entry->slot, __entry->vq_head)
);

TRACE_EVENT(vnzc_offline,
	TP_PROTO(u64 dev, u32 slot, u16 vq_head, u32 pages, bool discard),
	TP_ARGS(dev, slot, vq_head, pages, discard),
	TP_STRUCT__entry(
		__field(u64, dev)
		__field(u32, slot)
		__field(u16, vq_head)
		__field(u32, pages)
		__field(bool, discard)
	),
	TP_fast_assign(
		__entry->dev = dev;
		__entry->slot = slot;
		__entry->vq_head = vq_head;
		__entry->pages = pages;
		__entry->discard = discard;
	),
	TP_printk("dev=%llu slot=%u head=%u pages=%u mode=%s", __entry->dev, __entry->slot,
		  __entry->vq_head, __entry->pages, __entry->discard ? "discard" : "preserve")
);

TRACE_EVENT(vnzc_offline_refused,
	TP_PROTO(u64 dev, u32 slot, u16 vq_head, int error),
	TP_ARGS(dev, slot, vq_head, error),
	TP_STRUCT__entry(
		__field(u64, dev)
		__field(u32, slot)
		__field(u16, vq_head)
		__field(int, error)
	),
	TP_fast_assign(
		__entry->dev = dev;
		__entry->slot = slot;
		__entry->vq_head = vq_head;
		__entry->error = error;
	),
	TP_printk("dev=%llu slot=%u head=%u error=%d", __entry->dev, __entry->slot,
		  __entry->vq_head, __entry->error)
);

TRACE_EVENT(vnzc_reset,
	TP_PROTO(u64 dev, u64 wait_ns, u32 reserved),
	TP_ARGS(dev, wait_ns, reserved),
	TP_STRUCT__entry(
		__field(u64, dev)
		__field(u64, wait_ns)
		__field(u32, reserved)
	),
	TP_fast_assign(
		__entry->dev = dev;
		__entry->wait_ns = wait_ns;
		__entry->reserved = reserved;
	),
	TP_printk("dev=%llu wait_ns=%llu reserved=%u", __entry->dev, __entry->wait_ns,
		  __entry->reserved)
);

#endif /* _VNZC_TRACE_H */

/* The header is outside include/trace/events: define_trace.h finds it here. */
#undef TRACE_INCLUDE_PATH
#define TRACE_INCLUDE_PATH .
#undef TRACE_INCLUDE_FILE
#define TRACE_INCLUDE_FILE vnzc_trace
#include <trace/define_trace.h>
