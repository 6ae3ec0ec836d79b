// SPDX-License-Identifier: GPL-2.0

//! The order in which TX heads go back to the guest under `VIRTIO_F_IN_ORDER`.
//!
//! With that feature the device must use buffers in the order the guest made them
//! available. A buffer sent zero-copy is done with only when the network stack frees its
//! skb, and stacks free skbs in any order, so a head taken after a zero-copy one waits for
//! it: [`TxOrder`] keeps, in the order they were taken, the heads from the oldest zero-copy
//! buffer still outstanding on, each either done or waiting for its slot. The done ones at
//! the front go to the used ring. While it is empty (no zero-copy buffer outstanding),
//! heads go to the used ring directly.
//!
//! A head waits for its zero-copy buffer no longer than the buffer's deadline where the
//! buffer's pages can be offlined without a window for the running guest: under
//! `VIRTIO_F_IN_ORDER` an expired buffer is offlined in place
//! ([`Mode::InPlace`](crate::offline::Mode::InPlace)) and its head is done at once, as
//! with reclaim on expiry (which offlines in preserve mode, anywhere). Where that is
//! refused (shared or hugetlb memory, a kernel without `vma_share_anon_pages()`), the
//! heads wait for the network stack or a reset, as they would on stock vhost-net.

use kernel::prelude::*;

use super::MAX_PEND;

/// Most heads held back in order, as stock vhost-net's ring of pending heads
/// (`UIO_MAXIOV`); the TX handler takes no further chain while it is full.
pub(crate) const ORDER_CAP: usize = 1024;

/// The `slot` of an entry that is done.
const DONE: u8 = u8::MAX;

// Every slot index fits in an entry, below `DONE`.
const _: () = assert!(MAX_PEND < DONE as usize);

/// TX heads taken and not yet returned, in the order taken: a ring of at most
/// [`ORDER_CAP`] entries.
///
/// # Invariants
///
/// `heads` and `slot` have `ORDER_CAP` elements; `first < ORDER_CAP` and
/// `len <= ORDER_CAP`; the entries are `first..first + len` (modulo `ORDER_CAP`); an entry
/// waiting for slot `s` is at `at[s]`.
pub(crate) struct TxOrder {
    heads: KVec<u16>,
    /// Per entry: the zero-copy slot the head waits for, or [`DONE`].
    slot: KVec<u8>,
    /// Per zero-copy slot: where its entry was put last.
    at: [u16; MAX_PEND],
    first: usize,
    len: usize,
}

impl TxOrder {
    /// An empty ring.
    ///
    /// # Errors
    ///
    /// `ENOMEM`.
    pub(crate) fn new() -> Result<Self> {
        // INVARIANT: `ORDER_CAP` elements each, and empty.
        Ok(Self {
            heads: KVec::from_elem(0, ORDER_CAP, GFP_KERNEL)?,
            slot: KVec::from_elem(DONE, ORDER_CAP, GFP_KERNEL)?,
            at: [0; MAX_PEND],
            first: 0,
            len: 0,
        })
    }

    /// Whether no head is held back.
    pub(crate) fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Whether no further head can be held back.
    pub(crate) fn is_full(&self) -> bool {
        self.len == ORDER_CAP
    }

    /// Appends `head`, waiting for zero-copy slot `slot` or, if `None`, done. Returns
    /// `false` (and holds nothing) if the ring is full.
    pub(crate) fn push(&mut self, head: u16, slot: Option<usize>) -> bool {
        if self.is_full() {
            return false;
        }
        let at = (self.first + self.len) % ORDER_CAP;
        self.heads[at] = head;
        self.slot[at] = DONE;
        if let Some(s) = slot.filter(|&s| s < MAX_PEND) {
            // In range: `s < MAX_PEND < DONE` and `at < ORDER_CAP <= u16::MAX`.
            self.slot[at] = s as u8;
            self.at[s] = at as u16;
        }
        // INVARIANT: the ring was not full.
        self.len += 1;
        true
    }

    /// The buffer of zero-copy slot `slot` is done with: so is the head waiting for it.
    /// Returns whether one was.
    pub(crate) fn complete(&mut self, slot: usize) -> bool {
        let Some(&at) = self.at.get(slot) else {
            return false;
        };
        let at = usize::from(at);
        // Only a live entry, still waiting for this slot (not one popped, or a later
        // entry's place).
        let live = (at + ORDER_CAP - self.first) % ORDER_CAP < self.len;
        if !live || usize::from(self.slot[at]) != slot {
            return false;
        }
        self.slot[at] = DONE;
        true
    }

    /// Moves the done heads at the front, in order, into `out`, as many as it holds.
    /// Returns how many.
    pub(crate) fn pop_done(&mut self, out: &mut [u16]) -> usize {
        let mut n = 0;
        while n < out.len() && self.len != 0 && self.slot[self.first] == DONE {
            out[n] = self.heads[self.first];
            n += 1;
            // INVARIANT: one entry fewer, starting at the next.
            self.first = (self.first + 1) % ORDER_CAP;
            self.len -= 1;
        }
        n
    }

    /// Forgets every head (their ring was reset). Returns how many there were.
    pub(crate) fn clear(&mut self) -> usize {
        let n = self.len;
        // INVARIANT: empty.
        self.first = 0;
        self.len = 0;
        n
    }
}

#[kernel::macros::kunit_tests(vhost_net_zc_order)]
mod tests {
    use super::*;

    #[test]
    fn held_until_the_oldest_is_done() -> Result {
        let mut o = TxOrder::new()?;
        let mut out = [0u16; 8];
        assert!(o.is_empty());
        assert!(o.push(10, Some(3)));
        assert!(o.push(11, None));
        assert!(o.push(12, Some(4)));
        assert!(o.push(13, None));
        // The front waits for slot 3: nothing goes, even though 11 is done.
        assert_eq!(o.pop_done(&mut out), 0);
        // Slot 4 first: still nothing.
        assert!(o.complete(4));
        assert_eq!(o.pop_done(&mut out), 0);
        assert!(o.complete(3));
        assert!(!o.complete(3));
        assert_eq!(o.pop_done(&mut out), 4);
        assert_eq!(out[..4], [10, 11, 12, 13]);
        assert!(o.is_empty());
        Ok(())
    }

    #[test]
    fn bounded_output_and_wrap() -> Result {
        let mut o = TxOrder::new()?;
        let mut out = [0u16; 3];
        // Around the end of the ring several times.
        for round in 0..5u16 {
            for i in 0..(ORDER_CAP as u16 - 1) {
                assert!(o.push(round.wrapping_add(i), None));
            }
            let mut next = round;
            loop {
                let n = o.pop_done(&mut out);
                if n == 0 {
                    break;
                }
                for &h in &out[..n] {
                    assert_eq!(h, next);
                    next = next.wrapping_add(1);
                }
            }
            assert_eq!(next, round.wrapping_add(ORDER_CAP as u16 - 1));
            assert!(o.is_empty());
        }
        Ok(())
    }

    #[test]
    fn slot_used_again() -> Result {
        let mut o = TxOrder::new()?;
        let mut out = [0u16; 4];
        assert!(o.push(1, Some(7)));
        assert!(o.complete(7));
        assert_eq!(o.pop_done(&mut out), 1);
        // The slot is free again: its old (popped) entry is not completed twice.
        assert!(!o.complete(7));
        assert!(o.push(2, Some(5)));
        assert!(o.push(3, Some(7)));
        assert!(o.complete(7));
        assert_eq!(o.pop_done(&mut out), 0);
        assert!(o.complete(5));
        assert_eq!(o.pop_done(&mut out), 2);
        assert_eq!(out[..2], [2, 3]);
        assert!(!o.complete(MAX_PEND));
        Ok(())
    }

    #[test]
    fn full_and_cleared() -> Result {
        let mut o = TxOrder::new()?;
        assert!(o.push(0, Some(0)));
        for i in 1..ORDER_CAP as u16 {
            assert!(o.push(i, None));
        }
        assert!(o.is_full());
        assert!(!o.push(9999, None));
        assert_eq!(o.clear(), ORDER_CAP);
        assert!(o.is_empty());
        let mut out = [0u16; 1];
        assert_eq!(o.pop_done(&mut out), 0);
        assert!(!o.complete(0));
        Ok(())
    }
}
