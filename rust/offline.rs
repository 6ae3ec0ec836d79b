// SPDX-License-Identifier: GPL-2.0

//! Offlining: detaching from the VMM's address space the guest pages that a zero-copy skb in
//! flight still holds, so the guest can have its buffer back before the skb is freed.
//!
//! A zero-copy buffer is a list of host virtual address ranges in the owner's mm (vhost has
//! translated the guest's addresses). Offlining works on the base pages (huge pages: the
//! whole huge page) that contain them, with the mmap lock held for write and each VMA
//! write-locked, so no fault on them completes meanwhile:
//! - private memory (anonymous, QEMU's default, or a private file mapping): the range is
//!   zapped (the old pages stay with the skb; KVM's MMU notifier drops the guest's
//!   mapping), then each page is faulted in afresh for writing and filled, before the lock
//!   is dropped: in [`Mode::Preserve`] with a copy of the old page, in [`Mode::Discard`]
//!   with zeros (anonymous memory needs no fill: a fresh anonymous page is zeroed);
//! - shared memory (memfd, shmem, hugetlbfs shared): the page cache holds the very pages
//!   the skb holds, so there is no fresh page to give in [`Mode::Preserve`], which is
//!   refused; [`Mode::Discard`] punches a hole in the file (after the lock is dropped);
//! - `VM_IO`/`VM_PFNMAP` memory has no pages the skb could hold: refused.
//!
//! Every range of a buffer is checked before any is touched, so a refused buffer is left
//! as it was.

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
    PAGE_SIZE, //
};

/// What the guest sees where an offlined buffer was.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(crate) enum Mode {
    /// The same bytes, on fresh pages: for a device reset, the guest lives on.
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

/// Most page spans one buffer may need: a zero-copy chain has at most
/// [`crate::zerocopy::MAX_RANGES`] ranges, each one span.
const MAX_SPANS: usize = crate::zerocopy::MAX_RANGES;

/// The base pages that contain `ranges`, as sorted, disjoint `[start, end)` spans.
fn spans(ranges: &[Range], out: &mut [(usize, usize); MAX_SPANS]) -> Result<usize> {
    let mut n = 0;
    for r in ranges.iter().filter(|r| r.len != 0) {
        let end = r.addr.checked_add(r.len).ok_or(EFAULT)?;
        let start = r.addr & !(PAGE_SIZE - 1);
        let end = end.checked_next_multiple_of(PAGE_SIZE).ok_or(EFAULT)?;
        if n == MAX_SPANS {
            return Err(E2BIG);
        }
        // Insertion sort: a handful of ranges.
        let mut i = n;
        while i > 0 && out[i - 1].0 > start {
            out[i] = out[i - 1];
            i -= 1;
        }
        out[i] = (start, end);
        n += 1;
    }
    // Merge overlapping and adjacent spans.
    let mut merged = 0;
    for i in 0..n {
        let (start, end) = out[i];
        if merged > 0 && start <= out[merged - 1].1 {
            out[merged - 1].1 = out[merged - 1].1.max(end);
        } else {
            out[merged] = (start, end);
            merged += 1;
        }
    }
    Ok(merged)
}

/// The piece of a span that one VMA maps, widened to whole pages of the VMA's page size.
struct Piece<'a> {
    vma: &'a VmaRef,
    start: usize,
    end: usize,
    page: usize,
}

/// Calls `f` on each piece of the spans that some VMA maps, in address order. Addresses no
/// VMA maps are skipped: the guest cannot see them, so there is nothing to offline.
fn for_each_piece(
    lock: &MmapWriteGuard<'_>,
    spans: &[(usize, usize)],
    mut f: impl FnMut(Piece<'_>) -> Result,
) -> Result {
    for &(start, end) in spans {
        let mut addr = start;
        while addr < end {
            let Some(vma) = lock.vma(addr) else {
                addr += PAGE_SIZE;
                continue;
            };
            let page = mm::page_size(vma);
            let lo = (addr & !(page - 1)).max(vma.start());
            let hi = end
                .checked_next_multiple_of(page)
                .unwrap_or(usize::MAX)
                .min(vma.end());
            f(Piece {
                vma,
                start: lo,
                end: hi,
                page,
            })?;
            addr = hi;
        }
    }
    Ok(())
}

/// Whether `mode` can be honoured for the memory `vma` maps.
fn supported(vma: &VmaRef, mode: Mode) -> Result {
    let f = vma.flags();
    if f & (flags::IO | flags::PFNMAP) != 0 {
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

/// Offlines the pages of one buffer (its `ranges`) in `mm`. Returns the number of base
/// pages offlined.
///
/// # Errors
///
/// - `EOPNOTSUPP`: some range is in memory where `mode` cannot be honoured (see the
///   [module documentation](self)); nothing was changed;
/// - `E2BIG`, `EFAULT`: the ranges are more than a buffer may have, or wrap around;
/// - the errno of faulting a fresh page in or of punching a hole: the pages before it
///   are offlined, the one that failed is left unmapped (the guest faults in a zeroed one).
pub(crate) fn offline(mm: &MmWithUser, ranges: &[Range], mode: Mode) -> Result<usize> {
    let mut buf = [(0, 0); MAX_SPANS];
    let n = spans(ranges, &mut buf)?;
    let spans = &buf[..n];
    let mut holes: KVec<(ARef<File>, i64, usize)> = KVec::new();
    let mut pages = 0;
    {
        let lock = mm::mmap_write_lock(mm);
        for_each_piece(&lock, spans, |p| supported(p.vma, mode))?;
        for_each_piece(&lock, spans, |p| {
            lock.start_write(p.vma);
            if p.vma.flags() & flags::SHARED != 0 {
                if let Some((file, offset)) = mm::file_of(p.vma, p.start) {
                    holes.push((file, offset, p.end - p.start), GFP_KERNEL)?;
                }
                p.vma.zap_vma_range(p.start, p.end - p.start);
            } else {
                replace_private(&lock, &p, mode)?;
            }
            pages += (p.end - p.start) / PAGE_SIZE;
            Ok(())
        })?;
    }
    for (file, offset, len) in &holes {
        mm::punch_hole(file, *offset, *len)?;
    }
    Ok(pages)
}

/// Gives the private memory of `p` fresh pages: see the [module documentation](self).
fn replace_private(lock: &MmapWriteGuard<'_>, p: &Piece<'_>, mode: Mode) -> Result {
    let file_backed = mm::file_of(p.vma, p.start).is_some();
    let mut addr = p.start;
    while addr < p.end {
        // One page of the VMA's page size at a time: a huge page goes whole.
        let mut old = KVec::with_capacity(p.page / PAGE_SIZE, GFP_KERNEL)?;
        if mode == Mode::Preserve {
            for a in (addr..addr + p.page).step_by(PAGE_SIZE) {
                old.push(lock.page(a, false)?, GFP_KERNEL)?;
            }
        }
        p.vma.zap_vma_range(addr, p.page);
        if mode == Mode::Preserve || file_backed {
            for (i, a) in (addr..addr + p.page).step_by(PAGE_SIZE).enumerate() {
                let new = lock.page(a, true)?;
                match old.get(i) {
                    Some(old) => new.copy_from(old),
                    None => new.clear(),
                }
            }
        }
        addr += p.page;
    }
    Ok(())
}
