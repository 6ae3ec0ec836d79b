// SPDX-License-Identifier: GPL-2.0

//! vhost-net-zc: vhost-net whose zero-copy TX buffers have a deadline.
//!
//! A guest's virtio-net TX buffers are sent zero-copy: the guest's pages go into the skb and
//! the descriptor is returned only when the skb is freed. Stock vhost-net waits for such an
//! skb without bound on every backend change, owner reset and close. This module gives every
//! outstanding zero-copy buffer a deadline; on a reset, buffers past it have their guest pages
//! offlined (detached from the VMM's address space, the in-flight skb keeping the old pages)
//! and are returned, so a reset ends in bounded time and no guest data is lost.
//!
//! The device, `/dev/vhost-net-zc`, speaks the vhost-net ioctl ABI and builds on the vhost
//! core (`vhost.ko`). Layers, bottom up:
//! - [`ffi`]: bindgen declarations for the vhost core, generated from the target tree;
//! - [`uapi`]: the ioctl numbers and feature bits;
//! - [`vhost`]: safe abstractions over the vhost core (device, virtqueues, locks);
//! - [`socket`]: the tap, macvtap and packet sockets virtqueues are attached to;
//! - [`zerocopy`]: the zero-copy TX buffers in flight: the slot pool and its completions
//!   (`zerocopy.rs`), the owner's ledger of slots, deadlines and counters
//!   (`zerocopy/ledger.rs`), the deadline timer (`zerocopy/timer.rs`);
//! - [`mm`], [`offline`]: offlining the guest pages of expired buffers;
//! - [`reset`]: what a reset does with the buffers in flight (settle, offline, return,
//!   abandon);
//! - [`miscdev`]: the misc device registration, with the file operations (`poll` among
//!   them) the kernel crate's `MiscDevice` lacks;
//! - [`net`]: the device's file operations, its ioctls and the datapath.
//!
//! Lock order, outermost first (lockdep names in quotes where the module names them):
//! 1. the vhost device mutex (`DevGuard`);
//! 2. a virtqueue mutex (`VqGuard`); a handler holding one may only try-lock the other;
//! 3. the TX pool's ledger (`"Pool::ledger"`);
//! 4. the owner's mmap lock, for write and killably, only while offlining
//!    ([`offline::Offliner`]); inside it the page-table lock and the MMU notifiers of
//!    `vma_share_anon_pages()`, or the locks of `get_user_pages_remote()`.
//!
//! The dirty log and hole punching run after the mmap lock is dropped. Completions and
//! the deadline timer take none of these: they set atomic bits and queue the handler under
//! RCU.
//!
//! See `Documentation/admin-guide.rst` for the administrator's view and
//! `Documentation/design.rst` for the design.

mod ffi;
mod miscdev;
mod mm;
mod net;
mod offline;
mod reset;
mod socket;
#[cfg(vnzc_bench)]
mod timer_cost;
mod trace;
mod uapi;
mod vhost;
mod zerocopy;

use kernel::{
    debugfs::Dir,
    prelude::*, //
};

module! {
    type: VhostNetZcModule,
    name: "vhost_net_zc",
    authors: ["The vhost-net-zc developers"],
    description: "vhost-net with bounded-time reset of stalled zero-copy TX",
    license: "GPL",
}

/// The module parameters: `zcopy_tx`, `copy_threshold` and `timeout_ms`.
///
/// They are declared in the C helper (`module_param()`, mode 0444) so that they can be read
/// under `/sys/module/vhost_net_zc/parameters/`: the `module!` macro of Linux 7.3 registers
/// parameters without sysfs files. Read-only, they keep the values of the load.
pub(crate) mod params {
    use crate::ffi::bindings;

    /// `zcopy_tx`: whether TX buffers at or above `copy_threshold` are sent zero-copy.
    pub(crate) fn zcopy_tx() -> bool {
        // SAFETY: The helper reads a variable that only the module loader writes, before init.
        unsafe { bindings::vnzc_param_zcopy_tx() }
    }

    /// `copy_threshold`: the smallest TX buffer, in bytes, sent zero-copy.
    pub(crate) fn copy_threshold() -> u32 {
        // SAFETY: As in `zcopy_tx()`.
        unsafe { bindings::vnzc_param_copy_threshold() }
    }

    /// `timeout_ms`: the default deadline of a zero-copy TX buffer, in milliseconds.
    pub(crate) fn timeout_ms() -> u32 {
        // SAFETY: As in `zcopy_tx()`.
        unsafe { bindings::vnzc_param_timeout_ms() }
    }
}

/// Accepted range of `copy_threshold`: below 64 bytes the per-buffer completion costs more
/// than the copy; a buffer above 64 KiB does not exist in virtio-net.
const COPY_THRESHOLD_RANGE: core::ops::RangeInclusive<u32> = 64..=65536;
/// Accepted range of `timeout_ms`: at least 1 ms, at most 10 minutes.
pub(crate) const TIMEOUT_MS_RANGE: core::ops::RangeInclusive<u32> = 1..=600_000;

kernel::sync::global_lock! {
    // SAFETY: Initialised by the module's `init`, before the device is registered.
    unsafe(uninit) static DEBUGFS: Mutex<Option<Dir>> = None;
}

/// A debugfs directory for one device, `vhost-net-zc/<name>`; one that does nothing if
/// debugfs is not available.
pub(crate) fn debugfs_dir(name: &CStr) -> Dir {
    match DEBUGFS.lock().as_ref() {
        Some(root) => root.subdir(name),
        None => Dir::new(name),
    }
}

/// How often a log line that a guest or VMM can trigger may be printed: once per interval.
const LOG_INTERVAL_NS: i64 = 5_000_000_000;

/// Whether a rate-limited log line may be printed now; `last` is the line's own clock, the
/// time it was last allowed (`i64::MIN` at first).
pub(crate) fn ratelimit(last: &kernel::sync::atomic::Atomic<i64>) -> bool {
    use kernel::{
        sync::atomic::Relaxed,
        time::hrtimer::HrTimerExpires, //
    };
    // The clock in ns, to keep in an atomic.
    let now = zerocopy::now().as_nanos();
    let seen = last.load(Relaxed);
    if seen != i64::MIN && now.wrapping_sub(seen) < LOG_INTERVAL_NS {
        return false;
    }
    // One of the racing callers wins the interval.
    last.cmpxchg(seen, now, Relaxed).is_ok()
}

/// The module: the registration of `/dev/vhost-net-zc`.
#[pin_data]
struct VhostNetZcModule {
    #[pin]
    _misc: miscdev::Registration<net::VhostNetZc>,
    /// Dropped after the registration.
    _rcu: RcuBarrier,
    /// Dropped last: removes `vhost-net-zc/` from debugfs.
    _debugfs: DebugfsRoot,
}

/// Owns the module's debugfs directory, through [`DEBUGFS`], and its files.
struct DebugfsRoot {
    /// `vhost-net-zc/timer_cost`, in the module `make bench` builds: see
    /// `timer_cost::show_timer_cost`.
    #[cfg(vnzc_bench)]
    timer_cost: Option<Pin<KBox<kernel::debugfs::File<()>>>>,
}

impl DebugfsRoot {
    /// Creates `vhost-net-zc/` in debugfs (nothing if debugfs is not available).
    fn new() -> Self {
        let root = Dir::new(c"vhost-net-zc");
        #[cfg(vnzc_bench)]
        let timer_cost: Result<Pin<KBox<kernel::debugfs::File<()>>>> = KBox::pin_init(
            root.read_callback_file(c"timer_cost", (), &|(): &(), f| {
                timer_cost::show_timer_cost(f)
            }),
            GFP_KERNEL,
        );
        *DEBUGFS.lock() = Some(root);
        DebugfsRoot {
            #[cfg(vnzc_bench)]
            timer_cost: timer_cost.ok(),
        }
    }
}

impl Drop for DebugfsRoot {
    fn drop(&mut self) {
        // The files before their directory.
        #[cfg(vnzc_bench)]
        drop(self.timer_cost.take());
        drop(DEBUGFS.lock().take());
    }
}

/// Waits, when dropped at module exit, for the RCU callbacks the module queued: a
/// zero-copy pool drops its module reference from one (see [`zerocopy`]), and must have
/// returned from it before the module's text goes away.
struct RcuBarrier;

impl Drop for RcuBarrier {
    fn drop(&mut self) {
        kernel::sync::rcu::rcu_barrier();
    }
}

/// Checks a module parameter against its range.
///
/// # Errors
///
/// `EINVAL`, with a log line naming the parameter, when `value` is out of `range`.
fn check_param(name: &str, value: u32, range: &core::ops::RangeInclusive<u32>) -> Result {
    if range.contains(&value) {
        return Ok(());
    }
    pr_err!(
        "{}={} out of range {}..={}\n",
        name,
        value,
        range.start(),
        range.end()
    );
    Err(EINVAL)
}

/// Checks the module parameters.
///
/// # Errors
///
/// `EINVAL` when a parameter is out of its range (see [`check_param`]).
fn check_params() -> Result {
    check_param(
        "copy_threshold",
        params::copy_threshold(),
        &COPY_THRESHOLD_RANGE,
    )?;
    check_param("timeout_ms", params::timeout_ms(), &TIMEOUT_MS_RANGE)
}

impl kernel::InPlaceModule for VhostNetZcModule {
    fn init(_module: &'static ThisModule) -> impl PinInit<Self, Error> {
        let params = check_params();
        // SAFETY: Called once, before anything uses the lock.
        unsafe { DEBUGFS.init() };
        // Initialised in this order, dropped in the order of the fields: if registering fails,
        // the debugfs directory made before it goes again.
        try_pin_init!(Self {
            _debugfs: {
                params?;
                DebugfsRoot::new()
            },
            _misc <- miscdev::Registration::register(c"vhost-net-zc"),
            _rcu: RcuBarrier,
        })
        .pin_chain(|_| {
            pr_info!(
                "/dev/vhost-net-zc ready (zcopy_tx={} copy_threshold={} timeout_ms={} preserve={})\n",
                params::zcopy_tx(),
                params::copy_threshold(),
                params::timeout_ms(),
                if mm::can_share_pages() {
                    "copy-on-write"
                } else {
                    "zap-and-refill (this kernel lacks vma_share_anon_pages(): a weaker guarantee, see the admin guide)"
                }
            );
            Ok(())
        })
    }
}

#[kunit_tests(vhost_net_zc_params)]
mod tests {
    use super::*;

    /// Each bound of each range at N-1, N and N+1.
    #[test]
    fn param_ranges() {
        let cases: [(&core::ops::RangeInclusive<u32>, u32, bool); 8] = [
            (&COPY_THRESHOLD_RANGE, 63, false),
            (&COPY_THRESHOLD_RANGE, 64, true),
            (&COPY_THRESHOLD_RANGE, 65536, true),
            (&COPY_THRESHOLD_RANGE, 65537, false),
            (&TIMEOUT_MS_RANGE, 0, false),
            (&TIMEOUT_MS_RANGE, 1, true),
            (&TIMEOUT_MS_RANGE, 600_000, true),
            (&TIMEOUT_MS_RANGE, 600_001, false),
        ];
        for (range, value, ok) in cases {
            assert_eq!(range.contains(&value), ok);
        }
    }
}
