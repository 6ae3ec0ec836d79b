// SPDX-License-Identifier: GPL-2.0

//! Zero-copy TX: the buffers of a TX virtqueue that are in flight in skbs.
//!
//! A chain sent zero-copy leaves the guest's pages in the skb's frags. Its head goes back to
//! the guest only when the network stack drops the last reference to the `ubuf_info` handed
//! to `sendmsg()` (`TUN_MSG_UBUF`) and calls its completion. A [`Pool`] is the table of those
//! buffers for one virtqueue: [`MAX_PEND`] slots, each with its own `ubuf_info_msgzc`.
//!
//! Two sides touch a pool:
//! - the completion, in any context (softirq included) and concurrently with everything
//!   else: it only marks its slot done, wakes the virtqueue's worker and any waiter, and
//!   drops the slot's reference to the pool;
//! - the owner (the TX handler and the ioctls, under the virtqueue mutex), through the
//!   [`Ledger`]: it reserves slots, reaps completed ones for the used ring, and waits for
//!   the pool to go idle.
//!
//! Completions are reaped in the order they happen, not in the order the buffers were sent,
//! so one stuck skb does not hold back the heads of later ones.
//!
//! A pool outlives its device while skbs still reference it: every buffer in flight holds a
//! reference to the pool, and the pool holds a reference to the module, which it drops from
//! an RCU callback after it is freed. While any skb may still call the completion, `rmmod`
//! therefore gets `EBUSY`; the module's exit waits for pending RCU callbacks
//! ([`kernel::sync::rcu::rcu_barrier`]), so none runs in an unloaded module.
//!
//! C header: [`include/linux/skbuff.h`](srctree/include/linux/skbuff.h) (`struct ubuf_info`).

use core::ptr::{
    addr_of,
    addr_of_mut,
    NonNull, //
};

use kernel::{
    bindings as kb,
    new_mutex,
    prelude::*,
    sync::{
        atomic::{
            Acquire,
            Atomic,
            Full,
            Relaxed,
            Release, //
        },
        rcu,
        Mutex,
        MutexGuard,
        Refcount, //
    },
    time::{
        Delta,
        Instant,
        Monotonic, //
    },
    types::Opaque,
    ModuleMetadata, //
};

mod ledger;
mod order;
mod timer;

use ledger::bit;
pub(crate) use ledger::{
    earlier,
    Ledger,
    Slot,
    SlotSet, //
};
use timer::DeadlineTimer;

use crate::{
    ffi::bindings,
    offline::BufPage,
    vhost::Waker, //
};

/// Most zero-copy buffers one virtqueue has in flight, as stock vhost-net's `VHOST_MAX_PEND`.
pub(crate) const MAX_PEND: usize = 128;

/// Most address ranges a buffer sent zero-copy may have: tap and macvtap send zero-copy
/// at most `MAX_SKB_FRAGS` pages (17 by default) past a linear part they copy; a chain
/// with more ranges is sent by copy.
pub(crate) const MAX_RANGES: usize = 20;

/// Most base pages a buffer sent zero-copy may span (a 64 KiB frame over 17 ranges, none
/// page-aligned, spans at most 34); a chain spanning more is sent by copy.
pub(crate) const MAX_PAGES: usize = 40;

/// Words of a slot bitmap.
const WORDS: usize = MAX_PEND / 64;

/// How late the deadline timer may fire, to let the kernel batch it with others.
pub(crate) const TIMER_SLACK: Delta = Delta::from_micros(100);

/// `CLOCK_MONOTONIC` now.
pub(crate) fn now() -> Instant<Monotonic> {
    Instant::now()
}

/// The completion the network stack calls for every `ubuf_info` of a pool.
static UBUF_OPS: kb::ubuf_info_ops = kb::ubuf_info_ops {
    complete: Some(complete),
    link_skb: None,
};

/// The zero-copy buffers of one TX virtqueue. See the [module documentation](self).
///
/// # Invariants
///
/// - `ubufs[i]` is handed to the network stack only while bit `i` of the ledger's `busy` is
///   set, with its `ctx` pointing at this pool and `desc` equal to `i`.
/// - `refs` counts the [`PoolRef`] of the owner (while it exists) plus one per buffer the
///   network stack holds (reserved and not yet completed); the pool is freed, after an RCU
///   grace period, when it drops to zero.
/// - `inflight` is the number of buffers the network stack holds.
/// - `waker` is null or the worker of a live virtqueue; it is cleared, and an RCU grace
///   period waited for, before that virtqueue goes away.
/// - `timer` is only started by the owner (under the ledger's mutex) and is cancelled
///   before the owner's reference is dropped.
/// - The pool holds one reference to this module (see [`Pool::free`]).
#[pin_data]
pub(crate) struct Pool {
    ubufs: [Opaque<kb::ubuf_info_msgzc>; MAX_PEND],
    /// Bit `i` set: slot `i`'s completion ran and the owner has not reaped it yet.
    done: [Atomic<u64>; WORDS],
    /// Bit `i` set: slot `i`'s completion was reaped, until the slot is reserved again. Set
    /// before its `done` bit is taken, so a reset waiting for the slot sees one of the two
    /// ([`Pool::wait_done`]) even when the handler reaps the completion first.
    reaped: [Atomic<u64>; WORDS],
    /// Bit `i` set: slot `i` completed after its frags were copied (no zero copy happened).
    copied: [Atomic<u64>; WORDS],
    inflight: Atomic<i32>,
    /// Woken by every completion, for a reset waiting for its buffers ([`Pool::wait_done`]).
    #[pin]
    idle: Opaque<kb::wait_queue_head>,
    refs: Refcount,
    waker: Atomic<*mut bindings::vhost_virtqueue>,
    rcu: Opaque<kb::callback_head>,
    /// Fires at the earliest deadline of the buffers in flight; queues the handler, which
    /// marks what expired.
    #[pin]
    timer: DeadlineTimer,
    #[pin]
    ledger: Mutex<Ledger>,
    /// The device's number, for its tracepoints.
    dev: u64,
}

// SAFETY: The C parts (`ubufs`, `idle`, `rcu`) are only accessed through the kernel's own
// synchronisation (the slot protocol above, the wait queue's lock, RCU); the rest is atomics
// and a mutex.
unsafe impl Send for Pool {}
// SAFETY: As for `Send`.
unsafe impl Sync for Pool {}

/// Atomically sets `mask` in `word`.
fn set_bits(word: &Atomic<u64>, mask: u64) {
    let mut old = word.load(Relaxed);
    // Release: the completion's effects are visible to whoever sees the bit.
    while let Err(seen) = word.cmpxchg(old, old | mask, Release) {
        old = seen;
    }
}

/// Atomically clears `mask` in `word`; returns whether any of it was set.
fn take_bits(word: &Atomic<u64>, mask: u64) -> bool {
    let mut old = word.load(Relaxed);
    loop {
        if old & mask == 0 {
            return false;
        }
        // Full: what was stored before (a `reaped` bit) is seen by whoever sees the clear.
        match word.cmpxchg(old, old & !mask, Full) {
            Ok(_) => return true,
            Err(seen) => old = seen,
        }
    }
}

/// The completion of every pool's `ubuf_info`: the network stack dropped a reference.
///
/// # Safety
///
/// `uarg` must be a `ubuf_info` of a [`Pool`], handed to the stack by [`Pool::reserve`] and
/// still referenced by the caller (the stack's contract for `ubuf_info_ops::complete`).
unsafe extern "C" fn complete(_skb: *mut kb::sk_buff, uarg: *mut kb::ubuf_info, success: bool) {
    // SAFETY: `refcnt` is a `refcount_t`, which `Refcount` wraps transparently; the caller
    // holds a reference, so `uarg` is live.
    let refcnt = unsafe { &*addr_of!((*uarg).refcnt).cast::<Refcount>() };
    if !refcnt.dec_and_test() {
        return;
    }
    // SAFETY: Every `ubuf_info` a pool hands out is the `ubuf` field of one of its
    // `ubuf_info_msgzc` (type invariant of `Pool`).
    let zc = unsafe { kernel::container_of!(uarg, kb::ubuf_info_msgzc, ubuf) };
    // SAFETY: `ctx` and `desc` were set by `reserve()` and are not written until the slot is
    // reaped, which needs this completion first.
    let (pool, index) = unsafe {
        let ids = (*zc).__bindgen_anon_1.__bindgen_anon_1;
        (ids.ctx.cast::<Pool>(), ids.desc)
    };
    // SAFETY: The slot's reference to the pool, dropped only below, keeps it alive.
    unsafe { (*pool).completed(index, success) };
}

impl Pool {
    /// Creates an empty pool of device number `dev` whose buffers expire `timeout_ms` after
    /// they are sent. The pool takes a reference to the module; the owner's reference to it
    /// is returned.
    ///
    /// # Errors
    ///
    /// `ENOMEM`.
    pub(crate) fn create(timeout_ms: u32, dev: u64) -> Result<PoolRef> {
        let ledger = Ledger::new(timeout_ms, dev)?;
        let pool = KBox::pin_init(
            pin_init!(Pool {
                ubufs: [const { Opaque::zeroed() }; MAX_PEND],
                done: [const { Atomic::new(0) }; WORDS],
                reaped: [const { Atomic::new(0) }; WORDS],
                copied: [const { Atomic::new(0) }; WORDS],
                inflight: Atomic::new(0),
                idle <- Opaque::ffi_init(|wq| {
                    // SAFETY: `wq` is valid for writes and pinned; the name and the lock
                    // class key are static.
                    unsafe {
                        kb::__init_waitqueue_head(
                            wq,
                            c"vhost_net_zc_idle".as_char_ptr(),
                            kernel::static_lock_class!().as_ptr(),
                        )
                    }
                }),
                refs: Refcount::new(1),
                waker: Atomic::new(core::ptr::null_mut()),
                rcu: Opaque::zeroed(),
                // SAFETY: The callback only uses the pool the timer is embedded in, which
                // the timer cannot outlive (it is cancelled when dropped).
                timer <- unsafe { DeadlineTimer::new(Self::deadline_passed) },
                ledger <- new_mutex!(ledger, "Pool::ledger"),
                dev,
            }),
            GFP_KERNEL,
        )?;
        // SAFETY: The module is live: this runs in one of its file operations, whose file
        // holds a reference to it. The reference is dropped by `free()`.
        unsafe { kb::__module_get(crate::LocalModule::THIS_MODULE.as_ptr()) };
        // SAFETY: The pool is not moved out of its allocation: `PoolRef` only hands out
        // shared references, and `free()` rebuilds the box to drop it.
        let raw = KBox::into_raw(unsafe { Pin::into_inner_unchecked(pool) });
        // INVARIANT: the owner's reference is the initial one.
        Ok(PoolRef {
            pool: NonNull::new(raw).ok_or(ENOMEM)?,
        })
    }

    /// Takes the owner's side. Lock order: after the virtqueue mutex.
    pub(crate) fn ledger(&self) -> MutexGuard<'_, Ledger> {
        self.ledger.lock()
    }

    /// The number of buffers in flight.
    pub(crate) fn inflight(&self) -> usize {
        usize::try_from(self.inflight.load(Relaxed)).unwrap_or(0)
    }

    /// Makes completions queue `waker`'s virtqueue handler, which reaps them.
    pub(crate) fn attach(&self, waker: &Waker<'_>) {
        // INVARIANT: `Waker`s only exist for live virtqueues; the owner detaches the pool
        // before its virtqueue goes away (`PoolRef::drop`).
        self.waker.store(waker.as_ptr(), Release);
    }

    /// Reserves a slot for the chain `head`, whose buffer is the base pages `pages` of the
    /// owner's address space, if fewer than `limit` heads are held in flight and the buffer
    /// has at most [`MAX_PAGES`] pages. The caller sends it with [`Pool::ubuf`] and reports
    /// the outcome with [`Pool::sent`] or [`Pool::cancel`].
    pub(crate) fn reserve(
        &self,
        ledger: &mut Ledger,
        head: u16,
        limit: usize,
        pages: &[BufPage],
    ) -> Option<Slot> {
        if ledger.holding() >= limit || pages.len() > MAX_PAGES {
            return None;
        }
        let index = ledger.busy.iter().enumerate().find_map(|(w, busy)| {
            let free = !busy;
            (free != 0).then(|| w * 64 + free.trailing_zeros() as usize)
        })?;
        let (w, m) = bit(index);
        ledger.busy[w] |= m;
        ledger.stale[w] &= !m;
        ledger.expired[w] &= !m;
        ledger.refused[w] &= !m;
        take_bits(&self.reaped[w], m);
        ledger.heads[index] = head;
        // In bounds: `pages.len() <= MAX_PAGES`, checked above.
        if let Some(to) = ledger
            .pages
            .get_mut(index * MAX_PAGES..index * MAX_PAGES + pages.len())
        {
            to.copy_from_slice(pages);
        }
        ledger.npages[index] = pages.len() as u8;
        ledger.held[index] = 0;
        let deadline = now() + ledger.timeout;
        ledger.deadline[index] = Some(deadline);
        self.arm(ledger, deadline);
        let zc = self.ubufs[index].get();
        // SAFETY: Slot `index` was not busy, so the network stack holds no reference to its
        // `ubuf_info`, and nothing else writes it (the ledger is locked).
        // INVARIANT: `ctx` is this pool and `desc` the slot's index.
        unsafe {
            zc.write_bytes(0, 1);
            (*zc).ubuf.ops = &UBUF_OPS;
            (*zc).ubuf.flags = (kb::SKBFL_ZEROCOPY_ENABLE | kb::SKBFL_SHARED_FRAG) as u8;
            (*addr_of!((*zc).ubuf.refcnt).cast::<Refcount>()).set(1);
            (*zc).__bindgen_anon_1.__bindgen_anon_1 =
                kb::ubuf_info_msgzc__bindgen_ty_1__bindgen_ty_1 {
                    desc: index,
                    ctx: core::ptr::from_ref(self).cast_mut().cast(),
                };
        }
        // INVARIANT: the stack may hold the buffer from now on: count it and its reference.
        self.refs.inc();
        self.inflight.add(1, Relaxed);
        Some(Slot { index })
    }

    /// The slot's `ubuf_info`, for `sendmsg()`.
    pub(crate) fn ubuf(&self, slot: &Slot) -> *mut kb::ubuf_info {
        // SAFETY: In bounds: `slot.index < MAX_PEND`.
        unsafe { addr_of_mut!((*self.ubufs[slot.index].get()).ubuf) }
    }

    /// The send of `slot` succeeded: the network stack completes it. `in_order`
    /// (`VIRTIO_F_IN_ORDER`): its head is held in order, and heads taken after it wait
    /// for it. Returns `false` if the order had no room for it (the caller checked
    /// [`Ledger::order_full`] first); its head is then returned on its own.
    pub(crate) fn sent(&self, ledger: &mut Ledger, slot: Slot, in_order: bool) -> bool {
        let held = !in_order || ledger.hold_sent(slot.index, ledger.head(slot.index));
        ledger.stats.sent += 1;
        let pages = ledger.npages.get(slot.index).copied().unwrap_or(0);
        crate::trace::zc_send(
            ledger.dev,
            slot.index as u32,
            ledger.head(slot.index),
            u32::from(pages),
        );
        held
    }

    /// The send of `slot` failed. The socket either never attached the `ubuf_info` to an
    /// skb or already completed it, synchronously; either way the slot is free again.
    pub(crate) fn cancel(&self, ledger: &mut Ledger, slot: Slot) {
        let (w, m) = bit(slot.index);
        ledger.busy[w] &= !m;
        if take_bits(&self.done[w], m) {
            // The completion ran: it dropped its counts already.
            take_bits(&self.copied[w], m);
            return;
        }
        // SAFETY: Never attached, so no one else holds the pool through this slot; the
        // owner's reference keeps the pool alive past this call.
        unsafe { self.release_one() };
    }

    /// Slot `index` completed (called once per reserved slot, by [`complete`]).
    ///
    /// # Safety
    ///
    /// Slot `index` must be in flight, and this call consumes its reference to the pool:
    /// `self` may be freed (after an RCU grace period) once it returns.
    unsafe fn completed(&self, index: usize, success: bool) {
        crate::trace::zc_complete(self.dev, index as u32, !success);
        let (w, m) = bit(index);
        if !success {
            set_bits(&self.copied[w], m);
        }
        set_bits(&self.done[w], m);
        // SAFETY: `idle` was initialised in `create()`; the slot's reference keeps the pool
        // alive until `release_one()` below.
        unsafe { bindings::vnzc_wake_waiters(self.idle.get()) };
        let guard = rcu::read_lock();
        let vq = self.waker.load(Acquire);
        if !vq.is_null() {
            // SAFETY: A non-null waker is a live virtqueue, kept so until a grace period
            // after it is cleared (type invariant); this is an RCU read-side section.
            unsafe { Waker::wake_raw(vq) };
        }
        drop(guard);
        // SAFETY: This is the slot's own reference.
        unsafe { self.release_one() };
    }

    /// Drops the counts of one buffer that left the network stack.
    ///
    /// # Safety
    ///
    /// The caller gives up one reference of `refs` that a buffer held; `self` may be freed
    /// once this returns unless the caller holds another.
    unsafe fn release_one(&self) {
        self.inflight.fetch_sub(1, Full);
        // SAFETY: Forwarded from the caller.
        unsafe { Self::put(core::ptr::from_ref(self)) };
    }

    /// Drops a reference; the last one frees the pool after an RCU grace period.
    ///
    /// # Safety
    ///
    /// The caller owns one reference of `(*pool).refs` and does not use `pool` afterwards.
    unsafe fn put(pool: *const Pool) {
        // SAFETY: The caller's reference keeps the pool alive.
        let pool = unsafe { &*pool };
        if pool.refs.dec_and_test() {
            // SAFETY: No reference is left, so nothing but a reader that found the pool
            // before may still look at it, and the RCU callback waits for those.
            unsafe { kb::call_rcu(pool.rcu.get(), Some(Self::free)) };
        }
    }

    /// Drops a reference in process context, where the device lets go of the pool (its
    /// release): the last one frees the pool and drops its module reference before this
    /// returns, an RCU grace period later, so that the module can be unloaded as soon as
    /// the VMM has closed its last device, as stock vhost-net can. Returns whether it was
    /// the last. A buffer's reference, dropped where the stack frees the skb, goes through
    /// [`Pool::put`] instead.
    ///
    /// # Safety
    ///
    /// The caller owns one reference of `(*pool).refs`, does not use `pool` afterwards, and
    /// may sleep.
    unsafe fn put_sync(pool: *const Pool) -> bool {
        // SAFETY: The caller's reference keeps the pool alive.
        if !unsafe { &*pool }.refs.dec_and_test() {
            return false;
        }
        // Readers that found the pool before the last reference went have left it.
        rcu::synchronize_rcu();
        // SAFETY: No reference is left, and no reader (the grace period above).
        unsafe { Self::free_now(pool) };
        true
    }

    /// Frees a pool whose last reference was dropped, from the RCU callback that
    /// [`Pool::put`] queued.
    ///
    /// # Safety
    ///
    /// `head` must be the `rcu` of a pool with no references left, queued by [`Pool::put`].
    unsafe extern "C" fn free(head: *mut kb::callback_head) {
        // SAFETY: `head` is the `rcu` field of a `Pool` (function contract).
        let pool = unsafe { kernel::container_of!(Opaque::cast_from(head), Pool, rcu) };
        // SAFETY: The callback runs after a grace period, with no reference left.
        unsafe { Self::free_now(pool) };
    }

    /// Frees a pool and drops its module reference.
    ///
    /// # Safety
    ///
    /// `pool` has no references left and no RCU reader may still look at it.
    unsafe fn free_now(pool: *const Pool) {
        // SAFETY: The pool was leaked from a `KBox` by `new()` and nothing references it.
        drop(unsafe { KBox::from_raw(pool.cast_mut()) });
        // SAFETY: The reference `new()` took. The module's exit waits for RCU callbacks
        // (`rcu_barrier()`), so a callback calling this finishes before the module's text
        // is freed; a caller in process context runs in a file operation of the module,
        // whose file holds another reference.
        unsafe { kb::module_put(crate::LocalModule::THIS_MODULE.as_ptr()) };
    }

    /// Takes the completed slots out of the table: their heads go to `heads` (up to its
    /// length; the rest stay for the next call) unless they are stale, or held in order
    /// (then the done heads at the front of the order go, in order). Returns how many
    /// heads were written.
    pub(crate) fn reap(&self, ledger: &mut Ledger, heads: &mut [u16]) -> usize {
        let mut n = 0;
        for w in 0..WORDS {
            let mut pending = self.done[w].load(Acquire) & ledger.busy[w];
            while pending != 0 {
                let m = pending & pending.wrapping_neg();
                pending &= !m;
                let stale = ledger.stale[w] & m != 0;
                let ordered = ledger.ordered[w] & m != 0;
                if !stale && !ordered && n == heads.len() {
                    return n;
                }
                set_bits(&self.reaped[w], m);
                take_bits(&self.done[w], m);
                let copied = take_bits(&self.copied[w], m);
                ledger.busy[w] &= !m;
                ledger.stale[w] &= !m;
                ledger.expired[w] &= !m;
                ledger.stats.completed += 1;
                let index = w * 64 + m.trailing_zeros() as usize;
                ledger.held[index] = 0;
                if copied {
                    ledger.stats.copied += 1;
                    ledger.window.1 = ledger.window.1.saturating_add(1);
                }
                if stale || ledger.release_ordered(index) {
                    continue;
                }
                heads[n] = ledger.heads[index];
                n += 1;
            }
        }
        n + heads
            .get_mut(n..)
            .map_or(0, |rest| ledger.pop_ordered(rest))
    }

    /// Makes the timer fire by `deadline` at the latest.
    fn arm(&self, ledger: &mut Ledger, deadline: Instant<Monotonic>) {
        if ledger.armed.is_some_and(|armed| !earlier(deadline, armed)) {
            return;
        }
        ledger.armed = Some(deadline);
        // The owner starts the timer under the ledger's mutex and cancels it before it lets
        // go of the pool (type invariant).
        self.timer.start(deadline, TIMER_SLACK);
    }

    /// Marks the buffers in flight past their deadline as expired and re-arms the timer for
    /// the earliest deadline left. Returns how many expired now.
    pub(crate) fn mark_expired(&self, ledger: &mut Ledger) -> usize {
        let now = now();
        let mut newly = 0;
        let mut next: Option<Instant<Monotonic>> = None;
        for w in 0..WORDS {
            let mut live = ledger.busy[w]
                & !ledger.expired[w]
                & !ledger.stale[w]
                & !self.done[w].load(Acquire);
            while live != 0 {
                let m = live & live.wrapping_neg();
                live &= !m;
                let index = w * 64 + m.trailing_zeros() as usize;
                match ledger.deadline[index] {
                    Some(deadline) if earlier(now, deadline) => {
                        if next.is_none_or(|n| earlier(deadline, n)) {
                            next = Some(deadline);
                        }
                    }
                    _ => {
                        ledger.expired[w] |= m;
                        newly += 1;
                        crate::trace::zc_expire(ledger.dev, index as u32, ledger.heads[index]);
                    }
                }
            }
        }
        ledger.stats.expired += newly as u64;
        ledger.armed = None;
        if let Some(next) = next {
            self.arm(ledger, next);
        }
        newly
    }

    /// The buffers still in flight whose heads are still to be returned: those marked
    /// expired, or all of them if `all`.
    pub(crate) fn victims(&self, ledger: &Ledger, all: bool) -> SlotSet {
        let mut set = SlotSet([0; WORDS]);
        for (w, word) in set.0.iter_mut().enumerate() {
            let pick = if all { !0 } else { ledger.expired[w] };
            *word = ledger.busy[w] & !ledger.stale[w] & !self.done[w].load(Acquire) & pick;
        }
        set
    }

    /// Offlined pages whose skbs the network stack still holds.
    pub(crate) fn held_pages(&self, ledger: &Ledger) -> u64 {
        let mut held = 0;
        for w in 0..WORDS {
            let mut out = ledger.busy[w] & !self.done[w].load(Acquire);
            while out != 0 {
                let m = out & out.wrapping_neg();
                out &= !m;
                held += u64::from(ledger.held[w * 64 + m.trailing_zeros() as usize]);
            }
        }
        held
    }

    /// The timer's callback: queues the handler, which marks what expired.
    ///
    /// # Safety
    ///
    /// `timer` must be the `timer` of a live pool (the owner cancels it before the pool can
    /// go away).
    unsafe extern "C" fn deadline_passed(timer: *mut kb::hrtimer) -> kb::hrtimer_restart {
        // SAFETY: `timer` is the `hrtimer` of the `timer` field of a live `Pool` (function
        // contract); `DeadlineTimer` is a transparent wrapper of it.
        let pool = unsafe { &*kernel::container_of!(timer.cast::<DeadlineTimer>(), Pool, timer) };
        let guard = rcu::read_lock();
        let vq = pool.waker.load(Acquire);
        if !vq.is_null() {
            // SAFETY: A non-null waker is a live virtqueue while in an RCU read-side
            // section (type invariant).
            unsafe { Waker::wake_raw(vq) };
        }
        drop(guard);
        kb::hrtimer_restart::HRTIMER_NORESTART
    }

    /// Makes sure no completion and no deadline reaches the virtqueue's worker from now on,
    /// until a handler attaches the pool again ([`Pool::attach`]): the timer is cancelled,
    /// the waker cleared, and completions that still found it have left (an RCU grace
    /// period). The owner calls it before the vhost core stops and frees the workers.
    pub(crate) fn quiesce(&self, ledger: &mut Ledger) {
        self.stop_timer();
        // Deadlines of buffers sent from now on arm it again.
        ledger.armed = None;
        if !self.waker.xchg(core::ptr::null_mut(), Full).is_null() {
            rcu::synchronize_rcu();
        }
    }

    /// Stops the timer; the owner calls it before it lets go of the pool.
    fn stop_timer(&self) {
        self.timer.cancel();
    }

    /// The buffers in flight whose heads the guest has not had back (neither offlined nor
    /// abandoned) and whose completion has not come yet: those a reset waits for.
    pub(crate) fn live(&self, ledger: &Ledger) -> SlotSet {
        let mut set = SlotSet([0; WORDS]);
        for (w, word) in set.0.iter_mut().enumerate() {
            *word = ledger.busy[w] & !ledger.stale[w] & !self.done[w].load(Acquire);
        }
        set
    }

    /// Waits until every buffer of `set` has completed, killably, for at most `timeout_ms`.
    /// Buffers outside the set (already offlined or abandoned) are not waited for; one whose
    /// completion the TX handler reaped meanwhile counts as completed.
    ///
    /// # Errors
    ///
    /// `ETIMEDOUT` if some are still in flight at the end, `EINTR` if a fatal signal ended
    /// the wait.
    pub(crate) fn wait_done(&self, set: &SlotSet, timeout_ms: u32) -> Result {
        if set.is_empty() {
            return Ok(());
        }
        // SAFETY: `idle` was initialised in `create()`; `done`, `reaped` and `set` are `WORDS`
        // words that outlive the wait (`Atomic<u64>` is a `u64` in memory).
        let r = unsafe {
            bindings::vnzc_wait_done_killable(
                self.idle.get(),
                self.done.as_ptr().cast(),
                self.reaped.as_ptr().cast(),
                set.0.as_ptr(),
                WORDS as i32,
                i64::from(timeout_ms),
            )
        };
        match r {
            0 => Err(ETIMEDOUT),
            r if r < 0 => Err(EINTR),
            _ => Ok(()),
        }
    }
}

/// A reference to a [`Pool`] that reads its counters (for debugfs).
///
/// # Invariants
///
/// `pool` points at a live pool, of which `self` owns one reference.
pub(crate) struct StatsRef {
    pool: NonNull<Pool>,
}

// SAFETY: A pool is `Send` and `Sync`; the reference may be dropped from any thread.
unsafe impl Send for StatsRef {}
// SAFETY: As above.
unsafe impl Sync for StatsRef {}

impl StatsRef {
    /// Writes the counters, one `name: value` per line (the debugfs file).
    pub(crate) fn show(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        // SAFETY: `self` owns a reference, which keeps the pool alive (type invariant).
        let pool = unsafe { self.pool.as_ref() };
        pool.write_counters(f, "", ": ")
    }
}

impl Pool {
    /// Writes the counters, one per line: `prefix`, the counter's name, `sep`, its value.
    pub(crate) fn write_counters(
        &self,
        f: &mut core::fmt::Formatter<'_>,
        prefix: &str,
        sep: &str,
    ) -> core::fmt::Result {
        let ledger = self.ledger();
        let stats = ledger.stats();
        let counters: [(&str, u64); 19] = [
            ("sent_zerocopy", stats.sent),
            ("completed", stats.completed),
            ("completed_copied", stats.copied),
            ("expired", stats.expired),
            ("abandoned", stats.abandoned),
            ("in_flight", self.inflight() as u64),
            ("in_flight_expired", ledger.expired() as u64),
            ("sent_copy", stats.sent_copy),
            ("sent_batched", stats.sent_batched),
            ("offlined", stats.offlined),
            ("offlined_pages", stats.offlined_pages),
            ("held_pages", self.held_pages(&ledger)),
            ("offline_refused", stats.offline_refused),
            ("offline_pinned", stats.offline_pinned),
            ("offline_skipped_pages", stats.offline_skipped_pages),
            ("last_reset_wait_ns", stats.last_reset_wait),
            ("max_reset_wait_ns", stats.max_reset_wait),
            ("reclaim", u64::from(ledger.reclaim)),
            ("timeout_ms", u64::from(ledger.timeout_ms())),
        ];
        for (name, value) in counters {
            writeln!(f, "{prefix}{name}{sep}{value}")?;
        }
        Ok(())
    }
}

impl Drop for StatsRef {
    fn drop(&mut self) {
        // SAFETY: `self` owns one reference and is not used again; the debugfs file holding
        // it is removed in the device's release, which may sleep.
        unsafe { Pool::put_sync(self.pool.as_ptr()) };
    }
}

/// The owner's reference to a [`Pool`].
///
/// # Invariants
///
/// `pool` points at a live pool, of which `self` owns one reference.
pub(crate) struct PoolRef {
    pool: NonNull<Pool>,
}

// SAFETY: A pool is `Send` and `Sync`; the reference may be dropped from any thread.
unsafe impl Send for PoolRef {}
// SAFETY: As above.
unsafe impl Sync for PoolRef {}

impl core::ops::Deref for PoolRef {
    type Target = Pool;

    fn deref(&self) -> &Pool {
        // SAFETY: `self` owns a reference, which keeps the pool alive (type invariant).
        unsafe { self.pool.as_ref() }
    }
}

impl PoolRef {
    /// A further reference, for reading the counters.
    pub(crate) fn stats_ref(&self) -> StatsRef {
        self.refs.inc();
        // INVARIANT: the reference just taken is the new object's.
        StatsRef { pool: self.pool }
    }
}

impl Drop for PoolRef {
    fn drop(&mut self) {
        self.stop_timer();
        let had_waker = !self.waker.xchg(core::ptr::null_mut(), Full).is_null();
        let left = self.inflight();
        if left != 0 {
            pr_info!(
                "device closed with {} zero-copy buffers in flight; the module stays loaded until the network stack releases them\n",
                left
            );
        }
        // SAFETY: `self` owns one reference and is not used again; the owner lets go of the
        // pool in the device's release, which may sleep.
        let freed = unsafe { Pool::put_sync(self.pool.as_ptr()) };
        if had_waker && !freed {
            // Completions that still found the virtqueue have left it before it goes (when
            // the pool was freed, its grace period covered them).
            rcu::synchronize_rcu();
        }
    }
}
