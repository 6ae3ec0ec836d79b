// SPDX-License-Identifier: GPL-2.0

//! A reset of the TX queue's zero-copy buffers: what `VHOST_NET_SET_BACKEND` on TX,
//! `VHOST_RESET_OWNER`, the file's release and `VHOST_NET_ZC_VM_RESET` do with the buffers
//! the network stack still holds, in this order:
//!
//! 1. **settle** ([`settle`]): wait, killably and never past their last deadline, for the
//!    buffers whose heads the guest has not had back; return those that completed;
//! 2. **offline** ([`offline_and_return`]): the buffers still in flight are all expired
//!    then; their pages are offlined ([`crate::offline`]), all under one mmap lock;
//! 3. **return**: their heads go to the used ring, with one signal; a completion that
//!    comes later is absorbed (the slot is stale);
//! 4. **abandon** ([`quiesce_and_abandon`], owner reset and release only): whatever is
//!    still in flight (refused, or the VMM was exiting) is abandoned, its head never
//!    returned, after the pool was quiesced so that nothing reaches the workers the vhost
//!    core frees next.
//!
//! Reclaim on expiry runs step 2 and 3 from the TX handler, for expired buffers only.

use kernel::{
    mm::MmWithUser,
    prelude::*,
    sync::atomic::Atomic, //
};

use crate::{
    net::{
        self,
        NetState,
        NetVq,
        NVQS,
        TX, //
    },
    offline::{
        Mode,
        Offliner, //
    },
    vhost::{
        self,
        DevGuard, //
    },
    zerocopy::{
        self,
        Ledger,
        SlotSet, //
    },
};

/// Settles the TX queue's zero-copy buffers at a reset (TX backend change, owner reset,
/// close), with the device mutex held and the TX backend detached:
/// - buffers in flight are waited for, killably and never past the last of their
///   deadlines (none if the caller is exiting: its address space, the guest, is gone);
/// - those the stack released meanwhile are returned;
/// - those still in flight are then all expired: they are offlined in preserve mode and
///   returned; those that cannot be (memory offlining cannot serve, see
///   [`crate::offline`]) stay in flight.
///
/// Heads are written to the used ring only if the caller runs in the owner's address space,
/// where the ring is, and a device IOTLB, if there is one, translates the ring; otherwise
/// the offlined buffers' heads are dropped like abandoned ones.
pub(crate) fn settle(dev: &DevGuard<'_, NetState, NVQS>) {
    let pool = &dev.device().data().tx;
    let start = zerocopy::now();
    let exiting = vhost::caller_exiting();
    if !exiting {
        // Only the buffers whose heads are still to be returned, never past their last
        // deadline.
        let (live, wait) = {
            let ledger = pool.ledger();
            (pool.live(&ledger), ledger.ms_to_last_deadline())
        };
        let _ = pool.wait_done(&live, wait);
    }
    let Ok(vq) = dev.device().vq(TX as u32) else {
        return;
    };
    // Under a device IOTLB the ring may have no translation (QEMU's system_reset
    // invalidates the vIOMMU's mappings before it stops vhost; the prefetch asked the VMM,
    // the caller, for them): the heads are then dropped like a non-owner's, but the
    // buffers are offlined all the same, since the guest reuses their memory next.
    let ring = (dev.caller_is_owner_mm() && vq.ring_translated()).then_some(&vq);
    let mut ledger = pool.ledger();
    if let Some(vq) = ring {
        net::verify_ring(vq, &mut ledger);
        net::return_completed(vq, pool, &mut ledger);
    }
    pool.mark_expired(&mut ledger);
    let victims = pool.victims(&ledger, false);
    if !exiting && !victims.is_empty() {
        if let Some(mm) = dev.owner_mm() {
            offline_and_return(ring, &mut ledger, &mm, &victims, Mode::Preserve);
        }
    }
    ledger.record_reset_wait(zerocopy::now() - start);
}

/// The buffers an offline left in flight, and why.
pub(crate) struct Refused {
    /// How many could not be offlined (they stay in flight).
    pub(crate) count: usize,
    /// The last reason: `ENOMEM` (no memory for the offline's bookkeeping or a replacement
    /// page: may be tried again), `EINTR` (killed while waiting for the mmap lock),
    /// `EBUSY` (a page may be pinned for DMA) or `EOPNOTSUPP` (memory that cannot be
    /// offlined in this mode); `None` if `count` is 0.
    pub(crate) error: Option<Error>,
}

/// Offlines the buffers `victims` in `mode`, all under one mmap lock, and, if `vq` is
/// given, returns their heads. Returns what could not be offlined.
pub(crate) fn offline_and_return(
    vq: Option<&NetVq<'_>>,
    ledger: &mut Ledger,
    mm: &MmWithUser,
    victims: &SlotSet,
    mode: Mode,
) -> Refused {
    let mut heads = [0u16; zerocopy::MAX_PEND];
    let mut order = [0usize; zerocopy::MAX_PEND];
    let (mut n, mut refused) = (0, 0);
    let (mut last_err, mut quiet_err) = (None, None);
    let (bufs, pages) = victims.iter().fold((0, 0), |(b, p), index| {
        (b + 1, p + ledger.pages(index).len())
    });
    match Offliner::new(mm, bufs, pages) {
        Ok(mut offliner) => {
            for (slot, index) in order.iter_mut().zip(victims.iter()) {
                *slot = index;
                offliner.add(ledger.pages(index), mode);
            }
            let report = offliner.finish();
            for (&index, outcome) in order.iter().zip(report.bufs.iter()) {
                match outcome {
                    Ok(out) => {
                        ledger.skipped_pages(out.skipped);
                        let head = ledger.offlined(index, out.offlined);
                        crate::trace::offline(
                            ledger.dev,
                            index as u32,
                            head,
                            u32::try_from(out.offlined).unwrap_or(u32::MAX),
                            matches!(mode, Mode::Discard),
                        );
                        vhost::debug(
                            c"TX: offlined a zero-copy buffer (head, pages)",
                            head,
                            out.offlined,
                        );
                        // A head held in order goes with the order, below.
                        if !ledger.release_ordered(index) {
                            heads[n] = head;
                            n += 1;
                        }
                    }
                    Err(e) => {
                        ledger.refused(index, *e == EBUSY);
                        let head = ledger.head(index);
                        crate::trace::offline_refused(ledger.dev, index as u32, head, e.to_errno());
                        last_err = Some(*e);
                        refused += 1;
                    }
                }
            }
            // Buffers the offliner had no room to note stay in flight.
            if report.bufs.len() < bufs {
                refused += bufs - report.bufs.len();
                quiet_err = Some(ENOMEM);
            }
            if let Some(e) = report.hole_error {
                last_err = Some(e);
            }
            // Discard zeroed them: a migration must send them again.
            if let Some(vq) = vq {
                for &(start, len) in &report.changed {
                    if let Err(e) = vq.log_hva(start, len) {
                        vhost::debug(c"TX: dirty log write failed (errno)", e.to_errno(), 0);
                    }
                }
            }
        }
        // Killed while waiting for the lock, or no memory to note the buffers: they stay
        // in flight, not refused.
        Err(e) => {
            refused = bufs;
            quiet_err = Some(e);
        }
    }
    if let Some(e) = last_err {
        if crate::ratelimit(&OFFLINE_WARNED) {
            pr_warn!(
                "{} zero-copy TX buffers could not be offlined in {} mode (errno {}: {}); they stay in flight until the network stack frees them\n",
                refused,
                match mode {
                    Mode::Preserve => "preserve",
                    Mode::Discard => "discard",
                    Mode::InPlace => "in-place",
                },
                -e.to_errno(),
                refusal(e),
            );
        }
    }
    if let Some(vq) = vq {
        if n != 0 {
            vq.add_used_heads_and_signal(&heads[..n]);
        }
    }
    // Under IN_ORDER: the heads now done at the front of the order, those offlined and
    // those taken after them, in order (dropped with the offlined ones without a ring).
    loop {
        let k = ledger.pop_ordered(&mut heads);
        if k == 0 {
            break;
        }
        if let Some(vq) = vq {
            vq.add_used_heads_and_signal(&heads[..k]);
        }
    }
    Refused {
        count: refused,
        error: if refused == 0 {
            None
        } else {
            last_err.or(quiet_err)
        },
    }
}

/// When the last warning about refused buffers was printed (see [`crate::ratelimit`]).
static OFFLINE_WARNED: Atomic<i64> = Atomic::new(i64::MIN);

/// What an offline's errno means, for the log.
fn refusal(e: Error) -> &'static str {
    if e == EBUSY {
        "a page may be pinned for DMA"
    } else if e == ENOMEM {
        "no memory for a replacement page (or no free huge page)"
    } else if e == EOPNOTSUPP {
        "memory shared with a file, not writable, userfaultfd-registered, or not pages (in-place mode: also hugetlb, or no vma_share_anon_pages())"
    } else {
        "the page could not be replaced"
    }
}

/// Step 4 of a reset (see the [module documentation](self)): quiesces the pool (timer
/// cancelled, waker cleared, an RCU grace period) and abandons what is still in flight.
pub(crate) fn quiesce_and_abandon(dev: &DevGuard<'_, NetState, NVQS>) {
    let pool = &dev.device().data().tx;
    let Ok(_vq) = dev.device().vq(TX as u32) else {
        return;
    };
    let mut ledger = pool.ledger();
    pool.quiesce(&mut ledger);
    let abandoned = ledger.abandon_all();
    let stats = ledger.stats();
    vhost::debug(
        c"TX: zero-copy buffers sent, completed",
        stats.sent,
        stats.completed,
    );
    if abandoned != 0 {
        vhost::debug(c"TX: zero-copy buffers abandoned at reset", abandoned, 0);
    }
}
