// SPDX-License-Identifier: GPL-2.0

//! `/dev/vhost-net-zc`: one open file is one vhost-net device.
//!
//! The device speaks the vhost-net ioctl ABI (`include/uapi/linux/vhost.h`), so a VMM that
//! drives `/dev/vhost-net` drives this file unchanged. Each ioctl argument is reached through
//! [`UserSlice`] sized by the command; no raw user pointer is dereferenced.
//!
//! What is implemented so far: feature discovery (`VHOST_GET_FEATURES`,
//! `VHOST_GET_FEATURES_ARRAY`, `VHOST_GET_BACKEND_FEATURES`). Every other command answers
//! `ENOTTY`, as the kernel does for an ioctl a driver does not know.

use kernel::{
    fs::File,
    miscdevice::{
        MiscDevice,
        MiscDeviceRegistration, //
    },
    prelude::*,
    uaccess::{
        UserPtr,
        UserSlice, //
    },
};

use crate::uapi;

/// Size in bytes of one feature word in the ioctl ABI.
const WORD: usize = core::mem::size_of::<u64>();

/// The state of one open `/dev/vhost-net-zc` file.
pub(crate) struct VhostNetZc;

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

    /// Writes one `u64` to the ioctl argument.
    fn put_u64(arg: UserPtr, value: u64) -> Result<isize> {
        UserSlice::new(arg, WORD).writer().write(&value)?;
        Ok(0)
    }
}

#[vtable]
impl MiscDevice for VhostNetZc {
    type Ptr = KBox<Self>;

    fn open(_file: &File, _misc: &MiscDeviceRegistration<Self>) -> Result<Self::Ptr> {
        Ok(KBox::new(VhostNetZc, GFP_KERNEL)?)
    }

    fn ioctl(_me: &VhostNetZc, _file: &File, cmd: u32, arg: usize) -> Result<isize> {
        let arg = UserPtr::from_addr(arg);
        match cmd {
            uapi::VHOST_GET_FEATURES => Self::put_u64(arg, uapi::NET_FEATURES),
            uapi::VHOST_GET_FEATURES_ARRAY => Self::get_features_array(arg),
            uapi::VHOST_GET_BACKEND_FEATURES => Self::put_u64(arg, uapi::BACKEND_FEATURES),
            _ => Err(ENOTTY),
        }
    }
}
