//! Read-only loop devices, for kernels whose EROFS cannot mount a regular file.
//!
//! `LOOP_CTL_GET_FREE` finds a free device, `LOOP_CONFIGURE` binds the file
//! to it in one step (read-only, autoclear: the device goes away when the
//! last user, the mount, lets go of it).

use std::ffi::c_void;
use std::fs::{File, OpenOptions};
use std::os::fd::{AsFd, AsRawFd};
use std::path::PathBuf;

use rustix::io::Errno;
use rustix::ioctl::{Ioctl, IoctlOutput, Opcode, Setter, ioctl};

const LOOP_CTL_GET_FREE: Opcode = 0x4C82;
const LOOP_CONFIGURE: Opcode = 0x4C0A;
const LO_FLAGS_READ_ONLY: u32 = 1;
const LO_FLAGS_AUTOCLEAR: u32 = 4;
const LO_NAME_SIZE: usize = 64;
const LO_KEY_SIZE: usize = 32;

/// `struct loop_info64` from `<linux/loop.h>`.
#[repr(C)]
#[derive(Clone, Copy)]
struct LoopInfo64 {
    lo_device: u64,
    lo_inode: u64,
    lo_rdevice: u64,
    lo_offset: u64,
    lo_sizelimit: u64,
    lo_number: u32,
    lo_encrypt_type: u32,
    lo_encrypt_key_size: u32,
    lo_flags: u32,
    lo_file_name: [u8; LO_NAME_SIZE],
    lo_crypt_name: [u8; LO_NAME_SIZE],
    lo_encrypt_key: [u8; LO_KEY_SIZE],
    lo_init: [u64; 2],
}

/// `struct loop_config` from `<linux/loop.h>`.
#[repr(C)]
#[derive(Clone, Copy)]
struct LoopConfig {
    fd: u32,
    block_size: u32,
    info: LoopInfo64,
    reserved: [u64; 8],
}

/// `LOOP_CTL_GET_FREE` returns the device number as the syscall's result.
struct GetFree;

// SAFETY: the ioctl takes no argument and returns an int in the syscall
// result; `as_ptr` hands the kernel a null pointer it never dereferences.
unsafe impl Ioctl for GetFree {
    type Output = i32;
    const IS_MUTATING: bool = false;
    fn opcode(&self) -> Opcode {
        LOOP_CTL_GET_FREE
    }
    fn as_ptr(&mut self) -> *mut c_void {
        std::ptr::null_mut()
    }
    unsafe fn output_from_ptr(out: IoctlOutput, _: *mut c_void) -> rustix::io::Result<i32> {
        Ok(out)
    }
}

/// A loop device bound to a file. Keep it open until the filesystem on it is
/// mounted; afterwards the mount holds the device and autoclear releases it.
#[derive(Debug)]
pub struct LoopDevice {
    pub path: PathBuf,
    pub file: File,
}

#[derive(Debug, thiserror::Error)]
pub enum LoopError {
    #[error("cannot open /dev/loop-control: {0} (is the loop driver loaded? modprobe loop)")]
    Control(std::io::Error),
    #[error("LOOP_CTL_GET_FREE failed: {0}")]
    GetFree(Errno),
    #[error("cannot open {path}: {source}")]
    Open {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("LOOP_CONFIGURE on {path} failed: {errno}")]
    Configure { path: PathBuf, errno: Errno },
}

/// Binds `backing` (opened read-only) to a free loop device, read-only.
pub fn attach_read_only(backing: &impl AsFd) -> Result<LoopDevice, LoopError> {
    let control = OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/loop-control")
        .map_err(LoopError::Control)?;
    // Another process may grab the device between GET_FREE and CONFIGURE
    // (EBUSY); try a few times.
    let mut last = Errno::BUSY;
    for _ in 0..8 {
        // SAFETY: `GetFree` matches the ioctl's calling convention (see above).
        let n = unsafe { ioctl(&control, GetFree) }.map_err(LoopError::GetFree)?;
        let path = PathBuf::from(format!("/dev/loop{n}"));
        let file = OpenOptions::new()
            .read(true)
            .open(&path)
            .map_err(|source| LoopError::Open {
                path: path.clone(),
                source,
            })?;
        let config = LoopConfig {
            fd: backing.as_fd().as_raw_fd() as u32,
            block_size: 0,
            info: LoopInfo64 {
                lo_device: 0,
                lo_inode: 0,
                lo_rdevice: 0,
                lo_offset: 0,
                lo_sizelimit: 0,
                lo_number: 0,
                lo_encrypt_type: 0,
                lo_encrypt_key_size: 0,
                lo_flags: LO_FLAGS_READ_ONLY | LO_FLAGS_AUTOCLEAR,
                lo_file_name: [0; LO_NAME_SIZE],
                lo_crypt_name: [0; LO_NAME_SIZE],
                lo_encrypt_key: [0; LO_KEY_SIZE],
                lo_init: [0; 2],
            },
            reserved: [0; 8],
        };
        // SAFETY: LOOP_CONFIGURE reads a `struct loop_config`, which
        // `LoopConfig` mirrors field for field (`#[repr(C)]`); `Setter`
        // passes a pointer to a value that lives for the whole call.
        match unsafe { ioctl(&file, Setter::<LOOP_CONFIGURE, LoopConfig>::new(config)) } {
            Ok(()) => return Ok(LoopDevice { path, file }),
            Err(Errno::BUSY) => last = Errno::BUSY,
            Err(errno) => return Err(LoopError::Configure { path, errno }),
        }
    }
    Err(LoopError::Configure {
        path: PathBuf::from("/dev/loop*"),
        errno: last,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn structs_match_the_kernel_abi() {
        // sizeof(struct loop_info64) == 232, sizeof(struct loop_config) == 304.
        assert_eq!(std::mem::size_of::<LoopInfo64>(), 232);
        assert_eq!(std::mem::size_of::<LoopConfig>(), 304);
    }
}
