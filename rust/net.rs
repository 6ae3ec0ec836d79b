// SPDX-License-Identifier: GPL-2.0

//! `/dev/vhost-net-zc`: one open file is one vhost-net device.
//!
//! The device speaks the vhost-net ioctl ABI (`include/uapi/linux/vhost.h`), so a VMM that
//! drives `/dev/vhost-net` drives this file unchanged: the same commands, the same checks in
//! the same order, the same errnos. It is a [`VhostDev`] with two virtqueues (RX is 0, TX
//! is 1), and each ioctl argument is reached through [`UserSlice`] sized by the command.
//!
//! Implemented so far: feature negotiation, owner set and reset, everything the vhost core
//! handles generically (memory table, dirty log, vring setup, kick/call/err eventfds,
//! busy-loop timeout), backends (tap, macvtap, raw packet sockets), TX by copy and
//! zero-copy ([`crate::zerocopy`]), and RX (with mergeable buffers and dirty logging).

use kernel::{
    debugfs,
    fs::{
        File,
        LocalFile, //
    },
    iov::{
        IovIterDest,
        IovIterSource, //
    },
    new_mutex,
    prelude::*,
    seq_file::SeqFile,
    seq_print,
    str::CString,
    sync::{
        atomic::{
            Atomic,
            Relaxed, //
        },
        Mutex,
    },
    uaccess::{
        UserPtr,
        UserSlice, //
    },
};

use crate::{
    miscdev::{
        FileOps,
        PollTable, //
    },
    offline::{
        self,
        BufPage,
        Mode,
        Range, //
    },
    reset,
    socket::{
        Socket,
        TxBatch,
        TX_BATCH, //
    },
    uapi,
    vhost::{
        self,
        Chain,
        DevGuard,
        Driver,
        Limits,
        RxGather,
        UsedIdx,
        VhostDev,
        VqGuard, //
    },
    zerocopy::{
        self,
        Ledger,
        Pool,
        PoolRef,
        StatsRef,
        MAX_PAGES,
        MAX_RANGES, //
    },
};

/// Size in bytes of one feature word in the ioctl ABI.
const WORD: usize = core::mem::size_of::<u64>();

/// Number of virtqueues: RX and TX.
pub(crate) const NVQS: usize = 2;
/// The RX virtqueue's index.
const RX: usize = 0;
/// The TX virtqueue's index.
pub(crate) const TX: usize = 1;

/// The vhost core limits of vhost-net, whose values this device keeps so that a guest
/// cannot hold the worker longer than it could with stock vhost-net: chains of at most
/// `UIO_MAXIOV` plus a batch of 64 iovecs, and at most 256 packets or 512 KiB per handler
/// run (`CVE-2019-3900`).
const LIMITS: Limits = Limits {
    iov_limit: kernel::bindings::UIO_MAXIOV as i32 + 64,
    weight: 256,
    byte_weight: 0x80000,
};

/// The net driver's state inside a [`VhostDev`].
pub(crate) struct NetState {
    /// The TX virtqueue's zero-copy buffers in flight.
    pub(crate) tx: PoolRef,
    /// The TX copy batch, used only by the TX handler (empty between its runs).
    txbatch: Pin<KBox<Mutex<TxBatch>>>,
    /// The device's name, `<tgid>-<n>`: its directory in debugfs.
    name: CString,
    /// `vhost-net-zc/<tgid>-<n>/stats` in debugfs: the zero-copy counters.
    _stats: Pin<KBox<debugfs::File<StatsRef>>>,
    _dir: debugfs::Dir,
}

/// Numbers the devices, for their debugfs directories.
static DEVICES: Atomic<u64> = Atomic::new(0);

impl NetState {
    fn new() -> Result<Self> {
        let dev = DEVICES.fetch_add(1, Relaxed);
        let tx = Pool::create(crate::params::timeout_ms(), dev)?;
        let stats = tx.stats_ref();
        let name = CString::try_from_fmt(fmt!(
            "{}-{}",
            // The opener's process ID as its own processes see it (reading `tgid` directly
            // gave -1 here).
            kernel::current!().tgid_nr_ns(None),
            dev
        ))?;
        let dir = crate::debugfs_dir(&name);
        let stats = KBox::pin_init(
            dir.read_callback_file(c"stats", stats, &StatsRef::show),
            GFP_KERNEL,
        )?;
        let txbatch = KBox::pin_init(new_mutex!(TxBatch::new()?), GFP_KERNEL)?;
        Ok(NetState {
            tx,
            txbatch,
            name,
            _stats: stats,
            _dir: dir,
        })
    }
}

/// The counters of a device as its fdinfo shows them.
struct FdinfoCounters<'a>(&'a Pool);

impl kernel::fmt::Display for FdinfoCounters<'_> {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        self.0.write_counters(f, "vnzc-", ":\t")
    }
}

/// A virtqueue of the net device, locked.
pub(crate) type NetVq<'a> = VqGuard<'a, NetState, NVQS>;

impl Driver<NVQS> for NetState {
    type Backend = Socket;

    /// RX runs when the socket has a packet for the guest, TX when it has room.
    const BACKEND_EVENTS: [u32; NVQS] = [
        crate::ffi::bindings::VNZC_EPOLLIN,
        crate::ffi::bindings::VNZC_EPOLLOUT,
    ];

    fn handle(dev: &VhostDev<Self, NVQS>, index: usize) {
        let Ok(vq) = dev.vq(index as u32) else {
            return;
        };
        match index {
            TX => handle_tx(dev, &vq, &dev.data().tx),
            RX => handle_rx(dev, &vq),
            _ => {}
        }
    }

    /// Before an owner reset or teardown: settles the TX buffers in flight
    /// ([`reset::settle`]); whatever is then still in flight is abandoned: its heads are not
    /// returned (the ring is about to go), and the pool, with the module, stays until the
    /// stack releases them.
    ///
    /// The pool is then quiesced ([`reset::quiesce_and_abandon`]): the vhost core frees the
    /// device's workers next, and a completion or deadline that comes later must not reach
    /// them.
    fn stopped(dev: &DevGuard<'_, Self, NVQS>) {
        reset::settle(dev);
        reset::quiesce_and_abandon(dev);
    }
}

/// Busy polling (`VHOST_SET_VRING_BUSYLOOP_TIMEOUT`), as vhost-net does it: the handler of
/// one queue, finding nothing to do, spins for up to the timeout (microseconds) watching
/// both the guest's TX ring and the RX socket with the guest's RX buffers, instead of
/// waiting for a kick or a socket wakeup. `rvq` and `tvq` are both locked; `poll_rx` says
/// which handler polls (the other queue was only try-locked, and is the one whose
/// notifications are off meanwhile). Returns `true` if the poll stopped because other work
/// is queued on the worker.
fn busy_poll(rvq: &NetVq<'_>, tvq: &NetVq<'_>, poll_rx: bool) -> bool {
    let (timeout, other) = if poll_rx {
        (rvq.busyloop_timeout(), tvq)
    } else {
        (tvq.busyloop_timeout(), rvq)
    };
    other.disable_notify();
    let sock = rvq.backend();
    let rx_data = || sock.is_some_and(|s| s.peek_len().is_some());
    let end = vhost::busy_clock().saturating_add(u64::from(timeout));
    let mut interrupted = false;
    while vhost::can_busy_poll(end) {
        if other.has_work() {
            interrupted = true;
            break;
        }
        if (rx_data() && !rvq.avail_empty()) || !tvq.avail_empty() {
            break;
        }
        core::hint::spin_loop();
    }
    if poll_rx || rx_data() {
        // Let the other queue's handler run if it has something to do, else take kicks.
        if !other.avail_empty() {
            other.queue();
        } else if other.enable_notify() {
            other.disable_notify();
            other.queue();
        }
    } else {
        rvq.enable_notify();
    }
    interrupted
}

/// Abandons the zero-copy buffers in flight on the TX ring: it is not the ring they came
/// from (set up anew, or reset in place), so their heads are never written to it.
fn abandon_ring(ledger: &mut Ledger) {
    let abandoned = ledger.abandon_all();
    if abandoned != 0 {
        vhost::debug(
            c"TX: zero-copy buffers abandoned: ring reprogrammed",
            abandoned,
            0,
        );
    }
}

/// Before a head is written to the TX ring: if it was set again while its used index had
/// no translation (see `VhostNetZc::set_vring`), tells now, with the ring's translations
/// at hand (the caller's prefetch succeeded), whether it is the same ring, which gets the
/// heads, or one reset in place, whose old buffers are abandoned.
pub(crate) fn verify_ring(vq: &NetVq<'_>, ledger: &mut Ledger) {
    let Some(last_used) = ledger.ring_unverified() else {
        return;
    };
    match vq.guest_used_idx(last_used) {
        UsedIdx::Same => ledger.set_ring_unverified(None),
        // Untranslated although the ring's parts were: nothing says it is the same ring.
        UsedIdx::Reset | UsedIdx::Untranslated => abandon_ring(ledger),
    }
}

/// Returns the zero-copy buffers the network stack has released to the guest.
pub(crate) fn return_completed(vq: &NetVq<'_>, pool: &Pool, ledger: &mut Ledger) {
    let mut batch = UsedBatch::new();
    batch.reap(vq, pool, ledger);
    batch.flush(vq);
}

/// Most TX heads returned to the guest in one used-ring update.
const USED_BATCH: usize = 64;

/// TX heads done with (copied, dropped, or released by the network stack), returned to the
/// guest together: one used-ring update, and at most one signal, per [`USED_BATCH`] heads
/// instead of per packet. The handler flushes it before it sleeps or busy-polls.
struct UsedBatch {
    heads: [u16; USED_BATCH],
    len: usize,
}

impl UsedBatch {
    const fn new() -> Self {
        Self {
            heads: [0; USED_BATCH],
            len: 0,
        }
    }

    /// Adds the head of `chain`, writing the batch out first if it is full.
    fn push(&mut self, vq: &NetVq<'_>, chain: &Chain) {
        let Ok(head) = u16::try_from(chain.head) else {
            // Not a head of a ring (at most 32768 entries): the vhost core never gives one.
            vq.add_used_and_signal(chain, 0);
            return;
        };
        if self.len == USED_BATCH {
            self.flush(vq);
        }
        if let Some(slot) = self.heads.get_mut(self.len) {
            *slot = head;
            self.len += 1;
        }
    }

    /// The buffer of `chain` is done with (copied or dropped): its head goes to the batch,
    /// or, if heads are held in order behind a zero-copy buffer (`VIRTIO_F_IN_ORDER`),
    /// behind them.
    fn done(&mut self, vq: &NetVq<'_>, ledger: &mut Ledger, chain: &Chain) {
        if ledger.holding_order() {
            if let Ok(head) = u16::try_from(chain.head) {
                if ledger.hold_done(head) {
                    return;
                }
            }
        }
        self.push(vq, chain);
    }

    /// Adds every zero-copy head the network stack has released, writing out full batches.
    fn reap(&mut self, vq: &NetVq<'_>, pool: &Pool, ledger: &mut Ledger) {
        loop {
            if self.len == USED_BATCH {
                self.flush(vq);
            }
            let Some(free) = self.heads.get_mut(self.len..) else {
                return;
            };
            self.len += pool.reap(ledger, free);
            if self.len < USED_BATCH {
                return;
            }
        }
    }

    /// Writes the batch to the used ring and signals the guest if it wants it.
    fn flush(&mut self, vq: &NetVq<'_>) {
        if let Some(heads) = self.heads.get(..self.len).filter(|h| !h.is_empty()) {
            vq.add_used_heads_and_signal(heads);
        }
        self.len = 0;
    }
}

/// Length of the virtio-net header in the guest's buffers: the tunnel header with a UDP
/// tunnel GSO feature, else the larger header with `VIRTIO_F_VERSION_1` or mergeable RX
/// buffers, as stock vhost-net.
fn net_hdr_len(vq: &NetVq<'_>) -> usize {
    if vq.has_feature(uapi::VIRTIO_NET_F_GUEST_UDP_TUNNEL_GSO)
        || vq.has_feature(uapi::VIRTIO_NET_F_HOST_UDP_TUNNEL_GSO)
    {
        uapi::NET_HDR_TUNNEL_LEN
    } else if vq.has_feature(crate::ffi::bindings::VIRTIO_F_VERSION_1)
        || vq.has_feature(crate::ffi::bindings::VIRTIO_NET_F_MRG_RXBUF)
    {
        size_of::<crate::ffi::bindings::virtio_net_hdr_mrg_rxbuf>()
    } else {
        size_of::<crate::ffi::bindings::virtio_net_hdr>()
    }
}

/// The header bytes vhost itself consumes on TX: with `VHOST_NET_F_VIRTIO_NET_HDR` the
/// backend takes none, so vhost drops the guest's header; otherwise the backend takes it.
fn vhost_hdr_len(vq: &NetVq<'_>) -> usize {
    if vq.has_feature(uapi::VHOST_NET_F_VIRTIO_NET_HDR) {
        net_hdr_len(vq)
    } else {
        0
    }
}

/// The start of a handler run: the backend, if one is attached and the rings are
/// accessible, with the guest's kicks turned off while the handler runs.
fn begin<'a>(vq: &'a NetVq<'_>) -> Option<&'a Socket> {
    let sock = vq.backend()?;
    if !vq.prefetch() {
        return None;
    }
    vq.disable_notify();
    Some(sock)
}

/// Size of `struct virtio_net_hdr`, where `num_buffers` of the mergeable header follows.
const NET_HDR_BASE: usize = size_of::<crate::ffi::bindings::virtio_net_hdr>();

/// Moves packets from the socket into the guest's RX buffers until the socket is empty, the
/// guest has no buffers, or the handler's weight is used up.
fn handle_rx(dev: &VhostDev<NetState, NVQS>, vq: &NetVq<'_>) {
    let Some(sock) = begin(vq) else {
        return;
    };
    let mut interrupted = false;
    // Not woken by the socket while draining it; polled again once it is empty.
    vq.stop_poll();
    let vhost_hlen = vhost_hdr_len(vq);
    let sock_hlen = if vhost_hlen == 0 { net_hdr_len(vq) } else { 0 };
    let mergeable = vq.has_feature(crate::ffi::bindings::VIRTIO_NET_F_MRG_RXBUF);
    // The header has num_buffers (the 12-byte layout), which the device sets, with either.
    let set_num_buffers = mergeable || vq.has_feature(crate::ffi::bindings::VIRTIO_F_VERSION_1);
    let quota = if mergeable {
        kernel::bindings::UIO_MAXIOV
    } else {
        1
    };
    let (mut packets, mut bytes) = (0usize, 0usize);
    let mut drained = false;
    loop {
        let mut peeked = sock.peek_len();
        if peeked.is_none() && vq.busyloop_timeout() != 0 {
            if let Some(tvq) = dev.try_vq(TX as u32) {
                interrupted = busy_poll(vq, &tvq, true);
            }
            peeked = sock.peek_len();
        }
        let Some(peeked) = peeked else {
            drained = true;
            break;
        };
        let sock_len = peeked.saturating_add(sock_hlen);
        let vhost_len = sock_len.saturating_add(vhost_hlen);
        let bufs = match vq.get_rx_bufs(vhost_len, quota) {
            Ok(RxGather::Bufs(bufs)) => bufs,
            Ok(RxGather::Empty) => {
                // No buffers: ask for kicks, unless buffers slipped in meanwhile.
                if vq.enable_notify() {
                    vq.disable_notify();
                    continue;
                }
                break;
            }
            Ok(RxGather::Overrun) => {
                // Larger than every buffer the guest may chain: drop it.
                let _ = sock.recv(&[], 0, 0);
                vhost::debug(c"RX: dropped a packet larger than the buffers", sock_len, 0);
                continue;
            }
            // The chain was malformed and reported; stop until the next kick.
            Err(_) => break,
        };
        let received = sock.recv(&vq.iov(bufs.iovs), vhost_hlen, sock_len);
        match received {
            Ok(n) if n == sock_len => {}
            r => {
                let got = r.map_or_else(|e| e.to_errno() as isize, |n| n as isize);
                vhost::debug(
                    c"RX: discarded a packet (received, expected)",
                    got,
                    sock_len,
                );
                vq.discard_rx(&bufs);
                continue;
            }
        }
        // With VHOST_NET_F_VIRTIO_NET_HDR vhost supplies the header: no offloads.
        if vhost_hlen != 0 && vq.write_iov(bufs.iovs, 0, &[0u8; NET_HDR_BASE]).is_err() {
            vq.report(c"Unable to write vnet_hdr");
            vq.discard_rx(&bufs);
            break;
        }
        if set_num_buffers {
            let count = vq.to_vhost16(u16::try_from(bufs.heads).unwrap_or(u16::MAX));
            if vq
                .write_iov(bufs.iovs, NET_HDR_BASE, &count.to_ne_bytes())
                .is_err()
            {
                vq.report(c"Failed num_buffers write");
                vq.discard_rx(&bufs);
                break;
            }
        }
        vq.log_rx(&bufs, vhost_len);
        vq.add_used_rx_and_signal(&bufs);
        packets += 1;
        bytes = bytes.saturating_add(vhost_len);
        if vq.exceeds_weight(packets, bytes) {
            break;
        }
    }
    if interrupted {
        vq.queue();
    } else if drained {
        let _ = vq.start_poll();
    }
}

/// Sends what the guest queued on TX until the ring is empty, the socket is full, or the
/// handler's weight is used up.
///
/// A packet of at least `copy_threshold` bytes goes zero-copy when the socket takes it, the
/// ring has room for another buffer in flight (a quarter of it, at most
/// [`zerocopy::MAX_PEND`](crate::zerocopy::MAX_PEND); buffers the stack has released are
/// reaped first when that limit is reached), and zero copy has been paying off (see
/// [`Ledger::worth_zerocopy`]); its head is returned when the network stack releases it.
/// Every other packet is copied and its head returned with the next [`UsedBatch`].
fn handle_tx(dev: &VhostDev<NetState, NVQS>, vq: &NetVq<'_>, pool: &Pool) {
    let mut ledger = pool.ledger();
    if ledger.ring_unverified().is_some() {
        // A failed prefetch asked the VMM for the ring's translations; its answer runs the
        // handler again.
        if !vq.prefetch() {
            return;
        }
        verify_ring(vq, &mut ledger);
    }
    return_completed(vq, pool, &mut ledger);
    let expired = pool.mark_expired(&mut ledger);
    if expired != 0 {
        vhost::debug(
            c"TX: zero-copy buffers expired (now, in all)",
            expired,
            ledger.expired(),
        );
    }
    // Under IN_ORDER every head taken after an expired buffer waits for it: it is
    // reclaimed without reclaim on expiry too, where its pages can be made copy-on-write
    // in place (no window for the running guest's own accesses).
    let in_order = vq.has_feature(crate::ffi::bindings::VIRTIO_F_IN_ORDER);
    if (ledger.reclaim() || in_order) && ledger.expired() != 0 {
        if let Some(mm) = dev.worker_mm() {
            // Not again those refused before: only a reset retries them.
            let victims = pool.victims(&ledger, false).without(&ledger.refused_set());
            let mode = if ledger.reclaim() {
                Mode::Preserve
            } else {
                Mode::InPlace
            };
            if !victims.is_empty() {
                reset::offline_and_return(Some(vq), &mut ledger, &mm, &victims, mode);
            }
        }
    }
    let Some(sock) = begin(vq) else {
        return;
    };
    let hdr = vhost_hdr_len(vq);
    let zerocopy = crate::params::zcopy_tx() && sock.zerocopy();
    let threshold = crate::params::copy_threshold() as usize;
    let limit = (vq.num() / 4) as usize;
    if zerocopy {
        pool.attach(&vq.waker());
    }
    let mut batch = dev.data().txbatch.lock();
    let batching = sock.can_batch();
    let copy = CopyTx {
        sock,
        batching,
        xdp: batching && sock.xdp(),
        skip: hdr,
        sock_hlen: if hdr == 0 { net_hdr_len(vq) } else { 0 },
    };
    let (mut packets, mut bytes) = (0usize, 0usize);
    let mut used = UsedBatch::new();
    loop {
        if ledger.order_full() {
            // Every head taken now would wait in order behind an outstanding zero-copy
            // buffer, with no room left: its completion or deadline runs the handler again.
            break;
        }
        let mut next = vq.get_desc();
        let mut interrupted = false;
        if matches!(next, Ok(None)) && vq.busyloop_timeout() != 0 {
            copy.flush(&mut batch);
            used.reap(vq, pool, &mut ledger);
            used.flush(vq);
            if let Some(rvq) = dev.try_vq(RX as u32) {
                interrupted = busy_poll(&rvq, vq, false);
            }
            next = vq.get_desc();
        }
        let chain = match next {
            Ok(Some(chain)) => chain,
            Ok(None) if interrupted => {
                // Other work is waiting for the worker: run again after it.
                vq.queue();
                break;
            }
            Ok(None) => {
                // Empty: ask for kicks, unless buffers slipped in meanwhile.
                if vq.enable_notify() {
                    vq.disable_notify();
                    continue;
                }
                break;
            }
            // The vhost core reported the malformed chain; stop until the next kick.
            Err(_) => break,
        };
        if chain.inn != 0 {
            vq.report(c"Unexpected descriptor format for TX");
            break;
        }
        let iov = vq.iov(chain.out);
        let Some(payload) = vhost::iov_len(&iov).checked_sub(hdr) else {
            vq.report(c"Unexpected header len for TX");
            break;
        };
        let slot = if zerocopy && payload >= threshold && ledger.worth_zerocopy() {
            if ledger.holding() >= limit {
                // Count only what the stack still holds: reap what it has released.
                used.reap(vq, pool, &mut ledger);
            }
            let mut pages = [BufPage::default(); MAX_PAGES];
            let head = u16::try_from(chain.head).ok();
            buffer_pages(&iov, hdr, &mut pages)
                .and_then(|n| pool.reserve(&mut ledger, head?, limit, pages.get(..n)?))
        } else {
            None
        };
        ledger.count_packet();
        let batched = match slot {
            None => copy.batch(vq, &mut batch, &iov, payload),
            Some(_) => Batched::No,
        };
        match batched {
            Batched::Copied => {
                ledger.count_batched();
                used.done(vq, &mut ledger, &chain);
            }
            Batched::Dropped => used.done(vq, &mut ledger, &chain),
            Batched::No => {
                // A packet sent on its own goes after those batched before it.
                copy.flush(&mut batch);
                let r = match &slot {
                    Some(slot) => sock.send_zerocopy(&iov, hdr, payload, pool.ubuf(slot)),
                    None => sock.send(&iov, hdr, payload),
                };
                match (r, slot) {
                    (Err(e), slot) if e == EAGAIN || e == ENOMEM || e == ENOBUFS => {
                        // The socket is full: retry this chain when it has room.
                        if let Some(slot) = slot {
                            pool.cancel(&mut ledger, slot);
                        }
                        vq.discard(&chain);
                        let _ = vq.start_poll();
                        break;
                    }
                    (Err(e), slot) => {
                        // Dropped, as by a NIC: the guest gets the buffer back.
                        if let Some(slot) = slot {
                            pool.cancel(&mut ledger, slot);
                        }
                        vhost::debug(c"TX: send failed (errno)", e.to_errno() as isize, 0);
                        used.done(vq, &mut ledger, &chain);
                    }
                    (Ok(sent), slot) => {
                        if sent != payload {
                            vhost::debug(c"TX: truncated packet (sent, length)", sent, payload);
                        }
                        match slot {
                            Some(slot) => {
                                if !pool.sent(&mut ledger, slot, in_order) {
                                    // No room in the order (checked above): cannot be.
                                    vhost::debug(c"TX: in-order head not held", 0, 0);
                                }
                            }
                            None => {
                                ledger.count_copy();
                                used.done(vq, &mut ledger, &chain);
                            }
                        }
                    }
                }
            }
        }
        packets += 1;
        bytes = bytes.saturating_add(payload);
        if vq.exceeds_weight(packets, bytes) {
            break;
        }
    }
    copy.flush(&mut batch);
    // With the completions that came while sending (the socket may complete at once).
    used.reap(vq, pool, &mut ledger);
    used.flush(vq);
}

/// What [`CopyTx::batch`] did with a packet.
#[derive(Clone, Copy)]
enum Batched {
    /// Copied into the batch: the guest's buffer is done with.
    Copied,
    /// Dropped as malformed, as a NIC drops it: the guest's buffer is done with.
    Dropped,
    /// Not batched (no batching, or too large a frame): to be sent on its own.
    No,
}

/// How the TX handler copies packets into a [`TxBatch`] for the socket.
struct CopyTx<'a> {
    sock: &'a Socket,
    /// The socket takes batches ([`Socket::can_batch`]).
    batching: bool,
    /// Frames need the headroom of the socket's XDP program.
    xdp: bool,
    /// Bytes of each packet vhost consumes (its virtio-net header, if vhost takes it).
    skip: usize,
    /// Bytes of each packet that are the socket's virtio-net header.
    sock_hlen: usize,
}

impl CopyTx<'_> {
    /// Copies the packet of `len` bytes at `iov` (past `self.skip`) into `batch`, sending
    /// the batch first if it is full.
    fn batch(
        &self,
        vq: &NetVq<'_>,
        batch: &mut TxBatch,
        iov: &[kernel::bindings::iovec],
        len: usize,
    ) -> Batched {
        if !self.batching {
            return Batched::No;
        }
        if batch.len() >= TX_BATCH {
            self.flush(batch);
        }
        match batch.add(vq, iov, self.skip, len, self.sock_hlen, self.xdp) {
            Ok(()) => Batched::Copied,
            Err(e) if e == ENOSPC || e == ENOMEM => Batched::No,
            Err(e) => {
                vhost::debug(
                    c"TX: dropped a malformed packet (errno, length)",
                    e.to_errno() as isize,
                    len,
                );
                Batched::Dropped
            }
        }
    }

    /// Sends the frames batched so far.
    fn flush(&self, batch: &mut TxBatch) {
        let frames = batch.len();
        if frames == 0 {
            return;
        }
        if let Err(e) = self.sock.send_batch(batch) {
            // Lost, as on a NIC that fails them; their heads are the guest's already.
            vhost::debug(
                c"TX: batch send failed (errno, frames)",
                e.to_errno() as isize,
                frames,
            );
        }
    }
}

/// The base pages of the buffer `iov` past its first `skip` bytes (the header vhost
/// consumes), with the page mapped at each ([`offline::record`]), into `out`; `None` if
/// they are more than `out` holds or some page is not mapped (the buffer is then copied).
fn buffer_pages(
    iov: &[kernel::bindings::iovec],
    skip: usize,
    out: &mut [BufPage; MAX_PAGES],
) -> Option<usize> {
    let mut ranges = [Range::default(); MAX_RANGES];
    let n = buffer_ranges(iov, skip, &mut ranges)?;
    let n = offline::pages_of(ranges.get(..n)?, out).ok()?;
    offline::record(out.get_mut(..n)?).ok()?;
    Some(n)
}

/// The address ranges of the buffer `iov` past its first `skip` bytes (the header vhost
/// consumes), into `out`; `None` if there are more than `out` holds.
fn buffer_ranges(
    iov: &[kernel::bindings::iovec],
    mut skip: usize,
    out: &mut [Range; MAX_RANGES],
) -> Option<usize> {
    let mut n = 0;
    for v in iov {
        let len = v.iov_len;
        if skip >= len {
            skip -= len;
            continue;
        }
        let slot = out.get_mut(n)?;
        *slot = Range {
            addr: (v.iov_base as usize).wrapping_add(skip),
            len: len - skip,
        };
        skip = 0;
        n += 1;
    }
    Some(n)
}

/// The state of one open `/dev/vhost-net-zc` file.
#[pin_data]
pub(crate) struct VhostNetZc {
    #[pin]
    vhost: VhostDev<NetState, NVQS>,
}

/// The argument of `VHOST_NET_SET_BACKEND` (`struct vhost_vring_file`).
#[derive(Clone, Copy, Default)]
#[repr(C)]
struct VringFile {
    index: u32,
    fd: i32,
}

// SAFETY: `VringFile` is two `repr(C)` integers without padding; any bit pattern is valid.
unsafe impl kernel::transmute::FromBytes for VringFile {}

impl VhostNetZc {
    /// `VHOST_GET_FEATURES_ARRAY`: the user passes `{ u64 count; u64 features[count]; }`.
    ///
    /// The device's words are copied up to `count` and any further words the caller provided
    /// are zeroed, as stock vhost-net does.
    ///
    /// # Errors
    ///
    /// - `EFAULT`: the count cannot be read, or the array (whose size overflows or is not
    ///   writable user memory) cannot be written.
    fn get_features_array(arg: UserPtr) -> Result<isize> {
        let count: u64 = UserSlice::new(arg, WORD).reader().read()?;
        // A count whose byte size overflows names memory no process has: the same EFAULT
        // stock vhost-net gets from its saturating `size_mul()`.
        let count = usize::try_from(count).map_err(|_| EFAULT)?;
        let len = count.checked_mul(WORD).ok_or(EFAULT)?;
        let mut out = UserSlice::new(arg.wrapping_byte_add(WORD), len).writer();
        for index in 0..count.min(uapi::FEATURE_WORDS) {
            out.write(&uapi::feature_word(index))?;
        }
        const ZEROS: [u8; 256] = [0; 256];
        while !out.is_empty() {
            let chunk = out.len().min(ZEROS.len());
            out.write_slice(&ZEROS[..chunk])?;
        }
        Ok(0)
    }

    /// `VHOST_SET_FEATURES_ARRAY`: `{ u64 count; u64 features[count]; }`.
    ///
    /// # Errors
    ///
    /// - `EFAULT`: the count or a word cannot be read;
    /// - `EOPNOTSUPP`: a bit is set that the device does not offer, in any word.
    fn set_features_array(&self, arg: UserPtr) -> Result<isize> {
        let count: u64 = UserSlice::new(arg, WORD).reader().read()?;
        let mut words = [0u64; uapi::FEATURE_WORDS];
        let mut index: u64 = 0;
        let mut at = arg.wrapping_byte_add(WORD);
        while index < count {
            let word: u64 = UserSlice::new(at, WORD).reader().read()?;
            match usize::try_from(index).ok().and_then(|i| words.get_mut(i)) {
                Some(slot) => *slot = word,
                // Words past the kernel's feature space can hold no supported bit.
                None if word != 0 => return Err(EOPNOTSUPP),
                None => {}
            }
            index += 1;
            at = at.wrapping_byte_add(WORD);
        }
        self.set_features(&words)
    }

    /// Acknowledges `features` on every virtqueue.
    ///
    /// # Errors
    ///
    /// - `EOPNOTSUPP`: a bit is set that the device does not offer;
    /// - `EFAULT`: `VHOST_F_LOG_ALL` is asked for but the log does not cover guest memory.
    fn set_features(&self, features: &[u64; uapi::FEATURE_WORDS]) -> Result<isize> {
        let unsupported = features
            .iter()
            .enumerate()
            .any(|(i, word)| word & !uapi::feature_word(i) != 0);
        if unsupported {
            return Err(EOPNOTSUPP);
        }
        let dev = self.vhost.lock();
        if uapi::has_feature(features, uapi::VHOST_F_LOG_ALL) && !dev.log_access_ok() {
            return Err(EFAULT);
        }
        if uapi::has_feature(features, uapi::VIRTIO_F_ACCESS_PLATFORM) {
            // The errno stock vhost-net gives for any failure here.
            dev.init_device_iotlb().map_err(|_| EFAULT)?;
        } else {
            dev.clear_device_iotlb();
        }
        for index in 0..NVQS as u32 {
            self.vhost.vq(index)?.set_acked_features(features);
        }
        drop(dev);
        Ok(0)
    }

    /// `VHOST_SET_BACKEND_FEATURES`: with `VHOST_BACKEND_F_IOTLB_MSG_V2`, device-IOTLB
    /// messages are `struct vhost_msg_v2` both ways.
    ///
    /// # Errors
    ///
    /// `EFAULT` if the argument cannot be read, `EOPNOTSUPP` for a bit not offered.
    fn set_backend_features(&self, arg: UserPtr) -> Result<isize> {
        let features: u64 = UserSlice::new(arg, WORD).reader().read()?;
        if features & !uapi::BACKEND_FEATURES != 0 {
            return Err(EOPNOTSUPP);
        }
        self.vhost.set_backend_features(features);
        Ok(0)
    }

    /// `VHOST_SET_OWNER`.
    ///
    /// # Errors
    ///
    /// `EBUSY` if the device has an owner, or the vhost core's errno creating the worker.
    fn set_owner(&self) -> Result<isize> {
        let dev = self.vhost.lock();
        if dev.has_owner() {
            return Err(EBUSY);
        }
        dev.set_owner()?;
        dev.flush();
        Ok(0)
    }

    /// `VHOST_RESET_OWNER`: back to the state right after `open`, ready for a new owner.
    ///
    /// # Errors
    ///
    /// `EPERM` if the caller is not the owner, `ENOMEM` if the reset cannot allocate.
    fn reset_owner(&self) -> Result<isize> {
        let dev = self.vhost.lock();
        let backends = dev.reset_owner()?;
        drop(dev);
        // The sockets are released with no lock held.
        drop(backends);
        Ok(0)
    }

    /// `VHOST_NET_SET_BACKEND`, with vhost-net's checks in vhost-net's order: attach the
    /// socket behind `fd` to a virtqueue, or detach (`fd == -1`).
    ///
    /// # Errors
    ///
    /// - `EFAULT`: the argument cannot be read, or the ring is not set up;
    /// - `EPERM`: the caller is not the owner;
    /// - `ENOBUFS`: the index is not a virtqueue;
    /// - `ENOTSOCK`: `fd` is not a tap, macvtap or raw packet socket.
    fn set_backend(&self, arg: UserPtr) -> Result<isize> {
        let backend: VringFile = UserSlice::new(arg, size_of::<VringFile>())
            .reader()
            .read()?;
        let dev = self.vhost.lock();
        dev.check_owner()?;
        let mut vq = self.vhost.vq(backend.index)?;
        if backend.fd == -1 {
            dev.clear_msg();
        }
        if !vq.access_ok() {
            return Err(EFAULT);
        }
        let sock = match backend.fd {
            -1 => None,
            fd => Some(Socket::from_fd(fd)?),
        };
        let unchanged = match (&sock, vq.backend()) {
            (Some(new), Some(old)) => new.same(old),
            (None, None) => true,
            _ => false,
        };
        if unchanged {
            return Ok(0);
        }
        let old = vq.replace_backend(sock)?;
        drop(vq);
        if old.is_some() {
            // No handler may still be using the old socket when it is released.
            dev.flush();
            if backend.index == TX as u32 {
                reset::settle(&dev);
            }
        }
        drop(dev);
        drop(old);
        Ok(0)
    }

    /// `VHOST_SET_VRING_NUM`, `_BASE` and `_ADDR`, which the vhost core handles (and refuses
    /// while a backend is attached). If they change the TX ring (its size, next available
    /// index or addresses: a new ring, as QEMU sets up when the guest reboots), or the
    /// guest reset the ring in place (`VIRTIO_F_RING_RESET`: same memory, zeroed, so its
    /// used index no longer matches the device's, which matters when the available index
    /// is back where it was, at 0 after 65536 buffers), zero-copy buffers still in flight
    /// from before are abandoned, so their heads never reach the new ring. Setting the same
    /// ring again (QEMU's `cont` after a `stop`, which restores the index it read) keeps
    /// them: their heads still belong there.
    ///
    /// # Errors
    ///
    /// The vhost core's.
    fn set_vring(&self, cmd: u32, arg: UserPtr) -> Result<isize> {
        // Each argument starts with the ring's index; the core reads it again.
        let index: Option<u32> = UserSlice::new(arg, size_of::<u32>()).reader().read().ok();
        let dev = self.vhost.lock();
        let before = self.vhost.vq(TX as u32)?.ring_identity();
        let r = dev.generic_ioctl(cmd, arg)?;
        if index == Some(TX as u32) {
            let pool = &self.vhost.data().tx;
            let vq = self.vhost.vq(TX as u32)?;
            let mut ledger = pool.ledger();
            // The same ring, unless the guest reset it in place: with buffers whose heads
            // are still to come, its used index is then not the one last written (zeroed
            // by the guest, where the device's stays behind the available one). Under a
            // device IOTLB that a VMM's start has just made anew, the index has no
            // translation yet: it is read before the next head is written
            // ([`verify_ring`]).
            if vq.ring_identity() == before {
                if ledger.holding() == 0 {
                    return Ok(r);
                }
                match vq.guest_used_idx(vq.last_used_idx()) {
                    UsedIdx::Same => return Ok(r),
                    UsedIdx::Untranslated => {
                        ledger.set_ring_unverified(Some(vq.last_used_idx()));
                        return Ok(r);
                    }
                    UsedIdx::Reset => {}
                }
            }
            abandon_ring(&mut ledger);
        }
        Ok(r)
    }

    /// `VHOST_NET_ZC_SET_TIMEOUT`.
    ///
    /// # Errors
    ///
    /// `EFAULT` if the argument cannot be read, `EINVAL` if it is out of range.
    fn set_timeout(&self, arg: UserPtr) -> Result<isize> {
        let ms: u32 = UserSlice::new(arg, size_of::<u32>()).reader().read()?;
        if !crate::TIMEOUT_MS_RANGE.contains(&ms) {
            return Err(EINVAL);
        }
        self.vhost.data().tx.ledger().set_timeout_ms(ms);
        Ok(0)
    }

    /// `VHOST_NET_ZC_SET_RECLAIM`.
    ///
    /// # Errors
    ///
    /// Reclaim offlines guest memory without a reset, so only the owner (the VMM whose
    /// address space the guest is) may change it, or a caller with `CAP_NET_ADMIN` (a
    /// privileged launcher that configures the device before it hands the file to the VMM).
    ///
    /// `EFAULT` if the argument cannot be read, `EINVAL` if it is neither 0 nor 1, `EPERM`
    /// if the caller is neither the owner nor has `CAP_NET_ADMIN`.
    fn set_reclaim(&self, arg: UserPtr) -> Result<isize> {
        let on: u32 = UserSlice::new(arg, size_of::<u32>()).reader().read()?;
        let on = match on {
            0 => false,
            1 => true,
            _ => return Err(EINVAL),
        };
        {
            let dev = self.vhost.lock();
            if dev.check_owner().is_err() && !vhost::capable_net_admin() {
                return Err(EPERM);
            }
        }
        let pool = &self.vhost.data().tx;
        pool.ledger().set_reclaim(on);
        if on {
            // Buffers that expired already are reclaimed by the handler.
            if let Ok(vq) = self.vhost.vq(TX as u32) {
                vq.queue();
            }
        }
        Ok(0)
    }

    /// `VHOST_NET_ZC_VM_RESET`: every buffer in flight is offlined in discard mode and
    /// returned.
    ///
    /// # Errors
    ///
    /// - `EFAULT`: the argument cannot be read; `EINVAL`: an unknown flag;
    /// - `EPERM`: the caller is not the owner;
    /// - some buffer could not be offlined (it stays in flight): `EOPNOTSUPP` for memory
    ///   that cannot be offlined, `EBUSY` for a page that may be pinned for DMA, `ENOMEM`
    ///   when memory ran short (the call may be repeated), `EINTR` if the caller was
    ///   killed.
    fn vm_reset(&self, arg: UserPtr) -> Result<isize> {
        let flags: u32 = UserSlice::new(arg, size_of::<u32>()).reader().read()?;
        if flags != 0 {
            return Err(EINVAL);
        }
        let dev = self.vhost.lock();
        dev.check_owner()?;
        let Some(mm) = dev.owner_mm() else {
            return Ok(0);
        };
        let start = zerocopy::now();
        let vq = self.vhost.vq(TX as u32)?;
        let pool = &self.vhost.data().tx;
        let mut ledger = pool.ledger();
        // Under a device IOTLB without a translation for the ring (the VMM, the caller,
        // can give it only once this returned), the buffers are offlined all the same, the
        // guest being about to reuse their memory, and their heads dropped.
        let ring = vq.ring_translated().then_some(&vq);
        if let Some(vq) = ring {
            verify_ring(vq, &mut ledger);
            return_completed(vq, pool, &mut ledger);
        }
        let victims = pool.victims(&ledger, true);
        let refused = reset::offline_and_return(ring, &mut ledger, &mm, &victims, Mode::Discard);
        ledger.record_reset_wait(zerocopy::now() - start);
        match refused.error {
            None if refused.count == 0 => Ok(0),
            error => Err(error.unwrap_or(EOPNOTSUPP)),
        }
    }

    /// `VHOST_NET_ZC_GET_STATS`: the first `len` bytes of the counters (the command of an
    /// older header asks for fewer).
    fn get_stats(&self, arg: UserPtr, len: usize) -> Result<isize> {
        let pool = &self.vhost.data().tx;
        let ledger = pool.ledger();
        let s = ledger.stats();
        let out = uapi::Stats(crate::ffi::bindings::vhost_net_zc_stats {
            sent_zerocopy: s.sent,
            sent_copy: s.sent_copy,
            completed: s.completed,
            completed_copied: s.copied,
            expired: s.expired,
            offlined: s.offlined,
            offlined_pages: s.offlined_pages,
            held_pages: pool.held_pages(&ledger),
            offline_refused: s.offline_refused,
            abandoned: s.abandoned,
            in_flight: pool.inflight() as u64,
            in_flight_expired: ledger.expired() as u64,
            last_reset_wait_ns: s.last_reset_wait,
            max_reset_wait_ns: s.max_reset_wait,
            timeout_ms: ledger.timeout_ms(),
            reclaim: u32::from(ledger.reclaim()),
            offline_pinned: s.offline_pinned,
            offline_skipped_pages: s.offline_skipped_pages,
        });
        drop(ledger);
        let bytes = kernel::transmute::AsBytes::as_bytes(&out);
        UserSlice::new(arg, len)
            .writer()
            .write_slice(bytes.get(..len).ok_or(EINVAL)?)?;
        Ok(0)
    }

    /// Writes one `u64` to the ioctl argument.
    fn put_u64(arg: UserPtr, value: u64) -> Result<isize> {
        UserSlice::new(arg, WORD).writer().write(&value)?;
        Ok(0)
    }
}

impl FileOps for VhostNetZc {
    type Ptr = Pin<KVBox<Self>>;

    fn open(_file: &File) -> Result<Self::Ptr> {
        let state = NetState::new()?;
        KVBox::try_pin_init(
            try_pin_init!(VhostNetZc {
                vhost <- VhostDev::new(LIMITS, Ok::<_, Error>(state)),
            }),
            GFP_KERNEL,
        )
    }

    /// Shuts the device down while only shared references to it can exist, then frees it.
    fn release(device: Self::Ptr, _file: &File) {
        device.vhost.shutdown();
        drop(device);
    }

    /// The device IOTLB's next miss message, `struct vhost_msg` or `struct vhost_msg_v2`
    /// (`VHOST_BACKEND_F_IOTLB_MSG_V2`); the read blocks for one unless the file is
    /// non-blocking.
    fn read_iter(
        me: Pin<&VhostNetZc>,
        file: &LocalFile,
        iov: &mut IovIterDest<'_>,
    ) -> Result<usize> {
        let nonblock = file.flags() & kernel::fs::file::flags::O_NONBLOCK != 0;
        me.vhost.iotlb_read(iov, nonblock)
    }

    /// A device-IOTLB update or invalidation from the VMM. Zero-copy buffers in flight
    /// keep the pages they were sent with: they are found and offlined by the owner's
    /// addresses taken at send time, not by their I/O virtual addresses, so an
    /// invalidation changes nothing for them, as a memory table change does not.
    fn write_iter(me: Pin<&VhostNetZc>, iov: &mut IovIterSource<'_>) -> Result<usize> {
        me.vhost.iotlb_write(iov)
    }

    /// Readable (`EPOLLIN`) while a device-IOTLB miss waits to be read.
    fn poll(me: Pin<&VhostNetZc>, file: &File, table: &PollTable<'_>) -> u32 {
        me.vhost.iotlb_poll(file, table)
    }

    /// `/proc/<pid>/fdinfo/<fd>` of the VMM: the device's name (its debugfs directory) and
    /// its counters, as `vnzc-<counter>:\t<value>` lines.
    fn show_fdinfo(me: Pin<&VhostNetZc>, m: &SeqFile, _file: &File) {
        let state = me.vhost.data();
        seq_print!(m, "vnzc-device:\t{}\n", state.name.to_str().unwrap_or("?"));
        seq_print!(m, "{}", FdinfoCounters(&state.tx));
    }

    fn ioctl(me: Pin<&VhostNetZc>, _file: &File, cmd: u32, arg: usize) -> Result<isize> {
        let arg = UserPtr::from_addr(arg);
        match cmd {
            uapi::VHOST_NET_SET_BACKEND => me.set_backend(arg),
            uapi::VHOST_GET_FEATURES => Self::put_u64(arg, uapi::NET_FEATURES),
            uapi::VHOST_SET_FEATURES => {
                let word: u64 = UserSlice::new(arg, WORD).reader().read()?;
                me.set_features(&uapi::features_from_u64(word))
            }
            uapi::VHOST_GET_FEATURES_ARRAY => Self::get_features_array(arg),
            uapi::VHOST_SET_FEATURES_ARRAY => me.set_features_array(arg),
            uapi::VHOST_GET_BACKEND_FEATURES => Self::put_u64(arg, uapi::BACKEND_FEATURES),
            uapi::VHOST_SET_BACKEND_FEATURES => me.set_backend_features(arg),
            uapi::VHOST_RESET_OWNER => me.reset_owner(),
            uapi::VHOST_SET_OWNER => me.set_owner(),
            uapi::VHOST_NET_ZC_SET_TIMEOUT => me.set_timeout(arg),
            uapi::VHOST_NET_ZC_GET_TIMEOUT => {
                let ms = me.vhost.data().tx.ledger().timeout_ms();
                UserSlice::new(arg, size_of::<u32>()).writer().write(&ms)?;
                Ok(0)
            }
            uapi::VHOST_NET_ZC_SET_RECLAIM => me.set_reclaim(arg),
            uapi::VHOST_NET_ZC_VM_RESET => me.vm_reset(arg),
            uapi::VHOST_NET_ZC_GET_STATS => me.get_stats(arg, size_of::<uapi::Stats>()),
            uapi::VHOST_NET_ZC_GET_STATS_V1 => me.get_stats(arg, uapi::STATS_V1_SIZE),
            uapi::VHOST_SET_VRING_NUM | uapi::VHOST_SET_VRING_BASE | uapi::VHOST_SET_VRING_ADDR => {
                me.set_vring(cmd, arg)
            }
            _ => me.vhost.lock().generic_ioctl(cmd, arg),
        }
    }
}

#[kernel::macros::kunit_tests(vhost_net_zc_tx)]
mod tests {
    use super::*;

    fn iov(base: usize, len: usize) -> kernel::bindings::iovec {
        kernel::bindings::iovec {
            iov_base: base as *mut kernel::ffi::c_void,
            iov_len: len,
        }
    }

    /// `buffer_ranges` of `iovs` past `skip` bytes, as (address, length) pairs.
    fn ranges(iovs: &[kernel::bindings::iovec], skip: usize) -> Option<KVec<(usize, usize)>> {
        let mut out = [Range::default(); MAX_RANGES];
        let n = buffer_ranges(iovs, skip, &mut out)?;
        let mut v = KVec::new();
        for r in out.get(..n)? {
            v.push((r.addr, r.len), GFP_KERNEL).ok()?;
        }
        Some(v)
    }

    #[test]
    fn header_skipped() {
        let two = [iov(0x1000, 12), iov(0x5000, 1000)];
        // The header consumed exactly, one byte short, one byte more (N-1, N, N+1).
        assert_eq!(
            ranges(&two, 11).as_deref(),
            Some(&[(0x100b, 1), (0x5000, 1000)][..])
        );
        assert_eq!(ranges(&two, 12).as_deref(), Some(&[(0x5000, 1000)][..]));
        assert_eq!(ranges(&two, 13).as_deref(), Some(&[(0x5001, 999)][..]));
        // All of it, or more than there is: no range.
        assert_eq!(ranges(&two, 1012).as_deref(), Some(&[][..]));
        assert_eq!(ranges(&two, usize::MAX).as_deref(), Some(&[][..]));
        // Empty descriptors give no range.
        assert_eq!(
            ranges(&[iov(0x1000, 0), iov(0x2000, 8)], 0).as_deref(),
            Some(&[(0x2000, 8)][..])
        );
    }

    #[test]
    fn too_many_ranges() {
        let mut many = KVec::new();
        for i in 0..=MAX_RANGES {
            assert!(many.push(iov(0x1000 * (i + 1), 8), GFP_KERNEL).is_ok());
        }
        // MAX_RANGES fit, one more does not (the chain is then copied).
        assert_eq!(
            ranges(&many[..MAX_RANGES], 0).map(|v| v.len()),
            Some(MAX_RANGES)
        );
        assert!(ranges(&many, 0).is_none());
        // Skipping the first leaves MAX_RANGES: they fit.
        assert_eq!(ranges(&many, 8).map(|v| v.len()), Some(MAX_RANGES));
    }
}
