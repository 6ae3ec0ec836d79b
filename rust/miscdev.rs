// SPDX-License-Identifier: GPL-2.0

//! A misc device whose file operations include `poll`.
//!
//! The kernel crate's `MiscDevice` (Linux 7.3) builds a `struct file_operations` with
//! `open`, `release`, `read_iter`, `write_iter`, `ioctl` and `show_fdinfo`, but no `poll`,
//! and a vhost device needs it: the VMM polls the device file for the device IOTLB's miss
//! messages. This is the same kind of registration with the operations a vhost device has,
//! as `drivers/vhost/net.c` lists them, each one a safe method of [`FileOps`]; the unsafe
//! part is here, between the VFS's raw pointers and those methods.
//!
//! C header: [`include/linux/miscdevice.h`](srctree/include/linux/miscdevice.h).

use core::marker::PhantomData;

use kernel::{
    bindings,
    error::to_result,
    ffi::{
        c_int,
        c_long,
        c_uint,
        c_ulong, //
    },
    fs::{
        File,
        LocalFile, //
    },
    iov::{
        IovIterDest,
        IovIterSource, //
    },
    module::this_module,
    prelude::*,
    seq_file::SeqFile,
    types::{
        ForeignOwnable,
        Opaque, //
    },
};

/// What an operation borrows of the open file's private data.
pub(crate) type Borrowed<'a, T> = <<T as FileOps>::Ptr as ForeignOwnable>::Borrowed<'a>;

/// The `poll_table` of one `poll()` call, to hand to the function that registers the wait.
///
/// # Invariants
///
/// `table` is null or points at a `poll_table` valid for `'a`.
pub(crate) struct PollTable<'a> {
    table: *mut bindings::poll_table,
    _table: PhantomData<&'a mut bindings::poll_table>,
}

impl PollTable<'_> {
    /// The table, for `poll_wait()` (which takes null).
    pub(crate) fn as_ptr(&self) -> *mut bindings::poll_table {
        self.table
    }
}

/// The file operations of a misc device: implemented by the private data of an open file.
pub(crate) trait FileOps: Sized {
    /// How the private data is kept in the file.
    type Ptr: ForeignOwnable + Send + Sync;

    /// `open()`: creates the private data of `file`.
    fn open(file: &File) -> Result<Self::Ptr>;

    /// The last close of the file: takes its private data back.
    fn release(device: Self::Ptr, file: &File);

    /// `read()`: fills `iov`; returns the bytes written to it. The file is a [`LocalFile`]:
    /// a read may run under `fdget_pos()` without the position lock, which a `&File`
    /// (shareable across threads) must not outlive.
    fn read_iter(
        device: Borrowed<'_, Self>,
        file: &LocalFile,
        iov: &mut IovIterDest<'_>,
    ) -> Result<usize>;

    /// `write()`: consumes `iov`; returns the bytes taken from it.
    fn write_iter(device: Borrowed<'_, Self>, iov: &mut IovIterSource<'_>) -> Result<usize>;

    /// `poll()`: registers the wait in `table`, returns the events ready now (`EPOLL*`).
    fn poll(device: Borrowed<'_, Self>, file: &File, table: &PollTable<'_>) -> u32;

    /// `ioctl()`, native; a 32-bit caller's pointer is converted first
    /// (`compat_ptr_ioctl()`).
    fn ioctl(device: Borrowed<'_, Self>, file: &File, cmd: u32, arg: usize) -> Result<isize>;

    /// `/proc/<pid>/fdinfo/<fd>`: the lines after the VFS's own.
    fn show_fdinfo(device: Borrowed<'_, Self>, m: &SeqFile, file: &File);
}

/// The registration of a misc device (a character device on the misc major, minor
/// allocated dynamically) whose file operations are `T`'s.
///
/// # Invariants
///
/// `inner` holds a `struct miscdevice` registered by `misc_register()` with the file
/// operations of [`VTable<T>`], deregistered exactly once, by `Drop`.
#[pin_data(PinnedDrop)]
pub(crate) struct Registration<T: FileOps> {
    #[pin]
    inner: Opaque<bindings::miscdevice>,
    _ops: PhantomData<T>,
}

// SAFETY: `misc_deregister()` may run on any thread; the registration has no other state.
unsafe impl<T: FileOps> Send for Registration<T> {}
// SAFETY: No method takes `&self`; the VFS serialises the rest.
unsafe impl<T: FileOps> Sync for Registration<T> {}

impl<T: FileOps> Registration<T> {
    /// Registers `/dev/<name>`.
    pub(crate) fn register(name: &'static CStr) -> impl PinInit<Self, Error> {
        try_pin_init!(Self {
            inner <- Opaque::try_ffi_init(move |slot: *mut bindings::miscdevice| {
                let mut misc: bindings::miscdevice = pin_init::zeroed();
                misc.minor = bindings::MISC_DYNAMIC_MINOR as c_int;
                misc.name = kernel::str::as_char_ptr_in_const_context(name);
                misc.fops = &VTable::<T>::FOPS;
                // SAFETY: The initialiser may write the slot.
                unsafe { slot.write(misc) };
                // INVARIANT: registered with `VTable<T>`'s operations on success.
                // SAFETY: The slot holds a `miscdevice` with a name and file operations that
                // are `'static`; it is pinned, and deregistered before it is freed (`Drop`).
                to_result(unsafe { bindings::misc_register(slot) })
            }),
            _ops: PhantomData,
        })
    }
}

#[pinned_drop]
impl<T: FileOps> PinnedDrop for Registration<T> {
    fn drop(self: Pin<&mut Self>) {
        // SAFETY: Registered (type invariant); `Drop` runs once.
        unsafe { bindings::misc_deregister(self.inner.get()) };
    }
}

/// The `file_operations` of a [`Registration<T>`].
struct VTable<T: FileOps>(PhantomData<T>);

impl<T: FileOps> VTable<T> {
    const FOPS: bindings::file_operations = bindings::file_operations {
        owner: this_module::<crate::LocalModule>().as_ptr(),
        open: Some(Self::open),
        release: Some(Self::release),
        read_iter: Some(Self::read_iter),
        write_iter: Some(Self::write_iter),
        poll: Some(Self::poll),
        unlocked_ioctl: Some(Self::ioctl),
        compat_ioctl: bindings::compat_ptr_ioctl,
        llseek: Some(bindings::noop_llseek),
        show_fdinfo: Some(Self::show_fdinfo),
        ..pin_init::zeroed()
    };

    /// The private data of an open file, borrowed for one operation.
    ///
    /// # Safety
    ///
    /// `file` must be a file of the registration, opened successfully and not yet released,
    /// for the whole of `'a`.
    unsafe fn device<'a>(file: *mut bindings::file) -> Borrowed<'a, T> {
        // SAFETY: `open` stored `T::Ptr::into_foreign()` in `private_data`, which `release`
        // alone takes back, and it cannot run while an operation of the file does.
        unsafe { T::Ptr::borrow((*file).private_data) }
    }

    /// # Safety
    ///
    /// Called by the VFS: `inode` and `file` are valid, and `private_data` is the
    /// registration's `miscdevice` (`misc_open()` sets it).
    unsafe extern "C" fn open(inode: *mut bindings::inode, file: *mut bindings::file) -> c_int {
        // SAFETY: The VFS's arguments (function contract).
        let r = unsafe { bindings::generic_file_open(inode, file) };
        if r != 0 {
            return r;
        }
        // SAFETY: `file` is valid for the call, and the reference does not outlive it.
        let device = match T::open(unsafe { File::from_raw_file(file) }) {
            Ok(device) => device,
            Err(e) => return e.to_errno(),
        };
        // SAFETY: The file is being opened: nothing else reads `private_data` yet.
        unsafe { (*file).private_data = device.into_foreign() };
        0
    }

    /// # Safety
    ///
    /// Called by the VFS on the last close of a file that `open` opened.
    unsafe extern "C" fn release(_inode: *mut bindings::inode, file: *mut bindings::file) -> c_int {
        // SAFETY: `open` stored the pointer, and this is the last use of the file.
        let device = unsafe { T::Ptr::from_foreign((*file).private_data) };
        // SAFETY: `file` is valid for the call.
        T::release(device, unsafe { File::from_raw_file(file) });
        0
    }

    /// # Safety
    ///
    /// Called by the VFS with a valid `kiocb` of an open file of the registration and a
    /// valid `iter`.
    unsafe extern "C" fn read_iter(
        kiocb: *mut bindings::kiocb,
        iter: *mut bindings::iov_iter,
    ) -> isize {
        // SAFETY: Valid for the call (function contract).
        let file = unsafe { (*kiocb).ki_filp };
        // SAFETY: `iter` is a destination iterator valid for the call; `file` is open, and a
        // `fdget_pos()` that did not take the position lock can only be this thread's.
        let (iov, device, f) = unsafe {
            (
                IovIterDest::from_raw(iter),
                Self::device(file),
                LocalFile::from_raw_file(file),
            )
        };
        match T::read_iter(device, f, iov) {
            Ok(n) => n as isize,
            Err(e) => e.to_errno() as isize,
        }
    }

    /// # Safety
    ///
    /// As for [`Self::read_iter`], with a source iterator.
    unsafe extern "C" fn write_iter(
        kiocb: *mut bindings::kiocb,
        iter: *mut bindings::iov_iter,
    ) -> isize {
        // SAFETY: Valid for the call (function contract).
        let file = unsafe { (*kiocb).ki_filp };
        // SAFETY: `iter` is a source iterator valid for the call; `file` is open.
        let (iov, device) = unsafe { (IovIterSource::from_raw(iter), Self::device(file)) };
        match T::write_iter(device, iov) {
            Ok(n) => n as isize,
            Err(e) => e.to_errno() as isize,
        }
    }

    /// # Safety
    ///
    /// Called by the VFS with an open file of the registration and a table valid for the
    /// call (or null).
    unsafe extern "C" fn poll(
        file: *mut bindings::file,
        table: *mut bindings::poll_table,
    ) -> bindings::__poll_t {
        // INVARIANT: `table` is null or valid for the call (function contract).
        let table = PollTable {
            table,
            _table: PhantomData,
        };
        // SAFETY: `file` is open and valid for the call.
        let (device, f) = unsafe { (Self::device(file), File::from_raw_file(file)) };
        T::poll(device, f, &table)
    }

    /// # Safety
    ///
    /// Called by the VFS with an open file of the registration.
    unsafe extern "C" fn ioctl(file: *mut bindings::file, cmd: c_uint, arg: c_ulong) -> c_long {
        // SAFETY: `file` is open and valid for the call.
        let (device, f) = unsafe { (Self::device(file), File::from_raw_file(file)) };
        match T::ioctl(device, f, cmd, arg) {
            Ok(r) => r as c_long,
            Err(e) => e.to_errno() as c_long,
        }
    }

    /// # Safety
    ///
    /// Called by the VFS with a valid `seq_file` and an open file of the registration.
    unsafe extern "C" fn show_fdinfo(m: *mut bindings::seq_file, file: *mut bindings::file) {
        // SAFETY: Both are valid for the call; the VFS holds the `seq_file` exclusively.
        let (device, seq, f) = unsafe {
            (
                Self::device(file),
                SeqFile::from_raw(m),
                File::from_raw_file(file),
            )
        };
        T::show_fdinfo(device, seq, f);
    }
}
