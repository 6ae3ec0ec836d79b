/* SPDX-License-Identifier: GPL-2.0 */
/*
 * The header bindgen reads for vhost-net-zc's FFI layer (rust/ffi.rs): the vhost core's
 * private header, the vhost and virtio UAPI, tun/tap and skb zero-copy, plus the module's C
 * helpers. Only the items allowlisted in Kbuild are generated.
 *
 * The ioctl numbers are function-like macros, which bindgen cannot expand; they are
 * evaluated here as constants so the Rust side uses the kernel's own values.
 */
#include <linux/if_tun.h>
#include <linux/if_tap.h>
#include <linux/skbuff.h>
#include <linux/virtio_net.h>
#include <uapi/linux/vhost.h>

#include "vhost.h"

#include "helpers.h"
#include "vnzc_trace.h"

const unsigned int VNZC_VHOST_GET_FEATURES = VHOST_GET_FEATURES;
const unsigned int VNZC_VHOST_SET_FEATURES = VHOST_SET_FEATURES;
const unsigned int VNZC_VHOST_GET_FEATURES_ARRAY = VHOST_GET_FEATURES_ARRAY;
const unsigned int VNZC_VHOST_SET_FEATURES_ARRAY = VHOST_SET_FEATURES_ARRAY;
const unsigned int VNZC_VHOST_GET_BACKEND_FEATURES = VHOST_GET_BACKEND_FEATURES;
const unsigned int VNZC_VHOST_SET_BACKEND_FEATURES = VHOST_SET_BACKEND_FEATURES;
const unsigned int VNZC_VHOST_SET_OWNER = VHOST_SET_OWNER;
const unsigned int VNZC_VHOST_RESET_OWNER = VHOST_RESET_OWNER;
const unsigned int VNZC_VHOST_NET_SET_BACKEND = VHOST_NET_SET_BACKEND;
const unsigned int VNZC_VHOST_SET_VRING_NUM = VHOST_SET_VRING_NUM;
const unsigned int VNZC_VHOST_SET_VRING_BASE = VHOST_SET_VRING_BASE;
const unsigned int VNZC_VHOST_SET_VRING_ADDR = VHOST_SET_VRING_ADDR;
const unsigned int VNZC_VIRTIO_FEATURES_U64S = VIRTIO_FEATURES_U64S;
/* The virtio-net header with a UDP tunnel GSO feature (both directions), as stock 7.3. */
const unsigned int VNZC_NET_HDR_TUNNEL_LEN = sizeof(struct virtio_net_hdr_v1_hash_tunnel);
const unsigned int VNZC_EPOLLIN = (__force unsigned int)EPOLLIN;
const unsigned int VNZC_EPOLLOUT = (__force unsigned int)EPOLLOUT;

/* The project's own UAPI: the ioctls a VMM may issue besides vhost-net's. */
#include "../include/uapi/linux/vhost_net_zc.h"

const unsigned int VNZC_SET_TIMEOUT = VHOST_NET_ZC_SET_TIMEOUT;
const unsigned int VNZC_GET_TIMEOUT = VHOST_NET_ZC_GET_TIMEOUT;
const unsigned int VNZC_SET_RECLAIM = VHOST_NET_ZC_SET_RECLAIM;
const unsigned int VNZC_VM_RESET = VHOST_NET_ZC_VM_RESET;
const unsigned int VNZC_GET_STATS = VHOST_NET_ZC_GET_STATS;
/* The struct grows at its end; a VMM built against an older header asks for less of it. */
const unsigned int VNZC_STATS_V1_SIZE = offsetof(struct vhost_net_zc_stats, offline_pinned);
const unsigned int VNZC_GET_STATS_V1 = _IOC(_IOC_READ, VHOST_NET_ZC_IOC_TYPE, 0x04,
					    offsetof(struct vhost_net_zc_stats, offline_pinned));
