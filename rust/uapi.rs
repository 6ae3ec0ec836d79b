// SPDX-License-Identifier: GPL-2.0

//! The vhost-net ioctl ABI that `/dev/vhost-net-zc` speaks, and the feature bits it offers.
//!
//! Every number comes from the target kernel's headers through the generated bindings (the
//! ioctl numbers are evaluated by the C compiler in `rust/bindings_helper.h`), so the ABI
//! cannot drift from the kernel's.
//!
//! C header: [`include/uapi/linux/vhost.h`](srctree/include/uapi/linux/vhost.h).

use crate::ffi::bindings as b;

/// `VHOST_GET_FEATURES`: read the device's virtio feature bits 0..63.
pub(crate) const VHOST_GET_FEATURES: u32 = b::VNZC_VHOST_GET_FEATURES;
/// `VHOST_GET_FEATURES_ARRAY`: read feature words, count first.
pub(crate) const VHOST_GET_FEATURES_ARRAY: u32 = b::VNZC_VHOST_GET_FEATURES_ARRAY;
/// `VHOST_SET_FEATURES`: acknowledge virtio feature bits 0..63.
pub(crate) const VHOST_SET_FEATURES: u32 = b::VNZC_VHOST_SET_FEATURES;
/// `VHOST_SET_FEATURES_ARRAY`: acknowledge feature words, count first.
pub(crate) const VHOST_SET_FEATURES_ARRAY: u32 = b::VNZC_VHOST_SET_FEATURES_ARRAY;
/// `VHOST_GET_BACKEND_FEATURES`: read the vhost backend feature bits.
pub(crate) const VHOST_GET_BACKEND_FEATURES: u32 = b::VNZC_VHOST_GET_BACKEND_FEATURES;
/// `VHOST_SET_BACKEND_FEATURES`: acknowledge vhost backend feature bits.
pub(crate) const VHOST_SET_BACKEND_FEATURES: u32 = b::VNZC_VHOST_SET_BACKEND_FEATURES;
/// `VHOST_SET_OWNER`: make the calling process the owner.
pub(crate) const VHOST_SET_OWNER: u32 = b::VNZC_VHOST_SET_OWNER;
/// `VHOST_RESET_OWNER`: drop the owner and everything set up under it.
pub(crate) const VHOST_RESET_OWNER: u32 = b::VNZC_VHOST_RESET_OWNER;
/// `VHOST_NET_SET_BACKEND`: attach a tap/macvtap socket to a virtqueue, or detach (-1).
pub(crate) const VHOST_NET_SET_BACKEND: u32 = b::VNZC_VHOST_NET_SET_BACKEND;
/// `VHOST_SET_VRING_NUM`: the ring's size (the first of the calls that reprogram a ring).
pub(crate) const VHOST_SET_VRING_NUM: u32 = b::VNZC_VHOST_SET_VRING_NUM;
/// `VHOST_SET_VRING_BASE`: the ring's first available index.
pub(crate) const VHOST_SET_VRING_BASE: u32 = b::VNZC_VHOST_SET_VRING_BASE;
/// `VHOST_SET_VRING_ADDR`: the ring's addresses.
pub(crate) const VHOST_SET_VRING_ADDR: u32 = b::VNZC_VHOST_SET_VRING_ADDR;

/// `VHOST_NET_ZC_SET_TIMEOUT`: the deadline of zero-copy buffers sent from now on (ms).
pub(crate) const VHOST_NET_ZC_SET_TIMEOUT: u32 = b::VNZC_SET_TIMEOUT;
/// `VHOST_NET_ZC_GET_TIMEOUT`: read it.
pub(crate) const VHOST_NET_ZC_GET_TIMEOUT: u32 = b::VNZC_GET_TIMEOUT;
/// `VHOST_NET_ZC_SET_RECLAIM`: offline and return expired buffers at once (1) or at a
/// reset only (0).
pub(crate) const VHOST_NET_ZC_SET_RECLAIM: u32 = b::VNZC_SET_RECLAIM;
/// `VHOST_NET_ZC_VM_RESET`: offline every buffer in flight in discard mode, and return it.
pub(crate) const VHOST_NET_ZC_VM_RESET: u32 = b::VNZC_VM_RESET;
/// `VHOST_NET_ZC_GET_STATS`: read the counters (`struct vhost_net_zc_stats`).
pub(crate) const VHOST_NET_ZC_GET_STATS: u32 = b::VNZC_GET_STATS;
/// `VHOST_NET_ZC_GET_STATS` as VMMs built against the first version of the header issue it:
/// the struct up to `reclaim` (the command number encodes the size).
pub(crate) const VHOST_NET_ZC_GET_STATS_V1: u32 = b::VNZC_GET_STATS_V1;
/// The size of that first version of `struct vhost_net_zc_stats`.
pub(crate) const STATS_V1_SIZE: usize = b::VNZC_STATS_V1_SIZE as usize;

/// `struct vhost_net_zc_stats` (`include/uapi/linux/vhost_net_zc.h`), as written to user
/// space.
#[repr(transparent)]
pub(crate) struct Stats(pub(crate) b::vhost_net_zc_stats);

// SAFETY: `vhost_net_zc_stats` is fourteen `__u64`, two `__u32`, then two `__u64`: no
// padding, so every byte is initialised.
unsafe impl kernel::transmute::AsBytes for Stats {}

/// Feature bit: vhost, not the backend, handles the virtio-net header.
pub(crate) const VHOST_NET_F_VIRTIO_NET_HDR: u32 = b::VHOST_NET_F_VIRTIO_NET_HDR;

/// Feature bit: dirty-page logging of guest memory writes.
pub(crate) const VHOST_F_LOG_ALL: u32 = b::VHOST_F_LOG_ALL;

/// Feature bit: the device accesses guest memory through an IOMMU (here the device IOTLB).
pub(crate) const VIRTIO_F_ACCESS_PLATFORM: u32 = b::VIRTIO_F_ACCESS_PLATFORM;

/// Number of 64-bit words in the kernel's virtio feature array.
pub(crate) const FEATURE_WORDS: usize = b::VNZC_VIRTIO_FEATURES_U64S as usize;

const fn bit(nr: u32) -> u64 {
    1u64 << nr
}

/// The virtio features of word 0 (bits 0..63) this device offers to a VMM.
///
/// The vhost core's generic set (`VHOST_FEATURES` in `vhost.h`) plus the net header,
/// mergeable RX buffers, the per-queue reset (a queue's backend is detached, its ring
/// laid out again and the backend attached, which the device handles like any backend
/// change), in-order use of buffers (zero-copy heads are then returned in the order
/// taken, a stuck one offlined in place at its deadline: see `zerocopy::order`) and the
/// device IOTLB (`VIRTIO_F_ACCESS_PLATFORM`: the vhost core translates I/O virtual
/// addresses with the entries the VMM writes to the device file, which it polls for
/// misses): the same set as stock vhost-net 7.3.
pub(crate) const NET_FEATURES: u64 = bit(b::VIRTIO_F_NOTIFY_ON_EMPTY)
    | bit(b::VIRTIO_RING_F_INDIRECT_DESC)
    | bit(b::VIRTIO_RING_F_EVENT_IDX)
    | bit(b::VHOST_F_LOG_ALL)
    | bit(b::VIRTIO_F_ANY_LAYOUT)
    | bit(b::VIRTIO_F_VERSION_1)
    | bit(b::VHOST_NET_F_VIRTIO_NET_HDR)
    | bit(b::VIRTIO_NET_F_MRG_RXBUF)
    | bit(b::VIRTIO_F_RING_RESET)
    | bit(b::VIRTIO_F_IN_ORDER)
    | bit(b::VIRTIO_F_ACCESS_PLATFORM);

/// The virtio features of word 1 (bits 64..127): the UDP tunnel GSO offloads, as stock 7.3
/// offers them. The device only needs their header length
/// ([`NET_HDR_TUNNEL_LEN`]); the offloads themselves are the backend's.
pub(crate) const NET_FEATURES_WORD1: u64 =
    bit(b::VIRTIO_NET_F_GUEST_UDP_TUNNEL_GSO - 64) | bit(b::VIRTIO_NET_F_HOST_UDP_TUNNEL_GSO - 64);

/// Feature bit: the guest takes UDP tunnel GSO packets (word 1).
pub(crate) const VIRTIO_NET_F_GUEST_UDP_TUNNEL_GSO: u32 = b::VIRTIO_NET_F_GUEST_UDP_TUNNEL_GSO;

/// Feature bit: the device takes UDP tunnel GSO packets from the guest (word 1).
pub(crate) const VIRTIO_NET_F_HOST_UDP_TUNNEL_GSO: u32 = b::VIRTIO_NET_F_HOST_UDP_TUNNEL_GSO;

/// Length of `struct virtio_net_hdr_v1_hash_tunnel`, the header once a UDP tunnel GSO
/// feature is acknowledged.
pub(crate) const NET_HDR_TUNNEL_LEN: usize = b::VNZC_NET_HDR_TUNNEL_LEN as usize;

/// The vhost backend features this device offers, as stock vhost-net: the second format of
/// the device-IOTLB messages (`struct vhost_msg_v2`).
pub(crate) const BACKEND_FEATURES: u64 = bit(b::VHOST_BACKEND_F_IOTLB_MSG_V2);

/// Whether feature `bit` is set in `words`.
pub(crate) fn has_feature(words: &[u64; FEATURE_WORDS], bit: u32) -> bool {
    let word = usize::try_from(bit / 64).ok().and_then(|i| words.get(i));
    word.is_some_and(|w| w & (1u64 << (bit % 64)) != 0)
}

/// The feature words of `VHOST_SET_FEATURES`, which carries word 0 only.
pub(crate) fn features_from_u64(word0: u64) -> [u64; FEATURE_WORDS] {
    let mut words = [0u64; FEATURE_WORDS];
    if let Some(first) = words.first_mut() {
        *first = word0;
    }
    words
}

/// The feature words returned by `VHOST_GET_FEATURES_ARRAY`: words 0 and 1 have bits.
pub(crate) const fn feature_word(index: usize) -> u64 {
    match index {
        0 => NET_FEATURES,
        1 => NET_FEATURES_WORD1,
        _ => 0,
    }
}

#[kernel::macros::kunit_tests(vhost_net_zc_uapi)]
mod tests {
    use super::*;

    #[test]
    fn offered_features() {
        for nr in [
            b::VIRTIO_F_VERSION_1,
            b::VIRTIO_RING_F_INDIRECT_DESC,
            b::VIRTIO_RING_F_EVENT_IDX,
            b::VIRTIO_NET_F_MRG_RXBUF,
            b::VHOST_NET_F_VIRTIO_NET_HDR,
            b::VHOST_F_LOG_ALL,
            b::VIRTIO_F_RING_RESET,
            b::VIRTIO_F_IN_ORDER,
            b::VIRTIO_F_ACCESS_PLATFORM,
        ] {
            assert_ne!(NET_FEATURES & bit(nr), 0);
        }
        assert_eq!(BACKEND_FEATURES, bit(b::VHOST_BACKEND_F_IOTLB_MSG_V2));
        let words = [NET_FEATURES, NET_FEATURES_WORD1];
        assert!(has_feature(&words, VIRTIO_NET_F_GUEST_UDP_TUNNEL_GSO));
        assert!(has_feature(&words, VIRTIO_NET_F_HOST_UDP_TUNNEL_GSO));
        // The checksum variants of the tunnel offloads: not offered by stock 7.3 either.
        assert!(!has_feature(&words, VIRTIO_NET_F_GUEST_UDP_TUNNEL_GSO + 1));
        assert!(!has_feature(&words, VIRTIO_NET_F_HOST_UDP_TUNNEL_GSO + 1));
        assert_eq!(NET_HDR_TUNNEL_LEN, 24);
    }

    #[test]
    fn feature_bits() {
        let words = features_from_u64(bit(b::VIRTIO_F_VERSION_1) | bit(0));
        assert!(has_feature(&words, 0));
        assert!(has_feature(&words, b::VIRTIO_F_VERSION_1));
        assert!(!has_feature(&words, 1));
        assert!(!has_feature(&words, 64));
        assert!(!has_feature(&words, 64 * FEATURE_WORDS as u32));
        assert!(!has_feature(&words, u32::MAX));
    }

    #[test]
    fn feature_words() {
        assert_eq!(feature_word(0), NET_FEATURES);
        assert_eq!(feature_word(1), NET_FEATURES_WORD1);
        assert_eq!(feature_word(2), 0);
        assert_eq!(feature_word(FEATURE_WORDS), 0);
        assert_eq!(feature_word(usize::MAX), 0);
    }
}
