// SPDX-License-Identifier: GPL-2.0

//! The deadline timer of a [`Pool`](super::Pool): one `CLOCK_MONOTONIC` hrtimer in absolute
//! mode, started with slack, its expiry an [`Instant`] and its slack a [`Delta`].
//!
//! A small wrapper rather than [`kernel::time::hrtimer::HrTimer`], for two reasons:
//! - that API starts timers with no slack (`hrtimer_start_range_ns(.., 0, ..)`), and the
//!   deadline timer is re-armed from the TX path, where letting the kernel batch it with
//!   other timers ([`TIMER_SLACK`](super::TIMER_SLACK)) is what keeps it cheap;
//! - its safe starts take an owning pointer (`Arc`, `Pin<Box>`) or a borrow whose handle
//!   cancels the timer when dropped, while a pool is freed by its own reference count
//!   after an RCU grace period, is armed by its owner under the ledger's mutex, and is
//!   cancelled at quiesce and when the owner lets go of it.
//!
//! The timer is cancelled when the wrapper is dropped, so its callback never runs after the
//! memory around it is gone.
//!
//! C header: [`include/linux/hrtimer.h`](srctree/include/linux/hrtimer.h).

use kernel::{
    bindings as kb,
    prelude::*,
    time::{
        hrtimer::HrTimerExpires,
        Delta,
        Instant,
        Monotonic, //
    },
    types::Opaque,
};

/// The callback of a [`DeadlineTimer`]: gets the `hrtimer` embedded in the wrapper.
pub(crate) type Callback = unsafe extern "C" fn(*mut kb::hrtimer) -> kb::hrtimer_restart;

/// An hrtimer on `CLOCK_MONOTONIC`, in absolute mode.
///
/// # Invariants
///
/// `timer` was set up by `hrtimer_setup()` and stays pinned until it is dropped, which
/// cancels it.
#[repr(transparent)]
#[pin_data(PinnedDrop)]
pub(crate) struct DeadlineTimer {
    #[pin]
    timer: Opaque<kb::hrtimer>,
}

// SAFETY: The hrtimer core serialises starts, cancels and the callback on its own lock.
unsafe impl Send for DeadlineTimer {}
// SAFETY: As for `Send`.
unsafe impl Sync for DeadlineTimer {}

impl DeadlineTimer {
    /// A timer that calls `callback` when it fires.
    ///
    /// # Safety
    ///
    /// `callback` must be sound to call with this timer's `hrtimer` whenever the timer fires,
    /// for as long as the timer exists.
    pub(crate) unsafe fn new(callback: Callback) -> impl PinInit<Self> {
        pin_init!(DeadlineTimer {
            // INVARIANT: set up here; `PinnedDrop` cancels it.
            timer <- Opaque::ffi_init(move |timer| {
                // SAFETY: `timer` is valid for writes and pinned; the caller vouches for the
                // callback.
                unsafe {
                    kb::hrtimer_setup(
                        timer,
                        Some(callback),
                        kb::CLOCK_MONOTONIC as i32,
                        kb::hrtimer_mode_HRTIMER_MODE_ABS,
                    )
                }
            }),
        })
    }

    /// (Re)starts the timer to fire at `expires`, or up to `slack` later.
    pub(crate) fn start(&self, expires: Instant<Monotonic>, slack: Delta) {
        let slack = u64::try_from(slack.as_nanos()).unwrap_or(0);
        // SAFETY: The timer is set up and pinned (type invariant).
        unsafe {
            kb::hrtimer_start_range_ns(
                self.timer.get(),
                expires.as_nanos(),
                slack,
                kb::hrtimer_mode_HRTIMER_MODE_ABS,
            )
        };
    }

    /// Stops the timer, waiting for its callback if it is running.
    pub(crate) fn cancel(&self) {
        // SAFETY: The timer is set up and pinned (type invariant).
        unsafe { kb::hrtimer_cancel(self.timer.get()) };
    }
}

#[pinned_drop]
impl PinnedDrop for DeadlineTimer {
    fn drop(self: Pin<&mut Self>) {
        self.cancel();
    }
}
