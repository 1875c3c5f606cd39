//! Checking a verified bundle's whole payload: image → every object.

use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};

use super::{BundleError, IndexEntry, VerifiedBundle};

/// What a full payload check found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PayloadReport {
    pub image_size: u64,
    /// Objects the image references.
    pub referenced: u64,
    /// Objects carried and checked.
    pub checked: u64,
    /// Decoded bytes checked.
    pub bytes: u64,
    /// Delta objects, whose result can be checked only where their sources
    /// are (on the device, or by `bundle extract`): their frames are not
    /// decoded here.
    pub deltas: u64,
    /// The base image the image is stored as a delta against: the image,
    /// and which objects it references, are checked only where that base
    /// is (install, extract), not here.
    pub image_base: Option<crate::Digest>,
}

impl VerifiedBundle {
    /// Checks the image against the manifest, that the image references every
    /// carried object that is not a raw image (and as many as the manifest says), and every carried
    /// object's fs-verity digest. Uses all cores; `progress(done, total)` is
    /// called as objects finish. On failure, reports the failing object that
    /// comes first in the bundle.
    pub fn verify_payload(
        &self,
        progress: &(dyn Fn(u64, u64) + Sync),
    ) -> Result<PayloadReport, BundleError> {
        let image_base = self.image_base()?;
        let (image_size, referenced) = if image_base.is_some() {
            (
                self.manifest().image.size,
                self.manifest().objects.referenced,
            )
        } else {
            let image = self.read_image()?;
            (image.len() as u64, self.check_references(&image)?)
        };
        // In the order of the stored bytes: each pack is decoded once for
        // its members, which follow each other.
        let mut index: Vec<&IndexEntry> = self.index().iter().collect();
        index.sort_by_key(|e| e.stored_order());
        let total = index.len() as u64;
        let deltas = index.iter().filter(|e| e.source.is_some()).count() as u64;
        let next = AtomicUsize::new(0);
        let done = AtomicU64::new(0);
        let bytes = AtomicU64::new(0);
        let first_error: Mutex<Option<(usize, BundleError)>> = Mutex::new(None);
        let threads = std::thread::available_parallelism()
            .map_or(1, |n| n.get())
            .min(index.len().max(1));
        std::thread::scope(|s| {
            for _ in 0..threads {
                s.spawn(|| {
                    loop {
                        let i = next.fetch_add(1, Ordering::Relaxed);
                        let Some(entry) = index.get(i) else { break };
                        if first_error
                            .lock()
                            .unwrap()
                            .as_ref()
                            .is_some_and(|(j, _)| *j < i)
                        {
                            break;
                        }
                        if entry.source.is_some() {
                            progress(done.fetch_add(1, Ordering::Relaxed) + 1, total);
                            continue;
                        }
                        match self.copy_object(entry, &mut std::io::sink()) {
                            Ok(()) => {
                                bytes.fetch_add(entry.size, Ordering::Relaxed);
                                progress(done.fetch_add(1, Ordering::Relaxed) + 1, total);
                            }
                            Err(e) => {
                                let mut slot = first_error.lock().unwrap();
                                if slot.as_ref().is_none_or(|(j, _)| i < *j) {
                                    *slot = Some((i, e));
                                }
                            }
                        }
                    }
                });
            }
        });
        if let Some((_, e)) = first_error.into_inner().unwrap() {
            return Err(e);
        }
        Ok(PayloadReport {
            image_size,
            referenced,
            checked: total - deltas,
            bytes: bytes.into_inner(),
            deltas,
            image_base,
        })
    }

    /// Checks that `image` references every carried object that is not a
    /// raw image, and as many as the manifest says; returns that count.
    fn check_references(&self, image: &[u8]) -> Result<u64, BundleError> {
        let referenced = crate::image::referenced_objects(image)
            .map_err(|e| BundleError::ImageInvalid(e.to_string()))?;
        let expected = self.manifest().objects.referenced;
        if referenced.len() as u64 != expected {
            return Err(BundleError::ImageInvalid(format!(
                "the image references {} objects but the manifest says {expected}",
                referenced.len()
            )));
        }
        let raw: std::collections::BTreeSet<_> =
            self.manifest().raw.iter().map(|r| r.digest).collect();
        if let Some(e) = self
            .index()
            .iter()
            .find(|e| !referenced.contains(&e.digest) && !raw.contains(&e.digest))
        {
            return Err(BundleError::ObjectNotReferenced(e.digest));
        }
        Ok(referenced.len() as u64)
    }
}
