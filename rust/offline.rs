// SPDX-License-Identifier: GPL-2.0

//! Offlining: detaching from the VMM's address space the guest pages that a zero-copy skb in
//! flight still holds, so the guest can have its buffer back before the skb is freed.
//!
//! A zero-copy buffer is recorded at send time as the list of its base pages: the address
//! of each in the owner's mm and the identity of the page mapped there ([`BufPage`]), which
//! is the page the skb holds. An [`Offliner`] holds the owner's mmap lock for write (taken
//! killably) for all the buffers of one reset, and offlines each one page by page:
//!
//! - private memory, [`Mode::Preserve`], on a kernel with `vma_share_anon_page()` (the
//!   patch the project carries, [`mm::can_share_pages`]): the page is made copy-on-write
//!   in place. It stays mapped, read-only and shared with the skb, so every reader sees its
//!   last written bytes; the first write to it, by a vCPU, a VMM thread or a GUP user,
//!   takes the kernel's own copy-on-write path, which copies the page and swaps the copy
//!   in atomically. No fresh page is needed at reset time, so nothing can fail for want
//!   of one, and a page the guest never writes again is never copied. Pages that may be
//!   pinned for DMA are refused;
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
//! pages already made copy-on-write so, which changes no byte the guest sees.

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
            Mode::Preserve => Err(EOPNOTSUPP),
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
    /// Made copy-on-write in place ([`MmapWriteGuard::share_page`]).
    Share,
    /// Zapped, then refilled (or for shared memory, a hole punched).
    Replace,
}

/// The owner's address space, locked for the offlining of the buffers of one reset: one
/// lock and one pass for all of them. See the [module documentation](self).
pub(crate) struct Offliner<'a> {
    lock: MmapWriteGuard<'a>,
    /// Holes to punch once the lock is dropped: file, offset, length.
    holes: KVec<(ARef<File>, i64, usize)>,
    /// The address ranges whose content changed (discard mode): start, length. The dirty
    /// log must hear of them, during a migration.
    changed: KVec<(usize, usize)>,
}

impl<'a> Offliner<'a> {
    /// Takes `mm`'s mmap lock for write, killably.
    ///
    /// # Errors
    ///
    /// `EINTR` if the caller was killed while it waited for the lock.
    pub(crate) fn new(mm: &'a MmWithUser) -> Result<Self> {
        Ok(Offliner {
            lock: mm::mmap_write_lock(mm)?,
            holes: KVec::new(),
            changed: KVec::new(),
        })
    }

    fn method(vma: &VmaRef, mode: Mode) -> Method {
        if mode == Mode::Preserve && vma.flags() & flags::HUGETLB == 0 && mm::can_share_pages() {
            Method::Share
        } else {
            Method::Replace
        }
    }

    /// Offlines the buffer whose base pages are `pages`.
    ///
    /// # Errors
    ///
    /// - `EOPNOTSUPP`: some page is in memory where `mode` cannot be honoured;
    /// - `ENOMEM`: a hugetlb page would need a refill the pool cannot give;
    /// - `EBUSY`: some page may be pinned for DMA;
    /// - the errno of faulting a fresh page in or of the in-place change otherwise.
    ///
    /// Nothing is changed when the checks fail (the first two); see the
    /// [module documentation](self) for the others.
    pub(crate) fn offline(&mut self, pages: &[BufPage], mode: Mode) -> Result<Outcome> {
        let Offliner {
            lock,
            holes,
            changed,
        } = self;
        // Check every page before any is touched.
        let mut huge_needed = 0usize;
        let mut last_huge = None;
        for p in pages {
            let Some(vma) = lock.vma(p.addr) else {
                continue;
            };
            supported(vma, mode)?;
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
                Method::Share => match lock.share_page(vma, p.addr, p.page) {
                    Ok(()) => out.offlined += 1,
                    Err(e) if e == ESTALE || e == EFAULT => out.skipped += 1,
                    Err(e) if e == EAGAIN => {
                        lock.share_page(vma, p.addr, p.page)?;
                        out.offlined += 1;
                    }
                    Err(e) => return Err(e),
                },
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

    /// Drops the lock, then punches the holes discard mode needs in shared memory. Returns
    /// the address ranges whose content changed (start, length), for the dirty log.
    ///
    /// # Errors
    ///
    /// The errno of `vfs_fallocate()`, `EOPNOTSUPP` if the file system cannot punch holes.
    pub(crate) fn finish(self) -> Result<KVec<(usize, usize)>> {
        let Offliner {
            lock,
            holes,
            changed,
        } = self;
        drop(lock);
        for (file, offset, len) in &holes {
            mm::punch_hole(file, *offset, *len)?;
        }
        Ok(changed)
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
    if mode == Mode::Preserve {
        for a in (start..start + size).step_by(PAGE_SIZE) {
            old.push(lock.page(a, false)?, GFP_KERNEL)?;
        }
    }
    vma.zap_vma_range(start, size);
    if mode == Mode::Preserve || file.is_some() {
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
