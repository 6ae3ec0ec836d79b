// SPDX-License-Identifier: GPL-2.0

//! Offlining: detaching from the VMM's address space the guest pages that a zero-copy skb in
//! flight still holds, so the guest can have its buffer back before the skb is freed.
//!
//! A zero-copy buffer is recorded at send time as the list of its base pages: the address
//! of each in the owner's mm and the identity of the page mapped there ([`BufPage`]), which
//! is the page the skb holds. An [`Offliner`] holds the owner's mmap lock for write (taken
//! killably) for all the buffers of one reset: each buffer added is checked whole, then
//! offlined page by page:
//!
//! - private memory, [`Mode::Preserve`], on a kernel with `vma_share_anon_pages()` (the
//!   patch the project carries, [`mm::can_share_pages`]): the page is made copy-on-write
//!   in place. It stays mapped, read-only and shared with the skb, so every reader sees its
//!   last written bytes; the first write to it, by a vCPU, a VMM thread or a GUP user,
//!   takes the kernel's own copy-on-write path, which copies the page and swaps the copy
//!   in atomically. No fresh page is needed at reset time, so nothing can fail for want
//!   of one, and a page the guest never writes again is never copied. Pages that may be
//!   pinned for DMA are refused. These pages are collected over all the buffers and
//!   changed when the offliner finishes, one call per VMA: one invalidation of KVM and
//!   other secondary MMUs and one TLB flush for all of them, as fork() does;
//! - private memory otherwise (hugetlb pages, which must be copied whole from a pool that
//!   may be empty, and kernels without the patch): the page is zapped, then faulted in
//!   afresh and filled before the lock is dropped: with a copy of the old page in
//!   [`Mode::Preserve`], with zeros in [`Mode::Discard`] (anonymous memory needs no fill).
//!   A thread that reaches the fresh page through its own page-table walk between the
//!   fault and the fill can see zeros or lose a write: this is the weaker guarantee of
//!   those cases. Hugetlb pages are refused when the pool has no page for the refill;
//! - shared memory (memfd, shmem, hugetlbfs shared): the page cache holds the very pages
//!   the skb holds, so there is no fresh page to give in [`Mode::Preserve`], which is
//!   refused; [`Mode::Discard`] punches a hole in the file (after the lock is dropped);
//! - `VM_IO`/`VM_PFNMAP` memory has no pages the skb could hold: refused.
//!
//! A page no longer mapped where it was sent from (the VMM unmapped or remapped that
//! memory since) is not the guest's any more: it is skipped, and counted. Every page of a
//! buffer is checked before any is changed, so a buffer refused for its kind of memory is
//! left as it was; one refused half way (a DMA pin found by the in-place change) keeps the
//! pages made copy-on-write so, which changes no byte the guest sees.

use kernel::{
    fs::File,
    mm::{
        virt::{
            flags,
            VmaRef, //
        },
        MmWithUser,
    },
    prelude::*,
    sync::aref::ARef,
};

use crate::mm::{
    self,
    MmapWriteGuard,
    PageId,
    PAGE_SIZE, //
};

/// What the guest sees where an offlined buffer was.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(crate) enum Mode {
    /// The same bytes, on pages the skb no longer shares: for a device reset, the guest
    /// lives on.
    Preserve,
    /// Zeros: for a VM reset, the guest's memory is about to be rewritten anyway.
    Discard,
    /// As [`Mode::Preserve`], but only where the page can be made copy-on-write in place,
    /// which has no window (see the [module documentation](self)); refused elsewhere: for
    /// an offline of a running guest's memory that neither a reset nor the VMM asked for
    /// (a stuck head that later ones wait for under `VIRTIO_F_IN_ORDER`).
    InPlace,
}

/// A byte range of the owner's address space.
#[derive(Clone, Copy, Default)]
pub(crate) struct Range {
    /// Host virtual address.
    pub(crate) addr: usize,
    /// Length in bytes.
    pub(crate) len: usize,
}

/// One base page of a buffer in flight.
#[derive(Clone, Copy, Default)]
pub(crate) struct BufPage {
    /// Its page-aligned address in the owner's mm.
    pub(crate) addr: usize,
    /// The page mapped there when the buffer was sent: the one the skb holds.
    pub(crate) page: PageId,
}

/// The distinct base pages that contain `ranges`, in the order the ranges name them, into
/// `out`. Returns how many there are.
///
/// # Errors
///
/// `EFAULT` if a range wraps around the address space, `E2BIG` if `out` is too short.
pub(crate) fn pages_of(ranges: &[Range], out: &mut [BufPage]) -> Result<usize> {
    let mut n = 0;
    for r in ranges.iter().filter(|r| r.len != 0) {
        let end = r
            .addr
            .checked_add(r.len)
            .and_then(|e| e.checked_next_multiple_of(PAGE_SIZE))
            .ok_or(EFAULT)?;
        let mut addr = r.addr & !(PAGE_SIZE - 1);
        while addr < end {
            let seen = out.get(..n).unwrap_or(&[]).iter().any(|p| p.addr == addr);
            if !seen {
                *out.get_mut(n).ok_or(E2BIG)? = BufPage {
                    addr,
                    page: PageId::NONE,
                };
                n += 1;
            }
            addr += PAGE_SIZE;
        }
    }
    Ok(n)
}

/// Records in `pages` (from [`pages_of`]) the page mapped at each address in the current
/// task's address space (the owner's: this runs in its worker), right before the buffer is
/// handed to the socket, which takes its own references to the same pages. (A VMM thread
/// that remaps the buffer's memory between the two lookups makes the record name a page
/// the skb does not hold: a reset then offlines that page for nothing, harmlessly.)
///
/// # Errors
///
/// `EFAULT` if some page is not mapped: the buffer cannot be checked at reset time, so the
/// caller sends it by copy.
pub(crate) fn record(mut pages: &mut [BufPage]) -> Result {
    while !pages.is_empty() {
        // A run of consecutive pages, looked up at once.
        let start = pages.first().map_or(0, |p| p.addr);
        let run = pages
            .iter()
            .take(mm::LOOKUP_BATCH)
            .enumerate()
            .take_while(|(i, p)| p.addr == start.wrapping_add(i * PAGE_SIZE))
            .count();
        let mut ids = [PageId::NONE; mm::LOOKUP_BATCH];
        let ids = ids.get_mut(..run).ok_or(EINVAL)?;
        mm::lookup_pages(start, ids)?;
        let (head, rest) = core::mem::take(&mut pages).split_at_mut(run);
        for (p, id) in head.iter_mut().zip(ids.iter()) {
            p.page = *id;
        }
        pages = rest;
    }
    Ok(())
}

/// What offlining one buffer did.
#[derive(Clone, Copy, Default)]
pub(crate) struct Outcome {
    /// Base pages offlined.
    pub(crate) offlined: usize,
    /// Base pages skipped: no longer the page the skb holds (remapped since the send).
    pub(crate) skipped: usize,
}

/// Whether `mode` can be honoured for the memory `vma` maps.
fn supported(vma: &VmaRef, mode: Mode) -> Result {
    let f = vma.flags();
    if f & (flags::IO | flags::PFNMAP) != 0 || mm::uffd_armed(vma) {
        return Err(EOPNOTSUPP);
    }
    if f & flags::SHARED != 0 {
        // The page cache maps the skb's pages back: only a hole gives the guest new ones.
        return match mode {
            Mode::Preserve | Mode::InPlace => Err(EOPNOTSUPP),
            Mode::Discard => Ok(()),
        };
    }
    // The refill faults pages in for writing.
    if f & flags::WRITE == 0 {
        return Err(EOPNOTSUPP);
    }
    Ok(())
}

/// How the pages of one VMA are offlined.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Method {
    /// Made copy-on-write in place ([`MmapWriteGuard::share_pages`]), all together when the
    /// offliner finishes.
    Share,
    /// Zapped, then refilled (or for shared memory, a hole punched), at once.
    Replace,
}

/// A page to be made copy-on-write when the offliner finishes.
#[derive(Clone, Copy)]
struct Pending {
    /// Its address and the page the skb holds.
    page: BufPage,
    /// The buffer it belongs to: its number among those added.
    buf: usize,
}

/// What [`Offliner::finish`] did.
pub(crate) struct Report {
    /// For each buffer, in the order they were added: what offlining it did, or why it was
    /// refused.
    pub(crate) bufs: KVec<Result<Outcome>>,
    /// The address ranges whose content changed (discard mode): start, length. The dirty
    /// log must hear of them, during a migration.
    pub(crate) changed: KVec<(usize, usize)>,
    /// The errno of the first hole that could not be punched, if one could not.
    pub(crate) hole_error: Option<Error>,
}

/// The owner's address space, locked for the offlining of the buffers of one reset: one
/// lock for all of them, and for the pages made copy-on-write, one pass per VMA with one
/// TLB flush. See the [module documentation](self).
pub(crate) struct Offliner<'a> {
    lock: MmapWriteGuard<'a>,
    /// One entry per buffer added.
    bufs: KVec<Result<Outcome>>,
    /// The pages to make copy-on-write, of the buffers added so far.
    pending: KVec<Pending>,
    /// Holes to punch once the lock is dropped: file, offset, length.
    holes: KVec<(ARef<File>, i64, usize)>,
    /// See [`Report::changed`].
    changed: KVec<(usize, usize)>,
}

impl<'a> Offliner<'a> {
    /// Takes `mm`'s mmap lock for write, killably, to offline up to `bufs` buffers of up to
    /// `pages` base pages in all.
    ///
    /// # Errors
    ///
    /// `EINTR` if the caller was killed while it waited for the lock, `ENOMEM` if there is
    /// no memory to note that many buffers and pages.
    pub(crate) fn new(mm: &'a MmWithUser, bufs: usize, pages: usize) -> Result<Self> {
        let bufs = KVec::with_capacity(bufs, GFP_KERNEL)?;
        let pending = KVec::with_capacity(pages, GFP_KERNEL)?;
        Ok(Offliner {
            lock: mm::mmap_write_lock(mm)?,
            bufs,
            pending,
            holes: KVec::new(),
            changed: KVec::new(),
        })
    }

    fn method(vma: &VmaRef, mode: Mode) -> Method {
        if mode != Mode::Discard && vma.flags() & flags::HUGETLB == 0 && mm::can_share_pages() {
            Method::Share
        } else {
            Method::Replace
        }
    }

    /// Adds the buffer whose base pages are `pages`: checks them all, replaces at once those
    /// that are replaced, and leaves those made copy-on-write to [`Offliner::finish`], which
    /// reports the buffer's outcome under its number among those added (0, 1, ...).
    ///
    /// The buffer is refused with:
    /// - `EOPNOTSUPP`: some page is in memory where `mode` cannot be honoured (for
    ///   [`Mode::InPlace`], also where it would be replaced rather than shared);
    /// - `ENOMEM`: a hugetlb page would need a refill the pool cannot give, or more buffers
    ///   or pages are added than [`Offliner::new`] was told;
    /// - `EBUSY`: some page may be pinned for DMA;
    /// - the errno of faulting a fresh page in or of the in-place change otherwise.
    ///
    /// Nothing is changed when the checks fail (the first two); see the
    /// [module documentation](self) for the others.
    pub(crate) fn add(&mut self, pages: &[BufPage], mode: Mode) {
        let buf = self.bufs.len();
        let queued = self.pending.len();
        let outcome = self.add_pages(buf, pages, mode);
        if outcome.is_err() {
            self.pending.truncate(queued);
        }
        if self.bufs.push_within_capacity(outcome).is_err() {
            // More buffers than promised: not noted, so not changed either; it stays in
            // flight, as `finish()` cannot report it.
            self.pending.truncate(queued);
        }
    }

    fn add_pages(&mut self, buf: usize, pages: &[BufPage], mode: Mode) -> Result<Outcome> {
        let Offliner {
            lock,
            pending,
            holes,
            changed,
            ..
        } = self;
        // Check every page before any is touched.
        let mut huge_needed = 0usize;
        let mut last_huge = None;
        for p in pages {
            let Some(vma) = lock.vma(p.addr) else {
                continue;
            };
            supported(vma, mode)?;
            if mode == Mode::InPlace && Self::method(vma, mode) != Method::Share {
                return Err(EOPNOTSUPP);
            }
            if Self::method(vma, mode) == Method::Replace
                && mode == Mode::Preserve
                && vma.flags() & flags::HUGETLB != 0
            {
                let size = mm::page_size(vma);
                let start = p.addr & !(size - 1);
                if last_huge != Some(start) {
                    last_huge = Some(start);
                    huge_needed += 1;
                    if mm::hugetlb_available(vma) < huge_needed {
                        return Err(ENOMEM);
                    }
                }
            }
        }
        let mut out = Outcome::default();
        let mut done_huge: Option<usize> = None;
        for p in pages {
            let Some(vma) = lock.vma(p.addr) else {
                out.skipped += 1;
                continue;
            };
            match Self::method(vma, mode) {
                Method::Share => pending
                    .push_within_capacity(Pending { page: *p, buf })
                    .map_err(|_| ENOMEM)?,
                Method::Replace => {
                    let size = mm::page_size(vma);
                    let start = p.addr & !(size - 1);
                    if done_huge == Some(start) {
                        continue;
                    }
                    // Only the page the skb holds: a page mapped there since is the
                    // guest's own. A page a device may be writing cannot be replaced.
                    let Ok(mapped) = lock.page(p.addr, false) else {
                        out.skipped += 1;
                        continue;
                    };
                    if mapped.id() != p.page {
                        out.skipped += 1;
                        continue;
                    }
                    if mapped.maybe_dma_pinned() {
                        return Err(EBUSY);
                    }
                    done_huge = Some(start);
                    lock.start_write(vma);
                    replace(lock, holes, vma, start, size, mode)?;
                    if mode == Mode::Discard {
                        changed.push((start, size), GFP_KERNEL)?;
                    }
                    out.offlined += size / PAGE_SIZE;
                }
            }
        }
        Ok(out)
    }

    /// Makes the pending pages copy-on-write, one call per VMA, then drops the lock and
    /// punches the holes discard mode needs in shared memory.
    pub(crate) fn finish(self) -> Report {
        let Offliner {
            lock,
            mut bufs,
            mut pending,
            holes,
            changed,
        } = self;
        share_pending(&lock, &mut pending, &mut bufs);
        drop(lock);
        let mut hole_error = None;
        for (file, offset, len) in &holes {
            if let Err(e) = mm::punch_hole(file, *offset, *len) {
                hole_error.get_or_insert(e);
            }
        }
        Report {
            bufs,
            changed,
            hole_error,
        }
    }
}

/// Makes the pages of `pending` copy-on-write, each VMA's in one call, and accounts each
/// page to its buffer in `bufs`.
fn share_pending(lock: &MmapWriteGuard<'_>, pending: &mut [Pending], bufs: &mut [Result<Outcome>]) {
    // By address: the primitive takes a VMA's pages in ascending order.
    pending.sort_unstable_by_key(|p| (p.page.addr, p.buf));
    let mut rest = pending;
    while let Some(first) = rest.first() {
        let Some(vma) = lock.vma(first.page.addr) else {
            // Unmapped since the checks cannot be (the lock is held); skipped all the same.
            let n = rest
                .iter()
                .take_while(|p| p.page.addr == first.page.addr)
                .count();
            let (group, tail) = core::mem::take(&mut rest).split_at_mut(n);
            account(bufs, group, |_| Err(EFAULT));
            rest = tail;
            continue;
        };
        let n = rest.iter().take_while(|p| p.page.addr < vma.end()).count();
        let (group, tail) = core::mem::take(&mut rest).split_at_mut(n);
        rest = tail;
        let result = share_group(lock, vma, group);
        match result {
            Ok(errs) => {
                // `errs` has one entry per distinct address of `group`, in order.
                let mut i = 0usize;
                let mut prev: Option<usize> = None;
                let mut chosen = PageId::NONE;
                for p in group.iter() {
                    if prev.is_some_and(|a| a != p.page.addr) {
                        i += 1;
                    }
                    if prev != Some(p.page.addr) {
                        chosen = p.page.page;
                    }
                    prev = Some(p.page.addr);
                    let err = errs.get(i).copied().unwrap_or(EINVAL.to_errno());
                    // Two buffers sent from one address with different pages (remapped
                    // in between): only the first one's page was checked; the other
                    // buffer's page is not mapped there any more.
                    let res = if p.page.page != chosen {
                        Err(ESTALE)
                    } else if err == 0 {
                        Ok(())
                    } else {
                        Err(Error::from_errno(err))
                    };
                    account(bufs, core::slice::from_ref(p), |_| res);
                }
            }
            Err(e) => account(bufs, group, |_| Err(e)),
        }
    }
}

/// Makes the pages of `group` (all in `vma`, sorted by address) copy-on-write in one call;
/// a page found in transit is tried once more on its own. Returns each distinct address's
/// result (0 or a negative errno).
fn share_group(lock: &MmapWriteGuard<'_>, vma: &VmaRef, group: &[Pending]) -> Result<KVec<i32>> {
    let mut addrs = KVec::with_capacity(group.len(), GFP_KERNEL)?;
    let mut expected = KVec::with_capacity(group.len(), GFP_KERNEL)?;
    for p in group {
        if addrs.last() != Some(&p.page.addr) {
            addrs.push(p.page.addr, GFP_KERNEL)?;
            expected.push(p.page.page, GFP_KERNEL)?;
        }
    }
    let mut errs = KVec::from_elem(0i32, addrs.len(), GFP_KERNEL)?;
    lock.share_pages(vma, &addrs, &expected, &mut errs)?;
    for ((addr, page), err) in addrs.iter().zip(expected.iter()).zip(errs.iter_mut()) {
        if *err == EAGAIN.to_errno() {
            let mut again = [0i32];
            lock.share_pages(vma, &[*addr], &[*page], &mut again)?;
            *err = again[0];
        }
    }
    Ok(errs)
}

/// Accounts the pages `group` to their buffers in `bufs` with `result(page)`: offlined if
/// `Ok`; skipped if no longer the skb's page (`ESTALE`, `EFAULT`); the buffer refused
/// otherwise.
fn account(bufs: &mut [Result<Outcome>], group: &[Pending], result: impl Fn(&Pending) -> Result) {
    for p in group {
        let Some(slot) = bufs.get_mut(p.buf) else {
            continue;
        };
        let Ok(out) = slot else {
            continue;
        };
        match result(p) {
            Ok(()) => out.offlined += 1,
            Err(e) if e == ESTALE || e == EFAULT => out.skipped += 1,
            Err(e) => *slot = Err(e),
        }
    }
}

/// Zaps the page of `size` bytes at `start` of `vma` and gives the guest a fresh one (see
/// the [module documentation](self)); for shared memory, records the hole to punch.
fn replace(
    lock: &MmapWriteGuard<'_>,
    holes: &mut KVec<(ARef<File>, i64, usize)>,
    vma: &VmaRef,
    start: usize,
    size: usize,
    mode: Mode,
) -> Result {
    let file = mm::file_of(vma, start);
    if vma.flags() & flags::SHARED != 0 {
        if let Some((file, offset)) = file {
            holes.push((file, offset, size), GFP_KERNEL)?;
        }
        vma.zap_vma_range(start, size);
        return Ok(());
    }
    let mut old = KVec::with_capacity(size / PAGE_SIZE, GFP_KERNEL)?;
    if mode != Mode::Discard {
        for a in (start..start + size).step_by(PAGE_SIZE) {
            old.push(lock.page(a, false)?, GFP_KERNEL)?;
        }
    }
    vma.zap_vma_range(start, size);
    if mode != Mode::Discard || file.is_some() {
        for (i, a) in (start..start + size).step_by(PAGE_SIZE).enumerate() {
            let new = lock.page(a, true)?;
            match old.get(i) {
                Some(old) => new.copy_from(old),
                None => new.clear(),
            }
        }
    }
    Ok(())
}

#[kernel::macros::kunit_tests(vhost_net_zc_offline)]
mod tests {
    use super::*;

    const P: usize = PAGE_SIZE;

    /// A case: the ranges, the room for pages, and the pages or the errno expected.
    type Case<'a> = (&'a [Range], usize, core::result::Result<&'a [usize], i32>);

    /// The page addresses `pages_of` gives for `ranges`, or its errno.
    fn addrs(ranges: &[Range], room: usize) -> core::result::Result<KVec<usize>, i32> {
        let mut out = [BufPage::default(); 8];
        let n = pages_of(ranges, &mut out[..room]).map_err(|e| e.to_errno())?;
        let mut v = KVec::new();
        for p in &out[..n] {
            v.push(p.addr, GFP_KERNEL).map_err(|_| ENOMEM.to_errno())?;
        }
        Ok(v)
    }

    #[test]
    fn pages_of_ranges() {
        let r = |addr, len| Range { addr, len };
        // (ranges, room, pages or errno): page edges at N-1, N, N+1.
        let cases: [Case<'_>; 9] = [
            (&[], 8, Ok(&[])),
            (&[r(10 * P, 0)], 8, Ok(&[])),
            (&[r(10 * P, 1)], 8, Ok(&[10 * P])),
            (&[r(10 * P, P)], 8, Ok(&[10 * P])),
            (&[r(10 * P, P + 1)], 8, Ok(&[10 * P, 11 * P])),
            (&[r(11 * P - 1, 2)], 8, Ok(&[10 * P, 11 * P])),
            // Two ranges in one page: the page once.
            (&[r(10 * P, 8), r(10 * P + 100, 8)], 8, Ok(&[10 * P])),
            (&[r(10 * P, 3 * P)], 2, Err(E2BIG.to_errno())),
            (&[r(usize::MAX - 10, 20)], 8, Err(EFAULT.to_errno())),
        ];
        for (ranges, room, want) in cases {
            let got = addrs(ranges, room);
            match want {
                Ok(want) => assert_eq!(got.as_deref().ok(), Some(want)),
                Err(want) => assert_eq!(got.err(), Some(want)),
            }
        }
    }
}
