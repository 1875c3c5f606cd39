//! Inode flags (`FS_IOC_GETFLAGS`/`FS_IOC_SETFLAGS`): lifting the immutable
//! flag for a change and putting it back afterwards.
//!
//! efivarfs marks most variable files immutable so that a stray `rm` cannot
//! delete firmware state; writing or deleting such a variable means clearing
//! `FS_IMMUTABLE_FL` first (as `chattr -i` does). Filesystems without inode
//! flags answer `ENOTTY` or `EOPNOTSUPP`; there is nothing to lift then.

use std::fs::File;
use std::io;
use std::path::Path;

use rustix::fs::{IFlags, ioctl_getflags, ioctl_setflags};
use rustix::io::Errno;

/// A file whose immutable flag was cleared; [`MutableFile::restore`] sets it
/// again (dropping it does so too, on a best-effort basis).
#[derive(Debug)]
pub struct MutableFile {
    file: File,
    /// The flags to put back, when the immutable flag had to be cleared.
    original: Option<IFlags>,
}

impl MutableFile {
    /// Clears the immutable flag of `path` if it is set. `Ok(None)` when the
    /// file does not exist.
    pub fn open(path: &Path) -> io::Result<Option<Self>> {
        let file = match File::open(path) {
            Ok(f) => f,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(e),
        };
        let flags = match ioctl_getflags(&file) {
            Ok(flags) => flags,
            Err(e) if unsupported(e) => {
                return Ok(Some(Self {
                    file,
                    original: None,
                }));
            }
            Err(e) => return Err(flag_error("read the inode flags of", path, e)),
        };
        if !flags.contains(IFlags::IMMUTABLE) {
            return Ok(Some(Self {
                file,
                original: None,
            }));
        }
        ioctl_setflags(&file, flags - IFlags::IMMUTABLE)
            .map_err(|e| flag_error("clear the immutable flag of", path, e))?;
        log::debug!("cleared the immutable flag of {}", path.display());
        Ok(Some(Self {
            file,
            original: Some(flags),
        }))
    }

    /// Whether the immutable flag was set (and is now cleared).
    pub fn was_immutable(&self) -> bool {
        self.original.is_some()
    }

    /// For a file that was deleted: closes it without touching its flags.
    pub fn discard(mut self) {
        self.original = None;
    }

    /// Sets the flags back as they were.
    pub fn restore(mut self) -> io::Result<()> {
        self.restore_flags()
    }

    fn restore_flags(&mut self) -> io::Result<()> {
        match self.original.take() {
            Some(flags) => ioctl_setflags(&self.file, flags).map_err(io::Error::from),
            None => Ok(()),
        }
    }
}

impl Drop for MutableFile {
    fn drop(&mut self) {
        if let Err(e) = self.restore_flags() {
            log::warn!("cannot set the immutable flag again: {e}");
        }
    }
}

/// Whether `path` has the immutable flag; `None` where the filesystem has no
/// inode flags.
pub fn is_immutable(path: &Path) -> io::Result<Option<bool>> {
    let file = File::open(path)?;
    match ioctl_getflags(&file) {
        Ok(flags) => Ok(Some(flags.contains(IFlags::IMMUTABLE))),
        Err(e) if unsupported(e) => Ok(None),
        Err(e) => Err(e.into()),
    }
}

/// Sets or clears the immutable flag of `path` (needs `CAP_LINUX_IMMUTABLE`).
pub fn set_immutable(path: &Path, immutable: bool) -> io::Result<()> {
    let file = File::open(path)?;
    let flags = ioctl_getflags(&file)?;
    let flags = if immutable {
        flags | IFlags::IMMUTABLE
    } else {
        flags - IFlags::IMMUTABLE
    };
    ioctl_setflags(&file, flags).map_err(io::Error::from)
}

fn unsupported(e: Errno) -> bool {
    e == Errno::NOTTY || e == Errno::OPNOTSUPP || e == Errno::NOSYS
}

fn flag_error(what: &str, path: &Path, e: Errno) -> io::Error {
    let hint = if e == Errno::PERM || e == Errno::ACCESS {
        " (changing it needs CAP_LINUX_IMMUTABLE; run as root)"
    } else {
        ""
    };
    io::Error::new(
        io::Error::from(e).kind(),
        format!("cannot {what} {}: {e}{hint}", path.display()),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn missing_file_is_none() {
        assert!(
            MutableFile::open(Path::new("/nonexistent/didymos"))
                .unwrap()
                .is_none()
        );
    }

    #[test]
    fn files_without_inode_flags_are_accepted() {
        // A character device: its driver answers the flag ioctls with ENOTTY.
        let f = MutableFile::open(Path::new("/dev/null")).unwrap().unwrap();
        assert!(!f.was_immutable());
        f.restore().unwrap();
        assert_eq!(is_immutable(Path::new("/dev/null")).unwrap(), None);
    }
}
