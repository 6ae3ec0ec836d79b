// SPDX-License-Identifier: GPL-2.0

//! The sockets a vhost-net virtqueue is attached to: tap (tun), macvtap (tap) or a raw
//! `AF_PACKET` socket, found from the file descriptor `VHOST_NET_SET_BACKEND` passes.
//!
//! C headers: [`include/linux/if_tun.h`](srctree/include/linux/if_tun.h),
//! [`include/linux/if_tap.h`](srctree/include/linux/if_tap.h),
//! [`include/linux/net.h`](srctree/include/linux/net.h).

use core::ptr::NonNull;

use kernel::{
    bindings as kb,
    fs::File,
    new_mutex,
    prelude::*,
    sync::Mutex, //
};

use crate::{
    ffi::bindings,
    vhost::{
        self,
        Backend,
        Driver,
        VqGuard, //
    },
};

/// A socket a virtqueue sends to or receives from.
///
/// # Invariants
///
/// `sock` is a live socket and `self` owns one reference to `sock->file`, which keeps the
/// socket alive. `zerocopy` is only true for a tap or macvtap socket that takes zero-copy
/// buffers (`TUN_MSG_UBUF`). `rx` is the ring of a tap or macvtap file, with the packets
/// taken off it and not yet received.
pub(crate) struct Socket {
    sock: NonNull<kb::socket>,
    zerocopy: bool,
    /// A tap or macvtap, which takes a [`TxBatch`] (`TUN_MSG_PTR`).
    tap: bool,
    rx: Option<RxRing>,
}

/// Most packets taken off a tap's ring at once (stock vhost-net's `VHOST_NET_BATCH`).
const BATCH: usize = 64;

/// Packets taken off a tap's ring in one go, received one by one.
///
/// # Invariants
///
/// `queue[head..tail]` are packets owned by the batch (skbs or tagged XDP frames of
/// `ring`), in ring order; `head <= tail <= BATCH`.
struct Batch {
    queue: [*mut c_void; BATCH],
    head: usize,
    tail: usize,
}

// SAFETY: The packets a batch owns may be received or freed from any thread.
unsafe impl Send for Batch {}

/// A tap's packet ring and the batch taken off it.
///
/// # Invariants
///
/// `ring` is the ring of the socket's file, alive as long as the file the socket references.
struct RxRing {
    ring: NonNull<bindings::ptr_ring>,
    batch: Pin<KBox<Mutex<Batch>>>,
}

// SAFETY: A socket reference may be used and released from any thread; socket operations do
// their own locking.
unsafe impl Send for Socket {}
// SAFETY: As above: `&Socket` only gives access to the socket's thread-safe operations.
unsafe impl Sync for Socket {}

impl Socket {
    /// The socket behind `fd`, as vhost-net finds it: a raw `AF_PACKET` socket, else a tap or
    /// macvtap file's socket.
    ///
    /// # Errors
    ///
    /// `ENOTSOCK` if `fd` is none of these (including a closed descriptor), as vhost-net;
    /// `ENOMEM` if it is a tap whose receive batch could not be allocated.
    pub(crate) fn from_fd(fd: i32) -> Result<Self> {
        Self::raw_packet(fd)
            .or_else(|_| Self::tap(fd))
            .map_err(|e| if e == ENOMEM { e } else { ENOTSOCK })
    }

    fn raw_packet(fd: i32) -> Result<Self> {
        let mut err = 0;
        // SAFETY: `sockfd_lookup()` takes any descriptor number; on success it returns the
        // socket with a reference taken on its file.
        let sock = NonNull::new(unsafe { kb::sockfd_lookup(fd, &mut err) }).ok_or(ENOTSOCK)?;
        // INVARIANT: the lookup took a file reference, which `Drop` puts; a packet socket
        // reads `msg_control` as ancillary data, so it never gets zero-copy buffers.
        let this = Self {
            sock,
            zerocopy: false,
            tap: false,
            rx: None,
        };
        // SAFETY: `sock` is live (just looked up).
        let (ty, family) = unsafe {
            (
                bindings::vnzc_sock_type(sock.as_ptr().cast()),
                bindings::vnzc_sock_family(sock.as_ptr().cast()),
            )
        };
        if ty != kb::sock_type_SOCK_RAW as i32 {
            return Err(ESOCKTNOSUPPORT);
        }
        if family != kb::AF_PACKET as i32 {
            return Err(EPFNOSUPPORT);
        }
        Ok(this)
    }

    fn tap(fd: i32) -> Result<Self> {
        // SAFETY: `fget()` takes any descriptor number and returns a referenced file or null.
        let file = NonNull::new(unsafe { kb::fget(fd as u32) }).ok_or(EBADF)?;
        // SAFETY: `file` is referenced; each function returns its socket or an `ERR_PTR`.
        let sock = unsafe {
            let s = bindings::tun_get_socket(file.as_ptr().cast());
            if kb::IS_ERR(s as *const c_void) {
                bindings::tap_get_socket(file.as_ptr().cast())
            } else {
                s
            }
        };
        // SAFETY: `sock` came from the functions above.
        if unsafe { kb::IS_ERR(sock as *const c_void) } || sock.is_null() {
            // SAFETY: The reference taken by `fget()` above.
            unsafe { kb::fput(file.as_ptr()) };
            return Err(ENOTSOCK);
        }
        let Some(sock) = NonNull::new(sock.cast::<kb::socket>()) else {
            // SAFETY: The reference taken by `fget()` above.
            unsafe { kb::fput(file.as_ptr()) };
            return Err(ENOTSOCK);
        };
        // SAFETY: `sock` is live: its file is referenced.
        let zerocopy = unsafe { bindings::vnzc_sock_zerocopy(sock.as_ptr().cast()) };
        // SAFETY: `file` is a referenced tap or macvtap file.
        let ring = NonNull::new(unsafe { bindings::vnzc_tap_ring(file.as_ptr().cast()) });
        // INVARIANT: the reference `fget()` took on the file, which is `sock->file`, moves
        // into `self`; tun and tap take `TUN_MSG_UBUF` when they set `SOCK_ZEROCOPY`.
        let mut this = Self {
            sock,
            zerocopy,
            tap: true,
            rx: None,
        };
        if let Some(ring) = ring {
            let batch = KBox::pin_init(
                new_mutex!(Batch {
                    queue: [core::ptr::null_mut(); BATCH],
                    head: 0,
                    tail: 0,
                }),
                GFP_KERNEL,
            )?;
            // INVARIANT: the ring is the file's, which `this` references.
            this.rx = Some(RxRing { ring, batch });
        }
        Ok(this)
    }

    /// Sends one packet gathered from `iov`, whose first `skip` bytes (a virtio-net header
    /// the socket does not take) are left out. Does not block.
    ///
    /// # Errors
    ///
    /// The socket's errno; `EAGAIN`, `ENOMEM` or `ENOBUFS` when it is full for now.
    pub(crate) fn send(&self, iov: &[kb::iovec], skip: usize, len: usize) -> Result<usize> {
        let mut msg = message(iov, kb::ITER_SOURCE, skip, len)?;
        self.sendmsg(&mut msg, len)
    }

    /// Whether the socket takes a [`TxBatch`]: a tap or macvtap whose send buffer is
    /// unlimited (a tap's default; a macvtap's once the VMM sets it, as QEMU does), since a
    /// batch bypasses the send buffer's accounting.
    pub(crate) fn can_batch(&self) -> bool {
        // SAFETY: `self.sock` is live while `self` holds its file.
        self.tap && unsafe { bindings::vnzc_sock_sndbuf_unlimited(self.sock.as_ptr().cast()) }
    }

    /// Whether the socket runs an XDP program, for which a batch's frames need headroom.
    pub(crate) fn xdp(&self) -> bool {
        // SAFETY: `self.sock` is live while `self` holds its file.
        unsafe { bindings::vnzc_sock_xdp(self.sock.as_ptr().cast()) }
    }

    /// Hands the frames of `batch` over to the socket, which must be one that
    /// [`Socket::can_batch`], and empties `batch`. The socket owns the frames from then on,
    /// and frees those it drops.
    ///
    /// # Errors
    ///
    /// The socket's errno (a tap detached from its device: `EBADFD`); the frames are freed.
    pub(crate) fn send_batch(&self, batch: &mut TxBatch) -> Result<usize> {
        if !self.tap {
            batch.clear();
            return Err(EOPNOTSUPP);
        }
        // SAFETY: `batch.0` is a live batch (type invariant) that `&mut` gives us alone;
        // `self.sock` is a live tap or macvtap socket, which takes `TUN_MSG_PTR`.
        let r = unsafe { bindings::vnzc_txbatch_send(batch.0.as_ptr(), self.sock.as_ptr().cast()) };
        usize::try_from(r).map_err(|_| Error::from_errno(r))
    }

    /// Whether [`Socket::send_zerocopy`] may be used.
    pub(crate) fn zerocopy(&self) -> bool {
        self.zerocopy
    }

    /// As [`Socket::send`], but the packet's data beyond its first bytes stay in the guest's
    /// pages, which the skb references until the network stack calls `ubuf`'s completion.
    /// The socket calls it, possibly before returning, unless it fails before building the
    /// skb (then it returns an error and never calls it).
    ///
    /// # Errors
    ///
    /// As [`Socket::send`]; `EOPNOTSUPP` if the socket does not take zero-copy buffers.
    pub(crate) fn send_zerocopy(
        &self,
        iov: &[kb::iovec],
        skip: usize,
        len: usize,
        ubuf: *mut kb::ubuf_info,
    ) -> Result<usize> {
        if !self.zerocopy {
            return Err(EOPNOTSUPP);
        }
        let mut msg = message(iov, kb::ITER_SOURCE, skip, len)?;
        let mut ctl = bindings::tun_msg_ctl {
            type_: bindings::TUN_MSG_UBUF as u16,
            num: 0,
            ptr: ubuf.cast(),
        };
        msg.__bindgen_anon_1.msg_control = (&raw mut ctl).cast();
        msg.msg_controllen = size_of::<bindings::tun_msg_ctl>();
        self.sendmsg(&mut msg, len)
    }

    fn sendmsg(&self, msg: &mut kb::msghdr, len: usize) -> Result<usize> {
        msg.msg_flags = kb::MSG_DONTWAIT;
        let sock = self.sock.as_ptr();
        // SAFETY: The socket is live (type invariant); its `ops` table is set for its
        // lifetime.
        let sendmsg = unsafe { (*(*sock).ops).sendmsg }.ok_or(EOPNOTSUPP)?;
        // SAFETY: `sock` is live, `msg` is a valid message for this call; a control message
        // it carries (`TUN_MSG_UBUF`) is only read during the call.
        let r = unsafe { sendmsg(sock, msg, len) };
        if r < 0 {
            return Err(Error::from_errno(r));
        }
        Ok(r.unsigned_abs() as usize)
    }

    /// Length of the packet at the head of the socket's queue, `None` if it is empty.
    ///
    /// From a tap or macvtap, packets are taken off its ring up to 64 at a time (which lets
    /// the tap queue more at once) and received from that batch by [`Socket::recv`].
    pub(crate) fn peek_len(&self) -> Option<usize> {
        let len = match &self.rx {
            Some(rx) => {
                let mut batch = rx.batch.lock();
                if batch.head == batch.tail {
                    let file = self.file().as_ptr();
                    // SAFETY: The ring is the referenced file's (type invariant); the batch
                    // is empty, so its whole queue may be filled.
                    let got = unsafe {
                        bindings::vnzc_ring_consume_batched(
                            rx.ring.as_ptr(),
                            file.cast(),
                            batch.queue.as_mut_ptr(),
                            BATCH as i32,
                        )
                    };
                    // INVARIANT: the packets taken are `queue[0..got]`, `got <= BATCH`.
                    batch.head = 0;
                    batch.tail = usize::try_from(got).unwrap_or(0).min(BATCH);
                }
                let head = *batch
                    .queue
                    .get(batch.head)
                    .filter(|_| batch.head < batch.tail)?;
                // SAFETY: `head` is a packet the batch owns (type invariant of `Batch`).
                unsafe { bindings::vnzc_ring_entry_len(head) }
            }
            // SAFETY: The socket is live (type invariant).
            None => unsafe { bindings::vnzc_sock_peek_len(self.sock.as_ptr().cast()) },
        };
        usize::try_from(len).ok().filter(|&l| l > 0)
    }

    /// Takes the packet at the head of the batch, if any, for `recvmsg()` to consume.
    fn take_batched(&self) -> Option<NonNull<c_void>> {
        let rx = self.rx.as_ref()?;
        let mut batch = rx.batch.lock();
        if batch.head == batch.tail {
            return None;
        }
        let packet = batch.queue[batch.head];
        // INVARIANT: the packet leaves the batch; its ownership goes to the caller.
        batch.head += 1;
        NonNull::new(packet)
    }

    /// Receives one packet into the buffers `iov` describes, from byte `skip` on (room for
    /// a header vhost writes itself), `len` bytes at most; a longer packet is truncated.
    /// With an empty `iov`, drops the packet. Does not block.
    ///
    /// # Errors
    ///
    /// The socket's errno.
    pub(crate) fn recv(&self, iov: &[kb::iovec], skip: usize, len: usize) -> Result<usize> {
        let mut msg = message(iov, kb::ITER_DEST, skip, len)?;
        if let Some(packet) = self.take_batched() {
            // tun and tap receive (and free) the packet passed this way, even on error.
            msg.__bindgen_anon_1.msg_control = packet.as_ptr();
        }
        let sock = self.sock.as_ptr();
        // SAFETY: The socket is live (type invariant); its `ops` table is set for its
        // lifetime.
        let recvmsg = unsafe { (*(*sock).ops).recvmsg }.ok_or(EOPNOTSUPP)?;
        let flags = (kb::MSG_DONTWAIT | kb::MSG_TRUNC) as i32;
        // SAFETY: `sock` is live, `msg` is a valid message for this call.
        let r = unsafe { recvmsg(sock, &mut msg, len, flags) };
        if r < 0 {
            return Err(Error::from_errno(r));
        }
        Ok(r.unsigned_abs() as usize)
    }

    /// Whether `other` is this same socket.
    pub(crate) fn same(&self, other: &Socket) -> bool {
        self.sock == other.sock
    }
}

/// A message whose data are the `len` bytes of the buffers `iov` describes after the first
/// `skip`, read from them (`ITER_SOURCE`) or written to them (`ITER_DEST`).
///
/// The message refers to the user memory `iov` names, not to `iov` itself beyond the call
/// that uses it, which must happen while `iov` is borrowed.
fn message(iov: &[kb::iovec], direction: u32, skip: usize, len: usize) -> Result<kb::msghdr> {
    let total = len.checked_add(skip).ok_or(EINVAL)?;
    // SAFETY: `msghdr` is a C struct for which all zeroes is a valid empty message.
    let mut msg: kb::msghdr = unsafe { core::mem::zeroed() };
    // SAFETY: `iov` is a valid array of user iovecs; the iterator only accesses user memory
    // through them, with the usual fault checks.
    unsafe {
        kb::iov_iter_init(&mut msg.msg_iter, direction, iov.as_ptr(), iov.len(), total);
        kb::iov_iter_advance(&mut msg.msg_iter, skip);
    }
    Ok(msg)
}

impl Backend for Socket {
    fn file(&self) -> &File {
        // SAFETY: `self` holds a reference to the socket's file (type invariant), for at
        // least as long as the returned borrow; the file is never used with `fdget_pos`.
        unsafe { File::from_raw_file((*self.sock.as_ptr()).file) }
    }
}

impl Drop for Socket {
    fn drop(&mut self) {
        if let Some(rx) = &self.rx {
            let mut batch = rx.batch.lock();
            let (head, tail) = (batch.head, batch.tail);
            if head < tail {
                // SAFETY: The ring is alive (its file is still referenced) and
                // `queue[head..tail]` are packets taken off it, in order, which go back to
                // its head: the next reader gets them, or the tap frees them.
                unsafe {
                    bindings::vnzc_ring_unconsume(
                        rx.ring.as_ptr(),
                        batch.queue.as_mut_ptr().add(head),
                        (tail - head) as i32,
                    )
                };
            }
            // INVARIANT: the batch owns nothing any more.
            batch.head = 0;
            batch.tail = 0;
        }
        // SAFETY: `self` owns one reference to `sock->file` (type invariant).
        unsafe { kb::fput((*self.sock.as_ptr()).file) }
    }
}

/// Most frames in one [`TxBatch`].
pub(crate) const TX_BATCH: usize = bindings::VNZC_TXBATCH_MAX as usize;

/// TX frames copied out of the guest into page fragments laid out for tun's and tap's
/// `build_skb()`, handed to the socket up to [`TX_BATCH`] at a time with one `sendmsg()`
/// ([`Socket::send_batch`]), as stock vhost-net's copy path does.
///
/// # Invariants
///
/// `self.0` was returned by `vnzc_txbatch_new()` and is freed only by `Drop`.
pub(crate) struct TxBatch(NonNull<bindings::vnzc_txbatch>);

// SAFETY: The batch is plain memory (frames and a fragment cache) not tied to a thread.
unsafe impl Send for TxBatch {}

impl TxBatch {
    /// An empty batch.
    ///
    /// # Errors
    ///
    /// `ENOMEM`.
    pub(crate) fn new() -> Result<Self> {
        // SAFETY: No preconditions.
        let b = unsafe { bindings::vnzc_txbatch_new() };
        // INVARIANT: from `vnzc_txbatch_new()`.
        NonNull::new(b).map(Self).ok_or(ENOMEM)
    }

    /// Number of frames waiting.
    pub(crate) fn len(&self) -> usize {
        // SAFETY: `self.0` is live (type invariant).
        unsafe { bindings::vnzc_txbatch_len(self.0.as_ptr()) as usize }
    }

    /// Copies the packet of `len` bytes of `iov` past its first `skip` bytes, whose first
    /// `sock_hlen` bytes are the socket's virtio-net header, into a new frame of the batch,
    /// which must not be full. `vq` is the virtqueue the packet came from (its byte order);
    /// `xdp` asks for the headroom of an XDP program.
    ///
    /// # Errors
    ///
    /// - `ENOSPC`: the packet is too large for a frame (send it on its own), or the batch
    ///   is full;
    /// - `ENOMEM`: no memory for the frame;
    /// - `EFAULT`: the guest's buffer cannot be read;
    /// - `EINVAL`: `iov` holds fewer than `skip + len` bytes, or the header is shorter than
    ///   `sock_hlen` or asks for a checksum past the packet.
    pub(crate) fn add<D: Driver<N>, const N: usize>(
        &mut self,
        vq: &VqGuard<'_, D, N>,
        iov: &[kb::iovec],
        skip: usize,
        len: usize,
        sock_hlen: usize,
        xdp: bool,
    ) -> Result {
        if skip
            .checked_add(len)
            .is_none_or(|end| end > vhost::iov_len(iov))
        {
            return Err(EINVAL);
        }
        // SAFETY: `self.0` is live (type invariant) and ours alone (`&mut`); `vq` is a
        // locked virtqueue (the guard), only read for its byte order; `iov` is valid for
        // `iov.len()` elements holding at least `skip + len` bytes (checked above), all the
        // helper reads.
        let r = unsafe {
            bindings::vnzc_txbatch_add(
                self.0.as_ptr(),
                vq.as_ptr(),
                iov.as_ptr().cast(),
                iov.len() as kernel::ffi::c_ulong,
                skip,
                len,
                sock_hlen,
                xdp,
            )
        };
        if r == 0 {
            Ok(())
        } else {
            Err(Error::from_errno(r))
        }
    }

    /// Frees the frames waiting, unsent.
    pub(crate) fn clear(&mut self) {
        // SAFETY: `self.0` is live (type invariant) and ours alone (`&mut`).
        unsafe { bindings::vnzc_txbatch_clear(self.0.as_ptr()) };
    }
}

impl Drop for TxBatch {
    fn drop(&mut self) {
        // SAFETY: `self.0` is live (type invariant) and not used after this.
        unsafe { bindings::vnzc_txbatch_free(self.0.as_ptr()) };
    }
}
