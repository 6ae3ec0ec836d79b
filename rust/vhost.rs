// SPDX-License-Identifier: GPL-2.0

//! Safe abstractions over the vhost core (`vhost.ko`).
//!
//! The vhost core owns the virtqueue machinery: the owner's mm and worker task, the memory
//! table, ring addresses and their access checks, kick and call eventfds, descriptor
//! fetching and used-ring updates. A vhost driver embeds a `struct vhost_dev` and its
//! `struct vhost_virtqueue`s, hands them to `vhost_dev_init()`, and from then on the core
//! keeps pointers into them (`dev->vqs`, `vq->dev`, the wait-queue entries of the polls).
//!
//! [`VhostDev`] is that embedding: a pinned object holding the C device, its virtqueues, and
//! the driver's own state `D`. Locks are typestates: [`DevGuard`] exists only while the
//! device mutex is held and [`VqGuard`] while a virtqueue's mutex is held, and the core's
//! functions that require a lock are methods of the guard.
//!
//! Lock order (the vhost core's): device mutex, then a virtqueue mutex.
//!
//! C header: [`drivers/vhost/vhost.h`](srctree/drivers/vhost/vhost.h).

use core::{
    cell::{
        Cell,
        UnsafeCell, //
    },
    marker::{
        PhantomData,
        PhantomPinned, //
    },
    ptr::addr_of_mut, //
};

use kernel::{
    error::to_result,
    ffi,
    fs::File,
    iov::{
        IovIterDest,
        IovIterSource, //
    },
    mm::{
        Mm,
        MmWithUser, //
    },
    prelude::*,
    sync::{
        aref::ARef,
        lock::{
            mutex::MutexBackend,
            Guard, //
        },
        Mutex, //
    },
    types::Opaque,
    uaccess::UserPtr,
};

use crate::{
    ffi::bindings,
    miscdev::PollTable, //
};

/// Per-device limits handed to the vhost core.
#[derive(Clone, Copy)]
pub(crate) struct Limits {
    /// Most iovec entries one descriptor chain may translate to.
    pub(crate) iov_limit: i32,
    /// Packets a virtqueue handler may process before it yields the worker.
    pub(crate) weight: i32,
    /// Bytes a virtqueue handler may process before it yields the worker.
    pub(crate) byte_weight: i32,
}

/// What a virtqueue can be attached to: an object with a file the device polls.
pub(crate) trait Backend: Send + Sync {
    /// The file whose readiness makes the virtqueue runnable.
    fn file(&self) -> &File;
}

/// The driver side of a [`VhostDev`]: its state and its virtqueue handlers.
pub(crate) trait Driver<const N: usize>: Send + Sync + Sized {
    /// What the driver attaches to its virtqueues.
    type Backend: Backend;

    /// For each virtqueue, the poll events on its backend's file that make it runnable.
    const BACKEND_EVENTS: [u32; N];

    /// Runs virtqueue `index` (`index < N`) on the device's worker: called when the guest
    /// kicks it and when its backend becomes ready.
    fn handle(dev: &VhostDev<Self, N>, index: usize);

    /// Called when every backend has been detached and the worker flushed, before the
    /// rings are reset (`VHOST_RESET_OWNER`) or the device is torn down: the driver settles
    /// the work it still has in flight.
    fn stopped(dev: &DevGuard<'_, Self, N>);
}

/// Queues a virtqueue's handler on the device's worker, from any context.
///
/// # Invariants
///
/// `vq` is an initialised virtqueue of a live [`VhostDev`].
pub(crate) struct Waker<'a> {
    vq: *mut bindings::vhost_virtqueue,
    _dev: PhantomData<&'a ()>,
}

impl Waker<'_> {
    /// The virtqueue, for [`Waker::wake_raw`] once the borrow has ended.
    pub(crate) fn as_ptr(&self) -> *mut bindings::vhost_virtqueue {
        self.vq
    }

    /// Queues the handler of `vq`; a no-op if the device has no worker (no owner).
    ///
    /// # Safety
    ///
    /// `vq` must come from [`Waker::as_ptr`], and its device must still be alive: the caller
    /// keeps it so, typically by an RCU read-side section that the device's teardown waits
    /// for after unpublishing `vq`.
    pub(crate) unsafe fn wake_raw(vq: *mut bindings::vhost_virtqueue) {
        // SAFETY: `vq` is an initialised virtqueue (function contract); queueing its kick
        // work is safe in any context, and a no-op without a worker.
        unsafe { bindings::vhost_poll_queue(addr_of_mut!((*vq).poll)) }
    }
}

/// One `struct vhost_virtqueue`.
#[repr(transparent)]
struct Virtqueue(Opaque<bindings::vhost_virtqueue>);

/// What the guest's used index says of a ring set again with the same size, index and
/// addresses ([`VqGuard::guest_used_idx`]).
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub(crate) enum UsedIdx {
    /// It is the index the device last wrote: the same ring.
    Same,
    /// It is not (or cannot be read): the guest reset the ring in place.
    Reset,
    /// A device IOTLB has no translation for it yet: ask again once the VMM gave one.
    Untranslated,
}

/// A chain of descriptors taken from the avail ring: `out` device-readable then `in`
/// device-writable buffers, translated into the virtqueue's iovec array.
#[derive(Clone, Copy)]
pub(crate) struct Chain {
    /// The head descriptor, which identifies the chain in the used ring.
    pub(crate) head: u32,
    /// Number of device-readable iovecs.
    pub(crate) out: u32,
    /// Number of device-writable iovecs, after the readable ones.
    pub(crate) inn: u32,
    /// Number of descriptors (for [`VqGuard::discard`]).
    ndesc: u32,
}

/// The buffers [`VqGuard::get_rx_bufs`] gathered for one packet.
pub(crate) struct RxBufs {
    /// Number of chains (used elements).
    pub(crate) heads: u32,
    /// Number of iovecs they were translated to.
    pub(crate) iovs: u32,
    ndesc: u32,
    nlog: u32,
}

/// What [`VqGuard::get_rx_bufs`] found.
pub(crate) enum RxGather {
    /// Buffers for the whole packet.
    Bufs(RxBufs),
    /// The avail ring ran out first; nothing was taken.
    Empty,
    /// The packet is larger than the buffers the quota allows; nothing was taken.
    Overrun,
}

/// Whether the calling task is exiting (its files are being closed after its address space
/// was released).
pub(crate) fn caller_exiting() -> bool {
    // SAFETY: Reads the current task's flags; no precondition.
    unsafe { bindings::vnzc_current_exiting() }
}

/// Whether the calling task has `CAP_NET_ADMIN` (checked, and audited, as `capable()`).
pub(crate) fn capable_net_admin() -> bool {
    // SAFETY: Checks the current task's credentials; no precondition.
    unsafe { kernel::bindings::capable(kernel::bindings::CAP_NET_ADMIN as i32) }
}

/// A debug line about something a guest or the network did, through dynamic debug (off
/// unless enabled), so that a guest cannot flood the host log.
pub(crate) fn debug(what: &CStr, a: impl TryInto<i64>, b: impl TryInto<i64>) {
    let a = a.try_into().unwrap_or(i64::MAX);
    let b = b.try_into().unwrap_or(i64::MAX);
    // SAFETY: `what` is NUL-terminated; the helper only prints.
    unsafe { bindings::vnzc_debug(what.as_char_ptr(), a, b) }
}

/// The clock busy polling counts in (nanoseconds / 1024).
pub(crate) fn busy_clock() -> u64 {
    // SAFETY: Reads the local clock; no precondition.
    unsafe { bindings::vnzc_busy_clock() }
}

/// Whether a busy poll ending at `end` ([`busy_clock`]) may go on: it is not over, and the
/// worker is not wanted elsewhere (a reschedule or a signal is pending).
pub(crate) fn can_busy_poll(end: u64) -> bool {
    // SAFETY: Reads the clock and the current task's flags; no precondition.
    unsafe { bindings::vnzc_can_busy_poll(end) }
}

/// Total length of `iov`, saturating (each length is guest-controlled).
pub(crate) fn iov_len(iov: &[kernel::bindings::iovec]) -> usize {
    iov.iter()
        .fold(0usize, |acc, v| acc.saturating_add(v.iov_len))
}

/// A vhost device with `N` virtqueues and driver state `D`.
///
/// # Invariants
///
/// - `dev` was initialised by `vhost_dev_init()` with the array `vq_ptrs`, whose entry `i`
///   points at `vqs[i]`, and the kick handler of `vqs[i]` is [`kick_trampoline::<D, N>`].
/// - The object is pinned: the vhost core holds pointers into it until
///   [`VhostDev::shutdown`] (from the file's release, or `Drop`) has run
///   `vhost_dev_cleanup()`; `shut` is nonzero from then on, and no worker, poll or
///   completion refers to the device any more.
/// - `polls[i]` was initialised by `vhost_poll_init()` for `vqs[i]`, with
///   [`poll_trampoline::<D, N>`] as its work.
/// - `backends[i]` is only accessed with `vqs[i]`'s mutex held, and is `Some` exactly when
///   `vqs[i]`'s `private_data` is non-null; `polls[i]` polls only the file of `backends[i]`.
/// - `dev` is the first field (`repr(C)`), so a `vhost_dev` pointer the core hands back to a
///   handler is a pointer to the `VhostDev`.
#[repr(C)]
pub(crate) struct VhostDev<D: Driver<N>, const N: usize> {
    dev: Opaque<bindings::vhost_dev>,
    vqs: [Virtqueue; N],
    polls: [Opaque<bindings::vhost_poll>; N],
    backends: [UnsafeCell<Option<D::Backend>>; N],
    vq_ptrs: UnsafeCell<[*mut bindings::vhost_virtqueue; N]>,
    /// Set once [`VhostDev::shutdown`] ran.
    shut: kernel::sync::atomic::Atomic<i32>,
    data: D,
    _pin: PhantomPinned,
}

// SAFETY: The C device is only reached through the vhost core, which serialises access with
// the device and virtqueue mutexes and its worker; `backends[i]` is only touched under
// `vqs[i]`'s mutex (type invariant); `vq_ptrs` is written once during initialisation. `D`
// and its backends are `Send`.
unsafe impl<D: Driver<N>, const N: usize> Send for VhostDev<D, N> {}
// SAFETY: As for `Send`: shared access goes through the core's locking, and `D` is `Sync`.
unsafe impl<D: Driver<N>, const N: usize> Sync for VhostDev<D, N> {}

/// The kick handler of every virtqueue of a [`VhostDev<D, N>`].
///
/// # Safety
///
/// `work` must be the `poll.work` of a virtqueue of a live `VhostDev<D, N>`; the vhost core
/// guarantees it for the handlers installed by [`VhostDev::new`].
unsafe extern "C" fn kick_trampoline<D: Driver<N>, const N: usize>(
    work: *mut bindings::vhost_work,
) {
    // SAFETY: By the function's contract `work` is embedded in a `vhost_virtqueue` as
    // `poll.work`.
    let vq = unsafe { kernel::container_of!(work, bindings::vhost_virtqueue, poll.work) };
    // SAFETY: `vq` belongs to an initialised device, so `vq->dev` points at its `vhost_dev`,
    // which is the first field of the `VhostDev<D, N>` (type invariant).
    let this = unsafe { &*(*vq).dev.cast::<VhostDev<D, N>>() };
    if let Some(index) = this.vqs.iter().position(|v| v.0.get() == vq) {
        D::handle(this, index);
    }
}

/// The work of every backend poll of a [`VhostDev<D, N>`].
///
/// # Safety
///
/// `work` must be the `work` of a backend poll of a live `VhostDev<D, N>`; the vhost core
/// guarantees it for the polls initialised by [`VhostDev::new`].
unsafe extern "C" fn poll_trampoline<D: Driver<N>, const N: usize>(
    work: *mut bindings::vhost_work,
) {
    // SAFETY: By the function's contract `work` is embedded in a `vhost_poll`.
    let poll = unsafe { kernel::container_of!(work, bindings::vhost_poll, work) };
    // SAFETY: The poll was initialised with the device's `vhost_dev`, the first field of the
    // `VhostDev<D, N>` (type invariant).
    let this = unsafe { &*(*poll).dev.cast::<VhostDev<D, N>>() };
    if let Some(index) = this.polls.iter().position(|p| p.get() == poll) {
        D::handle(this, index);
    }
}

impl<D: Driver<N>, const N: usize> VhostDev<D, N> {
    /// Creates the device: initialises the driver state, then the vhost core's device.
    pub(crate) fn new(limits: Limits, data: impl PinInit<D, Error>) -> impl PinInit<Self, Error> {
        let nvqs = i32::try_from(N).unwrap_or(i32::MAX);
        let init = move |slot: *mut Self| -> Result {
            // SAFETY: `slot` is valid for writes of `Self` (the contract of a pinned
            // initialiser). The vhost core initialises what it uses of `dev` and `vqs`;
            // zeroing first leaves no byte of them uninitialised.
            unsafe {
                addr_of_mut!((*slot).dev).write_bytes(0, 1);
                addr_of_mut!((*slot).vqs).write_bytes(0, 1);
                addr_of_mut!((*slot).polls).write_bytes(0, 1);
            }
            for i in 0..N {
                // SAFETY: `i < N` and `slot` is valid for writes.
                unsafe { addr_of_mut!((*slot).backends[i]).write(UnsafeCell::new(None)) };
            }
            // SAFETY: `slot` is valid for writes.
            unsafe { addr_of_mut!((*slot).shut).write(kernel::sync::atomic::Atomic::new(0)) };
            // SAFETY: `data` is a pinned initialiser and `slot.data` is valid for it; on error
            // nothing else has been initialised that needs dropping.
            unsafe { pin_init::raw_try_init(addr_of_mut!((*slot).data), data)? };
            // SAFETY: `slot` is valid for writes and its `vqs` are zeroed C structs.
            let ptrs = unsafe { &mut *addr_of_mut!((*slot).vq_ptrs) }.get_mut();
            for (i, ptr) in ptrs.iter_mut().enumerate() {
                // SAFETY: `i < N`, and `slot.vqs[i]` was zeroed above.
                let vq = unsafe { (*addr_of_mut!((*slot).vqs[i])).0.get() };
                // SAFETY: `vq` is valid for writes and not yet shared with the vhost core.
                unsafe { (*vq).handle_kick = Some(kick_trampoline::<D, N>) };
                *ptr = vq;
            }
            // INVARIANT: `vq_ptrs[i]` points at `vqs[i]`, whose kick handler is the trampoline.
            // SAFETY: `dev` and the `N` virtqueues `ptrs` points at are zeroed, pinned (the
            // slot is) and outlive the device: `Drop` cleans the device up first.
            unsafe {
                bindings::vhost_dev_init(
                    (*slot).dev.get(),
                    ptrs.as_mut_ptr(),
                    nvqs,
                    limits.iov_limit,
                    limits.weight,
                    limits.byte_weight,
                    true,
                    None,
                )
            };
            for (i, events) in D::BACKEND_EVENTS.iter().enumerate() {
                // SAFETY: `polls[i]` is zeroed and pinned; `dev` and `vqs[i]` are initialised
                // and outlive it.
                // INVARIANT: `polls[i]` is initialised for `vqs[i]` with the trampoline.
                unsafe {
                    bindings::vhost_poll_init(
                        (*slot).polls[i].get(),
                        Some(poll_trampoline::<D, N>),
                        *events,
                        (*slot).dev.get(),
                        (*slot).vqs[i].0.get(),
                    )
                };
            }
            Ok(())
        };
        // SAFETY: `init` initialises every field of the slot or fails having left nothing
        // that needs dropping, and never moves the object (the vhost core's pointers into it
        // rely on that).
        unsafe { pin_init::pin_init_from_closure(init) }
    }

    fn raw(&self) -> *mut bindings::vhost_dev {
        self.dev.get()
    }

    /// The owner's address space, with a user reference, for a handler on the device's
    /// worker (which runs in that address space): the owner, and with it `mm`, cannot
    /// change while the worker runs, since both are replaced only after it is stopped.
    pub(crate) fn worker_mm(&self) -> Option<ARef<MmWithUser>> {
        // SAFETY: The device is initialised; see above for why `mm` is stable here.
        let mm = unsafe { (*self.raw()).mm };
        if mm.is_null() {
            return None;
        }
        // SAFETY: While set, `mm` holds the reference the vhost core took when the owner was
        // set, which outlives the worker.
        unsafe { Mm::from_raw(mm) }.mmget_not_zero()
    }

    /// `read()` of the device file: the next device-IOTLB message (a miss, in the format
    /// the backend features chose) into `iov`; waits for one unless `nonblock`. Called
    /// without the device mutex, which the sender of a miss may hold.
    ///
    /// # Errors
    ///
    /// `EAGAIN` (`nonblock`, none pending), `ERESTARTSYS` (a signal), `EBADFD` (no device
    /// IOTLB: `VIRTIO_F_ACCESS_PLATFORM` not acknowledged), `EFAULT`.
    pub(crate) fn iotlb_read(&self, iov: &mut IovIterDest<'_>, nonblock: bool) -> Result<usize> {
        // SAFETY: The device is initialised; the core guards its message lists with its own
        // lock, and `iov` is a valid destination iterator.
        let r = unsafe { bindings::vhost_chr_read_iter(self.raw(), iov.as_raw(), nonblock.into()) };
        check_long(r as ffi::c_long).map(|n| n as usize)
    }

    /// `write()` of the device file: one device-IOTLB message from `iov` (an update or an
    /// invalidation), applied under the device and virtqueue mutexes, which the core takes
    /// itself. Returns the message's size.
    ///
    /// # Errors
    ///
    /// `EINVAL` for a short or unknown message, `EFAULT` for one the core refuses (no device
    /// IOTLB, an address range the caller cannot access, an unknown operation).
    pub(crate) fn iotlb_write(&self, iov: &mut IovIterSource<'_>) -> Result<usize> {
        // SAFETY: The device is initialised and `iov` is a valid source iterator; the
        // caller holds no lock of the device.
        let r = unsafe { bindings::vhost_chr_write_iter(self.raw(), iov.as_raw()) };
        check_long(r as ffi::c_long).map(|n| n as usize)
    }

    /// `poll()` of the device file: readable while a device-IOTLB message is pending.
    pub(crate) fn iotlb_poll(&self, file: &File, table: &PollTable<'_>) -> u32 {
        // SAFETY: The device is initialised; its wait queue lives until `shutdown()`, which
        // runs at the file's release, after the VFS has removed every poll entry of it.
        unsafe { bindings::vhost_chr_poll(file.as_ptr(), self.raw(), table.as_ptr()) }
    }

    /// Acknowledges vhost backend features on every virtqueue (the core takes the device
    /// and virtqueue mutexes itself).
    pub(crate) fn set_backend_features(&self, features: u64) {
        // SAFETY: The device is initialised; the caller holds none of its locks.
        unsafe { bindings::vhost_set_backend_features(self.raw(), features) }
    }

    /// The driver's state.
    pub(crate) fn data(&self) -> &D {
        &self.data
    }

    /// Takes the device mutex.
    pub(crate) fn lock(&self) -> DevGuard<'_, D, N> {
        // SAFETY: `dev.mutex` was initialised by `vhost_dev_init()` (type invariant) and lives
        // as long as `self`.
        let mutex = unsafe { Mutex::from_raw(addr_of_mut!((*self.raw()).mutex)) };
        DevGuard {
            dev: self,
            _guard: mutex.lock(),
        }
    }

    /// Takes the mutex of virtqueue `index`. Lock order: after the device mutex.
    ///
    /// # Errors
    ///
    /// `ENOBUFS` if `index` is not below `N` (the errno vhost-net gives a bad queue index).
    pub(crate) fn vq(&self, index: u32) -> Result<VqGuard<'_, D, N>> {
        let index = usize::try_from(index).map_err(|_| ENOBUFS)?;
        let (Some(vq), Some(poll), Some(backend)) = (
            self.vqs.get(index),
            self.polls.get(index),
            self.backends.get(index),
        ) else {
            return Err(ENOBUFS);
        };
        let vq = vq.0.get();
        // SAFETY: `vq.mutex` was initialised by `vhost_dev_init()` and lives as long as
        // `self`.
        let mutex = unsafe { Mutex::from_raw(addr_of_mut!((*vq).mutex)) };
        // INVARIANT: the three pointers are index `index` of `self`; the mutex is its vq's.
        Ok(VqGuard {
            dev: self,
            vq,
            poll: poll.get(),
            backend: backend.get(),
            iov_borrows: Cell::new(0),
            _guard: mutex.lock(),
        })
    }

    /// Takes the mutex of virtqueue `index` if it is free: a handler holding one virtqueue's
    /// mutex may take the other's only this way (no lock order between them).
    pub(crate) fn try_vq(&self, index: u32) -> Option<VqGuard<'_, D, N>> {
        let index = usize::try_from(index).ok()?;
        let (vq, poll, backend) = (
            self.vqs.get(index)?,
            self.polls.get(index)?,
            self.backends.get(index)?,
        );
        let vq = vq.0.get();
        // SAFETY: `vq.mutex` was initialised by `vhost_dev_init()` and lives as long as
        // `self`.
        let mutex = unsafe { Mutex::from_raw(addr_of_mut!((*vq).mutex)) };
        let guard = mutex.try_lock()?;
        // INVARIANT: the three pointers are index `index` of `self`; the mutex is its vq's.
        Some(VqGuard {
            dev: self,
            vq,
            poll: poll.get(),
            backend: backend.get(),
            iov_borrows: Cell::new(0),
            _guard: guard,
        })
    }

    /// Detaches every backend and stops its poll; the caller flushes the worker, then drops
    /// the backends (which may sleep) without holding the virtqueue mutexes.
    fn take_backends(&self) -> KVec<D::Backend> {
        let mut taken = KVec::new();
        for index in 0..N as u32 {
            if let Ok(mut vq) = self.vq(index) {
                if let Ok(Some(old)) = vq.replace_backend(None) {
                    // On allocation failure the backend is dropped here, under the mutex:
                    // its poll is already stopped, and dropping only puts a file reference.
                    let _ = taken.push(old, GFP_KERNEL);
                }
            }
        }
        taken
    }
}

impl<D: Driver<N>, const N: usize> VhostDev<D, N> {
    /// Stops the device for good: detaches the backends, flushes the worker, lets the
    /// driver settle ([`Driver::stopped`]), then has the vhost core stop the polls and free
    /// the owner, workers, memory table and eventfds. Runs once; later calls return at
    /// once.
    ///
    /// The file's release calls it through a shared reference, while nothing else can
    /// reach the device any more but the core's workers and polls, which it stops; once it
    /// returned, no other reference to the device exists, so the `&mut` that `Drop` then
    /// takes is unique.
    pub(crate) fn shutdown(&self) {
        if self.shut.xchg(1, kernel::sync::atomic::Full) != 0 {
            return;
        }
        let backends = self.take_backends();
        {
            let dev = self.lock();
            dev.flush();
            D::stopped(&dev);
        }
        // SAFETY: The device was initialised (type invariant) and is torn down exactly once
        // (`shut`), after its backends were detached: `vhost_dev_stop()` stops the kick polls
        // and flushes the worker, so no handler runs when the backends are dropped, and
        // `vhost_dev_cleanup()` releases the owner, worker, memory table and eventfds.
        unsafe {
            bindings::vhost_dev_stop(self.raw());
            bindings::vhost_dev_cleanup(self.raw());
        }
        drop(backends);
    }
}

impl<D: Driver<N>, const N: usize> Drop for VhostDev<D, N> {
    /// A device whose file was released was shut down already ([`VhostDev::shutdown`]);
    /// one dropped without a release (a failed open) never had a worker.
    fn drop(&mut self) {
        self.shutdown();
    }
}

/// Converts the `long` return of a vhost core call to a `Result`.
fn check_long(r: ffi::c_long) -> Result<isize> {
    if r < 0 {
        Err(Error::from_errno(
            i32::try_from(r).unwrap_or(EINVAL.to_errno()),
        ))
    } else {
        Ok(r)
    }
}

/// A [`VhostDev`] whose device mutex is held.
pub(crate) struct DevGuard<'a, D: Driver<N>, const N: usize> {
    dev: &'a VhostDev<D, N>,
    _guard: Guard<'a, (), MutexBackend>,
}

impl<'a, D: Driver<N>, const N: usize> DevGuard<'a, D, N> {
    /// The device.
    pub(crate) fn device(&self) -> &'a VhostDev<D, N> {
        self.dev
    }

    /// The owner's address space, with a user reference, if there is an owner and its
    /// address space is still alive.
    pub(crate) fn owner_mm(&self) -> Option<ARef<MmWithUser>> {
        // SAFETY: The device is initialised and its mutex, which guards `mm`, is held.
        let mm = unsafe { (*self.dev.raw()).mm };
        if mm.is_null() {
            return None;
        }
        // SAFETY: While set, `mm` holds a reference the vhost core took when the owner was
        // set (`vhost_attach_mm()`), dropped only under the device mutex, which is held.
        unsafe { Mm::from_raw(mm) }.mmget_not_zero()
    }

    /// Whether the calling task runs in the owner's address space, so that the rings (user
    /// memory of the owner) can be accessed.
    pub(crate) fn caller_is_owner_mm(&self) -> bool {
        // SAFETY: The device is initialised and its mutex, which guards `mm`, is held.
        let mm = unsafe { (*self.dev.raw()).mm };
        // SAFETY: Only compares pointers.
        !mm.is_null() && unsafe { bindings::vnzc_current_mm_is(mm) }
    }

    /// Whether an owner (`VHOST_SET_OWNER`) is set.
    pub(crate) fn has_owner(&self) -> bool {
        // SAFETY: The device is initialised and its mutex is held.
        unsafe { bindings::vhost_dev_has_owner(self.dev.raw()) }
    }

    /// Checks that the caller is the owner.
    ///
    /// # Errors
    ///
    /// `EPERM` if the calling task's mm is not the owner's, or there is no owner.
    pub(crate) fn check_owner(&self) -> Result {
        // SAFETY: The device is initialised and its mutex is held.
        check_long(unsafe { bindings::vhost_dev_check_owner(self.dev.raw()) }).map(|_| ())
    }

    /// Makes the calling task the owner: its mm for guest memory, and a worker task.
    ///
    /// # Errors
    ///
    /// `EBUSY` if there already is an owner, or the errno of creating the worker.
    pub(crate) fn set_owner(&self) -> Result {
        // SAFETY: The device is initialised and its mutex is held.
        check_long(unsafe { bindings::vhost_dev_set_owner(self.dev.raw()) }).map(|_| ())
    }

    /// Drops the owner and everything set up under it (backends, memory table, rings,
    /// eventfds), as `VHOST_RESET_OWNER` asks. Returns the detached backends, for the caller
    /// to drop after releasing the device mutex.
    ///
    /// # Errors
    ///
    /// `EPERM` if the caller is not the owner, `ENOMEM` if the empty memory table that
    /// replaces the current one cannot be allocated.
    pub(crate) fn reset_owner(&self) -> Result<KVec<D::Backend>> {
        self.check_owner()?;
        // SAFETY: Allocates an empty IOTLB; no precondition.
        let umem = unsafe { bindings::vhost_dev_reset_owner_prepare() };
        if umem.is_null() {
            return Err(ENOMEM);
        }
        let backends = self.dev.take_backends();
        self.flush();
        D::stopped(self);
        // SAFETY: The device is initialised and its mutex held; `umem` is a fresh IOTLB whose
        // ownership passes to the device. The backends are detached, so resetting the
        // virtqueues (which clears their `private_data`) keeps the backend invariant.
        unsafe {
            bindings::vhost_dev_stop(self.dev.raw());
            bindings::vhost_dev_reset_owner(self.dev.raw(), umem);
        }
        Ok(backends)
    }

    /// Waits until every work queued on the device's workers has run.
    pub(crate) fn flush(&self) {
        // SAFETY: The device is initialised and its mutex is held.
        unsafe { bindings::vhost_dev_flush(self.dev.raw()) }
    }

    /// Whether the dirty log (`VHOST_SET_LOG_BASE`) covers the memory table and rings.
    pub(crate) fn log_access_ok(&self) -> bool {
        // SAFETY: The device is initialised and its mutex is held.
        unsafe { bindings::vhost_log_access_ok(self.dev.raw()) }
    }

    /// Drops the pending device-IOTLB messages, as a backend reset to -1 does.
    pub(crate) fn clear_msg(&self) {
        // SAFETY: The device is initialised and its mutex is held.
        unsafe { bindings::vhost_clear_msg(self.dev.raw()) }
    }

    /// Gives the device a fresh, empty device IOTLB (`VIRTIO_F_ACCESS_PLATFORM`
    /// acknowledged): ring and buffer addresses are I/O virtual addresses from then on,
    /// translated by the entries the VMM writes to the device file. One already there is
    /// replaced, as stock vhost-net does on every `VHOST_SET_FEATURES` with the bit.
    ///
    /// # Errors
    ///
    /// `ENOMEM`, or `EINVAL` if the vhost core's `max_iotlb_entries` is not positive.
    pub(crate) fn init_device_iotlb(&self) -> Result {
        // SAFETY: The device is initialised and its mutex is held; the core takes each
        // virtqueue's mutex itself, after it (the lock order).
        to_result(unsafe { bindings::vhost_init_device_iotlb(self.dev.raw()) })
    }

    /// Drops the device IOTLB, if there is one: addresses are the memory table's again, and
    /// a reader blocked for a miss returns `EBADFD`.
    pub(crate) fn clear_device_iotlb(&self) {
        // SAFETY: As in `init_device_iotlb()`.
        unsafe { bindings::vhost_clear_device_iotlb(self.dev.raw()) }
    }

    /// The vhost core's generic ioctls: device ones (owner, memory table, log, workers)
    /// first, then virtqueue ones (`VHOST_SET_VRING_*`, `VHOST_GET_VRING_*`).
    ///
    /// # Errors
    ///
    /// The core's errno; `ENOIOCTLCMD` if neither knows `cmd` (the VFS reports `ENOTTY`).
    pub(crate) fn generic_ioctl(&self, cmd: u32, arg: UserPtr) -> Result<isize> {
        let argp = arg.as_mut_ptr();
        // SAFETY: The device is initialised and its mutex is held; `argp` is an untrusted
        // user pointer, which the core only passes to `copy_{from,to}_user()`.
        let r = unsafe { bindings::vhost_dev_ioctl(self.dev.raw(), cmd, argp) };
        if r != ENOIOCTLCMD.to_errno() as ffi::c_long {
            self.flush();
            return check_long(r);
        }
        // SAFETY: As above.
        check_long(unsafe { bindings::vhost_vring_ioctl(self.dev.raw(), cmd, argp) })
    }
}

/// A virtqueue of a [`VhostDev`], with its mutex held.
///
/// # Invariants
///
/// `vq`, `poll` and `backend` are the virtqueue, backend poll and backend slot of one index
/// of `dev`, and `_guard` holds that virtqueue's mutex.
pub(crate) struct VqGuard<'a, D: Driver<N>, const N: usize> {
    dev: &'a VhostDev<D, N>,
    vq: *mut bindings::vhost_virtqueue,
    poll: *mut bindings::vhost_poll,
    backend: *mut Option<D::Backend>,
    /// How many [`IovRef`]s into the virtqueue's iovec array exist: taking a chain, which
    /// rewrites the array, is refused while any does.
    iov_borrows: Cell<u32>,
    _guard: Guard<'a, (), MutexBackend>,
}

/// The iovecs of the last chains taken ([`VqGuard::iov`]): a shared borrow of the
/// virtqueue's iovec array, which [`VqGuard::get_desc`] and [`VqGuard::get_rx_bufs`]
/// refuse to rewrite while it exists (they return `EBUSY`), as a `RefCell` would.
pub(crate) struct IovRef<'g> {
    iov: &'g [kernel::bindings::iovec],
    borrows: &'g Cell<u32>,
}

impl core::ops::Deref for IovRef<'_> {
    type Target = [kernel::bindings::iovec];

    fn deref(&self) -> &Self::Target {
        self.iov
    }
}

impl Drop for IovRef<'_> {
    fn drop(&mut self) {
        self.borrows.set(self.borrows.get().saturating_sub(1));
    }
}

impl<'a, D: Driver<N>, const N: usize> VqGuard<'a, D, N> {
    fn raw(&self) -> *mut bindings::vhost_virtqueue {
        self.vq
    }

    /// The virtqueue, for a C helper that reads it (its byte order, say) while this guard,
    /// and with it the virtqueue's mutex, is held.
    pub(crate) fn as_ptr(&self) -> *mut bindings::vhost_virtqueue {
        self.vq
    }

    fn poll(&self) -> *mut bindings::vhost_poll {
        self.poll
    }

    fn backend_slot(&self) -> *mut Option<D::Backend> {
        self.backend
    }

    /// Whether the ring addresses (and the log, if enabled) are accessible.
    pub(crate) fn access_ok(&self) -> bool {
        // SAFETY: The virtqueue is initialised and its mutex is held.
        unsafe { bindings::vhost_vq_access_ok(self.raw()) }
    }

    /// Records the features the VMM acknowledged.
    pub(crate) fn set_acked_features(&self, features: &[u64; crate::uapi::FEATURE_WORDS]) {
        // SAFETY: The virtqueue is initialised and its mutex is held; `features` has the
        // kernel's number of feature words.
        unsafe { bindings::vnzc_vq_set_acked_features(self.raw(), features.as_ptr()) }
    }

    /// Whether feature `bit` was acknowledged.
    pub(crate) fn has_feature(&self, bit: u32) -> bool {
        let Ok(bit) = i32::try_from(bit) else {
            return false;
        };
        // SAFETY: The virtqueue is initialised and its mutex is held.
        unsafe { bindings::vnzc_vq_has_feature(self.raw(), bit) }
    }

    /// The attached backend, if any.
    pub(crate) fn backend(&self) -> Option<&D::Backend> {
        // SAFETY: The slot is only accessed under this virtqueue's mutex, which `self` holds
        // for the lifetime of the returned reference.
        unsafe { (*self.backend_slot()).as_ref() }
    }

    /// Attaches `new` (or detaches, for `None`) and returns the previous backend, which the
    /// caller drops after flushing the worker. The new backend's file is polled from now on.
    ///
    /// # Errors
    ///
    /// The errno of `vhost_vq_init_access()` (the used ring cannot be read) or of starting
    /// the poll (`EINVAL` if the file reports an error); the previous backend then stays
    /// attached and `new` is dropped.
    pub(crate) fn replace_backend(
        &mut self,
        new: Option<D::Backend>,
    ) -> Result<Option<D::Backend>> {
        self.stop_poll();
        // SAFETY: The slot is only accessed under this virtqueue's mutex, which is held.
        let slot = unsafe { &mut *self.backend_slot() };
        let old = core::mem::replace(slot, new);
        self.sync_private_data();
        // SAFETY: The virtqueue is initialised and its mutex is held.
        let r = to_result(unsafe { bindings::vhost_vq_init_access(self.raw()) })
            .and_then(|()| self.start_poll());
        if let Err(e) = r {
            let failed = core::mem::replace(slot, old);
            self.sync_private_data();
            // Restarting the poll of the backend that was already attached cannot fail in a
            // way the caller could act on; it was polled until a moment ago.
            let _ = self.start_poll();
            drop(failed);
            return Err(e);
        }
        Ok(old)
    }

    /// INVARIANT: `private_data` is non-null exactly when a backend is attached; its value
    /// is the backend's file, which nothing in the vhost core dereferences.
    fn sync_private_data(&self) {
        let data = self
            .backend()
            .map_or(core::ptr::null_mut(), |b| b.file().as_ptr().cast());
        // SAFETY: The virtqueue is initialised and its mutex is held.
        unsafe { bindings::vnzc_vq_set_backend(self.raw(), data) }
    }

    /// Starts polling the backend's file (after the socket was full, for example).
    ///
    /// # Errors
    ///
    /// `EINVAL` if the file reports an error condition.
    pub(crate) fn start_poll(&self) -> Result {
        let Some(backend) = self.backend() else {
            return Ok(());
        };
        // SAFETY: The poll is initialised; the file is the attached backend's, which stays
        // referenced until after `stop_poll()` (type invariant of `VhostDev`).
        to_result(unsafe { bindings::vhost_poll_start(self.poll(), backend.file().as_ptr()) })
    }

    /// Stops polling the backend's file (while the handler drains it).
    pub(crate) fn stop_poll(&self) {
        // SAFETY: The poll is initialised; stopping one that is not started is a no-op.
        unsafe { bindings::vhost_poll_stop(self.poll()) }
    }

    /// Prefetches the ring metadata; `false` if the rings are not accessible.
    pub(crate) fn prefetch(&self) -> bool {
        // SAFETY: The virtqueue is initialised and its mutex is held.
        unsafe { bindings::vq_meta_prefetch(self.raw()) != 0 }
    }

    /// Whether used entries can be written to the ring now, from outside the handler:
    /// always without a device IOTLB; with one, if it translates the ring (if not, the
    /// prefetch asked the VMM for the translations, with a miss message).
    pub(crate) fn ring_translated(&self) -> bool {
        // SAFETY: The virtqueue is initialised; `iotlb` is only changed under its mutex,
        // which is held.
        let iotlb = unsafe { (*self.raw()).iotlb };
        iotlb.is_null() || self.prefetch()
    }

    /// Takes the next available chain, `None` if the avail ring is empty.
    ///
    /// # Errors
    ///
    /// The vhost core's errno for a malformed chain (it has already reported it on the
    /// error eventfd).
    pub(crate) fn get_desc(&self) -> Result<Option<Chain>> {
        self.get_desc_at(0, None)
    }

    /// Takes the next available chain into the iovec array from entry `seg` on, logging its
    /// writable buffers from log entry `log.0` on (with `VHOST_F_LOG_ALL`) and adding the
    /// count to `log.1`.
    fn get_desc_at(&self, seg: usize, log: Option<(usize, &mut u32)>) -> Result<Option<Chain>> {
        // The core rewrites the iovec array: no `IovRef` may see it meanwhile.
        if self.iov_borrows.get() != 0 {
            return Err(EBUSY);
        }
        let vq = self.raw();
        let max = kernel::bindings::UIO_MAXIOV as usize;
        let room = u32::try_from(max.checked_sub(seg).ok_or(ENOBUFS)?).map_err(|_| ENOBUFS)?;
        let (mut out, mut inn, mut ndesc, mut nlog) = (0u32, 0u32, 0u32, 0u32);
        // SAFETY: The virtqueue is initialised and its mutex is held; `iov + seg` leaves
        // `room` entries of the virtqueue's own array; the log array, when logging is on, is
        // the core's, of `UIO_MAXIOV` entries, which bounds `log.0` as `seg` bounds the iovecs.
        let head = unsafe {
            let (log_ptr, log_num) = match &log {
                Some((at, _)) => ((*vq).log.add(*at), &raw mut nlog),
                None => (core::ptr::null_mut(), core::ptr::null_mut()),
            };
            bindings::vhost_get_vq_desc_n(
                vq,
                addr_of_mut!((*vq).iov)
                    .cast::<kernel::bindings::iovec>()
                    .add(seg),
                room,
                &mut out,
                &mut inn,
                log_ptr,
                log_num,
                &mut ndesc,
            )
        };
        to_result(head.min(0))?;
        if let Some((_, total)) = log {
            *total = total.saturating_add(nlog);
        }
        // SAFETY: As above; `num` is only written under the mutex.
        let num = unsafe { (*vq).num };
        let head = head.unsigned_abs();
        if head == num {
            return Ok(None);
        }
        Ok(Some(Chain {
            head,
            out,
            inn,
            ndesc,
        }))
    }

    /// Gathers device-writable chains for a packet of `datalen` bytes, at most `quota` of
    /// them, into the iovec array and the used-element array (`vq->heads`), the last
    /// element's length trimmed to the packet.
    ///
    /// # Errors
    ///
    /// `EINVAL` for a chain with device-readable buffers (reported as a guest error), or
    /// the vhost core's errno for a malformed chain. The chains taken are given back.
    pub(crate) fn get_rx_bufs(&self, datalen: usize, quota: u32) -> Result<RxGather> {
        let vq = self.raw();
        let logging = self.has_feature(bindings::VHOST_F_LOG_ALL);
        let mut bufs = RxBufs {
            heads: 0,
            iovs: 0,
            ndesc: 0,
            nlog: 0,
        };
        let mut left = datalen;
        let r = loop {
            if left == 0 || bufs.heads >= quota {
                break Ok(());
            }
            let seg = bufs.iovs as usize;
            let log = logging.then_some((bufs.nlog as usize, &mut bufs.nlog));
            let chain = match self.get_desc_at(seg, log) {
                Ok(Some(chain)) => chain,
                Ok(None) => break Err(None),
                Err(e) => break Err(Some(e)),
            };
            if chain.out != 0 || chain.inn == 0 {
                // Stays taken, as in stock: neither cursor goes back over it (under
                // IN_ORDER the next descriptor is found from their count).
                self.report(c"Unexpected descriptor format for RX");
                break Err(Some(EINVAL));
            }
            bufs.ndesc += chain.ndesc;
            let len = iov_len(self.iov_from(seg, chain.inn));
            // SAFETY: `heads` is the core's array of `num` elements and `bufs.heads` is below
            // `num`: each head is a distinct descriptor of the ring.
            unsafe {
                let elem = (*vq).heads.add(bufs.heads as usize);
                (*elem).id = bindings::vnzc_cpu_to_vhost32(vq, chain.head);
                (*elem).len =
                    bindings::vnzc_cpu_to_vhost32(vq, u32::try_from(len).unwrap_or(u32::MAX));
            }
            left = left.saturating_sub(len);
            bufs.heads += 1;
            bufs.iovs += chain.inn;
        };
        match r {
            Ok(()) if left == 0 => {
                // The last buffer holds only what is left of the packet.
                let trimmed = datalen.saturating_sub(self.sum_heads_but_last(&bufs));
                // SAFETY: `bufs.heads >= 1` here, and below `num` (see above).
                unsafe {
                    let elem = (*vq).heads.add(bufs.heads as usize - 1);
                    (*elem).len = bindings::vnzc_cpu_to_vhost32(
                        vq,
                        u32::try_from(trimmed).unwrap_or(u32::MAX),
                    );
                }
                Ok(RxGather::Bufs(bufs))
            }
            Ok(()) => {
                // Not enough buffers within the quota: the packet cannot be delivered.
                self.discard_n(bufs.heads, bufs.ndesc);
                Ok(RxGather::Overrun)
            }
            Err(None) => {
                self.discard_n(bufs.heads, bufs.ndesc);
                Ok(RxGather::Empty)
            }
            Err(Some(e)) => {
                self.discard_n(bufs.heads, bufs.ndesc);
                Err(e)
            }
        }
    }

    fn sum_heads_but_last(&self, bufs: &RxBufs) -> usize {
        let vq = self.raw();
        (0..bufs.heads.saturating_sub(1) as usize).fold(0usize, |acc, i| {
            // SAFETY: `i` is below the number of heads written by `get_rx_bufs()`.
            let len = unsafe { bindings::vnzc_vhost32_to_cpu(vq, (*(*vq).heads.add(i)).len) };
            acc.saturating_add(len as usize)
        })
    }

    fn discard_n(&self, heads: u32, ndesc: u32) {
        if heads == 0 {
            return;
        }
        let heads = i32::try_from(heads).unwrap_or(i32::MAX);
        // SAFETY: The virtqueue is initialised and its mutex is held; the chains were the last
        // taken.
        unsafe { bindings::vhost_discard_vq_desc(self.raw(), heads, ndesc) }
    }

    /// Gives the chains of `bufs` back to the avail ring.
    pub(crate) fn discard_rx(&self, bufs: &RxBufs) {
        self.discard_n(bufs.heads, bufs.ndesc);
    }

    /// Returns the chains of `bufs` to the guest in the used ring and signals it.
    pub(crate) fn add_used_rx_and_signal(&self, bufs: &RxBufs) {
        // SAFETY: The device and virtqueue are initialised and the mutex held; `heads` holds
        // `bufs.heads` elements written by `get_rx_bufs()`.
        unsafe {
            bindings::vhost_add_used_and_signal_n(
                self.dev.dev.get(),
                self.raw(),
                (*self.raw()).heads,
                core::ptr::null_mut(),
                bufs.heads,
            )
        }
    }

    /// Records in the dirty log (with `VHOST_F_LOG_ALL`) that the `len` bytes at `hva` of
    /// the owner's address space changed: every guest page the memory table maps there.
    /// Must run in the owner's address space, where the log is.
    ///
    /// # Errors
    ///
    /// `EFAULT` if the log cannot be written.
    pub(crate) fn log_hva(&self, hva: usize, len: usize) -> Result {
        if !self.has_feature(bindings::VHOST_F_LOG_ALL) {
            return Ok(());
        }
        // SAFETY: The virtqueue is initialised and its mutex held; the helper only reads the
        // memory table and writes the user's log through the vhost core.
        kernel::error::to_result(unsafe {
            bindings::vnzc_log_hva(self.raw(), hva as u64, len as u64)
        })
    }

    /// Records in the dirty log the `len` bytes written through the chains of `bufs`.
    pub(crate) fn log_rx(&self, bufs: &RxBufs, len: usize) {
        if !self.has_feature(bindings::VHOST_F_LOG_ALL) {
            return;
        }
        let vq = self.raw();
        // SAFETY: The virtqueue is initialised and its mutex held; the log and iovec entries
        // were filled by `get_rx_bufs()`.
        unsafe {
            bindings::vhost_log_write(
                vq,
                (*vq).log,
                bufs.nlog,
                len as u64,
                addr_of_mut!((*vq).iov).cast(),
                i32::try_from(bufs.iovs).unwrap_or(i32::MAX),
            )
        };
    }

    /// Writes `data` at byte `offset` of the buffers described by the first `count` iovecs.
    ///
    /// # Errors
    ///
    /// `EFAULT` if the buffers are shorter or not writable.
    pub(crate) fn write_iov(&self, count: u32, offset: usize, data: &[u8]) -> Result {
        let iov = self.iov(count);
        let total = iov_len(&iov);
        // SAFETY: An all-zero `iov_iter` is a valid value to initialise.
        let mut iter: kernel::bindings::iov_iter = unsafe { core::mem::zeroed() };
        // SAFETY: `iov` is valid for the call; the iterator writes user memory through it with
        // the usual fault checks.
        let written = unsafe {
            kernel::bindings::iov_iter_init(
                &mut iter,
                kernel::bindings::ITER_DEST,
                iov.as_ptr(),
                iov.len(),
                total,
            );
            kernel::bindings::iov_iter_advance(&mut iter, offset);
            kernel::bindings::_copy_to_iter(data.as_ptr().cast(), data.len(), &mut iter)
        };
        if written == data.len() {
            Ok(())
        } else {
            Err(EFAULT)
        }
    }

    /// The 16-bit value in the ring's byte order (`__virtio16`).
    pub(crate) fn to_vhost16(&self, v: u16) -> u16 {
        // SAFETY: The virtqueue is initialised and its mutex is held.
        unsafe { bindings::vnzc_cpu_to_vhost16(self.raw(), v) }
    }

    /// The first `count` iovecs of the last chains taken; no chain can be taken while the
    /// returned borrow exists.
    pub(crate) fn iov(&self, count: u32) -> IovRef<'_> {
        self.iov_borrows
            .set(self.iov_borrows.get().saturating_add(1));
        IovRef {
            iov: self.iov_from(0, count),
            borrows: &self.iov_borrows,
        }
    }

    fn iov_from(&self, seg: usize, count: u32) -> &[kernel::bindings::iovec] {
        let vq = self.raw();
        // SAFETY: The array is the virtqueue's own and is only written by `get_desc_at()`,
        // under the mutex `self` holds, and never while the slice lives: the slices this
        // returns either live in an `IovRef`, whose existence makes `get_desc_at()` refuse,
        // or are used and dropped inside one method that does not call it meanwhile.
        let all: &[kernel::bindings::iovec] = unsafe { &(*vq).iov };
        let end = seg.saturating_add(count as usize).min(all.len());
        all.get(seg.min(end)..end).unwrap_or(&[])
    }

    /// Gives `chain` back to the avail ring, to be taken again next time.
    pub(crate) fn discard(&self, chain: &Chain) {
        // SAFETY: The virtqueue is initialised and its mutex is held; `chain` was the last
        // chain taken.
        unsafe { bindings::vhost_discard_vq_desc(self.raw(), 1, chain.ndesc) }
    }

    /// Returns `chain` to the guest in the used ring with `len` bytes written, and signals
    /// the call eventfd if the guest wants it.
    pub(crate) fn add_used_and_signal(&self, chain: &Chain, len: u32) {
        let len = i32::try_from(len).unwrap_or(i32::MAX);
        // SAFETY: The device and virtqueue are initialised and the virtqueue mutex is held.
        unsafe {
            bindings::vhost_add_used_and_signal(self.dev.dev.get(), self.raw(), chain.head, len)
        }
    }

    /// Returns the chains `heads` to the guest in the used ring, with nothing written to
    /// them, and signals the call eventfd if the guest wants it.
    pub(crate) fn add_used_heads_and_signal(&self, heads: &[u16]) {
        const BATCH: usize = 64;
        for part in heads.chunks(BATCH) {
            let mut elems: [bindings::vring_used_elem; BATCH] =
                core::array::from_fn(|_| bindings::vring_used_elem { id: 0, len: 0 });
            for (elem, &head) in elems.iter_mut().zip(part) {
                // SAFETY: The virtqueue is initialised and its mutex is held.
                elem.id = unsafe { bindings::vnzc_cpu_to_vhost32(self.raw(), u32::from(head)) };
            }
            // SAFETY: The device and virtqueue are initialised and the virtqueue mutex is
            // held; `elems` has at least `part.len()` entries.
            unsafe {
                bindings::vhost_add_used_and_signal_n(
                    self.dev.dev.get(),
                    self.raw(),
                    elems.as_mut_ptr(),
                    core::ptr::null_mut(),
                    part.len() as u32,
                )
            }
        }
    }

    /// Whether the guest's used index is `last_used`, the one the device last wrote:
    /// [`UsedIdx::Reset`] once the guest has reset the ring in place (zeroed it) since, or
    /// if the ring cannot be read; [`UsedIdx::Untranslated`] while a device IOTLB has no
    /// translation for it. The caller must run in the owner's address space, where the
    /// ring is.
    pub(crate) fn guest_used_idx(&self, last_used: u16) -> UsedIdx {
        let mut idx = 0u16;
        // SAFETY: The virtqueue is initialised and its mutex is held; the helper reads the
        // used ring through the user-copy functions, which fault safely.
        let r = unsafe { bindings::vnzc_vq_guest_used_idx(self.raw(), &mut idx) };
        if r == EAGAIN.to_errno() {
            UsedIdx::Untranslated
        } else if r == 0 && idx == last_used {
            UsedIdx::Same
        } else {
            UsedIdx::Reset
        }
    }

    /// The used index the device last wrote (reloaded from the ring when a backend is
    /// attached).
    pub(crate) fn last_used_idx(&self) -> u16 {
        // SAFETY: The virtqueue is initialised; `last_used_idx` is only written under the
        // mutex held.
        unsafe { (*self.raw()).last_used_idx }
    }

    /// What identifies the ring the guest uses: its size, its next available index and the
    /// addresses of its three parts. A VMM that sets the same ring again (QEMU's `cont`
    /// after a `stop`) leaves it unchanged; one that sets up a new ring (a guest reboot)
    /// changes it.
    pub(crate) fn ring_identity(&self) -> (u32, u16, usize, usize, usize) {
        let vq = self.raw();
        // SAFETY: The virtqueue is initialised; these fields are only written under the
        // mutex held.
        unsafe {
            (
                (*vq).num,
                (*vq).last_avail_idx,
                (*vq).desc as usize,
                (*vq).avail as usize,
                (*vq).used as usize,
            )
        }
    }

    /// The ring size (`VHOST_SET_VRING_NUM`).
    pub(crate) fn num(&self) -> u32 {
        // SAFETY: The virtqueue is initialised; `num` is only written under the mutex held.
        unsafe { (*self.raw()).num }
    }

    /// The busy-poll timeout in microseconds (`VHOST_SET_VRING_BUSYLOOP_TIMEOUT`), 0 if off.
    pub(crate) fn busyloop_timeout(&self) -> u32 {
        // SAFETY: The virtqueue is initialised; the field is only written under the mutex.
        unsafe { (*self.raw()).busyloop_timeout }
    }

    /// Whether the guest has no buffer waiting in the avail ring.
    pub(crate) fn avail_empty(&self) -> bool {
        // SAFETY: The device and virtqueue are initialised and the virtqueue mutex is held.
        unsafe { bindings::vhost_vq_avail_empty(self.dev.dev.get(), self.raw()) }
    }

    /// Whether work is queued on the virtqueue's worker.
    pub(crate) fn has_work(&self) -> bool {
        // SAFETY: The virtqueue is initialised.
        unsafe { bindings::vhost_vq_has_work(self.raw()) }
    }

    /// Queues this virtqueue's handler to run again.
    pub(crate) fn queue(&self) {
        // SAFETY: The virtqueue is initialised and belongs to the live device `self.dev`.
        unsafe { Waker::wake_raw(self.raw()) }
    }

    /// A handle that queues this virtqueue's handler from any context.
    pub(crate) fn waker(&self) -> Waker<'a> {
        // INVARIANT: the virtqueue belongs to `self.dev`, alive for `'a`.
        Waker {
            vq: self.raw(),
            _dev: PhantomData,
        }
    }

    /// Asks the guest for kicks again; `true` if buffers arrived meanwhile.
    pub(crate) fn enable_notify(&self) -> bool {
        // SAFETY: The device and virtqueue are initialised and the virtqueue mutex is held.
        unsafe { bindings::vhost_enable_notify(self.dev.dev.get(), self.raw()) }
    }

    /// Asks the guest not to kick while the handler runs.
    pub(crate) fn disable_notify(&self) {
        // SAFETY: The device and virtqueue are initialised and the virtqueue mutex is held.
        unsafe { bindings::vhost_disable_notify(self.dev.dev.get(), self.raw()) }
    }

    /// Whether the handler used up its share of the worker (and requeued itself).
    pub(crate) fn exceeds_weight(&self, packets: usize, bytes: usize) -> bool {
        let packets = i32::try_from(packets).unwrap_or(i32::MAX);
        let bytes = i32::try_from(bytes).unwrap_or(i32::MAX);
        // SAFETY: The virtqueue is initialised and its mutex is held.
        unsafe { bindings::vhost_exceeds_weight(self.raw(), packets, bytes) }
    }

    /// Reports a guest mistake: a debug line and a signal on the error eventfd.
    pub(crate) fn report(&self, msg: &CStr) {
        // SAFETY: The virtqueue is initialised; `msg` is NUL-terminated.
        unsafe { bindings::vnzc_vq_err(self.raw(), msg.as_char_ptr()) }
    }
}
