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

/// Runs `check` on every item on all cores (at most 8 threads) and collects
/// what it returns.
fn par_filter_map<T: Sync, R: Send>(items: &[T], check: impl Fn(&T) -> Option<R> + Sync) -> Vec<R> {
    let out = Mutex::new(Vec::new());
    let threads = std::thread::available_parallelism()
        .map_or(1, |n| n.get())
        .min(8);
    let chunk = items.len().div_ceil(threads).max(1);
    std::thread::scope(|s| {
        for part in items.chunks(chunk) {
            let (out, check) = (&out, &check);
            s.spawn(move || {
                for item in part {
                    if let Some(r) = check(item) {
                        out.lock().expect("no panics while holding").push(r);
                    }
                }
            });
        }
    });
    out.into_inner().expect("threads joined")
}

impl Store {
    /// Of `digests` (objects present in the store), those that cannot be
    /// reused as they are. With fs-verity on an object the kernel's
    /// measurement must equal its name (every later read is then checked by
    /// the kernel): an ioctl per object. Without fs-verity the content is
    /// read and hashed, since nothing else would notice a changed file.
    pub fn damaged_objects(&self, digests: &BTreeSet<Digest>) -> BTreeSet<Digest> {
        let list: Vec<Digest> = digests.iter().copied().collect();
        par_filter_map(&list, |d| {
            let file = File::open(self.object_path(d)).ok()?;
            match image::measure_verity(&file) {
                Ok(Some(m)) => (m != *d).then_some(*d),
                _ if self.policy() == crate::config::VerityPolicy::Require => Some(*d),
                _ => match image::digest_reader(&file) {
                    Ok(actual) if actual == *d => None,
                    _ => Some(*d),
                },
            }
        })
        .into_iter()
        .collect()
    }

    /// Moves a damaged object or image out of the way, into `quarantine/`
    /// under the store (never deleted: it may be needed to investigate), so
    /// that the next install writes a sound copy. Returns where it went.
    pub fn quarantine(&self, path: &std::path::Path) -> Result<std::path::PathBuf, StoreError> {
        let dir = self.root().join("quarantine");
        std::fs::create_dir_all(&dir).map_err(|e| StoreError::io(&dir, "cannot create", e))?;
        let name = path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let prefix = path
            .parent()
            .and_then(|p| p.file_name())
            .map(|p| p.to_string_lossy().into_owned())
            .unwrap_or_default();
        let stamp = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        let to = dir.join(format!("{prefix}{name}.{stamp}"));
        std::fs::rename(path, &to)
            .map_err(|e| StoreError::io(path, "cannot move to quarantine", e))?;
        crate::util::fsync_dir(&dir).map_err(|e| StoreError::io(&dir, "cannot fsync", e))?;
        if let Some(parent) = path.parent() {
            crate::util::fsync_dir(parent)
                .map_err(|e| StoreError::io(parent, "cannot fsync", e))?;
        }
        Ok(to)
    }

    /// Checks the store. `roots` are the images that must be complete, each
    /// with a label for messages (e.g. "slot rootfs.0").
    pub fn fsck(&self, roots: &[(String, Digest)]) -> Result<FsckReport, StoreError> {
        let objects: Vec<Digest> = self.list_objects()?.into_iter().collect();
        let mut report = FsckReport {
            objects_checked: objects.len() as u64,
            problems: par_filter_map(&objects, |d| self.check_object(d)),
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
