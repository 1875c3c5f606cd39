//! Boot files: the kernel, initramfs and device trees a slot's bootloader
//! entry loads, copied out of the slot's image into `boot-directory`.

use std::io::Write;

use super::InstallError;
use crate::config::SlotConfig;
use crate::image::{FileContent, ImageTree};
use crate::store::{Store, StoreError};

/// Copies every configured boot file of `slot` from `image` into the slot's
/// boot directory. Each file is replaced atomically; a directory listed in
/// `boot-files` is copied with its tree.
pub fn install(store: &Store, slot: &SlotConfig, image: &[u8]) -> Result<(), InstallError> {
    let Some(dest) = &slot.boot_directory else {
        return Ok(());
    };
    let tree = ImageTree::parse(image).map_err(|e| StoreError::Source(e.to_string()))?;
    let io = |context: String| move |source| InstallError::Io { context, source };
    for wanted in &slot.boot_files {
        let files = tree.files_at(wanted).map_err(|e| {
            InstallError::Store(StoreError::Source(format!(
                "[slot.{}] boot-files: {e}; fix the path in system.conf or add the file to the image",
                slot.name
            )))
        })?;
        for (rel, content) in files {
            let out = dest.join(&rel);
            if let Some(parent) = out.parent() {
                std::fs::create_dir_all(parent)
                    .map_err(io(format!("cannot create {}", parent.display())))?;
            }
            crate::util::write_atomic_with(&out, |f| match &content {
                FileContent::Inline(data) => f.write_all(data),
                FileContent::Sparse(size) => f.set_len(*size),
                FileContent::Object { digest, .. } => {
                    let mut src = std::fs::File::open(store.object_path(digest))?;
                    std::io::copy(&mut src, f).map(drop)
                }
            })
            .map_err(io(format!("cannot write boot file {}", out.display())))?;
            log::info!("boot file {} -> {}", rel.display(), out.display());
        }
    }
    Ok(())
}
