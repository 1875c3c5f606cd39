//! The device's content-addressed object store.
//!
//! ```text
//! <root>/objects/xx/<62 hex>   content objects, named by fs-verity digest
//! <root>/images/<64 hex>       composefs images, named by fs-verity digest
//! <root>/slots/<slot>/         slot records (see crate::slot::record)
//! <root>/tmp/                  files being written; emptied at every start
//! <root>/tmp/partial/          objects partly received from a server, kept
//!                              across restarts so a download resumes
//! <root>/state/                per-slot /etc upper layers and /var (setup-root)
//! ```
//!
//! Nothing appears under its final name before its digest was checked: files
//! are written in `tmp/`, fsynced, given fs-verity where the filesystem has
//! it (and measured against their name), then renamed into place and the
//! directory fsynced.

use std::fs::{self, File};
use std::io::{self, BufWriter, Write};
use std::path::{Path, PathBuf};

use crate::Digest;
use crate::config::VerityPolicy;
use crate::image::{self, VerityEnable};

mod fsck;
mod gc;

pub use fsck::{FsckProblem, FsckReport};
pub use gc::GcReport;

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("store {path}: {context}: {source}")]
    Io {
        path: PathBuf,
        context: &'static str,
        source: io::Error,
    },
    #[error(
        "store {path} is on a filesystem without fs-verity, but system.conf [store] verity = \
         \"require\"; make the filesystem with `mkfs.ext4 -O verity` (or `tune2fs -O verity`), \
         or set verity = \"auto\""
    )]
    VerityUnsupported { path: PathBuf },
    #[error("object {digest}: content digest is {actual}; the source is corrupt")]
    DigestMismatch { digest: Digest, actual: Digest },
    #[error(
        "no space left in store {path} while writing {what}; the store is unchanged except for objects already complete"
    )]
    NoSpace { path: PathBuf, what: String },
    #[error("{0}")]
    Source(String),
}

impl StoreError {
    /// An I/O error on `path`; a full filesystem becomes [`StoreError::NoSpace`].
    pub fn from_io(path: &Path, context: &'static str, source: io::Error) -> Self {
        Self::io(path, context, source)
    }

    fn io(path: &Path, context: &'static str, source: io::Error) -> Self {
        if source.raw_os_error() == Some(rustix::io::Errno::NOSPC.raw_os_error()) {
            return StoreError::NoSpace {
                path: path.to_owned(),
                what: context.to_owned(),
            };
        }
        StoreError::Io {
            path: path.to_owned(),
            context,
            source,
        }
    }
}

/// An object store. Opening it reads nothing and writes nothing;
/// [`Store::open_for_writing`] creates the layout and finds out whether
/// fs-verity can be used.
#[derive(Debug, Clone)]
pub struct Store {
    root: PathBuf,
    policy: VerityPolicy,
    /// Whether written files get fs-verity (known once opened for writing).
    verity: bool,
}

impl Store {
    /// A store for reading (status, fsck, the free-space check). A store that
    /// does not exist yet reads as empty.
    pub fn open(root: &Path, policy: VerityPolicy) -> Self {
        Store {
            root: root.to_owned(),
            policy,
            verity: false,
        }
    }

    /// Creates the layout if needed and probes fs-verity. Only the holder of
    /// the install lock writes, so only it calls this.
    pub fn open_for_writing(root: &Path, policy: VerityPolicy) -> Result<Self, StoreError> {
        for dir in ["objects", "images", "slots", "tmp", "state"] {
            let p = root.join(dir);
            fs::create_dir_all(&p).map_err(|e| StoreError::io(&p, "cannot create directory", e))?;
        }
        let store = Store::open(root, policy);
        let verity = match policy {
            VerityPolicy::Off => false,
            VerityPolicy::Auto | VerityPolicy::Require => {
                let supported = store.probe_verity()?;
                if !supported && policy == VerityPolicy::Require {
                    return Err(StoreError::VerityUnsupported {
                        path: root.to_owned(),
                    });
                }
                supported
            }
        };
        Ok(Store { verity, ..store })
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Whether files written into this store get fs-verity.
    pub fn uses_verity(&self) -> bool {
        self.verity
    }

    /// The configured verity policy.
    pub fn policy(&self) -> VerityPolicy {
        self.policy
    }

    pub fn object_path(&self, digest: &Digest) -> PathBuf {
        self.root.join(digest.to_object_path())
    }

    pub fn objects_dir(&self) -> PathBuf {
        self.root.join("objects")
    }

    pub fn image_path(&self, digest: &Digest) -> PathBuf {
        self.root.join("images").join(digest.to_hex())
    }

    pub fn has_object(&self, digest: &Digest) -> bool {
        self.object_path(digest).exists()
    }

    pub fn has_image(&self, digest: &Digest) -> bool {
        self.image_path(digest).exists()
    }

    fn tmp_dir(&self) -> PathBuf {
        self.root.join("tmp")
    }

    /// Removes leftovers of interrupted writes. Partly received objects
    /// (`tmp/partial/`) stay: a download resumes from them.
    pub fn clean_tmp(&self) -> Result<usize, StoreError> {
        let dir = self.tmp_dir();
        let mut n = 0;
        let Some(entries) = read_dir_if_exists(&dir)? else {
            return Ok(0);
        };
        for entry in entries {
            let entry = entry.map_err(|e| StoreError::io(&dir, "cannot list", e))?;
            let p = entry.path();
            if entry.file_name() == PARTIAL_DIR {
                continue;
            }
            let r = if entry.file_type().is_ok_and(|t| t.is_dir()) {
                fs::remove_dir_all(&p)
            } else {
                fs::remove_file(&p)
            };
            r.map_err(|e| StoreError::io(&p, "cannot remove leftover", e))?;
            n += 1;
        }
        Ok(n)
    }

    /// Where the stored bytes of object `digest` of the bundle `bundle_key`
    /// identifies are received (`tmp/partial/<key>-<digest>`).
    pub fn partial_path(&self, bundle_key: &str, digest: &Digest) -> PathBuf {
        self.tmp_dir()
            .join(PARTIAL_DIR)
            .join(format!("{bundle_key}-{}", digest.to_hex()))
    }

    /// Removes partly received objects, except those of the bundle
    /// `keep` identifies (all of them for `None`). Returns how many went.
    pub fn clean_partials(&self, keep: Option<&str>) -> Result<usize, StoreError> {
        let dir = self.tmp_dir().join(PARTIAL_DIR);
        let Some(entries) = read_dir_if_exists(&dir)? else {
            return Ok(0);
        };
        let mut n = 0;
        for entry in entries {
            let entry = entry.map_err(|e| StoreError::io(&dir, "cannot list", e))?;
            let name = entry.file_name();
            if let Some(k) = keep
                && name.to_string_lossy().starts_with(&format!("{k}-"))
            {
                continue;
            }
            let p = entry.path();
            fs::remove_file(&p)
                .map_err(|e| StoreError::io(&p, "cannot remove partial object", e))?;
            n += 1;
        }
        Ok(n)
    }

    /// Tries to enable fs-verity on a small file in `tmp/`.
    fn probe_verity(&self) -> Result<bool, StoreError> {
        let dir = self.tmp_dir();
        let probe = tempfile::Builder::new()
            .prefix(".verity-probe.")
            .tempfile_in(&dir)
            .map_err(|e| StoreError::io(&dir, "cannot create verity probe", e))?;
        fs::write(probe.path(), b"didymos")
            .map_err(|e| StoreError::io(probe.path(), "cannot write probe", e))?;
        // Verity can only be enabled with no writable descriptor open.
        let path = probe.into_temp_path();
        let file = File::open(&path).map_err(|e| StoreError::io(&path, "cannot open probe", e))?;
        let result = image::enable_verity(&file);
        drop(file);
        drop(path);
        match result {
            Ok(VerityEnable::Enabled) => Ok(true),
            Ok(VerityEnable::Unsupported) => Ok(false),
            Err(e) => {
                log::warn!(
                    "fs-verity probe in {} failed: {e}; continuing without it",
                    self.root.display()
                );
                Ok(false)
            }
        }
    }

    /// Writes one object whose content `fill` produces (see [`ObjectBatch`]
    /// for many). Returns the number of bytes written.
    pub fn insert_object(
        &self,
        digest: &Digest,
        fill: impl FnOnce(&mut dyn Write) -> Result<(), StoreError>,
    ) -> Result<u64, StoreError> {
        let mut batch = self.batch();
        let size = batch.add(digest, fill)?;
        batch.commit()?;
        Ok(size)
    }

    /// Writes an image (bytes already checked against `digest` by the caller,
    /// and checked again here).
    pub fn insert_image(&self, digest: &Digest, bytes: &[u8]) -> Result<u64, StoreError> {
        let actual = image::digest_bytes(bytes);
        if &actual != digest {
            return Err(StoreError::DigestMismatch {
                digest: *digest,
                actual,
            });
        }
        let staged = self.stage(digest, self.image_path(digest), |w| {
            w.write_all(bytes)
                .map_err(|e| StoreError::io(&self.image_path(digest), "cannot write image", e))
        })?;
        self.commit(vec![staged])?;
        Ok(bytes.len() as u64)
    }

    /// Starts writing a batch of objects: each is written to `tmp/`, and
    /// [`ObjectBatch::commit`] makes them durable and visible together, with
    /// two filesystem syncs instead of two per object.
    pub fn batch(&self) -> ObjectBatch<'_> {
        self.batch_committing_every(ObjectBatch::COMMIT_BYTES)
    }

    /// A batch that commits every `bytes` (a smaller figure bounds what a
    /// power cut throws away where writing is cheap and fetching is not).
    pub fn batch_committing_every(&self, bytes: u64) -> ObjectBatch<'_> {
        ObjectBatch {
            store: self,
            staged: Vec::new(),
            staged_bytes: 0,
            commit_bytes: bytes.clamp(1, ObjectBatch::COMMIT_BYTES),
        }
    }

    /// A new, empty temporary file in `tmp/` (removed on drop, and by
    /// [`Store::clean_tmp`] after a power cut).
    pub fn temp_file(&self) -> Result<tempfile::NamedTempFile, StoreError> {
        let tmp_dir = self.tmp_dir();
        tempfile::Builder::new()
            .prefix("raw.")
            .tempfile_in(&tmp_dir)
            .map_err(|e| StoreError::io(&tmp_dir, "cannot create temporary file", e))
    }

    /// Writes content to a temporary file in `tmp/` (not yet synced).
    fn stage(
        &self,
        digest: &Digest,
        final_path: PathBuf,
        fill: impl FnOnce(&mut dyn Write) -> Result<(), StoreError>,
    ) -> Result<Staged, StoreError> {
        let tmp_dir = self.tmp_dir();
        let tmp = tempfile::Builder::new()
            .prefix(&format!("{}.", digest.to_hex()))
            .tempfile_in(&tmp_dir)
            .map_err(|e| StoreError::io(&tmp_dir, "cannot create temporary file", e))?;
        let tmp_path = tmp.path().to_owned();
        let mut w = NoSpaceWatch {
            inner: BufWriter::with_capacity(256 * 1024, tmp.as_file()),
            no_space: false,
        };
        let filled = fill(&mut w).and_then(|()| {
            w.flush()
                .map_err(|e| StoreError::io(&tmp_path, "cannot write", e))
        });
        if let Err(e) = filled {
            // The source's error may hide the cause: report a full
            // filesystem as such, whatever layer saw it first.
            return Err(if w.no_space {
                StoreError::NoSpace {
                    path: self.root.clone(),
                    what: format!("object {digest}"),
                }
            } else {
                e
            });
        }
        drop(w);
        let size = tmp
            .as_file()
            .metadata()
            .map_err(|e| StoreError::io(&tmp_path, "cannot stat", e))?
            .len();
        // Close the writable descriptor: fs-verity needs none left open.
        let tmp = tmp
            .into_temp_path()
            .keep()
            .map_err(|e| StoreError::io(&tmp_path, "cannot keep temporary file", e.error))?;
        Ok(Staged {
            digest: *digest,
            tmp,
            final_path,
            size,
        })
    }

    /// Makes staged files durable, seals them with fs-verity (checking the
    /// kernel's measurement against their names), renames them into place
    /// and makes the renames durable. On error, staged files that were not
    /// renamed are removed.
    fn commit(&self, staged: Vec<Staged>) -> Result<(), StoreError> {
        let result = self.commit_inner(&staged);
        if result.is_err() {
            for s in &staged {
                let _ = fs::remove_file(&s.tmp);
            }
        }
        result
    }

    fn commit_inner(&self, staged: &[Staged]) -> Result<(), StoreError> {
        if staged.is_empty() {
            return Ok(());
        }
        self.syncfs()?;
        for s in staged {
            self.seal(&s.digest, &s.tmp)?;
            let dir = s.final_path.parent().expect("store paths have a parent");
            if !dir.exists() {
                fs::create_dir_all(dir)
                    .map_err(|e| StoreError::io(dir, "cannot create directory", e))?;
            }
            fs::rename(&s.tmp, &s.final_path)
                .map_err(|e| StoreError::io(&s.final_path, "cannot rename into place", e))?;
        }
        self.syncfs()
    }

    /// Flushes the store's filesystem (data, inodes and directories).
    fn syncfs(&self) -> Result<(), StoreError> {
        let dir =
            File::open(&self.root).map_err(|e| StoreError::io(&self.root, "cannot open", e))?;
        rustix::fs::syncfs(&dir).map_err(|e| StoreError::io(&self.root, "cannot sync", e.into()))
    }

    fn seal(&self, digest: &Digest, tmp: &Path) -> Result<(), StoreError> {
        if !self.verity {
            return Ok(());
        }
        let ro = File::open(tmp).map_err(|e| StoreError::io(tmp, "cannot reopen", e))?;
        match image::enable_verity(&ro)
            .map_err(|e| StoreError::io(tmp, "cannot enable fs-verity", e))?
        {
            VerityEnable::Enabled => {}
            VerityEnable::Unsupported => {
                return Err(StoreError::VerityUnsupported {
                    path: self.root.clone(),
                });
            }
        }
        let measured = image::measure_verity(&ro)
            .map_err(|e| StoreError::io(tmp, "cannot measure fs-verity", e))?;
        if let Some(actual) = measured
            && &actual != digest
        {
            return Err(StoreError::DigestMismatch {
                digest: *digest,
                actual,
            });
        }
        Ok(())
    }

    /// Every object currently in the store.
    pub fn list_objects(&self) -> Result<std::collections::BTreeSet<Digest>, StoreError> {
        let mut out = std::collections::BTreeSet::new();
        let objects = self.objects_dir();
        let Some(dirs) = read_dir_if_exists(&objects)? else {
            return Ok(out);
        };
        for dir in dirs {
            let dir = dir.map_err(|e| StoreError::io(&objects, "cannot list", e))?;
            let dname = dir.file_name();
            let Some(dname) = dname.to_str() else {
                continue;
            };
            let dpath = dir.path();
            if !dpath.is_dir() {
                continue;
            }
            for f in fs::read_dir(&dpath).map_err(|e| StoreError::io(&dpath, "cannot list", e))? {
                let f = f.map_err(|e| StoreError::io(&dpath, "cannot list", e))?;
                if let Some(d) = f
                    .file_name()
                    .to_str()
                    .and_then(|n| Digest::from_object_subpath(dname, n))
                {
                    out.insert(d);
                }
            }
        }
        Ok(out)
    }

    /// Every image currently in the store.
    pub fn list_images(&self) -> Result<std::collections::BTreeSet<Digest>, StoreError> {
        let images = self.root.join("images");
        let mut out = std::collections::BTreeSet::new();
        let Some(files) = read_dir_if_exists(&images)? else {
            return Ok(out);
        };
        for f in files {
            let f = f.map_err(|e| StoreError::io(&images, "cannot list", e))?;
            if let Some(d) = f
                .file_name()
                .to_str()
                .and_then(|n| Digest::from_hex(n).ok())
            {
                out.insert(d);
            }
        }
        Ok(out)
    }

    /// Reads an image from the store, bounded, and checks it against its name.
    pub fn read_image(&self, digest: &Digest) -> Result<Vec<u8>, StoreError> {
        let path = self.image_path(digest);
        let bytes = crate::util::read_bounded(&path, MAX_IMAGE_SIZE).map_err(|e| match e {
            crate::util::BoundedReadError::Io(e) => StoreError::io(&path, "cannot read image", e),
            other => StoreError::Io {
                path: path.clone(),
                context: "image too large",
                source: io::Error::other(other.to_string()),
            },
        })?;
        let actual = image::digest_bytes(&bytes);
        if &actual != digest {
            return Err(StoreError::DigestMismatch {
                digest: *digest,
                actual,
            });
        }
        Ok(bytes)
    }
}

/// What a filesystem has left, for the install's space check.
#[derive(Debug, Clone, Copy)]
pub struct FreeSpace {
    /// Bytes available to unprivileged writers.
    pub bytes: u64,
    /// Inodes available; `None` for filesystems without a fixed number.
    pub inodes: Option<u64>,
    /// Tells filesystems apart (`f_fsid`).
    pub id: u64,
}

/// The free space of the filesystem that holds `path` (its nearest existing
/// ancestor, for a path not made yet).
pub fn filesystem_free(path: &Path) -> Result<FreeSpace, StoreError> {
    let existing = path
        .ancestors()
        .find(|p| p.exists())
        .unwrap_or(Path::new("/"));
    let st = rustix::fs::statvfs(existing)
        .map_err(|e| StoreError::io(existing, "cannot statvfs", e.into()))?;
    Ok(FreeSpace {
        bytes: st.f_bavail.saturating_mul(st.f_frsize),
        inodes: (st.f_files > 0).then_some(st.f_favail),
        id: st.f_fsid,
    })
}

impl FreeSpace {
    /// Fails with the install's `NoSpace`/`NoInodes` when `bytes` or
    /// `inodes` do not fit.
    pub fn require(
        &self,
        bytes: u64,
        inodes: u64,
        path: &Path,
    ) -> Result<(), crate::install::InstallError> {
        if bytes > self.bytes {
            return Err(crate::install::InstallError::NoSpace {
                path: path.to_owned(),
                needed: bytes,
                available: self.bytes,
            });
        }
        if let Some(available) = self.inodes
            && inodes > available
        {
            return Err(crate::install::InstallError::NoInodes {
                path: path.to_owned(),
                needed: inodes,
                available,
            });
        }
        Ok(())
    }
}

/// A file written to `tmp/`, waiting to be committed under its name.
struct Staged {
    digest: Digest,
    tmp: PathBuf,
    final_path: PathBuf,
    size: u64,
}

/// Objects being written together; see [`Store::batch`]. Committing happens
/// automatically every [`ObjectBatch::COMMIT_BYTES`], and must be finished
/// with [`ObjectBatch::commit`]. Dropping a batch without committing leaves
/// its files in `tmp/`, which the next install or gc empties.
pub struct ObjectBatch<'s> {
    store: &'s Store,
    staged: Vec<Staged>,
    staged_bytes: u64,
    commit_bytes: u64,
}

impl ObjectBatch<'_> {
    /// Data written between two commits at most (bounds the work a power
    /// cut can throw away, and the number of open temporary files).
    pub const COMMIT_BYTES: u64 = 256 * 1024 * 1024;

    /// Writes one object. `fill` must fail if the content does not match
    /// `digest` (the bundle reader checks as it streams); the object only
    /// appears under its name, at a commit, when `fill` succeeded and, with
    /// fs-verity, the kernel's measurement equals `digest`.
    pub fn add(
        &mut self,
        digest: &Digest,
        fill: impl FnOnce(&mut dyn Write) -> Result<(), StoreError>,
    ) -> Result<u64, StoreError> {
        let staged = self
            .store
            .stage(digest, self.store.object_path(digest), fill)?;
        let size = staged.size;
        self.staged_bytes += size;
        self.staged.push(staged);
        if self.staged_bytes >= self.commit_bytes || self.staged.len() >= 4096 {
            self.commit()?;
        }
        Ok(size)
    }

    /// Makes every object added so far durable and visible.
    pub fn commit(&mut self) -> Result<(), StoreError> {
        self.staged_bytes = 0;
        self.store.commit(std::mem::take(&mut self.staged))
    }
}

fn read_dir_if_exists(dir: &Path) -> Result<Option<fs::ReadDir>, StoreError> {
    match fs::read_dir(dir) {
        Ok(rd) => Ok(Some(rd)),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(StoreError::io(dir, "cannot list", e)),
    }
}

/// A writer that remembers whether the filesystem ran out of space.
struct NoSpaceWatch<W: Write> {
    inner: W,
    no_space: bool,
}

impl<W: Write> NoSpaceWatch<W> {
    fn watch<T>(&mut self, r: io::Result<T>) -> io::Result<T> {
        if let Err(e) = &r
            && e.raw_os_error() == Some(rustix::io::Errno::NOSPC.raw_os_error())
        {
            self.no_space = true;
        }
        r
    }
}

impl<W: Write> Write for NoSpaceWatch<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let r = self.inner.write(buf);
        self.watch(r)
    }
    fn flush(&mut self) -> io::Result<()> {
        let r = self.inner.flush();
        self.watch(r)
    }
}

/// The store's images (those of its installed slots) as the base images of
/// image deltas. Without fs-verity a damaged image decodes to bytes that
/// fail the new image's digest check, like a damaged delta source.
impl crate::bundle::BaseImages for Store {
    fn base_image(&self, digest: &Digest) -> Option<Vec<u8>> {
        self.read_image(digest).ok()
    }
}

/// The store is where a device finds the sources of a bundle's deltas: the
/// objects of its installed slots.
impl crate::bundle::delta::Sources for Store {
    fn open(
        &self,
        digest: &Digest,
    ) -> io::Result<Option<Box<dyn crate::bundle::delta::SourceObject>>> {
        match File::open(self.object_path(digest)) {
            Ok(f) => Ok(Some(Box::new(f))),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(e),
        }
    }
}

/// The directory under `tmp/` that [`Store::clean_tmp`] keeps.
const PARTIAL_DIR: &str = "partial";

/// Largest composefs image accepted (metadata only; a large distribution is tens of MiB).
pub const MAX_IMAGE_SIZE: u64 = 1 << 30;

#[cfg(test)]
mod tests;
