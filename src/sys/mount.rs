//! The fd-based mount API with kernel diagnostics and unmount-on-drop guards.
//!
//! The kernel explains why a `fsconfig` call failed ("overlay: unknown
//! parameter", "erofs: cannot find valid superblock") only through the
//! filesystem context's file descriptor. [`FsHandle`] reads that log after
//! every failure and puts it into the [`MountError`], so a failed mount says
//! what the kernel said.

use std::fmt;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use std::path::{Path, PathBuf};

use rustix::fs::CWD;
use rustix::io::Errno;
use rustix::mount::{
    FsMountFlags, FsOpenFlags, MountAttrFlags, MoveMountFlags, OpenTreeFlags, UnmountFlags,
    fsconfig_create, fsconfig_set_flag, fsconfig_set_string, fsmount, fsopen, move_mount,
    open_tree, unmount,
};

/// A mount syscall that failed, with what the kernel logged about it.
#[derive(Debug, thiserror::Error)]
pub struct MountError {
    /// What was being mounted ("EROFS image /store/images/…", "overlay for /etc").
    pub what: String,
    /// The step that failed (`fsconfig(lowerdir+=…)`, `fsmount`, …).
    pub step: String,
    pub errno: Errno,
    /// The kernel's messages from the filesystem context, oldest first.
    pub kernel_log: Vec<String>,
}

impl fmt::Display for MountError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "mounting {}: {} failed: {}",
            self.what, self.step, self.errno
        )?;
        if !self.kernel_log.is_empty() {
            write!(f, " (kernel: {})", self.kernel_log.join("; "))?;
        }
        Ok(())
    }
}

impl MountError {
    /// An error for a step that has no filesystem context (move, bind, unmount).
    pub fn plain(what: impl Into<String>, step: impl Into<String>, errno: Errno) -> Self {
        Self {
            what: what.into(),
            step: step.into(),
            errno,
            kernel_log: Vec::new(),
        }
    }
}

/// A filesystem context (`fsopen`) being configured.
pub struct FsHandle {
    fd: OwnedFd,
    what: String,
}

impl FsHandle {
    /// Opens a context for `fstype`; `what` names the mount in error messages.
    pub fn open(fstype: &str, what: impl Into<String>) -> Result<Self, MountError> {
        let what = what.into();
        match fsopen(fstype, FsOpenFlags::FSOPEN_CLOEXEC) {
            Ok(fd) => Ok(Self { fd, what }),
            Err(errno) => Err(MountError::plain(what, format!("fsopen({fstype})"), errno)),
        }
    }

    /// `fsconfig(FSCONFIG_SET_STRING, key, value)`.
    pub fn set_string(&self, key: &str, value: &str) -> Result<(), MountError> {
        fsconfig_set_string(&self.fd, key, value)
            .map_err(|e| self.failed(format!("fsconfig({key}={value})"), e))
    }

    /// `fsconfig(FSCONFIG_SET_FLAG, key)`.
    pub fn set_flag(&self, key: &str) -> Result<(), MountError> {
        fsconfig_set_flag(&self.fd, key).map_err(|e| self.failed(format!("fsconfig({key})"), e))
    }

    /// `fsconfig(FSCONFIG_CMD_CREATE)` then `fsmount`: a mount not yet attached anywhere.
    pub fn mount(self, attrs: MountAttrFlags) -> Result<DetachedMount, MountError> {
        fsconfig_create(&self.fd).map_err(|e| self.failed("fsconfig(create)".into(), e))?;
        let fd = fsmount(&self.fd, FsMountFlags::FSMOUNT_CLOEXEC, attrs)
            .map_err(|e| self.failed("fsmount".into(), e))?;
        // Informational messages (e.g. "overlay: ... falling back") are not errors.
        for line in self.drain_log() {
            log::debug!("{}: kernel: {line}", self.what);
        }
        Ok(DetachedMount { fd })
    }

    fn failed(&self, step: String, errno: Errno) -> MountError {
        MountError {
            what: self.what.clone(),
            step,
            errno,
            kernel_log: self.drain_log(),
        }
    }

    /// Reads every pending message from the context. Each read returns one
    /// message prefixed "e ", "w " or "i "; the log is empty when read fails.
    pub fn drain_log(&self) -> Vec<String> {
        let mut out = Vec::new();
        let mut buf = [0u8; 1024];
        // The kernel keeps at most 8 messages; bound the loop regardless.
        for _ in 0..64 {
            match rustix::io::read(&self.fd, &mut buf) {
                Ok(n) if n > 0 => {
                    out.push(String::from_utf8_lossy(&buf[..n]).trim_end().to_owned())
                }
                _ => break,
            }
        }
        out
    }
}

impl AsFd for FsHandle {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }
}

/// A mount made with `fsmount` or cloned with `open_tree`, not attached to
/// any path. Dropping it releases the mount.
#[derive(Debug)]
pub struct DetachedMount {
    fd: OwnedFd,
}

impl DetachedMount {
    /// A recursive clone of the tree at `path` (what `mount --rbind` mounts).
    pub fn bind_of(path: &Path) -> Result<Self, MountError> {
        let flags = OpenTreeFlags::OPEN_TREE_CLONE
            | OpenTreeFlags::OPEN_TREE_CLOEXEC
            | OpenTreeFlags::AT_RECURSIVE;
        open_tree(CWD, path, flags)
            .map(|fd| Self { fd })
            .map_err(|e| MountError::plain(format!("bind of {}", path.display()), "open_tree", e))
    }

    /// A path that names this mount's root while the descriptor is open
    /// (`/proc/self/fd/N`; needs `/proc`).
    pub fn proc_path(&self) -> String {
        format!("/proc/self/fd/{}", self.fd.as_raw_fd())
    }

    /// Attaches the mount at `target`; the guard unmounts it when dropped.
    pub fn attach(self, target: &Path) -> Result<MountGuard, MountError> {
        move_mount(
            &self.fd,
            "",
            CWD,
            target,
            MoveMountFlags::MOVE_MOUNT_F_EMPTY_PATH,
        )
        .map_err(|e| MountError::plain(format!("at {}", target.display()), "move_mount", e))?;
        Ok(MountGuard {
            target: Some(target.to_owned()),
        })
    }
}

impl AsFd for DetachedMount {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }
}

/// A mount attached at a path; unmounted (lazily, with everything below it)
/// when dropped unless [`MountGuard::keep`] was called.
#[derive(Debug)]
#[must_use = "dropping the guard unmounts"]
pub struct MountGuard {
    target: Option<PathBuf>,
}

impl MountGuard {
    /// Guards an existing mount point.
    pub fn adopt(target: &Path) -> Self {
        Self {
            target: Some(target.to_owned()),
        }
    }

    pub fn target(&self) -> &Path {
        self.target.as_deref().unwrap_or(Path::new(""))
    }

    /// Leaves the mount in place for good and returns where it is.
    pub fn keep(mut self) -> PathBuf {
        self.target.take().unwrap_or_default()
    }

    /// Moves the mount to `to` (which must exist); the guard follows it.
    pub fn move_to(&mut self, to: &Path) -> Result<(), MountError> {
        let from = self.target().to_owned();
        move_mount(CWD, &from, CWD, to, MoveMountFlags::empty()).map_err(|e| {
            MountError::plain(
                format!("{} to {}", from.display(), to.display()),
                "move_mount",
                e,
            )
        })?;
        self.target = Some(to.to_owned());
        Ok(())
    }

    /// Unmounts now and reports failure (dropping unmounts silently).
    pub fn unmount(mut self) -> Result<(), MountError> {
        match self.target.take() {
            Some(t) => unmount(&t, UnmountFlags::DETACH)
                .map_err(|e| MountError::plain(t.display().to_string(), "umount", e)),
            None => Ok(()),
        }
    }
}

impl Drop for MountGuard {
    fn drop(&mut self) {
        if let Some(t) = self.target.take()
            && let Err(e) = unmount(&t, UnmountFlags::DETACH)
        {
            log::warn!("cannot unmount {}: {e}", t.display());
        }
    }
}

/// Mounts a block device (or anything the filesystem accepts as `source`).
pub fn mount_device(
    fstype: &str,
    source: &str,
    options: &[(&str, Option<&str>)],
    attrs: MountAttrFlags,
) -> Result<DetachedMount, MountError> {
    let fs = FsHandle::open(fstype, format!("{fstype} {source}"))?;
    fs.set_string("source", source)?;
    for (key, value) in options {
        match value {
            Some(v) => fs.set_string(key, v)?,
            None => fs.set_flag(key)?,
        }
    }
    fs.mount(attrs)
}
