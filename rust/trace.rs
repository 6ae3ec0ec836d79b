// SPDX-License-Identifier: GPL-2.0

//! The module's tracepoints, `events/vhost_net_zc/` in tracefs.
//!
//! They are declared in C (the module's `rust/vnzc_trace.h`, with `TRACE_EVENT`) and
//! defined in its C helper, like the kernel's own Rust tracepoints; the kernel crate's
//! `declare_trace!` names its C side in `kernel::bindings`, which a module's own events are
//! not part of, so each is wrapped here with the crate's static-key test
//! ([`kernel::jump_label::static_branch_unlikely`]): a disabled event costs the key test
//! (a patched jump with `CONFIG_JUMP_LABEL`, an atomic read otherwise), not the event's
//! call. Without `CONFIG_TRACEPOINTS` the functions do nothing. `dev` is the device's number
//! (the `<n>` of its debugfs directory `<tgid>-<n>`), `slot` its buffer's slot in the pool.

#[cfg(CONFIG_TRACEPOINTS)]
use crate::ffi::bindings;

/// Defines a safe function `$name` that fires the tracepoint `$key` when it is enabled.
macro_rules! tracepoint {
    ($(#[$doc:meta])* $name:ident, $key:ident, $call:ident, ($($arg:ident: $ty:ty),* $(,)?)) => {
        $(#[$doc])*
        #[inline(always)]
        pub(crate) fn $name($($arg: $ty),*) {
            #[cfg(CONFIG_TRACEPOINTS)]
            {
                // SAFETY: `$key` is a `struct tracepoint` declared by `vnzc_trace.h` and
                // defined in the C helper (`CREATE_TRACE_POINTS`); its `key` field is its
                // static key.
                let on = unsafe {
                    kernel::jump_label::static_branch_unlikely!(
                        bindings::$key,
                        kernel::bindings::tracepoint,
                        key
                    )
                };
                if on {
                    // SAFETY: The arguments are scalars, passed by value. Every caller runs
                    // where RCU is watching (process context, softirq or the hrtimer's
                    // interrupt; never idle or noinstr code), as the event's probes need.
                    unsafe { bindings::$call($($arg),*) };
                }
            }
            #[cfg(not(CONFIG_TRACEPOINTS))]
            {
                $(let _ = $arg;)*
            }
        }
    };
}

tracepoint!(
    /// A buffer was sent zero-copy: its `head` and how many base pages it spans.
    zc_send,
    __tracepoint_vnzc_zc_send,
    rust_do_trace_vnzc_zc_send,
    (dev: u64, slot: u32, head: u16, pages: u32)
);

tracepoint!(
    /// The network stack freed a buffer's skb (`copied`: its frags were copied after all).
    zc_complete,
    __tracepoint_vnzc_zc_complete,
    rust_do_trace_vnzc_zc_complete,
    (dev: u64, slot: u32, copied: bool)
);

tracepoint!(
    /// A buffer in flight passed its deadline.
    zc_expire,
    __tracepoint_vnzc_zc_expire,
    rust_do_trace_vnzc_zc_expire,
    (dev: u64, slot: u32, head: u16)
);

tracepoint!(
    /// A buffer's pages were offlined (`pages` of them, in discard or preserve mode) and
    /// its head returned.
    offline,
    __tracepoint_vnzc_offline,
    rust_do_trace_vnzc_offline,
    (dev: u64, slot: u32, head: u16, pages: u32, discard: bool)
);

tracepoint!(
    /// A buffer could not be offlined (`error`, a negative errno); it stays in flight.
    offline_refused,
    __tracepoint_vnzc_offline_refused,
    rust_do_trace_vnzc_offline_refused,
    (dev: u64, slot: u32, head: u16, error: i32)
);

tracepoint!(
    /// A reset spent `wait_ns` on zero-copy buffers; `reserved` slots are still reserved
    /// after it (in flight, or completed and not yet reaped).
    reset,
    __tracepoint_vnzc_reset,
    rust_do_trace_vnzc_reset,
    (dev: u64, wait_ns: u64, reserved: u32)
);
