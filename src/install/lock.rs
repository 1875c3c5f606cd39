//! One install at a time: an exclusive `flock` on `<data-directory>/install.lock`,
//! whose content says who holds it.

use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, Write};
use std::path::Path;

use super::InstallError;

/// Held while an install (or gc) runs; released on drop, or by the kernel
/// when the process dies.
pub struct InstallLock {
    file: File,
}

impl InstallLock {
    /// Takes the lock or fails at once with `Busy`, naming the holder.
    pub fn acquire(data_dir: &Path, what: &str) -> Result<Self, InstallError> {
        std::fs::create_dir_all(data_dir).map_err(|source| InstallError::Io {
            context: format!("cannot create data directory {}", data_dir.display()),
            source,
        })?;
        let path = data_dir.join("install.lock");
        let mut file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&path)
            .map_err(|source| InstallError::Io {
                context: format!("cannot open {}", path.display()),
                source,
            })?;
        if rustix::fs::flock(&file, rustix::fs::FlockOperation::NonBlockingLockExclusive).is_err() {
            let mut holder = String::new();
            let _ = (&file).take(4096).read_to_string(&mut holder);
            let holder = holder.trim();
            return Err(InstallError::Busy {
                holder: if holder.is_empty() {
                    format!("lock {} is held", path.display())
                } else {
                    holder.to_owned()
                },
            });
        }
        let line = format!(
            "{what} by pid {} since {}",
            std::process::id(),
            humantime::format_rfc3339_seconds(std::time::SystemTime::now())
        );
        let _ = file.set_len(0);
        let _ = file.rewind();
        let _ = file.write_all(line.as_bytes());
        Ok(Self { file })
    }
}

impl Drop for InstallLock {
    fn drop(&mut self) {
        let _ = self.file.set_len(0);
        let _ = rustix::fs::flock(&self.file, rustix::fs::FlockOperation::Unlock);
    }
}
