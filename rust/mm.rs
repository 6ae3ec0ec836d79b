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

/// Takes `mm`'s mmap lock for write. Lock order: after the virtqueue and device mutexes.
pub(crate) fn mmap_write_lock(mm: &MmWithUser) -> MmapWriteGuard<'_> {
    // SAFETY: `mm` has a user reference, so its mmap lock is initialised and alive.
    unsafe { bindings::vnzc_mmap_write_lock(mm.as_raw()) };
    // INVARIANT: the lock was just taken for write.
    MmapWriteGuard { mm }
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

    /// The page mapped at `addr`, faulted in if needed: for writing if `write` (a fresh
    /// anonymous page where nothing is mapped, or a private copy), for reading otherwise.
    ///
    /// # Errors
    ///
    /// The errno of `get_user_pages_remote()`: `EFAULT` if `addr` cannot be mapped so.
    pub(crate) fn page(&self, addr: usize, write: bool) -> Result<UserPage> {
        let mut err = 0;
        // SAFETY: The mm is alive and its mmap lock is held, which the call requires without
        // a `locked` argument; it does not drop the lock then.
        let page =
            unsafe { bindings::vnzc_get_user_page_locked(self.mm.as_raw(), addr, write, &mut err) };
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
    /// Copies `from`'s bytes into this page.
    pub(crate) fn copy_from(&self, from: &UserPage) {
        // SAFETY: Both pages are referenced (type invariant); the copy maps each one
        // temporarily.
        unsafe { bindings::vnzc_copy_page(self.0.as_ptr(), from.0.as_ptr()) };
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
