//! The only place with `unsafe`, ioctls and mount syscalls.
//!
//! - [`mount`]: the fd-based mount API (`fsopen`/`fsconfig`/`fsmount`/`move_mount`)
//!   with an [`FsHandle`] that turns the kernel's fsconfig log into error
//!   messages, and a [`MountGuard`] that unmounts on drop;
//! - [`loopdev`]: read-only loop devices (`LOOP_CONFIGURE`) for kernels that
//!   cannot mount EROFS from a regular file;
//! - [`composefs`]: EROFS image plus overlayfs with a data-only object layer;
//! - [`switch_root`]: replacing the initramfs with the mounted root;
//! - [`fsflags`]: lifting a file's immutable flag for a change (efivarfs);
//! - [`x509`]: the one libcrypto call the `openssl` crate does not wrap.
//!
//! Every `unsafe` block carries a `// SAFETY:` comment.

#![allow(unsafe_code)]

pub mod composefs;
pub mod fsflags;
pub mod loopdev;
pub mod mount;
pub mod switch_root;
pub mod x509;

pub use composefs::{ErofsBacking, OverlayLayers, OverlayVerity, mount_composefs, mount_erofs};
pub use mount::{DetachedMount, FsHandle, MountError, MountGuard};
