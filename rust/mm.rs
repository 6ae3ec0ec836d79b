// SPDX-License-Identifier: GPL-2.0

//! The owner's address space, held for write: what offlining ([`crate::offline`]) needs of
//! an mm beyond `kernel::mm`, which offers the mmap lock for read only.
//!
//! With the mmap lock held for write and a VMA write-locked ([`MmapWriteGuard::start_write`]),
//! no page fault on that VMA completes until the guard is dropped: faults that try the
//! per-VMA lock fall back to the mmap lock and wait for it. Pages are looked up and faulted
//! in with `get_user_pages_remote()` without a `locked` argument, which never drops the lock.
//!
//! C headers: [`include/linux/mmap_lock.h`](srctree/include/linux/mmap_lock.h),
//! [`include/linux/mm.h`](srctree/include/linux/mm.h).

use core::ptr::NonNull;

use kernel::{
    bindings as kb,
    fs::File,
    mm::{
        virt::VmaRef,
        MmWithUser, //
    },
    prelude::*,
    sync::aref::ARef,
};

use crate::ffi::bindings;

/// The base page size.
pub(crate) const PAGE_SIZE: usize = kb::PAGE_SIZE;

/// The mmap lock of an address space, held for write.
///
/// # Invariants
///
/// The guard holds `mm`'s mmap lock for write.
pub(crate) struct MmapWriteGuard<'a> {
    mm: &'a MmWithUser,
}

/// Takes `mm`'s mmap lock for write, unless a fatal signal comes first. Lock order: after
/// the virtqueue, device and ledger mutexes.
///
/// # Errors
///
/// `EINTR` if the caller was killed while it waited.
pub(crate) fn mmap_write_lock(mm: &MmWithUser) -> Result<MmapWriteGuard<'_>> {
    // SAFETY: `mm` has a user reference, so its mmap lock is initialised and alive.
    kernel::error::to_result(unsafe { bindings::vnzc_mmap_write_lock_killable(mm.as_raw()) })?;
    // INVARIANT: the lock was just taken for write.
    Ok(MmapWriteGuard { mm })
}

/// Whether this kernel can make pages copy-on-write in place
/// ([`MmapWriteGuard::share_pages`]): `vma_share_anon_pages()`, from the kernel patch the
/// project carries (`patches/`).
pub(crate) fn can_share_pages() -> bool {
    // SAFETY: Reads a build-time constant.
    unsafe { bindings::vnzc_have_share_anon_pages() }
}

/// The identity of a page: what [`lookup_pages`] records and [`MmapWriteGuard::share_pages`]
/// compares. Not a reference: it says nothing once the page's last holder let it go.
//
// INVARIANT: the value is the address of a `struct page` or 0, and the layout is that of
// a `*mut page`: [`MmapWriteGuard::share_pages`] passes slices of it to C as pointers.
#[repr(transparent)]
#[derive(Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) struct PageId(usize);

impl PageId {
    /// No page.
    pub(crate) const NONE: PageId = PageId(0);
}

/// Most pages [`lookup_pages`] looks up in one call.
pub(crate) const LOOKUP_BATCH: usize = 16;

/// Looks up, without faulting, the pages mapped at the `out.len()` (at most
/// [`LOOKUP_BATCH`]) consecutive pages from `start` (page-aligned) in the current task's
/// address space.
///
/// # Errors
///
/// `EFAULT` if some page is not mapped (or cannot be looked up without sleeping),
/// `EINVAL` if `out` is longer than [`LOOKUP_BATCH`].
pub(crate) fn lookup_pages(start: usize, out: &mut [PageId]) -> Result {
    let mut pages = [core::ptr::null_mut::<kb::page>(); LOOKUP_BATCH];
    let nr = out.len();
    if nr > LOOKUP_BATCH {
        return Err(EINVAL);
    }
    // SAFETY: `pages` has room for `nr <= LOOKUP_BATCH` pointers; the helper drops the
    // references it takes.
    let got = unsafe { bindings::vnzc_lookup_pages(start, nr as i32, pages.as_mut_ptr().cast()) };
    if usize::try_from(got).ok() != Some(nr) {
        return Err(EFAULT);
    }
    for (id, page) in out.iter_mut().zip(pages) {
        *id = PageId(page as usize);
    }
    Ok(())
}

impl MmapWriteGuard<'_> {
    /// The VMA that contains `addr`, if any.
    pub(crate) fn vma(&self, addr: usize) -> Option<&VmaRef> {
        // SAFETY: The mm is alive and its mmap lock is held (type invariant).
        let vma = unsafe { kb::vma_lookup(self.mm.as_raw(), addr) };
        if vma.is_null() {
            return None;
        }
        // SAFETY: The VMA stays valid while the mmap lock is held, which the borrow of the
        // guard guarantees for the returned reference.
        Some(unsafe { VmaRef::from_raw(vma) })
    }

    /// Makes page faults on `vma` wait until the guard is dropped, including those that
    /// would take only the VMA's own lock.
    pub(crate) fn start_write(&self, vma: &VmaRef) {
        // SAFETY: `vma` belongs to this mm (found by `vma()` under this guard's lock), whose
        // mmap lock is held for write, as `vma_start_write()` requires.
        unsafe { bindings::vnzc_vma_start_write(vma.as_ptr()) };
    }

    /// Makes the anonymous pages mapped at `addrs` (page-aligned, strictly ascending, all in
    /// `vma`) copy-on-write in place: they stay mapped, read-only and possibly shared, so
    /// readers keep seeing their bytes and the next write to one, by anyone, gives the writer
    /// a copy (the kernel's own copy-on-write, atomic against every other access). A holder
    /// of a reference to a page never sees a later write. All of them are changed under one
    /// invalidation of KVM and other secondary MMUs and one TLB flush. Each page's result
    /// goes to `errs` (0 or a negative errno):
    ///
    /// - `ESTALE`: the page mapped there is not `expected`; `EFAULT`: none is;
    /// - `EBUSY`: the page may be pinned for DMA;
    /// - `EAGAIN`: the page is in transit (migration, swap).
    ///
    /// Returns how many pages are now shared.
    ///
    /// # Errors
    ///
    /// For the call as a whole, when nothing is changed:
    /// - `EOPNOTSUPP`: shared, hugetlb, userfaultfd-armed, `VM_IO` or `VM_PFNMAP` memory;
    /// - `EINVAL`: the slices differ in length, or the addresses are not as above;
    /// - `ENOSYS`: the kernel lacks the primitive ([`can_share_pages`]).
    pub(crate) fn share_pages(
        &self,
        vma: &VmaRef,
        addrs: &[usize],
        expected: &[PageId],
        errs: &mut [i32],
    ) -> Result<usize> {
        let nr = addrs.len();
        if expected.len() != nr || errs.len() != nr {
            return Err(EINVAL);
        }
        let nr = u32::try_from(nr).map_err(|_| EINVAL)?;
        // SAFETY: `vma` belongs to this mm (found by `vma()` under this guard's lock), whose
        // mmap lock is held for write, as the call requires. The three arrays have `nr`
        // elements; `PageId` has the layout of a page pointer (its invariant), and the
        // pointers are only compared.
        let ret = unsafe {
            bindings::vnzc_share_anon_pages(
                vma.as_ptr(),
                addrs.as_ptr(),
                expected.as_ptr().cast(),
                errs.as_mut_ptr(),
                nr,
            )
        };
        kernel::error::to_result(ret)?;
        Ok(usize::try_from(ret).unwrap_or(0))
    }

    /// The page mapped at `addr`, faulted in if needed: for writing if `write` (a fresh
    /// anonymous page where nothing is mapped, or a private copy), for reading otherwise.
    ///
    /// # Errors
    ///
    /// The errno of `get_user_pages_remote()`: `EFAULT` if `addr` cannot be mapped so.
    pub(crate) fn page(&self, addr: usize, write: bool) -> Result<UserPage> {
        let mut err = 0;
        let mm = self.mm.as_raw();
        // SAFETY: The mm is alive and its mmap lock is held, which the call requires without
        // a `locked` argument; it does not drop the lock then.
        let page = unsafe { bindings::vnzc_get_user_page_locked(mm, addr, write, &mut err) };
        // INVARIANT: a non-null page comes with a reference, which `UserPage` owns.
        NonNull::new(page)
            .map(UserPage)
            .ok_or_else(|| Error::from_errno(err))
    }
}

impl Drop for MmapWriteGuard<'_> {
    fn drop(&mut self) {
        // SAFETY: The lock is held for write (type invariant) and released once, here.
        unsafe { bindings::vnzc_mmap_write_unlock(self.mm.as_raw()) };
    }
}

/// A page of a user mapping, with a reference taken by [`MmapWriteGuard::page`].
///
/// # Invariants
///
/// The object owns one reference to the page.
pub(crate) struct UserPage(NonNull<kb::page>);

impl UserPage {
    /// The page's identity.
    pub(crate) fn id(&self) -> PageId {
        PageId(self.0.as_ptr() as usize)
    }

    /// Copies `from`'s bytes into this page.
    pub(crate) fn copy_from(&self, from: &UserPage) {
        // SAFETY: Both pages are referenced (type invariant); the copy maps each one
        // temporarily.
        unsafe { bindings::vnzc_copy_page(self.0.as_ptr(), from.0.as_ptr()) };
    }

    /// Whether the page may be pinned for DMA: a device may write it behind the page
    /// tables' back, so replacing it would lose those writes.
    pub(crate) fn maybe_dma_pinned(&self) -> bool {
        // SAFETY: The page is referenced (type invariant).
        unsafe { bindings::vnzc_page_maybe_dma_pinned(self.0.as_ptr()) }
    }

    /// Fills the page with zeros.
    pub(crate) fn clear(&self) {
        // SAFETY: The page is referenced (type invariant).
        unsafe { bindings::vnzc_clear_page(self.0.as_ptr()) };
    }
}

impl Drop for UserPage {
    fn drop(&mut self) {
        // SAFETY: The reference is owned (type invariant) and dropped once, here.
        unsafe { bindings::vnzc_put_page(self.0.as_ptr()) };
    }
}

/// The size of the pages that map `vma`: the huge page size for hugetlb, the base page size
/// otherwise.
pub(crate) fn page_size(vma: &VmaRef) -> usize {
    // SAFETY: `vma` is valid while borrowed (the mmap lock is held by whoever lent it).
    let size = unsafe { bindings::vnzc_vma_pagesize(vma.as_ptr()) };
    size.max(PAGE_SIZE)
}

/// The file `vma` maps and the file offset of `addr` in it; `None` for anonymous memory.
pub(crate) fn file_of(vma: &VmaRef, addr: usize) -> Option<(ARef<File>, i64)> {
    // SAFETY: `vma` is valid while borrowed; the helper takes a reference to its file.
    let file = NonNull::new(unsafe { bindings::vnzc_vma_get_file(vma.as_ptr()) })?;
    // SAFETY: `vm_pgoff` is set when the VMA is created and stable under the mmap lock.
    let pgoff = unsafe { (*vma.as_ptr()).vm_pgoff };
    let offset = pgoff
        .wrapping_mul(PAGE_SIZE)
        .wrapping_add(addr.wrapping_sub(vma.start()));
    // SAFETY: `file` is a valid file with a reference the helper took for us, which the
    // `ARef` now owns.
    let file = unsafe { ARef::from_raw(NonNull::from(File::from_raw_file(file.as_ptr()))) };
    Some((file, i64::try_from(offset).unwrap_or(i64::MAX)))
}

/// Frees the backing of `len` bytes at `offset` of `file` (a hole: later reads see zeros,
/// the pages already handed out stay with whoever holds them). Must be called without the
/// mmap lock.
///
/// # Errors
///
/// The errno of `vfs_fallocate()`, `EOPNOTSUPP` if the file system cannot punch holes.
pub(crate) fn punch_hole(file: &File, offset: i64, len: usize) -> Result {
    let len = i64::try_from(len).map_err(|_| EINVAL)?;
    // SAFETY: `file` is a valid, referenced file.
    kernel::error::to_result(unsafe { bindings::vnzc_punch_hole(file.as_ptr(), offset, len) })
}

/// Free huge pages of the size mapping `vma` that no reservation has promised: how many a
/// refill of zapped hugetlb pages could take right now.
pub(crate) fn hugetlb_available(vma: &VmaRef) -> usize {
    // SAFETY: `vma` is valid while borrowed (the mmap lock is held by whoever lent it).
    let n = unsafe { bindings::vnzc_hugetlb_available(vma.as_ptr()) };
    usize::try_from(n).unwrap_or(0)
}

/// Whether userfaultfd handles the faults of `vma`: a fault there, such as the refill after
/// a zap, would wait for a userspace handler or fail.
pub(crate) fn uffd_armed(vma: &VmaRef) -> bool {
    // SAFETY: `vma` is valid while borrowed (the mmap lock is held by whoever lent it).
    unsafe { bindings::vnzc_vma_uffd_armed(vma.as_ptr()) }
}
