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
    cell::UnsafeCell,
    marker::PhantomPinned,
    ptr::addr_of_mut, //
};

use kernel::{
    ffi,
    prelude::*,
    sync::{
        lock::{
            mutex::MutexBackend,
            Guard, //
        },
        Mutex, //
    },
    types::Opaque,
    uaccess::UserPtr,
};

use crate::ffi::bindings;

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

/// The driver side of a [`VhostDev`]: its state and its virtqueue handlers.
pub(crate) trait Driver<const N: usize>: Send + Sync + Sized {
    /// Called on the device's worker when the guest kicks virtqueue `index` (`index < N`).
    fn kick(dev: &VhostDev<Self, N>, index: usize);
}

/// One `struct vhost_virtqueue`.
#[repr(transparent)]
pub(crate) struct Virtqueue(Opaque<bindings::vhost_virtqueue>);

/// A vhost device with `N` virtqueues and driver state `D`.
///
/// # Invariants
///
/// - `dev` was initialised by `vhost_dev_init()` with the array `vq_ptrs`, whose entry `i`
///   points at `vqs[i]`, and the kick handler of `vqs[i]` is [`kick_trampoline::<D, N>`].
/// - The object is pinned: the vhost core holds pointers into it until `Drop` has run
///   `vhost_dev_cleanup()`.
/// - `dev` is the first field (`repr(C)`), so a `vhost_dev` pointer the core hands back to a
///   handler is a pointer to the `VhostDev`.
#[repr(C)]
pub(crate) struct VhostDev<D: Driver<N>, const N: usize> {
    dev: Opaque<bindings::vhost_dev>,
    vqs: [Virtqueue; N],
    vq_ptrs: UnsafeCell<[*mut bindings::vhost_virtqueue; N]>,
    data: D,
    _pin: PhantomPinned,
}

// SAFETY: The C device is only reached through the vhost core, which serialises access with
// the device and virtqueue mutexes and its worker; `vq_ptrs` is written once during
// initialisation. `D` is `Send`.
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
        D::kick(this, index);
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
            }
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
            // SAFETY: `dev` and the `N` virtqueues `ptrs` points at are zeroed, pinned (the
            // slot is) and outlive the device: `Drop` cleans the device up first.
            // INVARIANT: `vq_ptrs[i]` points at `vqs[i]`, whose kick handler is the trampoline.
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

    /// Virtqueue `index`.
    ///
    /// # Errors
    ///
    /// `ENOBUFS` if `index` is not below `N` (the errno vhost-net gives a bad queue index).
    pub(crate) fn vq(&self, index: u32) -> Result<&Virtqueue> {
        let index = usize::try_from(index).map_err(|_| ENOBUFS)?;
        self.vqs.get(index).ok_or(ENOBUFS)
    }
}

impl<D: Driver<N>, const N: usize> Drop for VhostDev<D, N> {
    fn drop(&mut self) {
        // SAFETY: The device was initialised (type invariant) and is torn down exactly once,
        // here; `vhost_dev_stop()` stops the polls and flushes the worker before
        // `vhost_dev_cleanup()` releases the owner, worker, memory table and eventfds.
        unsafe {
            bindings::vhost_dev_stop(self.raw());
            bindings::vhost_dev_cleanup(self.raw());
        }
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

impl<D: Driver<N>, const N: usize> DevGuard<'_, D, N> {
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

    /// Drops the owner and everything set up under it (memory table, rings, eventfds), as
    /// `VHOST_RESET_OWNER` asks. The driver must have stopped its backends first.
    ///
    /// # Errors
    ///
    /// `EPERM` if the caller is not the owner, `ENOMEM` if the empty memory table that
    /// replaces the current one cannot be allocated.
    pub(crate) fn reset_owner(&self) -> Result {
        self.check_owner()?;
        // SAFETY: Allocates an empty IOTLB; no precondition.
        let umem = unsafe { bindings::vhost_dev_reset_owner_prepare() };
        if umem.is_null() {
            return Err(ENOMEM);
        }
        // SAFETY: The device is initialised and its mutex held; `umem` is a fresh IOTLB whose
        // ownership passes to the device.
        unsafe {
            bindings::vhost_dev_stop(self.dev.raw());
            bindings::vhost_dev_reset_owner(self.dev.raw(), umem);
        }
        Ok(())
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

impl Virtqueue {
    fn raw(&self) -> *mut bindings::vhost_virtqueue {
        self.0.get()
    }

    /// Takes the virtqueue's mutex. Lock order: after the device mutex.
    pub(crate) fn lock(&self) -> VqGuard<'_> {
        // SAFETY: `vq.mutex` was initialised by `vhost_dev_init()` and lives as long as the
        // device, which outlives `self`.
        let mutex = unsafe { Mutex::from_raw(addr_of_mut!((*self.raw()).mutex)) };
        VqGuard {
            vq: self,
            _guard: mutex.lock(),
        }
    }
}

/// A [`Virtqueue`] whose mutex is held.
pub(crate) struct VqGuard<'a> {
    vq: &'a Virtqueue,
    _guard: Guard<'a, (), MutexBackend>,
}

impl VqGuard<'_> {
    /// Whether the ring addresses (and the log, if enabled) are accessible.
    pub(crate) fn access_ok(&self) -> bool {
        // SAFETY: The virtqueue is initialised and its mutex is held.
        unsafe { bindings::vhost_vq_access_ok(self.vq.raw()) }
    }

    /// Records the features the VMM acknowledged.
    pub(crate) fn set_acked_features(&self, features: &[u64; crate::uapi::FEATURE_WORDS]) {
        // SAFETY: The virtqueue is initialised and its mutex is held; `features` has the
        // kernel's number of feature words.
        unsafe { bindings::vnzc_vq_set_acked_features(self.vq.raw(), features.as_ptr()) }
    }
}
