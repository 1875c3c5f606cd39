//! Boot files: the kernel, initramfs and device trees a slot's bootloader
//! entry loads, copied out of the slot's image into `boot-directory`.
//!
//! [`plan`] runs with the install's checks, before anything is written: it
//! finds every configured file in the image (a missing one is refused then,
//! not after the slot record was written) and gives the sizes the space
//! check needs. [`install`] writes them, each atomically (a file is either
//! the old one or the complete new one; a failed write leaves no partial
//! file behind).

use std::io::Write;
use std::path::PathBuf;

use super::InstallError;
use crate::config::SlotConfig;
use crate::image::{FileContent, ImageTree};
use crate::store::{Store, StoreError};

/// The boot files one slot gets: destination path and content.
#[derive(Default)]
pub struct BootFiles {
    pub directory: Option<PathBuf>,
    pub files: Vec<(PathBuf, FileContent)>,
}

impl BootFiles {
    /// Bytes the files take once written (sparse files take none).
    pub fn bytes(&self) -> u64 {
        self.files
            .iter()
            .map(|(_, c)| match c {
                FileContent::Inline(d) => d.len() as u64,
                FileContent::Object { size, .. } => *size,
                FileContent::Sparse(_) => 0,
            })
            .map(|n| n.div_ceil(4096) * 4096)
            .sum()
    }
}

/// Finds every configured boot file of `slot` in `image`.
pub fn plan(slot: &SlotConfig, image: &[u8]) -> Result<BootFiles, InstallError> {
    let Some(dest) = &slot.boot_directory else {
        return Ok(BootFiles::default());
    };
    if slot.boot_files.is_empty() {
        return Ok(BootFiles::default());
    }
    let tree = ImageTree::parse(image).map_err(|e| StoreError::Source(e.to_string()))?;
    let mut files = Vec::new();
    for wanted in &slot.boot_files {
        let found = tree.files_at(wanted).map_err(|e| {
            InstallError::Store(StoreError::Source(format!(
                "[slot.{}] boot-files: {e}; fix the path in system.conf or add the file to the image",
                slot.name
            )))
        })?;
        files.extend(found.into_iter().map(|(rel, c)| (dest.join(rel), c)));
    }
    Ok(BootFiles {
        directory: Some(dest.clone()),
        files,
    })
}

/// Writes the planned files, each replaced atomically.
pub fn install(store: &Store, plan: &BootFiles) -> Result<(), InstallError> {
    let io = |context: String| move |source| InstallError::Io { context, source };
    for (out, content) in &plan.files {
        if let Some(parent) = out.parent() {
            std::fs::create_dir_all(parent)
                .map_err(io(format!("cannot create {}", parent.display())))?;
        }
        crate::util::write_atomic_with(out, |f| match content {
            FileContent::Inline(data) => f.write_all(data),
            FileContent::Sparse(size) => f.set_len(*size),
            FileContent::Object { digest, .. } => {
                let mut src = std::fs::File::open(store.object_path(digest))?;
                std::io::copy(&mut src, f).map(drop)
            }
        })
        .map_err(io(format!("cannot write boot file {}", out.display())))?;
        log::info!("boot file -> {}", out.display());
    }
    Ok(())
}
