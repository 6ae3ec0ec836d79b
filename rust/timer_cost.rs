// SPDX-License-Identifier: GPL-2.0

//! The cost of the two designs for zero-copy deadlines, measured in the running kernel for
//! `make bench`: `vhost-net-zc/timer_cost` in debugfs. Built only into the module that
//! `make bench` loads (`VNZC_BENCH=1`, which sets `cfg(vnzc_bench)`); the production
//! module carries no benchmark.

use core::{
    convert::Infallible,
    mem::size_of, //
};

use kernel::{
    bindings as kb,
    prelude::*,
    time::{
        hrtimer::HrTimerExpires,
        Delta, //
    },
    types::Opaque, //
};

use crate::{
    ffi::bindings,
    offline::BufPage,
    zerocopy::{
        earlier,
        now,
        Pool,
        MAX_PAGES,
        MAX_PEND,
        TIMER_SLACK, //
    },
};

/// Packets of the deadline timer measurement ([`show_timer_cost`]).
const COST_PACKETS: usize = 100_000;

/// The callback of the timers of the per-buffer design in [`show_timer_cost`], which never
/// expire there.
extern "C" fn cost_timer_noop(_timer: *mut kb::hrtimer) -> kb::hrtimer_restart {
    kb::hrtimer_restart::HRTIMER_NORESTART
}

/// Measures the timer cost per packet of the two designs for deadlines, and writes it:
/// - one timer per virtqueue, armed for the earliest deadline (this module's): each send
///   reads the clock and compares its deadline with the one armed (deadlines only grow,
///   so the timer is started once; it fires once per timeout and the handler re-arms it);
/// - one timer per buffer: each send starts its buffer's timer, each completion cancels
///   it ([`MAX_PEND`] buffers in flight, the oldest completing as a new one is sent).
///
/// Every send sets a deadline `timeout_ms` (module parameter) ahead, so no timer expires
/// during the measurement.
pub(crate) fn show_timer_cost(f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
    let timeout = Delta::from_millis(i64::from(crate::params::timeout_ms()));
    let slack = u64::try_from(TIMER_SLACK.as_nanos()).unwrap_or(0);
    let Ok(timers) = KBox::pin_init(
        pin_init::pin_init_array_from_fn::<_, MAX_PEND, _, Infallible>(|_| {
            Opaque::ffi_init(|timer| {
                // SAFETY: `timer` is valid for writes and pinned; the callback touches
                // nothing.
                unsafe {
                    kb::hrtimer_setup(
                        timer,
                        Some(cost_timer_noop),
                        kb::CLOCK_MONOTONIC as i32,
                        kb::hrtimer_mode_HRTIMER_MODE_ABS,
                    )
                }
            })
        }),
        GFP_KERNEL,
    ) else {
        return writeln!(f, "error: out of memory");
    };
    let timers: &[Opaque<kb::hrtimer>; MAX_PEND] = &timers;

    // One per virtqueue: start once, compare per packet.
    let start = now();
    let mut armed = None;
    for _ in 0..COST_PACKETS {
        let deadline = now() + timeout;
        if armed.is_none_or(|armed| earlier(deadline, armed)) {
            armed = Some(deadline);
            // SAFETY: The timer was set up above and is pinned.
            unsafe {
                kb::hrtimer_start_range_ns(
                    timers[0].get(),
                    deadline.as_nanos(),
                    slack,
                    kb::hrtimer_mode_HRTIMER_MODE_ABS,
                )
            };
        }
    }
    let per_queue = now() - start;
    // SAFETY: As above; cancelling waits for a running callback.
    unsafe { kb::hrtimer_cancel(timers[0].get()) };

    // One per buffer: start at the send, cancel at the completion.
    let start = now();
    for i in 0..COST_PACKETS {
        let timer = timers[i % MAX_PEND].get();
        // SAFETY: As above.
        unsafe {
            if i >= MAX_PEND {
                kb::hrtimer_cancel(timer);
            }
            kb::hrtimer_start_range_ns(
                timer,
                (now() + timeout).as_nanos(),
                slack,
                kb::hrtimer_mode_HRTIMER_MODE_ABS,
            );
        }
    }
    let per_buffer = now() - start;
    for timer in timers {
        // SAFETY: As above: no timer is left running when the array is freed.
        unsafe { kb::hrtimer_cancel(timer.get()) };
    }
    let n = COST_PACKETS as i64;
    let (per_queue, per_buffer) = (per_queue.as_nanos(), per_buffer.as_nanos());
    writeln!(f, "packets: {}", COST_PACKETS)?;
    writeln!(f, "in_flight: {}", MAX_PEND)?;
    writeln!(f, "per_queue_timer_ns_per_packet: {}", per_queue / n)?;
    writeln!(f, "per_buffer_timer_ns_per_packet: {}", per_buffer / n)?;
    // Memory: a device's pool is allocated whole, for `MAX_PEND` buffers in flight, with
    // room for `MAX_PAGES` pages each; a timer per buffer would add one hrtimer
    // each. Stock vhost-net keeps a `ubuf_info_msgzc` and a used element per buffer (for
    // `UIO_MAXIOV` of them per queue).
    let pool = size_of::<Pool>() + MAX_PEND * MAX_PAGES * size_of::<BufPage>();
    writeln!(f, "pool_bytes_per_buffer: {}", pool / MAX_PEND)?;
    writeln!(f, "hrtimer_bytes: {}", size_of::<kb::hrtimer>())?;
    writeln!(
        f,
        "stock_bytes_per_buffer: {}",
        size_of::<kb::ubuf_info_msgzc>() + size_of::<bindings::vring_used_elem>()
    )
}
