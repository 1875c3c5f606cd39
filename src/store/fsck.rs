//! `fsck`: every object against its name, every image against its name, every
//! slot's image and the objects it references.

use std::collections::BTreeSet;
use std::fs::File;
use std::sync::Mutex;

use super::{Store, StoreError};
use crate::Digest;
use crate::image;

/// One thing found wrong.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FsckProblem {
    /// An object's content does not match its name.
    CorruptObject { digest: Digest, actual: Digest },
    /// An object could not be read.
    UnreadableObject { digest: Digest, error: String },
    /// A slot's image is missing or does not match its name.
    BadImage {
        owner: String,
        digest: Digest,
        error: String,
    },
    /// An object a slot's image references is not in the store.
    MissingObject {
        owner: String,
        image: Digest,
        object: Digest,
    },
    /// A slot would not boot, or its record cannot be read.
    Slot {
        slot: crate::slot::SlotName,
        error: String,
    },
}

impl std::fmt::Display for FsckProblem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::CorruptObject { digest, actual } => write!(
                f,
                "object {digest} is corrupt: its content has digest {actual} \
                 (file objects/{})",
                digest.to_object_subpath()
            ),
            Self::UnreadableObject { digest, error } => {
                write!(f, "object {digest} cannot be read: {error}")
            }
            Self::BadImage {
                owner,
                digest,
                error,
            } => {
                write!(f, "{owner}: image {digest}: {error}")
            }
            Self::MissingObject {
                owner,
                image,
                object,
            } => write!(
                f,
                "{owner}: image {image} references object {object}, which is not in the store"
            ),
            Self::Slot { slot, error } => write!(f, "slot {slot}: {error}"),
        }
    }
}

#[derive(Debug, Default)]
pub struct FsckReport {
    pub objects_checked: u64,
    pub images_checked: u64,
    pub problems: Vec<FsckProblem>,
}

impl FsckReport {
    pub fn is_clean(&self) -> bool {
        self.problems.is_empty()
    }
}

impl Store {
    /// Checks the store. `roots` are the images that must be complete, each
    /// with a label for messages (e.g. "slot rootfs.0").
    pub fn fsck(&self, roots: &[(String, Digest)]) -> Result<FsckReport, StoreError> {
        let objects: Vec<Digest> = self.list_objects()?.into_iter().collect();
        let problems = Mutex::new(Vec::new());
        let threads = std::thread::available_parallelism()
            .map_or(1, |n| n.get())
            .min(8);
        let chunk = objects.len().div_ceil(threads).max(1);
        std::thread::scope(|s| {
            for part in objects.chunks(chunk) {
                let problems = &problems;
                s.spawn(move || {
                    for d in part {
                        if let Some(p) = self.check_object(d) {
                            problems.lock().expect("no panics while holding").push(p);
                        }
                    }
                });
            }
        });
        let mut report = FsckReport {
            objects_checked: objects.len() as u64,
            problems: problems.into_inner().expect("threads joined"),
            ..Default::default()
        };
        report.problems.sort_by_key(|p| p.to_string());

        let present: BTreeSet<Digest> = objects.into_iter().collect();
        for (owner, digest) in roots {
            report.images_checked += 1;
            let bytes = match self.read_image(digest) {
                Ok(b) => b,
                Err(e) => {
                    report.problems.push(FsckProblem::BadImage {
                        owner: owner.clone(),
                        digest: *digest,
                        error: e.to_string(),
                    });
                    continue;
                }
            };
            match image::referenced_objects(&bytes) {
                Ok(refs) => {
                    for object in refs.difference(&present) {
                        report.problems.push(FsckProblem::MissingObject {
                            owner: owner.clone(),
                            image: *digest,
                            object: *object,
                        });
                    }
                }
                Err(e) => report.problems.push(FsckProblem::BadImage {
                    owner: owner.clone(),
                    digest: *digest,
                    error: e.to_string(),
                }),
            }
        }
        Ok(report)
    }

    fn check_object(&self, digest: &Digest) -> Option<FsckProblem> {
        let path = self.object_path(digest);
        let unreadable = |e: std::io::Error| FsckProblem::UnreadableObject {
            digest: *digest,
            error: e.to_string(),
        };
        let file = match File::open(&path) {
            Ok(f) => f,
            Err(e) => return Some(unreadable(e)),
        };
        // With fs-verity, the kernel's measurement is authoritative only for
        // the Merkle tree; reading the file checks the data against it.
        let actual = match image::digest_reader(&file) {
            Ok(d) => d,
            Err(e) => return Some(unreadable(e)),
        };
        if &actual != digest {
            return Some(FsckProblem::CorruptObject {
                digest: *digest,
                actual,
            });
        }
        // Where the object has fs-verity, the kernel's measurement must agree;
        // where the policy requires it, its absence is a problem.
        match image::measure_verity(&file) {
            Ok(Some(m)) if &m == digest => {}
            Ok(Some(m)) => {
                return Some(FsckProblem::CorruptObject {
                    digest: *digest,
                    actual: m,
                });
            }
            Ok(None) if self.policy() == crate::config::VerityPolicy::Require => {
                return Some(FsckProblem::UnreadableObject {
                    digest: *digest,
                    error:
                        "fs-verity is not enabled on this object, but [store] verity = \"require\""
                            .into(),
                });
            }
            Ok(None) => {}
            Err(e) => return Some(unreadable(e)),
        }
        None
    }
}

impl Store {
    /// Enables fs-verity on every object and image that lacks it (files
    /// written on a host without fs-verity, e.g. a factory image), after
    /// checking each file's content against its name. Needs a store opened
    /// for writing on a filesystem with fs-verity. Returns how many files
    /// were sealed.
    pub fn enable_missing_verity(&self) -> Result<u64, StoreError> {
        if !self.uses_verity() {
            return Err(StoreError::VerityUnsupported {
                path: self.root().to_owned(),
            });
        }
        let mut sealed = 0;
        let files = self
            .list_objects()?
            .into_iter()
            .map(|d| (d, self.object_path(&d)))
            .chain(
                self.list_images()?
                    .into_iter()
                    .map(|d| (d, self.image_path(&d))),
            );
        for (digest, path) in files {
            let file = File::open(&path).map_err(|e| StoreError::io(&path, "cannot open", e))?;
            let has = image::measure_verity(&file)
                .map_err(|e| StoreError::io(&path, "cannot measure fs-verity", e))?;
            if has.is_some() {
                continue;
            }
            let actual =
                image::digest_reader(&file).map_err(|e| StoreError::io(&path, "cannot read", e))?;
            if actual != digest {
                return Err(StoreError::DigestMismatch { digest, actual });
            }
            match image::enable_verity(&file)
                .map_err(|e| StoreError::io(&path, "cannot enable fs-verity", e))?
            {
                image::VerityEnable::Enabled => sealed += 1,
                image::VerityEnable::Unsupported => {
                    return Err(StoreError::VerityUnsupported {
                        path: self.root().to_owned(),
                    });
                }
            }
        }
        Ok(sealed)
    }
}
