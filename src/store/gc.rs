//! Garbage collection: remove images and objects no kept image references.

use std::collections::BTreeSet;
use std::fs;

use super::{Store, StoreError};
use crate::Digest;
use crate::image;

#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct GcReport {
    pub objects_removed: u64,
    pub bytes_removed: u64,
    pub images_removed: u64,
    pub objects_kept: u64,
}

impl Store {
    /// Keeps `keep_images` and every object they reference; removes the rest.
    ///
    /// If any kept image cannot be read or parsed, nothing is removed: the
    /// store cannot know what that image needs.
    pub fn gc(&self, keep_images: &BTreeSet<Digest>) -> Result<GcReport, StoreError> {
        let mut keep = BTreeSet::new();
        for digest in keep_images {
            let bytes = self.read_image(digest)?;
            let refs = image::referenced_objects(&bytes).map_err(|e| {
                StoreError::Source(format!(
                    "garbage collection stopped, nothing removed: image {digest}: {e}"
                ))
            })?;
            keep.extend(refs);
        }
        let mut report = GcReport::default();
        for digest in self.list_objects()? {
            if keep.contains(&digest) {
                report.objects_kept += 1;
                continue;
            }
            let path = self.object_path(&digest);
            let size = fs::metadata(&path).map(|m| m.len()).unwrap_or(0);
            fs::remove_file(&path).map_err(|e| StoreError::io(&path, "cannot remove object", e))?;
            report.objects_removed += 1;
            report.bytes_removed += size;
        }
        for digest in self.list_images()? {
            if !keep_images.contains(&digest) {
                let path = self.image_path(&digest);
                fs::remove_file(&path)
                    .map_err(|e| StoreError::io(&path, "cannot remove image", e))?;
                report.images_removed += 1;
            }
        }
        let objects = self.objects_dir();
        crate::util::fsync_dir(&objects)
            .map_err(|e| StoreError::io(&objects, "cannot fsync", e))?;
        Ok(report)
    }
}
