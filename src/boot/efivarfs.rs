//! Reading and writing EFI variables through efivarfs.
//!
//! Each variable is a file `<Name>-<vendor GUID>` whose contents are the
//! 4-byte attribute word followed by the data. efivarfs turns one `write()`
//! into one `SetVariable()` call, so the whole new contents (attributes and
//! data) go out in a single write; a partial write would set a truncated
//! variable, and the kernel rejects a write that does not carry the
//! attributes. There is no temporary file and rename on efivarfs: a change is
//! atomic because the firmware's variable store replaces a variable as a
//! whole. efivarfs has no `fsync` either: `SetVariable()` returns when the
//! firmware has stored the variable. Deleting the file deletes the variable.
//!
//! efivarfs marks many variables immutable; before writing or deleting, the
//! flag is lifted ([`crate::sys::fsflags`]) and afterwards set again. The same
//! code works on an ordinary directory laid out like efivarfs (the tests use
//! one): filesystems without inode flags are accepted as they are.

use std::fs::OpenOptions;
use std::io::{self, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use super::BootError;
use super::efivar::{APPEND_WRITE, GLOBAL_GUID, MAX_VARIABLE_SIZE, VarError, split_attributes};
use crate::sys::fsflags::MutableFile;
use crate::util::BoundedReadError;

/// A variable as read: its attributes and data.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Variable {
    pub attributes: u32,
    pub data: Vec<u8>,
}

/// The global-GUID variables in an efivarfs mount (or a directory laid out
/// like one).
#[derive(Debug, Clone)]
pub struct Efivarfs {
    dir: PathBuf,
}

impl Efivarfs {
    pub fn new(dir: PathBuf) -> Self {
        Self { dir }
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The file of variable `name` (`BootOrder-8be4df61-…`).
    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.join(format!("{name}-{GLOBAL_GUID}"))
    }

    fn io(&self, name: &str, source: io::Error) -> BootError {
        BootError::Io {
            path: self.path(name),
            source,
        }
    }

    fn format(&self, e: VarError) -> BootError {
        BootError::Format {
            path: self.dir.clone(),
            message: e.to_string(),
        }
    }

    /// Reads variable `name`; `None` when it does not exist.
    pub fn read(&self, name: &str) -> Result<Option<Variable>, BootError> {
        let path = self.path(name);
        let file = match crate::util::read_bounded(&path, MAX_VARIABLE_SIZE) {
            Ok(bytes) => bytes,
            Err(BoundedReadError::Io(e)) if e.kind() == io::ErrorKind::NotFound => {
                if self.dir.is_dir() {
                    return Ok(None);
                }
                return Err(BootError::Io {
                    path: self.dir.clone(),
                    source: io::Error::new(
                        io::ErrorKind::NotFound,
                        "efivarfs is not mounted there (is this an EFI system? \
                         mount -t efivarfs efivarfs /sys/firmware/efi/efivars, or set \
                         [bootloader] efivarfs)",
                    ),
                });
            }
            Err(BoundedReadError::Io(e)) => return Err(self.io(name, e)),
            Err(e @ BoundedReadError::TooLarge { .. }) => {
                return Err(self.format(VarError {
                    name: name.to_owned(),
                    problem: e.to_string(),
                }));
            }
        };
        let (attributes, data) = split_attributes(name, &file).map_err(|e| self.format(e))?;
        Ok(Some(Variable {
            attributes,
            data: data.to_vec(),
        }))
    }

    /// Sets variable `name` to `data` with `attributes`, in one write.
    pub fn write(&self, name: &str, attributes: u32, data: &[u8]) -> Result<(), BootError> {
        let path = self.path(name);
        let contents = super::efivar::encode_file(attributes & !APPEND_WRITE, data);
        let io = |e| self.io(name, e);
        let flag = MutableFile::open(&path).map_err(io)?;
        // O_TRUNC is for an ordinary directory; efivarfs ignores size
        // changes (older kernels only reset their cached size).
        let mut file = OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o644)
            .open(&path)
            .map_err(io)?;
        let written = file.write(&contents).map_err(io)?;
        if written != contents.len() {
            return Err(self.io(
                name,
                io::Error::new(
                    io::ErrorKind::WriteZero,
                    format!(
                        "short write: {written} of {} bytes; efivarfs needs the variable \
                         in one write",
                        contents.len()
                    ),
                ),
            ));
        }
        // efivarfs has no fsync (EINVAL): SetVariable() is synchronous.
        match file.sync_all() {
            Err(e) if e.raw_os_error() != Some(rustix::io::Errno::INVAL.raw_os_error()) => {
                return Err(io(e));
            }
            _ => {}
        }
        drop(file);
        if let Some(flag) = flag {
            flag.restore().map_err(io)?;
        }
        Ok(())
    }

    /// Deletes variable `name`; deleting a missing variable is not an error.
    pub fn delete(&self, name: &str) -> Result<(), BootError> {
        let path = self.path(name);
        let io = |e| self.io(name, e);
        let Some(flag) = MutableFile::open(&path).map_err(io)? else {
            return Ok(());
        };
        match std::fs::remove_file(&path) {
            Ok(()) => {
                // The file is gone: its flags need no restoring.
                flag.discard();
                Ok(())
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(io(e)),
        }
    }

    /// The numbers of all `Boot####` variables, in ascending order.
    pub fn boot_option_numbers(&self) -> Result<Vec<u16>, BootError> {
        let dir_io = |source| BootError::Io {
            path: self.dir.clone(),
            source,
        };
        let mut numbers = Vec::new();
        for entry in std::fs::read_dir(&self.dir).map_err(dir_io)? {
            let entry = entry.map_err(dir_io)?;
            if let Some(n) = entry
                .file_name()
                .to_str()
                .and_then(super::efivar::boot_option_number)
            {
                numbers.push(n);
            }
        }
        numbers.sort_unstable();
        Ok(numbers)
    }
}
