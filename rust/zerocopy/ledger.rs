// SPDX-License-Identifier: GPL-2.0

//! The owner's side of a zero-copy [`Pool`](super::Pool): which slots are reserved and for which heads,
//! their deadlines, what expired, was offlined or refused, the pages each buffer spans,
//! and the counters. Everything here is under the pool's mutex (taken with the virtqueue
//! mutex held); the completion side, lock-free, is the pool's ([`super`]).

use kernel::{
    prelude::*,
    time::{
        Delta,
        Instant,
        Monotonic, //
    },
};

use super::{
    order::TxOrder,
    MAX_PAGES,
    MAX_PEND,
    WORDS, //
};
use crate::offline::BufPage;

/// Counters of a pool, for statistics and the zero-copy heuristic.
#[derive(Clone, Copy, Default)]
pub(crate) struct Stats {
    /// Buffers sent zero-copy.
    pub(crate) sent: u64,
    /// Buffers whose completion was reaped.
    pub(crate) completed: u64,
    /// Of those, buffers the stack had to copy after all (delivered locally, for example).
    pub(crate) copied: u64,
    /// Buffers whose completion will not be written to the used ring (the ring was reset
    /// while they were in flight).
    pub(crate) abandoned: u64,
    /// Buffers found in flight past their deadline.
    pub(crate) expired: u64,
    /// Buffers sent by copy.
    pub(crate) sent_copy: u64,
    /// Of those, buffers handed to the socket in a batch (`TUN_MSG_PTR`).
    pub(crate) sent_batched: u64,
    /// Buffers whose pages were offlined (and whose heads were returned, if the ring could
    /// be reached).
    pub(crate) offlined: u64,
    /// Base pages offlined.
    pub(crate) offlined_pages: u64,
    /// Buffers that could not be offlined.
    pub(crate) offline_refused: u64,
    /// Of those, buffers with a page that may be pinned for DMA.
    pub(crate) offline_pinned: u64,
    /// Base pages not offlined because the page the skb holds is no longer mapped where
    /// the buffer was (the VMM remapped that memory since the send).
    pub(crate) offline_skipped_pages: u64,
    /// Time the last reset spent on zero-copy buffers, in ns.
    pub(crate) last_reset_wait: u64,
    /// The longest such time, in ns.
    pub(crate) max_reset_wait: u64,
}

/// The owner's side of a [`Pool`](super::Pool), under the pool's mutex (taken with the virtqueue mutex
/// held).
pub(crate) struct Ledger {
    /// Bit `i` set: slot `i` is reserved (sent, or about to be) and not yet reaped.
    pub(super) busy: [u64; WORDS],
    /// Bit `i` set: slot `i`'s head must not be returned (its ring was reset).
    pub(super) stale: [u64; WORDS],
    /// The head each busy slot stands for.
    pub(super) heads: [u16; MAX_PEND],
    /// Each busy slot's deadline.
    pub(super) deadline: [Option<Instant<Monotonic>>; MAX_PEND],
    /// Bit `i` set: slot `i` was found in flight past its deadline.
    pub(super) expired: [u64; WORDS],
    /// Bit `i` set: offlining slot `i` was refused; reclaim on expiry does not try again
    /// (a reset does).
    pub(super) refused: [u64; WORDS],
    /// The base pages of each busy slot's buffer: `MAX_PAGES` per slot, the first
    /// `npages[i]` of slot `i` used.
    pub(super) pages: KVVec<BufPage>,
    pub(super) npages: [u8; MAX_PEND],
    /// Pages offlined from each busy slot's buffer, until its skb is freed.
    pub(super) held: [u32; MAX_PEND],
    /// Expired buffers are offlined and returned at once, not only at a reset.
    pub(super) reclaim: bool,
    /// The deadline the pool's timer is armed for, if it is.
    pub(super) armed: Option<Instant<Monotonic>>,
    /// How long a buffer may stay in flight before it expires.
    pub(super) timeout: Delta,
    pub(super) stats: Stats,
    /// Packets and copied completions in the current window of the zero-copy heuristic.
    pub(super) window: (u32, u32),
    /// Under `VIRTIO_F_IN_ORDER`: the heads taken from the oldest zero-copy buffer still
    /// outstanding on, in order.
    pub(super) order: TxOrder,
    /// Bit `i` set: slot `i`'s head waits in `order` (its completion or offline marks it
    /// done there, rather than returning it).
    pub(super) ordered: [u64; WORDS],
    /// The TX ring was set again with the same identity while heads were still to come,
    /// and its used index could not be read then (a device IOTLB without a translation
    /// for it yet): whether it is the same ring or one reset in place is to be told before
    /// any head is written to it, by comparing its used index with this one, the last the
    /// device wrote ([`Ledger::ring_unverified`]). Attaching a backend reloads the
    /// device's copy from the ring, so it is kept here.
    ring_unverified: Option<u16>,
    /// The device's number, for its tracepoints.
    pub(crate) dev: u64,
}

/// A reserved slot, between [`Pool::reserve`](super::Pool::reserve) and the send's outcome.
pub(crate) struct Slot {
    pub(super) index: usize,
}

/// Bit `index` of a slot bitmap: its word and mask.
pub(super) fn bit(index: usize) -> (usize, u64) {
    (index / 64, 1u64 << (index % 64))
}

/// Whether `a` comes before `b` (`Instant` has no `Ord` for a clock that has none).
pub(crate) fn earlier(a: Instant<Monotonic>, b: Instant<Monotonic>) -> bool {
    (a - b).is_negative()
}

/// A set of slots, from [`Pool::victims`](super::Pool::victims).
pub(crate) struct SlotSet(pub(super) [u64; WORDS]);

impl SlotSet {
    /// The slots' indices, in order.
    pub(crate) fn iter(&self) -> impl Iterator<Item = usize> + '_ {
        (0..MAX_PEND).filter(|&i| {
            let (w, m) = bit(i);
            self.0[w] & m != 0
        })
    }

    /// Whether the set is empty.
    pub(crate) fn is_empty(&self) -> bool {
        self.0.iter().all(|&w| w == 0)
    }

    /// The set without the slots of `other`.
    pub(crate) fn without(mut self, other: &SlotSet) -> SlotSet {
        for (w, o) in self.0.iter_mut().zip(other.0.iter()) {
            *w &= !o;
        }
        self
    }
}

impl Ledger {
    /// An empty ledger whose buffers expire `timeout_ms` after they are sent.
    ///
    /// # Errors
    ///
    /// `ENOMEM`.
    pub(super) fn new(timeout_ms: u32, dev: u64) -> Result<Ledger> {
        Ok(Ledger {
            busy: [0; WORDS],
            stale: [0; WORDS],
            heads: [0; MAX_PEND],
            deadline: [None; MAX_PEND],
            expired: [0; WORDS],
            refused: [0; WORDS],
            pages: KVVec::from_elem(BufPage::default(), MAX_PEND * MAX_PAGES, GFP_KERNEL)?,
            npages: [0; MAX_PEND],
            held: [0; MAX_PEND],
            reclaim: false,
            armed: None,
            timeout: Delta::from_millis(i64::from(timeout_ms)),
            stats: Stats::default(),
            window: (0, 0),
            order: TxOrder::new()?,
            ordered: [0; WORDS],
            ring_unverified: None,
            dev,
        })
    }

    /// If the TX ring's identity is still to be checked before a head is written to it,
    /// the used index the ring must hold to be the same ring (see the field).
    pub(crate) fn ring_unverified(&self) -> Option<u16> {
        self.ring_unverified
    }

    /// Notes that the TX ring's identity could not be checked yet (with the used index the
    /// device last wrote), or that it was (`None`).
    pub(crate) fn set_ring_unverified(&mut self, last_used: Option<u16>) {
        self.ring_unverified = last_used;
    }

    /// Whether heads are held back in order: a head done with now must wait behind them
    /// ([`Ledger::hold_done`]) rather than go to the used ring.
    pub(crate) fn holding_order(&self) -> bool {
        !self.order.is_empty()
    }

    /// Whether no further head can be held back in order: the TX handler takes no chain
    /// until a completion or an offline makes room.
    pub(crate) fn order_full(&self) -> bool {
        self.order.is_full()
    }

    /// Holds back `head`, done with, behind the heads held in order. Returns `false` if
    /// there is no room (the caller checked [`Ledger::order_full`] first).
    pub(crate) fn hold_done(&mut self, head: u16) -> bool {
        self.order.push(head, None)
    }

    /// Slot `index`, just sent for `head`, is held in order until it completes.
    pub(super) fn hold_sent(&mut self, index: usize, head: u16) -> bool {
        let (w, m) = bit(index);
        if !self.order.push(head, Some(index)) {
            return false;
        }
        self.ordered[w] |= m;
        true
    }

    /// Slot `index` is done with (completed or offlined): if its head is held in order,
    /// it is marked done there, and `true` returned (the head must not be returned on its
    /// own).
    pub(crate) fn release_ordered(&mut self, index: usize) -> bool {
        let (w, m) = bit(index);
        if self.ordered[w] & m == 0 {
            return false;
        }
        self.ordered[w] &= !m;
        self.order.complete(index);
        true
    }

    /// Moves the heads at the front of the order that are done into `out`, in order, as
    /// many as it holds. Returns how many.
    pub(crate) fn pop_ordered(&mut self, out: &mut [u16]) -> usize {
        self.order.pop_done(out)
    }

    /// Reserved slots whose heads the guest has not had back: what counts against the
    /// limit of buffers in flight (an offlined buffer's head is the guest's again).
    pub(crate) fn holding(&self) -> usize {
        self.busy
            .iter()
            .zip(&self.stale)
            .map(|(b, s)| (b & !s).count_ones() as usize)
            .sum()
    }

    /// The base pages of slot `index`'s buffer.
    pub(crate) fn pages(&self, index: usize) -> &[BufPage] {
        let n = usize::from(self.npages.get(index).copied().unwrap_or(0));
        self.pages
            .get(index * MAX_PAGES..index * MAX_PAGES + n)
            .unwrap_or(&[])
    }

    /// Slot `index`'s pages were offlined: its head, returned, is the guest's again, and its
    /// completion is absorbed when it comes. Returns the head.
    pub(crate) fn offlined(&mut self, index: usize, pages: usize) -> u16 {
        let (w, m) = bit(index);
        self.stale[w] |= m;
        let pages = u32::try_from(pages).unwrap_or(u32::MAX);
        self.held[index] = pages;
        self.stats.offlined += 1;
        self.stats.offlined_pages += u64::from(pages);
        self.heads[index]
    }

    /// Slot `index` could not be offlined (`pinned`: for a possible DMA pin); it stays in
    /// flight.
    pub(crate) fn refused(&mut self, index: usize, pinned: bool) {
        let (w, m) = bit(index);
        if let Some(word) = self.refused.get_mut(w) {
            *word |= m;
        }
        self.stats.offline_refused += 1;
        self.stats.offline_pinned += u64::from(pinned);
    }

    /// The slots whose offlining was refused.
    pub(crate) fn refused_set(&self) -> SlotSet {
        SlotSet(self.refused)
    }

    /// Counts base pages skipped by an offline: no longer where the buffer was sent from.
    pub(crate) fn skipped_pages(&mut self, pages: usize) {
        self.stats.offline_skipped_pages += pages as u64;
    }

    /// Counts a buffer sent by copy.
    pub(crate) fn count_copy(&mut self) {
        self.stats.sent_copy += 1;
    }

    /// Counts a buffer sent by copy in a batch.
    pub(crate) fn count_batched(&mut self) {
        self.stats.sent_copy += 1;
        self.stats.sent_batched += 1;
    }

    /// Records the time a reset spent on zero-copy buffers.
    pub(crate) fn record_reset_wait(&mut self, spent: Delta) {
        let ns = u64::try_from(spent.as_nanos()).unwrap_or(0);
        self.stats.last_reset_wait = ns;
        self.stats.max_reset_wait = self.stats.max_reset_wait.max(ns);
        let reserved = self.busy.iter().map(|w| w.count_ones()).sum();
        crate::trace::reset(self.dev, ns, reserved);
    }

    /// The head slot `index` stands for.
    pub(crate) fn head(&self, index: usize) -> u16 {
        self.heads.get(index).copied().unwrap_or(0)
    }

    /// The deadline of buffers sent from now on, in ms.
    pub(crate) fn timeout_ms(&self) -> u32 {
        u32::try_from(self.timeout.as_millis()).unwrap_or(u32::MAX)
    }

    /// Sets the deadline of buffers sent from now on.
    pub(crate) fn set_timeout_ms(&mut self, ms: u32) {
        self.timeout = Delta::from_millis(i64::from(ms));
    }

    /// Whether expired buffers are offlined and returned at once.
    pub(crate) fn reclaim(&self) -> bool {
        self.reclaim
    }

    /// Sets reclaim on expiry.
    pub(crate) fn set_reclaim(&mut self, on: bool) {
        self.reclaim = on;
    }

    /// Marks every reserved slot stale: the ring they came from was reset, so their heads
    /// are dropped when they complete. Returns how many there were.
    pub(crate) fn abandon_all(&mut self) -> usize {
        let mut n = 0;
        for w in 0..WORDS {
            let fresh = self.busy[w] & !self.stale[w];
            n += fresh.count_ones() as usize;
            self.stale[w] |= self.busy[w];
        }
        // The heads held in order behind them belonged to that ring too.
        self.order.clear();
        self.ordered = [0; WORDS];
        self.ring_unverified = None;
        self.stats.abandoned += n as u64;
        n
    }

    /// The counters.
    pub(crate) fn stats(&self) -> Stats {
        self.stats
    }

    /// Milliseconds (rounded up) until the last deadline of the buffers in flight whose
    /// head is still to be returned; 0 if there is none or every deadline has passed.
    pub(crate) fn ms_to_last_deadline(&self) -> u32 {
        let now = Instant::<Monotonic>::now();
        let mut last = now;
        for w in 0..WORDS {
            let mut live = self.busy[w] & !self.stale[w];
            while live != 0 {
                let m = live & live.wrapping_neg();
                live &= !m;
                if let Some(d) = self.deadline[w * 64 + m.trailing_zeros() as usize] {
                    if earlier(last, d) {
                        last = d;
                    }
                }
            }
        }
        u32::try_from((last - now).as_millis_ceil()).unwrap_or(u32::MAX)
    }

    /// Buffers in flight past their deadline (marked by [`Pool::mark_expired`](super::Pool::mark_expired)).
    pub(crate) fn expired(&self) -> usize {
        self.expired
            .iter()
            .zip(&self.stale)
            .map(|(e, s)| (e & !s).count_ones() as usize)
            .sum()
    }

    /// The zero-copy heuristic of stock vhost-net: stop sending zero-copy while more than
    /// one packet in 64 of the current window came back copied (delivered to a local
    /// socket, where zero copy only costs), and start a new window every 1024 packets.
    pub(crate) fn worth_zerocopy(&mut self) -> bool {
        let (packets, copied) = self.window;
        if packets >= 1024 {
            self.window = (0, 0);
            return true;
        }
        packets / 64 >= copied
    }

    /// Counts a packet in the heuristic's window.
    pub(crate) fn count_packet(&mut self) {
        self.window.0 = self.window.0.saturating_add(1);
    }
}

#[kernel::macros::kunit_tests(vhost_net_zc_ledger)]
mod tests {
    use super::*;

    /// Marks slot `index` reserved for `head`, with a deadline `ms` from now, as
    /// [`Pool::reserve`](super::Pool::reserve) does (without a pool to hand it to).
    fn busy(l: &mut Ledger, index: usize, head: u16, ms: i64) {
        let (w, m) = bit(index);
        l.busy[w] |= m;
        l.heads[index] = head;
        l.deadline[index] = Some(Instant::now() + Delta::from_millis(ms));
    }

    #[test]
    fn lifecycle_counts() -> Result {
        let mut l = Ledger::new(1000, 0)?;
        assert_eq!(l.holding(), 0);
        assert_eq!(l.ms_to_last_deadline(), 0);
        busy(&mut l, 3, 30, 50);
        busy(&mut l, 64, 640, 5);
        busy(&mut l, 127, 1270, 5);
        assert_eq!(l.holding(), 3);
        let ms = l.ms_to_last_deadline();
        assert!(ms > 0 && ms <= 50);
        // Offlined: the guest has the head again; its deadline no longer bounds a reset.
        assert_eq!(l.offlined(3, 2), 30);
        assert_eq!(l.holding(), 2);
        assert!(l.ms_to_last_deadline() <= 5);
        assert_eq!(l.stats().offlined, 1);
        assert_eq!(l.stats().offlined_pages, 2);
        // Refused once: reclaim skips it.
        l.refused(64, true);
        assert!(!l.refused_set().is_empty());
        assert_eq!(l.stats().offline_pinned, 1);
        // Abandon counts only the heads not yet returned.
        assert_eq!(l.abandon_all(), 2);
        assert_eq!(l.stats().abandoned, 2);
        assert_eq!(l.holding(), 0);
        assert_eq!(l.abandon_all(), 0);
        Ok(())
    }

    #[test]
    fn slot_sets() {
        let a = SlotSet([0b1011, 1 << 63]);
        let b = SlotSet([0b0010, 1 << 63]);
        let c = a.without(&b);
        let mut it = c.iter();
        assert_eq!(it.next(), Some(0));
        assert_eq!(it.next(), Some(3));
        assert_eq!(it.next(), None);
        assert!(SlotSet([0, 0]).is_empty());
        assert!(!SlotSet([0, 1 << 63]).is_empty());
        assert_eq!(SlotSet([0, 1 << 63]).iter().next(), Some(127));
    }

    #[test]
    fn zerocopy_heuristic() -> Result {
        // (packets in the window, copied completions, worth zero copy): one copy in 64
        // packets is tolerated, at N-1, N, N+1.
        let cases: [(u32, u32, bool); 7] = [
            (0, 0, true),
            (63, 1, false),
            (64, 1, true),
            (65, 1, true),
            (127, 2, false),
            (128, 2, true),
            (1024, 1000, true),
        ];
        for (packets, copied, want) in cases {
            let mut l = Ledger::new(1000, 0)?;
            l.window = (packets, copied);
            assert_eq!(l.worth_zerocopy(), want);
        }
        Ok(())
    }
}
